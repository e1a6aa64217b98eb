// @iommu-sim/iommu-core/platform: the machine underneath the model (physical memory, page frames,
// MMIO, 64-bit arithmetic, randomness, time, tracing and memory images).

export { bug, ModelBug } from "./bug.js";
export { LogicalClock, type TimerId } from "./clock.js";
export {
  decode,
  defineLayout,
  encode,
  encodeInto,
  type Field,
  type FieldSpec,
  type FieldValue,
  type FieldValues,
  type FormatOptions,
  fieldOf,
  fieldsMask,
  fieldValue,
  formatFieldValue,
  formatLayout,
  getField,
  getFieldBig,
  hasReservedBits,
  type Layout,
  type LayoutSpec,
  loadLayout,
  reservedBitsSet,
  setField,
  storeLayout,
  wordMask,
} from "./field-table.js";
export { FrameAllocator, type FrameAllocatorOptions, MAX_ORDER } from "./frame-allocator.js";
export {
  ImageError,
  loadElfCore,
  loadRawImage,
  loadSparseImage,
  type SaveElfCoreOptions,
  type SaveImageOptions,
  SPARSE_IMAGE_VERSION,
  saveElfCore,
  saveSparseImage,
} from "./memory-image.js";
export { type Mmio, mmioRead64, mmioWrite64 } from "./mmio.js";
export {
  type FaultHook,
  PAGE_SHIFT,
  PAGE_SIZE,
  PhysMemory,
  type PhysMemoryOptions,
  type WriteObserver,
} from "./phys-memory.js";
export { Prng } from "./prng.js";
export { SlotLru } from "./slot-cache.js";
export {
  Trace,
  type TraceEvent,
  type TraceEventMap,
  type TraceKind,
  type TraceListener,
  TraceRecorder,
  type TraceRecorderOptions,
} from "./trace.js";
export {
  alignDown,
  alignUp,
  bits64,
  bitsOf,
  depositHi,
  depositLo,
  ffs53,
  fls53,
  fromBig,
  hiOf,
  isAligned,
  join,
  loOf,
  TWO32,
  toBig,
  toHex,
} from "./u64.js";
