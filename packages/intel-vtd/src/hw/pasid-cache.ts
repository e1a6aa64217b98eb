// The VT-d PASID cache: decoded scalable-mode PASID-table entries by (source-id, PASID), true LRU.

import { bug } from "@iommu-sim/iommu-core/platform";

/** One PASID-cache entry as plain data (tests and the oracle). */
export interface VtdPasidCacheEntry<T> {
  slot: number;
  sid: number;
  pasid: number;
  did: number;
  value: T;
  stamp: number;
}

/**
 * The PASID cache. The PASID table hangs off the context entry, so entries are keyed by
 * (source-id, PASID); each carries the DID of its PASID entry, which the type-7 descriptor
 * selects by, and a value the unit provides (its decoded PASID-entry config object; the cache
 * keeps the reference). `insert` returns the value that left the cache and the invalidations
 * hand removed values to an optional callback, so the unit can recycle config objects.
 *
 * Lookup hashes the key into a bucket chain (no allocation, O(1)); replacement is true LRU over
 * the whole cache.
 *
 * Context-cache invalidations do not touch this cache: the spec (6.5.2.1, as quoted in QEMU
 * review threads) makes software follow a context-cache invalidation with a PASID-cache one, and
 * Linux does (iommu_set_root_entry, device_pasid_table_setup). `invalidateDevice` exists for a
 * unit that wants the lenient behaviour QEMU adopted "for guests not following the spec"; the
 * maximal model should not call it.
 *
 * @spec VT-d 6.2.3 (PASID cache), 6.5.2.2 (PASID-cache invalidate)
 * @kernel drivers/iommu/intel/pasid.c pasid_cache_invalidation_with_pasid
 */
export class VtdPasidCache<T> {
  readonly capacity: number;
  hits = 0;
  misses = 0;
  inserts = 0;
  evictions = 0;
  invalidated = 0;

  /** -1 = free slot. */
  private readonly sids: Int32Array;
  private readonly pasids: Int32Array;
  private readonly dids: Int32Array;
  private readonly values: (T | null)[];
  private readonly stamps: Float64Array;
  /** Bucket heads (slot + 1, 0 = empty) and the per-slot chain (slot + 1). */
  private readonly heads: Int32Array;
  private readonly next: Int32Array;
  private readonly bucketBits: number;
  private clock = 0;
  private live = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) bug(`VtdPasidCache: capacity ${capacity}`);
    this.capacity = capacity;
    this.sids = new Int32Array(capacity).fill(-1);
    this.pasids = new Int32Array(capacity);
    this.dids = new Int32Array(capacity);
    this.values = new Array<T | null>(capacity).fill(null);
    this.stamps = new Float64Array(capacity);
    this.bucketBits = Math.max(1, 32 - Math.clz32(Math.max(1, capacity * 2) - 1));
    this.heads = new Int32Array(1 << this.bucketBits);
    this.next = new Int32Array(capacity);
  }

  private bucket(sid: number, pasid: number): number {
    return Math.imul((sid << 20) ^ pasid ^ (sid >>> 12), 0x9e3779b1) >>> (32 - this.bucketBits);
  }

  private find(sid: number, pasid: number): number {
    let s = (this.heads[this.bucket(sid, pasid)] as number) - 1;
    while (s >= 0) {
      if (this.sids[s] === sid && this.pasids[s] === pasid) return s;
      s = (this.next[s] as number) - 1;
    }
    return -1;
  }

  /** The value cached for (sid, pasid), or null (a miss). A hit makes the entry most recent. */
  lookup(sid: number, pasid: number): T | null {
    const s = this.find(sid, pasid);
    if (s < 0) {
      this.misses++;
      return null;
    }
    this.hits++;
    this.stamps[s] = ++this.clock;
    return this.values[s] as T;
  }

  /** The DID of the entry for (sid, pasid) without counting or touching it, or -1. */
  didOf(sid: number, pasid: number): number {
    const s = this.find(sid, pasid);
    return s < 0 ? -1 : (this.dids[s] as number);
  }

  /**
   * Cache `value` for (sid, pasid) with the PASID entry's DID. Returns the value that left the
   * cache (the old one for this key, or the LRU entry's), or null; with capacity 0, `value`.
   */
  insert(sid: number, pasid: number, did: number, value: T): T | null {
    this.inserts++;
    if (this.capacity === 0) return value;
    let s = this.find(sid, pasid);
    let out: T | null = null;
    if (s >= 0) {
      out = this.values[s] as T;
    } else {
      s = this.victim();
      if ((this.sids[s] as number) >= 0) {
        out = this.values[s] as T;
        this.unlink(s);
        this.evictions++;
      }
      this.live++;
      this.sids[s] = sid;
      this.pasids[s] = pasid;
      const b = this.bucket(sid, pasid);
      this.next[s] = this.heads[b] as number;
      this.heads[b] = s + 1;
    }
    this.dids[s] = did & 0xffff;
    this.values[s] = value;
    this.stamps[s] = ++this.clock;
    return out;
  }

  private victim(): number {
    let best = 0;
    let oldest = Number.POSITIVE_INFINITY;
    for (let s = 0; s < this.capacity; s++) {
      if ((this.sids[s] as number) < 0) return s;
      if ((this.stamps[s] as number) < oldest) {
        oldest = this.stamps[s] as number;
        best = s;
      }
    }
    return best;
  }

  /** Take slot s out of its chain and free it. */
  private unlink(s: number): void {
    const b = this.bucket(this.sids[s] as number, this.pasids[s] as number);
    let prev = -1;
    let cur = (this.heads[b] as number) - 1;
    while (cur >= 0 && cur !== s) {
      prev = cur;
      cur = (this.next[cur] as number) - 1;
    }
    if (cur !== s) bug("VtdPasidCache: slot missing from its bucket");
    if (prev < 0) this.heads[b] = this.next[s] as number;
    else this.next[prev] = this.next[s] as number;
    this.sids[s] = -1;
    this.live--;
  }

  size(): number {
    return this.live;
  }

  /**
   * Global PASID-cache invalidation (type 7, G=11). `onRemove` receives each removed value.
   *
   * @spec VT-d 6.5.2.2
   */
  invalidateAll(onRemove?: (value: T) => void): number {
    return this.sweep(-1, -1, -1, 0, onRemove);
  }

  /**
   * Domain-selective PASID-cache invalidation (type 7, G=00): every entry whose PASID entry had
   * DID `did`, of every device and PASID.
   *
   * @spec VT-d 6.5.2.2
   */
  invalidateDomain(did: number, onRemove?: (value: T) => void): number {
    return this.sweep(did & 0xffff, -1, -1, 0, onRemove);
  }

  /**
   * PASID-selective-within-domain PASID-cache invalidation (type 7, G=01): entries with DID `did`
   * and PASID `pasid`, of every device (the descriptor carries no source-id). Entries cached for
   * a not-present or invalid PASID entry (caching mode) carry DID 0, the DID of invalid
   * translations; they go too. The spec's guidance for making a PASID entry present under CM=1
   * is this invalidation with the new entry's DID (it is what Linux's pasid_flush_caches issues),
   * so the cached not-present entry of that PASID must be among what it removes.
   *
   * @spec VT-d 6.5.2.2, 6.1 (caching mode)
   */
  invalidatePasid(did: number, pasid: number, onRemove?: (value: T) => void): number {
    return this.sweep(did & 0xffff, pasid, -1, 0, onRemove, true);
  }

  /**
   * Not a spec descriptor: drop the entries of source-id `sid` (function bits masked as FM does
   * for a device-selective context-cache invalidation). For a lenient unit only; see the class.
   */
  invalidateDevice(sid: number, fm: number, onRemove?: (value: T) => void): number {
    const mask = FM_MASK[fm & 3] as number;
    return this.sweep(-1, -1, sid & 0xffff & ~mask, mask, onRemove);
  }

  private sweep(
    did: number,
    pasid: number,
    sid: number,
    fnMask: number,
    onRemove?: (value: T) => void,
    orInvalid = false,
  ): number {
    let n = 0;
    for (let s = 0; s < this.capacity; s++) {
      const key = this.sids[s] as number;
      if (key < 0) continue;
      if (did >= 0 && this.dids[s] !== did && !(orInvalid && this.dids[s] === 0)) continue;
      if (pasid >= 0 && this.pasids[s] !== pasid) continue;
      if (sid >= 0 && (key & ~fnMask) !== sid) continue;
      this.unlink(s);
      n++;
      const v = this.values[s] as T;
      this.values[s] = null;
      onRemove?.(v);
    }
    this.invalidated += n;
    return n;
  }

  /** Drop everything without counting invalidations (a reset). */
  clear(): void {
    this.sids.fill(-1);
    this.values.fill(null);
    this.heads.fill(0);
    this.live = 0;
  }

  forEach(cb: (entry: VtdPasidCacheEntry<T>) => void): void {
    for (let s = 0; s < this.capacity; s++) {
      const sid = this.sids[s] as number;
      if (sid < 0) continue;
      cb({
        slot: s,
        sid,
        pasid: this.pasids[s] as number,
        did: this.dids[s] as number,
        value: this.values[s] as T,
        stamp: this.stamps[s] as number,
      });
    }
  }

  entries(): VtdPasidCacheEntry<T>[] {
    const out: VtdPasidCacheEntry<T>[] = [];
    this.forEach((e) => {
      out.push(e);
    });
    return out;
  }
}

/** Function-number bits ignored for FM = 0..3 (as the context-cache descriptor defines them). */
const FM_MASK = [0, 4, 6, 7] as const;
