// A whole machine around VT-d: memory, frames, a DMA bus, the IOMMU subsystem, one or more
// remapping units (the hardware) and the driver that owns them through their registers, with
// devices probed through the core.

import type { Device, DeviceOptions } from "@iommu-sim/iommu-core";
import {
  MachineBase,
  type MachineBaseOptions,
  type PlugErrno,
  plugDevice,
  unplugDevice,
} from "@iommu-sim/iommu-core/testing";
import { type IntelIommu, VtdDriver } from "../driver/index.js";
import type { VtdCacheConfigInput } from "../hw/cache-policy.js";
import type { VtdCapabilities } from "../hw/vtd-caps.js";
import { VtdUnit } from "../hw/vtd-unit.js";

/** One unit of a machine. */
export interface VtdMachineUnitOptions {
  readonly name?: string;
  /** Capability overrides of the unit (defaults: DEFAULT_VTD_CAPS). */
  readonly caps?: Partial<VtdCapabilities>;
  readonly cache?: VtdCacheConfigInput;
  /** Use scalable mode when the unit has it (default true). */
  readonly scalable?: boolean;
  /** Requester IDs behind the unit; omitted: every requester no other unit claims. */
  readonly rids?: readonly number[];
}

export interface VtdMachineOptions extends MachineBaseOptions {
  /** The units (default: one with default capabilities serving every device). */
  readonly units?: readonly VtdMachineUnitOptions[];
  /** Paging domains on first-stage tables when the unit has them (default true). */
  readonly firstStage?: boolean;
}

/** A unit of the machine: the hardware and the driver's view of it. */
export interface VtdMachineUnit {
  readonly hw: VtdUnit;
  readonly iommu: IntelIommu;
}

/**
 * A machine with VT-d. The units' interrupts only raise flags here; `processQueues` lets
 * software catch up (faults, page requests, IOPF work), so the driver never runs inside a DMA.
 */
export class VtdMachine extends MachineBase {
  readonly driver: VtdDriver;
  readonly units: VtdMachineUnit[] = [];
  /** Interrupts raised since the last `processQueues`. */
  pendingInterrupts = 0;

  constructor(options: VtdMachineOptions = {}) {
    super(options);
    this.driver = new VtdDriver({
      subsys: this.subsys,
      mem: this.mem,
      frames: this.frames,
      firstStage: options.firstStage,
    });
    const specs = options.units ?? [{}];
    specs.forEach((spec, i) => {
      const name = spec.name ?? `dmar${i}`;
      const hw = new VtdUnit({
        name,
        mem: this.mem,
        caps: spec.caps,
        cache: spec.cache,
        trace: this.trace,
        onInterrupt: () => {
          this.pendingInterrupts++;
        },
      });
      const iommu = this.driver.addUnit({
        name,
        mmio: hw,
        scalable: spec.scalable,
        rids: spec.rids,
      });
      if (typeof iommu === "string")
        throw new Error(`vtd machine: ${name}: bring-up failed: ${iommu}`);
      this.units.push({ hw, iommu });
    });
  }

  /** The hardware unit that serves requester ID `rid`. */
  hwFor(rid: number): VtdUnit | null {
    const iommu = this.driver.unitFor(rid);
    return this.units.find((u) => u.iommu === iommu)?.hw ?? null;
  }

  /**
   * Plug in a device behind its unit and probe it. Returns the device, or the errno of the step
   * that failed (bad options, a duplicate ID, no unit, the probe).
   */
  addDevice(options: DeviceOptions): Device | PlugErrno {
    const hw = this.hwFor(options.rid);
    if (hw === null) return "ENODEV";
    return plugDevice(this.bus, hw, this.subsys, this.driver, options);
  }

  /** Unplug a device: the core releases it, then it leaves the bus. */
  removeDevice(dev: Device): 0 | "ENOENT" {
    return unplugDevice(this.bus, dev);
  }

  /**
   * Let software catch up with the hardware: read the fault records, drain the page request
   * queues into IOPF, run the IOPF work, and the invalidations the driver postponed. Returns the
   * records processed.
   */
  processQueues(): number {
    this.pendingInterrupts = 0;
    let n = this.driver.processFaults();
    n += this.driver.processPageRequests();
    n += this.driver.runIopfWork();
    return n;
  }
}
