// The VT-d context cache: decoded context entries by source-id, fully associative, true LRU.

import { bug, SlotLru } from "@iommu-sim/iommu-core/platform";

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
 * Slots, recency and the index live in a SlotLru with a 64K-entry direct map (source-id -> slot):
 * lookup is one read, so the per-DMA path is O(1), and replacement is true LRU.
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
  /** Index by source-id, recency order and free slots. */
  private readonly slots: SlotLru;
  private clock = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) bug(`VtdContextCache: capacity ${capacity}`);
    this.capacity = capacity;
    this.sids = new Int32Array(capacity).fill(-1);
    this.dids = new Int32Array(capacity);
    this.values = new Array<T | null>(capacity).fill(null);
    this.stamps = new Float64Array(capacity);
    this.slots = new SlotLru(capacity, 1, 0x1_0000);
  }

  /** The value cached for `sid`, or null (a miss). A hit makes the entry most recent. */
  lookup(sid: number): T | null {
    const s = this.slots.findDirect(sid & 0xffff);
    if (s < 0) {
      this.misses++;
      return null;
    }
    this.hits++;
    this.slots.touch(s);
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
    let s = this.slots.findDirect(key);
    let out: T | null = null;
    if (s >= 0) {
      out = this.values[s] as T;
      this.slots.touch(s);
    } else {
      if (this.slots.size() === this.capacity) {
        const victim = this.slots.lru;
        out = this.values[victim] as T;
        this.slots.remove(victim);
        this.evictions++;
      }
      s = this.slots.insert(key);
      this.sids[s] = key;
    }
    this.dids[s] = did < 0 ? VTD_CONTEXT_NO_DID : did & 0xffff;
    this.values[s] = value;
    this.stamps[s] = ++this.clock;
    return out;
  }

  size(): number {
    return this.slots.size();
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
      this.slots.remove(s);
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
    this.slots.clear();
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
