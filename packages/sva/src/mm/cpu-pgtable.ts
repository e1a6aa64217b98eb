// A process's CPU page table in simulated physical memory: one walker over 4 KiB tables of 512
// 64-bit entries, with the architecture's entry encoding injected as a CpuPgtableFormat.

import { bug, type FrameAllocator, type PhysMemory } from "@iommu-sim/iommu-core";

/**
 * How one architecture encodes the entries of a user page table. Entries are handled as their two
 * 32-bit halves (`lo` bits 31:0, `hi` bits 63:32, both uint32), so no encoder allocates.
 *
 * @kernel arch/x86/include/asm/pgtable_types.h
 * @kernel arch/arm64/include/asm/pgtable-hwdef.h
 */
export interface CpuPgtableFormat {
  readonly name: "x86-64" | "aarch64";
  /** Levels this format supports with 4 KiB pages. */
  readonly levelChoices: readonly number[];
  /** MAIR_EL1 as [bits 31:0, bits 63:32] (AArch64; [0, 0] elsewhere). */
  readonly mair: readonly [number, number];
  /** ID_AA64MMFR0_EL1.PARange (AArch64; 0 elsewhere). */
  readonly parange: number;
  /** Largest physical address + 1 an entry can hold. */
  readonly paLimit: number;
  /** Virtual address bits of a table with `levels` levels. */
  vaBits(levels: number): number;
  /** End of the user address range (TASK_SIZE) for `levels` levels. */
  taskSize(levels: number): number;
  /** A table entry pointing at the next-level table at `pa`. */
  tableLo(pa: number): number;
  tableHi(pa: number): number;
  /**
   * A user leaf mapping the frame at `pa` with the VM_* permissions `flags`. Without any VM_*
   * permission this is the architecture's PROT_NONE entry: not valid for the hardware, but
   * still holding the frame for software.
   */
  leafLo(pa: number, flags: number): number;
  leafHi(pa: number, flags: number): number;
  /** The hardware treats the entry as present (x86 P, Arm descriptor valid). */
  isPresent(lo: number, hi: number): boolean;
  /** The frame or table a non-zero entry holds, PROT_NONE leaves included. */
  entryPa(lo: number, hi: number): number;
  /** The VM_* permissions a present entry grants to user accesses below it (0 if not present). */
  entryFlags(lo: number, hi: number, leaf: boolean): number;
}

const TWO32 = 4294967296;
/** PAGES[l]: 4 KiB pages one level-l entry spans (512^(l-1)). */
const PAGES = [0, 1, 512, 262144, 134217728, 68719476736, 35184372088832];
const ENTRIES = 512;

/**
 * The walker: finds and fills leaf slots, translates, visits and clears ranges, and unlinks
 * empty tables. It keeps a count of non-zero entries per table (the model's stand-in for the
 * struct page fields that tell Linux which tables are in use) so an empty table is found
 * without scanning it.
 *
 * Every entry change is one `PhysMemory.write64`: one 64-bit single-copy-atomic store, as a
 * 64-bit kernel's WRITE_ONCE / xchg of a pte_t, so a hardware walker sampling between stores
 * never sees half an entry. Were the store ever split in two, the safe orders would be: when
 * clearing, the low word (holding P / valid) first; when installing, the high word first.
 */
export class CpuPgtable {
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;
  readonly format: CpuPgtableFormat;
  readonly levels: number;
  /** Physical address of the top-level table. */
  readonly pgd: number;
  /** High word of the entry the last `readEntry` returned the low word of. */
  hi = 0;
  /** VM_* permissions of the last successful `translate`. */
  flags = 0;
  /** The last `leafSlot` failed because no frame was left for a table. */
  oom = false;
  /** Non-zero entries per live table, keyed by the table's PFN (the pgd included). */
  private readonly used = new Map<number, number>();

  /** `pgd`: a zeroed frame from `frames` that becomes the top-level table. */
  constructor(
    mem: PhysMemory,
    frames: FrameAllocator,
    format: CpuPgtableFormat,
    levels: number,
    pgd: number,
  ) {
    if (!format.levelChoices.includes(levels))
      bug(`CpuPgtable: ${levels} levels in ${format.name}`);
    this.mem = mem;
    this.frames = frames;
    this.format = format;
    this.levels = levels;
    this.pgd = pgd;
    this.used.set(pgd / 4096, 0);
  }

  /** Table frames held, the pgd included (0 once `dropPgd` ran). */
  get tablePages(): number {
    return this.used.size;
  }

  /** Index of page `vpn` in a level-`level` table. */
  static index(vpn: number, level: number): number {
    return Math.floor(vpn / PAGES[level]) % ENTRIES;
  }

  /** The low word of the entry at `at`; the high word is left in `hi`. */
  readEntry(at: number): number {
    const lo = this.mem.read64(at);
    this.hi = this.mem.hi;
    return lo;
  }

  /** Store an entry (one 64-bit store) and keep the table's use count. */
  writeEntry(at: number, lo: number, hi: number): void {
    const mem = this.mem;
    const oldLo = mem.read64(at);
    const was = (oldLo | mem.hi) !== 0;
    const now = (lo | hi) !== 0;
    mem.write64(at, lo >>> 0, hi >>> 0);
    if (was === now) return;
    const pfn = Math.floor(at / 4096);
    const n = this.used.get(pfn);
    if (n === undefined) bug(`CpuPgtable: entry 0x${at.toString(16)} is not in a live table`);
    this.used.set(pfn, n + (now ? 1 : -1));
  }

  /**
   * Address of the level-1 entry of page `vpn`. With `alloc`, missing tables are allocated
   * (zeroed) and linked; otherwise, and when allocation fails, -1 where a table is missing
   * (`oom` tells the two apart).
   */
  leafSlot(vpn: number, alloc: boolean): number {
    const format = this.format;
    this.oom = false;
    let table = this.pgd;
    for (let level = this.levels; level > 1; level--) {
      const at = table + CpuPgtable.index(vpn, level) * 8;
      const lo = this.readEntry(at);
      if ((lo | this.hi) !== 0) {
        table = format.entryPa(lo, this.hi);
        continue;
      }
      if (!alloc) return -1;
      const next = this.frames.alloc(0);
      if (typeof next === "string") {
        this.oom = true;
        return -1;
      }
      if (next >= format.paLimit)
        bug(`CpuPgtable: table frame 0x${next.toString(16)} beyond PA range`);
      // The frame comes zeroed, so it is an empty table before the entry makes it reachable.
      this.used.set(next / 4096, 0);
      this.writeEntry(at, format.tableLo(next), format.tableHi(next));
      table = next;
    }
    return table + CpuPgtable.index(vpn, 1) * 8;
  }

  /**
   * The hardware's view of page `vpn`: the frame's physical address, or -1 when some entry on the
   * way is not present. Sets `flags` to the VM_* permissions every level grants.
   */
  translate(vpn: number): number {
    const format = this.format;
    let table = this.pgd;
    let flags = 7;
    for (let level = this.levels; level >= 1; level--) {
      const lo = this.readEntry(table + CpuPgtable.index(vpn, level) * 8);
      const hi = this.hi;
      if (!format.isPresent(lo, hi)) {
        this.flags = 0;
        return -1;
      }
      flags &= format.entryFlags(lo, hi, level === 1);
      table = format.entryPa(lo, hi);
    }
    this.flags = flags;
    return table;
  }

  /**
   * Visit every non-zero leaf entry of pages [startVpn, endVpn) in address order, skipping
   * absent tables: `visit(vpn, at, lo, hi)` with the entry's address and words.
   */
  forEachLeaf(
    startVpn: number,
    endVpn: number,
    visit: (vpn: number, at: number, lo: number, hi: number) => void,
  ): void {
    if (endVpn > startVpn) this.visitTable(this.pgd, this.levels, 0, startVpn, endVpn, visit);
  }

  private visitTable(
    table: number,
    level: number,
    baseVpn: number,
    startVpn: number,
    endVpn: number,
    visit: (vpn: number, at: number, lo: number, hi: number) => void,
  ): void {
    const span = PAGES[level];
    const first = startVpn > baseVpn ? Math.floor((startVpn - baseVpn) / span) : 0;
    const last = Math.min(ENTRIES - 1, Math.floor((endVpn - 1 - baseVpn) / span));
    for (let i = first; i <= last; i++) {
      const at = table + i * 8;
      const lo = this.readEntry(at);
      const hi = this.hi;
      if ((lo | hi) === 0) continue;
      const vpn = baseVpn + i * span;
      if (level === 1) visit(vpn, at, lo, hi);
      else this.visitTable(this.format.entryPa(lo, hi), level - 1, vpn, startVpn, endVpn, visit);
    }
  }

  /**
   * Unlink every table below the pgd that spans part of [startVpn, endVpn) and holds no entry any
   * more (deepest first, so a parent emptied by its children goes too), appending their frames to
   * `out`. The frames stay allocated: the caller frees them after the TLB flush.
   */
  unlinkEmpty(startVpn: number, endVpn: number, out: number[]): void {
    if (endVpn > startVpn) this.unlinkIn(this.pgd, this.levels, 0, startVpn, endVpn, out);
  }

  private unlinkIn(
    table: number,
    level: number,
    baseVpn: number,
    startVpn: number,
    endVpn: number,
    out: number[],
  ): void {
    if (level === 1) return;
    const span = PAGES[level];
    const first = startVpn > baseVpn ? Math.floor((startVpn - baseVpn) / span) : 0;
    const last = Math.min(ENTRIES - 1, Math.floor((endVpn - 1 - baseVpn) / span));
    for (let i = first; i <= last; i++) {
      const at = table + i * 8;
      const lo = this.readEntry(at);
      const hi = this.hi;
      if ((lo | hi) === 0) continue;
      const child = this.format.entryPa(lo, hi);
      this.unlinkIn(child, level - 1, baseVpn + i * span, startVpn, endVpn, out);
      if (this.used.get(child / 4096) === 0) {
        this.writeEntry(at, 0, 0);
        this.used.delete(child / 4096);
        out.push(child);
      }
    }
  }

  /** Forget the pgd (the caller frees its frame); every table below must be gone. */
  dropPgd(): void {
    if (this.used.size !== 1 || this.used.get(this.pgd / 4096) !== 0) {
      bug("CpuPgtable: pgd dropped while tables or entries remain");
    }
    this.used.clear();
  }
}

/** A physical address as the [lo, hi] words an entry's address field takes (bits 31:12, 51:32). */
export function paLo(pa: number): number {
  return (pa % TWO32) >>> 0;
}

export function paHi(pa: number): number {
  return Math.floor(pa / TWO32);
}
