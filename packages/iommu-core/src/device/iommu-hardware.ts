// What a device sees of an IOMMU: the translation, ATS and PRI interfaces every hardware model
// implements (VT-d, SMMUv3, the mock), and the shapes of their requests and answers.

/** Access bits of a request, and permission bits of a translation. */
export const DMA_READ = 1;
export const DMA_WRITE = 2;
export const DMA_EXEC = 4;

/** A request without a PASID (Substream ID) carries this in `pasid`. */
export const NO_PASID = -1;

/** How the address of a request is to be taken (PCIe Address Type). */
export const AT_UNTRANSLATED = 0;
/** An ATS translation request: the device asks for a translation to cache in its ATC. */
export const AT_TRANSLATION_REQUEST = 1;
/** A request whose address the device already translated through its ATC. */
export const AT_TRANSLATED = 2;

/**
 * One DMA request as it reaches the IOMMU. Callers reuse one object per device so that the DMA
 * path allocates nothing. The input address is split into a 4 KiB page number and an offset so that
 * 57-bit (and 64-bit) IOVAs stay exact: `iovaPfn` < 2^52 is always an exact number.
 */
export interface TranslationRequest {
  /** PCI requester ID: bus << 8 | device << 3 | function. */
  rid: number;
  /** SMMU StreamID (for PCI devices usually derived from the RID by the platform's map). */
  sid: number;
  /** PASID / SubstreamID, or NO_PASID. */
  pasid: number;
  /** Input address >> 12. */
  iovaPfn: number;
  /** Input address & 0xfff. */
  offset: number;
  /** DMA_READ or DMA_WRITE, with DMA_EXEC for an instruction fetch (read). */
  access: number;
  /** Privileged (supervisor) request: PCIe PASID prefix PMR bit, AXI APROT[0]. */
  privileged: boolean;
  /** AT_UNTRANSLATED, AT_TRANSLATION_REQUEST or AT_TRANSLATED. */
  at: number;
}

/** Outcome of a translation. */
export const XLATE_OK = 0;
/** The request faulted; the hardware reported it (fault record, event) as its spec says. */
export const XLATE_FAULT = 1;
/** The request is stalled waiting for software (SMMU stall model); it completes on resume. */
export const XLATE_STALLED = 2;

/**
 * Architecture-neutral classes of faults, so that the harness can compare outcomes across
 * architectures. Each hardware model also reports its own spec code in `TranslationResult.code`.
 */
export const FaultKind = Object.freeze({
  NONE: 0,
  /** No valid translation for the address (not-present entry). */
  TRANSLATION: 1,
  /** Present, but the access (write, exec, privilege) is not allowed. */
  PERMISSION: 2,
  /** The address is wider than the table or the hardware allows. */
  ADDRESS_SIZE: 3,
  /** The device or PASID is blocked (abort configuration, blocked domain, translation disabled). */
  BLOCKED: 4,
  /** No valid configuration for the requester (root, context, STE, PASID entry, CD). */
  BAD_CONFIG: 5,
  /** A table fetch failed on the bus (external abort). */
  WALK_ABORT: 6,
  /** The requester ID or PASID is outside what the hardware or configuration supports. */
  BAD_REQUESTER: 7,
  /** An ATS request or translated request that is not allowed. */
  ATS_FORBIDDEN: 8,
});
export type FaultKind = (typeof FaultKind)[keyof typeof FaultKind];

/** What the hardware answered. Reused like the request; the hardware fills every field. */
export interface TranslationResult {
  /** XLATE_OK, XLATE_FAULT or XLATE_STALLED. */
  status: number;
  /** Output physical address (including the offset) when status is XLATE_OK. */
  pa: number;
  /** Permissions the translation grants (DMA_READ | DMA_WRITE | DMA_EXEC). */
  perm: number;
  /** log2 of the size of the region the translation covers (12 for 4 KiB), for ATS. */
  sizeShift: number;
  /** FaultKind of a fault. */
  fault: number;
  /** The architecture's own fault reason (VT-d fault reason, SMMU event number). */
  code: number;
  /** For XLATE_STALLED: a tag the device keeps to match the resume. */
  stallTag: number;
}

/** A fresh result object, to be reused across requests. */
export function newTranslationResult(): TranslationResult {
  return { status: XLATE_OK, pa: 0, perm: 0, sizeShift: 12, fault: 0, code: 0, stallTag: 0 };
}

/** A fresh request object, to be reused across requests. */
export function newTranslationRequest(): TranslationRequest {
  return {
    rid: 0,
    sid: 0,
    pasid: NO_PASID,
    iovaPfn: 0,
    offset: 0,
    access: DMA_READ,
    privileged: false,
    at: AT_UNTRANSLATED,
  };
}

/**
 * A PCIe page request (PRI Page Request Message). Devices reuse one object per device: a hardware
 * model copies what it queues.
 *
 * @spec PCIe Base Specification 10.4.1 Page Request Message
 */
export interface PageRequest {
  rid: number;
  sid: number;
  /** NO_PASID when the request carries no PASID prefix. */
  pasid: number;
  /** Page address >> 12. */
  iovaPfn: number;
  /** DMA_READ / DMA_WRITE / DMA_EXEC wanted. */
  access: number;
  privileged: boolean;
  /** Page Request Group Index (9 bits). */
  prgIndex: number;
  /** Last request of its group: the host answers the group once, after this one. */
  last: boolean;
}

/** PRG Response codes. @spec PCIe Base Specification 10.4.2 PRG Response Message */
export const PRG_SUCCESS = 0;
export const PRG_INVALID_REQUEST = 1;
export const PRG_RESPONSE_FAILURE = 0xf;

/**
 * The device end of the IOMMU's links: how a hardware model reaches a device to deliver a page
 * group response, an ATS invalidation or the resume of a stalled transaction.
 */
export interface DevicePort {
  readonly rid: number;
  readonly sid: number;
  /** PRG response for (pasid, prgIndex). */
  prgResponse(pasid: number, prgIndex: number, code: number): void;
  /**
   * ATS Invalidation Request: drop ATC entries overlapping [iovaPfn, iovaPfn + pages) (`pages`
   * of 0: the whole address space). With a PASID only that PASID's entries go (and, with
   * `global`, the range of every PASID); without one (NO_PASID) the range goes for every PASID
   * and for requests without one, as an invalidation without a PASID prefix applies to all.
   * Returns when the invalidation completed (the model's completion is immediate).
   */
  atsInvalidate(pasid: number, iovaPfn: number, pages: number, global: boolean): void;
  /** Resume (retry) or terminate (abort) the stalled transaction with `stallTag`. */
  stallResume(stallTag: number, retry: boolean): void;
}

/**
 * A hardware IOMMU as devices see it: it translates requests with the tables and caches it holds,
 * reports faults the way its spec says (a fault record, an event), answers ATS translation
 * requests and queues PRI page requests for software.
 */
export interface IommuHardware {
  /** Instance name (e.g. "dmar0", "smmu0", "mock0"). */
  readonly name: string;
  /**
   * Translate `req`, filling `out`. Never throws on any guest state. For an ATS translation
   * request (AT_TRANSLATION_REQUEST) an unmapped or insufficient translation is not a fault: the
   * answer is XLATE_OK with the permissions the tables grant, possibly none (the device may then
   * send a page request); XLATE_FAULT means the request itself was refused (ATS not allowed, bad
   * configuration). Translation requests and translated requests never stall.
   */
  translate(req: TranslationRequest, out: TranslationResult): void;
  /** A PRI page request from a device; queued for software or answered at once when refused. */
  pageRequest(req: PageRequest): void;
  /** Make a device reachable for responses, ATS invalidations and resumes. */
  connect(port: DevicePort): void;
  /** Forget a device (hot-unplug). */
  disconnect(port: DevicePort): void;
}
