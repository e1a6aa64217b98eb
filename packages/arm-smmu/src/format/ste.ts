// The stream table: the 64-byte Stream Table Entry and the 8-byte level-1 stream table
// descriptor, declared once as field tables.

import { defineLayout, fieldOf, type Layout } from "@iommu-sim/iommu-core/platform";

const SPEC = "Arm SMMUv3 (IHI 0070)";

/** Bytes per STE. @spec Arm SMMUv3 (IHI 0070) 5.2 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h STRTAB_STE_DWORDS */
export const STE_SIZE = 64;
/** Bytes per level-1 stream table descriptor. @spec Arm SMMUv3 (IHI 0070) 5.1 */
export const L1_STD_SIZE = 8;

/** STRTAB_BASE_CFG.FMT: linear stream table. @spec Arm SMMUv3 (IHI 0070) 6.3.25 */
export const STRTAB_FMT_LINEAR = 0;
/** STRTAB_BASE_CFG.FMT: 2-level stream table. @spec Arm SMMUv3 (IHI 0070) 6.3.25 */
export const STRTAB_FMT_2LVL = 1;
/** The split Linux uses (256 STEs, 16 KiB, per level-2 table). @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h STRTAB_SPLIT */
export const STRTAB_SPLIT = 8;

/** STE.Config: abort silently (0b0xx all abort; 0b000 is the one to write). @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const STE_CFG_ABORT = 0b000;
/** STE.Config: both stages bypass. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const STE_CFG_BYPASS = 0b100;
/** STE.Config: stage 1 translates, stage 2 bypasses. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const STE_CFG_S1_TRANS = 0b101;
/** STE.Config: stage 1 bypasses, stage 2 translates. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const STE_CFG_S2_TRANS = 0b110;
/** STE.Config: nested, both stages translate. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const STE_CFG_NESTED = 0b111;

/** STE.S1Fmt: linear CD table (or one CD when S1CDMax == 0). @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const S1FMT_LINEAR = 0;
/** STE.S1Fmt: 2-level CD table, 4 KiB (64-CD) leaf tables. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const S1FMT_4K_L2 = 1;
/** STE.S1Fmt: 2-level CD table, 64 KiB (1024-CD) leaf tables; 0b11 behaves as linear. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const S1FMT_64K_L2 = 2;

/** STE.S1DSS: traffic without a SubstreamID is terminated with F_STREAM_DISABLED. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const S1DSS_TERMINATE = 0;
/** STE.S1DSS: traffic without a SubstreamID bypasses stage 1. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const S1DSS_BYPASS = 1;
/** STE.S1DSS: traffic without a SubstreamID uses CD 0; SubstreamID 0 is then refused. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const S1DSS_SSID0 = 2;

/** STE.STRW: NS-EL1 stream world. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const STRW_NSEL1 = 0;
/** STE.STRW: NS-EL2 (NS-EL2-E2H when CR2.E2H); 0bx1 is ILLEGAL on a Non-secure STE. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const STRW_EL2 = 2;

/** STE.EATS: ATS disabled. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const EATS_ABT = 0;
/** STE.EATS: full ATS. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const EATS_TRANS = 1;
/** STE.EATS: split-stage ATS (stage 1 in the ATC, stage 2 in the SMMU). @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const EATS_S1CHK = 2;
/** STE.EATS: full ATS with DPT checks. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const EATS_DPT = 3;

/** STE.SHCFG: use the incoming shareability. @spec Arm SMMUv3 (IHI 0070) 5.2 */
export const SHCFG_INCOMING = 1;

const CACHE = { 0: "NC", 1: "WB-RA", 2: "WT-RA", 3: "WB-noRA" } as const;
const WALK_CACHE = { 0: "NC", 1: "WB-RA-WA", 2: "WT-RA", 3: "WB-RA-noWA" } as const;
const SH = { 0: "NSH", 1: "NSH(rsvd)", 2: "OSH", 3: "ISH" } as const;
const PS = { 0: "32", 1: "36", 2: "40", 3: "42", 4: "44", 5: "48", 6: "52", 7: "56" } as const;

/**
 * STE, the 512-bit Stream Table Entry, every field the Non-secure STE defines, by its bit number
 * over the whole entry (STE[n] is bit n%64 of 64-bit word n/64).
 *
 * Left out, so that their bits count as reserved here: the fields that exist only in Secure or
 * Realm STEs and are RES0 in a Non-secure one (S2NSW 192, S2NSA 193, S_S2T0SZ, S_S2SL0, S_S2TG,
 * MECID, MPAM_NS, S2SW, S2SA, S_S2SL0_2, S_S2TTB, S_S2SKL). S2TTB is declared as bits [243:196]
 * (address bits [51:4], SMMUv3.1+ with 64-bit descriptors); [247:244] address bits [55:52] exist
 * only for VMSAv9-128 and are reserved here.
 *
 * @spec Arm SMMUv3 (IHI 0070) 5.2
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h STRTAB_STE_0_V
 */
export const STE: Layout = defineLayout({
  name: "STE",
  bits: 512,
  spec: `${SPEC} 5.2`,
  fields: [
    { name: "V", lsb: 0, width: 1 },
    {
      name: "Config",
      lsb: 1,
      width: 3,
      values: {
        0: "abort",
        1: "abort(rsvd)",
        2: "abort(rsvd)",
        3: "abort(rsvd)",
        4: "bypass",
        5: "S1-only",
        6: "S2-only",
        7: "nested",
      },
    },
    { name: "S1Fmt", lsb: 4, width: 2, values: { 0: "linear", 1: "2lvl-4K", 2: "2lvl-64K" } },
    { name: "S1ContextPtr", lsb: 6, width: 50, addr: true, doc: "CD, CD table or L1CD table" },
    { name: "S1CDMax", lsb: 59, width: 5, doc: "log2 of the number of CDs" },
    { name: "S1DSS", lsb: 64, width: 2, values: { 0: "terminate", 1: "bypass", 2: "SSID0" } },
    { name: "S1CIR", lsb: 66, width: 2, values: CACHE },
    { name: "S1COR", lsb: 68, width: 2, values: CACHE },
    { name: "S1CSH", lsb: 70, width: 2, values: SH },
    { name: "S2HWU59", lsb: 72, width: 1 },
    { name: "S2HWU60", lsb: 73, width: 1 },
    { name: "S2HWU61", lsb: 74, width: 1 },
    { name: "S2HWU62", lsb: 75, width: 1 },
    { name: "DRE", lsb: 76, width: 1 },
    { name: "CONT", lsb: 77, width: 4, doc: "2^CONT identical neighbouring STEs" },
    { name: "DCP", lsb: 81, width: 1 },
    { name: "PPAR", lsb: 82, width: 1 },
    { name: "MEV", lsb: 83, width: 1 },
    { name: "SW_RESERVED", lsb: 84, width: 4, ignored: true },
    { name: "S1PIE", lsb: 88, width: 1 },
    { name: "S2FWB", lsb: 89, width: 1 },
    { name: "S1MPAM", lsb: 90, width: 1 },
    { name: "S1STALLD", lsb: 91, width: 1 },
    { name: "EATS", lsb: 92, width: 2, values: { 0: "abort", 1: "full", 2: "split", 3: "DPT" } },
    { name: "STRW", lsb: 94, width: 2, values: { 0: "NS-EL1", 2: "NS-EL2" } },
    { name: "MemAttr", lsb: 96, width: 4 },
    { name: "MTCFG", lsb: 100, width: 1 },
    { name: "ALLOCCFG", lsb: 101, width: 4 },
    { name: "SHCFG", lsb: 108, width: 2, values: { 0: "NSH", 1: "incoming", 2: "OSH", 3: "ISH" } },
    { name: "NSCFG", lsb: 110, width: 2, doc: "IGNORED in a Non-secure STE" },
    { name: "PRIVCFG", lsb: 112, width: 2, values: { 0: "incoming", 2: "unpriv", 3: "priv" } },
    { name: "INSTCFG", lsb: 114, width: 2, values: { 0: "incoming", 2: "data", 3: "instr" } },
    { name: "IMPLEMENTATION_DEFINED", lsb: 116, width: 12 },
    { name: "S2VMID", lsb: 128, width: 16 },
    { name: "IMPLEMENTATION_DEFINED_2", lsb: 144, width: 16 },
    { name: "S2T0SZ", lsb: 160, width: 6 },
    { name: "S2SL0", lsb: 166, width: 2 },
    { name: "S2IR0", lsb: 168, width: 2, values: WALK_CACHE },
    { name: "S2OR0", lsb: 170, width: 2, values: WALK_CACHE },
    { name: "S2SH0", lsb: 172, width: 2, values: SH },
    { name: "S2TG", lsb: 174, width: 2, values: { 0: "4K", 1: "64K", 2: "16K" } },
    { name: "S2PS", lsb: 176, width: 3, values: PS },
    { name: "S2AA64", lsb: 179, width: 1 },
    { name: "S2ENDI", lsb: 180, width: 1 },
    { name: "S2AFFD", lsb: 181, width: 1 },
    { name: "S2PTW", lsb: 182, width: 1 },
    { name: "S2HD", lsb: 183, width: 1 },
    { name: "S2HA", lsb: 184, width: 1 },
    { name: "S2S", lsb: 185, width: 1 },
    { name: "S2R", lsb: 186, width: 1 },
    { name: "S2HAFT", lsb: 187, width: 1 },
    { name: "S2PIE", lsb: 188, width: 1 },
    { name: "S2POE", lsb: 189, width: 1 },
    { name: "DPT_VMATCH", lsb: 190, width: 2 },
    { name: "S2SL0_2", lsb: 194, width: 1 },
    { name: "S2DS", lsb: 195, width: 1 },
    { name: "S2TTB", lsb: 196, width: 48, addr: true, doc: "stage 2 table base, PA[51:4]" },
    { name: "S2SKL", lsb: 253, width: 2 },
    { name: "IMPLEMENTATION_DEFINED_3", lsb: 256, width: 16 },
    { name: "PARTID", lsb: 272, width: 16 },
    { name: "PMG", lsb: 320, width: 8 },
    { name: "AssuredOnly", lsb: 329, width: 1 },
    { name: "TL0", lsb: 330, width: 1 },
    { name: "TL1", lsb: 331, width: 1 },
    { name: "VMSPtr", lsb: 332, width: 44, addr: true, doc: "VMS PA[55:12]" },
    { name: "S2POI", lsb: 448, width: 64, doc: "16 x 4-bit stage 2 overlay permissions" },
  ],
});

/**
 * L1STD, the level-1 stream table descriptor. Span 0 is invalid, 1..11 give 2^(Span-1) STEs in
 * the level-2 array, 12..31 are reserved and behave as 0. L2Ptr bits [5+Span-1:0] are taken as 0.
 *
 * @spec Arm SMMUv3 (IHI 0070) 5.1
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h STRTAB_L1_DESC_SPAN
 */
export const L1_STD: Layout = defineLayout({
  name: "L1STD",
  bits: 64,
  spec: `${SPEC} 5.1`,
  fields: [
    { name: "Span", lsb: 0, width: 5 },
    { name: "L2Ptr", lsb: 6, width: 50, addr: true },
  ],
});

/** The Span Linux writes: 2^8 STEs per level-2 table. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_write_strtab_l1_desc */
export const L1_STD_SPAN_LINUX = STRTAB_SPLIT + 1;

const f = (name: string) => fieldOf(STE, name);

/** Word 0 of an STE: V in place. */
export const STE0_V = f("V").inPlace;
/** Word 0 of an STE: Config shift and mask, for the hot decode path. */
export const STE0_CONFIG_SHIFT = f("Config").shift;
/** Word 0 of an STE: Config mask (unshifted). */
export const STE0_CONFIG_MASK = f("Config").mask;
