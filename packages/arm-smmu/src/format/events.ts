// Event queue records: every SMMUv3 event number and one 256-bit field table per record shape.

import { defineLayout, type FieldSpec, type Layout } from "@iommu-sim/iommu-core/platform";

const SPEC = "Arm SMMUv3 (IHI 0070)";

/** Bytes per event record. @spec Arm SMMUv3 (IHI 0070) 7.3 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h EVTQ_ENT_SZ_SHIFT */
export const EVT_SIZE = 32;

/**
 * Event numbers (bits [7:0] of a record). 0xE0-0xEF are IMPLEMENTATION DEFINED; all others are
 * reserved. QEMU's enum stops at E_PAGE_REQUEST and spells F_TRANSL_FORBIDDEN "F_TRANS_FORBIDDEN".
 *
 * @spec Arm SMMUv3 (IHI 0070) 7.3.2-7.3.21
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h EVT_ID_TRANSLATION_FAULT
 */
export const EVT_ID = Object.freeze({
  F_UUT: 0x01,
  C_BAD_STREAMID: 0x02,
  F_STE_FETCH: 0x03,
  C_BAD_STE: 0x04,
  F_BAD_ATS_TREQ: 0x05,
  F_STREAM_DISABLED: 0x06,
  F_TRANSL_FORBIDDEN: 0x07,
  C_BAD_SUBSTREAMID: 0x08,
  F_CD_FETCH: 0x09,
  C_BAD_CD: 0x0a,
  F_WALK_EABT: 0x0b,
  F_TRANSLATION: 0x10,
  F_ADDR_SIZE: 0x11,
  F_ACCESS: 0x12,
  F_PERMISSION: 0x13,
  F_TLB_CONFLICT: 0x20,
  F_CFG_CONFLICT: 0x21,
  E_PAGE_REQUEST: 0x24,
  F_VMS_FETCH: 0x25,
} as const);

/** First IMPLEMENTATION DEFINED event number. @spec Arm SMMUv3 (IHI 0070) 7.3.21 */
export const EVT_ID_IMPDEF_FIRST = 0xe0;
/** Last IMPLEMENTATION DEFINED event number. @spec Arm SMMUv3 (IHI 0070) 7.3.21 */
export const EVT_ID_IMPDEF_LAST = 0xef;

/** Event CLASS: the fault happened fetching a CD (stage 2 only). @spec Arm SMMUv3 (IHI 0070) 7.3 */
export const EVT_CLASS_CD = 0;
/** Event CLASS: the fault happened fetching a stage 1 translation table descriptor. @spec Arm SMMUv3 (IHI 0070) 7.3 */
export const EVT_CLASS_TT = 1;
/** Event CLASS: the input address of the stage faulted. @spec Arm SMMUv3 (IHI 0070) 7.3 */
export const EVT_CLASS_IN = 2;

const TYPE: FieldSpec = { name: "EventType", lsb: 0, width: 8, doc: "the event number" };
const SSV: FieldSpec = { name: "SSV", lsb: 11, width: 1 };
const SSID: FieldSpec = { name: "SubstreamID", lsb: 12, width: 20 };
const SID: FieldSpec = { name: "StreamID", lsb: 32, width: 32 };
const REASON16: FieldSpec = { name: "Reason", lsb: 64, width: 16, doc: "IMPLEMENTATION DEFINED" };
const STAG: FieldSpec = { name: "STAG", lsb: 64, width: 16, doc: "stall tag for CMD_RESUME" };
const GPCF: FieldSpec = { name: "GPCF", lsb: 80, width: 1 };
const STALL: FieldSpec = { name: "Stall", lsb: 95, width: 1 };
const PNU: FieldSpec = { name: "PnU", lsb: 97, width: 1, doc: "1: privileged" };
const IND: FieldSpec = { name: "InD", lsb: 98, width: 1, doc: "1: instruction" };
const RNW: FieldSpec = { name: "RnW", lsb: 99, width: 1, doc: "1: read" };
const NSIPA: FieldSpec = { name: "NSIPA", lsb: 100, width: 1, doc: "0 on the Non-secure queue" };
const S2: FieldSpec = { name: "S2", lsb: 103, width: 1, doc: "1: stage 2 fault" };
const CLASS: FieldSpec = {
  name: "CLASS",
  lsb: 104,
  width: 2,
  values: { 0: "CD", 1: "TT", 2: "IN" },
};
const INPUT: FieldSpec = { name: "InputAddr", lsb: 128, width: 64, doc: "the input address" };
const IPA: FieldSpec = { name: "IPA", lsb: 204, width: 44, addr: true, doc: "IPA[55:12]" };
const FETCH: FieldSpec = { name: "FetchAddr", lsb: 195, width: 53, addr: true, doc: "PA[55:3]" };

function evt(name: string, section: string, fields: readonly FieldSpec[]): Layout {
  return defineLayout({ name, bits: 256, spec: `${SPEC} ${section}`, fields: [TYPE, ...fields] });
}

/**
 * The common header every record starts with, and the whole of C_BAD_STREAMID, C_BAD_STE,
 * C_BAD_CD and IMPLEMENTATION DEFINED events.
 *
 * @spec Arm SMMUv3 (IHI 0070) 7.3, 7.3.3, 7.3.5, 7.3.11
 */
export const EVENT_RECORD = evt("EVENT_RECORD", "7.3", [SSV, SSID, SID]);
/** F_UUT: the InD/PnU here are the incoming attributes. @spec Arm SMMUv3 (IHI 0070) 7.3.2 */
export const EVT_F_UUT = evt("F_UUT", "7.3.2", [SSV, SSID, SID, REASON16, PNU, IND, RNW, INPUT]);
/**
 * F_STE_FETCH, F_CD_FETCH and F_VMS_FETCH: FetchAddr is the PA of the structure fetched.
 * (F_CD_FETCH's figure is not in the text spec; it is taken to match the other two.)
 *
 * @spec Arm SMMUv3 (IHI 0070) 7.3.4, 7.3.10, 7.3.20
 */
export const EVT_F_FETCH = evt("F_FETCH", "7.3.4", [SSV, SSID, SID, REASON16, GPCF, FETCH]);
/**
 * F_BAD_ATS_TREQ. The positions of its R/W/X/PRIV flags and Span are in a figure the text spec
 * does not carry, so the second doubleword is declared as one IGNORED field.
 *
 * @spec Arm SMMUv3 (IHI 0070) 7.3.6
 */
export const EVT_F_BAD_ATS_TREQ = evt("F_BAD_ATS_TREQ", "7.3.6", [
  SSV,
  SSID,
  SID,
  { name: "Attributes", lsb: 64, width: 64, ignored: true, doc: "R/W/X/PRIV, Span" },
  INPUT,
]);
/** F_STREAM_DISABLED: StreamID only (no SubstreamID). @spec Arm SMMUv3 (IHI 0070) 7.3.7 */
export const EVT_F_STREAM_DISABLED = evt("F_STREAM_DISABLED", "7.3.7", [SID]);
/** F_TRANSL_FORBIDDEN. @spec Arm SMMUv3 (IHI 0070) 7.3.8 */
export const EVT_F_TRANSL_FORBIDDEN = evt("F_TRANSL_FORBIDDEN", "7.3.8", [SID, RNW, INPUT]);
/** C_BAD_SUBSTREAMID: SubstreamID is always valid, there is no SSV. @spec Arm SMMUv3 (IHI 0070) 7.3.9 */
export const EVT_C_BAD_SUBSTREAMID = evt("C_BAD_SUBSTREAMID", "7.3.9", [SSID, SID]);
/** F_WALK_EABT: external abort on a table walk; no Stall field. @spec Arm SMMUv3 (IHI 0070) 7.3.12 */
export const EVT_F_WALK_EABT = evt("F_WALK_EABT", "7.3.12", [
  SSV,
  SSID,
  SID,
  REASON16,
  GPCF,
  PNU,
  IND,
  RNW,
  S2,
  CLASS,
  INPUT,
  FETCH,
]);
const FAULT = [SSV, SSID, SID, STAG, STALL, PNU, IND, RNW, NSIPA, S2, CLASS, INPUT, IPA];
/**
 * F_TRANSLATION, F_ADDR_SIZE and F_ACCESS: the translation faults, which may stall (Stall, STAG).
 * IPA is valid when S2 == 1 (the CD address for CLASS == CD, the stage 1 descriptor address for
 * CLASS == TT).
 *
 * @spec Arm SMMUv3 (IHI 0070) 7.3.13-7.3.15
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h EVTQ_1_STALL
 */
export const EVT_F_TRANSLATION = evt("F_TRANSLATION", "7.3.13", FAULT);
/**
 * F_PERMISSION: as F_TRANSLATION plus TTRnW (valid when CLASS == TT). The v3.4 Overlay,
 * AssuredOnly and DirtyBit flags are not declared (their positions are not in the text spec).
 *
 * @spec Arm SMMUv3 (IHI 0070) 7.3.16
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h EVTQ_1_TT_READ
 */
export const EVT_F_PERMISSION = evt("F_PERMISSION", "7.3.16", [
  ...FAULT,
  { name: "TTRnW", lsb: 108, width: 1 },
]);
/** F_TLB_CONFLICT (field positions beyond the header follow the translation faults; unverified). @spec Arm SMMUv3 (IHI 0070) 7.3.17 */
export const EVT_F_TLB_CONFLICT = evt("F_TLB_CONFLICT", "7.3.17", [
  SSV,
  SSID,
  SID,
  REASON16,
  PNU,
  IND,
  RNW,
  S2,
  INPUT,
  IPA,
]);
/** F_CFG_CONFLICT: Reason fills bits [95:64]. @spec Arm SMMUv3 (IHI 0070) 7.3.18 */
export const EVT_F_CFG_CONFLICT = evt("F_CFG_CONFLICT", "7.3.18", [
  SSV,
  SSID,
  SID,
  { name: "Reason", lsb: 64, width: 32 },
]);
/**
 * E_PAGE_REQUEST: a speculative page-in hint; the span is Span * 4 KiB from InputAddr. The flag
 * positions are read from a garbled figure (uX 97 .. uR 99, pX 101 .. pR 103) and are unverified.
 *
 * @spec Arm SMMUv3 (IHI 0070) 7.3.19
 */
export const EVT_E_PAGE_REQUEST = evt("E_PAGE_REQUEST", "7.3.19", [
  SSV,
  SSID,
  SID,
  { name: "uX", lsb: 97, width: 1 },
  { name: "uW", lsb: 98, width: 1 },
  { name: "uR", lsb: 99, width: 1 },
  { name: "pX", lsb: 101, width: 1 },
  { name: "pW", lsb: 102, width: 1 },
  { name: "pR", lsb: 103, width: 1 },
  { name: "Span", lsb: 108, width: 8 },
  { name: "InputAddr", lsb: 140, width: 52, addr: true, doc: "VA[63:12]" },
]);

const BY_ID: Layout[] = new Array(256).fill(EVENT_RECORD);
const NAMES: string[] = new Array(256).fill("");
for (const [name, id] of Object.entries(EVT_ID)) NAMES[id] = name;
BY_ID[EVT_ID.F_UUT] = EVT_F_UUT;
BY_ID[EVT_ID.F_STE_FETCH] = EVT_F_FETCH;
BY_ID[EVT_ID.F_CD_FETCH] = EVT_F_FETCH;
BY_ID[EVT_ID.F_VMS_FETCH] = EVT_F_FETCH;
BY_ID[EVT_ID.F_BAD_ATS_TREQ] = EVT_F_BAD_ATS_TREQ;
BY_ID[EVT_ID.F_STREAM_DISABLED] = EVT_F_STREAM_DISABLED;
BY_ID[EVT_ID.F_TRANSL_FORBIDDEN] = EVT_F_TRANSL_FORBIDDEN;
BY_ID[EVT_ID.C_BAD_SUBSTREAMID] = EVT_C_BAD_SUBSTREAMID;
BY_ID[EVT_ID.F_WALK_EABT] = EVT_F_WALK_EABT;
BY_ID[EVT_ID.F_TRANSLATION] = EVT_F_TRANSLATION;
BY_ID[EVT_ID.F_ADDR_SIZE] = EVT_F_TRANSLATION;
BY_ID[EVT_ID.F_ACCESS] = EVT_F_TRANSLATION;
BY_ID[EVT_ID.F_PERMISSION] = EVT_F_PERMISSION;
BY_ID[EVT_ID.F_TLB_CONFLICT] = EVT_F_TLB_CONFLICT;
BY_ID[EVT_ID.F_CFG_CONFLICT] = EVT_F_CFG_CONFLICT;
BY_ID[EVT_ID.E_PAGE_REQUEST] = EVT_E_PAGE_REQUEST;

/** The layout of a record with this event number (the common header for unknown numbers). */
export function eventLayout(id: number): Layout {
  return BY_ID[id & 0xff] as Layout;
}

/** The spec name of an event number (`F_TRANSLATION`, `IMPDEF_EVENT_0xe3`, `RESERVED_0x30`). */
export function evtName(id: number): string {
  const n = id & 0xff;
  const name = NAMES[n];
  if (name) return name;
  const hex = `0x${n.toString(16).padStart(2, "0")}`;
  return n >= EVT_ID_IMPDEF_FIRST && n <= EVT_ID_IMPDEF_LAST
    ? `IMPDEF_EVENT_${hex}`
    : `RESERVED_${hex}`;
}

/** Whether records of this event number carry Stall/STAG (only the four translation faults). @spec Arm SMMUv3 (IHI 0070) 7.3.21 */
export function evtCanStall(id: number): boolean {
  return id >= EVT_ID.F_TRANSLATION && id <= EVT_ID.F_PERMISSION;
}
