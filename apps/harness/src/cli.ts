// The `iommu-sim` command line: parses options, runs a scenario or decodes and translates through
// a memory image, prints the result, and maps the outcome to an exit code.

import { readFileSync, realpathSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type PhysMemory, saveElfCore } from "@iommu-sim/iommu-core/platform";
import { Command, CommanderError } from "commander";
import { bothPassed, bothToJson, formatBothHuman, runBoth } from "./compare.js";
import { ImageInputError, readMemoryImage } from "./decode/image-input.js";
import { decodeSmmu, formatSmmuDecode } from "./decode/smmu-decode.js";
import {
  DEFAULT_SMMU_IDR,
  parseSmmuQuery,
  parseStreamId,
  parseSubstreamId,
  type SmmuQuery,
  SmmuTranslator,
  smmuFeaturesFromIdr,
} from "./decode/smmu-translate.js";
import { decodeVtd, formatVtdDecode, VTD_DECODE_LIMITS } from "./decode/vtd-decode.js";
import {
  parsePasid,
  parseSid,
  parseUnsigned,
  parseVtdQuery,
  type VtdQuery,
  VtdTranslator,
  vtdCapsFromRegisters,
} from "./decode/vtd-translate.js";
import { type FuzzResult, runFuzz } from "./fuzz/fuzz.js";
import { SMMU_INJECTIONS } from "./machine/smmu-harness.js";
import { SVA_INJECTIONS } from "./machine/sva-world.js";
import { VTD_INJECTIONS } from "./machine/vtd-harness.js";
import { formatHuman, formatTraceEvent, toJson } from "./report.js";
import {
  type RunReport,
  runScenario,
  type Scenario,
  type SnapshotUnit,
  scenarioKey,
  scenarios,
} from "./scenario.js";
import { parseScenarioFile, ScenarioFileError } from "./scenario-file/parse-scenario.js";
import { scenarioFromFile } from "./scenario-file/run-scenario-file.js";
import { HARNESS_VERSION } from "./version.js";

/** Exit codes of `iommu-sim`. */
export const EXIT = Object.freeze({
  /** The run completed and every check passed (also `--help` and `--version`). */
  OK: 0,
  /** The run completed and at least one check failed. */
  CHECK_FAILED: 1,
  /** Bad usage or bad input: one line on stderr, nothing run. */
  USAGE: 2,
  /** An internal error: the model threw (a `ModelBug` or any other exception). */
  INTERNAL: 3,
});

/** Somewhere to write text: `process.stdout`, or a buffer in tests. */
export interface Output {
  write(chunk: string): unknown;
}

/** Where `translate ... -` reads its queries: `process.stdin`, or chunks in tests. */
export type Input = AsyncIterable<string | Uint8Array> | Iterable<string | Uint8Array>;

/** The streams `main` writes to (and reads from). */
export interface CliIo {
  readonly stdout: Output;
  readonly stderr: Output;
  /** Queries for `translate ... -` (default `process.stdin`). */
  readonly stdin?: Input;
}

/** Architectures `--arch` names: those that run now, and those announced for later. */
const ARCHES: Readonly<Record<string, "available" | "planned">> = Object.freeze({
  vtd: "available",
  smmu: "available",
  both: "available",
  mock: "available",
});

/** The driver steps `--inject` can skip, per architecture. */
const INJECTIONS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  vtd: Object.keys(VTD_INJECTIONS),
  smmu: Object.keys(SMMU_INJECTIONS),
  both: [...Object.keys(VTD_INJECTIONS), ...Object.keys(SMMU_INJECTIONS)],
  mock: [],
});

/** The driver steps of an architecture's injections (the SVA layer's left out). */
function driverSteps(injections: Readonly<Record<string, string>>): string {
  return Object.keys(injections)
    .filter((k) => !Object.hasOwn(SVA_INJECTIONS, k))
    .join(", ");
}

/** The architecture of a `--arch both` run an injection goes to. */
function injectArch(inject: string | undefined): string | undefined {
  if (inject === undefined) return undefined;
  return Object.hasOwn(VTD_INJECTIONS, inject) ? "vtd" : "smmu";
}

/** Architectures whose tables `decode` and `translate` read. */
const DECODE_ARCHES: Readonly<Record<string, "available" | "planned">> = Object.freeze({
  vtd: "available",
  smmu: "available",
});

interface RunOptions {
  seed?: string;
  arch?: string;
  scenario?: string;
  inject?: string;
  dump?: string;
  json?: boolean;
  trace?: boolean;
  verbose?: boolean;
}

/** Options naming the memory image and the unit's registers (decode and translate). */
interface ImageOptions {
  image?: string;
  raw?: boolean;
  base?: string;
  /** VT-d. */
  rtaddr?: string;
  cap?: string;
  ecap?: string;
  /** SMMUv3. */
  strtabBase?: string;
  strtabCfg?: string;
  idr0?: string;
  idr1?: string;
  idr2?: string;
  idr3?: string;
  idr4?: string;
  idr5?: string;
}

interface DecodeOptions extends ImageOptions {
  json?: boolean;
  device?: string;
  pasid?: string;
  ssid?: string;
  maxTablePages?: string;
  maxMappings?: string;
}

interface FuzzOptions {
  arch?: string;
  seed?: string;
  runs?: string;
  ops?: string;
  mode?: string;
  cachingMode?: boolean;
  cache?: string;
  lazy?: boolean;
  race?: boolean;
  inject?: string;
  json?: boolean;
}

interface TranslateOptions extends ImageOptions {
  write?: boolean;
  exec?: boolean;
  priv?: boolean;
}

/** The command the arguments asked for, with its operands and options. */
type CliRequest =
  | { command: "run"; file: string | undefined; opts: RunOptions }
  | { command: "decode"; arch: string; opts: DecodeOptions }
  | { command: "translate"; arch: string; queries: string[]; opts: TranslateOptions }
  | { command: "fuzz"; opts: FuzzOptions };

/** Bad usage or input, reported as one line and exit code 2. */
class UsageError extends Error {}

/**
 * Run the `iommu-sim` command line and return its exit code (see {@link EXIT}). It never exits
 * the process; whatever a scenario, the decoder or the hardware model throws becomes exit code 3. `argv` is shaped like
 * `process.argv`: the first two entries (node and the script) are skipped.
 */
export async function main(
  argv: readonly string[],
  io: CliIo = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const fail = (message: string, code: number): number => {
    io.stderr.write(`iommu-sim: ${message}\n`);
    return code;
  };

  let request: CliRequest | undefined;
  const program = buildProgram(io, (r) => {
    request = r;
  });
  try {
    await program.parseAsync(userArgs(argv), { from: "user" });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    // --help, `help [command]` and --version.
    if (err.exitCode === 0) return EXIT.OK;
    // Commander shows help on stderr, with a non-zero code, when the command is missing.
    if (err.code === "commander.help") {
      return fail("missing command (try 'iommu-sim --help')", EXIT.USAGE);
    }
    return fail(err.message.replace(/^error: /, "").replace(/\s*\n\s*/g, " "), EXIT.USAGE);
  }
  if (request === undefined) return fail("missing command (try 'iommu-sim --help')", EXIT.USAGE);

  try {
    switch (request.command) {
      case "run":
        return await runCommand(request.file, request.opts, io, fail);
      case "decode":
        return await decodeCommand(request.arch, request.opts, io);
      case "translate":
        return await translateCommand(request.arch, request.queries, request.opts, io);
      case "fuzz":
        return fuzzCommand(request.opts, io);
    }
  } catch (err) {
    if (err instanceof UsageError) return fail(err.message, EXIT.USAGE);
    // The model threw while decoding or translating: a bug in iommu-sim, never bad input.
    return fail(`internal error: ${describeError(err)}`, EXIT.INTERNAL);
  }
}

/** `iommu-sim run [FILE]`: run one scenario (built in, or from a scenario file) and report it. */
async function runCommand(
  file: string | undefined,
  opts: RunOptions,
  io: CliIo,
  fail: (message: string, code: number) => number,
): Promise<number> {
  let seed: number;
  let scenario: Scenario;
  let pair: Scenario | null;
  try {
    const picked = file === undefined ? builtInScenario(opts) : fileScenario(file, opts);
    scenario = picked.scenario;
    pair = picked.pair ?? null;
    seed = opts.seed === undefined ? picked.seed : parseSeed(opts.seed);
    checkInject(pair === null ? scenario.arch : "both", opts.inject);
    if (pair !== null && opts.dump !== undefined)
      throw new UsageError("--dump: not with --arch both (dump one architecture's run)");
  } catch (err) {
    if (err instanceof UsageError) return fail(err.message, EXIT.USAGE);
    throw err;
  }
  if (pair !== null) return runBothCommand(scenario, pair, seed, opts, io);

  let report: RunReport;
  let dumped: { bytes: Uint8Array; units: readonly SnapshotUnit[] } | null = null;
  try {
    report = await runScenario(scenario, seed, {
      trace: opts.trace === true,
      inject: opts.inject ?? null,
      ...(opts.dump === undefined
        ? {}
        : {
            snapshot: (mem: PhysMemory, units: readonly SnapshotUnit[]) => {
              dumped = { bytes: saveElfCore(mem), units };
            },
          }),
    });
  } catch (err) {
    io.stderr.write(`iommu-sim: internal error: ${describeError(err)}\n`);
    if (opts.verbose && err instanceof Error && err.stack !== undefined) {
      io.stderr.write(`${err.stack}\n`);
    }
    return EXIT.INTERNAL;
  }
  let dumpLine = "";
  let dumpDoc: { file: string; units: readonly SnapshotUnit[] } | null = null;
  if (opts.dump !== undefined) {
    const snap = dumped as { bytes: Uint8Array; units: readonly SnapshotUnit[] } | null;
    if (snap === null) {
      return fail(`--dump: scenario '${scenario.name}' offers no memory snapshot`, EXIT.USAGE);
    }
    try {
      writeFileSync(opts.dump, snap.bytes);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "unwritable";
      return fail(`--dump: ${opts.dump}: cannot write the image (${code})`, EXIT.USAGE);
    }
    dumpDoc = { file: opts.dump, units: snap.units };
    dumpLine = `${"dump".padEnd(12)}${opts.dump} (ELF core; ${snap.units.map((u) => `${u.name} ${u.register} ${u.value}`).join(", ")})\n`;
  }
  if (opts.json) {
    io.stdout.write(`${toJson(report, dumpDoc === null ? {} : { dump: dumpDoc })}\n`);
  } else {
    for (const event of report.trace ?? []) io.stdout.write(formatTraceEvent(event));
    io.stdout.write(formatHuman(report) + dumpLine);
  }
  return report.checks.failed === 0 && report.violationsTotal === 0 ? EXIT.OK : EXIT.CHECK_FAILED;
}

/**
 * `iommu-sim run --arch both`: the scenario on VT-d and on SMMUv3, both reports, then every DMA
 * compared; exit 1 on any failed check, violation or difference.
 */
async function runBothCommand(
  vtd: Scenario,
  smmu: Scenario,
  seed: number,
  opts: RunOptions,
  io: CliIo,
): Promise<number> {
  let report: Awaited<ReturnType<typeof runBoth>>;
  try {
    report = await runBoth(vtd, smmu, seed, {
      trace: opts.trace === true,
      inject: opts.inject ?? null,
      injectArch: injectArch(opts.inject),
    });
  } catch (err) {
    io.stderr.write(`iommu-sim: internal error: ${describeError(err)}\n`);
    if (opts.verbose && err instanceof Error && err.stack !== undefined) {
      io.stderr.write(`${err.stack}\n`);
    }
    return EXIT.INTERNAL;
  }
  if (opts.json) io.stdout.write(`${bothToJson(report)}\n`);
  else {
    for (const run of report.runs)
      for (const event of run.trace ?? []) io.stdout.write(formatTraceEvent(event));
    io.stdout.write(formatBothHuman(report));
  }
  return bothPassed(report) ? EXIT.OK : EXIT.CHECK_FAILED;
}

/** A positive integer option of at most `max`. */
function parseCount(
  option: string,
  text: string | undefined,
  fallback: number,
  max: number,
): number {
  if (text === undefined) return fallback;
  if (/^[0-9]{1,9}$/.test(text)) {
    const n = Number(text);
    if (n >= 1 && n <= max) return n;
  }
  throw new UsageError(
    `${option}: expected an integer from 1 to ${max}, got ${JSON.stringify(text)}`,
  );
}

/** `iommu-sim fuzz`: seeded random runs under the oracle; exit 1 when any run found a violation. */
function fuzzCommand(opts: FuzzOptions, io: CliIo): number {
  const arch = opts.arch ?? "vtd";
  if (arch !== "vtd" && arch !== "smmu")
    throw new UsageError(`--arch: fuzz runs on vtd or smmu (got ${JSON.stringify(arch)})`);
  if (arch === "smmu" && opts.mode !== undefined && opts.mode !== "scalable")
    throw new UsageError("--mode: VT-d only (an SMMU has no legacy mode)");
  if (arch === "smmu" && opts.cachingMode === true)
    throw new UsageError("--caching-mode: VT-d only");
  const seed = opts.seed === undefined ? 1 : parseSeed(opts.seed);
  const runs = parseCount("--runs", opts.runs, 20, 100_000);
  const ops = parseCount("--ops", opts.ops, 500, 1_000_000);
  const mode = opts.mode ?? (arch === "smmu" ? "scalable" : "both");
  if (mode !== "scalable" && mode !== "legacy" && mode !== "both") {
    throw new UsageError(`--mode: expected scalable, legacy or both, got ${JSON.stringify(mode)}`);
  }
  const cache = opts.cache ?? "maximal";
  if (cache !== "maximal" && cache !== "minimal") {
    throw new UsageError(`--cache: expected maximal or minimal, got ${JSON.stringify(cache)}`);
  }
  checkInject(arch, opts.inject);
  const results: FuzzResult[] = [];
  for (let k = 0; k < runs; k++) {
    const m = mode === "both" ? (k % 2 === 0 ? "scalable" : "legacy") : mode;
    results.push(
      runFuzz({
        seed: (seed + k) >>> 0,
        ops,
        arch,
        mode: m,
        cachingMode: opts.cachingMode === true,
        cache,
        lazy: opts.lazy === true,
        race: opts.race === true,
        inject: (opts.inject as FuzzOptionsInject | undefined) ?? null,
      }),
    );
  }
  const failed = results.filter((r) => r.violationsTotal > 0);
  if (opts.json) {
    io.stdout.write(
      `${JSON.stringify({
        version: HARNESS_VERSION,
        arch,
        runs: results.length,
        failedRuns: failed.length,
        ops: results.reduce((n, r) => n + r.ops, 0),
        dmas: results.reduce((n, r) => n + r.dmas, 0),
        failures: failed.map((r) => ({
          seed: r.seed,
          mode: r.mode,
          violationsTotal: r.violationsTotal,
          firstViolationOp: r.firstViolationOp,
          ...(r.stopped === null ? {} : { stopped: r.stopped, ops: r.ops }),
          violations: r.violations.slice(0, 5),
          log: r.log,
        })),
      })}\n`,
    );
  } else {
    let out = "";
    for (const r of failed) {
      const v = r.violations[0];
      out += `seed ${r.seed} (${r.mode}): ${r.violationsTotal} violation(s), the first after operation ${r.firstViolationOp}:\n`;
      if (v !== undefined) out += `  ${v.kind}: ${v.message.replace(/\s*\n\s*/g, " ")}\n`;
      if (r.stopped !== null) out += `  the run stopped after ${r.ops} operations: ${r.stopped}\n`;
      out += "  the operations before it:\n";
      for (const line of r.log) out += `    ${line}\n`;
    }
    const dmas = results.reduce((n, r) => n + r.dmas, 0);
    out += `fuzz        ${results.length} runs of ${ops} operations (${dmas} DMAs), seeds ${seed}..${(seed + runs - 1) >>> 0}\n`;
    out += `violations  ${failed.length} run(s) with violations\n`;
    io.stdout.write(out);
  }
  return failed.length === 0 ? EXIT.OK : EXIT.CHECK_FAILED;
}

type FuzzOptionsInject = NonNullable<Parameters<typeof runFuzz>[0]["inject"]>;

/** The built-in scenario `--scenario` and `--arch` name (default: `default` on vtd). */
function builtInScenario(opts: RunOptions): {
  scenario: Scenario;
  pair?: Scenario;
  seed: number;
} {
  const arch = opts.arch ?? "vtd";
  checkArch(arch);
  const name = opts.scenario ?? "default";
  if (arch === "both") {
    const vtd = scenarios.get(scenarioKey(name, "vtd"));
    const smmu = scenarios.get(scenarioKey(name, "smmu"));
    if (vtd === undefined || smmu === undefined) {
      throw new UsageError(`--scenario: scenario '${name}' does not run on both vtd and smmu`);
    }
    return { scenario: vtd, pair: smmu, seed: 1 };
  }
  const scenario = scenarios.get(scenarioKey(name, arch));
  if (scenario === undefined) {
    const others = [...scenarios.values()].filter((s) => s.name === name).map((s) => s.arch);
    if (others.length > 0) {
      throw new UsageError(
        `--scenario: scenario '${name}' runs on arch ${others.map((a) => `'${a}'`).join(", ")}, not '${arch}'`,
      );
    }
    const known = [...new Set([...scenarios.values()].map((s) => s.name))].sort().join(", ");
    throw new UsageError(`--scenario: unknown scenario '${name}' (known: ${known})`);
  }
  return { scenario, seed: 1 };
}

/** The scenario a file describes, validated; every problem is one line naming file, line and field. */
function fileScenario(
  file: string,
  opts: RunOptions,
): { scenario: Scenario; pair?: Scenario; seed: number } {
  if (opts.scenario !== undefined) {
    throw new UsageError("--scenario: not with a scenario file (the file names its scenario)");
  }
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new UsageError(`${file}: cannot read the scenario file (${code})`);
  }
  const spec = parseScenarioFile(text, file);
  if (spec instanceof ScenarioFileError) throw new UsageError(`${spec.toString()} [${spec.code}]`);
  if (spec.arch === "mock") {
    // The spec keeps no place for the arch value: find its line in the text.
    const lines = text.split("\n");
    const at = lines.findIndex((l) => /^arch\s*:/.test(l));
    const where =
      at < 0
        ? `${spec.loc.line}:${spec.loc.column}`
        : `${at + 1}:${(lines[at] ?? "").indexOf(spec.arch) + 1}`;
    throw new UsageError(
      `${file}:${where}: arch: scenario files run on vtd, smmu or both (arch mock runs only its built-in scenario) [unavailable]`,
    );
  }
  // --arch may run a file on another IOMMU architecture (or both), as long as its units exist
  // there: legacy mode and caching mode are VT-d's.
  const arch = opts.arch ?? spec.arch;
  if (arch !== spec.arch) {
    checkArch(arch);
    if (arch === "mock") {
      throw new UsageError(`--arch: the scenario file runs on arch '${spec.arch}', not 'mock'`);
    }
    for (const u of spec.machine.units) {
      const what =
        u.mode === "legacy" && arch !== "vtd"
          ? "is in legacy mode"
          : u.cachingMode && arch === "smmu"
            ? "has caching mode"
            : null;
      if (what === null) continue;
      throw new UsageError(
        `${file}:${u.loc.line}:${u.loc.column}: unit ${u.name} ${what}, which only VT-d has: the file cannot run on arch '${arch}' [bad-value]`,
      );
    }
  }
  const seed = spec.seed ?? 1;
  if (arch === "both")
    return { scenario: scenarioFromFile(spec, "vtd"), pair: scenarioFromFile(spec, "smmu"), seed };
  return { scenario: scenarioFromFile(spec, arch === "smmu" ? "smmu" : "vtd"), seed };
}

/** `--inject NAME` must name a driver step of the scenario's architecture. */
function checkInject(arch: string, inject: string | undefined): void {
  if (inject === undefined) return;
  const known = INJECTIONS[arch] ?? [];
  if (known.includes(inject)) return;
  if (known.length === 0)
    throw new UsageError(`--inject: arch '${arch}' has no injectable driver steps`);
  throw new UsageError(
    `--inject: unknown step ${JSON.stringify(inject)} for arch '${arch}' (known: ${known.join(", ")})`,
  );
}

function buildProgram(io: CliIo, onRequest: (request: CliRequest) => void): Command {
  const program = new Command("iommu-sim")
    .description("An executable model of the Linux IOMMU subsystem: run scenarios and check them.")
    .version(HARNESS_VERSION, "-V, --version", "print the version and exit")
    .helpOption("-h, --help", "show help and exit")
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      // Commander's own error output (message, or help after a missing command) is replaced by
      // the single line `main` prints.
      writeErr: () => {},
      outputError: () => {},
    });
  program
    .command("run [file]")
    .description("run a scenario (built in, or a YAML scenario file) under the oracle and check it")
    .option("--seed <n>", "unsigned 32-bit seed, decimal or 0x hex (default: the file's, else 1)")
    .option(
      "--arch <name>",
      "architecture: vtd, smmu, both (the same scenario on each, every DMA compared) or mock (default: vtd)",
    )
    .option("--scenario <name>", "built-in scenario to run (default: default)")
    .option(
      "--inject <name>",
      `plant a bug, to see the oracle catch it: a driver step skipped or botched (vtd: ${driverSteps(VTD_INJECTIONS)}; smmu: ${driverSteps(SMMU_INJECTIONS)}), or in the SVA layer (${Object.keys(SVA_INJECTIONS).join(", ")})`,
    )
    .option(
      "--dump <file>",
      "write the machine's memory before teardown as an ELF core, for decode and translate",
    )
    .option("--json", "print one JSON document on stdout instead of the summary")
    .option("--trace", "print every trace event of the run (in --json: a trace array)")
    .option("--verbose", "with an internal error, print its stack trace too")
    .addHelpText("after", () => {
      const list = [...scenarios.values()].sort((a, b) =>
        scenarioKey(a.name, a.arch) < scenarioKey(b.name, b.arch) ? -1 : 1,
      );
      return `\nScenarios:\n${list.map((s) => `  ${s.name} (${s.arch}): ${s.description}\n`).join("")}`;
    })
    .action((file: string | undefined, opts: RunOptions) =>
      onRequest({ command: "run", file, opts }),
    );
  const imageOptions = (cmd: Command): Command =>
    cmd
      .option("--image <file>", "memory image: an ELF64 core or an iommu-sim sparse image")
      .option("--raw", "read --image as a raw RAM dump (needs --base)")
      .option("--base <addr>", "physical address of a raw dump's first byte")
      .option("--rtaddr <value>", "vtd: the RTADDR register: root table address and TTM (required)")
      .option("--cap <value>", "vtd: the CAP register (default: a unit that accepts every mode)")
      .option("--ecap <value>", "vtd: the ECAP register (default: a unit that accepts every mode)")
      .option("--strtab-base <value>", "smmu: the STRTAB_BASE register (required)")
      .option(
        "--strtab-cfg <value>",
        "smmu: the STRTAB_BASE_CFG register: LOG2SIZE, SPLIT, FMT (required)",
      )
      .option(
        "--idr0 <value>",
        "smmu: the IDR0 register (default for --idr0..--idr5: a full SMMUv3.2)",
      )
      .option("--idr1 <value>", "smmu: the IDR1 register")
      .option("--idr2 <value>", "smmu: the IDR2 register")
      .option("--idr3 <value>", "smmu: the IDR3 register")
      .option("--idr4 <value>", "smmu: the IDR4 register")
      .option("--idr5 <value>", "smmu: the IDR5 register");
  imageOptions(
    program
      .command("decode <arch>")
      .description("decode the translation tables in a memory image (arch: vtd or smmu)"),
  )
    .option("--json", "print one JSON document instead of the text tree")
    .option("--device <bdf>", "only this device (BB:DD.F; smmu: or a StreamID)")
    .option("--pasid <n>", "vtd: only this PASID")
    .option("--ssid <n>", "smmu: only this SubstreamID")
    .option(
      "--max-table-pages <n>",
      `stop enumerating page tables after n table pages in all (default ${VTD_DECODE_LIMITS.maxTablePages})`,
    )
    .option(
      "--max-mappings <n>",
      `stop listing mappings after n in all (default ${VTD_DECODE_LIMITS.maxMappings})`,
    )
    .action((arch: string, opts: DecodeOptions) => onRequest({ command: "decode", arch, opts }));
  imageOptions(
    program
      .command("translate <arch> [queries...]")
      .description(
        "translate SID[:PASID]@IOVA (vtd) or SID[:SSID]@IOVA (smmu) requests through the " +
          "hardware model on a memory image (arch: vtd or smmu; - reads queries from stdin, " +
          "one per line)",
      ),
  )
    .option("--write", "make write requests (default: reads)")
    .option("--exec", "make execute (instruction fetch) requests")
    .option("--priv", "make supervisor (privileged) requests")
    .action((arch: string, queries: string[], opts: TranslateOptions) =>
      onRequest({ command: "translate", arch, queries, opts }),
    );
  program
    .command("fuzz")
    .description(
      "run seeded random driver operations and DMAs under the oracle (arch: vtd or smmu)",
    )
    .option("--arch <name>", "architecture: vtd (default) or smmu")
    .option("--seed <n>", "seed of the first run; run k uses seed + k (default: 1)")
    .option("--runs <n>", "number of runs (default: 20)")
    .option("--ops <n>", "operations per run (default: 500)")
    .option("--mode <mode>", "vtd: scalable, legacy or both (default: both)")
    .option("--caching-mode", "vtd: units report CAP.CM (a virtual IOMMU)")
    .option("--cache <policy>", "maximal or minimal caching (default: maximal)")
    .option("--lazy", "DMA-API domains invalidate lazily, through the flush queue")
    .option("--race", "devices re-read recent pages while the driver waits for invalidations")
    .option("--inject <name>", "make the driver skip one step (as for run)")
    .option("--json", "print one JSON document instead of the summary")
    .action((opts: FuzzOptions) => onRequest({ command: "fuzz", opts }));
  program.addHelpText(
    "after",
    "\nExit codes: 0 every check passed, 1 a check failed, 2 bad usage or input,\n" +
      "3 internal error (the model threw; --verbose prints the stack).\n",
  );
  return program;
}

/**
 * The arguments after node and the script, without the first bare `--`: `pnpm start -- --json`
 * passes the `--` through, and no command takes operands that could need it.
 */
function userArgs(argv: readonly string[]): string[] {
  const args = argv.slice(2);
  const dashDash = args.indexOf("--");
  if (dashDash !== -1) args.splice(dashDash, 1);
  return args;
}

/** An unsigned 32-bit integer, in decimal or with a `0x` prefix in hex. */
function parseSeed(text: string): number {
  if (/^(?:[0-9]{1,10}|0[xX][0-9a-fA-F]{1,8})$/.test(text)) {
    const value = Number(text);
    if (value <= 0xffffffff) return value;
  }
  throw new UsageError(`--seed: expected an unsigned 32-bit integer, got ${JSON.stringify(text)}`);
}

/** An unsigned 64-bit option value (decimal or 0x hex). */
function parseU64Option(option: string, text: string): bigint {
  const v = parseUnsigned(text);
  if (v === null) {
    throw new UsageError(
      `${option}: expected an unsigned 64-bit value, decimal or 0x hex, got ${JSON.stringify(text)}`,
    );
  }
  return v;
}

function checkDecodeArch(command: string, arch: string): void {
  const state = Object.hasOwn(DECODE_ARCHES, arch) ? DECODE_ARCHES[arch] : undefined;
  if (state === "available") return;
  if (state === "planned") throw new UsageError(`${command}: arch '${arch}' is not available yet`);
  const known = Object.keys(DECODE_ARCHES).join(", ");
  throw new UsageError(`${command}: unknown arch ${JSON.stringify(arch)} (known: ${known})`);
}

/**
 * Options of the other architecture, refused with one message: VT-d's registers (and `--pasid`)
 * mean nothing to an SMMU, and the SMMU's nothing to a VT-d unit.
 */
const FOREIGN_OPTIONS: Readonly<
  Record<string, ReadonlyArray<[keyof DecodeOptions, string, string]>>
> = Object.freeze({
  smmu: [
    ["rtaddr", "--rtaddr", "smmu takes --strtab-base and --strtab-cfg"],
    ["cap", "--cap", "smmu takes --idr0..--idr5"],
    ["ecap", "--ecap", "smmu takes --idr0..--idr5"],
    ["pasid", "--pasid", "smmu takes --ssid"],
  ],
  vtd: [
    ["strtabBase", "--strtab-base", "vtd takes --rtaddr"],
    ["strtabCfg", "--strtab-cfg", "vtd takes --rtaddr"],
    ...([0, 1, 2, 3, 4, 5] as const).map((i): [keyof DecodeOptions, string, string] => [
      `idr${i}`,
      `--idr${i}`,
      "vtd takes --cap and --ecap",
    ]),
    ["ssid", "--ssid", "vtd takes --pasid"],
  ],
});

function checkArchOptions(arch: string, opts: DecodeOptions | TranslateOptions): void {
  const other = arch === "vtd" ? "smmu" : "vtd";
  for (const [key, flag, hint] of FOREIGN_OPTIONS[arch] ?? []) {
    if ((opts as DecodeOptions)[key] !== undefined)
      throw new UsageError(`${flag}: applies to ${other} only (${hint})`);
  }
}

/** `--image`, `--raw` and `--base`: the memory image and the ranges it covers. */
function readImageOption(opts: ImageOptions) {
  let base: number | undefined;
  if (opts.base !== undefined) {
    const b = parseU64Option("--base", opts.base);
    if (b >= 1n << 52n) {
      throw new UsageError(
        `--base: 0x${b.toString(16)} is beyond the 52-bit physical address space`,
      );
    }
    base = Number(b);
  }
  const image = readMemoryImage({ image: opts.image, raw: opts.raw, base });
  if (image instanceof ImageInputError) throw new UsageError(image.message);
  return image;
}

/** What VT-d decode and translate share: the image, RTADDR and the capability registers. */
function loadImageOptions(opts: ImageOptions) {
  if (opts.rtaddr === undefined) {
    throw new UsageError("--rtaddr: missing: give the RTADDR register value (--rtaddr VALUE)");
  }
  const rtaddr = parseU64Option("--rtaddr", opts.rtaddr);
  const cap = opts.cap === undefined ? undefined : parseU64Option("--cap", opts.cap);
  const ecap = opts.ecap === undefined ? undefined : parseU64Option("--ecap", opts.ecap);
  const caps = vtdCapsFromRegisters(cap, ecap);
  if (typeof caps === "string") throw new UsageError(`--cap/--ecap: ${caps}`);
  const image = readImageOption(opts);
  return {
    mem: image.mem,
    coverage: image.coverage,
    rtaddr,
    cap,
    ecap,
    caps: opts.cap !== undefined || opts.ecap !== undefined ? caps : undefined,
  };
}

/** An unsigned 32-bit option value (decimal or 0x hex). */
function parseU32Option(option: string, text: string): number {
  const v = parseUnsigned(text);
  if (v === null || v > 0xffffffffn) {
    throw new UsageError(
      `${option}: expected an unsigned 32-bit value, decimal or 0x hex, got ${JSON.stringify(text)}`,
    );
  }
  return Number(v);
}

/**
 * What SMMU decode and translate share: STRTAB_BASE, STRTAB_BASE_CFG and the features IDR0..IDR5
 * describe (each missing one the default SMMU's), then the image.
 */
function loadSmmuImageOptions(opts: ImageOptions) {
  if (opts.strtabBase === undefined) {
    throw new UsageError(
      "--strtab-base: missing: give the STRTAB_BASE register value (--strtab-base VALUE)",
    );
  }
  if (opts.strtabCfg === undefined) {
    throw new UsageError(
      "--strtab-cfg: missing: give the STRTAB_BASE_CFG register value (--strtab-cfg VALUE)",
    );
  }
  const strtabBase = parseU64Option("--strtab-base", opts.strtabBase);
  const strtabCfg = BigInt(parseU32Option("--strtab-cfg", opts.strtabCfg));
  const texts = [opts.idr0, opts.idr1, opts.idr2, opts.idr3, opts.idr4, opts.idr5];
  const idr = texts.map((text, i) =>
    text === undefined ? (DEFAULT_SMMU_IDR[i] as number) : parseU32Option(`--idr${i}`, text),
  );
  const features = smmuFeaturesFromIdr(idr);
  if (typeof features === "string") {
    // The message names the register at fault (`IDR5.OAS ...`) when there is one.
    const reg = /^IDR([0-5])\.[A-Z]/.exec(features);
    throw new UsageError(`${reg === null ? "--idr0..--idr5" : `--idr${reg[1]}`}: ${features}`);
  }
  const image = readImageOption(opts);
  return { mem: image.mem, coverage: image.coverage, strtabBase, strtabCfg, features };
}

/** `iommu-sim decode <arch>`: print the devices, translations and mappings of an image. */
async function decodeCommand(arch: string, opts: DecodeOptions, io: CliIo): Promise<number> {
  checkDecodeArch("decode", arch);
  checkArchOptions(arch, opts);
  if (arch === "smmu") return decodeSmmuCommand(opts, io);
  let device: number | undefined;
  if (opts.device !== undefined) {
    const sid = parseSid(opts.device);
    if (typeof sid === "string") throw new UsageError(`--device: ${sid}`);
    device = sid;
  }
  let pasid: number | undefined;
  if (opts.pasid !== undefined) {
    const p = parsePasid(opts.pasid);
    if (typeof p === "string") throw new UsageError(`--pasid: ${p}`);
    pasid = p;
  }
  const maxTablePages = limitOption("--max-table-pages", opts.maxTablePages);
  const maxMappings = limitOption("--max-mappings", opts.maxMappings);
  const input = loadImageOptions(opts);
  const doc = decodeVtd(input.mem, {
    rtaddr: input.rtaddr,
    device,
    pasid,
    caps: input.caps,
    coverage: input.coverage,
    maxTablePages,
    maxMappings,
  });
  if (typeof doc === "string") throw new UsageError(`--rtaddr: ${doc}`);
  io.stdout.write(opts.json ? `${JSON.stringify(doc)}\n` : formatVtdDecode(doc));
  return EXIT.OK;
}

/** `iommu-sim decode smmu`: the stream table's devices, their translations and mappings. */
function decodeSmmuCommand(opts: DecodeOptions, io: CliIo): number {
  let device: number | undefined;
  if (opts.device !== undefined) {
    const sid = parseStreamId(opts.device);
    if (typeof sid === "string") throw new UsageError(`--device: ${sid}`);
    device = sid;
  }
  let ssid: number | undefined;
  if (opts.ssid !== undefined) {
    const s = parseSubstreamId(opts.ssid);
    if (typeof s === "string") throw new UsageError(`--ssid: ${s}`);
    ssid = s;
  }
  const maxTablePages = limitOption("--max-table-pages", opts.maxTablePages);
  const maxMappings = limitOption("--max-mappings", opts.maxMappings);
  const input = loadSmmuImageOptions(opts);
  const doc = decodeSmmu(input.mem, {
    strtabBase: input.strtabBase,
    strtabCfg: input.strtabCfg,
    features: input.features,
    device,
    ssid,
    coverage: input.coverage,
    maxTablePages,
    maxMappings,
  });
  if (typeof doc === "string") throw new UsageError(`--strtab-base/--strtab-cfg: ${doc}`);
  io.stdout.write(opts.json ? `${JSON.stringify(doc)}\n` : formatSmmuDecode(doc));
  return EXIT.OK;
}

/** A work limit of decode: a count up to 2^32 - 1, or undefined for the default. */
function limitOption(option: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const v = parseUnsigned(text);
  if (v === null || v > 0xffffffffn) {
    throw new UsageError(
      `${option}: expected a count up to 4294967295, decimal or 0x hex, got ${JSON.stringify(text)}`,
    );
  }
  return Number(v);
}

/** `iommu-sim translate <arch> QUERY...`: one JSON line per query, from the hardware model. */
async function translateCommand(
  arch: string,
  queryArgs: readonly string[],
  opts: TranslateOptions,
  io: CliIo,
): Promise<number> {
  checkDecodeArch("translate", arch);
  checkArchOptions(arch, opts);
  if (opts.write && opts.exec) {
    throw new UsageError(
      "--exec: an execute request is a read; it cannot be combined with --write",
    );
  }
  const smmu = arch === "smmu";
  // Every query is parsed before anything runs, so bad input prints nothing on stdout.
  const queries: Array<{ text: string; q: VtdQuery | SmmuQuery }> = [];
  const parse = (text: string, where: string) =>
    queries.push({ text, q: smmu ? parseSmmuQueryOrFail(text, where) : parseQuery(text, where) });
  let stdinRead = false;
  for (const text of queryArgs) {
    if (text === "-") {
      if (stdinRead) throw new UsageError("translate: - (stdin) given twice");
      stdinRead = true;
      const lines = (await readAll(io.stdin ?? process.stdin)).split(/\r?\n/);
      lines.forEach((line, i) => {
        const q = line.trim();
        if (q === "" || q.startsWith("#")) return;
        parse(q, `stdin line ${i + 1}`);
      });
    } else {
      parse(text, `query ${JSON.stringify(text)}`);
    }
  }
  if (queries.length === 0) {
    const form = smmu ? "SID[:SSID]@IOVA" : "SID[:PASID]@IOVA";
    throw new UsageError(
      `translate: no queries: give ${form} operands, or - to read them from stdin`,
    );
  }
  if (smmu) {
    const input = loadSmmuImageOptions(opts);
    const translator = SmmuTranslator.create(input.mem, {
      strtabBase: input.strtabBase,
      strtabCfg: input.strtabCfg,
      features: input.features,
      write: opts.write,
      exec: opts.exec,
      priv: opts.priv,
    });
    if (typeof translator === "string") throw new UsageError(`--idr0..--idr5: ${translator}`);
    for (const { text, q } of queries) {
      io.stdout.write(`${JSON.stringify(translator.translate(q as SmmuQuery, text))}\n`);
    }
    return EXIT.OK;
  }
  const input = loadImageOptions(opts);
  const translator = VtdTranslator.create(input.mem, {
    rtaddr: input.rtaddr,
    cap: input.cap,
    ecap: input.ecap,
    write: opts.write,
    exec: opts.exec,
    priv: opts.priv,
  });
  if (typeof translator === "string") throw new UsageError(`--cap/--ecap: ${translator}`);
  for (const { q } of queries) {
    io.stdout.write(`${JSON.stringify(translator.translate(q as VtdQuery))}\n`);
  }
  return EXIT.OK;
}

function parseQuery(text: string, where: string): VtdQuery {
  const q = parseVtdQuery(text);
  if (typeof q === "string") throw new UsageError(`${where}: ${q}`);
  return q;
}

function parseSmmuQueryOrFail(text: string, where: string): SmmuQuery {
  const q = parseSmmuQuery(text);
  if (typeof q === "string") throw new UsageError(`${where}: ${q}`);
  return q;
}

/** Everything `input` yields, as UTF-8 text. */
async function readAll(input: Input): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of input) {
    text += typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true });
  }
  return text + decoder.decode();
}

function checkArch(arch: string): void {
  const state = Object.hasOwn(ARCHES, arch) ? ARCHES[arch] : undefined;
  if (state === "available") return;
  if (state === "planned") throw new UsageError(`--arch: arch '${arch}' is not available yet`);
  const known = Object.keys(ARCHES).join(", ");
  throw new UsageError(`--arch: unknown arch ${JSON.stringify(arch)} (known: ${known})`);
}

function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err).replace(/\s*\n\s*/g, " ");
  // A ModelBug or a plain Error speaks for itself; name other kinds (TypeError, RangeError...).
  const named = err.name === "Error" || err.name === "ModelBug" ? "" : `${err.name}: `;
  return `${named}${err.message}`.replace(/\s*\n\s*/g, " ");
}

/** True when this module is the script node was started with (`node ... src/cli.ts run`). */
function isEntryPoint(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(path.resolve(script)) === realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}

/** A reader that went away (`iommu-sim run --trace | head`) ends the run quietly. */
export function exitQuietlyOnEpipe(stream: NodeJS.WriteStream): void {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
}

if (isEntryPoint(import.meta.url)) {
  exitQuietlyOnEpipe(process.stdout);
  process.exitCode = await main(process.argv);
}
