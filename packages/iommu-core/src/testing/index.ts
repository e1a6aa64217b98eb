// @iommu-sim/iommu-core/testing: the mock IOMMU, a machine built around it, and the io-pgtable
// conformance suite, for users who test their own code against the core.

export { MockMachine, type MockMachineOptions } from "./mock-machine.js";
export {
  type MockFaultRecord,
  MockDomain,
  MockIommuDriver,
  type MockIommuDriverOptions,
  type MockIommuInjections,
} from "../mock/mock-iommu.js";
export { MockIommuHw, type MockIommuHwOptions, type MockIommuHwStats } from "../mock/mock-iommu-hw.js";
export * from "../mock/mock-format.js";
export {
  MOCK_PGSIZE_BITMAP,
  MockPgtable,
  type MockPgtableOptions,
  mockPteAddr,
  mockPteDecode,
} from "../mock/mock-pgtable.js";
