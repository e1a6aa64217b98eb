// The driver side of @iommu-sim/intel-vtd: drivers/iommu/intel over a unit's registers and memory.

export * from "./dmar-caps.js";
export * from "./dmar-domain.js";
export * from "./intel-iommu.js";
export * from "./pasid-table.js";
export { pagesOrder, QI_LENGTH, VtdQi, type VtdQiIdle, type VtdQiStats } from "./qi.js";
export {
  type DevPasidInfo,
  DmarSvaDomain,
  IntelSvm,
  intelSvmCheck,
  svaSupported,
  type VtdSvmBackend,
} from "./svm.js";
export * from "./vtd-driver.js";
