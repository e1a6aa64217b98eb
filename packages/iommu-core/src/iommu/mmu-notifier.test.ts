import { describe, expect, it } from "vitest";
import { TestMm } from "../testing/test-mm.js";
import { MM_FLUSH_ALL_END, MmuNotifier, type MmuNotifierOps } from "./mmu-notifier.js";

function recorder(log: string[], name: string, extra: Partial<MmuNotifierOps> = {}): MmuNotifier {
  return new MmuNotifier({
    release: () => log.push(`${name} release`),
    invalidateRangeStart: (_s, r) => log.push(`${name} start ${r.start}-${r.end}`),
    invalidateRangeEnd: (_s, r) => log.push(`${name} end ${r.start}-${r.end}`),
    archInvalidateSecondaryTlbs: (_s, _mm, start, end) => log.push(`${name} flush ${start}-${end}`),
    freeNotifier: () => log.push(`${name} free`),
    ...extra,
  });
}

describe("MmuNotifierSubscriptions", () => {
  it("register takes an mm_struct reference; a second register, or one on an exited mm, is EINVAL", () => {
    const mm = new TestMm({ pgd: 0x1000 });
    const a = recorder([], "a");
    expect(mm.mmuNotifierRegister(a)).toBe(0);
    expect(a.mm).toBe(mm);
    expect(mm.count).toBe(2);
    expect(mm.mmuNotifierRegister(a)).toBe("EINVAL");
    const other = new TestMm({ pgd: 0x2000 });
    expect(other.mmuNotifierRegister(a)).toBe("EINVAL");
    other.release();
    expect(other.mmuNotifierRegister(recorder([], "b"))).toBe("EINVAL");
    expect(other.count).toBe(1);
  });

  it("invalidations reach every active subscription in order; a flush of everything ends at 2^64", () => {
    const log: string[] = [];
    const mm = new TestMm({ pgd: 0x1000 });
    mm.mmuNotifierRegister(recorder(log, "a"));
    mm.mmuNotifierRegister(recorder(log, "b"));
    mm.flush(0x1000, 0x3000);
    expect(log).toEqual([
      "a start 4096-12288",
      "b start 4096-12288",
      "a end 4096-12288",
      "b end 4096-12288",
      "a flush 4096-12288",
      "b flush 4096-12288",
    ]);
    log.length = 0;
    mm.flushAll();
    expect(log.at(-1)).toBe(`b flush 0-${MM_FLUSH_ALL_END}`);
  });

  it("release runs once per subscription and takes it off the chain; unregister and put still work after it", () => {
    const log: string[] = [];
    const mm = new TestMm({ pgd: 0x1000 });
    const a = recorder(log, "a");
    const b = recorder(log, "b");
    mm.mmuNotifierRegister(a);
    mm.mmuNotifierRegister(b);
    mm.release();
    expect(log).toEqual(["a release", "b release"]);
    log.length = 0;
    mm.flush(0, 0x1000);
    expect(log).toEqual([]);
    expect(mm.mmuNotifierUnregister(a)).toBe(0);
    expect(mm.mmuNotifierPut(b)).toBe(0);
    expect(log).toEqual(["b free"]);
    expect(mm.count).toBe(1);
    expect(mm.registered.size).toBe(0);
  });

  it("unregister releases a live subscription; put frees without release; both EINVAL when not registered", () => {
    const log: string[] = [];
    const mm = new TestMm({ pgd: 0x1000 });
    const a = recorder(log, "a");
    const b = recorder(log, "b");
    mm.mmuNotifierRegister(a);
    mm.mmuNotifierRegister(b);
    expect(mm.mmuNotifierUnregister(a)).toBe(0);
    expect(mm.mmuNotifierPut(b)).toBe(0);
    expect(log).toEqual(["a release", "b free"]);
    expect([a.mm, b.mm, mm.count]).toEqual([null, null, 1]);
    expect(mm.mmuNotifierUnregister(a)).toBe("EINVAL");
    expect(mm.mmuNotifierPut(b)).toBe("EINVAL");
  });

  it("a subscription an earlier callback took off the chain gets no further callback", () => {
    const log: string[] = [];
    const mm = new TestMm({ pgd: 0x1000 });
    const b = recorder(log, "b");
    const a = recorder(log, "a", {
      archInvalidateSecondaryTlbs: () => {
        log.push("a flush");
        mm.mmuNotifierUnregister(b);
      },
    });
    mm.mmuNotifierRegister(a);
    mm.mmuNotifierRegister(b);
    mm.flush(0, 0x1000);
    expect(log.filter((l) => l.includes("flush") || l.includes("release"))).toEqual([
      "a flush",
      "b release",
    ]);
  });
});
