// Tests of the `iommu-sim` command line: exit codes, output streams, and the script entry points.

import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { LEGACY_VTD_CAPS, vtdCapValue, vtdEcapValue } from "@iommu-sim/intel-vtd/hw";
import { xlateFresh } from "@iommu-sim/intel-vtd/testing";
import { IOMMU_READ } from "@iommu-sim/iommu-core";
import { PhysMemory, toHex } from "@iommu-sim/iommu-core/platform";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  fsTable,
  machine,
  mapRun,
  type RefRun,
  RW,
  rtaddrOf,
  SZ_1G,
  SZ_2M,
  SZ_4K,
  saveImage,
  ssTable,
  tempDir,
} from "../test/vtd-images.js";
import { EXIT, main } from "./cli.js";
import { decodeVtd, formatVtdDecode, type VtdDecodeDocument } from "./decode/vtd-decode.js";
import { type Scenario, scenarioKey, scenarios } from "./scenario.js";
import { HARNESS_VERSION } from "./version.js";

const harnessDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const repoRoot = path.resolve(harnessDir, "../..");

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `iommu-sim ...args` in-process, capturing both streams. */
async function cli(...args: string[]): Promise<Result> {
  let stdout = "";
  let stderr = "";
  const code = await main(["node", "iommu-sim", ...args], {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
  });
  return { code, stdout, stderr };
}

/** Assert that the run was refused as bad usage: exit 2, one line on stderr, nothing on stdout. */
function expectUsageError(r: Result, pattern: RegExp): void {
  expect(r.code).toBe(EXIT.USAGE);
  expect(r.stdout).toBe("");
  expect(r.stderr).toMatch(/^iommu-sim: [^\n]+\n$/);
  expect(r.stderr).toMatch(pattern);
}

const testScenarios: string[] = [];

function register(scenario: Scenario): void {
  const key = scenarioKey(scenario.name, scenario.arch);
  scenarios.set(key, scenario);
  testScenarios.push(key);
}

afterEach(() => {
  for (const name of testScenarios.splice(0)) scenarios.delete(name);
});

class ModelBug extends Error {
  override readonly name = "ModelBug";
}

describe("iommu-sim run", () => {
  it("runs the default scenario, prints the summary and exits 0", async () => {
    const r = await cli("run");
    expect(r.code).toBe(EXIT.OK);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/^scenario {4}default$/m);
    expect(r.stdout).toMatch(/^arch {8}vtd$/m);
    expect(r.stdout).toMatch(/^seed {8}1$/m);
    expect(r.stdout).toMatch(/^violations {2}0$/m);
    expect(r.stdout).toMatch(/^operations {2}\d+$/m);
    expect(r.stdout).toMatch(/^DMAs {8}[1-9]\d*$/m);
    expect(r.stdout).toMatch(/^faults {6}[1-9]\d*$/m);
    expect(r.stdout).toMatch(/^checks {6}[1-9]\d* passed, 0 failed$/m);
  });

  it("--json prints exactly one JSON document with the report fields", async () => {
    const r = await cli("run", "--json", "--seed", "7");
    expect(r.code).toBe(EXIT.OK);
    expect(r.stderr).toBe("");
    expect(r.stdout.endsWith("\n")).toBe(true);
    expect(r.stdout.trimEnd().split("\n")).toHaveLength(1);
    const doc = JSON.parse(r.stdout);
    expect(Object.keys(doc)).toEqual([
      "version",
      "scenario",
      "arch",
      "seed",
      "ops",
      "dmas",
      "faults",
      "checks",
      "failures",
      "violations",
      "violationsTotal",
    ]);
    expect(doc).toMatchObject({
      version: HARNESS_VERSION,
      scenario: "default",
      arch: "vtd",
      seed: 7,
      checks: { failed: 0 },
      failures: [],
      violations: [],
      violationsTotal: 0,
    });
    expect(doc.ops).toBeGreaterThan(0);
    expect(doc.dmas).toBeGreaterThan(0);
    expect(doc.faults).toBeGreaterThan(0);
    expect(doc.checks.passed).toBeGreaterThan(0);
  });

  it("the same seed gives the same JSON, another seed may not", async () => {
    const a = await cli("run", "--json", "--seed", "12345");
    const b = await cli("run", "--json", "--seed", "12345");
    const c = await cli("run", "--json", "--seed", "12346");
    expect(a.stdout).toBe(b.stdout);
    expect(JSON.parse(c.stdout).seed).toBe(12346);
  });

  it("--trace prints every event of the run, in order, before the summary", async () => {
    const r = await cli("run", "--trace");
    expect(r.code).toBe(EXIT.OK);
    const lines = r.stdout.trimEnd().split("\n");
    const events = lines.filter((l) => l.startsWith("#"));
    expect(events.length).toBeGreaterThan(50);
    expect(events.map((l) => Number(l.slice(1, l.indexOf(" "))))).toEqual(events.map((_, i) => i));
    for (const kind of ["attach", "map", "unmap", "dma"]) {
      expect(events.some((l) => l.split(" ")[2] === kind)).toBe(true);
    }
    expect(events.some((l) => / dma .*status=fault/.test(l))).toBe(true);
    expect(lines[lines.length - 1]).toMatch(/^violations /);
    expect(lines.indexOf(events[events.length - 1])).toBeLessThan(
      lines.findIndex((l) => l.startsWith("scenario")),
    );
  });

  it("--trace --json adds the events to the one document, the same for the same seed", async () => {
    const a = await cli("run", "--trace", "--json", "--seed", "9");
    const b = await cli("run", "--trace", "--json", "--seed", "9");
    expect(a.stdout).toBe(b.stdout);
    const doc = JSON.parse(a.stdout);
    expect(Array.isArray(doc.trace)).toBe(true);
    expect(doc.trace[0]).toMatchObject({ kind: "attach", seq: 0, time: 0 });
    const dmas = doc.trace.filter((e: { kind: string }) => e.kind === "dma");
    expect(dmas).toHaveLength(doc.dmas);
    // Logical time moves by one per DMA.
    expect(dmas[dmas.length - 1].time).toBe(doc.dmas - 1);
    const plain = JSON.parse((await cli("run", "--json", "--seed", "9")).stdout);
    expect(plain.trace).toBeUndefined();
  });

  it("--seed takes decimal and 0x hex up to 2^32-1", async () => {
    for (const [text, seed] of [
      ["0", 0],
      ["4294967295", 0xffffffff],
      ["0xFFFFFFFF", 0xffffffff],
      ["0x10", 16],
    ] as const) {
      const r = await cli("run", "--json", "--seed", text);
      expect(r.code).toBe(EXIT.OK);
      expect(JSON.parse(r.stdout).seed).toBe(seed);
    }
  });

  it("a garbage --seed is bad usage: exit 2, one line naming the option", async () => {
    const r = await cli("run", "--seed", "abc");
    expectUsageError(r, /^iommu-sim: --seed: expected an unsigned 32-bit integer, got "abc"\n$/);
    for (const bad of ["-1", "4294967296", "0x100000000", "1.5", "1e3", "0x", " 1", ""]) {
      expectUsageError(await cli("run", "--seed", bad), /--seed: expected an unsigned 32-bit/);
    }
  });

  it("an unknown option is bad usage: exit 2, one line", async () => {
    expectUsageError(await cli("run", "--sed", "1"), /^iommu-sim: unknown option '--sed'/);
  });

  it("a missing option value, an extra operand, a missing or unknown command are bad usage", async () => {
    expectUsageError(await cli("run", "--seed"), /argument missing/);
    expectUsageError(await cli("run", "a.yaml", "b.yaml"), /too many arguments/);
    expectUsageError(await cli(), /missing command/);
    expectUsageError(await cli("frobnicate"), /unknown command 'frobnicate'/);
  });

  it("an unknown scenario is bad usage and lists the known ones", async () => {
    expectUsageError(
      await cli("run", "--scenario", "nope"),
      /^iommu-sim: --scenario: unknown scenario 'nope' \(known: .*default.*\)\n$/,
    );
  });

  it("--arch vtd is the default; smmu, both and mock run; an unknown arch is refused", async () => {
    const vtd = await cli("run", "--arch", "vtd", "--json");
    expect(vtd.code).toBe(EXIT.OK);
    expect(JSON.parse(vtd.stdout).arch).toBe("vtd");
    const smmu = await cli("run", "--arch", "smmu", "--json");
    expect(smmu.code).toBe(EXIT.OK);
    expect(JSON.parse(smmu.stdout).arch).toBe("smmu");
    const mock = await cli("run", "--arch", "mock", "--json");
    expect(mock.code).toBe(EXIT.OK);
    expect(JSON.parse(mock.stdout).arch).toBe("mock");
    expectUsageError(await cli("run", "--arch", "x86"), /--arch: unknown arch "x86"/);
  });

  it("--arch both runs the scenario on vtd and smmu and compares every DMA", async () => {
    const both = await cli("run", "--arch", "both", "--json");
    expect(both.code).toBe(EXIT.OK);
    const doc = JSON.parse(both.stdout);
    expect(doc.arch).toBe("both");
    expect(doc.runs.map((r: { arch: string }) => r.arch)).toEqual(["vtd", "smmu"]);
    expect(doc.compare.dmas).toBe(doc.runs[0].dmas);
    expect(doc.compare.differencesTotal).toBe(0);
    const text = await cli("run", "--arch", "both");
    expect(text.stdout).toMatch(/^compare {5}\d+ DMAs on vtd and smmu, 0 differences$/m);
    expectUsageError(
      await cli("run", "--arch", "both", "--dump", "/tmp/x"),
      /--dump: not with --arch both/,
    );
    register({ name: "test-on-vtd-only", arch: "vtd", description: "", run: () => {} });
    expectUsageError(
      await cli("run", "--arch", "both", "--scenario", "test-on-vtd-only"),
      /scenario 'test-on-vtd-only' does not run on both vtd and smmu/,
    );
  });

  it("a scenario for another arch than --arch is bad usage", async () => {
    register({ name: "test-on-mock", arch: "mock", description: "", run: () => {} });
    expectUsageError(
      await cli("run", "--scenario", "test-on-mock"),
      /scenario 'test-on-mock' runs on arch 'mock', not 'vtd'/,
    );
  });

  it("a failed check exits 1 and is listed in the summary and the JSON", async () => {
    register({
      name: "test-failing",
      arch: "vtd",
      description: "one check passes, one fails",
      run(ctx) {
        ctx.countOp(3);
        ctx.countDma();
        ctx.countFault(2);
        ctx.check("holds", true);
        ctx.check("breaks", false, "DMA reached unmapped memory");
      },
    });
    const human = await cli("run", "--scenario", "test-failing");
    expect(human.code).toBe(EXIT.CHECK_FAILED);
    expect(human.stderr).toBe("");
    expect(human.stdout).toMatch(/^checks {6}1 passed, 1 failed$/m);
    expect(human.stdout).toMatch(/^FAILED {6}breaks: DMA reached unmapped memory$/m);

    const json = await cli("run", "--scenario", "test-failing", "--json");
    expect(json.code).toBe(EXIT.CHECK_FAILED);
    expect(JSON.parse(json.stdout)).toMatchObject({
      scenario: "test-failing",
      ops: 3,
      dmas: 1,
      faults: 2,
      checks: { passed: 1, failed: 1 },
      failures: [{ check: "breaks", message: "DMA reached unmapped memory" }],
    });
  });

  it("a scenario that throws is an internal error: exit 3, one line, the stack with --verbose", async () => {
    register({
      name: "test-bug",
      arch: "vtd",
      description: "throws",
      run() {
        throw new ModelBug("frame 12 freed twice");
      },
    });
    const r = await cli("run", "--scenario", "test-bug", "--json");
    expect(r.code).toBe(EXIT.INTERNAL);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe("iommu-sim: internal error: frame 12 freed twice\n");

    const verbose = await cli("run", "--scenario", "test-bug", "--verbose");
    expect(verbose.code).toBe(EXIT.INTERNAL);
    const lines = verbose.stderr.trimEnd().split("\n");
    expect(lines[0]).toBe("iommu-sim: internal error: frame 12 freed twice");
    expect(lines[1]).toBe("ModelBug: frame 12 freed twice");
    expect(lines.length).toBeGreaterThan(2);
  });

  it("an exception of another kind is an internal error named by its kind", async () => {
    register({
      name: "test-type-error",
      arch: "vtd",
      description: "async throw",
      async run() {
        throw new TypeError("x is undefined");
      },
    });
    const r = await cli("run", "--scenario", "test-type-error");
    expect(r.code).toBe(EXIT.INTERNAL);
    expect(r.stderr).toBe("iommu-sim: internal error: TypeError: x is undefined\n");
  });

  it("--inject makes the VT-d driver skip a step: exit 1, the violation in the summary and in --json violations[]", async () => {
    const human = await cli("run", "--inject", "skip-iotlb-flush");
    expect(human.code).toBe(EXIT.CHECK_FAILED);
    expect(human.stdout).toMatch(/^violations {2}[1-9]\d*$/m);
    expect(human.stdout).toMatch(
      /^VIOLATION {3}stale-translation at t=\d+: nic0 read at 0x[0-9a-f]+ reached 0x[0-9a-f]+ through a stale iotlb entry of dmar0; .*missing: PASID-based IOTLB invalidation \(type 6\)/m,
    );
    const json = await cli("run", "--inject", "early-pasid-free", "--json");
    expect(json.code).toBe(EXIT.CHECK_FAILED);
    const doc = JSON.parse(json.stdout);
    expect(doc.violations[0]).toMatchObject({
      kind: "id-reuse",
      id: { space: "pasid", unit: null, value: 2 },
      missingInvalidation: { descriptor: "PASID-cache invalidation (type 7)" },
    });
    expect(doc.violations[0].history.length).toBeGreaterThan(2);
    const clean = await cli("run", "--json");
    expect(JSON.parse(clean.stdout).violations).toEqual([]);
  });

  it("a bad --inject is bad usage naming the known steps; the mock has none", async () => {
    expectUsageError(
      await cli("run", "--inject", "skip-everything"),
      /^iommu-sim: --inject: unknown step "skip-everything" for arch 'vtd' \(known: skip-iotlb-flush, skip-pasid-cache-flush, skip-devtlb-flush, early-pasid-free, early-did-reuse, skip-notifier-flush, skip-atc-on-notifier, free-pasid-on-unbind\)\n$/,
    );
    expectUsageError(
      await cli("run", "--arch", "mock", "--inject", "skip-iotlb-flush"),
      /--inject: arch 'mock' has no injectable driver steps/,
    );
  });

  it("runs a scenario file: the file's seed unless --seed, its name in the report", async () => {
    const file = path.join(harnessDir, "scenarios/sva-style-pasids.yaml");
    const r = await cli("run", file, "--json");
    expect(r.code).toBe(EXIT.OK);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ scenario: "sva-style-pasids", arch: "vtd", violations: [] });
    expect(JSON.parse((await cli("run", file, "--json", "--seed", "3")).stdout).seed).toBe(3);
    const twoTenants = path.join(harnessDir, "scenarios/two-tenants.yaml");
    const injected = await cli(
      "run",
      twoTenants,
      "--arch",
      "vtd",
      "--inject",
      "skip-iotlb-flush",
      "--json",
    );
    expect(injected.code).toBe(EXIT.CHECK_FAILED);
    expect(JSON.parse(injected.stdout).violations[0].kind).toBe("stale-translation");
    // A vtd file on SMMUv3, and on both.
    const smmu = await cli("run", file, "--arch", "smmu", "--json");
    expect(smmu.code).toBe(EXIT.OK);
    expect(JSON.parse(smmu.stdout).arch).toBe("smmu");
    const both = await cli("run", file, "--arch", "both", "--json");
    expect(both.code).toBe(EXIT.OK);
    expect(JSON.parse(both.stdout).compare.differencesTotal).toBe(0);
  });

  it("a file with arch both runs on both by default, or on the one --arch picks", async () => {
    const file = path.join(harnessDir, "scenarios/two-tenants.yaml");
    const r = await cli("run", file, "--json");
    expect(r.code).toBe(EXIT.OK);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ arch: "both", scenario: "two-tenants", seed: 7 });
    expect(doc.runs.map((x: { arch: string }) => x.arch)).toEqual(["vtd", "smmu"]);
    const one = await cli("run", file, "--arch", "smmu", "--json");
    expect(JSON.parse(one.stdout)).toMatchObject({ arch: "smmu", seed: 7, violations: [] });
    const injected = await cli("run", file, "--inject", "torn-ste-write", "--json");
    expect(injected.code).toBe(EXIT.CHECK_FAILED);
    const runs = JSON.parse(injected.stdout).runs;
    expect(runs[0].violationsTotal).toBe(0);
    expect(runs[1].violationsTotal).toBeGreaterThanOrEqual(0);
    const legacy = path.join(harnessDir, "scenarios/legacy-two-units.yaml");
    expectUsageError(
      await cli("run", legacy, "--arch", "both"),
      /legacy-two-units\.yaml:\d+:\d+: unit dmar0 is in legacy mode, which only VT-d has: the file cannot run on arch 'both' \[bad-value\]/,
    );
  });

  it("a bad scenario file is one line naming the file, line, column and field, with its code", async () => {
    const tmp = tempDir();
    const dir = tmp.dir;
    const file = path.join(dir, "bad.yaml");
    writeFileSync(
      file,
      'version: 1\nscenario: bad\narch: vtd\nmachine:\n  units:\n    - name: dmar0\n  devices:\n    - { name: nic0, bdf: "00:01.0" }\nsteps:\n  - map: { domain: nowhere, iova: 0x1000, size: 4KiB }\n',
    );
    expectUsageError(
      await cli("run", file),
      /^iommu-sim: .*bad\.yaml:10:\d+: steps\[0\]\.map\.domain: .* \[unknown-name\]\n$/,
    );
    expectUsageError(
      await cli("run", path.join(dir, "missing.yaml")),
      /missing\.yaml: cannot read the scenario file \(ENOENT\)/,
    );
    expectUsageError(
      await cli("run", file, "--scenario", "default"),
      /--scenario: not with a scenario file/,
    );
    expectUsageError(
      await cli("run", path.join(harnessDir, "scenarios/two-tenants.yaml"), "--arch", "mock"),
      /--arch: the scenario file runs on arch 'both', not 'mock'/,
    );
    const mockFile = path.join(dir, "mock.yaml");
    writeFileSync(
      mockFile,
      'version: 1\nscenario: m\narch: mock\nmachine:\n  devices:\n    - { name: nic0, bdf: "00:01.0" }\nsteps:\n  - domain: { name: d1 }\n',
    );
    expectUsageError(
      await cli("run", mockFile),
      /mock\.yaml:3:7: arch: scenario files run on vtd, smmu or both .*\[unavailable\]/,
    );
    tmp.cleanup();
  });

  it("fuzz: seeded random runs under the oracle, exit 0 when clean and 1 with the first violation and the operations before it", async () => {
    const clean = await cli("fuzz", "--runs", "3", "--ops", "200", "--mode", "scalable");
    expect(clean.code).toBe(EXIT.OK);
    expect(clean.stdout).toMatch(/^fuzz {8}3 runs of 200 operations \(\d+ DMAs\), seeds 1\.\.3$/m);
    expect(clean.stdout).toMatch(/^violations {2}0 run\(s\) with violations$/m);
    const bad = await cli(
      "fuzz",
      "--runs",
      "2",
      "--ops",
      "300",
      "--mode",
      "scalable",
      "--inject",
      "skip-devtlb-flush",
    );
    expect(bad.code).toBe(EXIT.CHECK_FAILED);
    expect(bad.stdout).toMatch(
      /^seed \d+ \(scalable\): \d+ violation\(s\), the first after operation \d+:$/m,
    );
    expect(bad.stdout).toMatch(/^ {2}stale-translation: .*stale device-tlb entry/m);
    expect(bad.stdout).toMatch(/^ {4}unmap domain#\d+ 0x[0-9a-f]+ \d+p$/m);
    const json = await cli(
      "fuzz",
      "--runs",
      "2",
      "--ops",
      "300",
      "--mode",
      "scalable",
      "--inject",
      "skip-devtlb-flush",
      "--json",
    );
    const doc = JSON.parse(json.stdout);
    expect(doc).toMatchObject({ arch: "vtd", runs: 2 });
    expect(doc.failedRuns).toBeGreaterThan(0);
    expect(doc.failures[0]).toMatchObject({ mode: "scalable" });
    expect(doc.failures[0].violations[0].kind).toBe("stale-translation");
  });

  it("fuzz: bad options are bad usage", async () => {
    expectUsageError(
      await cli("fuzz", "--runs", "0"),
      /^iommu-sim: --runs: expected an integer from 1 to 100000, got "0"\n$/,
    );
    expectUsageError(await cli("fuzz", "--ops", "x"), /--ops: expected an integer/);
    expectUsageError(
      await cli("fuzz", "--mode", "weird"),
      /--mode: expected scalable, legacy or both/,
    );
    expectUsageError(await cli("fuzz", "--cache", "huge"), /--cache: expected maximal or minimal/);
    expectUsageError(await cli("fuzz", "--arch", "mock"), /fuzz runs on vtd or smmu/);
    expectUsageError(await cli("fuzz", "--arch", "smmu", "--mode", "legacy"), /--mode: VT-d only/);
    expectUsageError(
      await cli("fuzz", "--arch", "smmu", "--caching-mode"),
      /--caching-mode: VT-d only/,
    );
    expectUsageError(
      await cli("fuzz", "--arch", "smmu", "--inject", "skip-iotlb-flush"),
      /unknown step "skip-iotlb-flush" for arch 'smmu'/,
    );
    expectUsageError(await cli("fuzz", "--inject", "nope"), /--inject: unknown step "nope"/);
    expectUsageError(
      await cli("fuzz", "--seed", "-1"),
      /--seed: expected an unsigned 32-bit integer/,
    );
  });

  it("--arch smmu --dump writes an ELF core and STRTAB_BASE/_CFG that decode smmu and translate smmu read", async () => {
    const tmp = tempDir();
    const file = tmp.file("smmu.elf");
    const r = await cli("run", "--arch", "smmu", "--dump", file, "--json");
    expect(r.code).toBe(EXIT.OK);
    const units = JSON.parse(r.stdout).dump.units as { register: string; value: string }[];
    expect(units.map((u) => u.register)).toEqual(["STRTAB_BASE", "STRTAB_BASE_CFG"]);
    const [base, cfg] = units.map((u) => u.value) as [string, string];
    const decoded = await cli(
      "decode",
      "smmu",
      "--image",
      file,
      "--strtab-base",
      base,
      "--strtab-cfg",
      cfg,
      "--json",
    );
    expect(decoded.code).toBe(EXIT.OK);
    const doc = JSON.parse(decoded.stdout);
    const translating = doc.devices.filter((d: { config: string }) => d.config !== "abort");
    expect(translating.map((d: { sid: number }) => d.sid)).toEqual([0x08, 0x10, 0x18, 0x20]);
    for (const d of translating) {
      expect(d.translations.find((t: { ssid: number | null }) => t.ssid === null)?.type).toBe("s1");
    }
    const t = await cli(
      "translate",
      "smmu",
      "--image",
      file,
      "--strtab-base",
      base,
      "--strtab-cfg",
      cfg,
      "0x18:3@0x1000000",
    );
    expect(JSON.parse(t.stdout)).toMatchObject({ sid: 0x18, ssid: 3, result: "ok" });
    tmp.cleanup();
  });

  it("--dump writes the machine before teardown as an ELF core that decode and translate read", async () => {
    const tmp = tempDir();
    const file = tmp.file("run.elf");
    const r = await cli("run", "--dump", file);
    expect(r.code).toBe(EXIT.OK);
    const m = /^dump {8}(\S+) \(ELF core; dmar0 RTADDR (0x[0-9a-f]+)\)$/m.exec(r.stdout);
    expect(m?.[1]).toBe(file);
    const rtaddr = m?.[2] as string;
    const json = JSON.parse((await cli("run", "--dump", file, "--json")).stdout);
    expect(json.dump).toEqual({
      file,
      units: [{ name: "dmar0", register: "RTADDR", value: rtaddr }],
    });
    const decoded = await cli("decode", "vtd", "--image", file, "--rtaddr", rtaddr, "--json");
    expect(decoded.code).toBe(EXIT.OK);
    const doc = JSON.parse(decoded.stdout);
    expect(doc.mode).toBe("scalable");
    expect(doc.devices.map((d: { bdf: string }) => d.bdf)).toEqual([
      "00:01.0",
      "00:02.0",
      "00:03.0",
      "00:04.0",
    ]);
    // Every device's requests without PASID translate through a first-stage table.
    for (const d of doc.devices) {
      expect(d.translations.find((t: { ridPasid?: boolean }) => t.ridPasid)?.type).toBe(
        "first-stage",
      );
    }
    const t = await cli(
      "translate",
      "vtd",
      "--image",
      file,
      "--rtaddr",
      rtaddr,
      "0x18:3@0x1000000",
    );
    expect(JSON.parse(t.stdout)).toMatchObject({
      sid: 24,
      pasid: 3,
      result: "ok",
      r: true,
      w: true,
    });
    expectUsageError(
      await cli("run", "--arch", "mock", "--dump", file),
      /--dump: scenario 'default' offers no memory snapshot/,
    );
    expectUsageError(
      await cli("run", "--dump", tmp.file("no/such/dir/x.elf")),
      /--dump: .*x\.elf: cannot write the image \(ENOENT\)/,
    );
    tmp.cleanup();
  });

  it("a bare -- (as pnpm passes it through) is ignored", async () => {
    const r = await cli("run", "--", "--seed", "7", "--json");
    expect(r.code).toBe(EXIT.OK);
    expect(JSON.parse(r.stdout).seed).toBe(7);
  });
});

describe("iommu-sim --help and --version", () => {
  it("--help prints usage on stdout and exits 0", async () => {
    for (const args of [["--help"], ["-h"], ["run", "--help"], ["help"], ["help", "run"]]) {
      const r = await cli(...args);
      expect(r.code).toBe(EXIT.OK);
      expect(r.stderr).toBe("");
      expect(r.stdout).toMatch(/^Usage: iommu-sim /);
    }
    expect((await cli("run", "--help")).stdout).toContain("--seed <n>");
  });

  it("--version prints the harness version and exits 0", async () => {
    const r = await cli("--version");
    expect(r).toEqual({ code: EXIT.OK, stdout: `${HARNESS_VERSION}\n`, stderr: "" });
  });
});

describe("script entry points", () => {
  const node = (...args: string[]) =>
    spawnSync(process.execPath, ["--conditions=source", "--import", "tsx", ...args], {
      cwd: repoRoot,
      encoding: "utf8",
      timeout: 60_000,
    });

  it("bin/iommu-sim.js runs the sources under --conditions=source", () => {
    const r = node("apps/harness/bin/iommu-sim.js", "run", "--json", "--seed", "0x2a");
    expect(r.stderr).toBe("");
    expect(r.status).toBe(EXIT.OK);
    expect(JSON.parse(r.stdout)).toMatchObject({ scenario: "default", seed: 42 });
  }, 60_000);

  it("src/cli.ts runs as a script (what `pnpm start` does) and exits with the run's code", () => {
    const ok = node("apps/harness/src/cli.ts", "run");
    expect(ok.status).toBe(EXIT.OK);
    expect(ok.stdout).toMatch(/^checks {6}\d+ passed, 0 failed$/m);
    const bad = node("apps/harness/src/cli.ts", "run", "--seed", "abc");
    expect(bad.status).toBe(EXIT.USAGE);
    expect(bad.stdout).toBe("");
    expect(bad.stderr).toBe('iommu-sim: --seed: expected an unsigned 32-bit integer, got "abc"\n');
  }, 60_000);
});

describe("iommu-sim decode vtd and translate vtd", () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  /** Run `iommu-sim ...args` with `stdin` chunks for `-`. */
  async function cliWith(stdin: Array<string | Uint8Array>, ...args: string[]): Promise<Result> {
    let stdout = "";
    let stderr = "";
    const code = await main(["node", "iommu-sim", ...args], {
      stdout: { write: (s: string) => (stdout += s) },
      stderr: { write: (s: string) => (stderr += s) },
      stdin,
    });
    return { code, stdout, stderr };
  }

  /** A scalable machine: first stage for RID_PASID, second stage and pass-through PASIDs. */
  function scalableMachine() {
    const m = machine(true);
    const dir = m.b.setSmContext(m.rta, 0x18, { DTE: 1, PASIDE: 1 });
    const runs: RefRun[] = [];
    const fs = fsTable(m, 4);
    mapRun(fs, runs, 0x1000, 0x2_0000_0000, SZ_4K, 4, RW);
    mapRun(fs, runs, 0x20_0000, 0x3_0000_0000, SZ_2M, 1, IOMMU_READ);
    m.b.setPasidEntry(dir, 0, { PGTT: 1, DID: 2, FLPTR: fs.rootPa });
    const ss = ssTable(m, 2);
    mapRun(ss, runs, 0x4000_0000, 0x4_0000_0000, SZ_1G, 1, RW);
    m.b.setPasidEntry(dir, 5, { PGTT: 2, DID: 3, AW: 2, SLPTPTR: ss.rootPa });
    m.b.setPasidEntry(dir, 6, { PGTT: 4, DID: 1 });
    const dir2 = m.b.setSmContext(m.rta, 0x0100, { PASIDE: 1 });
    m.b.setPasidEntry(dir2, 0, { PGTT: 2, DID: 4, AW: 2, SLPTPTR: ss.rootPa });
    return { m, fs, ss, rtaddr: `0x${rtaddrOf(m, true).toString(16)}` };
  }

  /** A legacy machine: a second-stage device and a pass-through one. */
  function legacyMachine() {
    const m = machine(false);
    const runs: RefRun[] = [];
    const ss = ssTable(m, 2);
    mapRun(ss, runs, 0x1000, 0x8000_0000, SZ_4K, 2, RW);
    mapRun(ss, runs, 0x3000, 0x9000_0000, SZ_4K, 1, IOMMU_READ);
    m.b.setContext(m.rta, 0x10, { AW: 2, DID: 5, SLPTPTR: ss.rootPa });
    m.b.setContext(m.rta, 0x11, { TT: 2, AW: 2, DID: 6 });
    return { m, ss, rtaddr: `0x${m.rta.toString(16)}` };
  }

  let n = 0;
  function save(mem: PhysMemory, format: "elf" | "sparse"): string {
    const file = tmp.file(`m${n++}.${format}`);
    saveImage(mem, file, format);
    return file;
  }

  /** `decodeVtd` of the original memory, as JSON would carry it. */
  function expectedDoc(mem: PhysMemory, options: Parameters<typeof decodeVtd>[1]): unknown {
    return JSON.parse(JSON.stringify(decodeVtd(mem, options)));
  }

  it("decode --json prints one document: the image decodes as the memory it was saved from", async () => {
    for (const format of ["elf", "sparse"] as const) {
      for (const build of [scalableMachine, legacyMachine]) {
        const { m, rtaddr } = build();
        const image = save(m.mem, format);
        const r = await cli("decode", "vtd", "--image", image, "--rtaddr", rtaddr, "--json");
        expect(r.stderr).toBe("");
        expect(r.code).toBe(EXIT.OK);
        expect(r.stdout.endsWith("\n")).toBe(true);
        expect(r.stdout.trimEnd().split("\n")).toHaveLength(1);
        const doc = JSON.parse(r.stdout);
        expect(doc).toEqual(expectedDoc(m.mem, { rtaddr: BigInt(rtaddr) }));
        expect(Object.keys(doc).slice(0, 5)).toEqual([
          "arch",
          "mode",
          "rootTable",
          "devices",
          "pageTables",
        ]);
      }
    }
  });

  it("decode --json has the issue's shape: devices, translations, coalesced mappings", async () => {
    const { m, fs, ss, rtaddr } = scalableMachine();
    const image = save(m.mem, "elf");
    const doc = JSON.parse(
      (await cli("decode", "vtd", "--image", image, "--rtaddr", rtaddr, "--json")).stdout,
    );
    expect(doc).toMatchObject({ arch: "vtd", mode: "scalable", rootTable: toHex(m.rta) });
    expect(doc.devices[0]).toMatchObject({
      bdf: "00:03.0",
      sid: 0x18,
      translations: [
        { pasid: 0, type: "first-stage", did: 2, levels: 4, pageTable: toHex(fs.rootPa) },
        { pasid: 5, type: "second-stage", did: 3, levels: 4, pageTable: toHex(ss.rootPa) },
        { pasid: 6, type: "pass-through", did: 1, levels: 0, pageTable: null },
      ],
    });
    expect(doc.pageTables[toHex(fs.rootPa)]).toMatchObject({
      stage: "first-stage",
      levels: 4,
      mappings: [
        { iova: "0x1000", pa: "0x200000000", size: 0x4000, r: true, w: true },
        { iova: "0x200000", pa: "0x300000000", size: SZ_2M, r: true, w: false },
      ],
    });
    // Used by two devices, listed once.
    expect(Object.keys(doc.pageTables)).toEqual([toHex(fs.rootPa), toHex(ss.rootPa)]);
  });

  it("decode prints the text tree by default; --device and --pasid filter", async () => {
    const { m, ss, rtaddr } = scalableMachine();
    const image = save(m.mem, "sparse");
    const r = await cli("decode", "vtd", "--image", image, "--rtaddr", rtaddr);
    expect(r.code).toBe(EXIT.OK);
    expect(r.stdout).toBe(
      formatVtdDecode(decodeVtd(m.mem, { rtaddr: BigInt(rtaddr) }) as VtdDecodeDocument),
    );
    expect(r.stdout).toMatch(/^VT-d scalable mode, root table 0x/);
    const one = JSON.parse(
      (
        await cli(
          "decode",
          "vtd",
          "--image",
          image,
          "--rtaddr",
          rtaddr,
          "--json",
          "--device",
          "01:00.0",
        )
      ).stdout,
    );
    expect(one.devices.map((d: { bdf: string }) => d.bdf)).toEqual(["01:00.0"]);
    expect(Object.keys(one.pageTables)).toEqual([toHex(ss.rootPa)]);
    const five = JSON.parse(
      (await cli("decode", "vtd", "--image", image, "--rtaddr", rtaddr, "--json", "--pasid", "0x5"))
        .stdout,
    );
    expect(five.devices).toHaveLength(1);
    expect(five.devices[0].translations.map((t: { pasid: number }) => t.pasid)).toEqual([5]);
  });

  it("--raw --base reads a raw dump of the table region", async () => {
    const { m, rtaddr } = legacyMachine();
    const file = tmp.file("region.raw");
    saveImage(m.mem, file, { raw: { base: 0x100_0000, length: 0x400_0000 } });
    const r = await cli(
      "decode",
      "vtd",
      "--image",
      file,
      "--raw",
      "--base",
      "0x1000000",
      "--rtaddr",
      rtaddr,
      "--json",
    );
    expect(r.stderr).toBe("");
    expect(JSON.parse(r.stdout)).toEqual(expectedDoc(m.mem, { rtaddr: BigInt(rtaddr) }));
    const t = await cli(
      "translate",
      "vtd",
      "--image",
      file,
      "--raw",
      "--base",
      "16777216",
      "--rtaddr",
      rtaddr,
      "00:02.0@0x1008",
    );
    expect(JSON.parse(t.stdout)).toMatchObject({ result: "ok", pa: "0x80000008" });
  });

  it("decode --max-table-pages and --max-mappings bound the work; the document says it was truncated", async () => {
    // 00:00.0 walks a 4-level table whose every entry points back at itself.
    const mem = new PhysMemory();
    mem.write64(0x10000, 0x11001, 0);
    mem.write64(0x11000, 0x20_0001, 0);
    mem.write64(0x11008, 2 | (1 << 8), 0);
    for (let i = 0; i < 512; i++) mem.write64(0x20_0000 + i * 8, 0x20_0003, 0);
    const image = save(mem, "sparse");
    const run = async (...limits: string[]) => {
      const r = await cli("decode", "vtd", "--image", image, "--rtaddr", "0x10000", ...limits);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(EXIT.OK);
      return r.stdout;
    };
    const doc = JSON.parse(await run("--json", "--max-mappings", "700"));
    expect(doc.truncated).toBe(true);
    expect(doc.pageTables["0x200000"]).toMatchObject({ truncated: true });
    expect(doc.pageTables["0x200000"].mappings).toHaveLength(700);
    const pages = JSON.parse(await run("--json", "--max-table-pages", "0x10"));
    expect(pages.pageTables["0x200000"]).toMatchObject({ tablePages: 16, truncated: true });
    expect(await run("--max-mappings", "3")).toMatch(
      /\n1 device, 1 translation, 1 page table with 3 mappings; 1 problem \(at the end\); TRUNCATED: a limit cut the decode short \(see the problems\)\n/,
    );
  });

  it("decode notes structures in the holes of an ELF core or outside a raw dump", async () => {
    const { m, ss, rtaddr } = legacyMachine();
    // 00:03.0: a second-stage table whose root nothing was written to: not in the core.
    m.b.setContext(m.rta, 0x18, { AW: 2, DID: 7, SLPTPTR: 0x7_0000_0000 });
    const elf = JSON.parse(
      (await cli("decode", "vtd", "--image", save(m.mem, "elf"), "--rtaddr", rtaddr, "--json"))
        .stdout,
    );
    expect(elf.pageTables["0x700000000"]).toMatchObject({ notInImage: 1, mappings: [] });
    expect(elf.pageTables[toHex(ss.rootPa)].notInImage).toBeUndefined();
    // The sparse image keeps no holes: it cannot tell one from a page of zeros.
    const sparse = JSON.parse(
      (await cli("decode", "vtd", "--image", save(m.mem, "sparse"), "--rtaddr", rtaddr, "--json"))
        .stdout,
    );
    expect(sparse.pageTables["0x700000000"].notInImage).toBeUndefined();
    const file = tmp.file("low.raw");
    saveImage(m.mem, file, { raw: { base: 0, length: 0x1000 } });
    const raw = await cli(
      "decode",
      "vtd",
      "--image",
      file,
      "--raw",
      "--base",
      "0",
      "--rtaddr",
      rtaddr,
    );
    expect(raw.stdout).toContain(
      "root table: the root table is not in the image (a hole, or a page the dump left out): read as zeros, no device\n",
    );
  });

  it("translate prints one JSON line per query, from operands and from stdin", async () => {
    const { m, rtaddr } = scalableMachine();
    const image = save(m.mem, "elf");
    const r = await cliWith(
      [
        "00:03.0@0x1abc\n# a comment\n\n",
        new TextEncoder().encode("0x18:5@0x40001000\r\n24:6@0x12"),
      ],
      "translate",
      "vtd",
      "--image",
      image,
      "--rtaddr",
      rtaddr,
      "00:03.0:5@0x0",
      "-",
      "1:00.0@0x40000000",
    );
    expect(r.stderr).toBe("");
    expect(r.code).toBe(EXIT.OK);
    const lines = r.stdout
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines).toEqual([
      {
        sid: 0x18,
        pasid: 5,
        iova: "0x0",
        result: "fault",
        faultReason: 0x79,
        faultName: "SM_SS_ENTRY_PERMISSION",
      },
      {
        sid: 0x18,
        pasid: null,
        iova: "0x1abc",
        result: "ok",
        pa: "0x200000abc",
        pageSize: SZ_4K,
        r: true,
        w: true,
        passThrough: false,
      },
      {
        sid: 0x18,
        pasid: 5,
        iova: "0x40001000",
        result: "ok",
        pa: "0x400001000",
        pageSize: SZ_1G,
        r: true,
        w: true,
        passThrough: false,
      },
      {
        sid: 0x18,
        pasid: 6,
        iova: "0x12",
        result: "ok",
        pa: "0x12",
        pageSize: SZ_4K,
        r: true,
        w: true,
        passThrough: true,
      },
      {
        sid: 0x100,
        pasid: null,
        iova: "0x40000000",
        result: "ok",
        pa: "0x400000000",
        pageSize: SZ_1G,
        r: true,
        w: true,
        passThrough: false,
      },
    ]);
    // Each line matches the running unit's uncached walk.
    const fresh = xlateFresh(m.unit, 0x18, 0x1abc);
    expect(fresh).toMatchObject({ pa: 0x2_0000_0abc, sizeShift: 12 });
  });

  it("--write, --exec and --priv change every query's access", async () => {
    const { m, rtaddr } = scalableMachine();
    const image = save(m.mem, "elf");
    const base = ["translate", "vtd", "--image", image, "--rtaddr", rtaddr];
    const write = await cli(...base, "--write", "00:03.0@0x200000", "00:03.0@0x1000");
    expect(
      write.stdout
        .trimEnd()
        .split("\n")
        .map((l) => JSON.parse(l).faultName ?? "ok"),
    ).toEqual(["SM_NO_WRITE", "ok"]);
    const exec = await cli(...base, "--exec", "00:03.0:5@0x40000000");
    expect(JSON.parse(exec.stdout)).toMatchObject({ faultName: "SM_ERE_CLEAR" });
    const priv = await cli(...base, "--priv", "00:03.0:6@0");
    expect(JSON.parse(priv.stdout)).toMatchObject({ faultName: "SM_SRE_CLEAR" });
  });

  it("--cap and --ecap describe the unit", async () => {
    const { m, rtaddr } = legacyMachine();
    const image = save(m.mem, "elf");
    const [cl, ch] = vtdCapValue({ ...LEGACY_VTD_CAPS, sagaw: 0b10 });
    const [el, eh] = vtdEcapValue(LEGACY_VTD_CAPS);
    const cap = `0x${((BigInt(ch) << 32n) | BigInt(cl)).toString(16)}`;
    const ecap = `0x${((BigInt(eh) << 32n) | BigInt(el)).toString(16)}`;
    const caps = ["--cap", cap, "--ecap", ecap];
    const t = await cli(
      "translate",
      "vtd",
      "--image",
      image,
      "--rtaddr",
      rtaddr,
      ...caps,
      "00:02.0@0x1000",
    );
    expect(JSON.parse(t.stdout)).toMatchObject({ faultName: "CONTEXT_INVALID" });
    const d = await cli("decode", "vtd", "--image", image, "--rtaddr", rtaddr, ...caps, "--json");
    expect(JSON.parse(d.stdout).devices[0].translations[0]).toMatchObject({
      type: "blocked",
      faultName: "CONTEXT_INVALID",
    });
  });

  it("every bad input is one line on stderr and exit 2", async () => {
    const { m, rtaddr } = legacyMachine();
    const image = save(m.mem, "elf");
    const junk = tmp.file("junk");
    writeFileSync(junk, "junk");
    const dec = (...args: string[]) => cli("decode", "vtd", ...args);
    const tr = (...args: string[]) =>
      cli("translate", "vtd", "--image", image, "--rtaddr", rtaddr, ...args);
    expectUsageError(
      await dec("--image", image),
      /^iommu-sim: --rtaddr: missing: give the RTADDR register value \(--rtaddr VALUE\)\n$/,
    );
    expectUsageError(
      await dec("--image", image, "--rtaddr", "0xg"),
      /^iommu-sim: --rtaddr: expected an unsigned 64-bit value, decimal or 0x hex, got "0xg"\n$/,
    );
    expectUsageError(
      await dec("--image", image, "--rtaddr", "0xc00"),
      /^iommu-sim: --rtaddr: RTADDR\.TTM is 3 \(abort-DMA mode\)/,
    );
    expectUsageError(await dec("--rtaddr", rtaddr), /^iommu-sim: --image: missing/);
    expectUsageError(
      await dec("--image", tmp.file("nope"), "--rtaddr", rtaddr),
      /^iommu-sim: --image: cannot read .*nope: no such file or directory\n$/,
    );
    expectUsageError(
      await dec("--image", junk, "--rtaddr", rtaddr),
      /^iommu-sim: --image: .*junk: neither an ELF core nor an iommu-sim sparse image; for a raw RAM dump pass --raw --base ADDR\n$/,
    );
    expectUsageError(
      await dec("--image", image, "--rtaddr", rtaddr, "--raw"),
      /^iommu-sim: --raw: needs --base ADDR\n$/,
    );
    expectUsageError(
      await dec("--image", image, "--rtaddr", rtaddr, "--base", "0"),
      /^iommu-sim: --base: applies only to a raw dump: add --raw\n$/,
    );
    expectUsageError(
      await dec("--image", image, "--rtaddr", rtaddr, "--raw", "--base", "0x10000000000000"),
      /^iommu-sim: --base: 0x10000000000000 is beyond the 52-bit physical address space\n$/,
    );
    expectUsageError(
      await dec("--image", image, "--rtaddr", rtaddr, "--device", "00:20.0"),
      /^iommu-sim: --device: device 0x20 in 00:20\.0 is above 0x1f\n$/,
    );
    expectUsageError(
      await dec("--image", image, "--rtaddr", rtaddr, "--device", "x"),
      /^iommu-sim: --device: expected a source ID/,
    );
    expectUsageError(
      await dec("--image", image, "--rtaddr", rtaddr, "--pasid", "0x100000"),
      /^iommu-sim: --pasid: expected a PASID: a number up to 0xfffff/,
    );
    expectUsageError(
      await dec("--image", image, "--rtaddr", rtaddr, "--max-mappings", "-5"),
      /^iommu-sim: --max-mappings: expected a count up to 4294967295, decimal or 0x hex, got "-5"\n$/,
    );
    expectUsageError(
      await dec("--image", image, "--rtaddr", rtaddr, "--max-table-pages", "0x100000000"),
      /^iommu-sim: --max-table-pages: expected a count up to 4294967295/,
    );
    expectUsageError(
      await dec("--image", image, "--rtaddr", rtaddr, "--cap", "-1"),
      /^iommu-sim: --cap: expected an unsigned 64-bit value/,
    );
    expectUsageError(
      await dec("--image", image, "--rtaddr", rtaddr, "--ecap", `0x${(1n << 40n).toString(16)}`),
      /^iommu-sim: --cap\/--ecap: CAP 0x[0-9a-f]{16} \/ ECAP 0x0000010000000000 describe no unit: pasid without smts: PASIDs need scalable mode\n$/,
    );
    expectUsageError(
      await tr("00:02.0@0x1000", "00:02.0@zz"),
      /^iommu-sim: query "00:02\.0@zz": expected an IOVA/,
    );
    expectUsageError(
      await tr("00:02.0"),
      /^iommu-sim: query "00:02\.0": expected SID\[:PASID\]@IOVA\n$/,
    );
    expectUsageError(
      await cliWith(
        ["00:02.0@0\n\nbad@0\n"],
        "translate",
        "vtd",
        "--image",
        image,
        "--rtaddr",
        rtaddr,
        "-",
      ),
      /^iommu-sim: stdin line 3: expected a source ID/,
    );
    expectUsageError(
      await cliWith([], "translate", "vtd", "--image", image, "--rtaddr", rtaddr, "-", "-"),
      /^iommu-sim: translate: - \(stdin\) given twice\n$/,
    );
    expectUsageError(
      await tr(),
      /^iommu-sim: translate: no queries: give SID\[:PASID\]@IOVA operands, or - to read them from stdin\n$/,
    );
    expectUsageError(
      await tr("--write", "--exec", "0@0"),
      /^iommu-sim: --exec: an execute request is a read; it cannot be combined with --write\n$/,
    );
    expectUsageError(
      await cli("decode", "smmu", "--image", image, "--rtaddr", "0"),
      /^iommu-sim: --rtaddr: applies to vtd only/,
    );
    expectUsageError(
      await cli("decode", "arm"),
      /^iommu-sim: decode: unknown arch "arm" \(known: vtd, smmu\)\n$/,
    );
    expectUsageError(await cli("decode"), /missing required argument 'arch'/);
    expectUsageError(await cli("decode", "vtd", "extra"), /too many arguments/);
    expectUsageError(await cli("decode", "vtd", "--rtaddr"), /argument missing/);
  });

  it("a bad query prints nothing on stdout even after good ones", async () => {
    const { m, rtaddr } = legacyMachine();
    const image = save(m.mem, "sparse");
    const r = await cli(
      "translate",
      "vtd",
      "--image",
      image,
      "--rtaddr",
      rtaddr,
      "0x10@0x1000",
      "0x10@0x2000",
      "0x10@-1",
    );
    expectUsageError(r, /^iommu-sim: query "0x10@-1": expected an IOVA/);
  });

  it("--help lists decode and translate with their options", async () => {
    const top = await cli("--help");
    expect(top.stdout).toMatch(/decode \[options\] <arch>/);
    expect(top.stdout).toMatch(/translate \[options\] <arch> \[queries\.\.\.\]/);
    const dec = await cli("decode", "--help");
    for (const opt of [
      "--image <file>",
      "--raw",
      "--base <addr>",
      "--rtaddr <value>",
      "--cap <value>",
      "--ecap <value>",
      "--json",
      "--device <bdf>",
      "--pasid <n>",
      "--max-table-pages <n>",
      "--max-mappings <n>",
    ]) {
      expect(dec.stdout).toContain(opt);
    }
    const tr = await cli("translate", "--help");
    for (const opt of ["--write", "--exec", "--priv", "--rtaddr <value>"])
      expect(tr.stdout).toContain(opt);
  });
});
