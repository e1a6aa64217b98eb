// What the VT-d unit decodes from the root, context and PASID structures before it walks: small
// configuration objects that the context and PASID caches hold and the walks read (the
// counterpart of QEMU's VTDContextEntry/VTDPASIDEntry after decoding).

import {
  fieldOf,
  getField,
  hasReservedBits,
  type Layout,
  type PhysMemory,
} from "@iommu-sim/iommu-core/platform";
import {
  CONTEXT_ENTRY,
  SM_CONTEXT_ENTRY,
  TT_DEVTLB,
  TT_PASSTHROUGH,
  TT_UNTRANSLATED,
} from "../format/context-entry.js";
import { VTD_FR } from "../format/fault-record.js";
import {
  PASID_DIR_ENTRY,
  PASID_ENTRY,
  PGTT_FL,
  PGTT_NESTED,
  PGTT_PT,
  PGTT_SL,
} from "../format/pasid-entry.js";
import { ROOT_ENTRY, SM_ROOT_ENTRY } from "../format/root-entry.js";
import { agawToLevels, agawWidth } from "./vtd-caps.js";

/** The unit's facts that decoding depends on (from CAP/ECAP and the platform). */
export interface VtdDecodeCaps {
  /** Host address width: pointers at or above 2^haw are invalid. */
  haw: number;
  /** CAP.SAGAW bitmap (bit n: AGAW n supported). */
  sagaw: number;
  /** CAP.MGAW + 1: the widest input address. */
  mgawWidth: number;
  passThrough: boolean;
  deviceTlb: boolean;
  flts: boolean;
  slts: boolean;
  nest: boolean;
  fl5lp: boolean;
  rps: boolean;
  /** PASID bits supported (ECAP.PSS + 1); 0 without ECAP.PASID. */
  pasidBits: number;
  ers: boolean;
  srs: boolean;
}

/**
 * A decoded root + context entry for one source ID. `status` is 0 for a usable entry, otherwise
 * the fault reason a request would get (a not-present entry may be cached in caching mode).
 */
export class VtdDevConfig {
  sid = 0;
  status = 0;
  scalable = false;
  fpd = false;
  // Legacy mode.
  tt = 0;
  did = 0;
  slptptr = 0;
  aw = 0;
  levels = 0;
  /** Input pages the second-stage table covers: 2^(width - 12), capped by MGAW. */
  widthPages = 0;
  // Scalable mode.
  dte = false;
  paside = false;
  pre = false;
  pdts = 0;
  pasidDirPtr = 0;
  ridPasid = 0;
  ridPriv = false;
  /** Requests with a PASID at or above this fault (PDTS and ECAP.PSS). */
  pasidLimit = 0;
  /** Whether ATS translation requests and translated requests are allowed. */
  get atsAllowed(): boolean {
    return this.scalable ? this.dte : this.tt === TT_DEVTLB;
  }
}

/** A decoded PASID directory + table entry for (source ID, PASID). */
export class VtdPasidConfig {
  sid = 0;
  pasid = 0;
  status = 0;
  fpd = false;
  pgtt = 0;
  did = 0;
  aw = 0;
  ssLevels = 0;
  ssWidthPages = 0;
  slptptr = 0;
  slee = false;
  slade = false;
  flptr = 0;
  /** First-stage levels: 4 or 5 (FLPM). */
  fsLevels = 4;
  sre = false;
  ere = false;
  wpe = false;
  smep = false;
}

const scratch = new Uint32Array(16);

function load(mem: PhysMemory, pa: number, words: number): boolean {
  mem.busError = false;
  for (let i = 0; i < words; i += 2) {
    scratch[i] = mem.read64(pa + 4 * i);
    scratch[i + 1] = mem.hi;
  }
  return !mem.busError;
}

function field(layout: Layout, name: string): (w: Uint32Array) => number {
  const f = fieldOf(layout, name);
  return (w) => getField(f, w);
}

/** An address field's value in place (raw << 12). */
function addr(layout: Layout, name: string): (w: Uint32Array) => number {
  const get = field(layout, name);
  return (w) => get(w) * 4096;
}

const R_P = field(ROOT_ENTRY, "P");
const R_CTP = addr(ROOT_ENTRY, "CTP");
const SR_LP = field(SM_ROOT_ENTRY, "LP");
const SR_LCTP = addr(SM_ROOT_ENTRY, "LCTP");
const SR_UP = field(SM_ROOT_ENTRY, "UP");
const SR_UCTP = addr(SM_ROOT_ENTRY, "UCTP");
const C_P = field(CONTEXT_ENTRY, "P");
const C_FPD = field(CONTEXT_ENTRY, "FPD");
const C_TT = field(CONTEXT_ENTRY, "TT");
const C_SLPTPTR = addr(CONTEXT_ENTRY, "SLPTPTR");
const C_AW = field(CONTEXT_ENTRY, "AW");
const C_DID = field(CONTEXT_ENTRY, "DID");
const SC_P = field(SM_CONTEXT_ENTRY, "P");
const SC_FPD = field(SM_CONTEXT_ENTRY, "FPD");
const SC_DTE = field(SM_CONTEXT_ENTRY, "DTE");
const SC_PASIDE = field(SM_CONTEXT_ENTRY, "PASIDE");
const SC_PRE = field(SM_CONTEXT_ENTRY, "PRE");
const SC_PDTS = field(SM_CONTEXT_ENTRY, "PDTS");
const SC_DIR = addr(SM_CONTEXT_ENTRY, "PASIDDIRPTR");
const SC_RID_PASID = field(SM_CONTEXT_ENTRY, "RID_PASID");
const SC_RID_PRIV = field(SM_CONTEXT_ENTRY, "RID_PRIV");
const D_P = field(PASID_DIR_ENTRY, "P");
const D_FPD = field(PASID_DIR_ENTRY, "FPD");
const D_TBL = addr(PASID_DIR_ENTRY, "SMPTBLPTR");
const E_P = field(PASID_ENTRY, "P");
const E_FPD = field(PASID_ENTRY, "FPD");
const E_AW = field(PASID_ENTRY, "AW");
const E_SLEE = field(PASID_ENTRY, "SLEE");
const E_PGTT = field(PASID_ENTRY, "PGTT");
const E_SLADE = field(PASID_ENTRY, "SLADE");
const E_SLPTPTR = addr(PASID_ENTRY, "SLPTPTR");
const E_DID = field(PASID_ENTRY, "DID");
const E_SRE = field(PASID_ENTRY, "SRE");
const E_ERE = field(PASID_ENTRY, "ERE");
const E_FLPM = field(PASID_ENTRY, "FLPM");
const E_WPE = field(PASID_ENTRY, "WPE");
const E_SMEP = field(PASID_ENTRY, "SMEP");
const E_FLPTR = addr(PASID_ENTRY, "FLPTR");

function aboveHaw(pa: number, haw: number): boolean {
  return pa >= 2 ** haw;
}

function widthPagesOf(aw: number, caps: VtdDecodeCaps): number {
  const width = Math.min(agawWidth(aw), caps.mgawWidth);
  return 2 ** (width - 12);
}

/**
 * Decode the root and context entries of `sid` from the root table at `rta` into `out`.
 * `out.status` is 0 or the fault reason (legacy codes 0x1-0xD, scalable 0x38-0x48).
 *
 * @spec Intel VT-d Architecture Specification 3.4.x (legacy) and 3.4.3 (scalable-mode) address translation
 */
export function decodeDevConfig(
  mem: PhysMemory,
  rta: number,
  scalable: boolean,
  sid: number,
  caps: VtdDecodeCaps,
  out: VtdDevConfig,
): VtdDevConfig {
  out.sid = sid;
  out.scalable = scalable;
  out.status = 0;
  out.fpd = false;
  const bus = sid >>> 8;
  const devfn = sid & 0xff;
  if (!load(mem, rta + bus * 16, 4)) {
    out.status = scalable ? VTD_FR.SM_ROOT_ENTRY_ACCESS : VTD_FR.ROOT_TABLE_ACCESS;
    return out;
  }
  if (!scalable) {
    if (R_P(scratch) === 0) {
      out.status = VTD_FR.ROOT_NOT_PRESENT;
      return out;
    }
    const ctp = R_CTP(scratch);
    if (hasReservedBits(ROOT_ENTRY, scratch) || aboveHaw(ctp, caps.haw)) {
      out.status = VTD_FR.ROOT_ENTRY_RESERVED;
      return out;
    }
    if (!load(mem, ctp + devfn * 16, 4)) {
      out.status = VTD_FR.CONTEXT_TABLE_ACCESS;
      return out;
    }
    if (C_P(scratch) === 0) {
      out.status = VTD_FR.CONTEXT_NOT_PRESENT;
      return out;
    }
    out.fpd = C_FPD(scratch) !== 0;
    out.tt = C_TT(scratch);
    out.aw = C_AW(scratch);
    out.did = C_DID(scratch);
    out.slptptr = C_SLPTPTR(scratch);
    if (hasReservedBits(CONTEXT_ENTRY, scratch) || aboveHaw(out.slptptr, caps.haw)) {
      out.status = VTD_FR.CONTEXT_ENTRY_RESERVED;
      return out;
    }
    if (out.tt === TT_PASSTHROUGH) {
      if (!caps.passThrough) out.status = VTD_FR.CONTEXT_INVALID;
      return out;
    }
    if (out.tt !== TT_UNTRANSLATED && !(out.tt === TT_DEVTLB && caps.deviceTlb)) {
      out.status = VTD_FR.CONTEXT_INVALID;
      return out;
    }
    if ((caps.sagaw & (1 << out.aw)) === 0) {
      out.status = VTD_FR.CONTEXT_INVALID;
      return out;
    }
    out.levels = agawToLevels(out.aw);
    out.widthPages = widthPagesOf(out.aw, caps);
    return out;
  }
  const upper = devfn >= 0x80;
  const present = upper ? SR_UP(scratch) : SR_LP(scratch);
  if (present === 0) {
    out.status = VTD_FR.SM_ROOT_ENTRY_NOT_PRESENT;
    return out;
  }
  const ctp = upper ? SR_UCTP(scratch) : SR_LCTP(scratch);
  if (hasReservedBits(SM_ROOT_ENTRY, scratch) || aboveHaw(ctp, caps.haw)) {
    out.status = VTD_FR.SM_ROOT_ENTRY_RESERVED;
    return out;
  }
  if (!load(mem, ctp + (devfn & 0x7f) * 32, 8)) {
    out.status = VTD_FR.SM_CONTEXT_ENTRY_ACCESS;
    return out;
  }
  if (SC_P(scratch) === 0) {
    out.status = VTD_FR.SM_CONTEXT_ENTRY_NOT_PRESENT;
    return out;
  }
  out.fpd = SC_FPD(scratch) !== 0;
  out.dte = SC_DTE(scratch) !== 0 && caps.deviceTlb;
  out.paside = SC_PASIDE(scratch) !== 0;
  out.pre = SC_PRE(scratch) !== 0;
  out.pdts = SC_PDTS(scratch);
  out.pasidDirPtr = SC_DIR(scratch);
  out.ridPasid = SC_RID_PASID(scratch);
  out.ridPriv = SC_RID_PRIV(scratch) !== 0;
  if (hasReservedBits(SM_CONTEXT_ENTRY, scratch) || aboveHaw(out.pasidDirPtr, caps.haw)) {
    out.status = VTD_FR.SM_CONTEXT_ENTRY_RESERVED;
    return out;
  }
  if (out.ridPasid !== 0 && !caps.rps) {
    out.status = VTD_FR.SM_RID_PASID_ERROR;
    return out;
  }
  // The directory has 2^(PDTS+7) entries of 64 PASIDs each.
  const dirBits = out.pdts + 7 + 6;
  out.pasidLimit = 2 ** Math.min(dirBits, caps.pasidBits);
  return out;
}

/**
 * Decode the PASID directory and table entries of (dev, pasid) into `out`. `out.status` is 0 or
 * the scalable-mode fault reason (0x46, 0x50-0x5B).
 *
 * @spec Intel VT-d Architecture Specification 9.5 and 9.6 (PASID directory and table entries)
 */
export function decodePasidConfig(
  mem: PhysMemory,
  dev: VtdDevConfig,
  pasid: number,
  caps: VtdDecodeCaps,
  out: VtdPasidConfig,
): VtdPasidConfig {
  out.sid = dev.sid;
  out.pasid = pasid;
  out.status = 0;
  out.fpd = false;
  if (pasid >= dev.pasidLimit) {
    out.status = VTD_FR.SM_PASID_TOO_LARGE;
    return out;
  }
  if (!load(mem, dev.pasidDirPtr + Math.floor(pasid / 64) * 8, 2)) {
    out.status = VTD_FR.SM_PASID_DIR_ENTRY_ACCESS;
    return out;
  }
  if (D_P(scratch) === 0) {
    out.status = VTD_FR.SM_PASID_DIR_ENTRY_NOT_PRESENT;
    out.fpd = D_FPD(scratch) !== 0;
    return out;
  }
  out.fpd = D_FPD(scratch) !== 0;
  const table = D_TBL(scratch);
  if (hasReservedBits(PASID_DIR_ENTRY, scratch) || aboveHaw(table, caps.haw)) {
    out.status = VTD_FR.SM_PASID_DIR_ENTRY_RESERVED;
    return out;
  }
  if (!load(mem, table + (pasid % 64) * 64, 16)) {
    out.status = VTD_FR.SM_PASID_ENTRY_ACCESS;
    return out;
  }
  if (E_P(scratch) === 0) {
    out.status = VTD_FR.SM_PASID_ENTRY_NOT_PRESENT;
    out.fpd = out.fpd || E_FPD(scratch) !== 0;
    return out;
  }
  out.fpd = out.fpd || E_FPD(scratch) !== 0;
  out.pgtt = E_PGTT(scratch);
  out.did = E_DID(scratch);
  out.aw = E_AW(scratch);
  out.slptptr = E_SLPTPTR(scratch);
  out.slee = E_SLEE(scratch) !== 0;
  out.slade = E_SLADE(scratch) !== 0;
  out.flptr = E_FLPTR(scratch);
  out.sre = E_SRE(scratch) !== 0;
  out.ere = E_ERE(scratch) !== 0;
  out.wpe = E_WPE(scratch) !== 0;
  out.smep = E_SMEP(scratch) !== 0;
  const flpm = E_FLPM(scratch);
  out.fsLevels = flpm === 1 ? 5 : 4;
  if (hasReservedBits(PASID_ENTRY, scratch)) {
    out.status = VTD_FR.SM_PASID_ENTRY_RESERVED;
    return out;
  }
  const usesFs = out.pgtt === PGTT_FL || out.pgtt === PGTT_NESTED;
  const usesSs = out.pgtt === PGTT_SL || out.pgtt === PGTT_NESTED;
  if ((usesFs && aboveHaw(out.flptr, caps.haw)) || (usesSs && aboveHaw(out.slptptr, caps.haw))) {
    out.status = VTD_FR.SM_PASID_ENTRY_RESERVED;
    return out;
  }
  let valid: boolean;
  switch (out.pgtt) {
    case PGTT_FL:
      valid = caps.flts;
      break;
    case PGTT_SL:
      valid = caps.slts;
      break;
    case PGTT_NESTED:
      valid = caps.nest && caps.flts && caps.slts;
      break;
    case PGTT_PT:
      valid = caps.passThrough;
      break;
    default:
      valid = false;
  }
  if (usesFs && (flpm > 1 || (flpm === 1 && !caps.fl5lp))) valid = false;
  if (usesSs && (caps.sagaw & (1 << out.aw)) === 0) valid = false;
  if (!valid) {
    out.status = VTD_FR.SM_PASID_ENTRY_INVALID;
    return out;
  }
  if (usesSs) {
    out.ssLevels = agawToLevels(out.aw);
    out.ssWidthPages = widthPagesOf(out.aw, caps);
  }
  return out;
}
