// @iommu-sim/arm-smmu/testing: builders of SMMUv3 structures in memory and an SMMU brought up
// through its registers, for tests of this package and of its users (the harness's decode and
// translate, the driver's tests).

export * from "./smmu-machine.js";
export * from "./table-builder.js";
