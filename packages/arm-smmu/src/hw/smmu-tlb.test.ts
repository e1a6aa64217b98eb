import { fc, test } from "@fast-check/vitest";
import { ModelBug } from "@iommu-sim/iommu-core/platform";
import { describe, expect } from "vitest";
import {
  SMMU_ASID_IPA,
  SMMU_PERM_PX,
  SMMU_PERM_R,
  SMMU_PERM_UNPRIV,
  SMMU_PERM_W,
  SMMU_PERM_X,
  SMMU_TLB_NESTED,
  SMMU_TLB_S1,
  SMMU_TLB_S2,
  SMMU_VMID_EL2,
  SmmuTlb,
  type SmmuTlbKind,
  SmmuWalkCache,
} from "./smmu-tlb.js";

const RW = SMMU_PERM_R | SMMU_PERM_W;
const S1 = SMMU_TLB_S1;
const S2 = SMMU_TLB_S2;
const NESTED = SMMU_TLB_NESTED;

/** A TLB big enough that nothing is evicted in these tests. */
function big(): SmmuTlb {
  return new SmmuTlb(16, 8);
}

/** Whether `lookup(vmid, asid, vpn)` hits. */
function has(t: SmmuTlb, vmid: number, asid: number, vpn: number): boolean {
  return t.lookup(vmid, asid, vpn) >= 0;
}

describe("SmmuTlb: lookup and insert", () => {
  test("a miss returns -1 and counts; an insert then hits with its data", () => {
    const t = new SmmuTlb(2, 2);
    expect(t.lookup(1, 5, 0x100)).toBe(-1);
    expect(t.misses).toBe(1);
    const perm = RW | SMMU_PERM_X | SMMU_PERM_UNPRIV | SMMU_PERM_PX;
    t.insert(1, 5, 0x100, 12, false, S1, 0xabc, perm);
    const i = t.lookup(1, 5, 0x100);
    expect(i).toBeGreaterThanOrEqual(0);
    expect(t.oaFrameOf(i)).toBe(0xabc);
    expect(t.oaFrameFor(i, 0x100)).toBe(0xabc);
    expect(t.permOf(i)).toBe(perm);
    expect(t.sizeShiftOf(i)).toBe(12);
    expect(t.kindOf(i)).toBe(S1);
    expect(t.isGlobal(i)).toBe(false);
    expect(t.hits).toBe(1);
    expect(t.inserts).toBe(1);
    expect(t.size()).toBe(1);
  });

  test("VMID, ASID and page are all part of the key", () => {
    const t = big();
    t.insert(1, 5, 0x100, 12, false, S1, 7, RW);
    expect(has(t, 2, 5, 0x100)).toBe(false);
    expect(has(t, 1, 6, 0x100)).toBe(false);
    expect(has(t, 1, 5, 0x101)).toBe(false);
    expect(has(t, 1, 5, 0x100)).toBe(true);
  });

  test("EL2 entries (SMMU_VMID_EL2) never match a VMID-0 lookup and vice versa", () => {
    const t = big();
    t.insert(SMMU_VMID_EL2, 3, 0x10, 12, false, S1, 1, RW);
    t.insert(0, 3, 0x20, 12, false, S1, 2, RW);
    expect(has(t, 0, 3, 0x10)).toBe(false);
    expect(has(t, SMMU_VMID_EL2, 3, 0x20)).toBe(false);
    expect(has(t, SMMU_VMID_EL2, 3, 0x10)).toBe(true);
    expect(t.entries().find((e) => e.vpn === 0x10)?.vmid).toBe(SMMU_VMID_EL2);
  });

  test("a global entry matches every ASID of its VMID, but not another VMID", () => {
    const t = big();
    t.insert(4, 9, 0x300, 12, true, S1, 0x55, RW);
    expect(has(t, 4, 0, 0x300)).toBe(true);
    expect(has(t, 4, 0xffff, 0x300)).toBe(true);
    expect(has(t, 5, 9, 0x300)).toBe(false);
    const i = t.lookup(4, 1, 0x300);
    expect(t.isGlobal(i)).toBe(true);
    expect(t.entries()[0]).toMatchObject({ asid: 0, global: true });
  });

  test("a stage-2-only entry answers only IPA lookups; a VA lookup never finds it", () => {
    const t = big();
    t.insert(2, 77, 0x400, 12, true, S2, 0x66, RW);
    expect(has(t, 2, 0, 0x400)).toBe(false);
    expect(has(t, 2, 77, 0x400)).toBe(false);
    const i = t.lookupS2(2, 0x400);
    expect(i).toBeGreaterThanOrEqual(0);
    expect(t.kindOf(i)).toBe(S2);
    expect(t.isGlobal(i)).toBe(false);
    expect(t.lookup(2, SMMU_ASID_IPA, 0x400)).toBe(i);
    expect(t.entries()[0]).toMatchObject({ asid: SMMU_ASID_IPA, global: false, kind: S2 });
  });

  test("an IPA lookup does not find a global VA entry at the same number", () => {
    const t = big();
    t.insert(2, 1, 0x400, 12, true, S1, 0x66, RW);
    expect(t.lookupS2(2, 0x400)).toBe(-1);
  });

  test("block and contiguous entries cover their whole span, at every size in 12..42", () => {
    const t = new SmmuTlb(4, 4);
    const sizes = [16, 21, 25, 29, 30, 34, 36, 39, 42];
    let frame = 0x1000;
    for (const s of sizes) {
      const pages = 2 ** (s - 12);
      const base = 3 * pages;
      t.insert(1, 1, base, s, false, S1, frame, RW);
      const i = t.lookup(1, 1, base + pages - 1);
      expect(i, `size ${s}`).toBeGreaterThanOrEqual(0);
      expect(t.sizeShiftOf(i)).toBe(s);
      expect(t.oaFrameFor(i, base + pages - 1)).toBe(frame + pages - 1);
      expect(has(t, 1, 1, base + pages)).toBe(false);
      expect(has(t, 1, 1, base - 1)).toBe(false);
      t.invalidateAll();
      frame += 0x1000;
    }
  });

  test("an unaligned vpnBase is aligned down and oaFrame moved back by the same pages", () => {
    const t = big();
    t.insert(1, 1, 0x205, 21, false, S1, 0x9005, RW);
    const i = t.lookup(1, 1, 0x3ff);
    expect(t.oaFrameOf(i)).toBe(0x9000);
    expect(t.oaFrameFor(i, 0x3ff)).toBe(0x91ff);
    expect(t.entries()[0]?.vpn).toBe(0x200);
  });

  test("page numbers up to 2^52 keep their high bits apart", () => {
    const t = big();
    const high = 2 ** 51 + 0x123;
    t.insert(1, 1, high, 12, false, S1, 9, RW);
    expect(has(t, 1, 1, 0x123)).toBe(false);
    expect(t.oaFrameOf(t.lookup(1, 1, high))).toBe(9);
    expect(t.entries()[0]?.vpn).toBe(high);
    const block = 2 ** 51 + 2 ** 30;
    t.insert(1, 1, block, 42, false, S1, 0, RW);
    expect(has(t, 1, 1, block + 2 ** 30 - 1)).toBe(true);
    expect(has(t, 1, 1, 2 ** 30 + 5)).toBe(false);
  });

  test("inserting an existing key replaces it in place without an eviction", () => {
    const t = new SmmuTlb(1, 2);
    t.insert(1, 1, 4, 12, false, S1, 1, RW);
    t.insert(1, 1, 4, 12, false, S1, 2, SMMU_PERM_R);
    expect(t.size()).toBe(1);
    expect(t.evictions).toBe(0);
    const i = t.lookup(1, 1, 4);
    expect(t.oaFrameOf(i)).toBe(2);
    expect(t.permOf(i)).toBe(SMMU_PERM_R);
  });

  test("a full set evicts its least recently used way; a hit refreshes an entry", () => {
    const t = new SmmuTlb(1, 2);
    t.insert(1, 1, 1, 12, false, S1, 1, RW);
    t.insert(1, 1, 2, 12, false, S1, 2, RW);
    expect(has(t, 1, 1, 1)).toBe(true); // 1 is now more recent than 2
    t.insert(1, 1, 3, 12, false, S1, 3, RW);
    expect(t.evictions).toBe(1);
    expect(has(t, 1, 1, 2)).toBe(false);
    expect(has(t, 1, 1, 1)).toBe(true);
    expect(has(t, 1, 1, 3)).toBe(true);
    expect(t.size()).toBe(2);
  });

  test("an evicted large entry no longer answers, and sizes in use are tracked", () => {
    const t = new SmmuTlb(1, 1);
    t.insert(1, 1, 0, 21, false, S1, 0, RW);
    t.insert(1, 1, 0x1000, 12, false, S1, 5, RW);
    expect(has(t, 1, 1, 0x10)).toBe(false);
    expect(has(t, 1, 1, 0x1000)).toBe(true);
  });

  test("capacity 0 keeps nothing but counts the insert", () => {
    for (const t of [new SmmuTlb(0, 8), new SmmuTlb(4, 0)]) {
      t.insert(1, 1, 1, 12, false, S1, 1, RW);
      expect(t.inserts).toBe(1);
      expect(t.size()).toBe(0);
      expect(t.lookup(1, 1, 1)).toBe(-1);
      expect(t.capacity).toBe(0);
    }
  });

  test("clear drops everything without counting; resetCounters zeroes the counters", () => {
    const t = big();
    t.insert(1, 1, 1, 12, false, S1, 1, RW);
    t.insert(1, 1, 0, 21, true, S1, 1, RW);
    t.clear();
    expect(t.size()).toBe(0);
    expect(t.invalidated).toBe(0);
    expect(has(t, 1, 1, 1)).toBe(false);
    t.resetCounters();
    expect([t.hits, t.misses, t.inserts, t.evictions, t.invalidated]).toEqual([0, 0, 0, 0, 0]);
  });

  test("model bugs throw: bad geometry, size, kind, page, granule or level", () => {
    expect(() => new SmmuTlb(3, 1)).toThrow(ModelBug);
    expect(() => new SmmuTlb(2, 257)).toThrow(ModelBug);
    const t = big();
    expect(() => t.insert(1, 1, 0, 11, false, S1, 0, RW)).toThrow(ModelBug);
    expect(() => t.insert(1, 1, 0, 43, false, S1, 0, RW)).toThrow(ModelBug);
    expect(() => t.insert(1, 1, 0, 12, false, 0 as SmmuTlbKind, 0, RW)).toThrow(ModelBug);
    expect(() => t.insert(1, 1, 2 ** 52, 12, false, S1, 0, RW)).toThrow(ModelBug);
    expect(() => t.insert(1, 1, 0, 12, false, S1, 0, RW, 13)).toThrow(ModelBug);
    expect(() => t.insert(1, 1, 0, 12, false, S1, 0, RW, 12, 4)).toThrow(ModelBug);
    expect(() => t.invalidateVa(1, 1, 0, 1, true, 0, 13)).toThrow(ModelBug);
  });

  test("the walk cache is re-exported from this module", () => {
    expect(new SmmuWalkCache(1).capacity).toBe(1);
  });
});

describe("SmmuTlb: invalidation scopes (4.4)", () => {
  /** A fixed population: name -> insert arguments. */
  const POP = {
    s1: [1, 10, 0x100, 12, false, S1],
    s1OtherAsid: [1, 11, 0x100, 12, false, S1],
    s1Far: [1, 10, 0x900, 12, false, S1],
    global: [1, 12, 0x100, 12, true, S1],
    nested: [1, 10, 0x200, 12, false, NESTED],
    nestedGlobal: [1, 13, 0x200, 12, true, NESTED],
    s2: [1, 0, 0x100, 12, false, S2],
    s2Far: [1, 0, 0x900, 12, false, S2],
    otherVmid: [2, 10, 0x100, 12, false, S1],
    otherVmidS2: [2, 0, 0x100, 12, false, S2],
    el2: [SMMU_VMID_EL2, 10, 0x100, 12, false, S1],
    el2Global: [SMMU_VMID_EL2, 0, 0x200, 12, true, S1],
  } as const;
  type Name = keyof typeof POP;

  function populate(): SmmuTlb {
    const t = new SmmuTlb(8, 16);
    let f = 1;
    for (const [vmid, asid, vpn, s, g, k] of Object.values(POP)) {
      t.insert(vmid, asid, vpn, s, g, k, f++, RW);
    }
    return t;
  }

  /** Names of the entries still held. */
  function left(t: SmmuTlb): Name[] {
    const frames = new Set(t.entries().map((e) => e.oaFrame));
    return (Object.keys(POP) as Name[]).filter((_, i) => frames.has(i + 1));
  }

  function gone(t: SmmuTlb): Name[] {
    const l = new Set(left(t));
    return (Object.keys(POP) as Name[]).filter((n) => !l.has(n));
  }

  test("TLBI_NSNH_ALL removes every non-EL2 entry; EL2 entries survive", () => {
    const t = populate();
    expect(t.invalidateAll()).toBe(10);
    expect(left(t)).toEqual(["el2", "el2Global"]);
    expect(t.invalidated).toBe(10);
    expect(t.size()).toBe(2);
  });

  test("TLBI_S12_VMALL removes every stage of its VMID; other VMIDs and EL2 survive", () => {
    const t = populate();
    t.invalidateVmid(1);
    expect(left(t)).toEqual(["otherVmid", "otherVmidS2", "el2", "el2Global"]);
  });

  test("TLBI_NH_ALL removes stage-1 and nested entries of its VMID, global too; S2 survives", () => {
    const t = populate();
    t.invalidateNhAll(1);
    expect(gone(t)).toEqual(["s1", "s1OtherAsid", "s1Far", "global", "nested", "nestedGlobal"]);
  });

  test("TLBI_NH_ASID removes non-global S1/nested entries of the ASID; global ones survive", () => {
    const t = populate();
    t.invalidateAsid(1, 10);
    expect(gone(t)).toEqual(["s1", "s1Far", "nested"]);
    const u = populate();
    u.invalidateAsid(1, 12);
    expect(gone(u)).toEqual([]);
  });

  test("TLBI_NH_VA removes the ASID's and global entries covering the address", () => {
    const t = populate();
    t.invalidateVa(1, 10, 0x100, 1, true, 0, 0);
    expect(gone(t)).toEqual(["s1", "global"]);
    const u = populate();
    u.invalidateVa(1, 13, 0x100, 0x101, false, 0, 0);
    expect(gone(u)).toEqual(["global", "nestedGlobal"]);
  });

  test("TLBI_NH_VAA removes S1/nested entries of every ASID covering the range", () => {
    const t = populate();
    t.invalidateVaa(1, 0x100, 1, true, 0, 0);
    expect(gone(t)).toEqual(["s1", "s1OtherAsid", "global"]);
  });

  test("TLBI_S2_IPA removes stage-2-only entries of the range; nested entries survive", () => {
    const t = populate();
    t.invalidateS2Ipa(1, 0, 0x900, false, 0, 0);
    expect(gone(t)).toEqual(["s2"]);
    const u = populate();
    u.invalidateS2Ipa(1, 0x200, 1, false, 0, 0);
    expect(gone(u)).toEqual([]);
  });

  test("TLBI_EL2_* touch only EL2 entries", () => {
    let t = populate();
    t.invalidateEl2All();
    expect(gone(t)).toEqual(["el2", "el2Global"]);
    t = populate();
    t.invalidateEl2Asid(10);
    expect(gone(t)).toEqual(["el2"]);
    t = populate();
    t.invalidateEl2Va(99, 0x200, 1, true, 0, 0);
    expect(gone(t)).toEqual(["el2Global"]);
    t = populate();
    t.invalidateEl2Vaa(0x100, 0x101, true, 0, 0);
    expect(gone(t)).toEqual(["el2", "el2Global"]);
  });

  test("without EL2 entries the EL2 commands remove nothing and return 0", () => {
    const t = populate();
    t.invalidateEl2All();
    expect(t.invalidateEl2All()).toBe(0);
    expect(t.invalidateEl2Va(10, 0, 2 ** 40, false, 0, 0)).toBe(0);
  });

  test("an address anywhere inside a block selects the block (low bits ignored)", () => {
    const t = big();
    t.insert(1, 1, 0x200, 21, false, S1, 0, RW);
    expect(t.invalidateVa(1, 1, 0x1ff, 1, true, 0, 0)).toBe(0);
    expect(t.invalidateVa(1, 1, 0x400, 1, true, 0, 0)).toBe(0);
    expect(t.invalidateVa(1, 1, 0x3ff, 1, true, 0, 0)).toBe(1);
  });

  test("a range selects exactly the entries overlapping [vpn, vpn + pages)", () => {
    const t = big();
    for (let p = 0; p < 8; p++) t.insert(1, 1, p, 12, false, S1, p, RW);
    expect(t.invalidateVa(1, 1, 2, 3, true, 0, 12)).toBe(3);
    expect(t.entries().map((e) => e.vpn)).toEqual(expect.arrayContaining([0, 1, 5, 6, 7]));
    expect(t.size()).toBe(5);
  });

  test("TG: an entry walked with another granule survives a TG != 0 command", () => {
    const t = big();
    t.insert(1, 1, 0x10, 12, false, S1, 0, RW, 16, 3);
    expect(t.invalidateVa(1, 1, 0x10, 1, true, 3, 12)).toBe(0);
    expect(t.invalidateVa(1, 1, 0x10, 1, true, 0, 0)).toBe(1);
  });

  test("TTL: an entry whose leaf level differs from TTL survives; TTL 0 or TG 0 selects it", () => {
    const t = big();
    t.insert(1, 1, 0x200, 21, false, S1, 0, RW, 12, 2);
    expect(t.invalidateVa(1, 1, 0x200, 512, true, 3, 12)).toBe(0);
    expect(t.invalidateVaa(1, 0x200, 512, true, 1, 12)).toBe(0);
    expect(t.invalidateVa(1, 1, 0x200, 512, true, 2, 12)).toBe(1);
    t.insert(1, 1, 0x200, 21, false, S1, 0, RW, 12, 2);
    expect(t.invalidateVa(1, 1, 0x200, 1, true, 3, 0)).toBe(1);
    t.insert(1, 1, 0x200, 21, false, S1, 0, RW, 12, 2);
    expect(t.invalidateVa(1, 1, 0x200, 512, false, 0, 12)).toBe(1);
  });

  test("an entry inserted without granule or level is selected by any TG and TTL", () => {
    const t = big();
    t.insert(2, 0, 0x40, 12, false, S2, 0, RW);
    expect(t.invalidateS2Ipa(2, 0x40, 1, true, 1, 16)).toBe(1);
  });

  test("the TTL filter applies to stage-2 entries too", () => {
    const t = big();
    t.insert(2, 0, 0x40, 12, false, S2, 0, RW, 12, 3);
    expect(t.invalidateS2Ipa(2, 0x40, 1, true, 2, 12)).toBe(0);
    expect(t.invalidateS2Ipa(2, 0x40, 1, true, 3, 12)).toBe(1);
  });
});

// ---- Property tests against an obvious reference ----

interface RefEntry {
  vmid: number;
  asid: number;
  vpn: number;
  shift: number;
  global: boolean;
  kind: SmmuTlbKind;
  frame: number;
}

/** The slow, obvious TLB: a list of entries, no capacity limit. */
class RefTlb {
  list: RefEntry[] = [];

  insert(e: RefEntry): void {
    const pages = 2 ** (e.shift - 12);
    const n: RefEntry = { ...e, vpn: Math.floor(e.vpn / pages) * pages };
    if (n.kind === S2) {
      n.asid = SMMU_ASID_IPA;
      n.global = false;
    } else if (n.global) {
      n.asid = 0;
    }
    n.frame -= e.vpn - n.vpn;
    this.list = this.list.filter(
      (o) =>
        !(
          o.vmid === n.vmid &&
          o.asid === n.asid &&
          o.vpn === n.vpn &&
          o.shift === n.shift &&
          o.global === n.global &&
          (o.kind === S2) === (n.kind === S2)
        ),
    );
    this.list.push(n);
  }

  covering(vmid: number, asid: number, vpn: number): RefEntry[] {
    return this.list.filter((e) => {
      if (e.vmid !== vmid) return false;
      if (vpn < e.vpn || vpn >= e.vpn + 2 ** (e.shift - 12)) return false;
      if (asid === SMMU_ASID_IPA) return e.kind === S2;
      return e.kind !== S2 && (e.global || e.asid === asid);
    });
  }

  remove(pred: (e: RefEntry) => boolean): number {
    const before = this.list.length;
    this.list = this.list.filter((e) => !pred(e));
    return before - this.list.length;
  }
}

const overlaps = (e: RefEntry, vpn: number, pages: number) =>
  e.vpn < vpn + pages && vpn < e.vpn + 2 ** (e.shift - 12);
const isS1 = (e: RefEntry) => e.kind !== S2;

const arbVmid = fc.constantFrom(0, 1, SMMU_VMID_EL2);
const arbAsid = fc.constantFrom(0, 1, 2);
const arbVpn = fc.oneof(
  fc.integer({ min: 0, max: 1023 }),
  fc.constant(2 ** 51 + 0x200),
  fc.integer({ min: 0, max: 3 }).map((x) => x * 2 ** 18 + 7),
);
const arbOp = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant("insert" as const),
      vmid: arbVmid,
      asid: arbAsid,
      vpn: arbVpn,
      shift: fc.constantFrom(12, 12, 12, 16, 21, 30),
      global: fc.boolean(),
      kind: fc.constantFrom<SmmuTlbKind>(S1, S2, NESTED),
      frame: fc.integer({ min: 2 ** 20, max: 2 ** 30 }),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant("lookup" as const),
      vmid: arbVmid,
      asid: fc.constantFrom(0, 1, 2, SMMU_ASID_IPA),
      vpn: arbVpn,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constantFrom("all", "vmid", "nhAll", "asid", "va", "vaa", "s2ipa", "el2Va"),
      vmid: fc.constantFrom(0, 1),
      asid: arbAsid,
      vpn: arbVpn,
      pages: fc.constantFrom(1, 2, 512, 2 ** 18),
    }),
  },
);

describe("SmmuTlb: properties against a reference list", () => {
  test.prop([fc.array(arbOp, { maxLength: 250 })], { seed: 0x5a17b, numRuns: 150 })(
    "with room for everything, lookups and invalidation counts match the reference",
    (ops) => {
      const t = new SmmuTlb(1, 256);
      const ref = new RefTlb();
      for (const o of ops) {
        if (o.op === "insert") {
          t.insert(o.vmid, o.asid, o.vpn, o.shift, o.global, o.kind, o.frame, RW);
          ref.insert({ ...o });
        } else if (o.op === "lookup") {
          const i = t.lookup(o.vmid, o.asid, o.vpn);
          const want = ref.covering(o.vmid, o.asid, o.vpn);
          expect(i >= 0).toBe(want.length > 0);
          if (i >= 0) {
            const frame = t.oaFrameFor(i, o.vpn);
            expect(want.map((e) => e.frame + (o.vpn - e.vpn))).toContain(frame);
          }
        } else {
          const { vmid, asid, vpn, pages } = o;
          let got: number;
          let want: number;
          switch (o.op) {
            case "all":
              got = t.invalidateAll();
              want = ref.remove((e) => e.vmid !== SMMU_VMID_EL2);
              break;
            case "vmid":
              got = t.invalidateVmid(vmid);
              want = ref.remove((e) => e.vmid === vmid);
              break;
            case "nhAll":
              got = t.invalidateNhAll(vmid);
              want = ref.remove((e) => e.vmid === vmid && isS1(e));
              break;
            case "asid":
              got = t.invalidateAsid(vmid, asid);
              want = ref.remove((e) => e.vmid === vmid && isS1(e) && !e.global && e.asid === asid);
              break;
            case "va":
              got = t.invalidateVa(vmid, asid, vpn, pages, true, 0, 0);
              want = ref.remove(
                (e) =>
                  e.vmid === vmid &&
                  isS1(e) &&
                  (e.global || e.asid === asid) &&
                  overlaps(e, vpn, pages),
              );
              break;
            case "vaa":
              got = t.invalidateVaa(vmid, vpn, pages, false, 0, 0);
              want = ref.remove((e) => e.vmid === vmid && isS1(e) && overlaps(e, vpn, pages));
              break;
            case "s2ipa":
              got = t.invalidateS2Ipa(vmid, vpn, pages, false, 0, 0);
              want = ref.remove((e) => e.vmid === vmid && !isS1(e) && overlaps(e, vpn, pages));
              break;
            default:
              got = t.invalidateEl2Va(asid, vpn, pages, false, 0, 0);
              want = ref.remove(
                (e) =>
                  e.vmid === SMMU_VMID_EL2 &&
                  (e.global || e.asid === asid) &&
                  overlaps(e, vpn, pages),
              );
          }
          expect(got).toBe(want);
        }
        expect(t.size()).toBe(ref.list.length);
      }
    },
  );

  test.prop([fc.array(arbOp, { maxLength: 250 })], { seed: 0x71e7, numRuns: 150 })(
    "with tiny sets, a hit is always one of the reference's live translations",
    (ops) => {
      const t = new SmmuTlb(2, 2);
      const ref = new RefTlb();
      for (const o of ops) {
        if (o.op === "insert") {
          t.insert(o.vmid, o.asid, o.vpn, o.shift, o.global, o.kind, o.frame, RW);
          ref.insert({ ...o });
        } else if (o.op === "lookup") {
          const i = t.lookup(o.vmid, o.asid, o.vpn);
          if (i >= 0) {
            const want = ref.covering(o.vmid, o.asid, o.vpn);
            expect(want.map((e) => e.frame + (o.vpn - e.vpn))).toContain(t.oaFrameFor(i, o.vpn));
          }
        } else if (o.op === "vmid") {
          t.invalidateVmid(o.vmid);
          ref.remove((e) => e.vmid === o.vmid);
        } else if (o.op === "va") {
          t.invalidateVa(o.vmid, o.asid, o.vpn, o.pages, true, 0, 0);
          ref.remove(
            (e) =>
              e.vmid === o.vmid &&
              isS1(e) &&
              (e.global || e.asid === o.asid) &&
              overlaps(e, o.vpn, o.pages),
          );
        }
        expect(t.size()).toBeLessThanOrEqual(t.capacity);
      }
    },
  );

  test.prop(
    [
      fc.array(fc.tuple(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 0, max: 2 })), {
        maxLength: 400,
      }),
    ],
    { seed: 0x1b0, numRuns: 100 },
  )("4-KiB entries follow per-set true LRU exactly (the C baseline's policy)", (keys) => {
    const SETS = 4;
    const WAYS = 3;
    const t = new SmmuTlb(SETS, WAYS);
    const sets: string[][] = Array.from({ length: SETS }, () => []);
    for (const [vpn, asid] of keys) {
      const key = `${asid}:${vpn}`;
      const set = sets[vpn & (SETS - 1)] as string[];
      const at = set.indexOf(key);
      const hit = t.lookup(1, asid, vpn) >= 0;
      expect(hit).toBe(at >= 0);
      if (at >= 0) {
        set.splice(at, 1);
      } else {
        t.insert(1, asid, vpn, 12, false, S1, vpn, RW);
        if (set.length === WAYS) set.pop();
      }
      set.unshift(key);
    }
  });
});
