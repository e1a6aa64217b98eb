// The page-table interface every IOMMU table format implements (io-pgtable), with the flush
// callbacks a format calls and the protection bits a mapping carries.

import type { Errno } from "../errno.js";
import type { IommuIotlbGather } from "./iotlb-gather.js";

/** Mapping protections. @kernel include/linux/iommu.h IOMMU_READ */
export const IOMMU_READ = 1 << 0;
export const IOMMU_WRITE = 1 << 1;
export const IOMMU_CACHE = 1 << 2;
export const IOMMU_NOEXEC = 1 << 3;
export const IOMMU_MMIO = 1 << 4;
export const IOMMU_PRIV = 1 << 5;

/**
 * How a table format asks its IOMMU driver to invalidate what the hardware may cache.
 *
 * @kernel include/linux/io-pgtable.h iommu_flush_ops
 */
export interface IommuFlushOps {
  /** Invalidate every TLB entry of the context. */
  tlbFlushAll(): void;
  /** Invalidate the walk caches (and TLB) for [iova, iova + size) after tables were freed. */
  tlbFlushWalk(iova: number, size: number, granule: number): void;
  /** Queue one leaf for invalidation in `gather` (or invalidate it at once). */
  tlbAddPage(gather: IommuIotlbGather, iova: number, granule: number): void;
}

/**
 * Configuration of a table instance.
 *
 * @kernel include/linux/io-pgtable.h io_pgtable_cfg
 */
export interface IoPgtableCfg {
  /** Page and block sizes the format maps, as a bitmap of sizes (bit n set: 2^n bytes). */
  pgsizeBitmap: number;
  /** Input address bits. */
  ias: number;
  /** Output address bits. */
  oas: number;
  /** Whether the hardware walk is cache coherent (always true in the model). */
  coherentWalk: boolean;
  /** The driver's flush callbacks; null when the caller flushes by other means. */
  tlb: IommuFlushOps | null;
}

/**
 * A page table of one format, in simulated physical memory, as a driver uses it.
 *
 * Addresses are numbers. `iova` passed to mapPages/unmapPages is aligned to the page size, so it is
 * exact up to 2^64; `iovaToPhys` is exact for any `iova` below 2^53 and for page-aligned ones
 * above. Sizes are at most 2^52 bytes.
 *
 * @kernel include/linux/io-pgtable.h io_pgtable_ops
 */
export interface IoPgtable {
  readonly cfg: IoPgtableCfg;
  /** Physical address of the top-level table (what the hardware is pointed at). */
  readonly rootPa: number;
  /** Number of levels the walk takes from the root. */
  readonly levels: number;
  /** Bytes the last `mapPages` call mapped (on error: what the caller must unmap). */
  readonly mapped: number;
  /**
   * Map `pgcount` pages of `pgsize` (one bit of the pgsize bitmap) from `iova` to `pa` with `prot`.
   * Returns 0 or an errno, and leaves the bytes mapped in `mapped` (the kernel's out-parameter).
   * `'EEXIST'` when something is already mapped there, `'EINVAL'` for a size the format does not
   * have or misaligned addresses, `'ERANGE'` for an address outside ias/oas, `'ENOMEM'` when no
   * frame is left for a table.
   *
   * @kernel include/linux/io-pgtable.h io_pgtable_ops.map_pages
   */
  mapPages(iova: number, pa: number, pgsize: number, pgcount: number, prot: number): 0 | Errno;
  /**
   * Unmap up to `pgcount` pages of `pgsize` from `iova`; returns the bytes unmapped (stopping at
   * the first hole or at a larger leaf that the range does not cover entirely). Leaves are handed
   * to `gather` through the flush callbacks.
   *
   * @kernel include/linux/io-pgtable.h io_pgtable_ops.unmap_pages
   */
  unmapPages(
    iova: number,
    pgsize: number,
    pgcount: number,
    gather: IommuIotlbGather | null,
  ): number;
  /**
   * The physical address `iova` maps to, or -1 when nothing is mapped (the kernel returns 0).
   *
   * @kernel include/linux/io-pgtable.h io_pgtable_ops.iova_to_phys
   */
  iovaToPhys(iova: number): number;
  /** Free every table frame (the mapped pages are not the table's to free). */
  free(): void;
}
