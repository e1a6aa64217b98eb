// A DMA-capable device: its PCI capabilities (PASID, ATS, PRI) as the kernel enables them, and its
// DMA engine, which moves real bytes through the IOMMU it is routed to.

import type { DevIommu } from "../iommu/dev-iommu.js";
import { bug } from "../platform/bug.js";
import type { PhysMemory } from "../platform/phys-memory.js";
import { ATC_DEFAULT_ENTRIES, Atc } from "./atc.js";
import type { DmaBus } from "./bus.js";
import {
  AT_TRANSLATED,
  AT_TRANSLATION_REQUEST,
  AT_UNTRANSLATED,
  type DevicePort,
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  FaultKind,
  type IommuHardware,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  type PageRequest,
  PRG_INVALID_REQUEST,
  PRG_SUCCESS,
  XLATE_FAULT,
  XLATE_OK,
  XLATE_STALLED,
} from "./iommu-hardware.js";
import {
  isPciRid,
  PCI_ATS_MIN_STU,
  PCI_PASID_CAP_EXEC,
  PCI_PASID_CAP_PRIV,
  PCI_PASID_MAX_BITS,
} from "./pci.js";

/** DMA flag: a privileged (supervisor) request. DMA_EXEC (from iommu-hardware) marks a fetch. */
export const DMA_PRIV = 8;
const FLAGS_KNOWN = DMA_EXEC | DMA_PRIV;

/** The whole transfer completed. */
export const DMA_OK = 0;
/** A page faulted (IOMMU fault, ATS answer without access, failed page request, ...). */
export const DMA_FAULT = 1;
/** A page's request is stalled in the IOMMU (SMMU stall model) until software resumes it. */
export const DMA_STALLED = 2;
/** A page request was sent (or is still outstanding) for a page; retry after the response. */
export const DMA_PAGE_REQUESTED = 3;
/** The memory access at the translated address failed on the bus. */
export const DMA_BUS_ERROR = 4;
/** The device cannot emit the PASID prefix asked for (PASID, privileged or execute bit). */
export const DMA_NO_PASID = 5;

/** Names of the DMA result codes, for traces and reports. */
export const DMA_STATUS_NAMES: readonly string[] = Object.freeze([
  "ok",
  "fault",
  "stalled",
  "page-requested",
  "bus-error",
  "no-pasid",
]);

/** Number of Page Request Group indices (the field is 9 bits). @spec PCIe Base Specification 10.4.1 */
export const PRG_INDEX_COUNT = 512;

/**
 * Why the last DMA stopped, on the device's side (`Device.lastReason`). With IOMMU the
 * architecture's view is in `lastFaultKind` / `lastFaultCode`.
 */
export const DmaReason = Object.freeze({
  NONE: 0,
  /** The IOMMU faulted (or stalled) the request; see lastFaultKind / lastFaultCode. */
  IOMMU: 1,
  /** The Translation Completion granted no (or not enough) access and PRI cannot be used. */
  ATS_NO_ACCESS: 2,
  /** Every page request the device may have outstanding is outstanding: nothing was sent. */
  PRI_NO_CREDIT: 3,
  /** The page's request group was answered Invalid Request. */
  PRG_INVALID: 4,
  /** The page's request group was answered Response Failure (PRI is now halted). */
  PRG_FAILURE: 5,
  /** The page's request group was answered Success, yet the retried translation grants nothing. */
  PRG_SUCCESS_NO_ACCESS: 6,
  /** A page request for the page is sent (now or earlier) and not answered yet. */
  PAGE_REQUEST_PENDING: 7,
  /** The page's transaction is stalled and not resumed yet. */
  STALL_PENDING: 8,
  /** Software terminated the page's stalled transaction. */
  STALL_TERMINATED: 9,
  /** A PASID was given but the device has PASIDs disabled (or no PASID capability). */
  PASID_DISABLED: 10,
  /** The PASID is outside the device's PASID width. */
  PASID_RANGE: 11,
  /** Privileged request, but the PCI device cannot signal it (no PASID or Privileged Mode off). */
  PRIV_DISABLED: 12,
  /** Execute request, but the PCI device cannot signal it (no PASID or Execute Permission off). */
  EXEC_DISABLED: 13,
  /** Malformed call (address, length or flags). */
  BAD_REQUEST: 14,
  /** The device is not on a bus. */
  NOT_ON_BUS: 15,
  /** Memory refused the access at the translated address. */
  MEMORY: 16,
});
export type DmaReason = (typeof DmaReason)[keyof typeof DmaReason];

/**
 * Watches the pages a device's DMAs reach: the harness's isolation oracle compares each with a
 * fresh walk of the tables and with what the domain's owner mapped.
 */
export interface DmaPageObserver {
  /**
   * One page access of a DMA was translated and is about to reach memory at `pa` (the page's
   * physical address plus the access's offset). `viaAtc`: the device's ATC gave the translation
   * (the IOMMU saw only a translated request).
   */
  dmaPage(
    dev: Device,
    pasid: number,
    iovaPfn: number,
    access: number,
    privileged: boolean,
    pa: number,
    viaAtc: boolean,
  ): void;
  /**
   * A page access of a DMA faulted (the IOMMU refused it, or the ATC held too little and the
   * device could not ask again); `lastFaultKind` / `lastFaultCode` of `dev` say why. Optional.
   */
  dmaFault?(
    dev: Device,
    pasid: number,
    iovaPfn: number,
    access: number,
    privileged: boolean,
    viaAtc: boolean,
  ): void;
}

export interface DeviceOptions {
  /** Unique name ("nvme0", "gpu"). */
  name: string;
  /** PCI requester ID (bus << 8 | devfn); for a platform device its bus-specific ID. */
  rid: number;
  /** SMMU StreamID; defaults to `rid`. */
  sid?: number;
  /** A PCI(e) function (default) or a platform device. */
  isPci?: boolean;
  /** PASID width: 0 = no PASID capability (no SubstreamIDs), at most 20. */
  pasidBits?: number;
  /** PASID features the capability supports: PCI_PASID_CAP_EXEC | PCI_PASID_CAP_PRIV. */
  pasidFeatures?: number;
  /** Every switch on the path passes End-End TLP prefixes (needed to enable PASID); default true. */
  eetlpPrefixPath?: boolean;
  /** ATS capability (PCI only). */
  ats?: boolean;
  /** ATC entries (default 32). */
  atcEntries?: number;
  /** ATS capability bit Global Invalidate Supported (default true). */
  atsGlobalInvalidate?: boolean;
  /** PRI capability (PCI only, needs ATS). */
  pri?: boolean;
  /** Outstanding Page Request Capacity (default 32). */
  priOutstanding?: number;
  /** PRI status bit PRG Response PASID Required (default false). */
  priPasidRequired?: boolean;
  /** The device tolerates stalled transactions (firmware "dma-can-stall"; platform devices). */
  stall?: boolean;
}

/** Per-device event counters. */
export interface DeviceStats {
  /** DMA calls. */
  dmas: number;
  /** Bytes moved to or from memory. */
  bytes: number;
  /** DMAs that ended in DMA_FAULT. */
  faults: number;
  /** DMAs that ended in DMA_BUS_ERROR. */
  busErrors: number;
  /** DMAs refused with DMA_NO_PASID. */
  noPasid: number;
  /** ATS Translation Requests sent. */
  atsRequests: number;
  /** Translated requests sent (ATC hits and fresh translations). */
  translatedRequests: number;
  /** ATS Invalidate Requests received. */
  atsInvalidations: number;
  /** Invalidate Requests received by a device without ATS capability. */
  unexpectedInvalidations: number;
  /** Page requests sent. */
  pageRequests: number;
  /** PRG responses that answered an outstanding request. */
  responses: number;
  /** PRG responses for an index with nothing outstanding (or another PASID). */
  unexpectedResponses: number;
  /** Page requests not sent because every credit was in use (the DMA faulted instead). */
  priThrottled: number;
  /** Transactions the IOMMU stalled. */
  stalls: number;
  /** Stalled transactions resumed for retry. */
  stallRetries: number;
  /** Stalled transactions terminated. */
  stallTerminates: number;
  /** Resumes for a tag with no stalled transaction. */
  unexpectedResumes: number;
  /** Calls the kernel would WARN on (enabling twice, disabling what is not enabled). */
  warnings: number;
}

function newStats(): DeviceStats {
  return {
    dmas: 0,
    bytes: 0,
    faults: 0,
    busErrors: 0,
    noPasid: 0,
    atsRequests: 0,
    translatedRequests: 0,
    atsInvalidations: 0,
    unexpectedInvalidations: 0,
    pageRequests: 0,
    responses: 0,
    unexpectedResponses: 0,
    priThrottled: 0,
    stalls: 0,
    stallRetries: 0,
    stallTerminates: 0,
    unexpectedResumes: 0,
    warnings: 0,
  };
}

const PAGE_SIZE = 4096;
const PFN_LIMIT = 2 ** 52;
const TWO32 = 4294967296;
const RW = DMA_READ | DMA_WRITE;

// States of a Page Request Group index.
const PRG_FREE = 0;
const PRG_WAIT = 1;
const PRG_OK = 2;
const PRG_INVALID = 3;
const PRG_FAILED = 4;

// States of a stalled transaction.
const STALL_WAIT = 0;
const STALL_RETRY = 1;
const STALL_TERM = 2;

function validOptions(o: DeviceOptions): boolean {
  const isPci = o.isPci ?? true;
  const u32 = (v: number) => Number.isInteger(v) && v >= 0 && v < TWO32;
  if (typeof o.name !== "string" || o.name.length === 0) return false;
  if (isPci ? !isPciRid(o.rid) : !u32(o.rid)) return false;
  if (o.sid !== undefined && !u32(o.sid)) return false;
  const bits = o.pasidBits ?? 0;
  if (!Number.isInteger(bits) || bits < 0 || bits > PCI_PASID_MAX_BITS) return false;
  const features = o.pasidFeatures ?? 0;
  if ((features & ~(PCI_PASID_CAP_EXEC | PCI_PASID_CAP_PRIV)) !== 0) return false;
  if (features !== 0 && (!isPci || bits === 0)) return false;
  if (!isPci && (o.ats === true || o.pri === true)) return false;
  if (o.pri === true && o.ats !== true) return false;
  const atc = o.atcEntries ?? ATC_DEFAULT_ENTRIES;
  if (!Number.isInteger(atc) || atc < 1 || atc > 4096) return false;
  const cap = o.priOutstanding ?? 32;
  if (!Number.isInteger(cap) || cap < 1 || !u32(cap)) return false;
  return true;
}

/**
 * A device that does DMA: a PCIe function with optional PASID, ATS (with its ATC) and PRI
 * capabilities, or a platform device behind an SMMU (SubstreamIDs, stall tolerance). The kernel
 * side enables capabilities with the `pci_enable_*` counterparts below and hangs its own state off
 * `iommu` (dev->iommu, which also holds the group); the harness drives `read` / `write`; the IOMMU reaches the device
 * through `DevicePort` (PRG responses, ATS invalidations, stall resumes).
 *
 * The DMA path allocates nothing: one translation request, one result and one page request object
 * are reused, and the outcome of a DMA is a number with details left in the `last*` fields.
 *
 * @kernel include/linux/device.h device
 * @kernel include/linux/pci.h pci_dev
 */
export class Device implements DevicePort {
  readonly name: string;
  readonly rid: number;
  readonly sid: number;
  readonly isPci: boolean;
  /** PASID width (0: no PASID capability). */
  readonly pasidBits: number;
  /** Number of PASIDs the device can emit: 2^pasidBits, or 0 without the capability. */
  readonly maxPasids: number;
  /** PASID features the capability offers (PCI_PASID_CAP_EXEC | PCI_PASID_CAP_PRIV). */
  readonly pasidFeaturesSupported: number;
  readonly eetlpPrefixPath: boolean;
  readonly atsCap: boolean;
  readonly atsGlobalInvalidate: boolean;
  readonly priCap: boolean;
  /** Outstanding Page Request Capacity. */
  readonly priCapacity: number;
  /** PRG Response PASID Required. @kernel drivers/pci/ats.c pci_prg_resp_pasid_required */
  readonly priPasidRequired: boolean;
  /** Tolerates stalled transactions. */
  readonly canStall: boolean;
  /** The ATC, when the device has the ATS capability. */
  readonly atc: Atc | null;

  /**
   * The iommu layer's per-device data, group included (a type-only link upward).
   *
   * @kernel include/linux/device.h device.iommu
   */
  iommu: DevIommu | null = null;
  /** Sees every page a DMA of this device reaches (the harness's oracle); null: no cost. */
  observer: DmaPageObserver | null = null;

  /** ATS Control Enable. */
  atsEnabled = false;
  /** Smallest Translation Unit the kernel programmed (page shift), valid while ATS is enabled. */
  atsStu = 0;
  /** PRI Control Enable. */
  priEnabled = false;
  /** Outstanding Page Request Allocation: how many page requests the device may have in flight. */
  priAllocation = 0;
  /** PRI Status Response Failure: a group was answered Response Failure; PRI is halted. */
  priResponseFailure = false;
  /** PRI Status Unexpected Page Request Group Index. */
  priUnexpectedPrgIndex = false;
  /** PASID Control Enable (always true for a platform device with SubstreamIDs). */
  pasidEnabled: boolean;
  /** PASID features enabled (PCI_PASID_CAP_EXEC | PCI_PASID_CAP_PRIV). */
  pasidFeatures = 0;

  readonly stats: DeviceStats = newStats();
  /** Outcome of the last DMA (DMA_OK, DMA_FAULT, ...). */
  lastStatus = DMA_OK;
  /** Bytes the last DMA moved before it stopped (all of them on DMA_OK). */
  lastBytes = 0;
  /** Device-side reason the last DMA stopped (DmaReason). */
  lastReason: number = DmaReason.NONE;
  /** Address of the page access that stopped the last DMA (inexact above 2^53: see lastFaultPfn). */
  lastFaultIova = 0;
  /** Page number of that access. */
  lastFaultPfn = 0;
  lastFaultPasid = NO_PASID;
  /** FaultKind of the failure (NONE for a device-side refusal that involved no translation). */
  lastFaultKind: number = FaultKind.NONE;
  /** The IOMMU's own code for it (0 when the IOMMU was not involved). */
  lastFaultCode = 0;
  /** Low 32 bits of the value `read32` / `read64` returned. */
  lo = 0;
  /** High 32 bits of the value `read64` returned. */
  hi = 0;

  private busRef: DmaBus | null = null;
  private mem: PhysMemory | null = null;
  private hw: IommuHardware | null = null;
  private readonly req = newTranslationRequest();
  private readonly res = newTranslationResult();
  private readonly pageReq: PageRequest;
  /** Physical address the current page translated to. */
  private pa = 0;
  /** The current page's translation came from the device's ATC. */
  private viaAtc = false;
  private readonly scratch = new Uint8Array(8);
  private readonly scratch4 = new Uint8Array(this.scratch.buffer, 0, 4);
  private readonly scratchView = new DataView(this.scratch.buffer);

  // Page Request Groups, by index: state, and the page each one asked for.
  private readonly prgState = new Uint8Array(PRG_INDEX_COUNT);
  private readonly prgPasid = new Int32Array(PRG_INDEX_COUNT);
  private readonly prgPfn = new Float64Array(PRG_INDEX_COUNT);
  private prgCursor = 0;
  /** Groups in PRG_WAIT: the page requests in flight. */
  private prgOutstanding = 0;
  /** Groups answered and not yet picked up by a retry. */
  private prgAnswered = 0;

  // Stalled transactions (few; grown on the stall path only).
  private readonly stallTag: number[] = [];
  private readonly stallPasid: number[] = [];
  private readonly stallPfn: number[] = [];
  private readonly stallState: number[] = [];
  private readonly stallKind: number[] = [];
  private readonly stallCode: number[] = [];

  /**
   * A device from options that come from outside (a scenario file): 'EINVAL' when they are
   * inconsistent (a PCI requester ID above 16 bits, PASID width above 20, ATS or PRI on a platform
   * device, PRI without ATS, PASID features without PASID, an ATC or PRI capacity out of range).
   */
  static create(options: DeviceOptions): Device | "EINVAL" {
    return validOptions(options) ? new Device(options) : "EINVAL";
  }

  /** Options are trusted here: inconsistent ones are a bug of the caller (use `create`). */
  constructor(options: DeviceOptions) {
    if (!validOptions(options)) bug(`Device: inconsistent options for "${options.name}"`);
    this.name = options.name;
    this.rid = options.rid;
    this.sid = options.sid ?? options.rid;
    this.isPci = options.isPci ?? true;
    this.pasidBits = options.pasidBits ?? 0;
    this.maxPasids = this.pasidBits === 0 ? 0 : 2 ** this.pasidBits;
    this.pasidFeaturesSupported = options.pasidFeatures ?? 0;
    this.eetlpPrefixPath = options.eetlpPrefixPath ?? true;
    this.atsCap = options.ats ?? false;
    this.atsGlobalInvalidate = options.atsGlobalInvalidate ?? true;
    this.priCap = options.pri ?? false;
    this.priCapacity = options.priOutstanding ?? 32;
    this.priPasidRequired = options.priPasidRequired ?? false;
    this.canStall = options.stall ?? false;
    this.atc = this.atsCap ? new Atc(options.atcEntries ?? ATC_DEFAULT_ENTRIES) : null;
    // A platform device's SubstreamIDs need no enabling: firmware describes them.
    this.pasidEnabled = !this.isPci && this.pasidBits > 0;
    this.req.rid = this.rid;
    this.req.sid = this.sid;
    this.pageReq = {
      rid: this.rid,
      sid: this.sid,
      pasid: NO_PASID,
      iovaPfn: 0,
      access: DMA_READ,
      privileged: false,
      prgIndex: 0,
      last: true,
    };
  }

  /** The bus the device is on, or null. */
  get bus(): DmaBus | null {
    return this.busRef;
  }

  /** The IOMMU the device's DMA goes through (null: straight to memory, or not on a bus). */
  get hardware(): IommuHardware | null {
    return this.hw;
  }

  /**
   * Plug the device into `bus`, its DMA going to `mem` through `hw`. Called by `DmaBus.addDevice`
   * only; plugging a device twice is a bug of the bus.
   */
  attachBus(bus: DmaBus, mem: PhysMemory, hw: IommuHardware | null): void {
    if (this.busRef !== null) bug(`Device ${this.name}: already on a bus`);
    this.busRef = bus;
    this.mem = mem;
    this.hw = hw;
  }

  /** Unplug the device (`DmaBus.removeDevice` only). The ATC and pending state stay as they are. */
  detachBus(bus: DmaBus): void {
    if (this.busRef !== bus) bug(`Device ${this.name}: not on that bus`);
    this.busRef = null;
    this.mem = null;
    this.hw = null;
  }

  // ---------------------------------------------------------------------------------------------
  // Capabilities, as the PCI core enables them.

  /**
   * Enable ATS with the IOMMU page shift `ps` as Smallest Translation Unit. 'EINVAL' without the
   * capability or for `ps` below 12; 'EBUSY' (and a warning) when already enabled. Enabling does
   * not touch the ATC: entries cached before a disable are usable again.
   *
   * @kernel drivers/pci/ats.c pci_enable_ats
   */
  enableAts(ps: number): 0 | "EINVAL" | "EBUSY" {
    if (!this.atsCap) return "EINVAL";
    if (this.atsEnabled) {
      this.stats.warnings++;
      return "EBUSY";
    }
    if (!Number.isInteger(ps) || ps < PCI_ATS_MIN_STU || ps > 63) return "EINVAL";
    this.atsStu = ps;
    this.atsEnabled = true;
    return 0;
  }

  /**
   * Disable ATS: the device stops using its ATC and sends untranslated requests. The ATC keeps its
   * entries; only an invalidation removes them (the kernel invalidates the ATC after disabling).
   *
   * @kernel drivers/pci/ats.c pci_disable_ats
   */
  disableAts(): void {
    if (!this.atsEnabled) {
      this.stats.warnings++;
      return;
    }
    this.atsEnabled = false;
  }

  /**
   * ATS Invalidate Queue Depth: 'EINVAL' without ATS. The model completes invalidations at once,
   * so it reports the largest depth.
   *
   * @kernel drivers/pci/ats.c pci_ats_queue_depth
   */
  atsQueueDepth(): number | "EINVAL" {
    return this.atsCap ? 32 : "EINVAL";
  }

  /**
   * Whether PRI is stopped: disabled, with no page request outstanding.
   *
   * @spec PCIe Base Specification 10.5.2.3 Page Request Status Register (Stopped)
   */
  get priStopped(): boolean {
    return !this.priEnabled && this.prgOutstanding === 0;
  }

  /** Page requests in flight. */
  get priOutstanding(): number {
    return this.prgOutstanding;
  }

  /**
   * Enable PRI allowing `reqs` outstanding page requests (capped at the capacity). 'EBUSY' (and a
   * warning) when enabled, 'EINVAL' without the capability, 'EBUSY' while page requests from an
   * earlier enable are still outstanding (not Stopped; `resetPri` clears them). Enabling clears a
   * Response Failure halt.
   *
   * @kernel drivers/pci/ats.c pci_enable_pri
   */
  enablePri(reqs: number): 0 | "EINVAL" | "EBUSY" {
    if (this.priEnabled) {
      this.stats.warnings++;
      return "EBUSY";
    }
    if (!this.priCap) return "EINVAL";
    if (!this.priStopped) return "EBUSY";
    const n = Number.isInteger(reqs) && reqs > 0 ? reqs : 0;
    this.priAllocation = Math.min(this.priCapacity, n);
    this.priResponseFailure = false;
    this.priEnabled = true;
    return 0;
  }

  /**
   * Disable PRI: no new page requests; those outstanding stay outstanding until answered.
   *
   * @kernel drivers/pci/ats.c pci_disable_pri
   */
  disablePri(): void {
    if (!this.priEnabled || !this.priCap) {
      this.stats.warnings++;
      return;
    }
    this.priEnabled = false;
  }

  /**
   * Reset PRI state: forget every outstanding and answered group (a later response to one is
   * unexpected) and clear the status bits. 'EBUSY' (and a warning) while enabled, 'EINVAL' without
   * the capability.
   *
   * @kernel drivers/pci/ats.c pci_reset_pri
   */
  resetPri(): 0 | "EINVAL" | "EBUSY" {
    if (this.priEnabled) {
      this.stats.warnings++;
      return "EBUSY";
    }
    if (!this.priCap) return "EINVAL";
    this.clearPrgs();
    this.priResponseFailure = false;
    this.priUnexpectedPrgIndex = false;
    return 0;
  }

  private clearPrgs(): void {
    this.prgState.fill(PRG_FREE);
    this.prgOutstanding = 0;
    this.prgAnswered = 0;
  }

  /**
   * Enable PASIDs with `features` (PCI_PASID_CAP_EXEC | PCI_PASID_CAP_PRIV). 'EBUSY' (and a
   * warning) when enabled; 'EINVAL' when the path does not carry TLP prefixes, without the
   * capability (a platform device has none: its SubstreamIDs are always usable), or for a feature
   * the capability lacks.
   *
   * @kernel drivers/pci/ats.c pci_enable_pasid
   */
  enablePasid(features: number): 0 | "EINVAL" | "EBUSY" {
    if (this.isPci && this.pasidEnabled) {
      this.stats.warnings++;
      return "EBUSY";
    }
    if (!this.eetlpPrefixPath) return "EINVAL";
    if (!this.isPci || this.pasidBits === 0) return "EINVAL";
    if (!Number.isInteger(features) || (this.pasidFeaturesSupported & features) !== features) {
      return "EINVAL";
    }
    this.pasidFeatures = features;
    this.pasidEnabled = true;
    return 0;
  }

  /** Disable PASIDs. @kernel drivers/pci/ats.c pci_disable_pasid */
  disablePasid(): void {
    if (!this.isPci || !this.pasidEnabled) {
      this.stats.warnings++;
      return;
    }
    this.pasidEnabled = false;
    this.pasidFeatures = 0;
  }

  /** Supported PASID features, 'EINVAL' without the capability. @kernel drivers/pci/ats.c pci_pasid_features */
  pasidFeaturesOrErrno(): number | "EINVAL" {
    return this.isPci && this.pasidBits > 0 ? this.pasidFeaturesSupported : "EINVAL";
  }

  /**
   * Reset the function (FLR): the ATC is emptied, ATS, PRI and PASID are disabled, outstanding
   * page requests and stalled transactions are forgotten (a later response or resume for them is
   * unexpected), PRI status is cleared. Counters and the kernel's slots stay.
   *
   * @kernel drivers/pci/pci.c pcie_flr
   */
  reset(): void {
    this.atc?.flushAll();
    this.atsEnabled = false;
    this.atsStu = 0;
    this.priEnabled = false;
    this.priAllocation = 0;
    this.priResponseFailure = false;
    this.priUnexpectedPrgIndex = false;
    this.clearPrgs();
    this.pasidEnabled = !this.isPci && this.pasidBits > 0;
    this.pasidFeatures = 0;
    this.stallTag.length = 0;
    this.stallPasid.length = 0;
    this.stallPfn.length = 0;
    this.stallState.length = 0;
    this.stallKind.length = 0;
    this.stallCode.length = 0;
  }

  // ---------------------------------------------------------------------------------------------
  // DevicePort: what the IOMMU sends the device.

  /**
   * A PRG Response for group `prgIndex`. It answers the group if one is outstanding at that index
   * (and, when the PASID is carried, for the same PASID; a device with `priPasidRequired` also
   * needs it carried); otherwise it is counted as unexpected and sets the UPRGI status bit.
   * Success and Invalid Request are kept for the retry of the page; Response Failure, and any
   * reserved code, halts PRI until it is enabled again. While halted, answers to the other groups
   * are taken (counted, credit returned) but have no effect.
   *
   * @spec PCIe Base Specification 10.4.2 PRG Response Message
   */
  prgResponse(pasid: number, prgIndex: number, code: number): void {
    const ok = Number.isInteger(prgIndex) && prgIndex >= 0 && prgIndex < PRG_INDEX_COUNT;
    if (!ok || this.prgState[prgIndex] !== PRG_WAIT || !this.prgPasidMatches(prgIndex, pasid)) {
      this.stats.unexpectedResponses++;
      this.priUnexpectedPrgIndex = true;
      return;
    }
    this.stats.responses++;
    this.prgOutstanding--;
    if (this.priResponseFailure) {
      this.prgState[prgIndex] = PRG_FREE;
      return;
    }
    if (code === PRG_SUCCESS) this.prgState[prgIndex] = PRG_OK;
    else if (code === PRG_INVALID_REQUEST) this.prgState[prgIndex] = PRG_INVALID;
    else {
      this.prgState[prgIndex] = PRG_FAILED;
      this.priResponseFailure = true;
    }
    this.prgAnswered++;
  }

  private prgPasidMatches(i: number, pasid: number): boolean {
    const asked = this.prgPasid[i];
    if (asked === NO_PASID) return true;
    if (pasid === NO_PASID) return !this.priPasidRequired;
    return pasid === asked;
  }

  /**
   * An ATS Invalidate Request; completes at once. The Global Invalidate bit is ignored when the
   * capability does not support it. A device without ATS counts it as unexpected.
   *
   * @spec PCIe Base Specification 10.3.1 Invalidate Request
   */
  atsInvalidate(pasid: number, iovaPfn: number, pages: number, global: boolean): void {
    if (this.atc === null) {
      this.stats.unexpectedInvalidations++;
      return;
    }
    this.stats.atsInvalidations++;
    this.atc.invalidate(pasid, iovaPfn, pages, global && this.atsGlobalInvalidate);
  }

  /**
   * Software's answer to the stalled transaction `stallTag`: `retry` lets the retried DMA go
   * through the IOMMU again, otherwise the retry fails with DMA_FAULT. A tag with no stalled
   * transaction waiting (unknown, already answered) counts as unexpected.
   */
  stallResume(stallTag: number, retry: boolean): void {
    for (let i = 0; i < this.stallTag.length; i++) {
      if (this.stallTag[i] === stallTag && this.stallState[i] === STALL_WAIT) {
        this.stallState[i] = retry ? STALL_RETRY : STALL_TERM;
        if (retry) this.stats.stallRetries++;
        else this.stats.stallTerminates++;
        return;
      }
    }
    this.stats.unexpectedResumes++;
  }

  /** Stalled transactions not yet resumed or terminated. */
  get stallsPending(): number {
    let n = 0;
    for (let i = 0; i < this.stallState.length; i++) if (this.stallState[i] === STALL_WAIT) n++;
    return n;
  }

  // ---------------------------------------------------------------------------------------------
  // The DMA engine.

  /**
   * DMA `dst.length` bytes from `iova` into `dst`. `flags`: DMA_EXEC (an instruction fetch) and
   * DMA_PRIV (a privileged request). Returns DMA_OK or the failure of the first page that failed,
   * with the bytes moved before it in `lastBytes` and the details in the `last*` fields.
   */
  read(iova: number, dst: Uint8Array, pasid = NO_PASID, flags = 0): number {
    if (!(iova >= 0 && iova < 2 ** 53 && iova === Math.floor(iova))) return this.badRequest();
    return this.transfer(false, Math.floor(iova / PAGE_SIZE), iova % PAGE_SIZE, dst, pasid, flags);
  }

  /** DMA `src` to `iova`; see `read`. DMA_EXEC is ignored on a write. */
  write(iova: number, src: Uint8Array, pasid = NO_PASID, flags = 0): number {
    if (!(iova >= 0 && iova < 2 ** 53 && iova === Math.floor(iova))) return this.badRequest();
    return this.transfer(true, Math.floor(iova / PAGE_SIZE), iova % PAGE_SIZE, src, pasid, flags);
  }

  /** A little-endian 32-bit read into `lo`. */
  read32(iova: number, pasid = NO_PASID, flags = 0): number {
    const st = this.read(iova, this.scratch4, pasid, flags);
    this.lo = this.scratchView.getUint32(0, true);
    return st;
  }

  /** A little-endian 64-bit read into `lo` / `hi`. */
  read64(iova: number, pasid = NO_PASID, flags = 0): number {
    const st = this.read(iova, this.scratch, pasid, flags);
    this.lo = this.scratchView.getUint32(0, true);
    this.hi = this.scratchView.getUint32(4, true);
    return st;
  }

  /** A little-endian 32-bit write. */
  write32(iova: number, value: number, pasid = NO_PASID, flags = 0): number {
    this.scratchView.setUint32(0, value >>> 0, true);
    return this.write(iova, this.scratch4, pasid, flags);
  }

  /** A little-endian 64-bit write of `hi:lo`. */
  write64(iova: number, lo: number, hi: number, pasid = NO_PASID, flags = 0): number {
    this.scratchView.setUint32(0, lo >>> 0, true);
    this.scratchView.setUint32(4, hi >>> 0, true);
    return this.write(iova, this.scratch, pasid, flags);
  }

  /**
   * The DMA engine: move `buf.length` bytes at page `iovaPfn`, byte `offset` (IOVAs of 57 or 64
   * bits stay exact as page numbers). The range is split at 4 KiB boundaries; each page goes
   * through the IOMMU (or the ATC) on its own, and the first page that fails stops the transfer.
   */
  transfer(
    write: boolean,
    iovaPfn: number,
    offset: number,
    buf: Uint8Array,
    pasid: number,
    flags: number,
  ): number {
    const st = this.move(write, iovaPfn, offset, buf, pasid, flags);
    const trace = this.busRef?.trace ?? null;
    if (trace?.active) {
      trace.emit("dma", {
        device: this.name,
        pasid,
        iova: iovaPfn * PAGE_SIZE + offset,
        len: buf.length,
        write,
        status: DMA_STATUS_NAMES[st] ?? String(st),
      });
    }
    return st;
  }

  private move(
    write: boolean,
    iovaPfn: number,
    offset: number,
    buf: Uint8Array,
    pasid: number,
    flags: number,
  ): number {
    this.stats.dmas++;
    this.lastBytes = 0;
    this.lastReason = DmaReason.NONE;
    this.lastFaultKind = FaultKind.NONE;
    this.lastFaultCode = 0;
    const len = buf.length;
    if (
      !(iovaPfn >= 0 && iovaPfn === Math.floor(iovaPfn)) ||
      !(offset >= 0 && offset < PAGE_SIZE && offset === Math.floor(offset)) ||
      iovaPfn + Math.ceil((offset + len) / PAGE_SIZE) > PFN_LIMIT ||
      (flags & ~FLAGS_KNOWN) !== 0
    ) {
      return this.stop(DMA_FAULT, DmaReason.BAD_REQUEST, iovaPfn, offset, pasid);
    }
    const priv = (flags & DMA_PRIV) !== 0;
    const exec = !write && (flags & DMA_EXEC) !== 0;
    const refusal = this.prefixRefusal(pasid, priv, exec);
    if (refusal !== DmaReason.NONE) {
      this.stats.noPasid++;
      return this.stop(DMA_NO_PASID, refusal, iovaPfn, offset, pasid);
    }
    const mem = this.mem;
    if (mem === null) return this.stop(DMA_BUS_ERROR, DmaReason.NOT_ON_BUS, iovaPfn, offset, pasid);
    const access = write ? DMA_WRITE : exec ? DMA_READ | DMA_EXEC : DMA_READ;
    let pfn = iovaPfn;
    let off = offset;
    let done = 0;
    while (done < len) {
      const chunk = Math.min(len - done, PAGE_SIZE - off);
      const st = this.translatePage(pasid, pfn, off, access, priv);
      if (st !== DMA_OK) {
        if (st === DMA_FAULT && this.observer?.dmaFault !== undefined) {
          this.observer.dmaFault(this, pasid, pfn, access, priv, this.viaAtc);
        }
        return this.stopAt(st, pfn, off, pasid, done);
      }
      if (this.observer !== null) {
        this.observer.dmaPage(this, pasid, pfn, access, priv, this.pa, this.viaAtc);
      }
      // A DMA's bus error must not look like a table-walk abort to a hardware model watching it.
      const busError = mem.busError;
      const ok = write
        ? mem.writeBytes(this.pa, buf, done, chunk)
        : mem.readBytes(this.pa, buf, done, chunk);
      mem.busError = busError;
      if (!ok) {
        this.lastReason = DmaReason.MEMORY;
        return this.stopAt(DMA_BUS_ERROR, pfn, off, pasid, done);
      }
      done += chunk;
      this.stats.bytes += chunk;
      pfn++;
      off = 0;
    }
    this.lastBytes = done;
    this.lastStatus = DMA_OK;
    return DMA_OK;
  }

  /** Why the device cannot emit this PASID prefix, or NONE. */
  private prefixRefusal(pasid: number, priv: boolean, exec: boolean): number {
    if (pasid !== NO_PASID) {
      if (!this.pasidEnabled) return DmaReason.PASID_DISABLED;
      if (!(Number.isInteger(pasid) && pasid >= 0 && pasid < this.maxPasids)) {
        return DmaReason.PASID_RANGE;
      }
    }
    // On PCIe the privileged and execute bits travel in the PASID prefix; a platform bus has its
    // own signals for them (AXI APROT / instruction fetch).
    if (this.isPci && (priv || exec)) {
      if (priv && (pasid === NO_PASID || (this.pasidFeatures & PCI_PASID_CAP_PRIV) === 0)) {
        return DmaReason.PRIV_DISABLED;
      }
      if (exec && (pasid === NO_PASID || (this.pasidFeatures & PCI_PASID_CAP_EXEC) === 0)) {
        return DmaReason.EXEC_DISABLED;
      }
    }
    return DmaReason.NONE;
  }

  private badRequest(): number {
    this.stats.dmas++;
    this.lastBytes = 0;
    this.lastFaultKind = FaultKind.NONE;
    this.lastFaultCode = 0;
    return this.stop(DMA_FAULT, DmaReason.BAD_REQUEST, 0, 0, NO_PASID);
  }

  private stop(status: number, reason: number, pfn: number, off: number, pasid: number): number {
    this.lastReason = reason;
    return this.stopAt(status, pfn, off, pasid, 0);
  }

  private stopAt(status: number, pfn: number, off: number, pasid: number, done: number): number {
    this.lastStatus = status;
    this.lastBytes = done;
    this.lastFaultPfn = pfn;
    this.lastFaultIova = pfn * PAGE_SIZE + off;
    this.lastFaultPasid = pasid;
    if (status === DMA_FAULT) this.stats.faults++;
    else if (status === DMA_BUS_ERROR) this.stats.busErrors++;
    return status;
  }

  private fromResult(reason: number): void {
    this.lastReason = reason;
    this.lastFaultKind = this.res.fault;
    this.lastFaultCode = this.res.code;
  }

  /** Translate one page access; on DMA_OK the physical address is in `pa`. */
  private translatePage(
    pasid: number,
    pfn: number,
    off: number,
    access: number,
    priv: boolean,
  ): number {
    const hw = this.hw;
    this.viaAtc = false;
    if (hw === null) {
      this.pa = pfn * PAGE_SIZE + off;
      return DMA_OK;
    }
    if (this.stallTag.length !== 0) {
      const st = this.stalledPage(pasid, pfn);
      if (st !== DMA_OK) return st;
    }
    const req = this.req;
    const res = this.res;
    req.pasid = pasid;
    req.access = access;
    req.privileged = priv;
    const atc = this.atc;
    if (this.atsEnabled && atc !== null) {
      if (atc.lookup(pasid, pfn, access, priv)) {
        this.viaAtc = true;
        return this.translated(hw, atc.pa, off);
      }
      this.viaAtc = false;
      req.at = AT_TRANSLATION_REQUEST;
      req.iovaPfn = pfn;
      req.offset = 0;
      this.stats.atsRequests++;
      hw.translate(req, res);
      if (res.status === XLATE_FAULT) {
        this.fromResult(DmaReason.IOMMU);
        return DMA_FAULT;
      }
      if (res.status !== XLATE_OK) bug(`${hw.name}: an ATS Translation Request cannot stall`);
      const granted = res.perm & (RW | DMA_EXEC);
      if ((granted & RW) !== 0) this.cache(atc, pasid, pfn, priv);
      if ((granted & access) === access) {
        if (this.prgAnswered !== 0) this.pickUpPrg(pasid, pfn);
        return this.translated(hw, res.pa, off);
      }
      return this.noAccess(hw, pasid, pfn, access, priv, granted);
    }
    req.at = AT_UNTRANSLATED;
    req.iovaPfn = pfn;
    req.offset = off;
    hw.translate(req, res);
    if (res.status === XLATE_OK) {
      this.pa = res.pa;
      return DMA_OK;
    }
    this.fromResult(DmaReason.IOMMU);
    if (res.status === XLATE_STALLED) {
      this.stats.stalls++;
      this.stallTag.push(res.stallTag);
      this.stallPasid.push(pasid);
      this.stallPfn.push(pfn);
      this.stallState.push(STALL_WAIT);
      this.stallKind.push(res.fault);
      this.stallCode.push(res.code);
      return DMA_STALLED;
    }
    return DMA_FAULT;
  }

  /** A transaction on the page is stalled: wait, or pick up software's answer. */
  private stalledPage(pasid: number, pfn: number): number {
    const n = this.stallTag.length;
    for (let i = 0; i < n; i++) {
      if (this.stallPasid[i] !== pasid || this.stallPfn[i] !== pfn) continue;
      const state = this.stallState[i];
      this.lastFaultKind = this.stallKind[i];
      this.lastFaultCode = this.stallCode[i];
      if (state === STALL_WAIT) {
        this.lastReason = DmaReason.STALL_PENDING;
        return DMA_STALLED;
      }
      this.removeStall(i);
      if (state === STALL_TERM) {
        this.lastReason = DmaReason.STALL_TERMINATED;
        return DMA_FAULT;
      }
      this.lastFaultKind = FaultKind.NONE;
      this.lastFaultCode = 0;
      return DMA_OK;
    }
    return DMA_OK;
  }

  private removeStall(i: number): void {
    const last = this.stallTag.length - 1;
    this.stallTag[i] = this.stallTag[last];
    this.stallPasid[i] = this.stallPasid[last];
    this.stallPfn[i] = this.stallPfn[last];
    this.stallState[i] = this.stallState[last];
    this.stallKind[i] = this.stallKind[last];
    this.stallCode[i] = this.stallCode[last];
    this.stallTag.pop();
    this.stallPasid.pop();
    this.stallPfn.pop();
    this.stallState.pop();
    this.stallKind.pop();
    this.stallCode.pop();
  }

  /** Cache the Translation Completion in `res` (asked for page `pfn`, offset 0). */
  private cache(atc: Atc, pasid: number, pfn: number, priv: boolean): void {
    const res = this.res;
    let shift = res.sizeShift;
    let pages = 2 ** (shift - 12);
    let paBase = res.pa - (pfn % pages) * PAGE_SIZE;
    // A completion whose region would start below address 0 is cached as the one page asked for.
    if (paBase < 0) {
      shift = 12;
      pages = 1;
      paBase = res.pa;
    }
    atc.insert(pasid, pfn, shift, paBase, res.perm, priv);
  }

  /** Issue the translated request for `cachedPa` + `off`. */
  private translated(hw: IommuHardware, cachedPa: number, off: number): number {
    const req = this.req;
    const res = this.res;
    req.at = AT_TRANSLATED;
    req.iovaPfn = cachedPa / PAGE_SIZE;
    req.offset = off;
    this.stats.translatedRequests++;
    hw.translate(req, res);
    if (res.status === XLATE_OK) {
      this.pa = res.pa;
      return DMA_OK;
    }
    if (res.status !== XLATE_FAULT) bug(`${hw.name}: a translated request cannot stall`);
    this.fromResult(DmaReason.IOMMU);
    return DMA_FAULT;
  }

  /** The retried translation grants access: the page's answered group is done with. */
  private pickUpPrg(pasid: number, pfn: number): void {
    const i = this.findPrg(pasid, pfn);
    if (i >= 0 && this.prgState[i] >= PRG_OK) {
      this.prgState[i] = PRG_FREE;
      this.prgAnswered--;
    }
  }

  private findPrg(pasid: number, pfn: number): number {
    for (let i = 0; i < PRG_INDEX_COUNT; i++) {
      if (this.prgState[i] !== PRG_FREE && this.prgPfn[i] === pfn && this.prgPasid[i] === pasid) {
        return i;
      }
    }
    return -1;
  }

  /**
   * The Translation Completion granted less than `access`: ask for the page (PRI), wait for the
   * answer, or fail. The fault kind is TRANSLATION when nothing was granted, PERMISSION otherwise.
   */
  private noAccess(
    hw: IommuHardware,
    pasid: number,
    pfn: number,
    access: number,
    priv: boolean,
    granted: number,
  ): number {
    this.lastFaultKind = (granted & RW) === 0 ? FaultKind.TRANSLATION : FaultKind.PERMISSION;
    this.lastFaultCode = this.res.code;
    if (this.prgOutstanding + this.prgAnswered !== 0) {
      const i = this.findPrg(pasid, pfn);
      if (i >= 0) {
        const state = this.prgState[i];
        if (state === PRG_WAIT) {
          this.lastReason = DmaReason.PAGE_REQUEST_PENDING;
          return DMA_PAGE_REQUESTED;
        }
        this.prgState[i] = PRG_FREE;
        this.prgAnswered--;
        this.lastReason =
          state === PRG_OK
            ? DmaReason.PRG_SUCCESS_NO_ACCESS
            : state === PRG_INVALID
              ? DmaReason.PRG_INVALID
              : DmaReason.PRG_FAILURE;
        return DMA_FAULT;
      }
    }
    if (!this.priEnabled || this.priResponseFailure) {
      this.lastReason = DmaReason.ATS_NO_ACCESS;
      return DMA_FAULT;
    }
    if (this.prgOutstanding >= Math.min(this.priAllocation, PRG_INDEX_COUNT)) {
      this.stats.priThrottled++;
      this.lastReason = DmaReason.PRI_NO_CREDIT;
      return DMA_FAULT;
    }
    const index = this.allocPrgIndex();
    this.prgState[index] = PRG_WAIT;
    this.prgPasid[index] = pasid;
    this.prgPfn[index] = pfn;
    this.prgOutstanding++;
    const pr = this.pageReq;
    pr.pasid = pasid;
    pr.iovaPfn = pfn;
    pr.access = access;
    pr.privileged = priv;
    pr.prgIndex = index;
    pr.last = true;
    this.stats.pageRequests++;
    this.lastReason = DmaReason.PAGE_REQUEST_PENDING;
    // The IOMMU may answer at once (an auto-response); the group is already marked in flight.
    hw.pageRequest(pr);
    return DMA_PAGE_REQUESTED;
  }

  /**
   * A PRG index not in flight: the next free one after the last used (round robin, so an index is
   * not reused at once), else the first answered group nobody came back for.
   */
  private allocPrgIndex(): number {
    let fallback = -1;
    for (let k = 1; k <= PRG_INDEX_COUNT; k++) {
      const i = (this.prgCursor + k) % PRG_INDEX_COUNT;
      const state = this.prgState[i];
      if (state === PRG_FREE) {
        this.prgCursor = i;
        return i;
      }
      if (state !== PRG_WAIT && fallback < 0) fallback = i;
    }
    if (fallback < 0) bug(`Device ${this.name}: no PRG index although credit remains`);
    this.prgState[fallback] = PRG_FREE;
    this.prgAnswered--;
    this.prgCursor = fallback;
    return fallback;
  }
}
