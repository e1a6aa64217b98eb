// VT-d invalidation-queue descriptors (one 128-bit layout per type) and the PCIe ATS range
// encoding of device-TLB invalidations (S bit plus trailing ones in ADDR).
//
// Every descriptor starts with Type[3:0] in bits 3:0; since spec 3.0 the type is 7 bits wide, with
// Type[6:4] in bits 11:9. All defined types have Type[6:4] = 0 and Linux never writes those bits,
// but they are a type field, not reserved bits: a non-zero Type[6:4] names an undefined type (an
// invalid descriptor), which QEMU's maintainers made explicit by dropping bits 11:9 from their
// reserved masks of the PASID-based descriptors. So each layout declares `TypeHi` and
// `invDescType` decodes all 7 bits.
//
// With IQA.DW = 1 each queue slot is 256 bits: qw2 and qw3 must be zero except in a page group
// response (private data). The layouts cover qw0 and qw1; the queue model checks qw2/qw3.

import { bug, defineLayout, type FieldSpec, type Layout } from "@iommu-sim/iommu-core/platform";

/**
 * Descriptor types.
 *
 * @spec Intel VT-d Architecture Specification 6.5.2
 * @kernel drivers/iommu/intel/iommu.h QI_*_TYPE
 */
export const INV_DESC_TYPE = Object.freeze({
  /** Context-cache invalidate. */
  CC: 0x1,
  /** IOTLB invalidate. */
  IOTLB: 0x2,
  /** Device-TLB invalidate. */
  DEV_TLB: 0x3,
  /** Interrupt entry cache invalidate. */
  IEC: 0x4,
  /** Invalidation wait. */
  WAIT: 0x5,
  /** PASID-based IOTLB invalidate. */
  PIOTLB: 0x6,
  /** PASID-cache invalidate. */
  PC: 0x7,
  /** PASID-based device-TLB invalidate. */
  PDEV_TLB: 0x8,
  /** Page group response. */
  PGRP_RESP: 0x9,
  /** Page stream response: pre-3.0 only; the kernel defines it and never sends it. No layout. */
  PSTRM_RESP: 0xa,
});

/** Context-cache invalidation, G: everything. @kernel drivers/iommu/intel/iommu.h DMA_CCMD_GLOBAL_INVL */
export const CC_G_GLOBAL = 1;
/** Context-cache invalidation, G: one domain. @kernel drivers/iommu/intel/iommu.h DMA_CCMD_DOMAIN_INVL */
export const CC_G_DOMAIN = 2;
/** Context-cache invalidation, G: one source id (with FM). @kernel drivers/iommu/intel/iommu.h DMA_CCMD_DEVICE_INVL */
export const CC_G_DEVICE = 3;
/** IOTLB invalidation, G: everything. @kernel drivers/iommu/intel/iommu.h DMA_TLB_GLOBAL_FLUSH */
export const IOTLB_G_GLOBAL = 1;
/** IOTLB invalidation, G: one domain. @kernel drivers/iommu/intel/iommu.h DMA_TLB_DSI_FLUSH */
export const IOTLB_G_DOMAIN = 2;
/** IOTLB invalidation, G: pages of one domain. @kernel drivers/iommu/intel/iommu.h DMA_TLB_PSI_FLUSH */
export const IOTLB_G_PAGE = 3;
/** PASID-based IOTLB granularity: all of DID+PASID. @kernel drivers/iommu/intel/iommu.h QI_GRAN_NONG_PASID */
export const PIOTLB_G_PASID = 2;
/** PASID-based IOTLB granularity: pages within DID+PASID. @kernel drivers/iommu/intel/iommu.h QI_GRAN_PSI_PASID */
export const PIOTLB_G_PAGE = 3;
/** PASID-cache granularity: all PASIDs of DID. @kernel drivers/iommu/intel/iommu.h QI_PC_ALL_PASIDS */
export const PC_G_DOMAIN = 0;
/** PASID-cache granularity: one PASID of DID. @kernel drivers/iommu/intel/iommu.h QI_PC_PASID_SEL */
export const PC_G_PASID = 1;
/** PASID-cache granularity: everything. @kernel drivers/iommu/intel/iommu.h QI_PC_GLOBAL */
export const PC_G_GLOBAL = 3;
/** Interrupt entry cache granularity: global. */
export const IEC_G_GLOBAL = 0;
/** Interrupt entry cache granularity: index-selective. @kernel drivers/iommu/intel/iommu.h QI_IEC_SELECTIVE */
export const IEC_G_INDEX = 1;
/** PASID-based device-TLB: one PASID. @kernel drivers/iommu/intel/iommu.h QI_DEV_IOTLB_GRAN_PASID_SEL */
export const PDEV_TLB_G_PASID = 0;
/** PASID-based device-TLB: all PASIDs of the device. @kernel drivers/iommu/intel/iommu.h QI_DEV_IOTLB_GRAN_ALL */
export const PDEV_TLB_G_ALL = 1;

/** Page group response code: success. @kernel drivers/iommu/intel/iommu.h QI_RESP_SUCCESS */
export const PGRP_RESP_SUCCESS = 0x0;
/** Page group response code: invalid request. @kernel drivers/iommu/intel/iommu.h QI_RESP_INVALID */
export const PGRP_RESP_INVALID = 0x1;
/** Page group response code: response failure. @kernel drivers/iommu/intel/iommu.h QI_RESP_FAILURE */
export const PGRP_RESP_FAILURE = 0xf;

/** Bytes per descriptor slot with IQA.DW = 0 (and per layout here). */
export const INV_DESC_SIZE = 16;
/** Bytes per descriptor slot with IQA.DW = 1 (scalable mode). */
export const INV_DESC_SIZE_256 = 32;

const SPEC = "Intel VT-d Architecture Specification";

function typeFields(type: number): FieldSpec[] {
  return [
    { name: "Type", lsb: 0, width: 4, values: { [type]: typeName(type) }, doc: "Type[3:0]" },
    { name: "TypeHi", lsb: 9, width: 3, doc: "Type[6:4], 0 for every defined type" },
  ];
}

function typeName(type: number): string {
  for (const [k, v] of Object.entries(INV_DESC_TYPE)) if (v === type) return k.toLowerCase();
  return bug(`no descriptor type ${type}`);
}

/**
 * Context-cache invalidate descriptor (type 1). In scalable mode the DID is ignored by hardware
 * (Linux passes 0 for device-selective flushes there).
 *
 * @spec Intel VT-d Architecture Specification 6.5.2.1
 * @kernel drivers/iommu/intel/dmar.c qi_flush_context
 */
export const CC_INV_DESC: Layout = defineLayout({
  name: "cc-inv-desc",
  bits: 128,
  spec: `${SPEC} 6.5.2.1`,
  fields: [
    ...typeFields(INV_DESC_TYPE.CC),
    {
      name: "G",
      lsb: 4,
      width: 2,
      values: { 1: "global", 2: "domain", 3: "device" },
      doc: "granularity (0 reserved)",
    },
    { name: "DID", lsb: 16, width: 16, doc: "domain identifier" },
    { name: "SID", lsb: 32, width: 16, doc: "source id (bus << 8 | devfn)" },
    { name: "FM", lsb: 48, width: 2, doc: "function mask: ignore the low FM bits of the function" },
  ],
});

/**
 * IOTLB invalidate descriptor (type 2). Page-selective: 2^AM pages at ADDR, which software aligns
 * to that size; AM must not exceed CAP.MAMV. In scalable mode it covers second-stage and
 * pass-through mappings of DID (all PASIDs).
 *
 * @spec Intel VT-d Architecture Specification 6.5.2.3 (section inferred from the 6.5.2.x order)
 * @kernel drivers/iommu/intel/iommu.h qi_desc_iotlb
 */
export const IOTLB_INV_DESC: Layout = defineLayout({
  name: "iotlb-inv-desc",
  bits: 128,
  spec: `${SPEC} 6.5.2.3 (section unverified)`,
  fields: [
    ...typeFields(INV_DESC_TYPE.IOTLB),
    {
      name: "G",
      lsb: 4,
      width: 2,
      values: { 1: "global", 2: "domain", 3: "page" },
      doc: "granularity (0 reserved)",
    },
    { name: "DW", lsb: 6, width: 1, doc: "drain writes (CAP.DWD)" },
    { name: "DR", lsb: 7, width: 1, doc: "drain reads (CAP.DRD)" },
    { name: "DID", lsb: 16, width: 16, doc: "domain identifier" },
    { name: "AM", lsb: 64, width: 6, doc: "address mask: 2^AM pages" },
    { name: "IH", lsb: 70, width: 1, doc: "invalidation hint: only leaf entries changed" },
    { name: "ADDR", lsb: 76, width: 52, addr: true, doc: "address (page-selective only)" },
  ],
});

/**
 * Device-TLB invalidate descriptor (type 3): forwarded to the device as a PCIe ATS invalidation
 * request without PASID. S = 1 encodes a range in ADDR (`decodeDevTlbRange`). PFSID is meaningful
 * with ECAP.DIT; Linux always fills it (QEMU's older reserved mask covers it: a known mismatch).
 *
 * @spec Intel VT-d Architecture Specification 6.5.2.5
 * @kernel drivers/iommu/intel/iommu.h qi_desc_dev_iotlb
 */
export const DEV_TLB_INV_DESC: Layout = defineLayout({
  name: "dev-tlb-inv-desc",
  bits: 128,
  spec: `${SPEC} 6.5.2.5`,
  fields: [
    ...typeFields(INV_DESC_TYPE.DEV_TLB),
    { name: "PFSIDLo", lsb: 12, width: 4, doc: "PFSID[3:0]: physical-function source id" },
    { name: "MIP", lsb: 16, width: 5, doc: "max invalidations pending (0 = 32)" },
    { name: "SID", lsb: 32, width: 16, doc: "requester id of the device" },
    { name: "PFSIDHi", lsb: 52, width: 12, doc: "PFSID[15:4]" },
    { name: "S", lsb: 64, width: 1, doc: "size: ADDR encodes a range" },
    { name: "ADDR", lsb: 76, width: 52, addr: true, doc: "address, with the range encoding if S" },
  ],
});

/**
 * Interrupt entry cache invalidate descriptor (type 4): G = 1 selects 2^IM entries from IIDX.
 * (QEMU's bit-field comment calls G = 1 global; the kernel's QI_IEC_SELECTIVE sets it for the
 * index-selective form, which is what this follows.)
 *
 * @spec Intel VT-d Architecture Specification 6.5.2.7
 * @kernel drivers/iommu/intel/irq_remapping.c qi_flush_iec
 */
export const IEC_INV_DESC: Layout = defineLayout({
  name: "iec-inv-desc",
  bits: 128,
  spec: `${SPEC} 6.5.2.7`,
  fields: [
    ...typeFields(INV_DESC_TYPE.IEC),
    {
      name: "G",
      lsb: 4,
      width: 1,
      values: { 0: "global", 1: "index" },
      doc: "granularity",
    },
    { name: "IM", lsb: 27, width: 5, doc: "index mask: 2^IM entries" },
    { name: "IIDX", lsb: 32, width: 16, doc: "interrupt index" },
  ],
});

/**
 * Invalidation wait descriptor (type 5). On completion of all earlier descriptors: SW writes the
 * 32-bit SDATA to SADDR, IF raises the invalidation completion event; FN holds later descriptors
 * back; PD (needs ECAP.PDS) also drains page requests and responses.
 *
 * @spec Intel VT-d Architecture Specification 6.5.2.8
 * @kernel drivers/iommu/intel/dmar.c qi_submit_sync
 */
export const INV_WAIT_DESC: Layout = defineLayout({
  name: "inv-wait-desc",
  bits: 128,
  spec: `${SPEC} 6.5.2.8`,
  fields: [
    ...typeFields(INV_DESC_TYPE.WAIT),
    { name: "IF", lsb: 4, width: 1, doc: "interrupt flag" },
    { name: "SW", lsb: 5, width: 1, doc: "status write" },
    { name: "FN", lsb: 6, width: 1, doc: "fence" },
    { name: "PD", lsb: 7, width: 1, doc: "page-request drain (ECAP.PDS; reserved otherwise)" },
    { name: "SDATA", lsb: 32, width: 32, doc: "status data" },
    { name: "SADDR", lsb: 66, width: 62, addr: true, doc: "status address (4-byte aligned)" },
  ],
});

/**
 * PASID-based IOTLB invalidate descriptor (type 6): first-stage and pass-through mappings of
 * DID+PASID. Units with SMTS must accept any AM here, independent of CAP.MAMV.
 *
 * @spec Intel VT-d Architecture Specification 6.5.2.4 (section inferred from the 6.5.2.x order)
 * @kernel drivers/iommu/intel/iommu.h qi_desc_piotlb
 */
export const PIOTLB_INV_DESC: Layout = defineLayout({
  name: "piotlb-inv-desc",
  bits: 128,
  spec: `${SPEC} 6.5.2.4 (section unverified)`,
  fields: [
    ...typeFields(INV_DESC_TYPE.PIOTLB),
    {
      name: "G",
      lsb: 4,
      width: 2,
      values: { 2: "pasid", 3: "page" },
      doc: "granularity (0, 1 reserved)",
    },
    { name: "DID", lsb: 16, width: 16, doc: "domain identifier" },
    { name: "PASID", lsb: 32, width: 20, doc: "PASID" },
    { name: "AM", lsb: 64, width: 6, doc: "address mask: 2^AM pages (page granularity)" },
    { name: "IH", lsb: 70, width: 1, doc: "invalidation hint" },
    { name: "ADDR", lsb: 76, width: 52, addr: true, doc: "address (page granularity)" },
  ],
});

/**
 * PASID-cache invalidate descriptor (type 7).
 *
 * @spec Intel VT-d Architecture Specification 6.5.2.2 (section inferred from the 6.5.2.x order)
 * @kernel drivers/iommu/intel/dmar.c qi_flush_pasid_cache
 */
export const PC_INV_DESC: Layout = defineLayout({
  name: "pc-inv-desc",
  bits: 128,
  spec: `${SPEC} 6.5.2.2 (section unverified)`,
  fields: [
    ...typeFields(INV_DESC_TYPE.PC),
    {
      name: "G",
      lsb: 4,
      width: 2,
      values: { 0: "domain", 1: "pasid", 3: "global" },
      doc: "granularity (2 reserved)",
    },
    { name: "DID", lsb: 16, width: 16, doc: "domain identifier" },
    { name: "PASID", lsb: 32, width: 20, doc: "PASID" },
  ],
});

/**
 * PASID-based device-TLB invalidate descriptor (type 8): a PCIe ATS invalidation request with
 * PASID. G = 1 covers all PASIDs of the device. Same range encoding as type 3, with S at bit 75.
 *
 * @spec Intel VT-d Architecture Specification 6.5.2.6
 * @kernel drivers/iommu/intel/iommu.h qi_desc_dev_iotlb_pasid
 */
export const PDEV_TLB_INV_DESC: Layout = defineLayout({
  name: "pdev-tlb-inv-desc",
  bits: 128,
  spec: `${SPEC} 6.5.2.6`,
  fields: [
    ...typeFields(INV_DESC_TYPE.PDEV_TLB),
    { name: "MIP", lsb: 4, width: 5, doc: "max invalidations pending (0 = 32)" },
    { name: "PFSIDLo", lsb: 12, width: 4, doc: "PFSID[3:0]: physical-function source id" },
    { name: "SID", lsb: 16, width: 16, doc: "requester id of the device" },
    { name: "PASID", lsb: 32, width: 20, doc: "PASID" },
    { name: "PFSIDHi", lsb: 52, width: 12, doc: "PFSID[15:4]" },
    { name: "G", lsb: 64, width: 1, values: { 0: "pasid", 1: "all" }, doc: "global" },
    { name: "S", lsb: 75, width: 1, doc: "size: ADDR encodes a range" },
    { name: "ADDR", lsb: 76, width: 52, addr: true, doc: "address, with the range encoding if S" },
  ],
});

/**
 * Page group response descriptor (type 9): software's answer to a page request group. PDP (bit 5)
 * and LPIG (bit 66) are declared because kernels wrote them: PDP was set by older kernels (QEMU
 * treats it as reserved); LPIG was written by Linux until 2025 and is reserved since spec 4.0,
 * where hardware ignores it, hence `ignored`. With PDP, qw2/qw3 echo the request's private data.
 *
 * @spec Intel VT-d Architecture Specification 7.x page group response (section unverified)
 * @kernel drivers/iommu/intel/prq.c intel_iommu_page_response
 */
export const PGRP_RESP_DESC: Layout = defineLayout({
  name: "pgrp-resp-desc",
  bits: 128,
  spec: `${SPEC} page group response descriptor (section unverified)`,
  fields: [
    ...typeFields(INV_DESC_TYPE.PGRP_RESP),
    { name: "PP", lsb: 4, width: 1, doc: "PASID present" },
    { name: "PDP", lsb: 5, width: 1, doc: "private data present (older kernels; QEMU: reserved)" },
    {
      name: "RC",
      lsb: 12,
      width: 4,
      values: { 0: "success", 1: "invalid", 15: "failure" },
      doc: "response code",
    },
    { name: "RID", lsb: 16, width: 16, doc: "requester id (the kernel macro says DID)" },
    { name: "PASID", lsb: 32, width: 20, doc: "PASID" },
    {
      name: "LPIG",
      lsb: 66,
      width: 1,
      ignored: true,
      doc: "last page in group: written by Linux until 2025, ignored by hardware since spec 4.0",
    },
    { name: "PRGI", lsb: 67, width: 9, doc: "page request group index" },
  ],
});

const BY_TYPE: readonly (Layout | null)[] = Object.freeze([
  null,
  CC_INV_DESC,
  IOTLB_INV_DESC,
  DEV_TLB_INV_DESC,
  IEC_INV_DESC,
  INV_WAIT_DESC,
  PIOTLB_INV_DESC,
  PC_INV_DESC,
  PDEV_TLB_INV_DESC,
  PGRP_RESP_DESC,
]);

/**
 * The layout of descriptor `type` (the 7-bit type of `invDescType`), or null for a type this model
 * does not accept (0, 0xA page stream response, 0xB-0x7F): hardware reports those as an invalid
 * descriptor (FSTS.IQE).
 */
export function invDescLayout(type: number): Layout | null {
  return BY_TYPE[type] ?? null;
}

/** The 7-bit descriptor type from the low 32 bits of qw0: Type[3:0] | Type[6:4] << 4. */
export function invDescType(w0: number): number {
  return (w0 & 0xf) | (((w0 >>> 9) & 0x7) << 4);
}

// ----- PCIe ATS range encoding of device-TLB invalidations -----

const TWO20 = 1048576;
/** Pages in the whole 64-bit space. */
const WHOLE_PAGES = 2 ** 52;

/** Order of a device-TLB invalidation that covers the whole address space. @kernel drivers/iommu/intel/iommu.h MAX_AGAW_PFN_WIDTH */
export const DEVTLB_ORDER_ALL = 52;

/** ADDR field (raw, address >> 12) and S bit of a device-TLB invalidation. */
export interface DevTlbRange {
  addrPfn: number;
  s: number;
}

/** First page and page count a device-TLB invalidation covers. */
export interface DevTlbSpan {
  pfn: number;
  pages: number;
}

/**
 * Encode the 2^order pages containing `pfn` (pfn < 2^52, order 0..52) as the ADDR/S pair of a
 * device-TLB descriptor (type 3 or 8): order 0 is the single page (S = 0); order m >= 1 sets S and
 * puts m - 1 one-bits at the bottom of the aligned page frame, so the lowest zero bit marks the
 * size (PCIe ATS). Order 52 gives ADDR = 0x7FFFFFFF_FFFFF000, the whole space. For aligned input
 * this equals both kernel builders (type 3 ORs the ones in, type 8 also clears bit m - 1, which
 * alignment already made 0); for unaligned input the range is the aligned block holding `pfn`.
 * Writes into `out` when given, so per-flush callers need not allocate.
 *
 * @kernel drivers/iommu/intel/iommu.h qi_desc_dev_iotlb
 * @kernel drivers/iommu/intel/iommu.h qi_desc_dev_iotlb_pasid
 */
export function encodeDevTlbRange(
  pfn: number,
  order: number,
  out: DevTlbRange = { addrPfn: 0, s: 0 },
): DevTlbRange {
  if (!Number.isInteger(order) || order < 0 || order > DEVTLB_ORDER_ALL)
    bug(`device-TLB order ${order} out of range`);
  if (!Number.isInteger(pfn) || pfn < 0 || pfn >= WHOLE_PAGES) bug(`pfn ${pfn} out of range`);
  if (order === 0) {
    out.addrPfn = pfn;
    out.s = 0;
    return out;
  }
  const block = 2 ** order;
  // Doubles hold pfn exactly, so the remainder and the sum below are exact.
  out.addrPfn = pfn - (pfn % block) + (block / 2 - 1);
  out.s = 1;
  return out;
}

/** Number of consecutive one bits of `x` (a uint32) from bit 0. */
function trailingOnes32(x: number): number {
  const inv = ~x >>> 0;
  if (inv === 0) return 32;
  return 31 - Math.clz32(inv & -inv);
}

/**
 * Decode the range of a device-TLB descriptor from qw1 (`addrLo`, `addrHi`: its two 32-bit halves;
 * bits 11:0 are ignored) and its S bit. S = 0: the one page at ADDR. S = 1: k one-bits from bit
 * 12 up mean 2^(k+1) pages at ADDR with those bits cleared. k >= 51 covers the whole space (the
 * all-ones ADDR, which would mean 2^53 pages, is clamped to it). Hardware never throws on guest
 * input, so no argument is rejected.
 */
export function decodeDevTlbRange(
  addrLo: number,
  addrHi: number,
  s: number,
  out: DevTlbSpan = { pfn: 0, pages: 0 },
): DevTlbSpan {
  const lo20 = (addrLo >>> 12) & 0xfffff;
  const hi = addrHi >>> 0;
  const raw = hi * TWO20 + lo20;
  if (!s) {
    out.pfn = raw;
    out.pages = 1;
    return out;
  }
  let k = trailingOnes32(lo20 | 0xfff00000);
  if (k >= 20) k = 20 + trailingOnes32(hi);
  if (k >= 51) {
    out.pfn = 0;
    out.pages = WHOLE_PAGES;
    return out;
  }
  const pages = 2 ** (k + 1);
  out.pfn = raw - (raw % pages);
  out.pages = pages;
  return out;
}
