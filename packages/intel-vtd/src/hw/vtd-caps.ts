// What a VT-d remapping unit reports it can do (VER, CAP, ECAP), as a readable configuration, with
// the register values built from it and the AGAW arithmetic those registers use.

import { decode, encode } from "@iommu-sim/iommu-core/platform";
import { CAP_REG, ECAP_REG, FRCD_SIZE, VER_REG } from "../format/registers.js";

/** A second-stage large-page size (CAP.SLLPS bit 0 and bit 1). */
export type SecondStageSuperpage = "2M" | "1G";

/**
 * The capability set of one remapping unit. Names follow the spec's fields where no clearer word
 * exists (`smts`, `pss`); each field's doc names its register bit. FRO and IRO are not here: the
 * unit places its register blocks itself (`vtdFrcdOffset`, `vtdIotlbRegOffset`).
 *
 * @spec Intel VT-d Architecture Specification 10.4 (VER_REG, CAP_REG, ECAP_REG)
 * @kernel drivers/iommu/intel/iommu.h cap_sagaw
 */
export interface VtdCapabilities {
  /** VER.MAX / VER.MIN. */
  readonly version: { readonly major: number; readonly minor: number };
  // --- CAP ---
  /** Domain-id width in bits, 4 + 2 * CAP.ND (4, 6, ... 16). */
  readonly numDomainsBits: number;
  /** CAP.AFL: advanced fault logging (not modelled; reported as given). */
  readonly afl: boolean;
  /** CAP.RWBF: software must flush the write buffer (GCMD.WBF) after table updates. */
  readonly rwbf: boolean;
  /** CAP.PLMR / CAP.PHMR: protected memory regions. */
  readonly plmr: boolean;
  readonly phmr: boolean;
  /** CAP.CM: not-present and invalid entries may be cached. */
  readonly cachingMode: boolean;
  /** CAP.SAGAW: bit n set = second-stage tables with agaw n (n + 2 levels) are supported. */
  readonly sagaw: number;
  /** Maximum guest address width in bits (CAP.MGAW + 1). */
  readonly mgaw: number;
  /** CAP.ZLR: zero-length reads. */
  readonly zlr: boolean;
  /** CAP.SLLPS bits 0 and 1: second-stage 2 MiB and 1 GiB pages, in that order. */
  readonly superpages: readonly SecondStageSuperpage[];
  /** CAP.PSI: page-selective IOTLB invalidation. */
  readonly psi: boolean;
  /** CAP.NFR: number of fault recording registers minus one (0..255). */
  readonly nfr: number;
  /** CAP.MAMV: largest address mask of a page-selective invalidation (0 without PSI). */
  readonly mamv: number;
  /** CAP.DWD / CAP.DRD: write and read draining. */
  readonly writeDrain: boolean;
  readonly readDrain: boolean;
  /** CAP.FL1GP: first-stage 1 GiB pages. */
  readonly firstStage1G: boolean;
  /** CAP.PI: posted interrupts. */
  readonly pi: boolean;
  /** CAP.FL5LP: first-stage 5-level paging. */
  readonly firstStage5Level: boolean;
  /** CAP.ECMDS: enhanced command interface. */
  readonly ecmds: boolean;
  /** CAP.ESIRTPS / CAP.ESRTPS: SIRTP / SRTP also invalidate the caches they feed. */
  readonly esirtps: boolean;
  readonly esrtps: boolean;
  // --- ECAP ---
  /** ECAP.C: page walks snoop the CPU caches (legacy mode). */
  readonly coherent: boolean;
  /** ECAP.QI: queued invalidation. */
  readonly qi: boolean;
  /** ECAP.DT: device-TLBs (ATS). */
  readonly deviceTlb: boolean;
  /** ECAP.IR: interrupt remapping (not modelled: false in both presets). */
  readonly ir: boolean;
  /** ECAP.EIM: extended interrupt mode. */
  readonly eim: boolean;
  /** ECAP.PT: pass-through. */
  readonly passThrough: boolean;
  /** ECAP.SC: snoop control. */
  readonly snoopControl: boolean;
  /** ECAP.MHMV: maximum handle mask of interrupt-entry-cache invalidation. */
  readonly mhmv: number;
  /** ECAP.MTS: memory types. */
  readonly mts: boolean;
  /** ECAP.NEST: nested translation. */
  readonly nest: boolean;
  /** ECAP.PRS: page requests. */
  readonly prs: boolean;
  /** ECAP.ERS / ECAP.SRS: execute and supervisor requests. */
  readonly ers: boolean;
  readonly srs: boolean;
  /** ECAP.NWFS / ECAP.EAFS: no-write flag, extended accessed flag. */
  readonly nwfs: boolean;
  readonly eafs: boolean;
  /** ECAP.PSS: PASIDs have PSS + 1 bits (19: 20-bit PASIDs). */
  readonly pss: number;
  /** ECAP.PASID. */
  readonly pasid: boolean;
  /** ECAP.DIT: device-TLB invalidation throttling. */
  readonly dit: boolean;
  /** ECAP.PDS: page-request drain. */
  readonly pds: boolean;
  /** ECAP.SMTS: scalable-mode translation. */
  readonly smts: boolean;
  /** ECAP.VCS: virtual command interface. */
  readonly vcs: boolean;
  /** ECAP.SLADS: second-stage accessed/dirty bits. */
  readonly slads: boolean;
  /** ECAP.SLTS / ECAP.FLTS: second- and first-stage translation in scalable mode. */
  readonly slts: boolean;
  readonly flts: boolean;
  /** ECAP.SMPWCS: scalable-mode page-walk coherency. */
  readonly smpwcs: boolean;
  /** ECAP.RPS: RID_PASID may be non-zero. */
  readonly rps: boolean;
  /** ECAP.PMS: performance monitoring. */
  readonly pms: boolean;
}

/**
 * A modern scalable-mode unit: scalable mode with 20-bit PASIDs, first- and second-stage and nested
 * translation, pass-through, ATS, page requests with drain, supervisor requests, QI, PSI, 4- and
 * 5-level second-stage tables, 57-bit MGAW, 2 MiB and 1 GiB pages at both stages, 16-bit domain ids,
 * 8 fault records. MAMV is 18, the value Intel client and server units (and QEMU) report, so a PSI
 * covers up to 1 GiB.
 */
export const DEFAULT_VTD_CAPS: VtdCapabilities = Object.freeze({
  version: Object.freeze({ major: 6, minor: 0 }),
  numDomainsBits: 16,
  afl: false,
  rwbf: false,
  plmr: false,
  phmr: false,
  cachingMode: false,
  sagaw: 0b01100,
  mgaw: 57,
  zlr: false,
  superpages: Object.freeze(["2M", "1G"] as const),
  psi: true,
  nfr: 7,
  mamv: 18,
  writeDrain: true,
  readDrain: true,
  firstStage1G: true,
  pi: false,
  firstStage5Level: true,
  ecmds: false,
  esirtps: false,
  esrtps: false,
  coherent: true,
  qi: true,
  deviceTlb: true,
  ir: false,
  eim: false,
  passThrough: true,
  snoopControl: true,
  mhmv: 0,
  mts: false,
  nest: true,
  prs: true,
  ers: false,
  srs: true,
  nwfs: false,
  eafs: false,
  pss: 19,
  pasid: true,
  dit: false,
  pds: true,
  smts: true,
  vcs: false,
  slads: false,
  slts: true,
  flts: true,
  smpwcs: true,
  rps: false,
  pms: false,
});

/**
 * A pre-scalable (VT-d 1.x/2.x style) unit: legacy mode only, QI, ATS, pass-through, PSI, 4-level
 * 48-bit second-stage tables, 2 MiB and 1 GiB pages, 16-bit domain ids, 8 fault records.
 */
export const LEGACY_VTD_CAPS: VtdCapabilities = Object.freeze({
  ...DEFAULT_VTD_CAPS,
  version: Object.freeze({ major: 1, minor: 0 }),
  sagaw: 0b00100,
  mgaw: 48,
  firstStage1G: false,
  firstStage5Level: false,
  snoopControl: false,
  nest: false,
  prs: false,
  srs: false,
  pss: 0,
  pasid: false,
  pds: false,
  smts: false,
  slts: false,
  flts: false,
  smpwcs: false,
});

/** IOTLB register pair offset in 16-byte units (IVA at 0xF0, IOTLB at 0xF8, as QEMU places them). */
const IRO = 0xf;
/** Fault records start at 0x220 (as in QEMU) while they end before the perfmon block at 0x300. */
const FRO_LOW = 0x22;
const FRO_LOW_LIMIT = 0x300;
/** Otherwise they start at 0x1000, past every fixed register (VCCAP at 0xE30 is the last). */
const FRO_HIGH = 0x100;

/**
 * Byte offset of the IVA register (IOTLB register at +8): ECAP.IRO * 16.
 *
 * @kernel drivers/iommu/intel/iommu.h ecap_iotlb_offset
 */
export function vtdIotlbRegOffset(_caps: VtdCapabilities): number {
  return IRO * 16;
}

/**
 * Byte offset of fault recording register 0: CAP.FRO * 16. The records go at 0x220 when all
 * NFR + 1 of them fit below 0x300, else at 0x1000, so they never overlap another register.
 *
 * @kernel drivers/iommu/intel/iommu.h cap_fault_reg_offset
 */
export function vtdFrcdOffset(caps: VtdCapabilities): number {
  return frcdUnits(caps) * 16;
}

function frcdUnits(caps: VtdCapabilities): number {
  return FRO_LOW * 16 + (caps.nfr + 1) * FRCD_SIZE <= FRO_LOW_LIMIT ? FRO_LOW : FRO_HIGH;
}

/** Number of fault recording registers (CAP.NFR + 1). @kernel drivers/iommu/intel/iommu.h cap_num_fault_regs */
export function vtdNumFaultRecords(caps: VtdCapabilities): number {
  return caps.nfr + 1;
}

/** Number of domain ids (2^(4 + 2*ND)). @kernel drivers/iommu/intel/iommu.h cap_ndoms */
export function vtdNumDomains(caps: VtdCapabilities): number {
  return 2 ** caps.numDomainsBits;
}

const b = (x: boolean): number => (x ? 1 : 0);

/** VER register value. */
export function vtdVerValue(caps: VtdCapabilities): number {
  return encode(VER_REG, { MAX: caps.version.major, MIN: caps.version.minor })[0] as number;
}

/**
 * CAP register value as `[lo, hi]` uint32 halves. The caps must be valid (`validateVtdCaps`); an
 * out-of-range field is a model bug.
 *
 * @spec Intel VT-d Architecture Specification 10.4 CAP_REG
 */
export function vtdCapValue(caps: VtdCapabilities): [number, number] {
  const w = encode(CAP_REG, {
    ND: (caps.numDomainsBits - 4) / 2,
    AFL: b(caps.afl),
    RWBF: b(caps.rwbf),
    PLMR: b(caps.plmr),
    PHMR: b(caps.phmr),
    CM: b(caps.cachingMode),
    SAGAW: caps.sagaw,
    MGAW: caps.mgaw - 1,
    ZLR: b(caps.zlr),
    FRO: frcdUnits(caps),
    SLLPS: (caps.superpages.includes("2M") ? 1 : 0) | (caps.superpages.includes("1G") ? 2 : 0),
    PSI: b(caps.psi),
    NFR: caps.nfr,
    MAMV: caps.mamv,
    DWD: b(caps.writeDrain),
    DRD: b(caps.readDrain),
    FL1GP: b(caps.firstStage1G),
    PI: b(caps.pi),
    FL5LP: b(caps.firstStage5Level),
    ECMDS: b(caps.ecmds),
    ESIRTPS: b(caps.esirtps),
    ESRTPS: b(caps.esrtps),
  });
  return [w[0] as number, w[1] as number];
}

/**
 * ECAP register value as `[lo, hi]` uint32 halves.
 *
 * @spec Intel VT-d Architecture Specification 10.4 ECAP_REG
 */
export function vtdEcapValue(caps: VtdCapabilities): [number, number] {
  const w = encode(ECAP_REG, {
    C: b(caps.coherent),
    QI: b(caps.qi),
    DT: b(caps.deviceTlb),
    IR: b(caps.ir),
    EIM: b(caps.eim),
    PT: b(caps.passThrough),
    SC: b(caps.snoopControl),
    IRO,
    MHMV: caps.mhmv,
    MTS: b(caps.mts),
    NEST: b(caps.nest),
    PRS: b(caps.prs),
    ERS: b(caps.ers),
    SRS: b(caps.srs),
    NWFS: b(caps.nwfs),
    EAFS: b(caps.eafs),
    PSS: caps.pss,
    PASID: b(caps.pasid),
    DIT: b(caps.dit),
    PDS: b(caps.pds),
    SMTS: b(caps.smts),
    VCS: b(caps.vcs),
    SLADS: b(caps.slads),
    SLTS: b(caps.slts),
    FLTS: b(caps.flts),
    SMPWCS: b(caps.smpwcs),
    RPS: b(caps.rps),
    PMS: b(caps.pms),
  });
  return [w[0] as number, w[1] as number];
}

/**
 * The capability set VER, CAP and ECAP describe (FRO and IRO, and SLLPS bits 2-3, are dropped).
 * The inverse of `vtdVerValue` / `vtdCapValue` / `vtdEcapValue`; for decoders and tests.
 */
export function decodeVtdCaps(
  ver: number,
  cap: readonly [number, number],
  ecap: readonly [number, number],
): VtdCapabilities {
  const v = decode(VER_REG, [ver >>> 0]);
  const c = decode(CAP_REG, cap);
  const e = decode(ECAP_REG, ecap);
  const n = (x: unknown): number => x as number;
  const t = (x: unknown): boolean => (x as number) === 1;
  const sllps = n(c.SLLPS);
  const superpages: SecondStageSuperpage[] = [];
  if (sllps & 1) superpages.push("2M");
  if (sllps & 2) superpages.push("1G");
  return {
    version: { major: n(v.MAX), minor: n(v.MIN) },
    numDomainsBits: 4 + 2 * n(c.ND),
    afl: t(c.AFL),
    rwbf: t(c.RWBF),
    plmr: t(c.PLMR),
    phmr: t(c.PHMR),
    cachingMode: t(c.CM),
    sagaw: n(c.SAGAW),
    mgaw: n(c.MGAW) + 1,
    zlr: t(c.ZLR),
    superpages,
    psi: t(c.PSI),
    nfr: n(c.NFR),
    mamv: n(c.MAMV),
    writeDrain: t(c.DWD),
    readDrain: t(c.DRD),
    firstStage1G: t(c.FL1GP),
    pi: t(c.PI),
    firstStage5Level: t(c.FL5LP),
    ecmds: t(c.ECMDS),
    esirtps: t(c.ESIRTPS),
    esrtps: t(c.ESRTPS),
    coherent: t(e.C),
    qi: t(e.QI),
    deviceTlb: t(e.DT),
    ir: t(e.IR),
    eim: t(e.EIM),
    passThrough: t(e.PT),
    snoopControl: t(e.SC),
    mhmv: n(e.MHMV),
    mts: t(e.MTS),
    nest: t(e.NEST),
    prs: t(e.PRS),
    ers: t(e.ERS),
    srs: t(e.SRS),
    nwfs: t(e.NWFS),
    eafs: t(e.EAFS),
    pss: n(e.PSS),
    pasid: t(e.PASID),
    dit: t(e.DIT),
    pds: t(e.PDS),
    smts: t(e.SMTS),
    vcs: t(e.VCS),
    slads: t(e.SLADS),
    slts: t(e.SLTS),
    flts: t(e.FLTS),
    smpwcs: t(e.SMPWCS),
    rps: t(e.RPS),
    pms: t(e.PMS),
  };
}

const isInt = (x: number, lo: number, hi: number): boolean =>
  Number.isInteger(x) && x >= lo && x <= hi;

/** SAGAW bits the current spec defines: 39-, 48- and 57-bit (agaw 1..3); 30 and 64 are reserved. */
const SAGAW_DEFINED = 0b01110;

/**
 * Why `caps` cannot describe a unit, or null when it can: field values out of range, and
 * combinations the spec rules out or the model cannot honour (a feature whose prerequisite is
 * missing).
 */
export function validateVtdCaps(caps: VtdCapabilities): string | null {
  const { version: v } = caps;
  if (!isInt(v.major, 0, 15) || !isInt(v.minor, 0, 15))
    return `version ${v.major}.${v.minor}: major and minor are 4-bit fields`;
  if (!isInt(caps.numDomainsBits, 4, 16) || caps.numDomainsBits % 2 !== 0)
    return `numDomainsBits ${caps.numDomainsBits}: must be 4 + 2*ND, ND 0..6 (4, 6, ... 16)`;
  if (!isInt(caps.sagaw, 0, 31)) return `sagaw ${caps.sagaw}: a 5-bit bitmap`;
  if ((caps.sagaw & ~SAGAW_DEFINED) !== 0)
    return `sagaw ${caps.sagaw}: only 39-, 48- and 57-bit AGAWs (bits 1-3) are defined`;
  if (caps.sagaw === 0 && !(caps.smts && !caps.slts))
    return "sagaw 0: a unit with second-stage tables must support at least one AGAW";
  if (!isInt(caps.mgaw, 1, 64)) return `mgaw ${caps.mgaw}: must be 1..64 bits`;
  if (!isInt(caps.nfr, 0, 255)) return `nfr ${caps.nfr}: must be 0..255`;
  if (!isInt(caps.mamv, 0, 63)) return `mamv ${caps.mamv}: a 6-bit field`;
  if (!caps.psi && caps.mamv !== 0) return "mamv without psi: MAMV is meaningful only with PSI";
  if (!isInt(caps.mhmv, 0, 15)) return `mhmv ${caps.mhmv}: a 4-bit field`;
  if (!isInt(caps.pss, 0, 19)) return `pss ${caps.pss}: PASIDs have at most 20 bits (pss <= 19)`;
  const sp = caps.superpages;
  const spOk =
    sp.length === 0 ||
    (sp.length === 1 && (sp[0] === "2M" || sp[0] === "1G")) ||
    (sp.length === 2 && sp[0] === "2M" && sp[1] === "1G");
  if (!spOk) return `superpages [${sp.join(",")}]: a subset of ["2M", "1G"] in that order`;
  if (caps.pasid && !caps.smts) return "pasid without smts: PASIDs need scalable mode";
  if (!caps.pasid && caps.pss !== 0) return "pss without pasid";
  if (caps.flts && !caps.smts) return "flts without smts: first-stage needs scalable mode";
  if (caps.slts && !caps.smts) return "slts without smts: SLTS reports scalable-mode second stage";
  if (caps.nest && !(caps.flts && caps.slts)) return "nest without both flts and slts";
  if ((caps.firstStage1G || caps.firstStage5Level) && !caps.flts)
    return "first-stage page sizes (FL1GP/FL5LP) without flts";
  if (caps.rps && !caps.smts) return "rps without smts";
  if (caps.smpwcs && !caps.smts) return "smpwcs without smts";
  if (caps.slads && !caps.slts) return "slads without slts";
  if (caps.smts && !caps.qi) return "smts without qi: scalable mode is invalidated only by QI";
  if (caps.deviceTlb && !caps.qi) return "deviceTlb without qi: device-TLBs are flushed by QI";
  if (caps.prs && !caps.deviceTlb) return "prs without deviceTlb: page requests need ATS";
  if (caps.prs && !caps.pasid) return "prs without pasid: page requests are scalable-mode";
  if (caps.pds && !caps.prs) return "pds without prs";
  if (caps.dit && !caps.deviceTlb) return "dit without deviceTlb";
  if ((caps.srs || caps.ers) && !caps.pasid) return "srs/ers without pasid";
  if (caps.ir && !caps.qi) return "ir without qi: interrupt entries are flushed by QI";
  if ((caps.eim || caps.pi || caps.esirtps) && !caps.ir) return "eim/pi/esirtps without ir";
  return null;
}

// The AGAW arithmetic lives with the AW field it decodes; re-exported here for capability users.
export { agawToLevels, agawWidth, levelsToAgaw, widthToAgaw } from "../format/context-entry.js";
