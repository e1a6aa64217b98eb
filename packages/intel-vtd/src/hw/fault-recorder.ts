// VT-d primary fault logging: the bank of fault recording registers, the FSTS bits they drive
// (PFO, PPF, FRI) and the fault event the FECTL register masks.

import { bug, fieldOf } from "@iommu-sim/iommu-core/platform";
import { FRCD } from "../format/fault-record.js";
import {
  ECTL_IM,
  ECTL_IP,
  FRCD_F,
  FRCD_SIZE,
  FSTS_AFO,
  FSTS_APF,
  FSTS_ICE,
  FSTS_IQE,
  FSTS_ITE,
  FSTS_PFO,
  FSTS_PPF,
} from "../format/registers.js";

// T2 (bit 92) is always written 0, page-request faults included: the datasheets reprinting FRCD
// (2nd- to 7th-gen Core vol. 2) define only T (bit 126: 0 write, 1 read/AtomicOp) and leave bit 92
// reserved, and no stored source gives T2's encoding, so T keeps the read/write meaning for every
// fault. Record word 2 (bits 95:64) and word 3 (bits 127:96), from the FRCD table.
const SID = fieldOf(FRCD, "SID");
const T2 = fieldOf(FRCD, "T2");
const PRIV = fieldOf(FRCD, "PRIV");
const EXE = fieldOf(FRCD, "EXE");
const PP = fieldOf(FRCD, "PP");
const FR = fieldOf(FRCD, "FR");
const PV = fieldOf(FRCD, "PV");
const AT = fieldOf(FRCD, "AT");
const T = fieldOf(FRCD, "T");
const SID_SHIFT = SID.shift;
const SID_MASK = SID.mask;
const PRIV_BIT = PRIV.inPlace;
const EXE_BIT = EXE.inPlace;
const PP_BIT = PP.inPlace;
const FR_SHIFT = FR.shift;
const FR_MASK = FR.mask;
const PV_SHIFT = PV.shift;
const PV_MASK = PV.mask;
const AT_SHIFT = AT.shift;
const AT_MASK = AT.mask;
const T_BIT = T.inPlace;
/** FI covers bits 31:12 of word 0 and all of word 1. */
const FI_LO_MASK = 0xfffff000;
if (
  SID.word !== 2 ||
  T2.word !== 2 ||
  PRIV.word !== 2 ||
  EXE.word !== 2 ||
  PP.word !== 2 ||
  FR.word !== 3 ||
  PV.word !== 3 ||
  AT.word !== 3 ||
  T.word !== 3 ||
  FRCD_F !== fieldOf(FRCD, "F").inPlace >>> 0
) {
  bug("FRCD layout does not match the fault recorder's word split");
}

/**
 * Status bits whose being set means a fault event is already owed to software: a new condition
 * while any is set raises no new event.
 */
const EVENT_STATUS = FSTS_PFO | FSTS_PPF | FSTS_AFO | FSTS_APF | FSTS_IQE | FSTS_ICE | FSTS_ITE;

/**
 * The fault recording registers of one unit and the primary fault logging rules.
 *
 * Recording (`record`), as the spec lays it out and QEMU implements it:
 * 1. while FSTS.PFO is set, a new fault is dropped (not recorded, no event);
 * 2. hardware keeps an internal index of the register the next fault goes to. If that register's F
 *    is still set, the fault is dropped and PFO is set: the index does not search for another free
 *    register, so a fault can be dropped while other registers are free (software clearing records
 *    out of order sees this);
 * 3. otherwise the fault is written there and F set; if PPF was clear, FRI takes the index. The
 *    index then advances by one, wrapping after the last register.
 * Faults from the same requester are not collapsed (the spec allows but does not require it), so
 * every recorded fault is visible to software.
 *
 * Fault event (FECTL): setting PPF from clear is an interrupt condition unless another FSTS status
 * (PFO, PPF, AFO, APF, IQE, ICE, ITE) was already set. On a condition IP is set; if IM is clear the
 * message is sent (`onEvent`) and IP cleared, else IP stays set and the message goes out when
 * software clears IM. IP is also cleared when software has serviced every status bit. PFO alone is
 * not an interrupt condition (it can only happen while PPF is set anyway). FECTL resets with IM set.
 *
 * The unit owns the other FSTS bits (IQE, ICE, ITE): pass `otherStatus` so the "already set" rule
 * sees them, call `raiseEvent` when it sets one, and `updatePending` after software clears one.
 *
 * The unit calls `resetIndex` when software disables translation (as QEMU does; interrupt
 * remapping, which the spec also names, is not modelled).
 *
 * @spec Intel VT-d Architecture Specification 7.2.1 (primary fault logging), 7.3 (fault events), 10.4 FSTS_REG / FECTL_REG / FRCD
 * @kernel drivers/iommu/intel/dmar.c dmar_fault
 */
export class FaultRecorder {
  /** Number of fault recording registers (CAP.NFR + 1). */
  readonly numRecords: number;
  /** Faults written to a register. */
  recorded = 0;
  /** Faults dropped: PFO set, or the next register still held a fault. */
  suppressed = 0;

  /** 4 words per register, laid out as the MMIO bank (word 3 holds F). */
  private readonly regs: Uint32Array;
  private next = 0;
  private pfo = false;
  private fri = 0;
  /** Registers with F set; PPF is `pending > 0`. */
  private pending = 0;
  private fectl = ECTL_IM;
  private readonly onEvent: () => void;
  private readonly otherStatus: () => number;

  /**
   * @param numRecords fault recording registers, 1..256
   * @param onEvent sends the fault event message (FEDATA at FEADDR)
   * @param otherStatus the FSTS bits the unit owns (IQE, ICE, ITE, ...), read when deciding
   *   whether a new fault is a new interrupt condition; defaults to none
   */
  constructor(numRecords: number, onEvent: () => void, otherStatus: () => number = () => 0) {
    if (!Number.isInteger(numRecords) || numRecords < 1 || numRecords > 256) {
      bug(`FaultRecorder: ${numRecords} records (1..256)`);
    }
    this.numRecords = numRecords;
    this.regs = new Uint32Array(numRecords * 4);
    this.onEvent = onEvent;
    this.otherStatus = otherStatus;
  }

  /**
   * Log one primary fault. Returns true if it was recorded, false if dropped (PFO set, or the next
   * register still pending: then PFO is set). Allocation-free.
   *
   * @param sid requester id (16 bits)
   * @param pasid PASID (20 bits), or -1 when the request had none (PP = 0)
   * @param pageAddrLo low 32 bits of the faulting address (bits 11:0 are dropped)
   * @param pageAddrHi high 32 bits of the faulting address
   * @param reason fault reason (FR, 8 bits)
   * @param isRead T: read (or AtomicOp) request; false for a write
   * @param privileged PRIV: privileged-mode request
   * @param exec EXE: execute request
   * @param at AT: address type of the request (0 untranslated, 1 translation request, 2 translated)
   */
  record(
    sid: number,
    pasid: number,
    pageAddrLo: number,
    pageAddrHi: number,
    reason: number,
    isRead: boolean,
    privileged: boolean,
    exec: boolean,
    at: number,
  ): boolean {
    if (this.pfo) {
      this.suppressed++;
      return false;
    }
    const i = this.next;
    const base = i * 4;
    const regs = this.regs;
    if (((regs[base + 3] as number) & FRCD_F) !== 0) {
      this.pfo = true;
      this.suppressed++;
      return false;
    }
    const hasPasid = pasid >= 0;
    regs[base] = pageAddrLo & FI_LO_MASK;
    regs[base + 1] = pageAddrHi >>> 0;
    regs[base + 2] =
      (((sid & SID_MASK) << SID_SHIFT) |
        (privileged && hasPasid ? PRIV_BIT : 0) |
        (exec && hasPasid ? EXE_BIT : 0) |
        (hasPasid ? PP_BIT : 0)) >>>
      0;
    regs[base + 3] =
      (((reason & FR_MASK) << FR_SHIFT) |
        (hasPasid ? (pasid & PV_MASK) << PV_SHIFT : 0) |
        ((at & AT_MASK) << AT_SHIFT) |
        (isRead ? T_BIT : 0) |
        FRCD_F) >>>
      0;
    const wasPending = this.pending > 0;
    this.pending++;
    this.recorded++;
    this.next = i + 1 === this.numRecords ? 0 : i + 1;
    if (!wasPending) {
      this.fri = i;
      // PFO and PPF are clear here, so only the unit's bits can make this an old condition.
      if ((this.otherStatus() & EVENT_STATUS) === 0) this.signal();
    }
    return true;
  }

  /** FSTS bits this bank owns: PFO, PPF and FRI. */
  fsts(): number {
    return ((this.pfo ? FSTS_PFO : 0) | (this.pending > 0 ? FSTS_PPF : 0) | (this.fri << 8)) >>> 0;
  }

  /** A software write to FSTS: PFO is RW1C; the bank's other bits are read-only. */
  writeFsts(value: number): void {
    if ((value & FSTS_PFO) !== 0) this.pfo = false;
    this.updatePending();
  }

  /** FECTL: IM and IP. */
  readFectl(): number {
    return this.fectl >>> 0;
  }

  /** A software write to FECTL: IM is writable, IP read-only. Clearing IM while IP is set sends the event. */
  writeFectl(value: number): void {
    this.fectl = ((this.fectl & ECTL_IP) | (value & ECTL_IM)) >>> 0;
    if ((this.fectl & ECTL_IP) !== 0 && (this.fectl & ECTL_IM) === 0) {
      this.fectl = 0;
      this.onEvent();
    }
  }

  /**
   * A fault-event interrupt condition raised by the unit (it set IQE, ICE or ITE): `before` is the
   * whole FSTS as it was before that bit was set. No event if a status was already set then.
   */
  raiseEvent(before: number): void {
    if ((before & EVENT_STATUS) === 0) this.signal();
  }

  /** Clear FECTL.IP if software has serviced every FSTS status bit (the unit's included). */
  updatePending(): void {
    if ((this.fectl & ECTL_IP) === 0) return;
    if (((this.fsts() | this.otherStatus()) & EVENT_STATUS) === 0) {
      this.fectl = (this.fectl & ~ECTL_IP) >>> 0;
    }
  }

  /**
   * A 32-bit load from the register bank, `offset` bytes from fault recording register 0. Outside
   * the bank or misaligned: 0.
   */
  read32(offset: number): number {
    if (!this.inBank(offset)) return 0;
    return this.regs[offset >>> 2] as number;
  }

  /**
   * A 32-bit store to the bank: only F (bit 31 of each register's last dword) reacts, RW1C; every
   * other bit is read-only. Outside the bank or misaligned: ignored.
   */
  write32(offset: number, value: number): void {
    if (!this.inBank(offset) || (offset & 0xc) !== 0xc) return;
    const w = offset >>> 2;
    const cur = this.regs[w] as number;
    if ((value & FRCD_F) !== 0 && (cur & FRCD_F) !== 0) {
      this.regs[w] = (cur & ~FRCD_F) >>> 0;
      this.pending--;
      this.updatePending();
    }
  }

  /** The four words of register `index` (a copy, for decoders and tests). */
  recordWords(index: number): Uint32Array {
    return this.regs.slice(index * 4, index * 4 + 4);
  }

  /** The internal index of the register the next fault goes to. */
  get nextIndex(): number {
    return this.next;
  }

  /** Reset the internal index to 0 (translation disabled). */
  resetIndex(): void {
    this.next = 0;
  }

  /** Power-on reset: every register clear, PFO clear, index 0, FECTL = IM. Counters are kept. */
  reset(): void {
    this.regs.fill(0);
    this.next = 0;
    this.pfo = false;
    this.fri = 0;
    this.pending = 0;
    this.fectl = ECTL_IM;
  }

  private inBank(offset: number): boolean {
    return (
      Number.isInteger(offset) &&
      offset >= 0 &&
      offset < this.numRecords * FRCD_SIZE &&
      (offset & 3) === 0
    );
  }

  /** An interrupt condition: IP, then the message unless masked. */
  private signal(): void {
    if ((this.fectl & ECTL_IM) !== 0) {
      this.fectl = (this.fectl | ECTL_IP) >>> 0;
      return;
    }
    this.fectl = (this.fectl & ~ECTL_IP) >>> 0;
    this.onEvent();
  }
}
