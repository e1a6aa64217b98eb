import { IOMMU_READ, IOMMU_WRITE } from "@iommu-sim/iommu-core";
import { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { MockPgtable } from "@iommu-sim/iommu-core/testing";
import { nowNs, xorshift32 } from "../../../scripts/bench-kit.js";
import { VTD_SUPERPAGES, VtdSsPgtable } from "../src/pgtable/second-stage.js";

const which = process.argv[2];
const N4K = 1_000_000,
  NWALK = 10_000_000,
  NIDX = 1 << 20;
const IOVA0 = 0x1_0000_0000,
  PA0 = 0x80_0000_0000,
  SZ_4K = 0x1000;
const mem = new PhysMemory();
const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x400_0000 });
const idx = new Int32Array(NIDX);
{
  const xs = xorshift32(0x1b873593);
  for (let t = 0; t < NIDX; t++) idx[t] = xs() % N4K;
}
type T = {
  mapPages(a: number, b: number, c: number, d: number, e: number): unknown;
  iovaToPhys(a: number): number;
  unmapPages(a: number, b: number, c: number, d: null): number;
  free(): void;
};
function mk(): T {
  return which === "mock"
    ? new MockPgtable({ mem, frames, levels: 4, tlb: null })
    : new VtdSsPgtable({ mem, frames, agaw: 2, superpages: VTD_SUPERPAGES, tlb: null });
}
function map(pt: T) {
  const t0 = nowNs();
  for (let i = 0; i < N4K; i++)
    pt.mapPages(IOVA0 + i * SZ_4K, PA0 + i * SZ_4K, SZ_4K, 1, IOMMU_READ | IOMMU_WRITE);
  return (nowNs() - t0) / N4K;
}
function walk(pt: T) {
  let lo = 0;
  const t0 = nowNs();
  for (let t = 0; t < NWALK; t++) lo ^= pt.iovaToPhys(IOVA0 + idx[t & (NIDX - 1)] * SZ_4K);
  const r = (nowNs() - t0) / NWALK;
  if (lo === 12345) console.log("");
  return r;
}
function unmap(pt: T) {
  const t0 = nowNs();
  for (let i = 0; i < N4K; i++) pt.unmapPages(IOVA0 + i * SZ_4K, SZ_4K, 1, null);
  return (nowNs() - t0) / N4K;
}
const res: number[][] = [];
for (let r = 0; r < 8; r++) {
  const pt = mk();
  const a = map(pt),
    b = walk(pt),
    c = unmap(pt);
  pt.free();
  res.push([a, b, c]);
}
const min = (k: number) => Math.min(...res.slice(3).map((x) => x[k])).toFixed(1);
console.log(which, "map", min(0), "walk", min(1), "unmap", min(2));
