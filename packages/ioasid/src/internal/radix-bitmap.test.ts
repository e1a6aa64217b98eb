import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { xorshift32 } from "../../test/xorshift32.js";
import { IdBitmap } from "./id-bitmap.js";
import { RadixBitmap } from "./radix-bitmap.js";

describe("RadixBitmap", () => {
  it("handles IDs at the top of the 32-bit space", () => {
    const b = new RadixBitmap();
    b.set(0xffffffff);
    b.set(0x80000000);
    expect(b.test(0xffffffff)).toBe(true);
    expect(b.findSet(0)).toBe(0x80000000);
    expect(b.findSet(0x80000001)).toBe(0xffffffff);
    expect(b.findZero(0xfffffffe, 0xffffffff)).toBe(0xfffffffe);
    b.set(0xfffffffe);
    expect(b.findZero(0xfffffffe, 0xffffffff)).toBe(-1);
    expect(b.findZero(0x80000000, 0xffffffff)).toBe(0x80000001);
    expect(b.clear(0xffffffff)).toBe(true);
    expect(b.clear(0xffffffff)).toBe(false);
    expect(b.count).toBe(2);
  });

  it("never hands out a slot of the level-5 root past 2^32 - 1", () => {
    const b = new RadixBitmap();
    b.set(0xffffffff);
    b.set(0xfffffffe);
    expect(b.findZero(0xfffffffe, 0xffffffff)).toBe(-1);
    expect(b.findZero(0xffffffc0, 0xffffffff)).toBe(0xffffffc0);
  });

  it("returns every block to the free list when emptied, and reuses them", () => {
    const b = new RadixBitmap();
    for (let i = 0; i < 4096; i++) b.set(i * 1021);
    const grown = b.memory();
    for (let i = 0; i < 4096; i++) expect(b.clear(i * 1021)).toBe(true);
    expect(b.memory()).toMatchObject({ liveBytes: 0, leaves: 0, nodes: 0 });
    for (let i = 0; i < 4096; i++) b.set(i * 1021);
    expect(b.memory().reservedBytes).toBe(grown.reservedBytes);
  });
});

describe("the bitmaps against a reference model", () => {
  // Bases put the IDs in the flat window, across its growth, past its 2^20 limit, and at the top
  // of the 32-bit space.
  test.prop(
    [
      fc.integer({ min: 1, max: 0xffffffff }),
      fc.constantFrom(0, 1000, (1 << 20) - 2500, 2 ** 31 - 2000, 2 ** 32 - 5000),
      fc.boolean(),
    ],
    { seed: 0xb17, numRuns: 14 },
  )(
    "10,000 random operations agree with a Set, for the tree alone and with the window",
    (seed, base, windowed) => {
      const rnd = xorshift32(seed);
      const span = 5000;
      const b = windowed ? new IdBitmap() : new RadixBitmap();
      const ref = new Set<number>();
      const lowestFree = (min: number, max: number): number => {
        for (let id = min; id <= max; id++) if (!ref.has(id)) return id;
        return -1;
      };
      for (let t = 0; t < 10_000; t++) {
        const r = rnd() % 10;
        const id = base + (rnd() % span);
        if (r < 4) {
          const max = Math.min(base + span - 1, id + (rnd() % 300));
          const expected = lowestFree(id, max);
          expect(b.alloc(id, max)).toBe(expected);
          if (expected >= 0) ref.add(expected);
        } else if (r < 5) {
          if (!ref.has(id)) {
            b.set(id);
            ref.add(id);
          }
        } else if (r < 8) {
          expect(b.clear(id)).toBe(ref.delete(id));
        } else if (r < 9) {
          expect(b.test(id)).toBe(ref.has(id));
          expect(b.findZero(id, base + span - 1)).toBe(lowestFree(id, base + span - 1));
        } else {
          let next = -1;
          for (const x of ref) if (x >= id && (next < 0 || x < next)) next = x;
          expect(b.findSet(id)).toBe(next);
        }
        expect(b.count).toBe(ref.size);
      }
    },
  );
});

describe("IdBitmap", () => {
  it("moves the tree's IDs into the window when the window grows over them", () => {
    const b = new IdBitmap();
    b.set(3000); // past the first window: kept in the tree
    b.set(70_000);
    expect(b.memory().windowBytes).toBe(0);
    for (let id = 0; id < 2999; id++) expect(b.alloc(0, 1 << 20)).toBe(id);
    expect(b.alloc(0, 1 << 20)).toBe(2999);
    expect(b.alloc(0, 1 << 20)).toBe(3001);
    expect(b.memory().leaves).toBe(1); // only 70,000 is left in the tree
    expect(b.test(3000)).toBe(true);
    expect(b.findSet(3002)).toBe(70_000);
    expect(b.count).toBe(3003);
  });

  it("stops growing the window at 2^20 IDs and carries on in the tree", () => {
    const b = new IdBitmap();
    for (let id = 0; id < (1 << 20) + 40; id++) b.set(id);
    expect(b.memory().windowBytes).toBe((1 << 20) / 8 + (1 << 10) * 4 + 32 * 4);
    expect(b.memory().leaves).toBe(1);
    expect(b.findZero(0, 0xffffffff)).toBe((1 << 20) + 40);
    expect(b.clear(5)).toBe(true);
    expect(b.findZero(0, 0xffffffff)).toBe(5);
    expect(b.findZero(6, 0xffffffff)).toBe((1 << 20) + 40);
  });
});
