import { decode, encode, hasReservedBits, reservedBitsSet } from "@iommu-sim/iommu-core/platform";
import { describeLayouts } from "@iommu-sim/iommu-core/testing/layout";
import { describe, expect, it } from "vitest";
import {
  EVENT_RECORD,
  EVT_C_BAD_SUBSTREAMID,
  EVT_CLASS_IN,
  EVT_E_PAGE_REQUEST,
  EVT_F_BAD_ATS_TREQ,
  EVT_F_CFG_CONFLICT,
  EVT_F_FETCH,
  EVT_F_PERMISSION,
  EVT_F_STREAM_DISABLED,
  EVT_F_TLB_CONFLICT,
  EVT_F_TRANSL_FORBIDDEN,
  EVT_F_TRANSLATION,
  EVT_F_UUT,
  EVT_F_WALK_EABT,
  EVT_ID,
  EVT_SIZE,
  eventLayout,
  evtCanStall,
  evtName,
} from "./events.js";

describeLayouts([
  EVENT_RECORD,
  EVT_F_UUT,
  EVT_F_FETCH,
  EVT_F_BAD_ATS_TREQ,
  EVT_F_STREAM_DISABLED,
  EVT_F_TRANSL_FORBIDDEN,
  EVT_C_BAD_SUBSTREAMID,
  EVT_F_WALK_EABT,
  EVT_F_TRANSLATION,
  EVT_F_PERMISSION,
  EVT_F_TLB_CONFLICT,
  EVT_F_CFG_CONFLICT,
  EVT_E_PAGE_REQUEST,
]);

describe("event records", () => {
  it("are 32 bytes and numbered as the spec numbers them", () => {
    expect(EVT_SIZE).toBe(32);
    expect(Object.values(EVT_ID)).toEqual([
      0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x10, 0x11, 0x12, 0x13,
      0x20, 0x21, 0x24, 0x25,
    ]);
  });

  it("decodes an F_TRANSLATION record as QEMU's smmuv3_record_event writes it", () => {
    // QEMU word layout: w0 = type | SSV << 11 | SSID << 12; w1 = SID; w2 = STAG | Stall << 31;
    // w3 = PnU << 1 | InD << 2 | RnW << 3 | S2 << 7 | CLASS << 8; w4..5 = addr; w6..7 = addr2.
    const w = new Uint32Array([
      0x10 | (1 << 11) | (3 << 12),
      0x10,
      7 | (1 << 31),
      (1 << 3) | (1 << 7) | (EVT_CLASS_IN << 8),
      0xdeadb000,
      0xffff,
      0x56789000,
      0x4,
    ]);
    const v = decode(eventLayout(w[0] as number), w);
    expect(v).toMatchObject({
      EventType: EVT_ID.F_TRANSLATION,
      SSV: 1,
      SubstreamID: 3,
      StreamID: 0x10,
      STAG: 7,
      Stall: 1,
      PnU: 0,
      InD: 0,
      RnW: 1,
      S2: 1,
      CLASS: EVT_CLASS_IN,
      InputAddr: 0xffffdeadb000n,
      IPA: 0x4_5678_9000,
    });
    expect(hasReservedBits(EVT_F_TRANSLATION, w)).toBe(false);
  });

  it("encodes the kernel's view of a fault: Stall dw1[31], RnW dw1[35], S2 dw1[39], CLASS dw1[41:40]", () => {
    const w = encode(EVT_F_PERMISSION, {
      EventType: EVT_ID.F_PERMISSION,
      StreamID: 1,
      Stall: 1,
      RnW: 1,
      S2: 1,
      CLASS: 1,
      TTRnW: 1,
      IPA: 0x1000,
    });
    expect([w[2], w[3]]).toEqual([0x80000000, (1 << 3) | (1 << 7) | (1 << 8) | (1 << 12)]);
    expect(w[6]).toBe(0x1000);
  });

  it("maps each number to its record shape and name", () => {
    expect(eventLayout(EVT_ID.F_ACCESS)).toBe(EVT_F_TRANSLATION);
    expect(eventLayout(EVT_ID.F_CD_FETCH)).toBe(EVT_F_FETCH);
    expect(eventLayout(EVT_ID.C_BAD_STE)).toBe(EVENT_RECORD);
    expect(eventLayout(0xe3)).toBe(EVENT_RECORD);
    expect(evtName(0x13)).toBe("F_PERMISSION");
    expect(evtName(0xe3)).toBe("IMPDEF_EVENT_0xe3");
    expect(evtName(0x30)).toBe("RESERVED_0x30");
    expect([0x0b, 0x10, 0x13, 0x20].map(evtCanStall)).toEqual([false, true, true, false]);
  });

  it("puts FetchAddr at [247:195] and keeps its low bits reserved", () => {
    const w = encode(EVT_F_FETCH, { EventType: 3, StreamID: 5, FetchAddr: 0x8_1234_5678 });
    expect([w[6], w[7]]).toEqual([0x12345678, 8]);
    expect(EVT_F_FETCH.reserved[6]).toBe(0x7);
    expect(EVT_F_FETCH.reserved[7]).toBe(0xff000000);
  });

  it("has no SSV in C_BAD_SUBSTREAMID and no SubstreamID in F_STREAM_DISABLED", () => {
    expect(reservedBitsSet(EVT_C_BAD_SUBSTREAMID, [1 << 11, 0, 0, 0, 0, 0, 0, 0])).toEqual([11]);
    expect(hasReservedBits(EVT_F_STREAM_DISABLED, [1 << 12, 0, 0, 0, 0, 0, 0, 0])).toBe(true);
  });
});
