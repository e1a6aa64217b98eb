// Mapping through a domain: splitting a range into the largest pages the domain allows, undoing a
// partial map, unmapping into an IOTLB gather, and the sync calls that invalidate.

import type { Errno } from "../errno.js";
import { bug } from "../platform/bug.js";
import { alignDown, ffs53, fls53, isAligned } from "../platform/u64.js";
import { IOMMU_DOMAIN_IDENTITY, type IommuDomain } from "./iommu-domain.js";
import { IommuIotlbGather } from "./iotlb-gather.js";

/** 2^i for i < 64, so that no hot path calls Math.pow. */
const POW2 = new Float64Array(64);
for (let i = 0; i < 64; i++) POW2[i] = 2 ** i;

/** Lowest set bit of an address that may exceed 2^53 (then page aligned, so exact). */
function ffsAddr(x: number): number {
  if (x === 0) return 64;
  const lo = x >>> 0;
  if (lo !== 0) return 31 - Math.clz32(lo & -lo);
  if (x < 2 ** 53) return ffs53(x);
  // Above 2^53 a double holds 53 significant bits; scale down to find the lowest one.
  let shift = 0;
  let v = x;
  while (v >= 2 ** 53) {
    v /= 2;
    shift++;
  }
  return ffs53(v) + shift;
}

// The set bits of the last bitmap seen, ascending: domains keep one bitmap, so this is a cache
// that almost never misses, and it keeps bit scans of a 53-bit number off the per-page path.
let cachedBitmap = -1;
const cachedIdx = new Int8Array(64);
let cachedCount = 0;

function bitmapIndices(bitmap: number): void {
  cachedBitmap = bitmap;
  cachedCount = 0;
  for (let i = 0; i < 53; i++)
    if (Math.floor(bitmap / POW2[i]) % 2 === 1) cachedIdx[cachedCount++] = i;
}

/** Pages counted by the last iommuPgsize call (the kernel's `count` out-parameter). */
let pgsizeCount = 0;

/**
 * The largest page size of the domain that fits `size` and the alignment of both `iova` and `pa`,
 * and (in `iommuPgsizeCount()`) how many such pages to map before a larger size becomes possible.
 * Returns 0 when no size fits.
 *
 * @kernel drivers/iommu/iommu.c iommu_pgsize
 */
export function iommuPgsize(bitmap: number, iova: number, pa: number, size: number): number {
  if (bitmap !== cachedBitmap) bitmapIndices(bitmap);
  let limit = fls53(size);
  const iovaLow = ffsAddr(iova);
  const paLow = ffsAddr(pa);
  if (iovaLow < limit) limit = iovaLow;
  if (paLow < limit) limit = paLow;
  let k = cachedCount - 1;
  while (k >= 0 && cachedIdx[k] > limit) k--;
  if (k < 0) {
    pgsizeCount = 0;
    return 0;
  }
  const pgsize = POW2[cachedIdx[k]];
  let count = Math.floor(size / pgsize);
  // Stop short of the next larger size's boundary if the range reaches past it, so the caller
  // switches to the larger page there (only worth it when iova and pa share that offset).
  if (k + 1 < cachedCount) {
    const nextSize = POW2[cachedIdx[k + 1]];
    const iovaOff = iova - alignDown(iova, nextSize);
    if (iovaOff === pa - alignDown(pa, nextSize)) {
      const offset = nextSize - iovaOff;
      if (offset + nextSize <= size) count = offset / pgsize;
    }
  }
  pgsizeCount = count;
  return pgsize;
}

/** The `count` of the last iommuPgsize call. */
export function iommuPgsizeCount(): number {
  return pgsizeCount;
}

function minPagesz(domain: IommuDomain): number {
  return POW2[ffs53(domain.pgsizeBitmap)];
}

/** Whether `x` is a non-negative integer multiple of the domain's smallest page. */
function aligned(domain: IommuDomain, x: number): boolean {
  return x >= 0 && Math.floor(x) === x && isAligned(x, minPagesz(domain));
}

/**
 * Map [iova, iova + size) to [pa, pa + size) without the sync call. On failure everything this
 * call mapped is unmapped again.
 *
 * @kernel drivers/iommu/iommu.c iommu_map_nosync
 */
export function iommuMapNosync(
  domain: IommuDomain,
  iova: number,
  pa: number,
  size: number,
  prot: number,
): 0 | Errno {
  if (!domain.isPaging) return "EINVAL";
  const mapPages = domain.ops.mapPages;
  if (mapPages === undefined || domain.pgsizeBitmap === 0) return "ENODEV";
  if (!aligned(domain, iova) || !aligned(domain, pa) || !aligned(domain, size)) return "EINVAL";
  let left = size;
  let at = iova;
  let to = pa;
  let ret: 0 | Errno = 0;
  while (left > 0) {
    const pgsize = iommuPgsize(domain.pgsizeBitmap, at, to, left);
    if (pgsize === 0) {
      ret = "EINVAL";
      break;
    }
    domain.mapped = 0;
    ret = mapPages(domain, at, to, pgsize, pgsizeCount, prot);
    const mapped = domain.mapped;
    left -= mapped;
    if (ret !== 0) break;
    // A format that maps nothing yet reports success would make this loop forever.
    if (mapped <= 0) bug(`map_pages of domain ${domain.id} mapped ${mapped} bytes and returned 0`);
    at += mapped;
    to += mapped;
  }
  if (ret !== 0) {
    if (size - left > 0) iommuUnmap(domain, iova, size - left);
    return ret;
  }
  const trace = domain.trace;
  if (trace?.active) trace.emit("map", { domain: domain.id, iova, pa, size, prot });
  return 0;
}

/**
 * Map [iova, iova + size) to [pa, pa + size) with `prot`, in the largest pages the domain allows,
 * then let the driver sync (for hardware that caches non-present entries). Returns 0; `'EINVAL'`
 * for a domain that does not map (identity, blocked) or addresses/size not aligned to its
 * smallest page; `'ENODEV'` for a driver without map_pages; the table's errnos (`'EEXIST'`,
 * `'ENOMEM'`, `'ERANGE'`). Nothing stays mapped on failure.
 *
 * @kernel drivers/iommu/iommu.c iommu_map
 */
export function iommuMap(
  domain: IommuDomain,
  iova: number,
  pa: number,
  size: number,
  prot: number,
): 0 | Errno {
  const ret = iommuMapNosync(domain, iova, pa, size, prot);
  if (ret !== 0) return ret;
  const sync = iommuSyncMap(domain, iova, size);
  if (sync !== 0) {
    iommuUnmap(domain, iova, size);
    return sync;
  }
  return 0;
}

/** @kernel drivers/iommu/iommu.c iommu_sync_map */
export function iommuSyncMap(domain: IommuDomain, iova: number, size: number): 0 | Errno {
  const sync = domain.ops.iotlbSyncMap;
  return sync === undefined ? 0 : sync(domain, iova, size);
}

/**
 * Unmap into `gather` without syncing: the leaves are gone from the table, but the hardware may
 * still hold them until the caller syncs. Returns the bytes unmapped (stopping at the first hole),
 * or `'EINVAL'` for a non-paging domain or a range not aligned to the smallest page (the kernel
 * logs and returns 0 bytes there).
 *
 * @kernel drivers/iommu/iommu.c iommu_unmap_fast
 */
export function iommuUnmapFast(
  domain: IommuDomain,
  iova: number,
  size: number,
  gather: IommuIotlbGather,
): number | "EINVAL" {
  if (!domain.isPaging) return "EINVAL";
  const unmapPages = domain.ops.unmapPages;
  if (unmapPages === undefined || domain.pgsizeBitmap === 0) return "EINVAL";
  if (!aligned(domain, iova) || !aligned(domain, size)) return "EINVAL";
  let unmapped = 0;
  let at = iova;
  while (unmapped < size) {
    const pgsize = iommuPgsize(domain.pgsizeBitmap, at, at, size - unmapped);
    if (pgsize === 0) break;
    const done = unmapPages(domain, at, pgsize, pgsizeCount, gather);
    if (done === 0) break;
    at += done;
    unmapped += done;
  }
  return unmapped;
}

/** One gather reused by iommuUnmap (it is synced and emptied before iommuUnmap returns). */
const unmapGather = new IommuIotlbGather();
let unmapGatherBusy = false;

/**
 * Unmap [iova, iova + size) and invalidate before returning (strict). Returns the bytes
 * unmapped, or `'EINVAL'` as iommuUnmapFast.
 *
 * @kernel drivers/iommu/iommu.c iommu_unmap
 */
export function iommuUnmap(domain: IommuDomain, iova: number, size: number): number | "EINVAL" {
  // A driver's sync could, in principle, unmap again; only the outermost call uses the shared one.
  const shared = !unmapGatherBusy;
  const gather = shared ? unmapGather : new IommuIotlbGather();
  unmapGatherBusy = true;
  gather.init();
  const unmapped = iommuUnmapFast(domain, iova, size, gather);
  iommuIotlbSync(domain, gather);
  if (shared) unmapGatherBusy = false;
  const trace = domain.trace;
  if (trace?.active) {
    trace.emit("unmap", {
      domain: domain.id,
      iova,
      size,
      unmapped: unmapped === "EINVAL" ? 0 : unmapped,
    });
  }
  return unmapped;
}

/**
 * Invalidate what `gather` collected, then empty it.
 *
 * @kernel include/linux/iommu.h iommu_iotlb_sync
 */
export function iommuIotlbSync(domain: IommuDomain, gather: IommuIotlbGather): void {
  domain.ops.iotlbSync?.(domain, gather);
  gather.init();
}

/**
 * Add a leaf of `size` bytes at `iova` to `gather`; if it is not adjacent to what is gathered or
 * has another page size, the gathered range is synced first.
 *
 * @kernel include/linux/iommu.h iommu_iotlb_gather_add_page
 */
export function iommuIotlbGatherAddPage(
  domain: IommuDomain,
  gather: IommuIotlbGather,
  iova: number,
  size: number,
): void {
  if ((gather.pgsize !== 0 && gather.pgsize !== size) || gather.isDisjoint(iova, size)) {
    iommuIotlbSync(domain, gather);
  }
  gather.pgsize = size;
  gather.addRange(iova, size);
}

/** @kernel include/linux/iommu.h iommu_flush_iotlb_all */
export function iommuFlushIotlbAll(domain: IommuDomain): void {
  domain.ops.flushIotlbAll?.(domain);
}

/**
 * The physical address `iova` translates to in `domain`: itself for identity, -1 when nothing is
 * mapped or the domain does not translate.
 *
 * @kernel drivers/iommu/iommu.c iommu_iova_to_phys
 */
export function iommuIovaToPhys(domain: IommuDomain, iova: number): number {
  if (domain.type === IOMMU_DOMAIN_IDENTITY) return iova;
  const f = domain.ops.iovaToPhys;
  return f === undefined ? -1 : f(domain, iova);
}

/** A physically contiguous piece of a scatter list. @kernel include/linux/scatterlist.h scatterlist */
export interface ScatterlistEntry {
  pa: number;
  length: number;
}

/**
 * Map a scatter list back to back from `iova`, merging physically contiguous entries. Returns
 * the bytes mapped, or an errno with nothing left mapped. Every entry but the first must start,
 * and every one but the last must end, on the smallest page size (`'EINVAL'`).
 *
 * @kernel drivers/iommu/iommu.c iommu_map_sg
 */
export function iommuMapSg(
  domain: IommuDomain,
  iova: number,
  sg: readonly ScatterlistEntry[],
  prot: number,
): number | Errno {
  let mapped = 0;
  let start = 0;
  let len = 0;
  for (let i = 0; i <= sg.length; i++) {
    const s = i < sg.length ? sg[i] : null;
    if (s !== null && len !== 0 && start + len === s.pa) {
      len += s.length;
      continue;
    }
    if (len !== 0) {
      const ret = iommuMapNosync(domain, iova + mapped, start, len, prot);
      if (ret !== 0) {
        if (mapped > 0) iommuUnmap(domain, iova, mapped);
        return ret;
      }
      mapped += len;
    }
    if (s !== null) {
      start = s.pa;
      len = s.length;
    }
  }
  const sync = iommuSyncMap(domain, iova, mapped);
  if (sync !== 0) {
    iommuUnmap(domain, iova, mapped);
    return sync;
  }
  return mapped;
}
