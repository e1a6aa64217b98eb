// How fast does an uncached LPAE stage-1 walk run, per granule? Workload 2 of
// ../shared/bench-c/README.md (1,000,000 mapped pages, seed 0x1B873593, 2^20 indices, 10,000,000
// random walks through iovaToPhys) on 4K, 16K and 64K stage-1 tables, plus pt_map_4k for the C
// baseline's map loop.

import { IOMMU_READ, IOMMU_WRITE } from "@iommu-sim/iommu-core";
import { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { emit, fail, nowNs, repeat, xorshift32 } from "../../../scripts/bench-kit.js";
import { type LpaeGranule, LpaePgtable } from "../src/pgtable/lpae.js";

const NPAGES = 1_000_000;
const NWALK = 10_000_000;
const NIDX = 1 << 20;
const IOVA0 = 0x1_0000_0000;
const PA0 = 0x80_0000_0000;
const TWO32 = 4294967296;
const RW = IOMMU_READ | IOMMU_WRITE;

const mem = new PhysMemory();
// Table frames from 64 MiB at 16 MiB: low addresses, so walks read PhysMemory's arrays directly.
const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x400_0000 });
const idx = new Int32Array(NIDX);
{
  const xs = xorshift32(0x1b873593);
  for (let t = 0; t < NIDX; t++) idx[t] = xs() % NPAGES;
}

function table(granule: LpaeGranule): LpaePgtable {
  return new LpaePgtable({ mem, frames, stage: 1, granule, ias: 48, oas: 48, tlb: null });
}

function mapAll(pt: LpaePgtable, granule: number): number {
  const t0 = nowNs();
  for (let i = 0; i < NPAGES; i++) {
    const rc = pt.mapPages(IOVA0 + i * granule, PA0 + i * granule, granule, 1, RW);
    if (rc !== 0) fail(`map ${i}: ${rc}`);
  }
  return (nowNs() - t0) / NPAGES;
}

let checksum = 0;

function walk(pt: LpaePgtable, granule: number): number {
  let lo = 0;
  let hi = 0;
  const t0 = nowNs();
  for (let t = 0; t < NWALK; t++) {
    const pa = pt.iovaToPhys(IOVA0 + (idx[t & (NIDX - 1)] as number) * granule);
    lo ^= pa;
    hi ^= pa / TWO32;
  }
  const t1 = nowNs();
  checksum = (hi >>> 0) * TWO32 + (lo >>> 0);
  return (t1 - t0) / NWALK;
}

function check(pt: LpaePgtable, granule: number): void {
  for (let t = 0; t < 1000; t++) {
    const i = idx[t] as number;
    if (pt.iovaToPhys(IOVA0 + i * granule + 0x123) !== PA0 + i * granule + 0x123) fail("xlate");
  }
  if (pt.iovaToPhys(IOVA0 + NPAGES * granule) !== -1) fail("unmapped");
}

const map4k = repeat(() => {
  const pt = table(4096);
  const ns = mapAll(pt, 4096);
  check(pt, 4096);
  pt.free();
  return ns;
});
emit({
  bench: "arm-smmu",
  name: "pt_map_4k",
  ops: NPAGES,
  ns_per_op: map4k.ns,
  min_ns: map4k.min,
  max_ns: map4k.max,
  unit: "LPAE stage-1 4K mapPages, one page per call",
});

for (const granule of [4096, 16384, 65536] as const) {
  const pt = table(granule);
  mapAll(pt, granule);
  check(pt, granule);
  const r = repeat(() => walk(pt, granule));
  emit({
    bench: "arm-smmu",
    name: `walk_${granule / 1024}k`,
    ops: NWALK,
    ns_per_op: r.ns,
    min_ns: r.min,
    max_ns: r.max,
    unit: `stage-1 ${pt.levels}-level walk (iovaToPhys)`,
    checksum,
  });
  pt.free();
  if (frames.liveFrames !== 0) fail(`leaked ${frames.liveFrames} frames`);
}
