// The IDA: an allocator of small integer IDs that always hands out the lowest free one.

import { type BitmapMemory, IdBitmap } from "./internal/id-bitmap.js";

/** The highest ID an IDA hands out (INT_MAX), as the kernel's `ida_alloc_range` caps `max`. */
export const IDA_MAX = 0x7fffffff;

/** The bounds of one allocation, both inclusive. */
export interface IdaRange {
  /** Lowest acceptable ID; defaults to 0. */
  readonly min?: number;
  /** Highest acceptable ID; defaults to {@link IDA_MAX}. Values above it are capped to it. */
  readonly max?: number;
}

/** Memory an {@link Ida} holds, as measured by {@link Ida.memory}. */
export type IdaMemory = BitmapMemory;

/**
 * An ID allocator with the kernel IDA's contract: `alloc` returns the lowest free ID in the
 * requested range. IDs live in [0, {@link IDA_MAX}].
 *
 * Storage is a hierarchical bitmap, so the lowest free ID costs a few word scans: flat words
 * with summary levels for the dense low IDs (a window that doubles as allocation reaches its end,
 * up to 2^20 IDs), and above it a sparse radix tree of 1024-bit leaves under 32-way nodes (the
 * shape of the kernel's IDA), so a huge range holding few IDs costs little memory. Nothing is
 * allocated per call once the structure has grown to its working size.
 *
 * @kernel lib/idr.c ida_alloc_range
 */
export class Ida {
  private readonly bits = new IdBitmap();

  /**
   * Allocate the lowest free ID in [`min`, `max`] (defaults 0 and {@link IDA_MAX}).
   *
   * @returns the ID; `'ENOSPC'` when every ID in the range is taken; `'EINVAL'` when the range is
   *   empty (`min > max`) or a bound is not an integer in range (`min` in [0, IDA_MAX], `max` in
   *   [0, 2^32-1], a `max` above IDA_MAX being capped as the kernel does).
   * @kernel lib/idr.c ida_alloc_range
   */
  alloc(range?: IdaRange): number | "ENOSPC" | "EINVAL" {
    return this.allocRange(range?.min ?? 0, range?.max ?? IDA_MAX);
  }

  /**
   * Positional form of {@link Ida.alloc}, for hot paths: no options object.
   *
   * @returns the ID, `'ENOSPC'` or `'EINVAL'` (see {@link Ida.alloc}).
   * @kernel lib/idr.c ida_alloc_range
   */
  allocRange(min: number, max: number): number | "ENOSPC" | "EINVAL" {
    // `x >>> 0 === x` holds exactly for integers in [0, 2^32).
    if (min >>> 0 !== min || max >>> 0 !== max || min > IDA_MAX) return "EINVAL";
    if (max > IDA_MAX) max = IDA_MAX;
    if (min > max) return "EINVAL";
    const id = this.bits.alloc(min, max);
    return id < 0 ? "ENOSPC" : id;
  }

  /**
   * Release `id`.
   *
   * @returns 0; `'ENOENT'` when `id` is not allocated (the kernel WARNs there); `'EINVAL'` when
   *   `id` is not an integer in [0, IDA_MAX].
   * @kernel lib/idr.c ida_free
   */
  free(id: number): 0 | "ENOENT" | "EINVAL" {
    if (id >>> 0 !== id || id > IDA_MAX) return "EINVAL";
    return this.bits.clear(id) ? 0 : "ENOENT";
  }

  /** True when `id` is allocated. */
  has(id: number): boolean {
    return id >>> 0 === id && id <= IDA_MAX && this.bits.test(id);
  }

  /** The number of allocated IDs. */
  get size(): number {
    return this.bits.count;
  }

  /**
   * True when no ID is allocated.
   * @kernel include/linux/idr.h ida_is_empty
   */
  isEmpty(): boolean {
    return this.bits.count === 0;
  }

  /**
   * The lowest allocated ID at or above `from`, or -1 when there is none.
   * @kernel lib/idr.c ida_find_first_range
   */
  nextUsed(from = 0): number {
    if (!(from >= 0)) from = 0;
    from = Math.ceil(from);
    if (from > IDA_MAX) return -1;
    return this.bits.findSet(from);
  }

  /** The allocated IDs at or above `from`, in ascending order. */
  *ids(from = 0): IterableIterator<number> {
    for (
      let id = this.nextUsed(from);
      id >= 0;
      id = id < IDA_MAX ? this.bits.findSet(id + 1) : -1
    ) {
      yield id;
    }
  }

  /** The allocated IDs in ascending order. */
  [Symbol.iterator](): IterableIterator<number> {
    return this.ids(0);
  }

  /**
   * Free every ID and the memory behind them; the IDA stays usable.
   * @kernel lib/idr.c ida_destroy
   */
  destroy(): void {
    this.bits.reset();
  }

  /** Bytes held for the live IDs and reserved by the pools (see the package README). */
  memory(): IdaMemory {
    return this.bits.memory();
  }
}
