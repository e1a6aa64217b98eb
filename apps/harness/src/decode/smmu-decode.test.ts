// Tests of the SMMUv3 decoder: documents of images built with the table builder (linear and
// 2-level stream and CD tables, every stage configuration and granule), checked exactly against
// what was built; every kind of malformed structure reported with the event the hardware raises;
// hostile images bounded; and decode and translate agreeing with the hardware on every page.

import { fc, test } from "@fast-check/vitest";
import { CD, EVT_ID, L1_STD, STE } from "@iommu-sim/arm-smmu/format";
import {
  DEFAULT_SMMU_FEATURES,
  decodeCdWords,
  decodeSteWords,
  resolveSmmuFeatures,
  SmmuCdConfig,
  type SmmuFeatures,
  SmmuSteConfig,
} from "@iommu-sim/arm-smmu/hw";
import {
  type LeafOptions,
  type LpaeTable,
  type SmmuTestMachine,
  type SmmuTestMachineOptions,
  type StreamTable,
  smmuTestMachine,
} from "@iommu-sim/arm-smmu/testing";
import { DMA_READ, DMA_WRITE, XLATE_OK } from "@iommu-sim/iommu-core";
import {
  encode,
  type FieldValues,
  PhysMemory,
  Prng,
  saveElfCore,
  saveSparseImage,
  toHex,
} from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { ImageInputError, loadMemoryImage } from "./image-input.js";
import {
  decodeSmmu,
  explainCdIllegal,
  explainSteIllegal,
  formatSmmuDecode,
  lookupSmmuTranslation,
  SMMU_DECODE_LIMITS,
  type SmmuDecodeDocument,
  type SmmuDecodeOptions,
  type SmmuMapping,
  smmuEventRef,
  smmuStreamTableOf,
} from "./smmu-decode.js";
import { SmmuTranslator } from "./smmu-translate.js";

const hex = toHex;
const SZ_4K = 0x1000;
const SZ_2M = 0x20_0000;
const SZ_1G = 0x4000_0000;

/** STRTAB_BASE_CFG of a builder's stream table. */
const cfgOf = (st: StreamTable) => (st.fmt << 16) | (st.split << 6) | st.log2size;

/** Decode `m`'s memory through its stream table, failing the test on a refused register. */
function decodeM(m: SmmuTestMachine, options: Partial<SmmuDecodeOptions> = {}): SmmuDecodeDocument {
  return decodeOk(m.mem, { strtabBase: m.st.base, strtabCfg: cfgOf(m.st), ...options });
}

function decodeOk(mem: PhysMemory, options: SmmuDecodeOptions): SmmuDecodeDocument {
  const doc = decodeSmmu(mem, options);
  if (typeof doc === "string") throw new Error(doc);
  return doc;
}

/** The document without the raw entries, for whole-document comparisons. */
function skeleton(doc: SmmuDecodeDocument) {
  return doc.devices.map(({ ste, l1std, ...dev }) => ({
    ...dev,
    translations: dev.translations.map(({ cd, l1cd, ...t }) => t),
  }));
}

/** One leaf run as built: input, output, bytes, and the attributes the decoder reports. */
interface Ref {
  readonly iova: bigint;
  readonly pa: number;
  readonly size: number;
  readonly attrs: Readonly<Record<string, number | boolean>>;
}

/** What the decoder reports for a stage 1 leaf the builder wrote with `o` (under `table` attrs). */
function s1Attrs(o: LeafOptions = {}, apTable = 0): Record<string, number | boolean> {
  let AP = o.ap ?? 1;
  if (apTable & 1) AP &= ~1;
  if (apTable & 2) AP |= 2;
  const UXN = o.uxn ? 1 : 0;
  return {
    r: true,
    w: (AP & 2) === 0,
    x: UXN === 0,
    u: (AP & 1) !== 0,
    AP,
    UXN,
    PXN: o.pxn ? 1 : 0,
    AttrIndx: 1,
    SH: 3,
    AF: o.af === false ? 0 : 1,
    nG: o.ng === false ? 0 : 1,
    DBM: o.dbm ? 1 : 0,
    Contiguous: o.contiguous ? 1 : 0,
  };
}

/** What the decoder reports for a stage 2 leaf the builder wrote with `o`. */
function s2Attrs(o: LeafOptions = {}): Record<string, number | boolean> {
  const S2AP = o.s2ap ?? 3;
  const XN = o.xn ?? 0;
  return {
    r: (S2AP & 1) !== 0,
    w: (S2AP & 2) !== 0,
    x: (XN & 2) === 0,
    S2AP,
    XN,
    MemAttr: o.memAttr ?? 0xf,
    SH: 3,
    AF: o.af === false ? 0 : 1,
    DBM: o.dbm ? 1 : 0,
    Contiguous: o.contiguous ? 1 : 0,
  };
}

/** Map `count` leaves of `level` from `iova` to `pa` in `pt`, recording the run. */
function mapRun(
  pt: LpaeTable,
  refs: Ref[],
  iova: number | bigint,
  pa: number,
  level: number,
  count: number,
  o: LeafOptions = {},
): void {
  const size = 2 ** pt.levelShift(level);
  for (let i = 0; i < count; i++) pt.map(BigInt(iova) + BigInt(i * size), pa + i * size, level, o);
  const attrs = pt.stage === 1 ? s1Attrs(o) : s2Attrs(o);
  refs.push({ iova: BigInt(iova), pa, size: size * count, attrs });
}

/** The runs as the decoder coalesces them: by input address, merging what continues. */
function coalesce(refs: readonly Ref[]): SmmuMapping[] {
  const sorted = [...refs].sort((a, b) => (a.iova < b.iova ? -1 : a.iova > b.iova ? 1 : 0));
  const out: Array<{ iova: bigint; pa: number; size: number; attrs: Ref["attrs"] }> = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (
      last !== undefined &&
      last.iova + BigInt(last.size) === r.iova &&
      last.pa + last.size === r.pa &&
      JSON.stringify(last.attrs) === JSON.stringify(r.attrs)
    ) {
      last.size += r.size;
    } else out.push({ ...r });
  }
  return out.map((r) => ({ iova: hex(r.iova), pa: hex(r.pa), size: r.size, ...r.attrs }) as never);
}

/** IPA = PA + IPA_OFF for the structures of a nested configuration. */
const IPA_OFF = 0x40_0000_0000;

/**
 * A stage 2 table of 48-bit IPAs. With 16K pages level 0 would resolve one bit, which stage 2
 * cannot start at (S2SL0 3 is reserved without DS): two concatenated level 1 tables instead.
 */
function s2Table48(m: SmmuTestMachine, g: number): LpaeTable {
  return m.b.lpae(2, g, 48, g === 14 ? { startLevel: 1 } : {});
}

/**
 * A stage 2 table (granule `g`, 48-bit IPAs) mapping the builder's memory at +IPA_OFF with level
 * 2 blocks, as a hypervisor maps guest memory.
 */
function guestS2(m: SmmuTestMachine, g = 12, refs: Ref[] = []): LpaeTable {
  const s2 = s2Table48(m, g);
  const block = 2 ** s2.levelShift(2);
  const blocks = Math.ceil(0x4020_0000 / block);
  mapRun(s2, refs, IPA_OFF, 0, 2, blocks);
  return s2;
}

describe("decodeSmmu on a linear stream table", () => {
  function image() {
    const m = smmuTestMachine({ log2size: 8 });
    const b = m.b;
    const s1Refs: Ref[] = [];
    const s1 = b.lpae(1, 12, 48);
    mapRun(s1, s1Refs, 0x1000, 0x8000_0000, 3, 4);
    // Continues the output addresses but read-only: a run of its own.
    mapRun(s1, s1Refs, 0x5000, 0x8000_4000, 3, 1, { ap: 3 });
    // Two 2 MiB blocks that continue each other: one run.
    mapRun(s1, s1Refs, 0x4000_0000, 0x1_0000_0000, 2, 2);
    mapRun(s1, s1Refs, 0x80_0000_0000, 0x2_4000_0000, 1, 1, { uxn: true, pxn: true, ng: false });
    const cdt = b.cdTable(3);
    const cd0 = b.setCd(cdt, 0, b.s1CdFields(s1, 1));
    const cd2 = b.setCd(cdt, 2, b.s1CdFields(s1, 2));
    // CD 5: TTB0 disabled (EPD0), as Linux leaves an SVA CD whose process exited.
    b.setCd(cdt, 5, { EPD0: 1, EPD1: 1, IPS: 5, ASID: 3 });
    b.setSte(m.st, 0x10, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 3, S1DSS: 2 });
    const s2Refs: Ref[] = [];
    // 40-bit IPA starting one level low: two concatenated level 1 tables.
    const s2 = b.lpae(2, 12, 40, { startLevel: 1 });
    mapRun(s2, s2Refs, 0x1000, 0x9000_0000, 3, 2, { s2ap: 1 });
    mapRun(s2, s2Refs, 0xff_c000_0000, 0x1_c000_0000, 1, 1, { xn: 2, memAttr: 1 });
    b.setSte(m.st, 0x11, { Config: 6, ...b.s2SteFields(s2, 9) });
    b.setSte(m.st, 0x12, { Config: 4 });
    b.setSte(m.st, 0x13, { Config: 0 });
    return { m, s1, s2, cdt, cd0, cd2, s1Refs, s2Refs };
  }

  it("lists every valid STE, its translations and each page table once, coalesced", () => {
    const { m, s1, s2, cdt, s1Refs, s2Refs } = image();
    const doc = decodeM(m);
    expect(doc).toMatchObject({
      arch: "smmu",
      streamTable: { address: hex(m.st.base), format: "linear", log2size: 8 },
      strtabBase: hex(m.st.base, 16),
      strtabCfg: "0x00000008",
      problems: [],
      truncated: false,
    });
    expect(skeleton(doc)).toEqual([
      {
        sid: 0x10,
        config: "s1",
        truncated: false,
        cdTable: {
          address: hex(cdt.ptr),
          format: "linear",
          entries: 8,
          s1dss: "SSID0",
          ipa: false,
        },
        translations: [
          { ssid: null, type: "s1", asid: 1, pageTable: hex(s1.root) },
          { ssid: 2, type: "s1", asid: 2, pageTable: hex(s1.root) },
          { ssid: 5, type: "s1", asid: 3, pageTable: null },
        ],
      },
      {
        sid: 0x11,
        config: "s2",
        truncated: false,
        vmid: 9,
        secondStageTable: hex(s2.root),
        translations: [{ ssid: null, type: "s2", vmid: 9, pageTable: hex(s2.root) }],
      },
      {
        sid: 0x12,
        config: "bypass",
        truncated: false,
        translations: [{ ssid: null, type: "bypass", pageTable: null }],
      },
      {
        sid: 0x13,
        config: "abort",
        truncated: false,
        translations: [{ ssid: null, type: "blocked", pageTable: null }],
      },
    ]);
    expect(Object.keys(doc.pageTables)).toEqual([hex(s1.root), hex(s2.root)]);
    expect(doc.pageTables[hex(s1.root)]).toEqual({
      stage: 1,
      range: "TTB0",
      granule: 4096,
      startLevel: 0,
      ias: 48,
      oas: 48,
      root: hex(s1.root),
      mappings: coalesce(s1Refs),
      tablePages: 6,
      truncated: false,
    });
    expect(doc.pageTables[hex(s1.root)]?.mappings.map((x) => x.size)).toEqual([
      0x4000,
      SZ_4K,
      2 * SZ_2M,
      SZ_1G,
    ]);
    expect(doc.pageTables[hex(s2.root)]).toEqual({
      stage: 2,
      granule: 4096,
      startLevel: 1,
      ias: 40,
      oas: 48,
      root: hex(s2.root),
      concatenated: 2,
      mappings: coalesce(s2Refs),
      // The 8 KiB root, a level 2 and a level 3 table.
      tablePages: 4,
      truncated: false,
    });
  });

  it("gives each structure its address, raw qwords and fields under the spec's names", () => {
    const { m, cd0, cdt } = image();
    const doc = decodeM(m);
    const dev = doc.devices[0];
    expect(dev?.ste).toMatchObject({
      layout: "STE",
      address: hex(m.st.base + 0x10 * 64),
      fields: { V: 1, Config: 5, S1ContextPtr: hex(cdt.ptr), S1CDMax: 3, S1DSS: 2, S2TTB: "0x0" },
    });
    expect(dev?.ste.raw).toHaveLength(8);
    expect(dev?.ste.raw[0]).toBe(hex(BigInt(cdt.ptr) | (3n << 59n) | 0xbn, 16));
    expect(dev?.translations[0]?.cd).toMatchObject({
      layout: "CD",
      address: hex(cd0),
      fields: { V: 1, AA64: 1, ASID: 1, T0SZ: 16, EPD1: 1, IPS: 5 },
    });
    expect(dev?.translations[0]?.l1cd).toBeUndefined();
  });

  it("filters: one StreamID, one SubstreamID; mappings: false skips the page tables", () => {
    const { m, s1 } = image();
    expect(decodeM(m, { device: 0x11 }).devices.map((d) => d.sid)).toEqual([0x11]);
    expect(decodeM(m, { device: 0x20 }).devices).toEqual([]);
    const one = decodeM(m, { ssid: 2 });
    expect(skeleton(one)).toEqual([
      expect.objectContaining({
        sid: 0x10,
        translations: [{ ssid: 2, type: "s1", asid: 2, pageTable: hex(s1.root) }],
      }),
    ]);
    expect(Object.keys(one.pageTables)).toEqual([hex(s1.root)]);
    // SubstreamID 0 serves requests without one under S1DSS = SSID0: not a translation of its own.
    expect(decodeM(m, { ssid: 0 }).devices).toEqual([]);
    const none = decodeM(m, { mappings: false });
    expect(none.pageTables).toEqual({});
    expect(none.devices).toHaveLength(4);
  });

  it("prints the tree, the mappings of each table and who uses it", () => {
    const { m, s1, s2 } = image();
    const text = formatSmmuDecode(decodeM(m));
    const lines = text.split("\n");
    expect(lines[0]).toBe(
      `SMMUv3 stream table ${hex(m.st.base)} (linear, 2^8 StreamIDs; STRTAB_BASE ${hex(m.st.base, 16)}, STRTAB_BASE_CFG 0x00000008)`,
    );
    expect(lines[1]).toBe("4 devices, 6 translations, 2 page tables with 6 mappings");
    expect(text).toContain("\nsid 0x10 (16): s1\n");
    expect(text).toContain("  CD table ");
    expect(text).toContain(`  no SubstreamID: stage 1, ASID 1, table ${hex(s1.root)}\n    CD   @`);
    expect(text).toContain("  SubstreamID 5: stage 1, ASID 3, TTB0 disabled\n");
    expect(text).toContain(`  no SubstreamID: stage 2, VMID 9, table ${hex(s2.root)}\n`);
    expect(text).toContain("  no SubstreamID: bypass\n");
    expect(text).toContain("  no SubstreamID: blocked (abort STE: terminated without an event)\n");
    expect(text).toContain(
      `page table ${hex(s1.root)}: stage 1 TTB0, 4K granule, start level 0, 48-bit input, 48-bit output, 4 mappings, used by sid 0x10, sid 0x10 ssid 2\n`,
    );
    expect(text).toContain(
      [
        "  0x1000-0x4fff             -> 0x80000000   16 KiB  rwx user  AttrIndx=1 SH=3 nG",
        "  0x5000-0x5fff             -> 0x80004000    4 KiB  r-x user  AttrIndx=1 SH=3 nG",
        "  0x40000000-0x403fffff     -> 0x100000000   4 MiB  rwx user  AttrIndx=1 SH=3 nG",
        "  0x8000000000-0x803fffffff -> 0x240000000   1 GiB  rw- user  PXN AttrIndx=1 SH=3",
      ].join("\n"),
    );
    expect(text).toContain(
      `page table ${hex(s2.root)}: stage 2, 4K granule, start level 1 (2 concatenated), 40-bit input, 48-bit output, 2 mappings, used by sid 0x11\n`,
    );
    expect(text).toContain(
      "  0x1000-0x2fff             -> 0x90000000   8 KiB  r-x  MemAttr=0xf SH=3\n" +
        "  0xffc0000000-0xffffffffff -> 0x1c0000000  1 GiB  rw-  MemAttr=0x1 SH=3\n",
    );
    expect(text.endsWith("\n")).toBe(true);
  });
});

describe("decodeSmmu on 2-level stream tables and CD tables", () => {
  it("walks L1STDs, 4K- and 64K-leaf CD tables, and S1DSS bypass and terminate", () => {
    const m = smmuTestMachine({ streamTable: "2lvl", log2size: 16 });
    const b = m.b;
    const refs: Ref[] = [];
    const s1 = b.lpae(1, 12, 48);
    mapRun(s1, refs, 0x10_0000, 0x7000_0000, 3, 1);
    const t4k = b.cdTable(8, 1);
    b.setCd(t4k, 3, b.s1CdFields(s1, 3));
    b.setCd(t4k, 200, b.s1CdFields(s1, 200));
    b.setSte(m.st, 0x1234, { Config: 5, S1ContextPtr: t4k.ptr, S1CDMax: 8, S1Fmt: 1, S1DSS: 1 });
    const t64k = b.cdTable(12, 2);
    const cd3000 = b.setCd(t64k, 3000, b.s1CdFields(s1, 7));
    b.setSte(m.st, 0x1235, { Config: 5, S1ContextPtr: t64k.ptr, S1CDMax: 12, S1Fmt: 2 });
    // S1CDMax 0: one CD for requests without a SubstreamID.
    const single = b.cdTable(0);
    b.setCd(single, 0, b.s1CdFields(s1, 9));
    b.setSte(m.st, 0x8000, { Config: 5, S1ContextPtr: single.ptr });
    const doc = decodeM(m);
    expect(doc.streamTable).toEqual({
      address: hex(m.st.base),
      format: "2-level",
      log2size: 16,
      split: 8,
    });
    expect(doc.problems).toEqual([]);
    const pt = hex(s1.root);
    expect(skeleton(doc)).toEqual([
      {
        sid: 0x1234,
        config: "s1",
        truncated: false,
        cdTable: {
          address: hex(t4k.ptr),
          format: "2lvl-4K",
          entries: 256,
          s1dss: "bypass",
          ipa: false,
        },
        translations: [
          { ssid: null, type: "bypass", pageTable: null },
          { ssid: 3, type: "s1", asid: 3, pageTable: pt },
          { ssid: 200, type: "s1", asid: 200, pageTable: pt },
        ],
      },
      {
        sid: 0x1235,
        config: "s1",
        truncated: false,
        cdTable: {
          address: hex(t64k.ptr),
          format: "2lvl-64K",
          entries: 4096,
          s1dss: "terminate",
          ipa: false,
        },
        translations: [
          {
            ssid: null,
            type: "blocked",
            pageTable: null,
            event: smmuEventRef(EVT_ID.F_STREAM_DISABLED),
          },
          { ssid: 3000, type: "s1", asid: 7, pageTable: pt },
        ],
      },
      {
        sid: 0x8000,
        config: "s1",
        truncated: false,
        cdTable: {
          address: hex(single.ptr),
          format: "single",
          entries: 1,
          s1dss: "terminate",
          ipa: false,
        },
        translations: [{ ssid: null, type: "s1", asid: 9, pageTable: pt }],
      },
    ]);
    expect(doc.pageTables[pt]?.mappings).toEqual(coalesce(refs));
    const d = doc.devices;
    expect(d[0]?.l1std).toMatchObject({
      layout: "L1STD",
      address: hex(m.st.base + 0x12 * 8),
      fields: { Span: 9 },
    });
    expect(d[1]?.l1std?.address).toBe(d[0]?.l1std?.address);
    expect(d[1]?.translations[1]?.l1cd).toMatchObject({
      layout: "L1CD",
      address: hex(t64k.ptr + 2 * 8),
      fields: { V: 1 },
    });
    expect(d[1]?.translations[1]?.cd?.address).toBe(hex(cd3000));
    // The L1STD shared by two devices is printed once.
    const text = formatSmmuDecode(doc);
    expect(text.split("\nL1STD @").length).toBe(3);
  });

  it("SPLIT 6 and 10, and a Span smaller than SPLIT + 1", () => {
    for (const split of [6, 10]) {
      const m = smmuTestMachine({ streamTable: "2lvl", log2size: 12 });
      // The builder's table is SPLIT 8; a new L1 of SPLIT `split` over the same memory.
      const l1 = m.b.alloc(8 * 2 ** (12 - split));
      const l2 = m.b.alloc(64 * 4);
      m.b.write(L1_STD, l1 + 8, { Span: 3, L2Ptr: l2 });
      m.b.write(STE, l2 + 64, { V: 1, Config: 4 });
      m.b.write(STE, l2 + 3 * 64, { V: 1, Config: 4 });
      const doc = decodeOk(m.mem, { strtabBase: l1, strtabCfg: (1 << 16) | (split << 6) | 12 });
      const base = 2 ** split;
      expect(doc.devices.map((d) => d.sid)).toEqual([base + 1, base + 3]);
    }
  });

  it("a 2-level table of 2^32 StreamIDs costs what the image holds", () => {
    const mem = new PhysMemory();
    // SPLIT 6: 2^26 L1STDs (512 MiB), only two of them written.
    const l1 = 0x2000_0000;
    const l2a = 0x100_0000;
    const l2b = 0x200_0000;
    mem.write64(l1 + 5 * 8, l2a | 7, 0);
    mem.write64(l1 + 0x3ff_fff0 * 8, l2b | 7, 0);
    mem.write64(l2a + 2 * 64, 0x9, 0); // V, Config bypass
    mem.write64(l2b + 63 * 64, 0x9, 0);
    const f = resolveSmmuFeatures({ sidBits: 32 }) as SmmuFeatures;
    const doc = decodeOk(mem, {
      strtabBase: l1,
      strtabCfg: (1 << 16) | (6 << 6) | 32,
      features: f,
    });
    expect(doc.devices.map((d) => d.sid)).toEqual([5 * 64 + 2, 0x3ff_fff0 * 64 + 63]);
    expect(doc.truncated).toBe(false);
  });
});

describe("decodeSmmu, granules, blocks and ranges", () => {
  for (const g of [12, 14, 16]) {
    it(`stage 1 and stage 2 with the ${2 ** (g - 10)}K granule: pages, blocks, contiguous runs`, () => {
      const m = smmuTestMachine();
      const refs1: Ref[] = [];
      const refs2: Ref[] = [];
      const page = 2 ** g;
      const block = 2 ** (g + g - 3);
      const s1 = m.b.lpae(1, g, 48);
      mapRun(s1, refs1, page * 3, 0x1000_0000, 3, 3, { contiguous: true });
      mapRun(s1, refs1, block * 5, block * 2, 2, 1, { dbm: true, ap: 2 });
      const cdt = m.b.cdTable(0);
      m.b.setCd(cdt, 0, m.b.s1CdFields(s1, 1));
      m.b.setSte(m.st, 1, { Config: 5, S1ContextPtr: cdt.ptr });
      const s2 = m.b.lpae(2, g, 40);
      mapRun(s2, refs2, page, 0x2000_0000, 3, 2, { af: false });
      mapRun(s2, refs2, block * 3, block, 2, 1);
      m.b.setSte(m.st, 2, { Config: 6, ...m.b.s2SteFields(s2, 1) });
      const doc = decodeM(m);
      expect(doc.problems).toEqual([]);
      expect(doc.pageTables[hex(s1.root)]).toMatchObject({
        stage: 1,
        granule: page,
        startLevel: s1.startLevel,
        mappings: coalesce(refs1),
      });
      expect(doc.pageTables[hex(s2.root)]).toMatchObject({
        stage: 2,
        granule: page,
        startLevel: s2.startLevel,
        ias: 40,
        mappings: coalesce(refs2),
      });
    });
  }

  it("a TTB1 table lists the upper range's 64-bit addresses; HAD ignores table attributes", () => {
    const m = smmuTestMachine();
    const t0 = m.b.lpae(1, 12, 39);
    const t1 = m.b.lpae(1, 12, 39);
    // APTable read-only and UXNTable on the way down.
    t0.map(0x1000, 0x5000_0000, 3, {}, { apTable: 2, uxnTable: true });
    t1.map(0x2000, 0x6000_0000, 3);
    const cdt = m.b.cdTable(0);
    const fields: FieldValues = {
      ...m.b.s1CdFields(t0, 4),
      EPD1: 0,
      T1SZ: 25,
      TG1: 2,
      TTB1: t1.rootDesc,
    };
    m.b.setCd(cdt, 0, fields);
    m.b.setSte(m.st, 3, { Config: 5, S1ContextPtr: cdt.ptr });
    // The same TTB0 with HAD0: hierarchical attributes disabled, a second reading of the root.
    const cdt2 = m.b.cdTable(0);
    m.b.setCd(cdt2, 0, { ...m.b.s1CdFields(t0, 5), HAD0: 1 });
    m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt2.ptr });
    const doc = decodeM(m);
    expect(doc.devices[0]?.translations[0]).toMatchObject({
      pageTable: hex(t0.root),
      ttb1Table: hex(t1.root),
    });
    expect(doc.devices[1]?.translations[0]?.pageTable).toBe(`${hex(t0.root)}#2`);
    expect(doc.pageTables[hex(t1.root)]).toMatchObject({
      range: "TTB1",
      ias: 39,
      mappings: [{ iova: "0xffffff8000002000", pa: "0x60000000", size: SZ_4K }],
    });
    expect(doc.pageTables[hex(t0.root)]?.mappings[0]).toMatchObject({
      w: false,
      x: false,
      AP: 3,
      UXN: 1,
    });
    expect(doc.pageTables[`${hex(t0.root)}#2`]).toMatchObject({ had: true });
    expect(doc.pageTables[`${hex(t0.root)}#2`]?.mappings[0]).toMatchObject({
      w: true,
      x: true,
      AP: 1,
      UXN: 0,
    });
    expect(formatSmmuDecode(doc)).toContain("0xffffff8000002000-0xffffff8000002fff -> 0x60000000");
    // translate agrees on the upper range.
    const t = translator(m);
    expect(t.translate({ sid: 3, ssid: null, iova: 0xffff_ff80_0000_2123n })).toMatchObject({
      result: "ok",
      pa: "0x60000123",
    });
  });
});

/** An SmmuTranslator on `m`'s memory (or `mem`) and stream table. */
function translator(m: SmmuTestMachine, mem: PhysMemory = m.mem, features?: SmmuFeatures) {
  const t = SmmuTranslator.create(mem, {
    strtabBase: BigInt(m.st.base),
    strtabCfg: BigInt(cfgOf(m.st)),
    features,
  });
  if (typeof t === "string") throw new Error(t);
  return t;
}

describe("decodeSmmu, nested translation", () => {
  /** sid 7: nested, CD table and stage 1 tables at IPA = PA + IPA_OFF. */
  function nestedImage() {
    const m = smmuTestMachine();
    const s2Refs: Ref[] = [];
    const s2 = guestS2(m, 12, s2Refs);
    const s1Refs: Ref[] = [];
    const s1 = m.b.lpae(1, 12, 48, { ipaOffset: -IPA_OFF });
    // Stage 1 outputs IPAs 0x80_0000_0000 + x; stage 2 maps them to 0x3000_0000 + x.
    mapRun(s1, s1Refs, 0x1000, 0x80_0000_1000, 3, 2);
    mapRun(s2, s2Refs, 0x80_0000_0000, 0x3000_0000, 2, 1, { s2ap: 1 });
    const cdt = m.b.cdTable(2);
    m.b.setCd(cdt, 0, m.b.s1CdFields(s1, 11));
    m.b.setCd(cdt, 1, m.b.s1CdFields(s1, 12));
    m.b.setSte(m.st, 7, {
      Config: 7,
      S1ContextPtr: cdt.ptr + IPA_OFF,
      S1CDMax: 2,
      S1DSS: 2,
      ...m.b.s2SteFields(s2, 5),
    });
    return { m, s1, s2, cdt, s1Refs, s2Refs };
  }

  it("CD table and stage 1 tables are IPAs, fetched through stage 2", () => {
    const { m, s1, s2, cdt, s1Refs, s2Refs } = nestedImage();
    const doc = decodeM(m);
    expect(doc.problems).toEqual([]);
    const s1Key = hex(s1.rootDesc);
    const s2Key = hex(s2.root);
    expect(skeleton(doc)).toEqual([
      {
        sid: 7,
        config: "nested",
        truncated: false,
        vmid: 5,
        secondStageTable: s2Key,
        cdTable: {
          address: hex(cdt.ptr + IPA_OFF),
          format: "linear",
          entries: 4,
          s1dss: "SSID0",
          ipa: true,
        },
        translations: [
          {
            ssid: null,
            type: "nested",
            asid: 11,
            vmid: 5,
            pageTable: s1Key,
            secondStageTable: s2Key,
          },
          { ssid: 1, type: "nested", asid: 12, vmid: 5, pageTable: s1Key, secondStageTable: s2Key },
        ],
      },
    ]);
    expect(doc.devices[0]?.translations[1]?.cd).toMatchObject({
      address: hex(cdt.ptr + 64),
      ipa: hex(cdt.ptr + 64 + IPA_OFF),
    });
    expect(doc.pageTables[s1Key]).toMatchObject({
      stage: 1,
      secondStageTable: s2Key,
      root: s1Key,
      mappings: coalesce(s1Refs),
    });
    expect(doc.pageTables[s2Key]?.mappings).toEqual(coalesce(s2Refs));
    expect(formatSmmuDecode(doc)).toContain(
      `nested: table and output addresses are IPAs, through ${s2Key}`,
    );
    const t = translator(m);
    expect(t.translate({ sid: 7, ssid: 1, iova: 0x2345n })).toMatchObject({
      result: "ok",
      pa: "0x30002345",
      w: false,
    });
  });

  it("a CD or a stage 1 table stage 2 does not map is a problem with the stage 2 event", () => {
    const { m, s1, cdt } = nestedImage();
    // Unmap the stage 2 block that holds the CD table, then the one of the stage 1 root.
    const s2Root = Number(decodeM(m).devices[0]?.secondStageTable);
    const cdBlock = cdt.ptr - (cdt.ptr % SZ_2M);
    const rootBlock = s1.root - (s1.root % SZ_2M);
    // The stage 2 entry (level 2) of an IPA, walked by hand from the root.
    const entry = (ipa: number) => {
      let t = s2Root;
      for (let level = 0; level < 2; level++) {
        const at = t + Number((BigInt(ipa) >> BigInt(39 - 9 * level)) & 511n) * 8;
        t = Number(m.mem.read64Big(at) & 0xffff_ffff_f000n);
      }
      return t + Number((BigInt(ipa) >> 21n) & 511n) * 8;
    };
    m.mem.write64(entry(cdBlock + IPA_OFF), 0, 0);
    const doc = decodeM(m);
    const ev = smmuEventRef(EVT_ID.F_TRANSLATION);
    expect(doc.devices[0]?.translations[0]).toMatchObject({
      ssid: null,
      type: "blocked",
      event: ev,
    });
    expect(doc.problems).toContainEqual({
      address: hex(cdt.ptr + IPA_OFF),
      structure: "CD 0 of StreamID 0x7",
      message: `the CD (an IPA) is not mapped readable by stage 2 (IPA ${hex(cdt.ptr + IPA_OFF)})`,
      event: ev,
    });
    expect(translator(m).translate({ sid: 7, ssid: null, iova: 0x1000n })).toMatchObject({
      result: "fault",
      event: ev,
    });
    if (rootBlock !== cdBlock) {
      m.mem.write64(entry(rootBlock + IPA_OFF), 0, 0);
      const doc2 = decodeM(m);
      expect(doc2.problems.map((p) => p.message)).toContainEqual(
        `table at IPA ${hex(s1.rootDesc)} is not mapped readable by stage 2 (F_TRANSLATION)`,
      );
    }
  });
});

describe("decodeSmmu reports what the SMMU refuses, with its event", () => {
  const C_BAD_STE = smmuEventRef(EVT_ID.C_BAD_STE);

  it("ILLEGAL STEs are blocked with C_BAD_STE and the reason", () => {
    const m = smmuTestMachine();
    const s2 = m.b.lpae(2, 12, 40);
    const cases: Array<[FieldValues, string]> = [
      [{ Config: 5, S1CDMax: 21 }, "S1CDMax 21 is above IDR1.SSIDSIZE 20"],
      [{ Config: 4, DRE: 0, PARTID: 0, S1STALLD: 0, IMPLEMENTATION_DEFINED: 0 }, ""],
      [{ Config: 5, STRW: 1 }, "STRW 1 is ILLEGAL in a Non-secure STE"],
      [
        { Config: 5, S1ContextPtr: 2 ** 50 },
        "S1ContextPtr 0x4000000000000 is beyond the 48-bit output address size (IDR5.OAS)",
      ],
      [
        { Config: 5, EATS: 2 },
        "EATS 0b10 (split-stage ATS) is not supported: IDR0.NS1ATS is 1 in this model",
      ],
      [{ Config: 6, ...m.b.s2SteFields(s2, 1), S2TG: 3 }, "S2TG 3 is reserved"],
      [
        { Config: 6, ...m.b.s2SteFields(s2, 1), S2AA64: 0 },
        "S2AA64 is 0 (VMSAv8-32 LPAE stage 2 tables): this SMMU walks VMSAv8-64 tables only",
      ],
      [
        { Config: 6, ...m.b.s2SteFields(s2, 1), S2T0SZ: 10 },
        "S2T0SZ 10 is outside 16..39 (the 4K granule, a 48-bit IAS, no IDR3.STT)",
      ],
      [{ Config: 6, ...m.b.s2SteFields(s2, 1), S2SL0: 3 }, "S2SL0 3 is reserved"],
      [
        { Config: 6, ...m.b.s2SteFields(s2, 1), S2SL0: 0 },
        "S2SL0 0 (start at level 2) does not suit S2T0SZ 24: the starting level would resolve 19 address bits (1 to 13, at most 16 concatenated tables)",
      ],
      [
        { Config: 6, ...m.b.s2SteFields(s2, 1), S2TTB: 2 ** 49 },
        "S2TTB 0x2000000000000 is beyond the 48-bit stage 2 output size (S2PS, IDR5.OAS)",
      ],
    ];
    cases.forEach(([fields], i) => {
      m.b.setSte(m.st, 0x20 + i, fields);
    });
    // Reserved bits: 58:56 of an S1 STE.
    const at = m.b.setSte(m.st, 0x40, { Config: 5 });
    m.mem.write32(at + 4, m.mem.read32(at + 4) | 0x0300_0000);
    const doc = decodeM(m, { mappings: false });
    cases.forEach(([fields, why], i) => {
      const sid = 0x20 + i;
      const dev = doc.devices.find((d) => d.sid === sid);
      const where = `STE of StreamID ${hex(sid)}`;
      if (why === "") {
        expect(dev?.translations[0]?.type).toBe("bypass");
        expect(doc.problems.some((p) => p.structure === where)).toBe(false);
        return;
      }
      expect(dev?.translations).toEqual([
        { ssid: null, type: "blocked", pageTable: null, event: C_BAD_STE },
      ]);
      expect(dev?.config).toBe(Number(fields.Config) === 6 ? "s2" : "s1");
      expect(doc.problems).toContainEqual({
        address: hex(m.st.base + sid * 64),
        structure: where,
        message: why,
        event: C_BAD_STE,
      });
    });
    expect(doc.problems).toContainEqual({
      address: hex(at),
      structure: "STE of StreamID 0x40",
      message: "reserved bits set: 56-57",
      event: C_BAD_STE,
    });
    // The hardware agrees: every one of them is C_BAD_STE to a request.
    const t = translator(m);
    for (const [i, [, why]] of cases.entries()) {
      if (why === "") continue;
      expect(t.translate({ sid: 0x20 + i, ssid: null, iova: 0n })).toMatchObject({
        event: C_BAD_STE,
      });
    }
  });

  it("reserved bits of an abort STE are noted without an event; features decide the rest", () => {
    const m = smmuTestMachine();
    // Bit 56 (RES0) of an abort STE.
    const at = m.b.setSte(m.st, 1, { Config: 0 });
    m.mem.write32(at + 4, 1 << 24);
    m.b.setSte(m.st, 2, { Config: 6 });
    m.b.setSte(m.st, 3, { Config: 5, S1Fmt: 1, S1CDMax: 4 });
    const noS2 = resolveSmmuFeatures({ s2p: false, cd2l: false }) as SmmuFeatures;
    const doc = decodeM(m, { features: noS2, mappings: false });
    expect(doc.problems).toEqual([
      {
        address: hex(at),
        structure: "STE of StreamID 0x1",
        message: "reserved bits set: 56 (not checked in an abort STE)",
      },
      {
        address: hex(m.st.base + 128),
        structure: "STE of StreamID 0x2",
        message: "Config selects stage 2, which the SMMU lacks (IDR0.S2P is 0)",
        event: C_BAD_STE,
      },
      {
        address: hex(m.st.base + 192),
        structure: "STE of StreamID 0x3",
        message: "S1Fmt 1 selects a 2-level CD table, which the SMMU lacks (IDR0.CD2L is 0)",
        event: C_BAD_STE,
      },
    ]);
    const lax = resolveSmmuFeatures({ checkReserved: false }) as SmmuFeatures;
    const at2 = m.b.setSte(m.st, 4, { Config: 4 });
    m.mem.write32(at2 + 4, 1 << 24);
    expect(decodeM(m, { features: lax, device: 4 }).problems).toEqual([
      {
        address: hex(at2),
        structure: "STE of StreamID 0x4",
        message: "reserved bits set: 56 (ignored by this SMMU)",
      },
    ]);
  });

  it("ILLEGAL CDs are blocked with C_BAD_CD and the reason; an invalid CD is just blocked", () => {
    const m = smmuTestMachine();
    const s1 = m.b.lpae(1, 12, 48);
    const cdt = m.b.cdTable(4);
    const good = m.b.s1CdFields(s1, 1);
    const cases: Array<[FieldValues, string]> = [
      [
        { ...good, AA64: 0 },
        "AA64 is 0 (VMSAv8-32 LPAE tables): this SMMU walks VMSAv8-64 tables only",
      ],
      [{ ...good, TG0: 3 }, "TG0 3 is reserved"],
      [{ ...good, T0SZ: 40 }, "T0SZ 40 is outside 16..39 (the 4K granule, no IDR3.STT)"],
      [
        { ...good, IPS: 0, TTB0: 2 ** 33 },
        "TTB0 0x200000000 is beyond the 32-bit output size (IPS, IDR5.OAS)",
      ],
      [{ ...good, EPD1: 0, TG1: 0 }, "TG1 0 is reserved"],
      [{ ...good, ENDI: 1 }, "ENDI is 1 (big-endian tables): this SMMU is little-endian only"],
    ];
    cases.forEach(([fields], i) => {
      m.b.setCd(cdt, i + 1, fields);
    });
    // Bit 116 (RES0, between TTB0 and PnCH).
    const rsvAt = m.b.setCd(cdt, 9, good);
    m.mem.write32(rsvAt + 12, m.mem.read32(rsvAt + 12) | (1 << 20));
    // CD 10: V = 0 but not zero.
    m.b.setCd(cdt, 10, { ...good, V: 0 });
    m.b.setSte(m.st, 5, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 4, S1DSS: 2 });
    const doc = decodeM(m, { mappings: false });
    const C_BAD_CD = smmuEventRef(EVT_ID.C_BAD_CD);
    const tr = doc.devices[0]?.translations ?? [];
    // CD 0 (V = 0) serves requests without a SubstreamID: blocked, not a problem.
    expect(tr[0]).toMatchObject({ ssid: null, type: "blocked", event: C_BAD_CD });
    cases.forEach(([, why], i) => {
      expect(tr.find((t) => t.ssid === i + 1)).toMatchObject({ type: "blocked", event: C_BAD_CD });
      expect(doc.problems).toContainEqual({
        address: hex(cdt.ptr + (i + 1) * 64),
        structure: `CD ${i + 1} of StreamID 0x5`,
        message: why,
        event: C_BAD_CD,
      });
    });
    expect(doc.problems).toContainEqual({
      address: hex(rsvAt),
      structure: "CD 9 of StreamID 0x5",
      message: "reserved bits set: 116",
      event: C_BAD_CD,
    });
    expect(tr.some((t) => t.ssid === 10)).toBe(false);
    expect(doc.problems).toHaveLength(cases.length + 1);
    const t = translator(m);
    for (let i = 1; i <= cases.length; i++) {
      expect(t.translate({ sid: 5, ssid: i, iova: 0n })).toMatchObject({ event: C_BAD_CD });
    }
  });

  it("bad L1STDs and L1CDs make their IDs invalid (C_BAD_STREAMID, C_BAD_SUBSTREAMID)", () => {
    const m = smmuTestMachine({ streamTable: "2lvl", log2size: 12 });
    const bad = smmuEventRef(EVT_ID.C_BAD_STREAMID);
    m.mem.write64(m.st.base + 8, m.b.alloc(0x4000) | 13, 0); // Span 13: reserved
    m.mem.write64(m.st.base + 16, m.b.alloc(0x8000) | 10, 0); // Span 10 > SPLIT + 1
    m.mem.write64(m.st.base + 24, m.b.alloc(0x4000) | 9 | 0x20, 0); // bit 5: reserved
    m.mem.write64(m.st.base + 32, 0x1000, 0); // Span 0, not zero
    const s1 = m.b.lpae(1, 12, 48);
    const t = m.b.cdTable(12, 2);
    m.b.setCd(t, 5, m.b.s1CdFields(s1, 1));
    const l1 = t.ptr + 8;
    m.mem.write64(l1, m.b.alloc(0x10000) | 1 | 2, 0); // SubstreamIDs 1024-2047: reserved bit 1
    m.mem.write64(l1 + 8, (m.b.alloc(0x20000) + 0x1000) | 1, 0); // 2048-3071: L2Ptr not 64K-aligned
    m.mem.write64(l1 + 16, 1, 1 << 20); // 3072-4095: beyond the OAS
    m.b.setSte(m.st, 0x500, { Config: 5, S1ContextPtr: t.ptr, S1CDMax: 12, S1Fmt: 2 });
    const doc = decodeM(m, { mappings: false });
    expect(doc.problems.slice(0, 4)).toEqual([
      {
        address: hex(m.st.base + 8),
        structure: "L1STD of StreamIDs 0x100-0x1ff",
        message: "Span 13 is reserved: its StreamIDs are invalid",
        event: bad,
      },
      {
        address: hex(m.st.base + 16),
        structure: "L1STD of StreamIDs 0x200-0x2ff",
        message: "Span 10 is above SPLIT + 1 (9): its StreamIDs are invalid",
        event: bad,
      },
      {
        address: hex(m.st.base + 24),
        structure: "L1STD of StreamIDs 0x300-0x3ff",
        message: "reserved bits set: 5: its StreamIDs are invalid",
        event: bad,
      },
      {
        address: hex(m.st.base + 32),
        structure: "L1STD of StreamIDs 0x400-0x4ff",
        message: "Span is 0 but the descriptor is not: its StreamIDs are invalid",
        event: bad,
      },
    ]);
    const sub = smmuEventRef(EVT_ID.C_BAD_SUBSTREAMID);
    expect(doc.problems.slice(4).map((p) => [p.address, p.message, p.event])).toEqual([
      [hex(l1), "reserved bits set: 1: its SubstreamIDs are invalid", sub],
      [
        hex(l1 + 8),
        `L2Ptr ${hex(Number(m.mem.read64Big(l1 + 8) & ~0xfffn))} is not 64 KiB aligned (bits [15:12] are RES0 with 1024-CD leaves): its SubstreamIDs are invalid`,
        sub,
      ],
      [
        hex(l1 + 16),
        "L2Ptr 0x10000000000000 is beyond the 48-bit output address size (IDR5.OAS): its SubstreamIDs are invalid",
        sub,
      ],
    ]);
    expect(doc.devices[0]?.translations.map((x) => x.ssid)).toEqual([null, 5]);
    const tr = translator(m);
    for (const sid of [0x100, 0x250, 0x300, 0x400]) {
      expect(tr.translate({ sid, ssid: null, iova: 0n })).toMatchObject({ event: bad });
    }
    for (const ssid of [1024, 2048, 3072]) {
      expect(tr.translate({ sid: 0x500, ssid, iova: 0n })).toMatchObject({ event: sub });
    }
    // A filtered StreamID beyond its Span, or beyond the table.
    m.b.setSte(m.st, 0x600, { Config: 4 });
    m.mem.write64(m.st.base + 6 * 8, m.mem.read64(m.st.base + 6 * 8) - 8, 0); // Span 9 -> 1
    expect(decodeM(m, { device: 0x601 }).problems).toEqual([
      {
        address: hex(m.st.base + 48),
        structure: "L1STD of StreamIDs 0x600-0x6ff",
        message: "StreamID 0x601 is beyond the Span (1 STEs): its transactions are aborted",
        event: bad,
      },
    ]);
    expect(decodeM(m, { device: 0x600 }).devices.map((d) => d.sid)).toEqual([0x600]);
    expect(decodeM(m, { device: 0x1000 }).problems).toEqual([
      {
        address: hex(m.st.base),
        structure: "stream table",
        message:
          "StreamID 0x1000 is beyond the stream table (2^12 StreamIDs): its transactions are aborted",
        event: bad,
      },
    ]);
  });

  it("page-table entries the walker refuses are reported and left out", () => {
    const m = smmuTestMachine();
    const s1 = m.b.lpae(1, 16, 48);
    const refs: Ref[] = [];
    mapRun(s1, refs, 0x1_0000, 0x10_0000, 3, 1);
    const l3 = s1.raw(0x2_0000, 3, 0x20_0001 | 0x400, 0); // bits[1:0] 0b01 at level 3
    const l1 = s1.raw(0x400_0000_0000, 1, 0x1 | 0x400, 0); // a 64K level 1 block, 48-bit output
    const s16 = m.b.lpae(1, 14, 48);
    const l1b = s16.raw(0x10_0000_0000, 1, 0x1 | 0x400, 0); // 16K level 1 block
    const s4 = m.b.lpae(1, 12, 48);
    const res0 = s4.raw(0x1000, 3, 0x3 | 0x400, 0x1_0000); // bit 48 with a 4K granule
    const big = s4.raw(0x2000, 3, 0x3 | 0x400, 0x1000); // 0x1000_0000_0000 >= 2^44 (IPS 44)
    const odd = s4.raw(0x20_0000, 2, 0x1 | 0x40 | 0x400 | 0x3000, 0); // block with RES0 bits inside
    const cd = (pt: LpaeTable, ssid: number, extra: FieldValues = {}) => ({
      ...m.b.s1CdFields(pt, ssid),
      ...extra,
    });
    for (const [sid, pt, extra] of [
      [1, s1, {}],
      [2, s16, {}],
      [3, s4, { IPS: 4 }],
    ] as const) {
      const t = m.b.cdTable(0);
      m.b.setCd(t, 0, cd(pt, sid, extra));
      m.b.setSte(m.st, sid, { Config: 5, S1ContextPtr: t.ptr });
    }
    const doc = decodeM(m);
    const T = smmuEventRef(EVT_ID.F_TRANSLATION);
    const A = smmuEventRef(EVT_ID.F_ADDR_SIZE);
    const name = (pt: LpaeTable, level: number) =>
      `stage 1 TTB0 table ${hex(pt.root)}, level ${level} entry`;
    expect(doc.problems).toEqual([
      {
        address: hex(l3),
        structure: name(s1, 3),
        message: "bits[1:0] are 0b01 at level 3: a reserved encoding, treated as invalid",
        event: T,
      },
      {
        address: hex(l1),
        structure: name(s1, 1),
        message:
          "a block descriptor at level 1 is not allowed with the 64K granule without a 52-bit output size",
        event: T,
      },
      {
        address: hex(l1b),
        structure: name(s16, 1),
        message: "a block descriptor at level 1 is not allowed with the 16K granule",
        event: T,
      },
      {
        address: hex(res0),
        structure: name(s4, 3),
        message: "output address bits [49:48] are set, beyond what the 4K granule holds",
        event: A,
      },
      {
        address: hex(big),
        structure: name(s4, 3),
        message: "output address 0x100000000000 is beyond the 44-bit output size",
        event: A,
      },
      {
        address: hex(odd),
        structure: name(s4, 2),
        message:
          "output address 0x3000 has bits set below the block size (RES0): the SMMU adds them to the offset",
      },
    ]);
    expect(doc.pageTables[hex(s1.root)]?.mappings).toEqual(coalesce(refs));
    expect(doc.pageTables[hex(s4.root)]?.mappings).toEqual([
      expect.objectContaining({ iova: "0x200000", pa: "0x3000", size: SZ_2M }),
    ]);
    const t = translator(m);
    expect(t.translate({ sid: 1, ssid: null, iova: 0x2_0000n })).toMatchObject({ event: T });
    expect(t.translate({ sid: 2, ssid: null, iova: 0x10_0000_0000n })).toMatchObject({ event: T });
    expect(t.translate({ sid: 3, ssid: null, iova: 0x1000n })).toMatchObject({ event: A });
    expect(t.translate({ sid: 3, ssid: null, iova: 0x2000n })).toMatchObject({ event: A });
    expect(t.translate({ sid: 3, ssid: null, iova: 0x20_0010n })).toMatchObject({ pa: "0x3010" });
  });

  it("tables outside memory are walk aborts; a stream table outside memory fetches nothing", () => {
    // A 36-bit memory: a next-level table at 2^36 is inside the 48-bit output size, outside memory.
    const mem = new PhysMemory({ paBits: 36 });
    const cd = encode(CD, { V: 1, AA64: 1, T0SZ: 16, EPD1: 1, IPS: 5, R: 1, A: 1, TTB0: 0x3000 });
    for (let i = 0; i < 16; i += 2)
      mem.write64(0x2000 + i * 4, cd[i] as number, cd[i + 1] as number);
    mem.write64(0x1000 + 64, 0x2000 | 0xb, 0); // StreamID 1: stage 1, CD at 0x2000
    mem.write64(0x3000, 0x3, 0x10); // level 0 -> table at 2^36
    const doc = decodeOk(mem, { strtabBase: 0x1000, strtabCfg: 4 });
    const eabt = smmuEventRef(EVT_ID.F_WALK_EABT);
    expect(doc.problems).toEqual([
      {
        address: "0x1000000000",
        structure: "stage 1 TTB0 table 0x3000, level 1 table",
        message: "table 0x1000000000 is outside memory",
        event: eabt,
      },
    ]);
    const t = SmmuTranslator.create(mem, { strtabBase: 0x1000n, strtabCfg: 4n });
    if (typeof t === "string") throw new Error(t);
    expect(t.translate({ sid: 1, ssid: null, iova: 0x1000n })).toMatchObject({ event: eabt });
    const outside = decodeOk(mem, { strtabBase: 2 ** 40, strtabCfg: 4 });
    expect(outside.problems).toEqual([
      {
        address: "0x10000000000",
        structure: "stream table",
        message: "the stream table is outside memory: every STE fetch aborts",
        event: smmuEventRef(EVT_ID.F_STE_FETCH),
      },
    ]);
    expect(t.translate({ sid: 40, ssid: null, iova: 0n })).toMatchObject({
      event: smmuEventRef(EVT_ID.C_BAD_STREAMID),
    });
  });
});

describe("the explanations agree with the hardware's verdict", () => {
  /** Random STE / CD words biased towards legal values, so that each check gets exercised. */
  const wordsArb = (layout: typeof STE, base: FieldValues) =>
    fc
      .record({
        seed: fc.integer({ min: 0, max: 0x7fff_ffff }),
        flips: fc.integer({ min: 0, max: 3 }),
      })
      .map(({ seed, flips }) => {
        const rng = new Prng(seed);
        const values: FieldValues = { ...base };
        for (const f of layout.fields) {
          if (f.addr || f.width > 20) continue;
          if (rng.below(4) === 0) values[f.name] = rng.below(2 ** f.width);
        }
        const w = encode(layout, values);
        for (let i = 0; i < flips; i++) {
          const bit = rng.below(layout.bits);
          w[bit >>> 5] = ((w[bit >>> 5] as number) ^ (1 << (bit & 31))) >>> 0;
        }
        return w;
      });

  const featuresArb = fc.record({
    checkReserved: fc.boolean(),
    stallModel: fc.constantFrom<0 | 1 | 2>(0, 1, 2),
    httu: fc.constantFrom<0 | 1 | 2>(0, 1, 2),
    hyp: fc.boolean(),
    ssidBits: fc.integer({ min: 0, max: 20 }),
    vmidBits: fc.constantFrom<8 | 16>(8, 16),
    asidBits: fc.constantFrom<8 | 16>(8, 16),
    s1p: fc.boolean(),
    cd2l: fc.boolean(),
    stt: fc.boolean(),
    vax: fc.boolean(),
    termModel: fc.constantFrom<0 | 1>(0, 1),
    granules: fc.constantFrom<SmmuFeatures["granules"]>(
      ["4K"],
      ["4K", "64K"],
      ["16K"],
      ["4K", "16K", "64K"],
    ),
  });

  test.prop(
    [
      wordsArb(STE, { V: 1, Config: 6, S2AA64: 1, S2T0SZ: 24, S2SL0: 1, S2PS: 5, S2R: 1 }),
      featuresArb,
    ],
    { seed: 0x5ee_0001, numRuns: 400 },
  )(
    "explainSteIllegal says why exactly when decodeSteWords finds the STE ILLEGAL",
    (w, partial) => {
      const f = resolveSmmuFeatures(partial) as SmmuFeatures;
      if (typeof f === "string") return;
      const hw = decodeSteWords(w, f, new SmmuSteConfig());
      const why = explainSteIllegal(w, f);
      if ((w[0] as number) % 2 === 0) return;
      expect(why !== "").toBe(hw.status === EVT_ID.C_BAD_STE);
    },
  );

  test.prop(
    [
      wordsArb(CD, { V: 1, AA64: 1, T0SZ: 16, EPD1: 1, IPS: 5, R: 1, A: 1, TTB0: 0x1000 }),
      featuresArb,
      fc.record({ el2: fc.boolean(), stallD: fc.boolean() }),
    ],
    { seed: 0x5ee_0002, numRuns: 400 },
  )(
    "explainCdIllegal says why exactly when decodeCdWords finds the CD unusable",
    (w, partial, s) => {
      const f = resolveSmmuFeatures(partial) as SmmuFeatures;
      if (typeof f === "string") return;
      const ste = new SmmuSteConfig();
      ste.el2 = s.el2;
      ste.s1StallD = s.stallD;
      const hw = decodeCdWords(w, ste, f, new SmmuCdConfig());
      expect(explainCdIllegal(w, ste, f) !== "").toBe(hw.status === EVT_ID.C_BAD_CD);
    },
  );
});

describe("STRTAB_BASE and STRTAB_BASE_CFG", () => {
  const f = DEFAULT_SMMU_FEATURES;

  it("the SMMU's reading: effective LOG2SIZE, FMT and SPLIT, ADDR aligned by the literal LOG2SIZE; notes say what changed", () => {
    expect(smmuStreamTableOf(0x4000_0000n | (1n << 62n), 8, f)).toEqual({
      base: 0x4000_0000,
      log2size: 8,
      fmt: 0,
      split: 6,
      notes: [],
    });
    expect(
      smmuStreamTableOf(
        0x4000_0040n | 0x3fn | (1n << 63n),
        (3 << 16) | (7 << 6) | 20 | (1 << 20),
        f,
      ),
    ).toEqual({
      // Aligned by the literal LOG2SIZE 20 (64 MiB), not the 16 SIDSIZE leaves (6.3.24).
      base: 0x4000_0000 - (0x4000_0000 % 2 ** 26),
      log2size: 16,
      fmt: 0,
      split: 6,
      notes: [
        "STRTAB_BASE: reserved bits 0-5,63 are set; the SMMU ignores them",
        "STRTAB_BASE_CFG: reserved bits 20 are set; the SMMU ignores them",
        "STRTAB_BASE_CFG.LOG2SIZE 20 is above IDR1.SIDSIZE 16: 16 is used",
        "STRTAB_BASE_CFG.FMT 3 is reserved and behaves as 0: read as linear",
        `STRTAB_BASE.ADDR 0x40000040 is not aligned to the table's 67108864 bytes: the SMMU reads ${hex(0x4000_0000 - (0x4000_0000 % 2 ** 26))}`,
      ],
    });
    expect(smmuStreamTableOf(0x1000, (1 << 16) | (7 << 6) | 12, f)).toMatchObject({
      fmt: 1,
      split: 6,
      notes: ["STRTAB_BASE_CFG.SPLIT 7 is reserved and behaves as 6"],
    });
    const linearOnly = resolveSmmuFeatures({ twoLevelStreamTable: false }) as SmmuFeatures;
    expect(smmuStreamTableOf(0x4000, (1 << 16) | (8 << 6) | 8, linearOnly)).toMatchObject({
      fmt: 0,
      notes: [
        "STRTAB_BASE_CFG.FMT is 1 (2-level) but IDR0.ST_LEVEL offers linear tables only: read as linear",
      ],
    });
    expect(smmuStreamTableOf(1n << 64n, 0, f)).toBe(
      "STRTAB_BASE 18446744073709551616 does not fit a 64-bit register",
    );
    expect(smmuStreamTableOf(0, 2 ** 32, f)).toBe(
      "STRTAB_BASE_CFG 0x100000000 does not fit a 32-bit register",
    );
    expect(decodeSmmu(new PhysMemory(), { strtabBase: -1n, strtabCfg: 0 })).toBe(
      "STRTAB_BASE -1 does not fit a 64-bit register",
    );
  });

  it("the notes become problems of the decode, which goes on as the SMMU does", () => {
    const m = smmuTestMachine({ log2size: 4 });
    m.b.setSte(m.st, 3, { Config: 4 });
    const doc = decodeOk(m.mem, { strtabBase: m.st.base, strtabCfg: (2 << 16) | 4 });
    expect(doc.devices.map((d) => d.sid)).toEqual([3]);
    expect(doc.problems).toEqual([
      {
        address: hex(m.st.base),
        structure: "stream table",
        message: "STRTAB_BASE_CFG.FMT 2 is reserved and behaves as 0: read as linear",
      },
    ]);
  });
});

describe("images that leave out pages", () => {
  it("structures and tables the image lacks are noted and read as zeros, as translate reads them", () => {
    const m = smmuTestMachine({ streamTable: "2lvl", log2size: 16 });
    const s1 = m.b.lpae(1, 12, 48);
    s1.map(0x1000, 0x5000_0000);
    // The root's entry for 0x80_0000_0000 points at a table nothing was written to.
    s1.raw(0x80_0000_0000, 1, 0x7_0000_0003, 0);
    const t = m.b.cdTable(0);
    m.b.setCd(t, 0, m.b.s1CdFields(s1, 1));
    m.b.setSte(m.st, 0x10, { Config: 5, S1ContextPtr: t.ptr });
    // StreamIDs 0x200-0x2ff: an L2 table in a hole; 0x300: a CD table in a hole.
    m.mem.write64(m.st.base + 2 * 8, 9, 0x9);
    m.b.setSte(m.st, 0x300, { Config: 5, S1ContextPtr: 0xa_0000_0000, S1CDMax: 4 });
    const image = loadMemoryImage(saveElfCore(m.mem), "holes.elf");
    if (image instanceof ImageInputError) throw new Error(image.message);
    const doc = decodeOk(image.mem, {
      strtabBase: m.st.base,
      strtabCfg: cfgOf(m.st),
      coverage: image.coverage,
    });
    expect(doc.problems).toEqual([
      {
        address: "0x900000000",
        structure: "level-2 stream table of StreamIDs 0x200-0x2ff",
        message:
          "level-2 stream table of StreamIDs 0x200-0x2ff 0x900000000 is not in the image (a hole, or a page the dump left out): read as zeros",
      },
      {
        address: "0xa00000000",
        structure: "CD table of StreamID 0x300",
        message:
          "CD table 0xa00000000 is not in the image (a hole, or a page the dump left out): read as zeros",
      },
    ]);
    // Root, two level 1 tables, a level 2 and a level 3 table, and the level 2 table in a hole.
    expect(doc.pageTables[hex(s1.root)]).toMatchObject({ notInImage: 1, tablePages: 6 });
    expect(formatSmmuDecode(doc)).toContain("(1 table not in the image, read as zeros)");
    // Without coverage (the sparse image) the same decode has no notes; the devices agree.
    const sparse = decodeM(m);
    expect(sparse.problems).toEqual([]);
    expect(sparse.devices).toEqual(doc.devices);
    const t2 = translator(m, image.mem);
    expect(t2.translate({ sid: 0x210, ssid: null, iova: 0n })).toMatchObject({
      event: smmuEventRef(EVT_ID.C_BAD_STE),
    });
    // Its CDs read as zeros: V = 0.
    expect(t2.translate({ sid: 0x300, ssid: 1, iova: 0n })).toMatchObject({
      event: smmuEventRef(EVT_ID.C_BAD_CD),
    });
  });

  it("an ELF core and a sparse image decode as the memory they were saved from", () => {
    const m = smmuTestMachine({ streamTable: "2lvl", log2size: 16 });
    const s1 = m.b.lpae(1, 12, 48);
    s1.map(0x1000, 0x5000_0000);
    const t = m.b.cdTable(6);
    m.b.setCd(t, 0, m.b.s1CdFields(s1, 1));
    m.b.setCd(t, 63, m.b.s1CdFields(s1, 2));
    m.b.setSte(m.st, 0x10, { Config: 5, S1ContextPtr: t.ptr, S1CDMax: 6, S1DSS: 2 });
    const want = decodeM(m);
    const elf = loadMemoryImage(saveElfCore(m.mem), "m.elf");
    const sparse = loadMemoryImage(saveSparseImage(m.mem), "m.img");
    for (const image of [elf, sparse]) {
      if (image instanceof ImageInputError) throw new Error(image.message);
      const got = decodeOk(image.mem, {
        strtabBase: m.st.base,
        strtabCfg: cfgOf(m.st),
        coverage: image.coverage,
      });
      expect(got).toEqual(want);
    }
  });
});

describe("decodeSmmu bounds its work on hostile images and says when it stopped", () => {
  /** A linear stream table at 0x10000 with `ste` for StreamIDs 0..n-1 (16 words each). */
  function streamTable(
    mem: PhysMemory,
    n: number,
    ste: (sid: number) => readonly number[],
    base = 0x10000,
  ) {
    for (let sid = 0; sid < n; sid++) {
      const w = ste(sid);
      for (let i = 0; i < w.length; i += 2)
        mem.write64(base + sid * 64 + i * 4, w[i] as number, w[i + 1] as number);
    }
  }

  it("a stage 1 table that loops into itself stops at maxMappings; later tables are incomplete", () => {
    const mem = new PhysMemory();
    const loop = 0x20_0000;
    for (let i = 0; i < 512; i++) mem.write64(loop + i * 8, loop | 3 | 0x400, 0);
    const cd = encode(CD, { V: 1, AA64: 1, T0SZ: 16, EPD1: 1, IPS: 5, R: 1, A: 1, TTB0: loop });
    const cd2 = encode(CD, {
      V: 1,
      AA64: 1,
      T0SZ: 16,
      EPD1: 1,
      IPS: 5,
      R: 1,
      A: 1,
      TTB0: 0x30_0000,
    });
    for (let i = 0; i < 16; i += 2) {
      mem.write64(0x40_0000 + i * 4, cd[i] as number, cd[i + 1] as number);
      mem.write64(0x40_0040 + i * 4, cd2[i] as number, cd2[i + 1] as number);
    }
    mem.write64(0x30_0000, 0x31_0003, 0);
    streamTable(mem, 2, (sid) => [0x40_0000 + sid * 64 + 0xb, 0]);
    const doc = decodeOk(mem, { strtabBase: 0x10000, strtabCfg: 4, maxMappings: 5000 });
    expect(doc.truncated).toBe(true);
    expect(doc.pageTables[hex(loop)]?.mappings).toHaveLength(5000);
    expect(doc.pageTables[hex(loop)]?.truncated).toBe(true);
    expect(doc.pageTables["0x300000"]).toMatchObject({
      truncated: true,
      tablePages: 0,
      mappings: [],
    });
    expect(doc.problems).toEqual([
      {
        address: hex(loop + (5000 % 512) * 8),
        structure: `stage 1 TTB0 table ${hex(loop)}`,
        message:
          "stopped listing mappings after 5000 (limit maxMappings): this and later page tables are incomplete",
      },
    ]);
    expect(formatSmmuDecode(doc)).toContain(
      "; TRUNCATED: a limit cut the decode short (see the problems)\n",
    );
    const pages = decodeOk(mem, { strtabBase: 0x10000, strtabCfg: 4, maxTablePages: 100 });
    expect(pages.pageTables[hex(loop)]).toMatchObject({ tablePages: 100, truncated: true });
    expect(pages.problems[0]?.message).toBe(
      "enumeration stopped after 100 table pages in all (limit maxTablePages; looping or shared tables?): this and later page tables are incomplete",
    );
  });

  it("stream entries, devices, CD entries, translations and problems have their limits", () => {
    const mem = new PhysMemory();
    // 4096 bypass STEs, and one stage 1 STE with 4096 valid CDs (EPD0: no table).
    // The table of 2^13 STEs is 512 KiB: aligned to that at 0x80000.
    streamTable(mem, 4096, () => [0x9, 0], 0x80000);
    const cd = encode(CD, { V: 1, AA64: 1, EPD0: 1, EPD1: 1, IPS: 5, R: 1, A: 1 });
    for (let i = 0; i < 4096; i++)
      mem.write64(0x100_0000 + i * 64, cd[0] as number, cd[1] as number);
    mem.write64(0x80000 + 4096 * 64, 0x100_0000 | 0xb, 12 << 27);
    const base = { strtabBase: 0x80000, strtabCfg: 13 };
    const entries = decodeOk(mem, { ...base, maxStreamEntries: 1000 });
    expect(entries.devices).toHaveLength(1000);
    expect(entries.problems).toEqual([
      {
        address: hex(0x80000 + 1000 * 64),
        structure: "stream table",
        message:
          "stopped reading the stream table after 1000 entries (limit maxStreamEntries): devices with higher StreamIDs are missing",
      },
    ]);
    expect(entries.truncated).toBe(true);
    const devices = decodeOk(mem, { ...base, maxDevices: 10 });
    expect(devices.devices).toHaveLength(10);
    expect(devices.problems[0]?.message).toBe(
      "stopped listing devices after 10 (limit maxDevices): devices with higher StreamIDs are missing",
    );
    const cds = decodeOk(mem, { ...base, device: 4096, maxCdEntries: 100 });
    expect(cds.devices[0]).toMatchObject({ truncated: true });
    // Requests without a SubstreamID (terminated: S1DSS 0), then what 100 entries buy: a page
    // (1) and its 64 CDs, the next page (1) and 34 of its CDs.
    expect(cds.devices[0]?.translations.length).toBe(1 + 64 + 34);
    expect(cds.devices[0]?.translations[0]?.ssid).toBeNull();
    expect(cds.problems.map((p) => p.message)).toEqual([
      "stopped reading CD tables after 100 entries (limit maxCdEntries): from this device on, only translations without a SubstreamID are certain to be listed",
    ]);
    const trs = decodeOk(mem, { ...base, device: 4096, maxTranslations: 50 });
    expect(trs.devices[0]?.translations.length).toBe(51);
    expect(trs.problems.map((p) => p.message)).toEqual([
      "stopped listing SubstreamID translations after 50 (limit maxTranslations): from this device on, only translations without a SubstreamID are listed",
    ]);
    // 100 ILLEGAL STEs (STRW 1) and a limit of 10 problems.
    const bad = new PhysMemory();
    streamTable(bad, 100, () => [0xb, 0, 1 << 30, 0]);
    const probs = decodeOk(bad, { strtabBase: 0x10000, strtabCfg: 7, maxProblems: 10 });
    expect(probs.problems).toHaveLength(11);
    expect(probs.problems[10]).toEqual({
      address: "0x10000",
      structure: "decode",
      message: "90 more problems not listed (limit maxProblems 10)",
    });
    expect(probs.truncated).toBe(true);
    expect(SMMU_DECODE_LIMITS.maxProblems).toBe(1000);
  });

  it("a linear table of 2^32 StreamIDs costs the pages the image holds, up to maxStreamEntries", () => {
    const mem = new PhysMemory();
    // 256 GiB of table at 0: only the 70000 STEs from StreamID 0x40000 were written.
    for (let sid = 0; sid < 70_000; sid++) mem.write64(0x100_0000 + sid * 64, 0x9, 0);
    const f = resolveSmmuFeatures({ sidBits: 32 }) as SmmuFeatures;
    const o = { strtabBase: 0, strtabCfg: 32, features: f, mappings: false };
    const doc = decodeOk(mem, { ...o, maxStreamEntries: 5000 });
    expect(doc.devices).toHaveLength(5000);
    expect(doc.devices[0]?.sid).toBe(0x40000);
    expect(doc.problems.map((p) => p.message)).toEqual([
      "stopped reading the stream table after 5000 entries (limit maxStreamEntries): devices with higher StreamIDs are missing",
    ]);
    const all = decodeOk(mem, { ...o, maxDevices: 100_000 });
    expect(all.devices).toHaveLength(70_000);
    expect(all.devices[69_999]?.sid).toBe(0x40000 + 69_999);
    expect(all.truncated).toBe(false);
  });

  it("nested tables and CD tables stage 2 does not map cost their budget, page by page", () => {
    const m = smmuTestMachine();
    const s2 = guestS2(m);
    const s1 = m.b.lpae(1, 12, 48, { ipaOffset: -IPA_OFF });
    // Every level 0 entry leads to a table at an IPA stage 2 does not map.
    for (let i = 0; i < 512; i++) m.mem.write64(s1.root + i * 8, 0x3 | (i << 12), 0x70);
    const cdt = m.b.cdTable(0);
    m.b.setCd(cdt, 0, m.b.s1CdFields(s1, 1));
    m.b.setSte(m.st, 1, { Config: 7, S1ContextPtr: cdt.ptr + IPA_OFF, ...m.b.s2SteFields(s2, 1) });
    // A 2^20-CD table at an IPA stage 2 does not map.
    m.b.setSte(m.st, 2, {
      Config: 7,
      S1ContextPtr: 0x70_0000_0000,
      S1CDMax: 20,
      S1DSS: 1,
      ...m.b.s2SteFields(s2, 2),
    });
    const doc = decodeM(m, { maxTablePages: 100, maxCdEntries: 1000 });
    const s1Key = hex(s1.rootDesc);
    expect(doc.pageTables[s1Key]).toMatchObject({ truncated: true, mappings: [] });
    const pages = Object.values(doc.pageTables).reduce((n, t) => n + t.tablePages, 0);
    expect(pages).toBe(100);
    expect(doc.devices[1]).toMatchObject({ sid: 2, truncated: true });
    const messages = doc.problems.map((p) => p.message);
    expect(messages).toContain(
      "stopped reading CD tables after 1000 entries (limit maxCdEntries): from this device on, only translations without a SubstreamID are certain to be listed",
    );
    expect(messages).toContain("968 more problems in this CD table not listed");
    expect(messages).toContain(
      "enumeration stopped after 100 table pages in all (limit maxTablePages; looping or shared tables?): this and later page tables are incomplete",
    );
    expect(messages).toContain(
      `table at IPA ${hex(0x70_0000_0000)} is not mapped readable by stage 2 (F_TRANSLATION)`,
    );
    expect(doc.truncated).toBe(true);
  });

  it("the text form prints a run of identical abort STEs as one line", () => {
    const m = smmuTestMachine({ log2size: 8 });
    for (let sid = 0; sid < 256; sid++) m.b.setSte(m.st, sid, { Config: 0 });
    m.b.setSte(m.st, 0x80, { Config: 4 });
    const text = formatSmmuDecode(decodeM(m));
    expect(text).toContain(
      `\nsid 0x0-0x7f (128 StreamIDs): abort, STE V=1 each (first @${hex(m.st.base)})\n`,
    );
    expect(text).toContain("\nsid 0x80 (128): bypass\n");
    expect(text).toContain(
      `\nsid 0x81-0xff (127 StreamIDs): abort, STE V=1 each (first @${hex(m.st.base + 0x81 * 64)})\n`,
    );
    expect(text.split("\n")[1]).toBe(
      "256 devices, 256 translations, 0 page tables with 0 mappings",
    );
  });

  test.prop(
    [
      fc.integer({ min: 0, max: 0xffff_ffff }),
      fc.integer({ min: 1, max: 60 }),
      fc.constantFrom(0, 1),
      fc.constantFrom(6, 8, 10),
      fc.integer({ min: 4, max: 16 }),
    ],
    { seed: 0x6a4b_5310, numRuns: 40 },
  )(
    "never throws on a garbage image: a document within its limits",
    (seed, pointers, fmt, split, log2) => {
      const mem = new PhysMemory({ paBits: 40 });
      const rng = new Prng(seed);
      const region = 0x10_0000;
      // Pointers into the region, random bits elsewhere: STEs, CDs and tables point at each other.
      for (let i = 0; i < 4096; i++) {
        const at = region + rng.below(0x40_0000 / 8) * 8;
        const ptr = region + rng.below(0x40_0000 / 64) * 64;
        const kind = rng.below(pointers + 4);
        if (kind === 0) mem.write64(at, rng.nextU32(), rng.nextU32());
        else
          mem.write64(
            at,
            (ptr & ~0xfff) | (rng.nextU32() & 0xfff),
            rng.below(4) === 0 ? rng.nextU32() : 0,
          );
      }
      const limits = {
        maxTablePages: 2000,
        maxMappings: 2000,
        maxStreamEntries: 20000,
        maxDevices: 200,
        maxCdEntries: 5000,
        maxTranslations: 300,
        maxProblems: 200,
      };
      const doc = decodeOk(mem, {
        strtabBase: region,
        strtabCfg: (fmt << 16) | (split << 6) | log2,
        ...limits,
      });
      const tables = Object.values(doc.pageTables);
      const sum = (f: (t: (typeof tables)[number]) => number) =>
        tables.reduce((n, t) => n + f(t), 0);
      expect(sum((t) => t.tablePages)).toBeLessThanOrEqual(limits.maxTablePages);
      expect(sum((t) => t.mappings.length)).toBeLessThanOrEqual(limits.maxMappings);
      expect(doc.problems.length).toBeLessThanOrEqual(limits.maxProblems + 1);
      expect(doc.devices.length).toBeLessThanOrEqual(limits.maxDevices);
      const others = doc.devices.reduce(
        (n, d) => n + d.translations.filter((t) => t.ssid !== null).length,
        0,
      );
      expect(others).toBeLessThanOrEqual(limits.maxTranslations);
      if (tables.some((t) => t.truncated) || doc.devices.some((d) => d.truncated))
        expect(doc.truncated).toBe(true);
      for (const d of doc.devices) {
        for (const t of d.translations) {
          for (const key of [t.pageTable, t.ttb1Table, t.secondStageTable]) {
            if (key !== null && key !== undefined) expect(doc.pageTables).toHaveProperty([key]);
          }
        }
      }
      expect(JSON.parse(JSON.stringify(doc)).arch).toBe("smmu");
      expect(formatSmmuDecode(doc).endsWith("\n")).toBe(true);
    },
  );
});

describe("lookupSmmuTranslation", () => {
  it("answers for requests without a SubstreamID and with one, without enumerating tables", () => {
    const m = smmuTestMachine();
    const s1 = m.b.lpae(1, 12, 48);
    const cdt = m.b.cdTable(2);
    m.b.setCd(cdt, 1, m.b.s1CdFields(s1, 4));
    m.b.setSte(m.st, 1, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 2, S1DSS: 1 });
    m.b.setSte(m.st, 2, { Config: 4 });
    const look = (sid: number, ssid: number | null) =>
      lookupSmmuTranslation(m.mem, { strtabBase: m.st.base, strtabCfg: cfgOf(m.st), sid, ssid });
    expect(look(1, null)).toEqual({ ssid: null, type: "bypass", pageTable: null });
    expect(look(1, 1)).toMatchObject({ ssid: 1, type: "s1", asid: 4, pageTable: hex(s1.root) });
    expect(look(1, 2)).toBeNull();
    expect(look(2, null)).toMatchObject({ type: "bypass" });
    expect(look(2, 1)).toBeNull();
    expect(look(3, null)).toBeNull();
    expect(look(0x1_0000, null)).toBeNull();
  });
});

describe("decode and translate agree with the hardware on every mapped page", () => {
  type Kind = "s1" | "s2" | "nested" | "bypass" | "abort";
  interface Plan {
    block: boolean;
    count: number;
    gap: number;
    slot: number;
    ro: boolean;
  }
  const planArb: fc.Arbitrary<Plan> = fc.record({
    block: fc.boolean(),
    count: fc.integer({ min: 1, max: 3 }),
    gap: fc.integer({ min: 0, max: 600 }),
    slot: fc.integer({ min: 1, max: 0x3f }),
    ro: fc.boolean(),
  });

  test.prop(
    [
      fc.constantFrom<Kind>("s1", "s1", "s2", "nested", "bypass", "abort"),
      fc.constantFrom(12, 14, 16),
      fc.constantFrom<"linear" | "2lvl">("linear", "2lvl"),
      fc.constantFrom(0, 1, 2),
      fc.array(planArb, { minLength: 1, maxLength: 5 }),
      fc.boolean(),
      fc.integer({ min: 0, max: 0xfff }),
    ],
    { seed: 0x5a11_7e57, numRuns: 40 },
  )("random tables, ELF core, every page", (kind, g, stream, cdFmt, plan, write, offset) => {
    const o: SmmuTestMachineOptions = { streamTable: stream, log2size: stream === "2lvl" ? 16 : 8 };
    const m = smmuTestMachine(o);
    const sid = stream === "2lvl" ? 0x1234 : 0x42;
    const ssid = kind === "s1" && cdFmt !== 0 ? 77 : kind === "nested" ? 3 : null;
    const s1Refs: Ref[] = [];
    const s2Refs: Ref[] = [];
    const s2 = kind === "nested" ? guestS2(m, g, s2Refs) : kind === "s2" ? s2Table48(m, g) : null;
    const s1 =
      kind === "s1" || kind === "nested"
        ? m.b.lpae(1, g, 48, kind === "nested" ? { ipaOffset: -IPA_OFF } : {})
        : null;
    const table = s1 ?? s2;
    // Runs: iova -> pa (s1, s2) or iova -> IPA 0x80_0000_0000 + pa -> pa (nested).
    const runs: Array<{ iova: number; pa: number; size: number; w: boolean }> = [];
    if (table !== null) {
      const page = 2 ** g;
      const blockSize = 2 ** (g + g - 3);
      let cursor = 0x100_0000_0000 - (kind === "s2" ? 0xf0_0000_0000 : 0);
      for (const [k, p] of plan.entries()) {
        const size = p.block ? blockSize : page;
        const iova = Math.ceil((cursor + p.gap * page) / size) * size;
        const pa = p.slot * blockSize;
        const attrs: LeafOptions = kind === "s2" ? { s2ap: p.ro ? 1 : 3 } : { ap: p.ro ? 3 : 1 };
        if (kind === "nested" && s2 !== null) {
          // An IPA range of its own per run, so that stage 2 leaves never overlap.
          const ipa = 0x80_0000_0000 + k * 4 * blockSize;
          mapRun(table, s1Refs, iova, ipa, p.block ? 2 : 3, p.count, attrs);
          mapRun(s2, s2Refs, ipa, pa, p.block ? 2 : 3, p.count);
        } else {
          mapRun(table, kind === "s2" ? s2Refs : s1Refs, iova, pa, p.block ? 2 : 3, p.count, attrs);
        }
        runs.push({ iova, pa, size: size * p.count, w: !p.ro });
        cursor = iova + size * p.count;
      }
    }
    const cdFields = (pt: LpaeTable, asid: number) => m.b.s1CdFields(pt, asid);
    if (kind === "s1" && s1 !== null) {
      const cdt = m.b.cdTable(cdFmt === 0 ? 0 : 10, cdFmt);
      m.b.setCd(cdt, ssid ?? 0, cdFields(s1, 9));
      m.b.setSte(m.st, sid, {
        Config: 5,
        S1ContextPtr: cdt.ptr,
        S1CDMax: cdFmt === 0 ? 0 : 10,
        S1Fmt: cdFmt,
      });
    } else if (kind === "nested" && s1 !== null && s2 !== null) {
      const cdt = m.b.cdTable(4);
      m.b.setCd(cdt, 3, cdFields(s1, 9));
      m.b.setSte(m.st, sid, {
        Config: 7,
        S1ContextPtr: cdt.ptr + IPA_OFF,
        S1CDMax: 4,
        ...m.b.s2SteFields(s2, 6),
      });
    } else if (kind === "s2" && s2 !== null) {
      m.b.setSte(m.st, sid, { Config: 6, ...m.b.s2SteFields(s2, 6) });
    } else {
      m.b.setSte(m.st, sid, { Config: kind === "bypass" ? 4 : 0 });
      runs.push({ iova: 0x1234_5000, pa: 0x1234_5000, size: SZ_4K, w: true });
    }
    // decode: the builder's runs, coalesced.
    const image = loadMemoryImage(saveElfCore(m.mem), "core.elf");
    if (image instanceof ImageInputError) throw new Error(image.message);
    const doc = decodeOk(image.mem, {
      strtabBase: m.st.base,
      strtabCfg: cfgOf(m.st),
      coverage: image.coverage,
    });
    expect(doc.problems).toEqual([]);
    const dev = doc.devices[0];
    const tr = dev?.translations.find((t) => t.ssid === ssid);
    if (s1 !== null)
      expect(doc.pageTables[tr?.pageTable as string]?.mappings).toEqual(coalesce(s1Refs));
    if (s2 !== null)
      expect(doc.pageTables[dev?.secondStageTable as string]?.mappings).toEqual(coalesce(s2Refs));
    // translate on the image: as the running SMMU's uncached translation, on every page.
    const access = write ? DMA_WRITE : DMA_READ;
    const t2 = SmmuTranslator.create(image.mem, {
      strtabBase: BigInt(m.st.base),
      strtabCfg: BigInt(cfgOf(m.st)),
      write,
    });
    if (typeof t2 === "string") throw new Error(t2);
    for (const run of runs) {
      const pages = run.size / SZ_4K;
      const sample = pages <= 48 ? [...Array(pages).keys()] : [0, pages - 1, Math.floor(pages / 2)];
      for (const k of sample) {
        const iova = run.iova + k * SZ_4K + offset;
        const want = m.dma(sid, ssid ?? -1, iova, access, { uncached: true });
        const got = t2.translate({ sid, ssid, iova: BigInt(iova) });
        if (want.status !== XLATE_OK) {
          expect(got).toMatchObject({
            result: "fault",
            event: want.code === 0x100 ? null : smmuEventRef(want.code),
          });
          expect(kind === "abort" || (write && !run.w)).toBe(true);
          continue;
        }
        expect(got).toEqual({
          query: `${hex(sid)}${ssid === null ? "" : `:${ssid}`}@${hex(iova)}`,
          sid,
          ssid,
          iova: hex(iova),
          result: "ok",
          pa: hex(want.pa),
          pageSize: 2 ** want.sizeShift,
          r: (want.perm & 1) !== 0,
          w: (want.perm & 2) !== 0,
          bypass: kind === "bypass",
        });
        expect(want.pa).toBe(run.pa + k * SZ_4K + offset);
      }
    }
  });
});
