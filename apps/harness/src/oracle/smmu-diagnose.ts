// Diagnosing a stale SMMUv3 translation: which cache answered (the device's ATC, or the SMMU's
// STE, CD, TLB or walk cache, compared with what memory says now) and the command that would
// have removed the entry.

import { lpaeDescPa } from "@iommu-sim/arm-smmu/format";
import {
  CFG_OK,
  SMMU_ASID_IPA,
  SMMU_TLB_NESTED,
  SMMU_TLB_S2,
  SMMU_VMID_EL2,
  type SmmuCacheInspection,
  type SmmuTlbEntry,
  type SmmuV3,
  type SmmuWalkCacheEntry,
  type SmmuWalkRange,
} from "@iommu-sim/arm-smmu/hw";
import { type Device, NO_PASID, newTranslationRequest } from "@iommu-sim/iommu-core";
import type { PhysMemory } from "@iommu-sim/iommu-core/platform";
import { hex, type MissingInvalidation, type StaleEntry } from "./violation.js";

const PAGE = 4096;

/**
 * Which cache answered a stale translation of `dev` (SubstreamID `ssid`, NO_PASID for none) at
 * page `iovaPfn`, and the command that would have removed the entry. The ATC when the device
 * used it (CMD_ATC_INV); else the first cached structure that differs from memory: the STE
 * (CMD_CFGI_STE), then the CD (CMD_CFGI_CD); then a walk-cache entry on the path that points at
 * a table memory no longer reaches (a freed table: every TLB refill goes through it, so it is the
 * entry to remove, with a non-leaf CMD_TLBI_NH_VA / CMD_TLBI_EL2_VA / CMD_TLBI_S2_IPA over its
 * span, the kernel's tlb_flush_walk); then the TLB entry a lookup hits (CMD_TLBI_NH_VA,
 * CMD_TLBI_EL2_VA for an EL2 StreamWorld, CMD_TLBI_S2_IPA for a stage 2 only one, Leaf = 1);
 * then the deepest walk-cache entry on the path (the non-leaf invalidation of its span). Fields
 * carry the commands' spec parameter names.
 *
 * @spec Arm SMMUv3 (IHI 0070) 4.3 (configuration invalidation), 4.4 (TLB invalidation), 4.5.1
 */
export function diagnoseSmmuStale(
  dev: Device,
  hw: SmmuV3,
  ssid: number,
  iovaPfn: number,
  access: number,
  privileged: boolean,
  viaAtc: boolean,
): { entry: StaleEntry; missing: MissingInvalidation } {
  const sid = dev.sid >>> 0;
  if (viaAtc) return atcStale(dev, sid, ssid, iovaPfn);
  const req = newTranslationRequest();
  req.rid = dev.rid;
  req.sid = dev.sid;
  req.pasid = ssid;
  req.iovaPfn = iovaPfn;
  req.access = access;
  req.privileged = privileged;
  const ins = hw.inspect(req);
  const ste = ins.ste;
  if (ste.cached !== null && !sameConfig(ste.cached, ste.fresh)) {
    const c = ste.cached;
    return {
      entry: {
        cache: "ste-cache",
        where: hw.name,
        fields: {
          SID: hex(sid),
          Config: c.config,
          S2VMID: c.vmid,
          S1ContextPtr: c.s1 ? hex(c.s1ContextPtr) : null,
          S2TTB: c.s2 ? hex(c.s2Range.ttb) : null,
        },
      },
      missing: { descriptor: "CMD_CFGI_STE", fields: { SID: hex(sid) } },
    };
  }
  const cd = ins.cd;
  if (
    cd !== null &&
    cd.cached !== null &&
    (cd.fresh === null || !sameConfig(cd.cached, cd.fresh))
  ) {
    const c = cd.cached;
    return {
      entry: {
        cache: "cd-cache",
        where: hw.name,
        fields: {
          SID: hex(sid),
          SSID: cd.index,
          ASID: c.asid,
          TTB0: c.t0.disabled ? null : hex(c.t0.ttb),
          TTB1: c.t1.disabled ? null : hex(c.t1.ttb),
        },
      },
      missing: { descriptor: "CMD_CFGI_CD", fields: { SID: hex(sid), SSID: cd.index } },
    };
  }
  const gone = ins.walkCache.find((e) => walkEntryStale(hw.mem, ins, e));
  if (gone !== undefined) return walkStale(hw, gone);
  if (ins.tlb !== null) return tlbStale(hw, ins.tlb, ins.asid ?? 0);
  const w = ins.walkCache[0];
  if (w !== undefined) return walkStale(hw, w);
  return {
    entry: { cache: "unknown", where: hw.name, fields: { SID: hex(sid) } },
    missing: { descriptor: "unknown", fields: {} },
  };
}

/** The ATC entry that answered, and the CMD_ATC_INV for its span. */
function atcStale(
  dev: Device,
  sid: number,
  ssid: number,
  iovaPfn: number,
): { entry: StaleEntry; missing: MissingInvalidation } {
  const e = dev.atc
    ?.entries()
    .find(
      (a) =>
        a.pasid === ssid && iovaPfn >= a.iovaPfn && iovaPfn < a.iovaPfn + 2 ** (a.sizeShift - 12),
    );
  const size = e === undefined ? 0 : e.sizeShift - 12;
  const base = e === undefined ? iovaPfn : e.iovaPfn;
  const ssv = ssid !== NO_PASID;
  return {
    entry: {
      cache: "atc",
      where: dev.name,
      fields: {
        SID: hex(sid),
        pasid: ssv ? ssid : null,
        iova: hex(base * PAGE),
        pa: e === undefined ? null : hex(e.paBase),
        size: 2 ** (size + 12),
        perm: e === undefined ? null : permText(e.perm),
      },
    },
    missing: {
      descriptor: "CMD_ATC_INV",
      fields: {
        SID: hex(sid),
        SSV: ssv ? 1 : 0,
        SSID: ssv ? ssid : 0,
        Address: hex(base * PAGE),
        Size: size,
      },
    },
  };
}

/** The name of a TLB entry's kind, as StaleEntry fields spell it. */
export function smmuTlbKindName(kind: number): string {
  return kind === SMMU_TLB_S2 ? "stage 2" : kind === SMMU_TLB_NESTED ? "nested" : "stage 1";
}

/**
 * The fields of a TLB entry as a stale-entry report gives them: VMID (null in an EL2
 * StreamWorld, which has none: `el2`), ASID (null for a stage 2 only entry, which has none), the
 * input address and size, and what `SmmuInvalidationLog` needs to tell whether a command
 * removed it (kind, global, granule, level).
 */
export function smmuTlbFields(e: SmmuTlbEntry): Record<string, string | number | boolean | null> {
  return {
    VMID: e.vmid === SMMU_VMID_EL2 ? null : e.vmid,
    ASID: e.asid === SMMU_ASID_IPA ? null : e.asid,
    el2: e.vmid === SMMU_VMID_EL2,
    iova: hex(e.vpn * PAGE),
    pa: hex(e.oaFrame * PAGE),
    size: 2 ** e.sizeShift,
    global: e.global,
    kind: smmuTlbKindName(e.kind),
    granule: e.tgShift,
    level: e.level,
    perm: permText(e.perm),
  };
}

function tlbStale(
  hw: SmmuV3,
  t: SmmuTlbEntry,
  asid: number,
): { entry: StaleEntry; missing: MissingInvalidation } {
  const entry: StaleEntry = { cache: "tlb", where: hw.name, fields: smmuTlbFields(t) };
  const address = hex(t.vpn * PAGE);
  // A global entry has no ASID of its own: the ASID it answered under selects it too.
  const tagAsid = t.global ? asid : t.asid;
  if (t.kind === SMMU_TLB_S2)
    return {
      entry,
      missing: { descriptor: "CMD_TLBI_S2_IPA", fields: { VMID: t.vmid, Address: address } },
    };
  if (t.vmid === SMMU_VMID_EL2)
    return {
      entry,
      missing: {
        descriptor: "CMD_TLBI_EL2_VA",
        fields: { ASID: tagAsid, Address: address, Leaf: 1 },
      },
    };
  return {
    entry,
    missing: {
      descriptor: "CMD_TLBI_NH_VA",
      fields: { VMID: t.vmid, ASID: tagAsid, Address: address, Leaf: 1 },
    },
  };
}

/** The fields of a walk-cache entry as a stale-entry report gives them (see smmuTlbFields). */
export function smmuWalkFields(
  w: SmmuWalkCacheEntry,
): Record<string, string | number | boolean | null> {
  const reachPages = 2 ** (w.tgShift + (3 - w.level) * (w.tgShift - 3) - 12);
  return {
    VMID: w.vmid === SMMU_VMID_EL2 ? null : w.vmid,
    ASID: w.stage === 2 ? null : w.asid,
    el2: w.vmid === SMMU_VMID_EL2,
    stage: w.stage,
    level: w.level,
    granule: w.tgShift,
    iova: hex(w.tag * reachPages * PAGE),
    table: hex(w.tablePa),
  };
}

/**
 * The walk-cache entry's non-leaf invalidation: the command over its span with Leaf = 0 (a
 * leaf-only one leaves walk-cache entries), as the kernel's tlb_flush_walk sends it.
 */
function walkStale(
  hw: SmmuV3,
  w: SmmuWalkCacheEntry,
): { entry: StaleEntry; missing: MissingInvalidation } {
  const fields = smmuWalkFields(w);
  const entry: StaleEntry = { cache: "walk-cache", where: hw.name, fields };
  const address = fields.iova as string;
  if (w.vmid === SMMU_VMID_EL2)
    return {
      entry,
      missing: {
        descriptor: "CMD_TLBI_EL2_VA",
        fields: { ASID: w.asid, Address: address, Leaf: 0 },
      },
    };
  if (w.stage === 2)
    return {
      entry,
      missing: {
        descriptor: "CMD_TLBI_S2_IPA",
        fields: { VMID: w.vmid, Address: address, Leaf: 0 },
      },
    };
  return {
    entry,
    missing: {
      descriptor: "CMD_TLBI_NH_VA",
      fields: { VMID: w.vmid, ASID: w.asid, Address: address, Leaf: 0 },
    },
  };
}

/** Bit shift of the region one descriptor at `level` maps (granule shift `g`). */
function levelShift(g: number, level: number): number {
  return g + (3 - level) * (g - 3);
}

/**
 * Whether walk-cache entry `e` (on the path of the inspected request) points at a table that the
 * tables in memory no longer reach at its level for that address: the walk from the fresh
 * configuration's table base (stage 1: the fresh CD's TTB0; stage 2 only: the fresh STE's S2TTB)
 * ends before its level, or reaches another table. Nested stage 1 entries (which hold IPAs) and
 * TTB1 addresses are not judged (false).
 */
function walkEntryStale(mem: PhysMemory, ins: SmmuCacheInspection, e: SmmuWalkCacheEntry): boolean {
  let r: SmmuWalkRange;
  const ste = ins.ste.fresh;
  if (ste.status !== CFG_OK) return false;
  if (e.stage === 1) {
    const cd = ins.cd?.fresh ?? null;
    if (cd === null || cd.status !== CFG_OK || cd.bypass || ste.s2) return false;
    r = cd.t0;
  } else {
    if (!ste.s2 || ste.s1) return false;
    r = ste.s2Range;
  }
  if (r.disabled || e.tgShift !== r.pgShift || e.level < r.startLevel) return false;
  const g = r.pgShift;
  // The span's first page: every page of it takes the same path down to the entry's level.
  const vpn = e.tag * 2 ** (levelShift(g, e.level) - 12);
  if (vpn >= 2 ** (r.ia - 12)) return false;
  const busError = mem.busError;
  let table = r.ttb;
  let idxBits = r.ia - levelShift(g, r.startLevel);
  let reached = -1;
  for (let level = r.startLevel; level <= e.level; level++) {
    const index = Math.floor(vpn / 2 ** (levelShift(g, level) - 12)) % 2 ** idxBits;
    const lo = mem.read64(table + index * 8);
    const hi = mem.hi;
    // Not a table descriptor: the walk ends here.
    if ((lo & 3) !== 3 || level === 3) break;
    table = lpaeDescPa(lo, hi, 2 ** g);
    idxBits = g - 3;
    if (level === e.level) reached = table;
  }
  mem.busError = busError;
  return reached !== e.tablePa;
}

/** r/w/x of a permission mask (DMA_* or SMMU_PERM_*: both keep read, write, execute in bits 0-2). */
function permText(perm: number): string {
  return `${perm & 1 ? "r" : "-"}${perm & 2 ? "w" : "-"}${perm & 4 ? "x" : "-"}`;
}

/** Fields of a decoded STE / CD that are bookkeeping, not configuration. */
const NOT_CONFIG = new Set(["sid", "fetchAddr", "faultIpa", "faultLevel", "decoded"]);

/**
 * Whether two decoded STEs (or CDs) configure translation alike: every field but the
 * bookkeeping ones and the decode memo, nested walk ranges compared field by field.
 */
export function sameConfig(a: object, b: object): boolean {
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  for (const k of Object.keys(x)) {
    if (NOT_CONFIG.has(k) || k.startsWith("memo")) continue;
    const u = x[k];
    const v = y[k];
    if (typeof u === "object" && u !== null && typeof v === "object" && v !== null) {
      if (!sameConfig(u, v)) return false;
    } else if (u !== v) return false;
  }
  return true;
}
