// The driver half of the mock IOMMU: an IommuOps that programs MockIommuHw only through its
// registers and tables in memory, in the order a real driver must (write, then invalidate).

import { Ida } from "@iommu-sim/ioasid";
import type { Device } from "../device/device.js";
import {
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  NO_PASID,
  PRG_RESPONSE_FAILURE,
} from "../device/iommu-hardware.js";
import type { Errno } from "../errno.js";
import {
  CACHE_TAG_DEVTLB,
  CACHE_TAG_IOTLB,
  type CacheTag,
  type CacheTagFlusher,
  CacheTagList,
} from "../iommu/cache-tag.js";
import type { IopfFault } from "../iommu/io-pgfault.js";
import {
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_FAULT_PERM_EXEC,
  IOMMU_FAULT_PERM_PRIV,
  IOMMU_FAULT_PERM_READ,
  IOMMU_FAULT_PERM_WRITE,
  IopfQueue,
  iommuReportDeviceFault,
} from "../iommu/io-pgfault.js";
import type { IommuFlushOps } from "../iommu/io-pgtable.js";
import {
  type AttachErrno,
  IOMMU_DOMAIN_BLOCKED,
  IOMMU_DOMAIN_IDENTITY,
  IOMMU_DOMAIN_UNMANAGED,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IommuDomain,
  type IommuDomainOps,
} from "../iommu/iommu-domain.js";
import { iommuIotlbGatherAddPage } from "../iommu/iommu-map.js";
import {
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_CAP_DEFERRED_FLUSH,
  IOMMU_CAP_NOEXEC,
  IOMMU_DEV_FEAT_IOPF,
  IommuDevice,
  type IommuOps,
  type IommuPageResponse,
} from "../iommu/iommu-ops.js";
import type { IommuSubsystem } from "../iommu/iommu-subsystem.js";
import type { IommuIotlbGather } from "../iommu/iotlb-gather.js";
import { bug } from "../platform/bug.js";
import type { FrameAllocator } from "../platform/frame-allocator.js";
import { type Mmio, mmioWrite64 } from "../platform/mmio.js";
import type { PhysMemory } from "../platform/phys-memory.js";
import { hiOf, loOf } from "../platform/u64.js";
import {
  MOCK_CAP_ATS,
  MOCK_CAP_PRI,
  MOCK_CTRL_EN,
  MOCK_CTRL_FQ_EN,
  MOCK_CTRL_PRQ_EN,
  MOCK_DTE_PASID_EN,
  MOCK_DTE_SIZE,
  MOCK_FQ_RECORD_SIZE,
  MOCK_INV_ATS,
  MOCK_INV_DOMAIN,
  MOCK_INV_PASID,
  MOCK_INV_RANGE,
  MOCK_MODE_BLOCKED,
  MOCK_MODE_IDENTITY,
  MOCK_MODE_TRANSLATE,
  MOCK_PASID_ENTRY_SIZE,
  MOCK_PRQ_RECORD_SIZE,
  MOCK_REG,
  mockEntryHi,
  mockEntryLo,
  mockPasidReg,
} from "./mock-format.js";
import { MOCK_PGSIZE_BITMAP, MockPgtable } from "./mock-pgtable.js";

/** log2 of the fault and page request queue sizes (records). */
const QUEUE_ORDER = 8;
/** PASID table entries per device at most: 2^MAX_PTS. */
const MAX_PTS = 20;

/** A fault the driver read from the fault queue. */
export interface MockFaultRecord {
  rid: number;
  pasid: number;
  iova: number;
  kind: number;
  code: number;
  write: boolean;
}

/** Per-device driver state (dev->iommu->priv). */
interface MockDevInfo {
  /** Physical address of the device's PASID table, or 0. */
  pasidTable: number;
  pasidTableOrder: number;
  pts: number;
  ats: boolean;
  /** Domain attached at the RID (for tags). */
  domain: IommuDomain | null;
  /** PASID → domain, for tags. */
  pasids: Map<number, IommuDomain>;
  iopf: number;
}

/** A paging domain of the mock driver. */
export class MockDomain extends IommuDomain {
  readonly pgtable: MockPgtable;
  readonly did: number;
  readonly driver: MockIommuDriver;

  constructor(driver: MockIommuDriver, ops: IommuDomainOps, pgtable: MockPgtable, did: number) {
    super(IOMMU_DOMAIN_UNMANAGED, ops);
    this.driver = driver;
    this.pgtable = pgtable;
    this.did = did;
    this.pgsizeBitmap = pgtable.cfg.pgsizeBitmap;
    this.geometry = {
      apertureStart: 0,
      apertureEnd: 2 ** pgtable.cfg.ias - 1,
      forceAperture: true,
    };
    this.cacheTags = new CacheTagList();
  }
}

export interface MockIommuDriverOptions {
  subsys: IommuSubsystem;
  mem: PhysMemory;
  frames: FrameAllocator;
  /** The hardware's registers: all the driver ever touches of it. */
  mmio: Mmio;
  name?: string;
  /** Page-table levels of paging domains (default 4). */
  levels?: 3 | 4 | 5;
  /** Page sizes of paging domains (default 4K|2M|1G). */
  pgsizeBitmap?: number;
}

/** Fault-injection switches the harness uses to prove its oracle catches driver bugs. */
export interface MockIommuInjections {
  /** Skip the IOTLB invalidation of an unmap. */
  skipIotlbFlush: boolean;
  /** Skip the device-TLB (ATS) invalidation of an unmap. */
  skipDevtlbFlush: boolean;
  /** Skip the IOTLB invalidation when a PASID is torn down. */
  skipPasidFlush: boolean;
}

/**
 * The mock IOMMU driver. Like a real one it owns a device table and per-device PASID tables in
 * memory, domain IDs, a fault queue and a page request queue, and invalidates through registers.
 *
 * @kernel drivers/iommu/iommufd/selftest.c mock_ops
 */
export class MockIommuDriver implements IommuOps, CacheTagFlusher {
  readonly name: string;
  readonly pgsizeBitmap: number;
  readonly identityDomain: IommuDomain;
  readonly blockedDomain: IommuDomain;
  readonly iommu: IommuDevice;
  readonly iopfQueue: IopfQueue;
  /** Faults read from the fault queue, oldest first. */
  readonly faultLog: MockFaultRecord[] = [];
  readonly inject: MockIommuInjections = {
    skipIotlbFlush: false,
    skipDevtlbFlush: false,
    skipPasidFlush: false,
  };
  private readonly subsys: IommuSubsystem;
  private readonly mem: PhysMemory;
  private readonly frames: FrameAllocator;
  private readonly mmio: Mmio;
  private readonly levels: 3 | 4 | 5;
  private readonly dids = new Ida();
  private readonly pagingOps: IommuDomainOps;
  private readonly hwPasidBits: number;
  private readonly hwAts: boolean;
  private readonly hwPri: boolean;
  private dtBase = 0;
  private fqBase = 0;
  private prqBase = 0;
  /** Invalidation commands issued, by kind, for reports. */
  readonly invalidations = { range: 0, domain: 0, pasid: 0, ats: 0 };

  constructor(options: MockIommuDriverOptions) {
    this.subsys = options.subsys;
    this.mem = options.mem;
    this.frames = options.frames;
    this.mmio = options.mmio;
    this.name = options.name ?? "mock-iommu";
    this.levels = options.levels ?? 4;
    this.pgsizeBitmap = options.pgsizeBitmap ?? MOCK_PGSIZE_BITMAP;
    const cap = this.mmio.read32(MOCK_REG.CAP);
    this.hwPasidBits = cap & 0x1f;
    this.hwAts = (cap & MOCK_CAP_ATS) !== 0;
    this.hwPri = (cap & MOCK_CAP_PRI) !== 0;
    this.iommu = new IommuDevice(
      this.name,
      this,
      this.hwPasidBits === 0 ? 0 : 2 ** this.hwPasidBits,
    );
    this.iopfQueue = new IopfQueue(`${this.name}-iopf`);
    this.pagingOps = {
      attachDev: (d, dev, old) => this.attachDev(d as MockDomain, dev, old),
      setDevPasid: (d, dev, pasid, old) => this.setDevPasid(d, dev, pasid, old),
      mapPages: (d, iova, pa, pgsize, pgcount, prot) => {
        const pt = (d as MockDomain).pgtable;
        const ret = pt.mapPages(iova, pa, pgsize, pgcount, prot);
        d.mapped = pt.mapped;
        return ret;
      },
      unmapPages: (d, iova, pgsize, pgcount, gather) =>
        (d as MockDomain).pgtable.unmapPages(iova, pgsize, pgcount, gather),
      iovaToPhys: (d, iova) => (d as MockDomain).pgtable.iovaToPhys(iova),
      iotlbSync: (d, gather) => this.iotlbSync(d, gather),
      flushIotlbAll: (d) => this.flushAll(d),
      freeTables: (_d, pas) => {
        for (const pa of pas) this.frames.free(pa, 0);
      },
      free: (d) => this.domainFree(d as MockDomain),
    };
    this.identityDomain = new IommuDomain(IOMMU_DOMAIN_IDENTITY, {
      attachDev: (_d, dev, old) => this.setRid(dev, MOCK_MODE_IDENTITY, null, old),
      setDevPasid: (d, dev, pasid, old) => this.setDevPasid(d, dev, pasid, old),
    });
    this.blockedDomain = new IommuDomain(IOMMU_DOMAIN_BLOCKED, {
      attachDev: (_d, dev, old) => this.setRid(dev, MOCK_MODE_BLOCKED, null, old),
      setDevPasid: (_d, dev, pasid, old) => this.removeDevPasid(dev, pasid, old),
    });
  }

  /**
   * Bring the hardware up: device table, fault queue, page request queue, then translation on.
   * `'ENOMEM'` when the frames for the tables are missing.
   *
   * @kernel drivers/iommu/intel/iommu.c init_dmars
   */
  init(): 0 | "ENOMEM" {
    // 65536 requester IDs * 32 bytes: 2 MiB (order 9), sparse until written.
    const dt = this.frames.alloc(9);
    const fq = this.frames.alloc(Math.max(QUEUE_ORDER + 5 - 12, 0));
    const prq = this.frames.alloc(Math.max(QUEUE_ORDER + 5 - 12, 0));
    if (typeof dt !== "number" || typeof fq !== "number" || typeof prq !== "number")
      return "ENOMEM";
    this.dtBase = dt;
    this.fqBase = fq;
    this.prqBase = prq;
    mmioWrite64(this.mmio, MOCK_REG.DT_BASE_LO, dt);
    mmioWrite64(this.mmio, MOCK_REG.FQ_BASE_LO, fq);
    this.mmio.write32(MOCK_REG.FQ_SIZE, QUEUE_ORDER);
    mmioWrite64(this.mmio, MOCK_REG.PRQ_BASE_LO, prq);
    this.mmio.write32(MOCK_REG.PRQ_SIZE, QUEUE_ORDER);
    this.mmio.write32(MOCK_REG.CTRL, MOCK_CTRL_EN | MOCK_CTRL_FQ_EN | MOCK_CTRL_PRQ_EN);
    this.subsys.iommuDeviceRegister(this.iommu);
    return 0;
  }

  private info(dev: Device): MockDevInfo {
    const info = dev.iommu?.priv as MockDevInfo | null | undefined;
    if (!info) bug(`mock-iommu: ${dev.name} was not probed`);
    return info;
  }

  private dte(dev: Device): number {
    return this.dtBase + dev.rid * MOCK_DTE_SIZE;
  }

  // --- IommuOps --------------------------------------------------------------------------------

  capable(_dev: Device, cap: number): boolean {
    return (
      cap === IOMMU_CAP_CACHE_COHERENCY ||
      cap === IOMMU_CAP_NOEXEC ||
      cap === IOMMU_CAP_DEFERRED_FLUSH
    );
  }

  /**
   * Take a device: enable PASID, ATS and PRI where both sides can, give it a PASID table, and
   * leave its entry blocking until the core attaches a domain.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_probe_device
   */
  probeDevice(dev: Device): IommuDevice | "ENODEV" | "ENOMEM" | "EINVAL" {
    if (dev.iommu === null) return "ENODEV";
    if (dev.rid < 0 || dev.rid > 0xffff) return "ENODEV";
    let pts = 0;
    let pasidTable = 0;
    let order = 0;
    if (this.hwPasidBits > 0 && dev.maxPasids > 0) {
      pts = Math.min(MAX_PTS, this.hwPasidBits, dev.pasidBits);
      order = Math.max(0, pts + 4 - 12);
      const pt = this.frames.alloc(order);
      if (typeof pt !== "number") return "ENOMEM";
      pasidTable = pt;
      dev.enablePasid(0);
    }
    const ats = this.hwAts && dev.atsCap && dev.enableAts(12) === 0;
    if (this.hwPri && dev.priCap && ats) dev.enablePri(dev.priCapacity);
    const info: MockDevInfo = {
      pasidTable,
      pasidTableOrder: order,
      pts,
      ats,
      domain: null,
      pasids: new Map(),
      iopf: 0,
    };
    (dev.iommu as NonNullable<Device["iommu"]>).priv = info;
    const at = this.dte(dev);
    this.mem.write64(at + 16, loOf(pasidTable), hiOf(pasidTable));
    this.mem.write64(at + 8, 0, pts);
    this.mem.write64(at, mockEntryLo(MOCK_MODE_BLOCKED, 3, 0, false), 0);
    return this.iommu;
  }

  /** @kernel drivers/iommu/intel/iommu.c intel_iommu_release_device */
  releaseDevice(dev: Device): void {
    const info = dev.iommu?.priv as MockDevInfo | null;
    if (!info) return;
    const at = this.dte(dev);
    this.mem.write64(at, 0, 0);
    this.mem.write64(at + 8, 0, 0);
    this.mem.write64(at + 16, 0, 0);
    if (info.pasidTable !== 0) this.frames.free(info.pasidTable, info.pasidTableOrder);
    if (info.iopf > 0) this.iopfQueue.removeDevice(dev);
    if (dev.priEnabled) dev.disablePri();
    if (dev.atsEnabled) dev.disableAts();
    if (dev.pasidEnabled) dev.disablePasid();
    (dev.iommu as NonNullable<Device["iommu"]>).priv = null;
  }

  /** A paging domain with a mock table and a domain ID. */
  domainAllocPaging(dev: Device): IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV" {
    return this.domainAllocPagingFlags(dev, 0) as IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV";
  }

  /** @kernel drivers/iommu/iommufd/selftest.c mock_domain_alloc_paging_flags */
  domainAllocPagingFlags(
    _dev: Device,
    flags: number,
  ): IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV" | "EOPNOTSUPP" {
    if ((flags & ~(IOMMU_HWPT_ALLOC_PASID | IOMMU_HWPT_ALLOC_NEST_PARENT)) !== 0)
      return "EOPNOTSUPP";
    if ((flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0) return "EOPNOTSUPP";
    const did = this.dids.allocRange(1, 0xffff);
    if (typeof did !== "number") return "ENOMEM";
    const domainRef: { d: MockDomain | null } = { d: null };
    const tlb: IommuFlushOps = {
      tlbFlushAll: () => {
        if (domainRef.d) this.flushAll(domainRef.d);
      },
      tlbFlushWalk: (iova, size) => {
        if (domainRef.d) this.flushRangeNow(domainRef.d, iova, iova + size - 1);
      },
      tlbAddPage: (gather, iova, granule) => {
        if (domainRef.d) iommuIotlbGatherAddPage(domainRef.d, gather, iova, granule);
      },
    };
    const pt = MockPgtable.alloc({
      mem: this.mem,
      frames: this.frames,
      levels: this.levels,
      pgsizeBitmap: this.pgsizeBitmap,
      tlb,
    });
    if (typeof pt === "string") {
      this.dids.free(did);
      return "ENOMEM";
    }
    const domain = new MockDomain(this, this.pagingOps, pt, did);
    domainRef.d = domain;
    return domain;
  }

  /** The page response goes out through the response registers. @kernel drivers/iommu/intel/prq.c intel_iommu_page_response */
  pageResponse(dev: Device, evt: IopfFault, msg: IommuPageResponse): void {
    const pasidValid = (evt.fault.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID) !== 0;
    // IOMMU_PAGE_RESP_* to PCIe PRG response codes: success 0, invalid 1, failure 0xf.
    const code = msg.code === 0 ? 0 : msg.code === 1 ? 1 : PRG_RESPONSE_FAILURE;
    this.respond(dev.rid, pasidValid ? msg.pasid : NO_PASID, msg.grpid, code);
  }

  /** Send one PRG response through the response registers; writing RESP_CODE sends it. */
  private respond(rid: number, pasid: number, prgi: number, code: number): void {
    this.mmio.write32(MOCK_REG.RESP_RID, rid);
    this.mmio.write32(MOCK_REG.RESP_PASID, mockPasidReg(pasid));
    this.mmio.write32(MOCK_REG.RESP_PRGI, prgi);
    this.mmio.write32(MOCK_REG.RESP_CODE, code);
  }

  /** Put a device into (or out of) the IOPF queue. */
  devEnableFeat(dev: Device, feat: number): 0 | Errno {
    if (feat !== IOMMU_DEV_FEAT_IOPF) return "ENODEV";
    const info = this.info(dev);
    if (!dev.priEnabled) return "ENODEV";
    if (info.iopf === 0) {
      const ret = this.iopfQueue.addDevice(dev);
      if (ret !== 0) return ret;
    }
    info.iopf++;
    return 0;
  }

  devDisableFeat(dev: Device, feat: number): 0 | Errno {
    if (feat !== IOMMU_DEV_FEAT_IOPF) return "ENODEV";
    const info = this.info(dev);
    if (info.iopf === 0) return "EINVAL";
    if (--info.iopf === 0) this.iopfQueue.removeDevice(dev);
    return 0;
  }

  // --- Attach ----------------------------------------------------------------------------------

  private tagsAssign(domain: IommuDomain, dev: Device, pasid: number): void {
    if (!(domain instanceof MockDomain)) return;
    const tags = domain.cacheTags as CacheTagList;
    tags.assign(CACHE_TAG_IOTLB, this.iommu, domain.did, pasid, null);
    if (this.info(dev).ats) tags.assign(CACHE_TAG_DEVTLB, this.iommu, domain.did, pasid, dev);
  }

  private tagsUnassign(domain: IommuDomain | null, dev: Device, pasid: number): void {
    if (!(domain instanceof MockDomain)) return;
    const tags = domain.cacheTags as CacheTagList;
    tags.unassign(CACHE_TAG_IOTLB, this.iommu, domain.did, pasid, null);
    if (this.info(dev).ats) tags.unassign(CACHE_TAG_DEVTLB, this.iommu, domain.did, pasid, dev);
  }

  private attachDev(domain: MockDomain, dev: Device, old: IommuDomain | null): 0 | AttachErrno {
    return this.setRid(dev, MOCK_MODE_TRANSLATE, domain, old);
  }

  /**
   * Point the RID's entry at a new configuration. The old translation may be cached in the
   * device's ATC, so it is invalidated once the entry changed.
   */
  private setRid(
    dev: Device,
    mode: number,
    domain: MockDomain | null,
    old: IommuDomain | null,
  ): 0 | AttachErrno {
    const info = this.info(dev);
    const at = this.dte(dev);
    const did = domain?.did ?? 0;
    const root = domain?.pgtable.rootPa ?? 0;
    if (domain !== null) this.tagsAssign(domain, dev, -1);
    const pasidEn = info.pasidTable !== 0 ? MOCK_DTE_PASID_EN : 0;
    // DID first, then the qword holding V and MODE: the hardware reads qword 0 to decide.
    this.mem.write64(at + 8, (did | pasidEn) >>> 0, info.pts);
    this.mem.write64(at, mockEntryLo(mode, this.levels, root, info.ats), mockEntryHi(mode, root));
    if (old instanceof MockDomain) {
      this.invalidateDid(old.did, -1);
      // Between the two stores the hardware could walk the old table under the new DID.
      if (did !== old.did) this.invalidateDid(did, -1);
    }
    if (info.ats) this.atsInvalidate(dev, -1, 0, 0);
    this.tagsUnassign(old, dev, -1);
    info.domain = domain;
    return 0;
  }

  private setDevPasid(
    domain: IommuDomain,
    dev: Device,
    pasid: number,
    old: IommuDomain | null,
  ): 0 | AttachErrno | "EOPNOTSUPP" {
    const info = this.info(dev);
    if (info.pasidTable === 0 || pasid <= 0 || pasid >= 2 ** info.pts) return "EINVAL";
    let mode: number;
    let did = 0;
    let root = 0;
    if (domain instanceof MockDomain) {
      mode = MOCK_MODE_TRANSLATE;
      did = domain.did;
      root = domain.pgtable.rootPa;
    } else if (domain === this.identityDomain) {
      mode = MOCK_MODE_IDENTITY;
    } else {
      return "EINVAL";
    }
    this.tagsAssign(domain, dev, pasid);
    const pe = info.pasidTable + pasid * MOCK_PASID_ENTRY_SIZE;
    this.mem.write64(pe + 8, did, 0);
    this.mem.write64(pe, mockEntryLo(mode, this.levels, root, info.ats), mockEntryHi(mode, root));
    if (old instanceof MockDomain) {
      if (!this.inject.skipPasidFlush) this.invalidateDid(old.did, pasid);
      // Between the two stores the hardware could walk the old table under the new DID.
      if (did !== old.did) this.invalidateDid(did, pasid);
    }
    if (old !== null && info.ats) this.atsInvalidate(dev, pasid, 0, 0);
    this.tagsUnassign(old, dev, pasid);
    info.pasids.set(pasid, domain);
    return 0;
  }

  /**
   * Tear a PASID down: clear its entry, then invalidate what the hardware and the device may
   * cache for it, so that the PASID can be reused safely once this returns.
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_tear_down_entry
   */
  private removeDevPasid(dev: Device, pasid: number, old: IommuDomain | null): 0 {
    const info = this.info(dev);
    if (info.pasidTable === 0 || pasid <= 0 || pasid >= 2 ** info.pts) return 0;
    const pe = info.pasidTable + pasid * MOCK_PASID_ENTRY_SIZE;
    this.mem.write64(pe, 0, 0);
    this.mem.write64(pe + 8, 0, 0);
    if (old instanceof MockDomain && !this.inject.skipPasidFlush)
      this.invalidateDid(old.did, pasid);
    if (info.ats) this.atsInvalidate(dev, pasid, 0, 0);
    this.tagsUnassign(old, dev, pasid);
    info.pasids.delete(pasid);
    return 0;
  }

  // --- Invalidation ----------------------------------------------------------------------------

  private invalidateDid(did: number, pasid: number): void {
    this.mmio.write32(MOCK_REG.INV_DID, did);
    if (pasid < 0) {
      this.mmio.write32(MOCK_REG.INV_PASID, 0);
      this.mmio.write32(MOCK_REG.INV_CMD, MOCK_INV_DOMAIN);
      this.invalidations.domain++;
    } else {
      this.mmio.write32(MOCK_REG.INV_PASID, mockPasidReg(pasid));
      this.mmio.write32(MOCK_REG.INV_CMD, MOCK_INV_PASID);
      this.invalidations.pasid++;
    }
  }

  private atsInvalidate(dev: Device, pasid: number, addr: number, pages: number): void {
    this.mmio.write32(MOCK_REG.INV_RID, dev.rid);
    this.mmio.write32(MOCK_REG.INV_PASID, mockPasidReg(pasid));
    mmioWrite64(this.mmio, MOCK_REG.INV_ADDR_LO, addr);
    this.mmio.write32(MOCK_REG.INV_PAGES, pages);
    this.mmio.write32(MOCK_REG.INV_CMD, MOCK_INV_ATS);
    this.invalidations.ats++;
  }

  /** One tag's range invalidation (CacheTagFlusher). */
  flushRange(tag: CacheTag, start: number, end: number, _leaf: boolean): void {
    const first = Math.floor(start / 4096);
    const pages = Math.floor(end / 4096) - first + 1;
    const big = pages > 0xffffffff;
    if (tag.kind === CACHE_TAG_IOTLB) {
      if (this.inject.skipIotlbFlush) return;
      this.mmio.write32(MOCK_REG.INV_DID, tag.id);
      this.mmio.write32(MOCK_REG.INV_PASID, mockPasidReg(tag.pasid));
      mmioWrite64(this.mmio, MOCK_REG.INV_ADDR_LO, first * 4096);
      this.mmio.write32(MOCK_REG.INV_PAGES, big ? 0 : pages);
      this.mmio.write32(
        MOCK_REG.INV_CMD,
        big ? (tag.pasid < 0 ? MOCK_INV_DOMAIN : MOCK_INV_PASID) : MOCK_INV_RANGE,
      );
      this.invalidations.range++;
    } else if (tag.kind === CACHE_TAG_DEVTLB && tag.dev !== null) {
      if (this.inject.skipDevtlbFlush) return;
      this.atsInvalidate(tag.dev, tag.pasid, first * 4096, big ? 0 : pages);
    }
  }

  /** One tag's full invalidation (CacheTagFlusher). */
  flushAll(tagOrDomain: CacheTag | IommuDomain): void {
    if (tagOrDomain instanceof IommuDomain) {
      tagOrDomain.cacheTags?.flushAll(this);
      return;
    }
    const tag = tagOrDomain;
    if (tag.kind === CACHE_TAG_IOTLB) {
      if (this.inject.skipIotlbFlush) return;
      this.invalidateDid(tag.id, tag.pasid);
    } else if (tag.kind === CACHE_TAG_DEVTLB && tag.dev !== null) {
      if (this.inject.skipDevtlbFlush) return;
      this.atsInvalidate(tag.dev, tag.pasid, 0, 0);
    }
  }

  private flushRangeNow(domain: IommuDomain, start: number, end: number): void {
    domain.cacheTags?.flushRange(this, start, end, false);
  }

  /** @kernel drivers/iommu/intel/iommu.c intel_iommu_tlb_sync */
  private iotlbSync(domain: IommuDomain, gather: IommuIotlbGather): void {
    if (!gather.isEmpty) domain.cacheTags?.flushRange(this, gather.start, gather.end, true);
    for (const pa of gather.freelist) this.frames.free(pa, 0);
    if (gather.freelist.length !== 0) gather.freelist.length = 0;
  }

  private domainFree(domain: MockDomain): void {
    // Nothing may still be cached under the DID when it is handed out again.
    this.invalidateDid(domain.did, -1);
    domain.pgtable.free();
    this.dids.free(domain.did);
  }

  // --- Queues ----------------------------------------------------------------------------------

  /**
   * Read the fault queue: every new record goes to `faultLog`. Returns how many were read.
   *
   * @kernel drivers/iommu/intel/dmar.c dmar_fault
   */
  processFaults(): number {
    const size = 2 ** QUEUE_ORDER;
    let head = this.mmio.read32(MOCK_REG.FQ_HEAD);
    const tail = this.mmio.read32(MOCK_REG.FQ_TAIL);
    let n = 0;
    while (head !== tail) {
      const at = this.fqBase + head * MOCK_FQ_RECORD_SIZE;
      const w0 = this.mem.read64(at);
      const rid = this.mem.hi & 0xffff;
      const iova = this.mem.read64Number(at + 8);
      const pasid = this.mem.read64(at + 16);
      this.faultLog.push({
        rid,
        pasid: (w0 & (1 << 16)) !== 0 ? pasid : -1,
        iova,
        kind: (w0 >>> 8) & 0xff,
        code: w0 & 0xff,
        write: (w0 & (1 << 17)) !== 0,
      });
      head = (head + 1) % size;
      n++;
    }
    this.mmio.write32(MOCK_REG.FQ_HEAD, head);
    return n;
  }

  /**
   * Drain the page request queue into the core's IOPF: each request is reported for its device;
   * one from a device that is in no fault queue is answered with failure at once.
   *
   * @kernel drivers/iommu/intel/prq.c prq_event_thread
   */
  processPageRequests(findDevice: (rid: number) => Device | undefined): number {
    const size = 2 ** QUEUE_ORDER;
    let head = this.mmio.read32(MOCK_REG.PRQ_HEAD);
    const tail = this.mmio.read32(MOCK_REG.PRQ_TAIL);
    let n = 0;
    while (head !== tail) {
      const at = this.prqBase + head * MOCK_PRQ_RECORD_SIZE;
      const w0 = this.mem.read64(at);
      const prgi = this.mem.hi & 0x1ff;
      const addr = this.mem.read64Number(at + 8);
      const pasid = this.mem.read64(at + 16);
      const pasidValid = (w0 & (1 << 16)) !== 0;
      const last = (w0 & (1 << 17)) !== 0;
      const access = (w0 >>> 18) & 7;
      const priv = (w0 & (1 << 21)) !== 0;
      head = (head + 1) % size;
      this.mmio.write32(MOCK_REG.PRQ_HEAD, head);
      n++;
      const rid = w0 & 0xffff;
      const dev = findDevice(rid);
      const fault = {
        flags:
          (pasidValid ? IOMMU_FAULT_PAGE_REQUEST_PASID_VALID : 0) |
          (last ? IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE : 0),
        pasid: pasidValid ? pasid : 0,
        grpid: prgi,
        perm:
          ((access & DMA_READ) !== 0 ? IOMMU_FAULT_PERM_READ : 0) |
          ((access & DMA_WRITE) !== 0 ? IOMMU_FAULT_PERM_WRITE : 0) |
          ((access & DMA_EXEC) !== 0 ? IOMMU_FAULT_PERM_EXEC : 0) |
          (priv ? IOMMU_FAULT_PERM_PRIV : 0),
        addr,
        privateData: [0, 0] as const,
      };
      const evt = { fault };
      // Nobody to handle it (no such device, or one in no fault queue): the group fails now.
      const reported = dev !== undefined && iommuReportDeviceFault(dev, evt) === 0;
      if (!reported && last)
        this.respond(rid, pasidValid ? pasid : NO_PASID, prgi, PRG_RESPONSE_FAILURE);
    }
    return n;
  }

  /** Domain IDs in use (leak checks). */
  get didsInUse(): number {
    return this.dids.size;
  }
}
