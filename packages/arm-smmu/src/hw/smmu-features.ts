// What an SMMUv3 reports it can do (SMMU_IDR0-5, IIDR, AIDR), as a readable feature set, with the
// register values built from it through the format's IDR layouts.

import { encode } from "@iommu-sim/iommu-core/platform";
import type { CommandFeatures } from "../format/commands.js";
import {
  ADDR_SIZE_BITS,
  AIDR_REG,
  IDR0_REG,
  IDR1_REG,
  IDR3_REG,
  IDR5_REG,
  IIDR_REG,
} from "../format/registers.js";

/** A translation granule the SMMU implements (SMMU_IDR5.GRAN4K/16K/64K). */
export type SmmuGranule = "4K" | "16K" | "64K";

/**
 * The feature set of one SMMUv3 (Non-secure programming interface). Each field's doc names the
 * ID register bit it drives. Facts the model fixes rather than configures: IDR0.TTENDIAN is
 * little-endian only (ENDI/S2ENDI = 1 are ILLEGAL), NS1ATS is 1 (no split-stage ATS, so EATS 0b10
 * is ILLEGAL), no VATOS/ATOS, no MPAM, no DPT, no D128/DS, Secure/Realm state absent.
 *
 * @spec Arm SMMUv3 (IHI 0070) 6.3.1-6.3.8
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_device_hw_probe
 */
export interface SmmuFeatures {
  /** IDR0.S1P: stage 1 translation. */
  readonly s1p: boolean;
  /** IDR0.S2P: stage 2 translation. */
  readonly s2p: boolean;
  /** IDR0.TTF: 2 AArch64 tables only, 3 AArch32 LPAE and AArch64 (the walker walks AArch64 only). */
  readonly ttf: 2 | 3;
  /** IDR0.COHACC: coherent table and queue accesses. */
  readonly cohacc: boolean;
  /** IDR0.BTM: broadcast TLB maintenance (reported; no broadcast source is modelled). */
  readonly btm: boolean;
  /** IDR0.HTTU: 0 none, 1 Access flag, 2 Access flag and dirty state. */
  readonly httu: 0 | 1 | 2;
  /** IDR0.Hyp: EL2 stream worlds and the TLBI_EL2_* commands. */
  readonly hyp: boolean;
  /** IDR0.ATS. */
  readonly ats: boolean;
  /** IDR0.PRI (needs ATS). */
  readonly pri: boolean;
  /**
   * IDR0.ATSRECERR: CR2.REC_CFG_ATS exists, so configuration errors met by ATS Translation
   * Requests, ATS Translated transactions and PRI auto-responses may be recorded (3.9.1.2,
   * 3.9.1.3, 8.1). Without it REC_CFG_ATS is RES0 and those errors are never recorded.
   */
  readonly atsRecErr: boolean;
  /** IDR0.ASID16: 16-bit ASIDs, else 8. */
  readonly asidBits: 8 | 16;
  /** IDR0.VMID16: 16-bit VMIDs, else 8. */
  readonly vmidBits: 8 | 16;
  /** IDR0.MSI: message-signalled interrupts and CMD_SYNC MSI writes. */
  readonly msi: boolean;
  /** IDR0.SEV. */
  readonly sev: boolean;
  /** IDR0.CD2L: 2-level CD tables. */
  readonly cd2l: boolean;
  /** IDR0.STALL_MODEL: 0 stall and terminate, 1 terminate only, 2 stall forced. */
  readonly stallModel: 0 | 1 | 2;
  /** IDR0.TERM_MODEL: 0 CD.A chooses abort or RAZ/WI, 1 terminate always aborts (CD.A = 0 ILLEGAL). */
  readonly termModel: 0 | 1;
  /** IDR0.ST_LEVEL == 1: 2-level stream tables. */
  readonly twoLevelStreamTable: boolean;
  /** IDR1.SIDSIZE: StreamID bits, 0..32. */
  readonly sidBits: number;
  /** IDR1.SSIDSIZE: SubstreamID bits, 0..20. */
  readonly ssidBits: number;
  /** IDR1.CMDQS / EVENTQS / PRIQS: log2 of the largest queue, 0..19. */
  readonly cmdqs: number;
  readonly eventqs: number;
  readonly priqs: number;
  /** IDR1.ATTR_TYPES_OVR / ATTR_PERMS_OVR. */
  readonly attrTypesOvr: boolean;
  readonly attrPermsOvr: boolean;
  /** IDR3.HAD: CD.HAD0/HAD1 honoured. */
  readonly had: boolean;
  /** IDR3.STT: small translation tables (T0SZ up to 48). */
  readonly stt: boolean;
  /** IDR3.RIL: range invalidation and the TTL hint. */
  readonly ril: boolean;
  /** IDR5.OAS in bits: 32, 36, 40, 42, 44, 48 or 52. */
  readonly oas: number;
  /** IDR5.GRAN4K/16K/64K. */
  readonly granules: readonly SmmuGranule[];
  /** IDR5.VAX == 1: 52-bit VAs with the 64K granule (T0SZ down to 12). */
  readonly vax: boolean;
  /** IDR5.STALL_MAX: stalled transactions held at once (further stalls terminate). */
  readonly stallMax: number;
  /** AIDR.ArchMinorRev (SMMUv3.x). */
  readonly archMinor: number;
  /** IIDR.ProductID (Linux matches 0x483 MMU-600 and 0x487 MMU-700 for errata). */
  readonly productId: number;
  /**
   * The IMPLEMENTATION DEFINED choice of 5 (intro) and 4.1.5: true treats non-zero RES0 bits of an
   * STE, CD, L1 descriptor or command as ILLEGAL (C_BAD_STE, C_BAD_CD, CERROR_ILL); false ignores
   * them. True catches a driver that leaves garbage in reserved bits.
   */
  readonly checkReserved: boolean;
}

/**
 * A full-featured SMMUv3.2 like the MMU-700 class: both stages, 2-level stream and CD tables,
 * 16-bit StreamIDs, 20-bit SubstreamIDs, ATS, PRI, the stall model, HTTU (AF and dirty), range
 * invalidation, 16-bit ASIDs and VMIDs, 48-bit OAS, every granule, queues up to 2^19 entries.
 */
export const DEFAULT_SMMU_FEATURES: SmmuFeatures = Object.freeze({
  s1p: true,
  s2p: true,
  ttf: 2,
  cohacc: true,
  btm: false,
  httu: 2,
  hyp: true,
  ats: true,
  pri: true,
  atsRecErr: true,
  asidBits: 16,
  vmidBits: 16,
  msi: true,
  sev: true,
  cd2l: true,
  stallModel: 0,
  termModel: 0,
  twoLevelStreamTable: true,
  sidBits: 16,
  ssidBits: 20,
  cmdqs: 19,
  eventqs: 19,
  priqs: 19,
  attrTypesOvr: true,
  attrPermsOvr: true,
  had: true,
  stt: false,
  ril: true,
  oas: 48,
  granules: Object.freeze(["4K", "16K", "64K"] as const),
  vax: false,
  stallMax: 64,
  archMinor: 2,
  productId: 0x487,
  checkReserved: true,
});

const bool = (b: boolean): number => (b ? 1 : 0);

/** One message naming the first bad feature, or null. */
export function validateSmmuFeatures(f: SmmuFeatures): string | null {
  const int = (v: unknown, lo: number, hi: number) =>
    typeof v === "number" && Number.isInteger(v) && v >= lo && v <= hi;
  for (const key of [
    "s1p",
    "s2p",
    "cohacc",
    "btm",
    "hyp",
    "ats",
    "pri",
    "atsRecErr",
    "msi",
    "sev",
    "cd2l",
    "twoLevelStreamTable",
    "attrTypesOvr",
    "attrPermsOvr",
    "had",
    "stt",
    "ril",
    "vax",
    "checkReserved",
  ] as const) {
    if (typeof f[key] !== "boolean") return `${key}: expected a boolean, got ${String(f[key])}`;
  }
  if (!f.s1p && !f.s2p) return "s1p/s2p: at least one stage must be implemented";
  if (f.ttf !== 2 && f.ttf !== 3) return `ttf: expected 2 or 3 (AArch64 tables), got ${f.ttf}`;
  if (f.httu !== 0 && f.httu !== 1 && f.httu !== 2)
    return `httu: expected 0, 1 or 2, got ${f.httu}`;
  if (f.pri && !f.ats) return "pri: PRI needs ATS";
  if (f.asidBits !== 8 && f.asidBits !== 16) return `asidBits: expected 8 or 16, got ${f.asidBits}`;
  if (f.vmidBits !== 8 && f.vmidBits !== 16) return `vmidBits: expected 8 or 16, got ${f.vmidBits}`;
  if (f.stallModel !== 0 && f.stallModel !== 1 && f.stallModel !== 2)
    return `stallModel: expected 0, 1 or 2, got ${f.stallModel}`;
  if (f.termModel !== 0 && f.termModel !== 1)
    return `termModel: expected 0 or 1, got ${f.termModel}`;
  if (!int(f.sidBits, 0, 32)) return `sidBits: expected an integer in [0, 32], got ${f.sidBits}`;
  if (!int(f.ssidBits, 0, 20)) return `ssidBits: expected an integer in [0, 20], got ${f.ssidBits}`;
  for (const key of ["cmdqs", "eventqs", "priqs"] as const) {
    if (!int(f[key], 0, 19)) return `${key}: expected an integer in [0, 19], got ${f[key]}`;
  }
  if (!ADDR_SIZE_BITS.slice(0, 7).includes(f.oas))
    return `oas: expected one of 32, 36, 40, 42, 44, 48, 52, got ${f.oas}`;
  if (!Array.isArray(f.granules) || f.granules.length === 0)
    return "granules: expected at least one of 4K, 16K, 64K";
  for (const g of f.granules) {
    if (g !== "4K" && g !== "16K" && g !== "64K") return `granules: unknown granule ${String(g)}`;
  }
  if (!int(f.stallMax, 0, 0xffff))
    return `stallMax: expected an integer in [0, 65535], got ${f.stallMax}`;
  if (!int(f.archMinor, 0, 15))
    return `archMinor: expected an integer in [0, 15], got ${f.archMinor}`;
  if (!int(f.productId, 0, 0xfff))
    return `productId: expected an integer in [0, 4095], got ${f.productId}`;
  return null;
}

/** The feature set with `partial` over the defaults, validated; a message on a bad field. */
export function resolveSmmuFeatures(partial: Partial<SmmuFeatures> = {}): SmmuFeatures | string {
  const f = Object.freeze({ ...DEFAULT_SMMU_FEATURES, ...partial });
  return validateSmmuFeatures(f) ?? f;
}

/**
 * SMMU_IDR0..IDR5 (index 0..5), IIDR (6) and AIDR (7) for a feature set.
 *
 * @spec Arm SMMUv3 (IHI 0070) 6.3.1-6.3.8
 */
export function smmuIdRegs(f: SmmuFeatures): Uint32Array {
  const out = new Uint32Array(8);
  out[0] = encode(IDR0_REG, {
    S2P: bool(f.s2p),
    S1P: bool(f.s1p),
    TTF: f.ttf,
    COHACC: bool(f.cohacc),
    BTM: bool(f.btm),
    HTTU: f.httu,
    Hyp: bool(f.hyp),
    ATS: bool(f.ats),
    ATSRECERR: bool(f.ats && f.atsRecErr),
    NS1ATS: 1,
    ASID16: bool(f.asidBits === 16),
    MSI: bool(f.msi),
    SEV: bool(f.sev),
    PRI: bool(f.pri),
    VMID16: bool(f.vmidBits === 16),
    CD2L: bool(f.cd2l),
    TTENDIAN: 2,
    STALL_MODEL: f.stallModel,
    TERM_MODEL: f.termModel,
    ST_LEVEL: bool(f.twoLevelStreamTable),
  })[0] as number;
  out[1] = encode(IDR1_REG, {
    SIDSIZE: f.sidBits,
    SSIDSIZE: f.ssidBits,
    PRIQS: f.pri ? f.priqs : 0,
    EVENTQS: f.eventqs,
    CMDQS: f.cmdqs,
    ATTR_PERMS_OVR: bool(f.attrPermsOvr),
    ATTR_TYPES_OVR: bool(f.attrTypesOvr),
  })[0] as number;
  out[2] = 0;
  out[3] = encode(IDR3_REG, { HAD: bool(f.had), STT: bool(f.stt), RIL: bool(f.ril) })[0] as number;
  out[4] = 0;
  out[5] = encode(IDR5_REG, {
    OAS: ADDR_SIZE_BITS.indexOf(f.oas),
    GRAN4K: bool(f.granules.includes("4K")),
    GRAN16K: bool(f.granules.includes("16K")),
    GRAN64K: bool(f.granules.includes("64K")),
    VAX: bool(f.vax),
    STALL_MAX: f.stallMax,
  })[0] as number;
  out[6] = encode(IIDR_REG, { Implementer: 0x43b, ProductID: f.productId })[0] as number;
  out[7] = encode(AIDR_REG, { ArchMinorRev: f.archMinor, ArchMajorRev: 0 })[0] as number;
  return out;
}

/** What `commandError` needs to know of a feature set. */
export function smmuCommandFeatures(f: SmmuFeatures): CommandFeatures {
  return Object.freeze({
    s1p: f.s1p,
    s2p: f.s2p,
    hyp: f.hyp,
    ats: f.ats,
    pri: f.pri,
    stallModel: f.stallModel,
    ril: f.ril,
    ds: false,
    checkReserved: f.checkReserved,
  });
}

/** log2 of a granule's size. */
export function granuleShift(g: SmmuGranule): number {
  return g === "4K" ? 12 : g === "16K" ? 14 : 16;
}
