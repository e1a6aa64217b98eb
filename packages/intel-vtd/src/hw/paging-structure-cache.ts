// The VT-d paging-structure caches: cached non-leaf entries (PML5E/PML4E/PDPE/PDE and their
// second-stage equivalents), so a walk after an IOTLB miss can start below the root.

import { bug, SlotLru } from "@iommu-sim/iommu-core/platform";
import {
  VTD_KIND_FIRST_STAGE,
  VTD_KIND_NESTED,
  VTD_KIND_PASS_THROUGH,
  VTD_KIND_SECOND_STAGE,
  VTD_PASID_NONE,
  type VtdTranslationKind,
} from "./iotlb.js";

/** One paging-structure-cache entry as plain data (tests and the oracle). */
export interface VtdPscEntry {
  index: number;
  did: number;
  pasid: number;
  kind: VtdTranslationKind;
  /** 2 (PDE) .. 5 (PML5E). */
  level: number;
  /** Input page number bits above the entry's reach: vpn / 512^(level-1). */
  tag: number;
  /** Frame (pa >> 12) of the next-level table the entry points to. */
  tableFrame: number;
  /** VTD_PERM_* accumulated over this level and the ones above. */
  perm: number;
  stamp: number;
}

const MIN_LEVEL = 2;
const MAX_LEVEL = 5;
/** 512^(level-1): 4-KiB pages one entry of that level reaches. */
const REACH = [0, 1, 512, 512 ** 2, 512 ** 3, 512 ** 4] as const;
const FS_NESTED = (1 << VTD_KIND_FIRST_STAGE) | (1 << VTD_KIND_NESTED);
const SECOND = 1 << VTD_KIND_SECOND_STAGE;
/** 2^-32: the high key word of a tag is (tag * INV_TWO32) | 0. */
const INV_TWO32 = 2 ** -32;

/**
 * The paging-structure caches of one unit, all levels and kinds in one fully associative,
 * true-LRU array of `capacity` entries. A level-L entry caches the paging-structure entry at
 * level L (5 = PML5E, 4 = PML4E, 3 = PDPE, 2 = PDE) that covers input page `vpn`: it is tagged by
 * (DID, PASID, kind, L, vpn / 512^(L-1)) and holds the physical frame of the level L-1 table
 * plus the permissions accumulated from the root down to it.
 *
 * Second-stage entries are tagged by DID only (stored with VTD_PASID_NONE, whatever the PASID of
 * the request): second-stage tables belong to the domain, so two PASIDs of one DID share them,
 * as the spec allows; a driver that gives one DID two second-stage tables sees it. Pass-through
 * has no tables and is never inserted.
 *
 * Invalidation (maximal reading; QEMU does not model these caches):
 * - type 2 domain-selective: every entry of the DID, every kind;
 * - type 2 page-selective, IH=0: second-stage entries of the DID whose reach overlaps the range
 *   (the register text: "flush both the cached leaf and non-leaf page-table entries
 *   corresponding to mappings specified by ADDR and AM"); first-stage and nested entries of the
 *   whole DID (as the IOTLB row of the same table; unverified for the caches). IH=1 keeps all;
 * - type 6 PASID-selective: first-stage and nested entries of (DID, PASID); second-stage entries
 *   stay (spec 4.1 table 21, last column, as cited on qemu-devel);
 * - type 6 page-selective, IH=0: first-stage and nested entries of (DID, PASID) whose reach
 *   overlaps the range; IH=1 keeps all.
 *
 * @spec VT-d 6.2.4 (paging-structure caches), 6.5.2.3, 6.5.2.4
 */
export class VtdPagingStructureCache {
  readonly capacity: number;
  hits = 0;
  misses = 0;
  inserts = 0;
  evictions = 0;
  invalidated = 0;

  /** -1 = free slot. */
  private readonly dids: Int32Array;
  private readonly pasids: Int32Array;
  private readonly kinds: Uint8Array;
  private readonly levels: Uint8Array;
  private readonly tags: Float64Array;
  private readonly tables: Float64Array;
  private readonly perms: Uint8Array;
  private readonly stamps: Float64Array;
  private clock = 0;
  /** Key index, recency order and free slots; the key is (DID|kind|level, PASID, tag lo, tag hi). */
  private readonly slots: SlotLru;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0)
      bug(`VtdPagingStructureCache: capacity ${capacity}`);
    this.capacity = capacity;
    this.dids = new Int32Array(capacity).fill(-1);
    this.pasids = new Int32Array(capacity);
    this.kinds = new Uint8Array(capacity);
    this.levels = new Uint8Array(capacity);
    this.tags = new Float64Array(capacity);
    this.tables = new Float64Array(capacity);
    this.perms = new Uint8Array(capacity);
    this.stamps = new Float64Array(capacity);
    this.slots = new SlotLru(capacity, 4);
  }

  /** The slot holding this key, or -1. */
  private find(did: number, pasid: number, kind: number, level: number, tag: number): number {
    return this.slots.find(
      did | (kind << 16) | (level << 20),
      pasid,
      tag | 0,
      (tag * INV_TWO32) | 0,
    );
  }

  /**
   * The deepest (lowest-level) cached entry on the path to page `vpn`, or -1. The walk resumes at
   * level `levelOf(i) - 1` in the table at `tableFrameOf(i)` with `permOf(i)` accumulated so far.
   */
  lookupDeepest(did: number, pasid: number, kind: VtdTranslationKind, vpn: number): number {
    if (this.slots.size() === 0) {
      this.misses++;
      return -1;
    }
    const p = kind === VTD_KIND_SECOND_STAGE ? VTD_PASID_NONE : pasid;
    const d = did & 0xffff;
    for (let level = MIN_LEVEL; level <= MAX_LEVEL; level++) {
      const s = this.find(d, p, kind, level, Math.floor(vpn / (REACH[level] as number)));
      if (s >= 0) {
        this.hits++;
        this.slots.touch(s);
        this.stamps[s] = ++this.clock;
        return s;
      }
    }
    this.misses++;
    return -1;
  }

  levelOf(i: number): number {
    return this.levels[i] as number;
  }

  tableFrameOf(i: number): number {
    return this.tables[i] as number;
  }

  permOf(i: number): number {
    return this.perms[i] as number;
  }

  /**
   * Cache the level-`level` entry (2..5) on the path to `vpn`, pointing at the table in frame
   * `tableFrame`, with permissions `perm` accumulated down to it. Replaces an entry with the same
   * key, else takes a free slot or the least recently used one.
   */
  insert(
    did: number,
    pasid: number,
    kind: VtdTranslationKind,
    level: number,
    vpn: number,
    tableFrame: number,
    perm: number,
  ): void {
    this.inserts++;
    if (level < MIN_LEVEL || level > MAX_LEVEL || !Number.isInteger(level)) {
      bug(`VtdPagingStructureCache.insert: level ${level}`);
    }
    if (kind === VTD_KIND_PASS_THROUGH)
      bug("VtdPagingStructureCache.insert: pass-through has no tables");
    if (this.capacity === 0) return;
    const p = kind === VTD_KIND_SECOND_STAGE ? VTD_PASID_NONE : pasid;
    const tag = Math.floor(vpn / (REACH[level] as number));
    const d = did & 0xffff;
    let slot = this.find(d, p, kind, level, tag);
    if (slot < 0) {
      if (this.slots.size() === this.capacity) {
        const victim = this.slots.lru;
        this.slots.remove(victim);
        this.dids[victim] = -1;
        this.evictions++;
      }
      slot = this.slots.insert(d | (kind << 16) | (level << 20), p, tag | 0, (tag * INV_TWO32) | 0);
    } else {
      this.slots.touch(slot);
    }
    this.dids[slot] = d;
    this.pasids[slot] = p;
    this.kinds[slot] = kind;
    this.levels[slot] = level;
    this.tags[slot] = tag;
    this.tables[slot] = tableFrame;
    this.perms[slot] = perm;
    this.stamps[slot] = ++this.clock;
  }

  size(): number {
    return this.slots.size();
  }

  /** Global invalidation (type 2 G=01): everything. */
  invalidateAll(): number {
    return this.sweep(-1, -1, 0, 0, 0, 0xff);
  }

  /** Type 2 domain-selective: every entry of `did`. */
  invalidateDomain(did: number): number {
    return this.sweep(did & 0xffff, -1, 0, 0, 0, 0xff);
  }

  /**
   * Type 2 page-selective-within-domain: with `ih` nothing (non-leaf entries unchanged, per the
   * hint); else second-stage entries of `did` reaching into the 2^am pages at `vpn` (aligned
   * down) and every first-stage / nested entry of `did`.
   */
  invalidatePages(did: number, vpn: number, am: number, ih: boolean): number {
    if (ih) return 0;
    const span = 2 ** am;
    return this.sweep(did & 0xffff, -1, Math.floor(vpn / span) * span, span, SECOND, FS_NESTED);
  }

  /** Type 6 PASID-selective: first-stage and nested entries of (did, pasid). */
  invalidatePasid(did: number, pasid: number): number {
    return this.sweep(did & 0xffff, pasid, 0, 0, 0, FS_NESTED);
  }

  /**
   * Type 6 page-selective-within-PASID: with `ih` nothing; else first-stage and nested entries of
   * (did, pasid) reaching into the 2^am pages at `vpn` (aligned down).
   */
  invalidatePasidPages(did: number, pasid: number, vpn: number, am: number, ih: boolean): number {
    if (ih) return 0;
    const span = 2 ** am;
    return this.sweep(did & 0xffff, pasid, Math.floor(vpn / span) * span, span, FS_NESTED, 0);
  }

  /** Remove entries of did (-1 any) / pasid (-1 any): kinds in `ranged` overlapping, `whole` all. */
  private sweep(
    did: number,
    pasid: number,
    start: number,
    span: number,
    ranged: number,
    whole: number,
  ): number {
    let n = 0;
    for (let i = 0; i < this.capacity; i++) {
      const d = this.dids[i] as number;
      if (d < 0 || (did >= 0 && d !== did) || (pasid >= 0 && this.pasids[i] !== pasid)) continue;
      const bit = 1 << (this.kinds[i] as number);
      let hit = (whole & bit) !== 0;
      if (!hit && (ranged & bit) !== 0) {
        const reach = REACH[this.levels[i] as number] as number;
        const first = (this.tags[i] as number) * reach;
        hit = first < start + span && start < first + reach;
      }
      if (hit) {
        this.dids[i] = -1;
        this.slots.remove(i);
        n++;
      }
    }
    this.invalidated += n;
    return n;
  }

  /** Drop everything without counting invalidations (a reset). */
  clear(): void {
    this.dids.fill(-1);
    this.slots.clear();
  }

  forEach(cb: (entry: VtdPscEntry) => void): void {
    for (let i = 0; i < this.capacity; i++) {
      const did = this.dids[i] as number;
      if (did < 0) continue;
      cb({
        index: i,
        did,
        pasid: this.pasids[i] as number,
        kind: this.kinds[i] as VtdTranslationKind,
        level: this.levels[i] as number,
        tag: this.tags[i] as number,
        tableFrame: this.tables[i] as number,
        perm: this.perms[i] as number,
        stamp: this.stamps[i] as number,
      });
    }
  }

  entries(): VtdPscEntry[] {
    const out: VtdPscEntry[] = [];
    this.forEach((e) => {
      out.push(e);
    });
    return out;
  }
}
