import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { ModelBug } from "./bug.js";
import { Prng } from "./prng.js";

const draw = (p: Prng, n: number) => Array.from({ length: n }, () => p.nextU32());

describe("Prng", () => {
  it("gives the pinned first outputs (from a C xoshiro128** seeded through splitmix32)", () => {
    expect(draw(new Prng(0), 6)).toEqual([
      0xe308dc58, 0x4392d0e4, 0x03318f97, 0xac593a63, 0x08535f0a, 0x83532d1f,
    ]);
    expect(draw(new Prng(1), 6)).toEqual([
      0x9190299e, 0xc1017b27, 0xe3af522f, 0x7d71fb05, 0x787816c2, 0xfbbe0c00,
    ]);
    expect(draw(new Prng(0xdeadbeef), 6)).toEqual([
      0x897ad89d, 0x998f30df, 0x4a8bba06, 0xa0e20ce0, 0x8a40cc10, 0xbdc3ff9f,
    ]);
  });

  it("is deterministic: the same seed gives the same stream, across every method", () => {
    const run = (p: Prng) => [
      ...draw(p, 5),
      p.below(7),
      p.below(2 ** 40),
      p.range(-5, 5),
      p.chance(0.5),
      p.pick(["a", "b", "c"]),
      ...p.shuffle([1, 2, 3, 4, 5, 6]),
      ...draw(p.fork(), 3),
      p.nextU32(),
    ];
    expect(run(new Prng(42))).toEqual(run(new Prng(42)));
    expect(run(new Prng(42))).not.toEqual(run(new Prng(43)));
  });

  it("keeps the seed it was built from (as a uint32), so new Prng(p.seed) replays p", () => {
    expect(new Prng(-1).seed).toBe(0xffffffff);
    const p = new Prng(0x1234);
    const first = draw(p, 10);
    expect(draw(new Prng(p.seed), 10)).toEqual(first);
  });

  it("yields uint32 values that use all 32 bits", () => {
    const p = new Prng(7);
    let or = 0;
    let and = 0xffffffff;
    let bad = 0;
    for (let i = 0; i < 1000; i++) {
      const x = p.nextU32();
      if (!(Number.isInteger(x) && x >= 0 && x <= 0xffffffff)) bad++;
      or |= x;
      and &= x;
    }
    expect(bad).toBe(0);
    expect(or >>> 0).toBe(0xffffffff);
    expect(and).toBe(0);
  });
});

describe("Prng.fork", () => {
  it("derives the child deterministically and advances the parent by one draw", () => {
    const a = new Prng(99);
    const b = new Prng(99);
    const childA = a.fork();
    b.nextU32();
    expect(draw(a, 5)).toEqual(draw(b, 5));
    expect(draw(new Prng(99).fork(), 5)).toEqual(draw(new Prng(childA.seed), 5));
  });

  it("gives a child stream independent of the parent's: draws in one don't shift the other", () => {
    const quiet = new Prng(5);
    const quietChild = quiet.fork();
    const busy = new Prng(5);
    const busyChild = busy.fork();
    draw(busyChild, 1000);
    expect(draw(busy, 20)).toEqual(draw(quiet, 20));
    draw(busy, 1000);
    expect(draw(busyChild, 0)).toEqual([]);
    const fresh = new Prng(5).fork();
    draw(fresh, 1000);
    expect(draw(busyChild, 20)).toEqual(draw(fresh, 20));
    expect(draw(quietChild, 1020).slice(1000)).toEqual(
      draw(new Prng(quietChild.seed), 1020).slice(1000),
    );
  });

  it("gives children whose streams differ from the parent's and from each other", () => {
    const parent = new Prng(5);
    const kids = [parent.fork(), parent.fork(), parent.fork()];
    const streams = [draw(parent, 64), ...kids.map((k) => draw(k, 64))];
    const seen = new Set<number>();
    for (const s of streams) for (const x of s) seen.add(x);
    // 256 draws from four 32-bit streams: any repeat would point at overlapping streams.
    expect(seen.size).toBe(256);
  });
});

describe("Prng.below", () => {
  test.prop([fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 1, max: 2 ** 32 })], {
    seed: 0xb10,
    numRuns: 500,
  })("stays in [0, n) for every n up to 2^32", (seed, n) => {
    const p = new Prng(seed);
    let bad = 0;
    for (let i = 0; i < 20; i++) {
      const x = p.below(n);
      if (!(Number.isInteger(x) && x >= 0 && x < n)) bad++;
    }
    expect(bad).toBe(0);
  });

  test.prop(
    [fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 2 ** 32 + 1, max: 2 ** 53 })],
    {
      seed: 0xb53,
      numRuns: 300,
    },
  )("stays in [0, n) for n above 2^32, up to 2^53", (seed, n) => {
    const p = new Prng(seed);
    let bad = 0;
    for (let i = 0; i < 20; i++) {
      const x = p.below(n);
      if (!(Number.isInteger(x) && x >= 0 && x < n)) bad++;
    }
    expect(bad).toBe(0);
  });

  it("returns 0 for n = 1 and covers every value of a small range", () => {
    const p = new Prng(3);
    expect(p.below(1)).toBe(0);
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) seen.add(p.below(5));
    expect([...seen].sort()).toEqual([0, 1, 2, 3, 4]);
  });

  it("is roughly uniform (chi-square over 10 buckets, and for a bound just above 2^31)", () => {
    const p = new Prng(0x5eed);
    const chi2 = (counts: number[], draws: number) => {
      const e = draws / counts.length;
      return counts.reduce((s, c) => s + ((c - e) * (c - e)) / e, 0);
    };
    const counts = new Array(10).fill(0);
    for (let i = 0; i < 100_000; i++) counts[p.below(10)]++;
    // 9 degrees of freedom: 27.9 is the 0.999 quantile.
    expect(chi2(counts, 100_000)).toBeLessThan(27.9);
    // n = 3 * 2^30: plain modulo would put the low third at twice the weight of the rest.
    const n = 3 * 2 ** 30;
    const thirds = [0, 0, 0];
    for (let i = 0; i < 60_000; i++) thirds[Math.floor(p.below(n) / 2 ** 30)]++;
    expect(chi2(thirds, 60_000)).toBeLessThan(13.8); // 2 degrees of freedom, 0.999
  });

  it("throws ModelBug for a bound that is not an integer in [1, 2^53]", () => {
    const p = new Prng(1);
    for (const n of [0, -1, 0.5, Number.NaN, 2 ** 53 + 2, Number.POSITIVE_INFINITY]) {
      expect(() => p.below(n), String(n)).toThrow(ModelBug);
    }
  });
});

describe("Prng.range / chance / pick / shuffle", () => {
  it("range covers both ends, inclusive, and a single value", () => {
    const p = new Prng(11);
    const seen = new Set<number>();
    for (let i = 0; i < 300; i++) seen.add(p.range(-2, 2));
    expect([...seen].sort((a, b) => a - b)).toEqual([-2, -1, 0, 1, 2]);
    expect(p.range(7, 7)).toBe(7);
    expect(() => p.range(3, 2)).toThrow(ModelBug);
  });

  it("chance(0) is never true, chance(1) always, chance(0.25) about a quarter of the time", () => {
    const p = new Prng(12);
    let hits = 0;
    let wrong = 0;
    for (let i = 0; i < 10_000; i++) {
      if (p.chance(0) || !p.chance(1)) wrong++;
      if (p.chance(0.25)) hits++;
    }
    expect(wrong).toBe(0);
    expect(hits).toBeGreaterThan(2300);
    expect(hits).toBeLessThan(2700);
  });

  it("pick returns an element and throws ModelBug on an empty array", () => {
    const p = new Prng(13);
    const items = ["x", "y", "z"] as const;
    for (let i = 0; i < 50; i++) expect(items).toContain(p.pick(items));
    expect(() => p.pick([])).toThrow(ModelBug);
  });

  it("shuffle permutes in place and reaches every order of 3 elements", () => {
    const p = new Prng(14);
    const orders = new Set<string>();
    for (let i = 0; i < 300; i++) {
      const a = [1, 2, 3];
      expect(p.shuffle(a)).toBe(a);
      expect([...a].sort()).toEqual([1, 2, 3]);
      orders.add(a.join(""));
    }
    expect(orders.size).toBe(6);
    expect(p.shuffle([])).toEqual([]);
  });
});
