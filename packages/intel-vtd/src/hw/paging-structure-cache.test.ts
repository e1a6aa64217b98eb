import { fc, test } from "@fast-check/vitest";
import { ModelBug } from "@iommu-sim/iommu-core/platform";
import { describe, expect } from "vitest";
import {
  VTD_KIND_FIRST_STAGE,
  VTD_KIND_NESTED,
  VTD_KIND_PASS_THROUGH,
  VTD_KIND_SECOND_STAGE,
  VTD_PASID_NONE,
  VTD_PERM_R,
  VTD_PERM_W,
  type VtdTranslationKind,
} from "./iotlb.js";
import { VtdPagingStructureCache } from "./paging-structure-cache.js";

const RW = VTD_PERM_R | VTD_PERM_W;
const FS = VTD_KIND_FIRST_STAGE;
const SL = VTD_KIND_SECOND_STAGE;
const NE = VTD_KIND_NESTED;

describe("VtdPagingStructureCache: lookupDeepest and insert", () => {
  test("the deepest cached level on the path wins, with its table and permissions", () => {
    const c = new VtdPagingStructureCache(4);
    const vpn = 0x12345;
    c.insert(1, 7, FS, 4, vpn, 0x100, RW);
    c.insert(1, 7, FS, 2, vpn, 0x300, VTD_PERM_R);
    c.insert(1, 7, FS, 3, vpn, 0x200, RW);
    const i = c.lookupDeepest(1, 7, FS, vpn);
    expect([c.levelOf(i), c.tableFrameOf(i), c.permOf(i)]).toEqual([2, 0x300, VTD_PERM_R]);
    // another 2-MiB region under the same PDPE: the level-3 entry is the deepest
    const j = c.lookupDeepest(1, 7, FS, vpn + 512);
    expect([c.levelOf(j), c.tableFrameOf(j)]).toEqual([3, 0x200]);
    expect(c.lookupDeepest(1, 7, FS, vpn + 512 ** 3)).toBe(-1);
    expect([c.hits, c.misses]).toEqual([2, 1]);
  });

  test("DID, PASID and kind are part of the key", () => {
    const c = new VtdPagingStructureCache(4);
    c.insert(1, 7, FS, 2, 0, 0x100, RW);
    expect(c.lookupDeepest(2, 7, FS, 0)).toBe(-1);
    expect(c.lookupDeepest(1, 8, FS, 0)).toBe(-1);
    expect(c.lookupDeepest(1, 7, NE, 0)).toBe(-1);
  });

  test("second-stage entries are shared by all PASIDs of a DID", () => {
    const c = new VtdPagingStructureCache(4);
    c.insert(1, 7, SL, 3, 0, 0x100, RW);
    expect(c.lookupDeepest(1, 9, SL, 0)).toBeGreaterThanOrEqual(0);
    expect(c.entries()[0]?.pasid).toBe(VTD_PASID_NONE);
  });

  test("57-bit page numbers reach level 5", () => {
    const c = new VtdPagingStructureCache(2);
    const vpn = 2 ** 44 + 5;
    c.insert(1, 1, FS, 5, vpn, 0x10, RW);
    expect(c.lookupDeepest(1, 1, FS, 5)).toBe(-1);
    expect(c.levelOf(c.lookupDeepest(1, 1, FS, vpn))).toBe(5);
  });

  test("capacity 0 misses and drops inserts; bad levels and pass-through are model bugs", () => {
    const c = new VtdPagingStructureCache(0);
    c.insert(1, 1, FS, 2, 0, 1, RW);
    expect([c.lookupDeepest(1, 1, FS, 0), c.size(), c.inserts, c.misses]).toEqual([-1, 0, 1, 1]);
    expect(() => c.insert(1, 1, FS, 1, 0, 1, RW)).toThrow(ModelBug);
    expect(() => c.insert(1, 1, FS, 6, 0, 1, RW)).toThrow(ModelBug);
    expect(() => c.insert(1, 1, VTD_KIND_PASS_THROUGH, 2, 0, 1, RW)).toThrow(ModelBug);
    expect(() => new VtdPagingStructureCache(-1)).toThrow(ModelBug);
  });

  test.prop(
    [
      fc.integer({ min: 1, max: 4 }),
      fc.array(
        fc.record({
          insert: fc.boolean(),
          did: fc.integer({ min: 0, max: 1 }),
          level: fc.integer({ min: 2, max: 4 }),
          vpn: fc.integer({ min: 0, max: 512 ** 3 * 2 }),
        }),
        { maxLength: 200 },
      ),
    ],
    { seed: 0x95c, numRuns: 300 },
  )("agrees with a Map-and-LRU-list reference", (cap, ops) => {
    const c = new VtdPagingStructureCache(cap);
    const ref: { key: string; level: number; frame: number }[] = [];
    let f = 0;
    for (const o of ops) {
      const tagOf = (l: number) => `${o.did}/${l}/${Math.floor(o.vpn / 512 ** (l - 1))}`;
      if (o.insert) {
        f++;
        const at = ref.findIndex((e) => e.key === tagOf(o.level));
        if (at >= 0) ref.splice(at, 1);
        else if (ref.length === cap) ref.shift();
        ref.push({ key: tagOf(o.level), level: o.level, frame: f });
        c.insert(o.did, 3, FS, o.level, o.vpn, f, RW);
      } else {
        let best = -1;
        for (let l = 2; l <= 5 && best < 0; l++) best = ref.findIndex((e) => e.key === tagOf(l));
        const i = c.lookupDeepest(o.did, 3, FS, o.vpn);
        expect(i < 0 ? -1 : c.tableFrameOf(i)).toBe(best < 0 ? -1 : ref[best]?.frame);
        if (best >= 0) ref.push(...ref.splice(best, 1));
      }
      expect(c.size()).toBe(ref.length);
    }
  });
});

/** For DIDs 1, 2 and PASIDs 7, 8: FS, nested and SL PDEs for 2-MiB regions 0 and 1 (PASID = base + 16*kind). */
const P = (base: number, kind: VtdTranslationKind) => base + 16 * kind;
function filled(): VtdPagingStructureCache {
  const c = new VtdPagingStructureCache(64);
  for (const did of [1, 2])
    for (const base of [7, 8])
      for (const kind of [FS, NE, SL] as VtdTranslationKind[])
        for (const vpn of [0, 512]) c.insert(did, P(base, kind), kind, 2, vpn, vpn + 1, RW);
  return c;
}
const has = (
  c: VtdPagingStructureCache,
  did: number,
  base: number,
  kind: VtdTranslationKind,
  vpn: number,
) =>
  c
    .entries()
    .some(
      (e) =>
        e.did === did &&
        e.kind === kind &&
        e.tag === vpn / 512 &&
        (kind === SL || e.pasid === P(base, kind)),
    );

describe("VtdPagingStructureCache invalidation", () => {
  test("the fixture holds FS/nested per PASID and SL per DID", () => {
    expect(filled().size()).toBe(2 * 2 * 2 * 2 + 2 * 2);
  });

  test("global removes everything", () => {
    const c = filled();
    expect(c.invalidateAll()).toBe(20);
    expect(c.size()).toBe(0);
  });

  test("domain-selective removes every kind of its DID, keeps other DIDs", () => {
    const c = filled();
    expect(c.invalidateDomain(1)).toBe(10);
    for (const kind of [FS, NE, SL] as VtdTranslationKind[]) {
      expect(has(c, 1, 7, kind, 0)).toBe(false);
      expect(has(c, 2, 7, kind, 0)).toBe(true);
    }
  });

  test("type 2 page-selective with IH=1 keeps every paging-structure entry", () => {
    const c = filled();
    expect(c.invalidatePages(1, 0, 0, true)).toBe(0);
  });

  test("type 2 page-selective with IH=0 removes overlapping SL and all FS/nested of the DID", () => {
    const c = filled();
    expect(c.invalidatePages(1, 5, 0, false)).toBe(1 + 8);
    expect(has(c, 1, 7, SL, 0)).toBe(false);
    expect(has(c, 1, 7, SL, 512)).toBe(true);
    expect(has(c, 1, 7, FS, 512)).toBe(false);
    expect(has(c, 1, 8, NE, 512)).toBe(false);
    expect(has(c, 2, 7, SL, 0)).toBe(true);
    expect(has(c, 2, 7, FS, 0)).toBe(true);
  });

  test("an upper-level entry overlaps any range inside its reach", () => {
    const c = new VtdPagingStructureCache(4);
    c.insert(1, 0, SL, 4, 0, 1, RW);
    expect(c.invalidatePages(1, 512 ** 3 - 1, 0, false)).toBe(1);
  });

  test("type 6 PASID-selective removes FS/nested of (DID, PASID) and keeps SL and other PASIDs", () => {
    const c = filled();
    expect(c.invalidatePasid(1, P(7, FS))).toBe(2);
    expect(c.invalidatePasid(1, P(7, NE))).toBe(2);
    expect(c.invalidatePasid(1, P(7, SL))).toBe(0);
    expect(c.invalidatePasid(1, VTD_PASID_NONE)).toBe(0);
    expect(has(c, 1, 7, FS, 0)).toBe(false);
    expect(has(c, 1, 8, FS, 0)).toBe(true);
    expect(has(c, 2, 7, FS, 0)).toBe(true);
    expect(has(c, 1, 7, SL, 0)).toBe(true);
  });

  test("type 6 page-selective removes overlapping FS/nested of (DID, PASID) unless IH=1", () => {
    const c = filled();
    expect(c.invalidatePasidPages(1, P(7, FS), 0, 0, true)).toBe(0);
    expect(c.invalidatePasidPages(1, P(7, FS), 0, 0, false)).toBe(1);
    expect(has(c, 1, 7, FS, 0)).toBe(false);
    expect(has(c, 1, 7, FS, 512)).toBe(true);
    expect(has(c, 1, 8, FS, 0)).toBe(true);
    expect(c.invalidatePasidPages(1, P(7, NE), 0, 10, false)).toBe(2);
    expect(c.invalidatePasidPages(1, P(7, SL), 0, 10, false)).toBe(0);
  });

  test("clear empties without counting invalidations", () => {
    const c = filled();
    c.clear();
    expect([c.size(), c.invalidated, c.entries().length]).toEqual([0, 0, 0]);
  });
});
