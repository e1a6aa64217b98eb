// Scenarios: named runs on one architecture, the counters they keep and the checks they make.

import type { TraceEvent, TraceListener } from "@iommu-sim/iommu-core";
import type { PhysMemory } from "@iommu-sim/iommu-core/platform";
import type { DmaOutcome } from "./machine/harness.js";
import type { Violation } from "./oracle/violation.js";
import { defaultScenario } from "./scenarios/default.js";
import { smmuDefaultScenario, vtdDefaultScenario } from "./scenarios/machine-default.js";
import { smmuSvaScenario, vtdSvaScenario } from "./scenarios/sva.js";
import { HARNESS_VERSION } from "./version.js";

/** What a running scenario sees: its seed, and where it reports checks and counts. */
export interface ScenarioContext {
  /** The run's seed, an unsigned 32-bit integer; the same seed must give the same run. */
  readonly seed: number;
  /** Record one check: passed when `ok`, else a failure with `message`. */
  check(name: string, ok: boolean, message?: string): void;
  /** Count `n` (default 1) operations: driver-side calls such as alloc, map, attach. */
  countOp(n?: number): void;
  /** Count `n` (default 1) DMAs issued by devices. */
  countDma(n?: number): void;
  /** Count `n` (default 1) faults the hardware reported. */
  countFault(n?: number): void;
  /**
   * Where the scenario's machine sends its trace events when the run is traced (`--trace`), or
   * null: subscribe it to the machine's `Trace`.
   */
  readonly traceListener: TraceListener | null;
  /**
   * Hand over what the oracle found: the violations it kept and how many it saw in all. Any
   * violation fails the run.
   */
  violations(list: readonly Violation[], total?: number): void;
  /** The driver step to skip (`--inject`), or null. */
  readonly inject: string | null;
  /**
   * Offer the machine's memory as it is now, with each IOMMU unit's root-table register, for
   * `--dump` (scenarios call it once, before their teardown). Does nothing unless asked for.
   */
  snapshot(mem: PhysMemory, units: readonly SnapshotUnit[]): void;
  /**
   * Where a scenario whose machine can record DMA outcomes appends them, in order, when the run
   * compares architectures (`--arch both`); null otherwise.
   */
  readonly outcomes: DmaOutcome[] | null;
}

/** A unit's register a decoder needs to read the snapshot (VT-d: RTADDR). */
export interface SnapshotUnit {
  readonly name: string;
  readonly register: string;
  readonly value: string;
}

/** A named, deterministic run on one architecture. */
export interface Scenario {
  readonly name: string;
  /** The architecture the scenario runs on (`mock` for the mock IOMMU of iommu-core). */
  readonly arch: string;
  /** One line for listings. */
  readonly description: string;
  /** Run to completion. Bad behaviour of the model is a failed check; a throw is a model bug. */
  run(ctx: ScenarioContext): void | Promise<void>;
}

/** One failed check. */
export interface CheckFailure {
  readonly check: string;
  readonly message: string;
}

/** The outcome of one run: what `iommu-sim run` prints, as text or as JSON. */
export interface RunReport {
  readonly version: string;
  readonly scenario: string;
  readonly arch: string;
  readonly seed: number;
  readonly ops: number;
  readonly dmas: number;
  readonly faults: number;
  readonly checks: { readonly passed: number; readonly failed: number };
  readonly failures: readonly CheckFailure[];
  /** What the oracle found, in the order it found it (at most the first 64). */
  readonly violations: readonly Violation[];
  /** Violations seen in all (more than `violations.length` when some were only counted). */
  readonly violationsTotal: number;
  /** The trace events, in order, when the run was traced. */
  readonly trace?: readonly TraceEvent[];
  /** Every DMA's outcome, when the run recorded them (`outcomes` option). */
  readonly outcomes?: readonly DmaOutcome[];
}

/** How to run a scenario. */
export interface ScenarioRunOptions {
  /** Record the machine's trace events into the report. */
  trace?: boolean;
  /** The driver step the scenario's machine skips (`--inject NAME`). */
  inject?: string | null;
  /** Receives the scenario's snapshot (`--dump`). */
  snapshot?: (mem: PhysMemory, units: readonly SnapshotUnit[]) => void;
  /** Record every DMA's outcome into the report (for comparing architectures). */
  outcomes?: boolean;
}

/** The key of a scenario in `scenarios`: its name and arch. */
export function scenarioKey(name: string, arch: string): string {
  return `${name}@${arch}`;
}

/**
 * The built-in scenarios by `scenarioKey(name, arch)`: the same name may exist on several arches.
 * Tests may add their own and must remove them again.
 */
export const scenarios: Map<string, Scenario> = new Map(
  [defaultScenario, vtdDefaultScenario, smmuDefaultScenario, vtdSvaScenario, smmuSvaScenario].map(
    (s) => [scenarioKey(s.name, s.arch), s],
  ),
);

/**
 * Run `scenario` with `seed` and collect its counters and checks. Whatever the scenario throws
 * (a `ModelBug` or any other exception) propagates: it is a bug, not a failed check.
 */
export async function runScenario(
  scenario: Scenario,
  seed: number,
  options: ScenarioRunOptions = {},
): Promise<RunReport> {
  if (seed >>> 0 !== seed) throw new Error(`seed ${seed} is not an unsigned 32-bit integer`);
  let ops = 0;
  let dmas = 0;
  let faults = 0;
  let passed = 0;
  const failures: CheckFailure[] = [];
  const events: TraceEvent[] = [];
  const violations: Violation[] = [];
  let violationsTotal = 0;
  const outcomes: DmaOutcome[] | null = options.outcomes ? [] : null;
  const ctx: ScenarioContext = {
    outcomes,
    seed,
    inject: options.inject ?? null,
    traceListener: options.trace ? (event) => events.push(event) : null,
    snapshot(mem, units) {
      options.snapshot?.(mem, units);
    },
    violations(list, total) {
      violations.push(...list);
      violationsTotal += Math.max(total ?? list.length, list.length);
    },
    check(name, ok, message) {
      if (ok) passed++;
      else failures.push({ check: name, message: message ?? "check failed" });
    },
    countOp(n = 1) {
      ops += count("countOp", n);
    },
    countDma(n = 1) {
      dmas += count("countDma", n);
    },
    countFault(n = 1) {
      faults += count("countFault", n);
    },
  };
  await scenario.run(ctx);
  return {
    version: HARNESS_VERSION,
    scenario: scenario.name,
    arch: scenario.arch,
    seed,
    ops,
    dmas,
    faults,
    checks: { passed, failed: failures.length },
    failures,
    violations,
    violationsTotal,
    ...(options.trace ? { trace: events } : {}),
    ...(outcomes === null ? {} : { outcomes }),
  };
}

function count(what: string, n: number): number {
  // A scenario counting a fraction or a negative number is a bug in the scenario.
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${what}(${n}): not a count`);
  return n;
}
