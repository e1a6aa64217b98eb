// What every simulated machine has before its IOMMU: a logical clock and its trace, a seeded PRNG,
// physical memory with a frame allocator, a DMA bus and the IOMMU subsystem.

import type { ChargeTree } from "@iommu-sim/ioasid";
import { DmaBus } from "../device/bus.js";
import { IommuSubsystem } from "../iommu/iommu-subsystem.js";
import { LogicalClock } from "../platform/clock.js";
import { FrameAllocator } from "../platform/frame-allocator.js";
import { PhysMemory } from "../platform/phys-memory.js";
import { Prng } from "../platform/prng.js";
import { Trace } from "../platform/trace.js";

/** How the platform of a machine is built. */
export interface MachineBaseOptions {
  /** PRNG seed (default 1). */
  readonly seed?: number;
  /** Physical address bits (default: PhysMemory's). */
  readonly paBits?: number;
  /** Where the frame allocator's region starts (default 16 MiB) and its size (default 256 MiB). */
  readonly framesBase?: number;
  readonly framesSize?: number;
  /** Strict (default) or lazy invalidation of DMA domains. */
  readonly strict?: boolean;
  /** Default domain policy (default "dma"). */
  readonly defaultDomain?: "dma" | "identity";
  /** Charge tree for user-held PASIDs. */
  readonly charges?: ChargeTree;
}

/**
 * The platform half of a machine; MockMachine, VtdMachine and SmmuMachine add their IOMMUs and
 * drivers on top. The bus traces into the machine's trace.
 */
export class MachineBase {
  readonly clock: LogicalClock;
  readonly trace: Trace;
  readonly prng: Prng;
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;
  readonly bus: DmaBus;
  readonly subsys: IommuSubsystem;

  constructor(options: MachineBaseOptions = {}) {
    this.clock = new LogicalClock();
    this.trace = new Trace(this.clock);
    this.prng = new Prng(options.seed ?? 1);
    this.mem = new PhysMemory(options.paBits === undefined ? {} : { paBits: options.paBits });
    this.frames = new FrameAllocator(this.mem, {
      basePa: options.framesBase ?? 16 * 2 ** 20,
      size: options.framesSize ?? 256 * 2 ** 20,
    });
    this.bus = new DmaBus(this.mem);
    this.bus.trace = this.trace;
    this.subsys = new IommuSubsystem({
      clock: this.clock,
      trace: this.trace,
      strict: options.strict ?? true,
      defaultDomain: options.defaultDomain ?? "dma",
      charges: options.charges,
    });
  }
}
