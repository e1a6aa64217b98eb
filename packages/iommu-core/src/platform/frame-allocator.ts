// A buddy allocator of physical page frames: where drivers get the frames for their tables and
// queues, with live-frame accounting for leak checks.

import { bug } from "./bug.js";
import { PAGE_SHIFT, PAGE_SIZE, type PhysMemory } from "./phys-memory.js";

/** Largest order a single allocation may have (2^18 frames = 1 GiB), as a generous MAX_PAGE_ORDER. */
export const MAX_ORDER = 18;

export interface FrameAllocatorOptions {
  /** First byte of the managed region (4 KiB aligned). */
  basePa: number;
  /** Bytes in the managed region (a multiple of 4 KiB, at most 2^36). */
  size: number;
}

/**
 * Hands out naturally aligned, zeroed blocks of 2^order frames from one region of `PhysMemory`,
 * splitting and merging buddies like the kernel's page allocator. The memory itself stays sparse:
 * a frame costs host memory only once something writes to it.
 *
 * @kernel mm/page_alloc.c __alloc_pages
 */
export class FrameAllocator {
  readonly mem: PhysMemory;
  readonly basePa: number;
  readonly frameCount: number;
  private readonly basePfn: number;
  /** Per frame: order of the free block that starts here, or -1. */
  private readonly freeOrder: Int8Array;
  /** Per frame: order of the allocated block that starts here, or -1. */
  private readonly allocOrder: Int8Array;
  /** Doubly linked free lists per order, through frame indices (-1 ends a list). */
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private readonly heads: Int32Array;
  private live = 0;
  private allocations = 0;

  constructor(mem: PhysMemory, options: FrameAllocatorOptions) {
    const { basePa, size } = options;
    if (basePa % PAGE_SIZE !== 0 || size % PAGE_SIZE !== 0 || size <= 0 || size > 2 ** 36) {
      bug(`FrameAllocator: region 0x${basePa.toString(16)}+0x${size.toString(16)} is not usable`);
    }
    if (!mem.inRange(basePa, size)) bug("FrameAllocator: region outside the address space");
    this.mem = mem;
    this.basePa = basePa;
    this.basePfn = basePa / PAGE_SIZE;
    const n = size / PAGE_SIZE;
    this.frameCount = n;
    this.freeOrder = new Int8Array(n).fill(-1);
    this.allocOrder = new Int8Array(n).fill(-1);
    this.next = new Int32Array(n).fill(-1);
    this.prev = new Int32Array(n).fill(-1);
    this.heads = new Int32Array(MAX_ORDER + 1).fill(-1);
    // Carve the region into the largest naturally aligned blocks (by physical frame number).
    let i = 0;
    while (i < n) {
      let order = MAX_ORDER;
      while (order > 0 && ((this.basePfn + i) % 2 ** order !== 0 || i + 2 ** order > n)) order--;
      this.push(i, order);
      i += 2 ** order;
    }
  }

  /** Frames currently allocated. */
  get liveFrames(): number {
    return this.live;
  }

  /** Allocations currently outstanding. */
  get liveAllocations(): number {
    return this.allocations;
  }

  /** Frames free. */
  get freeFrames(): number {
    return this.frameCount - this.live;
  }

  private push(i: number, order: number): void {
    const head = this.heads[order];
    this.next[i] = head;
    this.prev[i] = -1;
    if (head !== -1) this.prev[head] = i;
    this.heads[order] = i;
    this.freeOrder[i] = order;
  }

  private unlink(i: number, order: number): void {
    const p = this.prev[i];
    const nx = this.next[i];
    if (p === -1) this.heads[order] = nx;
    else this.next[p] = nx;
    if (nx !== -1) this.prev[nx] = p;
    this.freeOrder[i] = -1;
  }

  /**
   * Allocate 2^order zeroed frames, aligned to their size. Returns the physical address, or
   * `'ENOMEM'` when no block is left, `'EINVAL'` for an order outside [0, MAX_ORDER].
   */
  alloc(order = 0): number | "ENOMEM" | "EINVAL" {
    if (!Number.isInteger(order) || order < 0 || order > MAX_ORDER) return "EINVAL";
    let o = order;
    while (o <= MAX_ORDER && this.heads[o] === -1) o++;
    if (o > MAX_ORDER) return "ENOMEM";
    const i = this.heads[o];
    this.unlink(i, o);
    while (o > order) {
      o--;
      this.push(i + 2 ** o, o);
    }
    this.allocOrder[i] = order;
    this.live += 2 ** order;
    this.allocations++;
    const pa = this.basePa + i * PAGE_SIZE;
    for (let f = 0; f < 2 ** order; f++) {
      if (this.mem.isPopulated(this.basePfn + i + f))
        this.mem.fill(pa + f * PAGE_SIZE, PAGE_SIZE, 0);
    }
    return pa;
  }

  /**
   * Free a block `alloc(order)` returned. `'EINVAL'` for an address outside the region or not
   * at the start of an allocated block, `'ENOENT'` when the block is allocated with another order.
   */
  free(pa: number, order = 0): 0 | "EINVAL" | "ENOENT" {
    const off = pa - this.basePa;
    if (
      !Number.isInteger(pa) ||
      off < 0 ||
      off % PAGE_SIZE !== 0 ||
      off >= this.frameCount * PAGE_SIZE
    ) {
      return "EINVAL";
    }
    let i = off / PAGE_SIZE;
    if (this.allocOrder[i] === -1) return "EINVAL";
    if (this.allocOrder[i] !== order) return "ENOENT";
    this.allocOrder[i] = -1;
    this.live -= 2 ** order;
    this.allocations--;
    let o = order;
    while (o < MAX_ORDER) {
      const pfn = this.basePfn + i;
      const size = 2 ** o;
      const buddyPfn = Math.floor(pfn / size) % 2 === 0 ? pfn + size : pfn - size;
      const b = buddyPfn - this.basePfn;
      if (b < 0 || b >= this.frameCount || this.freeOrder[b] !== o) break;
      this.unlink(b, o);
      i = Math.min(i, b);
      o++;
    }
    this.push(i, o);
    return 0;
  }

  /** Whether `pa` is the first frame of an allocated block. */
  isAllocated(pa: number): boolean {
    const off = pa - this.basePa;
    if (off < 0 || off % PAGE_SIZE !== 0 || off >= this.frameCount * PAGE_SIZE) return false;
    return this.allocOrder[off / PAGE_SIZE] !== -1;
  }

  /** The PFN of a frame address (helper for callers that carry PFNs). */
  static pfn(pa: number): number {
    return Math.floor(pa / 2 ** PAGE_SHIFT);
  }
}
