import { decode, encode } from "@iommu-sim/iommu-core/platform";
import {
  checkLayoutReservedBits as checkReservedBits,
  checkLayoutRoundTrip as checkRoundTrip,
  qwordsOf as qwords,
  wordsOfQwords as words,
} from "@iommu-sim/iommu-core/testing/layout";
import { describe, expect, it } from "vitest";
import { ROOT_ENTRY, ROOT_ENTRY_NR, ROOT_ENTRY_SIZE, SM_ROOT_ENTRY } from "./root-entry.js";

describe("root entries", () => {
  it("round-trip every field, also at an offset", () => {
    checkRoundTrip(ROOT_ENTRY, 101);
    checkRoundTrip(SM_ROOT_ENTRY, 102);
  });
  it("flag every uncovered bit as reserved", () => {
    checkReservedBits(ROOT_ENTRY);
    checkReservedBits(SM_ROOT_ENTRY);
  });
  it("reserve bits 11:1 and the high qword of a legacy entry, as QEMU checks", () => {
    expect(qwords(ROOT_ENTRY.reserved)).toEqual([0xffen, 0xffffffffffffffffn]);
  });
  it("reserve bits 11:1 of each half of a scalable entry", () => {
    expect(qwords(SM_ROOT_ENTRY.reserved)).toEqual([0xffen, 0xffen]);
  });
  it("encode a present legacy entry as the context-table address ORed with P", () => {
    const w = encode(ROOT_ENTRY, { P: 1, CTP: 0x12345000 });
    expect(qwords(w)).toEqual([0x12345001n, 0n]);
  });
  it("put the upper scalable pointer in the high qword", () => {
    const w = encode(SM_ROOT_ENTRY, { LP: 1, LCTP: 0x1000, UP: 1, UCTP: 0xabcdef000 });
    expect(qwords(w)).toEqual([0x1001n, 0xabcdef001n]);
    expect(decode(SM_ROOT_ENTRY, words(0x1001n, 0xabcdef001n))).toEqual({
      LP: 1,
      LCTP: 0x1000,
      UP: 1,
      UCTP: 0xabcdef000,
    });
  });
  it("fill one 4-KiB root table", () => {
    expect(ROOT_ENTRY_SIZE * ROOT_ENTRY_NR).toBe(4096);
    expect(ROOT_ENTRY.bits / 8).toBe(ROOT_ENTRY_SIZE);
  });
});
