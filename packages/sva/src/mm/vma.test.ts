// Tests of the VMA list: lookup, gaps, and the splits and merges of insert, remove and setFlags,
// checked against a page-by-page reference.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { VmaList } from "./vma.js";

const K = 0x1000;
const spans = (l: VmaList) => l.items.map((v) => [v.start / K, v.end / K, v.flags]);

describe("VmaList", () => {
  it("insert merges with equal neighbours and keeps unequal ones apart", () => {
    const l = new VmaList();
    l.insert(0x10 * K, 0x20 * K, 3);
    l.insert(0x30 * K, 0x40 * K, 3);
    l.insert(0x20 * K, 0x30 * K, 3);
    expect(spans(l)).toEqual([[0x10, 0x40, 3]]);
    l.insert(0x40 * K, 0x50 * K, 1);
    expect(spans(l)).toEqual([
      [0x10, 0x40, 3],
      [0x40, 0x50, 1],
    ]);
  });

  it("remove splits a VMA in the middle and reports whether anything was mapped", () => {
    const l = new VmaList();
    l.insert(0x10 * K, 0x20 * K, 1);
    expect(l.remove(0x14 * K, 0x16 * K)).toBe(true);
    expect(spans(l)).toEqual([
      [0x10, 0x14, 1],
      [0x16, 0x20, 1],
    ]);
    expect(l.remove(0x14 * K, 0x16 * K)).toBe(false);
    expect(l.remove(0 * K, 0x100 * K)).toBe(true);
    expect(l.items).toHaveLength(0);
  });

  it("setFlags splits at both ends, and merges back when the flags are restored", () => {
    const l = new VmaList();
    l.insert(0x10 * K, 0x20 * K, 3);
    l.setFlags(0x12 * K, 0x14 * K, 1);
    expect(spans(l)).toEqual([
      [0x10, 0x12, 3],
      [0x12, 0x14, 1],
      [0x14, 0x20, 3],
    ]);
    l.setFlags(0x12 * K, 0x14 * K, 3);
    expect(spans(l)).toEqual([[0x10, 0x20, 3]]);
  });

  it("find and lowestGap", () => {
    const l = new VmaList();
    l.insert(0x10 * K, 0x20 * K, 1);
    l.insert(0x22 * K, 0x30 * K, 1);
    expect(l.find(0x1f * K + 5)?.start).toBe(0x10 * K);
    expect(l.find(0x20 * K)).toBeNull();
    expect(l.lowestGap(0x10 * K, 2 * K, 0x100 * K)).toBe(0x20 * K);
    expect(l.lowestGap(0x10 * K, 3 * K, 0x100 * K)).toBe(0x30 * K);
    expect(l.lowestGap(0x10 * K, 3 * K, 0x32 * K)).toBe(-1);
  });

  it("agrees with a page-by-page reference over random operations (and never leaves mergeable neighbours)", () => {
    const op = fc.record({
      kind: fc.constantFrom("insert", "remove", "set"),
      start: fc.integer({ min: 0, max: 60 }),
      len: fc.integer({ min: 1, max: 12 }),
      flags: fc.integer({ min: 0, max: 3 }),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const l = new VmaList();
        const ref = new Map<number, number>();
        for (const o of ops) {
          const s = o.start * K;
          const e = (o.start + o.len) * K;
          if (o.kind === "insert") {
            if (l.intersects(s, e)) continue;
            l.insert(s, e, o.flags);
            for (let p = o.start; p < o.start + o.len; p++) ref.set(p, o.flags);
          } else if (o.kind === "remove") {
            l.remove(s, e);
            for (let p = o.start; p < o.start + o.len; p++) ref.delete(p);
          } else {
            let full = true;
            for (let p = o.start; p < o.start + o.len; p++) full &&= ref.has(p);
            if (!full) continue;
            l.setFlags(s, e, o.flags);
            for (let p = o.start; p < o.start + o.len; p++) ref.set(p, o.flags);
          }
          for (let p = 0; p < 80; p++)
            expect(l.find(p * K + 7)?.flags ?? -1).toBe(ref.get(p) ?? -1);
          for (let i = 1; i < l.items.length; i++) {
            const a = l.items[i - 1];
            const b = l.items[i];
            expect(a.end).toBeLessThanOrEqual(b.start);
            expect(a.end === b.start && a.flags === b.flags).toBe(false);
          }
        }
      }),
      { seed: 0x5a5a, numRuns: 200 },
    );
  });
});
