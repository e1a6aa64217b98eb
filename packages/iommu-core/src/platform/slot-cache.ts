// Slot bookkeeping shared by the fully associative hardware caches: key index, LRU, free slots.

import { bug } from "./bug.js";

/** Most key words a SlotLru accepts. */
const MAX_KEY_WORDS = 4;

/**
 * A fixed set of `capacity` slots under keys of up to `keyWords` (1..4) int32 words, for caches
 * that keep their payload in their own per-slot arrays. It keeps:
 * - an open-addressed, linearly probed hash index (deletion shifts later cluster members back,
 *   so no tombstones build up and lookups never degrade);
 * - a doubly linked recency list in typed arrays: `touch` is O(1) and `lru` is the true least
 *   recently used slot;
 * - a free-slot bitmap: `insert` takes the lowest free slot, so slot order stays as predictable
 *   as a linear scan would make it.
 * Key words are int32 (callers normalise with `| 0`); words a cache does not use are 0 (omitted
 * arguments). A one-word key from a small range (a 16-bit source-id) can use a direct map of
 * `directKeys` entries instead of the hash: one read per lookup. Nothing on `find`, `touch`,
 * `insert` or `remove` allocates. Counting hits and misses is left to the cache.
 */
export class SlotLru {
  readonly capacity: number;
  readonly keyWords: number;
  private head = -1;
  private tail = -1;
  private live = 0;
  /** Key words of slot s at s * 4 .. s * 4 + 3. */
  private readonly keys: Int32Array;
  /** Home bucket of each used slot, so deletion never rehashes. */
  private readonly homes: Int32Array;
  /** Bucket (or, direct, the key) -> slot + 1 (0 = empty). */
  private readonly index: Int32Array;
  /** Size of the direct map, 0 when hashed. */
  private readonly directKeys: number;
  private readonly indexMask: number;
  private readonly shift: number;
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  /** Bit s & 31 of word s >> 5 set: slot s is free. */
  private readonly freeBits: Int32Array;

  constructor(capacity: number, keyWords: number, directKeys = 0) {
    if (!Number.isInteger(capacity) || capacity < 0 || capacity > 1 << 24) {
      bug(`SlotLru: capacity ${capacity}`);
    }
    if (!Number.isInteger(keyWords) || keyWords < 1 || keyWords > MAX_KEY_WORDS) {
      bug(`SlotLru: key words ${keyWords}`);
    }
    if (!Number.isInteger(directKeys) || directKeys < 0 || (directKeys > 0 && keyWords !== 1)) {
      bug(`SlotLru: direct map of ${directKeys} for ${keyWords} key words`);
    }
    this.directKeys = directKeys;
    this.capacity = capacity;
    this.keyWords = keyWords;
    this.keys = new Int32Array(capacity * MAX_KEY_WORDS);
    this.homes = new Int32Array(capacity);
    // Load factor at most 1/4: short probe sequences for the misses a multi-level lookup makes.
    let bits = 3;
    while (1 << bits < capacity * 4) bits++;
    // A direct map of a cache that holds nothing stays empty (its reads miss).
    this.index = new Int32Array(directKeys > 0 ? (capacity > 0 ? directKeys : 0) : 1 << bits);
    this.indexMask = (1 << bits) - 1;
    this.shift = 32 - bits;
    this.prev = new Int32Array(capacity);
    this.next = new Int32Array(capacity);
    this.freeBits = new Int32Array((capacity + 31) >>> 5);
    this.clear();
  }

  private home(k0: number, k1: number, k2: number, k3: number): number {
    const h = Math.imul(
      k0 ^ Math.imul(k1 ^ Math.imul(k2 ^ k3, 0x27d4eb2f), 0x9e3779b1),
      0x85ebca6b,
    );
    return (h ^ (h << 13)) >>> this.shift;
  }

  /** Most recently used slot, -1 when empty. */
  get mru(): number {
    return this.head;
  }

  /** Least recently used slot (the victim of a full cache), -1 when empty. */
  get lru(): number {
    return this.tail;
  }

  /** Used slots. */
  size(): number {
    return this.live;
  }

  /** Whether slot `s` holds an entry. */
  used(s: number): boolean {
    return ((this.freeBits[s >>> 5] as number) & (1 << (s & 31))) === 0;
  }

  /** Key word `w` of slot `s`. */
  key(s: number, w: number): number {
    return this.keys[s * MAX_KEY_WORDS + w] as number;
  }

  /** The slot holding the key, or -1; does not touch. */
  find(k0: number, k1 = 0, k2 = 0, k3 = 0): number {
    const keys = this.keys;
    const index = this.index;
    const mask = this.indexMask;
    if (this.directKeys !== 0) return this.findDirect(k0);
    let h = this.home(k0, k1, k2, k3);
    for (;;) {
      const s = (index[h] as number) - 1;
      if (s < 0) return -1;
      const b = s * MAX_KEY_WORDS;
      if (keys[b] === k0 && keys[b + 1] === k1 && keys[b + 2] === k2 && keys[b + 3] === k3) {
        return s;
      }
      h = (h + 1) & mask;
    }
  }

  /**
   * `find` for a direct map (`directKeys` > 0), with `k0` in range. Kept tiny so the compiler
   * inlines it even deep in a translate path.
   */
  findDirect(k0: number): number {
    return ((this.index[k0] as number) | 0) - 1;
  }

  /** Make used slot `s` the most recently used (tiny, so a hit on the head costs one compare). */
  touch(s: number): void {
    if (this.head !== s) this.moveToFront(s);
  }

  private moveToFront(s: number): void {
    // s is not the head, so it has a predecessor.
    const m = this.head;
    const prev = this.prev;
    const next = this.next;
    const p = prev[s] as number;
    const n = next[s] as number;
    next[p] = n;
    if (n >= 0) prev[n] = p;
    else this.tail = p;
    prev[s] = -1;
    next[s] = m;
    prev[m] = s;
    this.head = s;
  }

  /**
   * Put a key that is not present into the lowest free slot, as the most recently used, and
   * return the slot. The cache must not be full: the caller evicts `lru` first (so it can count
   * the eviction and take the payload out).
   */
  insert(k0: number, k1 = 0, k2 = 0, k3 = 0): number {
    if (this.directKeys !== 0 && !(Number.isInteger(k0) && k0 >= 0 && k0 < this.directKeys)) {
      bug(`SlotLru.insert: key ${k0} outside the direct map`);
    }
    const bits = this.freeBits;
    let s = -1;
    for (let w = 0; w < bits.length; w++) {
      const b = bits[w] as number;
      if (b !== 0) {
        s = (w << 5) + 31 - Math.clz32(b & -b);
        break;
      }
    }
    if (s < 0) bug("SlotLru.insert: no free slot");
    bits[s >>> 5] = (bits[s >>> 5] as number) & ~(1 << (s & 31));
    this.live++;
    const b = s * MAX_KEY_WORDS;
    this.keys[b] = k0;
    this.keys[b + 1] = k1;
    this.keys[b + 2] = k2;
    this.keys[b + 3] = k3;
    const index = this.index;
    if (this.directKeys !== 0) {
      this.homes[s] = k0;
      index[k0] = s + 1;
    } else {
      let h = this.home(k0 | 0, k1 | 0, k2 | 0, k3 | 0);
      this.homes[s] = h;
      while (index[h] !== 0) h = (h + 1) & this.indexMask;
      index[h] = s + 1;
    }
    this.pushFront(s);
    return s;
  }

  /** Free used slot `s`. */
  remove(s: number): void {
    const index = this.index;
    const homes = this.homes;
    const mask = this.indexMask;
    if (this.directKeys !== 0) {
      if (index[homes[s] as number] !== s + 1) bug("SlotLru.remove: slot not in the index");
      index[homes[s] as number] = 0;
      this.release(s);
      return;
    }
    let i = homes[s] as number;
    while (index[i] !== s + 1) {
      if (index[i] === 0) bug("SlotLru.remove: slot not in the index");
      i = (i + 1) & mask;
    }
    index[i] = 0;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const e = index[j] as number;
      if (e === 0) break;
      const k = homes[e - 1] as number;
      // The entry at j may fill the hole at i unless its home k lies cyclically in (i, j].
      const stays = i <= j ? i < k && k <= j : i < k || k <= j;
      if (!stays) {
        index[i] = e;
        index[j] = 0;
        i = j;
      }
    }
    this.release(s);
  }

  private release(s: number): void {
    this.unlink(s);
    this.freeBits[s >>> 5] = (this.freeBits[s >>> 5] as number) | (1 << (s & 31));
    this.live--;
  }

  /** Free every slot. */
  clear(): void {
    this.index.fill(0);
    this.freeBits.fill(0);
    for (let s = 0; s < this.capacity; s++) this.freeBits[s >>> 5] |= 1 << (s & 31);
    this.head = -1;
    this.tail = -1;
    this.live = 0;
  }

  private unlink(s: number): void {
    const p = this.prev[s] as number;
    const n = this.next[s] as number;
    if (p >= 0) this.next[p] = n;
    else this.head = n;
    if (n >= 0) this.prev[n] = p;
    else this.tail = p;
  }

  private pushFront(s: number): void {
    this.prev[s] = -1;
    this.next[s] = this.head;
    if (this.head >= 0) this.prev[this.head] = s;
    else this.tail = s;
    this.head = s;
  }
}
