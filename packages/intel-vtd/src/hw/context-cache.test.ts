import { fc, test } from "@fast-check/vitest";
import { ModelBug } from "@iommu-sim/iommu-core/platform";
import { describe, expect } from "vitest";
import { VTD_CONTEXT_NO_DID, VtdContextCache } from "./context-cache.js";

const sid = (bus: number, dev: number, fn: number) => (bus << 8) | (dev << 3) | fn;

describe("VtdContextCache: lookup, insert, replacement", () => {
  test("a miss returns -1; an insert hits with its handle and DID", () => {
    const c = new VtdContextCache<number>(2);
    expect(c.lookup(0x10)).toBeNull();
    expect(c.insert(0x10, 5, 42)).toBeNull();
    expect(c.lookup(0x10)).toBe(42);
    expect(c.entries()[0]).toMatchObject({ sid: 0x10, did: 5, value: 42 });
    expect([c.hits, c.misses, c.inserts, c.size()]).toEqual([1, 1, 1, 1]);
  });

  test("insert returns the replaced or evicted handle so the unit can recycle it", () => {
    const c = new VtdContextCache<number>(2);
    c.insert(1, 0, 10);
    expect(c.insert(1, 0, 11)).toBe(10);
    c.insert(2, 0, 20);
    c.lookup(1);
    expect(c.insert(3, 0, 30)).toBe(20);
    expect(c.evictions).toBe(1);
    expect(c.lookup(2)).toBeNull();
    expect(c.lookup(1)).toBe(11);
  });

  test("capacity 0 misses, keeps nothing and hands the handle straight back", () => {
    const c = new VtdContextCache<number>(0);
    expect(c.insert(1, 0, 7)).toBe(7);
    expect([c.lookup(1), c.size(), c.inserts, c.misses]).toEqual([null, 0, 1, 1]);
    expect(c.invalidateAll()).toBe(0);
  });

  test("a negative or fractional capacity is a model bug", () => {
    expect(() => new VtdContextCache<number>(-1)).toThrow(ModelBug);
    expect(() => new VtdContextCache<number>(1.5)).toThrow(ModelBug);
  });

  test.prop(
    [
      fc.integer({ min: 1, max: 3 }),
      fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 5 })), { maxLength: 200 }),
    ],
    {
      seed: 0xc0c,
      numRuns: 300,
    },
  )("agrees with a Map-and-LRU-list reference", (cap, ops) => {
    const c = new VtdContextCache<number>(cap);
    const lru: number[] = [];
    const ref = new Map<number, number>();
    let h = 0;
    for (const [ins, s] of ops) {
      if (ins) {
        h++;
        if (!ref.has(s) && ref.size === cap) ref.delete(lru.shift() as number);
        if (lru.includes(s)) lru.splice(lru.indexOf(s), 1);
        lru.push(s);
        ref.set(s, h);
        c.insert(s, 0, h);
      } else {
        const want = ref.get(s) ?? null;
        if (want !== null) lru.push(...lru.splice(lru.indexOf(s), 1));
        expect(c.lookup(s)).toBe(want);
      }
      expect(c.size()).toBe(ref.size);
    }
  });
});

describe("VtdContextCache invalidation", () => {
  function filled(): VtdContextCache<number> {
    const c = new VtdContextCache<number>(16);
    for (let fn = 0; fn < 8; fn++) c.insert(sid(3, 4, fn), 1, fn);
    c.insert(sid(3, 5, 0), 2, 100);
    c.insert(sid(4, 4, 0), VTD_CONTEXT_NO_DID, 200);
    return c;
  }

  test("global removes every entry and reports each handle", () => {
    const c = filled();
    const seen: number[] = [];
    expect(c.invalidateAll((h) => seen.push(h))).toBe(10);
    expect(seen).toHaveLength(10);
    expect(c.size()).toBe(0);
  });

  test("domain-selective removes its DID and scalable entries, keeps other DIDs", () => {
    const c = filled();
    expect(c.invalidateDomain(1)).toBe(9);
    expect(c.lookup(sid(3, 5, 0))).toBe(100);
    expect(c.lookup(sid(4, 4, 0))).toBeNull();
    expect(c.invalidateDomain(2)).toBe(1);
  });

  test("device-selective FM=0 removes exactly one source-id", () => {
    const c = filled();
    expect(c.invalidateDevice(sid(3, 4, 1), 0)).toBe(1);
    expect(c.lookup(sid(3, 4, 1))).toBeNull();
    expect(c.lookup(sid(3, 4, 0))).toBe(0);
    expect(c.lookup(sid(3, 5, 0))).toBe(100);
  });

  test("FM=1 masks function bit 2, FM=2 bits 2:1, FM=3 bits 2:0", () => {
    const gone = (fm: number) => {
      const c = filled();
      c.invalidateDevice(sid(3, 4, 1), fm);
      return [0, 1, 2, 3, 4, 5, 6, 7].filter((fn) => c.lookup(sid(3, 4, fn)) === null);
    };
    expect(gone(1)).toEqual([1, 5]);
    expect(gone(2)).toEqual([1, 3, 5, 7]);
    expect(gone(3)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  test("device-selective ignores the DID and keeps other devices and buses", () => {
    const c = filled();
    c.invalidateDevice(sid(4, 4, 0), 3);
    expect(c.lookup(sid(4, 4, 0))).toBeNull();
    expect(c.lookup(sid(3, 4, 0))).toBe(0);
  });

  test("clear empties without counting invalidations", () => {
    const c = filled();
    c.clear();
    expect([c.size(), c.invalidated, c.lookup(sid(3, 4, 0))]).toEqual([0, 0, null]);
    expect(c.entries()).toEqual([]);
  });
});
