// DESIGN check 5 on the SMMU, from the hardware side: after every store to an STE or CD of a
// watched StreamID the SMMU sees the entry as it was before the operation, as it is after it, or
// invalid (V = 0: the breaking step of an update, which aborts traffic but never misdirects it).
// A valid entry that is neither (a torn update: one qword of a change written before the others)
// or that is valid and illegal is reported.

import { CD, evtName, STE } from "@iommu-sim/arm-smmu/format";
import {
  CFG_OK,
  type SmmuEntryView,
  type SmmuV3,
  smmuConfigEqual,
  smmuViewLegal,
} from "@iommu-sim/arm-smmu/hw";
import {
  type Device,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
} from "@iommu-sim/iommu-core";
import {
  type Field,
  fieldOf,
  fieldValue,
  formatFieldValue,
  wordMask,
} from "@iommu-sim/iommu-core/platform";
import type { TornEntry } from "./vtd-hitless.js";

const STE_V = fieldOf(STE, "V");
const STE_CONFIG = fieldOf(STE, "Config");
const CD_V = fieldOf(CD, "V");

/** A torn or illegal STE or CD the SMMU could have seen (VT-d's TornEntry, plus where). */
export interface SmmuTornEntry extends TornEntry {
  readonly kind: "ste" | "cd";
  readonly sid: number;
  /** The CD index, or -1 for the STE (`pasid` is the CD index, or null for the STE). */
  readonly ssid: number;
  /** `smmuTornText` of the views: only the fields that change, and which qwords were stored. */
  readonly changed: string;
}

/** One watched entry: an STE (ssid -1) or a CD of a watched device. */
interface Entry {
  readonly dev: Device;
  readonly hw: SmmuV3;
  readonly sid: number;
  readonly ssid: number;
  /** The view at the last settle; null when the entry became known only after that (unknown). */
  before: SmmuEntryView | null;
  /** Distinct valid views the SMMU delivered since the last settle. */
  readonly seen: SmmuEntryView[];
  /** On the list of entries written since the last settle. */
  dirty: boolean;
}

interface Watched {
  readonly dev: Device;
  readonly hw: SmmuV3;
  readonly sid: number;
  readonly ste: Entry;
  /** CD index -> entry: the CDs known so far (CD 0, those delivered, those the SMMU cached). */
  readonly cds: Map<number, Entry>;
  /** Where the STE was and its 16 words at the last settle (a store the SMMU did not show). */
  steAt: number;
  readonly steWords: Uint32Array;
}

/** Per SMMU: its watcher and the watched StreamIDs. */
interface Unit {
  readonly stop: () => void;
  readonly bySid: Map<number, Watched[]>;
  /** The CD cache's insert count at the last settle: new CDs to learn about when it moved. */
  cdInserts: number;
}

function entry(dev: Device, hw: SmmuV3, sid: number, ssid: number): Entry {
  return { dev, hw, sid, ssid, before: null, seen: [], dirty: false };
}

function isValid(v: SmmuEntryView): boolean {
  const f = v.kind === "ste" ? STE_V : CD_V;
  return (((v.words[f.word] as number) >>> f.shift) & f.mask) !== 0;
}

/** Whether an STE view is a usable stage 1 (or nested) configuration: its CDs are in use. */
function steIsS1(v: SmmuEntryView): boolean {
  if (v.status !== CFG_OK || !isValid(v)) return false;
  const config = ((v.words[STE_CONFIG.word] as number) >>> STE_CONFIG.shift) & STE_CONFIG.mask;
  return config >= 4 && (config & 1) !== 0;
}

/**
 * A view for a report: the outcome when it is not usable, then every field the SMMU uses in
 * that configuration (zero ones too), by its spec name.
 */
export function smmuViewText(v: SmmuEntryView | null): string {
  if (v === null) return "unknown";
  const status = v.status === CFG_OK ? "" : `${evtName(v.status)}: `;
  if (!isValid(v)) return `${status}V=0`;
  const parts: string[] = [];
  for (const f of (v.kind === "ste" ? STE : CD).fields) {
    let used = false;
    for (let i = f.lsb >>> 5; i <= (f.lsb + f.width - 1) >>> 5 && !used; i++)
      used = ((v.used[i] as number) & wordMask(f, i)) !== 0;
    if (used) parts.push(`${f.name}=${formatFieldValue(f, fieldValue(f, v.words))}`);
  }
  return status + parts.join(" ");
}

/** One field the SMMU uses in `a` or `b`. */
function usedField(f: Field, a: SmmuEntryView, b: SmmuEntryView): boolean {
  for (let i = f.lsb >>> 5; i <= (f.lsb + f.width - 1) >>> 5; i++)
    if ((((a.used[i] as number) | (b.used[i] as number)) & wordMask(f, i)) !== 0) return true;
  return false;
}

/**
 * A torn view in a few words: of the fields the SMMU uses that change from `before` to `after`,
 * those already new in `seen`, those still old, and any that are neither, each with its qword;
 * with no usable `before` (unknown, or V = 0: a new entry), the fields in which `seen` differs
 * from `after`. What a reader needs to see which store came too early.
 */
export function smmuTornText(
  seen: SmmuEntryView,
  before: SmmuEntryView | null,
  after: SmmuEntryView,
): string {
  const layout = seen.kind === "ste" ? STE : CD;
  const old = before !== null && isValid(before) ? before : null;
  const newer: string[] = [];
  const older: string[] = [];
  const other: string[] = [];
  for (const f of layout.fields) {
    if (!usedField(f, seen, after)) continue;
    const s = fieldValue(f, seen.words);
    const a = fieldValue(f, after.words);
    const q = `qword ${f.lsb >>> 6}`;
    const name = (v: typeof s) => formatFieldValue(f, v);
    if (old === null) {
      if (s !== a) other.push(`${f.name} (${q}) ${name(s)}, finally ${name(a)}`);
      continue;
    }
    const b = fieldValue(f, old.words);
    if (b === a) {
      if (s !== a) other.push(`${f.name} (${q}) ${name(s)}, before and after ${name(a)}`);
    } else if (s === a) newer.push(`${f.name} (${q}) ${name(b)} -> ${name(a)}`);
    else if (s === b) older.push(`${f.name} (${q}) ${name(b)}, not yet ${name(a)}`);
    else other.push(`${f.name} (${q}) ${name(s)}, neither ${name(b)} nor ${name(a)}`);
  }
  const parts: string[] = [];
  if (old === null) parts.push(`a new entry seen with ${other.join("; ") || "no difference"}`);
  else {
    if (newer.length > 0) parts.push(`already new: ${newer.join("; ")}`);
    if (older.length > 0) parts.push(`still old: ${older.join("; ")}`);
    if (other.length > 0) parts.push(`other: ${other.join("; ")}`);
  }
  return parts.join("; ");
}

/**
 * Watches the STE and CDs of devices through the SMMU's `watchConfigWrites` hook (and its
 * `steAsSeen` / `cdAsSeen` views). Between two
 * `settle()` calls (one owner operation) it keeps every distinct view the SMMU would have seen
 * after a store; `settle()` compares them with the entry before and after, returns what was torn,
 * and takes the entries as they are now as the new "before".
 *
 * Work happens only when a watched entry is written (one view compare, and for a CD a look at
 * the STE above it) and at `settle` (the entries written, and a 16-word compare per watched STE
 * for stores the SMMU did not show: a 2-level stream table's STEs are shown only once fetched).
 * A CD the SMMU fetched and that was written before any settle knew it has no "before": only
 * an illegal view of it is reported.
 */
export class SmmuEntryWatch {
  private readonly units = new Map<SmmuV3, Unit>();
  private readonly dirty: Entry[] = [];

  /** Watch `dev` on `hw`: the STE of StreamID `dev.sid` and every CD under it. */
  watch(dev: Device, hw: SmmuV3): void {
    const sid = dev.sid >>> 0;
    let unit = this.units.get(hw);
    if (unit === undefined) {
      const bySid = new Map<number, Watched[]>();
      const stop = hw.watchConfigWrites((s, ssid, _qword, view) =>
        this.delivered(bySid, s, ssid, view),
      );
      unit = { stop, bySid, cdInserts: -1 };
      this.units.set(hw, unit);
    }
    const list = unit.bySid.get(sid) ?? [];
    if (list.some((x) => x.dev === dev)) return;
    const ste = entry(dev, hw, sid, -1);
    ste.before = hw.steAsSeen(sid);
    const w: Watched = {
      dev,
      hw,
      sid,
      ste,
      cds: new Map(),
      steAt: -1,
      steWords: new Uint32Array(16),
    };
    this.snapshotSte(w);
    this.known(w, 0);
    const ssids = [NO_PASID];
    for (const e of hw.configCache.entries().cd) {
      if (e.sid !== sid) continue;
      this.known(w, e.ssid);
      ssids.push(e.ssid);
    }
    // The hook shows stores to entries the SMMU fetched while it was installed: let it read the
    // device's entries now (an uncached translation: no cache, event or flag changes), so that
    // those it fetched and cached before are shown too.
    const req = newTranslationRequest();
    const res = newTranslationResult();
    req.rid = dev.rid;
    req.sid = dev.sid;
    for (const ssid of ssids) {
      req.pasid = ssid;
      hw.translateUncached(req, res);
    }
    list.push(w);
    unit.bySid.set(sid, list);
  }

  /** Forget a device (unplugged); the SMMU's hook goes when its last device does. */
  unwatch(dev: Device): void {
    for (const [hw, unit] of this.units) {
      const sid = dev.sid >>> 0;
      const list = unit.bySid.get(sid);
      if (list === undefined) continue;
      const rest = list.filter((w) => w.dev !== dev);
      if (rest.length > 0) unit.bySid.set(sid, rest);
      else unit.bySid.delete(sid);
      if (unit.bySid.size === 0) {
        unit.stop();
        this.units.delete(hw);
      }
    }
    for (let i = this.dirty.length - 1; i >= 0; i--) {
      const e = this.dirty[i] as Entry;
      if (e.dev === dev) this.dirty.splice(i, 1);
    }
  }

  /** The SMMU showed `view` of (sid, ssid) right after a store to it. */
  private delivered(
    bySid: Map<number, Watched[]>,
    sid: number,
    ssid: number,
    view: SmmuEntryView,
  ): void {
    const list = bySid.get(sid >>> 0);
    if (list === undefined) return;
    // Invalid views never count: they abort traffic (the breaking step of an update).
    const counts = isValid(view);
    for (const w of list) {
      let e: Entry;
      if (ssid < 0) e = w.ste;
      else {
        const known = w.cds.get(ssid);
        if (known === undefined) {
          e = entry(w.dev, w.hw, w.sid, ssid);
          w.cds.set(ssid, e);
        } else e = known;
      }
      if (!e.dirty) {
        e.dirty = true;
        this.dirty.push(e);
      }
      if (!counts) continue;
      // A CD is in use only under a stage 1 STE; seen under another STE it does not count.
      if (ssid >= 0 && !steIsS1(w.hw.steAsSeen(w.sid))) continue;
      if (e.before !== null && smmuConfigEqual(view, e.before)) continue;
      if (e.seen.some((s) => smmuConfigEqual(s, view))) continue;
      e.seen.push(view);
    }
  }

  /**
   * One operation ended: every valid view seen must be legal and equal the entry before or after
   * it. Returns the torn or illegal views, and takes the entries as they are now as the new
   * "before".
   */
  settle(): SmmuTornEntry[] {
    const out: SmmuTornEntry[] = [];
    for (const e of this.dirty) {
      e.dirty = false;
      const after = this.view(e);
      for (const seen of e.seen) {
        const legal = smmuViewLegal(seen);
        if (legal && (smmuConfigEqual(seen, after) || e.before === null)) continue;
        out.push(this.torn(e, seen, after, legal ? null : seen.status));
      }
      e.seen.length = 0;
      e.before = after;
    }
    this.dirty.length = 0;
    for (const [hw, unit] of this.units) {
      // New CDs in the SMMU's CD cache: learn them now, while their "before" is known.
      const inserts = hw.configCache.cdCounters.inserts;
      const learn = inserts !== unit.cdInserts;
      unit.cdInserts = inserts;
      const cached = learn ? hw.configCache.entries().cd : [];
      for (const list of unit.bySid.values()) {
        for (const w of list) {
          if (this.steMoved(w)) {
            // A store the SMMU did not show: every view under this STE is taken again.
            w.ste.before = hw.steAsSeen(w.sid);
            for (const cd of w.cds.values()) cd.before = this.view(cd);
          }
          for (const c of cached) if (c.sid === w.sid) this.known(w, c.ssid);
        }
      }
    }
    return out;
  }

  private view(e: Entry): SmmuEntryView {
    return e.ssid < 0 ? e.hw.steAsSeen(e.sid) : e.hw.cdAsSeen(e.sid, e.ssid);
  }

  /** Know CD `ssid` of `w` from now on, with its current view as "before". */
  private known(w: Watched, ssid: number): void {
    if (w.cds.has(ssid)) return;
    const e = entry(w.dev, w.hw, w.sid, ssid);
    e.before = this.view(e);
    w.cds.set(ssid, e);
  }

  /** Record where the STE is and what it holds. */
  private snapshotSte(w: Watched): void {
    const hw = w.hw;
    const mem = hw.mem;
    const busError = mem.busError;
    const at = hw.steAddress(w.sid);
    w.steAt = at;
    for (let i = 0; i < 16; i++) w.steWords[i] = at < 0 ? 0 : mem.read32(at + 4 * i);
    mem.busError = busError;
  }

  /** Whether the STE moved or changed since the last snapshot (which is then taken again). */
  private steMoved(w: Watched): boolean {
    const hw = w.hw;
    const mem = hw.mem;
    const busError = mem.busError;
    const at = hw.steAddress(w.sid);
    let moved = at !== w.steAt;
    for (let i = 0; i < 16 && !moved && at >= 0; i++)
      moved = mem.read32(at + 4 * i) !== w.steWords[i];
    mem.busError = busError;
    if (moved) this.snapshotSte(w);
    return moved;
  }

  private torn(
    e: Entry,
    seen: SmmuEntryView,
    after: SmmuEntryView,
    illegal: number | null,
  ): SmmuTornEntry {
    return {
      device: e.dev.name,
      pasid: e.ssid < 0 ? null : e.ssid,
      unit: e.hw.name,
      seen: smmuViewText(seen),
      before: smmuViewText(e.before),
      after: smmuViewText(after),
      illegal,
      kind: e.ssid < 0 ? "ste" : "cd",
      sid: e.sid,
      ssid: e.ssid,
      changed: smmuTornText(seen, e.before, after),
    };
  }
}
