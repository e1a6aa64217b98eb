// The VT-d second-stage paging entry (SS-PML5E, SS-PML4E, SS-PDPE, SS-PDE, SS-PTE): one 64-bit
// layout for every level, with the walk arithmetic both VT-d table formats share.

import { radixLevelIndex } from "@iommu-sim/iommu-core";
import {
  defineLayout,
  type Field,
  fieldOf,
  type Layout,
  wordMask,
} from "@iommu-sim/iommu-core/platform";

/**
 * Second-stage paging entry. The layout is the union over the levels: which fields mean something
 * depends on the level and on whether the entry is a leaf (see each field's doc). The spec has no
 * present bit: an entry is present when R or W is set. ADDR spans bits 51:12; the bits of it at
 * and above the unit's host address width (HAW) are reserved, which the hardware checks itself
 * since HAW is a property of the unit, not of the entry.
 *
 * @spec Intel VT-d Architecture Specification 9.8
 * @kernel drivers/iommu/generic_pt/fmt/vtdss.h VTDSS_FMT_R
 * @kernel drivers/iommu/intel/iommu.h struct dma_pte
 */
export const SS_PTE: Layout = defineLayout({
  name: "ss-pte",
  bits: 64,
  spec: "Intel VT-d Architecture Specification 9.8",
  fields: [
    { name: "R", lsb: 0, width: 1, doc: "read allowed; R or W set makes the entry present" },
    { name: "W", lsb: 1, width: 1, doc: "write allowed" },
    { name: "X", lsb: 2, width: 1, doc: "execute allowed (only with SLEE/ERE in effect)" },
    { name: "EMT", lsb: 3, width: 3, doc: "extended memory type (leaf; with ECAP.MTS)" },
    { name: "IPAT", lsb: 6, width: 1, doc: "ignore PAT (leaf; with ECAP.MTS)" },
    {
      name: "PS",
      lsb: 7,
      width: 1,
      doc: "page size: leaf at SS-PDE (2 MiB) or SS-PDPE (1 GiB); reserved above, ignored in SS-PTE",
    },
    { name: "A", lsb: 8, width: 1, doc: "accessed (set by hardware when SLADE=1)" },
    { name: "D", lsb: 9, width: 1, doc: "dirty (leaf; set by hardware when SLADE=1)" },
    { name: "IGN10", lsb: 10, width: 1, ignored: true, doc: "ignored" },
    { name: "SNP", lsb: 11, width: 1, doc: "snoop (leaf; with ECAP.SC)" },
    {
      name: "ADDR",
      lsb: 12,
      width: 40,
      addr: true,
      doc: "next table or page frame; bits HAW..51 reserved; 2 MiB / 1 GiB leaves: 20:12 / 29:12 reserved",
    },
    { name: "IGN52", lsb: 52, width: 10, ignored: true, doc: "ignored (bits 61:52)" },
    { name: "TM", lsb: 62, width: 1, doc: "transient mapping (leaf; with ECAP.DT)" },
    { name: "IGN63", lsb: 63, width: 1, ignored: true, doc: "ignored" },
  ],
});

/** The bits of `f` in one 32-bit half of a 64-bit entry: core's `wordMask`. */
export const pteHalfMask: (f: Field, half: 0 | 1) => number = wordMask;

const R = pteHalfMask(fieldOf(SS_PTE, "R"), 0);
const W = pteHalfMask(fieldOf(SS_PTE, "W"), 0);
const PS = pteHalfMask(fieldOf(SS_PTE, "PS"), 0);
const ADDR_LO = pteHalfMask(fieldOf(SS_PTE, "ADDR"), 0);
const ADDR_HI = pteHalfMask(fieldOf(SS_PTE, "ADDR"), 1);

/** R in the low half. */
export const SS_PTE_R = R;
/** W in the low half. */
export const SS_PTE_W = W;
/** X in the low half. */
export const SS_PTE_X = pteHalfMask(fieldOf(SS_PTE, "X"), 0);
/** PS in the low half. */
export const SS_PTE_PS = PS;
/** A in the low half. */
export const SS_PTE_A = pteHalfMask(fieldOf(SS_PTE, "A"), 0);
/** D in the low half. */
export const SS_PTE_D = pteHalfMask(fieldOf(SS_PTE, "D"), 0);
/** SNP in the low half. */
export const SS_PTE_SNP = pteHalfMask(fieldOf(SS_PTE, "SNP"), 0);
/** TM in the high half (entry bit 62). */
export const SS_PTE_TM_HI = pteHalfMask(fieldOf(SS_PTE, "TM"), 1);
/** ADDR bits 31:12 in the low half (0xfffff000). */
export const SS_PTE_ADDR_LO = ADDR_LO;
/** ADDR bits 51:32 in the high half (0x000fffff). */
export const SS_PTE_ADDR_HI = ADDR_HI;

/** What a walker makes of an entry at a level (`ssPteKind`, `fsPteKind`). */
export const VTD_PTE_NONE = 0;
export const VTD_PTE_TABLE = 1;
export const VTD_PTE_LEAF = 2;
/**
 * Present but unusable whatever the unit's capabilities: PS set in a PML5E/PML4E, or a 2 MiB /
 * 1 GiB leaf with address bits inside its page. Capability-dependent rules (HAW, SLLPS, SNP, TM)
 * are the walker's.
 */
export const VTD_PTE_BAD = 3;
export type VtdPteKind =
  | typeof VTD_PTE_NONE
  | typeof VTD_PTE_TABLE
  | typeof VTD_PTE_LEAF
  | typeof VTD_PTE_BAD;

/** Page bytes an entry maps at `level` when it is a leaf: 4 KiB, 2 MiB, 1 GiB. */
const LEAF_SIZE = [0, 0x1000, 0x20_0000, 0x4000_0000];

/**
 * Whether the entry whose low half is `lo` is present: R or W set (there is no present bit).
 *
 * @spec Intel VT-d Architecture Specification 9.8
 * @kernel drivers/iommu/intel/iommu.h dma_pte_present
 */
export function ssPteIsPresent(lo: number): boolean {
  return (lo & (R | W)) !== 0;
}

/**
 * Classify a second-stage entry `hi:lo` found at `level` (1: SS-PTE ... 5: SS-PML5E). `hi` is
 * unused but kept so that both formats' classifiers take the same arguments.
 *
 * @spec Intel VT-d Architecture Specification 3.7, 9.8
 */
export function ssPteKind(lo: number, _hi: number, level: number): VtdPteKind {
  if ((lo & (R | W)) === 0) return VTD_PTE_NONE;
  return pteKindPresent(lo, level);
}

/** The level rules both formats share for a present entry (PS at bit 7, ADDR at 51:12). */
export function pteKindPresent(lo: number, level: number): VtdPteKind {
  if (level === 1) return VTD_PTE_LEAF;
  if ((lo & PS) === 0) return VTD_PTE_TABLE;
  if (level > 3) return VTD_PTE_BAD;
  // A large leaf's address bits below its size are reserved (bit 12 is PAT in first-stage
  // entries; the caller passes its own `lo` with PAT cleared when that matters).
  return (lo & ADDR_LO & (LEAF_SIZE[level] - 1)) === 0 ? VTD_PTE_LEAF : VTD_PTE_BAD;
}

/**
 * The IOVA bit where the index of `level` starts (12, 21, 30, 39, 48).
 *
 * @kernel drivers/iommu/intel/iommu.h level_to_offset_bits
 */
export function vtdLevelShift(level: number): number {
  return 12 + 9 * (level - 1);
}

/**
 * The table index of `iova` (exact below 2^57) at `level`: core's radix engine's.
 *
 * @kernel drivers/iommu/intel/iommu.h pfn_level_offset
 */
export const vtdLevelIndex = radixLevelIndex;

/** Bytes a leaf at `level` maps (4 KiB, 2 MiB, 1 GiB), 0 above level 3. */
export function vtdLeafSize(level: number): number {
  return LEAF_SIZE[level] ?? 0;
}

/**
 * The ADDR field of `hi:lo` as a physical address. `pageLevel` is the level of the leaf the entry
 * is (2: 2 MiB, 3: 1 GiB), whose address bits below its size are cleared (with a first-stage PAT
 * bit 12); 1, the default, for a table entry or a 4 KiB leaf.
 */
export function vtdPteAddr(lo: number, hi: number, pageLevel = 1): number {
  const below = pageLevel <= 1 ? 0 : (LEAF_SIZE[pageLevel] ?? 0x1000) - 1;
  return (hi & ADDR_HI) * 4294967296 + ((lo & ADDR_LO & ~below) >>> 0);
}
