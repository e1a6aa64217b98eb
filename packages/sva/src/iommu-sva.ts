// Binding process address spaces to devices: the mm's one PASID from the global space, SVA domains
// shared per (mm, IOMMU), their users and bonds, PASID charges, and the SVA page-fault handler.

import {
  type Device,
  IOMMU_DOMAIN_SVA,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_FAULT_PERM_EXEC,
  IOMMU_FAULT_PERM_PRIV,
  IOMMU_FAULT_PERM_READ,
  IOMMU_FAULT_PERM_WRITE,
  IOMMU_PAGE_RESP_INVALID,
  IOMMU_PAGE_RESP_SUCCESS,
  IOMMU_PASID_INVALID,
  type IommuDomain,
  type IommuFaultPageRequest,
  type IommuSubsystem,
  type IopfGroup,
  iommuAllocGlobalPasid,
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuDomainFree,
  iommuDomainInit,
  iommuFreeGlobalPasid,
  iopfGroupResponse,
} from "@iommu-sim/iommu-core";
import { bug } from "@iommu-sim/iommu-core/platform";
import {
  FAULT_FLAG_INSTRUCTION,
  FAULT_FLAG_REMOTE,
  FAULT_FLAG_USER,
  FAULT_FLAG_WRITE,
  type Mm,
  VM_EXEC,
  VM_FAULT_ERROR,
  VM_READ,
  VM_WRITE,
} from "./mm/index.js";

/**
 * What the IOMMU layer keeps per mm: its PASID, which lives as long as the mm_struct (freed by
 * the last mmdrop, not by unbind), and the SVA domains created for it, one per IOMMU instance
 * (per driver on VT-d, whose SVA domains span units).
 *
 * @kernel include/linux/iommu.h iommu_mm_data
 */
export class IommuMmData {
  readonly pasid: number;
  readonly subsys: IommuSubsystem;
  /** Newest first (the kernel's list_add), the order a bind tries them in. */
  readonly svaDomains: IommuDomain[] = [];

  constructor(pasid: number, subsys: IommuSubsystem) {
    this.pasid = pasid;
    this.subsys = subsys;
  }
}

/**
 * A bond between a device and an mm, returned by bind: the attach handle stored at the PASID.
 * Binding the same pair again returns the same bond with one more user.
 *
 * @kernel include/linux/iommu.h iommu_sva
 */
export class IommuSva {
  readonly dev: Device;
  readonly domain: IommuDomain;
  /** Binds not yet undone. */
  users = 1;

  constructor(dev: Device, domain: IommuDomain) {
    this.dev = dev;
    this.domain = domain;
  }
}

/** Bugs the harness can plant in the generic SVA layer. */
export interface SvaInjections {
  /**
   * Unbinding a device's last bond of an mm frees the mm's PASID although the mm still lives (and
   * still tags its work with it): the next bind of another process gets the same PASID.
   */
  freePasidOnUnbind: boolean;
}

/** Where the SVA layer reports PASID lifetimes (the harness's oracle listens). */
export interface SvaHooks {
  pasidAllocated?(mm: Mm, pasid: number): void;
  pasidFreed?(mm: Mm, pasid: number): void;
  /** A page request was handled for `mm` with response `code`. */
  faultHandled?(mm: Mm | null, fault: IommuFaultPageRequest, code: number): void;
}

/** The SVA layer's state per simulated machine (the kernel's file-scope globals of iommu-sva.c). */
export interface SvaState {
  readonly inject: SvaInjections;
  hooks: SvaHooks;
}

const states = new WeakMap<IommuSubsystem, SvaState>();

/** The SVA state of a machine, created on first use. */
export function svaState(subsys: IommuSubsystem): SvaState {
  let s = states.get(subsys);
  if (s === undefined) {
    s = { inject: { freePasidOnUnbind: false }, hooks: {} };
    states.set(subsys, s);
  }
  return s;
}

/** Errnos of a bind. */
export type SvaBindErrno =
  | "ENODEV"
  | "EINVAL"
  | "EBUSY"
  | "ENOSPC"
  | "EOVERFLOW"
  | "ENOMEM"
  | "EOPNOTSUPP";

function mmData(mm: Mm): IommuMmData | null {
  return (mm.iommuMm as IommuMmData | null) ?? null;
}

/**
 * The mm's PASID, allocated from the global space on the first bind (uncharged: the charge comes
 * at attach). `'EOVERFLOW'` when the mm has a PASID the device cannot emit; `'ENOSPC'` when the
 * space is full or the device has no PASIDs.
 *
 * @kernel drivers/iommu/iommu-sva.c iommu_alloc_mm_data
 */
function allocMmData(mm: Mm, dev: Device): IommuMmData | "EOVERFLOW" | "ENOSPC" {
  const param = dev.iommu as NonNullable<Device["iommu"]>;
  const have = mmData(mm);
  if (have !== null) return have.pasid >= param.maxPasids ? "EOVERFLOW" : have;
  const pasid = iommuAllocGlobalPasid(dev);
  if (pasid === IOMMU_PASID_INVALID) return "ENOSPC";
  const data = new IommuMmData(pasid, param.subsys);
  mm.iommuMm = data;
  mm.onMmdrop = mmPasidDrop;
  svaState(param.subsys).hooks.pasidAllocated?.(mm, pasid);
  return data;
}

/**
 * The mm_struct is freed: its PASID goes back to the global space (uncharged with it).
 *
 * @kernel drivers/iommu/iommu-sva.c mm_pasid_drop
 */
export function mmPasidDrop(mm: Mm): void {
  const data = mmData(mm);
  if (data === null) return;
  mm.iommuMm = null;
  iommuFreeGlobalPasid(data.subsys, data.pasid);
  svaState(data.subsys).hooks.pasidFreed?.(mm, data.pasid);
}

/**
 * Allocate an SVA domain for `mm` from the driver of `dev`; it holds an mm_struct reference until
 * it is freed.
 *
 * @kernel drivers/iommu/iommu-sva.c iommu_sva_domain_alloc
 */
function svaDomainAlloc(
  dev: Device,
  mm: Mm,
): IommuDomain | "ENOMEM" | "EINVAL" | "EOPNOTSUPP" | "ENODEV" {
  const param = dev.iommu as NonNullable<Device["iommu"]>;
  const ops = param.ops;
  if (ops.domainAllocSva === undefined) return "EOPNOTSUPP";
  const domain = ops.domainAllocSva(dev, mm);
  if (typeof domain === "string") return domain;
  iommuDomainInit(domain, IOMMU_DOMAIN_SVA, ops, param.subsys);
  mm.mmgrab();
  domain.mm = mm;
  domain.iopfHandler = iommuSvaIopfHandler;
  return domain;
}

/**
 * Bind `mm` to `dev`: the device may then DMA in the process's address space at the mm's PASID
 * (iommuSvaGetPasid). A device bound to the mm already gets the same bond with one more user. The
 * mm's SVA domains are tried first (one per IOMMU: a domain of another IOMMU refuses the attach),
 * then a new one is allocated.
 *
 * The first attach of the PASID charges it to the process's user (`mm.charge`): a bind over the
 * limit fails with `'EBUSY'` and leaves nothing behind, not even the PASID it allocated (the kernel
 * keeps a PASID allocated by a failed bind until the mm goes; here any failed first bind gives it
 * back).
 *
 * Errnos: `'ENODEV'` (device without IOMMU, or the driver's); `'EINVAL'` (the mm has exited; the
 * driver's); `'EBUSY'` (the PASID is taken by a non-SVA domain or another mm, or over the charge
 * limit); `'ENOSPC'` (no PASID); `'EOVERFLOW'` (the mm's PASID is beyond the device's width);
 * `'EOPNOTSUPP'` (the driver has no SVA); `'ENOMEM'`.
 *
 * @kernel drivers/iommu/iommu-sva.c iommu_sva_bind_device
 */
export function iommuSvaBindDevice(dev: Device, mm: Mm): IommuSva | SvaBindErrno {
  const param = dev.iommu;
  const group = param?.group ?? null;
  if (param === null || group === null) return "ENODEV";
  if (mm.users === 0) return "EINVAL";
  const fresh = mmData(mm) === null;
  const data = allocMmData(mm, dev);
  if (typeof data === "string") return data;
  const pasid = data.pasid;

  const attached = group.pasidArray.get(pasid);
  if (attached !== undefined) {
    // iommu_attach_handle_get: a domain of another type at the PASID is EBUSY.
    const handle = attached.handle;
    if (attached.domain.type !== IOMMU_DOMAIN_SVA || !(handle instanceof IommuSva)) {
      return undoFirstBind(mm, fresh, "EBUSY");
    }
    if (handle.domain.mm !== mm) return undoFirstBind(mm, fresh, "EBUSY");
    handle.users++;
    return handle;
  }

  let charged = false;
  const space = data.subsys.pasids;
  if (mm.charge !== null && space.chargeOf(pasid) === null) {
    const c = space.charge(pasid, mm.charge);
    if (c === "EBUSY" || c === "EINVAL")
      return undoFirstBind(mm, fresh, c === "EBUSY" ? c : "EINVAL");
    charged = c === 0;
  }

  for (const domain of data.svaDomains) {
    const handle = new IommuSva(dev, domain);
    if (iommuAttachDevicePasid(domain, dev, pasid, handle) === 0) {
      domain.users++;
      return handle;
    }
  }

  const domain = svaDomainAlloc(dev, mm);
  if (typeof domain === "string") return undoCharge(mm, fresh, charged, domain);
  const handle = new IommuSva(dev, domain);
  const ret = iommuAttachDevicePasid(domain, dev, pasid, handle);
  if (ret !== 0) {
    iommuDomainFree(domain);
    return undoCharge(mm, fresh, charged, ret);
  }
  domain.users = 1;
  // list_add: the newest domain is tried first by the next bind.
  data.svaDomains.unshift(domain);
  return handle;
}

function undoCharge<E extends SvaBindErrno>(mm: Mm, fresh: boolean, charged: boolean, err: E): E {
  const data = mmData(mm);
  if (charged && data !== null && !fresh) data.subsys.pasids.uncharge(data.pasid);
  return undoFirstBind(mm, fresh, err);
}

/** A failed first bind gives back the PASID it allocated (and its charge with it). */
function undoFirstBind<E extends SvaBindErrno>(mm: Mm, fresh: boolean, err: E): E {
  if (fresh) mmPasidDrop(mm);
  return err;
}

/**
 * Undo one bind. The last user of a bond detaches the PASID from the device; the last bond of an
 * SVA domain frees the domain. The mm keeps its PASID. `'EINVAL'` for a bond already undone (the
 * kernel would use freed memory).
 *
 * @kernel drivers/iommu/iommu-sva.c iommu_sva_unbind_device
 */
export function iommuSvaUnbindDevice(handle: IommuSva): 0 | "EINVAL" {
  if (handle.users === 0) return "EINVAL";
  if (--handle.users > 0) return 0;
  const domain = handle.domain;
  const mm = domain.mm as Mm;
  const data = mmData(mm);
  if (data === null) bug(`SVA bond of ${handle.dev.name} on an mm without PASID`);
  iommuDetachDevicePasid(domain, handle.dev, data.pasid);
  if (--domain.users === 0) {
    data.svaDomains.splice(data.svaDomains.indexOf(domain), 1);
    const state = svaState(data.subsys);
    if (state.inject.freePasidOnUnbind && data.svaDomains.length === 0) {
      // The planted bug: the PASID goes back while mm->iommu_mm still names it.
      iommuFreeGlobalPasid(data.subsys, data.pasid);
      state.hooks.pasidFreed?.(mm, data.pasid);
    }
    iommuDomainFree(domain);
  }
  return 0;
}

/**
 * The PASID a bond's device uses for the mm.
 *
 * @kernel drivers/iommu/iommu-sva.c iommu_sva_get_pasid
 */
export function iommuSvaGetPasid(handle: IommuSva): number {
  return mmData(handle.domain.mm as Mm)?.pasid ?? IOMMU_PASID_INVALID;
}

/** The PASID of `mm`, or IOMMU_PASID_INVALID before its first bind. */
export function mmGetPasid(mm: Mm): number {
  return mmData(mm)?.pasid ?? IOMMU_PASID_INVALID;
}

/**
 * Resolve one page request in `mm`: the VMA must exist and allow the access; the fault handler
 * maps the page. Returns the response code.
 *
 * @kernel drivers/iommu/iommu-sva.c iommu_sva_handle_mm
 */
export function iommuSvaHandleMm(fault: IommuFaultPageRequest, mm: Mm): number {
  if ((fault.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID) === 0) return IOMMU_PAGE_RESP_INVALID;
  if (!mm.mmgetNotZero()) return IOMMU_PAGE_RESP_INVALID;
  let status = IOMMU_PAGE_RESP_INVALID;
  const vma = mm.vmaLookup(fault.addr);
  if (vma !== null) {
    let access = 0;
    let flags = FAULT_FLAG_REMOTE;
    if (fault.perm & IOMMU_FAULT_PERM_READ) access |= VM_READ;
    if (fault.perm & IOMMU_FAULT_PERM_WRITE) {
      access |= VM_WRITE;
      flags |= FAULT_FLAG_WRITE;
    }
    if (fault.perm & IOMMU_FAULT_PERM_EXEC) {
      access |= VM_EXEC;
      flags |= FAULT_FLAG_INSTRUCTION;
    }
    if ((fault.perm & IOMMU_FAULT_PERM_PRIV) === 0) flags |= FAULT_FLAG_USER;
    if ((access & ~vma.flags) === 0) {
      const ret = mm.handleMmFault(vma, fault.addr, flags);
      status = (ret & VM_FAULT_ERROR) !== 0 ? IOMMU_PAGE_RESP_INVALID : IOMMU_PAGE_RESP_SUCCESS;
    }
  }
  mm.mmput();
  return status;
}

/**
 * Handle a page request group in the fault queue's work: each request in turn until one fails
 * (errors are sticky), then one response for the group.
 *
 * @kernel drivers/iommu/iommu-sva.c iommu_sva_handle_iopf
 */
function svaHandleIopf(group: IopfGroup): void {
  const mm = (group.domain?.mm as Mm | null | undefined) ?? null;
  let status = IOMMU_PAGE_RESP_SUCCESS;
  for (const f of group.faults) {
    if (status !== IOMMU_PAGE_RESP_SUCCESS) break;
    status = mm === null ? IOMMU_PAGE_RESP_INVALID : iommuSvaHandleMm(f.fault, mm);
  }
  const subsys = group.dev.iommu?.subsys;
  if (subsys !== undefined)
    svaState(subsys).hooks.faultHandled?.(mm, group.lastFault.fault, status);
  iopfGroupResponse(group, status);
}

/**
 * The IOPF handler of every SVA domain: the group is handled later, in the fault queue's work.
 * `'ENODEV'` when the device is in no fault queue (the core then answers failure).
 *
 * @kernel drivers/iommu/iommu-sva.c iommu_sva_iopf_handler
 */
export function iommuSvaIopfHandler(group: IopfGroup): 0 | "ENODEV" {
  const queue = group.dev.iommu?.faultParam?.queue ?? null;
  if (queue === null) return "ENODEV";
  queue.queueWork(group, svaHandleIopf);
  return 0;
}
