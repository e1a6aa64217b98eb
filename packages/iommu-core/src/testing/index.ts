// @iommu-sim/iommu-core/testing: the mock IOMMU and a machine built around it, for users who test
// their own code against the core (the io-pgtable conformance suite is /testing/conformance).

export * from "../mock/mock-format.js";
export {
  MockDomain,
  type MockFaultRecord,
  MockIommuDriver,
  type MockIommuDriverOptions,
  type MockIommuInjections,
} from "../mock/mock-iommu.js";
export {
  MockIommuHw,
  type MockIommuHwOptions,
  type MockIommuHwStats,
} from "../mock/mock-iommu-hw.js";
export {
  MOCK_PGSIZE_BITMAP,
  MockPgtable,
  type MockPgtableOptions,
  mockPteAddr,
  mockPteDecode,
} from "../mock/mock-pgtable.js";
export { MachineBase, type MachineBaseOptions } from "./machine-base.js";
export { MockMachine, type MockMachineOptions } from "./mock-machine.js";
export { type PlugErrno, plugDevice, unplugDevice } from "./plug-device.js";
export { TestMm, type TestMmOptions } from "./test-mm.js";
