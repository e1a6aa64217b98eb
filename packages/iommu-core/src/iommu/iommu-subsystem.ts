// The IOMMU subsystem's global state (iommu.c's file-scope variables), one object per simulated
// machine so that several machines can live in one process and each run is deterministic.

import { type ChargeTree, Ida, IoasidSet, IoasidSpace } from "@iommu-sim/ioasid";
import { LogicalClock } from "../platform/clock.js";
import { Trace } from "../platform/trace.js";
import { IOMMU_DOMAIN_DMA, IOMMU_DOMAIN_DMA_FQ, IOMMU_DOMAIN_IDENTITY } from "./iommu-domain.js";
import type { IommuDevice } from "./iommu-ops.js";

/** The PASID of DMA without a PASID (the RID's translation). @kernel include/linux/iommu.h IOMMU_NO_PASID */
export const IOMMU_NO_PASID = 0;
/** The lowest PASID the global allocator hands out. @kernel include/linux/iommu.h IOMMU_FIRST_GLOBAL_PASID */
export const IOMMU_FIRST_GLOBAL_PASID = 1;
/** No PASID. @kernel include/linux/iommu.h IOMMU_PASID_INVALID */
export const IOMMU_PASID_INVALID = 0xffffffff;

export interface IommuSubsystemOptions {
  /**
   * Default domain type for devices that do not require one: `"dma"` (translated, the kernel's
   * default), or `"identity"` (iommu.passthrough=1).
   */
  defaultDomain?: "dma" | "identity";
  /** Strict invalidation (iommu.strict=1, the default) or lazy, with a flush queue. */
  strict?: boolean;
  clock?: LogicalClock;
  trace?: Trace;
  /** The charge tree user-held PASIDs count against (the misc cgroup of the PASID resource). */
  charges?: ChargeTree;
}

/**
 * Everything iommu.c keeps in globals: the registered instances, the default domain policy, the
 * group numbering and the one global PASID space of iommu_alloc_global_pasid().
 */
export class IommuSubsystem {
  readonly clock: LogicalClock;
  readonly trace: Trace;
  /** @kernel drivers/iommu/iommu.c iommu_def_domain_type */
  defDomainType: number;
  /** @kernel drivers/iommu/iommu.c iommu_dma_strict */
  strict: boolean;
  /** Registered hardware instances. @kernel drivers/iommu/iommu.c iommu_device_list */
  readonly iommus: IommuDevice[] = [];
  /** Group numbers. @kernel drivers/iommu/iommu.c iommu_group_ida */
  readonly groupIds = new Ida();
  /** The global PASID space. @kernel drivers/iommu/iommu.c iommu_global_pasid_ida */
  readonly pasids: IoasidSpace;
  /** The set global PASIDs are allocated in. */
  readonly globalPasidSet = new IoasidSet("global");
  /** The charge tree of user-held PASIDs, if limits are configured. */
  readonly charges: ChargeTree | undefined;
  private nextDomainId = 1;

  constructor(options: IommuSubsystemOptions = {}) {
    this.clock = options.clock ?? new LogicalClock();
    this.trace = options.trace ?? new Trace(this.clock);
    this.strict = options.strict ?? true;
    this.defDomainType =
      options.defaultDomain === "identity"
        ? IOMMU_DOMAIN_IDENTITY
        : this.strict
          ? IOMMU_DOMAIN_DMA
          : IOMMU_DOMAIN_DMA_FQ;
    this.charges = options.charges;
    this.pasids = new IoasidSpace({ charges: options.charges });
  }

  /** A fresh number for a domain's `id`. */
  allocDomainId(): number {
    return this.nextDomainId++;
  }

  /**
   * Register a hardware instance, making it available to devices probed afterwards.
   * `'EEXIST'` if it is registered already.
   *
   * @kernel drivers/iommu/iommu.c iommu_device_register
   */
  iommuDeviceRegister(iommu: IommuDevice): 0 | "EEXIST" {
    if (this.iommus.includes(iommu)) return "EEXIST";
    this.iommus.push(iommu);
    return 0;
  }

  /**
   * Unregister an instance. `'ENOENT'` if it was not registered.
   *
   * @kernel drivers/iommu/iommu.c iommu_device_unregister
   */
  iommuDeviceUnregister(iommu: IommuDevice): 0 | "ENOENT" {
    const i = this.iommus.indexOf(iommu);
    if (i < 0) return "ENOENT";
    this.iommus.splice(i, 1);
    return 0;
  }
}
