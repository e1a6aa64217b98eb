// The STEs and CDs the Linux SMMUv3 driver builds (arm_smmu_make_*), as 16-word entries ready
// for the entry writer, parameterised by plain values rather than driver objects.

import {
  bug,
  type Field,
  fieldOf,
  setField,
  TWO32,
  wordMask,
} from "@iommu-sim/iommu-core/platform";
import { CD } from "../format/cd.js";
import {
  EATS_ABT,
  EATS_TRANS,
  S1DSS_BYPASS,
  SHCFG_INCOMING,
  STE,
  STE_CFG_ABORT,
  STE_CFG_BYPASS,
  STE_CFG_NESTED,
  STE_CFG_S1_TRANS,
  STE_CFG_S2_TRANS,
  STRW_EL2,
  STRW_NSEL1,
} from "../format/ste.js";
import { ENTRY_WORDS } from "./entry-writer.js";

/**
 * The SMMU and CPU features the makers depend on (the kernel's ARM_SMMU_FEAT_* bits and CPU
 * capabilities). Big-endian kernels, which set CD.ENDI / STE.S2ENDI, are not modelled.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h ARM_SMMU_FEAT_STALLS
 */
export interface SmmuEntryFeatures {
  /** ARM_SMMU_FEAT_STALLS (IDR0.STALL_MODEL = 0b00): S1STALLD is set for masters without stall. */
  readonly stalls: boolean;
  /** ARM_SMMU_FEAT_STALL_FORCE (STALL_MODEL = 0b10): a released SVA CD keeps CD.S and CD.R. */
  readonly stallForce?: boolean;
  /** ARM_SMMU_FEAT_ATTR_TYPES_OVR (IDR1): SHCFG = incoming where traffic bypasses stage 1. */
  readonly attrTypesOvr: boolean;
  /** ARM_SMMU_FEAT_E2H (IDR0.Hyp and a VHE host): CD-table STEs use StreamWorld EL2. */
  readonly e2h: boolean;
  /** ARM_SMMU_FEAT_S2FWB (IDR3.FWB): nest-parent stage 2 tables get the S2FWB quirk. */
  readonly s2fwb?: boolean;
  /** ARM_SMMU_FEAT_HA: SVA CDs let the SMMU update the Access flag. */
  readonly ha?: boolean;
  /** ARM_SMMU_FEAT_HD: SVA CDs let the SMMU update dirty state. */
  readonly hd?: boolean;
  /** ARM_SMMU_FEAT_HAFT and the CPU uses hardware table Access flags: SVA CDs set HAFT. */
  readonly haft?: boolean;
  readonly bigEndian?: false;
}

/** Parameters of a CD-table (stage 1) STE. */
export interface CdtableSteParams {
  /** PA of the CD (S1CDMax 0), linear CD table or L1 CD table. */
  readonly cdTablePa: number;
  /** STE.S1Fmt: 0 linear, 2 two-level with 64 KiB leaves (Linux never uses 1). */
  readonly s1fmt: number;
  /** log2 of the number of CDs (the master's ssid_bits). */
  readonly s1cdmax: number;
  /** What substream-less traffic does: S1DSS_TERMINATE, S1DSS_BYPASS or S1DSS_SSID0. */
  readonly s1dss: number;
  /** ATS enabled for the master (EATS = full ATS). */
  readonly ats: boolean;
  /** The master can stall (master->stall_enabled). */
  readonly stallEnabled: boolean;
}

/** Parameters of a stage 2 STE: the domain's VMID and io-pgtable VTCR/VTTBR, and the master. */
export interface S2DomainSteParams {
  readonly vmid: number;
  /** Stage 2 table base (VTTBR); bits outside [51:4] are dropped as the kernel masks them. */
  readonly vttbr: number;
  readonly t0sz: number;
  readonly sl0: number;
  readonly irgn: number;
  readonly orgn: number;
  readonly sh: number;
  /** VTCR.TG0 encoding (0 4K, 1 64K, 2 16K). */
  readonly tg: number;
  /** VTCR.PS encoding. */
  readonly ps: number;
  readonly ats: boolean;
  readonly stallEnabled: boolean;
  /** The domain was allocated as a nesting parent (IOMMU_HWPT_ALLOC_NEST_PARENT). */
  readonly nestParent?: boolean;
}

/** Parameters of a nested STE: the guest's vSTE (qwords 0 and 1 = words 0-3) and the S2 parent. */
export interface NestedSteParams {
  readonly vste: Uint32Array;
  readonly s2: S2DomainSteParams;
}

/** Parameters of a stage 1 paging-domain CD: the domain's ASID and io-pgtable TCR/TTBR/MAIR. */
export interface S1CdParams {
  readonly asid: number;
  /** TTBR; bits outside [51:4] are dropped as the kernel masks them. */
  readonly ttb0: number;
  readonly t0sz: number;
  /** TCR.TG0 encoding (0 4K, 1 64K, 2 16K). */
  readonly tg0: number;
  readonly irgn0: number;
  readonly orgn0: number;
  readonly sh0: number;
  /** TCR.IPS encoding. */
  readonly ips: number;
  /** MAIR as [bits 31:0, bits 63:32]. */
  readonly mair: readonly [lo: number, hi: number];
  readonly stallEnabled: boolean;
  /** The io-pgtable has the ARM_HD quirk (dirty tracking): HA and HD are both set. */
  readonly hd?: boolean;
}

/** The process address space an SVA CD points at. */
export interface SvaMm {
  /** PA of the process's top-level table (mm->pgd). */
  readonly pgd: number;
  /** vabits_actual: T0SZ = 64 - vaBits. */
  readonly vaBits: number;
  /** log2 PAGE_SIZE: 12, 14 or 16. */
  readonly pageShift: number;
}

/** Parameters of an SVA CD. */
export interface SvaCdParams {
  readonly asid: number;
  /** ID_AA64MMFR0_EL1.PARange of the CPUs, as CD.IPS. */
  readonly ips: number;
  /** MAIR_EL1 as [bits 31:0, bits 63:32]. */
  readonly mair: readonly [lo: number, hi: number];
  readonly stallEnabled: boolean;
  /** The address space, or null once it was released: a valid CD that faults every access. */
  readonly mm: SvaMm | null;
}

// STE fields.
const S_V = fieldOf(STE, "V");
const S_CONFIG = fieldOf(STE, "Config");
const S_S1FMT = fieldOf(STE, "S1Fmt");
const S_S1CTXPTR = fieldOf(STE, "S1ContextPtr");
const S_S1CDMAX = fieldOf(STE, "S1CDMax");
const S_S1DSS = fieldOf(STE, "S1DSS");
const S_S1CIR = fieldOf(STE, "S1CIR");
const S_S1COR = fieldOf(STE, "S1COR");
const S_S1CSH = fieldOf(STE, "S1CSH");
const S_S1STALLD = fieldOf(STE, "S1STALLD");
const S_EATS = fieldOf(STE, "EATS");
const S_STRW = fieldOf(STE, "STRW");
const S_SHCFG = fieldOf(STE, "SHCFG");
const S_MEV = fieldOf(STE, "MEV");
const S_S2FWB = fieldOf(STE, "S2FWB");
const S_S2VMID = fieldOf(STE, "S2VMID");
const S_S2T0SZ = fieldOf(STE, "S2T0SZ");
const S_S2SL0 = fieldOf(STE, "S2SL0");
const S_S2IR0 = fieldOf(STE, "S2IR0");
const S_S2OR0 = fieldOf(STE, "S2OR0");
const S_S2SH0 = fieldOf(STE, "S2SH0");
const S_S2TG = fieldOf(STE, "S2TG");
const S_S2PS = fieldOf(STE, "S2PS");
const S_S2AA64 = fieldOf(STE, "S2AA64");
const S_S2PTW = fieldOf(STE, "S2PTW");
const S_S2S = fieldOf(STE, "S2S");
const S_S2R = fieldOf(STE, "S2R");
const S_S2TTB = fieldOf(STE, "S2TTB");

// CD fields.
const C_T0SZ = fieldOf(CD, "T0SZ");
const C_TG0 = fieldOf(CD, "TG0");
const C_IR0 = fieldOf(CD, "IR0");
const C_OR0 = fieldOf(CD, "OR0");
const C_SH0 = fieldOf(CD, "SH0");
const C_EPD0 = fieldOf(CD, "EPD0");
const C_EPD1 = fieldOf(CD, "EPD1");
const C_V = fieldOf(CD, "V");
const C_IPS = fieldOf(CD, "IPS");
const C_AA64 = fieldOf(CD, "AA64");
const C_HD = fieldOf(CD, "HD");
const C_HA = fieldOf(CD, "HA");
const C_S = fieldOf(CD, "S");
const C_R = fieldOf(CD, "R");
const C_A = fieldOf(CD, "A");
const C_ASET = fieldOf(CD, "ASET");
const C_ASID = fieldOf(CD, "ASID");
const C_HAFT = fieldOf(CD, "HAFT");
const C_TTB0 = fieldOf(CD, "TTB0");
const C_MAIR0 = fieldOf(CD, "MAIR0");
const C_MAIR1 = fieldOf(CD, "MAIR1");

/** TCR.TG0 encodings by page shift. */
const TG0_OF_SHIFT: Readonly<Record<number, number>> = { 12: 0, 14: 2, 16: 1 };

// The vSTE bits a guest may set (STRTAB_STE_0/1_NESTING_ALLOWED), over words 0-3.
const NESTING_ALLOWED = new Uint32Array(4);
function allow(bit: number): void {
  NESTING_ALLOWED[bit >>> 5] = ((NESTING_ALLOWED[bit >>> 5] as number) | (1 << (bit & 31))) >>> 0;
}
for (const f of [S_V, S_CONFIG, S_S1FMT, S_S1CTXPTR, S_S1CDMAX]) {
  // The kernel's S1ContextPtr mask is [51:6]; address bits above 51 are not allowed from a guest.
  const top = f === S_S1CTXPTR ? 52 : f.lsb + f.width;
  for (let b = f.lsb; b < top; b++) allow(b);
}
for (const f of [S_S1DSS, S_S1CIR, S_S1COR, S_S1CSH, S_S1STALLD, S_EATS]) {
  for (let b = f.lsb; b < f.lsb + f.width; b++) allow(b);
}

/** Set a field of at most 32 bits (a value that does not fit is a model bug). */
function put(out: Uint32Array, f: Field, v: number): void {
  setField(f, out, v);
}

/**
 * Put the address bits of `pa` that fall in address field `f` (the address in place, bits below
 * the field's lsb and above its top dropped, as the kernel's masks drop them) into `out`.
 */
function putAddr(out: Uint32Array, f: Field, pa: number, topBit = 64): void {
  if (!Number.isInteger(pa) || pa < 0 || pa >= 2 ** 53) bug(`${f.name}: bad address ${pa}`);
  const q = f.lsb >>> 6;
  const lo = (pa % TWO32) >>> 0;
  let hi = Math.floor(pa / TWO32) >>> 0;
  if (topBit < 64) hi &= (1 << (topBit - 32)) - 1;
  out[2 * q] = ((out[2 * q] as number) | (lo & wordMask(f, 2 * q))) >>> 0;
  out[2 * q + 1] = ((out[2 * q + 1] as number) | (hi & wordMask(f, 2 * q + 1))) >>> 0;
}

function zero(out: Uint32Array): void {
  if (out.length !== ENTRY_WORDS) bug(`entry maker: output has ${out.length} words`);
  out.fill(0);
}

/**
 * An abort STE: V = 1, Config = abort. Also what Linux puts in every STE of a new stream table.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_make_abort_ste
 */
export function makeAbortSte(out: Uint32Array): void {
  zero(out);
  put(out, S_V, 1);
  put(out, S_CONFIG, STE_CFG_ABORT);
}

/**
 * A bypass STE: V = 1, Config = bypass, SHCFG = incoming when the SMMU can override attributes.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_make_bypass_ste
 */
export function makeBypassSte(out: Uint32Array, feat: SmmuEntryFeatures): void {
  zero(out);
  put(out, S_V, 1);
  put(out, S_CONFIG, STE_CFG_BYPASS);
  if (feat.attrTypesOvr) put(out, S_SHCFG, SHCFG_INCOMING);
}

/**
 * A stage 1 STE pointing at a CD table: S1Fmt, S1ContextPtr (masked to [51:6]), S1CDMax; S1DSS as
 * given; CD fetches WB-RA inner and outer, inner shareable; S1STALLD when the SMMU supports stalls
 * but the master does not use them; EATS = full ATS when ATS is enabled; SHCFG = incoming when
 * S1DSS = bypass and the SMMU overrides attributes; StreamWorld EL2 with E2H, else NS-EL1 with
 * S2VMID 0 (VMID 0 is reserved for these STEs).
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_make_cdtable_ste
 */
export function makeCdtableSte(
  out: Uint32Array,
  p: CdtableSteParams,
  feat: SmmuEntryFeatures,
): void {
  zero(out);
  put(out, S_V, 1);
  put(out, S_CONFIG, STE_CFG_S1_TRANS);
  put(out, S_S1FMT, p.s1fmt);
  putAddr(out, S_S1CTXPTR, p.cdTablePa, 52);
  put(out, S_S1CDMAX, p.s1cdmax);
  put(out, S_S1DSS, p.s1dss);
  put(out, S_S1CIR, 1);
  put(out, S_S1COR, 1);
  put(out, S_S1CSH, 3);
  if (feat.stalls && !p.stallEnabled) put(out, S_S1STALLD, 1);
  put(out, S_EATS, p.ats ? EATS_TRANS : EATS_ABT);
  if (feat.attrTypesOvr && p.s1dss === S1DSS_BYPASS) put(out, S_SHCFG, SHCFG_INCOMING);
  // The StreamWorld follows the CPU so that broadcast TLB maintenance matches the ASIDs (BTM).
  put(out, S_STRW, feat.e2h ? STRW_EL2 : STRW_NSEL1);
  if (!feat.e2h) put(out, S_S2VMID, 0);
}

/**
 * A stage 2 STE: EATS = full ATS when ATS is enabled; S2FWB for a nest-parent domain on an SMMU
 * with FEAT_S2FWB (the io-pgtable S2FWB quirk); SHCFG = incoming when the SMMU overrides
 * attributes; S2VMID and the VTCR fields; S2AA64; S2PTW (the guest's stage 1 walks can only reach
 * normal memory); S2S when the master stalls; S2R; S2TTB (masked to [51:4]).
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_make_s2_domain_ste
 */
export function makeS2DomainSte(
  out: Uint32Array,
  p: S2DomainSteParams,
  feat: SmmuEntryFeatures,
): void {
  zero(out);
  put(out, S_V, 1);
  put(out, S_CONFIG, STE_CFG_S2_TRANS);
  put(out, S_EATS, p.ats ? EATS_TRANS : EATS_ABT);
  // arm_smmu_domain_finalise sets IO_PGTABLE_QUIRK_ARM_S2FWB only for nesting parents.
  if (p.nestParent && feat.s2fwb) put(out, S_S2FWB, 1);
  if (feat.attrTypesOvr) put(out, S_SHCFG, SHCFG_INCOMING);
  put(out, S_S2VMID, p.vmid);
  put(out, S_S2T0SZ, p.t0sz);
  put(out, S_S2SL0, p.sl0);
  put(out, S_S2IR0, p.irgn);
  put(out, S_S2OR0, p.orgn);
  put(out, S_S2SH0, p.sh);
  put(out, S_S2TG, p.tg);
  put(out, S_S2PS, p.ps);
  put(out, S_S2AA64, 1);
  put(out, S_S2PTW, 1);
  if (p.stallEnabled) put(out, S_S2S, 1);
  put(out, S_S2R, 1);
  putAddr(out, S_S2TTB, p.vttbr, 52);
}

/**
 * Check a guest's vSTE (words 0-3, changed in place as the kernel changes it): V = 0 clears it
 * and is accepted; otherwise only the NESTING_ALLOWED bits, Config abort / bypass / stage 1, and
 * EATS abort or full ATS are accepted, and EATS is cleared (the host sets it). Returns whether
 * the vSTE asks for ATS (stage 1 with EATS = full ATS), or EIO.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c arm_smmu_validate_vste
 */
export function validateVste(vste: Uint32Array): boolean | "EIO" {
  if (vste.length < 4) bug(`vSTE has ${vste.length} words`);
  if (((vste[S_V.word] as number) & S_V.inPlace) === 0) {
    vste.fill(0, 0, 4);
    return false;
  }
  for (let i = 0; i < 4; i++) {
    if (((vste[i] as number) & ~(NESTING_ALLOWED[i] as number)) !== 0) return "EIO";
  }
  const cfg = ((vste[S_CONFIG.word] as number) >>> S_CONFIG.shift) & S_CONFIG.mask;
  if (cfg !== STE_CFG_ABORT && cfg !== STE_CFG_BYPASS && cfg !== STE_CFG_S1_TRANS) return "EIO";
  const eats = ((vste[S_EATS.word] as number) >>> S_EATS.shift) & S_EATS.mask;
  vste[S_EATS.word] = ((vste[S_EATS.word] as number) & ~S_EATS.inPlace) >>> 0;
  if (eats !== EATS_ABT && eats !== EATS_TRANS) return "EIO";
  return cfg === STE_CFG_S1_TRANS && eats === EATS_TRANS;
}

/**
 * The physical STE of a nested domain, from a validated vSTE: a vSTE with V = 0 or Config =
 * abort gives an abort STE; bypass gives the parent's stage 2 STE; stage 1 gives the stage 2 STE
 * with Config = nested, the guest's qword 0 (less Config) and qword 1 merged in, and MEV set
 * (merging the guest's fault records limits how fast it can fill the event queue). The vSTE's
 * EATS is ignored: ATS comes from `s2.ats`.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c arm_smmu_make_nested_domain_ste
 */
export function makeNestedSte(out: Uint32Array, p: NestedSteParams, feat: SmmuEntryFeatures): void {
  const v = p.vste;
  if (v.length < 4) bug(`vSTE has ${v.length} words`);
  const valid = ((v[S_V.word] as number) & S_V.inPlace) !== 0;
  const cfg = valid ? ((v[S_CONFIG.word] as number) >>> S_CONFIG.shift) & S_CONFIG.mask : 0;
  if (cfg === STE_CFG_S1_TRANS) {
    makeNestedCdTableSte(out, p, feat);
  } else if (cfg === STE_CFG_BYPASS) {
    makeS2DomainSte(out, p.s2, feat);
  } else {
    makeAbortSte(out);
  }
}

/**
 * The nested STE of a stage 1 vSTE (see makeNestedSte).
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c arm_smmu_make_nested_cd_table_ste
 */
function makeNestedCdTableSte(out: Uint32Array, p: NestedSteParams, feat: SmmuEntryFeatures): void {
  const v = p.vste;
  makeS2DomainSte(out, p.s2, feat);
  out[0] = 0;
  out[1] = 0;
  put(out, S_V, 1);
  put(out, S_CONFIG, STE_CFG_NESTED);
  out[0] = ((out[0] as number) | ((v[0] as number) & ~S_CONFIG.inPlace)) >>> 0;
  out[1] = ((out[1] as number) | (v[1] as number)) >>> 0;
  out[2] = ((out[2] as number) | ((v[2] as number) & ~S_EATS.inPlace)) >>> 0;
  out[3] = ((out[3] as number) | (v[3] as number)) >>> 0;
  put(out, S_MEV, 1);
}

/**
 * A stage 1 paging-domain CD: T0SZ/TG0/IR0/OR0/SH0/IPS from the io-pgtable TCR, EPD1 (no TTB1),
 * V, AA64, S when the master stalls, R, A, ASET (invalidation by command only, no broadcast TLBI),
 * the ASID; HA and HD together for dirty tracking; TTB0 (masked to [51:4]); MAIR in qword 3.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_make_s1_cd
 */
export function makeS1Cd(out: Uint32Array, p: S1CdParams): void {
  zero(out);
  put(out, C_T0SZ, p.t0sz);
  put(out, C_TG0, p.tg0);
  put(out, C_IR0, p.irgn0);
  put(out, C_OR0, p.orgn0);
  put(out, C_SH0, p.sh0);
  put(out, C_EPD1, 1);
  put(out, C_V, 1);
  put(out, C_IPS, p.ips);
  put(out, C_AA64, 1);
  if (p.stallEnabled) put(out, C_S, 1);
  put(out, C_R, 1);
  put(out, C_A, 1);
  put(out, C_ASET, 1);
  put(out, C_ASID, p.asid);
  if (p.hd) {
    // Dirty state updates need Access flag updates too.
    put(out, C_HA, 1);
    put(out, C_HD, 1);
  }
  putAddr(out, C_TTB0, p.ttb0, 52);
  put(out, C_MAIR0, p.mair[0] >>> 0);
  put(out, C_MAIR1, p.mair[1] >>> 0);
}

/**
 * An SVA CD sharing a process's page tables: EPD1, V, IPS = the CPUs' PARange, AA64, S when the
 * master stalls, R, A, ASET, the ASID, MAIR_EL1; with an mm, T0SZ = 64 - vabits, TG0 = PAGE_SIZE,
 * IR0 = OR0 = WB-WA, SH0 = inner shareable, TTB0 = the pgd, and HA / HD / HAFT as the SMMU (and
 * CPU) support them. With mm = null (released) EPD0 instead of the walk fields: the CD stays valid
 * (no C_BAD_CD storms) but every access faults, and since EPD0 makes the walk fields ignored the
 * change is hitless; S and R are cleared too unless the SMMU forces stalls, so a device still
 * doing DMA is aborted quickly.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_make_sva_cd
 */
export function makeSvaCd(out: Uint32Array, p: SvaCdParams, feat: SmmuEntryFeatures): void {
  zero(out);
  put(out, C_EPD1, 1);
  put(out, C_V, 1);
  put(out, C_IPS, p.ips);
  put(out, C_AA64, 1);
  if (p.stallEnabled) put(out, C_S, 1);
  put(out, C_R, 1);
  put(out, C_A, 1);
  put(out, C_ASET, 1);
  put(out, C_ASID, p.asid);
  const mm = p.mm;
  if (mm !== null) {
    const tg0 = TG0_OF_SHIFT[mm.pageShift];
    if (tg0 === undefined) bug(`SVA CD: no TG0 for page shift ${mm.pageShift}`);
    put(out, C_T0SZ, 64 - mm.vaBits);
    put(out, C_TG0, tg0);
    put(out, C_IR0, 1);
    put(out, C_OR0, 1);
    put(out, C_SH0, 3);
    putAddr(out, C_TTB0, mm.pgd, 52);
    if (feat.ha) put(out, C_HA, 1);
    if (feat.hd) put(out, C_HD, 1);
    if (feat.haft) put(out, C_HAFT, 1);
  } else {
    put(out, C_EPD0, 1);
    if (!feat.stallForce) {
      put(out, C_S, 0);
      put(out, C_R, 0);
    }
  }
  put(out, C_MAIR0, p.mair[0] >>> 0);
  put(out, C_MAIR1, p.mair[1] >>> 0);
}

/**
 * An invalid CD (all zero), as written when a PASID is detached.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_clear_cd
 */
export function clearCd(out: Uint32Array): void {
  zero(out);
}
