// io-pgtable-arm's selftest sequence (arm_lpae_run_tests) on the LPAE formats: every granule, every
// ias <= oas of the kernel's address-size list, both stages, plus a partial unmap of a block.

import {
  IOMMU_CACHE,
  IOMMU_NOEXEC,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuFlushOps,
} from "@iommu-sim/iommu-core";
import { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { type LpaeGranule, LpaePgtable, lpaePgsizeBitmap } from "../src/pgtable/lpae.js";

const SZ_1G = 0x4000_0000;
const SZ_2G = 0x8000_0000;
const GRANULES: LpaeGranule[] = [4096, 16384, 65536];
/** @kernel drivers/iommu/io-pgtable-arm-selftests.c arm_lpae_do_selftests address_size */
const ADDRESS_SIZE = [32, 36, 40, 42, 44, 48];

function sizesOf(bitmap: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < 64; b++) if (Math.floor(bitmap / 2 ** b) % 2 === 1) out.push(2 ** b);
  return out;
}

/** The kernel's dummy flush ops check that every flushed size is one of the table's sizes. */
function checkingFlush(bitmap: number): IommuFlushOps & { bad: number } {
  const ok = new Set(sizesOf(bitmap));
  const ops = {
    bad: 0,
    tlbFlushAll() {},
    tlbFlushWalk(_iova: number, size: number) {
      if (!ok.has(size)) ops.bad++;
    },
    tlbAddPage(_g: unknown, _iova: number, granule: number) {
      if (!ok.has(granule)) ops.bad++;
    },
  };
  return ops;
}

/** One run of arm_lpae_run_tests for one format. */
function runTests(stage: 1 | 2, granule: LpaeGranule, ias: number, oas: number): void {
  const mem = new PhysMemory();
  const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x400_0000 });
  const bitmap = lpaePgsizeBitmap(granule, oas);
  const tlb = checkingFlush(bitmap);
  const ops = new LpaePgtable({ mem, frames, stage, granule, ias, oas, tlb });
  const sizes = sizesOf(ops.cfg.pgsizeBitmap);
  expect(ops.cfg.pgsizeBitmap).toBe(bitmap);

  // An empty table translates nothing.
  for (const iova of [42, SZ_1G + 42, SZ_2G + 42]) expect(ops.iovaToPhys(iova)).toBe(-1);

  // Distinct mappings of each size, 1 GiB apart, identity-mapped; mapping over each fails.
  let iova = 0;
  for (const size of sizes) {
    expect(
      ops.mapPages(iova, iova, size, 1, IOMMU_READ | IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_CACHE),
    ).toBe(0);
    expect(ops.mapPages(iova, iova + size, size, 1, IOMMU_READ | IOMMU_NOEXEC)).not.toBe(0);
    expect(ops.iovaToPhys(iova + 42)).toBe(iova + 42);
    iova += SZ_1G;
  }

  // Partial unmap of a block: the kernel (>= 6.13) refuses it, returns 0, keeps the block.
  const min = sizes[0] as number;
  for (let j = 1; j < sizes.length; j++) {
    const at = j * SZ_1G;
    expect(ops.unmapPages(at + min, min, 1, null)).toBe(0);
    expect(ops.iovaToPhys(at + min + 42)).toBe(at + min + 42);
  }

  // Full unmap, then remap of the full block, write-only.
  iova = 0;
  for (const size of sizes) {
    expect(ops.unmapPages(iova, size, 1, null)).toBe(size);
    expect(ops.iovaToPhys(iova + 42)).toBe(-1);
    expect(ops.mapPages(iova, iova, size, 1, IOMMU_WRITE)).toBe(0);
    expect(ops.iovaToPhys(iova + 42)).toBe(iova + 42);
    iova += SZ_1G;
  }

  // The last largest page of the input space (concatenated-root corner cases).
  const big = sizes[sizes.length - 1] as number;
  const last = 2 ** ias - big;
  expect(
    ops.mapPages(last, last, big, 1, IOMMU_READ | IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_CACHE),
  ).toBe(0);
  expect(ops.mapped).toBe(big);
  expect(ops.iovaToPhys(last + big - 1)).toBe(last + big - 1);
  expect(ops.unmapPages(last, big, 1, null)).toBe(big);
  expect(ops.iovaToPhys(last)).toBe(-1);

  expect(tlb.bad, "flushes of a size outside the bitmap").toBe(0);
  ops.free();
  expect(frames.liveFrames).toBe(0);
}

describe("io-pgtable-arm selftest sequence", () => {
  for (const granule of GRANULES) {
    for (let j = 0; j < ADDRESS_SIZE.length; j++) {
      // As the kernel: ias <= oas, since ias > oas is not valid at stage 2.
      for (let k = 0; k <= j; k++) {
        const ias = ADDRESS_SIZE[k] as number;
        const oas = ADDRESS_SIZE[j] as number;
        it(`${granule / 1024}K granule, ias ${ias}, oas ${oas}: stage 1 and stage 2 pass`, () => {
          runTests(1, granule, ias, oas);
          runTests(2, granule, ias, oas);
        });
      }
    }
  }
});
