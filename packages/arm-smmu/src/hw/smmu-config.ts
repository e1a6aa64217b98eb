// What the SMMU decodes from the stream table and the context descriptors before it walks: small
// configuration objects (QEMU's SMMUTransCfg split in two) that the STE and CD caches hold and the
// walker reads, with the C_BAD_* / F_*_FETCH outcome of locating and checking each structure.

import {
  fieldOf,
  getField,
  hasReservedBits,
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
  EATS_TRANS,
  L1_STD,
  S1DSS_SSID0,
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
}

const scratch = new Uint32Array(16);

function load(mem: PhysMemory, pa: number, words: number): boolean {
  mem.busError = false;
  for (let i = 0; i < words; i += 2) {
    scratch[i] = mem.read64(pa + 4 * i);
    scratch[i + 1] = mem.hi;
  }
  return !mem.busError;
}

function field(layout: typeof STE, name: string): (w: Uint32Array) => number {
  const f = fieldOf(layout, name);
  return (w) => getField(f, w);
}

function addr(layout: typeof STE, name: string): (w: Uint32Array) => number {
  const get = field(layout, name);
  const unit = 2 ** (fieldOf(layout, name).lsb & 63);
  return (w) => get(w) * unit;
}

const S_V = field(STE, "V");
const S_CONFIG = field(STE, "Config");
const S_S1FMT = field(STE, "S1Fmt");
const S_S1CTX = addr(STE, "S1ContextPtr");
const S_S1CDMAX = field(STE, "S1CDMax");
const S_S1DSS = field(STE, "S1DSS");
const S_S1STALLD = field(STE, "S1STALLD");
const S_EATS = field(STE, "EATS");
const S_STRW = field(STE, "STRW");
const S_PRIVCFG = field(STE, "PRIVCFG");
const S_INSTCFG = field(STE, "INSTCFG");
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
const S_TTB = addr(STE, "S2TTB");
const L1S_SPAN = field(L1_STD, "Span");
const L1S_PTR = addr(L1_STD, "L2Ptr");
const L1C_V = field(L1_CD, "V");
const L1C_PTR = addr(L1_CD, "L2Ptr");
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
const C_TTB0 = addr(CD, "TTB0");
const C_TTB1 = addr(CD, "TTB1");

/** IA bit where `level`'s index starts, for granule shift `g`. */
export function levelShift(g: number, level: number): number {
  return g + (3 - level) * (g - 3);
}

/** Whether `g` (12/14/16) is a granule the SMMU implements. */
function granuleOk(f: SmmuFeatures, g: number): boolean {
  return (
    (g === 12 && f.granules.includes("4K")) ||
    (g === 14 && f.granules.includes("16K")) ||
    (g === 16 && f.granules.includes("64K"))
  );
}

/** Smallest and largest valid TxSZ for granule shift `g` (SMMUv3.1+ rule: outside is ILLEGAL). */
function txszOk(f: SmmuFeatures, g: number, tsz: number): boolean {
  const min = f.vax && g === 16 ? 12 : 16;
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
  const bytes = Math.max(8 * 2 ** (r.ia - levelShift(g, r.startLevel)), outBits === 52 ? 64 : 8);
  r.ttb = ttb - (ttb % bytes);
  if (ttb >= 2 ** outBits) return false;
  return !(g !== 16 && ttb >= 2 ** 48);
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
  out.sid = sid;
  out.status = CFG_OK;
  out.fetchAddr = 0;
  out.s1 = false;
  out.s2 = false;
  out.config = 0;
  if (sid >= 2 ** st.log2size) {
    out.status = EVT_ID.C_BAD_STREAMID;
    return out;
  }
  let at: number;
  if (st.fmt === STRTAB_FMT_2LVL) {
    const l1at = st.base + Math.floor(sid / 2 ** st.split) * 8;
    if (!load(mem, l1at, 2)) {
      out.status = EVT_ID.F_STE_FETCH;
      out.fetchAddr = l1at;
      return out;
    }
    const span = L1S_SPAN(scratch);
    const l2idx = sid % 2 ** st.split;
    if (
      span === 0 ||
      span > 12 ||
      span > st.split + 1 ||
      l2idx >= 2 ** (span - 1) ||
      (f.checkReserved && hasReservedBits(L1_STD, scratch))
    ) {
      out.status = EVT_ID.C_BAD_STREAMID;
      return out;
    }
    const l2 = L1S_PTR(scratch);
    const size = STE_SIZE * 2 ** (span - 1);
    at = l2 - (l2 % size) + l2idx * STE_SIZE;
  } else {
    at = st.base + sid * STE_SIZE;
  }
  if (!load(mem, at, 16)) {
    out.status = EVT_ID.F_STE_FETCH;
    out.fetchAddr = at;
    return out;
  }
  return decodeSteWords(scratch, f, out);
}

/** Decode the 16 words of an STE (already fetched) into `out` (sid kept). */
export function decodeSteWords(w: Uint32Array, f: SmmuFeatures, out: SmmuSteConfig): SmmuSteConfig {
  out.status = CFG_OK;
  out.s1 = false;
  out.s2 = false;
  if (S_V(w) === 0) {
    out.status = EVT_ID.C_BAD_STE;
    return out;
  }
  const config = S_CONFIG(w);
  out.config = config;
  if (config < 4) return out; // abort, no event
  if (f.checkReserved && hasReservedBits(STE, w)) return bad(out);
  if (config === 4) return out; // bypass
  const s1 = (config & 1) !== 0;
  const s2 = (config & 2) !== 0;
  if ((s1 && !f.s1p) || (s2 && !f.s2p)) return bad(out);
  out.s1 = s1;
  out.s2 = s2;
  const eats = S_EATS(w);
  if (!f.ats && eats !== 0 && f.checkReserved) return bad(out);
  out.eats = f.ats ? eats : EATS_ABT;
  // Split-stage ATS is not implemented (IDR0.NS1ATS = 1) and DPT is absent.
  if (out.eats !== EATS_ABT && out.eats !== EATS_TRANS) return bad(out);
  out.privCfg = f.attrPermsOvr ? S_PRIVCFG(w) : 0;
  out.instCfg = f.attrPermsOvr ? S_INSTCFG(w) : 0;
  out.vmid = S_VMID(w);
  if (f.vmidBits === 8 && out.vmid > 0xff) return bad(out);
  out.el2 = false;
  if (s1) {
    out.s1Fmt = S_S1FMT(w);
    out.s1ContextPtr = S_S1CTX(w);
    out.s1CdMax = S_S1CDMAX(w);
    out.cdLimit = 2 ** out.s1CdMax;
    out.s1Dss = S_S1DSS(w);
    out.s1StallD = S_S1STALLD(w) !== 0;
    if (out.s1CdMax > f.ssidBits) return bad(out);
    if (out.s1CdMax > 0) {
      if (out.s1Dss === 3) return bad(out);
      if ((out.s1Fmt === S1FMT_4K_L2 || out.s1Fmt === S1FMT_64K_L2) && !f.cd2l) return bad(out);
      if (out.s1Fmt === 3) out.s1Fmt = 0;
    } else {
      out.s1Fmt = 0;
    }
    if (out.s1StallD && f.stallModel !== 0) return bad(out);
    if (!s2) {
      const strw = S_STRW(w);
      if ((strw & 1) !== 0 || (strw === STRW_EL2 && !f.hyp)) return bad(out);
      out.el2 = strw === STRW_EL2;
      if (out.s1ContextPtr >= 2 ** f.oas) return bad(out);
    }
  }
  if (s2) {
    const r = out.s2Range;
    const g = tg0PageShift(S_TG(w));
    if (g === 0 || !granuleOk(f, g)) return bad(out);
    if (S_AA64(w) === 0 || S_ENDI(w) !== 0) return bad(out);
    const tsz = S_T0SZ(w);
    if (!txszOk(f, g, tsz)) return bad(out);
    const psBits = ADDR_SIZE_BITS[S_PS(w)] as number;
    out.s2OutBits = Math.min(psBits === 56 ? 52 : psBits, f.oas);
    // 4K and 16K tables hold 48-bit addresses (no DS).
    if (g !== 16 && out.s2OutBits > 48) out.s2OutBits = 48;
    const sl0 = S_SL0(w);
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
    const ttb = S_TTB(w);
    if (ttb >= 2 ** out.s2OutBits) return bad(out);
    const bytes = Math.max(8 * 2 ** idxBits, out.s2OutBits === 52 ? 64 : 8);
    r.ttb = ttb - (ttb % bytes);
    out.s2Affd = S_AFFD(w) !== 0;
    out.s2Ha = S_HA(w) !== 0;
    out.s2Hd = S_HD(w) !== 0;
    if ((out.s2Ha && f.httu < 1) || (out.s2Hd && f.httu < 2)) return bad(out);
    if (out.s2Hd && !out.s2Ha) out.s2Hd = false;
    out.s2Ptw = S_PTW(w) !== 0;
    out.s2S = S_S2S(w) !== 0;
    out.s2R = S_S2R(w) !== 0;
    if ((out.s2S && f.stallModel === 1) || (!out.s2S && f.stallModel === 2)) return bad(out);
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
 * @spec Arm SMMUv3 (IHI 0070) 5.2 (S1DSS, S1CDMax, S1Fmt), 5.3 (L1CD), 5.4 (CD ILLEGAL), 5.5
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
  out.status = CFG_OK;
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
    if (L1C_V(scratch) === 0) return status(out, EVT_ID.C_BAD_SUBSTREAMID);
    const l2 = L1C_PTR(scratch);
    if (
      f.checkReserved &&
      (hasReservedBits(L1_CD, scratch) || (leaf === CD_L2_ENTRIES_64K && l2 % 65536 !== 0))
    )
      return status(out, EVT_ID.C_BAD_SUBSTREAMID);
    at = l2 - (l2 % (leaf * CD_SIZE)) + (index % leaf) * CD_SIZE;
  }
  const pa = fetchAddr(ste, at, port, out);
  if (pa < 0) return out;
  if (!load(mem, pa, 16)) {
    out.fetchAddr = pa;
    return status(out, EVT_ID.F_CD_FETCH);
  }
  return decodeCdWords(scratch, ste, f, out);
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
  out.status = CFG_OK;
  if (C_V(w) === 0) return status(out, EVT_ID.C_BAD_CD);
  if (f.checkReserved && hasReservedBits(CD, w)) return status(out, EVT_ID.C_BAD_CD);
  // VMSAv8-32 LPAE tables are not walked by this model; with TTF = AArch64 only they are ILLEGAL.
  if (C_AA64(w) === 0) return status(out, EVT_ID.C_BAD_CD);
  const el2 = ste.el2;
  const epd0 = el2 ? false : C_EPD0(w) !== 0;
  const epd1 = el2 ? true : C_EPD1(w) !== 0;
  if (!(epd0 && epd1) && C_ENDI(w) !== 0) return status(out, EVT_ID.C_BAD_CD);
  const ips = ADDR_SIZE_BITS[C_IPS(w)] as number;
  out.outBits = Math.min(ips === 56 ? 52 : ips, f.oas);
  out.ha = C_HA(w) !== 0;
  out.hd = C_HD(w) !== 0;
  if ((out.ha && f.httu < 1) || (out.hd && f.httu < 2)) return status(out, EVT_ID.C_BAD_CD);
  if (out.hd && !out.ha) out.hd = false;
  out.s = C_S(w) !== 0;
  out.r = C_R(w) !== 0;
  out.a = C_A(w) !== 0;
  if (out.s && (f.stallModel === 1 || (f.stallModel === 0 && ste.s1StallD)))
    return status(out, EVT_ID.C_BAD_CD);
  if (!out.s && f.stallModel === 2) return status(out, EVT_ID.C_BAD_CD);
  if (!out.a && f.termModel === 1) return status(out, EVT_ID.C_BAD_CD);
  out.asid = el2 ? 0 : C_ASID(w);
  if (f.asidBits === 8 && out.asid > 0xff) return status(out, EVT_ID.C_BAD_CD);
  out.aset = C_ASET(w) !== 0;
  out.affd = C_AFFD(w) !== 0;
  out.wxn = C_WXN(w) !== 0;
  out.pan = C_PAN(w) !== 0;
  out.tbi0 = C_TBI0(w) !== 0;
  out.tbi1 = !el2 && C_TBI1(w) !== 0;
  out.oneRange = el2;
  const t0 = out.t0;
  t0.disabled = true;
  if (!epd0) {
    const g = tg0PageShift(C_TG0(w));
    const tsz = C_T0SZ(w);
    if (g === 0 || !granuleOk(f, g) || !txszOk(f, g, tsz)) return status(out, EVT_ID.C_BAD_CD);
    if (!s1Range(t0, g, tsz, C_TTB0(w), out.outBits)) return status(out, EVT_ID.C_BAD_CD);
    t0.had = f.had && C_HAD0(w) !== 0;
  }
  const t1 = out.t1;
  t1.disabled = true;
  if (!epd1) {
    const g = tg1PageShift(C_TG1(w));
    const tsz = C_T1SZ(w);
    if (g === 0 || !granuleOk(f, g) || !txszOk(f, g, tsz)) return status(out, EVT_ID.C_BAD_CD);
    if (!s1Range(t1, g, tsz, C_TTB1(w), out.outBits)) return status(out, EVT_ID.C_BAD_CD);
    t1.had = f.had && C_HAD1(w) !== 0;
  }
  return out;
}
