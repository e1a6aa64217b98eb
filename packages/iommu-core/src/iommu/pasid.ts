// PASIDs on the generic layer: attaching a domain at a PASID of a device (group), and the one
// global PASID space the kernel allocates from once the custom IOASID allocators are gone.

import type { ChargeNode } from "@iommu-sim/ioasid";
import type { Device } from "../device/device.js";
import { iopfDomainDetached } from "./io-pgfault.js";
import type { AttachErrno, IommuDomain } from "./iommu-domain.js";
import { domainIommuOpsCompatible, type IommuGroup, iommuGroupGet } from "./iommu-group.js";
import {
  IOMMU_FIRST_GLOBAL_PASID,
  IOMMU_NO_PASID,
  IOMMU_PASID_INVALID,
  type IommuSubsystem,
} from "./iommu-subsystem.js";

type PasidErrno = AttachErrno | "EOPNOTSUPP";

/** Remove `pasid` from one device: the blocked domain's set_dev_pasid takes the PASID away. */
function removeDevPasid(dev: Device, pasid: number, domain: IommuDomain): void {
  const blocked = dev.iommu?.ops.blockedDomain;
  blocked?.ops.setDevPasid?.(blocked, dev, pasid, domain);
  if (dev.iommu?.subsys.trace.active) {
    dev.iommu.subsys.trace.emit("attach", { device: dev.name, pasid, domain: 0 });
  }
}

/**
 * Set `domain` at `pasid` on every device of the group; on a failure, undo the devices already
 * done: back to `old` when replacing, removed otherwise.
 *
 * @kernel drivers/iommu/iommu.c __iommu_set_group_pasid
 */
function setGroupPasid(
  domain: IommuDomain,
  group: IommuGroup,
  pasid: number,
  old: IommuDomain | null,
): 0 | PasidErrno {
  const setDevPasid = domain.ops.setDevPasid;
  if (setDevPasid === undefined) return "EOPNOTSUPP";
  for (let i = 0; i < group.devices.length; i++) {
    const dev = group.devices[i];
    const ret = setDevPasid(domain, dev, pasid, old);
    if (ret !== 0) {
      for (let j = 0; j < i; j++) {
        const done = group.devices[j];
        const back = old?.ops.setDevPasid?.(old, done, pasid, domain) ?? 1;
        if (old === null || back !== 0) removeDevPasid(done, pasid, domain);
      }
      return ret;
    }
    if (dev.iommu?.subsys.trace.active) {
      dev.iommu.subsys.trace.emit("attach", { device: dev.name, pasid, domain: domain.id });
    }
  }
  return 0;
}

function pasidPreconditions(
  domain: IommuDomain,
  dev: Device,
  pasid: number,
): IommuGroup | "ENODEV" | "EOPNOTSUPP" | "EINVAL" {
  const group = iommuGroupGet(dev);
  if (group === null || dev.iommu === null) return "ENODEV";
  const ops = dev.iommu.ops;
  if (
    domain.ops.setDevPasid === undefined ||
    ops.blockedDomain === undefined ||
    ops.blockedDomain.ops.setDevPasid === undefined
  ) {
    return "EOPNOTSUPP";
  }
  if (!domainIommuOpsCompatible(ops, domain) || pasid === IOMMU_NO_PASID) return "EINVAL";
  if (pasid >>> 0 !== pasid) return "EINVAL";
  return group;
}

/**
 * Attach `domain` at `pasid` of `dev` (of every device in its group). `'ENODEV'` for an
 * unprobed device; `'EOPNOTSUPP'` when the domain or the driver cannot attach at a PASID;
 * `'EINVAL'` for a domain of another driver, IOMMU_NO_PASID, or a PASID beyond a group device's
 * PASID width (devices without PASID support are skipped: they never emit one); `'EBUSY'` when
 * something is attached at the PASID; set_dev_pasid's errnos.
 *
 * @kernel drivers/iommu/iommu.c iommu_attach_device_pasid
 */
export function iommuAttachDevicePasid(
  domain: IommuDomain,
  dev: Device,
  pasid: number,
  handle: unknown = null,
): 0 | PasidErrno {
  const group = pasidPreconditions(domain, dev, pasid);
  if (typeof group === "string") return group;
  for (const d of group.devices) {
    const max = d.iommu?.maxPasids ?? 0;
    if (max > 0 && pasid >= max) return "EINVAL";
  }
  if (group.pasidArray.has(pasid)) return "EBUSY";
  const ret = setGroupPasid(domain, group, pasid, null);
  if (ret !== 0) return ret;
  group.pasidArray.set(pasid, { domain, handle });
  return 0;
}

/**
 * Replace what is attached at `pasid` with `domain`, with no blocking step in between; the PASID
 * keeps its old domain if it fails. `'EINVAL'` (besides the attach rules) when nothing is
 * attached at the PASID yet or no handle is given, as the kernel requires of iommufd.
 *
 * @kernel drivers/iommu/iommu.c iommu_replace_device_pasid
 */
export function iommuReplaceDevicePasid(
  domain: IommuDomain,
  dev: Device,
  pasid: number,
  handle: unknown,
): 0 | PasidErrno {
  const group = pasidPreconditions(domain, dev, pasid);
  if (typeof group === "string") return group;
  if (handle === null || handle === undefined) return "EINVAL";
  const curr = group.pasidArray.get(pasid);
  if (curr === undefined) return "EINVAL";
  if (curr.domain !== domain) {
    const ret = setGroupPasid(domain, group, pasid, curr.domain);
    if (ret !== 0) return ret;
    for (const d of group.devices) iopfDomainDetached(d, curr.domain, pasid);
  }
  group.pasidArray.set(pasid, { domain, handle });
  return 0;
}

/**
 * Detach `domain` from `pasid` of `dev`'s group. `'EINVAL'` when `domain` is not what is attached
 * there (the kernel WARNs); `'ENODEV'` for an unprobed device.
 *
 * @kernel drivers/iommu/iommu.c iommu_detach_device_pasid
 */
export function iommuDetachDevicePasid(
  domain: IommuDomain,
  dev: Device,
  pasid: number,
): 0 | "EINVAL" | "ENODEV" {
  const group = iommuGroupGet(dev);
  if (group === null) return "ENODEV";
  const curr = group.pasidArray.get(pasid);
  if (curr === undefined || curr.domain !== domain) return "EINVAL";
  for (const d of group.devices) removeDevPasid(d, pasid, domain);
  group.pasidArray.delete(pasid);
  for (const d of group.devices) iopfDomainDetached(d, domain, pasid);
  return 0;
}

/**
 * The domain attached at `pasid` of `dev`, or null.
 *
 * @kernel drivers/iommu/iommu.c iommu_get_domain_for_dev_pasid
 */
export function iommuGetDomainForDevPasid(dev: Device, pasid: number): IommuDomain | null {
  return iommuGroupGet(dev)?.pasidArray.get(pasid)?.domain ?? null;
}

/** The attach handle at `pasid`, or null. @kernel drivers/iommu/iommu.c iommu_attach_handle_get */
export function iommuAttachHandleGet(dev: Device, pasid: number): unknown {
  return iommuGroupGet(dev)?.pasidArray.get(pasid)?.handle ?? null;
}

/**
 * Allocate the lowest free PASID in [IOMMU_FIRST_GLOBAL_PASID, the device's PASID count) from the
 * one global space. With `charge`, the PASID counts against that node of the charge tree (PASIDs
 * held for a user: SVA, user space); without, it is an in-kernel PASID and is never charged.
 * Returns IOMMU_PASID_INVALID when the device has no PASIDs, the space is full, or the charge
 * would pass a limit (as the kernel, which folds every failure into that value).
 *
 * @kernel drivers/iommu/iommu.c iommu_alloc_global_pasid
 */
export function iommuAllocGlobalPasid(dev: Device, charge?: ChargeNode): number {
  const param = dev.iommu;
  if (param === null || param.maxPasids <= IOMMU_FIRST_GLOBAL_PASID) return IOMMU_PASID_INVALID;
  const subsys = param.subsys;
  const id = subsys.pasids.alloc(
    subsys.globalPasidSet,
    IOMMU_FIRST_GLOBAL_PASID,
    param.maxPasids - 1,
    null,
    charge,
  );
  return typeof id === "number" ? id : IOMMU_PASID_INVALID;
}

/**
 * Like iommuAllocGlobalPasid, but says why it failed: `'ENODEV'` (no IOMMU or no PASIDs on the
 * device), `'ENOSPC'` (space full), `'EBUSY'` (over the charge limit), `'EINVAL'`.
 */
export function iommuAllocGlobalPasidOrErrno(
  dev: Device,
  charge?: ChargeNode,
): number | "ENODEV" | "ENOSPC" | "EBUSY" | "EINVAL" {
  const param = dev.iommu;
  if (param === null || param.maxPasids <= IOMMU_FIRST_GLOBAL_PASID) return "ENODEV";
  const subsys = param.subsys;
  return subsys.pasids.alloc(
    subsys.globalPasidSet,
    IOMMU_FIRST_GLOBAL_PASID,
    param.maxPasids - 1,
    null,
    charge,
  );
}

/**
 * Free a global PASID of `subsys` (uncharging it if it was charged). The space is per simulated
 * machine, so the subsystem stands in for the kernel's global. `'EINVAL'` for IOMMU_PASID_INVALID (the
 * kernel WARNs), `'ENOENT'` when it is not allocated.
 *
 * @kernel drivers/iommu/iommu.c iommu_free_global_pasid
 */
export function iommuFreeGlobalPasid(
  subsys: IommuSubsystem,
  pasid: number,
): 0 | "EINVAL" | "ENOENT" {
  if (pasid === IOMMU_PASID_INVALID) return "EINVAL";
  return subsys.pasids.free(pasid);
}
