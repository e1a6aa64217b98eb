// @iommu-sim/intel-vtd/hw: the VT-d remapping hardware (the silicon half), its caches and blocks.

export * from "./cache-policy.js";
export * from "./context-cache.js";
export * from "./fault-recorder.js";
export * from "./iotlb.js";
export * from "./page-request-queue.js";
export * from "./paging-structure-cache.js";
export * from "./pasid-cache.js";
export * from "./vtd-caps.js";
export * from "./vtd-config.js";
export * from "./vtd-fault.js";
export * from "./vtd-unit.js";
export * from "./vtd-walk.js";
