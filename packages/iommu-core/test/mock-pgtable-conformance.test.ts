// The io-pgtable conformance suite run on the mock format, at every depth and with 4 KiB pages only.

import {
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  type IoPgtable,
} from "../src/iommu/io-pgtable.js";
import {
  MOCK_PTE_LEAF,
  MOCK_PTE_TABLE,
  MockPgtable,
  mockLevelIndex,
  mockPteAddr,
  mockPteDecode,
  mockPteProt,
} from "../src/mock/mock-pgtable.js";
import { FrameAllocator } from "../src/platform/frame-allocator.js";
import { PhysMemory } from "../src/platform/phys-memory.js";
import {
  describeIoPgtableConformance,
  type IoPgtableUnderTest,
  RecordingFlushOps,
} from "../src/testing/io-pgtable-conformance.js";

/** The prot of the leaf mapping `iova`, read from memory the way the mock hardware reads it. */
function protOf(table: IoPgtable, iova: number): number | null {
  const pt = table as MockPgtable;
  let tpa = pt.rootPa;
  for (let level = pt.levels; level >= 1; level--) {
    const lo = pt.mem.read64(tpa + mockLevelIndex(iova, level) * 8);
    const hi = pt.mem.hi;
    const kind = mockPteDecode(lo, hi, level);
    if (kind === MOCK_PTE_LEAF) return mockPteProt(lo);
    if (kind !== MOCK_PTE_TABLE) return null;
    tpa = mockPteAddr(lo, hi);
  }
  return null;
}

function mockFormat(levels: 3 | 4 | 5, pgsizeBitmap?: number): () => IoPgtableUnderTest {
  return () => {
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x200_0000 });
    const flush = new RecordingFlushOps();
    const table = new MockPgtable({ mem, frames, levels, pgsizeBitmap, tlb: flush });
    return {
      table,
      frames,
      flush,
      caps: {
        partialBlockUnmap: "zero",
        rangeErrno: "ERANGE",
        protOf,
        protBits: IOMMU_READ | IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_PRIV,
      },
    };
  };
}

for (const levels of [3, 4, 5] as const) {
  describeIoPgtableConformance(`mock format, ${levels} levels`, mockFormat(levels));
}
describeIoPgtableConformance("mock format, 4 levels, 4 KiB pages only", mockFormat(4, 0x1000));
