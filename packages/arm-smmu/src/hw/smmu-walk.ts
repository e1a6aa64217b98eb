// The SMMUv3 translation table walks (VMSAv8-64, every granule): stage 1 through a CD's TTB0/TTB1,
// stage 2 through an STE's S2TTB with concatenated starting tables, and nested translation where
// every stage 1 table fetch and the stage 1 output go through stage 2.
//
// A walk reads descriptors straight from memory, checks types, block levels and output address
// sizes, applies the Access flag rules (F_ACCESS unless HA/AFFD) and hardware dirty-state update,
// collects permissions (AP, APTable, UXN/PXN and their table forms, S2AP, XN) and leaves its answer
// in the walker's result fields. It returns W_OK or a W_* fault; smmu-event.ts turns that into the
// event record. Nothing here throws on any table contents.

import type { PhysMemory } from "@iommu-sim/iommu-core/platform";
import {
  LPAE_DESC_AF,
  LPAE_DESC_CONT_HI,
  LPAE_DESC_DBM_HI,
  LPAE_DESC_RES0_HI,
  LPAE_DESC_TYPE,
  LPAE_DESC_VALID,
  LPAE_S1_AP_RDONLY,
  LPAE_S1_AP_UNPRIV,
  LPAE_S1_NG,
  LPAE_S1_PXN_HI,
  LPAE_S1_PXNTABLE_HI,
  LPAE_S1_UXN_HI,
  LPAE_S1_UXNTABLE_HI,
  LPAE_S2_AP_READ,
  LPAE_S2_AP_WRITE,
  LPAE_S2_MEMATTR_MASK,
  LPAE_S2_MEMATTR_SHIFT,
  lpaeDescPa,
} from "../format/lpae-desc.js";
import type { SmmuCdConfig, SmmuSteConfig, SmmuWalkRange } from "./smmu-config.js";
import type { SmmuWalkCache } from "./smmu-walk-cache.js";

/** Walk outcomes. */
export const W_OK = 0;
/** Invalid descriptor, input address outside the range, EPDx set: F_TRANSLATION. */
export const W_TRANSLATION = 1;
/** A table or output address above the stage's output size: F_ADDR_SIZE. */
export const W_ADDR_SIZE = 2;
/** AF == 0 without HA or AFFD: F_ACCESS. */
export const W_ACCESS = 3;
/** Stage 2 refused a stage 1 table fetch (or its HTTU write): F_PERMISSION, CLASS TT. */
export const W_PERMISSION = 4;
/** External abort reading or updating a descriptor: F_WALK_EABT. */
export const W_EABT = 5;

/**
 * Permission bits of a translation, as the TLB keeps them (the values of the cache's SMMU_PERM_*):
 * read and write (stage 1 privileged view, combined with stage 2), unprivileged execute, stage 1
 * AP[1] (unprivileged access allowed), privileged execute.
 */
export const P_R = 1;
export const P_W = 2;
export const P_X = 4;
export const P_U = 0x100;
export const P_PX = 0x10000;
/**
 * What stage 2 alone grants (all set for stage 1 only), kept in spare bits of the TLB's
 * permission word: they tell which stage a permission fault from a cached entry belongs to.
 */
export const P_S2R = 0x200;
export const P_S2W = 0x400;
export const P_S2X = 0x800;
/**
 * What stage 1 alone grants (all set for stage 2 only): write, unprivileged execute, privileged
 * execute. A stage 1 permission fault is found before stage 2 translates the output address, so
 * it wins over a stage 2 one, and telling them apart needs stage 1's own rights.
 */
export const P_S1W = 0x1000;
export const P_S1X = 0x2000;
export const P_S1PX = 0x4000;
/** Every permission of a bypassed stage. */
export const P_ALL = P_R | P_W | P_X | P_U | P_PX | P_S2R | P_S2W | P_S2X | P_S1W | P_S1X | P_S1PX;

/** Stages. */
export const STAGE_1 = 1;
export const STAGE_2 = 2;
/** Event CLASS values (what the faulting stage was doing). */
export const CLASS_CD = 0;
export const CLASS_TT = 1;
export const CLASS_IN = 2;

const VALID = LPAE_DESC_VALID;
const TYPE = LPAE_DESC_TYPE;
const AF = LPAE_DESC_AF;
const NG = LPAE_S1_NG;
const AP_U = LPAE_S1_AP_UNPRIV;
const AP_RO = LPAE_S1_AP_RDONLY;
const S2_R = LPAE_S2_AP_READ;
const S2_W = LPAE_S2_AP_WRITE;
const CONT_HI = LPAE_DESC_CONT_HI;
const DBM_HI = LPAE_DESC_DBM_HI;
const PXN_HI = LPAE_S1_PXN_HI;
const UXN_HI = LPAE_S1_UXN_HI;
const PXNT_HI = LPAE_S1_PXNTABLE_HI;
const UXNT_HI = LPAE_S1_UXNTABLE_HI;
/** APTable[0] (bit 61): no unprivileged access below; APTable[1] (bit 62): read-only below. */
const APT_NOU_HI = 1 << 29;
const APT_RO_HI = 1 << 30;
/** Stage 2 XN[1] (bit 54): not executable (XN[0] only matters with FEAT_XNX, not modelled). */
const S2_XN_HI = 1 << 22;
/** OA[49:48] of a 4K/16K descriptor: Address Size fault without DS. */
const RES0_HI = LPAE_DESC_RES0_HI;
const MEMATTR_SHIFT = LPAE_S2_MEMATTR_SHIFT;
const MEMATTR_MASK = LPAE_S2_MEMATTR_MASK;

/** Table attributes accumulated in a walk-cache entry. */
const A_NOU = 1;
const A_RO = 2;
const A_UXNT = 4;
const A_PXNT = 8;

/** 2^i and 2^-i for i in [0, 64]: table loads instead of `2 **` (multiplying by 2^-i is exact). */
const POW2 = new Float64Array(65);
const INV2 = new Float64Array(65);
for (let i = 0; i <= 64; i++) {
  POW2[i] = 2 ** i;
  INV2[i] = 2 ** -i;
}
const TWO44 = 2 ** 44;

/**
 * The low `bits` (< 32) bits of the non-negative integer `x` (< 2^53): ToInt32 keeps x mod 2^32
 * exactly, without the floating-point remainder `%` would cost.
 */
function lowBits(x: number, bits: number): number {
  return (x | 0) & ((1 << bits) - 1);
}

/**
 * The table index `bits` wide at bit `sh` of an input page number: from `small` (the page number
 * itself when it is below 2^31, else -1) with integer shifts, or from `x` when it is larger.
 */
function indexOf(small: number, x: number, sh: number, bits: number): number {
  if (small >= 0) return sh < 31 ? (small >>> sh) & ((1 << bits) - 1) : 0;
  return lowBits(Math.floor(x * (INV2[sh] as number)), bits);
}

/** Extra size bits of a contiguous group: [granule shift 12/14/16][level]. */
function contBits(g: number, level: number): number {
  if (g === 12) return level >= 1 ? 4 : 0;
  if (g === 14) return level === 3 ? 7 : level === 2 ? 5 : 0;
  return level >= 2 ? 5 : 0;
}

/**
 * One walker per SMMU, reused by every translation. Results of the last walk: `pfn` (output frame
 * of the requested 4 KiB page), `perm` (P_* bits), `sizeShift` of the leaf (larger with the
 * contiguous hint; the smaller of both stages when nested), `global` (stage 1 nG == 0); on a
 * fault `stage`, `level`, `cls` (CLASS), `ipa` (the IPA stage 2 was translating), `fetchAddr`
 * (the descriptor PA of an abort) and `ttWrite` (a stage 2 fault on a stage 1 descriptor update).
 */
export class SmmuWalker {
  pfn = 0;
  perm = 0;
  sizeShift = 12;
  global = false;
  stage = 0;
  level = 0;
  cls = CLASS_IN;
  ipa = 0;
  fetchAddr = 0;
  ttWrite = false;
  /** The stage 1 output frame (IPA >> 12 when nested) of the last successful stage 1 leaf. */
  ipaPfn = 0;
  /** Descriptors read since construction (for benchmarks and tests). */
  reads = 0;
  /** Set AF / dirty state as the hardware does (off for an oracle's side-effect-free walk). */
  updateFlags = true;
  /** The walk cache to read and fill, or null (minimal policy, the oracle's walks). */
  walkCache: SmmuWalkCache | null = null;
  /** Walk-cache tags of the current translation: VMID (or SMMU_VMID_EL2) and ASID. */
  vmid = 0;
  asid = 0;
  /**
   * The request's effective privilege (after STE.PRIVCFG), set before a stage 1 walk: a write may
   * set the dirty state only where nothing but AP[2] / S2AP[1] refuses it (3.13.3.1).
   */
  priv = false;

  private readonly mem: PhysMemory;
  // Stage 2 results, kept apart for nested walks.
  private sPfn = 0;
  private sPerm = 0;
  private sShift = 12;
  private sLevel = 0;
  private sDevice = false;
  private sFetch = 0;
  // The descriptor last read.
  private dLo = 0;
  private dHi = 0;

  constructor(mem: PhysMemory) {
    this.mem = mem;
  }

  /**
   * Read the descriptor at `at` through the checked path into dLo/dHi (as int32); false on an
   * external abort. The walks read through `PhysMemory.wordsOf` inline first, keeping the halves
   * in int32 locals.
   */
  private readSlow(at: number): boolean {
    const mem = this.mem;
    mem.busError = false;
    this.dLo = mem.read64(at) | 0;
    this.dHi = mem.hi | 0;
    return !mem.busError;
  }

  /** Store the updated low word of a descriptor (HTTU); false on an abort. */
  private update(at: number, lo: number): boolean {
    if (!this.updateFlags) return true;
    const mem = this.mem;
    mem.busError = false;
    mem.write32(at, lo >>> 0);
    return !mem.busError;
  }

  /**
   * Stage 2 alone for input page `ipaPfn` (IPA >> 12) under `ste`: W_OK with `pfn`/`perm`/
   * `sizeShift`, or a fault with `stage` 2, `level`, `cls` CLASS_IN and `ipa`.
   */
  walkStage2(ste: SmmuSteConfig, ipaPfn: number, write: boolean): number {
    const w = this.s2(ste, ipaPfn, write);
    if (w === W_OK) {
      this.pfn = this.sPfn;
      this.perm = this.sPerm;
      this.sizeShift = this.sShift;
      this.global = false;
      // The leaf's level tags the TLB entry (TLBI_S2_IPA's TTL selects on it).
      this.level = this.sLevel;
      return W_OK;
    }
    this.s2Fault(ipaPfn * 4096, CLASS_IN);
    return w;
  }

  /**
   * The PA of an IPA fetched by the SMMU for its own structures (a CD or L1CD, a stage 1
   * descriptor): W_OK with the PA in `fetchPa`, or a stage 2 fault. `S2PTW` turns a fetch from
   * Device memory into a permission fault.
   */
  s2FetchPa = 0;
  fetchIpa(ste: SmmuSteConfig, ipa: number, write: boolean): number {
    const w = this.s2(ste, Math.floor(ipa * (INV2[12] as number)), write);
    if (w !== W_OK) return w;
    const needed = write ? P_S2W : P_S2R;
    if ((this.sPerm & needed) === 0 || (ste.s2Ptw && this.sDevice)) return W_PERMISSION;
    this.s2FetchPa = this.sPfn * 4096 + ((ipa | 0) & 4095);
    return W_OK;
  }

  private s2Fault(ipa: number, cls: number): void {
    this.stage = STAGE_2;
    this.level = this.sLevel;
    this.cls = cls;
    this.ipa = ipa;
    this.fetchAddr = this.sFetch;
  }

  private s2(ste: SmmuSteConfig, ipaPfn: number, write: boolean): number {
    const mem = this.mem;
    const r = ste.s2Range;
    const g = r.pgShift;
    this.sLevel = r.startLevel;
    if (ipaPfn >= (POW2[r.ia - 12] as number)) return W_TRANSLATION;
    const outLimit = POW2[ste.s2OutBits] as number;
    const granule = POW2[g] as number;
    let table = r.ttb;
    let level = r.startLevel;
    let idxBits = r.ia - levelShift(g, level);
    const wc = this.walkCache;
    if (wc !== null) {
      const i = wc.lookupDeepest(this.vmid, 0, 2, g, ipaPfn);
      if (i >= 0) {
        table = wc.tablePaOf(i);
        level = wc.levelOf(i) + 1;
        idxBits = g - 3;
      }
    }
    const small = ipaPfn <= 0x7fffffff ? ipaPfn | 0 : -1;
    for (;;) {
      this.sLevel = level;
      const index = indexOf(small, ipaPfn, levelShift(g, level) - 12, idxBits);
      const at = table + index * 8;
      // The descriptor's halves as int32 (every use is bitwise).
      let lo: number;
      let hi: number;
      const words = mem.wordsOf(at);
      this.reads++;
      if (words !== undefined) {
        const wi = mem.wordIndex(at);
        lo = (words[wi] as number) | 0;
        hi = (words[wi + 1] as number) | 0;
      } else {
        if (!this.readSlow(at)) {
          this.sFetch = at;
          return W_EABT;
        }
        lo = this.dLo;
        hi = this.dHi;
      }
      if ((lo & VALID) === 0) return W_TRANSLATION;
      const isTable = (lo & TYPE) !== 0 && level < 3;
      if (level === 3 && (lo & TYPE) === 0) return W_TRANSLATION;
      if (!isTable && level < 3 && !blockOk(g, level, ste.s2OutBits)) return W_TRANSLATION;
      if (g !== 16 && (hi & RES0_HI) !== 0) return W_ADDR_SIZE;
      const oa = lpaeDescPa(lo, hi, granule);
      if (oa >= outLimit) return W_ADDR_SIZE;
      if (isTable) {
        if (wc !== null) wc.insert(this.vmid, 0, 2, level, g, ipaPfn, oa, 0);
        table = oa;
        level++;
        idxBits = g - 3;
        continue;
      }
      let l = lo;
      if ((lo & AF) === 0) {
        if (ste.s2Ha) l |= AF;
        else if (!ste.s2Affd) return W_ACCESS;
      }
      if (write && ste.s2Hd && (hi & DBM_HI) !== 0 && (l & S2_W) === 0) l |= S2_W;
      if (l !== lo && !this.update(at, l)) {
        this.sFetch = at;
        return W_EABT;
      }
      let perm = P_ALL;
      if ((l & S2_R) === 0) perm &= ~(P_R | P_S2R);
      if ((l & S2_W) === 0) perm &= ~(P_W | P_S2W);
      if ((hi & S2_XN_HI) !== 0) perm &= ~(P_X | P_PX | P_S2X);
      const shift = levelShift(g, level);
      this.sPfn = oa / 4096 + lowBits(ipaPfn, shift - 12);
      this.sPerm = perm;
      this.sShift = shift + ((hi & CONT_HI) !== 0 ? contBits(g, level) : 0);
      // MemAttr[3:2] == 0b00 is Device memory.
      this.sDevice = (l & MEMATTR_MASK) >>> MEMATTR_SHIFT < 4;
      return W_OK;
    }
  }

  /**
   * Stage 1 (and, with `ste.s2`, nested) translation of input page `vpn` (VA[63:12]) through
   * `cd`. W_OK with `pfn`, `perm`, `sizeShift`, `global`; else the fault and where it happened.
   * With `s1Only` a nested walk stops at the stage 1 output (in `pfn`, stage 1 permissions).
   *
   * @spec Arm SMMUv3 (IHI 0070) 3.4 (address sizes), 3.13 (HTTU), 5.4 (TTBx selection; UWXN, PAN
   *   and HAD0 on the any-EL2 StreamWorld, where all accesses are privileged)
   */
  walkStage1(
    ste: SmmuSteConfig,
    cd: SmmuCdConfig,
    vpn: number,
    write: boolean,
    s1Only = false,
  ): number {
    const mem = this.mem;
    this.stage = STAGE_1;
    this.cls = CLASS_IN;
    this.ipa = 0;
    this.ttWrite = false;
    let r: SmmuWalkRange = cd.t0;
    // VA[55] selects TTB1 in a two-range regime; the bits above the range must all equal it
    // (bits [63:56] excepted with TBIx).
    const top = (Math.floor(vpn * (INV2[43] as number)) & 1) === 1 && !cd.oneRange;
    if (top) r = cd.t1;
    const tbi = top ? cd.tbi1 : cd.tbi0;
    this.level = r.startLevel;
    if (r.disabled) return W_TRANSLATION;
    const inBits = r.ia - 12;
    const aboveBits = (tbi ? 44 : 52) - inBits;
    const masked = tbi ? vpn - Math.floor(vpn * (INV2[44] as number)) * TWO44 : vpn;
    const above = Math.floor(masked * (INV2[inBits] as number));
    if (above !== (top ? (POW2[aboveBits] as number) - 1 : 0)) return W_TRANSLATION;
    const nested = ste.s2;
    const g = r.pgShift;
    const granule = POW2[g] as number;
    const outLimit = POW2[cd.outBits] as number;
    const vin = masked - above * (POW2[inBits] as number);
    let table = r.ttb;
    let level = r.startLevel;
    let idxBits = r.ia - levelShift(g, level);
    let noU = false;
    let ro = false;
    let uxnT = false;
    let pxnT = false;
    const wc = this.walkCache;
    const asid = this.asid;
    if (wc !== null) {
      const i = wc.lookupDeepest(this.vmid, asid, 1, g, masked);
      if (i >= 0) {
        // Nested entries hold the next table's IPA: it goes through stage 2 again below.
        table = wc.tablePaOf(i);
        level = wc.levelOf(i) + 1;
        idxBits = g - 3;
        const a = wc.attrsOf(i);
        noU = (a & A_NOU) !== 0;
        ro = (a & A_RO) !== 0;
        uxnT = (a & A_UXNT) !== 0;
        pxnT = (a & A_PXNT) !== 0;
      }
    }
    const small = vin <= 0x7fffffff ? vin | 0 : -1;
    for (;;) {
      this.level = level;
      const index = indexOf(small, vin, levelShift(g, level) - 12, idxBits);
      let at = table + index * 8;
      if (nested) {
        const e = this.fetchIpa(ste, at, false);
        if (e !== W_OK) {
          this.s2Fault(at, CLASS_TT);
          return e;
        }
        at = this.s2FetchPa;
      }
      let lo: number;
      let hi: number;
      const words = mem.wordsOf(at);
      this.reads++;
      if (words !== undefined) {
        const wi = mem.wordIndex(at);
        lo = (words[wi] as number) | 0;
        hi = (words[wi + 1] as number) | 0;
      } else {
        if (!this.readSlow(at)) {
          this.fetchAddr = at;
          return W_EABT;
        }
        lo = this.dLo;
        hi = this.dHi;
      }
      if ((lo & VALID) === 0) return W_TRANSLATION;
      const isTable = (lo & TYPE) !== 0 && level < 3;
      if (level === 3 && (lo & TYPE) === 0) return W_TRANSLATION;
      if (!isTable && level < 3 && !blockOk(g, level, cd.outBits)) return W_TRANSLATION;
      if (g !== 16 && (hi & RES0_HI) !== 0) return W_ADDR_SIZE;
      const oa = lpaeDescPa(lo, hi, granule);
      if (oa >= outLimit) return W_ADDR_SIZE;
      if (isTable) {
        if (!r.had) {
          if ((hi & APT_NOU_HI) !== 0) noU = true;
          if ((hi & APT_RO_HI) !== 0) ro = true;
          if ((hi & UXNT_HI) !== 0) uxnT = true;
          if ((hi & PXNT_HI) !== 0) pxnT = true;
        }
        if (wc !== null) {
          const a = (noU ? A_NOU : 0) | (ro ? A_RO : 0) | (uxnT ? A_UXNT : 0) | (pxnT ? A_PXNT : 0);
          wc.insert(this.vmid, asid, 1, level, g, masked, oa, a);
        }
        table = oa;
        level++;
        idxBits = g - 3;
        continue;
      }
      let l = lo;
      if ((lo & AF) === 0) {
        if (cd.ha) l |= AF;
        else if (!cd.affd) return W_ACCESS;
      }
      // Dirty state: a writable-clean (DBM, AP[2] = 1) page becomes dirty on a write that only
      // AP[2] refuses: not when AP[1]/APTable[0] deny an unprivileged request or PAN a privileged
      // one (3.13.3.1; the any-EL2 regime has neither check).
      const user = (lo & AP_U) !== 0 && !noU;
      const writeOk = write && (cd.oneRange || (this.priv ? !(cd.pan && user) : user));
      if (writeOk && cd.hd && (hi & DBM_HI) !== 0 && (l & AP_RO) !== 0 && !ro) l &= ~AP_RO;
      if (l !== lo) {
        if (nested && this.updateFlags) {
          // The update is a stage 1 table write through stage 2 (TTRnW = 0 if refused).
          const e = this.fetchIpa(ste, table + index * 8, true);
          if (e !== W_OK) {
            this.ttWrite = true;
            this.s2Fault(table + index * 8, CLASS_TT);
            return e;
          }
        }
        if (!this.update(at, l)) {
          this.fetchAddr = at;
          return W_EABT;
        }
      }
      let perm = P_R | P_S2R | P_S2W | P_S2X;
      const writable = (l & AP_RO) === 0 && !ro;
      if (writable) perm |= P_W | P_S1W;
      if (cd.oneRange) {
        // EL2 without E2H, a one-Exception-level regime: every access counts as privileged, so
        // AP[1] and APTable[0] grant nothing; bit 54 is XN (and XNTable bit 60) for every access;
        // PXN, PXNTable and the implicit PXN of EL0-writable pages do not exist.
        perm |= P_U;
        if ((hi & UXN_HI) === 0 && !uxnT && !(cd.wxn && writable))
          perm |= P_X | P_PX | P_S1X | P_S1PX;
      } else {
        if (user) perm |= P_U;
        if ((hi & UXN_HI) === 0 && !uxnT && !(cd.wxn && writable)) perm |= P_X | P_S1X;
        // EL0-writable memory is never privileged-executable in VMSAv8-64.
        if ((hi & PXN_HI) === 0 && !pxnT && !(user && writable) && !(cd.wxn && writable))
          perm |= P_PX | P_S1PX;
      }
      const shift = levelShift(g, level);
      const gpfn = oa / 4096 + lowBits(vin, shift - 12);
      const size = shift + ((hi & CONT_HI) !== 0 ? contBits(g, level) : 0);
      this.global = (l & NG) === 0;
      this.ipaPfn = gpfn;
      if (!nested || s1Only) {
        this.pfn = gpfn;
        this.perm = perm;
        this.sizeShift = size;
        return W_OK;
      }
      // Stage 2 dirties its descriptor only for a write stage 1 permits (a stage 1 permission fault
      // comes first).
      const e = this.s2(ste, gpfn, writeOk && writable);
      if (e !== W_OK) {
        this.s2Fault(gpfn * 4096, CLASS_IN);
        return e;
      }
      this.pfn = this.sPfn;
      this.perm = combine(perm, this.sPerm);
      this.sizeShift = Math.min(size, this.sShift);
      return W_OK;
    }
  }
}

/** Stage 1 permissions narrowed by stage 2's. */
function combine(p1: number, p2: number): number {
  let p = p1 & P_ALL;
  if ((p2 & P_S2R) === 0) p &= ~(P_R | P_S2R);
  if ((p2 & P_S2W) === 0) p &= ~(P_W | P_S2W);
  if ((p2 & P_S2X) === 0) p &= ~(P_X | P_PX | P_S2X);
  return p;
}

/** IA bit where `level`'s index starts, for granule shift `g`. */
function levelShift(g: number, level: number): number {
  return g + (3 - level) * (g - 3);
}

/**
 * Block descriptors allowed without DS: 4K at levels 1 and 2, 16K at level 2, 64K at level 2 and
 * at level 1 only with a 52-bit output (FEAT_LPA).
 */
function blockOk(g: number, level: number, outBits: number): boolean {
  if (level === 2) return true;
  if (level === 1) return g === 12 || (g === 16 && outBits === 52);
  return false;
}
