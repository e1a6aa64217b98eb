// The mock format: the mock IOMMU's 3/4/5-level radix page table in simulated physical memory.
//
// The mock format (ours; no hardware defines it). A table is one 4 KiB frame of 512 little-endian
// 64-bit entries. The walk starts at the root table at level `levels` (3, 4 or 5) and goes down to
// level 1; the index at level L is IOVA bits [12 + 9L - 1 : 12 + 9(L - 1)], so the input address
// space is 39, 48 or 57 bits.
//
//   bit  0     P     present; an entry without P is empty and all its other bits are ignored
//   bit  1     R     reads allowed (leaf); set in every table entry
//   bit  2     W     writes allowed (leaf); set in every table entry
//   bit  3     NX    instruction fetches forbidden (leaf; IOMMU_NOEXEC)
//   bit  4     PRIV  only privileged requests allowed (leaf; IOMMU_PRIV)
//   bit  7     PS    leaf above level 1: a 2 MiB page at level 2, a 1 GiB page at level 3
//   bits 12-51 ADDR  physical address of the next table or of the page
//   bits 5, 6, 8-11, 52-63: reserved, zero
//
// A table entry is P|R|W|ADDR. At level 1 every present entry is a 4 KiB leaf (PS reserved); at
// levels 4 and 5 PS is reserved; a PS leaf's ADDR bits below its size are reserved. A walker
// checks R/W/NX/PRIV at the leaf only (table entries grant everything) and treats a present entry
// with a reserved bit set as malformed (`mockPteDecode` returns MOCK_PTE_BAD). These are the
// P/R/W/PS/ADDR bits of ../shared/bench-c/pgtable.h, so the benchmark does the C baseline's work.

import {
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuFlushOps,
  type IoPgtable,
  type IoPgtableCfg,
} from "../iommu/io-pgtable.js";
import type { IommuIotlbGather } from "../iommu/iotlb-gather.js";
import { bug } from "../platform/bug.js";
import type { FrameAllocator } from "../platform/frame-allocator.js";
import type { PhysMemory } from "../platform/phys-memory.js";

/** One field of the mock PTE: bits [lsb, lsb + width) of the 64-bit entry. */
export interface MockPteField {
  readonly name: "P" | "R" | "W" | "NX" | "PRIV" | "PS" | "ADDR";
  readonly lsb: number;
  readonly width: number;
  readonly doc: string;
}

/** The mock PTE layout, declared once; every constant below is derived from it. */
export const MOCK_PTE_LAYOUT: readonly MockPteField[] = Object.freeze([
  Object.freeze({ name: "P", lsb: 0, width: 1, doc: "present" } as const),
  Object.freeze({
    name: "R",
    lsb: 1,
    width: 1,
    doc: "reads allowed; set in table entries",
  } as const),
  Object.freeze({
    name: "W",
    lsb: 2,
    width: 1,
    doc: "writes allowed; set in table entries",
  } as const),
  Object.freeze({ name: "NX", lsb: 3, width: 1, doc: "instruction fetches forbidden" } as const),
  Object.freeze({ name: "PRIV", lsb: 4, width: 1, doc: "privileged requests only" } as const),
  Object.freeze({ name: "PS", lsb: 7, width: 1, doc: "leaf at level 2 or 3" } as const),
  Object.freeze({ name: "ADDR", lsb: 12, width: 40, doc: "next table or page address" } as const),
]);

function field(name: MockPteField["name"]): MockPteField {
  const f = MOCK_PTE_LAYOUT.find((x) => x.name === name);
  if (f === undefined) bug(`mock PTE layout has no field ${name}`);
  return f;
}

/** Mask of the bits of `f` that fall in the half starting at bit `base` (0: low, 32: high). */
function halfMask(f: MockPteField, base: number): number {
  let m = 0;
  for (let b = Math.max(f.lsb, base); b < Math.min(f.lsb + f.width, base + 32); b++) {
    m |= 1 << (b - base);
  }
  return m;
}

// Code below uses the module-private names: optimised code reads an exported binding through its
// cell, with a not-yet-initialised check, at every use, while a private const becomes an immediate.
const PTE_P = halfMask(field("P"), 0);
const PTE_R = halfMask(field("R"), 0);
const PTE_W = halfMask(field("W"), 0);
const PTE_NX = halfMask(field("NX"), 0);
const PTE_PRIV = halfMask(field("PRIV"), 0);
const PTE_PS = halfMask(field("PS"), 0);
const PTE_ADDR_LO = halfMask(field("ADDR"), 0);
const PTE_ADDR_HI = halfMask(field("ADDR"), 32);
const PTE_RES_LO = ~layoutMask(0);
const PTE_RES_HI = ~layoutMask(32);

export const MOCK_PTE_P = PTE_P;
export const MOCK_PTE_R = PTE_R;
export const MOCK_PTE_W = PTE_W;
export const MOCK_PTE_NX = PTE_NX;
export const MOCK_PTE_PRIV = PTE_PRIV;
export const MOCK_PTE_PS = PTE_PS;
/** ADDR bits in the low half (bits 12..31; an int32, so negative). */
export const MOCK_PTE_ADDR_LO = PTE_ADDR_LO;
/** ADDR bits in the high half (entry bits 32..51). */
export const MOCK_PTE_ADDR_HI = PTE_ADDR_HI;
/** Reserved bits of the low half (5, 6, 8..11). */
export const MOCK_PTE_RES_LO = PTE_RES_LO;
/** Reserved bits of the high half (entry bits 52..63). */
export const MOCK_PTE_RES_HI = PTE_RES_HI;

function layoutMask(base: number): number {
  let m = 0;
  for (const f of MOCK_PTE_LAYOUT) m |= halfMask(f, base);
  return m;
}

/** What a walker makes of an entry (`mockPteDecode`). */
export const MOCK_PTE_NONE = 0;
export const MOCK_PTE_TABLE = 1;
export const MOCK_PTE_LEAF = 2;
/** Present but malformed: a reserved bit set, PS where it is reserved, a misaligned block. */
export const MOCK_PTE_BAD = 3;
export type MockPteKind =
  | typeof MOCK_PTE_NONE
  | typeof MOCK_PTE_TABLE
  | typeof MOCK_PTE_LEAF
  | typeof MOCK_PTE_BAD;

const SZ_4K = 0x1000;
const SZ_2M = 0x20_0000;
const SZ_1G = 0x4000_0000;
/** 2^39: the span of one level-4 entry. */
const SZ_512G = 549755813888;
const TWO32 = 4294967296;
const TWO31 = 2147483648;
// Multiplying by a power of two is exact, and cheaper than dividing by one.
const INV_4K = 1 / SZ_4K;
const INV_512G = 1 / SZ_512G;
const INV_TWO32 = 1 / TWO32;
const PTES_PER_TABLE = 512;

/** The page sizes the mock format can map: 4 KiB, 2 MiB and 1 GiB. */
export const MOCK_PGSIZE_BITMAP = SZ_4K | SZ_2M | SZ_1G;

/** Bytes one entry maps at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB). */
const LEVEL_SIZE = [0, SZ_4K, SZ_2M, SZ_1G];
/** Low-half ADDR mask of a leaf at `level`: the block's own address bits are not part of it. */
const LEAF_ADDR_LO = [0, PTE_ADDR_LO, PTE_ADDR_LO & ~(SZ_2M - 1), PTE_ADDR_LO & ~(SZ_1G - 1)];

/**
 * Index of `iova` in a table at `level` (1..5). Exact for any IOVA below 2^57: the low three
 * levels come from IOVA bits 12..38 and the top two from bits 39..56, each piece an int32.
 */
export function mockLevelIndex(iova: number, level: number): number {
  if (level <= 3) return (((iova / SZ_4K) & 0x7ff_ffff) >>> (9 * (level - 1))) & 511;
  return (((iova / SZ_512G) & 0x3ffff) >>> (9 * (level - 4))) & 511;
}

/**
 * Classify the entry `hi:lo` found at `level` (1..5) the way the mock hardware does: empty,
 * table, leaf, or malformed. No allocation; the hardware reads the entry with `PhysMemory.read64`.
 */
export function mockPteDecode(lo: number, hi: number, level: number): MockPteKind {
  if ((lo & PTE_P) === 0) return MOCK_PTE_NONE;
  if ((lo & PTE_RES_LO) !== 0 || (hi & PTE_RES_HI) !== 0) return MOCK_PTE_BAD;
  const ps = (lo & PTE_PS) !== 0;
  if (level === 1) return ps ? MOCK_PTE_BAD : MOCK_PTE_LEAF;
  if (level > 3) return ps ? MOCK_PTE_BAD : MOCK_PTE_TABLE;
  if (!ps) return MOCK_PTE_TABLE;
  return (lo & PTE_ADDR_LO & ~LEAF_ADDR_LO[level]) === 0 ? MOCK_PTE_LEAF : MOCK_PTE_BAD;
}

/** The ADDR field of `hi:lo` as a physical address (next table, or the page of a 4 KiB leaf). */
export function mockPteAddr(lo: number, hi: number): number {
  return (hi & PTE_ADDR_HI) * TWO32 + ((lo & PTE_ADDR_LO) >>> 0);
}

/** The IOMMU_READ/WRITE/NOEXEC/PRIV bits a leaf grants. */
export function mockPteProt(lo: number): number {
  return (
    ((lo & PTE_R) !== 0 ? IOMMU_READ : 0) |
    ((lo & PTE_W) !== 0 ? IOMMU_WRITE : 0) |
    ((lo & PTE_NX) !== 0 ? IOMMU_NOEXEC : 0) |
    ((lo & PTE_PRIV) !== 0 ? IOMMU_PRIV : 0)
  );
}

/** Low half of a leaf entry for page `pa` with `prot` at `level`. */
export function mockPteLeafLo(pa: number, prot: number, level: number): number {
  return (pa & PTE_ADDR_LO) | leafBits(prot, level);
}

/** Low half of a table entry pointing at the table `pa`. */
export function mockPteTableLo(pa: number): number {
  return (pa & PTE_ADDR_LO) | PTE_P | PTE_R | PTE_W;
}

/** High half of any entry holding the address `pa`. */
export function mockPteHi(pa: number): number {
  return (pa / TWO32) & PTE_ADDR_HI;
}

function leafBits(prot: number, level: number): number {
  return (
    PTE_P |
    ((prot & IOMMU_READ) !== 0 ? PTE_R : 0) |
    ((prot & IOMMU_WRITE) !== 0 ? PTE_W : 0) |
    ((prot & IOMMU_NOEXEC) !== 0 ? PTE_NX : 0) |
    ((prot & IOMMU_PRIV) !== 0 ? PTE_PRIV : 0) |
    (level > 1 ? PTE_PS : 0)
  );
}

function leafLevelOf(pgsize: number): number {
  return pgsize === SZ_4K ? 1 : pgsize === SZ_2M ? 2 : pgsize === SZ_1G ? 3 : 0;
}

export interface MockPgtableOptions {
  /** Memory the tables live in (the one `frames` manages). */
  mem: PhysMemory;
  /** Where table frames come from and go back to. */
  frames: FrameAllocator;
  /** Walk depth: 3, 4 or 5 levels, for an input address space of 39, 48 or 57 bits. */
  levels: 3 | 4 | 5;
  /** Page sizes to offer: a non-empty subset of 4 KiB | 2 MiB | 1 GiB (the default: all three). */
  pgsizeBitmap?: number;
  /** Output address bits, 12..52 (default 52). */
  oas?: number;
  /** The driver's flush callbacks, or null when the caller flushes by other means. */
  tlb: IommuFlushOps | null;
}

/** The errnos `MockPgtable.mapPages` returns. */
export type MockMapErrno = "EINVAL" | "ERANGE" | "EEXIST" | "ENOMEM";

// Results of the internal runs below: a page count when >= 0.
const RUN_EEXIST = -1;
const RUN_ENOMEM = -2;
/** A table entry has P and not PS. */
const PTE_P_PS = PTE_P | PTE_PS;
const PROT_RW = IOMMU_READ | IOMMU_WRITE;
/** 2^20: the weight of an entry's high half in a frame number. */
const TWO20 = 1048576;

// Inside the class an IOVA travels as two int32 pieces, vpnHi (IOVA bits 39..56: the level 4 and 5
// indices) and vpnLo (bits 12..38: levels 1 to 3), and a table as its frame number: a double
// passed to a call that is not inlined would be boxed, an allocation per page.

/** Index at `level` of the IOVA whose pieces are `vpnHi`, `vpnLo`. */
function indexAt(vpnHi: number, vpnLo: number, level: number): number {
  return level <= 3 ? (vpnLo >>> (9 * (level - 1))) & 511 : (vpnHi >>> (9 * (level - 4))) & 511;
}

function iovaOf(vpnHi: number, vpnLo: number): number {
  return vpnHi * SZ_512G + vpnLo * SZ_4K;
}

/** Frame number in the ADDR field of `hi:lo`; an int32 while the frame lies below 2^43. */
function pteFrame(lo: number, hi: number): number {
  return hi === 0 ? lo >>> 12 : (hi & PTE_ADDR_HI) * TWO20 + (lo >>> 12);
}

/**
 * The page table of the mock IOMMU in the mock format (see the file header), built in simulated
 * physical memory so that the mock hardware walks it from memory as silicon would. It plays the
 * part of the iommufd selftest's mock domain, which kept its PFNs in an xarray and now (since the
 * generic_pt conversion) uses a real AMDv1-format table: here too the translation is a real radix
 * table.
 *
 * Update rules, so that a walker sampling memory between any two stores sees only a legal table:
 * every entry is written with one `write64`; a new path of tables is built and filled while
 * unreachable and linked by a single store at the end; a table is freed only after the entry that
 * pointed at it is cleared and `tlbFlushWalk` was called for its range.
 *
 * Tables are created on demand and are not freed when their last leaf goes (like io-pgtable-arm);
 * they go back to the allocator when a leaf of their parent's size replaces them (map over an empty
 * table), when an unmap of that size covers them, and in `free()`.
 *
 * @kernel drivers/iommu/iommufd/selftest.c mock_iommu_domain
 */
export class MockPgtable implements IoPgtable {
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
  private mappedBytes = 0;
  private freed = false;
  /** Frames of the tables a map builds before linking them, by level (reused, no allocation). */
  private readonly building = new Float64Array(6);

  /**
   * Build an empty table; allocates the root frame. Invalid options, or no frame left for the
   * root, are bugs of the caller's setup: use `MockPgtable.alloc` to get `'ENOMEM'` instead.
   */
  constructor(options: MockPgtableOptions) {
    const { mem, frames, levels, tlb } = options;
    const pgsizeBitmap = options.pgsizeBitmap ?? MOCK_PGSIZE_BITMAP;
    const oas = options.oas ?? 52;
    if (levels !== 3 && levels !== 4 && levels !== 5) bug(`MockPgtable: ${levels} levels`);
    if (pgsizeBitmap === 0 || (pgsizeBitmap & ~MOCK_PGSIZE_BITMAP) !== 0) {
      bug(`MockPgtable: pgsizeBitmap 0x${pgsizeBitmap.toString(16)} is not within 4K|2M|1G`);
    }
    if (!Number.isInteger(oas) || oas < 12 || oas > 52) bug(`MockPgtable: oas ${oas}`);
    if (frames.mem !== mem) bug("MockPgtable: the frame allocator manages another PhysMemory");
    const root = frames.alloc(0);
    if (typeof root !== "number") bug(`MockPgtable: no frame for the root (${root})`);
    const ias = 12 + 9 * levels;
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
  }

  /**
   * Allocate a table, or `'ENOMEM'` when the allocator has no frame for the root.
   *
   * @kernel drivers/iommu/io-pgtable.c alloc_io_pgtable_ops
   */
  static alloc(options: MockPgtableOptions): MockPgtable | "ENOMEM" {
    return options.frames.freeFrames === 0 ? "ENOMEM" : new MockPgtable(options);
  }

  get mapped(): number {
    return this.mappedBytes;
  }

  /**
   * Map `pgcount` pages of `pgsize` from `iova` to `pa`. Checks, in this order: `'EINVAL'` for a
   * size outside the bitmap, `pgcount` < 1, or a misaligned `iova`/`pa` (the alignment check
   * `__iommu_map` makes before calling a format); `'ERANGE'` when [iova, iova + size) passes
   * 2^ias or [pa, pa + size) passes 2^oas; `'EINVAL'` when `prot` has neither IOMMU_READ nor
   * IOMMU_WRITE (the kernel returned 0 without mapping until 6.11, -EINVAL since). Then, page by
   * page: `'EEXIST'` when a leaf already maps any byte of the page (a leaf at its slot, a larger
   * leaf above it, or smaller leaves in a table at its slot); `'ENOMEM'` when a table cannot be
   * allocated. An empty table at a block's slot is replaced (its frames freed after
   * `tlbFlushWalk`). On an error `mapped` holds the bytes of the pages mapped before it, which
   * stay mapped; the caller unmaps them, as `__iommu_map` does.
   *
   * The whole run is mapped in one call (the kernel stops at the end of a table and lets
   * `__iommu_map` call again; both satisfy the caller's loop).
   *
   * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_map_pages
   * @kernel drivers/iommu/generic_pt/iommu_pt.h clear_contig
   */
  mapPages(
    iova: number,
    pa: number,
    pgsize: number,
    pgcount: number,
    prot: number,
  ): 0 | MockMapErrno {
    // The common case first: one page, as int32 pieces (IOVA bits 39..56 and 12..38, the PA's
    // halves) that equal the arguments only for 4 KiB-aligned integers in [0, 2^57) and integers
    // in [0, 2^52). Whatever `mapOne` does not vouch for takes the checked path, which gives every
    // errno. This entry stays small so that its callers inline it (a double passed to a call that
    // is not inlined is boxed, an allocation); `mapOne` takes int32s and is longer than V8 inlines
    // (460 bytes of bytecode), so that inlining it can never make this entry too big to inline.
    const vpnHi = (iova * INV_512G) & 0x3ffff;
    const vpnLo = (iova * INV_4K) & 0x7ff_ffff;
    const paHi = (pa * INV_TWO32) & PTE_ADDR_HI;
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
  ): 0 | MockMapErrno {
    this.mappedBytes = 0;
    if (this.freed) bug("MockPgtable: mapPages after free()");
    const leafLevel = leafLevelOf(pgsize);
    if (leafLevel === 0 || (this.pgsizeBitmap & pgsize) === 0) return "EINVAL";
    if (!Number.isInteger(pgcount) || pgcount < 1) return "EINVAL";
    const m = pgsize - 1;
    if (!Number.isInteger(iova) || !Number.isInteger(pa) || iova < 0 || pa < 0) return "EINVAL";
    if (((iova & m) | (pa & m)) !== 0) return "EINVAL";
    const size = pgsize * pgcount;
    if (iova + size > this.iasLimit || pa + size > this.oasLimit) return "ERANGE";
    if ((prot & (IOMMU_READ | IOMMU_WRITE)) === 0) return "EINVAL";
    const bits = leafBits(prot, leafLevel);
    const vpnHi = (iova * INV_512G) & 0x3ffff;
    const vpnLo = (iova * INV_4K) & 0x7ff_ffff;
    return this.mapRuns(
      vpnHi,
      vpnLo,
      (pa * INV_TWO32) & PTE_ADDR_HI,
      pa | 0,
      leafLevel,
      pgcount,
      bits,
    );
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
        (a * INV_TWO32) & PTE_ADDR_HI,
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
   * written out level by level, which is faster and keeps this method out of reach of the inliner
   * (see `mapPages`).
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
      if ((lo & PTE_P_PS) !== PTE_P || w[j + 1] !== 0) return false;
      tpa = lo & PTE_ADDR_LO;
    }
    // Levels 3 to 1 written out, down to the leaf's.
    let idx = vpnLo >>> 18;
    if (leafShift < 18) {
      w = mem.wordsOf(tpa);
      if (w === undefined) return false;
      j = mem.wordIndex(tpa) + (idx << 1);
      lo = w[j];
      if ((lo & PTE_P_PS) !== PTE_P || w[j + 1] !== 0) return false;
      tpa = lo & PTE_ADDR_LO;
      idx = (vpnLo >>> 9) & 511;
      if (leafShift < 9) {
        w = mem.wordsOf(tpa);
        if (w === undefined) return false;
        j = mem.wordIndex(tpa) + (idx << 1);
        lo = w[j];
        if ((lo & PTE_P_PS) !== PTE_P || w[j + 1] !== 0) return false;
        tpa = lo & PTE_ADDR_LO;
        idx = vpnLo & 511;
      }
    }
    w = mem.wordsOf(tpa);
    if (w === undefined || (w[mem.wordIndex(tpa) + (idx << 1)] & PTE_P) !== 0) return false;
    const bits = leafBits(prot, 1) | (leafShift !== 0 ? PTE_PS : 0);
    mem.write64(tpa + idx * 8, (paLo & PTE_ADDR_LO) | bits, paHi);
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
      if ((lo & PTE_P) === 0) {
        return this.mapNewPath(tfn, idx, lvl - 1, vpnHi, vpnLo, paHi, paLo, leafLevel, count, bits);
      }
      // A larger leaf already maps this page.
      if ((lo & PTE_PS) !== 0) return RUN_EEXIST;
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
    const lo = (child << 12) | PTE_P | PTE_R | PTE_W;
    this.mem.write64(tfn * SZ_4K + idx * 8, lo, (child / TWO20) & PTE_ADDR_HI);
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
    const pgsize = LEVEL_SIZE[leafLevel];
    const idx0 = indexAt(vpnHi, vpnLo, leafLevel);
    const n = Math.min(count, PTES_PER_TABLE - idx0);
    const base = tfn * SZ_4K + idx0 * 8;
    const pa0 = paHi * TWO32 + (paLo >>> 0);
    for (let k = 0; k < n; k++) {
      const epa = base + k * 8;
      const a = pa0 + k * pgsize;
      const old = mem.read64(epa);
      if ((old & PTE_P) !== 0) {
        if (leafLevel === 1 || (old & PTE_PS) !== 0) return RUN_EEXIST;
        const sub = pteFrame(old, mem.hi);
        if (this.hasLeaf(sub, leafLevel - 1)) return RUN_EEXIST;
        // An empty table where the block goes: swap it for the leaf in one store, then drop any
        // walk cached through it before its frames can be reused.
        mem.write64(epa, (a & PTE_ADDR_LO) | bits, (a / TWO32) & PTE_ADDR_HI);
        this.tlb?.tlbFlushWalk(iovaOf(vpnHi, vpnLo) + k * pgsize, pgsize, SZ_4K);
        this.freeTable(sub, leafLevel - 1);
      } else {
        mem.write64(epa, (a & PTE_ADDR_LO) | bits, (a / TWO32) & PTE_ADDR_HI);
      }
      this.mappedBytes += pgsize;
    }
    return n;
  }

  /**
   * Unmap up to `pgcount` pages of `pgsize` from `iova`; returns the bytes unmapped. Stops at the
   * first page that is not mapped by exactly one leaf of `pgsize` or by a table at its slot: at a
   * hole (an empty entry, or a table with no leaf under it), and at a larger leaf, which it leaves
   * whole (kernels since 6.13 refuse to split a block on unmap: "Unmap of a partial large IOPTE is
   * not allowed", 0 bytes). A table with leaves at a `pgsize` slot is cleared as one unit, its
   * walk flushed and its frames freed at once (as io-pgtable-arm does); that counts `pgsize`.
   * Each cleared entry goes to `cfg.tlb.tlbAddPage(gather, iova, pgsize)` unless `gather` is null
   * or queued (the flush queue invalidates everything later).
   *
   * Returns 0 for a size outside the bitmap, `pgcount` < 1, a misaligned `iova`, or `iova` at or
   * beyond 2^ias (the kernel WARNs and returns 0); the range is cut at 2^ias.
   *
   * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_unmap_pages
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
    if (this.freed) bug("MockPgtable: unmapPages after free()");
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
   * that size under existing tables; otherwise returns false, having changed nothing. Written out
   * level by level, as `mapOne` is, for the same reasons.
   */
  private unmapOne(vpnHi: number, vpnLo: number, pgsize: number): boolean {
    const leafShift = pgsize === SZ_4K ? 0 : pgsize === SZ_2M ? 9 : pgsize === SZ_1G ? 18 : -1;
    if (leafShift < 0 || (this.pgsizeBitmap & pgsize) === 0) return false;
    if (((vpnLo << 12) & (pgsize - 1)) !== 0) return false;
    const mem = this.mem;
    // Direct reads as in `mapOne`.
    let tpa = this.rootWalk | 0;
    let w: Uint32Array | undefined;
    let j = 0;
    let lo = 0;
    for (let sh = (this.rootShift | 0) - 27; sh >= 0; sh -= 9) {
      w = mem.wordsOf(tpa);
      if (w === undefined) return false;
      j = mem.wordIndex(tpa) + (((vpnHi >>> sh) & 511) << 1);
      lo = w[j];
      if ((lo & PTE_P_PS) !== PTE_P || w[j + 1] !== 0) return false;
      tpa = lo & PTE_ADDR_LO;
    }
    let idx = vpnLo >>> 18;
    if (leafShift < 18) {
      w = mem.wordsOf(tpa);
      if (w === undefined) return false;
      j = mem.wordIndex(tpa) + (idx << 1);
      lo = w[j];
      if ((lo & PTE_P_PS) !== PTE_P || w[j + 1] !== 0) return false;
      tpa = lo & PTE_ADDR_LO;
      idx = (vpnLo >>> 9) & 511;
      if (leafShift < 9) {
        w = mem.wordsOf(tpa);
        if (w === undefined) return false;
        j = mem.wordIndex(tpa) + (idx << 1);
        lo = w[j];
        if ((lo & PTE_P_PS) !== PTE_P || w[j + 1] !== 0) return false;
        tpa = lo & PTE_ADDR_LO;
        idx = vpnLo & 511;
      }
    }
    w = mem.wordsOf(tpa);
    if (w === undefined) return false;
    lo = w[mem.wordIndex(tpa) + (idx << 1)];
    if ((lo & PTE_P) === 0 || (leafShift !== 0 && (lo & PTE_PS) === 0)) return false;
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
    let tfn = this.rootFrame;
    for (let lvl = this.levels; lvl > leafLevel; lvl--) {
      const lo = mem.read64(tfn * SZ_4K + indexAt(vpnHi, vpnLo, lvl) * 8);
      // A hole, or a larger leaf that this unmap would only cut a piece out of.
      if ((lo & PTE_P) === 0 || (lo & PTE_PS) !== 0) return 0;
      tfn = pteFrame(lo, mem.hi);
    }
    const tlb = this.tlb;
    const addPages = tlb !== null && gather !== null && !gather.queued;
    const pgsize = LEVEL_SIZE[leafLevel];
    const base = tfn * SZ_4K + indexAt(vpnHi, vpnLo, leafLevel) * 8;
    for (let k = 0; k < count; k++) {
      const epa = base + k * 8;
      const lo = mem.read64(epa);
      if ((lo & PTE_P) === 0) return k;
      if (leafLevel === 1 || (lo & PTE_PS) !== 0) {
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
   * The physical address `iova` maps to, or -1 (outside 2^ias or not mapped). Exact for any
   * integer `iova` below 2^53 and for page-aligned ones above.
   *
   * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_iova_to_phys
   */
  iovaToPhys(iova: number): number {
    if (!(iova >= 0 && iova < this.iasLimit)) return -1;
    const mem = this.mem;
    const vpnHi = (iova * INV_512G) & 0x3ffff;
    const vpnLo = (iova * INV_4K) & 0x7ff_ffff;
    // Direct reads (see `PhysMemory.wordsOf`); whatever they do not reach (a fault hook, a table
    // at or above 2^31, tables that may lie above 4 GiB, a freed table: see `rootWalk`) is walked
    // again on the checked path, which is invisible since reads without a hook have no side
    // effect. Kept in one loop so that callers can inline this method. The level travels as the
    // shift of its index in the VPN (27 and 36 index vpnHi); `| 0` lets the compiler keep the
    // loop's variables as untagged int32s.
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
      if ((lo & PTE_P_PS) !== PTE_P || sh === 0) {
        if ((lo & PTE_P) === 0) return -1;
        // PS is reserved at levels 4 and 5, and ignored there as the checked walk ignores it.
        if (sh <= 18) break;
      }
      tpa = lo & PTE_ADDR_LO;
      sh -= 9;
    }
    const off = (SZ_4K << sh) - 1;
    return (w[j + 1] & PTE_ADDR_HI) * TWO32 + ((lo & PTE_ADDR_LO & ~off) >>> 0) + (iova & off);
  }

  /** `iovaToPhys` through `PhysMemory.read64`, for whatever its direct reads leave alone. */
  private iovaToPhysChecked(iova: number): number {
    if (this.freed) return -1;
    const mem = this.mem;
    const low = this.tablesLow;
    let tpa = this.rootPa;
    let lvl = this.levels;
    let lo = 0;
    if (lvl > 3) {
      const vpnHi = (iova / SZ_512G) & 0x3ffff;
      do {
        lo = mem.read64(tpa + ((vpnHi >>> (9 * (lvl - 4))) & 511) * 8);
        if ((lo & PTE_P) === 0) return -1;
        tpa = low ? (lo & PTE_ADDR_LO) >>> 0 : mockPteAddr(lo, mem.hi);
      } while (--lvl > 3);
    }
    const vpnLo = (iova / SZ_4K) & 0x7ff_ffff;
    for (;;) {
      lo = mem.read64(tpa + ((vpnLo >>> (9 * (lvl - 1))) & 511) * 8);
      if ((lo & PTE_P) === 0) return -1;
      if (lvl === 1 || (lo & PTE_PS) !== 0) break;
      tpa = low ? (lo & PTE_ADDR_LO) >>> 0 : mockPteAddr(lo, mem.hi);
      lvl--;
    }
    const off = LEVEL_SIZE[lvl] - 1;
    return (mem.hi & PTE_ADDR_HI) * TWO32 + ((lo & LEAF_ADDR_LO[lvl]) >>> 0) + (iova & off);
  }

  /**
   * Give every table frame back to the allocator (the mapped pages are not the table's). The
   * instance is dead afterwards: map and unmap are bugs, lookups return -1.
   *
   * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_free_pgtable
   */
  free(): void {
    if (this.freed) bug("MockPgtable: free() twice");
    this.freeTable(this.rootFrame, this.levels);
    this.freed = true;
    this.rootWalk = -1;
  }

  /** Whether any leaf is present in table `tfn` (of `level`) or below it. */
  private hasLeaf(tfn: number, level: number): boolean {
    const mem = this.mem;
    for (let i = 0; i < PTES_PER_TABLE; i++) {
      const lo = mem.read64(tfn * SZ_4K + i * 8);
      if ((lo & PTE_P) === 0) continue;
      if (level === 1 || (lo & PTE_PS) !== 0) return true;
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
        if ((lo & PTE_P) === 0 || (lo & PTE_PS) !== 0) continue;
        this.freeTable(pteFrame(lo, mem.hi), level - 1);
      }
    }
    this.freeFrame(tfn);
  }

  private freeFrame(tfn: number): void {
    const rc = this.frames.free(tfn * SZ_4K, 0);
    if (rc !== 0) bug(`MockPgtable: freeing table frame 0x${(tfn * SZ_4K).toString(16)}: ${rc}`);
  }
}
