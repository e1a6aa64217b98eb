// Checks every field table of iommu-sim must pass, for format/ test files: a round trip of every
// field at random values (also at an offset inside a larger array), and the reserved-bit mask.

import { fc } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import {
  decode,
  encode,
  encodeInto,
  type FieldValues,
  hasReservedBits,
  type Layout,
  reservedBitsSet,
} from "../platform/field-table.js";

/**
 * Every field at random values (addresses in place): encode, decode and compare; no reserved bit
 * is set by an encoding; `encodeInto` at an offset leaves the words around it alone.
 */
export function checkLayoutRoundTrip(layout: Layout, seed: number, numRuns = 200): void {
  fc.assert(
    fc.property(
      fc.array(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), {
        minLength: layout.fields.length,
        maxLength: layout.fields.length,
      }),
      (raws) => {
        const values: FieldValues = {};
        layout.fields.forEach((f, i) => {
          const raw = (raws[i] as bigint) & ((1n << BigInt(f.width)) - 1n);
          const v = f.addr ? raw << BigInt(f.lsb & 63) : raw;
          const asNumber = f.addr ? v < 1n << 53n : f.width <= 53;
          values[f.name] = asNumber ? Number(v) : v;
        });
        const w = encode(layout, values);
        expect(decode(layout, w)).toEqual(values);
        expect(hasReservedBits(layout, w)).toBe(false);
        const big = new Uint32Array(layout.words + 5).fill(0xdeadbeef);
        encodeInto(layout, values, big, 3);
        expect(Array.from(big.subarray(3, 3 + layout.words))).toEqual(Array.from(w));
        expect(Array.from(big.subarray(0, 3))).toEqual([0xdeadbeef, 0xdeadbeef, 0xdeadbeef]);
        expect(Array.from(big.subarray(3 + layout.words))).toEqual([0xdeadbeef, 0xdeadbeef]);
        expect(decode(layout, big, 3)).toEqual(values);
      },
    ),
    { seed, numRuns },
  );
}

/** Each bit no field covers, set alone, is reported as reserved; covered bits never are. */
export function checkLayoutReservedBits(layout: Layout): void {
  for (let b = 0; b < layout.bits; b++) {
    const w = new Uint32Array(layout.words);
    w[b >>> 5] = (1 << (b & 31)) >>> 0;
    const covered = layout.fields.some((f) => b >= f.lsb && b < f.lsb + f.width);
    expect(hasReservedBits(layout, w)).toBe(!covered);
    expect(reservedBitsSet(layout, w)).toEqual(covered ? [] : [b]);
  }
}

/** qw0..qwN of a word array as bigints, to compare with a spec's or kernel's 64-bit values. */
export function qwordsOf(w: ArrayLike<number>): bigint[] {
  const out: bigint[] = [];
  for (let i = 0; i < w.length; i += 2)
    out.push((BigInt((w[i + 1] as number) >>> 0) << 32n) | BigInt((w[i] as number) >>> 0));
  return out;
}

/** The word array of qwords given as bigints. */
export function wordsOfQwords(...qw: bigint[]): Uint32Array {
  const w = new Uint32Array(qw.length * 2);
  qw.forEach((q, i) => {
    w[2 * i] = Number(q & 0xffffffffn);
    w[2 * i + 1] = Number((q >> 32n) & 0xffffffffn);
  });
  return w;
}

/**
 * One `describe` per layout with the two checks every layout passes: a round trip of every field
 * at random values (fixed seed) and the reserved-bit mask.
 */
export function describeLayouts(layouts: readonly Layout[], seed = 0x5eed, numRuns = 40): void {
  for (const l of layouts) {
    describe(l.name, () => {
      it("round-trips every field, also at an offset", () =>
        checkLayoutRoundTrip(l, seed, numRuns));
      it("flags exactly the bits no field covers as reserved", () => checkLayoutReservedBits(l));
    });
  }
}
