// The VT-d SVA domain (svm.c) against Linux: PASID entries pointing at a process's table, the
// notifier's invalidations as the unit receives them, exit and unbind, and the errnos. The tests
// play iommu-sva.c by hand: allocate through the driver, fill the generic fields, attach and
// detach through the core.

import {
  type Device,
  DMA_FAULT,
  DMA_OK,
  DMA_PAGE_REQUESTED,
  DMA_READ,
  DMA_WRITE,
  IOMMU_DOMAIN_SVA,
  IOMMU_NO_PASID,
  IOMMU_PAGE_RESP_INVALID,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  type IopfHandler,
  iommuAllocGlobalPasid,
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuPagingDomainAlloc,
  iommuReplaceDevicePasid,
  iopfGroupResponse,
} from "@iommu-sim/iommu-core";
import { decode } from "@iommu-sim/iommu-core/platform";
import { TestMm } from "@iommu-sim/iommu-core/testing";
import { describe, expect, it } from "vitest";
import {
  FS_PTE_A,
  FS_PTE_ADDR_HI,
  FS_PTE_ADDR_LO,
  FS_PTE_D,
  FS_PTE_US,
} from "../format/first-stage-pte.js";
import { INV_DESC_TYPE, invDescLayout } from "../format/inv-desc.js";
import { PASID_ENTRY } from "../format/pasid-entry.js";
import { FSTS_PPF, VTD_REG } from "../format/registers.js";
import type { VtdUnit } from "../hw/vtd-unit.js";
import { VtdFsPgtable } from "../pgtable/first-stage.js";
import { VtdMachine, type VtdMachineUnitOptions } from "../testing/vtd-machine.js";
import type { DmarSvaDomain } from "./svm.js";

const PAGE = 4096;
/** A user address of the process (lower canonical half). */
const VA = 0x7f12_3456_7000;
const KIND: Record<number, string> = {
  [INV_DESC_TYPE.CC]: "cc",
  [INV_DESC_TYPE.IOTLB]: "iotlb",
  [INV_DESC_TYPE.DEV_TLB]: "devtlb",
  [INV_DESC_TYPE.WAIT]: "wait",
  [INV_DESC_TYPE.PIOTLB]: "piotlb",
  [INV_DESC_TYPE.PC]: "pc",
  [INV_DESC_TYPE.PDEV_TLB]: "pdevtlb",
  [INV_DESC_TYPE.PGRP_RESP]: "resp",
};

interface Desc {
  kind: string;
  f: Record<string, number>;
}

/** Every descriptor a unit carries out, decoded through the format tables. */
function observe(hw: VtdUnit): Desc[] {
  const log: Desc[] = [];
  hw.descriptorObserver = (w) => {
    const type = (w[0] as number) & 0xf;
    const layout = invDescLayout(type);
    const f: Record<string, number> = {};
    if (layout !== null) for (const [k, v] of Object.entries(decode(layout, w))) f[k] = Number(v);
    log.push({ kind: KIND[type] ?? `type${type}`, f });
  };
  return log;
}

const kinds = (log: readonly Desc[]): string[] => log.map((d) => d.kind);

function machine(units: VtdMachineUnitOptions[] = [{}]): VtdMachine {
  return new VtdMachine({ units });
}

function add(m: VtdMachine, name: string, rid: number, o: { ats?: boolean; pri?: boolean } = {}) {
  const dev = m.addDevice({
    name,
    rid,
    pasidBits: 8,
    ats: o.ats ?? true,
    pri: o.pri ?? o.ats ?? true,
  });
  if (typeof dev === "string") throw new Error(`${name}: ${dev}`);
  return dev;
}

/** A process: its x86-64 table (built with the first-stage table code: U/S set everywhere). */
function proc(m: VtdMachine, levels: 4 | 5 = 4): { mm: TestMm; pt: VtdFsPgtable } {
  const pt = VtdFsPgtable.alloc({ mem: m.mem, frames: m.frames, levels, superpages: 0, tlb: null });
  if (typeof pt === "string") throw new Error(pt);
  return { mm: new TestMm({ name: "proc", pgd: pt.rootPa, levels }), pt };
}

/** Map one page of the process at `va` to a fresh frame holding `word`; returns the frame. */
function mapPage(m: VtdMachine, pt: VtdFsPgtable, va: number, word: number): number {
  const pa = m.frames.alloc(0);
  if (typeof pa !== "number") throw new Error("no frame");
  m.mem.write32(pa, word);
  expect(pt.mapPages(va, pa, PAGE, 1, IOMMU_READ | IOMMU_WRITE)).toBe(0);
  return pa;
}

const refuse: IopfHandler = (group) => {
  iopfGroupResponse(group, IOMMU_PAGE_RESP_INVALID);
  return 0;
};

/** iommu-sva.c's part of a bind: the driver allocates, the generic layer fills its fields. */
function svaDomain(m: VtdMachine, dev: Device, mm: TestMm, handler = refuse): DmarSvaDomain {
  const d = m.driver.domainAllocSva(dev, mm);
  if (typeof d === "string") throw new Error(d);
  d.type = IOMMU_DOMAIN_SVA;
  d.mm = mm;
  d.owner = m.driver;
  d.iopfHandler = handler;
  return d as DmarSvaDomain;
}

/** And its unbind: detach, then free once the last user went. */
function unbind(d: IommuDomain, dev: Device, pasid: number): void {
  expect(iommuDetachDevicePasid(d, dev, pasid)).toBe(0);
}

function pasidEntry(m: VtdMachine, dev: Device, pasid: number): Record<string, number> {
  const table = m.driver.deviceInfo(dev)?.pasidTable;
  if (!table) throw new Error("no PASID table");
  const at = table.entryAddr(pasid, false);
  const w: number[] = [];
  for (let q = 0; q < 8; q++) w.push(m.mem.read64(at + q * 8), m.mem.hi);
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(decode(PASID_ENTRY, w))) out[k] = Number(v);
  return out;
}

/** Where the leaf PTE of `va` sits in a 4-level x86-64 table, read as the CPU would walk it. */
function pteAt(m: VtdMachine, pgd: number, va: number): number {
  let table = pgd;
  for (let level = 4; level > 1; level--) {
    const at = table + (Math.floor(va / 2 ** (3 + 9 * level)) % 512) * 8;
    const lo = m.mem.read64(at);
    table = (m.mem.hi & FS_PTE_ADDR_HI) * 2 ** 32 + ((lo & FS_PTE_ADDR_LO) >>> 0);
  }
  return table + (Math.floor(va / PAGE) % 512) * 8;
}

function hwOf(m: VtdMachine, i = 0): VtdUnit {
  return (m.units[i] as { hw: VtdUnit }).hw;
}

/** One device (PASID, ATS, PRI) bound to a process with one mapped page. */
function bound(units?: VtdMachineUnitOptions[]) {
  const m = machine(units);
  const dev = add(m, "acc", 0x0100);
  const { mm, pt } = proc(m);
  const pa = mapPage(m, pt, VA, 0x5a5a_0001);
  const pasid = iommuAllocGlobalPasid(dev);
  const d = svaDomain(m, dev, mm);
  expect(iommuAttachDevicePasid(d, dev, pasid, "sva")).toBe(0);
  return { m, dev, mm, pt, pa, pasid, d, hw: hwOf(m), log: observe(hwOf(m)) };
}

describe("binding (intel_svm_domain_alloc, intel_svm_set_dev_pasid)", () => {
  it("DMA at the PASID walks the process's table to the page it maps, reads and writes", () => {
    const { m, dev, pa, pasid } = bound();
    expect(dev.read32(VA + 8, pasid)).toBe(DMA_OK);
    expect(dev.lo).toBe(0);
    expect(dev.read32(VA, pasid)).toBe(DMA_OK);
    expect(dev.lo).toBe(0x5a5a_0001);
    expect(dev.write32(VA + 4, 0x1234, pasid)).toBe(DMA_OK);
    expect(m.mem.read32(pa + 4)).toBe(0x1234);
    // Without the PASID the device reaches its DMA domain, which maps nothing there.
    expect(dev.read32(VA)).not.toBe(DMA_OK);
  });

  it("a translation request sets A, and D in a writable leaf, in the process's own PTE (no ECAP.NWFS: every request may write)", () => {
    const { m, dev, mm, pasid } = bound();
    const at = pteAt(m, mm.pgd, VA);
    // As the CPU leaves a page it has not touched: A and D clear.
    m.mem.write32(at, m.mem.read32(at) & ~(FS_PTE_A | FS_PTE_D));
    mm.flush(VA, VA + PAGE);
    expect(dev.read32(VA, pasid)).toBe(DMA_OK);
    expect(m.mem.read32(at) & (FS_PTE_A | FS_PTE_D)).toBe(FS_PTE_A | FS_PTE_D);
    expect(dev.atc?.lookup(pasid, VA / PAGE, DMA_WRITE)).toBe(true);
  });

  it("with ECAP.NWFS a read's translation sets A only and grants no W over a clean leaf; the write's sets D", () => {
    const { m, dev, mm, pasid } = bound([{ caps: { nwfs: true } }]);
    const at = pteAt(m, mm.pgd, VA);
    m.mem.write32(at, m.mem.read32(at) & ~(FS_PTE_A | FS_PTE_D));
    mm.flush(VA, VA + PAGE);
    expect(dev.read32(VA, pasid)).toBe(DMA_OK);
    expect(m.mem.read32(at) & (FS_PTE_A | FS_PTE_D)).toBe(FS_PTE_A);
    expect(dev.atc?.lookup(pasid, VA / PAGE, DMA_WRITE)).toBe(false);
    expect(dev.write32(VA, 2, pasid)).toBe(DMA_OK);
    expect(m.mem.read32(at) & (FS_PTE_A | FS_PTE_D)).toBe(FS_PTE_A | FS_PTE_D);
  });

  it("a page without U/S (a kernel mapping of the process) refuses the device's user requests", () => {
    const m = machine();
    const dev = add(m, "acc", 0x0100, { pri: false });
    const { mm, pt } = proc(m);
    mapPage(m, pt, VA, 3);
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(svaDomain(m, dev, mm), dev, pasid)).toBe(0);
    const at = pteAt(m, mm.pgd, VA);
    m.mem.write32(at, m.mem.read32(at) & ~FS_PTE_US);
    mm.flush(VA, VA + PAGE);
    expect(dev.read32(VA, pasid)).toBe(DMA_FAULT);
  });

  it("the PASID entry is first-stage at mm.pgd with DID 1, the unit's AW, PWSNP; no SRE, WPE, NXE, EAFE, PGSNP or FPD", () => {
    const { m, dev, mm, pasid } = bound();
    const unit = m.driver.units[0];
    expect(pasidEntry(m, dev, pasid)).toMatchObject({
      P: 1,
      FPD: 0,
      PGTT: 1,
      DID: 1,
      AW: unit?.agaw,
      FLPTR: mm.pgd,
      FLPM: 0,
      PWSNP: 1,
      PGSNP: 0,
      SRE: 0,
      ERE: 0,
      WPE: 0,
      NXE: 0,
      EAFE: 0,
      SLPTPTR: 0,
      SLADE: 0,
    });
  });

  it("PWSNP follows ECAP.SMPWCS (Linux 6.18's ecap_smpwc)", () => {
    const m = machine([{ caps: { smpwcs: false } }]);
    const dev = add(m, "acc", 0x0100);
    const { mm } = proc(m);
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(svaDomain(m, dev, mm), dev, pasid)).toBe(0);
    expect(pasidEntry(m, dev, pasid)).toMatchObject({ P: 1, PWSNP: 0 });
  });

  it("a 5-level process table gets FLPM 1 and 57-bit addresses translate", () => {
    const m = machine();
    const dev = add(m, "acc", 0x0100);
    const { mm, pt } = proc(m, 5);
    // Above 4-level reach, within what a device can address (2^53).
    const high = 2 ** 50 + VA;
    mapPage(m, pt, high, 0xfeed);
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(svaDomain(m, dev, mm), dev, pasid)).toBe(0);
    expect(pasidEntry(m, dev, pasid)).toMatchObject({ P: 1, FLPM: 1, FLPTR: mm.pgd });
    expect(dev.read32(high, pasid)).toBe(DMA_OK);
    expect(dev.lo).toBe(0xfeed);
  });

  it("no domain ID is allocated: the entry, the IOTLB tag and the device-TLB tag use FLPT_DEFAULT_DID", () => {
    const m = machine();
    const dev = add(m, "acc", 0x0100);
    const { mm } = proc(m);
    const before = m.driver.didsInUse;
    const d = svaDomain(m, dev, mm);
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(d, dev, pasid)).toBe(0);
    expect(m.driver.didsInUse).toBe(before);
    expect(d.cacheTags.tags.map((t) => [t.kind, t.id, t.pasid, t.dev?.name ?? null])).toEqual([
      [0, 1, pasid, null],
      [1, 1, pasid, "acc"],
    ]);
    expect(d.devPasids).toEqual([{ dev, pasid }]);
  });

  it("allocation registers one notifier, which holds an mm_struct reference", () => {
    const m = machine();
    const dev = add(m, "acc", 0x0100);
    const { mm } = proc(m);
    const d = svaDomain(m, dev, mm);
    expect([...mm.registered]).toEqual([d.notifier]);
    expect(d.notifier.mm).toBe(mm);
    expect(mm.count).toBe(2);
  });

  it("under caching mode the new entry is flushed PASID-selectively under DID 1", () => {
    const m = machine([{ caps: { cachingMode: true } }]);
    const dev = add(m, "acc", 0x0100);
    const { mm } = proc(m);
    const log = observe(hwOf(m));
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(svaDomain(m, dev, mm), dev, pasid)).toBe(0);
    expect(kinds(log)).toEqual(["pc", "wait", "piotlb", "wait"]);
    expect(log[0]?.f).toMatchObject({ G: 1, DID: 1, PASID: pasid });
    expect(log[2]?.f).toMatchObject({ G: 2, DID: 1, PASID: pasid });
  });

  it("IOPF goes on with the bind of a device with PRI and off with its unbind", () => {
    const { m, dev, pasid, d } = bound();
    const info = m.driver.deviceInfo(dev);
    expect(info?.iopfRefcount).toBe(1);
    expect(dev.iommu?.faultParam).not.toBeNull();
    unbind(d, dev, pasid);
    expect(info?.iopfRefcount).toBe(0);
    expect(dev.iommu?.faultParam).toBeNull();
  });

  it("a device without PRI (its own fault handling) binds without IOPF (the March 2026 fix, sent to stable)", () => {
    const m = machine();
    const dev = add(m, "acc", 0x0100, { pri: false });
    const { mm, pt } = proc(m);
    mapPage(m, pt, VA, 7);
    const pasid = iommuAllocGlobalPasid(dev);
    const d = svaDomain(m, dev, mm);
    expect(iommuAttachDevicePasid(d, dev, pasid)).toBe(0);
    const info = m.driver.deviceInfo(dev);
    expect(info?.iopfRefcount).toBe(0);
    expect(dev.read32(VA, pasid)).toBe(DMA_OK);
    unbind(d, dev, pasid);
    expect(info?.iopfRefcount).toBe(0);
  });
});

describe("the mmu notifier (intel_arch_invalidate_secondary_tlbs)", () => {
  it("a cleared PTE's flush sends P_IOTLB (DID 1, the PASID, that page, IH 0), then the PASID devTLB; the page stops translating", () => {
    const { dev, mm, pt, pasid, hw, log } = bound();
    expect(dev.read32(VA, pasid)).toBe(DMA_OK);
    const vpn = VA / PAGE;
    expect(hw.iotlb.lookup(1, pasid, vpn)).toBeGreaterThanOrEqual(0);
    expect(pt.unmapPages(VA, PAGE, 1, null)).toBe(PAGE);
    mm.flush(VA, VA + PAGE);
    expect(kinds(log)).toEqual(["piotlb", "pdevtlb", "wait"]);
    expect(log[0]?.f).toMatchObject({ G: 3, DID: 1, PASID: pasid, AM: 0, IH: 0, ADDR: VA });
    expect(log[1]?.f).toMatchObject({ SID: 0x0100, PASID: pasid, S: 0, ADDR: VA });
    expect(hw.iotlb.lookup(1, pasid, vpn)).toBe(-1);
    expect(dev.atc?.lookup(pasid, vpn, DMA_READ)).toBe(false);
    // The translation request finds no page: the device asks for it (PRI) instead of reading.
    expect(dev.read32(VA, pasid)).toBe(DMA_PAGE_REQUESTED);
  });

  it("a range flush covers the smallest aligned power of two holding [start, end - 1]", () => {
    const { mm, pasid, log } = bound();
    // Pages 0x...568 and 0x...569: an aligned pair.
    mm.flush(VA + PAGE, VA + 3 * PAGE);
    expect(log[0]?.f).toMatchObject({ G: 3, PASID: pasid, AM: 1, ADDR: VA + PAGE });
    // Pages 0x...567 and 0x...568 first share bit 4 and up: 16 pages.
    mm.flush(VA, VA + 2 * PAGE);
    expect(log[3]?.f).toMatchObject({ G: 3, PASID: pasid, AM: 4, ADDR: VA - (VA % (16 * PAGE)) });
  });

  it("a whole-address-space flush is PASID-selective: P_IOTLB G=2 and the whole device-TLB of the PASID", () => {
    const { mm, pasid, log } = bound();
    mm.flushAll();
    expect(kinds(log)).toEqual(["piotlb", "pdevtlb", "wait"]);
    expect(log[0]?.f).toMatchObject({ G: 2, DID: 1, PASID: pasid, AM: 0, ADDR: 0 });
    expect(log[1]?.f).toMatchObject({ PASID: pasid, S: 1 });
  });

  it("with skipNotifierFlush nothing is invalidated: the stale IOTLB entry still answers", () => {
    const { m, dev, mm, pt, pa, pasid, hw, log } = bound();
    expect(dev.read32(VA, pasid)).toBe(DMA_OK);
    m.driver.inject.skipNotifierFlush = true;
    pt.unmapPages(VA, PAGE, 1, null);
    mm.flush(VA, VA + PAGE);
    expect(log).toEqual([]);
    // Even with the device's ATC emptied, its translation request hits the unit's stale entry.
    dev.atc?.flushAll();
    expect(hw.iotlb.lookup(1, pasid, VA / PAGE)).toBeGreaterThanOrEqual(0);
    m.mem.write32(pa, 0xdead);
    expect(dev.read32(VA, pasid)).toBe(DMA_OK);
    expect(dev.lo).toBe(0xdead);
  });

  it("with skipAtcOnNotifier the IOTLB is flushed but the device's ATC still answers", () => {
    const { m, dev, mm, pt, pasid, hw, log } = bound();
    expect(dev.read32(VA, pasid)).toBe(DMA_OK);
    m.driver.inject.skipAtcOnNotifier = true;
    pt.unmapPages(VA, PAGE, 1, null);
    mm.flush(VA, VA + PAGE);
    expect(kinds(log)).toEqual(["piotlb", "wait"]);
    expect(hw.iotlb.lookup(1, pasid, VA / PAGE)).toBe(-1);
    expect(dev.atc?.lookup(pasid, VA / PAGE, DMA_READ)).toBe(true);
    expect(dev.read32(VA, pasid)).toBe(DMA_OK);
    expect(dev.lo).toBe(0x5a5a_0001);
    // Paging domains' flushes are not affected by the injection.
    m.driver.inject.skipAtcOnNotifier = false;
    mm.flushAll();
    expect(dev.atc?.lookup(pasid, VA / PAGE, DMA_READ)).toBe(false);
  });

  it("two devices behind two units share one domain: one notifier, tags on both units, both flushed", () => {
    const m = machine([{}, { rids: [0x0200] }]);
    const a = add(m, "a", 0x0100);
    const b = add(m, "b", 0x0200);
    const { mm, pt } = proc(m);
    mapPage(m, pt, VA, 0x77);
    const pasid = iommuAllocGlobalPasid(a);
    const d = svaDomain(m, a, mm);
    expect(iommuAttachDevicePasid(d, a, pasid)).toBe(0);
    expect(iommuAttachDevicePasid(d, b, pasid)).toBe(0);
    expect(mm.registered.size).toBe(1);
    const [u0, u1] = m.driver.units;
    const tags = d.cacheTags.tags.map((t) => [t.kind, t.iommu === u0?.iommu ? 0 : 1, t.id]);
    expect(tags).toEqual(
      expect.arrayContaining([
        [0, 0, 1],
        [0, 1, 1],
        [1, 0, 1],
        [1, 1, 1],
      ]),
    );
    expect(tags).toHaveLength(4);
    expect(u1?.iommu).not.toBe(u0?.iommu);
    for (const dev of [a, b]) {
      expect(pasidEntry(m, dev, pasid)).toMatchObject({ P: 1, DID: 1, FLPTR: mm.pgd });
      expect(dev.read32(VA, pasid)).toBe(DMA_OK);
      expect(dev.lo).toBe(0x77);
    }
    const logs = [observe(hwOf(m, 0)), observe(hwOf(m, 1))];
    pt.unmapPages(VA, PAGE, 1, null);
    mm.flush(VA, VA + PAGE);
    for (const log of logs) {
      expect(kinds(log)).toEqual(["piotlb", "pdevtlb", "wait"]);
      expect(log[0]?.f).toMatchObject({ DID: 1, PASID: pasid });
    }
    unbind(d, a, pasid);
    expect(d.cacheTags.size).toBe(2);
    unbind(d, b, pasid);
    expect(d.cacheTags.size).toBe(0);
  });
});

describe("process exit and unbind (intel_mm_release, blocking_domain_set_dev_pasid)", () => {
  it("release tears the entry down with fault_ignore: P clear, FPD set, PASID cache, P_IOTLB and devTLB each waited for", () => {
    const { m, dev, mm, pasid, hw, log } = bound();
    expect(dev.read32(VA, pasid)).toBe(DMA_OK);
    mm.release();
    expect(kinds(log)).toEqual(["pc", "wait", "piotlb", "wait", "pdevtlb", "wait"]);
    expect(log[0]?.f).toMatchObject({ G: 1, DID: 1, PASID: pasid });
    expect(log[2]?.f).toMatchObject({ G: 2, DID: 1, PASID: pasid });
    expect(log[4]?.f).toMatchObject({ SID: 0x0100, PASID: pasid, S: 1 });
    const e = pasidEntry(m, dev, pasid);
    expect(e).toMatchObject({ P: 0, FPD: 1, DID: 0, PGTT: 0, FLPTR: 0 });
    // DMA after exit faults, and no fault is recorded.
    expect(dev.read32(VA, pasid)).toBe(DMA_FAULT);
    expect(dev.write32(VA, 1, pasid)).toBe(DMA_FAULT);
    expect(hw.read32(VTD_REG.FSTS) & FSTS_PPF).toBe(0);
    m.processQueues();
    expect(m.driver.units[0]?.faultLog).toEqual([]);
    expect(hw.stats.faultsSuppressed).toBeGreaterThan(0);
    // Off the chain: later flushes of the dying mm reach nothing.
    log.length = 0;
    mm.flushAll();
    expect(log).toEqual([]);
  });

  it("the unbind after exit only zeroes the FPD entry and drains the PRQ; free puts the notifier; nothing is left", () => {
    const m = machine();
    const dev = add(m, "acc", 0x0100);
    const { mm, pt } = proc(m);
    mapPage(m, pt, VA, 1);
    const frames = m.frames.freeFrames;
    const dids = m.driver.didsInUse;
    const pasid = iommuAllocGlobalPasid(dev);
    const d = svaDomain(m, dev, mm);
    expect(iommuAttachDevicePasid(d, dev, pasid)).toBe(0);
    expect(dev.read32(VA, pasid)).toBe(DMA_OK);
    mm.release();
    const log = observe(hwOf(m));
    unbind(d, dev, pasid);
    // No second tear-down (nothing under the entry's zeroed DID): the drain alone.
    expect(kinds(log)).toEqual(["wait", "piotlb", "pdevtlb", "wait"]);
    expect(log[0]?.f).toMatchObject({ FN: 1 });
    expect(log[1]?.f).toMatchObject({ G: 2, PASID: pasid });
    expect(log[3]?.f).toMatchObject({ PD: 1 });
    expect(pasidEntry(m, dev, pasid)).toMatchObject({ P: 0, FPD: 0, DID: 0 });
    expect(d.cacheTags.size).toBe(0);
    expect(d.devPasids).toEqual([]);
    expect(m.driver.deviceInfo(dev)?.iopfRefcount).toBe(0);
    expect(d.freed).toBe(false);
    d.ops.free?.(d);
    expect(d.freed).toBe(true);
    expect(mm.registered.size).toBe(0);
    expect(mm.count).toBe(1);
    expect(m.frames.freeFrames).toBe(frames);
    expect(m.driver.didsInUse).toBe(dids);
    expect(m.units[0]?.hw.read32(VTD_REG.FSTS)).toBe(0);
  });

  it("an unbind without exit tears down under DID 1, drains, and leaves no tags, frames or notifier", () => {
    const m = machine();
    const dev = add(m, "acc", 0x0100);
    const { mm, pt } = proc(m);
    mapPage(m, pt, VA, 1);
    const frames = m.frames.freeFrames;
    const pasid = iommuAllocGlobalPasid(dev);
    const d = svaDomain(m, dev, mm);
    expect(iommuAttachDevicePasid(d, dev, pasid)).toBe(0);
    const log = observe(hwOf(m));
    unbind(d, dev, pasid);
    const k = kinds(log);
    expect(k.slice(0, 6)).toEqual(["pc", "wait", "piotlb", "wait", "pdevtlb", "wait"]);
    expect(log[0]?.f).toMatchObject({ DID: 1, PASID: pasid });
    expect(k.slice(6)).toEqual(["wait", "piotlb", "pdevtlb", "wait"]);
    expect(pasidEntry(m, dev, pasid)).toMatchObject({ P: 0, FPD: 0, FLPTR: 0 });
    d.ops.free?.(d);
    expect(d.freed).toBe(true);
    expect(mm.registered.size).toBe(0);
    expect(mm.count).toBe(1);
    expect(mm.users).toBe(1);
    expect(m.frames.freeFrames).toBe(frames);
    // The process lives on: later flushes reach no IOMMU.
    log.length = 0;
    mm.flushAll();
    expect(log).toEqual([]);
  });
});

describe("replacing at a PASID (the driver's replace path)", () => {
  it("SVA to SVA: the old entry is torn down under DID 1 and the new one points at the new mm; IOPF stays on once", () => {
    const { m, dev, pasid, d } = bound();
    const other = proc(m);
    mapPage(m, other.pt, VA, 0xbbbb);
    const d2 = svaDomain(m, dev, other.mm);
    const log = observe(hwOf(m));
    expect(iommuReplaceDevicePasid(d2, dev, pasid, "sva2")).toBe(0);
    expect(kinds(log).slice(0, 6)).toEqual(["pc", "wait", "piotlb", "wait", "pdevtlb", "wait"]);
    expect(pasidEntry(m, dev, pasid)).toMatchObject({ P: 1, DID: 1, FLPTR: other.mm.pgd });
    expect(d.cacheTags.size).toBe(0);
    expect(d2.cacheTags.size).toBe(2);
    expect(m.driver.deviceInfo(dev)?.iopfRefcount).toBe(1);
    expect(dev.read32(VA, pasid)).toBe(DMA_OK);
    expect(dev.lo).toBe(0xbbbb);
  });

  it("SVA to a paging domain turns the SVA domain's IOPF off", () => {
    const { m, dev, pasid, d } = bound();
    const paging = iommuPagingDomainAlloc(dev);
    if (typeof paging === "string") throw new Error(paging);
    expect(iommuReplaceDevicePasid(paging, dev, pasid, "dma")).toBe(0);
    expect(m.driver.deviceInfo(dev)?.iopfRefcount).toBe(0);
    expect(d.devPasids).toEqual([]);
    expect(pasidEntry(m, dev, pasid)).toMatchObject({ P: 1, PGTT: 1 });
    expect(pasidEntry(m, dev, pasid).DID).toBeGreaterThan(1);
  });
});

describe("errnos", () => {
  it("domainAllocSva: ENODEV for an unprobed device", () => {
    const m = machine();
    const dev = add(m, "acc", 0x0100);
    const { mm } = proc(m);
    m.removeDevice(dev);
    expect(m.driver.domainAllocSva(dev, mm)).toBe("ENODEV");
    expect(mm.registered.size).toBe(0);
  });

  it("domainAllocSva: EOPNOTSUPP on a unit that cannot share CPU tables (no PASID, no first stage, no FL1GP, legacy mode)", () => {
    for (const unit of [
      { caps: { pasid: false, pss: 0, prs: false, pds: false, srs: false, ers: false } },
      { caps: { flts: false, firstStage1G: false, firstStage5Level: false, nest: false } },
      { caps: { firstStage1G: false } },
      { scalable: false },
    ] as VtdMachineUnitOptions[]) {
      const m = machine([unit]);
      expect(m.driver.units[0]?.svmCapable).toBe(false);
      const dev = add(m, "acc", 0x0100);
      const { mm } = proc(m);
      expect(m.driver.domainAllocSva(dev, mm)).toBe("EOPNOTSUPP");
      expect(mm.registered.size).toBe(0);
    }
  });

  it("domainAllocSva: EOPNOTSUPP for a table that is not x86-64, or 5-level without CAP.FL5LP", () => {
    const m = machine([{}, { caps: { firstStage5Level: false, mgaw: 48 }, rids: [0x0200] }]);
    const a = add(m, "a", 0x0100);
    const b = add(m, "b", 0x0200);
    const arm = new TestMm({ pgd: 0x10000, pgtableFormat: "aarch64" });
    expect(m.driver.domainAllocSva(a, arm)).toBe("EOPNOTSUPP");
    expect(m.driver.domainAllocSva(a, new TestMm({ pgd: 0x10000, levels: 3 }))).toBe("EOPNOTSUPP");
    const five = new TestMm({ pgd: 0x10000, levels: 5 });
    expect(m.driver.domainAllocSva(b, five)).toBe("EOPNOTSUPP");
    expect(typeof m.driver.domainAllocSva(a, five)).toBe("object");
  });

  it("domainAllocSva: EINVAL without PASID or ATS on, or with PRI supported but off", () => {
    const m = machine();
    const { mm } = proc(m);
    const noAts = add(m, "no-ats", 0x0100, { ats: false, pri: false });
    expect(m.driver.domainAllocSva(noAts, mm)).toBe("EINVAL");
    const noPasid = m.addDevice({ name: "no-pasid", rid: 0x0200, ats: true });
    if (typeof noPasid === "string") throw new Error(noPasid);
    expect(m.driver.domainAllocSva(noPasid, mm)).toBe("EINVAL");
    const pri = add(m, "pri", 0x0300);
    const info = m.driver.deviceInfo(pri);
    if (info === null) throw new Error("not probed");
    // PRI enable cannot fail on the model's devices; this is the state a failed enable leaves.
    info.priEnabled = false;
    expect(m.driver.domainAllocSva(pri, mm)).toBe("EINVAL");
    expect(mm.registered.size).toBe(0);
  });

  it("domainAllocSva: the notifier registration's EINVAL once the process is exiting", () => {
    const m = machine();
    const dev = add(m, "acc", 0x0100);
    const { mm } = proc(m);
    mm.release();
    expect(m.driver.domainAllocSva(dev, mm)).toBe("EINVAL");
  });

  it("setDevPasid: EOPNOTSUPP on a unit that cannot share the table, EINVAL for a device without ATS", () => {
    const m = machine([
      {},
      { caps: { firstStage1G: false }, rids: [0x0200] },
      { caps: { firstStage5Level: false, mgaw: 48 }, rids: [0x0300] },
    ]);
    const a = add(m, "a", 0x0100);
    const b = add(m, "b", 0x0200);
    const c = add(m, "c", 0x0300);
    const noAts = add(m, "n", 0x0400, { ats: false, pri: false });
    const { mm } = proc(m);
    const d = svaDomain(m, a, mm);
    const pasid = iommuAllocGlobalPasid(a);
    expect(iommuAttachDevicePasid(d, b, pasid)).toBe("EOPNOTSUPP");
    expect(iommuAttachDevicePasid(d, noAts, pasid)).toBe("EINVAL");
    const five = proc(m, 5);
    const d5 = svaDomain(m, a, five.mm);
    expect(iommuAttachDevicePasid(d5, c, pasid)).toBe("EOPNOTSUPP");
    expect(d.cacheTags.size + d5.cacheTags.size).toBe(0);
    expect(d.devPasids).toEqual([]);
  });

  it("setDevPasid: ENODEV for an unprobed device or a PASID beyond the table, EINVAL for IOMMU_NO_PASID or no mm; each unwinds", () => {
    const m = machine();
    const dev = add(m, "acc", 0x0100);
    const { mm } = proc(m);
    const d = svaDomain(m, dev, mm);
    const set = d.ops.setDevPasid;
    if (set === undefined) throw new Error("no setDevPasid");
    expect(set(d, dev, 2 ** 19, null)).toBe("ENODEV");
    expect(set(d, dev, IOMMU_NO_PASID, null)).toBe("EINVAL");
    const gone = add(m, "gone", 0x0200);
    m.removeDevice(gone);
    expect(set(d, gone, 5, null)).toBe("ENODEV");
    d.mm = null;
    expect(set(d, dev, 5, null)).toBe("EINVAL");
    d.mm = mm;
    expect(d.cacheTags.size).toBe(0);
    expect(d.devPasids).toEqual([]);
    expect(m.driver.deviceInfo(dev)?.iopfRefcount).toBe(0);
    expect(dev.iommu?.faultParam).toBeNull();
  });

  it("setDevPasid: EBUSY on an entry already present; the first attachment is left as it was", () => {
    const { m, dev, pasid, d } = bound();
    expect(d.ops.setDevPasid?.(d, dev, pasid, null)).toBe("EBUSY");
    expect(d.cacheTags.tags.map((t) => t.users)).toEqual([1, 1]);
    expect(d.devPasids).toHaveLength(1);
    expect(m.driver.deviceInfo(dev)?.iopfRefcount).toBe(1);
    expect(pasidEntry(m, dev, pasid)).toMatchObject({ P: 1, DID: 1 });
  });

  it("setDevPasid: IOPF's EBUSY (the device is in a fault queue already) unwinds the tags", () => {
    const m = machine();
    const dev = add(m, "acc", 0x0100);
    const { mm } = proc(m);
    const info = m.driver.deviceInfo(dev);
    if (info === null) throw new Error("not probed");
    expect(m.driver.iopfQueueOf(info.unit).addDevice(dev)).toBe(0);
    const d = svaDomain(m, dev, mm);
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(d, dev, pasid)).toBe("EBUSY");
    expect(d.cacheTags.size).toBe(0);
    expect(d.devPasids).toEqual([]);
    expect(pasidEntry(m, dev, pasid).P).toBe(0);
  });
});
