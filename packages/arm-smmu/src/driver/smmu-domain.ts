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
import type { LpaePgtable } from "../pgtable/lpae.js";
import type { ArmSmmuDevice } from "./arm-smmu-device.js";
import type { CdTable } from "./cd-table.js";

/** Stage-1 paging domain (a CD with an ASID). */
export const ARM_SMMU_DOMAIN_S1 = 1;
/** Stage-2 paging domain (an STE with a VMID). */
export const ARM_SMMU_DOMAIN_S2 = 2;

/** One attachment of a domain: a master at an SSID (0 for the RID), with ATS or not. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h struct arm_smmu_master_domain */
export interface ArmSmmuMasterDomain {
  readonly master: ArmSmmuMaster;
  readonly ssid: number;
  readonly ats: boolean;
  /** A nested domain's attachment: ATC invalidations cover everything. */
  readonly nestedAtsFlush: boolean;
}

/**
 * A paging domain: an LPAE stage-1 table with an ASID, or a stage-2 table with a VMID, on one
 * SMMU.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h struct arm_smmu_domain
 */
export class ArmSmmuDomain extends IommuDomain {
  readonly smmu: ArmSmmuDevice;
  readonly stage: typeof ARM_SMMU_DOMAIN_S1 | typeof ARM_SMMU_DOMAIN_S2;
  readonly pgtable: LpaePgtable;
  /** Stage 1: the ASID (from the driver-wide allocator). */
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

  constructor(
    ops: IommuDomainOps,
    smmu: ArmSmmuDevice,
    stage: typeof ARM_SMMU_DOMAIN_S1 | typeof ARM_SMMU_DOMAIN_S2,
    pgtable: LpaePgtable,
  ) {
    super(IOMMU_DOMAIN_UNMANAGED, ops);
    this.smmu = smmu;
    this.stage = stage;
    this.pgtable = pgtable;
    this.pgsizeBitmap = pgtable.cfg.pgsizeBitmap;
    this.geometry = {
      apertureStart: 0,
      apertureEnd: 2 ** pgtable.cfg.ias - 1,
      forceAperture: true,
    };
    this.cacheTags = new CacheTagList();
  }

  /** The ASID or VMID the domain's TLB entries are tagged with. */
  get tag(): number {
    return this.stage === ARM_SMMU_DOMAIN_S1 ? this.asid : this.vmid;
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
