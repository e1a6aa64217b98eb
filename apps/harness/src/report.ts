// Printing a run report: a short aligned summary for people, one JSON document for tools.

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
    line("checks", `${report.checks.passed} passed, ${report.checks.failed} failed`);
  for (const f of report.failures) {
    out += line("FAILED", `${f.check}: ${oneLine(f.message)}`);
  }
  return out;
}

/**
 * `report` as one line of JSON (no trailing newline), fields in a fixed order:
 * `version`, `scenario`, `arch`, `seed`, `ops`, `dmas`, `faults`, `checks: {passed, failed}`,
 * `failures: [{check, message}]`.
 */
export function toJson(report: RunReport): string {
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
  });
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, " ");
}
