import { FaultKind } from "@iommu-sim/iommu-core";
import { decode } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { EVT_ID, eventLayout } from "../format/events.js";
import {
  encodeEvent,
  SMMU_ABORT_SILENT,
  SmmuEventFields,
  smmuFaultKind,
  walkEventId,
} from "./smmu-event.js";
import { W_ACCESS, W_ADDR_SIZE, W_EABT, W_PERMISSION, W_TRANSLATION } from "./smmu-walk.js";

function fields(over: Partial<SmmuEventFields>): SmmuEventFields {
  return Object.assign(new SmmuEventFields(), over);
}

function roundTrip(e: SmmuEventFields) {
  const rec = new Uint32Array(8);
  encodeEvent(e, rec);
  return decode(eventLayout(e.id), rec);
}

describe("event records", () => {
  it("a stalled stage 2 F_PERMISSION carries STAG, Stall, the syndrome, InputAddr and the IPA", () => {
    const d = roundTrip(
      fields({
        id: EVT_ID.F_PERMISSION,
        sid: 0x1234,
        ssid: 7,
        stag: 0x55,
        stall: true,
        privileged: true,
        instruction: true,
        read: true,
        s2: true,
        cls: 1,
        ttRnW: true,
        inLo: 0x89abc123,
        inHi: 0xffff0001,
        addr: 0xf_1234_5000,
      }),
    );
    expect(d).toMatchObject({
      EventType: EVT_ID.F_PERMISSION,
      SSV: 1,
      SubstreamID: 7,
      StreamID: 0x1234,
      STAG: 0x55,
      Stall: 1,
      PnU: 1,
      InD: 1,
      RnW: 1,
      S2: 1,
      CLASS: 1,
      TTRnW: 1,
      IPA: 0xf_1234_5000,
    });
    expect(d.InputAddr).toBe(0xffff000189abc123n);
  });

  it("fetch events carry FetchAddr; C_BAD_SUBSTREAMID has the SubstreamID without SSV", () => {
    expect(roundTrip(fields({ id: EVT_ID.F_CD_FETCH, sid: 3, addr: 0x12345678_40 }))).toMatchObject(
      { FetchAddr: 0x12345678_40 },
    );
    expect(roundTrip(fields({ id: EVT_ID.C_BAD_SUBSTREAMID, sid: 3, ssid: 9 }))).toMatchObject({
      SubstreamID: 9,
      StreamID: 3,
    });
    const rec = new Uint32Array(8);
    encodeEvent(fields({ id: EVT_ID.C_BAD_SUBSTREAMID, ssid: 9 }), rec);
    expect((rec[0] as number) & 0x800).toBe(0);
  });

  it("F_STREAM_DISABLED has no SubstreamID", () => {
    const rec = new Uint32Array(8);
    encodeEvent(fields({ id: EVT_ID.F_STREAM_DISABLED, sid: 2, ssid: 5 }), rec);
    expect(rec[0]).toBe(EVT_ID.F_STREAM_DISABLED);
  });

  it("walk outcomes map to their events, and events to fault kinds", () => {
    expect([W_TRANSLATION, W_ADDR_SIZE, W_ACCESS, W_PERMISSION, W_EABT].map(walkEventId)).toEqual([
      EVT_ID.F_TRANSLATION,
      EVT_ID.F_ADDR_SIZE,
      EVT_ID.F_ACCESS,
      EVT_ID.F_PERMISSION,
      EVT_ID.F_WALK_EABT,
    ]);
    expect(smmuFaultKind(EVT_ID.F_PERMISSION)).toBe(FaultKind.PERMISSION);
    expect(smmuFaultKind(EVT_ID.C_BAD_STE)).toBe(FaultKind.BAD_CONFIG);
    expect(smmuFaultKind(SMMU_ABORT_SILENT)).toBe(FaultKind.BLOCKED);
  });
});
