export { Ida, IDA_MAX, type IdaRange, type IdaMemory } from "./ida.js";
export { ERRNO, type Errno, errnoName, errnoNumber, isErrno } from "./errno.js";
