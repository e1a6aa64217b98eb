// LPAE (VMSAv8-64) stage-1 and stage-2 page tables with 4, 16 and 64 KiB granules, built in
// simulated physical memory the way io-pgtable-arm builds them, so that the SMMU model walks them.

import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuFlushOps,
  type IommuIotlbGather,
  type IoPgtable,
  type IoPgtableCfg,
} from "@iommu-sim/iommu-core";
import { bug, type FrameAllocator, type PhysMemory } from "@iommu-sim/iommu-core/platform";
import {
  LPAE_DESC_AF,
  LPAE_DESC_CONT_HI,
  LPAE_DESC_DBM_HI,
  LPAE_DESC_NS,
  LPAE_DESC_SH_IS,
  LPAE_DESC_SH_OS,
  LPAE_DESC_TYPE,
  LPAE_DESC_VALID,
  LPAE_DESC_XN_HI,
  LPAE_MAIR_IDX_CACHE,
  LPAE_MAIR_IDX_DEV,
  LPAE_S1_AP_RDONLY,
  LPAE_S1_AP_UNPRIV,
  LPAE_S1_ATTRINDX_SHIFT,
  LPAE_S1_NG,
  LPAE_S1_NSTABLE_HI,
  LPAE_S2_AP_READ,
  LPAE_S2_AP_WRITE,
  LPAE_S2_MEMATTR_DEV,
  LPAE_S2_MEMATTR_FWB_WB,
  LPAE_S2_MEMATTR_NC,
  LPAE_S2_MEMATTR_OIWB,
  LPAE_S2_MEMATTR_SHIFT,
  lpaeDescAddrHi,
  lpaeDescAddrLo,
  lpaeDescPa,
} from "../format/lpae-desc.js";

/** A translation granule in bytes. */
export type LpaeGranule = 4096 | 16384 | 65536;

/** How a stage-2 table picks concatenation at its start level. */
export type LpaeS2Concat = "mandatory" | "possible";

/**
 * Where a walk starts and how the input address splits, for one (granule, ias, stage, oas).
 *
 * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_alloc_pgtable
 */
export interface LpaeGeometry {
  readonly granule: LpaeGranule;
  /** log2(granule): 12, 14 or 16. */
  readonly pgShift: number;
  /** Index bits of a granule-sized table: pgShift - 3 (9, 11, 13). */
  readonly bitsPerLevel: number;
  readonly ias: number;
  readonly stage: 1 | 2;
  /** Level of the root table, 0..3 (4 - levels). */
  readonly startLevel: number;
  /** Levels the walk takes from the root. */
  readonly levels: number;
  /** Index bits at the start level (more than bitsPerLevel when concatenated). */
  readonly pgdBits: number;
  /** Entries of the root table. */
  readonly pgdEntries: number;
  /** Bytes of the root table (8 * pgdEntries; the model allocates at least one 4 KiB frame). */
  readonly pgdBytes: number;
  /** Granule-sized tables concatenated at the start level (1 when not concatenated). */
  readonly concat: number;
}

const MAX_CONCAT = 16;

/**
 * The geometry io-pgtable-arm computes: va_bits = ias - pgShift, levels = ceil(va_bits / bpl),
 * root index bits = va_bits - bpl * (levels - 1). At stage 2 with `concat` "mandatory" (Linux
 * 6.14 and later: arm_lpae_concat_mandatory, from Arm DDI0487 R_DXBSH / R_SRKBC) the walk starts
 * one level lower with the root made of up to 16 concatenated granule tables when: 16K granule
 * and start level 0 with ias or oas 48; 4K granule and start level 0 with oas 40 or 42; 16K
 * granule and start level 1 with oas 40. With "possible" (Linux 3.x-6.13) it does so whenever
 * the start level is 0 and the root has at most 16 entries. `'EINVAL'` for a granule or size the
 * format cannot take: ias or oas above 48 (52 with the 64K granule), ias not above the granule
 * shift, or a mandatory concatenation of more than 16 tables.
 *
 * @kernel drivers/iommu/io-pgtable-arm.c arm_64_lpae_alloc_pgtable_s2
 */
export function lpaeGeometry(
  granule: LpaeGranule,
  ias: number,
  stage: 1 | 2,
  oas: number = ias,
  concat: LpaeS2Concat = "mandatory",
): LpaeGeometry | "EINVAL" {
  const pgShift = granule === 4096 ? 12 : granule === 16384 ? 14 : granule === 65536 ? 16 : 0;
  if (pgShift === 0) return "EINVAL";
  const maxBits = granule === 65536 ? 52 : 48;
  if (!Number.isInteger(ias) || !Number.isInteger(oas)) return "EINVAL";
  if (ias <= pgShift || ias > maxBits || oas < 32 || oas > maxBits) return "EINVAL";
  const bpl = pgShift - 3;
  const vaBits = ias - pgShift;
  const levels = Math.ceil(vaBits / bpl);
  let startLevel = 4 - levels;
  let pgdBits = vaBits - bpl * (levels - 1);
  if (stage === 2) {
    let join = false;
    if (concat === "mandatory") {
      if (granule === 16384 && startLevel === 0) join = oas === 48 || ias === 48;
      else if (granule === 4096 && startLevel === 0) join = oas === 40 || oas === 42;
      else join = granule === 16384 && startLevel === 1 && oas === 40;
      if (join && 2 ** pgdBits > MAX_CONCAT) return "EINVAL";
    } else {
      join = startLevel === 0 && 2 ** pgdBits <= MAX_CONCAT;
    }
    if (join) {
      pgdBits += bpl;
      startLevel++;
    }
  }
  const pgdEntries = 2 ** pgdBits;
  return Object.freeze({
    granule,
    pgShift,
    bitsPerLevel: bpl,
    ias,
    stage,
    startLevel,
    levels: 4 - startLevel,
    pgdBits,
    pgdEntries,
    pgdBytes: pgdEntries * 8,
    concat: Math.max(1, (pgdEntries * 8) / granule),
  });
}

/** IA bit where the index of `level` starts: pgShift + (3 - level) * bitsPerLevel. */
export function lpaeLevelShift(granule: LpaeGranule, level: number): number {
  const pgShift = 31 - Math.clz32(granule);
  return pgShift + (3 - level) * (pgShift - 3);
}

/**
 * Whether a block descriptor is legal at `level` (0..2) for `granule`, without DS: 4K at levels
 * 1 and 2; 16K at level 2; 64K at level 2, and level 1 (4 TiB) only with a 52-bit OA (FEAT_LPA).
 *
 * @spec Arm ARM DDI0487 D8.3.2 (block descriptor levels per granule)
 */
export function lpaeBlockAllowed(granule: LpaeGranule, level: number, lpa = false): boolean {
  if (level === 2) return true;
  if (level === 1) return granule === 4096 || (granule === 65536 && lpa);
  return false;
}

/**
 * The page sizes io-pgtable-arm offers for `granule` (arm_lpae_restrict_pgsizes): 4K|2M|1G,
 * 16K|32M (no 64 GiB: a 16K level-1 block needs DS), 64K|512M plus 4 TiB when oas > 48. A number,
 * not an int32: bit 42 does not fit one.
 *
 * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_restrict_pgsizes
 */
export function lpaePgsizeBitmap(granule: LpaeGranule, oas = 48): number {
  if (granule === 4096) return 0x1000 + 0x20_0000 + 0x4000_0000;
  if (granule === 16384) return 0x4000 + 0x200_0000;
  return 0x1_0000 + 0x2000_0000 + (oas > 48 ? 2 ** 42 : 0);
}

/**
 * TCR.TG0 / TG1 (CD.TG0 / TG1, VTCR.TG0) encoding of `granule`: TG0 4K 0, 64K 1, 16K 2; TG1 16K 1,
 * 4K 2, 64K 3.
 *
 * @spec Arm ARM DDI0487 D19 TCR_EL1.TG0/TG1; IHI0070 5.4 CD.TG0
 * @kernel drivers/iommu/io-pgtable-arm.c ARM_LPAE_TCR_TG0_4K
 */
export function tcrTgOf(granule: LpaeGranule, ttbr: 0 | 1): number {
  if (ttbr === 0) return granule === 4096 ? 0 : granule === 65536 ? 1 : 2;
  return granule === 16384 ? 1 : granule === 4096 ? 2 : 3;
}

/**
 * VTCR.SL0 (STE.S2SL0) for the geometry's start level: 4K: 2 L0, 1 L1, 0 L2 (3: L3, FEAT_TTST);
 * 16K/64K: 2 L1, 1 L2, 0 L3 (16K 3: L0 with DS). io-pgtable: sl = start + (4K ? 1 : 0), SL0 = ~sl & 3.
 *
 * @spec Arm ARM DDI0487 D19 VTCR_EL2.SL0; IHI0070 5.2 STE.S2SL0
 * @kernel drivers/iommu/io-pgtable-arm.c arm_64_lpae_alloc_pgtable_s2
 */
export function s2sl0Of(geometry: LpaeGeometry): number {
  const sl = geometry.startLevel + (geometry.granule === 4096 ? 1 : 0);
  return ~sl & 3;
}

/**
 * TCR.IPS / VTCR.PS (CD.IPS, STE.S2PS) for an address size: 32 0, 36 1, 40 2, 42 3, 44 4, 48 5,
 * 52 6; `'EINVAL'` for any other size (io-pgtable fails the allocation).
 *
 * @kernel drivers/iommu/io-pgtable-arm.c ARM_LPAE_TCR_PS_32_BIT
 */
export function tcrPsOf(bits: number): number | "EINVAL" {
  const i = [32, 36, 40, 42, 44, 48, 52].indexOf(bits);
  return i < 0 ? "EINVAL" : i;
}

/** Quirks of io_pgtable_cfg this format models. @kernel include/linux/io-pgtable.h IO_PGTABLE_QUIRK_ARM_NS */
export interface LpaeQuirks {
  /** ARM_NS (stage 1): NS on leaves and NSTable on tables. */
  armNs?: boolean;
  /** ARM_HD (stage 1): DBM on writable leaves, for hardware dirty tracking. */
  armHd?: boolean;
  /** ARM_S2FWB (stage 2): cacheable leaves get MemAttr 0b0110 (forced write-back). */
  armS2Fwb?: boolean;
}

export interface LpaePgtableOptions {
  /** Memory the tables live in (the one `frames` manages). */
  mem: PhysMemory;
  /** Where table frames come from (a table of 16/64 KiB is one block of order 2/4). */
  frames: FrameAllocator;
  stage: 1 | 2;
  granule: LpaeGranule;
  /** Input address bits (up to 48; 52 with the 64K granule). */
  ias: number;
  /** Output address bits (32..48; 52 with the 64K granule, OA[51:48] in bits [15:12]). */
  oas: number;
  tlb: IommuFlushOps | null;
  quirks?: LpaeQuirks;
  /**
   * Page sizes the caller offers (io_pgtable_cfg.pgsize_bitmap, as a sum of powers of two); the
   * table keeps those its granule has (default: all of them).
   */
  pgsizeBitmap?: number;
  /** Stage-2 concatenation policy (default "mandatory", as Linux since 6.14). */
  s2Concat?: LpaeS2Concat;
  /**
   * Set the Contiguous hint on every entry of an aligned group (16 entries for 4K, 128 at level 3
   * and 32 at level 2 for 16K, 32 for 64K) that one mapPages call fills with an aligned, contiguous
   * output. Linux mainline never sets it (default false).
   */
  contiguous?: boolean;
}

/** The errnos `LpaePgtable.mapPages` returns. */
export type LpaeMapErrno = "EINVAL" | "ERANGE" | "EEXIST" | "ENOMEM";

const RUN_EEXIST = -1;
const RUN_ENOMEM = -2;
const VALID = LPAE_DESC_VALID;
const TYPE = LPAE_DESC_TYPE;
const TABLE = VALID | TYPE;
const CONT_HI = LPAE_DESC_CONT_HI;
const RW = IOMMU_READ | IOMMU_WRITE;

/** Contiguous group sizes (entries) per granule shift and level; 0: none. */
function contEntries(pgShift: number, level: number): number {
  if (pgShift === 12) return level >= 1 ? 16 : 0;
  if (pgShift === 14) return level === 3 ? 128 : level === 2 ? 32 : 0;
  return level >= 2 ? 32 : 0;
}

/**
 * An io-pgtable-arm (ARM_64_LPAE_S1 / ARM_64_LPAE_S2) table in simulated physical memory.
 *
 * Leaves are written as Linux writes them (arm_lpae_prot_to_pte, Linux 6.x): stage 1 nG, AP[2]
 * read-only for a prot with READ and not WRITE, AP[1] (unprivileged) unless IOMMU_PRIV, AttrIndx 2
 * for IOMMU_MMIO, 1 for IOMMU_CACHE, else 0; stage 2 S2AP read/write from the prot, MemAttr 0x1
 * (MMIO), 0xF (CACHE; 0x6 with S2FWB) or 0x5; both stages SH inner-shareable for IOMMU_CACHE and
 * outer-shareable otherwise, AF, and bits 53+54 for IOMMU_NOEXEC. Tables are bits[1:0] = 0b11
 * with the next table's address (and NSTable with the ARM_NS quirk).
 *
 * Where this differs from the kernel, on purpose: the range check covers the whole run (the kernel
 * checks the first iova and pa only); mapping a block over a table that still maps pages returns
 * EEXIST (the kernel frees the table and its leaves; iommu core never asks); a whole run is mapped
 * in one call (the kernel stops at a table's end and lets __iommu_map call again). As Linux since
 * 6.13, unmapping part of a block returns 0 and leaves it whole; so does unmapping part of a
 * contiguous group (option `contiguous`).
 *
 * Hitless updates: every entry is one `write64`; a new path is built while unreachable and linked
 * with one store; a table is freed only after its entry is cleared and `tlbFlushWalk` called.
 *
 * @kernel drivers/iommu/io-pgtable-arm.c
 */
export class LpaePgtable implements IoPgtable {
  readonly cfg: IoPgtableCfg;
  readonly rootPa: number;
  readonly levels: number;
  readonly geometry: LpaeGeometry;
  readonly stage: 1 | 2;
  readonly granule: LpaeGranule;
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;
  private readonly tlb: IommuFlushOps | null;
  private readonly start: number;
  private readonly iasLimit: number;
  private readonly oasLimit: number;
  private readonly rootOrder: number;
  private readonly tableOrder: number;
  private readonly entries: number;
  private readonly contig: boolean;
  private readonly nsTable: number;
  private readonly quirks: LpaeQuirks;
  /** Per level 0..3: 2^-shift, index mask, bytes per entry, leaf allowed, contiguous group. */
  private readonly inv = new Float64Array(4);
  private readonly idxMask = new Int32Array(4);
  private readonly size = new Float64Array(4);
  private readonly leafOk = new Uint8Array(4);
  private readonly contN = new Int32Array(4);
  private readonly building = new Float64Array(4);
  /** 2^ias until `free()`, then 0: the bound `iovaToPhys` checks. */
  private walkLimit: number;
  /** Address mask of a table descriptor's low word (0 for 64K, whose bits [15:12] may hold OA). */
  private readonly tableLowMask: number;
  private mappedBytes = 0;
  private freed = false;

  /** Build an empty table (allocates the root). Invalid options are bugs: see `alloc`. */
  constructor(options: LpaePgtableOptions) {
    const { mem, frames, stage, granule, ias, oas, tlb } = options;
    if (stage !== 1 && stage !== 2) bug(`LpaePgtable: stage ${stage}`);
    const g = lpaeGeometry(granule, ias, stage, oas, options.s2Concat ?? "mandatory");
    if (g === "EINVAL") bug(`LpaePgtable: granule ${granule}, ias ${ias}, oas ${oas}`);
    if (frames.mem !== mem) bug("LpaePgtable: the frame allocator manages another PhysMemory");
    this.geometry = g;
    this.stage = stage;
    this.granule = granule;
    this.mem = mem;
    this.frames = frames;
    this.tlb = tlb;
    this.start = g.startLevel;
    this.levels = g.levels;
    this.quirks = options.quirks ?? {};
    this.contig = options.contiguous === true;
    this.nsTable = stage === 1 && this.quirks.armNs ? LPAE_S1_NSTABLE_HI : 0;
    this.tableOrder = g.pgShift - 12;
    this.rootOrder = Math.max(0, Math.ceil(Math.log2(g.pgdBytes / 4096)));
    this.entries = granule / 8;
    this.iasLimit = 2 ** ias;
    this.oasLimit = 2 ** oas;
    this.walkLimit = this.iasLimit;
    this.tableLowMask = granule === 65536 ? 0 : -granule;
    let bitmap = 0;
    for (let l = 0; l < 4; l++) {
      const shift = lpaeLevelShift(granule, l);
      this.inv[l] = 2 ** -shift;
      this.size[l] = 2 ** shift;
      this.idxMask[l] = (l === g.startLevel ? g.pgdEntries : this.entries) - 1;
      const offered =
        options.pgsizeBitmap === undefined ||
        Math.floor(options.pgsizeBitmap / 2 ** shift) % 2 === 1;
      const ok =
        offered &&
        l >= g.startLevel &&
        l >= 1 &&
        (l === 3 || lpaeBlockAllowed(granule, l, oas > 48));
      this.leafOk[l] = ok ? 1 : 0;
      if (ok) bitmap += 2 ** shift;
      this.contN[l] = contEntries(g.pgShift, l);
    }
    const root = frames.alloc(this.rootOrder);
    if (typeof root !== "number") bug(`LpaePgtable: no frame for the root (${root})`);
    this.rootPa = root;
    this.cfg = Object.freeze({ pgsizeBitmap: bitmap, ias, oas, coherentWalk: true, tlb });
  }

  /**
   * Allocate a table: `'EINVAL'` for a geometry io-pgtable-arm refuses (see `lpaeGeometry`),
   * `'ENOMEM'` when no block is left for the root.
   *
   * @kernel drivers/iommu/io-pgtable.c alloc_io_pgtable_ops
   */
  static alloc(options: LpaePgtableOptions): LpaePgtable | "EINVAL" | "ENOMEM" {
    const g = lpaeGeometry(
      options.granule,
      options.ias,
      options.stage,
      options.oas,
      options.s2Concat ?? "mandatory",
    );
    if (g === "EINVAL" || (options.stage !== 1 && options.stage !== 2)) return "EINVAL";
    const order = Math.max(0, Math.ceil(Math.log2(g.pgdBytes / 4096)));
    const probe = options.frames.alloc(order);
    if (typeof probe !== "number") return "ENOMEM";
    options.frames.free(probe, order);
    return new LpaePgtable(options);
  }

  /** Physical address of the root table: CD.TTB0 (stage 1) or STE.S2TTB (stage 2). */
  get ttbr(): number {
    return this.rootPa;
  }

  /** Level of the root table. */
  get startLevel(): number {
    return this.start;
  }

  /** Granule tables concatenated at the start level (1: none). */
  get concatenated(): number {
    return this.geometry.concat;
  }

  get mapped(): number {
    return this.mappedBytes;
  }

  /** Index of `iova` in its table at `level`. */
  private index(iova: number, level: number): number {
    return (iova * (this.inv[level] as number)) & (this.idxMask[level] as number);
  }

  private leafLevelOf(pgsize: number): number {
    for (let l = 3; l >= 1; l--) {
      if (this.size[l] === pgsize) return this.leafOk[l] === 1 ? l : -1;
    }
    return -1;
  }

  /** Low and high attribute bits of a leaf for `prot` (type bits excluded). */
  private protLo(prot: number): number {
    let lo = LPAE_DESC_AF | ((prot & IOMMU_CACHE) !== 0 ? LPAE_DESC_SH_IS : LPAE_DESC_SH_OS);
    if (this.stage === 1) {
      lo |= LPAE_S1_NG;
      if ((prot & IOMMU_WRITE) === 0 && (prot & IOMMU_READ) !== 0) lo |= LPAE_S1_AP_RDONLY;
      if ((prot & IOMMU_PRIV) === 0) lo |= LPAE_S1_AP_UNPRIV;
      if ((prot & IOMMU_MMIO) !== 0) lo |= LPAE_MAIR_IDX_DEV << LPAE_S1_ATTRINDX_SHIFT;
      else if ((prot & IOMMU_CACHE) !== 0) lo |= LPAE_MAIR_IDX_CACHE << LPAE_S1_ATTRINDX_SHIFT;
      if (this.quirks.armNs) lo |= LPAE_DESC_NS;
    } else {
      if ((prot & IOMMU_READ) !== 0) lo |= LPAE_S2_AP_READ;
      if ((prot & IOMMU_WRITE) !== 0) lo |= LPAE_S2_AP_WRITE;
      const attr =
        (prot & IOMMU_MMIO) !== 0
          ? LPAE_S2_MEMATTR_DEV
          : (prot & IOMMU_CACHE) !== 0
            ? this.quirks.armS2Fwb
              ? LPAE_S2_MEMATTR_FWB_WB
              : LPAE_S2_MEMATTR_OIWB
            : LPAE_S2_MEMATTR_NC;
      lo |= attr << LPAE_S2_MEMATTR_SHIFT;
    }
    return lo;
  }

  private protHi(prot: number): number {
    let hi = (prot & IOMMU_NOEXEC) !== 0 ? LPAE_DESC_XN_HI : 0;
    const readOnly = (prot & IOMMU_WRITE) === 0 && (prot & IOMMU_READ) !== 0;
    if (this.stage === 1 && this.quirks.armHd && !readOnly) hi |= LPAE_DESC_DBM_HI;
    return hi;
  }

  /**
   * Map `pgcount` pages of `pgsize` from `iova` to `pa`. Checks, in order: `'EINVAL'` for a size
   * outside the bitmap, `pgcount` < 1 or a misaligned iova/pa; `'ERANGE'` when the run passes
   * 2^ias or 2^oas; `'EINVAL'` for a prot without READ or WRITE. Then page by page: `'EEXIST'`
   * over any mapping, `'ENOMEM'` when a table cannot be allocated; `mapped` holds the bytes mapped
   * before the error (still mapped).
   *
   * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_map_pages
   */
  mapPages(
    iova: number,
    pa: number,
    pgsize: number,
    pgcount: number,
    prot: number,
  ): 0 | LpaeMapErrno {
    this.mappedBytes = 0;
    if (this.freed) bug("LpaePgtable: mapPages after free()");
    const leaf = this.leafLevelOf(pgsize);
    if (leaf < 0) return "EINVAL";
    if (!Number.isInteger(pgcount) || pgcount < 1) return "EINVAL";
    if (!Number.isInteger(iova) || !Number.isInteger(pa) || iova < 0 || pa < 0) return "EINVAL";
    if (iova % pgsize !== 0 || pa % pgsize !== 0) return "EINVAL";
    const size = pgsize * pgcount;
    if (iova + size > this.iasLimit || pa + size > this.oasLimit) return "ERANGE";
    if ((prot & RW) === 0) return "EINVAL";
    const lo = this.protLo(prot) | (leaf === 3 ? TABLE : VALID);
    const hi = this.protHi(prot);
    let done = 0;
    while (done < pgcount) {
      const n = this.mapRun(iova + done * pgsize, pa + done * pgsize, leaf, pgcount - done, lo, hi);
      if (n < 0) return n === RUN_EEXIST ? "EEXIST" : "ENOMEM";
      done += n;
    }
    return 0;
  }

  private mapRun(
    va: number,
    pa: number,
    leaf: number,
    count: number,
    lo: number,
    hi: number,
  ): number {
    const mem = this.mem;
    let tpa = this.rootPa;
    for (let lvl = this.start; lvl < leaf; lvl++) {
      const epa = tpa + this.index(va, lvl) * 8;
      // Direct reads where PhysMemory allows them (see `PhysMemory.wordsOf`), as iovaToPhys.
      let e: number;
      let ehi: number;
      const w = mem.wordsOf(epa);
      if (w !== undefined) {
        const j = mem.wordIndex(epa);
        e = w[j] as number;
        ehi = w[j + 1] as number;
      } else {
        e = mem.read64(epa);
        ehi = mem.hi;
      }
      if ((e & VALID) === 0) return this.mapNewPath(epa, lvl + 1, va, pa, leaf, count, lo, hi);
      if ((e & TYPE) === 0) return RUN_EEXIST;
      tpa =
        ehi === 0 && this.tableLowMask !== 0
          ? (e & this.tableLowMask) >>> 0
          : lpaeDescPa(e, ehi, this.granule);
    }
    return this.fillLeaves(tpa, va, pa, leaf, count, lo, hi);
  }

  private mapNewPath(
    epa: number,
    top: number,
    va: number,
    pa: number,
    leaf: number,
    count: number,
    lo: number,
    hi: number,
  ): number {
    const b = this.building;
    for (let lvl = top; lvl <= leaf; lvl++) {
      const f = this.frames.alloc(this.tableOrder);
      if (typeof f !== "number") {
        for (let l = top; l < lvl; l++) this.freeBlock(b[l] as number, this.tableOrder);
        return RUN_ENOMEM;
      }
      b[lvl] = f;
    }
    for (let lvl = top; lvl < leaf; lvl++) {
      this.linkTable((b[lvl] as number) + this.index(va, lvl) * 8, b[lvl + 1] as number);
    }
    const n = this.fillLeaves(b[leaf] as number, va, pa, leaf, count, lo, hi);
    this.linkTable(epa, b[top] as number);
    return n;
  }

  private linkTable(epa: number, child: number): void {
    const lo = lpaeDescAddrLo(child, this.granule) | TABLE;
    this.mem.write64(epa, lo, lpaeDescAddrHi(child) | this.nsTable);
  }

  /** Whether the entry `e` at `lvl` blocks a leaf there (a leaf, or a table with leaves). */
  private blocks(e: number, ehi: number, lvl: number): boolean {
    if ((e & VALID) === 0) return false;
    if (lvl === 3 || (e & TYPE) === 0) return true;
    return this.hasLeaf(lpaeDescPa(e, ehi, this.granule), lvl + 1);
  }

  private fillLeaves(
    tpa: number,
    va: number,
    pa: number,
    leaf: number,
    count: number,
    lo: number,
    hi: number,
  ): number {
    const mem = this.mem;
    const pgsize = this.size[leaf] as number;
    const idx0 = this.index(va, leaf);
    let n = Math.min(count, (this.idxMask[leaf] as number) + 1 - idx0);
    let clash = false;
    const group = this.contig ? (this.contN[leaf] as number) : 0;
    if (group > 0) {
      // Find the first clash before writing, so that no group gets the hint and is left partial.
      for (let k = 0; k < n; k++) {
        const e = mem.read64(tpa + (idx0 + k) * 8);
        if (this.blocks(e, mem.hi, leaf)) {
          n = k;
          clash = true;
          break;
        }
      }
    }
    const gran = this.granule;
    for (let k = 0; k < n; k++) {
      const epa = tpa + (idx0 + k) * 8;
      const a = pa + k * pgsize;
      let h = hi;
      if (group > 0) {
        const i = idx0 + k;
        const g = i - (i % group);
        const pa0 = a - (i - g) * pgsize;
        if (g >= idx0 && g + group <= idx0 + n && pa0 % (group * pgsize) === 0) h |= CONT_HI;
      }
      // The low half decides (V); the rare valid case reads the whole entry the checked way.
      const w = mem.wordsOf(epa);
      if (((w !== undefined ? (w[mem.wordIndex(epa)] as number) : mem.read64(epa)) & VALID) !== 0) {
        const old = mem.read64(epa);
        const ohi = mem.hi;
        if (this.blocks(old, ohi, leaf)) return RUN_EEXIST;
        // An empty table where the block goes: swap it for the leaf, drop walks cached through
        // it, then free it.
        const sub = lpaeDescPa(old, ohi, gran);
        mem.write64(epa, lpaeDescAddrLo(a, gran) | lo, lpaeDescAddrHi(a) | h);
        this.tlb?.tlbFlushWalk(va + k * pgsize, pgsize, gran);
        this.freeTable(sub, leaf + 1);
      } else {
        mem.write64(epa, lpaeDescAddrLo(a, gran) | lo, lpaeDescAddrHi(a) | h);
      }
      this.mappedBytes += pgsize;
    }
    return clash ? RUN_EEXIST : n;
  }

  /**
   * Unmap up to `pgcount` pages of `pgsize` from `iova`; returns the bytes unmapped, stopping at a
   * hole, at a block larger than `pgsize` (Linux since 6.13: "Unmap of a partial large IOPTE is
   * not allowed", 0 bytes) and at a contiguous group the range does not cover. A table at a
   * `pgsize` slot is cleared, its walk flushed and its frames freed. Each cleared entry goes to
   * `tlbAddPage` unless `gather` is null or queued. 0 for a size outside the bitmap, `pgcount` < 1,
   * a misaligned iova or one at or past 2^ias.
   *
   * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_unmap_pages
   */
  unmapPages(
    iova: number,
    pgsize: number,
    pgcount: number,
    gather: IommuIotlbGather | null,
  ): number {
    if (this.freed) bug("LpaePgtable: unmapPages after free()");
    const leaf = this.leafLevelOf(pgsize);
    if (leaf < 0 || !Number.isInteger(pgcount) || pgcount < 1) return 0;
    if (!Number.isInteger(iova) || iova < 0 || iova % pgsize !== 0 || iova >= this.iasLimit) {
      return 0;
    }
    const count = Math.min(pgcount, (this.iasLimit - iova) / pgsize);
    let done = 0;
    while (done < count) {
      const va = iova + done * pgsize;
      const want = Math.min(
        count - done,
        (this.idxMask[leaf] as number) + 1 - this.index(va, leaf),
      );
      const n = this.unmapRun(va, leaf, want, gather);
      done += n;
      if (n < want) break;
    }
    return done * pgsize;
  }

  private unmapRun(
    va: number,
    leaf: number,
    count: number,
    gather: IommuIotlbGather | null,
  ): number {
    const mem = this.mem;
    const gran = this.granule;
    let tpa = this.rootPa;
    for (let lvl = this.start; lvl < leaf; lvl++) {
      const e = mem.read64(tpa + this.index(va, lvl) * 8);
      if ((e & VALID) === 0 || (e & TYPE) === 0) return 0;
      tpa = lpaeDescPa(e, mem.hi, gran);
    }
    const tlb = this.tlb;
    const addPages = tlb !== null && gather !== null && !gather.queued;
    const pgsize = this.size[leaf] as number;
    const idx0 = this.index(va, leaf);
    const group = this.contN[leaf] as number;
    for (let k = 0; k < count; k++) {
      const epa = tpa + (idx0 + k) * 8;
      const e = mem.read64(epa);
      const ehi = mem.hi;
      if ((e & VALID) === 0) return k;
      if (leaf === 3 || (e & TYPE) === 0) {
        if ((ehi & CONT_HI) !== 0 && group > 0) {
          const i = idx0 + k;
          const g = i - (i % group);
          if (g < idx0 || g + group > idx0 + count) return k;
        }
        mem.write64(epa, 0, 0);
      } else {
        const sub = lpaeDescPa(e, ehi, gran);
        if (!this.hasLeaf(sub, leaf + 1)) return k;
        mem.write64(epa, 0, 0);
        tlb?.tlbFlushWalk(va + k * pgsize, pgsize, gran);
        this.freeTable(sub, leaf + 1);
      }
      if (addPages) tlb.tlbAddPage(gather, va + k * pgsize, pgsize);
    }
    return count;
  }

  /**
   * The physical address `iova` maps to, or -1 (outside 2^ias, or not mapped). Reads entries
   * directly through `PhysMemory.wordsOf` where it can, through `read64` elsewhere.
   *
   * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_iova_to_phys
   */
  iovaToPhys(iova: number): number {
    if (!(iova >= 0 && iova < this.walkLimit)) return -1;
    const mem = this.mem;
    const inv = this.inv;
    const mask = this.idxMask;
    let tpa = this.rootPa;
    let lvl = this.start;
    let lo = 0;
    let hi = 0;
    for (;;) {
      const epa = tpa + ((iova * (inv[lvl] as number)) & (mask[lvl] as number)) * 8;
      const w = mem.wordsOf(epa);
      if (w !== undefined) {
        const j = mem.wordIndex(epa);
        lo = w[j] as number;
        hi = w[j + 1] as number;
      } else {
        lo = mem.read64(epa);
        hi = mem.hi;
      }
      if ((lo & VALID) === 0) return -1;
      if (lvl === 3 || (lo & TYPE) === 0) break;
      // Tables below 4 GiB (the common case) need no high half and no LPA unpacking.
      tpa =
        hi === 0 && this.tableLowMask !== 0
          ? (lo & this.tableLowMask) >>> 0
          : lpaeDescPa(lo, hi, this.granule);
      lvl++;
    }
    const size = this.size[lvl] as number;
    const base = lpaeDescPa(lo, hi, this.granule);
    return size <= 0x4000_0000 ? base + (iova & (size - 1)) : base + (iova % size);
  }

  /**
   * Give every table frame back. The instance is dead afterwards: map and unmap are bugs,
   * lookups return -1.
   *
   * @kernel drivers/iommu/io-pgtable-arm.c arm_lpae_free_pgtable
   */
  free(): void {
    if (this.freed) bug("LpaePgtable: free() twice");
    this.freeTable(this.rootPa, this.start);
    this.freed = true;
    this.walkLimit = 0;
  }

  /** Whether table `tpa` (a non-root table at `level`) or a table below it holds a leaf. */
  private hasLeaf(tpa: number, level: number): boolean {
    const mem = this.mem;
    for (let i = 0; i < this.entries; i++) {
      const e = mem.read64(tpa + i * 8);
      if ((e & VALID) === 0) continue;
      if (level === 3 || (e & TYPE) === 0) return true;
      if (this.hasLeaf(lpaeDescPa(e, mem.hi, this.granule), level + 1)) return true;
    }
    return false;
  }

  /** Free table `tpa` at `level` and every table below it. */
  private freeTable(tpa: number, level: number): void {
    const root = level === this.start && tpa === this.rootPa;
    if (level < 3) {
      const mem = this.mem;
      const n = root ? this.geometry.pgdEntries : this.entries;
      for (let i = 0; i < n; i++) {
        const e = mem.read64(tpa + i * 8);
        if ((e & TABLE) !== TABLE) continue;
        this.freeTable(lpaeDescPa(e, mem.hi, this.granule), level + 1);
      }
    }
    this.freeBlock(tpa, root ? this.rootOrder : this.tableOrder);
  }

  private freeBlock(pa: number, order: number): void {
    const rc = this.frames.free(pa, order);
    if (rc !== 0) bug(`LpaePgtable: freeing table 0x${pa.toString(16)}: ${rc}`);
  }
}
