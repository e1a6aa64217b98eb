// The io-pgtable conformance suite run on both VT-d formats: second stage at every AGAW with all
// superpages and at 4 levels with 4 KiB pages only; first stage at 4 and 5 levels, with 2 MiB and
// 1 GiB pages and with 4 KiB pages only.

import { IOMMU_READ, IOMMU_WRITE, type IoPgtable } from "@iommu-sim/iommu-core";
import { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
import {
  describeIoPgtableConformance,
  type IoPgtableUnderTest,
  RecordingFlushOps,
} from "@iommu-sim/iommu-core/testing/conformance";
import { VtdFsPgtable } from "../src/pgtable/first-stage.js";
import { pgtableProtOf, VTD_SUPERPAGES, VtdSsPgtable } from "../src/pgtable/second-stage.js";

function machine(): { mem: PhysMemory; frames: FrameAllocator; flush: RecordingFlushOps } {
  const mem = new PhysMemory();
  const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x200_0000 });
  return { mem, frames, flush: new RecordingFlushOps() };
}

function ssFormat(agaw: 1 | 2 | 3, superpages: number): () => IoPgtableUnderTest {
  return () => {
    const { mem, frames, flush } = machine();
    const table = new VtdSsPgtable({ mem, frames, agaw, superpages, tlb: flush });
    return {
      table,
      frames,
      flush,
      caps: {
        partialBlockUnmap: "zero",
        rangeErrno: "ERANGE",
        protOf: pgtableProtOf,
        protBits: IOMMU_READ | IOMMU_WRITE,
      },
    };
  };
}

/** First-stage leaves are always readable (P): only IOMMU_WRITE is faithful. */
function fsProtOf(table: IoPgtable, iova: number): number | null {
  const prot = pgtableProtOf(table, iova);
  return prot === null ? null : prot & IOMMU_WRITE;
}

function fsFormat(levels: 4 | 5, superpages: number): () => IoPgtableUnderTest {
  return () => {
    const { mem, frames, flush } = machine();
    const table = new VtdFsPgtable({ mem, frames, levels, superpages, tlb: flush });
    return {
      table,
      frames,
      flush,
      caps: {
        partialBlockUnmap: "zero",
        rangeErrno: "ERANGE",
        protOf: fsProtOf,
        protBits: IOMMU_WRITE,
      },
    };
  };
}

for (const agaw of [1, 2, 3] as const) {
  describeIoPgtableConformance(
    `VT-d second stage, agaw ${agaw} (${agaw + 2} levels), 4K+2M+1G`,
    ssFormat(agaw, VTD_SUPERPAGES),
  );
}
describeIoPgtableConformance("VT-d second stage, 4 levels, 4 KiB pages only", ssFormat(2, 0));
for (const levels of [4, 5] as const) {
  describeIoPgtableConformance(
    `VT-d first stage, ${levels} levels, 4K+2M+1G`,
    fsFormat(levels, VTD_SUPERPAGES),
  );
  describeIoPgtableConformance(
    `VT-d first stage, ${levels} levels, 4 KiB pages only`,
    fsFormat(levels, 0),
  );
}
