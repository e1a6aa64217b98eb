// Bit-exact tests of the AArch64 user translation-table entries against values built by hand from
// the bit positions in arch/arm64/include/asm/pgtable-hwdef.h and pgtable-prot.h, directly and
// through an Mm's own tables.

import { FrameAllocator, PhysMemory, toBig } from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { A64_MAIR_EL1, AARCH64_PGTABLE as F } from "./aarch64-pgtable.js";
import { Mm } from "./mm.js";
import {
  FAULT_FLAG_USER,
  PROT_EXEC,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  VM_EXEC,
  VM_READ,
  VM_WRITE,
} from "./mm-flags.js";
import type { Vma } from "./vma.js";

/** The VMA at `va`, which the test knows is there. */
function vmaAt(mm: Mm, va: number): Vma {
  const v = mm.vmaLookup(va);
  if (v === null) throw new Error(`no VMA at 0x${va.toString(16)}`);
  return v;
}

const VALID = 1n << 0n;
const TABLE = 1n << 1n; // PTE_TABLE_BIT: table (levels 0-2) / page (level 3)
const USER = 1n << 6n; // AP[1]
const RDONLY = 1n << 7n; // AP[2]
const SH_INNER = 3n << 8n;
const AF = 1n << 10n;
const NG = 1n << 11n;
const DBM = 1n << 51n;
const PXN = 1n << 53n;
const UXN = 1n << 54n;
const SW_DIRTY = 1n << 55n;
const PXN_TABLE = 1n << 59n;
const ATTR_MT_NORMAL = 0n << 2n;
const OA_MASK = ((1n << 48n) - 1n) & ~0xfffn;

const PA = 0xab_cdef_1000;
const leaf = (pa: number, flags: number) => toBig(F.leafHi(pa, flags), F.leafLo(pa, flags));
const PAGE = BigInt(PA) | VALID | TABLE | ATTR_MT_NORMAL | USER | SH_INNER | AF | NG | PXN;

describe("AArch64 descriptors", () => {
  it("a table descriptor is 0b11 | table AF | PXNTable with the next table's address", () => {
    expect(toBig(F.tableHi(PA), F.tableLo(PA))).toBe(BigInt(PA) | VALID | TABLE | AF | PXN_TABLE);
  });

  it("a read-only page is valid, MT_NORMAL, EL0, read-only, inner shareable, AF, nG, PXN, UXN", () => {
    expect(leaf(PA, VM_READ)).toBe(PAGE | RDONLY | UXN);
  });

  it("a writable page is mapped dirty: AP[2] clear, DBM and the software dirty bit set", () => {
    expect(leaf(PA, VM_READ | VM_WRITE)).toBe(PAGE | DBM | SW_DIRTY | UXN);
    expect(leaf(PA, VM_WRITE)).toBe(PAGE | DBM | SW_DIRTY | UXN);
  });

  it("VM_EXEC clears UXN; PXN stays", () => {
    expect(leaf(PA, VM_READ | VM_EXEC)).toBe(PAGE | RDONLY);
    expect(leaf(PA, VM_EXEC)).toBe(PAGE | RDONLY);
    expect(leaf(PA, VM_READ | VM_WRITE | VM_EXEC)).toBe(PAGE | DBM | SW_DIRTY);
  });

  it("a PROT_NONE entry is PAGE_NONE: valid clear, PRESENT_INVALID (nG), no EL0 access", () => {
    const e = leaf(PA, 0);
    expect(e).toBe(BigInt(PA) | TABLE | SH_INNER | AF | NG | RDONLY | PXN | UXN);
    expect(F.isPresent(F.leafLo(PA, 0), F.leafHi(PA, 0))).toBe(false);
    expect(F.entryPa(F.leafLo(PA, 0), F.leafHi(PA, 0))).toBe(PA);
  });

  it("entryPa and entryFlags read back what the encoders wrote", () => {
    for (const flags of [VM_READ, VM_READ | VM_WRITE, VM_READ | VM_EXEC, 7]) {
      const lo = F.leafLo(PA, flags);
      const hi = F.leafHi(PA, flags);
      expect(F.entryPa(lo, hi)).toBe(PA);
      expect(F.entryFlags(lo, hi, true)).toBe(flags | VM_READ);
    }
    expect(F.entryFlags(F.tableLo(PA), F.tableHi(PA), false)).toBe(7);
  });

  it("MAIR_EL1 is Linux's: Normal WB at MT_NORMAL (index 0), then Normal, NC, nGnRnE, nGnRE", () => {
    const mair = toBig(A64_MAIR_EL1[1], A64_MAIR_EL1[0]);
    const attr = (i: number) => Number((mair >> BigInt(8 * i)) & 0xffn);
    expect([0, 1, 2, 3, 4, 5, 6, 7].map(attr)).toEqual([0xff, 0xff, 0x44, 0x00, 0x04, 0, 0, 0]);
    expect(F.parange).toBe(5);
  });

  it("an address at or above 2^48 cannot be encoded", () => {
    expect(() => F.tableHi(2 ** 48)).toThrow(/48 bits/);
  });
});

describe("AArch64 tables built by an Mm", () => {
  it("tables, leaves and PROT_NONE entries are bit-exact at every level", () => {
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 2 ** 44, size: 0x40_0000 });
    const mm = new Mm({ name: "p", mem, frames, format: "aarch64" });
    expect(mm.mair).toEqual([0x0044ffff, 4]);
    const va = 0xfedc_ba98_7000; // index 509 at level 0, every half word non-zero
    expect(mm.mmap(va, 0x1000, PROT_READ | PROT_EXEC, true)).toBe(va);
    expect(mm.handleMmFault(vmaAt(mm, va), va, FAULT_FLAG_USER)).toBe(0);
    let table = BigInt(mm.pgd);
    const entries: bigint[] = [];
    let slot = 0;
    for (let level = 0; level <= 3; level++) {
      const index = (BigInt(va) >> BigInt(12 + 9 * (3 - level))) & 511n;
      slot = Number(table + index * 8n);
      const e = mem.read64Big(slot);
      entries.push(e);
      table = e & OA_MASK;
    }
    for (const e of entries.slice(0, 3)) expect(e & ~OA_MASK).toBe(VALID | TABLE | AF | PXN_TABLE);
    const pa = BigInt(mm.lookup(va));
    expect(entries[3]).toBe(pa | VALID | TABLE | USER | SH_INNER | AF | NG | PXN | RDONLY);
    expect(mm.mprotect(va, 0x1000, PROT_READ | PROT_WRITE)).toBe(0);
    expect(mem.read64Big(slot)).toBe(
      pa | VALID | TABLE | USER | SH_INNER | AF | NG | PXN | UXN | DBM | SW_DIRTY,
    );
    expect(mm.mprotect(va, 0x1000, PROT_NONE)).toBe(0);
    expect(mem.read64Big(slot)).toBe(pa | TABLE | SH_INNER | AF | NG | RDONLY | PXN | UXN);
    expect(mm.lookup(va)).toBe(-1);
  });
});
