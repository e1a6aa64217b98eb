// What the VT-d and SMMUv3 oracle mutation tests share: mutants, hunts, diagnoses, the catch table.

import type { Device, IommuDomainOps, IommuPageResponse, IopfFault } from "@iommu-sim/iommu-core";
import { afterAll, expect, it } from "vitest";
import {
  type FuzzOptions,
  type FuzzResult,
  runFuzz,
  runVtdFuzz,
  type VtdFuzzOptions,
} from "../src/fuzz/fuzz.js";
import type { Harness, MachineSpec } from "../src/machine/harness.js";
import { SmmuHarness } from "../src/machine/smmu-harness.js";
import { VtdHarness } from "../src/machine/vtd-harness.js";
import type { Violation, ViolationKind } from "../src/oracle/violation.js";
import { runScenario, type Scenario, type ScenarioContext } from "../src/scenario.js";
import {
  runMachineDefault,
  SMMU_DEFAULT_MACHINE,
  VTD_DEFAULT_MACHINE,
} from "../src/scenarios/machine-default.js";
import { runSva, SVA_MACHINE } from "../src/scenarios/sva.js";

/** A hunt fuzzes each configuration with seeds 1..HUNT_SEEDS. */
export const HUNT_SEEDS = 8;
/** Owner operations per fuzz run. */
export const OPS = 400;

// --- Planting ----------------------------------------------------------------------------------------

/** `fn`, with `flag.on` set while it runs (so that a wrapper elsewhere knows where it is called from). */
export function during<A extends unknown[], R>(
  flag: { on: boolean },
  fn: (...args: A) => R,
): (...args: A) => R {
  return (...args: A): R => {
    const was = flag.on;
    flag.on = true;
    try {
      return fn(...args);
    } finally {
      flag.on = was;
    }
  };
}

/** The keys of `T` that hold functions. */
type MethodKey<T> = {
  [K in keyof T]-?: T[K] extends (...args: never[]) => unknown ? K : never;
}[keyof T];

/**
 * Replace method `name` of each of `targets` (the units' queues, say) by what `wrap` makes of the
 * original, bound to its object.
 */
export function wrapEach<T, K extends MethodKey<T>>(
  targets: Iterable<T>,
  name: K,
  wrap: (orig: T[K]) => T[K],
): void {
  for (const t of targets) {
    const orig = t[name] as (...args: unknown[]) => unknown;
    t[name] = wrap(orig.bind(t) as T[K]);
  }
}

/** The bug both drivers can have: a map of more than one page starts one page too far into the physical range. */
export function plantMapOnePageOff(ops: IommuDomainOps): void {
  const orig = ops.mapPages?.bind(ops);
  if (orig === undefined) throw new Error("no mapPages");
  ops.mapPages = (d, iova, pa, pgsize, pgcount, prot) =>
    orig(d, iova, pgcount > 1 ? pa + pgsize : pa, pgsize, pgcount, prot);
}

/** The bug both drivers can have: every page group response is sent twice. */
export function plantResponseTwice(drv: {
  pageResponse(dev: Device, evt: IopfFault, msg: IommuPageResponse): void;
}): void {
  const orig = drv.pageResponse.bind(drv);
  drv.pageResponse = (dev, evt, msg) => {
    orig(dev, evt, msg);
    orig(dev, evt, msg);
  };
}

// --- Mutants and what the oracle must say about them ------------------------------------------------

/** What the oracle must say about a mutant: a violation of `kind` with these details. */
export interface Expected {
  /** The kind (or one of the kinds: a stale configuration shows as either). */
  readonly kind: ViolationKind | readonly ViolationKind[];
  readonly cache?: string;
  readonly descriptor?: string;
  readonly message?: RegExp;
  /** The diagnosis must say an invalidation covered the entry but came too early. */
  readonly early?: boolean;
  /** An id-reuse or leak must name an ID of this space. */
  readonly space?: "asid" | "vmid" | "pasid";
}

/** Whether `v` is the violation `e` asks for. */
export function matches(v: Violation, e: Expected): boolean {
  if (typeof e.kind === "string" ? v.kind !== e.kind : !e.kind.includes(v.kind)) return false;
  if (e.cache !== undefined && v.staleEntry?.cache !== e.cache) return false;
  if (e.descriptor !== undefined && v.missingInvalidation?.descriptor !== e.descriptor)
    return false;
  if (e.early !== undefined && (v.earlyInvalidation !== undefined) !== e.early) return false;
  if (e.space !== undefined && v.id?.space !== e.space) return false;
  return e.message === undefined || e.message.test(v.message);
}

/** `v` in one line: kind, cache, missing invalidation and message. */
export function describeViolation(v: Violation): string {
  return `${v.kind} ${v.staleEntry?.cache ?? ""} ${v.missingInvalidation?.descriptor ?? ""}: ${v.message}`;
}

/** Plants a bug in harness `H` once its devices are probed. */
export type Plant<H extends Harness> = (h: H, devices: readonly Device[]) => void;

/** One planted driver bug, for harness `H` and fuzz configurations `C`. */
export interface Mutant<H extends Harness, C> {
  readonly name: string;
  /** The bug, as a reviewer would describe it. */
  readonly bug: string;
  /** Fuzz configurations in which the bug matters (each test file says how they are tried). */
  readonly fuzz?: readonly C[];
  /** Also (or only) the default scenario. */
  readonly scenario?: boolean;
  /** Plant the bug once the devices are probed. */
  plant(h: H, devices: readonly Device[]): void;
  readonly expect: Expected;
}

// --- The architectures ------------------------------------------------------------------------------

/** What differs between the architectures: the harness, the default machine, the fuzzer. */
export interface MutantArch<H extends Harness, C> {
  /** The scenario's `arch`. */
  readonly arch: "vtd" | "smmu";
  /** The architecture in prose. */
  readonly title: string;
  /** The machine of the scenario hunts (the default scenario's, or `scenario`'s). */
  readonly machine: MachineSpec;
  /** The scenario a mutant marked `scenario` runs (default: the default scenario, on `machine`). */
  readonly scenario?: {
    readonly name: string;
    run(h: H, ctx: ScenarioContext): void;
  };
  /** A harness of `spec`. */
  harness(spec: MachineSpec, seed: number): H;
  /** One fuzz run of OPS operations in `cfg`, `plant` called once the devices are probed. */
  fuzz(cfg: C, seed: number, plant: Plant<H>): FuzzResult;
  /** `cfg` in a few words. */
  flags(cfg: C): string;
}

/** A VT-d fuzz configuration (seed, operations and setup are the hunt's). */
export type VtdFuzzConfig = Omit<VtdFuzzOptions, "seed" | "ops" | "setup" | "inject">;

/** An SMMUv3 fuzz configuration (seed, operations and setup are the hunt's). */
export type SmmuFuzzConfig = Omit<
  FuzzOptions,
  "seed" | "ops" | "setup" | "inject" | "arch" | "mode"
>;

/** A bug planted in the VT-d driver (VtdDriver, VtdQi). */
export type VtdMutant = Mutant<VtdHarness, VtdFuzzConfig>;
/** A bug planted in the SMMUv3 driver (SmmuV3Driver, SmmuCmdq). */
export type SmmuMutant = Mutant<SmmuHarness, SmmuFuzzConfig>;

/** VT-d: VtdHarness, the default machine's dmar0, runVtdFuzz (without processes: the hunts are tuned to the driver operations). */
export const VTD: MutantArch<VtdHarness, VtdFuzzConfig> = {
  arch: "vtd",
  title: "VT-d",
  machine: VTD_DEFAULT_MACHINE,
  harness: (spec, seed) => new VtdHarness(spec, seed),
  fuzz: (cfg, seed, plant) => runVtdFuzz({ ...cfg, seed, ops: OPS, sva: false, setup: plant }),
  flags: (cfg) =>
    `${cfg.mode ?? "scalable"}${cfg.cachingMode ? " CM" : ""}${cfg.lazy ? " lazy" : ""}${cfg.race ? " race" : ""}`,
};

/** SMMUv3: SmmuHarness, the default machine's smmu0, runFuzz on SMMU. */
export const SMMU: MutantArch<SmmuHarness, SmmuFuzzConfig> = {
  arch: "smmu",
  title: "SMMUv3",
  machine: SMMU_DEFAULT_MACHINE,
  harness: (spec, seed) => new SmmuHarness(spec, seed),
  fuzz: (cfg, seed, plant) =>
    runFuzz({
      ...cfg,
      arch: "smmu",
      seed,
      ops: OPS,
      sva: false,
      setup: plant as FuzzOptions["setup"],
    }),
  flags: (cfg) =>
    [cfg.cache ?? "maximal", cfg.lazy ? "lazy" : "", cfg.race ? "race" : ""]
      .filter((x) => x !== "")
      .join(" "),
};

/**
 * VT-d with processes: the fuzzer's SVA operations on (scalable mode only), and the sva scenario
 * on its two-unit machine.
 */
export const VTD_SVA: MutantArch<VtdHarness, VtdFuzzConfig> = {
  arch: "vtd",
  title: "VT-d",
  machine: SVA_MACHINE,
  scenario: { name: "sva", run: runSva },
  harness: (spec, seed) => new VtdHarness(spec, seed),
  fuzz: (cfg, seed, plant) => runVtdFuzz({ ...cfg, seed, ops: OPS, setup: plant }),
  flags: (cfg) => `${VTD.flags(cfg)} sva`,
};

/** SMMUv3 with processes: the fuzzer's SVA operations on, and the sva scenario on two SMMUs. */
export const SMMU_SVA: MutantArch<SmmuHarness, SmmuFuzzConfig> = {
  arch: "smmu",
  title: "SMMUv3",
  machine: SVA_MACHINE,
  scenario: { name: "sva", run: runSva },
  harness: (spec, seed) => new SmmuHarness(spec, seed),
  fuzz: (cfg, seed, plant) =>
    runFuzz({ ...cfg, arch: "smmu", seed, ops: OPS, setup: plant as FuzzOptions["setup"] }),
  flags: (cfg) => `${SMMU.flags(cfg) || "maximal"} sva`,
};

// --- Hunting ----------------------------------------------------------------------------------------

/** How one mutant was caught (or not). */
export interface Hunt {
  readonly where: string;
  readonly runs: number;
  readonly firstViolationOp: number;
  readonly violations: readonly Violation[];
  readonly failures: readonly string[];
}

/** The default scenario of `arch` with the mutant planted. */
export async function scenarioRun<H extends Harness, C>(
  arch: MutantArch<H, C>,
  m: Mutant<H, C>,
  seed: number,
): Promise<Hunt> {
  let planted: H | null = null;
  const scenario: Scenario = {
    name: `${arch.scenario?.name ?? "default"}+${m.name}`,
    arch: arch.arch,
    description: `the ${arch.scenario?.name ?? "default"} ${arch.title} scenario with a planted driver bug`,
    run(ctx) {
      const h = arch.harness(arch.machine, ctx.seed);
      m.plant(h, []);
      planted = h;
      if (arch.scenario === undefined) runMachineDefault(h, ctx);
      else arch.scenario.run(h, ctx);
      ctx.violations(h.oracle.violations, h.oracle.stats.violations);
    },
  };
  const r = await runScenario(scenario, seed);
  expect(planted).not.toBeNull();
  return {
    where: `${arch.scenario?.name ?? "default"} scenario, seed ${seed}`,
    runs: 1,
    firstViolationOp: -1,
    violations: r.violations,
    failures: r.failures.map((f) => `${f.check}: ${f.message}`),
  };
}

/** Fuzz in each of `configs` in turn, seeds 1..HUNT_SEEDS, until a run has a violation. */
export function fuzzHunt<H extends Harness, C>(
  arch: MutantArch<H, C>,
  m: Mutant<H, C>,
  configs: readonly C[],
): Hunt | null {
  let runs = 0;
  for (const cfg of configs) {
    for (let seed = 1; seed <= HUNT_SEEDS; seed++) {
      runs++;
      const r = arch.fuzz(cfg, seed, m.plant);
      if (r.violationsTotal > 0)
        return {
          where: `fuzz ${arch.flags(cfg)}, seed ${seed}`,
          runs,
          firstViolationOp: r.firstViolationOp,
          violations: r.violations,
          failures: [],
        };
    }
  }
  return null;
}

/** A harmless variant raises nothing in any of its fuzz configurations, seeds 1..`seeds`. */
export function expectHarmless<H extends Harness, C>(
  arch: MutantArch<H, C>,
  m: Mutant<H, C>,
  seeds = 4,
): void {
  for (const cfg of m.fuzz ?? []) {
    for (let seed = 1; seed <= seeds; seed++) {
      const r = arch.fuzz(cfg, seed, m.plant);
      expect(r.violations.map((v) => v.message)).toEqual([]);
    }
  }
}

// --- The catches ------------------------------------------------------------------------------------

/** The catches of one test file, for the table MUTANT_TABLE=1 prints after its tests. */
export class CatchTable {
  private readonly rows: { mutant: string; hunt: Hunt; hit: Violation | undefined }[] = [];

  /** A table printed after the file's tests when MUTANT_TABLE is set. */
  static printedAfterAll(): CatchTable {
    const table = new CatchTable();
    afterAll(() => {
      if (process.env.MUTANT_TABLE !== undefined) process.stdout.write(table.format());
    });
    return table;
  }

  /** The fuzz hunt caught `m` with the violation it expects. */
  expectCaught(
    m: { readonly name: string; readonly bug: string; readonly expect: Expected },
    hunt: Hunt | null,
  ): void {
    expect(hunt, `${m.name} was never caught: ${m.bug}`).not.toBeNull();
    this.expectHit(m.name, m, hunt as Hunt);
  }

  /** `hunt` has the violation `m` expects; recorded as `label` either way. */
  expectHit(
    label: string,
    m: { readonly name: string; readonly expect: Expected },
    hunt: Hunt,
  ): void {
    const hit = hunt.violations.find((v) => matches(v, m.expect));
    this.rows.push({ mutant: label, hunt, hit });
    expect(
      hit,
      `${m.name}: no ${m.expect.kind} violation as expected among\n${hunt.violations.map(describeViolation).join("\n")}`,
    ).toBeDefined();
  }

  /** One row a catch: where, after how many runs and operations, the kinds seen, the diagnosis. */
  format(): string {
    const name = Math.max(0, ...this.rows.map((r) => r.mutant.length));
    const where = Math.max(0, ...this.rows.map((r) => r.hunt.where.length));
    const lines = this.rows.map(
      ({ mutant, hunt, hit }) =>
        `${mutant.padEnd(name)} ${hunt.where.padEnd(where)} runs ${String(hunt.runs).padStart(2)}  first op ${String(hunt.firstViolationOp).padStart(4)}  ${[...new Set(hunt.violations.map((v) => v.kind))].join(", ")}${hunt.failures.length > 0 ? `  (${hunt.failures.length} scenario checks failed)` : ""}\n    ${hit === undefined ? "-" : describeViolation(hit)}`,
    );
    return `${lines.join("\n")}\n`;
  }
}

/** A test per mutant marked `scenario`: the default scenario with it planted has its violation. */
export function itCatchesInScenario<H extends Harness, C>(
  arch: MutantArch<H, C>,
  mutants: readonly Mutant<H, C>[],
  table: CatchTable,
): void {
  it.each(mutants.filter((m) => m.scenario === true).map((m) => [m.name, m] as const))(
    `%s (${arch.scenario?.name ?? "default"} scenario)`,
    async (_name, m) => {
      table.expectHit(`${m.name} (scenario)`, m, await scenarioRun(arch, m, 1));
    },
  );
}

/** A test that the list has at least `n` bugs, each under its own name. */
export function itListsAtLeast(mutants: readonly { readonly name: string }[], n: number): void {
  it(`the table has at least ${n} bugs beyond the five injections`, () => {
    expect(mutants.length).toBeGreaterThanOrEqual(n);
    expect(new Set(mutants.map((m) => m.name)).size).toBe(mutants.length);
  });
}
