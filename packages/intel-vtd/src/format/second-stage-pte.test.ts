import { fc, test } from "@fast-check/vitest";
import {
  decode,
  encode,
  formatLayout,
  hasReservedBits,
  reservedBitsSet,
} from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import {
  SS_PTE,
  SS_PTE_A,
  SS_PTE_ADDR_HI,
  SS_PTE_ADDR_LO,
  SS_PTE_D,
  SS_PTE_PS,
  SS_PTE_R,
  SS_PTE_SNP,
  SS_PTE_TM_HI,
  SS_PTE_W,
  SS_PTE_X,
  ssPteIsPresent,
  ssPteKind,
  VTD_PTE_BAD,
  VTD_PTE_LEAF,
  VTD_PTE_NONE,
  VTD_PTE_TABLE,
  vtdLeafSize,
  vtdLevelIndex,
  vtdLevelShift,
  vtdPteAddr,
} from "./second-stage-pte.js";

describe("SS_PTE layout", () => {
  it("puts each field at the bit Linux and the spec use", () => {
    expect(SS_PTE_R).toBe(1); // DMA_PTE_READ
    expect(SS_PTE_W).toBe(2); // DMA_PTE_WRITE
    expect(SS_PTE_X).toBe(4);
    expect(SS_PTE_PS).toBe(0x80); // DMA_PTE_LARGE_PAGE
    expect(SS_PTE_A).toBe(0x100);
    expect(SS_PTE_D).toBe(0x200); // DMA_SL_PTE_DIRTY
    expect(SS_PTE_SNP).toBe(0x800); // DMA_PTE_SNP
    expect(SS_PTE_ADDR_LO).toBe(0xfffff000);
    expect(SS_PTE_ADDR_HI).toBe(0x000fffff);
    expect(SS_PTE_TM_HI).toBe(0x4000_0000);
    expect(SS_PTE.field.EMT.lsb).toBe(3);
    expect(SS_PTE.field.EMT.width).toBe(3);
    expect(SS_PTE.field.IPAT.lsb).toBe(6);
  });

  it("round-trips every field through encode and decode", () => {
    const values = {
      R: 1,
      W: 1,
      X: 1,
      EMT: 7,
      IPAT: 1,
      PS: 1,
      A: 1,
      D: 1,
      IGN10: 1,
      SNP: 1,
      ADDR: 0xf_edcb_a987_6000,
      IGN52: 0x3ff,
      TM: 1,
      IGN63: 1,
    };
    const w = encode(SS_PTE, values);
    expect([w[0], w[1]]).toEqual([0xa987_6fff, 0xffff_edcb]);
    expect(decode(SS_PTE, w)).toEqual(values);
  });

  it("has no reserved bits in the layout: every bit is a field or ignored", () => {
    const all = Uint32Array.of(0xffff_ffff, 0xffff_ffff);
    expect(hasReservedBits(SS_PTE, all)).toBe(false);
    expect(reservedBitsSet(SS_PTE, all)).toEqual([]);
    const ignored = SS_PTE.fields.filter((f) => f.ignored).map((f) => [f.lsb, f.width]);
    expect(ignored).toEqual([
      [10, 1],
      [52, 10],
      [63, 1],
    ]);
  });

  it("prints a leaf by field name", () => {
    const w = encode(SS_PTE, { R: 1, W: 1, PS: 1, ADDR: 0x4020_0000 });
    expect(formatLayout(SS_PTE, w)).toBe("R=1 W=1 PS=1 ADDR=0x40200000");
  });
});

describe("second-stage entry rules", () => {
  it("an entry is present iff R or W is set", () => {
    expect(ssPteIsPresent(SS_PTE_R)).toBe(true);
    expect(ssPteIsPresent(SS_PTE_W)).toBe(true);
    expect(ssPteIsPresent(0xffff_f000 | SS_PTE_PS | SS_PTE_SNP | SS_PTE_X)).toBe(false);
    expect(ssPteKind(0x1000 | SS_PTE_X, 0, 1)).toBe(VTD_PTE_NONE);
  });

  it("every present SS-PTE is a 4 KiB leaf, bit 7 being ignored there", () => {
    expect(ssPteKind(0x5000 | SS_PTE_R, 0, 1)).toBe(VTD_PTE_LEAF);
    expect(ssPteKind(0x5000 | SS_PTE_R | SS_PTE_PS, 0, 1)).toBe(VTD_PTE_LEAF);
  });

  it("PS makes a leaf at levels 2 and 3 and is bad at levels 4 and 5", () => {
    expect(ssPteKind(0x20_0000 | 3 | SS_PTE_PS, 0, 2)).toBe(VTD_PTE_LEAF);
    expect(ssPteKind(0x4000_0000 | 3 | SS_PTE_PS, 0, 3)).toBe(VTD_PTE_LEAF);
    expect(ssPteKind(0x4000_0000 | 3 | SS_PTE_PS, 0, 4)).toBe(VTD_PTE_BAD);
    expect(ssPteKind(3 | SS_PTE_PS, 0, 5)).toBe(VTD_PTE_BAD);
    for (const level of [2, 3, 4, 5]) expect(ssPteKind(0x7000 | 3, 1, level)).toBe(VTD_PTE_TABLE);
  });

  it("a large leaf with address bits inside its page is bad", () => {
    expect(ssPteKind(0x20_1000 | 1 | SS_PTE_PS, 0, 2)).toBe(VTD_PTE_BAD);
    expect(ssPteKind(0x4010_0000 | 1 | SS_PTE_PS, 0, 3)).toBe(VTD_PTE_BAD);
    expect(ssPteKind(0x4020_0000 | 1 | SS_PTE_PS, 0, 3)).toBe(VTD_PTE_BAD);
  });

  it("the address of a table entry keeps every ADDR bit; a leaf's drops those in its page", () => {
    expect(vtdPteAddr(0x1234_5003, 0xa)).toBe(0xa_1234_5000);
    expect(vtdPteAddr(0x1234_5003, 0xfff0_000a)).toBe(0xa_1234_5000);
    expect(vtdPteAddr(0x1234_5083, 0xa, 2)).toBe(0xa_1220_0000);
    expect(vtdPteAddr(0x5234_5083, 0xa, 3)).toBe(0xa_4000_0000);
  });
});

describe("walk arithmetic", () => {
  it("levels start at IOVA bits 12, 21, 30, 39, 48 and map 4K, 2M, 1G leaves", () => {
    expect([1, 2, 3, 4, 5].map(vtdLevelShift)).toEqual([12, 21, 30, 39, 48]);
    expect([1, 2, 3, 4].map(vtdLeafSize)).toEqual([0x1000, 0x20_0000, 0x4000_0000, 0]);
  });

  it("indexes the top of a 57-bit space exactly", () => {
    const top = 2 ** 57 - 4096;
    expect([1, 2, 3, 4, 5].map((l) => vtdLevelIndex(top, l))).toEqual([511, 511, 511, 511, 511]);
    expect(vtdLevelIndex(2 ** 56, 5)).toBe(256);
    expect(vtdLevelIndex(2 ** 56, 4)).toBe(0);
    expect(vtdLevelIndex(2 ** 47, 4)).toBe(256);
  });

  test.prop([fc.bigInt({ min: 0n, max: 2n ** 45n - 1n })], { seed: 0x55_7e, numRuns: 300 })(
    "the index of a page-aligned IOVA below 2^57 agrees with 64-bit shifts",
    (vpn) => {
      const iova = vpn * 4096n;
      for (let level = 1; level <= 5; level++) {
        const want = Number((iova >> BigInt(vtdLevelShift(level))) & 511n);
        expect(vtdLevelIndex(Number(iova), level)).toBe(want);
      }
    },
  );
});
