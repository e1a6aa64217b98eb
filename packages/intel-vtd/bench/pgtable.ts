// Does the VT-d second-stage format keep up with a tight C radix table? Workload 2 of
// ../shared/bench-c/README.md (pt_map_4k, pt_walk_random, pt_unmap_4k, pt_map_2m) on a 4-level
// (agaw 2) VtdSsPgtable in PhysMemory, same addresses, same stream, same checks, plus the memory a
// million 4 KiB mappings take. pt_walk_random walks with the table's own `iovaToPhys`.

import { IOMMU_READ, IOMMU_WRITE } from "@iommu-sim/iommu-core";
import { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { emit, fail, median, nowNs, REPS, WARMUP, xorshift32 } from "../../../scripts/bench-kit.js";
import { VTD_SUPERPAGES, VtdSsPgtable } from "../src/pgtable/second-stage.js";

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
/** Table frames pt_map_4k uses, root included (pgtable.c prints it as table_frames). */
const TABLE_FRAMES = 1960;
const RW = IOMMU_READ | IOMMU_WRITE;

const mem = new PhysMemory();
// Table frames from 64 MiB at 16 MiB: low frame numbers, so PhysMemory indexes an array.
const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x400_0000 });
const idx = new Int32Array(NIDX);
{
  const xs = xorshift32(0x1b873593);
  for (let t = 0; t < NIDX; t++) idx[t] = xs() % N4K;
}

let sink = 0;
/** XOR of the 64-bit translations of one pt_walk_random repetition, as hi:lo halves. */
let walkXorLo = 0;
let walkXorHi = 0;
/**
 * PhysMemory frames the million-page map populated. Only the first repetition populates any: a
 * freed frame stays populated, and later repetitions reuse the same frames.
 */
let populatedFrames = 0;

function table(): VtdSsPgtable {
  return new VtdSsPgtable({ mem, frames, agaw: 2, superpages: VTD_SUPERPAGES, tlb: null });
}

// Each timed loop is a function of its own, so that V8 optimises each with its own inlining
// budget (as core's bench/pgtable.ts does).

function map4k(pt: VtdSsPgtable): number {
  const t0 = nowNs();
  for (let i = 0; i < N4K; i++) {
    const rc = pt.mapPages(IOVA0 + i * SZ_4K, PA0 + i * SZ_4K, SZ_4K, 1, RW);
    if (rc !== 0) fail(`map ${i}: ${rc}`);
  }
  return (nowNs() - t0) / N4K;
}

function walk(pt: VtdSsPgtable): number {
  let lo = 0;
  let hi = 0;
  const t0 = nowNs();
  for (let t = 0; t < NWALK; t++) {
    const pa = pt.iovaToPhys(IOVA0 + idx[t & (NIDX - 1)] * SZ_4K);
    lo ^= pa;
    hi ^= pa / TWO32;
  }
  const t1 = nowNs();
  walkXorLo = lo >>> 0;
  walkXorHi = hi >>> 0;
  return (t1 - t0) / NWALK;
}

function unmap4k(pt: VtdSsPgtable): number {
  let bytes = 0;
  const t0 = nowNs();
  for (let i = 0; i < N4K; i++) bytes += pt.unmapPages(IOVA0 + i * SZ_4K, SZ_4K, 1, null);
  const t1 = nowNs();
  if (bytes !== N4K * SZ_4K) fail(`unmap bytes ${bytes}`);
  sink += bytes;
  return (t1 - t0) / N4K;
}

function map2m(pt: VtdSsPgtable): number {
  const t0 = nowNs();
  for (let i = 0; i < N2M; i++) {
    const rc = pt.mapPages(HIOVA0 + i * SZ_2M, HPA0 + i * SZ_2M, SZ_2M, 1, RW);
    if (rc !== 0) fail(`map2m ${i}: ${rc}`);
  }
  return (nowNs() - t0) / N2M;
}

/** One repetition of pgtable.c's one_rep: ns per op of map, walk, unmap, map 2M. */
function oneRep(): [number, number, number, number] {
  const base = frames.liveFrames;
  const populatedBase = mem.populatedFrameCount;
  const pt = table();
  const m = map4k(pt);
  if (frames.liveFrames - base !== TABLE_FRAMES) {
    fail(`pt_map_4k used ${frames.liveFrames - base} table frames, C uses ${TABLE_FRAMES}`);
  }
  populatedFrames = Math.max(populatedFrames, mem.populatedFrameCount - populatedBase);

  const w = walk(pt);
  for (let t = 0; t < 1000; t++) {
    const i = idx[t];
    if (pt.iovaToPhys(IOVA0 + i * SZ_4K + 0x123) !== PA0 + i * SZ_4K + 0x123) fail("xlate");
  }
  if (pt.iovaToPhys(IOVA0 + N4K * SZ_4K) !== -1) fail("unmapped");

  const u = unmap4k(pt);
  if (pt.iovaToPhys(IOVA0 + 12345 * SZ_4K) !== -1) fail("after unmap");

  const pt2 = table();
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
  const v = runs.map((r) => r[k]);
  return { ns_per_op: median(v), min_ns: Math.min(...v), max_ns: Math.max(...v) };
};
// pgtable.c sums its per-repetition XOR into "sink" over 1 warm-up + 5 timed repetitions, so its
// sink is 6x (mod 2^64) this checksum.
const walkChecksum = walkXorHi * TWO32 + walkXorLo;
const B = "intel-vtd";
emit({ bench: B, name: "pt_map_4k", ops: N4K, ...stat(0), table_frames: TABLE_FRAMES });
emit({
  bench: B,
  name: "pt_walk_random",
  ops: NWALK,
  ...stat(1),
  unit: "full 4-level walk (VtdSsPgtable.iovaToPhys)",
  checksum: walkChecksum,
});
emit({ bench: B, name: "pt_unmap_4k", ops: N4K, ...stat(2) });
emit({ bench: B, name: "pt_map_2m", ops: N2M, ...stat(3) });
emit({
  bench: B,
  name: "pt_map_4k_memory",
  ns_per_op: 0,
  ops: N4K,
  unit: "memory only, no timing: bytes of tables per mapped 4 KiB page",
  bytes_per_page: (TABLE_FRAMES * SZ_4K) / N4K,
  populated_bytes_per_page: (populatedFrames * SZ_4K) / N4K,
});
if (sink === -1) process.stderr.write("unreachable\n");
