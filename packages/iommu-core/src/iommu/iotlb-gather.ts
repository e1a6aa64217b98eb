// The IOTLB gather: the range of leaves an unmap removed, collected so that one invalidation
// covers them all, plus the table frames that may only be freed after that invalidation.

/**
 * @kernel include/linux/iommu.h iommu_iotlb_gather
 */
export class IommuIotlbGather {
  /** First byte of the gathered range (Infinity when empty). */
  start = Number.POSITIVE_INFINITY;
  /** Last byte of the gathered range (inclusive; 0 when empty). */
  end = 0;
  /** The page size the gathered leaves share (0 when none yet). */
  pgsize = 0;
  /** Physical addresses of table frames to free once the invalidation is done. */
  readonly freelist: number[] = [];
  /** Set when the range goes to a flush queue instead of an immediate invalidation. */
  queued = false;

  /** @kernel include/linux/iommu.h iommu_iotlb_gather_init */
  init(): void {
    this.start = Number.POSITIVE_INFINITY;
    this.end = 0;
    this.pgsize = 0;
    // Truncating an array is a builtin call even when it is empty already: skip it then.
    if (this.freelist.length !== 0) this.freelist.length = 0;
    this.queued = false;
  }

  get isEmpty(): boolean {
    return this.end === 0 && this.start === Number.POSITIVE_INFINITY;
  }

  /**
   * Whether [iova, iova + size) neither overlaps nor touches the gathered range, so that adding
   * it would make the invalidation cover addresses nobody unmapped.
   *
   * @kernel include/linux/iommu.h iommu_iotlb_gather_is_disjoint
   */
  isDisjoint(iova: number, size: number): boolean {
    const end = iova + size - 1;
    return this.end !== 0 && (end + 1 < this.start || iova > this.end + 1);
  }

  /** @kernel include/linux/iommu.h iommu_iotlb_gather_add_range */
  addRange(iova: number, size: number): void {
    const end = iova + size - 1;
    if (this.start > iova) this.start = iova;
    if (this.end < end) this.end = end;
  }

  /** Gathered size in bytes (0 when empty). */
  get size(): number {
    return this.isEmpty ? 0 : this.end - this.start + 1;
  }
}
