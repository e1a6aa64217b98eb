import { fc, test } from "@fast-check/vitest";
import { decode, hasReservedBits } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { CAP_REG, ECAP_REG, FRCD_SIZE, VTD_REG } from "../format/registers.js";
import {
  agawToLevels,
  agawWidth,
  DEFAULT_VTD_CAPS,
  decodeVtdCaps,
  LEGACY_VTD_CAPS,
  levelsToAgaw,
  type SecondStageSuperpage,
  type VtdCapabilities,
  validateVtdCaps,
  vtdCapValue,
  vtdEcapValue,
  vtdFrcdOffset,
  vtdIotlbRegOffset,
  vtdNumDomains,
  vtdNumFaultRecords,
  vtdVerValue,
  widthToAgaw,
} from "./vtd-caps.js";

function roundTrip(caps: VtdCapabilities): VtdCapabilities {
  return decodeVtdCaps(vtdVerValue(caps), vtdCapValue(caps), vtdEcapValue(caps));
}

/** Random valid capability sets: draw each feature, then turn on what it depends on. */
const arbCaps: fc.Arbitrary<VtdCapabilities> = fc
  .record({
    major: fc.integer({ min: 0, max: 15 }),
    minor: fc.integer({ min: 0, max: 15 }),
    nd: fc.integer({ min: 0, max: 6 }),
    sagaw: fc.integer({ min: 1, max: 7 }).map((x) => x << 1),
    mgaw: fc.integer({ min: 1, max: 64 }),
    nfr: fc.integer({ min: 0, max: 255 }),
    mamv: fc.integer({ min: 0, max: 63 }),
    mhmv: fc.integer({ min: 0, max: 15 }),
    pss: fc.integer({ min: 0, max: 19 }),
    superpages: fc.constantFrom<SecondStageSuperpage[]>([], ["2M"], ["1G"], ["2M", "1G"]),
    flags: fc.array(fc.boolean(), { minLength: 45, maxLength: 45 }),
  })
  .map((r) => {
    let i = 0;
    const f = (): boolean => r.flags[i++] === true;
    const smtsDraw = f();
    const flts = f() && smtsDraw;
    const slts = f() && smtsDraw;
    const nest = f() && flts && slts;
    const pasid = f() && smtsDraw;
    const ir = f();
    const prsDraw = f() && pasid;
    const deviceTlb = f() || prsDraw;
    const smts = smtsDraw;
    const qi = f() || smts || deviceTlb || ir;
    const psi = f();
    const caps: VtdCapabilities = {
      version: { major: r.major, minor: r.minor },
      numDomainsBits: 4 + 2 * r.nd,
      afl: f(),
      rwbf: f(),
      plmr: f(),
      phmr: f(),
      cachingMode: f(),
      sagaw: r.sagaw,
      mgaw: r.mgaw,
      zlr: f(),
      superpages: r.superpages,
      psi,
      nfr: r.nfr,
      mamv: psi ? r.mamv : 0,
      writeDrain: f(),
      readDrain: f(),
      firstStage1G: f() && flts,
      pi: f() && ir,
      firstStage5Level: f() && flts,
      ecmds: f(),
      esirtps: f() && ir,
      esrtps: f(),
      coherent: f(),
      qi,
      deviceTlb,
      ir,
      eim: f() && ir,
      passThrough: f(),
      snoopControl: f(),
      mhmv: r.mhmv,
      mts: f(),
      nest,
      prs: prsDraw,
      ers: f() && pasid,
      srs: f() && pasid,
      nwfs: f(),
      eafs: f(),
      pss: pasid ? r.pss : 0,
      pasid,
      dit: f() && deviceTlb,
      pds: f() && prsDraw,
      smts,
      vcs: f(),
      slads: f() && slts,
      slts,
      flts,
      smpwcs: f() && smts,
      rps: f() && smts,
      pms: f(),
    };
    return caps;
  });

describe("presets", () => {
  it("both presets are valid", () => {
    expect(validateVtdCaps(DEFAULT_VTD_CAPS)).toBeNull();
    expect(validateVtdCaps(LEGACY_VTD_CAPS)).toBeNull();
  });

  it("the default unit is scalable with 20-bit PASIDs, 4+5-level tables, 16-bit DIDs, 8 records", () => {
    const c = DEFAULT_VTD_CAPS;
    expect(c.smts && c.pasid && c.flts && c.slts && c.nest && c.prs && c.qi && c.deviceTlb).toBe(
      true,
    );
    expect(c.pss + 1).toBe(20);
    expect(c.sagaw).toBe(0b1100);
    expect(vtdNumDomains(c)).toBe(65536);
    expect(vtdNumFaultRecords(c)).toBe(8);
    expect(c.ir).toBe(false);
  });

  it("the legacy unit has no scalable-mode feature", () => {
    const c = LEGACY_VTD_CAPS;
    expect(c.smts || c.pasid || c.flts || c.slts || c.nest || c.prs).toBe(false);
    expect(c.qi && c.deviceTlb && c.passThrough).toBe(true);
    expect(c.mgaw).toBe(48);
  });

  it("both presets decode from their register values unchanged", () => {
    expect(roundTrip(DEFAULT_VTD_CAPS)).toEqual(DEFAULT_VTD_CAPS);
    expect(roundTrip(LEGACY_VTD_CAPS)).toEqual(LEGACY_VTD_CAPS);
  });

  it("the default CAP reads as the kernel's cap_* macros would", () => {
    const [lo, hi] = vtdCapValue(DEFAULT_VTD_CAPS);
    const cap = (BigInt(hi) << 32n) | BigInt(lo);
    expect(1n << (4n + 2n * (cap & 7n))).toBe(65536n); // cap_ndoms
    expect(((cap >> 16n) & 0x3fn) + 1n).toBe(57n); // cap_mgaw
    expect((cap >> 34n) & 0xfn).toBe(3n); // cap_super_page_val
    expect(((cap >> 40n) & 0xffn) + 1n).toBe(8n); // cap_num_fault_regs
    expect((cap >> 60n) & 1n).toBe(1n); // cap_fl5lp_support
  });
});

describe("CAP / ECAP round trip", () => {
  test.prop([arbCaps], { seed: 5, numRuns: 300 })(
    "every valid capability set decodes back from VER, CAP and ECAP",
    (caps) => {
      expect(validateVtdCaps(caps)).toBeNull();
      expect(hasReservedBits(CAP_REG, vtdCapValue(caps))).toBe(false);
      expect(hasReservedBits(ECAP_REG, vtdEcapValue(caps))).toBe(false);
      expect(roundTrip(caps)).toEqual(caps);
    },
  );

  test.prop([arbCaps], { seed: 6, numRuns: 200 })(
    "the fault records and IOTLB pair never overlap a fixed register or each other",
    (caps) => {
      const fro = Number(decode(CAP_REG, vtdCapValue(caps)).FRO) * 16;
      const iro = Number(decode(ECAP_REG, vtdEcapValue(caps)).IRO) * 16;
      expect(fro).toBe(vtdFrcdOffset(caps));
      expect(iro).toBe(vtdIotlbRegOffset(caps));
      const frEnd = fro + (caps.nfr + 1) * FRCD_SIZE;
      // The fixed registers: 0x000-0x0EF, MTRRs 0x100-0x21F, perfmon 0x300-0x3FF,
      // enhanced command 0x400-0x44F, virtual command 0xE00-0xE3F.
      const fixed: [number, number][] = [
        [0, VTD_REG.PEUADDR + 4],
        [0x100, 0x220],
        [0x300, 0x400],
        [0x400, 0x450],
        [0xe00, 0xe40],
        [iro, iro + 16],
      ];
      for (const [a, z] of fixed) expect(frEnd <= a || fro >= z).toBe(true);
      expect(iro).toBeGreaterThanOrEqual(VTD_REG.PEUADDR + 4);
      expect(iro + 16).toBeLessThanOrEqual(0x100);
    },
  );

  it("8 fault records sit at 0x220 as in QEMU; 256 move to 0x1000", () => {
    expect(vtdFrcdOffset(DEFAULT_VTD_CAPS)).toBe(0x220);
    expect(vtdFrcdOffset({ ...DEFAULT_VTD_CAPS, nfr: 13 })).toBe(0x220);
    expect(vtdFrcdOffset({ ...DEFAULT_VTD_CAPS, nfr: 14 })).toBe(0x1000);
    expect(vtdFrcdOffset({ ...DEFAULT_VTD_CAPS, nfr: 255 })).toBe(0x1000);
    expect(vtdIotlbRegOffset(DEFAULT_VTD_CAPS)).toBe(0xf0);
  });
});

describe("validateVtdCaps refuses impossible sets", () => {
  const D = DEFAULT_VTD_CAPS;
  const L = LEGACY_VTD_CAPS;
  const bad: [string, VtdCapabilities, RegExp][] = [
    ["pasid without smts", { ...L, pasid: true, pss: 19 }, /pasid without smts/],
    ["pss without pasid", { ...L, pss: 4 }, /pss without pasid/],
    [
      "nest without flts",
      { ...D, flts: false, firstStage1G: false, firstStage5Level: false },
      /nest/,
    ],
    ["nest without slts", { ...D, slts: false }, /nest/],
    ["flts without smts", { ...L, flts: true }, /flts without smts/],
    ["slts without smts", { ...L, slts: true }, /slts without smts/],
    ["FL1GP without flts", { ...D, nest: false, flts: false, firstStage5Level: false }, /FL1GP/],
    ["prs without deviceTlb", { ...D, deviceTlb: false, dit: false }, /prs without deviceTlb/],
    ["prs without pasid", { ...L, prs: true }, /prs without pasid/],
    ["pds without prs", { ...D, prs: false }, /pds without prs/],
    ["dit without deviceTlb", { ...L, deviceTlb: false, dit: true }, /dit without deviceTlb/],
    ["srs without pasid", { ...L, srs: true }, /srs\/ers without pasid/],
    ["smts without qi", { ...D, qi: false }, /smts without qi/],
    ["deviceTlb without qi", { ...L, qi: false }, /deviceTlb without qi/],
    ["ir without qi", { ...L, ir: true, qi: false, deviceTlb: false }, /ir without qi/],
    ["eim without ir", { ...L, eim: true }, /without ir/],
    ["rps without smts", { ...L, rps: true }, /rps without smts/],
    ["smpwcs without smts", { ...L, smpwcs: true }, /smpwcs without smts/],
    ["slads without slts", { ...L, slads: true }, /slads without slts/],
    ["mgaw beyond 64", { ...D, mgaw: 65 }, /mgaw 65/],
    ["mgaw 0", { ...D, mgaw: 0 }, /mgaw 0/],
    ["nfr 256", { ...D, nfr: 256 }, /nfr 256/],
    ["nfr -1", { ...D, nfr: -1 }, /nfr -1/],
    ["fractional nfr", { ...D, nfr: 1.5 }, /nfr 1.5/],
    ["mamv beyond 6 bits", { ...D, mamv: 64 }, /mamv 64/],
    ["mamv without psi", { ...D, psi: false }, /mamv without psi/],
    ["mhmv beyond 4 bits", { ...D, mhmv: 16 }, /mhmv 16/],
    ["pss beyond 20-bit PASIDs", { ...D, pss: 20 }, /pss 20/],
    ["odd domain-id width", { ...D, numDomainsBits: 15 }, /numDomainsBits 15/],
    ["domain-id width beyond 16", { ...D, numDomainsBits: 18 }, /numDomainsBits 18/],
    ["reserved 30-bit AGAW", { ...D, sagaw: 0b00001 }, /only 39-, 48- and 57-bit/],
    ["reserved 64-bit AGAW", { ...D, sagaw: 0b10100 }, /only 39-, 48- and 57-bit/],
    ["no AGAW with second stage", { ...L, sagaw: 0 }, /sagaw 0/],
    ["version out of range", { ...D, version: { major: 16, minor: 0 } }, /version 16.0/],
    ["superpages out of order", { ...D, superpages: ["1G", "2M"] }, /superpages/],
  ];
  for (const [name, caps, why] of bad) {
    it(`refuses ${name}`, () => {
      expect(validateVtdCaps(caps)).toMatch(why);
    });
  }

  it("accepts SAGAW 0 on a first-stage-only scalable unit (as the kernel does)", () => {
    expect(validateVtdCaps({ ...D, sagaw: 0, slts: false, nest: false, slads: false })).toBeNull();
  });
});

describe("AGAW arithmetic", () => {
  it("agaw n is n + 2 levels of 30 + 9n bits", () => {
    expect([0, 1, 2, 3, 4].map(agawToLevels)).toEqual([2, 3, 4, 5, 6]);
    expect([0, 1, 2, 3, 4].map(agawWidth)).toEqual([30, 39, 48, 57, 64]);
    expect([3, 4, 5].map(levelsToAgaw)).toEqual([1, 2, 3]);
  });

  it("widthToAgaw rounds up to the next whole level", () => {
    expect(widthToAgaw(39)).toBe(1);
    expect(widthToAgaw(40)).toBe(2);
    expect(widthToAgaw(48)).toBe(2);
    expect(widthToAgaw(57)).toBe(3);
    expect(widthToAgaw(64)).toBe(4);
    for (let w = 31; w <= 64; w++) {
      const aw = widthToAgaw(w);
      expect(agawWidth(aw)).toBeGreaterThanOrEqual(w);
      expect(agawWidth(aw - 1)).toBeLessThan(w);
    }
  });
});
