// @iommu-sim/intel-vtd/testing: builders of VT-d tables in memory and a unit brought up through its
// registers, for tests of this package and of its users (the harness's decode and translate).

export * from "./table-builder.js";
export * from "./vtd-machine.js";
