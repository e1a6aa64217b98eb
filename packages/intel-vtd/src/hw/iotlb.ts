// The VT-d IOTLB: a set-associative, true-LRU cache of leaf translations tagged by DID, PASID, page.

import { bug } from "@iommu-sim/iommu-core/platform";

/**
 * How a cached translation was made; the invalidation descriptors select entries by it. The values
 * are the PASID-entry PGTT encodings; legacy-mode translations are second-stage (or pass-through).
 *
 * @spec VT-d 9.6 (scalable-mode PASID table entry, PGTT)
 */
export const VTD_KIND_FIRST_STAGE = 1;
export const VTD_KIND_SECOND_STAGE = 2;
export const VTD_KIND_NESTED = 3;
export const VTD_KIND_PASS_THROUGH = 4;
export type VtdTranslationKind =
  | typeof VTD_KIND_FIRST_STAGE
  | typeof VTD_KIND_SECOND_STAGE
  | typeof VTD_KIND_NESTED
  | typeof VTD_KIND_PASS_THROUGH;

/**
 * The PASID tag of a request without PASID in legacy mode: one above the largest 20-bit PASID, so
 * no PASID-based descriptor (type 6) can select it. Scalable mode tags such requests with the
 * context entry's RID_PASID instead.
 *
 * @spec VT-d 6.2.1 (IOTLB tags)
 */
export const VTD_PASID_NONE = 0x10_0000;

/**
 * Permission and state bits an IOTLB (or paging-structure-cache) entry carries, so that a hit can
 * be checked without a walk. The walker stores what the access check needs:
 * - R, W: read / write allowed (AND over all levels);
 * - X: execute allowed (no XD on any first-stage level; second-stage X);
 * - U: user-accessible (U/S=1 on every first-stage level); a user request to an entry without U
 *   faults;
 * - D: the first-stage leaf's dirty flag was already set when cached; a write through an entry
 *   without D must walk again so that the hardware sets D in memory (as the CPU TLB does).
 */
export const VTD_PERM_R = 1;
export const VTD_PERM_W = 2;
export const VTD_PERM_X = 4;
export const VTD_PERM_U = 8;
export const VTD_PERM_D = 16;

/** Page sizes the IOTLB holds, as the shift of the page size in bytes. */
export const VTD_SHIFT_4K = 12;
export const VTD_SHIFT_2M = 21;
export const VTD_SHIFT_1G = 30;

/** One IOTLB entry as plain data, for the oracle, the tests and printing (never on a hot path). */
export interface VtdIotlbEntry {
  /** Slot index: the value `lookup` returns for this entry. */
  index: number;
  did: number;
  pasid: number;
  /** First 4-KiB page number of the page (aligned to its size). */
  vpn: number;
  sizeShift: number;
  kind: VtdTranslationKind;
  paFrame: number;
  perm: number;
  /** LRU stamp: larger is more recently used. */
  stamp: number;
}

const TWO32 = 4294967296;
/** 2^-32: multiplying by it is exact and cheaper than dividing by 2^32. */
const INV_TWO32 = 1 / TWO32;
/** Bit 15 of the middle tag word: the slot holds an entry (a free slot has mid = 0). */
const VALID = 0x8000;
/** Size codes in bits 14:13 of the middle tag word (0 = 4 KiB, 1 = 2 MiB, 2 = 1 GiB). */
const SIZE_SHIFT = 13;
const SIZE_2M = 1 << SIZE_SHIFT;
const SIZE_1G = 2 << SIZE_SHIFT;
/** Bits 12:0 of the middle tag word: page-number bits 44:32 (57-bit input addresses). */
const VPN_HI_MASK = 0x1fff;
const DID_SHIFT = 16;
const PAGES_2M = 512;
const PAGES_1G = 512 * 512;
/** Words per slot in `tags`: page number 31:0, middle word, PASID, perm | kind << 8. */
const STRIDE = 4;
const KIND_SHIFT = 8;
/** Hint-table slots per cache slot (a power of two): few 4-KiB keys share a hint. */
const HINT_RATIO = 8;

/** Bit sets of kinds (bit k = kind k) for the invalidation sweeps. */
const FS_NESTED_KINDS = (1 << VTD_KIND_FIRST_STAGE) | (1 << VTD_KIND_NESTED);
const SL_PT_KINDS = (1 << VTD_KIND_SECOND_STAGE) | (1 << VTD_KIND_PASS_THROUGH);
const ALL_KINDS = FS_NESTED_KINDS | SL_PT_KINDS;

/** The hint-table index of a 4-KiB key (a multiplicative hash). */
function hintHash(lo: number, mid: number, pasid: number, bits: number): number {
  return Math.imul(lo ^ Math.imul(mid, 0x9e3779b1) ^ pasid, 0x85ebca6b) >>> (32 - bits);
}

/**
 * The IOTLB of one remapping unit: `sets` x `ways` slots (sets a power of two, capacity 0 allowed),
 * true LRU within a set by a per-cache stamp bumped on every hit and insert; the victim is the
 * first free way, else the least recently used. A 4-KiB entry lives in set `vpn & (sets-1)`, a
 * 2-MiB entry in set `(vpn >> 9) & (sets-1)`, a 1-GiB entry in set `(vpn >> 18) & (sets-1)`.
 *
 * Each slot's tag is three int32 words beside its data word in one interleaved array: page number
 * bits 31:0; a middle word with DID (31:16), valid (15), size (14:13) and page number bits 44:32
 * (12:0); the PASID (21 bits, with VTD_PASID_NONE); then perm | kind << 8. The source-id is not
 * part of the tag: VT-d tags IOTLB entries by domain (and PASID), so two devices of one domain
 * share entries, which is what a driver must expect.
 *
 * Speed: the way that hits is random, so a way loop mispredicts its exit branch on most hits
 * (iotlb.c's early-exit variant is 2.9x slower than its vector compare, and JS has no vector
 * compare). So a 4-KiB lookup first tries a direct-mapped hint table (hash of the key -> the slot
 * last seen holding it), checks that slot's tag, and only then scans the set. A hint is only a
 * guess: the tag check makes a stale one harmless, so invalidations never touch the hints.
 *
 * Invalidations follow the scalable-mode descriptor semantics (see each method). Nothing here
 * allocates except `entries()` / `forEach`.
 *
 * @spec VT-d 6.2.1 (IOTLB), 6.5.2.3 (IOTLB invalidate), 6.5.2.4 (PASID-based IOTLB invalidate)
 * @kernel drivers/iommu/intel/cache.c cache_tag_flush_range
 */
export class VtdIotlb {
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
  /** Per slot: output frame at 2i and LRU stamp at 2i+1, so a hit touches one line for both. */
  private readonly data: Float64Array;
  private readonly hint: Int32Array;
  private readonly hintBits: number;
  private clock = 0;
  private live = 0;
  /**
   * Some first-stage or nested entry may be held (cleared when the cache empties or a full sweep
   * finds none): a page-selective type-2 invalidation, which removes such entries of the DID
   * whatever their address, then needs a full sweep; without any, it touches only its sets.
   */
  private firstStageHeld = false;
  /** Whether a 2-MiB or 1-GiB entry may be cached (set on such an insert, cleared when empty). */
  private large = false;

  /** `sets` must be a power of two (or 0); `ways` >= 0. Either 0 gives a cache that holds nothing. */
  constructor(sets: number, ways: number) {
    if (!Number.isInteger(sets) || sets < 0 || (sets & (sets - 1)) !== 0 || sets > 1 << 24) {
      bug(`VtdIotlb: sets must be 0 or a power of two, got ${sets}`);
    }
    if (!Number.isInteger(ways) || ways < 0 || ways > 256) {
      bug(`VtdIotlb: ways must be an integer in [0, 256], got ${ways}`);
    }
    const empty = sets === 0 || ways === 0;
    this.sets = empty ? 1 : sets;
    this.ways = empty ? 0 : ways;
    this.capacity = this.sets * this.ways;
    this.setMask = this.sets - 1;
    const n = Math.max(1, this.capacity);
    this.tags = new Int32Array(n * STRIDE);
    this.data = new Float64Array(2 * n);
    this.hintBits = Math.max(1, 32 - Math.clz32(n * HINT_RATIO - 1));
    this.hint = new Int32Array(1 << this.hintBits);
  }

  /**
   * The slot translating page `vpn` (input address >> 12) for (did, pasid), or -1. Tries the
   * 4-KiB key first, then 2 MiB, then 1 GiB. Counts a hit (and makes the entry most recent) or a
   * miss.
   */
  lookup(did: number, pasid: number, vpn: number): number {
    const lo = vpn | 0;
    const mid = ((vpn * INV_TWO32) & VPN_HI_MASK) | VALID | (did << DID_SHIFT);
    const h = hintHash(lo, mid, pasid, this.hintBits);
    const i = this.hint[h] as number;
    const t = i * STRIDE;
    const tags = this.tags;
    if (tags[t] === lo && tags[t + 1] === mid && tags[t + 2] === pasid) {
      this.hits++;
      this.data[2 * i + 1] = ++this.clock;
      return i;
    }
    return this.lookupSlow(mid, pasid, lo, h);
  }

  /** The set scans: 4 KiB (refreshing the hint), then 2 MiB and 1 GiB. Out of line. */
  private lookupSlow(mid4k: number, pasid: number, lo: number, h: number): number {
    let i = this.find((lo & this.setMask) * this.ways, lo, mid4k, pasid);
    if (i >= 0) {
      this.hint[h] = i;
    } else if (this.large) {
      i = this.find(
        ((lo >>> 9) & this.setMask) * this.ways,
        lo & ~(PAGES_2M - 1),
        mid4k | SIZE_2M,
        pasid,
      );
      if (i < 0) {
        i = this.find(
          ((lo >>> 18) & this.setMask) * this.ways,
          lo & ~(PAGES_1G - 1),
          mid4k | SIZE_1G,
          pasid,
        );
      }
    }
    if (i < 0) {
      this.misses++;
      return -1;
    }
    this.hits++;
    this.data[2 * i + 1] = ++this.clock;
    return i;
  }

  /** The way of the set starting at slot `base` holding the key, or -1. */
  private find(base: number, lo: number, mid: number, pasid: number): number {
    const tags = this.tags;
    const end = base + this.ways;
    for (let i = base; i < end; i++) {
      const t = i * STRIDE;
      if (tags[t] === lo && tags[t + 1] === mid && tags[t + 2] === pasid) return i;
    }
    return -1;
  }

  /** Output frame (pa >> 12) of the first 4-KiB page of slot i's page. */
  paFrameOf(i: number): number {
    return this.data[2 * i] as number;
  }

  /** Output frame of 4-KiB page `vpn` inside slot i's page (the slot `lookup(.., vpn)` returned). */
  paFrameFor(i: number, vpn: number): number {
    const code = ((this.tags[i * STRIDE + 1] as number) >>> SIZE_SHIFT) & 3;
    return (this.data[2 * i] as number) + ((vpn | 0) & ((1 << (9 * code)) - 1));
  }

  /** VTD_PERM_* bits of slot i. */
  permOf(i: number): number {
    return (this.tags[i * STRIDE + 3] as number) & 0xff;
  }

  /** 12, 21 or 30. */
  sizeShiftOf(i: number): number {
    return VTD_SHIFT_4K + 9 * (((this.tags[i * STRIDE + 1] as number) >>> SIZE_SHIFT) & 3);
  }

  kindOf(i: number): VtdTranslationKind {
    return ((this.tags[i * STRIDE + 3] as number) >>> KIND_SHIFT) as VtdTranslationKind;
  }

  /**
   * Cache a translation. `vpn` is aligned down to the page size; an entry with the same key is
   * replaced in place, otherwise the set's first free way or its least recently used way is
   * taken (an eviction). Dropped (but counted) when the capacity is 0.
   */
  insert(
    did: number,
    pasid: number,
    vpn: number,
    sizeShift: number,
    kind: VtdTranslationKind,
    paFrame: number,
    perm: number,
  ): void {
    this.inserts++;
    if (this.ways === 0) return;
    const code = sizeShift === VTD_SHIFT_4K ? 0 : sizeShift === VTD_SHIFT_2M ? 1 : 2;
    if (code === 2 && sizeShift !== VTD_SHIFT_1G)
      bug(`VtdIotlb.insert: page size shift ${sizeShift}`);
    const lo0 = vpn | 0;
    const lo = code === 0 ? lo0 : code === 1 ? lo0 & ~(PAGES_2M - 1) : lo0 & ~(PAGES_1G - 1);
    const mid =
      ((vpn * INV_TWO32) & VPN_HI_MASK) |
      VALID |
      (code << SIZE_SHIFT) |
      ((did & 0xffff) << DID_SHIFT);
    const tags = this.tags;
    const base = ((lo0 >>> (9 * code)) & this.setMask) * this.ways;
    const end = base + this.ways;
    let same = -1;
    let free = -1;
    let lru = -1;
    let oldest = Number.POSITIVE_INFINITY;
    for (let i = base; i < end; i++) {
      const t = i * STRIDE;
      const m = tags[t + 1] as number;
      if (m === 0) {
        if (free < 0) free = i;
      } else if (m === mid && tags[t] === lo && tags[t + 2] === pasid) {
        same = i;
        break;
      } else if ((this.data[2 * i + 1] as number) < oldest) {
        oldest = this.data[2 * i + 1] as number;
        lru = i;
      }
    }
    let victim: number;
    if (same >= 0) {
      victim = same;
    } else if (free >= 0) {
      victim = free;
      this.live++;
    } else {
      victim = lru;
      this.evictions++;
    }
    const t = victim * STRIDE;
    tags[t] = lo;
    tags[t + 1] = mid;
    tags[t + 2] = pasid;
    tags[t + 3] = (perm & 0xff) | (kind << KIND_SHIFT);
    this.data[2 * victim] = paFrame;
    this.data[2 * victim + 1] = ++this.clock;
    if (code === 0) this.hint[hintHash(lo, mid, pasid, this.hintBits)] = victim;
    else this.large = true;
    if (kind === VTD_KIND_FIRST_STAGE || kind === VTD_KIND_NESTED) this.firstStageHeld = true;
  }

  /** Entries held now. */
  size(): number {
    return this.live;
  }

  /** Drop every entry without counting invalidations (a reset). Counters are kept. */
  clear(): void {
    this.tags.fill(0);
    this.live = 0;
    this.large = false;
    this.firstStageHeld = false;
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
   * Global invalidation (IOTLB descriptor G=01, or the IOTLB register's global request): every
   * entry. Returns the number removed.
   *
   * @spec VT-d 6.5.2.3
   */
  invalidateAll(): number {
    const n = this.live;
    this.tags.fill(0);
    return this.removed(n);
  }

  /**
   * Domain-selective IOTLB invalidation (type 2, G=10): every entry of `did`, of every kind. The
   * page-selective form already removes the first-stage and nested entries of the whole DID, so
   * the domain-selective form (a superset) does too; QEMU's domain invalidation likewise removes
   * every entry of the DID. In legacy mode all entries are second-stage or pass-through anyway.
   *
   * @spec VT-d 6.5.2.3 (IOTLB invalidate, scalable mode)
   */
  invalidateDomain(did: number): number {
    return this.sweep(did, -1, 0, 0, ALL_KINDS, 0);
  }

  /**
   * Page-selective-within-domain IOTLB invalidation (type 2, G=11): the 2^am pages at `vpn`
   * (aligned down to 2^am pages: the hardware ignores the masked ADDR bits). Per the spec's
   * table, as quoted in QEMU's "Flush stage-1 cache in iotlb invalidation":
   * - second-stage and pass-through entries of `did` whose page overlaps the range;
   * - first-stage and nested entries of `did`, whatever their address.
   * IH does not matter to the IOTLB: leaf entries always go.
   *
   * @spec VT-d 6.5.2.3 (IOTLB invalidate, page-selective-within-domain)
   */
  invalidatePages(did: number, vpn: number, am: number): number {
    const span = 2 ** am;
    return this.sweep(did, -1, Math.floor(vpn / span) * span, span, SL_PT_KINDS, FS_NESTED_KINDS);
  }

  /**
   * PASID-selective PASID-based IOTLB invalidation (type 6, G=10): every entry of (did, pasid), of
   * every kind (spec 4.1 table 21: second-stage and pass-through entries tagged with the PASID go
   * too; only the second-stage paging-structure caches are left alone).
   *
   * @spec VT-d 6.5.2.4 (PASID-based-IOTLB invalidate, table 21)
   */
  invalidatePasid(did: number, pasid: number): number {
    return this.sweep(did, pasid, 0, 0, ALL_KINDS, 0);
  }

  /**
   * Page-selective-within-PASID PASID-based IOTLB invalidation (type 6, G=11): first-stage and
   * nested entries of (did, pasid) whose page overlaps the 2^am pages at `vpn` (aligned down).
   * Second-stage and pass-through entries are not selected (table 21: "NA" for PGTT 010b/100b).
   *
   * @spec VT-d 6.5.2.4 (table 21)
   */
  invalidatePasidPages(did: number, pasid: number, vpn: number, am: number): number {
    const span = 2 ** am;
    return this.sweep(did, pasid, Math.floor(vpn / span) * span, span, FS_NESTED_KINDS, 0);
  }

  /**
   * Remove the entries of `did` (and `pasid`, unless -1) whose kind is in `ranged` (a bit set of
   * kinds) and whose page overlaps [start, start + span), and those whose kind is in `whole`.
   * `span` 0 with `ranged` means "any address".
   */
  private sweep(
    did: number,
    pasid: number,
    start: number,
    span: number,
    ranged: number,
    whole: number,
  ): number {
    if (!this.firstStageHeld) whole &= ~FS_NESTED_KINDS;
    // A small range touches only the sets its pages (and their 2 MiB/1 GiB blocks) index.
    if (whole === 0 && span > 0 && span < this.sets && this.ways > 0) {
      return this.removed(this.sweepSets(did & 0xffff, pasid, start, span, ranged));
    }
    const want = did & 0xffff;
    const tags = this.tags;
    let n = 0;
    let firstStageLeft = 0;
    for (let i = 0; i < this.capacity; i++) {
      const t = i * STRIDE;
      const m = tags[t + 1] as number;
      if (m === 0) continue;
      const kindBit = 1 << ((tags[t + 3] as number) >>> KIND_SHIFT);
      if (
        m >>> DID_SHIFT === want &&
        (pasid < 0 || tags[t + 2] === pasid) &&
        ((whole & kindBit) !== 0 ||
          ((ranged & kindBit) !== 0 && (span === 0 || this.overlaps(t, m, start, span))))
      ) {
        tags[t + 1] = 0;
        n++;
      } else if ((kindBit & FS_NESTED_KINDS) !== 0) {
        firstStageLeft++;
      }
    }
    if (firstStageLeft === 0) this.firstStageHeld = false;
    return this.removed(n);
  }

  /** `sweep` over the sets a range of fewer than `sets` pages maps to, per page size. */
  private sweepSets(
    want: number,
    pasid: number,
    start: number,
    span: number,
    ranged: number,
  ): number {
    const tags = this.tags;
    let n = 0;
    const maxCode = this.large ? 2 : 0;
    for (let code = 0; code <= maxCode; code++) {
      const unit = code === 0 ? 1 : code === 1 ? 512 : 262144;
      const first = Math.floor(start / unit);
      const last = Math.floor((start + span - 1) / unit);
      for (let key = first; key <= last; key++) {
        const base = (key % this.sets) * this.ways;
        for (let i = base; i < base + this.ways; i++) {
          const t = i * STRIDE;
          const m = tags[t + 1] as number;
          if (m === 0 || m >>> DID_SHIFT !== want || ((m >>> SIZE_SHIFT) & 3) !== code) continue;
          if (pasid >= 0 && tags[t + 2] !== pasid) continue;
          const kindBit = 1 << ((tags[t + 3] as number) >>> KIND_SHIFT);
          if ((ranged & kindBit) !== 0 && this.overlaps(t, m, start, span)) {
            tags[t + 1] = 0;
            n++;
          }
        }
      }
    }
    return n;
  }

  private removed(n: number): number {
    this.live -= n;
    if (this.live === 0) {
      this.large = false;
      this.firstStageHeld = false;
    }
    this.invalidated += n;
    return n;
  }

  private overlaps(t: number, mid: number, start: number, span: number): boolean {
    const first = (mid & VPN_HI_MASK) * TWO32 + ((this.tags[t] as number) >>> 0);
    const pages = 2 ** (9 * ((mid >>> SIZE_SHIFT) & 3));
    return first < start + span && start < first + pages;
  }

  /** Call `cb` for each entry, in slot order (allocates; for the oracle and tests). */
  forEach(cb: (entry: VtdIotlbEntry) => void): void {
    const tags = this.tags;
    for (let i = 0; i < this.capacity; i++) {
      const t = i * STRIDE;
      const m = tags[t + 1] as number;
      if (m === 0) continue;
      cb({
        index: i,
        did: m >>> DID_SHIFT,
        pasid: tags[t + 2] as number,
        vpn: (m & VPN_HI_MASK) * TWO32 + ((tags[t] as number) >>> 0),
        sizeShift: this.sizeShiftOf(i),
        kind: this.kindOf(i),
        paFrame: this.data[2 * i] as number,
        perm: this.permOf(i),
        stamp: this.data[2 * i + 1] as number,
      });
    }
  }

  /** Every entry, in slot order (allocates). */
  entries(): VtdIotlbEntry[] {
    const out: VtdIotlbEntry[] = [];
    this.forEach((e) => {
      out.push(e);
    });
    return out;
  }
}
