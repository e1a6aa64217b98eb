// VT-d scalable-mode PASID structures: the PASID directory entry (one per 64 PASIDs) and the 512-bit
// PASID table entry that selects first-stage, second-stage, nested or pass-through translation.

import { defineLayout, type Layout } from "@iommu-sim/iommu-core/platform";
import { AW_VALUES } from "./context-entry.js";

/**
 * PASID >> PASID_PDE_SHIFT indexes the directory; the low bits index a 64-entry PASID table.
 *
 * @kernel drivers/iommu/intel/pasid.h PASID_PDE_SHIFT
 */
export const PASID_PDE_SHIFT = 6;
/** Entries per PASID table (one 4-KiB page). @kernel drivers/iommu/intel/pasid.h PASID_TBL_ENTRIES */
export const PASID_TBL_ENTRIES = 64;
/** Mask of the table index in a PASID. @kernel drivers/iommu/intel/pasid.h PASID_PTE_MASK */
export const PASID_PTE_MASK = 0x3f;
/** Bytes per PASID directory entry. */
export const PASID_DIR_ENTRY_SIZE = 8;
/** Bytes per PASID table entry. */
export const PASID_ENTRY_SIZE = 64;

/** PGTT: first-stage translation only. @kernel drivers/iommu/intel/pasid.h PASID_ENTRY_PGTT_FL_ONLY */
export const PGTT_FL = 1;
/** PGTT: second-stage translation only. @kernel drivers/iommu/intel/pasid.h PASID_ENTRY_PGTT_SL_ONLY */
export const PGTT_SL = 2;
/** PGTT: nested (first stage, then second stage). @kernel drivers/iommu/intel/pasid.h PASID_ENTRY_PGTT_NESTED */
export const PGTT_NESTED = 3;
/** PGTT: pass-through. @kernel drivers/iommu/intel/pasid.h PASID_ENTRY_PGTT_PT */
export const PGTT_PT = 4;

/** FLPM: 4-level first-stage paging (48-bit input). */
export const FLPM_4LEVEL = 0;
/** FLPM: 5-level first-stage paging (57-bit input, needs CAP.FL5LP). */
export const FLPM_5LEVEL = 1;

/**
 * PASID directory entry. Linux fills a missing entry lazily with (table | P) by a 64-bit
 * compare-and-swap.
 *
 * @spec Intel VT-d Architecture Specification 9.5
 * @kernel drivers/iommu/intel/pasid.h struct pasid_dir_entry
 */
export const PASID_DIR_ENTRY: Layout = defineLayout({
  name: "pasid-dir-entry",
  bits: 64,
  spec: "Intel VT-d Architecture Specification 9.5",
  fields: [
    { name: "P", lsb: 0, width: 1, doc: "present" },
    { name: "FPD", lsb: 1, width: 1, doc: "fault processing disable" },
    { name: "SMPTBLPTR", lsb: 12, width: 52, addr: true, doc: "scalable-mode PASID table pointer" },
  ],
});

/**
 * Scalable-mode PASID table entry (8 qwords; qw3..qw7 reserved). Fields a PGTT does not use are
 * ignored by hardware for that PGTT; this table only marks bits no PGTT uses as reserved.
 *
 * Sources: P, FPD, AW, PGTT, SLADE, SLPTPTR, DID, PWSNP, PGSNP, SRE, FLPM, WPE, EAFE, FLPTR are
 * written by current Linux (pasid.h) and decoded by QEMU. CD, EMTE, EMT, PWT, PCD, PAT (bits
 * 89-127) were written by the kernel's former guest-PASID bind code (pasid_set_cd, _emte, _emt,
 * _pwt, _pcd, _pat, since removed) for guest memory types; NXE (bit 133) by first-level setup of
 * older kernels (pasid_set_nxe). SLEE (bit 5), ERE (bit 129) and SMEP (bit 134) are written by no
 * kernel seen and are placed from the spec (unverified). Spec 4.x renames the FL and SL prefixes
 * to FS and SS (FSPTPTR, SSPTPTR, ...); the names here are the 3.x ones the kernel uses.
 *
 * @spec Intel VT-d Architecture Specification 9.6
 * @kernel drivers/iommu/intel/pasid.h struct pasid_entry
 */
export const PASID_ENTRY: Layout = defineLayout({
  name: "pasid-entry",
  bits: 512,
  spec: "Intel VT-d Architecture Specification 9.6",
  fields: [
    { name: "P", lsb: 0, width: 1, doc: "present" },
    { name: "FPD", lsb: 1, width: 1, doc: "fault processing disable" },
    { name: "AW", lsb: 2, width: 3, values: AW_VALUES, doc: "second-stage adjusted address width" },
    {
      name: "SLEE",
      lsb: 5,
      width: 1,
      doc: "second-stage execute enable (spec, position unverified; Linux never sets it)",
    },
    {
      name: "PGTT",
      lsb: 6,
      width: 3,
      values: { 1: "first-stage", 2: "second-stage", 3: "nested", 4: "pass-through" },
      doc: "PASID-granular translation type (0, 5-7 reserved)",
    },
    { name: "SLADE", lsb: 9, width: 1, doc: "second-stage accessed/dirty enable" },
    { name: "SLPTPTR", lsb: 12, width: 52, addr: true, doc: "second-stage page-table root" },
    { name: "DID", lsb: 64, width: 16, doc: "domain identifier" },
    { name: "PWSNP", lsb: 87, width: 1, doc: "page-walk snoop" },
    { name: "PGSNP", lsb: 88, width: 1, doc: "page snoop: all accesses snooped" },
    { name: "CD", lsb: 89, width: 1, doc: "cache disable (written by the former nested bind)" },
    {
      name: "EMTE",
      lsb: 90,
      width: 1,
      doc: "extended memory type enable (written by the former nested bind)",
    },
    {
      name: "EMT",
      lsb: 91,
      width: 3,
      values: { 0: "UC", 1: "WC", 4: "WT", 5: "WP", 6: "WB" },
      doc: "extended memory type (written by the former nested bind)",
    },
    {
      name: "PWT",
      lsb: 94,
      width: 1,
      doc: "page-level write-through of the first-stage root (former nested bind)",
    },
    {
      name: "PCD",
      lsb: 95,
      width: 1,
      doc: "page-level cache disable of the first-stage root (former nested bind)",
    },
    {
      name: "PAT",
      lsb: 96,
      width: 32,
      doc: "page attribute table, 8 x 8 bits (former nested bind)",
    },
    { name: "SRE", lsb: 128, width: 1, doc: "supervisor request enable" },
    {
      name: "ERE",
      lsb: 129,
      width: 1,
      doc: "execute request enable (spec, position unverified; fault 0x5C when clear)",
    },
    {
      name: "FLPM",
      lsb: 130,
      width: 2,
      values: { 0: "4-level", 1: "5-level" },
      doc: "first-stage paging mode (2, 3 reserved)",
    },
    { name: "WPE", lsb: 132, width: 1, doc: "write protect enable for supervisor requests" },
    { name: "NXE", lsb: 133, width: 1, doc: "no-execute enable (written by older Linux)" },
    {
      name: "SMEP",
      lsb: 134,
      width: 1,
      doc: "supervisor-mode execute prevention (spec, position unverified)",
    },
    { name: "EAFE", lsb: 135, width: 1, doc: "extended accessed flag enable" },
    { name: "FLPTR", lsb: 140, width: 52, addr: true, doc: "first-stage page-table root" },
  ],
});

/** Index of `pasid` in the PASID directory. */
export function pasidDirIndex(pasid: number): number {
  return pasid >>> PASID_PDE_SHIFT;
}

/** Index of `pasid` in its PASID table. */
export function pasidTableIndex(pasid: number): number {
  return pasid & PASID_PTE_MASK;
}
