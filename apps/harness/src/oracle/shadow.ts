// What each domain's owner mapped, kept next to the hardware: the oracle's reference for check 1.

import { IOMMU_READ, IOMMU_WRITE } from "@iommu-sim/iommu-core";

const PAGE = 4096;

/** What a translation context gives, as the owner set it up. */
export const SHADOW_PAGING = 0;
export const SHADOW_IDENTITY = 1;
export const SHADOW_BLOCKED = 2;

/**
 * The mappings of one domain, by 4 KiB page: physical frame and IOMMU_READ/IOMMU_WRITE, packed in
 * one number (frame * 4 + prot) so a lookup is one Map read. Pages unmapped keep a note of the
 * operation that removed them, for reports, also once they are mapped again.
 */
export class ShadowDomain {
  readonly kind: number;
  /** A name for reports ("domain#3 (DMA)"). */
  readonly label: string;
  /**
   * The domain's table format cannot express write-only pages, so a page mapped IOMMU_WRITE is
   * readable too (x86-64-style first-stage tables: present means readable).
   */
  writeImpliesRead = false;
  private readonly pages = new Map<number, number>();
  private readonly removedBy = new Map<number, string>();
  /** For pages unmapped lazily: the flush-queue flush count at the unmap. */
  private readonly lazyMark = new Map<number, number>();
  /** The invalidation-log mark taken when the operation that removed a page started. */
  private readonly removalSeq = new Map<number, number>();

  constructor(kind: number, label: string) {
    this.kind = kind;
    this.label = label;
  }

  /** Record `size` bytes at `iova` mapped to `pa` with `prot` (page-aligned by the caller). */
  map(iova: number, pa: number, size: number, prot: number): void {
    const first = Math.floor(iova / PAGE);
    const frame = Math.floor(pa / PAGE);
    const n = Math.ceil(size / PAGE);
    const p = prot & (IOMMU_READ | IOMMU_WRITE);
    // The note of the last removal stays: a stale entry of the old mapping may still answer.
    for (let i = 0; i < n; i++) {
      this.pages.set(first + i, (frame + i) * 4 + p);
      this.lazyMark.delete(first + i);
    }
  }

  /**
   * Record `size` bytes at `iova` unmapped by `op` (a description for reports). `fqFlushes`: for
   * a lazy unmap, the domain's flush-queue flush count right after it (the pages may stay cached
   * until that count moves); -1 for a strict one.
   */
  unmap(iova: number, size: number, op: string, fqFlushes = -1, seq = -1): void {
    const first = Math.floor(iova / PAGE);
    const n = Math.ceil(size / PAGE);
    for (let i = 0; i < n; i++) {
      if (this.pages.delete(first + i)) {
        this.removedBy.set(first + i, op);
        this.removalSeq.set(first + i, seq);
        if (fqFlushes >= 0) this.lazyMark.set(first + i, fqFlushes);
        else this.lazyMark.delete(first + i);
      }
    }
  }

  /** The invalidation-log mark of the operation that last removed page `pfn`, or -1. */
  removalMark(pfn: number): number {
    return this.removalSeq.get(pfn) ?? -1;
  }

  /** The flush-queue flush count a lazy unmap of page `pfn` recorded, or -1. */
  lazyFlushMark(pfn: number): number {
    return this.lazyMark.get(pfn) ?? -1;
  }

  /** The IOMMU_READ/IOMMU_WRITE access packed entry `e` grants, after the format's rules. */
  grants(e: number): number {
    const prot = e & 3;
    return this.writeImpliesRead && (prot & IOMMU_WRITE) !== 0 ? prot | IOMMU_READ : prot;
  }

  /** The packed entry of page `pfn` (frame * 4 + prot), or -1. */
  lookup(pfn: number): number {
    return this.pages.get(pfn) ?? -1;
  }

  /** The operation that last removed page `pfn` (mapped again since, or not), if any. */
  removal(pfn: number): string | undefined {
    return this.removedBy.get(pfn);
  }

  get mappedPages(): number {
    return this.pages.size;
  }
}
