// One scenario, two architectures: the same scenario with the same seed on VT-d and on SMMUv3,
// and every DMA's outcome (status, bytes read) compared in order. Owners asked for the same
// mappings, so a device must see the same memory through either IOMMU; a difference is a bug in
// one of the two drivers or models (or a place where the architectures differ on purpose, which
// the report then has to explain).

import { DMA_OK } from "@iommu-sim/iommu-core";
import type { DmaOutcome } from "./machine/harness.js";
import { formatHuman, toJson } from "./report.js";
import { type RunReport, runScenario, type Scenario, type ScenarioRunOptions } from "./scenario.js";

/** Differences kept in full; more are only counted. */
const MAX_DIFFERENCES = 32;

/** The DMA statuses by name (the device's answer, whatever the IOMMU). */
const STATUS_NAMES = ["ok", "fault", "stalled", "page-requested", "bus-error", "no-pasid"];

/** One DMA whose outcome differs between the two runs. */
export interface ArchDifference {
  /** Position of the DMA in the run (0-based). */
  readonly index: number;
  /** The DMA: device, PASID, direction, address and size. */
  readonly dma: string;
  /** What each architecture's run saw, by arch. */
  readonly outcomes: Readonly<Record<string, string>>;
}

/** Two runs of one scenario and how their DMAs compare. */
export interface BothReport {
  readonly scenario: string;
  readonly seed: number;
  readonly runs: readonly [RunReport, RunReport];
  /** DMAs compared (the shorter run's count). */
  readonly compared: number;
  readonly differences: readonly ArchDifference[];
  readonly differencesTotal: number;
}

function statusName(s: number): string {
  return STATUS_NAMES[s] ?? `status ${s}`;
}

function dmaText(o: DmaOutcome): string {
  return `${o.device}${o.pasid === null ? "" : ` PASID ${o.pasid}`} ${o.write ? "write" : "read"} of ${o.size} at 0x${o.iova.toString(16)}`;
}

function outcomeText(o: DmaOutcome | undefined): string {
  if (o === undefined) return "no such DMA (the run ended earlier)";
  if (o.status !== DMA_OK) return statusName(o.status);
  return o.write ? "ok" : `ok, bytes ${o.digest.toString(16).padStart(8, "0")}`;
}

/**
 * Compare two runs' DMA outcomes in order: the same DMA (device, PASID, address, size, direction)
 * completing on both or on neither, and a read returning the same bytes. How a DMA that did not
 * complete ended (a fault, a page request, a stall) is the architecture's business and is not
 * compared: a PRI device behind VT-d has PRI on from probe, behind an SMMU only with IOPF. A run that made a different DMA at
 * some position diverged there: that position is reported and the comparison goes on.
 */
export function compareOutcomes(
  a: { readonly arch: string; readonly outcomes: readonly DmaOutcome[] },
  b: { readonly arch: string; readonly outcomes: readonly DmaOutcome[] },
): { compared: number; differences: ArchDifference[]; total: number } {
  const differences: ArchDifference[] = [];
  let total = 0;
  const n = Math.max(a.outcomes.length, b.outcomes.length);
  for (let i = 0; i < n; i++) {
    const x = a.outcomes[i];
    const y = b.outcomes[i];
    if (x !== undefined && y !== undefined && same(x, y)) continue;
    total++;
    if (differences.length >= MAX_DIFFERENCES) continue;
    const sameDma = x !== undefined && y !== undefined && dmaText(x) === dmaText(y);
    differences.push({
      index: i,
      dma: sameDma
        ? dmaText(x)
        : `${x === undefined ? "-" : dmaText(x)} / ${y === undefined ? "-" : dmaText(y)}`,
      outcomes: { [a.arch]: outcomeText(x), [b.arch]: outcomeText(y) },
    });
  }
  return { compared: Math.min(a.outcomes.length, b.outcomes.length), differences, total };
}

function same(x: DmaOutcome, y: DmaOutcome): boolean {
  return (
    x.device === y.device &&
    x.pasid === y.pasid &&
    x.iova === y.iova &&
    x.size === y.size &&
    x.write === y.write &&
    (x.status === DMA_OK) === (y.status === DMA_OK) &&
    x.digest === y.digest
  );
}

/**
 * Run `first` and `second` (one scenario on two architectures) with `seed` and compare their DMAs.
 * `inject` goes only to the architecture that knows it (`injectArch`).
 */
export async function runBoth(
  first: Scenario,
  second: Scenario,
  seed: number,
  options: ScenarioRunOptions & { injectArch?: string } = {},
): Promise<BothReport> {
  const { injectArch, inject, ...rest } = options;
  const runs: RunReport[] = [];
  for (const s of [first, second]) {
    runs.push(
      await runScenario(s, seed, {
        ...rest,
        inject: injectArch === s.arch ? (inject ?? null) : null,
        outcomes: true,
      }),
    );
  }
  const [a, b] = runs as [RunReport, RunReport];
  const cmp = compareOutcomes(
    { arch: a.arch, outcomes: a.outcomes ?? [] },
    { arch: b.arch, outcomes: b.outcomes ?? [] },
  );
  return {
    scenario: first.name,
    seed,
    runs: [a, b],
    compared: cmp.compared,
    differences: cmp.differences,
    differencesTotal: cmp.total,
  };
}

/** Whether a comparison run passes: both runs pass and no DMA differs. */
export function bothPassed(r: BothReport): boolean {
  return (
    r.differencesTotal === 0 &&
    r.runs.every((run) => run.checks.failed === 0 && run.violationsTotal === 0)
  );
}

/** The two summaries, then the comparison: one line, and one line per difference. */
export function formatBothHuman(r: BothReport): string {
  let out = "";
  for (const run of r.runs) out += `${formatHuman(run)}\n`;
  const archs = r.runs.map((x) => x.arch).join(" and ");
  out += `${"compare".padEnd(12)}${r.compared} DMAs on ${archs}, ${r.differencesTotal} difference${r.differencesTotal === 1 ? "" : "s"}\n`;
  for (const d of r.differences) {
    const what = Object.entries(d.outcomes)
      .map(([arch, o]) => `${arch} ${o}`)
      .join("; ");
    out += `${"DIFFERENT".padEnd(12)}DMA #${d.index} ${d.dma}: ${what}\n`;
  }
  if (r.differencesTotal > r.differences.length)
    out += `${"".padEnd(12)}(${r.differencesTotal - r.differences.length} more differences not shown)\n`;
  return out;
}

/** One JSON document: `{arch: "both", scenario, seed, runs: [report, report], compare: {...}}`. */
export function bothToJson(r: BothReport): string {
  return JSON.stringify({
    arch: "both",
    scenario: r.scenario,
    seed: r.seed,
    runs: r.runs.map((run) => JSON.parse(toJson(run))),
    compare: {
      dmas: r.compared,
      differencesTotal: r.differencesTotal,
      differences: r.differences,
    },
  });
}
