import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { ModelBug } from "./bug.js";
import {
  decode,
  defineLayout,
  encode,
  fieldOf,
  fieldsMask,
  formatLayout,
  getField,
  getFieldBig,
  hasReservedBits,
  loadLayout,
  reservedBitsSet,
  setField,
  storeLayout,
} from "./field-table.js";
import { PhysMemory } from "./phys-memory.js";

// A 128-bit layout shaped like a legacy VT-d context entry, with a field straddling two words
// and a 64-bit field in the second qword.
const CTX = defineLayout({
  name: "test-context",
  bits: 128,
  spec: "test",
  fields: [
    { name: "P", lsb: 0, width: 1 },
    { name: "TT", lsb: 2, width: 2, values: { 0: "untranslated", 2: "pass-through" } },
    { name: "AVAIL", lsb: 4, width: 4, ignored: true },
    { name: "PTR", lsb: 12, width: 52, addr: true },
    { name: "DID", lsb: 72, width: 16 },
    { name: "STRADDLE", lsb: 88, width: 12 },
  ],
});
const WIDE = defineLayout({
  name: "wide",
  bits: 128,
  spec: "test",
  fields: [{ name: "ADDR", lsb: 76, width: 52, addr: true }],
});

describe("defineLayout", () => {
  it("derives word, shift and mask of each field", () => {
    const tt = fieldOf(CTX, "TT");
    expect([tt.word, tt.shift, tt.mask, tt.single, tt.inPlace]).toEqual([0, 2, 3, true, 0xc]);
    const straddle = fieldOf(CTX, "STRADDLE");
    expect([straddle.word, straddle.shift, straddle.single]).toEqual([2, 24, false]);
  });
  it("marks every bit no field covers as reserved, and ignored fields as not reserved", () => {
    expect(CTX.reserved[0]).toBe(0x00000f02);
    expect(CTX.reserved[1]).toBe(0);
    expect(CTX.reserved[2]).toBe(0x000000ff);
    expect(CTX.reserved[3]).toBe(0xfffffff0);
  });
  it("refuses overlapping, duplicate and out-of-range fields and partial words", () => {
    const f = (lsb: number, width: number) => ({ name: "X", lsb, width });
    expect(() =>
      defineLayout({ name: "a", bits: 64, spec: "", fields: [f(0, 4), { ...f(3, 1), name: "Y" }] }),
    ).toThrow(ModelBug);
    expect(() =>
      defineLayout({ name: "a", bits: 64, spec: "", fields: [f(0, 4), f(8, 1)] }),
    ).toThrow(ModelBug);
    expect(() => defineLayout({ name: "a", bits: 64, spec: "", fields: [f(60, 5)] })).toThrow(
      ModelBug,
    );
    expect(() => defineLayout({ name: "a", bits: 48, spec: "", fields: [] })).toThrow(ModelBug);
    expect(() => fieldOf(CTX, "NOPE")).toThrow(ModelBug);
  });
});

describe("encode and decode", () => {
  it("round-trips a context entry with addresses in place", () => {
    const values = {
      P: 1,
      TT: 2,
      AVAIL: 5,
      PTR: 0xf_ffff_f000_0000 + 0x1000,
      DID: 0xabcd,
      STRADDLE: 0xfed,
    };
    const w = encode(CTX, values);
    expect(decode(CTX, w)).toEqual(values);
    expect(getField(fieldOf(CTX, "PTR"), w)).toBe((0xf_ffff_f000_0000 + 0x1000) / 4096);
    expect(hasReservedBits(CTX, w)).toBe(false);
  });
  it("decodes a 64-bit address as a bigint", () => {
    const w = encode(WIDE, { ADDR: 0xffff_ffff_ffff_f000n });
    expect(decode(WIDE, w).ADDR).toBe(0xffff_ffff_ffff_f000n);
    expect(getFieldBig(fieldOf(WIDE, "ADDR"), w)).toBe(0xf_ffff_ffff_ffffn);
  });
  it("refuses values that do not fit, and misaligned addresses", () => {
    expect(() => encode(CTX, { TT: 4 })).toThrow(ModelBug);
    expect(() => encode(CTX, { TT: -1 })).toThrow(ModelBug);
    expect(() => encode(CTX, { TT: 1.5 })).toThrow(ModelBug);
    expect(() => encode(CTX, { PTR: 0x1800 })).toThrow(ModelBug);
    expect(() => encode(WIDE, { ADDR: 0x1800n })).toThrow(ModelBug);
    expect(() => encode(CTX, { STRADDLE: 1n << 12n })).toThrow(ModelBug);
  });
  test.prop(
    [
      fc.integer({ min: 0, max: 127 }),
      fc.integer({ min: 1, max: 64 }),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    ],
    {
      seed: 42,
      numRuns: 300,
    },
  )(
    "setField then getFieldBig returns the value, and no bit outside the field changes",
    (lsb, width, raw) => {
      if (lsb + width > 128) return;
      const layout = defineLayout({
        name: "p",
        bits: 128,
        spec: "",
        fields: [{ name: "F", lsb, width }],
      });
      const f = fieldOf(layout, "F");
      const value = raw & ((1n << BigInt(width)) - 1n);
      const w = new Uint32Array([0xdeadbeef, 0x12345678, 0x9abcdef0, 0x0f0f0f0f]);
      const before = Uint32Array.from(w);
      setField(f, w, value);
      expect(getFieldBig(f, w)).toBe(value);
      if (width <= 53) expect(getField(f, w)).toBe(Number(value));
      for (let b = 0; b < 128; b++) {
        if (b >= lsb && b < lsb + width) continue;
        expect(((w[b >>> 5] as number) >>> (b & 31)) & 1).toBe(
          ((before[b >>> 5] as number) >>> (b & 31)) & 1,
        );
      }
    },
  );
});

describe("reserved bits and printing", () => {
  it("lists the reserved bits that are set", () => {
    const w = encode(CTX, { P: 1 });
    w[0] |= 1 << 1;
    w[3] |= 1 << 31;
    expect(hasReservedBits(CTX, w)).toBe(true);
    expect(reservedBitsSet(CTX, w)).toEqual([1, 127]);
  });
  it("prints non-zero fields with named values and flags reserved bits", () => {
    const w = encode(CTX, { P: 1, TT: 2, PTR: 0x12345000, DID: 7 });
    expect(formatLayout(CTX, w)).toBe("P=1 TT=pass-through(2) PTR=0x12345000 DID=0x7");
    w[0] |= 2;
    expect(formatLayout(CTX, w)).toContain("RESERVED=[1]");
    expect(formatLayout(CTX, encode(CTX, {}), 0, { all: true })).toBe(
      "P=0 TT=untranslated(0) AVAIL=0 PTR=0x0 DID=0x0 STRADDLE=0x0",
    );
  });
  it("loads and stores a layout through physical memory", () => {
    const mem = new PhysMemory();
    const w = encode(CTX, { P: 1, PTR: 0x5000, DID: 3 });
    storeLayout(mem, CTX, 0x1000, w);
    expect(Array.from(loadLayout(mem, CTX, 0x1000))).toEqual(Array.from(w));
    expect(mem.read32(0x1008)).toBe(3 << 8);
  });
});

describe("fieldsMask", () => {
  it("sets exactly the bits of the named fields, across words", () => {
    const m = fieldsMask(CTX, ["P", "STRADDLE"]);
    expect([...m]).toEqual([1, 0, 0xff000000, 0xf]);
    expect([...fieldsMask(CTX, [])]).toEqual([0, 0, 0, 0]);
    expect([...fieldsMask(WIDE, ["ADDR"])]).toEqual([0, 0, 0xfffff000, 0xffffffff]);
  });

  it("an unknown field name is a model bug", () => {
    expect(() => fieldsMask(CTX, ["NOPE"])).toThrow(ModelBug);
  });
});
