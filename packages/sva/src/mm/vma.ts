// The VMAs of an address space: sorted, non-overlapping [start, end) ranges with their
// permissions, split and merged as mmap, munmap and mprotect change them.

/**
 * One anonymous private mapping. Immutable: a split or a permission change replaces it.
 *
 * @kernel include/linux/mm_types.h vm_area_struct
 */
export interface Vma {
  readonly start: number;
  readonly end: number;
  /** VM_READ | VM_WRITE | VM_EXEC. */
  readonly flags: number;
}

function vma(start: number, end: number, flags: number): Vma {
  return Object.freeze({ start, end, flags });
}

/**
 * The sorted VMA list (the kernel's maple tree, as an array). Adjacent VMAs with equal flags are
 * always merged, as vma_merge does for anonymous mappings with compatible anon_vmas.
 *
 * @kernel mm/vma.c vma_merge_new_range
 */
export class VmaList {
  /** Sorted by address, non-overlapping, never two mergeable neighbours. */
  readonly items: Vma[] = [];

  /** Index of the first VMA ending above `addr` (items.length if none). */
  indexAfter(addr: number): number {
    const items = this.items;
    let lo = 0;
    let hi = items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (items[mid].end <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The VMA containing `addr`, or null. @kernel mm/mmap.c find_vma */
  find(addr: number): Vma | null {
    const v = this.items[this.indexAfter(addr)];
    return v !== undefined && v.start <= addr ? v : null;
  }

  /** Whether some VMA overlaps [start, end). @kernel include/linux/mm.h find_vma_intersection */
  intersects(start: number, end: number): boolean {
    const v = this.items[this.indexAfter(start)];
    return v !== undefined && v.start < end;
  }

  /**
   * The lowest `base`-or-above start of a free gap of `length` bytes ending at or below `limit`,
   * or -1.
   */
  lowestGap(base: number, length: number, limit: number): number {
    let cand = base;
    for (let i = this.indexAfter(base); i < this.items.length; i++) {
      const v = this.items[i];
      if (v.start >= cand + length) break;
      if (v.end > cand) cand = v.end;
    }
    return cand + length <= limit ? cand : -1;
  }

  /** Add [start, end) (which must be free), merging with equal neighbours. */
  insert(start: number, end: number, flags: number): void {
    const i = this.indexAfter(start);
    this.items.splice(i, 0, vma(start, end, flags));
    this.mergeAround(i);
  }

  /** Take [start, end) out of every VMA, splitting those it cuts. Whether anything was mapped. */
  remove(start: number, end: number): boolean {
    const items = this.items;
    const i = this.indexAfter(start);
    let j = i;
    const keep: Vma[] = [];
    while (j < items.length && items[j].start < end) {
      const v = items[j];
      if (v.start < start) keep.push(vma(v.start, start, v.flags));
      if (v.end > end) keep.push(vma(end, v.end, v.flags));
      j++;
    }
    if (j === i) return false;
    items.splice(i, j - i, ...keep);
    return true;
  }

  /**
   * Give [start, end) the permissions `flags`, splitting the VMAs at the boundaries and merging
   * equal neighbours; the range must be fully mapped.
   */
  setFlags(start: number, end: number, flags: number): void {
    const items = this.items;
    const i = this.indexAfter(start);
    let j = i;
    const parts: Vma[] = [];
    while (j < items.length && items[j].start < end) {
      const v = items[j];
      if (v.start < start) parts.push(vma(v.start, start, v.flags));
      parts.push(vma(Math.max(v.start, start), Math.min(v.end, end), flags));
      if (v.end > end) parts.push(vma(end, v.end, v.flags));
      j++;
    }
    items.splice(i, j - i, ...parts);
    // Merge within the changed run and with the neighbours on both sides.
    for (let k = Math.min(i + parts.length, items.length - 1); k >= Math.max(i - 1, 0); k--) {
      this.mergeAround(k);
    }
  }

  /** Merge items[i] with its neighbours where they touch and have equal flags. */
  private mergeAround(i: number): void {
    const items = this.items;
    let k = i;
    if (k > 0 && k < items.length) {
      const p = items[k - 1];
      const v = items[k];
      if (p.end === v.start && p.flags === v.flags) {
        items.splice(k - 1, 2, vma(p.start, v.end, v.flags));
        k--;
      }
    }
    if (k + 1 < items.length) {
      const v = items[k];
      const n = items[k + 1];
      if (v.end === n.start && v.flags === n.flags)
        items.splice(k, 2, vma(v.start, n.end, v.flags));
    }
  }

  clear(): void {
    this.items.length = 0;
  }
}
