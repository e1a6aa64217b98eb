import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { xorshift32 } from "../../../../scripts/bench-kit.js";
import { ModelBug } from "./bug.js";
import { FrameAllocator, MAX_ORDER } from "./frame-allocator.js";
import { PAGE_SIZE, PhysMemory } from "./phys-memory.js";

const P = PAGE_SIZE;

/** The initial carve by brute force: from the bottom, the largest aligned block that fits. */
function carve(basePfn: number, frames: number): [number, number][] {
  const blocks: [number, number][] = [];
  let pfn = basePfn;
  while (pfn < basePfn + frames) {
    let order = MAX_ORDER;
    while (pfn % 2 ** order !== 0 || pfn + 2 ** order > basePfn + frames) order--;
    blocks.push([pfn, order]);
    pfn += 2 ** order;
  }
  return blocks;
}

/**
 * Checks that every frame is free and merged back into the blocks of the initial carve: allocating
 * each carve order from the largest down must hand out exactly the carve's blocks, then nothing.
 * (Two unmerged buddies would make some order fail or come from a split.) Frees them again.
 */
function expectFullyMerged(fa: FrameAllocator): void {
  const want = carve(fa.basePa / P, fa.frameCount);
  const got: [number, number][] = [];
  for (const [, order] of [...want].sort((a, b) => b[1] - a[1])) {
    const pa = fa.alloc(order);
    expect(typeof pa).toBe("number");
    got.push([(pa as number) / P, order]);
  }
  expect(fa.alloc(0)).toBe("ENOMEM");
  expect(got.sort((a, b) => a[0] - b[0])).toEqual(want);
  for (const [pfn, order] of got) expect(fa.free(pfn * P, order)).toBe(0);
}

describe("FrameAllocator.alloc", () => {
  it("returns blocks aligned to their size, inside the region", () => {
    const mem = new PhysMemory();
    const fa = new FrameAllocator(mem, { basePa: 0x10_0000, size: 64 * P });
    for (const order of [0, 3, 1, 5, 0, 2]) {
      const pa = fa.alloc(order) as number;
      expect(pa % (2 ** order * P)).toBe(0);
      expect(pa >= 0x10_0000 && pa + 2 ** order * P <= 0x10_0000 + 64 * P).toBe(true);
      expect(fa.isAllocated(pa)).toBe(true);
    }
  });

  it("aligns blocks by physical frame number even when the region starts unaligned", () => {
    const fa = new FrameAllocator(new PhysMemory(), { basePa: 3 * P, size: 13 * P });
    // Frames 3..15: the only aligned order-3 block is 8..15.
    expect(fa.alloc(3)).toBe(8 * P);
    expect(fa.alloc(3)).toBe("ENOMEM");
    expect(fa.alloc(2)).toBe(4 * P);
    expect(fa.alloc(0)).toBe(3 * P);
    expect(fa.alloc(0)).toBe("ENOMEM");
  });

  it("hands out zeroed frames, also when a frame is reused after being written", () => {
    const mem = new PhysMemory();
    const fa = new FrameAllocator(mem, { basePa: 0, size: 4 * P });
    const pa = fa.alloc(2) as number;
    mem.fill(pa, 4 * P, 0xab);
    expect(fa.free(pa, 2)).toBe(0);
    const again = fa.alloc(1) as number;
    const other = fa.alloc(1) as number;
    const buf = new Uint8Array(2 * P);
    for (const block of [again, other]) {
      mem.readBytes(block, buf);
      expect(buf.every((b) => b === 0)).toBe(true);
    }
  });

  it("does not populate frames that were never written", () => {
    const mem = new PhysMemory();
    const fa = new FrameAllocator(mem, { basePa: 0, size: 2 ** 10 * P });
    fa.alloc(10);
    expect(mem.populatedFrameCount).toBe(0);
  });

  it("returns EINVAL for an order outside [0, MAX_ORDER] and changes nothing", () => {
    const fa = new FrameAllocator(new PhysMemory(), { basePa: 0, size: 8 * P });
    for (const order of [-1, MAX_ORDER + 1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(fa.alloc(order), String(order)).toBe("EINVAL");
    }
    expect(fa.liveFrames).toBe(0);
    expect(fa.liveAllocations).toBe(0);
  });

  it("returns ENOMEM when no free block is large enough, even with enough free frames", () => {
    const fa = new FrameAllocator(new PhysMemory(), { basePa: 0, size: 8 * P });
    expect(fa.alloc(4)).toBe("ENOMEM");
    const a = fa.alloc(0) as number;
    expect(fa.alloc(3)).toBe("ENOMEM");
    expect(fa.freeFrames).toBe(7);
    expect(fa.free(a)).toBe(0);
    expect(fa.alloc(3)).toBe(0);
    expect(fa.alloc(0)).toBe("ENOMEM");
  });

  it("allocates MAX_ORDER blocks from a region holding two of them", () => {
    const fa = new FrameAllocator(new PhysMemory(), { basePa: 0, size: 2 ** (MAX_ORDER + 1) * P });
    const a = fa.alloc(MAX_ORDER) as number;
    const b = fa.alloc(MAX_ORDER) as number;
    expect([a, b].sort((x, y) => x - y)).toEqual([0, 2 ** MAX_ORDER * P]);
    expect(fa.alloc(0)).toBe("ENOMEM");
    expect(fa.free(a, MAX_ORDER)).toBe(0);
    expect(fa.free(b, MAX_ORDER)).toBe(0);
    expect(fa.alloc(MAX_ORDER + 1)).toBe("EINVAL");
  });
});

describe("FrameAllocator.free", () => {
  it("merges split blocks back to the initial state", () => {
    const fa = new FrameAllocator(new PhysMemory(), { basePa: 16 * P, size: 16 * P });
    const got = Array.from({ length: 16 }, () => fa.alloc(0) as number);
    expect(new Set(got).size).toBe(16);
    expect(fa.alloc(0)).toBe("ENOMEM");
    for (const pa of [...got].reverse()) expect(fa.free(pa)).toBe(0);
    expect(fa.alloc(4)).toBe(16 * P);
  });

  it("merges back into several carve blocks when the region is not one power of two", () => {
    const fa = new FrameAllocator(new PhysMemory(), { basePa: 5 * P, size: 27 * P });
    const got: [number, number][] = [];
    for (;;) {
      const pa = fa.alloc(1);
      if (pa === "ENOMEM") break;
      got.push([pa as number, 1]);
    }
    for (;;) {
      const pa = fa.alloc(0);
      if (pa === "ENOMEM") break;
      got.push([pa as number, 0]);
    }
    expect(fa.freeFrames).toBe(0);
    for (const [pa, order] of got) expect(fa.free(pa, order)).toBe(0);
    expectFullyMerged(fa);
  });

  it("returns EINVAL for an address outside the region, unaligned, or not starting a block", () => {
    const fa = new FrameAllocator(new PhysMemory(), { basePa: 8 * P, size: 8 * P });
    const pa = fa.alloc(1) as number;
    for (const bad of [0, 7 * P, 16 * P, pa + 1, pa + P, -P, Number.NaN, pa + 0.5]) {
      expect(fa.free(bad, 1), String(bad)).toBe("EINVAL");
    }
    const freeFrame = pa === 8 * P ? 10 * P : 8 * P;
    expect(fa.free(freeFrame)).toBe("EINVAL");
    expect(fa.liveFrames).toBe(2);
  });

  it("returns EINVAL for a double free", () => {
    const fa = new FrameAllocator(new PhysMemory(), { basePa: 0, size: 4 * P });
    const pa = fa.alloc(0) as number;
    expect(fa.free(pa)).toBe(0);
    expect(fa.free(pa)).toBe("EINVAL");
    expect(fa.liveAllocations).toBe(0);
  });

  it("returns ENOENT when the block was allocated with another order, and keeps it", () => {
    const fa = new FrameAllocator(new PhysMemory(), { basePa: 0, size: 8 * P });
    const pa = fa.alloc(2) as number;
    expect(fa.free(pa, 1)).toBe("ENOENT");
    expect(fa.free(pa, 0)).toBe("ENOENT");
    expect(fa.free(pa, 3)).toBe("ENOENT");
    expect(fa.isAllocated(pa)).toBe(true);
    expect(fa.free(pa, 2)).toBe(0);
  });
});

describe("FrameAllocator accounting", () => {
  it("counts live frames and allocations across allocs and frees", () => {
    const fa = new FrameAllocator(new PhysMemory(), { basePa: 0, size: 32 * P });
    expect([fa.liveFrames, fa.liveAllocations, fa.freeFrames]).toEqual([0, 0, 32]);
    const a = fa.alloc(3) as number;
    const b = fa.alloc(0) as number;
    expect([fa.liveFrames, fa.liveAllocations, fa.freeFrames]).toEqual([9, 2, 23]);
    fa.free(b, 1); // ENOENT: nothing changes
    expect([fa.liveFrames, fa.liveAllocations]).toEqual([9, 2]);
    fa.free(a, 3);
    expect([fa.liveFrames, fa.liveAllocations, fa.freeFrames]).toEqual([1, 1, 31]);
    fa.free(b);
    expect([fa.liveFrames, fa.liveAllocations, fa.freeFrames]).toEqual([0, 0, 32]);
  });

  it("isAllocated is true only at the first frame of a live block", () => {
    const fa = new FrameAllocator(new PhysMemory(), { basePa: 0, size: 8 * P });
    const pa = fa.alloc(1) as number;
    expect(fa.isAllocated(pa)).toBe(true);
    expect(fa.isAllocated(pa + P)).toBe(false);
    expect(fa.isAllocated(pa + 8)).toBe(false);
    expect(fa.isAllocated(-P)).toBe(false);
    expect(fa.isAllocated(8 * P)).toBe(false);
    expect(FrameAllocator.pfn(2 ** 40 + 5)).toBe(2 ** 28);
  });
});

describe("FrameAllocator construction", () => {
  it("throws ModelBug for a region that is unaligned, empty, too large or outside memory", () => {
    const mem = new PhysMemory({ paBits: 32 });
    for (const options of [
      { basePa: 0x800, size: P },
      { basePa: 0, size: P + 1 },
      { basePa: 0, size: 0 },
      { basePa: 0, size: 2 ** 36 + P },
      { basePa: 2 ** 32 - P, size: 2 * P },
    ]) {
      expect(() => new FrameAllocator(mem, options), JSON.stringify(options)).toThrow(ModelBug);
    }
  });
});

describe("FrameAllocator against a reference model", () => {
  const regions = [
    { basePfn: 0, frames: 64 },
    { basePfn: 3, frames: 200 },
    { basePfn: 1024, frames: 96 },
    { basePfn: 2 ** 28 + 5, frames: 130 },
  ];

  test.prop([fc.integer({ min: 1, max: 0xffffffff }), fc.constantFrom(0, 1, 2, 3)], {
    seed: 0xf7a,
    numRuns: 12,
  })("3,000 random allocs and frees keep every invariant and merge back fully", (seed, r) => {
    const { basePfn, frames } = regions[r];
    const rnd = xorshift32(seed);
    const mem = new PhysMemory();
    const fa = new FrameAllocator(mem, { basePa: basePfn * P, size: frames * P });
    /** The reference: which frame belongs to which live block (by its first pfn). */
    const owner = new Int32Array(frames).fill(-1);
    const live = new Map<number, number>(); // first pfn -> order
    let liveFrames = 0;
    const fitsSomewhere = (order: number) => {
      const size = 2 ** order;
      const first = Math.ceil(basePfn / size) * size;
      for (let pfn = first; pfn + size <= basePfn + frames; pfn += size) {
        let free = true;
        for (let f = 0; f < size && free; f++) free = owner[pfn - basePfn + f] === -1;
        if (free) return true;
      }
      return false;
    };
    // Violations are collected rather than asserted one by one: expect() per frame would cost
    // more than the allocator.
    const bad: string[] = [];
    for (let op = 0; op < 3000 && bad.length === 0; op++) {
      if (live.size === 0 || rnd() % 100 < 55) {
        const order = rnd() % 100 < 70 ? 0 : rnd() % 6;
        const got = fa.alloc(order);
        if (got === "ENOMEM") {
          if (fitsSomewhere(order)) bad.push(`op ${op}: ENOMEM for order ${order} with room`);
          continue;
        }
        if (typeof got !== "number") {
          bad.push(`op ${op}: alloc(${order}) = ${got}`);
          break;
        }
        const pfn = got / P;
        const size = 2 ** order;
        if (pfn % size !== 0) bad.push(`op ${op}: pfn ${pfn} not aligned to order ${order}`);
        if (pfn < basePfn || pfn + size > basePfn + frames) bad.push(`op ${op}: outside region`);
        for (let f = 0; f < size; f++) {
          if (owner[pfn - basePfn + f] !== -1)
            bad.push(`op ${op}: frame ${pfn + f} handed out twice`);
          owner[pfn - basePfn + f] = pfn;
          // Zeroed on hand-out, then dirtied so that a reuse must zero it again.
          const probe = (pfn + f) * P + 8 * (rnd() % 512);
          if (mem.read64(probe) !== 0 || mem.hi !== 0) bad.push(`op ${op}: ${probe} not zeroed`);
          mem.write64((pfn + f) * P + 8 * (rnd() % 512), rnd() | 1, rnd());
        }
        live.set(pfn, order);
        liveFrames += size;
      } else {
        const keys = [...live.keys()];
        const pfn = keys[rnd() % keys.length];
        const order = live.get(pfn) as number;
        // Now and then a wrong order first: it is refused and changes nothing.
        if (rnd() % 20 === 0 && fa.free(pfn * P, order + 1) !== "ENOENT") {
          bad.push(`op ${op}: free with a wrong order not ENOENT`);
        }
        const r = fa.free(pfn * P, order);
        if (r !== 0) bad.push(`op ${op}: free(${pfn}, ${order}) = ${r}`);
        for (let f = 0; f < 2 ** order; f++) owner[pfn - basePfn + f] = -1;
        live.delete(pfn);
        liveFrames -= 2 ** order;
      }
      if (fa.liveFrames !== liveFrames || fa.liveAllocations !== live.size) {
        bad.push(
          `op ${op}: live ${fa.liveFrames}/${fa.liveAllocations}, want ${liveFrames}/${live.size}`,
        );
      }
      if (fa.freeFrames !== frames - liveFrames) bad.push(`op ${op}: freeFrames ${fa.freeFrames}`);
    }
    expect(bad).toEqual([]);
    for (const [pfn, order] of live) expect(fa.free(pfn * P, order)).toBe(0);
    expect(fa.liveFrames).toBe(0);
    expect(fa.liveAllocations).toBe(0);
    expectFullyMerged(fa);
  });
});
