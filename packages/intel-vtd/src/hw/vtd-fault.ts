// VT-d fault reasons from walk outcomes, the architecture-neutral class of each reason, and which
// faults FPD suppresses (the "qualified" ones).

import { FaultKind } from "@iommu-sim/iommu-core";
import { VTD_FR } from "../format/fault-record.js";
import {
  STAGE_FIRST,
  type VtdWalker,
  W_ADDR_WIDTH,
  W_FETCH,
  W_NESTED_WRITE,
  W_NON_CANONICAL,
  W_NOT_PRESENT,
  W_RESERVED,
} from "./vtd-walk.js";

/**
 * The fault reason of a failed walk, as the unit in legacy (`scalable` false) or scalable mode
 * records it. `write` selects between the legacy read and write codes for a not-present entry.
 *
 * @spec Intel VT-d Architecture Specification 7.1.3 (fault conditions and reasons)
 */
export function walkFaultReason(
  walker: VtdWalker,
  w: number,
  scalable: boolean,
  write: boolean,
): number {
  if (!scalable) {
    switch (w) {
      case W_NOT_PRESENT:
        return write ? VTD_FR.NO_WRITE : VTD_FR.NO_READ;
      case W_RESERVED:
        return VTD_FR.PAGING_ENTRY_RESERVED;
      case W_FETCH:
        return VTD_FR.PAGING_ENTRY_ACCESS;
      default:
        return VTD_FR.ADDR_BEYOND_MGAW;
    }
  }
  if (w === W_NON_CANONICAL) return VTD_FR.SM_FS_NON_CANONICAL;
  // A/D update of a first-stage entry the second stage maps read-only (the kernel's reason text
  // for 0x77; no other write to a first-stage entry exists).
  if (w === W_NESTED_WRITE) return VTD_FR.SM_FS_ENTRY_WRITE;
  if (w === W_ADDR_WIDTH) {
    // A first-stage table address (nested) beyond the second stage's reach.
    return walker.nestedFetch ? VTD_FR.SM_FS_ENTRY_ADDR_BEYOND_MGAW : VTD_FR.SM_ADDR_BEYOND_MGAW;
  }
  if (walker.nestedFetch && w === W_NOT_PRESENT) {
    // The second stage does not let the unit read a first-stage table.
    return walker.flRoot ? VTD_FR.SM_FS_ROOT_READ : VTD_FR.SM_FS_ENTRY_READ;
  }
  if (walker.stage === STAGE_FIRST) {
    switch (w) {
      case W_NOT_PRESENT:
        return VTD_FR.SM_FS_ENTRY_NOT_PRESENT;
      case W_FETCH:
        return VTD_FR.SM_FS_ENTRY_ACCESS;
      default:
        return VTD_FR.SM_FS_ENTRY_RESERVED;
    }
  }
  switch (w) {
    case W_NOT_PRESENT:
      return VTD_FR.SM_SS_ENTRY_PERMISSION;
    case W_FETCH:
      return VTD_FR.SM_SS_ENTRY_ACCESS;
    default:
      return VTD_FR.SM_SS_ENTRY_RESERVED;
  }
}

const KIND = new Uint8Array(256).fill(FaultKind.BAD_CONFIG);
const QUALIFIED = new Uint8Array(256);
{
  const set = (kind: number, ...codes: number[]) => {
    for (const c of codes) KIND[c] = kind;
  };
  set(
    FaultKind.TRANSLATION,
    VTD_FR.NO_READ,
    VTD_FR.NO_WRITE,
    VTD_FR.SM_FS_ENTRY_NOT_PRESENT,
    VTD_FR.SM_SS_ENTRY_PERMISSION,
    VTD_FR.SM_FS_ROOT_READ,
    VTD_FR.SM_FS_ENTRY_READ,
  );
  set(
    FaultKind.PERMISSION,
    VTD_FR.SM_NO_WRITE,
    VTD_FR.SM_NO_READ,
    VTD_FR.SM_NO_EXECUTE,
    VTD_FR.SM_FS_PRIV_VIOLATION,
    VTD_FR.SM_SRE_CLEAR,
    VTD_FR.SM_ERE_CLEAR,
    VTD_FR.SM_FS_ENTRY_WRITE,
  );
  set(
    FaultKind.ADDRESS_SIZE,
    VTD_FR.ADDR_BEYOND_MGAW,
    VTD_FR.SM_ADDR_BEYOND_MGAW,
    VTD_FR.SM_FS_NON_CANONICAL,
    VTD_FR.SM_FS_ENTRY_ADDR_BEYOND_MGAW,
    VTD_FR.SM_SS_ENTRY_ADDR_BEYOND_MAX,
    VTD_FR.INTERRUPT_ADDR,
    VTD_FR.SM_INTERRUPT_ADDR,
  );
  set(
    FaultKind.WALK_ABORT,
    VTD_FR.PAGING_ENTRY_ACCESS,
    VTD_FR.ROOT_TABLE_ACCESS,
    VTD_FR.CONTEXT_TABLE_ACCESS,
    VTD_FR.SM_ROOT_ENTRY_ACCESS,
    VTD_FR.SM_CONTEXT_ENTRY_ACCESS,
    VTD_FR.SM_PASID_DIR_ENTRY_ACCESS,
    VTD_FR.SM_PASID_ENTRY_ACCESS,
    VTD_FR.SM_FS_ENTRY_ACCESS,
    VTD_FR.SM_FS_ROOT_ACCESS,
    VTD_FR.SM_SS_ENTRY_ACCESS,
    VTD_FR.SM_FS_AD_UPDATE_FAILED,
  );
  set(
    FaultKind.BAD_REQUESTER,
    VTD_FR.SM_PASIDE_CLEAR,
    VTD_FR.SM_PASID_TOO_LARGE,
    VTD_FR.SM_TTM_LEGACY_WITH_PASID,
    VTD_FR.SM_PRE_CLEAR,
    VTD_FR.SM_TTM_LEGACY_PAGE_REQUEST,
  );
  set(FaultKind.ATS_FORBIDDEN, VTD_FR.CONTEXT_TT_BLOCKED, VTD_FR.SM_DTE_CLEAR);
  // Qualified faults: recorded only when FPD is clear in the entries used. QEMU's table, plus
  // the scalable-mode paging faults it does not raise (all are conditions of the request's own
  // translation, like the ones it lists).
  for (const c of [
    VTD_FR.CONTEXT_NOT_PRESENT,
    VTD_FR.CONTEXT_INVALID,
    VTD_FR.ADDR_BEYOND_MGAW,
    VTD_FR.NO_WRITE,
    VTD_FR.NO_READ,
    VTD_FR.PAGING_ENTRY_ACCESS,
    VTD_FR.INTERRUPT_ADDR,
    VTD_FR.PAGING_ENTRY_RESERVED,
    VTD_FR.CONTEXT_TT_BLOCKED,
    VTD_FR.SM_PASID_DIR_ENTRY_NOT_PRESENT,
    VTD_FR.SM_PASID_ENTRY_NOT_PRESENT,
    VTD_FR.SM_PASID_ENTRY_INVALID,
    VTD_FR.SM_FS_ENTRY_ACCESS,
    VTD_FR.SM_FS_ENTRY_NOT_PRESENT,
    VTD_FR.SM_FS_ENTRY_RESERVED,
    VTD_FR.SM_FS_ROOT_ACCESS,
    VTD_FR.SM_FS_ENTRY_ADDR_BEYOND_MGAW,
    VTD_FR.SM_FS_ROOT_READ,
    VTD_FR.SM_FS_ENTRY_READ,
    VTD_FR.SM_FS_ENTRY_WRITE,
    VTD_FR.SM_SS_ENTRY_ACCESS,
    VTD_FR.SM_SS_ENTRY_PERMISSION,
    VTD_FR.SM_SS_ENTRY_RESERVED,
    VTD_FR.SM_FS_NON_CANONICAL,
    VTD_FR.SM_FS_PRIV_VIOLATION,
    VTD_FR.SM_NO_EXECUTE,
    VTD_FR.SM_ADDR_BEYOND_MGAW,
    VTD_FR.SM_SS_ENTRY_ADDR_BEYOND_MAX,
    VTD_FR.SM_NO_WRITE,
    VTD_FR.SM_NO_READ,
    VTD_FR.SM_INTERRUPT_ADDR,
    VTD_FR.SM_FS_AD_UPDATE_FAILED,
  ]) {
    QUALIFIED[c] = 1;
  }
}

/** The architecture-neutral class of a VT-d fault reason. */
export function vtdFaultKind(reason: number): number {
  return KIND[reason & 0xff] as number;
}

/**
 * Whether FPD (in the context, PASID directory or PASID table entry used) keeps a fault with this
 * reason from being recorded.
 *
 * @spec Intel VT-d Architecture Specification 7.1.2 (qualified faults)
 */
export function vtdFaultQualified(reason: number): boolean {
  return QUALIFIED[reason & 0xff] === 1;
}
