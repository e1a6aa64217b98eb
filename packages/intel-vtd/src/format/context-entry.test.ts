import { encode, hasReservedBits } from "@iommu-sim/iommu-core/platform";
import {
  checkLayoutReservedBits as checkReservedBits,
  checkLayoutRoundTrip as checkRoundTrip,
  qwordsOf as qwords,
} from "@iommu-sim/iommu-core/testing/layout";
import { describe, expect, it } from "vitest";
import {
  CONTEXT_ENTRY,
  CONTEXT_ENTRY_SIZE,
  pdtsMaxPasids,
  SM_CONTEXT_ENTRY,
  SM_CONTEXT_ENTRY_SIZE,
  TT_DEVTLB,
  TT_PASSTHROUGH,
  TT_UNTRANSLATED,
} from "./context-entry.js";

describe("context entries", () => {
  it("round-trip every field, also at an offset", () => {
    checkRoundTrip(CONTEXT_ENTRY, 201);
    checkRoundTrip(SM_CONTEXT_ENTRY, 202);
  });
  it("flag every uncovered bit as reserved, but never AVAIL", () => {
    checkReservedBits(CONTEXT_ENTRY);
    checkReservedBits(SM_CONTEXT_ENTRY);
    const w = encode(CONTEXT_ENTRY, { AVAIL: 0xf });
    expect(hasReservedBits(CONTEXT_ENTRY, w)).toBe(false);
  });
  it("reserve the bits QEMU's legacy masks reserve (0xFF0 low, 0xFFFFFFFFFF000080 high)", () => {
    expect(qwords(CONTEXT_ENTRY.reserved)).toEqual([0xff0n, 0xffffffffff000080n]);
  });
  it("reserve the bits QEMU's scalable masks reserve (0x1E0, 0xFFFFFFFFFFE00000, upper half)", () => {
    expect(qwords(SM_CONTEXT_ENTRY.reserved)).toEqual([
      0x1e0n,
      0xffffffffffe00000n,
      0xffffffffffffffffn,
      0xffffffffffffffffn,
    ]);
  });
  it("encode a legacy entry as domain_context_mapping_one writes it", () => {
    // lo = pgd | TT << 2 | P; hi = DID << 8 | AW
    const w = encode(CONTEXT_ENTRY, { P: 1, TT: TT_DEVTLB, SLPTPTR: 0x3000, AW: 2, DID: 0x2a });
    expect(qwords(w)).toEqual([0x3005n, 0x2a02n]);
    expect([TT_UNTRANSLATED, TT_DEVTLB, TT_PASSTHROUGH]).toEqual([0, 1, 2]);
  });
  it("encode a scalable entry as context_entry_set_pasid_table writes it for a 20-bit PASID space", () => {
    // A 2^20-PASID directory is 2^14 entries: PDTS = 14 - 7 = 7. DTE, PRE and PASIDE set, FPD clear.
    const w = encode(SM_CONTEXT_ENTRY, {
      P: 1,
      DTE: 1,
      PASIDE: 1,
      PRE: 1,
      PDTS: 7,
      PASIDDIRPTR: 0x7654000,
      RID_PASID: 0,
    });
    expect(qwords(w)).toEqual([0x7654e1dn, 0n, 0n, 0n]);
    expect(pdtsMaxPasids(7)).toBe(2 ** 20);
    expect(pdtsMaxPasids(0)).toBe(2 ** 13);
  });
  it("place RID_PRIV at bit 84, where older kernels set it beside RID_PASID", () => {
    const w = encode(SM_CONTEXT_ENTRY, { RID_PASID: 0xfffff, RID_PRIV: 1 });
    expect(qwords(w)).toEqual([0n, 0x1fffffn, 0n, 0n]);
  });
  it("have the sizes of their tables' slots", () => {
    expect(CONTEXT_ENTRY.bits / 8).toBe(CONTEXT_ENTRY_SIZE);
    expect(SM_CONTEXT_ENTRY.bits / 8).toBe(SM_CONTEXT_ENTRY_SIZE);
  });
});
