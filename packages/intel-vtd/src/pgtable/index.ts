// @iommu-sim/intel-vtd/pgtable: the VT-d first- and second-stage page-table formats.

export {
  FS_LEAF_BITS,
  FS_LEAF_WRITE_BITS,
  FS_TABLE_BITS,
  VtdFsPgtable,
  type VtdFsPgtableOptions,
} from "./first-stage.js";
export {
  pgtableProtOf,
  ssAgawToLevels,
  ssAgawToWidth,
  VTD_PGSIZE_BITMAP,
  VTD_SUPERPAGES,
  type VtdMapErrno,
  VtdSsPgtable,
  type VtdSsPgtableOptions,
} from "./second-stage.js";
