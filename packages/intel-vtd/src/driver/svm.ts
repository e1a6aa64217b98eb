// Shared virtual addressing on VT-d (drivers/iommu/intel/svm.c): SVA domains, whose PASID entries
// point the first stage at a process's CPU page table, kept coherent by an mmu notifier.

import {
  type AttachErrno,
  CACHE_TAG_DEVTLB,
  CACHE_TAG_IOTLB,
  CacheTagList,
  type Device,
  IOMMU_DOMAIN_SVA,
  IOMMU_NO_PASID,
  IommuDomain,
  type IommuDomainOps,
  type IommuMm,
  MM_FLUSH_ALL_END,
  MmuNotifier,
  type MmuNotifierOps,
} from "@iommu-sim/iommu-core";
import { bug } from "@iommu-sim/iommu-core/platform";
import { PGTT_FL } from "../format/pasid-entry.js";
import type { DmarTaggedDomain } from "./dmar-domain.js";
import { FLPT_DEFAULT_DID, type IntelIommu } from "./intel-iommu.js";
import type { DeviceDomainInfo, VtdDriverInjections } from "./vtd-driver.js";

/**
 * Whether the CPUs map 1 GiB pages (X86_FEATURE_GBPAGES). The model has no CPU; every x86-64 CPU
 * that runs SVA workloads has them, so a process table may hold 1 GiB leaves.
 */
const CPU_GBPAGES = true;

/** One (device, PASID) an SVA domain is attached at. @kernel drivers/iommu/intel/iommu.h struct dev_pasid_info */
export interface DevPasidInfo {
  readonly dev: Device;
  readonly pasid: number;
}

/**
 * An SVA domain: no table of its own, the process's CPU table instead (`mm.pgd`), domain ID
 * FLPT_DEFAULT_DID on every unit, cache tags per (unit, DID 1, PASID) and per ATS device, and
 * the mmu notifier that embeds it (its `priv`).
 *
 * @kernel drivers/iommu/intel/iommu.h struct dmar_domain
 */
export class DmarSvaDomain extends IommuDomain implements DmarTaggedDomain {
  /** The process table is first-stage (x86-64) format: PASID-based invalidations. */
  readonly useFirstLevel = true;
  declare cacheTags: CacheTagList;
  readonly notifier: MmuNotifier;
  /** Where the domain is attached (dev_pasids). */
  readonly devPasids: DevPasidInfo[] = [];
  /** The notifier's last reference went (free_notifier): the kernel frees the domain there. */
  freed = false;

  constructor(ops: IommuDomainOps, mmuOps: MmuNotifierOps, mm: IommuMm) {
    super(IOMMU_DOMAIN_SVA, ops);
    this.mm = mm;
    this.cacheTags = new CacheTagList();
    this.notifier = new MmuNotifier(mmuOps, this);
  }
}

/** Whether `domain` is an SVA domain that takes I/O page faults (what attach-time IOPF counts). */
function svaWantsIopf(domain: IommuDomain | null): boolean {
  return domain instanceof DmarSvaDomain && domain.iopfHandler !== null;
}

/**
 * What svm.c uses of the rest of the driver (iommu.c, pasid.c, cache.c); VtdDriver provides it.
 */
export interface VtdSvmBackend {
  readonly inject: VtdDriverInjections;
  deviceInfo(dev: Device): DeviceDomainInfo | null;
  /** Run the invalidations the earlyPasidFree injection postponed. */
  drainDeferred(): void;
  /** intel_pasid_setup_first_level: write a not-present entry from `fields`, P last. */
  pasidSetup(
    info: DeviceDomainInfo,
    pasid: number,
    fields: Record<string, number>,
  ): 0 | "EBUSY" | "ENODEV";
  /** intel_pasid_tear_down_entry. */
  pasidTearDown(info: DeviceDomainInfo, pasid: number, faultIgnore: boolean): void;
  /** domain_remove_dev_pasid for whatever `old` is. */
  domainRemoveDevPasid(old: IommuDomain | null, info: DeviceDomainInfo, pasid: number): void;
  /** intel_iommu_enable_iopf. */
  enableIopf(info: DeviceDomainInfo): 0 | "ENODEV" | "EBUSY";
  /** intel_iommu_disable_iopf. */
  disableIopf(info: DeviceDomainInfo): void;
  /** cache_tag_flush_range of [start, end] with IH clear; `skipDevtlb` for skipAtcOnNotifier. */
  flushRange(domain: DmarTaggedDomain, start: number, end: number, skipDevtlb: boolean): void;
  /** cache_tag_flush_all. */
  flushAll(domain: DmarTaggedDomain, skipDevtlb: boolean): void;
}

/**
 * Whether a unit can share CPU page tables: scalable mode with PASIDs, first-stage tables (Linux
 * finds a unit without them only when the entry is written, -EINVAL), and 1 GiB first-stage pages
 * since the CPUs use them. The CPU's 5-level paging is checked per address space instead
 * (`svaSupported`), as the model's processes each say how many levels their table has.
 *
 * @kernel drivers/iommu/intel/svm.c intel_svm_check
 */
export function intelSvmCheck(unit: IntelIommu): boolean {
  if (!unit.pasidSupported || !unit.caps.FLTS) return false;
  if (CPU_GBPAGES && !unit.caps.FL1GP) return false;
  return true;
}

/**
 * Whether `info`'s device can use SVA on `mm`. `'EOPNOTSUPP'` when its unit cannot share CPU
 * tables, for a table not in x86-64 format (or of neither 4 nor 5 levels), or 5-level without
 * CAP.FL5LP (Linux: -ENODEV from VTD_FLAG_SVM_CAPABLE); `'EINVAL'` when PASID or ATS is not on, or
 * PRI is supported but not on (a device without PRI handles its faults itself).
 *
 * @kernel drivers/iommu/intel/svm.c intel_iommu_sva_supported
 */
export function svaSupported(info: DeviceDomainInfo, mm: IommuMm): 0 | "EOPNOTSUPP" | "EINVAL" {
  const unit = info.unit;
  if (!unit.svmCapable) return "EOPNOTSUPP";
  if (mm.pgtableFormat !== "x86-64" || (mm.levels !== 4 && mm.levels !== 5)) return "EOPNOTSUPP";
  if (mm.levels === 5 && !unit.caps.FL5LP) return "EOPNOTSUPP";
  if (!info.dev.pasidEnabled || !info.atsEnabled) return "EINVAL";
  if (info.priSupported && !info.priEnabled) return "EINVAL";
  return 0;
}

/**
 * The SVA half of the VT-d driver: domain allocation, the domain's ops and the mmu-notifier ops.
 *
 * Deliberate differences from Linux: an unsupported unit or address space is `'EOPNOTSUPP'`
 * (Linux: -ENODEV) and an unprobed device `'ENODEV'` (Linux: -EINVAL); attach-time IOPF is counted
 * for SVA domains only (paging domains keep the IOMMU_DEV_FEAT_IOPF refcount of the model's core);
 * replacing what is at a PASID tears the old entry down first, as the driver's other set_dev_pasid
 * paths do, where Linux rewrites the present entry.
 *
 * @kernel drivers/iommu/intel/svm.c
 */
export class IntelSvm {
  /** The SVA domains' ops. @kernel drivers/iommu/intel/svm.c intel_svm_domain_ops */
  readonly domainOps: IommuDomainOps;
  /** @kernel drivers/iommu/intel/svm.c intel_mmuops */
  readonly mmuOps: MmuNotifierOps;
  private readonly drv: VtdSvmBackend;

  constructor(drv: VtdSvmBackend) {
    this.drv = drv;
    this.domainOps = {
      // An SVA domain lives at PASIDs only; the core never attaches one to a RID.
      attachDev: () => "EINVAL",
      setDevPasid: (d, dev, pasid, old) => this.setDevPasid(d as DmarSvaDomain, dev, pasid, old),
      free: (d) => this.domainFree(d as DmarSvaDomain),
    };
    this.mmuOps = {
      release: (sub) => this.mmRelease(sub.priv as DmarSvaDomain),
      archInvalidateSecondaryTlbs: (sub, _mm, start, end) =>
        this.invalidateSecondaryTlbs(sub.priv as DmarSvaDomain, start, end),
      freeNotifier: (sub) => {
        (sub.priv as DmarSvaDomain).freed = true;
      },
    };
  }

  /**
   * An SVA domain for `dev` sharing `mm`, its notifier registered on `mm`. `'ENODEV'` for an
   * unprobed device; `svaSupported`'s errnos; the registration's (`'EINVAL'`, `'ENOMEM'`).
   *
   * @kernel drivers/iommu/intel/svm.c intel_svm_domain_alloc
   */
  domainAlloc(
    dev: Device,
    mm: IommuMm,
  ): DmarSvaDomain | "ENODEV" | "EOPNOTSUPP" | "EINVAL" | "ENOMEM" {
    const info = this.drv.deviceInfo(dev);
    if (info === null) return "ENODEV";
    const ok = svaSupported(info, mm);
    if (ok !== 0) return ok;
    const domain = new DmarSvaDomain(this.domainOps, this.mmuOps, mm);
    const ret = mm.mmuNotifierRegister(domain.notifier);
    if (ret !== 0) return ret;
    return domain;
  }

  /**
   * The first-stage PASID entry of an SVA domain: FLPTR = mm.pgd, FLPM for 5 levels, DID 1, the
   * unit's AGAW, PWSNP when page walks snoop (ECAP.SMPWCS; Linux 6.19 sets it unconditionally),
   * no SRE/WPE (user requests only), no NXE (dropped in 2024), no EAFE, no PGSNP, FPD clear.
   *
   * @kernel drivers/iommu/intel/pasid.c pasid_pte_config_first_level
   */
  private entryFields(unit: IntelIommu, mm: IommuMm): Record<string, number> {
    return {
      P: 1,
      DID: FLPT_DEFAULT_DID,
      AW: unit.agaw,
      PGTT: PGTT_FL,
      PWSNP: unit.caps.SMPWCS ? 1 : 0,
      FLPTR: mm.pgd,
      FLPM: mm.levels === 5 ? 1 : 0,
    };
  }

  /**
   * Attach at `pasid` of `dev`: check SVA is supported, record the (device, PASID) with its cache
   * tags (DID 1: no domain ID is allocated), move IOPF over when the device has PRI (a device
   * without PRI handles its faults itself), tear down what was there, write the entry; then give
   * up the old domain. A failure unwinds in reverse. `svaSupported`'s errnos; `'ENODEV'` for an
   * unprobed device or a PASID beyond its table; `'EINVAL'` for IOMMU_NO_PASID or a domain whose
   * mm is gone; `'EBUSY'` when the entry is present with nothing attached; IOPF's `'ENODEV'` and
   * `'EBUSY'`.
   *
   * @kernel drivers/iommu/intel/svm.c intel_svm_set_dev_pasid
   */
  private setDevPasid(
    domain: DmarSvaDomain,
    dev: Device,
    pasid: number,
    old: IommuDomain | null,
  ): 0 | AttachErrno | "EOPNOTSUPP" {
    const drv = this.drv;
    drv.drainDeferred();
    const info = drv.deviceInfo(dev);
    const mm = domain.mm;
    if (info === null) return "ENODEV";
    if (mm === null || pasid === IOMMU_NO_PASID) return "EINVAL";
    const ok = svaSupported(info, mm);
    if (ok !== 0) return ok;
    this.addDevPasid(domain, info, pasid);
    const pri = info.priSupported;
    if (pri) {
      const ret = this.iopfReplace(info, domain, old);
      if (ret !== 0) {
        this.removeDevPasid(domain, info, pasid);
        return ret;
      }
    }
    if (old !== null) drv.pasidTearDown(info, pasid, false);
    const set = drv.pasidSetup(info, pasid, this.entryFields(info.unit, mm));
    if (set !== 0) {
      if (pri) this.iopfReplace(info, old, domain);
      this.removeDevPasid(domain, info, pasid);
      return set;
    }
    info.pasids.set(pasid, domain);
    drv.domainRemoveDevPasid(old, info, pasid);
    return 0;
  }

  /**
   * Move IOPF from `prev` to `next` at one PASID: on when only `next` takes faults, off when only
   * `prev` did.
   *
   * @kernel drivers/iommu/intel/iommu.h iopf_for_domain_replace
   */
  private iopfReplace(
    info: DeviceDomainInfo,
    next: IommuDomain | null,
    prev: IommuDomain | null,
  ): 0 | "ENODEV" | "EBUSY" {
    const want = svaWantsIopf(next);
    const had = svaWantsIopf(prev);
    if (want && !had) return this.drv.enableIopf(info);
    if (!want && had) this.drv.disableIopf(info);
    return 0;
  }

  /**
   * IOPF off for an SVA domain leaving a PASID, once its entry is torn down and its page
   * requests drained.
   *
   * @kernel drivers/iommu/intel/iommu.h iopf_for_domain_remove
   */
  iopfRemove(info: DeviceDomainInfo, old: IommuDomain | null): void {
    if (svaWantsIopf(old)) this.drv.disableIopf(info);
  }

  /**
   * Record (dev, pasid) and take its cache tags: the IOTLB tag (unit, DID 1, pasid), and the
   * device-TLB tag when ATS is on. domain_attach_iommu allocates nothing for SVA domains.
   *
   * @kernel drivers/iommu/intel/iommu.c domain_add_dev_pasid
   * @kernel drivers/iommu/intel/cache.c cache_tag_assign_domain
   */
  private addDevPasid(domain: DmarSvaDomain, info: DeviceDomainInfo, pasid: number): void {
    const iommu = info.unit.iommu;
    domain.cacheTags.assign(CACHE_TAG_IOTLB, iommu, FLPT_DEFAULT_DID, pasid, null);
    if (info.atsEnabled)
      domain.cacheTags.assign(CACHE_TAG_DEVTLB, iommu, FLPT_DEFAULT_DID, pasid, info.dev);
    domain.devPasids.push({ dev: info.dev, pasid });
  }

  /**
   * Forget (dev, pasid) and give its cache tags back.
   *
   * @kernel drivers/iommu/intel/iommu.c domain_remove_dev_pasid
   * @kernel drivers/iommu/intel/cache.c cache_tag_unassign_domain
   */
  removeDevPasid(domain: DmarSvaDomain, info: DeviceDomainInfo, pasid: number): void {
    const list = domain.devPasids;
    for (let i = 0; i < list.length; i++) {
      const dp = list[i] as DevPasidInfo;
      if (dp.dev === info.dev && dp.pasid === pasid) {
        list.splice(i, 1);
        break;
      }
    }
    const iommu = info.unit.iommu;
    domain.cacheTags.unassign(CACHE_TAG_IOTLB, iommu, FLPT_DEFAULT_DID, pasid, null);
    if (info.atsEnabled)
      domain.cacheTags.unassign(CACHE_TAG_DEVTLB, iommu, FLPT_DEFAULT_DID, pasid, info.dev);
  }

  /**
   * Drop the domain's notifier reference; the domain goes with it (freeNotifier).
   *
   * @kernel drivers/iommu/intel/svm.c intel_svm_domain_free
   */
  private domainFree(domain: DmarSvaDomain): void {
    this.drv.drainDeferred();
    if (domain.devPasids.length !== 0)
      bug(`intel-iommu: SVA domain ${domain.id} freed while attached`);
    const mm = domain.notifier.mm;
    if (mm === null) bug(`intel-iommu: SVA domain ${domain.id} freed twice`);
    mm.mmuNotifierPut(domain.notifier);
  }

  /**
   * The CPU flushed [start, end) of the process's TLB: invalidate the same range under every tag
   * of the domain (end - 1: the IOMMU's ranges are inclusive), IH clear; the whole domain for
   * TLB_FLUSH_ALL.
   *
   * @kernel drivers/iommu/intel/svm.c intel_arch_invalidate_secondary_tlbs
   */
  private invalidateSecondaryTlbs(domain: DmarSvaDomain, start: number, end: number): void {
    const inject = this.drv.inject;
    if (inject.skipNotifierFlush) return;
    if (start === 0 && end === MM_FLUSH_ALL_END)
      this.drv.flushAll(domain, inject.skipAtcOnNotifier);
    else if (end > start) this.drv.flushRange(domain, start, end - 1, inject.skipAtcOnNotifier);
  }

  /**
   * The process is exiting and its tables are about to go: tear down every PASID entry of the
   * domain with fault_ignore (P clear, FPD set, with their invalidations), so that DMA the device
   * still issues faults without a fault record. The later unbind finds the entries in that state.
   *
   * @kernel drivers/iommu/intel/svm.c intel_mm_release
   */
  private mmRelease(domain: DmarSvaDomain): void {
    const drv = this.drv;
    for (const dp of domain.devPasids) {
      const info = drv.deviceInfo(dp.dev);
      if (info !== null) drv.pasidTearDown(info, dp.pasid, true);
    }
  }
}
