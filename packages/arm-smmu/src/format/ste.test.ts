import { decode, encode, hasReservedBits, reservedBitsSet } from "@iommu-sim/iommu-core/platform";
import { describeLayouts } from "@iommu-sim/iommu-core/testing/layout";
import { describe, expect, it } from "vitest";
import {
  EATS_TRANS,
  L1_STD,
  L1_STD_SPAN_LINUX,
  S1DSS_SSID0,
  S1FMT_LINEAR,
  SHCFG_INCOMING,
  STE,
  STE_CFG_ABORT,
  STE_CFG_BYPASS,
  STE_CFG_NESTED,
  STE_CFG_S1_TRANS,
  STE_CFG_S2_TRANS,
  STE_SIZE,
  STE0_CONFIG_MASK,
  STE0_CONFIG_SHIFT,
  STE0_V,
} from "./ste.js";

describeLayouts([STE, L1_STD]);

describe("STE", () => {
  it("is 64 bytes with the Config encodings of the spec", () => {
    expect(STE.words * 4).toBe(STE_SIZE);
    expect([
      STE_CFG_ABORT,
      STE_CFG_BYPASS,
      STE_CFG_S1_TRANS,
      STE_CFG_S2_TRANS,
      STE_CFG_NESTED,
    ]).toEqual([0, 4, 5, 6, 7]);
    expect([STE0_V, STE0_CONFIG_SHIFT, STE0_CONFIG_MASK]).toEqual([1, 1, 7]);
  });

  it("keeps RES0 and Secure-only bits reserved", () => {
    // 58:56 and 107:105 RES0; 193:192 S2NSW/S2NSA (Secure only); 247:244 TTB[55:52] (D128 only);
    // 252:248 and 255 RES0; 293:288 S_S2T0SZ, 319:304 MECID, 328 MPAM_NS (Secure/Realm only);
    // 383:376 RES0; 385:384 S2SW/S2SA; 439:388 S_S2TTB; 447 RES0.
    for (const b of [
      56, 58, 105, 107, 192, 193, 244, 247, 248, 252, 255, 288, 304, 328, 376, 384, 388, 447,
    ]) {
      const w = new Uint32Array(STE.words);
      w[b >>> 5] = (1 << (b & 31)) >>> 0;
      expect(reservedBitsSet(STE, w)).toEqual([b]);
    }
  });

  it("encodes an S1 STE with a linear CD table as arm_smmu_make_cdtable_ste writes it", () => {
    // V | Config=S1 | S1Fmt linear | S1ContextPtr | S1CDMax=5; S1DSS=SSID0, S1CIR=S1COR=WBRA,
    // S1CSH=ISH, S1STALLD (stalls not enabled for the master), EATS=1 (ATS enabled).
    const w = encode(STE, {
      V: 1,
      Config: STE_CFG_S1_TRANS,
      S1Fmt: S1FMT_LINEAR,
      S1ContextPtr: 0x8_0000_1000,
      S1CDMax: 5,
      S1DSS: S1DSS_SSID0,
      S1CIR: 1,
      S1COR: 1,
      S1CSH: 3,
      S1STALLD: 1,
      EATS: EATS_TRANS,
    });
    // dw0 = 1 | 5 << 1 | ptr & GENMASK(51, 6) | 5 << 59; dw1 = 2 | 1 << 2 | 1 << 4 | 3 << 6 | 1 << 27 | 1 << 28.
    expect([...w.subarray(0, 4)]).toEqual([0x0000100b, 0x28000008, 0x180000d6, 0]);
    expect([...w.subarray(4)].every((x) => x === 0)).toBe(true);
  });

  it("encodes an S2 STE with the VTCR fields at dw2[50:32] as arm_smmu_make_s2_domain_ste writes it", () => {
    const w = encode(STE, {
      V: 1,
      Config: STE_CFG_S2_TRANS,
      SHCFG: SHCFG_INCOMING,
      S2VMID: 1,
      S2T0SZ: 24,
      S2SL0: 1,
      S2IR0: 1,
      S2OR0: 1,
      S2SH0: 3,
      S2TG: 0,
      S2PS: 2,
      S2AA64: 1,
      S2PTW: 1,
      S2R: 1,
      S2TTB: 0x4000_2000,
    });
    expect(w[0]).toBe(0xd);
    expect(w[3]).toBe(1 << (44 - 32)); // STRTAB_STE_1_SHCFG_INCOMING
    expect(w[4]).toBe(1);
    // STRTAB_STE_2_VTCR (T0SZ | SL0 << 6 | IRGN << 8 | ORGN << 10 | SH << 12 | PS << 16), then
    // S2AA64 (bit 51), S2PTW (54) and S2R (58) of dw2.
    expect(w[5]).toBe(
      (24 |
        (1 << 6) |
        (1 << 8) |
        (1 << 10) |
        (3 << 12) |
        (2 << 16) |
        (1 << 19) |
        (1 << 22) |
        (1 << 26)) >>>
        0,
    );
    expect([w[6], w[7]]).toEqual([0x4000_2000, 0]); // STRTAB_STE_3_S2TTB_MASK = [51:4]
  });

  it("places S2S and S2R at STE[185] and STE[186] (kernel dw2 bits 57 and 58)", () => {
    expect(STE.field.S2S?.lsb).toBe(128 + 57);
    expect(STE.field.S2R?.lsb).toBe(128 + 58);
    expect(STE.field.S2HA?.lsb).toBe(184);
    expect(STE.field.S2HD?.lsb).toBe(183);
  });

  it("decodes the bypass STE newer kernels write with ATTR_TYPES_OVR", () => {
    const w = new Uint32Array(16);
    w[0] = 1 | (4 << 1);
    w[3] = 1 << 12;
    const v = decode(STE, w);
    expect([v.V, v.Config, v.SHCFG, v.S1ContextPtr]).toEqual([1, STE_CFG_BYPASS, 1, 0]);
    expect(hasReservedBits(STE, w)).toBe(false);
  });
});

describe("L1STD", () => {
  it("encodes Span 9 and the L2 pointer as arm_smmu_write_strtab_l1_desc does", () => {
    const w = encode(L1_STD, { Span: L1_STD_SPAN_LINUX, L2Ptr: 0x8_1234_4000 });
    expect([w[0], w[1]]).toEqual([0x12344009, 0x8]);
  });
  it("keeps bit 5 and bits 63:56 reserved", () => {
    expect(L1_STD.reserved[0]).toBe(0x20);
    expect(L1_STD.reserved[1]).toBe(0xff000000);
  });
});
