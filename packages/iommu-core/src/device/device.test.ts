import { describe, expect, it } from "vitest";
import { ModelBug } from "../platform/bug.js";
import { PhysMemory } from "../platform/phys-memory.js";
import { DmaBus } from "./bus.js";
import {
  Device,
  type DeviceOptions,
  DMA_BUS_ERROR,
  DMA_FAULT,
  DMA_NO_PASID,
  DMA_OK,
  DMA_PAGE_REQUESTED,
  DMA_PRIV,
  DMA_STALLED,
  DmaReason,
  PRG_INDEX_COUNT,
} from "./device.js";
import {
  AT_TRANSLATED,
  AT_TRANSLATION_REQUEST,
  AT_UNTRANSLATED,
  type DevicePort,
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  FaultKind,
  type IommuHardware,
  NO_PASID,
  type PageRequest,
  PRG_INVALID_REQUEST,
  PRG_RESPONSE_FAILURE,
  PRG_SUCCESS,
  type TranslationRequest,
  type TranslationResult,
  XLATE_FAULT,
  XLATE_OK,
  XLATE_STALLED,
} from "./iommu-hardware.js";
import { PCI_PASID_CAP_EXEC, PCI_PASID_CAP_PRIV, pciRid } from "./pci.js";

const RW = DMA_READ | DMA_WRITE;
const PAGE = 4096;
/** Architecture codes the fixture reports, so tests can see them travel. */
const CODE_NOT_PRESENT = 0x10;
const CODE_PERMISSION = 0x13;
const CODE_ATS = 0x05;

interface FixtureEntry {
  pfn: number;
  perm: number;
  /** What an ATS Translation Completion reports as the region's size. */
  sizeShift: number;
}

/**
 * TEST FIXTURE, not the package's mock IOMMU: a fixed table of (pasid, iovaPfn) -> (pfn, perm).
 * Untranslated requests translate or fault (or stall, when `stall` is set); ATS Translation
 * Requests answer with the entry or with no access; translated requests pass when `translatedOk`.
 * Every request is logged as a copy.
 */
class FixtureIommu implements IommuHardware {
  readonly name = "fixture0";
  readonly table = new Map<string, FixtureEntry>();
  readonly log: TranslationRequest[] = [];
  readonly pageRequests: PageRequest[] = [];
  readonly ports = new Set<DevicePort>();
  atsOk = true;
  translatedOk = true;
  stall = false;
  /** When set, answer page requests at once with this code (as an auto-response would). */
  autoRespond: number | null = null;
  private nextTag = 100;

  map(pasid: number, iovaPfn: number, pfn: number, perm = RW, sizeShift = 12): void {
    this.table.set(`${pasid}:${iovaPfn}`, { pfn, perm, sizeShift });
  }

  unmap(pasid: number, iovaPfn: number): void {
    this.table.delete(`${pasid}:${iovaPfn}`);
  }

  translate(req: TranslationRequest, out: TranslationResult): void {
    this.log.push({ ...req });
    out.perm = 0;
    out.sizeShift = 12;
    out.fault = FaultKind.NONE;
    out.code = 0;
    out.stallTag = 0;
    out.status = XLATE_OK;
    if (req.at === AT_TRANSLATED) {
      if (!this.translatedOk) {
        this.fault(out, FaultKind.ATS_FORBIDDEN, CODE_ATS);
        return;
      }
      out.pa = req.iovaPfn * PAGE + req.offset;
      out.perm = RW;
      return;
    }
    const e = this.table.get(`${req.pasid}:${req.iovaPfn}`);
    if (req.at === AT_TRANSLATION_REQUEST) {
      if (!this.atsOk) {
        this.fault(out, FaultKind.ATS_FORBIDDEN, CODE_ATS);
        return;
      }
      out.pa = e === undefined ? 0 : e.pfn * PAGE;
      out.perm = e === undefined ? 0 : e.perm;
      out.sizeShift = e === undefined ? 12 : e.sizeShift;
      return;
    }
    if (e === undefined || (e.perm & req.access) !== req.access) {
      const kind = e === undefined ? FaultKind.TRANSLATION : FaultKind.PERMISSION;
      this.fault(out, kind, e === undefined ? CODE_NOT_PRESENT : CODE_PERMISSION);
      if (this.stall) {
        out.status = XLATE_STALLED;
        out.stallTag = this.nextTag++;
      }
      return;
    }
    out.pa = e.pfn * PAGE + req.offset;
    out.perm = e.perm;
  }

  private fault(out: TranslationResult, kind: number, code: number): void {
    out.status = XLATE_FAULT;
    out.fault = kind;
    out.code = code;
  }

  pageRequest(req: PageRequest): void {
    this.pageRequests.push({ ...req });
    if (this.autoRespond !== null) {
      for (const p of this.ports) {
        if (p.rid === req.rid) p.prgResponse(req.pasid, req.prgIndex, this.autoRespond);
      }
    }
  }

  connect(port: DevicePort): void {
    this.ports.add(port);
  }

  disconnect(port: DevicePort): void {
    this.ports.delete(port);
  }
}

function machine(options: Partial<DeviceOptions> = {}, withIommu = true) {
  const mem = new PhysMemory({ paBits: 40 });
  const bus = new DmaBus(mem);
  const hw = new FixtureIommu();
  const dev = new Device({ name: "dev0", rid: pciRid(0, 2, 0), ...options });
  expect(bus.addDevice(dev, withIommu ? hw : null)).toBe(0);
  return { mem, bus, hw, dev };
}

function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

function memBytes(mem: PhysMemory, pa: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  mem.readBytes(pa, b);
  return b;
}

describe("DMA through the IOMMU", () => {
  it("bytes land at the translated pa of each page across page boundaries", () => {
    const { mem, hw, dev } = machine();
    hw.map(NO_PASID, 0x10, 0x500);
    hw.map(NO_PASID, 0x11, 0x123);
    hw.map(NO_PASID, 0x12, 0x900);
    const src = bytes(2 * PAGE + 200);
    expect(dev.write(0x10f00, src)).toBe(DMA_OK);
    expect(dev.lastBytes).toBe(src.length);
    expect(memBytes(mem, 0x500f00, 0x100)).toEqual(src.subarray(0, 0x100));
    expect(memBytes(mem, 0x123000, PAGE)).toEqual(src.subarray(0x100, 0x1100));
    expect(memBytes(mem, 0x900000, src.length - 0x1100)).toEqual(src.subarray(0x1100));
    // One untranslated request per page, at the page's offset.
    expect(hw.log.map((r) => [r.at, r.iovaPfn, r.offset, r.access])).toEqual([
      [AT_UNTRANSLATED, 0x10, 0xf00, DMA_WRITE],
      [AT_UNTRANSLATED, 0x11, 0, DMA_WRITE],
      [AT_UNTRANSLATED, 0x12, 0, DMA_WRITE],
    ]);
    const dst = new Uint8Array(src.length);
    expect(dev.read(0x10f00, dst)).toBe(DMA_OK);
    expect(dst).toEqual(src);
    expect(dev.stats).toMatchObject({ dmas: 2, bytes: 2 * src.length, faults: 0 });
  });

  it("a fault mid-range stops the DMA and reports the bytes moved and the failing access", () => {
    const { mem, hw, dev } = machine();
    hw.map(NO_PASID, 0x10, 0x500);
    hw.map(NO_PASID, 0x12, 0x900);
    const src = bytes(3 * PAGE);
    expect(dev.write(0x10800, src)).toBe(DMA_FAULT);
    expect(dev.lastStatus).toBe(DMA_FAULT);
    expect(dev.lastBytes).toBe(0x800);
    expect(dev.lastFaultIova).toBe(0x11000);
    expect(dev.lastFaultPfn).toBe(0x11);
    expect(dev.lastFaultKind).toBe(FaultKind.TRANSLATION);
    expect(dev.lastFaultCode).toBe(CODE_NOT_PRESENT);
    expect(dev.lastReason).toBe(DmaReason.IOMMU);
    expect(memBytes(mem, 0x500800, 0x800)).toEqual(src.subarray(0, 0x800));
    expect(mem.isPopulated(0x900)).toBe(false);
    expect(hw.log.length).toBe(2);
    expect(dev.stats).toMatchObject({ faults: 1, bytes: 0x800 });
  });

  it("a write to a read-only page faults with PERMISSION", () => {
    const { hw, dev } = machine();
    hw.map(NO_PASID, 1, 0x50, DMA_READ);
    expect(dev.write32(0x1000, 7)).toBe(DMA_FAULT);
    expect(dev.lastFaultKind).toBe(FaultKind.PERMISSION);
    expect(dev.read32(0x1000)).toBe(DMA_OK);
  });

  it("a memory bus error at the translated pa is DMA_BUS_ERROR and leaves busError alone", () => {
    const { mem, hw, dev } = machine();
    hw.map(NO_PASID, 0, 0x10);
    hw.map(NO_PASID, 1, 0x11);
    mem.faultHook = (pa) => pa >= 0x11000 && pa < 0x12000;
    expect(dev.read(0x800, new Uint8Array(PAGE))).toBe(DMA_BUS_ERROR);
    expect(dev.lastBytes).toBe(0x800);
    expect(dev.lastReason).toBe(DmaReason.MEMORY);
    expect(dev.lastFaultIova).toBe(0x1000);
    expect(mem.busError).toBe(false);
    // Beyond the physical address space.
    mem.faultHook = null;
    hw.map(NO_PASID, 2, 2 ** 28);
    expect(dev.write64(0x2000, 1, 2)).toBe(DMA_BUS_ERROR);
    expect(dev.stats.busErrors).toBe(2);
  });

  it("a zero-length DMA moves nothing and asks nothing", () => {
    const { hw, dev } = machine();
    expect(dev.read(0x1000, new Uint8Array(0))).toBe(DMA_OK);
    expect(hw.log.length).toBe(0);
  });

  it("privileged and execute requests carry their bits; DMA_EXEC is ignored on writes", () => {
    const { hw, dev } = machine({
      pasidBits: 4,
      pasidFeatures: PCI_PASID_CAP_EXEC | PCI_PASID_CAP_PRIV,
    });
    expect(dev.enablePasid(PCI_PASID_CAP_EXEC | PCI_PASID_CAP_PRIV)).toBe(0);
    hw.map(3, 1, 0x50, RW | DMA_EXEC);
    expect(dev.read64(0x1000, 3, DMA_EXEC | DMA_PRIV)).toBe(DMA_OK);
    expect(dev.write64(0x1000, 1, 0, 3, DMA_EXEC)).toBe(DMA_OK);
    expect(hw.log.map((r) => [r.pasid, r.access, r.privileged])).toEqual([
      [3, DMA_READ | DMA_EXEC, true],
      [3, DMA_WRITE, false],
    ]);
  });

  it("read64/write64 and read32/write32 are little-endian", () => {
    const { mem, hw, dev } = machine();
    hw.map(NO_PASID, 1, 0x50);
    expect(dev.write64(0x1008, 0x11223344, 0xaabbccdd)).toBe(DMA_OK);
    expect(mem.read64(0x50008)).toBe(0x11223344);
    expect(mem.hi).toBe(0xaabbccdd);
    expect(dev.read64(0x1008)).toBe(DMA_OK);
    expect([dev.lo, dev.hi]).toEqual([0x11223344, 0xaabbccdd]);
    expect(dev.write32(0x1010, 0xdeadbeef)).toBe(DMA_OK);
    expect(dev.read32(0x1010)).toBe(DMA_OK);
    expect(dev.lo).toBe(0xdeadbeef);
    expect(mem.read8(0x50010)).toBe(0xef);
  });

  it("addresses beyond 2^53 go through transfer() as page numbers", () => {
    const { mem, hw, dev } = machine();
    const pfn = 2 ** 45 - 1; // top page of a 57-bit space
    hw.map(NO_PASID, pfn, 0x77);
    expect(dev.transfer(true, pfn, 0xff8, bytes(8), NO_PASID, 0)).toBe(DMA_OK);
    expect(memBytes(mem, 0x77ff8, 8)).toEqual(bytes(8));
    expect(dev.transfer(true, pfn, 0xff8, bytes(16), NO_PASID, 0)).toBe(DMA_FAULT);
    expect(dev.lastFaultPfn).toBe(pfn + 1);
    expect(dev.lastBytes).toBe(8);
  });

  it("malformed calls fail with BAD_REQUEST, without a request", () => {
    const { hw, dev } = machine();
    expect(dev.read(-4096, new Uint8Array(4))).toBe(DMA_FAULT);
    expect(dev.read(0.5, new Uint8Array(4))).toBe(DMA_FAULT);
    expect(dev.read(0, new Uint8Array(4), NO_PASID, 0x100)).toBe(DMA_FAULT);
    expect(dev.transfer(false, 2 ** 52, 0, new Uint8Array(1), NO_PASID, 0)).toBe(DMA_FAULT);
    expect(dev.transfer(false, 0, 4096, new Uint8Array(1), NO_PASID, 0)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.BAD_REQUEST);
    expect(hw.log.length).toBe(0);
    expect(dev.stats.faults).toBe(5);
  });
});

describe("DMA without an IOMMU", () => {
  it("goes straight to physical memory at pa = iova", () => {
    const { mem, dev } = machine({}, false);
    const src = bytes(PAGE + 16);
    expect(dev.hardware).toBeNull();
    expect(dev.write(0x7ff8, src)).toBe(DMA_OK);
    expect(memBytes(mem, 0x7ff8, src.length)).toEqual(src);
    expect(dev.read64(0x8000)).toBe(DMA_OK);
  });

  it("a device on no bus cannot DMA: DMA_BUS_ERROR", () => {
    const dev = new Device({ name: "loose", rid: 1 });
    expect(dev.read(0, new Uint8Array(4))).toBe(DMA_BUS_ERROR);
    expect(dev.lastReason).toBe(DmaReason.NOT_ON_BUS);
  });
});

describe("PASID prefix", () => {
  it("DMA_NO_PASID when the device has no PASID capability or has not enabled it", () => {
    const { hw, dev } = machine({ pasidBits: 0 });
    expect(dev.maxPasids).toBe(0);
    expect(dev.read32(0, 1)).toBe(DMA_NO_PASID);
    expect(dev.lastReason).toBe(DmaReason.PASID_DISABLED);
    const m = machine({ pasidBits: 5 });
    expect(m.dev.maxPasids).toBe(32);
    expect(m.dev.read32(0, 1)).toBe(DMA_NO_PASID);
    expect(m.dev.enablePasid(0)).toBe(0);
    m.hw.map(31, 0, 0x10);
    expect(m.dev.read32(0, 31)).toBe(DMA_OK);
    expect(hw.log.length).toBe(0);
  });

  it("DMA_NO_PASID for a PASID outside the device's width", () => {
    const { dev } = machine({ pasidBits: 5 });
    dev.enablePasid(0);
    for (const p of [32, -2, 1.5]) {
      expect(dev.read32(0, p)).toBe(DMA_NO_PASID);
      expect(dev.lastReason).toBe(DmaReason.PASID_RANGE);
    }
    expect(dev.stats.noPasid).toBe(3);
  });

  it("a PCI device signals privileged / execute only in a PASID prefix with the feature enabled", () => {
    const { hw, dev } = machine({
      pasidBits: 4,
      pasidFeatures: PCI_PASID_CAP_PRIV | PCI_PASID_CAP_EXEC,
    });
    hw.map(NO_PASID, 0, 0x10, RW | DMA_EXEC);
    hw.map(1, 0, 0x10, RW | DMA_EXEC);
    expect(dev.read32(0, NO_PASID, DMA_PRIV)).toBe(DMA_NO_PASID);
    expect(dev.lastReason).toBe(DmaReason.PRIV_DISABLED);
    dev.enablePasid(PCI_PASID_CAP_EXEC);
    expect(dev.read32(0, 1, DMA_PRIV)).toBe(DMA_NO_PASID);
    expect(dev.read32(0, NO_PASID, DMA_EXEC)).toBe(DMA_NO_PASID);
    expect(dev.lastReason).toBe(DmaReason.EXEC_DISABLED);
    expect(dev.read32(0, 1, DMA_EXEC)).toBe(DMA_OK);
  });

  it("a platform device uses SubstreamIDs and privileged requests without enabling anything", () => {
    const { hw, dev } = machine({ name: "plat0", rid: 0x8_0000, isPci: false, pasidBits: 3 });
    expect(dev.pasidEnabled).toBe(true);
    expect(dev.sid).toBe(0x8_0000);
    hw.map(NO_PASID, 0, 0x10, RW | DMA_EXEC);
    hw.map(7, 0, 0x11);
    expect(dev.read32(0, NO_PASID, DMA_PRIV | DMA_EXEC)).toBe(DMA_OK);
    expect(dev.read32(0, 7)).toBe(DMA_OK);
    expect(dev.read32(0, 8)).toBe(DMA_NO_PASID);
    expect(hw.log[0]).toMatchObject({ rid: 0x8_0000, sid: 0x8_0000, privileged: true });
  });
});

function atsMachine(options: Partial<DeviceOptions> = {}) {
  const m = machine({ ats: true, atcEntries: 4, pasidBits: 4, ...options });
  expect(m.dev.enableAts(12)).toBe(0);
  expect(m.dev.enablePasid(0)).toBe(0);
  return m;
}

describe("ATS", () => {
  it("a miss sends a Translation Request, caches the answer and sends a translated request", () => {
    const { mem, hw, dev } = atsMachine();
    hw.map(NO_PASID, 0x10, 0x500);
    expect(dev.write32(0x10abc, 0x12345678)).toBe(DMA_OK);
    expect(hw.log.map((r) => [r.at, r.iovaPfn, r.offset])).toEqual([
      [AT_TRANSLATION_REQUEST, 0x10, 0],
      [AT_TRANSLATED, 0x500, 0xabc],
    ]);
    expect(mem.read32(0x500abc)).toBe(0x12345678);
    expect(dev.atc?.size).toBe(1);
    // A hit goes straight to a translated request.
    hw.log.length = 0;
    expect(dev.read32(0x10abc)).toBe(DMA_OK);
    expect(dev.lo).toBe(0x12345678);
    expect(hw.log.map((r) => [r.at, r.iovaPfn, r.offset])).toEqual([[AT_TRANSLATED, 0x500, 0xabc]]);
    expect(dev.stats).toMatchObject({ atsRequests: 1, translatedRequests: 2 });
    expect([dev.atc?.hits, dev.atc?.misses, dev.atc?.inserts]).toEqual([1, 1, 1]);
  });

  it("a large Translation Completion serves every page of its region from one request", () => {
    const { mem, hw, dev } = atsMachine();
    for (let i = 0; i < 512; i++) hw.map(3, 0x200 + i, 0x1000 + i, RW, 21);
    const src = bytes(4 * PAGE);
    expect(dev.write(0x205000, src, 3)).toBe(DMA_OK);
    expect(dev.stats.atsRequests).toBe(1);
    expect(dev.atc?.entries()).toEqual([
      { pasid: 3, iovaPfn: 0x200, sizeShift: 21, paBase: 0x1000000, perm: RW, privileged: false },
    ]);
    expect(memBytes(mem, 0x1005000, src.length)).toEqual(src);
  });

  it("PASIDs and privilege get their own ATC entries", () => {
    const { hw, dev } = atsMachine({ pasidFeatures: PCI_PASID_CAP_PRIV });
    dev.disablePasid();
    dev.enablePasid(PCI_PASID_CAP_PRIV);
    hw.map(NO_PASID, 1, 0x10);
    hw.map(1, 1, 0x11);
    hw.map(2, 1, 0x12);
    expect(dev.read32(0x1000)).toBe(DMA_OK);
    expect(dev.read32(0x1000, 1)).toBe(DMA_OK);
    expect(dev.read32(0x1000, 2)).toBe(DMA_OK);
    expect(dev.read32(0x1000, 2, DMA_PRIV)).toBe(DMA_OK);
    expect(dev.stats.atsRequests).toBe(4);
    expect(hw.log.filter((r) => r.at === AT_TRANSLATED).map((r) => r.iovaPfn)).toEqual([
      0x10, 0x11, 0x12, 0x12,
    ]);
  });

  it("a Translation Request the IOMMU refuses is a fault; so is a refused translated request", () => {
    const { hw, dev } = atsMachine();
    hw.map(NO_PASID, 1, 0x10);
    hw.atsOk = false;
    expect(dev.read32(0x1000)).toBe(DMA_FAULT);
    expect(dev.lastFaultKind).toBe(FaultKind.ATS_FORBIDDEN);
    expect(dev.lastFaultCode).toBe(CODE_ATS);
    expect(dev.atc?.size).toBe(0);
    hw.atsOk = true;
    hw.translatedOk = false;
    expect(dev.read32(0x1000)).toBe(DMA_FAULT);
    expect(dev.lastFaultKind).toBe(FaultKind.ATS_FORBIDDEN);
    expect(dev.atc?.size).toBe(1);
  });

  it("without PRI, a completion granting nothing (or too little) is a fault", () => {
    const { hw, dev } = atsMachine();
    expect(dev.read32(0x1000)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.ATS_NO_ACCESS);
    expect(dev.lastFaultKind).toBe(FaultKind.TRANSLATION);
    expect(dev.atc?.size).toBe(0);
    hw.map(NO_PASID, 1, 0x10, DMA_READ);
    expect(dev.write32(0x1000, 1)).toBe(DMA_FAULT);
    expect(dev.lastFaultKind).toBe(FaultKind.PERMISSION);
    // The read-only answer was cached and serves reads.
    expect(dev.read32(0x1000)).toBe(DMA_OK);
    expect(dev.stats.atsRequests).toBe(2);
  });

  it("with ATS disabled the device sends untranslated requests and leaves its ATC alone", () => {
    const { hw, dev } = atsMachine();
    hw.map(NO_PASID, 1, 0x10);
    expect(dev.read32(0x1000)).toBe(DMA_OK);
    dev.disableAts();
    hw.log.length = 0;
    expect(dev.read32(0x1000)).toBe(DMA_OK);
    expect(hw.log.map((r) => r.at)).toEqual([AT_UNTRANSLATED]);
    expect(dev.atc?.size).toBe(1);
  });

  it("nothing but an ATS invalidation or a reset empties the ATC, so a stale entry keeps working", () => {
    const { mem, bus, hw, dev } = atsMachine({ pri: true });
    hw.map(NO_PASID, 1, 0x10);
    hw.map(5, 2, 0x20);
    expect(dev.read32(0x1000)).toBe(DMA_OK);
    expect(dev.read32(0x2000, 5)).toBe(DMA_OK);
    // The IOMMU forgets the mappings; ATS, PRI and PASID go off and on; the device is re-plugged.
    hw.unmap(NO_PASID, 1);
    hw.unmap(5, 2);
    dev.disableAts();
    expect(dev.enableAts(12)).toBe(0);
    expect(dev.enablePri(4)).toBe(0);
    dev.disablePri();
    dev.disablePasid();
    expect(dev.enablePasid(0)).toBe(0);
    expect(bus.removeDevice(dev)).toBe(0);
    expect(bus.addDevice(dev, hw)).toBe(0);
    expect(dev.atc?.size).toBe(2);
    mem.write32(0x10000, 0xcafe);
    expect(dev.read32(0x1000)).toBe(DMA_OK);
    expect(dev.lo).toBe(0xcafe);
    // An invalidation of another PASID or range leaves the entries.
    dev.atsInvalidate(6, 0, 0, false);
    dev.atsInvalidate(5, 3, 1, false);
    expect(dev.atc?.size).toBe(2);
    dev.atsInvalidate(5, 2, 1, false);
    expect(dev.read32(0x2000, 5)).toBe(DMA_FAULT);
    dev.atsInvalidate(NO_PASID, 0, 0, false);
    expect(dev.read32(0x1000)).toBe(DMA_FAULT);
    expect(dev.stats.atsInvalidations).toBe(4);
    // A reset empties it too.
    hw.map(NO_PASID, 1, 0x10);
    expect(dev.read32(0x1000)).toBe(DMA_OK);
    dev.reset();
    expect(dev.atc?.size).toBe(0);
    expect(dev.atsEnabled).toBe(false);
  });

  it("the Global Invalidate bit is ignored when the capability lacks it", () => {
    const with_ = atsMachine();
    const without = atsMachine({ atsGlobalInvalidate: false });
    for (const { hw, dev } of [with_, without]) {
      hw.map(1, 1, 0x10);
      expect(dev.read32(0x1000, 1)).toBe(DMA_OK);
      dev.atsInvalidate(2, 1, 1, true);
    }
    expect(with_.dev.atc?.size).toBe(0);
    expect(without.dev.atc?.size).toBe(1);
  });

  it("an invalidation sent to a device without ATS is counted as unexpected", () => {
    const { dev } = machine();
    dev.atsInvalidate(NO_PASID, 0, 0, false);
    expect(dev.stats.unexpectedInvalidations).toBe(1);
  });
});

function priMachine(options: Partial<DeviceOptions> = {}, reqs = 32) {
  const m = atsMachine({ pri: true, ...options });
  expect(m.dev.enablePri(reqs)).toBe(0);
  return m;
}

describe("PRI", () => {
  it("a page request, its response and the retry complete the DMA", () => {
    const { mem, hw, dev } = priMachine();
    expect(dev.write32(0x7004, 0xabcd, 3)).toBe(DMA_PAGE_REQUESTED);
    expect(dev.lastReason).toBe(DmaReason.PAGE_REQUEST_PENDING);
    expect(hw.pageRequests).toEqual([
      {
        rid: dev.rid,
        sid: dev.sid,
        pasid: 3,
        iovaPfn: 7,
        access: DMA_WRITE,
        privileged: false,
        prgIndex: hw.pageRequests[0].prgIndex,
        last: true,
      },
    ]);
    expect(dev.priOutstanding).toBe(1);
    // Retrying before the response sends nothing new.
    expect(dev.write32(0x7004, 0xabcd, 3)).toBe(DMA_PAGE_REQUESTED);
    expect(hw.pageRequests.length).toBe(1);
    // Software maps the page and answers Success.
    hw.map(3, 7, 0x70);
    dev.prgResponse(3, hw.pageRequests[0].prgIndex, PRG_SUCCESS);
    expect(dev.priOutstanding).toBe(0);
    expect(dev.write32(0x7004, 0xabcd, 3)).toBe(DMA_OK);
    expect(mem.read32(0x70004)).toBe(0xabcd);
    expect(dev.stats).toMatchObject({ pageRequests: 1, responses: 1, unexpectedResponses: 0 });
  });

  it("Invalid Request makes the retry fail; a later DMA asks again", () => {
    const { hw, dev } = priMachine();
    expect(dev.read32(0x7000)).toBe(DMA_PAGE_REQUESTED);
    dev.prgResponse(NO_PASID, hw.pageRequests[0].prgIndex, PRG_INVALID_REQUEST);
    expect(dev.read32(0x7000)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.PRG_INVALID);
    expect(dev.lastFaultKind).toBe(FaultKind.TRANSLATION);
    expect(dev.read32(0x7000)).toBe(DMA_PAGE_REQUESTED);
    expect(hw.pageRequests.length).toBe(2);
  });

  it("Success without a mapping makes the retry fail instead of asking forever", () => {
    const { hw, dev } = priMachine();
    expect(dev.read32(0x7000)).toBe(DMA_PAGE_REQUESTED);
    dev.prgResponse(NO_PASID, hw.pageRequests[0].prgIndex, PRG_SUCCESS);
    expect(dev.read32(0x7000)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.PRG_SUCCESS_NO_ACCESS);
  });

  it("Response Failure fails the retry and halts PRI until it is enabled again", () => {
    const { hw, dev } = priMachine();
    expect(dev.read32(0x7000)).toBe(DMA_PAGE_REQUESTED);
    expect(dev.read32(0x8000)).toBe(DMA_PAGE_REQUESTED);
    const [a, b] = hw.pageRequests.map((r) => r.prgIndex);
    dev.prgResponse(NO_PASID, a, PRG_RESPONSE_FAILURE);
    expect(dev.priResponseFailure).toBe(true);
    expect(dev.read32(0x7000)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.PRG_FAILURE);
    // Halted: no new page requests; the other group's answer is taken but changes nothing.
    expect(dev.read32(0x9000)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.ATS_NO_ACCESS);
    dev.prgResponse(NO_PASID, b, PRG_SUCCESS);
    expect(dev.stats).toMatchObject({ responses: 2, unexpectedResponses: 0 });
    expect(dev.read32(0x8000)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.ATS_NO_ACCESS);
    expect(hw.pageRequests.length).toBe(2);
    dev.disablePri();
    expect(dev.enablePri(32)).toBe(0);
    expect(dev.priResponseFailure).toBe(false);
    expect(dev.read32(0x9000)).toBe(DMA_PAGE_REQUESTED);
  });

  it("a reserved response code is taken as Response Failure", () => {
    const { hw, dev } = priMachine();
    dev.read32(0x7000);
    dev.prgResponse(NO_PASID, hw.pageRequests[0].prgIndex, 0x5);
    expect(dev.priResponseFailure).toBe(true);
  });

  it("a response with nothing outstanding at its index is unexpected", () => {
    const { hw, dev } = priMachine({ priPasidRequired: true });
    expect(dev.read32(0x7000, 2)).toBe(DMA_PAGE_REQUESTED);
    const i = hw.pageRequests[0].prgIndex;
    dev.prgResponse(2, (i + 1) % PRG_INDEX_COUNT, PRG_SUCCESS); // nothing there
    dev.prgResponse(2, PRG_INDEX_COUNT, PRG_SUCCESS); // not a 9-bit index
    dev.prgResponse(3, i, PRG_SUCCESS); // another PASID
    dev.prgResponse(NO_PASID, i, PRG_SUCCESS); // PASID required but missing
    expect(dev.stats).toMatchObject({ responses: 0, unexpectedResponses: 4 });
    expect(dev.priUnexpectedPrgIndex).toBe(true);
    dev.prgResponse(2, i, PRG_SUCCESS);
    dev.prgResponse(2, i, PRG_SUCCESS); // a second answer to the same group
    expect(dev.stats).toMatchObject({ responses: 1, unexpectedResponses: 5 });
  });

  it("without PRG Response PASID Required, a response may omit the PASID", () => {
    const { hw, dev } = priMachine();
    dev.read32(0x7000, 2);
    dev.prgResponse(NO_PASID, hw.pageRequests[0].prgIndex, PRG_SUCCESS);
    expect(dev.stats.responses).toBe(1);
  });

  it("never has more page requests in flight than allocated: the extra DMA faults, nothing sent", () => {
    const { hw, dev } = priMachine({ priOutstanding: 3 }, 100);
    expect(dev.priAllocation).toBe(3);
    for (let p = 1; p <= 3; p++) expect(dev.read32(p * PAGE)).toBe(DMA_PAGE_REQUESTED);
    expect(dev.read32(4 * PAGE)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.PRI_NO_CREDIT);
    expect(dev.lastFaultKind).toBe(FaultKind.TRANSLATION);
    expect(hw.pageRequests.length).toBe(3);
    expect(dev.stats.priThrottled).toBe(1);
    // A response returns the credit.
    dev.prgResponse(NO_PASID, hw.pageRequests[1].prgIndex, PRG_INVALID_REQUEST);
    expect(dev.read32(4 * PAGE)).toBe(DMA_PAGE_REQUESTED);
    expect(hw.pageRequests.length).toBe(4);
    // The allocation the kernel asked for, when below the capacity, is the limit.
    const small = priMachine({}, 1);
    expect(small.dev.read32(PAGE)).toBe(DMA_PAGE_REQUESTED);
    expect(small.dev.read32(2 * PAGE)).toBe(DMA_FAULT);
  });

  it("uses each of the 512 PRG indices once before reusing one, never one in flight", () => {
    const { hw, dev } = priMachine({ priOutstanding: 1000 }, 1000);
    for (let p = 0; p < PRG_INDEX_COUNT; p++) {
      expect(dev.read32(p * PAGE)).toBe(DMA_PAGE_REQUESTED);
    }
    const used = hw.pageRequests.map((r) => r.prgIndex);
    expect(new Set(used).size).toBe(PRG_INDEX_COUNT);
    expect(Math.min(...used)).toBe(0);
    expect(Math.max(...used)).toBe(PRG_INDEX_COUNT - 1);
    // All 512 indices in flight: the next request cannot be sent.
    expect(dev.read32(PRG_INDEX_COUNT * PAGE)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.PRI_NO_CREDIT);
    // Free two; the next requests use exactly those.
    dev.prgResponse(NO_PASID, used[100], PRG_INVALID_REQUEST);
    dev.prgResponse(NO_PASID, used[7], PRG_INVALID_REQUEST);
    expect(dev.read32(600 * PAGE)).toBe(DMA_PAGE_REQUESTED);
    expect(dev.read32(601 * PAGE)).toBe(DMA_PAGE_REQUESTED);
    expect(new Set(hw.pageRequests.slice(-2).map((r) => r.prgIndex))).toEqual(
      new Set([used[100], used[7]]),
    );
    expect(dev.read32(602 * PAGE)).toBe(DMA_FAULT);
  });

  it("an answer the IOMMU gives inside pageRequest (auto-response) is kept for the retry", () => {
    const { hw, dev } = priMachine();
    hw.autoRespond = PRG_INVALID_REQUEST;
    expect(dev.read32(0x7000)).toBe(DMA_PAGE_REQUESTED);
    expect(dev.stats).toMatchObject({ pageRequests: 1, responses: 1 });
    expect(dev.read32(0x7000)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.PRG_INVALID);
  });

  it("disabling PRI stops new requests; the outstanding ones keep PRI from being Stopped", () => {
    const { hw, dev } = priMachine();
    expect(dev.read32(0x7000)).toBe(DMA_PAGE_REQUESTED);
    dev.disablePri();
    expect(dev.priStopped).toBe(false);
    expect(dev.read32(0x8000)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.ATS_NO_ACCESS);
    expect(dev.enablePri(32)).toBe("EBUSY");
    dev.prgResponse(NO_PASID, hw.pageRequests[0].prgIndex, PRG_SUCCESS);
    expect(dev.priStopped).toBe(true);
    expect(dev.enablePri(32)).toBe(0);
  });

  it("resetPri forgets outstanding groups: a late response is unexpected", () => {
    const { hw, dev } = priMachine();
    dev.read32(0x7000);
    expect(dev.resetPri()).toBe("EBUSY");
    dev.disablePri();
    expect(dev.resetPri()).toBe(0);
    expect(dev.priStopped).toBe(true);
    dev.prgResponse(NO_PASID, hw.pageRequests[0].prgIndex, PRG_SUCCESS);
    expect(dev.stats.unexpectedResponses).toBe(1);
  });

  it("a device reset forgets outstanding groups too", () => {
    const { hw, dev } = priMachine();
    dev.read32(0x7000);
    dev.reset();
    expect(dev.priEnabled).toBe(false);
    dev.prgResponse(NO_PASID, hw.pageRequests[0].prgIndex, PRG_SUCCESS);
    expect(dev.stats.unexpectedResponses).toBe(1);
  });
});

describe("stalls", () => {
  function stallMachine() {
    const m = machine({ name: "plat0", rid: 0x40, isPci: false, stall: true, pasidBits: 2 });
    m.hw.stall = true;
    return m;
  }

  it("a stalled page stops the DMA with DMA_STALLED; a resume with retry lets the retry through", () => {
    const { mem, hw, dev } = stallMachine();
    expect(dev.canStall).toBe(true);
    hw.map(NO_PASID, 0, 0x10);
    const src = bytes(2 * PAGE);
    expect(dev.write(0, src)).toBe(DMA_STALLED);
    expect(dev.lastBytes).toBe(PAGE);
    expect(dev.lastFaultPfn).toBe(1);
    expect(dev.lastFaultKind).toBe(FaultKind.TRANSLATION);
    expect(dev.stats.stalls).toBe(1);
    expect(dev.stallsPending).toBe(1);
    // Retrying while stalled asks the IOMMU nothing more for that page.
    const asked = hw.log.length;
    expect(dev.write(PAGE, src.subarray(PAGE))).toBe(DMA_STALLED);
    expect(dev.lastReason).toBe(DmaReason.STALL_PENDING);
    expect(hw.log.length).toBe(asked);
    hw.map(NO_PASID, 1, 0x11);
    dev.stallResume(100, true);
    expect(dev.stallsPending).toBe(0);
    expect(dev.write(PAGE, src.subarray(PAGE))).toBe(DMA_OK);
    expect(memBytes(mem, 0x11000, PAGE)).toEqual(src.subarray(PAGE));
    expect(dev.stats).toMatchObject({ stallRetries: 1, stallTerminates: 0, unexpectedResumes: 0 });
  });

  it("a terminated stall fails the retry; the next DMA goes to the IOMMU again", () => {
    const { hw, dev } = stallMachine();
    expect(dev.read32(0x3000, 1)).toBe(DMA_STALLED);
    dev.stallResume(100, false);
    expect(dev.read32(0x3000, 1)).toBe(DMA_FAULT);
    expect(dev.lastReason).toBe(DmaReason.STALL_TERMINATED);
    expect(dev.read32(0x3000, 1)).toBe(DMA_STALLED);
    expect(dev.stats).toMatchObject({ stalls: 2, stallTerminates: 1 });
    expect(hw.log.length).toBe(2);
  });

  it("a resume for an unknown tag, or a second resume, is unexpected", () => {
    const { dev } = stallMachine();
    dev.stallResume(5, true);
    expect(dev.read32(0, NO_PASID)).toBe(DMA_STALLED);
    dev.stallResume(100, true);
    dev.stallResume(100, false);
    expect(dev.stats.unexpectedResumes).toBe(2);
  });
});

describe("capabilities, as the kernel enables them", () => {
  it("pci_enable_ats: EINVAL without the capability or below 4 KiB, EBUSY when enabled", () => {
    expect(machine().dev.enableAts(12)).toBe("EINVAL");
    const { dev } = machine({ ats: true });
    expect(dev.enableAts(11)).toBe("EINVAL");
    expect(dev.enableAts(12)).toBe(0);
    expect(dev.atsStu).toBe(12);
    expect(dev.enableAts(12)).toBe("EBUSY");
    expect(dev.stats.warnings).toBe(1);
    dev.disableAts();
    dev.disableAts();
    expect(dev.stats.warnings).toBe(2);
    expect(dev.atsQueueDepth()).toBe(32);
    expect(machine().dev.atsQueueDepth()).toBe("EINVAL");
  });

  it("pci_enable_pri: EINVAL without the capability, EBUSY when enabled, caps the allocation", () => {
    expect(machine({ ats: true }).dev.enablePri(8)).toBe("EINVAL");
    const { dev } = machine({ ats: true, pri: true, priOutstanding: 16 });
    expect(dev.priStopped).toBe(true);
    expect(dev.enablePri(64)).toBe(0);
    expect(dev.priAllocation).toBe(16);
    expect(dev.priStopped).toBe(false);
    expect(dev.enablePri(8)).toBe("EBUSY");
    expect(dev.resetPri()).toBe("EBUSY");
    dev.disablePri();
    expect(dev.enablePri(8)).toBe(0);
    expect(dev.priAllocation).toBe(8);
    expect(machine({ ats: true }).dev.resetPri()).toBe("EINVAL");
  });

  it("pci_enable_pasid: EINVAL without the capability, prefixes or a feature; EBUSY when enabled", () => {
    expect(machine().dev.enablePasid(0)).toBe("EINVAL");
    expect(machine({ pasidBits: 4, eetlpPrefixPath: false }).dev.enablePasid(0)).toBe("EINVAL");
    const { dev } = machine({ pasidBits: 4, pasidFeatures: PCI_PASID_CAP_EXEC });
    expect(dev.pasidFeaturesOrErrno()).toBe(PCI_PASID_CAP_EXEC);
    expect(dev.enablePasid(PCI_PASID_CAP_PRIV)).toBe("EINVAL");
    expect(dev.enablePasid(PCI_PASID_CAP_EXEC)).toBe(0);
    expect(dev.pasidFeatures).toBe(PCI_PASID_CAP_EXEC);
    expect(dev.enablePasid(0)).toBe("EBUSY");
    dev.disablePasid();
    expect([dev.pasidEnabled, dev.pasidFeatures]).toEqual([false, 0]);
    expect(machine().dev.pasidFeaturesOrErrno()).toBe("EINVAL");
    const plat = machine({ isPci: false, rid: 9, pasidBits: 4 }).dev;
    expect(plat.enablePasid(0)).toBe("EINVAL");
    expect(plat.pasidEnabled).toBe(true);
  });

  it("Device.create rejects inconsistent options with EINVAL; the constructor calls them a bug", () => {
    const bad: DeviceOptions[] = [
      { name: "", rid: 0 },
      { name: "a", rid: 0x10000 },
      { name: "a", rid: -1 },
      { name: "a", rid: 0, sid: -1 },
      { name: "a", rid: 0, pasidBits: 21 },
      { name: "a", rid: 0, pri: true },
      { name: "a", rid: 0, isPci: false, ats: true },
      { name: "a", rid: 0, pasidFeatures: PCI_PASID_CAP_EXEC },
      { name: "a", rid: 0, ats: true, atcEntries: 0 },
      { name: "a", rid: 0, ats: true, pri: true, priOutstanding: 0 },
    ];
    for (const o of bad) {
      expect(Device.create(o), JSON.stringify(o)).toBe("EINVAL");
      expect(() => new Device(o)).toThrow(ModelBug);
    }
    const ok = Device.create({ name: "smmu-client", rid: 0x1234_5678, isPci: false, sid: 7 });
    expect(ok).toBeInstanceOf(Device);
    expect(ok instanceof Device && [ok.rid, ok.sid]).toEqual([0x1234_5678, 7]);
  });

  it("leaves the kernel's slots empty", () => {
    const { dev } = machine();
    expect(dev.iommu).toBeNull();
  });
});

describe("DmaPageObserver", () => {
  function watch(dev: Device) {
    const pages: [number, number, number, boolean, number, boolean][] = [];
    const faults: [number, number, number, boolean][] = [];
    dev.observer = {
      dmaPage: (d, pasid, pfn, access, priv, pa, viaAtc) => {
        expect(d).toBe(dev);
        pages.push([pasid, pfn, access, priv, pa, viaAtc]);
      },
      dmaFault: (_d, pasid, pfn, access, _priv, viaAtc) =>
        faults.push([pasid, pfn, access, viaAtc]),
    };
    return { pages, faults };
  }

  it("sees every page of a DMA with the physical address it reaches, before memory is touched", () => {
    const { hw, dev } = machine();
    hw.map(NO_PASID, 0x10, 0x500);
    hw.map(NO_PASID, 0x11, 0x700);
    const { pages, faults } = watch(dev);
    expect(dev.write(0x10ff0, bytes(32))).toBe(DMA_OK);
    expect(pages).toEqual([
      [NO_PASID, 0x10, DMA_WRITE, false, 0x500ff0, false],
      [NO_PASID, 0x11, DMA_WRITE, false, 0x700000, false],
    ]);
    expect(faults).toEqual([]);
  });

  it("says when the ATC gave the translation, and reports the page that faulted", () => {
    const { hw, dev } = atsMachine();
    hw.map(NO_PASID, 0x10, 0x500);
    const { pages, faults } = watch(dev);
    expect(dev.read32(0x10004)).toBe(DMA_OK);
    expect(dev.read32(0x10008)).toBe(DMA_OK);
    expect(pages.map((p) => p[5])).toEqual([false, true]);
    expect(dev.read32(0x20000)).toBe(DMA_FAULT);
    expect(faults).toEqual([[NO_PASID, 0x20, DMA_READ, false]]);
    expect(pages).toHaveLength(2);
  });

  it("an observer without dmaFault only sees pages; none at all costs nothing", () => {
    const { hw, dev } = machine();
    hw.map(NO_PASID, 0x10, 0x500);
    const seen: number[] = [];
    dev.observer = { dmaPage: (_d, _p, pfn) => seen.push(pfn) };
    expect(dev.read32(0x30000)).toBe(DMA_FAULT);
    expect(dev.read32(0x10000)).toBe(DMA_OK);
    expect(seen).toEqual([0x10]);
    dev.observer = null;
    expect(dev.read32(0x10000)).toBe(DMA_OK);
    expect(seen).toEqual([0x10]);
  });
});
