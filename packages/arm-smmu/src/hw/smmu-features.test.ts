import { decode } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { IDR0_REG, IDR1_REG, IDR3_REG, IDR5_REG, IIDR_REG } from "../format/registers.js";
import {
  DEFAULT_SMMU_FEATURES,
  granuleShift,
  resolveSmmuFeatures,
  smmuCommandFeatures,
  smmuIdRegs,
  validateSmmuFeatures,
} from "./smmu-features.js";

describe("SMMU feature set", () => {
  it("the defaults are valid and encode into IDR0/1/3/5 field by field", () => {
    expect(validateSmmuFeatures(DEFAULT_SMMU_FEATURES)).toBeNull();
    const r = smmuIdRegs(DEFAULT_SMMU_FEATURES);
    expect(decode(IDR0_REG, [r[0] as number])).toMatchObject({
      S2P: 1,
      S1P: 1,
      TTF: 2,
      COHACC: 1,
      HTTU: 2,
      Hyp: 1,
      ATS: 1,
      NS1ATS: 1,
      ASID16: 1,
      MSI: 1,
      PRI: 1,
      VMID16: 1,
      CD2L: 1,
      TTENDIAN: 2,
      STALL_MODEL: 0,
      ST_LEVEL: 1,
    });
    expect(decode(IDR1_REG, [r[1] as number])).toMatchObject({
      SIDSIZE: 16,
      SSIDSIZE: 20,
      CMDQS: 19,
      EVENTQS: 19,
      PRIQS: 19,
    });
    expect(decode(IDR3_REG, [r[3] as number])).toMatchObject({ HAD: 1, RIL: 1, STT: 0 });
    expect(decode(IDR5_REG, [r[5] as number])).toMatchObject({
      OAS: 5,
      GRAN4K: 1,
      GRAN16K: 1,
      GRAN64K: 1,
      VAX: 0,
      STALL_MAX: 64,
    });
    expect(decode(IIDR_REG, [r[6] as number])).toMatchObject({
      Implementer: 0x43b,
      ProductID: 0x487,
    });
  });

  it("PRIQS reads 0 without PRI, and 8-bit ASIDs/VMIDs clear ASID16/VMID16", () => {
    const f = resolveSmmuFeatures({ pri: false, asidBits: 8, vmidBits: 8 });
    if (typeof f === "string") throw new Error(f);
    const r = smmuIdRegs(f);
    expect(decode(IDR1_REG, [r[1] as number]).PRIQS).toBe(0);
    expect(decode(IDR0_REG, [r[0] as number])).toMatchObject({ ASID16: 0, VMID16: 0, PRI: 0 });
  });

  it.each([
    [{ s1p: false, s2p: false }, /at least one stage/],
    [{ ttf: 1 as 2 }, /ttf/],
    [{ ats: false }, /PRI needs ATS/],
    [{ sidBits: 33 }, /sidBits/],
    [{ ssidBits: 21 }, /ssidBits/],
    [{ cmdqs: 20 }, /cmdqs/],
    [{ oas: 50 }, /oas/],
    [{ granules: [] }, /granules/],
    [{ stallModel: 3 as 0 }, /stallModel/],
    [{ asidBits: 12 as 8 }, /asidBits/],
  ])("an invalid feature set is refused with a message naming the field (%o)", (partial, msg) => {
    const r = resolveSmmuFeatures(partial);
    expect(typeof r).toBe("string");
    expect(r as string).toMatch(msg);
  });

  it("the command features follow the feature set", () => {
    expect(
      smmuCommandFeatures({ ...DEFAULT_SMMU_FEATURES, ril: false, stallModel: 1 }),
    ).toMatchObject({
      ril: false,
      stallModel: 1,
      ds: false,
      checkReserved: true,
    });
    expect([granuleShift("4K"), granuleShift("16K"), granuleShift("64K")]).toEqual([12, 14, 16]);
  });
});
