// The oracle's hooks into the SMMU: the command observer and `inspect`, which reads the caches
// for a request without disturbing them.

import { fc, test } from "@fast-check/vitest";
import { NO_PASID, newTranslationRequest, type TranslationRequest } from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { CMDQ_OP } from "../format/commands.js";
import { CR2_E2H, CR2_RECINVSID, SMMU_REG } from "../format/registers.js";
import { SmmuTestMachine, smmuTestMachine } from "../testing/table-builder.js";
import { NO_SSID } from "./smmu-config.js";
import { SmmuConfigCache } from "./smmu-config-cache.js";
import {
  SMMU_ASID_IPA,
  SMMU_TLB_NESTED,
  SMMU_TLB_S1,
  SMMU_TLB_S2,
  SMMU_VMID_EL2,
  SmmuTlb,
  type SmmuTlbKind,
  SmmuWalkCache,
} from "./smmu-tlb.js";

const cmd = SmmuTestMachine.command;
const VA = 0x4000_0000;
const PA = 0x8000_0000;

function request(sid: number, ssid: number, iova: number): TranslationRequest {
  const req = newTranslationRequest();
  req.sid = sid;
  req.rid = sid & 0xffff;
  req.pasid = ssid < 0 ? NO_PASID : ssid;
  req.iovaPfn = Math.floor(iova / 4096);
  return req;
}

/** A stage 1 STE for `sid` with one CD of ASID `asid` over a fresh 4K, 48-bit table. */
function s1(m: SmmuTestMachine, sid: number, asid: number) {
  const pt = m.b.lpae(1, 12, 48);
  const cdt = m.b.cdTable(0);
  const cdAt = m.b.setCd(cdt, 0, m.b.s1CdFields(pt, asid));
  const steAt = m.b.setSte(m.st, sid, { Config: 5, S1ContextPtr: cdt.ptr });
  return { pt, cdt, cdAt, steAt };
}

/** Every counter and LRU stamp `inspect` must leave alone. */
function counters(m: SmmuTestMachine) {
  const s = m.smmu;
  return JSON.stringify({
    stats: s.stats,
    tlb: [s.tlb.hits, s.tlb.misses, s.tlb.inserts, s.tlb.entries()],
    walk: [s.walkCache.hits, s.walkCache.misses, s.walkCache.entries()],
    cfg: [s.configCache.hits, s.configCache.misses, s.configCache.entries()],
    reads: s.walker.reads,
    flags: [s.walker.updateFlags, s.walker.walkCache === s.walkCache],
    busError: s.mem.busError,
  });
}

describe("SmmuV3.commandObserver", () => {
  it("sees each executed command's four words before it takes effect, with its queue slot", () => {
    const m = smmuTestMachine();
    m.b.setSte(m.st, 2, { Config: 4 });
    m.dma(2, -1, VA);
    const seen: { words: number[]; at: number; cachedThen: number }[] = [];
    m.smmu.commandObserver = (w, at) => {
      seen.push({ words: [...w], at, cachedThen: m.smmu.configCache.steSize() });
    };
    m.submit(cmd(CMDQ_OP.CFGI_STE, { StreamID: 2, Leaf: 1 }));
    expect(seen).toHaveLength(2);
    expect(seen[0]).toEqual({
      words: [CMDQ_OP.CFGI_STE, 2, 1, 0],
      at: m.cmdq,
      // Observed before the STE left the cache.
      cachedThen: 1,
    });
    expect((seen[1]?.words[0] as number) & 0xff).toBe(CMDQ_OP.CMD_SYNC);
    expect(seen[1]?.at).toBe(m.cmdq + 16);
    expect(m.smmu.configCache.steSize()).toBe(0);
  });

  it("does not see an illegal command, which is not executed", () => {
    const m = smmuTestMachine();
    const seen: number[] = [];
    m.smmu.commandObserver = (w) => {
      seen.push((w[0] as number) & 0xff);
    };
    m.submitRaw([new Uint32Array([0x7f, 0, 0, 0])]);
    expect(m.smmu.read32(SMMU_REG.GERROR) & 1).toBe(1);
    expect(seen).toEqual([]);
  });

  it("null (the default) observes nothing and commands still run", () => {
    const m = smmuTestMachine();
    expect(m.smmu.commandObserver).toBeNull();
    m.b.setSte(m.st, 2, { Config: 4 });
    m.dma(2, -1, VA);
    m.submit(cmd(CMDQ_OP.CFGI_STE, { StreamID: 2, Leaf: 1 }));
    expect(m.smmu.configCache.steSize()).toBe(0);
    expect(m.smmu.stats.commands).toBe(2);
  });
});

describe("SmmuV3.inspect", () => {
  it("shows the cached and fresh STE and CD, the TLB entry and its tags, the walk-cache path and the lookup's VMID/ASID", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 4, 7);
    pt.map(VA, PA);
    m.dma(4, -1, VA);
    const ins = m.smmu.inspect(request(4, -1, VA));
    expect(ins.sid).toBe(4);
    expect(ins.ssid).toBe(NO_SSID);
    expect(ins.ste.cached?.config).toBe(5);
    expect(ins.ste.fresh.config).toBe(5);
    expect(ins.cd?.index).toBe(0);
    expect(ins.cd?.cached?.asid).toBe(7);
    expect(ins.cd?.fresh?.asid).toBe(7);
    expect(ins.vmid).toBe(0);
    expect(ins.asid).toBe(7);
    expect(ins.tlb).toMatchObject({
      vmid: 0,
      asid: 7,
      vpn: VA / 4096,
      sizeShift: 12,
      global: false,
      kind: SMMU_TLB_S1,
      oaFrame: PA / 4096,
      level: 3,
    });
    // A 4K 48-bit walk caches the level 0, 1 and 2 table descriptors of the path.
    expect(ins.walkCache.map((e) => [e.stage, e.asid, e.level])).toEqual([
      [1, 7, 2],
      [1, 7, 1],
      [1, 7, 0],
    ]);
  });

  it("touches no cache entry, LRU stamp, counter, walker flag or bus error", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 4, 7);
    pt.map(VA, PA);
    m.dma(4, -1, VA);
    m.dma(4, -1, VA + 0x1000);
    const before = counters(m);
    m.smmu.inspect(request(4, -1, VA));
    m.smmu.inspect(request(4, -1, VA + 0x5000));
    m.smmu.inspect(request(9, -1, VA));
    expect(counters(m)).toBe(before);
  });

  it("tells the cached STE and CD from what memory says now, and looks up under the cached ones", () => {
    const m = smmuTestMachine();
    const { pt, cdt } = s1(m, 4, 7);
    pt.map(VA, PA);
    m.dma(4, -1, VA);
    m.b.setCd(cdt, 0, m.b.s1CdFields(pt, 9));
    let ins = m.smmu.inspect(request(4, -1, VA));
    expect(ins.cd?.cached?.asid).toBe(7);
    expect(ins.cd?.fresh?.asid).toBe(9);
    expect(ins.asid).toBe(7);
    expect(ins.tlb?.asid).toBe(7);
    m.b.setSte(m.st, 4, { Config: 0 });
    ins = m.smmu.inspect(request(4, -1, VA));
    expect(ins.ste.cached?.config).toBe(5);
    expect(ins.ste.fresh.config).toBe(0);
    // The fresh STE has no stage 1, so no fresh CD; the cached one still steers the lookup.
    expect(ins.cd?.fresh).toBeNull();
    expect(ins.cd?.cached?.asid).toBe(7);
    expect(ins.tlb).not.toBeNull();
  });

  it("with nothing cached: the fresh STE and CD only, no TLB or walk-cache entry", () => {
    const m = smmuTestMachine();
    s1(m, 4, 7).pt.map(VA, PA);
    const ins = m.smmu.inspect(request(4, -1, VA));
    expect(ins.ste.cached).toBeNull();
    expect(ins.cd?.cached).toBeNull();
    expect(ins.cd?.fresh?.asid).toBe(7);
    expect([ins.vmid, ins.asid]).toEqual([0, 7]);
    expect(ins.tlb).toBeNull();
    expect(ins.walkCache).toEqual([]);
  });

  it("a stage 2 only STE is looked up under its VMID and SMMU_ASID_IPA, with stage 2 walk entries", () => {
    const m = smmuTestMachine();
    const pt = m.b.lpae(2, 12, 40);
    m.b.setSte(m.st, 3, { Config: 6, ...m.b.s2SteFields(pt, 5) });
    pt.map(VA, PA);
    m.dma(3, -1, VA);
    const ins = m.smmu.inspect(request(3, -1, VA));
    expect(ins.cd).toBeNull();
    expect([ins.vmid, ins.asid]).toEqual([5, SMMU_ASID_IPA]);
    expect(ins.tlb).toMatchObject({ vmid: 5, kind: SMMU_TLB_S2, vpn: VA / 4096 });
    expect(ins.walkCache.length).toBeGreaterThan(0);
    expect(ins.walkCache.every((e) => e.stage === 2 && e.vmid === 5)).toBe(true);
  });

  it("finds a global entry for any ASID of its VMID", () => {
    const m = smmuTestMachine();
    const a = s1(m, 4, 1);
    a.pt.map(VA, PA, 3, { ng: false });
    const cdt = m.b.cdTable(0);
    m.b.setCd(cdt, 0, m.b.s1CdFields(a.pt, 2));
    m.b.setSte(m.st, 5, { Config: 5, S1ContextPtr: cdt.ptr });
    m.dma(4, -1, VA);
    const ins = m.smmu.inspect(request(5, -1, VA));
    expect(ins.asid).toBe(2);
    expect(ins.tlb).toMatchObject({ global: true, asid: 0, vmid: 0 });
  });

  it("a SubstreamID selects its CD, cached under (StreamID, SubstreamID)", () => {
    const m = smmuTestMachine();
    const pt = m.b.lpae(1, 12, 48);
    const cdt = m.b.cdTable(4);
    m.b.setCd(cdt, 3, m.b.s1CdFields(pt, 5));
    m.b.setSte(m.st, 6, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 4, S1DSS: 1 });
    pt.map(VA, PA);
    m.dma(6, 3, VA);
    const ins = m.smmu.inspect(request(6, 3, VA));
    expect(ins.ssid).toBe(3);
    expect(ins.cd?.index).toBe(3);
    expect(ins.cd?.cached?.asid).toBe(5);
    expect(ins.tlb?.asid).toBe(5);
    // Without a SubstreamID S1DSS = bypass skips stage 1: no TLB lookup.
    const none = m.smmu.inspect(request(6, -1, VA));
    expect(none.cd?.cached).toBeNull();
    expect(none.vmid).toBeNull();
  });

  it("an EL2 StreamWorld is tagged SMMU_VMID_EL2, with ASID 0 unless CR2.E2H", () => {
    for (const e2h of [false, true]) {
      const m = smmuTestMachine({ cr2: CR2_RECINVSID | (e2h ? CR2_E2H : 0) });
      const pt = m.b.lpae(1, 12, 48);
      const cdt = m.b.cdTable(0);
      m.b.setCd(cdt, 0, m.b.s1CdFields(pt, 3));
      m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt.ptr, STRW: 2 });
      pt.map(VA, PA);
      m.dma(4, -1, VA);
      const ins = m.smmu.inspect(request(4, -1, VA));
      expect([ins.vmid, ins.asid]).toEqual([SMMU_VMID_EL2, e2h ? 3 : 0]);
      expect(ins.tlb?.vmid).toBe(SMMU_VMID_EL2);
    }
  });

  it("no lookup tags with the SMMU disabled or an abort, bypass or invalid STE", () => {
    const off = smmuTestMachine({ noEnable: true });
    s1(off, 4, 7);
    expect(off.smmu.inspect(request(4, -1, VA)).vmid).toBeNull();
    const m = smmuTestMachine();
    m.b.setSte(m.st, 1, { Config: 0 });
    m.b.setSte(m.st, 2, { Config: 4 });
    m.b.setSte(m.st, 3, { V: 0, Config: 5 });
    for (const sid of [1, 2, 3]) {
      m.dma(sid, -1, VA);
      const ins = m.smmu.inspect(request(sid, -1, VA));
      expect([ins.cd, ins.vmid, ins.asid, ins.tlb]).toEqual([null, null, null, null]);
    }
  });
});

describe("read-only cache accessors for the oracle", () => {
  const arbVpn = fc.oneof(
    fc.integer({ min: 0, max: 1023 }),
    fc.integer({ min: 0, max: 3 }).map((x) => x * 2 ** 18 + 7),
  );
  const arbInsert = fc.record({
    vmid: fc.constantFrom(0, 1, SMMU_VMID_EL2),
    asid: fc.constantFrom(0, 1, 2),
    vpn: arbVpn,
    shift: fc.constantFrom(12, 12, 16, 21, 30),
    global: fc.boolean(),
    kind: fc.constantFrom<SmmuTlbKind>(SMMU_TLB_S1, SMMU_TLB_S2, SMMU_TLB_NESTED),
  });
  const arbProbe = fc.record({
    vmid: fc.constantFrom(0, 1, SMMU_VMID_EL2),
    asid: fc.constantFrom(0, 1, 2, SMMU_ASID_IPA),
    vpn: arbVpn,
  });

  test.prop([fc.array(arbInsert, { maxLength: 60 }), fc.array(arbProbe, { maxLength: 40 })], {
    seed: 0x1f5ec7,
    numRuns: 150,
  })(
    "SmmuTlb.peek returns the slot lookup returns, and counts and touches nothing",
    (ins, probes) => {
      const t = new SmmuTlb(4, 2);
      for (const [i, o] of ins.entries())
        t.insert(o.vmid, o.asid, o.vpn, o.shift, o.global, o.kind, 0x1000 + i, 3);
      for (const p of probes) {
        const before = JSON.stringify([t.hits, t.misses, t.entries()]);
        const peeked = t.peek(p.vmid, p.asid, p.vpn);
        expect(JSON.stringify([t.hits, t.misses, t.entries()])).toBe(before);
        expect(t.lookup(p.vmid, p.asid, p.vpn)).toBe(peeked);
        if (peeked >= 0) expect(t.entryAt(peeked)?.index).toBe(peeked);
      }
    },
  );

  it("SmmuTlb.entryAt: a free or out-of-range slot is null", () => {
    const t = new SmmuTlb(2, 2);
    expect(t.entryAt(0)).toBeNull();
    expect(t.entryAt(-1)).toBeNull();
    expect(t.entryAt(4)).toBeNull();
    t.insert(1, 2, 0x40, 12, false, SMMU_TLB_S1, 0x99, 3);
    const e = t.entries()[0];
    expect(e && t.entryAt(e.index)).toEqual(e);
    expect(new SmmuTlb(0, 0).peek(0, 0, 0)).toBe(-1);
  });

  const arbWalk = fc.tuple(arbInsert, fc.integer({ min: -1, max: 2 }));

  test.prop([fc.array(arbWalk, { maxLength: 40 }), fc.array(arbProbe, { maxLength: 30 })], {
    seed: 0x3a1c,
    numRuns: 100,
  })("SmmuWalkCache.onPath starts with the entry lookupDeepest resumes from", (ins, probes) => {
    const c = new SmmuWalkCache(8);
    for (const [o, level] of ins) {
      const stage = o.kind === SMMU_TLB_S2 ? 2 : 1;
      c.insert(o.vmid, o.asid, stage, level, 12, o.vpn, 0x1000, 0);
    }
    for (const p of probes) {
      for (const stage of [1, 2] as const) {
        const path = c.onPath(p.vmid, p.asid & 0xffff, stage, p.vpn);
        const levels = path.map((e) => e.level);
        expect(levels).toEqual([...levels].sort((a, b) => b - a));
        const slot = c.lookupDeepest(p.vmid, p.asid & 0xffff, stage, 12, p.vpn);
        expect(path[0]?.index ?? -1).toBe(slot);
      }
    }
  });

  it("SmmuConfigCache.peekSte / peekCd neither count nor change the LRU order", () => {
    const c = new SmmuConfigCache<string, string>(2, 2);
    c.insertSte(1, "a");
    c.insertSte(2, "b");
    c.insertCd(1, 0, "x");
    c.insertCd(1, 1, "y");
    expect([c.peekSte(1), c.peekSte(3), c.peekCd(1, 0), c.peekCd(2, 0)]).toEqual([
      "a",
      undefined,
      "x",
      undefined,
    ]);
    expect([c.hits, c.misses]).toEqual([0, 0]);
    // 1 and (1, 0) stay least recently used: they are the ones evicted.
    c.insertSte(3, "c");
    c.insertCd(1, 2, "z");
    expect([c.peekSte(1), c.peekSte(2), c.peekCd(1, 0), c.peekCd(1, 1)]).toEqual([
      undefined,
      "b",
      undefined,
      "y",
    ]);
    expect(new SmmuConfigCache<string, string>(0, 0).peekSte(1)).toBeUndefined();
  });
});
