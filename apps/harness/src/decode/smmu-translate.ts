// Translating requests against a memory image with the SMMUv3 hardware model itself: an SmmuV3
// with minimal caches whose features come from ID register values, brought up through its
// registers on the image's stream table as a driver would, and asked for a side-effect-free
// translation per query.

import {
  ADDR_SIZE_BITS,
  AIDR_REG,
  CR0_SMMUEN,
  IDR0_REG,
  IDR1_REG,
  IDR3_REG,
  IDR5_REG,
  IIDR_REG,
  SMMU_REG,
} from "@iommu-sim/arm-smmu/format";
import {
  DEFAULT_SMMU_FEATURES,
  MINIMAL_SMMU_CACHE_CONFIG,
  SMMU_ABORT_SILENT,
  type SmmuFeatures,
  type SmmuGranule,
  SmmuV3,
  smmuIdRegs,
  validateSmmuFeatures,
} from "@iommu-sim/arm-smmu/hw";
import { XLATE_OK } from "@iommu-sim/iommu-core";
import { decode, type PhysMemory, toHex } from "@iommu-sim/iommu-core/platform";
import {
  parseBdf,
  parseBounded,
  parseIdQuery,
  perQuery,
  pollUntil,
  type QueryAccessOptions,
  QueryRunner,
  translationGrant,
} from "./decode-common.js";
import { lookupSmmuTranslation, type SmmuEventRef, smmuEventRef } from "./smmu-decode.js";

/** One request to translate: `SID[:SSID]@IOVA`. */
export interface SmmuQuery {
  /** StreamID. */
  readonly sid: number;
  /** SubstreamID, or null for a request without one. */
  readonly ssid: number | null;
  /** Input address, any 64-bit value. */
  readonly iova: bigint;
}

/** What a query answers: a translation, or the event the SMMU reports (null: none, an abort STE). */
export type SmmuTranslateResult =
  | {
      readonly query: string;
      readonly sid: number;
      readonly ssid: number | null;
      readonly iova: string;
      readonly result: "ok";
      readonly pa: string;
      readonly pageSize: number;
      readonly r: boolean;
      readonly w: boolean;
      readonly bypass: boolean;
    }
  | {
      readonly query: string;
      readonly sid: number;
      readonly ssid: number | null;
      readonly iova: string;
      readonly result: "fault";
      readonly event: SmmuEventRef | null;
    };

const SSID_MAX = 0xfffff;

/**
 * A StreamID written as a number (decimal or 0x hex, at most 0xffffffff), or as a PCI address
 * `BB:DD.F` for a StreamID equal to the requester ID (the usual IORT mapping). Returns the
 * StreamID or what is wrong.
 */
export function parseStreamId(text: string): number | string {
  return (
    parseBdf(text) ??
    parseBounded(text, 0xffffffffn, "a StreamID: a number up to 0xffffffff, or BB:DD.F")
  );
}

/** A SubstreamID (decimal or 0x hex, at most 2^20 - 1), or what is wrong. */
export function parseSubstreamId(text: string): number | string {
  return parseBounded(text, BigInt(SSID_MAX), "a SubstreamID: a number up to 0xfffff");
}

/**
 * Parse `SID[:SSID]@IOVA`: SID as `parseStreamId` takes it (a BDF's own colon is told apart by
 * its dot), SSID as `parseSubstreamId`, IOVA decimal or 0x hex up to 2^64 - 1. Returns the query
 * or a message naming the part that is wrong.
 */
export function parseSmmuQuery(text: string): SmmuQuery | string {
  const q = parseIdQuery(text, "expected SID[:SSID]@IOVA", parseStreamId, parseSubstreamId);
  return typeof q === "string" ? q : { sid: q.sid, ssid: q.sub, iova: q.iova };
}

/**
 * The feature set SMMU_IDR0..IDR5 describe (`idr[0..5]`; `idr[6]` IIDR and `idr[7]` AIDR when
 * given), the inverse of `smmuIdRegs`: `smmuIdRegs(smmuFeaturesFromIdr(smmuIdRegs(f)))` equals
 * `smmuIdRegs(f)`. A missing register takes `DEFAULT_SMMU_FEATURES`' value. What the registers
 * cannot say is the model's choice: `checkReserved` (non-zero RES0 bits of an STE or CD are
 * ILLEGAL) from `base`. Returns a message starting `IDRn.FIELD` for a value the model cannot
 * stand for (AArch32-only or big-endian-only tables, a reserved encoding, a 56-bit OAS) or that
 * describes no SMMU. Bits without effect on translation (MSI, ATOS, VATOS, IDR3 beyond HAD, STT
 * and RIL, REL and the *_PRESET bits) are ignored; IDR0.HTTU 3 counts as 2 (no table Access flag
 * update in the model) and NS1ATS is taken as 1.
 *
 * @spec Arm SMMUv3 (IHI 0070) 6.3.1-6.3.8
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_device_hw_probe
 */
export function smmuFeaturesFromIdr(
  idr: readonly number[],
  base: { readonly checkReserved?: boolean } = {},
): SmmuFeatures | string {
  const defaults = DEFAULT_SMMU_IDR;
  const reg = (i: number): number[] => {
    const v = idr[i] ?? (defaults[i] as number);
    return [v >>> 0];
  };
  for (let i = 0; i < Math.min(idr.length, 8); i++) {
    const v = idr[i];
    if (v !== undefined && !(Number.isInteger(v) && v >= 0 && v <= 0xffffffff))
      return `IDR${i}: ${v} is not a 32-bit register value`;
  }
  const i0 = decode(IDR0_REG, reg(0));
  const i1 = decode(IDR1_REG, reg(1));
  const i3 = decode(IDR3_REG, reg(3));
  const i5 = decode(IDR5_REG, reg(5));
  const iidr = decode(IIDR_REG, reg(6));
  const aidr = decode(AIDR_REG, reg(7));
  const n = (v: unknown) => Number(v);
  const ttf = n(i0.TTF);
  if (ttf === 0) return "IDR0.TTF 0 is reserved";
  if (ttf === 1)
    return "IDR0.TTF 1 (VMSAv8-32 LPAE tables only): the model walks VMSAv8-64 tables only";
  const endian = n(i0.TTENDIAN);
  if (endian === 1) return "IDR0.TTENDIAN 1 is reserved";
  if (endian === 3) return "IDR0.TTENDIAN 3 (big-endian only): the model is little-endian only";
  const stall = n(i0.STALL_MODEL);
  if (stall === 3) return "IDR0.STALL_MODEL 3 is reserved";
  const stLevel = n(i0.ST_LEVEL);
  if (stLevel > 1) return `IDR0.ST_LEVEL ${stLevel} is reserved`;
  const sidBits = n(i1.SIDSIZE);
  if (sidBits > 32) return `IDR1.SIDSIZE ${sidBits} is above 32`;
  const ssidBits = n(i1.SSIDSIZE);
  if (ssidBits > 20) return `IDR1.SSIDSIZE ${ssidBits} is above 20`;
  for (const q of ["CMDQS", "EVENTQS", "PRIQS"] as const) {
    if (n(i1[q]) > 19) return `IDR1.${q} ${n(i1[q])} is above 19`;
  }
  const oasCode = n(i5.OAS);
  if (oasCode === 7) return "IDR5.OAS 7 (56 bits) is beyond the model's 52-bit physical addresses";
  const vax = n(i5.VAX);
  if (vax > 1) return `IDR5.VAX ${vax} (56-bit VAs) is not modelled`;
  const granules: SmmuGranule[] = [];
  if (n(i5.GRAN4K)) granules.push("4K");
  if (n(i5.GRAN16K)) granules.push("16K");
  if (n(i5.GRAN64K)) granules.push("64K");
  if (granules.length === 0) return "IDR5.GRAN4K/GRAN16K/GRAN64K: no granule is implemented";
  const ats = n(i0.ATS) !== 0;
  const pri = n(i0.PRI) !== 0;
  if (pri && !ats) return "IDR0.PRI is 1 but IDR0.ATS is 0: PRI needs ATS";
  const s1p = n(i0.S1P) !== 0;
  const s2p = n(i0.S2P) !== 0;
  if (!s1p && !s2p) return "IDR0.S1P and IDR0.S2P are both 0: no stage is implemented";
  const f: SmmuFeatures = Object.freeze({
    s1p,
    s2p,
    ttf: ttf as 2 | 3,
    cohacc: n(i0.COHACC) !== 0,
    btm: n(i0.BTM) !== 0,
    httu: Math.min(2, n(i0.HTTU)) as 0 | 1 | 2,
    hyp: n(i0.Hyp) !== 0,
    ats,
    pri,
    atsRecErr: n(i0.ATSRECERR) !== 0,
    asidBits: n(i0.ASID16) !== 0 ? 16 : 8,
    vmidBits: n(i0.VMID16) !== 0 ? 16 : 8,
    msi: n(i0.MSI) !== 0,
    sev: n(i0.SEV) !== 0,
    cd2l: n(i0.CD2L) !== 0,
    stallModel: stall as 0 | 1 | 2,
    termModel: n(i0.TERM_MODEL) as 0 | 1,
    twoLevelStreamTable: stLevel === 1,
    sidBits,
    ssidBits,
    cmdqs: n(i1.CMDQS),
    eventqs: n(i1.EVENTQS),
    priqs: n(i1.PRIQS),
    attrTypesOvr: n(i1.ATTR_TYPES_OVR) !== 0,
    attrPermsOvr: n(i1.ATTR_PERMS_OVR) !== 0,
    had: n(i3.HAD) !== 0,
    stt: n(i3.STT) !== 0,
    ril: n(i3.RIL) !== 0,
    oas: ADDR_SIZE_BITS[oasCode] as number,
    granules: Object.freeze(granules),
    vax: vax === 1,
    stallMax: n(i5.STALL_MAX),
    archMinor: n(aidr.ArchMinorRev),
    productId: n(iidr.ProductID),
    checkReserved: base.checkReserved ?? DEFAULT_SMMU_FEATURES.checkReserved,
  });
  // Every field is checked above; this keeps the two definitions of a valid SMMU in step.
  const problem = validateSmmuFeatures(f);
  return problem === null ? f : `IDR0..IDR5 describe no SMMU: ${problem}`;
}

/** The ID registers of `DEFAULT_SMMU_FEATURES`: IDR0..IDR5, IIDR, AIDR. */
export const DEFAULT_SMMU_IDR: readonly number[] = Object.freeze([
  ...smmuIdRegs(DEFAULT_SMMU_FEATURES),
]);

/** Options of `SmmuTranslator` (and the access of every query: `write`, `exec`, `priv`). */
export interface SmmuTranslatorOptions extends QueryAccessOptions {
  /** SMMU_STRTAB_BASE and SMMU_STRTAB_BASE_CFG values. */
  readonly strtabBase: bigint;
  readonly strtabCfg: bigint;
  /** The SMMU's features (`smmuFeaturesFromIdr`); default `DEFAULT_SMMU_FEATURES`. */
  readonly features?: SmmuFeatures;
}

/**
 * An SmmuV3 on an image's tables, answering `SID[:SSID]@IOVA` queries. The SMMU has minimal
 * caches and is brought up only through its registers, as a driver does: CR0 cleared and CR0ACK
 * polled, STRTAB_BASE (low then high half) and STRTAB_BASE_CFG written, then CR0.SMMUEN set and
 * CR0ACK polled. Each query is one untranslated request through `translateUncached`: no event is
 * recorded, no Access flag or dirty state set, no stall.
 *
 * @spec Arm SMMUv3 (IHI 0070) 6.3.9-6.3.10 (CR0, CR0ACK), 6.3.24-6.3.25 (STRTAB_BASE(_CFG))
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_device_reset
 */
export class SmmuTranslator {
  readonly smmu: SmmuV3;
  readonly features: SmmuFeatures;
  private readonly mem: PhysMemory;
  private readonly options: SmmuTranslatorOptions;
  private readonly queries: QueryRunner;
  /** Whether (sid, ssid) bypasses every stage, from the structures: "sid" or "sid:ssid" keys. */
  private readonly bypass = new Map<string, boolean>();

  private constructor(mem: PhysMemory, features: SmmuFeatures, options: SmmuTranslatorOptions) {
    this.mem = mem;
    this.features = features;
    this.options = options;
    this.queries = new QueryRunner(options);
    const smmu = new SmmuV3({
      name: "smmu-translate",
      mem,
      features,
      cache: MINIMAL_SMMU_CACHE_CONFIG,
      autoProcessQueue: false,
    });
    this.smmu = smmu;
    const base = BigInt.asUintN(64, options.strtabBase);
    smmu.write32(SMMU_REG.CR0, 0);
    waitForAck(smmu, 0);
    smmu.write32(SMMU_REG.STRTAB_BASE, Number(base & 0xffffffffn));
    smmu.write32(SMMU_REG.STRTAB_BASE + 4, Number(base >> 32n));
    smmu.write32(SMMU_REG.STRTAB_BASE_CFG, Number(BigInt.asUintN(32, options.strtabCfg)));
    smmu.write32(SMMU_REG.CR0, CR0_SMMUEN);
    waitForAck(smmu, CR0_SMMUEN);
  }

  /** A translator on `mem`, or why the features or register values describe no SMMU. */
  static create(mem: PhysMemory, options: SmmuTranslatorOptions): SmmuTranslator | string {
    const features = options.features ?? DEFAULT_SMMU_FEATURES;
    const problem = validateSmmuFeatures(features);
    if (problem !== null) return `the features describe no SMMU: ${problem}`;
    if (options.strtabBase < 0n || options.strtabBase > 0xffff_ffff_ffff_ffffn)
      return `STRTAB_BASE ${options.strtabBase} does not fit a 64-bit register`;
    if (options.strtabCfg < 0n || options.strtabCfg > 0xffff_ffffn)
      return `STRTAB_BASE_CFG ${toHex(options.strtabCfg)} does not fit a 32-bit register`;
    return new SmmuTranslator(mem, features, options);
  }

  /** Run one query through the SMMU; `text` is echoed as `query` (default: the query rebuilt). */
  translate(q: SmmuQuery, text?: string): SmmuTranslateResult {
    const out = this.queries.run(this.smmu, q.sid & 0xffff, q.sid, q.ssid, q.iova);
    const query = text ?? `${toHex(q.sid)}${q.ssid === null ? "" : `:${q.ssid}`}@${toHex(q.iova)}`;
    const head = { query, sid: q.sid, ssid: q.ssid, iova: toHex(q.iova) };
    if (out.status !== XLATE_OK) {
      return {
        ...head,
        result: "fault",
        event: out.code === SMMU_ABORT_SILENT ? null : smmuEventRef(out.code),
      };
    }
    return {
      ...head,
      result: "ok",
      pa: toHex(out.pa),
      ...translationGrant(out),
      bypass: this.isBypass(q.sid, q.ssid),
    };
  }

  /** Whether the structures make (sid, ssid) bypass both stages (output = input). */
  private isBypass(sid: number, ssid: number | null): boolean {
    return perQuery(this.bypass, sid, ssid, () => {
      const t = lookupSmmuTranslation(this.mem, {
        strtabBase: this.options.strtabBase,
        strtabCfg: this.options.strtabCfg,
        sid,
        ssid,
        features: this.features,
      });
      return t?.type === "bypass";
    });
  }
}

/** Poll CR0ACK until it equals `value`, as the kernel's arm_smmu_write_reg_sync does. */
function waitForAck(smmu: SmmuV3, value: number): void {
  pollUntil(
    () => smmu.read32(SMMU_REG.CR0ACK) === value,
    `SMMU never acknowledged CR0 ${toHex(value)}`,
  );
}
