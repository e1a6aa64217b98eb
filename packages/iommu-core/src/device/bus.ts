// The interconnect between devices, IOMMUs and memory: which IOMMU instance each device's DMA goes
// through, and how to find a device by requester ID, StreamID or name.

import type { PhysMemory } from "../platform/phys-memory.js";
import type { Trace } from "../platform/trace.js";
import { Device } from "./device.js";
import type { IommuHardware } from "./iommu-hardware.js";

/**
 * The machine's DMA interconnect. A device added with an IOMMU sends every request to that IOMMU
 * instance (and the IOMMU can reach the device through `connect`); a device added with `null`
 * reaches memory directly. Requester IDs and names are unique on a bus; StreamIDs may repeat (DMA
 * aliases), and `findBySid` then returns the first device added with it.
 *
 * @kernel include/linux/device/bus.h bus_type
 */
export class DmaBus {
  readonly mem: PhysMemory;
  /** Where the devices' DMAs are reported as `dma` events (null: nowhere, and no cost). */
  trace: Trace | null = null;
  private readonly list: Device[] = [];
  private readonly byRid = new Map<number, Device>();
  private readonly byName = new Map<string, Device>();

  constructor(mem: PhysMemory) {
    this.mem = mem;
  }

  /**
   * Put `device` on the bus behind `iommu` (null: no IOMMU) and connect it to that IOMMU.
   * 'EEXIST' when the bus already has a device with its requester ID or name, or when the device
   * is already on a bus; 'EINVAL' for a device whose requester ID is not valid.
   *
   * @kernel drivers/base/bus.c bus_add_device
   */
  addDevice(device: Device, iommu: IommuHardware | null): 0 | "EEXIST" | "EINVAL" {
    if (!(device instanceof Device)) return "EINVAL";
    if (device.bus !== null) return "EEXIST";
    if (this.byRid.has(device.rid) || this.byName.has(device.name)) return "EEXIST";
    this.list.push(device);
    this.byRid.set(device.rid, device);
    this.byName.set(device.name, device);
    device.attachBus(this, this.mem, iommu);
    iommu?.connect(device);
    return 0;
  }

  /**
   * Take `device` off the bus (hot-unplug), disconnecting it from its IOMMU first. 'ENOENT' when
   * it is not on this bus. The device keeps its ATC and pending state.
   *
   * @kernel drivers/base/bus.c bus_remove_device
   */
  removeDevice(device: Device): 0 | "ENOENT" {
    const i = this.list.indexOf(device);
    if (i < 0) return "ENOENT";
    device.hardware?.disconnect(device);
    this.list.splice(i, 1);
    this.byRid.delete(device.rid);
    this.byName.delete(device.name);
    device.detachBus(this);
    return 0;
  }

  /** The device with requester ID `rid`, or null. */
  findByRid(rid: number): Device | null {
    return this.byRid.get(rid) ?? null;
  }

  /** The first device added with StreamID `sid`, or null. */
  findBySid(sid: number): Device | null {
    for (const d of this.list) if (d.sid === sid) return d;
    return null;
  }

  /** The device named `name`, or null. */
  findByName(name: string): Device | null {
    return this.byName.get(name) ?? null;
  }

  /** The devices, in the order they were added. */
  devices(): readonly Device[] {
    return this.list.slice();
  }

  /** The IOMMU `device`'s DMA goes through (null: none, or not on this bus). */
  iommuOf(device: Device): IommuHardware | null {
    return device.bus === this ? device.hardware : null;
  }
}
