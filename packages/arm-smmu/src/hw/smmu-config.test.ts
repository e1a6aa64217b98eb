import { encode, type FieldValues } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { CD } from "../format/cd.js";
import { EVT_ID } from "../format/events.js";
import { STE } from "../format/ste.js";
import {
  CFG_OK,
  decodeCdWords,
  decodeSteWords,
  SmmuCdConfig,
  SmmuSteConfig,
} from "./smmu-config.js";
import { DEFAULT_SMMU_FEATURES, type SmmuFeatures } from "./smmu-features.js";

const F = DEFAULT_SMMU_FEATURES;
const S2: FieldValues = {
  V: 1,
  Config: 6,
  S2VMID: 1,
  S2T0SZ: 24,
  S2SL0: 1,
  S2TG: 0,
  S2PS: 5,
  S2AA64: 1,
  S2R: 1,
  S2TTB: 0x10000,
};
const S1: FieldValues = { V: 1, Config: 5, S1ContextPtr: 0x20000 };

function ste(v: FieldValues, f: SmmuFeatures = F): SmmuSteConfig {
  return decodeSteWords(encode(STE, v), f, new SmmuSteConfig());
}

const CD_OK: FieldValues = {
  V: 1,
  AA64: 1,
  T0SZ: 16,
  TG0: 0,
  EPD1: 1,
  IPS: 5,
  R: 1,
  A: 1,
  ASID: 3,
  TTB0: 0x30000,
};

function cd(v: FieldValues, f: SmmuFeatures = F, s: SmmuSteConfig = ste(S1)): SmmuCdConfig {
  return decodeCdWords(encode(CD, v), s, f, new SmmuCdConfig());
}

describe("STE decode", () => {
  it("V = 0 is C_BAD_STE; Config 0b0xx aborts without an error", () => {
    expect(ste({ V: 0, Config: 4 }).status).toBe(EVT_ID.C_BAD_STE);
    for (const c of [0, 1, 2, 3]) expect(ste({ V: 1, Config: c }).status).toBe(CFG_OK);
  });

  it("a stage 2 STE gives the walk geometry (4K, T0SZ 24, SL0 1: start level 1, 2 tables)", () => {
    const s = ste(S2);
    expect(s.status).toBe(CFG_OK);
    expect(s.s2Range).toMatchObject({ ia: 40, pgShift: 12, startLevel: 1, ttb: 0x10000 });
    expect(s.vmid).toBe(1);
  });

  it.each<[string, FieldValues, Partial<SmmuFeatures>?]>([
    ["S2TG reserved", { ...S2, S2TG: 3 }],
    ["S2TG not implemented", { ...S2, S2TG: 2 }, { granules: ["4K"] }],
    ["S2AA64 = 0 (AArch32 tables not walked)", { ...S2, S2AA64: 0 }],
    ["S2ENDI = 1 on a little-endian-only SMMU", { ...S2, S2ENDI: 1 }],
    ["S2T0SZ below 16", { ...S2, S2T0SZ: 15 }],
    ["S2T0SZ above 39 without STT", { ...S2, S2T0SZ: 40 }],
    ["S2SL0 needing more than 16 concatenated tables", { ...S2, S2SL0: 0 }],
    ["S2SL0 = 3", { ...S2, S2SL0: 3 }],
    ["S2TTB beyond S2PS", { ...S2, S2PS: 0, S2TTB: 2 ** 33 }],
    ["S2S = 1 with the terminate-only model", { ...S2, S2S: 1 }, { stallModel: 1 }],
    ["S2S = 0 with the stall-forced model", { ...S2 }, { stallModel: 2 }],
    ["S2HA without HTTU", { ...S2, S2HA: 1 }, { httu: 0 }],
    ["a 16-bit VMID on an 8-bit-VMID SMMU", { ...S2, S2VMID: 0x100 }, { vmidBits: 8 }],
    ["stage 2 on an SMMU without stage 2", S2, { s2p: false }],
    ["stage 1 on an SMMU without stage 1", S1, { s1p: false }],
    ["S1CDMax above SSIDSIZE", { ...S1, S1CDMax: 11 }, { ssidBits: 10 }],
    ["EATS = Full ATS with S2S = 1 on a stage 2 STE", { ...S2, EATS: 1, S2S: 1 }],
    ["S2T0SZ below 64 - IAS (OAS 40: IAS 40)", { ...S2, S2T0SZ: 23 }, { oas: 40 }],
    ["2-level CD table without CD2L", { ...S1, S1CDMax: 4, S1Fmt: 2 }, { cd2l: false }],
    ["S1STALLD with a stall model other than 0b00", { ...S1, S1STALLD: 1 }, { stallModel: 1 }],
    ["STRW = 0b01", { ...S1, STRW: 1 }],
    ["STRW = EL2 without Hyp", { ...S1, STRW: 2 }, { hyp: false }],
    ["EATS = split-stage (NS1ATS)", { ...S1, EATS: 2 }],
    ["a reserved bit set (bit 56)", { ...S1 }],
  ])("ILLEGAL: %s is C_BAD_STE", (name, v, f) => {
    const w = encode(STE, v);
    if (name.startsWith("a reserved")) w[1] = ((w[1] as number) | (1 << 24)) >>> 0;
    const s = decodeSteWords(w, { ...F, ...f }, new SmmuSteConfig());
    expect(s.status).toBe(EVT_ID.C_BAD_STE);
  });

  it("a reserved bit is ignored when checkReserved is off", () => {
    const w = encode(STE, S1);
    w[1] = ((w[1] as number) | (1 << 24)) >>> 0;
    expect(decodeSteWords(w, { ...F, checkReserved: false }, new SmmuSteConfig()).status).toBe(
      CFG_OK,
    );
  });
});

describe("CD decode", () => {
  it("a valid CD gives the TTB0 range (4K, T0SZ 16: start level 0)", () => {
    const c = cd(CD_OK);
    expect(c.status).toBe(CFG_OK);
    expect(c.t0).toMatchObject({ disabled: false, ia: 48, startLevel: 0, ttb: 0x30000 });
    expect(c.t1.disabled).toBe(true);
    expect(c.asid).toBe(3);
  });

  it("the start level follows the granule and T0SZ (16K T0SZ 17: level 1; 64K T0SZ 16: level 1, 34: level 2)", () => {
    expect(cd({ ...CD_OK, TG0: 2, T0SZ: 17 }).t0.startLevel).toBe(1);
    expect(cd({ ...CD_OK, TG0: 1, T0SZ: 16 }).t0.startLevel).toBe(1);
    expect(cd({ ...CD_OK, TG0: 1, T0SZ: 34 }).t0.startLevel).toBe(2);
  });

  it.each<[string, FieldValues, Partial<SmmuFeatures>?]>([
    ["V = 0", { ...CD_OK, V: 0 }],
    ["AA64 = 0", { ...CD_OK, AA64: 0 }],
    ["T0SZ above 39", { ...CD_OK, T0SZ: 40 }],
    ["T0SZ below 16", { ...CD_OK, T0SZ: 15 }],
    ["TG0 reserved", { ...CD_OK, TG0: 3 }],
    ["TG0 not implemented", { ...CD_OK, TG0: 1 }, { granules: ["4K"] }],
    ["TG1 reserved with EPD1 = 0", { ...CD_OK, EPD1: 0, T1SZ: 16, TG1: 0 }],
    ["ENDI = 1", { ...CD_OK, ENDI: 1 }],
    ["HA without HTTU", { ...CD_OK, HA: 1 }, { httu: 0 }],
    ["HD without dirty-state HTTU", { ...CD_OK, HA: 1, HD: 1 }, { httu: 1 }],
    ["S = 1 with the terminate-only model", { ...CD_OK, S: 1 }, { stallModel: 1 }],
    ["S = 0 with the stall-forced model", { ...CD_OK }, { stallModel: 2 }],
    ["A = 0 with TERM_MODEL = 1", { ...CD_OK, A: 0 }, { termModel: 1 }],
    ["a 16-bit ASID on an 8-bit-ASID SMMU", { ...CD_OK, ASID: 0x100 }, { asidBits: 8 }],
    ["TTB0 beyond IPS", { ...CD_OK, IPS: 0, TTB0: 2 ** 33 }],
  ])("ILLEGAL: %s is C_BAD_CD", (_name, v, f) => {
    expect(cd(v, { ...F, ...f }).status).toBe(EVT_ID.C_BAD_CD);
  });

  it("S = 1 is ILLEGAL through an STE with S1STALLD (stall model 0b00)", () => {
    expect(cd({ ...CD_OK, S: 1 }, F, ste({ ...S1, S1STALLD: 1 })).status).toBe(EVT_ID.C_BAD_CD);
  });

  it("EPD0 = 1 makes the TTB0 fields IGNORED (a reserved TG0 is then legal)", () => {
    const c = cd({ ...CD_OK, EPD0: 1, TG0: 3, T0SZ: 0 });
    expect(c.status).toBe(CFG_OK);
    expect(c.t0.disabled).toBe(true);
  });

  it("IPS above OAS is capped to OAS", () => {
    expect(cd({ ...CD_OK, IPS: 6 }, { ...F, oas: 44 }).outBits).toBe(44);
  });
});

// Rules from the spec review of the STE/CD validity checks: each names the section it follows.
describe("STE validity: IGNORED and Reserved values are not ILLEGAL (IHI 0070 5.2, 5.2.2)", () => {
  it("S1DSS = 0b11 is Reserved and behaves as 0b00 (terminate), not C_BAD_STE (5.2 S1DSS)", () => {
    const s = ste({ ...S1, S1CDMax: 4, S1DSS: 3 });
    expect(s.status).toBe(CFG_OK);
    expect(s.s1Dss).toBe(0);
  });

  it("EATS = 0b11 without IDR3.DPT is Reserved and behaves as 0b00 (5.2 EATS)", () => {
    const s = ste({ ...S1, EATS: 3 });
    expect(s.status).toBe(CFG_OK);
    expect(s.eats).toBe(0);
  });

  it("EATS is IGNORED without IDR0.ATS, even with checkReserved (5.2 EATS, 5.2.2)", () => {
    const s = ste({ ...S1, EATS: 1 }, { ...F, ats: false, pri: false });
    expect(s.status).toBe(CFG_OK);
    expect(s.eats).toBe(0);
  });

  it("Full ATS with S2S = 1 is legal when stage 2 bypasses (5.2 EATS, SMMUv3.1)", () => {
    expect(ste({ ...S1, EATS: 1, S2S: 1 }).status).toBe(CFG_OK);
  });

  it("S1CDMax is IGNORED with IDR1.SSIDSIZE = 0: one CD, no C_BAD_STE (5.2.2)", () => {
    const s = ste({ ...S1, S1CDMax: 5, S1DSS: 0 }, { ...F, ssidBits: 0 });
    expect(s.status).toBe(CFG_OK);
    expect(s.s1CdMax).toBe(0);
    expect(s.cdLimit).toBe(1);
  });

  it("S2VMID is IGNORED for an EL2 StreamWorld: a 16-bit value on an 8-bit-VMID SMMU is legal (5.2.2 IgnoreSTES2VMID)", () => {
    const s = ste({ ...S1, STRW: 2, S2VMID: 0x1234 }, { ...F, vmidBits: 8 });
    expect(s.status).toBe(CFG_OK);
    expect(s.el2).toBe(true);
    expect(ste({ ...S1, S2VMID: 0x1234 }, { ...F, vmidBits: 8 }).status).toBe(EVT_ID.C_BAD_STE);
  });

  it("STRW is unused without IDR0.Hyp: ILLEGAL only under the checkReserved choice (5.2.2 IgnoreSTESTRW)", () => {
    const s = ste({ ...S1, STRW: 2 }, { ...F, hyp: false, checkReserved: false });
    expect(s.status).toBe(CFG_OK);
    expect(s.el2).toBe(false);
  });

  it("S2T0SZ 12 with the 64K granule is legal when IAS is 52, without IDR5.VAX (5.2 S2T0SZ)", () => {
    const s = ste({ ...S2, S2TG: 1, S2T0SZ: 12, S2SL0: 2, S2PS: 6 }, { ...F, oas: 52, vax: false });
    expect(s.status).toBe(CFG_OK);
    expect(s.s2Range).toMatchObject({ ia: 52, pgShift: 16, startLevel: 1 });
  });
});

describe("CD validity and the any-EL2 StreamWorld (IHI 0070 5.4)", () => {
  it("PAN is IGNORED (effectively 0) for the any-EL2 StreamWorld (5.4 PAN)", () => {
    const el2 = ste({ ...S1, STRW: 2 });
    expect(cd({ ...CD_OK, PAN: 1 }, F, el2).pan).toBe(false);
    expect(cd({ ...CD_OK, PAN: 1 }).pan).toBe(true);
  });
});
