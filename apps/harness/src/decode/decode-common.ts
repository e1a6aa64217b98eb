// What the VT-d and SMMUv3 decoders share: limits, problems, table walks, text, query parsing.

import {
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  type TranslationRequest,
  type TranslationResult,
} from "@iommu-sim/iommu-core";
import {
  bug,
  decode,
  type FieldValue,
  formatLayout,
  type Layout,
  type PhysMemory,
  toHex,
} from "@iommu-sim/iommu-core/platform";

/** 2^64 - 1: the largest register value and input address. */
export const MAX_U64 = (1n << 64n) - 1n;
/** Problems listed per page table before the rest are only counted. */
export const MAX_TABLE_PROBLEMS = 32;
/** Reserved bit positions spelled out in a message before the rest are only counted. */
export const MAX_BITS_LISTED = 8;

// --- Limits, entries and problems ----------------------------------------------------------------

/** A work limit: `given` rounded down, or `fallback` when it is unset or not >= 0. */
export function decodeLimit(given: number | undefined, fallback: number): number {
  return given === undefined || !(given >= 0) ? fallback : Math.floor(given);
}

/**
 * Reserved bit positions (ascending) as ranges, `65-75,128`; a garbage entry may set hundreds, so
 * after a few ranges the rest are counted.
 */
export function formatBits(bits: readonly number[]): string {
  const parts: string[] = [];
  let i = 0;
  while (i < bits.length && parts.length < MAX_BITS_LISTED) {
    const first = bits[i] as number;
    let last = first;
    while (i + 1 < bits.length && bits[i + 1] === last + 1) last = bits[++i] as number;
    parts.push(first === last ? `${first}` : `${first}-${last}`);
    i++;
  }
  const rest = bits.length - i;
  return rest > 0 ? `${parts.join(",")} and ${rest} more` : parts.join(",");
}

/** The address ranges a memory image holds (`ImageCoverage`). */
export interface DecodeImageCoverage {
  covers(pa: number, bytes: number): boolean;
}

/** One structure entry as found in memory. */
export interface DecodedEntry {
  /** The field table it is decoded with (`root-entry`, `pasid-entry`, `STE`, `CD`...). */
  readonly layout: string;
  /** Physical address of the entry. */
  readonly address: string;
  /** The entry's 64-bit words, lowest address first, in hex. */
  readonly raw: readonly string[];
  /** Every field under its spec name: a number, or a hex string for addresses and wide fields. */
  readonly fields: Readonly<Record<string, number | string>>;
}

/**
 * The entry at `pa` holding `words`, decoded with `layout`; with `ipa`, also the IPA it was
 * fetched by (listed after its address).
 */
export function decodedEntry(
  layout: Layout,
  pa: number,
  words: ArrayLike<number>,
  ipa?: number,
): DecodedEntry & { readonly ipa?: string } {
  const raw: string[] = [];
  for (let i = 0; i < layout.words; i += 2) {
    const v = (BigInt(words[i + 1] as number) << 32n) | BigInt(words[i] as number);
    raw.push(toHex(v, 16));
  }
  const values = decode(layout, words);
  const fields: Record<string, number | string> = {};
  for (const f of layout.fields) {
    const v = values[f.name] as FieldValue;
    fields[f.name] = f.addr || typeof v === "bigint" ? toHex(v) : v;
  }
  const address = toHex(pa);
  return ipa === undefined
    ? { layout: layout.name, address, raw, fields }
    : { layout: layout.name, address, ipa: toHex(ipa), raw, fields };
}

/** Field tables by name, for printing entries by their `layout`. */
export function layoutsByName(layouts: readonly Layout[]): Readonly<Record<string, Layout>> {
  return Object.freeze(Object.fromEntries(layouts.map((l) => [l.name, l])));
}

/** The entry's fields as the field-table printer shows them (non-zero fields, named values). */
export function formatEntry(e: DecodedEntry, layouts: Readonly<Record<string, Layout>>): string {
  const layout = layouts[e.layout];
  if (layout === undefined) return e.raw.join(" ");
  const words: number[] = [];
  for (const q of e.raw) {
    const v = BigInt(q);
    words.push(Number(v & 0xffffffffn), Number(v >> 32n));
  }
  return formatLayout(layout, words);
}

/** What every decoder's problems say: where, which structure, and what is wrong. */
export interface DecodeProblemBase {
  /** Physical address of the structure at fault. */
  readonly address: string;
  /** Which structure, in words (`context entry of 00:03.0`, `STE of SID 0x10`). */
  readonly structure: string;
  readonly message: string;
}

// --- Page-table enumeration ----------------------------------------------------------------------

/**
 * Collects leaves in walk order and merges runs (flat array: vpn, pfn, pages, flags), at most
 * `limit` runs.
 */
export class Coalescer {
  readonly runs: number[] = [];
  private vpn = 0;
  private pfn = 0;
  private pages = 0;
  private flags = 0;

  constructor(private readonly limit: number) {}

  /** Runs so far, the open one included. */
  get count(): number {
    return this.runs.length / 4 + (this.pages > 0 ? 1 : 0);
  }

  /** Add a leaf; false (and nothing added) when it would start a run beyond the limit. */
  add(vpn: number, pfn: number, pages: number, flags: number): boolean {
    if (
      this.pages > 0 &&
      vpn === this.vpn + this.pages &&
      pfn === this.pfn + this.pages &&
      flags === this.flags
    ) {
      this.pages += pages;
      return true;
    }
    if (this.count >= this.limit) return false;
    this.flush();
    this.vpn = vpn;
    this.pfn = pfn;
    this.pages = pages;
    this.flags = flags;
    return true;
  }

  flush(): void {
    if (this.pages > 0) this.runs.push(this.vpn, this.pfn, this.pages, this.flags);
    this.pages = 0;
  }
}

/** What every page table waiting to be enumerated has: its key and its root address. */
export interface TableRefBase {
  key: string;
  root: number;
}

/** Mutable per-table enumeration state. */
export interface TableWalk<R extends TableRefBase> {
  ref: R;
  out: Coalescer;
  tablePages: number;
  /** A limit stopped this walk. */
  stopped: boolean;
  problems: number;
  notInImage: number;
}

/** The options every decoder takes for its shared limits and the image's coverage. */
export interface TableDecodeOptions {
  readonly maxTablePages?: number;
  readonly maxMappings?: number;
  readonly maxProblems?: number;
  readonly coverage?: DecodeImageCoverage | null;
}

/**
 * The bookkeeping of a decoder that lists problems and enumerates page tables: the problem list
 * and its limit, page-table keys (one per reading of a root), and the budgets of table pages and
 * mappings shared by all its tables. The architecture says how a problem carries its fault or
 * event (`codeOf`), what makes two readings of a table differ (`readingOf`), how a table is
 * named (`tableName`) and walked (`enumerate`).
 */
export abstract class TableDecoder<R extends TableRefBase, T, P extends DecodeProblemBase> {
  readonly problems: P[] = [];
  /** A limit cut something short. */
  truncated = false;
  protected readonly memLimit: number;
  protected readonly coverage: DecodeImageCoverage | null;
  protected readonly maxTablePages: number;
  protected readonly maxMappings: number;
  protected readonly maxProblems: number;
  protected tablePagesLeft: number;
  protected mappingsLeft: number;
  private readonly refs = new Map<string, R>();
  /** Each reading of a table to its key in `refs`. */
  private readonly refKeys = new Map<string, string>();
  /** Readings per root address, for the `#n` suffix of the next one. */
  private readonly readings = new Map<number, number>();
  private problemsOmitted = 0;
  /** Why page-table enumeration stopped for good (a limit), or "". */
  private enumerationStopped = "";

  /**
   * `anchor` is the address the decode's own problems are listed at (the root or stream table);
   * `defaults` the limits an option leaves unset.
   */
  constructor(
    protected readonly mem: PhysMemory,
    private readonly anchor: number,
    options: TableDecodeOptions,
    defaults: {
      readonly maxTablePages: number;
      readonly maxMappings: number;
      readonly maxProblems: number;
    },
  ) {
    this.memLimit = mem.pfnLimit * 4096;
    this.coverage = options.coverage ?? null;
    this.maxTablePages = decodeLimit(options.maxTablePages, defaults.maxTablePages);
    this.maxMappings = decodeLimit(options.maxMappings, defaults.maxMappings);
    this.maxProblems = decodeLimit(options.maxProblems, defaults.maxProblems);
    this.tablePagesLeft = this.maxTablePages;
    this.mappingsLeft = this.maxMappings;
  }

  /** A problem's fault reason or event `code`, as the architecture's problems carry it. */
  protected abstract codeOf(code: number): Omit<P, keyof DecodeProblemBase>;

  /** What tells two readings of one root apart (stage, levels, granule, second stage...). */
  protected abstract readingOf(ref: Omit<R, "key">): string;

  /** The table in words, for the problems found in it. */
  protected abstract tableName(ref: R): string;

  /** Walk one table (`startWalk`, then `finishWalk`) into its decoded form. */
  protected abstract enumerate(ref: R): T;

  // --- Problems ----------------------------------------------------------------------------------

  /** List a problem, or only count it once `maxProblems` are listed. */
  problem(address: number, structure: string, message: string, code?: number): void {
    if (this.problems.length >= this.maxProblems) {
      this.problemsOmitted++;
      return;
    }
    this.problems.push({
      address: toHex(address),
      structure,
      message,
      ...(code === undefined ? {} : this.codeOf(code)),
    } as P);
  }

  /** After the decode: count the problems the limit left out, in one last problem. */
  finishProblems(): void {
    if (this.problemsOmitted === 0) return;
    this.truncated = true;
    this.problems.push({
      address: toHex(this.anchor),
      structure: "decode",
      message: `${this.problemsOmitted} more problems not listed (limit maxProblems ${this.maxProblems})`,
    } as P);
  }

  /** Whether `bytes` at `pa` lie inside the memory image's address space. */
  protected inMemory(pa: number, bytes: number): boolean {
    return pa >= 0 && pa + bytes <= this.memLimit;
  }

  // --- Page tables -------------------------------------------------------------------------------

  /**
   * The key under which the page table `ref` is listed; the first reading of an address takes
   * the plain address, a later one that reads it differently (`readingOf`) gets a suffix. Constant
   * time: garbage tables may name one root a million ways.
   */
  protected tableKey(ref: Omit<R, "key">): string {
    const reading = this.readingOf(ref);
    const known = this.refKeys.get(reading);
    if (known !== undefined) return known;
    const n = (this.readings.get(ref.root) ?? 0) + 1;
    this.readings.set(ref.root, n);
    const key = n === 1 ? toHex(ref.root) : `${toHex(ref.root)}#${n}`;
    this.refKeys.set(reading, key);
    this.refs.set(key, { ...ref, key } as R);
    return key;
  }

  /** Enumerate every referenced page table, in the order first referenced. */
  pageTables(): Record<string, T> {
    const out: Record<string, T> = {};
    // A table may register another while being referenced (a nested stage 1 its stage 2): walk
    // in key order.
    for (const ref of [...this.refs.values()]) out[ref.key] = this.enumerate(ref);
    return out;
  }

  /** The state of a walk of `ref`, stopped from the start once a limit stopped enumeration. */
  protected startWalk(ref: R): TableWalk<R> {
    return {
      ref,
      out: new Coalescer(this.mappingsLeft),
      tablePages: 0,
      stopped: this.enumerationStopped !== "",
      problems: 0,
      notInImage: 0,
    };
  }

  /** End a walk: count the problems not listed, charge its runs to the mapping budget. */
  protected finishWalk(walk: TableWalk<R>): number[] {
    const ref = walk.ref;
    walk.out.flush();
    if (walk.problems > MAX_TABLE_PROBLEMS) {
      const more = walk.problems - MAX_TABLE_PROBLEMS;
      this.problem(ref.root, this.tableName(ref), `${more} more problems in this table not listed`);
    }
    const runs = walk.out.runs;
    this.mappingsLeft -= runs.length / 4;
    return runs;
  }

  /** Stop all page-table enumeration for good: a document-wide limit is spent. */
  protected stopEnumeration(walk: TableWalk<R>, at: number, why: string): void {
    walk.stopped = true;
    if (this.enumerationStopped !== "") return;
    this.enumerationStopped = why;
    this.truncated = true;
    this.problem(at, this.tableName(walk.ref), `${why}: this and later page tables are incomplete`);
  }

  /** A problem with an entry (or, with `table`, a whole table page) of the table being walked. */
  protected tableProblem(
    walk: TableWalk<R>,
    at: number,
    level: number,
    message: string,
    code?: number,
    table = false,
  ): void {
    walk.problems++;
    if (walk.problems > MAX_TABLE_PROBLEMS) return;
    const what = `level ${level} ${table ? "table" : "entry"}`;
    this.problem(at, `${this.tableName(walk.ref)}, ${what}`, message, code);
  }

  /** Whether the walk may read another table page; false (said once) when a limit is spent. */
  protected mayRead(walk: TableWalk<R>, at: number): boolean {
    if (walk.stopped) return false;
    if (this.tablePagesLeft > 0) return true;
    const why = `enumeration stopped after ${this.maxTablePages} table pages in all (limit maxTablePages; looping or shared tables?)`;
    this.stopEnumeration(walk, at, why);
    return false;
  }

  /** Charge one table page to the walk and the budget (after `mayRead`). */
  protected chargePage(walk: TableWalk<R>): void {
    this.tablePagesLeft--;
    walk.tablePages++;
  }

  /** Record a leaf; false when the mapping limit is spent (enumeration stops, said once). */
  protected leaf(
    walk: TableWalk<R>,
    at: number,
    vpn: number,
    pfn: number,
    pages: number,
    flags: number,
  ): boolean {
    if (walk.out.add(vpn, pfn, pages, flags)) return true;
    const why = `stopped listing mappings after ${this.maxMappings} (limit maxMappings)`;
    this.stopEnumeration(walk, at, why);
    return false;
  }
}

// --- The human-readable form ---------------------------------------------------------------------

/** `n thing` or `n things`. */
export function count(n: number, thing: string): string {
  return `${n} ${thing}${n === 1 ? "" : "s"}`;
}

/** Bytes in the largest binary unit that divides them (`2 MiB`, `12 KiB`, `100 B`). */
export function formatSize(bytes: number): string {
  const units: Array<[number, string]> = [
    [2 ** 40, "TiB"],
    [2 ** 30, "GiB"],
    [2 ** 20, "MiB"],
    [2 ** 10, "KiB"],
  ];
  for (const [unit, name] of units) {
    if (bytes >= unit && bytes % unit === 0) return `${bytes / unit} ${name}`;
  }
  return `${bytes} B`;
}

/** The summary line of a decode: what it found (or `none`), then its problems and truncation. */
export function formatSummary(
  doc: {
    readonly devices: readonly { readonly translations: readonly unknown[] }[];
    readonly pageTables: Readonly<Record<string, { readonly mappings: readonly unknown[] }>>;
    readonly problems: readonly unknown[];
    readonly truncated: boolean;
  },
  none: string,
): string {
  const tables = Object.values(doc.pageTables);
  let mappings = 0;
  for (const t of tables) mappings += t.mappings.length;
  let translations = 0;
  for (const dev of doc.devices) translations += dev.translations.length;
  let summary =
    doc.devices.length === 0
      ? none
      : `${count(doc.devices.length, "device")}, ${count(translations, "translation")}, ${count(tables.length, "page table")} with ${count(mappings, "mapping")}`;
  if (doc.problems.length > 0) summary += `; ${count(doc.problems.length, "problem")} (at the end)`;
  if (doc.truncated) summary += "; TRUNCATED: a limit cut the decode short (see the problems)";
  return summary;
}

/**
 * Add `who` to the users of the table `key` (nothing for no table); a user added twice in a row
 * is listed once (one table may serve both ranges of a translation).
 */
export function addTableUser(
  users: Map<string, string[]>,
  key: string | null | undefined,
  who: string,
): void {
  if (key === null || key === undefined) return;
  const list = users.get(key);
  if (list === undefined) users.set(key, [who]);
  else if (list[list.length - 1] !== who) list.push(who);
}

/** At most a few users, then how many more: a shared domain may serve hundreds of devices. */
export function formatUsers(list: readonly string[] | undefined): string {
  if (list === undefined || list.length === 0) return "";
  const shown = list.slice(0, 4).join(", ");
  return `, used by ${shown}${list.length > 4 ? ` and ${list.length - 4} more` : ""}`;
}

/**
 * The notes after a page table's heading, ` (a; b)`, or "": `first`, then a limit's cut and the
 * table pages the image lacks (counted as `unit`s).
 */
export function formatTableNotes(
  table: { readonly truncated: boolean; readonly notInImage?: number },
  unit: string,
  first: readonly string[] = [],
): string {
  const notes = [
    ...first,
    ...(table.truncated ? ["TRUNCATED by a limit"] : []),
    ...(table.notInImage === undefined
      ? []
      : [`${count(table.notInImage, unit)} not in the image, read as zeros`]),
  ];
  return notes.length === 0 ? "" : ` (${notes.join("; ")})`;
}

/** The input range of a mapping, `start-end`. */
export function mappingRange(iova: string, size: number): string {
  // Number() reads the hex exactly below 2^53; canonical upper-half addresses need BigInt.
  const start = Number(iova);
  const end =
    start + size <= Number.MAX_SAFE_INTEGER
      ? toHex(start + size - 1)
      : toHex(BigInt(iova) + BigInt(size) - 1n);
  return `${iova}-${end}`;
}

/** The columns of one mapping line: input range, output, size, permissions (and attributes). */
export type MappingColumns = [string, string, string, string];

/** Add a line per mapping to `lines`, in columns as wide as their widest entry. */
export function pushMappingLines<M>(
  lines: string[],
  mappings: readonly M[],
  columns: (m: M) => MappingColumns,
): void {
  const rows = mappings.map(columns);
  const width = [0, 0, 0];
  for (const row of rows) {
    for (let c = 0; c < 3; c++) width[c] = Math.max(width[c] as number, (row[c] as string).length);
  }
  for (const [range, pa, size, perms] of rows) {
    lines.push(
      `  ${range.padEnd(width[0] as number)} -> ${pa.padEnd(width[1] as number)}  ${size.padStart(width[2] as number)}  ${perms}`,
    );
  }
}

/** Add the problems section to `lines` (none without problems), `tag(p)` after each message. */
export function pushProblemLines<P extends DecodeProblemBase>(
  lines: string[],
  problems: readonly P[],
  tag: (p: P) => string,
): void {
  if (problems.length === 0) return;
  lines.push("");
  lines.push(`problems (${problems.length}):`);
  for (const p of problems) lines.push(`  ${p.address} ${p.structure}: ${p.message}${tag(p)}`);
}

// --- Translate queries ---------------------------------------------------------------------------

/** An unsigned integer in decimal or with a 0x prefix in hex, at most 2^64 - 1; null otherwise. */
export function parseUnsigned(text: string): bigint | null {
  if (!/^(?:[0-9]+|0[xX][0-9a-fA-F]+)$/.test(text)) return null;
  const v = BigInt(text);
  return v <= MAX_U64 ? v : null;
}

/** A number (decimal or 0x hex) up to `max`, or `expected <what>, got "<text>"`. */
export function parseBounded(text: string, max: bigint, what: string): number | string {
  const n = parseUnsigned(text);
  if (n === null || n > max) return `expected ${what}, got ${JSON.stringify(text)}`;
  return Number(n);
}

const BDF = /^([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$/;

/**
 * A PCI address `BB:DD.F` (hex bus and device, function 0-7) as a requester ID, what is wrong
 * with it, or null when `text` is not written as one.
 */
export function parseBdf(text: string): number | string | null {
  const bdf = BDF.exec(text);
  if (bdf === null) return null;
  const dev = Number.parseInt(bdf[2] as string, 16);
  if (dev > 0x1f) return `device ${toHex(dev)} in ${text} is above 0x1f`;
  return (Number.parseInt(bdf[1] as string, 16) << 8) | (dev << 3) | Number(bdf[3]);
}

/** The parts of a `SID[:SUB]@IOVA` query (SUB a PASID or SubstreamID). */
export interface IdQuery {
  readonly sid: number;
  readonly sub: number | null;
  readonly iova: bigint;
}

/**
 * Parse `SID[:SUB]@IOVA`: SID by `parseSid` (a BDF's own colon is told apart by its dot), SUB by
 * `parseSub`, IOVA decimal or 0x hex up to 2^64 - 1. Returns the parts, or a message naming the
 * part that is wrong (`form` when the text has no single `@`).
 */
export function parseIdQuery(
  text: string,
  form: string,
  parseSid: (text: string) => number | string,
  parseSub: (text: string) => number | string,
): IdQuery | string {
  const at = text.indexOf("@");
  if (at < 0 || at !== text.lastIndexOf("@")) return form;
  const who = text.slice(0, at);
  const iovaText = text.slice(at + 1);
  let sidText = who;
  let subText: string | undefined;
  // A BDF holds one colon before its dot; the SUB follows the last colon after the SID.
  const bdfWithSub = /^([0-9a-fA-F]{1,2}:[0-9a-fA-F]{1,2}\.[0-7]):(.*)$/.exec(who);
  if (bdfWithSub !== null) {
    sidText = bdfWithSub[1] as string;
    subText = bdfWithSub[2] as string;
  } else if (!who.includes(".") && who.includes(":")) {
    const colon = who.indexOf(":");
    sidText = who.slice(0, colon);
    subText = who.slice(colon + 1);
  }
  const sid = parseSid(sidText);
  if (typeof sid === "string") return sid;
  let sub: number | null = null;
  if (subText !== undefined) {
    const s = parseSub(subText);
    if (typeof s === "string") return s;
    sub = s;
  }
  const iova = parseUnsigned(iovaText);
  if (iova === null) {
    return `expected an IOVA: a number up to 2^64 - 1, decimal or 0x hex, got ${JSON.stringify(iovaText)}`;
  }
  return { sid, sub, iova };
}

/** The access of every query of a translator. */
export interface QueryAccessOptions {
  /** The access every query makes: a read unless `write`; `exec` adds an instruction fetch. */
  readonly write?: boolean;
  readonly exec?: boolean;
  /** Privileged (supervisor) requests. */
  readonly priv?: boolean;
}

/** A hardware model that walks a request without side effects (no cache fill, no fault record). */
export interface UncachedTranslator {
  translateUncached(req: TranslationRequest, out: TranslationResult): void;
}

/**
 * The request side of a translator: the access every query makes, and one request and one
 * result reused by all its queries.
 */
export class QueryRunner {
  private readonly access: number;
  private readonly priv: boolean;
  private readonly req = newTranslationRequest();
  private readonly out = newTranslationResult();

  constructor(options: QueryAccessOptions) {
    this.access = (options.write ? DMA_WRITE : DMA_READ) | (options.exec ? DMA_EXEC : 0);
    this.priv = options.priv ?? false;
  }

  /**
   * One untranslated request from `rid` / `sid` (with `sub`, or without PASID / SubstreamID for
   * null) at `iova` through `hw`; the result is overwritten by the next query.
   */
  run(
    hw: UncachedTranslator,
    rid: number,
    sid: number,
    sub: number | null,
    iova: bigint,
  ): TranslationResult {
    const req = this.req;
    req.rid = rid;
    req.sid = sid;
    req.pasid = sub ?? NO_PASID;
    // Page number and offset keep an IOVA above 2^53 exact (the page number is below 2^52).
    req.iovaPfn = Number(iova >> 12n);
    req.offset = Number(iova & 0xfffn);
    req.access = this.access;
    req.privileged = this.priv;
    req.at = 0;
    hw.translateUncached(req, this.out);
    return this.out;
  }
}

/** The page size and permissions a successful translation grants. */
export function translationGrant(out: TranslationResult): {
  readonly pageSize: number;
  readonly r: boolean;
  readonly w: boolean;
} {
  return {
    pageSize: 2 ** out.sizeShift,
    r: (out.perm & DMA_READ) !== 0,
    w: (out.perm & DMA_WRITE) !== 0,
  };
}

/**
 * What `compute` says about (sid, sub), computed once per pair: `known` holds the answers by
 * "sid" or "sid:sub" key.
 */
export function perQuery(
  known: Map<string, boolean>,
  sid: number,
  sub: number | null,
  compute: () => boolean,
): boolean {
  const key = sub === null ? `${sid}` : `${sid}:${sub}`;
  let v = known.get(key);
  if (v === undefined) {
    v = compute();
    known.set(key, v);
  }
  return v;
}

/** Poll a register until `done` (the model completes at once); a model bug if it never does. */
export function pollUntil(done: () => boolean, failure: string): void {
  for (let tries = 0; tries < 1000; tries++) {
    if (done()) return;
  }
  bug(failure);
}
