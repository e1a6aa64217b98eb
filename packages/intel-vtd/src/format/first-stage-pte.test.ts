import { decode, encode, hasReservedBits, reservedBitsSet } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import {
  FS_PTE,
  FS_PTE_A,
  FS_PTE_ADDR_HI,
  FS_PTE_ADDR_LO,
  FS_PTE_D,
  FS_PTE_EA,
  FS_PTE_P,
  FS_PTE_PS,
  FS_PTE_RW,
  FS_PTE_US,
  FS_PTE_XD_HI,
  fsPteIsPresent,
  fsPteKind,
} from "./first-stage-pte.js";
import { VTD_PTE_BAD, VTD_PTE_LEAF, VTD_PTE_NONE, VTD_PTE_TABLE } from "./second-stage-pte.js";

describe("FS_PTE layout", () => {
  it("puts each field at its x86-64 bit", () => {
    expect(FS_PTE_P).toBe(1); // DMA_FL_PTE_PRESENT
    expect(FS_PTE_RW).toBe(2);
    expect(FS_PTE_US).toBe(4); // DMA_FL_PTE_US
    expect(FS_PTE_A).toBe(0x20); // DMA_FL_PTE_ACCESS
    expect(FS_PTE_D).toBe(0x40); // DMA_FL_PTE_DIRTY
    expect(FS_PTE_PS).toBe(0x80);
    expect(FS_PTE_EA).toBe(0x400);
    expect(FS_PTE_ADDR_LO).toBe(0xfffff000);
    expect(FS_PTE_ADDR_HI).toBe(0x000fffff);
    expect(FS_PTE_XD_HI).toBe(0x8000_0000);
    expect([FS_PTE.field.PWT.lsb, FS_PTE.field.PCD.lsb, FS_PTE.field.G.lsb]).toEqual([3, 4, 8]);
  });

  it("round-trips every field through encode and decode", () => {
    const values = {
      P: 1,
      RW: 1,
      US: 1,
      PWT: 1,
      PCD: 1,
      A: 1,
      D: 1,
      PS: 1,
      G: 1,
      IGN9: 1,
      EA: 1,
      IGN11: 1,
      ADDR: 0xf_0000_1234_5000,
      IGN52: 0x7ff,
      XD: 1,
    };
    const w = encode(FS_PTE, values);
    expect([w[0], w[1]]).toEqual([0x1234_5fff, 0xffff_0000]);
    expect(decode(FS_PTE, w)).toEqual(values);
  });

  it("has no reserved bits in the layout: every bit is a field or ignored", () => {
    const all = Uint32Array.of(0xffff_ffff, 0xffff_ffff);
    expect(hasReservedBits(FS_PTE, all)).toBe(false);
    expect(reservedBitsSet(FS_PTE, all)).toEqual([]);
    const ignored = FS_PTE.fields.filter((f) => f.ignored).map((f) => [f.lsb, f.width]);
    expect(ignored).toEqual([
      [9, 1],
      [11, 1],
      [52, 11],
    ]);
  });
});

describe("first-stage entry rules", () => {
  it("an entry is present iff P is set", () => {
    expect(fsPteIsPresent(FS_PTE_P)).toBe(true);
    expect(fsPteIsPresent(0xffff_fffe)).toBe(false);
    expect(fsPteKind(FS_PTE_RW | FS_PTE_US | 0x1000, 0, 1)).toBe(VTD_PTE_NONE);
  });

  it("bit 7 of a 4 KiB PTE is PAT: the entry is still a 4 KiB leaf", () => {
    expect(fsPteKind(0x3000 | FS_PTE_P | FS_PTE_PS, 0, 1)).toBe(VTD_PTE_LEAF);
  });

  it("PS makes a leaf in a PDE or PDPE and is bad in a PML4E or PML5E", () => {
    expect(fsPteKind(0x20_0000 | FS_PTE_P | FS_PTE_PS, 0, 2)).toBe(VTD_PTE_LEAF);
    expect(fsPteKind(0x4000_0000 | FS_PTE_P | FS_PTE_PS, 0, 3)).toBe(VTD_PTE_LEAF);
    expect(fsPteKind(FS_PTE_P | FS_PTE_PS, 0, 4)).toBe(VTD_PTE_BAD);
    expect(fsPteKind(FS_PTE_P | FS_PTE_PS, 0, 5)).toBe(VTD_PTE_BAD);
    for (const level of [2, 3, 4, 5]) {
      expect(fsPteKind(0x7000 | FS_PTE_P | FS_PTE_RW, FS_PTE_XD_HI, level)).toBe(VTD_PTE_TABLE);
    }
  });

  it("a large leaf may set PAT (bit 12) but not the address bits above it inside its page", () => {
    expect(fsPteKind(0x20_1000 | FS_PTE_P | FS_PTE_PS, 0, 2)).toBe(VTD_PTE_LEAF);
    expect(fsPteKind(0x20_2000 | FS_PTE_P | FS_PTE_PS, 0, 2)).toBe(VTD_PTE_BAD);
    expect(fsPteKind(0x4000_1000 | FS_PTE_P | FS_PTE_PS, 0, 3)).toBe(VTD_PTE_LEAF);
    expect(fsPteKind(0x4010_0000 | FS_PTE_P | FS_PTE_PS, 0, 3)).toBe(VTD_PTE_BAD);
  });
});
