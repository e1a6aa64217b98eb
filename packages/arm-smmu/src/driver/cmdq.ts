// The driver's side of the SMMUv3 command queue: commands built from the format's field tables,
// staged in batches, written into queue memory, published with one CMDQ_PROD store and completed
// with a CMD_SYNC the driver waits for, as arm_smmu_cmdq_issue_cmdlist does.

import { fieldOf, type Mmio, type PhysMemory, TWO32 } from "@iommu-sim/iommu-core/platform";
import {
  ATC_INV_SIZE_ALL,
  CMD_ATC_INV,
  CMD_CFGI_CD,
  CMD_CFGI_STE,
  CMD_PRI_RESP,
  CMD_RESUME,
  CMD_SYNC,
  CMD_SYNC_CS_IRQ,
  CMD_SYNC_CS_SEV,
  CMD_TLBI_NH_VA,
  CMD_TLBI_S2_IPA,
  CMDQ_OP,
} from "../format/commands.js";
import {
  CMDQ_CONS_ERR_ABT,
  CMDQ_CONS_ERR_ATC_INV_SYNC,
  CMDQ_CONS_ERR_MASK,
  CMDQ_CONS_ERR_SHIFT,
  GERROR_CMDQ_ERR,
  GERROR_ERR_MASK,
  GERROR_SFM_ERR,
  Q_WR_MASK,
  qEmpty,
  SMMU_REG,
} from "../format/registers.js";

/** Commands a batch holds before it is issued without a sync. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CMDQ_BATCH_ENTRIES */
export const CMDQ_BATCH_ENTRIES = 64;
/** Polls of a CMD_SYNC (or of queue space) before the driver gives up. */
const POLL_LIMIT = 1000;

// Field positions, derived once from the command layouts (word index, shift, mask).
const F_SSV = fieldOf(CMD_ATC_INV, "SSV");
const F_SSID = fieldOf(CMD_ATC_INV, "SubstreamID");
const F_ATC_SIZE = fieldOf(CMD_ATC_INV, "Size");
const F_ATC_ADDR = fieldOf(CMD_ATC_INV, "Address");
const F_LEAF = fieldOf(CMD_CFGI_STE, "Leaf");
const F_CD_LEAF = fieldOf(CMD_CFGI_CD, "Leaf");
const F_VMID = fieldOf(CMD_TLBI_NH_VA, "VMID");
const F_ASID = fieldOf(CMD_TLBI_NH_VA, "ASID");
const F_NUM = fieldOf(CMD_TLBI_NH_VA, "NUM");
const F_SCALE = fieldOf(CMD_TLBI_NH_VA, "SCALE");
const F_TLBI_LEAF = fieldOf(CMD_TLBI_NH_VA, "Leaf");
const F_TTL = fieldOf(CMD_TLBI_NH_VA, "TTL");
const F_TG = fieldOf(CMD_TLBI_NH_VA, "TG");
const F_VA = fieldOf(CMD_TLBI_NH_VA, "Address");
const F_IPA = fieldOf(CMD_TLBI_S2_IPA, "IPA");
const F_CS = fieldOf(CMD_SYNC, "CS");
const F_MSH = fieldOf(CMD_SYNC, "MSH");
const F_MSIATTR = fieldOf(CMD_SYNC, "MSIAttr");
const F_PRGI = fieldOf(CMD_PRI_RESP, "PRGIndex");
const F_RESP = fieldOf(CMD_PRI_RESP, "Resp");
const F_AC = fieldOf(CMD_RESUME, "Ac");
const F_AB = fieldOf(CMD_RESUME, "Ab");
const F_STAG = fieldOf(CMD_RESUME, "STAG");
// The address fields start on a 4 KiB boundary in dword 1: bits [63:12] of the address.
if (F_VA.lsb !== 76 || F_IPA.lsb !== 76 || F_ATC_ADDR.lsb !== 76)
  throw new Error("cmdq: address fields moved");
/** CMD_SYNC.MSIAttr Inner/Outer write-back, as Linux asks for its MSIPOLL write. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h ARM_SMMU_MEMATTR_OIWB */
const MSIATTR_OIWB = 0xf;
/** CMD_SYNC.MSH inner shareable. */
const MSH_ISH = 3;
/**
 * Word 0 of every CMD_SYNC Linux builds: MSH and MSIAttr are set whatever the completion signal
 * (arm_smmu_cmdq_build_cmd), CS = SIG_IRQ when the MSI is aimed at the sync itself (MSIData 0),
 * else SIG_SEV.
 */
const SYNC_W0_MSI =
  (CMDQ_OP.CMD_SYNC |
    (CMD_SYNC_CS_IRQ << F_CS.shift) |
    (MSH_ISH << F_MSH.shift) |
    (MSIATTR_OIWB << F_MSIATTR.shift)) >>>
  0;
const SYNC_W0_SEV =
  (CMDQ_OP.CMD_SYNC |
    (CMD_SYNC_CS_SEV << F_CS.shift) |
    (MSH_ISH << F_MSH.shift) |
    (MSIATTR_OIWB << F_MSIATTR.shift)) >>>
  0;

/** Put bits [63:12] of `addr` (a page-aligned number below 2^53) into dword 1 at bit 76. */
function setAddr(w: Uint32Array, addr: number): void {
  const lo = addr % TWO32;
  const hi = Math.floor(addr / TWO32);
  w[2] = ((w[2] as number) & 0xfff) | (lo & ~0xfff);
  w[3] = hi >>> 0;
}

/** Counters of a command queue. */
export interface SmmuCmdqStats {
  /** Commands written (syncs included). */
  commands: number;
  syncs: number;
  /** PROD stores. */
  issues: number;
  /** Commands the SMMU refused (CERROR_ILL) and the driver skipped. */
  refused: number;
  /** Command fetch aborts (CERROR_ABT), retried. */
  aborts: number;
  /** Global errors other than CMDQ_ERR the driver acknowledged (queue write aborts, MSI aborts). */
  globalErrors: number;
  /** Service failure mode reports (GERROR.SFM_ERR): the driver turned the SMMU off. */
  serviceFailures: number;
  /** CMD_SYNCs that failed on an ATC invalidation timeout (CERROR_ATC_INV_SYNC), retried. */
  atcSyncErrors: number;
  /** Waits the driver gave up (no space, or a CMD_SYNC that never completed). */
  timeouts: number;
}

/** The raw words of a refused command, for reports. */
export interface RefusedCommand {
  readonly words: readonly [number, number, number, number];
  readonly code: number;
}

/**
 * One SMMU's command queue, owned by the driver. Commands are staged with the `cmd*` builders into
 * `w` and added with `add()`; `submit()` writes the batch and a CMD_SYNC, moves PROD once and waits
 * for the sync (MSI polling when the SMMU has coherent MSIs, else CONS polling). A batch holds up
 * to 64 commands: adding a 65th first issues the 64 without a sync. While the driver waits it runs
 * the GERROR handler in place of the interrupt: an illegal command becomes a CMD_SYNC, every active
 * error is acknowledged, and the queue goes on.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_cmdq_issue_cmdlist
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_cmdq_skip_err
 */
export class SmmuCmdq {
  readonly stats: SmmuCmdqStats = {
    commands: 0,
    syncs: 0,
    issues: 0,
    refused: 0,
    aborts: 0,
    globalErrors: 0,
    serviceFailures: 0,
    atcSyncErrors: 0,
    timeouts: 0,
  };
  /** The last commands the SMMU refused (at most 16). */
  readonly refusedCommands: RefusedCommand[] = [];
  /** The command being built (4 words). */
  readonly w = new Uint32Array(4);
  /**
   * Called while the driver waits (a sync not yet complete, no space): a test or a harness that
   * steps the SMMU by hand advances it here. Null: the SMMU runs commands as PROD moves.
   */
  idle: (() => void) | null = null;

  private readonly batch = new Uint32Array(4 * CMDQ_BATCH_ENTRIES);
  private n = 0;
  /** The shadow producer index (with the wrap bit). */
  private prod = 0;
  private readonly entries: number;
  private readonly mask: number;

  /**
   * @param log2 log2 of the queue's entries (the LOG2SIZE written to CMDQ_BASE)
   * @param msiPoll complete syncs by an MSI write of 0 over the sync's own first word (the
   *   kernel's ARM_SMMU_OPT_MSIPOLL: coherent SMMU with MSIs)
   */
  constructor(
    private readonly mmio: Mmio,
    private readonly mem: PhysMemory,
    readonly base: number,
    readonly log2: number,
    readonly msiPoll: boolean,
  ) {
    this.entries = 2 ** log2;
    this.mask = (1 << (log2 + 1)) - 1;
  }

  /** Program CMDQ_BASE (RA, address, LOG2SIZE) and zero PROD/CONS; the queue is still disabled. */
  program(): void {
    const lo = ((this.base % TWO32) & ~31) | this.log2;
    const hi = Math.floor(this.base / TWO32) | (1 << 30);
    mmioWrite2x32(this.mmio, SMMU_REG.CMDQ_BASE, lo >>> 0, hi >>> 0);
    this.mmio.write32(SMMU_REG.CMDQ_PROD, 0);
    this.mmio.write32(SMMU_REG.CMDQ_CONS, 0);
    this.prod = 0;
  }

  /** Commands staged and not yet issued. */
  get pending(): number {
    return this.n;
  }

  // --- Builders: each clears `w` and fills one command ----------------------------------------------

  private op(opcode: number): Uint32Array {
    const w = this.w;
    w[0] = opcode;
    w[1] = 0;
    w[2] = 0;
    w[3] = 0;
    return w;
  }

  /** CMD_CFGI_STE(StreamID, Leaf). */
  cfgiSte(sid: number, leaf: boolean): this {
    const w = this.op(CMDQ_OP.CFGI_STE);
    w[1] = sid >>> 0;
    if (leaf) w[2] = F_LEAF.inPlace;
    return this;
  }

  /** CMD_CFGI_ALL: CMD_CFGI_STE_RANGE with Range 31. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_cmdq_build_cmd */
  cfgiAll(): this {
    const w = this.op(CMDQ_OP.CFGI_STE_RANGE);
    w[2] = 31;
    return this;
  }

  /** CMD_CFGI_CD(StreamID, SubstreamID, Leaf). */
  cfgiCd(sid: number, ssid: number, leaf: boolean): this {
    const w = this.op(CMDQ_OP.CFGI_CD);
    w[0] = (w[0] as number) | ((ssid & F_SSID.mask) << F_SSID.shift);
    w[1] = sid >>> 0;
    if (leaf) w[2] = F_CD_LEAF.inPlace;
    return this;
  }

  /** CMD_PREFETCH_CONFIG(StreamID). */
  prefetchConfig(sid: number): this {
    const w = this.op(CMDQ_OP.PREFETCH_CONFIG);
    w[1] = sid >>> 0;
    return this;
  }

  /** CMD_TLBI_NH_ASID (or TLBI_EL2_ASID) of `asid`. */
  tlbiAsid(asid: number, el2: boolean): this {
    const w = this.op(el2 ? CMDQ_OP.TLBI_EL2_ASID : CMDQ_OP.TLBI_NH_ASID);
    w[1] = ((asid & F_ASID.mask) << F_ASID.shift) >>> 0;
    return this;
  }

  /** CMD_TLBI_S12_VMALL of `vmid`. */
  tlbiS12Vmall(vmid: number): this {
    const w = this.op(CMDQ_OP.TLBI_S12_VMALL);
    w[1] = (vmid & F_VMID.mask) << F_VMID.shift;
    return this;
  }

  /** A command with no field but its opcode (TLBI_NSNH_ALL, TLBI_EL2_ALL, ...). */
  bare(opcode: number): this {
    this.op(opcode);
    return this;
  }

  /**
   * CMD_TLBI_NH_VA / TLBI_EL2_VA / TLBI_S2_IPA at `addr` with the range fields (0 when the SMMU
   * has no range invalidation): `tg` the TG encoding, `ttl`, `scale`, `num`.
   */
  tlbiVa(
    opcode: number,
    id: number,
    addr: number,
    leaf: boolean,
    tg: number,
    ttl: number,
    scale: number,
    num: number,
  ): this {
    const w = this.op(opcode);
    w[0] = (opcode | (num << F_NUM.shift) | (scale << F_SCALE.shift)) >>> 0;
    if (opcode === CMDQ_OP.TLBI_S2_IPA) w[1] = (id & F_VMID.mask) << F_VMID.shift;
    else w[1] = ((id & F_ASID.mask) << F_ASID.shift) >>> 0;
    w[2] = ((leaf ? F_TLBI_LEAF.inPlace : 0) | (ttl << F_TTL.shift) | (tg << F_TG.shift)) >>> 0;
    setAddr(w, addr);
    return this;
  }

  /**
   * CMD_ATC_INV: SSV and SubstreamID when `ssid` is not 0, Size log2 of the span in 4 KiB pages
   * (ATC_INV_SIZE_ALL for everything), the address aligned on the span.
   */
  atcInv(sid: number, ssid: number, addr: number, size: number): this {
    const w = this.op(CMDQ_OP.ATC_INV);
    if (ssid !== 0)
      w[0] = ((w[0] as number) | F_SSV.inPlace | ((ssid & F_SSID.mask) << F_SSID.shift)) >>> 0;
    w[1] = sid >>> 0;
    w[2] = (size & F_ATC_SIZE.mask) << F_ATC_SIZE.shift;
    if (size !== ATC_INV_SIZE_ALL) setAddr(w, addr);
    return this;
  }

  /** CMD_PRI_RESP(StreamID, SubstreamID when `ssv`, PRGIndex, Resp). */
  priResp(sid: number, ssv: boolean, ssid: number, prgi: number, resp: number): this {
    const w = this.op(CMDQ_OP.PRI_RESP);
    if (ssv)
      w[0] = ((w[0] as number) | F_SSV.inPlace | ((ssid & F_SSID.mask) << F_SSID.shift)) >>> 0;
    w[1] = sid >>> 0;
    w[2] = (((prgi & F_PRGI.mask) << F_PRGI.shift) | ((resp & F_RESP.mask) << F_RESP.shift)) >>> 0;
    return this;
  }

  /** CMD_RESUME(StreamID, STAG, Action retry or terminate, Abort). */
  resume(sid: number, stag: number, retry: boolean, abort: boolean): this {
    const w = this.op(CMDQ_OP.RESUME);
    w[0] = ((w[0] as number) | (retry ? F_AC.inPlace : 0) | (abort ? F_AB.inPlace : 0)) >>> 0;
    w[1] = sid >>> 0;
    w[2] = (stag & F_STAG.mask) << F_STAG.shift;
    return this;
  }

  // --- Issue ----------------------------------------------------------------------------------------

  /**
   * Stage the command in `w`. A batch that is already full is issued first, without a sync, so a
   * batch of exactly 64 commands still goes out with its CMD_SYNC in one PROD write.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_cmdq_batch_add
   */
  add(): 0 | "ETIMEDOUT" {
    let ret: 0 | "ETIMEDOUT" = 0;
    if (this.n === CMDQ_BATCH_ENTRIES) ret = this.issue(false);
    const b = this.batch;
    const i = this.n * 4;
    const w = this.w;
    b[i] = w[0] as number;
    b[i + 1] = w[1] as number;
    b[i + 2] = w[2] as number;
    b[i + 3] = w[3] as number;
    this.n++;
    return ret;
  }

  /** Issue the staged commands and a CMD_SYNC, and wait for it. */
  submit(): 0 | "ETIMEDOUT" {
    return this.issue(true);
  }

  /** Issue the staged commands without a sync (PRI_RESP, RESUME, PREFETCH need none). */
  submitNoSync(): 0 | "ETIMEDOUT" {
    return this.n === 0 ? 0 : this.issue(false);
  }

  /** The command in `w` alone, followed by a CMD_SYNC. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_cmdq_issue_cmd_with_sync */
  issueWithSync(): 0 | "ETIMEDOUT" {
    const r = this.add();
    if (r !== 0) return r;
    return this.submit();
  }

  private issue(sync: boolean): 0 | "ETIMEDOUT" {
    const n = this.n + (sync ? 1 : 0);
    this.n = 0;
    if (n === 0) return 0;
    if (this.waitSpace(n) !== 0) return "ETIMEDOUT";
    const mem = this.mem;
    const b = this.batch;
    let prod = this.prod;
    for (let i = 0; i < n - (sync ? 1 : 0); i++) {
      const at = this.slot(prod);
      mem.write64(at, b[i * 4] as number, b[i * 4 + 1] as number);
      mem.write64(at + 8, b[i * 4 + 2] as number, b[i * 4 + 3] as number);
      prod = (prod + 1) & this.mask;
    }
    let syncAt = -1;
    if (sync) {
      syncAt = this.slot(prod);
      if (this.msiPoll) {
        // The MSI is aimed at the sync's own first word: its MSIData 0 clears the opcode.
        mem.write64(syncAt, SYNC_W0_MSI, 0);
        mem.write64(syncAt + 8, syncAt % TWO32, Math.floor(syncAt / TWO32));
      } else {
        mem.write64(syncAt, SYNC_W0_SEV, 0);
        mem.write64(syncAt + 8, 0, 0);
      }
      prod = (prod + 1) & this.mask;
      this.stats.syncs++;
    }
    this.stats.commands += n;
    this.stats.issues++;
    this.prod = prod;
    this.mmio.write32(SMMU_REG.CMDQ_PROD, prod);
    if (!sync) {
      this.handleErrors();
      return 0;
    }
    return this.waitSync(syncAt, prod);
  }

  private slot(prod: number): number {
    return this.base + (prod & (this.entries - 1)) * 16;
  }

  /** Free entries between CONS and the shadow PROD. */
  private space(): number {
    const cons = this.mmio.read32(SMMU_REG.CMDQ_CONS) & Q_WR_MASK;
    const used = (this.prod - cons) & this.mask;
    return this.entries - used;
  }

  private waitSpace(n: number): 0 | "ETIMEDOUT" {
    if (n > this.entries) return this.timeout();
    for (let i = 0; i < POLL_LIMIT; i++) {
      if (this.space() >= n) return 0;
      this.handleErrors();
      this.idle?.();
    }
    return this.space() >= n ? 0 : this.timeout();
  }

  /**
   * Wait until the sync at `syncAt` completed: its first word zeroed by the MSI, or CONS past it
   * (`after` is the pointer just after the sync).
   */
  private waitSync(syncAt: number, after: number): 0 | "ETIMEDOUT" {
    for (let i = 0; i < POLL_LIMIT; i++) {
      if (this.syncDone(syncAt, after)) return 0;
      this.handleErrors();
      if (this.syncDone(syncAt, after)) return 0;
      this.idle?.();
    }
    return this.timeout();
  }

  private syncDone(syncAt: number, after: number): boolean {
    if (this.msiPoll) return this.mem.read32(syncAt) === 0;
    // Consumed when fewer entries are left between CONS and PROD than from the sync to PROD.
    const cons = this.mmio.read32(SMMU_REG.CMDQ_CONS) & Q_WR_MASK;
    if (qEmpty(this.prod, cons, this.log2)) return true;
    return ((this.prod - cons) & this.mask) < ((this.prod - after + 1) & this.mask);
  }

  private timeout(): "ETIMEDOUT" {
    this.stats.timeouts++;
    return "ETIMEDOUT";
  }

  /**
   * The GERROR interrupt handler, run where the kernel would take the interrupt (while the driver
   * waits, and from `processGlobalErrors`): nothing unless an error is active; SFM_ERR turns the
   * SMMU off (CR0 = 0); CMDQ_ERR skips the failed command (`skipErr`); then every active error is
   * acknowledged at once by writing GERROR's value to GERRORN.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_gerror_handler
   */
  handleErrors(): void {
    const gerror = this.mmio.read32(SMMU_REG.GERROR);
    const gerrorn = this.mmio.read32(SMMU_REG.GERRORN);
    const active = (gerror ^ gerrorn) & GERROR_ERR_MASK;
    if (active === 0) return;
    if ((active & GERROR_SFM_ERR) !== 0) {
      this.stats.serviceFailures++;
      this.mmio.write32(SMMU_REG.CR0, 0);
    }
    if ((active & ~GERROR_CMDQ_ERR) !== 0) this.stats.globalErrors++;
    if ((active & GERROR_CMDQ_ERR) !== 0) this.skipErr();
    this.mmio.write32(SMMU_REG.GERRORN, gerror >>> 0);
  }

  /**
   * CMDQ_ERR: look at CMDQ_CONS.ERR. A fetch abort and an ATC invalidation timeout are retried as
   * they are (CONS stays on the command, the CMD_SYNC runs again); any other error (CERROR_ILL)
   * rewrites the command in place as the CMD_SYNC `arm_smmu_cmdq_build_cmd` makes, without an MSI.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c __arm_smmu_cmdq_skip_err
   */
  private skipErr(): void {
    const cons = this.mmio.read32(SMMU_REG.CMDQ_CONS);
    const code = (cons & CMDQ_CONS_ERR_MASK) >>> CMDQ_CONS_ERR_SHIFT;
    if (code === 0) return;
    if (code === CMDQ_CONS_ERR_ABT) {
      this.stats.aborts++;
      return;
    }
    if (code === CMDQ_CONS_ERR_ATC_INV_SYNC) {
      this.stats.atcSyncErrors++;
      return;
    }
    this.stats.refused++;
    const at = this.slot(cons & Q_WR_MASK);
    const mem = this.mem;
    const w0 = mem.read64(at);
    const w1 = mem.hi;
    const w2 = mem.read64(at + 8);
    const w3 = mem.hi;
    this.refusedCommands.push({ words: [w0, w1, w2, w3], code });
    if (this.refusedCommands.length > 16) this.refusedCommands.shift();
    mem.write64(at, SYNC_W0_SEV, 0);
    mem.write64(at + 8, 0, 0);
  }
}

/** A 64-bit register written as two 32-bit stores, low word first. */
export function mmioWrite2x32(mmio: Mmio, offset: number, lo: number, hi: number): void {
  mmio.write32(offset, lo >>> 0);
  mmio.write32(offset + 4, hi >>> 0);
}
