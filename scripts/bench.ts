// `pnpm bench`: run each package's bench/*.ts in its own node process, with C baseline ratios.

import { type SpawnOptions, spawn } from "node:child_process";
import { accessSync, constants, existsSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type BenchResult, REPS, WARMUP } from "./bench-kit.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const WORKSPACES = ["packages", "apps"];
const TSX = ["--conditions=source", "--import", "tsx"];

const USAGE = `Usage: pnpm bench [options]

Runs every packages/*/bench/*.ts and apps/*/bench/*.ts (not *.bench.ts), each in its own node
process, after the C baseline in ../shared/bench-c, and compares the two.

Options:
  --package NAME      only the package or app whose directory is NAME
  --filter SUBSTRING  only bench files whose name contains SUBSTRING
  --json              one JSON line per result on stdout, nothing else (progress on stderr)
  --no-baseline       skip the C baseline (no c_ns_per_op / ratio)
  --baseline-dir DIR  the C baseline directory (default: ../shared/bench-c from the repo root)
  --help              show this help
`;

interface Options {
  package?: string;
  filter?: string;
  json: boolean;
  baseline: boolean;
  baselineDir: string;
  help: boolean;
}

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

function usageError(message: string): never {
  log(message);
  process.stderr.write(USAGE);
  process.exit(2);
}

/** Hand-rolled parsing: `--opt value` and `--opt=value` both work; a bare `--` is ignored. */
function parseArgs(argv: readonly string[]): Options {
  const opts: Options = {
    json: false,
    baseline: true,
    baselineDir: path.resolve(repoRoot, "../shared/bench-c"),
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].startsWith("--") ? splitOnce(argv[i], "=") : [argv[i]];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === "") usageError(`${flag} needs a value`);
      return v;
    };
    if (flag === "--") continue;
    else if (flag === "--package") opts.package = value();
    else if (flag === "--filter") opts.filter = value();
    else if (flag === "--baseline-dir") opts.baselineDir = path.resolve(value());
    else if (flag === "--json" && inline === undefined) opts.json = true;
    else if (flag === "--no-baseline" && inline === undefined) opts.baseline = false;
    else if ((flag === "--help" || flag === "-h") && inline === undefined) opts.help = true;
    else usageError(`unknown argument: ${argv[i]}`);
  }
  return opts;
}

function splitOnce(s: string, sep: string): [string, string?] {
  const at = s.indexOf(sep);
  return at < 0 ? [s] : [s.slice(0, at), s.slice(at + 1)];
}

function isDir(p: string): boolean {
  return existsSync(p) && statSync(p).isDirectory();
}

/** Bench scripts, as repo-relative paths, sorted. */
function discover(opts: Options): string[] {
  const found: string[] = [];
  for (const ws of WORKSPACES) {
    if (!isDir(path.join(repoRoot, ws))) continue;
    for (const pkg of readdirSync(path.join(repoRoot, ws))) {
      if (opts.package !== undefined && pkg !== opts.package) continue;
      const dir = path.join(ws, pkg, "bench");
      if (!isDir(path.join(repoRoot, dir))) continue;
      for (const file of readdirSync(path.join(repoRoot, dir))) {
        if (!isBenchScript(file) || !file.includes(opts.filter ?? "")) continue;
        found.push(path.join(dir, file));
      }
    }
  }
  return found.sort();
}

function describeSelection(opts: Options): string {
  const pkg = opts.package === undefined ? "" : ` --package ${opts.package}`;
  return opts.filter === undefined ? pkg : `${pkg} --filter ${opts.filter}`;
}

function isBenchScript(file: string): boolean {
  return file.endsWith(".ts") && !file.endsWith(".d.ts") && !file.endsWith(".bench.ts");
}

/** Run a command with stdout captured and stderr passed through to ours. */
function run(cmd: string, args: readonly string[]): Promise<{ code: number; stdout: string }> {
  const options: SpawnOptions = { cwd: repoRoot, stdio: ["ignore", "pipe", "inherit"] };
  return new Promise((resolve) => {
    const child = spawn(cmd, args, options);
    let stdout = "";
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
    });
    child.on("error", (err) => resolve({ code: -1, stdout: `${stdout}\n${err.message}` }));
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout }));
  });
}

function lines(text: string): string[] {
  return text.split("\n").filter((l) => l.trim() !== "");
}

function onPath(exe: string): boolean {
  return (process.env.PATH ?? "").split(path.delimiter).some((dir) => {
    try {
      accessSync(path.join(dir || ".", exe), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** C ns/op by workload name, or a reason why there is none. */
async function runBaseline(dir: string): Promise<Map<string, number> | string> {
  if (!isDir(dir)) return `no C baseline at ${dir}`;
  const missing = ["make", "gcc"].filter((exe) => !onPath(exe));
  if (missing.length > 0) return `${missing.join(" and ")} not on PATH`;
  const out = path.join(tmpdir(), "iommu-sim-bench-c");
  log(`C baseline: make -s -C ${dir} run OUT=${out}`);
  const { code, stdout } = await run("make", ["-s", "-C", dir, "run", `OUT=${out}`]);
  if (code !== 0) return `make exited with ${code}`;
  const byName = new Map<string, number>();
  try {
    // make may add its own chatter; the programs' lines are the JSON objects.
    for (const line of lines(stdout).filter((l) => l.startsWith("{"))) {
      const results: Record<string, { ns_per_op: number }> = JSON.parse(line).results ?? {};
      for (const [name, r] of Object.entries(results)) byName.set(name, r.ns_per_op);
    }
  } catch (err) {
    return `unreadable output (${(err as Error).message})`;
  }
  return byName.size > 0 ? byName : "no results in its output";
}

/** A script's results, or why it failed (non-zero exit, or a stdout line that is not a result). */
async function runScript(file: string): Promise<{ results: BenchResult[]; error?: string }> {
  const { code, stdout } = await run(process.execPath, [...TSX, file]);
  const results: BenchResult[] = [];
  for (const line of lines(stdout)) {
    try {
      results.push(JSON.parse(line));
    } catch {
      return { results, error: `printed a non-JSON line on stdout: ${line.slice(0, 80)}` };
    }
  }
  return code === 0 ? { results } : { results, error: `exited with ${code}` };
}

/** The C figure of the same work: by name, or by the `c_workload` a result names when it differs. */
function withBaseline(r: BenchResult, c: Map<string, number>): BenchResult {
  const cNs = c.get(typeof r.c_workload === "string" ? r.c_workload : r.name);
  if (cNs === undefined || cNs <= 0) return r;
  return { ...r, c_ns_per_op: cNs, ratio: Math.round((r.ns_per_op / cNs) * 100) / 100 };
}

const SHOWN = new Set(["bench", "name", "ns_per_op", "ops", "c_ns_per_op", "ratio"]);

function formatValue(v: unknown): string {
  if (typeof v === "number") return String(Math.round(v * 1000) / 1000);
  if (typeof v === "string") return /^[\w.+-]*$/.test(v) && v !== "" ? v : JSON.stringify(v);
  return JSON.stringify(v);
}

function extras(r: BenchResult): string {
  return Object.entries(r)
    .filter(([k]) => !SHOWN.has(k))
    .map(([k, v]) => `${k}=${formatValue(v)}`)
    .join(" ");
}

function row(r: BenchResult): string[] {
  const cNs = typeof r.c_ns_per_op === "number" ? r.c_ns_per_op.toFixed(2) : "-";
  const ratio = typeof r.ratio === "number" ? r.ratio.toFixed(2) : "-";
  const ops = r.ops.toLocaleString("en-US");
  return [r.bench, r.name, r.ns_per_op.toFixed(2), ops, cNs, ratio, extras(r)];
}

function table(results: readonly BenchResult[]): string {
  const head = ["bench", "name", "ns/op", "ops", "C ns/op", "ratio", "extra"];
  const rows = [head, ...results.map(row)];
  const numeric = [false, false, true, true, true, true, false];
  const width = head.map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const fmt = (r: string[]) =>
    r
      .map((cell, c) => (numeric[c] ? cell.padStart(width[c]) : cell.padEnd(width[c])))
      .join("  ")
      .trimEnd();
  const title =
    `ns/op: median of ${REPS} timed repetitions after ${WARMUP} warm-ups; ` +
    "ratio = TS ns/op / C ns/op, only meaningful within one run";
  return [title, "", fmt(head), ...rows.slice(1).map(fmt)].join("\n");
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.help) {
    process.stdout.write(USAGE);
    return;
  }
  const scripts = discover(opts);
  if (scripts.length === 0) {
    log(`no bench scripts match${describeSelection(opts)}`);
    process.exit(1);
  }
  let baseline = new Map<string, number>();
  if (opts.baseline) {
    const c = await runBaseline(opts.baselineDir);
    if (typeof c === "string") log(`C baseline unavailable (${c}); continuing without ratios`);
    else baseline = c;
  }
  const all: BenchResult[] = [];
  const failed: string[] = [];
  for (const file of scripts) {
    log(`running ${file}`);
    const t0 = Date.now();
    const { results, error } = await runScript(file);
    const merged = results.map((r) => withBaseline(r, baseline));
    if (opts.json) for (const r of merged) process.stdout.write(`${JSON.stringify(r)}\n`);
    all.push(...merged);
    if (error !== undefined) {
      log(`FAILED ${file}: ${error}`);
      failed.push(file);
    } else log(`${file}: ${results.length} results in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  if (!opts.json) process.stdout.write(`${table(all)}\n`);
  if (failed.length > 0) {
    log(`${failed.length} of ${scripts.length} bench scripts failed: ${failed.join(", ")}`);
    process.exitCode = 1;
  }
}

await main();
