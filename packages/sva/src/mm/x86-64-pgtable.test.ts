// Bit-exact tests of the x86-64 user page-table entries against values built by hand from the
// bit positions in arch/x86/include/asm/pgtable_types.h, directly and through an Mm's own tables.

import { FrameAllocator, PhysMemory, toBig } from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { Mm } from "./mm.js";
import {
  FAULT_FLAG_USER,
  FAULT_FLAG_WRITE,
  PROT_EXEC,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  VM_EXEC,
  VM_READ,
  VM_WRITE,
} from "./mm-flags.js";
import type { Vma } from "./vma.js";
import { X86_64_PGTABLE as F } from "./x86-64-pgtable.js";

/** The VMA at `va`, which the test knows is there. */
function vmaAt(mm: Mm, va: number): Vma {
  const v = mm.vmaLookup(va);
  if (v === null) throw new Error(`no VMA at 0x${va.toString(16)}`);
  return v;
}

// The header's bit numbers, as BigInt masks.
const P = 1n << 0n;
const RW = 1n << 1n;
const US = 1n << 2n;
const A = 1n << 5n;
const D = 1n << 6n;
const G = 1n << 8n;
const NX = 1n << 63n;
const PFN_MASK = ((1n << 52n) - 1n) & ~0xfffn;

const PA = 0x12_3456_7000; // above 4 GiB, so the high word carries address bits
const leaf = (pa: number, flags: number) => toBig(F.leafHi(pa, flags), F.leafLo(pa, flags));

describe("x86-64 entries", () => {
  it("a table entry is _PAGE_TABLE (P | RW | USER | A | D) with the table's address", () => {
    expect(toBig(F.tableHi(PA), F.tableLo(PA))).toBe(BigInt(PA) | P | RW | US | A | D);
  });

  it("a read-only leaf is P | USER | A | NX", () => {
    expect(leaf(PA, VM_READ)).toBe(BigInt(PA) | P | US | A | NX);
  });

  it("a writable leaf adds RW and D (mapped dirty)", () => {
    expect(leaf(PA, VM_READ | VM_WRITE)).toBe(BigInt(PA) | P | US | A | RW | D | NX);
    // Write-only is as writable: x86 cannot take read away from a present user page.
    expect(leaf(PA, VM_WRITE)).toBe(BigInt(PA) | P | US | A | RW | D | NX);
  });

  it("VM_EXEC clears NX", () => {
    expect(leaf(PA, VM_READ | VM_EXEC)).toBe(BigInt(PA) | P | US | A);
    expect(leaf(PA, VM_READ | VM_WRITE | VM_EXEC)).toBe(BigInt(PA) | P | US | A | RW | D);
  });

  it("a PROT_NONE leaf is A | PROTNONE(G) with P clear and the frame address inverted", () => {
    const e = leaf(PA, 0);
    expect(e).toBe((~BigInt(PA) & PFN_MASK) | A | G);
    expect(e & P).toBe(0n);
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
    expect(F.entryFlags(F.leafLo(PA, 0), F.leafHi(PA, 0), true)).toBe(0);
    expect(F.entryPa(F.tableLo(PA), F.tableHi(PA))).toBe(PA);
  });

  it("the highest PA an entry holds (bit 51) survives encoding, inversion included", () => {
    const top = 2 ** 52 - 4096;
    expect(F.entryPa(F.leafLo(top, VM_READ), F.leafHi(top, VM_READ))).toBe(top);
    expect(F.entryPa(F.leafLo(top, 0), F.leafHi(top, 0))).toBe(top);
    expect(leaf(0, 0)).toBe(PFN_MASK | A | G);
  });
});

describe("x86-64 tables built by an Mm", () => {
  function machine(levels: 4 | 5) {
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 2 ** 40, size: 0x40_0000 });
    const mm = new Mm({ name: "p", mem, frames, format: "x86-64", levels });
    return { mem, frames, mm };
  }

  /** The raw entries on the way to `va`, top level first. */
  function walkRaw(mem: PhysMemory, pgd: number, levels: number, va: number): bigint[] {
    const out: bigint[] = [];
    let table = BigInt(pgd);
    for (let level = levels; level >= 1; level--) {
      const index = (BigInt(va) >> BigInt(12 + 9 * (level - 1))) & 511n;
      const e = mem.read64Big(Number(table + index * 8n));
      out.push(e);
      table = e & PFN_MASK;
    }
    return out;
  }

  for (const levels of [4, 5] as const) {
    it(`${levels} levels: tables are _PAGE_TABLE and leaves follow the VMA's permissions`, () => {
      const { mem, mm } = machine(levels);
      const va = levels === 5 ? 2 ** 52 + 0x5000 : 0x7f12_3456_7000;
      expect(mm.mmap(va, 0x3000, PROT_READ | PROT_WRITE, true)).toBe(va);
      expect(mm.handleMmFault(vmaAt(mm, va), va, FAULT_FLAG_USER | FAULT_FLAG_WRITE)).toBe(0);
      const entries = walkRaw(mem, mm.pgd, levels, va);
      expect(entries).toHaveLength(levels);
      for (const e of entries.slice(0, -1))
        expect((e & 0xfffn) | (e & NX)).toBe(P | RW | US | A | D);
      const pa = BigInt(mm.lookup(va));
      expect(entries[levels - 1]).toBe(pa | P | US | A | RW | D | NX);
      expect(mm.mprotect(va, 0x1000, PROT_READ | PROT_EXEC)).toBe(0);
      expect(walkRaw(mem, mm.pgd, levels, va)[levels - 1]).toBe(pa | P | US | A);
      expect(mm.mprotect(va, 0x1000, PROT_NONE)).toBe(0);
      expect(walkRaw(mem, mm.pgd, levels, va)[levels - 1]).toBe((~pa & PFN_MASK) | A | G);
    });
  }
});
