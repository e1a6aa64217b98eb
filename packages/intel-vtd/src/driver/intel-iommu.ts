// One VT-d remapping unit as the driver sees it (struct intel_iommu): its capabilities read from
// the registers, the root and context tables, domain IDs, the invalidation queue, the fault
// recording registers and the page request queue, and the bring-up sequence of init_dmars.

import { Ida } from "@iommu-sim/ioasid";
import { type Errno, IommuDevice, type IommuOps } from "@iommu-sim/iommu-core";
import {
  decode,
  type FrameAllocator,
  type Mmio,
  mmioWrite64,
  type PhysMemory,
  TWO32,
} from "@iommu-sim/iommu-core/platform";
import { widthToAgaw } from "../format/context-entry.js";
import { FRCD } from "../format/fault-record.js";
import {
  ECTL_IM,
  FRCD_F,
  FSTS_PFO,
  FSTS_PPF,
  FSTS_PRO,
  GCMD_QIE,
  GCMD_SRTP,
  GCMD_TE,
  GCMD_WBF,
  GSTS_QIES,
  GSTS_RTPS,
  GSTS_TES,
  GSTS_WBFS,
  PRQ_DESC_SIZE,
  RTADDR_TTM_SCALABLE,
  VTD_REG,
} from "../format/registers.js";
import { capNdoms, type DmarCaps, readDmarCaps } from "./dmar-caps.js";
import { CC_G_GLOBAL, IOTLB_G_GLOBAL, PC_G_GLOBAL, VtdQi, type VtdQiIdle } from "./qi.js";

/** Domain ID reserved for first-stage and pass-through PASID entries. @kernel drivers/iommu/intel/iommu.h FLPT_DEFAULT_DID */
export const FLPT_DEFAULT_DID = 1;
/** First domain ID handed to domains. @kernel drivers/iommu/intel/iommu.h IDA_START_DID */
export const IDA_START_DID = 2;
/** The widest address a domain is built for. @kernel drivers/iommu/intel/iommu.h DEFAULT_DOMAIN_ADDRESS_WIDTH */
export const DEFAULT_DOMAIN_ADDRESS_WIDTH = 57;
/** log2 of the page request queue's 4 KiB pages. @kernel drivers/iommu/intel/iommu.h PRQ_ORDER */
export const PRQ_ORDER = 4;
/** Page requests a device may have in flight. @kernel drivers/iommu/intel/iommu.h PRQ_DEPTH */
export const PRQ_DEPTH = ((0x1000 << PRQ_ORDER) >>> 5) >>> 0;
/** Register polls before a handshake is declared dead (the kernel panics after a timeout). */
const WAIT_LIMIT = 16;

/** One fault the driver read from the fault recording registers. */
export interface VtdFaultRecord {
  unit: string;
  sid: number;
  /** The PASID, or -1 when the request had none. */
  pasid: number;
  /** Page address (FI). */
  addr: number;
  reason: number;
  /** "read" or "write" (FRCD.T). */
  type: "read" | "write";
  priv: boolean;
  exec: boolean;
}

/** How a unit is set up. */
export interface IntelIommuOptions {
  readonly name: string;
  /** The unit's registers: all the driver touches of the hardware besides memory. */
  readonly mmio: Mmio;
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;
  /** Use scalable mode when the unit has it (default true, as Linux does with ECAP.SMTS). */
  readonly scalable?: boolean;
  /** Called while the driver polls the hardware (a status word, a handshake). */
  readonly idle?: VtdQiIdle;
}

/**
 * A unit the driver owns.
 *
 * @kernel drivers/iommu/intel/iommu.h struct intel_iommu
 */
export class IntelIommu {
  readonly name: string;
  readonly mmio: Mmio;
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;
  /** The capabilities CAP/ECAP describe. */
  readonly caps: DmarCaps;
  /** Scalable-mode tables in use. */
  readonly sm: boolean;
  /** AGAW of second-stage tables: the largest SAGAW at or below DEFAULT_DOMAIN_ADDRESS_WIDTH. */
  readonly agaw: number;
  /** The largest supported AGAW. */
  readonly msagaw: number;
  /** What the core knows the unit by; its `priv` is this object. */
  readonly iommu: IommuDevice;
  readonly domainIds = new Ida();
  /** Largest domain ID plus one. */
  readonly ndoms: number;
  /** Faults read from the fault recording registers, oldest first. */
  readonly faultLog: VtdFaultRecord[] = [];
  qi: VtdQi | null = null;
  /**
   * The unit can share CPU page tables (set at bring-up by intel_svm_check): PASIDs in scalable
   * mode, first-stage tables, and the 1 GiB pages the CPU's tables may hold.
   *
   * @kernel drivers/iommu/intel/iommu.h VTD_FLAG_SVM_CAPABLE
   */
  svmCapable = false;
  rootTable = 0;
  prqBase = 0;
  private gcmd = 0;
  private readonly idle: VtdQiIdle | null;
  private readonly frcdOffset: number;
  private readonly nfr: number;
  /** Context tables by root index (and half, in scalable mode): their frames, to free them. */
  private readonly contextTables: number[] = [];

  constructor(options: IntelIommuOptions, ops: IommuOps) {
    this.name = options.name;
    this.mmio = options.mmio;
    this.mem = options.mem;
    this.frames = options.frames;
    this.idle = options.idle ?? null;
    const m = this.mmio;
    this.caps = readDmarCaps(m);
    const caps = this.caps;
    this.sm = (options.scalable ?? true) && caps.SMTS;
    let agaw = widthToAgaw(DEFAULT_DOMAIN_ADDRESS_WIDTH);
    while (agaw >= 0 && ((caps.SAGAW >>> agaw) & 1) === 0) agaw--;
    this.agaw = agaw;
    let ms = 4;
    while (ms >= 0 && ((caps.SAGAW >>> ms) & 1) === 0) ms--;
    this.msagaw = ms;
    this.ndoms = capNdoms(caps);
    this.frcdOffset = caps.FRO * 16;
    this.nfr = caps.nfr;
    const pasids = this.sm && caps.PASID ? 2 ** (caps.PSS + 1) : 0;
    this.iommu = new IommuDevice(this.name, ops, pasids);
    this.iommu.priv = this;
  }

  /** Whether the unit can take PASID-tagged requests (scalable mode with ECAP.PASID). */
  get pasidSupported(): boolean {
    return this.sm && this.caps.PASID;
  }

  /** Whether first-stage tables are usable. */
  get firstStageSupported(): boolean {
    return this.sm && this.caps.FLTS;
  }

  /**
   * Whether paging domains go on first-stage tables by default: never in legacy mode; the one
   * stage the unit has when it has one; first stage when it has both.
   *
   * @kernel drivers/iommu/intel/iommu.c first_level_by_default
   */
  get firstLevelByDefault(): boolean {
    if (!this.sm) return false;
    if (this.caps.FLTS !== this.caps.SLTS) return this.caps.FLTS;
    return true;
  }

  /** Second-stage dirty tracking (SSADS). @kernel drivers/iommu/intel/iommu.h ssads_supported */
  get ssadsSupported(): boolean {
    return this.sm && this.caps.SLADS;
  }

  /** Nested translation. @kernel drivers/iommu/intel/iommu.h nested_supported */
  get nestedSupported(): boolean {
    return this.sm && this.caps.NEST;
  }

  /**
   * Whether page walks snoop the CPU caches: ECAP.SMPWCS in scalable mode, ECAP.C in legacy mode.
   *
   * @kernel drivers/iommu/intel/iommu.c iommu_paging_structure_coherency
   */
  get pagingStructureCoherent(): boolean {
    return this.sm ? this.caps.SMPWCS : this.caps.C;
  }

  // --- Register handshakes -------------------------------------------------------------------------

  private waitGsts(bit: number, set: boolean): 0 | "ETIMEDOUT" {
    for (let i = 0; i < WAIT_LIMIT; i++) {
      const sts = this.mmio.read32(VTD_REG.GSTS);
      if (((sts & bit) !== 0) === set) return 0;
      this.idle?.();
    }
    return "ETIMEDOUT";
  }

  /**
   * Flush the write buffer when the unit asks for it: CAP.RWBF only (Linux's other reason,
   * rwbf_quirk, is a chipset list the model has no use for). Caching mode is no reason: what it
   * needs is invalidation, which the callers issue instead.
   *
   * @kernel drivers/iommu/intel/iommu.c iommu_flush_write_buffer
   */
  flushWriteBuffer(): void {
    if (!this.caps.RWBF) return;
    this.mmio.write32(VTD_REG.GCMD, (this.gcmd | GCMD_WBF) >>> 0);
    for (let i = 0; i < WAIT_LIMIT; i++) {
      if ((this.mmio.read32(VTD_REG.GSTS) & GSTS_WBFS) === 0) return;
      this.idle?.();
    }
  }

  /**
   * Bring the unit up as init_dmars and intel_iommu_init do: pending faults cleared and queued
   * invalidation (re)enabled, the root table latched (scalable mode when in use) and, without
   * ECAP.ESRTPS, the global context-cache, PASID-cache and IOTLB invalidations, each with its own
   * wait; the page request queue when ECAP.PRS (whatever the mode); fault interrupts; translation;
   * and only then the protected memory regions turned off. `'ENODEV'` without queued
   * invalidation or a usable AGAW; `'ENOMEM'`; `'ETIMEDOUT'` when a handshake never completes.
   *
   * The kernel probes the boot-time devices between the interrupts and translation; devices of
   * the model come later, as hot-plugged ones do.
   *
   * @kernel drivers/iommu/intel/iommu.c init_dmars
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_init
   */
  init(): 0 | "ENODEV" | "ENOMEM" | "ETIMEDOUT" {
    const caps = this.caps;
    if (!caps.QI || this.agaw < 0) return "ENODEV";
    // Domain ID 0 tags invalid translations under caching mode and marks "none"; DID 1 is the
    // one of first-stage and pass-through entries.
    this.domainIds.allocRange(0, 0);
    if (this.sm) this.domainIds.allocRange(FLPT_DEFAULT_DID, FLPT_DEFAULT_DID);

    // intel_iommu_init_qi: faults left from before are read first, a queue left enabled is
    // turned off, then dmar_enable_qi. Descriptors are 256 bits whenever the unit has scalable
    // mode (ECAP.SMTS), used or not.
    this.processFaults();
    if ((this.mmio.read32(VTD_REG.GSTS) & GSTS_QIES) !== 0) {
      this.mmio.write32(VTD_REG.GCMD, this.gcmd >>> 0);
      if (this.waitGsts(GSTS_QIES, false) !== 0) return "ETIMEDOUT";
    }
    const qi = VtdQi.alloc(this.mem, this.mmio, this.frames, caps.SMTS);
    if (typeof qi === "string") return qi;
    qi.drainRead = caps.DRD;
    qi.drainWrite = caps.DWD;
    qi.idle = this.idle;
    this.qi = qi;
    this.gcmd |= GCMD_QIE;
    this.mmio.write32(VTD_REG.GCMD, this.gcmd >>> 0);
    if (this.waitGsts(GSTS_QIES, true) !== 0) return "ETIMEDOUT";

    // iommu_alloc_root_entry, iommu_set_root_entry.
    const root = this.frames.alloc(0);
    if (typeof root !== "number") return "ENOMEM";
    this.mem.fill(root, 4096, 0);
    this.rootTable = root;
    this.flushWriteBuffer();
    this.setRootEntry();
    if (this.waitGsts(GSTS_RTPS, true) !== 0) return "ETIMEDOUT";
    if (!caps.ESRTPS) {
      // flush_context, qi_flush_pasid_cache and flush_iotlb: one qi_submit_sync each.
      qi.addContext(CC_G_GLOBAL, 0, 0, 0);
      qi.submit();
      if (this.sm) {
        qi.addPasidCache(PC_G_GLOBAL, 0, 0);
        qi.submit();
      }
      qi.addIotlb(IOTLB_G_GLOBAL, 0, 0, 0, false);
      qi.submit();
    }
    this.flushWriteBuffer();

    // intel_iommu_enable_prq, for every unit with ECAP.PRS: PQH = PQT = 0, then PQA, then the
    // event interrupt.
    if (caps.PRS) {
      const prq = this.frames.alloc(PRQ_ORDER);
      if (typeof prq !== "number") return "ENOMEM";
      this.mem.fill(prq, 4096 << PRQ_ORDER, 0);
      this.prqBase = prq;
      mmioWrite64(this.mmio, VTD_REG.PQH, 0);
      mmioWrite64(this.mmio, VTD_REG.PQT, 0);
      mmioWrite64(this.mmio, VTD_REG.PQA, prq + PRQ_ORDER);
      this.mmio.write32(VTD_REG.PECTL, 0);
    }
    // dmar_set_interrupt: fault events unmasked; invalidation completion stays polled.
    this.mmio.write32(VTD_REG.FECTL, 0);

    // intel_iommu_init: iommu_enable_translation, then iommu_disable_protect_mem_regions.
    this.gcmd |= GCMD_TE;
    this.mmio.write32(VTD_REG.GCMD, this.gcmd >>> 0);
    if (this.waitGsts(GSTS_TES, true) !== 0) return "ETIMEDOUT";
    if (caps.PLMR || caps.PHMR) this.mmio.write32(VTD_REG.PMEN, 0);
    return 0;
  }

  /**
   * Point the unit at the root table (TTM selects scalable mode) and latch it with SRTP.
   *
   * @kernel drivers/iommu/intel/iommu.c iommu_set_root_entry
   */
  private setRootEntry(): void {
    const rta = this.rootTable + (this.sm ? RTADDR_TTM_SCALABLE << 10 : 0);
    this.mmio.write32(VTD_REG.RTADDR, rta >>> 0);
    this.mmio.write32(VTD_REG.RTADDR + 4, Math.floor(rta / TWO32));
    this.mmio.write32(VTD_REG.GCMD, (this.gcmd | GCMD_SRTP) >>> 0);
  }

  /**
   * Turn the unit off and give its tables back: translation, then queued invalidation disabled.
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_shutdown
   */
  shutdown(): void {
    this.gcmd &= ~GCMD_TE;
    this.mmio.write32(VTD_REG.GCMD, this.gcmd >>> 0);
    this.waitGsts(GSTS_TES, false);
    this.gcmd &= ~GCMD_QIE;
    this.mmio.write32(VTD_REG.GCMD, this.gcmd >>> 0);
    this.waitGsts(GSTS_QIES, false);
    if (this.prqBase !== 0) {
      mmioWrite64(this.mmio, VTD_REG.PQA, 0);
      this.frames.free(this.prqBase, PRQ_ORDER);
      this.prqBase = 0;
    }
    this.qi?.free(this.frames);
    this.qi = null;
    for (const ct of this.contextTables) if (ct !== undefined) this.frames.free(ct, 0);
    this.contextTables.length = 0;
    if (this.rootTable !== 0) this.frames.free(this.rootTable, 0);
    this.rootTable = 0;
  }

  // --- Context tables --------------------------------------------------------------------------

  /**
   * Physical address of the context entry of (bus, devfn), allocating the context table when
   * `alloc`; 0 when it has none (or no frame is left).
   *
   * @kernel drivers/iommu/intel/iommu.c iommu_context_addr
   */
  contextAddr(bus: number, devfn: number, alloc: boolean): number {
    let rootAt = this.rootTable + bus * 16;
    let index = devfn;
    let slot = bus;
    if (this.sm) {
      // The lower half (devfn 0-0x7f) and upper half each have a table of 128 256-bit entries.
      if (devfn >= 0x80) {
        rootAt += 8;
        index = devfn - 0x80;
        slot = 256 + bus;
      }
      index *= 2;
    }
    const lo = this.mem.read64(rootAt);
    const hi = this.mem.hi;
    let table: number;
    if ((lo & 1) !== 0) {
      table = (lo & 0xfffff000) >>> 0;
      table += hi * TWO32;
    } else {
      if (!alloc) return 0;
      const frame = this.frames.alloc(0);
      if (typeof frame !== "number") return 0;
      this.mem.fill(frame, 4096, 0);
      this.contextTables[slot] = frame;
      this.mem.write64(rootAt, (frame | 1) >>> 0, Math.floor(frame / TWO32));
      table = frame;
    }
    return table + index * 16;
  }

  /**
   * Context tables allocated: they stay until the unit is shut down, as in the kernel (so a leak
   * check counts them as the unit's own memory).
   */
  get contextTableFrames(): number {
    let n = 0;
    for (const ct of this.contextTables) if (ct !== undefined) n++;
    return n;
  }

  // --- Domain IDs ------------------------------------------------------------------------------

  /** A free domain ID, or 'ENOSPC'. @kernel drivers/iommu/intel/iommu.c domain_attach_iommu */
  allocDid(): number | "ENOSPC" {
    const id = this.domainIds.allocRange(IDA_START_DID, this.ndoms - 1);
    return typeof id === "number" ? id : "ENOSPC";
  }

  freeDid(did: number): void {
    this.domainIds.free(did);
  }

  /** Domain IDs held by domains (the two reserved ones not counted). */
  get didsInUse(): number {
    return this.domainIds.size - (this.sm ? 2 : 1);
  }

  // --- Faults ------------------------------------------------------------------------------------

  /**
   * Read every pending fault record into `faultLog`, clearing each F bit and then the
   * overflow/pending bits, as the fault interrupt handler does; with no record pending (PPF
   * clear) FSTS is left as it is. Returns the records read.
   *
   * @kernel drivers/iommu/intel/dmar.c dmar_fault
   */
  processFaults(): number {
    const m = this.mmio;
    const fsts = m.read32(VTD_REG.FSTS);
    if ((fsts & FSTS_PPF) === 0) return 0;
    let n = 0;
    let index = (fsts >>> 8) & 0xff;
    for (let i = 0; i < this.nfr; i++) {
      const at = this.frcdOffset + index * 16;
      const w3 = m.read32(at + 12);
      if ((w3 & FRCD_F) === 0) break;
      const words = [m.read32(at), m.read32(at + 4), m.read32(at + 8), w3];
      const f = decode(FRCD, words);
      const pp = f.PP === 1;
      this.faultLog.push({
        unit: this.name,
        sid: f.SID as number,
        pasid: pp ? (f.PV as number) : -1,
        addr: Number(f.FI),
        reason: f.FR as number,
        type: f.T === 1 ? "read" : "write",
        priv: f.PRIV === 1,
        exec: f.EXE === 1,
      });
      m.write32(at + 12, FRCD_F);
      n++;
      index = (index + 1) % this.nfr;
    }
    m.write32(VTD_REG.FSTS, FSTS_PFO | FSTS_PPF | FSTS_PRO);
    return n;
  }

  /** Submit what the queue has staged; errors are counted in the queue's stats (the kernel WARNs). */
  submit(fence = false): 0 | Errno {
    return this.qi === null ? "ENODEV" : this.qi.submit(fence);
  }

  /** Bytes per page request descriptor (for the PRQ reader). */
  static readonly PRQ_DESC_SIZE = PRQ_DESC_SIZE;
  /** The page request interrupt mask bit (PECTL.IM). */
  static readonly ECTL_IM = ECTL_IM;
}
