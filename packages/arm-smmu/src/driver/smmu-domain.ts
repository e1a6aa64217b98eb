// The SMMUv3 driver's domains (struct arm_smmu_domain, struct arm_smmu_nested_domain) and the
// per-master state (struct arm_smmu_master).

import {
  CacheTagList,
  type Device,
  IOMMU_DOMAIN_NESTED,
  IOMMU_DOMAIN_UNMANAGED,
  IommuDomain,
  type IommuDomainOps,
} from "@iommu-sim/iommu-core";
import { bug } from "@iommu-sim/iommu-core/platform";
import type { LpaePgtable } from "../pgtable/lpae.js";
import type { ArmSmmuDevice } from "./arm-smmu-device.js";
import type { CdTable } from "./cd-table.js";

/** Stage-1 paging domain (a CD with an ASID). */
export const ARM_SMMU_DOMAIN_S1 = 1;
/** Stage-2 paging domain (an STE with a VMID). */
export const ARM_SMMU_DOMAIN_S2 = 2;
/** SVA domain: a CD with its own ASID over a process's CPU page table (no io-pgtable). */
export const ARM_SMMU_DOMAIN_SVA = 3;

/** @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h enum arm_smmu_domain_stage */
export type ArmSmmuDomainStage =
  | typeof ARM_SMMU_DOMAIN_S1
  | typeof ARM_SMMU_DOMAIN_S2
  | typeof ARM_SMMU_DOMAIN_SVA;

/** One attachment of a domain: a master at an SSID (0 for the RID), with ATS or not. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h struct arm_smmu_master_domain */
export interface ArmSmmuMasterDomain {
  readonly master: ArmSmmuMaster;
  readonly ssid: number;
  readonly ats: boolean;
  /** A nested domain's attachment: ATC invalidations cover everything. */
  readonly nestedAtsFlush: boolean;
  /** The attachment holds one of the master's IOPF references (its domain handles faults). */
  readonly usingIopf: boolean;
}

/**
 * A domain of one SMMU: an LPAE stage-1 table with an ASID, a stage-2 table with a VMID, or (SVA)
 * an ASID over a process's page table, which the domain does not own.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h struct arm_smmu_domain
 */
export class ArmSmmuDomain extends IommuDomain {
  readonly smmu: ArmSmmuDevice;
  readonly stage: ArmSmmuDomainStage;
  private readonly pgtbl: LpaePgtable | null;
  /** Stage 1 and SVA: the ASID (from the driver-wide allocator). */
  asid = 0;
  /** Stage 2: the VMID (from the SMMU's allocator). */
  vmid = 0;
  /** Allocated with IOMMU_HWPT_ALLOC_NEST_PARENT: a stage-2 table for nested domains. */
  nestParent = false;
  /** Attachments (masters at SSIDs), in attach order. */
  readonly devices: ArmSmmuMasterDomain[] = [];
  /** Attachments with ATS. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h arm_smmu_domain.nr_ats_masters */
  nrAtsMasters = 0;
  declare cacheTags: CacheTagList;

  /**
   * `pgtable` is null only for SVA domains, whose subclass sets the page sizes and geometry
   * itself.
   */
  constructor(
    ops: IommuDomainOps,
    smmu: ArmSmmuDevice,
    stage: ArmSmmuDomainStage,
    pgtable: LpaePgtable | null,
    type = IOMMU_DOMAIN_UNMANAGED,
  ) {
    super(type, ops);
    this.smmu = smmu;
    this.stage = stage;
    this.pgtbl = pgtable;
    if (pgtable !== null) {
      this.pgsizeBitmap = pgtable.cfg.pgsizeBitmap;
      this.geometry = {
        apertureStart: 0,
        apertureEnd: 2 ** pgtable.cfg.ias - 1,
        forceAperture: true,
      };
    }
    this.cacheTags = new CacheTagList();
  }

  /** The io-pgtable of a stage-1 or stage-2 domain (an SVA domain has none: a model bug to ask). */
  get pgtable(): LpaePgtable {
    const pt = this.pgtbl;
    if (pt === null)
      return bug(`arm-smmu-v3: domain ${this.id} (stage ${this.stage}) has no io-pgtable`);
    return pt;
  }

  /** The ASID (stage 1, SVA) or VMID (stage 2) the domain's TLB entries are tagged with. */
  get tag(): number {
    return this.stage === ARM_SMMU_DOMAIN_S2 ? this.vmid : this.asid;
  }
}

/**
 * A nested domain: the guest's stage-1 configuration (its vSTE: Config, S1ContextPtr as an IPA,
 * S1Fmt, S1CDMax, S1DSS) over a stage-2 parent.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h struct arm_smmu_nested_domain
 */
export class ArmSmmuNestedDomain extends IommuDomain {
  readonly parent: ArmSmmuDomain;
  /** The vSTE's words 0-3 (qwords 0 and 1), checked at allocation. */
  readonly vste: Uint32Array;
  /** The guest allowed ATS (vSTE.EATS = 1). */
  readonly enableAts: boolean;

  constructor(ops: IommuDomainOps, parent: ArmSmmuDomain, vste: Uint32Array, enableAts: boolean) {
    super(IOMMU_DOMAIN_NESTED, ops);
    this.parent = parent;
    this.vste = vste;
    this.enableAts = enableAts;
  }
}

/**
 * What the driver keeps per device: its StreamID, SubstreamID width, CD table, ATS and PRI state
 * and what is attached.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h struct arm_smmu_master
 */
export interface ArmSmmuMaster {
  readonly dev: Device;
  readonly smmu: ArmSmmuDevice;
  /** The master's StreamID (the model's devices have one). */
  readonly sid: number;
  /** log2 of the SubstreamIDs the master may use (0: none). */
  ssidBits: number;
  stallEnabled: boolean;
  /** ATS could be used: the SMMU and the device have it. */
  readonly atsSupported: boolean;
  atsEnabled: boolean;
  /** The STE installed has EATS set. */
  steAtsEnabled: boolean;
  cdTable: CdTable | null;
  priEnabled: boolean;
  iopfRefcount: number;
  /** Domains attached at SSIDs other than 0. */
  readonly pasids: Map<number, IommuDomain>;
}
