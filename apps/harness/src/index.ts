// @iommu-sim/harness: the iommu-sim command line, its scenarios and their reports.

export { type CliIo, EXIT, exitQuietlyOnEpipe, main, type Output } from "./cli.js";
export { formatHuman, formatTraceEvent, toJson } from "./report.js";
export {
  type CheckFailure,
  type RunReport,
  runScenario,
  type Scenario,
  type ScenarioContext,
  type ScenarioRunOptions,
  scenarios,
} from "./scenario.js";
export { defaultScenario } from "./scenarios/default.js";
export { HARNESS_VERSION } from "./version.js";
