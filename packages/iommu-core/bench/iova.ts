// How fast is an IOVA free+alloc pair, with 1000 one-page IOVAs live, through the rcaches and not?
// iova_alloc_free_fast goes through the per-CPU rcaches (the DMA API's path); iova_alloc_free_tree
// uses the range tree alone, which is what every cache miss costs. Same xorshift32 stream for both.

import { emit, fail, nowNs, repeat, xorshift32 } from "../../../scripts/bench-kit.js";
import { IovaDomain } from "../src/iommu/iova.js";

const GRANULE = 4096;
/** The highest pfn under a 48-bit DMA mask. */
const LIMIT = 2 ** (48 - 12) - 1;
const LIVE = 1000;
const OPS = 1_000_000;
const SEED = 0x9e3779b9;

let sink = 0;
const live = new Float64Array(LIVE);
const idx = new Int32Array(OPS);
{
  const xs = xorshift32(SEED);
  for (let t = 0; t < OPS; t++) idx[t] = xs() % LIVE;
}

function checksum(): number {
  let c = 0;
  for (let k = 0; k < LIVE; k++) c += live[k] * (k + 1);
  return c;
}

/** Every repetition must end in the same state, or the timing measured something else. */
function expectChecksum(name: string, seen: number[]): number {
  const c = checksum();
  if (seen.length > 0 && seen[0] !== c) fail(`${name} checksum ${c} != ${seen[0]}`);
  seen.push(c);
  return c;
}

const fastSums: number[] = [];
function fast(): number {
  const dom = new IovaDomain(GRANULE, 1);
  for (let k = 0; k < LIVE; k++) {
    live[k] = dom.allocIovaFast(1, LIMIT, true);
    if (live[k] === 0) fail("iova_alloc_free_fast: setup allocation failed");
  }
  let sum = 0;
  const t0 = nowNs();
  for (let t = 0; t < OPS; t++) {
    const slot = idx[t];
    dom.freeIovaFast(live[slot], 1);
    const pfn = dom.allocIovaFast(1, LIMIT, true);
    live[slot] = pfn;
    sum += pfn;
  }
  const t1 = nowNs();
  sink += sum;
  if (dom.liveCount !== LIVE) fail(`iova_alloc_free_fast: ${dom.liveCount} live, not ${LIVE}`);
  expectChecksum("iova_alloc_free_fast", fastSums);
  return (t1 - t0) / OPS;
}

const treeSums: number[] = [];
function tree(): number {
  const dom = new IovaDomain(GRANULE, 1);
  for (let k = 0; k < LIVE; k++) {
    const iova = dom.allocIova(1, LIMIT, true);
    if (iova === null) fail("iova_alloc_free_tree: setup allocation failed");
    live[k] = iova.pfnLo;
  }
  let sum = 0;
  const t0 = nowNs();
  for (let t = 0; t < OPS; t++) {
    const slot = idx[t];
    dom.freeIova(live[slot]);
    const iova = dom.allocIova(1, LIMIT, true);
    const pfn = iova === null ? 0 : iova.pfnLo;
    live[slot] = pfn;
    sum += pfn;
  }
  const t1 = nowNs();
  sink += sum;
  if (dom.liveCount !== LIVE) fail(`iova_alloc_free_tree: ${dom.liveCount} live, not ${LIVE}`);
  expectChecksum("iova_alloc_free_tree", treeSums);
  return (t1 - t0) / OPS;
}

const f = repeat(fast);
emit({
  bench: "iommu-core",
  name: "iova_alloc_free_fast",
  ns_per_op: f.ns,
  ops: OPS,
  min_ns: f.min,
  max_ns: f.max,
  unit: "free+alloc pair",
  checksum: fastSums[0],
});
const t = repeat(tree);
emit({
  bench: "iommu-core",
  name: "iova_alloc_free_tree",
  ns_per_op: t.ns,
  ops: OPS,
  min_ns: t.min,
  max_ns: t.max,
  unit: "free+alloc pair",
  checksum: treeSums[0],
});
if (sink === -1) process.stderr.write("unreachable\n");
