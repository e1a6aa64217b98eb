// Workload 2 of ../shared/bench-c/README.md (pt_map_4k, pt_walk_random, pt_unmap_4k, pt_map_2m)
// for any io-pgtable format: the same addresses, stream, checks and table-frame count as pgtable.c,
// plus the memory a million 4 KiB mappings take. A bench file builds its table factory and calls
// `runWorkload2`; each bench runs in its own process, so the loops below see one table class.

import { emit, fail, median, nowNs, REPS, WARMUP, xorshift32 } from "./bench-kit.js";

/** What the workload needs of a table: core's IoPgtable, structurally. */
export interface Workload2Table {
  mapPages(iova: number, pa: number, pgsize: number, pgcount: number, prot: number): unknown;
  unmapPages(iova: number, pgsize: number, pgcount: number, gather: null): number;
  iovaToPhys(iova: number): number;
  free(): void;
}

/** The frame allocator and memory the tables come from (leak and memory accounting). */
export interface Workload2Platform {
  frames: { readonly liveFrames: number };
  mem: { readonly populatedFrameCount: number };
}

export interface Workload2Options {
  /** The `bench` field of each result. */
  bench: string;
  /** A fresh empty table (4 KiB and 2 MiB pages, 48-bit input, 4 levels). */
  table: () => Workload2Table;
  platform: Workload2Platform;
  /** IOMMU_READ | IOMMU_WRITE. */
  prot: number;
  /** What pt_walk_random calls, for the `unit` of its result. */
  walkUnit: string;
  /** Table frames pt_map_4k must use (pgtable.c: 1960 for a 4-level table). */
  tableFrames?: number;
  /** Prefix of the result names (default "pt_"). */
  prefix?: string;
}

const N4K = 1_000_000;
const NWALK = 10_000_000;
const NIDX = 1 << 20;
const N2M = 10_000;
const IOVA0 = 0x1_0000_0000;
const PA0 = 0x80_0000_0000;
const HIOVA0 = 0x40_0000_0000;
const HPA0 = 0x100_0000_0000;
const SZ_4K = 0x1000;
const SZ_2M = 0x20_0000;
const TWO32 = 4294967296;

/** The pt_walk_random stream: 2^20 page indices below 1,000,000 (seed 0x1B873593). */
export function workload2Stream(): Int32Array {
  const idx = new Int32Array(NIDX);
  const xs = xorshift32(0x1b873593);
  for (let t = 0; t < NIDX; t++) idx[t] = xs() % N4K;
  return idx;
}

/** Run workload 2 on `o.table()` and emit its results (and `pt_map_4k_memory`). */
export function runWorkload2(o: Workload2Options): void {
  const { frames, mem } = o.platform;
  const rw = o.prot;
  const tableFrames = o.tableFrames ?? 1960;
  const prefix = o.prefix ?? "pt_";
  const idx = workload2Stream();
  let walkXorLo = 0;
  let walkXorHi = 0;
  let populatedFrames = 0;

  // Each timed loop is a function of its own, so that V8 optimises each with its own inlining
  // budget (gcc inlines pt_map and friends into every loop of pgtable.c regardless).
  function map4k(pt: Workload2Table): number {
    const t0 = nowNs();
    for (let i = 0; i < N4K; i++) {
      const rc = pt.mapPages(IOVA0 + i * SZ_4K, PA0 + i * SZ_4K, SZ_4K, 1, rw);
      if (rc !== 0) fail(`map ${i}: ${String(rc)}`);
    }
    return (nowNs() - t0) / N4K;
  }
  function walk(pt: Workload2Table): number {
    let lo = 0;
    let hi = 0;
    const t0 = nowNs();
    for (let t = 0; t < NWALK; t++) {
      const pa = pt.iovaToPhys(IOVA0 + (idx[t & (NIDX - 1)] as number) * SZ_4K);
      lo ^= pa;
      hi ^= pa / TWO32;
    }
    const t1 = nowNs();
    walkXorLo = lo >>> 0;
    walkXorHi = hi >>> 0;
    return (t1 - t0) / NWALK;
  }
  function unmap4k(pt: Workload2Table): number {
    let bytes = 0;
    const t0 = nowNs();
    for (let i = 0; i < N4K; i++) bytes += pt.unmapPages(IOVA0 + i * SZ_4K, SZ_4K, 1, null);
    const t1 = nowNs();
    if (bytes !== N4K * SZ_4K) fail(`unmap bytes ${bytes}`);
    return (t1 - t0) / N4K;
  }
  function map2m(pt: Workload2Table): number {
    const t0 = nowNs();
    for (let i = 0; i < N2M; i++) {
      const rc = pt.mapPages(HIOVA0 + i * SZ_2M, HPA0 + i * SZ_2M, SZ_2M, 1, rw);
      if (rc !== 0) fail(`map2m ${i}: ${String(rc)}`);
    }
    return (nowNs() - t0) / N2M;
  }
  /** One repetition of pgtable.c's one_rep: ns per op of map, walk, unmap, map 2M. */
  function oneRep(): [number, number, number, number] {
    const base = frames.liveFrames;
    const populatedBase = mem.populatedFrameCount;
    const pt = o.table();
    const m = map4k(pt);
    if (frames.liveFrames - base !== tableFrames) {
      fail(`pt_map_4k used ${frames.liveFrames - base} table frames, C uses ${tableFrames}`);
    }
    populatedFrames = Math.max(populatedFrames, mem.populatedFrameCount - populatedBase);
    const w = walk(pt);
    for (let t = 0; t < 1000; t++) {
      const i = idx[t] as number;
      if (pt.iovaToPhys(IOVA0 + i * SZ_4K + 0x123) !== PA0 + i * SZ_4K + 0x123) fail("xlate");
    }
    if (pt.iovaToPhys(IOVA0 + N4K * SZ_4K) !== -1) fail("unmapped");
    const u = unmap4k(pt);
    if (pt.iovaToPhys(IOVA0 + 12345 * SZ_4K) !== -1) fail("after unmap");
    const pt2 = o.table();
    const h = map2m(pt2);
    const probe = HIOVA0 + 9999 * SZ_2M + 0x1abcde;
    if (pt2.iovaToPhys(probe) !== HPA0 + 9999 * SZ_2M + 0x1abcde) fail("2m xlate");
    pt.free();
    pt2.free();
    if (frames.liveFrames !== base) fail(`leaked ${frames.liveFrames - base} frames`);
    return [m, w, u, h];
  }

  const runs: [number, number, number, number][] = [];
  for (let r = -WARMUP; r < REPS; r++) {
    const rep = oneRep();
    if (r >= 0) runs.push(rep);
  }
  const stat = (k: number) => {
    const v = runs.map((r) => r[k] as number);
    return { ns_per_op: median(v), min_ns: Math.min(...v), max_ns: Math.max(...v) };
  };
  const bench = o.bench;
  const name = (n: string) => `${prefix}${n}`;
  // C's names, so that the runner finds the baseline whatever the prefix.
  emit({
    bench,
    name: name("map_4k"),
    ops: N4K,
    ...stat(0),
    table_frames: tableFrames,
    c_workload: "pt_map_4k",
  });
  emit({
    bench,
    name: name("walk_random"),
    ops: NWALK,
    ...stat(1),
    unit: o.walkUnit,
    // pgtable.c sums its per-repetition XOR into "sink" over 1 warm-up + 5 timed repetitions, so
    // its sink is 6x (mod 2^64) this checksum.
    checksum: walkXorHi * TWO32 + walkXorLo,
    c_workload: "pt_walk_random",
  });
  emit({ bench, name: name("unmap_4k"), ops: N4K, ...stat(2), c_workload: "pt_unmap_4k" });
  emit({ bench, name: name("map_2m"), ops: N2M, ...stat(3), c_workload: "pt_map_2m" });
  emit({
    bench,
    name: name("map_4k_memory"),
    ns_per_op: 0,
    ops: N4K,
    unit: "memory only, no timing: bytes of tables per mapped 4 KiB page",
    bytes_per_page: (tableFrames * SZ_4K) / N4K,
    populated_bytes_per_page: (populatedFrames * SZ_4K) / N4K,
  });
}
