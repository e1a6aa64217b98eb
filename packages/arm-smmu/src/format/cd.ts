// Stage 1 context: the 64-byte Context Descriptor and the 8-byte level-1 CD table descriptor,
// declared once as field tables, with the two granule encodings of TG0 and TG1.

import { defineLayout, type Layout } from "@iommu-sim/iommu-core/platform";

const SPEC = "Arm SMMUv3 (IHI 0070)";

/** Bytes per CD. @spec Arm SMMUv3 (IHI 0070) 5.4 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CTXDESC_CD_DWORDS */
export const CD_SIZE = 64;
/** Bytes per L1CD. @spec Arm SMMUv3 (IHI 0070) 5.3 */
export const L1_CD_SIZE = 8;
/** CDs per level-2 table with STE.S1Fmt = 4K L2 (SubstreamID[5:0] indexes it). @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const CD_L2_ENTRIES_4K = 64;
/** CDs per level-2 table with STE.S1Fmt = 64K L2 (SubstreamID[9:0]). @spec Arm SMMUv3 (IHI 0070) 5.2 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CTXDESC_L2_ENTRIES */
export const CD_L2_ENTRIES_64K = 1024;

/**
 * CD.TG0 encodings, as TCR_ELx.TG0: 0 4K, 1 64K, 2 16K, 3 reserved (ILLEGAL unless EPD0).
 * CD.TG1 follows TCR_ELx.TG1 and differs: 0 reserved, 1 16K, 2 4K, 3 64K. STE.S2TG uses the
 * TG0 encoding.
 *
 * @spec Arm SMMUv3 (IHI 0070) 5.4 (TG0, TG1)
 */
export const TG0_4K = 0;
/** @spec Arm SMMUv3 (IHI 0070) 5.4 */
export const TG0_64K = 1;
/** @spec Arm SMMUv3 (IHI 0070) 5.4 */
export const TG0_16K = 2;
/** @spec Arm SMMUv3 (IHI 0070) 5.4 */
export const TG1_16K = 1;
/** @spec Arm SMMUv3 (IHI 0070) 5.4 */
export const TG1_4K = 2;
/** @spec Arm SMMUv3 (IHI 0070) 5.4 */
export const TG1_64K = 3;

const TG0_SHIFT = [12, 16, 14, 0] as const;
const TG1_SHIFT = [0, 14, 12, 16] as const;

/** Page shift of a TG0 (or STE.S2TG) value, 0 for the reserved encoding. */
export function tg0PageShift(tg0: number): number {
  return TG0_SHIFT[tg0 & 3] as number;
}

/** Page shift of a TG1 value, 0 for the reserved encoding. */
export function tg1PageShift(tg1: number): number {
  return TG1_SHIFT[tg1 & 3] as number;
}

const CACHE = { 0: "NC", 1: "WB-RA-WA", 2: "WT-RA", 3: "WB-RA-noWA" } as const;
const SH = { 0: "NSH", 1: "NSH(rsvd)", 2: "OSH", 3: "ISH" } as const;

/**
 * CD, the 512-bit Context Descriptor, by bit number over the whole descriptor. TTB0/TTB1 are
 * declared as address bits [51:4] (bits [115:68] and [179:132]); the next four bits of each carry
 * address bits [55:52] only with VMSAv9-128 and are reserved here. The D128-only aliases (DisCH0
 * at 65, SKL0 at 127:126, DisCH1 at 129, SKL1 at 191:190) are not declared: with SMMU_IDR5.D128 == 0
 * those bits are HAD0, HWU061/062, HAD1 and HWU161/162.
 *
 * @spec Arm SMMUv3 (IHI 0070) 5.4
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CTXDESC_CD_0_TCR_T0SZ
 */
export const CD: Layout = defineLayout({
  name: "CD",
  bits: 512,
  spec: `${SPEC} 5.4`,
  fields: [
    { name: "T0SZ", lsb: 0, width: 6 },
    { name: "TG0", lsb: 6, width: 2, values: { 0: "4K", 1: "64K", 2: "16K" } },
    { name: "IR0", lsb: 8, width: 2, values: CACHE },
    { name: "OR0", lsb: 10, width: 2, values: CACHE },
    { name: "SH0", lsb: 12, width: 2, values: SH },
    { name: "EPD0", lsb: 14, width: 1 },
    { name: "ENDI", lsb: 15, width: 1 },
    { name: "T1SZ", lsb: 16, width: 6 },
    { name: "TG1", lsb: 22, width: 2, values: { 1: "16K", 2: "4K", 3: "64K" } },
    { name: "IR1", lsb: 24, width: 2, values: CACHE },
    { name: "OR1", lsb: 26, width: 2, values: CACHE },
    { name: "SH1", lsb: 28, width: 2, values: SH },
    { name: "EPD1", lsb: 30, width: 1 },
    { name: "V", lsb: 31, width: 1 },
    {
      name: "IPS",
      lsb: 32,
      width: 3,
      values: { 0: "32", 1: "36", 2: "40", 3: "42", 4: "44", 5: "48", 6: "52", 7: "56" },
    },
    { name: "AFFD", lsb: 35, width: 1 },
    { name: "WXN", lsb: 36, width: 1 },
    { name: "UWXN", lsb: 37, width: 1 },
    { name: "TBI0", lsb: 38, width: 1 },
    { name: "TBI1", lsb: 39, width: 1 },
    { name: "PAN", lsb: 40, width: 1 },
    { name: "AA64", lsb: 41, width: 1 },
    { name: "HD", lsb: 42, width: 1 },
    { name: "HA", lsb: 43, width: 1 },
    { name: "S", lsb: 44, width: 1, doc: "stall on fault" },
    { name: "R", lsb: 45, width: 1, doc: "record faults" },
    { name: "A", lsb: 46, width: 1, doc: "terminate with abort (else RAZ/WI)" },
    { name: "ASET", lsb: 47, width: 1 },
    { name: "ASID", lsb: 48, width: 16 },
    { name: "NSCFG0", lsb: 64, width: 1 },
    { name: "HAD0", lsb: 65, width: 1 },
    { name: "E0PD0", lsb: 66, width: 1 },
    { name: "HAFT", lsb: 67, width: 1 },
    { name: "TTB0", lsb: 68, width: 48, addr: true, doc: "TTB0 PA/IPA[51:4]" },
    { name: "PnCH", lsb: 122, width: 1 },
    { name: "EPAN", lsb: 123, width: 1 },
    { name: "HWU059", lsb: 124, width: 1 },
    { name: "HWU060", lsb: 125, width: 1 },
    { name: "HWU061", lsb: 126, width: 1 },
    { name: "HWU062", lsb: 127, width: 1 },
    { name: "NSCFG1", lsb: 128, width: 1 },
    { name: "HAD1", lsb: 129, width: 1 },
    { name: "E0PD1", lsb: 130, width: 1 },
    { name: "AIE", lsb: 131, width: 1 },
    { name: "TTB1", lsb: 132, width: 48, addr: true, doc: "TTB1 PA/IPA[51:4]" },
    { name: "DS", lsb: 186, width: 1 },
    { name: "PIE", lsb: 187, width: 1 },
    { name: "HWU159", lsb: 188, width: 1 },
    { name: "HWU160", lsb: 189, width: 1 },
    { name: "HWU161", lsb: 190, width: 1 },
    { name: "HWU162", lsb: 191, width: 1 },
    { name: "MAIR0", lsb: 192, width: 32, doc: "MAIR[31:0]: Attr0..Attr3" },
    { name: "MAIR1", lsb: 224, width: 32, doc: "MAIR[63:32]: Attr4..Attr7" },
    { name: "AMAIR0", lsb: 256, width: 32 },
    { name: "AMAIR1", lsb: 288, width: 32 },
    { name: "IMPLEMENTATION_DEFINED", lsb: 320, width: 32 },
    { name: "PARTID", lsb: 352, width: 16 },
    { name: "PMG", lsb: 368, width: 8 },
    {
      name: "PIIU",
      lsb: 384,
      width: 48,
      doc: "16 x 3-bit unprivileged permission interpretations",
    },
    { name: "PIIP", lsb: 448, width: 48, doc: "16 x 3-bit privileged permission interpretations" },
  ],
});

/**
 * L1CD, the level-1 CD table descriptor: V, and L2Ptr (4 KiB aligned; with 64K leaf tables
 * L2Ptr[15:12] are RES0). V == 0 on lookup gives C_BAD_SUBSTREAMID.
 *
 * @spec Arm SMMUv3 (IHI 0070) 5.3
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CTXDESC_L1_DESC_V
 */
export const L1_CD: Layout = defineLayout({
  name: "L1CD",
  bits: 64,
  spec: `${SPEC} 5.3`,
  fields: [
    { name: "V", lsb: 0, width: 1 },
    { name: "L2Ptr", lsb: 12, width: 44, addr: true },
  ],
});
