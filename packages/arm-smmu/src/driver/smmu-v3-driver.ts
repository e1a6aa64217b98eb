// The Arm SMMUv3 driver (drivers/iommu/arm/arm-smmu-v3): core's IommuOps over one or more SMMUs,
// which it reaches only through their registers, the stream and CD tables in memory and the
// command, event and PRI queues, in the orders Linux uses.

import { Ida } from "@iommu-sim/ioasid";
import {
  type AttachErrno,
  CACHE_TAG_DEVTLB,
  CACHE_TAG_IOTLB,
  type Device,
  type Errno,
  IOMMU_CAP_CACHE_COHERENCY,
  IOMMU_CAP_DEFERRED_FLUSH,
  IOMMU_CAP_DIRTY_TRACKING,
  IOMMU_CAP_NOEXEC,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_DOMAIN_BLOCKED,
  IOMMU_DOMAIN_IDENTITY,
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID,
  IOMMU_FAULT_PERM_EXEC,
  IOMMU_FAULT_PERM_PRIV,
  IOMMU_FAULT_PERM_READ,
  IOMMU_FAULT_PERM_WRITE,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_NO_PASID,
  IOMMU_PAGE_RESP_INVALID,
  IOMMU_PAGE_RESP_SUCCESS,
  type IommuDevice,
  IommuDomain,
  type IommuDomainOps,
  type IommuFlushOps,
  type IommuIotlbGather,
  type IommuMm,
  type IommuOps,
  type IommuPageResponse,
  type IommuSubsystem,
  type IopfFault,
  IopfQueue,
  iommuGetDomainForDev,
  iommuIotlbGatherAddPage,
  iommuReportDeviceFault,
} from "@iommu-sim/iommu-core";
import {
  bug,
  type FrameAllocator,
  type Mmio,
  type PhysMemory,
  TWO32,
} from "@iommu-sim/iommu-core/platform";
import {
  ATC_INV_SIZE_ALL,
  CMDQ_OP,
  PRI_RESP_DENY,
  PRI_RESP_FAIL,
  PRI_RESP_SUCC,
} from "../format/commands.js";
import { EVT_ID } from "../format/events.js";
import { Q_OVERFLOW_FLAG, SMMU_REG } from "../format/registers.js";
import { S1DSS_BYPASS, S1DSS_SSID0, S1DSS_TERMINATE, STE_CFG_S1_TRANS } from "../format/ste.js";
import { type LpaeGranule, LpaePgtable, s2sl0Of, tcrPsOf, tcrTgOf } from "../pgtable/lpae.js";
import { ArmSmmuDevice, type ArmSmmuReadQueue, CTXDESC_LINEAR_CDMAX } from "./arm-smmu-device.js";
import { CdTable } from "./cd-table.js";
import {
  clearCd,
  makeAbortSte,
  makeBypassSte,
  makeCdtableSte,
  makeNestedSte,
  makeS1Cd,
  makeS2DomainSte,
  type SmmuEntryFeatures,
  validateVste,
} from "./entries.js";
import { CD_USED_OPS, type EntryWriterOps, STE_USED_OPS, writeEntry } from "./entry-writer.js";
import {
  ARM_SMMU_DOMAIN_S1,
  ARM_SMMU_DOMAIN_S2,
  ArmSmmuDomain,
  type ArmSmmuMaster,
  type ArmSmmuMasterDomain,
  ArmSmmuNestedDomain,
} from "./smmu-domain.js";
import {
  type ArmCpuFeatures,
  armSmmuSvaDomainAlloc,
  DEFAULT_ARM_CPU_FEATURES,
} from "./smmu-sva.js";

const PAGE = 4096;
/** NUM of a range TLBI holds 5 bits: up to 31 + 1 chunks. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CMDQ_TLBI_RANGE_NUM_MAX */
const CMDQ_TLBI_RANGE_NUM_MAX = 31;
/** MAIR io-pgtable writes: Normal NC, Normal WB RWA, Device nGnRE, inner NC outer WB. @kernel drivers/iommu/io-pgtable-arm.c ARM_LPAE_MAIR_ATTR_IDX_NC */
const LPAE_MAIR_LO = 0xf404ff44;
/** Page requests a PRI device may have in flight (the out-of-tree PRI series uses the queue size). */
const PRI_REQUESTS = 32;
/** Event records kept for inspection. */
const EVENT_LOG = 256;

/** Driver steps the harness can make the driver skip, to prove its oracle catches the bug. */
export interface SmmuDriverInjections {
  /** Skip the TLB invalidations of unmaps and flushes (TLBI_NH_VA / S2_IPA / ASID / VMALL). */
  skipTlbi: boolean;
  /** Skip the CFGI_STE / CFGI_CD (and their syncs) of entry updates. */
  skipCfgi: boolean;
  /** Skip the ATC invalidations of unmaps, flushes and detaches. */
  skipAtcInv: boolean;
  /** Free a stage-1 domain's ASID without the TLB invalidation that clears it. */
  earlyAsidReuse: boolean;
  /** Write STEs in qword order with one sync at the end (no V = 0 step on breaking changes). */
  tornSteWrite: boolean;
  /** SVA: the mmu notifier's arch_invalidate_secondary_tlbs does nothing (no TLBI, no ATC_INV). */
  skipNotifierFlush: boolean;
  /** SVA: the mmu notifier invalidates the TLB but not the ATCs of the domain's ATS masters. */
  skipAtcOnNotifier: boolean;
}

/** Where the driver reports ASID and VMID lifetimes (the oracle listens). */
export interface SmmuDriverHooks {
  asidAllocated?(asid: number, domain: ArmSmmuDomain): void;
  asidFreed?(asid: number, domain: ArmSmmuDomain): void;
  vmidAllocated?(smmu: ArmSmmuDevice, vmid: number, domain: ArmSmmuDomain): void;
  vmidFreed?(smmu: ArmSmmuDevice, vmid: number, domain: ArmSmmuDomain): void;
  /** The core answered a page fault of `dev` (before the driver turns it into a command). */
  pageResponded?(dev: Device, evt: IopfFault, msg: IommuPageResponse): void;
}

/** How an SMMU is added: its registers, name and the StreamIDs it serves. */
export interface SmmuSpec {
  readonly name: string;
  readonly mmio: Mmio;
  /** StreamIDs behind the SMMU (an IORT ID mapping); omitted: every StreamID no other SMMU takes. */
  readonly sids?: readonly number[];
  /** The kernel runs at EL2 with VHE (stage-1 domains use TLBI_EL2_* and STRW EL2). */
  readonly vhe?: boolean;
}

/** How to build the driver. */
export interface SmmuV3DriverOptions {
  readonly subsys: IommuSubsystem;
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;
  /** The CPUs SVA shares page tables with (default DEFAULT_ARM_CPU_FEATURES). */
  readonly cpu?: ArmCpuFeatures;
}

/** An event record the driver read and did not hand to a fault handler. */
export interface SmmuEventLogEntry {
  readonly smmu: string;
  readonly id: number;
  readonly sid: number;
  readonly ssid: number;
  readonly addr: number;
  readonly stall: boolean;
}

/** The user data of a nested domain: the guest's vSTE qwords 0 and 1 as four words. */
export interface SmmuNestedData {
  readonly vste: ArrayLike<number>;
}

/**
 * The SMMUv3 driver. One instance serves every SMMU of the machine, as arm_smmu_ops does; it
 * follows the Linux 6.18 driver (arm-smmu-v3.c, arm-smmu-v3-iommufd.c), function by function.
 *
 * Deliberate differences from mainline:
 * - PRI: page requests go to the core's IOPF and are answered with CMD_PRI_RESP (mainline answers
 *   every PRI request with Resp 0 and drives IOPF from stall events only; the model follows the
 *   out-of-tree PRI series). Stop markers (Last with neither R nor W) are dropped. Responses carry
 *   the Arm spec's meaning of Resp (4.5.2): IOMMU_PAGE_RESP_SUCCESS is Success (2),
 *   IOMMU_PAGE_RESP_INVALID is InvalidRequest (1), IOMMU_PAGE_RESP_FAILURE is ResponseFailure (0);
 *   a request from an unknown StreamID gets Resp 0 as in mainline. The kernel's PRI_RESP_DENY (0)
 *   and PRI_RESP_FAIL (1) names have those two codes the other way round.
 * - A fault the core cannot take (no IOPF queue for the device) is answered here as the core's
 *   iopf_error_response would (page_response with IOMMU_PAGE_RESP_INVALID), since the model's core
 *   leaves that to the driver: CMD_RESUME with abort for a stall, InvalidRequest for a PRI group.
 * - IOPF: as in 6.18, attaching a domain with a fault handler (SVA) adds a stalling master to
 *   the SMMU's IOPF queue for as long as the attachment lasts; the model does the same for a PRI
 *   master (enabling PRI), and keeps `devEnableFeat(IOMMU_DEV_FEAT_IOPF)` (the core's older
 *   interface), counted with the attachments.
 * - Waits are bounded: a CMD_SYNC, free queue space or an acknowledgement is polled a fixed number
 *   of times, then the wait fails with `'ETIMEDOUT'` (Linux waits a second; for queue space it
 *   keeps waiting).
 * - IIDR errata (MMU-600: no nesting, no SEV on early revisions; MMU-700: no nesting, no BTM,
 *   CMDQ_FORCE_SYNC) are not applied: the model's SMMU identifies as an MMU-700 by default, and
 *   nesting is what the harness uses for stage-2 domains.
 * - One StreamID per master.
 * - SVA (smmu-sva.ts): an mm that is not an AArch64 address space with the CPUs' page and VA size
 *   is refused with `'EOPNOTSUPP'`.
 * - A PASID beyond the master's CD table (a linear table holds 1024 CDs even when the SMMU has
 *   more SubstreamID bits) is refused with `'EINVAL'` instead of being written past the table.
 * - Errnos the core's types do not carry: a StreamID beyond the stream table is `'ENODEV'`
 *   (Linux: ERANGE), an invalid vSTE is `'EINVAL'` (Linux: EIO), no ASID or VMID left is
 *   `'ENOMEM'` (Linux: EBUSY from the ASID xarray, ENOSPC from the VMID ida).
 * - Stage-1 output and stage-2 input sizes are capped at 48 bits unless the granule is 64K (the
 *   model's io-pgtable only walks 52-bit addresses with 64K pages).
 * - IOMMU_HWPT_ALLOC_DIRTY_TRACKING is refused unless the SMMU can update dirty state coherently
 *   (the check iommufd makes before it asks the driver).
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_ops
 */
export class SmmuV3Driver implements IommuOps {
  readonly name = "arm-smmu-v3";
  pgsizeBitmap = 0;
  readonly identityDomain: IommuDomain;
  readonly blockedDomain: IommuDomain;
  readonly releaseDomain: IommuDomain;
  readonly smmus: ArmSmmuDevice[] = [];
  readonly inject: SmmuDriverInjections = {
    skipTlbi: false,
    skipCfgi: false,
    skipAtcInv: false,
    earlyAsidReuse: false,
    tornSteWrite: false,
    skipNotifierFlush: false,
    skipAtcOnNotifier: false,
  };
  hooks: SmmuDriverHooks = {};
  /**
   * The CPUs: read when an SMMU is added (ARM_SMMU_FEAT_SVA) and when SVA CDs are built (IPS,
   * PAGE_SIZE).
   */
  cpu: ArmCpuFeatures;
  /** ASIDs of stage-1 and SVA domains, shared by every SMMU (arm_smmu_asid_xa). */
  readonly asids = new Ida();
  /** Events no handler took (translation faults without stall, configuration errors). */
  readonly events: SmmuEventLogEntry[] = [];
  eventsTotal = 0;
  /** PRI requests refused by the driver (unknown StreamID). */
  badPageRequests = 0;

  private readonly subsys: IommuSubsystem;
  private readonly mem: PhysMemory;
  private readonly frames: FrameAllocator;
  private readonly pagingOps: IommuDomainOps;
  private readonly nestedOps: IommuDomainOps;
  private readonly scope = new Map<number, ArmSmmuDevice>();
  private includeAll: ArmSmmuDevice | null = null;
  private readonly mastersOf = new Map<ArmSmmuDevice, Map<number, ArmSmmuMaster>>();
  private readonly iopfQueues = new Map<ArmSmmuDevice, IopfQueue>();
  private readonly steBuf = new Uint32Array(16);
  private readonly cdBuf = new Uint32Array(16);
  /** A copy of the queue entry being handled (the slot is the SMMU's again once CONS moved). */
  private readonly entry = new Uint32Array(8);

  constructor(options: SmmuV3DriverOptions) {
    this.subsys = options.subsys;
    this.mem = options.mem;
    this.frames = options.frames;
    this.cpu = options.cpu ?? DEFAULT_ARM_CPU_FEATURES;
    this.pagingOps = {
      attachDev: (d, dev, old) => this.attachDev(d as ArmSmmuDomain, dev, old),
      setDevPasid: (d, dev, pasid, old) => this.s1SetDevPasid(d as ArmSmmuDomain, dev, pasid, old),
      mapPages: (d, iova, pa, pgsize, pgcount, prot) => {
        const pt = (d as ArmSmmuDomain).pgtable;
        const ret = pt.mapPages(iova, pa, pgsize, pgcount, prot);
        d.mapped = pt.mapped;
        return ret;
      },
      unmapPages: (d, iova, pgsize, pgcount, gather) =>
        (d as ArmSmmuDomain).pgtable.unmapPages(iova, pgsize, pgcount, gather),
      iovaToPhys: (d, iova) => (d as ArmSmmuDomain).pgtable.iovaToPhys(iova),
      iotlbSync: (d, gather) => this.iotlbSync(d as ArmSmmuDomain, gather),
      flushIotlbAll: (d) => this.tlbInvContext(d as ArmSmmuDomain),
      free: (d) => this.domainFreePaging(d as ArmSmmuDomain),
    };
    this.nestedOps = {
      attachDev: (d, dev, old) => this.attachDevNested(d as ArmSmmuNestedDomain, dev, old),
      free: () => {},
    };
    this.identityDomain = new IommuDomain(IOMMU_DOMAIN_IDENTITY, {
      attachDev: (_d, dev) => this.attachDevIdentity(dev),
    });
    this.blockedDomain = new IommuDomain(IOMMU_DOMAIN_BLOCKED, {
      attachDev: (_d, dev) => this.attachDevBlocked(dev),
      setDevPasid: (_d, dev, pasid, old) => this.blockingSetDevPasid(dev, pasid, old),
    });
    this.releaseDomain = this.blockedDomain;
  }

  // --- SMMUs ---------------------------------------------------------------------------------------

  /**
   * Take an SMMU: probe its ID registers, allocate its queues and stream table, bring it up and
   * register it with the core. `'EEXIST'` for a second catch-all SMMU or a StreamID another SMMU
   * serves; `'ENXIO'` (an SMMU the driver cannot use), `'ENOMEM'`, `'ETIMEDOUT'` from the bring-up.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_device_probe
   */
  addSmmu(spec: SmmuSpec): ArmSmmuDevice | "ENXIO" | "EEXIST" | "ENOMEM" | "ETIMEDOUT" {
    if (spec.sids === undefined && this.includeAll !== null) return "EEXIST";
    for (const sid of spec.sids ?? []) if (this.scope.has(sid)) return "EEXIST";
    const smmu = new ArmSmmuDevice(
      {
        name: spec.name,
        mmio: spec.mmio,
        mem: this.mem,
        frames: this.frames,
        vhe: spec.vhe,
        cpu: this.cpu,
      },
      this,
    );
    const ret = smmu.init();
    if (ret !== 0) {
      smmu.shutdown();
      return ret;
    }
    if (spec.sids === undefined) this.includeAll = smmu;
    for (const sid of spec.sids ?? []) this.scope.set(sid, smmu);
    this.smmus.push(smmu);
    this.pgsizeBitmap = this.pgsizeBitmap === 0 ? smmu.features.pgsizeBitmap : this.pgsizeBitmap;
    this.mastersOf.set(smmu, new Map());
    this.iopfQueues.set(smmu, new IopfQueue(`${smmu.name}-iopfq`));
    this.subsys.iommuDeviceRegister(smmu.iommu);
    return smmu;
  }

  /** The SMMU serving StreamID `sid`, or null. */
  smmuFor(sid: number): ArmSmmuDevice | null {
    return this.scope.get(sid) ?? this.includeAll;
  }

  /** The IOPF queue of `smmu`. */
  iopfQueueOf(smmu: ArmSmmuDevice): IopfQueue {
    const q = this.iopfQueues.get(smmu);
    if (q === undefined) bug(`arm-smmu-v3: ${smmu.name} is not an SMMU of this driver`);
    return q;
  }

  /** The driver state of a probed device, or null. */
  master(dev: Device): ArmSmmuMaster | null {
    return (dev.iommu?.priv as ArmSmmuMaster | null | undefined) ?? null;
  }

  /** The features the entry makers need, of `smmu`. */
  entryFeatures(smmu: ArmSmmuDevice): SmmuEntryFeatures {
    const f = smmu.features;
    return {
      stalls: f.stalls,
      stallForce: f.stallForce,
      attrTypesOvr: f.attrTypesOvr,
      e2h: f.e2h,
      s2fwb: f.s2fwb,
    };
  }

  // --- IommuOps ------------------------------------------------------------------------------------

  /** @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_capable */
  capable(dev: Device, cap: number): boolean {
    const master = this.master(dev);
    switch (cap) {
      case IOMMU_CAP_CACHE_COHERENCY:
        return master?.smmu.features.coherent ?? false;
      case IOMMU_CAP_NOEXEC:
      case IOMMU_CAP_DEFERRED_FLUSH:
        return true;
      case IOMMU_CAP_DIRTY_TRACKING:
        return (
          (master?.smmu.features.httuDirty ?? false) && (master?.smmu.features.coherent ?? false)
        );
      default:
        return false;
    }
  }

  /**
   * Take a device: its SMMU by StreamID, its STE made to exist (an L2 stream table on demand), a
   * StreamID another master holds refused (`'ENODEV'`, as Linux refuses aliasing), PASIDs enabled
   * on a PCI device that has the capability before anything else (the PCIe rule: never after
   * ATS; Linux does it even when the SMMU has no SubstreamIDs), the SubstreamID width (the smaller
   * of the SMMU's and the device's; at most 1024 CDs without 2-level CD tables), and stalls when
   * the device tolerates them or the SMMU forces them.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_probe_device
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_insert_master
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_enable_pasid
   */
  probeDevice(dev: Device): IommuDevice | "ENODEV" | "ENOMEM" | "EINVAL" | "EBUSY" {
    if (dev.iommu === null) return "ENODEV";
    if (dev.iommu.priv !== null && dev.iommu.priv !== undefined) return "EBUSY";
    const sid = dev.sid >>> 0;
    const smmu = this.smmuFor(sid);
    if (smmu === null) return "ENODEV";
    const masters = this.mastersOf.get(smmu) as Map<number, ArmSmmuMaster>;
    const st = smmu.initSidStrtab(sid);
    if (st === "ERANGE") return "ENODEV";
    if (st !== 0) return st;
    if (masters.has(sid)) return "ENODEV";
    const f = smmu.features;
    // A platform device's "pasid-num-bits"; a PCI function's width once PASID is enabled.
    let ssidBits = dev.isPci ? 0 : Math.min(f.ssidBits, dev.pasidBits);
    if (dev.isPci && dev.pasidBits > 0) {
      if (dev.pasidEnabled || dev.enablePasid(dev.pasidFeaturesSupported) === 0)
        ssidBits = Math.min(dev.pasidBits, f.ssidBits);
    }
    if (!f.twoLvlCdtab) ssidBits = Math.min(ssidBits, CTXDESC_LINEAR_CDMAX);
    const master: ArmSmmuMaster = {
      dev,
      smmu,
      sid,
      ssidBits,
      stallEnabled: (f.stalls && dev.canStall) || f.stallForce,
      atsSupported: f.ats && dev.isPci && dev.atsCap,
      atsEnabled: false,
      steAtsEnabled: false,
      cdTable: null,
      priEnabled: false,
      iopfRefcount: 0,
      pasids: new Map(),
    };
    masters.set(sid, master);
    (dev.iommu as NonNullable<Device["iommu"]>).priv = master;
    return smmu.iommu;
  }

  /**
   * Forget a device (the core parked it in the blocking domain, whose abort STE is in place): PRI
   * and PASID off, the CD table freed.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_release_device
   */
  releaseDevice(dev: Device): void {
    const master = this.master(dev);
    if (master === null) return;
    this.disablePri(master);
    if (master.atsEnabled) this.disableAts(master);
    if (dev.pasidEnabled) dev.disablePasid();
    if (master.cdTable !== null && !master.cdTable.inSte) {
      master.cdTable.free();
      master.cdTable = null;
    }
    this.mastersOf.get(master.smmu)?.delete(master.sid);
    (dev.iommu as NonNullable<Device["iommu"]>).priv = null;
  }

  domainAllocPaging(dev: Device): IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV" {
    return this.domainAllocPagingFlags(dev, 0) as IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV";
  }

  /**
   * A paging domain on the device's SMMU, by the exact flag combination: none prefers stage 1
   * (stage 2 on an SMMU without it); NEST_PARENT alone is a stage-2 nesting parent (the SMMU needs
   * both stages); PASID and DIRTY_TRACKING, alone or together, need stage 1; anything else is
   * `'EOPNOTSUPP'`. Stage 1 takes its ASID from the driver-wide allocator (1 .. 2^asidBits - 1),
   * 48 input bits (52 with VAX and 64K pages) and the SMMU's IAS as output size; dirty tracking
   * adds the ARM_HD quirk (DBM on writable leaves, HA and HD in the CD). Stage 2 takes a VMID from
   * the SMMU's allocator and the IAS and OAS; a nesting parent on an SMMU with IDR3.FWB gets the
   * S2FWB quirk (and STE.S2FWB). The granule is 4K when the SMMU has it (the kernel's
   * PAGE_SIZE), else the smallest it has.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_domain_alloc_paging_flags
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_domain_finalise
   */
  domainAllocPagingFlags(
    dev: Device,
    flags: number,
  ): IommuDomain | "ENOMEM" | "EINVAL" | "ENODEV" | "EOPNOTSUPP" {
    const master = this.master(dev);
    if (master === null) return "ENODEV";
    const smmu = master.smmu;
    const f = smmu.features;
    let stage: typeof ARM_SMMU_DOMAIN_S1 | typeof ARM_SMMU_DOMAIN_S2;
    switch (flags) {
      case 0:
        stage = f.s1 ? ARM_SMMU_DOMAIN_S1 : ARM_SMMU_DOMAIN_S2;
        break;
      case IOMMU_HWPT_ALLOC_NEST_PARENT:
        if (!f.nesting) return "EOPNOTSUPP";
        stage = ARM_SMMU_DOMAIN_S2;
        break;
      case IOMMU_HWPT_ALLOC_DIRTY_TRACKING:
      case IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_ALLOC_PASID:
      case IOMMU_HWPT_ALLOC_PASID:
        if (!f.s1) return "EOPNOTSUPP";
        stage = ARM_SMMU_DOMAIN_S1;
        break;
      default:
        return "EOPNOTSUPP";
    }
    const dirty = (flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0;
    // iommufd asks IOMMU_CAP_DIRTY_TRACKING before it allocates a dirty-tracking domain.
    if (dirty && !(f.httuDirty && f.coherent)) return "EOPNOTSUPP";
    const granule = granuleOf(f.pgsizeBitmap);
    if (granule === 0) return "EINVAL";
    const maxBits = granule === 65536 ? 52 : 48;
    const ias = stage === ARM_SMMU_DOMAIN_S1 ? (f.vax ? maxBits : 48) : Math.min(f.ias, maxBits);
    const oas = Math.min(stage === ARM_SMMU_DOMAIN_S1 ? f.ias : f.oas, maxBits);
    const ref: { d: ArmSmmuDomain | null } = { d: null };
    const tlb: IommuFlushOps = {
      tlbFlushAll: () => {
        if (ref.d !== null) this.tlbInvContext(ref.d);
      },
      tlbFlushWalk: (iova, size, gran) => {
        if (ref.d !== null) this.tlbInvRangeDomain(ref.d, iova, size, gran, false);
      },
      tlbAddPage: (gather, iova, gran) => {
        if (ref.d !== null) iommuIotlbGatherAddPage(ref.d, gather, iova, gran);
      },
    };
    const pt = LpaePgtable.alloc({
      mem: this.mem,
      frames: this.frames,
      stage,
      granule,
      ias,
      oas,
      tlb,
      pgsizeBitmap: f.pgsizeBitmap,
      // ARM_HD for dirty tracking; S2FWB only for nesting parents (a guest's stage 1 cannot make
      // their memory uncached).
      quirks: dirty
        ? { armHd: true }
        : flags === IOMMU_HWPT_ALLOC_NEST_PARENT && f.s2fwb
          ? { armS2Fwb: true }
          : undefined,
    });
    if (typeof pt === "string") return pt === "ENOMEM" ? "ENOMEM" : "EINVAL";
    const domain = new ArmSmmuDomain(this.pagingOps, smmu, stage, pt);
    domain.allocFlags = flags;
    domain.nestParent = flags === IOMMU_HWPT_ALLOC_NEST_PARENT;
    if (stage === ARM_SMMU_DOMAIN_S1) {
      const asid = this.asids.allocRange(1, 2 ** f.asidBits - 1);
      if (typeof asid === "string") {
        pt.free();
        return "ENOMEM";
      }
      domain.asid = asid;
      this.hooks.asidAllocated?.(asid, domain);
    } else {
      const vmid = smmu.vmids.allocRange(1, 2 ** f.vmidBits - 1);
      if (typeof vmid === "string") {
        pt.free();
        return "ENOMEM";
      }
      domain.vmid = vmid;
      this.hooks.vmidAllocated?.(smmu, vmid, domain);
    }
    ref.d = domain;
    return domain;
  }

  /**
   * A nested domain over a nest-parent stage-2 domain, from the guest's vSTE: V and Config
   * (abort, bypass or stage 1), and for stage 1 S1ContextPtr, S1Fmt, S1CDMax, S1DSS and EATS
   * (translate only); any other bit is refused with `'EINVAL'`.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c arm_smmu_validate_vste
   */
  domainAllocNested(
    _dev: Device,
    parent: IommuDomain,
    flags: number,
    userData: unknown,
  ): IommuDomain | "ENOMEM" | "EINVAL" | "EOPNOTSUPP" {
    if (flags !== 0) return "EOPNOTSUPP";
    if (!(parent instanceof ArmSmmuDomain) || !parent.nestParent) return "EINVAL";
    const data = userData as Partial<SmmuNestedData> | null;
    if (
      data === null ||
      typeof data !== "object" ||
      data.vste === undefined ||
      data.vste.length !== 4
    )
      return "EINVAL";
    const v = Uint32Array.from(data.vste);
    const ats = validateVste(v);
    if (ats === "EIO") return "EINVAL";
    return new ArmSmmuNestedDomain(this.nestedOps, parent, v, ats);
  }

  /**
   * An SVA domain for `mm` on the SMMU of `dev` (smmu-sva.ts).
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_sva_domain_alloc
   */
  domainAllocSva(
    dev: Device,
    mm: IommuMm,
  ): IommuDomain | "ENOMEM" | "EINVAL" | "EOPNOTSUPP" | "ENODEV" {
    return armSmmuSvaDomainAlloc(this, dev, mm);
  }

  /**
   * Answer a page request: CMD_RESUME (retry on success, abort otherwise) for a stalled
   * transaction, CMD_PRI_RESP for a PRI group (Resp 2 Success, 1 InvalidRequest, 0
   * ResponseFailure, by the Arm spec's meaning of the codes; SSV when the fault says the response
   * needs the PASID), with no sync: neither command needs one.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_page_response
   */
  pageResponse(dev: Device, evt: IopfFault, msg: IommuPageResponse): void {
    const master = this.master(dev);
    if (master === null) return;
    this.hooks.pageResponded?.(dev, evt, msg);
    const q = master.smmu.cmdq;
    if (master.stallEnabled) {
      q.resume(
        master.sid,
        msg.grpid,
        msg.code === IOMMU_PAGE_RESP_SUCCESS,
        msg.code !== IOMMU_PAGE_RESP_SUCCESS,
      );
    } else {
      const ssv = (evt.fault.flags & IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID) !== 0;
      const resp =
        msg.code === IOMMU_PAGE_RESP_SUCCESS
          ? PRI_RESP_SUCC
          : msg.code === IOMMU_PAGE_RESP_INVALID
            ? PRI_RESP_FAIL
            : PRI_RESP_DENY;
      q.priResp(master.sid, ssv, evt.fault.pasid, msg.grpid, resp);
    }
    q.add();
    q.submitNoSync();
  }

  /**
   * IOPF on: a stalling master, or a PRI master (PRI reset and enabled once ATS is), joins its
   * SMMU's fault queue (refcounted). `'ENODEV'` for a master that can do neither.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-sva.c arm_smmu_master_enable_iopf
   */
  devEnableFeat(dev: Device, feat: number): 0 | Errno {
    if (feat !== IOMMU_DEV_FEAT_IOPF) return "ENODEV";
    const master = this.master(dev);
    if (master === null) return "ENODEV";
    const ret = this.enableIopf(master);
    return ret === false ? "ENODEV" : ret === true ? 0 : ret;
  }

  /** IOPF off for the last user. `'EINVAL'` when it is not on. */
  devDisableFeat(dev: Device, feat: number): 0 | Errno {
    if (feat !== IOMMU_DEV_FEAT_IOPF) return "ENODEV";
    const master = this.master(dev);
    if (master === null || master.iopfRefcount === 0) return "EINVAL";
    this.disableIopf(master);
    return 0;
  }

  /**
   * One more IOPF user of `master`: the first puts it in its SMMU's fault queue, after PRI reset
   * and enabled for a master that does not stall. False (no error: the device handles its own
   * faults) for a master that can neither stall nor issue page requests; the queue's or PRI's
   * failure as an errno.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_enable_iopf
   */
  private enableIopf(master: ArmSmmuMaster): boolean | "ENODEV" | "EBUSY" {
    if (master.iopfRefcount > 0) {
      master.iopfRefcount++;
      return true;
    }
    const dev = master.dev;
    if (!master.stallEnabled) {
      if (!master.smmu.features.pri || !dev.priCap || !master.atsSupported) return false;
      if (!master.priEnabled) {
        if (dev.resetPri() !== 0) return "ENODEV";
        if (dev.enablePri(PRI_REQUESTS) !== 0) return "ENODEV";
        master.priEnabled = true;
      }
    }
    const added = this.iopfQueueOf(master.smmu).addDevice(dev);
    if (added !== 0) return added;
    master.iopfRefcount = 1;
    return true;
  }

  /** One IOPF user of `master` less; the last takes it out of the fault queue. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_disable_iopf */
  private disableIopf(master: ArmSmmuMaster): void {
    if (master.iopfRefcount === 0) return;
    if (--master.iopfRefcount > 0) return;
    this.iopfQueueOf(master.smmu).removeDevice(master.dev);
  }

  private disablePri(master: ArmSmmuMaster): void {
    if (master.iopfRefcount > 0) {
      this.iopfQueueOf(master.smmu).removeDevice(master.dev);
      master.iopfRefcount = 0;
    }
    if (!master.priEnabled) return;
    master.dev.disablePri();
    master.priEnabled = false;
  }

  // --- Entry writers --------------------------------------------------------------------------------

  /**
   * Install `target` as the master's STE hitlessly (arm_smmu_write_entry; syncs are CFGI_STE leaf
   * + CMD_SYNC), then CMD_PREFETCH_CONFIG without a sync, and note whether the STE now points at
   * the CD table and has EATS.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_install_ste_for_dev
   */
  private installSte(master: ArmSmmuMaster, target: Uint32Array): void {
    const smmu = master.smmu;
    const q = smmu.cmdq;
    const pa = smmu.stePa(master.sid);
    if (pa < 0) bug(`arm-smmu-v3: no STE for StreamID ${master.sid}`);
    const ops: EntryWriterOps = {
      ...STE_USED_OPS,
      sync: () => {
        if (this.inject.skipCfgi) return;
        q.cfgiSte(master.sid, true).issueWithSync();
      },
    };
    writeEntry(ops, this.mem, pa, target, { torn: this.inject.tornSteWrite });
    q.prefetchConfig(master.sid).add();
    q.submitNoSync();
    const cfg = ((target[0] as number) >>> 1) & 7;
    if (master.cdTable !== null)
      master.cdTable.inSte = ((target[0] as number) & 1) === 1 && cfg === STE_CFG_S1_TRANS;
    master.steAtsEnabled = (((target[2] as number) >>> 28) & 3) === 1;
  }

  /**
   * Write the CD at `ssid` hitlessly (syncs are CFGI_CD leaf for the master's StreamID + CMD_SYNC),
   * counting the valid CDs at SSIDs other than 0.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_write_cd_entry
   */
  writeCd(master: ArmSmmuMaster, ssid: number, pa: number, target: Uint32Array): void {
    const table = master.cdTable as CdTable;
    const curValid = (this.mem.read32(pa) & (1 << 31)) !== 0;
    const tgtValid = ((target[0] as number) & (1 << 31)) !== 0;
    if (ssid !== IOMMU_NO_PASID && curValid !== tgtValid) table.usedSsids += tgtValid ? 1 : -1;
    const ops: EntryWriterOps = {
      ...CD_USED_OPS,
      sync: () => this.syncCd(master, ssid, true),
    };
    writeEntry(ops, this.mem, pa, target);
  }

  /** CFGI_CD for each StreamID of the master, one sync. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_sync_cd */
  private syncCd(master: ArmSmmuMaster, ssid: number, leaf: boolean): void {
    if (this.inject.skipCfgi) return;
    const q = master.smmu.cmdq;
    q.cfgiCd(master.sid, ssid, leaf).add();
    q.submit();
  }

  /** The master's CD table, allocated on first use. */
  private cdTableOf(master: ArmSmmuMaster): CdTable | "ENOMEM" {
    if (master.cdTable !== null) return master.cdTable;
    const t = CdTable.alloc(master.smmu, master.ssidBits);
    if (t === "ENOMEM") return t;
    master.cdTable = t;
    return t;
  }

  /** PA of the CD at `ssid`, its leaf table allocated when missing. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_alloc_cd_ptr */
  private allocCdPtr(master: ArmSmmuMaster, ssid: number): number | "ENOMEM" {
    const t = this.cdTableOf(master);
    if (t === "ENOMEM") return t;
    const pa = t.cdPtr(ssid, true, () => this.syncCd(master, ssid, false));
    if (pa === -1) bug(`arm-smmu-v3: SSID ${ssid} beyond the CD table`);
    return pa;
  }

  /**
   * PA of the CD at `ssid` of the master's table, or -1 when the table or its leaf does not exist.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_get_cd_ptr
   */
  getCdPtr(master: ArmSmmuMaster, ssid: number): number {
    const t = master.cdTable;
    if (t === null) return -1;
    const pa = t.cdPtr(ssid, false);
    return typeof pa === "number" ? pa : -1;
  }

  /** Clear the CD at `ssid` if it exists. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_clear_cd */
  private clearCdAt(master: ArmSmmuMaster, ssid: number): void {
    const pa = this.getCdPtr(master, ssid);
    if (pa < 0) return;
    clearCd(this.cdBuf);
    this.writeCd(master, ssid, pa, this.cdBuf);
  }

  private makeS1CdFor(master: ArmSmmuMaster, domain: ArmSmmuDomain, out: Uint32Array): void {
    const pt = domain.pgtable;
    makeS1Cd(out, {
      asid: domain.asid,
      ttb0: pt.rootPa,
      t0sz: 64 - pt.cfg.ias,
      tg0: tcrTgOf(pt.granule, 0),
      irgn0: 1,
      orgn0: 1,
      sh0: 3,
      ips: tcrPsOf(pt.cfg.oas) as number,
      mair: [LPAE_MAIR_LO, 0],
      stallEnabled: master.stallEnabled,
      hd: (domain.allocFlags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0,
    });
  }

  private s2Params(domain: ArmSmmuDomain, ats: boolean, stallEnabled: boolean) {
    const pt = domain.pgtable;
    return {
      vmid: domain.vmid,
      vttbr: pt.rootPa,
      t0sz: 64 - pt.cfg.ias,
      sl0: s2sl0Of(pt.geometry),
      irgn: 1,
      orgn: 1,
      sh: 3,
      tg: tcrTgOf(pt.granule, 0),
      ps: tcrPsOf(pt.cfg.oas) as number,
      ats,
      stallEnabled,
      nestParent: domain.nestParent,
    };
  }

  private makeCdtableSteFor(
    master: ArmSmmuMaster,
    ats: boolean,
    s1dss: number,
    out: Uint32Array,
  ): void {
    const t = master.cdTable as CdTable;
    makeCdtableSte(
      out,
      {
        cdTablePa: t.pa,
        s1fmt: t.s1fmt,
        s1cdmax: t.s1cdmax,
        s1dss,
        ats,
        stallEnabled: master.stallEnabled,
      },
      this.entryFeatures(master.smmu),
    );
  }

  // --- Attach --------------------------------------------------------------------------------------

  /** Whether any SSID other than 0 has a valid CD. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_ssids_in_use */
  private ssidsInUse(master: ArmSmmuMaster): boolean {
    return (master.cdTable?.usedSsids ?? 0) > 0;
  }

  /**
   * Before the entries change: ATS for the new attachment (wanted when the master supports it
   * and the domain is not blocked/identity without a CD table), IOPF for it when the new domain
   * handles faults (`iopf`: a failure fails the attach before anything changed), the attachment
   * added to the new domain's list (which drives its ATC invalidations) and cache tags (its ASID
   * or VMID, the device's ATC when ATS), so that both the old and the new domain invalidate the
   * master until the change is done; ATS off on the device first when it is being dropped.
   * Returns whether the attachment uses ATS.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_attach_prepare
   */
  private attachPrepare(
    master: ArmSmmuMaster,
    domain: ArmSmmuDomain | null,
    ssid: number,
    atsWanted: boolean,
    nestedAtsFlush = false,
    iopf = false,
  ): boolean | "ENODEV" | "EBUSY" {
    const ats = atsWanted && master.atsSupported;
    if (domain !== null) {
      let usingIopf = false;
      if (iopf) {
        const on = this.enableIopf(master);
        if (typeof on === "string") return on;
        usingIopf = on;
      }
      domain.devices.push({ master, ssid, ats, nestedAtsFlush, usingIopf });
      if (ats) domain.nrAtsMasters++;
      domain.cacheTags.assign(CACHE_TAG_IOTLB, master.smmu.iommu, domain.tag, -1, null);
      if (ats)
        domain.cacheTags.assign(CACHE_TAG_DEVTLB, master.smmu.iommu, domain.tag, ssid, master.dev);
    }
    if (!ats && master.atsEnabled) master.dev.disableAts();
    return ats;
  }

  /**
   * After the entries changed: ATS on (after a whole-ATC invalidation), or the ATC invalidated for
   * the SSID when ATS stays on, or entirely when ATS went off; then the old domain forgets the
   * attachment, and the master's ATS state becomes the attachment's, whether or not the device
   * took the ATS enable.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_attach_commit
   */
  private attachCommit(
    master: ArmSmmuMaster,
    ssid: number,
    ats: boolean,
    old: IommuDomain | null,
  ): void {
    if (ats && !master.atsEnabled) this.enableAts(master);
    else if (ats && master.atsEnabled) this.atcInvMaster(master, ssid);
    else if (!ats && master.atsEnabled) this.atcInvMaster(master, IOMMU_NO_PASID);
    this.removeMasterDomain(master, old, ssid);
    master.atsEnabled = ats;
  }

  /**
   * ATS on: the whole ATC invalidated first, then the device's ATS enable with the smallest page
   * size as STU (a refusal is only logged by Linux).
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_enable_ats
   */
  private enableAts(master: ArmSmmuMaster): void {
    this.atcInvMaster(master, IOMMU_NO_PASID);
    const stu = Math.log2(master.smmu.features.pgsizeBitmap & -master.smmu.features.pgsizeBitmap);
    master.dev.enableAts(stu);
  }

  private disableAts(master: ArmSmmuMaster): void {
    master.dev.disableAts();
    this.atcInvMaster(master, IOMMU_NO_PASID);
    master.atsEnabled = false;
  }

  /** The old domain's attachment at (master, ssid) goes, with its tags. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_remove_master_domain */
  private removeMasterDomain(master: ArmSmmuMaster, old: IommuDomain | null, ssid: number): void {
    const domain =
      old instanceof ArmSmmuDomain ? old : old instanceof ArmSmmuNestedDomain ? old.parent : null;
    if (domain === null) return;
    const i = domain.devices.findIndex((md) => md.master === master && md.ssid === ssid);
    if (i < 0) return;
    const md = domain.devices[i] as ArmSmmuMasterDomain;
    domain.devices.splice(i, 1);
    if (md.usingIopf) this.disableIopf(master);
    if (md.ats) domain.nrAtsMasters--;
    domain.cacheTags.unassign(CACHE_TAG_IOTLB, master.smmu.iommu, domain.tag, -1, null);
    if (md.ats)
      domain.cacheTags.unassign(CACHE_TAG_DEVTLB, master.smmu.iommu, domain.tag, ssid, master.dev);
  }

  /** ATC_INV of everything at `ssid` (SSV 0 for the RID: the whole ATC), then a sync. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_atc_inv_master */
  private atcInvMaster(master: ArmSmmuMaster, ssid: number): void {
    if (this.inject.skipAtcInv) return;
    const q = master.smmu.cmdq;
    q.atcInv(master.sid, ssid, 0, ATC_INV_SIZE_ALL).add();
    q.submit();
  }

  /**
   * Attach a paging domain at the RID. Stage 1: the CD at SSID 0, then a CD-table STE with
   * S1DSS = SSID0. Stage 2: the S2 STE, then CD 0 cleared. `'EINVAL'` for a domain of another
   * SMMU.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_attach_dev
   */
  private attachDev(domain: ArmSmmuDomain, dev: Device, old: IommuDomain | null): 0 | AttachErrno {
    const master = this.master(dev);
    if (master === null) return "ENODEV";
    if (domain.smmu !== master.smmu) return "EINVAL";
    if (domain.stage === ARM_SMMU_DOMAIN_S2 && this.ssidsInUse(master)) return "EBUSY";
    const ste = this.steBuf;
    const iopf = domain.iopfHandler !== null;
    if (domain.stage === ARM_SMMU_DOMAIN_S1) {
      const cdPa = this.allocCdPtr(master, IOMMU_NO_PASID);
      if (cdPa === "ENOMEM") return "ENOMEM";
      const ats = this.attachPrepare(master, domain, IOMMU_NO_PASID, true, false, iopf);
      if (typeof ats === "string") return ats;
      this.makeS1CdFor(master, domain, this.cdBuf);
      this.writeCd(master, IOMMU_NO_PASID, cdPa, this.cdBuf);
      this.makeCdtableSteFor(master, ats, S1DSS_SSID0, ste);
      this.installSte(master, ste);
      this.attachCommit(master, IOMMU_NO_PASID, ats, old);
    } else {
      const ats = this.attachPrepare(master, domain, IOMMU_NO_PASID, true, false, iopf);
      if (typeof ats === "string") return ats;
      makeS2DomainSte(
        ste,
        this.s2Params(domain, ats, master.stallEnabled),
        this.entryFeatures(master.smmu),
      );
      this.installSte(master, ste);
      this.clearCdAt(master, IOMMU_NO_PASID);
      this.attachCommit(master, IOMMU_NO_PASID, ats, old);
    }
    return 0;
  }

  /**
   * Identity and blocked at the RID: the bypass or abort STE, or, while PASIDs hold CDs, a
   * CD-table STE with S1DSS bypass or terminate (ATS on then: a PASID may use it); CD 0 cleared
   * after the old domain let go of the master.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_attach_dev_ste
   */
  private attachDevSte(dev: Device, identity: boolean): 0 | AttachErrno {
    const master = this.master(dev);
    if (master === null) return "ENODEV";
    const old = iommuGetDomainForDev(dev);
    const ste = this.steBuf;
    const s1dss = identity ? S1DSS_BYPASS : S1DSS_TERMINATE;
    let ats: boolean;
    if (this.ssidsInUse(master)) {
      ats = this.attachPrepare(master, null, IOMMU_NO_PASID, true) === true;
      this.makeCdtableSteFor(master, ats, s1dss, ste);
    } else {
      ats = this.attachPrepare(master, null, IOMMU_NO_PASID, false) === true;
      if (identity) makeBypassSte(ste, this.entryFeatures(master.smmu));
      else makeAbortSte(ste);
    }
    this.installSte(master, ste);
    this.attachCommit(master, IOMMU_NO_PASID, ats, old);
    this.clearCdAt(master, IOMMU_NO_PASID);
    return 0;
  }

  private attachDevIdentity(dev: Device): 0 | AttachErrno {
    return this.attachDevSte(dev, true);
  }

  private attachDevBlocked(dev: Device): 0 | AttachErrno {
    return this.attachDevSte(dev, false);
  }

  /**
   * A nested domain at the RID: the vSTE's abort or bypass as an abort or stage-2 STE, its stage 1
   * as a nested STE over the parent's stage 2; ATS as the guest allowed it, its ATC flushed whole
   * on every invalidation.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c arm_smmu_attach_dev_nested
   */
  private attachDevNested(
    domain: ArmSmmuNestedDomain,
    dev: Device,
    old: IommuDomain | null,
  ): 0 | AttachErrno {
    const master = this.master(dev);
    if (master === null) return "ENODEV";
    const parent = domain.parent;
    if (parent.smmu !== master.smmu) return "EINVAL";
    if (this.ssidsInUse(master)) return "EBUSY";
    const ats = this.attachPrepare(
      master,
      parent,
      IOMMU_NO_PASID,
      domain.enableAts,
      domain.enableAts,
      domain.iopfHandler !== null,
    );
    if (typeof ats === "string") return ats;
    const ste = this.steBuf;
    makeNestedSte(
      ste,
      { vste: domain.vste, s2: this.s2Params(parent, ats, master.stallEnabled) },
      this.entryFeatures(master.smmu),
    );
    this.installSte(master, ste);
    this.attachCommit(master, IOMMU_NO_PASID, ats, old);
    return 0;
  }

  /**
   * A stage-1 domain at a PASID: its CD through the common PASID path. `'EINVAL'` for a domain
   * of another SMMU or of another stage.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_s1_set_dev_pasid
   */
  private s1SetDevPasid(
    domain: ArmSmmuDomain,
    dev: Device,
    pasid: number,
    old: IommuDomain | null,
  ): 0 | AttachErrno {
    const master = this.master(dev);
    if (master === null) return "ENODEV";
    if (domain.smmu !== master.smmu || domain.stage !== ARM_SMMU_DOMAIN_S1) return "EINVAL";
    this.makeS1CdFor(master, domain, this.cdBuf);
    return this.setPasid(master, domain, pasid, this.cdBuf, old);
  }

  /**
   * Install the CD `cd` (of a stage-1 or SVA domain) at `pasid`: the master needs a CD table in
   * its STE, or an identity or blocked RID, whose STE then becomes a CD-table one with S1DSS
   * bypass or terminate; ATS as at the RID; IOPF when the domain handles faults. `'EINVAL'` for a
   * domain of another SMMU, a PASID beyond the master's SubstreamIDs, or a RID domain without CD
   * table; `'ENOMEM'`; IOPF's `'ENODEV'` / `'EBUSY'`.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_set_pasid
   */
  setPasid(
    master: ArmSmmuMaster,
    domain: ArmSmmuDomain,
    pasid: number,
    cd: Uint32Array,
    old: IommuDomain | null,
  ): 0 | AttachErrno {
    if (domain.smmu !== master.smmu) return "EINVAL";
    if (pasid <= 0 || pasid >= 2 ** master.ssidBits) return "EINVAL";
    const sidDomain = iommuGetDomainForDev(master.dev);
    const inSte = master.cdTable?.inSte ?? false;
    if (
      !inSte &&
      sidDomain?.type !== IOMMU_DOMAIN_IDENTITY &&
      sidDomain?.type !== IOMMU_DOMAIN_BLOCKED
    )
      return "EINVAL";
    const cdPa = this.allocCdPtr(master, pasid);
    if (cdPa === "ENOMEM") return "ENOMEM";
    const ats = this.attachPrepare(master, domain, pasid, true, false, domain.iopfHandler !== null);
    if (typeof ats === "string") return ats;
    this.writeCd(master, pasid, cdPa, cd);
    this.updateSte(master, sidDomain, ats);
    this.attachCommit(master, pasid, ats, old);
    master.pasids.set(pasid, domain);
    return 0;
  }

  /**
   * Make the STE a CD-table one for a RID that is identity or blocked (S1DSS bypass or
   * terminate), or update its EATS; nothing when it already is with that EATS.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_update_ste
   */
  private updateSte(master: ArmSmmuMaster, sidDomain: IommuDomain | null, ats: boolean): void {
    if ((master.cdTable?.inSte ?? false) && master.steAtsEnabled === ats) return;
    const s1dss = sidDomain?.type === IOMMU_DOMAIN_IDENTITY ? S1DSS_BYPASS : S1DSS_TERMINATE;
    if (master.cdTable?.inSte) {
      // The S1DSS in place stays (the RID's domain chose it); only EATS changes.
      const cur = this.mem.read32(master.smmu.stePa(master.sid) + 8) & 3;
      this.makeCdtableSteFor(master, ats, cur, this.steBuf);
    } else {
      this.makeCdtableSteFor(master, ats, s1dss, this.steBuf);
    }
    this.installSte(master, this.steBuf);
  }

  /**
   * Remove a PASID: its CD cleared, the ATC of that SSID invalidated, the old domain forgets it;
   * when no PASID is left and the RID is identity or blocked, the RID's plain STE comes back.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_blocking_set_dev_pasid
   */
  private blockingSetDevPasid(
    dev: Device,
    pasid: number,
    old: IommuDomain | null,
  ): 0 | AttachErrno {
    const master = this.master(dev);
    if (master === null) return "ENODEV";
    this.clearCdAt(master, pasid);
    if (master.atsEnabled) this.atcInvMaster(master, pasid);
    this.removeMasterDomain(master, old, pasid);
    master.pasids.delete(pasid);
    if (!this.ssidsInUse(master)) {
      const sidDomain = iommuGetDomainForDev(dev);
      if (sidDomain?.type === IOMMU_DOMAIN_IDENTITY || sidDomain?.type === IOMMU_DOMAIN_BLOCKED)
        this.attachDevSte(dev, sidDomain.type === IOMMU_DOMAIN_IDENTITY);
    }
    return 0;
  }

  // --- Invalidation ---------------------------------------------------------------------------------

  /** @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_iotlb_sync */
  private iotlbSync(domain: ArmSmmuDomain, gather: IommuIotlbGather): void {
    if (gather.pgsize === 0) return;
    this.tlbInvRangeDomain(
      domain,
      gather.start,
      gather.end - gather.start + 1,
      gather.pgsize,
      true,
    );
  }

  /**
   * Invalidate [iova, iova + size) of a domain: the TLB under its ASID or VMID (leaf or not, by
   * granule or by range commands) with a CMD_SYNC, whether or not a device is attached (the TLB
   * may still hold entries of a detached domain); for a nesting parent then every stage 1 of its
   * VMID (TLBI_NH_ALL) with a CMD_SYNC; then, since a table may have gone, the ATCs of its ATS
   * masters.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_tlb_inv_range_domain
   */
  tlbInvRangeDomain(
    domain: ArmSmmuDomain,
    iova: number,
    size: number,
    granule: number,
    leaf: boolean,
  ): void {
    if (size === 0) return;
    const q = domain.smmu.cmdq;
    if (!this.inject.skipTlbi) {
      this.stageTlbiRange(domain.smmu, domain, iova, size, granule, leaf);
      q.submit();
      if (domain.nestParent) {
        q.bare(CMDQ_OP.TLBI_NH_ALL);
        q.w[1] = domain.vmid & 0xffff;
        q.issueWithSync();
      }
    }
    this.atcInvDomain(domain, iova, size);
  }

  /**
   * Every TLB entry of `asid` on `smmu`: TLBI_NH_ASID (TLBI_EL2_ASID under E2H) and a CMD_SYNC.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_tlb_inv_asid
   */
  tlbInvAsid(smmu: ArmSmmuDevice, asid: number): void {
    if (this.inject.skipTlbi) return;
    smmu.cmdq.tlbiAsid(asid, smmu.features.e2h).issueWithSync();
  }

  /**
   * The TLB entries of [iova, iova + size) under the ASID of a stage-1 or SVA domain
   * (TLBI_NH_VA or TLBI_EL2_VA, per granule or by range) and a CMD_SYNC; no ATC invalidation.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_tlb_inv_range_asid
   */
  tlbInvRangeAsid(
    domain: ArmSmmuDomain,
    iova: number,
    size: number,
    granule: number,
    leaf: boolean,
  ): void {
    if (this.inject.skipTlbi || size === 0) return;
    this.stageTlbiRange(domain.smmu, domain, iova, size, granule, leaf);
    domain.smmu.cmdq.submit();
  }

  /**
   * Invalidate everything of a domain: TLBI_NH_ASID (TLBI_EL2_ASID under E2H) or TLBI_S12_VMALL
   * with a CMD_SYNC, attached or not, then every ATS master's ATC.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_tlb_inv_context
   */
  tlbInvContext(domain: ArmSmmuDomain): void {
    const q = domain.smmu.cmdq;
    if (!this.inject.skipTlbi) {
      if (domain.stage !== ARM_SMMU_DOMAIN_S2) q.tlbiAsid(domain.asid, domain.smmu.features.e2h);
      else q.tlbiS12Vmall(domain.vmid);
      q.issueWithSync();
    }
    this.atcInvDomain(domain, 0, 0);
  }

  /**
   * ATC_INV for every attachment whose master has ATS on: the span covering [iova, iova + size) at
   * the attachment's SSID (everything when `size` is 0; everything without SSID for a nested
   * domain's attachment, whose guest may have cached any of it), one batch and one CMD_SYNC.
   * Nothing without ATS on the SMMU or when no attachment uses it; the TLB invalidation before
   * has completed (its sync), as the spec requires before an ATC invalidation.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_atc_inv_domain
   */
  atcInvDomain(domain: ArmSmmuDomain, iova: number, size: number): void {
    const smmu = domain.smmu;
    if (!smmu.features.ats || domain.nrAtsMasters === 0) return;
    const q = smmu.cmdq;
    if (!this.inject.skipAtcInv) {
      // Newest attachment first, as list_add keeps the kernel's list.
      for (let i = domain.devices.length - 1; i >= 0; i--) {
        const md = domain.devices[i] as ArmSmmuMasterDomain;
        if (!md.master.atsEnabled) continue;
        if (md.nestedAtsFlush || size === 0) {
          q.atcInv(
            md.master.sid,
            md.nestedAtsFlush ? IOMMU_NO_PASID : md.ssid,
            0,
            ATC_INV_SIZE_ALL,
          );
        } else {
          const { addr, log2 } = atcSpan(iova, size);
          q.atcInv(md.master.sid, md.ssid, addr, log2);
        }
        q.add();
      }
    }
    q.submit();
  }

  /**
   * Stage the TLB invalidation of [iova, iova + size): with range invalidation, commands of up to
   * 32 chunks of 2^scale leaf pages (TG, TTL for leaves, SCALE, NUM); without, one command per
   * granule.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c __arm_smmu_tlb_inv_range
   */
  private stageTlbiRange(
    smmu: ArmSmmuDevice,
    domain: ArmSmmuDomain,
    iova: number,
    size: number,
    granule: number,
    leaf: boolean,
  ): void {
    const q = smmu.cmdq;
    const s1 = domain.stage !== ARM_SMMU_DOMAIN_S2;
    const opcode = s1
      ? smmu.features.e2h
        ? CMDQ_OP.TLBI_EL2_VA
        : CMDQ_OP.TLBI_NH_VA
      : CMDQ_OP.TLBI_S2_IPA;
    const id = s1 ? domain.asid : domain.vmid;
    const end = iova + size;
    if (!smmu.features.rangeInv) {
      for (let a = iova; a < end; a += granule) {
        q.tlbiVa(opcode, id, a, leaf, 0, 0, 0, 0);
        q.add();
      }
      return;
    }
    const tgShift = log2Of(domain.pgsizeBitmap & -domain.pgsizeBitmap);
    let pages = Math.floor(size / 2 ** tgShift);
    const tg = (tgShift - 10) / 2;
    let ttl = 0;
    if (leaf) ttl = 4 - Math.floor((log2Of(granule) - 3) / (tgShift - 3));
    else if ((pages & CMDQ_TLBI_RANGE_NUM_MAX) === 1) pages++;
    let a = iova;
    while (a < end && pages > 0) {
      const scale = lowestSetBit(pages);
      const num = Math.floor(pages / 2 ** scale) & CMDQ_TLBI_RANGE_NUM_MAX;
      q.tlbiVa(opcode, id, a, leaf, tg, ttl, scale, num - 1);
      q.add();
      const chunk = num * 2 ** (scale + tgShift);
      pages -= num * 2 ** scale;
      a += chunk;
    }
  }

  /**
   * Free a paging domain: every TLB entry of its ASID or VMID invalidated (io-pgtable's free
   * flushes all), the table freed, the ASID or VMID given back.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_domain_free_paging
   */
  private domainFreePaging(domain: ArmSmmuDomain): void {
    if (domain.devices.length > 0) bug(`arm-smmu-v3: domain ${domain.id} freed while attached`);
    if (!(domain.stage === ARM_SMMU_DOMAIN_S1 && this.inject.earlyAsidReuse))
      this.tlbInvContext(domain);
    domain.pgtable.free();
    if (domain.stage === ARM_SMMU_DOMAIN_S1) {
      this.asids.free(domain.asid);
      this.hooks.asidFreed?.(domain.asid, domain);
    } else {
      domain.smmu.vmids.free(domain.vmid);
      this.hooks.vmidFreed?.(domain.smmu, domain.vmid, domain);
    }
  }

  // --- Queues ---------------------------------------------------------------------------------------

  /**
   * Read every SMMU's event queue: stall events of known masters go to the core's IOPF as page
   * requests (answered with CMD_RESUME; one the core cannot take is aborted), the rest are logged.
   * Returns the records read.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_evtq_thread
   */
  processEvents(): number {
    let n = 0;
    for (const smmu of this.smmus)
      n += this.readQueue(smmu, smmu.evtq, SMMU_REG.EVENTQ_PROD, SMMU_REG.EVENTQ_CONS, (e) =>
        this.handleEvent(smmu, e),
      );
    return n;
  }

  /**
   * Read every SMMU's PRI queue into the core's IOPF; a request ending a group from an unknown
   * StreamID is answered Resp 0, one the core cannot take InvalidRequest. Returns the entries read.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_priq_thread
   */
  processPageRequests(): number {
    let n = 0;
    for (const smmu of this.smmus) {
      if (smmu.priq === null) continue;
      n += this.readQueue(smmu, smmu.priq, SMMU_REG.PRIQ_PROD, SMMU_REG.PRIQ_CONS, (e) =>
        this.handlePpr(smmu, e),
      );
    }
    return n;
  }

  /** Run the IOPF work the fault handlers deferred, on every SMMU's queue. */
  runIopfWork(): number {
    let n = 0;
    for (const q of this.iopfQueues.values()) n += q.runWork();
    return n;
  }

  /** Run every SMMU's GERROR handler (the interrupt the model does not deliver). */
  processGlobalErrors(): void {
    for (const smmu of this.smmus) smmu.cmdq.handleErrors();
  }

  /**
   * Drain a queue the SMMU writes: each entry is copied out, CONS moved past it (so the SMMU may
   * reuse the slot at once) and then handled; when the entries known run out, PROD is read again
   * (an OVFLG that changed since the last read is an overflow: entries were lost), until the queue
   * is empty. Last, CONS.OVACKFLG is made equal to PROD.OVFLG, acknowledging the overflow.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c queue_remove_raw
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c queue_sync_prod_in
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c queue_sync_cons_ovf
   */
  private readQueue(
    smmu: ArmSmmuDevice,
    q: ArmSmmuReadQueue,
    prodReg: number,
    consReg: number,
    handle: (entry: Uint32Array) => void,
  ): number {
    const m = smmu.mmio;
    const mem = this.mem;
    const e = this.entry;
    const words = q.entryBytes / 4;
    const idxMask = (1 << q.log2) - 1;
    const wrpMask = (1 << (q.log2 + 1)) - 1;
    let n = 0;
    for (;;) {
      while ((q.cons & wrpMask) !== (q.prod & wrpMask)) {
        const at = q.base + (q.cons & idxMask) * q.entryBytes;
        for (let i = 0; i < words; i += 2) {
          e[i] = mem.read64(at + 4 * i);
          e[i + 1] = mem.hi;
        }
        q.cons = ((q.cons & Q_OVERFLOW_FLAG) | ((q.cons + 1) & wrpMask)) >>> 0;
        m.write32(consReg, q.cons);
        handle(e);
        n++;
      }
      const prod = m.read32(prodReg) >>> 0;
      if (((prod ^ q.prod) & Q_OVERFLOW_FLAG) !== 0) q.overflows++;
      q.prod = prod & (Q_OVERFLOW_FLAG | wrpMask);
      if ((q.cons & wrpMask) === (q.prod & wrpMask)) break;
    }
    if (((q.prod ^ q.cons) & Q_OVERFLOW_FLAG) !== 0) {
      q.cons = ((q.prod & Q_OVERFLOW_FLAG) | (q.cons & wrpMask)) >>> 0;
      m.write32(consReg, q.cons);
    }
    return n;
  }

  /**
   * One event record (words 0-7): a stall (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION with
   * Stall) of a known master becomes a page request of the core's IOPF (STAG as group index);
   * anything else, and a stall nobody handles, is logged.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_handle_event
   */
  private handleEvent(smmu: ArmSmmuDevice, e: Uint32Array): void {
    const w0 = e[0] as number;
    const w2 = e[2] as number;
    const w3 = e[3] as number;
    const id = w0 & 0xff;
    const ssv = (w0 & (1 << 11)) !== 0;
    const ssid = ssv ? (w0 >>> 12) & 0xfffff : IOMMU_NO_PASID;
    const sid = (e[1] as number) >>> 0;
    const stall = (w2 & (1 << 31)) !== 0;
    const addr = (e[5] as number) * TWO32 + ((e[4] as number) >>> 0);
    this.eventsTotal++;
    const stallable =
      id === EVT_ID.F_TRANSLATION ||
      id === EVT_ID.F_ADDR_SIZE ||
      id === EVT_ID.F_ACCESS ||
      id === EVT_ID.F_PERMISSION;
    if (stall && stallable) {
      const master = this.mastersOf.get(smmu)?.get(sid);
      if (master !== undefined) {
        const rnw = (w3 & (1 << 3)) !== 0;
        const ind = (w3 & (1 << 2)) !== 0;
        const pnu = (w3 & (1 << 1)) !== 0;
        const fault = {
          flags:
            IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE | (ssv ? IOMMU_FAULT_PAGE_REQUEST_PASID_VALID : 0),
          pasid: ssv ? ssid : 0,
          grpid: w2 & 0xffff,
          perm:
            (rnw ? IOMMU_FAULT_PERM_READ : IOMMU_FAULT_PERM_WRITE) |
            (ind ? IOMMU_FAULT_PERM_EXEC : 0) |
            (pnu ? IOMMU_FAULT_PERM_PRIV : 0),
          addr,
          privateData: [0, 0] as const,
        };
        if (iommuReportDeviceFault(master.dev, { fault }) === 0) return;
        this.errorResponse(master, fault);
      }
    }
    this.events.push({ smmu: smmu.name, id, sid, ssid: ssv ? ssid : -1, addr, stall });
    if (this.events.length > EVENT_LOG) this.events.shift();
  }

  /**
   * One PRI queue entry (words 0-3). A stop marker (SSV, Last, neither R nor W) needs no answer;
   * a request of an unknown StreamID that ends its group is answered Resp 0 (as mainline answers
   * every request); the rest go to the core's IOPF.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_handle_ppr
   */
  private handlePpr(smmu: ArmSmmuDevice, e: Uint32Array): void {
    const w1 = e[1] as number;
    const w2 = e[2] as number;
    const sid = (e[0] as number) >>> 0;
    const ssid = w1 & 0xfffff;
    const priv = (w1 & (1 << 26)) !== 0;
    const x = (w1 & (1 << 27)) !== 0;
    const r = (w1 & (1 << 28)) !== 0;
    const w = (w1 & (1 << 29)) !== 0;
    const last = (w1 & (1 << 30)) !== 0;
    const ssv = (w1 & (1 << 31)) !== 0;
    const prgi = w2 & 0x1ff;
    const addr = (e[3] as number) * TWO32 + ((w2 & 0xfffff000) >>> 0);
    if (ssv && last && !r && !w) return;
    const master = this.mastersOf.get(smmu)?.get(sid);
    if (master === undefined) {
      this.badPageRequests++;
      if (!last) return;
      const q = smmu.cmdq;
      q.priResp(sid, ssv, ssid, prgi, PRI_RESP_DENY).add();
      q.submitNoSync();
      return;
    }
    const fault = {
      flags:
        (ssv ? IOMMU_FAULT_PAGE_REQUEST_PASID_VALID | IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID : 0) |
        (last ? IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE : 0),
      pasid: ssv ? ssid : 0,
      grpid: prgi,
      perm:
        (r ? IOMMU_FAULT_PERM_READ : 0) |
        (w ? IOMMU_FAULT_PERM_WRITE : 0) |
        (x ? IOMMU_FAULT_PERM_EXEC : 0) |
        (priv ? IOMMU_FAULT_PERM_PRIV : 0),
      addr,
      privateData: [0, 0] as const,
    };
    if (iommuReportDeviceFault(master.dev, { fault }) !== 0 && last)
      this.errorResponse(master, fault);
  }

  /**
   * A fault the core could not take is answered as the core's iopf_error_response answers it:
   * page_response with IOMMU_PAGE_RESP_INVALID.
   *
   * @kernel drivers/iommu/io-pgfault.c iopf_error_response
   */
  private errorResponse(master: ArmSmmuMaster, fault: IopfFault["fault"]): void {
    this.pageResponse(
      master.dev,
      { fault },
      { pasid: fault.pasid, grpid: fault.grpid, code: IOMMU_PAGE_RESP_INVALID },
    );
  }

  /** ASIDs and VMIDs in use (leak checks). */
  get idsInUse(): number {
    let n = 0;
    for (let id = this.asids.nextUsed(0); id >= 0; id = this.asids.nextUsed(id + 1)) n++;
    for (const smmu of this.smmus)
      for (let id = smmu.vmids.nextUsed(0); id >= 0; id = smmu.vmids.nextUsed(id + 1)) n++;
    return n;
  }
}

/** The smallest granule of a page-size bitmap the kernel would use (4K when present). */
function granuleOf(pgsize: number): LpaeGranule | 0 {
  if ((pgsize & PAGE) !== 0) return 4096;
  if ((pgsize & 16384) !== 0) return 16384;
  if ((pgsize & 65536) !== 0) return 65536;
  return 0;
}

function log2Of(x: number): number {
  return Math.round(Math.log2(x));
}

/** Position of the lowest set bit of a positive integer below 2^53. */
function lowestSetBit(x: number): number {
  let n = 0;
  while (x % 2 === 0) {
    x /= 2;
    n++;
  }
  return n;
}

/**
 * The ATC_INV span covering [iova, iova + size): the smallest power-of-two number of 4 KiB pages,
 * aligned on itself, that holds the range.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_atc_inv_to_cmd
 */
export function atcSpan(iova: number, size: number): { addr: number; log2: number } {
  const first = Math.floor(iova / PAGE);
  const last = Math.floor((iova + size - 1) / PAGE);
  let log2 = 0;
  while (Math.floor(first / 2 ** log2) !== Math.floor(last / 2 ** log2)) log2++;
  const start = Math.floor(first / 2 ** log2) * 2 ** log2;
  return { addr: start * PAGE, log2 };
}
