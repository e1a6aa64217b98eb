// The bitmap under Ida and IdMap: a flat window over the low IDs, the radix tree above it.
//
// Pointer chasing is what makes a tree slow in JavaScript: every level is a dependent load, and
// updating the summaries means climbing parent links. A flat hierarchical bitmap computes every
// address from the ID, so its loads overlap; that is the C baseline's layout, and in V8 it runs
// several times faster than a tree walk. But a flat bitmap over 2^32 IDs is 512 MiB.
//
// So the IDs below `window` live in flat arrays (32 IDs a word, then one summary level per 32
// words: a bit set there means "that word is full"), and all others in a RadixBitmap. The window
// starts empty and doubles, up to 2^20 IDs (128 KiB), only when an ID just past it is set: the
// way lowest-free allocation fills a space. So the dense low IDs most spaces use (20-bit PASIDs,
// 16-bit domain IDs, ASIDs, VMIDs) are flat, and a few IDs spread over a huge range stay in the
// tree, costing little. When the window grows, the tree's IDs it now covers move into it.

import { RadixBitmap, type TreeMemory } from "./radix-bitmap.js";

/** Memory held by a bitmap, in bytes. */
export interface BitmapMemory extends TreeMemory {
  /** Bytes of the flat window over the low IDs (part of both totals). */
  readonly windowBytes: number;
}

/** The largest window: 2^20 IDs, in l0 words and three summary levels (the last one a word). */
const WINDOW_MAX = 1 << 20;
/** The first window: one summary word's worth of l0 words. */
const WINDOW_MIN = 1 << 10;
const NONE = new Int32Array(0);

export class IdBitmap {
  /** Level 0: bit b of word i is ID 32i + b. */
  private l0 = NONE;
  /** Level 1: bit b of word j set iff l0 word 32j + b is full. */
  private l1 = NONE;
  /** Level 2: bit b of word k set iff l1 word 32k + b is full. */
  private l2 = NONE;
  /** Level 3: bit b set iff l2 word b is full. */
  private l3 = 0;
  /** IDs below this are in the flat levels, the rest in the tree. 0 or a power of two. */
  private window = 0;
  private windowCount = 0;
  private readonly tree = new RadixBitmap();

  /** Number of set bits. */
  get count(): number {
    return this.windowCount + this.tree.count;
  }

  reset(): void {
    this.l0 = this.l1 = this.l2 = NONE;
    this.l3 = 0;
    this.window = 0;
    this.windowCount = 0;
    this.tree.reset();
  }

  memory(): BitmapMemory {
    const tree = this.tree.memory();
    const flat = this.l0.byteLength + this.l1.byteLength + this.l2.byteLength;
    return {
      liveBytes: tree.liveBytes + flat,
      reservedBytes: tree.reservedBytes + flat,
      leaves: tree.leaves,
      nodes: tree.nodes,
      windowBytes: flat,
    };
  }

  /** True when bit `id` (an integer in [0, 2^32)) is set. */
  test(id: number): boolean {
    if (id >= this.window) return this.tree.test(id);
    return (this.l0[id >>> 5] & (1 << (id & 31))) !== 0;
  }

  /** True when `id`, at or past the window, stays in the tree: it is not just past the window. */
  private beyondGrowth(id: number): boolean {
    return id >= WINDOW_MAX || id >= (this.window === 0 ? WINDOW_MIN : this.window * 2);
  }

  /** Set bit `id`, which must be clear. */
  set(id: number): void {
    if (id >= this.window) {
      if (this.beyondGrowth(id)) {
        this.tree.set(id);
        return;
      }
      this.grow(id);
    }
    this.setLow(id);
  }

  private setLow(id: number): void {
    this.windowCount++;
    const i = id >>> 5;
    const w = this.l0[i] | (1 << (id & 31));
    this.l0[i] = w;
    if (w !== -1) return;
    const j = i >>> 5;
    const w1 = this.l1[j] | (1 << (i & 31));
    this.l1[j] = w1;
    if (w1 !== -1) return;
    const k = j >>> 5;
    const w2 = this.l2[k] | (1 << (j & 31));
    this.l2[k] = w2;
    if (w2 === -1) this.l3 |= 1 << k;
  }

  /** Clear bit `id`; false (and nothing changed) when it was not set. */
  clear(id: number): boolean {
    if (id >= this.window) return this.tree.clear(id);
    const i = id >>> 5;
    const b = 1 << (id & 31);
    const w = this.l0[i];
    if ((w & b) === 0) return false;
    this.l0[i] = w & ~b;
    this.windowCount--;
    if (w === -1) {
      // The word was full: so it is no longer, nor its summary word if that was full.
      const j = i >>> 5;
      const w1 = this.l1[j];
      this.l1[j] = w1 & ~(1 << (i & 31));
      if (w1 === -1) {
        const k = j >>> 5;
        const w2 = this.l2[k];
        this.l2[k] = w2 & ~(1 << (j & 31));
        if (w2 === -1) this.l3 &= ~(1 << k);
      }
    }
    return true;
  }

  /** Allocate the lowest clear bit in [min, max] (0 <= min <= max < 2^32); -1 when full. */
  alloc(min: number, max: number): number {
    if (min < this.window) {
      const id = this.windowZero(min);
      if (id < this.window) {
        if (id > max) return -1;
        this.setLow(id);
        return id;
      }
      min = this.window;
    }
    if (this.beyondGrowth(min)) {
      // Whatever is found stays in the tree: let it search and set in one go, with its hint.
      return this.tree.alloc(min, max);
    }
    const id = this.tree.findZero(min, max);
    if (id >= 0) this.set(id);
    return id;
  }

  /** The lowest clear bit in [min, max], or -1. */
  findZero(min: number, max: number): number {
    let id = min;
    if (min < this.window) {
      id = this.windowZero(min);
      if (id < this.window) return id <= max ? id : -1;
    }
    return this.tree.findZero(id, max);
  }

  /**
   * The lowest clear bit of the window at or above `pos` (< window), or `window` when they are
   * all set. One masked word per level up, then one count-trailing-zeros per level down.
   */
  private windowZero(pos: number): number {
    const l0 = this.l0;
    const i = pos >>> 5;
    const w = ~l0[i] & (-1 << (pos & 31));
    if (w !== 0) return (i << 5) | (31 - Math.clz32(w & -w));
    return this.windowZeroAbove(i + 1);
  }

  /** The lowest clear bit in l0 words `p1` and above, through the summaries. */
  private windowZeroAbove(p1: number): number {
    const n0 = this.l0.length;
    if (p1 >= n0) return this.window;
    let j = p1 >>> 5;
    let w1 = ~this.l1[j] & (-1 << (p1 & 31));
    if (w1 === 0) {
      const p2 = j + 1;
      const n1 = this.l1.length;
      if (p2 >= n1) return this.window;
      let k = p2 >>> 5;
      let w2 = ~this.l2[k] & (-1 << (p2 & 31));
      if (w2 === 0) {
        const p3 = k + 1;
        // The top level is one word; bits past the l2 words are not there.
        const w3 = p3 < 32 ? ~this.l3 & (-1 << p3) : 0;
        if (w3 === 0) return this.window;
        k = 31 - Math.clz32(w3 & -w3);
        if (k >= this.l2.length) return this.window;
        w2 = ~this.l2[k];
      }
      j = (k << 5) | (31 - Math.clz32(w2 & -w2));
      if (j >= n1) return this.window;
      w1 = ~this.l1[j];
    }
    const i = (j << 5) | (31 - Math.clz32(w1 & -w1));
    if (i >= n0) return this.window;
    const w = ~this.l0[i];
    return (i << 5) | (31 - Math.clz32(w & -w));
  }

  /** The lowest set bit at or above `from`, or -1. */
  findSet(from: number): number {
    if (from < this.window) {
      const l0 = this.l0;
      let i = from >>> 5;
      let w = l0[i] & (-1 << (from & 31));
      // The window has no "non-empty" summary: a scan, which only iteration uses.
      while (w === 0 && ++i < l0.length) w = l0[i];
      if (w !== 0) return (i << 5) | (31 - Math.clz32(w & -w));
      from = this.window;
    }
    return this.tree.findSet(from);
  }

  /** Widen the window to the next power of two above `id`, taking over the tree's IDs there. */
  private grow(id: number): void {
    const old = this.window;
    let size = old === 0 ? WINDOW_MIN : old;
    while (size <= id) size *= 2;
    const l0 = new Int32Array(size >>> 5);
    l0.set(this.l0);
    const l1 = new Int32Array(Math.ceil(size / (1 << 10)));
    l1.set(this.l1);
    const l2 = new Int32Array(Math.ceil(size / (1 << 15)));
    l2.set(this.l2);
    this.l0 = l0;
    this.l1 = l1;
    this.l2 = l2;
    this.window = size;
    for (let t = this.tree.findSet(old); t >= 0 && t < size; t = this.tree.findSet(t + 1)) {
      this.tree.clear(t);
      this.setLow(t);
    }
  }
}
