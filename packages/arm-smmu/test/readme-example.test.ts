// The example of README.md, kept true.

import { PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { SMMU_REG } from "../src/format/registers.js";
import { SmmuV3 } from "../src/hw/index.js";

describe("README", () => {
  it("builds an SMMU with a feature override and the maximal cache policy", () => {
    const smmu = new SmmuV3({
      mem: new PhysMemory(),
      features: { stallModel: 0 },
      cache: { policy: "maximal" },
    });
    expect(smmu.read32(SMMU_REG.IDR0) & (3 << 24)).toBe(0); // IDR0.STALL_MODEL
    expect(smmu.read32(SMMU_REG.CR0)).toBe(0);
  });
});
