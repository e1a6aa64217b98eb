// Test-side builder of SMMUv3 structures in memory: linear and 2-level stream tables, STEs, linear
// and 2-level CD tables, CDs, and LPAE stage 1 / stage 2 tables with any granule, level, block and
// attribute, all written through the format/ field tables; plus `smmuTestMachine`, which brings an
// SmmuV3 up through its registers and submits commands, reads events and PRI entries. Nothing
// here depends on a driver.

import {
  type DevicePort,
  DMA_READ,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  type TranslationResult,
} from "@iommu-sim/iommu-core";
import {
  decode,
  encode,
  type FieldValues,
  FrameAllocator,
  type Layout,
  loadLayout,
  mmioWrite64,
  PhysMemory,
  storeLayout,
} from "@iommu-sim/iommu-core/platform";
import { CD, L1_CD } from "../format/cd.js";
import { CMD_SYNC, cmdLayout } from "../format/commands.js";
import { EVT_SIZE, eventLayout } from "../format/events.js";
import {
  LPAE_S1_BLOCK_DESC,
  LPAE_S1_TABLE_DESC,
  LPAE_S2_BLOCK_DESC,
  LPAE_S2_TABLE_DESC,
} from "../format/lpae-desc.js";
import { PRIQ_ENTRY } from "../format/pri.js";
import {
  CR0_CMDQEN,
  CR0_EVTQEN,
  CR0_PRIQEN,
  CR0_SMMUEN,
  CR2_RECINVSID,
  IRQ_CTRL_EVTQ_IRQEN,
  IRQ_CTRL_GERROR_IRQEN,
  IRQ_CTRL_PRIQ_IRQEN,
  qInc,
  SMMU_REG,
} from "../format/registers.js";
import { L1_STD, STE } from "../format/ste.js";
import type { SmmuCacheConfig } from "../hw/smmu-cache-policy.js";
import type { SmmuFeatures } from "../hw/smmu-features.js";
import { type SmmuInterruptSource, SmmuV3 } from "../hw/smmu-v3.js";

const PAGE = 4096;

/** TG0 / S2TG encoding of a granule shift: 4K 0, 64K 1, 16K 2. */
export function tcrTgOfShift(pgShift: number): number {
  return pgShift === 12 ? 0 : pgShift === 16 ? 1 : 2;
}

/** Builds SMMU structures in `mem`, taking zeroed frames from `frames`. */
export class SmmuTableBuilder {
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;

  constructor(mem: PhysMemory, frames: FrameAllocator) {
    this.mem = mem;
    this.frames = frames;
  }

  /** A zeroed block of 2^order frames. */
  frame(order = 0): number {
    const pa = this.frames.alloc(order);
    if (typeof pa !== "number") throw new Error(`table builder: out of frames (${pa})`);
    this.mem.fill(pa, PAGE << order, 0);
    return pa;
  }

  /** Zeroed memory of at least `bytes`, aligned to its size (rounded up to a frame). */
  alloc(bytes: number): number {
    const order = Math.max(0, Math.ceil(Math.log2(bytes / PAGE)));
    return this.frame(order);
  }

  write(layout: Layout, pa: number, values: FieldValues): void {
    storeLayout(this.mem, layout, pa, encode(layout, values));
  }

  read(layout: Layout, pa: number): FieldValues {
    return decode(layout, loadLayout(this.mem, layout, pa));
  }

  // --- Stream tables ----------------------------------------------------------------------------

  /** A linear stream table of 2^log2size STEs (all zero: V = 0). */
  linearStreamTable(log2size: number): StreamTable {
    return { fmt: 0, log2size, split: 0, base: this.alloc(64 * 2 ** log2size) };
  }

  /** A 2-level stream table: the L1 array only; L2 arrays (2^split STEs) come with `steAddr`. */
  twoLevelStreamTable(log2size: number, split = 8): StreamTable {
    const l1 = 2 ** Math.max(0, log2size - split);
    return { fmt: 1, log2size, split, base: this.alloc(Math.max(64, 8 * l1)) };
  }

  /** The STE address of `sid`, creating its level-2 array (Span = split + 1) if needed. */
  steAddr(st: StreamTable, sid: number): number {
    if (st.fmt === 0) return st.base + sid * 64;
    const at = st.base + Math.floor(sid / 2 ** st.split) * 8;
    const l1 = this.read(L1_STD, at);
    let l2 = Number(l1.L2Ptr);
    if (Number(l1.Span) === 0) {
      l2 = this.alloc(64 * 2 ** st.split);
      this.write(L1_STD, at, { Span: st.split + 1, L2Ptr: l2 });
    }
    return l2 + (sid % 2 ** st.split) * 64;
  }

  /** Write the STE of `sid` (V = 1 unless given). Returns its address. */
  setSte(st: StreamTable, sid: number, fields: FieldValues): number {
    const at = this.steAddr(st, sid);
    this.write(STE, at, { V: 1, ...fields });
    return at;
  }

  // --- CD tables ----------------------------------------------------------------------------------

  /**
   * A CD table for S1CDMax = `cdMax`: linear (s1fmt 0) of 2^cdMax CDs, or 2-level (1: 64-CD, 2:
   * 1024-CD leaf tables) whose L1 array is allocated here and leaves by `cdAddr`.
   */
  cdTable(cdMax: number, s1fmt = 0): CdTable {
    if (s1fmt === 0) return { s1fmt, cdMax, ptr: this.alloc(64 * 2 ** cdMax) };
    const leaf = s1fmt === 1 ? 64 : 1024;
    const l1 = Math.max(1, Math.ceil(2 ** cdMax / leaf));
    return { s1fmt, cdMax, ptr: this.alloc(8 * l1) };
  }

  /** The CD address of index `ssid`, creating a 2-level table's leaf if needed. */
  cdAddr(t: CdTable, ssid: number): number {
    if (t.s1fmt === 0) return t.ptr + ssid * 64;
    const leaf = t.s1fmt === 1 ? 64 : 1024;
    const at = t.ptr + Math.floor(ssid / leaf) * 8;
    const l1 = this.read(L1_CD, at);
    let l2 = Number(l1.L2Ptr);
    if (Number(l1.V) === 0) {
      l2 = this.alloc(64 * leaf);
      this.write(L1_CD, at, { V: 1, L2Ptr: l2 });
    }
    return l2 + (ssid % leaf) * 64;
  }

  /** Write CD `ssid` (V, AA64, R, A set unless given). Returns its address. */
  setCd(t: CdTable, ssid: number, fields: FieldValues): number {
    const at = this.cdAddr(t, ssid);
    this.write(CD, at, { V: 1, AA64: 1, R: 1, A: 1, ...fields });
    return at;
  }

  /** CD fields for TTB0 = `pt` (EPD1 set), with `asid` and IPS 48. */
  s1CdFields(pt: LpaeTable, asid: number, extra: FieldValues = {}): FieldValues {
    return {
      T0SZ: 64 - pt.ia,
      TG0: tcrTgOfShift(pt.pgShift),
      IR0: 1,
      OR0: 1,
      SH0: 3,
      EPD1: 1,
      IPS: 5,
      ASID: asid,
      TTB0: pt.rootDesc,
      ...extra,
    };
  }

  /** STE fields for stage 2 through `pt` with `vmid` (S2R set). */
  s2SteFields(pt: LpaeTable, vmid: number, extra: FieldValues = {}): FieldValues {
    const sl0 = (pt.pgShift === 12 ? 2 : 3) - pt.startLevel;
    return {
      S2VMID: vmid,
      S2T0SZ: 64 - pt.ia,
      S2SL0: sl0,
      S2IR0: 1,
      S2OR0: 1,
      S2SH0: 3,
      S2TG: tcrTgOfShift(pt.pgShift),
      S2PS: 5,
      S2AA64: 1,
      S2R: 1,
      S2TTB: pt.rootDesc,
      ...extra,
    };
  }

  /** An LPAE table (see LpaeTable). */
  lpae(stage: 1 | 2, pgShift: number, ia: number, options: LpaeOptions = {}): LpaeTable {
    return new LpaeTable(this, stage, pgShift, ia, options);
  }
}

/** A stream table the builder made. */
export interface StreamTable {
  fmt: number;
  log2size: number;
  split: number;
  base: number;
}

/** A CD table the builder made. */
export interface CdTable {
  s1fmt: number;
  cdMax: number;
  ptr: number;
}

/** Options of an LPAE table. */
export interface LpaeOptions {
  /** Start level (default: what the input size gives; for stage 2 may be one lower, concatenated). */
  startLevel?: number;
  /**
   * Where table addresses are seen by the walker: descriptors and `rootDesc` hold `pa - offset`
   * (a stage 1 table of a nested configuration lives in IPA space).
   */
  ipaOffset?: number;
}

/** Leaf attributes; defaults: valid page/block, AF = 1, stage 1 AP RW+unprivileged nG, stage 2 RW. */
export interface LeafOptions {
  /** Stage 1 AP[2:1] (0 RW priv, 1 RW, 2 RO priv, 3 RO). Default 1. */
  ap?: number;
  /** Stage 2 S2AP (bit 0 read, bit 1 write). Default 3. */
  s2ap?: number;
  af?: boolean;
  ng?: boolean;
  pxn?: boolean;
  uxn?: boolean;
  /** Stage 2 XN[1:0]. */
  xn?: number;
  contiguous?: boolean;
  dbm?: boolean;
  /** Stage 2 MemAttr (default 0xF, normal write-back). */
  memAttr?: number;
  /** Extra raw bits ORed into the high word (e.g. reserved bits). */
  hiBits?: number;
}

/** Table descriptor attributes (stage 1 only). */
export interface TableOptions {
  apTable?: number;
  uxnTable?: boolean;
  pxnTable?: boolean;
}

/**
 * An LPAE (VMSAv8-64) table built descriptor by descriptor: `map` writes one leaf at any level,
 * creating tables on the way. Index arithmetic uses BigInt (test code only).
 */
export class LpaeTable {
  readonly b: SmmuTableBuilder;
  readonly stage: 1 | 2;
  readonly pgShift: number;
  readonly ia: number;
  readonly startLevel: number;
  readonly root: number;
  readonly offset: number;

  constructor(b: SmmuTableBuilder, stage: 1 | 2, pgShift: number, ia: number, o: LpaeOptions) {
    this.b = b;
    this.stage = stage;
    this.pgShift = pgShift;
    this.ia = ia;
    const bpl = pgShift - 3;
    this.startLevel = o.startLevel ?? 4 - Math.ceil((ia - pgShift) / bpl);
    this.offset = o.ipaOffset ?? 0;
    const idxBits = ia - this.levelShift(this.startLevel);
    this.root = b.alloc(Math.max(8 * 2 ** idxBits, 2 ** pgShift));
  }

  /** The root as the STE / CD holds it. */
  get rootDesc(): number {
    return this.root - this.offset;
  }

  levelShift(level: number): number {
    return this.pgShift + (3 - level) * (this.pgShift - 3);
  }

  private index(va: bigint, level: number): number {
    const bits = level === this.startLevel ? this.ia - this.levelShift(level) : this.pgShift - 3;
    return Number((va >> BigInt(this.levelShift(level))) & ((1n << BigInt(bits)) - 1n));
  }

  /** The descriptor address for `va` at `level`, creating tables above it. */
  entryAddr(va: number | bigint, level: number, table: TableOptions = {}): number {
    const v = BigInt(va);
    let t = this.root;
    for (let l = this.startLevel; l < level; l++) {
      const at = t + this.index(v, l) * 8;
      const lo = this.b.mem.read32(at);
      if ((lo & 3) === 3) {
        const d = this.b.read(this.stage === 1 ? LPAE_S1_TABLE_DESC : LPAE_S2_TABLE_DESC, at);
        t = Number(d.NextLevelTable) + this.offset;
        continue;
      }
      const next = this.b.frame(this.pgShift - 12);
      const fields: FieldValues = { Valid: 1, Type: 1, NextLevelTable: next - this.offset };
      if (this.stage === 1) {
        if (table.apTable) fields.APTable = table.apTable;
        if (table.uxnTable) fields.UXNTable = 1;
        if (table.pxnTable) fields.PXNTable = 1;
      }
      this.b.write(this.stage === 1 ? LPAE_S1_TABLE_DESC : LPAE_S2_TABLE_DESC, at, fields);
      t = next;
    }
    return t + this.index(v, level) * 8;
  }

  /** Map `va` (aligned to the level's size) to output `oa` with a leaf at `level` (3 = page). */
  map(
    va: number | bigint,
    oa: number,
    level = 3,
    o: LeafOptions = {},
    table: TableOptions = {},
  ): number {
    const at = this.entryAddr(va, level, table);
    const f: FieldValues = {
      Valid: 1,
      Type: level === 3 ? 1 : 0,
      AF: o.af === false ? 0 : 1,
      SH: 3,
      OA: oa,
    };
    if (o.contiguous) f.Contiguous = 1;
    if (o.dbm) f.DBM = 1;
    let layout: Layout;
    if (this.stage === 1) {
      layout = LPAE_S1_BLOCK_DESC;
      f.AttrIndx = 1;
      f.AP = o.ap ?? 1;
      f.nG = o.ng === false ? 0 : 1;
      if (o.pxn) f.PXN = 1;
      if (o.uxn) f.UXN = 1;
    } else {
      layout = LPAE_S2_BLOCK_DESC;
      f.MemAttr = o.memAttr ?? 0xf;
      f.S2AP = o.s2ap ?? 3;
      if (o.xn) f.XN = o.xn;
    }
    const w = encode(layout, f);
    if (o.hiBits) w[1] = ((w[1] as number) | o.hiBits) >>> 0;
    storeLayout(this.b.mem, layout, at, w);
    return at;
  }

  /** Write a raw descriptor at `va`'s `level` entry. */
  raw(va: number | bigint, level: number, lo: number, hi: number): number {
    const at = this.entryAddr(va, level);
    this.b.mem.write64(at, lo >>> 0, hi >>> 0);
    return at;
  }
}

// --- A machine: memory, an SMMU brought up through its registers, and a driver stand-in ---------

/** A device end that records what the SMMU sends it. */
export class TestPort implements DevicePort {
  readonly rid: number;
  readonly sid: number;
  readonly responses: { pasid: number; prgIndex: number; code: number }[] = [];
  readonly invalidations: { pasid: number; pfn: number; pages: number; global: boolean }[] = [];
  readonly resumes: { stag: number; retry: boolean }[] = [];

  constructor(sid: number) {
    this.rid = sid & 0xffff;
    this.sid = sid;
  }

  prgResponse(pasid: number, prgIndex: number, code: number): void {
    this.responses.push({ pasid, prgIndex, code });
  }

  atsInvalidate(pasid: number, pfn: number, pages: number, global: boolean): void {
    this.invalidations.push({ pasid, pfn, pages, global });
  }

  stallResume(stag: number, retry: boolean): void {
    this.resumes.push({ stag, retry });
  }
}

/** Options of `smmuTestMachine`. */
export interface SmmuTestMachineOptions {
  features?: Partial<SmmuFeatures>;
  cache?: Partial<SmmuCacheConfig>;
  /** Stream table: "linear" (default) or "2lvl". */
  streamTable?: "linear" | "2lvl";
  /** log2 of the StreamIDs the table covers (default 8). */
  log2size?: number;
  /** log2 of the command / event / PRI queue entries (default 6). */
  queueLog2?: number;
  autoProcessQueue?: boolean;
  /** Leave SMMUEN clear after bring-up. */
  noEnable?: boolean;
  /** Extra CR0 bits (ATSCHK). */
  cr0?: number;
  /** CR2 (default RECINVSID). */
  cr2?: number;
}

/** A decoded event record with its raw words. */
export interface SmmuEvent {
  id: number;
  fields: FieldValues;
  words: Uint32Array;
}

/** A machine with one SMMU, memory, a builder and helpers to drive it as Linux's order does. */
export class SmmuTestMachine {
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;
  readonly b: SmmuTableBuilder;
  readonly smmu: SmmuV3;
  readonly st: StreamTable;
  readonly interrupts: SmmuInterruptSource[] = [];
  readonly cmdq: number;
  readonly evtq: number;
  readonly priq: number;
  readonly qlog2: number;
  private cmdProd = 0;
  private evtCons = 0;
  private priCons = 0;

  constructor(o: SmmuTestMachineOptions = {}) {
    this.mem = new PhysMemory({ paBits: 48 });
    this.frames = new FrameAllocator(this.mem, { basePa: 0x100000, size: 2 ** 30 });
    this.b = new SmmuTableBuilder(this.mem, this.frames);
    this.smmu = new SmmuV3({
      mem: this.mem,
      features: o.features,
      cache: o.cache,
      autoProcessQueue: o.autoProcessQueue ?? true,
      onInterrupt: (s) => this.interrupts.push(s),
    });
    const log2size = o.log2size ?? 8;
    this.st =
      o.streamTable === "2lvl"
        ? this.b.twoLevelStreamTable(log2size, 8)
        : this.b.linearStreamTable(log2size);
    const ql = o.queueLog2 ?? 6;
    this.qlog2 = ql;
    this.cmdq = this.b.alloc(16 * 2 ** ql);
    this.evtq = this.b.alloc(32 * 2 ** ql);
    this.priq = this.b.alloc(16 * 2 ** ql);
    const s = this.smmu;
    s.write32(SMMU_REG.CR0, 0);
    s.write32(SMMU_REG.CR1, 0xd75);
    s.write32(SMMU_REG.CR2, o.cr2 ?? CR2_RECINVSID);
    mmioWrite64(s, SMMU_REG.STRTAB_BASE, this.st.base);
    s.write32(SMMU_REG.STRTAB_BASE_CFG, (this.st.fmt << 16) | (this.st.split << 6) | log2size);
    mmioWrite64(s, SMMU_REG.CMDQ_BASE, this.cmdq | ql);
    s.write32(SMMU_REG.CMDQ_PROD, 0);
    s.write32(SMMU_REG.CMDQ_CONS, 0);
    let cr0 = CR0_CMDQEN;
    s.write32(SMMU_REG.CR0, cr0);
    mmioWrite64(s, SMMU_REG.EVENTQ_BASE, this.evtq | ql);
    s.write32(SMMU_REG.EVENTQ_PROD, 0);
    s.write32(SMMU_REG.EVENTQ_CONS, 0);
    cr0 |= CR0_EVTQEN;
    s.write32(SMMU_REG.CR0, cr0);
    if (s.features.pri) {
      mmioWrite64(s, SMMU_REG.PRIQ_BASE, this.priq | ql);
      s.write32(SMMU_REG.PRIQ_PROD, 0);
      s.write32(SMMU_REG.PRIQ_CONS, 0);
      cr0 |= CR0_PRIQEN;
      s.write32(SMMU_REG.CR0, cr0);
    }
    cr0 |= o.cr0 ?? 0;
    s.write32(SMMU_REG.CR0, cr0);
    s.write32(SMMU_REG.IRQ_CTRL, IRQ_CTRL_GERROR_IRQEN | IRQ_CTRL_EVTQ_IRQEN | IRQ_CTRL_PRIQ_IRQEN);
    if (!o.noEnable) s.write32(SMMU_REG.CR0, cr0 | CR0_SMMUEN);
  }

  // --- Commands --

  /** Encode a command by name of layout fields. */
  static command(op: number, values: FieldValues = {}): Uint32Array {
    const layout = cmdLayout(op);
    if (layout === null) throw new Error(`no layout for opcode ${op}`);
    return encode(layout, { Opcode: op, ...values });
  }

  /** Write raw commands at the queue's PROD and publish PROD (one register write). */
  submitRaw(cmds: readonly Uint32Array[]): void {
    for (const c of cmds) {
      const at = this.cmdq + (this.cmdProd & (2 ** this.qlog2 - 1)) * 16;
      this.mem.write64(at, c[0] as number, c[1] as number);
      this.mem.write64(at + 8, c[2] as number, c[3] as number);
      this.cmdProd = qInc(this.cmdProd, this.qlog2);
    }
    this.smmu.write32(SMMU_REG.CMDQ_PROD, this.cmdProd);
  }

  /** Submit commands followed by a CMD_SYNC. */
  submit(...cmds: Uint32Array[]): void {
    this.submitRaw([...cmds, SmmuTestMachine.command(0x46, {})]);
  }

  /** The CMD_SYNC layout (for tests that build MSI syncs). */
  static readonly CMD_SYNC = CMD_SYNC;

  // --- Translation --

  /** Translate one request, returning a fresh result. */
  dma(
    sid: number,
    ssid: number,
    iova: number,
    access = DMA_READ,
    o: { priv?: boolean; at?: number; uncached?: boolean } = {},
  ): TranslationResult {
    const req = newTranslationRequest();
    req.sid = sid;
    req.rid = sid & 0xffff;
    req.pasid = ssid < 0 ? NO_PASID : ssid;
    req.iovaPfn = Math.floor(iova / PAGE);
    req.offset = iova % PAGE;
    req.access = access;
    req.privileged = o.priv ?? false;
    req.at = o.at ?? 0;
    const out = newTranslationResult();
    if (o.uncached) this.smmu.translateUncached(req, out);
    else this.smmu.translate(req, out);
    return out;
  }

  // --- Queues --

  /** Event records written since the last call (CONS advanced past them). */
  events(): SmmuEvent[] {
    const s = this.smmu;
    const out: SmmuEvent[] = [];
    const prod = s.read32(SMMU_REG.EVENTQ_PROD) & 0xfffff;
    while ((this.evtCons & 0xfffff) !== prod) {
      const at = this.evtq + (this.evtCons & (2 ** this.qlog2 - 1)) * EVT_SIZE;
      const words = new Uint32Array(8);
      for (let i = 0; i < 8; i++) words[i] = this.mem.read32(at + 4 * i);
      const id = (words[0] as number) & 0xff;
      out.push({ id, fields: decode(eventLayout(id), words), words });
      this.evtCons = qInc(this.evtCons, this.qlog2);
    }
    const ov = s.read32(SMMU_REG.EVENTQ_PROD) & 0x80000000;
    s.write32(SMMU_REG.EVENTQ_CONS, (this.evtCons | ov) >>> 0);
    return out;
  }

  /** PRI queue entries written since the last call (CONS advanced; OVFLG acknowledged if `ack`). */
  priEntries(ack = true): FieldValues[] {
    const s = this.smmu;
    const out: FieldValues[] = [];
    const prodReg = s.read32(SMMU_REG.PRIQ_PROD);
    const prod = prodReg & 0xfffff;
    while ((this.priCons & 0xfffff) !== prod) {
      const at = this.priq + (this.priCons & (2 ** this.qlog2 - 1)) * 16;
      out.push(decode(PRIQ_ENTRY, loadLayout(this.mem, PRIQ_ENTRY, at)));
      this.priCons = qInc(this.priCons, this.qlog2);
    }
    const ov = ack ? prodReg & 0x80000000 : s.read32(SMMU_REG.PRIQ_CONS) & 0x80000000;
    s.write32(SMMU_REG.PRIQ_CONS, (this.priCons | ov) >>> 0);
    return out;
  }

  /** Connect a recording device port for `sid`. */
  port(sid: number): TestPort {
    const p = new TestPort(sid);
    this.smmu.connect(p);
    return p;
  }
}

/** A machine brought up through registers (see SmmuTestMachine). */
export function smmuTestMachine(o: SmmuTestMachineOptions = {}): SmmuTestMachine {
  return new SmmuTestMachine(o);
}
