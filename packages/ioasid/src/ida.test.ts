import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { xorshift32 } from "../test/xorshift32.js";
import { IDA_MAX, Ida } from "./ida.js";

describe("Ida.alloc", () => {
  it("returns the lowest free ID, from 0 by default", () => {
    const ida = new Ida();
    expect([ida.alloc(), ida.alloc(), ida.alloc()]).toEqual([0, 1, 2]);
    expect(ida.free(1)).toBe(0);
    expect(ida.alloc()).toBe(1);
    expect(ida.alloc()).toBe(3);
  });

  it("respects min and max", () => {
    const ida = new Ida();
    expect(ida.alloc({ min: 5, max: 10 })).toBe(5);
    expect(ida.alloc({ min: 0, max: 10 })).toBe(0);
    expect(ida.alloc({ min: 5 })).toBe(6);
    expect(ida.alloc({ max: 3 })).toBe(1);
  });

  it("returns ENOSPC when every ID in the range is taken", () => {
    const ida = new Ida();
    expect(ida.allocRange(7, 7)).toBe(7);
    expect(ida.allocRange(7, 7)).toBe("ENOSPC");
    expect(ida.allocRange(6, 7)).toBe(6);
    expect(ida.allocRange(6, 7)).toBe("ENOSPC");
    expect(ida.size).toBe(2);
  });

  it("returns EINVAL for an empty range and allocates nothing", () => {
    const ida = new Ida();
    expect(ida.allocRange(10, 9)).toBe("EINVAL");
    expect(ida.alloc({ min: 1, max: 0 })).toBe("EINVAL");
    expect(ida.size).toBe(0);
  });

  it("returns EINVAL for bounds that are not integers in range", () => {
    const ida = new Ida();
    for (const [min, max] of [
      [-1, 10],
      [0.5, 10],
      [0, 10.5],
      [Number.NaN, 10],
      [0, Number.NaN],
      [0, -1],
      [IDA_MAX + 1, IDA_MAX + 2],
      [0, 2 ** 32],
      [0, Number.POSITIVE_INFINITY],
    ]) {
      expect(ida.allocRange(min, max), `${min}..${max}`).toBe("EINVAL");
    }
    expect(ida.size).toBe(0);
  });

  it("caps a max above IDA_MAX to IDA_MAX, as ida_alloc_range does", () => {
    const ida = new Ida();
    expect(ida.allocRange(IDA_MAX, 0xffffffff)).toBe(IDA_MAX);
    expect(ida.allocRange(IDA_MAX, 0xffffffff)).toBe("ENOSPC");
    expect(ida.allocRange(IDA_MAX - 1, 0xffffffff)).toBe(IDA_MAX - 1);
  });

  it("finds a hole past many full leaves and nodes", () => {
    const ida = new Ida();
    for (let i = 0; i < 70_000; i++) expect(ida.alloc()).toBe(i);
    expect(ida.free(65_537)).toBe(0);
    expect(ida.free(40_000)).toBe(0);
    expect(ida.alloc({ min: 40_001 })).toBe(65_537);
    expect(ida.alloc({ min: 1 })).toBe(40_000);
    expect(ida.alloc()).toBe(70_000);
  });

  it("allocates at the top of the space and grows the tree only as needed", () => {
    const ida = new Ida();
    expect(ida.allocRange(IDA_MAX - 1, IDA_MAX)).toBe(IDA_MAX - 1);
    expect(ida.allocRange(IDA_MAX - 1, IDA_MAX)).toBe(IDA_MAX);
    expect(ida.allocRange(IDA_MAX - 1, IDA_MAX)).toBe("ENOSPC");
    expect(ida.alloc()).toBe(0);
    expect([...ida]).toEqual([0, IDA_MAX - 1, IDA_MAX]);
  });
});

describe("Ida.free", () => {
  it("returns ENOENT for an ID that is not allocated, and changes nothing", () => {
    const ida = new Ida();
    expect(ida.free(0)).toBe("ENOENT");
    ida.alloc();
    expect(ida.free(1)).toBe("ENOENT");
    expect(ida.free(5_000_000)).toBe("ENOENT");
    expect(ida.free(0)).toBe(0);
    expect(ida.free(0)).toBe("ENOENT");
    expect(ida.size).toBe(0);
  });

  it("returns EINVAL for an ID outside [0, IDA_MAX] or not an integer", () => {
    const ida = new Ida();
    ida.alloc();
    for (const id of [-1, 1.5, IDA_MAX + 1, Number.NaN, 2 ** 40]) {
      expect(ida.free(id), String(id)).toBe("EINVAL");
    }
    expect(ida.size).toBe(1);
  });

  it("gives back the memory of a leaf once it is empty", () => {
    const ida = new Ida();
    ida.allocRange(1 << 20, 1 << 20);
    ida.allocRange(1 << 25, 1 << 25);
    expect(ida.memory().leaves).toBe(2);
    ida.free(1 << 20);
    expect(ida.memory().leaves).toBe(1);
    ida.free(1 << 25);
    expect(ida.memory()).toMatchObject({ leaves: 0, nodes: 0, liveBytes: 0 });
    expect(ida.alloc()).toBe(0);
  });
});

describe("Ida queries", () => {
  it("has, size, isEmpty and nextUsed reflect the allocated IDs", () => {
    const ida = new Ida();
    expect(ida.isEmpty()).toBe(true);
    expect(ida.nextUsed()).toBe(-1);
    ida.allocRange(3, 3);
    ida.allocRange(100_000, 100_000);
    expect(ida.isEmpty()).toBe(false);
    expect(ida.size).toBe(2);
    expect(ida.has(3)).toBe(true);
    expect(ida.has(4)).toBe(false);
    expect(ida.has(-3)).toBe(false);
    expect(ida.has(IDA_MAX + 1)).toBe(false);
    expect(ida.nextUsed(0)).toBe(3);
    expect(ida.nextUsed(4)).toBe(100_000);
    expect(ida.nextUsed(100_001)).toBe(-1);
    expect(ida.nextUsed(-7)).toBe(3);
    expect(ida.nextUsed(2.5)).toBe(3);
    expect(ida.nextUsed(IDA_MAX + 1)).toBe(-1);
  });

  it("iterates in ascending order, from an ID", () => {
    const ida = new Ida();
    for (const id of [900, 5, 70_000, 1 << 30, 6]) ida.allocRange(id, id);
    expect([...ida]).toEqual([5, 6, 900, 70_000, 1 << 30]);
    expect([...ida.ids(901)]).toEqual([70_000, 1 << 30]);
  });

  it("destroy frees everything and leaves a usable, empty IDA", () => {
    const ida = new Ida();
    for (let i = 0; i < 5000; i++) ida.alloc();
    ida.destroy();
    expect(ida.size).toBe(0);
    expect([...ida]).toEqual([]);
    expect(ida.memory().liveBytes).toBe(0);
    expect(ida.alloc()).toBe(0);
  });

  it("costs little memory for a few IDs spread over the whole range", () => {
    const ida = new Ida();
    for (let k = 0; k < 100; k++) ida.allocRange(k * 21_000_000, k * 21_000_000);
    // Each lonely ID needs one 1024-bit leaf and a few nodes, never a flat 256 MiB bitmap.
    expect(ida.memory().liveBytes / ida.size).toBeLessThan(1024);
  });
});

/** A lowest-free allocator as plainly as it can be written: a Set and a linear scan. */
class ReferenceIda {
  readonly ids = new Set<number>();
  alloc(min: number, max: number): number | "ENOSPC" | "EINVAL" {
    if (min > max) return "EINVAL";
    for (let id = min; id <= max; id++) {
      if (!this.ids.has(id)) {
        this.ids.add(id);
        return id;
      }
    }
    return "ENOSPC";
  }
  free(id: number): 0 | "ENOENT" {
    return this.ids.delete(id) ? 0 : "ENOENT";
  }
}

describe("Ida against a reference model", () => {
  // Windows put the IDs in one leaf, across leaves, across nodes, and at the top of the space.
  const windows = [
    { base: 0, span: 100 },
    { base: 0, span: 5000 },
    { base: 30_000, span: 70_000 },
    { base: IDA_MAX - 3000, span: 3001 },
  ];

  test.prop([fc.integer({ min: 1, max: 0xffffffff }), fc.constantFrom(...windows.keys())], {
    seed: 0x1da,
    numRuns: 12,
  })("10,000 random allocs and frees agree with a linear-scan Set", (seed, w) => {
    const { base, span } = windows[w];
    const rnd = xorshift32(seed);
    const ida = new Ida();
    const ref = new ReferenceIda();
    for (let t = 0; t < 10_000; t++) {
      const r = rnd() % 16;
      if (r < 9) {
        // Mostly narrow ranges near the bottom of the window, sometimes empty ones.
        const min = base + (rnd() % span);
        const max =
          Math.min(base + span - 1, min + (rnd() % (r < 3 ? span : 64))) - (r === 8 ? 70 : 0);
        expect(ida.allocRange(min, max)).toBe(ref.alloc(min, max));
      } else if (r < 15) {
        const id = base + (rnd() % span);
        expect(ida.free(id)).toBe(ref.free(id));
      } else {
        const from = base + (rnd() % span);
        const expected = [...ref.ids].filter((id) => id >= from).sort((a, b) => a - b)[0] ?? -1;
        expect(ida.nextUsed(from)).toBe(expected);
      }
      expect(ida.size).toBe(ref.ids.size);
    }
    expect([...ida]).toEqual([...ref.ids].sort((a, b) => a - b));
  });
});
