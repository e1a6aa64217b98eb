// What the oracle reports: one violation of a DESIGN.md check, with the evidence a kernel
// developer needs to find the bug (the stale cache entry, the invalidation that was missing, the
// history of an ID).

/** The DESIGN.md checks the oracle makes live. */
export type ViolationKind =
  /** Check 1: a DMA reached memory its domain does not map there (or not with that access). */
  | "isolation"
  /** Check 1, the other way round: a DMA the domain maps (with that access) faulted. */
  | "spurious-fault"
  /** Check 2: a cache answered after the operation that removed the translation returned. */
  | "stale-translation"
  /**
   * Check 2's means: the unit refused an invalidation descriptor (IQE) or the driver gave up
   * waiting for one, so an invalidation the driver counted on never happened.
   */
  | "invalidation-error"
  /** Check 3: a PASID or domain ID was freed or handed out again while a cache still held it. */
  | "id-reuse"
  /** Check 5: between two stores an entry was present as neither the old nor the new one. */
  | "torn-update"
  /** Check 4: something was left behind after teardown. */
  | "leak"
  /**
   * Resource limits: a PASID held for a user process is not charged to that user, or a user holds
   * more than its limit.
   */
  | "pasid-charge"
  /** Check 6: a page request group was never answered (or answered when nobody asked). */
  | "page-request"
  /** Check 6: a fault the hardware took was lost (overflow) or never read by the driver. */
  | "lost-fault";

/** Caches a stale answer can come from (VT-d's, then the SMMU's; "atc" is the device's ATC). */
export type CacheName =
  | "iotlb"
  | "pasid-cache"
  | "context-cache"
  | "paging-structure-cache"
  | "device-tlb"
  | "ste-cache"
  | "cd-cache"
  | "tlb"
  | "walk-cache"
  | "atc"
  | "unknown";

/** The cache entry that answered, by its tag fields (spec names where there are some). */
export interface StaleEntry {
  readonly cache: CacheName;
  /** The unit ("dmar0") or, for a device-TLB, the device. */
  readonly where: string;
  readonly fields: Readonly<Record<string, string | number | boolean | null>>;
}

/** The invalidation that would have removed a stale entry. */
export interface MissingInvalidation {
  /** The descriptor, e.g. "PASID-based IOTLB invalidation (type 6)". */
  readonly descriptor: string;
  readonly fields: Readonly<Record<string, string | number>>;
}

/** One event in the life of an ID or a mapping. */
export interface HistoryEvent {
  /** Logical time (the machine clock). */
  readonly time: number;
  readonly event: string;
}

/** One violation. */
export interface Violation {
  readonly kind: ViolationKind;
  /** Logical time it was seen. */
  readonly time: number;
  /** One line for people. */
  readonly message: string;
  /** The DMA that showed it (stale translations, isolation). */
  readonly dma?: {
    readonly device: string;
    readonly pasid: number | null;
    readonly iova: string;
    readonly access: string;
    readonly pa: string;
    readonly expected: string;
  };
  readonly staleEntry?: StaleEntry;
  readonly missingInvalidation?: MissingInvalidation;
  /**
   * An invalidation that did cover the stale entry during the operation that removed the
   * translation: the entry was filled again after it, so it came too early (before the entry was
   * cleared, or before a walk that raced with it) rather than being missing.
   */
  readonly earlyInvalidation?: {
    readonly descriptor: string;
    readonly time: number;
    readonly fields: Readonly<Record<string, string | number>>;
  };
  /** The ID an id-reuse or leak is about. */
  readonly id?: {
    readonly space: "pasid" | "did" | "asid" | "vmid";
    readonly unit: string | null;
    readonly value: number;
  };
  /** The ID's or the mapping's history, oldest first. */
  readonly history?: readonly HistoryEvent[];
}

/** `n` as 0x-hex. */
export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
