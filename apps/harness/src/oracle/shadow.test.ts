// The owner's map the oracle checks against: pages, their access, and the notes an unmap leaves.

import { IOMMU_READ, IOMMU_WRITE } from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { SHADOW_PAGING, ShadowDomain } from "./shadow.js";

const PAGE = 4096;

describe("ShadowDomain", () => {
  it("maps pages to frames with their access, and forgets them at the unmap", () => {
    const s = new ShadowDomain(SHADOW_PAGING, "d");
    s.map(0x10_0000, 0x80_0000, 2 * PAGE, IOMMU_READ | IOMMU_WRITE | 0x10);
    expect(s.lookup(0x100)).toBe(0x800 * 4 + 3);
    expect(s.lookup(0x101)).toBe(0x801 * 4 + 3);
    expect(s.lookup(0x102)).toBe(-1);
    expect(s.mappedPages).toBe(2);
    s.unmap(0x10_1000, PAGE, "unmap(d, 0x101000)", -1, 7);
    expect(s.lookup(0x101)).toBe(-1);
    expect(s.mappedPages).toBe(1);
    expect(s.removal(0x101)).toBe("unmap(d, 0x101000)");
    expect(s.removalMark(0x101)).toBe(7);
    expect(s.removal(0x100)).toBeUndefined();
    expect(s.removalMark(0x100)).toBe(-1);
  });

  it("keeps the note of the last removal when the page is mapped again (a stale entry of the old mapping may answer)", () => {
    const s = new ShadowDomain(SHADOW_PAGING, "d");
    s.map(0, 0x80_0000, PAGE, IOMMU_READ);
    s.unmap(0, PAGE, "first unmap", -1, 3);
    s.map(0, 0x90_0000, PAGE, IOMMU_WRITE);
    expect(s.lookup(0)).toBe(0x900 * 4 + IOMMU_WRITE);
    expect(s.removal(0)).toBe("first unmap");
    expect(s.removalMark(0)).toBe(3);
    s.unmap(0, PAGE, "second unmap", -1, 9);
    expect(s.removal(0)).toBe("second unmap");
    expect(s.removalMark(0)).toBe(9);
  });

  it("a lazy unmap keeps its flush-queue mark until the page is mapped again", () => {
    const s = new ShadowDomain(SHADOW_PAGING, "d");
    s.map(0, 0x80_0000, PAGE, IOMMU_READ);
    s.unmap(0, PAGE, "lazy unmap", 4);
    expect(s.lazyFlushMark(0)).toBe(4);
    s.map(0, 0x80_0000, PAGE, IOMMU_READ);
    expect(s.lazyFlushMark(0)).toBe(-1);
    s.unmap(0, PAGE, "strict unmap", -1);
    expect(s.lazyFlushMark(0)).toBe(-1);
  });

  it("unmapping a page that is not mapped leaves no note", () => {
    const s = new ShadowDomain(SHADOW_PAGING, "d");
    s.unmap(0, PAGE, "nothing", -1, 1);
    expect(s.removal(0)).toBeUndefined();
    expect(s.removalMark(0)).toBe(-1);
  });

  it("grants: write implies read only where the table format says so", () => {
    const s = new ShadowDomain(SHADOW_PAGING, "d");
    s.map(0, 0x80_0000, PAGE, IOMMU_WRITE);
    const e = s.lookup(0);
    expect(s.grants(e)).toBe(IOMMU_WRITE);
    s.writeImpliesRead = true;
    expect(s.grants(e)).toBe(IOMMU_WRITE | IOMMU_READ);
  });
});
