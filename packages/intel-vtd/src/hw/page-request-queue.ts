// The hardware side of the VT-d page request queue: the PQH/PQT/PQA/PRS/PECTL registers and the
// writer that puts page request descriptors into the ring in memory.

import { DMA_EXEC, DMA_READ, DMA_WRITE } from "@iommu-sim/iommu-core";
import { bug, fieldOf, type PhysMemory, TWO32 } from "@iommu-sim/iommu-core/platform";
import { PAGE_REQ_DESC, PRQ_DESC_TYPE_PAGE_REQ } from "../format/page-request.js";
import { ECTL_IM, ECTL_IP, PRQ_DESC_SIZE, PRS_PPR, PRS_PRO, VTD_REG } from "../format/registers.js";

/** The request was written to the queue. */
export const PRQ_QUEUED = 0;
/** The queue was full, or had overflowed and PRS.PRO is still set: the request was dropped. */
export const PRQ_OVERFLOW = 1;
/** No queue is programmed (PQA = 0), or writing the descriptor hit a bus error: dropped. */
export const PRQ_DISABLED = 2;
export type PrqResult = typeof PRQ_QUEUED | typeof PRQ_OVERFLOW | typeof PRQ_DISABLED;

// Page request descriptor positions, from the PAGE_REQ_DESC table. Word 0 is qw0's low half
// (Type, PP, PDP, RID), word 1 its high half (PASID, ER, PM), word 2 qw1's low half (RD, WR, LPIG,
// PRGI, page frame bits 19:0), word 3 the rest of the page frame number.
const F_TYPE = fieldOf(PAGE_REQ_DESC, "Type");
const F_PP = fieldOf(PAGE_REQ_DESC, "PP");
const F_PDP = fieldOf(PAGE_REQ_DESC, "PDP");
const F_RID = fieldOf(PAGE_REQ_DESC, "RID");
const F_PASID = fieldOf(PAGE_REQ_DESC, "PASID");
const F_ER = fieldOf(PAGE_REQ_DESC, "ER");
const F_PM = fieldOf(PAGE_REQ_DESC, "PM");
const F_RD = fieldOf(PAGE_REQ_DESC, "RD");
const F_WR = fieldOf(PAGE_REQ_DESC, "WR");
const F_LPIG = fieldOf(PAGE_REQ_DESC, "LPIG");
const F_PRGI = fieldOf(PAGE_REQ_DESC, "PRGI");
const F_ADDR = fieldOf(PAGE_REQ_DESC, "ADDR");
const DESC_TYPE_PAGE_REQ = (PRQ_DESC_TYPE_PAGE_REQ << F_TYPE.shift) >>> 0;
const DESC_PP = F_PP.inPlace;
const DESC_PDP = F_PDP.inPlace;
const DESC_RID_SHIFT = F_RID.shift;
const DESC_RID_MASK = F_RID.mask;
const DESC_PASID_SHIFT = F_PASID.shift;
const DESC_PASID_MASK = F_PASID.mask;
const DESC_ER = F_ER.inPlace;
const DESC_PM = F_PM.inPlace;
const DESC_RD = F_RD.inPlace;
const DESC_WR = F_WR.inPlace;
const DESC_LPIG = F_LPIG.inPlace;
const DESC_PRGI_SHIFT = F_PRGI.shift;
const DESC_PRGI_MASK = F_PRGI.mask;
/** ADDR starts at bit 12 of word 2: page frame bits 19:0 there, the rest in word 3. */
const PFN_SHIFT = F_ADDR.shift;
const PFN_LO_SPAN = 2 ** (32 - PFN_SHIFT);
if (
  [F_TYPE, F_PP, F_PDP, F_RID].some((f) => f.word !== 0) ||
  [F_PASID, F_ER, F_PM].some((f) => f.word !== 1) ||
  [F_RD, F_WR, F_LPIG, F_PRGI, F_ADDR].some((f) => f.word !== 2) ||
  PAGE_REQ_DESC.bits !== PRQ_DESC_SIZE * 8
) {
  bug("PAGE_REQ_DESC does not match the page request queue's word split");
}

/** PQH/PQT: offset bits 18:5 (32-byte slots of a queue of at most 2^7 pages). */
const PQ_OFFSET_MASK = 0x7ffe0;
/** PQA low half: base bits 31:12 and PQS 2:0. */
const PQA_LO_MASK = 0xfffff007;
/** PQA high half: base bits 51:32 (physical addresses have at most 52 bits). */
const PQA_HI_MASK = 0x000fffff;
const PQS_MASK = 7;

const R_PQH = VTD_REG.PQH;
const R_PQT = VTD_REG.PQT;
const R_PQA = VTD_REG.PQA;
const R_PRS = VTD_REG.PRS;
const R_PECTL = VTD_REG.PECTL;
const R_PEDATA = VTD_REG.PEDATA;
const R_PEADDR = VTD_REG.PEADDR;
const R_PEUADDR = VTD_REG.PEUADDR;

/**
 * The page request queue of one unit. Registers are reached with `read32` / `write32` at their
 * register-file offsets (VTD_REG.PQH .. VTD_REG.PEUADDR, 64-bit registers as two dwords, low first);
 * the unit forwards MMIO accesses in 0xC0..0xEF here.
 *
 * Register behaviour:
 * - PQH, PQT: bits 18:5 are kept, the rest read as 0 (reserved), so a head is always 32-byte aligned.
 *   Software writes PQH as it consumes; PQT is hardware's but software may write it (Linux zeroes it
 *   when it sets the queue up).
 * - PQA: base 63:12 (up to bit 51) and PQS 2:0; the queue is 2^PQS 4-KiB pages.
 * - PRS: PPR and PRO, RW1C. When both are clear PECTL.IP is cleared.
 * - PECTL: IM (set at reset) and IP, as FECTL.
 * - PEDATA, PEADDR, PEUADDR: plain storage for the unit's message.
 *
 * Guest-programmed offsets beyond the queue (a PQH or PQT at or past 2^PQS pages, e.g. after PQS
 * was lowered) do not throw: the offset is taken modulo the queue size, as a unit that decodes only
 * the offset bits it needs would (Linux masks its reads with PRQ_RING_MASK the same way).
 *
 * VT-d has no enable bit for the queue; Linux tears it down by writing PQA = 0, so PQA = 0 means
 * "no queue" here and `enqueue` returns PRQ_DISABLED (a queue of one page at physical 0 is thereby
 * unusable). A descriptor write that hits a bus error is dropped the same way, PQT unchanged.
 *
 * `enqueue` follows the spec (7.5) and QEMU's model of it:
 * 1. while PRS.PRO is set the request is dropped with no status change and no event;
 * 2. the queue is full when (PQT + 32) mod size == PQH (one slot stays empty): PRO is set, the
 *    request dropped, and a page request event raised if PRS was clear before;
 * 3. else the descriptor is written at PQA + PQT and PQT advances by 32 modulo the size. A request
 *    with LPIG set (a group's last, stop markers included) also sets PPR; setting PPR from clear is
 *    an event (an event is owed already while PPR or PRO is set). A request without LPIG sets
 *    nothing: PECTL_REG defines the interrupt condition as "a page group request with LPG Set was
 *    added to the queue, resulting in hardware setting PPR" (12th-gen Core datasheet vol. 2,
 *    PECTL_REG), so PPR must stay clear until the group ends, or the group's last request would find
 *    PPR set and raise no event. (QEMU's PRQ series sets PPR for every descriptor; the register
 *    text is followed here.)
 * An event sets PECTL.IP; with IM clear the message is sent (`onEvent`) and IP cleared at once.
 *
 * The caller answers dropped requests: for an overflow the spec has hardware itself send a
 * page group response with Response Code Success for a request with LPIG = 1 (the device then
 * retries its translation and faults again), none for others. (From the fact sheet and the RISC-V
 * IOMMU, which mirrors VT-d here; not checked against the VT-d PDF.)
 *
 * @spec Intel VT-d Architecture Specification 7.5 (page request handling), 10.4 PQH_REG / PQT_REG / PQA_REG / PRS_REG / PECTL_REG
 * @kernel drivers/iommu/intel/prq.c prq_event_thread
 */
export class PageRequestQueue {
  /** Descriptors written. */
  queued = 0;
  /** Requests dropped for a full or overflowed queue. */
  overflowed = 0;
  /** Requests dropped because no queue was programmed or the write hit a bus error. */
  aborted = 0;

  private pqh = 0;
  private pqt = 0;
  private pqaLo = 0;
  private pqaHi = 0;
  private prs = 0;
  private pectl = ECTL_IM;
  private pedata = 0;
  private peaddr = 0;
  private peuaddr = 0;
  private readonly mem: PhysMemory;
  private readonly onEvent: () => void;

  /**
   * @param mem where the queue lives
   * @param onEvent sends the page request event message (PEDATA at PEADDR)
   */
  constructor(mem: PhysMemory, onEvent: () => void) {
    this.mem = mem;
    this.onEvent = onEvent;
  }

  /**
   * Write one page request into the queue. Allocation-free.
   *
   * @param rid requester id (16 bits)
   * @param pasid PASID (20 bits), or -1 for a request without one (PP = 0; ER and PM are then 0)
   * @param pageAddrPfn page frame number of the requested address (address >> 12)
   * @param access DMA_READ | DMA_WRITE | DMA_EXEC: RD, WR and ER of the descriptor
   * @param privileged PM: privileged-mode request
   * @param prgIndex page request group index (9 bits)
   * @param lpig last page in group
   * @param privateData optional four words (qw2 low, qw2 high, qw3 low, qw3 high); sets PDP
   * @returns PRQ_QUEUED, PRQ_OVERFLOW or PRQ_DISABLED
   */
  enqueue(
    rid: number,
    pasid: number,
    pageAddrPfn: number,
    access: number,
    privileged: boolean,
    prgIndex: number,
    lpig: boolean,
    privateData?: ArrayLike<number>,
  ): PrqResult {
    if (this.pqaLo === 0 && this.pqaHi === 0) {
      this.aborted++;
      return PRQ_DISABLED;
    }
    if ((this.prs & PRS_PRO) !== 0) {
      this.overflowed++;
      return PRQ_OVERFLOW;
    }
    const size = 4096 << (this.pqaLo & PQS_MASK);
    const wrap = size - PRQ_DESC_SIZE;
    const head = this.pqh & wrap;
    const tail = this.pqt & wrap;
    const nextTail = (tail + PRQ_DESC_SIZE) & wrap;
    if (nextTail === head) {
      const before = this.prs;
      this.prs |= PRS_PRO;
      this.overflowed++;
      if (before === 0) this.signal();
      return PRQ_OVERFLOW;
    }

    const hasPasid = pasid >= 0;
    const qw0lo =
      (DESC_TYPE_PAGE_REQ |
        (hasPasid ? DESC_PP : 0) |
        (privateData !== undefined ? DESC_PDP : 0) |
        ((rid & DESC_RID_MASK) << DESC_RID_SHIFT)) >>>
      0;
    const qw0hi = hasPasid
      ? ((pasid & DESC_PASID_MASK) << DESC_PASID_SHIFT) |
        ((access & DMA_EXEC) !== 0 ? DESC_ER : 0) |
        (privileged ? DESC_PM : 0)
      : 0;
    const pfnLo = pageAddrPfn % PFN_LO_SPAN;
    const qw1lo =
      (((access & DMA_READ) !== 0 ? DESC_RD : 0) |
        ((access & DMA_WRITE) !== 0 ? DESC_WR : 0) |
        (lpig ? DESC_LPIG : 0) |
        ((prgIndex & DESC_PRGI_MASK) << DESC_PRGI_SHIFT) |
        (pfnLo << PFN_SHIFT)) >>>
      0;
    const qw1hi = ((pageAddrPfn - pfnLo) / PFN_LO_SPAN) >>> 0;

    const pa = this.pqaHi * TWO32 + ((this.pqaLo & 0xfffff000) >>> 0) + tail;
    const mem = this.mem;
    const hadError = mem.busError;
    mem.busError = false;
    mem.write64(pa, qw0lo, qw0hi);
    mem.write64(pa + 8, qw1lo, qw1hi);
    if (privateData !== undefined) {
      mem.write64(pa + 16, (privateData[0] as number) >>> 0, (privateData[1] as number) >>> 0);
      mem.write64(pa + 24, (privateData[2] as number) >>> 0, (privateData[3] as number) >>> 0);
    } else {
      mem.write64(pa + 16, 0, 0);
      mem.write64(pa + 24, 0, 0);
    }
    const failed = mem.busError;
    mem.busError = hadError || failed;
    if (failed) {
      this.aborted++;
      return PRQ_DISABLED;
    }

    this.pqt = nextTail;
    this.queued++;
    // Only the last request of a group sets PPR (and so is an interrupt condition): the earlier
    // ones wait in the queue until their group is complete.
    if (lpig && (this.prs & PRS_PPR) === 0) {
      const before = this.prs;
      this.prs |= PRS_PPR;
      if (before === 0) this.signal();
    }
    return PRQ_QUEUED;
  }

  /** A 32-bit register load at register-file offset `offset`; 0 for offsets this block lacks. */
  read32(offset: number): number {
    switch (offset) {
      case R_PQH:
        return this.pqh;
      case R_PQT:
        return this.pqt;
      case R_PQA:
        return this.pqaLo >>> 0;
      case R_PQA + 4:
        return this.pqaHi;
      case R_PRS:
        return this.prs;
      case R_PECTL:
        return this.pectl >>> 0;
      case R_PEDATA:
        return this.pedata;
      case R_PEADDR:
        return this.peaddr;
      case R_PEUADDR:
        return this.peuaddr;
      default:
        return 0; // high halves of PQH/PQT, reserved offsets
    }
  }

  /** A 32-bit register store at register-file offset `offset`; ignored where nothing is writable. */
  write32(offset: number, value: number): void {
    switch (offset) {
      case R_PQH:
        this.pqh = value & PQ_OFFSET_MASK;
        return;
      case R_PQT:
        this.pqt = value & PQ_OFFSET_MASK;
        return;
      case R_PQA:
        this.pqaLo = (value & PQA_LO_MASK) >>> 0;
        return;
      case R_PQA + 4:
        this.pqaHi = value & PQA_HI_MASK;
        return;
      case R_PRS:
        this.prs &= ~(value & (PRS_PPR | PRS_PRO));
        if (this.prs === 0) this.pectl = (this.pectl & ~ECTL_IP) >>> 0;
        return;
      case R_PECTL:
        this.pectl = ((this.pectl & ECTL_IP) | (value & ECTL_IM)) >>> 0;
        if ((this.pectl & ECTL_IP) !== 0 && (this.pectl & ECTL_IM) === 0) {
          this.pectl = 0;
          this.onEvent();
        }
        return;
      case R_PEDATA:
        this.pedata = value >>> 0;
        return;
      case R_PEADDR:
        // Dword aligned: bits 1:0 are reserved.
        this.peaddr = (value & ~3) >>> 0;
        return;
      case R_PEUADDR:
        this.peuaddr = value >>> 0;
        return;
      default:
        return;
    }
  }

  /** Power-on reset: every register 0 except PECTL.IM. Counters are kept. */
  reset(): void {
    this.pqh = 0;
    this.pqt = 0;
    this.pqaLo = 0;
    this.pqaHi = 0;
    this.prs = 0;
    this.pectl = ECTL_IM;
    this.pedata = 0;
    this.peaddr = 0;
    this.peuaddr = 0;
  }

  private signal(): void {
    if ((this.pectl & ECTL_IM) !== 0) {
      this.pectl = (this.pectl | ECTL_IP) >>> 0;
      return;
    }
    this.pectl = (this.pectl & ~ECTL_IP) >>> 0;
    this.onEvent();
  }
}
