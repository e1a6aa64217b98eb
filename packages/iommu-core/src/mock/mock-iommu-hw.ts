// The hardware half of the mock IOMMU: registers, a device/PASID table walk and a page-table walk
// from memory, a small IOTLB that only its own invalidations empty, a fault queue and a page
// request queue.

import {
  AT_TRANSLATED,
  AT_TRANSLATION_REQUEST,
  type DevicePort,
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  FaultKind,
  type IommuHardware,
  NO_PASID,
  type PageRequest,
  PRG_RESPONSE_FAILURE,
  type TranslationRequest,
  type TranslationResult,
  XLATE_FAULT,
  XLATE_OK,
} from "../device/iommu-hardware.js";
import type { Mmio } from "../platform/mmio.js";
import type { PhysMemory } from "../platform/phys-memory.js";
import type { Trace } from "../platform/trace.js";
import {
  MOCK_CAP_ATS,
  MOCK_CAP_PRI,
  MOCK_CTRL_EN,
  MOCK_CTRL_FQ_EN,
  MOCK_CTRL_PRQ_EN,
  MOCK_DTE_PASID_EN,
  MOCK_DTE_PTS_MASK,
  MOCK_DTE_SIZE,
  MOCK_ENTRY_ATS,
  MOCK_ENTRY_LVL_MASK,
  MOCK_ENTRY_LVL_SHIFT,
  MOCK_ENTRY_MODE_MASK,
  MOCK_ENTRY_MODE_SHIFT,
  MOCK_ENTRY_V,
  MOCK_FQ_RECORD_SIZE,
  MOCK_INV_ALL,
  MOCK_INV_ATS,
  MOCK_INV_DOMAIN,
  MOCK_INV_PASID,
  MOCK_INV_RANGE,
  MOCK_MODE_BLOCKED,
  MOCK_MODE_IDENTITY,
  MOCK_MODE_TRANSLATE,
  MOCK_PASID_ENTRY_SIZE,
  MOCK_PRQ_RECORD_SIZE,
  MOCK_REG,
  MOCK_STATUS_EN,
  MOCK_STATUS_FQ_OVF,
  MOCK_STATUS_PRQ_OVF,
  MockFault,
  mockEntryAddr,
  mockPasidFromReg,
} from "./mock-format.js";
import {
  MOCK_PTE_BAD,
  MOCK_PTE_LEAF,
  MOCK_PTE_NONE,
  MOCK_PTE_NX,
  MOCK_PTE_PRIV,
  MOCK_PTE_R,
  MOCK_PTE_W,
  mockPteAddr,
  mockPteDecode,
} from "./mock-pgtable.js";

const TWO32 = 4294967296;
const PAGE = 4096;
/** 4 KiB pages one entry at `level` spans: 512^(level - 1), up to level 6 (a whole 5-level space). */
const PAGES_BELOW_LEVEL = [0, 1, 512, 512 ** 2, 512 ** 3, 512 ** 4, 512 ** 5];

export interface MockIommuHwOptions {
  name?: string;
  mem: PhysMemory;
  /** PASID width supported (0: none; at most 20). */
  pasidBits?: number;
  ats?: boolean;
  pri?: boolean;
  /** IOTLB entries (fully associative, LRU). Tests use tiny ones. */
  iotlbEntries?: number;
  /** Where faults and invalidations are reported as `fault` and `flush` events. */
  trace?: Trace | null;
}

/** Counters of the mock hardware. */
export interface MockIommuHwStats {
  translations: number;
  iotlbHits: number;
  iotlbMisses: number;
  iotlbInserts: number;
  iotlbEvictions: number;
  invalidations: number;
  faults: number;
  faultsDropped: number;
  pageRequests: number;
  pageRequestsDropped: number;
  responses: number;
}

/** What the walk of the tables gave, kept in scratch fields (no allocation per request). */
const W_OK = 0;

/**
 * The mock IOMMU hardware. Devices reach it through `IommuHardware`; its driver only through
 * `mmio` and memory.
 */
export class MockIommuHw implements IommuHardware, Mmio {
  readonly name: string;
  readonly mem: PhysMemory;
  readonly pasidBits: number;
  readonly ats: boolean;
  readonly pri: boolean;
  readonly stats: MockIommuHwStats = {
    translations: 0,
    iotlbHits: 0,
    iotlbMisses: 0,
    iotlbInserts: 0,
    iotlbEvictions: 0,
    invalidations: 0,
    faults: 0,
    faultsDropped: 0,
    pageRequests: 0,
    pageRequestsDropped: 0,
    responses: 0,
  };

  /** Where faults and invalidations are reported (null: nowhere, at no cost). */
  trace: Trace | null;
  private readonly ports = new Map<number, DevicePort>();
  private readonly regs = new Uint32Array(0x100 / 4);

  // IOTLB: parallel arrays, one slot per entry.
  readonly iotlbSize: number;
  private readonly tValid: Uint8Array;
  private readonly tDid: Int32Array;
  private readonly tPasid: Int32Array;
  /** Page number of the first 4 KiB page the entry covers. */
  private readonly tVpn: Float64Array;
  /** log2 of the entry's page size. */
  private readonly tShift: Uint8Array;
  /** 4 KiB pages the entry covers (2^(shift - 12)), kept so lookups never compute a power. */
  private readonly tPages: Float64Array;
  private readonly tPa: Float64Array;
  /** DMA_READ | DMA_WRITE | DMA_EXEC granted, plus 8 when only privileged requests may use it. */
  private readonly tPerm: Uint8Array;
  private readonly tStamp: Uint32Array;
  private stamp = 0;

  // Scratch results of the last walk.
  private wPa = 0;
  private wPerm = 0;
  private wShift = 12;
  private wCode = 0;

  constructor(options: MockIommuHwOptions) {
    this.name = options.name ?? "mock0";
    this.trace = options.trace ?? null;
    this.mem = options.mem;
    this.pasidBits = Math.max(0, Math.min(20, options.pasidBits ?? 20));
    this.ats = options.ats ?? true;
    this.pri = options.pri ?? true;
    const n = Math.max(1, options.iotlbEntries ?? 64);
    this.iotlbSize = n;
    this.tValid = new Uint8Array(n);
    this.tDid = new Int32Array(n);
    this.tPasid = new Int32Array(n);
    this.tVpn = new Float64Array(n);
    this.tShift = new Uint8Array(n);
    this.tPages = new Float64Array(n);
    this.tPa = new Float64Array(n);
    this.tPerm = new Uint8Array(n);
    this.tStamp = new Uint32Array(n);
    this.regs[MOCK_REG.CAP / 4] =
      this.pasidBits | (this.ats ? MOCK_CAP_ATS : 0) | (this.pri ? MOCK_CAP_PRI : 0) | (n << 16);
  }

  // --- Registers -------------------------------------------------------------------------------

  read32(offset: number): number {
    if (offset < 0 || offset >= 0x100 || (offset & 3) !== 0) return 0;
    return this.regs[offset >>> 2];
  }

  write32(offset: number, value: number): void {
    if (offset < 0 || offset >= 0x100 || (offset & 3) !== 0) return;
    const v = value >>> 0;
    switch (offset) {
      case MOCK_REG.CAP:
      case MOCK_REG.STATUS:
      case MOCK_REG.FQ_TAIL:
      case MOCK_REG.PRQ_TAIL:
        return; // read-only
      case MOCK_REG.CTRL:
        this.regs[offset >>> 2] = v & (MOCK_CTRL_EN | MOCK_CTRL_FQ_EN | MOCK_CTRL_PRQ_EN);
        this.setStatus(MOCK_STATUS_EN, (v & MOCK_CTRL_EN) !== 0);
        return;
      case MOCK_REG.STATUS_CLR:
        this.regs[MOCK_REG.STATUS / 4] &= ~(v & (MOCK_STATUS_FQ_OVF | MOCK_STATUS_PRQ_OVF));
        return;
      case MOCK_REG.INV_CMD:
        this.invalidate(v);
        return;
      case MOCK_REG.RESP_CODE:
        this.sendResponse(v);
        return;
      default:
        this.regs[offset >>> 2] = v;
    }
  }

  private reg(offset: number): number {
    return this.regs[offset >>> 2];
  }

  private reg64(offset: number): number {
    return this.regs[(offset + 4) >>> 2] * TWO32 + this.regs[offset >>> 2];
  }

  private setStatus(bit: number, on: boolean): void {
    if (on) this.regs[MOCK_REG.STATUS / 4] |= bit;
    else this.regs[MOCK_REG.STATUS / 4] &= ~bit;
  }

  // --- Devices ---------------------------------------------------------------------------------

  connect(port: DevicePort): void {
    this.ports.set(port.rid, port);
  }

  disconnect(port: DevicePort): void {
    if (this.ports.get(port.rid) === port) this.ports.delete(port.rid);
  }

  // --- Translation -----------------------------------------------------------------------------

  translate(req: TranslationRequest, out: TranslationResult): void {
    this.stats.translations++;
    this.lookupInto(req, out, true);
  }

  /**
   * The one translation procedure, cached (the hardware's) or not (an oracle's fresh walk): only
   * the cached one touches the IOTLB and reports faults to the fault queue.
   */
  private lookupInto(req: TranslationRequest, out: TranslationResult, cached: boolean): void {
    out.stallTag = 0;
    out.code = 0;
    out.fault = FaultKind.NONE;
    out.sizeShift = 12;
    if ((this.reg(MOCK_REG.CTRL) & MOCK_CTRL_EN) === 0) {
      out.status = XLATE_OK;
      out.pa = req.iovaPfn * PAGE + req.offset;
      out.perm = DMA_READ | DMA_WRITE | DMA_EXEC;
      return;
    }
    const busError = this.mem.busError;
    const kind = this.resolve(req, cached);
    if (!cached) this.mem.busError = busError;
    let faultKind = kind;
    let code = this.wCode;
    // An ATS completion carries whatever the tables grant, possibly nothing (then the device may
    // PRI); the address is the requested page's, inside a leaf that may be larger (sizeShift).
    if (kind === W_OK && req.at !== AT_TRANSLATION_REQUEST && !this.permits(req, this.wPerm)) {
      faultKind = FaultKind.PERMISSION;
      code = MockFault.PERMISSION;
    }
    if (faultKind !== W_OK) {
      if (cached) {
        this.fail(req, out, faultKind, code);
      } else {
        out.status = XLATE_FAULT;
        out.fault = faultKind;
        out.code = code;
        out.pa = 0;
        out.perm = 0;
      }
      return;
    }
    out.status = XLATE_OK;
    out.pa = this.wPa + (req.iovaPfn * PAGE - this.wVpnBaseValue) + req.offset;
    out.perm = this.wPerm & 7;
    out.sizeShift = this.wShift;
  }

  /** The page-aligned IOVA the last resolution's `wPa` corresponds to. */
  private wVpnBaseValue = 0;

  private permits(req: TranslationRequest, perm: number): boolean {
    if ((perm & 8) !== 0 && !req.privileged) return false;
    if ((req.access & DMA_WRITE) !== 0 && (perm & DMA_WRITE) === 0) return false;
    if ((req.access & DMA_READ) !== 0 && (perm & DMA_READ) === 0) return false;
    if ((req.access & DMA_EXEC) !== 0 && (perm & DMA_EXEC) === 0) return false;
    return true;
  }

  /**
   * Find the translation of `req` in the IOTLB or the tables: leaves wPa (base of the page),
   * wVpnBaseValue (its IOVA), wPerm, wShift; returns W_OK or a FaultKind with wCode set. A
   * translation request for an unmapped page is not a fault: it resolves with no permission.
   */
  private resolve(req: TranslationRequest, useCache: boolean): number {
    const mem = this.mem;
    const dt = this.reg64(MOCK_REG.DT_BASE_LO);
    const dteAddr = dt + req.rid * MOCK_DTE_SIZE;
    mem.busError = false;
    const d0 = mem.read64(dteAddr);
    const d0hi = mem.hi;
    const d1 = mem.read64(dteAddr + 8);
    const d1hi = mem.hi;
    if (mem.busError) return this.walkFault(FaultKind.WALK_ABORT, MockFault.WALK_ABORT);
    if ((d0 & MOCK_ENTRY_V) === 0)
      return this.walkFault(FaultKind.BAD_CONFIG, MockFault.DTE_INVALID);
    // The DTE's ATS bit means nothing on hardware that does not advertise ATS in CAP.
    const dteAts = this.ats && (d0 & MOCK_ENTRY_ATS) !== 0;
    if (req.at !== 0 && !dteAts)
      return this.walkFault(FaultKind.ATS_FORBIDDEN, MockFault.ATS_FORBIDDEN);
    if (req.at === AT_TRANSLATED) {
      this.wPa = req.iovaPfn * PAGE;
      this.wVpnBaseValue = this.wPa;
      this.wPerm = DMA_READ | DMA_WRITE | DMA_EXEC;
      this.wShift = 12;
      return W_OK;
    }
    let e0 = d0;
    let e0hi = d0hi;
    let did = d1 & 0xffff;
    let pasid = NO_PASID;
    if (req.pasid !== NO_PASID) {
      if ((d1 & MOCK_DTE_PASID_EN) === 0 || this.pasidBits === 0) {
        return this.walkFault(FaultKind.BAD_REQUESTER, MockFault.PASID_DISABLED);
      }
      const pts = d1hi & MOCK_DTE_PTS_MASK;
      // PASIDs have at most 20 bits, so a table of 2^20 or more entries never limits them.
      const beyondTable = pts < 20 && req.pasid >= 1 << pts;
      if (beyondTable || req.pasid >= 1 << this.pasidBits || req.pasid === 0) {
        return this.walkFault(FaultKind.BAD_REQUESTER, MockFault.PASID_TOO_BIG);
      }
      const ptLo = mem.read64(dteAddr + 16);
      const pt = mockEntryAddr(ptLo, mem.hi);
      const pe = pt + req.pasid * MOCK_PASID_ENTRY_SIZE;
      e0 = mem.read64(pe);
      e0hi = mem.hi;
      did = mem.read64(pe + 8) & 0xffff;
      if (mem.busError) return this.walkFault(FaultKind.WALK_ABORT, MockFault.WALK_ABORT);
      if ((e0 & MOCK_ENTRY_V) === 0) {
        return this.walkFault(FaultKind.BAD_CONFIG, MockFault.PASID_ENTRY_INVALID);
      }
      pasid = req.pasid;
    }
    const mode = (e0 & MOCK_ENTRY_MODE_MASK) >>> MOCK_ENTRY_MODE_SHIFT;
    if (mode === MOCK_MODE_BLOCKED) return this.walkFault(FaultKind.BLOCKED, MockFault.BLOCKED);
    if (mode === MOCK_MODE_IDENTITY) {
      this.wPa = req.iovaPfn * PAGE;
      this.wVpnBaseValue = this.wPa;
      this.wPerm = DMA_READ | DMA_WRITE | DMA_EXEC;
      this.wShift = 12;
      return W_OK;
    }
    if (mode !== MOCK_MODE_TRANSLATE)
      return this.walkFault(FaultKind.BAD_CONFIG, MockFault.BAD_ENTRY);
    // LVL 3 (six levels) is a reserved encoding.
    const levels = ((e0 & MOCK_ENTRY_LVL_MASK) >>> MOCK_ENTRY_LVL_SHIFT) + 3;
    if (levels > 5) return this.walkFault(FaultKind.BAD_CONFIG, MockFault.BAD_ENTRY);
    if (useCache && this.lookup(did, pasid, req.iovaPfn)) {
      this.stats.iotlbHits++;
      return W_OK;
    }
    const root = mockEntryAddr(e0, e0hi);
    const k = this.walk(root, levels, req.iovaPfn, req.at === AT_TRANSLATION_REQUEST);
    if (k !== W_OK) return k;
    if (useCache) {
      this.stats.iotlbMisses++;
      if (this.wPerm !== 0) this.insert(did, pasid);
    }
    return W_OK;
  }

  private walkFault(kind: number, code: number): number {
    this.wCode = code;
    return kind;
  }

  /** Walk the mock table from `root`. */
  private walk(root: number, levels: number, iovaPfn: number, atsRequest: boolean): number {
    const mem = this.mem;
    if (iovaPfn >= PAGES_BELOW_LEVEL[levels + 1]) {
      return this.walkFault(FaultKind.ADDRESS_SIZE, MockFault.ADDRESS_SIZE);
    }
    let table = root;
    for (let level = levels; level >= 1; level--) {
      const index = Math.floor(iovaPfn / PAGES_BELOW_LEVEL[level]) % 512;
      const at = table + index * 8;
      // A direct read while no fault hook is installed (see `PhysMemory.wordsOf`); otherwise
      // through read64, so that a bus error the hook injects aborts the walk.
      const w = mem.wordsOf(at);
      let lo: number;
      let hi: number;
      if (w !== undefined) {
        const i = mem.wordIndex(at);
        lo = w[i];
        hi = w[i + 1];
      } else {
        lo = mem.read64(at);
        hi = mem.hi;
        if (mem.busError) return this.walkFault(FaultKind.WALK_ABORT, MockFault.WALK_ABORT);
      }
      const kind = mockPteDecode(lo, hi, level);
      if (kind === MOCK_PTE_NONE) {
        if (atsRequest) {
          this.wPerm = 0;
          this.wPa = 0;
          this.wShift = 12;
          this.wVpnBaseValue = iovaPfn * PAGE;
          return W_OK;
        }
        return this.walkFault(FaultKind.TRANSLATION, MockFault.NOT_PRESENT);
      }
      if (kind === MOCK_PTE_BAD)
        return this.walkFault(FaultKind.BAD_CONFIG, MockFault.RESERVED_BIT);
      if (kind === MOCK_PTE_LEAF) {
        const shift = 12 + 9 * (level - 1);
        const pagesPer = PAGES_BELOW_LEVEL[level];
        const basePfn = iovaPfn - (iovaPfn % pagesPer);
        this.wShift = shift;
        this.wPa = mockPteAddr(lo, hi);
        this.wVpnBaseValue = basePfn * PAGE;
        this.wPerm =
          ((lo & MOCK_PTE_R) !== 0 ? DMA_READ : 0) |
          ((lo & MOCK_PTE_W) !== 0 ? DMA_WRITE : 0) |
          ((lo & MOCK_PTE_NX) === 0 && (lo & MOCK_PTE_R) !== 0 ? DMA_EXEC : 0) |
          ((lo & MOCK_PTE_PRIV) !== 0 ? 8 : 0);
        return W_OK;
      }
      table = mockPteAddr(lo, hi);
    }
    return this.walkFault(FaultKind.BAD_CONFIG, MockFault.BAD_ENTRY);
  }

  private lookup(did: number, pasid: number, iovaPfn: number): boolean {
    const n = this.iotlbSize;
    for (let i = 0; i < n; i++) {
      if (this.tValid[i] === 0 || this.tDid[i] !== did || this.tPasid[i] !== pasid) continue;
      const pages = this.tPages[i];
      const vpn = this.tVpn[i];
      if (iovaPfn < vpn || iovaPfn >= vpn + pages) continue;
      this.tStamp[i] = ++this.stamp;
      this.wPa = this.tPa[i];
      this.wVpnBaseValue = vpn * PAGE;
      this.wPerm = this.tPerm[i];
      this.wShift = this.tShift[i];
      return true;
    }
    return false;
  }

  private insert(did: number, pasid: number): void {
    const n = this.iotlbSize;
    let victim = -1;
    for (let i = 0; i < n; i++) {
      if (this.tValid[i] === 0) {
        victim = i;
        break;
      }
      if (victim < 0 || this.tStamp[i] < this.tStamp[victim]) victim = i;
    }
    if (this.tValid[victim] !== 0) this.stats.iotlbEvictions++;
    this.tValid[victim] = 1;
    this.tDid[victim] = did;
    this.tPasid[victim] = pasid;
    this.tVpn[victim] = this.wVpnBaseValue / PAGE;
    this.tShift[victim] = this.wShift;
    this.tPages[victim] = 2 ** (this.wShift - 12);
    this.tPa[victim] = this.wPa;
    this.tPerm[victim] = this.wPerm;
    this.tStamp[victim] = ++this.stamp;
    this.stats.iotlbInserts++;
  }

  /** Report a fault: the result says so, and a record goes to the fault queue if it is enabled. */
  private fail(req: TranslationRequest, out: TranslationResult, kind: number, code: number): void {
    out.status = XLATE_FAULT;
    out.fault = kind;
    out.code = code;
    out.pa = 0;
    out.perm = 0;
    this.stats.faults++;
    const trace = this.trace;
    if (trace?.active) {
      trace.emit("fault", {
        iommu: this.name,
        rid: req.rid,
        pasid: req.pasid,
        iova: req.iovaPfn * PAGE + req.offset,
        kind,
        code,
      });
    }
    if ((this.reg(MOCK_REG.CTRL) & MOCK_CTRL_FQ_EN) === 0) return;
    const size = 2 ** (this.reg(MOCK_REG.FQ_SIZE) & 0x1f);
    const head = this.reg(MOCK_REG.FQ_HEAD);
    const tail = this.reg(MOCK_REG.FQ_TAIL);
    if ((tail + 1) % size === head % size) {
      this.setStatus(MOCK_STATUS_FQ_OVF, true);
      this.stats.faultsDropped++;
      return;
    }
    const at = this.reg64(MOCK_REG.FQ_BASE_LO) + (tail % size) * MOCK_FQ_RECORD_SIZE;
    const pasidValid = req.pasid !== NO_PASID ? 1 << 16 : 0;
    const w0 =
      (code & 0xff) |
      ((kind & 0xff) << 8) |
      pasidValid |
      ((req.access & DMA_WRITE) !== 0 ? 1 << 17 : 0) |
      ((req.access & DMA_EXEC) !== 0 ? 1 << 18 : 0) |
      (req.privileged ? 1 << 19 : 0);
    this.mem.write64(at, w0 >>> 0, req.rid & 0xffff);
    const addr = req.iovaPfn * PAGE;
    this.mem.write64(at + 8, addr % TWO32, Math.floor(addr / TWO32));
    this.mem.write64(at + 16, req.pasid === NO_PASID ? 0 : req.pasid, 0);
    this.regs[MOCK_REG.FQ_TAIL / 4] = (tail + 1) % size;
  }

  /**
   * Translate without touching the IOTLB, the counters or the fault queue: what a fresh walk of
   * the tables in memory gives right now (the oracle compares it with what the hardware did).
   */
  translateUncached(req: TranslationRequest, out: TranslationResult): void {
    this.lookupInto(req, out, false);
  }

  /** The IOTLB entries (valid ones), for reports and tests. */
  iotlbEntries(): Array<{
    did: number;
    pasid: number;
    iova: number;
    size: number;
    pa: number;
    perm: number;
  }> {
    const out = [];
    for (let i = 0; i < this.iotlbSize; i++) {
      if (this.tValid[i] === 0) continue;
      out.push({
        did: this.tDid[i],
        pasid: this.tPasid[i],
        iova: this.tVpn[i] * PAGE,
        size: 2 ** this.tShift[i],
        pa: this.tPa[i],
        perm: this.tPerm[i],
      });
    }
    return out;
  }

  /** Whether the IOTLB holds an entry of (did, pasid) covering page `iovaPfn`. */
  iotlbHas(did: number, pasid: number, iovaPfn: number): boolean {
    for (let i = 0; i < this.iotlbSize; i++) {
      if (this.tValid[i] === 0 || this.tDid[i] !== did || this.tPasid[i] !== pasid) continue;
      const vpn = this.tVpn[i];
      if (iovaPfn >= vpn && iovaPfn < vpn + this.tPages[i]) return true;
    }
    return false;
  }

  // --- Invalidation ----------------------------------------------------------------------------

  private invalidate(cmd: number): void {
    this.stats.invalidations++;
    if (this.trace?.active) this.traceFlush(cmd);
    const did = this.reg(MOCK_REG.INV_DID) & 0xffff;
    const p = this.reg(MOCK_REG.INV_PASID);
    const pasid = mockPasidFromReg(p);
    const addr = this.reg64(MOCK_REG.INV_ADDR_LO);
    const pages = this.reg(MOCK_REG.INV_PAGES);
    switch (cmd) {
      case MOCK_INV_ALL:
        this.tValid.fill(0);
        return;
      case MOCK_INV_DOMAIN:
        for (let i = 0; i < this.iotlbSize; i++) if (this.tDid[i] === did) this.tValid[i] = 0;
        return;
      case MOCK_INV_PASID:
        for (let i = 0; i < this.iotlbSize; i++) {
          if (this.tDid[i] === did && this.tPasid[i] === pasid) this.tValid[i] = 0;
        }
        return;
      case MOCK_INV_RANGE: {
        const first = Math.floor(addr / PAGE);
        const end = pages === 0 ? Number.POSITIVE_INFINITY : first + pages;
        for (let i = 0; i < this.iotlbSize; i++) {
          if (this.tValid[i] === 0 || this.tDid[i] !== did || this.tPasid[i] !== pasid) continue;
          const vpn = this.tVpn[i];
          if (vpn < end && vpn + this.tPages[i] > first) this.tValid[i] = 0;
        }
        return;
      }
      case MOCK_INV_ATS: {
        const port = this.ports.get(this.reg(MOCK_REG.INV_RID) & 0xffff);
        port?.atsInvalidate(pasid, Math.floor(addr / PAGE), pages, false);
        return;
      }
      default:
        return; // unknown commands are ignored, as reserved encodings
    }
  }

  private traceFlush(cmd: number): void {
    const scope = ["?", "all", "domain", "pasid", "range", "ats"][cmd] ?? `cmd ${cmd}`;
    const p = this.reg(MOCK_REG.INV_PASID);
    const named = mockPasidFromReg(p);
    const pasid = named < 0 ? "none" : `${named}`;
    const addr = this.reg64(MOCK_REG.INV_ADDR_LO);
    const detail =
      cmd === MOCK_INV_ATS
        ? `rid=0x${this.reg(MOCK_REG.INV_RID).toString(16)} pasid=${pasid}`
        : `did=${this.reg(MOCK_REG.INV_DID) & 0xffff} pasid=${pasid}`;
    const range = cmd === MOCK_INV_RANGE || cmd === MOCK_INV_ATS;
    const pages = this.reg(MOCK_REG.INV_PAGES);
    (this.trace as Trace).emit("flush", {
      iommu: this.name,
      scope,
      detail:
        range && pages !== 0 ? `${detail} addr=0x${addr.toString(16)} pages=${pages}` : detail,
    });
  }

  // --- Page requests ---------------------------------------------------------------------------

  pageRequest(req: PageRequest): void {
    this.stats.pageRequests++;
    const ctrl = this.reg(MOCK_REG.CTRL);
    const size = 2 ** (this.reg(MOCK_REG.PRQ_SIZE) & 0x1f);
    const head = this.reg(MOCK_REG.PRQ_HEAD);
    const tail = this.reg(MOCK_REG.PRQ_TAIL);
    if ((ctrl & MOCK_CTRL_PRQ_EN) === 0 || (tail + 1) % size === head % size) {
      // Nowhere to queue it: the group fails now, so the device is never left waiting.
      if ((ctrl & MOCK_CTRL_PRQ_EN) !== 0) this.setStatus(MOCK_STATUS_PRQ_OVF, true);
      this.stats.pageRequestsDropped++;
      if (req.last)
        this.ports.get(req.rid)?.prgResponse(req.pasid, req.prgIndex, PRG_RESPONSE_FAILURE);
      return;
    }
    const at = this.reg64(MOCK_REG.PRQ_BASE_LO) + (tail % size) * MOCK_PRQ_RECORD_SIZE;
    const w0 =
      (req.rid & 0xffff) |
      (req.pasid !== NO_PASID ? 1 << 16 : 0) |
      (req.last ? 1 << 17 : 0) |
      ((req.access & 7) << 18) |
      (req.privileged ? 1 << 21 : 0);
    this.mem.write64(at, w0 >>> 0, req.prgIndex & 0x1ff);
    const addr = req.iovaPfn * PAGE;
    this.mem.write64(at + 8, addr % TWO32, Math.floor(addr / TWO32));
    this.mem.write64(at + 16, req.pasid === NO_PASID ? 0 : req.pasid, 0);
    this.regs[MOCK_REG.PRQ_TAIL / 4] = (tail + 1) % size;
  }

  private sendResponse(code: number): void {
    const rid = this.reg(MOCK_REG.RESP_RID) & 0xffff;
    const p = this.reg(MOCK_REG.RESP_PASID);
    const pasid = mockPasidFromReg(p);
    const prgi = this.reg(MOCK_REG.RESP_PRGI) & 0x1ff;
    this.stats.responses++;
    this.ports.get(rid)?.prgResponse(pasid, prgi, code & 0xf);
  }
}

/** Mode values, re-exported for the decoder. */
export { MOCK_MODE_BLOCKED, MOCK_MODE_IDENTITY, MOCK_MODE_TRANSLATE };
