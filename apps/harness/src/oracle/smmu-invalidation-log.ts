// The commands each SMMU executed, in order, so that a stale cache entry can be told apart: no
// command covered it (one is missing), or one did and the entry was filled again after it (the
// invalidation came too early: before the entry was cleared, or before a walk that raced with it).

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
import { decode, type Field, fieldOf, getField } from "@iommu-sim/iommu-core/platform";
import type { StaleEntry } from "./violation.js";

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
