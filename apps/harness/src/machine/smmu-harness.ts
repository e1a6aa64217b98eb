// An SMMUv3 machine as the harness runs it: SmmuMachine with its SMMUs built from the machine
// spec, the SMMU oracle, the driver's injections, and STRTAB_BASE(_CFG) for decode.

import { SMMU_REG } from "@iommu-sim/arm-smmu/format";
import type { SmmuFeatures } from "@iommu-sim/arm-smmu/hw";
import { SmmuMachine, type SmmuMachineSmmuOptions } from "@iommu-sim/arm-smmu/testing";
import { ChargeTree } from "@iommu-sim/ioasid";
import {
  type Device,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  type IommuDomain,
  iommuPagingDomainAlloc,
  iommuPagingDomainAllocFlags,
} from "@iommu-sim/iommu-core";
import { svaState } from "@iommu-sim/sva";
import { SmmuOracle } from "../oracle/smmu-oracle.js";
import { hex } from "../oracle/violation.js";
import type { SnapshotUnit } from "../scenario.js";
import { Harness, type MachineSpec, type UnitSpec } from "./harness.js";
import { isSvaInjection, SVA_INJECTIONS } from "./sva-world.js";

/** Driver steps `--inject` can make the SMMUv3 driver skip (or get wrong). */
export const SMMU_INJECTIONS = Object.freeze({
  "skip-tlbi": "skipTlbi",
  "skip-cfgi": "skipCfgi",
  "skip-atc-inv": "skipAtcInv",
  "early-asid-reuse": "earlyAsidReuse",
  "torn-ste-write": "tornSteWrite",
  "skip-notifier-flush": "skipNotifierFlush",
  "skip-atc-on-notifier": "skipAtcOnNotifier",
  ...SVA_INJECTIONS,
} as const);
export type SmmuInjection = keyof typeof SMMU_INJECTIONS;

/**
 * The features of an SMMU from a unit spec: SubstreamID bits from `pasidBits`, ATS and PRI, the
 * block sizes from `superpages`; everything else as DEFAULT_SMMU_FEATURES (both stages, 2-level
 * tables, range invalidation).
 */
function smmuFeatures(u: UnitSpec): Partial<SmmuFeatures> {
  const f: { -readonly [K in keyof SmmuFeatures]?: SmmuFeatures[K] } = {};
  if (u.pasidBits !== undefined) f.ssidBits = u.pasidBits;
  if (u.ats !== undefined) f.ats = u.ats;
  if (u.pri !== undefined) f.pri = u.pri && (u.ats ?? true);
  if (u.ats === false) f.pri = false;
  return f;
}

/** An SMMUv3 machine under the oracle. */
export class SmmuHarness extends Harness<SmmuMachine, SmmuOracle> {
  readonly arch = "smmu";
  protected override readonly pasidChangesRid = true;

  constructor(spec: MachineSpec, seed: number, inject: SmmuInjection | null = null) {
    const smmus: SmmuMachineSmmuOptions[] = spec.units.map((u, i) => {
      const sids = spec.devices
        .filter((d) => (d.unit ?? spec.units[0]?.name) === u.name)
        .map((d) => d.rid);
      const entries = u.iotlb;
      return {
        name: u.name,
        features: smmuFeatures(u),
        cache: {
          policy: u.cache ?? "maximal",
          ...(entries === undefined
            ? {}
            : {
                tlbSets: Math.max(1, entries / Math.min(4, entries)),
                tlbWays: Math.min(4, entries),
              }),
        },
        // The first SMMU takes every StreamID no other one lists.
        sids: i === 0 ? undefined : sids,
      };
    });
    const m = new SmmuMachine({
      seed,
      smmus,
      framesSize: spec.memory ?? 256 * 2 ** 20,
      strict: spec.lazy !== true,
      // Users' PASID limits (the misc cgroup of the PASID resource): 2^20 PASIDs in all.
      charges: new ChargeTree({ capacity: 2 ** 20, name: "pasid" }),
    });
    super(m, new SmmuOracle(m));
    this.oracle.lazy = spec.lazy === true;
    if (inject !== null) {
      const field = SMMU_INJECTIONS[inject];
      if (isSvaInjection(field)) svaState(m.subsys).inject[field] = true;
      else this.m.driver.inject[field] = true;
    }
  }

  protected get driverOps(): SmmuMachine["driver"] {
    return this.m.driver;
  }

  /**
   * A paging domain: stage 1 (the driver's choice) or, for `"second"`, a stage-2 one (allocated
   * as a nest parent, the way iommufd asks for stage 2 on an SMMU with both stages).
   */
  protected pagingDomainAlloc(dev: Device, stage?: "first" | "second"): IommuDomain | string {
    if (stage !== "second") return iommuPagingDomainAlloc(dev);
    return iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
  }

  protected drainDeferred(): void {}

  /** Each SMMU's STRTAB_BASE and STRTAB_BASE_CFG, as `decode smmu` takes them. */
  snapshotRegisters(): SnapshotUnit[] {
    const out: SnapshotUnit[] = [];
    for (const { hw } of this.m.smmus) {
      const lo = hw.read32(SMMU_REG.STRTAB_BASE);
      const hi = hw.read32(SMMU_REG.STRTAB_BASE + 4);
      out.push({ name: hw.name, register: "STRTAB_BASE", value: hex(hi * 2 ** 32 + lo) });
      out.push({
        name: hw.name,
        register: "STRTAB_BASE_CFG",
        value: hex(hw.read32(SMMU_REG.STRTAB_BASE_CFG)),
      });
    }
    return out;
  }
}
