// Scenario files (format 1): YAML text in; a validated ScenarioSpec or one located error out.

import { IOMMU_READ, IOMMU_WRITE } from "@iommu-sim/iommu-core";
import { bug } from "@iommu-sim/iommu-core/platform";
import { PROT_NONE, PROT_READ, PROT_WRITE } from "@iommu-sim/sva";
import { type Document, isMap, isScalar, LineCounter, parseDocument, type YAMLError } from "yaml";
import type {
  BindErrno,
  DeviceKind,
  DeviceSpec,
  Loc,
  MachineSpec,
  PasidRef,
  ProtBits,
  ScenarioArch,
  ScenarioErrorCode,
  ScenarioSpec,
  StepSpec,
  SuperpageSize,
  UnitSpec,
  UserSpec,
} from "./scenario-spec.js";
import {
  type At,
  bool,
  type Check,
  describeNode,
  forbidden,
  formatSize,
  INVALID,
  type Invalid,
  int,
  lazy,
  list,
  object,
  oneKey,
  oneOf,
  optional,
  parseInteger,
  pattern,
  refine,
  required,
  scalarText,
  size,
  text,
  Validator,
} from "./schema.js";

/**
 * Why a scenario file was refused: where (1-based line and column), which field (a path like
 * `steps[3].map.size`, `(root)` for the document, `(yaml)` for a syntax error), a stable code and
 * a one-line message.
 */
export class ScenarioFileError {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly column: number,
    readonly field: string,
    readonly code: ScenarioErrorCode,
    readonly message: string,
    /** The YAML parser's own error, for a `yaml-syntax` error (for `--verbose`). */
    readonly cause?: unknown,
  ) {}

  /** `file:line:column: field: message`, one line. */
  toString(): string {
    return `${this.file}:${this.line}:${this.column}: ${this.field}: ${this.message}`;
  }
}

/**
 * Parse and validate a scenario file. Never throws on any input: YAML syntax errors and every
 * violation of the format come back as a {@link ScenarioFileError} (the first one in the file's
 * order of checking, see docs/scenario-files.md).
 */
export function parseScenarioFile(text: string, file: string): ScenarioSpec | ScenarioFileError {
  const lineCounter = new LineCounter();
  let doc: Document.Parsed;
  try {
    doc = parseDocument(text, {
      lineCounter,
      prettyErrors: false,
      // Duplicate keys are reported by the validator, with their field path.
      uniqueKeys: false,
      version: "1.2",
      schema: "core",
    });
  } catch (err) {
    // The parser reports bad input as errors; a throw would be its bug, but it is still about
    // this input, so it is reported like one.
    const message = err instanceof Error ? err.message : String(err);
    return new ScenarioFileError(file, 1, 1, "(yaml)", "yaml-syntax", oneLine(message), err);
  }
  const problems: YAMLError[] = [...doc.errors, ...doc.warnings];
  if (problems.length > 0) {
    const first = problems.reduce((a, b) => (b.pos[0] < a.pos[0] ? b : a));
    const pos = lineCounter.linePos(first.pos[0]);
    const message = `YAML syntax: ${oneLine(first.message)}`;
    return new ScenarioFileError(file, pos.line, pos.col, "(yaml)", "yaml-syntax", message, first);
  }

  const v = new Validator<Env>(lineCounter, newEnv(file));
  const root: At = { path: "", loc: { line: 1, column: 1 } };
  const spec =
    doc.contents === null
      ? v.fail(root, "bad-type", "expected a mapping (the scenario), got an empty document")
      : (checkVersionFirst(v, doc.contents) ?? SCENARIO(v, doc.contents, root));
  if (spec !== INVALID) return spec;
  const f = v.failure ?? bug("scenario validation failed without recording an error");
  return new ScenarioFileError(file, f.loc.line, f.loc.column, f.field, f.code, f.message);
}

function oneLine(message: string): string {
  return message.replace(/\s*[\r\n]+\s*/g, " ").trim();
}

// ---- the validation state ---------------------------------------------------------------------

/** What later parts of a file are checked against. */
interface Env {
  readonly file: string;
  /** Set by the `arch` field, which is checked before `machine`. */
  arch: ScenarioArch | null;
  memory: number;
  readonly units: Map<string, UnitSpec>;
  readonly devices: Map<string, DeviceSpec>;
  /** Device names by BDF, to refuse a BDF given twice. */
  readonly bdfs: Map<string, string>;
  /** What `mmap` steps defined, by region name. */
  readonly regions: Map<string, Region>;
  /** How many `repeat` steps enclose the steps being checked. */
  depth: number;
}

function newEnv(file: string): Env {
  return {
    file,
    arch: null,
    memory: DEFAULT_MEMORY,
    units: new Map(),
    devices: new Map(),
    bdfs: new Map(),
    regions: new Map(),
    depth: 0,
  };
}

/** A region an `mmap` step defined: whose it is and how many pages it has. */
interface Region {
  readonly name: string;
  readonly process: string;
  readonly pages: number;
}

type C<T> = Check<T, Env>;
type V = Validator<Env>;

// ---- constants of the format ------------------------------------------------------------------

const PAGE = 4096;
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const DEFAULT_MEMORY = 256 * MiB;
/** Addresses in files are exact numbers: below 2^53. */
const ADDRESS_LIMIT = 2 ** 53;
const MAX_PASID_BITS = 20;
/** A user's PASID limit is at most the whole PASID space. */
const MAX_PASID_LIMIT = 2 ** MAX_PASID_BITS;
const MAX_COUNT = 1_000_000;
/** `repeat` steps nest at most this deep. */
const MAX_REPEAT_DEPTH = 16;

const NAME = /^[a-z][a-z0-9_-]*$/;
const SCENARIO_NAME = /^[a-z0-9][a-z0-9-]*$/;
const BDF = /^([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-9a-fA-F])$/;

// ---- field checks -----------------------------------------------------------------------------

/** `version` is checked before anything else, so a file of a later format says so first. */
function checkVersionFirst(v: V, contents: unknown): Invalid | null {
  if (!isMap(contents)) return null;
  for (const pair of contents.items) {
    if (isScalar(pair.key) && scalarText(pair.key) === "version") {
      const at: At = { path: "version", loc: v.locOf(pair.value, v.locOf(pair.key, ROOT_LOC)) };
      return VERSION(v, pair.value ?? null, at) === INVALID ? INVALID : null;
    }
  }
  return null;
}

const ROOT_LOC: Loc = Object.freeze({ line: 1, column: 1 });

const VERSION: C<1> = refine(int({ min: 0, max: Number.MAX_SAFE_INTEGER }), (n, v, at) =>
  n === 1
    ? (1 as const)
    : v.fail(at, "unsupported", `unsupported version ${n} (this iommu-sim reads version 1)`),
);

const ARCH: C<ScenarioArch> = refine(oneOf(["vtd", "mock", "smmu", "both"]), (arch, v: V) => {
  v.env.arch = arch;
  return arch;
});

const u32 = int({ min: 0, max: 0xffffffff, range: "0..0xffffffff" });
const count = int({ min: 1, max: MAX_COUNT });
const pasidBits = int({ min: 0, max: MAX_PASID_BITS });
const address = int({ min: 0, max: ADDRESS_LIMIT - 1, range: "0..2^53-1" });

const pageAligned = refine(address, (iova, v, at) =>
  iova % PAGE === 0
    ? iova
    : v.fail(at, "bad-value", `expected a 4 KiB-aligned address, got 0x${iova.toString(16)}`),
);

/** A positive multiple of 4 KiB. */
const pages = refine(size({ min: 0, max: ADDRESS_LIMIT - 1 }), (n, v, at, node) =>
  n > 0 && n % PAGE === 0
    ? n
    : v.fail(at, "bad-value", `expected a positive multiple of 4 KiB, got ${describeNode(node)}`),
);

const memory = refine(
  size({ min: 16 * MiB, max: 4 * GiB, range: "16 MiB..4 GiB" }),
  (n, v: V, at, node) => {
    if (n % PAGE !== 0) {
      return v.fail(at, "bad-value", `expected a multiple of 4 KiB, got ${describeNode(node)}`);
    }
    v.env.memory = n;
    return n;
  },
);

const powerOfTwo = refine(int({ min: 1, max: 4096 }), (n, v, at) =>
  (n & (n - 1)) === 0 ? n : v.fail(at, "bad-value", `expected a power of two, got ${n}`),
);

const name = (what: string) => pattern(NAME, `a ${what} name`);

/** The name spaces of steps' names (units and devices are the machine's). */
type Space = "domain" | "pasid" | "buffer" | "user" | "process" | "region";

/** A new name in `space` (defined here; a second definition is `duplicate-name`). */
function defines(space: Space, tag: string = space): C<string> {
  return refine(name(space), (s, v: V, at) => {
    if (space === "domain" && s === "default") {
      return v.fail(at, "bad-value", `"default" names a device's default domain and is reserved`);
    }
    return v.define(space, s, at, tag) ?? s;
  });
}

/** A name defined earlier in `space`. */
function refers(space: Space, options: { default?: boolean } = {}) {
  return refine(text(), (s, v: V, at) => {
    if (options.default === true && s === "default") return s;
    if (v.lookup(space, s) !== undefined) return s;
    return v.fail(at, "unknown-name", `unknown ${space} ${JSON.stringify(s)} (${known(v, space)})`);
  });
}

function known(v: V, space: string): string {
  const names = v.names(space);
  if (names.length === 0) return `no ${space} is defined before this point`;
  const shown = names.length > 12 ? [...names.slice(0, 12), "..."] : names;
  return `defined so far: ${shown.join(", ")}`;
}

/** A device declared under `machine.devices`; with `kind`, the step's op needs that kind. */
function device(op?: string, kind?: DeviceKind): C<DeviceSpec> {
  return refine(text(), (s, v: V, at) => {
    const dev = v.env.devices.get(s);
    if (dev === undefined) {
      const names = [...v.env.devices.keys()].join(", ");
      return v.fail(at, "unknown-name", `unknown device ${JSON.stringify(s)} (devices: ${names})`);
    }
    if (kind !== undefined && dev.kind !== kind) {
      return v.fail(at, "bad-value", `${op} needs a ${kind} device; ${s} is a ${dev.kind}`);
    }
    return dev;
  });
}

/** A PASID: a number below 2^20, or a name from `pasid-alloc` or `dma-pasid`. */
const pasid: C<PasidRef> = (v, node, at) => {
  const isNumber = isScalar(node) && node.value !== null && parseInteger(scalarText(node)) !== null;
  return isNumber
    ? int({ min: 0, max: 2 ** MAX_PASID_BITS - 1, range: "0..0xfffff" })(v, node, at)
    : refers("pasid")(v, node, at);
};

/** A step's PASID needs a device that can emit one, and a number must fit its PASID width. */
function checkPasid(v: V, dev: DeviceSpec, ref: PasidRef | undefined, at: At): Invalid | null {
  if (ref === undefined) return null;
  if (dev.pasidBits === 0) {
    return v.fail(at, "bad-value", `device ${dev.name} has pasid-bits 0 and cannot use a PASID`);
  }
  if (typeof ref === "number" && ref >= 2 ** dev.pasidBits) {
    return v.fail(
      at,
      "out-of-range",
      `PASID ${ref} does not fit the ${dev.pasidBits} PASID bits of device ${dev.name}`,
    );
  }
  return null;
}

/** The range `base`, `len` must end at or below 2^53. */
function checkEnd(v: V, base: number, len: number, at: At): Invalid | null {
  if (base + len <= ADDRESS_LIMIT) return null;
  return v.fail(at, "out-of-range", `the range 0x${base.toString(16)}+${len} ends beyond 2^53`);
}

/** Host memory for one buffer must fit in the machine's memory. */
function checkFits(v: V, len: number, at: At): Invalid | null {
  if (len <= v.env.memory) return null;
  return v.fail(
    at,
    "out-of-range",
    `${formatSize(len)} is more than the machine's memory (${formatSize(v.env.memory)})`,
  );
}

/** A device a process's work runs on: one that emits PASIDs (and of `kind`, when given). */
function svaDevice(op: string, kind?: DeviceKind): C<DeviceSpec> {
  return refine(device(op, kind), (dev, v, at) =>
    dev.pasidBits > 0
      ? dev
      : v.fail(
          at,
          "bad-value",
          `${op} needs a device that emits PASIDs; ${dev.name} has pasid-bits 0`,
        ),
  );
}

/** A region an earlier `mmap` defined. */
const region: C<Region> = refine(
  refers("region"),
  (s, v: V) => v.env.regions.get(s) ?? bug(`region ${s} defined without its mmap`),
);

const PROT: Readonly<Record<"r" | "rw" | "none", ProtBits>> = Object.freeze({
  r: PROT_READ,
  rw: PROT_READ | PROT_WRITE,
  none: PROT_NONE,
});

const prot: C<ProtBits> = refine(oneOf(["r", "rw", "none"]), (p) => PROT[p]);

/** Pages of a region: at most the largest machine's memory (`checkFits` bounds it further). */
const MAX_PAGES = (4 * GiB) / PAGE;
const pageIndex = int({ min: 0, max: MAX_PAGES - 1 });
const pageCount = int({ min: 1, max: MAX_PAGES });

function plural(n: number, what: string): string {
  return n === 1 ? `1 ${what}` : `${n} ${what}s`;
}

/** Pages `page`.. of region `r`: `pages` (default the rest of the region) must stay inside it. */
function pageRange(
  v: V,
  r: Region,
  page: number,
  pages: number | undefined,
  at: { readonly page: At; readonly pages: At },
): { page: number; pages: number } | Invalid {
  if (page >= r.pages) {
    return v.fail(
      at.page,
      "out-of-range",
      `region ${r.name} has ${plural(r.pages, "page")} (0..${r.pages - 1}), got page ${page}`,
    );
  }
  const n = pages ?? r.pages - page;
  if (page + n > r.pages) {
    return v.fail(
      at.pages,
      "out-of-range",
      `pages ${page}..${page + n - 1} end beyond region ${r.name} (${plural(r.pages, "page")})`,
    );
  }
  return { page, pages: n };
}

/** The errnos a `bind` step may expect, as iommu_sva_bind_device documents them. */
const BIND_ERRNOS: readonly BindErrno[] = [
  "EBUSY",
  "ENODEV",
  "EINVAL",
  "ENOSPC",
  "EOVERFLOW",
  "ENOMEM",
  "EOPNOTSUPP",
];

/** An offset for messages: hex from 4 KiB up, as addresses are written. */
function formatOffset(n: number): string {
  return n >= PAGE ? `0x${n.toString(16)}` : String(n);
}

// ---- machine ----------------------------------------------------------------------------------

const SUPERPAGES: readonly SuperpageSize[] = ["2M", "1G"];

const UNIT: C<UnitSpec> = object(
  {
    name: required(name("unit")),
    mode: optional(oneOf(["scalable", "legacy"]), "scalable"),
    cache: optional(oneOf(["maximal", "minimal"]), "maximal"),
    iotlb: optional(powerOfTwo),
    "caching-mode": optional(bool(), false),
    "pasid-bits": optional(pasidBits),
    ats: optional(bool(), true),
    pri: optional(bool()),
    superpages: optional(list(oneOf(SUPERPAGES), 0, 2, (s) => s)),
  },
  (f, at, v: V, self) => {
    const smmu = v.env.arch === "smmu" || v.env.arch === "both";
    if (smmu && f.mode === "legacy") {
      return v.fail(
        at.mode,
        "bad-value",
        `legacy mode is VT-d's; arch ${v.env.arch} needs scalable units`,
      );
    }
    if (v.env.arch === "smmu" && f.cachingMode) {
      return v.fail(at.cachingMode, "bad-value", "caching mode is VT-d's (arch smmu)");
    }
    if (f.mode === "legacy" && f.pasidBits !== undefined && f.pasidBits !== 0) {
      return v.fail(at.pasidBits, "bad-value", "must be 0 in legacy mode (no PASID tables)");
    }
    if (f.pri === true && !f.ats) {
      return v.fail(at.pri, "bad-value", "page requests (pri) need ats");
    }
    if (v.define("unit", f.name, at.name) === INVALID) return INVALID;
    const given = f.superpages ?? SUPERPAGES;
    const unit: UnitSpec = {
      name: f.name,
      mode: f.mode,
      cache: f.cache,
      ...(f.iotlb === undefined ? {} : { iotlb: f.iotlb }),
      cachingMode: f.cachingMode,
      pasidBits: f.pasidBits ?? (f.mode === "legacy" ? 0 : MAX_PASID_BITS),
      ats: f.ats,
      pri: f.pri ?? f.ats,
      superpages: SUPERPAGES.filter((s) => given.includes(s)),
      loc: self.loc,
    };
    v.env.units.set(unit.name, unit);
    return unit;
  },
);

const bdf = refine(pattern(BDF, "a BDF like 00:01.0"), (s, v, at) => {
  const m = BDF.exec(s) ?? bug("BDF pattern");
  const bus = Number.parseInt(m[1] as string, 16);
  const dev = Number.parseInt(m[2] as string, 16);
  const fn = Number.parseInt(m[3] as string, 16);
  if (dev > 0x1f || fn > 7) {
    return v.fail(at, "out-of-range", `device must be 00..1f and function 0..7, got ${s}`);
  }
  return { bdf: s.toLowerCase(), rid: (bus << 8) | (dev << 3) | fn };
});

const DEVICE_FIELDS = {
  name: required(name("device")),
  bdf: required(bdf),
  kind: optional(oneOf(["copy-engine", "work-queue"]), "copy-engine"),
  "pasid-bits": optional(pasidBits, 0),
  ats: optional(bool(), false),
  pri: optional(bool(), false),
  atc: optional(int({ min: 1, max: 4096 })),
};

function buildDevice(
  f: {
    name: string;
    bdf: { bdf: string; rid: number };
    unit: string | undefined;
    kind: DeviceKind;
    pasidBits: number;
    ats: boolean;
    pri: boolean;
    atc: number | undefined;
  },
  at: Readonly<Record<"name" | "bdf" | "unit" | "pasidBits" | "ats" | "pri" | "atc", At>>,
  v: V,
  self: At,
): DeviceSpec | Invalid {
  let unit: UnitSpec | null = null;
  if (v.env.arch !== "mock") {
    const first = v.env.units.values().next();
    unit =
      f.unit === undefined ? (first.done ? null : first.value) : (v.env.units.get(f.unit) ?? null);
    if (unit === null) {
      const names = [...v.env.units.keys()].join(", ");
      return v.fail(
        at.unit,
        "unknown-name",
        `unknown unit ${JSON.stringify(f.unit)} (units: ${names})`,
      );
    }
    if (f.pasidBits > 0 && (unit.mode !== "scalable" || unit.pasidBits === 0)) {
      return v.fail(
        at.pasidBits,
        "bad-value",
        `a PASID-capable device needs a scalable-mode unit with pasid-bits > 0; ` +
          `unit ${unit.name} is ${unit.mode} with pasid-bits ${unit.pasidBits}`,
      );
    }
    if (f.ats && !unit.ats) {
      return v.fail(
        at.ats,
        "bad-value",
        `unit ${unit.name} has no device-TLB support (ats: false)`,
      );
    }
  }
  if (f.pri && !f.ats) return v.fail(at.pri, "bad-value", "page requests (pri) need ats");
  if (f.pri && unit !== null && !unit.pri) {
    return v.fail(at.pri, "bad-value", `unit ${unit.name} takes no page requests (pri: false)`);
  }
  if (f.atc !== undefined && !f.ats) {
    return v.fail(at.atc, "bad-value", "an ATC size needs ats: true");
  }
  if (v.define("device", f.name, at.name) === INVALID) return INVALID;
  const owner = v.env.bdfs.get(f.bdf.bdf);
  if (owner !== undefined) {
    return v.fail(at.bdf, "duplicate-name", `BDF ${f.bdf.bdf} is already device ${owner}'s`);
  }
  v.env.bdfs.set(f.bdf.bdf, f.name);
  const dev: DeviceSpec = {
    name: f.name,
    bdf: f.bdf.bdf,
    rid: f.bdf.rid,
    unit: unit === null ? null : unit.name,
    kind: f.kind,
    pasidBits: f.pasidBits,
    ats: f.ats,
    pri: f.pri,
    atc: f.ats ? (f.atc ?? 32) : 0,
    loc: self.loc,
  };
  v.env.devices.set(dev.name, dev);
  return dev;
}

const DEVICE_IOMMU: C<DeviceSpec> = object(
  { ...DEVICE_FIELDS, unit: optional(text()) },
  (f, at, v, self) => buildDevice(f, at, v, self),
);

const DEVICE_MOCK: C<DeviceSpec> = object(
  { ...DEVICE_FIELDS, unit: forbidden("arch mock has no IOMMU units") },
  (f, at, v, self) => buildDevice(f, at, v, self),
);

function buildMachine(
  f: { memory: number; units: UnitSpec[] | undefined; devices: DeviceSpec[] },
  self: At,
): MachineSpec {
  return { memory: f.memory, units: f.units ?? [], devices: f.devices, loc: self.loc };
}

const MACHINE_IOMMU: C<MachineSpec> = object(
  {
    memory: optional(memory, DEFAULT_MEMORY),
    units: required(list(UNIT, 1, 8)),
    devices: required(list(DEVICE_IOMMU, 1, 64)),
  },
  (f, _at, _v, self) => buildMachine(f, self),
);

const MACHINE_MOCK: C<MachineSpec> = object(
  {
    memory: optional(memory, DEFAULT_MEMORY),
    units: forbidden("arch mock has no IOMMU units"),
    devices: required(list(DEVICE_MOCK, 1, 64)),
  },
  (f, _at, _v, self) => buildMachine({ ...f, units: undefined }, self),
);

const MACHINE: C<MachineSpec> = (v, node, at) =>
  v.env.arch === null
    ? bug("machine checked before arch")
    : v.env.arch === "mock"
      ? MACHINE_MOCK(v, node, at)
      : MACHINE_IOMMU(v, node, at);

// ---- steps ------------------------------------------------------------------------------------

/** A step as its op builds it; the step's place is added by {@link STEP}. */
type StepBody = StepSpec extends infer S ? (S extends StepSpec ? Omit<S, "loc"> : never) : never;

const PERM: Readonly<Record<"r" | "w" | "rw", number>> = Object.freeze({
  r: IOMMU_READ,
  w: IOMMU_WRITE,
  rw: IOMMU_READ | IOMMU_WRITE,
});

/** Nested steps of a `repeat`, at most {@link MAX_REPEAT_DEPTH} deep. */
const NESTED_STEPS: C<StepSpec[]> = (v, node, at) => {
  if (v.env.depth >= MAX_REPEAT_DEPTH) {
    return v.fail(at, "out-of-range", `repeat steps nest at most ${MAX_REPEAT_DEPTH} deep`);
  }
  v.env.depth++;
  const steps = STEPS(v, node, at);
  v.env.depth--;
  return steps;
};

/**
 * Every op: its fields and how they make the step. Adding an op is one entry here (and its
 * type in scenario-spec.ts).
 */
const OPS: Readonly<Record<StepSpec["op"], C<StepBody>>> = {
  domain: object(
    {
      name: required(defines("domain")),
      type: optional(oneOf(["paging", "identity", "blocked"]), "paging"),
      stage: optional(oneOf(["first", "second"])),
    },
    (f, at, v) => {
      if (f.stage !== undefined && f.type !== "paging") {
        return v.fail(at.stage, "bad-value", `only paging domains have a stage, not ${f.type}`);
      }
      return {
        op: "domain",
        name: f.name,
        type: f.type,
        ...(f.stage === undefined ? {} : { stage: f.stage }),
      };
    },
  ),
  attach: object(
    { device: required(device()), domain: required(refers("domain", { default: true })) },
    (f) => ({ op: "attach", device: f.device.name, domain: f.domain }),
  ),
  "pasid-alloc": object({ name: required(defines("pasid")) }, (f) => ({
    op: "pasid-alloc",
    name: f.name,
  })),
  "pasid-attach": object(
    {
      device: required(device()),
      pasid: required(refers("pasid")),
      domain: required(refers("domain")),
    },
    (f, at, v) =>
      checkPasid(v, f.device, f.pasid, at.pasid) ?? {
        op: "pasid-attach",
        device: f.device.name,
        pasid: f.pasid,
        domain: f.domain,
      },
  ),
  "pasid-detach": object(
    { device: required(device()), pasid: required(refers("pasid")) },
    (f, at, v) =>
      checkPasid(v, f.device, f.pasid, at.pasid) ?? {
        op: "pasid-detach",
        device: f.device.name,
        pasid: f.pasid,
      },
  ),
  "pasid-free": object({ pasid: required(refers("pasid")) }, (f) => ({
    op: "pasid-free",
    pasid: f.pasid,
  })),
  "dma-pasid": object(
    { device: required(device()), name: required(name("pasid")) },
    (f, at, v) =>
      checkPasid(v, f.device, f.name, at.device) ??
      v.define("pasid", f.name, at.name) ?? {
        op: "dma-pasid",
        device: f.device.name,
        name: f.name,
      },
  ),
  map: object(
    {
      domain: required(refers("domain")),
      iova: required(pageAligned),
      size: required(pages),
      perm: optional(oneOf(["r", "w", "rw"]), "rw"),
      name: optional(name("buffer")),
    },
    (f, at, v) =>
      checkEnd(v, f.iova, f.size, at.size) ??
      checkFits(v, f.size, at.size) ??
      (f.name === undefined ? undefined : v.define("buffer", f.name, at.name, "map")) ?? {
        op: "map",
        domain: f.domain,
        iova: f.iova,
        size: f.size,
        perm: PERM[f.perm],
        ...(f.name === undefined ? {} : { name: f.name }),
      },
  ),
  unmap: object(
    { domain: required(refers("domain")), iova: required(pageAligned), size: required(pages) },
    (f, at, v) =>
      checkEnd(v, f.iova, f.size, at.size) ?? {
        op: "unmap",
        domain: f.domain,
        iova: f.iova,
        size: f.size,
      },
  ),
  "domain-free": object({ domain: required(refers("domain")) }, (f) => ({
    op: "domain-free",
    domain: f.domain,
  })),
  dma: object(
    {
      device: required(device()),
      pasid: optional(pasid),
      iova: required(address),
      size: required(size({ min: 1, max: 16 * MiB })),
      op: required(oneOf(["read", "write"])),
      expect: optional(oneOf(["ok", "fault"])),
    },
    (f, at, v) =>
      checkPasid(v, f.device, f.pasid, at.pasid) ??
      checkEnd(v, f.iova, f.size, at.size) ?? {
        op: "dma",
        device: f.device.name,
        ...(f.pasid === undefined ? {} : { pasid: f.pasid }),
        iova: f.iova,
        size: f.size,
        access: f.op,
        ...(f.expect === undefined ? {} : { expect: f.expect }),
      },
  ),
  "dma-map": object(
    {
      device: required(device()),
      name: required(defines("buffer", "dma-map")),
      size: required(pages),
      dir: optional(oneOf(["to-device", "from-device", "bidirectional"]), "bidirectional"),
    },
    (f, at, v) =>
      checkFits(v, f.size, at.size) ?? {
        op: "dma-map",
        device: f.device.name,
        name: f.name,
        size: f.size,
        dir: f.dir,
      },
  ),
  "dma-unmap": object({ buffer: required(refers("buffer")) }, (f, at, v) => {
    const def = v.lookup("buffer", f.buffer) ?? bug("buffer vanished");
    if (def.tag !== "dma-map") {
      return v.fail(
        at.buffer,
        "bad-value",
        `buffer ${f.buffer} was made by map (line ${def.loc.line}); ` +
          "dma-unmap takes dma-map buffers",
      );
    }
    return { op: "dma-unmap", buffer: f.buffer };
  }),
  copy: object(
    {
      device: required(device("copy", "copy-engine")),
      pasid: optional(pasid),
      src: required(address),
      dst: required(address),
      size: required(pages),
    },
    (f, at, v) =>
      checkPasid(v, f.device, f.pasid, at.pasid) ??
      checkEnd(v, f.src, f.size, at.src) ??
      checkEnd(v, f.dst, f.size, at.dst) ?? {
        op: "copy",
        device: f.device.name,
        ...(f.pasid === undefined ? {} : { pasid: f.pasid }),
        src: f.src,
        dst: f.dst,
        size: f.size,
      },
  ),
  submit: object(
    {
      device: required(device("submit", "work-queue")),
      pasid: optional(pasid),
      count: required(count),
      size: required(pages),
    },
    (f, at, v) =>
      checkPasid(v, f.device, f.pasid, at.pasid) ?? {
        op: "submit",
        device: f.device.name,
        ...(f.pasid === undefined ? {} : { pasid: f.pasid }),
        count: f.count,
        size: f.size,
      },
  ),
  random: object(
    {
      count: required(count),
      devices: optional(list(device(), 1, 64, (d) => d.name)),
    },
    (f, _at, v) => ({
      op: "random",
      count: f.count,
      devices: (f.devices ?? [...v.env.devices.values()]).map((d) => d.name),
    }),
  ),
  repeat: object({ count: required(count), steps: required(NESTED_STEPS) }, (f) => ({
    op: "repeat",
    count: f.count,
    steps: f.steps,
  })),
  unplug: object({ device: required(device()) }, (f) => ({ op: "unplug", device: f.device.name })),
  process: object({ name: required(defines("process")), user: optional(refers("user")) }, (f) => ({
    op: "process",
    name: f.name,
    ...(f.user === undefined ? {} : { user: f.user }),
  })),
  mmap: object(
    {
      process: required(refers("process")),
      name: required(name("region")),
      pages: required(pageCount),
      prot: optional(prot, PROT.rw),
      expect: optional(oneOf(["ok", "ENOMEM"]), "ok"),
    },
    (f, at, v) => {
      if (checkFits(v, f.pages * PAGE, at.pages) !== null) return INVALID;
      if (v.define("region", f.name, at.name) !== undefined) return INVALID;
      v.env.regions.set(f.name, { name: f.name, process: f.process, pages: f.pages });
      return {
        op: "mmap",
        process: f.process,
        name: f.name,
        pages: f.pages,
        prot: f.prot,
        expect: f.expect,
      };
    },
  ),
  munmap: object(
    { region: required(region), page: optional(pageIndex, 0), pages: optional(pageCount) },
    (f, at, v) => {
      const r = pageRange(v, f.region, f.page, f.pages, at);
      return r === INVALID ? INVALID : { op: "munmap", region: f.region.name, ...r };
    },
  ),
  mprotect: object(
    {
      region: required(region),
      page: optional(pageIndex, 0),
      pages: optional(pageCount),
      prot: required(prot),
      expect: optional(oneOf(["ok", "ENOMEM"]), "ok"),
    },
    (f, at, v) => {
      const r = pageRange(v, f.region, f.page, f.pages, at);
      if (r === INVALID) return INVALID;
      return { op: "mprotect", region: f.region.name, ...r, prot: f.prot, expect: f.expect };
    },
  ),
  "cpu-write": object(
    {
      region: required(region),
      page: optional(pageIndex, 0),
      pages: optional(pageCount),
      expect: optional(oneOf(["ok", "fault"]), "ok"),
    },
    (f, at, v) => {
      const r = pageRange(v, f.region, f.page, f.pages, at);
      if (r === INVALID) return INVALID;
      return { op: "cpu-write", region: f.region.name, ...r, expect: f.expect };
    },
  ),
  bind: object(
    {
      device: required(svaDevice("bind")),
      process: required(refers("process")),
      expect: optional(oneOf<"ok" | BindErrno>(["ok", ...BIND_ERRNOS]), "ok"),
    },
    (f) => ({ op: "bind", device: f.device.name, process: f.process, expect: f.expect }),
  ),
  unbind: object(
    {
      device: required(svaDevice("unbind")),
      process: required(refers("process")),
      expect: optional(oneOf(["ok", "ENOENT"]), "ok"),
    },
    (f) => ({ op: "unbind", device: f.device.name, process: f.process, expect: f.expect }),
  ),
  exit: object({ process: required(refers("process")) }, (f) => ({
    op: "exit",
    process: f.process,
  })),
  "sva-dma": object(
    {
      device: required(svaDevice("sva-dma")),
      process: optional(refers("process")),
      region: required(region),
      offset: optional(size({ min: 0, max: ADDRESS_LIMIT - 1 }), 0),
      size: required(size({ min: 1, max: 16 * MiB })),
      op: required(oneOf(["read", "write"])),
      expect: optional(oneOf(["ok", "fault"])),
    },
    (f, at, v) => {
      const r = f.region;
      const bytes = r.pages * PAGE;
      if (f.offset >= bytes) {
        return v.fail(
          at.offset,
          "out-of-range",
          `offset ${formatOffset(f.offset)} is beyond region ${r.name} (${formatSize(bytes)})`,
        );
      }
      if (f.offset + f.size > bytes) {
        return v.fail(
          at.size,
          "out-of-range",
          `${formatSize(f.size)} at offset ${formatOffset(f.offset)} ends beyond region ${r.name} (${formatSize(bytes)})`,
        );
      }
      return {
        op: "sva-dma",
        device: f.device.name,
        process: f.process ?? r.process,
        region: r.name,
        offset: f.offset,
        size: f.size,
        access: f.op,
        ...(f.expect === undefined ? {} : { expect: f.expect }),
      };
    },
  ),
  enqcmd: object(
    {
      device: required(svaDevice("enqcmd", "work-queue")),
      process: optional(refers("process")),
      src: required(region),
      dst: required(region),
      count: required(count),
      expect: optional(int({ min: 0, max: MAX_COUNT })),
    },
    (f, at, v) => {
      const proc = f.process ?? f.src.process;
      for (const [r, site] of [
        [f.src, at.src],
        [f.dst, at.dst],
      ] as const) {
        if (r.process !== proc) {
          return v.fail(
            site,
            "bad-value",
            `region ${r.name} is ${r.process}'s, not ${proc}'s: a process's descriptors name its own memory`,
          );
        }
      }
      const room = Math.min(f.src.pages, f.dst.pages);
      if (f.count > room) {
        return v.fail(
          at.count,
          "out-of-range",
          `descriptor i copies page i of src to page i of dst: at most ${room} here, got ${f.count}`,
        );
      }
      const expect = f.expect ?? f.count;
      if (expect > f.count) {
        return v.fail(
          at.expect,
          "out-of-range",
          `expected 0..${f.count} completed descriptors (the count), got ${expect}`,
        );
      }
      return {
        op: "enqcmd",
        device: f.device.name,
        process: proc,
        src: f.src.name,
        dst: f.dst.name,
        count: f.count,
        expect,
      };
    },
  ),
};

const STEP_BODY = oneKey<StepBody, Env>("op", OPS);

const STEP: C<StepSpec> = (v, node, at) => {
  const body = STEP_BODY(v, node, at);
  return body === INVALID ? INVALID : ({ ...body, loc: v.locOf(node, at.loc) } as StepSpec);
};

const STEPS: C<StepSpec[]> = list(
  lazy(() => STEP),
  1,
  Number.POSITIVE_INFINITY,
);

// ---- users ------------------------------------------------------------------------------------

const USER: C<UserSpec> = object(
  {
    name: required(name("user")),
    "pasid-limit": optional(int({ min: 0, max: MAX_PASID_LIMIT, range: "0..2^20" })),
  },
  (f, at, v, self) =>
    v.define("user", f.name, at.name) ?? {
      name: f.name,
      ...(f.pasidLimit === undefined ? {} : { pasidLimit: f.pasidLimit }),
      loc: self.loc,
    },
);

// ---- the document -----------------------------------------------------------------------------

const SCENARIO: C<ScenarioSpec> = object(
  {
    version: required(VERSION),
    scenario: required(pattern(SCENARIO_NAME, "a scenario name")),
    description: optional(text(), ""),
    arch: required(ARCH),
    seed: optional(u32),
    invalidation: optional(oneOf(["strict", "lazy"]), "strict"),
    machine: required(MACHINE),
    users: optional(list(USER, 1, 64)),
    steps: required(STEPS),
  },
  (f, _at, v, self) => ({
    file: v.env.file,
    version: f.version,
    scenario: f.scenario,
    description: f.description,
    arch: f.arch,
    ...(f.seed === undefined ? {} : { seed: f.seed }),
    invalidation: f.invalidation,
    machine: f.machine,
    users: f.users ?? [],
    steps: f.steps,
    loc: self.loc,
  }),
);
