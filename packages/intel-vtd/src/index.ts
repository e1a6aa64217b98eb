export * from "./driver/index.js";
export * from "./format/index.js";
export * from "./hw/index.js";
export * from "./pgtable/index.js";
