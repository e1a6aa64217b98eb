// One SMMUv3 as the driver sees it (struct arm_smmu_device): its features read from the ID
// registers, its queues and stream table in memory, and the bring-up through CR0/CR0ACK.

import { Ida } from "@iommu-sim/ioasid";
import { IommuDevice, type IommuOps } from "@iommu-sim/iommu-core";
import {
  decode,
  type FrameAllocator,
  type Mmio,
  type PhysMemory,
  TWO32,
} from "@iommu-sim/iommu-core/platform";
import { CMDQ_OP } from "../format/commands.js";
import {
  ADDR_SIZE_BITS,
  CR0_ATSCHK,
  CR0_CMDQEN,
  CR0_EVTQEN,
  CR0_PRIQEN,
  CR0_SMMUEN,
  CR2_E2H,
  CR2_PTM,
  CR2_RECINVSID,
  GBPA_ABORT,
  GBPA_UPDATE,
  IDR0_REG,
  IDR1_REG,
  IDR3_REG,
  IDR5_REG,
  IRQ_CTRL_EVTQ_IRQEN,
  IRQ_CTRL_GERROR_IRQEN,
  IRQ_CTRL_PRIQ_IRQEN,
  SMMU_REG,
} from "../format/registers.js";
import { L1_STD_SPAN_LINUX, STE_SIZE, STRTAB_FMT_2LVL, STRTAB_SPLIT } from "../format/ste.js";
import { mmioWrite2x32, SmmuCmdq } from "./cmdq.js";
import { makeAbortSte } from "./entries.js";
import { type ArmCpuFeatures, armSmmuSvaSupported, DEFAULT_ARM_CPU_FEATURES } from "./smmu-sva.js";

const PAGE = 4096;
/** log2 of the largest queue in bytes the kernel allocates (PAGE_SHIFT + MAX_PAGE_ORDER). @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h Q_MAX_SZ_SHIFT */
const Q_MAX_SZ_SHIFT = 12 + 10;
/** Most L1 stream table descriptors the kernel allocates. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h STRTAB_MAX_L1_ENTRIES */
const STRTAB_MAX_L1_ENTRIES = 1 << 17;
/** Largest linear CD table: 1024 CDs (64 KiB). @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CTXDESC_LINEAR_CDMAX */
export const CTXDESC_LINEAR_CDMAX = 10;
/** CR1: queues and tables inner shareable, write-back cacheable. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_device_reset */
const CR1_WB_ISH = 0xd75;
/** Polls of an acknowledgement register before bring-up gives up. */
const ACK_POLLS = 100;
/** A batch of 64 commands and its CMD_SYNC must fit the command queue. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CMDQ_BATCH_ENTRIES */
const CMDQ_MIN_LOG2 = 7;
/** IDR0.TTENDIAN: mixed-endian and little-endian tables are the ones a little-endian kernel can use. */
const TTENDIAN_MIXED = 0;
const TTENDIAN_LE = 2;
/** IDR0.TTF: AArch32 (LPAE) and AArch64 tables. */
const TTF_AARCH32_64 = 3;

/** What the driver makes of the ID registers. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h ARM_SMMU_FEAT_* */
export interface ArmSmmuFeatures {
  readonly twoLvlStrtab: boolean;
  readonly twoLvlCdtab: boolean;
  readonly s1: boolean;
  readonly s2: boolean;
  readonly nesting: boolean;
  readonly coherent: boolean;
  readonly ats: boolean;
  readonly pri: boolean;
  readonly sev: boolean;
  readonly msi: boolean;
  readonly hyp: boolean;
  /** The kernel runs at EL2 (VHE): stage-1 domains use the EL2 translation regime. */
  readonly e2h: boolean;
  readonly stalls: boolean;
  readonly stallForce: boolean;
  readonly rangeInv: boolean;
  /** IDR3.FWB: stage 2 can force write-back (nesting parents use it). */
  readonly s2fwb: boolean;
  /** IDR3.BBML == 2: break-before-make level 2 (SVA needs it when the CPUs have it). */
  readonly bbml2: boolean;
  readonly attrTypesOvr: boolean;
  readonly httuAf: boolean;
  readonly httuDirty: boolean;
  readonly vax: boolean;
  readonly asidBits: number;
  readonly vmidBits: number;
  readonly ssidBits: number;
  readonly sidBits: number;
  readonly oas: number;
  /**
   * Input address size: the OAS, but at least 40 bits when the SMMU also walks AArch32 tables
   * (stage-2 input size and stage-1 output size of the domains).
   */
  readonly ias: number;
  readonly pgsizeBitmap: number;
  /** ARM_SMMU_FEAT_SVA: the SMMU can walk the CPUs' page tables (see armSmmuSvaSupported). */
  readonly sva: boolean;
}

/** One queue the SMMU writes (events, PRI requests) and the driver reads. */
export interface ArmSmmuReadQueue {
  readonly base: number;
  readonly log2: number;
  readonly entryBytes: number;
  /** Entries read so far (the CONS value the driver wrote last, with the wrap bit and OVACKFLG). */
  cons: number;
  /** The PROD value the driver read last (index, wrap bit and OVFLG). */
  prod: number;
  /** Overflows the driver noticed (PROD.OVFLG differing from CONS.OVACKFLG). */
  overflows: number;
}

/** How a driver builds an instance. */
export interface ArmSmmuDeviceOptions {
  readonly name: string;
  readonly mmio: Mmio;
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;
  /** The kernel runs at EL2 with VHE (sets CR2.E2H when the SMMU has Hyp). Default false. */
  readonly vhe?: boolean;
  /** Leave SMMUEN clear and let GBPA pass traffic (firmware bypass; the kernel's disable_bypass=0). */
  readonly bypassDisabledSmmu?: boolean;
  /** The CPUs whose page tables SVA shares (default DEFAULT_ARM_CPU_FEATURES). */
  readonly cpu?: ArmCpuFeatures;
}

/**
 * An SMMUv3 instance. `init()` does what arm_smmu_device_probe does for one SMMU: read the ID
 * registers, allocate the queues and the stream table, then reset the SMMU through its registers
 * and bring it up.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h struct arm_smmu_device
 */
export class ArmSmmuDevice {
  readonly name: string;
  readonly mmio: Mmio;
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;
  readonly iommu: IommuDevice;
  features!: ArmSmmuFeatures;
  cmdq!: SmmuCmdq;
  evtq!: ArmSmmuReadQueue;
  priq: ArmSmmuReadQueue | null = null;
  /** VMIDs of stage-2 domains (1 .. 2^vmidBits - 1). */
  readonly vmids = new Ida();
  /** The stream table: format, base, log2 of its StreamIDs, and the L2 tables by L1 index. */
  strtab = { fmt: 0, base: 0, log2size: 0, bytes: 0, l1: 0 };
  readonly l2Tables = new Map<number, number>();
  /** Frames this instance holds for its structures (queues, tables), by PA and order. */
  readonly owned = new Map<number, number>();
  private readonly vhe: boolean;
  private readonly bypassDisabled: boolean;
  private readonly cpu: ArmCpuFeatures;

  constructor(options: ArmSmmuDeviceOptions, ops: IommuOps) {
    this.name = options.name;
    this.mmio = options.mmio;
    this.mem = options.mem;
    this.frames = options.frames;
    this.vhe = options.vhe ?? false;
    this.cpu = options.cpu ?? DEFAULT_ARM_CPU_FEATURES;
    this.bypassDisabled = options.bypassDisabledSmmu ?? false;
    this.iommu = new IommuDevice(options.name, ops, 0);
    this.iommu.priv = this;
  }

  /** Bring the SMMU up. `'ENXIO'` for one the driver cannot use, `'ENOMEM'`, `'ETIMEDOUT'`. */
  init(): 0 | "ENXIO" | "ENOMEM" | "ETIMEDOUT" {
    const probed = this.hwProbe();
    if (probed !== 0) return probed;
    const st = this.initStructures();
    if (st !== 0) return st;
    return this.reset();
  }

  /**
   * Read IDR0, IDR1, IDR3 and IDR5 into the feature set, then decide ARM_SMMU_FEAT_SVA against
   * the CPUs (arm_smmu_sva_supported). Refuses (`'ENXIO'`) an SMMU whose tables
   * are big-endian only, one without any translation stage, one that walks no AArch64 table, one
   * with preset tables or queues, and one whose command queue cannot take a batch of 64 commands
   * and its CMD_SYNC (64 entries or fewer).
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_device_hw_probe
   */
  private hwProbe(): 0 | "ENXIO" {
    const m = this.mmio;
    const idr0 = decode(IDR0_REG, [m.read32(SMMU_REG.IDR0)]) as Record<string, number>;
    if (idr0.TTENDIAN !== TTENDIAN_MIXED && idr0.TTENDIAN !== TTENDIAN_LE) return "ENXIO";
    if (!idr0.S1P && !idr0.S2P) return "ENXIO";
    if ((idr0.TTF & 2) === 0) return "ENXIO";
    const idr1 = decode(IDR1_REG, [m.read32(SMMU_REG.IDR1)]) as Record<string, number>;
    if (idr1.TABLES_PRESET || idr1.QUEUES_PRESET || idr1.REL) return "ENXIO";
    const cmdqLog2 = Math.min(idr1.CMDQS, Q_MAX_SZ_SHIFT - 4);
    if (cmdqLog2 < CMDQ_MIN_LOG2) return "ENXIO";
    const idr3 = decode(IDR3_REG, [m.read32(SMMU_REG.IDR3)]) as Record<string, number>;
    const idr5 = decode(IDR5_REG, [m.read32(SMMU_REG.IDR5)]) as Record<string, number>;
    const sidBits = idr1.SIDSIZE;
    let pgsize = 0;
    if (idr5.GRAN4K) pgsize += PAGE + 2 ** 21 + 2 ** 30;
    if (idr5.GRAN16K) pgsize += 2 ** 14 + 2 ** 25;
    if (idr5.GRAN64K) pgsize += 2 ** 16 + 2 ** 29;
    // An encoding the driver does not know (56 bits) is taken as 48.
    const known = ADDR_SIZE_BITS[idr5.OAS] ?? 48;
    const oas = known > 52 ? 48 : known;
    if (oas === 52) pgsize += 2 ** 42;
    const stallModel = idr0.STALL_MODEL;
    const features = {
      // A SID space that fits one L2 table gets a linear table.
      twoLvlStrtab: idr0.ST_LEVEL === 1 && sidBits > STRTAB_SPLIT,
      twoLvlCdtab: idr0.CD2L === 1,
      s1: idr0.S1P === 1,
      s2: idr0.S2P === 1,
      nesting: idr0.S1P === 1 && idr0.S2P === 1,
      coherent: idr0.COHACC === 1,
      ats: idr0.ATS === 1,
      pri: idr0.PRI === 1,
      sev: idr0.SEV === 1,
      msi: idr0.MSI === 1,
      hyp: idr0.Hyp === 1,
      e2h: idr0.Hyp === 1 && this.vhe,
      stalls: stallModel === 0 || stallModel === 2,
      stallForce: stallModel === 2,
      rangeInv: idr3.RIL === 1,
      s2fwb: idr3.FWB === 1,
      bbml2: idr3.BBML === 2,
      attrTypesOvr: idr1.ATTR_TYPES_OVR === 1,
      httuAf: idr0.HTTU >= 1,
      httuDirty: idr0.HTTU >= 2,
      vax: idr5.VAX === 1,
      asidBits: idr0.ASID16 ? 16 : 8,
      vmidBits: idr0.VMID16 ? 16 : 8,
      ssidBits: idr1.SSIDSIZE,
      sidBits,
      oas,
      ias: Math.max(idr0.TTF === TTF_AARCH32_64 ? 40 : 0, oas),
      pgsizeBitmap: pgsize,
      sva: false,
    };
    features.sva = armSmmuSvaSupported(features, this.cpu);
    this.features = Object.freeze(features);
    this.iommu.maxPasids = 2 ** idr1.SSIDSIZE;
    this.cmdqLog2 = cmdqLog2;
    this.evtqLog2 = Math.min(idr1.EVENTQS, Q_MAX_SZ_SHIFT - 5);
    this.priqLog2 = Math.min(idr1.PRIQS, Q_MAX_SZ_SHIFT - 4);
    return 0;
  }

  private cmdqLog2 = 0;
  private evtqLog2 = 0;
  private priqLog2 = 0;

  /** A naturally aligned, zeroed block of 2^log2 bytes (at least a page), or 'ENOMEM'. */
  allocBytes(log2bytes: number): number | "ENOMEM" {
    const order = Math.max(0, log2bytes - 12);
    const pa = this.frames.alloc(order);
    if (typeof pa === "string") return "ENOMEM";
    this.owned.set(pa, order);
    return pa;
  }

  /** Give back a block from `allocBytes`. */
  freeBytes(pa: number): void {
    const order = this.owned.get(pa);
    if (order === undefined) return;
    this.owned.delete(pa);
    this.frames.free(pa, order);
  }

  /**
   * A queue of 2^log2 entries, shrunk until the allocation succeeds, as arm_smmu_init_one_queue.
   */
  private allocQueue(log2: number, entryBytes: number): { base: number; log2: number } | "ENOMEM" {
    let n = log2;
    const shift = Math.log2(entryBytes);
    for (;;) {
      const pa = this.allocBytes(n + shift);
      if (typeof pa === "number") return { base: pa, log2: n };
      if (n + shift <= 12) return "ENOMEM";
      n--;
    }
  }

  /**
   * Queues, then the stream table: 2-level (L1 descriptors left invalid; L2 tables come with
   * their first master) or linear with every STE made an abort STE.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_init_structures
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_init_strtab
   */
  private initStructures(): 0 | "ENOMEM" {
    const f = this.features;
    const cq = this.allocQueue(this.cmdqLog2, 16);
    if (cq === "ENOMEM") return cq;
    this.cmdq = new SmmuCmdq(this.mmio, this.mem, cq.base, cq.log2, f.msi && f.coherent);
    const eq = this.allocQueue(this.evtqLog2, 32);
    if (eq === "ENOMEM") return eq;
    this.evtq = { base: eq.base, log2: eq.log2, entryBytes: 32, cons: 0, prod: 0, overflows: 0 };
    if (f.pri) {
      const pq = this.allocQueue(this.priqLog2, 16);
      if (pq === "ENOMEM") return pq;
      this.priq = { base: pq.base, log2: pq.log2, entryBytes: 16, cons: 0, prod: 0, overflows: 0 };
    }
    if (f.twoLvlStrtab) {
      const l1 = Math.min(2 ** (f.sidBits - STRTAB_SPLIT), STRTAB_MAX_L1_ENTRIES);
      const bytes = l1 * 8;
      const pa = this.allocBytes(Math.max(12, Math.ceil(Math.log2(bytes))));
      if (pa === "ENOMEM") return pa;
      this.strtab = {
        fmt: STRTAB_FMT_2LVL,
        base: pa,
        log2size: STRTAB_SPLIT + Math.log2(l1),
        bytes,
        l1,
      };
    } else {
      const bytes = STE_SIZE * 2 ** f.sidBits;
      const pa = this.allocBytes(Math.max(12, Math.log2(bytes)));
      if (pa === "ENOMEM") return pa;
      this.strtab = { fmt: 0, base: pa, log2size: f.sidBits, bytes, l1: 0 };
      this.initAbortStes(pa, 2 ** f.sidBits);
    }
    return 0;
  }

  private initAbortStes(pa: number, count: number): void {
    const ste = new Uint32Array(16);
    makeAbortSte(ste);
    for (let i = 0; i < count; i++) {
      const at = pa + i * STE_SIZE;
      for (let q = 0; q < 8; q++) {
        const lo = ste[2 * q] as number;
        const hi = ste[2 * q + 1] as number;
        if (lo !== 0 || hi !== 0) this.mem.write64(at + 8 * q, lo, hi);
      }
    }
  }

  /** Write CR0 and wait for CR0ACK to match. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_write_reg_sync */
  private writeSync(reg: number, ack: number, v: number): 0 | "ETIMEDOUT" {
    this.mmio.write32(reg, v >>> 0);
    for (let i = 0; i < ACK_POLLS; i++) if (this.mmio.read32(ack) === v >>> 0) return 0;
    return "ETIMEDOUT";
  }

  private cr0 = 0;

  /**
   * Change GBPA: wait for Update to read 0, write the new value with Update set, wait again.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_update_gbpa
   */
  private updateGbpa(set: number, clr: number): 0 | "ETIMEDOUT" {
    const m = this.mmio;
    let reg = 0;
    let i = 0;
    for (; i < ACK_POLLS; i++) {
      reg = m.read32(SMMU_REG.GBPA);
      if ((reg & GBPA_UPDATE) === 0) break;
    }
    if (i === ACK_POLLS) return "ETIMEDOUT";
    m.write32(SMMU_REG.GBPA, ((reg & ~clr) | set | GBPA_UPDATE) >>> 0);
    for (i = 0; i < ACK_POLLS; i++) if ((m.read32(SMMU_REG.GBPA) & GBPA_UPDATE) === 0) return 0;
    return "ETIMEDOUT";
  }

  private enable(bits: number): 0 | "ETIMEDOUT" {
    this.cr0 = (this.cr0 | bits) >>> 0;
    return this.writeSync(SMMU_REG.CR0, SMMU_REG.CR0ACK, this.cr0);
  }

  /**
   * The reset sequence: abort through GBPA if the SMMU was left enabled, everything off, CR1 and
   * CR2, the stream table and command queue bases, CMDQEN, then CFGI_ALL, TLBI_EL2_ALL (with
   * Hyp) and TLBI_NSNH_ALL each with a sync, the event and PRI queues, ATSCHK, the interrupts,
   * and SMMUEN (or, for firmware bypass, GBPA.ABORT cleared with SMMUEN left off, as kernels
   * before 6.x did without disable_bypass).
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_device_reset
   */
  private reset(): 0 | "ETIMEDOUT" {
    const m = this.mmio;
    const f = this.features;
    // Left enabled (by firmware, a previous kernel): abort incoming traffic while it is reset.
    if ((m.read32(SMMU_REG.CR0) & CR0_SMMUEN) !== 0) this.updateGbpa(GBPA_ABORT, 0);
    this.cr0 = 0;
    if (this.writeSync(SMMU_REG.CR0, SMMU_REG.CR0ACK, 0) !== 0) return "ETIMEDOUT";
    m.write32(SMMU_REG.CR1, CR1_WB_ISH);
    m.write32(SMMU_REG.CR2, (CR2_RECINVSID | CR2_PTM | (f.e2h ? CR2_E2H : 0)) >>> 0);
    const st = this.strtab;
    mmioWrite2x32(
      m,
      SMMU_REG.STRTAB_BASE,
      st.base % TWO32,
      Math.floor(st.base / TWO32) | (1 << 30),
    );
    const cfg = (st.fmt << 16) | (st.fmt === STRTAB_FMT_2LVL ? STRTAB_SPLIT << 6 : 0) | st.log2size;
    m.write32(SMMU_REG.STRTAB_BASE_CFG, cfg);
    this.cmdq.program();
    if (this.enable(CR0_CMDQEN) !== 0) return "ETIMEDOUT";
    const q = this.cmdq;
    if (q.cfgiAll().issueWithSync() !== 0) return "ETIMEDOUT";
    if (f.hyp && q.bare(CMDQ_OP.TLBI_EL2_ALL).issueWithSync() !== 0) return "ETIMEDOUT";
    if (q.bare(CMDQ_OP.TLBI_NSNH_ALL).issueWithSync() !== 0) return "ETIMEDOUT";
    this.programReadQueue(
      SMMU_REG.EVENTQ_BASE,
      SMMU_REG.EVENTQ_PROD,
      SMMU_REG.EVENTQ_CONS,
      this.evtq,
    );
    if (this.enable(CR0_EVTQEN) !== 0) return "ETIMEDOUT";
    if (this.priq !== null) {
      this.programReadQueue(SMMU_REG.PRIQ_BASE, SMMU_REG.PRIQ_PROD, SMMU_REG.PRIQ_CONS, this.priq);
      if (this.enable(CR0_PRIQEN) !== 0) return "ETIMEDOUT";
    }
    if (f.ats && this.enable(CR0_ATSCHK) !== 0) return "ETIMEDOUT";
    if (this.setupIrqs() !== 0) return "ETIMEDOUT";
    if (this.bypassDisabled) return this.updateGbpa(0, GBPA_ABORT);
    return this.enable(CR0_SMMUEN);
  }

  /**
   * Interrupts off (a failure here fails the bring-up), the MSI addresses cleared (the model's
   * SMMUs use their wired lines: no MSI domain), then the global-error, event and PRI interrupts
   * on (a failure here is only warned about).
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_setup_irqs
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_setup_msis
   */
  private setupIrqs(): 0 | "ETIMEDOUT" {
    const m = this.mmio;
    if (this.writeSync(SMMU_REG.IRQ_CTRL, SMMU_REG.IRQ_CTRLACK, 0) !== 0) return "ETIMEDOUT";
    mmioWrite2x32(m, SMMU_REG.GERROR_IRQ_CFG0, 0, 0);
    mmioWrite2x32(m, SMMU_REG.EVENTQ_IRQ_CFG0, 0, 0);
    if (this.priq !== null) mmioWrite2x32(m, SMMU_REG.PRIQ_IRQ_CFG0, 0, 0);
    const irqs =
      IRQ_CTRL_GERROR_IRQEN | IRQ_CTRL_EVTQ_IRQEN | (this.priq !== null ? IRQ_CTRL_PRIQ_IRQEN : 0);
    this.writeSync(SMMU_REG.IRQ_CTRL, SMMU_REG.IRQ_CTRLACK, irqs);
    return 0;
  }

  private programReadQueue(
    baseReg: number,
    prodReg: number,
    consReg: number,
    q: ArmSmmuReadQueue,
  ): void {
    mmioWrite2x32(
      this.mmio,
      baseReg,
      ((q.base % TWO32) & ~31) | q.log2,
      Math.floor(q.base / TWO32) | (1 << 30),
    );
    this.mmio.write32(prodReg, 0);
    this.mmio.write32(consReg, 0);
    q.cons = 0;
    q.prod = 0;
  }

  /** Turn the SMMU off (CR0 = 0) and give back its structures. */
  shutdown(): void {
    this.mmio.write32(SMMU_REG.CR0, 0);
    this.cr0 = 0;
    for (const pa of [...this.owned.keys()]) this.freeBytes(pa);
    this.l2Tables.clear();
  }

  // --- Stream table --------------------------------------------------------------------------------

  /**
   * Make sure the STE of `sid` exists: in a 2-level table, the L2 table of its span (256 abort
   * STEs, then the L1 descriptor with one 64-bit store; no CFGI: an invalid L1 descriptor is not
   * cached). `'ERANGE'` for a StreamID beyond the table.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_init_l2_strtab
   */
  initSidStrtab(sid: number): 0 | "ENOMEM" | "ERANGE" {
    const st = this.strtab;
    if (sid < 0 || sid >= 2 ** st.log2size) return "ERANGE";
    if (st.fmt !== STRTAB_FMT_2LVL) return 0;
    const l1 = Math.floor(sid / 2 ** STRTAB_SPLIT);
    if (this.l2Tables.has(l1)) return 0;
    const count = 2 ** STRTAB_SPLIT;
    const pa = this.allocBytes(Math.log2(count * STE_SIZE));
    if (pa === "ENOMEM") return pa;
    this.initAbortStes(pa, count);
    this.l2Tables.set(l1, pa);
    this.mem.write64(
      st.base + l1 * 8,
      ((pa % TWO32) & ~0x3f) | L1_STD_SPAN_LINUX,
      Math.floor(pa / TWO32),
    );
    return 0;
  }

  /** PA of the STE of `sid` (its table exists). */
  stePa(sid: number): number {
    const st = this.strtab;
    if (st.fmt !== STRTAB_FMT_2LVL) return st.base + sid * STE_SIZE;
    const l2 = this.l2Tables.get(Math.floor(sid / 2 ** STRTAB_SPLIT));
    if (l2 === undefined) return -1;
    return l2 + (sid % 2 ** STRTAB_SPLIT) * STE_SIZE;
  }
}
