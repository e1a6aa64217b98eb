import {
  IOMMU_CACHE,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
} from "@iommu-sim/iommu-core";
import { FrameAllocator, ModelBug, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import {
  FS_PTE_A,
  FS_PTE_D,
  FS_PTE_P,
  FS_PTE_PS,
  FS_PTE_RW,
  FS_PTE_US,
  fsPteKind,
} from "../format/first-stage-pte.js";
import { VTD_PTE_LEAF, VTD_PTE_TABLE, vtdLevelIndex } from "../format/second-stage-pte.js";
import { FS_LEAF_BITS, FS_LEAF_WRITE_BITS, FS_TABLE_BITS, VtdFsPgtable } from "./first-stage.js";
import { pgtableProtOf, VTD_SUPERPAGES } from "./second-stage.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const SZ_4K = 0x1000;
const SZ_2M = 0x20_0000;
const SZ_1G = 0x4000_0000;

function setup(levels: 4 | 5 = 4, superpages = VTD_SUPERPAGES): VtdFsPgtable {
  const mem = new PhysMemory();
  const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x100_0000 });
  return new VtdFsPgtable({ mem, frames, levels, superpages, tlb: null });
}

/** The entry at `level` on the walk to `iova`, as [lo, hi]. */
function entryAt(t: VtdFsPgtable, iova: number, level: number): [number, number] {
  let tpa = t.rootPa;
  for (let l = t.levels; l >= level; l--) {
    const lo = t.mem.read64(tpa + vtdLevelIndex(iova, l) * 8);
    const hi = t.mem.hi;
    if (l === level) return [lo, hi];
    if ((lo & 1) === 0) return [0, 0];
    tpa = (hi & 0xfffff) * 2 ** 32 + ((lo & 0xfffff000) >>> 0);
  }
  return [0, 0];
}

describe("VtdFsPgtable geometry", () => {
  it("covers the lower canonical half: ias 47 with 4 levels, 56 with 5", () => {
    expect([setup(4).levels, setup(4).cfg.ias]).toEqual([4, 47]);
    expect([setup(5).levels, setup(5).cfg.ias]).toEqual([5, 56]);
  });

  it("offers 4 KiB plus the superpages it is given", () => {
    expect(setup(4, 0).cfg.pgsizeBitmap).toBe(SZ_4K);
    expect(setup(4, SZ_2M).cfg.pgsizeBitmap).toBe(SZ_4K | SZ_2M);
    expect(setup(4, 0).mapPages(0, 0, SZ_2M, 1, RW)).toBe("EINVAL");
    expect(setup(4, SZ_2M).mapPages(0, 0, SZ_1G, 1, RW)).toBe("EINVAL");
  });

  it("bad options are bugs of the caller's setup", () => {
    expect(() => setup(3 as 4)).toThrow(ModelBug);
    expect(() => setup(4, SZ_4K)).toThrow(ModelBug);
  });

  it("alloc returns ENOMEM when the allocator has no frame for the root", () => {
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 0x10_0000, size: SZ_4K });
    const opts = { mem, frames, levels: 4, superpages: 0, tlb: null } as const;
    expect(VtdFsPgtable.alloc(opts)).toBeInstanceOf(VtdFsPgtable);
    expect(VtdFsPgtable.alloc(opts)).toBe("ENOMEM");
  });
});

describe("VtdFsPgtable entries (what Linux writes)", () => {
  it("the constants are Linux's: table P|RW|US|A, leaf P|US|A, write adds RW|D", () => {
    expect(FS_TABLE_BITS).toBe(FS_PTE_P | FS_PTE_RW | FS_PTE_US | FS_PTE_A);
    expect(FS_LEAF_BITS).toBe(FS_PTE_P | FS_PTE_US | FS_PTE_A);
    expect(FS_LEAF_WRITE_BITS).toBe(FS_PTE_RW | FS_PTE_D);
  });

  it("a read-only 4 KiB leaf is P|US|A plus the page address", () => {
    const t = setup();
    t.mapPages(0x1234_5000, 0xa_bcde_f000, SZ_4K, 1, IOMMU_READ);
    expect(entryAt(t, 0x1234_5000, 1)).toEqual([(0xbcde_f000 | 0x25) >>> 0, 0xa]);
  });

  it("a writable leaf adds R/W and D; a write-only one is the same (P makes it readable)", () => {
    const t = setup();
    t.mapPages(0x1000, 0x5000, SZ_4K, 1, RW);
    t.mapPages(0x2000, 0x5000, SZ_4K, 1, IOMMU_WRITE);
    expect(entryAt(t, 0x1000, 1)).toEqual([0x5067, 0]);
    expect(entryAt(t, 0x2000, 1)).toEqual([0x5067, 0]);
    expect(pgtableProtOf(t, 0x2000)).toBe(RW);
  });

  it("IOMMU_NOEXEC sets no XD, and IOMMU_PRIV and IOMMU_CACHE set nothing", () => {
    const t = setup();
    t.mapPages(0x1000, 0x5000, SZ_4K, 1, IOMMU_READ | IOMMU_NOEXEC | IOMMU_PRIV | IOMMU_CACHE);
    expect(entryAt(t, 0x1000, 1)).toEqual([0x5025, 0]);
  });

  it("a table entry is P|R/W|U/S|A plus the next table's address, never XD", () => {
    const t = setup();
    t.mapPages(0x1234_5000, 0, SZ_4K, 1, IOMMU_READ);
    for (let level = 4; level >= 2; level--) {
      const [lo, hi] = entryAt(t, 0x1234_5000, level);
      expect(lo & 0xfff, `level ${level}`).toBe(0x27);
      expect(hi).toBe(0);
      expect(fsPteKind(lo, hi, level)).toBe(VTD_PTE_TABLE);
    }
  });

  it("PS marks 2 MiB leaves in a PDE and 1 GiB leaves in a PDPE", () => {
    const t = setup();
    t.mapPages(SZ_1G, 0x8000_0000, SZ_1G, 1, IOMMU_READ);
    t.mapPages(4 * SZ_1G, SZ_2M, SZ_2M, 1, RW);
    expect(entryAt(t, SZ_1G, 3)).toEqual([(0x8000_0000 | FS_PTE_PS | 0x25) >>> 0, 0]);
    expect(entryAt(t, 4 * SZ_1G, 2)).toEqual([SZ_2M | FS_PTE_PS | 0x67, 0]);
    expect(fsPteKind(...entryAt(t, SZ_1G, 3), 3)).toBe(VTD_PTE_LEAF);
    expect(t.iovaToPhys(4 * SZ_1G + 0x1234)).toBe(SZ_2M + 0x1234);
  });
});

describe("VtdFsPgtable address ranges", () => {
  it("maps the top of the lower half; 2^47 (upper half) returns ERANGE", () => {
    const t = setup(4);
    const top = 2 ** 47 - SZ_4K;
    expect(t.mapPages(top, 0x7000, SZ_4K, 1, RW)).toBe(0);
    expect(vtdLevelIndex(top, 4)).toBe(255);
    expect(entryAt(t, top, 4)[0] & 0xfff).toBe(0x27);
    expect(t.iovaToPhys(top + 0xabc)).toBe(0x7abc);
    expect(t.mapPages(2 ** 47, 0, SZ_4K, 1, RW)).toBe("ERANGE");
    expect(t.iovaToPhys(2 ** 47)).toBe(-1);
    expect(t.mapPages(2 ** 48 - SZ_4K, 0, SZ_4K, 1, RW)).toBe("ERANGE");
  });

  it("5-level maps and translates at the top of the 56-bit lower half", () => {
    const t = setup(5);
    const top4k = 2 ** 56 - SZ_4K;
    const top1g = 2 ** 56 - 2 * SZ_1G;
    expect(t.mapPages(top4k, 0xf_ffff_f000, SZ_4K, 1, RW)).toBe(0);
    expect(t.mapPages(top1g, SZ_1G, SZ_1G, 1, RW)).toBe(0);
    expect(vtdLevelIndex(top4k, 5)).toBe(255);
    expect(t.iovaToPhys(top4k)).toBe(0xf_ffff_f000);
    expect(t.iovaToPhys(top1g + SZ_2M)).toBe(SZ_1G + SZ_2M);
    expect(t.mapPages(2 ** 56, 0, SZ_4K, 1, RW)).toBe("ERANGE");
    expect(t.unmapPages(top4k, SZ_4K, 1, null)).toBe(SZ_4K);
    expect(t.iovaToPhys(top4k)).toBe(-1);
  });

  it("free() gives back every table frame", () => {
    const t = setup(5);
    t.mapPages(0, 0, SZ_4K, 700, RW);
    t.mapPages(2 ** 55, 0, SZ_2M, 2, RW);
    expect(t.frames.liveFrames).toBeGreaterThan(1);
    t.free();
    expect(t.frames.liveFrames).toBe(0);
  });
});
