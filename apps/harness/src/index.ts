// @iommu-sim/harness: the iommu-sim command line, its scenarios, the isolation oracle, scenario
// files, and the decoders of memory images.

export { type CliIo, EXIT, exitQuietlyOnEpipe, type Input, main, type Output } from "./cli.js";
export {
  detectImageFormat,
  ImageCoverage,
  ImageInputError,
  loadImageBytes,
  loadMemoryImage,
  type MemoryImage,
  readImageInput,
  readMemoryImage,
} from "./decode/image-input.js";
export {
  decodeVtd,
  formatVtdDecode,
  lookupVtdTranslation,
  VTD_DECODE_LIMITS,
  type VtdDecodeDocument,
  type VtdDecodeOptions,
  type VtdImageCoverage,
} from "./decode/vtd-decode.js";
export { parseVtdQuery, VtdTranslator, vtdCapsFromRegisters } from "./decode/vtd-translate.js";
export {
  type FuzzOptions,
  type FuzzResult,
  runFuzz,
  runVtdFuzz,
  type VtdFuzzOptions,
  type VtdFuzzResult,
} from "./fuzz/fuzz.js";
export {
  type DeviceSpec,
  type DmaBuffer,
  type MachineSpec,
  type UnitSpec,
  VTD_INJECTIONS,
  VtdHarness,
  type VtdInjection,
} from "./machine/vtd-harness.js";
export { ShadowDomain } from "./oracle/shadow.js";
export type {
  CacheName,
  HistoryEvent,
  MissingInvalidation,
  StaleEntry,
  Violation,
  ViolationKind,
} from "./oracle/violation.js";
export { VtdOracle, type VtdOracleStats } from "./oracle/vtd-oracle.js";
export { formatHuman, formatTraceEvent, toJson } from "./report.js";
export {
  type CheckFailure,
  type RunReport,
  runScenario,
  type Scenario,
  type ScenarioContext,
  type ScenarioRunOptions,
  scenarioKey,
  scenarios,
} from "./scenario.js";
export { parseScenarioFile, ScenarioFileError } from "./scenario-file/parse-scenario.js";
export { scenarioFromFile } from "./scenario-file/run-scenario-file.js";
export type { ScenarioSpec, StepSpec } from "./scenario-file/scenario-spec.js";
export { defaultScenario } from "./scenarios/default.js";
export {
  runMachineDefault,
  SMMU_DEFAULT_MACHINE,
  smmuDefaultScenario,
  VTD_DEFAULT_MACHINE,
  vtdDefaultScenario,
} from "./scenarios/machine-default.js";
export { HARNESS_VERSION } from "./version.js";
