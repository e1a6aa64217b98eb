// Simulated physical memory: sparse 4 KiB frames, the one place where drivers, hardware models and
// devices meet.

import { bug } from "./bug.js";

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
const PAGE_MASK = PAGE_SIZE - 1;
/** Frame numbers below this are found by indexing an array; above it, through a Map. */
const LOW_PFNS = 1 << 20;
const TWO32 = 4294967296;

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
 * Sparse physical memory in 4 KiB frames. A frame that was never written reads as zeros and costs
 * nothing. 64-bit values are read and written as two 32-bit halves (`read64` returns the low half
 * and leaves the high half in `hi`), so no path that runs per DMA or per table entry allocates or
 * uses BigInt; `read64Big`/`write64Big` are the conveniences for the edges.
 *
 * An access outside the physical address space, or one the fault hook rejects, does not throw: a
 * read returns 0, a write is dropped, and `busError` is set until the caller clears it, which is
 * how a hardware model notices an external abort on a table walk.
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
  /** Injects bus errors; null by default. */
  faultHook: FaultHook | null = null;

  private readonly low: (Uint32Array | undefined)[] = [];
  private readonly lowBytes: (Uint8Array | undefined)[] = [];
  private readonly high = new Map<number, Uint32Array>();
  private readonly highBytes = new Map<number, Uint8Array>();
  private frames = 0;

  constructor(options: PhysMemoryOptions = {}) {
    const paBits = options.paBits ?? 52;
    if (!Number.isInteger(paBits) || paBits < 12 || paBits > 52) {
      bug(`PhysMemory: paBits ${paBits} is outside [12, 52]`);
    }
    this.paBits = paBits;
    this.pfnLimit = 2 ** (paBits - PAGE_SHIFT);
  }

  /** Number of frames that hold data (were written at least once and not discarded). */
  get populatedFrameCount(): number {
    return this.frames;
  }

  /** Whether `pa` lies inside the physical address space. */
  inRange(pa: number, bytes = 1): boolean {
    return pa >= 0 && pa + bytes <= this.pfnLimit * PAGE_SIZE;
  }

  /** The words of frame `pfn`, or undefined when it was never written. */
  private words(pfn: number): Uint32Array | undefined {
    return pfn < LOW_PFNS ? this.low[pfn] : this.high.get(pfn);
  }

  private bytesOf(pfn: number): Uint8Array | undefined {
    return pfn < LOW_PFNS ? this.lowBytes[pfn] : this.highBytes.get(pfn);
  }

  /** The words of frame `pfn`, created (zeroed) if it did not exist. */
  private populate(pfn: number): Uint32Array {
    let w = this.words(pfn);
    if (w === undefined) {
      const buffer = new ArrayBuffer(PAGE_SIZE);
      w = new Uint32Array(buffer);
      const b = new Uint8Array(buffer);
      if (pfn < LOW_PFNS) {
        while (this.low.length < pfn) {
          this.low.push(undefined);
          this.lowBytes.push(undefined);
        }
        this.low[pfn] = w;
        this.lowBytes[pfn] = b;
      } else {
        this.high.set(pfn, w);
        this.highBytes.set(pfn, b);
      }
      this.frames++;
    }
    return w;
  }

  /** Fails the access when it is out of range or the hook refuses it. */
  private refused(pa: number, bytes: number, write: boolean): boolean {
    if (pa < 0 || pa + bytes > this.pfnLimit * PAGE_SIZE || pa !== Math.floor(pa)) {
      this.busError = true;
      return true;
    }
    if (this.faultHook?.(pa, bytes, write)) {
      this.busError = true;
      return true;
    }
    return false;
  }

  private checkAlign(pa: number, bytes: number): void {
    if (pa % bytes !== 0)
      bug(`PhysMemory: misaligned ${bytes}-byte access at 0x${pa.toString(16)}`);
  }

  // The fast paths test `!(pa >= 0)`, not `pa < 0`, so that a NaN address takes the checked path
  // and fails like any other address outside the space instead of populating a NaN frame.
  read8(pa: number): number {
    if (this.faultHook !== null || !(pa >= 0) || pa >= this.pfnLimit * PAGE_SIZE) {
      if (this.refused(pa, 1, false)) return 0;
    }
    const b = this.bytesOf(Math.floor(pa / PAGE_SIZE));
    return b === undefined ? 0 : b[pa & PAGE_MASK];
  }

  read16(pa: number): number {
    if ((pa & 1) !== 0) this.checkAlign(pa, 2);
    if (this.faultHook !== null || !(pa >= 0) || pa >= this.pfnLimit * PAGE_SIZE) {
      if (this.refused(pa, 2, false)) return 0;
    }
    const w = this.words(Math.floor(pa / PAGE_SIZE));
    if (w === undefined) return 0;
    return (w[(pa & PAGE_MASK) >>> 2] >>> ((pa & 2) << 3)) & 0xffff;
  }

  /** A 32-bit read, as an unsigned number. */
  read32(pa: number): number {
    if ((pa & 3) !== 0) this.checkAlign(pa, 4);
    if (this.faultHook !== null || !(pa >= 0) || pa >= this.pfnLimit * PAGE_SIZE) {
      if (this.refused(pa, 4, false)) return 0;
    }
    const w = this.words(Math.floor(pa / PAGE_SIZE));
    return w === undefined ? 0 : w[(pa & PAGE_MASK) >>> 2];
  }

  /** A 64-bit read: returns the low 32 bits (unsigned) and leaves the high 32 bits in `hi`. */
  read64(pa: number): number {
    if ((pa & 7) !== 0) this.checkAlign(pa, 8);
    if (this.faultHook !== null || !(pa >= 0) || pa >= this.pfnLimit * PAGE_SIZE) {
      if (this.refused(pa, 8, false)) {
        this.hi = 0;
        return 0;
      }
    }
    const w = this.words(Math.floor(pa / PAGE_SIZE));
    if (w === undefined) {
      this.hi = 0;
      return 0;
    }
    const i = (pa & PAGE_MASK) >>> 2;
    this.hi = w[i + 1];
    return w[i];
  }

  write8(pa: number, value: number): void {
    if (this.refusedWrite(pa, 1)) return;
    const pfn = Math.floor(pa / PAGE_SIZE);
    this.populate(pfn);
    (this.bytesOf(pfn) as Uint8Array)[pa & PAGE_MASK] = value;
    this.onWrite?.(pa, 1);
  }

  write16(pa: number, value: number): void {
    if ((pa & 1) !== 0) this.checkAlign(pa, 2);
    if (this.refusedWrite(pa, 2)) return;
    const pfn = Math.floor(pa / PAGE_SIZE);
    this.populate(pfn);
    const b = this.bytesOf(pfn) as Uint8Array;
    const off = pa & PAGE_MASK;
    b[off] = value;
    b[off + 1] = value >>> 8;
    this.onWrite?.(pa, 2);
  }

  write32(pa: number, value: number): void {
    if ((pa & 3) !== 0) this.checkAlign(pa, 4);
    if (this.refusedWrite(pa, 4)) return;
    const w = this.populate(Math.floor(pa / PAGE_SIZE));
    w[(pa & PAGE_MASK) >>> 2] = value;
    this.onWrite?.(pa, 4);
  }

  /** A 64-bit store of `hi:lo`, seen by the write observer as one store. */
  write64(pa: number, lo: number, hi: number): void {
    if ((pa & 7) !== 0) this.checkAlign(pa, 8);
    if (this.refusedWrite(pa, 8)) return;
    const w = this.populate(Math.floor(pa / PAGE_SIZE));
    const i = (pa & PAGE_MASK) >>> 2;
    w[i] = lo;
    w[i + 1] = hi;
    this.onWrite?.(pa, 8);
  }

  private refusedWrite(pa: number, bytes: number): boolean {
    if (this.faultHook !== null || !(pa >= 0) || pa + bytes > this.pfnLimit * PAGE_SIZE) {
      return this.refused(pa, bytes, true);
    }
    return false;
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
      const inFrame = Math.min(length - done, PAGE_SIZE - (at & PAGE_MASK));
      if (this.refusedBulk(at, inFrame, false)) {
        dst.fill(0, offset + done, offset + done + inFrame);
        ok = false;
      } else {
        const b = this.bytesOf(Math.floor(at / PAGE_SIZE));
        const off = at & PAGE_MASK;
        if (b === undefined) dst.fill(0, offset + done, offset + done + inFrame);
        else dst.set(b.subarray(off, off + inFrame), offset + done);
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
      const inFrame = Math.min(length - done, PAGE_SIZE - (at & PAGE_MASK));
      if (this.refusedBulk(at, inFrame, true)) {
        ok = false;
      } else {
        const pfn = Math.floor(at / PAGE_SIZE);
        this.populate(pfn);
        (this.bytesOf(pfn) as Uint8Array).set(
          src.subarray(offset + done, offset + done + inFrame),
          at & PAGE_MASK,
        );
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
      const inFrame = Math.min(length - done, PAGE_SIZE - (at & PAGE_MASK));
      if (this.refusedBulk(at, inFrame, true)) {
        ok = false;
      } else {
        const pfn = Math.floor(at / PAGE_SIZE);
        if (byte !== 0 || this.words(pfn) !== undefined) {
          this.populate(pfn);
          const off = at & PAGE_MASK;
          (this.bytesOf(pfn) as Uint8Array).fill(byte, off, off + inFrame);
        }
        this.onWrite?.(at, inFrame);
      }
      done += inFrame;
    }
    return ok;
  }

  /** Copy `length` bytes from `srcPa` to `dstPa` (the ranges may overlap). */
  copy(dstPa: number, srcPa: number, length: number): boolean {
    const tmp = new Uint8Array(length);
    const okRead = this.readBytes(srcPa, tmp);
    const okWrite = this.writeBytes(dstPa, tmp);
    return okRead && okWrite;
  }

  private refusedBulk(pa: number, bytes: number, write: boolean): boolean {
    if (this.faultHook !== null || !(pa >= 0) || pa + bytes > this.pfnLimit * PAGE_SIZE) {
      return this.refused(pa, bytes, write);
    }
    return false;
  }

  /** Whether frame `pfn` holds data. */
  isPopulated(pfn: number): boolean {
    return this.words(pfn) !== undefined;
  }

  /** Drop the backing of frame `pfn`: it reads as zeros again and costs nothing. */
  discardFrame(pfn: number): void {
    if (this.words(pfn) === undefined) return;
    if (pfn < LOW_PFNS) {
      this.low[pfn] = undefined;
      this.lowBytes[pfn] = undefined;
    } else {
      this.high.delete(pfn);
      this.highBytes.delete(pfn);
    }
    this.frames--;
  }

  /** The populated frame numbers, ascending. */
  populatedFrames(): number[] {
    const out: number[] = [];
    for (let pfn = 0; pfn < this.low.length; pfn++) if (this.low[pfn] !== undefined) out.push(pfn);
    const high = [...this.high.keys()].sort((a, b) => a - b);
    for (const pfn of high) out.push(pfn);
    return out;
  }

  /**
   * The bytes of frame `pfn` (a live view, for image writers and decoders), or undefined when it
   * was never written. Writes through this view are not observed.
   */
  frameBytes(pfn: number): Uint8Array | undefined {
    return this.bytesOf(pfn);
  }
}
