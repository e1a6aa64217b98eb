// One VT-d DMA-remapping hardware unit (a DRHD): its register file with the real handshakes, the
// translation of device requests through the tables in memory and the unit's caches, queued
// and register-based invalidation, fault recording and the page request queue.

import {
  AT_TRANSLATED,
  AT_TRANSLATION_REQUEST,
  type DevicePort,
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  FaultKind,
  type IommuHardware,
  NO_PASID,
  type PageRequest,
  PRG_INVALID_REQUEST,
  PRG_SUCCESS,
  type TranslationRequest,
  type TranslationResult,
  XLATE_FAULT,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
import { fieldOf, type Mmio, type PhysMemory, type Trace } from "@iommu-sim/iommu-core/platform";
import { VTD_FR } from "../format/fault-record.js";
import {
  CC_G_DEVICE,
  CC_G_DOMAIN,
  CC_G_GLOBAL,
  CC_INV_DESC,
  DEV_TLB_INV_DESC,
  type DevTlbSpan,
  decodeDevTlbRange,
  INV_DESC_TYPE,
  INV_WAIT_DESC,
  IOTLB_G_DOMAIN,
  IOTLB_G_GLOBAL,
  IOTLB_G_PAGE,
  IOTLB_INV_DESC,
  invDescLayout,
  invDescType,
  PC_G_DOMAIN,
  PC_G_GLOBAL,
  PC_G_PASID,
  PC_INV_DESC,
  PDEV_TLB_INV_DESC,
  PGRP_RESP_DESC,
  PIOTLB_G_PAGE,
  PIOTLB_G_PASID,
  PIOTLB_INV_DESC,
} from "../format/inv-desc.js";
import { PGTT_FL, PGTT_PT, PGTT_SL } from "../format/pasid-entry.js";
import {
  ECTL_IM,
  ECTL_IP,
  FSTS_ICE,
  FSTS_IQE,
  FSTS_ITE,
  GCMD_CFI,
  GCMD_EAFL,
  GCMD_IRE,
  GCMD_QIE,
  GCMD_SFL,
  GCMD_SIRTP,
  GCMD_SRTP,
  GCMD_TE,
  GSTS_AFLS,
  GSTS_CFIS,
  GSTS_FLS,
  GSTS_IRES,
  GSTS_IRTPS,
  GSTS_QIES,
  GSTS_RTPS,
  GSTS_TES,
  IVA_REG,
  RTADDR_TTM_LEGACY,
  RTADDR_TTM_SCALABLE,
  VTD_REG,
} from "../format/registers.js";
import {
  resolveVtdCacheConfig,
  type VtdCacheConfig,
  type VtdCacheConfigInput,
} from "./cache-policy.js";
import { VtdContextCache } from "./context-cache.js";
import { FaultRecorder } from "./fault-recorder.js";
import {
  VTD_KIND_FIRST_STAGE,
  VTD_KIND_NESTED,
  VTD_KIND_SECOND_STAGE,
  VTD_PASID_NONE,
  VtdIotlb,
  type VtdIotlbEntry,
} from "./iotlb.js";
import { PageRequestQueue, PRQ_OVERFLOW, PRQ_QUEUED } from "./page-request-queue.js";
import { VtdPagingStructureCache, type VtdPscEntry } from "./paging-structure-cache.js";
import { VtdPasidCache } from "./pasid-cache.js";
import {
  DEFAULT_VTD_CAPS,
  type VtdCapabilities,
  validateVtdCaps,
  vtdCapValue,
  vtdEcapValue,
  vtdFrcdOffset,
  vtdIotlbRegOffset,
  vtdNumFaultRecords,
  vtdVerValue,
} from "./vtd-caps.js";
import {
  decodeDevConfig,
  decodePasidConfig,
  type VtdDecodeCaps,
  VtdDevConfig,
  VtdPasidConfig,
} from "./vtd-config.js";
import { vtdFaultKind, vtdFaultQualified, walkFaultReason } from "./vtd-fault.js";
import {
  P_DIRTY,
  P_EXEC,
  P_READ,
  P_SS_WRITE,
  P_USER,
  P_WRITE,
  VtdWalker,
  W_NOT_PRESENT,
  W_OK,
} from "./vtd-walk.js";

/** Where an interrupt message of the unit comes from. */
export type VtdInterruptSource = "fault" | "invalidation" | "page-request";

/** How to build a unit. */
export interface VtdUnitOptions {
  /** Instance name ("dmar0"). */
  readonly name?: string;
  readonly mem: PhysMemory;
  /** Capabilities (CAP/ECAP); missing ones from DEFAULT_VTD_CAPS. */
  readonly caps?: Partial<VtdCapabilities>;
  /** Cache sizes and policy; missing ones from the policy's defaults (maximal unless given). */
  readonly cache?: VtdCacheConfigInput;
  /** Host address width (the platform's, from the DMAR table): default 46. */
  readonly haw?: number;
  /**
   * Process the invalidation queue as soon as IQT moves (default true). With false, descriptors
   * wait for `processInvalidations`, so a test can interleave driver and hardware steps.
   */
  readonly autoProcessQueue?: boolean;
  readonly trace?: Trace | null;
  /** Called when the unit sends an interrupt message (fault, invalidation completion, page request). */
  readonly onInterrupt?: (source: VtdInterruptSource) => void;
}

/** Counters of a unit. */
export interface VtdUnitStats {
  translations: number;
  faults: number;
  /** Faults not recorded because FPD was set. */
  faultsSuppressed: number;
  descriptors: number;
  invalidationErrors: number;
  pageRequests: number;
  pageRequestsDropped: number;
  pageResponses: number;
  interrupts: number;
}

const PAGE = 4096;
const TWO20 = 1048576;
const TWO32 = 4294967296;
/** Output frames 0xFEE00-0xFEEFF are the interrupt address range. */
const IRQ_FIRST_PFN = 0xfee00;
const IRQ_LAST_PFN = 0xfeeff;

// Register fields the handshakes read, from the layouts.
const IQEI_ILLEGAL_TAIL = 1;
const IQEI_FETCH = 2;
const IQEI_INVALID_TYPE = 3;
const IQEI_RESERVED = 4;
const IQEI_WIDTH = 5;
const IQEI_TAIL_MISALIGNED = 6;

const G_CC = fieldOf(CC_INV_DESC, "G");
const G_IOTLB = fieldOf(IOTLB_INV_DESC, "G");
const G_PIOTLB = fieldOf(PIOTLB_INV_DESC, "G");
const G_PC = fieldOf(PC_INV_DESC, "G");
/** IH of types 2 and 6 (qw1 low word) and of the IVA register. */
const IOTLB_IH = fieldOf(IOTLB_INV_DESC, "IH").inPlace;
const PIOTLB_IH = fieldOf(PIOTLB_INV_DESC, "IH").inPlace;
const IVA_IH = fieldOf(IVA_REG, "IH").inPlace;
const WAIT_IF = fieldOf(INV_WAIT_DESC, "IF").inPlace;
const WAIT_SW = fieldOf(INV_WAIT_DESC, "SW").inPlace;
const WAIT_PD = fieldOf(INV_WAIT_DESC, "PD").inPlace;
const DEVTLB_S = fieldOf(DEV_TLB_INV_DESC, "S").inPlace;
const PDEVTLB_G = fieldOf(PDEV_TLB_INV_DESC, "G").inPlace;
const PDEVTLB_S = fieldOf(PDEV_TLB_INV_DESC, "S").inPlace;
const RESP_PP = fieldOf(PGRP_RESP_DESC, "PP").inPlace;
const RESP_RC = fieldOf(PGRP_RESP_DESC, "RC");
const RESP_PRGI = fieldOf(PGRP_RESP_DESC, "PRGI");

/** `resolve`'s answer for a request a protected memory region blocks (not a fault reason). */
const PMR_BLOCKED = -1;

/** Pages of 2^am, am < 64. */
const AM_PAGES = new Float64Array(64);
for (let i = 0; i < 64; i++) AM_PAGES[i] = 2 ** i;

/**
 * A VT-d remapping unit. Drivers reach it only through `read32`/`write32` (its MMIO registers)
 * and memory; devices through `translate` and `pageRequest`.
 *
 * @spec Intel VT-d Architecture Specification chapters 3-7, 9-11
 */
export class VtdUnit implements IommuHardware, Mmio {
  readonly name: string;
  readonly mem: PhysMemory;
  readonly caps: VtdCapabilities;
  readonly cacheConfig: VtdCacheConfig;
  readonly haw: number;
  /** Pages below 2^MGAW: a fault record keeps the page number modulo this. */
  private readonly mgawPages: number;
  readonly stats: VtdUnitStats = {
    translations: 0,
    faults: 0,
    faultsSuppressed: 0,
    descriptors: 0,
    invalidationErrors: 0,
    pageRequests: 0,
    pageRequestsDropped: 0,
    pageResponses: 0,
    interrupts: 0,
  };
  trace: Trace | null;
  autoProcessQueue: boolean;
  /**
   * Sees every invalidation-queue descriptor the unit carried out (its words, 8 of them; 256-bit
   * when `wide`), after it took effect: an oracle keeps the history. Null: no cost.
   */
  descriptorObserver: ((words: Uint32Array, wide: boolean) => void) | null = null;

  readonly iotlb: VtdIotlb;
  readonly contextCache: VtdContextCache<VtdDevConfig>;
  readonly pasidCache: VtdPasidCache<VtdPasidConfig>;
  readonly psc: VtdPagingStructureCache;
  readonly faults: FaultRecorder;
  readonly prq: PageRequestQueue;
  readonly walker: VtdWalker;

  private readonly onInterrupt: ((source: VtdInterruptSource) => void) | null;
  private readonly ports = new Map<number, DevicePort>();
  private readonly decodeCaps: VtdDecodeCaps;
  private readonly scratchDev = new VtdDevConfig();
  private readonly scratchPasid = new VtdPasidConfig();
  private readonly span: DevTlbSpan = { pfn: 0, pages: 0 };
  private readonly desc = new Uint32Array(8);
  /** Cache not-present and invalid entries (caching mode, maximal policy). */
  private readonly cacheNegative: boolean;

  // Register state.
  private readonly capLo: number;
  private readonly capHi: number;
  private readonly ecapLo: number;
  private readonly ecapHi: number;
  private readonly ver: number;
  private readonly iroBase: number;
  private readonly froBase: number;
  private readonly froEnd: number;
  private readonly plain = new Uint32Array(0x1000 / 4);
  private gsts = 0;
  private rtaddrLo = 0;
  private rtaddrHi = 0;
  /** The root table and mode latched by the last SRTP. */
  private rta = 0;
  private scalable = false;
  /** 0 when the latched RTADDR is usable, else the fault every request gets. */
  private rootFault = 0;
  private iqh = 0;
  private iqt = 0;
  private iqaLo = 0;
  private iqaHi = 0;
  private ics = 0;
  private iectl = ECTL_IM;
  private iqerLo = 0;
  private iqerHi = 0;
  private fstsIqe = 0;
  // Protected memory regions (CAP.PLMR / CAP.PHMR): register values and the decoded ranges.
  private pmen = 0;
  private plmBase = 0;
  private plmLimit = 0;
  private phmBaseLo = 0;
  private phmBaseHi = 0;
  private phmLimitLo = 0;
  private phmLimitHi = 0;
  /** EPM is set and at least one region is enabled: DMA must be range-checked. */
  private pmrActive = false;
  /** First and last protected page frame of the low and high regions (last < first: disabled). */
  private plmFirst = 0;
  private plmLast = -1;
  private phmFirst = 0;
  private phmLast = -1;

  // The last resolution's answer.
  private rPfn = 0;
  private rPerm = 0;
  private rShift = 12;
  private rFpd = false;
  /** The request being resolved is a supervisor write that WPE=0 lets past first-stage R/W. */
  private supervisorWrite = false;

  constructor(options: VtdUnitOptions) {
    this.name = options.name ?? "dmar0";
    this.mem = options.mem;
    const caps: VtdCapabilities = { ...DEFAULT_VTD_CAPS, ...options.caps };
    const problem = validateVtdCaps(caps);
    if (problem !== null) throw new RangeError(`VtdUnit ${this.name}: ${problem}`);
    this.caps = caps;
    const cache = resolveVtdCacheConfig({ ...options.cache, cachingMode: caps.cachingMode });
    if (typeof cache === "string") throw new RangeError(`VtdUnit ${this.name}: ${cache}`);
    this.cacheConfig = cache;
    this.cacheNegative = cache.cacheNotPresent;
    this.haw = options.haw ?? 46;
    if (!Number.isInteger(this.haw) || this.haw < 32 || this.haw > 52) {
      throw new RangeError(`VtdUnit ${this.name}: host address width ${this.haw} outside 32..52`);
    }
    this.mgawPages = 2 ** (caps.mgaw - 12);
    this.trace = options.trace ?? null;
    this.autoProcessQueue = options.autoProcessQueue ?? true;
    this.onInterrupt = options.onInterrupt ?? null;
    [this.capLo, this.capHi] = vtdCapValue(caps);
    [this.ecapLo, this.ecapHi] = vtdEcapValue(caps);
    this.ver = vtdVerValue(caps);
    this.iroBase = vtdIotlbRegOffset(caps);
    this.froBase = vtdFrcdOffset(caps);
    this.froEnd = this.froBase + vtdNumFaultRecords(caps) * 16;
    this.decodeCaps = {
      haw: this.haw,
      sagaw: caps.sagaw,
      mgawWidth: caps.mgaw,
      passThrough: caps.passThrough,
      deviceTlb: caps.deviceTlb,
      flts: caps.flts,
      slts: caps.slts,
      nest: caps.nest,
      fl5lp: caps.firstStage5Level,
      rps: caps.rps,
      pasidBits: caps.pasid ? caps.pss + 1 : 0,
      ers: caps.ers,
      srs: caps.srs,
    };
    this.iotlb = new VtdIotlb(cache.iotlbSets, cache.iotlbWays);
    this.contextCache = new VtdContextCache<VtdDevConfig>(cache.contextEntries);
    this.pasidCache = new VtdPasidCache<VtdPasidConfig>(cache.pasidEntries);
    this.psc = new VtdPagingStructureCache(cache.pscEntries);
    this.faults = new FaultRecorder(
      vtdNumFaultRecords(caps),
      () => this.interrupt("fault"),
      () => this.fstsIqe,
    );
    this.prq = new PageRequestQueue(this.mem, () => this.interrupt("page-request"));
    this.walker = new VtdWalker(this.mem, {
      haw: this.haw,
      sllps: (caps.superpages.includes("2M") ? 1 : 0) | (caps.superpages.includes("1G") ? 2 : 0),
      fl1gp: caps.firstStage1G,
      snoopControl: caps.snoopControl,
      staleTm:
        caps.deviceTlb &&
        (caps.version.major < 3 || (caps.version.major === 3 && caps.version.minor < 2)),
    });
  }

  // --- Registers ---------------------------------------------------------------------------------

  /** A 32-bit register load. Unimplemented and misaligned offsets read 0. */
  read32(offset: number): number {
    if (!Number.isInteger(offset) || offset < 0 || offset >= 0x1000 || (offset & 3) !== 0) return 0;
    if (offset >= this.froBase && offset < this.froEnd)
      return this.faults.read32(offset - this.froBase);
    switch (offset) {
      case VTD_REG.VER:
        return this.ver;
      case VTD_REG.CAP:
        return this.capLo;
      case VTD_REG.CAP + 4:
        return this.capHi;
      case VTD_REG.ECAP:
        return this.ecapLo;
      case VTD_REG.ECAP + 4:
        return this.ecapHi;
      case VTD_REG.GCMD:
        return 0; // write-only
      case VTD_REG.GSTS:
        return this.gsts >>> 0;
      case VTD_REG.RTADDR:
        return this.rtaddrLo;
      case VTD_REG.RTADDR + 4:
        return this.rtaddrHi;
      case VTD_REG.FSTS:
        return (this.faults.fsts() | this.fstsIqe) >>> 0;
      case VTD_REG.FECTL:
        return this.faults.readFectl();
      case VTD_REG.IQH:
        return this.iqh;
      case VTD_REG.IQT:
        return this.iqt;
      case VTD_REG.IQA:
        return this.iqaLo;
      case VTD_REG.IQA + 4:
        return this.iqaHi;
      case VTD_REG.ICS:
        return this.ics;
      case VTD_REG.IECTL:
        return this.iectl >>> 0;
      case VTD_REG.IQER:
        return this.iqerLo;
      case VTD_REG.IQER + 4:
        return this.iqerHi;
      case VTD_REG.PQH:
      case VTD_REG.PQH + 4:
      case VTD_REG.PQT:
      case VTD_REG.PQT + 4:
      case VTD_REG.PQA:
      case VTD_REG.PQA + 4:
      case VTD_REG.PRS:
      case VTD_REG.PECTL:
      case VTD_REG.PEDATA:
      case VTD_REG.PEADDR:
      case VTD_REG.PEUADDR:
        return this.caps.prs ? this.prq.read32(offset) : 0;
      case VTD_REG.PMEN:
        // PRS (bit 0) follows EPM (bit 31) at once: enabling completes immediately.
        return this.pmen !== 0 ? 0x80000001 : 0;
      case VTD_REG.PLMBASE:
        return this.plmBase;
      case VTD_REG.PLMLIMIT:
        return this.plmLimit;
      case VTD_REG.PHMBASE:
        return this.phmBaseLo;
      case VTD_REG.PHMBASE + 4:
        return this.phmBaseHi;
      case VTD_REG.PHMLIMIT:
        return this.phmLimitLo;
      case VTD_REG.PHMLIMIT + 4:
        return this.phmLimitHi;
      default:
        return this.plain[offset >>> 2] as number;
    }
  }

  /** A 32-bit register store. Read-only and unimplemented registers ignore it. */
  write32(offset: number, value: number): void {
    if (!Number.isInteger(offset) || offset < 0 || offset >= 0x1000 || (offset & 3) !== 0) return;
    const v = value >>> 0;
    if (offset >= this.froBase && offset < this.froEnd) {
      this.faults.write32(offset - this.froBase, v);
      return;
    }
    if (offset === this.iroBase || offset === this.iroBase + 4) {
      this.plain[offset >>> 2] = v;
      return;
    }
    if (offset === this.iroBase + 8) {
      this.plain[offset >>> 2] = v;
      return;
    }
    if (offset === this.iroBase + 12) {
      this.writeIotlbReg(v);
      return;
    }
    switch (offset) {
      case VTD_REG.VER:
      case VTD_REG.CAP:
      case VTD_REG.CAP + 4:
      case VTD_REG.ECAP:
      case VTD_REG.ECAP + 4:
      case VTD_REG.GSTS:
      case VTD_REG.IQH:
      case VTD_REG.IQH + 4:
      case VTD_REG.IQER:
      case VTD_REG.IQER + 4:
        return;
      case VTD_REG.GCMD:
        this.writeGcmd(v);
        return;
      case VTD_REG.RTADDR:
        this.rtaddrLo = v & 0xfffffc00;
        return;
      case VTD_REG.RTADDR + 4:
        this.rtaddrHi = v;
        return;
      case VTD_REG.CCMD:
        this.plain[offset >>> 2] = v;
        return;
      case VTD_REG.PMEN:
      case VTD_REG.PLMBASE:
      case VTD_REG.PLMLIMIT:
      case VTD_REG.PHMBASE:
      case VTD_REG.PHMBASE + 4:
      case VTD_REG.PHMLIMIT:
      case VTD_REG.PHMLIMIT + 4:
        this.writeProtectedMemory(offset, v);
        return;
      case VTD_REG.CCMD + 4:
        this.writeCcmdHigh(v);
        return;
      case VTD_REG.FSTS:
        this.writeFsts(v);
        return;
      case VTD_REG.FECTL:
        this.faults.writeFectl(v);
        return;
      case VTD_REG.FEADDR:
      case VTD_REG.IEADDR:
        // Message addresses are dword aligned: bits 1:0 are reserved.
        this.plain[offset >>> 2] = v & ~3;
        return;
      case VTD_REG.IQT:
        this.iqt = v & 0x7fff0;
        if (this.autoProcessQueue) this.processInvalidations();
        return;
      case VTD_REG.IQT + 4:
        return;
      case VTD_REG.IQA:
        // Software must not move the queue while QI is on; this unit reads IQA afresh for every
        // fetch (QEMU latches it at enable): both are within the spec.
        this.iqaLo = v & 0xfffff807;
        return;
      case VTD_REG.IQA + 4:
        this.iqaHi = v;
        return;
      case VTD_REG.ICS:
        if ((v & 1) !== 0) {
          this.ics = 0;
          this.iectl &= ~ECTL_IP;
        }
        return;
      case VTD_REG.IECTL:
        this.iectl = ((this.iectl & ECTL_IP) | (v & ECTL_IM)) >>> 0;
        if ((this.iectl & (ECTL_IP | ECTL_IM)) === ECTL_IP) {
          this.iectl = 0;
          this.interrupt("invalidation");
        }
        return;
      case VTD_REG.PQH:
      case VTD_REG.PQH + 4:
      case VTD_REG.PQT:
      case VTD_REG.PQT + 4:
      case VTD_REG.PQA:
      case VTD_REG.PQA + 4:
      case VTD_REG.PRS:
      case VTD_REG.PECTL:
      case VTD_REG.PEDATA:
      case VTD_REG.PEADDR:
      case VTD_REG.PEUADDR:
        if (this.caps.prs) this.prq.write32(offset, v);
        return;
      default:
        this.plain[offset >>> 2] = v;
    }
  }

  /**
   * PMEN and the protected low/high memory base and limit registers. Without CAP.PLMR and
   * CAP.PHMR all of them are read-only 0; the base/limit pair of a region the unit lacks is too.
   * Base and limit keep bits 31:20 (low) and HAW-1:20 (high), so regions have 1 MiB granularity
   * (N = 19; the datasheets show 31:20 or 31:21): the base decodes with bits 19:0 zero, the limit
   * with them all ones, and a limit below its base disables that region. Writes while PMEN.PRS is
   * set are taken as they come (software must not make them).
   *
   * @spec Intel VT-d Architecture Specification 10.4 PMEN_REG, PLMBASE_REG, PLMLIMIT_REG, PHMBASE_REG, PHMLIMIT_REG (as reprinted in the 2nd- and 12th-gen Core datasheets vol. 2)
   */
  private writeProtectedMemory(offset: number, v: number): void {
    const caps = this.caps;
    const low = caps.plmr;
    const high = caps.phmr;
    switch (offset) {
      case VTD_REG.PMEN:
        if (low || high) this.pmen = v & 0x80000000 ? 1 : 0;
        break;
      case VTD_REG.PLMBASE:
        if (low) this.plmBase = (v & 0xfff00000) >>> 0;
        break;
      case VTD_REG.PLMLIMIT:
        if (low) this.plmLimit = (v & 0xfff00000) >>> 0;
        break;
      case VTD_REG.PHMBASE:
        if (high) this.phmBaseLo = this.haw > 32 ? (v & 0xfff00000) >>> 0 : 0;
        break;
      case VTD_REG.PHMBASE + 4:
        if (high) this.phmBaseHi = v & this.hawHiMask();
        break;
      case VTD_REG.PHMLIMIT:
        if (high) this.phmLimitLo = this.haw > 32 ? (v & 0xfff00000) >>> 0 : 0;
        break;
      case VTD_REG.PHMLIMIT + 4:
        if (high) this.phmLimitHi = v & this.hawHiMask();
        break;
    }
    this.plmFirst = this.plmBase / PAGE;
    this.plmLast = low ? (this.plmLimit + 0xfffff - 0xfff) / PAGE : -1;
    this.phmFirst = (this.phmBaseHi * TWO32 + this.phmBaseLo) / PAGE;
    this.phmLast = high ? (this.phmLimitHi * TWO32 + this.phmLimitLo + 0xfffff - 0xfff) / PAGE : -1;
    this.pmrActive =
      this.pmen !== 0 &&
      ((low && this.plmLast >= this.plmFirst) || (high && this.phmLast >= this.phmFirst));
  }

  /** Bits of a high register dword below the host address width. */
  private hawHiMask(): number {
    return this.haw >= 52 ? 0xfffff : (2 ** (this.haw - 32) - 1) | 0;
  }

  /** Whether output page `pfn` lies in an enabled protected memory region (PMEN.EPM set). */
  private protectedPage(pfn: number): boolean {
    return (
      (pfn >= this.plmFirst && pfn <= this.plmLast) || (pfn >= this.phmFirst && pfn <= this.phmLast)
    );
  }

  /**
   * GCMD: each persistent enable acts when its bit differs from the status; one-shot commands
   * act whenever written as 1. Commands complete at once, so software's poll of GSTS succeeds on
   * its first read. Choices where the spec leaves room:
   * - TE off: requests pass untranslated (protected memory regions still apply) and the fault
   *   recording index restarts at 0 (as QEMU); TE on does not re-latch RTADDR.
   * - SRTP while TE is set latches the new root table at once (the spec allows it; software then
   *   invalidates the context cache and IOTLB globally, which ESRTPS does here by itself).
   * - QIE off with descriptors still between IQH and IQT drops them: IQH reads 0 at once (software
   *   must wait for the queue to drain before disabling it).
   * - EAFL and SFL without CAP.AFL, and IRE, SIRTP and CFI without ECAP.IR, are ignored (their
   *   status bits stay 0).
   *
   * @spec Intel VT-d Architecture Specification 11.4.4 (Global Command Register)
   */
  private writeGcmd(v: number): void {
    const changed = (this.gsts ^ v) >>> 0;
    if ((v & GCMD_SRTP) !== 0) this.setRootTablePointer();
    if ((changed & GCMD_TE) !== 0) {
      if ((v & GCMD_TE) !== 0) this.gsts |= GSTS_TES;
      else this.gsts &= ~GSTS_TES;
      // The fault recording index restarts when remapping stops.
      if ((v & GCMD_TE) === 0) this.faults.resetIndex();
    }
    if ((changed & GCMD_QIE) !== 0 && this.caps.qi) {
      if ((v & GCMD_QIE) !== 0) {
        this.iqh = 0;
        this.gsts |= GSTS_QIES;
        if (this.autoProcessQueue) this.processInvalidations();
      } else {
        // IQH reads 0 whenever QIES is clear (IQH_REG: "Hardware resets this field to 0 whenever
        // the queued invalidation is disabled"); QEMU and VirtualBox zero it on disable too.
        this.iqh = 0;
        this.gsts &= ~GSTS_QIES;
      }
    }
    if ((changed & GCMD_EAFL) !== 0 && this.caps.afl) {
      this.gsts = (v & GCMD_EAFL) !== 0 ? this.gsts | GSTS_AFLS : this.gsts & ~GSTS_AFLS;
    }
    if (this.caps.ir) {
      if ((changed & GCMD_IRE) !== 0)
        this.gsts = (v & GCMD_IRE) !== 0 ? this.gsts | GSTS_IRES : this.gsts & ~GSTS_IRES;
      if ((v & GCMD_SIRTP) !== 0) this.gsts |= GSTS_IRTPS;
      if ((changed & GCMD_CFI) !== 0)
        this.gsts = (v & GCMD_CFI) !== 0 ? this.gsts | GSTS_CFIS : this.gsts & ~GSTS_CFIS;
    }
    // SFL (with CAP.AFL) completes at once: FLS, cleared by the command, reads 1 again. The unit
    // keeps no advanced fault log, so the pointer is not used. Without AFL, SFL is ignored.
    if ((v & GCMD_SFL) !== 0 && this.caps.afl) this.gsts |= GSTS_FLS;
    // WBF completes at once (WBFS never reads 1).
    this.gsts >>>= 0;
  }

  /** SRTP: latch RTADDR. With ESRTPS the unit also drops its context, PASID and IOTLB caches. */
  private setRootTablePointer(): void {
    const ttm = (this.rtaddrLo >>> 10) & 3;
    this.rta = this.rtaddrHi * TWO32 + ((this.rtaddrLo & 0xfffff000) >>> 0);
    this.scalable = ttm === RTADDR_TTM_SCALABLE;
    this.walker.scalable = this.scalable;
    this.rootFault = 0;
    if (ttm === RTADDR_TTM_SCALABLE && !this.caps.smts)
      this.rootFault = VTD_FR.SM_ROOT_TABLE_ADDR_INVALID;
    else if (ttm !== RTADDR_TTM_LEGACY && ttm !== RTADDR_TTM_SCALABLE)
      this.rootFault = VTD_FR.SM_ROOT_TABLE_ADDR_INVALID;
    else if (this.rta >= 2 ** this.haw)
      this.rootFault = this.scalable ? VTD_FR.SM_ROOT_TABLE_ADDR_INVALID : VTD_FR.ROOT_TABLE_ACCESS;
    this.gsts |= GSTS_RTPS;
    if (this.caps.esrtps) {
      this.contextCache.invalidateAll();
      this.pasidCache.invalidateAll();
      this.iotlbGlobal();
    }
  }

  /** FSTS: PFO, IQE, ICE and ITE are RW1C. Clearing IQE or ITE restarts the invalidation queue. */
  private writeFsts(v: number): void {
    const restart = (this.fstsIqe & v & (FSTS_IQE | FSTS_ITE)) !== 0;
    this.fstsIqe &= ~(v & (FSTS_IQE | FSTS_ICE | FSTS_ITE));
    this.faults.writeFsts(v);
    this.faults.updatePending();
    if (restart && this.autoProcessQueue) this.processInvalidations();
  }

  /** The high half of CCMD: ICC starts a register-based context-cache invalidation. */
  private writeCcmdHigh(v: number): void {
    if ((v & 0x80000000) === 0 || (this.gsts & GSTS_QIES) !== 0) {
      this.plain[(VTD_REG.CCMD + 4) >>> 2] = v & 0x7fffffff;
      return;
    }
    const lo = this.plain[VTD_REG.CCMD >>> 2] as number;
    const cirg = (v >>> 29) & 3;
    const did = lo & 0xffff;
    const sid = lo >>> 16;
    const fm = v & 3;
    this.contextCacheInvalidate(cirg, did, sid, fm);
    // Done: ICC clear, CAIG reports the granularity performed.
    this.plain[(VTD_REG.CCMD + 4) >>> 2] = ((v & ~0x98000000) | (cirg << 27)) >>> 0;
  }

  /** The high half of the IOTLB register: IVT starts a register-based IOTLB invalidation. */
  private writeIotlbReg(v: number): void {
    const at = (this.iroBase + 12) >>> 2;
    if ((v & 0x80000000) === 0 || (this.gsts & GSTS_QIES) !== 0) {
      this.plain[at] = v & 0x7fffffff;
      return;
    }
    const iirg = (v >>> 28) & 3;
    const did = v & 0xffff;
    const ivaLo = this.plain[this.iroBase >>> 2] as number;
    const ivaHi = this.plain[(this.iroBase + 4) >>> 2] as number;
    let done = iirg;
    if (iirg === IOTLB_G_GLOBAL) this.iotlbGlobal();
    else if (
      iirg === IOTLB_G_DOMAIN ||
      (iirg === IOTLB_G_PAGE && (!this.caps.psi || (ivaLo & 0x3f) > this.caps.mamv))
    ) {
      // Without PSI, or beyond MAMV, the unit may do more than asked: a domain-selective flush.
      this.iotlb.invalidateDomain(did);
      this.psc.invalidateDomain(did);
      done = IOTLB_G_DOMAIN;
    } else if (iirg === IOTLB_G_PAGE) {
      const am = ivaLo & 0x3f;
      const vpn = ivaHi * TWO20 + (ivaLo >>> 12);
      const base = vpn - (vpn % (AM_PAGES[am] as number));
      this.iotlb.invalidatePages(did, base, am);
      this.psc.invalidatePages(did, base, am, (ivaLo & IVA_IH) !== 0);
    } else {
      done = 0; // reserved granularity: nothing done, IAIG reports 0
    }
    if (this.trace?.active) this.traceFlush("iotlb-reg", `g=${iirg} did=${did}`);
    this.plain[at] = ((v & ~0x80000000 & ~(3 << 25)) | (done << 25)) >>> 0;
  }

  // --- Devices -----------------------------------------------------------------------------------

  connect(port: DevicePort): void {
    this.ports.set(port.rid, port);
  }

  disconnect(port: DevicePort): void {
    if (this.ports.get(port.rid) === port) this.ports.delete(port.rid);
  }

  // --- Translation -------------------------------------------------------------------------------

  translate(req: TranslationRequest, out: TranslationResult): void {
    this.stats.translations++;
    this.resolveInto(req, out, true);
  }

  /**
   * What a fresh walk of the tables in memory answers right now: no cache is read or filled, no
   * fault recorded, no Accessed/Dirty flag set. The oracle compares it with `translate`.
   */
  translateUncached(req: TranslationRequest, out: TranslationResult): void {
    const busError = this.mem.busError;
    this.walker.updateFlags = false;
    this.resolveInto(req, out, false);
    this.walker.updateFlags = true;
    this.mem.busError = busError;
  }

  private resolveInto(req: TranslationRequest, out: TranslationResult, cached: boolean): void {
    out.stallTag = 0;
    out.sizeShift = 12;
    if ((this.gsts & GSTS_TES) === 0) {
      // Remapping disabled: requests pass untranslated, except into a protected memory region.
      if (this.pmrActive && this.protectedPage(req.iovaPfn)) {
        this.blocked(out);
        return;
      }
      out.status = XLATE_OK;
      out.pa = req.iovaPfn * PAGE + req.offset;
      out.perm = DMA_READ | DMA_WRITE | DMA_EXEC;
      out.fault = FaultKind.NONE;
      out.code = 0;
      return;
    }
    const code = this.resolve(req, cached);
    if (code === PMR_BLOCKED) {
      this.blocked(out);
      return;
    }
    if (code !== 0) {
      out.status = XLATE_FAULT;
      out.pa = 0;
      out.perm = 0;
      out.code = code;
      out.fault = vtdFaultKind(code);
      if (cached) this.reportFault(req, code);
      return;
    }
    out.status = XLATE_OK;
    out.fault = FaultKind.NONE;
    out.code = 0;
    out.pa = this.rPfn * PAGE + req.offset;
    out.perm = this.rPerm & (DMA_READ | DMA_WRITE | DMA_EXEC);
    out.sizeShift = this.rShift;
  }

  /**
   * Resolve `req`: 0 with rPfn/rPerm/rShift set, or the fault reason (rFpd says whether FPD
   * suppresses it). An ATS translation request for an unmapped page resolves with no permission.
   */
  private resolve(req: TranslationRequest, cached: boolean): number {
    this.rFpd = false;
    if (this.rootFault !== 0) return this.rootFault;
    const sid = req.rid & 0xffff;
    const dev = this.devConfig(sid, cached);
    this.rFpd = dev.fpd;
    if (dev.status !== 0) return dev.status;
    if (!this.scalable) return this.resolveLegacy(req, dev, cached);
    return this.resolveScalable(req, dev, cached);
  }

  private resolveLegacy(req: TranslationRequest, dev: VtdDevConfig, cached: boolean): number {
    if (req.pasid !== NO_PASID) return VTD_FR.SM_TTM_LEGACY_WITH_PASID;
    const at = req.at;
    if (at !== 0 && !dev.atsAllowed) return VTD_FR.CONTEXT_TT_BLOCKED;
    if (at === AT_TRANSLATED || dev.tt === 2) return this.identity(req);
    const write = (req.access & DMA_WRITE) !== 0;
    const code = this.lookupOrWalk(
      req,
      dev.did,
      VTD_PASID_NONE,
      VTD_KIND_SECOND_STAGE,
      dev.slptptr,
      dev.levels,
      dev.widthPages,
      null,
      cached,
      false,
      write,
    );
    if (code !== 0) return code;
    if (at === AT_TRANSLATION_REQUEST) return 0;
    const perm = this.rPerm;
    if (write && (perm & P_WRITE) === 0) return VTD_FR.NO_WRITE;
    if ((req.access & DMA_READ) !== 0 && (perm & P_READ) === 0) return VTD_FR.NO_READ;
    return 0;
  }

  private resolveScalable(req: TranslationRequest, dev: VtdDevConfig, cached: boolean): number {
    const withPasid = req.pasid !== NO_PASID;
    if (withPasid && !dev.paside) return VTD_FR.SM_PASIDE_CLEAR;
    const at = req.at;
    if (at !== 0 && !dev.dte) return VTD_FR.SM_DTE_CLEAR;
    if (at === AT_TRANSLATED) return this.identity(req);
    const pasid = withPasid ? req.pasid : dev.ridPasid;
    const pc = this.pasidConfig(dev, pasid, cached);
    this.rFpd = dev.fpd || pc.fpd;
    if (pc.status !== 0) return pc.status;
    const privileged = withPasid ? req.privileged : dev.ridPriv;
    const exec = withPasid && (req.access & DMA_EXEC) !== 0;
    if (privileged && (!pc.sre || !this.caps.srs)) return VTD_FR.SM_SRE_CLEAR;
    if (exec && (!pc.ere || !this.caps.ers)) return VTD_FR.SM_ERE_CLEAR;
    const pgtt = pc.pgtt;
    if (pgtt === PGTT_PT) return this.identity(req);
    this.supervisorWrite = privileged && !pc.wpe;
    const write = (req.access & DMA_WRITE) !== 0;
    let code: number;
    if (pgtt === PGTT_SL) {
      code = this.lookupOrWalk(
        req,
        pc.did,
        pasid,
        VTD_KIND_SECOND_STAGE,
        pc.slptptr,
        pc.ssLevels,
        pc.ssWidthPages,
        pc,
        cached,
        true,
        write,
      );
    } else {
      const kind = pgtt === PGTT_FL ? VTD_KIND_FIRST_STAGE : VTD_KIND_NESTED;
      // The device writes through its ATC later without another walk, so the completion may
      // grant W only for a leaf whose D flag is set. A unit without ECAP.NWFS ignores the No
      // Write flag: every translation request is one that may write, and sets D in a writable
      // first-stage leaf. With NWFS a read-only request (the model's read access) leaves D and
      // gets W only when D is set already.
      const dirty = write || (at === AT_TRANSLATION_REQUEST && !this.caps.nwfs);
      code = this.lookupOrWalk(
        req,
        pc.did,
        pasid,
        kind,
        pc.flptr,
        pc.fsLevels,
        0,
        pc,
        cached,
        true,
        dirty,
      );
    }
    if (code !== 0) return code;
    const perm = this.rPerm;
    if (at === AT_TRANSLATION_REQUEST) {
      // The completion grants what this requester may do with the page (no W over a clean leaf).
      let granted = perm & (P_READ | P_WRITE | P_EXEC);
      if ((perm & P_DIRTY) === 0) granted &= ~P_WRITE;
      if (pgtt !== PGTT_SL) {
        if (!privileged && (perm & P_USER) === 0) granted = 0;
        else if (
          privileged &&
          !pc.wpe &&
          (perm & (P_SS_WRITE | P_DIRTY)) === (P_SS_WRITE | P_DIRTY)
        )
          granted |= P_WRITE;
      }
      if (!exec) granted &= ~P_EXEC;
      this.rPerm = granted;
      return 0;
    }
    if (pgtt !== PGTT_SL) {
      if (!privileged && (perm & P_USER) === 0) return VTD_FR.SM_FS_PRIV_VIOLATION;
      // WPE=0: supervisor writes ignore the first stage's R/W (not the second stage's W).
      if (
        write &&
        (perm & P_WRITE) === 0 &&
        !(privileged && !pc.wpe && (perm & P_SS_WRITE) !== 0)
      ) {
        return VTD_FR.SM_NO_WRITE;
      }
      if (exec && privileged && pc.smep && (perm & P_USER) !== 0) return VTD_FR.SM_NO_EXECUTE;
    } else if (write && (perm & P_WRITE) === 0) {
      return VTD_FR.SM_NO_WRITE;
    }
    if ((req.access & DMA_READ) !== 0 && (perm & P_READ) === 0) return VTD_FR.SM_NO_READ;
    if (exec && (perm & P_EXEC) === 0) return VTD_FR.SM_NO_EXECUTE;
    return 0;
  }

  /**
   * A request blocked by a protected memory region: it fails, but is "not recorded or reported as
   * a remapping fault" (PMEN_REG.EPM), so there is no fault reason and no fault record.
   */
  private blocked(out: TranslationResult): void {
    out.status = XLATE_FAULT;
    out.pa = 0;
    out.perm = 0;
    out.fault = FaultKind.BLOCKED;
    out.code = 0;
  }

  /**
   * Pass-through and translated requests: output = input. With PMEN.EPM set such requests into a
   * protected region are blocked even while remapping is on (PMEN_REG: "DMA requests processed as
   * pass-through ... and DMA requests with translated address (AT=10b)"); a translation request
   * reads no memory and is answered. Remapped requests are not range-checked: the spec lets
   * hardware block them or not, and software must not rely on it.
   */
  private identity(req: TranslationRequest): number {
    if (this.pmrActive && req.at !== AT_TRANSLATION_REQUEST && this.protectedPage(req.iovaPfn))
      return PMR_BLOCKED;
    this.rPfn = req.iovaPfn;
    this.rPerm = P_READ | P_WRITE | P_EXEC | P_USER;
    this.rShift = 12;
    return 0;
  }

  /**
   * The translation of `req.iovaPfn` for (did, pasid): from the IOTLB, or walked and cached.
   * First-stage and nested walks take `root`/`levels` of the first stage and the PASID entry's
   * second stage; second-stage walks `root`/`levels`/`widthPages`.
   */
  private lookupOrWalk(
    req: TranslationRequest,
    did: number,
    pasid: number,
    kind: number,
    root: number,
    levels: number,
    widthPages: number,
    pc: VtdPasidConfig | null,
    cached: boolean,
    scalable: boolean,
    write: boolean,
  ): number {
    // Address checks come before the IOTLB, whose tags keep only bits 56:12 of the input.
    const vpn = req.iovaPfn;
    if (kind === VTD_KIND_SECOND_STAGE) {
      if (vpn >= widthPages) return scalable ? VTD_FR.SM_ADDR_BEYOND_MGAW : VTD_FR.ADDR_BEYOND_MGAW;
    } else {
      // Canonical: bits 63:47 (4-level) or 63:56 (5-level) all equal.
      const top = levels === 5 ? Math.floor(vpn / 17592186044416) : Math.floor(vpn / 34359738368);
      if (top !== 0 && top !== (levels === 5 ? 0xff : 0x1ffff)) return VTD_FR.SM_FS_NON_CANONICAL;
    }
    if (cached) {
      const iotlb = this.iotlb;
      const i = iotlb.lookup(did, pasid, vpn);
      if (i >= 0) {
        const code = this.fromIotlb(i, kind, scalable, write, req.iovaPfn);
        if (code >= 0) return code;
      }
    }
    return this.walk(req, did, pasid, kind, root, levels, widthPages, pc, cached, scalable, write);
  }

  /**
   * Answer input page `vpn` from IOTLB entry `i`: 0 with the result set, a fault reason for a
   * cached not-present entry, or -1 when the entry cannot serve (a `write` — a write, or a
   * translation request that must set D — through an entry whose leaf is not dirty).
   */
  private fromIotlb(
    i: number,
    kind: number,
    scalable: boolean,
    write: boolean,
    vpn: number,
  ): number {
    const iotlb = this.iotlb;
    const perm = iotlb.permOf(i);
    if (perm === 0) return this.notPresentReason(kind, write, scalable);
    if (write && (perm & P_DIRTY) === 0) return -1;
    this.rPfn = iotlb.paFrameFor(i, vpn);
    this.rPerm = perm;
    this.rShift = iotlb.sizeShiftOf(i);
    return 0;
  }

  /**
   * Walk the tables for `req` (after an IOTLB miss) and cache the answer; `write` sets D in the
   * leaf (a write, or a translation request that may write).
   */
  private walk(
    req: TranslationRequest,
    did: number,
    pasid: number,
    kind: number,
    root: number,
    levels: number,
    widthPages: number,
    pc: VtdPasidConfig | null,
    cached: boolean,
    scalable: boolean,
    write: boolean,
  ): number {
    const vpn = req.iovaPfn;
    const iotlb = this.iotlb;
    const walker = this.walker;
    walker.psc = cached && this.psc.capacity > 0 ? this.psc : null;
    walker.pscDid = did;
    walker.pscPasid = pasid;
    let w: number;
    if (kind === VTD_KIND_SECOND_STAGE) {
      w = walker.walkSecondStage(
        root,
        levels,
        vpn,
        widthPages,
        write,
        pc?.slade ?? false,
        pc?.slee ?? false,
      );
    } else {
      const nested = kind === VTD_KIND_NESTED;
      const p = pc as VtdPasidConfig;
      w = walker.walkFirstStage(
        root,
        levels,
        vpn,
        write,
        nested,
        p.slptptr,
        p.ssLevels,
        p.ssWidthPages,
        this.supervisorWrite,
      );
    }
    if (w !== W_OK) {
      if (w === W_NOT_PRESENT && req.at === AT_TRANSLATION_REQUEST && !walker.nestedFetch) {
        this.rPfn = 0;
        this.rPerm = 0;
        this.rShift = 12;
        return 0;
      }
      // Caching mode lets a unit cache not-present entries of every structure except first-stage
      // tables (spec 6.1: "updates to remapping structures other than first-stage mapping"), so
      // only a second-stage leaf that is not present is remembered.
      if (
        cached &&
        w === W_NOT_PRESENT &&
        this.cacheNegative &&
        kind === VTD_KIND_SECOND_STAGE &&
        !walker.nestedFetch
      ) {
        iotlb.insert(did, pasid, vpn, 12, kind as 1, 0, 0);
      }
      return walkFaultReason(walker, w, scalable, write);
    }
    const pfn = walker.pfn;
    if (pfn >= IRQ_FIRST_PFN && pfn <= IRQ_LAST_PFN)
      return scalable ? VTD_FR.SM_INTERRUPT_ADDR : VTD_FR.INTERRUPT_ADDR;
    this.rPfn = pfn;
    this.rPerm = walker.perm;
    this.rShift = walker.sizeShift;
    if (cached) {
      const shift = walker.sizeShift;
      const pages = AM_PAGES[shift - 12] as number;
      const offset = vpn % pages;
      iotlb.insert(did, pasid, vpn - offset, shift, kind as 1, pfn - offset, walker.perm);
    }
    return 0;
  }

  private notPresentReason(kind: number, write: boolean, scalable: boolean): number {
    if (!scalable) return write ? VTD_FR.NO_WRITE : VTD_FR.NO_READ;
    return kind === VTD_KIND_SECOND_STAGE
      ? VTD_FR.SM_SS_ENTRY_PERMISSION
      : VTD_FR.SM_FS_ENTRY_NOT_PRESENT;
  }

  /** The decoded context entry of `sid`, from the context cache or memory. */
  private devConfig(sid: number, cached: boolean): VtdDevConfig {
    if (cached) {
      const hit = this.contextCache.lookup(sid);
      if (hit !== null) return hit;
    }
    if (!cached || this.contextCache.capacity === 0) {
      return decodeDevConfig(
        this.mem,
        this.rta,
        this.scalable,
        sid,
        this.decodeCaps,
        this.scratchDev,
      );
    }
    const cfg = decodeDevConfig(
      this.mem,
      this.rta,
      this.scalable,
      sid,
      this.decodeCaps,
      new VtdDevConfig(),
    );
    if (cfg.status === 0 || this.cacheNegative)
      this.contextCache.insert(sid, this.scalable ? -1 : cfg.did, cfg);
    return cfg;
  }

  /** The decoded PASID entry of (dev, pasid), from the PASID cache or memory. */
  private pasidConfig(dev: VtdDevConfig, pasid: number, cached: boolean): VtdPasidConfig {
    if (cached) {
      const hit = this.pasidCache.lookup(dev.sid, pasid);
      if (hit !== null) return hit;
    }
    if (!cached || this.pasidCache.capacity === 0) {
      return decodePasidConfig(this.mem, dev, pasid, this.decodeCaps, this.scratchPasid);
    }
    const cfg = decodePasidConfig(this.mem, dev, pasid, this.decodeCaps, new VtdPasidConfig());
    // Under caching mode an invalid or not-present entry is cached too, tagged with DID 0.
    if (cfg.status === 0 || this.cacheNegative)
      this.pasidCache.insert(dev.sid, pasid, cfg.status === 0 ? cfg.did : 0, cfg);
    return cfg;
  }

  /** Record a fault in the fault recording registers unless FPD suppresses it. */
  private reportFault(req: TranslationRequest, code: number): void {
    this.stats.faults++;
    const trace = this.trace;
    if (trace?.active) {
      trace.emit("fault", {
        iommu: this.name,
        rid: req.rid,
        pasid: req.pasid,
        iova: req.iovaPfn * PAGE + req.offset,
        kind: vtdFaultKind(code),
        code,
      });
    }
    if (this.rFpd && vtdFaultQualified(code)) {
      this.stats.faultsSuppressed++;
      return;
    }
    // FI bits 63:MGAW are reserved (zero): the record keeps the address below MGAW.
    const vpn = req.iovaPfn % this.mgawPages;
    const lo = ((vpn % TWO20) * PAGE) >>> 0;
    const hi = Math.floor(vpn / TWO20) >>> 0;
    const withPasid = req.pasid !== NO_PASID;
    this.faults.record(
      req.rid & 0xffff,
      withPasid ? req.pasid : -1,
      lo,
      hi,
      code,
      (req.access & DMA_WRITE) === 0,
      withPasid && req.privileged,
      withPasid && (req.access & DMA_EXEC) !== 0,
      // FRCD.AT is RsvdZ on units without device-TLB support (ECAP.DT clear).
      this.caps.deviceTlb ? req.at : 0,
    );
  }

  // --- Page requests -----------------------------------------------------------------------------

  /**
   * A PRI page request: checked against the context (PRE) and written to the page request queue.
   * A request the unit cannot queue is answered at once if it ends a group: with Invalid Request
   * when it is refused, with Success when the queue overflowed (the device retries). Stop markers
   * are never answered. Requests are written to the queue as they arrive, so a page-request drain
   * (wait descriptor PD) never has anything left to wait for.
   *
   * @spec Intel VT-d Architecture Specification 7.5 (page requests)
   */
  pageRequest(req: PageRequest): void {
    this.stats.pageRequests++;
    const withPasid = req.pasid !== NO_PASID;
    // A group's last request wants the one response; a stop marker (LPIG with neither read nor
    // write) wants none, so the unit never answers one itself (PCIe PRI; Linux drops them too).
    const needsResponse = req.last && (req.access & (DMA_READ | DMA_WRITE)) !== 0;
    let code = 0;
    if (!this.caps.prs || (this.gsts & GSTS_TES) === 0) code = -1;
    else if (this.rootFault !== 0) code = this.rootFault;
    else if (!this.scalable) code = VTD_FR.SM_TTM_LEGACY_PAGE_REQUEST;
    else {
      const dev = this.devConfig(req.rid & 0xffff, true);
      if (dev.status !== 0) code = dev.status;
      else if (!dev.pre) code = VTD_FR.SM_PRE_CLEAR;
      else if (withPasid && !dev.paside) code = VTD_FR.SM_PASIDE_CLEAR;
    }
    if (code !== 0) {
      this.stats.pageRequestsDropped++;
      if (code > 0) {
        const vpn = req.iovaPfn;
        this.faults.record(
          req.rid & 0xffff,
          withPasid ? req.pasid : -1,
          ((vpn % TWO20) * PAGE) >>> 0,
          Math.floor(vpn / TWO20) >>> 0,
          code,
          (req.access & DMA_WRITE) === 0,
          withPasid && req.privileged,
          withPasid && (req.access & DMA_EXEC) !== 0,
          // A page request is a message, not a memory request: it carries no AT to capture.
          0,
        );
      }
      if (needsResponse) this.respond(req.rid, req.pasid, req.prgIndex, PRG_INVALID_REQUEST);
      return;
    }
    const r = this.prq.enqueue(
      req.rid & 0xffff,
      withPasid ? req.pasid : -1,
      req.iovaPfn,
      req.access,
      req.privileged,
      req.prgIndex,
      req.last,
    );
    if (r === PRQ_QUEUED) return;
    this.stats.pageRequestsDropped++;
    // Overflow: the last request of a group is answered Success so the device retries.
    if (needsResponse)
      this.respond(
        req.rid,
        req.pasid,
        req.prgIndex,
        r === PRQ_OVERFLOW ? PRG_SUCCESS : PRG_INVALID_REQUEST,
      );
  }

  private respond(rid: number, pasid: number, prgIndex: number, code: number): void {
    const port = this.ports.get(rid & 0xffff);
    if (port === undefined) return;
    this.stats.pageResponses++;
    port.prgResponse(pasid, prgIndex, code);
  }

  // --- Queued invalidation -----------------------------------------------------------------------

  /**
   * Fetch and carry out descriptors from IQH towards IQT, at most `budget` of them. Stops at an
   * invalid descriptor (IQE set, IQH left on it) and while IQE or ITE is set. Returns the number of
   * descriptors processed.
   *
   * A device-TLB invalidation that times out sets ITE, and "hardware must not complete any pending
   * inv_wait_dsc" (spec 6.5.2.11, as quoted with Linux's qi_check_fault). Real hardware has fetched
   * the wait behind the invalidation by the time the completion times out, so the model keeps
   * fetching (past `budget` if need be) up to the next wait descriptor, consumes it without its
   * status write or interrupt, and stops there with IQH past it: Linux then finds that wait's slot
   * below IQH, marks it aborted and resubmits. Descriptors between the two are carried out.
   *
   * @spec Intel VT-d Architecture Specification 6.5.2 (queued invalidation), 6.5.2.11
   * @kernel drivers/iommu/intel/dmar.c qi_check_fault
   */
  processInvalidations(budget = Number.POSITIVE_INFINITY): number {
    if ((this.gsts & GSTS_QIES) === 0 || (this.fstsIqe & (FSTS_IQE | FSTS_ITE)) !== 0) return 0;
    const dw = (this.iqaLo >>> 11) & 1;
    const size = 4096 * 2 ** (this.iqaLo & 7);
    const descSize = dw ? 32 : 16;
    if (this.iqt >= size || (dw && (this.iqt & 0x10) !== 0)) {
      this.queueError(this.iqt >= size ? IQEI_ILLEGAL_TAIL : IQEI_TAIL_MISALIGNED);
      return 0;
    }
    if (this.scalable && !dw) {
      if (this.iqh !== this.iqt) this.queueError(IQEI_WIDTH);
      return 0;
    }
    const base = this.iqaHi * TWO32 + ((this.iqaLo & 0xfffff000) >>> 0);
    let done = 0;
    while (this.iqh !== this.iqt && (done < budget || (this.fstsIqe & FSTS_ITE) !== 0)) {
      if (this.iqh >= size) {
        this.iqh = 0;
        continue;
      }
      const mem = this.mem;
      const at = base + this.iqh;
      mem.busError = false;
      const d = this.desc;
      for (let i = 0; i < descSize / 4; i += 2) {
        d[i] = mem.read64(at + i * 4);
        d[i + 1] = mem.hi;
      }
      if (!dw) d.fill(0, 4);
      if (mem.busError) {
        this.queueError(IQEI_FETCH);
        break;
      }
      const timedOut = (this.fstsIqe & FSTS_ITE) !== 0;
      if (timedOut && invDescType(d[0] as number) === INV_DESC_TYPE.WAIT) {
        // The wait was pending behind the timed-out device-TLB invalidation: it is fetched
        // (IQH moves past it) and aborted, with no status write and no interrupt.
        this.stats.descriptors++;
        done++;
        this.iqh = (this.iqh + descSize) % size;
        break;
      }
      const err = this.execute(d, dw === 1);
      if (err !== 0) {
        this.queueError(err);
        break;
      }
      this.descriptorObserver?.(d, dw === 1);
      this.stats.descriptors++;
      done++;
      this.iqh = (this.iqh + descSize) % size;
    }
    return done;
  }

  private queueError(iqei: number): void {
    const before = this.faults.fsts() | this.fstsIqe;
    this.fstsIqe |= FSTS_IQE;
    this.iqerLo = iqei & 0xf;
    this.stats.invalidationErrors++;
    this.faults.raiseEvent(before);
  }

  /** Carry out one descriptor: 0, or the IQEI reason that makes it invalid. */
  private execute(d: Uint32Array, wide: boolean): number {
    const type = invDescType(d[0] as number);
    const layout = invDescLayout(type);
    if (layout === null) return IQEI_INVALID_TYPE;
    const caps = this.caps;
    for (let i = 0; i < 4; i++) {
      if (((d[i] as number) & (layout.reserved[i] as number)) !== 0) return IQEI_RESERVED;
    }
    if (
      wide &&
      type !== INV_DESC_TYPE.PGRP_RESP &&
      ((d[4] as number) | (d[5] as number) | (d[6] as number) | (d[7] as number)) !== 0
    ) {
      return IQEI_RESERVED;
    }
    const lo = d[0] as number;
    const hi = d[1] as number;
    switch (type) {
      case INV_DESC_TYPE.CC: {
        const g = (lo >>> G_CC.shift) & G_CC.mask;
        if (g === 0) return IQEI_RESERVED;
        this.contextCacheInvalidate(g, lo >>> 16, hi & 0xffff, (hi >>> 16) & 3);
        return 0;
      }
      case INV_DESC_TYPE.IOTLB: {
        const g = (lo >>> G_IOTLB.shift) & G_IOTLB.mask;
        const did = lo >>> 16;
        if (g === 0) return IQEI_RESERVED;
        if (g === IOTLB_G_GLOBAL) this.iotlbGlobal();
        else if (g === IOTLB_G_DOMAIN || !caps.psi) {
          this.iotlb.invalidateDomain(did);
          this.psc.invalidateDomain(did);
        } else {
          const am = (d[2] as number) & 0x3f;
          if (am > caps.mamv) return IQEI_RESERVED;
          const vpn = (d[3] as number) * TWO20 + ((d[2] as number) >>> 12);
          const base = vpn - (vpn % (AM_PAGES[am] as number));
          this.iotlb.invalidatePages(did, base, am);
          this.psc.invalidatePages(did, base, am, ((d[2] as number) & IOTLB_IH) !== 0);
        }
        if (this.trace?.active) this.traceFlush("iotlb", `g=${g} did=${did}`);
        return 0;
      }
      case INV_DESC_TYPE.DEV_TLB: {
        if (!caps.deviceTlb) return IQEI_INVALID_TYPE;
        const sid = hi & 0xffff;
        const s = ((d[2] as number) & DEVTLB_S) !== 0 ? 1 : 0;
        decodeDevTlbRange(d[2] as number, d[3] as number, s, this.span);
        this.atsInvalidate(sid, NO_PASID, false);
        return 0;
      }
      case INV_DESC_TYPE.IEC:
        // Interrupt remapping is not modelled: the entry cache is always empty.
        return caps.ir ? 0 : IQEI_INVALID_TYPE;
      case INV_DESC_TYPE.WAIT:
        return this.invalidationWait(d);
      case INV_DESC_TYPE.PIOTLB: {
        if (!caps.smts) return IQEI_INVALID_TYPE;
        const g = (lo >>> G_PIOTLB.shift) & G_PIOTLB.mask;
        const did = lo >>> 16;
        const pasid = hi & 0xfffff;
        if (g === PIOTLB_G_PASID) {
          this.iotlb.invalidatePasid(did, pasid);
          this.psc.invalidatePasid(did, pasid);
        } else if (g === PIOTLB_G_PAGE) {
          // Any AM is allowed here, independent of MAMV.
          const am = (d[2] as number) & 0x3f;
          const vpn = (d[3] as number) * TWO20 + ((d[2] as number) >>> 12);
          const base = vpn - (vpn % (AM_PAGES[am] as number));
          this.iotlb.invalidatePasidPages(did, pasid, base, am);
          this.psc.invalidatePasidPages(did, pasid, base, am, ((d[2] as number) & PIOTLB_IH) !== 0);
        } else return IQEI_RESERVED;
        if (this.trace?.active) this.traceFlush("piotlb", `g=${g} did=${did} pasid=${pasid}`);
        return 0;
      }
      case INV_DESC_TYPE.PC: {
        if (!caps.smts) return IQEI_INVALID_TYPE;
        const g = (lo >>> G_PC.shift) & G_PC.mask;
        const did = lo >>> 16;
        const pasid = hi & 0xfffff;
        if (g === PC_G_DOMAIN) this.pasidCache.invalidateDomain(did);
        else if (g === PC_G_PASID) this.pasidCache.invalidatePasid(did, pasid);
        else if (g === PC_G_GLOBAL) this.pasidCache.invalidateAll();
        else return IQEI_RESERVED;
        if (this.trace?.active) this.traceFlush("pasid-cache", `g=${g} did=${did} pasid=${pasid}`);
        return 0;
      }
      case INV_DESC_TYPE.PDEV_TLB: {
        if (!caps.deviceTlb || !caps.smts) return IQEI_INVALID_TYPE;
        const sid = lo >>> 16;
        const pasid = hi & 0xfffff;
        const global = ((d[2] as number) & PDEVTLB_G) !== 0;
        const s = ((d[2] as number) & PDEVTLB_S) !== 0 ? 1 : 0;
        decodeDevTlbRange(d[2] as number, d[3] as number, s, this.span);
        this.atsInvalidate(sid, pasid, global);
        return 0;
      }
      case INV_DESC_TYPE.PGRP_RESP: {
        if (!caps.prs) return IQEI_INVALID_TYPE;
        const pp = (lo & RESP_PP) !== 0;
        const rc = (lo >>> RESP_RC.shift) & RESP_RC.mask;
        const rid = lo >>> 16;
        const pasid = hi & 0xfffff;
        const prgi = ((d[2] as number) >>> RESP_PRGI.shift) & RESP_PRGI.mask;
        this.respond(rid, pp ? pasid : NO_PASID, prgi, rc);
        return 0;
      }
      default:
        return IQEI_INVALID_TYPE;
    }
  }

  private invalidationWait(d: Uint32Array): number {
    const lo = d[0] as number;
    if ((lo & WAIT_PD) !== 0 && !this.caps.pds) return IQEI_RESERVED;
    // Page requests are queued as they arrive, so a drain (PD) has nothing left to wait for;
    // descriptors complete in order, so a fence (FN) holds by construction.
    if ((lo & WAIT_SW) !== 0) {
      const addr = (d[3] as number) * TWO32 + (((d[2] as number) & ~3) >>> 0);
      this.mem.write32(addr, d[1] as number);
    }
    if ((lo & WAIT_IF) !== 0) {
      // A completion while ICS.IWC is still set is not a new interrupt condition (IECTL_REG.IP).
      if (this.ics === 0) {
        this.ics = 1;
        if ((this.iectl & ECTL_IM) !== 0) this.iectl |= ECTL_IP;
        else this.interrupt("invalidation");
      }
    }
    return 0;
  }

  /** Deliver a device-TLB invalidation (the range in `span`) to the device `sid`. */
  private atsInvalidate(sid: number, pasid: number, global: boolean): void {
    const port = this.ports.get(sid);
    const pages = this.span.pages >= 2 ** 52 ? 0 : this.span.pages;
    if (this.trace?.active)
      this.traceFlush(
        "dev-tlb",
        `sid=0x${sid.toString(16)} pasid=${pasid} pfn=0x${this.span.pfn.toString(16)} pages=${pages}`,
      );
    if (port === undefined) {
      // Nobody answers: the invalidation times out (ITE). ITESID keeps the first requester.
      const before = this.faults.fsts() | this.fstsIqe;
      if ((this.fstsIqe & FSTS_ITE) === 0) this.iqerHi = (this.iqerHi & 0xffff0000) | sid;
      this.fstsIqe |= FSTS_ITE;
      this.faults.raiseEvent(before);
      return;
    }
    port.atsInvalidate(pasid, this.span.pfn, pages, global);
  }

  private contextCacheInvalidate(g: number, did: number, sid: number, fm: number): void {
    if (g === CC_G_GLOBAL || (g === CC_G_DOMAIN && this.scalable))
      this.contextCache.invalidateAll();
    else if (g === CC_G_DOMAIN) this.contextCache.invalidateDomain(did);
    else if (g === CC_G_DEVICE) this.contextCache.invalidateDevice(sid, fm);
    if (this.trace?.active)
      this.traceFlush("context-cache", `g=${g} did=${did} sid=0x${sid.toString(16)} fm=${fm}`);
  }

  private iotlbGlobal(): void {
    this.iotlb.invalidateAll();
    this.psc.invalidateAll();
  }

  private traceFlush(scope: string, detail: string): void {
    (this.trace as Trace).emit("flush", { iommu: this.name, scope, detail });
  }

  private interrupt(source: VtdInterruptSource): void {
    this.stats.interrupts++;
    this.onInterrupt?.(source);
  }

  /** Whether the invalidation queue is stopped on an error (IQE or ITE set). */
  get queueStopped(): boolean {
    return (this.fstsIqe & (FSTS_IQE | FSTS_ITE)) !== 0;
  }

  /** Whether translation is enabled (GSTS.TES). */
  get translationEnabled(): boolean {
    return (this.gsts & GSTS_TES) !== 0;
  }

  /** Whether the latched root table is in scalable mode. */
  get scalableMode(): boolean {
    return this.scalable;
  }

  /**
   * What the unit's caches hold for `req`, next to what memory says now, for an oracle that must
   * explain a cached answer (never on a DMA path: it allocates, and touches no LRU or counter).
   * The context entry of the requester (cached and freshly decoded); in scalable mode the PASID
   * entry the request uses (RID_PASID without a PASID); the IOTLB entry a lookup under the cached
   * entries' DID and PASID would hit; and the paging-structure entries that cover the page.
   */
  inspect(req: TranslationRequest): VtdCacheInspection {
    const sid = req.rid & 0xffff;
    const fresh = decodeDevConfig(
      this.mem,
      this.rta,
      this.scalable,
      sid,
      this.decodeCaps,
      new VtdDevConfig(),
    );
    const ctxEntry = this.contextCache.entries().find((e) => e.sid === sid) ?? null;
    const dev = ctxEntry?.value ?? fresh;
    let pasidPart: VtdCacheInspection["pasidEntry"] = null;
    let did = dev.did;
    let pasid = VTD_PASID_NONE;
    if (this.scalable) {
      pasid = req.pasid !== NO_PASID ? req.pasid : dev.ridPasid;
      const freshPasid =
        fresh.status === 0
          ? decodePasidConfig(this.mem, fresh, pasid, this.decodeCaps, new VtdPasidConfig())
          : null;
      const pcEntry =
        this.pasidCache.entries().find((e) => e.sid === sid && e.pasid === pasid) ?? null;
      pasidPart = { pasid, cached: pcEntry?.value ?? null, fresh: freshPasid };
      did = (pcEntry?.value ?? freshPasid)?.did ?? 0;
    }
    const vpn = req.iovaPfn;
    const iotlb =
      this.iotlb
        .entries()
        .find(
          (e) =>
            e.did === did &&
            e.pasid === pasid &&
            vpn >= e.vpn &&
            vpn < e.vpn + 2 ** (e.sizeShift - 12),
        ) ?? null;
    // Second-stage paging-structure entries carry no PASID (the cache tags them VTD_PASID_NONE):
    // a request at a PASID through a second-stage (or nested) table walks from them too.
    const psc = this.psc
      .entries()
      .filter(
        (e) =>
          e.did === did &&
          (e.pasid === pasid || (e.kind === VTD_KIND_SECOND_STAGE && e.pasid === VTD_PASID_NONE)) &&
          Math.floor(vpn / 512 ** (e.level - 1)) === e.tag,
      );
    return {
      sid,
      did,
      pasid,
      context: { cached: ctxEntry?.value ?? null, fresh },
      pasidEntry: pasidPart,
      iotlb,
      psc,
    };
  }
}

/** What `VtdUnit.inspect` found. */
export interface VtdCacheInspection {
  readonly sid: number;
  /** The DID and IOTLB PASID tag the request is looked up under (VTD_PASID_NONE in legacy mode). */
  readonly did: number;
  readonly pasid: number;
  readonly context: { readonly cached: VtdDevConfig | null; readonly fresh: VtdDevConfig };
  /** Scalable mode: the PASID entry used, cached and fresh (null fresh: the context is bad). */
  readonly pasidEntry: {
    readonly pasid: number;
    readonly cached: VtdPasidConfig | null;
    readonly fresh: VtdPasidConfig | null;
  } | null;
  readonly iotlb: VtdIotlbEntry | null;
  readonly psc: readonly VtdPscEntry[];
}
