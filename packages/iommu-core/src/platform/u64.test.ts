import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import {
  alignDown,
  alignUp,
  bits64,
  bitsOf,
  depositHi,
  depositLo,
  ffs53,
  fls53,
  fromBig,
  hiOf,
  isAligned,
  join,
  loOf,
  toBig,
  toHex,
} from "./u64.js";

const MAX53 = 2 ** 53 - 1;
/** Integers below 2^53, biased towards the edges of the 32-bit halves. */
const u53 = fc.oneof(
  fc.integer({ min: 0, max: MAX53 }),
  fc.integer({ min: 0, max: 0xffffffff }),
  fc.constantFrom(0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 52, MAX53),
);
const u32 = fc.integer({ min: 0, max: 0xffffffff });
/** A field [lsb, lsb + width) inside 64 bits, at most 53 wide. */
const field64 = fc
  .integer({ min: 0, max: 63 })
  .chain((lsb) => fc.tuple(fc.constant(lsb), fc.integer({ min: 0, max: Math.min(53, 64 - lsb) })));

const big = (x: number) => BigInt(x);
const fieldRef = (v: bigint, lsb: number, width: number) =>
  Number((v >> BigInt(lsb)) & ((1n << BigInt(width)) - 1n));

describe("fls53 / ffs53", () => {
  it("return -1 for 0", () => {
    expect(fls53(0)).toBe(-1);
    expect(ffs53(0)).toBe(-1);
  });

  it("find bits at the edges of both halves", () => {
    for (const n of [0, 1, 31, 32, 33, 51, 52]) {
      expect(fls53(2 ** n)).toBe(n);
      expect(ffs53(2 ** n)).toBe(n);
    }
    expect(fls53(MAX53)).toBe(52);
    expect(ffs53(MAX53)).toBe(0);
    expect(ffs53(2 ** 52 + 2 ** 40)).toBe(40);
  });

  test.prop([u53], { seed: 0x1553, numRuns: 2000 })(
    "fls53 is the bit length minus one and ffs53 the trailing-zero count (BigInt reference)",
    (x) => {
      const v = big(x);
      expect(fls53(x)).toBe(v.toString(2).length - 1 - (x === 0 ? 1 : 0));
      const tz = x === 0 ? -1 : v.toString(2).length - 1 - v.toString(2).lastIndexOf("1");
      expect(ffs53(x)).toBe(tz);
    },
  );
});

describe("bitsOf / bits64", () => {
  test.prop([u53, fc.integer({ min: 0, max: 52 }), fc.integer({ min: 0, max: 53 })], {
    seed: 0xb175,
    numRuns: 2000,
  })("bitsOf(x, lsb, width) equals (x >> lsb) & (2^width - 1) in BigInt", (x, lsb, width) => {
    expect(bitsOf(x, lsb, width)).toBe(fieldRef(big(x), lsb, width));
  });

  test.prop([u32, u32, field64], { seed: 0xb164, numRuns: 2000 })(
    "bits64(hi, lo, lsb, width) equals the BigInt field of hi:lo, also across the halves",
    (hi, lo, [lsb, width]) => {
      expect(bits64(hi, lo, lsb, width)).toBe(fieldRef((big(hi) << 32n) | big(lo), lsb, width));
    },
  );

  it("a 32-bit field at bit 0 keeps bit 31 unsigned", () => {
    expect(bitsOf(0xffffffff, 0, 32)).toBe(0xffffffff);
    expect(bits64(0, 0x80000000, 0, 32)).toBe(0x80000000);
    expect(bits64(0xffffffff, 0, 32, 32)).toBe(0xffffffff);
  });
});

describe("depositLo / depositHi", () => {
  test.prop([u32, u32, field64, u53], { seed: 0xde9, numRuns: 2000 })(
    "writing a field changes exactly its bits, to the value's low `width` bits (BigInt reference)",
    (hi, lo, [lsb, width], value) => {
      const v = (big(hi) << 32n) | big(lo);
      const mask = ((1n << BigInt(width)) - 1n) << BigInt(lsb);
      const want = (v & ~mask) | ((big(value) << BigInt(lsb)) & mask);
      expect(depositLo(lo, lsb, width, value)).toBe(Number(want & 0xffffffffn));
      expect(depositHi(hi, lsb, width, value)).toBe(Number(want >> 32n));
      const nlo = depositLo(lo, lsb, width, value);
      const nhi = depositHi(hi, lsb, width, value);
      expect(bits64(nhi, nlo, lsb, width)).toBe(fieldRef(big(value), 0, width));
    },
  );
});

describe("hiOf / loOf / join", () => {
  test.prop([u53], { seed: 0x501, numRuns: 1000 })(
    "split into uint32 halves and join back, matching BigInt shifts",
    (x) => {
      expect(hiOf(x)).toBe(Number(big(x) >> 32n));
      expect(loOf(x)).toBe(Number(big(x) & 0xffffffffn));
      expect(join(hiOf(x), loOf(x))).toBe(x);
    },
  );

  it("join treats a negative (int32) low half as unsigned", () => {
    expect(join(1, -1)).toBe(2 ** 33 - 1);
  });
});

describe("isAligned / alignDown / alignUp", () => {
  const sizes = fc.integer({ min: 0, max: 64 }).map((n) => 2 ** n);
  /** Multiples of 4096 below 2^65 (all exact doubles): IOVAs of the widest tables. */
  const pageAddr = fc.bigInt({ min: 0n, max: (1n << 53n) - 1n }).map((p) => p << 12n);

  test.prop([u53, sizes], { seed: 0xa11, numRuns: 2000 })(
    "match BigInt arithmetic for every integer below 2^53 and every power-of-two size",
    (x, size) => {
      const v = big(x);
      const s = BigInt(size);
      expect(isAligned(x, size)).toBe(v % s === 0n);
      expect(alignDown(x, size)).toBe(Number(v - (v % s)));
      const up = v % s === 0n ? v : v - (v % s) + s;
      expect(alignUp(x, size)).toBe(Number(up));
    },
  );

  test.prop([pageAddr, sizes], { seed: 0xa65, numRuns: 2000 })(
    "are exact for multiples of 4096 up to 2^65 (57-bit IOVAs and beyond)",
    (v, size) => {
      const x = Number(v);
      expect(BigInt(x)).toBe(v);
      const s = BigInt(size);
      expect(isAligned(x, size)).toBe(v % s === 0n);
      expect(BigInt(alignDown(x, size))).toBe(v - (v % s));
      if (v % s !== 0n && v - (v % s) + s < 1n << 65n) {
        expect(BigInt(alignUp(x, size))).toBe(v - (v % s) + s);
      }
    },
  );

  it("handle 2^64 - 4096 and sizes of 2^31, 2^32 and 2^64", () => {
    const top = 2 ** 64 - 4096;
    expect(isAligned(top, 4096)).toBe(true);
    expect(isAligned(top, 8192)).toBe(false);
    expect(alignDown(top, 2 ** 32)).toBe(2 ** 64 - 2 ** 32);
    expect(alignUp(top, 2 ** 31)).toBe(2 ** 64);
    expect(alignDown(top, 2 ** 64)).toBe(0);
    expect(alignUp(top, 2 ** 64)).toBe(2 ** 64);
  });
});

describe("toHex", () => {
  it("prints numbers and BigInts the same way, with optional zero padding", () => {
    expect(toHex(0)).toBe("0x0");
    expect(toHex(255)).toBe("0xff");
    expect(toHex(2 ** 52)).toBe("0x10000000000000");
    expect(toHex(0xffffffffffffffffn)).toBe("0xffffffffffffffff");
    expect(toHex(0x1234, 8)).toBe("0x00001234");
    expect(toHex(5n, 4)).toBe("0x0005");
    expect(toHex(-16)).toBe("-0x10");
  });
});

describe("toBig / fromBig", () => {
  test.prop([u32, u32], { seed: 0xb16, numRuns: 500 })(
    "are inverse on the two uint32 halves",
    (hi, lo) => {
      const v = toBig(hi, lo);
      expect(v).toBe((big(hi) << 32n) | big(lo));
      expect(fromBig(v)).toEqual({ hi, lo });
    },
  );

  it("fromBig takes values modulo 2^64", () => {
    expect(fromBig(-1n)).toEqual({ hi: 0xffffffff, lo: 0xffffffff });
    expect(fromBig((1n << 64n) + 5n)).toEqual({ hi: 0, lo: 5 });
  });
});
