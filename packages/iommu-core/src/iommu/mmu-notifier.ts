// What the IOMMU layer sees of a process address space (mm_struct): the top of its CPU page table,
// its lifetime counts, and the mmu-notifier chain through which every page-table change reaches a
// secondary MMU such as an IOMMU sharing the tables (SVA).

/** Why a range is invalidated. @kernel include/linux/mmu_notifier.h mmu_notifier_event */
export const MMU_NOTIFY_UNMAP = 0;
export const MMU_NOTIFY_CLEAR = 1;
export const MMU_NOTIFY_PROTECTION_VMA = 2;
export const MMU_NOTIFY_PROTECTION_PAGE = 3;
export const MMU_NOTIFY_SOFT_DIRTY = 4;
export const MMU_NOTIFY_RELEASE = 5;
export const MMU_NOTIFY_MIGRATE = 6;
export const MMU_NOTIFY_EXCLUSIVE = 7;

/**
 * The `end` of a whole-address-space flush (the kernel passes TLB_FLUSH_ALL, i.e. ~0UL, as an
 * inclusive-looking end; ranges here are end-exclusive, so 2^64 stands for it).
 *
 * @kernel arch/x86/include/asm/tlbflush.h TLB_FLUSH_ALL
 */
export const MM_FLUSH_ALL_END = 2 ** 64;

/** A range being invalidated, [start, end). @kernel include/linux/mmu_notifier.h mmu_notifier_range */
export interface MmuNotifierRange {
  readonly mm: IommuMm;
  readonly start: number;
  readonly end: number;
  /** MMU_NOTIFY_*. */
  readonly event: number;
}

/**
 * What a subscriber implements; every member is optional, as in the kernel.
 *
 * @kernel include/linux/mmu_notifier.h mmu_notifier_ops
 */
export interface MmuNotifierOps {
  /**
   * The address space is being torn down (exit_mmap), before its pages and tables are freed: the
   * subscriber must stop using the page tables now. Called once; the subscription is then off the
   * chain and gets no further invalidations.
   */
  release?(sub: MmuNotifier, mm: IommuMm): void;
  /** Before the page-table entries of `range` change. */
  invalidateRangeStart?(sub: MmuNotifier, range: MmuNotifierRange): void;
  /** After they changed (the TLB flush, archInvalidateSecondaryTlbs, may come later). */
  invalidateRangeEnd?(sub: MmuNotifier, range: MmuNotifierRange): void;
  /**
   * The CPU's TLB flush of [start, end): entries were cleared or downgraded and the pages or
   * tables they pointed at are about to be freed. What IOMMU drivers use to flush their IOTLBs
   * and the devices' ATCs. `end` = MM_FLUSH_ALL_END for the whole address space.
   */
  archInvalidateSecondaryTlbs?(sub: MmuNotifier, mm: IommuMm, start: number, end: number): void;
  /** The subscription's last reference went (after mmuNotifierPut): free what embeds it. */
  freeNotifier?(sub: MmuNotifier): void;
}

/** One subscription. @kernel include/linux/mmu_notifier.h mmu_notifier */
export class MmuNotifier {
  readonly ops: MmuNotifierOps;
  /** The address space subscribed to, while registered. */
  mm: IommuMm | null = null;
  /** Driver data (the domain that embeds the subscription). */
  priv: unknown;

  constructor(ops: MmuNotifierOps, priv: unknown = null) {
    this.ops = ops;
    this.priv = priv;
  }
}

/**
 * A process address space as drivers need it for SVA. `packages/sva`'s `Mm` implements it.
 *
 * @kernel include/linux/mm_types.h mm_struct
 */
export interface IommuMm {
  /** For traces and reports. */
  readonly name: string;
  /** Physical address of the top-level CPU page table (mm->pgd). */
  readonly pgd: number;
  /** The CPU page-table format the tables are in. */
  readonly pgtableFormat: "x86-64" | "aarch64";
  /** Levels of the CPU page table (x86-64: 4 or 5; AArch64 with 4 KiB pages: 4). */
  readonly levels: number;
  /** Virtual address bits (vabits_actual): 48 or 57 on x86-64, 48 on AArch64. */
  readonly vaBits: number;
  /** log2 PAGE_SIZE. */
  readonly pageShift: number;
  /** MAIR_EL1 as [bits 31:0, bits 63:32] (AArch64; zero on x86-64). */
  readonly mair: readonly [lo: number, hi: number];
  /** ID_AA64MMFR0_EL1.PARange of the CPUs (AArch64), for a CD's IPS. */
  readonly parange: number;
  /** mm_users: > 0 while the address space is live (before exit_mmap). */
  readonly users: number;
  /** mm_count: > 0 while the mm_struct itself lives. */
  readonly count: number;
  /** The IOMMU layer's data for this mm (iommu_mm_data), null before the first bind. */
  iommuMm: unknown;

  /** Take a reference on the address space if it is still live. @kernel include/linux/sched/mm.h mmget_not_zero */
  mmgetNotZero(): boolean;
  /** Drop an address-space reference (the last one tears the space down). @kernel kernel/fork.c mmput */
  mmput(): void;
  /** Keep the mm_struct alive. @kernel include/linux/sched/mm.h mmgrab */
  mmgrab(): void;
  /** Drop an mm_struct reference (the last one frees it). @kernel include/linux/sched/mm.h mmdrop */
  mmdrop(): void;
  /**
   * Subscribe `sub` (which takes an mm_struct reference). `'EINVAL'` when `sub` is registered
   * already or the address space is no longer live; `'ENOMEM'`.
   *
   * @kernel mm/mmu_notifier.c mmu_notifier_register
   */
  mmuNotifierRegister(sub: MmuNotifier): 0 | "EINVAL" | "ENOMEM";
  /**
   * Unsubscribe `sub`, calling its release first if the mm was not released yet, and drop its
   * mm_struct reference. `'EINVAL'` when it is not registered with this mm.
   *
   * @kernel mm/mmu_notifier.c mmu_notifier_unregister
   */
  mmuNotifierUnregister(sub: MmuNotifier): 0 | "EINVAL";
  /**
   * Unsubscribe `sub` without calling release, then call its freeNotifier and drop its mm_struct
   * reference (the kernel defers these past an SRCU grace period; here they run at once).
   * `'EINVAL'` when it is not registered with this mm.
   *
   * @kernel mm/mmu_notifier.c mmu_notifier_put
   */
  mmuNotifierPut(sub: MmuNotifier): 0 | "EINVAL";
}

/**
 * An address space's notifier chain: the subscriptions registered (each holding an mm_struct
 * reference) and those still active (not yet released). Callbacks run over a snapshot of the
 * chain, skipping a subscription an earlier callback took off it.
 *
 * @kernel mm/mmu_notifier.c mmu_notifier_subscriptions
 */
export class MmuNotifierSubscriptions {
  /** On the chain: they get invalidations and, at exit, release. */
  readonly active: MmuNotifier[] = [];
  /** Registered and not yet unregistered or put (released ones included). */
  readonly registered = new Set<MmuNotifier>();

  /** Subscribe `sub` to `mm` (which must be live). @kernel mm/mmu_notifier.c mmu_notifier_register */
  register(mm: IommuMm, sub: MmuNotifier): 0 | "EINVAL" | "ENOMEM" {
    if (mm.users === 0 || this.registered.has(sub) || sub.mm !== null) return "EINVAL";
    sub.mm = mm;
    this.registered.add(sub);
    this.active.push(sub);
    mm.mmgrab();
    return 0;
  }

  /** Release `sub` unless it was, then unsubscribe it. @kernel mm/mmu_notifier.c mmu_notifier_unregister */
  unregister(mm: IommuMm, sub: MmuNotifier): 0 | "EINVAL" {
    if (!this.registered.has(sub)) return "EINVAL";
    if (this.takeOff(sub)) sub.ops.release?.(sub, mm);
    this.forget(mm, sub);
    return 0;
  }

  /** Unsubscribe `sub` without release, then free it. @kernel mm/mmu_notifier.c mmu_notifier_put */
  put(mm: IommuMm, sub: MmuNotifier): 0 | "EINVAL" {
    if (!this.registered.has(sub)) return "EINVAL";
    this.takeOff(sub);
    this.registered.delete(sub);
    sub.mm = null;
    sub.ops.freeNotifier?.(sub);
    mm.mmdrop();
    return 0;
  }

  /** exit_mmap: every active subscription released and taken off the chain. @kernel mm/mmu_notifier.c __mmu_notifier_release */
  release(mm: IommuMm): void {
    for (const sub of [...this.active]) {
      // A release callback may unregister another subscription, which then got its release there.
      if (this.takeOff(sub)) sub.ops.release?.(sub, mm);
    }
  }

  /** @kernel mm/mmu_notifier.c __mmu_notifier_invalidate_range_start */
  invalidateRangeStart(range: MmuNotifierRange): void {
    for (const s of [...this.active]) {
      if (this.active.includes(s)) s.ops.invalidateRangeStart?.(s, range);
    }
  }

  /** @kernel mm/mmu_notifier.c __mmu_notifier_invalidate_range_end */
  invalidateRangeEnd(range: MmuNotifierRange): void {
    for (const s of [...this.active]) {
      if (this.active.includes(s)) s.ops.invalidateRangeEnd?.(s, range);
    }
  }

  /** @kernel mm/mmu_notifier.c __mmu_notifier_arch_invalidate_secondary_tlbs */
  archInvalidateSecondaryTlbs(mm: IommuMm, start: number, end: number): void {
    for (const s of [...this.active]) {
      if (this.active.includes(s)) s.ops.archInvalidateSecondaryTlbs?.(s, mm, start, end);
    }
  }

  private takeOff(sub: MmuNotifier): boolean {
    const i = this.active.indexOf(sub);
    if (i < 0) return false;
    this.active.splice(i, 1);
    return true;
  }

  private forget(mm: IommuMm, sub: MmuNotifier): void {
    this.registered.delete(sub);
    sub.mm = null;
    mm.mmdrop();
  }
}
