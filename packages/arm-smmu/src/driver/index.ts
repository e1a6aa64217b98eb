// @iommu-sim/arm-smmu/driver: the Linux half of SMMUv3 (drivers/iommu/arm/arm-smmu-v3).

export {};
