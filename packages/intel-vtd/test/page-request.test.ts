// PRI page requests through the VT-d unit: the descriptors it queues, the requests it refuses
// (with their fault reasons and automatic responses), overflow, and responses from software.

import {
  AT_TRANSLATION_REQUEST,
  NO_PASID,
  PRG_INVALID_REQUEST,
  PRG_SUCCESS,
} from "@iommu-sim/iommu-core";
import { decode, type FieldValues, loadLayout } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { VTD_FR } from "../src/format/fault-record.js";
import { INV_DESC_TYPE } from "../src/format/inv-desc.js";
import { PAGE_REQ_DESC } from "../src/format/page-request.js";
import { PGTT_FL } from "../src/format/pasid-entry.js";
import { ECTL_IM, ECTL_IP, FSTS_PPF, PRS_PPR, PRS_PRO, VTD_REG } from "../src/format/registers.js";
import { LEGACY_VTD_CAPS } from "../src/hw/vtd-caps.js";
import type { VtdInterruptSource } from "../src/hw/vtd-unit.js";
import {
  pageRequest,
  type QiSubmitter,
  RecordingPort,
  readFrcd,
  type VtdTestMachineOptions,
  vtdTestMachine,
  xlate,
} from "./table-builder.js";

const SID = 0x10;

/** A scalable unit with a page request queue of 2^pqs pages and SID's context entry. */
function prqMachine(
  ctx: FieldValues = { PRE: 1 },
  opts: VtdTestMachineOptions & { pqs?: number } = {},
) {
  const events: VtdInterruptSource[] = [];
  const m = vtdTestMachine({ ...opts, unit: { onInterrupt: (s) => events.push(s), ...opts.unit } });
  const pqs = opts.pqs ?? 0;
  const queue = m.b.frame(pqs);
  m.unit.write32(VTD_REG.PQH, 0);
  m.unit.write32(VTD_REG.PQT, 0);
  m.unit.write32(VTD_REG.PQA, (queue | pqs) >>> 0);
  m.unit.write32(VTD_REG.PQA + 4, 0);
  const dir = m.b.setSmContext(m.rta, SID, ctx);
  const port = new RecordingPort(SID);
  m.unit.connect(port);
  const desc = (offset: number) =>
    decode(PAGE_REQ_DESC, loadLayout(m.mem, PAGE_REQ_DESC, queue + offset));
  return { ...m, qi: m.qi as QiSubmitter, queue, dir, port, events, desc };
}

const prs = (m: ReturnType<typeof prqMachine>) => m.unit.read32(VTD_REG.PRS);

describe("queued page requests", () => {
  it("a request with PASID is written with every field", () => {
    const m = prqMachine();
    pageRequest(m.unit, SID, 0xff_1234_5678_9abcn, {
      pasid: 0x9abcd,
      read: true,
      write: true,
      exec: true,
      priv: true,
      prgIndex: 0x1ab,
      last: true,
    });
    expect(m.unit.read32(VTD_REG.PQT)).toBe(32);
    expect(m.desc(0)).toMatchObject({
      Type: 1,
      PP: 1,
      PDP: 0,
      RID: SID,
      PASID: 0x9abcd,
      ER: 1,
      PM: 1,
      RD: 1,
      WR: 1,
      LPIG: 1,
      PRGI: 0x1ab,
    });
    expect(BigInt(m.desc(0).ADDR as number | bigint)).toBe(0xff_1234_5678_9000n);
    // Queued: no response yet, no fault.
    expect(m.port.calls).toEqual([]);
    expect(m.unit.read32(VTD_REG.FSTS) & FSTS_PPF).toBe(0);
  });

  it("a request without PASID has PP, PASID, ER and PM clear", () => {
    const m = prqMachine();
    pageRequest(m.unit, SID, 0x5000, {
      write: true,
      read: false,
      priv: true,
      exec: true,
      last: false,
    });
    expect(m.desc(0)).toMatchObject({
      PP: 0,
      PASID: 0,
      ER: 0,
      PM: 0,
      RD: 0,
      WR: 1,
      LPIG: 0,
      ADDR: 0x5000,
    });
  });

  it("PPR is set by the first request and raises one page request event", () => {
    const m = prqMachine();
    expect(m.unit.read32(VTD_REG.PECTL) >>> 0).toBe(ECTL_IM);
    pageRequest(m.unit, SID, 0x1000);
    pageRequest(m.unit, SID, 0x2000);
    expect(prs(m)).toBe(PRS_PPR);
    expect(m.unit.read32(VTD_REG.PECTL) >>> 0).toBe((ECTL_IM | ECTL_IP) >>> 0);
    expect(m.events).toEqual([]);
    m.unit.write32(VTD_REG.PECTL, 0);
    expect(m.events).toEqual(["page-request"]);
    // Software clears PPR; the next request is a new event, sent at once while unmasked.
    m.unit.write32(VTD_REG.PRS, PRS_PPR);
    expect(prs(m)).toBe(0);
    pageRequest(m.unit, SID, 0x3000);
    expect(m.events).toEqual(["page-request", "page-request"]);
    expect(m.unit.read32(VTD_REG.PQT)).toBe(96);
  });

  it("only a group's last request sets PPR and raises the event (PECTL_REG interrupt condition)", () => {
    // 12th-gen Core datasheet vol. 2, PECTL_REG.IP: the interrupt condition is a page group
    // request with LPG set being added to the queue, which sets PRS.PPR.
    const m = prqMachine();
    m.unit.write32(VTD_REG.PECTL, 0);
    pageRequest(m.unit, SID, 0x1000, { last: false });
    pageRequest(m.unit, SID, 0x2000, { last: false });
    expect(m.unit.read32(VTD_REG.PQT)).toBe(64);
    expect(prs(m)).toBe(0);
    expect(m.events).toEqual([]);
    pageRequest(m.unit, SID, 0x3000, { last: true });
    expect(prs(m)).toBe(PRS_PPR);
    expect(m.events).toEqual(["page-request"]);
  });

  it("a stop marker is queued, sets PPR, and is never answered by the unit", () => {
    // A stop marker (LPIG with neither read nor write) wants no PRG response (PCIe PRI; Linux's
    // prq_event_thread drops it silently), so neither a refusal nor an overflow answers it.
    const m = prqMachine();
    pageRequest(m.unit, SID, 0x1000, { read: false, last: true, prgIndex: 3 });
    expect(m.desc(0)).toMatchObject({ RD: 0, WR: 0, LPIG: 1, PRGI: 3 });
    expect(prs(m)).toBe(PRS_PPR);
    const refused = prqMachine({ PRE: 0 });
    pageRequest(refused.unit, SID, 0x1000, { read: false, last: true, prgIndex: 3 });
    expect(refused.port.calls).toEqual([]);
    expect(readFrcd(refused.unit, 0).FR).toBe(VTD_FR.SM_PRE_CLEAR);
    const full = prqMachine();
    for (let i = 0; i < 127; i++) pageRequest(full.unit, SID, 0, { last: false });
    pageRequest(full.unit, SID, 0, { read: false, last: true });
    expect(prs(full)).toBe(PRS_PRO);
    expect(full.port.calls).toEqual([]);
  });

  it("a refused page request's fault record has AT 0 (a message carries no address type)", () => {
    const m = prqMachine({ PRE: 0 });
    pageRequest(m.unit, SID, 0x1000, { pasid: 3, write: true });
    expect(readFrcd(m.unit, 0)).toMatchObject({ FR: VTD_FR.SM_PRE_CLEAR, AT: 0, PP: 1, PV: 3 });
  });

  it("software's page group response (type 9) reaches the device", () => {
    const m = prqMachine();
    pageRequest(m.unit, SID, 0x7000, { pasid: 5, prgIndex: 17 });
    const d = m.desc(0);
    m.unit.write32(VTD_REG.PQH, 32);
    expect(
      m.qi.submit([
        [
          INV_DESC_TYPE.PGRP_RESP,
          {
            RID: d.RID as number,
            PP: d.PP as number,
            PASID: d.PASID as number,
            PRGI: d.PRGI as number,
            RC: 0,
          },
        ],
      ]),
    ).toBe(true);
    expect(m.port.calls).toEqual([
      { op: "prgResponse", pasid: 5, prgIndex: 17, code: PRG_SUCCESS },
    ]);
  });
});

describe("refused page requests", () => {
  it("PRE clear: fault 0x47 and an Invalid Request response for the last request of a group", () => {
    const m = prqMachine({ PRE: 0 });
    pageRequest(m.unit, SID, 0x4000, { pasid: 3, last: false });
    expect(m.port.calls).toEqual([]);
    pageRequest(m.unit, SID, 0x5000, { pasid: 3, prgIndex: 9, last: true });
    expect(m.port.calls).toEqual([
      { op: "prgResponse", pasid: 3, prgIndex: 9, code: PRG_INVALID_REQUEST },
    ]);
    expect(readFrcd(m.unit, 0)).toMatchObject({
      F: 1,
      FR: VTD_FR.SM_PRE_CLEAR,
      SID,
      PP: 1,
      PV: 3,
      FI: 0x4000,
    });
    expect(readFrcd(m.unit, 1)).toMatchObject({ F: 1, FR: VTD_FR.SM_PRE_CLEAR, FI: 0x5000 });
    expect(m.unit.read32(VTD_REG.PQT)).toBe(0);
  });

  it("legacy mode: fault 0x32 and an Invalid Request response", () => {
    const m = prqMachine({}, { scalable: false });
    m.b.setContext(m.rta, SID, { SLPTPTR: m.b.frame(), AW: 2, DID: 1, TT: 1 });
    pageRequest(m.unit, SID, 0x4000, { prgIndex: 2 });
    expect(readFrcd(m.unit, 0)).toMatchObject({ F: 1, FR: VTD_FR.SM_TTM_LEGACY_PAGE_REQUEST });
    expect(m.port.calls).toEqual([
      { op: "prgResponse", pasid: NO_PASID, prgIndex: 2, code: PRG_INVALID_REQUEST },
    ]);
  });

  it("a request with PASID and PASIDE clear: fault 0x45", () => {
    const m = prqMachine({ PRE: 1, PASIDE: 0 });
    pageRequest(m.unit, SID, 0x4000, { pasid: 1 });
    expect(readFrcd(m.unit, 0).FR).toBe(VTD_FR.SM_PASIDE_CLEAR);
    expect(m.port.calls).toHaveLength(1);
    // Without PASID the same device's request is queued.
    pageRequest(m.unit, SID, 0x4000);
    expect(m.unit.read32(VTD_REG.PQT)).toBe(32);
  });

  it("a requester without a context entry: its context fault, and a response", () => {
    const m = prqMachine();
    const other = new RecordingPort(SID + 1);
    m.unit.connect(other);
    pageRequest(m.unit, SID + 1, 0x4000);
    expect(readFrcd(m.unit, 0).FR).toBe(VTD_FR.SM_CONTEXT_ENTRY_NOT_PRESENT);
    expect(other.calls).toEqual([
      { op: "prgResponse", pasid: NO_PASID, prgIndex: 0, code: PRG_INVALID_REQUEST },
    ]);
  });

  it("translation disabled, or a unit without ECAP.PRS: refused without a fault record", () => {
    const m = prqMachine({}, { enable: false });
    pageRequest(m.unit, SID, 0x4000);
    expect(m.port.calls).toHaveLength(1);
    expect(m.unit.read32(VTD_REG.FSTS) & FSTS_PPF).toBe(0);
    const l = vtdTestMachine({ caps: LEGACY_VTD_CAPS });
    const port = new RecordingPort(SID);
    l.unit.connect(port);
    pageRequest(l.unit, SID, 0x4000);
    expect(port.calls).toEqual([
      { op: "prgResponse", pasid: NO_PASID, prgIndex: 0, code: PRG_INVALID_REQUEST },
    ]);
    // The PRQ registers of a unit without PRS read 0 and ignore writes.
    l.unit.write32(VTD_REG.PQA, 0x12345000);
    expect(l.unit.read32(VTD_REG.PQA)).toBe(0);
  });

  it("no queue programmed (PQA = 0): dropped with an Invalid Request response", () => {
    const m = prqMachine();
    m.unit.write32(VTD_REG.PQA, 0);
    pageRequest(m.unit, SID, 0x4000, { prgIndex: 4 });
    expect(m.port.calls).toEqual([
      { op: "prgResponse", pasid: NO_PASID, prgIndex: 4, code: PRG_INVALID_REQUEST },
    ]);
    expect(m.unit.stats.pageRequestsDropped).toBe(1);
  });
});

describe("page request queue overflow", () => {
  it("a full queue sets PRO and answers the last request of a group with Success", () => {
    const m = prqMachine();
    // One 4 KiB page: 128 slots, one kept empty.
    for (let i = 0; i < 127; i++) pageRequest(m.unit, SID, i * 0x1000, { last: false });
    expect(m.unit.read32(VTD_REG.PQT)).toBe(127 * 32);
    // No request ended a group, so PPR is still clear (PECTL_REG: only LPIG sets it).
    expect(prs(m)).toBe(0);
    pageRequest(m.unit, SID, 0x100_0000, { last: false });
    expect(prs(m)).toBe(PRS_PRO);
    expect(m.port.calls).toEqual([]);
    pageRequest(m.unit, SID, 0x100_1000, { pasid: 2, prgIndex: 7, last: true });
    expect(m.port.calls).toEqual([{ op: "prgResponse", pasid: 2, prgIndex: 7, code: PRG_SUCCESS }]);
    expect(m.unit.read32(VTD_REG.PQT)).toBe(127 * 32);
    // Software drains the queue, but while PRO is set requests are still dropped.
    m.unit.write32(VTD_REG.PQH, 127 * 32);
    pageRequest(m.unit, SID, 0x100_2000, { last: true, prgIndex: 8 });
    expect(m.port.calls).toHaveLength(2);
    expect(m.unit.read32(VTD_REG.PQT)).toBe(127 * 32);
    // Clearing PRO lets requests in again; the queue wraps.
    m.unit.write32(VTD_REG.PRS, PRS_PRO | PRS_PPR);
    expect(prs(m)).toBe(0);
    pageRequest(m.unit, SID, 0x100_3000, { last: true, prgIndex: 9 });
    expect(m.unit.read32(VTD_REG.PQT)).toBe(0);
    expect(m.desc(127 * 32)).toMatchObject({ ADDR: 0x100_3000, PRGI: 9 });
    expect(m.port.calls).toHaveLength(2);
  });

  it("overflow is an event only when PRS was clear", () => {
    const m = prqMachine();
    m.unit.write32(VTD_REG.PECTL, 0);
    for (let i = 0; i < 127; i++) pageRequest(m.unit, SID, 0);
    expect(m.events).toEqual(["page-request"]);
    pageRequest(m.unit, SID, 0);
    expect(m.events).toEqual(["page-request"]);
    m.unit.write32(VTD_REG.PRS, PRS_PPR);
    m.unit.write32(VTD_REG.PRS, PRS_PRO);
    m.unit.write32(VTD_REG.PQH, m.unit.read32(VTD_REG.PQT));
    pageRequest(m.unit, SID, 0);
    expect(m.events).toEqual(["page-request", "page-request"]);
  });
});

describe("page requests and translation together", () => {
  it("a fault, a page request, a response and a retried translation", () => {
    const m = prqMachine({ PRE: 1, DTE: 1 });
    const fl = m.b.frame();
    m.b.setPasidEntry(m.dir, 4, { PGTT: PGTT_FL, DID: 3, FLPTR: fl });
    pageRequest(m.unit, SID, 0x9000, { pasid: 4, prgIndex: 1 });
    m.b.fsMap(fl, 4, 0x9000, 0x8_0000_0000);
    const d = m.desc(0);
    expect(d).toMatchObject({ PASID: 4, ADDR: 0x9000 });
    expect(m.qi.submit([[INV_DESC_TYPE.PGRP_RESP, { RID: SID, PP: 1, PASID: 4, PRGI: 1 }]])).toBe(
      true,
    );
    expect(m.port.calls).toEqual([{ op: "prgResponse", pasid: 4, prgIndex: 1, code: PRG_SUCCESS }]);
    // The retried ATS translation request now gets the page.
    expect(xlate(m.unit, SID, 0x9000, { pasid: 4, at: AT_TRANSLATION_REQUEST })).toMatchObject({
      status: 0,
      pa: 0x8_0000_0000,
    });
  });
});
