// The VT-d register file: byte offsets of every register and the field layout of each register
// that has fields, with the bit constants the GCMD/GSTS handshake and fault paths test directly.

import { defineLayout, type Layout } from "@iommu-sim/iommu-core/platform";

const SPEC = "Intel VT-d Architecture Specification";

/**
 * Byte offsets of the fixed registers of a remapping unit. The IOTLB invalidation pair (IVA,
 * IOTLB) and the fault recording registers sit at offsets the unit reports in ECAP.IRO and CAP.FRO.
 *
 * @spec Intel VT-d Architecture Specification 10.4
 * @kernel drivers/iommu/intel/iommu.h DMAR_*_REG
 */
export const VTD_REG = Object.freeze({
  VER: 0x000,
  CAP: 0x008,
  ECAP: 0x010,
  GCMD: 0x018,
  GSTS: 0x01c,
  RTADDR: 0x020,
  CCMD: 0x028,
  FSTS: 0x034,
  FECTL: 0x038,
  FEDATA: 0x03c,
  FEADDR: 0x040,
  FEUADDR: 0x044,
  AFLOG: 0x058,
  PMEN: 0x064,
  PLMBASE: 0x068,
  PLMLIMIT: 0x06c,
  PHMBASE: 0x070,
  PHMLIMIT: 0x078,
  IQH: 0x080,
  IQT: 0x088,
  IQA: 0x090,
  ICS: 0x09c,
  IECTL: 0x0a0,
  IEDATA: 0x0a4,
  IEADDR: 0x0a8,
  IEUADDR: 0x0ac,
  IQER: 0x0b0,
  IRTA: 0x0b8,
  PQH: 0x0c0,
  PQT: 0x0c8,
  PQA: 0x0d0,
  PRS: 0x0dc,
  PECTL: 0x0e0,
  PEDATA: 0x0e4,
  PEADDR: 0x0e8,
  PEUADDR: 0x0ec,
});

/** Bytes per fault recording register (128 bits). @kernel drivers/iommu/intel/dmar.c PRIMARY_FAULT_REG_LEN */
export const FRCD_SIZE = 16;

/**
 * Version register: architecture version implemented.
 *
 * @spec Intel VT-d Architecture Specification 10.4 VER_REG
 * @kernel drivers/iommu/intel/iommu.h DMAR_VER_MAJOR
 */
export const VER_REG: Layout = defineLayout({
  name: "VER_REG",
  bits: 32,
  spec: `${SPEC} 10.4 VER_REG`,
  fields: [
    { name: "MIN", lsb: 0, width: 4, doc: "minor version" },
    { name: "MAX", lsb: 4, width: 4, doc: "major version" },
  ],
});

/**
 * Capability register (read-only). Bit 23 (decoded as "isoch" by old kernels) and 58:57 are
 * reserved in the current specification.
 *
 * @spec Intel VT-d Architecture Specification 10.4 CAP_REG
 * @kernel drivers/iommu/intel/iommu.h cap_*
 */
export const CAP_REG: Layout = defineLayout({
  name: "CAP_REG",
  bits: 64,
  spec: `${SPEC} 10.4 CAP_REG`,
  fields: [
    { name: "ND", lsb: 0, width: 3, doc: "number of domains: 2^(4 + 2*ND) domain ids" },
    { name: "AFL", lsb: 3, width: 1, doc: "advanced fault logging" },
    { name: "RWBF", lsb: 4, width: 1, doc: "required write-buffer flushing" },
    { name: "PLMR", lsb: 5, width: 1, doc: "protected low-memory region" },
    { name: "PHMR", lsb: 6, width: 1, doc: "protected high-memory region" },
    { name: "CM", lsb: 7, width: 1, doc: "caching mode: not-present entries may be cached" },
    {
      name: "SAGAW",
      lsb: 8,
      width: 5,
      doc: "supported AGAWs: bit n = agaw n (30 + 9n bits, n + 2 levels)",
    },
    { name: "MGAW", lsb: 16, width: 6, doc: "maximum guest address width minus 1" },
    { name: "ZLR", lsb: 22, width: 1, doc: "zero-length read" },
    { name: "FRO", lsb: 24, width: 10, doc: "fault recording register offset, 16-byte units" },
    {
      name: "SLLPS",
      lsb: 34,
      width: 4,
      doc: "second-stage large pages: bit 0 2 MiB, bit 1 1 GiB, bit 2 512 GiB, bit 3 1 TiB",
    },
    { name: "PSI", lsb: 39, width: 1, doc: "page-selective invalidation" },
    { name: "NFR", lsb: 40, width: 8, doc: "number of fault recording registers minus 1" },
    { name: "MAMV", lsb: 48, width: 6, doc: "maximum address mask value for PSI" },
    { name: "DWD", lsb: 54, width: 1, doc: "write draining" },
    { name: "DRD", lsb: 55, width: 1, doc: "read draining" },
    { name: "FL1GP", lsb: 56, width: 1, doc: "first-stage 1 GiB pages" },
    { name: "PI", lsb: 59, width: 1, doc: "posted interrupts" },
    { name: "FL5LP", lsb: 60, width: 1, doc: "first-stage 5-level paging" },
    { name: "ECMDS", lsb: 61, width: 1, doc: "enhanced command interface" },
    { name: "ESIRTPS", lsb: 62, width: 1, doc: "SIRTP also invalidates the interrupt cache" },
    { name: "ESRTPS", lsb: 63, width: 1, doc: "SRTP also invalidates the translation caches" },
  ],
});

/**
 * Extended capability register (read-only). Bits 27 and 28 (old "deferred invalidate" and the
 * pre-3.0 PASID bit, which compliant units report as 0) and 50, 52-63 are reserved here.
 *
 * @spec Intel VT-d Architecture Specification 10.4 ECAP_REG
 * @kernel drivers/iommu/intel/iommu.h ecap_*
 */
export const ECAP_REG: Layout = defineLayout({
  name: "ECAP_REG",
  bits: 64,
  spec: `${SPEC} 10.4 ECAP_REG`,
  fields: [
    { name: "C", lsb: 0, width: 1, doc: "page-walk coherency" },
    { name: "QI", lsb: 1, width: 1, doc: "queued invalidation" },
    { name: "DT", lsb: 2, width: 1, doc: "device-TLB (ATS)" },
    { name: "IR", lsb: 3, width: 1, doc: "interrupt remapping" },
    { name: "EIM", lsb: 4, width: 1, doc: "extended interrupt mode (x2APIC)" },
    { name: "PT", lsb: 6, width: 1, doc: "pass-through" },
    { name: "SC", lsb: 7, width: 1, doc: "snoop control" },
    { name: "IRO", lsb: 8, width: 10, doc: "IOTLB register offset, 16-byte units" },
    { name: "MHMV", lsb: 20, width: 4, doc: "maximum handle mask value" },
    { name: "MTS", lsb: 25, width: 1, doc: "memory type support" },
    { name: "NEST", lsb: 26, width: 1, doc: "nested translation" },
    { name: "PRS", lsb: 29, width: 1, doc: "page requests" },
    { name: "ERS", lsb: 30, width: 1, doc: "execute requests" },
    { name: "SRS", lsb: 31, width: 1, doc: "supervisor requests" },
    { name: "NWFS", lsb: 33, width: 1, doc: "no-write flag" },
    { name: "EAFS", lsb: 34, width: 1, doc: "extended accessed flag" },
    { name: "PSS", lsb: 35, width: 5, doc: "PASID size: PASIDs have PSS + 1 bits" },
    { name: "PASID", lsb: 40, width: 1, doc: "PASID support" },
    { name: "DIT", lsb: 41, width: 1, doc: "device-TLB invalidation throttling" },
    { name: "PDS", lsb: 42, width: 1, doc: "page-request drain" },
    { name: "SMTS", lsb: 43, width: 1, doc: "scalable-mode translation" },
    { name: "VCS", lsb: 44, width: 1, doc: "virtual command" },
    { name: "SLADS", lsb: 45, width: 1, doc: "second-stage accessed/dirty" },
    { name: "SLTS", lsb: 46, width: 1, doc: "second-stage translation (scalable mode)" },
    { name: "FLTS", lsb: 47, width: 1, doc: "first-stage translation" },
    { name: "SMPWCS", lsb: 48, width: 1, doc: "scalable-mode page-walk coherency" },
    { name: "RPS", lsb: 49, width: 1, doc: "RID_PASID support" },
    { name: "PMS", lsb: 51, width: 1, doc: "performance monitoring" },
  ],
});

/**
 * Global command register (write-only). TE, EAFL, QIE, IRE and CFI are persistent enables (the
 * value written is the new state); SRTP, SFL, WBF and SIRTP are one-shot commands.
 *
 * @spec Intel VT-d Architecture Specification 10.4 GCMD_REG
 * @kernel drivers/iommu/intel/iommu.h DMA_GCMD_*
 */
export const GCMD_REG: Layout = defineLayout({
  name: "GCMD_REG",
  bits: 32,
  spec: `${SPEC} 10.4 GCMD_REG`,
  fields: [
    { name: "CFI", lsb: 23, width: 1, doc: "compatibility-format interrupts" },
    { name: "SIRTP", lsb: 24, width: 1, doc: "set interrupt remap table pointer (one-shot)" },
    { name: "IRE", lsb: 25, width: 1, doc: "interrupt remapping enable" },
    { name: "QIE", lsb: 26, width: 1, doc: "queued invalidation enable" },
    { name: "WBF", lsb: 27, width: 1, doc: "write buffer flush (one-shot)" },
    { name: "EAFL", lsb: 28, width: 1, doc: "enable advanced fault logging" },
    { name: "SFL", lsb: 29, width: 1, doc: "set fault log (one-shot)" },
    { name: "SRTP", lsb: 30, width: 1, doc: "set root table pointer (one-shot)" },
    { name: "TE", lsb: 31, width: 1, doc: "translation enable" },
  ],
});

/**
 * Global status register (read-only), one status bit per GCMD bit. RTPS, FLS and IRTPS stay set
 * after their command completes; WBFS is set while a write-buffer flush is in progress.
 *
 * @spec Intel VT-d Architecture Specification 10.4 GSTS_REG
 * @kernel drivers/iommu/intel/iommu.h DMA_GSTS_*
 */
export const GSTS_REG: Layout = defineLayout({
  name: "GSTS_REG",
  bits: 32,
  spec: `${SPEC} 10.4 GSTS_REG`,
  fields: [
    { name: "CFIS", lsb: 23, width: 1 },
    { name: "IRTPS", lsb: 24, width: 1 },
    { name: "IRES", lsb: 25, width: 1 },
    { name: "QIES", lsb: 26, width: 1 },
    { name: "WBFS", lsb: 27, width: 1 },
    { name: "AFLS", lsb: 28, width: 1 },
    { name: "FLS", lsb: 29, width: 1 },
    { name: "RTPS", lsb: 30, width: 1 },
    { name: "TES", lsb: 31, width: 1 },
  ],
});

/** RTADDR.TTM: legacy-mode tables. @spec Intel VT-d Architecture Specification 10.4 */
export const RTADDR_TTM_LEGACY = 0;
/** RTADDR.TTM: scalable-mode tables. @kernel drivers/iommu/intel/iommu.h DMA_RTADDR_SMT */
export const RTADDR_TTM_SCALABLE = 1;
/** RTADDR.TTM: abort-DMA mode (VT-d 4.x, needs ECAP.ADMS; not advertised by this model). */
export const RTADDR_TTM_ABORT = 3;

/**
 * Root table address register. Latched by GCMD.SRTP; bits of RTA at or above the host address
 * width are reserved (the unit checks them).
 *
 * @spec Intel VT-d Architecture Specification 10.4 RTADDR_REG
 * @kernel drivers/iommu/intel/iommu.c iommu_set_root_entry
 */
export const RTADDR_REG: Layout = defineLayout({
  name: "RTADDR_REG",
  bits: 64,
  spec: `${SPEC} 10.4 RTADDR_REG`,
  fields: [
    {
      name: "TTM",
      lsb: 10,
      width: 2,
      values: { 0: "legacy", 1: "scalable", 2: "reserved", 3: "abort-dma" },
      doc: "translation table mode",
    },
    { name: "RTA", lsb: 12, width: 52, addr: true, doc: "root table address (4 KiB aligned)" },
  ],
});

/**
 * Context command register: register-based context-cache invalidation (legacy mode, QI off).
 *
 * @spec Intel VT-d Architecture Specification 10.4 CCMD_REG
 * @kernel drivers/iommu/intel/iommu.h DMA_CCMD_*
 */
export const CCMD_REG: Layout = defineLayout({
  name: "CCMD_REG",
  bits: 64,
  spec: `${SPEC} 10.4 CCMD_REG`,
  fields: [
    { name: "DID", lsb: 0, width: 16, doc: "domain id" },
    { name: "SID", lsb: 16, width: 16, doc: "source id" },
    {
      name: "FM",
      lsb: 32,
      width: 2,
      doc: "function mask: ignore the low FM bits of the function number",
    },
    {
      name: "CAIG",
      lsb: 59,
      width: 2,
      values: { 1: "global", 2: "domain", 3: "device" },
      doc: "actual granularity performed",
    },
    {
      name: "CIRG",
      lsb: 61,
      width: 2,
      values: { 1: "global", 2: "domain", 3: "device" },
      doc: "requested granularity",
    },
    { name: "ICC", lsb: 63, width: 1, doc: "invalidate; hardware clears it when done" },
  ],
});

/**
 * Fault status register. PFO, IQE, ICE, ITE and PRO are RW1C; PPF is the OR of all F bits; FRI is
 * the index of the first pending record, valid while PPF is set. AFO/APF belong to advanced fault
 * logging; PRO (bit 7) is the pre-3.0 page-request overflow, now PRS.PRO.
 *
 * @spec Intel VT-d Architecture Specification 10.4 FSTS_REG
 * @kernel drivers/iommu/intel/iommu.h DMA_FSTS_*
 */
export const FSTS_REG: Layout = defineLayout({
  name: "FSTS_REG",
  bits: 32,
  spec: `${SPEC} 10.4 FSTS_REG`,
  fields: [
    { name: "PFO", lsb: 0, width: 1, doc: "primary fault overflow" },
    { name: "PPF", lsb: 1, width: 1, doc: "primary pending fault" },
    { name: "AFO", lsb: 2, width: 1, doc: "advanced fault overflow" },
    { name: "APF", lsb: 3, width: 1, doc: "advanced pending fault" },
    { name: "IQE", lsb: 4, width: 1, doc: "invalidation queue error" },
    { name: "ICE", lsb: 5, width: 1, doc: "invalidation completion error" },
    { name: "ITE", lsb: 6, width: 1, doc: "invalidation time-out error" },
    { name: "PRO", lsb: 7, width: 1, doc: "page request overflow (pre-3.0 location)" },
    { name: "FRI", lsb: 8, width: 8, doc: "fault record index" },
  ],
});

/** Event control layout shared by FECTL, IECTL and PECTL. */
function eventControl(name: string, section: string): Layout {
  return defineLayout({
    name,
    bits: 32,
    spec: `${SPEC} ${section} ${name}`,
    fields: [
      { name: "IP", lsb: 30, width: 1, doc: "interrupt pending (read-only)" },
      { name: "IM", lsb: 31, width: 1, doc: "interrupt mask (set at reset)" },
    ],
  });
}

/** Fault event control register. @spec Intel VT-d Architecture Specification 10.4 FECTL_REG */
export const FECTL_REG: Layout = eventControl("FECTL_REG", "10.4");

/**
 * Invalidate address register (of the IOTLB pair at ECAP.IRO * 16).
 *
 * @spec Intel VT-d Architecture Specification 10.4 IVA_REG
 * @kernel drivers/iommu/intel/iommu.c __iommu_flush_iotlb
 */
export const IVA_REG: Layout = defineLayout({
  name: "IVA_REG",
  bits: 64,
  spec: `${SPEC} 10.4 IVA_REG`,
  fields: [
    { name: "AM", lsb: 0, width: 6, doc: "address mask: 2^AM pages" },
    { name: "IH", lsb: 6, width: 1, doc: "invalidation hint: leaf entries only" },
    { name: "ADDR", lsb: 12, width: 52, addr: true, doc: "page address" },
  ],
});

/**
 * IOTLB invalidate register (IVA + 8).
 *
 * @spec Intel VT-d Architecture Specification 10.4 IOTLB_REG
 * @kernel drivers/iommu/intel/iommu.h DMA_TLB_*
 */
export const IOTLB_REG: Layout = defineLayout({
  name: "IOTLB_REG",
  bits: 64,
  spec: `${SPEC} 10.4 IOTLB_REG`,
  fields: [
    { name: "DID", lsb: 32, width: 16, doc: "domain id" },
    { name: "DW", lsb: 48, width: 1, doc: "drain writes" },
    { name: "DR", lsb: 49, width: 1, doc: "drain reads" },
    {
      name: "IAIG",
      lsb: 57,
      width: 2,
      values: { 1: "global", 2: "domain", 3: "page" },
      doc: "actual granularity performed",
    },
    {
      name: "IIRG",
      lsb: 60,
      width: 2,
      values: { 1: "global", 2: "domain", 3: "page" },
      doc: "requested granularity",
    },
    { name: "IVT", lsb: 63, width: 1, doc: "invalidate; hardware clears it when done" },
  ],
});

/**
 * Invalidation queue head: byte offset of the next descriptor hardware fetches (bits 18:4; with
 * 256-bit descriptors bit 4 stays 0).
 *
 * @spec Intel VT-d Architecture Specification 10.4 IQH_REG
 * @kernel drivers/iommu/intel/iommu.h DMAR_IQ_SHIFT
 */
export const IQH_REG: Layout = defineLayout({
  name: "IQH_REG",
  bits: 64,
  spec: `${SPEC} 10.4 IQH_REG`,
  fields: [{ name: "QH", lsb: 4, width: 15, doc: "queue head, 16-byte units" }],
});

/**
 * Invalidation queue tail: byte offset one past the last descriptor software queued. With
 * IQA.DW = 1, bit 4 set is an invalidation queue error.
 *
 * @spec Intel VT-d Architecture Specification 10.4 IQT_REG
 * @kernel drivers/iommu/intel/dmar.c qi_submit_sync
 */
export const IQT_REG: Layout = defineLayout({
  name: "IQT_REG",
  bits: 64,
  spec: `${SPEC} 10.4 IQT_REG`,
  fields: [{ name: "QT", lsb: 4, width: 15, doc: "queue tail, 16-byte units" }],
});

/**
 * Invalidation queue address register.
 *
 * @spec Intel VT-d Architecture Specification 10.4 IQA_REG
 * @kernel drivers/iommu/intel/dmar.c __dmar_enable_qi
 */
export const IQA_REG: Layout = defineLayout({
  name: "IQA_REG",
  bits: 64,
  spec: `${SPEC} 10.4 IQA_REG`,
  fields: [
    { name: "QS", lsb: 0, width: 3, doc: "queue size: 2^QS 4-KiB pages" },
    {
      name: "DW",
      lsb: 11,
      width: 1,
      values: { 0: "128-bit", 1: "256-bit" },
      doc: "descriptor width",
    },
    { name: "IQA", lsb: 12, width: 52, addr: true, doc: "queue base (4 KiB aligned)" },
  ],
});

/** Invalidation completion status register. @spec Intel VT-d Architecture Specification 10.4 ICS_REG */
export const ICS_REG: Layout = defineLayout({
  name: "ICS_REG",
  bits: 32,
  spec: `${SPEC} 10.4 ICS_REG`,
  fields: [{ name: "IWC", lsb: 0, width: 1, doc: "invalidation wait complete (RW1C)" }],
});

/** Invalidation event control register. @spec Intel VT-d Architecture Specification 10.4 IECTL_REG */
export const IECTL_REG: Layout = eventControl("IECTL_REG", "10.4");

/**
 * Invalidation queue error record register.
 *
 * @spec Intel VT-d Architecture Specification 10.4 IQER_REG
 * @kernel drivers/iommu/intel/iommu.h DMAR_IQER_REG_*
 */
export const IQER_REG: Layout = defineLayout({
  name: "IQER_REG",
  bits: 64,
  spec: `${SPEC} 10.4 IQER_REG`,
  fields: [
    { name: "IQEI", lsb: 0, width: 4, doc: "invalidation queue error information" },
    { name: "ITESID", lsb: 32, width: 16, doc: "source id of the timed-out device-TLB flush" },
    { name: "ICESID", lsb: 48, width: 16, doc: "source id of the bad completion" },
  ],
});

/**
 * Interrupt remapping table address register (interrupt remapping is not modelled; the layout is
 * here for decoding).
 *
 * @spec Intel VT-d Architecture Specification 10.4 IRTA_REG
 */
export const IRTA_REG: Layout = defineLayout({
  name: "IRTA_REG",
  bits: 64,
  spec: `${SPEC} 10.4 IRTA_REG`,
  fields: [
    { name: "S", lsb: 0, width: 4, doc: "table size: 2^(S+1) entries" },
    { name: "EIME", lsb: 11, width: 1, doc: "extended interrupt mode enable" },
    { name: "IRTA", lsb: 12, width: 52, addr: true, doc: "table address (4 KiB aligned)" },
  ],
});

/**
 * Page request queue head: byte offset of the next descriptor software reads (32-byte units).
 *
 * @spec Intel VT-d Architecture Specification 10.4 PQH_REG
 * @kernel drivers/iommu/intel/iommu.h PRQ_RING_MASK
 */
export const PQH_REG: Layout = defineLayout({
  name: "PQH_REG",
  bits: 64,
  spec: `${SPEC} 10.4 PQH_REG`,
  fields: [{ name: "PQH", lsb: 5, width: 14, doc: "queue head, 32-byte units" }],
});

/**
 * Page request queue tail: byte offset where hardware writes the next descriptor.
 *
 * @spec Intel VT-d Architecture Specification 10.4 PQT_REG
 * @kernel drivers/iommu/intel/prq.c prq_event_thread
 */
export const PQT_REG: Layout = defineLayout({
  name: "PQT_REG",
  bits: 64,
  spec: `${SPEC} 10.4 PQT_REG`,
  fields: [{ name: "PQT", lsb: 5, width: 14, doc: "queue tail, 32-byte units" }],
});

/**
 * Page request queue address register.
 *
 * @spec Intel VT-d Architecture Specification 10.4 PQA_REG
 * @kernel drivers/iommu/intel/prq.c intel_iommu_enable_prq
 */
export const PQA_REG: Layout = defineLayout({
  name: "PQA_REG",
  bits: 64,
  spec: `${SPEC} 10.4 PQA_REG`,
  fields: [
    { name: "PQS", lsb: 0, width: 3, doc: "queue size: 2^PQS 4-KiB pages" },
    { name: "PQA", lsb: 12, width: 52, addr: true, doc: "queue base (4 KiB aligned)" },
  ],
});

/**
 * Page request status register (both bits RW1C).
 *
 * @spec Intel VT-d Architecture Specification 10.4 PRS_REG
 * @kernel drivers/iommu/intel/iommu.h DMA_PRS_*
 */
export const PRS_REG: Layout = defineLayout({
  name: "PRS_REG",
  bits: 32,
  spec: `${SPEC} 10.4 PRS_REG`,
  fields: [
    { name: "PPR", lsb: 0, width: 1, doc: "pending page request" },
    { name: "PRO", lsb: 1, width: 1, doc: "page request overflow" },
  ],
});

/** Page request event control register. @spec Intel VT-d Architecture Specification 10.4 PECTL_REG */
export const PECTL_REG: Layout = eventControl("PECTL_REG", "10.4");

// Bit constants for the handshake and fault paths (uint32 numbers; `>>> 0` keeps bit 31 positive).

/** @kernel drivers/iommu/intel/iommu.h DMA_GCMD_TE */
export const GCMD_TE = 0x80000000;
export const GCMD_SRTP = 0x40000000;
export const GCMD_SFL = 0x20000000;
export const GCMD_EAFL = 0x10000000;
export const GCMD_WBF = 0x08000000;
export const GCMD_QIE = 0x04000000;
export const GCMD_IRE = 0x02000000;
export const GCMD_SIRTP = 0x01000000;
export const GCMD_CFI = 0x00800000;

/** @kernel drivers/iommu/intel/iommu.h DMA_GSTS_TES */
export const GSTS_TES = 0x80000000;
export const GSTS_RTPS = 0x40000000;
export const GSTS_FLS = 0x20000000;
export const GSTS_AFLS = 0x10000000;
export const GSTS_WBFS = 0x08000000;
export const GSTS_QIES = 0x04000000;
export const GSTS_IRES = 0x02000000;
export const GSTS_IRTPS = 0x01000000;
export const GSTS_CFIS = 0x00800000;

/**
 * GSTS AND this mask gives the persistent enables only (TES, AFLS, QIES, IRES, CFIS): it drops the
 * one-shot status bits RTPS, FLS, WBFS and IRTPS. Software that follows the spec's recommended
 * sequence reads GSTS, ANDs it with this mask, sets or clears one command bit and writes GCMD, so
 * that no one-shot command is re-issued and no enable is dropped. (Linux instead keeps a shadow of
 * the enables; both write the same persistent bits.)
 *
 * @spec Intel VT-d Architecture Specification 10.4 (GCMD programming note)
 */
export const GSTS_ONE_SHOT_MASK = 0x96ffffff;

/** @kernel drivers/iommu/intel/iommu.h DMA_FSTS_PFO */
export const FSTS_PFO = 1 << 0;
export const FSTS_PPF = 1 << 1;
export const FSTS_AFO = 1 << 2;
export const FSTS_APF = 1 << 3;
export const FSTS_IQE = 1 << 4;
export const FSTS_ICE = 1 << 5;
export const FSTS_ITE = 1 << 6;
export const FSTS_PRO = 1 << 7;
/** Shift of FSTS.FRI. @kernel drivers/iommu/intel/iommu.h dma_fsts_fault_record_index */
export const FSTS_FRI_SHIFT = 8;
export const FSTS_FRI_MASK = 0xff00;

/** Interrupt mask / pending bits of FECTL, IECTL and PECTL. */
export const ECTL_IM = 0x80000000;
export const ECTL_IP = 0x40000000;

/** PRS bits. @kernel drivers/iommu/intel/iommu.h DMA_PRS_PPR */
export const PRS_PPR = 1 << 0;
export const PRS_PRO = 1 << 1;

/**
 * F in the high dword (offset 12) of a fault recording register (layout: FRCD in fault-record.ts).
 *
 * @kernel drivers/iommu/intel/iommu.h DMA_FRCD_F
 */
export const FRCD_F = 0x80000000;

// Queue sizes.

/** Bytes of an invalidation queue of 2^qs 4-KiB pages. */
export function iqSizeBytes(qs: number): number {
  return 4096 << qs;
}

/** Bytes per invalidation descriptor: 16 (IQA.DW = 0) or 32 (IQA.DW = 1). */
export function iqDescSize(dw: number): number {
  return 16 << dw;
}

/**
 * Descriptors in an invalidation queue: 2^(QS + 8) 128-bit or 2^(QS + 7) 256-bit ones.
 *
 * @spec Intel VT-d Architecture Specification 10.4
 */
export function iqEntries(qs: number, dw: number): number {
  return 1 << (qs + 8 - dw);
}

/** Bytes per page request descriptor. @kernel drivers/iommu/intel/prq.c struct page_req_dsc */
export const PRQ_DESC_SIZE = 32;

/** Bytes of a page request queue of 2^pqs 4-KiB pages. @spec Intel VT-d Architecture Specification 10.4 */
export function prqSizeBytes(pqs: number): number {
  return 4096 << pqs;
}
