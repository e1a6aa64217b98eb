// Does the VT-d second-stage format keep up with a tight C radix table? Workload 2 of
// ../shared/bench-c/README.md (pt_map_4k, pt_walk_random, pt_unmap_4k, pt_map_2m) on a 4-level
// (agaw 2) VtdSsPgtable in PhysMemory, same addresses, same stream, same checks, plus the memory a
// million 4 KiB mappings take. pt_walk_random walks with the table's own `iovaToPhys`.

import { IOMMU_READ, IOMMU_WRITE } from "@iommu-sim/iommu-core";
import { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { runWorkload2 } from "../../../scripts/bench-workload2.js";
import { VTD_SUPERPAGES, VtdSsPgtable } from "../src/pgtable/second-stage.js";

const mem = new PhysMemory();
// Table frames from 64 MiB at 16 MiB: low frame numbers, so PhysMemory indexes an array.
const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x400_0000 });

runWorkload2({
  bench: "intel-vtd",
  table: () => new VtdSsPgtable({ mem, frames, agaw: 2, superpages: VTD_SUPERPAGES, tlb: null }),
  platform: { frames, mem },
  prot: IOMMU_READ | IOMMU_WRITE,
  walkUnit: "full 4-level walk (VtdSsPgtable.iovaToPhys)",
});
