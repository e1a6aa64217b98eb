// The device side of the model: PCI IDs, devices with their ATC, the DMA path and the bus, and the
// interface every IOMMU hardware model offers devices.

export { ATC_DEFAULT_ENTRIES, Atc, type AtcEntry } from "./atc.js";
export { DmaBus } from "./bus.js";
export {
  Device,
  type DeviceOptions,
  type DeviceStats,
  DMA_BUS_ERROR,
  DMA_FAULT,
  DMA_NO_PASID,
  DMA_OK,
  DMA_PAGE_REQUESTED,
  DMA_PRIV,
  DMA_STALLED,
  type DmaPageObserver,
  DmaReason,
  PRG_INDEX_COUNT,
} from "./device.js";
export {
  AT_TRANSLATED,
  AT_TRANSLATION_REQUEST,
  AT_UNTRANSLATED,
  type DevicePort,
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  FaultKind,
  type IommuHardware,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  type PageRequest,
  PRG_INVALID_REQUEST,
  PRG_RESPONSE_FAILURE,
  PRG_SUCCESS,
  type TranslationRequest,
  type TranslationResult,
  XLATE_FAULT,
  XLATE_OK,
  XLATE_STALLED,
} from "./iommu-hardware.js";
export {
  formatRid,
  isPciRid,
  PCI_ATS_MIN_STU,
  PCI_PASID_CAP_EXEC,
  PCI_PASID_CAP_PRIV,
  PCI_PASID_MAX_BITS,
  parseRid,
  pciRid,
  ridBus,
  ridDevfn,
  ridFunc,
  ridSlot,
} from "./pci.js";
