import { decode, encode, hasReservedBits } from "@iommu-sim/iommu-core/platform";
import { describeLayouts } from "@iommu-sim/iommu-core/testing/layout";
import { describe, expect, it } from "vitest";
import { PRIQ_ENTRY, PRIQ_ENTRY_SIZE } from "./pri.js";

describeLayouts([PRIQ_ENTRY]);

describe("PRIQ_ENTRY", () => {
  it("is 16 bytes", () => {
    expect(PRIQ_ENTRY.words * 4).toBe(PRIQ_ENTRY_SIZE);
  });
  it("decodes a page request as the kernel's PRIQ_0_*/PRIQ_1_* masks read it", () => {
    // dw0 = SID | SSID << 32 | READ (60) | WRITE (61) | LAST (62) | SSID_V (63); dw1 = PRGI | addr.
    const w = [0x1234, 5 | (1 << 28) | (1 << 29) | (1 << 30) | (1 << 31), 0x1f3 | 0x7000, 0x1];
    expect(decode(PRIQ_ENTRY, w)).toMatchObject({
      StreamID: 0x1234,
      SubstreamID: 5,
      Priv: 0,
      X: 0,
      R: 1,
      W: 1,
      Last: 1,
      SSV: 1,
      PRGIndex: 0x1f3,
      PageAddress: 0x1_0000_7000,
    });
    expect(hasReservedBits(PRIQ_ENTRY, w)).toBe(false);
  });
  it("keeps bits 57:52 and 75:73 reserved", () => {
    expect(PRIQ_ENTRY.reserved[1]).toBe(0x03f00000);
    expect(PRIQ_ENTRY.reserved[2]).toBe(0x00000e00);
    expect(encode(PRIQ_ENTRY, { Priv: 1, X: 1 })[1]).toBe((1 << 26) | (1 << 27));
  });
});
