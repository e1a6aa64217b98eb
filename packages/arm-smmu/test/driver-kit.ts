// Helpers the SMMUv3 driver tests share: machines, taps, recorded commands, devices, STE/CD reads.

import {
  type Device,
  iommuPagingDomainAlloc,
  iommuPagingDomainAllocFlags,
} from "@iommu-sim/iommu-core";
import { decode, type Mmio } from "@iommu-sim/iommu-core/platform";
import type { ArmSmmuDevice } from "../src/driver/arm-smmu-device.js";
import type { ArmSmmuDomain } from "../src/driver/smmu-domain.js";
import { CD } from "../src/format/cd.js";
import { cmdLayout } from "../src/format/commands.js";
import { STE } from "../src/format/ste.js";
import type { SmmuFeatures } from "../src/hw/smmu-features.js";
import { SmmuV3 } from "../src/hw/smmu-v3.js";
import { SmmuMachine, type SmmuMachineOptions } from "../src/testing/smmu-machine.js";

/** A command as the SMMU executed it: opcode and decoded fields (addresses as numbers). */
export interface Cmd {
  readonly op: number;
  readonly f: Record<string, number>;
}

/** Every command `hw` executes from now on, decoded (replaces its `commandObserver`). */
export function record(hw: SmmuV3): Cmd[] {
  const out: Cmd[] = [];
  hw.commandObserver = (w) => {
    const op = (w[0] as number) & 0xff;
    const layout = cmdLayout(op);
    out.push({ op, f: layout === null ? {} : (decode(layout, w) as Record<string, number>) });
  };
  return out;
}

/** The opcodes of `cmds`, in order. */
export function ops(cmds: readonly Cmd[]): number[] {
  return cmds.map((c) => c.op);
}

/** A machine with one SMMU of `features` that the driver reaches directly; throws if bring-up fails. */
export function machine(
  features: Partial<SmmuFeatures> = {},
  options: SmmuMachineOptions = {},
): { m: SmmuMachine; hw: SmmuV3; smmu: ArmSmmuDevice } {
  const m = new SmmuMachine({ ...options, smmus: [{ features }] });
  const s = m.smmus[0];
  if (s === undefined) throw new Error("no SMMU");
  return { m, hw: s.hw, smmu: s.smmu };
}

/** The driver's view of an SMMU, logging every register access. */
export class Tap implements Mmio {
  readonly log: [rw: "r" | "w", offset: number, value: number][] = [];
  /** Overrides of register reads (ID registers of hardware the model does not build). */
  readonly override = new Map<number, number>();
  constructor(readonly hw: SmmuV3) {}
  read32(offset: number): number {
    const v = this.override.get(offset) ?? this.hw.read32(offset);
    this.log.push(["r", offset, v]);
    return v;
  }
  write32(offset: number, value: number): void {
    this.log.push(["w", offset, value >>> 0]);
    this.hw.write32(offset, value);
  }
  /** The values written to `offset`, in order. */
  writes(offset: number): number[] {
    return this.log.filter((e) => e[0] === "w" && e[1] === offset).map((e) => e[2]);
  }
}

/** A machine whose one SMMU the driver reaches through a tap. */
export interface Tapped {
  readonly m: SmmuMachine;
  readonly hw: SmmuV3;
  readonly tap: Tap;
  readonly smmu: ArmSmmuDevice;
}

/**
 * Bring up one SMMU of `features` through a tap on a machine with no other (`before` runs ahead of
 * bring-up, e.g. to override ID registers); the errno of `addSmmu` if it refuses.
 */
export function bringUp(
  features: Partial<SmmuFeatures> = {},
  before?: (hw: SmmuV3, tap: Tap) => void,
  options: SmmuMachineOptions = {},
): Tapped | "ENXIO" | "EEXIST" | "ENOMEM" | "ETIMEDOUT" {
  const m = new SmmuMachine({ ...options, smmus: [] });
  const hw = new SmmuV3({ name: "smmu0", mem: m.mem, features, trace: m.trace });
  const tap = new Tap(hw);
  before?.(hw, tap);
  const smmu = m.driver.addSmmu({ name: "smmu0", mmio: tap });
  if (typeof smmu === "string") return smmu;
  m.smmus.push({ hw, smmu });
  return { m, hw, tap, smmu };
}

/** `bringUp`, which must succeed. */
export function tapped(
  features: Partial<SmmuFeatures> = {},
  before?: (hw: SmmuV3, tap: Tap) => void,
  options: SmmuMachineOptions = {},
): Tapped {
  const t = bringUp(features, before, options);
  if (typeof t === "string") throw new Error(`bring-up failed: ${t}`);
  return t;
}

/** Plug in and probe a device, which must succeed. */
export function add(m: SmmuMachine, options: Parameters<SmmuMachine["addDevice"]>[0]): Device {
  const dev = m.addDevice(options);
  if (typeof dev === "string") throw new Error(`addDevice: ${dev}`);
  return dev;
}

/** A paging domain for `dev` (with `flags`, if any), which must be allocated. */
export function paging(dev: Device, flags = 0): ArmSmmuDomain {
  const d = flags === 0 ? iommuPagingDomainAlloc(dev) : iommuPagingDomainAllocFlags(dev, flags);
  if (typeof d === "string") throw new Error(`domain: ${d}`);
  return d as ArmSmmuDomain;
}

/** A free 4 KiB frame of the machine. */
export function frame(m: SmmuMachine): number {
  const pa = m.frames.alloc(0);
  if (typeof pa !== "number") throw new Error("no frame");
  return pa;
}

/** `n` 32-bit words of memory at `pa`. */
export function words(m: SmmuMachine, pa: number, n = 16): number[] {
  return Array.from({ length: n }, (_, i) => m.mem.read32(pa + 4 * i));
}

/** The STE of `sid` in memory, decoded. */
export function steOf(m: SmmuMachine, hw: SmmuV3, sid: number): Record<string, number> {
  return decode(STE, words(m, hw.steAddress(sid))) as Record<string, number>;
}

/** The CD of (`sid`, `ssid`) in memory, decoded. */
export function cdOf(
  m: SmmuMachine,
  hw: SmmuV3,
  sid: number,
  ssid: number,
): Record<string, number> {
  return decode(CD, words(m, hw.cdAddress(sid, ssid))) as Record<string, number>;
}
