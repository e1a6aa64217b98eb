// An xarray in allocating mode: a sparse map from 32-bit IDs to values that can hand out free IDs.

import { IdBitmap } from "./internal/id-bitmap.js";
import { ValuePages } from "./internal/value-pages.js";

/** The highest index an {@link IdMap} holds: the 32-bit limit of `xa_limit_32b`. */
export const XA_LIMIT_MAX = 0xffffffff;

/**
 * Bounds of an allocation, both inclusive (the kernel's `struct xa_limit`). Defaults: 0 and
 * {@link XA_LIMIT_MAX}.
 */
export interface XaLimit {
  readonly min?: number;
  readonly max?: number;
}

/** The cursor of cyclic allocation (the `u32 *next` the kernel's caller keeps). */
export interface CyclicCursor {
  /** Where the next search starts. */
  next: number;
  /** True when the last allocation through this cursor wrapped back to `min`. */
  wrapped: boolean;
}

function isIndex(id: number): boolean {
  return id >>> 0 === id;
}

/**
 * A sparse ID → value map with the allocating xarray's semantics: an ID is in use from the moment
 * a value is stored or allocated at it until it is erased, whatever the value (storing
 * `undefined` keeps the ID reserved, as storing NULL does in an allocating xarray). Iteration is in
 * ascending ID order. IDs are integers in [0, 2^32-1].
 *
 * @kernel include/linux/xarray.h XA_FLAGS_ALLOC
 */
export class IdMap<T> {
  private readonly used = new IdBitmap();
  private readonly values = new ValuePages<T>();
  /** The map's own cursor, used by {@link IdMap.allocCyclic} when the caller passes none. */
  readonly cursor: CyclicCursor = { next: 0, wrapped: false };
  /** The cursor ran past 2^32-1: the next cyclic allocation counts as wrapped. */
  private wrapPending = false;

  /**
   * The value at `id`, or `undefined` when the ID is free (or holds `undefined`).
   * @kernel lib/xarray.c xa_load
   */
  load(id: number): T | undefined {
    return isIndex(id) ? this.values.get(id) : undefined;
  }

  /** True when `id` is in use. */
  has(id: number): boolean {
    return isIndex(id) && this.used.test(id);
  }

  /**
   * Store `value` at `id`, replacing any value there; the ID becomes used.
   *
   * @returns 0; `'EINVAL'` when `id` is not an integer in [0, 2^32-1].
   * @kernel lib/xarray.c xa_store
   */
  store(id: number, value: T): 0 | "EINVAL" {
    if (!isIndex(id)) return "EINVAL";
    if (this.used.test(id)) {
      this.values.replace(id, value);
    } else {
      this.used.set(id);
      this.values.add(id, value);
    }
    return 0;
  }

  /**
   * Free `id`, returning the value it held (`undefined` when it was free: not an error, as in
   * the kernel).
   * @kernel lib/xarray.c xa_erase
   */
  erase(id: number): T | undefined {
    if (!isIndex(id) || !this.used.clear(id)) return undefined;
    return this.values.remove(id);
  }

  /**
   * Store `value` at the lowest free ID in [`min`, `max`].
   *
   * @returns the ID; `'EBUSY'` when every ID in the limit is used (the xarray's errno for a full
   *   range); `'EINVAL'` when a bound is not an integer in [0, 2^32-1] or `min > max`.
   * @kernel lib/xarray.c xa_alloc
   */
  alloc(value: T, limit?: XaLimit): number | "EBUSY" | "EINVAL" {
    const min = limit?.min ?? 0;
    const max = limit?.max ?? XA_LIMIT_MAX;
    if (!isIndex(min) || !isIndex(max) || min > max) return "EINVAL";
    const id = this.used.alloc(min, max);
    if (id < 0) return "EBUSY";
    this.values.add(id, value);
    return id;
  }

  /**
   * Store `value` at the lowest free ID at or after the cursor, wrapping around to `min` when
   * the top of the limit is reached, so recently freed IDs are not handed out again at once.
   * On success the cursor moves past the ID, and `cursor.wrapped` tells whether this allocation
   * wrapped (the kernel returns 1 then).
   *
   * @returns the ID; `'EBUSY'` when the limit is full; `'EINVAL'` for bad bounds or cursor.
   * @kernel lib/xarray.c __xa_alloc_cyclic
   */
  allocCyclic(
    value: T,
    limit?: XaLimit,
    cursor: CyclicCursor = this.cursor,
  ): number | "EBUSY" | "EINVAL" {
    const min = limit?.min ?? 0;
    const max = limit?.max ?? XA_LIMIT_MAX;
    if (!isIndex(min) || !isIndex(max) || min > max || !isIndex(cursor.next)) return "EINVAL";
    const start = Math.max(min, cursor.next);
    let id = start <= max ? this.used.alloc(start, max) : -1;
    let wrapped = false;
    if (id >= 0) {
      wrapped = this.wrapPending;
      this.wrapPending = false;
    } else if (start > min) {
      id = this.used.alloc(min, max);
      wrapped = true;
    }
    if (id < 0) return "EBUSY";
    this.values.add(id, value);
    if (id === XA_LIMIT_MAX) {
      // The cursor wraps past the top of the 32-bit space; the next allocation reports it.
      cursor.next = 0;
      this.wrapPending = true;
    } else {
      cursor.next = id + 1;
    }
    cursor.wrapped = wrapped;
    return id;
  }

  /** The lowest used ID at or above `from`, or -1 when there is none. */
  nextId(from = 0): number {
    if (!(from >= 0)) from = 0;
    from = Math.ceil(from);
    if (from > XA_LIMIT_MAX) return -1;
    return this.used.findSet(from);
  }

  /** The used IDs at or above `from` with their values, in ascending ID order. */
  *entries(from = 0): IterableIterator<[number, T]> {
    for (let id = this.nextId(from); id >= 0; id = this.nextId(id + 1)) {
      yield [id, this.values.get(id) as T];
    }
  }

  /** The used IDs at or above `from`, in ascending order. */
  *keys(from = 0): IterableIterator<number> {
    for (let id = this.nextId(from); id >= 0; id = this.nextId(id + 1)) yield id;
  }

  [Symbol.iterator](): IterableIterator<[number, T]> {
    return this.entries(0);
  }

  /** The number of used IDs. */
  get size(): number {
    return this.used.count;
  }

  /** @kernel include/linux/xarray.h xa_empty */
  isEmpty(): boolean {
    return this.used.count === 0;
  }

  /**
   * Erase everything; the map stays usable and its own cursor restarts at 0.
   * @kernel lib/xarray.c xa_destroy
   */
  destroy(): void {
    this.used.reset();
    this.values.clear();
    this.cursor.next = 0;
    this.cursor.wrapped = false;
    this.wrapPending = false;
  }
}
