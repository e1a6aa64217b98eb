// VMSAv8-64 translation table descriptors (LPAE long format) for stage 1 and stage 2, as the SMMU
// walks them and io-pgtable-arm writes them: one field table per kind, plus hot uint32 masks.
//
// Output addresses: the `OA` / `NextLevelTable` fields cover descriptor bits [47:12]. A leaf or
// table of granule 2^g uses bits [47:g]; bits [g-1:12] are RES0 except with the 64 KiB granule and
// a 52-bit OA (FEAT_LPA), where descriptor bits [15:12] hold OA[51:48] (see `lpaeDescPa`). Bits
// [49:48] are reserved (their LPA2 meaning, OA[51:50] with DS=1, is not modelled), so a walker
// that finds them set reports an Address Size fault as the Arm ARM requires without DS.

import { defineLayout, fieldOf, type Layout, wordMask } from "@iommu-sim/iommu-core/platform";

const SPEC = "Arm ARM DDI0487 D8.3 (VMSAv8-64 descriptor formats); IHI0070 3.4";

const TYPE_VALUES = Object.freeze({ 0: "block", 1: "table/page" });

/**
 * Stage-1 table descriptor (levels 0-2, bits[1:0] = 0b11).
 *
 * @spec Arm ARM DDI0487 D8.3.1 (Table descriptor format); IHI0070 3.4.1 (HADx ignores *Table)
 * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_install_table
 */
export const LPAE_S1_TABLE_DESC: Layout = defineLayout({
  name: "LPAE_S1_TABLE_DESC",
  bits: 64,
  spec: SPEC,
  fields: [
    { name: "Valid", lsb: 0, width: 1, doc: "descriptor is valid" },
    { name: "Type", lsb: 1, width: 1, values: TYPE_VALUES, doc: "1: table (levels 0-2)" },
    { name: "IGNORED_LO", lsb: 2, width: 10, ignored: true, doc: "ignored in table descriptors" },
    { name: "NextLevelTable", lsb: 12, width: 36, addr: true, doc: "next-level table PA[47:12]" },
    { name: "IGNORED_HI", lsb: 52, width: 7, ignored: true, doc: "ignored (software use)" },
    { name: "PXNTable", lsb: 59, width: 1, doc: "privileged execute-never below" },
    { name: "UXNTable", lsb: 60, width: 1, doc: "unprivileged execute-never below (XNTable)" },
    { name: "APTable", lsb: 61, width: 2, doc: "access-permission limit below" },
    { name: "NSTable", lsb: 63, width: 1, doc: "next table in Non-secure PA space (Secure only)" },
  ],
});

/**
 * Stage-1 block (levels 1-2, bits[1:0] = 0b01) or page (level 3, 0b11) descriptor.
 *
 * @spec Arm ARM DDI0487 D8.3.2 (Block and Page descriptor formats, stage 1 attributes)
 * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_prot_to_pte
 */
export const LPAE_S1_BLOCK_DESC: Layout = defineLayout({
  name: "LPAE_S1_BLOCK_DESC",
  bits: 64,
  spec: SPEC,
  fields: [
    { name: "Valid", lsb: 0, width: 1, doc: "descriptor is valid" },
    { name: "Type", lsb: 1, width: 1, values: TYPE_VALUES, doc: "0: block, 1: page (level 3)" },
    {
      name: "AttrIndx",
      lsb: 2,
      width: 3,
      values: { 0: "NC", 1: "WBRWA", 2: "Device-nGnRE", 3: "INC-OWB" },
      doc: "MAIR index (io-pgtable's MAIR: 0 NC, 1 cacheable, 2 device, 3 inner-NC outer-WB)",
    },
    { name: "NS", lsb: 5, width: 1, doc: "Non-secure output (Secure only; ARM_NS quirk)" },
    {
      name: "AP",
      lsb: 6,
      width: 2,
      values: { 0: "RW-priv", 1: "RW", 2: "RO-priv", 3: "RO" },
      doc: "AP[2:1]: bit 6 AP[1] EL0/unprivileged access, bit 7 AP[2] read-only",
    },
    { name: "SH", lsb: 8, width: 2, values: { 0: "NSH", 2: "OSH", 3: "ISH" }, doc: "shareability" },
    { name: "AF", lsb: 10, width: 1, doc: "access flag" },
    { name: "nG", lsb: 11, width: 1, doc: "not global: tagged with the ASID" },
    { name: "OA", lsb: 12, width: 36, addr: true, doc: "output address [47:12] (see header)" },
    { name: "GP", lsb: 50, width: 1, doc: "guarded page (BTI); no effect on SMMU accesses" },
    { name: "DBM", lsb: 51, width: 1, doc: "dirty bit modifier (HTTU; ARM_HD quirk)" },
    { name: "Contiguous", lsb: 52, width: 1, doc: "one of a contiguous aligned group" },
    { name: "PXN", lsb: 53, width: 1, doc: "privileged execute-never" },
    { name: "UXN", lsb: 54, width: 1, doc: "unprivileged execute-never (XN)" },
    { name: "SW", lsb: 55, width: 4, ignored: true, doc: "software use (bit 55: SW_SYNC)" },
    { name: "PBHA", lsb: 59, width: 4, ignored: true, doc: "page-based hardware attributes" },
    { name: "IGNORED_63", lsb: 63, width: 1, ignored: true, doc: "ignored" },
  ],
});

/**
 * Stage-2 table descriptor (levels 0-2). Bits [63:59] are RES0 at stage 2: there are no
 * hierarchical attributes.
 *
 * @spec Arm ARM DDI0487 D8.3.1 (Table descriptor format, stage 2)
 * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_install_table
 */
export const LPAE_S2_TABLE_DESC: Layout = defineLayout({
  name: "LPAE_S2_TABLE_DESC",
  bits: 64,
  spec: SPEC,
  fields: [
    { name: "Valid", lsb: 0, width: 1, doc: "descriptor is valid" },
    { name: "Type", lsb: 1, width: 1, values: TYPE_VALUES, doc: "1: table (levels 0-2)" },
    { name: "IGNORED_LO", lsb: 2, width: 10, ignored: true, doc: "ignored in table descriptors" },
    { name: "NextLevelTable", lsb: 12, width: 36, addr: true, doc: "next-level table PA[47:12]" },
    { name: "IGNORED_HI", lsb: 52, width: 7, ignored: true, doc: "ignored (software use)" },
  ],
});

/**
 * Stage-2 block or page descriptor. XN is XN[1:0] in bits [54:53] (FEAT_XNX); io-pgtable sets
 * both bits for IOMMU_NOEXEC.
 *
 * @spec Arm ARM DDI0487 D8.3.2 (stage 2 attributes: MemAttr, S2AP, XN)
 * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_prot_to_pte
 */
export const LPAE_S2_BLOCK_DESC: Layout = defineLayout({
  name: "LPAE_S2_BLOCK_DESC",
  bits: 64,
  spec: SPEC,
  fields: [
    { name: "Valid", lsb: 0, width: 1, doc: "descriptor is valid" },
    { name: "Type", lsb: 1, width: 1, values: TYPE_VALUES, doc: "0: block, 1: page (level 3)" },
    {
      name: "MemAttr",
      lsb: 2,
      width: 4,
      values: { 1: "Device-nGnRE", 5: "NC", 6: "FWB-WB", 15: "OIWB" },
      doc: "memory attributes (direct encoding; S2FWB changes the meaning)",
    },
    {
      name: "S2AP",
      lsb: 6,
      width: 2,
      values: { 0: "none", 1: "RO", 2: "WO", 3: "RW" },
      doc: "bit 6 read, bit 7 write",
    },
    { name: "SH", lsb: 8, width: 2, values: { 0: "NSH", 2: "OSH", 3: "ISH" }, doc: "shareability" },
    { name: "AF", lsb: 10, width: 1, doc: "access flag" },
    { name: "OA", lsb: 12, width: 36, addr: true, doc: "output address [47:12] (see header)" },
    { name: "DBM", lsb: 51, width: 1, doc: "dirty bit modifier" },
    { name: "Contiguous", lsb: 52, width: 1, doc: "one of a contiguous aligned group" },
    { name: "XN", lsb: 53, width: 2, doc: "execute-never XN[1:0]" },
    { name: "SW", lsb: 55, width: 4, ignored: true, doc: "software use" },
    { name: "PBHA", lsb: 59, width: 4, ignored: true, doc: "page-based hardware attributes" },
    { name: "IGNORED_63", lsb: 63, width: 1, ignored: true, doc: "ignored" },
  ],
});

/** Bits of `layout.field` in the word starting at bit `base` (0: low word, 32: high word). */
function maskOf(layout: Layout, name: string, base: 0 | 32): number {
  return wordMask(fieldOf(layout, name), base / 32);
}

const S1B = LPAE_S1_BLOCK_DESC;
const S2B = LPAE_S2_BLOCK_DESC;
const S1T = LPAE_S1_TABLE_DESC;

// Hot constants, derived once from the tables above. Low word unless named _HI.
/** bit 0 */
export const LPAE_DESC_VALID = maskOf(S1B, "Valid", 0);
/** bit 1: table (levels 0-2) or page (level 3) when set, block when clear */
export const LPAE_DESC_TYPE = maskOf(S1B, "Type", 0);
/** bits[1:0] of a table or page descriptor */
export const LPAE_DESC_TABLE_OR_PAGE = LPAE_DESC_VALID | LPAE_DESC_TYPE;
/** bits[1:0] of a block descriptor */
export const LPAE_DESC_BLOCK = LPAE_DESC_VALID;
/** Low-word address bits [31:12] (an int32, so negative). */
export const LPAE_DESC_ADDR_LO = maskOf(S1B, "OA", 0) | 0;
/** High-word address bits [47:32]. */
export const LPAE_DESC_ADDR_HI = maskOf(S1B, "OA", 32);
/** High-word bits [49:48]: OA[49:48] only with LPA2 (DS=1), RES0 here. */
export const LPAE_DESC_RES0_HI = (S1B.reserved[1] as number) | 0;
export const LPAE_DESC_AF = maskOf(S1B, "AF", 0);
export const LPAE_DESC_SH_SHIFT = fieldOf(S1B, "SH").shift;
export const LPAE_DESC_SH_MASK = maskOf(S1B, "SH", 0);
export const LPAE_DESC_SH_OS = 2 << LPAE_DESC_SH_SHIFT;
export const LPAE_DESC_SH_IS = 3 << LPAE_DESC_SH_SHIFT;
export const LPAE_DESC_NS = maskOf(S1B, "NS", 0);
export const LPAE_S1_ATTRINDX_SHIFT = fieldOf(S1B, "AttrIndx").shift;
export const LPAE_S1_ATTRINDX_MASK = maskOf(S1B, "AttrIndx", 0);
/** AP[1] (bit 6): unprivileged (EL0) access allowed. */
export const LPAE_S1_AP_UNPRIV = 1 << fieldOf(S1B, "AP").shift;
/** AP[2] (bit 7): read-only. */
export const LPAE_S1_AP_RDONLY = 2 << fieldOf(S1B, "AP").shift;
export const LPAE_S1_NG = maskOf(S1B, "nG", 0);
export const LPAE_S2_MEMATTR_SHIFT = fieldOf(S2B, "MemAttr").shift;
export const LPAE_S2_MEMATTR_MASK = maskOf(S2B, "MemAttr", 0);
/** S2AP[0] (bit 6): reads allowed. */
export const LPAE_S2_AP_READ = 1 << fieldOf(S2B, "S2AP").shift;
/** S2AP[1] (bit 7): writes allowed. */
export const LPAE_S2_AP_WRITE = 2 << fieldOf(S2B, "S2AP").shift;
export const LPAE_DESC_DBM_HI = maskOf(S1B, "DBM", 32);
export const LPAE_DESC_CONT_HI = maskOf(S1B, "Contiguous", 32);
export const LPAE_S1_PXN_HI = maskOf(S1B, "PXN", 32);
export const LPAE_S1_UXN_HI = maskOf(S1B, "UXN", 32);
/** Bits 53 and 54 (S1 PXN|UXN, S2 XN[1:0]): what io-pgtable sets for IOMMU_NOEXEC. */
export const LPAE_DESC_XN_HI = maskOf(S2B, "XN", 32);
export const LPAE_S1_PXNTABLE_HI = maskOf(S1T, "PXNTable", 32);
export const LPAE_S1_UXNTABLE_HI = maskOf(S1T, "UXNTable", 32);
export const LPAE_S1_APTABLE_SHIFT_HI = fieldOf(S1T, "APTable").shift;
export const LPAE_S1_NSTABLE_HI = maskOf(S1T, "NSTable", 32);

/** MemAttr values io-pgtable-arm writes at stage 2 (in the field, not shifted). */
export const LPAE_S2_MEMATTR_DEV = 0x1;
export const LPAE_S2_MEMATTR_NC = 0x5;
export const LPAE_S2_MEMATTR_FWB_WB = 0x6;
export const LPAE_S2_MEMATTR_OIWB = 0xf;
/** AttrIndx values io-pgtable-arm writes at stage 1 (its MAIR slots). */
export const LPAE_MAIR_IDX_NC = 0;
export const LPAE_MAIR_IDX_CACHE = 1;
export const LPAE_MAIR_IDX_DEV = 2;
export const LPAE_MAIR_IDX_INC_OCACHE = 3;
/**
 * MAIR io-pgtable-arm programs (low 32 bits; the high half is 0): Attr0 0x44 Normal NC, Attr1 0xff
 * Normal WB RW-allocate, Attr2 0x04 Device-nGnRE, Attr3 0xf4 inner NC / outer WB.
 *
 * @kernel drivers/iommu/io-pgtable-arm.c arm_64_lpae_alloc_pgtable_s1
 */
export const LPAE_MAIR_LO = (0x44 | (0xff << 8) | (0x04 << 16) | (0xf4 << 24)) >>> 0;

/**
 * The PA a leaf or table descriptor `hi:lo` holds, for granule `granule` (bytes): bits [47:g],
 * plus OA[51:48] from bits [15:12] with the 64 KiB granule (FEAT_LPA packing).
 *
 * @kernel drivers/iommu/io-pgtable-arm.c iopte_to_paddr
 */
export function lpaeDescPa(lo: number, hi: number, granule: number): number {
  const low = (lo & LPAE_DESC_ADDR_LO & -granule) >>> 0;
  const top = (hi & LPAE_DESC_ADDR_HI) * 4294967296;
  if (granule !== 0x1_0000) return top + low;
  return top + low + ((lo >>> 12) & 0xf) * 281474976710656;
}

/** Low word of the address bits of a descriptor for `pa` (granule-aligned; packs OA[51:48]). */
export function lpaeDescAddrLo(pa: number, granule: number): number {
  const lo = pa & LPAE_DESC_ADDR_LO;
  if (granule !== 0x1_0000) return lo;
  return lo | ((((pa / 281474976710656) | 0) & 0xf) << 12);
}

/** High word of the address bits of a descriptor for `pa`. */
export function lpaeDescAddrHi(pa: number): number {
  return (pa / 4294967296) & LPAE_DESC_ADDR_HI;
}
