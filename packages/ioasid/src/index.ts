// @iommu-sim/ioasid: the ID spaces of iommu-sim.
export { Ida, IDA_MAX, type IdaRange, type IdaMemory } from "./ida.js";
export { IdMap, XA_LIMIT_MAX, type XaLimit, type CyclicCursor } from "./id-map.js";
export {
  IoasidSpace,
  IoasidSet,
  INVALID_IOASID,
  pasidValid,
  type Ioasid,
  type IoasidPrivate,
  type IoasidSpaceOptions,
} from "./ioasid.js";
export { ChargeTree, type ChargeNode } from "./charge-tree.js";
export { ERRNO, type Errno, errnoName, errnoNumber, isErrno } from "./errno.js";
