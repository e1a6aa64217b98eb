// A device's scalable-mode PASID table: the directory, the 64-entry leaf tables allocated on first
// use, and the entry writers of intel/pasid.c (set up with P written last, cleared P first).

import type { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { encode, type FieldValues, TWO32 } from "@iommu-sim/iommu-core/platform";
import {
  PASID_ENTRY,
  PASID_ENTRY_SIZE,
  PASID_PDE_SHIFT,
  PASID_PTE_MASK,
} from "../format/pasid-entry.js";

/**
 * PASID directory and tables of one device.
 *
 * @kernel drivers/iommu/intel/pasid.h struct pasid_table
 */
export class PasidTable {
  /** Directory base. */
  readonly dir: number;
  /** Directory size: 2^order pages. */
  readonly order: number;
  /** PASIDs the directory covers. */
  readonly maxPasid: number;
  private readonly mem: PhysMemory;
  private readonly frames: FrameAllocator;
  /** Leaf tables allocated, by directory index. */
  private readonly leaves = new Map<number, number>();

  private constructor(mem: PhysMemory, frames: FrameAllocator, dir: number, order: number) {
    this.mem = mem;
    this.frames = frames;
    this.dir = dir;
    this.order = order;
    this.maxPasid = 2 ** (order + 12 + 3);
  }

  /**
   * A directory for `maxPasids` PASIDs: (maxPasids / 64) 8-byte entries, rounded up to whole
   * pages, so it covers at least 2^15 PASIDs. `'ENOMEM'` without frames.
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_alloc_table
   */
  static alloc(mem: PhysMemory, frames: FrameAllocator, maxPasids: number): PasidTable | "ENOMEM" {
    const size = Math.floor(maxPasids / 2 ** (PASID_PDE_SHIFT - 3));
    let order = 0;
    while (4096 * 2 ** order < size) order++;
    const dir = frames.alloc(order);
    if (typeof dir !== "number") return "ENOMEM";
    mem.fill(dir, 4096 << order, 0);
    return new PasidTable(mem, frames, dir, order);
  }

  /**
   * PDTS of the context entry: the directory has 2^(PDTS + 7) entries.
   *
   * @kernel drivers/iommu/intel/pasid.c context_get_sm_pds
   */
  get pdts(): number {
    // maxPasid >> 6 directory entries = 2^(order + 9).
    return this.order + 2;
  }

  /**
   * Address of the entry of `pasid`, allocating its leaf table (and writing the directory entry
   * with P) when `alloc`; 0 when there is none or no frame is left.
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_get_entry
   */
  entryAddr(pasid: number, alloc: boolean): number {
    if (pasid < 0 || pasid >= this.maxPasid) return 0;
    const dirIndex = Math.floor(pasid / 2 ** PASID_PDE_SHIFT);
    const index = pasid & PASID_PTE_MASK;
    let leaf = this.leaves.get(dirIndex);
    if (leaf === undefined) {
      if (!alloc) return 0;
      const frame = this.frames.alloc(0);
      if (typeof frame !== "number") return 0;
      this.mem.fill(frame, 4096, 0);
      leaf = frame;
      this.leaves.set(dirIndex, leaf);
      // The kernel installs the leaf with a 64-bit compare-and-swap of (table | P).
      this.mem.write64(this.dir + dirIndex * 8, (frame | 1) >>> 0, Math.floor(frame / TWO32));
    }
    return leaf + index * PASID_ENTRY_SIZE;
  }

  /** Whether the entry of `pasid` has P set. @kernel drivers/iommu/intel/pasid.h pasid_pte_is_present */
  isPresent(pasid: number): boolean {
    const at = this.entryAddr(pasid, false);
    return at !== 0 && (this.mem.read32(at) & 1) !== 0;
  }

  /** DID of the entry of `pasid` (0 when absent). @kernel drivers/iommu/intel/pasid.h pasid_get_domain_id */
  didOf(pasid: number): number {
    const at = this.entryAddr(pasid, false);
    return at === 0 ? 0 : this.mem.read32(at + 8) & 0xffff;
  }

  /** PGTT of the entry of `pasid` (0 when absent). @kernel drivers/iommu/intel/pasid.h pasid_pte_get_pgtt */
  pgttOf(pasid: number): number {
    const at = this.entryAddr(pasid, false);
    return at === 0 ? 0 : (this.mem.read32(at) >>> 6) & 7;
  }

  /**
   * Write the entry of `pasid` from `fields` (P must be among them): qwords 7 down to 1 first, then
   * qword 0, which holds P, so hardware never sees a present entry that is half written. The entry
   * must not be present (Linux never rewrites a present entry: a replacement is a tear-down and a
   * fresh setup). `'ENODEV'` when there is no entry (beyond the table, or its leaf table cannot be
   * allocated), as intel_pasid_get_entry's NULL makes the setup functions return.
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_setup_first_level
   */
  write(pasid: number, fields: FieldValues): 0 | "ENODEV" {
    const at = this.entryAddr(pasid, true);
    if (at === 0) return "ENODEV";
    const w = encode(PASID_ENTRY, fields);
    for (let q = 7; q >= 0; q--)
      this.mem.write64(at + q * 8, w[q * 2] as number, w[q * 2 + 1] as number);
    return 0;
  }

  /**
   * Clear P alone and keep the rest of the entry, the first step of a tear-down: the
   * invalidations that follow run while the entry still says what it was.
   *
   * @kernel drivers/iommu/intel/pasid.h pasid_clear_present
   */
  clearPresent(pasid: number): void {
    const at = this.entryAddr(pasid, false);
    if (at === 0) return;
    const lo = this.mem.read64(at);
    this.mem.write64(at, (lo & ~1) >>> 0, this.mem.hi);
  }

  /** Whether the entry of `pasid` has FPD set. @kernel drivers/iommu/intel/pasid.h pasid_pte_is_fault_disabled */
  isFaultDisabled(pasid: number): boolean {
    const at = this.entryAddr(pasid, false);
    return at !== 0 && (this.mem.read32(at) & 2) !== 0;
  }

  /**
   * Clear the entry of `pasid`, qword 0 (P) first. With `fpd` the cleared entry keeps FPD set so
   * DMA that still arrives is not reported (the kernel's fault_ignore).
   *
   * @kernel drivers/iommu/intel/pasid.c intel_pasid_clear_entry
   */
  clear(pasid: number, fpd: boolean): void {
    const at = this.entryAddr(pasid, false);
    if (at === 0) return;
    this.mem.write64(at, fpd ? 2 : 0, 0);
    for (let q = 1; q < 8; q++) this.mem.write64(at + q * 8, 0, 0);
  }

  /** Give the leaves and the directory back. @kernel drivers/iommu/intel/pasid.c intel_pasid_free_table */
  free(): void {
    for (const leaf of this.leaves.values()) this.frames.free(leaf, 0);
    this.leaves.clear();
    this.frames.free(this.dir, this.order);
  }

  /** PASIDs whose entry is present, ascending. */
  presentPasids(): number[] {
    const out: number[] = [];
    const dirIndexes = [...this.leaves.keys()].sort((a, b) => a - b);
    for (const d of dirIndexes) {
      const leaf = this.leaves.get(d) as number;
      for (let i = 0; i < 64; i++) {
        if ((this.mem.read32(leaf + i * PASID_ENTRY_SIZE) & 1) !== 0) out.push(d * 64 + i);
      }
    }
    return out;
  }
}
