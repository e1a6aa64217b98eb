// A small schema language for YAML files: checks over the parsed YAML nodes that turn them into
// typed values or stop at the first error, with its place in the file and a stable code.

import { isAlias, isMap, isScalar, isSeq, type LineCounter, type Pair } from "yaml";
import type { Loc, ScenarioErrorCode } from "./scenario-spec.js";

/** What a check returns instead of a value once it has recorded an error. */
export const INVALID: unique symbol = Symbol("invalid");
export type Invalid = typeof INVALID;

/** Where a value is (or, when it is missing, where it belongs): its field path and location. */
export interface At {
  /** Like `steps[3].map.size`; `""` for the document itself. */
  readonly path: string;
  readonly loc: Loc;
}

/** The first error a check found. */
export interface Failure {
  readonly loc: Loc;
  /** The field path; `(root)` for the document itself. */
  readonly field: string;
  readonly code: ScenarioErrorCode;
  readonly message: string;
}

/** A name the file defines (a unit, a device, a domain...), with where and how it was defined. */
export interface Definition {
  readonly name: string;
  readonly loc: Loc;
  /** What defined it, when a name space holds several kinds (`map` or `dma-map` buffers). */
  readonly tag: string;
}

/**
 * The state of one validation: where nodes are in the text, the names defined so far, an
 * environment of the caller's (`E`), and the first error.
 */
export class Validator<E> {
  /** The first error, once a check has failed. */
  failure: Failure | null = null;
  private readonly spaces = new Map<string, Map<string, Definition>>();

  constructor(
    private readonly lineCounter: LineCounter,
    /** The caller's state, for checks that depend on earlier parts of the file. */
    readonly env: E,
  ) {}

  /** The location of a node, or `fallback` when the node has no source range. */
  locOf(node: unknown, fallback: Loc): Loc {
    const range = (node as { range?: readonly number[] | null } | null)?.range;
    const offset = range?.[0];
    if (offset === undefined) return fallback;
    const pos = this.lineCounter.linePos(offset);
    return { line: pos.line, column: pos.col };
  }

  /** Record an error (only the first one counts) and return {@link INVALID}. */
  fail(at: At, code: ScenarioErrorCode, message: string): Invalid {
    if (this.failure === null) {
      this.failure = { loc: at.loc, field: at.path === "" ? "(root)" : at.path, code, message };
    }
    return INVALID;
  }

  /**
   * The error for a node of the wrong kind: `bad-type`, or `unsupported` for an alias, whose
   * target the file format does not follow.
   */
  wrongType(node: unknown, at: At, expected: string): Invalid {
    if (isAlias(node)) {
      return this.fail(at, "unsupported", `aliases (*${node.source}) are not supported`);
    }
    return this.fail(at, "bad-type", `expected ${expected}, got ${describeNode(node)}`);
  }

  /** The definition of `name` in name space `space`, if any. */
  lookup(space: string, name: string): Definition | undefined {
    return this.spaces.get(space)?.get(name);
  }

  /** The names defined in `space` so far, in order of definition. */
  names(space: string): string[] {
    return [...(this.spaces.get(space)?.keys() ?? [])];
  }

  /** Define `name` in `space`; a second definition is a `duplicate-name` error. */
  define(space: string, name: string, at: At, tag = space): Invalid | undefined {
    let names = this.spaces.get(space);
    if (names === undefined) {
      names = new Map();
      this.spaces.set(space, names);
    }
    const first = names.get(name);
    if (first !== undefined) {
      return this.fail(
        at,
        "duplicate-name",
        `${space} ${JSON.stringify(name)} is already defined on line ${first.loc.line}`,
      );
    }
    names.set(name, { name, loc: at.loc, tag });
    return undefined;
  }
}

/**
 * A check: validate one YAML node (null when the field is absent or empty of node) at `at`, and
 * return its value, or record an error in `v` and return {@link INVALID}. `E` is the
 * environment of the validator the check needs; checks that need none take any.
 */
export type Check<T, E = unknown> = (v: Validator<E>, node: unknown, at: At) => T | Invalid;

/** How an object declares one of its fields. */
export interface FieldDef<T, E = unknown> {
  readonly check: Check<T, E>;
  readonly required: boolean;
  /** The value when the field is absent (not required). */
  readonly fallback: T;
  /**
   * Why the field must not be given here, for a field of the format that this variant of an
   * object does not take (`units` on the mock IOMMU): its presence is `unknown-field`.
   */
  readonly forbidden?: string;
}

/** A field that must be present. */
export function required<T, E = unknown>(check: Check<T, E>): FieldDef<T, E> {
  return { check, required: true, fallback: undefined as T };
}

/** A field of the format that must be absent here; `reason` says why. */
export function forbidden(reason: string): FieldDef<undefined> {
  return { check: () => undefined, required: false, fallback: undefined, forbidden: reason };
}

/** A field that may be absent: then its value is `fallback`, or undefined without one. */
export function optional<T, E = unknown>(check: Check<T, E>): FieldDef<T | undefined, E>;
export function optional<T, E = unknown>(check: Check<T, E>, fallback: T): FieldDef<T, E>;
export function optional<T, E = unknown>(check: Check<T, E>, fallback?: T): FieldDef<T, E> {
  return { check, required: false, fallback: fallback as T };
}

// biome-ignore lint/suspicious/noExplicitAny: a shape mixes fields of every value type.
type AnyField<E> = FieldDef<any, E>;

/** Fields by their name in the file (kebab-case). */
export type Shape<E> = Readonly<Record<string, AnyField<E>>>;

/** `pasid-bits` → `pasidBits`. */
export type Camel<S extends string> = S extends `${infer H}-${infer T}`
  ? `${H}${Capitalize<Camel<T>>}`
  : S;

/** The values of an object's fields, by their camelCase names. */
export type Fields<S> = {
  -readonly [K in keyof S & string as Camel<K>]: S[K] extends FieldDef<infer T, infer _>
    ? T
    : never;
};

/** Where each field of an object is (or would be, when absent), by camelCase name. */
export type Sites<S> = { readonly [K in keyof S & string as Camel<K>]: At };

/**
 * Turns an object's checked fields into its value, checking rules that span fields; `self` is
 * where the mapping is.
 */
export type Build<S, R, E> = (
  fields: Fields<S>,
  sites: Sites<S>,
  v: Validator<E>,
  self: At,
) => R | Invalid;

/**
 * A mapping with the fields of `shape`: an unknown or repeated key is an error, then each field
 * is checked in declaration order (a missing required one is `missing-field`), then `build`
 * makes the value.
 */
export function object<S extends Shape<E>, R, E = unknown>(
  shape: S,
  build: Build<S, R, E>,
): Check<R, E> {
  const keys = Object.keys(shape);
  const camel = keys.map(toCamel);
  const known = keys.filter((k) => shape[k]?.forbidden === undefined).join(", ");
  return (v, node, at) => {
    if (!isMap(node)) return v.wrongType(node, at, "a mapping");
    const self: At = { path: at.path, loc: v.locOf(node, at.loc) };
    const pairs = new Map<string, Pair<unknown, unknown>>();
    for (const pair of node.items) {
      const keyAt: At = { path: at.path, loc: v.locOf(pair.key, self.loc) };
      if (!isScalar(pair.key) || pair.key.value === null) {
        return v.wrongType(pair.key, keyAt, "a field name");
      }
      const key = scalarText(pair.key);
      const fieldAt: At = { path: joinPath(at.path, key), loc: keyAt.loc };
      if (!Object.hasOwn(shape, key)) {
        return v.fail(
          fieldAt,
          "unknown-field",
          `unknown field ${JSON.stringify(key)} (expected one of: ${known})`,
        );
      }
      const reason = shape[key]?.forbidden;
      if (reason !== undefined) {
        return v.fail(fieldAt, "unknown-field", `field "${key}" is not allowed: ${reason}`);
      }
      const first = pairs.get(key);
      if (first !== undefined) {
        const line = v.locOf(first.key, self.loc).line;
        return v.fail(
          fieldAt,
          "duplicate-field",
          `field "${key}" is already given on line ${line}`,
        );
      }
      pairs.set(key, pair);
    }
    const fields: Record<string, unknown> = {};
    const sites: Record<string, At> = {};
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string;
      const def = shape[key] as AnyField<E>;
      const path = joinPath(at.path, key);
      const pair = pairs.get(key);
      if (pair === undefined) {
        if (def.required) {
          return v.fail({ path, loc: self.loc }, "missing-field", `missing field "${key}"`);
        }
        fields[camel[i] as string] = def.fallback;
        sites[camel[i] as string] = { path, loc: self.loc };
        continue;
      }
      const site: At = { path, loc: v.locOf(pair.value, v.locOf(pair.key, self.loc)) };
      const value: unknown = def.check(v, pair.value ?? null, site);
      if (value === INVALID) return INVALID;
      fields[camel[i] as string] = value;
      sites[camel[i] as string] = site;
    }
    return build(fields as Fields<S>, sites as Sites<S>, v, self);
  };
}

/** A mapping with exactly one key, which picks the check for its value (a tagged union). */
export function oneKey<R, E = unknown>(
  what: string,
  variants: Readonly<Record<string, Check<R, E>>>,
): Check<R, E> {
  const known = Object.keys(variants).join(", ");
  return (v, node, at) => {
    if (!isMap(node)) return v.wrongType(node, at, `a mapping with one key (the ${what})`);
    const self: At = { path: at.path, loc: v.locOf(node, at.loc) };
    if (node.items.length !== 1) {
      const keys = node.items.map((p) => (isScalar(p.key) ? scalarText(p.key) : "?"));
      return v.fail(
        self,
        node.items.length === 0 ? "missing-field" : "bad-value",
        node.items.length === 0
          ? `expected one key (the ${what}), got an empty mapping`
          : `expected one key (the ${what}), got ${node.items.length}: ${keys.join(", ")}`,
      );
    }
    const pair = node.items[0] as Pair<unknown, unknown>;
    if (!isScalar(pair.key) || pair.key.value === null) {
      return v.wrongType(pair.key, self, `the ${what} as a plain key`);
    }
    const key = scalarText(pair.key);
    const variant = Object.hasOwn(variants, key) ? variants[key] : undefined;
    const path = joinPath(at.path, key);
    if (variant === undefined) {
      return v.fail(
        { path, loc: v.locOf(pair.key, self.loc) },
        "unknown-field",
        `unknown ${what} ${JSON.stringify(key)} (expected one of: ${known})`,
      );
    }
    return variant(v, pair.value ?? null, { path, loc: v.locOf(pair.value, self.loc) });
  };
}

/**
 * A list of `min`..`max` items, each checked by `item`; with `key`, two items with the same key
 * are a `bad-value` error at the second.
 */
export function list<T, E = unknown>(
  item: Check<T, E>,
  min: number,
  max: number,
  key?: (item: T) => string,
): Check<T[], E> {
  return (v, node, at) => {
    if (!isSeq(node)) return v.wrongType(node, at, "a list");
    const n = node.items.length;
    if (n < min || n > max) {
      const range = max === Number.POSITIVE_INFINITY ? `at least ${min}` : `${min} to ${max}`;
      return v.fail(at, "out-of-range", `expected ${range} items, got ${n}`);
    }
    const out: T[] = [];
    const seen = key === undefined ? null : new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const child = node.items[i];
      const childAt: At = { path: `${at.path}[${i}]`, loc: v.locOf(child, at.loc) };
      const value = item(v, child, childAt);
      if (value === INVALID) return INVALID;
      if (seen !== null && key !== undefined) {
        const k = key(value);
        const first = seen.get(k);
        if (first !== undefined) {
          return v.fail(
            childAt,
            "bad-value",
            `${JSON.stringify(k)} is already listed at [${first}]`,
          );
        }
        seen.set(k, i);
      }
      out.push(value);
    }
    return out;
  };
}

/** A check whose definition comes later (recursive formats). */
export function lazy<T, E>(get: () => Check<T, E>): Check<T, E> {
  return (v, node, at) => get()(v, node, at);
}

/** Apply `f` to the value of `check`; `f` may record an error too. */
export function refine<T, U, E = unknown>(
  check: Check<T, E>,
  f: (value: T, v: Validator<E>, at: At, node: unknown) => U | Invalid,
): Check<U, E> {
  return (v, node, at) => {
    const value = check(v, node, at);
    return value === INVALID ? INVALID : f(value, v, at, node);
  };
}

// ---- scalars ----------------------------------------------------------------------------------

/** The text of a scalar as written (without quotes), for any scalar that is not null. */
export function scalarText(node: unknown): string {
  if (!isScalar(node)) return "";
  return typeof node.source === "string" ? node.source : String(node.value);
}

/** How a node reads in a message: `6000`, `"64KB"`, `a mapping`, `an empty value`. */
export function describeNode(node: unknown): string {
  if (node === null || node === undefined) return "an empty value";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (isAlias(node)) return "an alias";
  if (!isScalar(node)) return "something else";
  if (node.value === null) return "an empty value";
  const text = clip(scalarText(node));
  return typeof node.value === "string" ? JSON.stringify(text) : text;
}

function clip(text: string): string {
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

/** Any non-empty scalar, as its text. */
export function text(): Check<string> {
  return (v, node, at) =>
    isScalar(node) && node.value !== null ? scalarText(node) : v.wrongType(node, at, "a string");
}

/** A scalar whose text matches `re` (`what` says what such a text is, for the message). */
export function pattern(re: RegExp, what: string): Check<string> {
  return (v, node, at) => {
    if (!isScalar(node) || node.value === null) return v.wrongType(node, at, what);
    const s = scalarText(node);
    if (re.test(s)) return s;
    return v.fail(at, "bad-value", `expected ${what} (${re.source}), got ${describeNode(node)}`);
  };
}

/** One of `values` (a string scalar), `bad-value` otherwise. */
export function oneOf<const T extends string>(values: readonly T[]): Check<T> {
  const expected = values.join(", ");
  return (v, node, at) => {
    if (!isScalar(node) || node.value === null) return v.wrongType(node, at, `one of ${expected}`);
    const s = scalarText(node);
    if ((values as readonly string[]).includes(s)) return s as T;
    return v.fail(at, "bad-value", `expected one of ${expected}, got ${describeNode(node)}`);
  };
}

/** A YAML boolean: `true` or `false`. */
export function bool(): Check<boolean> {
  return (v, node, at) =>
    isScalar(node) && typeof node.value === "boolean"
      ? node.value
      : v.wrongType(node, at, "true or false");
}

const INTEGER = /^([-+]?)(0[xX][0-9a-fA-F]+|[0-9]+)$/;

/**
 * The value of an integer written in decimal or `0x` hex, as a YAML int or a string; null when
 * the text is not one, and NaN when its magnitude is 2^53 or more (no longer exact as a number).
 */
export function parseInteger(s: string): number | null {
  const m = INTEGER.exec(s);
  if (m === null) return null;
  const magnitude = Number(m[2]);
  if (!Number.isSafeInteger(magnitude)) return Number.NaN;
  // `-0` is 0: a value never carries a sign of zero.
  return m[1] === "-" && magnitude !== 0 ? -magnitude : magnitude;
}

const SIZE = /^([0-9]+) ?(KiB|MiB|GiB|K|M|G)$/;
const UNIT_SHIFT: Readonly<Record<string, number>> = Object.freeze({
  K: 10,
  KiB: 10,
  M: 20,
  MiB: 20,
  G: 30,
  GiB: 30,
});

/**
 * The value of a size: an integer in bytes (as {@link parseInteger}) or `<n>KiB`, `<n>MiB`,
 * `<n>GiB` (also `K`, `M`, `G`); null when the text is neither, NaN when it is 2^53 or more.
 */
export function parseSize(s: string): number | null {
  const m = SIZE.exec(s);
  if (m === null) return parseInteger(s);
  const bytes = Number(m[1]) * 2 ** (UNIT_SHIFT[m[2] as string] as number);
  return Number.isSafeInteger(bytes) ? bytes : Number.NaN;
}

/** How a number range reads in messages: `0x1000` for large round values, else decimal. */
export function formatBound(n: number): string {
  if (n === 2 ** 53) return "2^53";
  return n >= 0x10000 && n % 0x1000 === 0 ? `0x${n.toString(16)}` : String(n);
}

/** A byte count for messages: `64 KiB`, `256 MiB`, or bytes. */
export function formatSize(n: number): string {
  for (const [unit, shift] of [
    ["GiB", 30],
    ["MiB", 20],
    ["KiB", 10],
  ] as const) {
    if (n >= 2 ** shift && n % 2 ** shift === 0) return `${n / 2 ** shift} ${unit}`;
  }
  return n === 1 ? "1 byte" : `${n} bytes`;
}

/** Options of {@link int} and {@link size}. */
export interface RangeOptions {
  readonly min: number;
  /** Inclusive. */
  readonly max: number;
  /** How the range reads in the message (default `min..max`). */
  readonly range?: string;
}

function numeric(
  parse: (s: string) => number | null,
  what: string,
  syntax: string,
  format: (n: number) => string,
  { min, max, range }: RangeOptions,
): Check<number> {
  const expected = range ?? `${format(min)}..${format(max)}`;
  return (v, node, at) => {
    // YAML gives numbers and strings alike: the text as written decides, so that 0x hex stays
    // exact and `1e6` or `1.5` are refused rather than rounded.
    const ok = isScalar(node) && (typeof node.value === "number" || typeof node.value === "string");
    const value = ok ? parse(scalarText(node)) : null;
    if (value === null) return v.wrongType(node, at, `${what} (${syntax})`);
    if (Number.isNaN(value) || value < min || value > max) {
      return v.fail(
        at,
        "out-of-range",
        `expected ${what} in ${expected}, got ${describeNode(node)}`,
      );
    }
    return value;
  };
}

/** An integer in `min..max`, decimal or `0x` hex, as a YAML int or a string. */
export function int(options: RangeOptions): Check<number> {
  return numeric(parseInteger, "an integer", "decimal or 0x hex", formatBound, options);
}

/** A size in bytes in `min..max` (see {@link parseSize}). */
export function size(options: RangeOptions): Check<number> {
  return numeric(parseSize, "a size", "bytes, or n KiB, MiB or GiB", formatSize, options);
}

function toCamel(key: string): string {
  return key.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function joinPath(path: string, key: string): string {
  // Keys the format never uses may hold anything: quote them, so a path stays on one line.
  if (!/^[A-Za-z0-9_-]+$/.test(key)) return `${path}[${JSON.stringify(key)}]`;
  return path === "" ? key : `${path}.${key}`;
}
