// A VT-d machine as the harness runs it: VtdMachine with its units built from the machine spec,
// the VT-d oracle, the driver's injections, and RTADDR for decode.

import { VTD_REG } from "@iommu-sim/intel-vtd/format";
import type { VtdCapabilities } from "@iommu-sim/intel-vtd/hw";
import { LEGACY_VTD_CAPS } from "@iommu-sim/intel-vtd/hw";
import { VtdMachine, type VtdMachineUnitOptions } from "@iommu-sim/intel-vtd/testing";
import { ChargeTree } from "@iommu-sim/ioasid";
import { type Device, type IommuDomain, iommuPagingDomainAlloc } from "@iommu-sim/iommu-core";
import { mmioRead64 } from "@iommu-sim/iommu-core/platform";
import { svaState } from "@iommu-sim/sva";
import { hex } from "../oracle/violation.js";
import { VtdOracle } from "../oracle/vtd-oracle.js";
import type { SnapshotUnit } from "../scenario.js";
import { Harness, type MachineSpec, type UnitSpec } from "./harness.js";
import { isSvaInjection, SVA_INJECTIONS } from "./sva-world.js";

export type { DeviceSpec, DmaBuffer, MachineSpec, UnitSpec } from "./harness.js";

/** Driver steps `--inject` can make the VT-d driver skip. */
export const VTD_INJECTIONS = Object.freeze({
  "skip-iotlb-flush": "skipIotlbFlush",
  "skip-pasid-cache-flush": "skipPasidCacheFlush",
  "skip-devtlb-flush": "skipDevtlbFlush",
  "early-pasid-free": "earlyPasidFree",
  "early-did-reuse": "earlyDidReuse",
  "skip-notifier-flush": "skipNotifierFlush",
  "skip-atc-on-notifier": "skipAtcOnNotifier",
  ...SVA_INJECTIONS,
} as const);
export type VtdInjection = keyof typeof VTD_INJECTIONS;

/** The capabilities of a unit spec, over the defaults of its mode. */
function unitCaps(u: UnitSpec): Partial<VtdCapabilities> {
  const legacy = u.mode === "legacy";
  const caps: { -readonly [K in keyof VtdCapabilities]?: VtdCapabilities[K] } = legacy
    ? { ...LEGACY_VTD_CAPS }
    : {};
  if (u.cachingMode !== undefined) caps.cachingMode = u.cachingMode;
  if (!legacy && u.pasidBits !== undefined) {
    caps.pasid = u.pasidBits > 0;
    if (u.pasidBits > 0) caps.pss = u.pasidBits - 1;
  }
  if (u.ats !== undefined) caps.deviceTlb = u.ats;
  if (u.pri !== undefined && !legacy) caps.prs = u.pri;
  if (u.superpages !== undefined) caps.superpages = [...u.superpages];
  return caps;
}

/** A VT-d machine under the oracle. */
export class VtdHarness extends Harness<VtdMachine, VtdOracle> {
  readonly arch = "vtd";

  constructor(spec: MachineSpec, seed: number, inject: VtdInjection | null = null) {
    const units: VtdMachineUnitOptions[] = spec.units.map((u, i) => {
      const rids = spec.devices
        .filter((d) => (d.unit ?? spec.units[0]?.name) === u.name)
        .map((d) => d.rid);
      return {
        name: u.name,
        caps: unitCaps(u),
        cache: {
          policy: u.cache ?? "maximal",
          ...(u.iotlb === undefined ? {} : iotlbGeometry(u.iotlb)),
        },
        scalable: u.mode !== "legacy",
        // The first unit takes every device no other unit lists (INCLUDE_PCI_ALL).
        rids: i === 0 ? undefined : rids,
      };
    });
    const m = new VtdMachine({
      seed,
      units,
      framesSize: spec.memory ?? 256 * 2 ** 20,
      strict: spec.lazy !== true,
      // Users' PASID limits (the misc cgroup of the PASID resource): 2^20 PASIDs in all.
      charges: new ChargeTree({ capacity: 2 ** 20, name: "pasid" }),
    });
    super(m, new VtdOracle(m));
    this.oracle.lazy = spec.lazy === true;
    if (inject !== null) {
      const field = VTD_INJECTIONS[inject];
      if (isSvaInjection(field)) svaState(m.subsys).inject[field] = true;
      else this.m.driver.inject[field] = true;
    }
  }

  protected get driverOps(): VtdMachine["driver"] {
    return this.m.driver;
  }

  /** A paging domain: first- or second-stage tables as asked, else the driver's choice. */
  protected pagingDomainAlloc(dev: Device, stage?: "first" | "second"): IommuDomain | string {
    const ops = this.m.driver;
    const saved = ops.firstStage;
    if (stage !== undefined) ops.firstStage = stage === "first";
    const d = iommuPagingDomainAlloc(dev);
    ops.firstStage = saved;
    return d;
  }

  protected drainDeferred(): void {
    this.m.driver.drainDeferred();
  }

  /** Each unit's RTADDR register, as `decode vtd --rtaddr` takes it. */
  snapshotRegisters(): SnapshotUnit[] {
    return this.rtaddrs();
  }

  /** Each unit's RTADDR register, as `decode vtd --rtaddr` takes it. */
  rtaddrs(): SnapshotUnit[] {
    return this.m.units.map(({ hw }) => ({
      name: hw.name,
      register: "RTADDR",
      value: hex(mmioRead64(hw, VTD_REG.RTADDR)),
    }));
  }
}

/** Sets × ways for an IOTLB of `entries` entries (4-way when it can). */
function iotlbGeometry(entries: number): { iotlbSets: number; iotlbWays: number } {
  const ways = Math.min(4, entries);
  return { iotlbSets: Math.max(1, entries / ways), iotlbWays: ways };
}
