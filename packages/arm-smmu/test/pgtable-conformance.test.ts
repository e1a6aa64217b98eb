// The io-pgtable conformance suite run on the LPAE formats: stage 1 and 2, every granule.

import {
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  type IoPgtable,
} from "@iommu-sim/iommu-core";
import { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
import {
  describeIoPgtableConformance,
  type IoPgtableUnderTest,
  RecordingFlushOps,
} from "@iommu-sim/iommu-core/testing/conformance";
import { lpaeDescPa } from "../src/format/lpae-desc.js";
import { type LpaeGranule, LpaePgtable, lpaeLevelShift } from "../src/pgtable/lpae.js";

/** The prot a leaf grants, read from memory as the SMMU reads it. */
function protOf(table: IoPgtable, iova: number): number | null {
  const t = table as LpaePgtable;
  const g = t.geometry;
  let tpa = t.rootPa;
  for (let l = g.startLevel; l <= 3; l++) {
    const n = l === g.startLevel ? g.pgdEntries : t.granule / 8;
    const idx = Math.floor(iova / 2 ** lpaeLevelShift(t.granule, l)) % n;
    const lo = t.mem.read64(tpa + idx * 8);
    const hi = t.mem.hi;
    if ((lo & 1) === 0) return null;
    if (l === 3 || (lo & 2) === 0) {
      const xn = (hi & (3 << 21)) !== 0 ? IOMMU_NOEXEC : 0;
      if (t.stage === 2) {
        return ((lo & 0x40) !== 0 ? IOMMU_READ : 0) | ((lo & 0x80) !== 0 ? IOMMU_WRITE : 0) | xn;
      }
      // Stage 1 cannot express write-only: report WRITE (AP[2] clear) and PRIV (AP[1] clear).
      return ((lo & 0x80) === 0 ? IOMMU_WRITE : 0) | ((lo & 0x40) === 0 ? IOMMU_PRIV : 0) | xn;
    }
    tpa = lpaeDescPa(lo, hi, t.granule);
  }
  return null;
}

function lpae(stage: 1 | 2, granule: LpaeGranule, ias: number, oas: number, pgsizeBitmap?: number) {
  return (): IoPgtableUnderTest => {
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x800_0000 });
    const flush = new RecordingFlushOps();
    // The suite places runs at 16 and 32 times the largest page: a 4 GiB space cannot take them
    // with 1 GiB blocks, so that case offers 4K|2M only and leaves 1 GiB to the selftest.
    const table = new LpaePgtable({
      mem,
      frames,
      stage,
      granule,
      ias,
      oas,
      tlb: flush,
      pgsizeBitmap,
    });
    return {
      table,
      frames,
      flush,
      caps: {
        partialBlockUnmap: "zero",
        rangeErrno: "ERANGE",
        protOf,
        protBits:
          stage === 1
            ? IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_PRIV
            : IOMMU_READ | IOMMU_WRITE | IOMMU_NOEXEC,
      },
    };
  };
}

const configs: [1 | 2, LpaeGranule, number, number, string, number?][] = [
  [1, 4096, 48, 48, "4 levels"],
  [1, 4096, 39, 48, "3 levels"],
  [1, 4096, 32, 32, "4-entry root, 4K and 2M pages", 0x20_1000],
  [2, 4096, 40, 40, "2 concatenated level-1 tables"],
  [2, 4096, 48, 48, "4 levels"],
  [1, 16384, 48, 48, "2-entry level-0 root"],
  [2, 16384, 48, 48, "2 concatenated level-1 tables"],
  [2, 16384, 40, 40, "16 concatenated level-2 tables"],
  [1, 65536, 48, 48, "3 levels"],
  [2, 65536, 42, 42, "2 levels"],
  [1, 65536, 52, 52, "52-bit OA, 4 TiB blocks"],
];
for (const [stage, granule, ias, oas, what, bitmap] of configs) {
  describeIoPgtableConformance(
    `LPAE stage ${stage}, ${granule / 1024}K granule, ias ${ias}, oas ${oas} (${what})`,
    lpae(stage, granule, ias, oas, bitmap),
  );
}
