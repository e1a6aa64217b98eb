// The driver's invalidation queue: descriptors written into the ring in memory, an invalidation
// wait with status write after each batch, IQT moved, and the status polled, as qi_submit_sync does.

import type { Errno } from "@iommu-sim/iommu-core";
import {
  type Field,
  type FrameAllocator,
  fieldOf,
  type Layout,
  type Mmio,
  type PhysMemory,
  TWO32,
} from "@iommu-sim/iommu-core/platform";
import {
  CC_G_DEVICE,
  CC_G_DOMAIN,
  CC_G_GLOBAL,
  CC_INV_DESC,
  DEV_TLB_INV_DESC,
  DEVTLB_ORDER_ALL,
  type DevTlbRange,
  encodeDevTlbRange,
  INV_DESC_TYPE,
  INV_WAIT_DESC,
  IOTLB_G_DOMAIN,
  IOTLB_G_GLOBAL,
  IOTLB_G_PAGE,
  IOTLB_INV_DESC,
  PC_G_DOMAIN,
  PC_G_GLOBAL,
  PC_G_PASID,
  PC_INV_DESC,
  PDEV_TLB_INV_DESC,
  PGRP_RESP_DESC,
  PIOTLB_G_PAGE,
  PIOTLB_G_PASID,
  PIOTLB_INV_DESC,
} from "../format/inv-desc.js";
import { FSTS_ICE, FSTS_IQE, FSTS_ITE, VTD_REG } from "../format/registers.js";

/** Descriptors the ring holds. @kernel drivers/iommu/intel/dmar.c QI_LENGTH */
export const QI_LENGTH = 256;
/** Status the wait descriptor writes when the batch before it completed. @kernel drivers/iommu/intel/iommu.h QI_DONE */
const QI_DONE = 2;
const QI_IN_USE = 1;
/** Polls of the status word before the driver gives up on the hardware (the kernel spins forever). */
const POLL_LIMIT = 64;
/** Batches re-submitted after an invalidation time-out before giving up. */
const RETRY_LIMIT = 3;

/** Counters of a queue, by descriptor kind. */
export interface VtdQiStats {
  submits: number;
  descriptors: number;
  context: number;
  iotlb: number;
  piotlb: number;
  pasidCache: number;
  devtlb: number;
  pageResponses: number;
  waits: number;
  errors: number;
  timeouts: number;
}

/** What the queue calls while it waits for the hardware (e.g. to step a unit that is not automatic). */
export type VtdQiIdle = () => void;

/** A field of one descriptor, resolved once: the word and shift it lives at. */
function single(layout: Layout, name: string): Field {
  const f = fieldOf(layout, name);
  if (!f.single) throw new Error(`${layout.name}.${name} spans words`);
  return f;
}

const F = {
  ccG: single(CC_INV_DESC, "G"),
  ccDid: single(CC_INV_DESC, "DID"),
  ccSid: single(CC_INV_DESC, "SID"),
  ccFm: single(CC_INV_DESC, "FM"),
  iotlbG: single(IOTLB_INV_DESC, "G"),
  iotlbDw: single(IOTLB_INV_DESC, "DW"),
  iotlbDr: single(IOTLB_INV_DESC, "DR"),
  iotlbDid: single(IOTLB_INV_DESC, "DID"),
  iotlbAm: single(IOTLB_INV_DESC, "AM"),
  iotlbIh: single(IOTLB_INV_DESC, "IH"),
  iotlbAddr: fieldOf(IOTLB_INV_DESC, "ADDR"),
  piotlbG: single(PIOTLB_INV_DESC, "G"),
  piotlbDid: single(PIOTLB_INV_DESC, "DID"),
  piotlbPasid: single(PIOTLB_INV_DESC, "PASID"),
  piotlbAm: single(PIOTLB_INV_DESC, "AM"),
  piotlbIh: single(PIOTLB_INV_DESC, "IH"),
  piotlbAddr: fieldOf(PIOTLB_INV_DESC, "ADDR"),
  pcG: single(PC_INV_DESC, "G"),
  pcDid: single(PC_INV_DESC, "DID"),
  pcPasid: single(PC_INV_DESC, "PASID"),
  dtPfsidLo: single(DEV_TLB_INV_DESC, "PFSIDLo"),
  dtPfsidHi: single(DEV_TLB_INV_DESC, "PFSIDHi"),
  dtMip: single(DEV_TLB_INV_DESC, "MIP"),
  dtSid: single(DEV_TLB_INV_DESC, "SID"),
  dtS: single(DEV_TLB_INV_DESC, "S"),
  dtAddr: fieldOf(DEV_TLB_INV_DESC, "ADDR"),
  pdtMip: single(PDEV_TLB_INV_DESC, "MIP"),
  pdtPfsidLo: single(PDEV_TLB_INV_DESC, "PFSIDLo"),
  pdtPfsidHi: single(PDEV_TLB_INV_DESC, "PFSIDHi"),
  pdtSid: single(PDEV_TLB_INV_DESC, "SID"),
  pdtPasid: single(PDEV_TLB_INV_DESC, "PASID"),
  pdtG: single(PDEV_TLB_INV_DESC, "G"),
  pdtS: single(PDEV_TLB_INV_DESC, "S"),
  pdtAddr: fieldOf(PDEV_TLB_INV_DESC, "ADDR"),
  waitSw: single(INV_WAIT_DESC, "SW"),
  waitFn: single(INV_WAIT_DESC, "FN"),
  waitSdata: single(INV_WAIT_DESC, "SDATA"),
  waitSaddr: fieldOf(INV_WAIT_DESC, "SADDR"),
  waitPd: single(INV_WAIT_DESC, "PD"),
  respPp: single(PGRP_RESP_DESC, "PP"),
  respRc: single(PGRP_RESP_DESC, "RC"),
  respRid: single(PGRP_RESP_DESC, "RID"),
  respPasid: single(PGRP_RESP_DESC, "PASID"),
  respLpig: single(PGRP_RESP_DESC, "LPIG"),
  respPrgi: single(PGRP_RESP_DESC, "PRGI"),
};

/** Put `value` (it fits: the callers pass hardware-sized values) into a one-word field. */
function put(w: Uint32Array, base: number, f: Field, value: number): void {
  const i = base + f.word;
  w[i] = ((w[i] as number) | ((value << f.shift) & f.inPlace)) >>> 0;
}

/**
 * Put an address field that lies in place in one qword (its bits are the address's own bits from
 * `lsb mod 64` up to 63): the low word takes the address's low 32 bits under the field's mask,
 * the high word its high bits.
 */
function putAddr(w: Uint32Array, base: number, f: Field, addr: number): void {
  const q = f.lsb >>> 6;
  const lowBit = f.lsb & 63;
  const lo = base + q * 2;
  const lowMask = lowBit >= 32 ? 0 : (0xffffffff << lowBit) >>> 0;
  w[lo] = ((w[lo] as number) | ((addr >>> 0) & lowMask)) >>> 0;
  w[lo + 1] = ((w[lo + 1] as number) | Math.floor(addr / TWO32)) >>> 0;
}

/** The order (log2 of the page count) that `pages` rounds up to: `ilog2(roundup_pow_of_two)`. */
export function pagesOrder(pages: number): number {
  if (pages <= 1) return 0;
  if (pages <= 0x80000000) return 32 - Math.clz32(pages - 1);
  return Math.ceil(Math.log2(pages));
}

/**
 * One unit's invalidation queue. Descriptors are staged with the `add*` methods and go to the
 * hardware with `submit`, which appends the wait descriptor and polls its status word; a batch
 * is at most QI_LENGTH - 1 descriptors (the kernel's qi_batch is 16, so that is never reached).
 *
 * @kernel drivers/iommu/intel/dmar.c qi_submit_sync
 */
export class VtdQi {
  readonly base: number;
  /** 256-bit descriptors (scalable mode). */
  readonly wide: boolean;
  readonly stats: VtdQiStats = {
    submits: 0,
    descriptors: 0,
    context: 0,
    iotlb: 0,
    piotlb: 0,
    pasidCache: 0,
    devtlb: 0,
    pageResponses: 0,
    waits: 0,
    errors: 0,
    timeouts: 0,
  };
  /** Whether IOTLB descriptors ask for read / write draining (CAP.DRD / CAP.DWD). */
  drainRead = false;
  drainWrite = false;
  /** Called while the queue polls a status word. */
  idle: VtdQiIdle | null = null;

  private readonly mem: PhysMemory;
  private readonly mmio: Mmio;
  private readonly statusBase: number;
  private readonly slot: number;
  private readonly order: number;
  /** Staged descriptors, 8 words each. */
  private staged = new Uint32Array(16 * 8);
  private count = 0;
  private tail = 0;
  private readonly range: DevTlbRange = { addrPfn: 0, s: 0 };
  /** The wait copied over a refused descriptor (no allocation on the error path). */
  private readonly copy = new Uint32Array(8);

  private constructor(mem: PhysMemory, mmio: Mmio, base: number, status: number, wide: boolean) {
    this.mem = mem;
    this.mmio = mmio;
    this.base = base;
    this.statusBase = status;
    this.wide = wide;
    this.slot = wide ? 32 : 16;
    this.order = wide ? 1 : 0;
  }

  /**
   * Allocate the ring and the status words and enable queued invalidation: IQT = 0, IQA, then
   * GCMD.QIE (the caller's handshake). `'ENOMEM'` without frames.
   *
   * @kernel drivers/iommu/intel/dmar.c __dmar_enable_qi
   */
  static alloc(
    mem: PhysMemory,
    mmio: Mmio,
    frames: FrameAllocator,
    wide: boolean,
  ): VtdQi | "ENOMEM" {
    const ring = frames.alloc(wide ? 1 : 0);
    if (typeof ring !== "number") return "ENOMEM";
    const status = frames.alloc(0);
    if (typeof status !== "number") {
      frames.free(ring, wide ? 1 : 0);
      return "ENOMEM";
    }
    mem.fill(ring, wide ? 8192 : 4096, 0);
    mem.fill(status, 4096, 0);
    const qi = new VtdQi(mem, mmio, ring, status, wide);
    mmio.write32(VTD_REG.IQT, 0);
    mmio.write32(VTD_REG.IQT + 4, 0);
    // IQA: base | DW (bit 11) | QS (4 KiB << QS).
    mmio.write32(VTD_REG.IQA, (ring | (wide ? 1 << 11 : 0) | qi.order) >>> 0);
    mmio.write32(VTD_REG.IQA + 4, Math.floor(ring / TWO32));
    return qi;
  }

  /** Give the ring and status frames back (after QIE was cleared). */
  free(frames: FrameAllocator): void {
    frames.free(this.base, this.order);
    frames.free(this.statusBase, 0);
  }

  /** Descriptors staged and not yet submitted. */
  get pending(): number {
    return this.count;
  }

  /**
   * Stage a slot for a descriptor of `type` and return its word offset. The staging buffer may be
   * replaced by a larger one here, so callers take `this.staged` only after this call.
   */
  private next(type: number): number {
    if (this.count * 8 === this.staged.length) {
      const grown = new Uint32Array(this.staged.length * 2);
      grown.set(this.staged);
      this.staged = grown;
    }
    const at = this.count * 8;
    const w = this.staged;
    for (let i = 0; i < 8; i++) w[at + i] = 0;
    // Type[3:0] in bits 3:0 and Type[6:4] in bits 11:9.
    w[at] = ((type & 0xf) | ((type >>> 4) << 9)) >>> 0;
    this.count++;
    return at;
  }

  // --- Descriptors --------------------------------------------------------------------------------

  /**
   * Context-cache invalidation: global, domain-selective (`did`) or device-selective (`sid`, `fm`).
   *
   * @kernel drivers/iommu/intel/dmar.c qi_flush_context
   */
  addContext(g: number, did: number, sid: number, fm: number): void {
    const at = this.next(INV_DESC_TYPE.CC);
    const w = this.staged;
    put(w, at, F.ccG, g);
    if (g !== CC_G_GLOBAL) put(w, at, F.ccDid, did);
    if (g === CC_G_DEVICE) {
      put(w, at, F.ccSid, sid);
      put(w, at, F.ccFm, fm);
    }
    this.stats.context++;
  }

  /**
   * IOTLB invalidation (type 2): global, domain-selective, or page-selective over 2^am pages at
   * `addr` (aligned by the caller).
   *
   * @kernel drivers/iommu/intel/dmar.c qi_flush_iotlb
   */
  addIotlb(g: number, did: number, addr: number, am: number, ih: boolean): void {
    const at = this.next(INV_DESC_TYPE.IOTLB);
    const w = this.staged;
    put(w, at, F.iotlbG, g);
    if (this.drainRead) put(w, at, F.iotlbDr, 1);
    if (this.drainWrite) put(w, at, F.iotlbDw, 1);
    if (g !== IOTLB_G_GLOBAL) put(w, at, F.iotlbDid, did);
    if (g === IOTLB_G_PAGE) {
      put(w, at, F.iotlbAm, am);
      if (ih) put(w, at, F.iotlbIh, 1);
      putAddr(w, at, F.iotlbAddr, addr);
    }
    this.stats.iotlb++;
  }

  /**
   * PASID-based IOTLB invalidation (type 6): every entry of (did, pasid) when `pages` is -1,
   * else page-selective over the power of two `pages` rounds up to, at `addr` aligned down to it.
   *
   * @kernel drivers/iommu/intel/dmar.c qi_flush_piotlb
   */
  addPiotlb(did: number, pasid: number, addr: number, pages: number, ih: boolean): void {
    const at = this.next(INV_DESC_TYPE.PIOTLB);
    const w = this.staged;
    put(w, at, F.piotlbDid, did);
    put(w, at, F.piotlbPasid, pasid);
    if (pages === -1) {
      put(w, at, F.piotlbG, PIOTLB_G_PASID);
    } else {
      const am = pagesOrder(pages);
      const align = 2 ** (12 + am);
      put(w, at, F.piotlbG, PIOTLB_G_PAGE);
      put(w, at, F.piotlbAm, am);
      if (ih) put(w, at, F.piotlbIh, 1);
      putAddr(w, at, F.piotlbAddr, addr - (addr % align));
    }
    this.stats.piotlb++;
  }

  /**
   * PASID-cache invalidation (type 7): domain-selective, PASID-selective or global.
   *
   * @kernel drivers/iommu/intel/pasid.c pasid_cache_invalidation_with_pasid
   */
  addPasidCache(g: number, did: number, pasid: number): void {
    const at = this.next(INV_DESC_TYPE.PC);
    const w = this.staged;
    put(w, at, F.pcG, g);
    if (g !== PC_G_GLOBAL) put(w, at, F.pcDid, did);
    if (g === PC_G_PASID) put(w, at, F.pcPasid, pasid);
    this.stats.pasidCache++;
  }

  /**
   * Device-TLB invalidation without PASID (type 3) of the 2^order pages holding `addr`
   * (DEVTLB_ORDER_ALL: everything).
   *
   * @kernel drivers/iommu/intel/dmar.c qi_flush_dev_iotlb
   */
  addDevtlb(sid: number, pfsid: number, qdep: number, addr: number, order: number): void {
    const at = this.next(INV_DESC_TYPE.DEV_TLB);
    const w = this.staged;
    put(w, at, F.dtSid, sid);
    put(w, at, F.dtMip, qdep >= 32 ? 0 : qdep);
    put(w, at, F.dtPfsidLo, pfsid & 0xf);
    put(w, at, F.dtPfsidHi, pfsid >>> 4);
    this.putRange(w, at, F.dtS, F.dtAddr, addr, order);
    this.stats.devtlb++;
  }

  /**
   * PASID-based device-TLB invalidation (type 8) of the 2^order pages holding `addr` for `pasid`.
   *
   * @kernel drivers/iommu/intel/dmar.c qi_flush_dev_iotlb_pasid
   */
  addPasidDevtlb(
    sid: number,
    pfsid: number,
    pasid: number,
    qdep: number,
    addr: number,
    order: number,
  ): void {
    const at = this.next(INV_DESC_TYPE.PDEV_TLB);
    const w = this.staged;
    put(w, at, F.pdtSid, sid);
    put(w, at, F.pdtPasid, pasid);
    put(w, at, F.pdtMip, qdep >= 32 ? 0 : qdep);
    put(w, at, F.pdtPfsidLo, pfsid & 0xf);
    put(w, at, F.pdtPfsidHi, pfsid >>> 4);
    this.putRange(w, at, F.pdtS, F.pdtAddr, addr, order);
    this.stats.devtlb++;
  }

  private putRange(
    w: Uint32Array,
    at: number,
    s: Field,
    addrField: Field,
    addr: number,
    order: number,
  ): void {
    const o = Math.min(order, DEVTLB_ORDER_ALL);
    const r = encodeDevTlbRange(Math.floor(addr / 4096) % 2 ** 52, o, this.range);
    if (r.s) put(w, at, s, 1);
    putAddr(w, at, addrField, r.addrPfn * 4096);
  }

  /**
   * Page group response (type 9) to `rid` for group `prgi` (with `pasid` when `pasidPresent`).
   *
   * @kernel drivers/iommu/intel/prq.c intel_iommu_page_response
   */
  addPageResponse(
    rid: number,
    pasid: number,
    pasidPresent: boolean,
    code: number,
    prgi: number,
    lpig: boolean,
  ): void {
    const at = this.next(INV_DESC_TYPE.PGRP_RESP);
    const w = this.staged;
    put(w, at, F.respRid, rid);
    if (pasidPresent) {
      put(w, at, F.respPp, 1);
      put(w, at, F.respPasid, pasid);
    }
    put(w, at, F.respRc, code);
    put(w, at, F.respPrgi, prgi);
    if (lpig) put(w, at, F.respLpig, 1);
    this.stats.pageResponses++;
  }

  /**
   * An invalidation wait inside the batch: fence (FN) when `fence`, status data but no status
   * write, so nothing polls it; the batch's own closing wait still follows.
   *
   * @kernel drivers/iommu/intel/prq.c intel_iommu_drain_pasid_prq
   */
  addWait(fence: boolean): void {
    const at = this.next(INV_DESC_TYPE.WAIT);
    const w = this.staged;
    if (fence) put(w, at, F.waitFn, 1);
    put(w, at, F.waitSdata, QI_DONE);
  }

  /** Drop what was staged without submitting it. */
  discard(): void {
    this.count = 0;
  }

  // --- Submission ---------------------------------------------------------------------------------

  /**
   * Submit the staged descriptors followed by a wait descriptor (status write; fence when
   * `fence`; page-request drain, PD, when `drain`: the kernel's QI_OPT_WAIT_DRAIN), move IQT, and
   * poll the status word until the hardware wrote it. 0 when the batch
   * completed; `'EINVAL'` when the hardware refused a descriptor (IQE: the bad one is replaced by
   * the wait, as the kernel does, so the queue moves on); `'ETIMEDOUT'` when a device-TLB
   * invalidation timed out (ITE) on every retry or the hardware never answered. Nothing staged:
   * returns 0 without touching the hardware.
   *
   * @kernel drivers/iommu/intel/dmar.c qi_submit_sync
   */
  submit(fence = false, drain = false): 0 | Errno {
    const n = this.count;
    if (n === 0) return 0;
    this.count = 0;
    let ret: 0 | Errno = 0;
    for (let attempt = 0; attempt < RETRY_LIMIT; attempt++) {
      ret = this.submitOnce(n, fence, drain);
      if (ret !== "EAGAIN") break;
    }
    if (ret === "EAGAIN") ret = "ETIMEDOUT";
    if (ret !== 0) this.stats.errors++;
    return ret;
  }

  private submitOnce(n: number, fence: boolean, drain: boolean): 0 | Errno {
    const mem = this.mem;
    const slot = this.slot;
    const size = QI_LENGTH * slot;
    const words = slot >>> 2;
    let tail = this.tail;
    const first = tail;
    for (let d = 0; d < n; d++) {
      this.writeSlot(tail, this.staged, d * 8, words);
      mem.write32(this.statusBase + (tail / slot) * 4, QI_IN_USE);
      tail = (tail + slot) % size;
    }
    const waitAt = tail;
    const status = this.statusBase + (waitAt / slot) * 4;
    const at = n * 8 < this.staged.length ? n * 8 : this.growForWait();
    const ww = this.staged;
    for (let i = 0; i < 8; i++) ww[at + i] = 0;
    ww[at] = INV_DESC_TYPE.WAIT;
    put(ww, at, F.waitSw, 1);
    if (fence) put(ww, at, F.waitFn, 1);
    if (drain) put(ww, at, F.waitPd, 1);
    put(ww, at, F.waitSdata, QI_DONE);
    putAddr(ww, at, F.waitSaddr, status);
    this.writeSlot(waitAt, ww, at, words);
    mem.write32(status, QI_IN_USE);
    tail = (tail + slot) % size;
    this.tail = tail;
    this.stats.submits++;
    this.stats.descriptors += n + 1;
    this.stats.waits++;
    this.mmio.write32(VTD_REG.IQT, tail);
    for (let poll = 0; poll < POLL_LIMIT; poll++) {
      if (mem.read32(status) === QI_DONE) return 0;
      const fault = this.checkFault(first, waitAt, n);
      if (fault === "EAGAIN") return "EAGAIN";
      if (fault === "EINVAL") {
        // The bad descriptor now holds the wait: the queue runs on to our status write.
        this.idle?.();
        if (mem.read32(status) === QI_DONE) return "EINVAL";
        continue;
      }
      this.idle?.();
    }
    if (mem.read32(status) === QI_DONE) return 0;
    this.stats.timeouts++;
    return "ETIMEDOUT";
  }

  private growForWait(): number {
    const grown = new Uint32Array(this.staged.length * 2);
    grown.set(this.staged);
    this.staged = grown;
    return this.count * 8;
  }

  private writeSlot(offset: number, w: Uint32Array, at: number, words: number): void {
    const pa = this.base + offset;
    for (let i = 0; i < words; i += 2) this.mem.write64(pa + i * 4, w[at + i], w[at + i + 1]);
  }

  /**
   * The queue's error bits: IQE at one of our descriptors (replace it by our wait and clear IQE),
   * ITE (clear it; the batch is retried), ICE (clear it).
   *
   * @kernel drivers/iommu/intel/dmar.c qi_check_fault
   */
  private checkFault(first: number, waitAt: number, _n: number): 0 | "EINVAL" | "EAGAIN" {
    const fsts = this.mmio.read32(VTD_REG.FSTS);
    if ((fsts & (FSTS_IQE | FSTS_ITE | FSTS_ICE)) === 0) return 0;
    if ((fsts & FSTS_IQE) !== 0) {
      const head = this.mmio.read32(VTD_REG.IQH) & 0x7fff0;
      const slot = this.slot;
      const size = QI_LENGTH * slot;
      // Is the head inside this batch (first .. waitAt, wrapping)?
      const rel = (head - first + size) % size;
      const span = (waitAt - first + size) % size;
      if (rel < span) {
        const words = slot >>> 2;
        const buf = this.copy;
        for (let i = 0; i < words; i += 2) {
          buf[i] = this.mem.read64(this.base + waitAt + i * 4);
          buf[i + 1] = this.mem.hi;
        }
        this.writeSlot(head, buf, 0, words);
        this.mmio.write32(VTD_REG.FSTS, FSTS_IQE);
        return "EINVAL";
      }
      this.mmio.write32(VTD_REG.FSTS, FSTS_IQE);
    }
    if ((fsts & FSTS_ITE) !== 0) {
      this.mmio.write32(VTD_REG.FSTS, FSTS_ITE);
      if ((fsts & FSTS_ICE) !== 0) this.mmio.write32(VTD_REG.FSTS, FSTS_ICE);
      return "EAGAIN";
    }
    if ((fsts & FSTS_ICE) !== 0) this.mmio.write32(VTD_REG.FSTS, FSTS_ICE);
    return 0;
  }
}

export {
  CC_G_DEVICE,
  CC_G_DOMAIN,
  CC_G_GLOBAL,
  IOTLB_G_DOMAIN,
  IOTLB_G_GLOBAL,
  IOTLB_G_PAGE,
  PC_G_DOMAIN,
  PC_G_GLOBAL,
  PC_G_PASID,
};
