import { decode, encode, hasReservedBits, reservedBitsSet } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import {
  LPAE_DESC_ADDR_HI,
  LPAE_DESC_ADDR_LO,
  LPAE_DESC_CONT_HI,
  LPAE_DESC_RES0_HI,
  LPAE_DESC_XN_HI,
  LPAE_S1_AP_RDONLY,
  LPAE_S1_AP_UNPRIV,
  LPAE_S1_BLOCK_DESC,
  LPAE_S1_NSTABLE_HI,
  LPAE_S1_TABLE_DESC,
  LPAE_S2_BLOCK_DESC,
  LPAE_S2_TABLE_DESC,
  lpaeDescAddrHi,
  lpaeDescAddrLo,
  lpaeDescPa,
} from "./lpae-desc.js";

describe("LPAE descriptor layouts", () => {
  it("a stage-1 page round-trips through encode/decode", () => {
    const v = {
      Valid: 1,
      Type: 1,
      AttrIndx: 1,
      AP: 1,
      SH: 3,
      AF: 1,
      nG: 1,
      OA: 0xabc_1234_5000,
      Contiguous: 1,
      PXN: 1,
      UXN: 1,
      SW: 0xf,
    };
    const w = encode(LPAE_S1_BLOCK_DESC, v);
    expect([w[0], w[1]]).toEqual([0x1234_5f47, 0x07f0_0abc]);
    expect(decode(LPAE_S1_BLOCK_DESC, w)).toMatchObject(v);
    expect(hasReservedBits(LPAE_S1_BLOCK_DESC, w)).toBe(false);
  });

  it("every layout round-trips all fields set to their maximum", () => {
    for (const layout of [
      LPAE_S1_TABLE_DESC,
      LPAE_S1_BLOCK_DESC,
      LPAE_S2_TABLE_DESC,
      LPAE_S2_BLOCK_DESC,
    ]) {
      const v: Record<string, number> = {};
      for (const f of layout.fields) {
        v[f.name] = f.addr ? (2 ** f.width - 1) * 2 ** f.lsb : 2 ** f.width - 1;
      }
      expect(decode(layout, encode(layout, v)), layout.name).toEqual(v);
    }
  });

  it("bits [49:48] are reserved in every layout, and [63:59] in a stage-2 table", () => {
    const w = new Uint32Array([0x3, 0x3_0000]);
    for (const layout of [
      LPAE_S1_TABLE_DESC,
      LPAE_S1_BLOCK_DESC,
      LPAE_S2_TABLE_DESC,
      LPAE_S2_BLOCK_DESC,
    ]) {
      expect(reservedBitsSet(layout, w), layout.name).toEqual([48, 49]);
    }
    expect(reservedBitsSet(LPAE_S2_TABLE_DESC, new Uint32Array([3, 0xf800_0000]))).toEqual([
      59, 60, 61, 62, 63,
    ]);
    expect(hasReservedBits(LPAE_S1_TABLE_DESC, new Uint32Array([3, 0xf800_0000]))).toBe(false);
    expect(reservedBitsSet(LPAE_S2_BLOCK_DESC, new Uint32Array([1 << 11, 0]))).toEqual([11]);
    expect(LPAE_DESC_RES0_HI & 0x3_0000).toBe(0x3_0000);
  });

  it("hot constants match the kernel's bit positions", () => {
    expect(LPAE_DESC_ADDR_LO >>> 0).toBe(0xffff_f000);
    expect(LPAE_DESC_ADDR_HI).toBe(0xffff);
    expect(LPAE_S1_AP_UNPRIV).toBe(1 << 6);
    expect(LPAE_S1_AP_RDONLY).toBe(1 << 7);
    expect(LPAE_DESC_XN_HI).toBe(3 << 21);
    expect(LPAE_DESC_CONT_HI).toBe(1 << 20);
    expect(LPAE_S1_NSTABLE_HI >>> 0).toBe(0x8000_0000);
  });

  it("a 52-bit OA with the 64K granule packs OA[51:48] into bits [15:12]", () => {
    const pa = 0xa_1234_5678_0000;
    const lo = lpaeDescAddrLo(pa, 0x1_0000);
    const hi = lpaeDescAddrHi(pa);
    expect(lo >>> 0).toBe(0x5678_a000);
    expect(hi).toBe(0x1234);
    expect(lpaeDescPa(lo | 3, hi, 0x1_0000)).toBe(pa);
    expect(lpaeDescPa(0x5678_0003, 0x1234, 0x1000)).toBe(0x1234_5678_0000);
    expect(lpaeDescPa(0x5678_7003, 0x1234, 0x4000)).toBe(0x1234_5678_4000);
  });
});
