import { fc, test } from "@fast-check/vitest";
import { ModelBug } from "@iommu-sim/iommu-core/platform";
import { describe, expect } from "vitest";
import { SmmuConfigCache } from "./smmu-config-cache.js";

interface Ste {
  sid: number;
}
interface Cd {
  sid: number;
  ssid: number;
}

function filled(sids: number[], ssids: number[]): SmmuConfigCache<Ste, Cd> {
  const c = new SmmuConfigCache<Ste, Cd>(64, 256);
  for (const sid of sids) {
    c.insertSte(sid, { sid });
    for (const ssid of ssids) c.insertCd(sid, ssid, { sid, ssid });
  }
  return c;
}

describe("SmmuConfigCache: lookup and insert", () => {
  test("a miss returns undefined and counts; an insert then hits with the same object", () => {
    const c = new SmmuConfigCache<Ste, Cd>(2, 2);
    expect(c.lookupSte(5)).toBeUndefined();
    expect(c.lookupCd(5, 0)).toBeUndefined();
    expect(c.misses).toBe(2);
    const ste = { sid: 5 };
    const cd = { sid: 5, ssid: 3 };
    expect(c.insertSte(5, ste)).toBeUndefined();
    expect(c.insertCd(5, 3, cd)).toBeUndefined();
    expect(c.lookupSte(5)).toBe(ste);
    expect(c.lookupCd(5, 3)).toBe(cd);
    expect(c.lookupCd(5, 4)).toBeUndefined();
    expect(c.lookupCd(6, 3)).toBeUndefined();
    expect(c.hits).toBe(2);
    expect(c.steCounters.hits).toBe(1);
    expect(c.cdCounters.misses).toBe(3);
    expect(c.inserts).toBe(2);
    expect(c.size()).toBe(2);
  });

  test("re-inserting a key replaces the object and returns the old one", () => {
    const c = new SmmuConfigCache<Ste, Cd>(2, 2);
    const a = { sid: 1 };
    const b = { sid: 1 };
    c.insertSte(1, a);
    expect(c.insertSte(1, b)).toBe(a);
    expect(c.lookupSte(1)).toBe(b);
    expect(c.steSize()).toBe(1);
    expect(c.evictions).toBe(0);
  });

  test("a full cache evicts its least recently used entry and returns it", () => {
    const c = new SmmuConfigCache<Ste, Cd>(2, 2);
    const s1 = { sid: 1 };
    c.insertSte(1, s1);
    c.insertSte(2, { sid: 2 });
    c.lookupSte(1);
    const out = c.insertSte(3, { sid: 3 });
    expect(out?.sid).toBe(2);
    expect(c.evictions).toBe(1);
    expect(c.lookupSte(2)).toBeUndefined();
    expect(c.lookupSte(1)).toBe(s1);
    c.insertCd(1, 1, { sid: 1, ssid: 1 });
    c.insertCd(1, 2, { sid: 1, ssid: 2 });
    expect(c.insertCd(1, 3, { sid: 1, ssid: 3 })?.ssid).toBe(1);
  });

  test("capacity 0 keeps nothing", () => {
    const c = new SmmuConfigCache<Ste, Cd>(0, 0);
    expect(c.insertSte(1, { sid: 1 })).toBeUndefined();
    c.insertCd(1, 0, { sid: 1, ssid: 0 });
    expect(c.lookupSte(1)).toBeUndefined();
    expect(c.lookupCd(1, 0)).toBeUndefined();
    expect(c.size()).toBe(0);
    expect(c.inserts).toBe(2);
  });

  test("32-bit StreamIDs and 20-bit SubstreamIDs are keys", () => {
    const c = new SmmuConfigCache<Ste, Cd>(4, 4);
    c.insertSte(0xffff_ffff, { sid: 0xffff_ffff });
    c.insertCd(0xffff_ffff, 0xf_ffff, { sid: 0xffff_ffff, ssid: 0xf_ffff });
    expect(c.lookupSte(0xffff_ffff)?.sid).toBe(0xffff_ffff);
    expect(c.lookupSte(0x7fff_ffff)).toBeUndefined();
    expect(c.lookupCd(0xffff_ffff, 0xf_ffff)?.ssid).toBe(0xf_ffff);
    expect(c.entries()).toEqual({
      ste: [{ sid: 0xffff_ffff, cfg: { sid: 0xffff_ffff } }],
      cd: [{ sid: 0xffff_ffff, ssid: 0xf_ffff, cfg: { sid: 0xffff_ffff, ssid: 0xf_ffff } }],
    });
  });

  test("clear drops everything without counting; resetCounters zeroes both caches", () => {
    const c = filled([1, 2], [0, 1]);
    c.clear();
    expect(c.size()).toBe(0);
    expect(c.invalidated).toBe(0);
    expect(c.lookupSte(1)).toBeUndefined();
    c.resetCounters();
    expect([c.hits, c.misses, c.inserts, c.evictions, c.invalidated]).toEqual([0, 0, 0, 0, 0]);
  });

  test("model bugs throw: bad capacity or range", () => {
    expect(() => new SmmuConfigCache(-1, 1)).toThrow(ModelBug);
    expect(() => new SmmuConfigCache(1, 0.5)).toThrow(ModelBug);
    expect(() => filled([1], [0]).cfgiSteRange(0, 32)).toThrow(ModelBug);
  });
});

describe("SmmuConfigCache: invalidation commands (4.3)", () => {
  test("CFGI_STE removes the STE and every CD cached through that StreamID, not others", () => {
    for (const leaf of [true, false]) {
      const c = filled([1, 2], [0, 1, 2]);
      expect(c.cfgiSte(1, leaf)).toBe(4);
      expect(c.lookupSte(1)).toBeUndefined();
      expect(c.lookupCd(1, 0)).toBeUndefined();
      expect(c.lookupCd(1, 2)).toBeUndefined();
      expect(c.lookupSte(2)).toBeDefined();
      expect(c.lookupCd(2, 2)).toBeDefined();
      expect(c.invalidated).toBe(4);
    }
  });

  test("CFGI_STE_RANGE covers 2^(Range+1) aligned StreamIDs with their CDs", () => {
    const c = filled([3, 4, 5, 6, 7, 8], [0]);
    // Range 1: 4 StreamIDs; sid 6 aligns down to 4..7.
    expect(c.cfgiSteRange(6, 1)).toBe(8);
    expect(c.lookupSte(3)).toBeDefined();
    expect(c.lookupCd(3, 0)).toBeDefined();
    expect(c.lookupSte(8)).toBeDefined();
    for (const sid of [4, 5, 6, 7]) {
      expect(c.lookupSte(sid)).toBeUndefined();
      expect(c.lookupCd(sid, 0)).toBeUndefined();
    }
    // Range 0: 2 StreamIDs.
    expect(c.cfgiSteRange(8, 0)).toBe(2);
    expect(c.lookupSte(3)).toBeDefined();
  });

  test("CFGI_STE_RANGE with Range 31 (CFGI_ALL) covers every StreamID, the top one too", () => {
    const c = filled([0, 0x8000_0000, 0xffff_ffff], [0, 7]);
    expect(c.cfgiSteRange(0x1234, 31)).toBe(9);
    expect(c.size()).toBe(0);
    const d = filled([0, 0xffff_ffff], [1]);
    expect(d.cfgiAll()).toBe(4);
    const e = filled([0xffff_fffe, 0xffff_ffff, 5], [1]);
    expect(e.cfgiSteRange(0xffff_ffff, 0)).toBe(4);
    expect(e.lookupSte(5)).toBeDefined();
  });

  test("CFGI_CD removes one CD of one StreamID; the STE and other CDs stay", () => {
    const c = filled([1, 2], [0, 1]);
    expect(c.cfgiCd(1, 1, true)).toBe(1);
    expect(c.cfgiCd(1, 1, false)).toBe(0);
    expect(c.lookupCd(1, 1)).toBeUndefined();
    expect(c.lookupCd(1, 0)).toBeDefined();
    expect(c.lookupCd(2, 1)).toBeDefined();
    expect(c.lookupSte(1)).toBeDefined();
  });

  test("CFGI_CD_ALL removes every CD of the StreamID; its STE and other StreamIDs stay", () => {
    const c = filled([1, 2], [0, 1, 5]);
    expect(c.cfgiCdAll(1)).toBe(3);
    expect(c.lookupCd(1, 5)).toBeUndefined();
    expect(c.lookupSte(1)).toBeDefined();
    expect(c.lookupCd(2, 5)).toBeDefined();
  });

  test("a freed slot is reused and its hash chain stays consistent", () => {
    const c = new SmmuConfigCache<Ste, Cd>(2, 3);
    for (let round = 0; round < 20; round++) {
      c.insertCd(round, 0, { sid: round, ssid: 0 });
      c.insertCd(round, 1, { sid: round, ssid: 1 });
      expect(c.cfgiCd(round, 0, true)).toBe(1);
      expect(c.lookupCd(round, 1)?.sid).toBe(round);
    }
    expect(c.cdSize()).toBe(2);
  });
});

describe("SmmuConfigCache: properties", () => {
  const arbOp = fc.record({
    op: fc.constantFrom(
      "insSte",
      "insCd",
      "insCd",
      "getSte",
      "getCd",
      "ste",
      "range",
      "cd",
      "cdAll",
      "all",
    ),
    sid: fc.constantFrom(0, 1, 2, 3, 6, 0xffff_fffe, 0xffff_ffff),
    ssid: fc.integer({ min: 0, max: 3 }),
    range: fc.integer({ min: 0, max: 31 }),
  });

  test.prop([fc.integer({ min: 0, max: 4 }), fc.array(arbOp, { maxLength: 200 })], {
    seed: 0xc0f1,
    numRuns: 200,
  })("LRU caches of any capacity match a reference of recency-ordered lists", (cap, ops) => {
    const c = new SmmuConfigCache<number, number>(cap, cap);
    // Most recent first: [key, value].
    let ste: [number, number][] = [];
    let cd: [string, number][] = [];
    const touch = <K>(list: [K, number][], k: K): number | undefined => {
      const at = list.findIndex((e) => e[0] === k);
      if (at < 0) return undefined;
      const [e] = list.splice(at, 1);
      list.unshift(e as [K, number]);
      return (e as [K, number])[1];
    };
    const put = <K>(list: [K, number][], k: K, v: number) => {
      const at = list.findIndex((e) => e[0] === k);
      if (at >= 0) list.splice(at, 1);
      else if (list.length === cap) list.pop();
      if (cap > 0) list.unshift([k, v]);
    };
    const sidOf = (k: string) => Number(k.split(":")[0]);
    let n = 0;
    for (const o of ops) {
      const key = `${o.sid}:${o.ssid}`;
      switch (o.op) {
        case "insSte":
          c.insertSte(o.sid, ++n);
          put(ste, o.sid, n);
          break;
        case "insCd":
          c.insertCd(o.sid, o.ssid, ++n);
          put(cd, key, n);
          break;
        case "getSte":
          expect(c.lookupSte(o.sid)).toBe(touch(ste, o.sid));
          break;
        case "getCd":
          expect(c.lookupCd(o.sid, o.ssid)).toBe(touch(cd, key));
          break;
        case "ste": {
          const want =
            ste.filter((e) => e[0] === o.sid).length +
            cd.filter((e) => sidOf(e[0]) === o.sid).length;
          expect(c.cfgiSte(o.sid, true)).toBe(want);
          ste = ste.filter((e) => e[0] !== o.sid);
          cd = cd.filter((e) => sidOf(e[0]) !== o.sid);
          break;
        }
        case "range": {
          const span = 2 ** (o.range + 1);
          const lo = Math.floor(o.sid / span) * span;
          const inside = (s: number) => s >= lo && s < lo + span;
          const want =
            ste.filter((e) => inside(e[0])).length + cd.filter((e) => inside(sidOf(e[0]))).length;
          expect(c.cfgiSteRange(o.sid, o.range)).toBe(want);
          ste = ste.filter((e) => !inside(e[0]));
          cd = cd.filter((e) => !inside(sidOf(e[0])));
          break;
        }
        case "cd": {
          const want = cd.filter((e) => e[0] === key).length;
          expect(c.cfgiCd(o.sid, o.ssid, false)).toBe(want);
          cd = cd.filter((e) => e[0] !== key);
          break;
        }
        case "cdAll": {
          const want = cd.filter((e) => sidOf(e[0]) === o.sid).length;
          expect(c.cfgiCdAll(o.sid)).toBe(want);
          cd = cd.filter((e) => sidOf(e[0]) !== o.sid);
          break;
        }
        default:
          expect(c.cfgiAll()).toBe(ste.length + cd.length);
          ste = [];
          cd = [];
      }
      expect(c.steSize()).toBe(ste.length);
      expect(c.cdSize()).toBe(cd.length);
    }
  });
});
