// The VT-d context cache: decoded context entries by source-id, fully associative, true LRU.

import { bug } from "@iommu-sim/iommu-core/platform";

/**
 * The DID tag of a scalable-mode context entry, which has no domain id (the DID lives in the
 * PASID entries). Domain-selective invalidations select such entries whatever their DID: the
 * hardware ignores the descriptor's DID in scalable mode (kernel comment in
 * intel_context_flush_no_pasid), and QEMU treats a domain-selective context invalidation as
 * global.
 */
export const VTD_CONTEXT_NO_DID = 0x1_0000;

/** One context-cache entry as plain data (tests and the oracle). */
export interface VtdContextCacheEntry {
  slot: number;
  sid: number;
  did: number;
  handle: number;
  stamp: number;
}

/**
 * The context cache. An entry maps a source-id (bus << 8 | devfn) to a `handle`, a small
 * non-negative integer the unit chooses (e.g. the index of a decoded config object in its pool),
 * plus the DID used for domain-selective invalidation (legacy mode: the context entry's DID;
 * scalable mode: VTD_CONTEXT_NO_DID). `insert` returns the handle it pushed out (evicted or
 * replaced), so the unit can recycle that config object; nothing else allocates.
 *
 * Lookup is one read of a 64K-entry direct map (source-id -> slot), so the per-DMA path is O(1).
 *
 * @spec VT-d 6.2.2 (context cache), 6.5.2.1 (context-cache invalidate)
 * @kernel drivers/iommu/intel/iommu.c iommu_flush_context / qi_flush_context
 */
export class VtdContextCache {
  readonly capacity: number;
  hits = 0;
  misses = 0;
  inserts = 0;
  evictions = 0;
  invalidated = 0;

  private readonly sids: Int32Array;
  private readonly dids: Int32Array;
  private readonly handles: Int32Array;
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
    this.handles = new Int32Array(capacity);
    this.stamps = new Float64Array(capacity);
    this.bySid = new Int32Array(capacity === 0 ? 0 : 0x1_0000);
  }

  /** The handle cached for `sid`, or -1 (a miss). A hit makes the entry most recent. */
  lookup(sid: number): number {
    const s = (this.bySid[sid & 0xffff] ?? 0) - 1;
    if (s < 0) {
      this.misses++;
      return -1;
    }
    this.hits++;
    this.stamps[s] = ++this.clock;
    return this.handles[s] as number;
  }

  /** The DID tag of the entry for `sid` (without counting or touching it), or -1. */
  didOf(sid: number): number {
    const s = (this.bySid[sid & 0xffff] ?? 0) - 1;
    return s < 0 ? -1 : (this.dids[s] as number);
  }

  /**
   * Cache `handle` for `sid` with DID tag `did`. Returns the handle that left the cache (the old
   * one for `sid`, or the least recently used entry's), or -1. With capacity 0 nothing is kept
   * and `handle` itself is returned, so the unit can recycle it at once.
   */
  insert(sid: number, did: number, handle: number): number {
    this.inserts++;
    if (this.capacity === 0) return handle;
    const key = sid & 0xffff;
    let s = (this.bySid[key] as number) - 1;
    let out = -1;
    if (s >= 0) {
      out = this.handles[s] as number;
    } else {
      s = this.victim();
      if ((this.sids[s] as number) >= 0) {
        out = this.handles[s] as number;
        this.bySid[this.sids[s] as number] = 0;
        this.evictions++;
      } else {
        this.live++;
      }
      this.sids[s] = key;
      this.bySid[key] = s + 1;
    }
    this.dids[s] = did;
    this.handles[s] = handle;
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
   * Global context-cache invalidation (G=01). `onRemove` (optional) receives each removed handle
   * so the unit can recycle it. Returns the number removed.
   *
   * @spec VT-d 6.5.2.1
   */
  invalidateAll(onRemove?: (handle: number) => void): number {
    return this.sweep(-1, -1, 0, onRemove);
  }

  /**
   * Domain-selective context-cache invalidation (G=10): entries tagged `did`, and every
   * scalable-mode entry (VTD_CONTEXT_NO_DID), whose DID the hardware cannot match.
   *
   * @spec VT-d 6.5.2.1
   */
  invalidateDomain(did: number, onRemove?: (handle: number) => void): number {
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
  invalidateDevice(sid: number, fm: number, onRemove?: (handle: number) => void): number {
    const mask = FM_MASK[fm & 3] as number;
    return this.sweep(-1, sid & 0xffff & ~mask, mask, onRemove);
  }

  private sweep(
    did: number,
    sid: number,
    fnMask: number,
    onRemove?: (handle: number) => void,
  ): number {
    let n = 0;
    for (let s = 0; s < this.capacity; s++) {
      const key = this.sids[s] as number;
      if (key < 0) continue;
      if (did >= 0 && this.dids[s] !== did && this.dids[s] !== VTD_CONTEXT_NO_DID) continue;
      if (sid >= 0 && (key & ~fnMask) !== sid) continue;
      this.sids[s] = -1;
      this.bySid[key] = 0;
      n++;
      onRemove?.(this.handles[s] as number);
    }
    this.live -= n;
    this.invalidated += n;
    return n;
  }

  /** Drop everything without counting invalidations (a reset). */
  clear(): void {
    this.sids.fill(-1);
    this.bySid.fill(0);
    this.live = 0;
  }

  forEach(cb: (entry: VtdContextCacheEntry) => void): void {
    for (let s = 0; s < this.capacity; s++) {
      const sid = this.sids[s] as number;
      if (sid < 0) continue;
      cb({
        slot: s,
        sid,
        did: this.dids[s] as number,
        handle: this.handles[s] as number,
        stamp: this.stamps[s] as number,
      });
    }
  }

  entries(): VtdContextCacheEntry[] {
    const out: VtdContextCacheEntry[] = [];
    this.forEach((e) => {
      out.push(e);
    });
    return out;
  }
}

/** Function-number bits ignored for FM = 0..3. */
const FM_MASK = [0, 4, 6, 7] as const;
