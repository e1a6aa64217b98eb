// Tests of what the VT-d and SMMUv3 decoders share (decode-common.ts), rule by rule.

import { fc, test } from "@fast-check/vitest";
import { ROOT_ENTRY } from "@iommu-sim/intel-vtd/format";
import {
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  NO_PASID,
  newTranslationResult,
  type TranslationRequest,
  type TranslationResult,
} from "@iommu-sim/iommu-core";
import { ModelBug, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import {
  addTableUser,
  Coalescer,
  count,
  type DecodeProblemBase,
  decodedEntry,
  decodeLimit,
  formatBits,
  formatEntry,
  formatSize,
  formatSummary,
  formatTableNotes,
  formatUsers,
  layoutsByName,
  MAX_TABLE_PROBLEMS,
  mappingRange,
  parseBdf,
  parseBounded,
  parseIdQuery,
  parseUnsigned,
  perQuery,
  pollUntil,
  pushMappingLines,
  pushProblemLines,
  QueryRunner,
  TableDecoder,
  type TableRefBase,
  translationGrant,
} from "./decode-common.js";

describe("limits and bit lists", () => {
  it("a limit option is floored; unset, negative or NaN takes the default", () => {
    expect(decodeLimit(undefined, 7)).toBe(7);
    expect(decodeLimit(-1, 7)).toBe(7);
    expect(decodeLimit(Number.NaN, 7)).toBe(7);
    expect(decodeLimit(0, 7)).toBe(0);
    expect(decodeLimit(3.9, 7)).toBe(3);
  });

  it("reserved bits are listed as ranges, the ones after eight ranges counted", () => {
    expect(formatBits([])).toBe("");
    expect(formatBits([5])).toBe("5");
    expect(formatBits([65, 66, 67, 75, 128])).toBe("65-67,75,128");
    const odd = Array.from({ length: 20 }, (_, i) => 2 * i + 1);
    expect(formatBits(odd)).toBe("1,3,5,7,9,11,13,15 and 12 more");
  });
});

/** The obvious reference: merge each leaf into the last run when it continues it. */
function referenceRuns(leaves: readonly [number, number, number, number][]): number[][] {
  const runs: number[][] = [];
  for (const [vpn, pfn, pages, flags] of leaves) {
    const last = runs[runs.length - 1];
    if (
      last !== undefined &&
      vpn === (last[0] as number) + (last[2] as number) &&
      pfn === (last[1] as number) + (last[2] as number) &&
      flags === last[3]
    ) {
      last[2] = (last[2] as number) + pages;
    } else runs.push([vpn, pfn, pages, flags]);
  }
  return runs;
}

describe("Coalescer", () => {
  it("merges leaves that continue a run in input, output and flags, and no others", () => {
    const c = new Coalescer(10);
    expect(c.add(0, 100, 1, 3)).toBe(true);
    expect(c.add(1, 101, 512, 3)).toBe(true);
    expect(c.add(513, 613, 1, 1)).toBe(true); // other flags
    expect(c.add(514, 700, 1, 1)).toBe(true); // other output
    expect(c.count).toBe(3);
    c.flush();
    expect(c.runs).toEqual([0, 100, 513, 3, 513, 613, 1, 1, 514, 700, 1, 1]);
  });

  it("refuses a leaf that would start a run beyond the limit, and keeps extending the last", () => {
    const c = new Coalescer(1);
    expect(c.add(0, 0, 1, 0)).toBe(true);
    expect(c.add(5, 5, 1, 0)).toBe(false);
    expect(c.add(1, 1, 1, 0)).toBe(true);
    c.flush();
    expect(c.runs).toEqual([0, 0, 2, 0]);
    expect(new Coalescer(0).add(0, 0, 1, 0)).toBe(false);
  });

  test.prop(
    [
      fc.array(
        fc.tuple(fc.integer({ min: 0, max: 3 }), fc.boolean(), fc.integer({ min: 1, max: 3 })),
        { maxLength: 60 },
      ),
    ],
    { seed: 0x0c0a_1e5c, numRuns: 200 },
  )("runs equal the obvious merge of the leaves, in walk order", (steps) => {
    // Leaves in ascending input order: each skips 0-3 pages and maybe jumps in output.
    const leaves: [number, number, number, number][] = [];
    let vpn = 0;
    let pfn = 1000;
    for (const [gap, jump, flags] of steps) {
      vpn += gap;
      pfn += gap + (jump ? 7 : 0);
      leaves.push([vpn, pfn, 1, flags]);
      vpn++;
      pfn++;
    }
    const c = new Coalescer(Number.MAX_SAFE_INTEGER);
    for (const [v, p, n, f] of leaves) expect(c.add(v, p, n, f)).toBe(true);
    c.flush();
    expect(c.runs).toEqual(referenceRuns(leaves).flat());
  });
});

describe("entries", () => {
  const words = [0x2001, 0x1, 0x0, 0x0];

  it("an entry lists its qwords in hex, its fields by spec name, addresses in hex", () => {
    const e = decodedEntry(ROOT_ENTRY, 0x1000, words);
    expect(e.layout).toBe(ROOT_ENTRY.name);
    expect(e.address).toBe("0x1000");
    expect(e.raw).toEqual(["0x0000000100002001", "0x0000000000000000"]);
    expect(e.fields.P).toBe(1);
    expect(e.fields.CTP).toBe("0x100002000");
    expect("ipa" in e).toBe(false);
  });

  it("with an IPA the entry says it, right after its address", () => {
    const e = decodedEntry(ROOT_ENTRY, 0x1000, words, 0x8000);
    expect(Object.keys(e)).toEqual(["layout", "address", "ipa", "raw", "fields"]);
    expect(e.ipa).toBe("0x8000");
  });

  it("an entry prints by its field table, or as raw words when the table is unknown", () => {
    const layouts = layoutsByName([ROOT_ENTRY]);
    const e = decodedEntry(ROOT_ENTRY, 0x1000, words);
    expect(formatEntry(e, layouts)).toContain("CTP");
    expect(formatEntry({ ...e, layout: "nonesuch" }, layouts)).toBe(e.raw.join(" "));
  });
});

/** A toy decoder: tables read by root and one number, problems with an optional code. */
interface ToyRef extends TableRefBase {
  readonly n: number;
}
interface ToyProblem extends DecodeProblemBase {
  readonly code?: number;
}
class ToyDecoder extends TableDecoder<ToyRef, number[], ToyProblem> {
  key(root: number, n: number): string {
    return this.tableKey({ root, n });
  }
  protected override codeOf(code: number): { code: number } {
    return { code };
  }
  protected override readingOf(ref: Omit<ToyRef, "key">): string {
    return `${ref.root}/${ref.n}`;
  }
  protected override tableName(ref: ToyRef): string {
    return `table ${ref.key}`;
  }
  /** Each table: `n` pages read, each a leaf of one page, and every page a problem. */
  protected override enumerate(ref: ToyRef): number[] {
    const walk = this.startWalk(ref);
    for (let i = 0; i < ref.n; i++) {
      if (!this.mayRead(walk, ref.root + i * 4096)) break;
      this.chargePage(walk);
      this.tableProblem(walk, ref.root + i * 8, 1, `entry ${i}`, i);
      if (!this.leaf(walk, ref.root, i * 2, i * 2, 1, 0)) break;
    }
    return this.finishWalk(walk);
  }
}

describe("TableDecoder", () => {
  const mem = new PhysMemory();

  it("a root read two ways gets a key per reading, the second with a #2 suffix", () => {
    const d = new ToyDecoder(mem, 0, {}, { maxTablePages: 10, maxMappings: 10, maxProblems: 99 });
    expect(d.key(0x5000, 1)).toBe("0x5000");
    expect(d.key(0x5000, 2)).toBe("0x5000#2");
    expect(d.key(0x5000, 1)).toBe("0x5000");
    expect(d.key(0x6000, 2)).toBe("0x6000");
    expect(Object.keys(d.pageTables())).toEqual(["0x5000", "0x5000#2", "0x6000"]);
  });

  it("problems beyond maxProblems are counted in one last problem at the anchor", () => {
    const d = new ToyDecoder(mem, 0x1000, {}, { maxTablePages: 9, maxMappings: 9, maxProblems: 2 });
    d.problem(0x10, "a", "one", 5);
    d.problem(0x20, "b", "two");
    d.problem(0x30, "c", "three");
    d.problem(0x40, "d", "four");
    expect(d.truncated).toBe(false);
    d.finishProblems();
    expect(d.truncated).toBe(true);
    expect(d.problems).toEqual([
      { address: "0x10", structure: "a", message: "one", code: 5 },
      { address: "0x20", structure: "b", message: "two" },
      {
        address: "0x1000",
        structure: "decode",
        message: "2 more problems not listed (limit maxProblems 2)",
      },
    ]);
  });

  it("options override the default limits", () => {
    const d = new ToyDecoder(
      mem,
      0,
      { maxProblems: 1 },
      { maxTablePages: 9, maxMappings: 9, maxProblems: 5 },
    );
    d.problem(0, "a", "one");
    d.problem(0, "b", "two");
    d.finishProblems();
    expect(d.problems.map((p) => p.message)).toEqual([
      "one",
      "1 more problems not listed (limit maxProblems 1)",
    ]);
  });

  it("a table's problems beyond the per-table cap are counted after its walk", () => {
    const n = MAX_TABLE_PROBLEMS + 3;
    const d = new ToyDecoder(mem, 0, {}, { maxTablePages: 99, maxMappings: 99, maxProblems: 99 });
    d.key(0x4000, n);
    const runs = d.pageTables()["0x4000"];
    expect(runs).toHaveLength(4 * n);
    expect(d.problems).toHaveLength(MAX_TABLE_PROBLEMS + 1);
    expect(d.problems[0]).toEqual({
      address: "0x4000",
      structure: "table 0x4000, level 1 entry",
      message: "entry 0",
      code: 0,
    });
    expect(d.problems[MAX_TABLE_PROBLEMS]?.message).toBe(
      "3 more problems in this table not listed",
    );
    expect(d.truncated).toBe(false);
  });

  it("the table-page budget stops this and every later table, said once", () => {
    const d = new ToyDecoder(mem, 0, {}, { maxTablePages: 3, maxMappings: 99, maxProblems: 99 });
    d.key(0x4000, 2);
    d.key(0x8000, 2);
    d.key(0xc000, 2);
    const tables = d.pageTables();
    expect(tables["0x4000"]).toHaveLength(8);
    expect(tables["0x8000"]).toHaveLength(4);
    expect(tables["0xc000"]).toHaveLength(0);
    expect(d.truncated).toBe(true);
    const stops = d.problems.filter((p) => p.message.includes("limit maxTablePages"));
    expect(stops).toEqual([
      {
        address: "0x9000",
        structure: "table 0x8000",
        message:
          "enumeration stopped after 3 table pages in all (limit maxTablePages; looping or shared tables?): this and later page tables are incomplete",
      },
    ]);
  });

  it("the mapping budget is shared by all tables and stops enumeration, said once", () => {
    const d = new ToyDecoder(mem, 0, {}, { maxTablePages: 99, maxMappings: 3, maxProblems: 99 });
    d.key(0x4000, 2);
    d.key(0x8000, 2);
    const tables = d.pageTables();
    expect(tables["0x4000"]).toHaveLength(8);
    expect(tables["0x8000"]).toHaveLength(4);
    const stops = d.problems.filter((p) => p.message.includes("limit maxMappings"));
    expect(stops.map((p) => p.message)).toEqual([
      "stopped listing mappings after 3 (limit maxMappings): this and later page tables are incomplete",
    ]);
    expect(d.truncated).toBe(true);
  });
});

describe("the text form", () => {
  it("sizes take the largest binary unit that divides them", () => {
    expect(formatSize(4096)).toBe("4 KiB");
    expect(formatSize(2 ** 21)).toBe("2 MiB");
    expect(formatSize(3 * 2 ** 30)).toBe("3 GiB");
    expect(formatSize(2 ** 40)).toBe("1 TiB");
    expect(formatSize(4096 + 512)).toBe("4608 B");
    expect(formatSize(100)).toBe("100 B");
  });

  it("counts are singular for one", () => {
    expect(count(1, "page")).toBe("1 page");
    expect(count(0, "page")).toBe("0 pages");
    expect(count(2, "page")).toBe("2 pages");
  });

  it("the summary counts devices, translations, tables and mappings, then problems", () => {
    const empty = { devices: [], pageTables: {}, problems: [], truncated: false };
    expect(formatSummary(empty, "nothing")).toBe("nothing");
    const doc = {
      devices: [{ translations: [1, 2] }, { translations: [3] }],
      pageTables: { a: { mappings: [1] }, b: { mappings: [1, 2] } },
      problems: [1],
      truncated: true,
    };
    expect(formatSummary(doc, "nothing")).toBe(
      "2 devices, 3 translations, 2 page tables with 3 mappings; 1 problem (at the end); TRUNCATED: a limit cut the decode short (see the problems)",
    );
  });

  it("table users: no table adds nothing, a user repeated in a row is listed once", () => {
    const users = new Map<string, string[]>();
    addTableUser(users, null, "x");
    addTableUser(users, undefined, "x");
    addTableUser(users, "t", "a");
    addTableUser(users, "t", "a");
    addTableUser(users, "t", "b");
    addTableUser(users, "t", "a");
    expect([...users]).toEqual([["t", ["a", "b", "a"]]]);
  });

  it("at most four users are named, then how many more", () => {
    expect(formatUsers(undefined)).toBe("");
    expect(formatUsers([])).toBe("");
    expect(formatUsers(["a", "b"])).toBe(", used by a, b");
    expect(formatUsers(["a", "b", "c", "d", "e", "f"])).toBe(", used by a, b, c, d and 2 more");
  });

  it("table notes: the given ones, a limit's cut, and pages the image lacks", () => {
    expect(formatTableNotes({ truncated: false }, "table")).toBe("");
    expect(formatTableNotes({ truncated: true, notInImage: 1 }, "table page", ["x"])).toBe(
      " (x; TRUNCATED by a limit; 1 table page not in the image, read as zeros)",
    );
    expect(formatTableNotes({ truncated: false, notInImage: 2 }, "table")).toBe(
      " (2 tables not in the image, read as zeros)",
    );
  });

  it("a mapping's range is exact below and above 2^53", () => {
    expect(mappingRange("0x1000", 4096)).toBe("0x1000-0x1fff");
    expect(mappingRange("0xfffffffffffff000", 4096)).toBe("0xfffffffffffff000-0xffffffffffffffff");
  });

  it("mapping lines are aligned on the widest range, output and size", () => {
    const lines: string[] = [];
    const rows: [string, string, string, string][] = [
      ["0x0-0xfff", "0x1000", "4 KiB", "rw"],
      ["0x200000-0x3fffff", "0x40000000", "2 MiB", "r-"],
    ];
    pushMappingLines(lines, rows, (r) => r);
    expect(lines).toEqual([
      "  0x0-0xfff         -> 0x1000      4 KiB  rw",
      "  0x200000-0x3fffff -> 0x40000000  2 MiB  r-",
    ]);
  });

  it("problems are listed after a blank line with their tag, and nothing without problems", () => {
    const lines: string[] = [];
    pushProblemLines(lines, [], () => "!");
    expect(lines).toEqual([]);
    pushProblemLines(lines, [{ address: "0x10", structure: "s", message: "m" }], () => " [t]");
    expect(lines).toEqual(["", "problems (1):", "  0x10 s: m [t]"]);
  });
});

describe("query parsing", () => {
  it("unsigned numbers: decimal or 0x hex up to 2^64 - 1, nothing else", () => {
    expect(parseUnsigned("42")).toBe(42n);
    expect(parseUnsigned("0XfF")).toBe(255n);
    expect(parseUnsigned("18446744073709551615")).toBe(2n ** 64n - 1n);
    for (const bad of ["18446744073709551616", "", "-1", "0x", "1e3", " 1", "0b1"]) {
      expect(parseUnsigned(bad)).toBeNull();
    }
  });

  it("a bounded number names what was expected when out of range or not a number", () => {
    expect(parseBounded("0x10", 16n, "a thing up to 16")).toBe(16);
    expect(parseBounded("17", 16n, "a thing up to 16")).toBe('expected a thing up to 16, got "17"');
    expect(parseBounded("x", 16n, "a thing")).toBe('expected a thing, got "x"');
  });

  it("a BDF is a requester ID; a device above 0x1f is refused; other text is no BDF", () => {
    expect(parseBdf("00:1f.7")).toBe(0xff);
    expect(parseBdf("ab:00.1")).toBe(0xab01);
    expect(parseBdf("00:20.0")).toBe("device 0x20 in 00:20.0 is above 0x1f");
    expect(parseBdf("00:1f.8")).toBeNull();
    expect(parseBdf("0x10")).toBeNull();
  });

  const num = (t: string) => parseBounded(t, 0xffffn, "a SID");
  const sub = (t: string) => parseBounded(t, 0xfffffn, "a SUB");

  it("queries split SID, SUB and IOVA, a BDF's colon told apart by its dot", () => {
    expect(parseIdQuery("5@0x1000", "form", num, sub)).toEqual({ sid: 5, sub: null, iova: 4096n });
    expect(parseIdQuery("5:7@1", "form", num, sub)).toEqual({ sid: 5, sub: 7, iova: 1n });
    const bdf = (t: string) => parseBdf(t) ?? num(t);
    expect(parseIdQuery("00:02.0@1", "form", bdf, sub)).toEqual({ sid: 0x10, sub: null, iova: 1n });
    expect(parseIdQuery("00:02.0:3@1", "form", bdf, sub)).toEqual({ sid: 0x10, sub: 3, iova: 1n });
  });

  it("a query without one @, or with a bad part, says what is wrong", () => {
    expect(parseIdQuery("5", "form", num, sub)).toBe("form");
    expect(parseIdQuery("5@1@2", "form", num, sub)).toBe("form");
    expect(parseIdQuery("x@1", "form", num, sub)).toBe('expected a SID, got "x"');
    expect(parseIdQuery("1:x@1", "form", num, sub)).toBe('expected a SUB, got "x"');
    expect(parseIdQuery("1:@1", "form", num, sub)).toBe('expected a SUB, got ""');
    expect(parseIdQuery("1@-1", "form", num, sub)).toBe(
      'expected an IOVA: a number up to 2^64 - 1, decimal or 0x hex, got "-1"',
    );
  });
});

describe("translator pieces", () => {
  /** A hardware stand-in that records the request and grants a 2 MiB read-only page. */
  class Recorder {
    req: TranslationRequest | null = null;
    translateUncached(req: TranslationRequest, out: TranslationResult): void {
      this.req = { ...req };
      out.pa = 0x1234;
      out.sizeShift = 21;
      out.perm = DMA_READ;
    }
  }

  it("a query becomes one untranslated request, the IOVA split exactly above 2^53", () => {
    const hw = new Recorder();
    const run = new QueryRunner({ write: true, exec: true, priv: true });
    const out = run.run(hw, 0x10, 0x1_0010, 5, 0xffff_ffff_ffff_f123n);
    expect(hw.req).toMatchObject({
      rid: 0x10,
      sid: 0x1_0010,
      pasid: 5,
      iovaPfn: 0xf_ffff_ffff_ffff,
      offset: 0x123,
      access: DMA_WRITE | DMA_EXEC,
      privileged: true,
      at: 0,
    });
    expect(out.pa).toBe(0x1234);
    new QueryRunner({}).run(hw, 1, 1, null, 0n);
    expect(hw.req).toMatchObject({ pasid: NO_PASID, access: DMA_READ, privileged: false });
  });

  it("a grant is the page size and the read and write permissions", () => {
    const out = newTranslationResult();
    out.sizeShift = 12;
    out.perm = DMA_WRITE;
    expect(translationGrant(out)).toEqual({ pageSize: 4096, r: false, w: true });
  });

  it("a per-query answer is computed once per (sid, sub)", () => {
    const known = new Map<string, boolean>();
    let calls = 0;
    const ask = (sid: number, s: number | null) =>
      perQuery(known, sid, s, () => {
        calls++;
        return sid === 1;
      });
    expect(ask(1, null)).toBe(true);
    expect(ask(1, null)).toBe(true);
    expect(ask(1, 0)).toBe(true);
    expect(ask(2, 0)).toBe(false);
    expect(calls).toBe(3);
    expect([...known.keys()]).toEqual(["1", "1:0", "2:0"]);
  });

  it("polling returns once done, and a register that never settles is a model bug", () => {
    let n = 0;
    pollUntil(() => ++n === 3, "never");
    expect(n).toBe(3);
    expect(() => pollUntil(() => false, "never set")).toThrow(ModelBug);
    expect(() => pollUntil(() => false, "never set")).toThrow("never set");
  });
});
