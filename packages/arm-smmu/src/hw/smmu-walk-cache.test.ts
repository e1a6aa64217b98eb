import { fc, test } from "@fast-check/vitest";
import { ModelBug } from "@iommu-sim/iommu-core/platform";
import { describe, expect } from "vitest";
import { SMMU_VMID_EL2 } from "./smmu-tlb.js";
import { SmmuWalkCache, smmuReachShift } from "./smmu-walk-cache.js";

/** 4-KiB pages one descriptor at `level` reaches with the 4-KiB granule. */
const reach4k = (level: number) => 2 ** (smmuReachShift(12, level) - 12);

describe("SmmuWalkCache: lookup and insert", () => {
  test("reach shifts follow the granule: 4K 39/30/21, 16K 47/36/25, 64K 42/29, 4K L-1 48", () => {
    expect([0, 1, 2].map((l) => smmuReachShift(12, l))).toEqual([39, 30, 21]);
    expect([0, 1, 2].map((l) => smmuReachShift(14, l))).toEqual([47, 36, 25]);
    expect([1, 2].map((l) => smmuReachShift(16, l))).toEqual([42, 29]);
    expect(smmuReachShift(12, -1)).toBe(48);
  });

  test("lookupDeepest returns the deepest table descriptor on the path, with its data", () => {
    const w = new SmmuWalkCache(8);
    expect(w.lookupDeepest(1, 2, 1, 12, 0x12345)).toBe(-1);
    expect(w.misses).toBe(1);
    w.insert(1, 2, 1, 0, 12, 0x12345, 0x1000, 1);
    w.insert(1, 2, 1, 1, 12, 0x12345, 0x2000, 3);
    const i = w.lookupDeepest(1, 2, 1, 12, 0x12345);
    expect(w.levelOf(i)).toBe(1);
    expect(w.tablePaOf(i)).toBe(0x2000);
    expect(w.attrsOf(i)).toBe(3);
    // Another page under the same level-1 descriptor (1 GiB = 2^18 pages) hits it too.
    expect(w.levelOf(w.lookupDeepest(1, 2, 1, 12, 0x12345 - 0x345))).toBe(1);
    // A page under the same level-0 descriptor but another level-1 one hits level 0 only.
    expect(w.levelOf(w.lookupDeepest(1, 2, 1, 12, 0x12345 + reach4k(1)))).toBe(0);
    expect(w.hits).toBe(3);
  });

  test("VMID, ASID (stage 1), stage and granule are part of the key; stage 2 ignores the ASID", () => {
    const w = new SmmuWalkCache(8);
    w.insert(1, 2, 1, 2, 12, 0x400, 0x1000, 0);
    expect(w.lookupDeepest(2, 2, 1, 12, 0x400)).toBe(-1);
    expect(w.lookupDeepest(1, 3, 1, 12, 0x400)).toBe(-1);
    expect(w.lookupDeepest(1, 2, 2, 12, 0x400)).toBe(-1);
    expect(w.lookupDeepest(1, 2, 1, 16, 0x400)).toBe(-1);
    expect(w.lookupDeepest(SMMU_VMID_EL2, 2, 1, 12, 0x400)).toBe(-1);
    w.insert(1, 7, 2, 2, 12, 0x400, 0x3000, 0);
    expect(w.tablePaOf(w.lookupDeepest(1, 99, 2, 12, 0x400))).toBe(0x3000);
    expect(w.entries().find((e) => e.stage === 2)?.asid).toBe(0);
  });

  test("same key replaces in place; a full cache evicts its least recently used entry", () => {
    const w = new SmmuWalkCache(2);
    w.insert(1, 1, 1, 2, 12, 0, 0x1000, 0);
    w.insert(1, 1, 1, 2, 12, 1, 0x1001, 0); // same level-2 descriptor (2 MiB reach)
    expect(w.size()).toBe(1);
    expect(w.tablePaOf(w.lookupDeepest(1, 1, 1, 12, 0))).toBe(0x1001);
    w.insert(1, 1, 1, 2, 12, 512, 0x2000, 0);
    w.lookupDeepest(1, 1, 1, 12, 0); // the first becomes most recent
    w.insert(1, 1, 1, 2, 12, 1024, 0x3000, 0);
    expect(w.evictions).toBe(1);
    expect(w.lookupDeepest(1, 1, 1, 12, 512)).toBe(-1);
    expect(w.lookupDeepest(1, 1, 1, 12, 0)).toBeGreaterThanOrEqual(0);
  });

  test("capacity 0 keeps nothing; clear drops everything without counting", () => {
    const z = new SmmuWalkCache(0);
    z.insert(1, 1, 1, 2, 12, 0, 0x1000, 0);
    expect(z.size()).toBe(0);
    expect(z.lookupDeepest(1, 1, 1, 12, 0)).toBe(-1);
    const w = new SmmuWalkCache(2);
    w.insert(1, 1, 1, 2, 12, 0, 0x1000, 0);
    w.clear();
    expect(w.size()).toBe(0);
    expect(w.invalidated).toBe(0);
    w.resetCounters();
    expect([w.hits, w.misses, w.inserts, w.evictions, w.invalidated]).toEqual([0, 0, 0, 0, 0]);
  });

  test("model bugs throw: bad capacity, level, granule or stage", () => {
    expect(() => new SmmuWalkCache(-1)).toThrow(ModelBug);
    const w = new SmmuWalkCache(2);
    expect(() => w.insert(1, 1, 1, 3, 12, 0, 0, 0)).toThrow(ModelBug);
    expect(() => w.insert(1, 1, 1, -2, 12, 0, 0, 0)).toThrow(ModelBug);
    expect(() => w.insert(1, 1, 1, 1, 13, 0, 0, 0)).toThrow(ModelBug);
    expect(() => w.insert(1, 1, 3 as 1, 1, 12, 0, 0, 0)).toThrow(ModelBug);
    expect(() => w.invalidateVa(1, 1, 0, 1, false, 0, 13)).toThrow(ModelBug);
  });
});

describe("SmmuWalkCache: invalidation scopes", () => {
  const POP = {
    s1L1: [1, 10, 1, 1, 0x100],
    s1L2: [1, 10, 1, 2, 0x100],
    s1Far: [1, 10, 1, 2, 0x4_0000],
    s1OtherAsid: [1, 11, 1, 2, 0x100],
    s2L1: [1, 0, 2, 1, 0x100],
    s2L2: [1, 0, 2, 2, 0x100],
    otherVmid: [2, 10, 1, 2, 0x100],
    el2: [SMMU_VMID_EL2, 10, 1, 2, 0x100],
  } as const;
  type Name = keyof typeof POP;

  function populate(): SmmuWalkCache {
    const w = new SmmuWalkCache(16);
    let pa = 1;
    for (const [vmid, asid, stage, level, vpn] of Object.values(POP)) {
      w.insert(vmid, asid, stage, level, 12, vpn, pa++, 0);
    }
    return w;
  }

  function gone(w: SmmuWalkCache): Name[] {
    const pas = new Set(w.entries().map((e) => e.tablePa));
    return (Object.keys(POP) as Name[]).filter((_, i) => !pas.has(i + 1));
  }

  test("Leaf = 1 commands never touch the walk cache", () => {
    const w = populate();
    expect(w.invalidateVa(1, 10, 0x100, 1, true, 0, 0)).toBe(0);
    expect(w.invalidateVaa(1, 0, 2 ** 40, true, 0, 0)).toBe(0);
    expect(w.invalidateS2Ipa(1, 0, 2 ** 40, true, 0, 0)).toBe(0);
    expect(w.invalidateEl2Va(10, 0x100, 1, true, 0, 0)).toBe(0);
    expect(w.invalidateEl2Vaa(0x100, 1, true, 0, 0)).toBe(0);
    expect(w.size()).toBe(8);
  });

  test("TLBI_NSNH_ALL removes all but EL2; TLBI_S12_VMALL all stages of its VMID", () => {
    let w = populate();
    w.invalidateAll();
    expect(w.entries().map((e) => e.vmid)).toEqual([SMMU_VMID_EL2]);
    w = populate();
    w.invalidateVmid(1);
    expect(gone(w)).toEqual(["s1L1", "s1L2", "s1Far", "s1OtherAsid", "s2L1", "s2L2"]);
  });

  test("TLBI_NH_ALL removes stage-1 entries of its VMID; NH_ASID those of one ASID", () => {
    let w = populate();
    w.invalidateNhAll(1);
    expect(gone(w)).toEqual(["s1L1", "s1L2", "s1Far", "s1OtherAsid"]);
    w = populate();
    w.invalidateAsid(1, 10);
    expect(gone(w)).toEqual(["s1L1", "s1L2", "s1Far"]);
  });

  test("TLBI_NH_VA with Leaf = 0 removes the ASID's stage-1 descriptors reaching the address", () => {
    const w = populate();
    expect(w.invalidateVa(1, 10, 0x1ff, 1, false, 0, 0)).toBe(2);
    expect(gone(w)).toEqual(["s1L1", "s1L2"]);
  });

  test("TLBI_NH_VAA with Leaf = 0 removes stage-1 descriptors of every ASID in range", () => {
    const w = populate();
    w.invalidateVaa(1, 0x100, 1, false, 0, 0);
    expect(gone(w)).toEqual(["s1L1", "s1L2", "s1OtherAsid"]);
  });

  test("TLBI_S2_IPA with Leaf = 0 removes stage-2 descriptors in range, not stage-1 ones", () => {
    const w = populate();
    w.invalidateS2Ipa(1, 0x100, 1, false, 0, 0);
    expect(gone(w)).toEqual(["s2L1", "s2L2"]);
  });

  test("TLBI_EL2_* remove EL2 entries only", () => {
    let w = populate();
    w.invalidateEl2All();
    expect(gone(w)).toEqual(["el2"]);
    w = populate();
    expect(w.invalidateEl2Asid(11)).toBe(0);
    expect(w.invalidateEl2Asid(10)).toBe(1);
    w = populate();
    expect(w.invalidateEl2Va(10, 0x100, 1, false, 0, 0)).toBe(1);
    w = populate();
    expect(w.invalidateEl2Vaa(0x900, 1, false, 0, 0)).toBe(0);
    expect(w.invalidateEl2Vaa(0x100, 1, false, 0, 0)).toBe(1);
  });

  test("TTL with Leaf = 0 removes only table descriptors above the TTL level (4.4.1.1 note)", () => {
    const w = populate();
    // TTL = 2: level 0 and 1 table entries go, level 2 table entries need not.
    expect(w.invalidateVa(1, 10, 0x100, 1, false, 2, 12)).toBe(1);
    expect(gone(w)).toEqual(["s1L1"]);
    expect(w.invalidateVa(1, 10, 0x100, 1, false, 3, 12)).toBe(1);
    expect(gone(w)).toEqual(["s1L1", "s1L2"]);
  });

  test("TG != 0 leaves descriptors walked with another granule", () => {
    const w = new SmmuWalkCache(4);
    w.insert(1, 1, 1, 2, 16, 0x10, 0x1000, 0);
    expect(w.invalidateVa(1, 1, 0x10, 1, false, 0, 12)).toBe(0);
    expect(w.invalidateVa(1, 1, 0x10, 1, false, 0, 16)).toBe(1);
  });
});

interface RefWalk {
  vmid: number;
  asid: number;
  stage: 1 | 2;
  level: number;
  tag: number;
  pa: number;
}

describe("SmmuWalkCache: properties", () => {
  const arbOp = fc.record({
    kind: fc.constantFrom("insert", "insert", "lookup", "lookup", "va", "asid", "s2"),
    vmid: fc.constantFrom(1, 2),
    asid: fc.constantFrom(1, 2),
    stage: fc.constantFrom<1 | 2>(1, 2),
    level: fc.integer({ min: 0, max: 2 }),
    vpn: fc.oneof(fc.integer({ min: 0, max: 2 ** 20 }), fc.constant(2 ** 40 + 5)),
    pages: fc.constantFrom(1, 512, 2 ** 18),
    pa: fc.integer({ min: 1, max: 2 ** 40 }),
  });

  test.prop([fc.array(arbOp, { maxLength: 200 })], { seed: 0x3a1c, numRuns: 150 })(
    "with room for everything, lookupDeepest and invalidations match a reference list",
    (ops) => {
      const w = new SmmuWalkCache(256);
      let ref: RefWalk[] = [];
      const tagOf = (level: number, vpn: number) => Math.floor(vpn / reach4k(level));
      for (const o of ops) {
        const asid = o.stage === 2 ? 0 : o.asid;
        const mine = (e: RefWalk) => e.vmid === o.vmid;
        const inRange = (e: RefWalk) => {
          const r = reach4k(e.level);
          return e.tag * r < o.vpn + o.pages && o.vpn < e.tag * r + r;
        };
        if (o.kind === "insert") {
          w.insert(o.vmid, o.asid, o.stage, o.level, 12, o.vpn, o.pa, 0);
          const tag = tagOf(o.level, o.vpn);
          ref = ref.filter(
            (e) =>
              !(
                mine(e) &&
                e.asid === asid &&
                e.stage === o.stage &&
                e.level === o.level &&
                e.tag === tag
              ),
          );
          ref.push({ vmid: o.vmid, asid, stage: o.stage, level: o.level, tag, pa: o.pa });
        } else if (o.kind === "lookup") {
          const i = w.lookupDeepest(o.vmid, o.asid, o.stage, 12, o.vpn);
          const hits = ref.filter(
            (e) =>
              mine(e) && e.asid === asid && e.stage === o.stage && e.tag === tagOf(e.level, o.vpn),
          );
          const deepest = Math.max(-9, ...hits.map((e) => e.level));
          if (hits.length === 0) expect(i).toBe(-1);
          else {
            expect(w.levelOf(i)).toBe(deepest);
            expect(w.tablePaOf(i)).toBe(hits.find((e) => e.level === deepest)?.pa);
          }
        } else {
          let pred: (e: RefWalk) => boolean;
          let got: number;
          if (o.kind === "va") {
            got = w.invalidateVa(o.vmid, o.asid, o.vpn, o.pages, false, 0, 0);
            pred = (e) => mine(e) && e.stage === 1 && e.asid === o.asid && inRange(e);
          } else if (o.kind === "asid") {
            got = w.invalidateAsid(o.vmid, o.asid);
            pred = (e) => mine(e) && e.stage === 1 && e.asid === o.asid;
          } else {
            got = w.invalidateS2Ipa(o.vmid, o.vpn, o.pages, false, 0, 0);
            pred = (e) => mine(e) && e.stage === 2 && inRange(e);
          }
          const before = ref.length;
          ref = ref.filter((e) => !pred(e));
          expect(got).toBe(before - ref.length);
        }
        expect(w.size()).toBe(ref.length);
      }
    },
  );
});
