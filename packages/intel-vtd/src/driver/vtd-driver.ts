// The Intel VT-d driver (drivers/iommu/intel): core's IommuOps over one or more remapping units,
// which it reaches only through their registers, tables in memory and the invalidation and page
// request queues, in the orders Linux uses.

import {
  type AttachErrno,
  CACHE_TAG_DEVTLB,
  CACHE_TAG_IOTLB,
  CACHE_TAG_NESTING_DEVTLB,
  CACHE_TAG_NESTING_IOTLB,
  type CacheTag,
  type CacheTagFlusher,
  type Device,
  type Errno,
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_CAP_DEFERRED_FLUSH,
  IOMMU_CAP_DIRTY_TRACKING,
  IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_DOMAIN_BLOCKED,
  IOMMU_DOMAIN_DMA,
  IOMMU_DOMAIN_DMA_FQ,
  IOMMU_DOMAIN_IDENTITY,
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID,
  IOMMU_FAULT_PERM_EXEC,
  IOMMU_FAULT_PERM_PRIV,
  IOMMU_FAULT_PERM_READ,
  IOMMU_FAULT_PERM_WRITE,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_NO_PASID,
  IOMMU_PAGE_RESP_INVALID,
  IOMMU_PAGE_RESP_SUCCESS,
  type IommuDevice,
  IommuDomain,
  type IommuDomainOps,
  type IommuFlushOps,
  type IommuIotlbGather,
  type IommuMm,
  type IommuOps,
  type IommuPageResponse,
  type IommuSubsystem,
  type IopfFault,
  IopfQueue,
  iommuIotlbGatherAddPage,
  iommuReportDeviceFault,
} from "@iommu-sim/iommu-core";
import {
  bug,
  type FrameAllocator,
  mmioRead64,
  mmioWrite64,
  type PhysMemory,
  TWO32,
} from "@iommu-sim/iommu-core/platform";
import {
  CC_G_DEVICE,
  IOTLB_G_DOMAIN,
  IOTLB_G_PAGE,
  PC_G_PASID,
  PGRP_RESP_FAILURE,
  PGRP_RESP_INVALID,
  PGRP_RESP_SUCCESS,
} from "../format/inv-desc.js";
import { PGTT_FL, PGTT_PT, PGTT_SL } from "../format/pasid-entry.js";
import { PRQ_DESC_SIZE, PRS_PPR, PRS_PRO, VTD_REG } from "../format/registers.js";
import { VtdFsPgtable } from "../pgtable/first-stage.js";
import { VtdSsPgtable } from "../pgtable/second-stage.js";
import { DmarDomain, type DmarTaggedDomain } from "./dmar-domain.js";
import {
  FLPT_DEFAULT_DID,
  IntelIommu,
  type IntelIommuOptions,
  PRQ_DEPTH,
  PRQ_ORDER,
} from "./intel-iommu.js";
import { PasidTable } from "./pasid-table.js";
import { pagesOrder, type VtdQi } from "./qi.js";
import { DmarSvaDomain, IntelSvm, intelSvmCheck } from "./svm.js";

const PAGE = 4096;
const SZ_2M = 1 << 21;
const SZ_1G = 2 ** 30;
/** Device-TLB order covering the whole space. @kernel drivers/iommu/intel/iommu.h MAX_AGAW_PFN_WIDTH */
const MAX_AGAW_PFN_WIDTH = 52;
/** Descriptors a cache-tag flush stages before it submits them. @kernel drivers/iommu/intel/iommu.h QI_MAX_BATCHED_DESC_COUNT */
const QI_MAX_BATCHED_DESC_COUNT = 16;
/** Rounds of the hardware page-request drain while PRS.PRO stays set (the kernel loops). */
const DRAIN_ROUNDS = 4;

/** Driver steps the harness can make the driver skip, to prove its oracle catches the bug. */
export interface VtdDriverInjections {
  /** Skip the IOTLB invalidations of unmaps and flushes (cache-tag IOTLB tags). */
  skipIotlbFlush: boolean;
  /** Skip the PASID-cache invalidation when a PASID entry is torn down. */
  skipPasidCacheFlush: boolean;
  /** Skip the device-TLB invalidations of unmaps and flushes (cache-tag device-TLB tags). */
  skipDevtlbFlush: boolean;
  /** Tear a PASID entry down but issue its invalidations only at the driver's next call. */
  earlyPasidFree: boolean;
  /** Free a domain ID at its last detach without the invalidations that clear it. */
  earlyDidReuse: boolean;
  /** An SVA domain's mmu notifier ignores the CPU's TLB flushes (no IOTLB, no device-TLB). */
  skipNotifierFlush: boolean;
  /** An SVA domain's mmu notifier flushes the IOTLB but not the devices' TLBs. */
  skipAtcOnNotifier: boolean;
}

/** Where the driver reports domain-ID lifetimes (the oracle listens). */
export interface VtdDriverHooks {
  didAllocated?(unit: IntelIommu, did: number, domain: DmarDomain): void;
  didFreed?(unit: IntelIommu, did: number, domain: DmarDomain): void;
}

/** Per-device state. @kernel drivers/iommu/intel/iommu.h struct device_domain_info */
export interface DeviceDomainInfo {
  readonly dev: Device;
  readonly unit: IntelIommu;
  readonly bus: number;
  readonly devfn: number;
  readonly sid: number;
  /** The PF's source ID with ECAP.DIT (a device of the model is its own PF); 0 without. */
  readonly pfsid: number;
  atsSupported: boolean;
  atsEnabled: boolean;
  atsQdep: number;
  pasidSupported: boolean;
  priSupported: boolean;
  priEnabled: boolean;
  iopfRefcount: number;
  pasidTable: PasidTable | null;
  /** The paging domain at the RID (null for identity, blocked or nothing). */
  domain: DmarDomain | null;
  /** Something translates at the RID (a domain, or identity). */
  domainAttached: boolean;
  /** Domains attached at PASIDs. */
  readonly pasids: Map<number, IommuDomain>;
}

/** How a unit is added: its options plus the requester IDs it serves (none: every other one). */
export interface VtdUnitSpec extends Omit<IntelIommuOptions, "mem" | "frames"> {
  /** Requester IDs behind the unit (a DRHD device scope); omitted: INCLUDE_PCI_ALL. */
  readonly rids?: readonly number[];
}

/** How to build the driver. */
export interface VtdDriverOptions {
  readonly subsys: IommuSubsystem;
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;
  /** Use first-stage tables for paging domains when the unit can (default true, as Linux does). */
  readonly firstStage?: boolean;
}

/**
 * The VT-d driver. One instance serves every unit of the machine, as intel_iommu_ops does.
 *
 * Deliberate differences from Linux, kept because the model's core or hardware asks for them:
 * - attach_dev checks paging_domain_compatible before blocking the device (the order of the
 *   test_dev op), so an incompatible domain leaves the device as it was; a failure after the
 *   block re-attaches the old domain here, which Linux's core does on the driver's behalf;
 * - identity attach (RID or PASID) needs ECAP.PT, where Linux relies on device_def_domain_type;
 * - a failed page response maps the core's FAILURE to the descriptor's 0xF (Linux sends 2);
 * - queued-invalidation time-outs are retried a bounded number of times (see VtdQi.submit).
 *
 * @kernel drivers/iommu/intel/iommu.c intel_iommu_ops
 */
export class VtdDriver implements IommuOps, CacheTagFlusher {
  readonly name = "intel-iommu";
  readonly pgsizeBitmap = PAGE | SZ_2M | SZ_1G;
  readonly identityDomain: IommuDomain;
  readonly blockedDomain: IommuDomain;
  readonly releaseDomain: IommuDomain;
  readonly units: IntelIommu[] = [];
  readonly inject: VtdDriverInjections = {
    skipIotlbFlush: false,
    skipPasidCacheFlush: false,
    skipDevtlbFlush: false,
    earlyPasidFree: false,
    earlyDidReuse: false,
    skipNotifierFlush: false,
    skipAtcOnNotifier: false,
  };
  /** The SVA half of the driver (svm.c). */
  readonly svm: IntelSvm;
  hooks: VtdDriverHooks = {};
  /** Page requests refused by the driver (bad request, no device). */
  badPageRequests = 0;

  private readonly subsys: IommuSubsystem;
  private readonly mem: PhysMemory;
  private readonly frames: FrameAllocator;
  /**
   * Paging domains go on first-stage tables when the unit can walk them (Linux's choice in scalable
   * mode); false asks for second-stage tables.
   */
  firstStage: boolean;
  private readonly pagingOps: IommuDomainOps;
  private readonly scope = new Map<number, IntelIommu>();
  private includeAll: IntelIommu | null = null;
  /** Probed devices per unit, by source ID. */
  private readonly devicesOf = new Map<IntelIommu, Map<number, Device>>();
  private readonly iopfQueues = new Map<IntelIommu, IopfQueue>();
  /** Units whose page request queue is being read (a drain from a handler must not re-enter). */
  private readonly prqBusy = new Set<IntelIommu>();
  /** The domain whose tags are being flushed (CacheTagFlusher callbacks take only the tag). */
  private flushing: DmarTaggedDomain | null = null;
  /** The flush in progress leaves device-TLB tags alone (the skipAtcOnNotifier injection). */
  private flushSkipsDevtlb = false;
  /** Invalidations postponed by the earlyPasidFree injection. */
  private readonly deferred: Array<() => void> = [];

  constructor(options: VtdDriverOptions) {
    this.subsys = options.subsys;
    this.mem = options.mem;
    this.frames = options.frames;
    this.firstStage = options.firstStage ?? true;
    this.pagingOps = {
      attachDev: (d, dev, old) => this.attachDev(d as DmarDomain, dev, old),
      setDevPasid: (d, dev, pasid, old) => this.setDevPasid(d as DmarDomain, dev, pasid, old),
      mapPages: (d, iova, pa, pgsize, pgcount, prot) => {
        const pt = (d as DmarDomain).pgtable;
        const ret = pt.mapPages(iova, pa, pgsize, pgcount, prot);
        d.mapped = pt.mapped;
        return ret;
      },
      unmapPages: (d, iova, pgsize, pgcount, gather) =>
        (d as DmarDomain).pgtable.unmapPages(iova, pgsize, pgcount, gather),
      iovaToPhys: (d, iova) => (d as DmarDomain).pgtable.iovaToPhys(iova),
      iotlbSyncMap: (d, iova, size) => this.iotlbSyncMap(d as DmarDomain, iova, size),
      iotlbSync: (d, gather) => this.iotlbSync(d as DmarDomain, gather),
      flushIotlbAll: (d) => this.flushDomainAll(d as DmarDomain),
      freeTables: (_d, pas) => {
        for (const pa of pas) this.frames.free(pa, 0);
      },
      free: (d) => this.domainFree(d as DmarDomain),
    };
    this.identityDomain = new IommuDomain(IOMMU_DOMAIN_IDENTITY, {
      attachDev: (_d, dev, old) => this.identityAttach(dev, old),
      setDevPasid: (_d, dev, pasid, old) => this.identitySetDevPasid(dev, pasid, old),
    });
    this.blockedDomain = new IommuDomain(IOMMU_DOMAIN_BLOCKED, {
      attachDev: (_d, dev) => {
        this.drainDeferred();
        this.deviceBlockTranslation(dev);
        return 0;
      },
      setDevPasid: (_d, dev, pasid, old) => this.blockingSetDevPasid(dev, pasid, old),
    });
    this.releaseDomain = this.blockedDomain;
    this.svm = new IntelSvm({
      inject: this.inject,
      deviceInfo: (dev) => this.deviceInfo(dev),
      drainDeferred: () => this.drainDeferred(),
      pasidSetup: (info, pasid, fields) => this.pasidSetupFields(info, pasid, fields),
      pasidTearDown: (info, pasid, faultIgnore) =>
        this.pasidTearDown(info, pasid, false, faultIgnore),
      domainRemoveDevPasid: (old, info, pasid) => this.domainRemoveDevPasid(old, info, pasid),
      enableIopf: (info) => this.enableIopf(info),
      disableIopf: (info) => this.disableIopf(info),
      flushRange: (domain, start, end, skipDevtlb) => {
        this.drainDeferred();
        this.flushSkipsDevtlb = skipDevtlb;
        this.cacheTagFlushRange(domain, start, end, false);
        this.flushSkipsDevtlb = false;
      },
      flushAll: (domain, skipDevtlb) => {
        this.flushSkipsDevtlb = skipDevtlb;
        this.flushDomainAll(domain);
        this.flushSkipsDevtlb = false;
      },
    });
  }

  // --- Units ---------------------------------------------------------------------------------------

  /**
   * Take a unit: read its capabilities, bring it up (init_dmars) and register it with the core.
   * A unit with caching mode whose paging domains are second-stage makes DMA strict for everyone,
   * as iommu_set_dma_strict does (lazy flushing buys little under a virtual IOMMU).
   * `'ENODEV'` for a unit the driver cannot use (no queued invalidation), `'EEXIST'` for a second
   * INCLUDE_ALL unit or a requester ID already in another unit's scope, `'ENOMEM'`, `'ETIMEDOUT'`.
   *
   * @kernel drivers/iommu/intel/dmar.c alloc_iommu
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_init
   */
  addUnit(spec: VtdUnitSpec): IntelIommu | "ENODEV" | "EEXIST" | "ENOMEM" | "ETIMEDOUT" {
    if (spec.rids === undefined && this.includeAll !== null) return "EEXIST";
    for (const rid of spec.rids ?? []) if (this.scope.has(rid)) return "EEXIST";
    const unit = new IntelIommu({ ...spec, mem: this.mem, frames: this.frames }, this);
    const ret = unit.init();
    if (ret !== 0) {
      unit.shutdown();
      return ret;
    }
    unit.svmCapable = intelSvmCheck(unit);
    if (unit.caps.CM && !(this.firstStage && unit.firstLevelByDefault)) {
      this.subsys.strict = true;
      if (this.subsys.defDomainType === IOMMU_DOMAIN_DMA_FQ)
        this.subsys.defDomainType = IOMMU_DOMAIN_DMA;
    }
    if (spec.rids === undefined) this.includeAll = unit;
    for (const rid of spec.rids ?? []) this.scope.set(rid, unit);
    this.units.push(unit);
    this.devicesOf.set(unit, new Map());
    this.iopfQueues.set(unit, new IopfQueue(`${unit.name}-iopfq`));
    this.subsys.iommuDeviceRegister(unit.iommu);
    return unit;
  }

  /** The unit serving requester ID `rid`, or null. @kernel drivers/iommu/intel/dmar.c dmar_find_matched_drhd_unit */
  unitFor(rid: number): IntelIommu | null {
    return this.scope.get(rid) ?? this.includeAll;
  }

  /** The IOPF queue of `unit`. */
  iopfQueueOf(unit: IntelIommu): IopfQueue {
    const q = this.iopfQueues.get(unit);
    if (q === undefined) bug(`intel-iommu: ${unit.name} is not a unit of this driver`);
    return q;
  }

  private info(dev: Device): DeviceDomainInfo {
    const info = dev.iommu?.priv as DeviceDomainInfo | null | undefined;
    if (!info) bug(`intel-iommu: ${dev.name} was not probed`);
    return info;
  }

  /** The ops of the driver's paging domains (what `domain.ops` holds). */
  pagingOpsFor(_domain: DmarDomain): IommuDomainOps {
    return this.pagingOps;
  }

  /** The driver state of a probed device, or null. */
  deviceInfo(dev: Device): DeviceDomainInfo | null {
    return (dev.iommu?.priv as DeviceDomainInfo | null | undefined) ?? null;
  }

  /** Run the invalidations the earlyPasidFree injection postponed. */
  drainDeferred(): void {
    while (this.deferred.length > 0) (this.deferred.shift() as () => void)();
  }

  // --- IommuOps --------------------------------------------------------------------------------------

  /**
   * IOMMU_CAP_DEFERRED_FLUSH is answered true: the flush queue is Linux's default on VT-d.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_capable
   */
  capable(dev: Device, cap: number): boolean {
    const unit = this.deviceInfo(dev)?.unit;
    switch (cap) {
      case IOMMU_CAP_CACHE_COHERENCY:
      case IOMMU_CAP_DEFERRED_FLUSH:
        return true;
      case IOMMU_CAP_ENFORCE_CACHE_COHERENCY:
        return unit?.caps.SC ?? false;
      case IOMMU_CAP_DIRTY_TRACKING:
        return unit?.ssadsSupported ?? false;
      default:
        return false;
    }
  }

  /**
   * A unit without pass-through (ECAP.PT) wants DMA domains; otherwise no preference.
   *
   * @kernel drivers/iommu/intel/iommu.c device_def_domain_type
   */
  defDomainType(dev: Device): number {
    const info = this.deviceInfo(dev);
    return info !== null && !info.unit.caps.PT ? IOMMU_DOMAIN_DMA : 0;
  }

  /**
   * Take a device: find its unit and note what it may use: ATS (ECAP.DT and the device's
   * capability), PASIDs (scalable mode with ECAP.PASID), PRI (scalable mode, ATS, ECAP.PRS and
   * ECAP.PDS); PFSID only with ECAP.DIT. In scalable mode give it a PASID table and a present
   * context entry (RID_PASID 0, DTE, PASIDE, PRE). Nothing is enabled on the device yet (that is
   * probe_finalize's), and its RID translates nothing until a domain is attached.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_probe_device
   */
  probeDevice(dev: Device): IommuDevice | "ENODEV" | "ENOMEM" | "EINVAL" {
    this.drainDeferred();
    if (dev.iommu === null || !dev.isPci) return "ENODEV";
    const unit = this.unitFor(dev.rid);
    if (unit === null) return "ENODEV";
    const caps = unit.caps;
    const sid = dev.rid & 0xffff;
    const atsSupported = caps.DT && dev.atsCap;
    const qdep = atsSupported ? dev.atsQueueDepth() : 0;
    const info: DeviceDomainInfo = {
      dev,
      unit,
      bus: sid >>> 8,
      devfn: sid & 0xff,
      sid,
      pfsid: caps.DIT ? sid : 0,
      atsSupported,
      atsEnabled: false,
      atsQdep: typeof qdep === "number" ? qdep : 0,
      pasidSupported: unit.pasidSupported && dev.pasidBits > 0,
      priSupported: unit.sm && atsSupported && caps.PRS && caps.PDS && dev.priCap,
      priEnabled: false,
      iopfRefcount: 0,
      pasidTable: null,
      domain: null,
      domainAttached: false,
      pasids: new Map(),
    };
    if (unit.sm) {
      const maxPasids = info.pasidSupported ? Math.min(dev.maxPasids, unit.iommu.maxPasids) : 1;
      const table = PasidTable.alloc(this.mem, this.frames, maxPasids);
      if (typeof table === "string") return table;
      info.pasidTable = table;
      const ret = this.setupSmContext(info);
      if (ret !== 0) {
        table.free();
        return ret;
      }
    }
    (dev.iommu as NonNullable<Device["iommu"]>).priv = info;
    this.devicesOf.get(unit)?.set(sid, dev);
    return unit.iommu;
  }

  /**
   * After the default domain is attached: PASID first (a device enabling PASID after ATS behaves
   * as the PCIe spec leaves undefined), then in scalable mode ATS, with a device-TLB tag for the
   * domain at the RID, then PRI. In legacy mode ATS follows the paging domain's context entry
   * instead (domain_context_mapping).
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_probe_finalize
   */
  probeFinalize(dev: Device): void {
    const info = this.deviceInfo(dev);
    if (info === null) return;
    if (info.pasidSupported && !dev.pasidEnabled) dev.enablePasid(dev.pasidFeaturesSupported);
    if (info.unit.sm) {
      this.enableAts(info);
      if (info.atsEnabled && info.domain !== null)
        this.tagsAssignDevtlb(info.domain, info, IOMMU_NO_PASID);
    }
    this.enablePri(info);
  }

  /**
   * Forget a device (the core parked it in the blocking domain): PRI, ATS and PASID off in that
   * order, then the scalable-mode context entry cleared (its flushes find ATS off: only the
   * context cache), then the PASID table freed.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_release_device
   */
  releaseDevice(dev: Device): void {
    this.drainDeferred();
    const info = this.deviceInfo(dev);
    if (info === null) return;
    const unit = info.unit;
    this.disablePri(info);
    if (info.atsEnabled && info.domain !== null)
      this.tagsUnassignDevtlb(info.domain, info, IOMMU_NO_PASID);
    this.disableAts(info);
    if (dev.pasidEnabled) dev.disablePasid();
    if (unit.sm) this.teardownSmContext(info);
    info.pasidTable?.free();
    info.pasidTable = null;
    this.devicesOf.get(unit)?.delete(info.sid);
    (dev.iommu as NonNullable<Device["iommu"]>).priv = null;
  }

  /** ATS on, for a device that has it. @kernel drivers/iommu/intel/iommu.c iommu_enable_pci_ats */
  private enableAts(info: DeviceDomainInfo): void {
    if (!info.atsSupported || info.atsEnabled) return;
    if (info.dev.enableAts(12) === 0) info.atsEnabled = true;
  }

  /** @kernel drivers/iommu/intel/iommu.c iommu_disable_pci_ats */
  private disableAts(info: DeviceDomainInfo): void {
    if (!info.atsEnabled) return;
    info.dev.disableAts();
    info.atsEnabled = false;
  }

  /**
   * PRI on once ATS is: reset, then enabled for PRQ_DEPTH requests.
   *
   * @kernel drivers/iommu/intel/iommu.c iommu_enable_pci_pri
   */
  private enablePri(info: DeviceDomainInfo): void {
    if (!info.atsEnabled || !info.priSupported || info.priEnabled) return;
    if (info.dev.resetPri() !== 0) return;
    if (info.dev.enablePri(PRQ_DEPTH) === 0) info.priEnabled = true;
  }

  /**
   * PRI off; a device still in the fault queue leaves it first (Linux WARNs).
   *
   * @kernel drivers/iommu/intel/iommu.c iommu_disable_pci_pri
   */
  private disablePri(info: DeviceDomainInfo): void {
    if (!info.priEnabled) return;
    if (info.iopfRefcount > 0) {
      this.iopfQueueOf(info.unit).removeDevice(info.dev);
      info.iopfRefcount = 0;
    }
    info.dev.disablePri();
    info.priEnabled = false;
  }

  domainAllocPaging(dev: Device): IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV" {
    return this.domainAllocPagingFlags(dev, 0) as IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV";
  }

  /**
   * A paging domain for `dev`: first stage when the unit is in scalable mode with FLTS and no flag
   * but PASID is asked (5-level when MGAW > 48 and CAP.FL5LP), else second stage with the unit's
   * AGAW (nest parent and dirty tracking need scalable mode with ECAP.NEST / ECAP.SLADS). The
   * domain remembers what paging_domain_compatible checks against other units: its address width,
   * page sizes, coherency and whether maps need iotlb_sync_map. `'EOPNOTSUPP'` for flags the unit
   * cannot honour.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_domain_alloc_paging_flags
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_domain_alloc_first_stage
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_domain_alloc_second_stage
   */
  domainAllocPagingFlags(
    dev: Device,
    flags: number,
  ): IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV" | "EOPNOTSUPP" {
    this.drainDeferred();
    const info = this.deviceInfo(dev);
    if (info === null) return "ENODEV";
    const known =
      IOMMU_HWPT_ALLOC_PASID | IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING;
    if ((flags & ~known) !== 0) return "EOPNOTSUPP";
    const unit = info.unit;
    const caps = unit.caps;
    const first =
      (flags & ~IOMMU_HWPT_ALLOC_PASID) === 0 && this.firstStage && unit.firstStageSupported;
    if (!first) {
      if ((flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0 && !unit.nestedSupported)
        return "EOPNOTSUPP";
      if ((flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0 && !unit.ssadsSupported)
        return "EOPNOTSUPP";
      if (unit.sm && !caps.SLTS) return "EOPNOTSUPP";
    }
    const domainRef: { d: DmarDomain | null } = { d: null };
    const tlb: IommuFlushOps = {
      tlbFlushAll: () => {
        if (domainRef.d) this.flushDomainAll(domainRef.d);
      },
      tlbFlushWalk: (iova, size) => {
        if (domainRef.d) this.cacheTagFlushRange(domainRef.d, iova, iova + size - 1, false);
      },
      tlbAddPage: (gather, iova, granule) => {
        if (domainRef.d) iommuIotlbGatherAddPage(domainRef.d, gather, iova, granule);
      },
    };
    let pt: VtdFsPgtable | VtdSsPgtable | "ENOMEM";
    let vasz: number;
    const agaw = unit.agaw;
    if (first) {
      // compute_vasz_lg2_fs: 5-level tables when the unit both walks them and uses the width.
      const five = caps.mgaw > 48 && caps.FL5LP;
      vasz = Math.min(five ? 57 : 48, caps.mgaw);
      const superpages = SZ_2M | (caps.FL1GP ? SZ_1G : 0);
      pt = VtdFsPgtable.alloc({
        mem: this.mem,
        frames: this.frames,
        levels: five ? 5 : 4,
        superpages,
        tlb,
      });
    } else {
      // The unit's AGAW, whatever MGAW says (paging_domain_alloc clamps only the aperture).
      if (agaw < 1 || agaw > 3) return "EOPNOTSUPP";
      const superpages =
        ((caps.SLLPS & 1) !== 0 ? SZ_2M : 0) | ((caps.SLLPS & 2) !== 0 ? SZ_1G : 0);
      pt = VtdSsPgtable.alloc({
        mem: this.mem,
        frames: this.frames,
        agaw: agaw as 1 | 2 | 3,
        superpages,
        tlb,
      });
      vasz = typeof pt === "string" ? 0 : Math.min(pt.cfg.ias, caps.mgaw);
    }
    if (typeof pt === "string") return "ENOMEM";
    const domain = new DmarDomain(this.pagingOps, pt, first, agaw);
    domain.allocFlags = flags;
    domain.vasz = vasz;
    domain.coherent = first ? caps.SMPWCS : unit.pagingStructureCoherent;
    domain.iotlbSyncMap = caps.RWBF || (!first && caps.CM);
    domain.nestedParent = (flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0;
    domainRef.d = domain;
    return domain;
  }

  /**
   * An SVA domain for `dev` sharing the process address space `mm` (see IntelSvm.domainAlloc):
   * `'ENODEV'` for an unprobed device, `'EOPNOTSUPP'` when its unit cannot share CPU tables or
   * `mm` is not an x86-64 table it can walk, `'EINVAL'` when the device lacks PASID, ATS or (having
   * PRI) PRI, or the notifier cannot be registered; `'ENOMEM'`.
   *
   * @kernel drivers/iommu/intel/svm.c intel_svm_domain_alloc
   */
  domainAllocSva(
    dev: Device,
    mm: IommuMm,
  ): IommuDomain | "ENOMEM" | "EINVAL" | "EOPNOTSUPP" | "ENODEV" {
    this.drainDeferred();
    return this.svm.domainAlloc(dev, mm);
  }

  /**
   * Answer a page request group through the invalidation queue (type 9): RID, PASID when the
   * request had one, the response code and the group index; bit 66 (the former LPIG, reserved
   * since spec 4.0) stays clear. The core's codes become the descriptor's: success 0, invalid 1,
   * failure 0xF (Linux puts the core's value in RC unchanged, which sends the reserved code 2).
   *
   * @kernel drivers/iommu/intel/prq.c intel_iommu_page_response
   */
  pageResponse(dev: Device, evt: IopfFault, msg: IommuPageResponse): void {
    const info = this.deviceInfo(dev);
    if (info === null) return;
    const pasidPresent = (evt.fault.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID) !== 0;
    const code =
      msg.code === IOMMU_PAGE_RESP_SUCCESS
        ? PGRP_RESP_SUCCESS
        : msg.code === IOMMU_PAGE_RESP_INVALID
          ? PGRP_RESP_INVALID
          : PGRP_RESP_FAILURE;
    const qi = info.unit.qi;
    if (qi === null) return;
    qi.addPageResponse(info.sid, evt.fault.pasid, pasidPresent, code, msg.grpid, false);
    qi.submit();
  }

  /**
   * IOPF on: the device joins its unit's fault queue (refcounted). PRI itself went on at probe;
   * `'ENODEV'` when it did not.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_enable_iopf
   */
  devEnableFeat(dev: Device, feat: number): 0 | Errno {
    if (feat !== IOMMU_DEV_FEAT_IOPF) return "ENODEV";
    const info = this.deviceInfo(dev);
    if (info === null) return "ENODEV";
    return this.enableIopf(info);
  }

  /**
   * One more user of IOPF: the first puts the device in its unit's fault queue. `'ENODEV'`
   * without PRI on; the queue's `'EBUSY'`.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_enable_iopf
   */
  private enableIopf(info: DeviceDomainInfo): 0 | "ENODEV" | "EBUSY" {
    if (!info.priEnabled) return "ENODEV";
    if (info.iopfRefcount > 0) {
      info.iopfRefcount++;
      return 0;
    }
    const added = this.iopfQueueOf(info.unit).addDevice(info.dev);
    if (added !== 0) return added;
    info.iopfRefcount = 1;
    return 0;
  }

  /**
   * One user of IOPF less: the last takes the device out of the fault queue. Nothing when IOPF
   * is not on (Linux WARNs).
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_disable_iopf
   */
  private disableIopf(info: DeviceDomainInfo): void {
    if (!info.priEnabled || info.iopfRefcount === 0) return;
    if (--info.iopfRefcount > 0) return;
    this.iopfQueueOf(info.unit).removeDevice(info.dev);
  }

  /**
   * IOPF off: the last user takes the device out of the fault queue; PRI stays on until release.
   * `'EINVAL'` when IOPF is not on (Linux WARNs and returns nothing).
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_disable_iopf
   */
  devDisableFeat(dev: Device, feat: number): 0 | Errno {
    if (feat !== IOMMU_DEV_FEAT_IOPF) return "ENODEV";
    const info = this.deviceInfo(dev);
    if (info === null || !info.priEnabled || info.iopfRefcount === 0) return "EINVAL";
    this.disableIopf(info);
    return 0;
  }

  // --- Context entries -------------------------------------------------------------------------------

  /**
   * The scalable-mode context entry of a new device: PASID directory, PDTS, RID_PASID 0, DTE,
   * PASIDE, PRE, faults enabled, then P. Under caching mode the not-present entry may be cached:
   * device-selective context cache (DID 0), then domain-selective IOTLB of DID 0, each waited
   * for; otherwise the write buffer. An entry already present is kept.
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_setup_sm_context
   */
  private setupSmContext(info: DeviceDomainInfo): 0 | "ENOMEM" {
    const unit = info.unit;
    const at = unit.contextAddr(info.bus, info.devfn, true);
    if (at === 0) return "ENOMEM";
    if ((this.mem.read32(at) & 1) !== 0) return 0;
    const table = info.pasidTable as PasidTable;
    let lo = table.dir | (table.pdts << 9);
    if (info.atsSupported) lo |= 1 << 2;
    if (info.pasidSupported) lo |= 1 << 3;
    if (info.priSupported) lo |= 1 << 4;
    const hiDir = Math.floor(table.dir / TWO32);
    // qwords 1..3 (RID_PASID 0, RID_PRIV 0) first, then qword 0 with P.
    this.mem.write64(at + 8, 0, 0);
    this.mem.write64(at + 16, 0, 0);
    this.mem.write64(at + 24, 0, 0);
    this.mem.write64(at, (lo | 1) >>> 0, hiDir);
    const qi = unit.qi;
    if (unit.caps.CM && qi !== null) {
      qi.addContext(CC_G_DEVICE, 0, info.sid, 0);
      unit.submit();
      qi.addIotlb(IOTLB_G_DOMAIN, 0, 0, 0, false);
      unit.submit();
    } else {
      unit.flushWriteBuffer();
    }
    return 0;
  }

  /**
   * Clear a device's scalable-mode context entry and flush as for a present entry without PASID
   * entries: device-selective context cache, then the whole device-TLB when ATS is (still) on.
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_teardown_sm_context
   * @kernel drivers/iommu/intel/pasid.c intel_context_flush_no_pasid
   */
  private teardownSmContext(info: DeviceDomainInfo): void {
    const unit = info.unit;
    const at = unit.contextAddr(info.bus, info.devfn, false);
    if (at === 0) return;
    // context_domain_id reads bits 87:72; in a scalable-mode entry hardware ignores the DID of
    // the context-cache invalidation anyway.
    const did = (this.mem.read32(at + 8) >>> 8) & 0xffff;
    this.mem.write64(at, 0, 0);
    this.mem.write64(at + 8, 0, 0);
    const qi = unit.qi;
    if (qi === null) return;
    qi.addContext(CC_G_DEVICE, did, info.sid, 0);
    unit.submit();
    this.flushDevtlbAll(info, IOMMU_NO_PASID);
  }

  /**
   * Legacy mode: a device's context entry for a second-stage domain (TT 1 when the device may use
   * ATS, else 0) or pass-through (TT 2 with FLPT_DEFAULT_DID and the largest AGAW). An entry
   * already present is kept. Under caching mode the not-present entry the unit may have cached is
   * flushed (device-selective context cache, domain-selective IOTLB of the new DID); otherwise the
   * write buffer. ATS goes on behind a paging domain's entry.
   *
   * @kernel drivers/iommu/intel/iommu.c domain_context_mapping
   * @kernel drivers/iommu/intel/iommu.c context_setup_pass_through
   */
  private legacyContextMap(info: DeviceDomainInfo, domain: DmarDomain | null): 0 | "ENOMEM" {
    const unit = info.unit;
    const at = unit.contextAddr(info.bus, info.devfn, true);
    if (at === 0) return "ENOMEM";
    if ((this.mem.read32(at) & 1) === 0) {
      let did: number;
      let lo: number;
      let hi: number;
      let aw: number;
      if (domain === null) {
        did = FLPT_DEFAULT_DID;
        aw = unit.msagaw;
        lo = 2 << 2;
        hi = 0;
      } else {
        did = domain.didOn(unit);
        aw = domain.agaw;
        const root = domain.pgtable.rootPa;
        lo = (root % TWO32) | ((info.atsSupported ? 1 : 0) << 2);
        hi = Math.floor(root / TWO32);
      }
      // qword 1 (AW, DID) first, then qword 0 with P (FPD clear: faults are reported).
      this.mem.write64(at + 8, (aw | (did << 8)) >>> 0, 0);
      this.mem.write64(at, (lo | 1) >>> 0, hi);
      const qi = unit.qi;
      if (unit.caps.CM && qi !== null) {
        qi.addContext(CC_G_DEVICE, 0, info.sid, 0);
        unit.submit();
        qi.addIotlb(IOTLB_G_DOMAIN, did, 0, 0, false);
        unit.submit();
      } else {
        unit.flushWriteBuffer();
      }
    }
    if (domain !== null) this.enableAts(info);
    return 0;
  }

  /**
   * Legacy mode: clear P alone, flush what the entry fed under its DID (device-selective context
   * cache, domain-selective IOTLB, the whole device-TLB), then zero the entry and turn ATS off.
   * `freeingDid`: the DID goes back to the allocator after this (the earlyDidReuse injection
   * skips its IOTLB invalidation then).
   *
   * @kernel drivers/iommu/intel/iommu.c domain_context_clear
   * @kernel drivers/iommu/intel/iommu.c domain_context_clear_one
   * @kernel drivers/iommu/intel/pasid.c intel_context_flush_no_pasid
   */
  private legacyContextClear(info: DeviceDomainInfo, freeingDid: boolean): void {
    const unit = info.unit;
    const at = unit.contextAddr(info.bus, info.devfn, false);
    if (at === 0) return;
    const lo = this.mem.read64(at);
    const hi = this.mem.hi;
    const did = (this.mem.read32(at + 8) >>> 8) & 0xffff;
    this.mem.write64(at, (lo & ~1) >>> 0, hi);
    const qi = unit.qi;
    if (qi !== null) {
      qi.addContext(CC_G_DEVICE, did, info.sid, 0);
      unit.submit();
      if (!(freeingDid && this.inject.earlyDidReuse)) {
        qi.addIotlb(IOTLB_G_DOMAIN, did, 0, 0, false);
        unit.submit();
      }
      this.flushDevtlbAll(info, IOMMU_NO_PASID);
    }
    this.mem.write64(at, 0, 0);
    this.mem.write64(at + 8, 0, 0);
    this.disableAts(info);
  }

  // --- PASID entries --------------------------------------------------------------------------------

  /**
   * The fields of a PASID entry for `domain` (null: pass-through) on `unit`. First stage: FLPTR,
   * FLPM for 5-level tables, the unit's AGAW; second stage: SLPTPTR, the table's AW, FPD clear,
   * SSADE only while dirty tracking is on; PWSNP when the walks snoop.
   *
   * @kernel drivers/iommu/intel/pasid.c pasid_pte_config_first_level
   * @kernel drivers/iommu/intel/pasid.c pasid_pte_config_second_level
   * @kernel drivers/iommu/intel/pasid.c pasid_pte_config_pass_through
   */
  private pasidFields(unit: IntelIommu, domain: DmarDomain | null): Record<string, number> {
    const pwsnp = unit.caps.SMPWCS ? 1 : 0;
    if (domain === null) {
      return { P: 1, DID: FLPT_DEFAULT_DID, AW: unit.agaw, PGTT: PGTT_PT, PWSNP: pwsnp };
    }
    const did = domain.didOn(unit);
    const root = domain.pgtable.rootPa;
    if (domain.useFirstLevel) {
      return {
        P: 1,
        DID: did,
        AW: unit.agaw,
        PGTT: PGTT_FL,
        PWSNP: domain.coherent ? 1 : 0,
        FLPTR: root,
        FLPM: domain.levels === 5 ? 1 : 0,
      };
    }
    return {
      P: 1,
      DID: did,
      AW: domain.agaw,
      PGTT: PGTT_SL,
      PWSNP: domain.coherent ? 1 : 0,
      SLPTPTR: root,
      SLADE: domain.dirtyTracking ? 1 : 0,
    };
  }

  /**
   * Write a PASID entry that was not present (P last), then flush what the unit may have cached
   * of the not-present one: under caching mode a PASID-selective PASID-cache invalidation and a
   * PASID-selective PASID-based IOTLB invalidation (whatever the PGTT), each waited for; else the
   * write buffer. `'EBUSY'` when the entry is present, `'ENODEV'` when there is none.
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_setup_first_level
   * @kernel drivers/iommu/intel/pasid.c pasid_flush_caches
   */
  private pasidSetup(
    info: DeviceDomainInfo,
    pasid: number,
    domain: DmarDomain | null,
  ): 0 | "EBUSY" | "ENODEV" {
    return this.pasidSetupFields(info, pasid, this.pasidFields(info.unit, domain));
  }

  /** pasidSetup from the entry's fields (SVA entries come from svm.ts). */
  private pasidSetupFields(
    info: DeviceDomainInfo,
    pasid: number,
    fields: Record<string, number>,
  ): 0 | "EBUSY" | "ENODEV" {
    const table = info.pasidTable;
    if (table === null) return "ENODEV";
    if (table.isPresent(pasid)) return "EBUSY";
    const unit = info.unit;
    const ret = table.write(pasid, fields);
    if (ret !== 0) return ret;
    const qi = unit.qi;
    if (unit.caps.CM && qi !== null) {
      const did = fields.DID as number;
      qi.addPasidCache(PC_G_PASID, did, pasid);
      unit.submit();
      qi.addPiotlb(did, pasid, 0, -1, false);
      unit.submit();
    } else {
      unit.flushWriteBuffer();
    }
    return 0;
  }

  /**
   * Tear a PASID entry down: clear P alone, then PASID-selective PASID cache, the IOTLB
   * (PASID-based for first stage and pass-through, domain-selective for second stage) and the
   * device-TLB, each waited for; then zero the entry and, with IOPF on, drain the PASID's page
   * requests. With `faultIgnore` (an exiting process's SVA entries) the cleared entry keeps FPD,
   * so DMA still arriving faults unreported, and nothing is drained: the unbind that follows finds
   * the entry non-present with FPD, only zeroes it and drains. `freeingDid`: the entry's DID goes
   * back to the allocator after this (the earlyDidReuse injection skips the DID's invalidations
   * then).
   *
   * Linux 6.18 writes the FPD-only entry before the invalidations; the model clears P first, as
   * Linux does since 2026, but keeps 6.18's FPD (after that change intel_pasid_clear_entry sees
   * the entry non-present and no longer leaves FPD).
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_tear_down_entry
   */
  private pasidTearDown(
    info: DeviceDomainInfo,
    pasid: number,
    freeingDid: boolean,
    faultIgnore = false,
  ): void {
    const table = info.pasidTable;
    if (table === null || table.entryAddr(pasid, false) === 0) return;
    if (!table.isPresent(pasid)) {
      if (table.isFaultDisabled(pasid)) {
        table.clear(pasid, false);
        this.drainPasidPrq(info, pasid);
      }
      return;
    }
    const did = table.didOf(pasid);
    const pgtt = table.pgttOf(pasid);
    table.clearPresent(pasid);
    const unit = info.unit;
    const inject = this.inject;
    const flush = (): void => {
      const qi = unit.qi;
      if (qi !== null) {
        const skipDid = freeingDid && inject.earlyDidReuse;
        if (!inject.skipPasidCacheFlush && !skipDid) {
          qi.addPasidCache(PC_G_PASID, did, pasid);
          unit.submit();
        }
        if (!skipDid) {
          if (pgtt === PGTT_PT || pgtt === PGTT_FL) qi.addPiotlb(did, pasid, 0, -1, false);
          else qi.addIotlb(IOTLB_G_DOMAIN, did, 0, 0, false);
          unit.submit();
        }
        this.flushDevtlbAll(info, pasid);
      }
      if (info.pasidTable === table) table.clear(pasid, faultIgnore);
      if (!faultIgnore) this.drainPasidPrq(info, pasid);
    };
    if (inject.earlyPasidFree && pasid !== IOMMU_NO_PASID) this.deferred.push(flush);
    else flush();
  }

  /**
   * The whole device-TLB of `pasid` (IOMMU_NO_PASID: type 3 without PASID), when ATS is on.
   *
   * @kernel drivers/iommu/intel/pasid.c devtlb_invalidation_with_pasid
   */
  private flushDevtlbAll(info: DeviceDomainInfo, pasid: number): void {
    if (!info.atsEnabled) return;
    const qi = info.unit.qi;
    if (qi === null) return;
    if (pasid === IOMMU_NO_PASID)
      qi.addDevtlb(info.sid, info.pfsid, info.atsQdep, 0, MAX_AGAW_PFN_WIDTH);
    else qi.addPasidDevtlb(info.sid, info.pfsid, pasid, info.atsQdep, 0, MAX_AGAW_PFN_WIDTH);
    info.unit.submit();
  }

  /**
   * Drain the page requests of `pasid` once its entry is gone, for a device with IOPF on: the
   * ones still in the page request queue are handled first and the fault queue's work is run;
   * then the spec's drain: a fenced wait, the IOTLB (domain-selective without PASID, PASID-based
   * with) and the whole device-TLB, submitted with a page-drain wait, again while PRS.PRO says
   * requests were lost on the way. The DID is the RID domain's (FLPT_DEFAULT_DID without one), as
   * Linux takes it, whatever the PASID's.
   *
   * @kernel drivers/iommu/intel/prq.c intel_iommu_drain_pasid_prq
   */
  private drainPasidPrq(info: DeviceDomainInfo, pasid: number): void {
    if (info.iopfRefcount === 0) return;
    const unit = info.unit;
    const qi = unit.qi;
    if (qi === null) return;
    if (this.prqHolds(unit, info.sid, pasid)) this.processUnitPageRequests(unit);
    this.iopfQueueOf(unit).runWork();
    const did = info.domain !== null ? info.domain.didOn(unit) : FLPT_DEFAULT_DID;
    for (let round = 0; round < DRAIN_ROUNDS; round++) {
      qi.addWait(true);
      if (pasid === IOMMU_NO_PASID) {
        qi.addIotlb(IOTLB_G_DOMAIN, did, 0, 0, false);
        qi.addDevtlb(info.sid, info.pfsid, info.atsQdep, 0, MAX_AGAW_PFN_WIDTH);
      } else {
        qi.addPiotlb(did, pasid, 0, -1, false);
        qi.addPasidDevtlb(info.sid, info.pfsid, pasid, info.atsQdep, 0, MAX_AGAW_PFN_WIDTH);
      }
      qi.submit(false, true);
      if ((unit.mmio.read32(VTD_REG.PRS) & PRS_PRO) === 0) return;
      this.processUnitPageRequests(unit);
    }
  }

  /** Whether the page request queue of `unit` holds a request of (`sid`, `pasid`) not yet read. */
  private prqHolds(unit: IntelIommu, sid: number, pasid: number): boolean {
    if (unit.prqBase === 0 || this.prqBusy.has(unit)) return false;
    const m = unit.mmio;
    const ringBytes = 4096 << PRQ_ORDER;
    const tail = mmioRead64(m, VTD_REG.PQT) % ringBytes;
    let head = mmioRead64(m, VTD_REG.PQH) % ringBytes;
    while (head !== tail) {
      const w0 = this.mem.read64(unit.prqBase + head);
      const w1 = this.mem.hi;
      const pp = (w0 & (1 << 8)) !== 0;
      if (((w0 >>> 16) & 0xffff) === sid) {
        if (pp ? (w1 & 0xfffff) === pasid : pasid === IOMMU_NO_PASID) return true;
      }
      head = (head + PRQ_DESC_SIZE) % ringBytes;
    }
    return false;
  }

  // --- Domain IDs and cache tags ---------------------------------------------------------------------

  /**
   * Take a reference on the domain's ID on `unit`, allocating one on first use. `'ENOSPC'` when the
   * unit has no free domain ID.
   *
   * @kernel drivers/iommu/intel/iommu.c domain_attach_iommu
   */
  private domainAttachIommu(domain: DmarDomain, unit: IntelIommu): 0 | "ENOSPC" {
    const cur = domain.iommuArray.get(unit);
    if (cur !== undefined) {
      cur.refcnt++;
      return 0;
    }
    const did = unit.allocDid();
    if (typeof did === "string") return did;
    domain.iommuArray.set(unit, { did, refcnt: 1 });
    this.hooks.didAllocated?.(unit, did, domain);
    return 0;
  }

  /** Whether this detach frees the domain's ID on `unit`. */
  private lastUser(domain: DmarDomain | null, unit: IntelIommu): boolean {
    return domain !== null && domain.iommuArray.get(unit)?.refcnt === 1;
  }

  /**
   * Drop the reference; the last one frees the domain ID (the caller already flushed it).
   *
   * @kernel drivers/iommu/intel/iommu.c domain_detach_iommu
   */
  private domainDetachIommu(domain: DmarDomain, unit: IntelIommu): void {
    const cur = domain.iommuArray.get(unit);
    if (cur === undefined) return;
    if (--cur.refcnt > 0) return;
    domain.iommuArray.delete(unit);
    unit.freeDid(cur.did);
    this.hooks.didFreed?.(unit, cur.did, domain);
  }

  /** @kernel drivers/iommu/intel/cache.c cache_tag_assign_domain */
  private tagsAssign(domain: DmarDomain, info: DeviceDomainInfo, pasid: number): void {
    const did = domain.didOn(info.unit);
    domain.cacheTags.assign(CACHE_TAG_IOTLB, info.unit.iommu, did, pasid, null);
    if (info.atsEnabled) this.tagsAssignDevtlb(domain, info, pasid);
  }

  private tagsAssignDevtlb(domain: DmarDomain, info: DeviceDomainInfo, pasid: number): void {
    const did = domain.didOn(info.unit);
    domain.cacheTags.assign(CACHE_TAG_DEVTLB, info.unit.iommu, did, pasid, info.dev);
  }

  /** @kernel drivers/iommu/intel/cache.c cache_tag_unassign_domain */
  private tagsUnassign(domain: DmarDomain, info: DeviceDomainInfo, pasid: number): void {
    const did = domain.didOn(info.unit);
    domain.cacheTags.unassign(CACHE_TAG_IOTLB, info.unit.iommu, did, pasid, null);
    if (info.atsEnabled) this.tagsUnassignDevtlb(domain, info, pasid);
  }

  private tagsUnassignDevtlb(domain: DmarDomain, info: DeviceDomainInfo, pasid: number): void {
    const did = domain.didOn(info.unit);
    domain.cacheTags.unassign(CACHE_TAG_DEVTLB, info.unit.iommu, did, pasid, info.dev);
  }

  // --- Attach ----------------------------------------------------------------------------------------

  /**
   * Whether `domain` (allocated for some unit) can be used by a device of `unit`. First stage: the
   * unit walks first-stage tables, of that many levels, with 1 GiB pages if the domain may use
   * them. Second stage: dirty tracking and nest parent supported, second-stage tables walked, the
   * domain's address width within MGAW and its AW in SAGAW, its large pages in SLLPS. Both: a
   * coherent table only on a unit whose walks snoop, and a unit that needs iotlb_sync_map only
   * for a domain that does it.
   *
   * @kernel drivers/iommu/intel/iommu.c paging_domain_compatible
   * @kernel drivers/iommu/intel/iommu.c paging_domain_compatible_first_stage
   * @kernel drivers/iommu/intel/iommu.c paging_domain_compatible_second_stage
   */
  private compatible(domain: DmarDomain, unit: IntelIommu): boolean {
    const caps = unit.caps;
    const pgsizes = domain.pgsizeBitmap;
    if (domain.useFirstLevel) {
      if (!unit.firstStageSupported) return false;
      if (!caps.SMPWCS && domain.coherent) return false;
      if (!caps.FL5LP && domain.vasz > 48) return false;
      if (!caps.FL1GP && Math.floor(pgsizes / SZ_1G) % 2 === 1) return false;
      return !(caps.RWBF && !domain.iotlbSyncMap);
    }
    if ((domain.allocFlags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0 && !unit.ssadsSupported)
      return false;
    if (domain.nestedParent && !unit.nestedSupported) return false;
    if (unit.sm && !caps.SLTS) return false;
    if (!unit.pagingStructureCoherent && domain.coherent) return false;
    if (caps.mgaw < domain.vasz) return false;
    if (((caps.SAGAW >>> domain.agaw) & 1) === 0) return false;
    if ((caps.SLLPS & 1) === 0 && (pgsizes & SZ_2M) !== 0) return false;
    if ((caps.SLLPS & 2) === 0 && Math.floor(pgsizes / SZ_1G) % 2 === 1) return false;
    return !((caps.RWBF || caps.CM) && !domain.iotlbSyncMap);
  }

  /**
   * Make the RID translate nothing: give up the cache tags of what was attached, tear down the
   * RID_PASID entry (scalable) or the context entry (legacy, which also turns ATS off), then the
   * domain ID.
   *
   * @kernel drivers/iommu/intel/iommu.c device_block_translation
   */
  private deviceBlockTranslation(dev: Device): void {
    const info = this.info(dev);
    if (!info.domainAttached) return;
    const domain = info.domain;
    const unit = info.unit;
    const freeing = this.lastUser(domain, unit);
    if (freeing && this.inject.earlyDidReuse && domain !== null) {
      // The injected bug: the ID goes back before the invalidations that clear it.
      this.tagsUnassign(domain, info, IOMMU_NO_PASID);
      this.domainDetachIommu(domain, unit);
      if (unit.sm) this.pasidTearDown(info, IOMMU_NO_PASID, true);
      else this.legacyContextClear(info, true);
      info.domainAttached = false;
      info.domain = null;
      domain.attachments--;
      return;
    }
    if (domain !== null) this.tagsUnassign(domain, info, IOMMU_NO_PASID);
    if (unit.sm) this.pasidTearDown(info, IOMMU_NO_PASID, freeing);
    else this.legacyContextClear(info, freeing);
    info.domainAttached = false;
    if (domain === null) return;
    domain.attachments--;
    this.domainDetachIommu(domain, unit);
    info.domain = null;
  }

  /**
   * Attach a paging domain at the RID: compatibility first, then block, then the domain ID, the
   * entry (context entry in legacy mode, RID_PASID entry in scalable mode) and the cache tags. A
   * failure after the block leaves the device blocked in Linux and its core re-attaches the old
   * domain; the model does that re-attach here, since its core keeps `old` as it was.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_attach_device
   */
  private attachDev(domain: DmarDomain, dev: Device, old: IommuDomain | null): 0 | AttachErrno {
    this.drainDeferred();
    const info = this.info(dev);
    if (!this.compatible(domain, info.unit)) return "EINVAL";
    this.deviceBlockTranslation(dev);
    const ret = this.dmarDomainAttachDevice(domain, info);
    if (ret !== 0) this.restore(info, old);
    return ret;
  }

  /**
   * The domain ID, the entry, then the cache tags; on a failure of the entry the device is blocked
   * again. `'ENOSPC'` without a free domain ID.
   *
   * @kernel drivers/iommu/intel/iommu.c dmar_domain_attach_device
   */
  private dmarDomainAttachDevice(domain: DmarDomain, info: DeviceDomainInfo): 0 | AttachErrno {
    const unit = info.unit;
    const ret = this.domainAttachIommu(domain, unit);
    if (ret !== 0) return ret;
    info.domain = domain;
    info.domainAttached = true;
    domain.attachments++;
    const set = unit.sm
      ? this.pasidSetup(info, IOMMU_NO_PASID, domain)
      : this.legacyContextMap(info, domain);
    if (set !== 0) {
      this.deviceBlockTranslation(info.dev);
      return set;
    }
    this.tagsAssign(domain, info, IOMMU_NO_PASID);
    return 0;
  }

  /** Pass-through at the RID (PASID entry or context entry). */
  private identitySetup(info: DeviceDomainInfo): 0 | AttachErrno {
    const ret = info.unit.sm
      ? this.pasidSetup(info, IOMMU_NO_PASID, null)
      : this.legacyContextMap(info, null);
    if (ret === 0) info.domainAttached = true;
    return ret;
  }

  /**
   * Put `old` back at the RID after a failed attach left the device blocked, as the core's error
   * path does (IOMMU_SET_DOMAIN_MUST_SUCCEED).
   *
   * @kernel drivers/iommu/iommu.c __iommu_group_set_domain_internal
   */
  private restore(info: DeviceDomainInfo, old: IommuDomain | null): void {
    if (old === this.identityDomain) this.identitySetup(info);
    else if (old instanceof DmarDomain) this.dmarDomainAttachDevice(old, info);
  }

  /**
   * Pass-through at the RID: block, then the pass-through entry. `'EINVAL'` without ECAP.PT (a
   * model guard: Linux keeps identity away from such units through device_def_domain_type).
   *
   * @kernel drivers/iommu/intel/iommu.c identity_domain_attach_dev
   */
  private identityAttach(dev: Device, old: IommuDomain | null): 0 | AttachErrno {
    this.drainDeferred();
    const info = this.info(dev);
    if (!info.unit.caps.PT) return "EINVAL";
    this.deviceBlockTranslation(dev);
    const ret = this.identitySetup(info);
    if (ret !== 0) this.restore(info, old);
    return ret;
  }

  /**
   * Attach a paging domain at a PASID: domain ID and tags for the new domain; a present entry
   * (`old`) is torn down with its invalidations and the new one written from scratch, since a
   * 512-bit entry cannot be replaced in place without the hardware seeing it torn; then the old
   * domain's tags and ID are given up. `'EOPNOTSUPP'` on a unit without PASIDs; `'EINVAL'` for
   * IOMMU_NO_PASID (the RID's entry belongs to attach_dev) or an incompatible domain; `'ENODEV'`
   * for a PASID beyond the device's table.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_set_dev_pasid
   * @kernel drivers/iommu/intel/iommu.c domain_setup_first_level
   */
  private setDevPasid(
    domain: DmarDomain,
    dev: Device,
    pasid: number,
    old: IommuDomain | null,
  ): 0 | AttachErrno | "EOPNOTSUPP" {
    this.drainDeferred();
    const info = this.info(dev);
    const unit = info.unit;
    if (!unit.pasidSupported || info.pasidTable === null) return "EOPNOTSUPP";
    if (pasid === IOMMU_NO_PASID) return "EINVAL";
    if (!this.compatible(domain, unit)) return "EINVAL";
    const ret = this.domainAttachIommu(domain, unit);
    if (ret !== 0) return ret;
    this.tagsAssign(domain, info, pasid);
    if (old !== null) this.pasidTearDown(info, pasid, false);
    const set = this.pasidSetup(info, pasid, domain);
    if (set !== 0) {
      this.tagsUnassign(domain, info, pasid);
      this.domainDetachIommu(domain, unit);
      return set;
    }
    domain.attachments++;
    info.pasids.set(pasid, domain);
    this.svm.iopfRemove(info, old);
    this.domainRemoveDevPasid(old, info, pasid);
    return 0;
  }

  /**
   * Pass-through at a PASID, an entry already there torn down first. `'EOPNOTSUPP'` on a unit
   * without PASIDs or pass-through (the latter a model guard).
   *
   * @kernel drivers/iommu/intel/iommu.c identity_domain_set_dev_pasid
   */
  private identitySetDevPasid(
    dev: Device,
    pasid: number,
    old: IommuDomain | null,
  ): 0 | AttachErrno | "EOPNOTSUPP" {
    this.drainDeferred();
    const info = this.info(dev);
    if (!info.unit.pasidSupported || info.pasidTable === null || !info.unit.caps.PT)
      return "EOPNOTSUPP";
    if (pasid === IOMMU_NO_PASID) return "EINVAL";
    if (old !== null) this.pasidTearDown(info, pasid, false);
    const set = this.pasidSetup(info, pasid, null);
    if (set !== 0) return set;
    info.pasids.set(pasid, this.identityDomain);
    this.svm.iopfRemove(info, old);
    this.domainRemoveDevPasid(old, info, pasid);
    return 0;
  }

  /**
   * Remove what is attached at a PASID (the blocking domain's set_dev_pasid): tear the entry down
   * (an SVA entry its process's exit left non-present with FPD is zeroed and drained), turn off
   * the IOPF an SVA domain turned on, then give up the old domain's tags and ID.
   *
   * @kernel drivers/iommu/intel/iommu.c blocking_domain_set_dev_pasid
   */
  private blockingSetDevPasid(
    dev: Device,
    pasid: number,
    old: IommuDomain | null,
  ): 0 | AttachErrno | "EOPNOTSUPP" {
    this.drainDeferred();
    const info = this.info(dev);
    if (info.pasidTable === null) return 0;
    const paging = old instanceof DmarDomain ? old : null;
    const freeing = this.lastUser(paging, info.unit);
    if (this.inject.earlyPasidFree) {
      // The injected bug: the teardown's invalidations (and the release of the domain that they
      // need) run only at the driver's next call, after the caller has freed the PASID.
      if (info.pasids.get(pasid) === old) info.pasids.delete(pasid);
      this.pasidTearDown(info, pasid, freeing);
      this.deferred.push(() => {
        this.svm.iopfRemove(info, old);
        this.domainRemoveDevPasid(old, info, pasid);
      });
      return 0;
    }
    if (freeing && this.inject.earlyDidReuse && paging !== null) {
      this.domainRemoveDevPasid(old, info, pasid);
      this.pasidTearDown(info, pasid, true);
      return 0;
    }
    this.pasidTearDown(info, pasid, freeing);
    this.svm.iopfRemove(info, old);
    this.domainRemoveDevPasid(old, info, pasid);
    return 0;
  }

  /** @kernel drivers/iommu/intel/iommu.c domain_remove_dev_pasid */
  private domainRemoveDevPasid(
    old: IommuDomain | null,
    info: DeviceDomainInfo,
    pasid: number,
  ): void {
    if (info.pasids.get(pasid) === old) info.pasids.delete(pasid);
    if (old instanceof DmarSvaDomain) {
      this.svm.removeDevPasid(old, info, pasid);
      return;
    }
    if (!(old instanceof DmarDomain)) return;
    this.tagsUnassign(old, info, pasid);
    old.attachments--;
    this.domainDetachIommu(old, info.unit);
  }

  // --- Invalidation through cache tags -------------------------------------------------------------

  /**
   * Invalidate [start, end] of `domain` under each of its tags, at most 16 descriptors per wait,
   * then wait once per unit.
   *
   * @kernel drivers/iommu/intel/cache.c cache_tag_flush_range
   */
  cacheTagFlushRange(domain: DmarTaggedDomain, start: number, end: number, leaf: boolean): void {
    this.flushing = domain;
    domain.cacheTags.flushRange(this, start, end, leaf);
    this.flushing = null;
  }

  /** @kernel drivers/iommu/intel/cache.c cache_tag_flush_all */
  flushDomainAll(domain: DmarTaggedDomain): void {
    this.drainDeferred();
    this.flushing = domain;
    domain.cacheTags.flushAll(this);
    this.flushing = null;
  }

  /**
   * The order of the block calculate_psi_aligned_address picks for [pfn, endPfn]: the smallest
   * aligned power of two that covers the range (MAX_AGAW_PFN_WIDTH: everything).
   */
  private psiMask(pfn: number, endPfn: number): number {
    let mask = pagesOrder(endPfn - pfn + 1);
    while (
      mask < MAX_AGAW_PFN_WIDTH &&
      Math.floor(pfn / 2 ** mask) !== Math.floor(endPfn / 2 ** mask)
    )
      mask++;
    return mask;
  }

  /**
   * Stage the IOTLB invalidation of one tag: PASID-based for first-stage domains (page-selective,
   * or PASID-selective for the whole space), else page-selective when CAP.PSI and MAMV allow,
   * domain-selective otherwise. Type-2 descriptors never carry IH: Linux passes the hint in bit 0
   * of the address, which QI_IOTLB_ADDR masks off.
   *
   * @kernel drivers/iommu/intel/cache.c cache_tag_flush_iotlb
   */
  private stageIotlb(
    qi: VtdQi,
    unit: IntelIommu,
    domain: DmarTaggedDomain,
    tag: CacheTag,
    pfn: number,
    mask: number,
    leaf: boolean,
  ): void {
    const addr = (pfn - (pfn % 2 ** mask)) * PAGE;
    if (domain.useFirstLevel) {
      if (mask >= MAX_AGAW_PFN_WIDTH) qi.addPiotlb(tag.id, tag.pasid, 0, -1, false);
      else qi.addPiotlb(tag.id, tag.pasid, addr, 2 ** mask, leaf);
    } else if (!unit.caps.PSI || mask > unit.caps.MAMV) {
      qi.addIotlb(IOTLB_G_DOMAIN, tag.id, 0, 0, false);
    } else {
      qi.addIotlb(IOTLB_G_PAGE, tag.id, addr, mask, false);
    }
    if (qi.pending >= QI_MAX_BATCHED_DESC_COUNT) unit.submit();
  }

  /** One tag's range (CacheTagFlusher). @kernel drivers/iommu/intel/cache.c cache_tag_flush_range */
  flushRange(tag: CacheTag, start: number, end: number, leaf: boolean): void {
    const domain = this.flushing;
    if (domain === null) return;
    const unit = tag.iommu.priv as IntelIommu;
    const qi = unit.qi;
    if (qi === null) return;
    const pfn = Math.floor(start / PAGE);
    const mask = this.psiMask(pfn, Math.floor(end / PAGE));
    const kind = tag.kind;
    if (kind === CACHE_TAG_IOTLB || kind === CACHE_TAG_NESTING_IOTLB) {
      if (this.inject.skipIotlbFlush) return;
      this.stageIotlb(qi, unit, domain, tag, pfn, mask, leaf);
    } else if (kind === CACHE_TAG_DEVTLB || kind === CACHE_TAG_NESTING_DEVTLB) {
      if (this.inject.skipDevtlbFlush || this.flushSkipsDevtlb || tag.dev === null) return;
      const info = this.deviceInfo(tag.dev);
      if (info === null || !info.atsEnabled) return;
      // A nested device-TLB caches the result of both stages: all of it goes.
      const m = kind === CACHE_TAG_NESTING_DEVTLB ? MAX_AGAW_PFN_WIDTH : mask;
      const addr = m >= MAX_AGAW_PFN_WIDTH ? 0 : (pfn - (pfn % 2 ** m)) * PAGE;
      if (tag.pasid === IOMMU_NO_PASID) qi.addDevtlb(info.sid, info.pfsid, info.atsQdep, addr, m);
      else qi.addPasidDevtlb(info.sid, info.pfsid, tag.pasid, info.atsQdep, addr, m);
      if (qi.pending >= QI_MAX_BATCHED_DESC_COUNT) unit.submit();
    }
  }

  /** One tag's full invalidation (CacheTagFlusher). @kernel drivers/iommu/intel/cache.c cache_tag_flush_all */
  flushAll(tag: CacheTag): void {
    const domain = this.flushing;
    if (domain === null) return;
    const unit = tag.iommu.priv as IntelIommu;
    const qi = unit.qi;
    if (qi === null) return;
    const kind = tag.kind;
    if (kind === CACHE_TAG_IOTLB || kind === CACHE_TAG_NESTING_IOTLB) {
      if (this.inject.skipIotlbFlush) return;
      this.stageIotlb(qi, unit, domain, tag, 0, MAX_AGAW_PFN_WIDTH, false);
    } else if (kind === CACHE_TAG_DEVTLB || kind === CACHE_TAG_NESTING_DEVTLB) {
      if (this.inject.skipDevtlbFlush || this.flushSkipsDevtlb || tag.dev === null) return;
      const info = this.deviceInfo(tag.dev);
      if (info === null || !info.atsEnabled) return;
      if (tag.pasid === IOMMU_NO_PASID)
        qi.addDevtlb(info.sid, info.pfsid, info.atsQdep, 0, MAX_AGAW_PFN_WIDTH);
      else qi.addPasidDevtlb(info.sid, info.pfsid, tag.pasid, info.atsQdep, 0, MAX_AGAW_PFN_WIDTH);
      if (qi.pending >= QI_MAX_BATCHED_DESC_COUNT) unit.submit();
    }
  }

  /** The batch of one unit goes out with one wait (CacheTagFlusher). @kernel drivers/iommu/intel/cache.c qi_batch_flush_descs */
  commit(iommu: IommuDevice): void {
    (iommu.priv as IntelIommu).submit();
  }

  /** @kernel drivers/iommu/intel/iommu.c intel_iommu_tlb_sync */
  private iotlbSync(domain: DmarDomain, gather: IommuIotlbGather): void {
    this.drainDeferred();
    if (!gather.isEmpty) {
      this.cacheTagFlushRange(domain, gather.start, gather.end, gather.freelist.length === 0);
    }
    for (const pa of gather.freelist) this.frames.free(pa, 0);
    if (gather.freelist.length !== 0) gather.freelist.length = 0;
  }

  /**
   * After a map, for domains allocated with iotlb_sync_map (the unit needs write-buffer flushes,
   * or caches not-present second-stage entries): per tag, the write buffer without caching mode or
   * for a first-stage domain, else the IOTLB tags' range (IH clear), one wait per unit.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_iotlb_sync_map
   * @kernel drivers/iommu/intel/cache.c cache_tag_flush_range_np
   */
  private iotlbSyncMap(domain: DmarDomain, iova: number, size: number): 0 {
    if (!domain.iotlbSyncMap || size === 0) return 0;
    const pfn = Math.floor(iova / PAGE);
    const mask = this.psiMask(pfn, Math.floor((iova + size - 1) / PAGE));
    const tags = domain.cacheTags.tags;
    let cur: IntelIommu | null = null;
    for (let i = 0; i < tags.length; i++) {
      const tag = tags[i] as CacheTag;
      const unit = tag.iommu.priv as IntelIommu;
      if (cur !== null && cur !== unit) cur.submit();
      cur = unit;
      if (!unit.caps.CM || domain.useFirstLevel) {
        unit.flushWriteBuffer();
        continue;
      }
      const qi = unit.qi;
      if (qi === null || this.inject.skipIotlbFlush) continue;
      if (tag.kind === CACHE_TAG_IOTLB || tag.kind === CACHE_TAG_NESTING_IOTLB)
        this.stageIotlb(qi, unit, domain, tag, pfn, mask, false);
    }
    cur?.submit();
    return 0;
  }

  /** @kernel drivers/iommu/intel/iommu.c intel_iommu_domain_free */
  private domainFree(domain: DmarDomain): void {
    this.drainDeferred();
    if (domain.attachments !== 0) bug(`intel-iommu: domain ${domain.id} freed while attached`);
    domain.pgtable.free();
  }

  // --- Queues ---------------------------------------------------------------------------------------

  /**
   * Read the fault recording registers of every unit. Returns the records read.
   *
   * @kernel drivers/iommu/intel/dmar.c dmar_fault
   */
  processFaults(): number {
    let n = 0;
    for (const unit of this.units) n += unit.processFaults();
    return n;
  }

  /**
   * Drain every unit's page request queue into the core's IOPF (see processUnitPageRequests).
   * Returns the descriptors read.
   *
   * @kernel drivers/iommu/intel/prq.c prq_event_thread
   */
  processPageRequests(): number {
    let total = 0;
    for (const unit of this.units) total += this.processUnitPageRequests(unit);
    return total;
  }

  /**
   * One unit's page request queue: clear PPR, read PQH..PQT, refuse bad requests (non-canonical
   * address, privileged, execute with read) with an Invalid response when they end a group, drop
   * stop markers, report the rest for their device (a device that is in no fault queue gets
   * Invalid for the group's last request), move PQH, and clear PRO once the queue is empty.
   * Not re-entered: a drain that a fault handler starts while the queue is being read leaves it to
   * this pass.
   *
   * @kernel drivers/iommu/intel/prq.c prq_event_thread
   */
  private processUnitPageRequests(unit: IntelIommu): number {
    if (unit.prqBase === 0 || this.prqBusy.has(unit)) return 0;
    this.prqBusy.add(unit);
    const m = unit.mmio;
    m.write32(VTD_REG.PRS, PRS_PPR);
    const ringBytes = 4096 << PRQ_ORDER;
    const tail = mmioRead64(m, VTD_REG.PQT) % ringBytes;
    let head = mmioRead64(m, VTD_REG.PQH) % ringBytes;
    const devices = this.devicesOf.get(unit) as Map<number, Device>;
    let total = 0;
    while (head !== tail) {
      this.pageRequest(unit, unit.prqBase + head, devices);
      head = (head + PRQ_DESC_SIZE) % ringBytes;
      total++;
    }
    mmioWrite64(m, VTD_REG.PQH, tail);
    if ((m.read32(VTD_REG.PRS) & PRS_PRO) !== 0) {
      const h = mmioRead64(m, VTD_REG.PQH) % ringBytes;
      const t = mmioRead64(m, VTD_REG.PQT) % ringBytes;
      if (h === t) {
        this.iopfQueueOf(unit).discardPartial();
        m.write32(VTD_REG.PRS, PRS_PRO);
      }
    }
    this.prqBusy.delete(unit);
    return total;
  }

  private pageRequest(unit: IntelIommu, at: number, devices: Map<number, Device>): void {
    const mem = this.mem;
    const w0 = mem.read64(at);
    const w1 = mem.hi;
    const w2 = mem.read64(at + 8);
    const w3 = mem.hi;
    const pp = (w0 & (1 << 8)) !== 0;
    const rid = (w0 >>> 16) & 0xffff;
    const pasid = w1 & 0xfffff;
    const er = (w1 & (1 << 20)) !== 0;
    const pm = (w1 & (1 << 21)) !== 0;
    const rd = (w2 & 1) !== 0;
    const wr = (w2 & 2) !== 0;
    const lpig = (w2 & 4) !== 0;
    const prgi = (w2 >>> 3) & 0x1ff;
    // Address bits 63:12: canonical for 4-level (bits 63:47 equal).
    const addrHi = w3 >>> 0;
    const top = addrHi >>> 15;
    const canonical = top === 0 || top === 0x1ffff;
    const bad = !canonical || (pm && (rd || wr)) || (er && rd);
    // handle_bad_prq_event: only the group's last request is answered (bit 66 left clear).
    const respond = (code: number): void => {
      if (!lpig) return;
      const qi = unit.qi;
      if (qi === null) return;
      qi.addPageResponse(rid, pasid, pp, code, prgi, false);
      qi.submit();
    };
    if (bad) {
      this.badPageRequests++;
      respond(PGRP_RESP_INVALID);
      return;
    }
    // A stop marker: last in group, neither read nor write. No response.
    if (lpig && !rd && !wr) return;
    const dev = devices.get(rid);
    if (dev === undefined) {
      this.badPageRequests++;
      respond(PGRP_RESP_INVALID);
      return;
    }
    const addr = addrHi * TWO32 + ((w2 & 0xfffff000) >>> 0);
    const fault = {
      flags:
        (pp ? IOMMU_FAULT_PAGE_REQUEST_PASID_VALID | IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID : 0) |
        (lpig ? IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE : 0),
      pasid: pp ? pasid : 0,
      grpid: prgi,
      perm:
        (rd ? IOMMU_FAULT_PERM_READ : 0) |
        (wr ? IOMMU_FAULT_PERM_WRITE : 0) |
        (er ? IOMMU_FAULT_PERM_EXEC : 0) |
        (pm ? IOMMU_FAULT_PERM_PRIV : 0),
      addr,
      privateData: [0, 0] as const,
    };
    if (iommuReportDeviceFault(dev, { fault }) !== 0) respond(PGRP_RESP_INVALID);
  }

  /** Run the IOPF work the fault handlers deferred, on every unit's queue. */
  runIopfWork(): number {
    let n = 0;
    for (const q of this.iopfQueues.values()) n += q.runWork();
    return n;
  }

  /** Domain IDs in use on every unit (leak checks). */
  get didsInUse(): number {
    let n = 0;
    for (const unit of this.units) n += unit.didsInUse;
    return n;
  }
}
