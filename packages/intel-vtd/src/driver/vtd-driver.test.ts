// The VT-d driver against the VT-d unit: bring-up, probe, DMA-API mappings, PASID attach and
// teardown, in both modes.

import {
  DMA_BIDIRECTIONAL,
  DMA_FAULT,
  DMA_OK,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuAllocGlobalPasid,
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
    const hw = m.units[0]!.hw;
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
    expect(m.driver.units[0]!.qi!.stats.errors).toBe(0);
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
    const dev = m.addDevice({ name: "accel0", rid: 0x0300, pasidBits: 8, ats: true, pri: true });
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
    expect(m.driver.units[0]!.qi!.stats.errors).toBe(0);
  });
});
