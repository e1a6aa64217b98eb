import {
  IOMMU_CACHE,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  IommuIotlbGather,
} from "@iommu-sim/iommu-core";
import { FrameAllocator, ModelBug, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { RecordingFlushOps } from "@iommu-sim/iommu-core/testing/conformance";
import { describe, expect, it } from "vitest";
import {
  SS_PTE_PS,
  SS_PTE_R,
  SS_PTE_SNP,
  SS_PTE_W,
  ssPteKind,
  VTD_PTE_BAD,
  vtdLevelIndex,
} from "../format/second-stage-pte.js";
import {
  pgtableProtOf,
  ssAgawToLevels,
  ssAgawToWidth,
  VTD_SUPERPAGES,
  VtdSsPgtable,
  type VtdSsPgtableOptions,
} from "./second-stage.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const SZ_4K = 0x1000;
const SZ_2M = 0x20_0000;
const SZ_1G = 0x4000_0000;

function setup(
  options: Partial<VtdSsPgtableOptions> = {},
  basePa = 0x100_0000,
): { t: VtdSsPgtable; mem: PhysMemory; frames: FrameAllocator; flush: RecordingFlushOps } {
  const mem = new PhysMemory();
  const frames = new FrameAllocator(mem, { basePa, size: 0x100_0000 });
  const flush = new RecordingFlushOps();
  const t = new VtdSsPgtable({
    mem,
    frames,
    agaw: 2,
    superpages: VTD_SUPERPAGES,
    tlb: flush,
    ...options,
  });
  return { t, mem, frames, flush };
}

/** The entry at `level` on the walk to `iova`, as [lo, hi]; [0, 0] past a missing table. */
function entryAt(t: VtdSsPgtable, iova: number, level: number): [number, number] {
  let tpa = t.rootPa;
  for (let l = t.levels; l >= level; l--) {
    const lo = t.mem.read64(tpa + vtdLevelIndex(iova, l) * 8);
    const hi = t.mem.hi;
    if (l === level) return [lo, hi];
    if ((lo & 3) === 0) return [0, 0];
    tpa = (hi & 0xfffff) * 2 ** 32 + ((lo & 0xfffff000) >>> 0);
  }
  return [0, 0];
}

describe("VtdSsPgtable geometry", () => {
  it("agaw 1, 2, 3 give 3, 4, 5 levels and 39, 48, 57 input bits", () => {
    for (const agaw of [1, 2, 3] as const) {
      const { t } = setup({ agaw });
      expect([t.levels, t.cfg.ias, t.agaw]).toEqual([agaw + 2, 30 + 9 * agaw, agaw]);
      expect([ssAgawToLevels(agaw), ssAgawToWidth(agaw)]).toEqual([agaw + 2, 30 + 9 * agaw]);
      t.free();
    }
  });

  it("offers 4 KiB plus the superpages it is given, and oas 52 unless told", () => {
    expect(setup({ superpages: 0 }).t.cfg.pgsizeBitmap).toBe(SZ_4K);
    expect(setup({ superpages: SZ_2M }).t.cfg.pgsizeBitmap).toBe(SZ_4K | SZ_2M);
    expect(setup().t.cfg.pgsizeBitmap).toBe(SZ_4K | SZ_2M | SZ_1G);
    expect(setup().t.cfg.oas).toBe(52);
    expect(setup({ oas: 40 }).t.cfg.oas).toBe(40);
  });

  it("a superpage size it was not given returns EINVAL", () => {
    const { t } = setup({ superpages: SZ_2M });
    expect(t.mapPages(0, 0, SZ_1G, 1, RW)).toBe("EINVAL");
    expect(t.mapPages(0, 0, SZ_2M, 1, RW)).toBe(0);
  });

  it("bad options are bugs of the caller's setup", () => {
    expect(() => setup({ agaw: 4 as 1 })).toThrow(ModelBug);
    expect(() => setup({ superpages: SZ_4K })).toThrow(ModelBug);
    expect(() => setup({ oas: 53 })).toThrow(ModelBug);
  });

  it("alloc returns ENOMEM when the allocator has no frame for the root", () => {
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 0x10_0000, size: SZ_4K });
    const opts = { mem, frames, agaw: 2, superpages: 0, tlb: null } as const;
    const t = VtdSsPgtable.alloc(opts);
    expect(t).toBeInstanceOf(VtdSsPgtable);
    expect(VtdSsPgtable.alloc(opts)).toBe("ENOMEM");
  });
});

describe("VtdSsPgtable entries (what Linux writes)", () => {
  it("a 4 KiB leaf is the page address with R|W and nothing else", () => {
    const { t } = setup();
    expect(t.mapPages(0x1234_5000, 0xa_bcde_f000, SZ_4K, 1, RW)).toBe(0);
    expect(entryAt(t, 0x1234_5000, 1)).toEqual([(0xbcde_f000 | 3) >>> 0, 0xa]);
  });

  it("R and W follow IOMMU_READ and IOMMU_WRITE; a write-only leaf has W alone", () => {
    const { t } = setup();
    t.mapPages(0x1000, 0x5000, SZ_4K, 1, IOMMU_READ);
    t.mapPages(0x2000, 0x5000, SZ_4K, 1, IOMMU_WRITE);
    expect(entryAt(t, 0x1000, 1)).toEqual([0x5000 | SS_PTE_R, 0]);
    expect(entryAt(t, 0x2000, 1)).toEqual([0x5000 | SS_PTE_W, 0]);
    expect(pgtableProtOf(t, 0x1000)).toBe(IOMMU_READ);
    expect(pgtableProtOf(t, 0x2000)).toBe(IOMMU_WRITE);
  });

  it("IOMMU_NOEXEC, IOMMU_PRIV and IOMMU_CACHE set no bit (X, EMT, IPAT, TM stay 0)", () => {
    const { t } = setup();
    t.mapPages(0x1000, 0x5000, SZ_4K, 1, RW | IOMMU_NOEXEC | IOMMU_PRIV | IOMMU_CACHE);
    expect(entryAt(t, 0x1000, 1)).toEqual([0x5003, 0]);
  });

  it("a table entry is R|W plus the next table's address", () => {
    const { t, frames } = setup();
    t.mapPages(0x1234_5000, 0, SZ_4K, 1, RW);
    for (let level = 4; level >= 2; level--) {
      const [lo, hi] = entryAt(t, 0x1234_5000, level);
      expect(lo & 0xfff, `level ${level} flags`).toBe(3);
      expect(hi).toBe(0);
      const pa = (lo & 0xfffff000) >>> 0;
      expect(pa >= frames.basePa && pa < frames.basePa + 0x100_0000).toBe(true);
    }
  });

  it("PS is set on 2 MiB leaves at level 2 and 1 GiB leaves at level 3 only", () => {
    const { t } = setup();
    t.mapPages(SZ_1G, 0x8000_0000, SZ_1G, 1, RW);
    t.mapPages(4 * SZ_1G, 0x20_0000, SZ_2M, 1, IOMMU_READ);
    t.mapPages(8 * SZ_1G, 0x1000, SZ_4K, 1, RW);
    expect(entryAt(t, SZ_1G, 3)).toEqual([(0x8000_0000 | SS_PTE_PS | 3) >>> 0, 0]);
    expect(entryAt(t, 4 * SZ_1G, 2)).toEqual([0x20_0000 | SS_PTE_PS | SS_PTE_R, 0]);
    expect(entryAt(t, 4 * SZ_1G, 3)[0] & SS_PTE_PS).toBe(0);
    expect(entryAt(t, 8 * SZ_1G, 1)).toEqual([0x1003, 0]);
    expect(entryAt(t, 8 * SZ_1G, 2)[0] & SS_PTE_PS).toBe(0);
  });

  it("forceSnoop sets SNP on every leaf whatever the prot, and never on table entries", () => {
    const { t } = setup({ forceSnoop: true });
    expect(t.forceSnoop).toBe(true);
    t.mapPages(0x1000, 0x5000, SZ_4K, 1, IOMMU_READ);
    t.mapPages(SZ_2M, SZ_2M, SZ_2M, 1, RW | IOMMU_CACHE);
    expect(entryAt(t, 0x1000, 1)).toEqual([0x5000 | SS_PTE_SNP | SS_PTE_R, 0]);
    expect(entryAt(t, SZ_2M, 2)).toEqual([SZ_2M | SS_PTE_SNP | SS_PTE_PS | 3, 0]);
    expect(entryAt(t, 0x1000, 2)[0] & SS_PTE_SNP).toBe(0);
    expect(entryAt(t, 0x1000, 3)[0] & SS_PTE_SNP).toBe(0);
  });

  it("without forceSnoop no leaf has SNP, even with IOMMU_CACHE", () => {
    const { t } = setup();
    t.mapPages(0x1000, 0x5000, SZ_4K, 1, RW | IOMMU_CACHE);
    expect(entryAt(t, 0x1000, 1)[0] & SS_PTE_SNP).toBe(0);
  });

  it("setForceSnoop changes the leaves mapped afterwards only", () => {
    const { t } = setup();
    t.mapPages(0x1000, 0x5000, SZ_4K, 1, RW);
    t.setForceSnoop(true);
    t.mapPages(0x2000, 0x6000, SZ_4K, 1, RW);
    expect(entryAt(t, 0x1000, 1)[0] & SS_PTE_SNP).toBe(0);
    expect(entryAt(t, 0x2000, 1)[0] & SS_PTE_SNP).toBe(SS_PTE_SNP);
    t.setForceSnoop(false);
    expect(t.forceSnoop).toBe(false);
    t.mapPages(0x3000, 0x6000, SZ_4K, 1, RW);
    expect(entryAt(t, 0x3000, 1)[0] & SS_PTE_SNP).toBe(0);
  });

  it("every store is one 64-bit write of an entry the hardware can use", () => {
    const { t, mem } = setup();
    const bad: string[] = [];
    mem.onWrite = (pa, bytes) => {
      if (bytes !== 8) bad.push(`${bytes}-byte store at 0x${pa.toString(16)}`);
    };
    t.mapPages(0, 0, SZ_4K, 600, RW);
    t.mapPages(SZ_1G, 0, SZ_2M, 3, RW);
    t.mapPages(4 * SZ_1G, 0, SZ_1G, 1, RW);
    t.unmapPages(0, SZ_4K, 600, null);
    mem.onWrite = null;
    expect(bad).toEqual([]);
    for (const [iova, level] of [
      [0, 1],
      [SZ_1G, 2],
      [4 * SZ_1G, 3],
    ]) {
      const [lo, hi] = entryAt(t, iova, level);
      expect(ssPteKind(lo, hi, level)).not.toBe(VTD_PTE_BAD);
    }
  });
});

describe("VtdSsPgtable address ranges", () => {
  it("maps and translates at the top of a 57-bit space (agaw 3)", () => {
    const { t } = setup({ agaw: 3 });
    const top4k = 2 ** 57 - SZ_4K;
    const top1g = 2 ** 57 - 2 * SZ_1G;
    expect(t.mapPages(top4k, 0xf_ffff_f000, SZ_4K, 1, RW)).toBe(0);
    expect(t.mapPages(top1g, 0x4000_0000, SZ_1G, 1, IOMMU_WRITE)).toBe(0);
    expect(t.iovaToPhys(top4k)).toBe(0xf_ffff_f000);
    expect(t.iovaToPhys(top1g)).toBe(0x4000_0000);
    expect(t.iovaToPhys(top1g + SZ_1G / 2)).toBe(0x6000_0000);
    expect(t.iovaToPhys(top4k - SZ_4K)).toBe(-1);
    expect(entryAt(t, top4k, 5)[0] & 3).toBe(3);
    expect(vtdLevelIndex(top4k, 5)).toBe(511);
    expect(pgtableProtOf(t, top1g)).toBe(IOMMU_WRITE);
    expect(t.unmapPages(top4k, SZ_4K, 1, null)).toBe(SZ_4K);
    expect(t.unmapPages(top1g, SZ_1G, 1, null)).toBe(SZ_1G);
    expect(t.iovaToPhys(top4k)).toBe(-1);
  });

  it("an iova at or past 2^ias or a pa past 2^oas returns ERANGE", () => {
    for (const agaw of [1, 2, 3] as const) {
      const { t } = setup({ agaw });
      const limit = 2 ** (30 + 9 * agaw);
      expect(t.mapPages(limit, 0, SZ_4K, 1, RW), `agaw ${agaw}`).toBe("ERANGE");
      expect(t.mapPages(limit - SZ_4K, 0, SZ_4K, 2, RW)).toBe("ERANGE");
      expect(t.mapPages(limit - SZ_4K, 0, SZ_4K, 1, RW)).toBe(0);
      expect(t.iovaToPhys(limit)).toBe(-1);
      expect(t.unmapPages(limit, SZ_4K, 1, null)).toBe(0);
    }
    const { t } = setup({ oas: 40 });
    expect(t.mapPages(0, 2 ** 40, SZ_4K, 1, RW)).toBe("ERANGE");
    expect(t.mapPages(0, 2 ** 40 - SZ_4K, SZ_4K, 1, RW)).toBe(0);
  });

  it("works the same with tables above 4 GiB (the checked paths)", () => {
    const { t, frames } = setup({}, 0x1_0000_0000);
    expect(frames.basePa).toBe(0x1_0000_0000);
    expect(t.mapPages(0x4000_0000, 0x1000, SZ_4K, 3, RW)).toBe(0);
    expect(t.mapPages(0x80_0000_0000, SZ_2M, SZ_2M, 1, IOMMU_READ)).toBe(0);
    expect(entryAt(t, 0x4000_0000, 2)[1]).toBe(1);
    expect(t.iovaToPhys(0x4000_2abc)).toBe(0x3abc);
    expect(t.iovaToPhys(0x80_0012_3456)).toBe(0x32_3456);
    expect(t.mapPages(0x4000_1000, 0, SZ_4K, 1, RW)).toBe("EEXIST");
    expect(t.unmapPages(0x4000_0000, SZ_4K, 3, null)).toBe(3 * SZ_4K);
    expect(t.iovaToPhys(0x4000_2abc)).toBe(-1);
    t.free();
    expect(frames.liveFrames).toBe(0);
  });

  it("works the same under a memory fault hook that refuses nothing", () => {
    const { t, mem } = setup();
    let reads = 0;
    mem.faultHook = (_pa, _bytes, write) => {
      if (!write) reads++;
      return false;
    };
    expect(t.mapPages(0x20_0000, 0x7000, SZ_4K, 1, RW)).toBe(0);
    expect(t.iovaToPhys(0x20_0123)).toBe(0x7123);
    expect(reads).toBeGreaterThan(0);
    expect(t.unmapPages(0x20_0000, SZ_4K, 1, null)).toBe(SZ_4K);
  });
});

describe("VtdSsPgtable table lifetime", () => {
  it("tables emptied by unmap stay until free()", () => {
    const { t, frames } = setup();
    const before = frames.liveFrames;
    t.mapPages(0x1234_5000, 0, SZ_4K, 1, RW);
    const mapped = frames.liveFrames;
    expect(mapped - before).toBe(3);
    expect(t.unmapPages(0x1234_5000, SZ_4K, 1, null)).toBe(SZ_4K);
    expect(frames.liveFrames).toBe(mapped);
    t.free();
    expect(frames.liveFrames).toBe(0);
  });

  it("a superpage over an emptied table replaces it, flushes its walk and frees it", () => {
    const { t, frames, flush } = setup();
    t.mapPages(SZ_2M + SZ_4K, 0, SZ_4K, 1, RW);
    t.unmapPages(SZ_2M + SZ_4K, SZ_4K, 1, null);
    const live = frames.liveFrames;
    flush.clear();
    expect(t.mapPages(SZ_2M, 0x40_0000, SZ_2M, 1, RW)).toBe(0);
    expect(flush.of("flushWalk")).toEqual([
      { kind: "flushWalk", iova: SZ_2M, size: SZ_2M, granule: SZ_4K },
    ]);
    expect(frames.liveFrames).toBe(live - 1);
    expect(t.iovaToPhys(SZ_2M + 5)).toBe(0x40_0005);
  });

  it("unmapping a 4 KiB page inside a 2 MiB leaf returns 0 and keeps the leaf", () => {
    const { t } = setup();
    t.mapPages(SZ_2M, 0, SZ_2M, 1, RW);
    expect(t.unmapPages(SZ_2M + SZ_4K, SZ_4K, 1, null)).toBe(0);
    expect(t.unmapPages(SZ_2M + SZ_4K, SZ_4K, 1, new IommuIotlbGather())).toBe(0);
    expect(t.iovaToPhys(SZ_2M + SZ_4K)).toBe(SZ_4K);
  });

  it("unmapping 2 MiB over a table of 4 KiB leaves clears it as one unit", () => {
    const { t, frames, flush } = setup();
    t.mapPages(SZ_2M, 0, SZ_4K, 4, RW);
    const live = frames.liveFrames;
    flush.clear();
    const gather = new IommuIotlbGather();
    expect(t.unmapPages(SZ_2M, SZ_2M, 1, gather)).toBe(SZ_2M);
    expect(frames.liveFrames).toBe(live - 1);
    expect(flush.of("flushWalk").length).toBe(1);
    expect(flush.of("addPage")).toEqual([
      { kind: "addPage", iova: SZ_2M, size: SZ_2M, granule: SZ_2M },
    ]);
    expect(t.iovaToPhys(SZ_2M)).toBe(-1);
  });

  it("a queued gather gets no tlbAddPage (the flush queue invalidates later)", () => {
    const { t, flush } = setup();
    t.mapPages(0, 0, SZ_4K, 2, RW);
    const gather = new IommuIotlbGather();
    gather.queued = true;
    flush.clear();
    expect(t.unmapPages(0, SZ_4K, 2, gather)).toBe(2 * SZ_4K);
    expect(flush.calls).toEqual([]);
  });

  it("map and unmap after free() are bugs; lookups return -1", () => {
    const { t } = setup();
    t.mapPages(0, 0, SZ_4K, 1, RW);
    t.free();
    expect(t.iovaToPhys(0)).toBe(-1);
    expect(pgtableProtOf(t, 0)).toBe(null);
    expect(() => t.mapPages(0, 0, SZ_4K, 1, RW)).toThrow(ModelBug);
    expect(() => t.unmapPages(0, SZ_4K, 1, null)).toThrow(ModelBug);
    expect(() => t.free()).toThrow(ModelBug);
  });

  it("pgtableProtOf is null for a hole and for a table of another format", () => {
    const { t } = setup();
    expect(pgtableProtOf(t, 0)).toBe(null);
    const other = { ...t } as unknown as VtdSsPgtable;
    expect(pgtableProtOf(other, 0)).toBe(null);
  });
});
