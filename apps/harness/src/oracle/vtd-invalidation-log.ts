// The invalidations each VT-d unit carried out, in order, so that a stale cache entry can be told
// apart: no invalidation covered it (one is missing), or one did and the entry was filled again
// after it (the invalidation came too early: before the entry was cleared, or before a walk that
// raced with it).

import {
  decodeDevTlbRange,
  INV_DESC_TYPE,
  invDescLayout,
  invDescType,
} from "@iommu-sim/intel-vtd/format";
import type { VtdUnit } from "@iommu-sim/intel-vtd/hw";
import { decode, type FieldValues } from "@iommu-sim/iommu-core/platform";
import type { StaleEntry } from "./violation.js";

const PAGE = 4096;
/** Descriptors kept per log. */
const KEEP = 4096;

/** Names of the descriptor types, as reports spell them. */
const NAMES: Readonly<Record<number, string>> = {
  [INV_DESC_TYPE.CC]: "context-cache invalidation (type 1)",
  [INV_DESC_TYPE.IOTLB]: "IOTLB invalidation (type 2)",
  [INV_DESC_TYPE.DEV_TLB]: "device-TLB invalidation (type 3)",
  [INV_DESC_TYPE.PIOTLB]: "PASID-based IOTLB invalidation (type 6)",
  [INV_DESC_TYPE.PC]: "PASID-cache invalidation (type 7)",
  [INV_DESC_TYPE.PDEV_TLB]: "PASID-based device-TLB invalidation (type 8)",
};

/** One descriptor a unit carried out, decoded when a diagnosis asks for it. */
interface Record_ {
  readonly seq: number;
  readonly time: number;
  readonly unit: string;
  readonly type: number;
  readonly f: FieldValues;
  /** First page and page count of a device-TLB invalidation. */
  readonly pfn: number;
  readonly pages: number;
}

/** A descriptor that covered an entry, as reported. */
export interface EarlyInvalidation {
  readonly descriptor: string;
  readonly time: number;
  readonly fields: Readonly<Record<string, string | number>>;
}

/**
 * Every unit's executed descriptors, numbered across units. Recording copies the descriptor's
 * words into a ring (no decoding, no allocation: it runs on every invalidation); a diagnosis
 * decodes what it reads back.
 */
export class VtdInvalidationLog {
  private seq = 0;
  private readonly words = new Uint32Array(KEEP * 8);
  private readonly seqs = new Float64Array(KEEP).fill(-1);
  private readonly times = new Float64Array(KEEP);
  private readonly unitOf = new Int32Array(KEEP);
  private readonly units: string[] = [];
  private readonly span = { pfn: 0, pages: 0 };

  constructor(
    units: readonly VtdUnit[],
    private readonly now: () => number,
  ) {
    for (const hw of units) {
      const index = this.units.length;
      this.units.push(hw.name);
      hw.descriptorObserver = (w) => this.add(index, w);
    }
  }

  /** The number the next descriptor gets: what an operation records when it starts. */
  mark(): number {
    return this.seq;
  }

  private add(unit: number, w: Uint32Array): void {
    const slot = this.seq % KEEP;
    this.seqs[slot] = this.seq++;
    this.times[slot] = this.now();
    this.unitOf[slot] = unit;
    this.words.set(w.subarray(0, 8), slot * 8);
  }

  private record(slot: number): Record_ | null {
    const w = this.words.subarray(slot * 8, slot * 8 + 8);
    const type = invDescType(w[0] as number);
    if (!(type in NAMES)) return null;
    const layout = invDescLayout(type);
    if (layout === null) return null;
    const f = decode(layout, w);
    let pfn = 0;
    let pages = 0;
    if (type === INV_DESC_TYPE.DEV_TLB || type === INV_DESC_TYPE.PDEV_TLB) {
      decodeDevTlbRange(w[2] as number, w[3] as number, Number(f.S), this.span);
      pfn = this.span.pfn;
      pages = this.span.pages;
    }
    return {
      seq: this.seqs[slot] as number,
      time: this.times[slot] as number,
      unit: this.units[this.unitOf[slot] as number] as string,
      type,
      f,
      pfn,
      pages,
    };
  }

  /**
   * The last descriptor carried out at or after `mark` on unit `unit` (device-TLB ones: for
   * requester `sid`) that covers `entry`, or null. Only the last KEEP descriptors are kept.
   */
  coveringSince(
    mark: number,
    unit: string,
    sid: number,
    entry: StaleEntry,
  ): EarlyInvalidation | null {
    if (mark < 0) return null;
    for (let s = this.seq - 1; s >= mark && s >= this.seq - KEEP; s--) {
      const slot = s % KEEP;
      if (this.units[this.unitOf[slot] as number] !== unit) continue;
      const r = this.record(slot);
      if (r === null || !covers(r, entry, sid)) continue;
      const fields: Record<string, string | number> = {};
      for (const [k, v] of Object.entries(r.f)) {
        if (k === "Type" || v === 0 || v === 0n) continue;
        fields[k] =
          typeof v === "bigint" || (typeof v === "number" && v > 0xffff)
            ? `0x${v.toString(16)}`
            : v;
      }
      return { descriptor: NAMES[r.type] as string, time: r.time, fields };
    }
    return null;
  }
}

function num(v: unknown): number {
  return typeof v === "bigint" ? Number(v) : typeof v === "number" ? v : Number(v ?? 0);
}

/** Whether the 2^am pages at page `addr` (aligned down) overlap [vpn, vpn + pages). */
function overlaps(addrPfn: number, am: number, vpn: number, pages: number): boolean {
  const span = 2 ** am;
  const first = addrPfn - (addrPfn % span);
  return first < vpn + pages && vpn < first + span;
}

function covers(r: Record_, e: StaleEntry, sid: number): boolean {
  const f = r.f;
  const ef = e.fields;
  switch (e.cache) {
    case "iotlb": {
      const did = num(ef.DID);
      const pasid = ef.PASID === null ? null : num(ef.PASID);
      const vpn = num(ef.iova) / PAGE;
      const pages = num(ef.size) / PAGE;
      const firstStage = ef.kind === "first-stage" || ef.kind === "nested";
      if (r.type === INV_DESC_TYPE.IOTLB) {
        const g = num(f.G);
        if (g === 1) return true;
        if (num(f.DID) !== did) return false;
        if (g === 2) return true;
        return firstStage || overlaps(num(f.ADDR) / PAGE, num(f.AM), vpn, pages);
      }
      if (r.type === INV_DESC_TYPE.PIOTLB) {
        if (num(f.DID) !== did || pasid === null || num(f.PASID) !== pasid) return false;
        const g = num(f.G);
        if (g === 2) return true;
        return firstStage && overlaps(num(f.ADDR) / PAGE, num(f.AM), vpn, pages);
      }
      return false;
    }
    case "pasid-cache": {
      if (r.type !== INV_DESC_TYPE.PC) return false;
      const g = num(f.G);
      if (g === 3) return true;
      if (num(f.DID) !== num(ef.DID)) return false;
      return g === 0 || num(f.PASID) === num(ef.PASID);
    }
    case "context-cache": {
      if (r.type !== INV_DESC_TYPE.CC) return false;
      const g = num(f.G);
      if (g === 1 || g === 2) return g === 1 || num(f.DID) === num(ef.DID);
      const mask = [0, 4, 6, 7][num(f.FM) & 3] as number;
      return (num(f.SID) & ~mask) === (sid & ~mask);
    }
    case "device-tlb": {
      const vpn = num(ef.iova) / PAGE;
      const pages = num(ef.size) / PAGE;
      const hit = r.pfn < vpn + pages && vpn < r.pfn + r.pages;
      if (r.type === INV_DESC_TYPE.DEV_TLB) return num(f.SID) === sid && hit;
      if (r.type === INV_DESC_TYPE.PDEV_TLB) {
        const pasid = ef.pasid === null ? -1 : num(ef.pasid);
        return num(f.SID) === sid && (num(f.G) === 1 || num(f.PASID) === pasid) && hit;
      }
      return false;
    }
    default:
      return false;
  }
}
