// @iommu-sim/intel-vtd/format: field tables of every VT-d register and in-memory structure.

export * from "./context-entry.js";
export * from "./fault-record.js";
export * from "./first-stage-pte.js";
export * from "./inv-desc.js";
export * from "./page-request.js";
export * from "./pasid-entry.js";
export * from "./registers.js";
export * from "./root-entry.js";
export * from "./second-stage-pte.js";
