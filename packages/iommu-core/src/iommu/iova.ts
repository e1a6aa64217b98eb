// The IOVA allocator: a DMA domain's IOVA page frames, handed out top-down, with per-CPU caches.

import { bug } from "../platform/bug.js";

/**
 * One more than the log2 of the largest size the rcaches hold: sizes up to 2^5 = 32 granules.
 *
 * @kernel drivers/iommu/iova.c IOVA_RANGE_CACHE_MAX_SIZE
 */
export const IOVA_RANGE_CACHE_MAX_SIZE = 6;

/**
 * PFNs per magazine (the kernel picks 127 so that a magazine is 1024 bytes).
 *
 * @kernel drivers/iommu/iova.c IOVA_MAG_SIZE
 */
export const IOVA_MAG_SIZE = 127;

/**
 * The pfn of the anchor node, the range that sits above every usable pfn. The kernel uses ~0UL;
 * the model keeps pfns exact as numbers, so its anchor is 2^53 - 1.
 *
 * @kernel drivers/iommu/iova.c IOVA_ANCHOR
 */
export const IOVA_ANCHOR = Number.MAX_SAFE_INTEGER;

/** The largest granule the model accepts: the page size of a 64 KiB-page kernel. */
export const IOVA_MAX_GRANULE = 1 << 16;

/** The largest size (in granules) that goes through the rcaches. */
const RCACHE_MAX_PFNS = 1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1);

/** CPU counts beyond this are a caller bug, not a machine the model means to run. */
const MAX_CPUS = 4096;

/**
 * An allocated or reserved range of pfns, [pfnLo, pfnHi]. Callers read it; only the domain that
 * returned it changes it (reserveIova may extend a range downwards when it merges a reservation).
 *
 * @kernel include/linux/iova.h iova
 */
export interface Iova {
  /** Lowest pfn of the range. */
  readonly pfnLo: number;
  /** Highest pfn of the range (inclusive). */
  readonly pfnHi: number;
}

/** The record behind every Iova a domain hands out; the kernel embeds its rb_node here. */
class IovaNode implements Iova {
  pfnLo: number;
  pfnHi: number;
  /** Inserted by reserveIova (bookkeeping for reservedCount; the kernel keeps no such flag). */
  readonly reserved: boolean;

  constructor(pfnLo: number, pfnHi: number, reserved: boolean) {
    this.pfnLo = pfnLo;
    this.pfnHi = pfnHi;
    this.reserved = reserved;
  }
}

/**
 * Number of pfns in a range.
 *
 * @kernel include/linux/iova.h iova_size
 */
export function iovaSize(iova: Iova): number {
  return iova.pfnHi - iova.pfnLo + 1;
}

/**
 * Bytes of IOVA space the rcaches cover per allocation, for a CPU page size.
 *
 * @kernel drivers/iommu/iova.c iova_rcache_range
 */
export function iovaRcacheRange(pageSize = 4096): number {
  return pageSize * RCACHE_MAX_PFNS;
}

/** Options of a new domain. */
export interface IovaDomainOptions {
  /** CPUs with their own rcache magazines (default 1). The kernel has one per possible CPU. */
  cpus?: number;
}

/** An integer pfn the model can carry exactly. */
function isPfn(x: number): boolean {
  return Number.isSafeInteger(x) && x >= 0;
}

/** A limit pfn: any integer >= 0; those above maxPfn get clamped. */
function isLimit(x: number): boolean {
  return Number.isInteger(x) && x >= 0;
}

/**
 * Index of the highest set bit, counting from 1; 0 for 0. Exact for integers below 2^53.
 *
 * @kernel include/linux/bitops.h fls_long
 */
function flsLong(x: number): number {
  if (x < 0x1_0000_0000) return 32 - Math.clz32(x);
  return 64 - Math.clz32(Math.floor(x / 0x1_0000_0000));
}

/** Round down to a multiple of `align`, a power of two (what `& align_mask` does in C). */
function alignDown(x: number, align: number): number {
  return align === 1 ? x : x - (x % align);
}

/** Blocks of the range list split above this many nodes. */
const BLOCK_MAX = 256;
/** A block this small is merged into a neighbour when the two fit in half a block. */
const BLOCK_MIN = 32;

/**
 * A run of consecutive nodes. Their pfns are copied into typed arrays, so that the allocation
 * walk reads contiguous numbers instead of chasing a pointer per node.
 */
class Block {
  size = 0;
  readonly lo = new Float64Array(BLOCK_MAX + 1);
  readonly hi = new Float64Array(BLOCK_MAX + 1);
  readonly nodes: IovaNode[] = [];

  insertAt(at: number, node: IovaNode): void {
    const n = this.size;
    this.lo.copyWithin(at + 1, at, n);
    this.hi.copyWithin(at + 1, at, n);
    this.lo[at] = node.pfnLo;
    this.hi[at] = node.pfnHi;
    const nodes = this.nodes;
    nodes.push(node);
    for (let k = n; k > at; k--) nodes[k] = nodes[k - 1];
    nodes[at] = node;
    this.size = n + 1;
  }

  removeAt(at: number): void {
    const n = this.size - 1;
    this.lo.copyWithin(at, at + 1, n + 1);
    this.hi.copyWithin(at, at + 1, n + 1);
    const nodes = this.nodes;
    for (let k = at; k < n; k++) nodes[k] = nodes[k + 1];
    nodes.pop();
    this.size = n;
  }

  /** Move nodes [from, size) to the end of `to`. */
  moveTail(from: number, to: Block): void {
    const n = this.size;
    to.lo.set(this.lo.subarray(from, n), to.size);
    to.hi.set(this.hi.subarray(from, n), to.size);
    for (let k = from; k < n; k++) to.nodes.push(this.nodes[k]);
    to.size += n - from;
    this.nodes.length = from;
    this.size = from;
  }
}

/**
 * The domain's ranges in ascending pfnLo order, the anchor last: the counterpart of the kernel's
 * rbtree, stepping the way rb_prev/rb_next do. A list of sorted blocks keeps lookups O(log n)
 * and insertion or removal a short shift. One cursor (block, index) serves every walk.
 */
class RangeList {
  private blocks: Block[] = [];
  private b = 0;
  private i = 0;
  private readonly anchor: IovaNode;

  constructor(anchor: IovaNode) {
    this.anchor = anchor;
    this.clear();
  }

  clear(): void {
    const block = new Block();
    block.insertAt(0, this.anchor);
    this.blocks = [block];
    this.b = 0;
    this.i = 0;
  }

  /** The node under the cursor. */
  get node(): IovaNode {
    return this.blocks[this.b].nodes[this.i];
  }

  /** Lower the start of the node under the cursor (reserve_iova merging into it). */
  extendDown(pfnLo: number): void {
    this.node.pfnLo = pfnLo;
    this.blocks[this.b].lo[this.i] = pfnLo;
  }

  /** Put the cursor on the last node with pfnLo <= pfn; false (cursor unchanged) if none. */
  seekLE(pfn: number): boolean {
    const blocks = this.blocks;
    if (blocks[0].lo[0] > pfn) return false;
    let lo = 0;
    let hi = blocks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (blocks[mid].lo[0] <= pfn) lo = mid;
      else hi = mid - 1;
    }
    const keys = blocks[lo].lo;
    let a = 0;
    let z = blocks[lo].size - 1;
    while (a < z) {
      const mid = (a + z + 1) >>> 1;
      if (keys[mid] <= pfn) a = mid;
      else z = mid - 1;
    }
    this.b = lo;
    this.i = a;
    return true;
  }

  /** Put the cursor on `node`; false if it is not in the list. */
  seekNode(node: IovaNode): boolean {
    return this.seekLE(node.pfnLo) && this.node === node;
  }

  seekFirst(): void {
    this.b = 0;
    this.i = 0;
  }

  seekLast(): void {
    this.b = this.blocks.length - 1;
    this.i = this.blocks[this.b].size - 1;
  }

  /**
   * The allocation walk of __alloc_and_insert_iova_range, from the cursor down (rb_prev): at
   * each node, the highest start of `size` pfns, rounded down to `align`, that ends below both
   * the node and `highPfn`; the walk stops at the first such start above the next node down,
   * or once it drops below `lowPfn`. Returns that start, or -1 when it is below `lowPfn` or
   * there is no room at all (where the kernel's unsigned subtraction wraps).
   */
  walkDown(highPfn: number, size: number, align: number, lowPfn: number): number {
    const blocks = this.blocks;
    let b = this.b;
    let i = this.i;
    let block = blocks[b];
    let los = block.lo;
    let his = block.hi;
    let high = highPfn;
    for (;;) {
      const lo = los[i];
      if (lo < high) high = lo;
      if (high < size) return -1;
      const newPfn = alignDown(high - size, align);
      if (newPfn < lowPfn) return -1;
      if (i > 0) {
        i--;
      } else if (b > 0) {
        block = blocks[--b];
        los = block.lo;
        his = block.hi;
        i = block.size - 1;
      } else {
        return newPfn;
      }
      if (newPfn > his[i]) return newPfn;
    }
  }

  /** Step to the next node (rb_next); false at the anchor. */
  next(): boolean {
    if (this.i + 1 < this.blocks[this.b].size) {
      this.i++;
      return true;
    }
    if (this.b + 1 === this.blocks.length) return false;
    this.b++;
    this.i = 0;
    return true;
  }

  /** The node after the cursor's (rb_next); the cursor must not be on the anchor. */
  peekNext(): IovaNode {
    const block = this.blocks[this.b];
    if (this.i + 1 < block.size) return block.nodes[this.i + 1];
    if (this.b + 1 === this.blocks.length) bug("iova: rb_next of the anchor");
    return this.blocks[this.b + 1].nodes[0];
  }

  /** Insert a node that overlaps no other. The cursor is left anywhere. */
  insert(node: IovaNode): void {
    let b = 0;
    let at = 0;
    if (this.seekLE(node.pfnLo)) {
      if (this.node.pfnLo === node.pfnLo) bug(`iova: two ranges start at pfn ${node.pfnLo}`);
      b = this.b;
      at = this.i + 1;
    }
    const block = this.blocks[b];
    block.insertAt(at, node);
    if (block.size > BLOCK_MAX) {
      const upper = new Block();
      block.moveTail(BLOCK_MAX >>> 1, upper);
      this.blocks.splice(b + 1, 0, upper);
    }
  }

  /** Remove the node under the cursor (never the anchor). The cursor is left anywhere. */
  removeAtCursor(): void {
    const blocks = this.blocks;
    const b = this.b;
    const block = blocks[b];
    if (block.nodes[this.i] === this.anchor) bug("iova: removing the anchor");
    block.removeAt(this.i);
    if (block.size === 0) {
      blocks.splice(b, 1);
    } else if (block.size < BLOCK_MIN) {
      if (b + 1 < blocks.length && block.size + blocks[b + 1].size <= BLOCK_MAX >>> 1) {
        blocks[b + 1].moveTail(0, block);
        blocks.splice(b + 1, 1);
      } else if (b > 0 && block.size + blocks[b - 1].size <= BLOCK_MAX >>> 1) {
        block.moveTail(0, blocks[b - 1]);
        blocks.splice(b, 1);
      }
    }
    this.b = 0;
    this.i = 0;
  }

  /** Every node but the anchor, in ascending order. */
  toArray(): IovaNode[] {
    const out: IovaNode[] = [];
    for (const block of this.blocks) {
      for (const n of block.nodes) if (n !== this.anchor) out.push(n);
    }
    return out;
  }
}

/**
 * A magazine: a stack of up to IOVA_MAG_SIZE pfns of one size.
 *
 * @kernel drivers/iommu/iova.c iova_magazine
 */
class IovaMagazine {
  size = 0;
  readonly pfns = new Float64Array(IOVA_MAG_SIZE);

  /** @kernel drivers/iommu/iova.c iova_magazine_full */
  get full(): boolean {
    return this.size === IOVA_MAG_SIZE;
  }

  /** @kernel drivers/iommu/iova.c iova_magazine_empty */
  get empty(): boolean {
    return this.size === 0;
  }

  /**
   * Take the most recently pushed pfn that is <= limitPfn, moving the top pfn into its slot;
   * 0 when none is (the caller then falls back to the tree).
   *
   * @kernel drivers/iommu/iova.c iova_magazine_pop
   */
  pop(limitPfn: number): number {
    const pfns = this.pfns;
    let i = this.size - 1;
    while (pfns[i] > limitPfn) {
      if (i === 0) return 0;
      i--;
    }
    const pfn = pfns[i];
    pfns[i] = pfns[--this.size];
    return pfn;
  }

  /** @kernel drivers/iommu/iova.c iova_magazine_push */
  push(pfn: number): void {
    this.pfns[this.size++] = pfn;
  }
}

/** @kernel drivers/iommu/iova.c iova_cpu_rcache */
class IovaCpuRcache {
  loaded: IovaMagazine;
  prev: IovaMagazine;

  constructor(loaded: IovaMagazine, prev: IovaMagazine) {
    this.loaded = loaded;
    this.prev = prev;
  }
}

/**
 * The cache of one size: a loaded and a previous magazine per CPU, and a depot of full magazines
 * shared by all CPUs (a stack: the kernel links them through the magazine itself).
 *
 * @kernel drivers/iommu/iova.c iova_rcache
 */
class IovaRcache {
  readonly depot: IovaMagazine[] = [];
  readonly cpuRcaches: IovaCpuRcache[];

  constructor(cpuRcaches: IovaCpuRcache[]) {
    this.cpuRcaches = cpuRcaches;
  }
}

/**
 * The IOVA space of one DMA domain, in units of `granule` bytes (pfns here are IOVA page frame
 * numbers, iova >> iovaShift).
 *
 * Model notes:
 * - Allocation follows the kernel's rbtree allocator exactly: top-down from the cached node
 *   (cached_node, or cached32_node for limits within 32 bits), one retry above the cached node,
 *   and the max32_alloc_size fast failure for 32-bit limits. So the result is not always the
 *   highest free fit: a hole above the cached node is only used once the space below is full.
 * - pfns are exact numbers below 2^53 (the anchor is 2^53 - 1 instead of ~0UL). With a granule of
 *   2 KiB or more that is the whole 64-bit space; `maxPfn` is the highest usable pfn.
 * - Bad input never throws: a pfn or size that is not a non-negative safe integer, a limit that
 *   is not an integer >= 0 or a cpu out of range gets null / 0 / no change, as a failed kernel
 *   call would. Limits above `maxPfn` are clamped to it (they lie beyond the 64-bit space).
 * - Allocating an iova record or a magazine never fails here (the kernel's GFP_ATOMIC may).
 * - The depot trimming work (iova_depot_work_func) runs only when `runDepotWork` is called.
 *
 * @kernel include/linux/iova.h iova_domain
 */
export class IovaDomain {
  /** Bytes per pfn: a power of two, at most 64 KiB. */
  readonly granule: number;
  /** Lowest pfn allocIova hands out. */
  readonly startPfn: number;
  /** log2(granule). @kernel include/linux/iova.h iova_shift */
  readonly iovaShift: number;
  /** The first pfn at or above 4 GiB: 2^32 >> iovaShift. @kernel include/linux/iova.h iova_domain.dma_32bit_pfn */
  readonly dma32PfnLimit: number;
  /** Highest pfn of the 64-bit space the model can hold: min(2^64 >> shift, 2^53 - 1) - 1. */
  readonly maxPfn: number;
  /** CPUs with their own magazines. */
  readonly cpus: number;

  private readonly anchor = new IovaNode(IOVA_ANCHOR, IOVA_ANCHOR, false);
  private readonly tree = new RangeList(this.anchor);
  private cachedNode: IovaNode = this.anchor;
  private cached32Node: IovaNode = this.anchor;
  private max32Size: number;
  private readonly rcaches: IovaRcache[] = [];
  /** Emptied magazines kept for reuse, so a steady state allocates none. */
  private readonly spareMagazines: IovaMagazine[] = [];
  private allocatedNodes = 0;
  private reservedNodes = 0;
  private cachedPfns = 0;

  /**
   * Set up an empty domain and its rcaches. A granule that is not a power of two in
   * [1, 64 KiB], a start pfn that is not a pfn, or a CPU count outside [1, 4096] is a bug of the
   * calling model code (the kernel BUG()s on a bad granule), so it throws through bug().
   *
   * @kernel drivers/iommu/iova.c init_iova_domain
   * @kernel drivers/iommu/iova.c iova_domain_init_rcaches
   */
  constructor(granule: number, startPfn: number, options: IovaDomainOptions = {}) {
    const cpus = options.cpus ?? 1;
    if (!Number.isInteger(granule) || granule < 1 || granule > IOVA_MAX_GRANULE) {
      bug(`iova: granule ${granule} is not in [1, ${IOVA_MAX_GRANULE}]`);
    }
    if ((granule & (granule - 1)) !== 0) bug(`iova: granule ${granule} is not a power of two`);
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_CPUS) bug(`iova: ${cpus} CPUs`);
    this.granule = granule;
    this.iovaShift = 31 - Math.clz32(granule);
    this.dma32PfnLimit = 2 ** (32 - this.iovaShift);
    this.maxPfn = Math.min(2 ** (64 - this.iovaShift), IOVA_ANCHOR) - 1;
    if (!isPfn(startPfn) || startPfn > this.maxPfn) bug(`iova: start pfn ${startPfn}`);
    this.startPfn = startPfn;
    this.cpus = cpus;
    this.max32Size = this.dma32PfnLimit;
    for (let s = 0; s < IOVA_RANGE_CACHE_MAX_SIZE; s++) {
      const perCpu: IovaCpuRcache[] = [];
      for (let c = 0; c < cpus; c++) {
        perCpu.push(new IovaCpuRcache(new IovaMagazine(), new IovaMagazine()));
      }
      this.rcaches.push(new IovaRcache(perCpu));
    }
  }

  // --- include/linux/iova.h helpers --------------------------------------------------------

  /** @kernel include/linux/iova.h iova_mask */
  get iovaMask(): number {
    return this.granule - 1;
  }

  /** Offset of a byte address within its granule. @kernel include/linux/iova.h iova_offset */
  iovaOffset(iova: number): number {
    return iova % this.granule;
  }

  /** Round a byte size up to whole granules. @kernel include/linux/iova.h iova_align */
  iovaAlign(size: number): number {
    return Math.ceil(size / this.granule) * this.granule;
  }

  /** The pfn of a byte address. @kernel include/linux/iova.h iova_pfn */
  iovaPfn(iova: number): number {
    return Math.floor(iova / this.granule);
  }

  /**
   * The byte address a range starts at (exact while below 2^53; larger IOVAs are carried as pfns).
   *
   * @kernel include/linux/iova.h iova_dma_addr
   */
  iovaDmaAddr(iova: Iova): number {
    return iova.pfnLo * this.granule;
  }

  // --- accounting (model only) -------------------------------------------------------------

  /**
   * Ranges from allocIova / allocIovaFast still in use: allocated ranges in the tree minus the
   * pfns parked in the rcaches (which stay in the tree, as in the kernel). This assumes, as the
   * kernel does, that freeIovaFast is only given the start pfn of a live allocated range.
   */
  get liveCount(): number {
    return this.allocatedNodes - this.cachedPfns;
  }

  /** pfns parked in the rcaches: every CPU's loaded and previous magazines and the depots. */
  get cachedCount(): number {
    return this.cachedPfns;
  }

  /**
   * Ranges that reserveIova inserted and nobody has freed. A reservation that falls inside an
   * existing range, or merges into one, adds none.
   */
  get reservedCount(): number {
    return this.reservedNodes;
  }

  /**
   * Sizes at or above this fail at once for 32-bit limits, until something below 4 GiB is freed.
   *
   * @kernel include/linux/iova.h iova_domain.max32_alloc_size
   */
  get max32AllocSize(): number {
    return this.max32Size;
  }

  /** Every range in the tree (allocated, rcached and reserved), ascending. Model only. */
  iovas(): Iova[] {
    return this.tree.toArray();
  }

  // --- the tree ---------------------------------------------------------------------------

  /**
   * Allocate `size` pfns at or below `limitPfn` (inclusive) and at or above startPfn, searching
   * top-down from the cached node. With `sizeAligned` the range starts on a multiple of size
   * rounded up to a power of two. Returns null when nothing fits (the kernel's -ENOMEM inside,
   * NULL outside), or for a size that is not a positive safe integer or a negative limit.
   *
   * @kernel drivers/iommu/iova.c alloc_iova
   */
  allocIova(size: number, limitPfn: number, sizeAligned: boolean): Iova | null {
    if (!Number.isSafeInteger(size) || size < 1 || !isLimit(limitPfn)) return null;
    const limit = Math.min(limitPfn, this.maxPfn);
    return this.allocAndInsertRange(size, limit + 1, sizeAligned);
  }

  /**
   * The allocator proper; `limitPfn` is exclusive here, as in the kernel.
   *
   * @kernel drivers/iommu/iova.c __alloc_and_insert_iova_range
   */
  private allocAndInsertRange(
    size: number,
    limitPfn: number,
    sizeAligned: boolean,
  ): IovaNode | null {
    const align = sizeAligned ? 2 ** flsLong(size - 1) : 1;
    if (limitPfn <= this.dma32PfnLimit && size >= this.max32Size) return null;

    const tree = this.tree;
    const start = limitPfn <= this.dma32PfnLimit ? this.cached32Node : this.cachedNode;
    if (!tree.seekNode(start)) bug("iova: the cached node is not in the tree");
    const retryPfn = start.pfnHi;
    let newPfn = tree.walkDown(limitPfn, size, align, this.startPfn);
    // Nothing below the cached node: look once more, between it and the limit.
    if (newPfn < 0 && retryPfn < limitPfn) {
      this.seekLimit(limitPfn);
      newPfn = tree.walkDown(limitPfn, size, align, retryPfn + 1);
    }
    if (newPfn < 0) {
      this.max32Size = size;
      return null;
    }

    const node = new IovaNode(newPfn, newPfn + size - 1, false);
    tree.insert(node);
    this.allocatedNodes++;
    // __cached_rbnode_insert_update
    if (node.pfnHi < this.dma32PfnLimit) this.cached32Node = node;
    else this.cachedNode = node;
    return node;
  }

  /**
   * Put the cursor where the retry walk starts: the anchor for limits above 32 bits, else the
   * lowest node that ends at or above limitPfn. (The kernel's tree search may land on the node
   * just above a node straddling the limit instead; the walk then reaches the same hole.)
   *
   * @kernel drivers/iommu/iova.c iova_find_limit
   */
  private seekLimit(limitPfn: number): void {
    const tree = this.tree;
    if (limitPfn > this.dma32PfnLimit) tree.seekLast();
    else if (!tree.seekLE(limitPfn)) tree.seekFirst();
    else if (tree.node.pfnHi < limitPfn) tree.next();
  }

  /**
   * The range containing `pfn`, or null (also for a pfn that is not a pfn).
   *
   * @kernel drivers/iommu/iova.c find_iova
   */
  findIova(pfn: number): Iova | null {
    if (!isPfn(pfn) || pfn > this.maxPfn || !this.tree.seekLE(pfn)) return null;
    const node = this.tree.node;
    return node.pfnHi >= pfn ? node : null;
  }

  /**
   * Free a range this domain returned. A range that is not (or no longer) in this domain's tree
   * is left alone; the kernel would corrupt its tree.
   *
   * @kernel drivers/iommu/iova.c __free_iova
   */
  __freeIova(iova: Iova): void {
    if (!(iova instanceof IovaNode) || iova === this.anchor || !this.tree.seekNode(iova)) return;
    this.removeAtCursor();
  }

  /**
   * Free the range containing `pfn`; nothing happens when no range does.
   *
   * @kernel drivers/iommu/iova.c free_iova
   */
  freeIova(pfn: number): void {
    if (!isPfn(pfn) || pfn > this.maxPfn || !this.tree.seekLE(pfn)) return;
    if (this.tree.node.pfnHi >= pfn) this.removeAtCursor();
  }

  /**
   * Take the node under the cursor out of the tree, first moving the cached nodes past it when
   * they sit on it or below it (so the space just freed is found again) and clearing the 32-bit
   * failure size when it lay below 4 GiB.
   *
   * @kernel drivers/iommu/iova.c remove_iova
   * @kernel drivers/iommu/iova.c __cached_rbnode_delete_update
   */
  private removeAtCursor(): void {
    const tree = this.tree;
    const free = tree.node;
    const next = tree.peekNext();
    const dma32 = this.dma32PfnLimit;
    const c32 = this.cached32Node;
    if (free === c32 || (free.pfnHi < dma32 && free.pfnLo >= c32.pfnLo)) this.cached32Node = next;
    if (free.pfnLo < dma32) this.max32Size = dma32;
    if (free.pfnLo >= this.cachedNode.pfnLo) this.cachedNode = next;
    tree.removeAtCursor();
    if (free.reserved) this.reservedNodes--;
    else this.allocatedNodes--;
  }

  /**
   * Keep [pfnLo, pfnHi] out of allocation. Ranges it overlaps are grown downwards to cover it
   * and the rest goes into a new range, so the result is the range holding pfnHi: an existing
   * one when it already covers the end of the request, else the new one. Returns null when
   * pfnLo or pfnHi is not a pfn up to maxPfn (the kernel WARNs above 2^64 >> shift) or when
   * pfnLo > pfnHi (which the kernel does not check).
   *
   * @kernel drivers/iommu/iova.c reserve_iova
   */
  reserveIova(pfnLo: number, pfnHi: number): Iova | null {
    if (!isPfn(pfnLo) || !isPfn(pfnHi) || pfnHi > this.maxPfn || pfnLo > pfnHi) return null;
    const tree = this.tree;
    // The first range that can overlap is the first one ending at or above pfnLo.
    if (!tree.seekLE(pfnLo)) tree.seekFirst();
    else if (tree.node.pfnHi < pfnLo) tree.next();
    let lo = pfnLo;
    for (;;) {
      const node = tree.node;
      if (lo > node.pfnHi || pfnHi < node.pfnLo) break;
      // __adjust_overlap_range
      if (lo < node.pfnLo) tree.extendDown(lo);
      if (pfnHi <= node.pfnHi) return node;
      lo = node.pfnHi + 1;
      tree.next();
    }
    const node = new IovaNode(lo, pfnHi, true);
    tree.insert(node);
    this.reservedNodes++;
    return node;
  }

  /**
   * Drop every range and every cached pfn. Unlike the kernel, whose domain is dead afterwards,
   * the domain is then as new and may be used again.
   *
   * @kernel drivers/iommu/iova.c put_iova_domain
   */
  putIovaDomain(): void {
    for (const rcache of this.rcaches) {
      for (const cpuRcache of rcache.cpuRcaches) {
        cpuRcache.loaded.size = 0;
        cpuRcache.prev.size = 0;
      }
      while (rcache.depot.length > 0) this.magazineFree(rcache.depot.pop() as IovaMagazine);
    }
    this.tree.clear();
    this.cachedNode = this.anchor;
    this.cached32Node = this.anchor;
    this.max32Size = this.dma32PfnLimit;
    this.allocatedNodes = 0;
    this.reservedNodes = 0;
    this.cachedPfns = 0;
  }

  // --- the rcaches ---------------------------------------------------------------------------

  /**
   * Allocate `size` pfns at or below `limitPfn`, size-aligned, trying `cpu`'s rcache of that size
   * first. Sizes below 32 are rounded up to a power of two first, so that they can be cached on
   * free. When the tree has no room either and `flushRcache` is set, every CPU's magazines and
   * the depots are returned to the tree and the tree is tried once more. Returns the first pfn,
   * or 0 on failure (also for bad input or a cpu out of range; a range at pfn 0 reads as a
   * failure too, which is why callers start domains at pfn 1 or above).
   *
   * @kernel drivers/iommu/iova.c alloc_iova_fast
   */
  allocIovaFast(size: number, limitPfn: number, flushRcache: boolean, cpu = 0): number {
    if (!Number.isSafeInteger(size) || size < 1 || !isLimit(limitPfn)) return 0;
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.cpus) return 0;
    const limit = Math.min(limitPfn, this.maxPfn);
    let sz = size;
    if (sz < RCACHE_MAX_PFNS) sz = 1 << (32 - Math.clz32(sz - 1));

    const pfn = this.rcacheGet(sz, limit + 1, cpu);
    if (pfn !== 0) return pfn;

    let flush = flushRcache;
    for (;;) {
      const iova = this.allocAndInsertRange(sz, limit + 1, true);
      if (iova !== null) return iova.pfnLo;
      if (!flush) return 0;
      flush = false;
      for (let c = 0; c < this.cpus; c++) this.freeCpuCachedIovas(c);
      this.freeGlobalCachedIovas();
    }
  }

  /**
   * Free a range from allocIovaFast (its start pfn and the size asked for) into `cpu`'s rcache,
   * or into the tree when the size is above 32 or not a positive integer, or the cpu is out of
   * range. Like the kernel it does not check that `pfn` starts a live range of that size.
   *
   * @kernel drivers/iommu/iova.c free_iova_fast
   */
  freeIovaFast(pfn: number, size: number, cpu = 0): void {
    if (
      isPfn(pfn) &&
      Number.isSafeInteger(size) &&
      size >= 1 &&
      Number.isInteger(cpu) &&
      cpu >= 0 &&
      cpu < this.cpus &&
      this.rcacheInsert(pfn, size, cpu)
    ) {
      return;
    }
    this.freeIova(pfn);
  }

  /**
   * Return the pfns in `cpu`'s loaded and previous magazines, of every size, to the tree (the
   * kernel does this when a CPU goes offline). A cpu out of range does nothing.
   *
   * @kernel drivers/iommu/iova.c free_cpu_cached_iovas
   */
  freeCpuCachedIovas(cpu: number): void {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.cpus) return;
    for (const rcache of this.rcaches) {
      const cpuRcache = rcache.cpuRcaches[cpu];
      this.magazineFreePfns(cpuRcache.loaded);
      this.magazineFreePfns(cpuRcache.prev);
    }
  }

  /**
   * Return the pfns of every depot magazine, of every size, to the tree.
   *
   * @kernel drivers/iommu/iova.c free_global_cached_iovas
   */
  freeGlobalCachedIovas(): void {
    for (const rcache of this.rcaches) {
      while (rcache.depot.length > 0) {
        const mag = rcache.depot.pop() as IovaMagazine;
        this.magazineFreePfns(mag);
        this.magazineFree(mag);
      }
    }
  }

  /**
   * Run each size's delayed depot work until it stops rescheduling itself: while a depot holds
   * more magazines than there are CPUs, the most recently deposited one goes back to the tree.
   * The kernel schedules this 100 ms after each deposit; the model leaves the timing to the
   * caller. Returns the number of magazines freed.
   *
   * @kernel drivers/iommu/iova.c iova_depot_work_func
   */
  runDepotWork(): number {
    let freed = 0;
    for (const rcache of this.rcaches) {
      while (rcache.depot.length > this.cpus) {
        const mag = rcache.depot.pop() as IovaMagazine;
        this.magazineFreePfns(mag);
        this.magazineFree(mag);
        freed++;
      }
    }
    return freed;
  }

  /** Magazines in the depot of the rcache for sizes of order `log` (model only). */
  depotSize(log: number): number {
    return this.rcaches[log]?.depot.length ?? 0;
  }

  /**
   * Park a pfn in the magazines for its size: in the loaded magazine, else in the previous one
   * (swapping the two), else in a fresh magazine after the full loaded one goes to the depot.
   *
   * @kernel drivers/iommu/iova.c iova_rcache_insert
   * @kernel drivers/iommu/iova.c __iova_rcache_insert
   */
  private rcacheInsert(pfn: number, size: number, cpu: number): boolean {
    if (size > RCACHE_MAX_PFNS) return false;
    const log = 32 - Math.clz32(size - 1); // order_base_2
    const rcache = this.rcaches[log];
    const cpuRcache = rcache.cpuRcaches[cpu];
    if (cpuRcache.loaded.full) {
      if (!cpuRcache.prev.full) {
        const t = cpuRcache.prev;
        cpuRcache.prev = cpuRcache.loaded;
        cpuRcache.loaded = t;
      } else {
        rcache.depot.push(cpuRcache.loaded);
        cpuRcache.loaded = this.magazineAlloc();
      }
    }
    cpuRcache.loaded.push(pfn);
    this.cachedPfns++;
    return true;
  }

  /**
   * Take a cached pfn of `size` whose range ends below `limitPfn` (exclusive). Only the loaded
   * magazine is searched: when it is empty it is first swapped with the previous one, or, when
   * both are empty, replaced by a full magazine from the depot. 0 when nothing suitable is there.
   *
   * @kernel drivers/iommu/iova.c iova_rcache_get
   * @kernel drivers/iommu/iova.c __iova_rcache_get
   */
  private rcacheGet(size: number, limitPfn: number, cpu: number): number {
    if (size > RCACHE_MAX_PFNS) return 0;
    const log = 32 - Math.clz32(size - 1);
    const rcache = this.rcaches[log];
    const cpuRcache = rcache.cpuRcaches[cpu];
    if (cpuRcache.loaded.empty) {
      if (!cpuRcache.prev.empty) {
        const t = cpuRcache.prev;
        cpuRcache.prev = cpuRcache.loaded;
        cpuRcache.loaded = t;
      } else if (rcache.depot.length > 0) {
        this.magazineFree(cpuRcache.loaded);
        cpuRcache.loaded = rcache.depot.pop() as IovaMagazine;
      } else {
        return 0;
      }
    }
    // The kernel computes limit_pfn - size unsigned: a limit below the size wraps around and
    // lets any cached pfn through. Kept as is.
    const popLimit = limitPfn >= size ? limitPfn - size : Number.POSITIVE_INFINITY;
    const pfn = cpuRcache.loaded.pop(popLimit);
    if (pfn !== 0) this.cachedPfns--;
    return pfn;
  }

  /**
   * Free the ranges of every pfn in a magazine, oldest first, and empty it. A pfn with no range
   * is skipped (the kernel WARNs).
   *
   * @kernel drivers/iommu/iova.c iova_magazine_free_pfns
   */
  private magazineFreePfns(mag: IovaMagazine): void {
    const tree = this.tree;
    for (let i = 0; i < mag.size; i++) {
      const pfn = mag.pfns[i];
      if (tree.seekLE(pfn) && tree.node.pfnHi >= pfn) this.removeAtCursor();
    }
    this.cachedPfns -= mag.size;
    mag.size = 0;
  }

  /** @kernel drivers/iommu/iova.c iova_magazine_alloc */
  private magazineAlloc(): IovaMagazine {
    return this.spareMagazines.pop() ?? new IovaMagazine();
  }

  /** @kernel drivers/iommu/iova.c iova_magazine_free */
  private magazineFree(mag: IovaMagazine): void {
    mag.size = 0;
    this.spareMagazines.push(mag);
  }
}
