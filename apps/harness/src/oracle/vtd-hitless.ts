// DESIGN check 5 on VT-d: the hardware, sampling a context or PASID entry after every store the
// driver makes to it, must only ever see the entry as it was before the operation, as it is after
// it, or not present. A present entry that is neither (a torn update: P set before the rest, one
// qword of a replace written before the other) or that is present and illegal is reported.

import { VTD_FR, VTD_REG } from "@iommu-sim/intel-vtd/format";
import type { VtdDevConfig, VtdPasidConfig, VtdUnit } from "@iommu-sim/intel-vtd/hw";
import { type Device, newTranslationRequest } from "@iommu-sim/iommu-core";
import { mmioRead64, type PhysMemory } from "@iommu-sim/iommu-core/platform";

const PAGE = 4096;
const TWO32 = 4294967296;

/** What a sample of one entry showed. */
const ABSENT = "not present";

/** Fault reasons that mean "not present" rather than "present and illegal". */
const NOT_PRESENT = new Set<number>([
  VTD_FR.ROOT_NOT_PRESENT,
  VTD_FR.CONTEXT_NOT_PRESENT,
  VTD_FR.SM_ROOT_ENTRY_NOT_PRESENT,
  VTD_FR.SM_CONTEXT_ENTRY_NOT_PRESENT,
  VTD_FR.SM_PASID_DIR_ENTRY_NOT_PRESENT,
  VTD_FR.SM_PASID_ENTRY_NOT_PRESENT,
]);

/** A torn or illegal entry the hardware could have seen. */
export interface TornEntry {
  readonly device: string;
  /** The PASID of a PASID entry, or null for the context entry. */
  readonly pasid: number | null;
  readonly unit: string;
  /** What the hardware saw in between, what the entry was before, and what it is after. */
  readonly seen: string;
  readonly before: string;
  readonly after: string;
  /** The sample was present but illegal (its fault reason), rather than a mix. */
  readonly illegal: number | null;
}

interface Watched {
  readonly dev: Device;
  readonly hw: VtdUnit;
}

/** Signature of a context entry as the unit decodes it (fields that steer translation). */
function devSig(c: VtdDevConfig): string {
  if (c.status !== 0)
    return NOT_PRESENT.has(c.status) ? ABSENT : `illegal 0x${c.status.toString(16)}`;
  return c.scalable
    ? `PASIDDIRPTR 0x${c.pasidDirPtr.toString(16)} PDTS ${c.pdts} DTE ${+c.dte} PASIDE ${+c.paside} PRE ${+c.pre} RID_PASID ${c.ridPasid} FPD ${+c.fpd}`
    : `TT ${c.tt} DID ${c.did} SLPTPTR 0x${c.slptptr.toString(16)} levels ${c.levels} FPD ${+c.fpd}`;
}

/** Signature of a PASID entry as the unit decodes it. */
function pasidSig(p: VtdPasidConfig | null): string {
  if (p === null) return ABSENT;
  if (p.status !== 0)
    return NOT_PRESENT.has(p.status) ? ABSENT : `illegal 0x${p.status.toString(16)}`;
  return (
    `PGTT ${p.pgtt} DID ${p.did} FLPTR 0x${p.flptr.toString(16)} SLPTPTR 0x${p.slptptr.toString(16)} ` +
    `levels ${p.pgtt === 2 ? p.ssLevels : p.fsLevels} SRE ${+p.sre} WPE ${+p.wpe} FPD ${+p.fpd}`
  );
}

/**
 * Watches the context and PASID entries of devices through memory stores. Between two
 * `settle()` calls (one owner operation) it samples every watched entry after each store to it;
 * `settle()` compares the samples with the entry before and after, and returns what was torn.
 */
export class VtdEntryWatch {
  /** Page frame → device whose context entry lives there. */
  private readonly ctxPages = new Map<number, Watched[]>();
  /** Page frame → device whose PASID directory lives there. */
  private readonly dirPages = new Map<number, Watched[]>();
  /** Page frame → (device, directory index) of a PASID table. */
  private readonly tablePages = new Map<number, { w: Watched; dirIndex: number }[]>();
  /** Entry key → its signature at the last settle. */
  private readonly settled = new Map<string, string>();
  /** Entry key → the signatures sampled since the last settle. */
  private readonly samples = new Map<
    string,
    { w: Watched; pasid: number | null; seen: Set<string> }
  >();
  /** Every watched page (context, directory or PASID table): one lookup decides most stores. */
  private readonly pages = new Set<number>();
  private readonly prev: PhysMemory["onWrite"];
  private readonly req = newTranslationRequest();

  constructor(private readonly mem: PhysMemory) {
    this.prev = mem.onWrite;
    mem.onWrite = (pa, bytes) => {
      this.prev?.(pa, bytes);
      this.onWrite(pa, bytes);
    };
  }

  /** Watch `dev`'s entries on `hw`: its context entry and, in scalable mode, its PASID entries. */
  watch(dev: Device, hw: VtdUnit): void {
    const w: Watched = { dev, hw };
    const sid = dev.rid & 0xffff;
    const rta = this.rootTable(hw);
    const ctx = this.contextEntry(hw, rta, sid);
    // The root entry's page too: a context table installed later shows as a store there.
    this.add(this.ctxPages, Math.floor((rta + (sid >>> 8) * 16) / PAGE), w);
    if (ctx >= 0) this.add(this.ctxPages, Math.floor(ctx / PAGE), w);
    this.settled.set(key(dev, null), this.sample(w, null));
    if (hw.scalableMode && ctx >= 0) this.watchDirectory(w, ctx);
  }

  private add<T>(map: Map<number, T[]>, page: number, v: T): void {
    this.pages.add(page);
    const list = map.get(page);
    if (list === undefined) map.set(page, [v]);
    else if (!list.includes(v)) list.push(v);
  }

  private rootTable(hw: VtdUnit): number {
    const rtaddr = mmioRead64(hw, VTD_REG.RTADDR);
    return rtaddr - (rtaddr % PAGE);
  }

  /** The context entry address of `sid` (-1 when the root entry has no table). */
  private contextEntry(hw: VtdUnit, rta: number, sid: number): number {
    const bus = sid >>> 8;
    const devfn = sid & 0xff;
    const mem = this.mem;
    if (!hw.scalableMode) {
      const lo = mem.read64(rta + bus * 16);
      if ((lo & 1) === 0) return -1;
      return mem.hi * TWO32 + ((lo & 0xfffff000) >>> 0) + devfn * 16;
    }
    const half = devfn >= 0x80 ? 8 : 0;
    const lo = mem.read64(rta + bus * 16 + half);
    if ((lo & 1) === 0) return -1;
    return mem.hi * TWO32 + ((lo & 0xfffff000) >>> 0) + (devfn & 0x7f) * 32;
  }

  private watchDirectory(w: Watched, ctx: number): void {
    const mem = this.mem;
    const lo = mem.read64(ctx);
    if ((lo & 1) === 0) return;
    const dir = mem.hi * TWO32 + ((lo & 0xfffff000) >>> 0);
    const pdts = (lo >>> 9) & 7;
    const entries = 2 ** (pdts + 7);
    for (let p = 0; p < Math.ceil((entries * 8) / PAGE); p++)
      this.add(this.dirPages, Math.floor(dir / PAGE) + p, w);
    for (let i = 0; i < entries; i++) this.watchTable(w, dir, i);
  }

  private watchTable(w: Watched, dir: number, dirIndex: number): void {
    const e = this.mem.read64(dir + dirIndex * 8);
    if ((e & 1) === 0) return;
    const table = this.mem.hi * TWO32 + ((e & 0xfffff000) >>> 0);
    const page = Math.floor(table / PAGE);
    const list = this.tablePages.get(page) ?? [];
    if (!list.some((x) => x.w === w && x.dirIndex === dirIndex)) list.push({ w, dirIndex });
    this.tablePages.set(page, list);
    this.pages.add(page);
  }

  private onWrite(pa: number, bytes: number): void {
    const page = Math.floor(pa / PAGE);
    if (!this.pages.has(page)) return;
    const ctx = this.ctxPages.get(page);
    if (ctx !== undefined) {
      for (const w of ctx) this.record(w, null);
      // A context entry (or its table) may have appeared: watch what it points to.
      for (const w of ctx) {
        const c = this.contextEntry(w.hw, this.rootTable(w.hw), w.dev.rid & 0xffff);
        if (c >= 0) {
          this.add(this.ctxPages, Math.floor(c / PAGE), w);
          if (w.hw.scalableMode) this.watchDirectory(w, c);
        }
      }
    }
    const dirs = this.dirPages.get(page);
    if (dirs !== undefined) {
      for (const w of dirs) {
        const c = this.contextEntry(w.hw, this.rootTable(w.hw), w.dev.rid & 0xffff);
        if (c < 0) continue;
        const lo = this.mem.read64(c);
        const dir = this.mem.hi * TWO32 + ((lo & 0xfffff000) >>> 0);
        for (let a = pa - (pa % 8); a < pa + bytes; a += 8) this.watchTable(w, dir, (a - dir) / 8);
      }
    }
    const tables = this.tablePages.get(page);
    if (tables !== undefined) {
      const first = Math.floor((pa % PAGE) / 64);
      const last = Math.floor(((pa % PAGE) + bytes - 1) / 64);
      for (const { w, dirIndex } of tables) {
        for (let i = first; i <= last && i < 64; i++) this.record(w, dirIndex * 64 + i);
      }
    }
  }

  private sample(w: Watched, pasid: number | null): string {
    const req = this.req;
    req.rid = w.dev.rid;
    req.sid = w.dev.sid;
    req.pasid = pasid === null ? -1 : pasid;
    const ins = w.hw.inspect(req);
    if (pasid === null) return devSig(ins.context.fresh);
    return ins.context.fresh.status !== 0 ? ABSENT : pasidSig(ins.pasidEntry?.fresh ?? null);
  }

  private record(w: Watched, pasid: number | null): void {
    const k = key(w.dev, pasid);
    let s = this.samples.get(k);
    if (s === undefined) {
      s = { w, pasid, seen: new Set() };
      this.samples.set(k, s);
    }
    s.seen.add(this.sample(w, pasid));
  }

  /** Forget a device (unplugged). */
  unwatch(dev: Device): void {
    for (const map of [this.ctxPages, this.dirPages]) {
      for (const [page, list] of map) {
        const rest = list.filter((w) => w.dev !== dev);
        if (rest.length === 0) map.delete(page);
        else map.set(page, rest);
      }
    }
    for (const [page, list] of this.tablePages) {
      const rest = list.filter((x) => x.w.dev !== dev);
      if (rest.length === 0) this.tablePages.delete(page);
      else this.tablePages.set(page, rest);
    }
    for (const k of [...this.samples.keys()])
      if (k.startsWith(`${dev.name}:`)) this.samples.delete(k);
  }

  /**
   * One operation ended: every present sample must equal the entry before or after it. Returns
   * the torn or illegal samples, and takes the entries as they are now as the new "before".
   */
  settle(): TornEntry[] {
    const out: TornEntry[] = [];
    for (const [k, s] of this.samples) {
      const before = this.settled.get(k) ?? ABSENT;
      const after = this.sample(s.w, s.pasid);
      for (const seen of s.seen) {
        if (seen === ABSENT || seen === before || seen === after) continue;
        const illegal = seen.startsWith("illegal ") ? Number(seen.slice(8)) : null;
        out.push({
          device: s.w.dev.name,
          pasid: s.pasid,
          unit: s.w.hw.name,
          seen,
          before,
          after,
          illegal,
        });
      }
      this.settled.set(k, after);
    }
    this.samples.clear();
    return out;
  }
}

function key(dev: Device, pasid: number | null): string {
  return `${dev.name}:${pasid === null ? "ctx" : pasid}`;
}
