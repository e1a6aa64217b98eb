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
 * What the cache-tag flushes need of a domain (a paging domain or an SVA domain): its tags, and
 * whether they name first-stage translations (PASID-based IOTLB invalidation).
 */
export interface DmarTaggedDomain {
  readonly useFirstLevel: boolean;
  readonly cacheTags: CacheTagList;
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
  /** Page-table levels (first stage 4 or 5; second stage agaw + 2). */
  readonly levels: number;
  /** Second-stage AGAW (the AW field); for first-stage domains the unit's, as the kernel writes. */
  readonly agaw: number;
  /**
   * Input address bits the domain may use: the table's reach clamped to the allocating unit's
   * MGAW (compute_vasz_lg2_fs / compute_vasz_lg2_ss); a unit with a smaller MGAW cannot take it.
   */
  vasz = 0;
  /**
   * Page walks of the allocating unit snoop the CPU caches (no PT_FEAT_DMA_INCOHERENT): such a
   * table is not flushed from the CPU caches, so a unit that does not snoop cannot use it.
   */
  coherent = true;
  /**
   * Maps must be followed by cache_tag_flush_range_np: the allocating unit needs write-buffer
   * flushes (CAP.RWBF) or, for second-stage tables, caches not-present entries (CAP.CM).
   *
   * @kernel drivers/iommu/intel/iommu.h dmar_domain.iotlb_sync_map
   */
  iotlbSyncMap = false;
  /** Allocated with IOMMU_HWPT_ALLOC_NEST_PARENT. @kernel drivers/iommu/intel/iommu.h dmar_domain.nested_parent */
  nestedParent = false;
  /**
   * Dirty tracking is on: PASID entries get SSADE. Off at allocation; the model has no
   * set_dirty_tracking yet, so it stays off.
   *
   * @kernel drivers/iommu/intel/iommu.h dmar_domain.dirty_tracking
   */
  dirtyTracking = false;
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
