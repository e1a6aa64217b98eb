import { fc, test } from "@fast-check/vitest";
import { describe, expect } from "vitest";
import { ModelBug } from "./bug.js";
import { SlotLru } from "./slot-cache.js";

describe("SlotLru", () => {
  test("a bad capacity or key width is a model bug", () => {
    expect(() => new SlotLru(-1, 1)).toThrow(ModelBug);
    expect(() => new SlotLru(1.5, 1)).toThrow(ModelBug);
    expect(() => new SlotLru(4, 0)).toThrow(ModelBug);
    expect(() => new SlotLru(4, 5)).toThrow(ModelBug);
    expect(() => new SlotLru(4, 2, 16)).toThrow(ModelBug);
    expect(() => new SlotLru(4, 1, -1)).toThrow(ModelBug);
  });

  test("a direct map finds keys by one read and rejects keys outside it", () => {
    const c = new SlotLru(2, 1, 16);
    expect(c.insert(15)).toBe(0);
    expect([c.find(15), c.find(3)]).toEqual([0, -1]);
    expect(() => c.insert(16)).toThrow(ModelBug);
    expect(() => c.insert(-1)).toThrow(ModelBug);
    expect(c.size()).toBe(1);
    c.remove(0);
    expect(c.find(15)).toBe(-1);
    // With capacity 0 the map is empty and every read misses.
    expect(new SlotLru(0, 1, 16).findDirect(15)).toBe(-1);
  });

  test("inserting into a full table is a model bug; removing a free slot too", () => {
    const c = new SlotLru(1, 1);
    c.insert(7);
    expect(() => c.insert(8)).toThrow(ModelBug);
    c.remove(0);
    expect(() => c.remove(0)).toThrow(ModelBug);
  });

  test("capacity 0 finds nothing and has no victim", () => {
    const c = new SlotLru(0, 2);
    expect([c.find(1, 2), c.size(), c.lru, c.mru]).toEqual([-1, 0, -1, -1]);
  });

  test("keys are stored as int32 words: 0xffffffff is found as -1", () => {
    const c = new SlotLru(2, 2);
    const s = c.insert(0xffff_ffff, 3);
    expect(c.find(-1, 3)).toBe(s);
    expect(c.find(-1, 4)).toBe(-1);
    expect(c.key(s, 0)).toBe(-1);
  });

  test("insert takes the lowest free slot; the victim is the least recently touched", () => {
    const c = new SlotLru(3, 1);
    expect([c.insert(10), c.insert(11), c.insert(12)]).toEqual([0, 1, 2]);
    c.touch(0);
    expect([c.lru, c.mru]).toEqual([1, 0]);
    c.remove(1);
    expect(c.used(1)).toBe(false);
    expect(c.insert(13)).toBe(1);
    expect(c.lru).toBe(2);
    c.clear();
    expect([c.size(), c.lru, c.find(10), c.insert(14)]).toEqual([0, -1, -1, 0]);
  });

  // Reference: a Map from key string to slot, an array from least to most recently used, and
  // the lowest free slot taken on insert.
  const op = fc.oneof(
    fc.record({ t: fc.constant("get" as const), k: fc.nat(40), w: fc.nat(3) }),
    fc.record({ t: fc.constant("put" as const), k: fc.nat(40), w: fc.nat(3) }),
    fc.record({ t: fc.constant("del" as const), k: fc.nat(40), w: fc.nat(3) }),
    fc.record({ t: fc.constant("clear" as const), k: fc.constant(0), w: fc.constant(0) }),
  );

  test.prop([fc.integer({ min: 1, max: 12 }), fc.boolean(), fc.array(op, { maxLength: 300 })], {
    seed: 20261126,
    numRuns: 300,
  })(
    "find, touch, insert, evict and remove agree with a Map and an LRU array",
    (cap, direct, ops) => {
      // Hashed over four words, or a direct map over one.
      const c = direct ? new SlotLru(cap, 1, 41) : new SlotLru(cap, 4);
      const slots = new Map<string, number>();
      let order: string[] = [];
      // Colliding keys on purpose: small words, spread over the four positions.
      const words = (k: number, w: number): [number, number, number, number] => {
        const a: [number, number, number, number] = [0, 0, 0, 0];
        if (direct) {
          a[0] = k;
          return a;
        }
        a[w] = k;
        a[(w + 1) & 3] = k >> 3;
        return a;
      };
      for (const { t, k, w } of ops) {
        const key = words(k, w);
        const name = key.join(",");
        if (t === "clear") {
          c.clear();
          slots.clear();
          order = [];
          continue;
        }
        const s = c.find(...key);
        expect(s).toBe(slots.get(name) ?? -1);
        if (t === "get" && s >= 0) {
          c.touch(s);
          order = [...order.filter((n) => n !== name), name];
        } else if (t === "put") {
          if (s >= 0) {
            c.touch(s);
            order = [...order.filter((n) => n !== name), name];
          } else {
            if (c.size() === cap) {
              const victim = order.shift() as string;
              expect(c.lru).toBe(slots.get(victim));
              c.remove(c.lru);
              slots.delete(victim);
            }
            const taken = new Set(slots.values());
            let lowest = 0;
            while (taken.has(lowest)) lowest++;
            expect(c.insert(...key)).toBe(lowest);
            slots.set(name, lowest);
            order.push(name);
          }
        } else if (t === "del" && s >= 0) {
          c.remove(s);
          slots.delete(name);
          order = order.filter((n) => n !== name);
        }
        expect(c.size()).toBe(slots.size);
        expect(c.lru).toBe(order.length ? slots.get(order[0] as string) : -1);
        expect(c.mru).toBe(order.length ? slots.get(order[order.length - 1] as string) : -1);
      }
      // Every key still present is found at its slot, with its words.
      for (const [name, s] of slots) {
        const key = name.split(",").map(Number) as [number, number, number, number];
        expect(c.find(...key)).toBe(s);
        expect([0, 1, 2, 3].map((w) => c.key(s, w))).toEqual(key);
      }
    },
  );
});
