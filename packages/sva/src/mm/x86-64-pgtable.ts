// The x86-64 page-table entry format (4-level and LA57 5-level, 4 KiB pages) of a user address
// space, bit for bit as Linux writes it: what a VT-d first-stage walk reads through a PASID entry.

import type { CpuPgtableFormat } from "./cpu-pgtable.js";
import { paHi, paLo } from "./cpu-pgtable.js";
import { VM_ACCESS_FLAGS, VM_EXEC, VM_READ, VM_WRITE } from "./mm-flags.js";

/** @kernel arch/x86/include/asm/pgtable_types.h _PAGE_BIT_PRESENT */
export const X86_PAGE_PRESENT = 1 << 0;
/** @kernel arch/x86/include/asm/pgtable_types.h _PAGE_BIT_RW */
export const X86_PAGE_RW = 1 << 1;
/** @kernel arch/x86/include/asm/pgtable_types.h _PAGE_BIT_USER */
export const X86_PAGE_USER = 1 << 2;
/** @kernel arch/x86/include/asm/pgtable_types.h _PAGE_BIT_PWT */
export const X86_PAGE_PWT = 1 << 3;
/** @kernel arch/x86/include/asm/pgtable_types.h _PAGE_BIT_PCD */
export const X86_PAGE_PCD = 1 << 4;
/** @kernel arch/x86/include/asm/pgtable_types.h _PAGE_BIT_ACCESSED */
export const X86_PAGE_ACCESSED = 1 << 5;
/** @kernel arch/x86/include/asm/pgtable_types.h _PAGE_BIT_DIRTY */
export const X86_PAGE_DIRTY = 1 << 6;
/** PS in a PDE / PDPE (PAT in a PTE). @kernel arch/x86/include/asm/pgtable_types.h _PAGE_BIT_PSE */
export const X86_PAGE_PSE = 1 << 7;
/** @kernel arch/x86/include/asm/pgtable_types.h _PAGE_BIT_GLOBAL */
export const X86_PAGE_GLOBAL = 1 << 8;
/**
 * Marks a PROT_NONE entry (P clear): the same bit as G, which only means something when P is set.
 *
 * @kernel arch/x86/include/asm/pgtable_types.h _PAGE_BIT_PROTNONE
 */
export const X86_PAGE_PROTNONE = X86_PAGE_GLOBAL;
/** NX / XD, bit 63, as a bit of the high word. @kernel arch/x86/include/asm/pgtable_types.h _PAGE_BIT_NX */
export const X86_PAGE_NX_HI = 0x80000000;
/** Address bits 31:12 (low word) and 51:32 (high word). @kernel arch/x86/include/asm/page_types.h PTE_PFN_MASK */
export const X86_PFN_LO = 0xfffff000;
export const X86_PFN_HI = 0x000fffff;

/**
 * What every user page-table level above the leaves points through: P | RW | USER | A | D (no
 * SME C-bit: memory encryption is not modelled).
 *
 * @kernel arch/x86/include/asm/pgtable_types.h _PAGE_TABLE
 */
export const X86_PAGE_TABLE =
  X86_PAGE_PRESENT | X86_PAGE_RW | X86_PAGE_USER | X86_PAGE_ACCESSED | X86_PAGE_DIRTY;

/**
 * The x86-64 format. A user leaf is what do_anonymous_page installs: P | USER | A from
 * PAGE_READONLY / PAGE_READONLY_EXEC (NX unless VM_EXEC), and for a writable VMA RW | D from
 * pte_mkwrite(pte_mkdirty()). Every user page is readable, as x86 cannot express write- or
 * execute-only. The software soft-dirty bit (bit 11, CONFIG_MEM_SOFT_DIRTY) is left clear, and
 * PTI's NX on the kernel copy of user PGD entries is not modelled (a CPU without Meltdown).
 *
 * A PROT_NONE leaf is PAGE_NONE (A | PROTNONE, P clear) with the frame address inverted, as
 * pfn_pte does for every non-present, non-zero entry (the L1TF mitigation).
 *
 * @kernel arch/x86/include/asm/pgtable_types.h PAGE_READONLY
 * @kernel arch/x86/include/asm/pgtable-invert.h protnone_mask
 * @kernel mm/memory.c do_anonymous_page
 */
export const X86_64_PGTABLE: CpuPgtableFormat = Object.freeze({
  name: "x86-64" as const,
  levelChoices: Object.freeze([4, 5]),
  mair: Object.freeze([0, 0] as const),
  parange: 0,
  paLimit: 2 ** 52,
  vaBits(levels: number): number {
    return levels === 5 ? 57 : 48;
  },
  /** TASK_SIZE_MAX: 2^47 (2^56 with LA57) less the guard page below the canonical hole. */
  taskSize(levels: number): number {
    return levels === 5 ? 2 ** 56 - 4096 : 2 ** 47 - 4096;
  },
  tableLo(pa: number): number {
    return ((paLo(pa) & X86_PFN_LO) | X86_PAGE_TABLE) >>> 0;
  },
  tableHi(pa: number): number {
    return paHi(pa) & X86_PFN_HI;
  },
  leafLo(pa: number, flags: number): number {
    if ((flags & VM_ACCESS_FLAGS) === 0) {
      return ((~paLo(pa) & X86_PFN_LO) | X86_PAGE_ACCESSED | X86_PAGE_PROTNONE) >>> 0;
    }
    let lo = (paLo(pa) & X86_PFN_LO) | X86_PAGE_PRESENT | X86_PAGE_USER | X86_PAGE_ACCESSED;
    if ((flags & VM_WRITE) !== 0) lo |= X86_PAGE_RW | X86_PAGE_DIRTY;
    return lo >>> 0;
  },
  leafHi(pa: number, flags: number): number {
    if ((flags & VM_ACCESS_FLAGS) === 0) return ~paHi(pa) & X86_PFN_HI;
    return ((paHi(pa) & X86_PFN_HI) | ((flags & VM_EXEC) === 0 ? X86_PAGE_NX_HI : 0)) >>> 0;
  },
  isPresent(lo: number, _hi: number): boolean {
    return (lo & X86_PAGE_PRESENT) !== 0;
  },
  entryPa(lo: number, hi: number): number {
    // A non-present non-zero entry carries its frame inverted.
    if ((lo & X86_PAGE_PRESENT) === 0) {
      return (~hi & X86_PFN_HI) * 4294967296 + ((~lo & X86_PFN_LO) >>> 0);
    }
    return (hi & X86_PFN_HI) * 4294967296 + ((lo & X86_PFN_LO) >>> 0);
  },
  entryFlags(lo: number, hi: number, _leaf: boolean): number {
    if ((lo & X86_PAGE_PRESENT) === 0 || (lo & X86_PAGE_USER) === 0) return 0;
    let flags = VM_READ;
    if ((lo & X86_PAGE_RW) !== 0) flags |= VM_WRITE;
    if ((hi & X86_PAGE_NX_HI) === 0) flags |= VM_EXEC;
    return flags;
  },
});
