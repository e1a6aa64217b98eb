import { describe, expect, it } from "vitest";
import { LogicalClock } from "../platform/clock.js";
import { PhysMemory } from "../platform/phys-memory.js";
import { Trace, type TraceEvent } from "../platform/trace.js";
import { DmaBus } from "./bus.js";
import { Device, DMA_NO_PASID, DMA_OK } from "./device.js";
import {
  type DevicePort,
  type IommuHardware,
  type PageRequest,
  type TranslationRequest,
  type TranslationResult,
  XLATE_OK,
} from "./iommu-hardware.js";
import { pciRid } from "./pci.js";

/**
 * TEST FIXTURE, not the package's mock IOMMU: translates every page to `base + iova`, and records
 * which ports it is connected to and who asked.
 */
class OffsetIommu implements IommuHardware {
  readonly connected: DevicePort[] = [];
  readonly events: string[] = [];
  readonly askedBy: number[] = [];
  constructor(
    readonly name: string,
    private readonly base: number,
  ) {}

  translate(req: TranslationRequest, out: TranslationResult): void {
    this.askedBy.push(req.rid);
    out.status = XLATE_OK;
    out.pa = this.base + req.iovaPfn * 4096 + req.offset;
    out.perm = 3;
    out.sizeShift = 12;
    out.fault = 0;
    out.code = 0;
    out.stallTag = 0;
  }

  pageRequest(_req: PageRequest): void {}

  connect(port: DevicePort): void {
    this.events.push(`connect ${port.rid}`);
    this.connected.push(port);
  }

  disconnect(port: DevicePort): void {
    this.events.push(`disconnect ${port.rid}`);
    this.connected.splice(this.connected.indexOf(port), 1);
  }
}

function setup() {
  const mem = new PhysMemory({ paBits: 40 });
  return { mem, bus: new DmaBus(mem) };
}

describe("DmaBus.addDevice", () => {
  it("routes each device's DMA to its own IOMMU, or straight to memory", () => {
    const { mem, bus } = setup();
    const a = new OffsetIommu("a", 0x100000);
    const b = new OffsetIommu("b", 0x200000);
    const d1 = new Device({ name: "d1", rid: pciRid(0, 1, 0) });
    const d2 = new Device({ name: "d2", rid: pciRid(0, 2, 0) });
    const d3 = new Device({ name: "d3", rid: pciRid(0, 3, 0) });
    expect(bus.addDevice(d1, a)).toBe(0);
    expect(bus.addDevice(d2, b)).toBe(0);
    expect(bus.addDevice(d3, null)).toBe(0);
    expect(d1.write32(0x10, 1)).toBe(DMA_OK);
    expect(d2.write32(0x10, 2)).toBe(DMA_OK);
    expect(d3.write32(0x10, 3)).toBe(DMA_OK);
    expect([mem.read32(0x100010), mem.read32(0x200010), mem.read32(0x10)]).toEqual([1, 2, 3]);
    expect(a.askedBy).toEqual([d1.rid]);
    expect(b.askedBy).toEqual([d2.rid]);
    expect([d1.hardware, d2.hardware, d3.hardware]).toEqual([a, b, null]);
    expect([bus.iommuOf(d1), bus.iommuOf(d3)]).toEqual([a, null]);
    expect(d1.bus).toBe(bus);
  });

  it("connects the device to its IOMMU", () => {
    const { bus } = setup();
    const a = new OffsetIommu("a", 0);
    const d = new Device({ name: "d", rid: 8 });
    bus.addDevice(d, a);
    expect(a.connected).toEqual([d]);
  });

  it("EEXIST for a taken requester ID or name, or a device already on a bus", () => {
    const { mem, bus } = setup();
    const a = new OffsetIommu("a", 0);
    const d = new Device({ name: "d", rid: 8 });
    expect(bus.addDevice(d, a)).toBe(0);
    expect(bus.addDevice(d, a)).toBe("EEXIST");
    expect(bus.addDevice(new Device({ name: "other", rid: 8 }), a)).toBe("EEXIST");
    expect(bus.addDevice(new Device({ name: "d", rid: 9 }), a)).toBe("EEXIST");
    expect(new DmaBus(mem).addDevice(d, null)).toBe("EEXIST");
    expect(a.events).toEqual(["connect 8"]);
    expect(bus.devices()).toEqual([d]);
  });

  it("EINVAL for something that is not a Device", () => {
    const { bus } = setup();
    expect(bus.addDevice({ rid: 1, name: "x" } as unknown as Device, null)).toBe("EINVAL");
  });
});

describe("DmaBus.removeDevice", () => {
  it("disconnects the device from its IOMMU and forgets it", () => {
    const { bus } = setup();
    const a = new OffsetIommu("a", 0);
    const d = new Device({ name: "d", rid: 8, sid: 0x80 });
    bus.addDevice(d, a);
    expect(bus.removeDevice(d)).toBe(0);
    expect(a.events).toEqual(["connect 8", "disconnect 8"]);
    expect(a.connected).toEqual([]);
    expect([bus.findByRid(8), bus.findBySid(0x80), bus.findByName("d")]).toEqual([
      null,
      null,
      null,
    ]);
    expect([d.bus, d.hardware]).toEqual([null, null]);
    expect(bus.removeDevice(d)).toBe("ENOENT");
    // It can be plugged in again, behind another IOMMU.
    const b = new OffsetIommu("b", 0);
    expect(bus.addDevice(d, b)).toBe(0);
    expect(d.hardware).toBe(b);
  });

  it("ENOENT for a device on another bus", () => {
    const { mem, bus } = setup();
    const d = new Device({ name: "d", rid: 8 });
    new DmaBus(mem).addDevice(d, null);
    expect(bus.removeDevice(d)).toBe("ENOENT");
  });
});

describe("DmaBus lookups", () => {
  it("finds devices by requester ID, StreamID and name, and lists them in insertion order", () => {
    const { bus } = setup();
    const d1 = new Device({ name: "nvme0", rid: pciRid(1, 0, 0), sid: 0x100 });
    const d2 = new Device({ name: "gpu0", rid: pciRid(2, 0, 0) });
    const d3 = new Device({ name: "plat0", rid: 0x5_0000, isPci: false, sid: 0x100 });
    for (const d of [d2, d1, d3]) expect(bus.addDevice(d, null)).toBe(0);
    expect(bus.findByRid(pciRid(1, 0, 0))).toBe(d1);
    expect(bus.findByRid(pciRid(3, 0, 0))).toBeNull();
    expect(bus.findByName("gpu0")).toBe(d2);
    expect(bus.findByName("nope")).toBeNull();
    expect(bus.findBySid(pciRid(2, 0, 0))).toBe(d2);
    // Two devices share StreamID 0x100 (a DMA alias): the first added is found.
    expect(bus.findBySid(0x100)).toBe(d1);
    expect(bus.devices()).toEqual([d2, d1, d3]);
    // devices() is a copy.
    (bus.devices() as Device[]).pop();
    expect(bus.devices().length).toBe(3);
    bus.removeDevice(d1);
    expect(bus.findBySid(0x100)).toBe(d3);
  });
});

describe("tracing", () => {
  it("each DMA of a device on a traced bus is one dma event with its outcome", () => {
    const mem = new PhysMemory({ paBits: 40 });
    const bus = new DmaBus(mem);
    const clock = new LogicalClock();
    bus.trace = new Trace(clock);
    const events: TraceEvent[] = [];
    bus.trace.subscribe((e) => events.push(e));
    const dev = new Device({ name: "d0", rid: pciRid(0, 1, 0) });
    expect(bus.addDevice(dev, new OffsetIommu("i0", 0x10_0000))).toBe(0);
    expect(dev.write(0x2010, new Uint8Array(16))).toBe(DMA_OK);
    clock.advance(5);
    expect(dev.read(0x3000, new Uint8Array(4), 7)).toBe(DMA_NO_PASID);
    expect(events.map((e) => [e.kind, e.time, e.data])).toEqual([
      ["dma", 0, { device: "d0", pasid: -1, iova: 0x2010, len: 16, write: true, status: "ok" }],
      [
        "dma",
        5,
        { device: "d0", pasid: 7, iova: 0x3000, len: 4, write: false, status: "no-pasid" },
      ],
    ]);
  });

  it("an untraced bus emits nothing and a trace nobody listens to stays inactive", () => {
    const mem = new PhysMemory({ paBits: 40 });
    const bus = new DmaBus(mem);
    const dev = new Device({ name: "d0", rid: pciRid(0, 1, 0) });
    expect(bus.addDevice(dev, null)).toBe(0);
    expect(dev.write(0x2000, new Uint8Array(8))).toBe(DMA_OK);
    bus.trace = new Trace();
    expect(dev.write(0x2000, new Uint8Array(8))).toBe(DMA_OK);
    expect(bus.trace.emitted).toBe(0);
  });
});
