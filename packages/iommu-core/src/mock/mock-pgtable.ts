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
} from "../iommu/io-pgtable.js";
import {
  RADIX_PTE_ADDR_HI,
  RADIX_PTE_ADDR_LO,
  RADIX_PTE_PS,
  type RadixMapErrno,
  RadixPgtable,
  radixLevelIndex,
} from "../iommu/radix-pgtable.js";
import { bug } from "../platform/bug.js";
import { defineLayout, fieldOf, type Layout, wordMask } from "../platform/field-table.js";
import type { FrameAllocator } from "../platform/frame-allocator.js";
import type { PhysMemory } from "../platform/phys-memory.js";

/** The mock PTE layout, declared once; every constant below is derived from it. */
export const MOCK_PTE: Layout = defineLayout({
  name: "mock-pte",
  bits: 64,
  spec: "iommu-sim mock IOMMU (mock-pgtable.ts)",
  fields: [
    { name: "P", lsb: 0, width: 1, doc: "present" },
    { name: "R", lsb: 1, width: 1, doc: "reads allowed; set in table entries" },
    { name: "W", lsb: 2, width: 1, doc: "writes allowed; set in table entries" },
    { name: "NX", lsb: 3, width: 1, doc: "instruction fetches forbidden" },
    { name: "PRIV", lsb: 4, width: 1, doc: "privileged requests only" },
    { name: "PS", lsb: 7, width: 1, doc: "leaf at level 2 or 3" },
    { name: "ADDR", lsb: 12, width: 40, addr: true, doc: "next table or page address" },
  ],
});

// Code below uses the module-private names: optimised code reads an exported binding through its
// cell, with a not-yet-initialised check, at every use, while a private const becomes an immediate.
const PTE_P = wordMask(fieldOf(MOCK_PTE, "P"), 0);
const PTE_R = wordMask(fieldOf(MOCK_PTE, "R"), 0);
const PTE_W = wordMask(fieldOf(MOCK_PTE, "W"), 0);
const PTE_NX = wordMask(fieldOf(MOCK_PTE, "NX"), 0);
const PTE_PRIV = wordMask(fieldOf(MOCK_PTE, "PRIV"), 0);
const PTE_PS = wordMask(fieldOf(MOCK_PTE, "PS"), 0);
const PTE_ADDR_LO = wordMask(fieldOf(MOCK_PTE, "ADDR"), 0) | 0;
const PTE_ADDR_HI = wordMask(fieldOf(MOCK_PTE, "ADDR"), 1);
const PTE_RES_LO = (MOCK_PTE.reserved[0] as number) | 0;
const PTE_RES_HI = (MOCK_PTE.reserved[1] as number) | 0;

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
const TWO32 = 4294967296;

/** The page sizes the mock format can map: 4 KiB, 2 MiB and 1 GiB. */
export const MOCK_PGSIZE_BITMAP = SZ_4K | SZ_2M | SZ_1G;

/** Low-half ADDR mask of a leaf at `level`: the block's own address bits are not part of it. */
const LEAF_ADDR_LO = [0, PTE_ADDR_LO, PTE_ADDR_LO & ~(SZ_2M - 1), PTE_ADDR_LO & ~(SZ_1G - 1)];

/** Index of `iova` in a table at `level` (1..5), exact below 2^57: the radix engine's. */
export const mockLevelIndex = radixLevelIndex;

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
export type MockMapErrno = RadixMapErrno;

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
export class MockPgtable extends RadixPgtable {
  /**
   * Build an empty table; allocates the root frame. Invalid options, or no frame left for the
   * root, are bugs of the caller's setup: use `MockPgtable.alloc` to get `'ENOMEM'` instead.
   */
  constructor(options: MockPgtableOptions) {
    const { mem, frames, levels, tlb } = options;
    if (levels !== 3 && levels !== 4 && levels !== 5) bug(`MockPgtable: ${levels} levels`);
    const pgsizeBitmap = options.pgsizeBitmap ?? MOCK_PGSIZE_BITMAP;
    if (pgsizeBitmap === 0 || (pgsizeBitmap & ~MOCK_PGSIZE_BITMAP) !== 0) {
      bug(`MockPgtable: pgsizeBitmap 0x${pgsizeBitmap.toString(16)} is not within 4K|2M|1G`);
    }
    super(mem, frames, tlb, {
      levels,
      ias: 12 + 9 * levels,
      oas: options.oas ?? 52,
      pgsizeBitmap,
      presentMask: PTE_P,
      tableBits: PTE_P | PTE_R | PTE_W,
      leafBits: PTE_P,
      leafReadBits: PTE_R,
      leafWriteBits: PTE_W,
      leafNoExecBits: PTE_NX,
      leafPrivBits: PTE_PRIV,
    });
  }

  /**
   * Allocate a table, or `'ENOMEM'` when the allocator has no frame for the root.
   *
   * @kernel drivers/iommu/io-pgtable.c alloc_io_pgtable_ops
   */
  static alloc(options: MockPgtableOptions): MockPgtable | "ENOMEM" {
    return options.frames.freeFrames === 0 ? "ENOMEM" : new MockPgtable(options);
  }
}

// The engine's PS and ADDR bits are the mock entry's, which this checks once at load.
if (
  PTE_PS !== RADIX_PTE_PS ||
  PTE_ADDR_LO >>> 0 !== RADIX_PTE_ADDR_LO >>> 0 ||
  PTE_ADDR_HI !== RADIX_PTE_ADDR_HI
) {
  bug("mock PTE PS/ADDR differ from the radix engine's");
}
