import { encode, formatLayout } from "@iommu-sim/iommu-core/platform";
import {
  checkLayoutReservedBits as checkReservedBits,
  checkLayoutRoundTrip as checkRoundTrip,
  qwordsOf as qwords,
} from "@iommu-sim/iommu-core/testing/layout";
import { describe, expect, it } from "vitest";
import { FRCD, VTD_FR, vtdFaultReasonName } from "./fault-record.js";

describe("FRCD", () => {
  it("round-trips every field, also at an offset", () => {
    checkRoundTrip(FRCD, 601);
  });
  it("flags every uncovered bit as reserved", () => {
    checkReservedBits(FRCD);
  });
  it("reserves bits 11:0 and 91:80", () => {
    expect(qwords(FRCD.reserved)).toEqual([0xfffn, 0x0fff0000n]);
  });
  it("puts F, T, FR and PV in the dword at +12 and SID, PP in the dword at +8, as dmar_fault reads them", () => {
    const w = encode(FRCD, {
      FI: 0x7fff0000,
      SID: 0x0310,
      PP: 1,
      FR: VTD_FR.SM_PASID_ENTRY_NOT_PRESENT,
      PV: 0x12345,
      T: 1,
      F: 1,
    });
    expect(w[3]).toBe((0x80000000 | 0x40000000 | (0x12345 << 8) | 0x59) >>> 0);
    expect(w[2]).toBe((0x80000000 | 0x0310) >>> 0);
    expect(qwords(w)[0]).toBe(0x7fff0000n);
  });
  it("prints the fault reason by name", () => {
    const w = encode(FRCD, { FR: VTD_FR.SM_PASID_ENTRY_NOT_PRESENT, F: 1 });
    expect(formatLayout(FRCD, w)).toContain("FR=SM_PASID_ENTRY_NOT_PRESENT(89)");
  });
});

describe("VTD_FR", () => {
  it("is frozen, with unique codes and SCREAMING names", () => {
    expect(Object.isFrozen(VTD_FR)).toBe(true);
    const codes = Object.values(VTD_FR);
    expect(new Set(codes).size).toBe(codes.length);
    for (const name of Object.keys(VTD_FR)) expect(name).toMatch(/^[A-Z][A-Z0-9_]*$/);
  });
  it("has the codes the kernel and QEMU use", () => {
    expect(VTD_FR.ROOT_NOT_PRESENT).toBe(0x1);
    expect(VTD_FR.CONTEXT_TT_BLOCKED).toBe(0xd);
    expect(VTD_FR.INTERRUPT_ADDR).toBe(0xe);
    expect(VTD_FR.IR_REQ_RESERVED).toBe(0x20);
    expect(VTD_FR.IR_SID_MISMATCH).toBe(0x26);
    expect(VTD_FR.SM_PRE_CLEAR).toBe(0x47);
    expect(VTD_FR.SM_PASID_ENTRY_NOT_PRESENT).toBe(0x59);
    expect(VTD_FR.SM_SRE_CLEAR).toBe(0x5d);
    expect(VTD_FR.SM_FS_NON_CANONICAL).toBe(0x80);
    expect(VTD_FR.SM_INTERRUPT_ADDR).toBe(0x87);
    expect(VTD_FR.SM_FS_AD_NO_SNOOP).toBe(0x90);
    expect(VTD_FR.SM_FS_AD_UPDATE_FAILED).toBe(0x91);
  });
});

describe("vtdFaultReasonName", () => {
  it("names the range boundaries and returns unknown just outside them", () => {
    const cases: [number, string][] = [
      [0x00, "unknown"],
      [0x01, "ROOT_NOT_PRESENT"],
      [0x0d, "CONTEXT_TT_BLOCKED"],
      [0x0e, "unknown"],
      [0x1f, "unknown"],
      [0x20, "IR_REQ_RESERVED"],
      [0x26, "IR_SID_MISMATCH"],
      [0x27, "unknown"],
      [0x2f, "unknown"],
      [0x30, "SM_ROOT_TABLE_ADDR_INVALID"],
      [0x90, "SM_FS_AD_NO_SNOOP"],
      [0x91, "unknown"],
      [0xff, "unknown"],
    ];
    for (const [code, name] of cases)
      expect([code, vtdFaultReasonName(code)]).toEqual([code, name]);
  });
  it("returns unknown for the gaps of the scalable-mode table", () => {
    for (const code of [
      0x33, 0x37, 0x3b, 0x3f, 0x49, 0x4f, 0x53, 0x57, 0x5e, 0x6f, 0x7d, 0x7f, 0x88, 0x8f,
    ])
      expect([code, vtdFaultReasonName(code)]).toEqual([code, "unknown"]);
    for (const code of [
      0x32, 0x38, 0x3a, 0x40, 0x48, 0x50, 0x52, 0x58, 0x5d, 0x70, 0x7c, 0x80, 0x87,
    ])
      expect(vtdFaultReasonName(code)).not.toBe("unknown");
  });
  it("decodes exactly the 66 codes the kernel's tables name", () => {
    // 13 legacy (0x01-0x0D), 7 interrupt remapping, 46 scalable mode.
    let named = 0;
    for (let c = 0; c < 256; c++) if (vtdFaultReasonName(c) !== "unknown") named++;
    expect(named).toBe(66);
  });
  it("returns unknown for values that are not byte codes", () => {
    expect(vtdFaultReasonName(-1)).toBe("unknown");
    expect(vtdFaultReasonName(1.5)).toBe("unknown");
    expect(vtdFaultReasonName(0x101)).toBe("unknown");
  });
});
