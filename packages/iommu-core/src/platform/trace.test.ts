import { describe, expect, it } from "vitest";
import { LogicalClock } from "./clock.js";
import { Trace, type TraceEvent, TraceRecorder } from "./trace.js";

/** An emitter as the models write it: the data object is built only behind the guard. */
function mapRange(trace: Trace, built: { count: number }, iova: number): void {
  if (trace.active) {
    built.count++;
    trace.emit("map", { domain: 1, iova, pa: iova + 0x1000, size: 0x1000, prot: 3 });
  }
}

describe("Trace", () => {
  it("is inactive with no listener, so a guarded emitter builds nothing and emits nothing", () => {
    const trace = new Trace();
    const built = { count: 0 };
    for (let i = 0; i < 10; i++) mapRange(trace, built, i * 0x1000);
    expect(trace.active).toBe(false);
    expect(built.count).toBe(0);
    expect(trace.emitted).toBe(0);
  });

  it("an unguarded emit while nobody listens is dropped and numbers nothing", () => {
    const trace = new Trace();
    trace.emit("flush", { iommu: "dmar0", scope: "global", detail: "" });
    const rec = new TraceRecorder(trace);
    trace.emit("flush", { iommu: "dmar0", scope: "domain", detail: "did=1" });
    expect(rec.events.map((e) => e.seq)).toEqual([0]);
  });

  it("is active exactly while someone listens", () => {
    const trace = new Trace();
    const off1 = trace.subscribe(() => {});
    const off2 = trace.subscribe(() => {});
    expect(trace.active).toBe(true);
    off1();
    expect(trace.active).toBe(true);
    off2();
    expect(trace.active).toBe(false);
    off2(); // a second call is harmless
    expect(trace.active).toBe(false);
  });

  it("stamps events with monotonic seq and the clock's time, passing kind and data as is", () => {
    const clock = new LogicalClock();
    const trace = new Trace(clock);
    const rec = new TraceRecorder(trace);
    const data = { device: "nvme0", pasid: 0, iova: 0x1000, len: 64, write: true, status: "ok" };
    trace.emit("dma", data);
    clock.advance(7);
    trace.emit("attach", { device: "nvme0", pasid: 3, domain: 2 });
    clock.tick();
    trace.emit("iopf", { device: "gpu0", pasid: 3, iova: 0x2000, grpid: 1, response: 0 });
    expect(rec.events).toEqual([
      { kind: "dma", seq: 0, time: 0, data },
      { kind: "attach", seq: 1, time: 7, data: { device: "nvme0", pasid: 3, domain: 2 } },
      {
        kind: "iopf",
        seq: 2,
        time: 8,
        data: { device: "gpu0", pasid: 3, iova: 0x2000, grpid: 1, response: 0 },
      },
    ]);
    expect(rec.events[0].data).toBe(data);
    expect(trace.emitted).toBe(3);
  });

  it("stamps time 0 without a clock", () => {
    const trace = new Trace();
    const rec = new TraceRecorder(trace);
    trace.emit("unmap", { domain: 1, iova: 0, size: 4096, unmapped: 4096 });
    expect(rec.events[0].time).toBe(0);
  });

  it("delivers each event to every listener in subscription order, as the same object", () => {
    const trace = new Trace();
    const seen: [string, TraceEvent][] = [];
    trace.subscribe((e) => seen.push(["a", e]));
    trace.subscribe((e) => seen.push(["b", e]));
    trace.emit("fault", { iommu: "smmu0", rid: 8, pasid: 0, iova: 0x10, kind: 1, code: 0x10 });
    expect(seen.map(([who]) => who)).toEqual(["a", "b"]);
    expect(seen[0][1]).toBe(seen[1][1]);
  });

  it("applies a subscribe or unsubscribe made during an emit from the next emit on", () => {
    const trace = new Trace();
    const log: string[] = [];
    let offB = () => {};
    const offA = trace.subscribe((e) => {
      log.push(`a${e.seq}`);
      if (e.seq === 0) {
        offB();
        trace.subscribe((e2) => log.push(`c${e2.seq}`));
      }
    });
    offB = trace.subscribe((e) => log.push(`b${e.seq}`));
    trace.emit("flush", { iommu: "x", scope: "all", detail: "" });
    trace.emit("flush", { iommu: "x", scope: "all", detail: "" });
    offA();
    trace.emit("flush", { iommu: "x", scope: "all", detail: "" });
    expect(log).toEqual(["a0", "b0", "a1", "c1", "c2"]);
  });

  it("unsubscribing one of two identical listeners leaves the other", () => {
    const trace = new Trace();
    let calls = 0;
    const listener = () => {
      calls++;
    };
    const off = trace.subscribe(listener);
    trace.subscribe(listener);
    off();
    trace.emit("attach", { device: "d", pasid: 0, domain: 1 });
    expect(calls).toBe(1);
  });
});

describe("TraceRecorder", () => {
  it("records from construction until stop, keeping what it recorded", () => {
    const trace = new Trace();
    trace.subscribe(() => {});
    trace.emit("attach", { device: "d", pasid: 0, domain: 1 });
    const rec = new TraceRecorder(trace);
    trace.emit("attach", { device: "d", pasid: 1, domain: 1 });
    rec.stop();
    trace.emit("attach", { device: "d", pasid: 2, domain: 1 });
    expect(rec.events.map((e) => e.seq)).toEqual([1]);
    rec.clear();
    expect(rec.events).toEqual([]);
  });

  it("filters by kind and returns one kind's events with typed data", () => {
    const trace = new Trace();
    const rec = new TraceRecorder(trace, { kinds: ["map", "unmap"] });
    const all = new TraceRecorder(trace);
    trace.emit("map", { domain: 1, iova: 0, pa: 0x1000, size: 4096, prot: 1 });
    trace.emit("attach", { device: "d", pasid: 0, domain: 1 });
    trace.emit("unmap", { domain: 1, iova: 0, size: 4096, unmapped: 4096 });
    expect(rec.events.map((e) => e.kind)).toEqual(["map", "unmap"]);
    const maps = all.ofKind("map");
    expect(maps.map((e) => e.data.pa)).toEqual([0x1000]);
    expect(all.events.map((e) => e.seq)).toEqual([0, 1, 2]);
  });

  it("narrows data by kind", () => {
    const trace = new Trace();
    const rec = new TraceRecorder(trace);
    trace.emit("unmap", { domain: 4, iova: 0, size: 8192, unmapped: 4096 });
    const e = rec.events[0];
    // A type-level check as much as a runtime one: `unmapped` exists only on unmap's data.
    expect(e.kind === "unmap" ? e.data.unmapped : -1).toBe(4096);
  });
});
