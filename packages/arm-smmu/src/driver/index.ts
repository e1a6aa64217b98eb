// @iommu-sim/arm-smmu/driver: the Linux half of SMMUv3 (drivers/iommu/arm/arm-smmu-v3), talking
// to an SMMU only through its registers, memory and queues.

export * from "./arm-smmu-device.js";
export * from "./cd-table.js";
export * from "./cmdq.js";
export * from "./entries.js";
export * from "./entry-writer.js";
export * from "./smmu-domain.js";
export * from "./smmu-sva.js";
export * from "./smmu-v3-driver.js";
