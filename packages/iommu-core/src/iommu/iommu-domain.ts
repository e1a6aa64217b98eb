// The IOMMU domain: one translation context (a page table, or pass-through, or blocking) that
// devices and PASIDs attach to, and the operations a driver gives it.

import type { Device } from "../device/device.js";
import type { Errno } from "../errno.js";
import type { LogicalClock } from "../platform/clock.js";
import type { Trace } from "../platform/trace.js";
import type { CacheTagList } from "./cache-tag.js";
import type { IopfGroup } from "./io-pgfault.js";
import type { IommuOps } from "./iommu-ops.js";
import type { IommuIotlbGather } from "./iotlb-gather.js";
import type { IommuMm } from "./mmu-notifier.js";

// Domain type bits. @kernel include/linux/iommu.h __IOMMU_DOMAIN_PAGING
/** Supports map/unmap. */
export const __IOMMU_DOMAIN_PAGING = 1 << 0;
/** Used by the DMA API. */
export const __IOMMU_DOMAIN_DMA_API = 1 << 1;
/** Identity (pass-through). */
export const __IOMMU_DOMAIN_PT = 1 << 2;
/** DMA API with a flush queue (lazy invalidation). */
export const __IOMMU_DOMAIN_DMA_FQ = 1 << 3;
/** Shared with a process address space. */
export const __IOMMU_DOMAIN_SVA = 1 << 4;
/** Legacy platform domain. */
export const __IOMMU_DOMAIN_PLATFORM = 1 << 5;
/** User-space managed stage 1 on top of a parent (nested). */
export const __IOMMU_DOMAIN_NESTED = 1 << 6;

/** @kernel include/linux/iommu.h IOMMU_DOMAIN_BLOCKED */
export const IOMMU_DOMAIN_BLOCKED = 0;
/** @kernel include/linux/iommu.h IOMMU_DOMAIN_IDENTITY */
export const IOMMU_DOMAIN_IDENTITY = __IOMMU_DOMAIN_PT;
/** @kernel include/linux/iommu.h IOMMU_DOMAIN_UNMANAGED */
export const IOMMU_DOMAIN_UNMANAGED = __IOMMU_DOMAIN_PAGING;
/** @kernel include/linux/iommu.h IOMMU_DOMAIN_DMA */
export const IOMMU_DOMAIN_DMA = __IOMMU_DOMAIN_PAGING | __IOMMU_DOMAIN_DMA_API;
/** @kernel include/linux/iommu.h IOMMU_DOMAIN_DMA_FQ */
export const IOMMU_DOMAIN_DMA_FQ =
  __IOMMU_DOMAIN_PAGING | __IOMMU_DOMAIN_DMA_API | __IOMMU_DOMAIN_DMA_FQ;
/** @kernel include/linux/iommu.h IOMMU_DOMAIN_SVA */
export const IOMMU_DOMAIN_SVA = __IOMMU_DOMAIN_SVA;
/** @kernel include/linux/iommu.h IOMMU_DOMAIN_PLATFORM */
export const IOMMU_DOMAIN_PLATFORM = __IOMMU_DOMAIN_PLATFORM;
/** @kernel include/linux/iommu.h IOMMU_DOMAIN_NESTED */
export const IOMMU_DOMAIN_NESTED = __IOMMU_DOMAIN_NESTED;

/** Name of a domain type, as sysfs prints it. @kernel drivers/iommu/iommu.c iommu_domain_type_str */
export function iommuDomainTypeStr(type: number): string {
  switch (type) {
    case IOMMU_DOMAIN_BLOCKED:
      return "Blocked";
    case IOMMU_DOMAIN_IDENTITY:
      return "Passthrough";
    case IOMMU_DOMAIN_UNMANAGED:
      return "Unmanaged";
    case IOMMU_DOMAIN_DMA:
      return "Translated";
    case IOMMU_DOMAIN_DMA_FQ:
      return "Translated (lazy)";
    case IOMMU_DOMAIN_SVA:
      return "SVA";
    case IOMMU_DOMAIN_PLATFORM:
      return "Platform";
    case IOMMU_DOMAIN_NESTED:
      return "Nested";
    default:
      return "Unknown";
  }
}

// Flags for paging-domain allocation. @kernel include/uapi/linux/iommufd.h iommufd_hwpt_alloc_flags
/** The domain may be the parent (stage 2) of nested domains. */
export const IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0;
/** The domain tracks dirty pages. */
export const IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1;
/** The domain may be attached to a PASID. */
export const IOMMU_HWPT_ALLOC_PASID = 1 << 3;

/**
 * The aperture a domain can translate.
 *
 * @kernel include/linux/iommu.h iommu_domain_geometry
 */
export interface IommuDomainGeometry {
  apertureStart: number;
  apertureEnd: number;
  /** DMA outside the aperture is impossible, not merely untranslated. */
  forceAperture: boolean;
}

/** Errnos attach_dev may return. @kernel include/linux/iommu.h iommu_domain_ops.attach_dev */
export type AttachErrno = "EINVAL" | "ENOMEM" | "ENOSPC" | "EBUSY" | "ENODEV";

/**
 * What a driver implements for a domain. Each op takes the domain first, as in the kernel, so
 * that one ops table serves every domain of a kind.
 *
 * @kernel include/linux/iommu.h iommu_domain_ops
 */
export interface IommuDomainOps {
  /**
   * Make `dev` (its RID) translate through `domain`; `old` is what it used until now. On failure
   * the device keeps `old`. EINVAL: device and domain are incompatible; ENOMEM; ENOSPC: another
   * resource ran out (e.g. domain IDs); EBUSY: the device cannot change now; ENODEV: device error.
   */
  attachDev(domain: IommuDomain, dev: Device, old: IommuDomain | null): 0 | AttachErrno;
  /** Attach `domain` at `pasid` of `dev` (`old`: the domain there before, or null). */
  setDevPasid?(
    domain: IommuDomain,
    dev: Device,
    pasid: number,
    old: IommuDomain | null,
  ): 0 | AttachErrno | "EOPNOTSUPP";
  /**
   * Map `pgcount` pages of `pgsize` bytes; leaves the bytes mapped in `domain.mapped`.
   * Errnos as IoPgtable.mapPages.
   */
  mapPages?(
    domain: IommuDomain,
    iova: number,
    pa: number,
    pgsize: number,
    pgcount: number,
    prot: number,
  ): 0 | Errno;
  /** Unmap up to `pgcount` pages of `pgsize`; returns the bytes unmapped. */
  unmapPages?(
    domain: IommuDomain,
    iova: number,
    pgsize: number,
    pgcount: number,
    gather: IommuIotlbGather,
  ): number;
  /** Invalidate everything the hardware caches for the domain. */
  flushIotlbAll?(domain: IommuDomain): void;
  /** Called after a map, for hardware that caches non-present entries. */
  iotlbSyncMap?(domain: IommuDomain, iova: number, size: number): 0 | Errno;
  /** Invalidate what `gather` collected (and free its table frames). */
  iotlbSync?(domain: IommuDomain, gather: IommuIotlbGather): void;
  /** The physical address `iova` maps to, or -1. */
  iovaToPhys?(domain: IommuDomain, iova: number): number;
  /** Release the domain's resources (tables, IDs). */
  free?(domain: IommuDomain): void;
  /**
   * Free table frames an unmap collected in a gather's freelist, once the invalidation that covers
   * them completed (for a flush queue, long after the unmap).
   *
   * @kernel drivers/iommu/iommu-pages.c iommu_put_pages_list
   */
  freeTables?(domain: IommuDomain, pas: readonly number[]): void;
}

/** Handles page faults (IOPF groups) for a domain. @kernel include/linux/iommu.h iommu_domain.iopf_handler */
export type IopfHandler = (group: IopfGroup) => 0 | Errno;

/**
 * A translation context. Drivers extend it (as the kernel embeds `struct iommu_domain` in its own
 * domain structure) and fill `ops`, `pgsizeBitmap` and `geometry`; the core fills `type` and
 * `owner` when the domain is allocated through it.
 *
 * @kernel include/linux/iommu.h iommu_domain
 */
export class IommuDomain {
  /**
   * A small number naming the domain in traces and reports (not a hardware domain ID), given by
   * the subsystem that allocated it; 0 for domains it did not allocate.
   */
  id = 0;
  type: number;
  ops: IommuDomainOps;
  /** The driver whose allocator made this domain (null for static domains). */
  owner: IommuOps | null = null;
  /** Page sizes the domain maps: bit n set means 2^n bytes. A number, as sizes reach 2^39. */
  pgsizeBitmap = 0;
  geometry: IommuDomainGeometry = { apertureStart: 0, apertureEnd: 0, forceAperture: false };
  /** The DMA-API state of DMA domains (IOVA allocator, flush queue). */
  iovaCookie: unknown = null;
  /** Page-fault handler for domains that accept IOPF (SVA, iommufd fault objects). */
  iopfHandler: IopfHandler | null = null;
  /** For SVA domains: the process address space the domain shares. */
  mm: IommuMm | null = null;
  /** Users of an SVA domain (binds). */
  users = 0;
  /** The caches to invalidate when the domain's mappings change (the driver fills it). */
  cacheTags: CacheTagList | null = null;
  /** Bytes the last `ops.mapPages` mapped (the kernel's `mapped` out-parameter). */
  mapped = 0;
  /** Flags the domain was allocated with (IOMMU_HWPT_ALLOC_*). */
  allocFlags = 0;
  /** Where map/unmap events go (the allocating subsystem's trace), or null. */
  trace: Trace | null = null;
  /** The allocating subsystem's clock (flush-queue timers), or null. */
  clock: LogicalClock | null = null;

  constructor(type: number, ops: IommuDomainOps) {
    this.type = type;
    this.ops = ops;
  }

  /** Whether map/unmap apply. */
  get isPaging(): boolean {
    return (this.type & __IOMMU_DOMAIN_PAGING) !== 0;
  }

  /** Whether the DMA API owns the domain. @kernel include/linux/iommu.h iommu_is_dma_domain */
  get isDma(): boolean {
    return (this.type & __IOMMU_DOMAIN_DMA_API) !== 0;
  }
}
