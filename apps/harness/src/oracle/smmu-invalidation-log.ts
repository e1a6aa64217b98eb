// The commands each SMMU executed, in order, so that a stale cache entry can be told apart: no
// command covered it (one is missing), one did and the entry was filled again after it (the
// invalidation came too early: before the entry was cleared, or before a walk that raced with it),
// one was aimed at it with a wrong parameter, or one that covers it still waits in the command
// queue (issued, never waited for).

import {
  ATC_INV_SIZE_ALL,
  CFGI_ALL_RANGE,
  CMD_ATC_INV,
  CMD_CFGI_CD,
  CMD_CFGI_STE,
  CMD_CFGI_STE_RANGE,
  CMD_TLBI_NH_ASID,
  CMD_TLBI_NH_VA,
  CMD_TLBI_S2_IPA,
  CMDQ_OP,
  cmdLayout,
  cmdName,
  Q_WR_MASK,
  SMMU_REG,
} from "@iommu-sim/arm-smmu/format";
import {
  SMMU_ASID_IPA,
  SMMU_TLB_NESTED,
  SMMU_TLB_S1,
  SMMU_TLB_S2,
  SMMU_VMID_EL2,
  SmmuConfigCache,
  SmmuTlb,
  type SmmuV3,
  SmmuWalkCache,
} from "@iommu-sim/arm-smmu/hw";
import { Atc, NO_PASID } from "@iommu-sim/iommu-core";
import {
  decode,
  type Field,
  fieldOf,
  getField,
  setField,
  TWO32,
} from "@iommu-sim/iommu-core/platform";
import { hex, type StaleEntry } from "./violation.js";

const PAGE = 4096;
/** Commands kept per log. */
const KEEP = 4096;

// Command fields (read only when a diagnosis decodes a command).
const F_SID = fieldOf(CMD_CFGI_STE, "StreamID");
const F_SSID = fieldOf(CMD_CFGI_CD, "SubstreamID");
const F_RANGE = fieldOf(CMD_CFGI_STE_RANGE, "Range");
const F_VMID = fieldOf(CMD_TLBI_NH_ASID, "VMID");
const F_ASID = fieldOf(CMD_TLBI_NH_ASID, "ASID");
const F_LEAF = fieldOf(CMD_TLBI_NH_VA, "Leaf");
const F_NUM = fieldOf(CMD_TLBI_NH_VA, "NUM");
const F_SCALE = fieldOf(CMD_TLBI_NH_VA, "SCALE");
const F_TTL = fieldOf(CMD_TLBI_NH_VA, "TTL");
const F_TG = fieldOf(CMD_TLBI_NH_VA, "TG");
const F_VA = fieldOf(CMD_TLBI_NH_VA, "Address");
const F_IPA = fieldOf(CMD_TLBI_S2_IPA, "IPA");
const F_ATC_SSV = fieldOf(CMD_ATC_INV, "SSV");
const F_ATC_GLOBAL = fieldOf(CMD_ATC_INV, "Global");
const F_ATC_SIZE = fieldOf(CMD_ATC_INV, "Size");
const F_ATC_ADDR = fieldOf(CMD_ATC_INV, "Address");

/** A command that covered an entry, as reported (Violation.earlyInvalidation). */
export interface SmmuCoveringCommand {
  readonly descriptor: string;
  readonly time: number;
  readonly fields: Readonly<Record<string, string | number>>;
}

/** A command that was aimed at an entry and missed it: one parameter was wrong. */
export interface SmmuMissedCommand extends SmmuCoveringCommand {
  /** What made it miss, in words ("its ASID 6 is not the entry's 5"). */
  readonly reason: string;
}

/** A command still in an SMMU's command queue (published, not consumed) that covers an entry. */
export interface SmmuPendingCommand {
  readonly descriptor: string;
  readonly fields: Readonly<Record<string, string | number>>;
  /** CMDQ_CONS and CMDQ_PROD (index and wrap) when it was found. */
  readonly cons: number;
  readonly prod: number;
}

/**
 * Every SMMU's executed commands, numbered across SMMUs. Recording copies the command's four
 * words into a ring (no decoding, no allocation: it runs on every command); a diagnosis decodes
 * what it reads back. Each SMMU's `commandObserver` is taken (one already set is still called).
 */
export class SmmuInvalidationLog {
  private seq = 0;
  private readonly words = new Uint32Array(KEEP * 4);
  private readonly times = new Float64Array(KEEP);
  private readonly unitOf = new Int32Array(KEEP);
  private readonly units: string[] = [];
  /** Per SMMU: IDR3.RIL (without it the range fields of TLBI commands are ignored). */
  private readonly ril: boolean[] = [];

  constructor(
    smmus: readonly SmmuV3[],
    private readonly now: () => number,
  ) {
    for (const hw of smmus) {
      const index = this.units.length;
      this.units.push(hw.name);
      this.ril.push(hw.features.ril);
      const prev = hw.commandObserver;
      hw.commandObserver =
        prev === null
          ? (w) => this.add(index, w)
          : (w, at) => {
              prev(w, at);
              this.add(index, w);
            };
    }
  }

  /** The number the next command gets: what an operation records when it starts. */
  mark(): number {
    return this.seq;
  }

  private add(unit: number, w: Uint32Array): void {
    const slot = this.seq % KEEP;
    const at = slot * 4;
    const words = this.words;
    words[at] = w[0] as number;
    words[at + 1] = w[1] as number;
    words[at + 2] = w[2] as number;
    words[at + 3] = w[3] as number;
    this.times[slot] = this.now();
    this.unitOf[slot] = unit;
    this.seq++;
  }

  /**
   * The first command executed at or after `mark` by the SMMU named `smmu` that covers `entry`
   * (ATC entries: an ATC_INV for StreamID `sid`; STE and CD cache entries: of StreamID `sid`),
   * or null. Only the last KEEP commands are kept; a negative mark searches nothing.
   */
  coveringSince(
    mark: number,
    smmu: string,
    sid: number,
    entry: StaleEntry,
  ): SmmuCoveringCommand | null {
    if (mark < 0) return null;
    const unit = this.units.indexOf(smmu);
    if (unit < 0) return null;
    const probe = probeOf(entry, sid >>> 0);
    if (probe === null) return null;
    for (let s = Math.max(mark, this.seq - KEEP); s < this.seq; s++) {
      const slot = s % KEEP;
      if (this.unitOf[slot] !== unit) continue;
      const w = this.words.subarray(slot * 4, slot * 4 + 4);
      if (!probe(w, this.ril[unit] as boolean)) continue;
      return {
        descriptor: cmdName(w[0] as number),
        time: this.times[slot] as number,
        fields: fieldsOf(w),
      };
    }
    return null;
  }

  /**
   * The first command the SMMU named `smmu` executed in [mark, end) (`end` < 0: up to now; the
   * operation that removed the entry) that was aimed at `entry`
   * (of StreamID `sid`) and missed it because of one parameter: carried out with that parameter
   * as the entry needs it (the ASID, VMID, StreamID or SubstreamID the entry is tagged with, the
   * TLBI opcode of the entry's translation regime, no TTL hint, Leaf = 0 for a walk-cache entry,
   * an ATC_INV span two or four times as large, a range moved onto an entry just past its end or
   * just before its start), it would have removed the entry. Null when no command was that close
   * (the invalidation is missing, not wrong). "Aimed at" is a guess, so a report names the
   * command and the parameter for a reader to judge.
   */
  missedSince(
    mark: number,
    end: number,
    smmu: string,
    sid: number,
    entry: StaleEntry,
  ): SmmuMissedCommand | null {
    if (mark < 0) return null;
    const unit = this.units.indexOf(smmu);
    if (unit < 0) return null;
    const probe = probeOf(entry, sid >>> 0);
    if (probe === null) return null;
    const ril = this.ril[unit] as boolean;
    const relax = relaxationsOf(entry, sid >>> 0, ril);
    const copy = new Uint32Array(4);
    const last = end < 0 ? this.seq : Math.min(end, this.seq);
    for (let s = Math.max(mark, this.seq - KEEP); s < last; s++) {
      const slot = s % KEEP;
      if (this.unitOf[slot] !== unit) continue;
      const w = this.words.subarray(slot * 4, slot * 4 + 4);
      if (probe(w, ril)) continue;
      for (const r of relax) {
        copy.set(w);
        const reason = r(copy);
        if (reason === null || !probe(copy, ril)) continue;
        return {
          descriptor: cmdName(w[0] as number),
          time: this.times[slot] as number,
          fields: fieldsOf(w),
          reason,
        };
      }
    }
    return null;
  }
}

/**
 * A command in `hw`'s command queue between CMDQ_CONS and CMDQ_PROD (published by the driver, not
 * yet consumed by the SMMU) that would remove `entry` of StreamID `sid`, or null: the driver
 * issued the invalidation but did not wait for a CMD_SYNC after it, so nothing made the SMMU carry
 * it out before the operation returned. Reads registers and queue memory only.
 *
 * @spec Arm SMMUv3 (IHI 0070) 3.5.1 (command queue), 4.7.3 (CMD_SYNC completes what precedes it)
 */
export function pendingCovering(
  hw: SmmuV3,
  sid: number,
  entry: StaleEntry,
): SmmuPendingCommand | null {
  const probe = probeOf(entry, sid >>> 0);
  if (probe === null) return null;
  const lo = hw.read32(SMMU_REG.CMDQ_BASE) >>> 0;
  const hi = hw.read32(SMMU_REG.CMDQ_BASE + 4) >>> 0;
  const log2 = Math.min(lo & 31, hw.features.cmdqs);
  const bytes = Math.max(32, 16 * 2 ** log2);
  const a = (hi & 0xffffff) * TWO32 + ((lo & ~31) >>> 0);
  const base = a - (a % bytes);
  const prod = hw.read32(SMMU_REG.CMDQ_PROD) & Q_WR_MASK;
  const cons = hw.read32(SMMU_REG.CMDQ_CONS) & Q_WR_MASK;
  const wrap = 2 ** (log2 + 1) - 1;
  const mem = hw.mem;
  const busError = mem.busError;
  const w = new Uint32Array(4);
  let found: SmmuPendingCommand | null = null;
  for (let p = cons & wrap; p !== (prod & wrap) && found === null; p = (p + 1) & wrap) {
    const at = base + (p & (2 ** log2 - 1)) * 16;
    w[0] = mem.read64(at);
    w[1] = mem.hi;
    w[2] = mem.read64(at + 8);
    w[3] = mem.hi;
    if (probe(w, hw.features.ril))
      found = { descriptor: cmdName(w[0] as number), fields: fieldsOf(w), cons, prod };
  }
  mem.busError = busError;
  return found;
}

/** A command's non-zero fields, for a report (hex for addresses and values above 0xffff). */
function fieldsOf(w: Uint32Array): Record<string, string | number> {
  const layout = cmdLayout(w[0] as number);
  const out: Record<string, string | number> = {};
  if (layout === null) return out;
  const f = decode(layout, w);
  for (const field of layout.fields) {
    const v = f[field.name];
    if (field.name === "Opcode" || v === undefined || v === 0 || v === 0n) continue;
    out[field.name] = typeof v === "bigint" || field.addr || v > 0xffff ? `0x${v.toString(16)}` : v;
  }
  return out;
}

/** Whether a command (its words, and the SMMU's IDR3.RIL) would have removed the entry. */
type Probe = (w: Uint32Array, ril: boolean) => boolean;

function num(v: unknown): number {
  return typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : Number(v ?? Number.NaN);
}

function get(w: Uint32Array, f: Field): number {
  return getField(f, w);
}

/**
 * How to test commands against `entry`: the entry is put alone into a scratch copy of the cache
 * it came from, and a command covers it when carrying the command out on that copy, with the
 * SMMU's own invalidation methods, removes it. So the scopes are the hardware model's exactly.
 */
function probeOf(entry: StaleEntry, sid: number): Probe | null {
  const f = entry.fields;
  switch (entry.cache) {
    case "ste-cache":
    case "cd-cache": {
      const cd = entry.cache === "cd-cache";
      const ssid = cd ? num(f.SSID) : 0;
      if (!Number.isInteger(ssid)) return null;
      return (w) => {
        const c = new SmmuConfigCache<number, number>(1, 1);
        if (cd) c.insertCd(sid, ssid, 1);
        else c.insertSte(sid, 1);
        if (!applyCfgi(c, w)) return false;
        return cd ? c.peekCd(sid, ssid) === undefined : c.peekSte(sid) === undefined;
      };
    }
    case "tlb": {
      const el2 = f.el2 === true;
      const vmid = el2 ? SMMU_VMID_EL2 : num(f.VMID);
      const asid = f.ASID === null ? SMMU_ASID_IPA : num(f.ASID);
      const vpn = num(f.iova) / PAGE;
      const sizeShift = Math.log2(num(f.size));
      const kind =
        f.kind === "stage 2" ? SMMU_TLB_S2 : f.kind === "nested" ? SMMU_TLB_NESTED : SMMU_TLB_S1;
      const tg = num(f.granule ?? 0);
      const level = num(f.level ?? -2);
      if (
        !Number.isInteger(vmid) ||
        !Number.isInteger(asid) ||
        !Number.isInteger(vpn) ||
        !Number.isInteger(sizeShift) ||
        sizeShift < 12 ||
        sizeShift > 42 ||
        ![0, 12, 14, 16].includes(tg) ||
        !Number.isInteger(level) ||
        level < -2 ||
        level > 3
      )
        return null;
      return (w, ril) => {
        const t = new SmmuTlb(1, 1);
        t.insert(vmid, asid, vpn, sizeShift, f.global === true, kind, 0, 0, tg, level);
        return applyTlbi(t, w, ril) && t.size() === 0;
      };
    }
    case "walk-cache": {
      const el2 = f.el2 === true;
      const vmid = el2 ? SMMU_VMID_EL2 : num(f.VMID);
      const stage = num(f.stage);
      const asid = stage === 2 ? 0 : num(f.ASID);
      const level = num(f.level);
      const tg = num(f.granule);
      const vpn = num(f.iova) / PAGE;
      if (
        (stage !== 1 && stage !== 2) ||
        ![12, 14, 16].includes(tg) ||
        !Number.isInteger(level) ||
        level < -1 ||
        level > 2 ||
        !Number.isInteger(vmid) ||
        !Number.isInteger(asid) ||
        !Number.isInteger(vpn)
      )
        return null;
      return (w, ril) => {
        const c = new SmmuWalkCache(1);
        c.insert(vmid, asid, stage, level, tg, vpn, 0, 0);
        return applyTlbi(c, w, ril) && c.size() === 0;
      };
    }
    case "atc": {
      const pasid = f.pasid === null || f.pasid === undefined ? NO_PASID : num(f.pasid);
      const vpn = num(f.iova) / PAGE;
      const sizeShift = Math.log2(num(f.size));
      if (
        !Number.isInteger(vpn) ||
        !Number.isInteger(sizeShift) ||
        sizeShift < 12 ||
        sizeShift > 64
      )
        return null;
      return (w) => {
        if (((w[0] as number) & 0xff) !== CMDQ_OP.ATC_INV || get(w, F_SID) !== sid) return false;
        // As SmmuV3 sends it to the device: 2^Size pages aligned at Address, or everything.
        const size = get(w, F_ATC_SIZE);
        const pfn = get(w, F_ATC_ADDR);
        const pages = size >= ATC_INV_SIZE_ALL ? 0 : 2 ** size;
        const base = pages === 0 ? 0 : pfn - (pfn % pages);
        const ssv = get(w, F_ATC_SSV) !== 0;
        const atc = new Atc(1);
        atc.insert(pasid, vpn, sizeShift, 0, 0);
        return (
          atc.invalidate(
            ssv ? get(w, F_SSID) : NO_PASID,
            base,
            pages,
            ssv && get(w, F_ATC_GLOBAL) !== 0,
          ) > 0
        );
      };
    }
    default:
      return null;
  }
}

/** Carry out a CFGI_* command on `c` as SmmuV3 does; false for any other command. */
function applyCfgi(c: SmmuConfigCache<number, number>, w: Uint32Array): boolean {
  const sid = get(w, F_SID);
  const leaf = get(w, F_LEAF) !== 0;
  switch ((w[0] as number) & 0xff) {
    case CMDQ_OP.CFGI_STE:
      c.cfgiSte(sid, leaf);
      return true;
    case CMDQ_OP.CFGI_STE_RANGE: {
      const range = get(w, F_RANGE);
      if (range === CFGI_ALL_RANGE) c.cfgiAll();
      else c.cfgiSteRange(sid, range);
      return true;
    }
    case CMDQ_OP.CFGI_CD:
      c.cfgiCd(sid, get(w, F_SSID), leaf);
      return true;
    case CMDQ_OP.CFGI_CD_ALL:
      c.cfgiCdAll(sid);
      return true;
    default:
      return false;
  }
}

/** The TLB and the walk cache answer the same TLBI_* calls. */
type TlbiTarget = Pick<
  SmmuTlb,
  | "invalidateAll"
  | "invalidateVmid"
  | "invalidateNhAll"
  | "invalidateAsid"
  | "invalidateVa"
  | "invalidateVaa"
  | "invalidateS2Ipa"
  | "invalidateEl2All"
  | "invalidateEl2Asid"
  | "invalidateEl2Va"
  | "invalidateEl2Vaa"
>;

/**
 * Carry out a TLBI_* command on `t` as SmmuV3 does (the range from TG/NUM/SCALE with RIL, one
 * page otherwise); false for any other command.
 *
 * @spec Arm SMMUv3 (IHI 0070) 4.4.1.1, 4.4.2, 4.4.3, 4.4.4
 */
function applyTlbi(t: TlbiTarget, w: Uint32Array, ril: boolean): boolean {
  const op = (w[0] as number) & 0xff;
  const vmid = get(w, F_VMID);
  const asid = get(w, F_ASID);
  switch (op) {
    case CMDQ_OP.TLBI_NH_ALL:
      t.invalidateNhAll(vmid);
      return true;
    case CMDQ_OP.TLBI_NH_ASID:
      t.invalidateAsid(vmid, asid);
      return true;
    case CMDQ_OP.TLBI_EL2_ALL:
      t.invalidateEl2All();
      return true;
    case CMDQ_OP.TLBI_EL2_ASID:
      t.invalidateEl2Asid(asid);
      return true;
    case CMDQ_OP.TLBI_S12_VMALL:
      t.invalidateVmid(vmid);
      return true;
    case CMDQ_OP.TLBI_NSNH_ALL:
      t.invalidateAll();
      return true;
    case CMDQ_OP.TLBI_NH_VA:
    case CMDQ_OP.TLBI_NH_VAA:
    case CMDQ_OP.TLBI_EL2_VA:
    case CMDQ_OP.TLBI_EL2_VAA:
    case CMDQ_OP.TLBI_S2_IPA:
      break;
    default:
      return false;
  }
  const leaf = get(w, F_LEAF) !== 0;
  let tg = 0;
  let ttl = 0;
  let pages = 1;
  if (ril) {
    tg = get(w, F_TG);
    ttl = get(w, F_TTL);
    if (tg === 2 && ttl === 1) ttl = 0;
    if (tg !== 0) pages = (get(w, F_NUM) + 1) * 2 ** (get(w, F_SCALE) & 0x1f) * 2 ** (2 * tg - 2);
  }
  const tgShift = tg === 0 ? 0 : 10 + 2 * tg;
  const vpn = op === CMDQ_OP.TLBI_S2_IPA ? get(w, F_IPA) : get(w, F_VA);
  switch (op) {
    case CMDQ_OP.TLBI_NH_VA:
      t.invalidateVa(vmid, asid, vpn, pages, leaf, ttl, tgShift);
      break;
    case CMDQ_OP.TLBI_NH_VAA:
      t.invalidateVaa(vmid, vpn, pages, leaf, ttl, tgShift);
      break;
    case CMDQ_OP.TLBI_EL2_VA:
      t.invalidateEl2Va(asid, vpn, pages, leaf, ttl, tgShift);
      break;
    case CMDQ_OP.TLBI_EL2_VAA:
      t.invalidateEl2Vaa(vpn, pages, leaf, ttl, tgShift);
      break;
    default:
      t.invalidateS2Ipa(vmid, vpn, pages, leaf, ttl, tgShift);
  }
  return true;
}

/**
 * One way a command can be set right for an entry: it changes the command's words in place and
 * says what was wrong, or returns null when that parameter was right already (or does not apply).
 */
type Relaxation = (w: Uint32Array) => string | null;

/** TLBI opcodes that take an address (and the range fields). */
const RANGE_TLBI: ReadonlySet<number> = new Set([
  CMDQ_OP.TLBI_NH_VA,
  CMDQ_OP.TLBI_NH_VAA,
  CMDQ_OP.TLBI_EL2_VA,
  CMDQ_OP.TLBI_EL2_VAA,
  CMDQ_OP.TLBI_S2_IPA,
]);

/** TLBI opcodes whose ASID field selects entries. */
const ASID_TLBI: ReadonlySet<number> = new Set([
  CMDQ_OP.TLBI_NH_VA,
  CMDQ_OP.TLBI_NH_ASID,
  CMDQ_OP.TLBI_EL2_VA,
  CMDQ_OP.TLBI_EL2_ASID,
]);

/** TLBI opcodes whose VMID field selects entries. */
const VMID_TLBI: ReadonlySet<number> = new Set([
  CMDQ_OP.TLBI_NH_ALL,
  CMDQ_OP.TLBI_NH_ASID,
  CMDQ_OP.TLBI_NH_VA,
  CMDQ_OP.TLBI_NH_VAA,
  CMDQ_OP.TLBI_S2_IPA,
  CMDQ_OP.TLBI_S12_VMALL,
]);

function opOf(w: Uint32Array): number {
  return (w[0] as number) & 0xff;
}

/** The translation regime a TLBI opcode serves, named by its range opcode. */
function regimeOf(op: number): number {
  if (op === CMDQ_OP.TLBI_S2_IPA || op === CMDQ_OP.TLBI_S12_VMALL) return CMDQ_OP.TLBI_S2_IPA;
  if (
    op === CMDQ_OP.TLBI_EL2_ALL ||
    op === CMDQ_OP.TLBI_EL2_ASID ||
    op === CMDQ_OP.TLBI_EL2_VA ||
    op === CMDQ_OP.TLBI_EL2_VAA
  )
    return CMDQ_OP.TLBI_EL2_VA;
  return CMDQ_OP.TLBI_NH_VA;
}

/** The pages a range TLBI covers from its address, as `applyTlbi` decodes them. */
function tlbiPages(w: Uint32Array, ril: boolean): number {
  if (!ril) return 1;
  const tg = get(w, F_TG);
  if (tg === 0) return 1;
  return (get(w, F_NUM) + 1) * 2 ** (get(w, F_SCALE) & 0x1f) * 2 ** (2 * tg - 2);
}

/** The field holding a range TLBI's input page number. */
function addrField(w: Uint32Array): Field {
  return opOf(w) === CMDQ_OP.TLBI_S2_IPA ? F_IPA : F_VA;
}

/** Set `field` of `w` to `value`, saying what it was; null when it was `value` already. */
function retag(w: Uint32Array, field: Field, value: number): number | null {
  const was = get(w, field);
  if (was === value) return null;
  setField(field, w, value);
  return was;
}

/** The relaxations to try for `entry` (of StreamID `sid`), most specific first. */
function relaxationsOf(entry: StaleEntry, sid: number, ril: boolean): Relaxation[] {
  switch (entry.cache) {
    case "ste-cache":
    case "cd-cache":
      return configRelaxations(entry, sid);
    case "tlb":
    case "walk-cache":
      return tlbRelaxations(entry, ril);
    case "atc":
      return atcRelaxations(entry, sid);
    default:
      return [];
  }
}

function configRelaxations(entry: StaleEntry, sid: number): Relaxation[] {
  const cd = entry.cache === "cd-cache";
  const ssid = cd ? num(entry.fields.SSID) : 0;
  const cfgi = (w: Uint32Array) =>
    opOf(w) === CMDQ_OP.CFGI_STE || opOf(w) === CMDQ_OP.CFGI_CD || opOf(w) === CMDQ_OP.CFGI_CD_ALL;
  return [
    (w) => {
      if (!cfgi(w)) return null;
      const was = retag(w, F_SID, sid);
      return was === null ? null : `its StreamID ${hex(was)} is not the entry's ${hex(sid)}`;
    },
    (w) => {
      if (!cd || opOf(w) !== CMDQ_OP.CFGI_CD) return null;
      const was = retag(w, F_SSID, ssid);
      return was === null ? null : `its SubstreamID ${was} is not the entry's ${ssid}`;
    },
  ];
}

function tlbRelaxations(entry: StaleEntry, ril: boolean): Relaxation[] {
  const f = entry.fields;
  const walk = entry.cache === "walk-cache";
  const el2 = f.el2 === true;
  const stage2 = walk ? num(f.stage) === 2 : f.kind === "stage 2";
  const vmid = el2 ? -1 : num(f.VMID);
  const asid = f.ASID === null || f.ASID === undefined ? -1 : num(f.ASID);
  const vpn = num(f.iova) / PAGE;
  const pages = walk ? 1 : num(f.size) / PAGE;
  const regime = stage2 ? CMDQ_OP.TLBI_S2_IPA : el2 ? CMDQ_OP.TLBI_EL2_VA : CMDQ_OP.TLBI_NH_VA;
  const what = walk ? "walk-cache entries" : `${String(f.kind)} TLB entries`;
  const out: Relaxation[] = [
    (w) => {
      const op = opOf(w);
      if (!RANGE_TLBI.has(op) || regimeOf(op) === regime) return null;
      const addr = get(w, addrField(w));
      w[0] = (((w[0] as number) & ~0xff) | regime) >>> 0;
      setField(addrField(w), w, addr);
      if (vmid >= 0) setField(F_VMID, w, vmid);
      if (asid >= 0) setField(F_ASID, w, asid);
      return `${cmdName(op)} never removes ${what}: they need ${cmdName(regime)}`;
    },
  ];
  if (asid >= 0)
    out.push((w) => {
      if (!ASID_TLBI.has(opOf(w))) return null;
      const was = retag(w, F_ASID, asid);
      return was === null ? null : `its ASID ${was} is not the entry's ${asid}`;
    });
  if (vmid >= 0)
    out.push((w) => {
      if (!VMID_TLBI.has(opOf(w))) return null;
      const was = retag(w, F_VMID, vmid);
      return was === null ? null : `its VMID ${was} is not the entry's ${vmid}`;
    });
  out.push(
    (w) => {
      if (!RANGE_TLBI.has(opOf(w)) || !ril) return null;
      const ttl = retag(w, F_TTL, 0);
      return ttl === null
        ? null
        : `its TTL ${ttl} limits it to level ${ttl} entries, and the entry is a level ${f.level} one`;
    },
    (w) => {
      if (!walk || !RANGE_TLBI.has(opOf(w)) || retag(w, F_LEAF, 0) === null) return null;
      return "Leaf = 1 removes leaf entries only: the walk cache keeps pointing at a table that is gone (a freed table needs a non-leaf invalidation)";
    },
    (w) => {
      if (!RANGE_TLBI.has(opOf(w))) return null;
      // Close misses only: the entry starts within one command length past the range's end, or
      // ends within one before its start.
      const start = get(w, addrField(w));
      const n = tlbiPages(w, ril);
      const after = vpn >= start + n && vpn < start + 2 * n;
      const before = vpn < start && vpn + pages > start - n;
      if (!after && !before) return null;
      setField(addrField(w), w, vpn);
      const range = `[${hex(start * PAGE)}, ${hex((start + n) * PAGE)})`;
      return after
        ? `its range ${range} (${n} page${n === 1 ? "" : "s"}) ends before the entry at ${hex(vpn * PAGE)}`
        : `its range ${range} starts after the entry at ${hex(vpn * PAGE)}`;
    },
  );
  return out;
}

function atcRelaxations(entry: StaleEntry, sid: number): Relaxation[] {
  const f = entry.fields;
  const pasid = f.pasid === null || f.pasid === undefined ? -1 : num(f.pasid);
  const vpn = num(f.iova) / PAGE;
  const atcInv = (w: Uint32Array) => opOf(w) === CMDQ_OP.ATC_INV;
  return [
    (w) => {
      if (!atcInv(w)) return null;
      const was = retag(w, F_SID, sid);
      return was === null ? null : `its StreamID ${hex(was)} is not the device's ${hex(sid)}`;
    },
    (w) => {
      if (!atcInv(w) || get(w, F_ATC_SSV) === 0) return null;
      if (pasid < 0) {
        setField(F_ATC_SSV, w, 0);
        return `SSV = 1 (SubstreamID ${get(w, F_SSID)}) leaves the entries the device cached without a PASID`;
      }
      const was = retag(w, F_SSID, pasid);
      return was === null ? null : `its SubstreamID ${was} is not the entry's ${pasid}`;
    },
    (w) => {
      if (!atcInv(w)) return null;
      const size = get(w, F_ATC_SIZE);
      if (size >= ATC_INV_SIZE_ALL - 2) return null;
      const pfn = get(w, F_ATC_ADDR);
      const span = 2 ** size;
      const base = pfn - (pfn % span);
      // Twice or four times the span, aligned on itself, must reach the entry.
      for (const grow of [1, 2]) {
        const big = span * 2 ** grow;
        if (vpn - (vpn % big) !== pfn - (pfn % big)) continue;
        setField(F_ATC_SIZE, w, size + grow);
        return `its span [${hex(base * PAGE)}, ${hex((base + span) * PAGE)}) (Size ${size}) does not reach the entry at ${hex(vpn * PAGE)}`;
      }
      return null;
    },
  ];
}
