import {
  decode,
  encode,
  type FieldValues,
  hasReservedBits,
  type Layout,
} from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { CD } from "../format/cd.js";
import {
  S1DSS_BYPASS,
  S1DSS_SSID0,
  S1DSS_TERMINATE,
  STE,
  STE_CFG_ABORT,
  STE_CFG_BYPASS,
  STE_CFG_NESTED,
  STE_CFG_S1_TRANS,
  STE_CFG_S2_TRANS,
} from "../format/ste.js";
import {
  type CdtableSteParams,
  clearCd,
  makeAbortSte,
  makeBypassSte,
  makeCdtableSte,
  makeNestedSte,
  makeS1Cd,
  makeS2DomainSte,
  makeSvaCd,
  type S1CdParams,
  type S2DomainSteParams,
  type SmmuEntryFeatures,
  type SvaCdParams,
  validateVste,
} from "./entries.js";

/** The non-zero fields of an entry, decoded; reserved bits must be clear. */
function fieldsOf(layout: Layout, w: Uint32Array): FieldValues {
  expect(hasReservedBits(layout, w)).toBe(false);
  const out: FieldValues = {};
  for (const [k, v] of Object.entries(decode(layout, w))) if (v !== 0 && v !== 0n) out[k] = v;
  return out;
}

function make(fill: (w: Uint32Array) => void): Uint32Array {
  const w = new Uint32Array(16).fill(0xdeadbeef); // the makers start from zero
  fill(w);
  return w;
}

const ste = (fill: (w: Uint32Array) => void) => fieldsOf(STE, make(fill));
const cd = (fill: (w: Uint32Array) => void) => fieldsOf(CD, make(fill));

const FEAT: SmmuEntryFeatures = { stalls: true, attrTypesOvr: true, e2h: false };
const PLAIN: SmmuEntryFeatures = { stalls: false, attrTypesOvr: false, e2h: false };

const CDT: CdtableSteParams = {
  cdTablePa: 0x8_0000_1000,
  s1fmt: 0,
  s1cdmax: 5,
  s1dss: S1DSS_SSID0,
  ats: false,
  stallEnabled: false,
};

const S2: S2DomainSteParams = {
  vmid: 7,
  vttbr: 0x1234_5678_9000,
  t0sz: 24,
  sl0: 1,
  irgn: 1,
  orgn: 1,
  sh: 3,
  tg: 0,
  ps: 5,
  ats: false,
  stallEnabled: false,
};

const S1CD: S1CdParams = {
  asid: 42,
  ttb0: 0x8_4000_0000,
  t0sz: 16,
  tg0: 0,
  irgn0: 1,
  orgn0: 1,
  sh0: 3,
  ips: 5,
  mair: [0x0004ff44, 0x000000f4],
  stallEnabled: false,
};

const SVA: SvaCdParams = {
  asid: 9,
  ips: 5,
  mair: [0xbbff4400, 0x04],
  stallEnabled: false,
  mm: { pgd: 0x4_2000_0000, vaBits: 48, pageShift: 12 },
};

describe("makeAbortSte (arm_smmu_make_abort_ste)", () => {
  it("is V with Config abort and nothing else", () => {
    expect(ste(makeAbortSte)).toEqual({ V: 1 });
    expect(Array.from(make(makeAbortSte))).toEqual([1, ...new Array(15).fill(0)]);
  });
});

describe("makeBypassSte (arm_smmu_make_bypass_ste)", () => {
  it("sets SHCFG = incoming only when the SMMU overrides attribute types", () => {
    expect(ste((w) => makeBypassSte(w, FEAT))).toEqual({
      V: 1,
      Config: STE_CFG_BYPASS,
      SHCFG: 1,
    });
    expect(ste((w) => makeBypassSte(w, PLAIN))).toEqual({ V: 1, Config: STE_CFG_BYPASS });
  });
});

describe("makeCdtableSte (arm_smmu_make_cdtable_ste)", () => {
  it("points at the CD table with WB-RA, inner-shareable CD fetches", () => {
    expect(ste((w) => makeCdtableSte(w, CDT, PLAIN))).toEqual({
      V: 1,
      Config: STE_CFG_S1_TRANS,
      S1ContextPtr: 0x8_0000_1000,
      S1CDMax: 5,
      S1DSS: S1DSS_SSID0,
      S1CIR: 1,
      S1COR: 1,
      S1CSH: 3,
    });
  });

  it("sets S1Fmt for a 2-level table and EATS = full ATS when ATS is enabled", () => {
    expect(
      ste((w) => makeCdtableSte(w, { ...CDT, s1fmt: 2, s1cdmax: 16, ats: true }, PLAIN)),
    ).toMatchObject({
      S1Fmt: 2,
      S1CDMax: 16,
      EATS: 1,
    });
  });

  it("sets S1STALLD when the SMMU can stall but the master does not", () => {
    expect(ste((w) => makeCdtableSte(w, CDT, FEAT)).S1STALLD).toBe(1);
    expect(
      ste((w) => makeCdtableSte(w, { ...CDT, stallEnabled: true }, FEAT)).S1STALLD,
    ).toBeUndefined();
    expect(ste((w) => makeCdtableSte(w, CDT, PLAIN)).S1STALLD).toBeUndefined();
  });

  it("sets SHCFG = incoming only for S1DSS = bypass on an SMMU that overrides attributes", () => {
    expect(ste((w) => makeCdtableSte(w, { ...CDT, s1dss: S1DSS_BYPASS }, FEAT)).SHCFG).toBe(1);
    expect(
      ste((w) => makeCdtableSte(w, { ...CDT, s1dss: S1DSS_BYPASS }, PLAIN)).SHCFG,
    ).toBeUndefined();
    expect(ste((w) => makeCdtableSte(w, CDT, FEAT)).SHCFG).toBeUndefined();
    expect(ste((w) => makeCdtableSte(w, { ...CDT, s1dss: S1DSS_TERMINATE }, FEAT))).toMatchObject({
      V: 1,
      S1CIR: 1,
    });
  });

  it("uses StreamWorld EL2 with E2H, else NS-EL1 and VMID 0", () => {
    expect(ste((w) => makeCdtableSte(w, CDT, { ...PLAIN, e2h: true })).STRW).toBe(2);
    const el1 = ste((w) => makeCdtableSte(w, CDT, PLAIN));
    expect(el1.STRW).toBeUndefined();
    expect(el1.S2VMID).toBeUndefined();
  });

  it("drops CD table address bits outside [51:6] as the kernel's mask does", () => {
    expect(
      ste((w) => makeCdtableSte(w, { ...CDT, cdTablePa: 2 ** 52 + 0x1000 + 0x3f }, PLAIN))
        .S1ContextPtr,
    ).toBe(0x1000);
  });

  it("treats a field value that does not fit as a model bug", () => {
    expect(() => make((w) => makeCdtableSte(w, { ...CDT, s1cdmax: 32 }, PLAIN))).toThrow(/fit/);
  });
});

describe("makeS2DomainSte (arm_smmu_make_s2_domain_ste)", () => {
  it("carries the VMID, VTCR and VTTBR with S2AA64, S2PTW and S2R", () => {
    expect(ste((w) => makeS2DomainSte(w, S2, PLAIN))).toEqual({
      V: 1,
      Config: STE_CFG_S2_TRANS,
      S2VMID: 7,
      S2T0SZ: 24,
      S2SL0: 1,
      S2IR0: 1,
      S2OR0: 1,
      S2SH0: 3,
      S2PS: 5,
      S2AA64: 1,
      S2PTW: 1,
      S2R: 1,
      S2TTB: 0x1234_5678_9000,
    });
  });

  it("sets EATS for ATS, S2S for a stalling master and SHCFG when attributes are overridden", () => {
    expect(ste((w) => makeS2DomainSte(w, { ...S2, ats: true }, FEAT))).toMatchObject({
      EATS: 1,
      SHCFG: 1,
    });
    expect(ste((w) => makeS2DomainSte(w, { ...S2, stallEnabled: true }, PLAIN)).S2S).toBe(1);
    expect(ste((w) => makeS2DomainSte(w, S2, PLAIN)).S2S).toBeUndefined();
  });

  it("sets S2FWB only for a nesting parent on an SMMU with FEAT_S2FWB", () => {
    const fwb = { ...PLAIN, s2fwb: true };
    expect(ste((w) => makeS2DomainSte(w, { ...S2, nestParent: true }, fwb)).S2FWB).toBe(1);
    expect(ste((w) => makeS2DomainSte(w, S2, fwb)).S2FWB).toBeUndefined();
    expect(
      ste((w) => makeS2DomainSte(w, { ...S2, nestParent: true }, PLAIN)).S2FWB,
    ).toBeUndefined();
  });

  it("drops VTTBR bits outside [51:4]", () => {
    expect(
      ste((w) => makeS2DomainSte(w, { ...S2, vttbr: 2 ** 52 + 0x5000 + 0xf }, PLAIN)).S2TTB,
    ).toBe(0x5000);
  });
});

describe("validateVste (arm_smmu_validate_vste)", () => {
  const vste = (f: FieldValues) => encode(STE, f).slice(0, 4);

  it("clears a vSTE with V = 0 and accepts it", () => {
    const v = vste({ V: 0, Config: STE_CFG_S1_TRANS, S1DSS: 2 });
    expect(validateVste(v)).toBe(false);
    expect(Array.from(v)).toEqual([0, 0, 0, 0]);
  });

  it("accepts abort, bypass and stage 1 vSTEs and reports whether they ask for ATS", () => {
    expect(validateVste(vste({ V: 1, Config: STE_CFG_ABORT }))).toBe(false);
    expect(validateVste(vste({ V: 1, Config: STE_CFG_BYPASS, EATS: 1 }))).toBe(false);
    expect(validateVste(vste({ V: 1, Config: STE_CFG_S1_TRANS, EATS: 0 }))).toBe(false);
    const v = vste({ V: 1, Config: STE_CFG_S1_TRANS, S1ContextPtr: 0x4000, S1CDMax: 3, EATS: 1 });
    expect(validateVste(v)).toBe(true);
    expect(fieldsOf(STE, Uint32Array.from([...v, ...new Array(12).fill(0)]))).toEqual({
      V: 1,
      Config: STE_CFG_S1_TRANS,
      S1ContextPtr: 0x4000,
      S1CDMax: 3,
    });
  });

  it("refuses, with EIO, bits a guest may not set", () => {
    expect(validateVste(vste({ V: 1, Config: STE_CFG_S1_TRANS, SHCFG: 1 }))).toBe("EIO");
    expect(validateVste(vste({ V: 1, Config: STE_CFG_S1_TRANS, STRW: 2 }))).toBe("EIO");
    expect(validateVste(vste({ V: 1, Config: STE_CFG_S1_TRANS, S1ContextPtr: 2 ** 52 }))).toBe(
      "EIO",
    );
  });

  it("refuses, with EIO, stage 2 and nested Configs and split-stage or DPT EATS", () => {
    expect(validateVste(vste({ V: 1, Config: STE_CFG_S2_TRANS }))).toBe("EIO");
    expect(validateVste(vste({ V: 1, Config: STE_CFG_NESTED }))).toBe("EIO");
    expect(validateVste(vste({ V: 1, Config: STE_CFG_S1_TRANS, EATS: 2 }))).toBe("EIO");
    expect(validateVste(vste({ V: 1, Config: STE_CFG_S1_TRANS, EATS: 3 }))).toBe("EIO");
  });
});

describe("makeNestedSte (arm_smmu_make_nested_domain_ste)", () => {
  const guest = encode(STE, {
    V: 1,
    Config: STE_CFG_S1_TRANS,
    S1Fmt: 2,
    S1ContextPtr: 0x7_0000_0000,
    S1CDMax: 12,
    S1DSS: S1DSS_BYPASS,
    S1CIR: 1,
    S1COR: 1,
    S1CSH: 3,
    S1STALLD: 1,
    EATS: 1,
  }).slice(0, 4);
  const s2Fields = ste((w) => makeS2DomainSte(w, S2, FEAT));

  it("merges a stage 1 vSTE into the parent's stage 2 STE with Config nested and MEV", () => {
    expect(ste((w) => makeNestedSte(w, { vste: guest, s2: S2 }, FEAT))).toEqual({
      ...s2Fields,
      Config: STE_CFG_NESTED,
      S1Fmt: 2,
      S1ContextPtr: 0x7_0000_0000,
      S1CDMax: 12,
      S1DSS: S1DSS_BYPASS,
      S1CIR: 1,
      S1COR: 1,
      S1CSH: 3,
      S1STALLD: 1,
      MEV: 1,
    });
  });

  it("takes ATS from the host's attach state, not from the vSTE's EATS", () => {
    expect(ste((w) => makeNestedSte(w, { vste: guest, s2: S2 }, FEAT)).EATS).toBeUndefined();
    expect(ste((w) => makeNestedSte(w, { vste: guest, s2: { ...S2, ats: true } }, FEAT)).EATS).toBe(
      1,
    );
  });

  it("installs the parent's stage 2 STE for a bypass vSTE", () => {
    const bypass = encode(STE, { V: 1, Config: STE_CFG_BYPASS }).slice(0, 4);
    expect(ste((w) => makeNestedSte(w, { vste: bypass, s2: S2 }, FEAT))).toEqual(s2Fields);
  });

  it("installs an abort STE for an abort or invalid vSTE", () => {
    const abort = encode(STE, { V: 1, Config: STE_CFG_ABORT }).slice(0, 4);
    const invalid = encode(STE, { V: 0, Config: STE_CFG_S1_TRANS }).slice(0, 4);
    expect(ste((w) => makeNestedSte(w, { vste: abort, s2: S2 }, FEAT))).toEqual({ V: 1 });
    expect(ste((w) => makeNestedSte(w, { vste: invalid, s2: S2 }, FEAT))).toEqual({ V: 1 });
  });
});

describe("makeS1Cd (arm_smmu_make_s1_cd)", () => {
  it("carries the TCR, TTB0, ASID and MAIR with EPD1, V, AA64, R, A and ASET", () => {
    expect(cd((w) => makeS1Cd(w, S1CD))).toEqual({
      T0SZ: 16,
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
      ASID: 42,
      TTB0: 0x8_4000_0000,
      MAIR0: 0x0004ff44,
      MAIR1: 0xf4,
    });
  });

  it("sets S for a stalling master and HA with HD for dirty tracking", () => {
    expect(cd((w) => makeS1Cd(w, { ...S1CD, stallEnabled: true })).S).toBe(1);
    expect(cd((w) => makeS1Cd(w, { ...S1CD, hd: true }))).toMatchObject({ HA: 1, HD: 1 });
    expect(cd((w) => makeS1Cd(w, S1CD)).HA).toBeUndefined();
  });

  it("drops TTBR bits outside [51:4]", () => {
    expect(cd((w) => makeS1Cd(w, { ...S1CD, ttb0: 2 ** 52 + 0x3000 + 0xf })).TTB0).toBe(0x3000);
  });
});

describe("makeSvaCd (arm_smmu_make_sva_cd)", () => {
  it("walks the process's tables with the CPU's TCR choices", () => {
    expect(cd((w) => makeSvaCd(w, SVA, PLAIN))).toEqual({
      T0SZ: 16,
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
      ASID: 9,
      TTB0: 0x4_2000_0000,
      MAIR0: 0xbbff4400,
      MAIR1: 4,
    });
  });

  it("sets TG0 from the CPU page size", () => {
    const tg0 = (pageShift: number) =>
      cd((w) => makeSvaCd(w, { ...SVA, mm: { pgd: 0x10000, vaBits: 48, pageShift } }, PLAIN)).TG0;
    expect([tg0(12), tg0(16), tg0(14)]).toEqual([undefined, 1, 2]);
    expect(() =>
      make((w) => makeSvaCd(w, { ...SVA, mm: { pgd: 0, vaBits: 48, pageShift: 13 } }, PLAIN)),
    ).toThrow(/page shift/);
  });

  it("sets HA, HD and HAFT as the SMMU supports them, and S for a stalling master", () => {
    expect(
      cd((w) =>
        makeSvaCd(w, { ...SVA, stallEnabled: true }, { ...PLAIN, ha: true, hd: true, haft: true }),
      ),
    ).toMatchObject({ HA: 1, HD: 1, HAFT: 1, S: 1 });
  });

  it("releases to EPD0 without the walk fields, clearing S and R unless stalls are forced", () => {
    const released = { ...SVA, mm: null, stallEnabled: true };
    expect(cd((w) => makeSvaCd(w, released, { ...PLAIN, ha: true }))).toEqual({
      EPD0: 1,
      EPD1: 1,
      V: 1,
      IPS: 5,
      AA64: 1,
      A: 1,
      ASET: 1,
      ASID: 9,
      MAIR0: 0xbbff4400,
      MAIR1: 4,
    });
    expect(cd((w) => makeSvaCd(w, released, { ...PLAIN, stallForce: true }))).toMatchObject({
      S: 1,
      R: 1,
    });
  });
});

describe("clearCd (arm_smmu_clear_cd)", () => {
  it("is all zero (V = 0)", () => {
    expect(Array.from(make(clearCd))).toEqual(new Array(16).fill(0));
  });
});

describe("every maker", () => {
  it("refuses an output that is not 16 words (a model bug)", () => {
    expect(() => makeAbortSte(new Uint32Array(8))).toThrow(/16|words/);
    expect(() => clearCd(new Uint32Array(17))).toThrow(/words/);
  });
});
