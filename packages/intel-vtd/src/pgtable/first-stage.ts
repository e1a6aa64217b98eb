// The VT-d first-stage page table: x86-64 4-level (48-bit) or 5-level (57-bit) paging structures
// as Linux's intel driver writes them for first-stage domains.

import {
  type IommuFlushOps,
  RADIX_PTE_ADDR_HI,
  RADIX_PTE_ADDR_LO,
  RADIX_PTE_PS,
  RadixPgtable,
} from "@iommu-sim/iommu-core";
import { bug, type FrameAllocator, type PhysMemory } from "@iommu-sim/iommu-core/platform";
import {
  FS_PTE_A,
  FS_PTE_ADDR_HI,
  FS_PTE_ADDR_LO,
  FS_PTE_D,
  FS_PTE_P,
  FS_PTE_PS,
  FS_PTE_RW,
  FS_PTE_US,
} from "../format/first-stage-pte.js";
import { VTD_SUPERPAGES } from "./second-stage.js";

// The engine's PS and ADDR bits are the x86-64 entry's, which this checks once at load.
if (
  FS_PTE_PS !== RADIX_PTE_PS ||
  FS_PTE_ADDR_LO >>> 0 !== RADIX_PTE_ADDR_LO >>> 0 ||
  FS_PTE_ADDR_HI !== RADIX_PTE_ADDR_HI
) {
  bug("first-stage PS/ADDR differ from the radix engine's");
}

const P = FS_PTE_P | 0;
const RW = FS_PTE_RW | 0;
const US = FS_PTE_US | 0;
const A = FS_PTE_A | 0;
const D = FS_PTE_D | 0;

/** Bits Linux writes in a first-stage table entry besides the address: P, R/W, U/S, A. */
export const FS_TABLE_BITS = P | RW | US | A;
/** Bits of every first-stage leaf Linux writes: P, U/S, A. */
export const FS_LEAF_BITS = P | US | A;
/** Bits a first-stage leaf gets for IOMMU_WRITE: R/W and D. */
export const FS_LEAF_WRITE_BITS = RW | D;

/** Options of `VtdFsPgtable`. */
export interface VtdFsPgtableOptions {
  /** Memory the tables live in (the one `frames` manages). */
  mem: PhysMemory;
  /** Where table frames come from and go back to (it hands out zeroed frames). */
  frames: FrameAllocator;
  /** 4-level (48-bit canonical addresses) or 5-level (57-bit; PASID-entry FLPM=1, CAP.FS5LP). */
  levels: 4 | 5;
  /**
   * Superpage sizes to offer, a byte-size bitmap within 2 MiB | 1 GiB (0: 4 KiB pages only). Linux
   * offers 2 MiB, plus 1 GiB with CAP.FS1GP (`domain_super_pgsize_bitmap`).
   */
  superpages: number;
  /** The driver's flush callbacks, or null when the caller flushes by other means. */
  tlb: IommuFlushOps | null;
  /** Output address bits, 12..52 (default 52). */
  oas?: number;
}

/**
 * The VT-d first-stage page table, the x86-64 paging format, in simulated physical memory as Linux
 * writes it. A table entry is P|R/W|U/S|A plus the next table's address. A leaf is P|U/S|A, plus
 * R/W|D with IOMMU_WRITE, plus PS above level 1, plus the page address; the hardware still sets A
 * and D itself, Linux pre-sets them so that it never has to. Every present leaf is readable (x86
 * has no write-only page). XD is never set (Linux stopped setting it in 2024), so IOMMU_NOEXEC changes
 * nothing; nor do IOMMU_PRIV (U/S is always set) or IOMMU_CACHE (first-stage snooping is the PASID
 * entry's PGSNP).
 *
 * The hardware takes canonical input addresses (bits 63:48, or 63:57, copies of bit 47, or 56).
 * Linux maps only the lower half, with the domain's aperture ending at 2^47 - 1 (2^56 - 1), so
 * `cfg.ias` is 47 (4-level) or 56 (5-level): the table covers the lower canonical half, and the
 * upper half (top-level indices 256..511) stays empty.
 *
 * @spec Intel VT-d Architecture Specification 3.6, 9.7
 * @kernel drivers/iommu/generic_pt/fmt/x86_64.h
 * @kernel drivers/iommu/intel/iommu.c __domain_mapping
 */
export class VtdFsPgtable extends RadixPgtable {
  /** Build an empty table; allocates the root frame (see `VtdFsPgtable.alloc` for ENOMEM). */
  constructor(options: VtdFsPgtableOptions) {
    const { mem, frames, levels, superpages, tlb } = options;
    if (levels !== 4 && levels !== 5) bug(`VtdFsPgtable: ${levels} levels`);
    if ((superpages & ~VTD_SUPERPAGES) !== 0) {
      bug(`VtdFsPgtable: superpages 0x${superpages.toString(16)} is not within 2M|1G`);
    }
    super(mem, frames, tlb, {
      levels,
      ias: 11 + 9 * levels,
      oas: options.oas ?? 52,
      pgsizeBitmap: 0x1000 | superpages,
      presentMask: P,
      tableBits: FS_TABLE_BITS,
      leafBits: FS_LEAF_BITS,
      leafReadBits: 0,
      leafWriteBits: FS_LEAF_WRITE_BITS,
    });
  }

  /** Allocate a table, or `'ENOMEM'` when the allocator has no frame for the root. */
  static alloc(options: VtdFsPgtableOptions): VtdFsPgtable | "ENOMEM" {
    return options.frames.freeFrames === 0 ? "ENOMEM" : new VtdFsPgtable(options);
  }
}
