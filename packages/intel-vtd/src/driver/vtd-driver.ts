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
  PC_G_DOMAIN,
  PC_G_PASID,
  PGRP_RESP_FAILURE,
  PGRP_RESP_INVALID,
  PGRP_RESP_SUCCESS,
} from "../format/inv-desc.js";
import { PGTT_FL, PGTT_PT, PGTT_SL } from "../format/pasid-entry.js";
import { PRQ_DESC_SIZE, PRS_PPR, PRS_PRO, VTD_REG } from "../format/registers.js";
import { VtdFsPgtable } from "../pgtable/first-stage.js";
import { VtdSsPgtable } from "../pgtable/second-stage.js";
import { DmarDomain } from "./dmar-domain.js";
import {
  FLPT_DEFAULT_DID,
  IntelIommu,
  type IntelIommuOptions,
  PRQ_DEPTH,
  PRQ_ORDER,
} from "./intel-iommu.js";
import { PasidTable } from "./pasid-table.js";
import { pagesOrder } from "./qi.js";

const PAGE = 4096;
/** Device-TLB order covering the whole space. @kernel drivers/iommu/intel/iommu.h MAX_AGAW_PFN_WIDTH */
const MAX_AGAW_PFN_WIDTH = 52;

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

/** PCI capabilities the driver enables. */
const PASID_FEATURES_NONE = 0;

/**
 * The VT-d driver. One instance serves every unit of the machine, as intel_iommu_ops does.
 *
 * @kernel drivers/iommu/intel/iommu.c intel_iommu_ops
 */
export class VtdDriver implements IommuOps, CacheTagFlusher {
  readonly name = "intel-iommu";
  readonly pgsizeBitmap = PAGE | (1 << 21) | (2 ** 30);
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
  };
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
  /** The domain whose tags are being flushed (CacheTagFlusher callbacks take only the tag). */
  private flushing: DmarDomain | null = null;
  /** Invalidations postponed by the earlyPasidFree injection. */
  private readonly deferred: Array<() => void> = [];

  constructor(options: VtdDriverOptions) {
    this.subsys = options.subsys;
    this.mem = options.mem;
    this.frames = options.frames;
    this.firstStage = options.firstStage ?? true;
    this.pagingOps = {
      attachDev: (d, dev) => this.attachDev(d as DmarDomain, dev),
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
      attachDev: (_d, dev) => this.identityAttach(dev),
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
  }

  // --- Units ---------------------------------------------------------------------------------------

  /**
   * Take a unit: read its capabilities, bring it up (init_dmars) and register it with the core.
   * `'ENODEV'` for a unit the driver cannot use (no queued invalidation), `'EEXIST'` for a second
   * INCLUDE_ALL unit or a requester ID already in another unit's scope, `'ENOMEM'`, `'ETIMEDOUT'`.
   *
   * @kernel drivers/iommu/intel/dmar.c alloc_iommu
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

  /** @kernel drivers/iommu/intel/iommu.c intel_iommu_capable */
  capable(dev: Device, cap: number): boolean {
    const unit = this.deviceInfo(dev)?.unit;
    switch (cap) {
      case IOMMU_CAP_CACHE_COHERENCY:
      case IOMMU_CAP_DEFERRED_FLUSH:
        return true;
      case IOMMU_CAP_ENFORCE_CACHE_COHERENCY:
        return unit?.caps.SC ?? false;
      case IOMMU_CAP_DIRTY_TRACKING:
        return unit?.caps.SLADS ?? false;
      default:
        return false;
    }
  }

  /**
   * Take a device: find its unit, note what ATS, PASID and PRI it may use, and in scalable mode
   * give it a PASID table and a present context entry (RID_PASID 0, DTE, PASIDE, PRE); enable
   * its PASID capability. Its RID translates nothing until a domain is attached.
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
    const info: DeviceDomainInfo = {
      dev,
      unit,
      bus: sid >>> 8,
      devfn: sid & 0xff,
      sid,
      pfsid: sid,
      atsSupported: caps.DT && dev.atsCap,
      atsEnabled: false,
      atsQdep: 0,
      pasidSupported: unit.pasidSupported && dev.pasidBits > 0,
      priSupported: false,
      priEnabled: false,
      iopfRefcount: 0,
      pasidTable: null,
      domain: null,
      domainAttached: false,
      pasids: new Map(),
    };
    info.priSupported = info.atsSupported && unit.pasidSupported && caps.PRS && dev.priCap;
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
    if (info.pasidSupported) dev.enablePasid(PASID_FEATURES_NONE);
    (dev.iommu as NonNullable<Device["iommu"]>).priv = info;
    this.devicesOf.get(unit)?.set(sid, dev);
    return unit.iommu;
  }

  /**
   * ATS goes on after the device joined its default domain (PASID first: the PCIe rule).
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_probe_finalize
   */
  probeFinalize(dev: Device): void {
    const info = this.deviceInfo(dev);
    if (info === null || !info.atsSupported || info.atsEnabled) return;
    if (dev.enableAts(12) !== 0) return;
    info.atsEnabled = true;
    const qdep = dev.atsQueueDepth();
    info.atsQdep = typeof qdep === "number" ? qdep : 0;
    // The cache tags of what is attached now learn about the device-TLB.
    if (info.domain !== null) this.tagsAssignDevtlb(info.domain, info, IOMMU_NO_PASID);
    for (const [pasid, d] of info.pasids) {
      if (d instanceof DmarDomain) this.tagsAssignDevtlb(d, info, pasid);
    }
  }

  /**
   * Forget a device (it is already in the blocking domain): clear its context entry with the
   * invalidations of a present-to-not-present change, free its PASID table, turn PRI, ATS and
   * PASID off.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_release_device
   */
  releaseDevice(dev: Device): void {
    this.drainDeferred();
    const info = this.deviceInfo(dev);
    if (info === null) return;
    const unit = info.unit;
    if (unit.sm) this.teardownSmContext(info);
    info.pasidTable?.free();
    info.pasidTable = null;
    if (info.iopfRefcount > 0) this.iopfQueueOf(unit).removeDevice(dev);
    if (dev.priEnabled) dev.disablePri();
    if (info.atsEnabled) {
      if (info.domain !== null) this.tagsUnassignDevtlb(info.domain, info, IOMMU_NO_PASID);
      dev.disableAts();
    }
    if (dev.pasidEnabled) dev.disablePasid();
    this.devicesOf.get(unit)?.delete(info.sid);
    (dev.iommu as NonNullable<Device["iommu"]>).priv = null;
  }

  domainAllocPaging(dev: Device): IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV" {
    return this.domainAllocPagingFlags(dev, 0) as IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV";
  }

  /**
   * A paging domain for `dev`: first stage when the unit is in scalable mode with FLTS and no
   * flag needs a second stage (nest parent, dirty tracking), else second stage with the unit's
   * AGAW. `'EOPNOTSUPP'` for flags the unit cannot honour.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_domain_alloc_paging_flags
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
    const needSecond =
      (flags & (IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING)) !== 0;
    if ((flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0 && !caps.NEST) return "EOPNOTSUPP";
    if ((flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0 && !caps.SLADS) return "EOPNOTSUPP";
    const first = !needSecond && this.firstStage && unit.firstStageSupported;
    if (!first && unit.sm && !caps.SLTS) return "EOPNOTSUPP";
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
    const agaw = unit.agaw;
    if (first) {
      const superpages = (1 << 21) | (caps.FL1GP ? 2 ** 30 : 0);
      pt = VtdFsPgtable.alloc({ mem: this.mem, frames: this.frames, levels: 4, superpages, tlb });
    } else {
      // The unit's AGAW, whatever MGAW says (paging_domain_alloc clamps only the aperture).
      if (agaw < 1 || agaw > 3) return "EOPNOTSUPP";
      const superpages =
        ((caps.SLLPS & 1) !== 0 ? 1 << 21 : 0) | ((caps.SLLPS & 2) !== 0 ? 2 ** 30 : 0);
      pt = VtdSsPgtable.alloc({
        mem: this.mem,
        frames: this.frames,
        agaw: agaw as 1 | 2 | 3,
        superpages,
        tlb,
      });
    }
    if (typeof pt === "string") return "ENOMEM";
    const domain = new DmarDomain(this.pagingOps, pt, first, agaw);
    domain.allocFlags = flags;
    domainRef.d = domain;
    return domain;
  }

  /**
   * Answer a page request group through the invalidation queue (type 9). The core's response codes
   * become the descriptor's: success 0, invalid 1, failure 0xF. (Linux puts the core's value in RC
   * unchanged, which sends the reserved code 2 for a failure.)
   *
   * @kernel drivers/iommu/intel/prq.c intel_iommu_page_response
   */
  pageResponse(dev: Device, evt: IopfFault, msg: IommuPageResponse): void {
    const info = this.deviceInfo(dev);
    if (info === null) return;
    const flags = evt.fault.flags;
    const pasidPresent = (flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID) !== 0;
    const last = (flags & IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE) !== 0;
    const code =
      msg.code === IOMMU_PAGE_RESP_SUCCESS
        ? PGRP_RESP_SUCCESS
        : msg.code === IOMMU_PAGE_RESP_INVALID
          ? PGRP_RESP_INVALID
          : PGRP_RESP_FAILURE;
    const qi = info.unit.qi;
    if (qi === null) return;
    qi.addPageResponse(info.sid, evt.fault.pasid, pasidPresent, code, msg.grpid, last);
    qi.submit();
  }

  /**
   * IOPF on: the device joins its unit's fault queue and PRI is enabled (once, refcounted).
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_enable_iopf
   */
  devEnableFeat(dev: Device, feat: number): 0 | Errno {
    if (feat !== IOMMU_DEV_FEAT_IOPF) return "ENODEV";
    const info = this.deviceInfo(dev);
    if (info === null || !info.priSupported || !info.atsEnabled) return "ENODEV";
    if (info.iopfRefcount > 0) {
      info.iopfRefcount++;
      return 0;
    }
    const q = this.iopfQueueOf(info.unit);
    const added = q.addDevice(dev);
    if (added !== 0) return added;
    const pri = dev.enablePri(Math.min(PRQ_DEPTH, dev.priCapacity));
    if (pri !== 0) {
      q.removeDevice(dev);
      return pri;
    }
    info.priEnabled = true;
    info.iopfRefcount = 1;
    return 0;
  }

  /** @kernel drivers/iommu/intel/iommu.c intel_iommu_disable_iopf */
  devDisableFeat(dev: Device, feat: number): 0 | Errno {
    if (feat !== IOMMU_DEV_FEAT_IOPF) return "ENODEV";
    const info = this.deviceInfo(dev);
    if (info === null || info.iopfRefcount === 0) return "EINVAL";
    if (--info.iopfRefcount > 0) return 0;
    dev.disablePri();
    info.priEnabled = false;
    this.iopfQueueOf(info.unit).removeDevice(dev);
    return 0;
  }

  // --- Context entries -------------------------------------------------------------------------------

  /**
   * The scalable-mode context entry of a new device: PASID directory, PDTS, RID_PASID 0, DTE,
   * PASIDE, PRE, faults enabled, then P. Under caching mode a not-present entry may be cached, so
   * the context cache is flushed for the device.
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_setup_sm_context
   */
  private setupSmContext(info: DeviceDomainInfo): 0 | "ENOMEM" {
    const unit = info.unit;
    const at = unit.contextAddr(info.bus, info.devfn, true);
    if (at === 0) return "ENOMEM";
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
    if (unit.caps.CM) {
      unit.qi?.addContext(CC_G_DEVICE, 0, info.sid, 0);
      unit.submit();
    } else {
      unit.flushWriteBuffer();
    }
    return 0;
  }

  /**
   * Clear a device's scalable-mode context entry and flush: device-selective context cache, then
   * for each PASID entry still present the domain-selective PASID cache and IOTLB of its DID, then
   * the whole device-TLB.
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_teardown_sm_context
   */
  private teardownSmContext(info: DeviceDomainInfo): void {
    const unit = info.unit;
    const at = unit.contextAddr(info.bus, info.devfn, false);
    if (at === 0 || (this.mem.read32(at) & 1) === 0) return;
    for (let q = 0; q < 4; q++) this.mem.write64(at + q * 8, 0, 0);
    const qi = unit.qi;
    if (qi === null) return;
    qi.addContext(CC_G_DEVICE, 0, info.sid, 0);
    unit.submit();
    for (const pasid of info.pasidTable?.presentPasids() ?? []) {
      const did = (info.pasidTable as PasidTable).didOf(pasid);
      qi.addPasidCache(PC_G_DOMAIN, did, 0);
      qi.addIotlb(IOTLB_G_DOMAIN, did, 0, 0, false);
      unit.submit();
    }
    this.flushDevtlbAll(info, IOMMU_NO_PASID);
  }

  /**
   * Legacy mode: a device's context entry for a second-stage domain (TT 1 when the device may use
   * ATS, else 0) or pass-through (TT 2 with FLPT_DEFAULT_DID). An entry already present is kept
   * (the caller tore the old one down). Under caching mode the not-present entry the unit may have
   * cached is flushed (device-selective context cache, domain-selective IOTLB).
   *
   * @kernel drivers/iommu/intel/iommu.c domain_context_mapping_one
   * @kernel drivers/iommu/intel/iommu.c context_setup_pass_through
   */
  private legacyContextMap(info: DeviceDomainInfo, domain: DmarDomain | null): 0 | "ENOMEM" {
    const unit = info.unit;
    const at = unit.contextAddr(info.bus, info.devfn, true);
    if (at === 0) return "ENOMEM";
    if ((this.mem.read32(at) & 1) !== 0) return 0;
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
    if (unit.caps.CM) {
      const qi = unit.qi;
      qi?.addContext(CC_G_DEVICE, 0, info.sid, 0);
      unit.submit();
      qi?.addIotlb(IOTLB_G_DOMAIN, did, 0, 0, false);
      unit.submit();
    } else {
      unit.flushWriteBuffer();
    }
    return 0;
  }

  /**
   * Legacy mode: clear the context entry and flush what it fed: device-selective context cache,
   * domain-selective IOTLB of its DID, and the whole device-TLB.
   *
   * @kernel drivers/iommu/intel/iommu.c domain_context_clear_one
   * @kernel drivers/iommu/intel/pasid.c intel_context_flush_no_pasid
   */
  private legacyContextClear(info: DeviceDomainInfo, freeingDid: boolean): void {
    const unit = info.unit;
    const at = unit.contextAddr(info.bus, info.devfn, false);
    if (at === 0 || (this.mem.read32(at) & 1) === 0) return;
    const did = (this.mem.read32(at + 8) >>> 8) & 0xffff;
    this.mem.write64(at, 0, 0);
    this.mem.write64(at + 8, 0, 0);
    const qi = unit.qi;
    if (qi === null) return;
    qi.addContext(CC_G_DEVICE, did, info.sid, 0);
    unit.submit();
    if (!(freeingDid && this.inject.earlyDidReuse)) {
      qi.addIotlb(IOTLB_G_DOMAIN, did, 0, 0, false);
      unit.submit();
    }
    this.flushDevtlbAll(info, IOMMU_NO_PASID);
  }

  // --- PASID entries --------------------------------------------------------------------------------

  /**
   * The fields of a PASID entry for `domain` (null: pass-through) on `unit`.
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_setup_first_level
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_setup_second_level
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_setup_pass_through
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
        PWSNP: pwsnp,
        FLPTR: root,
        FLPM: domain.levels === 5 ? 1 : 0,
      };
    }
    return {
      P: 1,
      DID: did,
      AW: domain.agaw,
      PGTT: PGTT_SL,
      PWSNP: pwsnp,
      SLPTPTR: root,
      SLADE: (domain.allocFlags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0 ? 1 : 0,
    };
  }

  /**
   * Write a PASID entry that was not present, then (caching mode) flush what the unit may have
   * cached of the not-present one: PASID-selective PASID cache, then PASID-based IOTLB for first
   * stage and pass-through or domain-selective IOTLB for second stage; without caching mode only
   * the write buffer. `'EBUSY'` when the entry is present.
   *
   * @kernel drivers/iommu/intel/pasid.c pasid_flush_caches
   */
  private pasidSetup(
    info: DeviceDomainInfo,
    pasid: number,
    domain: DmarDomain | null,
  ): 0 | "EBUSY" | "ENOMEM" | "EINVAL" {
    const table = info.pasidTable;
    if (table === null) return "EINVAL";
    if (table.isPresent(pasid)) return "EBUSY";
    const unit = info.unit;
    const fields = this.pasidFields(unit, domain);
    const ret = table.write(pasid, fields);
    if (ret !== 0) return ret;
    if (unit.caps.CM) {
      const qi = unit.qi;
      const did = fields.DID as number;
      qi?.addPasidCache(PC_G_PASID, did, pasid);
      unit.submit();
      if (fields.PGTT === PGTT_SL) qi?.addIotlb(IOTLB_G_DOMAIN, did, 0, 0, false);
      else qi?.addPiotlb(did, pasid, 0, -1, false);
      unit.submit();
    } else {
      unit.flushWriteBuffer();
    }
    return 0;
  }

  /**
   * Replace a present PASID entry in one go, then flush what the old one fed (under its DID):
   * PASID-selective PASID cache, PASID-selective PASID-based IOTLB, and the device-TLB.
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_replace_first_level
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_flush_present
   */
  private pasidReplace(
    info: DeviceDomainInfo,
    pasid: number,
    domain: DmarDomain | null,
  ): 0 | "EINVAL" | "ENOMEM" {
    const table = info.pasidTable;
    if (table === null || !table.isPresent(pasid)) return "EINVAL";
    const unit = info.unit;
    const oldDid = table.didOf(pasid);
    const ret = table.write(pasid, this.pasidFields(unit, domain));
    if (ret !== 0) return ret;
    const qi = unit.qi;
    if (qi === null) return 0;
    qi.addPasidCache(PC_G_PASID, oldDid, pasid);
    unit.submit();
    qi.addPiotlb(oldDid, pasid, 0, -1, false);
    unit.submit();
    this.flushDevtlbAll(info, pasid);
    return 0;
  }

  /**
   * Tear a PASID entry down: clear it (P first), then PASID-selective PASID cache, the IOTLB
   * (PASID-based for first stage and pass-through, domain-selective for second stage), then the
   * device-TLB, each waited for. `freeingDid`: the entry's DID goes back to the allocator after
   * this (the earlyDidReuse injection skips the DID's invalidations then).
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_tear_down_entry
   */
  private pasidTearDown(info: DeviceDomainInfo, pasid: number, freeingDid: boolean): void {
    const table = info.pasidTable;
    if (table === null || !table.isPresent(pasid)) return;
    const did = table.didOf(pasid);
    const pgtt = table.pgttOf(pasid);
    table.clear(pasid, false);
    const unit = info.unit;
    const inject = this.inject;
    const flush = (): void => {
      const qi = unit.qi;
      if (qi === null) return;
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
   * Whether `domain` can be used by a device of `unit`: the table format must be one the unit
   * walks, within its address width.
   *
   * @kernel drivers/iommu/intel/iommu.c paging_domain_compatible
   */
  private compatible(domain: DmarDomain, unit: IntelIommu): boolean {
    if (domain.useFirstLevel) return unit.firstStageSupported;
    if (unit.sm && !unit.caps.SLTS) return false;
    return ((unit.caps.SAGAW >>> domain.agaw) & 1) === 1;
  }

  /**
   * Make the RID translate nothing: tear down the RID_PASID entry (scalable) or the context entry
   * (legacy), then give up the cache tags and the domain ID of what was attached.
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
   * Attach a paging domain at the RID: block, then domain ID, cache tags, and the entry (context
   * entry in legacy mode, RID_PASID entry in scalable mode).
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_attach_device
   */
  private attachDev(domain: DmarDomain, dev: Device): 0 | AttachErrno {
    this.drainDeferred();
    const info = this.info(dev);
    const unit = info.unit;
    if (!this.compatible(domain, unit)) return "EINVAL";
    this.deviceBlockTranslation(dev);
    const ret = this.domainAttachIommu(domain, unit);
    if (ret !== 0) return ret;
    this.tagsAssign(domain, info, IOMMU_NO_PASID);
    const set = unit.sm
      ? this.pasidSetup(info, IOMMU_NO_PASID, domain)
      : this.legacyContextMap(info, domain);
    if (set !== 0) {
      this.tagsUnassign(domain, info, IOMMU_NO_PASID);
      this.domainDetachIommu(domain, unit);
      return set === "EBUSY" ? "EBUSY" : set;
    }
    info.domain = domain;
    info.domainAttached = true;
    domain.attachments++;
    return 0;
  }

  /** @kernel drivers/iommu/intel/iommu.c identity_domain_attach_dev */
  private identityAttach(dev: Device): 0 | AttachErrno {
    this.drainDeferred();
    const info = this.info(dev);
    const unit = info.unit;
    if (!unit.caps.PT) return "EINVAL";
    this.deviceBlockTranslation(dev);
    const ret = unit.sm
      ? this.pasidSetup(info, IOMMU_NO_PASID, null)
      : this.legacyContextMap(info, null);
    if (ret !== 0) return ret === "EBUSY" ? "EBUSY" : ret;
    info.domainAttached = true;
    return 0;
  }

  /**
   * Attach a paging domain at a PASID: domain ID and tags for the new domain, the entry written (or
   * replaced in place when `old` is there), then the old domain's tags and ID given up.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_set_dev_pasid
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
    if (!info.pasidSupported || info.pasidTable === null) return "EOPNOTSUPP";
    if (pasid <= 0 || pasid >= info.pasidTable.maxPasid) return "EINVAL";
    if (!this.compatible(domain, unit)) return "EINVAL";
    const ret = this.domainAttachIommu(domain, unit);
    if (ret !== 0) return ret;
    this.tagsAssign(domain, info, pasid);
    const set =
      old === null ? this.pasidSetup(info, pasid, domain) : this.pasidReplace(info, pasid, domain);
    if (set !== 0) {
      this.tagsUnassign(domain, info, pasid);
      this.domainDetachIommu(domain, unit);
      return set === "EBUSY" ? "EBUSY" : set;
    }
    domain.attachments++;
    info.pasids.set(pasid, domain);
    this.domainRemoveDevPasid(old, info, pasid);
    return 0;
  }

  /** @kernel drivers/iommu/intel/iommu.c identity_domain_set_dev_pasid */
  private identitySetDevPasid(
    dev: Device,
    pasid: number,
    old: IommuDomain | null,
  ): 0 | AttachErrno | "EOPNOTSUPP" {
    this.drainDeferred();
    const info = this.info(dev);
    if (!info.pasidSupported || info.pasidTable === null || !info.unit.caps.PT) return "EOPNOTSUPP";
    if (pasid <= 0 || pasid >= info.pasidTable.maxPasid) return "EINVAL";
    const set =
      old === null ? this.pasidSetup(info, pasid, null) : this.pasidReplace(info, pasid, null);
    if (set !== 0) return set === "EBUSY" ? "EBUSY" : set;
    info.pasids.set(pasid, this.identityDomain);
    this.domainRemoveDevPasid(old, info, pasid);
    return 0;
  }

  /**
   * Remove what is attached at a PASID (the blocking domain's set_dev_pasid): tear the entry down,
   * then give up the old domain's tags and ID.
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
      this.deferred.push(() => this.domainRemoveDevPasid(old, info, pasid));
      return 0;
    }
    if (freeing && this.inject.earlyDidReuse && paging !== null) {
      this.domainRemoveDevPasid(old, info, pasid);
      this.pasidTearDown(info, pasid, true);
      return 0;
    }
    this.pasidTearDown(info, pasid, freeing);
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
    if (!(old instanceof DmarDomain)) return;
    this.tagsUnassign(old, info, pasid);
    old.attachments--;
    this.domainDetachIommu(old, info.unit);
  }

  // --- Invalidation through cache tags -------------------------------------------------------------

  /**
   * Invalidate [start, end] of `domain` under each of its tags, then wait once per unit.
   *
   * @kernel drivers/iommu/intel/cache.c cache_tag_flush_range
   */
  cacheTagFlushRange(domain: DmarDomain, start: number, end: number, leaf: boolean): void {
    this.flushing = domain;
    domain.cacheTags.flushRange(this, start, end, leaf);
    this.flushing = null;
  }

  /** @kernel drivers/iommu/intel/cache.c cache_tag_flush_all */
  flushDomainAll(domain: DmarDomain): void {
    this.drainDeferred();
    this.flushing = domain;
    domain.cacheTags.flushAll(this);
    this.flushing = null;
  }

  /** One tag's range (CacheTagFlusher). @kernel drivers/iommu/intel/cache.c cache_tag_flush_iotlb */
  flushRange(tag: CacheTag, start: number, end: number, leaf: boolean): void {
    const domain = this.flushing;
    if (domain === null) return;
    const unit = tag.iommu.priv as IntelIommu;
    const qi = unit.qi;
    if (qi === null) return;
    // calculate_psi_aligned_address: the smallest aligned power-of-two block covering the range.
    const pfn = Math.floor(start / PAGE);
    const endPfn = Math.floor(end / PAGE);
    const pages = endPfn - pfn + 1;
    let mask = pagesOrder(pages);
    while (
      mask < MAX_AGAW_PFN_WIDTH &&
      Math.floor(pfn / 2 ** mask) !== Math.floor(endPfn / 2 ** mask)
    )
      mask++;
    const aligned = 2 ** mask;
    const addr = (pfn - (pfn % aligned)) * PAGE;
    const kind = tag.kind;
    if (kind === CACHE_TAG_IOTLB || kind === CACHE_TAG_NESTING_IOTLB) {
      if (this.inject.skipIotlbFlush) return;
      if (domain.useFirstLevel) {
        if (mask >= MAX_AGAW_PFN_WIDTH) qi.addPiotlb(tag.id, tag.pasid, 0, -1, false);
        else qi.addPiotlb(tag.id, tag.pasid, addr, aligned, leaf);
      } else if (!unit.caps.PSI || mask > unit.caps.MAMV) {
        qi.addIotlb(IOTLB_G_DOMAIN, tag.id, 0, 0, false);
      } else {
        qi.addIotlb(IOTLB_G_PAGE, tag.id, addr, mask, leaf);
      }
    } else if (kind === CACHE_TAG_DEVTLB || kind === CACHE_TAG_NESTING_DEVTLB) {
      if (this.inject.skipDevtlbFlush || tag.dev === null) return;
      const info = this.deviceInfo(tag.dev);
      if (info === null || !info.atsEnabled) return;
      if (tag.pasid === IOMMU_NO_PASID)
        qi.addDevtlb(info.sid, info.pfsid, info.atsQdep, addr, mask);
      else qi.addPasidDevtlb(info.sid, info.pfsid, tag.pasid, info.atsQdep, addr, mask);
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
      if (domain.useFirstLevel) qi.addPiotlb(tag.id, tag.pasid, 0, -1, false);
      else qi.addIotlb(IOTLB_G_DOMAIN, tag.id, 0, 0, false);
    } else if (kind === CACHE_TAG_DEVTLB || kind === CACHE_TAG_NESTING_DEVTLB) {
      if (this.inject.skipDevtlbFlush || tag.dev === null) return;
      const info = this.deviceInfo(tag.dev);
      if (info === null || !info.atsEnabled) return;
      if (tag.pasid === IOMMU_NO_PASID)
        qi.addDevtlb(info.sid, info.pfsid, info.atsQdep, 0, MAX_AGAW_PFN_WIDTH);
      else qi.addPasidDevtlb(info.sid, info.pfsid, tag.pasid, info.atsQdep, 0, MAX_AGAW_PFN_WIDTH);
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
   * After a map: under caching mode a second-stage unit may cache the not-present entries the map
   * replaced, so the range is invalidated; otherwise only the write buffer is flushed.
   *
   * @kernel drivers/iommu/intel/cache.c cache_tag_flush_range_np
   */
  private iotlbSyncMap(domain: DmarDomain, iova: number, size: number): 0 {
    let needed = false;
    for (const tag of domain.cacheTags.tags) {
      const unit = tag.iommu.priv as IntelIommu;
      if (!unit.caps.CM || domain.useFirstLevel) unit.flushWriteBuffer();
      else needed = true;
    }
    if (!needed || size === 0) return 0;
    this.flushing = domain;
    const tags = domain.cacheTags.tags;
    for (let i = 0; i < tags.length; i++) {
      const tag = tags[i] as CacheTag;
      const unit = tag.iommu.priv as IntelIommu;
      if (!unit.caps.CM || tag.kind !== CACHE_TAG_IOTLB) continue;
      this.flushRange(tag, iova, iova + size - 1, false);
      unit.submit();
    }
    this.flushing = null;
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
   * Drain every unit's page request queue into the core's IOPF: clear PPR, read PQH..PQT, refuse
   * bad requests (non-canonical address, privileged, execute with read) with an Invalid response
   * when they end a group, drop stop markers, report the rest for their device (a device that is
   * in no fault queue gets Invalid for the group's last request), move PQH, and clear PRO once the
   * queue is empty. Returns the descriptors read.
   *
   * @kernel drivers/iommu/intel/prq.c prq_event_thread
   */
  processPageRequests(): number {
    let total = 0;
    for (const unit of this.units) {
      if (unit.prqBase === 0) continue;
      const m = unit.mmio;
      m.write32(VTD_REG.PRS, PRS_PPR);
      const ringBytes = 4096 << PRQ_ORDER;
      const tail = mmioRead64(m, VTD_REG.PQT) % ringBytes;
      let head = mmioRead64(m, VTD_REG.PQH) % ringBytes;
      const devices = this.devicesOf.get(unit) as Map<number, Device>;
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
    }
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
    const respond = (code: number): void => {
      if (!lpig) return;
      const qi = unit.qi;
      if (qi === null) return;
      qi.addPageResponse(rid, pasid, pp, code, prgi, true);
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
