import {
  AT_TRANSLATED,
  AT_TRANSLATION_REQUEST,
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  FaultKind,
  PRG_RESPONSE_FAILURE,
  PRG_SUCCESS,
  XLATE_FAULT,
  XLATE_OK,
  XLATE_STALLED,
} from "@iommu-sim/iommu-core";
import { decode, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { L1_CD } from "../format/cd.js";
import { CMDQ_OP } from "../format/commands.js";
import { EVT_ID } from "../format/events.js";
import {
  CMDQ_CONS_ERR_ILL,
  CR0_CMDQEN,
  CR0_EVTQEN,
  CR0_PRIQEN,
  CR0_SMMUEN,
  CR2_E2H,
  CR2_PTM,
  CR2_RECINVSID,
  GBPA_ABORT,
  GBPA_UPDATE,
  GERROR_CMDQ_ERR,
  GERROR_EVTQ_ABT_ERR,
  GERROR_MSI_EVTQ_ABT_ERR,
  GERROR_PRIQ_ABT_ERR,
  IDR0_REG,
  IDR1_REG,
  IDR3_REG,
  IDR5_REG,
  SMMU_REG,
} from "../format/registers.js";
import { STE as STE_LAYOUT } from "../format/ste.js";
import { SmmuTestMachine, smmuTestMachine } from "../testing/table-builder.js";
import { smmuConfigEqual, viewOfSte } from "./smmu-entry-view.js";
import { SMMU_ABORT_SILENT } from "./smmu-event.js";
import type { SmmuFeatures } from "./smmu-features.js";
import { SmmuV3 } from "./smmu-v3.js";

const cmd = SmmuTestMachine.command;
const VA = 0x4000_0000;
const PA = 0x8000_0000;

/** An S1 STE for `sid` with one CD (ASID `asid`) over a fresh stage 1 table. */
function s1(
  m: SmmuTestMachine,
  sid = 1,
  o: { pgShift?: number; ia?: number; asid?: number; cd?: Record<string, number> } = {},
) {
  const pt = m.b.lpae(1, o.pgShift ?? 12, o.ia ?? 48);
  const cdt = m.b.cdTable(0);
  const cdAt = m.b.setCd(cdt, 0, m.b.s1CdFields(pt, o.asid ?? 1, o.cd ?? {}));
  const steAt = m.b.setSte(m.st, sid, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 0 });
  return { pt, cdt, cdAt, steAt };
}

function s2(
  m: SmmuTestMachine,
  sid = 1,
  o: {
    pgShift?: number;
    ia?: number;
    vmid?: number;
    startLevel?: number;
    ste?: Record<string, number>;
  } = {},
) {
  const pt = m.b.lpae(2, o.pgShift ?? 12, o.ia ?? 40, { startLevel: o.startLevel });
  const steAt = m.b.setSte(m.st, sid, {
    Config: 6,
    ...m.b.s2SteFields(pt, o.vmid ?? 1, o.ste ?? {}),
  });
  return { pt, steAt };
}

function ok(r: { status: number; pa: number }, pa: number): void {
  expect(r.status).toBe(XLATE_OK);
  expect(r.pa).toBe(pa);
}

describe("ID registers and bring-up", () => {
  it("IDR0/1/3/5 report the configured features", () => {
    const m = smmuTestMachine({
      features: { sidBits: 12, ssidBits: 10, ril: false, oas: 44, granules: ["4K"] },
    });
    const idr0 = decode(IDR0_REG, [m.smmu.read32(SMMU_REG.IDR0)]);
    expect(idr0).toMatchObject({
      S1P: 1,
      S2P: 1,
      TTF: 2,
      ATS: 1,
      PRI: 1,
      ST_LEVEL: 1,
      CD2L: 1,
      ASID16: 1,
      VMID16: 1,
      HTTU: 2,
    });
    expect(decode(IDR1_REG, [m.smmu.read32(SMMU_REG.IDR1)])).toMatchObject({
      SIDSIZE: 12,
      SSIDSIZE: 10,
    });
    expect(decode(IDR3_REG, [m.smmu.read32(SMMU_REG.IDR3)]).RIL).toBe(0);
    expect(decode(IDR5_REG, [m.smmu.read32(SMMU_REG.IDR5)])).toMatchObject({
      OAS: 4,
      GRAN4K: 1,
      GRAN16K: 0,
      GRAN64K: 0,
    });
  });

  it("a bad feature set is refused at construction", () => {
    expect(() => smmuTestMachine({ features: { pri: true, ats: false } })).toThrow(/PRI needs ATS/);
  });

  it("CR0ACK follows CR0 at once", () => {
    const m = smmuTestMachine({ noEnable: true });
    const s = m.smmu;
    const v = s.read32(SMMU_REG.CR0);
    s.write32(SMMU_REG.CR0, v | CR0_SMMUEN);
    expect(s.read32(SMMU_REG.CR0ACK)).toBe(v | CR0_SMMUEN);
    s.write32(SMMU_REG.CR0, 0);
    expect(s.read32(SMMU_REG.CR0ACK)).toBe(0);
  });

  it("GBPA: bypass with SMMUEN clear; ABORT only after a write with Update", () => {
    const m = smmuTestMachine({ noEnable: true });
    ok(m.dma(3, -1, 0x1234), 0x1234);
    m.smmu.write32(SMMU_REG.GBPA, GBPA_ABORT); // no Update: ignored
    ok(m.dma(3, -1, 0x1234), 0x1234);
    m.smmu.write32(SMMU_REG.GBPA, GBPA_ABORT | GBPA_UPDATE);
    expect(m.smmu.read32(SMMU_REG.GBPA) & GBPA_UPDATE).toBe(0);
    const r = m.dma(3, -1, 0x1234);
    expect(r.status).toBe(XLATE_FAULT);
    expect(r.code).toBe(SMMU_ABORT_SILENT);
    expect(m.events()).toEqual([]);
  });

  it("STRTAB_BASE written while SMMUEN is set is ignored", () => {
    const m = smmuTestMachine();
    const before = m.smmu.read32(SMMU_REG.STRTAB_BASE);
    m.smmu.write32(SMMU_REG.STRTAB_BASE, 0x5000);
    expect(m.smmu.read32(SMMU_REG.STRTAB_BASE)).toBe(before);
  });
});

describe("STE Config", () => {
  it("abort terminates silently", () => {
    const m = smmuTestMachine();
    m.b.setSte(m.st, 2, { Config: 0 });
    const r = m.dma(2, -1, VA);
    expect(r.status).toBe(XLATE_FAULT);
    expect(r.fault).toBe(FaultKind.BLOCKED);
    expect(m.events()).toEqual([]);
  });

  it("bypass outputs the input address", () => {
    const m = smmuTestMachine();
    m.b.setSte(m.st, 2, { Config: 4 });
    ok(m.dma(2, -1, 0x12345678, DMA_WRITE), 0x12345678);
  });

  it("stage 1 translates through the CD's TTB0", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m);
    pt.map(VA, PA);
    ok(m.dma(1, -1, VA + 0x10, DMA_READ | DMA_WRITE), PA + 0x10);
  });

  it("stage 2 translates the input as an IPA", () => {
    const m = smmuTestMachine();
    const { pt } = s2(m);
    pt.map(VA, PA);
    ok(m.dma(1, -1, VA + 8, DMA_WRITE), PA + 8);
  });

  it("nested: the CD, every stage 1 table and the output go through stage 2", () => {
    const m = smmuTestMachine();
    const { s1pt } = nested(m, 7, 9, 5);
    s1pt.map(VA, 0x2000_0000); // output IPA
    ok(m.dma(7, -1, VA + 0x44), PA + 0x44);
    expect(m.smmu.tlb.entries()[0]).toMatchObject({ vmid: 9, asid: 5, kind: 3 });
  });

  it("nested: a stage 2 fault on a stage 1 table fetch is S2 with CLASS TT and the descriptor's IPA", () => {
    const m = smmuTestMachine();
    const { s1pt } = nested(m, 7, 9, 5);
    // The level 0 descriptor points at a level 1 table whose IPA stage 2 does not map.
    s1pt.raw(VA, 0, 0x7fff_0000 | 3, 0);
    expect(m.dma(7, -1, VA).code).toBe(EVT_ID.F_TRANSLATION);
    const f = m.events()[0]?.fields;
    expect(f).toMatchObject({ S2: 1, CLASS: 1, IPA: 0x7fff_0000 });
  });

  it("nested: a stage 2 fault fetching the CD is S2 with CLASS CD", () => {
    const m = smmuTestMachine();
    const { cdIpa, s2pt } = nested(m, 7, 9, 5);
    s2pt.raw(cdIpa - (cdIpa % 0x20_0000), 2, 0, 0);
    expect(m.dma(7, -1, VA).code).toBe(EVT_ID.F_TRANSLATION);
    expect(m.events()[0]?.fields).toMatchObject({ S2: 1, CLASS: 0, IPA: cdIpa - (cdIpa % 4096) });
  });
});

/** IPA = PA + IPA_OFF for the structures of a nested configuration. */
const IPA_OFF = 0x3000_0000;

/** A nested STE for `sid` (VMID `vmid`, ASID `asid`) whose stage 2 maps the builder's memory at +IPA_OFF and IPA 0x2000_0000 to PA. */
function nested(m: SmmuTestMachine, sid: number, vmid: number, asid: number) {
  const s2pt = m.b.lpae(2, 12, 40);
  for (let pa = 0; pa < 0x4020_0000; pa += 0x20_0000) s2pt.map(pa + IPA_OFF, pa, 2);
  s2pt.map(0x2000_0000, PA);
  const s1pt = m.b.lpae(1, 12, 48, { ipaOffset: -IPA_OFF });
  const cdt = m.b.cdTable(0);
  m.b.setCd(cdt, 0, m.b.s1CdFields(s1pt, asid));
  m.b.setSte(m.st, sid, {
    Config: 7,
    S1ContextPtr: cdt.ptr + IPA_OFF,
    ...m.b.s2SteFields(s2pt, vmid),
  });
  return { s1pt, s2pt, cdIpa: cdt.ptr + IPA_OFF };
}

describe("granules, levels and blocks", () => {
  for (const g of [12, 14, 16]) {
    it(`stage 1 with the ${2 ** (g - 10)}K granule walks pages and level 2 blocks`, () => {
      const m = smmuTestMachine();
      const { pt } = s1(m, 1, { pgShift: g, ia: 48 });
      pt.map(VA, PA);
      const block = 2 ** (g + (g - 3));
      pt.map(0x10_0000_0000, 0x1_0000_0000, 2);
      ok(m.dma(1, -1, VA + 5), PA + 5);
      ok(m.dma(1, -1, 0x10_0000_0000 + block - 8), 0x1_0000_0000 + block - 8);
    });
    it(`stage 2 with the ${2 ** (g - 10)}K granule walks concatenated start tables`, () => {
      const m = smmuTestMachine();
      // ia 40: one level lower than natural start means concatenated tables (4K: 2 tables at L1).
      const natural = 4 - Math.ceil((40 - g) / (g - 3));
      const start = g === 12 ? natural + 1 : natural;
      const { pt } = s2(m, 1, { pgShift: g, ia: 40, startLevel: start });
      pt.map(0xff_0000_0000 - 2 ** g, PA);
      ok(m.dma(1, -1, 0xff_0000_0000 - 2 ** g + 3), PA + 3);
    });
  }

  it("a 1 GiB level 1 block with the 4K granule", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m);
    pt.map(0x40_0000_0000, 0xc000_0000, 1);
    ok(m.dma(1, -1, 0x40_0000_0000 + 0x3fff_f000), 0xc000_0000 + 0x3fff_f000);
  });

  it("a block at a level without blocks is a translation fault (16K level 1)", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 1, { pgShift: 14, ia: 48 });
    pt.map(0x100_0000_0000, 0, 1);
    const r = m.dma(1, -1, 0x100_0000_0000);
    expect(r.code).toBe(EVT_ID.F_TRANSLATION);
  });

  it("the contiguous hint makes one TLB entry for the group", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m);
    for (let i = 0; i < 16; i++) pt.map(VA + i * 4096, PA + i * 4096, 3, { contiguous: true });
    ok(m.dma(1, -1, VA), PA);
    expect(m.smmu.tlb.entries()[0]?.sizeShift).toBe(16);
    ok(m.dma(1, -1, VA + 15 * 4096 + 1), PA + 15 * 4096 + 1);
    expect(m.smmu.tlb.size()).toBe(1);
  });

  it("TTB1 translates the upper range when EPD1 is clear", () => {
    const m = smmuTestMachine();
    const pt0 = m.b.lpae(1, 12, 48);
    const pt1 = m.b.lpae(1, 12, 48);
    const cdt = m.b.cdTable(0);
    m.b.setCd(cdt, 0, { ...m.b.s1CdFields(pt0, 1), EPD1: 0, T1SZ: 16, TG1: 2, TTB1: pt1.rootDesc });
    m.b.setSte(m.st, 1, { Config: 5, S1ContextPtr: cdt.ptr });
    const hiVa = 2 ** 64 - 2 ** 20; // 0xffff_ffff_fff0_0000
    pt1.map(BigInt("0xfffffffffff00000"), PA);
    ok(m.dma(1, -1, hiVa), PA);
  });

  it("EPD0 makes TTB0 misses translation faults", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 1, { cd: { EPD0: 1 } });
    pt.map(VA, PA);
    expect(m.dma(1, -1, VA).code).toBe(EVT_ID.F_TRANSLATION);
  });

  it("AF = 0 faults F_ACCESS, and HA sets AF in memory instead", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m);
    const at = pt.map(VA, PA, 3, { af: false });
    expect(m.dma(1, -1, VA).code).toBe(EVT_ID.F_ACCESS);
    const m2 = smmuTestMachine();
    const x = s1(m2, 1, { cd: { HA: 1 } });
    const at2 = x.pt.map(VA, PA, 3, { af: false });
    ok(m2.dma(1, -1, VA), PA);
    expect(m2.mem.read32(at2) & 0x400).toBe(0x400);
    void at;
  });

  it("HD makes a DBM read-only page writable on a write", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 1, { cd: { HA: 1, HD: 1 } });
    const at = pt.map(VA, PA, 3, { ap: 3, dbm: true });
    ok(m.dma(1, -1, VA, DMA_READ), PA);
    ok(m.dma(1, -1, VA, DMA_WRITE), PA);
    expect(m.mem.read32(at) & 0x80).toBe(0);
  });

  it("translateUncached leaves AF alone and fills no cache", () => {
    const m = smmuTestMachine();
    const x = s1(m, 1, { cd: { HA: 1 } });
    const at = x.pt.map(VA, PA, 3, { af: false });
    ok(m.dma(1, -1, VA, DMA_READ, { uncached: true }), PA);
    expect(m.mem.read32(at) & 0x400).toBe(0);
    expect(m.smmu.tlb.size()).toBe(0);
    expect(m.smmu.configCache.size()).toBe(0);
  });
});

describe("stream and CD tables", () => {
  it("2-level stream table", () => {
    const m = smmuTestMachine({ streamTable: "2lvl", log2size: 16 });
    m.b.setSte(m.st, 0x1234, { Config: 4 });
    ok(m.dma(0x1234, -1, 0x5000), 0x5000);
    // A SID whose L1 descriptor has Span 0: C_BAD_STREAMID.
    expect(m.dma(0x4321, -1, 0).code).toBe(EVT_ID.C_BAD_STREAMID);
  });

  for (const fmt of [0, 1, 2]) {
    it(`CD table S1Fmt ${fmt} selects the CD by SubstreamID`, () => {
      const m = smmuTestMachine();
      const pt = m.b.lpae(1, 12, 48);
      const cdt = m.b.cdTable(12, fmt);
      m.b.setCd(cdt, 0x789, m.b.s1CdFields(pt, 3));
      m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 12, S1Fmt: fmt, S1DSS: 1 });
      pt.map(VA, PA);
      ok(m.dma(4, 0x789, VA), PA);
      // Without a SubstreamID, S1DSS = bypass skips stage 1.
      ok(m.dma(4, -1, VA), VA);
    });
  }

  it("S1DSS = SSID0 uses CD 0 for requests without a SubstreamID and refuses SubstreamID 0", () => {
    const m = smmuTestMachine();
    const pt = m.b.lpae(1, 12, 48);
    const cdt = m.b.cdTable(4);
    m.b.setCd(cdt, 0, m.b.s1CdFields(pt, 3));
    m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 4, S1DSS: 2 });
    pt.map(VA, PA);
    ok(m.dma(4, -1, VA), PA);
    const r = m.dma(4, 0, VA);
    expect(r.code).toBe(EVT_ID.F_STREAM_DISABLED);
  });
});

describe("STRTAB_BASE alignment (6.3.24)", () => {
  /** The STE address of StreamID 0 after SMMUEN latches `base` with LOG2SIZE `log2`. */
  function steBase(base: number, cfg: number, features: Partial<SmmuFeatures>): number {
    const smmu = new SmmuV3({ mem: new PhysMemory(), features });
    smmu.write32(SMMU_REG.STRTAB_BASE, base);
    smmu.write32(SMMU_REG.STRTAB_BASE + 4, 0);
    smmu.write32(SMMU_REG.STRTAB_BASE_CFG, cfg);
    smmu.write32(SMMU_REG.CR0, CR0_SMMUEN);
    return smmu.steAddress(0);
  }

  it("a linear table's base is aligned by the literal LOG2SIZE, not the one SIDSIZE limits", () => {
    const f = { sidBits: 8, twoLevelStreamTable: false };
    // LOG2SIZE 8 (= SIDSIZE): 16 KiB alignment keeps 0x104000.
    expect(steBase(0x10_4000, 8, f)).toBe(0x10_4000);
    // LOG2SIZE 10 > SIDSIZE 8: 64 KiB alignment, although only 2^8 StreamIDs are used.
    expect(steBase(0x10_4000, 10, f)).toBe(0x10_0000);
  });

  it("a 2-level table's L1 base is aligned to the larger of 64 bytes and the L1 table", () => {
    const f = { sidBits: 12, twoLevelStreamTable: true };
    const cfg = (l: number) => (1 << 16) | (8 << 6) | l;
    const smmu = new SmmuV3({ mem: new PhysMemory(), features: f });
    smmu.write32(SMMU_REG.STRTAB_BASE, 0x10_00c0);
    smmu.write32(SMMU_REG.STRTAB_BASE_CFG, cfg(16));
    smmu.write32(SMMU_REG.CR0, CR0_SMMUEN);
    // LOG2SIZE 16 > SIDSIZE 12: 256 L1 descriptors = 2 KiB alignment; the L1 read comes from 0x100000.
    smmu.mem.write64(0x10_0000, 0x20_0000 | 9, 0);
    expect(smmu.steAddress(0)).toBe(0x20_0000);
  });
});

describe("events (one per event number, fields checked)", () => {
  it("C_BAD_STREAMID: SID beyond LOG2SIZE, recorded with RECINVSID", () => {
    const m = smmuTestMachine({ log2size: 4 });
    expect(m.dma(0x20, 5, VA).code).toBe(EVT_ID.C_BAD_STREAMID);
    const [e] = m.events();
    expect(e?.fields).toMatchObject({
      EventType: EVT_ID.C_BAD_STREAMID,
      StreamID: 0x20,
      SSV: 1,
      SubstreamID: 5,
    });
    const m2 = smmuTestMachine({ log2size: 4, cr2: 0 });
    expect(m2.dma(0x20, -1, VA).code).toBe(EVT_ID.C_BAD_STREAMID);
    expect(m2.events()).toEqual([]);
  });

  it("C_BAD_STE: V = 0", () => {
    const m = smmuTestMachine();
    expect(m.dma(9, -1, VA).code).toBe(EVT_ID.C_BAD_STE);
    expect(m.events()[0]?.fields).toMatchObject({
      EventType: EVT_ID.C_BAD_STE,
      StreamID: 9,
      SSV: 0,
    });
  });

  it("C_BAD_STE: ILLEGAL contents (S2TG reserved)", () => {
    const m = smmuTestMachine();
    s2(m, 3, { ste: { S2TG: 3 } });
    expect(m.dma(3, -1, VA).code).toBe(EVT_ID.C_BAD_STE);
  });

  it("F_STE_FETCH: abort reading the STE, with FetchAddr", () => {
    const m = smmuTestMachine();
    const at = m.b.setSte(m.st, 6, { Config: 4 });
    m.mem.faultHook = (pa, _n, w) => !w && pa >= at && pa < at + 64;
    expect(m.dma(6, -1, VA).code).toBe(EVT_ID.F_STE_FETCH);
    m.mem.faultHook = null;
    expect(m.events()[0]?.fields).toMatchObject({
      EventType: EVT_ID.F_STE_FETCH,
      StreamID: 6,
      FetchAddr: at,
    });
  });

  it("C_BAD_SUBSTREAMID: SubstreamID on a stage 2 only STE and beyond S1CDMax", () => {
    const m = smmuTestMachine();
    s2(m, 3);
    expect(m.dma(3, 7, VA).code).toBe(EVT_ID.C_BAD_SUBSTREAMID);
    s1(m, 4);
    expect(m.dma(4, 1, VA).code).toBe(EVT_ID.C_BAD_SUBSTREAMID);
    const ev = m.events();
    expect(ev[0]?.fields).toMatchObject({
      EventType: EVT_ID.C_BAD_SUBSTREAMID,
      StreamID: 3,
      SubstreamID: 7,
    });
  });

  it("F_STREAM_DISABLED: no SubstreamID with S1DSS = terminate", () => {
    const m = smmuTestMachine();
    const cdt = m.b.cdTable(4);
    m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 4, S1DSS: 0 });
    expect(m.dma(4, -1, VA).code).toBe(EVT_ID.F_STREAM_DISABLED);
    expect(m.events()[0]?.fields).toMatchObject({
      EventType: EVT_ID.F_STREAM_DISABLED,
      StreamID: 4,
    });
  });

  it("C_BAD_CD: V = 0", () => {
    const m = smmuTestMachine();
    const cdt = m.b.cdTable(0);
    m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt.ptr });
    expect(m.dma(4, -1, VA).code).toBe(EVT_ID.C_BAD_CD);
    expect(m.events()[0]?.fields).toMatchObject({ EventType: EVT_ID.C_BAD_CD, StreamID: 4 });
  });

  it("F_CD_FETCH: abort reading the CD", () => {
    const m = smmuTestMachine();
    const { cdAt } = s1(m, 4);
    m.mem.faultHook = (pa, _n, w) => !w && pa >= cdAt && pa < cdAt + 64;
    expect(m.dma(4, -1, VA).code).toBe(EVT_ID.F_CD_FETCH);
    m.mem.faultHook = null;
    expect(m.events()[0]?.fields).toMatchObject({ EventType: EVT_ID.F_CD_FETCH, FetchAddr: cdAt });
  });

  it("F_TRANSLATION: invalid leaf, with InputAddr, RnW, PnU, CLASS IN, S2 0", () => {
    const m = smmuTestMachine();
    s1(m, 4);
    expect(m.dma(4, -1, VA + 0x123, DMA_WRITE, { priv: true }).code).toBe(EVT_ID.F_TRANSLATION);
    const f = m.events()[0]?.fields;
    expect(f).toMatchObject({
      EventType: EVT_ID.F_TRANSLATION,
      StreamID: 4,
      RnW: 0,
      PnU: 1,
      S2: 0,
      CLASS: 2,
      Stall: 0,
    });
    expect(f?.InputAddr).toBe(BigInt(VA + 0x123));
  });

  it("F_TRANSLATION at stage 2 reports the IPA", () => {
    const m = smmuTestMachine();
    s2(m, 3);
    expect(m.dma(3, -1, VA).code).toBe(EVT_ID.F_TRANSLATION);
    expect(m.events()[0]?.fields).toMatchObject({ S2: 1, CLASS: 2, IPA: VA, RnW: 1 });
  });

  it("F_ADDR_SIZE: a leaf output above the CD's IPS", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 4, { cd: { IPS: 0 } });
    pt.map(VA, 0x1_0000_0000);
    expect(m.dma(4, -1, VA).code).toBe(EVT_ID.F_ADDR_SIZE);
    expect(m.events()[0]?.fields).toMatchObject({ EventType: EVT_ID.F_ADDR_SIZE, S2: 0 });
  });

  it("F_ACCESS: AF = 0 without HA", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 4);
    pt.map(VA, PA, 3, { af: false });
    expect(m.dma(4, -1, VA).code).toBe(EVT_ID.F_ACCESS);
    expect(m.events()[0]?.fields.EventType).toBe(EVT_ID.F_ACCESS);
  });

  it("F_PERMISSION: write to a read-only page, and stage 2 write protection (S2 1)", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 4);
    pt.map(VA, PA, 3, { ap: 3 });
    ok(m.dma(4, -1, VA, DMA_READ), PA);
    expect(m.dma(4, -1, VA, DMA_WRITE).code).toBe(EVT_ID.F_PERMISSION);
    expect(m.events()[0]?.fields).toMatchObject({ EventType: EVT_ID.F_PERMISSION, S2: 0, RnW: 0 });
    const x = s2(m, 3);
    x.pt.map(VA, PA, 3, { s2ap: 1 });
    expect(m.dma(3, -1, VA, DMA_WRITE).code).toBe(EVT_ID.F_PERMISSION);
    expect(m.events()[0]?.fields).toMatchObject({ S2: 1, IPA: VA });
  });

  it("F_PERMISSION: unprivileged access to a privileged page, and PXN for privileged execute", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 4);
    pt.map(VA, PA, 3, { ap: 0 });
    pt.map(VA + 4096, PA, 3, { ap: 0, pxn: true });
    expect(m.dma(4, -1, VA, DMA_READ).code).toBe(EVT_ID.F_PERMISSION);
    ok(m.dma(4, -1, VA, DMA_READ, { priv: true }), PA);
    expect(m.dma(4, -1, VA + 4096, DMA_READ | DMA_EXEC, { priv: true }).code).toBe(
      EVT_ID.F_PERMISSION,
    );
  });

  it("F_WALK_EABT: abort reading a stage 1 descriptor, with FetchAddr and CLASS TT", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 4);
    const at = pt.map(VA, PA);
    m.mem.faultHook = (pa, _n, w) => !w && pa === at;
    expect(m.dma(4, -1, VA).code).toBe(EVT_ID.F_WALK_EABT);
    m.mem.faultHook = null;
    expect(m.events()[0]?.fields).toMatchObject({
      EventType: EVT_ID.F_WALK_EABT,
      FetchAddr: at,
      CLASS: 1,
      S2: 0,
    });
  });

  it("F_TRANSL_FORBIDDEN: translated traffic with ATSCHK on a bypass STE", () => {
    const m = smmuTestMachine({ cr0: 1 << 4 });
    m.b.setSte(m.st, 2, { Config: 4 });
    expect(m.dma(2, -1, VA, DMA_READ, { at: AT_TRANSLATED }).code).toBe(EVT_ID.F_TRANSL_FORBIDDEN);
    expect(m.events()[0]?.fields).toMatchObject({
      EventType: EVT_ID.F_TRANSL_FORBIDDEN,
      StreamID: 2,
      RnW: 1,
    });
  });

  it("F_BAD_ATS_TREQ: an ATS translation request with EATS = 0", () => {
    const m = smmuTestMachine();
    s1(m, 4);
    expect(m.dma(4, -1, VA, DMA_READ, { at: AT_TRANSLATION_REQUEST }).code).toBe(
      EVT_ID.F_BAD_ATS_TREQ,
    );
    expect(m.events()[0]?.fields).toMatchObject({ EventType: EVT_ID.F_BAD_ATS_TREQ, StreamID: 4 });
  });

  it("CD.R = 0 suppresses the record of a translation fault", () => {
    const m = smmuTestMachine();
    s1(m, 4, { cd: { R: 0 } });
    expect(m.dma(4, -1, VA).code).toBe(EVT_ID.F_TRANSLATION);
    expect(m.events()).toEqual([]);
  });

  it("the event queue overflows: records are lost and PROD.OVFLG toggles once", () => {
    const m = smmuTestMachine({ queueLog2: 2 });
    for (let i = 0; i < 6; i++) m.dma(9, -1, VA);
    const prod = m.smmu.read32(SMMU_REG.EVENTQ_PROD);
    expect(prod >>> 31).toBe(1);
    expect(m.smmu.stats.eventsLost).toBe(2);
    const ev = m.events();
    expect(ev.length).toBe(4);
    // After the acknowledgement records are written again.
    m.dma(9, -1, VA);
    expect(m.events().length).toBe(1);
  });
});

describe("ATS", () => {
  function atsSte(m: SmmuTestMachine) {
    const x = s1(m, 4);
    m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: x.cdt.ptr, EATS: 1 });
    return x;
  }

  it("a translation request is granted what the tables allow", () => {
    const m = smmuTestMachine();
    const { pt } = atsSte(m);
    pt.map(VA, PA);
    pt.map(VA + 4096, PA + 4096, 3, { ap: 3 });
    const rw = m.dma(4, -1, VA, DMA_READ | DMA_WRITE, { at: AT_TRANSLATION_REQUEST });
    expect(rw).toMatchObject({ status: XLATE_OK, pa: PA, perm: DMA_READ | DMA_WRITE });
    const ro = m.dma(4, -1, VA + 4096, DMA_READ | DMA_WRITE, { at: AT_TRANSLATION_REQUEST });
    expect(ro).toMatchObject({ status: XLATE_OK, perm: DMA_READ });
  });

  it("a translation request for an unmapped page succeeds with no permission and no event", () => {
    const m = smmuTestMachine();
    atsSte(m);
    const r = m.dma(4, -1, VA, DMA_READ, { at: AT_TRANSLATION_REQUEST });
    expect(r).toMatchObject({ status: XLATE_OK, perm: 0 });
    expect(m.events()).toEqual([]);
  });

  it("a translation request on an abort STE is refused without an event; a bad STE without REC_CFG_ATS too", () => {
    const m = smmuTestMachine();
    m.b.setSte(m.st, 2, { Config: 0 });
    expect(m.dma(2, -1, VA, DMA_READ, { at: AT_TRANSLATION_REQUEST }).status).toBe(XLATE_FAULT);
    expect(m.dma(9, -1, VA, DMA_READ, { at: AT_TRANSLATION_REQUEST }).code).toBe(EVT_ID.C_BAD_STE);
    expect(m.events()).toEqual([]);
  });

  it("translated traffic passes without ATSCHK and is checked against EATS with it", () => {
    const m = smmuTestMachine();
    atsSte(m);
    ok(m.dma(4, -1, PA, DMA_WRITE, { at: AT_TRANSLATED }), PA);
    const m2 = smmuTestMachine({ cr0: 1 << 4 });
    atsSte(m2);
    ok(m2.dma(4, -1, PA, DMA_WRITE, { at: AT_TRANSLATED }), PA);
    s1(m2, 5);
    expect(m2.dma(5, -1, PA, DMA_WRITE, { at: AT_TRANSLATED }).code).toBe(
      EVT_ID.F_TRANSL_FORBIDDEN,
    );
  });
});

describe("command queue", () => {
  it("an illegal command raises CERROR_ILL, stops the queue at it, and GERRORN restarts it", () => {
    const m = smmuTestMachine();
    const s = m.smmu;
    m.submitRaw([
      cmd(CMDQ_OP.TLBI_NSNH_ALL),
      new Uint32Array([0xff, 0, 0, 0]),
      cmd(CMDQ_OP.TLBI_NSNH_ALL),
    ]);
    const cons = s.read32(SMMU_REG.CMDQ_CONS);
    expect(cons & 0xfffff).toBe(1);
    expect((cons >>> 24) & 0x7f).toBe(CMDQ_CONS_ERR_ILL);
    const gerror = s.read32(SMMU_REG.GERROR);
    expect((gerror ^ s.read32(SMMU_REG.GERRORN)) & GERROR_CMDQ_ERR).toBe(GERROR_CMDQ_ERR);
    expect(m.interrupts).toContain("gerror");
    // Linux's recovery: overwrite the bad slot with a CMD_SYNC, then acknowledge.
    const sync = cmd(CMDQ_OP.CMD_SYNC);
    m.mem.write64(m.cmdq + 16, sync[0] as number, sync[1] as number);
    m.mem.write64(m.cmdq + 24, sync[2] as number, sync[3] as number);
    s.write32(SMMU_REG.GERRORN, gerror);
    expect(s.read32(SMMU_REG.CMDQ_CONS)).toBe(3);
  });

  it("a command of a feature the SMMU lacks is illegal (PRI_RESP without PRI)", () => {
    const m = smmuTestMachine({ features: { pri: false } });
    m.submitRaw([cmd(CMDQ_OP.PRI_RESP, { StreamID: 1 })]);
    expect((m.smmu.read32(SMMU_REG.CMDQ_CONS) >>> 24) & 0x7f).toBe(CMDQ_CONS_ERR_ILL);
  });

  it("processCommands(budget) steps the queue when auto processing is off", () => {
    const m = smmuTestMachine({ autoProcessQueue: false });
    m.submitRaw([
      cmd(CMDQ_OP.TLBI_NSNH_ALL),
      cmd(CMDQ_OP.TLBI_NSNH_ALL),
      cmd(CMDQ_OP.TLBI_NSNH_ALL),
    ]);
    expect(m.smmu.read32(SMMU_REG.CMDQ_CONS)).toBe(0);
    expect(m.smmu.processCommands(2)).toBe(2);
    expect(m.smmu.read32(SMMU_REG.CMDQ_CONS)).toBe(2);
    expect(m.smmu.processCommands()).toBe(1);
  });

  it("CMD_SYNC with CS = SIG_IRQ writes MSIData to MSIAddress (Linux's MSI poll on the slot)", () => {
    const m = smmuTestMachine();
    const slot = m.cmdq + 16;
    m.submitRaw([
      cmd(CMDQ_OP.TLBI_NSNH_ALL),
      cmd(CMDQ_OP.CMD_SYNC, { CS: 1, MSIData: 0, MSIAddress: slot, MSH: 3, MSIAttr: 0xf }),
    ]);
    expect(m.mem.read32(slot)).toBe(0);
    expect(m.smmu.stats.syncs).toBe(1);
    m.submitRaw([cmd(CMDQ_OP.CMD_SYNC, { CS: 1, MSIData: 0x1234, MSIAddress: 0x9000 })]);
    expect(m.mem.read32(0x9000)).toBe(0x1234);
  });

  it("CMD_SYNC with CS = SIG_IRQ and no address raises the wired interrupt", () => {
    const m = smmuTestMachine();
    m.submitRaw([cmd(CMDQ_OP.CMD_SYNC, { CS: 1 })]);
    expect(m.interrupts).toContain("cmd-sync");
  });

  it("CMDQ_CONS wraps with the wrap bit", () => {
    const m = smmuTestMachine({ queueLog2: 2 });
    for (let i = 0; i < 6; i++) m.submitRaw([cmd(CMDQ_OP.TLBI_NSNH_ALL)]);
    expect(m.smmu.read32(SMMU_REG.CMDQ_CONS)).toBe((1 << 2) | 2);
  });
});

describe("each command reaches its cache method", () => {
  const cases: [string, Uint32Array, string, string, unknown[]][] = [
    [
      "CFGI_STE",
      cmd(CMDQ_OP.CFGI_STE, { StreamID: 5, Leaf: 1 }),
      "configCache",
      "cfgiSte",
      [5, true],
    ],
    [
      "CFGI_STE_RANGE",
      cmd(CMDQ_OP.CFGI_STE_RANGE, { StreamID: 8, Range: 2 }),
      "configCache",
      "cfgiSteRange",
      [8, 2],
    ],
    ["CFGI_ALL", cmd(CMDQ_OP.CFGI_STE_RANGE, { Range: 31 }), "configCache", "cfgiAll", []],
    [
      "CFGI_CD",
      cmd(CMDQ_OP.CFGI_CD, { StreamID: 5, SubstreamID: 7, Leaf: 1 }),
      "configCache",
      "cfgiCd",
      [5, 7, true],
    ],
    ["CFGI_CD_ALL", cmd(CMDQ_OP.CFGI_CD_ALL, { StreamID: 5 }), "configCache", "cfgiCdAll", [5]],
    ["TLBI_NH_ALL", cmd(CMDQ_OP.TLBI_NH_ALL, { VMID: 3 }), "tlb", "invalidateNhAll", [3]],
    [
      "TLBI_NH_ASID",
      cmd(CMDQ_OP.TLBI_NH_ASID, { VMID: 3, ASID: 9 }),
      "tlb",
      "invalidateAsid",
      [3, 9],
    ],
    [
      "TLBI_NH_VA",
      cmd(CMDQ_OP.TLBI_NH_VA, { VMID: 3, ASID: 9, Address: 0x12345000, Leaf: 1 }),
      "tlb",
      "invalidateVa",
      [3, 9, 0x12345, 1, true, 0, 0],
    ],
    [
      "TLBI_NH_VA (range)",
      cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 9, Address: 0x200000, TG: 1, NUM: 3, SCALE: 1, TTL: 3 }),
      "tlb",
      "invalidateVa",
      [0, 9, 0x200, 8, false, 3, 12],
    ],
    [
      "TLBI_NH_VAA",
      cmd(CMDQ_OP.TLBI_NH_VAA, { VMID: 3, Address: 0x5000 }),
      "tlb",
      "invalidateVaa",
      [3, 5, 1, false, 0, 0],
    ],
    ["TLBI_S12_VMALL", cmd(CMDQ_OP.TLBI_S12_VMALL, { VMID: 4 }), "tlb", "invalidateVmid", [4]],
    [
      "TLBI_S2_IPA",
      cmd(CMDQ_OP.TLBI_S2_IPA, { VMID: 4, IPA: 0x7000, TG: 3, NUM: 0, SCALE: 0, TTL: 3 }),
      "tlb",
      "invalidateS2Ipa",
      [4, 7, 16, false, 3, 16],
    ],
    ["TLBI_NSNH_ALL", cmd(CMDQ_OP.TLBI_NSNH_ALL), "tlb", "invalidateAll", []],
    ["TLBI_EL2_ALL", cmd(CMDQ_OP.TLBI_EL2_ALL), "tlb", "invalidateEl2All", []],
    ["TLBI_EL2_ASID", cmd(CMDQ_OP.TLBI_EL2_ASID, { ASID: 2 }), "tlb", "invalidateEl2Asid", [2]],
    [
      "TLBI_EL2_VA",
      cmd(CMDQ_OP.TLBI_EL2_VA, { ASID: 2, Address: 0x3000 }),
      "tlb",
      "invalidateEl2Va",
      [2, 3, 1, false, 0, 0],
    ],
    [
      "TLBI_EL2_VAA",
      cmd(CMDQ_OP.TLBI_EL2_VAA, { Address: 0x3000 }),
      "tlb",
      "invalidateEl2Vaa",
      [3, 1, false, 0, 0],
    ],
    [
      "TLBI_NH_VA (walk cache)",
      cmd(CMDQ_OP.TLBI_NH_VA, { VMID: 3, ASID: 9, Address: 0x1000 }),
      "walkCache",
      "invalidateVa",
      [3, 9, 1, 1, false, 0, 0],
    ],
    [
      "TLBI_S2_IPA (walk cache)",
      cmd(CMDQ_OP.TLBI_S2_IPA, { VMID: 4, IPA: 0x7000 }),
      "walkCache",
      "invalidateS2Ipa",
      [4, 7, 1, false, 0, 0],
    ],
  ];
  for (const [name, c, obj, method, args] of cases) {
    it(`${name} calls ${obj}.${method}`, () => {
      const m = smmuTestMachine();
      const target = (
        m.smmu as unknown as Record<string, Record<string, (...a: unknown[]) => unknown>>
      )[obj] as Record<string, (...a: unknown[]) => unknown>;
      const calls: unknown[][] = [];
      const orig = target[method] as (...a: unknown[]) => unknown;
      target[method] = (...a: unknown[]) => {
        calls.push(a);
        return orig.apply(target, a);
      };
      m.submitRaw([c]);
      expect(m.smmu.stats.commandErrors).toBe(0);
      expect(calls).toEqual([args]);
    });
  }

  it("ATC_INV is delivered to the device port with the span", () => {
    const m = smmuTestMachine();
    const p = m.port(5);
    m.submit(
      cmd(CMDQ_OP.ATC_INV, { StreamID: 5, SSV: 1, SubstreamID: 3, Address: 0x40000, Size: 2 }),
    );
    m.submit(cmd(CMDQ_OP.ATC_INV, { StreamID: 5, Size: 52 }));
    expect(p.invalidations).toEqual([
      { pasid: 3, pfn: 0x40, pages: 4, global: false },
      { pasid: -1, pfn: 0, pages: 0, global: false },
    ]);
  });

  it("PREFETCH_CONFIG fetches the STE and CD into the caches", () => {
    const m = smmuTestMachine();
    const pt = m.b.lpae(1, 12, 48);
    const cdt = m.b.cdTable(4);
    m.b.setCd(cdt, 3, m.b.s1CdFields(pt, 1));
    m.b.setSte(m.st, 5, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 4 });
    m.submit(cmd(CMDQ_OP.PREFETCH_CONFIG, { StreamID: 5, SSV: 1, SubstreamID: 3 }));
    expect(m.smmu.configCache.steSize()).toBe(1);
    expect(m.smmu.configCache.cdSize()).toBe(1);
  });

  it("only commands remove cached entries: a stale STE is used until CFGI_STE", () => {
    const m = smmuTestMachine();
    m.b.setSte(m.st, 2, { Config: 4 });
    ok(m.dma(2, -1, VA), VA);
    m.b.setSte(m.st, 2, { Config: 0 });
    ok(m.dma(2, -1, VA), VA);
    m.submit(cmd(CMDQ_OP.CFGI_STE, { StreamID: 2, Leaf: 1 }));
    expect(m.dma(2, -1, VA).status).toBe(XLATE_FAULT);
  });

  it("a stale TLB entry is used until TLBI_NH_VA, and the minimal policy never holds one", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 4, { asid: 7 });
    const at = pt.map(VA, PA);
    ok(m.dma(4, -1, VA), PA);
    m.mem.write64(at, 0, 0);
    ok(m.dma(4, -1, VA), PA);
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 }));
    expect(m.dma(4, -1, VA).code).toBe(EVT_ID.F_TRANSLATION);
    const m2 = smmuTestMachine({ cache: { policy: "minimal" } });
    const y = s1(m2, 4);
    const at2 = y.pt.map(VA, PA);
    ok(m2.dma(4, -1, VA), PA);
    m2.mem.write64(at2, 0, 0);
    expect(m2.dma(4, -1, VA).code).toBe(EVT_ID.F_TRANSLATION);
  });
});

describe("PRI queue", () => {
  function pr(sid: number, pasid: number, pfn: number, last: boolean, prg = 1) {
    return {
      rid: sid,
      sid,
      pasid,
      iovaPfn: pfn,
      access: DMA_READ | DMA_WRITE,
      privileged: false,
      prgIndex: prg,
      last,
    };
  }

  it("page requests are queued with their fields, and PRI_RESP answers the device", () => {
    const m = smmuTestMachine();
    const p = m.port(6);
    m.smmu.pageRequest(pr(6, 0x42, 0x1234, true, 7));
    const [e] = m.priEntries();
    expect(e).toMatchObject({
      StreamID: 6,
      SubstreamID: 0x42,
      SSV: 1,
      R: 1,
      W: 1,
      Last: 1,
      PRGIndex: 7,
      PageAddress: 0x1234000,
    });
    expect(m.interrupts).toContain("pri");
    m.submit(
      cmd(CMDQ_OP.PRI_RESP, { StreamID: 6, SSV: 1, SubstreamID: 0x42, PRGIndex: 7, Resp: 2 }),
    );
    expect(p.responses).toEqual([{ pasid: 0x42, prgIndex: 7, code: PRG_SUCCESS }]);
  });

  it("overflow: requests are lost, a lost Last request is answered Success, and nothing is queued until the acknowledgement", () => {
    const m = smmuTestMachine({ queueLog2: 2 });
    const p = m.port(6);
    for (let i = 0; i < 4; i++) m.smmu.pageRequest(pr(6, -1, i, false));
    m.smmu.pageRequest(pr(6, -1, 9, true, 3));
    expect(p.responses).toEqual([{ pasid: -1, prgIndex: 3, code: PRG_SUCCESS }]);
    expect(m.smmu.read32(SMMU_REG.PRIQ_PROD) >>> 31).toBe(1);
    expect(m.priEntries(false).length).toBe(4);
    m.smmu.pageRequest(pr(6, -1, 10, false));
    expect(m.priEntries(true).length).toBe(0);
    m.smmu.pageRequest(pr(6, -1, 11, false));
    expect(m.priEntries().length).toBe(1);
  });

  it("with the PRI queue disabled a Last request is answered Response Failure", () => {
    const m = smmuTestMachine({ features: { pri: false } });
    const p = m.port(6);
    m.smmu.pageRequest(pr(6, -1, 1, true, 2));
    expect(p.responses).toEqual([{ pasid: -1, prgIndex: 2, code: PRG_RESPONSE_FAILURE }]);
  });
});

describe("stall model", () => {
  function stallSetup(m: SmmuTestMachine) {
    const x = s1(m, 4, { cd: { S: 1 } });
    return { ...x, port: m.port(4) };
  }

  it("a translation fault with CD.S stalls: Stall/STAG recorded, RESUME retries", () => {
    const m = smmuTestMachine();
    const { port, pt } = stallSetup(m);
    const r = m.dma(4, -1, VA);
    expect(r.status).toBe(XLATE_STALLED);
    const f = m.events()[0]?.fields;
    expect(f).toMatchObject({ EventType: EVT_ID.F_TRANSLATION, Stall: 1, STAG: r.stallTag });
    expect(m.smmu.stalledTags(4)).toEqual([r.stallTag]);
    pt.map(VA, PA);
    m.submit(cmd(CMDQ_OP.RESUME, { StreamID: 4, STAG: r.stallTag, Ac: 1 }));
    expect(port.resumes).toEqual([{ stag: r.stallTag, retry: true }]);
    ok(m.dma(4, -1, VA), PA);
  });

  it("STALL_TERM terminates every stalled transaction of the StreamID", () => {
    const m = smmuTestMachine();
    const { port } = stallSetup(m);
    const a = m.dma(4, -1, VA);
    const b = m.dma(4, -1, VA + 4096);
    m.submit(cmd(CMDQ_OP.STALL_TERM, { StreamID: 4 }));
    expect(port.resumes).toEqual([
      { stag: a.stallTag, retry: false },
      { stag: b.stallTag, retry: false },
    ]);
    expect(m.smmu.stalledTags(4)).toEqual([]);
  });

  it("a RESUME for an unknown STAG does nothing", () => {
    const m = smmuTestMachine();
    const { port } = stallSetup(m);
    m.submit(cmd(CMDQ_OP.RESUME, { StreamID: 4, STAG: 77, Ac: 1 }));
    expect(port.resumes).toEqual([]);
  });

  it("CD.S is ILLEGAL with the terminate-only model", () => {
    const m = smmuTestMachine({ features: { stallModel: 1 } });
    s1(m, 4, { cd: { S: 1 } });
    expect(m.dma(4, -1, VA).code).toBe(EVT_ID.C_BAD_CD);
  });

  it("a stall record is never discarded: with EVENTQEN = 0 the transaction stalls and its record is written once the queue is enabled (IHI 0070 7.2.1)", () => {
    const m = smmuTestMachine();
    stallSetup(m);
    m.smmu.write32(SMMU_REG.CR0, CR0_SMMUEN | CR0_CMDQEN | CR0_PRIQEN);
    const r = m.dma(4, -1, VA);
    expect(r.status).toBe(XLATE_STALLED);
    expect(m.smmu.read32(SMMU_REG.CR0ACK) & CR0_EVTQEN).toBe(0);
    expect(m.events()).toEqual([]);
    m.smmu.write32(SMMU_REG.CR0, CR0_SMMUEN | CR0_CMDQEN | CR0_PRIQEN | CR0_EVTQEN);
    const [e] = m.events();
    expect(e?.fields).toMatchObject({
      EventType: EVT_ID.F_TRANSLATION,
      Stall: 1,
      STAG: r.stallTag,
    });
  });
});

describe("hitless-update hook", () => {
  it("sees every qword written to a cached STE and shows a torn STE as neither old nor new", () => {
    const m = smmuTestMachine();
    const a = m.b.lpae(2, 12, 40);
    const b = m.b.lpae(2, 12, 40);
    m.b.setSte(m.st, 3, { Config: 6, ...m.b.s2SteFields(a, 1) });
    m.dma(3, -1, VA);
    const oldView = m.smmu.steAsSeen(3);
    const seen: { qword: number; legal: boolean; same: boolean }[] = [];
    const steAt = m.smmu.steAddress(3);
    const target = new Uint32Array(16);
    // The new STE: stage 2 through table b with VMID 2 (words 4..7 change: VMID and S2TTB).
    m.b.write(STE_LAYOUT, 0x7000_0000, { V: 1, Config: 6, ...m.b.s2SteFields(b, 2) });
    for (let i = 0; i < 16; i++) target[i] = m.mem.read32(0x7000_0000 + 4 * i);
    const newView = viewOfSte(3, 0, target);
    const stop = m.smmu.watchConfigWrites((sid, ssid, qword, view) => {
      expect(sid).toBe(3);
      expect(ssid).toBe(-1);
      seen.push({
        qword,
        legal: view.status === 0,
        same: smmuConfigEqual(view, oldView) || smmuConfigEqual(view, newView),
      });
    });
    // Write dword 2 (VMID) then dword 3 (S2TTB): the middle state mixes both.
    m.mem.write64(steAt + 16, target[4] as number, target[5] as number);
    m.mem.write64(steAt + 24, target[6] as number, target[7] as number);
    stop();
    expect(seen).toEqual([
      { qword: 2, legal: true, same: false },
      { qword: 3, legal: true, same: true },
    ]);
    m.mem.write64(steAt, 0, 0);
    expect(seen.length).toBe(2);
  });

  it("cdAsSeen hides the TTB0 walk fields when EPD0 is set", () => {
    const m = smmuTestMachine();
    const { cdAt } = s1(m, 4);
    m.dma(4, -1, VA);
    const before = m.smmu.cdAsSeen(4, 0);
    expect(before.status).toBe(0);
    const lo = m.mem.read32(cdAt);
    m.mem.write32(cdAt, (lo | (1 << 14)) >>> 0);
    m.mem.write64(cdAt + 8, 0x5550, 0);
    const after = m.smmu.cdAsSeen(4, 0);
    m.mem.write32(cdAt, lo);
    const masked = m.smmu.cdAsSeen(4, 0);
    expect(smmuConfigEqual(before, masked)).toBe(false);
    expect(after.words[2]).toBe(0);
  });
});

const OPS = [
  1, 3, 4, 5, 6, 0x10, 0x11, 0x12, 0x13, 0x20, 0x28, 0x2a, 0x30, 0x40, 0x41, 0x44, 0x45, 0x46,
];

describe("fuzz", () => {
  it("random register writes and random command-queue contents never throw", () => {
    const m = smmuTestMachine();
    let x = 0x12345678;
    const rnd = () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return x >>> 0;
    };
    s1(m, 4);
    for (let i = 0; i < 3000; i++) {
      const r = rnd() % 10;
      if (r < 3) {
        const c = new Uint32Array([
          (rnd() & 0xffff00ff) | (OPS[rnd() % OPS.length] as number),
          rnd(),
          rnd(),
          rnd(),
        ]);
        m.submitRaw([c]);
        if (m.smmu.cmdqStopped) m.smmu.write32(SMMU_REG.GERRORN, m.smmu.read32(SMMU_REG.GERROR));
      } else if (r < 5) {
        m.smmu.write32((rnd() % 0x100) * 4 + (rnd() & 1 ? 0x10000 : 0), rnd());
      } else if (r < 6) {
        m.mem.write64(m.st.base + (rnd() % 16) * 8 + 4 * 64, rnd(), rnd());
      } else {
        m.dma(rnd() % 8, rnd() & 1 ? -1 : rnd() % 64, (rnd() % 2 ** 20) * 4096, 1 + (rnd() % 3), {
          at: rnd() % 3,
          priv: (rnd() & 1) === 1,
        });
        m.dma(rnd() % 8, -1, (rnd() % 2 ** 20) * 4096, 1, { uncached: true });
      }
      if (i % 97 === 0) m.events();
    }
    expect(m.smmu.stats.translations).toBeGreaterThan(0);
  });
});

// Rules from the spec review of address-size checks and the any-EL2 permission model.
describe("address sizes outside translation (IHI 0070 3.4, 3.4.3)", () => {
  it("SMMUEN = 0 bypass: an input beyond the OAS aborts and records nothing (3.4)", () => {
    const m = smmuTestMachine({ noEnable: true, features: { oas: 40 } });
    ok(m.dma(3, -1, 2 ** 40 - 4096), 2 ** 40 - 4096);
    const r = m.dma(3, -1, 2 ** 40);
    expect(r.status).toBe(XLATE_FAULT);
    expect(r.code).toBe(SMMU_ABORT_SILENT);
    expect(m.events()).toEqual([]);
  });

  it("S1DSS = bypass on a stage 1 only STE: an input beyond the IAS is a stage 1 F_ADDR_SIZE (3.4)", () => {
    const m = smmuTestMachine({ features: { oas: 40 } });
    const cdt = m.b.cdTable(4);
    m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 4, S1DSS: 1 });
    ok(m.dma(4, -1, 0x1234_5000), 0x1234_5000);
    const r = m.dma(4, -1, 2 ** 41);
    expect(r.code).toBe(EVT_ID.F_ADDR_SIZE);
    expect(m.events()[0]?.fields).toMatchObject({
      EventType: EVT_ID.F_ADDR_SIZE,
      S2: 0,
      InputAddr: 2n ** 41n,
    });
  });

  it("an L1CD.L2Ptr beyond the OAS (stage 1 only) is C_BAD_SUBSTREAMID (3.4.3, SMMUv3.1)", () => {
    const m = smmuTestMachine({ features: { oas: 40 } });
    const cdt = m.b.cdTable(12, 1);
    m.b.write(L1_CD, cdt.ptr, { V: 1, L2Ptr: 2 ** 41 });
    m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 12, S1Fmt: 1 });
    expect(m.dma(4, 5, VA).code).toBe(EVT_ID.C_BAD_SUBSTREAMID);
    expect(m.events()[0]?.fields.EventType).toBe(EVT_ID.C_BAD_SUBSTREAMID);
  });
});

describe("the any-EL2 StreamWorld permission model (IHI 0070 5.4 UWXN/PAN/HAD0; Arm ARM one-EL regimes)", () => {
  function el2(m: SmmuTestMachine) {
    const pt = m.b.lpae(1, 12, 48);
    const cdt = m.b.cdTable(0);
    m.b.setCd(cdt, 0, m.b.s1CdFields(pt, 0, { PAN: 1 }));
    m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt.ptr, STRW: 2 });
    return pt;
  }

  it("every access is privileged: AP[1] = 0 does not refuse an unprivileged request, PAN is ignored", () => {
    const m = smmuTestMachine();
    const pt = el2(m);
    pt.map(VA, PA, 3, { ap: 0 });
    pt.map(VA + 4096, PA, 3, { ap: 1 });
    ok(m.dma(4, -1, VA, DMA_READ), PA);
    ok(m.dma(4, -1, VA, DMA_WRITE), PA);
    ok(m.dma(4, -1, VA + 4096, DMA_READ, { priv: true }), PA);
    expect(m.events()).toEqual([]);
  });

  it("bit 54 is XN for every access and writable pages have no implicit PXN", () => {
    const m = smmuTestMachine();
    const pt = el2(m);
    pt.map(VA, PA, 3, { ap: 1 });
    pt.map(VA + 4096, PA, 3, { ap: 0, uxn: true });
    ok(m.dma(4, -1, VA, DMA_READ | DMA_EXEC, { priv: true }), PA);
    ok(m.dma(4, -1, VA, DMA_READ | DMA_EXEC), PA);
    expect(m.dma(4, -1, VA + 4096, DMA_READ | DMA_EXEC, { priv: true }).code).toBe(
      EVT_ID.F_PERMISSION,
    );
    expect(m.dma(4, -1, VA + 4096, DMA_READ | DMA_EXEC).code).toBe(EVT_ID.F_PERMISSION);
  });
});

describe("dirty state is set only for a write nothing else refuses (IHI 0070 3.13.3.1)", () => {
  it("an unprivileged write to a privileged-only writable-clean page faults and leaves it clean", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 1, { cd: { HA: 1, HD: 1 } });
    const at = pt.map(VA, PA, 3, { ap: 2, dbm: true });
    expect(m.dma(1, -1, VA, DMA_WRITE).code).toBe(EVT_ID.F_PERMISSION);
    expect(m.mem.read32(at) & 0x80).toBe(0x80);
    ok(m.dma(1, -1, VA, DMA_WRITE, { priv: true }), PA);
    expect(m.mem.read32(at) & 0x80).toBe(0);
  });

  it("a privileged write refused by PAN leaves the page clean", () => {
    const m = smmuTestMachine();
    const { pt } = s1(m, 1, { cd: { HA: 1, HD: 1, PAN: 1 } });
    const at = pt.map(VA, PA, 3, { ap: 3, dbm: true });
    expect(m.dma(1, -1, VA, DMA_WRITE, { priv: true }).code).toBe(EVT_ID.F_PERMISSION);
    expect(m.mem.read32(at) & 0x80).toBe(0x80);
  });

  it("nested: a write stage 1 refuses does not dirty the stage 2 descriptor", () => {
    const m = smmuTestMachine();
    const { s1pt, s2pt } = nested(m, 7, 9, 5);
    m.b.setSte(m.st, 7, { ...m.b.read(STE_LAYOUT, m.b.steAddr(m.st, 7)), S2HA: 1, S2HD: 1 });
    const s2at = s2pt.map(0x2000_0000, PA, 3, { s2ap: 1, dbm: true });
    s1pt.map(VA, 0x2000_0000, 3, { ap: 3 });
    expect(m.dma(7, -1, VA, DMA_WRITE).code).toBe(EVT_ID.F_PERMISSION);
    expect(m.events()[0]?.fields).toMatchObject({ S2: 0 });
    expect(m.mem.read32(s2at) & 0x80).toBe(0);
  });
});

describe("which stage a permission fault reports (Arm ARM: stage 1 checks before stage 2 translates the output)", () => {
  it("a write both stages refuse is a stage 1 F_PERMISSION (S2 = 0); one only stage 2 refuses is S2 = 1", () => {
    const m = smmuTestMachine();
    const { s1pt, s2pt } = nested(m, 7, 9, 5);
    s2pt.map(0x2000_0000, PA, 3, { s2ap: 1 });
    s1pt.map(VA, 0x2000_0000, 3, { ap: 3 });
    s1pt.map(VA + 4096, 0x2000_0000, 3, { ap: 1 });
    expect(m.dma(7, -1, VA, DMA_WRITE).code).toBe(EVT_ID.F_PERMISSION);
    expect(m.events()[0]?.fields).toMatchObject({ S2: 0, CLASS: 2 });
    expect(m.dma(7, -1, VA + 4096, DMA_WRITE).code).toBe(EVT_ID.F_PERMISSION);
    expect(m.events()[0]?.fields).toMatchObject({ S2: 1, CLASS: 2, IPA: 0x2000_0000 });
  });
});

/** CR2.REC_CFG_ATS (bit 3). */
const REC_CFG_ATS = 8;

describe("event record fields (IHI 0070 7.3)", () => {
  it("PnU and InD are the values after STE.PRIVCFG/INSTCFG, and InD is 0 for a write (7.3, 7.3.13)", () => {
    const m = smmuTestMachine();
    const { cdt } = s1(m, 4);
    m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt.ptr, PRIVCFG: 3, INSTCFG: 3 });
    m.dma(4, -1, VA, DMA_READ);
    m.dma(4, -1, VA, DMA_WRITE);
    const [rd, wr] = m.events();
    expect(rd?.fields).toMatchObject({ EventType: EVT_ID.F_TRANSLATION, PnU: 1, InD: 1, RnW: 1 });
    expect(wr?.fields).toMatchObject({ EventType: EVT_ID.F_TRANSLATION, PnU: 1, InD: 0, RnW: 0 });
    m.b.setSte(m.st, 5, { Config: 5, S1ContextPtr: cdt.ptr, PRIVCFG: 2, INSTCFG: 2 });
    m.dma(5, -1, VA, DMA_READ | DMA_EXEC, { priv: true });
    expect(m.events()[0]?.fields).toMatchObject({ PnU: 0, InD: 0 });
  });

  it("a write is a data access under INSTCFG = instruction: execute-never pages take it (13.1.2)", () => {
    const m = smmuTestMachine();
    const { pt, cdt } = s1(m, 6);
    pt.map(VA, PA, 3, { uxn: true, pxn: true });
    m.b.setSte(m.st, 6, { Config: 5, S1ContextPtr: cdt.ptr, INSTCFG: 3 });
    expect(m.dma(6, -1, VA, DMA_WRITE)).toMatchObject({ status: XLATE_OK, pa: PA });
    expect(m.dma(6, -1, VA, DMA_READ)).toMatchObject({
      status: XLATE_FAULT,
      code: EVT_ID.F_PERMISSION,
    });
  });

  it("a stage 2 fault fetching the CD keeps the input transaction's RnW (7.3.13, 7.3.16)", () => {
    const m = smmuTestMachine();
    const { cdIpa, s2pt } = nested(m, 7, 9, 5);
    s2pt.raw(cdIpa - (cdIpa % 0x20_0000), 2, 0, 0);
    m.dma(7, -1, VA, DMA_WRITE);
    expect(m.events()[0]?.fields).toMatchObject({ S2: 1, CLASS: 0, RnW: 0 });
  });
});

describe("which ATS-related errors are recorded (IHI 0070 3.9.1.2, 3.9.1.3, 6.3.12)", () => {
  it("a translation request records C_BAD_STREAMID only with REC_CFG_ATS and RECINVSID both set (3.9.1.2)", () => {
    const only = smmuTestMachine({ log2size: 4, cr2: REC_CFG_ATS });
    const tr = only.dma(0x20, -1, VA, DMA_READ, { at: AT_TRANSLATION_REQUEST });
    expect(tr).toMatchObject({ status: XLATE_FAULT, code: EVT_ID.C_BAD_STREAMID });
    expect(only.events()).toEqual([]);
    const both = smmuTestMachine({ log2size: 4, cr2: REC_CFG_ATS | CR2_RECINVSID });
    both.dma(0x20, -1, VA, DMA_READ, { at: AT_TRANSLATION_REQUEST });
    expect(both.events()[0]?.fields).toMatchObject({ EventType: EVT_ID.C_BAD_STREAMID });
  });

  it("a translation request records C_BAD_STE with REC_CFG_ATS (3.9.1.2)", () => {
    const m = smmuTestMachine({ cr2: REC_CFG_ATS });
    expect(m.dma(9, -1, VA, DMA_READ, { at: AT_TRANSLATION_REQUEST }).code).toBe(EVT_ID.C_BAD_STE);
    expect(m.events()[0]?.fields).toMatchObject({ EventType: EVT_ID.C_BAD_STE, StreamID: 9 });
  });

  it("a translated transaction with ATSCHK records C_BAD_STREAMID with REC_CFG_ATS whatever RECINVSID says (3.9.1.3)", () => {
    const m = smmuTestMachine({ log2size: 4, cr0: 1 << 4, cr2: REC_CFG_ATS });
    expect(m.dma(0x20, -1, PA, DMA_READ, { at: AT_TRANSLATED }).status).toBe(XLATE_FAULT);
    expect(m.events()[0]?.fields).toMatchObject({ EventType: EVT_ID.C_BAD_STREAMID });
  });

  it("an external abort walking for a translation request is a CA response, recorded only with REC_CFG_ATS (3.9.1.2)", () => {
    for (const cr2 of [CR2_RECINVSID, CR2_RECINVSID | REC_CFG_ATS]) {
      const m = smmuTestMachine({ cr2 });
      const { cdt, pt } = s1(m, 4);
      m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt.ptr, EATS: 1 });
      const at = pt.map(VA, PA);
      m.mem.faultHook = (pa, _n, w) => !w && pa === at;
      const r = m.dma(4, -1, VA, DMA_READ, { at: AT_TRANSLATION_REQUEST });
      m.mem.faultHook = null;
      expect(r).toMatchObject({ status: XLATE_FAULT, code: EVT_ID.F_WALK_EABT });
      expect(m.events().length).toBe(cr2 & REC_CFG_ATS ? 1 : 0);
    }
  });

  it("REC_CFG_ATS is RES0 without IDR0.ATSRECERR (6.3.12)", () => {
    const m = smmuTestMachine({ features: { atsRecErr: false }, cr2: CR2_RECINVSID | REC_CFG_ATS });
    expect(m.smmu.read32(SMMU_REG.CR2)).toBe(CR2_RECINVSID);
    expect(m.dma(9, -1, VA, DMA_READ, { at: AT_TRANSLATION_REQUEST }).code).toBe(EVT_ID.C_BAD_STE);
    expect(m.events()).toEqual([]);
  });
});

describe("registers (IHI 0070 6.3)", () => {
  it("CR2 is read-only while SMMUEN is set, and PTM / E2H are RES0 without BTM / Hyp (6.3.12)", () => {
    const m = smmuTestMachine({ cr2: CR2_RECINVSID | CR2_E2H | CR2_PTM });
    expect(m.smmu.read32(SMMU_REG.CR2)).toBe(CR2_RECINVSID | CR2_E2H);
    m.smmu.write32(SMMU_REG.CR2, 0);
    expect(m.smmu.read32(SMMU_REG.CR2)).toBe(CR2_RECINVSID | CR2_E2H);
    const n = smmuTestMachine({ features: { hyp: false, btm: true }, cr2: 7, noEnable: true });
    expect(n.smmu.read32(SMMU_REG.CR2)).toBe(CR2_RECINVSID | CR2_PTM);
    n.smmu.write32(SMMU_REG.CR2, 0);
    expect(n.smmu.read32(SMMU_REG.CR2)).toBe(0);
  });

  it("an aborted event queue MSI raises GERROR.MSI_EVENTQ_ABT_ERR (6.3.17)", () => {
    const m = smmuTestMachine();
    m.smmu.write32(SMMU_REG.IRQ_CTRL, 0);
    m.smmu.write32(SMMU_REG.EVENTQ_IRQ_CFG0, 0x1000);
    m.smmu.write32(SMMU_REG.IRQ_CTRL, 7);
    m.mem.faultHook = (pa, _n, w) => w && pa === 0x1000;
    m.dma(9, -1, VA);
    m.mem.faultHook = null;
    const active = m.smmu.read32(SMMU_REG.GERROR) ^ m.smmu.read32(SMMU_REG.GERRORN);
    expect(active).toBe(GERROR_MSI_EVTQ_ABT_ERR);
  });
});

describe("event queue writability and held stall records (IHI 0070 7.2.1, 7.2.2, 7.4)", () => {
  function stalling(m: SmmuTestMachine) {
    const x = s1(m, 4, { cd: { S: 1 } });
    return { ...x, port: m.port(4) };
  }

  it("a stall record meeting a full queue is held without an overflow and written when CONS frees space (7.4)", () => {
    const m = smmuTestMachine({ queueLog2: 1 });
    stalling(m);
    m.dma(9, -1, VA);
    m.dma(9, -1, VA);
    const r = m.dma(4, -1, VA);
    expect(r.status).toBe(XLATE_STALLED);
    expect(m.smmu.read32(SMMU_REG.EVENTQ_PROD) >>> 31).toBe(0);
    expect(m.smmu.stats.eventsLost).toBe(0);
    const first = m.events();
    expect(first.map((e) => e.id)).toEqual([EVT_ID.C_BAD_STE, EVT_ID.C_BAD_STE]);
    const [held] = m.events();
    expect(held?.fields).toMatchObject({
      EventType: EVT_ID.F_TRANSLATION,
      Stall: 1,
      STAG: r.stallTag,
    });
  });

  it("a non-stall record meeting a full queue with a held stall record is lost and signals overflow (7.4)", () => {
    const m = smmuTestMachine({ queueLog2: 1 });
    stalling(m);
    m.dma(9, -1, VA);
    m.dma(9, -1, VA);
    m.dma(4, -1, VA);
    m.dma(9, -1, VA);
    expect(m.smmu.read32(SMMU_REG.EVENTQ_PROD) >>> 31).toBe(1);
    expect(m.smmu.stats.eventsLost).toBe(1);
  });

  it("a held stalled transaction reached by an invalidation and CMD_SYNC is retried, not reported, when the queue is writable (7.2.1)", () => {
    const m = smmuTestMachine();
    const { port, pt } = stalling(m);
    m.smmu.write32(SMMU_REG.CR0, CR0_SMMUEN | CR0_CMDQEN | CR0_PRIQEN);
    const r = m.dma(4, -1, VA);
    pt.map(VA, PA);
    m.submit(cmd(CMDQ_OP.TLBI_NH_ASID, { ASID: 1 }));
    m.smmu.write32(SMMU_REG.CR0, CR0_SMMUEN | CR0_CMDQEN | CR0_PRIQEN | CR0_EVTQEN);
    expect(port.resumes).toEqual([{ stag: r.stallTag, retry: true }]);
    expect(m.events()).toEqual([]);
    expect(m.smmu.stalledTags(4)).toEqual([]);
  });

  it("STALL_TERM terminates a held stalled transaction and drops its record (7.2.1, 4.7.2)", () => {
    const m = smmuTestMachine();
    const { port } = stalling(m);
    m.smmu.write32(SMMU_REG.CR0, CR0_SMMUEN | CR0_CMDQEN | CR0_PRIQEN);
    const r = m.dma(4, -1, VA);
    m.submitRaw([cmd(CMDQ_OP.STALL_TERM, { StreamID: 4 })]);
    expect(port.resumes).toEqual([{ stag: r.stallTag, retry: false }]);
    m.smmu.write32(SMMU_REG.CR0, CR0_SMMUEN | CR0_CMDQEN | CR0_PRIQEN | CR0_EVTQEN);
    expect(m.events()).toEqual([]);
  });

  it("an active EVENTQ_ABT_ERR makes the queue unwritable until GERRORN acknowledges it, without an overflow (7.2.1, 7.2.2)", () => {
    const m = smmuTestMachine();
    const { port } = stalling(m);
    m.mem.faultHook = (pa, _n, w) => w && pa >= m.evtq && pa < m.evtq + 32 * 64;
    m.dma(9, -1, VA);
    m.mem.faultHook = null;
    const gerror = m.smmu.read32(SMMU_REG.GERROR);
    expect(gerror ^ m.smmu.read32(SMMU_REG.GERRORN)).toBe(GERROR_EVTQ_ABT_ERR);
    m.dma(9, -1, VA);
    const r = m.dma(4, -1, VA);
    expect(r.status).toBe(XLATE_STALLED);
    expect(m.events()).toEqual([]);
    expect(m.smmu.read32(SMMU_REG.EVENTQ_PROD) >>> 31).toBe(0);
    m.smmu.write32(SMMU_REG.GERRORN, gerror);
    const [e] = m.events();
    expect(e?.fields).toMatchObject({
      EventType: EVT_ID.F_TRANSLATION,
      Stall: 1,
      STAG: r.stallTag,
    });
    expect(port.resumes).toEqual([]);
  });
});

describe("PRI automatic responses (IHI 0070 8.1, 8.2)", () => {
  function pr(sid: number, pasid: number, last: boolean, access = DMA_READ, prg = 1) {
    return { rid: sid, sid, pasid, iovaPfn: 5, access, privileged: false, prgIndex: prg, last };
  }

  it("with PRIQEN = 0 a Last request is answered Response Failure without its PASID, a Stop Marker not at all (8.2)", () => {
    const m = smmuTestMachine();
    const p = m.port(6);
    m.smmu.write32(SMMU_REG.CR0, CR0_SMMUEN | CR0_CMDQEN | CR0_EVTQEN);
    m.smmu.pageRequest(pr(6, 0x42, true, DMA_READ, 3));
    m.smmu.pageRequest(pr(6, 0x42, true, 0, 4));
    expect(p.responses).toEqual([{ pasid: -1, prgIndex: 3, code: PRG_RESPONSE_FAILURE }]);
  });

  it("an active PRIQ_ABT_ERR stops the queue; the aborted Last request and later ones get Response Failure (8.2)", () => {
    const m = smmuTestMachine();
    const p = m.port(6);
    m.mem.faultHook = (pa, _n, w) => w && pa >= m.priq && pa < m.priq + 16 * 64;
    m.smmu.pageRequest(pr(6, 0x42, true, DMA_READ, 3));
    m.mem.faultHook = null;
    const gerror = m.smmu.read32(SMMU_REG.GERROR);
    expect(gerror ^ m.smmu.read32(SMMU_REG.GERRORN)).toBe(GERROR_PRIQ_ABT_ERR);
    m.smmu.pageRequest(pr(6, 0x42, true, DMA_READ, 4));
    expect(m.priEntries()).toEqual([]);
    expect(p.responses).toEqual([
      { pasid: -1, prgIndex: 3, code: PRG_RESPONSE_FAILURE },
      { pasid: -1, prgIndex: 4, code: PRG_RESPONSE_FAILURE },
    ]);
    m.smmu.write32(SMMU_REG.GERRORN, gerror);
    m.smmu.pageRequest(pr(6, 0x42, true, DMA_READ, 5));
    expect(m.priEntries().length).toBe(1);
  });

  it("on overflow a PASID-tagged Last request is answered Success with its PASID only when STE.PPAR = 1 (8.1)", () => {
    for (const ppar of [0, 1]) {
      const m = smmuTestMachine({ queueLog2: 1 });
      const p = m.port(6);
      m.b.setSte(m.st, 6, { Config: 4, PPAR: ppar });
      for (let i = 0; i < 2; i++) m.smmu.pageRequest(pr(6, 0x42, false));
      m.smmu.pageRequest(pr(6, 0x42, true, DMA_READ, 7));
      m.smmu.pageRequest(pr(6, 0x42, true, 0, 8));
      expect(p.responses).toEqual([{ pasid: ppar ? 0x42 : -1, prgIndex: 7, code: PRG_SUCCESS }]);
    }
  });

  it("on overflow a PASID-tagged Last request of a StreamID without a usable STE gets Response Failure, recorded with REC_CFG_ATS (8.1)", () => {
    for (const cr2 of [CR2_RECINVSID, CR2_RECINVSID | REC_CFG_ATS]) {
      const m = smmuTestMachine({ queueLog2: 1, cr2 });
      const p = m.port(9);
      for (let i = 0; i < 2; i++) m.smmu.pageRequest(pr(9, 0x42, false));
      m.smmu.pageRequest(pr(9, 0x42, true, DMA_READ, 7));
      expect(p.responses).toEqual([{ pasid: -1, prgIndex: 7, code: PRG_RESPONSE_FAILURE }]);
      const ev = m.events();
      expect(ev.map((e) => e.id)).toEqual(cr2 & REC_CFG_ATS ? [EVT_ID.C_BAD_STE] : []);
    }
  });
});
