// Workload 3 of ../shared/bench-c/README.md (tlb_hit, tlb_mixed90) on a translation cache alone:
// the same streams, warm pass, geometry and checks as iotlb.c. A bench gives its cache and its
// `translate` (hit: permission check and address; miss: a stub "walk" that computes the frame and
// inserts it), and this runs the loops and emits the results. Each bench runs in its own process,
// so the loops see one cache class and one `translate`.

import { emit, fail, median, nowNs, REPS, W3, WARMUP, workload3Streams } from "./bench-kit.js";

/** A cache under test, with the counters the hit-rate checks read. */
export interface Workload3Cache {
  readonly hits: number;
  readonly misses: number;
  resetCounters(): void;
}

export interface Workload3Options<C extends Workload3Cache> {
  /** The `bench` field of each result. */
  bench: string;
  /** Prefix of the result names (`iotlb_` gives iotlb_hit, iotlb_mixed90). */
  prefix: string;
  /** What the results measure, for their `unit`. */
  unit: { hit: string; mixed: string };
  /** A fresh, empty cache of W3.SETS x W3.WAYS. */
  make: () => C;
  /** Translate page k of domain d (0..15): the PA of the page, or -1 on a permission fault. */
  translate: (cache: C, d: number, k: number) => number;
}

/** The PA the workload maps page k of domain d to. */
export function workload3Pa(d: number, k: number): number {
  return (W3.PA0_FRAME + d * W3.PAGES_PER_DOM + k) * 4096;
}

/** Run tlb_hit and tlb_mixed90 on `o.make()` and emit both results. */
export function runWorkload3<C extends Workload3Cache>(o: Workload3Options<C>): void {
  const { hot, mdom, mk } = workload3Streams();
  const translate = o.translate;
  const N_HIT = W3.N_HIT;
  const N_MIX = W3.N_MIX;
  const MASK = W3.NKEYS - 1;
  let sink = 0;
  let mixedRate = 0;

  function warm(c: C): void {
    for (let h = 0; h < 2048; h++) translate(c, h >> 7, h);
    c.resetCounters();
  }
  function runHit(): number {
    const c = o.make();
    warm(c);
    let sum = 0;
    const t0 = nowNs();
    for (let i = 0; i < N_HIT; i++) {
      const h = hot[i & MASK] as number;
      sum += translate(c, h >> 7, h);
    }
    const t1 = nowNs();
    if (c.hits !== N_HIT || c.misses !== 0) fail(`${o.prefix}hit: ${c.misses} misses`);
    sink += sum;
    return (t1 - t0) / N_HIT;
  }
  function runMixed(): number {
    const c = o.make();
    warm(c);
    let sum = 0;
    const t0 = nowNs();
    for (let i = 0; i < N_MIX; i++) {
      const j = i & MASK;
      sum += translate(c, mdom[j] as number, mk[j] as number);
    }
    const t1 = nowNs();
    mixedRate = c.hits / (c.hits + c.misses);
    if (mixedRate.toFixed(5) !== W3.MIXED_HIT_RATE) {
      fail(`${o.prefix}mixed90: hit rate ${mixedRate.toFixed(5)}, C measures ${W3.MIXED_HIT_RATE}`);
    }
    sink += sum;
    return (t1 - t0) / N_MIX;
  }

  // The translation itself, once, before timing anything.
  const c = o.make();
  if (translate(c, 3, 77) !== workload3Pa(3, 77) || c.misses !== 1) fail("miss translation");
  if (translate(c, 3, 77) !== workload3Pa(3, 77) || c.hits !== 1) fail("hit translation");

  const hit: number[] = [];
  const mix: number[] = [];
  for (let r = -WARMUP; r < REPS; r++) {
    const a = runHit();
    const b = runMixed();
    if (r >= 0) {
      hit.push(a);
      mix.push(b);
    }
  }
  const stat = (v: number[]) => ({
    ns_per_op: median(v),
    min_ns: Math.min(...v),
    max_ns: Math.max(...v),
  });
  emit({
    bench: o.bench,
    name: `${o.prefix}hit`,
    ops: N_HIT,
    ...stat(hit),
    hit_rate: 1,
    c_workload: "tlb_hit",
    unit: o.unit.hit,
  });
  emit({
    bench: o.bench,
    name: `${o.prefix}mixed90`,
    ops: N_MIX,
    ...stat(mix),
    hit_rate: Number(mixedRate.toFixed(5)),
    c_workload: "tlb_mixed90",
    unit: o.unit.mixed,
  });
  if (sink === -1) process.stderr.write("unreachable\n");
}
