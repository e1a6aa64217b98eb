// Tests of `translate smmu`: query parsing, features from ID register values (the inverse of
// smmuIdRegs), and an SmmuV3 brought up through its registers on a loaded image that answers as
// the running SMMU's uncached translation does.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fc, test } from "@fast-check/vitest";
import { CR0_SMMUEN, EVT_ID, SMMU_REG } from "@iommu-sim/arm-smmu/format";
import {
  DEFAULT_SMMU_FEATURES,
  resolveSmmuFeatures,
  type SmmuFeatures,
  smmuIdRegs,
} from "@iommu-sim/arm-smmu/hw";
import { type SmmuTestMachine, smmuTestMachine } from "@iommu-sim/arm-smmu/testing";
import { DMA_EXEC, DMA_READ, DMA_WRITE, XLATE_OK } from "@iommu-sim/iommu-core";
import { PhysMemory, Prng, saveElfCore, toHex } from "@iommu-sim/iommu-core/platform";
import { afterAll, describe, expect, it } from "vitest";
import { ImageInputError, readMemoryImage } from "./image-input.js";
import { smmuEventRef } from "./smmu-decode.js";
import {
  DEFAULT_SMMU_IDR,
  parseSmmuQuery,
  parseStreamId,
  parseSubstreamId,
  SmmuTranslator,
  type SmmuTranslatorOptions,
  smmuFeaturesFromIdr,
} from "./smmu-translate.js";

const dir = mkdtempSync(path.join(tmpdir(), "iommu-sim-smmu-translate-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cfgOf = (m: SmmuTestMachine) => (m.st.fmt << 16) | (m.st.split << 6) | m.st.log2size;

function translator(
  mem: PhysMemory,
  m: SmmuTestMachine,
  extra: Partial<SmmuTranslatorOptions> = {},
): SmmuTranslator {
  const t = SmmuTranslator.create(mem, {
    strtabBase: BigInt(m.st.base),
    strtabCfg: BigInt(cfgOf(m)),
    ...extra,
  });
  if (typeof t === "string") throw new Error(t);
  return t;
}

/** `m`'s memory saved as an ELF core and read back through the CLI's loader. */
let imageNo = 0;
function reload(m: SmmuTestMachine): PhysMemory {
  const file = path.join(dir, `core-${imageNo++}.elf`);
  writeFileSync(file, saveElfCore(m.mem));
  const image = readMemoryImage({ image: file });
  if (image instanceof ImageInputError) throw new Error(image.message);
  expect(image.format).toBe("elf-core");
  return image.mem;
}

describe("parsing queries", () => {
  it("parseStreamId takes a number up to 0xffffffff or BB:DD.F", () => {
    expect(parseStreamId("0x10")).toBe(16);
    expect(parseStreamId("4294967295")).toBe(0xffff_ffff);
    expect(parseStreamId("00:03.0")).toBe(0x18);
    expect(parseStreamId("ff:1f.7")).toBe(0xffff);
    expect(parseStreamId("0x100000000")).toBe(
      'expected a StreamID: a number up to 0xffffffff, or BB:DD.F, got "0x100000000"',
    );
    expect(parseStreamId("00:20.0")).toBe("device 0x20 in 00:20.0 is above 0x1f");
    expect(parseStreamId("-1")).toMatch(/^expected a StreamID/);
  });

  it("parseSubstreamId takes up to 20 bits", () => {
    expect(parseSubstreamId("0xfffff")).toBe(0xfffff);
    expect(parseSubstreamId("7")).toBe(7);
    expect(parseSubstreamId("0x100000")).toBe(
      'expected a SubstreamID: a number up to 0xfffff, got "0x100000"',
    );
    expect(parseSubstreamId("x")).toMatch(/^expected a SubstreamID/);
  });

  it("parseSmmuQuery: SID[:SSID]@IOVA with a numeric or BDF StreamID", () => {
    expect(parseSmmuQuery("0x10@0x1000")).toEqual({ sid: 16, ssid: null, iova: 0x1000n });
    expect(parseSmmuQuery("16:3@4096")).toEqual({ sid: 16, ssid: 3, iova: 4096n });
    expect(parseSmmuQuery("00:02.0@0xffffffffffffffff")).toEqual({
      sid: 0x10,
      ssid: null,
      iova: (1n << 64n) - 1n,
    });
    expect(parseSmmuQuery("00:02.0:7@0")).toEqual({ sid: 0x10, ssid: 7, iova: 0n });
  });

  it("parseSmmuQuery names the bad part", () => {
    expect(parseSmmuQuery("0x10")).toBe("expected SID[:SSID]@IOVA");
    expect(parseSmmuQuery("1@2@3")).toBe("expected SID[:SSID]@IOVA");
    expect(parseSmmuQuery("zz@0")).toMatch(/^expected a StreamID/);
    expect(parseSmmuQuery("1:0x100000@0")).toMatch(/^expected a SubstreamID/);
    expect(parseSmmuQuery("00:02.0:@0")).toMatch(/^expected a SubstreamID/);
    expect(parseSmmuQuery("1@0x10000000000000000")).toBe(
      'expected an IOVA: a number up to 2^64 - 1, decimal or 0x hex, got "0x10000000000000000"',
    );
  });
});

describe("smmuFeaturesFromIdr", () => {
  it("the default registers describe the default SMMU; missing registers take its values", () => {
    expect(DEFAULT_SMMU_IDR).toEqual([...smmuIdRegs(DEFAULT_SMMU_FEATURES)]);
    expect(smmuFeaturesFromIdr(DEFAULT_SMMU_IDR)).toEqual(DEFAULT_SMMU_FEATURES);
    expect(smmuFeaturesFromIdr([])).toEqual(DEFAULT_SMMU_FEATURES);
    expect(smmuFeaturesFromIdr([], { checkReserved: false })).toEqual({
      ...DEFAULT_SMMU_FEATURES,
      checkReserved: false,
    });
  });

  /** Feature sets whose every field the registers carry (what they drop is at its canonical value). */
  const featuresArb = fc
    .record({
      s1p: fc.boolean(),
      s2p: fc.boolean(),
      ttf: fc.constantFrom<2 | 3>(2, 3),
      cohacc: fc.boolean(),
      btm: fc.boolean(),
      httu: fc.constantFrom<0 | 1 | 2>(0, 1, 2),
      hyp: fc.boolean(),
      ats: fc.boolean(),
      pri: fc.boolean(),
      atsRecErr: fc.boolean(),
      asidBits: fc.constantFrom<8 | 16>(8, 16),
      vmidBits: fc.constantFrom<8 | 16>(8, 16),
      msi: fc.boolean(),
      sev: fc.boolean(),
      cd2l: fc.boolean(),
      stallModel: fc.constantFrom<0 | 1 | 2>(0, 1, 2),
      termModel: fc.constantFrom<0 | 1>(0, 1),
      twoLevelStreamTable: fc.boolean(),
      sidBits: fc.integer({ min: 0, max: 32 }),
      ssidBits: fc.integer({ min: 0, max: 20 }),
      cmdqs: fc.integer({ min: 0, max: 19 }),
      eventqs: fc.integer({ min: 0, max: 19 }),
      priqs: fc.integer({ min: 0, max: 19 }),
      attrTypesOvr: fc.boolean(),
      attrPermsOvr: fc.boolean(),
      had: fc.boolean(),
      stt: fc.boolean(),
      ril: fc.boolean(),
      oas: fc.constantFrom(32, 36, 40, 42, 44, 48, 52),
      granules: fc.subarray(["4K", "16K", "64K"] as const, { minLength: 1 }),
      vax: fc.boolean(),
      stallMax: fc.integer({ min: 0, max: 0xffff }),
      archMinor: fc.integer({ min: 0, max: 15 }),
      productId: fc.integer({ min: 0, max: 0xfff }),
      checkReserved: fc.boolean(),
    })
    .map((f) => {
      // PRI needs ATS; PRIQS and ATSRECERR read 0 without them; one stage at least.
      const ats = f.ats || f.pri;
      return {
        ...f,
        ats,
        s2p: f.s2p || !f.s1p,
        atsRecErr: ats && f.atsRecErr,
        priqs: f.pri ? f.priqs : 0,
      };
    });

  test.prop([featuresArb], { seed: 0x1d2_0001, numRuns: 200 })(
    "smmuFeaturesFromIdr inverts smmuIdRegs: features and registers round-trip",
    (partial) => {
      const f = resolveSmmuFeatures(partial);
      if (typeof f === "string") throw new Error(f);
      const regs = [...smmuIdRegs(f)];
      const back = smmuFeaturesFromIdr(regs, { checkReserved: f.checkReserved });
      expect(back).toEqual(f);
      expect([...smmuIdRegs(back as SmmuFeatures)]).toEqual(regs);
    },
  );

  it("registers the model cannot stand for, or that describe no SMMU, name the field", () => {
    const d = DEFAULT_SMMU_IDR;
    const with0 = (v: number) => [v, d[1] as number, d[2] as number, d[3] as number];
    const idr0 = d[0] as number;
    const set = (reg: number, lsb: number, width: number, v: number) =>
      ((reg & ~(((2 ** width - 1) << lsb) >>> 0)) | (v << lsb)) >>> 0;
    const cases: Array<[number[], string]> = [
      [with0(set(idr0, 2, 2, 0)), "IDR0.TTF 0 is reserved"],
      [
        with0(set(idr0, 2, 2, 1)),
        "IDR0.TTF 1 (VMSAv8-32 LPAE tables only): the model walks VMSAv8-64 tables only",
      ],
      [with0(set(idr0, 21, 2, 1)), "IDR0.TTENDIAN 1 is reserved"],
      [
        with0(set(idr0, 21, 2, 3)),
        "IDR0.TTENDIAN 3 (big-endian only): the model is little-endian only",
      ],
      [with0(set(idr0, 24, 2, 3)), "IDR0.STALL_MODEL 3 is reserved"],
      [with0(set(idr0, 27, 2, 2)), "IDR0.ST_LEVEL 2 is reserved"],
      [with0(set(idr0, 10, 1, 0)), "IDR0.PRI is 1 but IDR0.ATS is 0: PRI needs ATS"],
      [with0(set(idr0, 0, 2, 0)), "IDR0.S1P and IDR0.S2P are both 0: no stage is implemented"],
      [[idr0, set(d[1] as number, 0, 6, 33)], "IDR1.SIDSIZE 33 is above 32"],
      [[idr0, set(d[1] as number, 6, 5, 21)], "IDR1.SSIDSIZE 21 is above 20"],
      [[idr0, set(d[1] as number, 21, 5, 20)], "IDR1.CMDQS 20 is above 19"],
      [
        [idr0, d[1] as number, 0, 0, 0, set(d[5] as number, 0, 3, 7)],
        "IDR5.OAS 7 (56 bits) is beyond the model's 52-bit physical addresses",
      ],
      [
        [idr0, d[1] as number, 0, 0, 0, set(d[5] as number, 10, 2, 2)],
        "IDR5.VAX 2 (56-bit VAs) is not modelled",
      ],
      [
        [idr0, d[1] as number, 0, 0, 0, set(d[5] as number, 4, 3, 0)],
        "IDR5.GRAN4K/GRAN16K/GRAN64K: no granule is implemented",
      ],
      [[1.5], "IDR0: 1.5 is not a 32-bit register value"],
      [[0, -1], "IDR1: -1 is not a 32-bit register value"],
    ];
    for (const [idr, msg] of cases) expect(smmuFeaturesFromIdr(idr)).toBe(msg);
  });

  it("HTTU 3 counts as 2; bits without effect on translation are ignored", () => {
    const d = [...DEFAULT_SMMU_IDR];
    d[0] = ((d[0] as number) | (3 << 6) | (1 << 15) | (1 << 20)) >>> 0; // HTTU 3, ATOS, VATOS
    d[1] = ((d[1] as number) | (7 << 28)) >>> 0; // REL, QUEUES_PRESET, TABLES_PRESET
    d[2] = 0x3ff;
    d[4] = 0xffff_ffff;
    expect(smmuFeaturesFromIdr(d)).toEqual(DEFAULT_SMMU_FEATURES);
  });
});

describe("SmmuTranslator", () => {
  it("brings the SMMU up through STRTAB_BASE, STRTAB_BASE_CFG and CR0, as a driver does", () => {
    const m = smmuTestMachine({ streamTable: "2lvl", log2size: 16 });
    const base = BigInt(m.st.base) | (1n << 62n);
    const t = SmmuTranslator.create(m.mem, { strtabBase: base, strtabCfg: BigInt(cfgOf(m)) });
    if (typeof t === "string") throw new Error(t);
    const s = t.smmu;
    expect(s.read32(SMMU_REG.STRTAB_BASE)).toBe(m.st.base);
    expect(s.read32(SMMU_REG.STRTAB_BASE + 4)).toBe(0x4000_0000);
    expect(s.read32(SMMU_REG.STRTAB_BASE_CFG)).toBe(cfgOf(m));
    expect(s.read32(SMMU_REG.CR0ACK)).toBe(CR0_SMMUEN);
    expect(s.enabled).toBe(true);
    expect(s.features).toEqual(DEFAULT_SMMU_FEATURES);
    expect(s.cacheConfig.policy).toBe("minimal");
  });

  it("refuses features and register values that describe no SMMU", () => {
    const mem = new PhysMemory();
    expect(
      SmmuTranslator.create(mem, {
        strtabBase: 0n,
        strtabCfg: 0n,
        features: { ...DEFAULT_SMMU_FEATURES, oas: 50 },
      }),
    ).toBe(
      "the features describe no SMMU: oas: expected one of 32, 36, 40, 42, 44, 48, 52, got 50",
    );
    expect(SmmuTranslator.create(mem, { strtabBase: 1n << 64n, strtabCfg: 0n })).toBe(
      "STRTAB_BASE 18446744073709551616 does not fit a 64-bit register",
    );
    expect(SmmuTranslator.create(mem, { strtabBase: 0n, strtabCfg: -1n })).toBe(
      "STRTAB_BASE_CFG -0x1 does not fit a 32-bit register",
    );
  });

  /** sid 1: stage 1 (CD 0 for no SubstreamID, CD 4); 2 bypass; 3 abort; 4 stage 2. */
  function machine() {
    const m = smmuTestMachine();
    const s1 = m.b.lpae(1, 12, 48);
    s1.map(0x1000, 0x8000_0000); // RW, unprivileged
    s1.map(0x2000, 0x8000_1000, 3, { ap: 3, uxn: true }); // RO, not executable
    s1.map(0x3000, 0x8000_2000, 3, { ap: 0 }); // privileged only
    s1.map(0x20_0000, 0x4000_0000, 2);
    const cdt = m.b.cdTable(3);
    m.b.setCd(cdt, 0, m.b.s1CdFields(s1, 1));
    m.b.setCd(cdt, 4, m.b.s1CdFields(s1, 2));
    m.b.setSte(m.st, 1, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 3, S1DSS: 2 });
    m.b.setSte(m.st, 2, { Config: 4 });
    m.b.setSte(m.st, 3, { Config: 0 });
    const s2 = m.b.lpae(2, 12, 40);
    s2.map(0x1000, 0x9000_0000, 3, { s2ap: 1 });
    m.b.setSte(m.st, 4, { Config: 6, ...m.b.s2SteFields(s2, 1) });
    return m;
  }

  it("answers translations, faults by event name, bypass with the exact input", () => {
    const m = machine();
    const mem = reload(m);
    const t = translator(mem, m);
    const ok = (sid: number, ssid: number | null, iova: bigint, pa: string, size = 4096) =>
      expect(t.translate({ sid, ssid, iova })).toEqual({
        query: `${toHex(sid)}${ssid === null ? "" : `:${ssid}`}@${toHex(iova)}`,
        sid,
        ssid,
        iova: toHex(iova),
        result: "ok",
        pa,
        pageSize: size,
        r: true,
        w: pa !== "0x80001abc",
        bypass: sid === 2,
      });
    ok(1, null, 0x1abcn, "0x80000abc");
    ok(1, 4, 0x2abcn, "0x80001abc");
    ok(1, 4, 0x20_0010n, "0x40000010", 0x20_0000);
    ok(2, null, 0xfee0_0000n, "0xfee00000");
    const fault = (sid: number, ssid: number | null, iova: bigint, id: number | null) =>
      expect(t.translate({ sid, ssid, iova })).toEqual({
        query: `${toHex(sid)}${ssid === null ? "" : `:${ssid}`}@${toHex(iova)}`,
        sid,
        ssid,
        iova: toHex(iova),
        result: "fault",
        event: id === null ? null : smmuEventRef(id),
      });
    fault(3, null, 0n, null); // abort STE: no event
    fault(1, 0, 0x1000n, EVT_ID.F_STREAM_DISABLED); // SubstreamID 0 under S1DSS = SSID0
    fault(1, 8, 0x1000n, EVT_ID.C_BAD_SUBSTREAMID); // beyond S1CDMax
    fault(1, 2, 0x1000n, EVT_ID.C_BAD_CD); // V = 0
    fault(1, null, 0x5000n, EVT_ID.F_TRANSLATION);
    fault(1, null, 0x3000n, EVT_ID.F_PERMISSION); // privileged only
    fault(1, null, (1n << 64n) - 1n, EVT_ID.F_TRANSLATION);
    fault(2, 1, 0n, EVT_ID.C_BAD_SUBSTREAMID); // bypass takes no SubstreamID
    fault(2, null, 1n << 60n, EVT_ID.F_ADDR_SIZE); // bypass beyond the OAS
    fault(5, null, 0n, EVT_ID.C_BAD_STE);
    fault(0x100, null, 0n, EVT_ID.C_BAD_STREAMID);
    expect(t.translate({ sid: 4, ssid: null, iova: 0x1234n }, "04@0x1234")).toMatchObject({
      query: "04@0x1234",
      pa: "0x90000234",
      w: false,
    });
  });

  it("--write, --exec and --priv become the request's access and privilege", () => {
    const m = machine();
    const mem = reload(m);
    const q = (iova: bigint, sid = 1) => ({ sid, ssid: sid === 1 ? 4 : null, iova });
    const w = translator(mem, m, { write: true });
    expect(w.translate(q(0x2000n))).toMatchObject({ event: smmuEventRef(EVT_ID.F_PERMISSION) });
    expect(w.translate(q(0x1000n))).toMatchObject({ result: "ok", w: true });
    expect(w.translate(q(0x1000n, 4))).toMatchObject({ event: smmuEventRef(EVT_ID.F_PERMISSION) });
    const x = translator(mem, m, { exec: true });
    expect(x.translate(q(0x2000n))).toMatchObject({ event: smmuEventRef(EVT_ID.F_PERMISSION) });
    expect(x.translate(q(0x1000n))).toMatchObject({ result: "ok" });
    const p = translator(mem, m, { priv: true });
    expect(p.translate(q(0x3000n))).toMatchObject({ result: "ok", pa: "0x80002000" });
    // PAN is clear: a privileged read of unprivileged memory is allowed.
    expect(p.translate(q(0x1000n))).toMatchObject({ result: "ok" });
    // Each answer is the running SMMU's uncached translation.
    for (const [opts, access, priv] of [
      [{ write: true }, DMA_WRITE, false],
      [{ exec: true }, DMA_READ | DMA_EXEC, false],
      [{ priv: true }, DMA_READ, true],
    ] as const) {
      const t = translator(mem, m, opts);
      for (const iova of [0x1000, 0x2000, 0x3000, 0x20_0000]) {
        const want = m.dma(1, 4, iova, access, { priv, uncached: true });
        const got = t.translate(q(BigInt(iova)));
        expect(got.result).toBe(want.status === XLATE_OK ? "ok" : "fault");
        if (got.result === "fault") expect(got.event?.id).toBe(want.code);
      }
    }
  });

  it("features from the ID registers restrict the SMMU", () => {
    const m = machine();
    const no4k = smmuFeaturesFromIdr([
      DEFAULT_SMMU_IDR[0] as number,
      DEFAULT_SMMU_IDR[1] as number,
      0,
      DEFAULT_SMMU_IDR[3] as number,
      0,
      ((DEFAULT_SMMU_IDR[5] as number) & ~0x10) >>> 0,
    ]);
    if (typeof no4k === "string") throw new Error(no4k);
    expect(no4k.granules).toEqual(["16K", "64K"]);
    const t = translator(m.mem, m, { features: no4k });
    expect(t.translate({ sid: 1, ssid: 4, iova: 0x1000n })).toMatchObject({
      event: smmuEventRef(EVT_ID.C_BAD_CD),
    });
    expect(t.translate({ sid: 4, ssid: null, iova: 0x1000n })).toMatchObject({
      event: smmuEventRef(EVT_ID.C_BAD_STE),
    });
  });
});

describe("translate on garbage images", () => {
  test.prop(
    [
      fc.integer({ min: 0, max: 0xffff_ffff }),
      fc.array(
        fc.record({
          sid: fc.integer({ min: 0, max: 0x3ff }),
          ssid: fc.option(fc.integer({ min: 0, max: 0xfffff }), { nil: null }),
          iova: fc.oneof(
            fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
            fc.bigInt({ min: 0n, max: (1n << 40n) - 1n }),
          ),
        }),
        { minLength: 1, maxLength: 30 },
      ),
      fc.constantFrom(0, 1),
    ],
    { seed: 0x9a4b_a9e5, numRuns: 40 },
  )(
    "never throws: every query is answered with a translation or an event",
    (seed, queries, fmt) => {
      const mem = new PhysMemory({ paBits: 40 });
      const rng = new Prng(seed);
      for (let i = 0; i < 3000; i++) {
        const at = 0x10_0000 + rng.below(0x20_0000 / 8) * 8;
        const ptr = 0x10_0000 + rng.below(0x20_0000 / 64) * 64;
        mem.write64(
          at,
          rng.chance(0.3) ? rng.nextU32() : ptr | (rng.nextU32() & 0x3f),
          rng.chance(0.2) ? rng.nextU32() : 0,
        );
      }
      const t = SmmuTranslator.create(mem, {
        strtabBase: 0x10_0000n,
        strtabCfg: BigInt((fmt << 16) | (8 << 6) | 10),
      });
      if (typeof t === "string") throw new Error(t);
      for (const q of queries) {
        const r = t.translate(q);
        expect(JSON.parse(JSON.stringify(r)).sid).toBe(q.sid);
        if (r.result === "ok") expect(BigInt(r.pa) < 1n << 52n).toBe(true);
      }
    },
  );
});
