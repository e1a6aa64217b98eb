// The IOMMU state of one device (dev->iommu) and the probe / release path that creates and ends it.

import type { Device } from "../device/device.js";
import type { Errno } from "../errno.js";
import type { IopfDeviceParam } from "./io-pgfault.js";
import {
  type IommuGroup,
  iommuGroupAddDevice,
  iommuGroupForDevice,
  iommuGroupRemoveDevice,
} from "./iommu-group.js";
import type { IommuDevice, IommuOps } from "./iommu-ops.js";
import type { IommuSubsystem } from "./iommu-subsystem.js";

/**
 * Per-device IOMMU data.
 *
 * @kernel include/linux/iommu.h dev_iommu
 */
export class DevIommu {
  readonly subsys: IommuSubsystem;
  /** The driver the firmware description points this device at (fwspec->ops). */
  readonly ops: IommuOps;
  /** The instance serving the device, once probed. */
  iommuDev: IommuDevice | null = null;
  /** The device's group, once probed. @kernel include/linux/device.h device.iommu_group */
  group: IommuGroup | null = null;
  /** PASIDs the device may use through this IOMMU (0: none). */
  maxPasids = 0;
  /** Driver data. @kernel include/linux/iommu.h dev_iommu.priv */
  priv: unknown = null;
  /** IOPF state while the device is in an IOPF queue. @kernel include/linux/iommu.h dev_iommu.fault_param */
  faultParam: IopfDeviceParam | null = null;
  /** The global PASID the DMA API attached the default domain at (0: none). */
  dmaPasid = 0;
  /** The device's DMA mask: the highest DMA address it can emit. @kernel include/linux/device.h device.dma_mask */
  dmaMask = 2 ** 64;
  /** Try 32-bit IOVAs first (PCI devices, until they run out). @kernel include/linux/iommu.h dev_iommu.pci_32bit_workaround */
  pci32bitWorkaround = false;

  constructor(subsys: IommuSubsystem, ops: IommuOps) {
    this.subsys = subsys;
    this.ops = ops;
  }
}

/** The IOMMU data of `dev`, or null when no IOMMU describes it. */
export function devIommu(dev: Device): DevIommu | null {
  return dev.iommu;
}

/** Whether `dev` was probed by an IOMMU driver. @kernel include/linux/iommu.h dev_has_iommu */
export function devHasIommu(dev: Device): boolean {
  return dev.iommu?.iommuDev != null;
}

/**
 * Record that `ops` (the driver behind one of the subsystem's instances) translates for `dev`, as
 * firmware tables (DMAR device scopes, IORT) tell the kernel. `'EINVAL'` when another driver
 * already claimed the device (the kernel's answer for a conflicting fwspec).
 *
 * @kernel drivers/iommu/iommu.c iommu_fwspec_init
 */
export function iommuFwspecInit(dev: Device, subsys: IommuSubsystem, ops: IommuOps): 0 | "EINVAL" {
  const param = dev.iommu;
  if (param !== null) return param.ops === ops && param.subsys === subsys ? 0 : "EINVAL";
  dev.iommu = new DevIommu(subsys, ops);
  dev.iommu.pci32bitWorkaround = dev.isPci;
  return 0;
}

function maxPasidsOf(dev: Device, iommu: IommuDevice): number {
  if (iommu.maxPasids === 0) return 0;
  return Math.min(iommu.maxPasids, dev.maxPasids);
}

/** The driver forgets a device whose probe failed, which is left as if never probed. */
function probeUndo(dev: Device, param: DevIommu): void {
  param.ops.releaseDevice?.(dev);
  param.iommuDev = null;
  param.maxPasids = 0;
}

/**
 * Probe `dev`: the driver takes it, it joins a group, and the group gets its default domain (or
 * the device joins the domain the group already has). A device already probed returns 0.
 * `'ENODEV'` without a firmware description or when the driver refuses the device; the driver's
 * and the default domain's errnos otherwise. On failure the device is left unprobed.
 *
 * @kernel drivers/iommu/iommu.c __iommu_probe_device
 */
export function iommuProbeDevice(
  dev: Device,
): 0 | "ENODEV" | "ENOMEM" | "EBUSY" | "EINVAL" | "ENOSPC" | "EOPNOTSUPP" {
  const param = dev.iommu;
  if (param === null) return "ENODEV";
  if (param.group !== null) return 0;
  const iommuDev = param.ops.probeDevice(dev);
  if (typeof iommuDev === "string") return iommuDev;
  param.iommuDev = iommuDev;
  param.maxPasids = maxPasidsOf(dev, iommuDev);
  const group = iommuGroupForDevice(dev);
  if (typeof group === "string") {
    probeUndo(dev, param);
    return group;
  }
  const ret = iommuGroupAddDevice(group, dev);
  if (ret !== 0) {
    probeUndo(dev, param);
    return ret;
  }
  param.ops.probeFinalize?.(dev);
  return 0;
}

/**
 * Release a probed device (hot-unplug): it leaves its group (which frees its default domain and
 * its number when it empties) and the driver forgets it. `'ENODEV'` if it was not probed.
 *
 * @kernel drivers/iommu/iommu.c iommu_release_device
 */
export function iommuReleaseDevice(dev: Device): 0 | "ENODEV" {
  const param = dev.iommu;
  if (param === null || param.group === null) return "ENODEV";
  iommuGroupRemoveDevice(param.group, dev);
  param.ops.releaseDevice?.(dev);
  param.iommuDev = null;
  param.maxPasids = 0;
  return 0;
}

/**
 * Whether the IOMMU serving `dev` has capability `cap` (IOMMU_CAP_*); false for a device no IOMMU
 * probed or a driver that reports none.
 *
 * @kernel drivers/iommu/iommu.c device_iommu_capable
 */
export function deviceIommuCapable(dev: Device, cap: number): boolean {
  const param = dev.iommu;
  if (param === null || param.iommuDev === null) return false;
  return param.ops.capable?.(dev, cap) ?? false;
}

/**
 * Enable a per-device feature (IOMMU_DEV_FEAT_IOPF, IOMMU_DEV_FEAT_SVA) through the driver.
 * `'ENODEV'` for an unprobed device or a driver without the op; the driver's errnos otherwise.
 *
 * @kernel drivers/iommu/iommu.c iommu_dev_enable_feature
 */
export function iommuDevEnableFeature(dev: Device, feat: number): 0 | Errno {
  const param = dev.iommu;
  if (param === null || param.iommuDev === null || param.ops.devEnableFeat === undefined) {
    return "ENODEV";
  }
  return param.ops.devEnableFeat(dev, feat);
}

/**
 * Disable a per-device feature. `'EBUSY'` for an unprobed device or a driver without the op, as
 * the kernel answers; the driver's errnos otherwise.
 *
 * @kernel drivers/iommu/iommu.c iommu_dev_disable_feature
 */
export function iommuDevDisableFeature(dev: Device, feat: number): 0 | Errno {
  const param = dev.iommu;
  if (param === null || param.iommuDev === null || param.ops.devDisableFeat === undefined) {
    return "EBUSY";
  }
  return param.ops.devDisableFeat(dev, feat);
}
