// The SMMUv3 configuration caches: decoded STEs by StreamID and decoded CDs by (StreamID, SubstreamID).

import { bug, SlotLru } from "@iommu-sim/iommu-core/platform";

/** Hit / miss / insert / eviction / invalidation counts of one cache. */
export interface SmmuCacheCounters {
  hits: number;
  misses: number;
  inserts: number;
  evictions: number;
  invalidated: number;
}

/**
 * A fully associative, true-LRU table of `capacity` values under a key of two int32 words: the
 * payload (values, use stamps, counters) over the shared SlotLru (hash index, linked recency list,
 * free slots), so lookup, touch, insert and removal are O(1) and nothing allocates.
 */
class KeyedLru<T> {
  readonly capacity: number;
  readonly counters: SmmuCacheCounters = {
    hits: 0,
    misses: 0,
    inserts: 0,
    evictions: 0,
    invalidated: 0,
  };
  private readonly k1: Int32Array;
  private readonly k2: Int32Array;
  private readonly values: (T | undefined)[];
  /** The value of `clock` when each slot was last used (all distinct; orders `forEach`). */
  private readonly stamps: Float64Array;
  private clock = 0;
  private readonly slots: SlotLru;

  constructor(capacity: number, what: string) {
    if (!Number.isInteger(capacity) || capacity < 0 || capacity > 1 << 24) {
      bug(`SmmuConfigCache: ${what} capacity ${capacity}`);
    }
    this.capacity = capacity;
    this.k1 = new Int32Array(capacity);
    this.k2 = new Int32Array(capacity);
    this.values = new Array<T | undefined>(capacity).fill(undefined);
    this.stamps = new Float64Array(capacity);
    this.slots = new SlotLru(capacity, 2);
  }

  /** The slot holding (a, b), or -1; does not count or touch. */
  find(a: number, b: number): number {
    return this.slots.find(a, b);
  }

  /** The value for (a, b) or undefined, without counting or touching (the oracle's look). */
  peek(a: number, b: number): T | undefined {
    const s = this.slots.find(a, b);
    return s < 0 ? undefined : this.values[s];
  }

  /** The value for (a, b) or undefined; counts, and a hit becomes most recent. */
  lookup(a: number, b: number): T | undefined {
    // The most recent entry first: a stream's consecutive requests find it without hashing.
    const h = this.slots.mru;
    if (h >= 0 && this.k1[h] === a && this.k2[h] === b) {
      this.counters.hits++;
      return this.values[h];
    }
    return this.lookupHashed(a, b);
  }

  /** `lookup` past the most recent entry. */
  private lookupHashed(a: number, b: number): T | undefined {
    const s = this.slots.find(a, b);
    if (s < 0) {
      this.counters.misses++;
      return undefined;
    }
    this.counters.hits++;
    this.touch(s);
    return this.values[s];
  }

  /** Cache `value` for (a, b); returns the value that left (replaced or evicted), or undefined. */
  insert(a: number, b: number, value: T): T | undefined {
    this.counters.inserts++;
    if (this.capacity === 0) return undefined;
    let s = this.slots.find(a, b);
    let out: T | undefined;
    if (s >= 0) {
      out = this.values[s];
      this.touch(s);
    } else {
      if (this.slots.size() === this.capacity) {
        const victim = this.slots.lru;
        out = this.values[victim];
        this.drop(victim);
        this.counters.evictions++;
      }
      s = this.slots.insert(a, b);
      this.k1[s] = a;
      this.k2[s] = b;
      this.stamps[s] = ++this.clock;
    }
    this.values[s] = value;
    return out;
  }

  /** Remove the entry for (a, b) if present; returns 1 or 0. Counts an invalidation. */
  remove(a: number, b: number): number {
    const s = this.slots.find(a, b);
    if (s < 0) return 0;
    this.drop(s);
    this.counters.invalidated++;
    return 1;
  }

  /**
   * Remove every entry whose first key, as unsigned, is in [lo, hi] and whose second key is `b`
   * (any when `anyB`). Counts invalidations; returns the number removed.
   */
  removeWhere(lo: number, hi: number, b: number, anyB: boolean): number {
    let n = 0;
    for (let s = 0; s < this.capacity; s++) {
      if (!this.slots.used(s)) continue;
      const a = (this.k1[s] as number) >>> 0;
      if (a < lo || a > hi || (!anyB && this.k2[s] !== b)) continue;
      this.drop(s);
      n++;
    }
    this.counters.invalidated += n;
    return n;
  }

  /** Drop everything without counting (a reset). */
  clear(): void {
    this.values.fill(undefined);
    this.slots.clear();
  }

  size(): number {
    return this.slots.size();
  }

  /** Call `cb` for each entry, most recently used first (allocates; for the oracle and tests). */
  forEach(cb: (a: number, b: number, value: T) => void): void {
    const slots: number[] = [];
    for (let s = 0; s < this.capacity; s++) if (this.slots.used(s)) slots.push(s);
    slots.sort((x, y) => (this.stamps[y] as number) - (this.stamps[x] as number));
    for (const s of slots) {
      cb((this.k1[s] as number) >>> 0, this.k2[s] as number, this.values[s] as T);
    }
  }

  private drop(s: number): void {
    this.slots.remove(s);
    this.values[s] = undefined;
  }

  /** Make slot `s` the most recently used. */
  private touch(s: number): void {
    this.stamps[s] = ++this.clock;
    this.slots.touch(s);
  }
}

/** The largest StreamID (32 bits). */
const SID_MAX = 0xffff_ffff;

/**
 * The configuration caches of one SMMU: `S` is the unit's decoded STE object, `C` its decoded CD
 * object (the caches never look inside them). Each is fully associative with true LRU and its own
 * capacity (0 allowed: nothing is kept). CDs are indexed by the StreamID through which they were
 * fetched and their SubstreamID (the CD-table index), not by address, as 4.3.3 permits: a CD shared
 * by several STEs is cached once per StreamID, and software must invalidate it through each.
 *
 * Intermediate descriptors (L1STD, L1CD) are not cached separately: every STE or CD fetch walks the
 * level-1 tables again, so the Leaf parameter of CMD_CFGI_STE / CMD_CFGI_CD changes nothing here.
 * VMS structures are not modelled.
 *
 * The invalidation rule across the two caches (4.3.1, 4.3.2, 16.2.2): an STE invalidation also
 * invalidates every CD cached through that StreamID ("This command invalidates all Context
 * Descriptors (including L1CD) that were cached using the given StreamID"). A CD invalidation
 * leaves the STE. None of these commands touches the TLB (4.3.1 note).
 *
 * @spec SMMUv3 4.3 (configuration structure invalidation), 16.2 (STE and CD caches)
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_sync_ste_for_sid
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_sync_cd
 */
export class SmmuConfigCache<S, C> {
  private readonly ste: KeyedLru<S>;
  private readonly cd: KeyedLru<C>;

  constructor(steEntries: number, cdEntries: number) {
    this.ste = new KeyedLru<S>(steEntries, "STE");
    this.cd = new KeyedLru<C>(cdEntries, "CD");
  }

  get steCapacity(): number {
    return this.ste.capacity;
  }

  get cdCapacity(): number {
    return this.cd.capacity;
  }

  /** Counters of the STE cache alone. */
  get steCounters(): Readonly<SmmuCacheCounters> {
    return this.ste.counters;
  }

  /** Counters of the CD cache alone. */
  get cdCounters(): Readonly<SmmuCacheCounters> {
    return this.cd.counters;
  }

  get hits(): number {
    return this.ste.counters.hits + this.cd.counters.hits;
  }

  get misses(): number {
    return this.ste.counters.misses + this.cd.counters.misses;
  }

  get inserts(): number {
    return this.ste.counters.inserts + this.cd.counters.inserts;
  }

  get evictions(): number {
    return this.ste.counters.evictions + this.cd.counters.evictions;
  }

  get invalidated(): number {
    return this.ste.counters.invalidated + this.cd.counters.invalidated;
  }

  /** The decoded STE cached for `sid`, or undefined (a miss). A hit becomes most recent. */
  lookupSte(sid: number): S | undefined {
    return this.ste.lookup(sid | 0, 0);
  }

  /** The decoded STE cached for `sid`, or undefined; counts nothing and leaves the LRU order. */
  peekSte(sid: number): S | undefined {
    return this.ste.peek(sid | 0, 0);
  }

  /** The decoded CD cached for (sid, ssid), or undefined; counts nothing, touches nothing. */
  peekCd(sid: number, ssid: number): C | undefined {
    return this.cd.peek(sid | 0, ssid | 0);
  }

  /** Cache `cfg` for `sid`. Returns the object that left the cache (replaced or evicted). */
  insertSte(sid: number, cfg: S): S | undefined {
    return this.ste.insert(sid | 0, 0, cfg);
  }

  /** The decoded CD cached for (sid, ssid), or undefined. */
  lookupCd(sid: number, ssid: number): C | undefined {
    return this.cd.lookup(sid | 0, ssid | 0);
  }

  /** Cache `cfg` for (sid, ssid). Returns the object that left the cache, or undefined. */
  insertCd(sid: number, ssid: number, cfg: C): C | undefined {
    return this.cd.insert(sid | 0, ssid | 0, cfg);
  }

  /**
   * CMD_CFGI_STE: the STE of `sid` and every CD cached through `sid`. `leaf` only concerns L1STD
   * caching, which is not modelled. Returns the number of entries removed (STE + CDs).
   *
   * @spec SMMUv3 4.3.1
   */
  cfgiSte(sid: number, _leaf: boolean): number {
    const s = sid >>> 0;
    return this.ste.remove(sid | 0, 0) + this.cd.removeWhere(s, s, 0, true);
  }

  /**
   * CMD_CFGI_STE_RANGE: the STEs and CDs of the 2^(range+1) StreamIDs aligned around `sid` (its
   * low range+1 bits are ignored). `range` is the 5-bit field: 31 covers every StreamID, which is
   * CMD_CFGI_ALL.
   *
   * @spec SMMUv3 4.3.2, 4.3.6
   */
  cfgiSteRange(sid: number, range: number): number {
    if (!Number.isInteger(range) || range < 0 || range > 31) {
      bug(`SmmuConfigCache.cfgiSteRange: range ${range}`);
    }
    const span = 2 ** (range + 1);
    const lo = Math.floor((sid >>> 0) / span) * span;
    const hi = Math.min(lo + span - 1, SID_MAX);
    return this.ste.removeWhere(lo, hi, 0, true) + this.cd.removeWhere(lo, hi, 0, true);
  }

  /**
   * CMD_CFGI_CD: the CD fetched from index `ssid` of the CD table located through `sid` (index 0
   * for an STE with a single CD). The STE stays. `leaf` only concerns L1CD caching (not
   * modelled).
   *
   * @spec SMMUv3 4.3.3
   */
  cfgiCd(sid: number, ssid: number, _leaf: boolean): number {
    return this.cd.remove(sid | 0, ssid | 0);
  }

  /**
   * CMD_CFGI_CD_ALL: every CD cached through `sid`. The STE stays.
   *
   * @spec SMMUv3 4.3.4
   */
  cfgiCdAll(sid: number): number {
    const s = sid >>> 0;
    return this.cd.removeWhere(s, s, 0, true);
  }

  /**
   * CMD_CFGI_ALL (CFGI_STE_RANGE with Range = 31): every STE and CD.
   *
   * @spec SMMUv3 4.3.6
   */
  cfgiAll(): number {
    return this.cfgiSteRange(0, 31);
  }

  /** STE and CD entries held now. */
  size(): number {
    return this.ste.size() + this.cd.size();
  }

  steSize(): number {
    return this.ste.size();
  }

  cdSize(): number {
    return this.cd.size();
  }

  /** Drop everything without counting invalidations (a reset). Counters are kept. */
  clear(): void {
    this.ste.clear();
    this.cd.clear();
  }

  /** Zero the counters of both caches. */
  resetCounters(): void {
    for (const c of [this.ste.counters, this.cd.counters]) {
      c.hits = 0;
      c.misses = 0;
      c.inserts = 0;
      c.evictions = 0;
      c.invalidated = 0;
    }
  }

  /** The cached STEs and CDs, most recent first (allocates; for the oracle and tests). */
  entries(): {
    ste: { sid: number; cfg: S }[];
    cd: { sid: number; ssid: number; cfg: C }[];
  } {
    const ste: { sid: number; cfg: S }[] = [];
    const cd: { sid: number; ssid: number; cfg: C }[] = [];
    this.ste.forEach((sid, _b, cfg) => {
      ste.push({ sid, cfg });
    });
    this.cd.forEach((sid, ssid, cfg) => {
      cd.push({ sid, ssid: ssid >>> 0, cfg });
    });
    return { ste, cd };
  }
}
