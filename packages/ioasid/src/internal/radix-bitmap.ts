// A sparse hierarchical bitmap over [0, 2^32): where Ida and IdMap keep the IDs that are not in
// IdBitmap's flat window over the low IDs.
//
// The shape follows the kernel's IDA, which keeps 1024-bit bitmaps in a radix tree: leaves are
// 1024-bit chunks (32 words of 32 bits), internal nodes have 32 slots, and the tree grows in height
// only as far as the highest ID needs. Each node carries two 32-bit summary masks over its slots:
// `full` (slot is completely allocated) and `any` (slot holds at least one ID). The lowest free ID
// at or above `min` is then found with one masked word per level on the way up and one
// count-trailing-zeros per level on the way down; the next used ID is found the same way through
// `any`.
//
// Nodes and leaves are blocks in one flat Int32Array, addressed by word offset (0 is null), so the
// hot paths allocate nothing. Each block knows its parent, so updates climb without a recorded
// path. A block that becomes empty goes back to the free list, so memory follows the live IDs,
// not the highest ID ever used.

/** log2 of the IDs one leaf covers. */
const LEAF_SHIFT = 10;
/** log2 of the slots of one internal node. */
const NODE_SHIFT = 5;
/** The tallest tree needed for 32-bit IDs: 1024 * 32^5 = 2^35 >= 2^32. */
const MAX_HEIGHT = 5;

/** Span of a level-k subtree: level 0 is a leaf (2^10 IDs); level k covers 2^(10 + 5k). */
const SPAN: readonly number[] = Array.from(
  { length: MAX_HEIGHT + 2 },
  (_, k) => 2 ** (LEAF_SHIFT + NODE_SHIFT * k),
);
/**
 * Mask of the offset of an ID inside its level-k subtree, as int32 (level 5 covers all of 2^32,
 * hence -1), so `id & ~OFFSET_MASK[k]` is the subtree's base.
 */
const OFFSET_MASK = Int32Array.from({ length: MAX_HEIGHT + 1 }, (_, k) =>
  k === MAX_HEIGHT ? -1 : 2 ** (LEAF_SHIFT + NODE_SHIFT * k) - 1,
);

/**
 * Block layout, in 32-bit words. A leaf's slots are its 32 bitmap words; a node's are the offsets
 * of its 32 children (leaves at level 1). The slot of an ID in a level-k node (k >= 1) is
 * `(id >>> (5k + 5)) & 31`.
 */
const FULL = 0; // bit i: slot i is completely full. A free block's FULL links the free list.
const ANY = 1; // bit i: slot i holds at least one ID (for a node: child i exists)
const UP = 2; // offset of the parent node, 0 for the root
const UPSLOT = 3; // this block's slot in its parent
const SLOT0 = 4;
const BLOCK = 36;
const INITIAL_BLOCKS = 8;
/**
 * A level-5 root spans 2^35 IDs, but only its slots 0..3 hold 32-bit ones: its other slots are
 * marked full from the start, so no search ever descends past 2^32 - 1.
 */
const BEYOND_32_BITS = ~0b1111;

/** Memory held by the tree, in bytes. */
export interface TreeMemory {
  /** Bytes of the leaves and nodes that hold live IDs. */
  readonly liveBytes: number;
  /** Bytes reserved by the pool (live, free-listed and spare blocks). */
  readonly reservedBytes: number;
  /** Live leaves (1024-bit chunks). */
  readonly leaves: number;
  /** Live internal nodes. */
  readonly nodes: number;
}

/**
 * The bitmap. Count-trailing-zeros is written out as `31 - Math.clz32(x & -x)` at each use, and
 * the rare parts of each operation live in separate methods, so the common path stays small
 * enough for V8 to inline into its caller.
 */
export class RadixBitmap {
  private mem = new Int32Array(INITIAL_BLOCKS * BLOCK);
  /** Offset of the next never-used block. */
  private top = BLOCK;
  /** Head of the free-block list (an offset), 0 when empty. */
  private freeList = 0;
  private leaves = 0;
  private nodes = 0;

  /** Root offset: a leaf when height is 0, else a node; 0 when the bitmap is empty. */
  private root = 0;
  /** Internal levels above the leaves. */
  private height = 0;
  /** IDs the tree covers at this height: SPAN[height]. */
  private limit = SPAN[0];
  /** Number of set bits. */
  count = 0;

  /**
   * Allocation hint: every ID in [hintMin, hintFloor) is set. An allocation from a `min` inside
   * that run starts its search at `hintFloor`; a clear inside it lowers `hintFloor`. So repeated
   * lowest-free allocations from one `min` do not climb over the same full run every time.
   */
  private hintMin = 0;
  private hintFloor = 0;

  /** Leaf holding the ID `lowestZero` returned, so `alloc` sets it without a second descent. */
  private foundLeaf = 0;

  /** Drop every ID and give the memory back. */
  reset(): void {
    this.mem = new Int32Array(INITIAL_BLOCKS * BLOCK);
    this.top = BLOCK;
    this.freeList = 0;
    this.leaves = 0;
    this.nodes = 0;
    this.root = 0;
    this.height = 0;
    this.limit = SPAN[0];
    this.count = 0;
    this.hintMin = 0;
    this.hintFloor = 0;
  }

  memory(): TreeMemory {
    return {
      liveBytes: (this.leaves + this.nodes) * BLOCK * 4,
      reservedBytes: this.mem.byteLength,
      leaves: this.leaves,
      nodes: this.nodes,
    };
  }

  /** The leaf that holds `id`, or 0. */
  private leafOf(id: number): number {
    if (id >= this.limit) return 0;
    const mem = this.mem;
    let n = this.root;
    for (let k = this.height; k >= 1 && n !== 0; k--) {
      n = mem[n + SLOT0 + ((id >>> (5 * k + 5)) & 31)];
    }
    return n;
  }

  /** True when bit `id` (an integer in [0, 2^32)) is set. */
  test(id: number): boolean {
    const n = this.leafOf(id);
    return n !== 0 && (this.mem[n + SLOT0 + ((id >>> 5) & 31)] & (1 << (id & 31))) !== 0;
  }

  /** Set bit `id`, which must be clear (callers check with `test`). */
  set(id: number): void {
    if (id >= this.limit) this.grow(id);
    let n = this.root;
    if (n === 0) {
      n = this.root = this.newBlock(this.height === 0, 0, 0);
      if (this.height === MAX_HEIGHT) this.mem[n + FULL] = BEYOND_32_BITS;
    }
    for (let k = this.height; k >= 1; k--) {
      const i = (id >>> (5 * k + 5)) & 31;
      let c = this.mem[n + SLOT0 + i];
      if (c === 0) {
        c = this.newBlock(k === 1, n, i);
        const mem = this.mem; // the pool may have moved
        mem[n + SLOT0 + i] = c;
        mem[n + ANY] |= 1 << i;
      }
      n = c;
    }
    this.setInLeaf(n, id);
  }

  /**
   * Allocate the lowest clear bit in [min, max]: one search, then the bit is set in the leaf the
   * search ended in. Returns the ID, or -1 when the range is full.
   */
  alloc(min: number, max: number): number {
    let start = min;
    const hinted = min >= this.hintMin && min <= this.hintFloor;
    if (hinted) start = this.hintFloor;
    if (start > max) return -1;
    const id = this.lowestZero(start);
    if (id > max) return -1;
    const leaf = this.foundLeaf;
    if (leaf !== 0) this.setInLeaf(leaf, id);
    else this.set(id);
    // [min, id] is all set now; it extends the hinted run when the two touch.
    if (!hinted) this.hintMin = min;
    this.hintFloor = id + 1;
    return id;
  }

  private setInLeaf(n: number, id: number): void {
    const mem = this.mem;
    const w = (id >>> 5) & 31;
    const at = n + SLOT0 + w;
    const old = mem[at];
    const now = old | (1 << (id & 31));
    mem[at] = now;
    this.count++;
    if (old === 0) mem[n + ANY] |= 1 << w;
    if (now !== -1) return;
    // The word filled up; the leaf's mask is updated here, the rarer climb out of line.
    const f = mem[n + FULL] | (1 << w);
    mem[n + FULL] = f;
    if (f === -1) this.fill(mem[n + UP], mem[n + UPSLOT]);
  }

  /** Slot `i` of block `n` just filled up: mark it, and each ancestor that fills up with it. */
  private fill(n: number, i: number): void {
    const mem = this.mem;
    while (n !== 0) {
      const f = mem[n + FULL] | (1 << i);
      mem[n + FULL] = f;
      if (f !== -1) return;
      i = mem[n + UPSLOT];
      n = mem[n + UP];
    }
  }

  /** Clear bit `id`; false (and nothing changed) when it was not set. */
  clear(id: number): boolean {
    const n = this.leafOf(id);
    if (n === 0) return false;
    const mem = this.mem;
    const w = (id >>> 5) & 31;
    const at = n + SLOT0 + w;
    const old = mem[at];
    const b = 1 << (id & 31);
    if ((old & b) === 0) return false;
    const now = old & ~b;
    mem[at] = now;
    this.count--;
    if (id < this.hintFloor && id >= this.hintMin) this.hintFloor = id;
    if (old === -1) {
      const f = mem[n + FULL];
      mem[n + FULL] = f & ~(1 << w);
      if (f === -1) this.unfill(mem[n + UP], mem[n + UPSLOT]);
    }
    if (now === 0) this.empty(n, w);
    return true;
  }

  /** Slot `i` of block `n` is no longer full: neither is `n`, nor any ancestor that was. */
  private unfill(n: number, i: number): void {
    const mem = this.mem;
    while (n !== 0) {
      const f = mem[n + FULL];
      mem[n + FULL] = f & ~(1 << i);
      if (f !== -1) return;
      i = mem[n + UPSLOT];
      n = mem[n + UP];
    }
  }

  /** Slot `i` of block `n` became empty: free `n`, and its ancestors, once they are empty. */
  private empty(n: number, i: number): void {
    const mem = this.mem;
    for (let leaf = true; ; leaf = false) {
      const a = mem[n + ANY] & ~(1 << i);
      mem[n + ANY] = a;
      if (a !== 0) return;
      const up = mem[n + UP];
      i = mem[n + UPSLOT];
      this.freeBlock(n, leaf);
      if (up === 0) break;
      mem[up + SLOT0 + i] = 0;
      n = up;
    }
    this.root = 0;
    this.height = 0;
    this.limit = SPAN[0];
  }

  /**
   * The lowest clear bit in [min, max], or -1. `min` and `max` are integers in [0, 2^32) with
   * min <= max. Does not allocate.
   */
  findZero(min: number, max: number): number {
    const r = this.lowestZero(min);
    return r <= max ? r : -1;
  }

  /** The lowest clear bit at or above `min` (possibly beyond the current coverage). */
  private lowestZero(min: number): number {
    // IDs are assembled as int32 bit patterns (slot and word fields never overlap) and turned
    // back into uint32 at the end: float arithmetic here would box every result.
    this.foundLeaf = 0;
    if (min >= this.limit) return min;
    let n = this.root;
    if (n === 0) return min;
    const mem = this.mem;
    for (let k = this.height; k >= 1; k--) {
      n = mem[n + SLOT0 + ((min >>> (5 * k + 5)) & 31)];
      // An absent subtree is empty, so `min` itself is free.
      if (n === 0) return min;
    }
    this.foundLeaf = n;
    const w = (min >>> 5) & 31;
    const free = ~mem[n + SLOT0 + w] & (-1 << (min & 31));
    if (free !== 0) return ((min & ~31) | (31 - Math.clz32(free & -free))) >>> 0;
    return this.searchAbove(min, n, w);
  }

  /**
   * The rest of `lowestZero` once `min`'s own word is full: the later words of leaf `n`, then the
   * later slots of each ancestor, and down the first one that is not full.
   */
  private searchAbove(min: number, n: number, w: number): number {
    const mem = this.mem;
    const notFull = ~mem[n + FULL] & (-2 << w);
    if (notFull !== 0) {
      w = 31 - Math.clz32(notFull & -notFull);
      const x = ~mem[n + SLOT0 + w];
      return ((min & ~1023) | (w << 5) | (31 - Math.clz32(x & -x))) >>> 0;
    }
    for (let k = 1; ; k++) {
      const p = mem[n + UP];
      if (p === 0) break;
      const m = ~mem[p + FULL] & (-2 << mem[n + UPSLOT]);
      if (m === 0) {
        n = p;
        continue;
      }
      const j = 31 - Math.clz32(m & -m);
      let base = (min & ~OFFSET_MASK[k]) | (j << (5 * k + 5));
      let c = mem[p + SLOT0 + j];
      for (let kk = k - 1; kk >= 1; kk--) {
        if (c === 0) break;
        const f = ~mem[c + FULL];
        const jj = 31 - Math.clz32(f & -f);
        base |= jj << (5 * kk + 5);
        c = mem[c + SLOT0 + jj];
      }
      this.foundLeaf = c;
      // An absent subtree is empty: its first ID is free.
      if (c === 0) return base >>> 0;
      const f = ~mem[c + FULL];
      w = 31 - Math.clz32(f & -f);
      const x = ~mem[c + SLOT0 + w];
      return (base | (w << 5) | (31 - Math.clz32(x & -x))) >>> 0;
    }
    // Everything covered is full: the first ID past the tree is free.
    this.foundLeaf = 0;
    return this.limit;
  }

  /** The lowest set bit at or above `from`, or -1. */
  findSet(from: number): number {
    if (from >= this.limit || this.root === 0) return -1;
    const mem = this.mem;
    let n = this.root;
    let k = this.height;
    // Descend toward `from`. At an absent child, carry on with the later slots of its parent.
    for (; k >= 1; k--) {
      const i = (from >>> (5 * k + 5)) & 31;
      const c = mem[n + SLOT0 + i];
      if (c === 0) return this.firstSetAfter(from, n, k, i);
      n = c;
    }
    const w = (from >>> 5) & 31;
    const used = mem[n + SLOT0 + w] & (-1 << (from & 31));
    if (used !== 0) return ((from & ~31) | (31 - Math.clz32(used & -used))) >>> 0;
    const more = mem[n + ANY] & (-2 << w);
    if (more !== 0) {
      const ww = 31 - Math.clz32(more & -more);
      const x = mem[n + SLOT0 + ww];
      return ((from & ~1023) | (ww << 5) | (31 - Math.clz32(x & -x))) >>> 0;
    }
    const up = mem[n + UP];
    return up === 0 ? -1 : this.firstSetAfter(from, up, 1, mem[n + UPSLOT]);
  }

  /** The first set bit under a slot after `i` of node `n` (level `k`), or further up; else -1. */
  private firstSetAfter(from: number, n: number, k: number, i: number): number {
    const mem = this.mem;
    for (;;) {
      const m = mem[n + ANY] & (-2 << i);
      if (m !== 0) {
        const j = 31 - Math.clz32(m & -m);
        let base = (from & ~OFFSET_MASK[k]) | (j << (5 * k + 5));
        let c = mem[n + SLOT0 + j];
        for (let kk = k - 1; kk >= 1; kk--) {
          const a = mem[c + ANY];
          const jj = 31 - Math.clz32(a & -a);
          base |= jj << (5 * kk + 5);
          c = mem[c + SLOT0 + jj];
        }
        const a = mem[c + ANY];
        const w = 31 - Math.clz32(a & -a);
        const x = mem[c + SLOT0 + w];
        return (base | (w << 5) | (31 - Math.clz32(x & -x))) >>> 0;
      }
      const up = mem[n + UP];
      if (up === 0) return -1;
      i = mem[n + UPSLOT];
      n = up;
      k++;
    }
  }

  /** Raise the tree until it covers `id`. */
  private grow(id: number): void {
    while (id >= this.limit) {
      const old = this.root;
      if (old !== 0) {
        const n = this.newBlock(false, 0, 0);
        const mem = this.mem;
        mem[n + SLOT0] = old;
        mem[n + ANY] = 1;
        mem[n + FULL] =
          (mem[old + FULL] === -1 ? 1 : 0) | (this.height + 1 === MAX_HEIGHT ? BEYOND_32_BITS : 0);
        mem[old + UP] = n;
        mem[old + UPSLOT] = 0;
        this.root = n;
      }
      this.height++;
      this.limit = SPAN[this.height];
    }
  }

  /** A zeroed block under `up` at `slot` (blocks are freed only when empty, so they are zero). */
  private newBlock(leaf: boolean, up: number, slot: number): number {
    if (leaf) this.leaves++;
    else this.nodes++;
    let b = this.freeList;
    if (b !== 0) {
      this.freeList = this.mem[b + FULL];
      this.mem[b + FULL] = 0;
    } else {
      b = this.top;
      this.top = b + BLOCK;
      if (this.top > this.mem.length) {
        const mem = new Int32Array(this.mem.length * 2);
        mem.set(this.mem);
        this.mem = mem;
      }
    }
    this.mem[b + UP] = up;
    this.mem[b + UPSLOT] = slot;
    return b;
  }

  private freeBlock(b: number, leaf: boolean): void {
    if (leaf) this.leaves--;
    else this.nodes--;
    this.mem[b + FULL] = this.freeList;
    this.freeList = b;
  }
}
