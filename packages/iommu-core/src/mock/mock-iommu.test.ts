// Tests of the mock IOMMU driver through the core: probe, attach order, flushes, faults, leaks.

import { beforeEach, describe, expect, test } from "vitest";
import { type Device, type DeviceOptions, DMA_FAULT, DMA_OK } from "../device/device.js";
import {
  AT_UNTRANSLATED,
  DMA_READ,
  FaultKind,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  type TranslationResult,
} from "../device/iommu-hardware.js";
import {
  iommuDmaDisablePasid,
  iommuDmaEnablePasid,
  iommuDmaMapPhys,
  iommuGetDmaDomain,
} from "../iommu/dma-iommu.js";
import { IOMMU_READ, IOMMU_WRITE } from "../iommu/io-pgtable.js";
import {
  iommuAttachDevice,
  iommuDetachDevice,
  iommuDomainFree,
  iommuGroupGet,
  iommuGroupReplaceDomain,
  iommuPagingDomainAlloc,
} from "../iommu/iommu-group.js";
import { iommuMap, iommuUnmap } from "../iommu/iommu-map.js";
import { IommuSubsystem } from "../iommu/iommu-subsystem.js";
import {
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuReplaceDevicePasid,
} from "../iommu/pasid.js";
import { FrameAllocator } from "../platform/frame-allocator.js";
import { mmioRead64 } from "../platform/mmio.js";
import { PhysMemory } from "../platform/phys-memory.js";
import type { TraceEvent } from "../platform/trace.js";
import { MockMachine } from "../testing/mock-machine.js";
import {
  MOCK_CTRL_EN,
  MOCK_CTRL_FQ_EN,
  MOCK_CTRL_PRQ_EN,
  MOCK_DTE_PASID_EN,
  MOCK_DTE_SIZE,
  MOCK_ENTRY_MODE_MASK,
  MOCK_ENTRY_MODE_SHIFT,
  MOCK_ENTRY_V,
  MOCK_MODE_BLOCKED,
  MOCK_MODE_TRANSLATE,
  MOCK_PASID_ENTRY_SIZE,
  MOCK_REG,
  MOCK_STATUS_EN,
  MOCK_STATUS_FQ_OVF,
  MockFault,
  mockEntryAddr,
} from "./mock-format.js";
import { type MockDomain, MockIommuDriver } from "./mock-iommu.js";
import { MockIommuHw } from "./mock-iommu-hw.js";

const SZ_4K = 0x1000;
const RW = IOMMU_READ | IOMMU_WRITE;
const IOVA = 0x4000_0000;
const PA = 0x1_0000_0000;

function addDevice(
  m: MockMachine,
  name: string,
  rid: number,
  extra: Partial<DeviceOptions> = {},
): Device {
  const dev = m.addDevice({ name, rid, ...extra });
  if (typeof dev === "string") throw new Error(`addDevice ${name}: ${dev}`);
  return dev;
}

function pagingDomain(dev: Device): MockDomain {
  const d = iommuPagingDomainAlloc(dev);
  if (typeof d === "string") throw new Error(d);
  return d as MockDomain;
}

/** Physical address of the DTE of `rid`. */
function dteOf(m: MockMachine, rid: number): number {
  return mmioRead64(m.hw, MOCK_REG.DT_BASE_LO) + rid * MOCK_DTE_SIZE;
}

/** The DTE of `rid` decoded: V, MODE, root table, DID, PASID_EN, PTS, PASID table. */
function readDte(m: MockMachine, rid: number) {
  const at = dteOf(m, rid);
  const q0 = m.mem.read64(at);
  const root = mockEntryAddr(q0, m.mem.hi);
  const q1 = m.mem.read64(at + 8);
  const pts = m.mem.hi & 0x1f;
  const q2 = m.mem.read64(at + 16);
  return {
    v: (q0 & MOCK_ENTRY_V) !== 0,
    mode: (q0 & MOCK_ENTRY_MODE_MASK) >>> MOCK_ENTRY_MODE_SHIFT,
    root,
    did: q1 & 0xffff,
    pasidEn: (q1 & MOCK_DTE_PASID_EN) !== 0,
    pts,
    pasidTable: mockEntryAddr(q2, m.mem.hi),
  };
}

/** What a fresh walk of the tables gives for a read of `iova` by `rid`, IOTLB aside. */
function walk(m: MockMachine, rid: number, iova: number, pasid = NO_PASID): TranslationResult {
  const req = newTranslationRequest();
  req.rid = rid;
  req.pasid = pasid;
  req.iovaPfn = Math.floor(iova / SZ_4K);
  req.access = DMA_READ;
  req.at = AT_UNTRANSLATED;
  const out = newTranslationResult();
  m.hw.translateUncached(req, out);
  return out;
}

describe("init", () => {
  test("programs the device table, both queues, then turns translation on, and registers the IOMMU", () => {
    const m = new MockMachine();
    const hw = m.hw;
    expect(hw.read32(MOCK_REG.CTRL)).toBe(MOCK_CTRL_EN | MOCK_CTRL_FQ_EN | MOCK_CTRL_PRQ_EN);
    expect(hw.read32(MOCK_REG.STATUS) & MOCK_STATUS_EN).toBe(MOCK_STATUS_EN);
    const dt = mmioRead64(hw, MOCK_REG.DT_BASE_LO);
    const fq = mmioRead64(hw, MOCK_REG.FQ_BASE_LO);
    const prq = mmioRead64(hw, MOCK_REG.PRQ_BASE_LO);
    // 65536 DTEs of 32 bytes: 2 MiB; 256 records of 32 bytes per queue: 8 KiB each.
    expect(m.frames.isAllocated(dt)).toBe(true);
    expect(dt % 0x20_0000).toBe(0);
    expect(m.frames.isAllocated(fq)).toBe(true);
    expect(m.frames.isAllocated(prq)).toBe(true);
    expect(hw.read32(MOCK_REG.FQ_SIZE)).toBe(8);
    expect(hw.read32(MOCK_REG.PRQ_SIZE)).toBe(8);
    expect(m.frames.liveFrames).toBe(512 + 2 + 2);
    expect(m.subsys.iommus).toContain(m.driver.iommu);
    expect(m.driver.iommu.maxPasids).toBe(2 ** 20);
  });

  test("translation is turned on last, after the tables and queues are programmed", () => {
    const mem = new PhysMemory({ paBits: 48 });
    const hw = new MockIommuHw({ mem });
    const writes: number[] = [];
    // The registers as the driver sees them, with each write noted on its way to the hardware.
    const mmio = {
      read32: (offset: number) => hw.read32(offset),
      write32: (offset: number, value: number) => {
        writes.push(offset);
        hw.write32(offset, value);
      },
    };
    const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x40_0000 });
    const driver = new MockIommuDriver({ subsys: new IommuSubsystem(), mem, frames, mmio });
    expect(driver.init()).toBe(0);
    expect(writes.at(-1)).toBe(MOCK_REG.CTRL);
    expect(writes.filter((w) => w === MOCK_REG.CTRL)).toHaveLength(1);
    for (const reg of [
      MOCK_REG.DT_BASE_LO,
      MOCK_REG.FQ_BASE_LO,
      MOCK_REG.FQ_SIZE,
      MOCK_REG.PRQ_BASE_LO,
      MOCK_REG.PRQ_SIZE,
    ]) {
      expect(writes).toContain(reg);
    }
  });

  test("no frames for the device table: ENOMEM, and translation stays off", () => {
    const mem = new PhysMemory({ paBits: 48 });
    const hw = new MockIommuHw({ mem });
    const driver = new MockIommuDriver({
      subsys: new IommuSubsystem(),
      mem,
      frames: new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x10_0000 }),
      mmio: hw,
    });
    expect(driver.init()).toBe("ENOMEM");
    expect(hw.read32(MOCK_REG.CTRL)).toBe(0);
  });
});

describe("probe", () => {
  test("probe writes a blocking DTE; then the core's default domain takes the device over", () => {
    const m = new MockMachine();
    const rid = 0x42;
    const dte = dteOf(m, rid);
    const modes: number[] = [];
    m.mem.onWrite = (pa) => {
      if (pa === dte)
        modes.push((m.mem.read64(dte) & MOCK_ENTRY_MODE_MASK) >>> MOCK_ENTRY_MODE_SHIFT);
    };
    const dev = addDevice(m, "nic", rid);
    m.mem.onWrite = null;
    expect(modes).toEqual([MOCK_MODE_BLOCKED, MOCK_MODE_TRANSLATE]);
    const def = iommuGetDmaDomain(dev) as MockDomain;
    expect(readDte(m, rid)).toMatchObject({
      v: true,
      mode: MOCK_MODE_TRANSLATE,
      root: def.pgtable.rootPa,
      did: def.did,
      pasidEn: false,
    });
  });

  test("a PASID-capable device gets a PASID table sized to its PASID width", () => {
    const m = new MockMachine();
    const dev = addDevice(m, "dsa", 0x43, { pasidBits: 8 });
    const dte = readDte(m, 0x43);
    expect(dte).toMatchObject({ pasidEn: true, pts: 8 });
    expect(m.frames.isAllocated(dte.pasidTable)).toBe(true);
    expect(dev.pasidEnabled).toBe(true);
    expect(dev.iommu?.maxPasids).toBe(256);
  });

  test("release clears the DTE: the RID faults as unknown", () => {
    const m = new MockMachine();
    const dev = addDevice(m, "nic", 0x44);
    expect(m.removeDevice(dev)).toBe(0);
    expect(readDte(m, 0x44).v).toBe(false);
    expect(walk(m, 0x44, IOVA).code).toBe(MockFault.DTE_INVALID);
  });
});

describe("attach and detach", () => {
  let m: MockMachine;
  let dev: Device;
  let domain: MockDomain;
  beforeEach(() => {
    m = new MockMachine();
    dev = addDevice(m, "nic", 0x10);
    domain = pagingDomain(dev);
    expect(iommuMap(domain, IOVA, PA, SZ_4K, RW)).toBe(0);
  });

  test("attach writes the entry first and invalidates after", () => {
    const dte = dteOf(m, dev.rid);
    const invalidationsAtStores: number[] = [];
    m.mem.onWrite = (pa) => {
      if (pa >= dte && pa < dte + MOCK_DTE_SIZE)
        invalidationsAtStores.push(m.hw.stats.invalidations);
    };
    const before = m.hw.stats.invalidations;
    expect(iommuAttachDevice(domain, dev)).toBe(0);
    m.mem.onWrite = null;
    expect(invalidationsAtStores.length).toBeGreaterThan(0);
    expect(invalidationsAtStores.every((n) => n === before)).toBe(true);
    expect(m.hw.stats.invalidations).toBeGreaterThan(before);
    expect(readDte(m, dev.rid)).toMatchObject({
      mode: MOCK_MODE_TRANSLATE,
      root: domain.pgtable.rootPa,
      did: domain.did,
    });
    expect(dev.read32(IOVA)).toBe(DMA_OK);
  });

  test("after detach nothing of the old domain is cached: its IOTLB entries are gone, DMA faults", () => {
    expect(iommuAttachDevice(domain, dev)).toBe(0);
    expect(dev.read32(IOVA)).toBe(DMA_OK);
    expect(m.hw.iotlbHas(domain.did, NO_PASID, IOVA / SZ_4K)).toBe(true);
    expect(iommuDetachDevice(domain, dev)).toBe(0);
    expect(m.hw.iotlbHas(domain.did, NO_PASID, IOVA / SZ_4K)).toBe(false);
    expect(dev.read32(IOVA)).toBe(DMA_FAULT);
    expect(dev.lastFaultCode).toBe(MockFault.NOT_PRESENT);
  });

  /** Run `update` with a DMA read of IOVA by `dev` after every store to [at, at + bytes). */
  function sampled(
    m: MockMachine,
    dev: Device,
    at: number,
    bytes: number,
    pasid: number,
    update: () => unknown,
  ): unknown {
    let busy = false;
    m.mem.onWrite = (pa) => {
      if (busy || pa < at || pa >= at + bytes) return;
      busy = true;
      dev.read32(IOVA, pasid); // the old or the new translation: either is fine mid-update
      busy = false;
    };
    try {
      return update();
    } finally {
      m.mem.onWrite = null;
    }
  }

  test("DMA sampled between the stores of a replace or detach leaves nothing stale once it returns", () => {
    const other = pagingDomain(dev);
    const def = iommuGetDmaDomain(dev) as MockDomain;
    const group = iommuGroupGet(dev);
    if (group === null) throw new Error("no group");
    const dte = dteOf(m, dev.rid);
    const cases: [string, MockDomain, () => unknown][] = [
      ["replace", other, () => iommuGroupReplaceDomain(group, other)],
      ["detach", def, () => iommuDetachDevice(domain, dev)],
    ];
    for (const [name, next, update] of cases) {
      expect(iommuGroupReplaceDomain(group, domain)).toBe(0);
      expect(dev.read32(IOVA)).toBe(DMA_OK);
      expect(sampled(m, dev, dte, MOCK_DTE_SIZE, NO_PASID, update), name).toBe(0);
      expect(readDte(m, dev.rid).did, name).toBe(next.did);
      expect(dev.read32(IOVA), name).toBe(DMA_FAULT);
      expect(m.hw.iotlbHas(next.did, NO_PASID, IOVA / SZ_4K), name).toBe(false);
    }
  });

  test("a switch to identity leaves nothing cached under the DID 0 that identity entries carry", () => {
    const group = iommuGroupGet(dev);
    if (group === null) throw new Error("no group");
    expect(iommuGroupReplaceDomain(group, domain)).toBe(0);
    expect(dev.read32(IOVA)).toBe(DMA_OK);
    const update = () => iommuGroupReplaceDomain(group, m.driver.identityDomain);
    expect(sampled(m, dev, dteOf(m, dev.rid), MOCK_DTE_SIZE, NO_PASID, update)).toBe(0);
    expect(m.hw.iotlbEntries().filter((e) => e.did === 0)).toEqual([]);
  });

  test("DMA sampled between the stores of a PASID replace leaves nothing stale once it returns", () => {
    const dev = addDevice(m, "dsa", 0x11, { pasidBits: 8 });
    const domain = pagingDomain(dev);
    const other = pagingDomain(dev);
    expect(iommuMap(domain, IOVA, PA, SZ_4K, RW)).toBe(0);
    expect(iommuAttachDevicePasid(domain, dev, 6, "h")).toBe(0);
    expect(dev.read32(IOVA, 6)).toBe(DMA_OK);
    const entry = readDte(m, dev.rid).pasidTable + 6 * MOCK_PASID_ENTRY_SIZE;
    const update = () => iommuReplaceDevicePasid(other, dev, 6, "h");
    expect(sampled(m, dev, entry, MOCK_PASID_ENTRY_SIZE, 6, update)).toBe(0);
    expect(dev.read32(IOVA, 6)).toBe(DMA_FAULT);
    expect(m.hw.iotlbHas(other.did, 6, IOVA / SZ_4K)).toBe(false);
  });
});

describe("PASID teardown", () => {
  let m: MockMachine;
  let dev: Device;
  let domain: MockDomain;
  const PASID = 5;
  beforeEach(() => {
    m = new MockMachine();
    dev = addDevice(m, "dsa", 0x20, { pasidBits: 8 });
    domain = pagingDomain(dev);
    expect(iommuMap(domain, IOVA, PA, SZ_4K, RW)).toBe(0);
    expect(iommuAttachDevicePasid(domain, dev, PASID)).toBe(0);
    expect(dev.read32(IOVA, PASID)).toBe(DMA_OK);
    expect(m.hw.iotlbHas(domain.did, PASID, IOVA / SZ_4K)).toBe(true);
  });

  test("detaching a PASID clears its entry and drops the IOTLB entries of (DID, PASID)", () => {
    expect(iommuDetachDevicePasid(domain, dev, PASID)).toBe(0);
    expect(m.hw.iotlbHas(domain.did, PASID, IOVA / SZ_4K)).toBe(false);
    expect(dev.read32(IOVA, PASID)).toBe(DMA_FAULT);
    expect([dev.lastFaultKind, dev.lastFaultCode]).toEqual([
      FaultKind.BAD_CONFIG,
      MockFault.PASID_ENTRY_INVALID,
    ]);
  });

  /** Detach, unmap while detached, attach again: DMA must not see the unmapped page. */
  function detachUnmapReattach(): number {
    expect(iommuDetachDevicePasid(domain, dev, PASID)).toBe(0);
    expect(iommuUnmap(domain, IOVA, SZ_4K)).toBe(SZ_4K);
    expect(iommuAttachDevicePasid(domain, dev, PASID)).toBe(0);
    return dev.read32(IOVA, PASID);
  }

  test("with the PASID flush, an unmap made while detached is seen after reattach", () => {
    expect(detachUnmapReattach()).toBe(DMA_FAULT);
  });

  test("inject.skipPasidFlush leaves the (DID, PASID) entries behind: the unmapped page stays reachable", () => {
    m.driver.inject.skipPasidFlush = true;
    expect(detachUnmapReattach()).toBe(DMA_OK);
  });
});

describe("fault injection", () => {
  let m: MockMachine;
  let dev: Device;
  let domain: MockDomain;
  beforeEach(() => {
    m = new MockMachine();
    dev = addDevice(m, "nic", 0x10);
    domain = pagingDomain(dev);
    expect(iommuAttachDevice(domain, dev)).toBe(0);
  });

  function mapWarmUnmap(): number {
    expect(iommuMap(domain, IOVA, PA, SZ_4K, RW)).toBe(0);
    expect(dev.read32(IOVA)).toBe(DMA_OK);
    expect(iommuUnmap(domain, IOVA, SZ_4K)).toBe(SZ_4K);
    return dev.read32(IOVA);
  }

  test("the normal unmap invalidates: DMA faults afterwards", () => {
    expect(mapWarmUnmap()).toBe(DMA_FAULT);
    expect(m.driver.invalidations.range).toBe(1);
  });

  test("inject.skipIotlbFlush makes a stale translation survive the unmap", () => {
    m.driver.inject.skipIotlbFlush = true;
    expect(mapWarmUnmap()).toBe(DMA_OK);
    expect(walk(m, dev.rid, IOVA).code).toBe(MockFault.NOT_PRESENT);
    expect(m.driver.invalidations.range).toBe(0);
  });
});

describe("fault queue", () => {
  let m: MockMachine;
  let dev: Device;
  beforeEach(() => {
    m = new MockMachine();
    dev = addDevice(m, "dsa", 0x31, { pasidBits: 8 });
  });

  test("processFaults reads each record into faultLog and advances the head", () => {
    expect(dev.write32(IOVA + 0x18, 1)).toBe(DMA_FAULT);
    expect(m.driver.processFaults()).toBe(1);
    expect(m.driver.faultLog).toEqual([
      {
        rid: 0x31,
        pasid: -1,
        iova: IOVA,
        kind: FaultKind.TRANSLATION,
        code: MockFault.NOT_PRESENT,
        write: true,
      },
    ]);
    expect(m.hw.read32(MOCK_REG.FQ_HEAD)).toBe(m.hw.read32(MOCK_REG.FQ_TAIL));
    expect(m.driver.processFaults()).toBe(0);
    expect(dev.read32(2 ** 40, 9)).toBe(DMA_FAULT);
    expect(m.processQueues()).toBe(1);
    expect(m.driver.faultLog[1]).toEqual({
      rid: 0x31,
      pasid: 9,
      iova: 2 ** 40,
      kind: FaultKind.BAD_CONFIG,
      code: MockFault.PASID_ENTRY_INVALID,
      write: false,
    });
  });

  test("records come out in order across the wrap of the queue", () => {
    for (let batch = 0; batch < 3; batch++) {
      for (let i = 0; i < 100; i++) dev.read32(IOVA + (batch * 100 + i) * SZ_4K);
      expect(m.driver.processFaults()).toBe(100);
    }
    expect(m.driver.faultLog.map((f) => f.iova)).toEqual(
      Array.from({ length: 300 }, (_, i) => IOVA + i * SZ_4K),
    );
  });

  test("faults beyond the queue's 255 records are dropped and flagged until software catches up", () => {
    for (let i = 0; i < 300; i++) dev.read32(IOVA + i * SZ_4K);
    expect(m.hw.stats.faultsDropped).toBe(45);
    expect(m.hw.read32(MOCK_REG.STATUS) & MOCK_STATUS_FQ_OVF).toBe(MOCK_STATUS_FQ_OVF);
    expect(m.driver.processFaults()).toBe(255);
    expect(m.driver.faultLog.at(-1)?.iova).toBe(IOVA + 254 * SZ_4K);
  });
});

describe("domain IDs and frames", () => {
  test("freeing a domain frees its DID and invalidates it, so a reuse finds nothing cached", () => {
    const m = new MockMachine();
    const dev = addDevice(m, "dsa", 0x50, { pasidBits: 8 });
    const base = m.driver.didsInUse;
    const a = pagingDomain(dev);
    expect(m.driver.didsInUse).toBe(base + 1);
    expect(iommuMap(a, IOVA, PA, SZ_4K, RW)).toBe(0);
    expect(iommuAttachDevicePasid(a, dev, 3)).toBe(0);
    expect(dev.read32(IOVA, 3)).toBe(DMA_OK);
    // A missed PASID flush leaves (DID, 3) cached; the domain's free must still clear it.
    m.driver.inject.skipPasidFlush = true;
    expect(iommuDetachDevicePasid(a, dev, 3)).toBe(0);
    expect(m.hw.iotlbHas(a.did, 3, IOVA / SZ_4K)).toBe(true);
    m.driver.inject.skipPasidFlush = false;
    const did = a.did;
    iommuDomainFree(a);
    expect(m.driver.didsInUse).toBe(base);
    expect(m.hw.iotlbEntries().filter((e) => e.did === did)).toEqual([]);
    const b = pagingDomain(dev);
    expect(b.did).toBe(did);
    expect(iommuAttachDevicePasid(b, dev, 3)).toBe(0);
    expect(dev.read32(IOVA, 3)).toBe(DMA_FAULT);
    iommuDetachDevicePasid(b, dev, 3);
    iommuDomainFree(b);
  });

  test("after every device is removed, frames and DIDs are back to the baseline", () => {
    const m = new MockMachine();
    const baseline = m.frames.liveFrames;
    const devs = [
      addDevice(m, "nic", 0x10),
      addDevice(m, "dsa", 0x20, { pasidBits: 8 }),
      addDevice(m, "gpu", 0x30, { ats: true, pri: true, pasidBits: 8 }),
    ];
    const domains: MockDomain[] = [];
    for (const dev of devs) {
      const dma = iommuDmaMapPhys(dev, PA, 3 * SZ_4K, 0);
      if (typeof dma === "string") throw new Error(dma);
      expect(dev.read32(dma)).toBe(DMA_OK);
      const d = pagingDomain(dev);
      domains.push(d);
      expect(iommuMap(d, IOVA, PA, 2 * 0x20_0000 + SZ_4K, RW)).toBe(0);
    }
    expect(iommuAttachDevice(domains[0], devs[0])).toBe(0);
    expect(devs[0].read32(IOVA)).toBe(DMA_OK);
    expect(iommuAttachDevicePasid(domains[1], devs[1], 7)).toBe(0);
    expect(devs[1].read32(IOVA, 7)).toBe(DMA_OK);
    expect(typeof iommuDmaEnablePasid(devs[2])).toBe("number");
    expect(iommuAttachDevicePasid(domains[2], devs[2], 9)).toBe(0);
    expect(devs[2].read32(IOVA + SZ_4K, 9)).toBe(DMA_OK);
    expect(m.frames.liveFrames).toBeGreaterThan(baseline);

    expect(iommuDetachDevice(domains[0], devs[0])).toBe(0);
    expect(iommuDetachDevicePasid(domains[1], devs[1], 7)).toBe(0);
    expect(iommuDetachDevicePasid(domains[2], devs[2], 9)).toBe(0);
    for (const d of domains) iommuDomainFree(d);
    for (const dev of devs) {
      // The DMA PASID is the caller's to give back before unplug.
      if (dev.iommu !== null && dev.iommu.dmaPasid !== 0) expect(iommuDmaDisablePasid(dev)).toBe(0);
      expect(m.removeDevice(dev)).toBe(0);
    }
    expect(m.frames.liveFrames).toBe(baseline);
    expect(m.driver.didsInUse).toBe(0);
    expect(m.subsys.pasids.size()).toBe(0);
  });
});

describe("tracing", () => {
  test("a fault and the invalidations of an unmap reach the machine's trace", () => {
    const m = new MockMachine();
    const events: TraceEvent[] = [];
    m.trace.subscribe((e) => events.push(e));
    const dev = m.addDevice({ name: "nic0", rid: 0x100 });
    if (typeof dev === "string") throw new Error(dev);
    const domain = iommuPagingDomainAlloc(dev);
    if (typeof domain === "string") throw new Error(domain);
    expect(iommuAttachDevice(domain, dev)).toBe(0);
    expect(dev.read(0x5000, new Uint8Array(4))).toBe(DMA_FAULT);
    const frame = m.frames.alloc(0) as number;
    expect(iommuMap(domain, 0x5000, frame, 0x1000, IOMMU_READ | IOMMU_WRITE)).toBe(0);
    expect(iommuUnmap(domain, 0x5000, 0x1000)).toBe(0x1000);
    const fault = events.find((e) => e.kind === "fault");
    expect(fault?.data).toMatchObject({ iommu: "mock0", rid: 0x100, pasid: -1, iova: 0x5000 });
    const flushes = events.filter((e) => e.kind === "flush").map((e) => e.data);
    expect(flushes).toContainEqual({
      iommu: "mock0",
      scope: "range",
      detail: `did=${(domain as MockDomain).did} pasid=none addr=0x5000 pages=1`,
    });
  });
});
