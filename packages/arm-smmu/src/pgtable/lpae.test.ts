import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
} from "@iommu-sim/iommu-core";
import { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import {
  type LpaeGranule,
  LpaePgtable,
  type LpaePgtableOptions,
  lpaeGeometry,
  lpaeLevelShift,
  lpaePgsizeBitmap,
  s2sl0Of,
  tcrPsOf,
  tcrTgOf,
} from "./lpae.js";

const RW = IOMMU_READ | IOMMU_WRITE;

function make(o: Partial<LpaePgtableOptions> = {}): LpaePgtable {
  const mem = new PhysMemory();
  const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x100_0000 });
  return new LpaePgtable({
    mem,
    frames,
    stage: 1,
    granule: 4096,
    ias: 48,
    oas: 48,
    tlb: null,
    ...o,
  });
}

/** The leaf descriptor mapping `iova`, as [lo, hi]. */
function leafOf(t: LpaePgtable, iova: number): [number, number] {
  const g = t.geometry;
  let tpa = t.rootPa;
  for (let l = g.startLevel; l <= 3; l++) {
    const idx =
      Math.floor(iova / 2 ** lpaeLevelShift(t.granule, l)) %
      (l === g.startLevel ? g.pgdEntries : t.granule / 8);
    const lo = t.mem.read64(tpa + idx * 8);
    const hi = t.mem.hi;
    if (l === 3 || (lo & 2) === 0) return [lo >>> 0, hi >>> 0];
    tpa = (hi & 0xffff) * 2 ** 32 + ((lo & 0xffff_f000) >>> 0);
  }
  throw new Error("no leaf");
}

describe("leaf descriptors as Linux writes them", () => {
  it("stage 1 READ|WRITE|CACHE page: AF, ISH, nG, AP[1], AttrIndx 1, type page", () => {
    const t = make();
    expect(t.mapPages(0x4000_0000, 0x1234_5000, 0x1000, 1, RW | IOMMU_CACHE)).toBe(0);
    expect(leafOf(t, 0x4000_0000)).toEqual([0x1234_5f47, 0]);
  });

  it("stage 1 read-only page sets AP[2]", () => {
    const t = make();
    expect(t.mapPages(0, 0x1000, 0x1000, 1, IOMMU_READ | IOMMU_CACHE)).toBe(0);
    expect(leafOf(t, 0)).toEqual([0x1fc7, 0]);
  });

  it("stage 1 IOMMU_PRIV page clears AP[1]; no IOMMU_CACHE gives OSH and AttrIndx 0", () => {
    const t = make();
    expect(t.mapPages(0, 0x1000, 0x1000, 1, RW | IOMMU_PRIV)).toBe(0);
    expect(leafOf(t, 0)).toEqual([0x1e03, 0]);
  });

  it("stage 1 IOMMU_MMIO uses AttrIndx 2 and IOMMU_NOEXEC sets bits 53 and 54", () => {
    const t = make();
    expect(t.mapPages(0, 0, 0x20_0000, 1, RW | IOMMU_MMIO | IOMMU_NOEXEC)).toBe(0);
    expect(leafOf(t, 0)).toEqual([0xe49, 0x0060_0000]);
  });

  it("stage 2 READ|WRITE|CACHE page: S2AP RW, MemAttr 0xF, ISH, AF", () => {
    const t = make({ stage: 2 });
    expect(t.mapPages(0x2000, 0x8000_0000, 0x1000, 1, RW | IOMMU_CACHE)).toBe(0);
    expect(leafOf(t, 0x2000)).toEqual([0x8000_07ff, 0]);
  });

  it("stage 2 read-only MMIO block: S2AP R, MemAttr 0x1, OSH, type block", () => {
    const t = make({ stage: 2 });
    expect(t.mapPages(0x4000_0000, 0x4000_0000, 0x4000_0000, 1, IOMMU_READ | IOMMU_MMIO)).toBe(0);
    expect(leafOf(t, 0x4000_0000)).toEqual([0x4000_0645, 0]);
  });

  it("stage 2 with S2FWB writes MemAttr 0b0110 for cacheable pages; non-cacheable is 0x5", () => {
    const t = make({ stage: 2, quirks: { armS2Fwb: true } });
    expect(t.mapPages(0, 0, 0x1000, 1, RW | IOMMU_CACHE)).toBe(0);
    expect(leafOf(t, 0)[0] & 0x3c).toBe(0x6 << 2);
    expect(t.mapPages(0x1000, 0, 0x1000, 1, RW)).toBe(0);
    expect(leafOf(t, 0x1000)[0] & 0x3c).toBe(0x5 << 2);
  });

  it("ARM_NS sets NS on leaves and NSTable on tables; ARM_HD sets DBM on writable leaves", () => {
    const t = make({ quirks: { armNs: true, armHd: true } });
    expect(t.mapPages(0, 0, 0x1000, 1, RW)).toBe(0);
    expect(t.mapPages(0x1000, 0, 0x1000, 1, IOMMU_READ)).toBe(0);
    expect(leafOf(t, 0)).toEqual([0xe63, 0x0008_0000]);
    expect(leafOf(t, 0x1000)[1]).toBe(0);
    t.mem.read64(t.rootPa);
    expect(t.mem.hi >>> 0).toBe(0x8000_0000);
  });

  it("a 52-bit output address with the 64K granule lands in bits [15:12]", () => {
    const t = make({ granule: 65536, ias: 52, oas: 52 });
    const pa = 0xf_0000_1234_0000;
    expect(t.mapPages(0x10000, pa, 0x10000, 1, RW)).toBe(0);
    const [lo, hi] = leafOf(t, 0x10000);
    expect(lo & 0xf000).toBe(0xf000);
    expect(hi).toBe(0);
    expect(t.iovaToPhys(0x10000 + 0x42)).toBe(pa + 0x42);
    expect(t.cfg.pgsizeBitmap).toBe(0x1_0000 + 0x2000_0000 + 2 ** 42);
  });
});

describe("geometry", () => {
  const cases: [LpaeGranule, number, 1 | 2, number, number, number, number][] = [
    // granule, ias, stage, oas -> startLevel, pgdEntries, concat
    [4096, 48, 1, 48, 0, 512, 1],
    [4096, 39, 1, 48, 1, 512, 1],
    [4096, 32, 1, 32, 1, 4, 1],
    [4096, 40, 2, 40, 1, 1024, 2],
    [4096, 40, 2, 48, 0, 2, 1],
    [4096, 42, 2, 42, 1, 4096, 8],
    [4096, 44, 2, 44, 0, 32, 1],
    [16384, 48, 1, 48, 0, 2, 1],
    [16384, 48, 2, 48, 1, 4096, 2],
    [16384, 40, 2, 40, 2, 32768, 16],
    [16384, 36, 2, 48, 2, 2048, 1],
    [65536, 48, 2, 48, 1, 64, 1],
    [65536, 42, 1, 48, 2, 8192, 1],
    [65536, 52, 1, 52, 1, 1024, 1],
  ];
  for (const [granule, ias, stage, oas, start, entries, concat] of cases) {
    it(`${granule / 1024}K ias ${ias} oas ${oas} stage ${stage}: start level ${start}, ${entries} root entries, ${concat} table(s)`, () => {
      const g = lpaeGeometry(granule, ias, stage, oas);
      if (g === "EINVAL") throw new Error("EINVAL");
      expect([g.startLevel, g.pgdEntries, g.concat, g.levels]).toEqual([
        start,
        entries,
        concat,
        4 - start,
      ]);
    });
  }

  it("stage-2 'possible' concatenation (Linux before 6.14) joins any <= 16-entry level-0 root", () => {
    const g = lpaeGeometry(4096, 40, 2, 48, "possible");
    expect(g !== "EINVAL" && [g.startLevel, g.concat]).toEqual([1, 2]);
    const h = lpaeGeometry(4096, 44, 2, 48, "possible");
    expect(h !== "EINVAL" && [h.startLevel, h.concat]).toEqual([0, 1]);
  });

  it("a mandatory concatenation of more than 16 tables, or ias/oas out of range, is EINVAL", () => {
    expect(lpaeGeometry(4096, 44, 2, 42)).toBe("EINVAL");
    expect(lpaeGeometry(4096, 49, 1, 48)).toBe("EINVAL");
    expect(lpaeGeometry(16384, 48, 1, 52)).toBe("EINVAL");
    expect(lpaeGeometry(65536, 53, 1, 52)).toBe("EINVAL");
    expect(lpaeGeometry(4096, 12, 1, 48)).toBe("EINVAL");
    expect(lpaeGeometry(8192 as LpaeGranule, 40, 1, 48)).toBe("EINVAL");
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 0x10_0000, size: 0x1000 });
    const opts = { mem, frames, stage: 2 as const, granule: 4096 as const, oas: 42, tlb: null };
    expect(LpaePgtable.alloc({ ...opts, ias: 44 })).toBe("EINVAL");
    expect(LpaePgtable.alloc({ ...opts, ias: 42 })).toBe("ENOMEM");
  });

  it("SL0, TG0/TG1 and PS encodings follow VTCR/TCR", () => {
    const sl0 = (g: LpaeGranule, ias: number, oas: number) => {
      const geo = lpaeGeometry(g, ias, 2, oas);
      if (geo === "EINVAL") throw new Error("EINVAL");
      return s2sl0Of(geo);
    };
    expect([sl0(4096, 48, 48), sl0(4096, 40, 40), sl0(4096, 32, 32)]).toEqual([2, 1, 1]);
    expect([sl0(4096, 30, 32)]).toEqual([0]);
    expect([
      sl0(16384, 48, 48),
      sl0(16384, 40, 40),
      sl0(65536, 48, 48),
      sl0(65536, 42, 42),
    ]).toEqual([2, 1, 2, 1]);
    expect([tcrTgOf(4096, 0), tcrTgOf(65536, 0), tcrTgOf(16384, 0)]).toEqual([0, 1, 2]);
    expect([tcrTgOf(16384, 1), tcrTgOf(4096, 1), tcrTgOf(65536, 1)]).toEqual([1, 2, 3]);
    expect([32, 36, 40, 42, 44, 48, 52, 39].map(tcrPsOf)).toEqual([0, 1, 2, 3, 4, 5, 6, "EINVAL"]);
  });

  it("page sizes per granule: 4K|2M|1G, 16K|32M, 64K|512M (+4T with oas 52)", () => {
    expect(lpaePgsizeBitmap(4096)).toBe(0x4020_1000);
    expect(lpaePgsizeBitmap(16384)).toBe(0x200_4000);
    expect(lpaePgsizeBitmap(65536, 48)).toBe(0x2001_0000);
    expect(make({ granule: 16384 }).cfg.pgsizeBitmap).toBe(0x200_4000);
    expect(make({ granule: 65536 }).cfg.pgsizeBitmap).toBe(0x2001_0000);
  });
});

describe("range and errors", () => {
  it("an iova at or above 2^ias returns ERANGE and translates to -1", () => {
    const t = make({ ias: 39 });
    expect(t.mapPages(2 ** 39, 0, 0x1000, 1, RW)).toBe("ERANGE");
    expect(t.mapPages(2 ** 39 - 0x1000, 0, 0x1000, 2, RW)).toBe("ERANGE");
    expect(t.mapPages(0, 2 ** 48, 0x1000, 1, RW)).toBe("ERANGE");
    expect(t.iovaToPhys(2 ** 39)).toBe(-1);
    expect(t.unmapPages(2 ** 39, 0x1000, 1, null)).toBe(0);
  });

  it("unmapping part of a block returns 0 and leaves the block whole (Linux >= 6.13)", () => {
    const t = make();
    expect(t.mapPages(0x20_0000, 0x40_0000, 0x20_0000, 1, RW)).toBe(0);
    expect(t.unmapPages(0x20_1000, 0x1000, 1, null)).toBe(0);
    expect(t.iovaToPhys(0x20_1234)).toBe(0x40_1234);
  });
});

describe("contiguous hint", () => {
  it("is set only on aligned groups a single call fills, and never without the option", () => {
    const t = make({ contiguous: true });
    expect(t.mapPages(0x1_0000, 0x10_0000, 0x1000, 40, RW)).toBe(0);
    // 0x10000.. is 16-page aligned: pages 0..31 form two full groups, 32..39 a partial one.
    expect(leafOf(t, 0x1_0000)[1]).toBe(1 << 20);
    expect(leafOf(t, 0x1_0000 + 31 * 0x1000)[1]).toBe(1 << 20);
    expect(leafOf(t, 0x1_0000 + 32 * 0x1000)[1]).toBe(0);
    const plain = make();
    expect(plain.mapPages(0x1_0000, 0x10_0000, 0x1000, 16, RW)).toBe(0);
    expect(leafOf(plain, 0x1_0000)[1]).toBe(0);
  });

  it("is not set when the output is not aligned to the group", () => {
    const t = make({ contiguous: true });
    expect(t.mapPages(0x1_0000, 0x10_1000, 0x1000, 16, RW)).toBe(0);
    expect(leafOf(t, 0x1_0000)[1]).toBe(0);
  });

  it("unmap of part of a contiguous group returns 0; of the whole group succeeds", () => {
    const t = make({ contiguous: true });
    expect(t.mapPages(0x1_0000, 0x10_0000, 0x1000, 16, RW)).toBe(0);
    expect(t.unmapPages(0x1_1000, 0x1000, 1, null)).toBe(0);
    expect(t.unmapPages(0x1_0000, 0x1000, 8, null)).toBe(0);
    expect(t.iovaToPhys(0x1_1000)).toBe(0x10_1000);
    expect(t.unmapPages(0x1_0000, 0x1000, 16, null)).toBe(0x1_0000);
    expect(t.iovaToPhys(0x1_1000)).toBe(-1);
  });

  it("a clash inside a run leaves no partial group flagged", () => {
    const t = make({ contiguous: true });
    expect(t.mapPages(0x1_4000, 0, 0x1000, 1, RW)).toBe(0);
    expect(t.mapPages(0x1_0000, 0x10_0000, 0x1000, 16, RW)).toBe("EEXIST");
    expect(t.mapped).toBe(0x4000);
    expect(leafOf(t, 0x1_0000)[1]).toBe(0);
  });
});

describe("accessors", () => {
  it("ttbr, startLevel and concatenated describe the root; free returns every frame", () => {
    const t = make({ stage: 2, ias: 40, oas: 40 });
    expect([t.ttbr === t.rootPa, t.startLevel, t.concatenated, t.levels]).toEqual([true, 1, 2, 3]);
    expect(t.frames.isAllocated(t.ttbr)).toBe(true);
    expect(t.mapPages(2 ** 40 - 0x4000_0000, 0, 0x4000_0000, 1, RW)).toBe(0);
    expect(t.iovaToPhys(2 ** 40 - 1)).toBe(0x3fff_ffff);
    t.free();
    expect(t.frames.liveFrames).toBe(0);
    expect(t.iovaToPhys(0)).toBe(-1);
  });
});
