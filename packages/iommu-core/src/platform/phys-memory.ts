// Simulated physical memory: sparse 4 KiB frames, the one place where drivers, hardware models and
// devices meet.

import { bug } from "./bug.js";

// The class uses the module-private names: optimised code reads an exported binding through its
// cell, with a not-yet-initialised check, at every use, while a private const becomes an immediate.
const FRAME_SHIFT = 12;
const FRAME_SIZE = 1 << FRAME_SHIFT;
export const PAGE_SHIFT = FRAME_SHIFT;
export const PAGE_SIZE = FRAME_SIZE;
const FRAME_MASK = FRAME_SIZE - 1;
const TWO32 = 4294967296;

// Below 2^31 memory lives in 2 MiB sections, each one buffer: a hot access is one array load and
// one typed-array load on int32 arithmetic, where a buffer per frame cost a pointer hop, a TLB miss
// and float frame-number arithmetic. 2^31, not 2^32, because the fast paths prove an address
// integral with `(pa | 0) === pa`, which holds only in int32 range.
const SECTION_SHIFT = 21;
const SECTION_SIZE = 1 << SECTION_SHIFT;
const SECTION_MASK = SECTION_SIZE - 1;
const FRAMES_PER_SECTION = SECTION_SIZE >>> FRAME_SHIFT;
const FRAME_IN_SECTION = FRAMES_PER_SECTION - 1;
const SECTIONS_SPAN = 2 ** 31;
/**
 * Word index of a section's "populated" flags: one word per frame after the data words, so a
 * store checks its frame's flag in the array it is about to write, with no second lookup.
 */
const FLAGS = SECTION_SIZE >>> 2;
const SECTION_WORDS = FLAGS + FRAMES_PER_SECTION;
/** Bulk copies up to this many bytes use a loop; `subarray` would allocate a view per frame. */
const SMALL_COPY = 64;

/**
 * Called after every store, with the address and the width of the store. A 64-bit store is one
 * call with `bytes === 8`, so an observer sees each table entry change exactly as the hardware
 * could sample it. Bulk writes report one call per touched frame with the bytes they cover.
 */
export type WriteObserver = (pa: number, bytes: number) => void;

/**
 * Decides whether an access fails as a bus error would (an aborted read, a dropped write). Return
 * true to fail it. Consulted before the access; a failed access sets `PhysMemory.busError`.
 */
export type FaultHook = (pa: number, bytes: number, write: boolean) => boolean;

export interface PhysMemoryOptions {
  /** Width of the physical address space (default 52, the most either architecture defines). */
  paBits?: number;
}

/**
 * Sparse physical memory in 4 KiB frames. A frame that was never written reads as zeros; below
 * 2^31 backing is taken 2 MiB at a time when a frame in that range is first written (and given
 * back when its last frame is discarded), above it frame by frame. 64-bit values are read and
 * written as two 32-bit halves (`read64` returns the low half and leaves the high half in `hi`),
 * so no path that runs per DMA or per table entry allocates or uses BigInt; `read64Big`/`write64Big`
 * are the conveniences for the edges.
 *
 * An access outside the physical address space, or one the fault hook rejects, does not throw: a
 * read returns 0, a write is dropped, and `busError` is set until the caller clears it, which is
 * how a hardware model notices an external abort on a table walk. A non-integer address is outside
 * the space.
 *
 * Every multi-byte access must be naturally aligned (the hardware models only make such accesses);
 * a misaligned one is a bug in the model and throws.
 */
export class PhysMemory {
  readonly paBits: number;
  /** Number of frames in the address space (2^(paBits-12)). */
  readonly pfnLimit: number;
  /** High 32 bits of the value the last `read64` returned the low half of. */
  hi = 0;
  /** Set by any access that failed (outside the address space or refused by the fault hook). */
  busError = false;
  /** Sees every store; null when nobody listens (the default, and free). */
  onWrite: WriteObserver | null = null;

  /** Bytes in the address space. */
  private readonly end: number;
  /** Addresses below this live in `sections`; min(2^31, end). */
  private readonly sectionLimit: number;
  /** Frame numbers below this live in `sections`. */
  private readonly sectionPfns: number;
  /**
   * Accesses at or below this take the unchecked path: `sectionLimit - 1`, or -1 while a fault
   * hook is installed, since the hook must see every access. Inclusive so that it stays an int32
   * (2^31 is not one) and the fast paths compare integers.
   */
  private fastMax: number;
  private hook: FaultHook | null = null;
  /** Per 2 MiB section: data words, then one populated flag word per frame (see FLAGS). */
  private readonly sections: (Uint32Array | undefined)[];
  /** The same buffers as `sections`, for byte access. */
  private readonly sectionBytes: (Uint8Array | undefined)[];
  /** Populated frames per section, so the last discard can free it. */
  private readonly sectionFrames: Uint16Array;
  private readonly high = new Map<number, Uint32Array>();
  private readonly highBytes = new Map<number, Uint8Array>();
  private frames = 0;
  /** Reused by `copy`; null while a copy holds it, so a reentrant copy allocates its own. */
  private scratch: Uint8Array | null = new Uint8Array(FRAME_SIZE);

  constructor(options: PhysMemoryOptions = {}) {
    const paBits = options.paBits ?? 52;
    if (!Number.isInteger(paBits) || paBits < 12 || paBits > 52) {
      bug(`PhysMemory: paBits ${paBits} is outside [12, 52]`);
    }
    this.paBits = paBits;
    this.pfnLimit = 2 ** (paBits - FRAME_SHIFT);
    this.end = this.pfnLimit * FRAME_SIZE;
    this.sectionLimit = Math.min(SECTIONS_SPAN, this.end);
    this.sectionPfns = this.sectionLimit / FRAME_SIZE;
    this.fastMax = (this.sectionLimit - 1) | 0;
    const count = Math.ceil(this.sectionLimit / SECTION_SIZE);
    this.sections = Array.from({ length: count }, () => undefined);
    this.sectionBytes = Array.from({ length: count }, () => undefined);
    this.sectionFrames = new Uint16Array(count);
  }

  /** Injects bus errors; null by default. While one is installed every access is checked. */
  get faultHook(): FaultHook | null {
    return this.hook;
  }

  set faultHook(hook: FaultHook | null) {
    this.hook = hook;
    this.fastMax = hook ? -1 : (this.sectionLimit - 1) | 0;
  }

  /** Number of frames that hold data (were written at least once and not discarded). */
  get populatedFrameCount(): number {
    return this.frames;
  }

  /** Whether `pa` lies inside the physical address space. */
  inRange(pa: number, bytes = 1): boolean {
    return pa >= 0 && pa + bytes <= this.end;
  }

  // The fast paths start with `(pa | 0) === pa`, false for NaN, fractions and anything outside
  // int32: those take the checked path, which refuses all but integers at and above 2^31. With
  // `pa >= 0 && pa <= fastMax` (fastMax + 1 <= 2^31, a multiple of 4 KiB) it makes the section
  // index and offset exact and keeps an aligned access inside one frame.

  read8(pa: number): number {
    if ((pa | 0) === pa && pa >= 0 && pa <= this.fastMax) {
      const s = this.sections[pa >>> SECTION_SHIFT];
      if (s === undefined) return 0;
      return (s[(pa & SECTION_MASK) >>> 2] >>> ((pa & 3) << 3)) & 0xff;
    }
    return this.readSlow(pa, 1);
  }

  read16(pa: number): number {
    if ((pa | 0) === pa && pa >= 0 && pa <= this.fastMax && (pa & 1) === 0) {
      const s = this.sections[pa >>> SECTION_SHIFT];
      if (s === undefined) return 0;
      return (s[(pa & SECTION_MASK) >>> 2] >>> ((pa & 2) << 3)) & 0xffff;
    }
    return this.readSlow(pa, 2);
  }

  /** A 32-bit read, as an unsigned number. */
  read32(pa: number): number {
    if ((pa | 0) === pa && pa >= 0 && pa <= this.fastMax && (pa & 3) === 0) {
      const s = this.sections[pa >>> SECTION_SHIFT];
      return s === undefined ? 0 : s[(pa & SECTION_MASK) >>> 2];
    }
    return this.readSlow(pa, 4);
  }

  /** A 64-bit read: returns the low 32 bits (unsigned) and leaves the high 32 bits in `hi`. */
  read64(pa: number): number {
    if ((pa | 0) === pa && pa >= 0 && pa <= this.fastMax && (pa & 7) === 0) {
      const s = this.sections[pa >>> SECTION_SHIFT];
      if (s === undefined) {
        this.hi = 0;
        return 0;
      }
      const i = (pa & SECTION_MASK) >>> 2;
      this.hi = s[i + 1];
      return s[i];
    }
    return this.readSlow(pa, 8);
  }

  /**
   * For trusted hot readers (table walkers): the words that back `pa` when a read there may skip
   * every check, or undefined when it must go through `read64` and the other read methods. Defined
   * only for an integer `pa` below min(2^31, 2^paBits) while no fault hook is installed (so that
   * the hook sees every read), and only when something in the 2 MiB section around `pa` was ever
   * written. The 32-bit word holding `pa` is at `wordIndex(pa)`; for an 8-aligned `pa`, the 64-bit
   * value `read64` would return is that word (low half) and the next (high half), zeros for a
   * frame never written. The array is valid for the current access only: ask again after anything
   * that may install a hook or discard a frame. Never write through it: stores go through
   * `write64` and friends, so that the write observer sees every one and frames get populated.
   */
  wordsOf(pa: number): Uint32Array | undefined {
    if ((pa | 0) === pa && pa >= 0 && pa <= this.fastMax)
      return this.sections[pa >>> SECTION_SHIFT];
    return undefined;
  }

  /**
   * Index in `wordsOf(pa)` of the 32-bit word holding `pa` (for an address `wordsOf` accepted). An
   * instance method so that optimised code finds it through the receiver's map it already checked.
   */
  wordIndex(pa: number): number {
    return (pa & SECTION_MASK) >>> 2;
  }

  /** The checked read: misaligned throws; refused, out of range or not an integer reads 0. */
  private readSlow(pa: number, bytes: number): number {
    if ((pa & (bytes - 1)) !== 0) this.checkAlign(pa, bytes);
    const w = this.refused(pa, bytes, false) ? undefined : this.wordsAt(pa);
    if (w === undefined) {
      if (bytes === 8) this.hi = 0;
      return 0;
    }
    const i = this.offsetAt(pa) >>> 2;
    if (bytes === 8) {
      this.hi = w[i + 1];
      return w[i];
    }
    if (bytes === 4) return w[i];
    return (w[i] >>> ((pa & 3) << 3)) & (bytes === 2 ? 0xffff : 0xff);
  }

  // A store takes the fast path only when its frame is already populated, so the fast path never
  // allocates or counts; the first store to a frame goes through `populate`. Byte and halfword
  // stores merge into their word so that the hot paths touch only `sections`.

  write8(pa: number, value: number): void {
    const s = this.fastStore(pa, 0);
    if (s === undefined) {
      this.writeSlow(pa, 1, value, 0);
      return;
    }
    const i = (pa & SECTION_MASK) >>> 2;
    const shift = (pa & 3) << 3;
    s[i] = (s[i] & ~(0xff << shift)) | ((value & 0xff) << shift);
    this.onWrite?.(pa, 1);
  }

  write16(pa: number, value: number): void {
    const s = this.fastStore(pa, 1);
    if (s === undefined) {
      this.writeSlow(pa, 2, value, 0);
      return;
    }
    const i = (pa & SECTION_MASK) >>> 2;
    const shift = (pa & 2) << 3;
    s[i] = (s[i] & ~(0xffff << shift)) | ((value & 0xffff) << shift);
    this.onWrite?.(pa, 2);
  }

  write32(pa: number, value: number): void {
    const s = this.fastStore(pa, 3);
    if (s === undefined) {
      this.writeSlow(pa, 4, value, 0);
      return;
    }
    s[(pa & SECTION_MASK) >>> 2] = value;
    this.onWrite?.(pa, 4);
  }

  /** A 64-bit store of `hi:lo`, seen by the write observer as one store. */
  write64(pa: number, lo: number, hi: number): void {
    const s = this.fastStore(pa, 7);
    if (s === undefined) {
      this.writeSlow(pa, 8, lo, hi);
      return;
    }
    const i = (pa & SECTION_MASK) >>> 2;
    s[i] = lo;
    s[i + 1] = hi;
    this.onWrite?.(pa, 8);
  }

  /**
   * The section of `pa` when a store there with alignment mask `alignMask` may skip every check: an
   * integer, aligned address at or below `fastMax` in a populated frame. Otherwise undefined.
   */
  private fastStore(pa: number, alignMask: number): Uint32Array | undefined {
    if ((pa | 0) === pa && pa >= 0 && pa <= this.fastMax && (pa & alignMask) === 0) {
      const s = this.sections[pa >>> SECTION_SHIFT];
      if (s !== undefined && s[FLAGS + ((pa >>> FRAME_SHIFT) & FRAME_IN_SECTION)] !== 0) return s;
    }
    return undefined;
  }

  /** The checked store: misaligned throws; refused drops it; else populates, stores, observes. */
  private writeSlow(pa: number, bytes: number, lo: number, hi: number): void {
    if ((pa & (bytes - 1)) !== 0) this.checkAlign(pa, bytes);
    if (this.refused(pa, bytes, true)) return;
    const w = this.populate(pa);
    const i = this.offsetAt(pa) >>> 2;
    if (bytes === 8) {
      w[i] = lo;
      w[i + 1] = hi;
    } else if (bytes === 4) {
      w[i] = lo;
    } else {
      const shift = (pa & 3) << 3;
      const mask = bytes === 2 ? 0xffff : 0xff;
      w[i] = (w[i] & ~(mask << shift)) | ((lo & mask) << shift);
    }
    this.onWrite?.(pa, bytes);
  }

  /** A 64-bit read as a BigInt (for the edges: decoders, the CLI). */
  read64Big(pa: number): bigint {
    const lo = this.read64(pa);
    return (BigInt(this.hi) << 32n) | BigInt(lo);
  }

  /** A 64-bit store of a BigInt (taken modulo 2^64). */
  write64Big(pa: number, value: bigint): void {
    const v = BigInt.asUintN(64, value);
    this.write64(pa, Number(v & 0xffffffffn), Number(v >> 32n));
  }

  /**
   * A 64-bit read as a number, for entries known to fit in 53 bits (addresses); the caller
   * guarantees it. Leaves the high half in `hi` like `read64`.
   */
  read64Number(pa: number): number {
    const lo = this.read64(pa);
    return this.hi * TWO32 + lo;
  }

  /**
   * Copy `length` bytes starting at `pa` into `dst` at `offset`. Returns false (and sets
   * `busError`) if any part of the range failed; the bytes of failed frames read as zero.
   */
  readBytes(pa: number, dst: Uint8Array, offset = 0, length = dst.length - offset): boolean {
    let ok = true;
    let done = 0;
    while (done < length) {
      const at = pa + done;
      const inFrame = Math.min(length - done, FRAME_SIZE - (at & FRAME_MASK));
      const to = offset + done;
      if (this.refusedBulk(at, inFrame, false)) {
        dst.fill(0, to, to + inFrame);
        ok = false;
      } else {
        const b = this.bytesAt(at);
        if (b === undefined) dst.fill(0, to, to + inFrame);
        else copyBytes(b, this.offsetAt(at), dst, to, inFrame);
      }
      done += inFrame;
    }
    return ok;
  }

  /** Copy `length` bytes of `src` from `offset` to `pa`. Returns false if any part failed. */
  writeBytes(pa: number, src: Uint8Array, offset = 0, length = src.length - offset): boolean {
    let ok = true;
    let done = 0;
    while (done < length) {
      const at = pa + done;
      const inFrame = Math.min(length - done, FRAME_SIZE - (at & FRAME_MASK));
      if (this.refusedBulk(at, inFrame, true)) {
        ok = false;
      } else {
        this.populate(at);
        copyBytes(src, offset + done, this.bytesAt(at) as Uint8Array, this.offsetAt(at), inFrame);
        this.onWrite?.(at, inFrame);
      }
      done += inFrame;
    }
    return ok;
  }

  /** Set `length` bytes at `pa` to `byte`. Filling unpopulated frames with zero keeps them sparse. */
  fill(pa: number, length: number, byte: number): boolean {
    let ok = true;
    let done = 0;
    while (done < length) {
      const at = pa + done;
      const inFrame = Math.min(length - done, FRAME_SIZE - (at & FRAME_MASK));
      if (this.refusedBulk(at, inFrame, true)) {
        ok = false;
      } else {
        if (byte !== 0 || this.populatedAt(at)) {
          this.populate(at);
          const off = this.offsetAt(at);
          (this.bytesAt(at) as Uint8Array).fill(byte, off, off + inFrame);
        }
        this.onWrite?.(at, inFrame);
      }
      done += inFrame;
    }
    return ok;
  }

  /** Copy `length` bytes from `srcPa` to `dstPa` (the ranges may overlap). */
  copy(dstPa: number, srcPa: number, length: number): boolean {
    const scratch = this.scratch;
    const tmp = scratch !== null && length <= scratch.length ? scratch : new Uint8Array(length);
    if (tmp === scratch) this.scratch = null;
    const okRead = this.readBytes(srcPa, tmp, 0, length);
    const okWrite = this.writeBytes(dstPa, tmp, 0, length);
    if (tmp === scratch) this.scratch = scratch;
    return okRead && okWrite;
  }

  /** Whether frame `pfn` holds data. */
  isPopulated(pfn: number): boolean {
    if (pfn < this.sectionPfns) {
      if (!(pfn >= 0) || (pfn | 0) !== pfn) return false;
      const s = this.sections[pfn >>> (SECTION_SHIFT - FRAME_SHIFT)];
      return s !== undefined && s[FLAGS + (pfn & FRAME_IN_SECTION)] !== 0;
    }
    return this.high.has(pfn);
  }

  /** Drop the backing of frame `pfn`: it reads as zeros again and costs nothing. */
  discardFrame(pfn: number): void {
    if (!this.isPopulated(pfn)) return;
    this.frames--;
    if (pfn >= this.sectionPfns) {
      this.high.delete(pfn);
      this.highBytes.delete(pfn);
      return;
    }
    const n = pfn >>> (SECTION_SHIFT - FRAME_SHIFT);
    if (--this.sectionFrames[n] === 0) {
      this.sections[n] = undefined;
      this.sectionBytes[n] = undefined;
      return;
    }
    // Unpopulated frames of a live section must hold zeros: reads and `fill(…, 0)` rely on it.
    const s = this.sections[n] as Uint32Array;
    const first = (pfn & FRAME_IN_SECTION) << (FRAME_SHIFT - 2);
    s.fill(0, first, first + (FRAME_SIZE >>> 2));
    s[FLAGS + (pfn & FRAME_IN_SECTION)] = 0;
  }

  /** The populated frame numbers, ascending. */
  populatedFrames(): number[] {
    const out: number[] = [];
    for (let n = 0; n < this.sections.length; n++) {
      const s = this.sections[n];
      if (s === undefined) continue;
      const base = n * FRAMES_PER_SECTION;
      for (let f = 0; f < FRAMES_PER_SECTION; f++) if (s[FLAGS + f] !== 0) out.push(base + f);
    }
    const high = [...this.high.keys()].sort((a, b) => a - b);
    for (const pfn of high) out.push(pfn);
    return out;
  }

  /**
   * The bytes of frame `pfn` (a live view, for image writers and decoders, valid until the frame
   * is discarded), or undefined when it was never written. Writes through this view are not
   * observed.
   */
  frameBytes(pfn: number): Uint8Array | undefined {
    if (!this.isPopulated(pfn)) return undefined;
    if (pfn >= this.sectionPfns) return this.highBytes.get(pfn);
    const b = this.sectionBytes[pfn >>> (SECTION_SHIFT - FRAME_SHIFT)] as Uint8Array;
    const at = (pfn & FRAME_IN_SECTION) << FRAME_SHIFT;
    return b.subarray(at, at + FRAME_SIZE);
  }

  /** Fails the access when it is out of range, not an integer, or the hook refuses it. */
  private refused(pa: number, bytes: number, write: boolean): boolean {
    if (!(pa >= 0) || pa + bytes > this.end || pa !== Math.floor(pa)) {
      this.busError = true;
      return true;
    }
    if (this.hook?.(pa, bytes, write)) {
      this.busError = true;
      return true;
    }
    return false;
  }

  private refusedBulk(pa: number, bytes: number, write: boolean): boolean {
    if (this.hook !== null || !(pa >= 0) || pa + bytes > this.end || !Number.isInteger(pa)) {
      return this.refused(pa, bytes, write);
    }
    return false;
  }

  private checkAlign(pa: number, bytes: number): void {
    if (pa % bytes !== 0)
      bug(`PhysMemory: misaligned ${bytes}-byte access at 0x${pa.toString(16)}`);
  }

  /** Offset of `pa` in the array `wordsAt`/`bytesAt` return for it (×4 for words). */
  private offsetAt(pa: number): number {
    return pa < this.sectionLimit ? pa & SECTION_MASK : pa & FRAME_MASK;
  }

  /** The words holding `pa` (a valid address), or undefined when nothing there was written. */
  private wordsAt(pa: number): Uint32Array | undefined {
    return pa < this.sectionLimit
      ? this.sections[pa >>> SECTION_SHIFT]
      : this.high.get(Math.floor(pa / FRAME_SIZE));
  }

  private bytesAt(pa: number): Uint8Array | undefined {
    return pa < this.sectionLimit
      ? this.sectionBytes[pa >>> SECTION_SHIFT]
      : this.highBytes.get(Math.floor(pa / FRAME_SIZE));
  }

  private populatedAt(pa: number): boolean {
    return this.isPopulated(Math.floor(pa / FRAME_SIZE));
  }

  /** Marks the frame of `pa` (a valid address) populated, backing it first; returns `wordsAt(pa)`. */
  private populate(pa: number): Uint32Array {
    if (pa < this.sectionLimit) {
      const n = pa >>> SECTION_SHIFT;
      let s = this.sections[n];
      if (s === undefined) {
        const buffer = new ArrayBuffer(SECTION_WORDS * 4);
        s = new Uint32Array(buffer);
        this.sections[n] = s;
        this.sectionBytes[n] = new Uint8Array(buffer);
      }
      const flag = FLAGS + ((pa >>> FRAME_SHIFT) & FRAME_IN_SECTION);
      if (s[flag] === 0) {
        s[flag] = 1;
        this.sectionFrames[n]++;
        this.frames++;
      }
      return s;
    }
    const pfn = Math.floor(pa / FRAME_SIZE);
    let w = this.high.get(pfn);
    if (w === undefined) {
      const buffer = new ArrayBuffer(FRAME_SIZE);
      w = new Uint32Array(buffer);
      this.high.set(pfn, w);
      this.highBytes.set(pfn, new Uint8Array(buffer));
      this.frames++;
    }
    return w;
  }
}

/** `dst.set(src.subarray(…))` without the view for short runs; `set` copies overlap correctly. */
function copyBytes(src: Uint8Array, from: number, dst: Uint8Array, to: number, length: number) {
  if (length <= SMALL_COPY && src.buffer !== dst.buffer) {
    for (let i = 0; i < length; i++) dst[to + i] = src[from + i];
  } else {
    dst.set(src.subarray(from, from + length), to);
  }
}
