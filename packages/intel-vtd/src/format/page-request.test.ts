import { decode, encode, hasReservedBits } from "@iommu-sim/iommu-core/platform";
import {
  checkLayoutReservedBits as checkReservedBits,
  checkLayoutRoundTrip as checkRoundTrip,
  qwordsOf as qwords,
  wordsOfQwords as words,
} from "@iommu-sim/iommu-core/testing/layout";
import { describe, expect, it } from "vitest";
import { PAGE_REQ_DESC, PRQ_DESC_SIZE, PRQ_DESC_TYPE_PAGE_REQ } from "./page-request.js";

describe("page request descriptor", () => {
  it("round-trips every field, also at an offset", () => {
    checkRoundTrip(PAGE_REQ_DESC, 501);
  });
  it("flags every uncovered bit as reserved", () => {
    checkReservedBits(PAGE_REQ_DESC);
  });
  it("reserves bits 15:10 and 63:54, as struct page_req_dsc does", () => {
    expect(qwords(PAGE_REQ_DESC.reserved)).toEqual([0xffc000000000fc00n, 0n, 0n, 0n]);
  });
  it("decodes a descriptor as QEMU's page request path writes it", () => {
    // lo = type | PP << 8 | RID << 16 | PASID << 32; hi = RD | WR << 1 | LPIG << 2 | PRGI << 3 | addr
    const w = words(0x0000001203100101n, 0x7ffff00002afn, 0n, 0n);
    expect(decode(PAGE_REQ_DESC, w)).toEqual({
      Type: PRQ_DESC_TYPE_PAGE_REQ,
      PP: 1,
      PDP: 0,
      RID: 0x0310,
      PASID: 0x12,
      ER: 0,
      PM: 0,
      RD: 1,
      WR: 1,
      LPIG: 1,
      PRGI: 0x55,
      ADDR: 0x7ffff0000000,
      PRIVDATA0: 0n,
      PRIVDATA1: 0n,
    });
    expect(hasReservedBits(PAGE_REQ_DESC, w)).toBe(false);
  });
  it("places ER and PM at bits 52 and 53, where the kernel's decoder reads them", () => {
    const w = encode(PAGE_REQ_DESC, { ER: 1, PM: 1, PDP: 1 });
    expect(qwords(w)[0]).toBe((1n << 52n) | (1n << 53n) | (1n << 9n));
  });
  it("is one 32-byte queue slot", () => {
    expect(PAGE_REQ_DESC.bits / 8).toBe(PRQ_DESC_SIZE);
  });
});
