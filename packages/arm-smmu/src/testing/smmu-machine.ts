// A whole machine around SMMUv3: memory, frames, a DMA bus, the IOMMU subsystem, one or more SMMUs
// (the hardware) and the driver that owns them through their registers, with devices probed
// through the core.

import type { Device, DeviceOptions } from "@iommu-sim/iommu-core";
import {
  MachineBase,
  type MachineBaseOptions,
  type PlugErrno,
  plugDevice,
  unplugDevice,
} from "@iommu-sim/iommu-core/testing";
import { type ArmSmmuDevice, SmmuV3Driver } from "../driver/index.js";
import type { SmmuCacheConfig } from "../hw/smmu-cache-policy.js";
import type { SmmuFeatures } from "../hw/smmu-features.js";
import { SmmuV3 } from "../hw/smmu-v3.js";

/** One SMMU of a machine. */
export interface SmmuMachineSmmuOptions {
  readonly name?: string;
  /** Feature overrides (defaults: DEFAULT_SMMU_FEATURES). */
  readonly features?: Partial<SmmuFeatures>;
  readonly cache?: Partial<SmmuCacheConfig>;
  /** StreamIDs behind the SMMU; omitted: every StreamID no other SMMU claims. */
  readonly sids?: readonly number[];
  /** The kernel runs at EL2 with VHE. */
  readonly vhe?: boolean;
}

export interface SmmuMachineOptions extends MachineBaseOptions {
  /** The SMMUs (default: one with default features serving every device). */
  readonly smmus?: readonly SmmuMachineSmmuOptions[];
}

/** An SMMU of the machine: the hardware and the driver's view of it. */
export interface SmmuMachineSmmu {
  readonly hw: SmmuV3;
  readonly smmu: ArmSmmuDevice;
}

/**
 * A machine with SMMUv3. The SMMUs' interrupts only raise flags here; `processQueues` lets
 * software catch up (events, PRI requests, IOPF work), so the driver never runs inside a DMA.
 */
export class SmmuMachine extends MachineBase {
  readonly driver: SmmuV3Driver;
  readonly smmus: SmmuMachineSmmu[] = [];
  /** Interrupts raised since the last `processQueues` (CMD_SYNC completions not counted). */
  pendingInterrupts = 0;

  constructor(options: SmmuMachineOptions = {}) {
    super(options);
    this.driver = new SmmuV3Driver({ subsys: this.subsys, mem: this.mem, frames: this.frames });
    const specs = options.smmus ?? [{}];
    specs.forEach((spec, i) => {
      const name = spec.name ?? `smmu${i}`;
      const hw = new SmmuV3({
        name,
        mem: this.mem,
        features: spec.features,
        cache: spec.cache,
        trace: this.trace,
        onInterrupt: (source) => {
          if (source !== "cmd-sync") this.pendingInterrupts++;
        },
      });
      const smmu = this.driver.addSmmu({ name, mmio: hw, sids: spec.sids, vhe: spec.vhe });
      if (typeof smmu === "string")
        throw new Error(`smmu machine: ${name}: bring-up failed: ${smmu}`);
      this.smmus.push({ hw, smmu });
    });
  }

  /** The SMMU hardware that serves StreamID `sid`. */
  hwFor(sid: number): SmmuV3 | null {
    const smmu = this.driver.smmuFor(sid);
    return this.smmus.find((s) => s.smmu === smmu)?.hw ?? null;
  }

  /**
   * Plug in a device behind its SMMU and probe it. Returns the device, or the errno of the step
   * that failed (bad options, a duplicate ID, no SMMU, the probe).
   */
  addDevice(options: DeviceOptions): Device | PlugErrno {
    const hw = this.hwFor(options.sid ?? options.rid);
    if (hw === null) return "ENODEV";
    return plugDevice(this.bus, hw, this.subsys, this.driver, options);
  }

  /** Unplug a device: the core releases it, then it leaves the bus. */
  removeDevice(dev: Device): 0 | "ENOENT" {
    return unplugDevice(this.bus, dev);
  }

  /**
   * Let software catch up with the hardware: command-queue errors, the event queues, the PRI
   * queues into IOPF, and the IOPF work. Returns the records processed.
   */
  processQueues(): number {
    this.pendingInterrupts = 0;
    this.driver.processGlobalErrors();
    let n = this.driver.processEvents();
    n += this.driver.processPageRequests();
    n += this.driver.runIopfWork();
    return n;
  }
}
