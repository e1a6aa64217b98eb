// Tests of the mock IOMMU hardware alone, driven through its registers and tables built in memory.

import { beforeEach, describe, expect, test } from "vitest";
import { DmaBus } from "../device/bus.js";
import { Device, DMA_FAULT, DMA_OK, DMA_PAGE_REQUESTED, DmaReason } from "../device/device.js";
import {
  AT_TRANSLATED,
  AT_TRANSLATION_REQUEST,
  AT_UNTRANSLATED,
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  FaultKind,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  PRG_SUCCESS,
  type TranslationResult,
  XLATE_FAULT,
  XLATE_OK,
} from "../device/iommu-hardware.js";
import { IOMMU_NOEXEC, IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE } from "../iommu/io-pgtable.js";
import { FrameAllocator } from "../platform/frame-allocator.js";
import { mmioWrite64 } from "../platform/mmio.js";
import { PhysMemory } from "../platform/phys-memory.js";
import {
  MOCK_CAP_ATS,
  MOCK_CAP_PRI,
  MOCK_CTRL_EN,
  MOCK_CTRL_FQ_EN,
  MOCK_CTRL_PRQ_EN,
  MOCK_DTE_PASID_EN,
  MOCK_DTE_SIZE,
  MOCK_ENTRY_LVL_SHIFT,
  MOCK_FQ_RECORD_SIZE,
  MOCK_INV_ALL,
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
  mockEntryHi,
  mockEntryLo,
} from "./mock-format.js";
import { MockIommuHw, type MockIommuHwOptions } from "./mock-iommu-hw.js";
import {
  MOCK_PTE_LEAF,
  MockPgtable,
  mockLevelIndex,
  mockPteAddr,
  mockPteDecode,
} from "./mock-pgtable.js";

const SZ_4K = 0x1000;
const SZ_2M = 0x20_0000;
const TWO32 = 4294967296;
const RW = IOMMU_READ | IOMMU_WRITE;
/** The PRIV flag the hardware keeps next to DMA_READ/WRITE/EXEC in an IOTLB entry. */
const PERM_PRIV = 8;

/** A bare mock IOMMU on its own memory, with a device table and a frame pool for tables. */
class Rig {
  readonly mem = new PhysMemory({ paBits: 48 });
  readonly frames = new FrameAllocator(this.mem, { basePa: 16 * 2 ** 20, size: 64 * 2 ** 20 });
  readonly hw: MockIommuHw;
  readonly dt: number;
  readonly req = newTranslationRequest();
  readonly out = newTranslationResult();

  constructor(options: Partial<MockIommuHwOptions> = {}) {
    this.hw = new MockIommuHw({ mem: this.mem, iotlbEntries: 8, ...options });
    this.dt = this.frames.alloc(9) as number;
    mmioWrite64(this.hw, MOCK_REG.DT_BASE_LO, this.dt);
    this.hw.write32(MOCK_REG.CTRL, MOCK_CTRL_EN);
  }

  /** A 4-level mock table with no flush callbacks: the tests invalidate by hand. */
  table(levels: 3 | 4 | 5 = 4): MockPgtable {
    return new MockPgtable({ mem: this.mem, frames: this.frames, levels, tlb: null });
  }

  /** Write the DTE of `rid`, qword 2 and 1 first and qword 0 (V, MODE) last. */
  dte(
    rid: number,
    o: {
      mode: number;
      pt?: MockPgtable;
      did?: number;
      ats?: boolean;
      pasidTable?: number;
      pts?: number;
      pasidEn?: boolean;
    },
  ): void {
    const at = this.dt + rid * MOCK_DTE_SIZE;
    const pasidTable = o.pasidTable ?? 0;
    this.mem.write64(at + 16, pasidTable % TWO32, Math.floor(pasidTable / TWO32));
    this.mem.write64(
      at + 8,
      ((o.did ?? 0) | (o.pasidEn ? MOCK_DTE_PASID_EN : 0)) >>> 0,
      o.pts ?? 0,
    );
    const root = o.pt?.rootPa ?? 0;
    const levels = o.pt?.levels ?? 4;
    this.mem.write64(
      at,
      mockEntryLo(o.mode, levels, root, o.ats ?? false),
      mockEntryHi(o.mode, root),
    );
  }

  /** Write PASID entry `pasid` of the table at `table`. */
  pasidEntry(
    table: number,
    pasid: number,
    o: { mode: number; pt?: MockPgtable; did?: number },
  ): void {
    const at = table + pasid * MOCK_PASID_ENTRY_SIZE;
    const root = o.pt?.rootPa ?? 0;
    this.mem.write64(at + 8, o.did ?? 0, 0);
    this.mem.write64(
      at,
      mockEntryLo(o.mode, o.pt?.levels ?? 4, root, false),
      mockEntryHi(o.mode, root),
    );
  }

  /** Translate one request; the result object is reused. */
  xlate(
    rid: number,
    iova: number,
    o: {
      access?: number;
      pasid?: number;
      at?: number;
      privileged?: boolean;
      uncached?: boolean;
    } = {},
  ): TranslationResult {
    const req = this.req;
    req.rid = rid;
    req.sid = rid;
    req.pasid = o.pasid ?? NO_PASID;
    req.iovaPfn = Math.floor(iova / SZ_4K);
    req.offset = iova % SZ_4K;
    req.access = o.access ?? DMA_READ;
    req.privileged = o.privileged ?? false;
    req.at = o.at ?? AT_UNTRANSLATED;
    if (o.uncached) this.hw.translateUncached(req, this.out);
    else this.hw.translate(req, this.out);
    return this.out;
  }

  /** Turn on the fault queue with 2^order records. */
  faultQueue(order: number): number {
    const fq = this.frames.alloc(1) as number;
    mmioWrite64(this.hw, MOCK_REG.FQ_BASE_LO, fq);
    this.hw.write32(MOCK_REG.FQ_SIZE, order);
    this.hw.write32(MOCK_REG.CTRL, this.hw.read32(MOCK_REG.CTRL) | MOCK_CTRL_FQ_EN);
    return fq;
  }

  /** Turn on the page request queue with 2^order records. */
  pageRequestQueue(order: number): number {
    const prq = this.frames.alloc(1) as number;
    mmioWrite64(this.hw, MOCK_REG.PRQ_BASE_LO, prq);
    this.hw.write32(MOCK_REG.PRQ_SIZE, order);
    this.hw.write32(MOCK_REG.CTRL, this.hw.read32(MOCK_REG.CTRL) | MOCK_CTRL_PRQ_EN);
    return prq;
  }

  /** Write the invalidation registers, then the command. */
  invalidate(
    cmd: number,
    o: { did?: number; pasid?: number; addr?: number; pages?: number } = {},
  ): void {
    const hw = this.hw;
    hw.write32(MOCK_REG.INV_DID, o.did ?? 0);
    hw.write32(MOCK_REG.INV_PASID, o.pasid === undefined ? 0 : (0x80000000 | o.pasid) >>> 0);
    mmioWrite64(hw, MOCK_REG.INV_ADDR_LO, o.addr ?? 0);
    hw.write32(MOCK_REG.INV_PAGES, o.pages ?? 0);
    hw.write32(MOCK_REG.INV_CMD, cmd);
  }

  /** Physical address of the entry that maps `iova` at `level` in `pt` (the path must exist). */
  entryAddr(pt: MockPgtable, iova: number, level: number): number {
    let table = pt.rootPa;
    for (let l = pt.levels; l > level; l--) {
      const lo = this.mem.read64(table + mockLevelIndex(iova, l) * 8);
      table = mockPteAddr(lo, this.mem.hi);
    }
    return table + mockLevelIndex(iova, level) * 8;
  }
}

/** The four qwords of fault record `i`. */
function faultRecord(
  mem: PhysMemory,
  fq: number,
  i: number,
): { w0: number; rid: number; addr: number; pasid: number } {
  const at = fq + i * MOCK_FQ_RECORD_SIZE;
  const w0 = mem.read64(at);
  const rid = mem.hi;
  const addr = mem.read64Number(at + 8);
  const pasid = mem.read64(at + 16);
  return { w0, rid, addr, pasid };
}

const RID = 0x0a8;
const IOVA = 0x1234_5000;
const PA = 0x4000_0000;

describe("registers", () => {
  test("CAP reports PASID bits, ATS, PRI and the IOTLB size; read-only registers ignore writes", () => {
    const { hw } = new Rig({ pasidBits: 16, ats: true, pri: false, iotlbEntries: 5 });
    const cap = hw.read32(MOCK_REG.CAP);
    expect(cap & 0x1f).toBe(16);
    expect(cap & MOCK_CAP_ATS).toBe(MOCK_CAP_ATS);
    expect(cap & MOCK_CAP_PRI).toBe(0);
    expect(cap >>> 16).toBe(5);
    hw.write32(MOCK_REG.CAP, 0);
    hw.write32(MOCK_REG.STATUS, 0);
    hw.write32(MOCK_REG.FQ_TAIL, 3);
    expect(hw.read32(MOCK_REG.CAP)).toBe(cap);
    expect(hw.read32(MOCK_REG.STATUS)).toBe(MOCK_STATUS_EN);
    expect(hw.read32(MOCK_REG.FQ_TAIL)).toBe(0);
  });

  test("STATUS.EN follows CTRL.EN", () => {
    const { hw } = new Rig();
    expect(hw.read32(MOCK_REG.STATUS) & MOCK_STATUS_EN).toBe(MOCK_STATUS_EN);
    hw.write32(MOCK_REG.CTRL, 0);
    expect(hw.read32(MOCK_REG.STATUS) & MOCK_STATUS_EN).toBe(0);
  });

  test("misaligned or out-of-range register accesses read 0 and are ignored", () => {
    const { hw } = new Rig();
    expect(hw.read32(MOCK_REG.CTRL + 1)).toBe(0);
    expect(hw.read32(0x100)).toBe(0);
    expect(hw.read32(-4)).toBe(0);
    hw.write32(MOCK_REG.CTRL + 2, 0);
    hw.write32(0x200, 1);
    expect(hw.read32(MOCK_REG.CTRL)).toBe(MOCK_CTRL_EN);
  });
});

describe("device table", () => {
  let rig: Rig;
  beforeEach(() => {
    rig = new Rig();
  });

  test("with translation disabled every request passes through untranslated", () => {
    rig.hw.write32(MOCK_REG.CTRL, 0);
    const r = rig.xlate(RID, IOVA + 0x123, { access: DMA_WRITE });
    expect(r.status).toBe(XLATE_OK);
    expect(r.pa).toBe(IOVA + 0x123);
    expect(r.perm).toBe(DMA_READ | DMA_WRITE | DMA_EXEC);
    expect(rig.hw.stats.faults).toBe(0);
  });

  test("an invalid DTE faults with DTE_INVALID", () => {
    const r = rig.xlate(RID, IOVA);
    expect(r.status).toBe(XLATE_FAULT);
    expect(r.fault).toBe(FaultKind.BAD_CONFIG);
    expect(r.code).toBe(MockFault.DTE_INVALID);
    expect(rig.hw.stats.faults).toBe(1);
  });

  test("a blocked DTE faults every request with BLOCKED", () => {
    rig.dte(RID, { mode: MOCK_MODE_BLOCKED });
    const r = rig.xlate(RID, IOVA);
    expect([r.status, r.fault, r.code]).toEqual([
      XLATE_FAULT,
      FaultKind.BLOCKED,
      MockFault.BLOCKED,
    ]);
  });

  test("an identity DTE passes addresses through with every permission", () => {
    rig.dte(RID, { mode: MOCK_MODE_IDENTITY });
    const r = rig.xlate(RID, IOVA + 0x10, { access: DMA_WRITE });
    expect([r.status, r.pa, r.perm]).toEqual([
      XLATE_OK,
      IOVA + 0x10,
      DMA_READ | DMA_WRITE | DMA_EXEC,
    ]);
    expect(rig.hw.iotlbEntries()).toEqual([]);
  });

  test("a translating DTE walks the table it points at", () => {
    const pt = rig.table();
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, RW)).toBe(0);
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 7 });
    const r = rig.xlate(RID, IOVA + 0xabc, { access: DMA_WRITE });
    expect([r.status, r.pa, r.sizeShift]).toEqual([XLATE_OK, PA + 0xabc, 12]);
    expect(r.perm).toBe(DMA_READ | DMA_WRITE | DMA_EXEC);
    const miss = rig.xlate(RID, IOVA + SZ_4K);
    expect([miss.status, miss.fault, miss.code]).toEqual([
      XLATE_FAULT,
      FaultKind.TRANSLATION,
      MockFault.NOT_PRESENT,
    ]);
  });

  test("a 2 MiB leaf translates every page under it and is cached as one IOTLB entry", () => {
    const pt = rig.table();
    expect(pt.mapPages(SZ_2M * 3, PA, SZ_2M, 1, RW)).toBe(0);
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 7 });
    const r = rig.xlate(RID, SZ_2M * 3 + 0x1234);
    expect([r.status, r.pa, r.sizeShift]).toEqual([XLATE_OK, PA + 0x1234, 21]);
    expect(rig.xlate(RID, SZ_2M * 4 - 8).pa).toBe(PA + SZ_2M - 8);
    expect(rig.hw.stats.iotlbHits).toBe(1);
    expect(rig.hw.iotlbEntries()).toEqual([
      {
        did: 7,
        pasid: NO_PASID,
        iova: SZ_2M * 3,
        size: SZ_2M,
        pa: PA,
        perm: DMA_READ | DMA_WRITE | DMA_EXEC,
      },
    ]);
  });

  test("each table depth bounds the input address: beyond it the request faults with ADDRESS_SIZE", () => {
    const pt = rig.table(3);
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 1 });
    const r = rig.xlate(RID, 2 ** 39);
    expect([r.status, r.fault, r.code]).toEqual([
      XLATE_FAULT,
      FaultKind.ADDRESS_SIZE,
      MockFault.ADDRESS_SIZE,
    ]);
    expect(rig.xlate(RID, 2 ** 39 - SZ_4K).code).toBe(MockFault.NOT_PRESENT);
  });

  test("the reserved MODE encoding 3 faults with BAD_ENTRY", () => {
    rig.mem.write64(rig.dt + RID * MOCK_DTE_SIZE, 1 | (3 << 1), 0);
    const r = rig.xlate(RID, IOVA);
    expect([r.status, r.fault, r.code]).toEqual([
      XLATE_FAULT,
      FaultKind.BAD_CONFIG,
      MockFault.BAD_ENTRY,
    ]);
  });

  test("the reserved LVL encoding 3 (six levels) faults with BAD_ENTRY", () => {
    const pt = rig.table();
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, RW)).toBe(0);
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 1 });
    const at = rig.dt + RID * MOCK_DTE_SIZE;
    const lo = rig.mem.read64(at);
    rig.mem.write64(at, (lo | (3 << MOCK_ENTRY_LVL_SHIFT)) >>> 0, rig.mem.hi);
    const r = rig.xlate(RID, IOVA);
    expect([r.status, r.fault, r.code]).toEqual([
      XLATE_FAULT,
      FaultKind.BAD_CONFIG,
      MockFault.BAD_ENTRY,
    ]);
  });
});

describe("PASID table", () => {
  let rig: Rig;
  let pasidTable: number;
  let rid: MockPgtable;
  let sub: MockPgtable;
  beforeEach(() => {
    rig = new Rig();
    pasidTable = rig.frames.alloc(0) as number;
    rid = rig.table();
    sub = rig.table();
    expect(rid.mapPages(IOVA, PA, SZ_4K, 1, RW)).toBe(0);
    expect(sub.mapPages(IOVA, PA + SZ_2M, SZ_4K, 1, RW)).toBe(0);
  });

  test("a request with a PASID faults with PASID_DISABLED when the DTE has PASID_EN clear", () => {
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt: rid, did: 1, pasidTable, pts: 8 });
    rig.pasidEntry(pasidTable, 3, { mode: MOCK_MODE_TRANSLATE, pt: sub, did: 2 });
    const r = rig.xlate(RID, IOVA, { pasid: 3 });
    expect([r.status, r.fault, r.code]).toEqual([
      XLATE_FAULT,
      FaultKind.BAD_REQUESTER,
      MockFault.PASID_DISABLED,
    ]);
    expect(rig.xlate(RID, IOVA).pa).toBe(PA);
  });

  test("a PASID at or above 2^PTS, and PASID 0, fault with PASID_TOO_BIG", () => {
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt: rid, did: 1, pasidTable, pts: 4, pasidEn: true });
    rig.pasidEntry(pasidTable, 15, { mode: MOCK_MODE_TRANSLATE, pt: sub, did: 2 });
    rig.pasidEntry(pasidTable, 16, { mode: MOCK_MODE_TRANSLATE, pt: sub, did: 2 });
    expect(rig.xlate(RID, IOVA, { pasid: 15 }).pa).toBe(PA + SZ_2M);
    const r = rig.xlate(RID, IOVA, { pasid: 16 });
    expect([r.status, r.fault, r.code]).toEqual([
      XLATE_FAULT,
      FaultKind.BAD_REQUESTER,
      MockFault.PASID_TOO_BIG,
    ]);
    expect(rig.xlate(RID, IOVA, { pasid: 0 }).code).toBe(MockFault.PASID_TOO_BIG);
  });

  test("a PASID beyond the hardware's PASID width faults whatever PTS says", () => {
    const narrow = new Rig({ pasidBits: 4 });
    const table = narrow.frames.alloc(0) as number;
    const pt = narrow.table();
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, RW)).toBe(0);
    narrow.dte(RID, {
      mode: MOCK_MODE_TRANSLATE,
      pt,
      did: 1,
      pasidTable: table,
      pts: 8,
      pasidEn: true,
    });
    narrow.pasidEntry(table, 20, { mode: MOCK_MODE_TRANSLATE, pt, did: 1 });
    expect(narrow.xlate(RID, IOVA, { pasid: 20 }).code).toBe(MockFault.PASID_TOO_BIG);
    const none = new Rig({ pasidBits: 0 });
    none.dte(RID, { mode: MOCK_MODE_IDENTITY, pasidTable: table, pts: 8, pasidEn: true });
    expect(none.xlate(RID, IOVA, { pasid: 1 }).code).toBe(MockFault.PASID_DISABLED);
  });

  test("an invalid PASID entry faults with PASID_ENTRY_INVALID", () => {
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt: rid, did: 1, pasidTable, pts: 8, pasidEn: true });
    const r = rig.xlate(RID, IOVA, { pasid: 9 });
    expect([r.status, r.fault, r.code]).toEqual([
      XLATE_FAULT,
      FaultKind.BAD_CONFIG,
      MockFault.PASID_ENTRY_INVALID,
    ]);
  });

  test("a PASID entry translates through its own table, cached under its own (DID, PASID)", () => {
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt: rid, did: 1, pasidTable, pts: 8, pasidEn: true });
    rig.pasidEntry(pasidTable, 9, { mode: MOCK_MODE_TRANSLATE, pt: sub, did: 2 });
    rig.pasidEntry(pasidTable, 10, { mode: MOCK_MODE_IDENTITY });
    rig.pasidEntry(pasidTable, 11, { mode: MOCK_MODE_BLOCKED });
    expect(rig.xlate(RID, IOVA, { pasid: 9 }).pa).toBe(PA + SZ_2M);
    expect(rig.xlate(RID, IOVA).pa).toBe(PA);
    expect(rig.xlate(RID, IOVA, { pasid: 10 }).pa).toBe(IOVA);
    expect(rig.xlate(RID, IOVA, { pasid: 11 }).code).toBe(MockFault.BLOCKED);
    expect(rig.hw.iotlbHas(2, 9, IOVA / SZ_4K)).toBe(true);
    expect(rig.hw.iotlbHas(1, NO_PASID, IOVA / SZ_4K)).toBe(true);
    expect(rig.hw.iotlbHas(1, 9, IOVA / SZ_4K)).toBe(false);
  });
});

describe("permissions", () => {
  let rig: Rig;
  let pt: MockPgtable;
  beforeEach(() => {
    rig = new Rig();
    pt = rig.table();
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 3 });
  });

  test("a write to a read-only page faults with PERMISSION; a read is allowed", () => {
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, IOMMU_READ)).toBe(0);
    expect(rig.xlate(RID, IOVA).status).toBe(XLATE_OK);
    const r = rig.xlate(RID, IOVA, { access: DMA_WRITE });
    expect([r.status, r.fault, r.code]).toEqual([
      XLATE_FAULT,
      FaultKind.PERMISSION,
      MockFault.PERMISSION,
    ]);
  });

  test("a read of a write-only page faults", () => {
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, IOMMU_WRITE)).toBe(0);
    expect(rig.xlate(RID, IOVA, { access: DMA_WRITE }).status).toBe(XLATE_OK);
    expect(rig.xlate(RID, IOVA).code).toBe(MockFault.PERMISSION);
  });

  test("an instruction fetch from an NX page faults; from a readable page without NX it is allowed", () => {
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, RW | IOMMU_NOEXEC)).toBe(0);
    expect(pt.mapPages(IOVA + SZ_4K, PA, SZ_4K, 1, RW)).toBe(0);
    expect(rig.xlate(RID, IOVA, { access: DMA_READ | DMA_EXEC }).code).toBe(MockFault.PERMISSION);
    expect(rig.xlate(RID, IOVA).perm).toBe(DMA_READ | DMA_WRITE);
    expect(rig.xlate(RID, IOVA + SZ_4K, { access: DMA_READ | DMA_EXEC }).status).toBe(XLATE_OK);
  });

  test("an unprivileged request to a PRIV page faults; a privileged one is allowed", () => {
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, RW | IOMMU_PRIV)).toBe(0);
    expect(rig.xlate(RID, IOVA).code).toBe(MockFault.PERMISSION);
    // The denied request still cached the entry: the check is made against the IOTLB's copy too.
    expect(rig.hw.iotlbEntries()[0].perm & PERM_PRIV).toBe(PERM_PRIV);
    expect(rig.xlate(RID, IOVA).code).toBe(MockFault.PERMISSION);
    expect(rig.xlate(RID, IOVA, { privileged: true }).status).toBe(XLATE_OK);
  });
});

describe("IOTLB", () => {
  let rig: Rig;
  let pt: MockPgtable;
  beforeEach(() => {
    rig = new Rig();
    pt = rig.table();
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5 });
    expect(pt.mapPages(IOVA, PA, SZ_4K, 4, RW)).toBe(0);
  });

  /** Translate the page (filling the IOTLB), then clear its PTE in memory without invalidating. */
  function stale(iova: number): void {
    expect(rig.xlate(RID, iova).pa).toBe(PA + (iova - IOVA));
    expect(pt.unmapPages(iova, SZ_4K, 1, null)).toBe(SZ_4K);
  }

  test("after a PTE is cleared in memory the hardware still translates from its IOTLB", () => {
    stale(IOVA);
    expect(rig.xlate(RID, IOVA).pa).toBe(PA);
    expect(rig.xlate(RID, IOVA, { uncached: true }).code).toBe(MockFault.NOT_PRESENT);
    expect(rig.hw.stats.iotlbHits).toBe(1);
  });

  test("INV_CMD RANGE removes the entries of (DID, PASID) in the range, and only those", () => {
    stale(IOVA);
    stale(IOVA + SZ_4K);
    rig.invalidate(MOCK_INV_RANGE, { did: 6, addr: IOVA, pages: 2 });
    rig.invalidate(MOCK_INV_RANGE, { did: 5, pasid: 1, addr: IOVA, pages: 2 });
    rig.invalidate(MOCK_INV_RANGE, { did: 5, addr: IOVA + 2 * SZ_4K, pages: 8 });
    expect(rig.xlate(RID, IOVA).status).toBe(XLATE_OK);
    rig.invalidate(MOCK_INV_RANGE, { did: 5, addr: IOVA, pages: 1 });
    expect(rig.xlate(RID, IOVA).code).toBe(MockFault.NOT_PRESENT);
    expect(rig.xlate(RID, IOVA + SZ_4K).status).toBe(XLATE_OK);
    rig.invalidate(MOCK_INV_RANGE, { did: 5, addr: IOVA + SZ_4K, pages: 0 });
    expect(rig.xlate(RID, IOVA + SZ_4K).code).toBe(MockFault.NOT_PRESENT);
  });

  test("INV_CMD RANGE removes a large entry the range only touches", () => {
    expect(pt.mapPages(SZ_2M * 8, PA, SZ_2M, 1, RW)).toBe(0);
    expect(rig.xlate(RID, SZ_2M * 8).status).toBe(XLATE_OK);
    expect(pt.unmapPages(SZ_2M * 8, SZ_2M, 1, null)).toBe(SZ_2M);
    rig.invalidate(MOCK_INV_RANGE, { did: 5, addr: SZ_2M * 8 + 0x5000, pages: 1 });
    expect(rig.xlate(RID, SZ_2M * 8).code).toBe(MockFault.NOT_PRESENT);
  });

  test("INV_CMD DOMAIN removes every entry of the DID, whatever its PASID", () => {
    const other = rig.table();
    expect(other.mapPages(IOVA, PA, SZ_4K, 1, RW)).toBe(0);
    rig.dte(RID + 1, { mode: MOCK_MODE_TRANSLATE, pt: other, did: 6 });
    stale(IOVA);
    expect(rig.xlate(RID + 1, IOVA).status).toBe(XLATE_OK);
    expect(other.unmapPages(IOVA, SZ_4K, 1, null)).toBe(SZ_4K);
    rig.invalidate(MOCK_INV_DOMAIN, { did: 5, pasid: 77 });
    expect(rig.xlate(RID, IOVA).code).toBe(MockFault.NOT_PRESENT);
    expect(rig.xlate(RID + 1, IOVA).status).toBe(XLATE_OK);
  });

  test("INV_CMD PASID removes the entries of (DID, PASID) and keeps the RID's", () => {
    const table = rig.frames.alloc(0) as number;
    rig.dte(RID, {
      mode: MOCK_MODE_TRANSLATE,
      pt,
      did: 5,
      pasidTable: table,
      pts: 8,
      pasidEn: true,
    });
    rig.pasidEntry(table, 4, { mode: MOCK_MODE_TRANSLATE, pt, did: 5 });
    expect(rig.xlate(RID, IOVA, { pasid: 4 }).status).toBe(XLATE_OK);
    stale(IOVA);
    rig.invalidate(MOCK_INV_PASID, { did: 5, pasid: 4 });
    expect(rig.xlate(RID, IOVA, { pasid: 4 }).code).toBe(MockFault.NOT_PRESENT);
    expect(rig.xlate(RID, IOVA).status).toBe(XLATE_OK);
  });

  test("INV_CMD ALL empties the IOTLB; an unknown command does nothing", () => {
    stale(IOVA);
    stale(IOVA + SZ_4K);
    rig.hw.write32(MOCK_REG.INV_CMD, 99);
    expect(rig.hw.iotlbEntries()).toHaveLength(2);
    rig.invalidate(MOCK_INV_ALL);
    expect(rig.hw.iotlbEntries()).toEqual([]);
    expect(rig.hw.stats.invalidations).toBe(2);
  });

  test("a full IOTLB evicts the least recently used entry", () => {
    const tiny = new Rig({ iotlbEntries: 2 });
    const t = tiny.table();
    tiny.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt: t, did: 5 });
    expect(t.mapPages(IOVA, PA, SZ_4K, 3, RW)).toBe(0);
    const [a, b, c] = [IOVA, IOVA + SZ_4K, IOVA + 2 * SZ_4K];
    tiny.xlate(RID, a);
    tiny.xlate(RID, b);
    tiny.xlate(RID, a);
    tiny.xlate(RID, c);
    const has = (iova: number) => tiny.hw.iotlbHas(5, NO_PASID, iova / SZ_4K);
    expect([has(a), has(b), has(c)]).toEqual([true, false, true]);
    expect(tiny.hw.stats.iotlbEvictions).toBe(1);
    tiny.xlate(RID, b);
    expect([has(a), has(b), has(c)]).toEqual([false, true, true]);
    expect(tiny.hw.stats).toMatchObject({
      iotlbInserts: 4,
      iotlbEvictions: 2,
      iotlbHits: 1,
      iotlbMisses: 4,
    });
  });

  test("a fault caches nothing", () => {
    rig.xlate(RID, IOVA + 16 * SZ_4K);
    expect(rig.hw.iotlbEntries()).toEqual([]);
  });
});

describe("malformed tables", () => {
  let rig: Rig;
  let pt: MockPgtable;
  beforeEach(() => {
    rig = new Rig();
    pt = rig.table();
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5 });
  });

  test.each([
    ["bit 5", 1 << 5, 0],
    ["bit 11", 1 << 11, 0],
    ["bit 52", 0, 1 << 20],
    ["bit 63", 0, 1 << 31],
  ])("a reserved %s in a leaf faults with RESERVED_BIT", (_name, lo, hi) => {
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, RW)).toBe(0);
    const e = rig.entryAddr(pt, IOVA, 1);
    const old = rig.mem.read64(e);
    rig.mem.write64(e, (old | lo) >>> 0, (rig.mem.hi | hi) >>> 0);
    const r = rig.xlate(RID, IOVA);
    expect([r.status, r.fault, r.code]).toEqual([
      XLATE_FAULT,
      FaultKind.BAD_CONFIG,
      MockFault.RESERVED_BIT,
    ]);
  });

  test("a reserved bit in a table entry faults the same way", () => {
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, RW)).toBe(0);
    const e = rig.entryAddr(pt, IOVA, 3);
    const old = rig.mem.read64(e);
    rig.mem.write64(e, (old | (1 << 6)) >>> 0, rig.mem.hi);
    expect(rig.xlate(RID, IOVA).code).toBe(MockFault.RESERVED_BIT);
  });

  test("PS at level 1, and a 2 MiB leaf whose address is not 2 MiB aligned, fault with RESERVED_BIT", () => {
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, RW)).toBe(0);
    const e = rig.entryAddr(pt, IOVA, 1);
    rig.mem.write64(e, (rig.mem.read64(e) | (1 << 7)) >>> 0, rig.mem.hi);
    expect(rig.xlate(RID, IOVA).code).toBe(MockFault.RESERVED_BIT);
    expect(pt.mapPages(SZ_2M * 9, PA, SZ_2M, 1, RW)).toBe(0);
    const big = rig.entryAddr(pt, SZ_2M * 9, 2);
    expect(mockPteDecode(rig.mem.read64(big), rig.mem.hi, 2)).toBe(MOCK_PTE_LEAF);
    rig.mem.write64(big, (rig.mem.read64(big) | 0x1000) >>> 0, rig.mem.hi);
    expect(rig.xlate(RID, SZ_2M * 9).code).toBe(MockFault.RESERVED_BIT);
  });

  test("a bus error while reading a table aborts the walk with WALK_ABORT", () => {
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, RW)).toBe(0);
    const leafTable = rig.entryAddr(pt, IOVA, 1) - mockLevelIndex(IOVA, 1) * 8;
    rig.mem.faultHook = (pa) => pa >= leafTable && pa < leafTable + SZ_4K;
    const r = rig.xlate(RID, IOVA);
    expect([r.status, r.fault, r.code]).toEqual([
      XLATE_FAULT,
      FaultKind.WALK_ABORT,
      MockFault.WALK_ABORT,
    ]);
    rig.mem.faultHook = null;
    expect(rig.xlate(RID, IOVA).pa).toBe(PA);
  });

  test("a bus error while reading the DTE or the PASID entry aborts with WALK_ABORT", () => {
    const dte = rig.dt + RID * MOCK_DTE_SIZE;
    rig.mem.faultHook = (pa) => pa === dte + 8;
    expect(rig.xlate(RID, IOVA).code).toBe(MockFault.WALK_ABORT);
    rig.mem.faultHook = null;
    const table = rig.frames.alloc(0) as number;
    rig.dte(RID, {
      mode: MOCK_MODE_TRANSLATE,
      pt,
      did: 5,
      pasidTable: table,
      pts: 8,
      pasidEn: true,
    });
    rig.pasidEntry(table, 2, { mode: MOCK_MODE_IDENTITY });
    expect(rig.xlate(RID, IOVA, { pasid: 2 }).status).toBe(XLATE_OK);
    rig.mem.faultHook = (pa) => pa === table + 2 * MOCK_PASID_ENTRY_SIZE;
    expect(rig.xlate(RID, IOVA, { pasid: 2 }).code).toBe(MockFault.WALK_ABORT);
  });
});

describe("fault queue", () => {
  let rig: Rig;
  let fq: number;
  beforeEach(() => {
    rig = new Rig();
    fq = rig.faultQueue(2); // four slots, three records: one slot stays empty
  });

  test("a fault is written as a record at the tail and the tail advances", () => {
    rig.xlate(RID, IOVA + 0x678, { access: DMA_WRITE });
    expect(rig.hw.read32(MOCK_REG.FQ_TAIL)).toBe(1);
    const rec = faultRecord(rig.mem, fq, 0);
    expect(rec.w0 & 0xff).toBe(MockFault.DTE_INVALID);
    expect((rec.w0 >>> 8) & 0xff).toBe(FaultKind.BAD_CONFIG);
    expect((rec.w0 >>> 16) & 0xf).toBe(0b0010); // no PASID, write, no exec, not privileged
    expect(rec.rid).toBe(RID);
    expect(rec.addr).toBe(IOVA);
    expect(rec.pasid).toBe(0);
  });

  test("a record carries the PASID, exec and privileged bits of the request", () => {
    const table = rig.frames.alloc(0) as number;
    rig.dte(RID, { mode: MOCK_MODE_IDENTITY, pasidTable: table, pts: 8, pasidEn: true });
    rig.xlate(RID, 2 ** 40 + IOVA, { access: DMA_READ | DMA_EXEC, pasid: 0x42, privileged: true });
    const rec = faultRecord(rig.mem, fq, 0);
    expect(rec.w0 & 0xff).toBe(MockFault.PASID_ENTRY_INVALID);
    expect((rec.w0 >>> 16) & 0xf).toBe(0b1101); // PASID valid, read, exec, privileged
    expect(rec.addr).toBe(2 ** 40 + IOVA);
    expect(rec.pasid).toBe(0x42);
  });

  test("when the queue is full the record is dropped and STATUS.FQ_OVF is set until cleared", () => {
    for (let i = 0; i < 3; i++) rig.xlate(RID, IOVA + i * SZ_4K);
    expect(rig.hw.read32(MOCK_REG.FQ_TAIL)).toBe(3);
    expect(rig.hw.read32(MOCK_REG.STATUS) & MOCK_STATUS_FQ_OVF).toBe(0);
    rig.xlate(RID, IOVA + 3 * SZ_4K);
    expect(rig.hw.read32(MOCK_REG.FQ_TAIL)).toBe(3);
    expect(rig.hw.read32(MOCK_REG.STATUS) & MOCK_STATUS_FQ_OVF).toBe(MOCK_STATUS_FQ_OVF);
    expect(rig.hw.stats).toMatchObject({ faults: 4, faultsDropped: 1 });
    // Software consumes two records: two more fit, the tail wraps.
    rig.hw.write32(MOCK_REG.FQ_HEAD, 2);
    rig.xlate(RID, IOVA + 4 * SZ_4K);
    rig.xlate(RID, IOVA + 5 * SZ_4K);
    expect(rig.hw.read32(MOCK_REG.FQ_TAIL)).toBe(1);
    expect(faultRecord(rig.mem, fq, 3).addr).toBe(IOVA + 4 * SZ_4K);
    expect(faultRecord(rig.mem, fq, 0).addr).toBe(IOVA + 5 * SZ_4K);
    rig.hw.write32(MOCK_REG.STATUS_CLR, MOCK_STATUS_FQ_OVF);
    expect(rig.hw.read32(MOCK_REG.STATUS) & MOCK_STATUS_FQ_OVF).toBe(0);
    expect(rig.hw.read32(MOCK_REG.STATUS) & MOCK_STATUS_EN).toBe(MOCK_STATUS_EN);
  });

  test("with FQ_EN clear a fault is counted but not recorded", () => {
    rig.hw.write32(MOCK_REG.CTRL, MOCK_CTRL_EN);
    const r = rig.xlate(RID, IOVA);
    expect(r.status).toBe(XLATE_FAULT);
    expect(rig.hw.read32(MOCK_REG.FQ_TAIL)).toBe(0);
    expect(rig.hw.stats).toMatchObject({ faults: 1, faultsDropped: 0 });
  });
});

describe("ATS", () => {
  let rig: Rig;
  let pt: MockPgtable;
  beforeEach(() => {
    rig = new Rig();
    pt = rig.table();
    rig.faultQueue(4);
  });

  test("a translation request for an unmapped page completes with no permission and no fault", () => {
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5, ats: true });
    const r = rig.xlate(RID, IOVA, { at: AT_TRANSLATION_REQUEST });
    expect([r.status, r.perm, r.fault]).toEqual([XLATE_OK, 0, FaultKind.NONE]);
    expect(rig.hw.stats.faults).toBe(0);
    expect(rig.hw.read32(MOCK_REG.FQ_TAIL)).toBe(0);
    expect(rig.hw.iotlbEntries()).toEqual([]);
  });

  test("a translation request for a mapped page returns its page address, permissions and size", () => {
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5, ats: true });
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, IOMMU_READ)).toBe(0);
    expect(pt.mapPages(SZ_2M * 2, PA, SZ_2M, 1, RW | IOMMU_NOEXEC)).toBe(0);
    const r = rig.xlate(RID, IOVA, { at: AT_TRANSLATION_REQUEST, access: DMA_WRITE });
    expect([r.status, r.pa, r.perm, r.sizeShift]).toEqual([XLATE_OK, PA, DMA_READ | DMA_EXEC, 12]);
    const big = rig.xlate(RID, SZ_2M * 2 + 5 * SZ_4K, { at: AT_TRANSLATION_REQUEST });
    expect([big.pa, big.perm, big.sizeShift]).toEqual([PA + 5 * SZ_4K, DMA_READ | DMA_WRITE, 21]);
  });

  test("a translated request is passed through as a physical address when the DTE allows ATS", () => {
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5, ats: true });
    const r = rig.xlate(RID, PA + 0x44, { at: AT_TRANSLATED, access: DMA_WRITE });
    expect([r.status, r.pa]).toEqual([XLATE_OK, PA + 0x44]);
  });

  test("without the DTE's ATS bit translation requests and translated requests fault with ATS_FORBIDDEN", () => {
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5 });
    for (const at of [AT_TRANSLATION_REQUEST, AT_TRANSLATED]) {
      const r = rig.xlate(RID, IOVA, { at });
      expect([r.status, r.fault, r.code]).toEqual([
        XLATE_FAULT,
        FaultKind.ATS_FORBIDDEN,
        MockFault.ATS_FORBIDDEN,
      ]);
    }
    expect(rig.hw.read32(MOCK_REG.FQ_TAIL)).toBe(2);
  });

  test("hardware without the ATS capability forbids ATS whatever the DTE says", () => {
    const noAts = new Rig({ ats: false });
    noAts.dte(RID, { mode: MOCK_MODE_IDENTITY, ats: true });
    expect(noAts.xlate(RID, IOVA, { at: AT_TRANSLATED }).code).toBe(MockFault.ATS_FORBIDDEN);
    expect(noAts.xlate(RID, IOVA, { at: AT_TRANSLATION_REQUEST }).code).toBe(
      MockFault.ATS_FORBIDDEN,
    );
  });
});

describe("page requests", () => {
  let rig: Rig;
  let bus: DmaBus;
  let dev: Device;
  let pt: MockPgtable;
  beforeEach(() => {
    rig = new Rig();
    bus = new DmaBus(rig.mem);
    dev = new Device({ name: "acc", rid: RID, ats: true, pri: true, pasidBits: 8 });
    expect(bus.addDevice(dev, rig.hw)).toBe(0);
    expect(dev.enableAts(12)).toBe(0);
    expect(dev.enablePri(32)).toBe(0);
    expect(dev.enablePasid(0)).toBe(0);
    pt = rig.table();
  });

  function prqRecord(prq: number, i: number) {
    const at = prq + i * MOCK_PRQ_RECORD_SIZE;
    const w0 = rig.mem.read64(at);
    const prgi = rig.mem.hi & 0x1ff;
    return {
      rid: w0 & 0xffff,
      pasidValid: (w0 >>> 16) & 1,
      last: (w0 >>> 17) & 1,
      access: (w0 >>> 18) & 7,
      priv: (w0 >>> 21) & 1,
      prgi,
      addr: rig.mem.read64Number(at + 8),
      pasid: rig.mem.read64(at + 16),
    };
  }

  function respond(prgi: number, code: number, pasid = -1): void {
    rig.hw.write32(MOCK_REG.RESP_RID, RID);
    rig.hw.write32(MOCK_REG.RESP_PASID, pasid < 0 ? 0 : (0x80000000 | pasid) >>> 0);
    rig.hw.write32(MOCK_REG.RESP_PRGI, prgi);
    rig.hw.write32(MOCK_REG.RESP_CODE, code);
  }

  test("a page request is queued as a record; the RESP_* registers deliver the PRG response", () => {
    const prq = rig.pageRequestQueue(2);
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5, ats: true });
    expect(dev.write32(IOVA + 8, 0xdead)).toBe(DMA_PAGE_REQUESTED);
    expect(rig.hw.read32(MOCK_REG.PRQ_TAIL)).toBe(1);
    const rec = prqRecord(prq, 0);
    expect(rec).toMatchObject({
      rid: RID,
      pasidValid: 0,
      last: 1,
      access: DMA_WRITE,
      priv: 0,
      addr: IOVA,
      pasid: 0,
    });
    // Software maps the page and answers the group.
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, RW)).toBe(0);
    respond(rec.prgi, PRG_SUCCESS);
    expect(rig.hw.stats.responses).toBe(1);
    expect(dev.stats.responses).toBe(1);
    expect(dev.write32(IOVA + 8, 0xdead)).toBe(DMA_OK);
    expect(rig.mem.read32(PA + 8)).toBe(0xdead);
  });

  test("a page request with a PASID records it", () => {
    const prq = rig.pageRequestQueue(2);
    const table = rig.frames.alloc(0) as number;
    rig.dte(RID, { mode: MOCK_MODE_BLOCKED, ats: true, pasidTable: table, pts: 8, pasidEn: true });
    rig.pasidEntry(table, 7, { mode: MOCK_MODE_TRANSLATE, pt, did: 9 });
    expect(dev.read32(IOVA, 7)).toBe(DMA_PAGE_REQUESTED);
    expect(prqRecord(prq, 0)).toMatchObject({
      pasidValid: 1,
      pasid: 7,
      access: DMA_READ,
      addr: IOVA,
    });
    respond(prqRecord(prq, 0).prgi, PRG_SUCCESS, 7);
    expect(dev.stats.responses).toBe(1);
  });

  test("when the queue is full the request is dropped, STATUS.PRQ_OVF set, and the device answered failure", () => {
    rig.pageRequestQueue(1); // two slots, one record
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5, ats: true });
    expect(dev.read32(IOVA)).toBe(DMA_PAGE_REQUESTED);
    expect(dev.read32(IOVA + SZ_4K)).toBe(DMA_PAGE_REQUESTED);
    expect(rig.hw.read32(MOCK_REG.PRQ_TAIL)).toBe(1);
    expect(rig.hw.read32(MOCK_REG.STATUS) & MOCK_STATUS_PRQ_OVF).toBe(MOCK_STATUS_PRQ_OVF);
    expect(rig.hw.stats).toMatchObject({ pageRequests: 2, pageRequestsDropped: 1 });
    expect(dev.stats.responses).toBe(1);
    expect(dev.priResponseFailure).toBe(true);
    expect(dev.read32(IOVA + SZ_4K)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.PRG_FAILURE);
  });

  test("with PRQ_EN clear a page request is answered failure at once", () => {
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5, ats: true });
    expect(dev.read32(IOVA)).toBe(DMA_PAGE_REQUESTED);
    expect(rig.hw.read32(MOCK_REG.STATUS) & MOCK_STATUS_PRQ_OVF).toBe(0);
    expect(rig.hw.stats.pageRequestsDropped).toBe(1);
    expect(dev.priResponseFailure).toBe(true);
  });

  test("a response for a device that is not connected goes nowhere", () => {
    rig.pageRequestQueue(2);
    rig.hw.write32(MOCK_REG.RESP_RID, RID + 1);
    rig.hw.write32(MOCK_REG.RESP_CODE, PRG_SUCCESS);
    expect(rig.hw.stats.responses).toBe(1);
    expect(dev.stats.unexpectedResponses).toBe(0);
  });
});

describe("translateUncached", () => {
  test("walks the tables as they are now and touches neither the IOTLB, the counters nor the fault queue", () => {
    const rig = new Rig();
    rig.faultQueue(4);
    const pt = rig.table();
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5 });
    expect(pt.mapPages(IOVA, PA, SZ_4K, 2, RW)).toBe(0);
    rig.xlate(RID, IOVA);
    expect(pt.unmapPages(IOVA, SZ_4K, 1, null)).toBe(SZ_4K);
    const stats = { ...rig.hw.stats };
    const entries = rig.hw.iotlbEntries();
    rig.mem.busError = true;
    expect(rig.xlate(RID, IOVA, { uncached: true }).code).toBe(MockFault.NOT_PRESENT);
    const ok = rig.xlate(RID, IOVA + SZ_4K + 9, { uncached: true, access: DMA_WRITE });
    expect([ok.status, ok.pa, ok.sizeShift]).toEqual([XLATE_OK, PA + SZ_4K + 9, 12]);
    expect(
      rig.xlate(RID, IOVA, { uncached: true, access: DMA_WRITE, privileged: true }).status,
    ).toBe(XLATE_FAULT);
    expect(rig.xlate(RID + 1, IOVA, { uncached: true }).code).toBe(MockFault.DTE_INVALID);
    expect(rig.mem.busError).toBe(true);
    expect(rig.hw.stats).toEqual(stats);
    expect(rig.hw.iotlbEntries()).toEqual(entries);
    expect(rig.hw.read32(MOCK_REG.FQ_TAIL)).toBe(0);
    // The cached path still serves the stale entry.
    expect(rig.xlate(RID, IOVA).pa).toBe(PA);
  });

  test("answers a translation request as translate does: no access for an unmapped page, no fault", () => {
    const rig = new Rig();
    const pt = rig.table();
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5, ats: true });
    expect(pt.mapPages(SZ_2M, PA, SZ_2M, 1, IOMMU_READ)).toBe(0);
    const hole = rig.xlate(RID, IOVA, { at: AT_TRANSLATION_REQUEST, uncached: true });
    expect([hole.status, hole.perm]).toEqual([XLATE_OK, 0]);
    const opts = { at: AT_TRANSLATION_REQUEST, access: DMA_WRITE };
    const cached = { ...rig.xlate(RID, SZ_2M + 3 * SZ_4K, opts) };
    expect(rig.xlate(RID, SZ_2M + 3 * SZ_4K, { ...opts, uncached: true })).toEqual(cached);
    expect(cached).toMatchObject({
      status: XLATE_OK,
      pa: PA + 3 * SZ_4K,
      perm: DMA_READ | DMA_EXEC,
    });
  });

  test("with translation disabled it passes through like translate", () => {
    const rig = new Rig();
    rig.hw.write32(MOCK_REG.CTRL, 0);
    const r = rig.xlate(RID, IOVA + 3, { uncached: true });
    expect([r.status, r.pa]).toEqual([XLATE_OK, IOVA + 3]);
  });
});

describe("devices", () => {
  test("an ATS device reads the right page of a 2 MiB leaf through its ATC", () => {
    const rig = new Rig();
    const bus = new DmaBus(rig.mem);
    const dev = new Device({ name: "gpu", rid: RID, ats: true });
    expect(bus.addDevice(dev, rig.hw)).toBe(0);
    expect(dev.enableAts(12)).toBe(0);
    const pt = rig.table();
    expect(pt.mapPages(SZ_2M * 4, PA, SZ_2M, 1, RW)).toBe(0);
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5, ats: true });
    for (const page of [5, 0, 511]) rig.mem.write32(PA + page * SZ_4K + 8, 0x1000 + page);
    for (const page of [5, 0, 511, 5]) {
      expect(dev.read32(SZ_2M * 4 + page * SZ_4K + 8)).toBe(DMA_OK);
      expect(dev.lo).toBe(0x1000 + page);
    }
    expect(dev.stats.atsRequests).toBe(1);
  });

  test("a device's DMA moves bytes through the translation and reports the hardware's fault", () => {
    const rig = new Rig();
    const bus = new DmaBus(rig.mem);
    const dev = new Device({ name: "nic", rid: RID, pasidBits: 8, pasidFeatures: 0 });
    expect(bus.addDevice(dev, rig.hw)).toBe(0);
    const pt = rig.table();
    expect(pt.mapPages(IOVA, PA, SZ_4K, 1, IOMMU_READ)).toBe(0);
    rig.dte(RID, { mode: MOCK_MODE_TRANSLATE, pt, did: 5 });
    rig.mem.write32(PA + 0x10, 0x1234_5678);
    expect(dev.read32(IOVA + 0x10)).toBe(DMA_OK);
    expect(dev.lo).toBe(0x1234_5678);
    expect(dev.write32(IOVA + 0x10, 1)).toBe(DMA_FAULT);
    expect([dev.lastFaultKind, dev.lastFaultCode]).toEqual([
      FaultKind.PERMISSION,
      MockFault.PERMISSION,
    ]);
    bus.removeDevice(dev);
    // A disconnected device gets no responses: nothing throws.
    rig.hw.write32(MOCK_REG.RESP_RID, RID);
    rig.hw.write32(MOCK_REG.RESP_CODE, PRG_SUCCESS);
  });
});
