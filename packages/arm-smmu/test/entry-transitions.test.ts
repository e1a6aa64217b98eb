// The driver's STE and CD updates checked from the hardware side: a real SMMUv3, its linear
// stream table and CD tables in memory, and a watcher that sees every 64-bit store the entry
// writer makes. Every entry the SMMU could fetch between two stores must be the old
// configuration or the new one; only the transitions the kernel's algorithm classifies as
// breaking may show an invalid entry in between. Sync counts are the kernel KUnit test's
// (drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-test.c) where it has the transition, and the
// kernel algorithm's result, worked out by hand, where it does not.

import { encode, loadLayout, type PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import {
  type CdtableSteParams,
  clearCd,
  makeAbortSte,
  makeBypassSte,
  makeCdtableSte,
  makeNestedSte,
  makeS1Cd,
  makeS2DomainSte,
  makeSvaCd,
  type S2DomainSteParams,
  type SmmuEntryFeatures,
} from "../src/driver/entries.js";
import {
  CD_USED_OPS,
  type EntryWriterOps,
  STE_USED_OPS,
  steUpdateSafe,
  writeEntry,
} from "../src/driver/entry-writer.js";
import { CD } from "../src/format/cd.js";
import { CMDQ_OP } from "../src/format/commands.js";
import {
  S1DSS_BYPASS,
  S1DSS_SSID0,
  S1DSS_TERMINATE,
  STE,
  STE_CFG_ABORT,
  STE_CFG_BYPASS,
  STE_CFG_S1_TRANS,
} from "../src/format/ste.js";
import { type SmmuEntryView, smmuViewLegal } from "../src/hw/smmu-entry-view.js";
import type { SmmuV3 } from "../src/hw/smmu-v3.js";
import {
  type CdTable,
  type LpaeTable,
  SmmuTestMachine,
  smmuTestMachine,
} from "../src/testing/table-builder.js";

/** The KUnit suite's SMMU features: stalls and attribute-type overrides, no E2H. */
const FEAT: SmmuEntryFeatures = { stalls: true, attrTypesOvr: true, e2h: false };
const SID = 5;
const MAIR: [number, number] = [0x0004ff44, 0x000000f4];
const cmd = SmmuTestMachine.command;

type Shape = "single" | "linear" | "2lvl";
/** CD table shapes: one CD (S1CDMax 0), a linear table, a 2-level table with 64 KiB leaves. */
const SHAPES: Record<Shape, { cdMax: number; s1fmt: number; ssid: number; dss: number }> = {
  single: { cdMax: 0, s1fmt: 0, ssid: 0, dss: S1DSS_SSID0 },
  linear: { cdMax: 4, s1fmt: 0, ssid: 3, dss: S1DSS_BYPASS },
  "2lvl": { cdMax: 12, s1fmt: 2, ssid: 1500, dss: S1DSS_TERMINATE },
};

interface Rig {
  m: SmmuTestMachine;
  hw: SmmuV3;
  mem: PhysMemory;
  stePa: number;
  tables: Record<Shape, CdTable>;
  /** A second linear table, for a CD-table pointer change. */
  other: CdTable;
  s1: LpaeTable;
  s1b: LpaeTable;
  s2: LpaeTable;
  s2b: LpaeTable;
  steOps: EntryWriterOps;
  cdOps(ssid: number): EntryWriterOps;
}

function rig(): Rig {
  const m = smmuTestMachine();
  const b = m.b;
  const tables = {
    single: b.cdTable(0),
    linear: b.cdTable(4),
    "2lvl": b.cdTable(12, 2),
  };
  return {
    m,
    hw: m.smmu,
    mem: m.mem,
    stePa: b.steAddr(m.st, SID),
    tables,
    other: b.cdTable(4),
    s1: b.lpae(1, 12, 48),
    s1b: b.lpae(1, 12, 48),
    s2: b.lpae(2, 12, 40, { startLevel: 1 }),
    s2b: b.lpae(2, 12, 40, { startLevel: 1 }),
    // The driver's syncs: CFGI_STE / CFGI_CD (leaf) for the master's one StreamID, then CMD_SYNC.
    steOps: {
      ...STE_USED_OPS,
      sync: () => m.submit(cmd(CMDQ_OP.CFGI_STE, { StreamID: SID, Leaf: 1 })),
    },
    cdOps: (ssid) => ({
      ...CD_USED_OPS,
      sync: () => m.submit(cmd(CMDQ_OP.CFGI_CD, { StreamID: SID, SubstreamID: ssid, Leaf: 1 })),
    }),
  };
}

type Build = (r: Rig) => Uint32Array;

function entry(fill: (w: Uint32Array) => void): Uint32Array {
  const w = new Uint32Array(16);
  fill(w);
  return w;
}

const abort: Build = () => entry(makeAbortSte);
const bypass: Build = () => entry((w) => makeBypassSte(w, FEAT));

interface CdtOpts {
  dss?: number;
  ats?: boolean;
  stall?: boolean;
  shape?: Shape;
  /** Point at the other linear table. */
  other?: boolean;
}

function cdtParams(r: Rig, o: CdtOpts): CdtableSteParams {
  const shape = SHAPES[o.shape ?? "2lvl"];
  const t = o.other ? r.other : r.tables[o.shape ?? "2lvl"];
  return {
    cdTablePa: t.ptr,
    s1fmt: shape.s1fmt,
    s1cdmax: shape.cdMax,
    s1dss: o.dss ?? S1DSS_SSID0,
    ats: o.ats ?? true,
    stallEnabled: o.stall ?? false,
  };
}

const cdt =
  (o: CdtOpts = {}): Build =>
  (r) =>
    entry((w) => makeCdtableSte(w, cdtParams(r, o), FEAT));

interface S2Opts {
  /** KUnit's stage 2 domain has VMID 0 (a zeroed domain); Linux allocates VMIDs from 1. */
  vmid?: number;
  ats?: boolean;
  stall?: boolean;
  /** Use the second stage 2 table. */
  alt?: boolean;
}

function s2Params(r: Rig, o: S2Opts): S2DomainSteParams {
  const pt = o.alt ? r.s2b : r.s2;
  return {
    vmid: o.vmid ?? 0,
    vttbr: pt.rootDesc,
    t0sz: 64 - pt.ia,
    sl0: 2 - pt.startLevel,
    irgn: 1,
    orgn: 1,
    sh: 3,
    tg: 0,
    ps: 5,
    ats: o.ats ?? true,
    stallEnabled: o.stall ?? false,
  };
}

const s2 =
  (o: S2Opts = {}): Build =>
  (r) =>
    entry((w) => makeS2DomainSte(w, s2Params(r, o), FEAT));

interface NestedOpts extends S2Opts {
  dss?: number;
  shape?: Shape;
  /** The vSTE's Config (default stage 1). */
  vcfg?: number;
}

/** A nested STE from a guest vSTE; the guest's CD table pointer is an IPA (not walked here). */
const nested =
  (o: NestedOpts = {}): Build =>
  (r) => {
    const p = cdtParams(r, { shape: o.shape, dss: o.dss ?? S1DSS_BYPASS });
    // The guest's master does not stall: S1STALLD, as Linux in the guest would set it.
    const v = encode(STE, {
      V: 1,
      Config: o.vcfg ?? STE_CFG_S1_TRANS,
      S1Fmt: p.s1fmt,
      S1ContextPtr: p.cdTablePa,
      S1CDMax: p.s1cdmax,
      S1DSS: p.s1dss,
      S1CIR: 1,
      S1COR: 1,
      S1CSH: 3,
      S1STALLD: 1,
    });
    return entry((w) => makeNestedSte(w, { vste: v.subarray(0, 4), s2: s2Params(r, o) }, FEAT));
  };

// ----- Observation -------------------------------------------------------------------------------

interface Seen {
  view: SmmuEntryView;
  /** The entry in memory when the SMMU was asked (for the kernel's update-safe bits). */
  entry: Uint32Array;
}

interface Observed {
  syncs: number;
  hwSyncs: number;
  seen: Seen[];
  oldView: SmmuEntryView;
  newView: SmmuEntryView;
  from: Uint32Array;
  to: Uint32Array;
  final: Uint32Array;
}

const load = (mem: PhysMemory, pa: number) => loadLayout(mem, STE, pa, new Uint32Array(16));

/**
 * Write `to` over the entry at `pa` (holding `from`), recording what the SMMU would see after
 * every store. `prime` runs with the watcher installed, before the write (a CD is watched only
 * once the SMMU has fetched it).
 */
function observe(
  r: Rig,
  kind: "ste" | "cd",
  ssid: number,
  pa: number,
  ops: EntryWriterOps,
  from: Uint32Array,
  to: Uint32Array,
  torn: boolean,
  prime: () => void = () => {},
): Observed {
  const asSeen = () => (kind === "ste" ? r.hw.steAsSeen(SID) : r.hw.cdAsSeen(SID, ssid));
  const seen: Seen[] = [];
  const stop = r.hw.watchConfigWrites((sid, s, _qword, view) => {
    if (sid === SID && s === (kind === "ste" ? -1 : ssid))
      seen.push({ view, entry: load(r.mem, pa) });
  });
  prime();
  seen.length = 0;
  const oldView = asSeen();
  const before = r.hw.stats.syncs;
  const syncs = writeEntry(ops, r.mem, pa, to, { torn });
  const hwSyncs = r.hw.stats.syncs - before;
  stop();
  return { syncs, hwSyncs, seen, oldView, newView: asSeen(), from, to, final: load(r.mem, pa) };
}

function steTransition(from: Build, to: Build, torn = false): Observed {
  const r = rig();
  const a = from(r);
  const b = to(r);
  writeEntry(r.steOps, r.mem, r.stePa, a);
  return observe(r, "ste", -1, r.stePa, r.steOps, a, b, torn);
}

type CdBuild = (r: Rig) => Uint32Array;

const cdZero: CdBuild = () => entry(clearCd);
const s1Cd =
  (asid: number, alt = false): CdBuild =>
  (r) => {
    const pt = alt ? r.s1b : r.s1;
    return entry((w) =>
      makeS1Cd(w, {
        asid,
        ttb0: pt.rootDesc,
        t0sz: 64 - pt.ia,
        tg0: 0,
        irgn0: 1,
        orgn0: 1,
        sh0: 3,
        ips: 5,
        mair: MAIR,
        stallEnabled: false,
      }),
    );
  };
const svaCd =
  (asid: number, released: boolean): CdBuild =>
  (r) =>
    entry((w) =>
      makeSvaCd(
        w,
        {
          asid,
          ips: 5,
          mair: [0xbbff4400, 0x04],
          stallEnabled: false,
          mm: released ? null : { pgd: r.s1b.root, vaBits: 48, pageShift: 12 },
        },
        FEAT,
      ),
    );

/** A CD transition at `shape`'s CD index under a CD-table STE. */
function cdTransition(shape: Shape, from: CdBuild, to: CdBuild, torn = false): Observed {
  const r = rig();
  const sh = SHAPES[shape];
  writeEntry(r.steOps, r.mem, r.stePa, cdt({ shape, dss: sh.dss, ats: false })(r));
  const cdPa = r.m.b.cdAddr(r.tables[shape], sh.ssid);
  const ops = r.cdOps(sh.ssid);
  const a = from(r);
  const b = to(r);
  writeEntry(ops, r.mem, cdPa, a);
  // Traffic without a SubstreamID reaches CD 0 (S1CDMax 0, or S1DSS = SSID0); others carry it.
  const reqSsid = sh.ssid === 0 ? -1 : sh.ssid;
  return observe(r, "cd", sh.ssid, cdPa, ops, a, b, torn, () => {
    r.m.dma(SID, reqSsid, 0x1000);
  });
}

// ----- Judging -----------------------------------------------------------------------------------

/** V = 0: the view of an invalid STE or CD (C_BAD_STE / C_BAD_CD for any transaction). */
function invalid(v: SmmuEntryView): boolean {
  const vBit = v.kind === "ste" ? 1 : 0x80000000;
  return ((v.words[0] as number) & vBit) === 0;
}

/**
 * Whether `v` shows the same configuration as `ref`, ignoring the STE bits the kernel lets
 * change while live (MEV, and EATS full-ATS, computed between the entry now in memory and the
 * entry `ref` was taken from) as its KUnit check does.
 */
function sameConfig(
  v: SmmuEntryView,
  ref: SmmuEntryView,
  now: Uint32Array,
  refEntry: Uint32Array,
): boolean {
  if (v.kind !== ref.kind || v.status !== ref.status) return false;
  const safe = new Uint32Array(16);
  if (v.kind === "ste") steUpdateSafe(now, refEntry, safe);
  for (let i = 0; i < 16; i++) {
    if (v.used[i] !== ref.used[i]) return false;
    if ((((v.words[i] as number) ^ (ref.words[i] as number)) & ~(safe[i] as number)) !== 0)
      return false;
  }
  return true;
}

interface Verdict {
  /** Some view during the write was invalid (KUnit: "invalid_entry_written"). */
  sawInvalid: boolean;
  /** Views that were neither old nor new and not invalid: a torn or illegal mix. */
  mixed: SmmuEntryView[];
  /** Invalid views that were neither old nor new. */
  broken: number;
}

function judge(o: Observed): Verdict {
  const v: Verdict = { sawInvalid: false, mixed: [], broken: 0 };
  for (const { view, entry: now } of o.seen) {
    if (invalid(view)) v.sawInvalid = true;
    if (sameConfig(view, o.oldView, now, o.from) || sameConfig(view, o.newView, now, o.to))
      continue;
    if (invalid(view)) v.broken++;
    else v.mixed.push(view);
  }
  return v;
}

/** The checks every transition gets: `syncs` and the kernel's hitless classification. */
function expectTransition(o: Observed, syncs: number, hitless: boolean): void {
  expect(o.syncs).toBe(syncs);
  expect(o.hwSyncs).toBe(syncs);
  expect(Array.from(o.final)).toEqual(Array.from(o.to));
  // Both ends are configurations the SMMU accepts (or plainly invalid, for a cleared CD).
  for (const end of [o.oldView, o.newView]) expect(smmuViewLegal(end) || invalid(end)).toBe(true);
  expect(o.seen.length).toBeGreaterThan(0);
  const v = judge(o);
  expect(v.mixed).toEqual([]);
  expect(v.sawInvalid).toBe(!hitless);
  if (hitless) expect(v.broken).toBe(0);
}

// ----- STE transitions -----------------------------------------------------------------------------

/** [name, from, to, syncs, hitless]; "KUnit" marks the kernel test's own transitions. */
const STE_CASES: [string, Build, Build, number, boolean][] = [
  ["KUnit bypass_to_abort", bypass, abort, 2, true],
  ["KUnit abort_to_bypass", abort, bypass, 2, true],
  ["KUnit cdtable_to_abort", cdt(), abort, 2, true],
  ["KUnit abort_to_cdtable", abort, cdt(), 2, true],
  ["KUnit cdtable_to_bypass", cdt(), bypass, 3, true],
  ["KUnit bypass_to_cdtable", bypass, cdt(), 3, true],
  ["KUnit cdtable_s1dss_change (SSID0 to bypass)", cdt(), cdt({ dss: S1DSS_BYPASS }), 1, true],
  ["KUnit cdtable_s1dss_change (bypass to SSID0)", cdt({ dss: S1DSS_BYPASS }), cdt(), 1, true],
  ["KUnit s1dssbypass_to_stebypass", cdt({ dss: S1DSS_BYPASS }), bypass, 2, true],
  ["KUnit stebypass_to_s1dssbypass", bypass, cdt({ dss: S1DSS_BYPASS }), 2, true],
  ["KUnit s2_to_abort", s2(), abort, 2, true],
  ["KUnit abort_to_s2", abort, s2(), 2, true],
  ["KUnit s2_to_bypass", s2(), bypass, 2, true],
  ["KUnit bypass_to_s2", bypass, s2(), 2, true],
  ["KUnit s1_to_s2 (VMID 0)", cdt(), s2(), 3, true],
  ["KUnit s2_to_s1 (VMID 0)", s2(), cdt(), 3, true],
  [
    "KUnit non_hitless (CD table and S1DSS change)",
    cdt(),
    cdt({ dss: S1DSS_BYPASS, other: true, shape: "linear" }),
    3,
    false,
  ],
  [
    "KUnit s1_to_s2_stall",
    cdt({ ats: false, stall: true }),
    s2({ ats: false, stall: true }),
    3,
    true,
  ],
  [
    "KUnit s2_to_s1_stall",
    s2({ ats: false, stall: true }),
    cdt({ ats: false, stall: true }),
    3,
    true,
  ],
  ["KUnit nested_s1dssbypass_to_s1bypass", nested({ ats: true }), s2({ ats: false }), 3, true],
  ["KUnit nested_s1bypass_to_s1dssbypass", s2({ ats: false }), nested({ ats: true }), 2, true],
  // Derived from the kernel algorithm (not in KUnit).
  ["one CD, abort to cdtable", abort, cdt({ shape: "single" }), 2, true],
  ["one CD, cdtable to abort", cdt({ shape: "single" }), abort, 2, true],
  ["linear CD table, bypass to cdtable", bypass, cdt({ shape: "linear" }), 3, true],
  ["linear CD table, cdtable to bypass", cdt({ shape: "linear" }), bypass, 3, true],
  ["one CD, cdtable to S2", cdt({ shape: "single" }), s2(), 3, true],
  ["linear CD table, S2 to cdtable", s2(), cdt({ shape: "linear" }), 3, true],
  ["S1DSS SSID0 to terminate", cdt(), cdt({ dss: S1DSS_TERMINATE }), 1, true],
  ["S1DSS terminate to bypass", cdt({ dss: S1DSS_TERMINATE }), cdt({ dss: S1DSS_BYPASS }), 1, true],
  ["ATS on, cdtable (EATS is update-safe)", cdt({ ats: false }), cdt({ ats: true }), 1, true],
  ["ATS off, cdtable", cdt({ ats: true }), cdt({ ats: false }), 1, true],
  ["ATS on, S2", s2({ vmid: 3, ats: false }), s2({ vmid: 3, ats: true }), 1, true],
  ["ATS off, nested", nested({ vmid: 3, ats: true }), nested({ vmid: 3, ats: false }), 1, true],
  ["cdtable to S2 with a real VMID (S2VMID used by both)", cdt(), s2({ vmid: 3 }), 3, false],
  ["S2 with a real VMID to cdtable", s2({ vmid: 3 }), cdt(), 3, false],
  ["S2 domain change (VMID and table)", s2({ vmid: 3 }), s2({ vmid: 4, alt: true }), 3, false],
  ["S2 table change, same VMID", s2({ vmid: 3 }), s2({ vmid: 3, alt: true }), 1, true],
  ["abort to nested", abort, nested({ vmid: 3 }), 2, true],
  ["nested to abort", nested({ vmid: 3 }), abort, 2, true],
  ["bypass to nested", bypass, nested({ vmid: 3 }), 2, true],
  ["nested to bypass", nested({ vmid: 3 }), bypass, 2, true],
  [
    "nested, guest switches from one CD to a linear CD table",
    nested({ vmid: 3, shape: "single" }),
    nested({ vmid: 3, shape: "linear" }),
    1,
    true,
  ],
  [
    "nested with a bypass vSTE (the S2 STE) to stage 1 vSTE",
    nested({ vmid: 3, ats: false, vcfg: STE_CFG_BYPASS }),
    nested({ vmid: 3, ats: false }),
    2,
    true,
  ],
  ["nested with an abort vSTE to bypass", nested({ vcfg: STE_CFG_ABORT }), bypass, 2, true],
  [
    "cdtable to nested (VMID 0 to 3)",
    cdt({ shape: "linear", dss: S1DSS_BYPASS }),
    nested({ vmid: 3, shape: "linear" }),
    3,
    false,
  ],
  [
    "nested to cdtable",
    nested({ vmid: 3, shape: "linear" }),
    cdt({ shape: "linear", dss: S1DSS_BYPASS }),
    3,
    false,
  ],
];

describe("STE transitions seen by the SMMU", () => {
  it.each(STE_CASES)("%s", (_name, from, to, syncs, hitless) => {
    expectTransition(steTransition(from, to), syncs, hitless);
  });
});

// ----- CD transitions ------------------------------------------------------------------------------

/** [name, from, to, syncs, hitless]: KUnit's CD cases, then derived ones. */
const CD_CASES: [string, CdBuild, CdBuild, number, boolean][] = [
  ["KUnit s1_clear (0 to S1 CD)", cdZero, s1Cd(1997), 2, false],
  ["KUnit s1_clear (S1 CD to 0)", s1Cd(1997), cdZero, 2, false],
  ["KUnit s1_change_asid", s1Cd(778), s1Cd(1997), 1, true],
  ["KUnit s1_change_asid back", s1Cd(1997), s1Cd(778), 1, true],
  ["KUnit sva_clear (0 to SVA CD)", cdZero, svaCd(1997, false), 2, false],
  ["KUnit sva_clear (SVA CD to 0)", svaCd(1997, false), cdZero, 2, false],
  ["KUnit sva_release (SVA to released)", svaCd(1997, false), svaCd(1997, true), 2, true],
  ["KUnit sva_release (released to SVA)", svaCd(1997, true), svaCd(1997, false), 2, true],
  ["paging domain to SVA at the same PASID (breaking)", s1Cd(778), svaCd(1997, false), 3, false],
];

describe("CD transitions seen by the SMMU", () => {
  for (const shape of ["single", "linear", "2lvl"] as const) {
    const sh = SHAPES[shape];
    describe(`CD ${sh.ssid} of a ${shape} CD table (S1CDMax ${sh.cdMax})`, () => {
      it.each(CD_CASES)("%s", (_name, from, to, syncs, hitless) => {
        expectTransition(cdTransition(shape, from, to), syncs, hitless);
      });
    });
  }
});

// ----- Torn writes ---------------------------------------------------------------------------------

describe("a torn write (every differing qword in order, one sync)", () => {
  it("shows the SMMU a mixed STE on a breaking change of CD table and S1DSS", () => {
    const o = steTransition(cdt(), cdt({ dss: S1DSS_BYPASS, other: true, shape: "linear" }), true);
    expect(o.syncs).toBe(1);
    expect(judge(o).mixed.length).toBeGreaterThan(0);
  });

  it("shows the SMMU an illegal STE when a stage 2 STE replaces abort", () => {
    const o = steTransition(abort, s2({ vmid: 3 }), true);
    expect(judge(o).mixed.some((v) => !smmuViewLegal(v))).toBe(true);
  });

  it("shows the SMMU a mixed STE when a real-VMID stage 2 replaces a CD table", () => {
    const o = steTransition(cdt(), s2({ vmid: 3 }), true);
    expect(judge(o).mixed.length).toBeGreaterThan(0);
  });

  it("shows the SMMU a mixed CD when a paging CD is replaced by an SVA CD", () => {
    const o = cdTransition("linear", s1Cd(778), svaCd(1997, false), true);
    expect(judge(o).mixed.length).toBeGreaterThan(0);
  });

  it("is invisible on a change of one qword (the kernel's order would store the same)", () => {
    const o = steTransition(cdt(), cdt({ dss: S1DSS_BYPASS }), true);
    expect(judge(o).mixed).toEqual([]);
  });
});

describe("the watcher itself", () => {
  it("reports CD stores only after the SMMU fetched the CD", () => {
    const r = rig();
    const sh = SHAPES.linear;
    writeEntry(r.steOps, r.mem, r.stePa, cdt({ shape: "linear", dss: sh.dss })(r));
    const cdPa = r.m.b.cdAddr(r.tables.linear, sh.ssid);
    const o = observe(r, "cd", sh.ssid, cdPa, r.cdOps(sh.ssid), cdZero(r), s1Cd(5)(r), false);
    expect(o.seen).toEqual([]);
    expect(Array.from(o.final)).toEqual(Array.from(s1Cd(5)(r)));
    expect(loadLayout(r.mem, CD, cdPa)[0]).toBe(o.to[0]);
  });
});
