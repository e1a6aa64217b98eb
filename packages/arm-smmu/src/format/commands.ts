// Command queue entries: every SMMUv3 opcode, one 128-bit field table per command, and the
// spec's rule for when a command is illegal (CERROR_ILL).

import {
  bug,
  defineLayout,
  type FieldSpec,
  fieldOf,
  hasReservedBits,
  type Layout,
} from "@iommu-sim/iommu-core/platform";
import { CMDQ_CONS_ERR_ILL, CMDQ_CONS_ERR_NONE } from "./registers.js";

const SPEC = "Arm SMMUv3 (IHI 0070)";

/** Bytes per command. @spec Arm SMMUv3 (IHI 0070) 4.1.1 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CMDQ_ENT_SZ_SHIFT */
export const CMD_SIZE = 16;

/**
 * Command opcodes (bits [7:0] of every command). CFGI_ALL is CFGI_STE_RANGE with Range == 31 and
 * shares its opcode (QEMU's enum gives CFGI_ALL 0x07, which is CFGI_VMS_PIDM in the spec).
 *
 * @spec Arm SMMUv3 (IHI 0070) 4.1.1
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CMDQ_OP_CFGI_STE
 */
export const CMDQ_OP = Object.freeze({
  PREFETCH_CONFIG: 0x01,
  PREFETCH_ADDR: 0x02,
  CFGI_STE: 0x03,
  CFGI_STE_RANGE: 0x04,
  CFGI_ALL: 0x04,
  CFGI_CD: 0x05,
  CFGI_CD_ALL: 0x06,
  CFGI_VMS_PIDM: 0x07,
  TLBI_NH_ALL: 0x10,
  TLBI_NH_ASID: 0x11,
  TLBI_NH_VA: 0x12,
  TLBI_NH_VAA: 0x13,
  TLBI_EL3_ALL: 0x18,
  TLBI_EL3_VA: 0x1a,
  TLBI_EL2_ALL: 0x20,
  TLBI_EL2_ASID: 0x21,
  TLBI_EL2_VA: 0x22,
  TLBI_EL2_VAA: 0x23,
  TLBI_S12_VMALL: 0x28,
  TLBI_S2_IPA: 0x2a,
  TLBI_NSNH_ALL: 0x30,
  ATC_INV: 0x40,
  PRI_RESP: 0x41,
  RESUME: 0x44,
  STALL_TERM: 0x45,
  CMD_SYNC: 0x46,
  TLBI_S_EL2_ALL: 0x50,
  TLBI_S_EL2_ASID: 0x51,
  TLBI_S_EL2_VA: 0x52,
  TLBI_S_EL2_VAA: 0x53,
  TLBI_S_S12_VMALL: 0x58,
  TLBI_S_S2_IPA: 0x5a,
  TLBI_SNH_ALL: 0x60,
  DPTI_ALL: 0x70,
  DPTI_PA: 0x73,
} as const);

/** CFGI_STE_RANGE.Range that makes it CMD_CFGI_ALL. @spec Arm SMMUv3 (IHI 0070) 4.3.6 */
export const CFGI_ALL_RANGE = 31;

/** CMD_SYNC.CS: no completion signal. @spec Arm SMMUv3 (IHI 0070) 4.7.3 */
export const CMD_SYNC_CS_NONE = 0;
/** CMD_SYNC.CS: interrupt, as an MSI write of MSIData to MSIAddress when that is non-zero. @spec Arm SMMUv3 (IHI 0070) 4.7.3 */
export const CMD_SYNC_CS_IRQ = 1;
/** CMD_SYNC.CS: WFE wake-up event (no signal unless IDR0.SEV); 3 is reserved (CERROR_ILL). @spec Arm SMMUv3 (IHI 0070) 4.7.3 */
export const CMD_SYNC_CS_SEV = 2;

/**
 * CMD_PRI_RESP.Resp values under the kernel's names. The spec's meanings: 0 ResponseFailure
 * (permanent error), 1 InvalidRequest (page-in failed), 2 Success, 3 reserved (CERROR_ILL). Linux
 * sends 0 ("DENY") for IOMMU_PAGE_RESP_INVALID and 1 ("FAIL") for IOMMU_PAGE_RESP_FAILURE, the
 * reverse of the PCIe names the spec attaches to those codes.
 *
 * @spec Arm SMMUv3 (IHI 0070) 4.5.2
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h PRI_RESP_DENY
 */
export const PRI_RESP_DENY = 0;
/** @spec Arm SMMUv3 (IHI 0070) 4.5.2 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h PRI_RESP_FAIL */
export const PRI_RESP_FAIL = 1;
/** @spec Arm SMMUv3 (IHI 0070) 4.5.2 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h PRI_RESP_SUCC */
export const PRI_RESP_SUCC = 2;

/**
 * CMD_RESUME bits [13:12] as the kernel writes them, i.e. {Ab, Ac}: Ac (bit 12) 1 retries,
 * 0 terminates; when terminating Ab (bit 13) 1 aborts, 0 completes with RAZ/WI.
 *
 * @spec Arm SMMUv3 (IHI 0070) 4.7.1
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CMDQ_RESUME_0_RESP_TERM
 */
export const RESUME_ACTION_TERM = 0;
/** @spec Arm SMMUv3 (IHI 0070) 4.7.1 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CMDQ_RESUME_0_RESP_RETRY */
export const RESUME_ACTION_RETRY = 1;
/** @spec Arm SMMUv3 (IHI 0070) 4.7.1 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CMDQ_RESUME_0_RESP_ABORT */
export const RESUME_ACTION_ABORT = 2;

/** CMD_ATC_INV.Size meaning the whole address space. @spec Arm SMMUv3 (IHI 0070) 4.5.1 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h ATC_INV_SIZE_ALL */
export const ATC_INV_SIZE_ALL = 52;

// Field pieces, by bit number over the 128-bit command (dw1 starts at bit 64).
const OPCODE: FieldSpec = { name: "Opcode", lsb: 0, width: 8 };
const SSEC: FieldSpec = { name: "SSec", lsb: 10, width: 1, doc: "must be 0 on the NS queue" };
const SSV: FieldSpec = { name: "SSV", lsb: 11, width: 1 };
const SSID: FieldSpec = { name: "SubstreamID", lsb: 12, width: 20 };
const SID: FieldSpec = { name: "StreamID", lsb: 32, width: 32 };
const VMID: FieldSpec = { name: "VMID", lsb: 32, width: 16 };
const ASID: FieldSpec = { name: "ASID", lsb: 48, width: 16 };
const NUM: FieldSpec = { name: "NUM", lsb: 12, width: 5 };
const SCALE: FieldSpec = { name: "SCALE", lsb: 20, width: 6, doc: "bit 25 only with IDR5.DS" };
const LEAF: FieldSpec = { name: "Leaf", lsb: 64, width: 1 };
const TTL128: FieldSpec = { name: "TTL128", lsb: 71, width: 1 };
const TTL: FieldSpec = { name: "TTL", lsb: 72, width: 2 };
const TG: FieldSpec = {
  name: "TG",
  lsb: 74,
  width: 2,
  values: { 0: "none", 1: "4K", 2: "16K", 3: "64K" },
};
const VA: FieldSpec = { name: "Address", lsb: 76, width: 52, addr: true, doc: "VA[63:12]" };
const IPA: FieldSpec = { name: "IPA", lsb: 76, width: 44, addr: true, doc: "IPA[55:12]" };
const RANGE_VA = [NUM, SCALE, LEAF, TTL128, TTL, TG, VA];

function cmd(name: string, section: string, fields: readonly FieldSpec[]): Layout {
  return defineLayout({ name, bits: 128, spec: `${SPEC} ${section}`, fields: [OPCODE, ...fields] });
}

/** CMD_PREFETCH_CONFIG(StreamID, SSec, SubstreamID, SSV). @spec Arm SMMUv3 (IHI 0070) 4.2.1 */
export const CMD_PREFETCH_CONFIG = cmd("CMD_PREFETCH_CONFIG", "4.2.1", [SSEC, SSV, SSID, SID]);
/**
 * CMD_PREFETCH_ADDR(StreamID, SSec, SubstreamID, SSV, Addr, NS, Size, Stride). Size [68:64] and
 * Addr [127:76] are as Linux defines them; the positions of Stride and NS are in a figure the
 * text spec does not carry, so those bits count as reserved here.
 *
 * @spec Arm SMMUv3 (IHI 0070) 4.2.2
 */
export const CMD_PREFETCH_ADDR = cmd("CMD_PREFETCH_ADDR", "4.2.2", [
  SSEC,
  SSV,
  SSID,
  SID,
  { name: "Size", lsb: 64, width: 5 },
  VA,
]);
/** CMD_CFGI_STE(StreamID, SSec, Leaf). Leaf == 0 also invalidates the L1STD. @spec Arm SMMUv3 (IHI 0070) 4.3.1 */
export const CMD_CFGI_STE = cmd("CMD_CFGI_STE", "4.3.1", [SSEC, SID, LEAF]);
/** CMD_CFGI_STE_RANGE(StreamID, SSec, Range): 2^(Range+1) aligned StreamIDs; Range 31 is CFGI_ALL. @spec Arm SMMUv3 (IHI 0070) 4.3.2 */
export const CMD_CFGI_STE_RANGE = cmd("CMD_CFGI_STE_RANGE", "4.3.2", [
  SSEC,
  SID,
  { name: "Range", lsb: 64, width: 5 },
]);
/** CMD_CFGI_CD(StreamID, SSec, SubstreamID, Leaf): SubstreamID is a CD table index, no SSV. @spec Arm SMMUv3 (IHI 0070) 4.3.3 */
export const CMD_CFGI_CD = cmd("CMD_CFGI_CD", "4.3.3", [SSEC, SSID, SID, LEAF]);
/** CMD_CFGI_CD_ALL(StreamID, SSec). @spec Arm SMMUv3 (IHI 0070) 4.3.4 */
export const CMD_CFGI_CD_ALL = cmd("CMD_CFGI_CD_ALL", "4.3.4", [SSEC, SID]);
/** CMD_CFGI_VMS_PIDM(SSec, VMID). @spec Arm SMMUv3 (IHI 0070) 4.3.5 */
export const CMD_CFGI_VMS_PIDM = cmd("CMD_CFGI_VMS_PIDM", "4.3.5", [SSEC, VMID]);
/** CMD_TLBI_NH_ALL(VMID). @spec Arm SMMUv3 (IHI 0070) 4.4.2.1 */
export const CMD_TLBI_NH_ALL = cmd("CMD_TLBI_NH_ALL", "4.4.2.1", [VMID]);
/** CMD_TLBI_NH_ASID(VMID, ASID). @spec Arm SMMUv3 (IHI 0070) 4.4.2.2 */
export const CMD_TLBI_NH_ASID = cmd("CMD_TLBI_NH_ASID", "4.4.2.2", [VMID, ASID]);
/** CMD_TLBI_NH_VAA(VMID, Addr, Leaf) with range fields. @spec Arm SMMUv3 (IHI 0070) 4.4.2.3, 4.4.1.1 */
export const CMD_TLBI_NH_VAA = cmd("CMD_TLBI_NH_VAA", "4.4.2.3", [VMID, ...RANGE_VA]);
/** CMD_TLBI_NH_VA(VMID, ASID, Addr, Leaf) with range fields. @spec Arm SMMUv3 (IHI 0070) 4.4.2.4, 4.4.1.1 */
export const CMD_TLBI_NH_VA = cmd("CMD_TLBI_NH_VA", "4.4.2.4", [VMID, ASID, ...RANGE_VA]);
/** CMD_TLBI_EL3_ALL (Secure queue only). @spec Arm SMMUv3 (IHI 0070) 4.4.2.5 */
export const CMD_TLBI_EL3_ALL = cmd("CMD_TLBI_EL3_ALL", "4.4.2.5", []);
/** CMD_TLBI_EL3_VA(Addr, Leaf) (Secure queue only). @spec Arm SMMUv3 (IHI 0070) 4.4.2.6 */
export const CMD_TLBI_EL3_VA = cmd("CMD_TLBI_EL3_VA", "4.4.2.6", RANGE_VA);
/** CMD_TLBI_EL2_ALL. @spec Arm SMMUv3 (IHI 0070) 4.4.2.7 */
export const CMD_TLBI_EL2_ALL = cmd("CMD_TLBI_EL2_ALL", "4.4.2.7", []);
/** CMD_TLBI_EL2_VA(ASID, Addr, Leaf). @spec Arm SMMUv3 (IHI 0070) 4.4.2.8 */
export const CMD_TLBI_EL2_VA = cmd("CMD_TLBI_EL2_VA", "4.4.2.8", [ASID, ...RANGE_VA]);
/** CMD_TLBI_EL2_VAA(Addr, Leaf). @spec Arm SMMUv3 (IHI 0070) 4.4.2.9 */
export const CMD_TLBI_EL2_VAA = cmd("CMD_TLBI_EL2_VAA", "4.4.2.9", RANGE_VA);
/** CMD_TLBI_EL2_ASID(ASID). @spec Arm SMMUv3 (IHI 0070) 4.4.2.10 */
export const CMD_TLBI_EL2_ASID = cmd("CMD_TLBI_EL2_ASID", "4.4.2.10", [ASID]);
/** CMD_TLBI_S_EL2_* are encoded as their NS counterparts (Secure queue only). @spec Arm SMMUv3 (IHI 0070) 4.4.2.11-14 */
export const CMD_TLBI_S_EL2_ALL = cmd("CMD_TLBI_S_EL2_ALL", "4.4.2.11", []);
/** @spec Arm SMMUv3 (IHI 0070) 4.4.2.12 */
export const CMD_TLBI_S_EL2_VA = cmd("CMD_TLBI_S_EL2_VA", "4.4.2.12", [ASID, ...RANGE_VA]);
/** @spec Arm SMMUv3 (IHI 0070) 4.4.2.13 */
export const CMD_TLBI_S_EL2_VAA = cmd("CMD_TLBI_S_EL2_VAA", "4.4.2.13", RANGE_VA);
/** @spec Arm SMMUv3 (IHI 0070) 4.4.2.14 */
export const CMD_TLBI_S_EL2_ASID = cmd("CMD_TLBI_S_EL2_ASID", "4.4.2.14", [ASID]);
/** CMD_TLBI_S2_IPA(VMID, Addr, Leaf) with range fields; Addr is IPA[55:12]. @spec Arm SMMUv3 (IHI 0070) 4.4.3.1 */
export const CMD_TLBI_S2_IPA = cmd("CMD_TLBI_S2_IPA", "4.4.3.1", [
  NUM,
  SCALE,
  VMID,
  LEAF,
  TTL128,
  TTL,
  TG,
  IPA,
]);
/** CMD_TLBI_S12_VMALL(VMID). @spec Arm SMMUv3 (IHI 0070) 4.4.3.2 */
export const CMD_TLBI_S12_VMALL = cmd("CMD_TLBI_S12_VMALL", "4.4.3.2", [VMID]);
/** CMD_TLBI_S_S2_IPA (Secure queue only; its NS parameter position is not in the text spec). @spec Arm SMMUv3 (IHI 0070) 4.4.3.3 */
export const CMD_TLBI_S_S2_IPA = cmd("CMD_TLBI_S_S2_IPA", "4.4.3.3", [
  NUM,
  SCALE,
  VMID,
  LEAF,
  TTL128,
  TTL,
  TG,
  IPA,
]);
/** CMD_TLBI_S_S12_VMALL(VMID) (Secure queue only). @spec Arm SMMUv3 (IHI 0070) 4.4.3.4 */
export const CMD_TLBI_S_S12_VMALL = cmd("CMD_TLBI_S_S12_VMALL", "4.4.3.4", [VMID]);
/** CMD_TLBI_NSNH_ALL: all NS non-EL2 entries at all stages. @spec Arm SMMUv3 (IHI 0070) 4.4.4.1 */
export const CMD_TLBI_NSNH_ALL = cmd("CMD_TLBI_NSNH_ALL", "4.4.4.1", []);
/** CMD_TLBI_SNH_ALL (Secure queue only). @spec Arm SMMUv3 (IHI 0070) 4.4.4.2 */
export const CMD_TLBI_SNH_ALL = cmd("CMD_TLBI_SNH_ALL", "4.4.4.2", []);
/**
 * CMD_ATC_INV(StreamID, SubstreamID, SSV, Global, Address, Size): invalidates 4 KiB * 2^Size
 * aligned at Address; Size 52 is everything. Global is IGNORED when SSV == 0.
 *
 * @spec Arm SMMUv3 (IHI 0070) 4.5.1
 */
export const CMD_ATC_INV = cmd("CMD_ATC_INV", "4.5.1", [
  { name: "Global", lsb: 9, width: 1 },
  SSV,
  SSID,
  SID,
  { name: "Size", lsb: 64, width: 6 },
  VA,
]);
/**
 * CMD_PRI_RESP(StreamID, SubstreamID, SSV, PRGIndex, Resp). Resp at [77:76] is the kernel's
 * position (QEMU's unused extractor reads [76:75]).
 *
 * @spec Arm SMMUv3 (IHI 0070) 4.5.2
 */
export const CMD_PRI_RESP = cmd("CMD_PRI_RESP", "4.5.2", [
  SSV,
  SSID,
  SID,
  { name: "PRGIndex", lsb: 64, width: 9 },
  {
    name: "Resp",
    lsb: 76,
    width: 2,
    values: { 0: "ResponseFailure", 1: "InvalidRequest", 2: "Success" },
  },
]);
/** CMD_DPTI_ALL (IDR3.DPT only; fields not in the text spec). @spec Arm SMMUv3 (IHI 0070) 4.6.1 */
export const CMD_DPTI_ALL = cmd("CMD_DPTI_ALL", "4.6.1", []);
/** CMD_DPTI_PA (IDR3.DPT only; fields not in the text spec). @spec Arm SMMUv3 (IHI 0070) 4.6.2 */
export const CMD_DPTI_PA = cmd("CMD_DPTI_PA", "4.6.2", []);
/** CMD_RESUME(StreamID, SSec, STAG, Action, Abort). @spec Arm SMMUv3 (IHI 0070) 4.7.1 */
export const CMD_RESUME = cmd("CMD_RESUME", "4.7.1", [
  SSEC,
  { name: "Ac", lsb: 12, width: 1, values: { 0: "terminate", 1: "retry" }, doc: "Action" },
  { name: "Ab", lsb: 13, width: 1, values: { 0: "RAZ/WI", 1: "abort" }, doc: "Abort" },
  SID,
  { name: "STAG", lsb: 64, width: 16 },
]);
/** CMD_STALL_TERM(StreamID, SSec). @spec Arm SMMUv3 (IHI 0070) 4.7.2 */
export const CMD_STALL_TERM = cmd("CMD_STALL_TERM", "4.7.2", [SSEC, SID]);
/** CMD_SYNC(ComplSignal, MSIAddress, MSIData, MSIWriteAttributes). @spec Arm SMMUv3 (IHI 0070) 4.7.3 */
export const CMD_SYNC = cmd("CMD_SYNC", "4.7.3", [
  { name: "CS", lsb: 12, width: 2, values: { 0: "SIG_NONE", 1: "SIG_IRQ", 2: "SIG_SEV" } },
  { name: "MSH", lsb: 22, width: 2, values: { 0: "NSH", 2: "OSH", 3: "ISH" } },
  { name: "MSIAttr", lsb: 24, width: 4 },
  { name: "MSIData", lsb: 32, width: 32 },
  { name: "MSIAddress", lsb: 66, width: 54, addr: true, doc: "PA[55:2]" },
]);

const BY_OP: (Layout | null)[] = new Array(256).fill(null);
const NAMES: string[] = new Array(256).fill("");
for (const [name, op] of Object.entries(CMDQ_OP)) {
  if (name === "CFGI_ALL") continue;
  NAMES[op] = `CMD_${name}`.replace("CMD_CMD_", "CMD_");
}
for (const l of [
  CMD_PREFETCH_CONFIG,
  CMD_PREFETCH_ADDR,
  CMD_CFGI_STE,
  CMD_CFGI_STE_RANGE,
  CMD_CFGI_CD,
  CMD_CFGI_CD_ALL,
  CMD_CFGI_VMS_PIDM,
  CMD_TLBI_NH_ALL,
  CMD_TLBI_NH_ASID,
  CMD_TLBI_NH_VA,
  CMD_TLBI_NH_VAA,
  CMD_TLBI_EL3_ALL,
  CMD_TLBI_EL3_VA,
  CMD_TLBI_EL2_ALL,
  CMD_TLBI_EL2_ASID,
  CMD_TLBI_EL2_VA,
  CMD_TLBI_EL2_VAA,
  CMD_TLBI_S12_VMALL,
  CMD_TLBI_S2_IPA,
  CMD_TLBI_NSNH_ALL,
  CMD_ATC_INV,
  CMD_PRI_RESP,
  CMD_RESUME,
  CMD_STALL_TERM,
  CMD_SYNC,
  CMD_TLBI_S_EL2_ALL,
  CMD_TLBI_S_EL2_ASID,
  CMD_TLBI_S_EL2_VA,
  CMD_TLBI_S_EL2_VAA,
  CMD_TLBI_S_S12_VMALL,
  CMD_TLBI_S_S2_IPA,
  CMD_TLBI_SNH_ALL,
  CMD_DPTI_ALL,
  CMD_DPTI_PA,
]) {
  const key = l.name === "CMD_SYNC" ? "CMD_SYNC" : l.name.slice(4);
  const op = (CMDQ_OP as Record<string, number>)[key];
  if (op === undefined) bug(`${l.name} has no opcode`);
  BY_OP[op] = l;
}

/** The layout of the command with this opcode, or null for a reserved or IMPLEMENTATION DEFINED one. */
export function cmdLayout(opcode: number): Layout | null {
  return BY_OP[opcode & 0xff] ?? null;
}

/** The spec name of an opcode (`CMD_TLBI_NH_VA`), or `CMD_RESERVED_0xNN`. */
export function cmdName(opcode: number): string {
  const op = opcode & 0xff;
  return NAMES[op] || `CMD_RESERVED_0x${op.toString(16).padStart(2, "0")}`;
}

/** What the SMMU implements, as far as it decides whether a command is legal. */
export interface CommandFeatures {
  /** IDR0.S1P. */
  readonly s1p: boolean;
  /** IDR0.S2P. */
  readonly s2p: boolean;
  /** IDR0.Hyp. */
  readonly hyp: boolean;
  /** IDR0.ATS. */
  readonly ats: boolean;
  /** IDR0.PRI. */
  readonly pri: boolean;
  /** IDR0.STALL_MODEL (0b01: no stalls, so RESUME and STALL_TERM are illegal). */
  readonly stallModel: number;
  /** IDR3.RIL: range invalidation and TTL hints (else NUM/SCALE/TG/TTL are RES0). */
  readonly ril: boolean;
  /** IDR5.DS: SCALE is 6 bits wide and TTL 1 with the 16K granule is valid. */
  readonly ds: boolean;
  /**
   * The IMPLEMENTATION DEFINED choice of 4.1.5: true treats a non-zero RES0 field as a
   * malformed command (CERROR_ILL), false ignores RES0 fields entirely.
   */
  readonly checkReserved: boolean;
}

const W0_SSEC = fieldOf(CMD_CFGI_STE, "SSec").inPlace;
const RANGE_W0_BITS =
  fieldOf(CMD_TLBI_NH_VA, "NUM").inPlace | fieldOf(CMD_TLBI_NH_VA, "SCALE").inPlace;
const SCALE5_BIT = 1 << 25;
const W2_TTL128 = fieldOf(CMD_TLBI_NH_VA, "TTL128").inPlace;
const W2_TTL = fieldOf(CMD_TLBI_NH_VA, "TTL");
const W2_TG = fieldOf(CMD_TLBI_NH_VA, "TG");
const W0_NUM = fieldOf(CMD_TLBI_NH_VA, "NUM");
const W0_SCALE = fieldOf(CMD_TLBI_NH_VA, "SCALE");
const CS = fieldOf(CMD_SYNC, "CS");
const RESP = fieldOf(CMD_PRI_RESP, "Resp");
const ATC_SIZE = fieldOf(CMD_ATC_INV, "Size");

/**
 * CERROR_NONE or CERROR_ILL for the command at `w[base..base+3]` on the Non-secure command queue.
 *
 * The spec's rule (4.1.3, 4.1.5, 4.1.6 and each command's text): a command is illegal when
 * - its opcode is Reserved (including IMPLEMENTATION DEFINED 0x80-0x8F, none of which this model
 *   implements), or it is valid only on the Secure queue (TLBI_EL3_*, TLBI_S_*, TLBI_SNH_ALL), or
 *   its feature is absent: CFGI_VMS_PIDM needs MPAM and DPTI_* need DPT (neither is modelled);
 *   CFGI_CD(_ALL) and TLBI_NH_* need stage 1; TLBI_EL2_* need IDR0.Hyp; TLBI_S2_IPA and
 *   TLBI_S12_VMALL need stage 2; ATC_INV needs ATS; PRI_RESP needs PRI; RESUME and STALL_TERM
 *   need the Stall model (STALL_MODEL != 0b01);
 * - SSec == 1 (any command that has SSec, on the Non-secure queue);
 * - a parameter is ILLEGAL: CMD_SYNC.CS == 0b11; PRI_RESP.Resp == 0b11; ATC_INV.Size > 52 (the
 *   spec permits either an error or an UNKNOWN span; this model raises the error); a range TLBI
 *   (TG != 0) with NUM == 0, SCALE == 0 and TTL == 0 (TTL 1 with TG == 16K counts as 0 when
 *   IDR5.DS == 0);
 * - optionally (`checkReserved`), any RES0 bit is non-zero: the bits no field of the command's
 *   table covers, plus NUM/SCALE/TG/TTL/TTL128 when IDR3.RIL == 0, SCALE[5] when IDR5.DS == 0,
 *   and TTL128 (VMSAv9-128 is not modelled).
 * Out-of-range StreamID/SubstreamID/ASID/VMID values are not errors (4.1.7: the command has no
 * effect or acts on an UNPREDICTABLE value); the caller handles them.
 *
 * @spec Arm SMMUv3 (IHI 0070) 4.1.3, 4.1.5
 */
export function commandError(w: ArrayLike<number>, base: number, feat: CommandFeatures): number {
  const w0 = w[base] as number;
  const op = w0 & 0xff;
  const layout = BY_OP[op];
  if (layout === null || layout === undefined) return CMDQ_CONS_ERR_ILL;
  let rangeOp = false;
  switch (op) {
    case CMDQ_OP.CFGI_VMS_PIDM:
    case CMDQ_OP.DPTI_ALL:
    case CMDQ_OP.DPTI_PA:
    case CMDQ_OP.TLBI_EL3_ALL:
    case CMDQ_OP.TLBI_EL3_VA:
    case CMDQ_OP.TLBI_S_EL2_ALL:
    case CMDQ_OP.TLBI_S_EL2_ASID:
    case CMDQ_OP.TLBI_S_EL2_VA:
    case CMDQ_OP.TLBI_S_EL2_VAA:
    case CMDQ_OP.TLBI_S_S12_VMALL:
    case CMDQ_OP.TLBI_S_S2_IPA:
    case CMDQ_OP.TLBI_SNH_ALL:
      return CMDQ_CONS_ERR_ILL;
    case CMDQ_OP.CFGI_CD:
    case CMDQ_OP.CFGI_CD_ALL:
    case CMDQ_OP.TLBI_NH_ALL:
    case CMDQ_OP.TLBI_NH_ASID:
      if (!feat.s1p) return CMDQ_CONS_ERR_ILL;
      break;
    case CMDQ_OP.TLBI_NH_VA:
    case CMDQ_OP.TLBI_NH_VAA:
      if (!feat.s1p) return CMDQ_CONS_ERR_ILL;
      rangeOp = true;
      break;
    case CMDQ_OP.TLBI_EL2_ALL:
    case CMDQ_OP.TLBI_EL2_ASID:
      if (!feat.hyp) return CMDQ_CONS_ERR_ILL;
      break;
    case CMDQ_OP.TLBI_EL2_VA:
    case CMDQ_OP.TLBI_EL2_VAA:
      if (!feat.hyp) return CMDQ_CONS_ERR_ILL;
      rangeOp = true;
      break;
    case CMDQ_OP.TLBI_S12_VMALL:
      if (!feat.s2p) return CMDQ_CONS_ERR_ILL;
      break;
    case CMDQ_OP.TLBI_S2_IPA:
      if (!feat.s2p) return CMDQ_CONS_ERR_ILL;
      rangeOp = true;
      break;
    case CMDQ_OP.ATC_INV:
      if (!feat.ats) return CMDQ_CONS_ERR_ILL;
      if ((((w[base + 2] as number) >>> ATC_SIZE.shift) & ATC_SIZE.mask) > ATC_INV_SIZE_ALL)
        return CMDQ_CONS_ERR_ILL;
      break;
    case CMDQ_OP.PRI_RESP:
      if (!feat.pri) return CMDQ_CONS_ERR_ILL;
      if ((((w[base + 2] as number) >>> RESP.shift) & RESP.mask) === 3) return CMDQ_CONS_ERR_ILL;
      break;
    case CMDQ_OP.RESUME:
    case CMDQ_OP.STALL_TERM:
      if (feat.stallModel === 1) return CMDQ_CONS_ERR_ILL;
      break;
    case CMDQ_OP.CMD_SYNC:
      if (((w0 >>> CS.shift) & CS.mask) === 3) return CMDQ_CONS_ERR_ILL;
      break;
  }
  if (layout.field.SSec !== undefined && (w0 & W0_SSEC) !== 0) return CMDQ_CONS_ERR_ILL;
  const w2 = w[base + 2] as number;
  if (rangeOp && feat.ril) {
    const tg = (w2 >>> W2_TG.shift) & W2_TG.mask;
    let ttl = (w2 >>> W2_TTL.shift) & W2_TTL.mask;
    // Without DS, TTL 1 with the 16K granule means TTL 0 (4.4.1.1).
    if (tg === 2 && ttl === 1 && !feat.ds) ttl = 0;
    if (tg !== 0) {
      const num = (w0 >>> W0_NUM.shift) & W0_NUM.mask;
      const scale = (w0 >>> W0_SCALE.shift) & W0_SCALE.mask;
      if (num === 0 && scale === 0 && ttl === 0) return CMDQ_CONS_ERR_ILL;
    }
  }
  if (!feat.checkReserved) return CMDQ_CONS_ERR_NONE;
  if (hasReservedBits(layout, w, base)) return CMDQ_CONS_ERR_ILL;
  if (rangeOp) {
    if ((w2 & W2_TTL128) !== 0) return CMDQ_CONS_ERR_ILL;
    if (!feat.ril) {
      if ((w0 & RANGE_W0_BITS) !== 0 || (w2 & (W2_TG.inPlace | W2_TTL.inPlace)) !== 0)
        return CMDQ_CONS_ERR_ILL;
    } else if (!feat.ds && (w0 & SCALE5_BIT) !== 0) {
      return CMDQ_CONS_ERR_ILL;
    }
  }
  return CMDQ_CONS_ERR_NONE;
}
