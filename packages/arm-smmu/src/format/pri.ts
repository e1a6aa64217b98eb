// PRI queue entries: one PCIe Page Request as the SMMU writes it to the PRI queue.

import { defineLayout, type Layout } from "@iommu-sim/iommu-core/platform";

/** Bytes per PRI queue entry. @spec Arm SMMUv3 (IHI 0070) 8 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h PRIQ_ENT_SZ_SHIFT */
export const PRIQ_ENTRY_SIZE = 16;

/**
 * A PRI queue entry. Names are the spec's (chapter 8 lists StreamID, SSV, SubstreamID, Page
 * address, PRGIndex, Last/W/R/X/Priv); the bit positions are in a figure the text spec does not
 * carry and are the kernel's (PRIQ_0_*, PRIQ_1_*). When SSV == 0, X and Priv are 0; a message with
 * SSV == 1 and Last/W/R == 1/0/0 is a Stop PASID marker.
 *
 * @spec Arm SMMUv3 (IHI 0070) 8
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h PRIQ_0_SID
 */
export const PRIQ_ENTRY: Layout = defineLayout({
  name: "PRIQ_ENTRY",
  bits: 128,
  spec: "Arm SMMUv3 (IHI 0070) 8",
  fields: [
    { name: "StreamID", lsb: 0, width: 32 },
    { name: "SubstreamID", lsb: 32, width: 20 },
    { name: "Priv", lsb: 58, width: 1 },
    { name: "X", lsb: 59, width: 1, doc: "execute" },
    { name: "R", lsb: 60, width: 1, doc: "read" },
    { name: "W", lsb: 61, width: 1, doc: "write" },
    { name: "Last", lsb: 62, width: 1, doc: "last request of the page request group" },
    { name: "SSV", lsb: 63, width: 1, doc: "the request carried a PASID" },
    { name: "PRGIndex", lsb: 64, width: 9 },
    { name: "PageAddress", lsb: 76, width: 52, addr: true, doc: "VA[63:12]" },
  ],
});
