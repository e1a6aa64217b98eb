// The x86-style radix page-table engine: 4 KiB tables of 512 little-endian 64-bit entries, a
// 2 MiB leaf at level 2 or a 1 GiB leaf at level 3 marked by PS (bit 7), and the next-table or page
// address in bits 51:12. The mock format and both VT-d formats (second stage, x86-64 first stage)
// are this engine with their own entry bits (`RadixFormat`): which bits make an entry present and
// which bits Linux writes in table entries and leaves.

import { bug } from "../platform/bug.js";
import type { FrameAllocator } from "../platform/frame-allocator.js";
import type { PhysMemory } from "../platform/phys-memory.js";
import {
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuFlushOps,
  type IoPgtable,
  type IoPgtableCfg,
} from "./io-pgtable.js";
import type { IommuIotlbGather } from "./iotlb-gather.js";

/** PS: a leaf above level 1. */
const PS = 1 << 7;
/** Address bits 31:12 of an entry's low half and 51:32 of its high half. */
const ADDR_LO = 0xfffff000 | 0;
const ADDR_HI = 0x000fffff;
/** The entry bits every radix format shares: PS and the address (for layout checks). */
export const RADIX_PTE_PS = PS;
export const RADIX_PTE_ADDR_LO = ADDR_LO;
export const RADIX_PTE_ADDR_HI = ADDR_HI;

const SZ_4K = 0x1000;
const SZ_2M = 0x20_0000;
const SZ_1G = 0x4000_0000;
/** 2^39: the span of one level-4 entry. */
const SZ_512G = 549755813888;
const TWO32 = 4294967296;
const TWO31 = 2147483648;
/** 2^20: the weight of an entry's high half in a frame number. */
const TWO20 = 1048576;
// Multiplying by a power of two is exact, and cheaper than dividing by one.
const INV_4K = 1 / SZ_4K;
const INV_512G = 1 / SZ_512G;
const INV_TWO32 = 1 / TWO32;
const PTES_PER_TABLE = 512;
const PROT_RW = IOMMU_READ | IOMMU_WRITE;

/** Page sizes a radix table can map: 4 KiB, 2 MiB, 1 GiB. */
export const RADIX_PGSIZE_BITMAP = SZ_4K | SZ_2M | SZ_1G;

/** Bytes one entry maps at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB). */
const LEVEL_SIZE = [0, SZ_4K, SZ_2M, SZ_1G];
/** Low-half ADDR mask of a leaf at `level`: the page's own offset bits (and PAT) are not in it. */
const LEAF_ADDR_LO = [0, ADDR_LO, ADDR_LO & ~(SZ_2M - 1), ADDR_LO & ~(SZ_1G - 1)];

// Results of the internal runs: a page count when >= 0.
const RUN_EEXIST = -1;
const RUN_ENOMEM = -2;

/** The errnos `mapPages` returns. */
export type RadixMapErrno = "EINVAL" | "ERANGE" | "EEXIST" | "ENOMEM";

/**
 * What distinguishes one radix format from another, as the numbers the engine needs. The bits are
 * low-half masks; no format sets a bit of the high half besides the address.
 */
export interface RadixFormat {
  /** Walk depth, 3 to 5. */
  readonly levels: number;
  /** Input address bits the table covers (at most 12 + 9 * levels). */
  readonly ias: number;
  /** Output address bits, 12..52. */
  readonly oas: number;
  /** Page sizes offered: 4 KiB plus any of 2 MiB and 1 GiB. */
  readonly pgsizeBitmap: number;
  /** An entry is present when any of these bits is set (second stage: R|W; first stage: P). */
  readonly presentMask: number;
  /** Bits of a table entry besides the address. */
  readonly tableBits: number;
  /** Bits of every leaf (besides R/W-dependent ones and PS). */
  readonly leafBits: number;
  /** Bits a leaf gets for IOMMU_READ. */
  readonly leafReadBits: number;
  /** Bits a leaf gets for IOMMU_WRITE. */
  readonly leafWriteBits: number;
  /** Bits a leaf gets for IOMMU_NOEXEC (0: the format has no execute control). */
  readonly leafNoExecBits?: number;
  /** Bits a leaf gets for IOMMU_PRIV (0: the format has no privilege control). */
  readonly leafPrivBits?: number;
}

/** Index at `level` of the IOVA whose pieces are `vpnHi` (bits 39..56), `vpnLo` (bits 12..38). */
function indexAt(vpnHi: number, vpnLo: number, level: number): number {
  return level <= 3 ? (vpnLo >>> (9 * (level - 1))) & 511 : (vpnHi >>> (9 * (level - 4))) & 511;
}

function iovaOf(vpnHi: number, vpnLo: number): number {
  return vpnHi * SZ_512G + vpnLo * SZ_4K;
}

/** Frame number in the ADDR field of `hi:lo`; an int32 while the frame lies below 2^43. */
function pteFrame(lo: number, hi: number): number {
  return hi === 0 ? lo >>> 12 : (hi & ADDR_HI) * TWO20 + (lo >>> 12);
}

/** The table index of `iova` (exact up to 2^57) at `level`. */
export function radixLevelIndex(iova: number, level: number): number {
  if (level <= 3) return (((iova * INV_4K) & 0x7ff_ffff) >>> (9 * (level - 1))) & 511;
  return (((iova * INV_512G) & 0x3ffff) >>> (9 * (level - 4))) & 511;
}

function leafLevelOf(pgsize: number): number {
  return pgsize === SZ_4K ? 1 : pgsize === SZ_2M ? 2 : pgsize === SZ_1G ? 3 : 0;
}

/**
 * The radix-table engine (see the file header): map, unmap, lookup and free over tables in
 * simulated physical memory, with the entry bits a `RadixFormat` gives. Formats subclass it
 * (`MockPgtable`, and VT-d's `VtdSsPgtable` and `VtdFsPgtable`).
 *
 * Update rules, so that the hardware sampling memory between any two stores sees only a legal
 * table: every entry is written with one `write64`; a new path of tables is built and filled while
 * unreachable and linked by one store at the end; a table is freed only after the entry pointing
 * at it was cleared and `tlbFlushWalk` was called for its range.
 *
 * Tables are created on demand and not freed when their last leaf goes (the kernel keeps them
 * until the domain dies, or until a superpage or a covering unmap replaces them). They go back to
 * the allocator when a leaf of their parent's size replaces them (map of a superpage over an empty
 * table, as `switch_to_super_page` does), when an unmap of that size covers them, and in `free()`.
 *
 * Inside the class an IOVA travels as two int32 pieces, vpnHi (IOVA bits 39..56: the level 4 and 5
 * indices) and vpnLo (bits 12..38: levels 1 to 3), and a table as its frame number: a double
 * passed to a call that is not inlined would be boxed, an allocation per page.
 *
 * @kernel drivers/iommu/generic_pt/iommu_pt.h
 */
export class RadixPgtable implements IoPgtable {
  readonly cfg: IoPgtableCfg;
  readonly rootPa: number;
  readonly levels: number;
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;
  private readonly tlb: IommuFlushOps | null;
  private readonly rootFrame: number;
  /**
   * Where the fast paths' direct reads start (see `PhysMemory.wordsOf`): `rootPa` while the root
   * lies below 2^31 and every table below 4 GiB (so that a table entry's high half is zero), until
   * `free()`. Otherwise -1, which `wordsOf` refuses, so that they take the checked path. An int32.
   */
  private rootWalk: number;
  /** IOVA shift of the root's index above 4 KiB: 9 * (levels - 1). */
  private readonly rootShift: number;
  private readonly pgsizeBitmap: number;
  private readonly iasLimit: number;
  private readonly oasLimit: number;
  /** Every table frame lies below 4 GiB, so a table entry's high half is zero. */
  private readonly tablesLow: boolean;
  private readonly presentMask: number;
  /** presentMask | PS: `((lo & presentPs) - 1) >>> 0 < presentMask` iff `lo` is a table entry. */
  private readonly presentPs: number;
  private readonly tableBits: number;
  /** Leaf bits for every prot (a subclass may change them before the first map). */
  protected leafBits: number;
  private readonly leafReadBits: number;
  private readonly leafWriteBits: number;
  private readonly leafNoExecBits: number;
  private readonly leafPrivBits: number;
  private mappedBytes = 0;
  private freed = false;
  /** Frames of the tables a map builds before linking them, by level (reused, no allocation). */
  private readonly building = new Float64Array(6);

  /**
   * Build an empty table of `format`; allocates the root frame. Invalid options, or no frame for
   * the root, are bugs of the caller's setup (the formats' `alloc` returns `'ENOMEM'` instead).
   */
  constructor(
    mem: PhysMemory,
    frames: FrameAllocator,
    tlb: IommuFlushOps | null,
    format: RadixFormat,
  ) {
    const { levels, ias, oas, pgsizeBitmap } = format;
    if (levels !== 3 && levels !== 4 && levels !== 5) bug(`radix page table: ${levels} levels`);
    if (!Number.isInteger(ias) || ias < 30 || ias > 12 + 9 * levels)
      bug(`radix page table: ias ${ias}`);
    if (pgsizeBitmap === 0 || (pgsizeBitmap & ~RADIX_PGSIZE_BITMAP) !== 0) {
      bug(`radix page table: pgsizeBitmap 0x${pgsizeBitmap.toString(16)}`);
    }
    if (!Number.isInteger(oas) || oas < 12 || oas > 52) bug(`radix page table: oas ${oas}`);
    if (frames.mem !== mem) bug("radix page table: the frame allocator manages another PhysMemory");
    const root = frames.alloc(0);
    if (typeof root !== "number") bug(`radix page table: no frame for the root (${root})`);
    this.cfg = Object.freeze({ pgsizeBitmap, ias, oas, coherentWalk: true, tlb });
    this.rootPa = root;
    this.rootFrame = root / SZ_4K;
    this.rootShift = 9 * (levels - 1);
    this.levels = levels;
    this.mem = mem;
    this.frames = frames;
    this.tlb = tlb;
    this.pgsizeBitmap = pgsizeBitmap;
    this.iasLimit = 2 ** ias;
    this.oasLimit = 2 ** oas;
    this.tablesLow = frames.basePa + frames.frameCount * SZ_4K <= TWO32;
    this.rootWalk = root < TWO31 && this.tablesLow ? root : -1;
    this.presentMask = format.presentMask | 0;
    this.presentPs = format.presentMask | PS | 0;
    this.tableBits = format.tableBits | 0;
    this.leafBits = format.leafBits | 0;
    this.leafReadBits = format.leafReadBits | 0;
    this.leafWriteBits = format.leafWriteBits | 0;
    this.leafNoExecBits = (format.leafNoExecBits ?? 0) | 0;
    this.leafPrivBits = (format.leafPrivBits ?? 0) | 0;
  }

  get mapped(): number {
    return this.mappedBytes;
  }

  /** Low-half bits of a leaf at `level` for `prot` (address not included). */
  private leafBitsFor(prot: number, level: number): number {
    return (
      this.leafBits |
      ((prot & IOMMU_READ) !== 0 ? this.leafReadBits : 0) |
      ((prot & IOMMU_WRITE) !== 0 ? this.leafWriteBits : 0) |
      ((prot & IOMMU_NOEXEC) !== 0 ? this.leafNoExecBits : 0) |
      ((prot & IOMMU_PRIV) !== 0 ? this.leafPrivBits : 0) |
      (level > 1 ? PS : 0)
    );
  }

  /**
   * Map `pgcount` pages of `pgsize` from `iova` to `pa`. Checks, in this order: `'EINVAL'` for a
   * size outside the bitmap, `pgcount` < 1, or a misaligned `iova`/`pa` (the alignment check
   * `__iommu_map` makes before calling a format); `'ERANGE'` when [iova, iova + size) passes
   * 2^ias or [pa, pa + size) passes 2^oas; `'EINVAL'` when `prot` has neither IOMMU_READ nor
   * IOMMU_WRITE (an entry without them would read as empty). Then page by page: `'EEXIST'` when
   * a leaf already maps any byte of the page; `'ENOMEM'` when a table cannot be allocated. An
   * empty table at a superpage's slot is replaced (its frames freed after `tlbFlushWalk`). On an
   * error `mapped` holds the bytes mapped before it, which stay mapped; the caller unmaps them.
   *
   * @kernel drivers/iommu/generic_pt/iommu_pt.h map_pages
   */
  mapPages(
    iova: number,
    pa: number,
    pgsize: number,
    pgcount: number,
    prot: number,
  ): 0 | RadixMapErrno {
    // The common case first: one page, as int32 pieces (IOVA bits 39..56 and 12..38, the PA's
    // halves) that equal the arguments only for 4 KiB-aligned integers in [0, 2^57) and integers
    // in [0, 2^52). Whatever `mapOne` does not vouch for takes the checked path, which gives every
    // errno. This entry stays small so that callers inline it (a double passed to a call that is
    // not inlined is boxed); `mapOne` takes int32s.
    const vpnHi = (iova * INV_512G) & 0x3ffff;
    const vpnLo = (iova * INV_4K) & 0x7ff_ffff;
    const paHi = (pa * INV_TWO32) & ADDR_HI;
    const paLo = pa | 0;
    if (
      pgcount === 1 &&
      iova === vpnHi * SZ_512G + vpnLo * SZ_4K &&
      pa === paHi * TWO32 + (paLo >>> 0) &&
      iova + pgsize <= this.iasLimit &&
      pa + pgsize <= this.oasLimit &&
      this.mapOne(vpnHi, vpnLo, paHi, paLo, pgsize, prot)
    ) {
      this.mappedBytes = pgsize;
      return 0;
    }
    return this.mapPagesChecked(iova, pa, pgsize, pgcount, prot);
  }

  /** `mapPages` with every check, for whatever its fast path leaves. */
  private mapPagesChecked(
    iova: number,
    pa: number,
    pgsize: number,
    pgcount: number,
    prot: number,
  ): 0 | RadixMapErrno {
    this.mappedBytes = 0;
    if (this.freed) bug("radix page table: mapPages after free()");
    const leafLevel = leafLevelOf(pgsize);
    if (leafLevel === 0 || (this.pgsizeBitmap & pgsize) === 0) return "EINVAL";
    if (!Number.isInteger(pgcount) || pgcount < 1) return "EINVAL";
    const m = pgsize - 1;
    if (!Number.isInteger(iova) || !Number.isInteger(pa) || iova < 0 || pa < 0) return "EINVAL";
    if (((iova & m) | (pa & m)) !== 0) return "EINVAL";
    const size = pgsize * pgcount;
    if (iova + size > this.iasLimit || pa + size > this.oasLimit) return "ERANGE";
    if ((prot & PROT_RW) === 0) return "EINVAL";
    const bits = this.leafBitsFor(prot, leafLevel);
    const pgHi = (iova * INV_512G) & 0x3ffff;
    const pgLo = (iova * INV_4K) & 0x7ff_ffff;
    return this.mapRuns(pgHi, pgLo, (pa * INV_TWO32) & ADDR_HI, pa | 0, leafLevel, pgcount, bits);
  }

  /** `mapPages` after its checks, one leaf table's run at a time. */
  private mapRuns(
    vpnHi: number,
    vpnLo: number,
    paHi: number,
    paLo: number,
    leafLevel: number,
    pgcount: number,
    bits: number,
  ): 0 | "EEXIST" | "ENOMEM" {
    const pgsize = LEVEL_SIZE[leafLevel];
    const iova = iovaOf(vpnHi, vpnLo);
    const pa = paHi * TWO32 + (paLo >>> 0);
    let done = 0;
    while (done < pgcount) {
      const va = iova + done * pgsize;
      const a = pa + done * pgsize;
      const n = this.mapRun(
        (va * INV_512G) & 0x3ffff,
        (va * INV_4K) & 0x7ff_ffff,
        (a * INV_TWO32) & ADDR_HI,
        a | 0,
        leafLevel,
        pgcount - done,
        bits,
      );
      if (n < 0) return n === RUN_EEXIST ? "EEXIST" : "ENOMEM";
      done += n;
    }
    return 0;
  }

  /**
   * The fast path of `mapPages`: one page of `pgsize` at the IOVA and PA whose pieces these are,
   * both within their limits. Maps it when the size, alignment and prot checks pass, its tables
   * all exist and its slot is empty; otherwise returns false, having changed nothing. The walk is
   * written out level by level, which is faster and keeps this method out of the inliner's reach.
   */
  private mapOne(
    vpnHi: number,
    vpnLo: number,
    paHi: number,
    paLo: number,
    pgsize: number,
    prot: number,
  ): boolean {
    const leafShift = pgsize === SZ_4K ? 0 : pgsize === SZ_2M ? 9 : pgsize === SZ_1G ? 18 : -1;
    if (leafShift < 0 || (this.pgsizeBitmap & pgsize) === 0) return false;
    if ((((vpnLo << 12) | paLo) & (pgsize - 1)) !== 0 || (prot & PROT_RW) === 0) return false;
    const mem = this.mem;
    const pres = this.presentMask;
    const presPs = this.presentPs;
    // Direct reads (see `PhysMemory.wordsOf`); anything they do not reach (a fault hook, a table
    // at or above 2^31, tables that may lie above 4 GiB, a freed table: see `rootWalk`), or a
    // table entry with a high half, is left to the checked path.
    let tpa = this.rootWalk | 0;
    let w: Uint32Array | undefined;
    let j = 0;
    let lo = 0;
    // Levels 5 and 4 index vpnHi.
    for (let sh = (this.rootShift | 0) - 27; sh >= 0; sh -= 9) {
      w = mem.wordsOf(tpa);
      if (w === undefined) return false;
      j = mem.wordIndex(tpa) + (((vpnHi >>> sh) & 511) << 1);
      lo = w[j];
      if (((lo & presPs) - 1) >>> 0 >= pres || w[j + 1] !== 0) return false;
      tpa = lo & ADDR_LO;
    }
    // Levels 3 to 1 written out, down to the leaf's.
    let idx = vpnLo >>> 18;
    if (leafShift < 18) {
      w = mem.wordsOf(tpa);
      if (w === undefined) return false;
      j = mem.wordIndex(tpa) + (idx << 1);
      lo = w[j];
      if (((lo & presPs) - 1) >>> 0 >= pres || w[j + 1] !== 0) return false;
      tpa = lo & ADDR_LO;
      idx = (vpnLo >>> 9) & 511;
      if (leafShift < 9) {
        w = mem.wordsOf(tpa);
        if (w === undefined) return false;
        j = mem.wordIndex(tpa) + (idx << 1);
        lo = w[j];
        if (((lo & presPs) - 1) >>> 0 >= pres || w[j + 1] !== 0) return false;
        tpa = lo & ADDR_LO;
        idx = vpnLo & 511;
      }
    }
    w = mem.wordsOf(tpa);
    if (w === undefined || (w[mem.wordIndex(tpa) + (idx << 1)] & pres) !== 0) return false;
    const bits =
      this.leafBits |
      ((prot & IOMMU_READ) !== 0 ? this.leafReadBits : 0) |
      ((prot & IOMMU_WRITE) !== 0 ? this.leafWriteBits : 0) |
      ((prot & IOMMU_NOEXEC) !== 0 ? this.leafNoExecBits : 0) |
      ((prot & IOMMU_PRIV) !== 0 ? this.leafPrivBits : 0) |
      (leafShift !== 0 ? PS : 0);
    mem.write64(tpa + idx * 8, (paLo & ADDR_LO) | bits, paHi);
    return true;
  }

  /** Map up to `count` pages that share one leaf table; returns the pages mapped or RUN_*. */
  private mapRun(
    vpnHi: number,
    vpnLo: number,
    paHi: number,
    paLo: number,
    leafLevel: number,
    count: number,
    bits: number,
  ): number {
    const mem = this.mem;
    let tfn = this.rootFrame;
    for (let lvl = this.levels; lvl > leafLevel; lvl--) {
      const idx = indexAt(vpnHi, vpnLo, lvl);
      const lo = mem.read64(tfn * SZ_4K + idx * 8);
      if ((lo & this.presentMask) === 0) {
        return this.mapNewPath(tfn, idx, lvl - 1, vpnHi, vpnLo, paHi, paLo, leafLevel, count, bits);
      }
      // A larger leaf already maps this page.
      if ((lo & PS) !== 0 && lvl <= 3) return RUN_EEXIST;
      tfn = pteFrame(lo, mem.hi);
    }
    return this.fillLeaves(tfn, vpnHi, vpnLo, paHi, paLo, leafLevel, count, bits);
  }

  /**
   * Entry `idx` of table `tfn` is empty: build the tables of levels `top`..`leafLevel`, fill them
   * while nothing points at them, then link the new path with one store.
   */
  private mapNewPath(
    tfn: number,
    idx: number,
    top: number,
    vpnHi: number,
    vpnLo: number,
    paHi: number,
    paLo: number,
    leafLevel: number,
    count: number,
    bits: number,
  ): number {
    const b = this.building;
    for (let lvl = top; lvl >= leafLevel; lvl--) {
      // FrameAllocator hands out zeroed frames: a new table is all empty entries.
      const f = this.frames.alloc(0);
      if (typeof f !== "number") {
        for (let l = top; l > lvl; l--) this.freeFrame(b[l]);
        return RUN_ENOMEM;
      }
      b[lvl] = f / SZ_4K;
    }
    for (let lvl = top; lvl > leafLevel; lvl--) {
      this.linkTable(b[lvl], indexAt(vpnHi, vpnLo, lvl), b[lvl - 1]);
    }
    const n = this.fillLeaves(b[leafLevel], vpnHi, vpnLo, paHi, paLo, leafLevel, count, bits);
    this.linkTable(tfn, idx, b[top]);
    return n;
  }

  /** Point entry `idx` of table `tfn` at the table `child` (frame numbers). */
  private linkTable(tfn: number, idx: number, child: number): void {
    const lo = (child << 12) | this.tableBits;
    this.mem.write64(tfn * SZ_4K + idx * 8, lo, (child / TWO20) & ADDR_HI);
  }

  /** Write up to `count` leaves into table `tfn`, up to its end; pages mapped or RUN_EEXIST. */
  private fillLeaves(
    tfn: number,
    vpnHi: number,
    vpnLo: number,
    paHi: number,
    paLo: number,
    leafLevel: number,
    count: number,
    bits: number,
  ): number {
    const mem = this.mem;
    const pres = this.presentMask;
    const pgsize = LEVEL_SIZE[leafLevel];
    const idx0 = indexAt(vpnHi, vpnLo, leafLevel);
    const n = Math.min(count, PTES_PER_TABLE - idx0);
    const base = tfn * SZ_4K + idx0 * 8;
    const pa0 = paHi * TWO32 + (paLo >>> 0);
    for (let k = 0; k < n; k++) {
      const epa = base + k * 8;
      const a = pa0 + k * pgsize;
      const old = mem.read64(epa);
      if ((old & pres) !== 0) {
        if (leafLevel === 1 || (old & PS) !== 0) return RUN_EEXIST;
        const sub = pteFrame(old, mem.hi);
        if (this.hasLeaf(sub, leafLevel - 1)) return RUN_EEXIST;
        // An empty table where the superpage goes: swap it for the leaf in one store, then drop
        // any walk cached through it before its frames can be reused.
        mem.write64(epa, (a & ADDR_LO) | bits, (a * INV_TWO32) & ADDR_HI);
        this.tlb?.tlbFlushWalk(iovaOf(vpnHi, vpnLo) + k * pgsize, pgsize, SZ_4K);
        this.freeTable(sub, leafLevel - 1);
      } else {
        mem.write64(epa, (a & ADDR_LO) | bits, (a * INV_TWO32) & ADDR_HI);
      }
      this.mappedBytes += pgsize;
    }
    return n;
  }

  /**
   * Unmap up to `pgcount` pages of `pgsize` from `iova`; returns the bytes unmapped. Stops at the
   * first page that is not mapped by exactly one leaf of `pgsize` or by a table at its slot: at a
   * hole (an empty entry, or a table with no leaf under it), and at a larger leaf, which it leaves
   * whole and returns 0 for (the generic_pt behaviour; the older intel driver unmapped the whole
   * superpage instead). A table with leaves at a `pgsize` slot is cleared as one unit, its walk
   * flushed and its frames freed at once (`domain_unmap` frees the tables a range covers). Each
   * cleared entry goes to `cfg.tlb.tlbAddPage(gather, iova, pgsize)` unless `gather` is null or
   * queued.
   *
   * Returns 0 for a size outside the bitmap, `pgcount` < 1, a misaligned `iova`, or `iova` at or
   * beyond 2^ias; the range is cut at 2^ias.
   *
   * @kernel drivers/iommu/generic_pt/iommu_pt.h unmap_pages
   */
  unmapPages(
    iova: number,
    pgsize: number,
    pgcount: number,
    gather: IommuIotlbGather | null,
  ): number {
    // The common case first, as in `mapPages`: one leaf of `pgsize`, no gather.
    const vpnHi = (iova * INV_512G) & 0x3ffff;
    const vpnLo = (iova * INV_4K) & 0x7ff_ffff;
    if (
      pgcount === 1 &&
      gather === null &&
      iova === vpnHi * SZ_512G + vpnLo * SZ_4K &&
      iova < this.iasLimit &&
      this.unmapOne(vpnHi, vpnLo, pgsize)
    ) {
      return pgsize;
    }
    return this.unmapPagesChecked(iova, pgsize, pgcount, gather);
  }

  /** `unmapPages` with every check, for whatever its fast path leaves. */
  private unmapPagesChecked(
    iova: number,
    pgsize: number,
    pgcount: number,
    gather: IommuIotlbGather | null,
  ): number {
    if (this.freed) bug("radix page table: unmapPages after free()");
    const leafLevel = leafLevelOf(pgsize);
    if (leafLevel === 0 || (this.pgsizeBitmap & pgsize) === 0) return 0;
    if (!Number.isInteger(pgcount) || pgcount < 1) return 0;
    if (!Number.isInteger(iova) || iova < 0 || (iova & (pgsize - 1)) !== 0) return 0;
    if (iova >= this.iasLimit) return 0;
    const count = Math.min(pgcount, (this.iasLimit - iova) / pgsize);
    const vpnHi = (iova * INV_512G) & 0x3ffff;
    const vpnLo = (iova * INV_4K) & 0x7ff_ffff;
    return this.unmapRuns(vpnHi, vpnLo, leafLevel, count, gather) * pgsize;
  }

  /** `unmapPages` after its checks, one leaf table's run at a time; returns the pages unmapped. */
  private unmapRuns(
    vpnHi: number,
    vpnLo: number,
    leafLevel: number,
    count: number,
    gather: IommuIotlbGather | null,
  ): number {
    const pgsize = LEVEL_SIZE[leafLevel];
    const iova = iovaOf(vpnHi, vpnLo);
    let done = 0;
    while (done < count) {
      const va = iova + done * pgsize;
      const hi = (va * INV_512G) & 0x3ffff;
      const lo = (va * INV_4K) & 0x7ff_ffff;
      const want = Math.min(count - done, PTES_PER_TABLE - indexAt(hi, lo, leafLevel));
      const n = this.unmapRun(hi, lo, leafLevel, want, gather);
      done += n;
      if (n < want) break;
    }
    return done;
  }

  /**
   * The fast path of `unmapPages`: clears the entry of one page of `pgsize` at the IOVA (below
   * 2^ias) whose pieces these are, when the size and alignment checks pass and it is a leaf of
   * that size under existing tables; otherwise returns false, having changed nothing.
   */
  private unmapOne(vpnHi: number, vpnLo: number, pgsize: number): boolean {
    const leafShift = pgsize === SZ_4K ? 0 : pgsize === SZ_2M ? 9 : pgsize === SZ_1G ? 18 : -1;
    if (leafShift < 0 || (this.pgsizeBitmap & pgsize) === 0) return false;
    if (((vpnLo << 12) & (pgsize - 1)) !== 0) return false;
    const mem = this.mem;
    const pres = this.presentMask;
    const presPs = this.presentPs;
    let tpa = this.rootWalk | 0;
    let w: Uint32Array | undefined;
    let j = 0;
    let lo = 0;
    for (let sh = (this.rootShift | 0) - 27; sh >= 0; sh -= 9) {
      w = mem.wordsOf(tpa);
      if (w === undefined) return false;
      j = mem.wordIndex(tpa) + (((vpnHi >>> sh) & 511) << 1);
      lo = w[j];
      if (((lo & presPs) - 1) >>> 0 >= pres || w[j + 1] !== 0) return false;
      tpa = lo & ADDR_LO;
    }
    let idx = vpnLo >>> 18;
    if (leafShift < 18) {
      w = mem.wordsOf(tpa);
      if (w === undefined) return false;
      j = mem.wordIndex(tpa) + (idx << 1);
      lo = w[j];
      if (((lo & presPs) - 1) >>> 0 >= pres || w[j + 1] !== 0) return false;
      tpa = lo & ADDR_LO;
      idx = (vpnLo >>> 9) & 511;
      if (leafShift < 9) {
        w = mem.wordsOf(tpa);
        if (w === undefined) return false;
        j = mem.wordIndex(tpa) + (idx << 1);
        lo = w[j];
        if (((lo & presPs) - 1) >>> 0 >= pres || w[j + 1] !== 0) return false;
        tpa = lo & ADDR_LO;
        idx = vpnLo & 511;
      }
    }
    w = mem.wordsOf(tpa);
    if (w === undefined) return false;
    lo = w[mem.wordIndex(tpa) + (idx << 1)];
    if ((lo & pres) === 0 || (leafShift !== 0 && (lo & PS) === 0)) return false;
    mem.write64(tpa + idx * 8, 0, 0);
    return true;
  }

  /** Clear up to `count` entries of one leaf table; returns how many it cleared. */
  private unmapRun(
    vpnHi: number,
    vpnLo: number,
    leafLevel: number,
    count: number,
    gather: IommuIotlbGather | null,
  ): number {
    const mem = this.mem;
    const pres = this.presentMask;
    let tfn = this.rootFrame;
    for (let lvl = this.levels; lvl > leafLevel; lvl--) {
      const lo = mem.read64(tfn * SZ_4K + indexAt(vpnHi, vpnLo, lvl) * 8);
      // A hole, or a larger leaf that this unmap would only cut a piece out of.
      if ((lo & pres) === 0 || ((lo & PS) !== 0 && lvl <= 3)) return 0;
      tfn = pteFrame(lo, mem.hi);
    }
    const tlb = this.tlb;
    const addPages = tlb !== null && gather !== null && !gather.queued;
    const pgsize = LEVEL_SIZE[leafLevel];
    const base = tfn * SZ_4K + indexAt(vpnHi, vpnLo, leafLevel) * 8;
    for (let k = 0; k < count; k++) {
      const epa = base + k * 8;
      const lo = mem.read64(epa);
      if ((lo & pres) === 0) return k;
      if (leafLevel === 1 || (lo & PS) !== 0) {
        mem.write64(epa, 0, 0);
      } else {
        const sub = pteFrame(lo, mem.hi);
        if (!this.hasLeaf(sub, leafLevel - 1)) return k;
        mem.write64(epa, 0, 0);
        tlb?.tlbFlushWalk(iovaOf(vpnHi, vpnLo) + k * pgsize, pgsize, SZ_4K);
        this.freeTable(sub, leafLevel - 1);
      }
      if (addPages) tlb.tlbAddPage(gather, iovaOf(vpnHi, vpnLo) + k * pgsize, pgsize);
    }
    return count;
  }

  /**
   * The physical address `iova` maps to, or -1 (outside 2^ias or not mapped; the kernel returns
   * 0). Exact for any integer `iova` below 2^53 and for page-aligned ones above. Reads the table
   * as the hardware would, without the permission, reserved-bit and HAW checks of a real walk.
   *
   * @kernel drivers/iommu/generic_pt/iommu_pt.h iova_to_phys
   */
  iovaToPhys(iova: number): number {
    if (!(iova >= 0 && iova < this.iasLimit)) return -1;
    const mem = this.mem;
    const pres = this.presentMask;
    const presPs = this.presentPs;
    const vpnHi = (iova * INV_512G) & 0x3ffff;
    const vpnLo = (iova * INV_4K) & 0x7ff_ffff;
    // Direct reads (see `PhysMemory.wordsOf`); whatever they do not reach is walked again on the
    // checked path, which is invisible since reads without a hook have no side effect. Kept in
    // one loop so that callers can inline this method. The level travels as the shift of its
    // index in the VPN (27 and 36 index vpnHi); `| 0` keeps the loop's variables int32.
    let tpa = this.rootWalk | 0;
    let sh = this.rootShift | 0;
    let w: Uint32Array | undefined;
    let j = 0;
    let lo = 0;
    for (;;) {
      w = mem.wordsOf(tpa);
      if (w === undefined) return this.iovaToPhysChecked(iova);
      j = mem.wordIndex(tpa) + (((sh > 18 ? vpnHi >>> (sh - 27) : vpnLo >>> sh) & 511) << 1);
      lo = w[j];
      if (((lo & presPs) - 1) >>> 0 >= pres || sh === 0) {
        if ((lo & pres) === 0) return -1;
        // PS is reserved at levels 4 and 5; like the checked walk, this reads past it.
        if (sh <= 18) break;
      }
      tpa = lo & ADDR_LO;
      sh -= 9;
    }
    const off = (SZ_4K << sh) - 1;
    return (w[j + 1] & ADDR_HI) * TWO32 + ((lo & ADDR_LO & ~off) >>> 0) + (iova & off);
  }

  /** `iovaToPhys` through `PhysMemory.read64`, for whatever its direct reads leave alone. */
  private iovaToPhysChecked(iova: number): number {
    if (this.freed) return -1;
    const mem = this.mem;
    const pres = this.presentMask;
    const low = this.tablesLow;
    let tpa = this.rootPa;
    let lvl = this.levels;
    let lo = 0;
    if (lvl > 3) {
      const vpnHi = (iova / SZ_512G) & 0x3ffff;
      do {
        lo = mem.read64(tpa + ((vpnHi >>> (9 * (lvl - 4))) & 511) * 8);
        if ((lo & pres) === 0) return -1;
        tpa = low ? (lo & ADDR_LO) >>> 0 : pteFrame(lo, mem.hi) * SZ_4K;
      } while (--lvl > 3);
    }
    const vpnLo = (iova / SZ_4K) & 0x7ff_ffff;
    for (;;) {
      lo = mem.read64(tpa + ((vpnLo >>> (9 * (lvl - 1))) & 511) * 8);
      if ((lo & pres) === 0) return -1;
      if (lvl === 1 || (lo & PS) !== 0) break;
      tpa = low ? (lo & ADDR_LO) >>> 0 : pteFrame(lo, mem.hi) * SZ_4K;
      lvl--;
    }
    const off = LEVEL_SIZE[lvl] - 1;
    return (mem.hi & ADDR_HI) * TWO32 + ((lo & LEAF_ADDR_LO[lvl]) >>> 0) + (iova & off);
  }

  /**
   * The leaf mapping `iova` as the hardware would find it (its halves and level: 1 for 4 KiB, 2
   * for 2 MiB, 3 for 1 GiB), or null. For tests and decoders: it allocates its answer.
   */
  leafEntry(iova: number): { lo: number; hi: number; level: number } | null {
    if (this.freed || !(iova >= 0 && iova < this.iasLimit)) return null;
    const mem = this.mem;
    let tpa = this.rootPa;
    for (let level = this.levels; level >= 1; level--) {
      const lo = mem.read64(tpa + radixLevelIndex(iova, level) * 8);
      const hi = mem.hi;
      if ((lo & this.presentMask) === 0) return null;
      if (level === 1 || ((lo & PS) !== 0 && level <= 3)) return { lo, hi, level };
      tpa = pteFrame(lo, hi) * SZ_4K;
    }
    return null;
  }

  /**
   * Give every table frame back to the allocator (the mapped pages are not the table's). The
   * instance is dead afterwards: map and unmap are bugs, lookups return -1.
   *
   * @kernel drivers/iommu/generic_pt/iommu_pt.h deinit
   */
  free(): void {
    if (this.freed) bug("radix page table: free() twice");
    this.freeTable(this.rootFrame, this.levels);
    this.freed = true;
    this.rootWalk = -1;
  }

  /** Whether any leaf is present in table `tfn` (of `level`) or below it. */
  private hasLeaf(tfn: number, level: number): boolean {
    const mem = this.mem;
    for (let i = 0; i < PTES_PER_TABLE; i++) {
      const lo = mem.read64(tfn * SZ_4K + i * 8);
      if ((lo & this.presentMask) === 0) continue;
      if (level === 1 || (lo & PS) !== 0) return true;
      if (this.hasLeaf(pteFrame(lo, mem.hi), level - 1)) return true;
    }
    return false;
  }

  /** Free table `tfn` (of `level`) and every table below it. */
  private freeTable(tfn: number, level: number): void {
    if (level > 1) {
      const mem = this.mem;
      for (let i = 0; i < PTES_PER_TABLE; i++) {
        const lo = mem.read64(tfn * SZ_4K + i * 8);
        if ((lo & this.presentMask) === 0 || ((lo & PS) !== 0 && level <= 3)) continue;
        this.freeTable(pteFrame(lo, mem.hi), level - 1);
      }
    }
    this.freeFrame(tfn);
  }

  private freeFrame(tfn: number): void {
    const rc = this.frames.free(tfn * SZ_4K, 0);
    if (rc !== 0)
      bug(`radix page table: freeing table frame 0x${(tfn * SZ_4K).toString(16)}: ${rc}`);
  }
}
