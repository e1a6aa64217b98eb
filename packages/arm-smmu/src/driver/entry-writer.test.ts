import { fc, test } from "@fast-check/vitest";
import { encode, type Layout, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { CD } from "../format/cd.js";
import {
  S1DSS_BYPASS,
  S1DSS_SSID0,
  S1DSS_TERMINATE,
  STE,
  STE_CFG_ABORT,
  STE_CFG_BYPASS,
  STE_CFG_NESTED,
  STE_CFG_S1_TRANS,
  STE_CFG_S2_TRANS,
} from "../format/ste.js";
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
} from "./entries.js";
import {
  CD_USED_OPS,
  cdUsed,
  ENTRY_WORDS,
  type EntryWriterOps,
  entryQwordDiff,
  STE_USED_OPS,
  steUpdateSafe,
  steUsed,
  writeEntry,
} from "./entry-writer.js";

// ----- Helpers -------------------------------------------------------------------------------------

/** The fields of `layout` whose bits `used` covers completely; a partly covered field fails. */
function usedFields(layout: Layout, used: Uint32Array): string[] {
  const out: string[] = [];
  const bit = (b: number) => ((used[b >>> 5] as number) >>> (b & 31)) & 1;
  for (const f of layout.fields) {
    let n = 0;
    for (let b = f.lsb; b < f.lsb + f.width; b++) n += bit(b);
    if (n === f.width) out.push(f.name);
    else if (n !== 0) throw new Error(`${f.name} is partly used (${n}/${f.width} bits)`);
  }
  return out.sort();
}

/** Whether `used` covers any bit no field declares. */
function usesReserved(layout: Layout, used: Uint32Array): boolean {
  for (let i = 0; i < layout.words; i++) {
    if (((used[i] as number) & (layout.reserved[i] as number)) !== 0) return true;
  }
  return false;
}

function steUsedFields(fields: Record<string, number>): string[] {
  const used = new Uint32Array(ENTRY_WORDS);
  steUsed(encode(STE, fields), used);
  expect(usesReserved(STE, used)).toBe(false);
  return usedFields(STE, used);
}

const S1_FIELDS = [
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
];
const S2_FIELDS = [
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
];
const sorted = (...lists: string[][]) => [...new Set(lists.flat())].sort();

/** The KUnit suite's SMMU: stalls and attribute-type overrides, no E2H. */
const KFEAT: SmmuEntryFeatures = { stalls: true, attrTypesOvr: true, e2h: false };
const MAIR: [number, number] = [0x12345678, 0x0abcdef0];

function entry(fill: (w: Uint32Array) => void): Uint32Array {
  const w = new Uint32Array(ENTRY_WORDS);
  fill(w);
  return w;
}

const abortSte = entry(makeAbortSte);
const bypassSte = entry((w) => makeBypassSte(w, KFEAT));

function cdtable(s1dss: number, o: Partial<CdtableSteParams> = {}): Uint32Array {
  return entry((w) =>
    makeCdtableSte(
      w,
      {
        cdTablePa: 0xf0f0_f0f0_f0c0,
        s1fmt: 2,
        s1cdmax: 20,
        s1dss,
        ats: true,
        stallEnabled: false,
        ...o,
      },
      KFEAT,
    ),
  );
}

// The KUnit stage 2 domain: VMID 0 (its domain struct is zeroed) and these VTCR fields.
const KS2: S2DomainSteParams = {
  vmid: 0,
  vttbr: 0xbeef_dead_b000,
  t0sz: 4,
  sl0: 3,
  irgn: 2,
  orgn: 1,
  sh: 3,
  tg: 2,
  ps: 1,
  ats: true,
  stallEnabled: false,
};

function s2(o: Partial<S2DomainSteParams> = {}): Uint32Array {
  return entry((w) => makeS2DomainSte(w, { ...KS2, ...o }, KFEAT));
}

/** KUnit's nested STE: a CD-table vSTE with S1DSS bypass over the stage 2 domain, ATS on. */
function nestedS1dssBypass(): Uint32Array {
  const vste = encode(STE, {
    V: 1,
    Config: STE_CFG_S1_TRANS,
    S1Fmt: 2,
    S1ContextPtr: 0xf0f0_f0f0_f0c0,
    S1CDMax: 20,
    S1DSS: S1DSS_BYPASS,
    S1CIR: 1,
    S1COR: 1,
    S1CSH: 3,
    S1STALLD: 1,
  }).subarray(0, 4);
  return entry((w) => makeNestedSte(w, { vste, s2: KS2 }, KFEAT));
}

function s1Cd(asid: number): Uint32Array {
  return entry((w) =>
    makeS1Cd(w, {
      asid,
      ttb0: 0xdead_beef_e000,
      t0sz: 4,
      tg0: 2,
      irgn0: 2,
      orgn0: 1,
      sh0: 3,
      ips: 1,
      mair: MAIR,
      stallEnabled: false,
    }),
  );
}

function svaCd(asid: number, released: boolean): Uint32Array {
  return entry((w) =>
    makeSvaCd(
      w,
      {
        asid,
        ips: 5,
        mair: MAIR,
        stallEnabled: false,
        mm: released ? null : { pgd: 0xdead_beef_f000, vaBits: 48, pageShift: 12 },
      },
      KFEAT,
    ),
  );
}

const cd0 = entry(clearCd);
const PA = 0x10_0040;

/** Memory holding `cur` at PA, and ops whose sync records the entry as it then stands. */
function harness(cur: Uint32Array, kind: "ste" | "cd", mem = new PhysMemory({ paBits: 48 })) {
  mem.onWrite = null;
  for (let q = 0; q < 8; q++)
    mem.write64(PA + 8 * q, cur[2 * q] as number, cur[2 * q + 1] as number);
  const snapshots: Uint32Array[] = [];
  const stores: number[] = [];
  mem.onWrite = (pa) => stores.push((pa - PA) / 8);
  const ops: EntryWriterOps = {
    ...(kind === "ste" ? STE_USED_OPS : CD_USED_OPS),
    sync: () => snapshots.push(read()),
  };
  function read(): Uint32Array {
    const w = new Uint32Array(ENTRY_WORDS);
    for (let i = 0; i < ENTRY_WORDS; i++) w[i] = mem.read32(PA + 4 * i);
    return w;
  }
  return { mem, ops, snapshots, stores, read };
}

/**
 * The KUnit check of one intermediate entry: in the bits the entry's own configuration reads
 * (less the update-safe bits), it equals the initial or the target entry.
 */
function equivalentToEither(
  kind: "ste" | "cd",
  e: Uint32Array,
  init: Uint32Array,
  target: Uint32Array,
): boolean {
  const used = new Uint32Array(ENTRY_WORDS);
  (kind === "ste" ? steUsed : cdUsed)(e, used);
  const same = (ref: Uint32Array) => {
    const safe = new Uint32Array(ENTRY_WORDS);
    if (kind === "ste") steUpdateSafe(e, ref, safe);
    for (let i = 0; i < ENTRY_WORDS; i++) {
      const u = (used[i] as number) & ~(safe[i] as number);
      if ((((e[i] as number) ^ (ref[i] as number)) & u) !== 0) return false;
    }
    return true;
  };
  return same(init) || same(target);
}

const qword0Zero = (e: Uint32Array) => e[0] === 0 && e[1] === 0;

// ----- Used bits -----------------------------------------------------------------------------------

describe("steUsed (arm_smmu_get_ste_used)", () => {
  it("reads only V of an STE with V = 0, whatever else it holds", () => {
    expect(steUsedFields({ V: 0, Config: STE_CFG_S2_TRANS, S1DSS: 1, S2VMID: 5 })).toEqual(["V"]);
  });

  it("reads V and Config of an abort STE", () => {
    expect(steUsedFields({ V: 1, Config: STE_CFG_ABORT })).toEqual(["Config", "V"]);
  });

  it("reads SHCFG of a bypass STE", () => {
    expect(steUsedFields({ V: 1, Config: STE_CFG_BYPASS })).toEqual(["Config", "SHCFG", "V"]);
  });

  it("reads the stage 1 fields of a stage 1 STE, without SHCFG unless S1DSS = bypass", () => {
    for (const dss of [S1DSS_TERMINATE, S1DSS_SSID0]) {
      expect(steUsedFields({ V: 1, Config: STE_CFG_S1_TRANS, S1DSS: dss })).toEqual(
        sorted(["V", "Config"], S1_FIELDS),
      );
    }
  });

  it("adds SHCFG to a stage 1 STE whose S1DSS lets substream-less traffic bypass", () => {
    expect(steUsedFields({ V: 1, Config: STE_CFG_S1_TRANS, S1DSS: S1DSS_BYPASS })).toEqual(
      sorted(["V", "Config", "SHCFG"], S1_FIELDS),
    );
  });

  it("reads the stage 2 fields of a stage 2 STE, including S2AFFD/S2HA/S2HD the SMMU reads", () => {
    expect(steUsedFields({ V: 1, Config: STE_CFG_S2_TRANS })).toEqual(
      sorted(["V", "Config"], S2_FIELDS),
    );
  });

  it("reads both stages of a nested STE", () => {
    expect(steUsedFields({ V: 1, Config: STE_CFG_NESTED, S1DSS: S1DSS_SSID0 })).toEqual(
      sorted(["V", "Config"], S1_FIELDS, S2_FIELDS),
    );
  });

  it("tests Config[0] and Config[1] as the kernel does, even for the reserved abort encodings", () => {
    expect(steUsedFields({ V: 1, Config: 1 })).toEqual(sorted(["V", "Config"], S1_FIELDS));
    expect(steUsedFields({ V: 1, Config: 2 })).toEqual(sorted(["V", "Config"], S2_FIELDS));
  });

  it("overwrites all 16 words of its output", () => {
    const used = new Uint32Array(ENTRY_WORDS).fill(0xffffffff);
    steUsed(abortSte, used);
    expect(Array.from(used.subarray(1))).toEqual(new Array(15).fill(0));
  });
});

describe("cdUsed (arm_smmu_get_cd_used)", () => {
  it("reads only V of a CD with V = 0", () => {
    const used = new Uint32Array(ENTRY_WORDS);
    cdUsed(encode(CD, { V: 0, T0SZ: 16, ASID: 3, TTB0: 0x1000 }), used);
    expect(usedFields(CD, used)).toEqual(["V"]);
    expect(usesReserved(CD, used)).toBe(false);
  });

  it("reads every bit of a valid CD", () => {
    const used = new Uint32Array(ENTRY_WORDS);
    cdUsed(s1Cd(1), used);
    expect(Array.from(used)).toEqual(new Array(16).fill(0xffffffff));
  });

  it("ignores T0SZ, TG0, IR0, OR0, SH0 and TTB0 when EPD0 disables TTB0 walks", () => {
    const used = new Uint32Array(ENTRY_WORDS);
    cdUsed(svaCd(1, true), used);
    const all = CD.fields.map((f) => f.name);
    const walk = ["T0SZ", "TG0", "IR0", "OR0", "SH0", "TTB0"];
    expect(usedFields(CD, used)).toEqual(all.filter((n) => !walk.includes(n)).sort());
  });
});

describe("steUpdateSafe (arm_smmu_get_ste_update_safe)", () => {
  const safeFields = (cur: Uint32Array, target: Uint32Array) => {
    const safe = new Uint32Array(ENTRY_WORDS).fill(0xffffffff);
    steUpdateSafe(cur, target, safe);
    const names: string[] = [];
    if ((safe[2] as number) & (1 << 19)) names.push("MEV");
    if ((safe[2] as number) & (1 << 28)) names.push("EATS[0]");
    expect((safe[2] as number) & ~((1 << 19) | (1 << 28))).toBe(0);
    expect(Array.from(safe).filter((w, i) => i !== 2 && w !== 0)).toEqual([]);
    return names;
  };

  it("always lets MEV change, and full-ATS EATS between entries without S2S or split ATS", () => {
    expect(safeFields(cdtable(S1DSS_SSID0), s2())).toEqual(["MEV", "EATS[0]"]);
  });

  it("keeps EATS ordered when either entry has a stalling stage 2 (S2S with EATS is ILLEGAL)", () => {
    expect(safeFields(s2({ ats: false, stallEnabled: true }), s2())).toEqual(["MEV"]);
    expect(safeFields(s2(), s2({ ats: false, stallEnabled: true }))).toEqual(["MEV"]);
  });

  it("keeps EATS ordered when either entry uses split-stage ATS (EATS = 0b10)", () => {
    const split = encode(STE, { V: 1, Config: STE_CFG_NESTED, EATS: 2 });
    expect(safeFields(split, s2())).toEqual(["MEV"]);
    expect(safeFields(s2(), split)).toEqual(["MEV"]);
  });
});

// ----- Qword diff ----------------------------------------------------------------------------------

describe("entryQwordDiff (arm_smmu_entry_qword_diff)", () => {
  const upd = new Uint32Array(ENTRY_WORDS);

  it("finds no used change between equal entries", () => {
    expect(entryQwordDiff(STE_USED_OPS, s2(), s2(), upd)).toBe(0);
    expect(Array.from(upd)).toEqual(Array.from(s2()));
  });

  it("puts the bits the current entry ignores at their target value", () => {
    // Abort reads only qword 0's V and Config: qword 1 of the bypass target can go in early,
    // Config stays abort.
    expect(entryQwordDiff(STE_USED_OPS, abortSte, bypassSte, upd)).toBe(0b1);
    const expected = Uint32Array.from(bypassSte);
    expected[0] = abortSte[0] as number;
    expect(Array.from(upd)).toEqual(Array.from(expected));
  });

  it("keeps the bits the current entry reads", () => {
    // A S1DSS change from SSID0 to bypass: qword 1 is the one critical qword; SHCFG, unused by
    // the SSID0 entry, already takes its target value.
    const from = cdtable(S1DSS_SSID0);
    const to = cdtable(S1DSS_BYPASS);
    expect(entryQwordDiff(STE_USED_OPS, from, to, upd)).toBe(0b10);
    expect(upd[2]).toBe(from[2]);
    expect(upd[3]).toBe(((from[3] as number) | (1 << 12)) >>> 0); // SHCFG = incoming (bit 108)
  });

  it("reports every qword whose used bits change", () => {
    const to = cdtable(S1DSS_BYPASS, { cdTablePa: 0x4b_4b4b_4b40 });
    expect(entryQwordDiff(STE_USED_OPS, cdtable(S1DSS_SSID0), to, upd)).toBe(0b11);
  });

  it("lets update-safe bits change with no critical qword (ATS on a live STE)", () => {
    expect(entryQwordDiff(STE_USED_OPS, s2({ ats: false }), s2(), upd)).toBe(0);
    expect(Array.from(upd)).toEqual(Array.from(s2()));
  });

  it("refuses a target that sets bits its own configuration does not read", () => {
    const bad = Uint32Array.from(abortSte);
    bad[2] = 1; // S1DSS on an abort STE
    expect(() => entryQwordDiff(STE_USED_OPS, abortSte, bad, upd)).toThrow(/does not use/);
  });
});

// ----- writeEntry ----------------------------------------------------------------------------------

describe("writeEntry (arm_smmu_write_entry)", () => {
  it("hitless: ignored bits, then the critical qword, then clean-up, each with a sync", () => {
    const h = harness(bypassSte, "ste");
    const target = cdtable(S1DSS_SSID0);
    expect(writeEntry(h.ops, h.mem, PA, target)).toBe(3);
    // 1: qword 1 (S1DSS etc., SHCFG kept) and qword 2 while still bypass; 2: qword 0; 3: SHCFG off.
    expect(h.stores).toEqual([1, 0, 1]);
    expect(h.snapshots[0]?.[0]).toBe(bypassSte[0]);
    expect(h.snapshots[1]?.[0]).toBe(target[0]);
    expect(Array.from(h.snapshots[2] ?? [])).toEqual(Array.from(target));
    for (const s of h.snapshots) expect(equivalentToEither("ste", s, bypassSte, target)).toBe(true);
  });

  it("breaking: V = 0 first, then qwords 1-7, then qword 0 with V = 1", () => {
    const from = cdtable(S1DSS_SSID0);
    const to = cdtable(S1DSS_BYPASS, { cdTablePa: 0x4b_4b4b_4b40 });
    const h = harness(from, "ste");
    expect(writeEntry(h.ops, h.mem, PA, to)).toBe(3);
    expect(h.stores).toEqual([0, 1, 0]);
    expect(qword0Zero(h.snapshots[0] as Uint32Array)).toBe(true);
    expect(qword0Zero(h.snapshots[1] as Uint32Array)).toBe(true);
    expect(Array.from(h.read())).toEqual(Array.from(to));
  });

  it("no used change: stores what differs with one sync, or nothing and no sync", () => {
    const h = harness(s2({ ats: false }), "ste");
    expect(writeEntry(h.ops, h.mem, PA, s2())).toBe(1);
    expect(h.stores).toEqual([1]);
    expect(writeEntry(h.ops, h.mem, PA, s2())).toBe(0);
    expect(h.stores).toEqual([1]);
    expect(h.snapshots).toHaveLength(1);
  });

  it("stores only the qwords that change", () => {
    const h = harness(s1Cd(778), "cd");
    expect(writeEntry(h.ops, h.mem, PA, s1Cd(1997))).toBe(1);
    expect(h.stores).toEqual([0]);
  });

  it("torn: stores every differing qword in index order, then one sync", () => {
    const h = harness(abortSte, "ste");
    const target = s2();
    expect(writeEntry(h.ops, h.mem, PA, target, { torn: true })).toBe(1);
    expect(h.stores).toEqual([0, 1, 2, 3]);
    expect(h.snapshots).toHaveLength(1);
    expect(Array.from(h.read())).toEqual(Array.from(target));
    expect(writeEntry(h.ops, h.mem, PA, target, { torn: true })).toBe(0);
  });

  it("torn on a breaking change leaves the entry mixed between stores", () => {
    const from = cdtable(S1DSS_SSID0);
    const to = cdtable(S1DSS_BYPASS, { cdTablePa: 0x4b_4b4b_4b40 });
    const h = harness(from, "ste");
    let mixed = false;
    h.mem.onWrite = () => {
      if (!equivalentToEither("ste", h.read(), from, to)) mixed = true;
    };
    writeEntry(h.ops, h.mem, PA, to, { torn: true });
    expect(mixed).toBe(true);
  });

  it("rejects a misaligned entry or a target of the wrong size (model bugs)", () => {
    const h = harness(abortSte, "ste");
    expect(() => writeEntry(h.ops, h.mem, PA + 8, abortSte)).toThrow(/aligned/);
    expect(() => writeEntry(h.ops, h.mem, PA, new Uint32Array(8))).toThrow(/words/);
  });

  it("gives a writeEntry reached from a sync its own scratch", () => {
    const h = harness(bypassSte, "ste");
    const other = harness(abortSte, "ste");
    let inner = -1;
    const ops: EntryWriterOps = {
      ...STE_USED_OPS,
      sync: () => {
        if (inner < 0) inner = writeEntry(other.ops, other.mem, PA, s2());
      },
    };
    const target = cdtable(S1DSS_SSID0);
    expect(writeEntry(ops, h.mem, PA, target)).toBe(3);
    expect(inner).toBe(2);
    expect(Array.from(h.read())).toEqual(Array.from(target));
    expect(Array.from(other.read())).toEqual(Array.from(s2()));
  });
});

// ----- The KUnit transitions, software side --------------------------------------------------------

/** arm-smmu-v3-test.c: [name, kind, from, to, syncs, hitless]. */
const KUNIT: [string, "ste" | "cd", () => Uint32Array, () => Uint32Array, number, boolean][] = [
  ["bypass_to_abort", "ste", () => bypassSte, () => abortSte, 2, true],
  ["abort_to_bypass", "ste", () => abortSte, () => bypassSte, 2, true],
  ["cdtable_to_abort", "ste", () => cdtable(S1DSS_SSID0), () => abortSte, 2, true],
  ["abort_to_cdtable", "ste", () => abortSte, () => cdtable(S1DSS_SSID0), 2, true],
  ["cdtable_to_bypass", "ste", () => cdtable(S1DSS_SSID0), () => bypassSte, 3, true],
  ["bypass_to_cdtable", "ste", () => bypassSte, () => cdtable(S1DSS_SSID0), 3, true],
  ["cdtable_s1dss_change", "ste", () => cdtable(S1DSS_SSID0), () => cdtable(S1DSS_BYPASS), 1, true],
  [
    "cdtable_s1dss_change back",
    "ste",
    () => cdtable(S1DSS_BYPASS),
    () => cdtable(S1DSS_SSID0),
    1,
    true,
  ],
  ["s1dssbypass_to_stebypass", "ste", () => cdtable(S1DSS_BYPASS), () => bypassSte, 2, true],
  ["stebypass_to_s1dssbypass", "ste", () => bypassSte, () => cdtable(S1DSS_BYPASS), 2, true],
  ["s2_to_abort", "ste", () => s2(), () => abortSte, 2, true],
  ["abort_to_s2", "ste", () => abortSte, () => s2(), 2, true],
  ["s2_to_bypass", "ste", () => s2(), () => bypassSte, 2, true],
  ["bypass_to_s2", "ste", () => bypassSte, () => s2(), 2, true],
  ["s1_to_s2", "ste", () => cdtable(S1DSS_SSID0), () => s2(), 3, true],
  ["s2_to_s1", "ste", () => s2(), () => cdtable(S1DSS_SSID0), 3, true],
  [
    "non_hitless",
    "ste",
    () => cdtable(S1DSS_SSID0),
    () => cdtable(S1DSS_BYPASS, { cdTablePa: 0x4b_4b4b_4b40 }),
    3,
    false,
  ],
  ["cd s1_clear (0 to S1)", "cd", () => cd0, () => s1Cd(1997), 2, false],
  ["cd s1_clear (S1 to 0)", "cd", () => s1Cd(1997), () => cd0, 2, false],
  ["cd s1_change_asid", "cd", () => s1Cd(778), () => s1Cd(1997), 1, true],
  ["cd s1_change_asid back", "cd", () => s1Cd(1997), () => s1Cd(778), 1, true],
  [
    "s1_to_s2_stall",
    "ste",
    () => cdtable(S1DSS_SSID0, { ats: false, stallEnabled: true }),
    () => s2({ ats: false, stallEnabled: true }),
    3,
    true,
  ],
  [
    "s2_to_s1_stall",
    "ste",
    () => s2({ ats: false, stallEnabled: true }),
    () => cdtable(S1DSS_SSID0, { ats: false, stallEnabled: true }),
    3,
    true,
  ],
  ["nested_s1dssbypass_to_s1bypass", "ste", nestedS1dssBypass, () => s2({ ats: false }), 3, true],
  ["nested_s1bypass_to_s1dssbypass", "ste", () => s2({ ats: false }), nestedS1dssBypass, 2, true],
  ["cd sva_clear (0 to SVA)", "cd", () => cd0, () => svaCd(1997, false), 2, false],
  ["cd sva_clear (SVA to 0)", "cd", () => svaCd(1997, false), () => cd0, 2, false],
  [
    "cd sva_release (SVA to released)",
    "cd",
    () => svaCd(1997, false),
    () => svaCd(1997, true),
    2,
    true,
  ],
  [
    "cd sva_release (released to SVA)",
    "cd",
    () => svaCd(1997, true),
    () => svaCd(1997, false),
    2,
    true,
  ],
];

describe("the KUnit transitions (arm-smmu-v3-test.c), software side", () => {
  it.each(KUNIT)(
    "%s: syncs and hitlessness as the kernel's KUnit test",
    (_n, kind, from, to, syncs, hitless) => {
      const init = from();
      const target = to();
      const h = harness(init, kind);
      expect(writeEntry(h.ops, h.mem, PA, target)).toBe(syncs);
      expect(h.snapshots).toHaveLength(syncs);
      // KUnit calls a transition non-hitless when some sync finds qword 0 all zero (V = 0).
      expect(h.snapshots.some(qword0Zero)).toBe(!hitless);
      for (const s of h.snapshots) {
        if (!qword0Zero(s)) expect(equivalentToEither(kind, s, init, target)).toBe(true);
      }
      expect(Array.from(h.read())).toEqual(Array.from(target));
    },
  );
});

// ----- Property: any pair of entries Linux builds --------------------------------------------------

const arbFeat: fc.Arbitrary<SmmuEntryFeatures> = fc.record({
  stalls: fc.boolean(),
  stallForce: fc.boolean(),
  attrTypesOvr: fc.boolean(),
  e2h: fc.boolean(),
  s2fwb: fc.boolean(),
  ha: fc.boolean(),
  hd: fc.boolean(),
  haft: fc.boolean(),
});
const arbPa = (align: number) => fc.integer({ min: 0, max: 2 ** 20 }).map((n) => n * align);
const arbCdtable = fc.record({
  cdTablePa: arbPa(4096),
  s1fmt: fc.constantFrom(0, 2),
  s1cdmax: fc.integer({ min: 0, max: 20 }),
  s1dss: fc.constantFrom(S1DSS_TERMINATE, S1DSS_BYPASS, S1DSS_SSID0),
  ats: fc.boolean(),
  stallEnabled: fc.boolean(),
});
const arbS2: fc.Arbitrary<S2DomainSteParams> = fc.record({
  vmid: fc.constantFrom(0, 1, 2, 0xffff),
  vttbr: arbPa(4096),
  t0sz: fc.integer({ min: 16, max: 39 }),
  sl0: fc.integer({ min: 0, max: 2 }),
  irgn: fc.integer({ min: 0, max: 3 }),
  orgn: fc.integer({ min: 0, max: 3 }),
  sh: fc.constantFrom(0, 2, 3),
  tg: fc.integer({ min: 0, max: 2 }),
  ps: fc.integer({ min: 0, max: 5 }),
  ats: fc.boolean(),
  stallEnabled: fc.boolean(),
  nestParent: fc.boolean(),
});
type SteSpec =
  | { t: "abort" }
  | { t: "bypass" }
  | { t: "cdtable"; p: CdtableSteParams }
  | { t: "s2"; p: S2DomainSteParams }
  | { t: "nested"; v: CdtableSteParams; cfg: number; s2: S2DomainSteParams };
const arbSte: fc.Arbitrary<SteSpec> = fc.oneof(
  fc.constant({ t: "abort" as const }),
  fc.constant({ t: "bypass" as const }),
  arbCdtable.map((p) => ({ t: "cdtable" as const, p })),
  arbS2.map((p) => ({ t: "s2" as const, p })),
  fc
    .tuple(arbCdtable, fc.constantFrom(0, STE_CFG_BYPASS, STE_CFG_S1_TRANS), arbS2)
    .map(([v, cfg, s2p]) => ({ t: "nested" as const, v, cfg, s2: s2p })),
);
function buildSte(s: SteSpec, feat: SmmuEntryFeatures): Uint32Array {
  return entry((w) => {
    switch (s.t) {
      case "abort":
        return makeAbortSte(w);
      case "bypass":
        return makeBypassSte(w, feat);
      case "cdtable":
        return makeCdtableSte(w, s.p, feat);
      case "s2":
        // S2S with full ATS is ILLEGAL; Linux never pairs a stalling master with ATS.
        return makeS2DomainSte(w, { ...s.p, ats: s.p.ats && !s.p.stallEnabled }, feat);
      case "nested": {
        const vste = encode(STE, {
          V: 1,
          Config: s.cfg,
          S1Fmt: s.v.s1fmt,
          S1ContextPtr: s.v.cdTablePa,
          S1CDMax: s.v.s1cdmax,
          S1DSS: s.v.s1dss,
          S1CIR: 1,
          S1COR: 1,
          S1CSH: 3,
          S1STALLD: s.v.stallEnabled ? 0 : 1,
        }).subarray(0, 4);
        const p = { ...s.s2, ats: s.s2.ats && !s.s2.stallEnabled };
        return makeNestedSte(w, { vste, s2: p }, feat);
      }
    }
  });
}
type CdSpec =
  | { t: "clear" }
  | { t: "s1"; asid: number; ttb0: number; hd: boolean; stall: boolean }
  | {
      t: "sva";
      asid: number;
      pgd: number;
      released: boolean;
      pageShift: number;
      stall: boolean;
    };
const arbCd: fc.Arbitrary<CdSpec> = fc.oneof(
  fc.constant({ t: "clear" as const }),
  fc.record({
    t: fc.constant("s1" as const),
    asid: fc.integer({ min: 1, max: 0xffff }),
    ttb0: arbPa(4096),
    hd: fc.boolean(),
    stall: fc.boolean(),
  }),
  fc.record({
    t: fc.constant("sva" as const),
    asid: fc.integer({ min: 1, max: 0xffff }),
    pgd: arbPa(4096),
    released: fc.boolean(),
    pageShift: fc.constantFrom(12, 14, 16),
    stall: fc.boolean(),
  }),
);
function buildCd(s: CdSpec, feat: SmmuEntryFeatures): Uint32Array {
  return entry((w) => {
    if (s.t === "clear") return clearCd(w);
    if (s.t === "s1") {
      return makeS1Cd(w, {
        asid: s.asid,
        ttb0: s.ttb0,
        t0sz: 16,
        tg0: 0,
        irgn0: 1,
        orgn0: 1,
        sh0: 3,
        ips: 5,
        mair: MAIR,
        stallEnabled: s.stall,
        hd: s.hd,
      });
    }
    return makeSvaCd(
      w,
      {
        asid: s.asid,
        ips: 5,
        mair: MAIR,
        stallEnabled: s.stall,
        mm: s.released ? null : { pgd: s.pgd, vaBits: 48, pageShift: s.pageShift },
      },
      feat,
    );
  });
}

/** Write `to` over `from`, checking the entry after every 64-bit store. */
/** One memory for all property runs (a fresh PhysMemory per run costs more than the write). */
const PROP_MEM = new PhysMemory({ paBits: 48 });

function checkHitless(kind: "ste" | "cd", from: Uint32Array, to: Uint32Array): void {
  const h = harness(from, kind, PROP_MEM);
  const upd = new Uint32Array(ENTRY_WORDS);
  const diff = entryQwordDiff(kind === "ste" ? STE_USED_OPS : CD_USED_OPS, from, to, upd);
  const breaking = (diff & (diff - 1)) !== 0;
  let sawInvalid = false;
  h.mem.onWrite = () => {
    const e = h.read();
    if (equivalentToEither(kind, e, from, to)) return;
    // Only a breaking update may show the SMMU anything else, and only an invalid entry.
    expect(breaking).toBe(true);
    expect(qword0Zero(e)).toBe(true);
    sawInvalid = true;
  };
  const syncs = writeEntry(h.ops, h.mem, PA, to);
  expect(syncs).toBeLessThanOrEqual(3);
  expect(Array.from(h.read())).toEqual(Array.from(to));
  if (breaking) expect(sawInvalid).toBe(true);
}

describe("writeEntry on any pair of entries Linux builds", () => {
  test.prop([arbFeat, arbSte, arbSte], { seed: 0x57e, numRuns: 400 })(
    "memory ends at the target STE and every store leaves an entry equal to the old or the new in its used bits (or invalid, when breaking)",
    (feat, a, b) => {
      checkHitless("ste", buildSte(a, feat), buildSte(b, feat));
    },
  );

  test.prop([arbFeat, arbCd, arbCd], { seed: 0xcd, numRuns: 300 })(
    "the same holds for every pair of CDs",
    (feat, a, b) => {
      checkHitless("cd", buildCd(a, feat), buildCd(b, feat));
    },
  );
});
