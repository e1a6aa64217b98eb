// The examples of README.md, kept true.

import { PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { SMMU_REG } from "../src/format/registers.js";
import { STE_CFG_S1_TRANS } from "../src/format/ste.js";
import { SmmuV3 } from "../src/hw/index.js";
import { SmmuMachine } from "../src/testing/index.js";

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

  it("probes a device behind SmmuMachine: a stage-1 CD at SSID 0 behind a CD-table STE", () => {
    const m = new SmmuMachine({ smmus: [{ features: { ril: true } }] });
    const dev = m.addDevice({ name: "nic0", rid: 0x10, pasidBits: 8, ats: true });
    if (typeof dev === "string") throw new Error(dev);
    const hw = m.smmus[0]?.hw as SmmuV3;
    expect(hw.decodeSteOf(0x10).Config).toBe(STE_CFG_S1_TRANS);
    const master = m.driver.master(dev);
    expect(master?.cdTable?.inSte).toBe(true);
    expect(hw.cdAsSeen(0x10, 0).status).toBe(0);
  });
});
