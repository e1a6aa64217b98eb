// The errno vocabulary, shared with @iommu-sim/ioasid where it is defined once.

export { ERRNO, type Errno, errnoName, errnoNumber, isErrno } from "@iommu-sim/ioasid/errno";
