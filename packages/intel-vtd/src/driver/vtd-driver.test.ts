// The VT-d driver against the VT-d unit: bring-up, probe, DMA-API mappings, PASID attach and
// teardown, in both modes.

import {
  type Device,
  DMA_BIDIRECTIONAL,
  DMA_FAULT,
  DMA_OK,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuAllocGlobalPasid,
  iommuAttachDevice,
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuDmaMapPhys,
  iommuDmaUnmapPhys,
  iommuDomainFree,
  iommuFreeGlobalPasid,
  iommuMap,
  iommuPagingDomainAlloc,
  iommuUnmap,
} from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { GSTS_QIES, GSTS_TES, VTD_REG } from "../format/registers.js";
import { LEGACY_VTD_CAPS } from "../hw/vtd-caps.js";
import { VtdUnit } from "../hw/vtd-unit.js";
import { VtdMachine } from "../testing/vtd-machine.js";
import { DmarDomain } from "./dmar-domain.js";

const PAGE = 4096;

function machine(legacy: boolean): VtdMachine {
  return new VtdMachine({
    units: [legacy ? { caps: LEGACY_VTD_CAPS, scalable: false } : {}],
  });
}

describe.each([
  ["scalable", false],
  ["legacy", true],
])("VtdDriver in %s mode", (_mode, legacy) => {
  it("brings the unit up through its registers: QI, root table, translation", () => {
    const m = machine(legacy);
    const hw = m.units[0]?.hw as VtdUnit;
    const gsts = hw.read32(VTD_REG.GSTS);
    expect(gsts & GSTS_TES).not.toBe(0);
    expect(gsts & GSTS_QIES).not.toBe(0);
    expect(hw.scalableMode).toBe(!legacy);
    expect(hw.queueStopped).toBe(false);
  });

  it("maps DMA-API buffers a device reads and writes, and faults after the unmap", () => {
    const m = machine(legacy);
    const dev = m.addDevice({ name: "nic0", rid: 0x0100, ats: true });
    if (typeof dev === "string") throw new Error(dev);
    const buf = m.frames.alloc(0) as number;
    m.mem.write32(buf + 8, 0xdeadbeef);
    const dma = iommuDmaMapPhys(dev, buf, PAGE, DMA_BIDIRECTIONAL);
    if (typeof dma !== "number") throw new Error(String(dma));
    expect(dev.read32(dma + 8)).toBe(DMA_OK);
    expect(dev.lo >>> 0).toBe(0xdeadbeef);
    expect(dev.write32(dma + 16, 0x1234)).toBe(DMA_OK);
    expect(m.mem.read32(buf + 16)).toBe(0x1234);
    iommuDmaUnmapPhys(dev, dma, PAGE, DMA_BIDIRECTIONAL);
    expect(dev.read32(dma + 8)).toBe(DMA_FAULT);
    expect(m.driver.units[0]?.qi?.stats.errors).toBe(0);
  });

  it("gives domain IDs back when the last attachment goes", () => {
    const m = machine(legacy);
    const dev = m.addDevice({ name: "nic0", rid: 0x0100 });
    if (typeof dev === "string") throw new Error(dev);
    const before = m.driver.didsInUse;
    m.removeDevice(dev);
    expect(m.driver.didsInUse).toBe(before - 1);
  });
});

describe("VtdDriver at PASIDs (scalable mode)", () => {
  it("attaches a first-stage domain at a PASID, and the PASID faults after the detach", () => {
    const m = machine(false);
    const dev = m.addDevice({ name: "accel0", rid: 0x0300, pasidBits: 8, ats: true });
    if (typeof dev === "string") throw new Error(dev);
    const domain = iommuPagingDomainAlloc(dev);
    if (typeof domain === "string") throw new Error(domain);
    expect(domain).toBeInstanceOf(DmarDomain);
    expect((domain as DmarDomain).useFirstLevel).toBe(true);
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(domain, dev, pasid)).toBe(0);
    const buf = m.frames.alloc(0) as number;
    m.mem.write32(buf, 77);
    expect(iommuMap(domain, 0x40000, buf, PAGE, IOMMU_READ | IOMMU_WRITE)).toBe(0);
    expect(dev.read32(0x40000, pasid)).toBe(DMA_OK);
    expect(dev.lo).toBe(77);
    expect(dev.read32(0x40000)).toBe(DMA_FAULT);
    expect(iommuUnmap(domain, 0x40000, PAGE)).toBe(PAGE);
    expect(dev.read32(0x40000, pasid)).toBe(DMA_FAULT);
    expect(iommuMap(domain, 0x40000, buf, PAGE, IOMMU_READ)).toBe(0);
    expect(dev.read32(0x40000, pasid)).toBe(DMA_OK);
    expect(iommuDetachDevicePasid(domain, dev, pasid)).toBe(0);
    expect(dev.read32(0x40000, pasid)).toBe(DMA_FAULT);
    expect(iommuFreeGlobalPasid(m.subsys, pasid)).toBe(0);
    iommuDomainFree(domain);
    expect(m.driver.units[0]?.qi?.stats.errors).toBe(0);
  });
});

describe("VtdDriver errors", () => {
  it("refuses a second unit that claims every device, and a requester ID already claimed", () => {
    const m = new VtdMachine({ units: [{}, { rids: [0x0100] }] });
    const hw = new VtdUnit({ mem: m.mem });
    expect(m.driver.addUnit({ name: "dmar9", mmio: hw })).toBe("EEXIST");
    expect(m.driver.addUnit({ name: "dmar9", mmio: hw, rids: [0x0100] })).toBe("EEXIST");
    expect(m.driver.unitFor(0x0100)?.name).toBe("dmar1");
    expect(m.driver.unitFor(0x0200)?.name).toBe("dmar0");
  });

  it("refuses a unit without queued invalidation (ENODEV) and gives its frames back", () => {
    const m = new VtdMachine();
    const live = m.frames.liveFrames;
    const hw = new VtdUnit({
      mem: m.mem,
      caps: { ...LEGACY_VTD_CAPS, qi: false, deviceTlb: false },
    });
    expect(m.driver.addUnit({ name: "dmar9", mmio: hw, rids: [0x0900] })).toBe("ENODEV");
    expect(m.frames.liveFrames).toBe(live);
  });

  it("does not probe a device no unit serves, or a platform device", () => {
    const m = new VtdMachine({ units: [{ rids: [0x0100] }] });
    expect(m.addDevice({ name: "stray", rid: 0x0200 })).toBe("ENODEV");
    expect(m.addDevice({ name: "plat", rid: 0x0300, isPci: false })).toBe("ENODEV");
  });

  it("paging domain flags: unknown flags, nesting and dirty tracking need the unit's features", () => {
    const m = new VtdMachine({ units: [{ caps: { nest: false, slads: false } }] });
    const dev = m.addDevice({ name: "nic0", rid: 0x0100 }) as Device;
    expect(m.driver.domainAllocPagingFlags(dev, 1 << 10)).toBe("EOPNOTSUPP");
    expect(m.driver.domainAllocPagingFlags(dev, IOMMU_HWPT_ALLOC_NEST_PARENT)).toBe("EOPNOTSUPP");
    expect(m.driver.domainAllocPagingFlags(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING)).toBe(
      "EOPNOTSUPP",
    );
    const d = m.driver.domainAllocPagingFlags(dev, IOMMU_HWPT_ALLOC_PASID) as DmarDomain;
    expect(d.useFirstLevel).toBe(true);
    m.driver.firstStage = false;
    const s = m.driver.domainAllocPagingFlags(dev, 0) as DmarDomain;
    expect(s.useFirstLevel).toBe(false);
    // The unit's AGAW, as the kernel gives every second-stage domain.
    expect(s.levels).toBe((m.driver.units[0]?.agaw ?? 0) + 2);
  });

  it("legacy mode makes second-stage domains and refuses PASID attach", () => {
    const m = machine(true);
    const dev = m.addDevice({ name: "nic0", rid: 0x0100, pasidBits: 8 }) as Device;
    const d = iommuPagingDomainAlloc(dev) as DmarDomain;
    expect(d.useFirstLevel).toBe(false);
    expect(iommuAttachDevicePasid(d, dev, 1)).toBe("EOPNOTSUPP");
  });

  it("a first-stage domain cannot go to a legacy-mode unit's device (EINVAL)", () => {
    const m = new VtdMachine({
      units: [{}, { caps: LEGACY_VTD_CAPS, scalable: false, rids: [0x0200] }],
    });
    const a = m.addDevice({ name: "a", rid: 0x0100 }) as Device;
    const b = m.addDevice({ name: "b", rid: 0x0200 }) as Device;
    const d = iommuPagingDomainAlloc(a) as DmarDomain;
    expect(d.useFirstLevel).toBe(true);
    expect(iommuAttachDevice(d, b)).toBe("EINVAL");
    expect(iommuAttachDevice(d, a)).toBe(0);
  });

  it("set_dev_pasid: EOPNOTSUPP on a unit without PASIDs, ENODEV beyond the device's table, EINVAL for IOMMU_NO_PASID", () => {
    const none = new VtdMachine({
      units: [{ caps: { pasid: false, pss: 0, prs: false, pds: false, srs: false } }],
    });
    const x = none.addDevice({ name: "acc", rid: 0x0200, pasidBits: 4 }) as Device;
    const dx = iommuPagingDomainAlloc(x) as DmarDomain;
    expect(none.driver.pagingOpsFor(dx).setDevPasid?.(dx, x, 3, null)).toBe("EOPNOTSUPP");
    const m = machine(false);
    const plain = m.addDevice({ name: "nic0", rid: 0x0100 }) as Device;
    const dev = m.addDevice({ name: "acc", rid: 0x0200, pasidBits: 4 }) as Device;
    const d = iommuPagingDomainAlloc(dev) as DmarDomain;
    expect(m.driver.pagingOpsFor(d).setDevPasid?.(d, dev, 2 ** 20, null)).toBe("ENODEV");
    expect(m.driver.pagingOpsFor(d).setDevPasid?.(d, dev, 0, null)).toBe("EINVAL");
    // As in Linux the unit decides, not the device: a device without the capability gets the
    // entry (it cannot send a PASID anyway).
    expect(m.driver.pagingOpsFor(d).setDevPasid?.(d, plain, 3, null)).toBe(0);
  });

  it("runs out of domain IDs with ENOSPC and leaves the device where it was", () => {
    // CAP.ND = 0: 16 domain IDs, of which 0 and 1 are reserved.
    const m = new VtdMachine({ units: [{ caps: { numDomainsBits: 4 } }] });
    const devs: Device[] = [];
    for (let i = 0; i < 15; i++) {
      const dev = m.addDevice({ name: `d${i}`, rid: 0x0100 + i * 8 });
      if (typeof dev === "string") {
        expect(dev).toBe("ENOSPC");
        expect(i).toBe(14);
        break;
      }
      devs.push(dev);
    }
    expect(m.driver.didsInUse).toBe(14);
    expect(m.bus.findByName("d14")).toBeNull();
    m.removeDevice(devs[3] as Device);
    expect(m.driver.didsInUse).toBe(13);
    expect(typeof m.addDevice({ name: "again", rid: 0x0100 + 14 * 8 })).not.toBe("string");
    expect(m.driver.didsInUse).toBe(14);
  });

  it("identity domains need pass-through support (ECAP.PT)", () => {
    const m = new VtdMachine({ units: [{ caps: { passThrough: false } }] });
    const dev = m.addDevice({ name: "nic0", rid: 0x0100 }) as Device;
    expect(iommuAttachDevice(m.driver.identityDomain, dev)).toBe("EINVAL");
  });

  it("IOPF needs PRI, which goes on at probe for capable devices; enable and disable are counted", () => {
    const m = machine(false);
    const plain = m.addDevice({ name: "nic0", rid: 0x0100, ats: true }) as Device;
    const acc = m.addDevice({
      name: "acc",
      rid: 0x0200,
      pasidBits: 8,
      ats: true,
      pri: true,
    }) as Device;
    expect(acc.priEnabled).toBe(true);
    expect(m.driver.devEnableFeat(plain, IOMMU_DEV_FEAT_IOPF)).toBe("ENODEV");
    expect(m.driver.devEnableFeat(acc, 99)).toBe("ENODEV");
    expect(m.driver.devDisableFeat(acc, IOMMU_DEV_FEAT_IOPF)).toBe("EINVAL");
    expect(m.driver.devEnableFeat(acc, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(m.driver.devEnableFeat(acc, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(m.driver.devDisableFeat(acc, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(m.driver.devDisableFeat(acc, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(m.driver.devDisableFeat(acc, IOMMU_DEV_FEAT_IOPF)).toBe("EINVAL");
    // PRI stays on until the device goes.
    expect(acc.priEnabled).toBe(true);
    m.removeDevice(acc);
    expect(acc.priEnabled).toBe(false);
  });

  it("reads fault records: a DMA to nothing is logged with its source, address and reason", () => {
    const m = machine(false);
    const dev = m.addDevice({ name: "nic0", rid: 0x0100 }) as Device;
    expect(dev.read32(0x5000)).toBe(DMA_FAULT);
    expect(m.processQueues()).toBeGreaterThan(0);
    expect(m.driver.units[0]?.faultLog[0]).toMatchObject({
      unit: "dmar0",
      sid: 0x0100,
      pasid: -1,
      addr: 0x5000,
      type: "read",
    });
  });
});
