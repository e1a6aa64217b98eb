// 64-bit values on 32-bit operations: the one module page tables and field tables use for bits
// above 31, addresses above 2^32 and the halves of 64-bit entries.

/** 2^32, the weight of the high half. */
export const TWO32 = 4294967296;

/** POW2[n] = 2^n for n in [0, 64]: exact, and cheaper than `2 ** n` in a loop. */
const POW2 = new Float64Array(65);
for (let n = 0; n <= 64; n++) POW2[n] = 2 ** n;

/**
 * Index of the most significant set bit of `x` (a non-negative integer below 2^53), or -1 for 0.
 * Counts from 0, so it is the kernel's fls64(x) - 1 (`__fls`, defined for 0 too).
 *
 * @kernel include/asm-generic/bitops/fls64.h fls64
 */
export function fls53(x: number): number {
  if (x < TWO32) return 31 - Math.clz32(x);
  return 63 - Math.clz32(Math.floor(x / TWO32));
}

/**
 * Index of the least significant set bit of `x` (a non-negative integer below 2^53), or -1 for 0
 * (where the kernel's `__ffs` is undefined).
 *
 * @kernel include/asm-generic/bitops/__ffs.h __ffs
 */
export function ffs53(x: number): number {
  // `>>> 0` is ToUint32, which the language defines as exact modulo 2^32 for any integral double.
  const lo = x >>> 0;
  if (lo !== 0) return 31 - Math.clz32(lo & -lo);
  const hi = Math.floor(x / TWO32);
  if (hi === 0) return -1;
  return 63 - Math.clz32(hi & -hi);
}

/**
 * Bits [lsb, lsb + width) of `x`, a non-negative integer below 2^53, shifted down to bit 0.
 * `width` may be 0 to 53, and lsb + width ≤ 64 (bits from 53 up read as 0). Division and remainder by powers of two are exact on doubles, so this
 * needs no BigInt.
 */
export function bitsOf(x: number, lsb: number, width: number): number {
  if (x < TWO32 && lsb + width <= 32) {
    return width === 32 ? x >>> 0 : (x >>> lsb) & ((1 << width) - 1);
  }
  return Math.floor(x / POW2[lsb]) % POW2[width];
}

/**
 * Bits [lsb, lsb + width) of the 64-bit value `hi:lo` (two uint32 halves), shifted down to bit 0:
 * the decoder of a field in a 64-bit table entry. `width` may be 0 to 53; lsb + width ≤ 64.
 *
 * @kernel include/linux/bitfield.h FIELD_GET
 */
export function bits64(hi: number, lo: number, lsb: number, width: number): number {
  if (lsb >= 32) return bitsOf(hi >>> 0, lsb - 32, width);
  if (lsb + width <= 32) return bitsOf(lo >>> 0, lsb, width);
  // The field straddles the halves: its low part is lo's top (32 - lsb) bits.
  const lowWidth = 32 - lsb;
  return bitsOf(hi >>> 0, 0, width - lowWidth) * POW2[lowWidth] + ((lo >>> 0) >>> lsb);
}

/**
 * The low half `lo` of a 64-bit value with the part of field [lsb, lsb + width) that lies in bits
 * 0..31 replaced by the matching bits of `value` (a non-negative integer below 2^53). Together with
 * `depositHi` it encodes a field without building a 64-bit value.
 *
 * @kernel include/linux/bitfield.h FIELD_PREP
 */
export function depositLo(lo: number, lsb: number, width: number, value: number): number {
  if (lsb >= 32 || width === 0) return lo >>> 0;
  const w = Math.min(width, 32 - lsb);
  const mask = (w === 32 ? 0xffffffff : (1 << w) - 1) << lsb;
  return ((lo & ~mask) | ((value << lsb) & mask)) >>> 0;
}

/** The high half `hi` with the part of field [lsb, lsb + width) in bits 32..63 set from `value`. */
export function depositHi(hi: number, lsb: number, width: number, value: number): number {
  const end = lsb + width;
  if (end <= 32 || width === 0) return hi >>> 0;
  const from = lsb >= 32 ? lsb - 32 : 0;
  // Bits of `value` that land in the high half start at `skip`.
  const skip = lsb >= 32 ? 0 : 32 - lsb;
  const w = end - 32 - from;
  const part = bitsOf(value, skip, w);
  const mask = (w === 32 ? 0xffffffff : (1 << w) - 1) << from;
  return ((hi & ~mask) | ((part << from) & mask)) >>> 0;
}

/** High 32 bits of a non-negative integer below 2^53 (at most 2^21 - 1). */
export function hiOf(x: number): number {
  return Math.floor(x / TWO32);
}

/** Low 32 bits of an integer below 2^53, as a uint32. */
export function loOf(x: number): number {
  return x >>> 0;
}

/** The number `hi * 2^32 + lo`; exact when `hi` < 2^21, which the caller guarantees. */
export function join(hi: number, lo: number): number {
  return (hi >>> 0) * TWO32 + (lo >>> 0);
}

/**
 * Whether `x` is a multiple of `size`, a power of two up to 2^64. Exact for every integer below
 * 2^53 and for every multiple of 4096 below 2^65 (IOVAs of 5-level tables): those are all exact
 * doubles, and both `&` (through ToInt32) and `%` on doubles are exact.
 *
 * @kernel include/linux/align.h IS_ALIGNED
 */
export function isAligned(x: number, size: number): boolean {
  return size <= 0x80000000 ? (x & (size - 1)) === 0 : x % size === 0;
}

/**
 * `x` rounded down to a multiple of `size` (a power of two), under the same exactness rule as
 * `isAligned`.
 *
 * @kernel include/linux/align.h ALIGN_DOWN
 */
export function alignDown(x: number, size: number): number {
  return x - (size <= 0x80000000 ? x & (size - 1) : x % size);
}

/**
 * `x` rounded up to a multiple of `size` (a power of two). Computed as down-then-add, not as
 * `(x + size - 1) & ~(size - 1)`: above 2^53 `x + size - 1` would round.
 *
 * @kernel include/linux/align.h ALIGN
 */
export function alignUp(x: number, size: number): number {
  const r = size <= 0x80000000 ? x & (size - 1) : x % size;
  return r === 0 ? x : x - r + size;
}

/**
 * `x` as "0x…" in lower-case hex, zero-padded to `digits` digits when given; a negative value gets
 * a leading "-". For printing (logs, errors, the CLI), never for arithmetic.
 */
export function toHex(x: number | bigint, digits = 0): string {
  const negative = x < 0;
  const magnitude = negative ? -x : x;
  const s = magnitude.toString(16).padStart(digits, "0");
  return negative ? `-0x${s}` : `0x${s}`;
}

/** The 64-bit value `hi:lo` as a BigInt, for the edges (decoders, the CLI). */
export function toBig(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** A BigInt (taken modulo 2^64) as its two uint32 halves, for the edges. */
export function fromBig(v: bigint): { hi: number; lo: number } {
  const u = BigInt.asUintN(64, v);
  return { hi: Number(u >> 32n), lo: Number(u & 0xffffffffn) };
}
