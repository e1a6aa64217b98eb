// The VT-d first-stage paging entry: the x86-64 4- and 5-level paging entry (PML5E ... PTE) as
// the remapping hardware reads it.

import { defineLayout, fieldOf, type Layout } from "@iommu-sim/iommu-core/platform";
import { pteHalfMask, pteKindPresent, VTD_PTE_NONE, type VtdPteKind } from "./second-stage-pte.js";

/**
 * First-stage paging entry, the union over the levels. Bit 7 is PS in a PDPE (1 GiB leaf, with
 * CAP.FS1GP) and a PDE (2 MiB leaf), must be 0 in a PML5E/PML4E, and is PAT in a 4 KiB PTE (the
 * field is named PS; in a PTE read it as PAT). In a 2 MiB / 1 GiB leaf, ADDR bit 12 is that leaf's
 * PAT and ADDR bits 20:13 / 29:13 are reserved. ADDR bits at and above the unit's HAW are reserved
 * (the hardware checks them, HAW being the unit's).
 *
 * @spec Intel VT-d Architecture Specification 9.7
 * @spec Intel SDM Vol. 3 4.5 (4-level and 5-level paging)
 * @kernel drivers/iommu/generic_pt/fmt/x86_64.h X86_64_FMT_P
 * @kernel drivers/iommu/intel/iommu.h DMA_FL_PTE_PRESENT
 */
export const FS_PTE: Layout = defineLayout({
  name: "fs-pte",
  bits: 64,
  spec: "Intel VT-d Architecture Specification 9.7",
  fields: [
    { name: "P", lsb: 0, width: 1, doc: "present" },
    { name: "RW", lsb: 1, width: 1, doc: "writes allowed" },
    { name: "US", lsb: 2, width: 1, doc: "user: user-mode requests allowed (Linux sets it)" },
    { name: "PWT", lsb: 3, width: 1, doc: "page write-through" },
    { name: "PCD", lsb: 4, width: 1, doc: "page cache disable" },
    { name: "A", lsb: 5, width: 1, doc: "accessed (hardware sets it)" },
    { name: "D", lsb: 6, width: 1, doc: "dirty (leaf; hardware sets it)" },
    {
      name: "PS",
      lsb: 7,
      width: 1,
      doc: "page size in a PDPE (1 GiB) or PDE (2 MiB); PAT in a 4 KiB PTE; 0 in PML5E/PML4E",
    },
    { name: "G", lsb: 8, width: 1, doc: "global (leaf; ignored by the remapping hardware)" },
    { name: "IGN9", lsb: 9, width: 1, ignored: true, doc: "ignored" },
    { name: "EA", lsb: 10, width: 1, doc: "extended accessed (set by hardware when EAFE=1)" },
    { name: "IGN11", lsb: 11, width: 1, ignored: true, doc: "ignored" },
    {
      name: "ADDR",
      lsb: 12,
      width: 40,
      addr: true,
      doc: "next table or page frame; bits HAW..51 reserved; large leaves: bit 12 PAT, 20:13 / 29:13 reserved",
    },
    { name: "IGN52", lsb: 52, width: 11, ignored: true, doc: "ignored (bits 62:52)" },
    { name: "XD", lsb: 63, width: 1, doc: "execute disable (honoured when NXE/ERE in effect)" },
  ],
});

const P = pteHalfMask(fieldOf(FS_PTE, "P"), 0);
const PS = pteHalfMask(fieldOf(FS_PTE, "PS"), 0);
/** Bit 12, PAT of a 2 MiB / 1 GiB leaf. */
const LEAF_PAT = 1 << 12;

/** P in the low half. */
export const FS_PTE_P = P;
/** R/W in the low half. */
export const FS_PTE_RW = pteHalfMask(fieldOf(FS_PTE, "RW"), 0);
/** U/S in the low half. */
export const FS_PTE_US = pteHalfMask(fieldOf(FS_PTE, "US"), 0);
/** A in the low half. */
export const FS_PTE_A = pteHalfMask(fieldOf(FS_PTE, "A"), 0);
/** D in the low half. */
export const FS_PTE_D = pteHalfMask(fieldOf(FS_PTE, "D"), 0);
/** PS in the low half (PAT in a 4 KiB PTE). */
export const FS_PTE_PS = PS;
/** EA in the low half. */
export const FS_PTE_EA = pteHalfMask(fieldOf(FS_PTE, "EA"), 0);
/** XD in the high half (entry bit 63). */
export const FS_PTE_XD_HI = pteHalfMask(fieldOf(FS_PTE, "XD"), 1);
/** ADDR bits 31:12 in the low half (0xfffff000). */
export const FS_PTE_ADDR_LO = pteHalfMask(fieldOf(FS_PTE, "ADDR"), 0);
/** ADDR bits 51:32 in the high half (0x000fffff). */
export const FS_PTE_ADDR_HI = pteHalfMask(fieldOf(FS_PTE, "ADDR"), 1);

/**
 * Whether the entry whose low half is `lo` is present (P).
 *
 * @spec Intel VT-d Architecture Specification 9.7
 */
export function fsPteIsPresent(lo: number): boolean {
  return (lo & P) !== 0;
}

/**
 * Classify a first-stage entry `hi:lo` found at `level` (1: PTE ... 5: PML5E): empty, table, leaf,
 * or present but unusable (PS in a PML5E/PML4E, a large leaf with reserved address bits set). A
 * large leaf's PAT (bit 12) is not an address bit. `hi` is unused (XD is the walker's concern).
 *
 * @spec Intel VT-d Architecture Specification 3.6, 9.7
 */
export function fsPteKind(lo: number, _hi: number, level: number): VtdPteKind {
  if ((lo & P) === 0) return VTD_PTE_NONE;
  return pteKindPresent((lo & PS) !== 0 ? lo & ~LEAF_PAT : lo, level);
}
