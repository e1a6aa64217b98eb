// A stand-in address space for driver tests: an IommuMm over a page table the test builds itself,
// with a real notifier chain, so a driver's SVA domain can be tested without packages/sva.

import {
  type IommuMm,
  MM_FLUSH_ALL_END,
  MMU_NOTIFY_CLEAR,
  type MmuNotifier,
  MmuNotifierSubscriptions,
} from "../iommu/mmu-notifier.js";

export interface TestMmOptions {
  name?: string;
  /** PA of the top-level table the test built. */
  pgd: number;
  pgtableFormat?: "x86-64" | "aarch64";
  levels?: number;
  vaBits?: number;
  mair?: readonly [number, number];
  parange?: number;
}

/**
 * An address space whose page table the test owns. `flush(start, end)` plays the CPU TLB flush a
 * page-table change ends with (range start, range end, then the flush's
 * arch_invalidate_secondary_tlbs, as unmap_region and tlb_finish_mmu order them); `exit()`
 * plays exit_mmap's release. Reference counts follow the kernel's: the mm starts with one user and
 * one count; each subscription holds a count.
 */
export class TestMm implements IommuMm {
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
  /** The notifier chain. */
  readonly subscriptions = new MmuNotifierSubscriptions();

  /** Subscriptions still on the chain (not released). */
  get active(): readonly MmuNotifier[] {
    return this.subscriptions.active;
  }

  /** Every subscription registered and not yet unregistered or put. */
  get registered(): ReadonlySet<MmuNotifier> {
    return this.subscriptions.registered;
  }
  /** Called when mm_count reaches 0 (the kernel's __mmdrop, which drops the mm's PASID). */
  onFree: (() => void) | null = null;

  constructor(o: TestMmOptions) {
    this.name = o.name ?? "mm";
    this.pgd = o.pgd;
    this.pgtableFormat = o.pgtableFormat ?? "x86-64";
    this.levels = o.levels ?? 4;
    this.vaBits = o.vaBits ?? (this.levels === 5 ? 57 : 48);
    this.mair = o.mair ?? [0, 0];
    this.parange = o.parange ?? 5;
  }

  mmgetNotZero(): boolean {
    if (this.users === 0) return false;
    this.users++;
    return true;
  }

  mmput(): void {
    if (--this.users === 0) this.release();
  }

  mmgrab(): void {
    this.count++;
  }

  mmdrop(): void {
    if (--this.count === 0) this.onFree?.();
  }

  mmuNotifierRegister(sub: MmuNotifier): 0 | "EINVAL" | "ENOMEM" {
    return this.subscriptions.register(this, sub);
  }

  mmuNotifierUnregister(sub: MmuNotifier): 0 | "EINVAL" {
    return this.subscriptions.unregister(this, sub);
  }

  mmuNotifierPut(sub: MmuNotifier): 0 | "EINVAL" {
    return this.subscriptions.put(this, sub);
  }

  /** The TLB flush after the test changed the tables in [start, end). */
  flush(start: number, end: number, event = MMU_NOTIFY_CLEAR): void {
    const range = { mm: this, start, end, event };
    this.subscriptions.invalidateRangeStart(range);
    this.subscriptions.invalidateRangeEnd(range);
    this.subscriptions.archInvalidateSecondaryTlbs(this, start, end);
  }

  /** A flush of the whole address space. */
  flushAll(): void {
    this.flush(0, MM_FLUSH_ALL_END);
  }

  /** exit_mmap's first step: every subscription released and taken off the chain. */
  release(): void {
    this.users = 0;
    this.subscriptions.release(this);
  }
}
