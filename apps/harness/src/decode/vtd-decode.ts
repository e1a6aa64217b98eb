// Decoding the VT-d translation structures found in a memory image (root table, context tables,
// PASID directories and tables, first- and second-stage page tables) into one document: which
// devices translate how, and what each page table maps.
//
// Only what the VT-d specification defines is read, so tables written by any driver decode the
// same way. A malformed entry is reported in `problems`, with the fault the hardware would raise
// where there is one, and never thrown. This is an edge path: BigInt is used for printing, but
// page tables are enumerated with number arithmetic (page numbers stay below 2^45): a million
// leaves are walked in tens of milliseconds, and a million separate mappings built in about a
// second. The work is bounded whatever the image holds (looping or shared tables could otherwise
// describe 512^5 pages): budgets of table pages, mappings, PASID entries and problems, and a
// document that says when one of them cut it short (`truncated`).

import {
  agawToLevels,
  CONTEXT_ENTRY,
  CONTEXT_ENTRY_SIZE,
  FS_PTE,
  FS_PTE_ADDR_HI,
  FS_PTE_ADDR_LO,
  FS_PTE_P,
  FS_PTE_PS,
  FS_PTE_RW,
  FS_PTE_US,
  FS_PTE_XD_HI,
  PASID_DIR_ENTRY,
  PASID_DIR_ENTRY_SIZE,
  PASID_ENTRY,
  PASID_ENTRY_SIZE,
  PASID_TBL_ENTRIES,
  PGTT_FL,
  PGTT_NESTED,
  PGTT_PT,
  PGTT_SL,
  ROOT_ENTRY,
  ROOT_ENTRY_NR,
  ROOT_ENTRY_SIZE,
  SM_CONTEXT_ENTRY,
  SM_CONTEXT_ENTRY_SIZE,
  SM_ROOT_ENTRY,
  SS_PTE,
  SS_PTE_ADDR_HI,
  SS_PTE_ADDR_LO,
  SS_PTE_PS,
  SS_PTE_R,
  SS_PTE_SNP,
  SS_PTE_TM_HI,
  SS_PTE_W,
  TT_DEVTLB,
  TT_PASSTHROUGH,
  TT_UNTRANSLATED,
  VTD_FR,
} from "@iommu-sim/intel-vtd/format";
import { DEFAULT_VTD_CAPS, type VtdCapabilities } from "@iommu-sim/intel-vtd/hw";
import {
  type Field,
  fieldOf,
  getField,
  type Layout,
  loadLayout,
  type PhysMemory,
  reservedBitsSet,
  TWO32,
  toHex,
} from "@iommu-sim/iommu-core/platform";
import {
  addTableUser,
  count,
  type DecodedEntry,
  type DecodeImageCoverage,
  type DecodeProblemBase,
  decodedEntry,
  decodeLimit,
  formatBits,
  formatEntry,
  formatSize,
  formatSummary,
  formatTableNotes,
  formatUsers,
  layoutsByName,
  type MappingColumns,
  mappingRange,
  pushMappingLines,
  pushProblemLines,
  TableDecoder,
  type TableWalk,
} from "./decode-common.js";

/** How a device (RID or RID+PASID) has its requests translated. */
export type VtdTranslationType =
  | "second-stage"
  | "first-stage"
  | "nested"
  | "pass-through"
  | "blocked";

/** The stage a page table belongs to. */
export type VtdTableStage = "second-stage" | "first-stage";

/** One structure entry as found in memory (`root-entry`, `sm-context-entry`, `pasid-entry`...). */
export type VtdDecodedEntry = DecodedEntry;

/** One translation of a device: its RID (legacy mode) or one PASID (scalable mode). */
export interface VtdDecodedTranslation {
  /** Null in legacy mode; in scalable mode the PASID (RID_PASID for requests without one). */
  readonly pasid: number | null;
  readonly type: VtdTranslationType;
  /** Domain ID (DID of the context or PASID entry; 0 where the entry is unusable). */
  readonly did: number;
  /** Levels of `pageTable` (0 for pass-through and blocked). */
  readonly levels: number;
  /** Key in `pageTables` of the table walked first (first stage when nested), or null. */
  readonly pageTable: string | null;
  /** Scalable mode: this PASID serves requests without PASID (the context's RID_PASID). */
  readonly ridPasid?: boolean;
  /** Nested: key in `pageTables` of the second-stage table, and its levels. */
  readonly secondStageTable?: string;
  readonly secondStageLevels?: number;
  /** Blocked: the fault reason a request gets, and its VTD_FR name. */
  readonly faultReason?: number;
  readonly faultName?: string;
  /** Scalable mode: the PASID directory entry and PASID table entry (absent when not present). */
  readonly pasidDirEntry?: VtdDecodedEntry;
  readonly pasidEntry?: VtdDecodedEntry;
}

/** A device with a present context entry. */
export interface VtdDecodedDevice {
  /** Bus:device.function, two hex digits each but one for the function (`00:1f.3`). */
  readonly bdf: string;
  /** Source ID: bus << 8 | device << 3 | function. */
  readonly sid: number;
  /** Sorted by PASID. */
  readonly translations: readonly VtdDecodedTranslation[];
  /**
   * A limit left PASID entries of this device undecoded (`maxPasidEntries` or
   * `maxPasidTranslations`); its RID_PASID translation is always there.
   */
  readonly truncated: boolean;
  /** ATS translation requests are allowed (legacy TT = 1; scalable DTE with ECAP.DT). */
  readonly deviceTlb: boolean;
  readonly rootEntry: VtdDecodedEntry;
  readonly contextEntry: VtdDecodedEntry;
  /** Scalable mode: the PASID directory, its entry count (2^(PDTS+7)), and RID_PASID. */
  readonly pasidDirectory?: string;
  readonly pasidDirectoryEntries?: number;
  readonly ridPasid?: number;
}

/** A run of pages with consecutive output addresses and equal permissions. */
export interface VtdMapping {
  /** Input address: for first-stage tables the 64-bit canonical address. */
  readonly iova: string;
  /** Output address (for a nested first-stage table: a guest-physical address). */
  readonly pa: string;
  /** Bytes. */
  readonly size: number;
  /** Effective read and write permission (every level's bits ANDed, as the walk does). */
  readonly r: boolean;
  readonly w: boolean;
  /** First stage: execute allowed (no XD on the path) and user access allowed (U/S everywhere). */
  readonly x?: boolean;
  readonly u?: boolean;
  /** Second stage: the leaf's SNP (snoop) bit. */
  readonly snp?: boolean;
}

/** One page table, decoded once however many translations use it. */
export interface VtdDecodedPageTable {
  readonly stage: VtdTableStage;
  readonly levels: number;
  readonly mappings: readonly VtdMapping[];
  /** Physical address of the root (for a nested first stage: guest-physical). */
  readonly root: string;
  /** Table pages visited. */
  readonly tablePages: number;
  /** A limit stopped the enumeration (`maxTablePages` or `maxMappings`): mappings are missing. */
  readonly truncated: boolean;
  /**
   * Table pages this table points to that the image does not hold (a hole, or a page the dump
   * left out): read as zeros. Only with an image whose coverage is known, and only when not 0.
   */
  readonly notInImage?: number;
  /** Nested first stage: the second-stage table (key) that translates its table addresses. */
  readonly secondStageTable?: string;
}

/** Something in memory that the hardware would refuse or that makes no sense. */
export interface VtdDecodeProblem extends DecodeProblemBase {
  /** The fault reason a request using the entry gets, when it gets one. */
  readonly faultReason?: number;
}

/** What `decodeVtd` returns. */
export interface VtdDecodeDocument {
  readonly arch: "vtd";
  readonly mode: "legacy" | "scalable";
  readonly rootTable: string;
  readonly devices: readonly VtdDecodedDevice[];
  readonly pageTables: Readonly<Record<string, VtdDecodedPageTable>>;
  /** The RTADDR value decoded. */
  readonly rtaddr: string;
  readonly problems: readonly VtdDecodeProblem[];
  /**
   * A limit cut the decode short (see `VTD_DECODE_LIMITS`): some mappings, PASID entries or
   * problems are missing. The problems say which limit, and where.
   */
  readonly truncated: boolean;
}

/** The address ranges a memory image holds (`ImageCoverage`). */
export type VtdImageCoverage = DecodeImageCoverage;

/**
 * The default work limits of `decodeVtd`. A machine's real tables stay far below them; an image
 * with looping, shared or garbage tables reaches them in about a second and the document says so.
 */
export const VTD_DECODE_LIMITS = Object.freeze({
  /** Page-table pages visited, over all page tables (2^18 pages: 1 GiB of tables). */
  maxTablePages: 1 << 18,
  /** Mappings listed, over all page tables. */
  maxMappings: 1 << 20,
  /** PASID directory and PASID table entries read, over all devices. */
  maxPasidEntries: 1 << 22,
  /** PASID translations listed besides each device's RID_PASID one, over all devices. */
  maxPasidTranslations: 1 << 16,
  /** Problems listed; the rest are counted in a last one. */
  maxProblems: 1000,
});

/** Options of `decodeVtd`. */
export interface VtdDecodeOptions {
  /** The RTADDR register: RTA (bits 63:12) and TTM (bits 11:10, 0 legacy, 1 scalable). */
  readonly rtaddr: bigint | number;
  /** Only this source ID. */
  readonly device?: number;
  /** Only translations of this PASID (scalable mode; legacy translations have none). */
  readonly pasid?: number;
  /**
   * The unit's capabilities, for what depends on them (supported AGAWs, large pages, PGTTs,
   * PASID width). Default `VTD_PERMISSIVE_CAPS`: every mode accepted.
   */
  readonly caps?: VtdCapabilities;
  /** Host address width: pointers at or above 2^haw are reserved. Default 52. */
  readonly haw?: number;
  /** Enumerate the page tables (default true); false leaves `pageTables` empty. */
  readonly mappings?: boolean;
  /** Most table pages visited over all page tables (default `VTD_DECODE_LIMITS`). */
  readonly maxTablePages?: number;
  /** Most mappings listed over all page tables (default `VTD_DECODE_LIMITS`). */
  readonly maxMappings?: number;
  /** Most PASID directory and table entries read over all devices (default `VTD_DECODE_LIMITS`). */
  readonly maxPasidEntries?: number;
  /** Most PASID translations listed besides the RID_PASID ones (default `VTD_DECODE_LIMITS`). */
  readonly maxPasidTranslations?: number;
  /** Most problems listed (default `VTD_DECODE_LIMITS`). */
  readonly maxProblems?: number;
  /**
   * Which memory the image holds (`MemoryImage.coverage`); root, context and PASID structures and
   * page-table pages outside it are noted (they read as zeros). Default: all of memory.
   */
  readonly coverage?: VtdImageCoverage | null;
}

/**
 * A unit that accepts everything the tables of any driver may use: legacy and scalable mode,
 * first- and second-stage, nested and pass-through translation, 3- to 5-level second-stage and 4-
 * and 5-level first-stage tables, 2 MiB and 1 GiB pages at both stages, 20-bit PASIDs, ATS, page
 * requests, supervisor and execute requests, a non-zero RID_PASID, snoop control.
 */
export const VTD_PERMISSIVE_CAPS: VtdCapabilities = Object.freeze({
  ...DEFAULT_VTD_CAPS,
  sagaw: 0b01110,
  mgaw: 57,
  ers: true,
  srs: true,
  rps: true,
  slads: true,
});

// Entry bits, from the field tables.
const SS_PRESENT = (SS_PTE_R | SS_PTE_W) >>> 0;
const LEAF_ALIGN_LO = [0, 0, 0x001ff000, 0x3ffff000];
/** Bit 12 of a first-stage 2 MiB / 1 GiB leaf: its PAT bit, not an address bit. */
const FS_LEAF_PAT = 0x1000;
/** 4 KiB pages an entry at level l covers: 512^(l-1). */
const PAGES = [0, 1, 512, 262144, 134217728, 68719476736];

const R_P = fieldOf(ROOT_ENTRY, "P");
const R_CTP = fieldOf(ROOT_ENTRY, "CTP");
const SR_LP = fieldOf(SM_ROOT_ENTRY, "LP");
const SR_LCTP = fieldOf(SM_ROOT_ENTRY, "LCTP");
const SR_UP = fieldOf(SM_ROOT_ENTRY, "UP");
const SR_UCTP = fieldOf(SM_ROOT_ENTRY, "UCTP");
const C_P = fieldOf(CONTEXT_ENTRY, "P");
const C_TT = fieldOf(CONTEXT_ENTRY, "TT");
const C_SLPTPTR = fieldOf(CONTEXT_ENTRY, "SLPTPTR");
const C_AW = fieldOf(CONTEXT_ENTRY, "AW");
const C_DID = fieldOf(CONTEXT_ENTRY, "DID");
const SC_P = fieldOf(SM_CONTEXT_ENTRY, "P");
const SC_DTE = fieldOf(SM_CONTEXT_ENTRY, "DTE");
const SC_PASIDE = fieldOf(SM_CONTEXT_ENTRY, "PASIDE");
const SC_PDTS = fieldOf(SM_CONTEXT_ENTRY, "PDTS");
const SC_DIR = fieldOf(SM_CONTEXT_ENTRY, "PASIDDIRPTR");
const SC_RID_PASID = fieldOf(SM_CONTEXT_ENTRY, "RID_PASID");
const SC_RID_PRIV = fieldOf(SM_CONTEXT_ENTRY, "RID_PRIV");
const D_P = fieldOf(PASID_DIR_ENTRY, "P");
const D_TBL = fieldOf(PASID_DIR_ENTRY, "SMPTBLPTR");
const E_P = fieldOf(PASID_ENTRY, "P");
const E_AW = fieldOf(PASID_ENTRY, "AW");
const E_PGTT = fieldOf(PASID_ENTRY, "PGTT");
const E_SLPTPTR = fieldOf(PASID_ENTRY, "SLPTPTR");
const E_DID = fieldOf(PASID_ENTRY, "DID");
const E_FLPM = fieldOf(PASID_ENTRY, "FLPM");
const E_FLPTR = fieldOf(PASID_ENTRY, "FLPTR");
const E_SRE = fieldOf(PASID_ENTRY, "SRE");

const LAYOUTS = layoutsByName([
  ROOT_ENTRY,
  SM_ROOT_ENTRY,
  CONTEXT_ENTRY,
  SM_CONTEXT_ENTRY,
  PASID_DIR_ENTRY,
  PASID_ENTRY,
  SS_PTE,
  FS_PTE,
]);

const FR_NAMES: Readonly<Record<number, string>> = Object.freeze(
  Object.fromEntries(Object.entries(VTD_FR).map(([name, code]) => [code, name])),
);

/** The VTD_FR name of fault reason `code` ("unknown" for a code the model does not define). */
export function vtdFaultName(code: number): string {
  return FR_NAMES[code] ?? "unknown";
}

/** `bb:dd.f` of a source ID. */
export function formatBdf(sid: number): string {
  const hex2 = (v: number) => v.toString(16).padStart(2, "0");
  return `${hex2(sid >>> 8)}:${hex2((sid >>> 3) & 0x1f)}.${sid & 7}`;
}

/** A field of at most 32 bits read straight from memory (a present bit before a whole entry). */
function readField(mem: PhysMemory, pa: number, f: Field): number {
  return (mem.read32(pa + 4 * f.word) >>> f.shift) & f.mask;
}

/** A page table some translation uses, waiting to be enumerated. */
interface TableRef {
  key: string;
  root: number;
  stage: VtdTableStage;
  levels: number;
  /** Nested first stage: the second-stage root and levels translating its table addresses. */
  ssRoot: number;
  ssLevels: number;
  ssKey: string | undefined;
}

// Mapping flags.
const F_R = 1;
const F_W = 2;
const F_X = 4;
const F_U = 8;
const F_SNP = 16;

type Walk = TableWalk<TableRef>;

/** Filter on PASIDs: none, one PASID, or only the context entry's RID_PASID. */
type PasidFilter = number | "rid" | undefined;

/** What one scalable-mode device's PASID scan collects. */
interface PasidScan {
  readonly bdf: string;
  readonly at: number;
  readonly dir: number;
  readonly ridPasid: number;
  /** RID_PRIV: requests without PASID are supervisor requests. */
  readonly ridPriv: boolean;
  readonly paside: boolean;
  readonly pasidLimit: number;
  readonly translations: VtdDecodedTranslation[];
  sawRidPasid: boolean;
  /** Why the RID_PASID entry could not be reached, when its directory entry was found bad. */
  ridFault: number;
  /** Present PASID entries other requests cannot reach (PASIDE = 0). */
  unreachable: number;
  truncated: boolean;
}

class VtdDecoder extends TableDecoder<TableRef, VtdDecodedPageTable, VtdDecodeProblem> {
  readonly devices: VtdDecodedDevice[] = [];
  private readonly caps: VtdCapabilities;
  private readonly hawLimit: number;
  private readonly pasidBits: number;
  /** High-word and low-word masks of paging-entry address bits at or above HAW. */
  private readonly hawHi: number;
  private readonly hawLo: number;
  private readonly ssLeafRsvLo: number;
  private readonly ssLeafRsvHi: number;
  /** CAP.SLLPS: bit 0 2 MiB, bit 1 1 GiB second-stage pages. */
  private readonly sllps: number;
  // Budgets (besides the table-page and mapping ones): what is left of each limit.
  private readonly maxPasidEntries: number;
  private readonly maxPasidTranslations: number;
  private pasidEntriesLeft: number;
  private pasidTranslationsLeft: number;
  private pasidEntriesReported = false;
  private pasidTranslationsReported = false;

  constructor(
    mem: PhysMemory,
    readonly scalable: boolean,
    private readonly rta: number,
    private readonly device: number | undefined,
    private readonly pasidFilter: PasidFilter,
    options: VtdDecodeOptions,
  ) {
    super(mem, rta, options, VTD_DECODE_LIMITS);
    const caps = options.caps ?? VTD_PERMISSIVE_CAPS;
    this.caps = caps;
    const haw = Math.max(12, Math.min(52, options.haw ?? 52));
    this.hawLimit = 2 ** haw;
    this.pasidBits = caps.pasid ? caps.pss + 1 : 0;
    this.hawHi = haw >= 32 ? (SS_PTE_ADDR_HI & ~((2 ** (haw - 32) - 1) | 0)) >>> 0 : SS_PTE_ADDR_HI;
    this.hawLo = haw >= 32 ? 0 : (SS_PTE_ADDR_LO & ~(2 ** haw - 1)) >>> 0;
    // The walker's rules: SNP in a leaf needs ECAP.SC outside scalable mode; TM in a leaf only on
    // units before VT-d 3.2 with device-TLBs.
    this.ssLeafRsvLo = scalable || caps.snoopControl ? 0 : SS_PTE_SNP;
    const v = caps.version;
    const staleTm = caps.deviceTlb && (v.major < 3 || (v.major === 3 && v.minor < 2));
    this.ssLeafRsvHi = staleTm ? 0 : SS_PTE_TM_HI;
    this.sllps =
      (caps.superpages.includes("2M") ? 1 : 0) | (caps.superpages.includes("1G") ? 2 : 0);
    const L = VTD_DECODE_LIMITS;
    this.maxPasidEntries = decodeLimit(options.maxPasidEntries, L.maxPasidEntries);
    this.maxPasidTranslations = decodeLimit(options.maxPasidTranslations, L.maxPasidTranslations);
    this.pasidEntriesLeft = this.maxPasidEntries;
    this.pasidTranslationsLeft = this.maxPasidTranslations;
  }

  // --- Helpers -----------------------------------------------------------------------------------

  protected override codeOf(faultReason: number): { faultReason: number } {
    return { faultReason };
  }

  /**
   * Whether the image holds `bytes` at `pa`; if not, say so (the structure reads as zeros: a hole,
   * or a page the dump left out). Only with a known coverage.
   */
  private inImage(pa: number, bytes: number, structure: string, what: string): boolean {
    if (this.coverage === null || this.coverage.covers(pa, bytes)) return true;
    const msg = `${what} ${toHex(pa)} is not in the image (a hole, or a page the dump left out): read as zeros`;
    this.problem(pa, structure, msg);
    return false;
  }

  private load(layout: Layout, pa: number): Uint32Array {
    return loadLayout(this.mem, layout, pa);
  }

  /** A table pointer field (bits 63:12 of its qword) as a number; above 2^53 it is inexact. */
  private ptr(words: Uint32Array, f: { word: number }): number {
    return (words[f.word + 1] as number) * TWO32 + (((words[f.word] as number) & 0xfffff000) >>> 0);
  }

  /** A table is read differently at another stage, with other levels or another second stage. */
  protected override readingOf(ref: Omit<TableRef, "key">): string {
    return `${ref.root}/${ref.stage}/${ref.levels}/${ref.ssRoot}/${ref.ssLevels}`;
  }

  private ssTable(root: number, levels: number): string {
    return this.tableKey({
      root,
      stage: "second-stage",
      levels,
      ssRoot: -1,
      ssLevels: 0,
      ssKey: undefined,
    });
  }

  private fsTable(root: number, levels: number, ssRoot = -1, ssLevels = 0): string {
    const ssKey = ssRoot >= 0 ? this.ssTable(ssRoot, ssLevels) : undefined;
    return this.tableKey({ root, stage: "first-stage", levels, ssRoot, ssLevels, ssKey });
  }

  private blocked(
    pasid: number | null,
    did: number,
    faultReason: number,
    extra: Partial<VtdDecodedTranslation> = {},
  ): VtdDecodedTranslation {
    return {
      pasid,
      type: "blocked",
      did,
      levels: 0,
      pageTable: null,
      ...extra,
      faultReason,
      faultName: vtdFaultName(faultReason),
    };
  }

  // --- Legacy mode -------------------------------------------------------------------------------

  decodeLegacy(): void {
    for (let bus = 0; bus < ROOT_ENTRY_NR; bus++) {
      if (this.device !== undefined && this.device >>> 8 !== bus) continue;
      const rootAt = this.rta + bus * ROOT_ENTRY_SIZE;
      const rw = this.load(ROOT_ENTRY, rootAt);
      if (getField(R_P, rw) === 0) continue;
      const where = `root entry of bus ${bus.toString(16).padStart(2, "0")}`;
      const rsv = reservedBitsSet(ROOT_ENTRY, rw);
      const ctp = this.ptr(rw, R_CTP);
      if (rsv.length > 0) {
        // A scalable-mode root entry read in legacy mode shows its UP bit (64) as reserved.
        const hint = rsv.includes(64)
          ? " (bit 64 is UP in a scalable-mode root entry: should RTADDR.TTM be 1?)"
          : "";
        this.problem(
          rootAt,
          where,
          `reserved bits set: ${formatBits(rsv)}${hint}`,
          VTD_FR.ROOT_ENTRY_RESERVED,
        );
        continue;
      }
      if (ctp >= this.hawLimit) {
        const msg = `context-table pointer ${toHex(ctp)} is at or above the host address width`;
        this.problem(rootAt, where, msg, VTD_FR.ROOT_ENTRY_RESERVED);
        continue;
      }
      if (!this.inMemory(ctp, 4096)) {
        const msg = `context-table pointer ${toHex(ctp)} is outside memory`;
        this.problem(rootAt, where, msg, VTD_FR.CONTEXT_TABLE_ACCESS);
        continue;
      }
      if (!this.inImage(ctp, 4096, where, "context table")) continue;
      const rootEntry = decodedEntry(ROOT_ENTRY, rootAt, rw);
      for (let devfn = 0; devfn < 256; devfn++) {
        const sid = (bus << 8) | devfn;
        if (this.device !== undefined && this.device !== sid) continue;
        const at = ctp + devfn * CONTEXT_ENTRY_SIZE;
        const cw = this.load(CONTEXT_ENTRY, at);
        if (getField(C_P, cw) === 0) continue;
        const tt = getField(C_TT, cw);
        // Legacy translations have no PASID: a PASID filter leaves none.
        const rid = this.pasidFilter === undefined || this.pasidFilter === "rid";
        const translations = rid ? [this.legacyTranslation(sid, at, cw)] : [];
        this.devices.push({
          bdf: formatBdf(sid),
          sid,
          translations,
          truncated: false,
          deviceTlb: tt === TT_DEVTLB && this.caps.deviceTlb,
          rootEntry,
          contextEntry: decodedEntry(CONTEXT_ENTRY, at, cw),
        });
      }
    }
  }

  /** @spec Intel VT-d Architecture Specification 9.3 (context entry), 3.4 (legacy translation) */
  private legacyTranslation(sid: number, at: number, cw: Uint32Array): VtdDecodedTranslation {
    const where = `context entry of ${formatBdf(sid)}`;
    const did = getField(C_DID, cw);
    const tt = getField(C_TT, cw);
    const aw = getField(C_AW, cw);
    const slptptr = this.ptr(cw, C_SLPTPTR);
    const rsv = reservedBitsSet(CONTEXT_ENTRY, cw);
    const fr = VTD_FR.CONTEXT_ENTRY_RESERVED;
    if (rsv.length > 0) {
      this.problem(at, where, `reserved bits set: ${formatBits(rsv)}`, fr);
      return this.blocked(null, did, fr);
    }
    if (slptptr >= this.hawLimit) {
      this.problem(
        at,
        where,
        `SLPTPTR ${toHex(slptptr)} is at or above the host address width`,
        fr,
      );
      return this.blocked(null, did, fr);
    }
    const invalid = (msg: string) => {
      this.problem(at, where, msg, VTD_FR.CONTEXT_INVALID);
      return this.blocked(null, did, VTD_FR.CONTEXT_INVALID);
    };
    if (tt === TT_PASSTHROUGH) {
      if (!this.caps.passThrough) return invalid("TT 2 (pass-through) needs ECAP.PT");
      return { pasid: null, type: "pass-through", did, levels: 0, pageTable: null };
    }
    if (tt !== TT_UNTRANSLATED && tt !== TT_DEVTLB) return invalid(`TT ${tt} is reserved`);
    if (tt === TT_DEVTLB && !this.caps.deviceTlb) return invalid("TT 1 (device-TLB) needs ECAP.DT");
    if ((this.caps.sagaw & (1 << aw)) === 0) {
      return invalid(`AW ${aw} is not a supported AGAW (SAGAW ${toHex(this.caps.sagaw)})`);
    }
    const levels = agawToLevels(aw);
    return {
      pasid: null,
      type: "second-stage",
      did,
      levels,
      pageTable: this.ssTable(slptptr, levels),
    };
  }

  // --- Scalable mode -----------------------------------------------------------------------------

  decodeScalable(): void {
    for (let bus = 0; bus < ROOT_ENTRY_NR; bus++) {
      if (this.device !== undefined && this.device >>> 8 !== bus) continue;
      const rootAt = this.rta + bus * ROOT_ENTRY_SIZE;
      const rw = this.load(SM_ROOT_ENTRY, rootAt);
      const lp = getField(SR_LP, rw);
      const up = getField(SR_UP, rw);
      if (lp === 0 && up === 0) continue;
      const where = `scalable root entry of bus ${bus.toString(16).padStart(2, "0")}`;
      const rsv = reservedBitsSet(SM_ROOT_ENTRY, rw);
      if (rsv.length > 0) {
        const msg = `reserved bits set: ${formatBits(rsv)}`;
        this.problem(rootAt, where, msg, VTD_FR.SM_ROOT_ENTRY_RESERVED);
        continue;
      }
      const rootEntry = decodedEntry(SM_ROOT_ENTRY, rootAt, rw);
      for (const upper of [false, true]) {
        if ((upper ? up : lp) === 0) continue;
        // Only the half that serves the filtered device.
        if (this.device !== undefined && (this.device & 0x80) !== (upper ? 0x80 : 0)) continue;
        const ctp = this.ptr(rw, upper ? SR_UCTP : SR_LCTP);
        const name = upper ? "UCTP" : "LCTP";
        if (ctp >= this.hawLimit) {
          const msg = `${name} ${toHex(ctp)} is at or above the host address width`;
          this.problem(rootAt, where, msg, VTD_FR.SM_ROOT_ENTRY_RESERVED);
          continue;
        }
        if (!this.inMemory(ctp, 4096)) {
          const msg = `${name} ${toHex(ctp)} is outside memory`;
          this.problem(rootAt, where, msg, VTD_FR.SM_CONTEXT_ENTRY_ACCESS);
          continue;
        }
        const table = upper ? "upper context table" : "lower context table";
        if (!this.inImage(ctp, 4096, where, table)) continue;
        for (let i = 0; i < 128; i++) {
          const sid = (bus << 8) | (upper ? 0x80 : 0) | i;
          if (this.device !== undefined && this.device !== sid) continue;
          const at = ctp + i * SM_CONTEXT_ENTRY_SIZE;
          if (readField(this.mem, at, SC_P) === 0) continue;
          this.scalableDevice(sid, at, this.load(SM_CONTEXT_ENTRY, at), rootEntry);
        }
      }
    }
  }

  /** @spec Intel VT-d Architecture Specification 9.4 (scalable context entry), 3.4.3 */
  private scalableDevice(
    sid: number,
    at: number,
    cw: Uint32Array,
    rootEntry: VtdDecodedEntry,
  ): void {
    const bdf = formatBdf(sid);
    const where = `scalable context entry of ${bdf}`;
    const pdts = getField(SC_PDTS, cw);
    const dir = this.ptr(cw, SC_DIR);
    const ridPasid = getField(SC_RID_PASID, cw);
    const dirEntries = 2 ** (pdts + 7);
    // PASIDs at or above this limit fault (PDTS, and ECAP.PSS).
    const pasidLimit = 2 ** Math.min(pdts + 13, this.pasidBits);
    const scan: PasidScan = {
      bdf,
      at,
      dir,
      ridPasid,
      ridPriv: getField(SC_RID_PRIV, cw) !== 0,
      paside: getField(SC_PASIDE, cw) !== 0,
      pasidLimit,
      translations: [],
      sawRidPasid: false,
      ridFault: 0,
      unreachable: 0,
      truncated: false,
    };
    const finish = () =>
      this.devices.push({
        bdf,
        sid,
        translations: scan.translations.sort((a, b) => (a.pasid as number) - (b.pasid as number)),
        truncated: scan.truncated,
        deviceTlb: getField(SC_DTE, cw) !== 0 && this.caps.deviceTlb,
        rootEntry,
        contextEntry: decodedEntry(SM_CONTEXT_ENTRY, at, cw),
        pasidDirectory: toHex(dir),
        pasidDirectoryEntries: dirEntries,
        ridPasid,
      });
    const deviceBlocked = (fr: number, msg: string) => {
      this.problem(at, where, msg, fr);
      if (this.wanted(scan, ridPasid))
        scan.translations.push(this.blocked(ridPasid, 0, fr, { ridPasid: true }));
      finish();
    };
    const rsv = reservedBitsSet(SM_CONTEXT_ENTRY, cw);
    if (rsv.length > 0) {
      deviceBlocked(VTD_FR.SM_CONTEXT_ENTRY_RESERVED, `reserved bits set: ${formatBits(rsv)}`);
      return;
    }
    if (dir >= this.hawLimit) {
      const msg = `PASIDDIRPTR ${toHex(dir)} is at or above the host address width`;
      deviceBlocked(VTD_FR.SM_CONTEXT_ENTRY_RESERVED, msg);
      return;
    }
    if (ridPasid !== 0 && !this.caps.rps) {
      deviceBlocked(VTD_FR.SM_RID_PASID_ERROR, `RID_PASID ${ridPasid} is not 0 and ECAP.RPS is 0`);
      return;
    }
    const dirLimit = Math.min(dirEntries, Math.ceil(pasidLimit / PASID_TBL_ENTRIES));
    let first = 0;
    let last = dirLimit - 1;
    if (typeof this.pasidFilter === "number" || this.pasidFilter === "rid") {
      const only = this.pasidFilter === "rid" ? ridPasid : this.pasidFilter;
      first = Math.floor(only / PASID_TBL_ENTRIES);
      last = Math.min(first, dirLimit - 1);
    }
    const dirBytes = dirLimit * PASID_DIR_ENTRY_SIZE;
    if (!this.inMemory(dir, dirBytes)) {
      this.problem(at, where, `PASID directory ${toHex(dir)} is outside memory`);
      scan.ridFault = VTD_FR.SM_PASID_DIR_ENTRY_ACCESS;
    } else {
      // A directory page the image lacks (dumps leave out pages of zeros) reads as zeros: noted,
      // and the pages that are there are still read.
      const partly = this.coverage?.covers(dir, Math.min(dirBytes, 4096)) === true;
      this.inImage(dir, dirBytes, where, partly ? "part of PASID directory" : "PASID directory");
      for (let d = first; d <= last && !scan.truncated; d++) this.scanDirEntry(scan, d, false);
      // The budget ran out before the RID_PASID entry: read just that one, whatever it costs.
      const ridDir = Math.floor(ridPasid / PASID_TBL_ENTRIES);
      if (scan.truncated && !scan.sawRidPasid && ridDir < dirLimit && this.wanted(scan, ridPasid))
        this.scanDirEntry(scan, ridDir, true);
    }
    if (!scan.sawRidPasid && this.wanted(scan, ridPasid)) {
      // Requests without PASID find no usable PASID entry: the device is blocked for them.
      let fr = scan.ridFault === 0 ? VTD_FR.SM_PASID_DIR_ENTRY_NOT_PRESENT : scan.ridFault;
      if (ridPasid >= pasidLimit) fr = VTD_FR.SM_PASID_TOO_LARGE;
      scan.translations.push(this.blocked(ridPasid, 0, fr, { ridPasid: true }));
    }
    if (scan.unreachable > 0) {
      const n = scan.unreachable;
      const msg = `PASIDE is 0: ${n} present PASID entr${n === 1 ? "y is" : "ies are"} unreachable (requests with PASID fault)`;
      this.problem(at, where, msg, VTD_FR.SM_PASIDE_CLEAR);
    }
    finish();
  }

  /** Whether the PASID filter keeps `pasid` of the device `scan` describes. */
  private wanted(scan: PasidScan, pasid: number): boolean {
    const f = this.pasidFilter;
    return f === undefined || (f === "rid" ? pasid === scan.ridPasid : pasid === f);
  }

  /** Mark the device's PASID list cut short by a limit, saying so once per limit. */
  private pasidLimitReached(scan: PasidScan, limit: "entries" | "translations"): void {
    scan.truncated = true;
    this.truncated = true;
    const where = `scalable context entry of ${scan.bdf}`;
    if (limit === "entries" && !this.pasidEntriesReported) {
      this.pasidEntriesReported = true;
      const msg = `stopped reading PASID directories and tables after ${this.maxPasidEntries} entries (limit maxPasidEntries): from this device on, only RID_PASID translations are certain to be listed`;
      this.problem(scan.at, where, msg);
    }
    if (limit === "translations" && !this.pasidTranslationsReported) {
      this.pasidTranslationsReported = true;
      const msg = `stopped listing PASID translations after ${this.maxPasidTranslations} (limit maxPasidTranslations): from this device on, only RID_PASID translations are listed`;
      this.problem(scan.at, where, msg);
    }
  }

  /**
   * Directory entry `d` of the device `scan` describes, and the PASID entries of its table. Each
   * entry read is charged to the PASID budget; `ridOnly` reads just the RID_PASID entry, free.
   */
  private scanDirEntry(scan: PasidScan, d: number, ridOnly: boolean): void {
    const mem = this.mem;
    const { bdf, ridPasid } = scan;
    const isRidDir = d === Math.floor(ridPasid / PASID_TBL_ENTRIES);
    if (!ridOnly) {
      if (this.pasidEntriesLeft <= 0) {
        this.pasidLimitReached(scan, "entries");
        return;
      }
      this.pasidEntriesLeft--;
    }
    const deAt = scan.dir + d * PASID_DIR_ENTRY_SIZE;
    if (readField(mem, deAt, D_P) === 0) return;
    const dw = this.load(PASID_DIR_ENTRY, deAt);
    const range = `PASIDs ${d * 64}-${d * 64 + 63}`;
    const dwhere = `PASID directory entry of ${bdf} (${range})`;
    const drsv = reservedBitsSet(PASID_DIR_ENTRY, dw);
    const table = this.ptr(dw, D_TBL);
    let bad = "";
    if (drsv.length > 0) bad = `reserved bits set: ${formatBits(drsv)}`;
    else if (table >= this.hawLimit)
      bad = `SMPTBLPTR ${toHex(table)} is at or above the host address width`;
    if (bad !== "") {
      this.problem(deAt, dwhere, bad, VTD_FR.SM_PASID_DIR_ENTRY_RESERVED);
      if (isRidDir) scan.ridFault = VTD_FR.SM_PASID_DIR_ENTRY_RESERVED;
      return;
    }
    if (!this.inMemory(table, 4096)) {
      this.problem(deAt, dwhere, `PASID table ${toHex(table)} is outside memory`);
      if (isRidDir) scan.ridFault = VTD_FR.SM_PASID_ENTRY_ACCESS;
      return;
    }
    // A PASID table outside the image reads as zeros, as the unit reads it: its RID_PASID entry is
    // then not present (fault 0x59), not unreachable.
    this.inImage(table, 4096, dwhere, "PASID table");
    const pasidDirEntry = decodedEntry(PASID_DIR_ENTRY, deAt, dw);
    for (let t = 0; t < PASID_TBL_ENTRIES; t++) {
      const pasid = d * PASID_TBL_ENTRIES + t;
      if (pasid >= scan.pasidLimit) break;
      const isRid = pasid === ridPasid;
      if (ridOnly ? !isRid : !this.wanted(scan, pasid)) continue;
      if (!isRid) {
        if (this.pasidEntriesLeft <= 0) {
          this.pasidLimitReached(scan, "entries");
          return;
        }
        this.pasidEntriesLeft--;
      }
      const eAt = table + t * PASID_ENTRY_SIZE;
      if (readField(mem, eAt, E_P) === 0) {
        if (isRid) {
          scan.sawRidPasid = true;
          const fr = VTD_FR.SM_PASID_ENTRY_NOT_PRESENT;
          scan.translations.push(this.blocked(pasid, 0, fr, { ridPasid: true, pasidDirEntry }));
        }
        continue;
      }
      if (!isRid) {
        if (this.pasidTranslationsLeft <= 0) {
          this.pasidLimitReached(scan, "translations");
          continue;
        }
        this.pasidTranslationsLeft--;
      }
      const ew = this.load(PASID_ENTRY, eAt);
      if (isRid) scan.sawRidPasid = true;
      else if (!scan.paside) scan.unreachable++;
      let tr = this.pasidTranslation(bdf, pasid, eAt, ew);
      if (
        isRid &&
        scan.ridPriv &&
        tr.type !== "blocked" &&
        !(getField(E_SRE, ew) && this.caps.srs)
      ) {
        // RID_PRIV makes requests without PASID supervisor requests, which need SRE (and ECAP.SRS).
        const fr = VTD_FR.SM_SRE_CLEAR;
        const msg = `RID_PRIV of the context entry makes requests without PASID supervisor requests, and ${this.caps.srs ? "SRE is 0" : "ECAP.SRS is 0"}: they fault`;
        this.problem(eAt, `PASID entry of ${bdf} PASID ${pasid}`, msg, fr);
        tr = this.blocked(pasid, tr.did, fr);
      }
      scan.translations.push({
        ...tr,
        ...(isRid ? { ridPasid: true } : {}),
        pasidDirEntry,
        pasidEntry: decodedEntry(PASID_ENTRY, eAt, ew),
      });
    }
  }

  /** @spec Intel VT-d Architecture Specification 9.6 (PASID table entry) */
  private pasidTranslation(
    bdf: string,
    pasid: number,
    at: number,
    ew: Uint32Array,
  ): VtdDecodedTranslation {
    const where = `PASID entry of ${bdf} PASID ${pasid}`;
    const did = getField(E_DID, ew);
    const pgtt = getField(E_PGTT, ew);
    const aw = getField(E_AW, ew);
    const flpm = getField(E_FLPM, ew);
    const slptptr = this.ptr(ew, E_SLPTPTR);
    const flptr = this.ptr(ew, E_FLPTR);
    const caps = this.caps;
    const rsvFr = VTD_FR.SM_PASID_ENTRY_RESERVED;
    const rsv = reservedBitsSet(PASID_ENTRY, ew);
    if (rsv.length > 0) {
      this.problem(at, where, `reserved bits set: ${formatBits(rsv)}`, rsvFr);
      return this.blocked(pasid, did, rsvFr);
    }
    const usesFs = pgtt === PGTT_FL || pgtt === PGTT_NESTED;
    const usesSs = pgtt === PGTT_SL || pgtt === PGTT_NESTED;
    if (usesFs && flptr >= this.hawLimit) {
      this.problem(at, where, `FLPTR ${toHex(flptr)} is at or above the host address width`, rsvFr);
      return this.blocked(pasid, did, rsvFr);
    }
    if (usesSs && slptptr >= this.hawLimit) {
      const msg = `SLPTPTR ${toHex(slptptr)} is at or above the host address width`;
      this.problem(at, where, msg, rsvFr);
      return this.blocked(pasid, did, rsvFr);
    }
    let why = "";
    switch (pgtt) {
      case PGTT_FL:
        if (!caps.flts) why = "PGTT 1 (first-stage) needs ECAP.FLTS";
        break;
      case PGTT_SL:
        if (!caps.slts) why = "PGTT 2 (second-stage) needs ECAP.SLTS";
        break;
      case PGTT_NESTED:
        if (!(caps.nest && caps.flts && caps.slts))
          why = "PGTT 3 (nested) needs ECAP.NEST, FLTS and SLTS";
        break;
      case PGTT_PT:
        if (!caps.passThrough) why = "PGTT 4 (pass-through) needs ECAP.PT";
        break;
      default:
        why = `PGTT ${pgtt} is reserved`;
    }
    if (why === "" && usesFs && flpm > 1) why = `FLPM ${flpm} is reserved`;
    if (why === "" && usesFs && flpm === 1 && !caps.firstStage5Level)
      why = "FLPM 1 (5-level) needs CAP.FL5LP";
    if (why === "" && usesSs && (caps.sagaw & (1 << aw)) === 0)
      why = `AW ${aw} is not a supported AGAW (SAGAW ${toHex(caps.sagaw)})`;
    if (why !== "") {
      this.problem(at, where, why, VTD_FR.SM_PASID_ENTRY_INVALID);
      return this.blocked(pasid, did, VTD_FR.SM_PASID_ENTRY_INVALID);
    }
    const fsLevels = flpm === 1 ? 5 : 4;
    const ssLevels = agawToLevels(aw);
    switch (pgtt) {
      case PGTT_FL:
        return {
          pasid,
          type: "first-stage",
          did,
          levels: fsLevels,
          pageTable: this.fsTable(flptr, fsLevels),
        };
      case PGTT_SL:
        return {
          pasid,
          type: "second-stage",
          did,
          levels: ssLevels,
          pageTable: this.ssTable(slptptr, ssLevels),
        };
      case PGTT_NESTED:
        return {
          pasid,
          type: "nested",
          did,
          levels: fsLevels,
          pageTable: this.fsTable(flptr, fsLevels, slptptr, ssLevels),
          secondStageTable: this.ssTable(slptptr, ssLevels),
          secondStageLevels: ssLevels,
        };
      default:
        return { pasid, type: "pass-through", did, levels: 0, pageTable: null };
    }
  }

  // --- Page tables -------------------------------------------------------------------------------

  protected override enumerate(ref: TableRef): VtdDecodedPageTable {
    const walk = this.startWalk(ref);
    if (ref.stage === "second-stage") this.walkSs(walk, ref.root, ref.levels, 0, F_R | F_W);
    else this.walkFs(walk, ref.root, ref.levels, 0, F_R | F_W | F_X | F_U);
    const runs = this.finishWalk(walk);
    const mappings: VtdMapping[] = [];
    const fs = ref.stage === "first-stage";
    // Canonical first-stage addresses: bits above 47 (56) copy bit 47 (56).
    const signBit = 2 ** (ref.levels === 5 ? 56 : 47);
    const upper = fs ? (ref.levels === 5 ? 0xfe00000000000000n : 0xffff000000000000n) : 0n;
    for (let i = 0; i < runs.length; i += 4) {
      const vpn = runs[i] as number;
      const pfn = runs[i + 1] as number;
      const pages = runs[i + 2] as number;
      const flags = runs[i + 3] as number;
      const iova = vpn * 4096;
      const iovaText = fs && iova >= signBit ? toHex((BigInt(vpn) << 12n) | upper) : toHex(iova);
      const pa = toHex(pfn * 4096);
      const size = pages * 4096;
      const r = (flags & F_R) !== 0;
      const w = (flags & F_W) !== 0;
      // Literal objects of one shape each (no spread): a million of them must stay cheap.
      mappings.push(
        fs
          ? { iova: iovaText, pa, size, r, w, x: (flags & F_X) !== 0, u: (flags & F_U) !== 0 }
          : { iova: iovaText, pa, size, r, w, snp: (flags & F_SNP) !== 0 },
      );
    }
    return {
      stage: ref.stage,
      levels: ref.levels,
      mappings,
      root: toHex(ref.root),
      tablePages: walk.tablePages,
      truncated: walk.stopped,
      ...(walk.notInImage === 0 ? {} : { notInImage: walk.notInImage }),
      ...(ref.ssKey === undefined ? {} : { secondStageTable: ref.ssKey }),
    };
  }

  protected override tableName(ref: TableRef): string {
    const nested = ref.ssKey === undefined ? "" : ` (nested in ${ref.ssKey})`;
    return `${ref.stage} table ${ref.key}${nested}`;
  }

  /**
   * Count a table page; false when it is not to be read: a limit is spent (said once), it is
   * outside memory (the access fault), or outside the image (counted: it reads as zeros).
   */
  private enter(walk: Walk, table: number, level: number): boolean {
    if (!this.mayRead(walk, table)) return false;
    if (!this.inMemory(table, 4096)) {
      const fr = this.scalable
        ? walk.ref.stage === "second-stage"
          ? VTD_FR.SM_SS_ENTRY_ACCESS
          : VTD_FR.SM_FS_ENTRY_ACCESS
        : VTD_FR.PAGING_ENTRY_ACCESS;
      this.tableProblem(walk, table, level, `table ${toHex(table)} is outside memory`, fr, true);
      return false;
    }
    if (this.coverage !== null && !this.coverage.covers(table, 4096)) {
      walk.notInImage++;
      return false;
    }
    this.chargePage(walk);
    return true;
  }

  /**
   * Why a present second-stage entry at `level` is refused, or "" when it is usable. The rules are
   * the walker's (vtd-walk.ts): address bits at or above HAW; PS above level 3 or at a level
   * CAP.SLLPS lacks; address bits inside a large page; SNP and TM outside leaves, and in leaves
   * unless allowed.
   */
  private ssRefused(lo: number, hi: number, level: number): string {
    if ((hi & this.hawHi) !== 0 || (lo & this.hawLo) !== 0) {
      return "address bits at or above the host address width";
    }
    const leaf = level === 1 || (lo & SS_PTE_PS) !== 0;
    if (leaf && level > 1) {
      if (level > 3) return `PS set at level ${level}`;
      if ((this.sllps & (1 << (level - 2))) === 0)
        return "PS set but CAP.SLLPS lacks this page size";
      if ((lo & (LEAF_ALIGN_LO[level] as number)) !== 0) {
        return "address bits inside the large page are set";
      }
    }
    if (leaf) {
      if ((lo & this.ssLeafRsvLo) !== 0) return "SNP set without ECAP.SC";
      if ((hi & this.ssLeafRsvHi) !== 0) return "TM set";
    } else if ((lo & SS_PTE_SNP) !== 0 || (hi & SS_PTE_TM_HI) !== 0) {
      return "SNP or TM set in a non-leaf entry";
    }
    return "";
  }

  /**
   * Second-stage table at `table`, `level`, covering input pages from `base`; entries the walker
   * refuses (`ssRefused`) are reported and left out.
   *
   * @spec Intel VT-d Architecture Specification 9.8 (second-stage paging entries)
   */
  private walkSs(walk: Walk, table: number, level: number, base: number, perm: number) {
    if (!this.enter(walk, table, level)) return;
    const mem = this.mem;
    const pages = PAGES[level] as number;
    const fr = this.scalable ? VTD_FR.SM_SS_ENTRY_RESERVED : VTD_FR.PAGING_ENTRY_RESERVED;
    for (let i = 0; i < 512; i++) {
      const at = table + i * 8;
      const lo = mem.read64(at);
      const hi = mem.hi;
      if ((lo & SS_PRESENT) === 0) continue;
      const refused = this.ssRefused(lo, hi, level);
      if (refused !== "") {
        this.tableProblem(walk, at, level, refused, fr);
        continue;
      }
      const leaf = level === 1 || (lo & SS_PTE_PS) !== 0;
      let p = perm;
      if ((lo & SS_PTE_R) === 0) p &= ~F_R;
      if ((lo & SS_PTE_W) === 0) p &= ~F_W;
      const addr = (hi & SS_PTE_ADDR_HI) * TWO32 + ((lo & SS_PTE_ADDR_LO) >>> 0);
      const vpn = base + i * pages;
      if (leaf) {
        const flags = p | ((lo & SS_PTE_SNP) !== 0 ? F_SNP : 0);
        if (!this.leaf(walk, at, vpn, addr / 4096, pages, flags)) return;
      } else {
        this.walkSs(walk, addr, level - 1, vpn, p);
        if (walk.stopped) return;
      }
    }
  }

  /**
   * The host frame second-stage table `root` (`levels`) maps guest frame `gpfn` to with read
   * permission: the nested walk's translation of a first-stage table address (`root` says it is
   * the first-stage root). Returns the frame, or minus the fault reason the walker gives, in its
   * order: input beyond the table's width 0x74; an entry with R = W = 0 0x75 (root) / 0x76; an
   * entry `ssRefused` refuses 0x7a; R clear on the path 0x75 / 0x76.
   */
  private ssLookup(root: number, levels: number, gpfn: number, isRoot: boolean): number {
    const mem = this.mem;
    const noRead = isRoot ? VTD_FR.SM_FS_ROOT_READ : VTD_FR.SM_FS_ENTRY_READ;
    if (gpfn >= 2 ** (9 * levels)) return -VTD_FR.SM_FS_ENTRY_ADDR_BEYOND_MGAW;
    let table = root;
    let readable = true;
    for (let level = levels; level >= 1; level--) {
      if (!this.inMemory(table, 4096)) return -VTD_FR.SM_SS_ENTRY_ACCESS;
      const pages = PAGES[level] as number;
      const at = table + (Math.floor(gpfn / pages) % 512) * 8;
      const lo = mem.read64(at);
      const hi = mem.hi;
      if ((lo & SS_PRESENT) === 0) return -noRead;
      if (this.ssRefused(lo, hi, level) !== "") return -VTD_FR.SM_SS_ENTRY_RESERVED;
      if ((lo & SS_PTE_R) === 0) readable = false;
      const addr = (hi & SS_PTE_ADDR_HI) * TWO32 + ((lo & SS_PTE_ADDR_LO) >>> 0);
      if (level === 1 || (lo & SS_PTE_PS) !== 0) {
        return readable ? addr / 4096 + (gpfn % pages) : -noRead;
      }
      table = addr;
    }
    return -noRead;
  }

  /**
   * First-stage (x86-64) table at `table` (for a nested table: guest-physical, translated through
   * the second stage first), `level`, covering input pages from `base`. Reserved-bit rules are the
   * walker's: address bits at or above HAW (not for nested tables, whose addresses are guest
   * addresses); PS above level 3, or at level 3 without CAP.FL1GP; address bits 20:13 / 29:13 of
   * a large page (bit 12 is its PAT).
   *
   * @spec Intel VT-d Architecture Specification 9.7 (first-stage paging entries)
   */
  private walkFs(walk: Walk, gTable: number, level: number, base: number, perm: number) {
    const ref = walk.ref;
    const nested = ref.ssRoot >= 0;
    let table = gTable;
    if (nested) {
      const hpfn = this.ssLookup(ref.ssRoot, ref.ssLevels, gTable / 4096, level === ref.levels);
      if (hpfn < 0) {
        const fr = -hpfn;
        const why =
          fr === VTD_FR.SM_SS_ENTRY_RESERVED
            ? "an entry the walker refuses"
            : fr === VTD_FR.SM_FS_ENTRY_ADDR_BEYOND_MGAW
              ? "an address beyond its width"
              : fr === VTD_FR.SM_SS_ENTRY_ACCESS
                ? "a table outside memory"
                : "no read permission";
        const msg = `table at guest-physical ${toHex(gTable)} is not mapped readable by the second stage (${why})`;
        this.tableProblem(walk, gTable, level, msg, fr, true);
        return;
      }
      table = hpfn * 4096;
    }
    if (!this.enter(walk, table, level)) return;
    const mem = this.mem;
    const pages = PAGES[level] as number;
    const hawHi = nested ? 0 : this.hawHi;
    const hawLo = nested ? 0 : this.hawLo;
    const fr = VTD_FR.SM_FS_ENTRY_RESERVED;
    const fl1gp = this.caps.firstStage1G;
    for (let i = 0; i < 512; i++) {
      // The lower and upper canonical halves are not contiguous: never merge across.
      if (level === ref.levels && i === 256) walk.out.flush();
      const at = table + i * 8;
      const lo = mem.read64(at);
      const hi = mem.hi;
      if ((lo & FS_PTE_P) === 0) continue;
      if ((hi & hawHi) !== 0 || (lo & hawLo) !== 0) {
        this.tableProblem(walk, at, level, "address bits at or above the host address width", fr);
        continue;
      }
      const leaf = level === 1 || (lo & FS_PTE_PS) !== 0;
      if (leaf && level > 1) {
        if (level > 3 || (level === 3 && !fl1gp)) {
          const msg =
            level > 3 ? `PS set at level ${level}` : "PS set at level 3 without CAP.FL1GP";
          this.tableProblem(walk, at, level, msg, fr);
          continue;
        }
        if ((lo & (LEAF_ALIGN_LO[level] as number) & ~FS_LEAF_PAT) !== 0) {
          this.tableProblem(walk, at, level, "address bits inside the large page are set", fr);
          continue;
        }
      }
      let p = perm;
      if ((lo & FS_PTE_RW) === 0) p &= ~F_W;
      if ((lo & FS_PTE_US) === 0) p &= ~F_U;
      if ((hi & FS_PTE_XD_HI) !== 0) p &= ~F_X;
      let addr = (hi & FS_PTE_ADDR_HI) * TWO32 + ((lo & FS_PTE_ADDR_LO) >>> 0);
      const vpn = base + i * pages;
      if (leaf) {
        if (level > 1) addr -= addr % (pages * 4096);
        if (!this.leaf(walk, at, vpn, addr / 4096, pages, p)) return;
      } else {
        this.walkFs(walk, addr, level - 1, vpn, p);
        if (walk.stopped) return;
      }
    }
  }
}

/** Split RTADDR into the root table address and its mode, or say why it selects no tables. */
export function vtdRtaddrMode(
  rtaddr: bigint | number,
): { rootTable: number; mode: "legacy" | "scalable" } | string {
  const v = BigInt.asUintN(64, BigInt(rtaddr));
  const ttm = Number((v >> 10n) & 3n);
  if (ttm === 2) {
    // VT-d 2.x named bit 11 RTT (extended root table), which kernels of that time set with ECS.
    return "RTADDR.TTM is 2, a reserved mode: no tables to decode (bit 11 was RTT, the extended root table of VT-d 2.x, which this decoder does not read)";
  }
  if (ttm === 3) return "RTADDR.TTM is 3 (abort-DMA mode): every request is blocked, no tables";
  const rta = (v >> 12n) << 12n;
  if (rta >= 1n << 52n) return `RTADDR.RTA ${toHex(rta)} is beyond a 52-bit physical address`;
  return { rootTable: Number(rta), mode: ttm === 1 ? "scalable" : "legacy" };
}

/**
 * Decode the tables RTADDR points to in `mem`: every device with a present context entry, its
 * translations (per PASID in scalable mode), and every page table they use, enumerated once into
 * coalesced mappings. Returns a one-line message instead when RTADDR selects no tables (TTM 2 or 3).
 *
 * Legacy mode (TTM 0): root entry per bus, 256 context entries per table; TT 0/1 second stage
 * with AW + 2 levels, TT 2 pass-through. Scalable mode (TTM 1): lower/upper context tables of 128
 * 256-bit entries; PASID directory of 2^(PDTS+7) entries; PASID entries with P = 1 (PGTT 1
 * first-stage, 2 second-stage, 3 nested, 4 pass-through); the RID_PASID translation is always
 * listed, blocked when its entry is missing or refuses requests without PASID (RID_PRIV without
 * SRE).
 *
 * Never throws, and its work is bounded whatever `mem` holds: the limits (`VTD_DECODE_LIMITS`, or
 * the `max*` options) cap table pages, mappings, PASID entries and problems, and a document cut
 * short by one has `truncated` set and a problem naming the limit. With `coverage`, structures the
 * image does not hold are noted (they read as zeros, as `translate` reads them).
 *
 * @spec Intel VT-d Architecture Specification 3.4 (root, context, PASID structures), 9.1-9.8
 */
export function decodeVtd(mem: PhysMemory, options: VtdDecodeOptions): VtdDecodeDocument | string {
  const mode = vtdRtaddrMode(options.rtaddr);
  if (typeof mode === "string") return mode;
  const scalable = mode.mode === "scalable";
  const d = new VtdDecoder(mem, scalable, mode.rootTable, options.device, options.pasid, options);
  const caps = options.caps ?? VTD_PERMISSIVE_CAPS;
  const rootTable = toHex(mode.rootTable);
  const coverage = options.coverage ?? null;
  if (scalable && !caps.smts) {
    // The unit refuses the root table; the tables are still decoded as written.
    d.problems.push({
      address: rootTable,
      structure: "root table",
      message:
        "RTADDR.TTM selects scalable mode, which the unit lacks (ECAP.SMTS is 0): every request faults; the tables are decoded as written",
      faultReason: VTD_FR.SM_ROOT_TABLE_ADDR_INVALID,
    });
  }
  if (mode.rootTable + 4096 > mem.pfnLimit * 4096) {
    d.problems.push({
      address: rootTable,
      structure: "root table",
      message: "the root table is outside memory",
      faultReason: scalable ? VTD_FR.SM_ROOT_TABLE_ADDR_INVALID : VTD_FR.ROOT_TABLE_ACCESS,
    });
  } else if (coverage !== null && !coverage.covers(mode.rootTable, 4096)) {
    d.problems.push({
      address: rootTable,
      structure: "root table",
      message:
        "the root table is not in the image (a hole, or a page the dump left out): read as zeros, no device",
    });
  } else if (scalable) d.decodeScalable();
  else d.decodeLegacy();
  const pageTables = options.mappings === false ? {} : d.pageTables();
  d.finishProblems();
  // With a PASID filter, only the devices that have that PASID.
  const devices =
    options.pasid === undefined ? d.devices : d.devices.filter((x) => x.translations.length > 0);
  return {
    arch: "vtd",
    mode: mode.mode,
    rootTable,
    devices,
    pageTables,
    rtaddr: toHex(BigInt.asUintN(64, BigInt(options.rtaddr))),
    problems: d.problems,
    truncated: d.truncated,
  };
}

/**
 * The translation requests of `sid` (and `pasid`, or none) get, as `decodeVtd` describes it; null
 * when the device has no present context entry (or RTADDR selects no tables). In scalable mode a
 * request without PASID takes the context entry's RID_PASID entry. No page table is enumerated.
 */
export function lookupVtdTranslation(
  mem: PhysMemory,
  options: { rtaddr: bigint | number; sid: number; pasid: number | null; caps?: VtdCapabilities },
): VtdDecodedTranslation | null {
  const mode = vtdRtaddrMode(options.rtaddr);
  if (typeof mode === "string" || mode.rootTable + 4096 > mem.pfnLimit * 4096) return null;
  const scalable = mode.mode === "scalable";
  if (!scalable && options.pasid !== null) return null;
  const filter: PasidFilter = options.pasid === null ? "rid" : options.pasid;
  const d = new VtdDecoder(mem, scalable, mode.rootTable, options.sid, filter, {
    rtaddr: options.rtaddr,
    caps: options.caps,
    mappings: false,
  });
  if (scalable) d.decodeScalable();
  else d.decodeLegacy();
  return d.devices[0]?.translations[0] ?? null;
}

// --- The human-readable form ---------------------------------------------------------------------

function formatTranslation(t: VtdDecodedTranslation): string {
  const who =
    t.pasid === null ? "translation" : `PASID ${t.pasid}${t.ridPasid ? " (RID_PASID)" : ""}`;
  if (t.type === "blocked") {
    return `${who}: blocked (${t.faultName}, fault ${toHex(t.faultReason ?? 0, 2)})`;
  }
  if (t.type === "pass-through") return `${who}: pass-through, DID ${t.did}`;
  const nested =
    t.type === "nested"
      ? `, second stage ${t.secondStageTable} (${t.secondStageLevels} levels)`
      : "";
  return `${who}: ${t.type}, DID ${t.did}, ${t.levels} levels, table ${t.pageTable}${nested}`;
}

/** The columns of one mapping line: input range, output, size, permissions. */
function mappingColumns(m: VtdMapping): MappingColumns {
  let perms = `${m.r ? "r" : "-"}${m.w ? "w" : "-"}`;
  if (m.x !== undefined) perms += m.x ? "x" : "-";
  if (m.u) perms += " user";
  if (m.snp) perms += " snoop";
  return [mappingRange(m.iova, m.size), m.pa, formatSize(m.size), perms];
}

/** Who walks each page table: `00:03.0`, `00:03.0 PASID 5`, `... (second stage)`, by key. */
function tableUsers(doc: VtdDecodeDocument): Map<string, string[]> {
  const users = new Map<string, string[]>();
  for (const dev of doc.devices) {
    for (const t of dev.translations) {
      const who = t.pasid === null ? dev.bdf : `${dev.bdf} PASID ${t.pasid}`;
      addTableUser(users, t.pageTable, who);
      addTableUser(users, t.secondStageTable, `${who} (second stage)`);
    }
  }
  return users;
}

/**
 * The decode document as text: a summary, then per bus its root entry and per device the context
 * entry and translations (each PASID with its directory and table entry), then each page table
 * with who uses it and its coalesced mappings in aligned columns, then the problems. Meant to stay
 * readable for a machine with hundreds of devices: entries shared by a bus are printed once, and
 * a table shared by many devices names a few of them.
 */
export function formatVtdDecode(doc: VtdDecodeDocument): string {
  const lines: string[] = [];
  lines.push(`VT-d ${doc.mode} mode, root table ${doc.rootTable} (RTADDR ${doc.rtaddr})`);
  lines.push(formatSummary(doc, "no device has a present context entry"));
  let bus = -1;
  for (const dev of doc.devices) {
    if (dev.sid >>> 8 !== bus) {
      bus = dev.sid >>> 8;
      lines.push("");
      const b = bus.toString(16).padStart(2, "0");
      lines.push(
        `bus ${b}: root entry @${dev.rootEntry.address}  ${formatEntry(dev.rootEntry, LAYOUTS)}`,
      );
    }
    lines.push("");
    const extra = `${dev.deviceTlb ? ", device-TLB" : ""}${dev.truncated ? ", PASID list truncated" : ""}`;
    lines.push(`${dev.bdf} (sid ${toHex(dev.sid, 4)}${extra})`);
    lines.push(
      `  context entry  @${dev.contextEntry.address}  ${formatEntry(dev.contextEntry, LAYOUTS)}`,
    );
    if (dev.pasidDirectory !== undefined) {
      lines.push(
        `  PASID directory ${dev.pasidDirectory} (${dev.pasidDirectoryEntries} entries), RID_PASID ${dev.ridPasid}`,
      );
    }
    for (const t of dev.translations) {
      lines.push(`  ${formatTranslation(t)}`);
      if (t.pasidDirEntry !== undefined) {
        lines.push(
          `    dir entry    @${t.pasidDirEntry.address}  ${formatEntry(t.pasidDirEntry, LAYOUTS)}`,
        );
      }
      if (t.pasidEntry !== undefined) {
        lines.push(
          `    PASID entry  @${t.pasidEntry.address}  ${formatEntry(t.pasidEntry, LAYOUTS)}`,
        );
      }
    }
  }
  const users = tableUsers(doc);
  for (const [key, table] of Object.entries(doc.pageTables)) {
    lines.push("");
    const nested =
      table.secondStageTable === undefined
        ? ""
        : `, nested: table and output addresses guest-physical, through ${table.secondStageTable}`;
    const n = table.mappings.length;
    const note = formatTableNotes(table, "table page");
    lines.push(
      `page table ${key}: ${table.stage}, ${table.levels} levels${nested}, ${count(n, "mapping")}${note}${formatUsers(users.get(key))}`,
    );
    pushMappingLines(lines, table.mappings, mappingColumns);
  }
  pushProblemLines(lines, doc.problems, (p) =>
    p.faultReason === undefined
      ? ""
      : ` [fault ${toHex(p.faultReason, 2)} ${vtdFaultName(p.faultReason)}]`,
  );
  return `${lines.join("\n")}\n`;
}
