// VT-d context entries: the legacy 128-bit entry (one per devfn, selects a second-stage table and
// a domain) and the scalable-mode 256-bit entry (selects a PASID directory).

import { defineLayout, type Layout } from "@iommu-sim/iommu-core/platform";

/** Bytes per legacy context entry: 256 per 4-KiB table, indexed by devfn. */
export const CONTEXT_ENTRY_SIZE = 16;
/** Bytes per scalable-mode context entry: 128 per 4-KiB table, indexed by devfn & 0x7F. */
export const SM_CONTEXT_ENTRY_SIZE = 32;

/**
 * Legacy TT: untranslated requests walk the second-stage table; translation requests (ATS) are
 * blocked.
 *
 * @kernel drivers/iommu/intel/iommu.h CONTEXT_TT_MULTI_LEVEL
 */
export const TT_UNTRANSLATED = 0;
/**
 * Legacy TT: as TT_UNTRANSLATED, and translation requests to fill the device TLB are allowed.
 *
 * @kernel drivers/iommu/intel/iommu.h CONTEXT_TT_DEV_IOTLB
 */
export const TT_DEVTLB = 1;
/**
 * Legacy TT: untranslated requests pass through untranslated (needs ECAP.PT).
 *
 * @kernel drivers/iommu/intel/iommu.h CONTEXT_TT_PASS_THROUGH
 */
export const TT_PASSTHROUGH = 2;

/** AGAW encodings of the AW fields of context and PASID entries (levels = AW + 2). */
export const AW_VALUES: Readonly<Record<number, string>> = Object.freeze({
  1: "39-bit/3-level",
  2: "48-bit/4-level",
  3: "57-bit/5-level",
});

/**
 * Legacy-mode context entry. AW values outside CAP.SAGAW and TT = 3 make the entry invalid (fault
 * 0x3); bits of SLPTPTR at or above the host address width are reserved (the walker's check).
 *
 * @spec Intel VT-d Architecture Specification 9.3
 * @kernel drivers/iommu/intel/iommu.h struct context_entry
 */
export const CONTEXT_ENTRY: Layout = defineLayout({
  name: "context-entry",
  bits: 128,
  spec: "Intel VT-d Architecture Specification 9.3",
  fields: [
    { name: "P", lsb: 0, width: 1, doc: "present" },
    { name: "FPD", lsb: 1, width: 1, doc: "fault processing disable" },
    {
      name: "TT",
      lsb: 2,
      width: 2,
      values: { 0: "untranslated", 1: "devtlb", 2: "pass-through" },
      doc: "translation type (3 is reserved)",
    },
    {
      name: "SLPTPTR",
      lsb: 12,
      width: 52,
      addr: true,
      doc: "second-stage page-table root (ignored for TT = pass-through)",
    },
    { name: "AW", lsb: 64, width: 3, values: AW_VALUES, doc: "adjusted guest address width" },
    { name: "AVAIL", lsb: 67, width: 4, ignored: true, doc: "available to software" },
    { name: "DID", lsb: 72, width: 16, doc: "domain identifier" },
  ],
});

/**
 * Scalable-mode context entry. The PASID directory has 2^(PDTS + 7) entries, so PASIDs up to
 * 2^(PDTS + 13) - 1 are valid. Bits of PASIDDIRPTR at or above the host address width are reserved
 * (the walker's check).
 *
 * @spec Intel VT-d Architecture Specification 9.4
 * @kernel drivers/iommu/intel/iommu.c context_entry_set_pasid_table
 */
export const SM_CONTEXT_ENTRY: Layout = defineLayout({
  name: "sm-context-entry",
  bits: 256,
  spec: "Intel VT-d Architecture Specification 9.4",
  fields: [
    { name: "P", lsb: 0, width: 1, doc: "present" },
    { name: "FPD", lsb: 1, width: 1, doc: "fault processing disable" },
    { name: "DTE", lsb: 2, width: 1, doc: "device-TLB enable: translation requests (ATS) allowed" },
    { name: "PASIDE", lsb: 3, width: 1, doc: "PASID enable: requests with PASID allowed" },
    { name: "PRE", lsb: 4, width: 1, doc: "page request enable" },
    { name: "PDTS", lsb: 9, width: 3, doc: "PASID directory has 2^(PDTS + 7) entries" },
    { name: "PASIDDIRPTR", lsb: 12, width: 52, addr: true, doc: "PASID directory base" },
    {
      name: "RID_PASID",
      lsb: 64,
      width: 20,
      doc: "PASID used for requests without PASID (non-zero needs ECAP.RPS; Linux writes 0)",
    },
    {
      name: "RID_PRIV",
      lsb: 84,
      width: 1,
      // Older kernels set this bit from context_set_sm_rid2pasid; current ones leave it 0.
      doc: "requests without PASID are treated as supervisor requests (spec; older Linux set it)",
    },
  ],
});

/** PASIDs the scalable context entry with this PDTS admits: 2^(PDTS + 13). */
export function pdtsMaxPasids(pdts: number): number {
  return 2 ** (pdts + 13);
}

/** Page-table levels of an AGAW (the AW field of context and PASID entries). @kernel drivers/iommu/intel/iommu.h agaw_to_level */
export function agawToLevels(aw: number): number {
  return aw + 2;
}

/** Input address width of an AGAW, 30 + 9*aw capped at 64. @kernel drivers/iommu/intel/iommu.h agaw_to_width */
export function agawWidth(aw: number): number {
  return Math.min(30 + 9 * aw, 64);
}

/** AGAW of a table with `levels` levels. */
export function levelsToAgaw(levels: number): number {
  return levels - 2;
}

/** Smallest AGAW covering `width` address bits: ceil((width - 30) / 9). @kernel drivers/iommu/intel/iommu.h width_to_agaw */
export function widthToAgaw(width: number): number {
  return Math.ceil((width - 30) / 9);
}
