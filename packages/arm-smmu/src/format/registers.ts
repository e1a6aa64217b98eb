// SMMUv3 programming interface registers: offsets in the two 64 KiB register pages and one field
// table per register, with the hot bits derived from those tables.

import { defineLayout, fieldOf, type Layout } from "@iommu-sim/iommu-core/platform";

const SPEC = "Arm SMMUv3 (IHI 0070)";

/** Byte offset of register page 1 from the SMMU base (each page is 64 KiB). @spec Arm SMMUv3 (IHI 0070) 6.1 */
export const SMMU_PAGE1 = 0x10000;

/**
 * Byte offsets, from the SMMU base, of the Non-secure registers the model implements. Page-1
 * registers (EVENTQ_PROD/CONS, PRIQ_PROD/CONS) carry the page offset: the spec lists them only in
 * SMMUv3_PAGE_1, and offsets 0xA8/0xAC/0xC8/0xCC of page 0 are Reserved (Linux's PAGE0_REGS_ONLY
 * option for a Cavium erratum is an implementation quirk, not architecture).
 *
 * @spec Arm SMMUv3 (IHI 0070) 6.2, 6.3
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h ARM_SMMU_IDR0
 */
export const SMMU_REG = Object.freeze({
  IDR0: 0x000,
  IDR1: 0x004,
  IDR2: 0x008,
  IDR3: 0x00c,
  IDR4: 0x010,
  IDR5: 0x014,
  IIDR: 0x018,
  AIDR: 0x01c,
  CR0: 0x020,
  CR0ACK: 0x024,
  CR1: 0x028,
  CR2: 0x02c,
  STATUSR: 0x040,
  GBPA: 0x044,
  AGBPA: 0x048,
  IRQ_CTRL: 0x050,
  IRQ_CTRLACK: 0x054,
  GERROR: 0x060,
  GERRORN: 0x064,
  GERROR_IRQ_CFG0: 0x068,
  GERROR_IRQ_CFG1: 0x070,
  GERROR_IRQ_CFG2: 0x074,
  STRTAB_BASE: 0x080,
  STRTAB_BASE_CFG: 0x088,
  CMDQ_BASE: 0x090,
  CMDQ_PROD: 0x098,
  CMDQ_CONS: 0x09c,
  EVENTQ_BASE: 0x0a0,
  EVENTQ_IRQ_CFG0: 0x0b0,
  EVENTQ_IRQ_CFG1: 0x0b8,
  EVENTQ_IRQ_CFG2: 0x0bc,
  PRIQ_BASE: 0x0c0,
  PRIQ_IRQ_CFG0: 0x0d0,
  PRIQ_IRQ_CFG1: 0x0d8,
  PRIQ_IRQ_CFG2: 0x0dc,
  EVENTQ_PROD: SMMU_PAGE1 + 0x0a8,
  EVENTQ_CONS: SMMU_PAGE1 + 0x0ac,
  PRIQ_PROD: SMMU_PAGE1 + 0x0c8,
  PRIQ_CONS: SMMU_PAGE1 + 0x0cc,
} as const);

/** Output/physical address sizes by the 3-bit PS encoding (IDR5.OAS, CD.IPS, STE.S2PS). @spec Arm SMMUv3 (IHI 0070) 6.3.6 */
export const ADDR_SIZE_BITS: readonly number[] = Object.freeze([32, 36, 40, 42, 44, 48, 52, 56]);

const SH_VALUES = { 0: "NSH", 1: "NSH(rsvd)", 2: "OSH", 3: "ISH" } as const;
const CACHE_VALUES = { 0: "NC", 1: "WB", 2: "WT" } as const;

/** SMMU_IDR0: features of the Non-secure interface. @spec Arm SMMUv3 (IHI 0070) 6.3.1 */
export const IDR0_REG: Layout = defineLayout({
  name: "SMMU_IDR0",
  bits: 32,
  spec: `${SPEC} 6.3.1`,
  fields: [
    { name: "S2P", lsb: 0, width: 1, doc: "stage 2 translation supported" },
    { name: "S1P", lsb: 1, width: 1, doc: "stage 1 translation supported" },
    {
      name: "TTF",
      lsb: 2,
      width: 2,
      values: { 1: "AArch32", 2: "AArch64", 3: "AArch32+AArch64" },
      doc: "translation table formats",
    },
    { name: "COHACC", lsb: 4, width: 1, doc: "coherent table and queue accesses" },
    { name: "BTM", lsb: 5, width: 1, doc: "broadcast TLB maintenance" },
    {
      name: "HTTU",
      lsb: 6,
      width: 2,
      values: { 0: "none", 1: "AF", 2: "AF+dirty", 3: "AF+dirty+table-AF" },
    },
    { name: "DORMHINT", lsb: 8, width: 1 },
    { name: "Hyp", lsb: 9, width: 1, doc: "EL2 stream worlds (STE.STRW = EL2)" },
    { name: "ATS", lsb: 10, width: 1 },
    { name: "NS1ATS", lsb: 11, width: 1, doc: "1: split-stage ATS not supported" },
    { name: "ASID16", lsb: 12, width: 1 },
    { name: "MSI", lsb: 13, width: 1 },
    { name: "SEV", lsb: 14, width: 1 },
    { name: "ATOS", lsb: 15, width: 1 },
    { name: "PRI", lsb: 16, width: 1 },
    { name: "VMW", lsb: 17, width: 1 },
    { name: "VMID16", lsb: 18, width: 1 },
    { name: "CD2L", lsb: 19, width: 1 },
    { name: "VATOS", lsb: 20, width: 1 },
    {
      name: "TTENDIAN",
      lsb: 21,
      width: 2,
      values: { 0: "mixed", 1: "reserved", 2: "LE", 3: "BE" },
    },
    { name: "ATSRECERR", lsb: 23, width: 1 },
    {
      name: "STALL_MODEL",
      lsb: 24,
      width: 2,
      values: { 0: "stall+terminate", 1: "terminate", 2: "stall-forced", 3: "reserved" },
    },
    { name: "TERM_MODEL", lsb: 26, width: 1, doc: "1: terminated transactions always abort" },
    { name: "ST_LEVEL", lsb: 27, width: 2, values: { 0: "linear", 1: "2-level" } },
    { name: "RME_IMPL", lsb: 30, width: 1 },
  ],
});

/** SMMU_IDR1: table and queue sizes. @spec Arm SMMUv3 (IHI 0070) 6.3.2 */
export const IDR1_REG: Layout = defineLayout({
  name: "SMMU_IDR1",
  bits: 32,
  spec: `${SPEC} 6.3.2`,
  fields: [
    { name: "SIDSIZE", lsb: 0, width: 6 },
    { name: "SSIDSIZE", lsb: 6, width: 5 },
    { name: "PRIQS", lsb: 11, width: 5 },
    { name: "EVENTQS", lsb: 16, width: 5 },
    { name: "CMDQS", lsb: 21, width: 5 },
    { name: "ATTR_PERMS_OVR", lsb: 26, width: 1 },
    { name: "ATTR_TYPES_OVR", lsb: 27, width: 1 },
    { name: "REL", lsb: 28, width: 1 },
    { name: "QUEUES_PRESET", lsb: 29, width: 1 },
    { name: "TABLES_PRESET", lsb: 30, width: 1 },
    // Bit 31 is ECMDQ in SMMUv3.3 and later; enhanced command queues are out of scope.
  ],
});

/** SMMU_IDR2: the VATOS page offset. @spec Arm SMMUv3 (IHI 0070) 6.3.3 */
export const IDR2_REG: Layout = defineLayout({
  name: "SMMU_IDR2",
  bits: 32,
  spec: `${SPEC} 6.3.3`,
  fields: [{ name: "BA_VATOS", lsb: 0, width: 10 }],
});

/** SMMU_IDR3: optional features. @spec Arm SMMUv3 (IHI 0070) 6.3.4 */
export const IDR3_REG: Layout = defineLayout({
  name: "SMMU_IDR3",
  bits: 32,
  spec: `${SPEC} 6.3.4`,
  fields: [
    { name: "HAD", lsb: 2, width: 1 },
    { name: "PBHA", lsb: 3, width: 1 },
    { name: "XNX", lsb: 4, width: 1 },
    { name: "PPS", lsb: 5, width: 1 },
    { name: "MPAM", lsb: 7, width: 1 },
    { name: "FWB", lsb: 8, width: 1 },
    { name: "STT", lsb: 9, width: 1 },
    { name: "RIL", lsb: 10, width: 1, doc: "range invalidation and TTL hint" },
    { name: "BBML", lsb: 11, width: 2 },
    { name: "E0PD", lsb: 13, width: 1 },
    { name: "PTWNNC", lsb: 14, width: 1 },
    { name: "DPT", lsb: 15, width: 1 },
    { name: "PASIDTT", lsb: 16, width: 1 },
    { name: "EPAN", lsb: 17, width: 1 },
    { name: "S1PI", lsb: 18, width: 1 },
    { name: "S2PI", lsb: 19, width: 1 },
    { name: "S2PO", lsb: 20, width: 1 },
    { name: "THE", lsb: 21, width: 1 },
    { name: "MTEPERM", lsb: 22, width: 1 },
    { name: "AIE", lsb: 23, width: 1 },
  ],
});

/** SMMU_IDR4: IMPLEMENTATION DEFINED. @spec Arm SMMUv3 (IHI 0070) 6.3.5 */
export const IDR4_REG: Layout = defineLayout({
  name: "SMMU_IDR4",
  bits: 32,
  spec: `${SPEC} 6.3.5`,
  fields: [{ name: "IMPLEMENTATION_DEFINED", lsb: 0, width: 32 }],
});

/** SMMU_IDR5: address sizes and granules. @spec Arm SMMUv3 (IHI 0070) 6.3.6 */
export const IDR5_REG: Layout = defineLayout({
  name: "SMMU_IDR5",
  bits: 32,
  spec: `${SPEC} 6.3.6`,
  fields: [
    {
      name: "OAS",
      lsb: 0,
      width: 3,
      values: { 0: "32", 1: "36", 2: "40", 3: "42", 4: "44", 5: "48", 6: "52", 7: "56" },
    },
    { name: "GRAN4K", lsb: 4, width: 1 },
    { name: "GRAN16K", lsb: 5, width: 1 },
    { name: "GRAN64K", lsb: 6, width: 1 },
    { name: "DS", lsb: 7, width: 1, doc: "52-bit addresses with 4K/16K granules (LPA2)" },
    { name: "D128", lsb: 8, width: 1 },
    { name: "VAX", lsb: 10, width: 2, values: { 0: "48-bit VA", 1: "52-bit VA", 2: "56-bit VA" } },
    { name: "STALL_MAX", lsb: 16, width: 16 },
  ],
});

/** SMMU_IIDR: implementation identification. @spec Arm SMMUv3 (IHI 0070) 6.3.7 */
export const IIDR_REG: Layout = defineLayout({
  name: "SMMU_IIDR",
  bits: 32,
  spec: `${SPEC} 6.3.7`,
  fields: [
    { name: "Implementer", lsb: 0, width: 12 },
    { name: "Revision", lsb: 12, width: 4 },
    { name: "Variant", lsb: 16, width: 4 },
    { name: "ProductID", lsb: 20, width: 12 },
  ],
});

/** SMMU_AIDR: architecture revision (minor 0..4 = SMMUv3.0..3.4). @spec Arm SMMUv3 (IHI 0070) 6.3.8 */
export const AIDR_REG: Layout = defineLayout({
  name: "SMMU_AIDR",
  bits: 32,
  spec: `${SPEC} 6.3.8`,
  fields: [
    { name: "ArchMinorRev", lsb: 0, width: 4 },
    { name: "ArchMajorRev", lsb: 4, width: 4 },
  ],
});

/** SMMU_CR0 and SMMU_CR0ACK (same layout). @spec Arm SMMUv3 (IHI 0070) 6.3.9, 6.3.10 */
export const CR0_REG: Layout = defineLayout({
  name: "SMMU_CR0",
  bits: 32,
  spec: `${SPEC} 6.3.9`,
  fields: [
    { name: "SMMUEN", lsb: 0, width: 1 },
    { name: "PRIQEN", lsb: 1, width: 1 },
    { name: "EVENTQEN", lsb: 2, width: 1 },
    { name: "CMDQEN", lsb: 3, width: 1 },
    { name: "ATSCHK", lsb: 4, width: 1 },
    { name: "VMW", lsb: 6, width: 3 },
    { name: "DPT_WALK_EN", lsb: 9, width: 1 },
  ],
});

/** SMMU_CR1: memory attributes of table and queue accesses. @spec Arm SMMUv3 (IHI 0070) 6.3.11 */
export const CR1_REG: Layout = defineLayout({
  name: "SMMU_CR1",
  bits: 32,
  spec: `${SPEC} 6.3.11`,
  fields: [
    { name: "QUEUE_IC", lsb: 0, width: 2, values: CACHE_VALUES },
    { name: "QUEUE_OC", lsb: 2, width: 2, values: CACHE_VALUES },
    { name: "QUEUE_SH", lsb: 4, width: 2, values: SH_VALUES },
    { name: "TABLE_IC", lsb: 6, width: 2, values: CACHE_VALUES },
    { name: "TABLE_OC", lsb: 8, width: 2, values: CACHE_VALUES },
    { name: "TABLE_SH", lsb: 10, width: 2, values: SH_VALUES },
  ],
});

/** SMMU_CR2. @spec Arm SMMUv3 (IHI 0070) 6.3.12 */
export const CR2_REG: Layout = defineLayout({
  name: "SMMU_CR2",
  bits: 32,
  spec: `${SPEC} 6.3.12`,
  fields: [
    { name: "E2H", lsb: 0, width: 1 },
    { name: "RECINVSID", lsb: 1, width: 1, doc: "record C_BAD_STREAMID" },
    { name: "PTM", lsb: 2, width: 1, doc: "private TLB maintenance (ignore broadcast TLBI)" },
    { name: "REC_CFG_ATS", lsb: 3, width: 1 },
  ],
});

/** SMMU_STATUSR. @spec Arm SMMUv3 (IHI 0070) 6.3.13 */
export const STATUSR_REG: Layout = defineLayout({
  name: "SMMU_STATUSR",
  bits: 32,
  spec: `${SPEC} 6.3.13`,
  fields: [{ name: "DORMANT", lsb: 0, width: 1 }],
});

/** SMMU_GBPA: attributes (or abort) for traffic while SMMUEN == 0. @spec Arm SMMUv3 (IHI 0070) 6.3.14 */
export const GBPA_REG: Layout = defineLayout({
  name: "SMMU_GBPA",
  bits: 32,
  spec: `${SPEC} 6.3.14`,
  fields: [
    { name: "MemAttr", lsb: 0, width: 4 },
    { name: "MTCFG", lsb: 4, width: 1 },
    { name: "ALLOCCFG", lsb: 8, width: 4 },
    { name: "SHCFG", lsb: 12, width: 2, values: { 0: "NSH", 1: "incoming", 2: "OSH", 3: "ISH" } },
    { name: "PRIVCFG", lsb: 16, width: 2 },
    { name: "INSTCFG", lsb: 18, width: 2 },
    { name: "ABORT", lsb: 20, width: 1 },
    { name: "Update", lsb: 31, width: 1, doc: "written 1 with the new value; cleared when done" },
  ],
});

/** SMMU_IRQ_CTRL and SMMU_IRQ_CTRLACK (same layout). @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_IRQ_CTRL, SMMU_IRQ_CTRLACK */
export const IRQ_CTRL_REG: Layout = defineLayout({
  name: "SMMU_IRQ_CTRL",
  bits: 32,
  spec: `${SPEC} 6.3 SMMU_IRQ_CTRL`,
  fields: [
    { name: "GERROR_IRQEN", lsb: 0, width: 1 },
    { name: "PRIQ_IRQEN", lsb: 1, width: 1 },
    { name: "EVENTQ_IRQEN", lsb: 2, width: 1 },
  ],
});

/**
 * SMMU_GERROR and SMMU_GERRORN (same layout). An error is active while its GERROR bit differs
 * from the GERRORN bit; the SMMU toggles GERROR, software acknowledges by copying it to GERRORN.
 *
 * @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_GERROR, SMMU_GERRORN
 */
export const GERROR_REG: Layout = defineLayout({
  name: "SMMU_GERROR",
  bits: 32,
  spec: `${SPEC} 6.3 SMMU_GERROR`,
  fields: [
    { name: "CMDQ_ERR", lsb: 0, width: 1 },
    { name: "EVENTQ_ABT_ERR", lsb: 2, width: 1 },
    { name: "PRIQ_ABT_ERR", lsb: 3, width: 1 },
    { name: "MSI_CMDQ_ABT_ERR", lsb: 4, width: 1 },
    { name: "MSI_EVENTQ_ABT_ERR", lsb: 5, width: 1 },
    { name: "MSI_PRIQ_ABT_ERR", lsb: 6, width: 1 },
    { name: "MSI_GERROR_ABT_ERR", lsb: 7, width: 1 },
    { name: "SFM_ERR", lsb: 8, width: 1 },
  ],
});

/** SMMU_*_IRQ_CFG0 (64-bit): MSI target address; 0 sends no MSI. @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_GERROR_IRQ_CFG0, 6.3.30 */
export const IRQ_CFG0_REG: Layout = defineLayout({
  name: "SMMU_IRQ_CFG0",
  bits: 64,
  spec: `${SPEC} 6.3 SMMU_GERROR_IRQ_CFG0`,
  fields: [{ name: "ADDR", lsb: 2, width: 54, addr: true }],
});

/** SMMU_*_IRQ_CFG1: MSI payload. @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_GERROR_IRQ_CFG1, 6.3.35 */
export const IRQ_CFG1_REG: Layout = defineLayout({
  name: "SMMU_IRQ_CFG1",
  bits: 32,
  spec: `${SPEC} 6.3 SMMU_GERROR_IRQ_CFG1`,
  fields: [{ name: "DATA", lsb: 0, width: 32 }],
});

/** SMMU_GERROR_IRQ_CFG2 / SMMU_EVENTQ_IRQ_CFG2: MSI attributes. @spec Arm SMMUv3 (IHI 0070) 6.3.23 */
export const IRQ_CFG2_REG: Layout = defineLayout({
  name: "SMMU_IRQ_CFG2",
  bits: 32,
  spec: `${SPEC} 6.3.23`,
  fields: [
    { name: "MemAttr", lsb: 0, width: 4 },
    { name: "SH", lsb: 4, width: 2, values: SH_VALUES },
  ],
});

/** SMMU_PRIQ_IRQ_CFG2: as IRQ_CFG2 plus LO (interrupt only on Last == 1). @spec Arm SMMUv3 (IHI 0070) 6.3.36 */
export const PRIQ_IRQ_CFG2_REG: Layout = defineLayout({
  name: "SMMU_PRIQ_IRQ_CFG2",
  bits: 32,
  spec: `${SPEC} 6.3.36`,
  fields: [
    { name: "MemAttr", lsb: 0, width: 4 },
    { name: "SH", lsb: 4, width: 2, values: SH_VALUES },
    { name: "LO", lsb: 31, width: 1 },
  ],
});

/**
 * SMMU_STRTAB_BASE (64-bit). ADDR is aligned by the SMMU: to the table size for a linear table
 * (ADDR[LOG2SIZE+5:0] = 0), to max(64 B, L1 size) for a 2-level one
 * (ADDR[max(5, LOG2SIZE-SPLIT-1+3):0] = 0).
 *
 * @spec Arm SMMUv3 (IHI 0070) 6.3.24
 */
export const STRTAB_BASE_REG: Layout = defineLayout({
  name: "SMMU_STRTAB_BASE",
  bits: 64,
  spec: `${SPEC} 6.3.24`,
  fields: [
    { name: "ADDR", lsb: 6, width: 50, addr: true },
    { name: "RA", lsb: 62, width: 1 },
  ],
});

/** SMMU_STRTAB_BASE_CFG. SPLIT values other than 6, 8, 10 behave as 6. @spec Arm SMMUv3 (IHI 0070) 6.3.25 */
export const STRTAB_BASE_CFG_REG: Layout = defineLayout({
  name: "SMMU_STRTAB_BASE_CFG",
  bits: 32,
  spec: `${SPEC} 6.3.25`,
  fields: [
    { name: "LOG2SIZE", lsb: 0, width: 6 },
    { name: "SPLIT", lsb: 6, width: 5 },
    { name: "FMT", lsb: 16, width: 2, values: { 0: "linear", 1: "2-level" } },
  ],
});

function queueBase(name: string, section: string, hint: "RA" | "WA" | "RWA"): Layout {
  return defineLayout({
    name,
    bits: 64,
    spec: `${SPEC} ${section}`,
    fields: [
      { name: "LOG2SIZE", lsb: 0, width: 5 },
      {
        name: "ADDR",
        lsb: 5,
        width: 51,
        addr: true,
        doc: "aligned by the SMMU to max(32 B, size)",
      },
      { name: hint, lsb: 62, width: 1 },
    ],
  });
}

/** SMMU_CMDQ_BASE (64-bit): bit 62 is RA. @spec Arm SMMUv3 (IHI 0070) 6.3.26 */
export const CMDQ_BASE_REG: Layout = queueBase("SMMU_CMDQ_BASE", "6.3.26", "RA");
/** SMMU_EVENTQ_BASE (64-bit): bit 62 is WA. @spec Arm SMMUv3 (IHI 0070) 6.3.29 */
export const EVENTQ_BASE_REG: Layout = queueBase("SMMU_EVENTQ_BASE", "6.3.29", "WA");
/** SMMU_PRIQ_BASE (64-bit): bit 62 is WA. @spec Arm SMMUv3 (IHI 0070) 6.3.33 */
export const PRIQ_BASE_REG: Layout = queueBase("SMMU_PRIQ_BASE", "6.3.33", "WA");
/**
 * Any queue base register, for code that treats the three queues alike: bit 62 (RWA) is the
 * read-allocate hint of CMDQ_BASE and the write-allocate hint of EVENTQ_BASE/PRIQ_BASE.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h Q_BASE_RWA
 */
export const Q_BASE_REG: Layout = queueBase("SMMU_Q_BASE", "6.3.26", "RWA");

/**
 * SMMU_CMDQ_PROD. WR holds the index in bits [QS-1:0] and the wrap flag at bit QS, QS being the
 * queue's LOG2SIZE (see `qIdx`, `qWrap`).
 *
 * @spec Arm SMMUv3 (IHI 0070) 6.3.27
 */
export const CMDQ_PROD_REG: Layout = defineLayout({
  name: "SMMU_CMDQ_PROD",
  bits: 32,
  spec: `${SPEC} 6.3.27`,
  fields: [{ name: "WR", lsb: 0, width: 20 }],
});

/** SMMU_CMDQ_CONS: RD as PROD.WR, and ERR (a CERROR code) while CMDQ_ERR is active. @spec Arm SMMUv3 (IHI 0070) 6.3.28 */
export const CMDQ_CONS_REG: Layout = defineLayout({
  name: "SMMU_CMDQ_CONS",
  bits: 32,
  spec: `${SPEC} 6.3.28`,
  fields: [
    { name: "RD", lsb: 0, width: 20 },
    {
      name: "ERR",
      lsb: 24,
      width: 7,
      values: { 0: "CERROR_NONE", 1: "CERROR_ILL", 2: "CERROR_ABT", 3: "CERROR_ATC_INV_SYNC" },
    },
  ],
});

/**
 * SMMU_EVENTQ_PROD / SMMU_PRIQ_PROD (page 1): WR written by the SMMU, OVFLG toggled by it on an
 * overflow while no overflow is active (OVFLG == CONS.OVACKFLG).
 *
 * @spec Arm SMMUv3 (IHI 0070) 6.3.95, 6.3.97
 */
export const Q_PROD_REG: Layout = defineLayout({
  name: "SMMU_Q_PROD",
  bits: 32,
  spec: `${SPEC} 6.3.95`,
  fields: [
    { name: "WR", lsb: 0, width: 20 },
    { name: "OVFLG", lsb: 31, width: 1 },
  ],
});

/** SMMU_EVENTQ_CONS / SMMU_PRIQ_CONS (page 1): RD, and OVACKFLG to acknowledge an overflow. @spec Arm SMMUv3 (IHI 0070) 6.3.96, 6.3.98 */
export const Q_CONS_REG: Layout = defineLayout({
  name: "SMMU_Q_CONS",
  bits: 32,
  spec: `${SPEC} 6.3.98`,
  fields: [
    { name: "RD", lsb: 0, width: 20 },
    { name: "OVACKFLG", lsb: 31, width: 1 },
  ],
});

const bit = (l: Layout, name: string): number => fieldOf(l, name).inPlace;

/** CR0/CR0ACK bits. @spec Arm SMMUv3 (IHI 0070) 6.3.9 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CR0_SMMUEN */
export const CR0_SMMUEN = bit(CR0_REG, "SMMUEN");
/** @spec Arm SMMUv3 (IHI 0070) 6.3.9 */
export const CR0_PRIQEN = bit(CR0_REG, "PRIQEN");
/** @spec Arm SMMUv3 (IHI 0070) 6.3.9 */
export const CR0_EVTQEN = bit(CR0_REG, "EVENTQEN");
/** @spec Arm SMMUv3 (IHI 0070) 6.3.9 */
export const CR0_CMDQEN = bit(CR0_REG, "CMDQEN");
/** @spec Arm SMMUv3 (IHI 0070) 6.3.9 */
export const CR0_ATSCHK = bit(CR0_REG, "ATSCHK");
/** Bits of CR0 that are not RES0. @spec Arm SMMUv3 (IHI 0070) 6.3.9 */
export const CR0_WRITABLE = ~(CR0_REG.reserved[0] as number) >>> 0;

/** @spec Arm SMMUv3 (IHI 0070) 6.3.12 */
export const CR2_E2H = bit(CR2_REG, "E2H");
/** @spec Arm SMMUv3 (IHI 0070) 6.3.12 */
export const CR2_RECINVSID = bit(CR2_REG, "RECINVSID");
/** @spec Arm SMMUv3 (IHI 0070) 6.3.12 */
export const CR2_PTM = bit(CR2_REG, "PTM");

/** @spec Arm SMMUv3 (IHI 0070) 6.3.14 */
export const GBPA_UPDATE = bit(GBPA_REG, "Update");
/** @spec Arm SMMUv3 (IHI 0070) 6.3.14 */
export const GBPA_ABORT = bit(GBPA_REG, "ABORT");

/** @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_IRQ_CTRL */
export const IRQ_CTRL_GERROR_IRQEN = bit(IRQ_CTRL_REG, "GERROR_IRQEN");
/** @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_IRQ_CTRL */
export const IRQ_CTRL_PRIQ_IRQEN = bit(IRQ_CTRL_REG, "PRIQ_IRQEN");
/** @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_IRQ_CTRL */
export const IRQ_CTRL_EVTQ_IRQEN = bit(IRQ_CTRL_REG, "EVENTQ_IRQEN");

/** GERROR/GERRORN bits. @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_GERROR @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h GERROR_CMDQ_ERR */
export const GERROR_CMDQ_ERR = bit(GERROR_REG, "CMDQ_ERR");
/** @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_GERROR */
export const GERROR_EVTQ_ABT_ERR = bit(GERROR_REG, "EVENTQ_ABT_ERR");
/** @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_GERROR */
export const GERROR_PRIQ_ABT_ERR = bit(GERROR_REG, "PRIQ_ABT_ERR");
/** @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_GERROR */
export const GERROR_MSI_CMDQ_ABT_ERR = bit(GERROR_REG, "MSI_CMDQ_ABT_ERR");
/** @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_GERROR */
export const GERROR_MSI_EVTQ_ABT_ERR = bit(GERROR_REG, "MSI_EVENTQ_ABT_ERR");
/** @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_GERROR */
export const GERROR_MSI_PRIQ_ABT_ERR = bit(GERROR_REG, "MSI_PRIQ_ABT_ERR");
/** @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_GERROR */
export const GERROR_MSI_GERROR_ABT_ERR = bit(GERROR_REG, "MSI_GERROR_ABT_ERR");
/** @spec Arm SMMUv3 (IHI 0070) 6.3 SMMU_GERROR */
export const GERROR_SFM_ERR = bit(GERROR_REG, "SFM_ERR");
/** Every GERROR bit (0x1FD). @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h GERROR_ERR_MASK */
export const GERROR_ERR_MASK = ~(GERROR_REG.reserved[0] as number) >>> 0;

/** CMDQ_CONS.ERR codes. @spec Arm SMMUv3 (IHI 0070) 7.1 @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CMDQ_ERR_CERROR_NONE_IDX */
export const CMDQ_CONS_ERR_NONE = 0;
/** Illegal command (reserved opcode, bad parameter, or optionally a non-zero RES0 field). @spec Arm SMMUv3 (IHI 0070) 4.1.3 */
export const CMDQ_CONS_ERR_ILL = 1;
/** External abort reading the command. @spec Arm SMMUv3 (IHI 0070) 4.1.3 */
export const CMDQ_CONS_ERR_ABT = 2;
/** ATC invalidation completion timeout; CONS points at the CMD_SYNC. @spec Arm SMMUv3 (IHI 0070) 7.1 */
export const CMDQ_CONS_ERR_ATC_INV_SYNC = 3;
/** Position of CMDQ_CONS.ERR. */
export const CMDQ_CONS_ERR_SHIFT = fieldOf(CMDQ_CONS_REG, "ERR").shift;
/** CMDQ_CONS.ERR in place. */
export const CMDQ_CONS_ERR_MASK = fieldOf(CMDQ_CONS_REG, "ERR").inPlace;

/** PROD.OVFLG / CONS.OVACKFLG (bit 31). @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h Q_OVERFLOW_FLAG */
export const Q_OVERFLOW_FLAG = bit(Q_PROD_REG, "OVFLG");
/** The index-and-wrap part of a PROD/CONS value (bits [19:0]). @spec Arm SMMUv3 (IHI 0070) 6.3.27 */
export const Q_WR_MASK = fieldOf(Q_PROD_REG, "WR").inPlace;

/** Index part of a queue pointer for a queue of 2^log2size entries. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h Q_IDX */
export function qIdx(ptr: number, log2size: number): number {
  return (ptr & ((1 << log2size) - 1)) >>> 0;
}

/** Wrap flag of a queue pointer (0 or 1). @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h Q_WRP */
export function qWrap(ptr: number, log2size: number): number {
  return (ptr >>> log2size) & 1;
}

/** Queue empty: same index and same wrap. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c queue_empty */
export function qEmpty(prod: number, cons: number, log2size: number): boolean {
  const m = (1 << (log2size + 1)) - 1;
  return (prod & m) === (cons & m);
}

/** Queue full: same index, different wrap. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c queue_full */
export function qFull(prod: number, cons: number, log2size: number): boolean {
  const m = (1 << (log2size + 1)) - 1;
  return ((prod ^ cons) & m) === 1 << log2size;
}

/** The pointer after `ptr`, wrapped to the queue size, other bits (ERR, OVFLG) dropped. */
export function qInc(ptr: number, log2size: number): number {
  return (ptr + 1) & ((1 << (log2size + 1)) - 1);
}
