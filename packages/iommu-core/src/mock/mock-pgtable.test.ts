// The mock format's layout and MockPgtable's rules, one rule per test, and the hardware's view.

import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import {
  IOMMU_CACHE,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
} from "../iommu/io-pgtable.js";
import { IommuIotlbGather } from "../iommu/iotlb-gather.js";
import { ModelBug } from "../platform/bug.js";
import { FrameAllocator } from "../platform/frame-allocator.js";
import { PhysMemory } from "../platform/phys-memory.js";
import { RecordingFlushOps } from "../testing/io-pgtable-conformance.js";
import {
  MOCK_PGSIZE_BITMAP,
  MOCK_PTE,
  MOCK_PTE_ADDR_HI,
  MOCK_PTE_ADDR_LO,
  MOCK_PTE_BAD,
  MOCK_PTE_LEAF,
  MOCK_PTE_NONE,
  MOCK_PTE_NX,
  MOCK_PTE_P,
  MOCK_PTE_PRIV,
  MOCK_PTE_PS,
  MOCK_PTE_R,
  MOCK_PTE_RES_HI,
  MOCK_PTE_RES_LO,
  MOCK_PTE_TABLE,
  MOCK_PTE_W,
  MockPgtable,
  type MockPgtableOptions,
  mockLevelIndex,
  mockPteAddr,
  mockPteDecode,
  mockPteHi,
  mockPteLeafLo,
  mockPteProt,
  mockPteTableLo,
} from "./mock-pgtable.js";

const SZ_4K = 0x1000;
const SZ_2M = 0x20_0000;
const SZ_1G = 0x4000_0000;
const RW = IOMMU_READ | IOMMU_WRITE;

function setup(options: Partial<MockPgtableOptions> = {}, frameCount = 256, basePa = 0x100_0000) {
  const mem = new PhysMemory();
  const frames = new FrameAllocator(mem, { basePa, size: frameCount * SZ_4K });
  const tlb = new RecordingFlushOps();
  const pt = new MockPgtable({ mem, frames, levels: 4, tlb, ...options });
  return { mem, frames, tlb, pt };
}

/** The entry a walk from the root meets at `level` for `iova`, or null if the walk stops above. */
function entryAt(pt: MockPgtable, iova: number, level: number): { lo: number; hi: number } | null {
  let tpa = pt.rootPa;
  for (let lvl = pt.levels; lvl >= level; lvl--) {
    const lo = pt.mem.read64(tpa + mockLevelIndex(iova, lvl) * 8);
    const hi = pt.mem.hi;
    if (lvl === level) return { lo, hi };
    if (mockPteDecode(lo, hi, lvl) !== MOCK_PTE_TABLE) return null;
    tpa = mockPteAddr(lo, hi);
  }
  return null;
}

/** The mock hardware's walk: the PA, -1 when nothing is mapped, -2 for a malformed entry. */
function hwWalk(mem: PhysMemory, rootPa: number, levels: number, iova: number): number {
  let tpa = rootPa;
  for (let lvl = levels; lvl >= 1; lvl--) {
    const lo = mem.read64(tpa + mockLevelIndex(iova, lvl) * 8);
    const hi = mem.hi;
    const kind = mockPteDecode(lo, hi, lvl);
    if (kind === MOCK_PTE_NONE) return -1;
    if (kind === MOCK_PTE_BAD) return -2;
    if (kind === MOCK_PTE_LEAF) return mockPteAddr(lo, hi) + (iova % 2 ** (12 + 9 * (lvl - 1)));
    tpa = mockPteAddr(lo, hi);
  }
  return -2;
}

describe("mock format layout", () => {
  it("has the P/R/W/PS/ADDR bits of the C baseline (pgtable.h) and NX, PRIV at bits 3, 4", () => {
    expect([MOCK_PTE_P, MOCK_PTE_R, MOCK_PTE_W, MOCK_PTE_NX, MOCK_PTE_PRIV, MOCK_PTE_PS]).toEqual([
      1, 2, 4, 8, 16, 128,
    ]);
    // PTE_ADDR 0x000FFFFFFFFFF000 as two halves.
    expect(MOCK_PTE_ADDR_LO >>> 0).toBe(0xffff_f000);
    expect(MOCK_PTE_ADDR_HI).toBe(0x000f_ffff);
  });

  it("reserves exactly the bits the field table leaves out", () => {
    expect(MOCK_PTE_RES_LO >>> 0).toBe(0x0000_0f60);
    expect(MOCK_PTE_RES_HI >>> 0).toBe(0xfff0_0000);
    expect(Object.isFrozen(MOCK_PTE)).toBe(true);
    let bits = 0;
    for (const f of MOCK_PTE.fields) bits += f.width;
    expect(bits).toBe(46);
    expect([...MOCK_PTE.reserved]).toEqual([MOCK_PTE_RES_LO >>> 0, MOCK_PTE_RES_HI >>> 0]);
  });

  it("decodes empty, table, leaf and malformed entries by level", () => {
    const table = mockPteTableLo(0x12_3456_7000);
    const tableHi = mockPteHi(0x12_3456_7000);
    expect(mockPteDecode(0, 0, 4)).toBe(MOCK_PTE_NONE);
    expect(mockPteDecode(MOCK_PTE_R | MOCK_PTE_W | MOCK_PTE_PS, 0xfff00000, 2)).toBe(MOCK_PTE_NONE);
    expect(mockPteDecode(table, tableHi, 4)).toBe(MOCK_PTE_TABLE);
    expect(mockPteAddr(table, tableHi)).toBe(0x12_3456_7000);
    expect(mockPteDecode(mockPteLeafLo(0x5000, RW, 1), 0, 1)).toBe(MOCK_PTE_LEAF);
    expect(mockPteDecode(mockPteLeafLo(SZ_2M, RW, 2), 0, 2)).toBe(MOCK_PTE_LEAF);
    expect(mockPteDecode(mockPteLeafLo(SZ_1G, RW, 3), 0, 3)).toBe(MOCK_PTE_LEAF);
    // A reserved bit in either half, PS at level 1, 4 or 5, a block address below its size.
    expect(mockPteDecode(table | 0x20, tableHi, 4)).toBe(MOCK_PTE_BAD);
    expect(mockPteDecode(table, tableHi | 0x10_0000, 4)).toBe(MOCK_PTE_BAD);
    expect(mockPteDecode(table | MOCK_PTE_PS, 0, 1)).toBe(MOCK_PTE_BAD);
    expect(mockPteDecode(table | MOCK_PTE_PS, 0, 4)).toBe(MOCK_PTE_BAD);
    expect(mockPteDecode(table | MOCK_PTE_PS, 0, 5)).toBe(MOCK_PTE_BAD);
    expect(mockPteDecode(mockPteLeafLo(SZ_2M + SZ_4K, RW, 2), 0, 2)).toBe(MOCK_PTE_BAD);
    expect(mockPteDecode(mockPteLeafLo(SZ_1G + SZ_2M, RW, 3), 0, 3)).toBe(MOCK_PTE_BAD);
  });

  it("encodes R, W, NX and PRIV from prot and ignores CACHE", () => {
    const lo = mockPteLeafLo(0x7000, IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_PRIV | IOMMU_CACHE, 1);
    expect(lo).toBe(0x7000 | MOCK_PTE_P | MOCK_PTE_W | MOCK_PTE_NX | MOCK_PTE_PRIV);
    expect(mockPteProt(lo)).toBe(IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_PRIV);
    expect(mockPteLeafLo(SZ_2M, IOMMU_READ, 2)).toBe(SZ_2M | MOCK_PTE_P | MOCK_PTE_R | MOCK_PTE_PS);
  });

  it("splits a 57-bit IOVA into five exact indices", () => {
    const iova = 2 ** 56 + 2 ** 47 + 5 * 2 ** 39 + 7 * SZ_1G + 9 * SZ_2M + 11 * SZ_4K;
    expect([5, 4, 3, 2, 1].map((l) => mockLevelIndex(iova, l))).toEqual([256, 261, 7, 9, 11]);
    expect(mockLevelIndex(2 ** 57 - SZ_4K, 5)).toBe(511);
    expect(mockLevelIndex(2 ** 57 - SZ_4K, 1)).toBe(511);
  });
});

describe("MockPgtable.mapPages", () => {
  it("a 4 KiB page translates at its first and last byte, its neighbours do not", () => {
    const { pt } = setup();
    expect(pt.mapPages(0x1_0000_0000, 0x80_0000_0000, SZ_4K, 1, RW)).toBe(0);
    expect(pt.mapped).toBe(SZ_4K);
    expect(pt.iovaToPhys(0x1_0000_0000)).toBe(0x80_0000_0000);
    expect(pt.iovaToPhys(0x1_0000_0fff)).toBe(0x80_0000_0fff);
    expect(pt.iovaToPhys(0x1_0000_1000)).toBe(-1);
    expect(pt.iovaToPhys(0x0_ffff_ffff)).toBe(-1);
  });

  it("a 2 MiB page is a PS leaf at level 2 and a 1 GiB page one at level 3", () => {
    const { pt } = setup();
    expect(pt.mapPages(SZ_1G, 3 * SZ_2M, SZ_2M, 1, RW)).toBe(0);
    expect(pt.mapPages(4 * SZ_1G, 8 * SZ_1G, SZ_1G, 1, IOMMU_READ)).toBe(0);
    const e2 = entryAt(pt, SZ_1G, 2);
    const e3 = entryAt(pt, 4 * SZ_1G, 3);
    expect(e2 && mockPteDecode(e2.lo, e2.hi, 2)).toBe(MOCK_PTE_LEAF);
    expect(e2 && (e2.lo & MOCK_PTE_PS) !== 0).toBe(true);
    expect(e3 && mockPteDecode(e3.lo, e3.hi, 3)).toBe(MOCK_PTE_LEAF);
    expect(e3 && mockPteAddr(e3.lo, e3.hi)).toBe(8 * SZ_1G);
    expect(pt.iovaToPhys(SZ_1G + 0x1a_bcde)).toBe(3 * SZ_2M + 0x1a_bcde);
    expect(pt.iovaToPhys(5 * SZ_1G - 1)).toBe(9 * SZ_1G - 1);
  });

  it("table entries are P|R|W with the next table's address, in allocated frames", () => {
    const { pt, frames } = setup();
    expect(pt.mapPages(0x1234_5000, 0x5000, SZ_4K, 1, IOMMU_READ)).toBe(0);
    for (const level of [4, 3, 2]) {
      const e = entryAt(pt, 0x1234_5000, level);
      expect(e && e.lo & 0xfff).toBe(MOCK_PTE_P | MOCK_PTE_R | MOCK_PTE_W);
      expect(e && frames.isAllocated(mockPteAddr(e.lo, e.hi))).toBe(true);
    }
    const leaf = entryAt(pt, 0x1234_5000, 1);
    expect(leaf).toEqual({ lo: 0x5000 | MOCK_PTE_P | MOCK_PTE_R, hi: 0 });
  });

  it("leaf entries carry R, W, NX and PRIV from prot", () => {
    const { pt } = setup();
    const prots = [IOMMU_READ, IOMMU_WRITE, RW | IOMMU_NOEXEC, IOMMU_READ | IOMMU_PRIV];
    prots.forEach((prot, i) => {
      expect(pt.mapPages(i * SZ_4K, i * SZ_4K, SZ_4K, 1, prot)).toBe(0);
      const e = entryAt(pt, i * SZ_4K, 1);
      expect(e && mockPteProt(e.lo)).toBe(prot);
    });
  });

  it("a page size outside the bitmap returns EINVAL", () => {
    const { pt } = setup({ pgsizeBitmap: SZ_4K | SZ_1G });
    for (const size of [0, 2 * SZ_4K, 3 * SZ_4K, SZ_2M, 2 ** 39, -SZ_4K, Number.NaN]) {
      expect(pt.mapPages(0, 0, size, 1, RW), `pgsize ${size}`).toBe("EINVAL");
      expect(pt.mapped).toBe(0);
    }
    expect(pt.iovaToPhys(0)).toBe(-1);
  });

  it("a misaligned, negative or fractional iova or pa returns EINVAL", () => {
    const { pt } = setup();
    const cases: [number, number, number][] = [
      [0x800, 0, SZ_4K],
      [0, 0x800, SZ_4K],
      [SZ_4K, 0, SZ_2M],
      [0, SZ_1G + SZ_2M, SZ_1G],
      [-SZ_4K, 0, SZ_4K],
      [0, -SZ_4K, SZ_4K],
      [0.5, 0, SZ_4K],
      [0, Number.NaN, SZ_4K],
    ];
    for (const [iova, pa, size] of cases) {
      expect(pt.mapPages(iova, pa, size, 1, RW), `${iova} -> ${pa}`).toBe("EINVAL");
    }
    expect(pt.iovaToPhys(0)).toBe(-1);
  });

  it("pgcount below 1 or not an integer returns EINVAL", () => {
    const { pt } = setup();
    for (const n of [0, -1, 1.5, Number.NaN])
      expect(pt.mapPages(0, 0, SZ_4K, n, RW)).toBe("EINVAL");
    expect(pt.iovaToPhys(0)).toBe(-1);
  });

  it("prot without IOMMU_READ or IOMMU_WRITE returns EINVAL and maps nothing", () => {
    const { pt, frames } = setup();
    const live = frames.liveFrames;
    for (const prot of [0, IOMMU_NOEXEC | IOMMU_PRIV | IOMMU_CACHE]) {
      expect(pt.mapPages(0, 0, SZ_4K, 1, prot)).toBe("EINVAL");
    }
    expect(frames.liveFrames).toBe(live);
    expect(pt.iovaToPhys(0)).toBe(-1);
  });

  it("an iova range past 2^ias returns ERANGE and maps nothing", () => {
    const { pt } = setup({ levels: 3 });
    expect(pt.cfg.ias).toBe(39);
    expect(pt.mapPages(2 ** 39 - SZ_4K, 0, SZ_4K, 2, RW)).toBe("ERANGE");
    expect(pt.mapPages(2 ** 39, 0, SZ_4K, 1, RW)).toBe("ERANGE");
    expect(pt.mapped).toBe(0);
    expect(pt.iovaToPhys(2 ** 39 - SZ_4K)).toBe(-1);
    expect(pt.mapPages(2 ** 39 - SZ_4K, 0, SZ_4K, 1, RW)).toBe(0);
  });

  it("a pa range past 2^oas returns ERANGE", () => {
    const { pt } = setup({ oas: 40 });
    expect(pt.mapPages(0, 2 ** 40 - SZ_2M, SZ_2M, 2, RW)).toBe("ERANGE");
    expect(pt.mapPages(0, 2 ** 40, SZ_4K, 1, RW)).toBe("ERANGE");
    expect(pt.mapPages(0, 2 ** 40 - SZ_2M, SZ_2M, 1, RW)).toBe(0);
  });

  it("checks size and alignment (EINVAL) before range (ERANGE) before prot (EINVAL)", () => {
    const { pt } = setup({ levels: 3 });
    expect(pt.mapPages(2 ** 39 + 0x800, 0, SZ_4K, 1, RW)).toBe("EINVAL");
    expect(pt.mapPages(2 ** 39, 0, SZ_4K, 1, 0)).toBe("ERANGE");
  });

  it("mapping over a present leaf returns EEXIST", () => {
    const { pt } = setup();
    expect(pt.mapPages(SZ_2M, 0, SZ_2M, 1, RW)).toBe(0);
    expect(pt.mapPages(SZ_2M, SZ_2M, SZ_2M, 1, RW)).toBe("EEXIST");
    expect(pt.mapped).toBe(0);
    expect(pt.iovaToPhys(SZ_2M + 5)).toBe(5);
  });

  it("mapping inside a larger leaf returns EEXIST", () => {
    const { pt } = setup();
    expect(pt.mapPages(SZ_1G, 0, SZ_1G, 1, RW)).toBe(0);
    expect(pt.mapPages(SZ_1G + SZ_2M, 0, SZ_2M, 1, RW)).toBe("EEXIST");
    expect(pt.mapPages(2 * SZ_1G - SZ_4K, 0, SZ_4K, 1, RW)).toBe("EEXIST");
  });

  it("mapping a block over a table that maps something returns EEXIST", () => {
    const { pt, frames } = setup();
    expect(pt.mapPages(SZ_1G + 5 * SZ_2M + 7 * SZ_4K, 0, SZ_4K, 1, RW)).toBe(0);
    const live = frames.liveFrames;
    expect(pt.mapPages(SZ_1G + 5 * SZ_2M, 0, SZ_2M, 1, RW)).toBe("EEXIST");
    expect(pt.mapPages(SZ_1G, 0, SZ_1G, 1, RW)).toBe("EEXIST");
    expect(frames.liveFrames).toBe(live);
    expect(pt.iovaToPhys(SZ_1G + 5 * SZ_2M + 7 * SZ_4K)).toBe(0);
  });

  it("EEXIST part-way leaves mapped = the bytes before the conflict, and they stay mapped", () => {
    const { pt } = setup();
    expect(pt.mapPages(3 * SZ_4K, 0, SZ_4K, 1, RW)).toBe(0);
    expect(pt.mapPages(0, SZ_1G, SZ_4K, 5, RW)).toBe("EEXIST");
    expect(pt.mapped).toBe(3 * SZ_4K);
    expect(pt.iovaToPhys(2 * SZ_4K)).toBe(SZ_1G + 2 * SZ_4K);
    expect(pt.iovaToPhys(3 * SZ_4K)).toBe(0);
    expect(pt.iovaToPhys(4 * SZ_4K)).toBe(-1);
  });

  it("a run crosses table boundaries in one call", () => {
    const { pt } = setup();
    expect(pt.mapPages(SZ_2M - 2 * SZ_4K, 0, SZ_4K, 4, RW)).toBe(0);
    expect(pt.mapped).toBe(4 * SZ_4K);
    expect(pt.mapPages(SZ_1G - SZ_2M, 0, SZ_2M, 3, RW)).toBe(0);
    expect(pt.iovaToPhys(SZ_2M + SZ_4K)).toBe(3 * SZ_4K);
    expect(pt.iovaToPhys(SZ_1G + SZ_2M + 1)).toBe(2 * SZ_2M + 1);
  });

  it("mapping a block over an empty table frees the table after a walk flush", () => {
    const { pt, frames, tlb } = setup();
    expect(pt.mapPages(SZ_1G + SZ_2M + SZ_4K, 0, SZ_4K, 1, RW)).toBe(0);
    expect(pt.unmapPages(SZ_1G + SZ_2M + SZ_4K, SZ_4K, 1, null)).toBe(SZ_4K);
    const live = frames.liveFrames;
    tlb.clear();
    expect(pt.mapPages(SZ_1G + SZ_2M, 0, SZ_2M, 1, RW)).toBe(0);
    expect(tlb.calls).toEqual([
      { kind: "flushWalk", iova: SZ_1G + SZ_2M, size: SZ_2M, granule: SZ_4K },
    ]);
    expect(frames.liveFrames).toBe(live - 1);
    // A 1 GiB block over an empty level-2 table frees that table and the level-1 ones under it.
    expect(pt.mapPages(3 * SZ_1G + SZ_4K, 0, SZ_4K, 1, RW)).toBe(0);
    expect(pt.unmapPages(3 * SZ_1G + SZ_4K, SZ_4K, 1, null)).toBe(SZ_4K);
    const live2 = frames.liveFrames;
    expect(pt.mapPages(3 * SZ_1G, 0, SZ_1G, 1, RW)).toBe(0);
    expect(frames.liveFrames).toBe(live2 - 2);
    expect(pt.iovaToPhys(3 * SZ_1G + SZ_4K)).toBe(SZ_4K);
  });

  it("running out of frames returns ENOMEM, keeps the pages before, and leaks nothing", () => {
    const { pt, frames } = setup({}, 4);
    expect(frames.liveFrames).toBe(1);
    // Three tables for the first leaf table; page 513 needs a fourth leaf table's frame: none.
    expect(pt.mapPages(0, 0, SZ_4K, 513, RW)).toBe("ENOMEM");
    expect(pt.mapped).toBe(512 * SZ_4K);
    expect(frames.liveFrames).toBe(4);
    expect(pt.iovaToPhys(511 * SZ_4K)).toBe(511 * SZ_4K);
    expect(pt.iovaToPhys(512 * SZ_4K)).toBe(-1);
    // A path that fails half-way gives back the tables it had built.
    expect(pt.unmapPages(0, SZ_4K, 512, null)).toBe(512 * SZ_4K);
    pt.free();
    expect(frames.liveFrames).toBe(0);
    const five = new MockPgtable({ mem: frames.mem, frames, levels: 5, tlb: null });
    expect(five.mapPages(0, 0, SZ_4K, 1, RW)).toBe("ENOMEM");
    expect(frames.liveFrames).toBe(1);
    five.free();
    expect(frames.liveFrames).toBe(0);
  });

  it("a new path of tables is filled before one store links it", () => {
    const { pt, mem } = setup({ levels: 5 });
    const iova = 2 ** 56 + 3 * SZ_1G + 5 * SZ_4K;
    const seen: number[] = [];
    mem.onWrite = (_pa, bytes) => {
      expect(bytes).toBe(8);
      seen.push(hwWalk(mem, pt.rootPa, 5, iova));
    };
    expect(pt.mapPages(iova, 0x9000, SZ_4K, 1, RW)).toBe(0);
    // Three links inside the new path, the leaf, then the one store into the root.
    expect(seen).toEqual([-1, -1, -1, -1, 0x9000]);
  });

  it("57-bit iovas map and translate exactly at 5 levels", () => {
    const { pt } = setup({ levels: 5 });
    const top = 2 ** 57 - SZ_4K;
    expect(pt.mapPages(top, 2 ** 52 - SZ_4K, SZ_4K, 1, RW)).toBe(0);
    expect(pt.mapPages(2 ** 56 + SZ_1G, 0x40_0000_0000, SZ_1G, 1, RW)).toBe(0);
    expect(pt.iovaToPhys(top)).toBe(2 ** 52 - SZ_4K);
    expect(pt.iovaToPhys(2 ** 56 + SZ_1G + 0x3000)).toBe(0x40_0000_3000);
    expect(pt.iovaToPhys(2 ** 57)).toBe(-1);
    expect(pt.iovaToPhys(top - SZ_4K)).toBe(-1);
    expect(hwWalk(pt.mem, pt.rootPa, 5, top)).toBe(2 ** 52 - SZ_4K);
    expect(pt.unmapPages(top, SZ_4K, 1, null)).toBe(SZ_4K);
    expect(pt.iovaToPhys(top)).toBe(-1);
  });

  it("tables above 4 GiB work as well as tables below", () => {
    const { pt, frames, mem } = setup({}, 64, 0x3_0000_0000);
    expect(pt.rootPa).toBeGreaterThanOrEqual(0x3_0000_0000);
    expect(pt.mapPages(0x1_0000_0000, 0x80_0000_0000, SZ_4K, 3, RW)).toBe(0);
    expect(pt.mapPages(0x40_0000_0000, 0x100_0000_0000, SZ_2M, 1, RW)).toBe(0);
    expect(pt.iovaToPhys(0x1_0000_2abc)).toBe(0x80_0000_2abc);
    expect(pt.iovaToPhys(0x40_0012_3456)).toBe(0x100_0012_3456);
    expect(hwWalk(mem, pt.rootPa, 4, 0x1_0000_1000)).toBe(0x80_0000_1000);
    expect(entryAt(pt, 0x1_0000_0000, 2)?.hi).toBe(3);
    expect(pt.unmapPages(0x1_0000_0000, SZ_4K, 3, null)).toBe(3 * SZ_4K);
    pt.free();
    expect(frames.liveFrames).toBe(0);
  });
});

describe("MockPgtable.unmapPages", () => {
  it("returns the bytes unmapped, and the pages no longer translate", () => {
    const { pt } = setup();
    expect(pt.mapPages(SZ_2M, 0, SZ_2M, 3, RW)).toBe(0);
    expect(pt.unmapPages(SZ_2M, SZ_2M, 3, null)).toBe(3 * SZ_2M);
    expect(pt.iovaToPhys(SZ_2M)).toBe(-1);
    expect(pt.iovaToPhys(4 * SZ_2M - 1)).toBe(-1);
  });

  it("stops at the first hole", () => {
    const { pt } = setup();
    expect(pt.mapPages(0, 0, SZ_4K, 2, RW)).toBe(0);
    expect(pt.mapPages(3 * SZ_4K, 0, SZ_4K, 1, RW)).toBe(0);
    expect(pt.unmapPages(0, SZ_4K, 4, null)).toBe(2 * SZ_4K);
    expect(pt.iovaToPhys(3 * SZ_4K)).toBe(0);
  });

  it("unmap of a hole returns 0", () => {
    const { pt } = setup();
    expect(pt.unmapPages(0, SZ_4K, 1, null)).toBe(0);
    expect(pt.unmapPages(SZ_1G, SZ_1G, 1, null)).toBe(0);
  });

  it("unmapping part of a block returns 0 and leaves the block mapped", () => {
    const { pt, tlb } = setup();
    expect(pt.mapPages(SZ_1G, 0, SZ_1G, 1, RW)).toBe(0);
    expect(pt.mapPages(4 * SZ_2M, 0, SZ_2M, 1, RW)).toBe(0);
    const gather = new IommuIotlbGather();
    tlb.clear();
    expect(pt.unmapPages(SZ_1G + SZ_2M, SZ_2M, 1, gather)).toBe(0);
    expect(pt.unmapPages(4 * SZ_2M + SZ_4K, SZ_4K, 1, gather)).toBe(0);
    expect(pt.unmapPages(4 * SZ_2M, SZ_4K, 1, gather)).toBe(0);
    expect(tlb.calls).toEqual([]);
    expect(pt.iovaToPhys(SZ_1G + SZ_2M)).toBe(SZ_2M);
    expect(pt.iovaToPhys(4 * SZ_2M + SZ_4K)).toBe(SZ_4K);
  });

  it("a block-sized unmap over a table of leaves clears it, flushes the walk and frees it", () => {
    const { pt, frames, tlb } = setup();
    expect(pt.mapPages(SZ_2M + 5 * SZ_4K, 0, SZ_4K, 2, RW)).toBe(0);
    const live = frames.liveFrames;
    const gather = new IommuIotlbGather();
    tlb.clear();
    expect(pt.unmapPages(SZ_2M, SZ_2M, 1, gather)).toBe(SZ_2M);
    expect(tlb.calls).toEqual([
      { kind: "flushWalk", iova: SZ_2M, size: SZ_2M, granule: SZ_4K },
      { kind: "addPage", iova: SZ_2M, size: SZ_2M, granule: SZ_2M },
    ]);
    expect(frames.liveFrames).toBe(live - 1);
    expect(pt.iovaToPhys(SZ_2M + 5 * SZ_4K)).toBe(-1);
  });

  it("a block-sized unmap over an empty table is a hole and keeps the table", () => {
    const { pt, frames } = setup();
    expect(pt.mapPages(SZ_2M, 0, SZ_4K, 1, RW)).toBe(0);
    expect(pt.unmapPages(SZ_2M, SZ_4K, 1, null)).toBe(SZ_4K);
    const live = frames.liveFrames;
    expect(pt.unmapPages(SZ_2M, SZ_2M, 1, null)).toBe(0);
    expect(frames.liveFrames).toBe(live);
  });

  it("hands each cleared leaf to tlbAddPage once, with its iova and size", () => {
    const { pt, tlb } = setup();
    expect(pt.mapPages(SZ_2M - SZ_4K, 0, SZ_4K, 3, RW)).toBe(0);
    const gather = new IommuIotlbGather();
    tlb.clear();
    expect(pt.unmapPages(SZ_2M - SZ_4K, SZ_4K, 3, gather)).toBe(3 * SZ_4K);
    expect(tlb.of("addPage").map((c) => [c.iova, c.granule])).toEqual([
      [SZ_2M - SZ_4K, SZ_4K],
      [SZ_2M, SZ_4K],
      [SZ_2M + SZ_4K, SZ_4K],
    ]);
    expect(gather.size).toBe(3 * SZ_4K);
  });

  it("calls no tlbAddPage when gather is null or queued, or tlb is null", () => {
    const { pt, tlb } = setup();
    expect(pt.mapPages(0, 0, SZ_4K, 2, RW)).toBe(0);
    tlb.clear();
    expect(pt.unmapPages(0, SZ_4K, 1, null)).toBe(SZ_4K);
    const queued = new IommuIotlbGather();
    queued.queued = true;
    expect(pt.unmapPages(SZ_4K, SZ_4K, 1, queued)).toBe(SZ_4K);
    expect(tlb.calls).toEqual([]);
    const quiet = setup({ tlb: null }).pt;
    expect(quiet.mapPages(0, 0, SZ_4K, 1, RW)).toBe(0);
    expect(quiet.unmapPages(0, SZ_4K, 1, new IommuIotlbGather())).toBe(SZ_4K);
  });

  it("invalid arguments unmap nothing and return 0", () => {
    const { pt } = setup({ levels: 3 });
    expect(pt.mapPages(0, 0, SZ_4K, 4, RW)).toBe(0);
    for (const [iova, size, count] of [
      [0, 2 * SZ_4K, 1],
      [0x800, SZ_4K, 1],
      [0, SZ_4K, 0],
      [0, SZ_4K, 0.5],
      [-SZ_4K, SZ_4K, 1],
      [2 ** 39, SZ_4K, 1],
    ]) {
      expect(pt.unmapPages(iova, size, count, null), `${iova} ${size} ${count}`).toBe(0);
    }
    expect(pt.iovaToPhys(3 * SZ_4K)).toBe(3 * SZ_4K);
  });

  it("an unmap running past 2^ias stops there", () => {
    const { pt } = setup({ levels: 3 });
    expect(pt.mapPages(2 ** 39 - SZ_4K, 0, SZ_4K, 1, RW)).toBe(0);
    expect(pt.unmapPages(2 ** 39 - SZ_4K, SZ_4K, 4, null)).toBe(SZ_4K);
  });
});

describe("MockPgtable lifetime", () => {
  it("free returns every table frame", () => {
    const { pt, frames } = setup({ levels: 5 });
    expect(pt.mapPages(0, 0, SZ_4K, 600, RW)).toBe(0);
    expect(pt.mapPages(2 ** 56, 0, SZ_2M, 2, RW)).toBe(0);
    expect(pt.mapPages(2 ** 57 - SZ_1G, 0, SZ_1G, 1, RW)).toBe(0);
    // Root; L4, L3, L2 and two L1 for the 4 KiB run; L4, L3, L2 for the 2 MiB pair; L4, L3.
    expect(frames.liveFrames).toBe(1 + 5 + 3 + 2);
    pt.free();
    expect(frames.liveFrames).toBe(0);
    expect(pt.iovaToPhys(0)).toBe(-1);
  });

  it("free twice, or map or unmap after free, is a bug", () => {
    const { pt } = setup();
    pt.free();
    expect(() => pt.free()).toThrow(ModelBug);
    expect(() => pt.mapPages(0, 0, SZ_4K, 1, RW)).toThrow(ModelBug);
    expect(() => pt.unmapPages(0, SZ_4K, 1, null)).toThrow(ModelBug);
  });

  it("MockPgtable.alloc returns ENOMEM when no frame is left for the root", () => {
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 0x10_0000, size: SZ_4K });
    const first = MockPgtable.alloc({ mem, frames, levels: 3, tlb: null });
    expect(first).toBeInstanceOf(MockPgtable);
    expect(MockPgtable.alloc({ mem, frames, levels: 3, tlb: null })).toBe("ENOMEM");
  });

  it("invalid options are bugs", () => {
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 0x10_0000, size: 16 * SZ_4K });
    const other = new FrameAllocator(new PhysMemory(), { basePa: 0x10_0000, size: SZ_4K });
    const ok = { mem, frames, levels: 4 as const, tlb: null };
    expect(() => new MockPgtable({ ...ok, levels: 6 as 5 })).toThrow(ModelBug);
    expect(() => new MockPgtable({ ...ok, pgsizeBitmap: 0 })).toThrow(ModelBug);
    expect(() => new MockPgtable({ ...ok, pgsizeBitmap: SZ_4K * 2 })).toThrow(ModelBug);
    expect(() => new MockPgtable({ ...ok, oas: 53 })).toThrow(ModelBug);
    expect(() => new MockPgtable({ ...ok, frames: other })).toThrow(ModelBug);
    expect(frames.liveFrames).toBe(0);
    expect(new MockPgtable(ok).cfg).toEqual({
      pgsizeBitmap: MOCK_PGSIZE_BITMAP,
      ias: 48,
      oas: 52,
      coherentWalk: true,
      tlb: null,
    });
  });
});

const opArb = fc.record({
  size: fc.constantFrom(SZ_4K, SZ_2M, SZ_1G),
  slot: fc.nat(63),
  unmap: fc.boolean(),
});

describe("MockPgtable and the hardware walk", () => {
  test.prop(
    [fc.array(opArb, { minLength: 1, maxLength: 80 }), fc.array(fc.nat(), { maxLength: 64 })],
    {
      seed: 0x6d6f636b,
      numRuns: 60,
    },
  )("the hardware's view of memory agrees with iovaToPhys after any map/unmap", (ops, probes) => {
    const { pt, mem, frames } = setup({ levels: 4 }, 1024);
    const base = 2 ** 47 - 4 * SZ_1G;
    for (const op of ops) {
      // Slots cluster inside 4 GiB so that sizes collide.
      const iova =
        base + (op.slot % 4) * SZ_1G + ((op.slot >> 2) % 4) * SZ_2M + (op.slot >> 4) * SZ_4K;
      const at = iova - (iova % op.size);
      if (op.unmap) pt.unmapPages(at, op.size, 1, null);
      else pt.mapPages(at, op.slot * SZ_1G, op.size, 1, RW);
    }
    for (const p of probes) {
      const iova = base + (p % (4 * SZ_1G));
      expect(hwWalk(mem, pt.rootPa, 4, iova)).toBe(pt.iovaToPhys(iova));
    }
    pt.free();
    expect(frames.liveFrames).toBe(0);
  });
});
