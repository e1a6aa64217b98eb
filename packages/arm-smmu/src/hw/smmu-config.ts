// What the SMMU decodes from the stream table and the context descriptors before it walks: small
// configuration objects (QEMU's SMMUTransCfg split in two) that the STE and CD caches hold and the
// walker reads, with the C_BAD_* / F_*_FETCH outcome of locating and checking each structure.

import {
  bug,
  fieldOf,
  hasReservedBits,
  type Layout,
  type PhysMemory,
} from "@iommu-sim/iommu-core/platform";
import {
  CD,
  CD_L2_ENTRIES_4K,
  CD_L2_ENTRIES_64K,
  CD_SIZE,
  L1_CD,
  tg0PageShift,
  tg1PageShift,
} from "../format/cd.js";
import { EVT_ID } from "../format/events.js";
import { ADDR_SIZE_BITS } from "../format/registers.js";
import {
  EATS_ABT,
  EATS_DPT,
  EATS_S1CHK,
  EATS_TRANS,
  L1_STD,
  S1DSS_SSID0,
  S1DSS_TERMINATE,
  S1FMT_4K_L2,
  S1FMT_64K_L2,
  STE,
  STE_SIZE,
  STRTAB_FMT_2LVL,
  STRW_EL2,
} from "../format/ste.js";
import type { SmmuFeatures } from "./smmu-features.js";

/** `status` of a usable configuration. */
export const CFG_OK = 0;

/** The stream table the SMMU uses: STRTAB_BASE / STRTAB_BASE_CFG as latched. */
export interface SmmuStreamTable {
  /** STRTAB_BASE.ADDR, aligned as the format requires. */
  base: number;
  /** Effective LOG2SIZE: min(STRTAB_BASE_CFG.LOG2SIZE, IDR1.SIDSIZE). */
  log2size: number;
  /** 0 linear, 1 2-level (FMT other values behave as linear). */
  fmt: number;
  /** Effective SPLIT: 6, 8 or 10 (other values behave as 6). */
  split: number;
  /** CR2.E2H: EL2 streams use the EL2-E2H regime (ASIDs, two VA ranges). */
  e2h: boolean;
}

/**
 * One translation regime's walk parameters (a CD's TTB0 or TTB1 range, or an STE's stage 2): the
 * walker reads only these.
 */
export class SmmuWalkRange {
  /** EPDx: a TLB miss in this range is a translation fault. */
  disabled = true;
  /** Input address bits (64 - TxSZ). */
  ia = 0;
  /** Granule shift: 12, 14 or 16. */
  pgShift = 12;
  /** Level of the starting table, 0..3. */
  startLevel = 0;
  /** Starting table address (PA, or IPA for a nested stage 1), aligned to the table's size. */
  ttb = 0;
  /** Hierarchical attributes disabled (CD.HADx with IDR3.HAD). */
  had = false;
}

/**
 * A decoded STE. `status` is CFG_OK or the event a transaction through it gets (C_BAD_STREAMID,
 * F_STE_FETCH with `fetchAddr`, C_BAD_STE).
 */
export class SmmuSteConfig {
  sid = 0;
  status = CFG_OK;
  fetchAddr = 0;
  /** STE.Config when valid: < 4 abort, 4 bypass, 5 S1, 6 S2, 7 nested. */
  config = 0;
  s1 = false;
  s2 = false;
  // Stage 1.
  s1Fmt = 0;
  s1ContextPtr = 0;
  s1CdMax = 0;
  /** 2^S1CDMax: SubstreamIDs at or above it are out of range. */
  cdLimit = 1;
  s1Dss = 0;
  s1StallD = false;
  /** Stage 1 translations tagged as EL2 (STRW = EL2 with stage 2 bypassed). */
  el2 = false;
  /** EL2 with CR2.E2H: translations keep the CD's ASID and both VA ranges. */
  e2h = false;
  /** Effective EATS (0 when ATS is not implemented). */
  eats = EATS_ABT;
  /** STE.PRIVCFG / INSTCFG (0 = use incoming) when IDR1.ATTR_PERMS_OVR. */
  privCfg = 0;
  instCfg = 0;
  /** VMID tag: S2VMID for every translating configuration (Linux writes 0 for stage 1 only). */
  vmid = 0;
  // Stage 2.
  readonly s2Range = new SmmuWalkRange();
  /** Effective S2PS in bits. */
  s2OutBits = 48;
  s2Affd = false;
  s2Ha = false;
  s2Hd = false;
  s2Ptw = false;
  s2S = false;
  s2R = false;
  /** STE.PPAR: an automatic PRG response to a PASID-tagged request carries the PASID (8.1). */
  ppar = false;
  /**
   * What `decodeSte` last decoded into this object, once it is decoded into a second time (a
   * reused object, not a cached one): the STE's words and the features. The same words under the
   * same features decode to the same fields, so the decode is skipped; `memoStatus`..`memoS2` are
   * the decoded values of the fields decodeSte also writes on its other paths.
   */
  memoWords: Uint32Array | null = null;
  memoFeatures: SmmuFeatures | null = null;
  memoStatus = CFG_OK;
  memoConfig = 0;
  memoS1 = false;
  memoS2 = false;
  /** Decoded by decodeSte before (the next full decode keeps a memo). */
  decoded = false;
}

/**
 * A decoded CD for (StreamID, SubstreamID). `status` is CFG_OK or the event: C_BAD_SUBSTREAMID,
 * F_STREAM_DISABLED, F_CD_FETCH / F_WALK_EABT (with `fetchAddr`), C_BAD_CD, or a stage 2 fault
 * of the CD fetch (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION with `faultIpa`, CLASS CD).
 * `bypass` is set (status CFG_OK) when S1DSS makes a request without a SubstreamID skip stage 1.
 */
export class SmmuCdConfig {
  sid = 0;
  /** The CD index used (0 for requests without a SubstreamID under S1DSS = SSID0). */
  ssid = 0;
  status = CFG_OK;
  fetchAddr = 0;
  /** IPA whose stage 2 translation failed while fetching the CD (or L1CD). */
  faultIpa = 0;
  /** With a stage 2 fault: level and whether the access was a write (never: fetches read). */
  faultLevel = 0;
  bypass = false;
  readonly t0 = new SmmuWalkRange();
  readonly t1 = new SmmuWalkRange();
  /** Only TTB0 exists (EL2 stream world): the whole input address goes through it. */
  oneRange = false;
  /** Effective IPS in bits. */
  outBits = 48;
  tbi0 = false;
  tbi1 = false;
  affd = false;
  wxn = false;
  pan = false;
  ha = false;
  hd = false;
  s = false;
  r = false;
  a = false;
  aset = false;
  asid = 0;
  /**
   * What `decodeCd` last decoded into this object, once it is decoded into a second time: the CD's
   * words, the features and the STE fields the decode reads (EL2, E2H, S1STALLD as bits 0-2), and
   * the decoded `status` (decodeCd also writes it on its other paths).
   */
  memoWords: Uint32Array | null = null;
  memoFeatures: SmmuFeatures | null = null;
  memoSte = 0;
  memoStatus = CFG_OK;
  /** Decoded by decodeCd before (the next full decode keeps a memo). */
  decoded = false;
}

const scratch = new Uint32Array(16);
const TWO32 = 4294967296;
/** 2^i for i in [0, 64]: a table load instead of `2 **`. */
const POW2 = new Float64Array(65);
for (let i = 0; i <= 64; i++) POW2[i] = 2 ** i;

/** Fetch `words` 32-bit words at `pa` into `scratch`; false on an external abort. */
function load(mem: PhysMemory, pa: number, words: number): boolean {
  const fast = mem.wordsOf(pa);
  if (fast !== undefined) {
    const i = mem.wordIndex(pa);
    if ((i & 1) === 0 && i + words <= fast.length) {
      for (let k = 0; k < words; k++) scratch[k] = fast[i + k] as number;
      return true;
    }
  }
  mem.busError = false;
  for (let i = 0; i < words; i += 2) {
    scratch[i] = mem.read64(pa + 4 * i);
    scratch[i + 1] = mem.hi;
  }
  return !mem.busError;
}

/** `fetch16` outcomes: an external abort, the words loaded into `scratch`, or equal to the memo. */
const F_ABORT = 0;
const F_LOADED = 1;
const F_SAME = 2;

/**
 * Fetch the 16 words of an STE or CD at `pa`: F_SAME when they equal `memo` (then `scratch` is
 * not filled: the caller keeps its decoded fields), else F_LOADED (in `scratch`) or F_ABORT.
 */
function fetch16(mem: PhysMemory, pa: number, memo: Uint32Array | null): number {
  if (memo !== null) {
    const fast = mem.wordsOf(pa);
    if (fast !== undefined) {
      const i = mem.wordIndex(pa);
      if ((i & 1) === 0 && i + 16 <= fast.length) {
        // One OR of the differences: no branch per word.
        let d = 0;
        for (let k = 0; k < 16; k++) d |= (fast[i + k] as number) ^ (memo[k] as number);
        if (d === 0) return F_SAME;
        for (let k = 0; k < 16; k++) scratch[k] = fast[i + k] as number;
        return F_LOADED;
      }
    }
  }
  if (!load(mem, pa, 16)) return F_ABORT;
  if (memo === null) return F_LOADED;
  for (let k = 0; k < 16; k++) if (scratch[k] !== memo[k]) return F_LOADED;
  return F_SAME;
}

/** A copy of the 16 words in `scratch` into `memo` (allocated when null). */
function keepWords(memo: Uint32Array | null): Uint32Array {
  const m = memo ?? new Uint32Array(16);
  m.set(scratch);
  return m;
}

/**
 * A field of at most 31 bits inside one 32-bit word, as its word, shift and mask (checked once, at
 * module load). Copied into objects of one shape: the layout's Field objects differ in their
 * optional keys, which would make every read site polymorphic.
 */
interface NarrowField {
  readonly word: number;
  readonly shift: number;
  readonly mask: number;
}

function field(layout: Layout, name: string): NarrowField {
  const f = fieldOf(layout, name);
  if (!f.single || f.width > 31) bug(`smmu-config: ${layout.name}.${name} is not a narrow field`);
  return Object.freeze({ word: f.word, shift: f.shift, mask: f.mask });
}

/** Its value in `w`: one shift and one mask, no per-access field lookup. */
function get(w: Uint32Array, f: NarrowField): number {
  return ((w[f.word] as number) >>> f.shift) & f.mask;
}

/** An address field inside one 64-bit word: the word pair and the masks of its bits in each. */
interface AddrField {
  readonly word: number;
  readonly loMask: number;
  readonly hiMask: number;
}

function addrField(layout: Layout, name: string): AddrField {
  const f = fieldOf(layout, name);
  const at = f.lsb & 63;
  const top = at + f.width;
  if (!f.addr || at >= 32 || top > 64) bug(`smmu-config: ${layout.name}.${name} layout`);
  const bits = (from: number, to: number) =>
    to <= from ? 0 : ((to - from >= 32 ? -1 : (1 << (to - from)) - 1) << from) | 0;
  return Object.freeze({
    word: (f.lsb >>> 6) * 2,
    loMask: bits(at, Math.min(top, 32)),
    hiMask: top > 32 ? bits(0, top - 32) : 0,
  });
}

/** The address in place (the field's bits of its 64-bit word, the bits below it zero). */
function addr(w: Uint32Array, a: AddrField): number {
  return (
    (((w[a.word + 1] as number) & a.hiMask) >>> 0) * TWO32 +
    (((w[a.word] as number) & a.loMask) >>> 0)
  );
}

const S_V = field(STE, "V");
const S_CONFIG = field(STE, "Config");
const S_S1FMT = field(STE, "S1Fmt");
const S_S1CTX = addrField(STE, "S1ContextPtr");
const S_S1CDMAX = field(STE, "S1CDMax");
const S_S1DSS = field(STE, "S1DSS");
const S_S1STALLD = field(STE, "S1STALLD");
const S_EATS = field(STE, "EATS");
const S_STRW = field(STE, "STRW");
const S_PRIVCFG = field(STE, "PRIVCFG");
const S_INSTCFG = field(STE, "INSTCFG");
const S_PPAR = field(STE, "PPAR");
const S_VMID = field(STE, "S2VMID");
const S_T0SZ = field(STE, "S2T0SZ");
const S_SL0 = field(STE, "S2SL0");
const S_TG = field(STE, "S2TG");
const S_PS = field(STE, "S2PS");
const S_AA64 = field(STE, "S2AA64");
const S_ENDI = field(STE, "S2ENDI");
const S_AFFD = field(STE, "S2AFFD");
const S_PTW = field(STE, "S2PTW");
const S_HD = field(STE, "S2HD");
const S_HA = field(STE, "S2HA");
const S_S2S = field(STE, "S2S");
const S_S2R = field(STE, "S2R");
const S_TTB = addrField(STE, "S2TTB");
const L1S_SPAN = field(L1_STD, "Span");
const L1S_PTR = addrField(L1_STD, "L2Ptr");
const L1C_V = field(L1_CD, "V");
const L1C_PTR = addrField(L1_CD, "L2Ptr");
const C_T0SZ = field(CD, "T0SZ");
const C_TG0 = field(CD, "TG0");
const C_EPD0 = field(CD, "EPD0");
const C_ENDI = field(CD, "ENDI");
const C_T1SZ = field(CD, "T1SZ");
const C_TG1 = field(CD, "TG1");
const C_EPD1 = field(CD, "EPD1");
const C_V = field(CD, "V");
const C_IPS = field(CD, "IPS");
const C_AFFD = field(CD, "AFFD");
const C_WXN = field(CD, "WXN");
const C_TBI0 = field(CD, "TBI0");
const C_TBI1 = field(CD, "TBI1");
const C_PAN = field(CD, "PAN");
const C_AA64 = field(CD, "AA64");
const C_HD = field(CD, "HD");
const C_HA = field(CD, "HA");
const C_S = field(CD, "S");
const C_R = field(CD, "R");
const C_A = field(CD, "A");
const C_ASET = field(CD, "ASET");
const C_ASID = field(CD, "ASID");
const C_HAD0 = field(CD, "HAD0");
const C_HAD1 = field(CD, "HAD1");
const C_TTB0 = addrField(CD, "TTB0");
const C_TTB1 = addrField(CD, "TTB1");

/** IA bit where `level`'s index starts, for granule shift `g`. */
export function levelShift(g: number, level: number): number {
  return g + (3 - level) * (g - 3);
}

/** Whether `g` (12/14/16) is a granule the SMMU implements. */
function granuleOk(f: SmmuFeatures, g: number): boolean {
  if (f.granules !== granuleList) {
    granuleList = f.granules;
    granuleMask =
      (f.granules.includes("4K") ? 1 << 12 : 0) |
      (f.granules.includes("16K") ? 1 << 14 : 0) |
      (f.granules.includes("64K") ? 1 << 16 : 0);
  }
  return (g === 12 || g === 14 || g === 16) && (granuleMask & (1 << g)) !== 0;
}

/** The granule list last asked about (resolved features freeze it) and its bitmap. */
let granuleList: SmmuFeatures["granules"] | null = null;
let granuleMask = 0;

/**
 * Whether CD.TxSZ is in the valid range for granule shift `g` (SMMUv3.1+ rule: outside is
 * ILLEGAL): at least 12 with IDR5.VAX and the 64K granule, else 16; at most 39, or 48/47 with STT.
 *
 * @spec Arm SMMUv3 (IHI 0070) 5.4 (T0SZ), 5.4.2 CDTxSZInvalid
 */
function txszOk(f: SmmuFeatures, g: number, tsz: number): boolean {
  const min = f.vax && g === 16 ? 12 : 16;
  const max = f.stt ? (g === 16 ? 47 : 48) : 39;
  return tsz >= min && tsz <= max;
}

/**
 * Whether STE.S2T0SZ is in the valid range: the minimum is MAX(16, 64 - IAS) for 4K/16K and
 * MAX(12, 64 - IAS) for 64K (IDR5.VAX plays no part at stage 2, IAS does), the maximum as for CDs.
 * IAS is OAS, or MAX(40, OAS) when AArch32 tables are implemented (IDR0.TTF[0]).
 *
 * @spec Arm SMMUv3 (IHI 0070) 5.2 (S2T0SZ), 5.2.2 STES2T0SZInvalid, 3.4 (IAS)
 */
function s2TxszOk(f: SmmuFeatures, g: number, tsz: number): boolean {
  const ias = f.ttf === 3 ? Math.max(40, f.oas) : f.oas;
  const min = Math.max(g === 16 ? 12 : 16, 64 - ias);
  const max = f.stt ? (g === 16 ? 47 : 48) : 39;
  return tsz >= min && tsz <= max;
}

/**
 * Fill `r` for a stage 1 range: start level from the input size and granule (Arm ARM: levels =
 * ceil((ia - g) / (g - 3))), TTB aligned to its starting table. False when the TTB lies outside
 * the effective output size (or above 48 bits with a 4K/16K granule): ILLEGAL.
 */
function s1Range(r: SmmuWalkRange, g: number, tsz: number, ttb: number, outBits: number): boolean {
  r.disabled = false;
  r.pgShift = g;
  r.ia = 64 - tsz;
  const levels = Math.ceil((r.ia - g) / (g - 3));
  r.startLevel = 4 - levels;
  const bytes = Math.max(
    8 * (POW2[r.ia - levelShift(g, r.startLevel)] as number),
    outBits === 52 ? 64 : 8,
  );
  r.ttb = ttb - (ttb % bytes);
  if (ttb >= (POW2[outBits] as number)) return false;
  return !(g !== 16 && ttb >= (POW2[48] as number));
}

/**
 * Locate and decode the STE of `sid` into `out`.
 *
 * @spec Arm SMMUv3 (IHI 0070) 5.1 (stream table lookup), 5.2 (STE, ILLEGAL conditions), 5.5
 */
export function decodeSte(
  mem: PhysMemory,
  st: SmmuStreamTable,
  sid: number,
  f: SmmuFeatures,
  out: SmmuSteConfig,
): SmmuSteConfig {
  if (sid >= (POW2[st.log2size] as number)) return steFailed(out, sid, EVT_ID.C_BAD_STREAMID, 0);
  let at: number;
  if (st.fmt === STRTAB_FMT_2LVL) {
    const l1at = st.base + Math.floor(sid / (POW2[st.split] as number)) * 8;
    if (!load(mem, l1at, 2)) return steFailed(out, sid, EVT_ID.F_STE_FETCH, l1at);
    const span = get(scratch, L1S_SPAN);
    const l2idx = sid % (POW2[st.split] as number);
    if (
      span === 0 ||
      span > 12 ||
      span > st.split + 1 ||
      l2idx >= (POW2[span - 1] as number) ||
      (f.checkReserved && hasReservedBits(L1_STD, scratch))
    )
      return steFailed(out, sid, EVT_ID.C_BAD_STREAMID, 0);
    const l2 = addr(scratch, L1S_PTR);
    const size = STE_SIZE * (POW2[span - 1] as number);
    at = l2 - (l2 % size) + l2idx * STE_SIZE;
  } else {
    at = st.base + sid * STE_SIZE;
  }
  const memo = out.memoFeatures === f ? out.memoWords : null;
  const got = fetch16(mem, at, memo);
  if (got === F_ABORT) return steFailed(out, sid, EVT_ID.F_STE_FETCH, at);
  out.sid = sid;
  out.fetchAddr = 0;
  if (got === F_SAME) {
    out.status = out.memoStatus;
    out.config = out.memoConfig;
    out.s1 = out.memoS1;
    out.s2 = out.memoS2;
  } else {
    out.config = 0;
    steWords(scratch, f, out);
    if (out.decoded && Object.isFrozen(f)) {
      out.memoWords = keepWords(out.memoWords);
      out.memoFeatures = f;
      out.memoStatus = out.status;
      out.memoConfig = out.config;
      out.memoS1 = out.s1;
      out.memoS2 = out.s2;
    }
    out.decoded = true;
  }
  out.e2h = out.el2 && st.e2h;
  return out;
}

/** An STE that could not be fetched or located: `status`, fetch address, no stages. */
function steFailed(
  out: SmmuSteConfig,
  sid: number,
  status: number,
  fetchAddr: number,
): SmmuSteConfig {
  out.sid = sid;
  out.status = status;
  out.fetchAddr = fetchAddr;
  out.s1 = false;
  out.s2 = false;
  out.config = 0;
  return out;
}

/** Decode the 16 words of an STE (already fetched) into `out` (sid kept). */
export function decodeSteWords(w: Uint32Array, f: SmmuFeatures, out: SmmuSteConfig): SmmuSteConfig {
  out.memoFeatures = null;
  return steWords(w, f, out);
}

function steWords(w: Uint32Array, f: SmmuFeatures, out: SmmuSteConfig): SmmuSteConfig {
  out.status = CFG_OK;
  out.s1 = false;
  out.s2 = false;
  if (get(w, S_V) === 0) {
    out.status = EVT_ID.C_BAD_STE;
    return out;
  }
  const config = get(w, S_CONFIG);
  out.config = config;
  // Fields every valid STE has, whatever its Config: PPAR (8.1) and the attribute overrides, which
  // also apply to bypassed traffic and give the PnU/InD of events (7.3).
  out.ppar = get(w, S_PPAR) !== 0;
  out.privCfg = f.attrPermsOvr ? get(w, S_PRIVCFG) : 0;
  out.instCfg = f.attrPermsOvr ? get(w, S_INSTCFG) : 0;
  out.eats = EATS_ABT;
  if (config < 4) return out; // abort, no event
  if (f.checkReserved && hasReservedBits(STE, w)) return bad(out);
  if (config === 4) return out; // bypass
  const s1 = (config & 1) !== 0;
  const s2 = (config & 2) !== 0;
  if ((s1 && !f.s1p) || (s2 && !f.s2p)) return bad(out);
  out.s1 = s1;
  out.s2 = s2;
  // EATS is IGNORED without IDR0.ATS (5.2.2 checks it only when ATS is implemented).
  const eats = f.ats ? get(w, S_EATS) : EATS_ABT;
  // Split-stage ATS is ILLEGAL with IDR0.NS1ATS = 1 (this model); 0b11 (DPT checks) is Reserved
  // without IDR3.DPT and behaves as 0b00.
  if (eats === EATS_S1CHK) return bad(out);
  out.eats = eats === EATS_DPT ? EATS_ABT : eats;
  out.vmid = f.s2p ? get(w, S_VMID) : 0;
  out.el2 = false;
  out.e2h = false;
  if (s1) {
    out.s1Fmt = get(w, S_S1FMT);
    out.s1ContextPtr = addr(w, S_S1CTX);
    // With IDR1.SSIDSIZE = 0, S1CDMax (and so S1Fmt, S1DSS) is IGNORED: one CD, no substreams.
    out.s1CdMax = f.ssidBits === 0 ? 0 : get(w, S_S1CDMAX);
    out.cdLimit = POW2[out.s1CdMax] as number;
    // S1DSS 0b11 is Reserved and behaves as 0b00 (terminate); it is not an ILLEGAL value.
    const dss = get(w, S_S1DSS);
    out.s1Dss = dss === 3 ? S1DSS_TERMINATE : dss;
    out.s1StallD = get(w, S_S1STALLD) !== 0;
    if (out.s1CdMax > f.ssidBits) return bad(out);
    if (out.s1CdMax > 0) {
      if ((out.s1Fmt === S1FMT_4K_L2 || out.s1Fmt === S1FMT_64K_L2) && !f.cd2l) return bad(out);
      if (out.s1Fmt === 3) out.s1Fmt = 0;
    } else {
      out.s1Fmt = 0;
    }
    if (out.s1StallD && f.stallModel !== 0) return bad(out);
    if (!s2) {
      const strw = get(w, S_STRW);
      if (f.hyp) {
        if ((strw & 1) !== 0) return bad(out);
        out.el2 = strw === STRW_EL2;
      } else if (strw !== 0 && f.checkReserved) {
        // STRW is RES0 without IDR0.Hyp (5.2.2 IgnoreSTESTRW): ILLEGAL only by our RES0 choice.
        return bad(out);
      }
      if (out.s1ContextPtr >= (POW2[f.oas] as number)) return bad(out);
    }
  }
  // S2VMID is IGNORED for a StreamWorld other than NS-EL1 (5.2.2 IgnoreSTES2VMID).
  if (out.el2) out.vmid = 0;
  else if (f.vmidBits === 8 && out.vmid > 0xff) return bad(out);
  if (s2) {
    const r = out.s2Range;
    const g = tg0PageShift(get(w, S_TG));
    if (g === 0 || !granuleOk(f, g)) return bad(out);
    if (get(w, S_AA64) === 0 || get(w, S_ENDI) !== 0) return bad(out);
    const tsz = get(w, S_T0SZ);
    if (!s2TxszOk(f, g, tsz)) return bad(out);
    const psBits = ADDR_SIZE_BITS[get(w, S_PS)] as number;
    out.s2OutBits = Math.min(psBits === 56 ? 52 : psBits, f.oas);
    // 4K and 16K tables hold 48-bit addresses (no DS).
    if (g !== 16 && out.s2OutBits > 48) out.s2OutBits = 48;
    const sl0 = get(w, S_SL0);
    // SL0 2/1/0 start at level 0/1/2 with 4K, 1/2/3 with 16K and 64K; 3 is reserved here.
    if (sl0 === 3) return bad(out);
    const start = (g === 12 ? 2 : 3) - sl0;
    const ia = 64 - tsz;
    const idxBits = ia - levelShift(g, start);
    // The starting level must resolve at least one bit and at most 16 concatenated tables.
    if (idxBits < 1 || idxBits > g - 3 + 4) return bad(out);
    if (g === 16 && start === 0) return bad(out);
    r.disabled = false;
    r.pgShift = g;
    r.ia = ia;
    r.startLevel = start;
    r.had = false;
    const ttb = addr(w, S_TTB);
    if (ttb >= (POW2[out.s2OutBits] as number)) return bad(out);
    const bytes = Math.max(8 * (POW2[idxBits] as number), out.s2OutBits === 52 ? 64 : 8);
    r.ttb = ttb - (ttb % bytes);
    out.s2Affd = get(w, S_AFFD) !== 0;
    out.s2Ha = get(w, S_HA) !== 0;
    out.s2Hd = get(w, S_HD) !== 0;
    if ((out.s2Ha && f.httu < 1) || (out.s2Hd && f.httu < 2)) return bad(out);
    if (out.s2Hd && !out.s2Ha) out.s2Hd = false;
    out.s2Ptw = get(w, S_PTW) !== 0;
    out.s2S = get(w, S_S2S) !== 0;
    out.s2R = get(w, S_S2R) !== 0;
    if ((out.s2S && f.stallModel === 1) || (!out.s2S && f.stallModel === 2)) return bad(out);
    // Full ATS through a stalling stage 2 is ILLEGAL (SMMUv3.1 and later; SMMUv3.0 may also
    // check it with stage 2 bypassed, which this model does not).
    if (out.eats === EATS_TRANS && out.s2S) return bad(out);
  }
  return out;
}

function bad(out: SmmuSteConfig): SmmuSteConfig {
  out.status = EVT_ID.C_BAD_STE;
  out.s1 = false;
  out.s2 = false;
  return out;
}

/**
 * How the CD decoder reaches memory through stage 2 for a nested STE: `translate` returns 0 with
 * `pa` set, or the event id of the stage 2 fault (with `level`, and `fetchAddr` for F_WALK_EABT).
 */
export interface SmmuCdFetchPort {
  s2Fetch(ste: SmmuSteConfig, ipa: number): number;
  readonly fetchPa: number;
  readonly fetchLevel: number;
  readonly fetchAbortAddr: number;
}

/** `ssid` meaning "the request carried no SubstreamID". */
export const NO_SSID = -1;

/**
 * Select, locate and decode the CD a request with `ssid` (or NO_SSID) uses under the stage 1 STE
 * `ste`, into `out`. For nested STEs the L1CD and CD addresses are IPAs fetched through `port`.
 *
 * @spec Arm SMMUv3 (IHI 0070) 5.2 (S1DSS, S1CDMax, S1Fmt), 5.3 (L1CD), 5.4 (CD ILLEGAL), 5.5,
 *   3.4.3 (out-of-range L1CD.L2Ptr)
 */
export function decodeCd(
  mem: PhysMemory,
  ste: SmmuSteConfig,
  ssid: number,
  f: SmmuFeatures,
  port: SmmuCdFetchPort,
  out: SmmuCdConfig,
): SmmuCdConfig {
  out.sid = ste.sid;
  out.bypass = false;
  out.fetchAddr = 0;
  out.faultIpa = 0;
  let index = 0;
  if (ssid === NO_SSID) {
    if (ste.s1CdMax > 0) {
      if (ste.s1Dss === 0) return status(out, EVT_ID.F_STREAM_DISABLED);
      if (ste.s1Dss === 1) {
        out.bypass = true;
        out.ssid = 0;
        out.status = CFG_OK;
        return out;
      }
    }
  } else {
    if (ste.s1CdMax === 0 || ssid >= ste.cdLimit) return status(out, EVT_ID.C_BAD_SUBSTREAMID);
    if (ssid === 0 && ste.s1Dss === S1DSS_SSID0) return status(out, EVT_ID.F_STREAM_DISABLED);
    index = ssid;
  }
  out.ssid = index;
  let at = ste.s1ContextPtr + index * CD_SIZE;
  if (ste.s1Fmt === S1FMT_4K_L2 || ste.s1Fmt === S1FMT_64K_L2) {
    const leaf = ste.s1Fmt === S1FMT_4K_L2 ? CD_L2_ENTRIES_4K : CD_L2_ENTRIES_64K;
    const l1 = ste.s1ContextPtr + Math.floor(index / leaf) * 8;
    const l1pa = fetchAddr(ste, l1, port, out);
    if (l1pa < 0) return out;
    if (!load(mem, l1pa, 2)) {
      out.fetchAddr = l1pa;
      return status(out, EVT_ID.F_CD_FETCH);
    }
    if (get(scratch, L1C_V) === 0) return status(out, EVT_ID.C_BAD_SUBSTREAMID);
    const l2 = addr(scratch, L1C_PTR);
    // An L2Ptr PA beyond the OAS is C_BAD_SUBSTREAMID (3.4.3, SMMUv3.1 and later); an IPA one goes
    // to stage 2 untruncated and faults there (one of the permitted behaviours).
    if (!ste.s2 && l2 >= (POW2[f.oas] as number)) return status(out, EVT_ID.C_BAD_SUBSTREAMID);
    if (
      f.checkReserved &&
      (hasReservedBits(L1_CD, scratch) || (leaf === CD_L2_ENTRIES_64K && l2 % 65536 !== 0))
    )
      return status(out, EVT_ID.C_BAD_SUBSTREAMID);
    at = l2 - (l2 % (leaf * CD_SIZE)) + (index % leaf) * CD_SIZE;
  }
  const pa = fetchAddr(ste, at, port, out);
  if (pa < 0) return out;
  const steBits = (ste.el2 ? 1 : 0) | (ste.e2h ? 2 : 0) | (ste.s1StallD ? 4 : 0);
  const memo = out.memoFeatures === f && out.memoSte === steBits ? out.memoWords : null;
  const got = fetch16(mem, pa, memo);
  if (got === F_ABORT) {
    out.fetchAddr = pa;
    return status(out, EVT_ID.F_CD_FETCH);
  }
  if (got === F_SAME) {
    out.status = out.memoStatus;
    return out;
  }
  cdWords(scratch, ste, f, out);
  if (out.decoded && Object.isFrozen(f)) {
    out.memoWords = keepWords(out.memoWords);
    out.memoFeatures = f;
    out.memoSte = steBits;
    out.memoStatus = out.status;
  }
  out.decoded = true;
  return out;
}

/** The PA of a CD-table address: itself, or its stage 2 translation (-1 with `out` set on a fault). */
function fetchAddr(
  ste: SmmuSteConfig,
  a: number,
  port: SmmuCdFetchPort,
  out: SmmuCdConfig,
): number {
  if (!ste.s2) return a;
  const e = port.s2Fetch(ste, a);
  if (e === 0) return port.fetchPa;
  out.faultIpa = a;
  out.faultLevel = port.fetchLevel;
  out.fetchAddr = port.fetchAbortAddr;
  out.status = e;
  return -1;
}

function status(out: SmmuCdConfig, s: number): SmmuCdConfig {
  out.status = s;
  return out;
}

/** Decode the 16 words of a CD (already fetched) under `ste` into `out` (sid/ssid kept). */
export function decodeCdWords(
  w: Uint32Array,
  ste: SmmuSteConfig,
  f: SmmuFeatures,
  out: SmmuCdConfig,
): SmmuCdConfig {
  out.memoFeatures = null;
  return cdWords(w, ste, f, out);
}

function cdWords(
  w: Uint32Array,
  ste: SmmuSteConfig,
  f: SmmuFeatures,
  out: SmmuCdConfig,
): SmmuCdConfig {
  out.status = CFG_OK;
  if (get(w, C_V) === 0) return status(out, EVT_ID.C_BAD_CD);
  if (f.checkReserved && hasReservedBits(CD, w)) return status(out, EVT_ID.C_BAD_CD);
  // VMSAv8-32 LPAE tables are not walked by this model; with TTF = AArch64 only they are ILLEGAL.
  if (get(w, C_AA64) === 0) return status(out, EVT_ID.C_BAD_CD);
  // Plain EL2 (no E2H) has one VA range and no ASID; EL2-E2H keeps both, as EL1 does.
  const el2 = ste.el2 && !ste.e2h;
  const epd0 = el2 ? false : get(w, C_EPD0) !== 0;
  const epd1 = el2 ? true : get(w, C_EPD1) !== 0;
  if (!(epd0 && epd1) && get(w, C_ENDI) !== 0) return status(out, EVT_ID.C_BAD_CD);
  const ips = ADDR_SIZE_BITS[get(w, C_IPS)] as number;
  out.outBits = Math.min(ips === 56 ? 52 : ips, f.oas);
  out.ha = get(w, C_HA) !== 0;
  out.hd = get(w, C_HD) !== 0;
  if ((out.ha && f.httu < 1) || (out.hd && f.httu < 2)) return status(out, EVT_ID.C_BAD_CD);
  if (out.hd && !out.ha) out.hd = false;
  out.s = get(w, C_S) !== 0;
  out.r = get(w, C_R) !== 0;
  out.a = get(w, C_A) !== 0;
  if (out.s && (f.stallModel === 1 || (f.stallModel === 0 && ste.s1StallD)))
    return status(out, EVT_ID.C_BAD_CD);
  if (!out.s && f.stallModel === 2) return status(out, EVT_ID.C_BAD_CD);
  if (!out.a && f.termModel === 1) return status(out, EVT_ID.C_BAD_CD);
  out.asid = el2 ? 0 : get(w, C_ASID);
  if (f.asidBits === 8 && out.asid > 0xff) return status(out, EVT_ID.C_BAD_CD);
  out.aset = get(w, C_ASET) !== 0;
  out.affd = get(w, C_AFFD) !== 0;
  out.wxn = get(w, C_WXN) !== 0;
  // PAN is IGNORED (effectively 0) for the any-EL2 StreamWorld.
  out.pan = !el2 && get(w, C_PAN) !== 0;
  out.tbi0 = get(w, C_TBI0) !== 0;
  out.tbi1 = !el2 && get(w, C_TBI1) !== 0;
  out.oneRange = el2;
  const t0 = out.t0;
  t0.disabled = true;
  if (!epd0) {
    const g = tg0PageShift(get(w, C_TG0));
    const tsz = get(w, C_T0SZ);
    if (g === 0 || !granuleOk(f, g) || !txszOk(f, g, tsz)) return status(out, EVT_ID.C_BAD_CD);
    if (!s1Range(t0, g, tsz, addr(w, C_TTB0), out.outBits)) return status(out, EVT_ID.C_BAD_CD);
    t0.had = f.had && get(w, C_HAD0) !== 0;
  }
  const t1 = out.t1;
  t1.disabled = true;
  if (!epd1) {
    const g = tg1PageShift(get(w, C_TG1));
    const tsz = get(w, C_T1SZ);
    if (g === 0 || !granuleOk(f, g) || !txszOk(f, g, tsz)) return status(out, EVT_ID.C_BAD_CD);
    if (!s1Range(t1, g, tsz, addr(w, C_TTB1), out.outBits)) return status(out, EVT_ID.C_BAD_CD);
    t1.had = f.had && get(w, C_HAD1) !== 0;
  }
  return out;
}
