import { fc, test } from "@fast-check/vitest";
import { decode, hasReservedBits, ModelBug } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { FRCD } from "../format/fault-record.js";
import { ECTL_IM, ECTL_IP, FRCD_F, FSTS_IQE, FSTS_PFO, FSTS_PPF } from "../format/registers.js";
import { FaultRecorder } from "./fault-recorder.js";

interface Rig {
  fr: FaultRecorder;
  events: () => number;
  other: { bits: number };
}

/** A recorder with `n` registers; the interrupt is unmasked unless `masked`. */
function rig(n: number, masked = false): Rig {
  let events = 0;
  const other = { bits: 0 };
  const fr = new FaultRecorder(
    n,
    () => {
      events++;
    },
    () => other.bits,
  );
  if (!masked) fr.writeFectl(0);
  return { fr, events: () => events, other };
}

/** Record a write fault from `sid` at page `page` without a PASID. */
function fault(fr: FaultRecorder, sid: number, page = 0x1000, reason = 5): boolean {
  return fr.record(sid, -1, page, 0, reason, false, false, false, 0);
}

/** Software clears F of record `i` by writing the high dword back. */
function clearF(fr: FaultRecorder, i: number): void {
  fr.write32(i * 16 + 12, fr.read32(i * 16 + 12));
}

const fri = (fr: FaultRecorder): number => (fr.fsts() >>> 8) & 0xff;

describe("FaultRecorder: recording", () => {
  it("a fault is written with every field where FRCD puts it, and F set", () => {
    const { fr } = rig(4);
    expect(fr.record(0x0a18, 0x12345, 0x89abc123, 0x000fedcb, 0x58, true, true, true, 2)).toBe(
      true,
    );
    const w = fr.recordWords(0);
    expect(hasReservedBits(FRCD, w)).toBe(false);
    const d = decode(FRCD, w);
    expect(d.FI).toBe(0x000fedcb89abc000);
    expect(d.SID).toBe(0x0a18);
    expect(d.PP).toBe(1);
    expect(d.PV).toBe(0x12345);
    expect(d.FR).toBe(0x58);
    expect(d.T).toBe(1);
    expect(d.PRIV).toBe(1);
    expect(d.EXE).toBe(1);
    expect(d.AT).toBe(2);
    expect(d.T2).toBe(0);
    expect(d.F).toBe(1);
    // The MMIO view is the same words.
    for (let i = 0; i < 4; i++) expect(fr.read32(4 * i)).toBe(w[i]);
  });

  it("a fault without a PASID has PP, PV, PRIV and EXE clear; a write has T clear", () => {
    const { fr } = rig(2);
    fr.record(0x10, -1, 0x5000, 0, 6, false, true, true, 0);
    const d = decode(FRCD, fr.recordWords(0));
    expect([d.PP, d.PV, d.PRIV, d.EXE, d.T]).toEqual([0, 0, 0, 0, 0]);
    expect(fr.recorded).toBe(1);
  });

  it("records go to consecutive registers and wrap after the last", () => {
    const { fr } = rig(3);
    for (let i = 0; i < 3; i++) {
      expect(fault(fr, i)).toBe(true);
      clearF(fr, i);
    }
    expect(fr.nextIndex).toBe(0);
    expect(fault(fr, 7)).toBe(true);
    expect(decode(FRCD, fr.recordWords(0)).SID).toBe(7);
    expect(fr.nextIndex).toBe(1);
  });

  it("faults from the same requester are not collapsed", () => {
    const { fr } = rig(4);
    expect(fault(fr, 1)).toBe(true);
    expect(fault(fr, 1)).toBe(true);
    expect(fr.recorded).toBe(2);
  });
});

describe("FaultRecorder: overflow", () => {
  it("when the next register still holds a fault, the new one is dropped and PFO set", () => {
    const { fr } = rig(2);
    fault(fr, 1);
    fault(fr, 2);
    expect(fault(fr, 3)).toBe(false);
    expect(fr.fsts() & FSTS_PFO).toBe(FSTS_PFO);
    expect(fr.suppressed).toBe(1);
    expect(decode(FRCD, fr.recordWords(0)).SID).toBe(1);
  });

  it("the next register is the internal index: a free register elsewhere does not help", () => {
    const { fr } = rig(3);
    fault(fr, 1); // -> 0
    fault(fr, 2); // -> 1, index now 2
    clearF(fr, 0);
    fault(fr, 3); // -> 2, index now 0
    clearF(fr, 2);
    // Register 0 is free: recorded there. Then index 1 still holds sid 2: overflow although 2 is free.
    expect(fault(fr, 4)).toBe(true);
    expect(fault(fr, 5)).toBe(false);
    expect(fr.fsts() & FSTS_PFO).toBe(FSTS_PFO);
  });

  it("while PFO is set every new fault is dropped, even with free registers", () => {
    const { fr } = rig(1);
    fault(fr, 1);
    fault(fr, 2); // overflow
    clearF(fr, 0);
    expect(fault(fr, 3)).toBe(false);
    expect(fr.suppressed).toBe(2);
    fr.writeFsts(FSTS_PFO);
    expect(fr.fsts() & FSTS_PFO).toBe(0);
    expect(fault(fr, 4)).toBe(true);
  });

  it("writing FSTS without the PFO bit leaves PFO set (RW1C)", () => {
    const { fr } = rig(1);
    fault(fr, 1);
    fault(fr, 2);
    fr.writeFsts(FSTS_PPF | FSTS_IQE);
    expect(fr.fsts() & FSTS_PFO).toBe(FSTS_PFO);
  });
});

describe("FaultRecorder: PPF and FRI", () => {
  it("PPF is set while any register has F set", () => {
    const { fr } = rig(4);
    expect(fr.fsts() & FSTS_PPF).toBe(0);
    fault(fr, 1);
    fault(fr, 2);
    expect(fr.fsts() & FSTS_PPF).toBe(FSTS_PPF);
    clearF(fr, 0);
    expect(fr.fsts() & FSTS_PPF).toBe(FSTS_PPF);
    clearF(fr, 1);
    expect(fr.fsts() & FSTS_PPF).toBe(0);
  });

  it("FRI is the register of the first fault recorded while PPF was clear", () => {
    const { fr } = rig(4);
    fault(fr, 1); // 0
    fault(fr, 2); // 1: PPF already set, FRI stays 0
    expect(fri(fr)).toBe(0);
    clearF(fr, 0);
    clearF(fr, 1);
    fault(fr, 3); // 2, PPF was clear
    expect(fri(fr)).toBe(2);
  });

  it("FRI and PPF cannot be written through FSTS", () => {
    const { fr } = rig(4);
    fault(fr, 1);
    fr.writeFsts(0xffff);
    expect(fr.fsts() & FSTS_PPF).toBe(FSTS_PPF);
    expect(fri(fr)).toBe(0);
  });
});

describe("FaultRecorder: register bank", () => {
  it("F is RW1C: writing 0 leaves it, writing 1 clears it, a second 1 does nothing", () => {
    const { fr } = rig(2);
    fault(fr, 1);
    fr.write32(12, 0);
    expect((fr.read32(12) & FRCD_F) >>> 0).toBe(FRCD_F);
    fr.write32(12, FRCD_F);
    expect(fr.read32(12) & FRCD_F).toBe(0);
    fr.write32(12, FRCD_F);
    expect(fr.fsts() & FSTS_PPF).toBe(0);
  });

  it("every other bit is read-only", () => {
    const { fr } = rig(2);
    fault(fr, 0x55, 0x7000, 9);
    const before = fr.recordWords(0);
    for (const off of [0, 4, 8]) fr.write32(off, 0xffffffff);
    fr.write32(12, 0x7fffffff);
    expect(fr.recordWords(0)).toEqual(before);
  });

  it("accesses outside the bank or misaligned read 0 and are ignored, never throw", () => {
    const { fr } = rig(2);
    fault(fr, 1);
    expect(fr.read32(32)).toBe(0);
    expect(fr.read32(-4)).toBe(0);
    expect(fr.read32(13)).toBe(0);
    expect(fr.read32(Number.NaN)).toBe(0);
    fr.write32(13, FRCD_F);
    fr.write32(28 + 16, FRCD_F);
    expect((fr.read32(12) & FRCD_F) >>> 0).toBe(FRCD_F);
  });

  it("a bank size outside 1..256 is a model bug", () => {
    expect(() => new FaultRecorder(0, () => {})).toThrow(ModelBug);
    expect(() => new FaultRecorder(257, () => {})).toThrow(ModelBug);
  });
});

describe("FaultRecorder: fault event", () => {
  it("FECTL resets with IM set and IP clear", () => {
    const fr = new FaultRecorder(2, () => {});
    expect(fr.readFectl()).toBe(ECTL_IM);
  });

  it("recording with PPF clear sends the event when unmasked", () => {
    const { fr, events } = rig(4);
    fault(fr, 1);
    expect(events()).toBe(1);
    expect(fr.readFectl()).toBe(0);
  });

  it("no new event while PPF is already set", () => {
    const { fr, events } = rig(4);
    fault(fr, 1);
    fault(fr, 2);
    expect(events()).toBe(1);
  });

  it("overflow raises no event", () => {
    const { fr, events } = rig(1);
    fault(fr, 1);
    fault(fr, 2);
    expect(events()).toBe(1);
  });

  it("with IM set, IP is set instead, and clearing IM sends the event and clears IP", () => {
    const { fr, events } = rig(4, true);
    fault(fr, 1);
    expect(events()).toBe(0);
    expect(fr.readFectl()).toBe((ECTL_IM | ECTL_IP) >>> 0);
    fr.writeFectl(ECTL_IM | ECTL_IP); // IP is read-only; IM stays set
    expect(events()).toBe(0);
    fr.writeFectl(0);
    expect(events()).toBe(1);
    expect(fr.readFectl()).toBe(0);
  });

  it("software writing IP does not set it", () => {
    const { fr } = rig(4);
    fr.writeFectl(ECTL_IP);
    expect(fr.readFectl()).toBe(0);
  });

  it("IP is cleared once software has serviced every status bit", () => {
    const { fr, events } = rig(1, true);
    fault(fr, 1);
    fault(fr, 2); // PFO
    clearF(fr, 0);
    expect(fr.readFectl() & ECTL_IP).toBe(ECTL_IP); // PFO still set
    fr.writeFsts(FSTS_PFO);
    expect(fr.readFectl() & ECTL_IP).toBe(0);
    fr.writeFectl(0);
    expect(events()).toBe(0);
  });

  it("a status bit the unit owns keeps IP set and blocks a new event", () => {
    const r = rig(2, true);
    r.other.bits = FSTS_IQE;
    fault(r.fr, 1);
    expect(r.fr.readFectl() & ECTL_IP).toBe(0); // IQE was already set: no new condition
    const s = rig(2, true);
    fault(s.fr, 1);
    s.other.bits = FSTS_IQE;
    clearF(s.fr, 0);
    expect(s.fr.readFectl() & ECTL_IP).toBe(ECTL_IP);
    s.other.bits = 0;
    s.fr.updatePending();
    expect(s.fr.readFectl() & ECTL_IP).toBe(0);
  });

  it("raiseEvent signals only when FSTS had no status set before", () => {
    const { fr, events } = rig(2);
    fr.raiseEvent(0);
    expect(events()).toBe(1);
    fr.raiseEvent(FSTS_IQE);
    expect(events()).toBe(1);
    fault(fr, 1);
    fr.raiseEvent(fr.fsts());
    expect(events()).toBe(2);
  });
});

describe("FaultRecorder: reset", () => {
  it("resetIndex sends the next fault to register 0", () => {
    const { fr } = rig(4);
    fault(fr, 1);
    clearF(fr, 0);
    fr.resetIndex();
    fault(fr, 2);
    expect(decode(FRCD, fr.recordWords(0)).SID).toBe(2);
  });

  it("reset clears every register, PFO and the index, and masks the event", () => {
    const { fr } = rig(1);
    fault(fr, 1);
    fault(fr, 2);
    fr.reset();
    expect(fr.fsts()).toBe(0);
    expect(fr.readFectl()).toBe(ECTL_IM);
    expect(fr.recordWords(0)).toEqual(new Uint32Array(4));
    expect(fr.nextIndex).toBe(0);
  });
});

describe("FaultRecorder against a reference model", () => {
  type Op = { kind: "fault"; sid: number } | { kind: "clear"; i: number } | { kind: "pfo" };
  const op = (n: number): fc.Arbitrary<Op> =>
    fc.oneof(
      fc.record({ kind: fc.constant("fault" as const), sid: fc.integer({ min: 0, max: 0xffff }) }),
      fc.record({ kind: fc.constant("clear" as const), i: fc.integer({ min: 0, max: n - 1 }) }),
      fc.record({ kind: fc.constant("pfo" as const) }),
    );

  test.prop(
    [
      fc
        .integer({ min: 1, max: 6 })
        .chain((n) => fc.tuple(fc.constant(n), fc.array(op(n), { maxLength: 80 }))),
    ],
    { seed: 3, numRuns: 200 },
  )(
    "records, PFO, PPF, FRI and events agree with a plain model of the spec's steps",
    ([n, ops]) => {
      const { fr, events } = rig(n);
      const sids: (number | null)[] = new Array(n).fill(null);
      let next = 0;
      let pfo = false;
      let firstIdx = 0;
      let expectEvents = 0;
      for (const o of ops) {
        if (o.kind === "fault") {
          const anyPending = sids.some((s) => s !== null);
          let ok = false;
          if (!pfo) {
            if (sids[next] !== null) pfo = true;
            else {
              sids[next] = o.sid;
              if (!anyPending) {
                firstIdx = next;
                expectEvents++;
              }
              next = (next + 1) % n;
              ok = true;
            }
          }
          expect(fault(fr, o.sid)).toBe(ok);
        } else if (o.kind === "clear") {
          sids[o.i] = null;
          clearF(fr, o.i);
        } else {
          pfo = false;
          fr.writeFsts(FSTS_PFO);
        }
        const ppf = sids.some((s) => s !== null);
        expect(fr.fsts() & FSTS_PFO).toBe(pfo ? FSTS_PFO : 0);
        expect(fr.fsts() & FSTS_PPF).toBe(ppf ? FSTS_PPF : 0);
        if (ppf) expect(fri(fr)).toBe(firstIdx);
        expect(events()).toBe(expectEvents);
        for (let i = 0; i < n; i++) {
          const d = decode(FRCD, fr.recordWords(i));
          expect(d.F).toBe(sids[i] === null ? 0 : 1);
          if (sids[i] !== null) expect(d.SID).toBe(sids[i]);
        }
      }
    },
  );
});
