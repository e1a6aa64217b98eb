// Does MockPgtable's own API keep up with a tight C radix table? Workload 2 of
// ../shared/bench-c/README.md (pt_map_4k, pt_walk_random, pt_unmap_4k, pt_map_2m) on a 4-level
// mock-format table in PhysMemory, same addresses, same stream, same checks.

import { runWorkload2 } from "../../../scripts/bench-workload2.js";
import { IOMMU_READ, IOMMU_WRITE } from "../src/iommu/io-pgtable.js";
import { MockPgtable } from "../src/mock/mock-pgtable.js";
import { FrameAllocator } from "../src/platform/frame-allocator.js";
import { PhysMemory } from "../src/platform/phys-memory.js";

const mem = new PhysMemory();
// Table frames from 64 MiB at 16 MiB: low frame numbers, so PhysMemory indexes an array.
const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x400_0000 });

runWorkload2({
  bench: "iommu-core",
  table: () => new MockPgtable({ mem, frames, levels: 4, tlb: null }),
  platform: { frames, mem },
  prot: IOMMU_READ | IOMMU_WRITE,
  walkUnit: "full 4-level walk (MockPgtable.iovaToPhys)",
});
