// The SMMUv3 walk cache: cached table descriptors of both stages, so a walk after a TLB miss can
// start below the root.

import { bug, SlotLru } from "@iommu-sim/iommu-core/platform";

/** One walk-cache entry as plain data (tests and the oracle). */
export interface SmmuWalkCacheEntry {
  index: number;
  /** 16-bit VMID, or SMMU_VMID_EL2 (0x10000). */
  vmid: number;
  /** ASID of a stage-1 entry; 0 for stage 2. */
  asid: number;
  stage: 1 | 2;
  /** Lookup level of the cached table descriptor (-1..2). */
  level: number;
  /** Translation granule shift: 12, 14 or 16. */
  tgShift: number;
  /** Input page-number bits above the descriptor's reach: floor(vpn / 2^(reachShift - 12)). */
  tag: number;
  /** Physical address of the next-level table the descriptor points to. */
  tablePa: number;
  /** Table attributes accumulated down to this descriptor (APTable, XNTable, PXNTable...). */
  attrs: number;
  stamp: number;
}

/** Same value as SMMU_VMID_EL2 in smmu-tlb.ts (not imported: smmu-tlb re-exports this file). */
const VMID_EL2 = 0x1_0000;
const MIN_LEVEL = -1;
const MAX_LEVEL = 2;
/** 2^-i for i in [0, 64] (multiplying by it is exact). */
const INV2 = new Float64Array(65);
for (let i = 0; i <= 64; i++) INV2[i] = 2 ** -i;

/** The key's second word: ASID, stage, level and granule shift packed together. */
function keyWord(asid: number, stage: number, level: number, tgShift: number): number {
  return asid | (stage << 16) | ((level + 1) << 18) | (tgShift << 21);
}

/**
 * log2 of the input bytes one descriptor at `level` reaches with granule 2^tgShift: the granule
 * plus (tgShift - 3) bits per level below it (4K: L0 39, L1 30, L2 21; 16K: L0 47, L1 36, L2 25;
 * 64K: L1 42, L2 29; 4K level -1 with 52-bit addresses: 48).
 *
 * @spec Arm ARM D8.2 (translation granules and levels), as used by SMMUv3 CD.TGx / STE.S2TG
 */
export function smmuReachShift(tgShift: number, level: number): number {
  return tgShift + (3 - level) * (tgShift - 3);
}

/**
 * The walk caches of one SMMU, both stages together in one fully associative, true-LRU array of
 * `capacity` entries. An entry caches the table descriptor at `level` on the path to page `vpn`:
 * it is tagged by (VMID, ASID, stage, level, granule, vpn above the descriptor's reach) and holds
 * the next table's address plus the table attributes accumulated from the root down to it.
 * Stage-2 entries are tagged by VMID only (ASID 0). A stage-1 entry of a nested configuration
 * is stage-1 information whatever next-table address the unit stores in it (the IPA, translated
 * through stage 2 again on use, or a PA, which makes it a combined entry as in 16.2.1): either way
 * CMD_TLBI_S2_IPA is not required to remove it and leaves it.
 *
 * Stage-1 entries are tagged with the ASID (table descriptors have no nG bit): commands by ASID
 * remove them, and a VA command removes those of its ASID only, not those of other ASIDs (the
 * "global" part of TLBI_NH_VA concerns leaf entries). A walk cache "is invalidated under the same
 * conditions as PE translation walk caches" (16.2): a command with Leaf = 1 leaves it alone
 * ("only cached entries for the last level ... are required to be invalidated"); with Leaf = 0 it
 * removes the table descriptors that reach into the range, and with TG != 0 and TTL != 0 only
 * those at levels above TTL (4.4.1.1 note: TTL = 2, Leaf = 0 removes level 0 and 1 table entries,
 * not level 2 ones). With TG != 0 entries of another granule stay. Maximal policy throughout.
 *
 * The shared SlotLru (hash index over the full key, linked recency list) makes lookup and insert
 * O(1): a lookup probes at most one key per level. The victim is the lowest free slot, else the
 * least recently used entry. Invalidations scan.
 *
 * @spec SMMUv3 16.2 (walk caches), 4.4.1.1, 4.4.2, 4.4.3, 4.4.4
 */
export class SmmuWalkCache {
  readonly capacity: number;
  hits = 0;
  misses = 0;
  inserts = 0;
  evictions = 0;
  invalidated = 0;

  /** VMID tag, -1 = free slot. */
  private readonly vmids: Int32Array;
  private readonly asids: Int32Array;
  private readonly stages: Uint8Array;
  private readonly levels: Int8Array;
  private readonly tgs: Uint8Array;
  private readonly tags: Float64Array;
  private readonly tables: Float64Array;
  private readonly attrs: Int32Array;
  private readonly stamps: Float64Array;
  /** Key index, recency order and free slots; the key is (VMID, keyWord, tag lo, tag hi). */
  private readonly slots: SlotLru;
  private clock = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) bug(`SmmuWalkCache: capacity ${capacity}`);
    this.capacity = capacity;
    this.vmids = new Int32Array(capacity).fill(-1);
    this.asids = new Int32Array(capacity);
    this.stages = new Uint8Array(capacity);
    this.levels = new Int8Array(capacity);
    this.tgs = new Uint8Array(capacity);
    this.tags = new Float64Array(capacity);
    this.tables = new Float64Array(capacity);
    this.attrs = new Int32Array(capacity);
    this.stamps = new Float64Array(capacity);
    this.slots = new SlotLru(capacity, 4);
  }

  /** The slot holding the key, or -1. */
  private find(vmid: number, k: number, tag: number): number {
    return this.slots.find(vmid, k, tag | 0, (tag * (INV2[32] as number)) | 0);
  }

  /** Free slot s (it must be occupied). */
  private drop(s: number): void {
    this.slots.remove(s);
    this.vmids[s] = -1;
  }

  /**
   * The deepest (highest-level) cached table descriptor on the path to page `vpn` (input address
   * >> 12) for (vmid, asid, stage) with granule 2^tgShift, or -1. The walk resumes at level
   * `levelOf(i) + 1` in the table at `tablePaOf(i)` with `attrsOf(i)` accumulated so far. The
   * ASID is ignored for stage 2.
   */
  lookupDeepest(vmid: number, asid: number, stage: 1 | 2, tgShift: number, vpn: number): number {
    const a = stage === 2 ? 0 : asid;
    // Entries hold 16-bit ASIDs: a wider one matches nothing (and must not alias the stage bits).
    if (this.slots.size() > 0 && (a & 0xffff) === a) {
      for (let level = MAX_LEVEL; level >= MIN_LEVEL; level--) {
        const tag = Math.floor(vpn * (INV2[smmuReachShift(tgShift, level) - 12] as number));
        const s = this.find(vmid, keyWord(a, stage, level, tgShift), tag);
        if (s >= 0) {
          this.hits++;
          this.slots.touch(s);
          this.stamps[s] = ++this.clock;
          return s;
        }
      }
    }
    this.misses++;
    return -1;
  }

  levelOf(i: number): number {
    return this.levels[i] as number;
  }

  tablePaOf(i: number): number {
    return this.tables[i] as number;
  }

  attrsOf(i: number): number {
    return this.attrs[i] as number;
  }

  /**
   * Cache the table descriptor at `level` (-1..2) on the path to `vpn`, pointing at the table at
   * `tablePa`, with table attributes `attrs` accumulated down to it. Replaces an entry with the
   * same key, else takes a free slot or the least recently used one.
   */
  insert(
    vmid: number,
    asid: number,
    stage: 1 | 2,
    level: number,
    tgShift: number,
    vpn: number,
    tablePa: number,
    attrs: number,
  ): void {
    this.inserts++;
    if (!Number.isInteger(level) || level < MIN_LEVEL || level > MAX_LEVEL) {
      bug(`SmmuWalkCache.insert: level ${level}`);
    }
    if (tgShift !== 12 && tgShift !== 14 && tgShift !== 16) {
      bug(`SmmuWalkCache.insert: granule shift ${tgShift}`);
    }
    if (stage !== 1 && stage !== 2) bug(`SmmuWalkCache.insert: stage ${stage}`);
    if (this.capacity === 0) return;
    const a = stage === 2 ? 0 : asid & 0xffff;
    const tag = Math.floor(vpn * (INV2[smmuReachShift(tgShift, level) - 12] as number));
    const k = keyWord(a, stage, level, tgShift);
    let slot = this.find(vmid, k, tag);
    if (slot >= 0) {
      this.slots.touch(slot);
      this.stamps[slot] = ++this.clock;
    } else {
      if (this.slots.size() === this.capacity) {
        this.drop(this.slots.lru);
        this.evictions++;
      }
      slot = this.slots.insert(vmid, k, tag | 0, (tag * (INV2[32] as number)) | 0);
      this.vmids[slot] = vmid;
      this.asids[slot] = a;
      this.stages[slot] = stage;
      this.levels[slot] = level;
      this.tgs[slot] = tgShift;
      this.tags[slot] = tag;
      this.stamps[slot] = ++this.clock;
    }
    this.tables[slot] = tablePa;
    this.attrs[slot] = attrs;
  }

  size(): number {
    return this.slots.size();
  }

  /** CMD_TLBI_NSNH_ALL: every non-EL2 entry. @spec SMMUv3 4.4.4.1 */
  invalidateAll(): number {
    return this.sweep(false, -1, 3, -1, 0, -1, 0, 0);
  }

  /** CMD_TLBI_S12_VMALL: every entry of `vmid`, both stages. @spec SMMUv3 4.4.3.2 */
  invalidateVmid(vmid: number): number {
    return this.sweep(false, vmid & 0xffff, 3, -1, 0, -1, 0, 0);
  }

  /** CMD_TLBI_NH_ALL: the stage-1 entries of `vmid`. @spec SMMUv3 4.4.2.1 */
  invalidateNhAll(vmid: number): number {
    return this.sweep(false, vmid & 0xffff, 1, -1, 0, -1, 0, 0);
  }

  /** CMD_TLBI_NH_ASID: the stage-1 entries of (vmid, asid). @spec SMMUv3 4.4.2.2 */
  invalidateAsid(vmid: number, asid: number): number {
    return this.sweep(false, vmid & 0xffff, 1, asid & 0xffff, 0, -1, 0, 0);
  }

  /**
   * CMD_TLBI_NH_VA: with Leaf = 1 nothing; else the stage-1 entries of (vmid, asid) reaching into
   * [vpn, vpn + pages), filtered by TG / TTL as the class comment says.
   *
   * @spec SMMUv3 4.4.2.4, 4.4.1.1
   */
  invalidateVa(
    vmid: number,
    asid: number,
    vpn: number,
    pages: number,
    leafOnly: boolean,
    ttl: number,
    tgShift: number,
  ): number {
    if (leafOnly) return 0;
    return this.sweep(false, vmid & 0xffff, 1, asid & 0xffff, vpn, pages, ttl, tgShift);
  }

  /** CMD_TLBI_NH_VAA: as `invalidateVa` for every ASID of `vmid`. @spec SMMUv3 4.4.2.3 */
  invalidateVaa(
    vmid: number,
    vpn: number,
    pages: number,
    leafOnly: boolean,
    ttl: number,
    tgShift: number,
  ): number {
    if (leafOnly) return 0;
    return this.sweep(false, vmid & 0xffff, 1, -1, vpn, pages, ttl, tgShift);
  }

  /**
   * CMD_TLBI_S2_IPA: with Leaf = 1 nothing; else the stage-2 entries of `vmid` reaching into
   * [ipn, ipn + pages). Stage-1 entries of nested configurations stay (combined information).
   *
   * @spec SMMUv3 4.4.3.1
   */
  invalidateS2Ipa(
    vmid: number,
    ipn: number,
    pages: number,
    leafOnly: boolean,
    ttl: number,
    tgShift: number,
  ): number {
    if (leafOnly) return 0;
    return this.sweep(false, vmid & 0xffff, 2, -1, ipn, pages, ttl, tgShift);
  }

  /** CMD_TLBI_EL2_ALL: every EL2 entry. @spec SMMUv3 4.4.2.7 */
  invalidateEl2All(): number {
    return this.sweep(true, -1, 3, -1, 0, -1, 0, 0);
  }

  /** CMD_TLBI_EL2_ASID: the EL2 entries of `asid`. @spec SMMUv3 4.4.2.10 */
  invalidateEl2Asid(asid: number): number {
    return this.sweep(true, -1, 3, asid & 0xffff, 0, -1, 0, 0);
  }

  /** CMD_TLBI_EL2_VA (Leaf = 0): EL2 entries of `asid` reaching into the range. @spec 4.4.2.8 */
  invalidateEl2Va(
    asid: number,
    vpn: number,
    pages: number,
    leafOnly: boolean,
    ttl: number,
    tgShift: number,
  ): number {
    if (leafOnly) return 0;
    return this.sweep(true, -1, 3, asid & 0xffff, vpn, pages, ttl, tgShift);
  }

  /** CMD_TLBI_EL2_VAA (Leaf = 0): EL2 entries reaching into the range. @spec SMMUv3 4.4.2.9 */
  invalidateEl2Vaa(
    vpn: number,
    pages: number,
    leafOnly: boolean,
    ttl: number,
    tgShift: number,
  ): number {
    if (leafOnly) return 0;
    return this.sweep(true, -1, 3, -1, vpn, pages, ttl, tgShift);
  }

  /**
   * Remove entries of the EL2 regime (`el2`) or not, of `vmid` (-1 any), whose stage is in
   * `stages` (bit 0 stage 1, bit 1 stage 2), of `asid` (-1 any), reaching into [start, start +
   * pages) (pages -1: any address), and passing the TG / TTL filter.
   */
  private sweep(
    el2: boolean,
    vmid: number,
    stages: number,
    asid: number,
    start: number,
    pages: number,
    ttl: number,
    tgShift: number,
  ): number {
    if (tgShift !== 0 && tgShift !== 12 && tgShift !== 14 && tgShift !== 16) {
      bug(`SmmuWalkCache: granule shift ${tgShift}`);
    }
    const ttlLevel = tgShift === 0 ? 0 : ttl;
    let n = 0;
    for (let i = 0; i < this.capacity; i++) {
      const v = this.vmids[i] as number;
      if (v < 0 || (v === VMID_EL2) !== el2 || (vmid >= 0 && v !== vmid)) continue;
      if ((stages & (this.stages[i] as number)) === 0) continue;
      if (asid >= 0 && this.asids[i] !== asid) continue;
      if (pages >= 0) {
        const tg = this.tgs[i] as number;
        const level = this.levels[i] as number;
        if (tgShift !== 0 && tg !== tgShift) continue;
        if (ttlLevel !== 0 && level >= ttlLevel) continue;
        const reach = 2 ** (smmuReachShift(tg, level) - 12);
        const first = (this.tags[i] as number) * reach;
        if (!(first < start + pages && start < first + reach)) continue;
      }
      this.drop(i);
      n++;
    }
    this.invalidated += n;
    return n;
  }

  /** Drop everything without counting invalidations (a reset). Counters are kept. */
  clear(): void {
    this.vmids.fill(-1);
    this.slots.clear();
  }

  /** Zero the counters. */
  resetCounters(): void {
    this.hits = 0;
    this.misses = 0;
    this.inserts = 0;
    this.evictions = 0;
    this.invalidated = 0;
  }

  /** Call `cb` for each entry, in slot order (allocates; for the oracle and tests). */
  forEach(cb: (entry: SmmuWalkCacheEntry) => void): void {
    for (let i = 0; i < this.capacity; i++) {
      const vmid = this.vmids[i] as number;
      if (vmid < 0) continue;
      cb({
        index: i,
        vmid,
        asid: this.asids[i] as number,
        stage: this.stages[i] as 1 | 2,
        level: this.levels[i] as number,
        tgShift: this.tgs[i] as number,
        tag: this.tags[i] as number,
        tablePa: this.tables[i] as number,
        attrs: this.attrs[i] as number,
        stamp: this.stamps[i] as number,
      });
    }
  }

  /**
   * The entries on the path to page `vpn` for (vmid, asid, stage), of any granule, deepest
   * level first: those a walk of that page could resume from. The ASID is ignored for stage 2.
   * Counts nothing and touches nothing (allocates; for the oracle).
   */
  onPath(vmid: number, asid: number, stage: 1 | 2, vpn: number): SmmuWalkCacheEntry[] {
    const a = stage === 2 ? 0 : asid;
    const out: SmmuWalkCacheEntry[] = [];
    this.forEach((e) => {
      if (e.vmid !== vmid || e.stage !== stage || e.asid !== a) return;
      const tag = Math.floor(vpn * (INV2[smmuReachShift(e.tgShift, e.level) - 12] as number));
      if (tag === e.tag) out.push(e);
    });
    return out.sort((x, y) => y.level - x.level);
  }

  entries(): SmmuWalkCacheEntry[] {
    const out: SmmuWalkCacheEntry[] = [];
    this.forEach((e) => {
      out.push(e);
    });
    return out;
  }
}
