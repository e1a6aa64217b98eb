// What the VT-d unit decodes from the root, context and PASID structures before it walks: small
// configuration objects that the context and PASID caches hold and the walks read (the
// counterpart of QEMU's VTDContextEntry/VTDPASIDEntry after decoding).

import {
  type Field,
  fieldOf,
  hasReservedBits,
  type PhysMemory,
} from "@iommu-sim/iommu-core/platform";
import {
  agawToLevels,
  agawWidth,
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

const TWO32 = 4294967296;
const scratch = new Uint32Array(16);

function load(mem: PhysMemory, pa: number, words: number): boolean {
  mem.busError = false;
  for (let i = 0; i < words; i += 2) {
    scratch[i] = mem.read64(pa + 4 * i);
    scratch[i + 1] = mem.hi;
  }
  return !mem.busError;
}

/** A field of at most 32 bits in one word of the loaded entry. */
function get(f: Field): number {
  return ((scratch[f.word] as number) >>> f.shift) & f.mask;
}

/** A table pointer (bits 63:12 of its qword) in place; pointers above 2^53 come out inexact, which
 * the HAW check catches anyway. */
function ptr(f: Field): number {
  const w = f.word;
  return (scratch[w + 1] as number) * TWO32 + (((scratch[w] as number) & 0xfffff000) >>> 0);
}

const R_P = fieldOf(ROOT_ENTRY, "P");
const R_CTP = fieldOf(ROOT_ENTRY, "CTP");
const SR_LP = fieldOf(SM_ROOT_ENTRY, "LP");
const SR_LCTP = fieldOf(SM_ROOT_ENTRY, "LCTP");
const SR_UP = fieldOf(SM_ROOT_ENTRY, "UP");
const SR_UCTP = fieldOf(SM_ROOT_ENTRY, "UCTP");
const C_P = fieldOf(CONTEXT_ENTRY, "P");
const C_FPD = fieldOf(CONTEXT_ENTRY, "FPD");
const C_TT = fieldOf(CONTEXT_ENTRY, "TT");
const C_SLPTPTR = fieldOf(CONTEXT_ENTRY, "SLPTPTR");
const C_AW = fieldOf(CONTEXT_ENTRY, "AW");
const C_DID = fieldOf(CONTEXT_ENTRY, "DID");
const SC_P = fieldOf(SM_CONTEXT_ENTRY, "P");
const SC_FPD = fieldOf(SM_CONTEXT_ENTRY, "FPD");
const SC_DTE = fieldOf(SM_CONTEXT_ENTRY, "DTE");
const SC_PASIDE = fieldOf(SM_CONTEXT_ENTRY, "PASIDE");
const SC_PRE = fieldOf(SM_CONTEXT_ENTRY, "PRE");
const SC_PDTS = fieldOf(SM_CONTEXT_ENTRY, "PDTS");
const SC_DIR = fieldOf(SM_CONTEXT_ENTRY, "PASIDDIRPTR");
const SC_RID_PASID = fieldOf(SM_CONTEXT_ENTRY, "RID_PASID");
const SC_RID_PRIV = fieldOf(SM_CONTEXT_ENTRY, "RID_PRIV");
const D_P = fieldOf(PASID_DIR_ENTRY, "P");
const D_FPD = fieldOf(PASID_DIR_ENTRY, "FPD");
const D_TBL = fieldOf(PASID_DIR_ENTRY, "SMPTBLPTR");
const E_P = fieldOf(PASID_ENTRY, "P");
const E_FPD = fieldOf(PASID_ENTRY, "FPD");
const E_AW = fieldOf(PASID_ENTRY, "AW");
const E_SLEE = fieldOf(PASID_ENTRY, "SLEE");
const E_PGTT = fieldOf(PASID_ENTRY, "PGTT");
const E_SLADE = fieldOf(PASID_ENTRY, "SLADE");
const E_SLPTPTR = fieldOf(PASID_ENTRY, "SLPTPTR");
const E_DID = fieldOf(PASID_ENTRY, "DID");
const E_SRE = fieldOf(PASID_ENTRY, "SRE");
const E_ERE = fieldOf(PASID_ENTRY, "ERE");
const E_FLPM = fieldOf(PASID_ENTRY, "FLPM");
const E_WPE = fieldOf(PASID_ENTRY, "WPE");
const E_SMEP = fieldOf(PASID_ENTRY, "SMEP");
const E_FLPTR = fieldOf(PASID_ENTRY, "FLPTR");

const HAW_LIMIT = new Float64Array(65);
for (let i = 0; i <= 64; i++) HAW_LIMIT[i] = 2 ** i;

function aboveHaw(pa: number, haw: number): boolean {
  return pa >= (HAW_LIMIT[haw] as number);
}

function widthPagesOf(aw: number, caps: VtdDecodeCaps): number {
  const width = Math.min(agawWidth(aw), caps.mgawWidth);
  return HAW_LIMIT[width - 12] as number;
}

/**
 * Decode the root and context entries of `sid` from the root table at `rta` into `cfg`.
 * `cfg.status` is 0 or the fault reason (legacy codes 0x1-0xD, scalable 0x38-0x48).
 *
 * @spec Intel VT-d Architecture Specification 3.4.x (legacy) and 3.4.3 (scalable-mode) address translation
 */
export function decodeDevConfig(
  mem: PhysMemory,
  rta: number,
  scalable: boolean,
  sid: number,
  caps: VtdDecodeCaps,
  cfg: VtdDevConfig,
): VtdDevConfig {
  cfg.sid = sid;
  cfg.scalable = scalable;
  cfg.status = 0;
  cfg.fpd = false;
  const bus = sid >>> 8;
  const devfn = sid & 0xff;
  if (!load(mem, rta + bus * 16, 4)) {
    cfg.status = scalable ? VTD_FR.SM_ROOT_ENTRY_ACCESS : VTD_FR.ROOT_TABLE_ACCESS;
    return cfg;
  }
  if (!scalable) {
    if (get(R_P) === 0) {
      cfg.status = VTD_FR.ROOT_NOT_PRESENT;
      return cfg;
    }
    const ctp = ptr(R_CTP);
    if (hasReservedBits(ROOT_ENTRY, scratch) || aboveHaw(ctp, caps.haw)) {
      cfg.status = VTD_FR.ROOT_ENTRY_RESERVED;
      return cfg;
    }
    if (!load(mem, ctp + devfn * 16, 4)) {
      cfg.status = VTD_FR.CONTEXT_TABLE_ACCESS;
      return cfg;
    }
    if (get(C_P) === 0) {
      cfg.status = VTD_FR.CONTEXT_NOT_PRESENT;
      return cfg;
    }
    cfg.fpd = get(C_FPD) !== 0;
    cfg.tt = get(C_TT);
    cfg.aw = get(C_AW);
    cfg.did = get(C_DID);
    cfg.slptptr = ptr(C_SLPTPTR);
    if (hasReservedBits(CONTEXT_ENTRY, scratch) || aboveHaw(cfg.slptptr, caps.haw)) {
      cfg.status = VTD_FR.CONTEXT_ENTRY_RESERVED;
      return cfg;
    }
    if (cfg.tt === TT_PASSTHROUGH) {
      if (!caps.passThrough) cfg.status = VTD_FR.CONTEXT_INVALID;
      return cfg;
    }
    if (cfg.tt !== TT_UNTRANSLATED && !(cfg.tt === TT_DEVTLB && caps.deviceTlb)) {
      cfg.status = VTD_FR.CONTEXT_INVALID;
      return cfg;
    }
    if ((caps.sagaw & (1 << cfg.aw)) === 0) {
      cfg.status = VTD_FR.CONTEXT_INVALID;
      return cfg;
    }
    cfg.levels = agawToLevels(cfg.aw);
    cfg.widthPages = widthPagesOf(cfg.aw, caps);
    return cfg;
  }
  const upper = devfn >= 0x80;
  const present = upper ? get(SR_UP) : get(SR_LP);
  if (present === 0) {
    cfg.status = VTD_FR.SM_ROOT_ENTRY_NOT_PRESENT;
    return cfg;
  }
  const ctp = upper ? ptr(SR_UCTP) : ptr(SR_LCTP);
  if (hasReservedBits(SM_ROOT_ENTRY, scratch) || aboveHaw(ctp, caps.haw)) {
    cfg.status = VTD_FR.SM_ROOT_ENTRY_RESERVED;
    return cfg;
  }
  if (!load(mem, ctp + (devfn & 0x7f) * 32, 8)) {
    cfg.status = VTD_FR.SM_CONTEXT_ENTRY_ACCESS;
    return cfg;
  }
  if (get(SC_P) === 0) {
    cfg.status = VTD_FR.SM_CONTEXT_ENTRY_NOT_PRESENT;
    return cfg;
  }
  cfg.fpd = get(SC_FPD) !== 0;
  cfg.dte = get(SC_DTE) !== 0 && caps.deviceTlb;
  cfg.paside = get(SC_PASIDE) !== 0;
  cfg.pre = get(SC_PRE) !== 0;
  cfg.pdts = get(SC_PDTS);
  cfg.pasidDirPtr = ptr(SC_DIR);
  cfg.ridPasid = get(SC_RID_PASID);
  cfg.ridPriv = get(SC_RID_PRIV) !== 0;
  if (hasReservedBits(SM_CONTEXT_ENTRY, scratch) || aboveHaw(cfg.pasidDirPtr, caps.haw)) {
    cfg.status = VTD_FR.SM_CONTEXT_ENTRY_RESERVED;
    return cfg;
  }
  if (cfg.ridPasid !== 0 && !caps.rps) {
    cfg.status = VTD_FR.SM_RID_PASID_ERROR;
    return cfg;
  }
  // The directory has 2^(PDTS+7) entries of 64 PASIDs each.
  const dirBits = cfg.pdts + 7 + 6;
  cfg.pasidLimit = HAW_LIMIT[Math.min(dirBits, caps.pasidBits)] as number;
  return cfg;
}

/**
 * Decode the PASID directory and table entries of (dev, pasid) into `cfg`. `cfg.status` is 0 or
 * the scalable-mode fault reason (0x46, 0x50-0x5B).
 *
 * @spec Intel VT-d Architecture Specification 9.5 and 9.6 (PASID directory and table entries)
 */
export function decodePasidConfig(
  mem: PhysMemory,
  dev: VtdDevConfig,
  pasid: number,
  caps: VtdDecodeCaps,
  cfg: VtdPasidConfig,
): VtdPasidConfig {
  cfg.sid = dev.sid;
  cfg.pasid = pasid;
  cfg.status = 0;
  cfg.fpd = false;
  if (pasid >= dev.pasidLimit) {
    cfg.status = VTD_FR.SM_PASID_TOO_LARGE;
    return cfg;
  }
  if (!load(mem, dev.pasidDirPtr + Math.floor(pasid / 64) * 8, 2)) {
    cfg.status = VTD_FR.SM_PASID_DIR_ENTRY_ACCESS;
    return cfg;
  }
  if (get(D_P) === 0) {
    cfg.status = VTD_FR.SM_PASID_DIR_ENTRY_NOT_PRESENT;
    cfg.fpd = get(D_FPD) !== 0;
    return cfg;
  }
  cfg.fpd = get(D_FPD) !== 0;
  const table = ptr(D_TBL);
  if (hasReservedBits(PASID_DIR_ENTRY, scratch) || aboveHaw(table, caps.haw)) {
    cfg.status = VTD_FR.SM_PASID_DIR_ENTRY_RESERVED;
    return cfg;
  }
  if (!load(mem, table + (pasid % 64) * 64, 16)) {
    cfg.status = VTD_FR.SM_PASID_ENTRY_ACCESS;
    return cfg;
  }
  if (get(E_P) === 0) {
    cfg.status = VTD_FR.SM_PASID_ENTRY_NOT_PRESENT;
    cfg.fpd = cfg.fpd || get(E_FPD) !== 0;
    return cfg;
  }
  cfg.fpd = cfg.fpd || get(E_FPD) !== 0;
  cfg.pgtt = get(E_PGTT);
  cfg.did = get(E_DID);
  cfg.aw = get(E_AW);
  cfg.slptptr = ptr(E_SLPTPTR);
  cfg.slee = get(E_SLEE) !== 0;
  cfg.slade = get(E_SLADE) !== 0;
  cfg.flptr = ptr(E_FLPTR);
  cfg.sre = get(E_SRE) !== 0;
  cfg.ere = get(E_ERE) !== 0;
  cfg.wpe = get(E_WPE) !== 0;
  cfg.smep = get(E_SMEP) !== 0;
  const flpm = get(E_FLPM);
  cfg.fsLevels = flpm === 1 ? 5 : 4;
  if (hasReservedBits(PASID_ENTRY, scratch)) {
    cfg.status = VTD_FR.SM_PASID_ENTRY_RESERVED;
    return cfg;
  }
  const usesFs = cfg.pgtt === PGTT_FL || cfg.pgtt === PGTT_NESTED;
  const usesSs = cfg.pgtt === PGTT_SL || cfg.pgtt === PGTT_NESTED;
  if ((usesFs && aboveHaw(cfg.flptr, caps.haw)) || (usesSs && aboveHaw(cfg.slptptr, caps.haw))) {
    cfg.status = VTD_FR.SM_PASID_ENTRY_RESERVED;
    return cfg;
  }
  let valid: boolean;
  switch (cfg.pgtt) {
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
  if (usesSs && (caps.sagaw & (1 << cfg.aw)) === 0) valid = false;
  if (!valid) {
    cfg.status = VTD_FR.SM_PASID_ENTRY_INVALID;
    return cfg;
  }
  if (usesSs) {
    cfg.ssLevels = agawToLevels(cfg.aw);
    cfg.ssWidthPages = widthPagesOf(cfg.aw, caps);
  }
  return cfg;
}
