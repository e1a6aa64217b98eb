import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { fc, test } from "@fast-check/vitest";
import { IOMMU_READ, IOMMU_WRITE } from "@iommu-sim/iommu-core";
import { PROT_NONE, PROT_READ, PROT_WRITE } from "@iommu-sim/sva";
import { describe, expect, it } from "vitest";
import { parseScenarioFile, ScenarioFileError } from "./parse-scenario.js";
import {
  type Loc,
  SCENARIO_ERROR_CODES,
  type ScenarioErrorCode,
  type ScenarioSpec,
  type StepSpec,
} from "./scenario-spec.js";

const FILE = "scenarios/x.yaml";
const EXAMPLES = [
  "two-tenants.yaml",
  "sva-style-pasids.yaml",
  "dma-api-churn.yaml",
  "sva-processes.yaml",
];

const exampleTexts = new Map<string, string>();

function readExample(name: string): string {
  let text = exampleTexts.get(name);
  if (text === undefined) {
    text = readFileSync(fileURLToPath(new URL(`../../scenarios/${name}`, import.meta.url)), "utf8");
    exampleTexts.set(name, text);
  }
  return text;
}

/** A small valid VT-d file; `steps` lines (indented by the caller) replace its one step. */
function vtd(steps: string[] = ["  - domain: {name: d1}"], machine?: string[]): string {
  return [
    "version: 1",
    "scenario: t",
    "arch: vtd",
    "machine:",
    ...(machine ?? [
      "  units:",
      "    - name: dmar0",
      "  devices:",
      "    - name: nic0",
      '      bdf: "00:01.0"',
      "    - name: wq0",
      '      bdf: "00:02.0"',
      "      kind: work-queue",
      "      pasid-bits: 8",
    ]),
    "steps:",
    ...steps,
    "",
  ].join("\n");
}

/** A small valid mock file. */
function mock(steps: string[] = ["  - domain: {name: d1}"], machine?: string[]): string {
  return [
    "version: 1",
    "scenario: m",
    "arch: mock",
    "machine:",
    ...(machine ?? ["  devices:", '    - {name: dev0, bdf: "00:01.0"}']),
    "steps:",
    ...steps,
    "",
  ].join("\n");
}

function parseOk(text: string): ScenarioSpec {
  const result = parseScenarioFile(text, FILE);
  if (result instanceof ScenarioFileError) throw new Error(`unexpected error: ${result}`);
  return result;
}

function parseErr(text: string): ScenarioFileError {
  const result = parseScenarioFile(text, FILE);
  if (!(result instanceof ScenarioFileError)) throw new Error("expected an error, got a spec");
  return result;
}

/** Where the `nth` (1-based) occurrence of `needle` starts in `text`. */
function locOf(text: string, needle: string, nth = 1): Loc {
  let at = -1;
  for (let i = 0; i < nth; i++) {
    at = text.indexOf(needle, at + 1);
    if (at < 0) throw new Error(`needle ${JSON.stringify(needle)} not found`);
  }
  const before = text.slice(0, at).split("\n");
  return { line: before.length, column: (before.at(-1) as string).length + 1 };
}

interface ErrorCase {
  readonly rule: string;
  readonly text: string;
  readonly code: ScenarioErrorCode;
  readonly field: string;
  /** The error's place: the start of this text in the file (its `nth` occurrence), or a Loc. */
  readonly at: string | Loc;
  readonly nth?: number;
  /** The message, or a part of it. */
  readonly message?: string | RegExp;
}

function check(c: ErrorCase): void {
  const err = parseErr(c.text);
  const loc = typeof c.at === "string" ? locOf(c.text, c.at, c.nth) : c.at;
  expect({ code: err.code, field: err.field, line: err.line, column: err.column }).toEqual({
    code: c.code,
    field: c.field,
    ...loc,
  });
  if (typeof c.message === "string") expect(err.message).toBe(c.message);
  else if (c.message !== undefined) expect(err.message).toMatch(c.message);
  expect(err.file).toBe(FILE);
  expect(err.toString()).toBe(`${FILE}:${loc.line}:${loc.column}: ${c.field}: ${err.message}`);
  expect(err.toString()).not.toMatch(/[\r\n]/);
}

function runCases(cases: readonly ErrorCase[]): void {
  for (const c of cases) it(c.rule, () => check(c));
}

describe("example scenario files", () => {
  for (const name of EXAMPLES) {
    it(`${name} validates and names itself after its file`, () => {
      const spec = parseOk(readExample(name));
      expect(`${spec.scenario}.yaml`).toBe(name);
      expect(spec.steps.length).toBeGreaterThan(0);
    });
  }

  it("the full example of docs/scenario-files.md validates", () => {
    const doc = readFileSync(
      fileURLToPath(new URL("../../docs/scenario-files.md", import.meta.url)),
      "utf8",
    );
    const example = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1] ?? "";
    const spec = parseOk(example);
    expect(spec.scenario).toBe("two-tenants");
    expect(new Set(spec.steps.map((s) => s.op)).size).toBe(18);
  });

  it("two-tenants.yaml resolves its steps and their places", () => {
    const spec = parseOk(readExample("two-tenants.yaml"));
    expect(spec.steps[0]).toEqual({
      op: "domain",
      name: "tenant-a",
      type: "paging",
      stage: "first",
      loc: { line: 21, column: 5 },
    });
    expect(spec.steps.find((s) => s.op === "map" && s.name === "b-buf")).toMatchObject({
      iova: 0x200000,
      size: 2 << 20,
      perm: IOMMU_READ,
    });
  });
});

describe("defaults", () => {
  it("a minimal VT-d file gets every default resolved", () => {
    const spec = parseOk(vtd());
    expect(spec).toEqual({
      file: FILE,
      version: 1,
      scenario: "t",
      description: "",
      arch: "vtd",
      invalidation: "strict",
      machine: {
        memory: 256 << 20,
        units: [
          {
            name: "dmar0",
            mode: "scalable",
            cache: "maximal",
            cachingMode: false,
            pasidBits: 20,
            ats: true,
            pri: true,
            superpages: ["2M", "1G"],
            loc: { line: 6, column: 7 },
          },
        ],
        devices: [
          {
            name: "nic0",
            bdf: "00:01.0",
            rid: 0x08,
            unit: "dmar0",
            kind: "copy-engine",
            pasidBits: 0,
            ats: false,
            pri: false,
            atc: 0,
            loc: { line: 8, column: 7 },
          },
          {
            name: "wq0",
            bdf: "00:02.0",
            rid: 0x10,
            unit: "dmar0",
            kind: "work-queue",
            pasidBits: 8,
            ats: false,
            pri: false,
            atc: 0,
            loc: { line: 10, column: 7 },
          },
        ],
        loc: { line: 5, column: 3 },
      },
      users: [],
      steps: [{ op: "domain", name: "d1", type: "paging", loc: { line: 15, column: 5 } }],
      loc: { line: 1, column: 1 },
    });
    expect("seed" in spec).toBe(false);
    expect("iotlb" in (spec.machine.units[0] as object)).toBe(false);
  });

  it("a legacy-mode unit defaults to no PASID bits, and pri defaults to ats", () => {
    const spec = parseOk(
      vtd(undefined, [
        "  units:",
        "    - {name: old, mode: legacy, ats: false}",
        "  devices:",
        '    - {name: nic0, bdf: "00:01.0"}',
      ]),
    );
    expect(spec.machine.units[0]).toMatchObject({
      mode: "legacy",
      pasidBits: 0,
      ats: false,
      pri: false,
    });
  });

  it("superpages keep the order 2M, 1G and may be empty", () => {
    const units = (list: string) =>
      parseOk(
        vtd(undefined, [
          "  units:",
          `    - {name: u, superpages: ${list}}`,
          "  devices:",
          '    - {name: nic0, bdf: "00:01.0"}',
        ]),
      ).machine.units[0]?.superpages;
    expect(units("[1G, 2M]")).toEqual(["2M", "1G"]);
    expect(units("[1G]")).toEqual(["1G"]);
    expect(units("[]")).toEqual([]);
  });

  it("a device defaults to the first unit, and an ATS device to 32 ATC entries", () => {
    const spec = parseOk(
      vtd(undefined, [
        "  units:",
        "    - {name: u0}",
        "    - {name: u1}",
        "  devices:",
        '    - {name: a, bdf: "00:01.0", ats: true, pri: true}',
        '    - {name: b, bdf: "1F:1f.7", unit: u1, ats: true, atc: 4}',
      ]),
    );
    expect(spec.machine.devices.map((d) => [d.unit, d.atc, d.bdf, d.rid])).toEqual([
      ["u0", 32, "00:01.0", 0x08],
      ["u1", 4, "1f:1f.7", 0x1fff],
    ]);
  });

  it("a mock device has no unit", () => {
    const spec = parseOk(mock());
    expect(spec.arch).toBe("mock");
    expect(spec.machine.units).toEqual([]);
    expect(spec.machine.devices[0]?.unit).toBeNull();
  });

  it("step defaults: perm rw, dir bidirectional, random on every device, no pasid or expect", () => {
    const spec = parseOk(
      vtd([
        "  - domain: {name: d1, type: identity}",
        "  - map: {domain: d1, iova: 0, size: 4096}",
        "  - dma-map: {device: nic0, name: b, size: 4KiB}",
        "  - random: {count: 5}",
        "  - dma: {device: nic0, iova: 3, size: 1, op: write}",
      ]),
    );
    const bodies = spec.steps.map(({ loc: _, ...rest }) => rest);
    expect(bodies).toEqual([
      { op: "domain", name: "d1", type: "identity" },
      { op: "map", domain: "d1", iova: 0, size: 4096, perm: IOMMU_READ | IOMMU_WRITE },
      { op: "dma-map", device: "nic0", name: "b", size: 4096, dir: "bidirectional" },
      { op: "random", count: 5, devices: ["nic0", "wq0"] },
      { op: "dma", device: "nic0", iova: 3, size: 1, access: "write" },
    ]);
  });
});

describe("values", () => {
  it("sizes take bytes, KiB/MiB/GiB and K/M/G, as ints or strings", () => {
    const sizes = ["4096", '"0x2000"', "12KiB", "16K", "1MiB", "2M", "1 GiB", "1G", '"8 KiB"'];
    const spec = parseOk(
      vtd([
        "  - domain: {name: d1}",
        ...sizes.map((s, i) => `  - unmap: {domain: d1, iova: ${i * 2 ** 30}, size: ${s}}`),
      ]),
    );
    expect(spec.steps.slice(1).map((s) => (s as { size: number }).size)).toEqual([
      4096,
      0x2000,
      12 << 10,
      16 << 10,
      1 << 20,
      2 << 20,
      2 ** 30,
      2 ** 30,
      8 << 10,
    ]);
  });

  it("addresses are exact up to 2^53-1, as ints, hex or strings", () => {
    const spec = parseOk(
      vtd([
        "  - dma: {device: nic0, iova: 0x1ffffffffff000, size: 4KiB, op: read}",
        '  - dma: {device: nic0, iova: "9007199254740990", size: 1, op: read}',
        "  - copy: {device: nic0, src: 0x0, dst: 0xfffff000, size: 4KiB}",
      ]),
    );
    expect(spec.steps.map((s) => (s as { iova?: number; dst?: number }).iova ?? 0)).toEqual([
      2 ** 53 - 4096,
      2 ** 53 - 2,
      0,
    ]);
    expect((spec.steps[2] as { dst: number }).dst).toBe(0xfffff000);
  });

  it("perm r, w and rw are IOMMU_READ, IOMMU_WRITE and both", () => {
    const spec = parseOk(
      vtd([
        "  - domain: {name: d1}",
        "  - map: {domain: d1, iova: 0, size: 4KiB, perm: r}",
        "  - map: {domain: d1, iova: 0x1000, size: 4KiB, perm: w}",
        "  - map: {domain: d1, iova: 0x2000, size: 4KiB, perm: rw}",
      ]),
    );
    expect(spec.steps.slice(1).map((s) => (s as { perm: number }).perm)).toEqual([
      IOMMU_READ,
      IOMMU_WRITE,
      IOMMU_READ | IOMMU_WRITE,
    ]);
  });

  it("a PASID is a name or a number", () => {
    const spec = parseOk(
      vtd([
        "  - pasid-alloc: {name: p1}",
        "  - dma: {device: wq0, pasid: p1, iova: 0, size: 1, op: read}",
        "  - dma: {device: wq0, pasid: 0xff, iova: 0, size: 1, op: read, expect: fault}",
        '  - submit: {device: wq0, pasid: "5", count: 1, size: 4KiB}',
      ]),
    );
    expect(spec.steps.slice(1).map((s) => (s as { pasid?: unknown }).pasid)).toEqual([
      "p1",
      0xff,
      5,
    ]);
  });

  it("names defined inside a repeat are visible after it, and repeats nest", () => {
    const spec = parseOk(
      vtd([
        "  - repeat:",
        "      count: 3",
        "      steps:",
        "        - domain: {name: inner}",
        "        - repeat: {count: 2, steps: [{pasid-alloc: {name: p}}]}",
        "  - attach: {device: nic0, domain: inner}",
        "  - pasid-free: {pasid: p}",
      ]),
    );
    const repeat = spec.steps[0] as Extract<StepSpec, { op: "repeat" }>;
    expect(repeat.count).toBe(3);
    expect(repeat.steps.map((s) => s.op)).toEqual(["domain", "repeat"]);
    expect(repeat.steps[1]?.loc).toEqual({ line: 19, column: 11 });
    expect(spec.steps.map((s) => s.op)).toEqual(["repeat", "attach", "pasid-free"]);
  });

  it("every op validates", () => {
    const spec = parseOk(
      vtd([
        "  - domain: {name: d1, type: paging, stage: second}",
        "  - domain: {name: blk, type: blocked}",
        "  - attach: {device: nic0, domain: d1}",
        "  - attach: {device: nic0, domain: default}",
        "  - pasid-alloc: {name: p1}",
        "  - pasid-attach: {device: wq0, pasid: p1, domain: d1}",
        "  - pasid-detach: {device: wq0, pasid: p1}",
        "  - pasid-free: {pasid: p1}",
        "  - dma-pasid: {device: wq0, name: kp}",
        "  - map: {domain: d1, iova: 0x100000, size: 64KiB, perm: rw, name: buf1}",
        "  - dma: {device: nic0, iova: 0x100000, size: 4KiB, op: read, expect: ok}",
        "  - unmap: {domain: d1, iova: 0x100000, size: 64KiB}",
        "  - domain-free: {domain: d1}",
        "  - dma-map: {device: nic0, name: b1, size: 16KiB, dir: to-device}",
        "  - dma-unmap: {buffer: b1}",
        "  - copy: {device: nic0, src: 0x100000, dst: 0x200000, size: 8KiB}",
        "  - submit: {device: wq0, pasid: kp, count: 16, size: 4KiB}",
        "  - random: {count: 1000, devices: [wq0, nic0]}",
        "  - repeat: {count: 10, steps: [{unplug: {device: wq0}}]}",
        "  - unplug: {device: nic0}",
      ]),
    );
    expect(new Set(spec.steps.map((s) => s.op)).size).toBe(18);
  });
});

describe("errors: YAML syntax and unsupported YAML", () => {
  runCases([
    {
      rule: "a YAML syntax error is one located yaml-syntax error",
      text: "version: 1\nscenario: x: y\n",
      code: "yaml-syntax",
      field: "(yaml)",
      at: "x: y",
      message: "YAML syntax: Nested mappings are not allowed in compact mappings",
    },
    {
      rule: "a tab used as indentation is a yaml-syntax error",
      text: "version: 1\nmachine:\n\tunits: []\n",
      code: "yaml-syntax",
      field: "(yaml)",
      at: "\tunits",
    },
    {
      rule: "a second document is a yaml-syntax error",
      text: "version: 1\n---\nversion: 1\n",
      code: "yaml-syntax",
      field: "(yaml)",
      at: "---",
    },
    {
      rule: "an unknown tag is a yaml-syntax error",
      text: "version: !foo 1\n",
      code: "yaml-syntax",
      field: "(yaml)",
      at: "!foo",
      message: "YAML syntax: Unresolved tag: !foo",
    },
    {
      rule: "an alias is unsupported",
      text: vtd(["  - domain: &d {name: d1}", "  - *d"]),
      code: "unsupported",
      field: "steps[1]",
      at: "*d",
      message: "aliases (*d) are not supported",
    },
    {
      rule: "a version other than 1 is unsupported, before any other error",
      text: "version: 2\nfuture-key: 1\n",
      code: "unsupported",
      field: "version",
      at: "2",
      message: "unsupported version 2 (this iommu-sim reads version 1)",
    },
  ]);
});

describe("errors: the document", () => {
  runCases([
    {
      rule: "a version that is not an integer is bad-type",
      text: 'version: "one"\n',
      code: "bad-type",
      field: "version",
      at: '"one"',
      message: 'expected an integer (decimal or 0x hex), got "one"',
    },
    {
      rule: "a scalar document is bad-type at the root",
      text: "hello\n",
      code: "bad-type",
      field: "(root)",
      at: "hello",
      message: 'expected a mapping, got "hello"',
    },
    {
      rule: "an empty file is bad-type at the root",
      text: "# nothing\n",
      code: "bad-type",
      field: "(root)",
      at: { line: 1, column: 1 },
      message: "expected a mapping (the scenario), got an empty document",
    },
    {
      rule: "a list at the root is bad-type",
      text: "- version: 1\n",
      code: "bad-type",
      field: "(root)",
      at: "-",
      message: "expected a mapping, got a list",
    },
    {
      rule: "a missing required field is missing-field at its mapping",
      text: "version: 1\narch: vtd\n",
      code: "missing-field",
      field: "scenario",
      at: "version",
      message: 'missing field "scenario"',
    },
    {
      rule: "an unknown top-level key is unknown-field at the key",
      text: vtd().replace("arch: vtd", "arch: vtd\nsede: 7"),
      code: "unknown-field",
      field: "sede",
      at: "sede",
      message:
        'unknown field "sede" (expected one of: version, scenario, description, arch, seed, invalidation, machine, users, steps)',
    },
    {
      rule: "a key given twice is duplicate-field at the second",
      text: vtd().replace("arch: vtd", "arch: vtd\nscenario: u"),
      code: "duplicate-field",
      field: "scenario",
      at: "scenario",
      nth: 2,
      message: 'field "scenario" is already given on line 2',
    },
    {
      rule: "a key that is not a scalar is bad-type",
      text: "version: 1\n? [a]\n: 1\n",
      code: "bad-type",
      field: "(root)",
      at: "[a]",
      message: "expected a field name, got a list",
    },
    {
      rule: "a strange key is quoted in the field path",
      text: 'version: 1\n"a b": 1\n',
      code: "unknown-field",
      field: '["a b"]',
      at: '"a b"',
    },
    {
      rule: "a scenario name outside the pattern is bad-value",
      text: vtd().replace("scenario: t", "scenario: Two_Tenants"),
      code: "bad-value",
      field: "scenario",
      at: "Two_Tenants",
      message: 'expected a scenario name (^[a-z0-9][a-z0-9-]*$), got "Two_Tenants"',
    },
    {
      rule: "a list as a scenario name is bad-type",
      text: vtd().replace("scenario: t", "scenario: [t]"),
      code: "bad-type",
      field: "scenario",
      at: "[t]",
    },
    {
      rule: "an unknown arch is bad-value",
      text: vtd().replace("arch: vtd", "arch: amd"),
      code: "bad-value",
      field: "arch",
      at: "amd",
      message: 'expected one of vtd, mock, smmu, both, got "amd"',
    },
    {
      rule: "a legacy-mode unit on arch smmu is bad-value (legacy mode is VT-d's)",
      text: vtd()
        .replace("arch: vtd", "arch: smmu")
        .replace("    - name: dmar0", "    - name: dmar0\n      mode: legacy"),
      code: "bad-value",
      field: "machine.units[0].mode",
      at: "legacy",
      message: "legacy mode is VT-d's; arch smmu needs scalable units",
    },
    {
      rule: "a legacy-mode unit on arch both is bad-value",
      text: vtd()
        .replace("arch: vtd", "arch: both")
        .replace("    - name: dmar0", "    - name: dmar0\n      mode: legacy"),
      code: "bad-value",
      field: "machine.units[0].mode",
      at: "legacy",
      message: "legacy mode is VT-d's; arch both needs scalable units",
    },
    {
      rule: "caching mode on arch smmu is bad-value",
      text: vtd()
        .replace("arch: vtd", "arch: smmu")
        .replace("    - name: dmar0", "    - name: dmar0\n      caching-mode: true"),
      code: "bad-value",
      field: "machine.units[0].caching-mode",
      at: "true",
      message: "caching mode is VT-d's (arch smmu)",
    },
    {
      rule: "a seed above 2^32-1 is out-of-range",
      text: vtd().replace("arch: vtd", "arch: vtd\nseed: 0x100000000"),
      code: "out-of-range",
      field: "seed",
      at: "0x100000000",
      message: "expected an integer in 0..0xffffffff, got 0x100000000",
    },
    {
      rule: "a negative seed is out-of-range",
      text: vtd().replace("arch: vtd", "arch: vtd\nseed: -1"),
      code: "out-of-range",
      field: "seed",
      at: "-1",
    },
    {
      rule: "a fractional seed is bad-type",
      text: vtd().replace("arch: vtd", "arch: vtd\nseed: 1.5"),
      code: "bad-type",
      field: "seed",
      at: "1.5",
      message: "expected an integer (decimal or 0x hex), got 1.5",
    },
    {
      rule: "an empty value is bad-type",
      text: vtd().replace("arch: vtd", "arch: vtd\nseed:"),
      code: "bad-type",
      field: "seed",
      at: { line: 4, column: 6 },
      message: "expected an integer (decimal or 0x hex), got an empty value",
    },
    {
      rule: "an invalidation mode other than strict or lazy is bad-value",
      text: vtd().replace("arch: vtd", "arch: vtd\ninvalidation: deferred"),
      code: "bad-value",
      field: "invalidation",
      at: "deferred",
    },
    {
      rule: "a description must be a string, not a mapping",
      text: vtd().replace("arch: vtd", "arch: vtd\ndescription: {a: 1}"),
      code: "bad-type",
      field: "description",
      at: "{a: 1}",
      message: "expected a string, got a mapping",
    },
    {
      rule: "no steps is out-of-range",
      text: vtd(["  []"]).replace("steps:\n  []", "steps: []"),
      code: "out-of-range",
      field: "steps",
      at: "[]",
      message: "expected at least 1 items, got 0",
    },
  ]);
});

describe("errors: the machine", () => {
  const units = (...unitLines: string[]) =>
    vtd(undefined, ["  units:", ...unitLines, "  devices:", '    - {name: nic0, bdf: "00:01.0"}']);
  const devices = (...deviceLines: string[]) =>
    vtd(undefined, [
      "  units:",
      "    - {name: dmar0}",
      "    - {name: old, mode: legacy}",
      "    - {name: plain, ats: false}",
      "    - {name: nopri, pri: false}",
      "  devices:",
      ...deviceLines,
    ]);
  runCases([
    {
      rule: "memory below 16 MiB is out-of-range",
      text: vtd(undefined, [
        "  memory: 8MiB",
        "  units: [{name: u}]",
        '  devices: [{name: a, bdf: "00:01.0"}]',
      ]),
      code: "out-of-range",
      field: "machine.memory",
      at: "8MiB",
      message: 'expected a size in 16 MiB..4 GiB, got "8MiB"',
    },
    {
      rule: "memory above 4 GiB is out-of-range",
      text: vtd(undefined, [
        "  memory: 0x100001000",
        "  units: [{name: u}]",
        '  devices: [{name: a, bdf: "00:01.0"}]',
      ]),
      code: "out-of-range",
      field: "machine.memory",
      at: "0x100001000",
    },
    {
      rule: "memory that is not whole pages is bad-value",
      text: vtd(undefined, [
        "  memory: 20000000",
        "  units: [{name: u}]",
        '  devices: [{name: a, bdf: "00:01.0"}]',
      ]),
      code: "bad-value",
      field: "machine.memory",
      at: "20000000",
      message: "expected a multiple of 4 KiB, got 20000000",
    },
    {
      rule: "a size with an unknown unit is bad-type",
      text: vtd(undefined, [
        "  memory: 64MB",
        "  units: [{name: u}]",
        '  devices: [{name: a, bdf: "00:01.0"}]',
      ]),
      code: "bad-type",
      field: "machine.memory",
      at: "64MB",
      message: 'expected a size (bytes, or n KiB, MiB or GiB), got "64MB"',
    },
    {
      rule: "vtd without units is missing-field at the machine",
      text: vtd(undefined, ['  devices: [{name: a, bdf: "00:01.0"}]']),
      code: "missing-field",
      field: "machine.units",
      at: "devices",
    },
    {
      rule: "no units is out-of-range",
      text: vtd(undefined, ["  units: []", '  devices: [{name: a, bdf: "00:01.0"}]']),
      code: "out-of-range",
      field: "machine.units",
      at: "[]",
      message: "expected 1 to 8 items, got 0",
    },
    {
      rule: "nine units are out-of-range",
      text: vtd(undefined, [
        `  units: [${Array.from({ length: 9 }, (_, i) => `{name: u${i}}`).join(", ")}]`,
        '  devices: [{name: a, bdf: "00:01.0"}]',
      ]),
      code: "out-of-range",
      field: "machine.units",
      at: "[{name: u0",
      message: "expected 1 to 8 items, got 9",
    },
    {
      rule: "65 devices are out-of-range",
      text: mock(undefined, [
        "  devices:",
        ...Array.from(
          { length: 65 },
          (_, i) =>
            `    - {name: d${i}, bdf: "01:${(i >> 3).toString(16).padStart(2, "0")}.${i & 7}"}`,
        ),
      ]),
      code: "out-of-range",
      field: "machine.devices",
      at: "- {name: d0,",
      message: "expected 1 to 64 items, got 65",
    },
    {
      rule: "devices as a mapping are bad-type",
      text: mock(undefined, ["  devices: {nic0: 1}"]),
      code: "bad-type",
      field: "machine.devices",
      at: "{nic0",
      message: "expected a list, got a mapping",
    },
    {
      rule: "an unknown unit field is unknown-field",
      text: units("    - {name: u, cahce: minimal}"),
      code: "unknown-field",
      field: "machine.units[0].cahce",
      at: "cahce",
      message:
        'unknown field "cahce" (expected one of: name, mode, cache, iotlb, caching-mode, pasid-bits, ats, pri, superpages)',
    },
    {
      rule: "a unit without a name is missing-field",
      text: units("    - {mode: legacy}"),
      code: "missing-field",
      field: "machine.units[0].name",
      at: "{mode",
    },
    {
      rule: "a unit name outside the pattern is bad-value",
      text: units("    - {name: 0dmar}"),
      code: "bad-value",
      field: "machine.units[0].name",
      at: "0dmar",
    },
    {
      rule: "two units of one name are duplicate-name",
      text: units("    - {name: u}", "    - {name: u}"),
      code: "duplicate-name",
      field: "machine.units[1].name",
      at: "u}",
      nth: 2,
      message: 'unit "u" is already defined on line 6',
    },
    {
      rule: "an unknown mode is bad-value",
      text: units("    - {name: u, mode: extended}"),
      code: "bad-value",
      field: "machine.units[0].mode",
      at: "extended",
    },
    {
      rule: "an IOTLB size that is not a power of two is bad-value",
      text: units("    - {name: u, iotlb: 48}"),
      code: "bad-value",
      field: "machine.units[0].iotlb",
      at: "48",
      message: "expected a power of two, got 48",
    },
    {
      rule: "an IOTLB above 4096 entries is out-of-range",
      text: units("    - {name: u, iotlb: 8192}"),
      code: "out-of-range",
      field: "machine.units[0].iotlb",
      at: "8192",
    },
    {
      rule: "caching-mode yes is bad-type: booleans are true or false",
      text: units("    - {name: u, caching-mode: yes}"),
      code: "bad-type",
      field: "machine.units[0].caching-mode",
      at: "yes",
      message: 'expected true or false, got "yes"',
    },
    {
      rule: "more than 20 PASID bits are out-of-range",
      text: units("    - {name: u, pasid-bits: 21}"),
      code: "out-of-range",
      field: "machine.units[0].pasid-bits",
      at: "21",
      message: "expected an integer in 0..20, got 21",
    },
    {
      rule: "PASID bits in legacy mode are bad-value",
      text: units("    - {name: u, mode: legacy, pasid-bits: 20}"),
      code: "bad-value",
      field: "machine.units[0].pasid-bits",
      at: "20",
      message: "must be 0 in legacy mode (no PASID tables)",
    },
    {
      rule: "unit pri without ats is bad-value",
      text: units("    - {name: u, ats: false, pri: true}"),
      code: "bad-value",
      field: "machine.units[0].pri",
      at: "true",
    },
    {
      rule: "an unknown superpage size is bad-value",
      text: units("    - {name: u, superpages: [2M, 512G]}"),
      code: "bad-value",
      field: "machine.units[0].superpages[1]",
      at: "512G",
    },
    {
      rule: "a superpage size listed twice is bad-value",
      text: units("    - {name: u, superpages: [1G, 1G]}"),
      code: "bad-value",
      field: "machine.units[0].superpages[1]",
      at: "1G",
      nth: 2,
      message: '"1G" is already listed at [0]',
    },
    {
      rule: "a device without a bdf is missing-field",
      text: devices("    - {name: a}"),
      code: "missing-field",
      field: "machine.devices[0].bdf",
      at: "{name: a}",
    },
    {
      rule: "a malformed bdf is bad-value",
      text: devices('    - {name: a, bdf: "0:1.0"}'),
      code: "bad-value",
      field: "machine.devices[0].bdf",
      at: '"0:1.0"',
    },
    {
      rule: "a device number above 0x1f is out-of-range",
      text: devices('    - {name: a, bdf: "00:20.0"}'),
      code: "out-of-range",
      field: "machine.devices[0].bdf",
      at: '"00:20.0"',
      message: "device must be 00..1f and function 0..7, got 00:20.0",
    },
    {
      rule: "a function number above 7 is out-of-range",
      text: devices('    - {name: a, bdf: "00:01.8"}'),
      code: "out-of-range",
      field: "machine.devices[0].bdf",
      at: '"00:01.8"',
    },
    {
      rule: "two devices of one name are duplicate-name",
      text: devices('    - {name: a, bdf: "00:01.0"}', '    - {name: a, bdf: "00:02.0"}'),
      code: "duplicate-name",
      field: "machine.devices[1].name",
      at: "a,",
      nth: 2,
    },
    {
      rule: "two devices at one BDF are duplicate-name",
      text: devices('    - {name: a, bdf: "00:01.0"}', '    - {name: b, bdf: "00:01.0"}'),
      code: "duplicate-name",
      field: "machine.devices[1].bdf",
      at: '"00:01.0"',
      nth: 2,
      message: "BDF 00:01.0 is already device a's",
    },
    {
      rule: "a device behind an unknown unit is unknown-name",
      text: devices('    - {name: a, bdf: "00:01.0", unit: dmar9}'),
      code: "unknown-name",
      field: "machine.devices[0].unit",
      at: "dmar9",
      message: 'unknown unit "dmar9" (units: dmar0, old, plain, nopri)',
    },
    {
      rule: "an unknown device kind is bad-value",
      text: devices('    - {name: a, bdf: "00:01.0", kind: gpu}'),
      code: "bad-value",
      field: "machine.devices[0].kind",
      at: "gpu",
    },
    {
      rule: "a PASID device behind a legacy unit is bad-value",
      text: devices('    - {name: a, bdf: "00:01.0", unit: old, pasid-bits: 4}'),
      code: "bad-value",
      field: "machine.devices[0].pasid-bits",
      at: "4}",
      message:
        "a PASID-capable device needs a scalable-mode unit with pasid-bits > 0; unit old is legacy with pasid-bits 0",
    },
    {
      rule: "device ats behind a unit without ats is bad-value",
      text: devices('    - {name: a, bdf: "00:01.0", unit: plain, ats: true}'),
      code: "bad-value",
      field: "machine.devices[0].ats",
      at: "true",
    },
    {
      rule: "device pri without ats is bad-value",
      text: devices('    - {name: a, bdf: "00:01.0", pri: true}'),
      code: "bad-value",
      field: "machine.devices[0].pri",
      at: "true",
      message: "page requests (pri) need ats",
    },
    {
      rule: "device pri behind a unit without pri is bad-value",
      text: devices('    - {name: a, bdf: "00:01.0", unit: nopri, ats: true, pri: true}'),
      code: "bad-value",
      field: "machine.devices[0].pri",
      at: "true}",
    },
    {
      rule: "an ATC size without ats is bad-value",
      text: devices('    - {name: a, bdf: "00:01.0", atc: 16}'),
      code: "bad-value",
      field: "machine.devices[0].atc",
      at: "16",
    },
    {
      rule: "an ATC of 0 entries is out-of-range",
      text: devices('    - {name: a, bdf: "00:01.0", ats: true, atc: 0}'),
      code: "out-of-range",
      field: "machine.devices[0].atc",
      at: "0}",
      nth: 2,
    },
    {
      rule: "units with arch mock are unknown-field",
      text: mock(undefined, ["  units: [{name: u}]", '  devices: [{name: a, bdf: "00:01.0"}]']),
      code: "unknown-field",
      field: "machine.units",
      at: "units",
      message: 'field "units" is not allowed: arch mock has no IOMMU units',
    },
    {
      rule: "a device unit with arch mock is unknown-field",
      text: mock(undefined, ['  devices: [{name: a, bdf: "00:01.0", unit: u}]']),
      code: "unknown-field",
      field: "machine.devices[0].unit",
      at: "unit",
    },
  ]);
});

describe("errors: steps", () => {
  const steps = (...lines: string[]) => vtd(lines);
  runCases([
    {
      rule: "a step that is a string is bad-type",
      text: steps("  - unplug"),
      code: "bad-type",
      field: "steps[0]",
      at: "unplug",
      message: 'expected a mapping with one key (the op), got "unplug"',
    },
    {
      rule: "an empty step is missing-field",
      text: steps("  - {}"),
      code: "missing-field",
      field: "steps[0]",
      at: "{}",
    },
    {
      rule: "a step with two ops is bad-value",
      text: steps("  - {unplug: {device: nic0}, random: {count: 1}}"),
      code: "bad-value",
      field: "steps[0]",
      at: "{unplug",
      message: "expected one key (the op), got 2: unplug, random",
    },
    {
      rule: "an unknown op is unknown-field at the op",
      text: steps("  - mapp: {domain: d1}"),
      code: "unknown-field",
      field: "steps[0].mapp",
      at: "mapp",
    },
    {
      rule: "an op without its mapping is bad-type",
      text: steps("  - unplug:"),
      code: "bad-type",
      field: "steps[0].unplug",
      at: { line: 15, column: 12 },
      message: "expected a mapping, got an empty value",
    },
    {
      rule: "an op that is not a plain key is bad-type",
      text: steps("  - ? [map]", "    : {}"),
      code: "bad-type",
      field: "steps[0]",
      at: "? [map]",
      message: "expected the op as a plain key, got a list",
    },
    {
      rule: "default names no domain outside attach",
      text: steps(
        "  - pasid-alloc: {name: p1}",
        "  - pasid-attach: {device: wq0, pasid: p1, domain: default}",
      ),
      code: "unknown-name",
      field: "steps[1].pasid-attach.domain",
      at: "default",
    },
    {
      rule: "an unknown field of an op is unknown-field",
      text: steps("  - domain: {name: d1, kind: paging}"),
      code: "unknown-field",
      field: "steps[0].domain.kind",
      at: "kind: paging",
      message: 'unknown field "kind" (expected one of: name, type, stage)',
    },
    {
      rule: "a missing op field is missing-field at the op's mapping",
      text: steps("  - domain: {name: d1}", "  - map: {domain: d1, iova: 0}"),
      code: "missing-field",
      field: "steps[1].map.size",
      at: "{domain: d1, iova",
      message: 'missing field "size"',
    },
    {
      rule: "a domain named default is bad-value",
      text: steps("  - domain: {name: default}"),
      code: "bad-value",
      field: "steps[0].domain.name",
      at: "default",
    },
    {
      rule: "a stage on a non-paging domain is bad-value",
      text: steps("  - domain: {name: d1, type: identity, stage: first}"),
      code: "bad-value",
      field: "steps[0].domain.stage",
      at: "first",
      message: "only paging domains have a stage, not identity",
    },
    {
      rule: "a domain defined twice is duplicate-name",
      text: steps("  - domain: {name: d1}", "  - domain: {name: d1, type: blocked}"),
      code: "duplicate-name",
      field: "steps[1].domain.name",
      at: "d1",
      nth: 2,
      message: 'domain "d1" is already defined on line 15',
    },
    {
      rule: "a domain used before its definition is unknown-name",
      text: steps("  - attach: {device: nic0, domain: d1}", "  - domain: {name: d1}"),
      code: "unknown-name",
      field: "steps[0].attach.domain",
      at: "d1",
      message: 'unknown domain "d1" (no domain is defined before this point)',
    },
    {
      rule: "an unknown device is unknown-name",
      text: steps("  - unplug: {device: nic9}"),
      code: "unknown-name",
      field: "steps[0].unplug.device",
      at: "nic9",
      message: 'unknown device "nic9" (devices: nic0, wq0)',
    },
    {
      rule: "an unknown PASID name is unknown-name",
      text: steps(
        "  - domain: {name: d1}",
        "  - pasid-attach: {device: wq0, pasid: p1, domain: d1}",
      ),
      code: "unknown-name",
      field: "steps[1].pasid-attach.pasid",
      at: "p1",
      message: 'unknown pasid "p1" (no pasid is defined before this point)',
    },
    {
      rule: "a PASID name defined twice is duplicate-name, across pasid-alloc and dma-pasid",
      text: steps("  - pasid-alloc: {name: p1}", "  - dma-pasid: {device: wq0, name: p1}"),
      code: "duplicate-name",
      field: "steps[1].dma-pasid.name",
      at: "p1",
      nth: 2,
    },
    {
      rule: "pasid-attach on a device without PASID bits is bad-value",
      text: steps(
        "  - domain: {name: d1}",
        "  - pasid-alloc: {name: p1}",
        "  - pasid-attach: {device: nic0, pasid: p1, domain: d1}",
      ),
      code: "bad-value",
      field: "steps[2].pasid-attach.pasid",
      at: "p1, domain",
      message: "device nic0 has pasid-bits 0 and cannot use a PASID",
    },
    {
      rule: "dma-pasid on a device without PASID bits is bad-value",
      text: steps("  - dma-pasid: {device: nic0, name: kp}"),
      code: "bad-value",
      field: "steps[0].dma-pasid.device",
      at: "nic0, name",
    },
    {
      rule: "a DMA with a PASID from a device without PASID bits is bad-value",
      text: steps("  - dma: {device: nic0, pasid: 1, iova: 0, size: 1, op: read}"),
      code: "bad-value",
      field: "steps[0].dma.pasid",
      at: "1, iova",
    },
    {
      rule: "a PASID number beyond the device's PASID width is out-of-range",
      text: steps("  - dma: {device: wq0, pasid: 256, iova: 0, size: 1, op: read}"),
      code: "out-of-range",
      field: "steps[0].dma.pasid",
      at: "256",
      message: "PASID 256 does not fit the 8 PASID bits of device wq0",
    },
    {
      rule: "a PASID number of 2^20 or more is out-of-range",
      text: steps("  - dma: {device: wq0, pasid: 0x100000, iova: 0, size: 1, op: read}"),
      code: "out-of-range",
      field: "steps[0].dma.pasid",
      at: "0x100000",
      message: "expected an integer in 0..0xfffff, got 0x100000",
    },
    {
      rule: "an unaligned map IOVA is bad-value",
      text: steps("  - domain: {name: d1}", "  - map: {domain: d1, iova: 0x100100, size: 4KiB}"),
      code: "bad-value",
      field: "steps[1].map.iova",
      at: "0x100100",
      message: "expected a 4 KiB-aligned address, got 0x100100",
    },
    {
      rule: "a map size that is not whole pages is bad-value",
      text: steps("  - domain: {name: d1}", "  - map: {domain: d1, iova: 0, size: 6000}"),
      code: "bad-value",
      field: "steps[1].map.size",
      at: "6000",
      message: "expected a positive multiple of 4 KiB, got 6000",
    },
    {
      rule: "a map size of 0 is bad-value",
      text: steps("  - domain: {name: d1}", "  - unmap: {domain: d1, iova: 0, size: 0}"),
      code: "bad-value",
      field: "steps[1].unmap.size",
      at: "0}",
    },
    {
      rule: "a map larger than the machine's memory is out-of-range",
      text: steps("  - domain: {name: d1}", "  - map: {domain: d1, iova: 0, size: 512MiB}"),
      code: "out-of-range",
      field: "steps[1].map.size",
      at: "512MiB",
      message: "512 MiB is more than the machine's memory (256 MiB)",
    },
    {
      rule: "a map range ending beyond 2^53 is out-of-range",
      text: steps(
        "  - domain: {name: d1}",
        "  - map: {domain: d1, iova: 0x1ffffffffff000, size: 8KiB}",
      ),
      code: "out-of-range",
      field: "steps[1].map.size",
      at: "8KiB",
      message: "the range 0x1ffffffffff000+8192 ends beyond 2^53",
    },
    {
      rule: "an address of 2^53 or more is out-of-range, even as an exact string",
      text: steps('  - dma: {device: nic0, iova: "0x1ffffffffffffff", size: 1, op: read}'),
      code: "out-of-range",
      field: "steps[0].dma.iova",
      at: '"0x1ff',
      message: 'expected an integer in 0..2^53-1, got "0x1ffffffffffffff"',
    },
    {
      rule: "an address in exponent notation is bad-type",
      text: steps("  - dma: {device: nic0, iova: 1e6, size: 1, op: read}"),
      code: "bad-type",
      field: "steps[0].dma.iova",
      at: "1e6",
    },
    {
      rule: "a DMA of more than 16 MiB is out-of-range",
      text: steps("  - dma: {device: nic0, iova: 0, size: 17MiB, op: read}"),
      code: "out-of-range",
      field: "steps[0].dma.size",
      at: "17MiB",
      message: 'expected a size in 1 byte..16 MiB, got "17MiB"',
    },
    {
      rule: "a DMA without op is missing-field",
      text: steps("  - dma: {device: nic0, iova: 0, size: 1}"),
      code: "missing-field",
      field: "steps[0].dma.op",
      at: "{device",
    },
    {
      rule: "an unknown DMA op is bad-value",
      text: steps("  - dma: {device: nic0, iova: 0, size: 1, op: rw}"),
      code: "bad-value",
      field: "steps[0].dma.op",
      at: "rw",
    },
    {
      rule: "an unknown expectation is bad-value",
      text: steps("  - dma: {device: nic0, iova: 0, size: 1, op: read, expect: maybe}"),
      code: "bad-value",
      field: "steps[0].dma.expect",
      at: "maybe",
    },
    {
      rule: "an unknown perm is bad-value",
      text: steps("  - domain: {name: d1}", "  - map: {domain: d1, iova: 0, size: 4KiB, perm: x}"),
      code: "bad-value",
      field: "steps[1].map.perm",
      at: "x}",
      message: 'expected one of r, w, rw, got "x"',
    },
    {
      rule: "a dma-map of more than the machine's memory is out-of-range",
      text: steps("  - dma-map: {device: nic0, name: b, size: 1GiB}"),
      code: "out-of-range",
      field: "steps[0].dma-map.size",
      at: "1GiB",
    },
    {
      rule: "an unknown dma-map direction is bad-value",
      text: steps("  - dma-map: {device: nic0, name: b, size: 4KiB, dir: both}"),
      code: "bad-value",
      field: "steps[0].dma-map.dir",
      at: "both",
    },
    {
      rule: "a buffer name used by map and dma-map is duplicate-name",
      text: steps(
        "  - domain: {name: d1}",
        "  - map: {domain: d1, iova: 0, size: 4KiB, name: b}",
        "  - dma-map: {device: nic0, name: b, size: 4KiB}",
      ),
      code: "duplicate-name",
      field: "steps[2].dma-map.name",
      at: "b, size",
      message: 'buffer "b" is already defined on line 16',
    },
    {
      rule: "dma-unmap of an unknown buffer is unknown-name",
      text: steps("  - dma-unmap: {buffer: b}"),
      code: "unknown-name",
      field: "steps[0].dma-unmap.buffer",
      at: "b}",
    },
    {
      rule: "dma-unmap of a map buffer is bad-value",
      text: steps(
        "  - domain: {name: d1}",
        "  - map: {domain: d1, iova: 0, size: 4KiB, name: b}",
        "  - dma-unmap: {buffer: b}",
      ),
      code: "bad-value",
      field: "steps[2].dma-unmap.buffer",
      at: "b}",
      nth: 2,
      message: "buffer b was made by map (line 16); dma-unmap takes dma-map buffers",
    },
    {
      rule: "copy on a work-queue device is bad-value",
      text: steps("  - copy: {device: wq0, src: 0, dst: 0x1000, size: 4KiB}"),
      code: "bad-value",
      field: "steps[0].copy.device",
      at: "wq0, src",
      message: "copy needs a copy-engine device; wq0 is a work-queue",
    },
    {
      rule: "submit on a copy engine is bad-value",
      text: steps("  - submit: {device: nic0, count: 1, size: 4KiB}"),
      code: "bad-value",
      field: "steps[0].submit.device",
      at: "nic0, count",
      message: "submit needs a work-queue device; nic0 is a copy-engine",
    },
    {
      rule: "a copy range ending beyond 2^53 is out-of-range",
      text: steps("  - copy: {device: nic0, src: 0, dst: 0x1ffffffffff000, size: 8KiB}"),
      code: "out-of-range",
      field: "steps[0].copy.dst",
      at: "0x1ff",
    },
    {
      rule: "a count of 0 is out-of-range",
      text: steps("  - submit: {device: wq0, count: 0, size: 4KiB}"),
      code: "out-of-range",
      field: "steps[0].submit.count",
      at: "0, size",
      message: "expected an integer in 1..1000000, got 0",
    },
    {
      rule: "a count above 10^6 is out-of-range",
      text: steps("  - random: {count: 1000001}"),
      code: "out-of-range",
      field: "steps[0].random.count",
      at: "1000001",
    },
    {
      rule: "a device listed twice for random is bad-value",
      text: steps("  - random: {count: 1, devices: [nic0, wq0, nic0]}"),
      code: "bad-value",
      field: "steps[0].random.devices[2]",
      at: "nic0]",
    },
    {
      rule: "an empty device list for random is out-of-range",
      text: steps("  - random: {count: 1, devices: []}"),
      code: "out-of-range",
      field: "steps[0].random.devices",
      at: "[]",
    },
    {
      rule: "errors inside a repeat name the nested step",
      text: steps(
        "  - repeat:",
        "      count: 2",
        "      steps:",
        "        - unplug: {device: nic9}",
      ),
      code: "unknown-name",
      field: "steps[0].repeat.steps[0].unplug.device",
      at: "nic9",
    },
    {
      rule: "a repeat without steps is out-of-range",
      text: steps("  - repeat: {count: 2, steps: []}"),
      code: "out-of-range",
      field: "steps[0].repeat.steps",
      at: "[]",
    },
    {
      rule: "repeats nested more than 16 deep are out-of-range",
      text: steps(
        `  - ${"{repeat: {count: 1, steps: [".repeat(17)}{unplug: {device: nic0}}${"]}}".repeat(17)}`,
      ),
      code: "out-of-range",
      field: `steps[0]${".repeat.steps[0]".repeat(16)}.repeat.steps`,
      at: "[{unplug",
      message: "repeat steps nest at most 16 deep",
    },
  ]);
});

// ---- processes and SVA ------------------------------------------------------------------------

const SVA_MACHINE = [
  "machine:",
  "  units:",
  "    - name: dmar0",
  "  devices:",
  '    - {name: nic0, bdf: "00:01.0"}',
  '    - {name: wq0, bdf: "00:02.0", kind: work-queue, pasid-bits: 20, ats: true}',
  '    - {name: acc0, bdf: "00:03.0", pasid-bits: 20, ats: true, pri: true}',
];
const USERS = ["users:", "  - {name: alice, pasid-limit: 2}", "  - name: bob"];

/** A VT-d file with a work queue, a PRI accelerator, a device without PASIDs and two users. */
function sva(steps: string[], users: string[] = USERS): string {
  return [
    "version: 1",
    "scenario: s",
    "arch: both",
    ...SVA_MACHINE,
    ...users,
    "steps:",
    ...steps,
    "",
  ].join("\n");
}

/** Two processes, each with a region: what most SVA error cases start from. */
const PRELUDE = [
  "  - process: {name: pa, user: alice}",
  "  - process: {name: pb}",
  "  - mmap: {process: pa, name: ra, pages: 4}",
  "  - mmap: {process: pb, name: rb, pages: 2}",
];

describe("processes and SVA", () => {
  it("sva-processes.yaml has two users, three processes, and every SVA op", () => {
    const spec = parseOk(readExample("sva-processes.yaml"));
    expect(spec.arch).toBe("both");
    expect(spec.users).toEqual([
      { name: "alice", pasidLimit: 1, loc: { line: 26, column: 5 } },
      { name: "bob", loc: { line: 28, column: 5 } },
    ]);
    const ops = new Set(spec.steps.map((s) => s.op));
    for (const op of [
      "process",
      "mmap",
      "munmap",
      "mprotect",
      "cpu-write",
      "bind",
      "unbind",
      "exit",
      "sva-dma",
      "enqcmd",
    ]) {
      expect(ops.has(op as StepSpec["op"]), op).toBe(true);
    }
    expect(spec.steps.filter((s) => s.op === "process")).toHaveLength(3);
  });

  it("every SVA op validates, with its defaults resolved", () => {
    const spec = parseOk(
      sva([
        ...PRELUDE,
        "  - mmap: {process: pa, name: ro, pages: 1, prot: r, expect: ENOMEM}",
        "  - mmap: {process: pa, name: guard, pages: 1, prot: none}",
        "  - munmap: {region: ra, page: 1, pages: 2}",
        "  - munmap: {region: ra}",
        "  - mprotect: {region: ra, page: 3, prot: r}",
        "  - mprotect: {region: ra, pages: 1, prot: rw, expect: ENOMEM}",
        "  - cpu-write: {region: ra}",
        "  - cpu-write: {region: ra, page: 2, pages: 1, expect: fault}",
        "  - bind: {device: wq0, process: pa}",
        "  - bind: {device: acc0, process: pb, expect: EBUSY}",
        "  - unbind: {device: wq0, process: pa}",
        "  - unbind: {device: wq0, process: pa, expect: ENOENT}",
        "  - exit: {process: pb}",
        "  - sva-dma: {device: acc0, region: ra, size: 64, op: write, expect: ok}",
        "  - sva-dma: {device: wq0, process: pb, region: ra, offset: 0x1010, size: 8, op: read}",
        "  - enqcmd: {device: wq0, src: ra, dst: ra, count: 4}",
        "  - enqcmd: {device: wq0, process: pb, src: rb, dst: rb, count: 2, expect: 0}",
      ]),
    );
    expect(spec.steps.map(({ loc: _, ...rest }) => rest)).toEqual([
      { op: "process", name: "pa", user: "alice" },
      { op: "process", name: "pb" },
      {
        op: "mmap",
        process: "pa",
        name: "ra",
        pages: 4,
        prot: PROT_READ | PROT_WRITE,
        expect: "ok",
      },
      {
        op: "mmap",
        process: "pb",
        name: "rb",
        pages: 2,
        prot: PROT_READ | PROT_WRITE,
        expect: "ok",
      },
      { op: "mmap", process: "pa", name: "ro", pages: 1, prot: PROT_READ, expect: "ENOMEM" },
      { op: "mmap", process: "pa", name: "guard", pages: 1, prot: PROT_NONE, expect: "ok" },
      { op: "munmap", region: "ra", page: 1, pages: 2 },
      { op: "munmap", region: "ra", page: 0, pages: 4 },
      { op: "mprotect", region: "ra", page: 3, pages: 1, prot: PROT_READ, expect: "ok" },
      {
        op: "mprotect",
        region: "ra",
        page: 0,
        pages: 1,
        prot: PROT_READ | PROT_WRITE,
        expect: "ENOMEM",
      },
      { op: "cpu-write", region: "ra", page: 0, pages: 4, expect: "ok" },
      { op: "cpu-write", region: "ra", page: 2, pages: 1, expect: "fault" },
      { op: "bind", device: "wq0", process: "pa", expect: "ok" },
      { op: "bind", device: "acc0", process: "pb", expect: "EBUSY" },
      { op: "unbind", device: "wq0", process: "pa", expect: "ok" },
      { op: "unbind", device: "wq0", process: "pa", expect: "ENOENT" },
      { op: "exit", process: "pb" },
      {
        op: "sva-dma",
        device: "acc0",
        process: "pa",
        region: "ra",
        offset: 0,
        size: 64,
        access: "write",
        expect: "ok",
      },
      {
        op: "sva-dma",
        device: "wq0",
        process: "pb",
        region: "ra",
        offset: 0x1010,
        size: 8,
        access: "read",
      },
      { op: "enqcmd", device: "wq0", process: "pa", src: "ra", dst: "ra", count: 4, expect: 4 },
      { op: "enqcmd", device: "wq0", process: "pb", src: "rb", dst: "rb", count: 2, expect: 0 },
    ]);
    expect(spec.users).toEqual([
      { name: "alice", pasidLimit: 2, loc: { line: 12, column: 5 } },
      { name: "bob", loc: { line: 13, column: 5 } },
    ]);
  });

  it("users may come after the steps, and a file without users has none", () => {
    expect(parseOk(sva(["  - process: {name: pa}"], [])).users).toEqual([]);
    const text = sva(["  - process: {name: pa, user: bob}"], []);
    const moved = `${text}users:\n  - {name: bob, pasid-limit: 0x100000}\n`;
    expect(parseOk(moved).users).toEqual([
      { name: "bob", pasidLimit: 2 ** 20, loc: { line: 14, column: 5 } },
    ]);
  });

  it("a region named in a repeat is visible after it, and an offset takes sizes", () => {
    const spec = parseOk(
      sva([
        "  - process: {name: pa}",
        "  - repeat: {count: 2, steps: [{mmap: {process: pa, name: r, pages: 8}}]}",
        "  - sva-dma: {device: acc0, region: r, offset: 28KiB, size: 4KiB, op: read}",
      ]),
    );
    expect(spec.steps[2]).toMatchObject({ offset: 28 << 10, size: 4096, process: "pa" });
  });
});

describe("errors: processes and SVA", () => {
  const steps = (...lines: string[]) => sva([...PRELUDE, ...lines]);
  runCases([
    {
      rule: "users that is not a list is bad-type",
      text: sva(["  - process: {name: pa}"], ["users: alice"]),
      code: "bad-type",
      field: "users",
      at: "alice",
      message: 'expected a list, got "alice"',
    },
    {
      rule: "an empty users list is out-of-range",
      text: sva(["  - process: {name: pa}"], ["users: []"]),
      code: "out-of-range",
      field: "users",
      at: "[]",
      message: "expected 1 to 64 items, got 0",
    },
    {
      rule: "a user listed twice is duplicate-name",
      text: sva(["  - process: {name: pa}"], ["users:", "  - name: u1", "  - name: u1"]),
      code: "duplicate-name",
      field: "users[1].name",
      at: "u1",
      nth: 2,
      message: 'user "u1" is already defined on line 12',
    },
    {
      rule: "a user name outside the name pattern is bad-value",
      text: sva(["  - process: {name: pa}"], ["users:", "  - name: Alice"]),
      code: "bad-value",
      field: "users[0].name",
      at: "Alice",
    },
    {
      rule: "a PASID limit beyond the PASID space is out-of-range",
      text: sva(["  - process: {name: pa}"], ["users:", "  - {name: u1, pasid-limit: 1048577}"]),
      code: "out-of-range",
      field: "users[0].pasid-limit",
      at: "1048577",
      message: "expected an integer in 0..2^20, got 1048577",
    },
    {
      rule: "a negative PASID limit is out-of-range",
      text: sva(["  - process: {name: pa}"], ["users:", "  - {name: u1, pasid-limit: -1}"]),
      code: "out-of-range",
      field: "users[0].pasid-limit",
      at: "-1",
    },
    {
      rule: "an unknown field of a user is unknown-field",
      text: sva(["  - process: {name: pa}"], ["users:", "  - {name: u1, limit: 3}"]),
      code: "unknown-field",
      field: "users[0].limit",
      at: "limit",
      message: 'unknown field "limit" (expected one of: name, pasid-limit)',
    },
    {
      rule: "a process of an unknown user is unknown-name",
      text: sva(["  - process: {name: pa, user: carol}"]),
      code: "unknown-name",
      field: "steps[0].process.user",
      at: "carol",
      message: 'unknown user "carol" (defined so far: alice, bob)',
    },
    {
      rule: "a process with a user in a file without users is unknown-name",
      text: sva(["  - process: {name: pa, user: alice}"], []),
      code: "unknown-name",
      field: "steps[0].process.user",
      at: "alice",
      message: 'unknown user "alice" (no user is defined before this point)',
    },
    {
      rule: "a process started twice is duplicate-name",
      text: steps("  - process: {name: pa}"),
      code: "duplicate-name",
      field: "steps[4].process.name",
      at: "pa}",
      message: 'process "pa" is already defined on line 15',
    },
    {
      rule: "a process without a name is missing-field",
      text: sva(["  - process: {user: bob}"]),
      code: "missing-field",
      field: "steps[0].process.name",
      at: "{user: bob}",
    },
    {
      rule: "an mmap of a process not started before is unknown-name",
      text: sva(["  - mmap: {process: pz, name: r, pages: 1}", "  - process: {name: pz}"]),
      code: "unknown-name",
      field: "steps[0].mmap.process",
      at: "pz",
      message: 'unknown process "pz" (no process is defined before this point)',
    },
    {
      rule: "an mmap protection other than r, rw or none is bad-value",
      text: steps("  - mmap: {process: pa, name: r2, pages: 1, prot: w}"),
      code: "bad-value",
      field: "steps[4].mmap.prot",
      at: "w}",
      message: 'expected one of r, rw, none, got "w"',
    },
    {
      rule: "an mmap of no pages is out-of-range",
      text: steps("  - mmap: {process: pa, name: r2, pages: 0}"),
      code: "out-of-range",
      field: "steps[4].mmap.pages",
      at: "0}",
      message: "expected an integer in 1..0x100000, got 0",
    },
    {
      rule: "an mmap larger than the machine's memory is out-of-range",
      text: steps("  - mmap: {process: pa, name: r2, pages: 65537}"),
      code: "out-of-range",
      field: "steps[4].mmap.pages",
      at: "65537",
      message: "262148 KiB is more than the machine's memory (256 MiB)",
    },
    {
      rule: "a region named twice is duplicate-name, across processes",
      text: steps("  - mmap: {process: pb, name: ra, pages: 1}"),
      code: "duplicate-name",
      field: "steps[4].mmap.name",
      at: "ra, pages: 1",
      message: 'region "ra" is already defined on line 17',
    },
    {
      rule: "an mmap expecting an errno it cannot return is bad-value",
      text: steps("  - mmap: {process: pa, name: r2, pages: 1, expect: EBUSY}"),
      code: "bad-value",
      field: "steps[4].mmap.expect",
      at: "EBUSY",
      message: 'expected one of ok, ENOMEM, got "EBUSY"',
    },
    {
      rule: "a munmap of a region never mapped is unknown-name",
      text: steps("  - munmap: {region: rz}"),
      code: "unknown-name",
      field: "steps[4].munmap.region",
      at: "rz",
      message: 'unknown region "rz" (defined so far: ra, rb)',
    },
    {
      rule: "a munmap from a page beyond the region is out-of-range at the page",
      text: steps("  - munmap: {region: ra, page: 4}"),
      code: "out-of-range",
      field: "steps[4].munmap.page",
      at: "4}",
      nth: 2,
      message: "region ra has 4 pages (0..3), got page 4",
    },
    {
      rule: "a munmap running past the region's end is out-of-range at the pages",
      text: steps("  - munmap: {region: ra, page: 3, pages: 3}"),
      code: "out-of-range",
      field: "steps[4].munmap.pages",
      at: "3}",
      message: "pages 3..5 end beyond region ra (4 pages)",
    },
    {
      rule: "a munmap of no pages is out-of-range",
      text: steps("  - munmap: {region: ra, pages: 0}"),
      code: "out-of-range",
      field: "steps[4].munmap.pages",
      at: "0}",
    },
    {
      rule: "an mprotect without prot is missing-field",
      text: steps("  - mprotect: {region: ra, page: 1}"),
      code: "missing-field",
      field: "steps[4].mprotect.prot",
      at: "{region: ra, page: 1}",
      message: 'missing field "prot"',
    },
    {
      rule: "an mprotect to a protection other than r, rw or none is bad-value",
      text: steps("  - mprotect: {region: ra, prot: rwx}"),
      code: "bad-value",
      field: "steps[4].mprotect.prot",
      at: "rwx",
    },
    {
      rule: "an mprotect past the region's end is out-of-range",
      text: steps("  - mprotect: {region: ra, page: 3, pages: 2, prot: r}"),
      code: "out-of-range",
      field: "steps[4].mprotect.pages",
      at: "2, prot",
      message: "pages 3..4 end beyond region ra (4 pages)",
    },
    {
      rule: "a cpu-write expecting an errno is bad-value (it is ok or fault)",
      text: steps("  - cpu-write: {region: ra, expect: EFAULT}"),
      code: "bad-value",
      field: "steps[4].cpu-write.expect",
      at: "EFAULT",
      message: 'expected one of ok, fault, got "EFAULT"',
    },
    {
      rule: "a cpu-write from a page beyond the region is out-of-range",
      text: steps("  - cpu-write: {region: rb, page: 3}"),
      code: "out-of-range",
      field: "steps[4].cpu-write.page",
      at: "3}",
      message: "region rb has 2 pages (0..1), got page 3",
    },
    {
      rule: "a bind of a device without PASIDs is bad-value at the device",
      text: steps("  - bind: {device: nic0, process: pa}"),
      code: "bad-value",
      field: "steps[4].bind.device",
      at: "nic0, process",
      message: "bind needs a device that emits PASIDs; nic0 has pasid-bits 0",
    },
    {
      rule: "a bind of an unknown device is unknown-name",
      text: steps("  - bind: {device: gpu0, process: pa}"),
      code: "unknown-name",
      field: "steps[4].bind.device",
      at: "gpu0",
      message: 'unknown device "gpu0" (devices: nic0, wq0, acc0)',
    },
    {
      rule: "a bind of an unknown process is unknown-name",
      text: steps("  - bind: {device: wq0, process: pz}"),
      code: "unknown-name",
      field: "steps[4].bind.process",
      at: "pz",
      message: 'unknown process "pz" (defined so far: pa, pb)',
    },
    {
      rule: "a bind expecting an errno the bind does not return is bad-value",
      text: steps("  - bind: {device: wq0, process: pa, expect: ENOENT}"),
      code: "bad-value",
      field: "steps[4].bind.expect",
      at: "ENOENT",
      message:
        'expected one of ok, EBUSY, ENODEV, EINVAL, ENOSPC, EOVERFLOW, ENOMEM, EOPNOTSUPP, got "ENOENT"',
    },
    {
      rule: "an unbind of a device without PASIDs is bad-value",
      text: steps("  - unbind: {device: nic0, process: pa}"),
      code: "bad-value",
      field: "steps[4].unbind.device",
      at: "nic0, process",
    },
    {
      rule: "an unbind expecting an errno other than ENOENT is bad-value",
      text: steps("  - unbind: {device: wq0, process: pa, expect: EBUSY}"),
      code: "bad-value",
      field: "steps[4].unbind.expect",
      at: "EBUSY",
      message: 'expected one of ok, ENOENT, got "EBUSY"',
    },
    {
      rule: "an exit of an unknown process is unknown-name",
      text: steps("  - exit: {process: pz}"),
      code: "unknown-name",
      field: "steps[4].exit.process",
      at: "pz",
    },
    {
      rule: "an sva-dma by a device without PASIDs is bad-value",
      text: steps("  - sva-dma: {device: nic0, region: ra, size: 8, op: read}"),
      code: "bad-value",
      field: "steps[4].sva-dma.device",
      at: "nic0, region",
      message: "sva-dma needs a device that emits PASIDs; nic0 has pasid-bits 0",
    },
    {
      rule: "an sva-dma in an unknown region is unknown-name",
      text: steps("  - sva-dma: {device: acc0, region: rz, size: 8, op: read}"),
      code: "unknown-name",
      field: "steps[4].sva-dma.region",
      at: "rz",
    },
    {
      rule: "an sva-dma for an unknown process is unknown-name",
      text: steps("  - sva-dma: {device: acc0, process: pz, region: ra, size: 8, op: read}"),
      code: "unknown-name",
      field: "steps[4].sva-dma.process",
      at: "pz",
    },
    {
      rule: "an sva-dma offset at or beyond the region's end is out-of-range at the offset",
      text: steps("  - sva-dma: {device: acc0, region: rb, offset: 8KiB, size: 8, op: read}"),
      code: "out-of-range",
      field: "steps[4].sva-dma.offset",
      at: "8KiB",
      message: "offset 0x2000 is beyond region rb (8 KiB)",
    },
    {
      rule: "an sva-dma running past the region's end is out-of-range at the size",
      text: steps("  - sva-dma: {device: acc0, region: rb, offset: 0x1ff8, size: 16, op: write}"),
      code: "out-of-range",
      field: "steps[4].sva-dma.size",
      at: "16, op",
      message: "16 bytes at offset 0x1ff8 ends beyond region rb (8 KiB)",
    },
    {
      rule: "an sva-dma of no bytes is out-of-range",
      text: steps("  - sva-dma: {device: acc0, region: rb, size: 0, op: read}"),
      code: "out-of-range",
      field: "steps[4].sva-dma.size",
      at: "0, op",
    },
    {
      rule: "an sva-dma without op is missing-field",
      text: steps("  - sva-dma: {device: acc0, region: rb, size: 8}"),
      code: "missing-field",
      field: "steps[4].sva-dma.op",
      at: "{device: acc0, region: rb, size: 8}",
    },
    {
      rule: "an sva-dma expecting an errno is bad-value (it is ok or fault)",
      text: steps("  - sva-dma: {device: acc0, region: rb, size: 8, op: read, expect: EFAULT}"),
      code: "bad-value",
      field: "steps[4].sva-dma.expect",
      at: "EFAULT",
    },
    {
      rule: "an enqcmd on a copy engine is bad-value",
      text: steps("  - enqcmd: {device: acc0, src: ra, dst: ra, count: 1}"),
      code: "bad-value",
      field: "steps[4].enqcmd.device",
      at: "acc0, src",
      message: "enqcmd needs a work-queue device; acc0 is a copy-engine",
    },
    {
      rule: "an enqcmd with another process's source is bad-value at src",
      text: steps("  - enqcmd: {device: wq0, process: pa, src: rb, dst: ra, count: 1}"),
      code: "bad-value",
      field: "steps[4].enqcmd.src",
      at: "rb, dst",
      message: "region rb is pb's, not pa's: a process's descriptors name its own memory",
    },
    {
      rule: "an enqcmd with another process's destination is bad-value at dst",
      text: steps("  - enqcmd: {device: wq0, src: ra, dst: rb, count: 1}"),
      code: "bad-value",
      field: "steps[4].enqcmd.dst",
      at: "rb, count",
      message: "region rb is pb's, not pa's: a process's descriptors name its own memory",
    },
    {
      rule: "an enqcmd of more descriptors than the regions have pages is out-of-range",
      text: steps("  - enqcmd: {device: wq0, src: rb, dst: rb, count: 3}"),
      code: "out-of-range",
      field: "steps[4].enqcmd.count",
      at: "3}",
      message: "descriptor i copies page i of src to page i of dst: at most 2 here, got 3",
    },
    {
      rule: "an enqcmd expecting more completions than descriptors is out-of-range",
      text: steps("  - enqcmd: {device: wq0, src: ra, dst: ra, count: 2, expect: 3}"),
      code: "out-of-range",
      field: "steps[4].enqcmd.expect",
      at: "3}",
      message: "expected 0..2 completed descriptors (the count), got 3",
    },
    {
      rule: "an unknown field of an SVA op is unknown-field",
      text: steps("  - bind: {device: wq0, process: pa, pasid: 1}"),
      code: "unknown-field",
      field: "steps[4].bind.pasid",
      at: "pasid: 1",
      message: 'unknown field "pasid" (expected one of: device, process, expect)',
    },
    {
      rule: "a region used inside a repeat before its mmap is unknown-name",
      text: sva([
        "  - process: {name: pa}",
        "  - repeat: {count: 2, steps: [{cpu-write: {region: r}}, {mmap: {process: pa, name: r, pages: 1}}]}",
      ]),
      code: "unknown-name",
      field: "steps[1].repeat.steps[0].cpu-write.region",
      at: "r}}",
    },
  ]);
});

describe("ScenarioFileError", () => {
  it("prints file:line:column: field: message", () => {
    const err = new ScenarioFileError("a.yaml", 12, 11, "steps[3].map.size", "bad-value", "no");
    expect(err.toString()).toBe("a.yaml:12:11: steps[3].map.size: no");
    expect(`${err}`).toBe("a.yaml:12:11: steps[3].map.size: no");
  });

  it("keeps the YAML parser's error as the cause of a yaml-syntax error", () => {
    const err = parseErr("a: [");
    expect(err.code).toBe("yaml-syntax");
    expect(err.cause).toBeInstanceOf(Error);
  });

  it("every error code is produced by some input", () => {
    const samples: Record<Exclude<ScenarioErrorCode, "unavailable">, string> = {
      "yaml-syntax": "a: b: c",
      unsupported: "version: 3",
      "bad-type": "",
      "bad-value": vtd().replace("arch: vtd", "arch: x"),
      "out-of-range": vtd().replace("arch: vtd", "arch: vtd\nseed: -1"),
      "missing-field": "version: 1",
      "unknown-field": "version: 1\nx: 1",
      "duplicate-field": "version: 1\nscenario: a\nscenario: a",
      "unknown-name": vtd(["  - unplug: {device: x}"]),
      "duplicate-name": vtd(["  - pasid-alloc: {name: a}", "  - pasid-alloc: {name: a}"]),
    };
    // `unavailable` is the CLI's: a valid file whose architecture only runs a built-in scenario.
    const parserCodes = SCENARIO_ERROR_CODES.filter((c) => c !== "unavailable");
    expect(Object.keys(samples).sort()).toEqual([...parserCodes].sort());
    for (const code of parserCodes)
      expect(parseErr(samples[code as keyof typeof samples]).code).toBe(code);
  });
});

describe("never throws", () => {
  /** Every result is a spec or a well-formed error inside the text. */
  function wellFormed(text: string): boolean {
    const result = parseScenarioFile(text, FILE);
    if (!(result instanceof ScenarioFileError))
      return result.version === 1 && result.steps.length > 0;
    const lines = text.split(/\r\n|\r|\n/);
    return (
      SCENARIO_ERROR_CODES.includes(result.code) &&
      result.line >= 1 &&
      result.line <= lines.length + 1 &&
      result.column >= 1 &&
      result.field.length > 0 &&
      !/[\r\n]/.test(result.toString())
    );
  }

  test.prop([fc.string({ maxLength: 200 })], { seed: 0x5ce4, numRuns: 500 })(
    "random strings give a spec or an error",
    (text) => {
      expect(wellFormed(text)).toBe(true);
    },
  );

  const TOKENS = [
    ":",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\n",
    "  ",
    "\t",
    "#",
    "&a ",
    "*a",
    "!!str ",
    '"',
    "'",
    "0x",
    "-1",
    "4KiB",
    "1e9",
    "null",
    "true",
    "default",
    "nic0",
    "d1",
    "p1",
    "repeat: {count: 2, steps: [",
    "map:",
    "pasid:",
    "size: ",
  ];
  const mutation = fc.oneof(
    fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), len: fc.nat({ max: 12 }) }),
    fc.record({
      kind: fc.constant("insert" as const),
      at: fc.nat(),
      text: fc.constantFrom(...TOKENS),
    }),
    fc.record({
      kind: fc.constant("noise" as const),
      at: fc.nat(),
      text: fc.string({ maxLength: 4 }),
    }),
    fc.record({ kind: fc.constant("swap-lines" as const), at: fc.nat(), len: fc.nat({ max: 30 }) }),
  );

  interface Mutation {
    readonly kind: "delete" | "insert" | "noise" | "swap-lines";
    readonly at: number;
    readonly len?: number;
    readonly text?: string;
  }

  function mutate(text: string, muts: readonly Mutation[]): string {
    let s = text;
    for (const m of muts) {
      const at = m.at % (s.length + 1);
      if (m.kind === "delete") s = s.slice(0, at) + s.slice(at + (m.len ?? 0));
      else if (m.kind === "insert" || m.kind === "noise")
        s = s.slice(0, at) + (m.text ?? "") + s.slice(at);
      else {
        const lines = s.split("\n");
        const i = m.at % lines.length;
        const j = (m.at + (m.len ?? 0)) % lines.length;
        [lines[i], lines[j]] = [lines[j] as string, lines[i] as string];
        s = lines.join("\n");
      }
    }
    return s;
  }

  test.prop(
    [
      fc.constantFrom(...EXAMPLES, "vtd", "mock"),
      fc.array(mutation, { minLength: 1, maxLength: 4 }),
    ],
    { seed: 0x9a55, numRuns: 1500 },
  )("mutations of valid files give a spec or an error", (which, muts) => {
    const base = which === "vtd" ? vtd() : which === "mock" ? mock() : readExample(which);
    expect(wellFormed(mutate(base, muts))).toBe(true);
  });
});
