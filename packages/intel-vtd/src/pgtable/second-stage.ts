// The VT-d second-stage page table (3, 4 or 5 levels) as Linux's intel driver writes it, on core's
// radix-table engine.
//
// Both VT-d formats are 4 KiB tables of 512 little-endian 64-bit entries, indexed by IOVA bits
// [12 + 9L - 1 : 12 + 9(L - 1)] at level L, with PS (bit 7) marking a 2 MiB leaf at level 2 or a
// 1 GiB leaf at level 3 and the next-table / page address in bits 51:12: core's `RadixPgtable`.
// They differ only in which bits make an entry present (second stage: R or W; first stage: P) and
// in the bits Linux writes in table entries and leaves, which each format gives the engine.

import {
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuFlushOps,
  type IoPgtable,
  RADIX_PGSIZE_BITMAP,
  RADIX_PTE_ADDR_HI,
  RADIX_PTE_ADDR_LO,
  RADIX_PTE_PS,
  type RadixMapErrno,
  RadixPgtable,
} from "@iommu-sim/iommu-core";
import { bug, type FrameAllocator, type PhysMemory } from "@iommu-sim/iommu-core/platform";
import { agawToLevels, agawWidth } from "../format/context-entry.js";
import {
  SS_PTE_ADDR_HI,
  SS_PTE_ADDR_LO,
  SS_PTE_PS,
  SS_PTE_R,
  SS_PTE_SNP,
  SS_PTE_W,
} from "../format/second-stage-pte.js";

// The engine's PS and ADDR bits are the second-stage entry's, which this checks once at load.
if (
  SS_PTE_PS !== RADIX_PTE_PS ||
  SS_PTE_ADDR_LO >>> 0 !== RADIX_PTE_ADDR_LO >>> 0 ||
  SS_PTE_ADDR_HI !== RADIX_PTE_ADDR_HI
) {
  bug("second-stage PS/ADDR differ from the radix engine's");
}

const SS_R = SS_PTE_R | 0;
const SS_W = SS_PTE_W | 0;
const SS_SNP = SS_PTE_SNP | 0;
const SZ_4K = 0x1000;

/** Page sizes a VT-d table can map: 4 KiB, 2 MiB, 1 GiB. */
export const VTD_PGSIZE_BITMAP = RADIX_PGSIZE_BITMAP;
/** The superpage sizes (`superpages` option): 2 MiB and 1 GiB. */
export const VTD_SUPERPAGES = RADIX_PGSIZE_BITMAP & ~SZ_4K;
/** The errnos `mapPages` returns. */
export type VtdMapErrno = RadixMapErrno;

/** Options of `VtdSsPgtable`. */
export interface VtdSsPgtableOptions {
  /** Memory the tables live in (the one `frames` manages). */
  mem: PhysMemory;
  /** Where table frames come from and go back to (it hands out zeroed frames). */
  frames: FrameAllocator;
  /** Adjusted guest address width: 1, 2 or 3 for 3, 4 or 5 levels (39, 48 or 57 input bits). */
  agaw: 1 | 2 | 3;
  /**
   * Superpage sizes to offer, a byte-size bitmap within 2 MiB | 1 GiB (0: 4 KiB pages only). The
   * driver derives it from CAP.SLLPS as `domain_super_pgsize_bitmap` does.
   */
  superpages: number;
  /** The driver's flush callbacks, or null when the caller flushes by other means. */
  tlb: IommuFlushOps | null;
  /**
   * Set SNP in every leaf (the domain enforces cache coherency; needs ECAP.SC). Linux sets it on
   * every leaf regardless of IOMMU_CACHE once force-snooping is on.
   */
  forceSnoop?: boolean;
  /** Output address bits, 12..52 (default 52). */
  oas?: number;
}

/** Levels of a second-stage table for an AGAW value (`agaw_to_level`). */
export const ssAgawToLevels: (agaw: number) => number = agawToLevels;

/** Input address bits of a second-stage table for an AGAW value (`agaw_to_width`): 30 + 9 agaw. */
export const ssAgawToWidth: (agaw: number) => number = agawWidth;

/**
 * The VT-d second-stage page table: SS-PML5E/PML4E/PDPE/PDE/PTE entries in simulated physical
 * memory, written as Linux writes them. A table entry is R|W plus the next table's address; a leaf
 * is R (IOMMU_READ), W (IOMMU_WRITE), SNP (force-snooping domains), PS above level 1, and the page
 * address. X, EMT, IPAT, TM are never set; IOMMU_NOEXEC, IOMMU_PRIV and IOMMU_CACHE change nothing.
 * `cfg.ias` is 30 + 9 * agaw; `cfg.pgsizeBitmap` is 4 KiB plus `superpages`.
 *
 * @spec Intel VT-d Architecture Specification 3.7, 9.8
 * @kernel drivers/iommu/generic_pt/fmt/vtdss.h
 * @kernel drivers/iommu/intel/iommu.c pfn_to_dma_pte
 */
export class VtdSsPgtable extends RadixPgtable {
  readonly agaw: number;
  private snoop: boolean;

  /** Build an empty table; allocates the root frame (see `VtdSsPgtable.alloc` for ENOMEM). */
  constructor(options: VtdSsPgtableOptions) {
    const { mem, frames, agaw, superpages, tlb } = options;
    if (agaw !== 1 && agaw !== 2 && agaw !== 3) bug(`VtdSsPgtable: agaw ${agaw}`);
    if ((superpages & ~VTD_SUPERPAGES) !== 0) {
      bug(`VtdSsPgtable: superpages 0x${superpages.toString(16)} is not within 2M|1G`);
    }
    const snoop = options.forceSnoop === true;
    super(mem, frames, tlb, {
      levels: ssAgawToLevels(agaw),
      ias: ssAgawToWidth(agaw),
      oas: options.oas ?? 52,
      pgsizeBitmap: SZ_4K | superpages,
      presentMask: SS_R | SS_W,
      tableBits: SS_R | SS_W,
      leafBits: snoop ? SS_SNP : 0,
      leafReadBits: SS_R,
      leafWriteBits: SS_W,
    });
    this.agaw = agaw;
    this.snoop = snoop;
  }

  /** Allocate a table, or `'ENOMEM'` when the allocator has no frame for the root. */
  static alloc(options: VtdSsPgtableOptions): VtdSsPgtable | "ENOMEM" {
    return options.frames.freeFrames === 0 ? "ENOMEM" : new VtdSsPgtable(options);
  }

  /** Whether leaves get SNP. */
  get forceSnoop(): boolean {
    return this.snoop;
  }

  /**
   * Set SNP on the leaves mapped from now on (the kernel turns the feature on at creation or
   * before the first map; leaves already written keep their bits).
   *
   * @kernel drivers/iommu/intel/iommu.c intel_iommu_enforce_cache_coherency
   */
  setForceSnoop(on: boolean): void {
    this.snoop = on;
    this.leafBits = on ? SS_SNP : 0;
  }
}

/**
 * The IOMMU_READ/IOMMU_WRITE bits the leaf mapping `iova` grants in `table` (a VT-d table), read
 * from memory: bit 0 (R, or first-stage P) as IOMMU_READ and bit 1 (W / R/W) as IOMMU_WRITE. Null
 * when nothing maps `iova` or `table` is not a VT-d table. A test helper (the conformance suite's
 * `protOf`).
 */
export function pgtableProtOf(table: IoPgtable, iova: number): number | null {
  const leaf = table instanceof RadixPgtable ? table.leafEntry(iova) : null;
  if (leaf === null) return null;
  return ((leaf.lo & 1) !== 0 ? IOMMU_READ : 0) | ((leaf.lo & 2) !== 0 ? IOMMU_WRITE : 0);
}
