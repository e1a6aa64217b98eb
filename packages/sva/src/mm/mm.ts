// A process address space (mm_struct): VMAs over a real CPU page table in simulated physical
// memory, demand paging, munmap / mprotect / exit with their TLB flushes, lifetime counts, and the
// mmu-notifier chain through which an IOMMU sharing the tables hears of every change.

import type { ChargeNode } from "@iommu-sim/ioasid";
import {
  bug,
  type FrameAllocator,
  type IommuMm,
  MM_FLUSH_ALL_END,
  MMU_NOTIFY_PROTECTION_VMA,
  MMU_NOTIFY_UNMAP,
  type MmuNotifier,
  type MmuNotifierRange,
  MmuNotifierSubscriptions,
  type PhysMemory,
  type Trace,
} from "@iommu-sim/iommu-core";
import { AARCH64_PGTABLE } from "./aarch64-pgtable.js";
import { CpuPgtable, type CpuPgtableFormat } from "./cpu-pgtable.js";
import {
  calcVmProtBits,
  FAULT_FLAG_INSTRUCTION,
  FAULT_FLAG_USER,
  FAULT_FLAG_WRITE,
  PROT_EXEC,
  PROT_READ,
  PROT_SEM,
  PROT_WRITE,
  VM_ACCESS_FLAGS,
  VM_EXEC,
  VM_FAULT_ERROR,
  VM_FAULT_OOM,
  VM_FAULT_SIGSEGV,
  VM_WRITE,
} from "./mm-flags.js";
import { type Vma, VmaList } from "./vma.js";
import { X86_64_PGTABLE } from "./x86-64-pgtable.js";

declare module "@iommu-sim/iommu-core" {
  interface TraceEventMap {
    /** A demand fault of an address space: the frame mapped (-1 if none) and the vm_fault_t. */
    "sva.mm-fault": { mm: string; va: number; write: boolean; pa: number; result: number };
    /** The TLB flush an address-space operation ended with (arch_invalidate_secondary_tlbs). */
    "sva.mm-flush": { mm: string; op: string; start: number; end: number };
  }
}

const PAGE_SIZE = 4096;
/**
 * Where mmap looks for room without MAP_FIXED. Linux searches top-down from below the stack; this
 * model searches bottom-up from a fixed base instead, which keeps addresses small and
 * deterministic.
 */
export const MMAP_BASE = 0x10000000;
/** The lowest address a hint may name. @kernel mm/Kconfig DEFAULT_MMAP_MIN_ADDR */
export const MMAP_MIN_ADDR = 0x10000;

/** What the harness's oracle learns about the owner's view of the address space. */
export interface MmObserver {
  /**
   * Page `va` became present, mapping `pa` with the VM_* permissions `flags` its entry grants
   * (VM_READ always included: every present user page is readable), on a demand fault.
   */
  pageMapped(mm: Mm, va: number, pa: number, flags: number): void;
  /**
   * Page `va` (which mapped `pa`) is gone: called once the operation's TLB flush (notifiers) is
   * done and the frame freed. `op` names the operation ("munmap", "exit").
   */
  pageUnmapped(mm: Mm, va: number, pa: number, op: string): void;
  /**
   * Page `va` still holds `pa` but its entry now grants `flags` (0: PROT_NONE, not present for
   * the hardware), after the flush. `op` is "mprotect".
   */
  pageProtected(mm: Mm, va: number, pa: number, flags: number, op: string): void;
  /**
   * Frame `pa` (a page or a page-table page the operation took down) is about to go back to the
   * allocator: an IOMMU that still translates to it at this moment could reach freed memory.
   */
  frameFreeing?(mm: Mm, pa: number): void;
}

export interface MmOptions {
  name: string;
  mem: PhysMemory;
  frames: FrameAllocator;
  /** CPU page-table format. */
  format: "x86-64" | "aarch64";
  /** x86-64: 4 (48-bit VA) or 5 (57-bit, LA57); AArch64 (4 KiB granule): 4 only (48-bit). */
  levels?: 4 | 5;
  /** The user's cgroup node PASIDs held for this process are charged to (read by packages/sva). */
  charge?: ChargeNode | null;
  trace?: Trace;
}

const FORMATS: Readonly<Record<string, CpuPgtableFormat>> = Object.freeze({
  "x86-64": X86_64_PGTABLE,
  aarch64: AARCH64_PGTABLE,
});

/**
 * A process address space: anonymous private mappings only, demand-paged one 4 KiB page at a
 * time (no copy-on-write, no zero page, no huge pages, no swap), over a page table in the
 * architecture's own format that an IOMMU can walk as is.
 *
 * Every change that removes or downgrades present entries runs in Linux's order (unmap_region /
 * tlb_finish_mmu; mprotect's change_protection and its TLB flush): invalidateRangeStart on every
 * subscription, the entries cleared or downgraded, invalidateRangeEnd, empty tables unlinked
 * (munmap), one archInvalidateSecondaryTlbs for the operation's page-aligned range, the frames
 * freed, then the observer told. Making an entry present needs no flush.
 *
 * The flush range is wider than Linux's, never narrower in effect: Linux 6.18 passes the
 * mmu_gather's span (the entries actually cleared or changed, and the tables freed), and on arm64
 * a span of MAX_DVM_OPS pages or more without FEAT_TLBIRANGE becomes a whole-mm flush (0, -1);
 * x86 has passed the gather's span unchanged since 6.15, whatever its size.
 *
 * Counts follow the kernel: `users` (mm_users) starts at 1, the task's; `count` (mm_count) starts
 * at 1, held on behalf of all users; each subscription holds a count. The last mmput tears the
 * address space down (exit_mmap); the last mmdrop frees the pgd.
 *
 * @kernel include/linux/mm_types.h mm_struct
 */
export class Mm implements IommuMm {
  readonly name: string;
  readonly pgd: number;
  readonly pgtableFormat: "x86-64" | "aarch64";
  readonly levels: number;
  readonly vaBits: number;
  readonly pageShift = 12;
  readonly mair: readonly [number, number];
  readonly parange: number;
  users = 1;
  count = 1;
  iommuMm: unknown = null;
  readonly charge: ChargeNode | null;
  observer: MmObserver | null = null;
  /**
   * Called by the last mmdrop (the kernel's __mmdrop), after the pgd is freed: packages/sva hooks
   * mm_pasid_drop here.
   */
  onMmdrop: ((mm: Mm) => void) | null = null;

  private readonly mem: PhysMemory;
  private readonly frames: FrameAllocator;
  private readonly trace: Trace | null;
  private readonly format: CpuPgtableFormat;
  private readonly pt: CpuPgtable;
  /** TASK_SIZE: user addresses are below it. */
  private readonly taskSize: number;
  private readonly vmaList = new VmaList();
  /** The notifier chain. */
  private readonly subscriptions = new MmuNotifierSubscriptions();
  private resident = 0;
  private exited = false;

  /**
   * Allocates the pgd frame (zeroed). Bad options or no frame for the pgd are the caller's bug
   * here (`bug()`); `Mm.create` returns them as errnos.
   */
  constructor(o: MmOptions) {
    const format = FORMATS[o.format];
    const levels = o.levels ?? 4;
    if (format === undefined || !format.levelChoices.includes(levels)) {
      bug(`Mm: ${levels} levels in format ${String(o.format)}`);
    }
    const pgd = o.frames.alloc(0);
    if (typeof pgd === "string") bug(`Mm ${o.name}: no frame for the pgd`);
    if (pgd >= format.paLimit) bug(`Mm ${o.name}: pgd 0x${pgd.toString(16)} beyond PA range`);
    this.name = o.name;
    this.mem = o.mem;
    this.frames = o.frames;
    this.trace = o.trace ?? null;
    this.charge = o.charge ?? null;
    this.format = format;
    this.pgtableFormat = format.name;
    this.levels = levels;
    this.vaBits = format.vaBits(levels);
    this.taskSize = format.taskSize(levels);
    this.mair = format.mair;
    this.parange = format.parange;
    this.pgd = pgd;
    this.pt = new CpuPgtable(o.mem, o.frames, format, levels, pgd);
  }

  /**
   * The validated constructor: `'EINVAL'` for an unknown format or a level count the format lacks,
   * `'ENOMEM'` when no frame is left for the pgd.
   *
   * @kernel kernel/fork.c mm_alloc
   */
  static create(o: MmOptions): Mm | "EINVAL" | "ENOMEM" {
    const format = FORMATS[o.format];
    if (format === undefined || !format.levelChoices.includes(o.levels ?? 4)) return "EINVAL";
    if (o.frames.freeFrames === 0) return "ENOMEM";
    return new Mm(o);
  }

  /** Leaf entries holding a frame (PROT_NONE ones included, as RSS counts them). */
  get residentPages(): number {
    return this.resident;
  }

  /** Page-table frames held, the pgd included (0 once the last mmdrop freed it). */
  get tablePages(): number {
    return this.pt.tablePages;
  }

  /** The VMAs, sorted by address. */
  get vmas(): readonly Vma[] {
    return this.vmaList.items;
  }

  /** The end of the user address range (TASK_SIZE). */
  get userEnd(): number {
    return this.taskSize;
  }

  // ---- lifetime ------------------------------------------------------------------------------

  /** Take an address-space reference if it is still live. @kernel include/linux/sched/mm.h mmget_not_zero */
  mmgetNotZero(): boolean {
    if (this.users === 0) return false;
    this.users++;
    return true;
  }

  /** Drop an address-space reference; the last one runs exit_mmap. @kernel kernel/fork.c mmput */
  mmput(): void {
    if (this.users <= 0) bug(`Mm ${this.name}: mmput without a user reference`);
    if (--this.users === 0) this.exitMmap();
  }

  /** Keep the mm_struct alive. @kernel include/linux/sched/mm.h mmgrab */
  mmgrab(): void {
    if (this.count <= 0) bug(`Mm ${this.name}: mmgrab after the last mmdrop`);
    this.count++;
  }

  /**
   * Drop an mm_struct reference; the last one frees the pgd, then calls `onMmdrop`, in
   * __mmdrop's order (mm_free_pgd comes before mm_pasid_drop).
   *
   * @kernel include/linux/sched/mm.h mmdrop
   * @kernel kernel/fork.c __mmdrop
   */
  mmdrop(): void {
    if (this.count <= 0) bug(`Mm ${this.name}: mmdrop without a reference`);
    if (--this.count > 0) return;
    if (this.users !== 0) bug(`Mm ${this.name}: last mmdrop while the address space is live`);
    this.pt.dropPgd();
    this.frames.free(this.pgd, 0);
    this.onMmdrop?.(this);
  }

  /**
   * The task exits: its mmput. Later calls do nothing (the task has no reference left to drop).
   *
   * @kernel kernel/exit.c exit_mm
   */
  exit(): void {
    if (this.exited) return;
    this.exited = true;
    this.mmput();
  }

  /**
   * The last user went: every subscription is released and taken off the chain first, then every
   * page unmapped and every table below the pgd freed, then the users' mm_count reference
   * dropped. Subscriptions are gone from the chain, so no flush reaches anyone (Linux's fullmm
   * flush finds an empty chain too).
   *
   * @kernel mm/mmap.c exit_mmap
   */
  private exitMmap(): void {
    this.mmuNotifierRelease();
    this.unmapRange(0, this.taskSize, 0, MM_FLUSH_ALL_END, "exit");
    this.vmaList.clear();
    this.mmdrop();
  }

  /** Release every subscription still on the chain. @kernel mm/mmu_notifier.c __mmu_notifier_release */
  private mmuNotifierRelease(): void {
    this.subscriptions.release(this);
  }

  // ---- mmu notifiers -------------------------------------------------------------------------

  /**
   * Subscribe `sub`, which takes an mm_struct reference. `'EINVAL'` when it is registered already
   * (here or elsewhere) or the address space is no longer live.
   *
   * @kernel mm/mmu_notifier.c mmu_notifier_register
   */
  mmuNotifierRegister(sub: MmuNotifier): 0 | "EINVAL" | "ENOMEM" {
    return this.subscriptions.register(this, sub);
  }

  /**
   * Unsubscribe `sub`, calling its release first unless exit_mmap already did, and drop its
   * reference. `'EINVAL'` when it is not registered with this mm.
   *
   * @kernel mm/mmu_notifier.c mmu_notifier_unregister
   */
  mmuNotifierUnregister(sub: MmuNotifier): 0 | "EINVAL" {
    return this.subscriptions.unregister(this, sub);
  }

  /**
   * Unsubscribe `sub` without release, call its freeNotifier and drop its reference (the SRCU
   * grace period the kernel waits for passes at once here). `'EINVAL'` when not registered here.
   *
   * @kernel mm/mmu_notifier.c mmu_notifier_put
   */
  mmuNotifierPut(sub: MmuNotifier): 0 | "EINVAL" {
    return this.subscriptions.put(this, sub);
  }

  private notifyStart(range: MmuNotifierRange): void {
    this.subscriptions.invalidateRangeStart(range);
  }

  private notifyEnd(range: MmuNotifierRange): void {
    this.subscriptions.invalidateRangeEnd(range);
  }

  private flushTlb(start: number, end: number, op: string): void {
    if (this.trace?.active) this.trace.emit("sva.mm-flush", { mm: this.name, op, start, end });
    this.subscriptions.archInvalidateSecondaryTlbs(this, start, end);
  }

  // ---- mappings ------------------------------------------------------------------------------

  /**
   * Map `length` bytes of anonymous memory with `prot` (PROT_*; unknown bits ignored, as do_mmap
   * ignores them). Without `fixed`, `addr` is a hint, used when page-aligned up it is free and at
   * or above MMAP_MIN_ADDR; otherwise the lowest free gap at or above MMAP_BASE. With `fixed`
   * (MAP_FIXED_NOREPLACE) `addr` must be page-aligned and free: `'EEXIST'` when it overlaps a
   * mapping (mmap_min_addr is not enforced for it: the kernel's EPERM is not modelled).
   * `'EINVAL'` for a zero or non-integer length or a bad fixed address, `'ENOMEM'` when the
   * range does not fit below TASK_SIZE, no gap is left, or the address space has exited. Nothing
   * is populated: pages appear on first touch.
   *
   * @kernel mm/mmap.c do_mmap
   */
  mmap(
    addr: number,
    length: number,
    prot: number,
    fixed = false,
  ): number | "EINVAL" | "ENOMEM" | "EEXIST" {
    if (!Number.isInteger(length) || length <= 0) return "EINVAL";
    const len = alignPage(length);
    if (len > this.taskSize) return "ENOMEM";
    if (this.users === 0) return "ENOMEM";
    const flags = calcVmProtBits(prot);
    let start: number;
    if (fixed) {
      if (!Number.isInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) return "EINVAL";
      if (addr > this.taskSize - len) return "ENOMEM";
      if (this.vmaList.intersects(addr, addr + len)) return "EEXIST";
      start = addr;
    } else {
      // A hint that is no address at all is no hint.
      const hint = Number.isInteger(addr) && addr > 0 ? alignPage(addr) : 0;
      if (
        hint !== 0 &&
        hint >= MMAP_MIN_ADDR &&
        hint <= this.taskSize - len &&
        !this.vmaList.intersects(hint, hint + len)
      ) {
        start = hint;
      } else {
        start = this.vmaList.lowestGap(MMAP_BASE, len, this.taskSize);
        if (start < 0) return "ENOMEM";
      }
    }
    this.vmaList.insert(start, start + len, flags);
    return start;
  }

  /**
   * Unmap [addr, addr + length) (length rounded up to pages); holes are fine. `'EINVAL'` for an
   * unaligned or non-integer `addr`, a zero length, or a range beyond TASK_SIZE.
   *
   * @kernel mm/vma.c do_vmi_munmap
   */
  munmap(addr: number, length: number): 0 | "EINVAL" {
    if (!Number.isInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0 || addr > this.taskSize) {
      return "EINVAL";
    }
    if (!Number.isInteger(length) || length < 0 || length > this.taskSize - addr) return "EINVAL";
    const len = alignPage(length);
    if (len === 0) return "EINVAL";
    const end = addr + len;
    if (!this.vmaList.remove(addr, end)) return 0;
    this.unmapRange(addr, end, addr, end, "munmap");
    return 0;
  }

  /**
   * Clear every leaf in [start, end) and unlink the tables left empty, in the order the IOMMU
   * depends on. Notifiers see the range [start, end) (event UNMAP); the flush covers
   * [flushStart, flushEnd) and is skipped when no leaf was cleared and no table unlinked
   * (tlb_finish_mmu flushes only a non-empty gather). A PROT_NONE leaf counts: it is
   * pte_present on x86 and arm64 alike, so zapping it adds to the gather as a valid one does.
   *
   * @kernel mm/vma.c unmap_region
   * @kernel mm/vma.c vms_clear_ptes
   */
  private unmapRange(
    start: number,
    end: number,
    flushStart: number,
    flushEnd: number,
    op: string,
  ): void {
    const range: MmuNotifierRange = { mm: this, start, end, event: MMU_NOTIFY_UNMAP };
    this.notifyStart(range);
    const vas: number[] = [];
    const pas: number[] = [];
    let flush = false;
    const pt = this.pt;
    const format = this.format;
    pt.forEachLeaf(start / PAGE_SIZE, end / PAGE_SIZE, (vpn, at, lo, hi) => {
      // Every non-zero leaf of the model is valid or PROT_NONE, both pte_present.
      flush = true;
      vas.push(vpn * PAGE_SIZE);
      pas.push(format.entryPa(lo, hi));
      pt.writeEntry(at, 0, 0);
    });
    this.resident -= vas.length;
    this.notifyEnd(range);
    const tables: number[] = [];
    pt.unlinkEmpty(start / PAGE_SIZE, end / PAGE_SIZE, tables);
    if (flush || tables.length > 0) this.flushTlb(flushStart, flushEnd, op);
    for (const pa of pas) this.freeFrame(pa);
    for (const pa of tables) this.freeFrame(pa);
    const observer = this.observer;
    if (observer !== null) {
      for (let i = 0; i < vas.length; i++) observer.pageUnmapped(this, vas[i], pas[i], op);
    }
  }

  private freeFrame(pa: number): void {
    this.observer?.frameFreeing?.(this, pa);
    const r = this.frames.free(pa, 0);
    if (r !== 0) bug(`Mm ${this.name}: freeing frame 0x${pa.toString(16)}: ${r}`);
  }

  /**
   * Change the permissions of [addr, addr + length) to `prot`. As the kernel: `'EINVAL'` for an
   * unaligned `addr` or unknown prot bits (PROT_SEM is accepted), 0 at once for a zero length,
   * `'ENOMEM'` when part of the range has no VMA, the VMAs before the first hole keeping the
   * change (do_mprotect_pkey stops there). A negative or non-integer length is `'EINVAL'` (a
   * size_t cannot be one). VMAs are split at the range's ends and merged with equal neighbours.
   *
   * Present entries are rewritten to what a fault with the new permissions would install (so A
   * and D follow the new permissions rather than being kept as pte_modify keeps them);
   * PROT_NONE entries keep the frame. Notifiers see [addr, end) with event PROTECTION_VMA once
   * some entry changes; the flush runs when a present entry changed (pte_needs_flush: on x86
   * RW, USER and NX are flush-on-change, so an upgrade is flushed too; arm64 flushes any change
   * of a valid entry).
   *
   * @kernel mm/mprotect.c do_mprotect_pkey
   */
  mprotect(addr: number, length: number, prot: number): 0 | "EINVAL" | "ENOMEM" {
    if (!Number.isInteger(addr) || addr < 0 || addr % PAGE_SIZE !== 0) return "EINVAL";
    if (!Number.isInteger(length) || length < 0) return "EINVAL";
    if (length === 0) return 0;
    if ((prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM)) !== 0) return "EINVAL";
    const end = addr + alignPage(length);
    const items = this.vmaList.items;
    let i = this.vmaList.indexAfter(addr);
    if (i >= items.length || items[i].start > addr) return "ENOMEM";
    // The VMAs run without a hole from addr up to `stop`.
    let stop = Math.min(items[i].end, end);
    while (stop < end && i + 1 < items.length && items[i + 1].start === items[i].end) {
      i++;
      stop = Math.min(items[i].end, end);
    }
    const flags = calcVmProtBits(prot);
    this.vmaList.setFlags(addr, stop, flags);
    this.changeProtection(addr, stop, flags);
    return stop < end ? "ENOMEM" : 0;
  }

  /** Rewrite the leaves of [start, end) for `flags`. @kernel mm/mprotect.c change_protection */
  private changeProtection(start: number, end: number, flags: number): void {
    const pt = this.pt;
    const format = this.format;
    const range: MmuNotifierRange = { mm: this, start, end, event: MMU_NOTIFY_PROTECTION_VMA };
    let started = false;
    let flush = false;
    const vas: number[] = [];
    const pas: number[] = [];
    const now: number[] = [];
    pt.forEachLeaf(start / PAGE_SIZE, end / PAGE_SIZE, (vpn, at, lo, hi) => {
      const pa = format.entryPa(lo, hi);
      const newLo = format.leafLo(pa, flags);
      const newHi = format.leafHi(pa, flags);
      if (newLo === lo >>> 0 && newHi === hi >>> 0) return;
      if (!started) {
        // The range starts with the first entry to change; change_pud_range starts it at the
        // first table met, changed or not, which no IOMMU driver can tell apart.
        started = true;
        this.notifyStart(range);
      }
      const oldFlags = format.entryFlags(lo, hi, true);
      const newFlags = format.entryFlags(newLo, newHi, true);
      // pte_needs_flush: a present entry whose permission bits change needs the flush, an
      // upgrade too (x86 lists RW, USER and NX as flush-on-change; arm64 flushes any change of
      // a valid entry's hardware bits): a TLB may otherwise keep answering with the old rights.
      if (format.isPresent(lo, hi)) flush = true;
      pt.writeEntry(at, newLo, newHi);
      if (oldFlags !== newFlags) {
        vas.push(vpn * PAGE_SIZE);
        pas.push(pa);
        now.push(newFlags);
      }
    });
    if (!started) return;
    this.notifyEnd(range);
    if (flush) this.flushTlb(start, end, "mprotect");
    const observer = this.observer;
    if (observer !== null) {
      for (let i = 0; i < vas.length; i++) {
        observer.pageProtected(this, vas[i], pas[i], now[i], "mprotect");
      }
    }
  }

  /** The VMA containing `addr`, or null. @kernel mm/mmap.c vma_lookup */
  vmaLookup(addr: number): Vma | null {
    return this.vmaList.find(addr);
  }

  // ---- faults and the process's own accesses -------------------------------------------------

  /**
   * Resolve a user fault at `addr` in `vma` (handle_mm_fault with the arch fault handler's
   * access_error check folded in): `VM_FAULT_SIGSEGV` when `vma` is not this mm's VMA holding
   * `addr`, or the access is not allowed (a write needs VM_WRITE, an instruction fetch VM_EXEC,
   * a read any permission); 0 when the page is present already; else one fresh zeroed frame
   * mapped with the VMA's permissions (tables allocated on the way), 0, or `VM_FAULT_OOM` when no
   * frame is left. No flush: the entry was not present.
   *
   * @kernel mm/memory.c handle_mm_fault
   * @kernel arch/x86/mm/fault.c access_error
   */
  handleMmFault(vma: Vma, addr: number, faultFlags: number): number {
    const r = this.fault(vma, addr, faultFlags);
    if (this.trace?.active) {
      this.trace.emit("sva.mm-fault", {
        mm: this.name,
        va: addr,
        write: (faultFlags & FAULT_FLAG_WRITE) !== 0,
        pa: r === 0 ? this.lookup(addr) : -1,
        result: r,
      });
    }
    return r;
  }

  private fault(vma: Vma, addr: number, faultFlags: number): number {
    if (!(addr >= 0) || this.vmaList.find(addr) !== vma) return VM_FAULT_SIGSEGV;
    const flags = vma.flags;
    if ((faultFlags & FAULT_FLAG_WRITE) !== 0 && (flags & VM_WRITE) === 0) return VM_FAULT_SIGSEGV;
    if ((faultFlags & FAULT_FLAG_INSTRUCTION) !== 0 && (flags & VM_EXEC) === 0) {
      return VM_FAULT_SIGSEGV;
    }
    if ((flags & VM_ACCESS_FLAGS) === 0) return VM_FAULT_SIGSEGV;
    const pt = this.pt;
    const vpn = Math.floor(addr / PAGE_SIZE);
    const at = pt.leafSlot(vpn, true);
    if (at < 0) return VM_FAULT_OOM;
    const lo = pt.readEntry(at);
    const hi = pt.hi;
    if ((lo | hi) !== 0) {
      // mprotect keeps every entry in step with its VMA, so a PROT_NONE entry in an accessible
      // VMA cannot happen.
      if (!this.format.isPresent(lo, hi)) bug(`Mm ${this.name}: PROT_NONE entry in an open VMA`);
      return 0;
    }
    const pa = this.frames.alloc(0);
    if (typeof pa === "string") return VM_FAULT_OOM;
    const format = this.format;
    if (pa >= format.paLimit) bug(`Mm ${this.name}: frame 0x${pa.toString(16)} beyond PA range`);
    const newLo = format.leafLo(pa, flags);
    const newHi = format.leafHi(pa, flags);
    pt.writeEntry(at, newLo, newHi);
    this.resident++;
    this.observer?.pageMapped(this, vpn * PAGE_SIZE, pa, format.entryFlags(newLo, newHi, true));
    return 0;
  }

  /**
   * The process reads `dst.length` bytes at `addr` with its own CPU: page by page, faulting pages
   * in as the CPU would. `'EFAULT'` at the first page that has no VMA or refuses the access (the
   * pages before it were read, as a faulting copy leaves them).
   */
  read(addr: number, dst: Uint8Array): 0 | "EFAULT" {
    return this.access(addr, dst, false);
  }

  /** The process writes `src` at `addr` with its own CPU; as `read`. */
  write(addr: number, src: Uint8Array): 0 | "EFAULT" {
    return this.access(addr, src, true);
  }

  private access(addr: number, buf: Uint8Array, write: boolean): 0 | "EFAULT" {
    if (!Number.isInteger(addr) || addr < 0) return "EFAULT";
    const need = write ? VM_WRITE : 0;
    let done = 0;
    while (done < buf.length) {
      const va = addr + done;
      const off = va % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, buf.length - done);
      let pa = this.pt.translate(Math.floor(va / PAGE_SIZE));
      if (pa < 0 || (this.pt.flags & need) !== need) {
        const vma = this.vmaList.find(va);
        if (vma === null) return "EFAULT";
        const flags = FAULT_FLAG_USER | (write ? FAULT_FLAG_WRITE : 0);
        if ((this.handleMmFault(vma, va, flags) & VM_FAULT_ERROR) !== 0) return "EFAULT";
        pa = this.pt.translate(Math.floor(va / PAGE_SIZE));
        if (pa < 0 || (this.pt.flags & need) !== need) return "EFAULT";
      }
      if (write) this.mem.writeBytes(pa + off, buf, done, n);
      else this.mem.readBytes(pa + off, buf, done, n);
      done += n;
    }
    return 0;
  }

  /**
   * The physical address `va` translates to through the mm's own tables, as the hardware walks
   * them, or -1 when it is not present.
   */
  lookup(va: number): number {
    if (!(va >= 0) || this.pt.tablePages === 0) return -1;
    const pa = this.pt.translate(Math.floor(va / PAGE_SIZE));
    return pa < 0 ? -1 : pa + (va % PAGE_SIZE);
  }

  /** The VM_* permissions the tables grant a user access to `va`, or 0 when not present. */
  lookupFlags(va: number): number {
    if (!(va >= 0) || this.pt.tablePages === 0) return 0;
    return this.pt.translate(Math.floor(va / PAGE_SIZE)) < 0 ? 0 : this.pt.flags;
  }
}

/** `x` rounded up to a page (exact for multiples of 4 KiB up to 2^65). */
function alignPage(x: number): number {
  const r = x % PAGE_SIZE;
  return r === 0 ? x : x - r + PAGE_SIZE;
}
