// SMMUv3 event records from walk and configuration outcomes: the event number of each W_* walk
// fault, the architecture-neutral class of each event, and the encoder of the 32-byte record.

import { FaultKind } from "@iommu-sim/iommu-core";
import { fieldOf } from "@iommu-sim/iommu-core/platform";
import { EVENT_RECORD, EVT_F_PERMISSION, EVT_ID, EVT_SIZE } from "../format/events.js";
import { W_ACCESS, W_ADDR_SIZE, W_EABT, W_PERMISSION, W_TRANSLATION } from "./smmu-walk.js";

/**
 * The event number of a failed walk.
 *
 * @spec Arm SMMUv3 (IHI 0070) 7.3.12-7.3.16
 */
export function walkEventId(w: number): number {
  switch (w) {
    case W_TRANSLATION:
      return EVT_ID.F_TRANSLATION;
    case W_ADDR_SIZE:
      return EVT_ID.F_ADDR_SIZE;
    case W_ACCESS:
      return EVT_ID.F_ACCESS;
    case W_PERMISSION:
      return EVT_ID.F_PERMISSION;
    case W_EABT:
      return EVT_ID.F_WALK_EABT;
    default:
      return EVT_ID.F_TRANSLATION;
  }
}

const KIND = new Uint8Array(256).fill(FaultKind.BAD_CONFIG);
KIND[EVT_ID.F_TRANSLATION] = FaultKind.TRANSLATION;
KIND[EVT_ID.F_ACCESS] = FaultKind.TRANSLATION;
KIND[EVT_ID.F_PERMISSION] = FaultKind.PERMISSION;
KIND[EVT_ID.F_ADDR_SIZE] = FaultKind.ADDRESS_SIZE;
KIND[EVT_ID.F_WALK_EABT] = FaultKind.WALK_ABORT;
KIND[EVT_ID.F_STE_FETCH] = FaultKind.WALK_ABORT;
KIND[EVT_ID.F_CD_FETCH] = FaultKind.WALK_ABORT;
KIND[EVT_ID.C_BAD_STREAMID] = FaultKind.BAD_REQUESTER;
KIND[EVT_ID.C_BAD_SUBSTREAMID] = FaultKind.BAD_REQUESTER;
KIND[EVT_ID.F_STREAM_DISABLED] = FaultKind.BLOCKED;
KIND[EVT_ID.F_TRANSL_FORBIDDEN] = FaultKind.ATS_FORBIDDEN;
KIND[EVT_ID.F_BAD_ATS_TREQ] = FaultKind.ATS_FORBIDDEN;
KIND[EVT_ID.F_UUT] = FaultKind.BAD_REQUESTER;

/** `code` of a request terminated by an abort STE (Config 0b0xx) or GBPA.ABORT: no event. */
export const SMMU_ABORT_SILENT = 0x100;

/** The architecture-neutral class of an event number (or SMMU_ABORT_SILENT: BLOCKED). */
export function smmuFaultKind(code: number): number {
  if (code === SMMU_ABORT_SILENT) return FaultKind.BLOCKED;
  return KIND[code & 0xff] as number;
}

/** The fields of one event record, filled by the unit and written by `encodeEvent`. */
export class SmmuEventFields {
  id = 0;
  sid = 0;
  /** SubstreamID, or -1 (SSV = 0). */
  ssid = -1;
  stag = 0;
  stall = false;
  privileged = false;
  instruction = false;
  read = false;
  s2 = false;
  cls = 0;
  ttRnW = false;
  /** InputAddr as two halves. */
  inLo = 0;
  inHi = 0;
  /** IPA (translation faults with S2) or FetchAddr (fetch / walk aborts), a number below 2^53. */
  addr = 0;
}

const f = (l: typeof EVENT_RECORD, n: string) => fieldOf(l, n);
const SSV = f(EVENT_RECORD, "SSV").inPlace;
const SSID_SHIFT = f(EVENT_RECORD, "SubstreamID").shift;
const STALL = f(EVT_F_PERMISSION, "Stall").inPlace;
const PNU = f(EVT_F_PERMISSION, "PnU").inPlace;
const IND = f(EVT_F_PERMISSION, "InD").inPlace;
const RNW = f(EVT_F_PERMISSION, "RnW").inPlace;
const S2 = f(EVT_F_PERMISSION, "S2").inPlace;
const CLASS_SHIFT = f(EVT_F_PERMISSION, "CLASS").shift;
const TTRNW = f(EVT_F_PERMISSION, "TTRnW").inPlace;
const FETCH_LO_MASK = ~7 >>> 0;
const IPA_LO_MASK = ~0xfff >>> 0;
const ADDR_HI_MASK = 0xffffff;
const TWO32 = 4294967296;

/**
 * Encode `e` into the 8 words of `rec`, with the fields its event number carries: the header
 * (SSV/SubstreamID not for F_STREAM_DISABLED and F_TRANSL_FORBIDDEN, SubstreamID without SSV for
 * C_BAD_SUBSTREAMID), STAG/Stall and the fault syndrome for the translation faults, S2/CLASS and
 * FetchAddr for F_WALK_EABT, FetchAddr for the fetch events, RnW and InputAddr where defined.
 *
 * @spec Arm SMMUv3 (IHI 0070) 7.3.2-7.3.16
 */
export function encodeEvent(e: SmmuEventFields, rec: Uint32Array): void {
  rec.fill(0, 0, EVT_SIZE / 4);
  const id = e.id & 0xff;
  let w0 = id;
  const withSsid = id !== EVT_ID.F_STREAM_DISABLED && id !== EVT_ID.F_TRANSL_FORBIDDEN;
  if (withSsid && e.ssid >= 0) {
    w0 |= (e.ssid & 0xfffff) << SSID_SHIFT;
    if (id !== EVT_ID.C_BAD_SUBSTREAMID) w0 |= SSV;
  }
  rec[0] = w0 >>> 0;
  rec[1] = e.sid >>> 0;
  const fault = id >= EVT_ID.F_TRANSLATION && id <= EVT_ID.F_PERMISSION;
  const inputAddr =
    fault ||
    id === EVT_ID.F_WALK_EABT ||
    id === EVT_ID.F_TRANSL_FORBIDDEN ||
    id === EVT_ID.F_BAD_ATS_TREQ ||
    id === EVT_ID.F_UUT;
  let w3 = 0;
  if (fault) {
    rec[2] = ((e.stag & 0xffff) | (e.stall ? STALL : 0)) >>> 0;
    if (e.privileged) w3 |= PNU;
    if (e.instruction) w3 |= IND;
    if (e.read) w3 |= RNW;
    if (e.s2) w3 |= S2 | ((e.cls & 3) << CLASS_SHIFT);
    else w3 |= (e.cls & 3) << CLASS_SHIFT;
    if (id === EVT_ID.F_PERMISSION && e.ttRnW) w3 |= TTRNW;
    if (e.s2) {
      rec[6] = ((e.addr % TWO32) & IPA_LO_MASK) >>> 0;
      rec[7] = Math.floor(e.addr / TWO32) & ADDR_HI_MASK;
    }
  } else if (id === EVT_ID.F_WALK_EABT) {
    if (e.privileged) w3 |= PNU;
    if (e.instruction) w3 |= IND;
    if (e.read) w3 |= RNW;
    if (e.s2) w3 |= S2;
    w3 |= (e.cls & 3) << CLASS_SHIFT;
  } else if (id === EVT_ID.F_TRANSL_FORBIDDEN && e.read) {
    w3 |= RNW;
  }
  rec[3] = w3 >>> 0;
  if (inputAddr) {
    rec[4] = e.inLo >>> 0;
    rec[5] = e.inHi >>> 0;
  }
  if (id === EVT_ID.F_WALK_EABT || id === EVT_ID.F_STE_FETCH || id === EVT_ID.F_CD_FETCH) {
    rec[6] = ((e.addr % TWO32) & FETCH_LO_MASK) >>> 0;
    rec[7] = Math.floor(e.addr / TWO32) & ADDR_HI_MASK;
  }
}
