// The SMMUv3 driver's entry writer: which bits of an STE or CD the SMMU reads, and the ordered
// 64-bit stores (each followed by a configuration invalidation and CMD_SYNC) that move a live
// entry to a new value without the SMMU ever acting on a mix of the two.

import {
  bug,
  type Field,
  fieldOf,
  fieldsMask,
  type PhysMemory,
} from "@iommu-sim/iommu-core/platform";
import { CD } from "../format/cd.js";
import { EATS_S1CHK, EATS_TRANS, S1DSS_BYPASS, STE, STE_CFG_BYPASS } from "../format/ste.js";

/** 32-bit words in an STE or CD (8 qwords; word 2i is the low half of qword i). */
export const ENTRY_WORDS = 16;
/** 64-bit words in an STE or CD. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c NUM_ENTRY_QWORDS */
export const ENTRY_QWORDS = 8;

/**
 * What the writer needs to know about one kind of entry and one place it lives.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h struct arm_smmu_entry_writer_ops
 */
export interface EntryWriterOps {
  /** Set `used` (16 words, all of them written) to the bits the SMMU reads of `entry`. */
  getUsed(entry: Uint32Array, used: Uint32Array): void;
  /**
   * Set `safe` (16 words, all of them written) to the bits that may differ from `target` while
   * `cur` is live without the SMMU's behaviour mattering (the kernel's get_update_safe; STEs only).
   */
  getUpdateSafe?(cur: Uint32Array, target: Uint32Array, safe: Uint32Array): void;
  /** Make the SMMU drop what it cached of the entry and wait (CFGI_STE / CFGI_CD + CMD_SYNC). */
  sync(): void;
}

/** Options of `writeEntry`. */
export interface WriteEntryOptions {
  /**
   * Fault injection for the harness: store every differing qword in index order (qword 0 first),
   * then one sync. On a change that needs a breaking update this exposes a mixed entry to the SMMU.
   */
  readonly torn?: boolean;
}

const STE_V = fieldOf(STE, "V");
const STE_CONFIG = fieldOf(STE, "Config");
const STE_S1DSS = fieldOf(STE, "S1DSS");
const STE_EATS = fieldOf(STE, "EATS");
const STE_MEV = fieldOf(STE, "MEV");
const STE_S2S = fieldOf(STE, "S2S");

const M_STE_CFG = fieldsMask(STE, ["V", "Config"]);
// Stage 1 (Config[0]): the CD table, how it is fetched, and the fields stage 1 traffic carries.
// S2VMID tags even stage-1-only NS-EL1 translations.
const M_STE_S1 = fieldsMask(STE, [
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
const M_STE_SHCFG = fieldsMask(STE, ["SHCFG"]);
// Stage 2 (Config[1]). The kernel's list ends at S2R; S2AFFD, S2HA and S2HD are added here
// because the SMMU model reads them for every stage 2 configuration (hw/smmu-config.ts). Linux
// never sets them, so the kernel's ordering is unchanged, but a used set that left them out would
// let the writer change bits the SMMU acts on without a sync.
const M_STE_S2 = fieldsMask(STE, [
  "S2FWB",
  "EATS",
  "SHCFG",
  "MEV",
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
  "S2PTW",
  "S2S",
  "S2R",
  "S2TTB",
  "S2AFFD",
  "S2HA",
  "S2HD",
]);

const CD_V = fieldOf(CD, "V");
const CD_EPD0 = fieldOf(CD, "EPD0");
// With EPD0 set the SMMU ignores the TTB0 walk configuration.
const M_CD_TTB0_WALK = fieldsMask(CD, ["T0SZ", "TG0", "IR0", "OR0", "SH0", "TTB0"]);

// EATS values in place in their word (EATS is one word's bits 29:28).
const EATS_TRANS_BIT = (EATS_TRANS << STE_EATS.shift) >>> 0;
const EATS_S1CHK_BIT = (EATS_S1CHK << STE_EATS.shift) >>> 0;

function get(w: Uint32Array, f: Field): number {
  return ((w[f.word] as number) >>> f.shift) & f.mask;
}

function orInto(into: Uint32Array, m: Uint32Array): void {
  for (let i = 0; i < ENTRY_WORDS; i++) into[i] = ((into[i] as number) | (m[i] as number)) >>> 0;
}

/**
 * The STE bits the SMMU reads for `ste`'s configuration: V; with V = 1, Config; the stage 1
 * fields when Config[0] is set (plus SHCFG when S1DSS = bypass); the stage 2 fields when
 * Config[1] is set; SHCFG for bypass. Like the kernel, Config[0] and Config[1] are tested
 * whatever Config[2] is, which can only over-report for the reserved abort encodings.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_get_ste_used
 */
export function steUsed(ste: Uint32Array, used: Uint32Array): void {
  used.fill(0);
  used[STE_V.word] = STE_V.inPlace;
  if (get(ste, STE_V) === 0) return;
  orInto(used, M_STE_CFG);
  const cfg = get(ste, STE_CONFIG);
  if (cfg & 1) {
    orInto(used, M_STE_S1);
    // SHCFG applies to the substream-less traffic S1DSS lets through (13.5).
    if (get(ste, STE_S1DSS) === S1DSS_BYPASS) orInto(used, M_STE_SHCFG);
  }
  if (cfg & 2) orInto(used, M_STE_S2);
  if (cfg === STE_CFG_BYPASS) orInto(used, M_STE_SHCFG);
}

/**
 * The STE bits that may differ from `target` while `cur` is live: MEV always (it only changes
 * how many fault records are merged, and software must cope with merged records anyway); the
 * EATS "full ATS" bit unless either entry uses split-stage ATS or a stalling stage 2 (EATS is
 * changed only while ATS is disabled at the device, but S2S = 1 with EATS = 1 is ILLEGAL, and
 * half of 0b10 would read as 0b11).
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_get_ste_update_safe
 */
export function steUpdateSafe(cur: Uint32Array, target: Uint32Array, safe: Uint32Array): void {
  safe.fill(0);
  const ew = STE_EATS.word;
  const sw = STE_S2S.word;
  if (
    (((cur[ew] as number) | (target[ew] as number)) & EATS_S1CHK_BIT) === 0 &&
    (((cur[sw] as number) | (target[sw] as number)) & STE_S2S.inPlace) === 0
  )
    safe[ew] = ((safe[ew] as number) | EATS_TRANS_BIT) >>> 0;
  safe[STE_MEV.word] = ((safe[STE_MEV.word] as number) | STE_MEV.inPlace) >>> 0;
}

/**
 * The CD bits the SMMU reads: only V when V = 0; otherwise every bit, less T0SZ, TG0, IR0, OR0,
 * SH0 and TTB0 when EPD0 = 1 (then TTB0 is never walked), which is what lets an SVA CD switch
 * to and from its "released" EPD0 form hitlessly.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_get_cd_used
 */
export function cdUsed(cd: Uint32Array, used: Uint32Array): void {
  used.fill(0);
  if (get(cd, CD_V) === 0) {
    used[CD_V.word] = CD_V.inPlace;
    return;
  }
  used.fill(0xffffffff);
  if (get(cd, CD_EPD0) !== 0) {
    for (let i = 0; i < ENTRY_WORDS; i++)
      used[i] = ((used[i] as number) & ~(M_CD_TTB0_WALK[i] as number)) >>> 0;
  }
}

/**
 * Writer ops for STEs, less the sync: the kernel's used and update-safe functions.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_ste_writer_ops
 */
export const STE_USED_OPS: Pick<EntryWriterOps, "getUsed" | "getUpdateSafe"> = Object.freeze({
  getUsed: steUsed,
  getUpdateSafe: steUpdateSafe,
});

/**
 * Writer ops for CDs, less the sync (CDs have no update-safe bits).
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_cd_writer_ops
 */
export const CD_USED_OPS: Pick<EntryWriterOps, "getUsed"> = Object.freeze({ getUsed: cdUsed });

// Scratch of entryQwordDiff (it calls nothing that could come back here but the used functions).
const curUsed = new Uint32Array(ENTRY_WORDS);
const tgtUsed = new Uint32Array(ENTRY_WORDS);
const safeBits = new Uint32Array(ENTRY_WORDS);

/**
 * Which qwords have bits that both the SMMU reads and must change: bit q of the result is set
 * when qword q of `target` differs, in the bits the target configuration reads, from
 * `unusedUpdate`. `unusedUpdate` (16 words) is set to `cur` with every bit the current
 * configuration ignores (or may change safely) already at its target value. A target bit set
 * outside the target's own used bits is a model bug: it could never be cleaned up.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_entry_qword_diff
 */
export function entryQwordDiff(
  ops: Pick<EntryWriterOps, "getUsed" | "getUpdateSafe">,
  cur: Uint32Array,
  target: Uint32Array,
  unusedUpdate: Uint32Array,
): number {
  ops.getUsed(cur, curUsed);
  ops.getUsed(target, tgtUsed);
  safeBits.fill(0);
  ops.getUpdateSafe?.(cur, target, safeBits);
  let diff = 0;
  for (let i = 0; i < ENTRY_WORDS; i++) {
    const tu = tgtUsed[i] as number;
    const t = target[i] as number;
    // Safe bits matter only where both configurations read them; elsewhere the unused rule
    // already orders them.
    const safe = (safeBits[i] as number) & tu & (curUsed[i] as number);
    if ((t & ~tu) !== 0)
      bug(`entry writer: target word ${i} sets bits 0x${(t & ~tu).toString(16)} it does not use`);
    const cu = (curUsed[i] as number) & ~safe;
    const u = (((cur[i] as number) & cu) | (t & ~cu)) >>> 0;
    unusedUpdate[i] = u;
    if ((u & tu) >>> 0 !== t) diff |= 1 << (i >>> 1);
  }
  return diff;
}

// Per-depth scratch of writeEntry: the entry as it stands in memory, and the unused update. They
// live across ops.sync(), so a writeEntry reached from a sync gets its own pair.
const curFrames: Uint32Array[] = [];
const updFrames: Uint32Array[] = [];
let depth = 0;

/** Store the qwords [start, start+n) of `src` that differ from `cur`; sync once if any did. */
function entrySet(
  ops: EntryWriterOps,
  mem: PhysMemory,
  pa: number,
  cur: Uint32Array,
  src: Uint32Array,
  start: number,
  n: number,
): number {
  let changed = false;
  for (let q = start; q < start + n; q++) {
    const lo = src[2 * q] as number;
    const hi = src[2 * q + 1] as number;
    if (cur[2 * q] !== lo || cur[2 * q + 1] !== hi) {
      mem.write64(pa + 8 * q, lo, hi);
      cur[2 * q] = lo;
      cur[2 * q + 1] = hi;
      changed = true;
    }
  }
  if (!changed) return 0;
  ops.sync();
  return 1;
}

/**
 * Write `target` (16 words) over the STE or CD at `pa` (64-byte aligned) so that the SMMU never
 * acts on a configuration that is neither the old one nor the new one. The current value is read
 * from memory; only qwords that change are stored (as 64-bit single-copy-atomic stores), and a
 * step that changes nothing issues no sync. Three cases, by `entryQwordDiff`:
 * - one qword's used bits change (hitless): set every ignored bit to its final value, sync; store
 *   that critical qword, sync; store the rest (bits the new configuration ignores), sync;
 * - several (breaking): store qword 0 as 0 (V = 0), sync; store qwords 1-7, sync; store qword 0,
 *   sync;
 * - none: store whatever differs (ignored or update-safe bits), sync.
 * Returns the number of syncs issued. With `options.torn` every differing qword is stored in
 * index order and one sync follows (a fault injection, not the kernel's order).
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_write_entry
 */
export function writeEntry(
  ops: EntryWriterOps,
  mem: PhysMemory,
  pa: number,
  target: Uint32Array,
  options?: WriteEntryOptions,
): number {
  if (target.length !== ENTRY_WORDS) bug(`entry writer: target has ${target.length} words`);
  if (pa % 64 !== 0) bug(`entry writer: entry address 0x${pa.toString(16)} is not 64-byte aligned`);
  let cur = curFrames[depth];
  let upd = updFrames[depth];
  if (cur === undefined || upd === undefined) {
    cur = new Uint32Array(ENTRY_WORDS);
    upd = new Uint32Array(ENTRY_WORDS);
    curFrames[depth] = cur;
    updFrames[depth] = upd;
  }
  depth++;
  try {
    for (let i = 0; i < ENTRY_WORDS; i++) cur[i] = mem.read32(pa + 4 * i);
    if (options?.torn) return entrySet(ops, mem, pa, cur, target, 0, ENTRY_QWORDS);
    const diff = entryQwordDiff(ops, cur, target, upd);
    if (diff !== 0 && (diff & (diff - 1)) === 0) {
      const c = 31 - Math.clz32(diff);
      // The critical qword is stored by itself in the next step; leaving it alone here saves a
      // sync when it is the only one that changes.
      upd[2 * c] = cur[2 * c] as number;
      upd[2 * c + 1] = cur[2 * c + 1] as number;
      let syncs = entrySet(ops, mem, pa, cur, upd, 0, ENTRY_QWORDS);
      syncs += entrySet(ops, mem, pa, cur, target, c, 1);
      syncs += entrySet(ops, mem, pa, cur, target, 0, ENTRY_QWORDS);
      return syncs;
    }
    if (diff !== 0) {
      upd[0] = 0;
      upd[1] = 0;
      let syncs = entrySet(ops, mem, pa, cur, upd, 0, 1);
      syncs += entrySet(ops, mem, pa, cur, target, 1, ENTRY_QWORDS - 1);
      syncs += entrySet(ops, mem, pa, cur, target, 0, 1);
      return syncs;
    }
    return entrySet(ops, mem, pa, cur, target, 0, ENTRY_QWORDS);
  } finally {
    depth--;
  }
}
