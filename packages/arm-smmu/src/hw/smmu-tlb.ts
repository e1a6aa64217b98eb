// The SMMUv3 TLB: a set-associative, true-LRU cache of leaf translations tagged by VMID, ASID, page.

import { bug } from "@iommu-sim/iommu-core/platform";

export { SmmuWalkCache, type SmmuWalkCacheEntry } from "./smmu-walk-cache.js";

/**
 * What configuration inserted a TLB entry; the invalidation commands select entries by it.
 * - SMMU_TLB_S1: stage 1 only (VA -> PA), tagged by VMID (STE.S2VMID, or 0) and ASID unless global;
 * - SMMU_TLB_S2: stage 2 only (IPA -> PA), tagged by VMID only: it is an IPA entry, which a VA
 *   lookup must never match (spec 4.4.3.1 note), so it is kept apart by the SMMU_ASID_IPA tag;
 * - SMMU_TLB_NESTED: combined stage 1 + stage 2 (VA -> PA), tagged like SMMU_TLB_S1.
 *
 * @spec SMMUv3 3.17 (TLB tagging), 16.2.1 (combined caches)
 */
export const SMMU_TLB_S1 = 1;
export const SMMU_TLB_S2 = 2;
export const SMMU_TLB_NESTED = 3;
export type SmmuTlbKind = typeof SMMU_TLB_S1 | typeof SMMU_TLB_S2 | typeof SMMU_TLB_NESTED;

/**
 * Permission bits a TLB entry carries, so a hit is checked without a walk (the walker stores the
 * result of combining every level and both stages):
 * - R, W, X: read / write / (unprivileged) execute allowed;
 * - UNPRIV: unprivileged access allowed (stage-1 AP[1] = 1 on the leaf, no APTable restriction);
 * - PX: privileged execute allowed (PXN clear on the leaf and no PXNTable).
 */
export const SMMU_PERM_R = 1;
export const SMMU_PERM_W = 2;
export const SMMU_PERM_X = 4;
export const SMMU_PERM_UNPRIV = 0x100;
export const SMMU_PERM_PX = 0x1_0000;
const PERM_MASK = 0x1_ffff;

/**
 * The VMID tag of entries of an EL2 (or EL2-E2H) StreamWorld, which has no VMID: one above the
 * largest 16-bit VMID, so no TLBI_NH_* / S12 / S2 / NSNH command can select such entries and only
 * the CMD_TLBI_EL2_* forms do. EL2 entries without ASIDs (E2H = 0) are inserted as global.
 *
 * @spec SMMUv3 3.17 (EL2 entries carry no VMID), 4.4.4.1 (NSNH_ALL leaves EL2 entries)
 */
export const SMMU_VMID_EL2 = 0x1_0000;

/**
 * The `asid` argument of a lookup by a stage-2-only stream: its input is an IPA, and an IPA
 * lookup must only find entries inserted by stage-2-only configurations (SMMU_TLB_S2), never a
 * VA entry of the same VMID. Inserting with kind SMMU_TLB_S2 stores this tag whatever `asid` is.
 *
 * @spec SMMUv3 4.4.3.1 (note: entries must record whether they translate a VA or an IPA)
 */
export const SMMU_ASID_IPA = 0x1_0000;

/** Smallest and largest leaf sizes: 4 KiB pages up to a 64-KiB-granule level-1 block (4 TiB). */
export const SMMU_TLB_MIN_SHIFT = 12;
export const SMMU_TLB_MAX_SHIFT = 42;

/** One TLB entry as plain data, for the oracle, the tests and printing (never on a hot path). */
export interface SmmuTlbEntry {
  /** Slot index: the value `lookup` returns for this entry. */
  index: number;
  /** 16-bit VMID, or SMMU_VMID_EL2. */
  vmid: number;
  /** 16-bit ASID; 0 for global entries; SMMU_ASID_IPA for stage-2-only entries. */
  asid: number;
  /** First page number (input address >> 12) of the entry, aligned to its size. */
  vpn: number;
  sizeShift: number;
  global: boolean;
  kind: SmmuTlbKind;
  /** Output frame (pa >> 12) of the entry's first 4-KiB page. */
  oaFrame: number;
  perm: number;
  /** Translation granule shift (12, 14, 16) the entry was walked with, 0 if not given. */
  tgShift: number;
  /** Lookup level of the leaf descriptor (-1..3), or -2 if not given. */
  level: number;
  /** LRU stamp: larger is more recently used. */
  stamp: number;
}

const TWO32 = 4294967296;
/** 2^-32: multiplying by it is exact and cheaper than dividing. */
const INV_TWO32 = 1 / TWO32;

// Tag word 1 ("mid"): page-number bits 51:32, size code, valid and the regime / kind flags.
const VPN_HI_MASK = 0xf_ffff;
const CODE_SHIFT = 20;
const CODE_MASK = 0x1f;
/** Set in every occupied slot, so a free slot has mid = 0. */
const VALID = 1 << 25;
const EL2_SHIFT = 26;
const EL2 = 1 << EL2_SHIFT;
const GLOBAL = 1 << 27;
const IPA_SHIFT = 28;
const IPA = 1 << IPA_SHIFT;
/** Tag word 2 is VMID << 16 | ASID: the VMID half alone, for global entries. */
const VMID_HALF = 0xffff_0000 | 0;
// Data word 3: perm | kind << 24 | (level + 2) << 26 | tg code << 29.
const KIND_SHIFT = 24;
const LEVEL_SHIFT = 26;
const TG_SHIFT = 29;
/** Words per slot in `tags`: page number 31:0, mid, VMID/ASID, data. */
const STRIDE = 4;
/** Hint-table slots per cache slot (a power of two). */
const HINT_RATIO = 8;

const S1_KINDS = (1 << SMMU_TLB_S1) | (1 << SMMU_TLB_NESTED);
const S2_KINDS = 1 << SMMU_TLB_S2;
const ALL_KINDS = S1_KINDS | S2_KINDS;

/** How `sweep` matches the ASID: any, non-global of one ASID, or one ASID plus global entries. */
const ASID_ANY = 0;
const ASID_NON_GLOBAL = 1;
const ASID_OR_GLOBAL = 2;

/** 2^i for i in [0, 64]: a table load instead of `2 **`. */
const POW2 = new Float64Array(65);
for (let i = 0; i <= 64; i++) POW2[i] = 2 ** i;

/** The hint-table index of a key (a multiplicative hash). */
function hintHash(lo: number, mid: number, w2: number, bits: number): number {
  return (
    Math.imul(lo ^ Math.imul(mid, 0x9e3779b1) ^ Math.imul(w2, 0x27d4eb2f), 0x85ebca6b) >>>
    (32 - bits)
  );
}

/** The TG field's code of a granule shift: 0 (any), 1 (4K), 2 (16K), 3 (64K); -1 if invalid. */
function tgCodeOf(tgShift: number): number {
  return tgShift === 0 ? 0 : tgShift === 12 ? 1 : tgShift === 14 ? 2 : tgShift === 16 ? 3 : -1;
}

/**
 * The TLB of one SMMU: `sets` x `ways` slots (sets a power of two, capacity 0 allowed), true LRU
 * within a set by a per-cache stamp bumped on every hit and insert; the victim is the first free
 * way, else the least recently used. An entry of size 2^s bytes lives in the set given by the low
 * bits of its page number at that size (vpn >> (s - 12)), so 4-KiB entries use `vpn & (sets-1)`
 * as in the C baseline.
 *
 * Lookup tries each leaf size in use (a bitmap of sizes kept with per-size counts, so only sizes
 * that exist are probed), first the non-global entries of (VMID, ASID), then the global entries of
 * the VMID (spec 3.17.1: a global entry matches every ASID of its VMID and StreamWorld). A 4-KiB
 * lookup first tries a direct-mapped hint table (hash of the key -> slot last seen holding it)
 * with one tag compare, as VtdIotlb does: the hit way is random, so a way loop mispredicts its
 * exit. A hint is only a guess; the tag check makes a stale one harmless.
 *
 * Each slot is four int32 words: page number 31:0; a middle word with page-number bits 51:32
 * (19:0), size code sizeShift-12 (24:20), valid (25), EL2 (26), global (27), IPA (28); VMID << 16 |
 * ASID (ASID 0 for global and stage-2 entries); and the data word perm | kind << 24 | level << 26 |
 * TG << 29. The output frame is in a parallel Float64Array.
 *
 * Invalidations follow the CMD_TLBI_* scopes of section 4.4 (see each method) with the maximal
 * policy: whatever a command is not required to remove stays. All TLB entries are last-level
 * entries, so Leaf does not change what a command removes here (it matters to the walk cache).
 * With TG != 0 an entry that recorded a different granule stays, and with TTL != 0 also one whose
 * leaf came from a different level (4.4.1.1: the SMMU is "only required to invalidate" matching
 * entries); an entry inserted without granule / level is treated as matching. VMID wildcards
 * (SMMU_CR0.VMW) are not modelled. Nothing here allocates except `entries()` / `forEach`.
 *
 * @spec SMMUv3 3.17 (tagging), 3.17.1 (global), 4.4 (TLB invalidation), 16.2 (caches)
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_tlb_inv_range_domain
 */
export class SmmuTlb {
  readonly sets: number;
  readonly ways: number;
  readonly capacity: number;
  hits = 0;
  misses = 0;
  inserts = 0;
  evictions = 0;
  invalidated = 0;

  private readonly setMask: number;
  /** STRIDE words per slot (at least one slot, kept free when the capacity is 0). */
  private readonly tags: Int32Array;
  private readonly stamps: Float64Array;
  private readonly frames: Float64Array;
  private readonly hint: Int32Array;
  private readonly hintBits: number;
  /** Entries per size code, non-global and global, and the bitmaps of codes with a count > 0. */
  private readonly sizeCount = new Int32Array(32);
  private readonly globalCount = new Int32Array(32);
  private sizeBits = 0;
  private globalBits = 0;
  private clock = 0;
  private live = 0;

  /** `sets` must be 0 or a power of two; `ways` in [0, 256]. Either 0 gives an empty TLB. */
  constructor(sets: number, ways: number) {
    if (!Number.isInteger(sets) || sets < 0 || (sets & (sets - 1)) !== 0 || sets > 1 << 24) {
      bug(`SmmuTlb: sets must be 0 or a power of two, got ${sets}`);
    }
    if (!Number.isInteger(ways) || ways < 0 || ways > 256) {
      bug(`SmmuTlb: ways must be an integer in [0, 256], got ${ways}`);
    }
    const empty = sets === 0 || ways === 0;
    this.sets = empty ? 1 : sets;
    this.ways = empty ? 0 : ways;
    this.capacity = this.sets * this.ways;
    this.setMask = this.sets - 1;
    const n = Math.max(1, this.capacity);
    this.tags = new Int32Array(n * STRIDE);
    this.stamps = new Float64Array(n);
    this.frames = new Float64Array(n);
    this.hintBits = Math.max(1, 32 - Math.clz32(n * HINT_RATIO - 1));
    this.hint = new Int32Array(1 << this.hintBits);
  }

  /**
   * The slot translating page `vpn` (input address >> 12, < 2^52) for `vmid` (16 bits or
   * SMMU_VMID_EL2) and `asid` (16 bits, or SMMU_ASID_IPA for a stage-2-only stream), or -1.
   * Counts a hit (and makes the entry most recent) or a miss.
   */
  lookup(vmid: number, asid: number, vpn: number): number {
    if (this.live === 0) {
      // Nothing cached (always so without a TLB): a miss.
      this.misses++;
      return -1;
    }
    const lo = vpn | 0;
    const mid =
      ((vpn * INV_TWO32) & VPN_HI_MASK) |
      VALID |
      ((vmid >>> 16) << EL2_SHIFT) |
      ((asid >>> 16) << IPA_SHIFT);
    const w2 = (vmid << 16) | (asid & 0xffff);
    const h = hintHash(lo, mid, w2, this.hintBits);
    const i = this.hint[h] as number;
    const t = i * STRIDE;
    const tags = this.tags;
    if (tags[t] === lo && tags[t + 1] === mid && tags[t + 2] === w2) {
      this.hits++;
      this.stamps[i] = ++this.clock;
      return i;
    }
    return this.lookupSlow(lo, mid, w2, h);
  }

  /**
   * The slot `lookup(vmid, asid, vpn)` would return now, or -1, without counting, touching the
   * LRU stamps or moving the hint: the oracle's look at what would answer a request.
   */
  peek(vmid: number, asid: number, vpn: number): number {
    if (this.live === 0) return -1;
    const lo = vpn | 0;
    const mid =
      ((vpn * INV_TWO32) & VPN_HI_MASK) |
      VALID |
      ((vmid >>> 16) << EL2_SHIFT) |
      ((asid >>> 16) << IPA_SHIFT);
    const w2 = (vmid << 16) | (asid & 0xffff);
    const i = this.hint[hintHash(lo, mid, w2, this.hintBits)] as number;
    if (this.covers(i, lo, mid, w2)) return i;
    const s = this.scan(lo, mid, w2, this.sizeBits);
    if (s >= 0 || (mid & IPA) !== 0) return s;
    return this.scan(lo, mid | GLOBAL, w2 & VMID_HALF, this.globalBits);
  }

  /** A stage-2-only lookup: `lookup(vmid, SMMU_ASID_IPA, ipn)`. */
  lookupS2(vmid: number, ipn: number): number {
    return this.lookup(vmid, SMMU_ASID_IPA, ipn);
  }

  /** The hint's slot at any size, then the set scans per size in use. Out of line. */
  private lookupSlow(lo: number, mid4k: number, w2: number, h: number): number {
    let i = this.hint[h] as number;
    if (!this.covers(i, lo, mid4k, w2)) {
      i = this.scan(lo, mid4k, w2, this.sizeBits);
      if (i < 0 && (mid4k & IPA) === 0) {
        i = this.scan(lo, mid4k | GLOBAL, w2 & VMID_HALF, this.globalBits);
      }
      if (i < 0) {
        this.misses++;
        return -1;
      }
      this.hint[h] = i;
    }
    this.hits++;
    this.stamps[i] = ++this.clock;
    return i;
  }

  /** Whether slot i (of any size, global or not) translates the 4-KiB key (lo, mid4k, w2). */
  private covers(i: number, lo: number, mid4k: number, w2: number): boolean {
    const tags = this.tags;
    const t = i * STRIDE;
    const m = tags[t + 1] as number;
    const code = (m >>> CODE_SHIFT) & CODE_MASK;
    if ((m & ~(GLOBAL | (CODE_MASK << CODE_SHIFT))) !== mid4k) return false;
    if (tags[t] !== (lo & ~((1 << code) - 1))) return false;
    return (m & GLOBAL) === 0 ? tags[t + 2] === w2 : tags[t + 2] === (w2 & VMID_HALF);
  }

  /** Probe the set of each size code in `bits` for the key; `mid` carries the GLOBAL flag. */
  private scan(lo: number, mid: number, w2: number, bits: number): number {
    const hi = mid & VPN_HI_MASK;
    let b = bits;
    while (b !== 0) {
      const low = b & -b;
      b ^= low;
      const code = 31 - Math.clz32(low);
      const set = code === 0 ? lo : (lo >>> code) | (hi << (32 - code));
      const i = this.find(
        (set & this.setMask) * this.ways,
        lo & ~((1 << code) - 1),
        mid | (code << CODE_SHIFT),
        w2,
      );
      if (i >= 0) return i;
    }
    return -1;
  }

  /** The way of the set starting at slot `base` holding the key, or -1. */
  private find(base: number, lo: number, mid: number, w2: number): number {
    const tags = this.tags;
    const end = base + this.ways;
    for (let i = base; i < end; i++) {
      const t = i * STRIDE;
      if (tags[t] === lo && tags[t + 1] === mid && tags[t + 2] === w2) return i;
    }
    return -1;
  }

  /** Output frame (pa >> 12) of slot i's first 4-KiB page. */
  oaFrameOf(i: number): number {
    return this.frames[i] as number;
  }

  /** Output frame of page `vpn` inside slot i's entry (the slot `lookup(.., vpn)` returned). */
  oaFrameFor(i: number, vpn: number): number {
    const code = ((this.tags[i * STRIDE + 1] as number) >>> CODE_SHIFT) & CODE_MASK;
    return (this.frames[i] as number) + ((vpn | 0) & ((1 << code) - 1));
  }

  /** SMMU_PERM_* bits of slot i. */
  permOf(i: number): number {
    return (this.tags[i * STRIDE + 3] as number) & PERM_MASK;
  }

  /** log2 of the entry's size in bytes (12..42). */
  sizeShiftOf(i: number): number {
    return (
      SMMU_TLB_MIN_SHIFT + (((this.tags[i * STRIDE + 1] as number) >>> CODE_SHIFT) & CODE_MASK)
    );
  }

  kindOf(i: number): SmmuTlbKind {
    return (((this.tags[i * STRIDE + 3] as number) >>> KIND_SHIFT) & 3) as SmmuTlbKind;
  }

  /** Whether slot i is a global entry (matches every ASID of its VMID). */
  isGlobal(i: number): boolean {
    return ((this.tags[i * STRIDE + 1] as number) & GLOBAL) !== 0;
  }

  /**
   * Cache a leaf translation of 2^sizeShift bytes at page `vpnBase` (aligned down to the size;
   * `oaFrame` is moved back by the same number of pages, so passing the requested page and its
   * output frame is fine). `global` (nG = 0 on a stage-1 leaf) makes the entry match every ASID of
   * the VMID; stage-2-only entries are never global and carry SMMU_ASID_IPA. `tgShift` (12, 14 or
   * 16) and `level` (-1..3) record the granule and the leaf's lookup level for the TG / TTL
   * filters of range invalidations; leave them out to have every TG / TTL select the entry.
   * An entry with the same key is replaced in place, otherwise the set's first free way or its
   * least recently used way is taken (an eviction). Dropped (but counted) when the capacity is 0.
   */
  insert(
    vmid: number,
    asid: number,
    vpnBase: number,
    sizeShift: number,
    global: boolean,
    kind: SmmuTlbKind,
    oaFrame: number,
    perm: number,
    tgShift = 0,
    level = -2,
  ): void {
    this.inserts++;
    if (
      !Number.isInteger(sizeShift) ||
      sizeShift < SMMU_TLB_MIN_SHIFT ||
      sizeShift > SMMU_TLB_MAX_SHIFT
    ) {
      bug(`SmmuTlb.insert: size shift ${sizeShift}`);
    }
    if (kind !== SMMU_TLB_S1 && kind !== SMMU_TLB_S2 && kind !== SMMU_TLB_NESTED) {
      bug(`SmmuTlb.insert: kind ${kind}`);
    }
    if (!Number.isInteger(vpnBase) || vpnBase < 0 || vpnBase >= 2 ** 52) {
      bug(`SmmuTlb.insert: page number ${vpnBase}`);
    }
    const tg = tgCodeOf(tgShift);
    if (tg < 0 || !Number.isInteger(level) || level < -2 || level > 3) {
      bug(`SmmuTlb.insert: granule shift ${tgShift} / level ${level}`);
    }
    if (this.ways === 0) return;
    const code = sizeShift - SMMU_TLB_MIN_SHIFT;
    const offset = (vpnBase | 0) & ((1 << code) - 1);
    const lo = (vpnBase | 0) & ~((1 << code) - 1);
    const hi = (vpnBase * INV_TWO32) & VPN_HI_MASK;
    const s2 = kind === SMMU_TLB_S2;
    const g = global && !s2;
    const mid =
      hi |
      (code << CODE_SHIFT) |
      VALID |
      ((vmid >>> 16) << EL2_SHIFT) |
      (g ? GLOBAL : 0) |
      (s2 ? IPA : 0);
    const w2 = (vmid << 16) | (g || s2 ? 0 : asid & 0xffff);
    const tags = this.tags;
    const set = code === 0 ? lo : (lo >>> code) | (hi << (32 - code));
    const base = (set & this.setMask) * this.ways;
    const end = base + this.ways;
    const stamps = this.stamps;
    let same = -1;
    let free = -1;
    // The oldest stamp without a branch per way; its (unique) slot is found after, if needed.
    let oldest = Number.POSITIVE_INFINITY;
    for (let i = base; i < end; i++) {
      const t = i * STRIDE;
      const m = tags[t + 1] as number;
      if (m === 0) {
        if (free < 0) free = i;
      } else if (m === mid && tags[t] === lo && tags[t + 2] === w2) {
        same = i;
        break;
      } else {
        oldest = Math.min(oldest, stamps[i] as number);
      }
    }
    let victim: number;
    if (same >= 0) {
      victim = same;
    } else {
      if (free >= 0) {
        victim = free;
        this.live++;
      } else {
        // A full set: every way is occupied and stamps are distinct.
        victim = base;
        while ((stamps[victim] as number) !== oldest) victim++;
        this.evictions++;
        this.uncount(tags[victim * STRIDE + 1] as number);
      }
      this.count(mid);
    }
    const t = victim * STRIDE;
    tags[t] = lo;
    tags[t + 1] = mid;
    tags[t + 2] = w2;
    tags[t + 3] =
      (perm & PERM_MASK) | (kind << KIND_SHIFT) | ((level + 2) << LEVEL_SHIFT) | (tg << TG_SHIFT);
    this.frames[victim] = oaFrame - offset;
    this.stamps[victim] = ++this.clock;
    if (code === 0 && !g) this.hint[hintHash(lo, mid, w2, this.hintBits)] = victim;
  }

  private count(mid: number): void {
    const code = (mid >>> CODE_SHIFT) & CODE_MASK;
    if ((mid & GLOBAL) !== 0) {
      if (this.globalCount[code]++ === 0) this.globalBits |= 1 << code;
    } else if (this.sizeCount[code]++ === 0) {
      this.sizeBits |= 1 << code;
    }
  }

  private uncount(mid: number): void {
    const code = (mid >>> CODE_SHIFT) & CODE_MASK;
    if ((mid & GLOBAL) !== 0) {
      if (--this.globalCount[code] === 0) this.globalBits &= ~(1 << code);
    } else if (--this.sizeCount[code] === 0) {
      this.sizeBits &= ~(1 << code);
    }
  }

  /** Entries held now. */
  size(): number {
    return this.live;
  }

  /** Drop every entry without counting invalidations (a reset). Counters are kept. */
  clear(): void {
    this.tags.fill(0);
    this.sizeCount.fill(0);
    this.globalCount.fill(0);
    this.sizeBits = 0;
    this.globalBits = 0;
    this.live = 0;
  }

  /** Zero the counters. */
  resetCounters(): void {
    this.hits = 0;
    this.misses = 0;
    this.inserts = 0;
    this.evictions = 0;
    this.invalidated = 0;
  }

  /**
   * CMD_TLBI_NSNH_ALL: every entry of every stage and VMID except the EL2 ones ("all Non-secure,
   * non-NS-EL2, non-NS-EL2-E2H TLB entries at all implemented stages").
   *
   * @spec SMMUv3 4.4.4.1
   */
  invalidateAll(): number {
    return this.sweep(false, -1, ALL_KINDS, ASID_ANY, 0, 0, -1, 0, 0);
  }

  /**
   * CMD_TLBI_S12_VMALL: every entry of `vmid`, all stages (stage 1, stage 2 and combined),
   * global or not.
   *
   * @spec SMMUv3 4.4.3.2
   */
  invalidateVmid(vmid: number): number {
    return this.sweep(false, vmid & 0xffff, ALL_KINDS, ASID_ANY, 0, 0, -1, 0, 0);
  }

  /**
   * CMD_TLBI_NH_ALL: every stage-1 entry of `vmid` including global ones; combined (nested)
   * entries hold stage-1 information, so they go too (16.2.1). Stage-2-only entries stay.
   *
   * @spec SMMUv3 4.4.2.1, 16.2.1
   */
  invalidateNhAll(vmid: number): number {
    return this.sweep(false, vmid & 0xffff, S1_KINDS, ASID_ANY, 0, 0, -1, 0, 0);
  }

  /**
   * CMD_TLBI_NH_ASID: the non-global stage-1 and nested entries of (vmid, asid). Global entries
   * stay (3.17.1: ASID scopes are not required to invalidate global mappings).
   *
   * @spec SMMUv3 4.4.2.2, 3.17.1
   */
  invalidateAsid(vmid: number, asid: number): number {
    return this.sweep(false, vmid & 0xffff, S1_KINDS, ASID_NON_GLOBAL, asid & 0xffff, 0, -1, 0, 0);
  }

  /**
   * CMD_TLBI_NH_VA: stage-1 and nested entries of `vmid` with ASID `asid`, or global, whose pages
   * overlap [vpn, vpn + pages). `pages` is 1 for a non-range command (an entry covering the
   * address goes, 4.4: low address bits are ignored as the entry's size requires), else
   * (NUM+1) * 2^SCALE granules. `leafOnly` does not matter to TLB entries (all are leaves);
   * `tgShift` (0 = TG 0b00, or 12/14/16) and `ttl` (0..3, ignored when TG = 0) keep entries of
   * another granule or leaf level, which the command is not required to remove.
   *
   * @spec SMMUv3 4.4.2.4, 4.4.1.1
   */
  invalidateVa(
    vmid: number,
    asid: number,
    vpn: number,
    pages: number,
    _leafOnly: boolean,
    ttl: number,
    tgShift: number,
  ): number {
    return this.sweep(
      false,
      vmid & 0xffff,
      S1_KINDS,
      ASID_OR_GLOBAL,
      asid & 0xffff,
      vpn,
      pages,
      ttl,
      tgShift,
    );
  }

  /**
   * CMD_TLBI_NH_VAA: stage-1 and nested entries of `vmid` of every ASID (and global) overlapping
   * [vpn, vpn + pages); TG / TTL as for `invalidateVa`.
   *
   * @spec SMMUv3 4.4.2.3, 4.4.1.1
   */
  invalidateVaa(
    vmid: number,
    vpn: number,
    pages: number,
    _leafOnly: boolean,
    ttl: number,
    tgShift: number,
  ): number {
    return this.sweep(false, vmid & 0xffff, S1_KINDS, ASID_ANY, 0, vpn, pages, ttl, tgShift);
  }

  /**
   * CMD_TLBI_S2_IPA: stage-2-only entries of `vmid` overlapping [ipn, ipn + pages) (IPA >> 12).
   * Combined stage 1 + 2 (nested) entries stay: the command "is not required to invalidate
   * structures containing combined stage 1 and stage 2 information"; software pairs it with
   * CMD_TLBI_NH_ALL or NH_VAA. TG / TTL as for `invalidateVa`.
   *
   * @spec SMMUv3 4.4.3.1, 16.2.1
   */
  invalidateS2Ipa(
    vmid: number,
    ipn: number,
    pages: number,
    _leafOnly: boolean,
    ttl: number,
    tgShift: number,
  ): number {
    return this.sweep(false, vmid & 0xffff, S2_KINDS, ASID_ANY, 0, ipn, pages, ttl, tgShift);
  }

  /**
   * CMD_TLBI_EL2_ALL: every EL2 / EL2-E2H entry (those inserted with SMMU_VMID_EL2). Without EL2
   * streams (SMMU_IDR0.Hyp = 0, or no STE with STRW = EL2) there are none and this returns 0.
   *
   * @spec SMMUv3 4.4.2.7
   */
  invalidateEl2All(): number {
    return this.sweep(true, -1, ALL_KINDS, ASID_ANY, 0, 0, -1, 0, 0);
  }

  /**
   * CMD_TLBI_EL2_ASID: non-global EL2-E2H entries of `asid`.
   *
   * @spec SMMUv3 4.4.2.10
   */
  invalidateEl2Asid(asid: number): number {
    return this.sweep(true, -1, ALL_KINDS, ASID_NON_GLOBAL, asid & 0xffff, 0, -1, 0, 0);
  }

  /**
   * CMD_TLBI_EL2_VA: EL2 entries of `asid` or global overlapping the range. With E2H = 0 the
   * entries are global (no ASIDs), so the ASID is in effect ignored, as the spec says.
   *
   * @spec SMMUv3 4.4.2.8
   */
  invalidateEl2Va(
    asid: number,
    vpn: number,
    pages: number,
    _leafOnly: boolean,
    ttl: number,
    tgShift: number,
  ): number {
    return this.sweep(true, -1, ALL_KINDS, ASID_OR_GLOBAL, asid & 0xffff, vpn, pages, ttl, tgShift);
  }

  /**
   * CMD_TLBI_EL2_VAA: EL2 entries of every ASID overlapping the range.
   *
   * @spec SMMUv3 4.4.2.9
   */
  invalidateEl2Vaa(
    vpn: number,
    pages: number,
    _leafOnly: boolean,
    ttl: number,
    tgShift: number,
  ): number {
    return this.sweep(true, -1, ALL_KINDS, ASID_ANY, 0, vpn, pages, ttl, tgShift);
  }

  /**
   * Remove the entries of the EL2 regime (`el2`) or not, of `vmid` (-1: any), whose kind is in
   * `kinds`, whose ASID matches per `asidMode`, that overlap [start, start + pages) (pages -1:
   * any address) and pass the TG / TTL filter.
   */
  private sweep(
    el2: boolean,
    vmid: number,
    kinds: number,
    asidMode: number,
    asid: number,
    start: number,
    pages: number,
    ttl: number,
    tgShift: number,
  ): number {
    const tg = tgCodeOf(tgShift);
    if (tg < 0) bug(`SmmuTlb: granule shift ${tgShift}`);
    // TTL is RES0 and unused when TG = 0 (4.4.1.1).
    const level = tg === 0 ? 0 : ttl;
    let n = 0;
    if (pages >= 0 && pages < this.sets && this.ways > 0) {
      // A small range touches only the sets its pages index at each size in use: an entry of
      // 2^code pages lives in set floor(base / 2^code) mod sets (see `insert`).
      let bits = this.sizeBits | this.globalBits;
      while (bits !== 0) {
        const low = bits & -bits;
        bits ^= low;
        const unit = POW2[31 - Math.clz32(low)] as number;
        const first = Math.floor(start / unit);
        const last = Math.floor((start + Math.max(pages, 1) - 1) / unit);
        if (last - first >= this.sets) {
          n += this.sweepSlots(
            0,
            this.capacity,
            el2,
            vmid,
            kinds,
            asidMode,
            asid,
            start,
            pages,
            tg,
            level,
          );
          break;
        }
        for (let key = first; key <= last; key++) {
          const base = (key % this.sets) * this.ways;
          n += this.sweepSlots(
            base,
            base + this.ways,
            el2,
            vmid,
            kinds,
            asidMode,
            asid,
            start,
            pages,
            tg,
            level,
          );
        }
      }
    } else {
      n = this.sweepSlots(
        0,
        this.capacity,
        el2,
        vmid,
        kinds,
        asidMode,
        asid,
        start,
        pages,
        tg,
        level,
      );
    }
    this.live -= n;
    this.invalidated += n;
    return n;
  }

  /** The `sweep` filter over slots [from, to); returns the number removed. */
  private sweepSlots(
    from: number,
    to: number,
    el2: boolean,
    vmid: number,
    kinds: number,
    asidMode: number,
    asid: number,
    start: number,
    pages: number,
    tg: number,
    level: number,
  ): number {
    const tags = this.tags;
    let n = 0;
    for (let i = from; i < to; i++) {
      const t = i * STRIDE;
      const m = tags[t + 1] as number;
      if (m === 0 || ((m & EL2) !== 0) !== el2) continue;
      const w2 = tags[t + 2] as number;
      if (vmid >= 0 && w2 >>> 16 !== vmid) continue;
      const d = tags[t + 3] as number;
      if ((kinds & (1 << ((d >>> KIND_SHIFT) & 3))) === 0) continue;
      if (asidMode !== ASID_ANY) {
        const g = (m & GLOBAL) !== 0;
        if (g ? asidMode === ASID_NON_GLOBAL : (w2 & 0xffff) !== asid) continue;
      }
      if (pages >= 0) {
        const first = (m & VPN_HI_MASK) * TWO32 + ((tags[t] as number) >>> 0);
        const span = POW2[(m >>> CODE_SHIFT) & CODE_MASK] as number;
        if (!(first < start + pages && start < first + span)) continue;
        const entryTg = (d >>> TG_SHIFT) & 3;
        if (tg !== 0 && entryTg !== 0 && entryTg !== tg) continue;
        const entryLevel = ((d >>> LEVEL_SHIFT) & 7) - 2;
        if (level !== 0 && entryLevel !== -2 && entryLevel !== level) continue;
      }
      tags[t + 1] = 0;
      this.uncount(m);
      n++;
    }
    return n;
  }

  /** Call `cb` for each entry, in slot order (allocates; for the oracle and tests). */
  forEach(cb: (entry: SmmuTlbEntry) => void): void {
    this.forEachIn(0, this.capacity, cb);
  }

  /** `forEach` over slots [from, to). */
  private forEachIn(from: number, to: number, cb: (entry: SmmuTlbEntry) => void): void {
    const tags = this.tags;
    for (let i = from; i < to; i++) {
      const t = i * STRIDE;
      const m = tags[t + 1] as number;
      if (m === 0) continue;
      const w2 = tags[t + 2] as number;
      const d = tags[t + 3] as number;
      const tg = (d >>> TG_SHIFT) & 3;
      cb({
        index: i,
        vmid: (m & EL2) !== 0 ? SMMU_VMID_EL2 : w2 >>> 16,
        asid: (m & IPA) !== 0 ? SMMU_ASID_IPA : w2 & 0xffff,
        vpn: (m & VPN_HI_MASK) * TWO32 + ((tags[t] as number) >>> 0),
        sizeShift: this.sizeShiftOf(i),
        global: (m & GLOBAL) !== 0,
        kind: this.kindOf(i),
        oaFrame: this.frames[i] as number,
        perm: d & PERM_MASK,
        tgShift: tg === 0 ? 0 : 10 + 2 * tg,
        level: ((d >>> LEVEL_SHIFT) & 7) - 2,
        stamp: this.stamps[i] as number,
      });
    }
  }

  /** The entry in slot `i` as plain data, or null for a free slot (allocates). */
  entryAt(i: number): SmmuTlbEntry | null {
    if (!Number.isInteger(i) || i < 0 || i >= this.capacity) return null;
    const out: SmmuTlbEntry[] = [];
    this.forEachIn(i, i + 1, (e) => {
      out.push(e);
    });
    return out[0] ?? null;
  }

  /** Every entry, in slot order (allocates). */
  entries(): SmmuTlbEntry[] {
    const out: SmmuTlbEntry[] = [];
    this.forEach((e) => {
      out.push(e);
    });
    return out;
  }
}
