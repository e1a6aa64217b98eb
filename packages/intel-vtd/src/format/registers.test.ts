import { fc, test } from "@fast-check/vitest";
import {
  decode,
  encode,
  type FieldValues,
  hasReservedBits,
  type Layout,
  reservedBitsSet,
} from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { FRCD } from "./fault-record.js";
import {
  CAP_REG,
  CCMD_REG,
  ECAP_REG,
  ECTL_IM,
  ECTL_IP,
  FECTL_REG,
  FRCD_F,
  FSTS_AFO,
  FSTS_APF,
  FSTS_FRI_MASK,
  FSTS_ICE,
  FSTS_IQE,
  FSTS_ITE,
  FSTS_PFO,
  FSTS_PPF,
  FSTS_PRO,
  FSTS_REG,
  GCMD_CFI,
  GCMD_EAFL,
  GCMD_IRE,
  GCMD_QIE,
  GCMD_REG,
  GCMD_SFL,
  GCMD_SIRTP,
  GCMD_SRTP,
  GCMD_TE,
  GCMD_WBF,
  GSTS_AFLS,
  GSTS_CFIS,
  GSTS_FLS,
  GSTS_IRES,
  GSTS_IRTPS,
  GSTS_ONE_SHOT_MASK,
  GSTS_QIES,
  GSTS_REG,
  GSTS_RTPS,
  GSTS_TES,
  GSTS_WBFS,
  ICS_REG,
  IECTL_REG,
  IOTLB_REG,
  IQA_REG,
  IQER_REG,
  IQH_REG,
  IQT_REG,
  IRTA_REG,
  IVA_REG,
  iqDescSize,
  iqEntries,
  iqSizeBytes,
  PECTL_REG,
  PQA_REG,
  PQH_REG,
  PQT_REG,
  PRS_PPR,
  PRS_PRO,
  PRS_REG,
  prqSizeBytes,
  RTADDR_REG,
  RTADDR_TTM_SCALABLE,
  VER_REG,
  VTD_REG,
} from "./registers.js";

const LAYOUTS: readonly Layout[] = [
  VER_REG,
  CAP_REG,
  ECAP_REG,
  GCMD_REG,
  GSTS_REG,
  RTADDR_REG,
  CCMD_REG,
  FSTS_REG,
  FECTL_REG,
  IVA_REG,
  IOTLB_REG,
  IQH_REG,
  IQT_REG,
  IQA_REG,
  ICS_REG,
  IECTL_REG,
  IQER_REG,
  IRTA_REG,
  PQH_REG,
  PQT_REG,
  PQA_REG,
  PRS_REG,
  PECTL_REG,
];

/** Random raw values for every field of `layout` (address fields in place, aligned). */
function arbValues(layout: Layout): fc.Arbitrary<FieldValues> {
  const rec: Record<string, fc.Arbitrary<number | bigint>> = {};
  for (const f of layout.fields) {
    const raw =
      f.width <= 30
        ? fc.integer({ min: 0, max: 2 ** f.width - 1 })
        : fc.bigInt({ min: 0n, max: (1n << BigInt(f.width)) - 1n });
    rec[f.name] = f.addr
      ? raw.map((v) => {
          // Keep addresses below 2^52 so decode gives back numbers.
          const big = (BigInt(v) & ((1n << BigInt(52 - (f.lsb & 63))) - 1n)) << BigInt(f.lsb & 63);
          return Number(big);
        })
      : raw.map((v) => (typeof v === "bigint" && f.width <= 53 ? Number(v) : v));
  }
  return fc.record(rec);
}

describe("register offsets", () => {
  it("the fixed registers sit where the kernel's DMAR_*_REG put them", () => {
    expect(VTD_REG.CAP).toBe(0x08);
    expect(VTD_REG.GSTS).toBe(0x1c);
    expect(VTD_REG.FSTS).toBe(0x34);
    expect(VTD_REG.IQER).toBe(0xb0);
    expect(VTD_REG.PRS).toBe(0xdc);
    expect(VTD_REG.PEUADDR).toBe(0xec);
    expect(Object.isFrozen(VTD_REG)).toBe(true);
  });

  it("no two registers share an offset", () => {
    const offs = Object.values(VTD_REG);
    expect(new Set(offs).size).toBe(offs.length);
  });
});

describe("register layouts", () => {
  for (const layout of LAYOUTS) {
    test.prop([arbValues(layout)], { seed: 11, numRuns: 50 })(
      `${layout.name}: encode then decode gives the fields back`,
      (values) => {
        const w = encode(layout, values);
        expect(hasReservedBits(layout, w)).toBe(false);
        const back = decode(layout, w);
        for (const f of layout.fields) expect(back[f.name]).toEqual(values[f.name]);
      },
    );

    it(`${layout.name}: every bit no field covers is reserved`, () => {
      for (let bit = 0; bit < layout.bits; bit++) {
        const w = new Uint32Array(layout.words);
        w[bit >>> 5] = (1 << (bit & 31)) >>> 0;
        const covered = layout.fields.some((f) => bit >= f.lsb && bit < f.lsb + f.width);
        expect(reservedBitsSet(layout, w)).toEqual(covered ? [] : [bit]);
      }
    });
  }

  it("CAP has the kernel's positions (SAGAW 12:8, MGAW 21:16, FRO 33:24, NFR 47:40, MAMV 53:48)", () => {
    const w = encode(CAP_REG, { SAGAW: 0b100, MGAW: 47, FRO: 0x22, NFR: 7, MAMV: 18, PSI: 1 });
    const v = (BigInt(w[1] as number) << 32n) | BigInt(w[0] as number);
    expect((v >> 8n) & 0x1fn).toBe(4n);
    expect((v >> 16n) & 0x3fn).toBe(47n);
    expect(((v >> 24n) & 0x3ffn) * 16n).toBe(0x220n);
    expect((v >> 40n) & 0xffn).toBe(7n);
    expect((v >> 48n) & 0x3fn).toBe(18n);
    expect((v >> 39n) & 1n).toBe(1n);
  });

  it("ECAP has the kernel's positions (IRO 17:8, PSS 39:35, SMTS 43, FLTS 47)", () => {
    const w = encode(ECAP_REG, { IRO: 0xf, PSS: 19, SMTS: 1, FLTS: 1, PASID: 1 });
    const v = (BigInt(w[1] as number) << 32n) | BigInt(w[0] as number);
    expect(((v >> 8n) & 0x3ffn) * 16n).toBe(0xf0n);
    expect((v >> 35n) & 0x1fn).toBe(19n);
    expect((v >> 43n) & 1n).toBe(1n);
    expect((v >> 47n) & 1n).toBe(1n);
    expect((v >> 40n) & 1n).toBe(1n);
  });

  it("RTADDR.TTM = scalable is bit 10 (the kernel's DMA_RTADDR_SMT)", () => {
    expect(encode(RTADDR_REG, { TTM: RTADDR_TTM_SCALABLE })[0]).toBe(1 << 10);
  });
});

describe("bit constants", () => {
  it("GCMD and GSTS bits match their layouts", () => {
    const g = GCMD_REG.field;
    expect([GCMD_TE, GCMD_SRTP, GCMD_SFL, GCMD_EAFL, GCMD_WBF]).toEqual(
      ["TE", "SRTP", "SFL", "EAFL", "WBF"].map((n) => g[n]?.inPlace),
    );
    expect([GCMD_QIE, GCMD_IRE, GCMD_SIRTP, GCMD_CFI]).toEqual(
      ["QIE", "IRE", "SIRTP", "CFI"].map((n) => g[n]?.inPlace),
    );
    const s = GSTS_REG.field;
    expect([GSTS_TES, GSTS_RTPS, GSTS_FLS, GSTS_AFLS, GSTS_WBFS]).toEqual(
      ["TES", "RTPS", "FLS", "AFLS", "WBFS"].map((n) => s[n]?.inPlace),
    );
    expect([GSTS_QIES, GSTS_IRES, GSTS_IRTPS, GSTS_CFIS]).toEqual(
      ["QIES", "IRES", "IRTPS", "CFIS"].map((n) => s[n]?.inPlace),
    );
  });

  it("GSTS_ONE_SHOT_MASK keeps the persistent enables and drops the one-shot status bits", () => {
    const persistent = GSTS_TES | GSTS_AFLS | GSTS_QIES | GSTS_IRES | GSTS_CFIS;
    const oneShot = GSTS_RTPS | GSTS_FLS | GSTS_WBFS | GSTS_IRTPS;
    expect((GSTS_ONE_SHOT_MASK & persistent) >>> 0).toBe(persistent >>> 0);
    expect(GSTS_ONE_SHOT_MASK & oneShot).toBe(0);
    expect(GSTS_ONE_SHOT_MASK).toBe(0x96ffffff);
  });

  it("FSTS, PRS and event-control bits match their layouts", () => {
    const f = FSTS_REG.field;
    expect([
      FSTS_PFO,
      FSTS_PPF,
      FSTS_AFO,
      FSTS_APF,
      FSTS_IQE,
      FSTS_ICE,
      FSTS_ITE,
      FSTS_PRO,
    ]).toEqual(["PFO", "PPF", "AFO", "APF", "IQE", "ICE", "ITE", "PRO"].map((n) => f[n]?.inPlace));
    expect(FSTS_FRI_MASK).toBe(f.FRI?.inPlace);
    expect([PRS_PPR, PRS_PRO]).toEqual([PRS_REG.field.PPR?.inPlace, PRS_REG.field.PRO?.inPlace]);
    expect([ECTL_IM, ECTL_IP]).toEqual([FECTL_REG.field.IM?.inPlace, FECTL_REG.field.IP?.inPlace]);
    expect(FRCD_F).toBe((FRCD.field.F?.inPlace ?? 0) >>> 0);
  });
});

describe("queue sizes", () => {
  it("an invalidation queue holds 2^(QS+8) 128-bit or 2^(QS+7) 256-bit descriptors", () => {
    expect(iqEntries(0, 0)).toBe(256);
    expect(iqEntries(1, 1)).toBe(256); // Linux's scalable-mode queue: 8 KiB of 32-byte slots
    expect(iqSizeBytes(1)).toBe(8192);
    expect(iqDescSize(0)).toBe(16);
    expect(iqDescSize(1)).toBe(32);
    for (let qs = 0; qs < 8; qs++) {
      for (const dw of [0, 1]) expect(iqEntries(qs, dw) * iqDescSize(dw)).toBe(iqSizeBytes(qs));
    }
  });

  it("a page request queue of PQS 4 is 64 KiB (Linux's PRQ_ORDER)", () => {
    expect(prqSizeBytes(4)).toBe(0x10000);
  });
});
