// Tests of `translate vtd`: query parsing, capability registers, and a unit on a loaded image that
// answers every mapped page as the running unit's uncached walk does.

import { fc, test } from "@fast-check/vitest";
import { GSTS_RTPS, GSTS_TES, VTD_FR, VTD_REG } from "@iommu-sim/intel-vtd/format";
import {
  DEFAULT_VTD_CAPS,
  LEGACY_VTD_CAPS,
  vtdCapValue,
  vtdEcapValue,
} from "@iommu-sim/intel-vtd/hw";
import { type VtdTestMachine, xlateFresh } from "@iommu-sim/intel-vtd/testing";
import { IOMMU_READ, XLATE_OK } from "@iommu-sim/iommu-core";
import { type FieldValues, type PhysMemory, toHex } from "@iommu-sim/iommu-core/platform";
import { afterAll, describe, expect, it } from "vitest";
import {
  fsTable,
  GuestFsTable,
  garbageImage,
  machine,
  mapRun,
  type RefRun,
  RW,
  rtaddrOf,
  SZ_1G,
  SZ_2M,
  SZ_4K,
  saveImage,
  ssTable,
  tempDir,
} from "../../test/vtd-images.js";
import { ImageInputError, readImageInput } from "./image-input.js";
import { decodeVtd, VTD_PERMISSIVE_CAPS } from "./vtd-decode.js";
import {
  parsePasid,
  parseSid,
  parseUnsigned,
  parseVtdQuery,
  type VtdTranslateResult,
  VtdTranslator,
  type VtdTranslatorOptions,
  vtdCapsFromRegisters,
} from "./vtd-translate.js";

const tmp = tempDir();
afterAll(() => tmp.cleanup());

function translator(mem: PhysMemory, options: VtdTranslatorOptions): VtdTranslator {
  const t = VtdTranslator.create(mem, options);
  if (typeof t === "string") throw new Error(t);
  return t;
}

/** Save `m`'s memory as `format`, read it back through the CLI's loader. */
let imageNo = 0;
function reload(m: VtdTestMachine, format: "elf" | "sparse"): PhysMemory {
  const file = tmp.file(`image-${imageNo++}.${format}`);
  saveImage(m.mem, file, format);
  const mem = readImageInput({ image: file });
  if (mem instanceof ImageInputError) throw new Error(mem.message);
  return mem;
}

const u64 = (hi: number, lo: number) => (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);

describe("parsing queries", () => {
  it("parseSid takes BB:DD.F or a number up to 0xffff", () => {
    expect(parseSid("00:03.0")).toBe(0x18);
    expect(parseSid("fe:1F.7")).toBe(0xfeff);
    expect(parseSid("3:1.2")).toBe(0x30a);
    expect(parseSid("24")).toBe(24);
    expect(parseSid("0xffff")).toBe(0xffff);
    expect(parseSid("00:20.0")).toBe("device 0x20 in 00:20.0 is above 0x1f");
    for (const bad of ["00:03.8", "100:00.0", "0x10000", "65536", "-1", "", "00:03", "g"]) {
      expect(parseSid(bad)).toMatch(/^expected a source ID: BB:DD\.F, or a number up to 0xffff/);
    }
  });

  it("parsePasid takes up to 20 bits; parseUnsigned up to 64", () => {
    expect(parsePasid("0")).toBe(0);
    expect(parsePasid("0xfffff")).toBe(0xfffff);
    expect(parsePasid("0x100000")).toBe('expected a PASID: a number up to 0xfffff, got "0x100000"');
    expect(parsePasid("1e3")).toMatch(/expected a PASID/);
    expect(parseUnsigned("18446744073709551615")).toBe((1n << 64n) - 1n);
    expect(parseUnsigned("0xFFFFFFFFFFFFFFFF")).toBe((1n << 64n) - 1n);
    expect(parseUnsigned("0x10000000000000000")).toBeNull();
    for (const bad of ["", "0x", "-1", " 1", "1.0", "0b1", "1_000"]) {
      expect(parseUnsigned(bad)).toBeNull();
    }
  });

  it("parseVtdQuery: SID[:PASID]@IOVA with a BDF or numeric SID", () => {
    expect(parseVtdQuery("00:03.0@0x1000")).toEqual({ sid: 0x18, pasid: null, iova: 0x1000n });
    expect(parseVtdQuery("00:03.0:5@0x1000")).toEqual({ sid: 0x18, pasid: 5, iova: 0x1000n });
    expect(parseVtdQuery("24@4096")).toEqual({ sid: 24, pasid: null, iova: 4096n });
    expect(parseVtdQuery("0x18:0x5@0xffffffffffffffff")).toEqual({
      sid: 0x18,
      pasid: 5,
      iova: (1n << 64n) - 1n,
    });
  });

  it("parseVtdQuery names the bad part", () => {
    expect(parseVtdQuery("00:03.0")).toBe("expected SID[:PASID]@IOVA");
    expect(parseVtdQuery("1@2@3")).toBe("expected SID[:PASID]@IOVA");
    expect(parseVtdQuery("zz@0x1000")).toMatch(/^expected a source ID/);
    expect(parseVtdQuery("00:03.0:x@0x1000")).toMatch(/^expected a PASID/);
    expect(parseVtdQuery("24:@0")).toMatch(/^expected a PASID/);
    expect(parseVtdQuery("24@0x10000000000000000")).toBe(
      'expected an IOVA: a number up to 2^64 - 1, decimal or 0x hex, got "0x10000000000000000"',
    );
    expect(parseVtdQuery("24@")).toMatch(/^expected an IOVA/);
  });
});

describe("vtdCapsFromRegisters", () => {
  it("missing registers take the permissive unit's values", () => {
    expect(vtdCapsFromRegisters()).toEqual({
      ...VTD_PERMISSIVE_CAPS,
      superpages: ["2M", "1G"],
      version: { major: 6, minor: 0 },
    });
  });

  it("given registers describe that unit; impossible ones are refused", () => {
    const cap = vtdCapValue(LEGACY_VTD_CAPS);
    const ecap = vtdEcapValue(LEGACY_VTD_CAPS);
    const caps = vtdCapsFromRegisters(u64(cap[1], cap[0]), u64(ecap[1], ecap[0]));
    expect(caps).toMatchObject({ smts: false, sagaw: 0b100, mgaw: 48, pasid: false });
    // ECAP.PASID without SMTS: no unit reports that.
    const bad = vtdCapsFromRegisters(undefined, 1n << 40n);
    expect(bad).toMatch(/describe no unit: pasid without smts/);
  });
});

describe("VtdTranslator", () => {
  it("brings the unit up through RTADDR, SRTP and TE, as a driver does", () => {
    const m = machine(true);
    const t = translator(m.mem, { rtaddr: rtaddrOf(m, true) });
    const gsts = t.unit.read32(VTD_REG.GSTS);
    expect(gsts & GSTS_RTPS).not.toBe(0);
    expect(gsts & GSTS_TES).not.toBe(0);
    expect(t.unit.read32(VTD_REG.RTADDR)).toBe(m.rta | 0x400);
    expect(t.unit.cacheConfig.policy).toBe("minimal");
    expect(t.unit.haw).toBe(52);
  });

  it("answers legacy translations, faults by name, and pass-through with the exact input", () => {
    const m = machine(false);
    const runs: RefRun[] = [];
    const ss = ssTable(m, 2);
    mapRun(ss, runs, 0x1000, 0x8000_0000, SZ_4K, 1, IOMMU_READ);
    mapRun(ss, runs, 0x20_0000, 0x1_0000_0000, SZ_2M, 1, RW);
    m.b.setContext(m.rta, 0x10, { AW: 2, DID: 1, SLPTPTR: ss.rootPa });
    m.b.setContext(m.rta, 0x11, { TT: 2, AW: 2, DID: 2 });
    const mem = reload(m, "elf");
    const t = translator(mem, { rtaddr: rtaddrOf(m, false) });
    expect(t.translate({ sid: 0x10, pasid: null, iova: 0x1234n })).toEqual({
      sid: 0x10,
      pasid: null,
      iova: "0x1234",
      result: "ok",
      pa: "0x80000234",
      pageSize: SZ_4K,
      r: true,
      w: false,
      passThrough: false,
    });
    expect(t.translate({ sid: 0x10, pasid: null, iova: 0x20_1234n })).toMatchObject({
      pa: "0x100001234",
      pageSize: SZ_2M,
      w: true,
    });
    const fault = (sid: number, pasid: number | null, iova: bigint, fr: number, name: string) =>
      expect(t.translate({ sid, pasid, iova })).toEqual({
        sid,
        pasid,
        iova: toHex(iova),
        result: "fault",
        faultReason: fr,
        faultName: name,
      });
    fault(0x10, null, 0x5000n, VTD_FR.NO_READ, "NO_READ");
    fault(0x12, null, 0n, VTD_FR.CONTEXT_NOT_PRESENT, "CONTEXT_NOT_PRESENT");
    fault(0x100, null, 0n, VTD_FR.ROOT_NOT_PRESENT, "ROOT_NOT_PRESENT");
    fault(0x10, 1, 0x1000n, VTD_FR.SM_TTM_LEGACY_WITH_PASID, "SM_TTM_LEGACY_WITH_PASID");
    const big = 0xfedc_ba98_7654_3210n;
    expect(t.translate({ sid: 0x11, pasid: null, iova: big })).toMatchObject({
      result: "ok",
      iova: "0xfedcba9876543210",
      pa: "0xfedcba9876543210",
      passThrough: true,
    });
    const writer = translator(mem, { rtaddr: rtaddrOf(m, false), write: true });
    expect(writer.translate({ sid: 0x10, pasid: null, iova: 0x1000n })).toMatchObject({
      result: "fault",
      faultName: "NO_WRITE",
    });
  });

  it("answers scalable translations: PASIDs, RID_PASID, supervisor and execute requests", () => {
    const m = machine(true);
    const runs: RefRun[] = [];
    const dir = m.b.setSmContext(m.rta, 0x18, { PASIDE: 1, RID_PASID: 2 });
    const fs5 = fsTable(m, 5);
    mapRun(fs5, runs, 0x1000, 0x2_0000_0000, SZ_4K, 1, RW);
    m.b.setPasidEntry(dir, 2, { PGTT: 1, DID: 2, FLPM: 1, FLPTR: fs5.rootPa });
    m.b.setPasidEntry(dir, 3, { PGTT: 4, DID: 1 });
    // Upper canonical half of a 5-level table (bits 63:56 all ones).
    const root = m.b.frame();
    m.b.fsMap(root, 5, 0xff00_0000_0000_0000n, 0x3_0000_0000);
    m.b.setPasidEntry(dir, 4, { PGTT: 1, DID: 3, FLPM: 1, FLPTR: root, SRE: 1 });
    const mem = reload(m, "sparse");
    const rtaddr = rtaddrOf(m, true);
    const t = translator(mem, { rtaddr });
    expect(t.translate({ sid: 0x18, pasid: null, iova: 0x1abcn })).toMatchObject({
      pasid: null,
      result: "ok",
      pa: "0x200000abc",
      passThrough: false,
    });
    expect(t.translate({ sid: 0x18, pasid: 3, iova: 0xffff_ffff_ffff_f123n })).toMatchObject({
      result: "ok",
      pa: "0xfffffffffffff123",
      passThrough: true,
    });
    expect(t.translate({ sid: 0x18, pasid: 4, iova: 0xff00_0000_0000_0123n })).toMatchObject({
      result: "ok",
      pa: "0x300000123",
    });
    expect(t.translate({ sid: 0x18, pasid: 4, iova: 0x8000_0000_0000_0000n })).toMatchObject({
      result: "fault",
      faultName: "SM_FS_NON_CANONICAL",
    });
    expect(t.translate({ sid: 0x18, pasid: 5, iova: 0n })).toMatchObject({
      faultName: "SM_PASID_ENTRY_NOT_PRESENT",
    });
    const priv = translator(mem, { rtaddr, priv: true });
    expect(priv.translate({ sid: 0x18, pasid: 2, iova: 0x1000n })).toMatchObject({
      faultName: "SM_SRE_CLEAR",
    });
    expect(priv.translate({ sid: 0x18, pasid: 4, iova: 0xff00_0000_0000_0000n })).toMatchObject({
      result: "ok",
    });
    const exec = translator(mem, { rtaddr, exec: true });
    expect(exec.translate({ sid: 0x18, pasid: 2, iova: 0x1000n })).toMatchObject({
      faultName: "SM_ERE_CLEAR",
    });
    // A request without PASID is never an execute request: the RID_PASID entry's ERE is not asked.
    expect(exec.translate({ sid: 0x18, pasid: null, iova: 0x1000n })).toMatchObject({
      result: "ok",
    });
  });

  it("capability registers restrict the unit; TTM 3 blocks every request", () => {
    const m = machine(false);
    const ss = ssTable(m, 3);
    m.b.setContext(m.rta, 0x10, { AW: 3, DID: 1, SLPTPTR: ss.rootPa });
    const cap = vtdCapValue(LEGACY_VTD_CAPS);
    const ecap = vtdEcapValue(LEGACY_VTD_CAPS);
    const legacy = translator(m.mem, {
      rtaddr: rtaddrOf(m, false),
      cap: u64(cap[1], cap[0]),
      ecap: u64(ecap[1], ecap[0]),
    });
    expect(legacy.translate({ sid: 0x10, pasid: null, iova: 0n })).toMatchObject({
      faultName: "CONTEXT_INVALID",
    });
    expect(VtdTranslator.create(m.mem, { rtaddr: 0n, ecap: 1n << 40n })).toMatch(
      /pasid without smts/,
    );
    const abort = translator(m.mem, { rtaddr: BigInt(m.rta) | 0xc00n });
    expect(abort.translate({ sid: 0x10, pasid: null, iova: 0n })).toMatchObject({
      faultName: "SM_ROOT_TABLE_ADDR_INVALID",
    });
    expect(DEFAULT_VTD_CAPS.smts).toBe(true);
  });
});

describe("translate agrees with the running unit's uncached walk on every mapped page", () => {
  interface Plan {
    pgsize: number;
    count: number;
    gapPages: number;
    paSlot: number;
    prot: number;
  }
  const planArb: fc.Arbitrary<Plan> = fc.record({
    pgsize: fc.constantFrom(SZ_4K, SZ_4K, SZ_2M, SZ_1G),
    count: fc.integer({ min: 1, max: 3 }),
    gapPages: fc.integer({ min: 0, max: 700 }),
    paSlot: fc.integer({ min: 1, max: 0x3ff }),
    prot: fc.constantFrom(RW, IOMMU_READ),
  });
  type Kind = "legacy" | "first-stage" | "second-stage" | "nested" | "pass-through";

  test.prop(
    [
      fc.constantFrom<Kind>("legacy", "first-stage", "second-stage", "nested", "pass-through"),
      fc.array(planArb, { minLength: 1, maxLength: 8 }),
      fc.constantFrom<"elf" | "sparse">("elf", "sparse"),
      fc.boolean(),
      fc.integer({ min: 0, max: 0xfff }),
    ],
    { seed: 0x7a45_1a7e, numRuns: 30 },
  )("random tables, every mapped page", (kind, plan, format, write, offset) => {
    const scalable = kind !== "legacy";
    const m = machine(scalable);
    const sid = 0x18;
    const pasid = scalable ? 7 : null;
    const runs: RefRun[] = [];
    // The mapped table, and for nested its guest.
    const ss = kind === "first-stage" ? null : ssTable(m, 2);
    const fs = kind === "first-stage" ? fsTable(m, 4) : null;
    const guest =
      kind === "nested" && ss !== null ? new GuestFsTable(m.b, ss, 4, 0x10_0000_0000) : null;
    let cursor = 0x40_0000;
    for (const p of plan) {
      const count = p.pgsize === SZ_1G ? 1 : p.count;
      const iova = Math.ceil((cursor + p.gapPages * SZ_4K) / p.pgsize) * p.pgsize;
      const pa = p.paSlot * SZ_1G;
      if (guest !== null) {
        // The guest maps iova -> gpa (pa + 1 TiB); the second stage maps gpa -> pa.
        const level = p.pgsize === SZ_4K ? 1 : p.pgsize === SZ_2M ? 2 : 3;
        for (let i = 0; i < count; i++) {
          guest.map(iova + i * p.pgsize, 2 ** 40 + pa + i * p.pgsize, level, (p.prot & 2) !== 0);
          guest.mapOutput(2 ** 40 + pa + i * p.pgsize, pa + i * p.pgsize, p.pgsize);
        }
        runs.push({
          iova: BigInt(iova),
          pa,
          size: p.pgsize * count,
          r: true,
          w: (p.prot & 2) !== 0,
        });
      } else if (kind !== "pass-through") {
        const table = fs ?? ss;
        if (table === null) throw new Error("no table");
        mapRun(table, runs, iova, pa, p.pgsize, count, p.prot);
      } else {
        runs.push({ iova: BigInt(iova), pa: iova, size: p.pgsize * count, r: true, w: true });
      }
      cursor = iova + p.pgsize * count;
    }
    if (!scalable) {
      m.b.setContext(m.rta, sid, { AW: 2, DID: 1, SLPTPTR: (ss as NonNullable<typeof ss>).rootPa });
    } else {
      const dir = m.b.setSmContext(m.rta, sid, { PASIDE: 1 });
      const fields: FieldValues =
        kind === "first-stage"
          ? { PGTT: 1, FLPTR: (fs as NonNullable<typeof fs>).rootPa }
          : kind === "second-stage"
            ? { PGTT: 2, AW: 2, SLPTPTR: (ss as NonNullable<typeof ss>).rootPa }
            : kind === "nested"
              ? {
                  PGTT: 3,
                  AW: 2,
                  SLPTPTR: (ss as NonNullable<typeof ss>).rootPa,
                  FLPTR: (guest as GuestFsTable).rootGpa,
                }
              : { PGTT: 4, AW: 2 };
      m.b.setPasidEntry(dir, pasid as number, { DID: 3, ...fields });
    }
    const mem = reload(m, format);
    const t = translator(mem, { rtaddr: rtaddrOf(m, scalable), write });
    const check = (iova: number, run: RefRun) => {
      const got = t.translate({ sid, pasid, iova: BigInt(iova) });
      const want = xlateFresh(m.unit, sid, iova, { pasid: pasid ?? undefined, write });
      if (want.status !== XLATE_OK) {
        expect(got).toMatchObject({ result: "fault", faultReason: want.code });
        expect(write && !run.w).toBe(true);
        return;
      }
      const expected: VtdTranslateResult = {
        sid,
        pasid,
        iova: toHex(iova),
        result: "ok",
        pa: toHex(want.pa),
        pageSize: 2 ** want.sizeShift,
        r: (want.perm & 1) !== 0,
        w: (want.perm & 2) !== 0,
        passThrough: kind === "pass-through",
      };
      expect(got).toEqual(expected);
      expect(want.pa).toBe(run.pa + (iova - Number(run.iova)));
    };
    for (const run of runs) {
      const base = Number(run.iova);
      // Every 4 KiB page of small runs; first, last and one inner page of large ones.
      if (run.size <= 64 * SZ_4K) {
        for (let o = 0; o < run.size; o += SZ_4K) check(base + o + offset, run);
      } else {
        for (const o of [0, run.size - SZ_4K, Math.floor(run.size / 2 / SZ_4K) * SZ_4K]) {
          check(base + o + offset, run);
        }
      }
    }
    // An unmapped page faults in both.
    const hole = BigInt(cursor + SZ_1G);
    const got = t.translate({ sid, pasid, iova: hole });
    const want = xlateFresh(m.unit, sid, hole, { pasid: pasid ?? undefined, write });
    expect(got.result === "ok").toBe(want.status === XLATE_OK);
    if (got.result === "fault") expect(got.faultReason).toBe(want.code);
  });
});

describe("translate on garbage images", () => {
  const u64Arb = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
  const queryArb = fc.record({
    sid: fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0x3ff })),
    pasid: fc.option(
      fc.oneof(fc.integer({ min: 0, max: 70 }), fc.integer({ min: 0, max: 0xfffff })),
    ),
    iova: fc.oneof(u64Arb, fc.bigInt({ min: 0n, max: (1n << 40n) - 1n })),
  });

  test.prop(
    [
      fc.integer({ min: 0, max: 0xffff_ffff }),
      fc.integer({ min: 1, max: 20 }),
      fc.option(fc.constantFrom(0, 1, 2, 3), { nil: undefined }),
      fc.option(u64Arb, { nil: undefined }),
      fc.option(u64Arb, { nil: undefined }),
      fc.option(u64Arb, { nil: undefined }),
      fc.record({ write: fc.boolean(), exec: fc.boolean(), priv: fc.boolean() }),
      fc.array(queryArb, { minLength: 1, maxLength: 12 }),
    ],
    { seed: 0x7a45_6a4b, numRuns: 60 },
  )(
    "every query gets ok or a fault, never an exception; decode's verdicts and mappings are the unit's",
    (seed, pointers, ttm, rtaddrJunk, cap, ecap, access, queries) => {
      const g = garbageImage(seed, { pointers, ttm });
      const rtaddr = rtaddrJunk ?? g.rtaddr;
      const options = { rtaddr, cap, ecap };
      const made = VtdTranslator.create(g.mem, {
        ...options,
        ...access,
        write: access.write && !access.exec,
      });
      if (typeof made === "string") expect(made).not.toContain("\n");
      const t = typeof made === "string" ? translator(g.mem, { rtaddr, ...access }) : made;
      const doc = decodeVtd(g.mem, {
        rtaddr,
        caps: t.caps,
        maxTablePages: 500,
        maxMappings: 500,
        maxPasidEntries: 2000,
        maxPasidTranslations: 100,
      });
      // Queries to the devices decode found, without PASID, and the rest as generated.
      const devices = typeof doc === "string" ? [] : doc.devices;
      const asked = [
        ...devices.slice(0, 8).map((d, i) => ({
          sid: d.sid,
          pasid: null,
          iova: queries[i % queries.length]?.iova ?? 0n,
        })),
        ...queries,
      ];
      for (const q of asked) {
        const r = t.translate(q);
        expect(r).toMatchObject({ sid: q.sid, pasid: q.pasid, iova: toHex(q.iova) });
        if (r.result === "fault") {
          expect(r.faultReason > 0 && r.faultReason < 256).toBe(true);
          expect(typeof r.faultName).toBe("string");
          continue;
        }
        expect(r.result).toBe("ok");
        expect(r.pa).toMatch(/^0x[0-9a-f]+$/);
        expect(r.pageSize >= SZ_4K && Number.isInteger(Math.log2(r.pageSize))).toBe(true);
      }
      // Where decode says how a device's requests without PASID end, a reading unit agrees, and
      // it finds the mappings decode lists where decode lists them.
      if (typeof doc === "string" || (doc.mode === "scalable" && !t.caps.smts)) return;
      const reader =
        typeof made === "string" ? translator(g.mem, { rtaddr }) : translator(g.mem, options);
      for (const d of devices) {
        const v = d.translations.find((x) => x.pasid === null || x.ridPasid === true);
        if (v === undefined) continue;
        const r = reader.translate({ sid: d.sid, pasid: null, iova: 0x1000n });
        if (v.type === "blocked") {
          expect(r).toMatchObject({ result: "fault", faultReason: v.faultReason });
          continue;
        }
        if (v.type === "pass-through") {
          expect(r).toMatchObject({ result: "ok", pa: "0x1000", passThrough: true });
          continue;
        }
        const table = v.pageTable === null ? undefined : doc.pageTables[v.pageTable];
        if (v.type === "nested" || table === undefined) continue;
        for (const m of table.mappings.slice(0, 8)) {
          const got = reader.translate({ sid: d.sid, pasid: null, iova: BigInt(m.iova) });
          // A request without PASID is a user request: a first-stage leaf must allow user access.
          if (m.r && m.u !== false) expect(got).toMatchObject({ result: "ok", pa: m.pa });
          else expect(got.result).toBe("fault");
        }
      }
    },
  );
});
