// The DMA API on an IOMMU: IOVA allocation, map/unmap of pages and scatter lists on a device's
// default domain, strict or lazy (flush queue) invalidation, and DMA with a kernel-owned PASID.

import type { Device } from "../device/device.js";
import { ffs53 } from "../platform/u64.js";
import { IOMMU_READ, IOMMU_WRITE } from "./io-pgtable.js";
import { IOMMU_DOMAIN_DMA_FQ, type IommuDomain } from "./iommu-domain.js";
import {
  iommuIotlbSync,
  iommuMap,
  iommuMapSg,
  iommuUnmapFast,
  type ScatterlistEntry,
} from "./iommu-map.js";
import { IommuIotlbGather } from "./iotlb-gather.js";
import { IovaDomain } from "./iova.js";
import {
  iommuAllocGlobalPasidOrErrno,
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuFreeGlobalPasid,
} from "./pasid.js";

/** Direction of a DMA mapping. @kernel include/linux/dma-direction.h dma_data_direction */
export const DMA_BIDIRECTIONAL = 0;
export const DMA_TO_DEVICE = 1;
export const DMA_FROM_DEVICE = 2;

/**
 * Slots of a flush queue's ring. One slot stays empty, so the queue flushes when an unmap finds
 * 255 entries waiting. @kernel drivers/iommu/dma-iommu.c IOVA_DEFAULT_FQ_SIZE
 */
export const IOVA_DEFAULT_FQ_SIZE = 256;
/**
 * Logical-clock ticks after which a non-empty flush queue flushes (10 ms in the kernel, with the
 * convention that one tick is one microsecond).
 *
 * @kernel drivers/iommu/dma-iommu.c IOVA_DEFAULT_FQ_TIMEOUT
 */
export const IOVA_DEFAULT_FQ_TIMEOUT = 10_000;

/** @kernel drivers/iommu/dma-iommu.c dma_info_to_prot */
export function dmaInfoToProt(dir: number): number {
  switch (dir) {
    case DMA_TO_DEVICE:
      return IOMMU_READ;
    case DMA_FROM_DEVICE:
      return IOMMU_WRITE;
    default:
      return IOMMU_READ | IOMMU_WRITE;
  }
}

/** One unmapped range waiting for the flush that makes its IOVA reusable. @kernel drivers/iommu/dma-iommu.c iova_fq_entry */
interface FqEntry {
  pfn: number;
  pages: number;
  /** The flush-start count when queued: the entry is safe once a flush started later finished. */
  counter: number;
  freelist: number[];
}

/**
 * The flush queue of a lazy (DMA-FQ) domain: unmapped IOVAs are held back until one IOTLB flush
 * of the whole domain covers them all, triggered when the queue fills or its timer expires.
 *
 * @kernel drivers/iommu/dma-iommu.c iova_fq
 */
export class FlushQueue {
  readonly size: number;
  readonly timeout: number;
  private readonly entries: FqEntry[] = [];
  private flushStart = 0;
  private flushFinish = 0;
  private timer = -1;
  /** Domain-wide flushes issued. */
  flushes = 0;

  constructor(
    private readonly cookie: IommuDmaCookie,
    size = IOVA_DEFAULT_FQ_SIZE,
    timeout = IOVA_DEFAULT_FQ_TIMEOUT,
  ) {
    this.size = size;
    this.timeout = timeout;
  }

  /** Entries waiting. */
  get length(): number {
    return this.entries.length;
  }

  /** Release every entry a finished flush covers. @kernel drivers/iommu/dma-iommu.c fq_ring_free_locked */
  private ringFree(): void {
    let n = 0;
    while (n < this.entries.length && this.entries[n].counter < this.flushFinish) n++;
    if (n === 0) return;
    const done = this.entries.splice(0, n);
    for (const e of done) this.cookie.releaseIova(e.pfn, e.pages, e.freelist);
  }

  /** @kernel drivers/iommu/dma-iommu.c fq_flush_iotlb */
  private flushIotlb(): void {
    this.flushStart++;
    this.cookie.domain.ops.flushIotlbAll?.(this.cookie.domain);
    this.flushes++;
    this.flushFinish++;
  }

  /**
   * Hold back [pfn, pfn + pages) (and the table frames in `freelist`) until a flush.
   *
   * @kernel drivers/iommu/dma-iommu.c queue_iova
   */
  queue(pfn: number, pages: number, freelist: number[]): void {
    this.ringFree();
    // The kernel's ring keeps one of its `size` slots empty (fq_full: tail + 1 == head).
    if (this.entries.length >= this.size - 1) {
      this.flushIotlb();
      this.ringFree();
    }
    this.entries.push({ pfn, pages, counter: this.flushStart, freelist });
    if (this.timer < 0) {
      const clock = this.cookie.clock;
      if (clock !== null)
        this.timer = clock.schedule(clock.now + this.timeout, () => this.expire());
    }
  }

  /** The timer fired: flush and release everything. @kernel drivers/iommu/dma-iommu.c fq_flush_timeout */
  expire(): void {
    this.timer = -1;
    this.flushIotlb();
    this.ringFree();
  }

  /** Flush now and release everything (domain teardown). @kernel drivers/iommu/dma-iommu.c iommu_dma_free_fq */
  drain(): void {
    if (this.timer >= 0) this.cookie.clock?.cancel(this.timer);
    this.timer = -1;
    if (this.entries.length === 0) return;
    this.flushIotlb();
    this.ringFree();
  }
}

/**
 * The DMA-API state of a DMA domain.
 *
 * @kernel drivers/iommu/dma-iommu.c iommu_dma_cookie
 */
export class IommuDmaCookie {
  readonly domain: IommuDomain;
  iovad: IovaDomain | null = null;
  fq: FlushQueue | null = null;
  constructor(domain: IommuDomain) {
    this.domain = domain;
  }

  get clock() {
    return this.domain.clock;
  }

  /** Give an IOVA range back to the allocator after its invalidation, and free table frames. */
  releaseIova(pfn: number, pages: number, freelist: number[]): void {
    this.iovad?.freeIovaFast(pfn, pages);
    if (freelist.length > 0) this.domain.ops.freeTables?.(this.domain, freelist);
  }
}

/** @kernel drivers/iommu/dma-iommu.c iommu_get_dma_cookie */
export function iommuGetDmaCookie(domain: IommuDomain): void {
  if (domain.iovaCookie === null) domain.iovaCookie = new IommuDmaCookie(domain);
}

/** @kernel drivers/iommu/dma-iommu.c iommu_put_dma_cookie */
export function iommuPutDmaCookie(domain: IommuDomain): void {
  const cookie = domain.iovaCookie as IommuDmaCookie | null;
  if (cookie === null) return;
  cookie.fq?.drain();
  cookie.iovad?.putIovaDomain();
  domain.iovaCookie = null;
}

/**
 * Set up the IOVA allocator (granule: the domain's smallest page; base: the aperture start, never
 * page 0) and, for a lazy domain, its flush queue. Done on first use.
 *
 * @kernel drivers/iommu/dma-iommu.c iommu_dma_init_domain
 */
export function iommuDmaInitDomain(domain: IommuDomain): IommuDmaCookie | "ENODEV" | "EINVAL" {
  const cookie = domain.iovaCookie as IommuDmaCookie | null;
  if (cookie === null || !domain.isDma) return "ENODEV";
  if (cookie.iovad !== null) return cookie;
  const order = ffs53(domain.pgsizeBitmap);
  if (order < 0) return "EINVAL";
  const granule = 2 ** order;
  const basePfn = Math.max(1, Math.floor(domain.geometry.apertureStart / granule));
  cookie.iovad = new IovaDomain(granule, basePfn);
  if (domain.type === IOMMU_DOMAIN_DMA_FQ) cookie.fq = new FlushQueue(cookie);
  return cookie;
}

/** The domain the DMA API uses for `dev` (the default domain). @kernel drivers/iommu/iommu.c iommu_get_dma_domain */
export function iommuGetDmaDomain(dev: Device): IommuDomain | null {
  return dev.iommu?.group?.defaultDomain ?? null;
}

const DMA_BIT_MASK_32 = 0xffffffff;

/**
 * Allocate `size` bytes (granule multiple) of IOVA below the device's DMA mask and the aperture.
 * A PCI device with a mask wider than 32 bits first gets a 32-bit address while any are left.
 *
 * @kernel drivers/iommu/dma-iommu.c iommu_dma_alloc_iova
 */
function allocIova(cookie: IommuDmaCookie, dev: Device, size: number, dmaLimit: number): number {
  const iovad = cookie.iovad as IovaDomain;
  const shift = iovad.iovaShift;
  const len = size / 2 ** shift;
  let limit = dmaLimit;
  const geometry = cookie.domain.geometry;
  if (geometry.forceAperture && geometry.apertureEnd < limit) limit = geometry.apertureEnd;
  const param = dev.iommu;
  if (limit > DMA_BIT_MASK_32 && param !== null && param.pci32bitWorkaround) {
    const pfn = iovad.allocIovaFast(len, Math.floor(DMA_BIT_MASK_32 / 2 ** shift), false);
    if (pfn !== 0) return pfn * 2 ** shift;
    param.pci32bitWorkaround = false;
  }
  const pfn = iovad.allocIovaFast(len, Math.floor(limit / 2 ** shift), true);
  return pfn * 2 ** shift;
}

function cookieFor(dev: Device): IommuDmaCookie | "ENODEV" | "EINVAL" {
  const domain = iommuGetDmaDomain(dev);
  if (domain === null || !domain.isDma) return "ENODEV";
  return iommuDmaInitDomain(domain);
}

/**
 * Map `size` bytes at physical `pa` for DMA by `dev`; returns the DMA (IO virtual) address, which
 * has the same offset within its granule as `pa`. `'ENODEV'` when the device's default domain is
 * not a DMA domain (identity: use `pa` itself); `'ENOMEM'` when no IOVA space is left; the map's
 * errnos. The kernel folds every failure into DMA_MAPPING_ERROR.
 *
 * @kernel drivers/iommu/dma-iommu.c iommu_dma_map_phys
 */
export function iommuDmaMapPhys(
  dev: Device,
  pa: number,
  size: number,
  dir: number,
): number | "ENODEV" | "EINVAL" | "ENOMEM" | "EEXIST" | "ERANGE" {
  const cookie = cookieFor(dev);
  if (typeof cookie === "string") return cookie;
  if (size <= 0) return "EINVAL";
  const iovad = cookie.iovad as IovaDomain;
  const off = iovad.iovaOffset(pa);
  const len = iovad.iovaAlign(size + off);
  const iova = allocIova(cookie, dev, len, dev.iommu?.dmaMask ?? 2 ** 64);
  if (iova === 0) return "ENOMEM";
  const ret = iommuMap(cookie.domain, iova, pa - off, len, dmaInfoToProt(dir));
  if (ret !== 0) {
    iovad.freeIovaFast(iova / 2 ** iovad.iovaShift, len / 2 ** iovad.iovaShift);
    return ret === "ENOMEM" || ret === "EEXIST" || ret === "ERANGE" || ret === "EINVAL"
      ? ret
      : "ENOMEM";
  }
  return iova + off;
}

/** The gather of one DMA unmap; reused, as the DMA path must not allocate. */
const dmaGather = new IommuIotlbGather();

/**
 * Unmap what iommuDmaMapPhys returned. In a strict domain the IOTLB is invalidated before this
 * returns and the IOVA is free at once; in a lazy one the IOVA waits in the flush queue.
 * `'ENODEV'` as for map; `'EINVAL'` when the range was not (entirely) mapped.
 *
 * @kernel drivers/iommu/dma-iommu.c __iommu_dma_unmap
 */
export function iommuDmaUnmapPhys(
  dev: Device,
  dmaAddr: number,
  size: number,
  _dir: number,
): 0 | "ENODEV" | "EINVAL" {
  const cookie = cookieFor(dev);
  if (typeof cookie === "string") return cookie;
  const iovad = cookie.iovad as IovaDomain;
  const off = iovad.iovaOffset(dmaAddr);
  const iova = dmaAddr - off;
  const len = iovad.iovaAlign(size + off);
  const gather = dmaGather;
  gather.init();
  gather.queued = cookie.fq !== null;
  const unmapped = iommuUnmapFast(cookie.domain, iova, len, gather);
  const shift = iovad.iovaShift;
  if (!gather.queued) {
    iommuIotlbSync(cookie.domain, gather);
    if (unmapped === len) cookie.releaseIova(iova / 2 ** shift, len / 2 ** shift, []);
  } else if (unmapped === len) {
    (cookie.fq as FlushQueue).queue(iova / 2 ** shift, len / 2 ** shift, gather.freelist.slice());
  }
  return unmapped === len ? 0 : "EINVAL";
}

/**
 * Map a scatter list into one contiguous IOVA range, each entry padded to the granule; returns
 * the DMA address of each entry, or an errno with nothing mapped.
 *
 * @kernel drivers/iommu/dma-iommu.c iommu_dma_map_sg
 */
export function iommuDmaMapSg(
  dev: Device,
  sg: readonly ScatterlistEntry[],
  dir: number,
): number[] | "ENODEV" | "EINVAL" | "ENOMEM" {
  const cookie = cookieFor(dev);
  if (typeof cookie === "string") return cookie;
  if (sg.length === 0) return "EINVAL";
  const iovad = cookie.iovad as IovaDomain;
  const padded: ScatterlistEntry[] = [];
  let total = 0;
  for (const s of sg) {
    if (s.length <= 0) return "EINVAL";
    const off = iovad.iovaOffset(s.pa);
    const len = iovad.iovaAlign(s.length + off);
    padded.push({ pa: s.pa - off, length: len });
    total += len;
  }
  const iova = allocIova(cookie, dev, total, dev.iommu?.dmaMask ?? 2 ** 64);
  if (iova === 0) return "ENOMEM";
  const mapped = iommuMapSg(cookie.domain, iova, padded, dmaInfoToProt(dir));
  if (typeof mapped === "string") {
    iovad.freeIovaFast(iova / 2 ** iovad.iovaShift, total / 2 ** iovad.iovaShift);
    return mapped === "EINVAL" ? "EINVAL" : "ENOMEM";
  }
  const out: number[] = [];
  let at = iova;
  for (let i = 0; i < sg.length; i++) {
    out.push(at + iovad.iovaOffset(sg[i].pa));
    at += padded[i].length;
  }
  return out;
}

/**
 * Unmap a scatter list mapped by iommuDmaMapSg (given its DMA addresses).
 *
 * @kernel drivers/iommu/dma-iommu.c iommu_dma_unmap_sg
 */
export function iommuDmaUnmapSg(
  dev: Device,
  sg: readonly ScatterlistEntry[],
  dmaAddrs: readonly number[],
  dir: number,
): 0 | "ENODEV" | "EINVAL" {
  if (sg.length === 0 || dmaAddrs.length !== sg.length) return "EINVAL";
  const cookie = cookieFor(dev);
  if (typeof cookie === "string") return cookie;
  const iovad = cookie.iovad as IovaDomain;
  const start = dmaAddrs[0];
  const last = sg.length - 1;
  const end = iovad.iovaAlign(dmaAddrs[last] + sg[last].length);
  return iommuDmaUnmapPhys(dev, start, end - start, dir);
}

/**
 * Let `dev` issue DMA-API traffic tagged with a PASID (work submitted with ENQCMDS): a global
 * PASID, never charged, with the default domain attached at it. Returns the PASID; `'EBUSY'` when
 * one is enabled already; `'ENODEV'` without a DMA domain or PASID support; attach errnos.
 *
 * @kernel drivers/dma/idxd/init.c idxd_enable_system_pasid
 */
export function iommuDmaEnablePasid(
  dev: Device,
): number | "EBUSY" | "ENODEV" | "ENOSPC" | "EINVAL" | "EOPNOTSUPP" | "ENOMEM" {
  const param = dev.iommu;
  if (param === null) return "ENODEV";
  if (param.dmaPasid !== 0) return "EBUSY";
  const domain = iommuGetDmaDomain(dev);
  if (domain === null) return "ENODEV";
  const pasid = iommuAllocGlobalPasidOrErrno(dev);
  if (typeof pasid === "string") return pasid;
  const ret = iommuAttachDevicePasid(domain, dev, pasid);
  if (ret !== 0) {
    iommuFreeGlobalPasid(param.subsys, pasid);
    return ret;
  }
  param.dmaPasid = pasid;
  return pasid;
}

/**
 * Stop DMA-API traffic with the PASID: detach the default domain from it, then free the PASID,
 * in that order so that it cannot be reused while still attached. `'EINVAL'` when none is enabled.
 *
 * @kernel drivers/dma/idxd/init.c idxd_disable_system_pasid
 */
export function iommuDmaDisablePasid(dev: Device): 0 | "EINVAL" | "ENODEV" {
  const param = dev.iommu;
  if (param === null) return "ENODEV";
  if (param.dmaPasid === 0) return "EINVAL";
  const domain = iommuGetDmaDomain(dev);
  if (domain !== null) iommuDetachDevicePasid(domain, dev, param.dmaPasid);
  iommuFreeGlobalPasid(param.subsys, param.dmaPasid);
  param.dmaPasid = 0;
  return 0;
}
