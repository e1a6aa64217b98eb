// The invalidations each VT-d unit carried out, in order, so that a stale cache entry can be told
// apart: no invalidation covered it (one is missing), one did and the entry was filled again
// after it (the invalidation came too early: before the entry was cleared, or before a walk that
// raced with it), or one was aimed at it with one wrong field (DID, PASID, SID, range, IH, type).

import {
  CC_G_DEVICE,
  CC_G_DOMAIN,
  CC_G_GLOBAL,
  decodeDevTlbRange,
  INV_DESC_TYPE,
  IOTLB_G_DOMAIN,
  IOTLB_G_GLOBAL,
  IOTLB_G_PAGE,
  invDescLayout,
  invDescType,
  PC_G_DOMAIN,
  PC_G_GLOBAL,
  PC_G_PASID,
  PDEV_TLB_G_ALL,
  PDEV_TLB_G_PASID,
  PIOTLB_G_PAGE,
  PIOTLB_G_PASID,
} from "@iommu-sim/intel-vtd/format";
import type { VtdUnit } from "@iommu-sim/intel-vtd/hw";
import { decode, type FieldValues, type Layout } from "@iommu-sim/iommu-core/platform";
import { hex, type StaleEntry } from "./violation.js";

const PAGE = 4096;
/** Descriptors kept per log. */
const KEEP = 4096;
/** Device-selective context-cache invalidation: the function bits FM 0..3 ignore. */
const FM_MASK = [0, 4, 6, 7] as const;

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
  readonly layout: Layout;
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

/** A descriptor that was aimed at an entry and missed it: one field was wrong. */
export interface MissedInvalidation extends EarlyInvalidation {
  /** What made it miss, in words ("its PASID 0 is not the entry's 3"). */
  readonly reason: string;
}

/**
 * What of a descriptor selects cache entries, as plain numbers a relaxation can change: type,
 * granularity, DID, PASID, SID, FM, IH; IOTLB types: ADDR's page and AM; device-TLB types: the
 * span the range encoding gives (first page, page count).
 */
interface Scope {
  type: number;
  g: number;
  did: number;
  pasid: number;
  sid: number;
  fm: number;
  ih: number;
  pfn: number;
  am: number;
  pages: number;
}

/** What of the unit changes a descriptor's scope: domain-selective CC in scalable mode, CAP.PSI. */
interface UnitMode {
  readonly scalable: boolean;
  readonly psi: boolean;
}

/** A stale entry's tags, from the diagnosis's fields. PASID -1: none. */
interface Target {
  readonly cache:
    | "iotlb"
    | "paging-structure-cache"
    | "pasid-cache"
    | "context-cache"
    | "device-tlb";
  readonly did: number;
  readonly pasid: number;
  /** Requester (context-cache, device-TLB entries). */
  readonly sid: number;
  /** First page and pages the entry translates (IOTLB, device-TLB) or reaches (PSC). */
  readonly vpn: number;
  readonly pages: number;
  /** First-stage or nested (IOTLB, PSC): the kinds a page-selective type 2 takes whatever the address. */
  readonly firstStage: boolean;
  readonly kind: string;
  readonly level: number;
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
  private readonly hws: VtdUnit[] = [];
  private readonly span = { pfn: 0, pages: 0 };

  constructor(
    units: readonly VtdUnit[],
    private readonly now: () => number,
  ) {
    for (const hw of units) {
      const index = this.units.length;
      this.units.push(hw.name);
      this.hws.push(hw);
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
      layout,
      f,
      pfn,
      pages,
    };
  }

  /** The unit's mode now (what the descriptors were carried out under, unless it was reset). */
  private modeOf(unit: string): UnitMode | null {
    const hw = this.hws[this.units.indexOf(unit)];
    return hw === undefined ? null : { scalable: hw.scalableMode, psi: hw.caps.psi };
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
    const mode = this.modeOf(unit);
    const t = targetOf(entry, sid & 0xffff);
    if (mode === null || t === null) return null;
    for (let s = this.seq - 1; s >= mark && s >= this.seq - KEEP; s--) {
      const slot = s % KEEP;
      if (this.units[this.unitOf[slot] as number] !== unit) continue;
      const r = this.record(slot);
      if (r === null || !covers(scopeOf(r), t, mode)) continue;
      return { descriptor: NAMES[r.type] as string, time: r.time, fields: fieldsOf(r, null) };
    }
    return null;
  }

  /**
   * The first descriptor unit `unit` carried out in [mark, end) (`end` < 0: up to now; the
   * operation that removed the entry) that was aimed at `entry` (device-TLB and context-cache
   * entries: of requester `sid`) and missed it because of one field: carried out with that field
   * as the entry needs it (the DID, PASID or SID the entry is tagged with; type 2 instead of a
   * type 6 that never selects a second-stage entry, type 3 instead of a type 8 that never selects
   * an entry cached without a PASID; IH = 0 for a paging-structure entry; a range whose AM one or
   * two larger would reach the entry, or one moved onto an entry just past its end or just
   * before its start), it would have removed the entry. Null when none was that close (the
   * invalidation is missing, not wrong). "Aimed at" is a guess, so a report names the
   * descriptor and the field for a reader to judge.
   */
  missedSince(
    mark: number,
    end: number,
    unit: string,
    sid: number,
    entry: StaleEntry,
  ): MissedInvalidation | null {
    return this.search(mark, end, unit, sid, entry, null);
  }

  /**
   * The last page-selective descriptor with IH = 1 that unit `unit` carried out at or after
   * `mark` and that, with IH = 0, would have removed paging-structure entry `entry`; null for
   * other entries or when there was none, or when a younger descriptor removed the entry. A
   * paging-structure entry goes stale when the table it points to is freed, which any operation
   * after the one that set the context up may do, so this looks past `missedSince`'s one
   * operation, but only for IH: a flush of the right DID, PASID and range that kept the entry.
   * The newest is named, the likeliest to have come after the entry was cached.
   */
  leafOnlySince(mark: number, unit: string, entry: StaleEntry): MissedInvalidation | null {
    if (entry.cache !== "paging-structure-cache") return null;
    return this.search(mark, -1, unit, 0, entry, "IH");
  }

  /**
   * `missedSince` (oldest first, every relaxation) or, with `only`, the newest descriptor set
   * right by the relaxation of that field alone, younger than any that covered the entry.
   */
  private search(
    mark: number,
    end: number,
    unit: string,
    sid: number,
    entry: StaleEntry,
    only: string | null,
  ): MissedInvalidation | null {
    if (mark < 0) return null;
    const mode = this.modeOf(unit);
    const t = targetOf(entry, sid & 0xffff);
    if (mode === null || t === null) return null;
    const relax = relaxationsOf(t).filter((x) => only === null || x.field === only);
    const first = Math.max(mark, this.seq - KEEP);
    const last = end < 0 ? this.seq : Math.min(end, this.seq);
    const n = last - first;
    for (let i = 0; i < n; i++) {
      const s = only === null ? first + i : last - 1 - i;
      const slot = s % KEEP;
      if (this.units[this.unitOf[slot] as number] !== unit) continue;
      const r = this.record(slot);
      if (r === null) continue;
      const scope = scopeOf(r);
      if (covers(scope, t, mode)) {
        // Looking back, a flush that removed the entry makes every older one innocent.
        if (only !== null) return null;
        continue;
      }
      for (const x of relax) {
        const copy = { ...scope };
        const reason = x.apply(copy);
        if (reason === null || !covers(copy, t, mode)) continue;
        return {
          descriptor: NAMES[r.type] as string,
          time: r.time,
          fields: fieldsOf(r, x.field),
          reason,
        };
      }
    }
    return null;
  }
}

function num(v: unknown): number {
  return typeof v === "bigint" ? Number(v) : typeof v === "number" ? v : Number(v ?? Number.NaN);
}

/**
 * A descriptor's fields for a report: the granularity by name ("G=page", as the missing
 * descriptor is spelled), the others when non-zero or when a miss is blamed on them (`keep`:
 * "PASID=0"); SIDs, addresses and values above 0xffff in hex.
 */
function fieldsOf(r: Record_, keep: string | null): Record<string, string | number> {
  const fields: Record<string, string | number> = {};
  for (const field of r.layout.fields) {
    const k = field.name;
    const v = r.f[k];
    if (v === undefined || k === "Type") continue;
    const named = field.values?.[Number(v)];
    if (named !== undefined && k === "G") fields[k] = named;
    else if ((v === 0 || v === 0n) && k !== keep) continue;
    else
      fields[k] =
        typeof v === "bigint" || field.addr === true || k === "SID" || v > 0xffff
          ? `0x${v.toString(16)}`
          : v;
  }
  return fields;
}

function scopeOf(r: Record_): Scope {
  const f = r.f;
  const devTlb = r.type === INV_DESC_TYPE.DEV_TLB || r.type === INV_DESC_TYPE.PDEV_TLB;
  return {
    type: r.type,
    g: num(f.G ?? 0),
    did: num(f.DID ?? 0),
    pasid: num(f.PASID ?? 0),
    sid: num(f.SID ?? 0),
    fm: num(f.FM ?? 0),
    ih: num(f.IH ?? 0),
    pfn: devTlb ? r.pfn : num(f.ADDR ?? 0) / PAGE,
    am: num(f.AM ?? 0),
    pages: devTlb ? r.pages : 2 ** num(f.AM ?? 0),
  };
}

/** The entry's tags as numbers, or null when a field is missing or malformed. */
function targetOf(e: StaleEntry, sid: number): Target | null {
  const f = e.fields;
  const pasidOf = (v: unknown) => (v === null || v === undefined ? -1 : num(v));
  let t: Target;
  switch (e.cache) {
    case "iotlb":
    case "paging-structure-cache":
    case "device-tlb": {
      const dev = e.cache === "device-tlb";
      const kind = String(f.kind ?? "");
      t = {
        cache: e.cache,
        did: dev ? 0 : num(f.DID),
        pasid: pasidOf(dev ? f.pasid : f.PASID),
        sid,
        vpn: num(f.iova) / PAGE,
        pages: num(f.size) / PAGE,
        firstStage: kind === "first-stage" || kind === "nested",
        kind,
        level: e.cache === "paging-structure-cache" ? num(f.level) : 1,
      };
      break;
    }
    case "pasid-cache":
      t = { ...NO_TARGET, cache: e.cache, did: num(f.DID), pasid: num(f.PASID), sid };
      break;
    case "context-cache": {
      // Scalable-mode context entries have no DID: only a legacy domain-selective one needs it.
      const did = num(f.DID);
      t = { ...NO_TARGET, cache: e.cache, did: Number.isInteger(did) ? did : -1, sid };
      break;
    }
    default:
      return null;
  }
  const ints = [t.did, t.pasid, t.vpn, t.pages, t.level];
  return ints.every(Number.isInteger) && t.pages > 0 ? t : null;
}

const NO_TARGET: Omit<Target, "cache"> = {
  did: 0,
  pasid: -1,
  sid: 0,
  vpn: 0,
  pages: 1,
  firstStage: false,
  kind: "",
  level: 1,
};

/** Whether the 2^am pages at page `pfn` (aligned down) overlap [vpn, vpn + pages). */
function overlaps(pfn: number, am: number, vpn: number, pages: number): boolean {
  const span = 2 ** am;
  const first = pfn - (pfn % span);
  return first < vpn + pages && vpn < first + span;
}

/**
 * Whether carrying out descriptor `s` removes entry `t`, with the scopes of VtdUnit and its caches:
 * - type 2: global; domain (or any G=page without CAP.PSI): every entry of the DID; page: IOTLB
 *   and PSC second-stage / pass-through entries of the DID overlapping the range, first-stage and
 *   nested ones whatever the address; IH = 1 keeps the paging-structure entries;
 * - type 6: entries of DID+PASID; PASID-selective: every IOTLB entry, first-stage PSC entries;
 *   page: first-stage IOTLB and PSC entries overlapping the range (IH = 1 keeps the PSC);
 * - type 7: global, DID, DID+PASID (a cached invalid entry, DID 0, of the PASID too);
 * - type 1: global, DID (scalable mode: everything), SID under FM;
 * - type 3: the device's span, every PASID; type 8: the PASID's span, or with G every PASID's
 *   (never an entry cached without a PASID).
 *
 * @spec VT-d 6.5.2.1 - 6.5.2.6 (table 21 for type 6)
 */
function covers(s: Scope, t: Target, mode: UnitMode): boolean {
  switch (t.cache) {
    case "iotlb":
    case "paging-structure-cache": {
      const psc = t.cache === "paging-structure-cache";
      if (s.type === INV_DESC_TYPE.IOTLB) {
        if (s.g === IOTLB_G_GLOBAL) return true;
        if (s.did !== t.did) return false;
        if (s.g === IOTLB_G_DOMAIN || (s.g === IOTLB_G_PAGE && !mode.psi)) return true;
        if (s.g !== IOTLB_G_PAGE || (psc && s.ih !== 0)) return false;
        return t.firstStage || overlaps(s.pfn, s.am, t.vpn, t.pages);
      }
      if (s.type === INV_DESC_TYPE.PIOTLB) {
        if (s.did !== t.did || s.pasid !== t.pasid || (psc && !t.firstStage)) return false;
        if (s.g === PIOTLB_G_PASID) return true;
        if (s.g !== PIOTLB_G_PAGE || !t.firstStage || (psc && s.ih !== 0)) return false;
        return overlaps(s.pfn, s.am, t.vpn, t.pages);
      }
      return false;
    }
    case "pasid-cache": {
      if (s.type !== INV_DESC_TYPE.PC) return false;
      if (s.g === PC_G_GLOBAL) return true;
      if (s.g === PC_G_DOMAIN) return s.did === t.did;
      return s.g === PC_G_PASID && s.pasid === t.pasid && (s.did === t.did || t.did === 0);
    }
    case "context-cache": {
      if (s.type !== INV_DESC_TYPE.CC) return false;
      if (s.g === CC_G_GLOBAL || (s.g === CC_G_DOMAIN && mode.scalable)) return true;
      if (s.g === CC_G_DOMAIN) return s.did === t.did;
      if (s.g !== CC_G_DEVICE) return false;
      const mask = FM_MASK[s.fm & 3] as number;
      return (s.sid & ~mask) === (t.sid & ~mask);
    }
    case "device-tlb": {
      if (s.sid !== t.sid || !(s.pfn < t.vpn + t.pages && t.vpn < s.pfn + s.pages)) return false;
      if (s.type === INV_DESC_TYPE.DEV_TLB) return true;
      if (s.type !== INV_DESC_TYPE.PDEV_TLB || t.pasid < 0) return false;
      return s.g === PDEV_TLB_G_ALL || s.pasid === t.pasid;
    }
    default:
      return false;
  }
}

/**
 * One way a descriptor can be set right for an entry: `apply` changes the scope in place and says
 * what was wrong, or returns null when that field was right already (or does not apply). `field`
 * names the descriptor field blamed, printed even when it is zero.
 */
interface Relaxation {
  readonly field: string | null;
  apply(s: Scope): string | null;
}

/** The relaxations to try for `t`, most specific first. */
function relaxationsOf(t: Target): Relaxation[] {
  const out: Relaxation[] = [];
  const tlb = t.cache === "iotlb" || t.cache === "paging-structure-cache";
  const dev = t.cache === "device-tlb";
  const what = t.cache === "iotlb" ? "IOTLB entries" : "paging-structure-cache entries";
  if (tlb && !t.firstStage)
    out.push({
      field: null,
      apply(s) {
        // Table 21: page-selective type 6 skips second-stage and pass-through entries, and no
        // type 6 reaches second-stage paging-structure entries.
        if (s.type !== INV_DESC_TYPE.PIOTLB) return null;
        if (t.cache === "iotlb" && s.g !== PIOTLB_G_PAGE) return null;
        const page = s.g === PIOTLB_G_PAGE;
        s.type = INV_DESC_TYPE.IOTLB;
        s.g = page ? IOTLB_G_PAGE : IOTLB_G_DOMAIN;
        return `${page ? "a page-selective" : "a"} PASID-based IOTLB invalidation never removes ${t.kind} ${what}: they need an IOTLB invalidation (type 2)`;
      },
    });
  if (dev && t.pasid < 0)
    out.push({
      field: null,
      apply(s) {
        if (s.type !== INV_DESC_TYPE.PDEV_TLB) return null;
        s.type = INV_DESC_TYPE.DEV_TLB;
        return "a PASID-based device-TLB invalidation leaves the entries the device cached without a PASID: they need a device-TLB invalidation (type 3)";
      },
    });
  if (!dev)
    out.push({
      field: "DID",
      apply(s) {
        const selects =
          (s.type === INV_DESC_TYPE.IOTLB && s.g !== IOTLB_G_GLOBAL) ||
          s.type === INV_DESC_TYPE.PIOTLB ||
          (s.type === INV_DESC_TYPE.PC && s.g !== PC_G_GLOBAL) ||
          (s.type === INV_DESC_TYPE.CC && s.g === CC_G_DOMAIN);
        if (!selects || s.did === t.did) return null;
        const was = s.did;
        s.did = t.did;
        return `its DID ${was} is not the entry's ${t.did}`;
      },
    });
  if (t.pasid >= 0)
    out.push({
      field: "PASID",
      apply(s) {
        const selects =
          s.type === INV_DESC_TYPE.PIOTLB ||
          (s.type === INV_DESC_TYPE.PC && s.g === PC_G_PASID) ||
          (s.type === INV_DESC_TYPE.PDEV_TLB && s.g === PDEV_TLB_G_PASID);
        if (!selects || s.pasid === t.pasid) return null;
        const was = s.pasid;
        s.pasid = t.pasid;
        return `its PASID ${was} is not the entry's ${t.pasid}`;
      },
    });
  if (dev || t.cache === "context-cache")
    out.push({
      field: "SID",
      apply(s) {
        const selects = dev
          ? s.type === INV_DESC_TYPE.DEV_TLB || s.type === INV_DESC_TYPE.PDEV_TLB
          : s.type === INV_DESC_TYPE.CC && s.g === CC_G_DEVICE;
        if (!selects || s.sid === t.sid) return null;
        const was = s.sid;
        s.sid = t.sid;
        return `its SID ${hex(was)} is not the ${dev ? "device" : "entry"}'s ${hex(t.sid)}`;
      },
    });
  if (t.cache === "paging-structure-cache")
    out.push({
      field: "IH",
      apply(s) {
        const page =
          (s.type === INV_DESC_TYPE.IOTLB && s.g === IOTLB_G_PAGE) ||
          (s.type === INV_DESC_TYPE.PIOTLB && s.g === PIOTLB_G_PAGE);
        if (!page || s.ih === 0) return null;
        s.ih = 0;
        return `IH = 1 says only leaf entries changed, so the paging-structure caches keep the level ${t.level} entry, which points at a table that is gone (a freed page table needs IH = 0)`;
      },
    });
  if (tlb || dev)
    out.push({
      field: null,
      apply(s) {
        const ranged = dev
          ? s.type === INV_DESC_TYPE.DEV_TLB || s.type === INV_DESC_TYPE.PDEV_TLB
          : (s.type === INV_DESC_TYPE.IOTLB && s.g === IOTLB_G_PAGE && !t.firstStage) ||
            (s.type === INV_DESC_TYPE.PIOTLB && s.g === PIOTLB_G_PAGE);
        if (!ranged) return null;
        const n = s.pages;
        const start = s.pfn - (s.pfn % n);
        const v = t.vpn;
        if (start < v + t.pages && v < start + n) return null;
        // Close misses only: the entry starts within one range length past its end or ends within
        // one before its start, or the range's aligned block of 2 or 4 times its size holds it.
        const block = 4 * n;
        const sameBlock = v - (v % block) === start - (start % block);
        const after = v >= start + n && (v < start + 2 * n || sameBlock);
        const before = v < start && (v + t.pages > start - n || sameBlock);
        if (!after && !before) return null;
        s.pfn = v;
        const size = dev
          ? `${n} page${n === 1 ? "" : "s"}`
          : `AM ${s.am}, ${n} page${n === 1 ? "" : "s"}`;
        const range = `its range [${hex(start * PAGE)}, ${hex((start + n) * PAGE)}) (${size})`;
        return after
          ? `${range} ends before the entry at ${hex(v * PAGE)}`
          : `${range} starts after the entry at ${hex(v * PAGE)}`;
      },
    });
  return out;
}
