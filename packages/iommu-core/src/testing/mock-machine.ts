// A whole small machine around the mock IOMMU: memory, frames, a DMA bus, the IOMMU subsystem,
// the mock hardware and its driver, and devices probed through the core, ready for DMA.

import type { Device, DeviceOptions } from "../device/device.js";
import { MockIommuDriver } from "../mock/mock-iommu.js";
import { MockIommuHw } from "../mock/mock-iommu-hw.js";
import { MachineBase, type MachineBaseOptions } from "./machine-base.js";
import { type PlugErrno, plugDevice, unplugDevice } from "./plug-device.js";

export interface MockMachineOptions extends MachineBaseOptions {
  /** Mock IOTLB entries (default 64). */
  iotlbEntries?: number;
  /** PASID bits of the IOMMU (default 20). */
  pasidBits?: number;
  /** Page-table levels of the mock's paging domains (default 4). */
  levels?: 3 | 4 | 5;
}

/**
 * A machine with one mock IOMMU. Devices added with `addDevice` are on the bus behind the IOMMU
 * and probed by the core, so they sit in their default domain and can DMA at once.
 */
export class MockMachine extends MachineBase {
  readonly hw: MockIommuHw;
  readonly driver: MockIommuDriver;

  constructor(options: MockMachineOptions = {}) {
    super({ ...options, paBits: options.paBits ?? 48 });
    this.hw = new MockIommuHw({
      mem: this.mem,
      iotlbEntries: options.iotlbEntries ?? 64,
      pasidBits: options.pasidBits ?? 20,
      trace: this.trace,
    });
    this.driver = new MockIommuDriver({
      subsys: this.subsys,
      mem: this.mem,
      frames: this.frames,
      mmio: this.hw,
      levels: options.levels ?? 4,
    });
    const ret = this.driver.init();
    if (ret !== 0) throw new Error(`mock machine: driver init failed: ${ret}`);
  }

  /**
   * Plug in a device behind the IOMMU and probe it. Returns the device, or the errno of the
   * step that failed (bad options, a duplicate ID, the probe).
   */
  addDevice(options: DeviceOptions): Device | PlugErrno {
    return plugDevice(this.bus, this.hw, this.subsys, this.driver, options);
  }

  /** Unplug a device: the core releases it, then it leaves the bus. */
  removeDevice(dev: Device): 0 | "ENOENT" {
    return unplugDevice(this.bus, dev);
  }

  /**
   * Let software catch up with the hardware: read the fault queue, drain the page request queue
   * into IOPF, and run the IOPF work the handlers deferred. Returns the records processed.
   */
  processQueues(): number {
    let n = this.driver.processFaults();
    n += this.driver.processPageRequests((rid) => this.bus.findByRid(rid) ?? undefined);
    n += this.driver.iopfQueue.runWork();
    return n;
  }
}
