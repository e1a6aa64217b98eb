// Register map and in-memory layouts of the mock IOMMU, shared by its driver and its hardware
// (they meet only here, in memory and through these registers).
//
// The mock IOMMU is ours: no silicon implements it. It has the parts every real IOMMU has, in
// their simplest form:
//
//   registers   CAP, CTRL (translation enable), DT_BASE, invalidation registers, the fault queue
//               and page request queue pointers, and a page response register set.
//   device table  one 32-byte entry (DTE) per requester ID at DT_BASE + rid * 32:
//       qword 0  bit 0 V, bits 1-2 MODE (0 blocked, 1 translate, 2 identity), bit 3 ATS (translated
//                requests and ATS allowed), bits 4-5 LVL (table levels - 3), bits 12-51 root table
//       qword 1  bits 0-15 DID (the IOTLB tag), bit 31 PASID_EN, bits 32-36 PTS (the PASID table
//                has 2^PTS entries)
//       qword 2  bits 12-51 PASID table address; qword 3 reserved
//   PASID table  16-byte entries indexed by PASID (PASID 0 unused: the RID's translation is in
//                the DTE): qword 0 as DTE qword 0 (V, MODE, LVL, root); qword 1 bits 0-15 DID.
//   fault queue  32-byte records: qword 0 bits 0-7 reason, bits 8-15 FaultKind, bit 16 PASID
//                valid, bit 17 write, bit 18 exec, bit 19 privileged, bits 32-47 RID; qword 1 the
//                faulting page address; qword 2 bits 0-19 PASID.
//   page request queue  32-byte records: qword 0 bits 0-15 RID, bit 16 PASID valid, bit 17 last,
//                bits 18-20 access (R/W/X), bit 21 privileged, bits 32-40 PRG index; qword 1 page
//                address; qword 2 bits 0-19 PASID.
//
// Invalidations are written to the INV_* registers and triggered by writing INV_CMD. The hardware
// caches translations only in its IOTLB, tagged (DID, PASID, page): it reads the device and PASID
// tables on every IOTLB miss.

import { hiOf, join, loOf } from "../platform/u64.js";

/** Register offsets (bytes). */
export const MOCK_REG = Object.freeze({
  /** RO: bits 0-4 PASID bits supported (0: no PASID), bit 8 ATS, bit 9 PRI, bits 16-31 IOTLB entries. */
  CAP: 0x00,
  /** RW: bit 0 EN (translate; when clear DMA passes untranslated), bit 1 FQ_EN, bit 2 PRQ_EN. */
  CTRL: 0x08,
  /** RO: bit 0 EN as applied, bit 1 FQ overflowed, bit 2 PRQ overflowed (write 1 to clear at STATUS_CLR). */
  STATUS: 0x0c,
  STATUS_CLR: 0x10,
  DT_BASE_LO: 0x18,
  DT_BASE_HI: 0x1c,
  INV_DID: 0x20,
  /** bits 0-19 PASID, bit 31 PASID valid. */
  INV_PASID: 0x24,
  INV_ADDR_LO: 0x28,
  INV_ADDR_HI: 0x2c,
  /** 4 KiB pages to invalidate from INV_ADDR (0: everything of the scope). */
  INV_PAGES: 0x30,
  INV_RID: 0x34,
  /** WO: writing a MOCK_INV_* code performs the invalidation at once. */
  INV_CMD: 0x38,
  FQ_BASE_LO: 0x40,
  FQ_BASE_HI: 0x44,
  /** log2 of the number of records. */
  FQ_SIZE: 0x48,
  FQ_HEAD: 0x4c,
  FQ_TAIL: 0x50,
  PRQ_BASE_LO: 0x60,
  PRQ_BASE_HI: 0x64,
  PRQ_SIZE: 0x68,
  PRQ_HEAD: 0x6c,
  PRQ_TAIL: 0x70,
  RESP_RID: 0x80,
  /** bits 0-19 PASID, bit 31 PASID valid. */
  RESP_PASID: 0x84,
  RESP_PRGI: 0x88,
  /** WO: writing the response code sends the PRG response. */
  RESP_CODE: 0x8c,
});

export const MOCK_CTRL_EN = 1 << 0;
export const MOCK_CTRL_FQ_EN = 1 << 1;
export const MOCK_CTRL_PRQ_EN = 1 << 2;
export const MOCK_STATUS_EN = 1 << 0;
export const MOCK_STATUS_FQ_OVF = 1 << 1;
export const MOCK_STATUS_PRQ_OVF = 1 << 2;

export const MOCK_CAP_ATS = 1 << 8;
export const MOCK_CAP_PRI = 1 << 9;

/** Invalidation commands (INV_CMD). */
export const MOCK_INV_ALL = 1;
/** Every IOTLB entry of INV_DID. */
export const MOCK_INV_DOMAIN = 2;
/** Every IOTLB entry of (INV_DID, INV_PASID). */
export const MOCK_INV_PASID = 3;
/** IOTLB entries of (INV_DID, INV_PASID) over INV_ADDR + INV_PAGES pages (leaf and above). */
export const MOCK_INV_RANGE = 4;
/** ATS invalidation of device INV_RID for INV_PASID over INV_ADDR + INV_PAGES (0: all). */
export const MOCK_INV_ATS = 5;

export const MOCK_DTE_SIZE = 32;
export const MOCK_PASID_ENTRY_SIZE = 16;
export const MOCK_FQ_RECORD_SIZE = 32;
export const MOCK_PRQ_RECORD_SIZE = 32;

// Entry qword 0 (DTE and PASID entry).
export const MOCK_ENTRY_V = 1 << 0;
export const MOCK_ENTRY_MODE_SHIFT = 1;
export const MOCK_ENTRY_MODE_MASK = 3 << 1;
export const MOCK_MODE_BLOCKED = 0;
export const MOCK_MODE_TRANSLATE = 1;
export const MOCK_MODE_IDENTITY = 2;
export const MOCK_ENTRY_ATS = 1 << 3;
export const MOCK_ENTRY_LVL_SHIFT = 4;
export const MOCK_ENTRY_LVL_MASK = 3 << 4;
/** Address bits 12-31 of qword 0's low half. */
export const MOCK_ENTRY_ADDR_LO = 0xfffff000 | 0;
/** Address bits 32-51 in qword 0's high half. */
export const MOCK_ENTRY_ADDR_HI = 0x000fffff;

// DTE qword 1.
export const MOCK_DTE_DID_MASK = 0xffff;
export const MOCK_DTE_PASID_EN = 1 << 31;
export const MOCK_DTE_PTS_MASK = 0x1f;

/** Mock fault reasons (the "spec code" of the mock). */
export const MockFault = Object.freeze({
  DTE_INVALID: 1,
  PASID_DISABLED: 2,
  PASID_TOO_BIG: 3,
  PASID_ENTRY_INVALID: 4,
  BLOCKED: 5,
  NOT_PRESENT: 6,
  PERMISSION: 7,
  ADDRESS_SIZE: 8,
  WALK_ABORT: 9,
  RESERVED_BIT: 10,
  ATS_FORBIDDEN: 11,
  BAD_ENTRY: 12,
});

/** Build qword 0 of a DTE or PASID entry. */
export function mockEntryLo(mode: number, levels: number, rootPa: number, ats: boolean): number {
  const lvl = mode === MOCK_MODE_TRANSLATE ? levels - 3 : 0;
  const root = mode === MOCK_MODE_TRANSLATE ? loOf(rootPa) & MOCK_ENTRY_ADDR_LO : 0;
  return (
    (MOCK_ENTRY_V |
      (mode << MOCK_ENTRY_MODE_SHIFT) |
      (ats ? MOCK_ENTRY_ATS : 0) |
      (lvl << MOCK_ENTRY_LVL_SHIFT) |
      root) >>>
    0
  );
}

/** High half of qword 0 of a DTE or PASID entry. */
export function mockEntryHi(mode: number, rootPa: number): number {
  return mode === MOCK_MODE_TRANSLATE ? hiOf(rootPa) & MOCK_ENTRY_ADDR_HI : 0;
}

/** The table address held in qword 0 (`lo`, `hi`). */
export function mockEntryAddr(lo: number, hi: number): number {
  return join(hi & MOCK_ENTRY_ADDR_HI, lo & MOCK_ENTRY_ADDR_LO);
}

/** Bit 31 of INV_PASID and RESP_PASID: the PASID in bits 0-19 is valid. */
export const MOCK_PASID_VALID = 0x80000000;

/** The INV_PASID / RESP_PASID register value for `pasid` (negative: no PASID). */
export function mockPasidReg(pasid: number): number {
  return pasid < 0 ? 0 : (MOCK_PASID_VALID | (pasid & 0xfffff)) >>> 0;
}

/** The PASID an INV_PASID / RESP_PASID value names, or -1 (NO_PASID) when it names none. */
export function mockPasidFromReg(value: number): number {
  return (value & MOCK_PASID_VALID) !== 0 ? value & 0xfffff : -1;
}
