// Tests of the `iommu-sim` command line: exit codes, output streams, and the script entry points.

import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { EXIT, main } from "./cli.js";
import { type Scenario, scenarios } from "./scenario.js";
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
  scenarios.set(scenario.name, scenario);
  testScenarios.push(scenario.name);
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
    expect(r.stdout).toMatch(/^arch {8}mock$/m);
    expect(r.stdout).toMatch(/^seed {8}1$/m);
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
    ]);
    expect(doc).toMatchObject({
      version: HARNESS_VERSION,
      scenario: "default",
      arch: "mock",
      seed: 7,
      checks: { failed: 0 },
      failures: [],
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
    expect(lines[lines.length - 1]).toMatch(/^checks /);
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
    expectUsageError(await cli("run", "extra"), /too many arguments/);
    expectUsageError(await cli(), /missing command/);
    expectUsageError(await cli("frobnicate"), /unknown command 'frobnicate'/);
  });

  it("an unknown scenario is bad usage and lists the known ones", async () => {
    expectUsageError(
      await cli("run", "--scenario", "nope"),
      /^iommu-sim: --scenario: unknown scenario 'nope' \(known: .*default.*\)\n$/,
    );
  });

  it("--arch vtd and --arch smmu are not available yet; an unknown arch is refused", async () => {
    expectUsageError(
      await cli("run", "--arch", "vtd"),
      /^iommu-sim: --arch: arch 'vtd' is not available yet\n$/,
    );
    expectUsageError(await cli("run", "--arch", "smmu"), /arch 'smmu' is not available yet/);
    expectUsageError(await cli("run", "--arch", "x86"), /--arch: unknown arch "x86"/);
    expect((await cli("run", "--arch", "mock")).code).toBe(EXIT.OK);
  });

  it("a scenario for another arch than --arch is bad usage", async () => {
    register({ name: "test-on-vtd", arch: "vtd", description: "", run: () => {} });
    expectUsageError(
      await cli("run", "--scenario", "test-on-vtd"),
      /scenario 'test-on-vtd' runs on arch 'vtd', not 'mock'/,
    );
  });

  it("a failed check exits 1 and is listed in the summary and the JSON", async () => {
    register({
      name: "test-failing",
      arch: "mock",
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
      arch: "mock",
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
      arch: "mock",
      description: "async throw",
      async run() {
        throw new TypeError("x is undefined");
      },
    });
    const r = await cli("run", "--scenario", "test-type-error");
    expect(r.code).toBe(EXIT.INTERNAL);
    expect(r.stderr).toBe("iommu-sim: internal error: TypeError: x is undefined\n");
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
