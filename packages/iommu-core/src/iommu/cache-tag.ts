// Cache tags: for each domain, the list of hardware caches (an IOMMU's IOTLB under some tag, a
// device's ATC) that must be invalidated when its mappings change.

import type { Device } from "../device/device.js";
import type { IommuDevice } from "./iommu-ops.js";

/** Kinds of cache a tag names. @kernel drivers/iommu/intel/iommu.h cache_tag_type */
export const CACHE_TAG_IOTLB = 0;
export const CACHE_TAG_DEVTLB = 1;
export const CACHE_TAG_NESTING_IOTLB = 2;
export const CACHE_TAG_NESTING_DEVTLB = 3;

/** Whether a tag kind names a device's ATC (and therefore is per device). */
export function cacheTagIsDevtlb(kind: number): boolean {
  return kind === CACHE_TAG_DEVTLB || kind === CACHE_TAG_NESTING_DEVTLB;
}

/**
 * One cache to invalidate: on `iommu`, entries tagged `id` (VT-d domain ID, SMMU ASID or VMID) and
 * `pasid` (-1 when the tag has none); for device-TLB kinds, the ATC of `dev`.
 *
 * @kernel drivers/iommu/intel/iommu.h cache_tag
 */
export class CacheTag {
  constructor(
    readonly kind: number,
    readonly iommu: IommuDevice,
    readonly id: number,
    readonly pasid: number,
    readonly dev: Device | null,
  ) {}
  /** Attachments using the tag. */
  users = 1;
}

/** How a driver invalidates the cache one tag names. */
export interface CacheTagFlusher {
  /** Invalidate [start, end] (inclusive byte addresses); `leaf`: only leaf entries changed. */
  flushRange(tag: CacheTag, start: number, end: number, leaf: boolean): void;
  /** Invalidate everything under the tag. */
  flushAll(tag: CacheTag): void;
  /** Called once per IOMMU after its tags of one flush were issued (invalidation wait, CMD_SYNC). */
  commit?(iommu: IommuDevice): void;
}

/**
 * A domain's cache tags. IOTLB tags come first and device-TLB tags last, so that walking the list
 * invalidates a device's ATC only after the IOTLB it would refill from.
 *
 * @kernel drivers/iommu/intel/cache.c cache_tag_assign
 */
export class CacheTagList {
  readonly tags: CacheTag[] = [];

  private indexOf(
    kind: number,
    iommu: IommuDevice,
    id: number,
    pasid: number,
    dev: Device | null,
  ): number {
    const devtlb = cacheTagIsDevtlb(kind);
    for (let i = 0; i < this.tags.length; i++) {
      const t = this.tags[i];
      if (t.kind === kind && t.iommu === iommu && t.id === id && t.pasid === pasid) {
        if (!devtlb || t.dev === dev) return i;
      }
    }
    return -1;
  }

  /**
   * Take a reference on the tag (creating it when new). `'EINVAL'` for a device-TLB tag without a
   * device.
   *
   * @kernel drivers/iommu/intel/cache.c cache_tag_assign
   */
  assign(
    kind: number,
    iommu: IommuDevice,
    id: number,
    pasid: number,
    dev: Device | null,
  ): 0 | "EINVAL" {
    const devtlb = cacheTagIsDevtlb(kind);
    if (devtlb && dev === null) return "EINVAL";
    const i = this.indexOf(kind, iommu, id, pasid, dev);
    if (i >= 0) {
      this.tags[i].users++;
      return 0;
    }
    const tag = new CacheTag(kind, iommu, id, pasid, devtlb ? dev : null);
    if (devtlb) this.tags.push(tag);
    else this.tags.unshift(tag);
    return 0;
  }

  /**
   * Drop a reference; the tag goes away with its last user. `'ENOENT'` when there is no such tag.
   *
   * @kernel drivers/iommu/intel/cache.c cache_tag_unassign
   */
  unassign(
    kind: number,
    iommu: IommuDevice,
    id: number,
    pasid: number,
    dev: Device | null,
  ): 0 | "ENOENT" {
    const i = this.indexOf(kind, iommu, id, pasid, dev);
    if (i < 0) return "ENOENT";
    const tag = this.tags[i];
    if (--tag.users === 0) this.tags.splice(i, 1);
    return 0;
  }

  /** The tag with this key, or undefined. */
  find(
    kind: number,
    iommu: IommuDevice,
    id: number,
    pasid: number,
    dev: Device | null,
  ): CacheTag | undefined {
    const i = this.indexOf(kind, iommu, id, pasid, dev);
    return i < 0 ? undefined : this.tags[i];
  }

  get size(): number {
    return this.tags.length;
  }

  /**
   * Invalidate [start, end] under every tag, then commit once per IOMMU touched.
   *
   * @kernel drivers/iommu/intel/cache.c cache_tag_flush_range
   */
  flushRange(flusher: CacheTagFlusher, start: number, end: number, leaf: boolean): void {
    for (let i = 0; i < this.tags.length; i++) flusher.flushRange(this.tags[i], start, end, leaf);
    this.commit(flusher);
  }

  /**
   * Invalidate everything under every tag, then commit once per IOMMU touched.
   *
   * @kernel drivers/iommu/intel/cache.c cache_tag_flush_all
   */
  flushAll(flusher: CacheTagFlusher): void {
    for (let i = 0; i < this.tags.length; i++) flusher.flushAll(this.tags[i]);
    this.commit(flusher);
  }

  private commit(flusher: CacheTagFlusher): void {
    const commit = flusher.commit;
    if (commit === undefined) return;
    for (let i = 0; i < this.tags.length; i++) {
      const iommu = this.tags[i].iommu;
      let seen = false;
      for (let j = 0; j < i; j++) {
        if (this.tags[j].iommu === iommu) {
          seen = true;
          break;
        }
      }
      if (!seen) commit.call(flusher, iommu);
    }
  }
}
