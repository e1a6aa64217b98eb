// Hot-plugging a device into a simulated machine: onto the bus behind its IOMMU, then described
// to the core and probed, as the PCI core and the IOMMU bus notifier do; and the way back out.

import type { DmaBus } from "../device/bus.js";
import { Device, type DeviceOptions } from "../device/device.js";
import type { IommuHardware } from "../device/iommu-hardware.js";
import { iommuFwspecInit, iommuProbeDevice, iommuReleaseDevice } from "../iommu/dev-iommu.js";
import type { IommuOps } from "../iommu/iommu-ops.js";
import type { IommuSubsystem } from "../iommu/iommu-subsystem.js";

/** The errnos `plugDevice` returns: bad options, a duplicate ID, the probe's. */
export type PlugErrno =
  | "EINVAL"
  | "EEXIST"
  | "EBUSY"
  | "ENODEV"
  | "ENOMEM"
  | "ENOSPC"
  | "EOPNOTSUPP";

/**
 * Create the device from `options`, put it on `bus` behind `hw`, and probe it with `ops` in
 * `subsys`. On any failure the device is left off the bus and unprobed.
 *
 * @kernel drivers/iommu/iommu.c iommu_bus_notifier
 */
export function plugDevice(
  bus: DmaBus,
  hw: IommuHardware,
  subsys: IommuSubsystem,
  ops: IommuOps,
  options: DeviceOptions,
): Device | PlugErrno {
  const dev = Device.create(options);
  if (typeof dev === "string") return dev;
  const added = bus.addDevice(dev, hw);
  if (added !== 0) return added;
  const fw = iommuFwspecInit(dev, subsys, ops);
  if (fw !== 0) {
    bus.removeDevice(dev);
    return fw;
  }
  const probed = iommuProbeDevice(dev);
  if (probed !== 0) {
    bus.removeDevice(dev);
    dev.iommu = null;
    return probed;
  }
  return dev;
}

/** Unplug: the core releases the device, then it leaves the bus. */
export function unplugDevice(bus: DmaBus, dev: Device): 0 | "ENOENT" {
  iommuReleaseDevice(dev);
  return bus.removeDevice(dev);
}
