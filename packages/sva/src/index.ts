// @iommu-sim/sva: shared virtual addressing (drivers/iommu/iommu-sva.c) over process address
// spaces with real CPU page tables.

export {
  IommuMmData,
  IommuSva,
  iommuSvaBindDevice,
  iommuSvaGetPasid,
  iommuSvaHandleMm,
  iommuSvaIopfHandler,
  iommuSvaUnbindDevice,
  mmGetPasid,
  mmPasidDrop,
  type SvaBindErrno,
  type SvaHooks,
  type SvaInjections,
  type SvaState,
  svaState,
} from "./iommu-sva.js";
export * from "./mm/index.js";
