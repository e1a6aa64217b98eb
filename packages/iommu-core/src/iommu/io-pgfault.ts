// I/O page faults: page requests reported by a driver are grouped (until the last request of a
// group), handed to the handler of the domain attached at the PASID, and answered exactly once.

import type { Device } from "../device/device.js";
import type { IommuDomain } from "./iommu-domain.js";
import {
  IOMMU_PAGE_RESP_FAILURE,
  IOMMU_PAGE_RESP_INVALID,
  type IommuPageResponse,
} from "./iommu-ops.js";
import { IOMMU_NO_PASID } from "./iommu-subsystem.js";

/** Page request flags. @kernel include/linux/iommu.h IOMMU_FAULT_PAGE_REQUEST_PASID_VALID */
export const IOMMU_FAULT_PAGE_REQUEST_PASID_VALID = 1 << 0;
export const IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE = 1 << 1;
export const IOMMU_FAULT_PAGE_REQUEST_PRIV_DATA = 1 << 2;
export const IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID = 1 << 3;

/** Access a page request asks for. @kernel include/linux/iommu.h IOMMU_FAULT_PERM_READ */
export const IOMMU_FAULT_PERM_READ = 1 << 0;
export const IOMMU_FAULT_PERM_WRITE = 1 << 1;
export const IOMMU_FAULT_PERM_EXEC = 1 << 2;
export const IOMMU_FAULT_PERM_PRIV = 1 << 3;

/**
 * One page request as a driver reports it.
 *
 * @kernel include/linux/iommu.h iommu_fault_page_request
 */
export interface IommuFaultPageRequest {
  flags: number;
  pasid: number;
  grpid: number;
  perm: number;
  /** Page address. */
  addr: number;
  /** Implementation data the response must carry back (VT-d private data). */
  privateData: readonly [number, number];
}

/** @kernel include/linux/iommu.h iopf_fault */
export interface IopfFault {
  fault: IommuFaultPageRequest;
}

/**
 * The requests of one page request group, handed to a domain's handler as one unit.
 *
 * @kernel include/linux/iommu.h iopf_group
 */
export class IopfGroup {
  /** The last request of the group: the response goes out under its PASID and group index. */
  readonly lastFault: IopfFault;
  /** Every request of the group, the last one included, in arrival order. */
  readonly faults: IopfFault[];
  readonly dev: Device;
  /** The domain whose handler received the group. */
  domain: IommuDomain | null = null;
  /** The attach handle found at the PASID (SVA bond, iommufd handle). */
  attachHandle: unknown = null;
  /** Whether the response went out. */
  responded = false;
  /** The response code sent, or -1. */
  responseCode = -1;
  /** Handler data. */
  cookie: unknown = null;

  constructor(dev: Device, lastFault: IopfFault, faults: IopfFault[]) {
    this.dev = dev;
    this.lastFault = lastFault;
    this.faults = faults;
  }

  get faultCount(): number {
    return this.faults.length;
  }
}

/**
 * The IOPF state of one device in a queue.
 *
 * @kernel include/linux/iommu.h iommu_fault_param
 */
export class IopfDeviceParam {
  readonly dev: Device;
  readonly queue: IopfQueue;
  /** Requests of groups whose last request has not arrived. */
  readonly partial: IopfFault[] = [];
  /** Groups handed to a handler and not yet answered. */
  readonly pending: IopfGroup[] = [];

  constructor(dev: Device, queue: IopfQueue) {
    this.dev = dev;
    this.queue = queue;
  }
}

/** Counters for the oracle's "every page request gets exactly one response". */
export interface IopfStats {
  /** Requests reported. */
  requests: number;
  /** Groups completed (last request seen). */
  groups: number;
  /** Responses sent (by handlers or automatically). */
  responses: number;
  /** Responses sent by the core because nobody could handle the group or it was abandoned. */
  autoResponses: number;
  /** Partial requests dropped (device removed, queue discarded). */
  discarded: number;
  /** iopfGroupResponse calls for a group already answered (a handler bug). */
  duplicateResponses: number;
}

/**
 * A fault queue: the devices of one IOMMU whose page requests are processed together, and the
 * work the handlers deferred (the kernel's workqueue), run in explicit steps.
 *
 * @kernel drivers/iommu/io-pgfault.c iopf_queue
 */
export class IopfQueue {
  readonly name: string;
  readonly devices: Device[] = [];
  private readonly work: Array<{ group: IopfGroup; fn: (group: IopfGroup) => void }> = [];
  readonly stats: IopfStats = {
    requests: 0,
    groups: 0,
    responses: 0,
    autoResponses: 0,
    discarded: 0,
    duplicateResponses: 0,
  };

  constructor(name: string) {
    this.name = name;
  }

  /**
   * Add `dev` to the queue. `'ENODEV'` for a device no IOMMU probed; `'EBUSY'` when it is in a
   * queue already.
   *
   * @kernel drivers/iommu/io-pgfault.c iopf_queue_add_device
   */
  addDevice(dev: Device): 0 | "ENODEV" | "EBUSY" {
    const param = dev.iommu;
    if (param === null || param.iommuDev === null) return "ENODEV";
    if (param.faultParam !== null) return "EBUSY";
    param.faultParam = new IopfDeviceParam(dev, this);
    this.devices.push(dev);
    return 0;
  }

  /**
   * Remove `dev`: its partial requests are dropped and every group still waiting for a response
   * is answered with IOMMU_PAGE_RESP_INVALID, so the device is never left waiting. `'EINVAL'`
   * when the device is not in this queue.
   *
   * @kernel drivers/iommu/io-pgfault.c iopf_queue_remove_device
   */
  removeDevice(dev: Device): 0 | "EINVAL" {
    const param = dev.iommu?.faultParam ?? null;
    if (param === null || param.queue !== this) return "EINVAL";
    this.stats.discarded += param.partial.length;
    param.partial.length = 0;
    while (param.pending.length > 0) {
      autoRespond(param.pending[0], IOMMU_PAGE_RESP_INVALID);
    }
    for (let i = this.work.length - 1; i >= 0; i--) {
      if (this.work[i].group.dev === dev) this.work.splice(i, 1);
    }
    (dev.iommu as NonNullable<typeof dev.iommu>).faultParam = null;
    this.devices.splice(this.devices.indexOf(dev), 1);
    return 0;
  }

  /**
   * Drop every partial request of every device (after the hardware's page request queue
   * overflowed, when their last requests will never come).
   *
   * @kernel drivers/iommu/io-pgfault.c iopf_queue_discard_partial
   */
  discardPartial(): void {
    for (const dev of this.devices) {
      const param = dev.iommu?.faultParam;
      if (!param) continue;
      this.stats.discarded += param.partial.length;
      param.partial.length = 0;
    }
  }

  /** Defer handling of `group` to the queue's work (what SVA's handler does). */
  queueWork(group: IopfGroup, fn: (group: IopfGroup) => void): void {
    this.work.push({ group, fn });
  }

  /** Work items waiting. */
  get workPending(): number {
    return this.work.length;
  }

  /**
   * Run up to `budget` deferred work items in order; returns how many ran.
   *
   * @kernel drivers/iommu/io-pgfault.c iopf_queue_flush_dev
   */
  runWork(budget = Number.POSITIVE_INFINITY): number {
    let ran = 0;
    while (ran < budget && this.work.length > 0) {
      const item = this.work.shift() as { group: IopfGroup; fn: (group: IopfGroup) => void };
      item.fn(item.group);
      ran++;
    }
    return ran;
  }

  /** Groups waiting for a response, over all devices. */
  get pendingGroups(): number {
    let n = 0;
    for (const dev of this.devices) n += dev.iommu?.faultParam?.pending.length ?? 0;
    return n;
  }
}

function sendResponse(group: IopfGroup, code: number): void {
  const dev = group.dev;
  const param = dev.iommu?.faultParam ?? null;
  const fault = group.lastFault.fault;
  const msg: IommuPageResponse = { pasid: fault.pasid, grpid: fault.grpid, code };
  dev.iommu?.ops.pageResponse?.(dev, group.lastFault, msg);
  group.responded = true;
  group.responseCode = code;
  if (param !== null) {
    const i = param.pending.indexOf(group);
    if (i >= 0) param.pending.splice(i, 1);
    param.queue.stats.responses++;
  }
  const trace = dev.iommu?.subsys.trace;
  if (trace?.active) {
    trace.emit("iopf", {
      device: dev.name,
      pasid: fault.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID ? fault.pasid : -1,
      iova: fault.addr,
      grpid: fault.grpid,
      response: code,
    });
  }
}

function autoRespond(group: IopfGroup, code: number): void {
  const param = group.dev.iommu?.faultParam ?? null;
  if (param !== null) param.queue.stats.autoResponses++;
  sendResponse(group, code);
}

/**
 * Answer a page request group. Sends exactly one response: a second call for the same group
 * sends nothing and returns `'EALREADY'` (counted as a duplicate; the kernel silently ignores it).
 *
 * @kernel drivers/iommu/io-pgfault.c iopf_group_response
 */
export function iopfGroupResponse(group: IopfGroup, code: number): 0 | "EALREADY" {
  if (group.responded) {
    const param = group.dev.iommu?.faultParam;
    if (param) param.queue.stats.duplicateResponses++;
    return "EALREADY";
  }
  sendResponse(group, code);
  return 0;
}

/** The domain (and handle) that should handle a request: attached at its PASID, or at the RID. */
function findFaultHandler(
  dev: Device,
  fault: IommuFaultPageRequest,
): { domain: IommuDomain; handle: unknown } | null {
  const group = dev.iommu?.group ?? null;
  if (group === null) return null;
  let attach = null;
  if (fault.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID) {
    attach = group.pasidArray.get(fault.pasid) ?? null;
    // With a guest-owned PASID table, faults on any PASID go to the nested domain at the RID.
    if (attach === null && dev.iommu?.ops.userPasidTable && group.domain !== null) {
      attach = { domain: group.domain, handle: null };
    }
  } else if (group.domain !== null) {
    attach = group.pasidArray.get(IOMMU_NO_PASID) ?? { domain: group.domain, handle: null };
  }
  if (attach === null || attach.domain.iopfHandler === null) return null;
  return attach;
}

/**
 * A driver reports one page request of `dev`. Requests before the last of a group wait (grouped
 * by group index); with the last one the group goes to the handler of the domain attached at the
 * PASID (or the RID). When nothing there handles faults the core answers IOMMU_PAGE_RESP_INVALID
 * at once (iopf_error_response: this request is bad, the device's PRI goes on); when the handler
 * refuses the group it answers IOMMU_PAGE_RESP_FAILURE (the group was aborted).
 * `'ENODEV'` when the device is in no fault queue (the driver must answer the request itself).
 *
 * @kernel drivers/iommu/io-pgfault.c iommu_report_device_fault
 */
export function iommuReportDeviceFault(dev: Device, evt: IopfFault): 0 | "ENODEV" {
  const param = dev.iommu?.faultParam ?? null;
  if (param === null) return "ENODEV";
  const stats = param.queue.stats;
  stats.requests++;
  const fault = evt.fault;
  if (!(fault.flags & IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE)) {
    param.partial.push(evt);
    return 0;
  }
  stats.groups++;
  const faults: IopfFault[] = [];
  for (let i = 0; i < param.partial.length; ) {
    const p = param.partial[i];
    // Grouped by group index alone, as the kernel does: PCIe makes the index unique per function.
    if (p.fault.grpid === fault.grpid) {
      faults.push(p);
      param.partial.splice(i, 1);
    } else {
      i++;
    }
  }
  faults.push(evt);
  const group = new IopfGroup(dev, evt, faults);
  param.pending.push(group);
  const found = findFaultHandler(dev, fault);
  if (found === null) {
    autoRespond(group, IOMMU_PAGE_RESP_INVALID);
    return 0;
  }
  group.domain = found.domain;
  group.attachHandle = found.handle;
  const handler = found.domain.iopfHandler;
  if (handler === null || handler(group) !== 0) {
    if (!group.responded) autoRespond(group, IOMMU_PAGE_RESP_FAILURE);
  }
  return 0;
}

/**
 * `domain` stopped being attached at `pasid` of `dev`: groups it was handed and has not answered
 * are answered IOMMU_PAGE_RESP_INVALID, and partial requests for the PASID are dropped, so that no
 * request outlives the attachment unanswered.
 *
 * @kernel drivers/iommu/iommufd/fault.c iommufd_auto_response_faults
 */
export function iopfDomainDetached(dev: Device, domain: IommuDomain, pasid: number): void {
  const param = dev.iommu?.faultParam ?? null;
  if (param === null) return;
  for (let i = param.pending.length - 1; i >= 0; i--) {
    const g = param.pending[i];
    if (g.domain === domain && pasidOf(g.lastFault.fault) === pasid) {
      autoRespond(g, IOMMU_PAGE_RESP_INVALID);
    }
  }
  for (let i = param.partial.length - 1; i >= 0; i--) {
    if (pasidOf(param.partial[i].fault) === pasid) {
      param.partial.splice(i, 1);
      param.queue.stats.discarded++;
    }
  }
}

function pasidOf(fault: IommuFaultPageRequest): number {
  return fault.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID ? fault.pasid : IOMMU_NO_PASID;
}
