// What the SMMU "sees" in an STE or CD at one instant: its outcome and the bits it uses for that
// configuration, comparable with another such view. The hardware half of the hitless-update check.

import { fieldOf, fieldsMask } from "@iommu-sim/iommu-core/platform";
import { CD } from "../format/cd.js";
import { S1DSS_BYPASS, STE, STE_CFG_BYPASS } from "../format/ste.js";
import { CFG_OK } from "./smmu-config.js";

/**
 * An STE or CD as the SMMU would see it: `status` is CFG_OK (usable; an abort STE is usable) or
 * the event a transaction through it would raise (C_BAD_STE, C_BAD_CD, C_BAD_STREAMID,
 * C_BAD_SUBSTREAMID, a fetch fault); `used` is the mask of the bits the SMMU reads for that
 * configuration and `words` the entry's 16 words with the other bits cleared.
 */
export interface SmmuEntryView {
  readonly kind: "ste" | "cd";
  readonly sid: number;
  /** The CD index, or -1 for an STE. */
  readonly ssid: number;
  readonly status: number;
  readonly used: Uint32Array;
  readonly words: Uint32Array;
}

const STE_V = fieldsMask(STE, ["V"]);
const STE_CFG = fieldsMask(STE, ["V", "Config"]);
const STE_S1 = fieldsMask(STE, [
  "S1Fmt",
  "S1ContextPtr",
  "S1CDMax",
  "S1DSS",
  "S1CIR",
  "S1COR",
  "S1CSH",
  "S1STALLD",
  "STRW",
  "EATS",
  "MEV",
  "S2VMID",
]);
const STE_SHCFG = fieldsMask(STE, ["SHCFG"]);
const STE_S2 = fieldsMask(STE, [
  "EATS",
  "SHCFG",
  "S2FWB",
  "S2VMID",
  "S2T0SZ",
  "S2SL0",
  "S2IR0",
  "S2OR0",
  "S2SH0",
  "S2TG",
  "S2PS",
  "S2AA64",
  "S2ENDI",
  "S2AFFD",
  "S2PTW",
  "S2HD",
  "S2HA",
  "S2S",
  "S2R",
  "S2TTB",
]);
const CD_V = fieldsMask(CD, ["V"]);
// The fields the view itself branches on.
const F_STE_V = fieldOf(STE, "V");
const F_STE_CONFIG = fieldOf(STE, "Config");
const F_STE_S1DSS = fieldOf(STE, "S1DSS");
const F_CD_V = fieldOf(CD, "V");
const F_CD_EPD0 = fieldOf(CD, "EPD0");

/** A field of at most 32 bits from `words`. */
function get(words: Uint32Array, f: { word: number; shift: number; mask: number }): number {
  return ((words[f.word] as number) >>> f.shift) & f.mask;
}
const CD_TTB0_WALK = fieldsMask(CD, ["T0SZ", "TG0", "IR0", "OR0", "SH0", "TTB0"]);

function or(into: Uint32Array, m: Uint32Array): void {
  for (let i = 0; i < into.length; i++) into[i] = ((into[i] as number) | (m[i] as number)) >>> 0;
}

function masked(words: Uint32Array, used: Uint32Array): Uint32Array {
  const out = new Uint32Array(16);
  for (let i = 0; i < 16; i++) out[i] = ((words[i] as number) & (used[i] as number)) >>> 0;
  return out;
}

/**
 * The view of STE `words` whose decode gave `status`: V; with V = 1 Config; stage 1 fields
 * when Config[0], stage 2 fields when Config[1], SHCFG for bypass (or S1DSS bypass), as the
 * kernel's arm_smmu_get_ste_used lists them plus the stage 2 flags this model reads (S2AFFD,
 * S2HA, S2HD).
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_get_ste_used
 */
export function viewOfSte(sid: number, status: number, words: Uint32Array): SmmuEntryView {
  const used = new Uint32Array(16);
  or(used, STE_V);
  if (get(words, F_STE_V) !== 0) {
    or(used, STE_CFG);
    const cfg = get(words, F_STE_CONFIG);
    if (cfg >= 4) {
      if (cfg & 1) {
        or(used, STE_S1);
        if (get(words, F_STE_S1DSS) === S1DSS_BYPASS) or(used, STE_SHCFG);
      }
      if (cfg & 2) or(used, STE_S2);
      if (cfg === STE_CFG_BYPASS) or(used, STE_SHCFG);
    }
  }
  return Object.freeze({ kind: "ste", sid, ssid: -1, status, used, words: masked(words, used) });
}

/**
 * The view of CD `words` with outcome `status`: V only when V = 0, otherwise every bit except
 * the TTB0 walk fields when EPD0 = 1.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_get_cd_used
 */
export function viewOfCd(
  sid: number,
  ssid: number,
  status: number,
  words: Uint32Array,
): SmmuEntryView {
  const used = new Uint32Array(16);
  if (get(words, F_CD_V) !== 0) {
    used.fill(0xffffffff);
    if (get(words, F_CD_EPD0) !== 0) {
      for (let i = 0; i < 16; i++)
        used[i] = ((used[i] as number) & ~(CD_TTB0_WALK[i] as number)) >>> 0;
    }
  } else {
    or(used, CD_V);
  }
  return Object.freeze({ kind: "cd", sid, ssid, status, used, words: masked(words, used) });
}

/** Whether two views show the same configuration: same outcome, same used bits, same values. */
export function smmuConfigEqual(a: SmmuEntryView, b: SmmuEntryView): boolean {
  if (a.kind !== b.kind || a.status !== b.status) return false;
  for (let i = 0; i < 16; i++) {
    if (a.used[i] !== b.used[i] || a.words[i] !== b.words[i]) return false;
  }
  return true;
}

/** Whether a view is a legal configuration (an abort STE is legal). */
export function smmuViewLegal(v: SmmuEntryView): boolean {
  return v.status === CFG_OK;
}
