import { decode, encode, hasReservedBits, reservedBitsSet } from "@iommu-sim/iommu-core/platform";
import { describeLayouts } from "@iommu-sim/iommu-core/testing/layout";
import { describe, expect, it } from "vitest";
import {
  CD,
  CD_SIZE,
  L1_CD,
  TG0_4K,
  TG0_16K,
  TG0_64K,
  TG1_4K,
  TG1_16K,
  TG1_64K,
  tg0PageShift,
  tg1PageShift,
} from "./cd.js";

describeLayouts([CD, L1_CD]);

describe("CD", () => {
  it("is 64 bytes", () => {
    expect(CD.words * 4).toBe(CD_SIZE);
  });

  it("encodes an S1 CD as arm_smmu_make_s1_cd writes it for a 48-bit VA, 4K granule", () => {
    // io-pgtable TCR: T0SZ = 64 - 48, TG0 = 4K, IRGN0 = ORGN0 = WBWA, SH0 = ISH, IPS = 48 bits;
    // EPD1, V, AA64, R, A, ASET, ASID; dw1 = TTB0 & [51:4]; dw3 = MAIR (Attr0 0x44, Attr1 0xff,
    // Attr2 0x04).
    const w = encode(CD, {
      T0SZ: 16,
      TG0: TG0_4K,
      IR0: 1,
      OR0: 1,
      SH0: 3,
      EPD1: 1,
      V: 1,
      IPS: 5,
      AA64: 1,
      R: 1,
      A: 1,
      ASET: 1,
      ASID: 0x1234,
      TTB0: 0x8_7654_3000,
      MAIR0: 0x0004ff44,
    });
    // dw0 = 16 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 30 | 1 << 31 | 5 << 32 | 1 << 41 | 1 << 45 |
    //       1 << 46 | 1 << 47 | 0x1234 << 48
    expect([...w.subarray(0, 8)]).toEqual([
      0xc0003510, 0x1234e205, 0x76543000, 0x8, 0, 0, 0x0004ff44, 0,
    ]);
    expect(hasReservedBits(CD, w)).toBe(false);
  });

  it("reads TG0 and TG1 with their different granule encodings", () => {
    expect([TG0_4K, TG0_64K, TG0_16K].map(tg0PageShift)).toEqual([12, 16, 14]);
    expect([TG1_16K, TG1_4K, TG1_64K].map(tg1PageShift)).toEqual([14, 12, 16]);
    expect([tg0PageShift(3), tg1PageShift(0)]).toEqual([0, 0]);
  });

  it("keeps the D128-only TTB bits and RES0 ranges reserved", () => {
    // TTB0 address bits [55:52] at 119:116, 121:120 RES0, TTB1 [55:52] at 183:180, 185:184 RES0,
    // 383:376 RES0, 447:432 RES0, 511:496 RES0.
    for (const b of [116, 119, 120, 121, 180, 183, 184, 185, 376, 383, 432, 447, 496, 511]) {
      const w = new Uint32Array(CD.words);
      w[b >>> 5] = (1 << (b & 31)) >>> 0;
      expect(reservedBitsSet(CD, w)).toEqual([b]);
    }
  });

  it("decodes the EPD0 'quiet' SVA CD with only the header bits set", () => {
    const w = encode(CD, { EPD0: 1, EPD1: 1, V: 1, AA64: 1, R: 1, A: 1, ASID: 7 });
    const v = decode(CD, w);
    expect([v.EPD0, v.T0SZ, v.TTB0, v.ASID]).toEqual([1, 0, 0, 7]);
  });
});

describe("L1CD", () => {
  it("encodes V and a 4 KiB aligned L2 pointer as the kernel does", () => {
    const w = encode(L1_CD, { V: 1, L2Ptr: 0x8_1234_0000 });
    expect([w[0], w[1]]).toEqual([0x12340001, 0x8]);
    expect(L1_CD.reserved[0]).toBe(0xffe);
    expect(L1_CD.reserved[1]).toBe(0xff000000);
  });
});
