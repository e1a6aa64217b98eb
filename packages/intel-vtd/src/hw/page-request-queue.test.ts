import { fc, test } from "@fast-check/vitest";
import { DMA_EXEC, DMA_READ, DMA_WRITE } from "@iommu-sim/iommu-core";
import { decode, hasReservedBits, loadLayout, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { PAGE_REQ_DESC } from "../format/page-request.js";
import { ECTL_IM, ECTL_IP, PRS_PPR, PRS_PRO, VTD_REG } from "../format/registers.js";
import {
  PageRequestQueue,
  PRQ_DISABLED,
  PRQ_OVERFLOW,
  PRQ_QUEUED,
  type PrqResult,
} from "./page-request-queue.js";

const BASE = 0x40000;

interface Rig {
  mem: PhysMemory;
  q: PageRequestQueue;
  events: () => number;
}

/** A queue of 2^pqs pages at BASE, head = tail = 0, event unmasked unless `masked`. */
function rig(pqs = 0, masked = false, base = BASE): Rig {
  const mem = new PhysMemory({ paBits: 40 });
  let events = 0;
  const q = new PageRequestQueue(mem, () => {
    events++;
  });
  write64(q, VTD_REG.PQH, 0);
  write64(q, VTD_REG.PQT, 0);
  write64(q, VTD_REG.PQA, base + pqs);
  if (!masked) q.write32(VTD_REG.PECTL, 0);
  return { mem, q, events: () => events };
}

function write64(q: PageRequestQueue, off: number, v: number): void {
  q.write32(off, v % 2 ** 32);
  q.write32(off + 4, Math.floor(v / 2 ** 32));
}

/** A read request for page `pfn` with PASID 1, group `prgi`. */
function req(q: PageRequestQueue, pfn = 0x1234, prgi = 1, lpig = true): PrqResult {
  return q.enqueue(0x0100, 1, pfn, DMA_READ, false, prgi, lpig);
}

const slots = (pqs: number): number => (4096 << pqs) / 32;

describe("PageRequestQueue: descriptor", () => {
  it("writes every field where PAGE_REQ_DESC puts it, at PQA + PQT", () => {
    const { mem, q } = rig();
    expect(
      q.enqueue(0xa0b8, 0xfedcb, 0xabcdef123, DMA_WRITE | DMA_READ | DMA_EXEC, true, 0x1ab, true),
    ).toBe(PRQ_QUEUED);
    const w = loadLayout(mem, PAGE_REQ_DESC, BASE);
    expect(hasReservedBits(PAGE_REQ_DESC, w)).toBe(false);
    const d = decode(PAGE_REQ_DESC, w);
    expect(d.Type).toBe(1);
    expect(d.PP).toBe(1);
    expect(d.PDP).toBe(0);
    expect(d.RID).toBe(0xa0b8);
    expect(d.PASID).toBe(0xfedcb);
    expect(d.ER).toBe(1);
    expect(d.PM).toBe(1);
    expect(d.RD).toBe(1);
    expect(d.WR).toBe(1);
    expect(d.LPIG).toBe(1);
    expect(d.PRGI).toBe(0x1ab);
    expect(d.ADDR).toBe(0xabcdef123 * 4096);
    expect(d.PRIVDATA0).toBe(0n);
  });

  it("a request without a PASID has PP, PASID, ER and PM clear", () => {
    const { mem, q } = rig();
    q.enqueue(0x10, -1, 0x5, DMA_READ | DMA_EXEC, true, 3, false);
    const d = decode(PAGE_REQ_DESC, loadLayout(mem, PAGE_REQ_DESC, BASE));
    expect([d.PP, d.PASID, d.ER, d.PM, d.LPIG, d.WR]).toEqual([0, 0, 0, 0, 0, 0]);
    expect(d.RD).toBe(1);
  });

  it("private data fills qw2/qw3 and sets PDP", () => {
    const { mem, q } = rig();
    q.enqueue(1, 2, 3, DMA_READ, false, 4, true, [0x11111111, 0x22222222, 0x33333333, 0x44444444]);
    const d = decode(PAGE_REQ_DESC, loadLayout(mem, PAGE_REQ_DESC, BASE));
    expect(d.PDP).toBe(1);
    expect(d.PRIVDATA0).toBe(0x2222222211111111n);
    expect(d.PRIVDATA1).toBe(0x4444444433333333n);
  });

  it("a slot reused without private data has qw2/qw3 cleared", () => {
    const { mem, q } = rig();
    q.enqueue(1, 2, 3, DMA_READ, false, 4, true, [1, 2, 3, 4]);
    write64(q, VTD_REG.PQH, 0);
    write64(q, VTD_REG.PQT, 0);
    q.enqueue(1, 2, 3, DMA_READ, false, 4, true);
    const d = decode(PAGE_REQ_DESC, loadLayout(mem, PAGE_REQ_DESC, BASE));
    expect([d.PDP, d.PRIVDATA0, d.PRIVDATA1]).toEqual([0, 0n, 0n]);
  });
});

describe("PageRequestQueue: ring", () => {
  it("PQT advances by 32 per descriptor and wraps at the queue size", () => {
    const { mem, q } = rig(0);
    const n = slots(0);
    for (let i = 0; i < n - 1; i++) {
      expect(req(q, i)).toBe(PRQ_QUEUED);
      expect(q.read32(VTD_REG.PQT)).toBe(((i + 1) * 32) % 4096);
    }
    // Software consumes all but the last; two more fit, the second wraps to slot 0.
    write64(q, VTD_REG.PQH, (n - 2) * 32);
    expect(req(q, 0x777)).toBe(PRQ_QUEUED);
    expect(q.read32(VTD_REG.PQT)).toBe(0);
    expect(req(q, 0x888)).toBe(PRQ_QUEUED);
    expect(q.read32(VTD_REG.PQT)).toBe(32);
    expect(decode(PAGE_REQ_DESC, loadLayout(mem, PAGE_REQ_DESC, BASE + (n - 1) * 32)).ADDR).toBe(
      0x777 * 4096,
    );
    expect(decode(PAGE_REQ_DESC, loadLayout(mem, PAGE_REQ_DESC, BASE)).ADDR).toBe(0x888 * 4096);
  });

  it("the queue is full when PQT + 32 == PQH: one slot stays empty", () => {
    const { q } = rig(0);
    const n = slots(0);
    for (let i = 0; i < n - 1; i++) expect(req(q)).toBe(PRQ_QUEUED);
    expect(req(q)).toBe(PRQ_OVERFLOW);
    expect(q.read32(VTD_REG.PQT)).toBe((n - 1) * 32);
    expect(q.queued).toBe(n - 1);
    expect(q.overflowed).toBe(1);
  });

  it("a full queue sets PRO and writes nothing", () => {
    const { mem, q } = rig(0);
    write64(q, VTD_REG.PQH, 64);
    write64(q, VTD_REG.PQT, 32);
    expect(req(q)).toBe(PRQ_OVERFLOW);
    expect(q.read32(VTD_REG.PRS) & PRS_PRO).toBe(PRS_PRO);
    expect(mem.read64(BASE + 32)).toBe(0);
    expect(mem.populatedFrameCount).toBe(0);
  });

  it("while PRO is set every request is dropped, even with room; clearing PRO resumes", () => {
    const { q } = rig(0);
    write64(q, VTD_REG.PQH, 64);
    write64(q, VTD_REG.PQT, 32);
    req(q);
    write64(q, VTD_REG.PQH, 32); // software drained the queue
    expect(req(q)).toBe(PRQ_OVERFLOW);
    expect(q.read32(VTD_REG.PQT)).toBe(32);
    q.write32(VTD_REG.PRS, PRS_PRO);
    expect(q.read32(VTD_REG.PRS) & PRS_PRO).toBe(0);
    expect(req(q)).toBe(PRQ_QUEUED);
  });

  it("a larger PQS gives a larger ring", () => {
    const { q } = rig(2);
    for (let i = 0; i < slots(2) - 1; i++) expect(req(q)).toBe(PRQ_QUEUED);
    expect(req(q)).toBe(PRQ_OVERFLOW);
  });
});

describe("PageRequestQueue: bad guest values", () => {
  it("PQH and PQT keep only bits 18:5, so they are always 32-byte aligned", () => {
    const { q } = rig(0);
    q.write32(VTD_REG.PQH, 0xffffffff);
    q.write32(VTD_REG.PQH + 4, 0xffffffff);
    q.write32(VTD_REG.PQT, 0x47);
    expect(q.read32(VTD_REG.PQH)).toBe(0x7ffe0);
    expect(q.read32(VTD_REG.PQH + 4)).toBe(0);
    expect(q.read32(VTD_REG.PQT)).toBe(0x40);
  });

  it("a head or tail beyond the queue is taken modulo its size, never throws", () => {
    const { mem, q } = rig(0);
    write64(q, VTD_REG.PQH, 0x10000 + 0x40); // same slot as 0x40
    write64(q, VTD_REG.PQT, 0x20000 + 0x20); // same slot as 0x20: full
    expect(req(q)).toBe(PRQ_OVERFLOW);
    q.write32(VTD_REG.PRS, PRS_PRO);
    write64(q, VTD_REG.PQT, 0x20000 + 0x60);
    expect(req(q, 0x99)).toBe(PRQ_QUEUED);
    expect(decode(PAGE_REQ_DESC, loadLayout(mem, PAGE_REQ_DESC, BASE + 0x60)).ADDR).toBe(
      0x99 * 4096,
    );
    expect(q.read32(VTD_REG.PQT)).toBe(0x80);
  });

  it("PQA = 0 means no queue: PRQ_DISABLED, nothing written, no status", () => {
    const { mem, q, events } = rig();
    write64(q, VTD_REG.PQA, 0);
    expect(req(q)).toBe(PRQ_DISABLED);
    expect(q.read32(VTD_REG.PRS)).toBe(0);
    expect(events()).toBe(0);
    expect(mem.populatedFrameCount).toBe(0);
    expect(q.aborted).toBe(1);
  });

  it("a queue outside physical memory drops the request as PRQ_DISABLED, PQT unchanged", () => {
    const { mem, q, events } = rig(0, false, 2 ** 41);
    expect(req(q)).toBe(PRQ_DISABLED);
    expect(q.read32(VTD_REG.PQT)).toBe(0);
    expect(q.read32(VTD_REG.PRS)).toBe(0);
    expect(events()).toBe(0);
    expect(mem.busError).toBe(true); // the abort is visible to whoever watches the bus
  });

  it("PQA keeps base bits 51:12 and PQS; reserved bits read as 0", () => {
    const { q } = rig();
    q.write32(VTD_REG.PQA, 0xffffffff);
    q.write32(VTD_REG.PQA + 4, 0xffffffff);
    expect(q.read32(VTD_REG.PQA)).toBe(0xfffff007);
    expect(q.read32(VTD_REG.PQA + 4)).toBe(0x000fffff);
  });

  it("offsets outside the block read 0 and ignore writes", () => {
    const { q } = rig();
    q.write32(VTD_REG.PRS - 4, 0xffffffff); // 0xD8: between PQA and PRS
    expect(q.read32(VTD_REG.PRS - 4)).toBe(0);
    expect(q.read32(0x34)).toBe(0);
  });
});

describe("PageRequestQueue: PRS and the page request event", () => {
  it("PECTL resets with IM set", () => {
    const q = new PageRequestQueue(new PhysMemory({ paBits: 40 }), () => {});
    expect(q.read32(VTD_REG.PECTL)).toBe(ECTL_IM);
  });

  it("the first descriptor sets PPR and sends the event; more do not while PPR is set", () => {
    const { q, events } = rig();
    req(q);
    expect(q.read32(VTD_REG.PRS)).toBe(PRS_PPR);
    expect(events()).toBe(1);
    req(q);
    expect(events()).toBe(1);
    q.write32(VTD_REG.PRS, PRS_PPR); // Linux clears PPR before reading the pointers
    expect(q.read32(VTD_REG.PRS)).toBe(0);
    req(q);
    expect(events()).toBe(2);
  });

  it("a descriptor without LPIG is queued but sets no PPR and sends no event (PECTL_REG.IP)", () => {
    const { q, events } = rig();
    expect(req(q, 0x1234, 1, false)).toBe(PRQ_QUEUED);
    expect(q.read32(VTD_REG.PQT)).toBe(32);
    expect(q.read32(VTD_REG.PRS)).toBe(0);
    expect(events()).toBe(0);
    req(q, 0x1235, 1, true);
    expect(q.read32(VTD_REG.PRS)).toBe(PRS_PPR);
    expect(events()).toBe(1);
  });

  it("PRS is RW1C: writing 0 clears nothing", () => {
    const { q } = rig();
    req(q);
    q.write32(VTD_REG.PRS, 0);
    expect(q.read32(VTD_REG.PRS)).toBe(PRS_PPR);
  });

  it("overflow sends the event only if PRS was clear", () => {
    const a = rig(0);
    write64(a.q, VTD_REG.PQH, 32);
    req(a.q); // fills the one free slot... PQT 0 -> 32 would hit PQH: overflow at once
    expect(a.q.read32(VTD_REG.PRS)).toBe(PRS_PRO);
    expect(a.events()).toBe(1);
    const b = rig(0);
    write64(b.q, VTD_REG.PQH, 64);
    req(b.q); // PPR, event
    req(b.q); // overflow while PPR set: no new event
    expect(b.q.read32(VTD_REG.PRS)).toBe(PRS_PPR | PRS_PRO);
    expect(b.events()).toBe(1);
  });

  it("masked: IP is set instead, and clearing IM sends the event", () => {
    const { q, events } = rig(0, true);
    req(q);
    expect(events()).toBe(0);
    expect(q.read32(VTD_REG.PECTL)).toBe((ECTL_IM | ECTL_IP) >>> 0);
    q.write32(VTD_REG.PECTL, 0);
    expect(events()).toBe(1);
    expect(q.read32(VTD_REG.PECTL)).toBe(0);
  });

  it("masked: IP is cleared when software clears PPR and PRO, and no event follows", () => {
    const { q, events } = rig(0, true);
    req(q);
    q.write32(VTD_REG.PRS, PRS_PPR);
    expect(q.read32(VTD_REG.PECTL)).toBe(ECTL_IM);
    q.write32(VTD_REG.PECTL, 0);
    expect(events()).toBe(0);
  });

  it("software cannot set IP", () => {
    const { q } = rig();
    q.write32(VTD_REG.PECTL, ECTL_IP);
    expect(q.read32(VTD_REG.PECTL)).toBe(0);
  });

  it("PEDATA, PEADDR and PEUADDR hold what software wrote", () => {
    const { q } = rig();
    q.write32(VTD_REG.PEDATA, 0x4041);
    q.write32(VTD_REG.PEADDR, 0xfee00000);
    q.write32(VTD_REG.PEUADDR, 7);
    expect(q.read32(VTD_REG.PEDATA)).toBe(0x4041);
    expect(q.read32(VTD_REG.PEADDR)).toBe(0xfee00000);
    expect(q.read32(VTD_REG.PEUADDR)).toBe(7);
  });

  it("reset returns every register to its reset value", () => {
    const { q } = rig();
    req(q);
    q.write32(VTD_REG.PEDATA, 1);
    q.reset();
    for (const off of [VTD_REG.PQH, VTD_REG.PQT, VTD_REG.PQA, VTD_REG.PRS, VTD_REG.PEDATA]) {
      expect(q.read32(off)).toBe(0);
    }
    expect(q.read32(VTD_REG.PECTL)).toBe(ECTL_IM);
  });
});

describe("PageRequestQueue against a reference ring", () => {
  type Op = { kind: "req"; pfn: number } | { kind: "consume"; n: number } | { kind: "clear" };
  const arbOp: fc.Arbitrary<Op> = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({ kind: fc.constant("req" as const), pfn: fc.nat(2 ** 40) }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("consume" as const), n: fc.nat(200) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("clear" as const) }) },
  );

  test.prop([fc.integer({ min: 0, max: 1 }), fc.array(arbOp, { maxLength: 400 })], {
    seed: 9,
    numRuns: 60,
  })("software reads back exactly the requests that were queued, in order", (pqs, ops) => {
    const { mem, q, events } = rig(pqs);
    const cap = slots(pqs) - 1;
    const pending: number[] = [];
    let pro = false;
    let ppr = false;
    let expectEvents = 0;
    for (const o of ops) {
      if (o.kind === "req") {
        const r = req(q, o.pfn);
        if (pro) expect(r).toBe(PRQ_OVERFLOW);
        else if (pending.length === cap) {
          expect(r).toBe(PRQ_OVERFLOW);
          if (!ppr) expectEvents++;
          pro = true;
        } else {
          expect(r).toBe(PRQ_QUEUED);
          pending.push(o.pfn);
          if (!ppr) expectEvents++;
          ppr = true;
        }
      } else if (o.kind === "consume") {
        // Software: clear PPR, read head..tail, write PQH = head + consumed.
        q.write32(VTD_REG.PRS, PRS_PPR);
        ppr = false;
        let head = q.read32(VTD_REG.PQH);
        const tail = q.read32(VTD_REG.PQT);
        const size = 4096 << pqs;
        let k = 0;
        while (head !== tail && k < o.n) {
          const d = decode(PAGE_REQ_DESC, loadLayout(mem, PAGE_REQ_DESC, BASE + head));
          expect(d.ADDR).toBe((pending.shift() as number) * 4096);
          head = (head + 32) % size;
          k++;
        }
        write64(q, VTD_REG.PQH, head);
        if (head === tail) expect(pending.length).toBe(0);
      } else {
        q.write32(VTD_REG.PRS, PRS_PRO);
        pro = false;
      }
      expect(q.read32(VTD_REG.PRS)).toBe((ppr ? PRS_PPR : 0) | (pro ? PRS_PRO : 0));
      expect(events()).toBe(expectEvents);
    }
  });
});
