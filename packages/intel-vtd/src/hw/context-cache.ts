// The VT-d context cache: decoded context entries by source-id, fully associative, true LRU.

import { bug } from "@iommu-sim/iommu-core/platform";

/**
 * The DID tag of a scalable-mode context entry, which has no domain id (the DID lives in the
 * PASID entries). Domain-selective invalidations select such entries whatever their DID: the
 * hardware ignores the descriptor's DID in scalable mode (kernel comment in
 * intel_context_flush_no_pasid), and QEMU treats a domain-selective context invalidation as
 * global.
 */
export const VTD_CONTEXT_NO_DID = -1;

/** One context-cache entry as plain data (tests and the oracle). */
export interface VtdContextCacheEntry<T> {
  slot: number;
  sid: number;
  did: number;
  value: T;
  stamp: number;
}

/**
 * The context cache. An entry maps a source-id (bus << 8 | devfn) to a value the unit provides
 * (its decoded context-entry config object; the cache keeps the reference), plus the DID used for
 * domain-selective invalidation (legacy mode: the context entry's DID; scalable mode:
 * VTD_CONTEXT_NO_DID). `insert` returns the value it pushed out (evicted or replaced) and the
 * invalidations hand each removed value to an optional callback, so the unit can recycle config
 * objects; nothing here allocates.
 *
 * Lookup is one read of a 64K-entry direct map (source-id -> slot), so the per-DMA path is O(1).
 *
 * @spec VT-d 6.2.2 (context cache), 6.5.2.1 (context-cache invalidate)
 * @kernel drivers/iommu/intel/dmar.c qi_flush_context
 */
export class VtdContextCache<T> {
  readonly capacity: number;
  hits = 0;
  misses = 0;
  inserts = 0;
  evictions = 0;
  invalidated = 0;

  private readonly sids: Int32Array;
  private readonly dids: Int32Array;
  private readonly values: (T | null)[];
  private readonly stamps: Float64Array;
  /** source-id -> slot + 1 (0 = not cached); empty when the capacity is 0. */
  private readonly bySid: Int32Array;
  private clock = 0;
  private live = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) bug(`VtdContextCache: capacity ${capacity}`);
    this.capacity = capacity;
    this.sids = new Int32Array(capacity).fill(-1);
    this.dids = new Int32Array(capacity);
    this.values = new Array<T | null>(capacity).fill(null);
    this.stamps = new Float64Array(capacity);
    this.bySid = new Int32Array(capacity === 0 ? 0 : 0x1_0000);
  }

  /** The value cached for `sid`, or null (a miss). A hit makes the entry most recent. */
  lookup(sid: number): T | null {
    const s = (this.bySid[sid & 0xffff] ?? 0) - 1;
    if (s < 0) {
      this.misses++;
      return null;
    }
    this.hits++;
    this.stamps[s] = ++this.clock;
    return this.values[s] as T;
  }

  /**
   * Cache `value` for `sid` with DID tag `did` (a 16-bit DID, or VTD_CONTEXT_NO_DID in scalable
   * mode). Returns the value that left the cache (the old one for `sid`, or the least recently
   * used entry's), or null. With capacity 0 nothing is kept and `value` itself is returned.
   */
  insert(sid: number, did: number, value: T): T | null {
    this.inserts++;
    if (this.capacity === 0) return value;
    const key = sid & 0xffff;
    let s = (this.bySid[key] as number) - 1;
    let out: T | null = null;
    if (s >= 0) {
      out = this.values[s] as T;
    } else {
      s = this.victim();
      if ((this.sids[s] as number) >= 0) {
        out = this.values[s] as T;
        this.bySid[this.sids[s] as number] = 0;
        this.evictions++;
      } else {
        this.live++;
      }
      this.sids[s] = key;
      this.bySid[key] = s + 1;
    }
    this.dids[s] = did < 0 ? VTD_CONTEXT_NO_DID : did & 0xffff;
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

  size(): number {
    return this.live;
  }

  /**
   * Global context-cache invalidation (G=01). `onRemove` (optional) receives each removed value
   * so the unit can recycle it. Returns the number removed.
   *
   * @spec VT-d 6.5.2.1
   */
  invalidateAll(onRemove?: (value: T) => void): number {
    return this.sweep(-1, -1, 0, onRemove);
  }

  /**
   * Domain-selective context-cache invalidation (G=10): entries tagged `did`, and every
   * scalable-mode entry (VTD_CONTEXT_NO_DID), whose DID the hardware cannot match.
   *
   * @spec VT-d 6.5.2.1
   */
  invalidateDomain(did: number, onRemove?: (value: T) => void): number {
    return this.sweep(did & 0xffff, -1, 0, onRemove);
  }

  /**
   * Device-selective context-cache invalidation (G=11): the entries of source-id `sid`, with the
   * function-number bits named by FM ignored: FM=1 masks function bit 2, FM=2 bits 2:1, FM=3 bits
   * 2:0 (so FM=3 covers all 8 functions of the device; it exists for phantom functions). The DID
   * of the descriptor is not checked: scalable mode ignores it, and in legacy mode it is a rule
   * for software (the entries "must have" that DID), not a selector.
   *
   * @spec VT-d 6.5.2.1, 10.4.7 (CCMD.FM)
   */
  invalidateDevice(sid: number, fm: number, onRemove?: (value: T) => void): number {
    const mask = FM_MASK[fm & 3] as number;
    return this.sweep(-1, sid & 0xffff & ~mask, mask, onRemove);
  }

  private sweep(did: number, sid: number, fnMask: number, onRemove?: (value: T) => void): number {
    let n = 0;
    for (let s = 0; s < this.capacity; s++) {
      const key = this.sids[s] as number;
      if (key < 0) continue;
      if (did >= 0 && this.dids[s] !== did && this.dids[s] !== VTD_CONTEXT_NO_DID) continue;
      if (sid >= 0 && (key & ~fnMask) !== sid) continue;
      this.sids[s] = -1;
      this.bySid[key] = 0;
      n++;
      const v = this.values[s] as T;
      this.values[s] = null;
      onRemove?.(v);
    }
    this.live -= n;
    this.invalidated += n;
    return n;
  }

  /** Drop everything without counting invalidations (a reset). */
  clear(): void {
    this.sids.fill(-1);
    this.values.fill(null);
    this.bySid.fill(0);
    this.live = 0;
  }

  forEach(cb: (entry: VtdContextCacheEntry<T>) => void): void {
    for (let s = 0; s < this.capacity; s++) {
      const sid = this.sids[s] as number;
      if (sid < 0) continue;
      cb({
        slot: s,
        sid,
        did: this.dids[s] as number,
        value: this.values[s] as T,
        stamp: this.stamps[s] as number,
      });
    }
  }

  entries(): VtdContextCacheEntry<T>[] {
    const out: VtdContextCacheEntry<T>[] = [];
    this.forEach((e) => {
      out.push(e);
    });
    return out;
  }
}

/** Function-number bits ignored for FM = 0..3. */
const FM_MASK = [0, 4, 6, 7] as const;
