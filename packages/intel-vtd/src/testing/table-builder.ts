// Builder of VT-d structures in memory for tests: root and context tables, PASID directories and
// tables, first- and second-stage page tables, and a small driver stand-in that programs the unit
// through its registers and submits invalidation descriptors. Everything is written through the
// format/ field tables, so tests describe mappings instead of hand-writing bytes, and nothing here
// depends on a driver.

import {
  type DevicePort,
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  type PageRequest,
} from "@iommu-sim/iommu-core";
import {
  decode,
  encode,
  type FieldValues,
  FrameAllocator,
  type Layout,
  loadLayout,
  type Mmio,
  mmioRead64,
  PhysMemory,
  storeLayout,
} from "@iommu-sim/iommu-core/platform";
import { CONTEXT_ENTRY, SM_CONTEXT_ENTRY } from "../format/context-entry.js";
import { FRCD } from "../format/fault-record.js";
import { FS_PTE } from "../format/first-stage-pte.js";
import { invDescLayout } from "../format/inv-desc.js";
import { PASID_DIR_ENTRY, PASID_ENTRY } from "../format/pasid-entry.js";
import { GCMD_QIE, GCMD_SRTP, GCMD_TE, VTD_REG } from "../format/registers.js";
import { ROOT_ENTRY, SM_ROOT_ENTRY } from "../format/root-entry.js";
import { SS_PTE } from "../format/second-stage-pte.js";
import type { VtdCacheConfig } from "../hw/cache-policy.js";
import { type VtdCapabilities, vtdFrcdOffset } from "../hw/vtd-caps.js";
import { VtdUnit, type VtdUnitOptions } from "../hw/vtd-unit.js";

const PAGE = 4096;

/** Fields of a legacy context entry, by spec name (addresses in place). */
export type ContextFields = FieldValues;

/** Builds VT-d tables in `mem`, taking zeroed 4 KiB frames from `frames`. */
export class VtdTableBuilder {
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;

  constructor(mem: PhysMemory, frames: FrameAllocator) {
    this.mem = mem;
    this.frames = frames;
  }

  /** A zeroed 4 KiB frame (or 2^order frames). */
  frame(order = 0): number {
    const pa = this.frames.alloc(order);
    if (typeof pa !== "number") throw new Error(`table builder: out of frames (${pa})`);
    this.mem.fill(pa, PAGE << order, 0);
    return pa;
  }

  /** Write `values` as `layout` at `pa`. */
  write(layout: Layout, pa: number, values: FieldValues): void {
    storeLayout(this.mem, layout, pa, encode(layout, values));
  }

  /** Decode the `layout` at `pa`. */
  read(layout: Layout, pa: number): FieldValues {
    return decode(layout, loadLayout(this.mem, layout, pa));
  }

  // --- Legacy mode ------------------------------------------------------------------------------

  /** The legacy context entry address of `sid`, creating the context table if the root has none. */
  legacyContextAddr(rta: number, sid: number): number {
    const rootAt = rta + (sid >>> 8) * 16;
    const root = this.read(ROOT_ENTRY, rootAt);
    let ctp = root.P ? Number(root.CTP) : 0;
    if (!ctp) {
      ctp = this.frame();
      this.write(ROOT_ENTRY, rootAt, { P: 1, CTP: ctp });
    }
    return ctp + (sid & 0xff) * 16;
  }

  /** Write the legacy context entry of `sid` (P is set unless given). */
  setContext(rta: number, sid: number, fields: ContextFields): number {
    const at = this.legacyContextAddr(rta, sid);
    this.write(CONTEXT_ENTRY, at, { P: 1, ...fields });
    return at;
  }

  // --- Scalable mode ----------------------------------------------------------------------------

  /** The scalable context entry address of `sid`, creating the (lower or upper) table as needed. */
  smContextAddr(rta: number, sid: number): number {
    const rootAt = rta + (sid >>> 8) * 16;
    const root = this.read(SM_ROOT_ENTRY, rootAt);
    const upper = (sid & 0x80) !== 0;
    let ctp = upper ? (root.UP ? Number(root.UCTP) : 0) : root.LP ? Number(root.LCTP) : 0;
    if (!ctp) {
      ctp = this.frame();
      const next = { ...root, ...(upper ? { UP: 1, UCTP: ctp } : { LP: 1, LCTP: ctp }) };
      this.write(SM_ROOT_ENTRY, rootAt, next);
    }
    return ctp + (sid & 0x7f) * 32;
  }

  /**
   * Write the scalable context entry of `sid`: a PASID directory is allocated when `PASIDDIRPTR`
   * is not given (PDTS 0 unless given: 128 directory entries, PASIDs below 2^13). Returns the
   * directory address.
   */
  setSmContext(rta: number, sid: number, fields: FieldValues = {}): number {
    const at = this.smContextAddr(rta, sid);
    const dir =
      fields.PASIDDIRPTR !== undefined
        ? Number(fields.PASIDDIRPTR)
        : this.frame(Number(fields.PDTS ?? 0) > 0 ? Number(fields.PDTS) : 0);
    this.write(SM_CONTEXT_ENTRY, at, { P: 1, PASIDE: 1, ...fields, PASIDDIRPTR: dir });
    return dir;
  }

  /** The PASID table entry address of `pasid` under directory `dir`, creating the table. */
  pasidEntryAddr(dir: number, pasid: number): number {
    const dirAt = dir + Math.floor(pasid / 64) * 8;
    const de = this.read(PASID_DIR_ENTRY, dirAt);
    let table = de.P ? Number(de.SMPTBLPTR) : 0;
    if (!table) {
      table = this.frame();
      this.write(PASID_DIR_ENTRY, dirAt, { P: 1, SMPTBLPTR: table });
    }
    return table + (pasid % 64) * 64;
  }

  /** Write the PASID table entry of `pasid` (P set unless given). Returns its address. */
  setPasidEntry(dir: number, pasid: number, fields: FieldValues): number {
    const at = this.pasidEntryAddr(dir, pasid);
    this.write(PASID_ENTRY, at, { P: 1, ...fields });
    return at;
  }

  // --- Page tables ------------------------------------------------------------------------------

  /**
   * Map one page of 4 KiB (level 1), 2 MiB (2) or 1 GiB (3) at `iova` to `pa` in the second-stage
   * table `root` of `levels` levels. `leaf` holds the leaf's extra fields (default R and W);
   * intermediate tables get R|W. Returns the leaf entry's address.
   */
  ssMap(
    root: number,
    levels: number,
    iova: number | bigint,
    pa: number,
    level = 1,
    leaf: FieldValues = { R: 1, W: 1 },
  ): number {
    const vpn = toVpn(iova);
    let table = root;
    for (let l = levels; l > level; l--) {
      const at = table + levelIndex(vpn, l) * 8;
      const e = this.read(SS_PTE, at);
      if (e.R || e.W) {
        table = Number(e.ADDR);
      } else {
        const next = this.frame();
        this.write(SS_PTE, at, { R: 1, W: 1, ADDR: next });
        table = next;
      }
    }
    const at = table + levelIndex(vpn, level) * 8;
    this.write(SS_PTE, at, { ...leaf, ...(level > 1 ? { PS: 1 } : {}), ADDR: pa });
    return at;
  }

  /**
   * Map one page in the first-stage (x86-64) table `root` of `levels` (4 or 5) levels: P, RW, US
   * by default on the leaf and every table entry (table entries keep P|RW|US whatever `leaf`
   * says). Returns the leaf entry's address.
   */
  fsMap(
    root: number,
    levels: number,
    iova: number | bigint,
    pa: number,
    level = 1,
    leaf: FieldValues = { P: 1, RW: 1, US: 1 },
  ): number {
    const vpn = toVpn(iova);
    let table = root;
    for (let l = levels; l > level; l--) {
      const at = table + levelIndex(vpn, l) * 8;
      const e = this.read(FS_PTE, at);
      if (e.P) {
        table = Number(e.ADDR);
      } else {
        const next = this.frame();
        this.write(FS_PTE, at, { P: 1, RW: 1, US: 1, ADDR: next });
        table = next;
      }
    }
    const at = table + levelIndex(vpn, level) * 8;
    this.write(FS_PTE, at, { ...leaf, ...(level > 1 ? { PS: 1 } : {}), ADDR: pa });
    return at;
  }

  /** The entry address of `iova` at `level` in a table walked from `root` (no allocation). */
  entryAddr(
    root: number,
    levels: number,
    iova: number | bigint,
    level: number,
    present: (lo: number) => boolean,
  ): number {
    const vpn = toVpn(iova);
    let table = root;
    for (let l = levels; l > level; l--) {
      const at = table + levelIndex(vpn, l) * 8;
      const lo = this.mem.read32(at);
      if (!present(lo)) return -1;
      table = (this.mem.read32(at + 4) & 0xfffff) * 2 ** 32 + ((lo & 0xfffff000) >>> 0);
    }
    return table + levelIndex(vpn, level) * 8;
  }
}

function toVpn(iova: number | bigint): number {
  return typeof iova === "bigint" ? Number(iova >> 12n) : Math.floor(iova / PAGE);
}

function levelIndex(vpn: number, level: number): number {
  return Math.floor(vpn / 512 ** (level - 1)) % 512;
}

/** Options of `vtdTestMachine`. */
export interface VtdTestMachineOptions {
  caps?: Partial<VtdCapabilities>;
  cache?: Partial<VtdCacheConfig>;
  scalable?: boolean;
  /** Enable queued invalidation (default: when the caps have QI). */
  qi?: boolean;
  /** Enable translation (default true). */
  enable?: boolean;
  unit?: Partial<VtdUnitOptions>;
}

/** A unit with memory, a builder, a root table latched, QI and translation on. */
export interface VtdTestMachine {
  mem: PhysMemory;
  frames: FrameAllocator;
  b: VtdTableBuilder;
  unit: VtdUnit;
  rta: number;
  qi: QiSubmitter | null;
}

/** A unit and its tables, brought up through registers the way a driver does. */
export function vtdTestMachine(options: VtdTestMachineOptions = {}): VtdTestMachine {
  const mem = new PhysMemory();
  const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x400_0000 });
  const b = new VtdTableBuilder(mem, frames);
  const unit = new VtdUnit({ mem, caps: options.caps, cache: options.cache, ...options.unit });
  const scalable = options.scalable ?? unit.caps.smts;
  const rta = b.frame();
  unit.write32(VTD_REG.RTADDR, (rta | (scalable ? 1 << 10 : 0)) >>> 0);
  unit.write32(VTD_REG.RTADDR + 4, 0);
  unit.write32(VTD_REG.GCMD, GCMD_SRTP);
  let qi: QiSubmitter | null = null;
  let gcmd = 0;
  if (options.qi ?? unit.caps.qi) {
    qi = new QiSubmitter(unit, b, scalable);
    gcmd |= GCMD_QIE;
    unit.write32(VTD_REG.GCMD, gcmd);
  }
  if (options.enable ?? true) unit.write32(VTD_REG.GCMD, gcmd | GCMD_TE);
  return { mem, frames, b, unit, rta, qi };
}

/** Writes invalidation descriptors into a queue and moves IQT, as qi_submit_sync does. */
export class QiSubmitter {
  readonly base: number;
  readonly wide: boolean;
  readonly size: number;
  private tail = 0;
  private readonly mmio: Mmio;
  private readonly mem: PhysMemory;

  constructor(mmio: Mmio, b: VtdTableBuilder, wide: boolean, pages = 1) {
    this.mmio = mmio;
    this.mem = b.mem;
    this.wide = wide;
    this.base = b.frame(pages > 1 ? Math.log2(pages) : 0);
    this.size = pages * PAGE;
    mmio.write32(VTD_REG.IQT, 0);
    mmio.write32(VTD_REG.IQA, (this.base | (wide ? 1 << 11 : 0) | Math.log2(pages)) >>> 0);
    mmio.write32(VTD_REG.IQA + 4, 0);
  }

  /** Write one descriptor of `type` with `fields` at the tail (not yet visible to hardware). */
  put(type: number, fields: FieldValues, extra?: readonly number[]): void {
    const layout = invDescLayout(type);
    if (layout === null) throw new Error(`no descriptor type ${type}`);
    const w = encode(layout, { Type: type, ...fields });
    this.putRaw([...w, ...(extra ?? [])]);
  }

  /** Write raw words (4 for a 128-bit descriptor, up to 8 for a 256-bit one) at the tail. */
  putRaw(words: readonly number[]): void {
    const slot = this.wide ? 32 : 16;
    const at = this.base + this.tail;
    for (let i = 0; i < slot / 4; i += 2)
      this.mem.write64(at + i * 4, (words[i] ?? 0) >>> 0, (words[i + 1] ?? 0) >>> 0);
    this.tail = (this.tail + slot) % this.size;
  }

  /** Make everything written so far visible: IQT = tail. */
  commit(): void {
    this.mmio.write32(VTD_REG.IQT, this.tail);
  }

  /** Write descriptors and a wait with status write, commit, and report whether it completed. */
  submit(descs: ReadonlyArray<[number, FieldValues]>): boolean {
    for (const [type, fields] of descs) this.put(type, fields);
    const status = this.base + this.size - 8;
    this.mem.write32(status, 0);
    this.put(5, { SW: 1, SDATA: 2, SADDR: status });
    this.commit();
    return this.mem.read32(status) === 2;
  }

  get head(): number {
    return mmioRead64(this.mmio, VTD_REG.IQH);
  }

  get tailOffset(): number {
    return this.tail;
  }
}

/** Translate one request through `unit`: a compact result for assertions. */
export function xlate(
  unit: { translate: VtdUnit["translate"] },
  rid: number,
  iova: number | bigint,
  opts: {
    pasid?: number;
    write?: boolean;
    exec?: boolean;
    priv?: boolean;
    at?: number;
    read?: boolean;
  } = {},
): { status: number; pa: number; perm: number; code: number; kind: number; sizeShift: number } {
  const req = newTranslationRequest();
  const out = newTranslationResult();
  req.rid = rid;
  req.sid = rid;
  req.pasid = opts.pasid ?? NO_PASID;
  const vpn = toVpn(iova);
  req.iovaPfn = vpn;
  req.offset = typeof iova === "bigint" ? Number(iova & 0xfffn) : iova % PAGE;
  req.access =
    (opts.write ? DMA_WRITE : 0) |
    ((opts.read ?? !opts.write) ? DMA_READ : 0) |
    (opts.exec ? 4 : 0);
  req.privileged = opts.priv ?? false;
  req.at = opts.at ?? 0;
  unit.translate(req, out);
  return {
    status: out.status,
    pa: out.pa,
    perm: out.perm,
    code: out.code,
    kind: out.fault,
    sizeShift: out.sizeShift,
  };
}

/** `xlate` through `translateUncached`: what a fresh walk of the tables answers now. */
export function xlateFresh(
  unit: VtdUnit,
  rid: number,
  iova: number | bigint,
  opts: Parameters<typeof xlate>[3] = {},
): ReturnType<typeof xlate> {
  return xlate({ translate: (req, out) => unit.translateUncached(req, out) }, rid, iova, opts);
}

/** Send one PRI page request for the page holding `iova`. */
export function pageRequest(
  unit: { pageRequest(req: PageRequest): void },
  rid: number,
  iova: number | bigint,
  opts: {
    pasid?: number;
    write?: boolean;
    read?: boolean;
    exec?: boolean;
    priv?: boolean;
    prgIndex?: number;
    last?: boolean;
  } = {},
): void {
  unit.pageRequest({
    rid,
    sid: rid,
    pasid: opts.pasid ?? NO_PASID,
    iovaPfn: toVpn(iova),
    access:
      ((opts.read ?? true) ? DMA_READ : 0) |
      (opts.write ? DMA_WRITE : 0) |
      (opts.exec ? DMA_EXEC : 0),
    privileged: opts.priv ?? false,
    prgIndex: opts.prgIndex ?? 0,
    last: opts.last ?? true,
  });
}

/** Fault recording register `index` of `unit`, read through its MMIO registers and decoded. */
export function readFrcd(unit: VtdUnit, index: number): FieldValues {
  const at = vtdFrcdOffset(unit.caps) + index * 16;
  const words = [0, 4, 8, 12].map((o) => unit.read32(at + o));
  return decode(FRCD, words);
}

/** One call a device received from the unit. */
export type PortCall =
  | { op: "prgResponse"; pasid: number; prgIndex: number; code: number }
  | { op: "atsInvalidate"; pasid: number; iovaPfn: number; pages: number; global: boolean }
  | { op: "stallResume"; stallTag: number; retry: boolean };

/** A device end that records every call the unit makes to it (no ATC of its own). */
export class RecordingPort implements DevicePort {
  readonly rid: number;
  readonly sid: number;
  readonly calls: PortCall[] = [];

  constructor(rid: number) {
    this.rid = rid;
    this.sid = rid;
  }

  prgResponse(pasid: number, prgIndex: number, code: number): void {
    this.calls.push({ op: "prgResponse", pasid, prgIndex, code });
  }

  atsInvalidate(pasid: number, iovaPfn: number, pages: number, global: boolean): void {
    this.calls.push({ op: "atsInvalidate", pasid, iovaPfn, pages, global });
  }

  stallResume(stallTag: number, retry: boolean): void {
    this.calls.push({ op: "stallResume", stallTag, retry });
  }
}
