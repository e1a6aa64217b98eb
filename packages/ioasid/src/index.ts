// @iommu-sim/ioasid: the ID spaces of iommu-sim.

export { type ChargeNode, ChargeTree } from "./charge-tree.js";
export { ERRNO, type Errno, errnoName, errnoNumber, isErrno } from "./errno.js";
export { type CyclicCursor, IdMap, XA_LIMIT_MAX, type XaLimit } from "./id-map.js";
export { IDA_MAX, Ida, type IdaMemory, type IdaRange } from "./ida.js";
export {
  INVALID_IOASID,
  type Ioasid,
  type IoasidPrivate,
  IoasidSet,
  IoasidSpace,
  type IoasidSpaceOptions,
  pasidValid,
} from "./ioasid.js";
