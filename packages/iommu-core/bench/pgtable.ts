// Does MockPgtable's own API keep up with a tight C radix table? Workload 2 of
// ../shared/bench-c/README.md (pt_map_4k, pt_walk_random, pt_unmap_4k, pt_map_2m) on a 4-level
// mock-format table in PhysMemory, same addresses, same stream, same checks.

import { emit, fail, median, nowNs, REPS, WARMUP, xorshift32 } from "../../../scripts/bench-kit.js";
import { IOMMU_READ, IOMMU_WRITE } from "../src/iommu/io-pgtable.js";
import { MockPgtable } from "../src/mock/mock-pgtable.js";
import { FrameAllocator } from "../src/platform/frame-allocator.js";
import { PhysMemory } from "../src/platform/phys-memory.js";

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

function table(): MockPgtable {
  return new MockPgtable({ mem, frames, levels: 4, tlb: null });
}

// Each timed loop is a function of its own: V8 then optimises each loop with its own inlining
// budget (gcc inlines pt_map and friends into every loop of pgtable.c regardless), instead of one
// budget shared by all four loops of one_rep.

function map4k(pt: MockPgtable): number {
  const t0 = nowNs();
  for (let i = 0; i < N4K; i++) {
    const rc = pt.mapPages(IOVA0 + i * SZ_4K, PA0 + i * SZ_4K, SZ_4K, 1, RW);
    if (rc !== 0) fail(`map ${i}: ${rc}`);
  }
  return (nowNs() - t0) / N4K;
}

function walk(pt: MockPgtable): number {
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

function unmap4k(pt: MockPgtable): number {
  let bytes = 0;
  const t0 = nowNs();
  for (let i = 0; i < N4K; i++) bytes += pt.unmapPages(IOVA0 + i * SZ_4K, SZ_4K, 1, null);
  const t1 = nowNs();
  if (bytes !== N4K * SZ_4K) fail(`unmap bytes ${bytes}`);
  sink += bytes;
  return (t1 - t0) / N4K;
}

function map2m(pt: MockPgtable): number {
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
  const pt = table();
  const m = map4k(pt);
  if (frames.liveFrames - base !== TABLE_FRAMES) {
    fail(`pt_map_4k used ${frames.liveFrames - base} table frames, C uses ${TABLE_FRAMES}`);
  }

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
emit({ bench: "iommu-core", name: "pt_map_4k", ops: N4K, ...stat(0), table_frames: TABLE_FRAMES });
emit({
  bench: "iommu-core",
  name: "pt_walk_random",
  ops: NWALK,
  ...stat(1),
  unit: "full 4-level walk (iovaToPhys)",
  checksum: walkChecksum,
});
emit({ bench: "iommu-core", name: "pt_unmap_4k", ops: N4K, ...stat(2) });
emit({ bench: "iommu-core", name: "pt_map_2m", ops: N2M, ...stat(3) });
if (sink === -1) process.stderr.write("unreachable\n");
