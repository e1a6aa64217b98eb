// One Arm SMMUv3: its register file with the CR0/CR0ACK, GBPA and GERROR handshakes, translation of
// device requests through the stream table, context descriptors and page tables in memory and the
// SMMU's caches, the command queue, the event and PRI queues, ATS, the stall model, and a hook that
// shows every write to a structure the SMMU may have cached (the hitless-update check).

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
  PRG_RESPONSE_FAILURE,
  PRG_SUCCESS,
  type TranslationRequest,
  type TranslationResult,
  XLATE_FAULT,
  XLATE_OK,
  XLATE_STALLED,
} from "@iommu-sim/iommu-core";
import {
  bug,
  decode,
  fieldOf,
  loadLayout,
  type Mmio,
  type PhysMemory,
  type Trace,
  type WriteObserver,
} from "@iommu-sim/iommu-core/platform";
import { CD, CD_SIZE } from "../format/cd.js";
import {
  ATC_INV_SIZE_ALL,
  CFGI_ALL_RANGE,
  CMD_ATC_INV,
  CMD_CFGI_CD,
  CMD_CFGI_STE,
  CMD_CFGI_STE_RANGE,
  CMD_PRI_RESP,
  CMD_RESUME,
  CMD_SYNC,
  CMD_SYNC_CS_IRQ,
  CMD_TLBI_NH_ASID,
  CMD_TLBI_NH_VA,
  CMD_TLBI_S2_IPA,
  CMDQ_OP,
  type CommandFeatures,
  commandError,
} from "../format/commands.js";
import { EVT_ID, EVT_SIZE } from "../format/events.js";
import { PRIQ_ENTRY, PRIQ_ENTRY_SIZE } from "../format/pri.js";
import {
  CMDQ_CONS_ERR_ABT,
  CMDQ_CONS_ERR_ATC_INV_SYNC,
  CMDQ_CONS_ERR_ILL,
  CMDQ_CONS_ERR_MASK,
  CMDQ_CONS_ERR_SHIFT,
  CR0_ATSCHK,
  CR0_CMDQEN,
  CR0_EVTQEN,
  CR0_PRIQEN,
  CR0_SMMUEN,
  CR0_WRITABLE,
  CR2_E2H,
  CR2_PTM,
  CR2_RECINVSID,
  CR2_REG,
  GBPA_ABORT,
  GBPA_UPDATE,
  GERROR_CMDQ_ERR,
  GERROR_ERR_MASK,
  GERROR_EVTQ_ABT_ERR,
  GERROR_MSI_CMDQ_ABT_ERR,
  GERROR_MSI_EVTQ_ABT_ERR,
  GERROR_MSI_GERROR_ABT_ERR,
  GERROR_MSI_PRIQ_ABT_ERR,
  GERROR_PRIQ_ABT_ERR,
  IRQ_CTRL_EVTQ_IRQEN,
  IRQ_CTRL_GERROR_IRQEN,
  IRQ_CTRL_PRIQ_IRQEN,
  Q_WR_MASK,
  qEmpty,
  qInc,
  SMMU_PAGE1,
  SMMU_REG,
} from "../format/registers.js";
import { EATS_ABT, STE, STE_CFG_BYPASS, STE_SIZE, STRTAB_FMT_2LVL } from "../format/ste.js";
import { Q_ABORT, Q_WRITTEN, SmmuEventQueue } from "./event-queue.js";
import { SmmuPriQueue } from "./pri-queue.js";
import { resolveSmmuCacheConfig, type SmmuCacheConfig } from "./smmu-cache-policy.js";
import {
  CFG_OK,
  decodeCd,
  decodeSte,
  NO_SSID,
  SmmuCdConfig,
  type SmmuCdFetchPort,
  SmmuSteConfig,
  type SmmuStreamTable,
} from "./smmu-config.js";
import { SmmuConfigCache } from "./smmu-config-cache.js";
import { type SmmuEntryView, viewOfCd, viewOfSte } from "./smmu-entry-view.js";
import {
  encodeEvent,
  SMMU_ABORT_SILENT,
  SmmuEventFields,
  smmuFaultKind,
  walkEventId,
} from "./smmu-event.js";
import {
  DEFAULT_SMMU_FEATURES,
  resolveSmmuFeatures,
  type SmmuFeatures,
  smmuCommandFeatures,
  smmuIdRegs,
} from "./smmu-features.js";
import {
  SMMU_ASID_IPA,
  SMMU_TLB_NESTED,
  SMMU_TLB_S1,
  SMMU_TLB_S2,
  SMMU_VMID_EL2,
  SmmuTlb,
  type SmmuTlbEntry,
} from "./smmu-tlb.js";
import {
  CLASS_CD,
  CLASS_IN,
  CLASS_TT,
  P_ALL,
  P_PX,
  P_R,
  P_S1PX,
  P_S1W,
  P_S1X,
  P_S2R,
  P_S2W,
  P_S2X,
  P_U,
  P_W,
  P_X,
  SmmuWalker,
  STAGE_2,
  W_EABT,
  W_OK,
} from "./smmu-walk.js";
import { SmmuWalkCache, type SmmuWalkCacheEntry } from "./smmu-walk-cache.js";

/** Where an interrupt of the SMMU comes from. */
export type SmmuInterruptSource = "event" | "pri" | "gerror" | "cmd-sync";

/** How to build an SMMU. */
export interface SmmuV3Options {
  /** Instance name ("smmu0"). */
  readonly name?: string;
  readonly mem: PhysMemory;
  /** Feature set (ID registers); missing ones from DEFAULT_SMMU_FEATURES. */
  readonly features?: Partial<SmmuFeatures>;
  /** Cache sizes and policy; missing ones from DEFAULT_SMMU_CACHE_CONFIG. */
  readonly cache?: Partial<SmmuCacheConfig>;
  /**
   * Process the command queue as soon as CMDQ_PROD moves (default true). With false, commands
   * wait for `processCommands`, so a test can interleave driver and hardware steps.
   */
  readonly autoProcessQueue?: boolean;
  readonly trace?: Trace | null;
  /** Called when the SMMU raises an interrupt (wired or, with an MSI address, after the write). */
  readonly onInterrupt?: (source: SmmuInterruptSource) => void;
}

/** Counters of an SMMU. */
export interface SmmuV3Stats {
  translations: number;
  faults: number;
  /** Event records written to the event queue. */
  events: number;
  /** Event records lost (queue full, disabled or aborted). */
  eventsLost: number;
  commands: number;
  commandErrors: number;
  syncs: number;
  atsRequests: number;
  pageRequests: number;
  pageRequestsDropped: number;
  pageResponses: number;
  stalls: number;
  resumes: number;
  interrupts: number;
}

/**
 * Called for every 64-bit (or narrower) store into an STE or CD the SMMU has fetched: the
 * StreamID, the SubstreamID (CD index) or -1 for an STE, the qword index inside the entry, and the
 * entry as the SMMU would see it right after the store.
 */
export type SmmuConfigWriteCallback = (
  sid: number,
  ssid: number,
  qword: number,
  view: SmmuEntryView,
) => void;

const PAGE = 4096;
const TWO20 = 1048576;
const TWO32 = 4294967296;

// Command fields, from the command layouts: dword 0 is words 0-1, dword 1 words 2-3.
const C_OP = fieldOf(CMD_CFGI_STE, "Opcode");
const C_SSV = fieldOf(CMD_ATC_INV, "SSV");
const C_SSID = fieldOf(CMD_CFGI_CD, "SubstreamID");
const C_VMID = fieldOf(CMD_TLBI_NH_ASID, "VMID");
const C_ASID = fieldOf(CMD_TLBI_NH_ASID, "ASID");
const C_LEAF = fieldOf(CMD_CFGI_STE, "Leaf");
const C_RANGE = fieldOf(CMD_CFGI_STE_RANGE, "Range");
const C_NUM = fieldOf(CMD_TLBI_NH_VA, "NUM");
const C_SCALE = fieldOf(CMD_TLBI_NH_VA, "SCALE");
const C_TTL = fieldOf(CMD_TLBI_NH_VA, "TTL");
const C_TG = fieldOf(CMD_TLBI_NH_VA, "TG");
const C_IPA = fieldOf(CMD_TLBI_S2_IPA, "IPA");
const C_ATC_GLOBAL = fieldOf(CMD_ATC_INV, "Global");
const C_ATC_SIZE = fieldOf(CMD_ATC_INV, "Size");
const C_PRGI = fieldOf(CMD_PRI_RESP, "PRGIndex");
const C_RESP = fieldOf(CMD_PRI_RESP, "Resp");
const C_AC = fieldOf(CMD_RESUME, "Ac");
const C_STAG = fieldOf(CMD_RESUME, "STAG");
const C_CS = fieldOf(CMD_SYNC, "CS");
/** Bits of dword 1's high word that hold IPA[55:32]. */
const IPA_HI_MASK = (2 ** (C_IPA.lsb + C_IPA.width - 96) - 1) >>> 0;
/** The field of `w` (a word of the command) at `f`. */
function cf(w: number, f: { shift: number; mask: number }): number {
  return (w >>> f.shift) & f.mask;
}

const PRI_SSID_SHIFT = fieldOf(PRIQ_ENTRY, "SubstreamID").shift;
const PRI_PRIV = fieldOf(PRIQ_ENTRY, "Priv").inPlace;
const PRI_X = fieldOf(PRIQ_ENTRY, "X").inPlace;
const PRI_R = fieldOf(PRIQ_ENTRY, "R").inPlace;
const PRI_W = fieldOf(PRIQ_ENTRY, "W").inPlace;
const PRI_LAST = fieldOf(PRIQ_ENTRY, "Last").inPlace;
const PRI_SSV = fieldOf(PRIQ_ENTRY, "SSV").inPlace;

/** CR2.REC_CFG_ATS (present with IDR0.ATSRECERR). @spec Arm SMMUv3 (IHI 0070) 6.3.12 */
const CR2_REC_CFG_ATS = fieldOf(CR2_REG, "REC_CFG_ATS").inPlace;

// States of a stall record the event queue could not take yet (7.2.1).
/** Waiting for the queue to become writable. */
const HELD_WAITING = 0;
/** A configuration or TLB invalidation was executed since it was held. */
const HELD_INVALIDATED = 1;
/** ... and a CMD_SYNC completed after it: the transaction must be retried, not reported. */
const HELD_RETRY = 2;

/** Register offsets handled as plain storage. */
const PLAIN_REGS = new Set<number>([
  SMMU_REG.CR1,
  SMMU_REG.CR2,
  SMMU_REG.AGBPA,
  SMMU_REG.GERROR_IRQ_CFG0,
  SMMU_REG.GERROR_IRQ_CFG0 + 4,
  SMMU_REG.GERROR_IRQ_CFG1,
  SMMU_REG.GERROR_IRQ_CFG2,
  SMMU_REG.EVENTQ_IRQ_CFG0,
  SMMU_REG.EVENTQ_IRQ_CFG0 + 4,
  SMMU_REG.EVENTQ_IRQ_CFG1,
  SMMU_REG.EVENTQ_IRQ_CFG2,
  SMMU_REG.PRIQ_IRQ_CFG0,
  SMMU_REG.PRIQ_IRQ_CFG0 + 4,
  SMMU_REG.PRIQ_IRQ_CFG1,
  SMMU_REG.PRIQ_IRQ_CFG2,
]);

/**
 * An Arm SMMUv3. Drivers reach it only through `read32`/`write32` (its two 64 KiB register pages:
 * offsets 0..0x1FFFF) and memory; devices through `translate` and `pageRequest`.
 *
 * Model choices (each an IMPLEMENTATION DEFINED or CONSTRAINED UNPREDICTABLE point of the spec):
 * registers take effect at once (CR0ACK, IRQ_CTRLACK mirror the write; GBPA.Update reads 0);
 * STRTAB_BASE(_CFG) and queue bases are latched when SMMUEN / the queue's enable goes 0 -> 1 and
 * writes while enabled are ignored; only valid STEs and CDs are cached; a stalling fault beyond
 * STALL_MAX, or from a StreamID no device port answers, terminates instead; a stall record the
 * event queue cannot take (disabled, full, EVENTQ_ABT_ERR active) is held, the transaction stays
 * stalled, and the record is written when the queue becomes writable, unless an invalidation and
 * a CMD_SYNC came in between, in which case the SMMU retries the transaction (`stallResume(stag,
 * true)`) instead (7.2.1 permits retrying every held transaction; the model retries only those);
 * a stall record whose write aborts is lost and its transaction terminated; queue write aborts
 * are synchronous (PROD does not move); an automatic PRG response is sent only for a lost
 * request with Last = 1 (8.1, 8.2), never for a Stop Marker; with PASIDs, IDR3.PPS = 0 (the
 * automatic response to a PASID-tagged request checks STE.PPAR); the CMD_SYNC MSI is one 32-bit
 * write of MSIData; an ATC_INV to a StreamID no device answers times
 * out, and the next CMD_SYNC fails with CERROR_ATC_INV_SYNC; CMD_PREFETCH_CONFIG fetches the STE (and CD) into the caches, PREFETCH_ADDR does
 * nothing; RAZ/WI termination (CD.A = 0) is reported to the device as a fault (`code` F_*) since
 * the request interface has no "completed with zeros" answer.
 *
 * @spec Arm SMMUv3 (IHI 0070) chapters 3-8
 */
export class SmmuV3 implements IommuHardware, Mmio {
  readonly name: string;
  readonly mem: PhysMemory;
  readonly features: SmmuFeatures;
  /** Pages below 2^OAS, and below the widest stage-2 input (the checks on every request). */
  private readonly oasPages: number;
  private readonly s2InputPages: number;
  readonly cacheConfig: SmmuCacheConfig;
  readonly stats: SmmuV3Stats = {
    translations: 0,
    faults: 0,
    events: 0,
    eventsLost: 0,
    commands: 0,
    commandErrors: 0,
    syncs: 0,
    atsRequests: 0,
    pageRequests: 0,
    pageRequestsDropped: 0,
    pageResponses: 0,
    stalls: 0,
    resumes: 0,
    interrupts: 0,
  };
  trace: Trace | null;
  autoProcessQueue: boolean;
  /**
   * Sees every command the SMMU executes, before it takes effect: its 4 words (reused by the
   * SMMU: an observer copies what it keeps) and the physical address of its queue slot. Illegal
   * commands, which are not executed, are not shown. An oracle keeps the history. Null: no cost.
   */
  commandObserver: ((w: Uint32Array, at: number) => void) | null = null;

  readonly tlb: SmmuTlb;
  readonly walkCache: SmmuWalkCache;
  readonly configCache: SmmuConfigCache<SmmuSteConfig, SmmuCdConfig>;
  readonly walker: SmmuWalker;
  readonly eventQueue: SmmuEventQueue;
  readonly priQueue: SmmuPriQueue;

  private readonly onInterrupt: ((source: SmmuInterruptSource) => void) | null;
  private readonly ports = new Map<number, DevicePort>();
  private readonly idr: Uint32Array;
  private readonly cmdFeatures: CommandFeatures;
  private readonly scratchSte = new SmmuSteConfig();
  private readonly scratchCd = new SmmuCdConfig();
  private readonly cmd = new Uint32Array(4);
  private readonly evt = new SmmuEventFields();
  private readonly rec = new Uint32Array(EVT_SIZE / 4);
  private readonly priRec = new Uint32Array(PRIQ_ENTRY_SIZE / 4);
  private readonly cdPort: SmmuCdFetchPort;
  /** CR2 bits that exist in this feature set (the others are RES0). */
  private readonly cr2Mask: number;

  // Registers.
  private readonly plain = new Map<number, number>();
  private cr0 = 0;
  private cr2 = 0;
  private gbpa = 0;
  private irqCtrl = 0;
  private gerror = 0;
  private gerrorn = 0;
  private strtabLo = 0;
  private strtabHi = 0;
  private strtabCfg = 0;
  private cmdqBaseLo = 0;
  private cmdqBaseHi = 0;
  private cmdqProd = 0;
  private cmdqCons = 0;
  /** Latched at CMDQEN 0 -> 1. */
  private cmdqBase = 0;
  private cmdqLog2 = 0;
  /** Latched at SMMUEN 0 -> 1. */
  private readonly st: SmmuStreamTable = { base: 0, log2size: 0, fmt: 0, split: 6, e2h: false };

  // Stalled transactions: StreamID -> stall tags.
  private readonly stalled = new Map<number, Set<number>>();
  private stalledCount = 0;
  private nextStag = 0;
  // Stall records held until the event queue is writable (7.2.1, 7.4), oldest first.
  private readonly heldSid: number[] = [];
  private readonly heldStag: number[] = [];
  private readonly heldState: number[] = [];
  private heldWords = new Uint32Array(8 * 8);

  // Hitless-update hook.
  private watchers: SmmuConfigWriteCallback[] = [];
  private prevObserver: WriteObserver | null = null;
  private readonly observer: WriteObserver;
  /** Addresses (64-byte aligned) of fetched STEs -> sid, and CDs -> [sid, ssid]. */
  private readonly seenSte = new Map<number, number>();
  private readonly seenCd = new Map<number, [number, number]>();

  // The request whose event fields `evt` holds (or will hold, once a fault needs them).
  private evReq: TranslationRequest | null = null;
  private evReady = false;
  /** The request's valid STE once known: its PRIVCFG/INSTCFG give the events' PnU/InD. */
  private evSte: SmmuSteConfig | null = null;

  // The last resolution's answer.
  private rPfn = 0;
  private rPerm = 0;
  private rShift = 12;

  constructor(options: SmmuV3Options) {
    this.name = options.name ?? "smmu0";
    this.mem = options.mem;
    const features = resolveSmmuFeatures({ ...DEFAULT_SMMU_FEATURES, ...options.features });
    if (typeof features === "string") throw new RangeError(`SmmuV3 ${this.name}: ${features}`);
    this.features = features;
    this.oasPages = 2 ** (features.oas - 12);
    this.s2InputPages = 2 ** (Math.max(features.oas, features.ttf === 3 ? 40 : 0) - 12);
    const cache = resolveSmmuCacheConfig(options.cache ?? {});
    if (typeof cache === "string") throw new RangeError(`SmmuV3 ${this.name}: ${cache}`);
    this.cacheConfig = cache;
    this.trace = options.trace ?? null;
    this.autoProcessQueue = options.autoProcessQueue ?? true;
    this.onInterrupt = options.onInterrupt ?? null;
    this.idr = smmuIdRegs(features);
    this.cmdFeatures = smmuCommandFeatures(features);
    this.cr2Mask =
      CR2_RECINVSID |
      (features.hyp ? CR2_E2H : 0) |
      (features.btm ? CR2_PTM : 0) |
      (features.ats && features.atsRecErr ? CR2_REC_CFG_ATS : 0);
    this.tlb = new SmmuTlb(cache.tlbSets, cache.tlbWays);
    this.walkCache = new SmmuWalkCache(cache.walkEntries);
    this.configCache = new SmmuConfigCache<SmmuSteConfig, SmmuCdConfig>(
      cache.steEntries,
      cache.cdEntries,
    );
    this.walker = new SmmuWalker(this.mem);
    this.walker.walkCache = cache.walkEntries > 0 ? this.walkCache : null;
    this.eventQueue = new SmmuEventQueue(this.mem, EVT_SIZE, features.eventqs);
    this.priQueue = new SmmuPriQueue(this.mem, PRIQ_ENTRY_SIZE, features.pri ? features.priqs : 0);
    const walker = this.walker;
    this.cdPort = {
      s2Fetch(ste: SmmuSteConfig, ipa: number): number {
        const w = walker.fetchIpa(ste, ipa, false);
        if (w === W_OK) return 0;
        return walkEventId(w);
      },
      get fetchPa() {
        return walker.s2FetchPa;
      },
      get fetchLevel() {
        return walker.level;
      },
      get fetchAbortAddr() {
        return walker.fetchAddr;
      },
    };
    this.observer = (pa, bytes) => this.onMemoryWrite(pa, bytes);
  }

  // --- Registers ---------------------------------------------------------------------------------

  /** A 32-bit register load. Reserved and misaligned offsets read 0. */
  read32(offset: number): number {
    if (!Number.isInteger(offset) || offset < 0 || offset >= 2 * SMMU_PAGE1 || (offset & 3) !== 0)
      return 0;
    switch (offset) {
      case SMMU_REG.IDR0:
      case SMMU_REG.IDR1:
      case SMMU_REG.IDR2:
      case SMMU_REG.IDR3:
      case SMMU_REG.IDR4:
      case SMMU_REG.IDR5:
      case SMMU_REG.IIDR:
      case SMMU_REG.AIDR:
        return this.idr[offset >>> 2] as number;
      case SMMU_REG.CR0:
      case SMMU_REG.CR0ACK:
        return this.cr0;
      case SMMU_REG.CR2:
        return this.cr2;
      case SMMU_REG.STATUSR:
        return 0;
      case SMMU_REG.GBPA:
        return this.gbpa;
      case SMMU_REG.IRQ_CTRL:
      case SMMU_REG.IRQ_CTRLACK:
        return this.irqCtrl;
      case SMMU_REG.GERROR:
        return this.gerror;
      case SMMU_REG.GERRORN:
        return this.gerrorn;
      case SMMU_REG.STRTAB_BASE:
        return this.strtabLo;
      case SMMU_REG.STRTAB_BASE + 4:
        return this.strtabHi;
      case SMMU_REG.STRTAB_BASE_CFG:
        return this.strtabCfg;
      case SMMU_REG.CMDQ_BASE:
        return this.cmdqBaseLo;
      case SMMU_REG.CMDQ_BASE + 4:
        return this.cmdqBaseHi;
      case SMMU_REG.CMDQ_PROD:
        return this.cmdqProd;
      case SMMU_REG.CMDQ_CONS:
        return this.cmdqCons;
      case SMMU_REG.EVENTQ_BASE:
        return this.eventQueue.baseLo;
      case SMMU_REG.EVENTQ_BASE + 4:
        return this.eventQueue.baseHi;
      case SMMU_REG.EVENTQ_PROD:
        return this.eventQueue.prod;
      case SMMU_REG.EVENTQ_CONS:
        return this.eventQueue.cons;
      case SMMU_REG.PRIQ_BASE:
        return this.features.pri ? this.priQueue.baseLo : 0;
      case SMMU_REG.PRIQ_BASE + 4:
        return this.features.pri ? this.priQueue.baseHi : 0;
      case SMMU_REG.PRIQ_PROD:
        return this.features.pri ? this.priQueue.prod : 0;
      case SMMU_REG.PRIQ_CONS:
        return this.features.pri ? this.priQueue.cons : 0;
      default:
        return this.plain.get(offset) ?? 0;
    }
  }

  /** A 32-bit register store. Read-only and reserved registers ignore it. */
  write32(offset: number, value: number): void {
    if (!Number.isInteger(offset) || offset < 0 || offset >= 2 * SMMU_PAGE1 || (offset & 3) !== 0)
      return;
    const v = value >>> 0;
    const q = this.eventQueue;
    const p = this.priQueue;
    switch (offset) {
      case SMMU_REG.CR0:
        this.writeCr0(v);
        return;
      case SMMU_REG.CR2:
        // Read-only while SMMUEN is set (6.3.12); fields of absent features are RES0.
        if (this.enabled) return;
        this.cr2 = v & this.cr2Mask;
        this.st.e2h = (this.cr2 & CR2_E2H) !== 0;
        return;
      case SMMU_REG.GBPA:
        // Only a write with Update set changes GBPA; the update completes at once.
        if ((v & GBPA_UPDATE) !== 0) this.gbpa = v & 0x1f3f1f;
        return;
      case SMMU_REG.IRQ_CTRL:
        this.irqCtrl = v & 7;
        return;
      case SMMU_REG.GERRORN:
        this.writeGerrorn(v);
        return;
      case SMMU_REG.STRTAB_BASE:
        if (!this.enabled) this.strtabLo = v & ~0x3f;
        return;
      case SMMU_REG.STRTAB_BASE + 4:
        if (!this.enabled) this.strtabHi = v & 0x40ffffff;
        return;
      case SMMU_REG.STRTAB_BASE_CFG:
        if (!this.enabled) this.strtabCfg = v & 0x307ff;
        return;
      case SMMU_REG.CMDQ_BASE:
        if ((this.cr0 & CR0_CMDQEN) === 0) this.cmdqBaseLo = v;
        return;
      case SMMU_REG.CMDQ_BASE + 4:
        if ((this.cr0 & CR0_CMDQEN) === 0) this.cmdqBaseHi = v & 0x40ffffff;
        return;
      case SMMU_REG.CMDQ_PROD:
        this.cmdqProd = v & Q_WR_MASK;
        if (this.autoProcessQueue) this.processCommands();
        return;
      case SMMU_REG.CMDQ_CONS:
        if ((this.cr0 & CR0_CMDQEN) === 0) this.cmdqCons = v & (Q_WR_MASK | CMDQ_CONS_ERR_MASK);
        return;
      case SMMU_REG.EVENTQ_BASE:
        if (!q.enabled) q.baseLo = v;
        return;
      case SMMU_REG.EVENTQ_BASE + 4:
        if (!q.enabled) q.baseHi = v & 0x40ffffff;
        return;
      case SMMU_REG.EVENTQ_PROD:
        q.writeProd(v);
        return;
      case SMMU_REG.EVENTQ_CONS:
        q.writeCons(v);
        // Space freed: held stall records go out first (7.2.1).
        if (this.heldSid.length > 0) this.flushHeldStalls();
        return;
      case SMMU_REG.PRIQ_BASE:
        if (this.features.pri && !p.enabled) p.baseLo = v;
        return;
      case SMMU_REG.PRIQ_BASE + 4:
        if (this.features.pri && !p.enabled) p.baseHi = v & 0x40ffffff;
        return;
      case SMMU_REG.PRIQ_PROD:
        if (this.features.pri) p.writeProd(v);
        return;
      case SMMU_REG.PRIQ_CONS:
        if (this.features.pri) p.writeCons(v);
        return;
      default:
        if (PLAIN_REGS.has(offset)) this.plain.set(offset, v);
    }
  }

  /** Whether translation is enabled (CR0.SMMUEN, as acknowledged). */
  get enabled(): boolean {
    return (this.cr0 & CR0_SMMUEN) !== 0;
  }

  /**
   * CR0: every enable takes effect at once, so CR0ACK equals CR0 on the next read. Enabling
   * SMMUEN latches the stream table, enabling a queue latches its base; clearing SMMUEN
   * terminates the stalled transactions.
   *
   * @spec Arm SMMUv3 (IHI 0070) 6.3.9, 6.3.10
   */
  private writeCr0(v: number): void {
    let n = v & CR0_WRITABLE;
    if (!this.features.pri) n &= ~CR0_PRIQEN;
    if (!this.features.ats) n &= ~CR0_ATSCHK;
    const up = n & ~this.cr0;
    const down = this.cr0 & ~n;
    this.cr0 = n >>> 0;
    if ((up & CR0_SMMUEN) !== 0) this.latchStreamTable();
    if ((down & CR0_SMMUEN) !== 0) this.terminateAllStalls();
    if ((up | down) & CR0_EVTQEN) this.eventQueue.setEnabled((n & CR0_EVTQEN) !== 0);
    if ((up & CR0_EVTQEN) !== 0 && this.heldSid.length > 0) this.flushHeldStalls();
    if ((up | down) & CR0_PRIQEN) this.priQueue.setEnabled((n & CR0_PRIQEN) !== 0);
    if ((up & CR0_CMDQEN) !== 0) {
      this.cmdqLog2 = Math.min(this.cmdqBaseLo & 31, this.features.cmdqs);
      const bytes = Math.max(32, 16 * 2 ** this.cmdqLog2);
      const a = (this.cmdqBaseHi & 0xffffff) * TWO32 + ((this.cmdqBaseLo & ~31) >>> 0);
      this.cmdqBase = a - (a % bytes);
      if (this.autoProcessQueue) this.processCommands();
    }
  }

  /** @spec Arm SMMUv3 (IHI 0070) 6.3.24, 6.3.25 (STRTAB_BASE alignment, LOG2SIZE and SPLIT) */
  private latchStreamTable(): void {
    this.storeGen++;
    const st = this.st;
    const f = this.features;
    const addr = (this.strtabHi & 0xffffff) * TWO32 + ((this.strtabLo & ~0x3f) >>> 0);
    const log2size = this.strtabCfg & 0x3f;
    st.log2size = Math.min(log2size, f.sidBits);
    const fmt = (this.strtabCfg >>> 16) & 3;
    st.fmt = fmt === STRTAB_FMT_2LVL && f.twoLevelStreamTable ? STRTAB_FMT_2LVL : 0;
    const split = (this.strtabCfg >>> 6) & 0x1f;
    st.split = split === 8 || split === 10 ? split : 6;
    // The base is aligned by the literal LOG2SIZE, not the one SIDSIZE limits (6.3.24): a table
    // declared larger than the StreamIDs need has unreachable entries, not a different base.
    const bytes =
      st.fmt === STRTAB_FMT_2LVL
        ? Math.max(64, 8 * 2 ** Math.max(0, log2size - st.split))
        : STE_SIZE * 2 ** log2size;
    st.base = addr - (addr % bytes);
  }

  /**
   * GERRORN: acknowledging CMDQ_ERR lets the command queue go on from CONS; acknowledging
   * EVENTQ_ABT_ERR / PRIQ_ABT_ERR makes that queue writable again (7.2.1, 8.2).
   *
   * @spec Arm SMMUv3 (IHI 0070) 6.3.17, 6.3.18
   */
  private writeGerrorn(v: number): void {
    const wasErr = this.cmdqStopped;
    this.gerrorn = v & GERROR_ERR_MASK;
    this.syncQueueAborts();
    if (wasErr && !this.cmdqStopped) {
      this.cmdqCons &= ~CMDQ_CONS_ERR_MASK;
      if (this.autoProcessQueue) this.processCommands();
    }
    if (this.heldSid.length > 0) this.flushHeldStalls();
  }

  /** Toggle a GERROR bit unless that error is already active, and interrupt. */
  private raiseGerror(bit: number): void {
    if (((this.gerror ^ this.gerrorn) & bit) !== 0) return;
    this.gerror = (this.gerror ^ bit) >>> 0;
    this.syncQueueAborts();
    if ((this.irqCtrl & IRQ_CTRL_GERROR_IRQEN) !== 0)
      this.interrupt("gerror", SMMU_REG.GERROR_IRQ_CFG0);
  }

  /** An active EVENTQ_ABT_ERR / PRIQ_ABT_ERR makes its queue unwritable (7.2.1, 8.2). */
  private syncQueueAborts(): void {
    const active = this.gerror ^ this.gerrorn;
    this.eventQueue.aborted = (active & GERROR_EVTQ_ABT_ERR) !== 0;
    this.priQueue.aborted = (active & GERROR_PRIQ_ABT_ERR) !== 0;
  }

  /** Whether the command queue is stopped on an unacknowledged CMDQ_ERR. */
  get cmdqStopped(): boolean {
    return ((this.gerror ^ this.gerrorn) & GERROR_CMDQ_ERR) !== 0;
  }

  // --- Devices -----------------------------------------------------------------------------------

  connect(port: DevicePort): void {
    this.ports.set(port.sid >>> 0, port);
  }

  disconnect(port: DevicePort): void {
    if (this.ports.get(port.sid >>> 0) === port) this.ports.delete(port.sid >>> 0);
  }

  // --- Translation -------------------------------------------------------------------------------

  translate(req: TranslationRequest, out: TranslationResult): void {
    this.stats.translations++;
    if (req.at === AT_TRANSLATION_REQUEST) this.stats.atsRequests++;
    this.resolveInto(req, out, true);
  }

  /**
   * What the tables in memory answer right now: no cache is read or filled, no event recorded,
   * no Access flag or dirty state set, no stall. The oracle compares it with `translate`.
   */
  translateUncached(req: TranslationRequest, out: TranslationResult): void {
    const busError = this.mem.busError;
    const walker = this.walker;
    const wc = walker.walkCache;
    walker.updateFlags = false;
    walker.walkCache = null;
    this.resolveInto(req, out, false);
    walker.updateFlags = true;
    walker.walkCache = wc;
    this.mem.busError = busError;
  }

  private resolveInto(req: TranslationRequest, out: TranslationResult, live: boolean): void {
    out.stallTag = 0;
    out.sizeShift = 12;
    const code = this.resolve(req, out, live);
    if (code === 0) {
      out.status = XLATE_OK;
      out.fault = FaultKind.NONE;
      out.code = 0;
      out.pa = this.rPfn * PAGE + req.offset;
      out.perm = this.rPerm & (DMA_READ | DMA_WRITE | DMA_EXEC);
      out.sizeShift = this.rShift;
      return;
    }
    if (code > 0) this.failed(req, out, code, live);
    // code < 0: stalled, `out` is filled.
  }

  /** Fill `out` for a request that faulted with `code`; count and trace it when live. */
  private failed(
    req: TranslationRequest,
    out: TranslationResult,
    code: number,
    live: boolean,
  ): void {
    out.status = XLATE_FAULT;
    out.pa = 0;
    out.perm = 0;
    out.code = code;
    out.fault = smmuFaultKind(code);
    if (live) {
      this.stats.faults++;
      const trace = this.trace;
      if (trace?.active) {
        trace.emit("fault", {
          iommu: this.name,
          rid: req.rid,
          pasid: req.pasid,
          iova: req.iovaPfn * PAGE + req.offset,
          kind: out.fault,
          code,
        });
      }
    }
  }

  /** Identity: output = input. */
  private identity(req: TranslationRequest): number {
    this.rPfn = req.iovaPfn;
    this.rPerm = P_ALL;
    this.rShift = 12;
    return 0;
  }

  /**
   * Resolve `req`: 0 with rPfn/rPerm/rShift set, -1 when it stalled (`out` filled), or the code
   * of the fault (an event number, SMMU_ABORT_SILENT), after recording what the spec records.
   *
   * @spec Arm SMMUv3 (IHI 0070) 3.3 (lifecycle of a transaction), 3.9.1 (ATS), 3.12 (faults)
   */
  private resolve(req: TranslationRequest, out: TranslationResult, live: boolean): number {
    const at = req.at;
    // Event fields are filled only when a fault needs them (eventFor).
    this.evReq = req;
    this.evReady = false;
    this.evSte = null;
    if (!this.enabled) return this.resolveDisabled(req, live);
    const ste = this.steConfig(req.sid >>> 0, live);
    if (at !== 0 || ste.status !== CFG_OK || !ste.s1) return this.resolveSte(req, ste, out, live);
    // An ordinary transaction through a valid stage 1 (or nested) STE: the checks below in short.
    this.evSte = ste;
    const ssid = req.pasid === NO_PASID ? NO_SSID : req.pasid >>> 0;
    const cd = this.cdConfig(ste, ssid, live);
    if (cd.status !== CFG_OK || cd.bypass) return this.resolveCd(req, ste, cd, out, live);
    return this.stage1(req, ste, cd, out, live);
  }

  /** `resolve` with SMMUEN = 0: ATS requests refused, the others aborted (GBPA) or bypassed. */
  private resolveDisabled(req: TranslationRequest, live: boolean): number {
    const at = req.at;
    if (at === AT_TRANSLATION_REQUEST) return this.report(EVT_ID.F_BAD_ATS_TREQ, live);
    if (at === AT_TRANSLATED) return this.report(EVT_ID.F_TRANSL_FORBIDDEN, live);
    if ((this.gbpa & GBPA_ABORT) !== 0) return SMMU_ABORT_SILENT;
    // Bypass with SMMUEN = 0: an address beyond the OAS aborts, and no event is recorded (3.4).
    if (req.iovaPfn >= this.oasPages) return SMMU_ABORT_SILENT;
    return this.identity(req);
  }

  /** `resolve` once the STE is known, for every request (the general order of checks). */
  private resolveSte(
    req: TranslationRequest,
    ste: SmmuSteConfig,
    out: TranslationResult,
    live: boolean,
  ): number {
    const at = req.at;
    if (at === AT_TRANSLATED && (this.cr0 & CR0_ATSCHK) === 0) return this.translatedPass(req);
    if (ste.status !== CFG_OK) {
      const code = ste.status;
      this.eventFor().addr = ste.fetchAddr;
      return this.configError(code, live);
    }
    this.evSte = ste;
    const config = ste.config;
    if (config < 4) return SMMU_ABORT_SILENT;
    if (at === AT_TRANSLATED) {
      if (config === STE_CFG_BYPASS || ste.eats === EATS_ABT)
        return this.report(EVT_ID.F_TRANSL_FORBIDDEN, live);
      return this.translatedPass(req);
    }
    const ssid = req.pasid === NO_PASID ? NO_SSID : req.pasid >>> 0;
    if (at === AT_TRANSLATION_REQUEST && (config === STE_CFG_BYPASS || ste.eats === EATS_ABT))
      return this.report(EVT_ID.F_BAD_ATS_TREQ, live);
    if (config === STE_CFG_BYPASS) {
      if (ssid !== NO_SSID) return this.configError(EVT_ID.C_BAD_SUBSTREAMID, live);
      if (req.iovaPfn >= this.oasPages) return this.report(EVT_ID.F_ADDR_SIZE, live);
      return this.identity(req);
    }
    if (!ste.s1) {
      if (ssid !== NO_SSID) return this.configError(EVT_ID.C_BAD_SUBSTREAMID, live);
      return this.stage2Only(req, ste, out, live);
    }
    const cd = this.cdConfig(ste, ssid, live);
    if (cd.status !== CFG_OK || cd.bypass) return this.resolveCd(req, ste, cd, out, live);
    return this.stage1(req, ste, cd, out, live);
  }

  /** `resolve` once the CD is known when it is not a usable stage 1 one: an error or S1DSS bypass. */
  private resolveCd(
    req: TranslationRequest,
    ste: SmmuSteConfig,
    cd: SmmuCdConfig,
    out: TranslationResult,
    live: boolean,
  ): number {
    const at = req.at;
    const ats = at !== 0;
    if (cd.status !== CFG_OK) {
      const code = cd.status;
      const ev = this.eventFor();
      ev.addr = cd.fetchAddr;
      if (code >= EVT_ID.F_TRANSLATION && code <= EVT_ID.F_PERMISSION) {
        // A stage 2 fault fetching the CD: a translation fault with CLASS CD, IPA the CD's.
        if (ats) return this.atsNoAccess();
        // RnW/InD/PnU stay those of the input transaction; CLASS CD says the access was a read.
        ev.s2 = true;
        ev.cls = CLASS_CD;
        ev.addr = cd.faultIpa;
        return this.translationFault(req, ste, null, code, out, live);
      }
      if (code === EVT_ID.F_WALK_EABT) {
        ev.s2 = true;
        ev.cls = CLASS_CD;
      }
      return this.configError(code, live);
    }
    if (cd.bypass) {
      if (!ste.s2) {
        // Stage 1 bypassed as with Config 0b1x0 (3.4): an input beyond the IAS is a stage 1
        // F_ADDR_SIZE, then the IPA goes out as the PA, truncated to the OAS.
        if (req.iovaPfn >= this.s2InputPages) {
          if (at === AT_TRANSLATION_REQUEST) return this.atsNoAccess();
          return this.report(EVT_ID.F_ADDR_SIZE, live);
        }
        this.identity(req);
        this.rPfn = req.iovaPfn % this.oasPages;
        // An ATS translation request: read and write, unprivileged off.
        if (at === AT_TRANSLATION_REQUEST) this.rPerm = P_R | P_W;
        return 0;
      }
      return this.stage2Only(req, ste, out, live);
    }
    return bug("SmmuV3.resolveCd: a usable CD");
  }

  /** An ATS Translated request allowed through: output = input, address checked against OAS. */
  private translatedPass(req: TranslationRequest): number {
    if (req.iovaPfn >= this.oasPages) return SMMU_ABORT_SILENT;
    return this.identity(req);
  }

  /**
   * A configuration error (or F_WALK_EABT) of the request being resolved: aborted, and recorded
   * as the request's kind allows. An ordinary transaction records everything but C_BAD_STREAMID,
   * which needs CR2.RECINVSID. An ATS Translation Request or an ATS Translated transaction
   * (reaching here only with ATSCHK) records only with CR2.REC_CFG_ATS; then C_BAD_STREAMID also
   * needs RECINVSID for a Translation Request, but not for a Translated transaction.
   *
   * @spec Arm SMMUv3 (IHI 0070) 7.3.3, 3.9.1.2, 3.9.1.3, 6.3.12
   */
  private configError(code: number, live: boolean): number {
    const at = (this.evReq as TranslationRequest).at;
    const cr2 = this.cr2;
    let record: boolean;
    if (at === 0) record = code !== EVT_ID.C_BAD_STREAMID || (cr2 & CR2_RECINVSID) !== 0;
    else
      record =
        (cr2 & CR2_REC_CFG_ATS) !== 0 &&
        (code !== EVT_ID.C_BAD_STREAMID || at === AT_TRANSLATED || (cr2 & CR2_RECINVSID) !== 0);
    return record ? this.report(code, live) : code;
  }

  /** An ATS translation request whose translation fails: Success with no permission. */
  private atsNoAccess(): number {
    this.rPfn = 0;
    this.rPerm = 0;
    this.rShift = 12;
    return 0;
  }

  /** The event fields for the request being resolved, filled on first use. */
  private eventFor(): SmmuEventFields {
    if (!this.evReady) {
      this.prepEvent(this.evReq as TranslationRequest);
      this.evReady = true;
    }
    return this.evt;
  }

  /**
   * Set the request-derived fields of the event record. PnU and InD are the values after the
   * STE's PRIVCFG/INSTCFG overrides, and InD is 0 for a write.
   *
   * @spec Arm SMMUv3 (IHI 0070) 7.3 (PnU, InD), 7.3.12-7.3.16, 13.1.2
   */
  private prepEvent(req: TranslationRequest): void {
    const e = this.evt;
    const ste = this.evSte;
    let priv = req.privileged;
    let exec = (req.access & DMA_EXEC) !== 0;
    if (ste !== null) {
      if (ste.privCfg === 2) priv = false;
      else if (ste.privCfg === 3) priv = true;
      if (ste.instCfg === 2) exec = false;
      else if (ste.instCfg === 3) exec = true;
    }
    const read = (req.access & DMA_WRITE) === 0;
    e.sid = req.sid >>> 0;
    e.ssid = req.pasid === NO_PASID ? -1 : req.pasid & 0xfffff;
    e.stag = 0;
    e.stall = false;
    e.privileged = priv;
    e.instruction = exec && read;
    e.read = read;
    e.s2 = false;
    e.cls = CLASS_IN;
    e.ttRnW = false;
    const pfn = req.iovaPfn;
    e.inLo = ((pfn % TWO20) * PAGE + req.offset) >>> 0;
    e.inHi = Math.floor(pfn / TWO20) >>> 0;
    e.addr = 0;
  }

  /** Record event `id` with the prepared fields (when live) and return it as the fault code. */
  private report(id: number, live: boolean): number {
    if (live) {
      this.eventFor().id = id;
      this.recordEvent();
    }
    return id;
  }

  /** Write the prepared event record to the event queue. Returns whether it was written. */
  private recordEvent(): boolean {
    encodeEvent(this.evt, this.rec);
    return this.writeRecord();
  }

  /** Push the encoded record `rec`: written, or lost (full: overflow; abort: GERROR). */
  private writeRecord(): boolean {
    const r = this.eventQueue.push(this.rec);
    if (r === Q_WRITTEN) {
      this.stats.events++;
      if ((this.irqCtrl & IRQ_CTRL_EVTQ_IRQEN) !== 0)
        this.interrupt("event", SMMU_REG.EVENTQ_IRQ_CFG0);
      return true;
    }
    this.stats.eventsLost++;
    if (r === Q_ABORT) this.raiseGerror(GERROR_EVTQ_ABT_ERR);
    return false;
  }

  /** Stage 2 only (Config S2, or S1DSS bypass on a nested STE): the input is an IPA. */
  private stage2Only(
    req: TranslationRequest,
    ste: SmmuSteConfig,
    out: TranslationResult,
    live: boolean,
  ): number {
    const ipn = req.iovaPfn;
    if (ipn >= this.s2InputPages) {
      if (req.at === AT_TRANSLATION_REQUEST) return this.atsNoAccess();
      return this.report(EVT_ID.F_ADDR_SIZE, live);
    }
    const write = (req.access & DMA_WRITE) !== 0;
    const tlb = this.tlb;
    let found = false;
    if (live) {
      const i = tlb.lookupS2(ste.vmid, ipn);
      if (i >= 0) {
        const perm = tlb.permOf(i);
        // A write through a clean-but-writable (DBM) entry walks again to set the dirty state.
        if (!(write && (perm & P_W) === 0 && ste.s2Hd)) {
          this.rPfn = tlb.oaFrameFor(i, ipn);
          this.rPerm = perm;
          this.rShift = tlb.sizeShiftOf(i);
          found = true;
        }
      }
    }
    if (!found) {
      const walker = this.walker;
      walker.vmid = ste.vmid;
      const w = walker.walkStage2(ste, ipn, write);
      if (w !== W_OK) {
        if (req.at === AT_TRANSLATION_REQUEST && w !== W_EABT) return this.atsNoAccess();
        return this.walkFault(req, ste, null, w, out, live);
      }
      this.rPfn = walker.pfn;
      this.rPerm = walker.perm;
      this.rShift = walker.sizeShift;
      if (live) {
        const shift = walker.sizeShift;
        tlb.insert(
          ste.vmid,
          0,
          ipn,
          shift,
          false,
          SMMU_TLB_S2,
          walker.pfn,
          walker.perm,
          ste.s2Range.pgShift,
          walker.level,
        );
      }
    }
    return this.checkAccess(req, ste, null, out, live);
  }

  /**
   * Stage 1 (and nested) translation through `cd`: the TLB probe here, the walk out of line, so a
   * hit runs through a small function.
   */
  private stage1(
    req: TranslationRequest,
    ste: SmmuSteConfig,
    cd: SmmuCdConfig,
    out: TranslationResult,
    live: boolean,
  ): number {
    let vmid = ste.vmid;
    let asid = cd.asid;
    if (ste.el2) {
      vmid = SMMU_VMID_EL2;
      if ((this.cr2 & CR2_E2H) === 0) asid = 0;
    }
    if (live) {
      const tlb = this.tlb;
      const vpn = req.iovaPfn;
      const i = tlb.lookup(vmid, asid, vpn);
      if (i >= 0) {
        const perm = tlb.permOf(i);
        // A write through a clean-but-writable (DBM) entry walks again to set the dirty state.
        if ((perm & P_W) !== 0 || (req.access & DMA_WRITE) === 0 || !(cd.hd || ste.s2Hd)) {
          this.rPfn = tlb.oaFrameFor(i, vpn);
          this.rPerm = perm;
          this.rShift = tlb.sizeShiftOf(i);
          return this.checkAccess(req, ste, cd, out, live);
        }
      }
    }
    return this.stage1Walk(req, ste, cd, vmid, asid, out, live);
  }

  /** The stage 1 walk after a TLB miss (or without the TLB), its TLB fill and access check. */
  private stage1Walk(
    req: TranslationRequest,
    ste: SmmuSteConfig,
    cd: SmmuCdConfig,
    vmid: number,
    asid: number,
    out: TranslationResult,
    live: boolean,
  ): number {
    const vpn = req.iovaPfn;
    const write = (req.access & DMA_WRITE) !== 0;
    const walker = this.walker;
    walker.vmid = vmid;
    walker.asid = asid;
    walker.priv = ste.privCfg === 2 ? false : ste.privCfg === 3 ? true : req.privileged;
    const w = walker.walkStage1(ste, cd, vpn, write);
    if (w !== W_OK) {
      if (req.at === AT_TRANSLATION_REQUEST && w !== W_EABT) return this.atsNoAccess();
      return this.walkFault(req, ste, cd, w, out, live);
    }
    this.rPfn = walker.pfn;
    this.rPerm = walker.perm;
    this.rShift = walker.sizeShift;
    if (live) {
      const el2 = ste.el2;
      const global = walker.global || (el2 && (this.cr2 & CR2_E2H) === 0);
      const r = cd.t0.disabled ? cd.t1 : cd.t0;
      this.tlb.insert(
        vmid,
        asid,
        vpn,
        walker.sizeShift,
        global,
        ste.s2 ? SMMU_TLB_NESTED : SMMU_TLB_S1,
        walker.pfn,
        walker.perm,
        ste.s2 ? 0 : r.pgShift,
        ste.s2 ? -2 : walker.level,
      );
    }
    return this.checkAccess(req, ste, cd, out, live);
  }

  /**
   * The permission check of the resolved translation for `req` (or, for an ATS translation
   * request, the permissions to grant): 0 or the permission fault's outcome. The rights the
   * request needs become one mask tested at once; which stage refused is worked out only on a
   * fault, out of line.
   *
   * @spec Arm SMMUv3 (IHI 0070) 13.7 (PCIe permission attributes), Arm ARM D8.4 (permissions)
   */
  private checkAccess(
    req: TranslationRequest,
    ste: SmmuSteConfig,
    cd: SmmuCdConfig | null,
    out: TranslationResult,
    live: boolean,
  ): number {
    const access = req.access;
    const privCfg = ste.privCfg;
    const instCfg = ste.instCfg;
    const priv = privCfg === 2 ? false : privCfg === 3 ? true : req.privileged;
    // A write is a data access whatever INSTCFG says (13.1.2: InD is 0 when RnW is 0).
    const write = (access & DMA_WRITE) !== 0;
    const exec =
      !write && (instCfg === 2 ? false : instCfg === 3 ? true : (access & DMA_EXEC) !== 0);
    if (req.at === AT_TRANSLATION_REQUEST) return this.atsGrant(priv, exec, cd);
    const perm = this.rPerm;
    let need = 0;
    if (write) need = P_S1W | P_S2W;
    if (exec) need |= (priv ? P_S1PX : P_S1X) | P_S2X | P_S2R;
    else if ((access & DMA_READ) !== 0) need |= P_S2R;
    if (!priv) need |= P_U;
    if ((perm & need) !== need)
      return this.permissionFault(req, ste, cd, out, live, priv, exec, write);
    // PAN: a privileged data access to unprivileged-accessible memory faults at stage 1.
    if (!priv || exec || (perm & P_U) === 0 || (cd === null ? true : !cd.pan)) return 0;
    return this.permissionFault(req, ste, cd, out, live, priv, exec, write);
  }

  /** What an ATS translation request is granted: the rights of its privilege, less X unless asked. */
  private atsGrant(priv: boolean, exec: boolean, cd: SmmuCdConfig | null): number {
    const perm = this.rPerm;
    let g = 0;
    if (priv) {
      if (!(cd?.pan && (perm & P_U) !== 0)) g = perm & (P_R | P_W);
      if ((perm & P_PX) !== 0) g |= P_X;
    } else if ((perm & P_U) !== 0) {
      g = perm & (P_R | P_W | P_X);
    }
    if (!exec) g &= ~P_X;
    this.rPerm = g;
    return 0;
  }

  /**
   * The permission fault `checkAccess` found: at stage 1 if stage 1 refuses (its fault is raised
   * before stage 2 translates the output address, Arm ARM stage 1 then stage 2), else at stage 2.
   */
  private permissionFault(
    req: TranslationRequest,
    ste: SmmuSteConfig,
    cd: SmmuCdConfig | null,
    out: TranslationResult,
    live: boolean,
    priv: boolean,
    exec: boolean,
    write: boolean,
  ): number {
    const perm = this.rPerm;
    let s1ok: boolean;
    if (priv)
      s1ok =
        !((write && (perm & P_S1W) === 0) || (exec && (perm & P_S1PX) === 0)) &&
        !(cd?.pan && !exec && (perm & P_U) !== 0);
    else
      s1ok = !(
        (perm & P_U) === 0 ||
        (write && (perm & P_S1W) === 0) ||
        (exec && (perm & P_S1X) === 0)
      );
    const s2 = s1ok;
    const ev = this.eventFor();
    ev.s2 = s2;
    ev.cls = CLASS_IN;
    if (s2) ev.addr = this.ipaOfFault(req, ste, cd);
    return this.translationFault(req, ste, s2 ? null : cd, EVT_ID.F_PERMISSION, out, live);
  }

  /** The IPA a stage 2 permission fault reports: the stage 1 output (or the input for S2 only). */
  private ipaOfFault(req: TranslationRequest, ste: SmmuSteConfig, cd: SmmuCdConfig | null): number {
    if (cd === null || !ste.s1 || cd.bypass) return req.iovaPfn * PAGE;
    // A combined TLB entry does not keep the stage 1 output: walk stage 1 again, side-effect free.
    const walker = this.walker;
    const flags = walker.updateFlags;
    const wc = walker.walkCache;
    walker.updateFlags = false;
    walker.walkCache = null;
    const w = walker.walkStage1(ste, cd, req.iovaPfn, false, true);
    walker.updateFlags = flags;
    walker.walkCache = wc;
    return w === W_OK ? walker.pfn * PAGE : 0;
  }

  /** A walk fault `w` of the walker, as its event. */
  private walkFault(
    req: TranslationRequest,
    ste: SmmuSteConfig,
    cd: SmmuCdConfig | null,
    w: number,
    out: TranslationResult,
    live: boolean,
  ): number {
    const walker = this.walker;
    const ev = this.eventFor();
    const id = walkEventId(w);
    const s2 = walker.stage === STAGE_2;
    ev.s2 = s2;
    ev.cls = s2
      ? walker.cls
      : cd === null
        ? CLASS_IN
        : walker.cls === CLASS_TT
          ? CLASS_TT
          : CLASS_IN;
    if (id === EVT_ID.F_WALK_EABT) {
      ev.cls = s2 ? walker.cls : CLASS_TT;
      ev.addr = walker.fetchAddr;
      // For an ATS Translation Request this is a configuration error (CA, REC_CFG_ATS: 3.9.1.2).
      return this.configError(id, live);
    }
    ev.addr = s2 ? walker.ipa : 0;
    if (id === EVT_ID.F_PERMISSION && walker.cls === CLASS_TT) ev.ttRnW = !walker.ttWrite;
    return this.translationFault(req, ste, s2 ? null : cd, id, out, live);
  }

  /**
   * A translation-related fault (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION) at stage 1
   * (`cd` given: CD.{A,R,S}) or stage 2 (STE.{S2R,S2S}): stalled, or terminated and recorded as
   * configured.
   *
   * @spec Arm SMMUv3 (IHI 0070) 3.12, 5.5
   */
  private translationFault(
    req: TranslationRequest,
    ste: SmmuSteConfig,
    cd: SmmuCdConfig | null,
    id: number,
    out: TranslationResult,
    live: boolean,
  ): number {
    if (!live) return id;
    const ev = this.eventFor();
    ev.id = id;
    const stall = cd !== null ? cd.s : ste.s2S;
    const record = cd !== null ? cd.r : ste.s2R;
    if (stall && this.features.stallModel !== 1) {
      const sid = req.sid >>> 0;
      const port = this.ports.get(sid);
      if (port !== undefined && this.stalledCount < this.features.stallMax) {
        const stag = this.allocStag(sid);
        ev.stall = true;
        ev.stag = stag;
        let stalled: boolean;
        if (this.heldSid.length === 0 && this.eventQueue.writable) {
          stalled = this.recordEvent();
        } else {
          // A stall record is never discarded (7.2.1, 7.4): held until the queue is writable.
          encodeEvent(ev, this.rec);
          this.holdStallRecord(sid, stag);
          stalled = true;
        }
        if (stalled) {
          this.stats.stalls++;
          out.status = XLATE_STALLED;
          out.stallTag = stag;
          out.pa = 0;
          out.perm = 0;
          out.code = id;
          out.fault = smmuFaultKind(id);
          return -1;
        }
        this.releaseStag(sid, stag);
        return id;
      }
      ev.stall = false;
    }
    if (record || stall) this.recordEvent();
    return id;
  }

  private allocStag(sid: number): number {
    let set = this.stalled.get(sid);
    if (set === undefined) {
      set = new Set();
      this.stalled.set(sid, set);
    }
    let stag = this.nextStag;
    while (set.has(stag)) stag = (stag + 1) & 0xffff;
    this.nextStag = (stag + 1) & 0xffff;
    set.add(stag);
    this.stalledCount++;
    return stag;
  }

  private releaseStag(sid: number, stag: number): boolean {
    const set = this.stalled.get(sid);
    if (set === undefined || !set.delete(stag)) return false;
    this.stalledCount--;
    if (set.size === 0) this.stalled.delete(sid);
    return true;
  }

  /** Stalled transactions waiting for a RESUME or STALL_TERM, per StreamID (for tests). */
  stalledTags(sid: number): number[] {
    return [...(this.stalled.get(sid >>> 0) ?? [])];
  }

  private terminateAllStalls(): void {
    for (const [sid, set] of [...this.stalled]) {
      for (const stag of [...set]) this.resumeStalled(sid, stag, false);
    }
  }

  private resumeStalled(sid: number, stag: number, retry: boolean): void {
    if (!this.releaseStag(sid, stag)) return;
    // A resumed or terminated transaction's held record is no longer reported.
    if (this.heldSid.length > 0) {
      for (let i = 0; i < this.heldSid.length; i++) {
        if (this.heldSid[i] === sid && this.heldStag[i] === stag) {
          this.dropHeld(i);
          break;
        }
      }
    }
    this.stats.resumes++;
    this.ports.get(sid)?.stallResume(stag, retry);
  }

  /** Keep the stall record in `rec` of (sid, stag) until the event queue is writable. */
  private holdStallRecord(sid: number, stag: number): void {
    const n = this.heldSid.length;
    if (this.heldWords.length < (n + 1) * 8) {
      const grown = new Uint32Array(this.heldWords.length * 2);
      grown.set(this.heldWords);
      this.heldWords = grown;
    }
    this.heldWords.set(this.rec, n * 8);
    this.heldSid.push(sid);
    this.heldStag.push(stag);
    this.heldState.push(HELD_WAITING);
  }

  private dropHeld(i: number): void {
    const n = this.heldSid.length;
    this.heldWords.copyWithin(i * 8, (i + 1) * 8, n * 8);
    this.heldSid.splice(i, 1);
    this.heldStag.splice(i, 1);
    this.heldState.splice(i, 1);
  }

  /**
   * The event queue may have become writable: write the held stall records, oldest first, while
   * it stays writable. A transaction an invalidation and CMD_SYNC reached while it was held is
   * retried instead (the device gets `stallResume(stag, true)`); if it faults again, the new
   * fault is recorded then (7.2.1).
   *
   * @spec Arm SMMUv3 (IHI 0070) 7.2.1, 7.4, 4.7.3
   */
  private flushHeldStalls(): void {
    const rec = this.rec;
    while (this.heldSid.length > 0 && this.eventQueue.writable) {
      const sid = this.heldSid[0] as number;
      const stag = this.heldStag[0] as number;
      const state = this.heldState[0] as number;
      for (let k = 0; k < 8; k++) rec[k] = this.heldWords[k] as number;
      this.dropHeld(0);
      if (state === HELD_RETRY) this.resumeStalled(sid, stag, true);
      else if (!this.writeRecord()) this.resumeStalled(sid, stag, false);
    }
  }

  /** Advance the held records on an invalidation command (`sync` false) or a CMD_SYNC. */
  private noteHeldInvalidation(sync: boolean): void {
    const st = this.heldState;
    for (let i = 0; i < st.length; i++) {
      if (!sync) {
        if (st[i] === HELD_WAITING) st[i] = HELD_INVALIDATED;
      } else if (st[i] === HELD_INVALIDATED) st[i] = HELD_RETRY;
    }
  }

  // --- Configuration structures ------------------------------------------------------------------

  /** The decoded STE of `sid`, from the STE cache or memory. */
  private steConfig(sid: number, live: boolean): SmmuSteConfig {
    const cache = this.configCache;
    const useCache = live && cache.steCapacity > 0;
    if (useCache) {
      const hit = cache.lookupSte(sid);
      if (hit !== undefined) return hit;
    }
    return this.fetchSte(sid, useCache);
  }

  /** Fetch and decode the STE of `sid` (after a miss, or uncached), caching it if `useCache`. */
  private fetchSte(sid: number, useCache: boolean): SmmuSteConfig {
    const cache = this.configCache;
    const out = useCache ? new SmmuSteConfig() : this.scratchSte;
    decodeSte(this.mem, this.st, sid, this.features, out);
    if (this.watchers.length > 0) this.noteSte(sid);
    if (useCache && out.status === CFG_OK) cache.insertSte(sid, out);
    return out;
  }

  /** The decoded CD for (ste, ssid), from the CD cache or memory. */
  private cdConfig(ste: SmmuSteConfig, ssid: number, live: boolean): SmmuCdConfig {
    const cache = this.configCache;
    const useCache = live && cache.cdCapacity > 0;
    // Requests without a SubstreamID use CD 0 unless S1DSS decides otherwise (decodeCd says).
    const key = ssid === NO_SSID ? 0 : ssid;
    // Only a request that selects a CD by itself may use the cache: the S1DSS and S1CDMax checks
    // come first (SubstreamID 0 under S1DSS = SSID0 must not find CD 0).
    const direct =
      ssid === NO_SSID
        ? ste.s1CdMax === 0 || ste.s1Dss === 2
        : ste.s1CdMax > 0 && ssid < ste.cdLimit && !(ssid === 0 && ste.s1Dss === 2);
    if (useCache && direct) {
      const hit = cache.lookupCd(ste.sid, key);
      if (hit !== undefined) return hit;
    }
    return this.fetchCd(ste, ssid, useCache && direct);
  }

  /** Fetch and decode the CD for (ste, ssid) (after a miss, or uncached), caching it if `useCache`. */
  private fetchCd(ste: SmmuSteConfig, ssid: number, useCache: boolean): SmmuCdConfig {
    const cache = this.configCache;
    const walker = this.walker;
    walker.vmid = ste.vmid;
    const out = useCache ? new SmmuCdConfig() : this.scratchCd;
    decodeCd(this.mem, ste, ssid, this.features, this.cdPort, out);
    if (this.watchers.length > 0 && out.status !== EVT_ID.F_STREAM_DISABLED && !out.bypass)
      this.noteCd(ste.sid, out.ssid);
    if (useCache && out.status === CFG_OK && !out.bypass) cache.insertCd(ste.sid, out.ssid, out);
    return out;
  }

  // --- Commands ----------------------------------------------------------------------------------

  /**
   * Consume commands from CMDQ_CONS towards CMDQ_PROD, at most `budget` of them. Stops at an
   * illegal command (CERROR_ILL in CONS.ERR, GERROR.CMDQ_ERR toggled, CONS left on it) or a fetch
   * abort (CERROR_ABT), and while that error is active. Returns the number consumed.
   *
   * @spec Arm SMMUv3 (IHI 0070) 3.5.1 (command queue), 4.1.3 (errors), 7.1 (CMDQ errors)
   */
  processCommands(budget = Number.POSITIVE_INFINITY): number {
    if ((this.cr0 & CR0_CMDQEN) === 0 || this.cmdqStopped) return 0;
    const log2 = this.cmdqLog2;
    const mem = this.mem;
    const w = this.cmd;
    let done = 0;
    while (done < budget && !qEmpty(this.cmdqProd, this.cmdqCons, log2)) {
      const idx = this.cmdqCons & ((1 << log2) - 1);
      const at = this.cmdqBase + idx * 16;
      mem.busError = false;
      w[0] = mem.read64(at);
      w[1] = mem.hi;
      w[2] = mem.read64(at + 8);
      w[3] = mem.hi;
      if (mem.busError) {
        mem.busError = false;
        this.commandFailed(CMDQ_CONS_ERR_ABT);
        break;
      }
      const err = commandError(w, 0, this.cmdFeatures);
      if (err !== 0) {
        this.commandFailed(CMDQ_CONS_ERR_ILL);
        break;
      }
      // An ATC invalidation nobody completed fails the next CMD_SYNC, which CONS stays on
      // (3.9.1.4); software acknowledges and the CMD_SYNC runs again.
      if (this.atcInvFailed && ((w[0] as number) & 0xff) === CMDQ_OP.CMD_SYNC) {
        this.atcInvFailed = false;
        this.commandFailed(CMDQ_CONS_ERR_ATC_INV_SYNC);
        break;
      }
      this.commandObserver?.(w, at);
      this.execute(w);
      this.stats.commands++;
      done++;
      this.cmdqCons = qInc(this.cmdqCons & Q_WR_MASK, log2);
    }
    return done;
  }

  /** An ATC_INV went to a StreamID no device answers: the next CMD_SYNC reports it. */
  private atcInvFailed = false;

  private commandFailed(code: number): void {
    this.stats.commandErrors++;
    this.cmdqCons = ((this.cmdqCons & Q_WR_MASK) | (code << CMDQ_CONS_ERR_SHIFT)) >>> 0;
    this.raiseGerror(GERROR_CMDQ_ERR);
  }

  /** Carry out one legal command (already checked by `commandError`). */
  private execute(w: Uint32Array): void {
    const w0 = w[0] as number;
    const w1 = w[1] as number;
    const w2 = w[2] as number;
    const w3 = w[3] as number;
    const op = cf(w0, C_OP);
    const ssid = cf(w0, C_SSID);
    const ssv = (w0 & C_SSV.inPlace) !== 0;
    const vmid = cf(w1, C_VMID);
    const asid = cf(w1, C_ASID);
    const leaf = (w2 & C_LEAF.inPlace) !== 0;
    const cache = this.configCache;
    const tlb = this.tlb;
    const wc = this.walkCache;
    // CFGI_* and TLBI_* may change what a held stalled transaction would see (7.2.1).
    if (this.heldSid.length > 0 && op >= CMDQ_OP.CFGI_STE && op <= CMDQ_OP.TLBI_NSNH_ALL)
      this.noteHeldInvalidation(false);
    switch (op) {
      case CMDQ_OP.PREFETCH_CONFIG:
        this.prefetch(w1, ssv ? ssid : NO_SSID);
        return;
      case CMDQ_OP.PREFETCH_ADDR:
        return;
      case CMDQ_OP.CFGI_STE:
        cache.cfgiSte(w1, leaf);
        if (this.trace?.active)
          this.traceFlush("cfgi-ste", `sid=0x${w1.toString(16)} leaf=${leaf}`);
        return;
      case CMDQ_OP.CFGI_STE_RANGE: {
        const range = cf(w2, C_RANGE);
        if (range === CFGI_ALL_RANGE) cache.cfgiAll();
        else cache.cfgiSteRange(w1, range);
        if (this.trace?.active)
          this.traceFlush("cfgi-ste-range", `sid=0x${w1.toString(16)} range=${range}`);
        return;
      }
      case CMDQ_OP.CFGI_CD:
        cache.cfgiCd(w1, ssid, leaf);
        if (this.trace?.active)
          this.traceFlush("cfgi-cd", `sid=0x${w1.toString(16)} ssid=${ssid} leaf=${leaf}`);
        return;
      case CMDQ_OP.CFGI_CD_ALL:
        cache.cfgiCdAll(w1);
        if (this.trace?.active) this.traceFlush("cfgi-cd-all", `sid=0x${w1.toString(16)}`);
        return;
      case CMDQ_OP.TLBI_NH_ALL:
        tlb.invalidateNhAll(vmid);
        wc.invalidateNhAll(vmid);
        if (this.trace?.active) this.traceFlush("tlbi-nh-all", `vmid=${vmid}`);
        return;
      case CMDQ_OP.TLBI_NH_ASID:
        tlb.invalidateAsid(vmid, asid);
        wc.invalidateAsid(vmid, asid);
        if (this.trace?.active) this.traceFlush("tlbi-nh-asid", `vmid=${vmid} asid=${asid}`);
        return;
      case CMDQ_OP.TLBI_NH_VA:
      case CMDQ_OP.TLBI_NH_VAA:
      case CMDQ_OP.TLBI_EL2_VA:
      case CMDQ_OP.TLBI_EL2_VAA:
      case CMDQ_OP.TLBI_S2_IPA:
        this.rangeInvalidate(op, w0, vmid, asid, w2, w3);
        return;
      case CMDQ_OP.TLBI_EL2_ALL:
        tlb.invalidateEl2All();
        wc.invalidateEl2All();
        if (this.trace?.active) this.traceFlush("tlbi-el2-all", "");
        return;
      case CMDQ_OP.TLBI_EL2_ASID:
        tlb.invalidateEl2Asid(asid);
        wc.invalidateEl2Asid(asid);
        if (this.trace?.active) this.traceFlush("tlbi-el2-asid", `asid=${asid}`);
        return;
      case CMDQ_OP.TLBI_S12_VMALL:
        tlb.invalidateVmid(vmid);
        wc.invalidateVmid(vmid);
        if (this.trace?.active) this.traceFlush("tlbi-s12-vmall", `vmid=${vmid}`);
        return;
      case CMDQ_OP.TLBI_NSNH_ALL:
        tlb.invalidateAll();
        wc.invalidateAll();
        if (this.trace?.active) this.traceFlush("tlbi-nsnh-all", "");
        return;
      case CMDQ_OP.ATC_INV: {
        // With SMMUEN = 0 the command is ignored (4.5.1).
        if (!this.enabled) return;
        const size = cf(w2, C_ATC_SIZE);
        const pfn = w3 * TWO20 + (w2 >>> 12);
        const pages = size >= ATC_INV_SIZE_ALL ? 0 : 2 ** size;
        const base = pages === 0 ? 0 : pfn - (pfn % pages);
        const global = ssv && (w0 & C_ATC_GLOBAL.inPlace) !== 0;
        if (this.trace?.active)
          this.traceFlush(
            "atc-inv",
            `sid=0x${w1.toString(16)} ssid=${ssv ? ssid : -1} size=${size}`,
          );
        const port = this.ports.get(w1 >>> 0);
        if (port === undefined) this.atcInvFailed = true;
        else port.atsInvalidate(ssv ? ssid : NO_PASID, base, pages, global);
        return;
      }
      case CMDQ_OP.PRI_RESP: {
        const prgi = cf(w2, C_PRGI);
        const resp = cf(w2, C_RESP);
        const code =
          resp === 2 ? PRG_SUCCESS : resp === 1 ? PRG_INVALID_REQUEST : PRG_RESPONSE_FAILURE;
        this.respond(w1 >>> 0, ssv ? ssid : NO_PASID, prgi, code);
        return;
      }
      case CMDQ_OP.RESUME:
        this.resumeStalled(w1 >>> 0, cf(w2, C_STAG), (w0 & C_AC.inPlace) !== 0);
        return;
      case CMDQ_OP.STALL_TERM: {
        const set = this.stalled.get(w1 >>> 0);
        if (set !== undefined)
          for (const stag of [...set]) this.resumeStalled(w1 >>> 0, stag, false);
        return;
      }
      case CMDQ_OP.CMD_SYNC:
        this.sync(w0, w1, w2, w3);
        return;
    }
  }

  /**
   * CMD_TLBI_{NH_VA, NH_VAA, EL2_VA, EL2_VAA, S2_IPA}: the address range, from TG/NUM/SCALE with
   * IDR3.RIL ((NUM+1) * 2^SCALE granules) or one page otherwise, to the TLB and walk cache.
   *
   * @spec Arm SMMUv3 (IHI 0070) 4.4.1.1 (range invalidation), 4.4.2, 4.4.3.1
   */
  private rangeInvalidate(
    op: number,
    w0: number,
    vmid: number,
    asid: number,
    w2: number,
    w3: number,
  ): void {
    const leaf = (w2 & C_LEAF.inPlace) !== 0;
    let tg = 0;
    let ttl = 0;
    let pages = 1;
    if (this.features.ril) {
      tg = cf(w2, C_TG);
      ttl = cf(w2, C_TTL);
      // Without DS (not modelled), TTL 1 with the 16K granule means "no level hint".
      if (tg === 2 && ttl === 1) ttl = 0;
      if (tg !== 0) {
        const num = cf(w0, C_NUM);
        // SCALE[5] exists only with IDR5.DS.
        const scale = cf(w0, C_SCALE) & 0x1f;
        const tgShift = 10 + 2 * tg;
        pages = (num + 1) * 2 ** scale * 2 ** (tgShift - 12);
      }
    }
    const tgShift = tg === 0 ? 0 : 10 + 2 * tg;
    // VA[63:12] (IPA[55:12] for S2_IPA): bits [31:12] of dword 1's low half and its high half.
    const hi = op === CMDQ_OP.TLBI_S2_IPA ? w3 & IPA_HI_MASK : w3;
    const vpn = hi * TWO20 + (w2 >>> 12);
    const tlb = this.tlb;
    const wc = this.walkCache;
    switch (op) {
      case CMDQ_OP.TLBI_NH_VA:
        tlb.invalidateVa(vmid, asid, vpn, pages, leaf, ttl, tgShift);
        wc.invalidateVa(vmid, asid, vpn, pages, leaf, ttl, tgShift);
        break;
      case CMDQ_OP.TLBI_NH_VAA:
        tlb.invalidateVaa(vmid, vpn, pages, leaf, ttl, tgShift);
        wc.invalidateVaa(vmid, vpn, pages, leaf, ttl, tgShift);
        break;
      case CMDQ_OP.TLBI_EL2_VA:
        tlb.invalidateEl2Va(asid, vpn, pages, leaf, ttl, tgShift);
        wc.invalidateEl2Va(asid, vpn, pages, leaf, ttl, tgShift);
        break;
      case CMDQ_OP.TLBI_EL2_VAA:
        tlb.invalidateEl2Vaa(vpn, pages, leaf, ttl, tgShift);
        wc.invalidateEl2Vaa(vpn, pages, leaf, ttl, tgShift);
        break;
      default:
        tlb.invalidateS2Ipa(vmid, vpn, pages, leaf, ttl, tgShift);
        wc.invalidateS2Ipa(vmid, vpn, pages, leaf, ttl, tgShift);
    }
    if (this.trace?.active)
      this.traceFlush(
        "tlbi-range",
        `op=0x${op.toString(16)} vmid=${vmid} asid=${asid} vpn=0x${vpn.toString(16)} pages=${pages} leaf=${leaf} ttl=${ttl} tg=${tg}`,
      );
  }

  /**
   * CMD_SYNC: every earlier command has completed (commands complete as they are consumed);
   * CS = SIG_IRQ writes MSIData to MSIAddress (or raises the wired CMD_SYNC interrupt when the
   * address is 0 or MSIs are not implemented).
   *
   * @spec Arm SMMUv3 (IHI 0070) 4.7.3
   */
  private sync(w0: number, w1: number, w2: number, w3: number): void {
    this.stats.syncs++;
    if (this.heldSid.length > 0) this.noteHeldInvalidation(true);
    const cs = cf(w0, C_CS);
    if (cs !== CMD_SYNC_CS_IRQ) return;
    const addr = (w3 & 0xffffff) * TWO32 + ((w2 & ~3) >>> 0);
    if (addr !== 0 && this.features.msi) {
      this.mem.busError = false;
      this.mem.write32(addr, w1);
      if (this.mem.busError) {
        this.mem.busError = false;
        this.raiseGerror(GERROR_MSI_CMDQ_ABT_ERR);
      }
    }
    // A wired CMD_SYNC interrupt output is asserted whatever MSIAddress says (4.7.3).
    this.stats.interrupts++;
    this.onInterrupt?.("cmd-sync");
  }

  /** CMD_PREFETCH_CONFIG: fetch the STE (and the CD of `ssid`) into the configuration caches. */
  private prefetch(sid: number, ssid: number): void {
    if (!this.enabled) return;
    const ste = this.steConfig(sid >>> 0, true);
    if (ste.status === CFG_OK && ste.s1 && ste.config >= 4 && ssid !== NO_SSID)
      this.cdConfig(ste, ssid, true);
  }

  private respond(sid: number, pasid: number, prgi: number, code: number): void {
    const port = this.ports.get(sid);
    if (port === undefined) return;
    this.stats.pageResponses++;
    port.prgResponse(pasid, prgi, code);
  }

  private traceFlush(scope: string, detail: string): void {
    const trace = this.trace;
    if (trace?.active) trace.emit("flush", { iommu: this.name, scope, detail });
  }

  /** Raise an interrupt: the MSI write when its CFG0 address is set, and the wired notice. */
  private interrupt(source: SmmuInterruptSource, cfg0: number): void {
    this.stats.interrupts++;
    const lo = this.plain.get(cfg0) ?? 0;
    const hi = this.plain.get(cfg0 + 4) ?? 0;
    const addr = (hi & 0xffffff) * TWO32 + ((lo & ~3) >>> 0);
    let aborted = false;
    if (addr !== 0 && this.features.msi) {
      this.mem.busError = false;
      this.mem.write32(addr, this.plain.get(cfg0 + 8) ?? 0);
      aborted = this.mem.busError;
      this.mem.busError = false;
    }
    this.onInterrupt?.(source);
    // An aborted MSI write is a global error of its own (6.3.17 MSI_*_ABT_ERR); an active one
    // is not raised again, so an aborting GERROR MSI does not loop.
    if (aborted)
      this.raiseGerror(
        source === "event"
          ? GERROR_MSI_EVTQ_ABT_ERR
          : source === "pri"
            ? GERROR_MSI_PRIQ_ABT_ERR
            : GERROR_MSI_GERROR_ABT_ERR,
      );
  }

  // --- Page requests -----------------------------------------------------------------------------

  /**
   * A PRI page request: written to the PRI queue. A request the SMMU cannot queue is lost, and a
   * lost request with Last = 1 (not a Stop Marker: SSV = 1, L/W/R = 1/0/0) is answered by the SMMU
   * itself: Response Failure without a PASID when PRI is off, the queue is disabled or a
   * PRIQ_ABT_ERR is active (8.2), or when the write of this very entry aborted (synchronous
   * abort, 8.2); on overflow (8.1) Success, carrying the PASID when STE.PPAR asks for it, or
   * Response Failure without a PASID when the STE cannot be used.
   *
   * @spec Arm SMMUv3 (IHI 0070) 8, 8.1, 8.2, 3.9.1
   */
  pageRequest(req: PageRequest): void {
    this.stats.pageRequests++;
    const sid = req.sid >>> 0;
    const withPasid = req.pasid !== NO_PASID && this.features.ssidBits > 0;
    const read = (req.access & (DMA_READ | DMA_EXEC)) !== 0;
    const write = (req.access & DMA_WRITE) !== 0;
    // A Stop Marker is never answered (8.1, 8.2).
    const answer = req.last && !(withPasid && !read && !write);
    const q = this.priQueue;
    if (!this.features.pri || !this.enabled || !q.enabled || q.aborted) {
      this.stats.pageRequestsDropped++;
      if (answer) this.respond(sid, NO_PASID, req.prgIndex, PRG_RESPONSE_FAILURE);
      return;
    }
    const r = this.priRec;
    let w1 = 0;
    if (withPasid) {
      w1 |= ((req.pasid & 0xfffff) << PRI_SSID_SHIFT) | PRI_SSV;
      if (req.privileged) w1 |= PRI_PRIV;
      if ((req.access & DMA_EXEC) !== 0) w1 |= PRI_X;
    }
    if (read) w1 |= PRI_R;
    if (write) w1 |= PRI_W;
    if (req.last) w1 |= PRI_LAST;
    r[0] = sid;
    r[1] = w1 >>> 0;
    const pfn = req.iovaPfn;
    r[2] = (((pfn % TWO20) * PAGE) | (req.prgIndex & 0x1ff)) >>> 0;
    r[3] = Math.floor(pfn / TWO20) >>> 0;
    const res = q.push(r);
    if (res === Q_WRITTEN) {
      if ((this.irqCtrl & IRQ_CTRL_PRIQ_IRQEN) !== 0) this.interrupt("pri", SMMU_REG.PRIQ_IRQ_CFG0);
      return;
    }
    this.stats.pageRequestsDropped++;
    if (res === Q_ABORT) {
      this.raiseGerror(GERROR_PRIQ_ABT_ERR);
      if (answer) this.respond(sid, NO_PASID, req.prgIndex, PRG_RESPONSE_FAILURE);
      return;
    }
    if (answer) this.overflowResponse(req, withPasid);
  }

  /**
   * The automatic PRG response to a Last request lost to a PRI queue overflow. Without a PASID:
   * Success. With one (IDR3.PPS = 0 here): the StreamID's STE is looked up; a valid STE gives
   * Success, with the PASID when STE.PPAR = 1; an STE that cannot be used gives Response Failure
   * without a PASID, and its C_BAD_STREAMID (with RECINVSID), F_STE_FETCH or C_BAD_STE is recorded
   * only with CR2.REC_CFG_ATS.
   *
   * @spec Arm SMMUv3 (IHI 0070) 8.1
   */
  private overflowResponse(req: PageRequest, withPasid: boolean): void {
    const sid = req.sid >>> 0;
    if (!withPasid) {
      this.respond(sid, NO_PASID, req.prgIndex, PRG_SUCCESS);
      return;
    }
    const ste = this.steConfig(sid, true);
    if (ste.status === CFG_OK) {
      this.respond(sid, ste.ppar ? req.pasid : NO_PASID, req.prgIndex, PRG_SUCCESS);
      return;
    }
    const code = ste.status;
    const cr2 = this.cr2;
    if (
      (cr2 & CR2_REC_CFG_ATS) !== 0 &&
      (code !== EVT_ID.C_BAD_STREAMID || (cr2 & CR2_RECINVSID) !== 0)
    ) {
      const e = this.evt;
      this.evReady = false; // the fields below are not a translation's
      e.id = code;
      e.sid = sid;
      e.ssid = req.pasid & 0xfffff;
      e.stag = 0;
      e.stall = false;
      e.s2 = false;
      e.cls = CLASS_IN;
      e.inLo = 0;
      e.inHi = 0;
      e.addr = ste.fetchAddr;
      this.recordEvent();
    }
    this.respond(sid, NO_PASID, req.prgIndex, PRG_RESPONSE_FAILURE);
  }

  // --- Hitless-update hook -----------------------------------------------------------------------

  /**
   * Watch every store into an STE or CD this SMMU has fetched (since the first watcher was
   * installed; STEs of a linear stream table always): `cb` gets the entry as the SMMU would now
   * see it. Returns a function that removes the watcher. Uses PhysMemory's write observer (and
   * chains to one already installed).
   */
  watchConfigWrites(cb: SmmuConfigWriteCallback): () => void {
    if (this.watchers.length === 0) {
      this.prevObserver = this.mem.onWrite;
      this.mem.onWrite = this.observer;
    }
    this.storeGen++;
    this.watchers.push(cb);
    return () => {
      const i = this.watchers.indexOf(cb);
      if (i < 0) return;
      this.watchers.splice(i, 1);
      if (this.watchers.length === 0 && this.mem.onWrite === this.observer) {
        this.mem.onWrite = this.prevObserver;
        this.prevObserver = null;
      }
    };
  }

  // The last STE and CD noted, and the store count then: with no store since, their addresses
  // are unchanged and noting them again (an address computation, for a CD a second STE decode)
  // is skipped. Translations repeat the same (StreamID, SubstreamID) most of the time.
  private storeGen = 0;
  private notedSte = -1;
  private notedSteGen = -1;
  private notedCdSid = -1;
  private notedCdSsid = -1;
  private notedCdGen = -1;

  private noteSte(sid: number): void {
    if (sid === this.notedSte && this.notedSteGen === this.storeGen) return;
    const pa = this.steAddress(sid);
    if (pa >= 0) this.seenSte.set(pa, sid);
    this.notedSte = sid;
    this.notedSteGen = this.storeGen;
  }

  private noteCd(sid: number, ssid: number): void {
    if (sid === this.notedCdSid && ssid === this.notedCdSsid && this.notedCdGen === this.storeGen)
      return;
    const pa = this.cdAddress(sid, ssid);
    if (pa >= 0) this.seenCd.set(pa, [sid, ssid]);
    this.notedCdSid = sid;
    this.notedCdSsid = ssid;
    this.notedCdGen = this.storeGen;
  }

  private onMemoryWrite(pa: number, bytes: number): void {
    this.prevObserver?.(pa, bytes);
    this.storeGen++;
    const first = pa - (pa % 64);
    for (let a = first; a < pa + bytes; a += 64) {
      let sid = this.seenSte.get(a);
      if (sid === undefined && this.st.fmt !== STRTAB_FMT_2LVL && this.enabled) {
        const off = a - this.st.base;
        if (off >= 0 && off < STE_SIZE * 2 ** this.st.log2size) sid = off / STE_SIZE;
      }
      const qword = Math.floor((Math.max(pa, a) % 64) / 8);
      if (sid !== undefined) {
        const view = this.steAsSeen(sid);
        for (const cb of this.watchers) cb(sid, -1, qword, view);
      }
      const cd = this.seenCd.get(a);
      if (cd !== undefined) {
        const view = this.cdAsSeen(cd[0], cd[1]);
        for (const cb of this.watchers) cb(cd[0], cd[1], qword, view);
      }
    }
  }

  /** PA of the STE of `sid` by the latched stream table, or -1 (invalid StreamID / L1). */
  steAddress(sid: number): number {
    const st = this.st;
    if (sid >= 2 ** st.log2size) return -1;
    if (st.fmt !== STRTAB_FMT_2LVL) return st.base + sid * STE_SIZE;
    const mem = this.mem;
    const busError = mem.busError;
    const lo = mem.read64(st.base + Math.floor(sid / 2 ** st.split) * 8);
    const hi = mem.hi;
    mem.busError = busError;
    const span = lo & 0x1f;
    const l2idx = sid % 2 ** st.split;
    if (span === 0 || span > st.split + 1 || l2idx >= 2 ** (span - 1)) return -1;
    const l2 = (hi & 0xffffff) * TWO32 + ((lo & ~0x3f) >>> 0);
    const size = STE_SIZE * 2 ** (span - 1);
    return l2 - (l2 % size) + l2idx * STE_SIZE;
  }

  /** PA of the CD (sid, ssid) as the SMMU would locate it now, or -1. */
  cdAddress(sid: number, ssid: number): number {
    const ste = decodeSte(this.mem, this.st, sid, this.features, new SmmuSteConfig());
    if (ste.status !== CFG_OK || !ste.s1) return -1;
    const busError = this.mem.busError;
    const flags = this.walker.updateFlags;
    const wc = this.walker.walkCache;
    this.walker.updateFlags = false;
    this.walker.walkCache = null;
    const pa = locateCd(this.mem, ste, requestSsid(ste, ssid), this.cdPort);
    this.walker.updateFlags = flags;
    this.walker.walkCache = wc;
    this.mem.busError = busError;
    return pa;
  }

  /**
   * The STE of `sid` as the SMMU would see it if it fetched it now: its outcome and the bits it
   * uses for its Config (the kernel's arm_smmu_get_ste_used list). No cache is touched.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_get_ste_used
   */
  steAsSeen(sid: number): SmmuEntryView {
    const busError = this.mem.busError;
    const cfg = decodeSte(this.mem, this.st, sid, this.features, new SmmuSteConfig());
    const pa = cfg.status === EVT_ID.C_BAD_STREAMID ? -1 : this.steAddress(sid);
    const words = pa >= 0 ? loadLayout(this.mem, STE, pa) : new Uint32Array(16);
    this.mem.busError = busError;
    return viewOfSte(sid, cfg.status, words);
  }

  /**
   * The CD (sid, ssid) as the SMMU would see it now: its outcome (C_BAD_* or a fetch fault) and
   * the bits it uses (arm_smmu_get_cd_used: all when V = 1, less the TTB0 walk fields when EPD0).
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_get_cd_used
   */
  cdAsSeen(sid: number, ssid: number): SmmuEntryView {
    const mem = this.mem;
    const busError = mem.busError;
    const ste = decodeSte(mem, this.st, sid, this.features, new SmmuSteConfig());
    let status = ste.status;
    let words: Uint32Array = new Uint32Array(16);
    if (status === CFG_OK && !ste.s1) status = EVT_ID.C_BAD_SUBSTREAMID;
    if (status === CFG_OK) {
      const flags = this.walker.updateFlags;
      const wc = this.walker.walkCache;
      this.walker.updateFlags = false;
      this.walker.walkCache = null;
      const req = requestSsid(ste, ssid);
      const cd = decodeCd(mem, ste, req, this.features, this.cdPort, new SmmuCdConfig());
      status = cd.status;
      if (status === CFG_OK || status === EVT_ID.C_BAD_CD) {
        const pa = locateCd(mem, ste, req, this.cdPort);
        if (pa >= 0) words = loadLayout(mem, CD, pa);
      }
      this.walker.updateFlags = flags;
      this.walker.walkCache = wc;
    }
    mem.busError = busError;
    return viewOfCd(sid, ssid, status, words);
  }

  /** Decode the latched stream table's view of `sid` (for debugging and the oracle). */
  decodeSteOf(sid: number): Record<string, unknown> {
    const pa = this.steAddress(sid);
    return pa < 0 ? {} : decode(STE, loadLayout(this.mem, STE, pa));
  }

  // --- Inspection (the oracle) -------------------------------------------------------------------

  /**
   * What the SMMU's caches hold for `req`, next to what memory says now, for an oracle that must
   * explain a cached answer. Never on a DMA path: it allocates; and it touches no cache entry, LRU
   * order, counter, Access flag or event. The STE of the StreamID, cached and freshly decoded;
   * with a stage 1 STE, the CD the request selects, cached (looked up as a translation would:
   * only when the SubstreamID selects the CD by itself) and fresh (through the fresh STE); the
   * VMID and ASID a TLB lookup would use (under the cached configuration where there is one, as
   * a translation would); the TLB entry that lookup would hit; and the walk-cache entries on the
   * path to the page (stage 1 ones of a stage 1 or nested configuration, stage 2 ones of a stage
   * 2 only one).
   *
   * @spec Arm SMMUv3 (IHI 0070) 3.17 (TLB tagging), 16.2 (caches)
   */
  inspect(req: TranslationRequest): SmmuCacheInspection {
    const mem = this.mem;
    const walker = this.walker;
    const busError = mem.busError;
    const flags = walker.updateFlags;
    const wc = walker.walkCache;
    const reads = walker.reads;
    walker.updateFlags = false;
    walker.walkCache = null;
    const sid = req.sid >>> 0;
    const ssid = req.pasid === NO_PASID ? NO_SSID : req.pasid >>> 0;
    const features = this.features;
    const fresh = decodeSte(mem, this.st, sid, features, new SmmuSteConfig());
    const cachedSte = this.configCache.peekSte(sid) ?? null;
    let cd: SmmuCacheInspection["cd"] = null;
    let vmid: number | null = null;
    let asid: number | null = null;
    let stage: 1 | 2 = 1;
    // A disabled SMMU bypasses or aborts: nothing of its caches is used.
    const ste = cachedSte ?? fresh;
    if (this.enabled && ste.status === CFG_OK && ste.config > STE_CFG_BYPASS) {
      if (ste.s1) {
        const index = ssid === NO_SSID ? 0 : ssid;
        const direct =
          ssid === NO_SSID
            ? ste.s1CdMax === 0 || ste.s1Dss === 2
            : ste.s1CdMax > 0 && ssid < ste.cdLimit && !(ssid === 0 && ste.s1Dss === 2);
        const cachedCd = direct ? (this.configCache.peekCd(ste.sid, index) ?? null) : null;
        const freshCd =
          fresh.status === CFG_OK && fresh.s1 && fresh.config > STE_CFG_BYPASS
            ? decodeCd(mem, fresh, ssid, features, this.cdPort, new SmmuCdConfig())
            : null;
        cd = { index, cached: cachedCd, fresh: freshCd };
        const used =
          cachedCd ??
          (ste === fresh
            ? freshCd
            : decodeCd(mem, ste, ssid, features, this.cdPort, new SmmuCdConfig()));
        if (used !== null && used.status === CFG_OK) {
          if (!used.bypass) {
            vmid = ste.vmid;
            asid = used.asid;
            if (ste.el2) {
              vmid = SMMU_VMID_EL2;
              if ((this.cr2 & CR2_E2H) === 0) asid = 0;
            }
          } else if (ste.s2) {
            vmid = ste.vmid;
            asid = SMMU_ASID_IPA;
            stage = 2;
          }
        }
      } else if (ste.s2) {
        vmid = ste.vmid;
        asid = SMMU_ASID_IPA;
        stage = 2;
      }
    }
    let tlb: SmmuTlbEntry | null = null;
    let walk: SmmuWalkCacheEntry[] = [];
    if (vmid !== null && asid !== null) {
      const slot = this.tlb.peek(vmid, asid, req.iovaPfn);
      tlb = slot < 0 ? null : this.tlb.entryAt(slot);
      walk = this.walkCache.onPath(vmid, asid, stage, req.iovaPfn);
    }
    walker.updateFlags = flags;
    walker.walkCache = wc;
    walker.reads = reads;
    mem.busError = busError;
    return {
      sid,
      ssid,
      ste: { cached: cachedSte, fresh },
      cd,
      vmid,
      asid,
      tlb,
      walkCache: walk,
    };
  }
}

/** What `SmmuV3.inspect` found for a request. */
export interface SmmuCacheInspection {
  readonly sid: number;
  /** The request's SubstreamID, or NO_SSID. */
  readonly ssid: number;
  /** The STE cached for the StreamID (null: not cached) and the STE in memory now. */
  readonly ste: { readonly cached: SmmuSteConfig | null; readonly fresh: SmmuSteConfig };
  /**
   * With a stage 1 (or nested) STE: the CD index the request selects, the CD cached for it and
   * the CD in memory now (null: the fresh STE has no stage 1). Null for other STEs.
   */
  readonly cd: {
    readonly index: number;
    readonly cached: SmmuCdConfig | null;
    readonly fresh: SmmuCdConfig | null;
  } | null;
  /**
   * The TLB tags a lookup for the request uses: VMID (SMMU_VMID_EL2 for an EL2 StreamWorld) and
   * ASID (SMMU_ASID_IPA for a stage 2 only one), or null when no TLB lookup happens (disabled,
   * abort, bypass, bad configuration).
   */
  readonly vmid: number | null;
  readonly asid: number | null;
  /** The TLB entry that lookup would hit now. */
  readonly tlb: SmmuTlbEntry | null;
  /** Walk-cache entries on the path to the page, deepest first. */
  readonly walkCache: readonly SmmuWalkCacheEntry[];
}

/**
 * The SubstreamID a request would carry to use CD index `index`: none for CD 0 of a single-CD
 * STE or under S1DSS = SSID0 (which refuses SubstreamID 0 itself).
 */
function requestSsid(ste: SmmuSteConfig, index: number): number {
  return index === 0 && (ste.s1CdMax === 0 || ste.s1Dss === 2) ? NO_SSID : index;
}

/** PA of the CD `decodeCd` would read for (ste, ssid), or -1 (no CD, or a fetch fault). */
function locateCd(
  mem: PhysMemory,
  ste: SmmuSteConfig,
  ssid: number,
  port: SmmuCdFetchPort,
): number {
  let index = ssid === NO_SSID ? 0 : ssid;
  if (ssid === NO_SSID && ste.s1CdMax > 0 && ste.s1Dss !== 2) return -1;
  if (ssid !== NO_SSID && (ste.s1CdMax === 0 || ssid >= 2 ** ste.s1CdMax)) return -1;
  let at = ste.s1ContextPtr + index * CD_SIZE;
  if (ste.s1Fmt === 1 || ste.s1Fmt === 2) {
    const leaf = ste.s1Fmt === 1 ? 64 : 1024;
    let l1 = ste.s1ContextPtr + Math.floor(index / leaf) * 8;
    if (ste.s2) {
      if (port.s2Fetch(ste, l1) !== 0) return -1;
      l1 = port.fetchPa;
    }
    const lo = mem.read64(l1);
    const hi = mem.hi;
    if ((lo & 1) === 0) return -1;
    const l2 = (hi & 0xffffff) * TWO32 + ((lo & ~0xfff) >>> 0);
    at = l2 - (l2 % (leaf * CD_SIZE)) + (index % leaf) * CD_SIZE;
    index = 0;
  }
  if (ste.s2) {
    if (port.s2Fetch(ste, at) !== 0) return -1;
    return port.fetchPa;
  }
  return at;
}
