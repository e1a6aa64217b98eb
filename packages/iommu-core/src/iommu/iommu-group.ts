// IOMMU groups: the smallest sets of devices the IOMMU can isolate from each other, which move
// between domains as one; default domains, attach/detach/replace, and DMA ownership.

import type { Device } from "../device/device.js";
import { iommuGetDmaCookie, iommuPutDmaCookie } from "./dma-iommu.js";
import { iopfDomainDetached } from "./io-pgfault.js";
import {
  __IOMMU_DOMAIN_PAGING,
  type AttachErrno,
  IOMMU_DOMAIN_BLOCKED,
  IOMMU_DOMAIN_DMA,
  IOMMU_DOMAIN_DMA_FQ,
  IOMMU_DOMAIN_IDENTITY,
  IOMMU_DOMAIN_NESTED,
  IOMMU_DOMAIN_SVA,
  IOMMU_DOMAIN_UNMANAGED,
  type IommuDomain,
} from "./iommu-domain.js";
import { IOMMU_CAP_DEFERRED_FLUSH, type IommuOps } from "./iommu-ops.js";
import { IOMMU_NO_PASID, type IommuSubsystem } from "./iommu-subsystem.js";

/** What a PASID of a group is attached to. @kernel drivers/iommu/iommu.c iommu_make_pasid_array_entry */
export interface PasidAttachment {
  domain: IommuDomain;
  /** The caller's attach handle (iommufd, SVA), or null. */
  handle: unknown;
}

/**
 * A group of devices that share one translation.
 *
 * @kernel drivers/iommu/iommu.c iommu_group
 */
export class IommuGroup {
  readonly id: number;
  readonly subsys: IommuSubsystem;
  /** Member devices, in the order they joined. */
  readonly devices: Device[] = [];
  /** The domain the kernel's DMA API uses for the group. */
  defaultDomain: IommuDomain | null = null;
  /** The domain the group's RIDs translate through now. */
  domain: IommuDomain | null = null;
  /** The domain used while a user owns the group and attached nothing yet. */
  blockingDomain: IommuDomain | null = null;
  /** The exclusive DMA owner (VFIO, iommufd), or null. */
  owner: object | null = null;
  /** Kernel drivers using the default domain, or the count of the owner's claims. */
  ownerCnt = 0;
  /** PASID → attachment. @kernel drivers/iommu/iommu.c iommu_group.pasid_array */
  readonly pasidArray = new Map<number, PasidAttachment>();

  constructor(subsys: IommuSubsystem, id: number) {
    this.subsys = subsys;
    this.id = id;
  }
}

/**
 * A new, empty group. `'ENOSPC'` when group numbers ran out.
 *
 * @kernel drivers/iommu/iommu.c iommu_group_alloc
 */
export function iommuGroupAlloc(subsys: IommuSubsystem): IommuGroup | "ENOSPC" {
  const id = subsys.groupIds.alloc();
  if (typeof id !== "number") return "ENOSPC";
  return new IommuGroup(subsys, id);
}

/** The group of a probed device, or null. @kernel drivers/iommu/iommu.c iommu_group_get */
export function iommuGroupGet(dev: Device): IommuGroup | null {
  return dev.iommu?.group ?? null;
}

/**
 * The group `dev` joins: the driver's choice, or a group of its own.
 *
 * @kernel drivers/iommu/iommu.c generic_device_group
 */
export function iommuGroupForDevice(dev: Device): IommuGroup | "ENOMEM" | "ENODEV" | "ENOSPC" {
  const param = dev.iommu;
  if (param === null) return "ENODEV";
  if (param.ops.deviceGroup !== undefined) return param.ops.deviceGroup(dev);
  return iommuGroupAlloc(param.subsys);
}

function opsOf(dev: Device): IommuOps {
  const param = dev.iommu;
  if (param === null) throw new Error("device has no IOMMU");
  return param.ops;
}

/** Whether `domain` may be used with devices of `ops`. @kernel drivers/iommu/iommu.c domain_iommu_ops_compatible */
export function domainIommuOpsCompatible(ops: IommuOps, domain: IommuDomain): boolean {
  if (domain.owner === ops) return true;
  return domain === ops.blockedDomain || domain === ops.identityDomain;
}

/**
 * Attach one device to `domain`. Tracing and the kernel's order: attach_dev is called with the
 * domain the device leaves.
 */
function deviceSetDomain(
  group: IommuGroup,
  dev: Device,
  domain: IommuDomain,
  old: IommuDomain | null,
): 0 | AttachErrno {
  const ret = domain.ops.attachDev(domain, dev, old);
  if (ret === 0 && group.subsys.trace.active) {
    group.subsys.trace.emit("attach", { device: dev.name, pasid: -1, domain: domain.id });
  }
  return ret;
}

/**
 * Move every device of the group to `domain`. If one fails, the devices already moved go back
 * to the group's current domain and the group stays where it was.
 *
 * @kernel drivers/iommu/iommu.c __iommu_group_set_domain_internal
 */
export function iommuGroupSetDomain(group: IommuGroup, domain: IommuDomain): 0 | AttachErrno {
  const old = group.domain;
  if (old === domain) return 0;
  for (let i = 0; i < group.devices.length; i++) {
    const ret = deviceSetDomain(group, group.devices[i], domain, old);
    if (ret !== 0) {
      for (let j = 0; j < i; j++) {
        if (old !== null) deviceSetDomain(group, group.devices[j], old, domain);
      }
      return ret;
    }
  }
  group.domain = domain;
  if (old !== null && old.iopfHandler !== null) {
    for (const dev of group.devices) iopfDomainDetached(dev, old, IOMMU_NO_PASID);
  }
  return 0;
}

/** The domain the group returns to when a user detaches: blocking while owned, else default. */
function coreDomain(group: IommuGroup): IommuDomain | null {
  return group.owner !== null ? group.blockingDomain : group.defaultDomain;
}

/**
 * Put a new device into `group`: it joins the group's current domain, or the group gets its
 * default domain when it has none yet.
 *
 * @kernel drivers/iommu/iommu.c __iommu_probe_device
 */
export function iommuGroupAddDevice(
  group: IommuGroup,
  dev: Device,
): 0 | AttachErrno | "EOPNOTSUPP" {
  const param = dev.iommu;
  if (param === null) return "ENODEV";
  param.group = group;
  group.devices.push(dev);
  let ret: 0 | AttachErrno | "EOPNOTSUPP" = 0;
  if (group.domain !== null) ret = deviceSetDomain(group, dev, group.domain, null);
  else if (group.defaultDomain === null) ret = iommuSetupDefaultDomain(group, 0);
  if (ret !== 0) {
    group.devices.pop();
    param.group = null;
    if (group.devices.length === 0) iommuGroupRelease(group);
  }
  return ret;
}

/**
 * Take `dev` out of its group: it is parked in the driver's release (or blocked) domain, and an
 * emptied group frees its default and blocking domains and its number.
 *
 * @kernel drivers/iommu/iommu.c __iommu_group_remove_device
 */
export function iommuGroupRemoveDevice(group: IommuGroup, dev: Device): void {
  const i = group.devices.indexOf(dev);
  if (i < 0) return;
  group.devices.splice(i, 1);
  const ops = opsOf(dev);
  const park = ops.releaseDomain ?? ops.blockedDomain;
  if (park !== undefined && park !== group.domain) park.ops.attachDev(park, dev, group.domain);
  if (dev.iommu !== null) dev.iommu.group = null;
  if (group.devices.length === 0) iommuGroupRelease(group);
}

function iommuGroupRelease(group: IommuGroup): void {
  const def = group.defaultDomain;
  const blocking = group.blockingDomain;
  group.domain = null;
  group.defaultDomain = null;
  group.blockingDomain = null;
  if (def !== null) iommuDomainFree(def);
  if (blocking !== null && blocking !== def) iommuDomainFree(blocking);
  group.subsys.groupIds.free(group.id);
}

/**
 * Fill in what the core owns of a fresh domain.
 *
 * @kernel drivers/iommu/iommu.c iommu_domain_init
 */
export function iommuDomainInit(
  domain: IommuDomain,
  type: number,
  ops: IommuOps,
  subsys: IommuSubsystem,
): void {
  domain.type = type;
  domain.owner = ops;
  domain.id = subsys.allocDomainId();
  domain.trace = subsys.trace;
  domain.clock = subsys.clock;
  if (domain.pgsizeBitmap === 0) domain.pgsizeBitmap = ops.pgsizeBitmap;
  if (domain.isDma) iommuGetDmaCookie(domain);
}

type AllocErrno = "ENOMEM" | "EINVAL" | "ENODEV" | "EOPNOTSUPP";

function pagingDomainAlloc(dev: Device, type: number, flags: number): IommuDomain | AllocErrno {
  const param = dev.iommu;
  if (param === null || param.iommuDev === null) return "ENODEV";
  const ops = param.ops;
  let domain: IommuDomain | AllocErrno;
  if (ops.domainAllocPagingFlags !== undefined) domain = ops.domainAllocPagingFlags(dev, flags);
  else if (ops.domainAllocPaging !== undefined && flags === 0) domain = ops.domainAllocPaging(dev);
  else return "EOPNOTSUPP";
  if (typeof domain === "string") return domain;
  iommuDomainInit(domain, type, ops, param.subsys);
  domain.allocFlags = flags;
  return domain;
}

/**
 * A paging domain for `dev` (the driver's paging allocator) with IOMMU_HWPT_ALLOC_* `flags`.
 * `'ENODEV'` for a device no IOMMU probed; `'EOPNOTSUPP'` when the driver has no allocator for
 * the flags; the driver's errnos otherwise.
 *
 * @kernel drivers/iommu/iommu.c iommu_paging_domain_alloc_flags
 */
export function iommuPagingDomainAllocFlags(dev: Device, flags: number): IommuDomain | AllocErrno {
  return pagingDomainAlloc(dev, IOMMU_DOMAIN_UNMANAGED, flags);
}

/** @kernel include/linux/iommu.h iommu_paging_domain_alloc */
export function iommuPagingDomainAlloc(dev: Device): IommuDomain | AllocErrno {
  return pagingDomainAlloc(dev, IOMMU_DOMAIN_UNMANAGED, 0);
}

/**
 * A nested domain over `parent` (a stage-2 paging domain allocated with
 * IOMMU_HWPT_ALLOC_NEST_PARENT), from driver-specific user data.
 *
 * @kernel drivers/iommu/iommufd/hw_pagetable.c iommufd_hwpt_nested_alloc
 */
export function iommuDomainAllocNested(
  dev: Device,
  parent: IommuDomain,
  flags: number,
  userData: unknown,
): IommuDomain | AllocErrno {
  const param = dev.iommu;
  if (param === null || param.iommuDev === null) return "ENODEV";
  if (param.ops.domainAllocNested === undefined) return "EOPNOTSUPP";
  if (!parent.isPaging || parent.owner !== param.ops) return "EINVAL";
  const domain = param.ops.domainAllocNested(dev, parent, flags, userData);
  if (typeof domain === "string") return domain;
  iommuDomainInit(domain, IOMMU_DOMAIN_NESTED, param.ops, param.subsys);
  return domain;
}

/**
 * Free a domain: the DMA-API state and then the driver's part; an SVA domain then drops the
 * mm_struct reference its allocation took. Static domains are never freed.
 *
 * @kernel drivers/iommu/iommu.c iommu_domain_free
 */
export function iommuDomainFree(domain: IommuDomain): void {
  if (domain.owner === null) return;
  if (domain === domain.owner.identityDomain || domain === domain.owner.blockedDomain) return;
  iommuPutDmaCookie(domain);
  const mm = domain.type === IOMMU_DOMAIN_SVA ? domain.mm : null;
  domain.ops.free?.(domain);
  mm?.mmdrop();
}

/**
 * The type to give the group: `target`, else what its devices' driver requires, else 0 (the
 * policy's choice); -1 when `target` contradicts the driver.
 *
 * @kernel drivers/iommu/iommu.c iommu_get_default_domain_type
 */
function defaultDomainType(group: IommuGroup, target: number): number {
  let driverType = 0;
  for (const dev of group.devices) {
    const want = opsOf(dev).defDomainType?.(dev) ?? 0;
    if (want === 0 || want === driverType) continue;
    // Drivers must agree; when they do not, the kernel recovers with identity taking precedence.
    if (driverType === 0 || want === IOMMU_DOMAIN_IDENTITY) driverType = want;
  }
  if (target !== 0) return driverType !== 0 && driverType !== target ? -1 : target;
  return driverType;
}

function allocDefaultDomain(group: IommuGroup, type: number): IommuDomain | AllocErrno {
  const dev = group.devices[0];
  const ops = opsOf(dev);
  if (type === IOMMU_DOMAIN_IDENTITY) return ops.identityDomain ?? "EOPNOTSUPP";
  if (type === IOMMU_DOMAIN_BLOCKED) return ops.blockedDomain ?? "EOPNOTSUPP";
  let t = type;
  // Lazy flushing needs a driver that can defer invalidations; otherwise stay strict.
  if (t === IOMMU_DOMAIN_DMA_FQ) {
    for (const d of group.devices) {
      if (!(opsOf(d).capable?.(d, IOMMU_CAP_DEFERRED_FLUSH) ?? false)) t = IOMMU_DOMAIN_DMA;
    }
  }
  if ((t & __IOMMU_DOMAIN_PAGING) === 0) return "EINVAL";
  return pagingDomainAlloc(dev, t, 0);
}

/**
 * Give the group its default domain (of `target` type, or by policy when 0) and attach it.
 * `'EINVAL'` when the devices require different types.
 *
 * @kernel drivers/iommu/iommu.c iommu_setup_default_domain
 */
export function iommuSetupDefaultDomain(
  group: IommuGroup,
  target: number,
): 0 | AttachErrno | "EOPNOTSUPP" | "ENODEV" {
  const type = defaultDomainType(group, target);
  if (type < 0) return "EINVAL";
  const policy = group.subsys.defDomainType;
  let domain = allocDefaultDomain(group, type !== 0 ? type : policy);
  // A policy choice the driver cannot honour falls back to translation, as iommu.c does; a type
  // the driver itself required does not.
  if (typeof domain === "string" && type === 0 && policy !== IOMMU_DOMAIN_DMA) {
    domain = allocDefaultDomain(group, IOMMU_DOMAIN_DMA);
  }
  if (typeof domain === "string") return domain === "EOPNOTSUPP" ? "EOPNOTSUPP" : domain;
  const ret = iommuGroupSetDomain(group, domain);
  if (ret !== 0) {
    iommuDomainFree(domain);
    return ret;
  }
  const previous = group.defaultDomain;
  group.defaultDomain = domain;
  if (previous !== null && previous !== domain) iommuDomainFree(previous);
  return 0;
}

function attachGroup(group: IommuGroup, domain: IommuDomain): 0 | AttachErrno {
  if (
    group.domain !== null &&
    group.domain !== group.defaultDomain &&
    group.domain !== group.blockingDomain
  ) {
    return "EBUSY";
  }
  if (!domainIommuOpsCompatible(opsOf(group.devices[0]), domain)) return "EINVAL";
  return iommuGroupSetDomain(group, domain);
}

/**
 * Attach a single-device group's device to `domain`. `'ENODEV'` for an unprobed device,
 * `'EINVAL'` when its group has other devices or the domain belongs to another driver, `'EBUSY'`
 * when it is attached to a domain other than its default or blocking one; attach_dev's errnos.
 *
 * @kernel drivers/iommu/iommu.c iommu_attach_device
 */
export function iommuAttachDevice(domain: IommuDomain, dev: Device): 0 | AttachErrno {
  const group = iommuGroupGet(dev);
  if (group === null) return "ENODEV";
  if (group.devices.length !== 1) return "EINVAL";
  return attachGroup(group, domain);
}

/**
 * Detach a single-device group's device from `domain`: back to the blocking domain if a user owns
 * the group, to the default domain otherwise. `'EINVAL'` when `domain` is not the attached one or
 * the group has several devices (the kernel WARNs); `'ENODEV'` for an unprobed device.
 *
 * @kernel drivers/iommu/iommu.c iommu_detach_device
 */
export function iommuDetachDevice(domain: IommuDomain, dev: Device): 0 | "EINVAL" | "ENODEV" {
  const group = iommuGroupGet(dev);
  if (group === null) return "ENODEV";
  if (domain !== group.domain || group.devices.length !== 1) return "EINVAL";
  const core = coreDomain(group);
  if (core !== null) iommuGroupSetDomain(group, core);
  return 0;
}

/**
 * Attach every device of `group` to `domain` (errnos as iommuAttachDevice, without the
 * single-device rule).
 *
 * @kernel drivers/iommu/iommu.c iommu_attach_group
 */
export function iommuAttachGroup(domain: IommuDomain, group: IommuGroup): 0 | AttachErrno {
  if (group.devices.length === 0) return "ENODEV";
  return attachGroup(group, domain);
}

/**
 * Detach `group` from `domain`. `'EINVAL'` when the group is not attached to it.
 *
 * @kernel drivers/iommu/iommu.c iommu_detach_group
 */
export function iommuDetachGroup(domain: IommuDomain, group: IommuGroup): 0 | "EINVAL" {
  if (domain !== group.domain) return "EINVAL";
  const core = coreDomain(group);
  if (core !== null) iommuGroupSetDomain(group, core);
  return 0;
}

/**
 * Move a group from whatever it is attached to straight to `domain`, with no blocking step in
 * between (iommufd's replace; its caller owns the group). On failure the group keeps its domain.
 * `'EINVAL'` for a domain of another driver (the kernel leaves that check to iommufd);
 * `'ENODEV'` for an empty group.
 *
 * @kernel drivers/iommu/iommu.c iommu_group_replace_domain
 */
export function iommuGroupReplaceDomain(group: IommuGroup, domain: IommuDomain): 0 | AttachErrno {
  if (group.devices.length === 0) return "ENODEV";
  if (!domainIommuOpsCompatible(opsOf(group.devices[0]), domain)) return "EINVAL";
  return iommuGroupSetDomain(group, domain);
}

/** The domain the device's RID translates through. @kernel drivers/iommu/iommu.c iommu_get_domain_for_dev */
export function iommuGetDomainForDev(dev: Device): IommuDomain | null {
  return iommuGroupGet(dev)?.domain ?? null;
}

function isDefaultDomain(group: IommuGroup): boolean {
  if (group.domain === group.defaultDomain) return true;
  // An identity default replaced by another identity domain still counts as default.
  return (
    group.defaultDomain?.type === IOMMU_DOMAIN_IDENTITY &&
    group.domain?.type === IOMMU_DOMAIN_IDENTITY
  );
}

/**
 * A kernel driver binds to `dev` and will use the DMA API. `'EBUSY'` when a user owns the group,
 * or the group is away from its default domain or has PASIDs attached while others use it.
 *
 * @kernel drivers/iommu/iommu.c iommu_device_use_default_domain
 */
export function iommuDeviceUseDefaultDomain(dev: Device): 0 | "EBUSY" {
  const group = iommuGroupGet(dev);
  if (group === null) return 0;
  if (group.ownerCnt > 0) {
    if (group.owner !== null || !isDefaultDomain(group) || group.pasidArray.size > 0) {
      return "EBUSY";
    }
  }
  group.ownerCnt++;
  return 0;
}

/**
 * The kernel driver of `dev` stops using the DMA API. `'EINVAL'` if it had not started or still
 * has PASIDs attached (the kernel WARNs and keeps the count).
 *
 * @kernel drivers/iommu/iommu.c iommu_device_unuse_default_domain
 */
export function iommuDeviceUnuseDefaultDomain(dev: Device): 0 | "EINVAL" {
  const group = iommuGroupGet(dev);
  if (group === null) return 0;
  if (group.ownerCnt === 0 || group.owner !== null || group.pasidArray.size > 0) return "EINVAL";
  group.ownerCnt--;
  return 0;
}

function allocBlockingDomain(group: IommuGroup): 0 | AllocErrno {
  if (group.blockingDomain !== null) return 0;
  const dev = group.devices[0];
  const ops = opsOf(dev);
  if (ops.blockedDomain !== undefined) {
    group.blockingDomain = ops.blockedDomain;
    return 0;
  }
  // Drivers without a blocked domain get an empty paging domain, which blocks just as well.
  const domain = pagingDomainAlloc(dev, IOMMU_DOMAIN_UNMANAGED, 0);
  if (typeof domain === "string") return domain;
  group.blockingDomain = domain;
  return 0;
}

function takeDmaOwnership(
  group: IommuGroup,
  owner: object,
): 0 | AttachErrno | "EOPNOTSUPP" | "ENODEV" {
  if (
    (group.domain !== null && group.domain !== group.defaultDomain) ||
    group.pasidArray.size > 0
  ) {
    return "EBUSY";
  }
  const ret = allocBlockingDomain(group);
  if (ret !== 0) return ret;
  const set = iommuGroupSetDomain(group, group.blockingDomain as IommuDomain);
  if (set !== 0) return set;
  group.owner = owner;
  group.ownerCnt++;
  return 0;
}

/**
 * A user (VFIO, iommufd) takes the group's DMA: it moves to the blocking domain. `'EPERM'` when
 * the group is in use by kernel drivers or another owner; `'EBUSY'` when it is away from its
 * default domain or has PASIDs attached.
 *
 * @kernel drivers/iommu/iommu.c iommu_group_claim_dma_owner
 */
export function iommuGroupClaimDmaOwner(
  group: IommuGroup,
  owner: object,
): 0 | AttachErrno | "EPERM" | "EOPNOTSUPP" | "ENODEV" {
  if (group.devices.length === 0) return "ENODEV";
  if (group.ownerCnt > 0) return "EPERM";
  return takeDmaOwnership(group, owner);
}

/**
 * Claim DMA ownership through one device; the same owner may claim several devices of the group.
 * `'EPERM'` when another owner or a kernel driver holds the group.
 *
 * @kernel drivers/iommu/iommu.c iommu_device_claim_dma_owner
 */
export function iommuDeviceClaimDmaOwner(
  dev: Device,
  owner: object,
): 0 | AttachErrno | "EPERM" | "EOPNOTSUPP" | "ENODEV" {
  const group = iommuGroupGet(dev);
  if (group === null) return "ENODEV";
  if (group.ownerCnt > 0) {
    if (group.owner !== owner) return "EPERM";
    group.ownerCnt++;
    return 0;
  }
  return takeDmaOwnership(group, owner);
}

function releaseDmaOwnership(group: IommuGroup): void {
  group.ownerCnt = 0;
  group.owner = null;
  if (group.defaultDomain !== null) iommuGroupSetDomain(group, group.defaultDomain);
}

/** Whether the group may leave user ownership: owned, and no PASID attached (the kernel WARNs). */
function canReleaseDmaOwnership(group: IommuGroup): boolean {
  return group.ownerCnt > 0 && group.owner !== null && group.pasidArray.size === 0;
}

/**
 * The owner gives the group back: it returns to its default domain. `'EINVAL'` when it was not
 * owned or PASIDs are still attached (the kernel WARNs and keeps the ownership).
 *
 * @kernel drivers/iommu/iommu.c iommu_group_release_dma_owner
 */
export function iommuGroupReleaseDmaOwner(group: IommuGroup): 0 | "EINVAL" {
  if (!canReleaseDmaOwnership(group)) return "EINVAL";
  releaseDmaOwnership(group);
  return 0;
}

/**
 * Drop one of the owner's claims; the last one releases the group as iommuGroupReleaseDmaOwner.
 *
 * @kernel drivers/iommu/iommu.c iommu_device_release_dma_owner
 */
export function iommuDeviceReleaseDmaOwner(dev: Device): 0 | "EINVAL" | "ENODEV" {
  const group = iommuGroupGet(dev);
  if (group === null) return "ENODEV";
  if (group.ownerCnt === 0 || group.owner === null) return "EINVAL";
  if (group.ownerCnt > 1) group.ownerCnt--;
  else if (group.pasidArray.size > 0) return "EINVAL";
  else releaseDmaOwnership(group);
  return 0;
}

/** @kernel drivers/iommu/iommu.c iommu_group_dma_owner_claimed */
export function iommuGroupDmaOwnerClaimed(group: IommuGroup): boolean {
  return group.ownerCnt > 0;
}

/** Exposed for the DMA-FQ type check of tests and the harness. */
export function iommuDomainIsLazy(domain: IommuDomain): boolean {
  return domain.type === IOMMU_DOMAIN_DMA_FQ;
}
