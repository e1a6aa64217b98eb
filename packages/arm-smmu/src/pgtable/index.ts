// @iommu-sim/arm-smmu/pgtable: LPAE (VMSAv8-64) stage-1 and stage-2 io-pgtables.

export {
  type LpaeGeometry,
  type LpaeGranule,
  type LpaeMapErrno,
  LpaePgtable,
  type LpaePgtableOptions,
  type LpaeQuirks,
  type LpaeS2Concat,
  lpaeBlockAllowed,
  lpaeGeometry,
  lpaeLevelShift,
  lpaePgsizeBitmap,
  s2sl0Of,
  tcrPsOf,
  tcrTgOf,
} from "./lpae.js";
