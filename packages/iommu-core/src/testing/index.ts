// @iommu-sim/iommu-core/testing: the mock IOMMU, a machine built around it, and the io-pgtable
// conformance suite, for users who test their own code against the core.

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
export { MockMachine, type MockMachineOptions } from "./mock-machine.js";
