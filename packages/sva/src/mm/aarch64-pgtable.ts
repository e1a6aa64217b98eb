// The AArch64 VMSAv8-64 translation-table format (4 KiB granule, 48-bit VA, 4 levels) of a user
// address space, bit for bit as Linux writes it: what an SMMUv3 stage-1 walk reads through an
// SVA context descriptor.

import { bug } from "@iommu-sim/iommu-core";
import type { CpuPgtableFormat } from "./cpu-pgtable.js";
import { paHi, paLo } from "./cpu-pgtable.js";
import { VM_ACCESS_FLAGS, VM_EXEC, VM_READ, VM_WRITE } from "./mm-flags.js";

/** @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_VALID */
export const A64_PTE_VALID = 1 << 0;
/** Bit 1: table (levels 0-2) or page (level 3). @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_TABLE_BIT */
export const A64_PTE_TABLE_BIT = 1 << 1;
/** 0b11, also PMD_TYPE_TABLE. @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_TYPE_PAGE */
export const A64_PTE_TYPE_PAGE = A64_PTE_VALID | A64_PTE_TABLE_BIT;
/** AttrIndx[2:0] at bits 4:2. @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_ATTRINDX */
export const A64_PTE_ATTRINDX_SHIFT = 2;
/** AP[1]: EL0 access. @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_USER */
export const A64_PTE_USER = 1 << 6;
/** AP[2]: read-only. @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_RDONLY */
export const A64_PTE_RDONLY = 1 << 7;
/** SH[1:0] = 0b11, inner shareable. @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_SHARED */
export const A64_PTE_SHARED = 3 << 8;
/** @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_AF */
export const A64_PTE_AF = 1 << 10;
/** @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_NG */
export const A64_PTE_NG = 1 << 11;
/** PTE_NG again: with VALID clear it marks a PROT_NONE entry. @kernel arch/arm64/include/asm/pgtable-prot.h PTE_PRESENT_INVALID */
export const A64_PTE_PRESENT_INVALID = A64_PTE_NG;
/** Access flag of a table descriptor (FEAT_HAFT; ignored without it). @kernel arch/arm64/include/asm/pgtable-hwdef.h PMD_TABLE_AF */
export const A64_TABLE_AF = 1 << 10;
// High-word bits (bit n of the entry is bit n - 32 of `hi`).
/** DBM, bit 51; Linux's PTE_WRITE. @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_DBM */
export const A64_PTE_DBM_HI = 1 << 19;
/** @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_CONT */
export const A64_PTE_CONT_HI = 1 << 20;
/** @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_PXN */
export const A64_PTE_PXN_HI = 1 << 21;
/** @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_UXN */
export const A64_PTE_UXN_HI = 1 << 22;
/** Software dirty, bit 55 (ignored by hardware). @kernel arch/arm64/include/asm/pgtable-prot.h PTE_DIRTY */
export const A64_PTE_DIRTY_HI = 1 << 23;
/** PXNTable, bit 59. @kernel arch/arm64/include/asm/pgtable-hwdef.h PMD_TABLE_PXN */
export const A64_TABLE_PXN_HI = 1 << 27;
/** UXNTable, bit 60. @kernel arch/arm64/include/asm/pgtable-hwdef.h PMD_TABLE_UXN */
export const A64_TABLE_UXN_HI = 1 << 28;
/** APTable[0] (bit 61, no EL0 access below) and APTable[1] (bit 62, read-only below). */
export const A64_TABLE_AP_NOEL0_HI = 1 << 29;
export const A64_TABLE_AP_RDONLY_HI = 1 << 30;
/** Output address bits 31:12 (low word) and 47:32 (high word). @kernel arch/arm64/include/asm/pgtable-hwdef.h PTE_ADDR_LOW */
export const A64_OA_LO = 0xfffff000;
export const A64_OA_HI = 0x0000ffff;

/** @kernel arch/arm64/include/asm/memory.h MT_NORMAL */
export const MT_NORMAL = 0;
/**
 * MAIR_EL1 as Linux programs it, [bits 31:0, bits 63:32]: Attr0 (MT_NORMAL) 0xff, Attr1
 * (MT_NORMAL_TAGGED) 0xff (0xf0 once MTE is found; not modelled), Attr2 (MT_NORMAL_NC) 0x44,
 * Attr3 (MT_DEVICE_nGnRnE) 0x00, Attr4 (MT_DEVICE_nGnRE) 0x04.
 *
 * @kernel arch/arm64/mm/proc.S MAIR_EL1_SET
 * @kernel arch/arm64/include/asm/sysreg.h MAIR_ATTR_NORMAL
 */
export const A64_MAIR_EL1: readonly [number, number] = Object.freeze([0x0044ffff, 0x00000004]);
/** ID_AA64MMFR0_EL1.PARange 0b0101: 48-bit physical addresses. */
export const A64_PARANGE_48 = 5;

const LEAF_LO_COMMON =
  A64_PTE_TYPE_PAGE |
  (MT_NORMAL << A64_PTE_ATTRINDX_SHIFT) |
  A64_PTE_USER |
  A64_PTE_SHARED |
  A64_PTE_AF |
  A64_PTE_NG;
/** PAGE_NONE: _PAGE_DEFAULT without VALID, PRESENT_INVALID | RDONLY | NG | PXN | UXN, no USER. */
const NONE_LO =
  A64_PTE_TABLE_BIT |
  (MT_NORMAL << A64_PTE_ATTRINDX_SHIFT) |
  A64_PTE_SHARED |
  A64_PTE_AF |
  A64_PTE_PRESENT_INVALID |
  A64_PTE_RDONLY |
  A64_PTE_NG;
const NONE_HI = A64_PTE_PXN_HI | A64_PTE_UXN_HI;

/**
 * The AArch64 format. Table descriptors are what pgd/p4d/pud/pmd_populate write for a user mm:
 * 0b11 | table AF (bit 10) | PXNTable (bit 59). A user leaf is do_anonymous_page's: PAGE_READONLY
 * or PAGE_READONLY_EXEC (valid page, AttrIndx MT_NORMAL, USER, RDONLY, SH inner, AF, nG, PXN,
 * UXN unless VM_EXEC); for a writable VMA pte_mkdirty + pte_mkwrite add PTE_DIRTY (bit 55) and
 * PTE_WRITE (DBM, bit 51) and clear RDONLY, so the page is mapped writable and dirty. Every user
 * page is readable: an exec-only VMA gets PAGE_READONLY_EXEC, as on CPUs without FEAT_EPAN.
 *
 * @kernel arch/arm64/include/asm/pgalloc.h pmd_populate
 * @kernel arch/arm64/include/asm/pgtable-prot.h PAGE_READONLY
 * @kernel arch/arm64/include/asm/pgtable.h pte_mkdirty
 */
export const AARCH64_PGTABLE: CpuPgtableFormat = Object.freeze({
  name: "aarch64" as const,
  levelChoices: Object.freeze([4]),
  mair: A64_MAIR_EL1,
  parange: A64_PARANGE_48,
  paLimit: 2 ** 48,
  vaBits(_levels: number): number {
    return 48;
  },
  /** TASK_SIZE_64: all of TTBR0's 48-bit range. */
  taskSize(_levels: number): number {
    return 2 ** 48;
  },
  tableLo(pa: number): number {
    return ((paLo(pa) & A64_OA_LO) | A64_PTE_TYPE_PAGE | A64_TABLE_AF) >>> 0;
  },
  tableHi(pa: number): number {
    return (oaHi(pa) | A64_TABLE_PXN_HI) >>> 0;
  },
  leafLo(pa: number, flags: number): number {
    const oa = paLo(pa) & A64_OA_LO;
    if ((flags & VM_ACCESS_FLAGS) === 0) return (oa | NONE_LO) >>> 0;
    return (oa | LEAF_LO_COMMON | ((flags & VM_WRITE) !== 0 ? 0 : A64_PTE_RDONLY)) >>> 0;
  },
  leafHi(pa: number, flags: number): number {
    if ((flags & VM_ACCESS_FLAGS) === 0) return (oaHi(pa) | NONE_HI) >>> 0;
    let hi = oaHi(pa) | A64_PTE_PXN_HI;
    if ((flags & VM_WRITE) !== 0) hi |= A64_PTE_DBM_HI | A64_PTE_DIRTY_HI;
    if ((flags & VM_EXEC) === 0) hi |= A64_PTE_UXN_HI;
    return hi >>> 0;
  },
  isPresent(lo: number, _hi: number): boolean {
    return (lo & A64_PTE_VALID) !== 0;
  },
  entryPa(lo: number, hi: number): number {
    return (hi & A64_OA_HI) * 4294967296 + ((lo & A64_OA_LO) >>> 0);
  },
  entryFlags(lo: number, hi: number, leaf: boolean): number {
    if ((lo & A64_PTE_VALID) === 0) return 0;
    if (!leaf) {
      let below = VM_ACCESS_FLAGS;
      if ((hi & A64_TABLE_UXN_HI) !== 0) below &= ~VM_EXEC;
      if ((hi & A64_TABLE_AP_RDONLY_HI) !== 0) below &= ~VM_WRITE;
      if ((hi & A64_TABLE_AP_NOEL0_HI) !== 0) below &= ~(VM_READ | VM_WRITE);
      return below;
    }
    let flags = 0;
    // EL0 data access needs AP[1]; AP[2] takes write away. Execute is UXN's alone.
    if ((lo & A64_PTE_USER) !== 0) {
      flags |= VM_READ;
      if ((lo & A64_PTE_RDONLY) === 0) flags |= VM_WRITE;
    }
    if ((hi & A64_PTE_UXN_HI) === 0) flags |= VM_EXEC;
    return flags;
  },
});

/** OA bits 47:32 of `pa`, which must lie below 2^48. */
function oaHi(pa: number): number {
  const hi = paHi(pa);
  if (hi > A64_OA_HI) bug(`aarch64 pgtable: PA 0x${pa.toString(16)} above 48 bits`);
  return hi;
}
