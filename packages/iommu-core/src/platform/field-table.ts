// Field tables: every hardware layout (register, table entry, descriptor, record) declared once,
// with the encoder, decoder, reserved-bit check and printer derived from that one declaration.
//
// A layout is a little-endian structure of 32-bit words (a 64-bit entry is words 0 and 1, the
// low half first, as it sits in memory). Field positions count from bit 0 of word 0, as the specs
// number the bits of 128-, 256- and 512-bit structures. Shift and mask constants are computed once
// when the table is defined; hot paths copy them into module constants and never look fields up.

import { bug } from "./bug.js";
import type { PhysMemory } from "./phys-memory.js";
import { toHex } from "./u64.js";

/** How a field is declared. */
export interface FieldSpec {
  /** The spec's name for the field (`SLPTPTR`, `PGTT`, `S1ContextPtr`). */
  readonly name: string;
  /** Position of the field's least significant bit, counted over the whole layout. */
  readonly lsb: number;
  /** Width in bits, 1 to 64. */
  readonly width: number;
  /**
   * An address field: the value is the address bits in place (bits lsb.. of the address, the
   * bits below lsb zero), so `decode` and the printer show `raw * 2^(lsb mod 64)`.
   */
  readonly addr?: boolean;
  /** Named encodings (`{ 1: "first-stage", 2: "second-stage" }`), for printing. */
  readonly values?: Readonly<Record<number, string>>;
  /** Ignored by hardware (software-available, "AVAIL", "IGN"): never a reserved-bit violation. */
  readonly ignored?: boolean;
  /** One line on what the field means. */
  readonly doc?: string;
}

/** A field with its derived constants. */
export interface Field extends FieldSpec {
  /** Index of the 32-bit word holding the least significant bit. */
  readonly word: number;
  /** Bit position of the least significant bit inside that word. */
  readonly shift: number;
  /** `(1 << width) - 1` as uint32 when the field fits in its word (`single`), else 0. */
  readonly mask: number;
  /** The field lies inside one 32-bit word: `(w[word] >>> shift) & mask` reads it. */
  readonly single: boolean;
  /** `mask << shift` as uint32 (the field's bits in its word) when `single`, else 0. */
  readonly inPlace: number;
}

/** How a layout is declared. */
export interface LayoutSpec {
  readonly name: string;
  /** Size in bits: a multiple of 32. */
  readonly bits: number;
  /** Where the layout is defined (`@spec` reference). */
  readonly spec: string;
  readonly fields: readonly FieldSpec[];
}

/** A frozen layout with derived constants. */
export interface Layout {
  readonly name: string;
  readonly bits: number;
  readonly spec: string;
  /** Number of 32-bit words. */
  readonly words: number;
  /** Fields in declaration order. */
  readonly fields: readonly Field[];
  /** Fields by name. */
  readonly field: Readonly<Record<string, Field>>;
  /**
   * Per 32-bit word, the bits no field covers: reserved bits. Layouts whose reserved set depends on
   * the configuration (bits above the address width, bits reserved only in some mode) add those
   * checks themselves.
   */
  readonly reserved: Uint32Array;
}

/** A value of a field: a number when it fits in 53 bits, a bigint for wider fields. */
export type FieldValue = number | bigint;

/** Values by field name, as `decode` returns and `encode` takes them. */
export type FieldValues = Record<string, FieldValue>;

const POW2 = new Float64Array(65);
for (let n = 0; n <= 64; n++) POW2[n] = 2 ** n;

/** Declare a layout. Throws (a model bug) on overlapping or out-of-range fields. */
export function defineLayout(spec: LayoutSpec): Layout {
  if (spec.bits <= 0 || spec.bits % 32 !== 0)
    bug(`${spec.name}: size ${spec.bits} is not whole words`);
  const words = spec.bits / 32;
  const covered = new Uint32Array(words);
  const fields: Field[] = [];
  const byName: Record<string, Field> = {};
  for (const f of spec.fields) {
    if (f.width < 1 || f.width > 64 || f.lsb < 0 || f.lsb + f.width > spec.bits) {
      bug(`${spec.name}.${f.name}: bits ${f.lsb}+${f.width} outside the layout`);
    }
    if (byName[f.name] !== undefined) bug(`${spec.name}.${f.name}: declared twice`);
    for (let b = f.lsb; b < f.lsb + f.width; b++) {
      const w = b >>> 5;
      const m = 1 << (b & 31);
      if ((covered[w] as number) & m)
        bug(`${spec.name}.${f.name}: bit ${b} overlaps another field`);
      covered[w] = ((covered[w] as number) | m) >>> 0;
    }
    const shift = f.lsb & 31;
    const single = shift + f.width <= 32;
    const mask = single ? (f.width === 32 ? 0xffffffff : (1 << f.width) - 1) >>> 0 : 0;
    const field: Field = Object.freeze({
      ...f,
      word: f.lsb >>> 5,
      shift,
      mask,
      single,
      inPlace: single ? (mask << shift) >>> 0 : 0,
    });
    fields.push(field);
    byName[f.name] = field;
  }
  const reserved = new Uint32Array(words);
  for (let w = 0; w < words; w++) reserved[w] = ~(covered[w] as number) >>> 0;
  return Object.freeze({
    name: spec.name,
    bits: spec.bits,
    spec: spec.spec,
    words,
    fields: Object.freeze(fields),
    field: Object.freeze(byName),
    reserved,
  });
}

/**
 * The bits of `f` that fall in 32-bit word `word` of its layout (for a 64-bit entry: 0 the low
 * half, 1 the high half), in place, as a uint32: the mask hot paths test entry halves with.
 */
export function wordMask(f: Field, word: number): number {
  const base = 32 * word;
  let m = 0;
  for (let b = Math.max(f.lsb, base); b < Math.min(f.lsb + f.width, base + 32); b++) {
    m |= 1 << (b - base);
  }
  return m >>> 0;
}

/**
 * The bits of the fields `names` over the whole layout, one uint32 per word: the masks that say
 * which bits of an entry a configuration uses.
 */
export function fieldsMask(layout: Layout, names: readonly string[]): Uint32Array {
  const m = new Uint32Array(layout.words);
  for (const n of names) {
    const f = fieldOf(layout, n);
    for (let b = f.lsb; b < f.lsb + f.width; b++)
      m[b >>> 5] = ((m[b >>> 5] as number) | (1 << (b & 31))) >>> 0;
  }
  return m;
}

/** The field `name` of `layout`; a missing name is a model bug. */
export function fieldOf(layout: Layout, name: string): Field {
  const f = layout.field[name];
  if (f === undefined) bug(`${layout.name} has no field ${name}`);
  return f;
}

/**
 * Read a field of at most 53 bits from `w[base..]` as a number (raw, not in place). Wider fields
 * are read exactly by `getFieldBig`; here their bits from 53 up are dropped.
 */
export function getField(f: Field, w: ArrayLike<number>, base = 0): number {
  if (f.single) return (((w[base + f.word] as number) >>> f.shift) & f.mask) >>> 0;
  let value = 0;
  let got = 0;
  let bit = f.lsb;
  while (got < f.width && got < 53) {
    const word = bit >>> 5;
    const sh = bit & 31;
    const take = Math.min(32 - sh, f.width - got, 53 - got);
    const part =
      (((w[base + word] as number) >>> sh) & (take === 32 ? 0xffffffff : (1 << take) - 1)) >>> 0;
    value += part * (POW2[got] as number);
    got += take;
    bit += take;
  }
  return value;
}

/** Read a field of any width exactly, as a bigint (raw, not in place). */
export function getFieldBig(f: Field, w: ArrayLike<number>, base = 0): bigint {
  let value = 0n;
  for (let i = 0; i < f.width; i++) {
    const b = f.lsb + i;
    if (((w[base + (b >>> 5)] as number) >>> (b & 31)) & 1) value |= 1n << BigInt(i);
  }
  return value;
}

/**
 * Write a raw field value into `w[base..]`. A value that does not fit the field, or a negative or
 * fractional number, is a model bug (encoders are fed by our own code; guest input is decoded).
 */
export function setField(f: Field, w: Uint32Array | number[], value: FieldValue, base = 0): void {
  if (typeof value === "number") {
    if (
      !Number.isInteger(value) ||
      value < 0 ||
      (f.width < 53 && value >= (POW2[f.width] as number))
    ) {
      bug(`${f.name}: ${value} does not fit in ${f.width} bits`);
    }
    if (f.single) {
      const i = base + f.word;
      w[i] = (((w[i] as number) & ~f.inPlace) | ((value << f.shift) & f.inPlace)) >>> 0;
      return;
    }
    value = BigInt(value);
  }
  if (value < 0n || value >= 1n << BigInt(f.width))
    bug(`${f.name}: ${value} does not fit in ${f.width} bits`);
  for (let i = 0; i < f.width; i++) {
    const b = f.lsb + i;
    const idx = base + (b >>> 5);
    const m = 1 << (b & 31);
    const on = (value >> BigInt(i)) & 1n;
    w[idx] = (on ? (w[idx] as number) | m : (w[idx] as number) & ~m) >>> 0;
  }
}

/** The in-place value of an address field (`raw * 2^(lsb mod 64)`), exact below 2^53. */
function addrOf(f: Field, raw: number): number {
  return raw * (POW2[f.lsb & 63] as number);
}

/**
 * Encode `values` (by field name; missing fields are 0) into a new word array. Address fields
 * take the address in place (their low bits must be zero); other fields take the raw value.
 */
export function encode(layout: Layout, values: FieldValues): Uint32Array {
  const w = new Uint32Array(layout.words);
  encodeInto(layout, values, w);
  return w;
}

/** `encode` into `w[base..]`, first clearing the layout's words. */
export function encodeInto(
  layout: Layout,
  values: FieldValues,
  w: Uint32Array | number[],
  base = 0,
): void {
  for (let i = 0; i < layout.words; i++) w[base + i] = 0;
  for (const name of Object.keys(values)) {
    const f = fieldOf(layout, name);
    let v = values[name] as FieldValue;
    if (f.addr) {
      const unit = f.lsb & 63;
      if (typeof v === "number") {
        if (v % (POW2[unit] as number) !== 0)
          bug(`${layout.name}.${name}: ${toHex(v)} is not aligned to 2^${unit}`);
        v = v / (POW2[unit] as number);
      } else {
        if (v & ((1n << BigInt(unit)) - 1n))
          bug(`${layout.name}.${name}: 0x${v.toString(16)} is not aligned`);
        v >>= BigInt(unit);
      }
    }
    setField(f, w, v, base);
  }
}

/**
 * Decode every field of `w[base..]`: numbers for fields of up to 53 bits, bigints for wider ones;
 * address fields in place, as a number whenever the address is below 2^53 (physical addresses
 * always are) and as a bigint above.
 */
export function decode(layout: Layout, w: ArrayLike<number>, base = 0): FieldValues {
  const out: FieldValues = {};
  for (const f of layout.fields) out[f.name] = fieldValue(f, w, base);
  return out;
}

/** One field's decoded value, as `decode` gives it. */
export function fieldValue(f: Field, w: ArrayLike<number>, base = 0): FieldValue {
  if (f.addr) {
    const top = f.lsb + f.width - (f.lsb & ~63); // bit width of the address
    if (top <= 53) return addrOf(f, getField(f, w, base));
    const big = getFieldBig(f, w, base) << BigInt(f.lsb & 63);
    return big < 1n << 53n ? Number(big) : big;
  }
  if (f.width <= 53) return getField(f, w, base);
  return getFieldBig(f, w, base);
}

/** Whether any reserved bit (any bit no field covers) is set in `w[base..]`. */
export function hasReservedBits(layout: Layout, w: ArrayLike<number>, base = 0): boolean {
  for (let i = 0; i < layout.words; i++) {
    if (((w[base + i] as number) & (layout.reserved[i] as number)) !== 0) return true;
  }
  return false;
}

/** The set reserved bits of `w[base..]`, as bit positions over the whole layout. */
export function reservedBitsSet(layout: Layout, w: ArrayLike<number>, base = 0): number[] {
  const out: number[] = [];
  for (let i = 0; i < layout.words; i++) {
    let bad = ((w[base + i] as number) & (layout.reserved[i] as number)) >>> 0;
    while (bad !== 0) {
      const b = 31 - Math.clz32(bad & -bad);
      out.push(i * 32 + b);
      bad = (bad & (bad - 1)) >>> 0;
    }
  }
  return out;
}

/** Options of `formatLayout`. */
export interface FormatOptions {
  /** Print fields whose value is 0 too (default: only non-zero ones, and always the first). */
  readonly all?: boolean;
}

/**
 * One line: `NAME=value` for each field (hex for addresses and wide fields, the named encoding in
 * parentheses where there is one), then `RESERVED=...` if reserved bits are set.
 */
export function formatLayout(
  layout: Layout,
  w: ArrayLike<number>,
  base = 0,
  options: FormatOptions = {},
): string {
  const parts: string[] = [];
  layout.fields.forEach((f, i) => {
    const v = fieldValue(f, w, base);
    if (!options.all && i !== 0 && (v === 0 || v === 0n)) return;
    parts.push(`${f.name}=${formatFieldValue(f, v)}`);
  });
  const bad = reservedBitsSet(layout, w, base);
  if (bad.length > 0) parts.push(`RESERVED=[${bad.join(",")}]`);
  return parts.join(" ");
}

/** A field value as the printer shows it. */
export function formatFieldValue(f: Field, v: FieldValue): string {
  const named = typeof v === "number" ? f.values?.[v] : undefined;
  if (named !== undefined) return `${named}(${v})`;
  if (f.addr || f.width > 8) return typeof v === "bigint" ? `0x${v.toString(16)}` : toHex(v);
  return String(v);
}

/** Read `layout.words` words at `pa` into `out[base..]` (32-bit reads). Returns `out`. */
export function loadLayout(
  mem: PhysMemory,
  layout: Layout,
  pa: number,
  out: Uint32Array = new Uint32Array(layout.words),
  base = 0,
): Uint32Array {
  for (let i = 0; i < layout.words; i++) out[base + i] = mem.read32(pa + 4 * i);
  return out;
}

/** Write `w[base..]` (`layout.words` words) at `pa`, as 64-bit stores where words pair up. */
export function storeLayout(
  mem: PhysMemory,
  layout: Layout,
  pa: number,
  w: ArrayLike<number>,
  base = 0,
): void {
  let i = 0;
  for (; i + 1 < layout.words; i += 2)
    mem.write64(pa + 4 * i, w[base + i] as number, w[base + i + 1] as number);
  if (i < layout.words) mem.write32(pa + 4 * i, w[base + i] as number);
}
