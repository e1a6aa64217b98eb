// @iommu-sim/arm-smmu/format: SMMUv3 hardware layouts (registers, STE, CD, commands, events,
// PRI queue entries), each declared once as a field table.

export * from "./cd.js";
export * from "./commands.js";
export * from "./events.js";
export * from "./lpae-desc.js";
export * from "./pri.js";
export * from "./registers.js";
export * from "./ste.js";
