// The examples of README.md, kept true.

import { encode, formatLayout, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { PASID_ENTRY, PGTT_FL } from "../src/format/index.js";
import { VtdUnit } from "../src/hw/index.js";

describe("README", () => {
  it("prints a PASID entry through its field table", () => {
    const w = encode(PASID_ENTRY, { P: 1, PGTT: PGTT_FL, DID: 7, FLPTR: 0x1234_5000, SRE: 1 });
    expect(formatLayout(PASID_ENTRY, w)).toBe(
      "P=1 PGTT=first-stage(1) DID=0x7 SRE=1 FLPTR=0x12345000",
    );
  });
  it("builds a unit with the default capabilities and the maximal cache policy", () => {
    const unit = new VtdUnit({
      mem: new PhysMemory(),
      caps: { cachingMode: false },
      cache: { policy: "maximal" },
    });
    expect(unit.cacheConfig.policy).toBe("maximal");
    expect(unit.read32(0x10 + 4) & (1 << (43 - 32))).not.toBe(0); // ECAP.SMTS
  });
});
