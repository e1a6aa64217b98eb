export * from "../src/testing/table-builder.js";
