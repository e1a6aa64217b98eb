import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { LineCounter, parseDocument } from "yaml";
import {
  type Check,
  forbidden,
  formatBound,
  formatSize,
  INVALID,
  int,
  list,
  object,
  oneKey,
  optional,
  parseInteger,
  parseSize,
  required,
  text,
  Validator,
} from "./schema.js";

/** Run `check` on the document of `src`; the value, or the failure. */
function run<T>(check: Check<T>, src: string) {
  const lineCounter = new LineCounter();
  const doc = parseDocument(src, { lineCounter, uniqueKeys: false });
  const v = new Validator<unknown>(lineCounter, null);
  const value = check(v, doc.contents, { path: "", loc: { line: 1, column: 1 } });
  return value === INVALID ? { failure: v.failure } : { value };
}

describe("parseInteger", () => {
  it("reads decimal and 0x hex, with a sign, and refuses other notations", () => {
    expect(parseInteger("0")).toBe(0);
    expect(parseInteger("007")).toBe(7);
    expect(parseInteger("0x1F")).toBe(31);
    expect(parseInteger("-0x10")).toBe(-16);
    expect(parseInteger("+12")).toBe(12);
    expect(Object.is(parseInteger("-0"), 0)).toBe(true);
    for (const s of ["", "1e6", "1.5", "0o17", "0b1", "1_000", "0x", " 1", "1 ", "--1", "ten"]) {
      expect(parseInteger(s), s).toBeNull();
    }
  });

  it("is NaN at 2^53 and above, where a number is no longer exact", () => {
    expect(parseInteger("9007199254740991")).toBe(2 ** 53 - 1);
    expect(parseInteger("9007199254740992")).toBeNaN();
    expect(parseInteger("0x1fffffffffffff")).toBe(2 ** 53 - 1);
    expect(parseInteger("0x20000000000000")).toBeNaN();
    expect(parseInteger("0x1ffffffffffffff")).toBeNaN();
  });

  test.prop([fc.bigInt({ min: 0n, max: 1n << 60n }), fc.boolean(), fc.boolean()], { seed: 11 })(
    "agrees with BigInt on every decimal and hex text",
    (n, hex, negative) => {
      const s = `${negative ? "-" : ""}${hex ? `0x${n.toString(16)}` : n.toString()}`;
      const expected = n >= 1n << 53n ? Number.NaN : negative && n !== 0n ? -Number(n) : Number(n);
      expect(parseInteger(s)).toBe(expected);
    },
  );
});

describe("parseSize", () => {
  it("reads bytes and binary units, with an optional space", () => {
    expect(parseSize("4096")).toBe(4096);
    expect(parseSize("0x1000")).toBe(4096);
    expect(parseSize("4KiB")).toBe(4096);
    expect(parseSize("4 K")).toBe(4096);
    expect(parseSize("3MiB")).toBe(3 << 20);
    expect(parseSize("2M")).toBe(2 << 20);
    expect(parseSize("1GiB")).toBe(2 ** 30);
    expect(parseSize("5G")).toBe(5 * 2 ** 30);
  });

  it("refuses decimal units, lower case, fractions and hex with a unit", () => {
    for (const s of ["4KB", "4kib", "4k", "1.5MiB", "0x10KiB", "KiB", "4  KiB", "4TiB"]) {
      expect(parseSize(s), s).toBeNull();
    }
  });

  it("is NaN when the bytes reach 2^53", () => {
    expect(parseSize(`${2 ** 23 - 1}GiB`)).toBe((2 ** 23 - 1) * 2 ** 30);
    expect(parseSize(`${2 ** 23}GiB`)).toBeNaN();
  });
});

describe("formatting", () => {
  it("formats sizes in the largest whole binary unit", () => {
    expect([1, 6000, 4096, 2 << 20, 2 ** 32, 1536].map(formatSize)).toEqual([
      "1 byte",
      "6000 bytes",
      "4 KiB",
      "2 MiB",
      "4 GiB",
      "1536 bytes",
    ]);
  });

  it("formats large round bounds in hex", () => {
    expect([0, 4096, 1_000_000, 0x100000, 2 ** 53].map(formatBound)).toEqual([
      "0",
      "4096",
      "1000000",
      "0x100000",
      "2^53",
    ]);
  });
});

describe("object", () => {
  const shape = {
    "pasid-bits": required(int({ min: 0, max: 20 })),
    label: optional(text(), "none"),
    unit: forbidden("not here"),
  };
  const check = object(shape, (f, at) => ({ ...f, labelAt: at.label }));

  it("gives camelCase fields, fallbacks, and the mapping's place for an absent field", () => {
    expect(run(check, "\n  pasid-bits: 3\n")).toEqual({
      value: {
        pasidBits: 3,
        label: "none",
        unit: undefined,
        labelAt: { path: "label", loc: { line: 2, column: 3 } },
      },
    });
  });

  it("refuses a forbidden field with its reason, and leaves it out of the known list", () => {
    expect(run(check, "pasid-bits: 1\nunit: u\n").failure).toMatchObject({
      code: "unknown-field",
      field: "unit",
      message: 'field "unit" is not allowed: not here',
    });
    expect(run(check, "x: 1\n").failure?.message).toBe(
      'unknown field "x" (expected one of: pasid-bits, label)',
    );
  });

  it("reports the first error only", () => {
    const { failure } = run(check, "pasid-bits: 99\nlabel: [1]\n");
    expect(failure).toMatchObject({ code: "out-of-range", field: "pasid-bits" });
  });
});

describe("list and oneKey", () => {
  it("refuses a repeated key at the second item", () => {
    const check = list(text(), 0, 5, (s) => s);
    expect(run(check, "[a, b, a]").failure).toMatchObject({
      code: "bad-value",
      field: "[2]",
      loc: { line: 1, column: 8 },
      message: '"a" is already listed at [0]',
    });
  });

  it("checks the one key's value by its variant", () => {
    const check = oneKey<number | string>("op", { n: int({ min: 0, max: 9 }), s: text() });
    expect(run(check, "n: 5")).toEqual({ value: 5 });
    expect(run(check, "s: 5")).toEqual({ value: "5" });
    expect(run(check, "q: 5").failure).toMatchObject({ code: "unknown-field", field: "q" });
  });
});

describe("Validator names", () => {
  it("defines a name once per space and remembers where", () => {
    const v = new Validator<null>(new LineCounter(), null);
    const at = { path: "x", loc: { line: 3, column: 1 } };
    expect(v.define("domain", "d1", at)).toBeUndefined();
    expect(v.define("pasid", "d1", at)).toBeUndefined();
    expect(v.define("domain", "d1", { path: "y", loc: { line: 9, column: 2 } })).toBe(INVALID);
    expect(v.failure).toEqual({
      loc: { line: 9, column: 2 },
      field: "y",
      code: "duplicate-name",
      message: 'domain "d1" is already defined on line 3',
    });
    expect(v.lookup("domain", "d1")?.loc.line).toBe(3);
    expect(v.names("domain")).toEqual(["d1"]);
    expect(v.names("buffer")).toEqual([]);
  });
});
