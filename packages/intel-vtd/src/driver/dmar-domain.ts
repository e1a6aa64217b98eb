// A paging domain of the VT-d driver (struct dmar_domain): a first- or second-stage table, the
// domain ID it has on each unit it is attached through, and its cache tags.

import {
  CacheTagList,
  IOMMU_DOMAIN_UNMANAGED,
  IommuDomain,
  type IommuDomainOps,
} from "@iommu-sim/iommu-core";
import type { VtdFsPgtable } from "../pgtable/first-stage.js";
import type { VtdSsPgtable } from "../pgtable/second-stage.js";
import type { IntelIommu } from "./intel-iommu.js";

/** A domain's ID on one unit and how many attachments through that unit use it. @kernel drivers/iommu/intel/iommu.h struct iommu_domain_info */
export interface IommuDomainInfo {
  did: number;
  refcnt: number;
}

/**
 * A paging domain.
 *
 * @kernel drivers/iommu/intel/iommu.h struct dmar_domain
 */
export class DmarDomain extends IommuDomain {
  readonly pgtable: VtdFsPgtable | VtdSsPgtable;
  /** First-stage table (PGTT 1 / PASID-based invalidation) rather than second-stage. */
  readonly useFirstLevel: boolean;
  /** Page-table levels (first stage 4/5; second stage agaw + 2). */
  readonly levels: number;
  /** Second-stage AGAW (the AW field); for first-stage domains the unit's, as the kernel writes. */
  readonly agaw: number;
  /** Domain ID per unit. */
  readonly iommuArray = new Map<IntelIommu, IommuDomainInfo>();
  /** Attachments: (device name, pasid) keys, for the checks at free. */
  attachments = 0;
  declare cacheTags: CacheTagList;

  constructor(
    ops: IommuDomainOps,
    pgtable: VtdFsPgtable | VtdSsPgtable,
    useFirstLevel: boolean,
    agaw: number,
  ) {
    super(IOMMU_DOMAIN_UNMANAGED, ops);
    this.pgtable = pgtable;
    this.useFirstLevel = useFirstLevel;
    this.levels = pgtable.levels;
    this.agaw = agaw;
    this.pgsizeBitmap = pgtable.cfg.pgsizeBitmap;
    this.geometry = {
      apertureStart: 0,
      apertureEnd: 2 ** pgtable.cfg.ias - 1,
      forceAperture: true,
    };
    this.cacheTags = new CacheTagList();
  }

  /** The domain ID on `unit` (0 when not attached through it). @kernel drivers/iommu/intel/iommu.h domain_id_iommu */
  didOn(unit: IntelIommu): number {
    return this.iommuArray.get(unit)?.did ?? 0;
  }
}
