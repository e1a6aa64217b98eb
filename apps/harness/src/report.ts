// Printing a run report: a short aligned summary for people, one JSON document for tools.

import type { TraceEvent } from "@iommu-sim/iommu-core";
import type { RunReport } from "./scenario.js";

const LABEL_WIDTH = 12;

function line(label: string, value: string): string {
  return `${label.padEnd(LABEL_WIDTH)}${value}\n`;
}

/** The human summary of `report`: one aligned line per field, then one line per failed check. */
export function formatHuman(report: RunReport): string {
  let out =
    line("scenario", report.scenario) +
    line("arch", report.arch) +
    line("seed", String(report.seed)) +
    line("operations", String(report.ops)) +
    line("DMAs", String(report.dmas)) +
    line("faults", String(report.faults)) +
    line("checks", `${report.checks.passed} passed, ${report.checks.failed} failed`) +
    line("violations", String(report.violationsTotal));
  for (const f of report.failures) {
    out += line("FAILED", `${f.check}: ${oneLine(f.message)}`);
  }
  for (const v of report.violations) {
    out += line("VIOLATION", `${v.kind} at t=${v.time}: ${oneLine(v.message)}`);
    for (const h of v.history ?? []) out += line("", `  t=${h.time} ${oneLine(h.event)}`);
  }
  if (report.violationsTotal > report.violations.length) {
    out += line(
      "",
      `(${report.violationsTotal - report.violations.length} more violations not shown)`,
    );
  }
  return out;
}

/**
 * `report` as one line of JSON (no trailing newline), fields in a fixed order:
 * `version`, `scenario`, `arch`, `seed`, `ops`, `dmas`, `faults`, `checks: {passed, failed}`,
 * `failures: [{check, message}]`, `violations: [{kind, time, message, dma?, staleEntry?,
 * missingInvalidation?, id?, history?}]`, `violationsTotal`, and `trace: [{kind, seq, time, data}]`
 * for a traced run.
 */
export function toJson(report: RunReport, extra: Readonly<Record<string, unknown>> = {}): string {
  return JSON.stringify({
    version: report.version,
    scenario: report.scenario,
    arch: report.arch,
    seed: report.seed,
    ops: report.ops,
    dmas: report.dmas,
    faults: report.faults,
    checks: { passed: report.checks.passed, failed: report.checks.failed },
    failures: report.failures.map((f) => ({ check: f.check, message: f.message })),
    violations: report.violations,
    violationsTotal: report.violationsTotal,
    ...(report.trace === undefined ? {} : { trace: report.trace }),
    ...extra,
  });
}

/**
 * One trace event as a line for people: sequence number, logical time, kind, then the data as
 * `key=value` pairs (addresses in hex).
 */
export function formatTraceEvent(event: TraceEvent): string {
  const fields = Object.entries(event.data)
    .map(([k, v]) => `${k}=${typeof v === "number" && isAddress(k) ? `0x${v.toString(16)}` : v}`)
    .join(" ");
  return `#${event.seq} t=${event.time} ${event.kind} ${fields}\n`;
}

function isAddress(key: string): boolean {
  return key === "iova" || key === "pa" || key === "size";
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, " ");
}
