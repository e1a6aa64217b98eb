// @iommu-sim/sva: shared virtual addressing (drivers/iommu/iommu-sva.c) over process address
// spaces with real CPU page tables.

export * from "./mm/index.js";
