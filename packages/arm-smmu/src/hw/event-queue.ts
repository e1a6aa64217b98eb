// The SMMU's output queues in memory (event queue, and the base of the PRI queue): BASE/PROD/CONS
// with wrap bits, the hardware writer, and the event queue's overflow flag.

import type { PhysMemory } from "@iommu-sim/iommu-core/platform";
import { Q_OVERFLOW_FLAG, Q_WR_MASK, qFull, qInc } from "../format/registers.js";

/** The entry was written and PROD advanced. */
export const Q_WRITTEN = 0;
/** The queue was full (or, for the PRI queue, in overflow): the entry is lost, OVFLG toggled. */
export const Q_FULL = 1;
/**
 * The queue is disabled (CR0.xQEN = 0) or has an unacknowledged GERROR.xQ_ABT_ERR: nothing is
 * recorded and no overflow is signalled (7.2.1, 8.2).
 */
export const Q_DISABLED = 2;
/** Writing the entry hit an external abort: GERROR.xQ_ABT_ERR. */
export const Q_ABORT = 3;

const TWO32 = 4294967296;

/**
 * An SMMU-written queue of 2^LOG2SIZE entries of `entryBytes` bytes: the BASE register (64 bits
 * as two halves), PROD (written by the SMMU; by software only while the queue is disabled) and
 * CONS (written by software), with the wrap bit above the index and OVFLG / OVACKFLG at bit 31.
 * LOG2SIZE above the IDR1 maximum behaves as the maximum.
 *
 * @spec Arm SMMUv3 (IHI 0070) 3.5 (queues), 7.4 (event queue overflow), 6.3.29-6.3.31
 */
export class SmmuOutputQueue {
  baseLo = 0;
  baseHi = 0;
  prod = 0;
  cons = 0;
  enabled = false;
  /**
   * An unacknowledged GERROR.EVENTQ_ABT_ERR / PRIQ_ABT_ERR: the queue is not writable until
   * software acknowledges it (7.2.1, 8.2). The SMMU keeps this in step with GERROR ^ GERRORN.
   */
  aborted = false;
  /** Entries written since construction. */
  written = 0;
  /** Entries lost to a full queue (or an active PRI overflow). */
  lost = 0;
  protected readonly mem: PhysMemory;
  readonly entryBytes: number;
  readonly maxLog2: number;
  /** The latched geometry (taken when the queue is enabled). */
  protected log2 = 0;
  protected base = 0;

  constructor(mem: PhysMemory, entryBytes: number, maxLog2: number) {
    this.mem = mem;
    this.entryBytes = entryBytes;
    this.maxLog2 = maxLog2;
  }

  /** Effective LOG2SIZE of the BASE register as it is now. */
  get log2size(): number {
    return Math.min(this.baseLo & 31, this.maxLog2);
  }

  /** Enable or disable; enabling latches BASE (ADDR aligned to max(32 B, queue size)). */
  setEnabled(on: boolean): void {
    if (on && !this.enabled) {
      this.log2 = this.log2size;
      const bytes = Math.max(32, this.entryBytes * 2 ** this.log2);
      const addr = (this.baseHi & 0xffffff) * TWO32 + ((this.baseLo & ~31) >>> 0);
      this.base = addr - (addr % bytes);
    }
    this.enabled = on;
  }

  /** PROD as software writes it: only while disabled (the SMMU owns it when enabled). */
  writeProd(v: number): void {
    if (!this.enabled) this.prod = (v & (Q_WR_MASK | Q_OVERFLOW_FLAG)) >>> 0;
  }

  writeCons(v: number): void {
    this.cons = (v & (Q_WR_MASK | Q_OVERFLOW_FLAG)) >>> 0;
  }

  /** An overflow is active while PROD.OVFLG differs from CONS.OVACKFLG. */
  get overflowActive(): boolean {
    return ((this.prod ^ this.cons) & Q_OVERFLOW_FLAG) !== 0;
  }

  get full(): boolean {
    return qFull(this.prod, this.cons, this.log2);
  }

  /** Enabled, not full and without an active abort error: a record can be written now (7.2.1). */
  get writable(): boolean {
    return this.enabled && !this.aborted && !qFull(this.prod, this.cons, this.log2);
  }

  /** Entries waiting for software. */
  get pending(): number {
    const m = 2 ** (this.log2 + 1);
    return ((this.prod & Q_WR_MASK) - (this.cons & Q_WR_MASK) + m) % m;
  }

  /** Toggle OVFLG unless an overflow is already active. */
  protected overflow(): void {
    this.lost++;
    if (!this.overflowActive) this.prod = (this.prod ^ Q_OVERFLOW_FLAG) >>> 0;
  }

  /** Write `words` (entryBytes / 4 of them) at PROD and advance it. */
  protected put(words: Uint32Array): number {
    const mem = this.mem;
    const idx = this.prod & Q_WR_MASK & (2 ** this.log2 - 1);
    const at = this.base + idx * this.entryBytes;
    mem.busError = false;
    for (let i = 0; i < this.entryBytes / 4; i += 2) {
      mem.write64(at + i * 4, words[i] as number, words[i + 1] as number);
    }
    if (mem.busError) {
      mem.busError = false;
      return Q_ABORT;
    }
    this.prod = (qInc(this.prod & Q_WR_MASK, this.log2) | (this.prod & Q_OVERFLOW_FLAG)) >>> 0;
    this.written++;
    return Q_WRITTEN;
  }
}

/**
 * The event queue: a record is written when the queue is writable; a full queue loses the record
 * and toggles PROD.OVFLG if no overflow is active; a disabled queue, or one with an active
 * EVENTQ_ABT_ERR, loses it without an overflow. An active overflow does not stop later records
 * once space exists. (Stall records are never lost: the SMMU holds them until the queue is
 * writable and only then calls `push`.)
 *
 * @spec Arm SMMUv3 (IHI 0070) 7.2.1 (writable queue), 7.4 (event queue overflow)
 */
export class SmmuEventQueue extends SmmuOutputQueue {
  /** Record `words` (8 words); Q_WRITTEN, Q_FULL, Q_DISABLED or Q_ABORT. */
  push(words: Uint32Array): number {
    if (!this.enabled || this.aborted) return Q_DISABLED;
    if (this.full) {
      this.overflow();
      return Q_FULL;
    }
    return this.put(words);
  }
}
