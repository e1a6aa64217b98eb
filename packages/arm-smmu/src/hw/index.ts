// @iommu-sim/arm-smmu/hw: the SMMUv3 hardware model (registers, stream table and CD decode, page
// walks, caches, command / event / PRI queues, ATS, stall model, hitless-update hook).

export {
  Q_ABORT,
  Q_DISABLED,
  Q_FULL,
  Q_WRITTEN,
  SmmuEventQueue,
  SmmuOutputQueue,
} from "./event-queue.js";
export { SmmuPriQueue } from "./pri-queue.js";
export {
  DEFAULT_SMMU_CACHE_CONFIG,
  MINIMAL_SMMU_CACHE_CONFIG,
  resolveSmmuCacheConfig,
  type SmmuCacheConfig,
  type SmmuCachePolicy,
} from "./smmu-cache-policy.js";
export {
  CFG_OK,
  decodeCd,
  decodeCdWords,
  decodeSte,
  decodeSteWords,
  levelShift,
  NO_SSID,
  SmmuCdConfig,
  type SmmuCdFetchPort,
  SmmuSteConfig,
  type SmmuStreamTable,
  SmmuWalkRange,
} from "./smmu-config.js";
export { type SmmuCacheCounters, SmmuConfigCache } from "./smmu-config-cache.js";
export {
  type SmmuEntryView,
  smmuConfigEqual,
  smmuViewLegal,
  viewOfCd,
  viewOfSte,
} from "./smmu-entry-view.js";
export {
  encodeEvent,
  SMMU_ABORT_SILENT,
  SmmuEventFields,
  smmuFaultKind,
  walkEventId,
} from "./smmu-event.js";
export {
  DEFAULT_SMMU_FEATURES,
  granuleShift,
  resolveSmmuFeatures,
  type SmmuFeatures,
  type SmmuGranule,
  smmuCommandFeatures,
  smmuIdRegs,
  validateSmmuFeatures,
} from "./smmu-features.js";
export * from "./smmu-tlb.js";
export {
  type SmmuCacheInspection,
  type SmmuConfigWriteCallback,
  type SmmuInterruptSource,
  SmmuV3,
  type SmmuV3Options,
  type SmmuV3Stats,
} from "./smmu-v3.js";
export {
  CLASS_CD,
  CLASS_IN,
  CLASS_TT,
  P_ALL,
  P_PX,
  P_R,
  P_S2R,
  P_S2W,
  P_S2X,
  P_U,
  P_W,
  P_X,
  SmmuWalker,
  STAGE_1,
  STAGE_2,
  W_ACCESS,
  W_ADDR_SIZE,
  W_EABT,
  W_OK,
  W_PERMISSION,
  W_TRANSLATION,
} from "./smmu-walk.js";
