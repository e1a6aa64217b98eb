// The `iommu-sim` command line: parses options, runs a scenario, prints its report, and maps the
// outcome to an exit code.

import { realpathSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Command, CommanderError } from "commander";
import { formatHuman, formatTraceEvent, toJson } from "./report.js";
import { type RunReport, runScenario, scenarios } from "./scenario.js";
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

/** The streams `main` writes to. */
export interface CliIo {
  readonly stdout: Output;
  readonly stderr: Output;
}

/** Architectures `--arch` names: those that run now, and those announced for later. */
const ARCHES: Readonly<Record<string, "available" | "planned">> = Object.freeze({
  mock: "available",
  vtd: "planned",
  smmu: "planned",
});

interface RunOptions {
  seed?: string;
  arch?: string;
  scenario?: string;
  json?: boolean;
  trace?: boolean;
  verbose?: boolean;
}

/** Bad usage or input, reported as one line and exit code 2. */
class UsageError extends Error {}

/**
 * Run the `iommu-sim` command line and return its exit code (see {@link EXIT}). It never exits
 * the process; whatever a scenario throws becomes exit code 3. `argv` is shaped like
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

  let request: RunOptions | undefined;
  const program = buildProgram(io, (opts) => {
    request = opts;
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

  const opts = request;
  const arch = opts.arch ?? "mock";
  const scenarioName = opts.scenario ?? "default";
  let seed: number;
  try {
    seed = opts.seed === undefined ? 1 : parseSeed(opts.seed);
    checkArch(arch);
  } catch (err) {
    if (err instanceof UsageError) return fail(err.message, EXIT.USAGE);
    throw err;
  }
  const scenario = scenarios.get(scenarioName);
  if (scenario === undefined) {
    const known = [...scenarios.keys()].sort().join(", ");
    return fail(`--scenario: unknown scenario '${scenarioName}' (known: ${known})`, EXIT.USAGE);
  }
  if (scenario.arch !== arch) {
    return fail(
      `--scenario: scenario '${scenario.name}' runs on arch '${scenario.arch}', not '${arch}'`,
      EXIT.USAGE,
    );
  }

  let report: RunReport;
  try {
    report = await runScenario(scenario, seed, { trace: opts.trace === true });
  } catch (err) {
    io.stderr.write(`iommu-sim: internal error: ${describeError(err)}\n`);
    if (opts.verbose && err instanceof Error && err.stack !== undefined) {
      io.stderr.write(`${err.stack}\n`);
    }
    return EXIT.INTERNAL;
  }
  if (opts.json) {
    io.stdout.write(`${toJson(report)}\n`);
  } else {
    for (const event of report.trace ?? []) io.stdout.write(formatTraceEvent(event));
    io.stdout.write(formatHuman(report));
  }
  return report.checks.failed === 0 ? EXIT.OK : EXIT.CHECK_FAILED;
}

function buildProgram(io: CliIo, onRun: (opts: RunOptions) => void): Command {
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
    .command("run")
    .description("run a scenario and check it")
    .option("--seed <n>", "unsigned 32-bit seed, decimal or 0x hex (default: 1)")
    .option("--arch <name>", "architecture; only mock so far (default: mock)")
    .option("--scenario <name>", "scenario to run (default: default)")
    .option("--json", "print one JSON document on stdout instead of the summary")
    .option("--trace", "print every trace event of the run (in --json: a trace array)")
    .option("--verbose", "with an internal error, print its stack trace too")
    .addHelpText("after", () => {
      const list = [...scenarios.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
      return `\nScenarios:\n${list.map((s) => `  ${s.name} (${s.arch}): ${s.description}\n`).join("")}`;
    })
    .action((opts: RunOptions) => onRun(opts));
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
