import { fc, test } from "@fast-check/vitest";
import { ModelBug } from "@iommu-sim/iommu-core/platform";
import { describe, expect } from "vitest";
import { VtdPasidCache } from "./pasid-cache.js";

describe("VtdPasidCache: lookup, insert, replacement", () => {
  test("entries are keyed by (source-id, PASID) and carry the PASID entry's DID", () => {
    const c = new VtdPasidCache<number>(2);
    c.insert(0x10, 5, 3, 42);
    expect(c.lookup(0x10, 5)).toBe(42);
    expect(c.lookup(0x11, 5)).toBeNull();
    expect(c.lookup(0x10, 6)).toBeNull();
    expect(c.didOf(0x10, 5)).toBe(3);
    expect(c.didOf(0x10, 6)).toBe(-1);
  });

  test("insert returns the replaced or least recently used handle", () => {
    const c = new VtdPasidCache<number>(2);
    c.insert(1, 1, 0, 10);
    expect(c.insert(1, 1, 0, 11)).toBe(10);
    c.insert(1, 2, 0, 20);
    c.lookup(1, 1);
    expect(c.insert(1, 3, 0, 30)).toBe(20);
    expect([c.evictions, c.size()]).toEqual([1, 2]);
  });

  test("capacity 0 misses, keeps nothing and returns the handle", () => {
    const c = new VtdPasidCache<number>(0);
    expect(c.insert(1, 1, 1, 9)).toBe(9);
    expect([c.lookup(1, 1), c.size(), c.misses]).toEqual([null, 0, 1]);
  });

  test("a bad capacity is a model bug", () => {
    expect(() => new VtdPasidCache<number>(-2)).toThrow(ModelBug);
  });

  test.prop(
    [
      fc.integer({ min: 1, max: 3 }),
      fc.array(
        fc.tuple(
          fc.constantFrom("insert", "lookup", "dsi", "psi"),
          fc.integer({ min: 0, max: 2 }),
          fc.integer({ min: 0, max: 2 }),
        ),
        { maxLength: 200 },
      ),
    ],
    { seed: 0xa51d, numRuns: 300 },
  )("agrees with a Map-and-LRU-list reference, invalidations included", (cap, ops) => {
    const c = new VtdPasidCache<number>(cap);
    let ref: { sid: number; pasid: number; did: number; h: number }[] = []; // LRU first
    let h = 0;
    for (const [op, a, b] of ops) {
      const did = (a + b) % 2;
      if (op === "insert") {
        h++;
        const at = ref.findIndex((e) => e.sid === a && e.pasid === b);
        if (at >= 0) ref.splice(at, 1);
        else if (ref.length === cap) ref.shift();
        ref.push({ sid: a, pasid: b, did, h });
        c.insert(a, b, did, h);
      } else if (op === "lookup") {
        const at = ref.findIndex((e) => e.sid === a && e.pasid === b);
        const want = at < 0 ? null : (ref[at]?.h as number);
        if (at >= 0) ref.push(...ref.splice(at, 1));
        expect(c.lookup(a, b)).toBe(want);
      } else if (op === "dsi") {
        const n = ref.filter((e) => e.did === a % 2).length;
        ref = ref.filter((e) => e.did !== a % 2);
        expect(c.invalidateDomain(a % 2)).toBe(n);
      } else {
        // DID 0 tags cached invalid entries: a PASID-selective invalidation takes them too.
        const hit = (e: { did: number; pasid: number }) =>
          (e.did === a % 2 || e.did === 0) && e.pasid === b;
        const n = ref.filter(hit).length;
        ref = ref.filter((e) => !hit(e));
        expect(c.invalidatePasid(a % 2, b)).toBe(n);
      }
      expect(c.size()).toBe(ref.length);
    }
  });
});

describe("VtdPasidCache invalidation (type 7)", () => {
  function filled(): VtdPasidCache<number> {
    const c = new VtdPasidCache<number>(8);
    c.insert(0x18, 1, 1, 0); // device 3:0, PASID 1, DID 1
    c.insert(0x19, 1, 1, 1); // device 3:1, same DID and PASID
    c.insert(0x18, 2, 1, 2); // other PASID, same DID
    c.insert(0x18, 3, 2, 3); // other DID
    return c;
  }

  test("global removes every entry", () => {
    const c = filled();
    expect(c.invalidateAll()).toBe(4);
    expect(c.size()).toBe(0);
  });

  test("domain-selective removes all PASIDs of its DID on every device, keeps other DIDs", () => {
    const c = filled();
    const seen: number[] = [];
    expect(c.invalidateDomain(1, (h) => seen.push(h))).toBe(3);
    expect(seen.sort()).toEqual([0, 1, 2]);
    expect(c.lookup(0x18, 3)).toBe(3);
  });

  test("PASID-selective removes (DID, PASID) on every device, keeps other PASIDs and DIDs", () => {
    const c = filled();
    expect(c.invalidatePasid(1, 1)).toBe(2);
    expect(c.lookup(0x18, 1)).toBeNull();
    expect(c.lookup(0x19, 1)).toBeNull();
    expect(c.lookup(0x18, 2)).toBe(2);
    expect(c.lookup(0x18, 3)).toBe(3);
    expect(c.invalidatePasid(2, 1)).toBe(0);
  });

  test("PASID-selective also removes the entry of its PASID cached for an invalid PASID entry (DID 0), not other PASIDs'", () => {
    const c = filled();
    c.insert(0x1a, 1, 0, 4); // caching mode: a not-present PASID entry, tagged DID 0
    c.insert(0x1a, 5, 0, 5);
    expect(c.invalidatePasid(7, 1)).toBe(1);
    expect(c.lookup(0x1a, 1)).toBeNull();
    expect(c.lookup(0x18, 1)).toBe(0);
    expect(c.lookup(0x1a, 5)).toBe(5);
    expect(c.invalidateDomain(7)).toBe(0);
    expect(c.invalidateDomain(0)).toBe(1);
  });

  test("the lenient device flush removes a device's entries by FM, keeps other devices", () => {
    const c = filled();
    expect(c.invalidateDevice(0x18, 0)).toBe(3);
    expect(c.lookup(0x19, 1)).toBe(1);
    const d = filled();
    expect(d.invalidateDevice(0x18, 3)).toBe(4);
  });

  test("slots freed by invalidation are reused and chains stay consistent", () => {
    const c = filled();
    c.invalidateDomain(1);
    for (let p = 10; p < 18; p++) c.insert(0x20, p, 9, p);
    expect(c.size()).toBe(8);
    expect(c.lookup(0x18, 3)).toBeNull(); // the LRU entry went
    for (let p = 10; p < 18; p++) expect(c.lookup(0x20, p)).toBe(p);
    c.clear();
    expect([c.size(), c.entries().length]).toEqual([0, 0]);
  });
});
