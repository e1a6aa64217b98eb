// The driver interface of an IOMMU (what intel-iommu, arm-smmu-v3 and the mock implement) and
// the registered hardware instance the core knows a driver by.

import type { Device } from "../device/device.js";
import type { Errno } from "../errno.js";
import type { IopfFault } from "./io-pgfault.js";
import type { IommuDomain } from "./iommu-domain.js";
import type { IommuGroup } from "./iommu-group.js";
import type { IommuMm } from "./mmu-notifier.js";

/** Capabilities a driver may report. @kernel include/linux/iommu.h iommu_cap */
export const IOMMU_CAP_CACHE_COHERENCY = 0;
export const IOMMU_CAP_NOEXEC = 1;
export const IOMMU_CAP_PRE_BOOT_PROTECTION = 2;
export const IOMMU_CAP_ENFORCE_CACHE_COHERENCY = 3;
export const IOMMU_CAP_DEFERRED_FLUSH = 4;
export const IOMMU_CAP_DIRTY_TRACKING = 5;

/** Per-device features. @kernel include/linux/iommu.h iommu_dev_features */
export const IOMMU_DEV_FEAT_SVA = 0;
export const IOMMU_DEV_FEAT_IOPF = 1;

/** Page response codes. @kernel include/linux/iommu.h iommu_page_response_code */
export const IOMMU_PAGE_RESP_SUCCESS = 0;
export const IOMMU_PAGE_RESP_INVALID = 1;
export const IOMMU_PAGE_RESP_FAILURE = 2;

/** @kernel include/linux/iommu.h iommu_page_response */
export interface IommuPageResponse {
  pasid: number;
  grpid: number;
  code: number;
}

/**
 * A hardware IOMMU instance as registered with the core.
 *
 * @kernel include/linux/iommu.h iommu_device
 */
export class IommuDevice {
  readonly name: string;
  readonly ops: IommuOps;
  /** PASIDs the instance supports (0: none). */
  maxPasids: number;
  /** Driver data. */
  priv: unknown = null;

  constructor(name: string, ops: IommuOps, maxPasids = 0) {
    this.name = name;
    this.ops = ops;
    this.maxPasids = maxPasids;
  }
}

/**
 * What an IOMMU driver implements for the core. Optional members are optional in the kernel too;
 * the core answers for a missing one the way iommu.c does.
 *
 * @kernel include/linux/iommu.h iommu_ops
 */
export interface IommuOps {
  /** Driver name (owner). */
  readonly name: string;
  /** Page sizes the hardware supports (bit n: 2^n bytes). */
  readonly pgsizeBitmap: number;
  /** Whether a guest owns the PASID table (no PASID attach through the host). */
  readonly userPasidTable?: boolean;
  /** The static identity (pass-through) domain, if the driver has one. */
  readonly identityDomain?: IommuDomain;
  /** The static blocking domain, if the driver has one. */
  readonly blockedDomain?: IommuDomain;
  /** The domain a device is attached to while it is released. */
  readonly releaseDomain?: IommuDomain;

  /** Whether the IOMMU serving `dev` has capability `cap` (IOMMU_CAP_*). */
  capable?(dev: Device, cap: number): boolean;
  /** Take `dev` under this driver; returns the instance serving it. */
  probeDevice(dev: Device): IommuDevice | "ENODEV" | "ENOMEM" | "EBUSY" | "EINVAL";
  /** Last call after the device joined its group and default domain. */
  probeFinalize?(dev: Device): void;
  /** Forget `dev` (after it was moved to the release or blocking domain). */
  releaseDevice?(dev: Device): void;
  /** The group `dev` belongs to; without it every device gets its own group. */
  deviceGroup?(dev: Device): IommuGroup | "ENOMEM" | "ENODEV";
  /** The domain type `dev` requires (IOMMU_DOMAIN_*) or 0 for no preference. */
  defDomainType?(dev: Device): number;
  /** Allocate a paging domain for `dev`. */
  domainAllocPaging?(dev: Device): IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV";
  /** Allocate a paging domain with IOMMU_HWPT_ALLOC_* flags. */
  domainAllocPagingFlags?(
    dev: Device,
    flags: number,
  ): IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV" | "EOPNOTSUPP";
  /** Allocate an SVA domain sharing the address space `mm`. */
  domainAllocSva?(
    dev: Device,
    mm: IommuMm,
  ): IommuDomain | "ENOMEM" | "EINVAL" | "EOPNOTSUPP" | "ENODEV";
  /** Allocate a nested domain over `parent` from user data. */
  domainAllocNested?(
    dev: Device,
    parent: IommuDomain,
    flags: number,
    userData: unknown,
  ): IommuDomain | "ENOMEM" | "EINVAL" | "EOPNOTSUPP";
  /** Send the response to a page-request group whose last request was `evt`. */
  pageResponse?(dev: Device, evt: IopfFault, msg: IommuPageResponse): void;
  /** Enable a per-device feature (IOMMU_DEV_FEAT_*). */
  devEnableFeat?(dev: Device, feat: number): 0 | Errno;
  /** Disable a per-device feature. */
  devDisableFeat?(dev: Device, feat: number): 0 | Errno;
}
