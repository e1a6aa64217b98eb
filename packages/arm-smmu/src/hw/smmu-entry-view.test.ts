import { encode } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { CD } from "../format/cd.js";
import { STE } from "../format/ste.js";
import { smmuConfigEqual, smmuViewLegal, viewOfCd, viewOfSte } from "./smmu-entry-view.js";

describe("entry views", () => {
  it("an invalid STE uses only V: two of them are equal whatever else they hold", () => {
    const a = viewOfSte(1, 4, encode(STE, { V: 0, Config: 5 }));
    const b = viewOfSte(1, 4, encode(STE, { V: 0, Config: 6, S2VMID: 3 }));
    expect(smmuConfigEqual(a, b)).toBe(true);
    expect(smmuViewLegal(a)).toBe(false);
  });

  it("an abort STE ignores stage fields; a stage 1 STE uses S1 fields but not S2TTB", () => {
    const a = viewOfSte(1, 0, encode(STE, { V: 1, Config: 0, S1ContextPtr: 0x1000 }));
    const b = viewOfSte(1, 0, encode(STE, { V: 1, Config: 0 }));
    expect(smmuConfigEqual(a, b)).toBe(true);
    const c = viewOfSte(
      1,
      0,
      encode(STE, { V: 1, Config: 5, S1ContextPtr: 0x1000, S2TTB: 0x5000 }),
    );
    const d = viewOfSte(1, 0, encode(STE, { V: 1, Config: 5, S1ContextPtr: 0x1000 }));
    expect(smmuConfigEqual(c, d)).toBe(true);
    const e = viewOfSte(1, 0, encode(STE, { V: 1, Config: 5, S1ContextPtr: 0x2000 }));
    expect(smmuConfigEqual(c, e)).toBe(false);
  });

  it("SHCFG is used by bypass and by stage 1 with S1DSS = bypass", () => {
    const by = (shcfg: number) => viewOfSte(1, 0, encode(STE, { V: 1, Config: 4, SHCFG: shcfg }));
    expect(smmuConfigEqual(by(0), by(1))).toBe(false);
    const s1 = (shcfg: number, dss: number) =>
      viewOfSte(1, 0, encode(STE, { V: 1, Config: 5, S1DSS: dss, SHCFG: shcfg }));
    expect(smmuConfigEqual(s1(0, 0), s1(1, 0))).toBe(true);
    expect(smmuConfigEqual(s1(0, 1), s1(1, 1))).toBe(false);
  });

  it("a CD with EPD0 ignores its TTB0 walk fields, and every other bit counts", () => {
    const a = viewOfCd(1, 0, 0, encode(CD, { V: 1, EPD0: 1, T0SZ: 16, TTB0: 0x1000, ASID: 2 }));
    const b = viewOfCd(1, 0, 0, encode(CD, { V: 1, EPD0: 1, T0SZ: 25, TTB0: 0x9000, ASID: 2 }));
    expect(smmuConfigEqual(a, b)).toBe(true);
    const c = viewOfCd(1, 0, 0, encode(CD, { V: 1, EPD0: 1, ASID: 3 }));
    expect(smmuConfigEqual(a, c)).toBe(false);
  });
});
