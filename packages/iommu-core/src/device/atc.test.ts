import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { ModelBug } from "../platform/bug.js";
import { Atc, type AtcEntry } from "./atc.js";
import { DMA_EXEC, DMA_READ, DMA_WRITE, NO_PASID } from "./iommu-hardware.js";

const RW = DMA_READ | DMA_WRITE;

describe("Atc.lookup", () => {
  it("misses on an empty cache and hits what was inserted, at the page's pa", () => {
    const atc = new Atc(4);
    expect(atc.lookup(NO_PASID, 5, DMA_READ)).toBe(false);
    atc.insert(NO_PASID, 5, 12, 0x9000, RW);
    expect(atc.lookup(NO_PASID, 5, DMA_READ)).toBe(true);
    expect(atc.pa).toBe(0x9000);
    expect(atc.perm).toBe(RW);
    expect([atc.hits, atc.misses, atc.inserts]).toEqual([1, 1, 1]);
  });

  it("covers a whole naturally aligned region with one entry", () => {
    const atc = new Atc(4);
    // 2 MiB region holding page 0x205: pages 0x200..0x3ff.
    atc.insert(7, 0x205, 21, 0x4000_0000, DMA_READ);
    expect(atc.lookup(7, 0x200, DMA_READ)).toBe(true);
    expect(atc.pa).toBe(0x4000_0000);
    expect(atc.lookup(7, 0x3ff, DMA_READ)).toBe(true);
    expect(atc.pa).toBe(0x4000_0000 + 0x1ff * 4096);
    expect(atc.lookup(7, 0x400, DMA_READ)).toBe(false);
    expect(atc.lookup(7, 0x1ff, DMA_READ)).toBe(false);
    expect(atc.entries()[0]).toMatchObject({ iovaPfn: 0x200, sizeShift: 21 });
  });

  it("needs every access bit asked for", () => {
    const atc = new Atc(4);
    atc.insert(NO_PASID, 1, 12, 0x1000, DMA_READ);
    expect(atc.lookup(NO_PASID, 1, DMA_WRITE)).toBe(false);
    expect(atc.lookup(NO_PASID, 1, DMA_READ | DMA_EXEC)).toBe(false);
    atc.insert(NO_PASID, 1, 12, 0x1000, DMA_READ | DMA_EXEC);
    expect(atc.lookup(NO_PASID, 1, DMA_READ | DMA_EXEC)).toBe(true);
  });

  it("keys entries by PASID and by privilege", () => {
    const atc = new Atc(8);
    atc.insert(1, 3, 12, 0x1000, RW);
    atc.insert(2, 3, 12, 0x2000, RW);
    atc.insert(1, 3, 12, 0x3000, RW, true);
    expect(atc.lookup(NO_PASID, 3, DMA_READ)).toBe(false);
    expect(atc.lookup(1, 3, DMA_READ) && atc.pa).toBe(0x1000);
    expect(atc.lookup(2, 3, DMA_READ) && atc.pa).toBe(0x2000);
    expect(atc.lookup(1, 3, DMA_READ, true) && atc.pa).toBe(0x3000);
    expect(atc.size).toBe(3);
  });

  it("insert replaces the overlapping entries of the same PASID and privilege", () => {
    const atc = new Atc(8);
    atc.insert(1, 0, 12, 0x1000, RW);
    atc.insert(1, 1, 12, 0x2000, RW);
    atc.insert(2, 0, 12, 0x3000, RW);
    atc.insert(1, 0, 13, 0x8000, DMA_READ); // pages 0-1 of PASID 1
    expect(atc.size).toBe(2);
    expect(atc.lookup(1, 1, DMA_READ) && atc.pa).toBe(0x9000);
    expect(atc.lookup(2, 0, DMA_READ) && atc.pa).toBe(0x3000);
    expect(atc.evictions).toBe(0);
  });
});

describe("Atc replacement", () => {
  it("evicts the least recently used entry, a hit refreshing its entry", () => {
    const atc = new Atc(3);
    atc.insert(NO_PASID, 1, 12, 0x1000, RW);
    atc.insert(NO_PASID, 2, 12, 0x2000, RW);
    atc.insert(NO_PASID, 3, 12, 0x3000, RW);
    expect(atc.lookup(NO_PASID, 1, DMA_READ)).toBe(true);
    atc.insert(NO_PASID, 4, 12, 0x4000, RW);
    expect(atc.evictions).toBe(1);
    expect(atc.lookup(NO_PASID, 2, DMA_READ)).toBe(false);
    expect(atc.entries().map((e) => e.iovaPfn)).toEqual([4, 1, 3]);
  });

  it("a lookup that misses on permissions does not refresh the entry", () => {
    const atc = new Atc(2);
    atc.insert(NO_PASID, 1, 12, 0x1000, DMA_READ);
    atc.insert(NO_PASID, 2, 12, 0x2000, RW);
    expect(atc.lookup(NO_PASID, 1, DMA_WRITE)).toBe(false);
    atc.insert(NO_PASID, 3, 12, 0x3000, RW);
    expect(atc.entries().map((e) => e.iovaPfn)).toEqual([3, 2]);
  });
});

describe("Atc.invalidate", () => {
  function filled(): Atc {
    const atc = new Atc(16);
    atc.insert(NO_PASID, 0x10, 12, 0x10000, RW);
    atc.insert(NO_PASID, 0x20, 12, 0x20000, RW);
    atc.insert(1, 0x10, 12, 0x11000, RW);
    atc.insert(1, 0x200, 21, 0x200000, RW); // pages 0x200..0x3ff
    atc.insert(2, 0x10, 12, 0x12000, RW);
    return atc;
  }
  const keys = (atc: Atc) =>
    atc
      .entries()
      .map((e) => `${e.pasid}:${e.iovaPfn.toString(16)}`)
      .sort();

  it("drops the entries of that PASID overlapping the range", () => {
    const atc = filled();
    expect(atc.invalidate(1, 0x10, 1, false)).toBe(1);
    expect(keys(atc)).toEqual(["-1:10", "-1:20", "1:200", "2:10"]);
    // A one-page invalidation inside a 2 MiB entry drops the whole entry.
    expect(atc.invalidate(1, 0x300, 1, false)).toBe(1);
    expect(keys(atc)).toEqual(["-1:10", "-1:20", "2:10"]);
    expect([atc.invalidations, atc.dropped]).toEqual([2, 2]);
  });

  it("does not drop entries that only touch the range's ends", () => {
    const atc = filled();
    expect(atc.invalidate(1, 0x11, 0x1ef, false)).toBe(0); // [0x11, 0x200)
    expect(atc.invalidate(1, 0x400, 4, false)).toBe(0);
    expect(atc.invalidate(1, 0xf, 1, false)).toBe(0);
    expect(atc.size).toBe(5);
  });

  it("pages = 0 drops everything of that PASID", () => {
    const atc = filled();
    expect(atc.invalidate(1, 0x12345, 0, false)).toBe(2);
    expect(keys(atc)).toEqual(["-1:10", "-1:20", "2:10"]);
  });

  it("a request without PASID drops the range for every PASID and for no PASID", () => {
    const atc = filled();
    expect(atc.invalidate(NO_PASID, 0x10, 1, false)).toBe(3);
    expect(keys(atc)).toEqual(["-1:20", "1:200"]);
    expect(atc.invalidate(NO_PASID, 0, 0, false)).toBe(2);
    expect(atc.size).toBe(0);
  });

  it("Global Invalidate with a PASID drops the range for every PASID, not the untagged entries", () => {
    const atc = filled();
    expect(atc.invalidate(5, 0x10, 1, true)).toBe(2);
    expect(keys(atc)).toEqual(["-1:10", "-1:20", "1:200"]);
    expect(atc.invalidate(5, 0, 0, true)).toBe(1);
    expect(keys(atc)).toEqual(["-1:10", "-1:20"]);
  });

  it("flushAll empties the cache", () => {
    const atc = filled();
    atc.flushAll();
    expect(atc.size).toBe(0);
    expect(atc.dropped).toBe(5);
    expect(atc.lookup(NO_PASID, 0x10, DMA_READ)).toBe(false);
  });
});

describe("Atc bugs", () => {
  it("a capacity outside [1, 4096] or a region below 4 KiB is a bug of the caller", () => {
    expect(() => new Atc(0)).toThrow(ModelBug);
    expect(() => new Atc(1.5)).toThrow(ModelBug);
    expect(() => new Atc(1).insert(NO_PASID, 0, 11, 0, RW)).toThrow(ModelBug);
  });
});

/** The obvious model: a list in LRU order (most recent first), scanned linearly. */
class ReferenceAtc {
  list: (AtcEntry & { pages: number })[] = [];
  hits = 0;
  misses = 0;
  evictions = 0;
  pa = 0;
  constructor(readonly capacity: number) {}

  lookup(pasid: number, pfn: number, access: number, priv: boolean): boolean {
    const i = this.list.findIndex(
      (e) =>
        e.pasid === pasid && e.privileged === priv && pfn >= e.iovaPfn && pfn < e.iovaPfn + e.pages,
    );
    if (i < 0 || (this.list[i].perm & access) !== access) {
      this.misses++;
      return false;
    }
    const [e] = this.list.splice(i, 1);
    this.list.unshift(e);
    this.hits++;
    this.pa = e.paBase + (pfn - e.iovaPfn) * 4096;
    return true;
  }

  insert(pasid: number, pfn: number, sizeShift: number, paBase: number, perm: number, p: boolean) {
    const pages = 2 ** (sizeShift - 12);
    const base = pfn - (pfn % pages);
    this.list = this.list.filter(
      (e) =>
        !(
          e.pasid === pasid &&
          e.privileged === p &&
          e.iovaPfn < base + pages &&
          base < e.iovaPfn + e.pages
        ),
    );
    if (this.list.length === this.capacity) {
      this.list.pop();
      this.evictions++;
    }
    this.list.unshift({ pasid, iovaPfn: base, sizeShift, paBase, perm, privileged: p, pages });
  }

  invalidate(pasid: number, pfn: number, pages: number, global: boolean) {
    const start = pages === 0 ? 0 : pfn;
    const end = pages === 0 ? Number.MAX_SAFE_INTEGER : pfn + pages;
    this.list = this.list.filter((e) => {
      const who = pasid === NO_PASID || e.pasid === pasid || (global && e.pasid !== NO_PASID);
      return !(who && e.iovaPfn < end && start < e.iovaPfn + e.pages);
    });
  }
}

const pasidArb = fc.constantFrom(NO_PASID, 0, 1);
const opArb = fc.oneof(
  fc.record({
    op: fc.constant("lookup" as const),
    pasid: pasidArb,
    pfn: fc.integer({ min: 0, max: 15 }),
    access: fc.constantFrom(DMA_READ, DMA_WRITE, RW, DMA_READ | DMA_EXEC),
    priv: fc.boolean(),
  }),
  fc.record({
    op: fc.constant("insert" as const),
    pasid: pasidArb,
    pfn: fc.integer({ min: 0, max: 15 }),
    sizeShift: fc.constantFrom(12, 12, 13, 14),
    pa: fc.integer({ min: 0, max: 64 }),
    perm: fc.integer({ min: 1, max: 7 }),
    priv: fc.boolean(),
  }),
  fc.record({
    op: fc.constant("invalidate" as const),
    pasid: pasidArb,
    pfn: fc.integer({ min: 0, max: 15 }),
    pages: fc.constantFrom(0, 1, 2, 5),
    global: fc.boolean(),
  }),
);

describe("Atc against a reference list", () => {
  test.prop([fc.integer({ min: 1, max: 4 }), fc.array(opArb, { minLength: 1, maxLength: 200 })], {
    seed: 0xa7c,
    numRuns: 300,
  })("a tiny ATC agrees with an LRU list on every lookup, entry and counter", (capacity, ops) => {
    const atc = new Atc(capacity);
    const ref = new ReferenceAtc(capacity);
    for (const o of ops) {
      if (o.op === "lookup") {
        const hit = atc.lookup(o.pasid, o.pfn, o.access, o.priv);
        expect(hit).toBe(ref.lookup(o.pasid, o.pfn, o.access, o.priv));
        if (hit) expect(atc.pa).toBe(ref.pa);
      } else if (o.op === "insert") {
        atc.insert(o.pasid, o.pfn, o.sizeShift, o.pa * 4096, o.perm, o.priv);
        ref.insert(o.pasid, o.pfn, o.sizeShift, o.pa * 4096, o.perm, o.priv);
      } else {
        atc.invalidate(o.pasid, o.pfn, o.pages, o.global);
        ref.invalidate(o.pasid, o.pfn, o.pages, o.global);
      }
      expect(atc.entries()).toEqual(ref.list.map(({ pages: _, ...e }) => e));
    }
    expect([atc.hits, atc.misses, atc.evictions]).toEqual([ref.hits, ref.misses, ref.evictions]);
  });
});
