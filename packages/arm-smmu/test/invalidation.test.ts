// Invalidation commands on the SMMUv3 model, driven through its command queue: for every
// CMD_CFGI_* / CMD_TLBI_* / CMD_ATC_INV, a cached answer survives a command that does not cover it
// and is gone after one that does; range commands built as Linux builds them; command errors and
// recovery; CMD_SYNC completion signals.

import { fc, test } from "@fast-check/vitest";
import {
  AT_TRANSLATION_REQUEST,
  DMA_READ,
  NO_PASID,
  type TranslationResult,
  XLATE_FAULT,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { CMDQ_OP } from "../src/format/commands.js";
import { EVT_ID } from "../src/format/events.js";
import {
  CMDQ_CONS_ERR_ATC_INV_SYNC,
  CMDQ_CONS_ERR_ILL,
  CR2_E2H,
  CR2_RECINVSID,
  GERROR_CMDQ_ERR,
  GERROR_MSI_CMDQ_ABT_ERR,
  SMMU_REG,
} from "../src/format/registers.js";
import {
  type LeafOptions,
  type LpaeTable,
  SmmuTestMachine,
  type SmmuTestMachineOptions,
  smmuTestMachine,
} from "../src/testing/table-builder.js";

const O = CMDQ_OP;
const cmd = SmmuTestMachine.command;
const PAGE = 4096;
const VA = 0x4000_0000;
const PA = 0x8000_0000;
const PA2 = 0x9000_0000;

// ----- Stale-translation harness ----------------------------------------------------------------

/** What a request gets: the fields a stale answer would differ in. */
const outcome = (r: TranslationResult) => ({ status: r.status, pa: r.pa, code: r.code });
type Outcome = ReturnType<typeof outcome>;

/** A translation the SMMU has cached, whose tables were then changed behind its back. */
interface Stale {
  m: SmmuTestMachine;
  cached(): Outcome;
  fresh(): Outcome;
  /** The cached answer from before the change. */
  old: Outcome;
}

function probe(m: SmmuTestMachine, sid: number, ssid: number, iova: number, at = 0) {
  return {
    cached: () => outcome(m.dma(sid, ssid, iova, DMA_READ, { at })),
    fresh: () => outcome(m.dma(sid, ssid, iova, DMA_READ, { at, uncached: true })),
  };
}

/** Prime the caches through (sid, ssid, iova), run `change`, and check the SMMU now answers stale. */
function makeStale(
  m: SmmuTestMachine,
  sid: number,
  ssid: number,
  iova: number,
  change: () => void,
): Stale {
  const p = probe(m, sid, ssid, iova);
  const old = p.cached();
  expect(old.status).toBe(XLATE_OK);
  change();
  expect(p.cached(), "the cached answer stays after the change").toEqual(old);
  expect(p.fresh(), "a fresh walk differs").not.toEqual(old);
  return { m, ...p, old };
}

/** Submit `c` with a CMD_SYNC; it must be consumed without a command error. */
function run(m: SmmuTestMachine, ...c: Uint32Array[]): void {
  const errors = m.smmu.stats.commandErrors;
  m.submit(...c);
  expect(m.smmu.stats.commandErrors, "no command error").toBe(errors);
  expect(m.smmu.cmdqStopped).toBe(false);
}

function survives(s: Stale, cmds: Uint32Array[]): void {
  for (const c of cmds) {
    run(s.m, c);
    expect(s.cached(), `survives opcode 0x${((c[0] as number) & 0xff).toString(16)}`).toEqual(
      s.old,
    );
  }
}

function gone(s: Stale, ...c: Uint32Array[]): void {
  run(s.m, ...c);
  expect(s.cached()).toEqual(s.fresh());
  expect(s.cached()).not.toEqual(s.old);
}

// ----- Scenarios --------------------------------------------------------------------------------

interface S1Options {
  sid?: number;
  asid?: number;
  /** STE.S2VMID of the stage-1-only STE (the VMID tag of its entries). */
  vmid?: number;
  /** S1CDMax; the CD used is `ssid` (a CD table of 2^cdMax entries) or the single CD. */
  cdMax?: number;
  ssid?: number;
  pgShift?: number;
  /** Leaf level of the mapping (3 = page). */
  level?: number;
  leaf?: LeafOptions;
  machine?: SmmuTestMachineOptions;
  m?: SmmuTestMachine;
  iova?: number;
}

/** A stage-1-only STE whose CD maps `iova` -> PA; returns the parts. */
function s1Setup(o: S1Options = {}) {
  const m = o.m ?? smmuTestMachine(o.machine);
  const sid = o.sid ?? 1;
  const cdMax = o.cdMax ?? 0;
  const ssid = o.ssid ?? (cdMax > 0 ? 3 : -1);
  const iova = o.iova ?? VA;
  const pt = m.b.lpae(1, o.pgShift ?? 12, 48);
  const cdt = m.b.cdTable(cdMax);
  const cdAt = m.b.setCd(cdt, Math.max(ssid, 0), m.b.s1CdFields(pt, o.asid ?? 7));
  const steAt = m.b.setSte(m.st, sid, {
    Config: 5,
    S1ContextPtr: cdt.ptr,
    S1CDMax: cdMax,
    S2VMID: o.vmid ?? 0,
  });
  const level = o.level ?? 3;
  const leafAt = pt.map(iova, PA, level, o.leaf ?? {});
  return { m, sid, ssid, iova, pt, cdt, cdAt, steAt, level, leafAt };
}

/** Stage 1 only: the leaf for `iova` then points at PA2. */
function s1Leaf(o: S1Options = {}): Stale & { sid: number; ssid: number } {
  const x = s1Setup(o);
  const s = makeStale(x.m, x.sid, x.ssid, x.iova, () => {
    x.pt.map(x.iova, PA2, x.level, o.leaf ?? {});
  });
  return { ...s, sid: x.sid, ssid: x.ssid };
}

/**
 * Stage 1 only: the level 2 table descriptor on the path to VA is pointed at a new level 3 table
 * that maps VA -> PA2; only the walk cache can still give PA.
 */
function s1Table(o: S1Options = {}): Stale {
  const x = s1Setup(o);
  const other = x.m.b.lpae(1, x.pt.pgShift, 48);
  other.map(x.iova, PA2);
  const src = other.entryAddr(x.iova, 2);
  const dst = x.pt.entryAddr(x.iova, 2);
  return makeStale(x.m, x.sid, x.ssid, x.iova, () => {
    const lo = x.m.mem.read64(src);
    x.m.mem.write64(dst, lo, x.m.mem.hi);
  });
}

/** A stage-2-only STE (VMID `vmid`) mapping IPA `ipa` -> PA, then PA2. */
function s2Leaf(o: { sid?: number; vmid?: number; pgShift?: number; m?: SmmuTestMachine } = {}) {
  const m = o.m ?? smmuTestMachine();
  const sid = o.sid ?? 2;
  const pt = m.b.lpae(2, o.pgShift ?? 12, 40);
  m.b.setSte(m.st, sid, { Config: 6, ...m.b.s2SteFields(pt, o.vmid ?? 9) });
  pt.map(VA, PA);
  return makeStale(m, sid, -1, VA, () => {
    pt.map(VA, PA2);
  });
}

/** IPA = PA + IPA_OFF for the structures of a nested configuration. */
const IPA_OFF = 0x3000_0000;
/** The stage 1 output IPA of VA in a nested configuration. */
const NESTED_IPA = 0x2000_0000;

/** A nested STE (VMID `vmid`, CD ASID `asid`): VA -> IPA 0x2000_0000 -> PA. */
function nestedSetup(m: SmmuTestMachine, sid: number, vmid: number, asid: number) {
  const s2pt = m.b.lpae(2, 12, 40);
  for (let pa = 0; pa < 0x4020_0000; pa += 0x20_0000) s2pt.map(pa + IPA_OFF, pa, 2);
  s2pt.map(NESTED_IPA, PA);
  const s1pt = m.b.lpae(1, 12, 48, { ipaOffset: -IPA_OFF });
  const cdt = m.b.cdTable(0);
  m.b.setCd(cdt, 0, m.b.s1CdFields(s1pt, asid));
  m.b.setSte(m.st, sid, {
    Config: 7,
    S1ContextPtr: cdt.ptr + IPA_OFF,
    ...m.b.s2SteFields(s2pt, vmid),
  });
  s1pt.map(VA, NESTED_IPA);
  return { s1pt, s2pt };
}

/** Nested: the stage 2 leaf of the output IPA moves to PA2 (a combined stage 1+2 entry is stale). */
function nestedS2Leaf(vmid = 9, asid = 5): Stale {
  const m = smmuTestMachine();
  const { s2pt } = nestedSetup(m, 3, vmid, asid);
  return makeStale(m, 3, -1, VA, () => {
    s2pt.map(NESTED_IPA, PA2);
  });
}

/** An EL2 stream (STRW = EL2) whose CD has ASID `asid`, with CR2.E2H as given; the leaf moves to PA2. */
function el2Stale(e2h: boolean, asid = 5, leaf: LeafOptions = {}): Stale {
  const m = smmuTestMachine({ cr2: CR2_RECINVSID | (e2h ? CR2_E2H : 0) });
  const pt = m.b.lpae(1, 12, 48);
  const cdt = m.b.cdTable(0);
  // An EL2 (non-E2H) regime has one VA range: EPD1 is IGNORED there.
  m.b.setCd(cdt, 0, m.b.s1CdFields(pt, asid));
  m.b.setSte(m.st, 6, { Config: 5, S1ContextPtr: cdt.ptr, STRW: 2 });
  pt.map(VA, PA, 3, leaf);
  return makeStale(m, 6, -1, VA, () => {
    pt.map(VA, PA2, 3, leaf);
  });
}

// ----- Command encoders as Linux builds them ----------------------------------------------------

/**
 * The CMD_TLBI_{NH_VA, S2_IPA, EL2_VA} commands Linux issues to invalidate [iova, iova + size)
 * whose leaves are `granule` bytes, in a domain whose smallest page is 2^pgShift, with or without
 * range invalidation (IDR3.RIL): one command per granule without it; with it, TG from the
 * smallest page, TTL from the granule's level for leaf invalidations (0 for walk invalidations,
 * where a count of 1 mod 32 pages is bumped to avoid NUM = SCALE = 0), and one command per
 * 5-bit chunk of the page count, lowest set bits first.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c __arm_smmu_tlb_inv_range
 */
function linuxTlbiRange(
  op: number,
  base: Record<string, number>,
  iova: number,
  size: number,
  granule: number,
  leaf: boolean,
  pgShift: number,
  ril: boolean,
): Uint32Array[] {
  const addrField = op === O.TLBI_S2_IPA ? "IPA" : "Address";
  const out: Uint32Array[] = [];
  const end = iova + size;
  let at = iova;
  if (!ril) {
    for (; at < end; at += granule)
      out.push(cmd(op, { ...base, Leaf: leaf ? 1 : 0, [addrField]: at }));
    return out;
  }
  const tg = pgShift;
  let pages = Math.floor(size / 2 ** tg);
  const TG = (tg - 10) / 2;
  let TTL = 0;
  if (leaf) TTL = 4 - Math.trunc((Math.log2(granule) - 3) / (tg - 3));
  else if ((pages & 31) === 1) pages++;
  while (at < end) {
    let scale = 0;
    while ((pages / 2 ** scale) % 2 === 0) scale++;
    const num = Math.floor(pages / 2 ** scale) % 32;
    out.push(
      cmd(op, {
        ...base,
        Leaf: leaf ? 1 : 0,
        TG,
        TTL,
        NUM: num - 1,
        SCALE: scale,
        [addrField]: at,
      }),
    );
    at += num * 2 ** (scale + tg);
    pages -= num * 2 ** scale;
  }
  return out;
}

/**
 * The input range a TLBI command covers by the spec's rule (4.4.1.1), read from its raw words:
 * TG = 0: the one address; else [Address, Address + (NUM+1) * 2^SCALE * granule). As
 * [first page, end page) in 4 KiB pages.
 */
function specRange(c: Uint32Array, ipa: boolean): [number, number] {
  const w0 = c[0] as number;
  const w2 = c[2] as number;
  const w3 = c[3] as number;
  const hi = ipa ? w3 & 0xffffff : w3;
  const page = hi * 2 ** 20 + (w2 >>> 12);
  const tg = (w2 >>> 10) & 3;
  if (tg === 0) return [page, page + 1];
  const num = (w0 >>> 12) & 0x1f;
  const scale = (w0 >>> 20) & 0x1f;
  return [page, page + (num + 1) * 2 ** scale * 2 ** (10 + 2 * tg - 12)];
}

/**
 * The CMD_ATC_INV Linux issues for [iova, iova + size) (size 0: everything): the smallest
 * naturally aligned power-of-two span of 4 KiB pages covering the range; SSV iff a PASID.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_atc_inv_to_cmd
 */
function linuxAtcInv(sid: number, ssid: number, iova: number, size: number) {
  const f: Record<string, number> = { StreamID: sid };
  if (ssid > 0) {
    f.SSV = 1;
    f.SubstreamID = ssid;
  }
  if (size === 0) return { c: cmd(O.ATC_INV, { ...f, Size: 52 }), pfn: 0, pages: 0 };
  let start = Math.floor(iova / PAGE);
  const last = Math.floor((iova + size - 1) / PAGE);
  let span = 0;
  for (let x = start ^ last; x > 0; x = Math.floor(x / 2)) span++;
  start -= start % 2 ** span;
  return {
    c: cmd(O.ATC_INV, { ...f, Address: start * PAGE, Size: span }),
    pfn: start,
    pages: 2 ** span,
  };
}

// ----- Configuration invalidation ---------------------------------------------------------------

/** An STE (bypass) of `sid` that is then switched to abort. */
function steStale(sid: number, o: SmmuTestMachineOptions = {}): Stale {
  const m = smmuTestMachine(o);
  m.b.setSte(m.st, sid, { Config: 4 });
  return makeStale(m, sid, -1, VA, () => {
    m.b.setSte(m.st, sid, { Config: 0 });
  });
}

/**
 * CD `ssid` (of a 16-entry CD table, or the single CD when ssid < 0) of `sid` is rewritten with
 * ASID 8 over a new table mapping VA -> PA2: a new CD misses the old ASID's TLB entry.
 */
function cdStale(sid = 1, ssid = 3): Stale & { pt: LpaeTable } {
  const x = s1Setup({ sid, cdMax: ssid < 0 ? 0 : 4, ssid });
  const pt2 = x.m.b.lpae(1, 12, 48);
  pt2.map(VA, PA2);
  const s = makeStale(x.m, sid, ssid, VA, () => {
    x.m.b.setCd(x.cdt, Math.max(ssid, 0), x.m.b.s1CdFields(pt2, 8));
  });
  return { ...s, pt: x.pt };
}

describe("CMD_CFGI_STE / CFGI_STE_RANGE / CFGI_ALL", () => {
  const SID = 0x25;

  it("CFGI_STE covers only its StreamID; CD and TLB invalidations leave the STE", () => {
    const s = steStale(SID);
    survives(s, [
      cmd(O.CFGI_STE, { StreamID: SID ^ 1, Leaf: 1 }),
      cmd(O.CFGI_STE, { StreamID: SID + 0x100, Leaf: 0 }),
      cmd(O.CFGI_CD, { StreamID: SID, SubstreamID: 0, Leaf: 0 }),
      cmd(O.CFGI_CD_ALL, { StreamID: SID }),
      cmd(O.TLBI_NSNH_ALL),
      cmd(O.TLBI_S12_VMALL, { VMID: 0 }),
    ]);
    gone(s, cmd(O.CFGI_STE, { StreamID: SID, Leaf: 1 }));
  });

  it("CFGI_STE with Leaf = 0 covers too", () => {
    gone(steStale(SID), cmd(O.CFGI_STE, { StreamID: SID, Leaf: 0 }));
  });

  it("CFGI_STE on a 2-level stream table: Leaf = 1 covers the STE", () => {
    const s = steStale(SID, { streamTable: "2lvl" });
    survives(s, [cmd(O.CFGI_STE, { StreamID: SID + 0x100, Leaf: 0 })]);
    gone(s, cmd(O.CFGI_STE, { StreamID: SID, Leaf: 1 }));
  });

  // Range r covers the 2^(r+1) StreamIDs aligned around StreamID (its low r+1 bits ignored).
  for (const [range, others, covering] of [
    [0, [0x26, 0x22, 0x27], 0x24],
    [1, [0x28, 0x20, 0x45], 0x26],
    [3, [0x30, 0x10, 0x125], 0x2f],
    [4, [0x40, 0x00], 0x3a],
    [7, [0x100], 0xff],
  ] as const) {
    it(`CFGI_STE_RANGE Range=${range}: StreamID 0x${covering.toString(16)} covers 0x25, ${others.map((o) => `0x${o.toString(16)}`).join(", ")} do not`, () => {
      const s = steStale(SID);
      survives(
        s,
        others.map((sid) => cmd(O.CFGI_STE_RANGE, { StreamID: sid, Range: range })),
      );
      gone(s, cmd(O.CFGI_STE_RANGE, { StreamID: covering, Range: range }));
    });
  }

  it("CFGI_ALL (CFGI_STE_RANGE, Range = 31) covers every StreamID whatever its StreamID field", () => {
    gone(steStale(SID), cmd(O.CFGI_ALL, { StreamID: 0xdead_beef, Range: 31 }));
    gone(steStale(0xff), cmd(O.CFGI_ALL, { StreamID: 0, Range: 31 }));
  });

  it("an STE invalidation also covers the CDs cached through that StreamID (4.3.1, 4.3.2)", () => {
    gone(cdStale(), cmd(O.CFGI_STE, { StreamID: 1, Leaf: 1 }));
    gone(cdStale(), cmd(O.CFGI_STE_RANGE, { StreamID: 0, Range: 1 }));
    gone(cdStale(), cmd(O.CFGI_ALL, { Range: 31 }));
    const s = cdStale();
    survives(s, [
      cmd(O.CFGI_STE, { StreamID: 2, Leaf: 0 }),
      cmd(O.CFGI_STE_RANGE, { StreamID: 2, Range: 0 }),
    ]);
  });

  it("configuration invalidations leave the TLB", () => {
    const s = s1Leaf();
    survives(s, [
      cmd(O.CFGI_STE, { StreamID: 1, Leaf: 0 }),
      cmd(O.CFGI_CD, { StreamID: 1, SubstreamID: 0 }),
      cmd(O.CFGI_CD_ALL, { StreamID: 1 }),
      cmd(O.CFGI_ALL, { Range: 31 }),
    ]);
    gone(s, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 }));
  });
});

describe("CMD_CFGI_CD / CFGI_CD_ALL", () => {
  it("CFGI_CD covers the CD at its index through its StreamID only; TLB invalidations leave it", () => {
    const s = cdStale(1, 3);
    survives(s, [
      cmd(O.CFGI_CD, { StreamID: 1, SubstreamID: 2, Leaf: 0 }),
      cmd(O.CFGI_CD, { StreamID: 1, SubstreamID: 3 + 16, Leaf: 0 }),
      cmd(O.CFGI_CD, { StreamID: 2, SubstreamID: 3, Leaf: 0 }),
      cmd(O.CFGI_CD_ALL, { StreamID: 0 }),
      // The TLB entry goes, but the cached CD still points at the old table, which still maps PA.
      cmd(O.TLBI_NH_ASID, { ASID: 7 }),
      cmd(O.TLBI_NH_ALL, { VMID: 0 }),
      cmd(O.TLBI_NSNH_ALL),
    ]);
    gone(s, cmd(O.CFGI_CD, { StreamID: 1, SubstreamID: 3, Leaf: 1 }));
  });

  it("CFGI_CD with Leaf = 0 covers too", () => {
    gone(cdStale(1, 3), cmd(O.CFGI_CD, { StreamID: 1, SubstreamID: 3, Leaf: 0 }));
  });

  it("the single CD of an STE without substreams is CFGI_CD SubstreamID 0", () => {
    const s = cdStale(1, -1);
    survives(s, [cmd(O.CFGI_CD, { StreamID: 1, SubstreamID: 1 })]);
    gone(s, cmd(O.CFGI_CD, { StreamID: 1, SubstreamID: 0, Leaf: 1 }));
  });

  it("CFGI_CD_ALL covers every CD of its StreamID, not another's", () => {
    const s = cdStale(1, 3);
    survives(s, [cmd(O.CFGI_CD_ALL, { StreamID: 2 }), cmd(O.CFGI_CD_ALL, { StreamID: 0x101 })]);
    gone(s, cmd(O.CFGI_CD_ALL, { StreamID: 1 }));
  });

  it("a CD made invalid (V = 0) is seen only after CFGI_CD", () => {
    const x = s1Setup({ sid: 4, cdMax: 4, ssid: 5 });
    const s = makeStale(x.m, 4, 5, VA, () => {
      x.m.mem.write64(x.cdAt, 0, 0);
    });
    expect(s.fresh().code).toBe(EVT_ID.C_BAD_CD);
    survives(s, [cmd(O.CFGI_CD, { StreamID: 4, SubstreamID: 4 }), cmd(O.TLBI_NSNH_ALL)]);
    gone(s, cmd(O.CFGI_CD, { StreamID: 4, SubstreamID: 5, Leaf: 1 }));
  });
});

// ----- TLB invalidation: stage 1 ----------------------------------------------------------------

describe("CMD_TLBI_NH_ALL", () => {
  it("covers every stage 1 entry of its VMID, global or not; not another VMID's", () => {
    const s = s1Leaf({ vmid: 3 });
    survives(s, [cmd(O.TLBI_NH_ALL, { VMID: 4 }), cmd(O.TLBI_NH_ALL, { VMID: 0 })]);
    gone(s, cmd(O.TLBI_NH_ALL, { VMID: 3 }));
    gone(s1Leaf({ leaf: { ng: false } }), cmd(O.TLBI_NH_ALL, { VMID: 0 }));
  });

  it("covers combined stage 1+2 entries of its VMID (they hold stage 1 information)", () => {
    const s = nestedS2Leaf(9);
    survives(s, [cmd(O.TLBI_NH_ALL, { VMID: 8 })]);
    gone(s, cmd(O.TLBI_NH_ALL, { VMID: 9 }));
  });

  it("leaves stage-2-only entries", () => {
    const s = s2Leaf({ vmid: 9 });
    survives(s, [cmd(O.TLBI_NH_ALL, { VMID: 9 })]);
  });
});

describe("CMD_TLBI_NH_ASID", () => {
  it("covers non-global entries of (VMID, ASID) only", () => {
    const s = s1Leaf({ asid: 7, vmid: 2 });
    survives(s, [
      cmd(O.TLBI_NH_ASID, { VMID: 2, ASID: 8 }),
      cmd(O.TLBI_NH_ASID, { VMID: 3, ASID: 7 }),
      cmd(O.TLBI_NH_ASID, { VMID: 0, ASID: 7 }),
    ]);
    gone(s, cmd(O.TLBI_NH_ASID, { VMID: 2, ASID: 7 }));
  });

  it("is not required to cover global entries: they stay (3.17.1); NH_ALL removes them", () => {
    const s = s1Leaf({ asid: 7, leaf: { ng: false } });
    survives(s, [cmd(O.TLBI_NH_ASID, { ASID: 7 })]);
    gone(s, cmd(O.TLBI_NH_ALL, { VMID: 0 }));
  });

  it("also removes the ASID's walk-cache entries", () => {
    const s = s1Table({ asid: 7 });
    survives(s, [cmd(O.TLBI_NH_ASID, { ASID: 6 })]);
    gone(s, cmd(O.TLBI_NH_ASID, { ASID: 7 }));
  });
});

describe("CMD_TLBI_NH_VA", () => {
  it("covers (VMID, ASID, VA): other ASIDs, VMIDs and pages do not", () => {
    const s = s1Leaf({ asid: 7 });
    survives(s, [
      cmd(O.TLBI_NH_VA, { ASID: 8, Address: VA, Leaf: 1 }),
      cmd(O.TLBI_NH_VA, { VMID: 1, ASID: 7, Address: VA, Leaf: 1 }),
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA + PAGE, Leaf: 0 }),
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA - PAGE, Leaf: 0 }),
      cmd(O.TLBI_NH_VAA, { VMID: 1, Address: VA }),
    ]);
    gone(s, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 }));
  });

  it("low address bits are ignored as the entry's size requires (a 2 MiB block by any page in it)", () => {
    const s = s1Leaf({ level: 2 });
    survives(s, [cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA + 0x20_0000, Leaf: 1 })]);
    gone(s, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA + 0x1f_f000, Leaf: 1 }));
  });

  it("covers global entries of the VA whatever the ASID", () => {
    gone(s1Leaf({ asid: 7, leaf: { ng: false } }), cmd(O.TLBI_NH_VA, { ASID: 99, Address: VA }));
  });

  it("Leaf = 1 leaves a changed table descriptor in the walk cache; Leaf = 0 removes it", () => {
    const s = s1Table({ asid: 7 });
    survives(s, [
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 }),
      cmd(O.TLBI_NH_VAA, { Address: VA, Leaf: 1 }),
      cmd(O.TLBI_NH_VA, { ASID: 8, Address: VA, Leaf: 0 }),
    ]);
    gone(s, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 0 }));
  });

  it("a walk invalidation covers a table descriptor through any address it reaches", () => {
    // The level 2 descriptor reaches 2 MiB: its last page is enough, the next 2 MiB is not. The
    // leaf TLB entry of VA goes first (Leaf = 1), in the same batch.
    const s = s1Table({ asid: 7 });
    const leafInv = cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 });
    run(s.m, leafInv, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA + 0x20_0000, Leaf: 0 }));
    expect(s.cached()).toEqual(s.old);
    gone(s, leafInv, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA + 0x1f_f000, Leaf: 0 }));
  });

  it("TTL: a leaf at level 3 survives TTL = 1 and 2 and goes with TTL = 3 (and TTL = 0)", () => {
    const s = s1Leaf({ asid: 7 });
    survives(s, [
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 1, TTL: 1 }),
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 1, TTL: 2 }),
    ]);
    gone(s, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 1, TTL: 3 }));
    gone(s1Leaf(), cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, TG: 1, NUM: 1 }));
  });

  it("TTL: a 2 MiB block (level 2) survives TTL = 3 and goes with TTL = 2", () => {
    const s = s1Leaf({ level: 2 });
    survives(s, [
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 1, TTL: 3 }),
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 1, TTL: 1 }),
    ]);
    gone(s, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 1, TTL: 2 }));
  });

  it("TTL with Leaf = 0: TTL = 2 leaves the level 2 table descriptor (4.4.1.1 note), TTL = 3 removes it", () => {
    const s = s1Table({ asid: 7 });
    survives(s, [cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 0, TG: 1, TTL: 2 })]);
    gone(s, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 0, TG: 1, TTL: 3 }));
  });

  it("TG: entries of another granule survive; TG = 0 covers any granule", () => {
    const s = s1Leaf({ asid: 7 });
    survives(s, [
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 2, TTL: 3 }),
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 3, TTL: 3 }),
    ]);
    gone(s, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 1, TTL: 3 }));
    const s16 = s1Leaf({ asid: 7, pgShift: 14 });
    survives(s16, [cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 1, TTL: 3 })]);
    gone(s16, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 }));
    const s64 = s1Table({ asid: 7, pgShift: 16 });
    survives(s64, [cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, TG: 2, NUM: 3 })]);
    gone(s64, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, TG: 3, NUM: 0, SCALE: 1 }));
  });

  it("a range covers [Address, Address + (NUM+1) * 2^SCALE * granule) and no more", () => {
    // 8 pages from VA - 8 pages: ends just below VA.
    const s = s1Leaf({ asid: 7 });
    survives(s, [
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA - 8 * PAGE, Leaf: 1, TG: 1, NUM: 7, TTL: 3 }),
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA - 8 * PAGE, Leaf: 1, TG: 1, NUM: 1, SCALE: 2 }),
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA + PAGE, Leaf: 1, TG: 1, NUM: 31, SCALE: 20 }),
    ]);
    gone(s, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA - 8 * PAGE, Leaf: 1, TG: 1, NUM: 8 }));
  });
});

describe("CMD_TLBI_NH_VAA", () => {
  it("covers the VA in every ASID of its VMID, global or not", () => {
    const s = s1Leaf({ asid: 7, vmid: 3 });
    survives(s, [
      cmd(O.TLBI_NH_VAA, { VMID: 4, Address: VA, Leaf: 1 }),
      cmd(O.TLBI_NH_VAA, { VMID: 3, Address: VA + PAGE, Leaf: 1 }),
      cmd(O.TLBI_NH_VAA, { VMID: 3, Address: VA, Leaf: 1, TG: 1, TTL: 2 }),
    ]);
    gone(s, cmd(O.TLBI_NH_VAA, { VMID: 3, Address: VA, Leaf: 1 }));
    gone(s1Leaf({ leaf: { ng: false } }), cmd(O.TLBI_NH_VAA, { Address: VA }));
  });

  it("covers a combined entry of a nested stream by its VA (software's pair for TLBI_S2_IPA)", () => {
    const s = nestedS2Leaf(9);
    survives(s, [cmd(O.TLBI_NH_VAA, { VMID: 9, Address: NESTED_IPA })]);
    gone(s, cmd(O.TLBI_NH_VAA, { VMID: 9, Address: VA }));
  });

  it("Leaf = 1 leaves walk-cache entries; Leaf = 0 removes them", () => {
    const s = s1Table();
    survives(s, [cmd(O.TLBI_NH_VAA, { Address: VA, Leaf: 1 })]);
    gone(s, cmd(O.TLBI_NH_VAA, { Address: VA, Leaf: 0 }));
  });
});

// ----- TLB invalidation: stage 2 and all --------------------------------------------------------

describe("CMD_TLBI_S2_IPA", () => {
  it("covers stage-2-only entries of (VMID, IPA)", () => {
    const s = s2Leaf({ vmid: 9 });
    survives(s, [
      cmd(O.TLBI_S2_IPA, { VMID: 8, IPA: VA, Leaf: 1 }),
      cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: VA + PAGE, Leaf: 1 }),
      cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: VA, Leaf: 1, TG: 3, TTL: 3 }),
      cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: VA, Leaf: 1, TG: 1, TTL: 2 }),
      // Stage 1 commands by the same number do not reach an IPA entry.
      cmd(O.TLBI_NH_VAA, { VMID: 9, Address: VA }),
      cmd(O.TLBI_NH_VA, { VMID: 9, ASID: 0, Address: VA }),
    ]);
    gone(s, cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: VA, Leaf: 1 }));
  });

  it("as a range (TG/NUM/SCALE) without a TTL hint", () => {
    const s = s2Leaf({ vmid: 9 });
    survives(s, [cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: VA + PAGE, TG: 1, NUM: 30, Leaf: 1 })]);
    gone(s, cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: VA - PAGE, TG: 1, NUM: 1, Leaf: 1 }));
  });

  // Spec 4.4.1.1: with TG != 0 and TTL != 0 the SMMU need only invalidate leaves from walk level
  // TTL, so a stage-2-only leaf at level 3 must go with TTL = 3 (what Linux sends for every
  // stage 2 page unmap with RIL). The model records a wrong level for stage-2-only TLB entries
  // (SmmuWalker.walkStage2 leaves `level` at its old value, 0 here, instead of the leaf's level),
  // so TTL = 3 misses them and the stale translation outlives the unmap.
  it("as a range with TTL = 3 (Linux's leaf hint for 4K pages) covers a level 3 leaf", () => {
    const s = s2Leaf({ vmid: 9 });
    gone(s, cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: VA - PAGE, TG: 1, NUM: 1, TTL: 3, Leaf: 1 }));
  });

  it("a single-granule TLBI_S2_IPA with TG = 4K, TTL = 3 covers a level 3 leaf", () => {
    gone(s2Leaf({ vmid: 9 }), cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: VA, TG: 1, TTL: 3, Leaf: 1 }));
  });

  it("an IPA above 4 GiB: IPA[55:32] are in the high word", () => {
    const m = smmuTestMachine();
    const pt = m.b.lpae(2, 12, 40);
    m.b.setSte(m.st, 2, { Config: 6, ...m.b.s2SteFields(pt, 9) });
    const ipa = 0x12_3456_7000;
    pt.map(ipa, PA);
    const s = makeStale(m, 2, -1, ipa, () => {
      pt.map(ipa, PA2);
    });
    survives(s, [cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: ipa % 2 ** 32, Leaf: 1 })]);
    gone(s, cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: ipa, Leaf: 1 }));
  });

  it("is not required to cover combined stage 1+2 entries: they stay until NH_ALL / S12_VMALL", () => {
    const s = nestedS2Leaf(9);
    survives(s, [cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: NESTED_IPA, Leaf: 0 })]);
    gone(s, cmd(O.TLBI_S12_VMALL, { VMID: 9 }));
  });

  it("Leaf = 1 leaves a changed stage 2 table descriptor in the walk cache; Leaf = 0 removes it", () => {
    const m = smmuTestMachine();
    const pt = m.b.lpae(2, 12, 40);
    m.b.setSte(m.st, 2, { Config: 6, ...m.b.s2SteFields(pt, 9) });
    pt.map(VA, PA);
    const other = m.b.lpae(2, 12, 40);
    other.map(VA, PA2);
    const src = other.entryAddr(VA, 2);
    const dst = pt.entryAddr(VA, 2);
    const s = makeStale(m, 2, -1, VA, () => {
      m.mem.write64(dst, m.mem.read64(src), m.mem.hi);
    });
    survives(s, [
      cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: VA, Leaf: 1 }),
      cmd(O.TLBI_S2_IPA, { VMID: 8, IPA: VA, Leaf: 0 }),
      cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: VA, Leaf: 0, TG: 1, TTL: 2 }),
    ]);
    gone(s, cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: VA, Leaf: 0 }));
  });
});

describe("CMD_TLBI_S12_VMALL and CMD_TLBI_NSNH_ALL", () => {
  it("S12_VMALL covers every stage of its VMID only", () => {
    for (const make of [
      () => s2Leaf({ vmid: 9 }),
      () => nestedS2Leaf(9),
      () => s1Leaf({ vmid: 9 }),
    ]) {
      const s = make();
      survives(s, [cmd(O.TLBI_S12_VMALL, { VMID: 10 }), cmd(O.TLBI_S12_VMALL, { VMID: 0x109 })]);
      gone(s, cmd(O.TLBI_S12_VMALL, { VMID: 9 }));
    }
  });

  it("NSNH_ALL covers every non-EL2 entry of every stage and VMID", () => {
    gone(s2Leaf({ vmid: 9 }), cmd(O.TLBI_NSNH_ALL));
    gone(nestedS2Leaf(9), cmd(O.TLBI_NSNH_ALL));
    gone(s1Leaf({ vmid: 4, leaf: { ng: false } }), cmd(O.TLBI_NSNH_ALL));
    gone(s1Table(), cmd(O.TLBI_NSNH_ALL));
  });
});

// ----- TLB invalidation: EL2 --------------------------------------------------------------------

describe("CMD_TLBI_EL2_*", () => {
  it("EL2 entries (E2H = 0) are out of reach of the EL1 commands", () => {
    const s = el2Stale(false);
    survives(s, [
      cmd(O.TLBI_NH_ALL, { VMID: 0 }),
      cmd(O.TLBI_NH_VAA, { VMID: 0, Address: VA }),
      cmd(O.TLBI_S12_VMALL, { VMID: 0 }),
      cmd(O.TLBI_NSNH_ALL),
    ]);
    gone(s, cmd(O.TLBI_EL2_ALL));
  });

  it("EL2 (E2H = 0): EL2_VA ignores the ASID; EL2_ASID is not required to cover (no ASIDs)", () => {
    const s = el2Stale(false, 5);
    survives(s, [
      cmd(O.TLBI_EL2_ASID, { ASID: 5 }),
      cmd(O.TLBI_EL2_VA, { ASID: 5, Address: VA + PAGE }),
      cmd(O.TLBI_EL2_VAA, { Address: VA - PAGE }),
    ]);
    gone(s, cmd(O.TLBI_EL2_VA, { ASID: 77, Address: VA, Leaf: 1 }));
    gone(el2Stale(false), cmd(O.TLBI_EL2_VAA, { Address: VA, Leaf: 1 }));
  });

  it("EL1 entries are out of reach of the EL2 commands", () => {
    const s = s1Leaf({ asid: 5, leaf: { ng: false } });
    survives(s, [
      cmd(O.TLBI_EL2_ALL),
      cmd(O.TLBI_EL2_ASID, { ASID: 5 }),
      cmd(O.TLBI_EL2_VA, { ASID: 5, Address: VA }),
      cmd(O.TLBI_EL2_VAA, { Address: VA }),
    ]);
  });

  it("EL2-E2H: a global entry goes with EL2_VA of any ASID and stays with EL2_ASID", () => {
    const s = el2Stale(true, 5, { ng: false });
    survives(s, [cmd(O.TLBI_EL2_ASID, { ASID: 5 }), cmd(O.TLBI_NSNH_ALL)]);
    gone(s, cmd(O.TLBI_EL2_VA, { ASID: 6, Address: VA }));
  });

  // Spec 5.4 (CD.ASID): "ASID must tag all cached translations inserted using this CD through an
  // STE with StreamWorld == NS-EL1 or Secure or any-EL2-E2H"; it is IGNORED only for any-EL2 /
  // EL3. Linux with E2H issues TLBI_EL2_ASID / TLBI_EL2_VA with the domain's ASID. The model
  // decodes CD.ASID as 0 for every EL2 stream (decodeCd: `el2 ? 0 : C_ASID`), so E2H entries are
  // tagged with ASID 0 and the ASID-scoped EL2 commands miss them.
  it("EL2-E2H: non-global entries are tagged with CD.ASID, so EL2_ASID(ASID) covers them", () => {
    const s = el2Stale(true, 5);
    survives(s, [cmd(O.TLBI_EL2_ASID, { ASID: 6 })]);
    gone(s, cmd(O.TLBI_EL2_ASID, { ASID: 5 }));
  });

  it("EL2-E2H: EL2_VA with the entry's ASID covers a non-global entry, another ASID does not", () => {
    const s = el2Stale(true, 5);
    survives(s, [cmd(O.TLBI_EL2_VA, { ASID: 6, Address: VA })]);
    gone(s, cmd(O.TLBI_EL2_VA, { ASID: 5, Address: VA }));
  });
});

// ----- Ranges as Linux builds them --------------------------------------------------------------

/**
 * `count` granules from VA mapped, cached, then all remapped; the commands `cmds` are issued and
 * each granule must be fresh iff the spec's range of some command covers it.
 */
function checkRangeCommands(
  o: { stage: 1 | 2; pgShift: number; count: number },
  build: (m: SmmuTestMachine) => Uint32Array[],
  want?: [number, number],
): void {
  const m = smmuTestMachine();
  const g = 2 ** o.pgShift;
  let pt: LpaeTable;
  let sid: number;
  if (o.stage === 1) {
    const x = s1Setup({ m, asid: 7, pgShift: o.pgShift, sid: 1 });
    pt = x.pt;
    sid = 1;
  } else {
    pt = m.b.lpae(2, o.pgShift, 40);
    m.b.setSte(m.st, 2, { Config: 6, ...m.b.s2SteFields(pt, 9) });
    pt.map(VA, PA);
    sid = 2;
  }
  const probes = [];
  for (let i = 0; i < o.count; i++) {
    pt.map(VA + i * g, PA + i * g);
    probes.push(probe(m, sid, -1, VA + i * g));
  }
  const old = probes.map((p) => p.cached());
  for (let i = 0; i < o.count; i++) pt.map(VA + i * g, PA2 + i * g);
  const cmds = build(m);
  run(m, ...cmds);
  const covered = cmds.map((c) => specRange(c, o.stage === 2));
  if (want !== undefined) {
    // Linux's commands together cover at least what it asked for.
    for (let p = want[0]; p < want[1]; p++)
      expect(
        covered.some(([a, b]) => a <= p && p < b),
        `page 0x${p.toString(16)} covered`,
      ).toBe(true);
  }
  for (let i = 0; i < o.count; i++) {
    const first = (VA + i * g) / PAGE;
    const hit = covered.some(([a, b]) => a < first + g / PAGE && first < b);
    const now = (probes[i] as (typeof probes)[number]).cached();
    if (hit) expect(now, `granule ${i} invalidated`).toEqual(probes[i]?.fresh());
    else expect(now, `granule ${i} kept`).toEqual(old[i]);
  }
}

describe("ranges as Linux's __arm_smmu_tlb_inv_range builds them", () => {
  const cases: [number, number][] = [
    [0, 1],
    [3, 5],
    [1, 33],
    [0, 64],
    [7, 37],
    [2, 31],
    [5, 32],
  ];
  for (const pgShift of [12, 14, 16]) {
    for (const leaf of [true, false]) {
      it(`stage 1, ${2 ** (pgShift - 10)}K granule, Leaf=${leaf ? 1 : 0}, RIL: every range`, () => {
        for (const [first, n] of cases) {
          const g = 2 ** pgShift;
          checkRangeCommands(
            { stage: 1, pgShift, count: 72 },
            () =>
              linuxTlbiRange(
                O.TLBI_NH_VA,
                { ASID: 7 },
                VA + first * g,
                n * g,
                g,
                leaf,
                pgShift,
                true,
              ),
            [(VA + first * g) / PAGE, (VA + (first + n) * g) / PAGE],
          );
        }
      });
    }
  }

  it("stage 2 (TLBI_S2_IPA), 4K and 64K granules, walk (Leaf = 0, TTL = 0), RIL", () => {
    for (const pgShift of [12, 16]) {
      for (const [first, n] of cases) {
        const g = 2 ** pgShift;
        checkRangeCommands(
          { stage: 2, pgShift, count: 72 },
          () =>
            linuxTlbiRange(
              O.TLBI_S2_IPA,
              { VMID: 9 },
              VA + first * g,
              n * g,
              g,
              false,
              pgShift,
              true,
            ),
          [(VA + first * g) / PAGE, (VA + (first + n) * g) / PAGE],
        );
      }
    }
  });

  // The stage-2-only TLB entries' recorded level is wrong (see CMD_TLBI_S2_IPA above), so Linux's
  // leaf ranges (TTL = 3) leave them in place.
  it("stage 2 (TLBI_S2_IPA), 4K and 64K granules, leaf (TTL = 3), RIL", () => {
    for (const pgShift of [12, 16]) {
      for (const [first, n] of cases) {
        const g = 2 ** pgShift;
        checkRangeCommands(
          { stage: 2, pgShift, count: 72 },
          () =>
            linuxTlbiRange(
              O.TLBI_S2_IPA,
              { VMID: 9 },
              VA + first * g,
              n * g,
              g,
              true,
              pgShift,
              true,
            ),
          [(VA + first * g) / PAGE, (VA + (first + n) * g) / PAGE],
        );
      }
    }
  });

  it("stage 2 (TLBI_S2_IPA), leaf, without RIL: one command per granule", () => {
    checkRangeCommands(
      { stage: 2, pgShift: 12, count: 24 },
      () =>
        linuxTlbiRange(O.TLBI_S2_IPA, { VMID: 9 }, VA + 2 * PAGE, 7 * PAGE, PAGE, true, 12, false),
      [VA / PAGE + 2, VA / PAGE + 9],
    );
  });

  it("a 2 MiB block by Linux's leaf range: TTL = 2, NUM = 0, SCALE = 9", () => {
    const cmds = linuxTlbiRange(
      O.TLBI_NH_VA,
      { ASID: 7 },
      VA,
      0x20_0000,
      0x20_0000,
      true,
      12,
      true,
    );
    expect(cmds).toHaveLength(1);
    const c = cmds[0] as Uint32Array;
    expect([((c[0] as number) >>> 12) & 31, ((c[0] as number) >>> 20) & 31]).toEqual([0, 9]);
    expect([((c[2] as number) >>> 8) & 3, ((c[2] as number) >>> 10) & 3]).toEqual([2, 1]);
    gone(s1Leaf({ level: 2 }), ...cmds);
  });

  it("a non-leaf range of one page is widened to two (Linux avoids NUM = SCALE = TTL = 0)", () => {
    const cmds = linuxTlbiRange(O.TLBI_NH_VA, { ASID: 7 }, VA, PAGE, PAGE, false, 12, true);
    expect(cmds).toHaveLength(1);
    expect(specRange(cmds[0] as Uint32Array, false)).toEqual([VA / PAGE, VA / PAGE + 2]);
    gone(s1Table(), ...cmds);
  });

  it("without RIL Linux sends one command per granule, each covering that granule", () => {
    checkRangeCommands(
      { stage: 1, pgShift: 12, count: 24 },
      () =>
        linuxTlbiRange(O.TLBI_NH_VA, { ASID: 7 }, VA + 3 * PAGE, 9 * PAGE, PAGE, true, 12, false),
      [VA / PAGE + 3, VA / PAGE + 12],
    );
  });

  test.prop([fc.integer({ min: 0, max: 40 }), fc.integer({ min: 1, max: 40 }), fc.boolean()], {
    seed: 0x5eed,
    numRuns: 25,
  })(
    "any range: exactly the granules of the decoded commands are invalidated",
    (first, n, leaf) => {
      checkRangeCommands(
        { stage: 1, pgShift: 12, count: 84 },
        () =>
          linuxTlbiRange(
            O.TLBI_NH_VA,
            { ASID: 7 },
            VA + first * PAGE,
            n * PAGE,
            PAGE,
            leaf,
            12,
            true,
          ),
        [VA / PAGE + first, VA / PAGE + first + n],
      );
    },
  );
});

// ----- Range fields when IDR3.RIL = 0 -----------------------------------------------------------

describe("range fields without IDR3.RIL", () => {
  it("IDR3.RIL = 0 with reserved-field checking: NUM/SCALE/TG/TTL make the command CERROR_ILL", () => {
    const fields: Record<string, number>[] = [
      { TG: 1, NUM: 3 },
      { TG: 1, TTL: 3 },
      { NUM: 1 },
      { SCALE: 2 },
      { TTL: 1 },
    ];
    for (const f of fields) {
      const m = smmuTestMachine({ features: { ril: false } });
      m.submitRaw([cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, ...f })]);
      expect(consErr(m), JSON.stringify(f)).toBe(CMDQ_CONS_ERR_ILL);
    }
    const m = smmuTestMachine({ features: { ril: false } });
    m.submitRaw([cmd(O.TLBI_S2_IPA, { VMID: 9, IPA: VA, TG: 3, NUM: 1 })]);
    expect(consErr(m)).toBe(CMDQ_CONS_ERR_ILL);
  });

  it("IDR3.RIL = 0 ignoring reserved fields: the command is a single-address invalidation", () => {
    const features = { ril: false, checkReserved: false };
    // NUM = 7 would cover VA - 4 pages .. VA + 3 pages with RIL; without it only VA - 4 pages.
    const s = s1Leaf({ machine: { features } });
    survives(s, [
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA - 4 * PAGE, TG: 1, NUM: 7, Leaf: 1 }),
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA - PAGE, TG: 3, NUM: 0, SCALE: 1, Leaf: 1 }),
    ]);
    // TTL and TG are unused: a mismatching hint does not keep the entry.
    gone(s, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, TG: 2, TTL: 1, Leaf: 1 }));
  });
});

// ----- ATC invalidation -------------------------------------------------------------------------

describe("CMD_ATC_INV", () => {
  const ranges: [number, number][] = [
    [0x1000, 0x1000],
    [0x8000, 0x4000],
    [0x7000, 0x4000],
    [0x40_0000, 0x20_0000],
    [0x1234_5000, 0x3000],
    [0x12_3456_7000, 0x1000],
    [0xffff_f000, 0x2000],
    [0x5000, 0],
  ];

  for (const ssid of [0, 5]) {
    it(`is delivered to the device with Linux's span (${ssid ? "with PASID" : "no PASID"})`, () => {
      const m = smmuTestMachine();
      const p = m.port(0x42);
      const other = m.port(0x43);
      const want = [];
      for (const [iova, size] of ranges) {
        const k = linuxAtcInv(0x42, ssid, iova, size);
        run(m, k.c);
        want.push({ pasid: ssid ? ssid : NO_PASID, pfn: k.pfn, pages: k.pages, global: false });
        // The span covers the range.
        if (size > 0) {
          expect(k.pfn * PAGE).toBeLessThanOrEqual(iova);
          expect((k.pfn + k.pages) * PAGE).toBeGreaterThanOrEqual(iova + size);
        }
      }
      expect(p.invalidations).toEqual(want);
      expect(other.invalidations).toEqual([]);
    });
  }

  it("aligns Address down to the span (Address[11+Size:0] taken as zero)", () => {
    const m = smmuTestMachine();
    const p = m.port(1);
    run(m, cmd(O.ATC_INV, { StreamID: 1, Address: 0x1_7000, Size: 3 }));
    run(m, cmd(O.ATC_INV, { StreamID: 1, Address: 0x1_7000, Size: 0 }));
    expect(p.invalidations).toEqual([
      { pasid: NO_PASID, pfn: 0x10, pages: 8, global: false },
      { pasid: NO_PASID, pfn: 0x17, pages: 1, global: false },
    ]);
  });

  it("Global is passed with a PASID and IGNORED without one", () => {
    const m = smmuTestMachine();
    const p = m.port(1);
    run(m, cmd(O.ATC_INV, { StreamID: 1, SSV: 1, SubstreamID: 9, Global: 1, Size: 52 }));
    run(m, cmd(O.ATC_INV, { StreamID: 1, Global: 1, Size: 52 }));
    expect(p.invalidations.map((i) => [i.pasid, i.global])).toEqual([
      [9, true],
      [NO_PASID, false],
    ]);
  });

  it("a StreamID no device answers fails the next CMD_SYNC with CERROR_ATC_INV_SYNC, which runs again after the acknowledgement", () => {
    const m = smmuTestMachine();
    const s = m.smmu;
    const before = consIndex(m);
    m.submit(cmd(O.ATC_INV, { StreamID: 0x77, Size: 52 }));
    expect((s.read32(SMMU_REG.CMDQ_CONS) >>> 24) & 0x7f).toBe(CMDQ_CONS_ERR_ATC_INV_SYNC);
    expect(s.cmdqStopped).toBe(true);
    // CONS stays on the CMD_SYNC, one past the ATC_INV.
    expect(consIndex(m)).toBe(before + 1);
    s.write32(SMMU_REG.GERRORN, s.read32(SMMU_REG.GERROR));
    expect(s.cmdqStopped).toBe(false);
    expect(consIndex(m)).toBe(before + 2);
    // The failure was reported once: the next ATC_INV to a live device syncs cleanly.
    m.port(1);
    run(m, cmd(O.ATC_INV, { StreamID: 1, Size: 52 }));
  });

  it("Size above 52 is CERROR_ILL (the spec permits this or an UNKNOWN span)", () => {
    const m = smmuTestMachine();
    const p = m.port(1);
    m.submitRaw([cmd(O.ATC_INV, { StreamID: 1, Size: 53 })]);
    expect(consErr(m)).toBe(CMDQ_CONS_ERR_ILL);
    expect(p.invalidations).toEqual([]);
  });

  it("an ATS translation answer is not an SMMU cache entry: ATC_INV leaves the TLB alone", () => {
    const x = s1Setup({ sid: 1 });
    x.m.b.setSte(x.m.st, 1, { Config: 5, S1ContextPtr: x.cdt.ptr, EATS: 1 });
    const p = x.m.port(1);
    const r = x.m.dma(1, -1, VA, DMA_READ, { at: AT_TRANSLATION_REQUEST });
    expect(r.pa).toBe(PA);
    const s = makeStale(x.m, 1, -1, VA, () => {
      x.pt.map(VA, PA2);
    });
    survives(s, [cmd(O.ATC_INV, { StreamID: 1, Size: 52 })]);
    expect(p.invalidations).toHaveLength(1);
  });

  // Spec 4.5.1: CMD_ATC_INV "is IGNORED if ... SMMUEN is 0 for the Security state corresponding
  // to the Command queue". The model delivers it to the device whatever SMMUEN is.
  it("with SMMUEN = 0 the command is IGNORED: nothing reaches the device", () => {
    const m = smmuTestMachine({ noEnable: true });
    const p = m.port(1);
    run(m, cmd(O.ATC_INV, { StreamID: 1, Size: 52 }));
    expect(p.invalidations).toEqual([]);
  });
});

// ----- Command errors ---------------------------------------------------------------------------

function consErr(m: SmmuTestMachine): number {
  return (m.smmu.read32(SMMU_REG.CMDQ_CONS) >>> 24) & 0x7f;
}

function consIndex(m: SmmuTestMachine): number {
  return m.smmu.read32(SMMU_REG.CMDQ_CONS) & 0xfffff;
}

function cmdqErrActive(m: SmmuTestMachine): boolean {
  const s = m.smmu;
  return ((s.read32(SMMU_REG.GERROR) ^ s.read32(SMMU_REG.GERRORN)) & GERROR_CMDQ_ERR) !== 0;
}

describe("command errors", () => {
  const illegal: [string, SmmuTestMachineOptions, Uint32Array][] = [
    ["a reserved opcode", {}, new Uint32Array([0x08, 0, 0, 0])],
    ["an IMPLEMENTATION DEFINED opcode", {}, new Uint32Array([0x80, 0, 0, 0])],
    ["SSec = 1 on the Non-secure queue", {}, cmd(O.CFGI_STE, { StreamID: 1, SSec: 1 })],
    ["CFGI_CD with SSec = 1", {}, cmd(O.CFGI_CD, { StreamID: 1, SSec: 1 })],
    ["a Secure-only TLBI (TLBI_EL3_ALL)", {}, cmd(O.TLBI_EL3_ALL)],
    ["a Secure-only TLBI (TLBI_SNH_ALL)", {}, cmd(O.TLBI_SNH_ALL)],
    [
      "a range TLBI with NUM = SCALE = TTL = 0 (Reserved, 4.4.1.1)",
      {},
      cmd(O.TLBI_NH_VA, { ASID: 1, Address: VA, TG: 1 }),
    ],
    [
      "S2_IPA range with NUM = SCALE = TTL = 0",
      {},
      cmd(O.TLBI_S2_IPA, { VMID: 1, IPA: VA, TG: 3 }),
    ],
    [
      "TG = 16K, TTL = 1, NUM = SCALE = 0 without IDR5.DS (TTL taken as 0: the reserved combination)",
      {},
      cmd(O.TLBI_NH_VA, { ASID: 1, Address: VA, TG: 2, TTL: 1 }),
    ],
    ["TTL128 = 1 (no 128-bit descriptors)", {}, cmd(O.TLBI_NH_VA, { TG: 1, TTL: 3, TTL128: 1 })],
    ["SCALE[5] without IDR5.DS", {}, cmd(O.TLBI_NH_VA, { TG: 1, TTL: 3, SCALE: 32 })],
    ["CMD_SYNC with CS = 0b11", {}, cmd(O.CMD_SYNC, { CS: 3 })],
    ["a RES0 bit of CFGI_STE set", {}, new Uint32Array([O.CFGI_STE, 1, 0x20, 0])],
    ["TLBI_EL2_ALL without IDR0.Hyp", { features: { hyp: false } }, cmd(O.TLBI_EL2_ALL)],
    [
      "TLBI_EL2_VA without IDR0.Hyp",
      { features: { hyp: false } },
      cmd(O.TLBI_EL2_VA, { Address: VA }),
    ],
    ["TLBI_S2_IPA without stage 2", { features: { s2p: false } }, cmd(O.TLBI_S2_IPA, { IPA: VA })],
    ["TLBI_S12_VMALL without stage 2", { features: { s2p: false } }, cmd(O.TLBI_S12_VMALL)],
    ["TLBI_NH_ALL without stage 1", { features: { s1p: false } }, cmd(O.TLBI_NH_ALL)],
    ["TLBI_NH_VA without stage 1", { features: { s1p: false } }, cmd(O.TLBI_NH_VA)],
    ["CFGI_CD without stage 1", { features: { s1p: false } }, cmd(O.CFGI_CD, { StreamID: 1 })],
    ["CFGI_CD_ALL without stage 1", { features: { s1p: false } }, cmd(O.CFGI_CD_ALL)],
    ["ATC_INV without ATS", { features: { ats: false, pri: false } }, cmd(O.ATC_INV, { Size: 52 })],
  ];
  for (const [name, opts, c] of illegal) {
    it(`${name} is CERROR_ILL and stops the queue at it`, () => {
      const m = smmuTestMachine(opts);
      m.submitRaw([cmd(O.TLBI_NSNH_ALL), c, cmd(O.TLBI_NSNH_ALL)]);
      expect(consIndex(m)).toBe(1);
      expect(consErr(m)).toBe(CMDQ_CONS_ERR_ILL);
      expect(cmdqErrActive(m)).toBe(true);
      expect(m.interrupts).toContain("gerror");
      expect(m.smmu.stats.commands).toBe(1);
    });
  }

  it("TLBI_NSNH_ALL is legal on a stage-1-only SMMU (4.4.4.1)", () => {
    const m = smmuTestMachine({ features: { s2p: false } });
    run(m, cmd(O.TLBI_NSNH_ALL));
  });

  it("commands after the bad one have no effect until the error is acknowledged and the slot fixed", () => {
    const m = smmuTestMachine();
    const a = s1Leaf({ m, sid: 1, asid: 7 });
    const bx = s1Setup({ m, sid: 2, asid: 8, iova: VA + 0x20_0000 });
    const b = makeStale(m, 2, -1, VA + 0x20_0000, () => {
      bx.pt.map(VA + 0x20_0000, PA2);
    });
    const s = m.smmu;
    m.submitRaw([
      cmd(O.TLBI_NH_ASID, { ASID: 7 }),
      cmd(O.CFGI_STE, { StreamID: 1, SSec: 1 }),
      cmd(O.TLBI_NH_ASID, { ASID: 8 }),
      cmd(O.CMD_SYNC),
    ]);
    // The command before the bad one ran; CONS stays on the bad one.
    expect(a.cached()).toEqual(a.fresh());
    expect(consIndex(m)).toBe(1);
    expect(consErr(m)).toBe(CMDQ_CONS_ERR_ILL);
    expect(s.read32(SMMU_REG.GERROR) & GERROR_CMDQ_ERR).toBe(GERROR_CMDQ_ERR);
    expect(b.cached()).toEqual(b.old);
    // More commands while the error is active: nothing is consumed.
    m.submitRaw([cmd(O.TLBI_NSNH_ALL)]);
    expect(consIndex(m)).toBe(1);
    expect(b.cached()).toEqual(b.old);
    // Acknowledging without fixing: the same command fails again, GERROR toggles again.
    const g1 = s.read32(SMMU_REG.GERROR);
    s.write32(SMMU_REG.GERRORN, g1);
    expect(consIndex(m)).toBe(1);
    expect(consErr(m)).toBe(CMDQ_CONS_ERR_ILL);
    expect(s.read32(SMMU_REG.GERROR)).toBe((g1 ^ GERROR_CMDQ_ERR) >>> 0);
    expect(b.cached()).toEqual(b.old);
    // Linux's fix: overwrite the bad slot with a CMD_SYNC, then acknowledge.
    const sync = cmd(O.CMD_SYNC);
    m.mem.write64(m.cmdq + 16, sync[0] as number, sync[1] as number);
    m.mem.write64(m.cmdq + 24, sync[2] as number, sync[3] as number);
    s.write32(SMMU_REG.GERRORN, s.read32(SMMU_REG.GERROR));
    expect(cmdqErrActive(m)).toBe(false);
    expect(consIndex(m)).toBe(s.read32(SMMU_REG.CMDQ_PROD) & 0xfffff);
    expect(consErr(m)).toBe(0);
    expect(b.cached()).toEqual(b.fresh());
  });

  it("while the error is active PROD may move back to CONS: the withdrawn commands never run", () => {
    const m = smmuTestMachine();
    const b = s1Leaf({ m, sid: 2, asid: 8 });
    const s = m.smmu;
    m.submitRaw([new Uint32Array([0x08, 0, 0, 0]), cmd(O.TLBI_NH_ASID, { ASID: 8 })]);
    expect(consIndex(m)).toBe(0);
    s.write32(SMMU_REG.CMDQ_PROD, 0);
    s.write32(SMMU_REG.GERRORN, s.read32(SMMU_REG.GERROR));
    expect(cmdqErrActive(m)).toBe(false);
    expect(consIndex(m)).toBe(0);
    expect(b.cached()).toEqual(b.old);
  });

  it("TG = 4K, TTL = 1 with NUM > 0 is legal and covers a level 1 block", () => {
    const s = s1Leaf({ level: 1 });
    gone(s, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 1, TTL: 1, NUM: 1 }));
  });

  // Spec 4.4.1.1 (TTL table): with TG = 16K and IDR5.DS == 0, TTL = 0b01 "is Reserved, and
  // hardware treats as TTL == 0b00". Only with NUM = SCALE = 0 does that become the reserved
  // combination (CERROR_ILL). A range with NUM > 0 is legal and covers leaves at any level. The
  // model raises CERROR_ILL for TG = 16K / TTL = 1 whatever NUM and SCALE are.
  it("TG = 16K, TTL = 1, NUM > 0 without DS is legal and acts as TTL = 0", () => {
    const s = s1Leaf({ asid: 7, pgShift: 14 });
    gone(s, cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 2, TTL: 1, NUM: 1 }));
  });
});

// ----- CMD_SYNC ---------------------------------------------------------------------------------

describe("CMD_SYNC", () => {
  const MSI = 0x9000;

  it("CS = SIG_SEV completes (CONS passes it) with no interrupt and no memory write", () => {
    const m = smmuTestMachine();
    const s = s1Leaf({ m });
    m.mem.write32(MSI, 0xabcd);
    const before = m.interrupts.length;
    m.submitRaw([
      cmd(O.TLBI_NH_ASID, { ASID: 7 }),
      cmd(O.CMD_SYNC, { CS: 2, MSIData: 1, MSIAddress: MSI }),
    ]);
    expect(consIndex(m)).toBe(2);
    expect(m.smmu.stats.syncs).toBe(1);
    expect(m.interrupts.length).toBe(before);
    expect(m.mem.read32(MSI)).toBe(0xabcd);
    expect(s.cached()).toEqual(s.fresh());
  });

  it("CS = SIG_SEV without IDR0.SEV is SIG_NONE", () => {
    const m = smmuTestMachine({ features: { sev: false } });
    m.submitRaw([cmd(O.CMD_SYNC, { CS: 2 })]);
    expect(consIndex(m)).toBe(1);
    expect(m.interrupts).not.toContain("cmd-sync");
  });

  it("CS = SIG_NONE ignores MSIAddress and MSIData", () => {
    const m = smmuTestMachine();
    m.submitRaw([cmd(O.CMD_SYNC, { CS: 0, MSIData: 7, MSIAddress: MSI })]);
    expect(m.mem.read32(MSI)).toBe(0);
    expect(consIndex(m)).toBe(1);
  });

  it("CS = SIG_IRQ with MSIAddress: the MSI write is seen only after the earlier invalidations completed", () => {
    const m = smmuTestMachine();
    const s = s1Leaf({ m, asid: 7 });
    const seen: Outcome[] = [];
    const prev = m.mem.onWrite;
    m.mem.onWrite = (pa, bytes) => {
      prev?.(pa, bytes);
      if (pa === MSI) seen.push(outcome(m.dma(1, -1, VA, DMA_READ, { uncached: false })));
    };
    m.submitRaw([
      cmd(O.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 }),
      cmd(O.CMD_SYNC, { CS: 1, MSIData: 0x600d, MSIAddress: MSI, MSH: 3, MSIAttr: 0xf }),
    ]);
    m.mem.onWrite = prev;
    expect(m.mem.read32(MSI)).toBe(0x600d);
    expect(seen).toEqual([s.fresh()]);
  });

  it("CS = SIG_IRQ with Linux's MSI poll: MSIData 0 written over the CMD_SYNC's own slot", () => {
    const m = smmuTestMachine();
    const slot = m.cmdq + 16;
    m.submitRaw([
      cmd(O.TLBI_NSNH_ALL),
      cmd(O.CMD_SYNC, { CS: 1, MSIData: 0, MSIAddress: slot, MSH: 3, MSIAttr: 0xf }),
    ]);
    expect(m.mem.read32(slot)).toBe(0);
  });

  it("an MSI address above 4 GiB is written; one the memory system aborts sets GERROR.MSI_CMDQ_ABT_ERR", () => {
    const m = smmuTestMachine();
    const hi = 0x1_0000_0000 + MSI;
    m.submitRaw([cmd(O.CMD_SYNC, { CS: 1, MSIData: 0x55, MSIAddress: hi })]);
    expect(m.mem.read32(hi)).toBe(0x55);
    expect(m.smmu.read32(SMMU_REG.GERROR) & GERROR_MSI_CMDQ_ABT_ERR).toBe(0);
    m.submitRaw([cmd(O.CMD_SYNC, { CS: 1, MSIData: 0x55, MSIAddress: 2 ** 49 })]);
    expect(m.smmu.read32(SMMU_REG.GERROR) & GERROR_MSI_CMDQ_ABT_ERR).toBe(GERROR_MSI_CMDQ_ABT_ERR);
    // The sync itself completed and the queue goes on.
    expect(m.smmu.cmdqStopped).toBe(false);
    expect(consIndex(m)).toBe(2);
  });

  it("CS = SIG_IRQ without MSIs (IDR0.MSI = 0) ignores the address and raises the wired interrupt", () => {
    const m = smmuTestMachine({ features: { msi: false } });
    m.submitRaw([cmd(O.CMD_SYNC, { CS: 1, MSIData: 3, MSIAddress: MSI })]);
    expect(m.mem.read32(MSI)).toBe(0);
    expect(m.interrupts).toContain("cmd-sync");
  });

  // Spec 4.7.3 (SIG_IRQ): "On implementations that support wired interrupts, an event on a unique
  // wired interrupt output is asserted on this signal, regardless of the value of MSIAddress."
  // The model has a wired CMD_SYNC output (it raises it when MSIAddress is 0) but does not assert
  // it when it performs the MSI write.
  it("CS = SIG_IRQ with an MSI address also asserts the wired CMD_SYNC interrupt", () => {
    const m = smmuTestMachine();
    m.submitRaw([cmd(O.CMD_SYNC, { CS: 1, MSIData: 3, MSIAddress: MSI })]);
    expect(m.mem.read32(MSI)).toBe(3);
    expect(m.interrupts).toContain("cmd-sync");
  });

  it("a fault record for a transaction terminated before the CMD_SYNC is visible when it completes", () => {
    const m = smmuTestMachine();
    m.b.setSte(m.st, 9, { Config: 5, V: 0 });
    expect(m.dma(9, -1, VA).status).toBe(XLATE_FAULT);
    m.submit();
    expect(m.events().map((e) => e.id)).toEqual([EVT_ID.C_BAD_STE]);
  });
});
