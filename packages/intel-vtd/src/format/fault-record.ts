// VT-d primary fault recording: the 128-bit fault recording register (FRCD) and the fault reason
// codes hardware records in it.

import { defineLayout, type Layout } from "@iommu-sim/iommu-core/platform";

/**
 * Fault reason codes (FRCD.FR). Legacy-mode DMA remapping 0x01-0x0D, interrupt remapping
 * 0x20-0x26, scalable-mode DMA remapping 0x30-0x90. Two codes come from QEMU only and are not
 * in the kernel's decoder tables: INTERRUPT_ADDR (0x0E, QEMU's legacy-mode "output address in the
 * interrupt range", non-architectural) and SM_FS_AD_UPDATE_FAILED (0x91, QEMU's first-stage A/D
 * update failure). Code 0 is reserved (the kernel prints it as "Software").
 *
 * @spec Intel VT-d Architecture Specification 7.x fault conditions (section unverified)
 * @kernel drivers/iommu/intel/dmar.c dma_remap_fault_reasons
 * @kernel drivers/iommu/intel/dmar.c dma_remap_sm_fault_reasons
 * @kernel drivers/iommu/intel/dmar.c irq_remap_fault_reasons
 */
export const VTD_FR = Object.freeze({
  /** Root entry P = 0. */
  ROOT_NOT_PRESENT: 0x01,
  /** Context entry P = 0. */
  CONTEXT_NOT_PRESENT: 0x02,
  /** Invalid context entry programming (AW not in SAGAW, TT reserved, ...). */
  CONTEXT_INVALID: 0x03,
  /** Input address above the adjusted guest address width. */
  ADDR_BEYOND_MGAW: 0x04,
  /** Write to a page without W. */
  NO_WRITE: 0x05,
  /** Read from a page without R. */
  NO_READ: 0x06,
  /** Error fetching a paging entry, or invalid next-table pointer. */
  PAGING_ENTRY_ACCESS: 0x07,
  /** Error accessing the root table (invalid root table address). */
  ROOT_TABLE_ACCESS: 0x08,
  /** Error accessing the context table (invalid context-table pointer). */
  CONTEXT_TABLE_ACCESS: 0x09,
  /** Reserved bit set in a present root entry. */
  ROOT_ENTRY_RESERVED: 0x0a,
  /** Reserved bit set in a present context entry. */
  CONTEXT_ENTRY_RESERVED: 0x0b,
  /** Reserved bit set in a present paging entry. */
  PAGING_ENTRY_RESERVED: 0x0c,
  /** Translation request or translated request blocked by the context entry's TT. */
  CONTEXT_TT_BLOCKED: 0x0d,
  /** QEMU only, non-architectural: output address in the interrupt range 0xFEEx_xxxx. */
  INTERRUPT_ADDR: 0x0e,

  /** Reserved field set in a remappable interrupt request. */
  IR_REQ_RESERVED: 0x20,
  /** Interrupt index beyond the table size. */
  IR_INDEX_OVERFLOW: 0x21,
  /** IRTE present bit clear. */
  IR_ENTRY_NOT_PRESENT: 0x22,
  /** Error accessing the interrupt remapping table (IRTA). */
  IR_TABLE_ACCESS: 0x23,
  /** Reserved field set in a present IRTE. */
  IR_ENTRY_RESERVED: 0x24,
  /** Compatibility-format interrupt blocked. */
  IR_COMPAT_BLOCKED: 0x25,
  /** Source-id verification failed. */
  IR_SID_MISMATCH: 0x26,

  /** Invalid root table address. */
  SM_ROOT_TABLE_ADDR_INVALID: 0x30,
  /** TTM = legacy but the request has a PASID (QEMU names it "invalid TTM in RTADDR"). */
  SM_TTM_LEGACY_WITH_PASID: 0x31,
  /** TTM = legacy for a page group request. */
  SM_TTM_LEGACY_PAGE_REQUEST: 0x32,
  /** Error accessing a scalable root entry. */
  SM_ROOT_ENTRY_ACCESS: 0x38,
  /** Scalable root entry LP/UP clear. */
  SM_ROOT_ENTRY_NOT_PRESENT: 0x39,
  /** Reserved bit set in a scalable root entry. */
  SM_ROOT_ENTRY_RESERVED: 0x3a,
  /** Error accessing a scalable context entry. */
  SM_CONTEXT_ENTRY_ACCESS: 0x40,
  /** Scalable context entry P clear. */
  SM_CONTEXT_ENTRY_NOT_PRESENT: 0x41,
  /** Reserved bit set in a scalable context entry. */
  SM_CONTEXT_ENTRY_RESERVED: 0x42,
  /** Invalid scalable context entry. */
  SM_CONTEXT_ENTRY_INVALID: 0x43,
  /** DTE clear for a translation request. */
  SM_DTE_CLEAR: 0x44,
  /** PASIDE clear for a request with PASID. */
  SM_PASIDE_CLEAR: 0x45,
  /** PASID above the context entry's PDTS limit. */
  SM_PASID_TOO_LARGE: 0x46,
  /** PRE clear for a page request. */
  SM_PRE_CLEAR: 0x47,
  /** RID_PASID field error. */
  SM_RID_PASID_ERROR: 0x48,
  /** Error accessing a PASID directory entry. */
  SM_PASID_DIR_ENTRY_ACCESS: 0x50,
  /** PASID directory entry P clear. */
  SM_PASID_DIR_ENTRY_NOT_PRESENT: 0x51,
  /** Reserved bit set in a PASID directory entry. */
  SM_PASID_DIR_ENTRY_RESERVED: 0x52,
  /** Error accessing a PASID table entry. */
  SM_PASID_ENTRY_ACCESS: 0x58,
  /** PASID table entry P clear. */
  SM_PASID_ENTRY_NOT_PRESENT: 0x59,
  /** Reserved bit set in a PASID table entry. */
  SM_PASID_ENTRY_RESERVED: 0x5a,
  /** Invalid PASID table entry (bad PGTT, AW, ...). */
  SM_PASID_ENTRY_INVALID: 0x5b,
  /** ERE clear for an execute request. */
  SM_ERE_CLEAR: 0x5c,
  /** SRE clear for a supervisor request. */
  SM_SRE_CLEAR: 0x5d,
  /** Error accessing a first-stage paging entry. */
  SM_FS_ENTRY_ACCESS: 0x70,
  /** First-stage paging entry P clear. */
  SM_FS_ENTRY_NOT_PRESENT: 0x71,
  /** Reserved bit set in a first-stage paging entry. */
  SM_FS_ENTRY_RESERVED: 0x72,
  /** Error accessing the first-stage root entry (QEMU: invalid FSPTPTR in the PASID entry). */
  SM_FS_ROOT_ACCESS: 0x73,
  /** Nested: first-stage entry address beyond the second stage's width. */
  SM_FS_ENTRY_ADDR_BEYOND_MGAW: 0x74,
  /** Nested: second stage denies reading the first-stage root table. */
  SM_FS_ROOT_READ: 0x75,
  /** Nested: second stage denies reading a first-stage paging entry. */
  SM_FS_ENTRY_READ: 0x76,
  /** Nested: second stage denies writing a first-stage paging entry (A/D update). */
  SM_FS_ENTRY_WRITE: 0x77,
  /** Error accessing a second-stage paging entry. */
  SM_SS_ENTRY_ACCESS: 0x78,
  /** Read/write permission error in a second-stage paging entry. */
  SM_SS_ENTRY_PERMISSION: 0x79,
  /** Reserved bit set in a second-stage paging entry. */
  SM_SS_ENTRY_RESERVED: 0x7a,
  /** Invalid second-stage page-table pointer. */
  SM_SS_PTPTR_INVALID: 0x7b,
  /** Second-stage A/D update needed while page walks are not snooped. */
  SM_SS_AD_NO_SNOOP: 0x7c,
  /** First-stage input address not canonical. */
  SM_FS_NON_CANONICAL: 0x80,
  /** User request reached a first-stage entry with U/S = 0. */
  SM_FS_PRIV_VIOLATION: 0x81,
  /** No execute permission (request with PASID and ER = 1). */
  SM_NO_EXECUTE: 0x82,
  /** Address beyond the hardware's maximum (MGAW). */
  SM_ADDR_BEYOND_MGAW: 0x83,
  /** Second-stage entry address beyond the maximum. */
  SM_SS_ENTRY_ADDR_BEYOND_MAX: 0x84,
  /** No write permission for a write or AtomicOp. */
  SM_NO_WRITE: 0x85,
  /** No read permission for a read or AtomicOp. */
  SM_NO_READ: 0x86,
  /** Output address in the interrupt address range. */
  SM_INTERRUPT_ADDR: 0x87,
  /** First-stage A/D update needed while page walks are not snooped. */
  SM_FS_AD_NO_SNOOP: 0x90,
  /** QEMU only: first-stage A/D update failed. Outside the kernel's decoder table. */
  SM_FS_AD_UPDATE_FAILED: 0x91,
});

/** A fault reason name. */
export type VtdFaultReason = keyof typeof VTD_FR;

const NAMES: Record<number, string> = {};
for (const [name, code] of Object.entries(VTD_FR)) NAMES[code] = name;
Object.freeze(NAMES);

/**
 * The name of fault reason `code`, decoded as the kernel does: 0x20-0x26 interrupt remapping,
 * 0x30-0x90 scalable mode, below 0x0E legacy; "unknown" for gaps inside those ranges, for 0
 * (reserved) and for anything else, including QEMU's 0x0E and 0x91, which the kernel does not
 * decode either.
 *
 * @kernel drivers/iommu/intel/dmar.c dmar_get_fault_reason
 */
export function vtdFaultReasonName(code: number): string {
  const inRange =
    (code >= 0x20 && code <= 0x26) || (code >= 0x30 && code <= 0x90) || (code >= 1 && code < 0x0e);
  if (!inRange || !Number.isInteger(code)) return "unknown";
  return NAMES[code] ?? "unknown";
}

/**
 * Fault recording register. F is write-1-to-clear; FI holds the faulting page address, or for an
 * interrupt-remapping fault the interrupt index in bits 63:48. T2, PRIV, EXE and AT are from the
 * spec and decoded by neither Linux nor QEMU (positions unverified).
 *
 * @spec Intel VT-d Architecture Specification 10.4.14
 * @kernel drivers/iommu/intel/dmar.c dmar_fault
 */
export const FRCD: Layout = defineLayout({
  name: "frcd",
  bits: 128,
  spec: "Intel VT-d Architecture Specification 10.4.14",
  fields: [
    { name: "FI", lsb: 12, width: 52, addr: true, doc: "fault info: page address" },
    { name: "SID", lsb: 64, width: 16, doc: "source id of the request" },
    { name: "T2", lsb: 92, width: 1, doc: "type bit 2 (spec; position unverified)" },
    { name: "PRIV", lsb: 93, width: 1, doc: "privilege-mode request (spec; position unverified)" },
    { name: "EXE", lsb: 94, width: 1, doc: "execute request (spec; position unverified)" },
    { name: "PP", lsb: 95, width: 1, doc: "PASID present" },
    { name: "FR", lsb: 96, width: 8, values: NAMES, doc: "fault reason" },
    { name: "PV", lsb: 104, width: 20, doc: "PASID value" },
    {
      name: "AT",
      lsb: 124,
      width: 2,
      values: { 0: "untranslated", 1: "translation-request", 2: "translated" },
      doc: "address type of the request (spec; position unverified)",
    },
    {
      name: "T",
      lsb: 126,
      width: 1,
      values: { 0: "write", 1: "read" },
      doc: "type (T1): 1 = read",
    },
    { name: "F", lsb: 127, width: 1, doc: "fault: record valid (write 1 to clear)" },
  ],
});
