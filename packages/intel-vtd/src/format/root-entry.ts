// VT-d root-table entries: legacy (one context-table pointer per bus) and scalable mode (a lower and
// an upper scalable context-table pointer per bus, split at devfn 0x80).

import { defineLayout, type Layout } from "@iommu-sim/iommu-core/platform";

/** Bytes per root entry; the 4-KiB root table holds 256 of them, indexed by bus number. */
export const ROOT_ENTRY_SIZE = 16;
/** Root entries per root table. */
export const ROOT_ENTRY_NR = 256;

/**
 * Legacy root entry (RTADDR.TTM = 00). Besides the bits no field covers, bits of CTP at or above the
 * host address width are reserved too; that check depends on the unit and is the walker's.
 *
 * @spec Intel VT-d Architecture Specification 9.1
 * @kernel drivers/iommu/intel/iommu.h struct root_entry
 */
export const ROOT_ENTRY: Layout = defineLayout({
  name: "root-entry",
  bits: 128,
  spec: "Intel VT-d Architecture Specification 9.1",
  fields: [
    { name: "P", lsb: 0, width: 1, doc: "present" },
    { name: "CTP", lsb: 12, width: 52, addr: true, doc: "context-table pointer (4 KiB aligned)" },
  ],
});

/**
 * Scalable-mode root entry (RTADDR.TTM = 01): the lower half serves devfn 0x00-0x7F, the upper half
 * devfn 0x80-0xFF, each pointing to a 4-KiB table of 128 scalable context entries.
 *
 * @spec Intel VT-d Architecture Specification 9.2
 * @kernel drivers/iommu/intel/iommu.c iommu_context_addr
 */
export const SM_ROOT_ENTRY: Layout = defineLayout({
  name: "sm-root-entry",
  bits: 128,
  spec: "Intel VT-d Architecture Specification 9.2",
  fields: [
    { name: "LP", lsb: 0, width: 1, doc: "lower present (devfn 0x00-0x7F)" },
    {
      name: "LCTP",
      lsb: 12,
      width: 52,
      addr: true,
      doc: "lower scalable context-table pointer",
    },
    { name: "UP", lsb: 64, width: 1, doc: "upper present (devfn 0x80-0xFF)" },
    {
      name: "UCTP",
      lsb: 76,
      width: 52,
      addr: true,
      doc: "upper scalable context-table pointer",
    },
  ],
});
