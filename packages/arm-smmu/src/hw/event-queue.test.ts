import { PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { Q_DISABLED, Q_FULL, Q_WRITTEN, SmmuEventQueue } from "./event-queue.js";
import { SmmuPriQueue } from "./pri-queue.js";

function queue<T extends SmmuEventQueue | SmmuPriQueue>(q: T, log2: number): T {
  q.baseLo = (0x10000 | log2) >>> 0;
  q.setEnabled(true);
  return q;
}

const rec = new Uint32Array(8).fill(0xabcd);

describe("event queue", () => {
  it("writes entries at PROD with the wrap bit and refuses when disabled", () => {
    const mem = new PhysMemory();
    const q = new SmmuEventQueue(mem, 32, 19);
    expect(q.push(rec)).toBe(Q_DISABLED);
    queue(q, 1);
    expect(q.push(rec)).toBe(Q_WRITTEN);
    expect(q.push(rec)).toBe(Q_WRITTEN);
    expect(q.prod).toBe(2); // index 0, wrap 1
    expect(mem.read32(0x10000 + 32)).toBe(0xabcd);
    q.writeCons(2);
    expect(q.push(rec)).toBe(Q_WRITTEN);
    expect(q.prod).toBe(3);
  });

  it("a full queue loses the record and toggles OVFLG once; records resume when space exists", () => {
    const q = queue(new SmmuEventQueue(new PhysMemory(), 32, 19), 1);
    q.push(rec);
    q.push(rec);
    expect(q.push(rec)).toBe(Q_FULL);
    expect(q.push(rec)).toBe(Q_FULL);
    expect(q.prod >>> 31).toBe(1);
    expect(q.lost).toBe(2);
    q.writeCons(1); // space, overflow not yet acknowledged
    expect(q.push(rec)).toBe(Q_WRITTEN);
    expect(q.overflowActive).toBe(true);
  });

  it("LOG2SIZE above the IDR1 maximum behaves as the maximum", () => {
    const q = new SmmuEventQueue(new PhysMemory(), 32, 3);
    q.baseLo = 0x10000 | 9;
    expect(q.log2size).toBe(3);
  });

  it("an active EVENTQ_ABT_ERR makes the queue unwritable: records are lost without an overflow (IHI 0070 7.2.1)", () => {
    const q = queue(new SmmuEventQueue(new PhysMemory(), 32, 19), 1);
    q.aborted = true;
    expect(q.writable).toBe(false);
    expect(q.push(rec)).toBe(Q_DISABLED);
    expect(q.prod).toBe(0);
    q.aborted = false;
    expect(q.writable).toBe(true);
    q.push(rec);
    q.push(rec);
    expect(q.writable).toBe(false);
  });

  it("software writes PROD only while the queue is disabled", () => {
    const q = queue(new SmmuEventQueue(new PhysMemory(), 32, 19), 2);
    q.writeProd(3);
    expect(q.prod).toBe(0);
  });
});

describe("PRI queue", () => {
  it("an active overflow discards requests even with space, until OVACKFLG matches", () => {
    const q = queue(new SmmuPriQueue(new PhysMemory(), 16, 19), 1);
    const e = new Uint32Array(4);
    q.push(e);
    q.push(e);
    expect(q.push(e)).toBe(Q_FULL);
    q.writeCons(2);
    expect(q.push(e)).toBe(Q_FULL);
    q.writeCons((2 | 0x80000000) >>> 0);
    expect(q.push(e)).toBe(Q_WRITTEN);
  });

  it("an active PRIQ_ABT_ERR writes nothing and signals no overflow (IHI 0070 8.2)", () => {
    const q = queue(new SmmuPriQueue(new PhysMemory(), 16, 19), 1);
    q.aborted = true;
    expect(q.push(new Uint32Array(4))).toBe(Q_DISABLED);
    expect(q.prod).toBe(0);
  });
});
