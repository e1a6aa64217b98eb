// A device's Address Translation Cache (PCIe ATS): translations the device asked the IOMMU for,
// kept until an ATS invalidation (or a reset of the device) removes them.

import { bug } from "../platform/bug.js";
import { NO_PASID } from "./iommu-hardware.js";

/** Default number of ATC entries. */
export const ATC_DEFAULT_ENTRIES = 32;

const PAGE_SIZE = 4096;
/** Page numbers are below 2^52 (64-bit addresses), so a range end up to 2^53 stays exact. */
const PFN_LIMIT = 2 ** 52;

/** One cached translation, as `Atc.entries()` lists it. */
export interface AtcEntry {
  /** PASID the translation was requested with, or NO_PASID. */
  pasid: number;
  /** First page of the region (aligned to its size). */
  iovaPfn: number;
  /** log2 of the region's size in bytes (12 for one 4 KiB page). */
  sizeShift: number;
  /** Physical address of the region's first byte. */
  paBase: number;
  /** DMA_READ | DMA_WRITE | DMA_EXEC granted. */
  perm: number;
  /** Translation requested in privileged mode (PASID prefix PMR bit). */
  privileged: boolean;
}

/**
 * A fully associative ATC with true LRU replacement (a stamp per entry). Entries are keyed by PASID
 * (or NO_PASID), privilege and a naturally aligned range of 4 KiB pages; a region is cached as the
 * Translation Completion gave it (its size, base and R/W/Exe bits). Insert replaces whatever the
 * ATC held for overlapping pages of the same PASID and privilege, so a lookup never has two
 * candidates.
 *
 * Nothing empties the cache except `invalidate` (an ATS Invalidate Request) and `flushAll` (a reset
 * of the function): not disabling ATS, not a detach, not a new domain. A lookup allocates nothing;
 * on a hit `pa` and `perm` hold the answer.
 *
 * @spec PCIe Base Specification 10.2 ATS Translation Services, 10.3 ATS Invalidation
 */
export class Atc {
  readonly capacity: number;
  /** Lookups that found a usable translation. */
  hits = 0;
  /** Lookups that found none (or one without the access asked for). */
  misses = 0;
  inserts = 0;
  /** Invalidate Requests processed. */
  invalidations = 0;
  /** Entries dropped by invalidations and flushes. */
  dropped = 0;
  /** Entries replaced to make room (LRU victims). */
  evictions = 0;
  /** After a hit: physical address of the looked-up page (4 KiB aligned). */
  pa = 0;
  /** After a hit: the permissions of the entry that hit. */
  perm = 0;

  private readonly valid: Uint8Array;
  private readonly pasids: Int32Array;
  private readonly priv: Uint8Array;
  private readonly perms: Uint8Array;
  private readonly shifts: Uint8Array;
  private readonly basePfn: Float64Array;
  private readonly pages: Float64Array;
  private readonly paBase: Float64Array;
  private readonly stamp: Float64Array;
  private clock = 0;
  private used = 0;

  /** `capacity` entries, 1..4096; anything else is a bug of the caller. */
  constructor(capacity: number = ATC_DEFAULT_ENTRIES) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 4096) {
      bug(`Atc: capacity ${capacity} is outside [1, 4096]`);
    }
    this.capacity = capacity;
    this.valid = new Uint8Array(capacity);
    this.pasids = new Int32Array(capacity);
    this.priv = new Uint8Array(capacity);
    this.perms = new Uint8Array(capacity);
    this.shifts = new Uint8Array(capacity);
    this.basePfn = new Float64Array(capacity);
    this.pages = new Float64Array(capacity);
    this.paBase = new Float64Array(capacity);
    this.stamp = new Float64Array(capacity);
  }

  /** Number of valid entries. */
  get size(): number {
    return this.used;
  }

  private find(pasid: number, iovaPfn: number, privileged: number): number {
    const n = this.capacity;
    for (let i = 0; i < n; i++) {
      if (
        this.valid[i] === 1 &&
        this.pasids[i] === pasid &&
        this.priv[i] === privileged &&
        iovaPfn >= this.basePfn[i] &&
        iovaPfn < this.basePfn[i] + this.pages[i]
      ) {
        return i;
      }
    }
    return -1;
  }

  /**
   * Look up page `iovaPfn` of `pasid` for `access` (DMA_READ / DMA_WRITE / DMA_EXEC bits). A hit
   * needs every access bit in the entry's permissions; it refreshes the entry's LRU stamp and
   * leaves the page's physical address in `pa`.
   */
  lookup(pasid: number, iovaPfn: number, access: number, privileged = false): boolean {
    const i = this.find(pasid, iovaPfn, privileged ? 1 : 0);
    if (i < 0 || (this.perms[i] & access) !== access) {
      this.misses++;
      return false;
    }
    this.hits++;
    this.stamp[i] = ++this.clock;
    this.pa = this.paBase[i] + (iovaPfn - this.basePfn[i]) * PAGE_SIZE;
    this.perm = this.perms[i];
    return true;
  }

  /**
   * Cache the translation of the naturally aligned 2^sizeShift-byte region that holds page
   * `iovaPfn`, starting at physical address `paBase`. Entries of the same PASID and privilege that
   * overlap the region are replaced; when the cache is full the least recently used entry goes.
   */
  insert(
    pasid: number,
    iovaPfn: number,
    sizeShift: number,
    paBase: number,
    perm: number,
    privileged = false,
  ): void {
    if (!Number.isInteger(sizeShift) || sizeShift < 12 || sizeShift > 64) {
      bug(`Atc.insert: sizeShift ${sizeShift} is outside [12, 64]`);
    }
    const pages = sizeShift >= 64 ? PFN_LIMIT : 2 ** (sizeShift - 12);
    const base = iovaPfn - (iovaPfn % pages);
    const p = privileged ? 1 : 0;
    this.drop(pasid, p, base, base + pages);
    let slot = -1;
    if (this.used < this.capacity) {
      for (let i = 0; i < this.capacity; i++) {
        if (this.valid[i] === 0) {
          slot = i;
          break;
        }
      }
    } else {
      slot = 0;
      for (let i = 1; i < this.capacity; i++) if (this.stamp[i] < this.stamp[slot]) slot = i;
      this.valid[slot] = 0;
      this.used--;
      this.evictions++;
    }
    this.valid[slot] = 1;
    this.used++;
    this.pasids[slot] = pasid;
    this.priv[slot] = p;
    this.perms[slot] = perm;
    this.shifts[slot] = sizeShift;
    this.basePfn[slot] = base;
    this.pages[slot] = pages;
    this.paBase[slot] = paBase;
    this.stamp[slot] = ++this.clock;
    this.inserts++;
  }

  /** Replacement by insert: same PASID and privilege, overlapping. Not counted as dropped. */
  private drop(pasid: number, privileged: number, start: number, end: number): void {
    for (let i = 0; i < this.capacity; i++) {
      if (
        this.valid[i] === 1 &&
        this.pasids[i] === pasid &&
        this.priv[i] === privileged &&
        this.basePfn[i] < end &&
        start < this.basePfn[i] + this.pages[i]
      ) {
        this.valid[i] = 0;
        this.used--;
      }
    }
  }

  /**
   * An ATS Invalidate Request: drop the entries overlapping pages [iovaPfn, iovaPfn + pages)
   * (`pages` 0: the whole address space) of
   * - every PASID and no PASID, when `pasid` is NO_PASID: a request without a PASID prefix
   *   invalidates the range whatever PASID an entry was requested with;
   * - every PASID (not the entries requested without one) when `global` is set with a PASID: the
   *   Global Invalidate bit, which lives in the PASID prefix;
   * - `pasid` only, otherwise.
   * Returns the number of entries dropped.
   *
   * @spec PCIe Base Specification 10.3.1 Invalidate Request, 10.3.8 Global Invalidate
   */
  invalidate(pasid: number, iovaPfn: number, pages: number, global: boolean): number {
    this.invalidations++;
    const start = pages === 0 ? 0 : iovaPfn;
    const end = pages === 0 ? PFN_LIMIT * 2 : iovaPfn + pages;
    const anyPasid = pasid === NO_PASID;
    let n = 0;
    for (let i = 0; i < this.capacity; i++) {
      if (this.valid[i] === 0) continue;
      const p = this.pasids[i];
      const match = anyPasid || p === pasid || (global && p !== NO_PASID);
      if (match && this.basePfn[i] < end && start < this.basePfn[i] + this.pages[i]) {
        this.valid[i] = 0;
        this.used--;
        n++;
      }
    }
    this.dropped += n;
    return n;
  }

  /** Empty the cache, as a reset of the function does. */
  flushAll(): void {
    for (let i = 0; i < this.capacity; i++) {
      if (this.valid[i] === 1) {
        this.valid[i] = 0;
        this.dropped++;
      }
    }
    this.used = 0;
  }

  /** The valid entries, most recently used first (for tests, traces and dumps; allocates). */
  entries(): AtcEntry[] {
    const idx: number[] = [];
    for (let i = 0; i < this.capacity; i++) if (this.valid[i] === 1) idx.push(i);
    idx.sort((a, b) => this.stamp[b] - this.stamp[a]);
    return idx.map((i) => ({
      pasid: this.pasids[i],
      iovaPfn: this.basePfn[i],
      sizeShift: this.shifts[i],
      paBase: this.paBase[i],
      perm: this.perms[i],
      privileged: this.priv[i] === 1,
    }));
  }
}
