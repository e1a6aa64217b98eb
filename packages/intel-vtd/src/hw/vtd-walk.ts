// The VT-d page walks: second-stage tables, first-stage (x86-64) tables, and nested translation
// where every first-stage table address and the final output go through the second stage.
//
// A walk reads entries straight from memory, checks the reserved bits the spec defines for each
// level, sets first-stage Accessed/Dirty flags as the hardware does, and leaves its answer in
// the walker's result fields. It returns W_OK or a W_* fault; vtd-fault.ts turns that into the
// spec's fault reason for the unit's mode. Nothing here throws on any table contents.
//
// Reserved bits, per level (where the sources disagree, the choice is named):
// - second stage: address bits at or above HAW; PS in SS-PML5E/SS-PML4E and at a level CAP.SLLPS
//   lacks; address bits inside a large page; SNP (bit 11) in every table entry, and in a leaf unless
//   ECAP.SC - QEMU also accepts it in scalable mode, which this walker follows (VirtualBox, legacy
//   only, always reserves it); TM (bit 62) in every entry, reserved(0) since VT-d 3.2 (QEMU 9.2's
//   default; older units with ECAP.DT accepted it in leaves: `staleTm`). EMT/IPAT (bits 6:3) are
//   ignored, as QEMU and VirtualBox ignore them.
// - first stage: address bits at or above HAW (not nested: there they are guest addresses); PS in
//   PML5E/PML4E and in a PDPE without CAP.FL1GP; address bits 20:13 / 29:13 of a large page.
//   Bits 63:52 are not reserved: XD (bit 63) only takes execute permission away, with or without
//   the old PASID-entry NXE (QEMU's first-stage masks ignore 63:52; VirtualBox has no NXE rule).

import type { PhysMemory } from "@iommu-sim/iommu-core";
import {
  FS_PTE_A,
  FS_PTE_D,
  FS_PTE_P,
  FS_PTE_PS,
  FS_PTE_RW,
  FS_PTE_US,
  FS_PTE_XD_HI,
} from "../format/first-stage-pte.js";
import {
  SS_PTE_A,
  SS_PTE_ADDR_HI,
  SS_PTE_ADDR_LO,
  SS_PTE_D,
  SS_PTE_PS,
  SS_PTE_R,
  SS_PTE_SNP,
  SS_PTE_TM_HI,
  SS_PTE_W,
  SS_PTE_X,
} from "../format/second-stage-pte.js";
import {
  VTD_KIND_FIRST_STAGE,
  VTD_KIND_SECOND_STAGE,
  VTD_PERM_D,
  VTD_PERM_R,
  VTD_PERM_U,
  VTD_PERM_W,
  VTD_PERM_X,
  type VtdTranslationKind,
} from "./iotlb.js";
import type { VtdPagingStructureCache } from "./paging-structure-cache.js";

/** Walk outcomes. */
export const W_OK = 0;
/** An entry is not present (first stage: P=0; second stage: R=W=0). */
export const W_NOT_PRESENT = 1;
/** A reserved bit is set in a present entry. */
export const W_RESERVED = 2;
/** Reading an entry failed on the bus. */
export const W_FETCH = 3;
/** The input address is beyond the table's address width (or MGAW). */
export const W_ADDR_WIDTH = 4;
/** The first-stage input address is not canonical. */
export const W_NON_CANONICAL = 5;
/**
 * Nested: the first-stage entry needs its Accessed/Dirty flag set, but the second stage does not
 * let the unit write the page that holds it.
 */
export const W_NESTED_WRITE = 7;

/** Permission bits of a translation: the IOTLB's VTD_PERM_* (R, W, X, user, dirty). */
export const P_READ = VTD_PERM_R;
export const P_WRITE = VTD_PERM_W;
export const P_EXEC = VTD_PERM_X;
export const P_USER = VTD_PERM_U;
export const P_DIRTY = VTD_PERM_D;
/**
 * The second stage allows writes (always set without one). With P_WRITE it lets a nested
 * supervisor write with WPE=0 skip the first stage's R/W but not the second stage's W.
 */
export const P_SS_WRITE = 32;

/** Stages a fault can come from. */
export const STAGE_FIRST = 1;
export const STAGE_SECOND = 2;

// Entry bits, from the layouts (low word unless the name says HI).
const SS_R = SS_PTE_R;
const SS_W = SS_PTE_W;
const SS_X = SS_PTE_X;
const SS_PS = SS_PTE_PS;
const SS_A = SS_PTE_A;
const SS_D = SS_PTE_D;
/** SNP (bit 11, low word) and TM (bit 62, high word): reserved in every non-leaf entry. */
const SS_SNP = SS_PTE_SNP;
const SS_TM_HI = SS_PTE_TM_HI;
const FS_P = FS_PTE_P;
const FS_RW = FS_PTE_RW;
const FS_US = FS_PTE_US;
const FS_A = FS_PTE_A;
const FS_D = FS_PTE_D;
const FS_PS = FS_PTE_PS;
const FS_XD_HI = FS_PTE_XD_HI;
/** Address bits 31:12 of an entry (low word) and 51:32 (high word). */
const ADDR_LO = SS_PTE_ADDR_LO | 0;
const ADDR_HI = SS_PTE_ADDR_HI;

const TWO32 = 4294967296;
/** PAGES[l] = 512^(l-1): 4 KiB pages a level-l entry covers. */
const PAGES = new Float64Array([
  0,
  1,
  512,
  262144,
  134217728,
  68719476736,
  35184372088832,
  2 ** 54,
]);
/** Bits 20:12 (2 MiB) and 29:12 (1 GiB) of the low word: must be 0 in a large leaf's address. */
const LEAF_ALIGN_LO = new Int32Array([0, 0, 0x001ff000, 0x3ffff000 | 0, 0, 0, 0]);

/** The hardware facts a walker depends on. */
export interface VtdWalkerOptions {
  /** Host address width: table pointers and output addresses at or above 2^haw are reserved. */
  readonly haw: number;
  /** Second-stage large pages: bit 0 2 MiB, bit 1 1 GiB (CAP.SLLPS). */
  readonly sllps: number;
  /** First-stage 1 GiB pages (CAP.FL1GP). */
  readonly fl1gp: boolean;
  /** ECAP.SC: a second-stage leaf may set SNP (bit 11). Default false. */
  readonly snoopControl?: boolean;
  /**
   * A second-stage leaf may set TM (bit 62): only units of an architecture version before 3.2
   * that report ECAP.DT (QEMU's "stale TM"). Default false.
   */
  readonly staleTm?: boolean;
}

/**
 * One walker per unit, reused by every translation. Results of the last walk:
 * `pfn` the output frame of the requested page, `perm` P_* bits, `sizeShift` of the leaf,
 * and on a fault `stage`, `level` and, for nested walks, `nestedFetch` (the fault happened while
 * translating a first-stage table address through the second stage) and `flLevel`.
 */
export class VtdWalker {
  pfn = 0;
  perm = 0;
  sizeShift = 12;
  stage = 0;
  level = 0;
  nestedFetch = false;
  /** First-stage level whose table the second stage was translating when `nestedFetch`. */
  flLevel = 0;
  /** With `nestedFetch`: the table being translated was the first-stage root (FLPTR). */
  flRoot = false;
  /** Entries read by the walks since construction (for benchmarks and tests). */
  reads = 0;
  /** Set Accessed/Dirty flags as the hardware does (off for an oracle's side-effect-free walk). */
  updateFlags = true;
  /**
   * The paging-structure cache the next walk reads and fills (null: none), and the tag of that
   * walk: domain, PASID and kind (first- or second-stage). Nested walks do not use it.
   */
  psc: VtdPagingStructureCache | null = null;
  /**
   * Scalable-mode tables are in use (the unit sets this when SRTP latches TTM): a second-stage leaf
   * may then set SNP whatever ECAP.SC says, as QEMU accepts it there.
   */
  get scalable(): boolean {
    return this.isScalable;
  }
  set scalable(on: boolean) {
    this.isScalable = on;
    this.ssLeafRsvLo = on || this.snoopControl ? 0 : SS_SNP;
  }
  pscDid = 0;
  pscPasid = 0;
  pscKind: VtdTranslationKind = VTD_KIND_SECOND_STAGE;

  private readonly mem: PhysMemory;
  /** High-word mask of address bits at or above HAW (bits 51:haw of an entry). */
  private readonly hawHi: number;
  /** Low-word mask of the same, when haw < 32. */
  private readonly hawLo: number;
  private readonly ssLarge: number;
  private readonly fl1gp: boolean;
  private readonly snoopControl: boolean;
  private isScalable = false;
  /** Reserved bits of a second-stage leaf: SNP (low word) unless allowed, TM (high word) unless stale. */
  private ssLeafRsvLo: number;
  private readonly ssLeafRsvHi: number;

  // Second-stage results, kept apart from the first stage's for nested walks.
  private sPfn = 0;
  private sPerm = 0;
  private sShift = 12;
  private sLevel = 0;

  constructor(mem: PhysMemory, options: VtdWalkerOptions) {
    this.mem = mem;
    const haw = Math.max(12, Math.min(52, options.haw));
    this.hawHi = haw >= 32 ? (ADDR_HI & ~((1 << (haw - 32)) - 1)) >>> 0 : ADDR_HI;
    this.hawLo = haw >= 32 ? 0 : (ADDR_LO & ~((1 << haw) - 1)) >>> 0;
    this.ssLarge = options.sllps & 3;
    this.fl1gp = options.fl1gp;
    this.snoopControl = options.snoopControl ?? false;
    this.ssLeafRsvLo = this.snoopControl ? 0 : SS_SNP;
    this.ssLeafRsvHi = options.staleTm === true ? 0 : SS_TM_HI;
  }

  /**
   * Walk a second-stage table of `levels` levels (3, 4 or 5) for input page `vpn` (a number below
   * 2^52). `widthPages` is 2^(address width - 12): inputs at or above it fault W_ADDR_WIDTH.
   * `slade` sets Accessed (and Dirty for `write`) flags, as the PASID entry's SLADE asks;
   * `slee` gives execute permission from the X bit (otherwise from R).
   */
  walkSecondStage(
    root: number,
    levels: number,
    vpn: number,
    widthPages: number,
    write: boolean,
    slade: boolean,
    slee: boolean,
  ): number {
    const w = this.ssWalk(root, levels, vpn, widthPages, write, slade, slee, this.psc);
    if (w === W_OK) {
      this.pfn = this.sPfn;
      this.perm = this.sPerm;
      this.sizeShift = this.sShift;
    } else {
      this.stage = STAGE_SECOND;
      this.level = this.sLevel;
      this.nestedFetch = false;
    }
    return w;
  }

  private ssWalk(
    root: number,
    levels: number,
    vpn: number,
    widthPages: number,
    write: boolean,
    slade: boolean,
    slee: boolean,
    psc: VtdPagingStructureCache | null,
  ): number {
    const mem = this.mem;
    if (vpn >= widthPages) {
      this.sLevel = levels;
      return W_ADDR_WIDTH;
    }
    let table = root;
    let perm = P_READ | P_WRITE | P_EXEC | P_USER | P_DIRTY | P_SS_WRITE;
    let start = levels;
    if (psc !== null) {
      const i = psc.lookupDeepest(this.pscDid, this.pscPasid, VTD_KIND_SECOND_STAGE, vpn);
      if (i >= 0) {
        start = psc.levelOf(i) - 1;
        table = psc.tableFrameOf(i) * 4096;
        perm = psc.permOf(i);
      }
    }
    for (let level = start; level >= 1; level--) {
      this.sLevel = level;
      const pages = PAGES[level] as number;
      const index = Math.floor(vpn / pages) % 512;
      const at = table + index * 8;
      let lo: number;
      let hi: number;
      const words = mem.wordsOf(at);
      if (words !== undefined) {
        const i = mem.wordIndex(at);
        lo = words[i] as number;
        hi = words[i + 1] as number;
      } else {
        mem.busError = false;
        lo = mem.read64(at);
        hi = mem.hi;
        if (mem.busError) return W_FETCH;
      }
      this.reads++;
      if ((lo & (SS_R | SS_W)) === 0) return W_NOT_PRESENT;
      if ((hi & this.hawHi) !== 0 || (lo & this.hawLo) !== 0) return W_RESERVED;
      const leaf = level === 1 || (lo & SS_PS) !== 0;
      if (leaf && level > 1) {
        // PS is reserved above level 3, and at a level whose large page CAP.SLLPS lacks.
        if (level > 3 || (this.ssLarge & (1 << (level - 2))) === 0) return W_RESERVED;
        if ((lo & (LEAF_ALIGN_LO[level] as number)) !== 0) return W_RESERVED;
      }
      // SNP and TM: reserved in table entries; in leaves unless ECAP.SC (or scalable mode) / stale TM.
      if (leaf) {
        if ((lo & this.ssLeafRsvLo) !== 0 || (hi & this.ssLeafRsvHi) !== 0) return W_RESERVED;
      } else if ((lo & SS_SNP) !== 0 || (hi & SS_TM_HI) !== 0) return W_RESERVED;
      if ((lo & SS_R) === 0) perm &= ~P_READ;
      if ((lo & SS_W) === 0) perm &= ~(P_WRITE | P_SS_WRITE);
      // Without SLEE execute permission follows read permission.
      if ((lo & (slee ? SS_X : SS_R)) === 0) perm &= ~P_EXEC;
      if (slade) this.setFlags(at, lo, leaf, write, SS_A, SS_D);
      const addr = (hi & ADDR_HI) * TWO32 + ((lo & ADDR_LO) >>> 0);
      if (leaf) {
        this.sPfn = addr / 4096 + (vpn % pages);
        this.sShift = 12 + 9 * (level - 1);
        if (slade && !write && (lo & SS_D) === 0) perm &= ~P_DIRTY;
        this.sPerm = perm;
        return W_OK;
      }
      table = addr;
      if (psc !== null)
        psc.insert(
          this.pscDid,
          this.pscPasid,
          VTD_KIND_SECOND_STAGE,
          level,
          vpn,
          addr / 4096,
          perm,
        );
    }
    return W_RESERVED;
  }

  /**
   * Walk a first-stage (x86-64) table of 4 or 5 levels for input page `vpn`. With `nested`, every
   * table address and the output are guest-physical and go through the second-stage table
   * (`ssRoot`, `ssLevels`, `ssWidthPages`). `nxe` honours XD for execute permission.
   */
  walkFirstStage(
    root: number,
    levels: number,
    vpn: number,
    write: boolean,
    nested: boolean,
    ssRoot: number,
    ssLevels: number,
    ssWidthPages: number,
    supervisorWrite: boolean,
  ): number {
    const mem = this.mem;
    this.nestedFetch = false;
    this.stage = STAGE_FIRST;
    // Canonical: address bits 63:47 (4-level) or 63:56 (5-level) all equal.
    const top = levels === 5 ? Math.floor(vpn / 17592186044416) : Math.floor(vpn / 34359738368);
    const allOnes = levels === 5 ? 0xff : 0x1ffff;
    if (top !== 0 && top !== allOnes) {
      this.level = levels;
      return W_NON_CANONICAL;
    }
    let table = root;
    let perm = P_READ | P_WRITE | P_EXEC | P_USER | P_DIRTY | P_SS_WRITE;
    let start = levels;
    const psc = nested ? null : this.psc;
    // Nested first-stage entries hold guest addresses, checked by the second stage instead.
    const hawHi = nested ? 0 : this.hawHi;
    const hawLo = nested ? 0 : this.hawLo;
    if (psc !== null) {
      const i = psc.lookupDeepest(this.pscDid, this.pscPasid, VTD_KIND_FIRST_STAGE, vpn);
      if (i >= 0) {
        start = psc.levelOf(i) - 1;
        table = psc.tableFrameOf(i) * 4096;
        perm = psc.permOf(i);
      }
    }
    /** Nested: the second stage allows writes to the page of the current first-stage table. */
    let tableWritable = true;
    for (let level = start; level >= 1; level--) {
      this.level = level;
      if (nested) {
        const w = this.ssWalk(
          ssRoot,
          ssLevels,
          table / 4096,
          ssWidthPages,
          false,
          false,
          false,
          null,
        );
        if (w !== W_OK || (this.sPerm & P_READ) === 0) {
          this.nestedFetch = true;
          this.flLevel = level;
          this.flRoot = level === levels;
          this.stage = STAGE_SECOND;
          return w === W_OK ? W_NOT_PRESENT : w;
        }
        table = this.sPfn * 4096;
        tableWritable = (this.sPerm & P_WRITE) !== 0;
      }
      const pages = PAGES[level] as number;
      const index = Math.floor(vpn / pages) % 512;
      const at = table + index * 8;
      let lo: number;
      let hi: number;
      const words = mem.wordsOf(at);
      if (words !== undefined) {
        const i = mem.wordIndex(at);
        lo = words[i] as number;
        hi = words[i + 1] as number;
      } else {
        mem.busError = false;
        lo = mem.read64(at);
        hi = mem.hi;
        if (mem.busError) return W_FETCH;
      }
      this.reads++;
      if ((lo & FS_P) === 0) return W_NOT_PRESENT;
      if ((hi & hawHi) !== 0 || (lo & hawLo) !== 0) return W_RESERVED;
      const leaf = level === 1 || (lo & FS_PS) !== 0;
      if (leaf && level > 1) {
        if (level > 3 || (level === 3 && !this.fl1gp)) return W_RESERVED;
        // Bit 12 of a large leaf is its PAT bit; the bits above it up to the page size are reserved.
        if ((lo & (LEAF_ALIGN_LO[level] as number) & ~0x1000) !== 0) return W_RESERVED;
      }
      if ((lo & FS_RW) === 0) perm &= ~P_WRITE;
      if ((lo & FS_US) === 0) perm &= ~P_USER;
      if ((hi & FS_XD_HI) !== 0) perm &= ~P_EXEC;
      // A write the first stage refuses does not dirty the leaf.
      const dirties = write && ((perm & P_WRITE) !== 0 || supervisorWrite);
      // Nested: setting A (or D) writes a guest-physical page, which the second stage must allow
      // ("write permission error in first-level paging entry in Nested translation", 0x77).
      if (!tableWritable && ((lo & FS_A) === 0 || (leaf && dirties && (lo & FS_D) === 0))) {
        this.nestedFetch = true;
        this.flLevel = level;
        this.flRoot = level === levels;
        this.stage = STAGE_SECOND;
        return W_NESTED_WRITE;
      }
      this.setFlags(at, lo, leaf, dirties, FS_A, FS_D);
      if (leaf && !dirties && (lo & FS_D) === 0) perm &= ~P_DIRTY;
      const addr = (hi & ADDR_HI) * TWO32 + ((lo & ADDR_LO) >>> 0);
      if (leaf) {
        const shift = 12 + 9 * (level - 1);
        // A large leaf's bit 12 is PAT, not address.
        const base = level > 1 ? addr - (addr % (pages * 4096)) : addr;
        const gpfn = base / 4096 + (vpn % pages);
        if (!nested) {
          this.pfn = gpfn;
          this.perm = perm;
          this.sizeShift = shift;
          return W_OK;
        }
        const w = this.ssWalk(ssRoot, ssLevels, gpfn, ssWidthPages, write, false, false, null);
        if (w !== W_OK) {
          this.stage = STAGE_SECOND;
          this.level = this.sLevel;
          return w;
        }
        this.pfn = this.sPfn;
        this.perm = perm & this.sPerm;
        this.sizeShift = Math.min(shift, this.sShift);
        return W_OK;
      }
      table = addr;
      if (psc !== null)
        psc.insert(this.pscDid, this.pscPasid, VTD_KIND_FIRST_STAGE, level, vpn, addr / 4096, perm);
    }
    return W_RESERVED;
  }

  /** Set the Accessed flag (and Dirty on a leaf written) if clear, as one 32-bit store. */
  private setFlags(
    at: number,
    lo: number,
    leaf: boolean,
    write: boolean,
    a: number,
    d: number,
  ): void {
    if (!this.updateFlags) return;
    let want = lo | a;
    if (leaf && write) want |= d;
    if (want !== lo) this.mem.write32(at, want >>> 0);
  }
}
