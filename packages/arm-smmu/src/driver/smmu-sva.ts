// Shared virtual addressing on SMMUv3 (arm-smmu-v3-sva.c): whether an SMMU can walk the CPUs'
// page tables, SVA domains with their own ASID whose CDs point at a process's pgd, and the mmu
// notifier that turns the CPU's TLB flushes and the process's exit into SMMU invalidations.

import {
  type Device,
  IOMMU_DOMAIN_SVA,
  type IommuDomain,
  type IommuDomainOps,
  type IommuMm,
  MM_FLUSH_ALL_END,
  MmuNotifier,
  type MmuNotifierOps,
} from "@iommu-sim/iommu-core";
import { bug } from "@iommu-sim/iommu-core/platform";
import type { ArmSmmuDevice } from "./arm-smmu-device.js";
import { makeSvaCd } from "./entries.js";
import { ARM_SMMU_DOMAIN_SVA, ArmSmmuDomain } from "./smmu-domain.js";
import type { SmmuV3Driver } from "./smmu-v3-driver.js";

/**
 * What Linux reads of the CPUs for SVA: the sanitised ID_AA64MMFR0_EL1 (PARange, ASIDBits), the
 * VA size the kernel runs with, PAGE_SIZE, and whether every CPU has BBML2 without aborts.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_sva_supported
 */
export interface ArmCpuFeatures {
  /** ID_AA64MMFR0_EL1.PARange (0 32 bits ... 5 48 bits, 6 52 bits): the CDs' IPS. */
  readonly parange: number;
  /** vabits_actual: 48, or 52 (then only with 64K pages and an SMMU with VAX: no LPA2). */
  readonly vaBits: number;
  /** ID_AA64MMFR0_EL1.ASIDBits as a width: 8 or 16. */
  readonly asidBits: 8 | 16;
  /** PAGE_SHIFT: 12, 14 or 16. */
  readonly pageShift: 12 | 14 | 16;
  /** system_supports_bbml2_noabort(): the SMMU must then have BBML2 too. */
  readonly bbml2NoAbort: boolean;
}

/**
 * A defconfig arm64 kernel on a current server CPU: 48-bit PA and VA, 16-bit ASIDs, 4K pages, no
 * BBML2 (few CPUs are on the kernel's BBML2 allow-list).
 */
export const DEFAULT_ARM_CPU_FEATURES: ArmCpuFeatures = Object.freeze({
  parange: 5,
  vaBits: 48,
  asidBits: 16,
  pageShift: 12,
  bbml2NoAbort: false,
});

/** PA bits of each ID_AA64MMFR0_EL1.PARange encoding. @kernel arch/arm64/include/asm/cpufeature.h id_aa64mmfr0_parange_to_phys_shift */
const PARANGE_BITS: readonly number[] = [32, 36, 40, 42, 44, 48, 52];

/** PA bits of a PARange encoding (an unknown one is taken as 52, the largest Linux knows). */
export function parangeToPhysShift(parange: number): number {
  return PARANGE_BITS[parange] ?? 52;
}

/** The SMMU features armSmmuSvaSupported looks at. */
export interface SvaSmmuFeatures {
  readonly s1: boolean;
  readonly coherent: boolean;
  readonly vax: boolean;
  readonly bbml2: boolean;
  readonly pgsizeBitmap: number;
  readonly oas: number;
  readonly asidBits: number;
}

/**
 * Whether an SMMU can share the CPUs' page tables: stage 1 (Linux relies on it implicitly: an
 * SMMU without stage 1 has no SubstreamIDs), coherent table walks, 52-bit VAs only with 64K pages
 * (no LPA2) and VAX, BBML2 when the CPUs have it, PAGE_SIZE among its page sizes, an OAS at
 * least the CPUs' PA size, and at least the CPUs' ASID bits (SVA domains no longer use the CPU's
 * ASIDs, but the check stayed).
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_sva_supported
 */
export function armSmmuSvaSupported(f: SvaSmmuFeatures, cpu: ArmCpuFeatures): boolean {
  if (!f.s1 || !f.coherent) return false;
  if (cpu.vaBits === 52 && (cpu.pageShift !== 16 || !f.vax)) return false;
  if (cpu.bbml2NoAbort && !f.bbml2) return false;
  if ((f.pgsizeBitmap & (2 ** cpu.pageShift)) === 0) return false;
  if (f.oas < parangeToPhysShift(cpu.parange)) return false;
  return f.asidBits >= cpu.asidBits;
}

/**
 * An SVA domain: a stage-1 context with its own ASID over the page table of `mm`, and the mmu
 * notifier (embedded, as in the kernel) through which the process's TLB flushes and exit reach
 * the SMMU. One per (mm, SMMU): a domain refuses masters of other SMMUs.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h struct arm_smmu_domain
 */
export class ArmSmmuSvaDomain extends ArmSmmuDomain {
  readonly drv: SmmuV3Driver;
  /** The address space the domain was allocated for (the core also sets `mm`). */
  readonly svaMm: IommuMm;
  readonly mmuNotifier: MmuNotifier;
  /** The mm went away (release ran): the CDs fault everything. */
  released = false;
  /** freeNotifier ran: the ASID is back. */
  freed = false;

  constructor(drv: SmmuV3Driver, smmu: ArmSmmuDevice, mm: IommuMm) {
    super(ARM_SMMU_SVA_DOMAIN_OPS, smmu, ARM_SMMU_DOMAIN_SVA, null, IOMMU_DOMAIN_SVA);
    this.drv = drv;
    // The core sets `mm` (with its own mm_struct reference); the driver keeps its own pointer.
    this.svaMm = mm;
    // Range invalidations use PAGE_SIZE as the leaf size (TG of range commands).
    this.pgsizeBitmap = 2 ** drv.cpu.pageShift;
    this.geometry = { apertureStart: 0, apertureEnd: 2 ** mm.vaBits - 1, forceAperture: true };
    this.mmuNotifier = new MmuNotifier(ARM_SMMU_MMU_NOTIFIER_OPS, this);
  }
}

/** The CD being built (the kernel's on-stack target). */
const target = new Uint32Array(16);

/**
 * Build the SVA CD of `domain` for `master` into `out`: the mm's pgd and VA size, the CPUs'
 * PARange and the mm's MAIR; with `live` false, the released form (EPD0, no stall or record
 * unless stalls are forced).
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_make_sva_cd
 */
function makeCdFor(
  domain: ArmSmmuSvaDomain,
  smmu: ArmSmmuDevice,
  stallEnabled: boolean,
  live: boolean,
  out: Uint32Array,
): void {
  const drv = domain.drv;
  const mm = domain.svaMm;
  makeSvaCd(
    out,
    {
      asid: domain.asid,
      ips: drv.cpu.parange,
      mair: mm.mair,
      stallEnabled,
      mm: live ? mm : null,
    },
    drv.entryFeatures(smmu),
  );
}

/**
 * An SVA domain for `mm` on the SMMU of `dev`: its own ASID from the driver-wide allocator (since
 * BTM support went, Linux no longer shares the CPU's ASID), then the notifier registered on `mm`.
 * `'ENODEV'` for a device the driver never probed; `'EOPNOTSUPP'` when the SMMU has no
 * ARM_SMMU_FEAT_SVA, or (our addition) `mm` is not an AArch64 address space with the CPUs' page
 * size and VA size; `'ENOMEM'` when no ASID is left (Linux: EBUSY from the xarray); the
 * registration's `'EINVAL'` (the mm has exited) or `'ENOMEM'`, with the ASID given back.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_sva_domain_alloc
 */
export function armSmmuSvaDomainAlloc(
  drv: SmmuV3Driver,
  dev: Device,
  mm: IommuMm,
): IommuDomain | "ENOMEM" | "EINVAL" | "EOPNOTSUPP" | "ENODEV" {
  const master = drv.master(dev);
  if (master === null) return "ENODEV";
  const smmu = master.smmu;
  if (!smmu.features.sva) return "EOPNOTSUPP";
  const cpu = drv.cpu;
  if (mm.pgtableFormat !== "aarch64" || mm.pageShift !== cpu.pageShift || mm.vaBits !== cpu.vaBits)
    return "EOPNOTSUPP";
  const asid = drv.asids.allocRange(1, 2 ** smmu.features.asidBits - 1);
  if (typeof asid === "string") return "ENOMEM";
  const domain = new ArmSmmuSvaDomain(drv, smmu, mm);
  domain.asid = asid;
  drv.hooks.asidAllocated?.(asid, domain);
  const ret = mm.mmuNotifierRegister(domain.mmuNotifier);
  if (ret !== 0) {
    // Never used: no invalidation needed before the ASID goes back.
    drv.asids.free(asid);
    drv.hooks.asidFreed?.(asid, domain);
    return ret;
  }
  return domain;
}

/**
 * Attach an SVA domain at `pasid`: the mm is pinned (mmget) so release cannot run in between, the
 * SVA CD goes in through the common PASID path (arm_smmu_set_pasid: hitless CD write, the
 * domain's master list, ATS, IOPF for masters that stall or have PRI, the STE made a CD-table one
 * if the RID is identity or blocked). `'ENODEV'` for an unprobed device; `'EOPNOTSUPP'` without
 * ARM_SMMU_FEAT_SVA; `'EINVAL'` when the mm has exited, for a master of another SMMU (so the core
 * makes one SVA domain per SMMU), a PASID beyond the master's SubstreamIDs, or a RID domain
 * without a CD table; `'ENOMEM'`; IOPF's `'ENODEV'` / `'EBUSY'`.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_sva_set_dev_pasid
 */
function svaSetDevPasid(
  domain: ArmSmmuSvaDomain,
  dev: Device,
  pasid: number,
  old: IommuDomain | null,
): 0 | "EINVAL" | "ENOMEM" | "ENOSPC" | "EBUSY" | "ENODEV" | "EOPNOTSUPP" {
  const drv = domain.drv;
  const master = drv.master(dev);
  if (master === null) return "ENODEV";
  if (!master.smmu.features.sva) return "EOPNOTSUPP";
  const mm = domain.svaMm;
  if (!mm.mmgetNotZero()) return "EINVAL";
  makeCdFor(domain, master.smmu, master.stallEnabled, true, target);
  const ret = drv.setPasid(master, domain, pasid, target, old);
  mm.mmput();
  return ret;
}

/**
 * Free an SVA domain (its last PASID detached): every TLB entry of its ASID invalidated, then the
 * notifier put; freeNotifier gives the ASID back. Linux 6.18 erases the ASID here, between the
 * two; the notifier's free runs at once in the model, so the order TLBI, then ASID back is the
 * same.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_sva_domain_free
 */
function svaDomainFree(domain: ArmSmmuSvaDomain): void {
  if (domain.devices.length > 0) bug(`arm-smmu-v3: SVA domain ${domain.id} freed while attached`);
  const drv = domain.drv;
  if (!drv.inject.earlyAsidReuse) drv.tlbInvAsid(domain.smmu, domain.asid);
  const n = domain.mmuNotifier;
  const mm = n.mm;
  // Someone unregistered the notifier behind the domain's back: free it here.
  if (mm === null || mm.mmuNotifierPut(n) !== 0) svaFreeNotifier(n);
}

/**
 * The domain ops of SVA domains: set_dev_pasid and free only (an SVA domain never goes to a RID;
 * attachDev, which the model's ops type requires, refuses with `'EINVAL'`).
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_sva_domain_ops
 */
const ARM_SMMU_SVA_DOMAIN_OPS: IommuDomainOps = {
  attachDev: () => "EINVAL",
  setDevPasid: (d, dev, pasid, old) => svaSetDevPasid(d as ArmSmmuSvaDomain, dev, pasid, old),
  free: (d) => svaDomainFree(d as ArmSmmuSvaDomain),
};

/** Beyond this many pages an SMMU without range invalidation drops the whole ASID. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c CMDQ_MAX_TLBI_OPS */
function cmdqMaxTlbiOps(pageShift: number): number {
  return 2 ** (pageShift - 3);
}

/**
 * The CPU's TLB flush of [start, end): the whole ASID (TLBI_NH_ASID, or TLBI_EL2_ASID under E2H)
 * for a flush of everything or, without range invalidation, for CMDQ_MAX_TLBI_OPS pages or more;
 * else TLBI_NH_VA by page or by range commands, non-leaf (a table may have gone), PAGE_SIZE
 * granule, with a CMD_SYNC; then the ATCs of the domain's ATS masters at their SSIDs for the
 * range (everything when the TLB flush was whole), with a CMD_SYNC.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_mm_arch_invalidate_secondary_tlbs
 */
function svaInvalidateSecondaryTlbs(
  sub: MmuNotifier,
  _mm: IommuMm,
  start: number,
  end: number,
): void {
  const domain = sub.priv as ArmSmmuSvaDomain;
  const drv = domain.drv;
  if (drv.inject.skipNotifierFlush) return;
  const smmu = domain.smmu;
  const pageShift = drv.cpu.pageShift;
  // The kernel's size = end - start, with ULONG_MAX (a flush of everything) made 0; 0 means all.
  let size = end >= MM_FLUSH_ALL_END ? 0 : end - start;
  if (!smmu.features.rangeInv && size >= cmdqMaxTlbiOps(pageShift) * 2 ** pageShift) size = 0;
  if (size === 0) drv.tlbInvAsid(smmu, domain.asid);
  else drv.tlbInvRangeAsid(domain, start, size, 2 ** pageShift, false);
  if (!drv.inject.skipAtcOnNotifier) drv.atcInvDomain(domain, start, size);
}

/**
 * The process is exiting and its tables are about to go while devices may still be doing DMA:
 * every attachment's CD becomes the released SVA CD (still valid, so no C_BAD_CD storm, but EPD0
 * faults every access, without stall or record unless stalls are forced), written hitlessly; then
 * the whole ASID and every ATC of the domain are invalidated.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_mm_release
 */
function svaRelease(sub: MmuNotifier, _mm: IommuMm): void {
  const domain = sub.priv as ArmSmmuSvaDomain;
  const drv = domain.drv;
  for (const md of domain.devices) {
    const master = md.master;
    const pa = drv.getCdPtr(master, md.ssid);
    if (pa < 0) continue;
    makeCdFor(domain, master.smmu, master.stallEnabled, false, target);
    drv.writeCd(master, md.ssid, pa, target);
  }
  domain.released = true;
  drv.tlbInvAsid(domain.smmu, domain.asid);
  drv.atcInvDomain(domain, 0, 0);
}

/**
 * The notifier's last reference went: the ASID goes back to the allocator (the model frees it
 * here, as the kernel's arm_smmu_domain_free does once ASIDs belong to the domain allocation).
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_mmu_notifier_free
 */
function svaFreeNotifier(sub: MmuNotifier): void {
  const domain = sub.priv as ArmSmmuSvaDomain;
  if (domain.freed) return;
  domain.freed = true;
  const drv = domain.drv;
  drv.asids.free(domain.asid);
  drv.hooks.asidFreed?.(domain.asid, domain);
}

/** @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_mmu_notifier_ops */
const ARM_SMMU_MMU_NOTIFIER_OPS: MmuNotifierOps = {
  archInvalidateSecondaryTlbs: svaInvalidateSecondaryTlbs,
  release: svaRelease,
  freeNotifier: svaFreeNotifier,
};
