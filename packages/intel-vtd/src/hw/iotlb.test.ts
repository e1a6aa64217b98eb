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
  VTD_SHIFT_1G,
  VTD_SHIFT_2M,
  VTD_SHIFT_4K,
  VtdIotlb,
  type VtdTranslationKind,
} from "./iotlb.js";

const RW = VTD_PERM_R | VTD_PERM_W;
const KINDS: VtdTranslationKind[] = [
  VTD_KIND_FIRST_STAGE,
  VTD_KIND_SECOND_STAGE,
  VTD_KIND_NESTED,
  VTD_KIND_PASS_THROUGH,
];

describe("VtdIotlb: lookup and insert", () => {
  test("a miss returns -1 and counts; an insert then hits with its data", () => {
    const t = new VtdIotlb(2, 2);
    expect(t.lookup(1, 5, 0x100)).toBe(-1);
    expect(t.misses).toBe(1);
    t.insert(1, 5, 0x100, VTD_SHIFT_4K, VTD_KIND_FIRST_STAGE, 0xabc, RW);
    const i = t.lookup(1, 5, 0x100);
    expect(i).toBeGreaterThanOrEqual(0);
    expect(t.paFrameOf(i)).toBe(0xabc);
    expect(t.permOf(i)).toBe(RW);
    expect(t.sizeShiftOf(i)).toBe(12);
    expect(t.kindOf(i)).toBe(VTD_KIND_FIRST_STAGE);
    expect(t.hits).toBe(1);
    expect(t.size()).toBe(1);
  });

  test("DID, PASID and page are all part of the key", () => {
    const t = new VtdIotlb(2, 2);
    t.insert(1, 5, 0x100, VTD_SHIFT_4K, VTD_KIND_SECOND_STAGE, 7, RW);
    expect(t.lookup(2, 5, 0x100)).toBe(-1);
    expect(t.lookup(1, 6, 0x100)).toBe(-1);
    expect(t.lookup(1, VTD_PASID_NONE, 0x100)).toBe(-1);
    expect(t.lookup(1, 5, 0x102)).toBe(-1);
    expect(t.lookup(1, 5, 0x100)).toBeGreaterThanOrEqual(0);
  });

  test("a 2-MiB entry covers its 512 pages and a 1-GiB entry its 2^18 pages", () => {
    const t = new VtdIotlb(2, 2);
    t.insert(3, 0, 0x200 + 17, VTD_SHIFT_2M, VTD_KIND_SECOND_STAGE, 0x4000, RW);
    t.insert(3, 0, 0x4_0000 * 3 + 5, VTD_SHIFT_1G, VTD_KIND_SECOND_STAGE, 0x80000, RW);
    const i = t.lookup(3, 0, 0x3ff);
    expect(t.sizeShiftOf(i)).toBe(21);
    expect(t.paFrameFor(i, 0x3ff)).toBe(0x4000 + 0x1ff);
    expect(t.lookup(3, 0, 0x400)).toBe(-1);
    const j = t.lookup(3, 0, 0x4_0000 * 3 + 0x3_ffff);
    expect(t.sizeShiftOf(j)).toBe(30);
    expect(t.paFrameFor(j, 0x4_0000 * 3 + 0x3_ffff)).toBe(0x80000 + 0x3_ffff);
    expect(t.entries().map((e) => e.vpn)).toEqual(expect.arrayContaining([0x200, 0x4_0000 * 3]));
  });

  test("page numbers of 57-bit addresses (45 bits) keep their high bits apart", () => {
    const t = new VtdIotlb(2, 2);
    const high = 2 ** 44 + 0x123;
    t.insert(1, 1, high, VTD_SHIFT_4K, VTD_KIND_FIRST_STAGE, 9, RW);
    expect(t.lookup(1, 1, 0x123)).toBe(-1);
    expect(t.paFrameOf(t.lookup(1, 1, high))).toBe(9);
    expect(t.entries()[0]?.vpn).toBe(high);
  });

  test("inserting an existing key replaces it in place without an eviction", () => {
    const t = new VtdIotlb(1, 2);
    t.insert(1, 1, 4, VTD_SHIFT_4K, VTD_KIND_FIRST_STAGE, 1, RW);
    t.insert(1, 1, 4, VTD_SHIFT_4K, VTD_KIND_FIRST_STAGE, 2, VTD_PERM_R);
    expect(t.size()).toBe(1);
    expect(t.evictions).toBe(0);
    const i = t.lookup(1, 1, 4);
    expect([t.paFrameOf(i), t.permOf(i)]).toEqual([2, VTD_PERM_R]);
  });

  test("a full set evicts its least recently used way", () => {
    const t = new VtdIotlb(1, 2);
    t.insert(1, 1, 10, VTD_SHIFT_4K, VTD_KIND_FIRST_STAGE, 10, RW);
    t.insert(1, 1, 11, VTD_SHIFT_4K, VTD_KIND_FIRST_STAGE, 11, RW);
    t.lookup(1, 1, 10);
    t.insert(1, 1, 12, VTD_SHIFT_4K, VTD_KIND_FIRST_STAGE, 12, RW);
    expect(t.evictions).toBe(1);
    expect(t.lookup(1, 1, 11)).toBe(-1);
    expect(t.lookup(1, 1, 10)).toBeGreaterThanOrEqual(0);
  });

  test("capacity 0 misses every lookup, drops inserts and still counts", () => {
    for (const [s, w] of [
      [0, 0],
      [4, 0],
      [0, 4],
    ] as const) {
      const t = new VtdIotlb(s, w);
      t.insert(1, 1, 1, VTD_SHIFT_4K, VTD_KIND_FIRST_STAGE, 1, RW);
      expect(t.lookup(1, 1, 1)).toBe(-1);
      expect([t.inserts, t.misses, t.size(), t.capacity]).toEqual([1, 1, 0, 0]);
      expect(t.invalidateAll()).toBe(0);
    }
  });

  test("bad geometry or page size is a model bug", () => {
    expect(() => new VtdIotlb(3, 2)).toThrow(ModelBug);
    expect(() => new VtdIotlb(2, -1)).toThrow(ModelBug);
    expect(() => new VtdIotlb(2, 2).insert(1, 1, 1, 13, VTD_KIND_FIRST_STAGE, 1, RW)).toThrow(
      ModelBug,
    );
  });

  test("clear drops everything without counting invalidations", () => {
    const t = new VtdIotlb(2, 2);
    t.insert(1, 1, 1, VTD_SHIFT_4K, VTD_KIND_FIRST_STAGE, 1, RW);
    t.clear();
    expect([t.size(), t.invalidated, t.lookup(1, 1, 1)]).toEqual([0, 0, -1]);
  });
});

/** The reference: per set, a list of keys from least to most recently used. */
interface RefEntry {
  key: string;
  frame: number;
}
class RefIotlb {
  hits = 0;
  misses = 0;
  evictions = 0;
  private readonly sets: RefEntry[][];
  constructor(
    private readonly nsets: number,
    private readonly ways: number,
  ) {
    this.sets = Array.from({ length: nsets }, () => []);
  }
  private static key(did: number, pasid: number, vpn: number, code: number) {
    return `${did}/${pasid}/${vpn}/${code}`;
  }
  lookup(did: number, pasid: number, vpn: number): number {
    for (let code = 0; code < 3; code++) {
      const pages = 512 ** code;
      const base = Math.floor(vpn / pages) * pages;
      const set = this.sets[Math.floor(vpn / pages) % this.nsets] as RefEntry[];
      const k = RefIotlb.key(did, pasid, base, code);
      const at = set.findIndex((e) => e.key === k);
      if (at >= 0) {
        const [e] = set.splice(at, 1);
        set.push(e as RefEntry);
        this.hits++;
        return (e as RefEntry).frame + (vpn - base);
      }
    }
    this.misses++;
    return -1;
  }
  insert(did: number, pasid: number, vpn: number, code: number, frame: number): void {
    const pages = 512 ** code;
    const base = Math.floor(vpn / pages) * pages;
    const set = this.sets[Math.floor(vpn / pages) % this.nsets] as RefEntry[];
    const k = RefIotlb.key(did, pasid, base, code);
    const at = set.findIndex((e) => e.key === k);
    if (at >= 0) set.splice(at, 1);
    else if (set.length === this.ways) {
      set.shift();
      this.evictions++;
    }
    set.push({ key: k, frame });
  }
  size(): number {
    return this.sets.reduce((n, s) => n + s.length, 0);
  }
}

describe("VtdIotlb against a Map-and-LRU-list reference", () => {
  const op = fc.record({
    insert: fc.boolean(),
    did: fc.integer({ min: 0, max: 2 }),
    pasid: fc.constantFrom(0, 1, VTD_PASID_NONE),
    vpn: fc.oneof(fc.integer({ min: 0, max: 2047 }), fc.constant(2 ** 44 + 3)),
    code: fc.constantFrom(0, 0, 0, 1, 2),
    frame: fc.integer({ min: 0, max: 2 ** 30 }),
  });
  test.prop([fc.constantFrom([1, 1], [2, 2], [4, 1], [2, 3]), fc.array(op, { maxLength: 300 })], {
    seed: 0x10_71b,
    numRuns: 300,
  })("2x2-sized caches agree on every lookup, eviction and size", ([sets, ways], ops) => {
    const t = new VtdIotlb(sets as number, ways as number);
    const r = new RefIotlb(sets as number, ways as number);
    for (const o of ops) {
      if (o.insert) {
        const pages = 512 ** o.code;
        const base = Math.floor(o.vpn / pages) * pages;
        t.insert(
          o.did,
          o.pasid,
          o.vpn,
          12 + 9 * o.code,
          VTD_KIND_SECOND_STAGE,
          o.frame - (o.frame % pages),
          RW,
        );
        r.insert(o.did, o.pasid, base, o.code, o.frame - (o.frame % pages));
      } else {
        const i = t.lookup(o.did, o.pasid, o.vpn);
        expect(i < 0 ? -1 : t.paFrameFor(i, o.vpn)).toBe(r.lookup(o.did, o.pasid, o.vpn));
      }
      expect(t.size()).toBe(r.size());
    }
    expect([t.hits, t.misses, t.evictions]).toEqual([r.hits, r.misses, r.evictions]);
  });
});

/**
 * 32 entries: DIDs 1 and 2, PASID bases 7 and 8, pages 0x400 and 0x800, and each kind under its
 * own PASID (one PASID entry has one PGTT), PASID = base + 16 * kind.
 */
const P = (base: number, kind: VtdTranslationKind) => base + 16 * kind;
function populated(): VtdIotlb {
  const t = new VtdIotlb(2, 32);
  for (const did of [1, 2])
    for (const base of [7, 8])
      for (const kind of KINDS)
        for (const vpn of [0x400, 0x800])
          t.insert(did, P(base, kind), vpn, VTD_SHIFT_4K, kind, vpn, RW);
  expect(t.size()).toBe(32);
  return t;
}
const present = (t: VtdIotlb, did: number, base: number, kind: VtdTranslationKind, vpn: number) =>
  t
    .entries()
    .some((e) => e.did === did && e.pasid === P(base, kind) && e.kind === kind && e.vpn === vpn);

describe("VtdIotlb invalidation: what each descriptor removes and keeps", () => {
  test("global invalidation removes every entry", () => {
    const t = populated();
    expect(t.invalidateAll()).toBe(32);
    expect([t.size(), t.invalidated]).toEqual([0, 32]);
  });

  test("domain-selective (type 2) removes every kind of its DID and keeps other DIDs", () => {
    const t = populated();
    expect(t.invalidateDomain(1)).toBe(16);
    for (const kind of KINDS) {
      expect(present(t, 1, 7, kind, 0x400)).toBe(false);
      expect(present(t, 2, 7, kind, 0x400)).toBe(true);
    }
  });

  test("page-selective (type 2) removes overlapping SL/PT pages and all FS/nested of the DID", () => {
    const t = populated();
    expect(t.invalidatePages(1, 0x400, 0)).toBe(4 + 8);
    for (const base of [7, 8]) {
      expect(present(t, 1, base, VTD_KIND_SECOND_STAGE, 0x400)).toBe(false);
      expect(present(t, 1, base, VTD_KIND_PASS_THROUGH, 0x400)).toBe(false);
      expect(present(t, 1, base, VTD_KIND_SECOND_STAGE, 0x800)).toBe(true);
      expect(present(t, 1, base, VTD_KIND_PASS_THROUGH, 0x800)).toBe(true);
      expect(present(t, 1, base, VTD_KIND_FIRST_STAGE, 0x800)).toBe(false);
      expect(present(t, 1, base, VTD_KIND_NESTED, 0x800)).toBe(false);
      for (const kind of KINDS) expect(present(t, 2, base, kind, 0x400)).toBe(true);
    }
  });

  test("page-selective ranges align down to 2^am pages and hit large pages that overlap", () => {
    const t = new VtdIotlb(4, 2);
    t.insert(1, 0, 0x200, VTD_SHIFT_2M, VTD_KIND_SECOND_STAGE, 0x200, RW);
    t.insert(1, 0, 0x5, VTD_SHIFT_4K, VTD_KIND_SECOND_STAGE, 0x5, RW);
    expect(t.invalidatePages(1, 0x3, 1)).toBe(0); // pages 2..3
    expect(t.invalidatePages(1, 0x7, 2)).toBe(1); // pages 4..7
    expect(t.invalidatePages(1, 0x3ff, 0)).toBe(1); // inside the 2-MiB page
    expect(t.invalidatePages(1, 0, 63)).toBe(0);
  });

  test("PASID-selective (type 6) removes every kind of (DID, PASID) and keeps other PASIDs and DIDs", () => {
    for (const kind of KINDS) {
      const t = populated();
      expect(t.invalidatePasid(1, P(7, kind))).toBe(2);
      expect(present(t, 1, 7, kind, 0x800)).toBe(false);
      expect(present(t, 1, 8, kind, 0x800)).toBe(true);
      expect(present(t, 2, 7, kind, 0x800)).toBe(true);
    }
  });

  test("page-selective-within-PASID (type 6) removes only overlapping FS/nested pages of (DID, PASID)", () => {
    for (const kind of KINDS) {
      const t = populated();
      const selected = kind === VTD_KIND_FIRST_STAGE || kind === VTD_KIND_NESTED;
      expect(t.invalidatePasidPages(1, P(7, kind), 0x400, 0)).toBe(selected ? 1 : 0);
      expect(present(t, 1, 7, kind, 0x400)).toBe(!selected);
      expect(present(t, 1, 7, kind, 0x800)).toBe(true);
      expect(present(t, 1, 8, kind, 0x400)).toBe(true);
      expect(present(t, 2, 7, kind, 0x400)).toBe(true);
    }
  });

  test("legacy entries (no PASID) are never selected by a PASID-based descriptor", () => {
    const t = new VtdIotlb(2, 2);
    t.insert(1, VTD_PASID_NONE, 1, VTD_SHIFT_4K, VTD_KIND_SECOND_STAGE, 1, RW);
    expect(t.invalidatePasid(1, 0)).toBe(0);
    expect(t.invalidateDomain(1)).toBe(1);
  });

  test("an invalidated slot is reused and a stale hint cannot hit", () => {
    const t = new VtdIotlb(1, 1);
    t.insert(1, 1, 1, VTD_SHIFT_4K, VTD_KIND_FIRST_STAGE, 1, RW);
    t.invalidateAll();
    expect(t.lookup(1, 1, 1)).toBe(-1);
    t.insert(1, 1, 2, VTD_SHIFT_4K, VTD_KIND_FIRST_STAGE, 2, RW);
    expect(t.lookup(1, 1, 1)).toBe(-1);
    expect(t.evictions).toBe(0);
  });
});
