// Decoding the VT-d translation structures found in a memory image (root table, context tables,
// PASID directories and tables, first- and second-stage page tables) into one document: which
// devices translate how, and what each page table maps.
//
// Only what the VT-d specification defines is read, so tables written by any driver decode the
// same way. A malformed entry is reported in `problems`, with the fault the hardware would raise
// where there is one, and never thrown. This is an edge path: BigInt is used for printing, but
// page tables are enumerated with number arithmetic (page numbers stay below 2^45): a million
// leaves are walked in tens of milliseconds, and a million separate mappings built in about a
// second.

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
  decode,
  type FieldValue,
  fieldOf,
  formatLayout,
  getField,
  type Layout,
  loadLayout,
  type PhysMemory,
  reservedBitsSet,
  toHex,
} from "@iommu-sim/iommu-core/platform";

/** How a device (RID or RID+PASID) has its requests translated. */
export type VtdTranslationType =
  | "second-stage"
  | "first-stage"
  | "nested"
  | "pass-through"
  | "blocked";

/** The stage a page table belongs to. */
export type VtdTableStage = "second-stage" | "first-stage";

/** One structure entry as found in memory. */
export interface VtdDecodedEntry {
  /** The field table it is decoded with (`root-entry`, `sm-context-entry`, `pasid-entry`...). */
  readonly layout: string;
  /** Physical address of the entry. */
  readonly address: string;
  /** The entry's 64-bit words, lowest address first, in hex. */
  readonly raw: readonly string[];
  /** Every field under its spec name: a number, or a hex string for addresses and wide fields. */
  readonly fields: Readonly<Record<string, number | string>>;
}

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
  /** Nested first stage: the second-stage table (key) that translates its table addresses. */
  readonly secondStageTable?: string;
}

/** Something in memory that the hardware would refuse or that makes no sense. */
export interface VtdDecodeProblem {
  /** Physical address of the entry at fault. */
  readonly address: string;
  /** Which structure, in words (`context entry of 00:03.0`). */
  readonly structure: string;
  readonly message: string;
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
}

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
  /** Most table pages visited per page table before enumeration stops (default 2^18). */
  readonly maxTablePages?: number;
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
const TWO32 = 4294967296;
const DEFAULT_MAX_TABLE_PAGES = 1 << 18;
/** Problems listed per page table before the rest are only counted. */
const MAX_TABLE_PROBLEMS = 32;

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
const D_P = fieldOf(PASID_DIR_ENTRY, "P");
const D_TBL = fieldOf(PASID_DIR_ENTRY, "SMPTBLPTR");
const E_P = fieldOf(PASID_ENTRY, "P");
const E_AW = fieldOf(PASID_ENTRY, "AW");
const E_PGTT = fieldOf(PASID_ENTRY, "PGTT");
const E_SLPTPTR = fieldOf(PASID_ENTRY, "SLPTPTR");
const E_DID = fieldOf(PASID_ENTRY, "DID");
const E_FLPM = fieldOf(PASID_ENTRY, "FLPM");
const E_FLPTR = fieldOf(PASID_ENTRY, "FLPTR");

const LAYOUTS: Readonly<Record<string, Layout>> = Object.freeze(
  Object.fromEntries(
    [
      ROOT_ENTRY,
      SM_ROOT_ENTRY,
      CONTEXT_ENTRY,
      SM_CONTEXT_ENTRY,
      PASID_DIR_ENTRY,
      PASID_ENTRY,
      SS_PTE,
      FS_PTE,
    ].map((l) => [l.name, l]),
  ),
);

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

/** Collects leaves in walk order and merges runs (flat array: vpn, pfn, pages, flags). */
class Coalescer {
  readonly runs: number[] = [];
  private vpn = 0;
  private pfn = 0;
  private pages = 0;
  private flags = 0;

  add(vpn: number, pfn: number, pages: number, flags: number): void {
    if (
      this.pages > 0 &&
      vpn === this.vpn + this.pages &&
      pfn === this.pfn + this.pages &&
      flags === this.flags
    ) {
      this.pages += pages;
      return;
    }
    this.flush();
    this.vpn = vpn;
    this.pfn = pfn;
    this.pages = pages;
    this.flags = flags;
  }

  flush(): void {
    if (this.pages > 0) this.runs.push(this.vpn, this.pfn, this.pages, this.flags);
    this.pages = 0;
  }
}

// Mapping flags.
const F_R = 1;
const F_W = 2;
const F_X = 4;
const F_U = 8;
const F_SNP = 16;

/** Mutable per-table enumeration state. */
interface TableWalk {
  ref: TableRef;
  out: Coalescer;
  tablePages: number;
  stopped: boolean;
  problems: number;
}

/** Filter on PASIDs: none, one PASID, or only the context entry's RID_PASID. */
type PasidFilter = number | "rid" | undefined;

class VtdDecoder {
  readonly problems: VtdDecodeProblem[] = [];
  readonly devices: VtdDecodedDevice[] = [];
  private readonly refs = new Map<string, TableRef>();
  private readonly caps: VtdCapabilities;
  private readonly hawLimit: number;
  private readonly memLimit: number;
  private readonly pasidBits: number;
  /** High-word and low-word masks of paging-entry address bits at or above HAW. */
  private readonly hawHi: number;
  private readonly hawLo: number;
  private readonly ssLeafRsvLo: number;
  private readonly ssLeafRsvHi: number;
  private readonly maxTablePages: number;
  /** CAP.SLLPS: bit 0 2 MiB, bit 1 1 GiB second-stage pages. */
  private readonly sllps: number;

  constructor(
    private readonly mem: PhysMemory,
    readonly scalable: boolean,
    private readonly rta: number,
    private readonly device: number | undefined,
    private readonly pasidFilter: PasidFilter,
    options: VtdDecodeOptions,
  ) {
    const caps = options.caps ?? VTD_PERMISSIVE_CAPS;
    this.caps = caps;
    const haw = Math.max(12, Math.min(52, options.haw ?? 52));
    this.hawLimit = 2 ** haw;
    this.memLimit = mem.pfnLimit * 4096;
    this.pasidBits = caps.pasid ? caps.pss + 1 : 0;
    this.hawHi = haw >= 32 ? (SS_PTE_ADDR_HI & ~((2 ** (haw - 32) - 1) | 0)) >>> 0 : SS_PTE_ADDR_HI;
    this.hawLo = haw >= 32 ? 0 : (SS_PTE_ADDR_LO & ~(2 ** haw - 1)) >>> 0;
    // The walker's rules: SNP in a leaf needs ECAP.SC outside scalable mode; TM in a leaf only on
    // units before VT-d 3.2 with device-TLBs.
    this.ssLeafRsvLo = scalable || caps.snoopControl ? 0 : SS_PTE_SNP;
    const v = caps.version;
    const staleTm = caps.deviceTlb && (v.major < 3 || (v.major === 3 && v.minor < 2));
    this.ssLeafRsvHi = staleTm ? 0 : SS_PTE_TM_HI;
    this.maxTablePages = options.maxTablePages ?? DEFAULT_MAX_TABLE_PAGES;
    this.sllps =
      (caps.superpages.includes("2M") ? 1 : 0) | (caps.superpages.includes("1G") ? 2 : 0);
  }

  // --- Helpers -----------------------------------------------------------------------------------

  private problem(address: number, structure: string, message: string, faultReason?: number) {
    this.problems.push({
      address: toHex(address),
      structure,
      message,
      ...(faultReason === undefined ? {} : { faultReason }),
    });
  }

  /** Whether `bytes` at `pa` lie inside the memory image's address space. */
  private inMemory(pa: number, bytes: number): boolean {
    return pa + bytes <= this.memLimit;
  }

  private load(layout: Layout, pa: number): Uint32Array {
    return loadLayout(this.mem, layout, pa);
  }

  /** A table pointer field (bits 63:12 of its qword) as a number; above 2^53 it is inexact. */
  private ptr(words: Uint32Array, f: { word: number }): number {
    return (words[f.word + 1] as number) * TWO32 + (((words[f.word] as number) & 0xfffff000) >>> 0);
  }

  private entry(layout: Layout, pa: number, words: Uint32Array): VtdDecodedEntry {
    const raw: string[] = [];
    for (let i = 0; i < layout.words; i += 2) {
      const v = (BigInt(words[i + 1] as number) << 32n) | BigInt(words[i] as number);
      raw.push(toHex(v, 16));
    }
    const values = decode(layout, words);
    const fields: Record<string, number | string> = {};
    for (const f of layout.fields) {
      const v = values[f.name] as FieldValue;
      fields[f.name] = f.addr || typeof v === "bigint" ? toHex(v) : v;
    }
    return { layout: layout.name, address: toHex(pa), raw, fields };
  }

  /**
   * The key under which the page table `ref` is listed; the first reference of an address takes
   * the plain address, a later one that reads it differently (other stage, levels or second stage)
   * gets a suffix.
   */
  private tableKey(ref: Omit<TableRef, "key">): string {
    const base = toHex(ref.root);
    for (let n = 1; ; n++) {
      const key = n === 1 ? base : `${base}#${n}`;
      const seen = this.refs.get(key);
      if (seen === undefined) {
        this.refs.set(key, { ...ref, key });
        return key;
      }
      if (
        seen.stage === ref.stage &&
        seen.levels === ref.levels &&
        seen.ssRoot === ref.ssRoot &&
        seen.ssLevels === ref.ssLevels
      ) {
        return key;
      }
    }
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
        this.problem(
          rootAt,
          where,
          `reserved bits set: ${rsv.join(",")}`,
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
      const rootEntry = this.entry(ROOT_ENTRY, rootAt, rw);
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
          deviceTlb: tt === TT_DEVTLB && this.caps.deviceTlb,
          rootEntry,
          contextEntry: this.entry(CONTEXT_ENTRY, at, cw),
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
      this.problem(at, where, `reserved bits set: ${rsv.join(",")}`, fr);
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
        const msg = `reserved bits set: ${rsv.join(",")}`;
        this.problem(rootAt, where, msg, VTD_FR.SM_ROOT_ENTRY_RESERVED);
        continue;
      }
      const rootEntry = this.entry(SM_ROOT_ENTRY, rootAt, rw);
      for (const upper of [false, true]) {
        if ((upper ? up : lp) === 0) continue;
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
        for (let i = 0; i < 128; i++) {
          const sid = (bus << 8) | (upper ? 0x80 : 0) | i;
          if (this.device !== undefined && this.device !== sid) continue;
          const at = ctp + i * SM_CONTEXT_ENTRY_SIZE;
          const cw = this.load(SM_CONTEXT_ENTRY, at);
          if (getField(SC_P, cw) === 0) continue;
          this.scalableDevice(sid, at, cw, rootEntry);
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
    const paside = getField(SC_PASIDE, cw) !== 0;
    const dirEntries = 2 ** (pdts + 7);
    const translations: VtdDecodedTranslation[] = [];
    const wanted = (pasid: number) =>
      this.pasidFilter === undefined ||
      (this.pasidFilter === "rid" ? pasid === ridPasid : pasid === this.pasidFilter);
    const finish = () =>
      this.devices.push({
        bdf,
        sid,
        translations: translations.sort((a, b) => (a.pasid as number) - (b.pasid as number)),
        deviceTlb: getField(SC_DTE, cw) !== 0 && this.caps.deviceTlb,
        rootEntry,
        contextEntry: this.entry(SM_CONTEXT_ENTRY, at, cw),
        pasidDirectory: toHex(dir),
        pasidDirectoryEntries: dirEntries,
        ridPasid,
      });
    const deviceBlocked = (fr: number, msg: string) => {
      this.problem(at, where, msg, fr);
      if (wanted(ridPasid)) translations.push(this.blocked(ridPasid, 0, fr, { ridPasid: true }));
      finish();
    };
    const rsv = reservedBitsSet(SM_CONTEXT_ENTRY, cw);
    if (rsv.length > 0) {
      deviceBlocked(VTD_FR.SM_CONTEXT_ENTRY_RESERVED, `reserved bits set: ${rsv.join(",")}`);
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
    // PASIDs at or above this limit fault (PDTS, and ECAP.PSS).
    const pasidLimit = 2 ** Math.min(pdts + 13, this.pasidBits);
    let sawRidPasid = false;
    /** Why the RID_PASID entry could not be reached, when its directory entry was found bad. */
    let ridFault = 0;
    const ridDir = Math.floor(ridPasid / PASID_TBL_ENTRIES);
    let unreachable = 0;
    const dirLimit = Math.min(dirEntries, Math.ceil(pasidLimit / PASID_TBL_ENTRIES));
    let first = 0;
    let last = dirLimit - 1;
    if (typeof this.pasidFilter === "number" || this.pasidFilter === "rid") {
      const only = this.pasidFilter === "rid" ? ridPasid : this.pasidFilter;
      first = Math.floor(only / PASID_TBL_ENTRIES);
      last = Math.min(first, dirLimit - 1);
    }
    if (!this.inMemory(dir, dirLimit * PASID_DIR_ENTRY_SIZE)) {
      this.problem(at, where, `PASID directory ${toHex(dir)} is outside memory`);
      ridFault = VTD_FR.SM_PASID_DIR_ENTRY_ACCESS;
      first = 1;
      last = 0;
    }
    for (let d = first; d <= last; d++) {
      const deAt = dir + d * PASID_DIR_ENTRY_SIZE;
      const dw = this.load(PASID_DIR_ENTRY, deAt);
      if (getField(D_P, dw) === 0) continue;
      const range = `PASIDs ${d * 64}-${d * 64 + 63}`;
      const dwhere = `PASID directory entry of ${bdf} (${range})`;
      const drsv = reservedBitsSet(PASID_DIR_ENTRY, dw);
      const table = this.ptr(dw, D_TBL);
      let bad = "";
      if (drsv.length > 0) bad = `reserved bits set: ${drsv.join(",")}`;
      else if (table >= this.hawLimit)
        bad = `SMPTBLPTR ${toHex(table)} is at or above the host address width`;
      if (bad !== "") {
        this.problem(deAt, dwhere, bad, VTD_FR.SM_PASID_DIR_ENTRY_RESERVED);
        if (d === ridDir) ridFault = VTD_FR.SM_PASID_DIR_ENTRY_RESERVED;
        continue;
      }
      if (!this.inMemory(table, 4096)) {
        this.problem(deAt, dwhere, `PASID table ${toHex(table)} is outside memory`);
        if (d === ridDir) ridFault = VTD_FR.SM_PASID_ENTRY_ACCESS;
        continue;
      }
      const pasidDirEntry = this.entry(PASID_DIR_ENTRY, deAt, dw);
      for (let t = 0; t < PASID_TBL_ENTRIES; t++) {
        const pasid = d * PASID_TBL_ENTRIES + t;
        if (pasid >= pasidLimit) break;
        if (!wanted(pasid)) continue;
        const eAt = table + t * PASID_ENTRY_SIZE;
        const ew = this.load(PASID_ENTRY, eAt);
        const isRid = pasid === ridPasid;
        if (getField(E_P, ew) === 0) {
          if (isRid) {
            sawRidPasid = true;
            const fr = VTD_FR.SM_PASID_ENTRY_NOT_PRESENT;
            translations.push(this.blocked(pasid, 0, fr, { ridPasid: true, pasidDirEntry }));
          }
          continue;
        }
        if (isRid) sawRidPasid = true;
        else if (!paside) unreachable++;
        const tr = this.pasidTranslation(bdf, pasid, eAt, ew);
        translations.push({
          ...tr,
          ...(isRid ? { ridPasid: true } : {}),
          pasidDirEntry,
          pasidEntry: this.entry(PASID_ENTRY, eAt, ew),
        });
      }
    }
    if (!sawRidPasid && wanted(ridPasid)) {
      // Requests without PASID find no usable PASID entry: the device is blocked for them.
      let fr = ridFault === 0 ? VTD_FR.SM_PASID_DIR_ENTRY_NOT_PRESENT : ridFault;
      if (ridPasid >= pasidLimit) fr = VTD_FR.SM_PASID_TOO_LARGE;
      translations.push(this.blocked(ridPasid, 0, fr, { ridPasid: true }));
    }
    if (unreachable > 0) {
      const msg = `PASIDE is 0: ${unreachable} present PASID entr${unreachable === 1 ? "y is" : "ies are"} unreachable (requests with PASID fault)`;
      this.problem(at, where, msg, VTD_FR.SM_PASIDE_CLEAR);
    }
    finish();
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
      this.problem(at, where, `reserved bits set: ${rsv.join(",")}`, rsvFr);
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

  /** Enumerate every referenced page table, in the order first referenced. */
  pageTables(): Record<string, VtdDecodedPageTable> {
    const out: Record<string, VtdDecodedPageTable> = {};
    // Nested first stages register their second stage while being referenced; walk in key order.
    for (const ref of [...this.refs.values()]) out[ref.key] = this.enumerate(ref);
    return out;
  }

  private enumerate(ref: TableRef): VtdDecodedPageTable {
    const walk: TableWalk = {
      ref,
      out: new Coalescer(),
      tablePages: 0,
      stopped: false,
      problems: 0,
    };
    if (ref.stage === "second-stage") this.walkSs(walk, ref.root, ref.levels, 0, F_R | F_W);
    else this.walkFs(walk, ref.root, ref.levels, 0, F_R | F_W | F_X | F_U);
    walk.out.flush();
    if (walk.problems > MAX_TABLE_PROBLEMS) {
      const more = walk.problems - MAX_TABLE_PROBLEMS;
      this.problem(ref.root, this.tableName(ref), `${more} more problems in this table not listed`);
    }
    const runs = walk.out.runs;
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
      ...(ref.ssKey === undefined ? {} : { secondStageTable: ref.ssKey }),
    };
  }

  private tableName(ref: TableRef): string {
    const nested = ref.ssKey === undefined ? "" : ` (nested in ${ref.ssKey})`;
    return `${ref.stage} table ${ref.key}${nested}`;
  }

  /** A problem with an entry (or, with `table`, a whole table page) of the table being walked. */
  private tableProblem(
    walk: TableWalk,
    at: number,
    level: number,
    message: string,
    fr?: number,
    table = false,
  ) {
    walk.problems++;
    if (walk.problems > MAX_TABLE_PROBLEMS) return;
    const what = `level ${level} ${table ? "table" : "entry"}`;
    this.problem(at, `${this.tableName(walk.ref)}, ${what}`, message, fr);
  }

  /** Count a table page; false when the budget is spent (reported once). */
  private enter(walk: TableWalk, table: number, level: number): boolean {
    if (walk.stopped) return false;
    if (walk.tablePages >= this.maxTablePages) {
      walk.stopped = true;
      const msg = `enumeration stopped after ${this.maxTablePages} table pages (shared or looping tables?)`;
      this.problem(table, this.tableName(walk.ref), msg);
      return false;
    }
    if (!this.inMemory(table, 4096)) {
      const fr = this.scalable
        ? walk.ref.stage === "second-stage"
          ? VTD_FR.SM_SS_ENTRY_ACCESS
          : VTD_FR.SM_FS_ENTRY_ACCESS
        : VTD_FR.PAGING_ENTRY_ACCESS;
      this.tableProblem(walk, table, level, `table ${toHex(table)} is outside memory`, fr, true);
      return false;
    }
    walk.tablePages++;
    return true;
  }

  /**
   * Second-stage table at `table`, `level`, covering input pages from `base`. The reserved-bit
   * rules are the walker's (vtd-walk.ts): address bits at or above HAW; PS above level 3 or at a
   * level CAP.SLLPS lacks; address bits inside a large page; SNP and TM outside leaves, and in
   * leaves unless allowed.
   *
   * @spec Intel VT-d Architecture Specification 9.8 (second-stage paging entries)
   */
  private walkSs(walk: TableWalk, table: number, level: number, base: number, perm: number) {
    if (!this.enter(walk, table, level)) return;
    const mem = this.mem;
    const pages = PAGES[level] as number;
    const fr = this.scalable ? VTD_FR.SM_SS_ENTRY_RESERVED : VTD_FR.PAGING_ENTRY_RESERVED;
    const sllps = this.sllps;
    for (let i = 0; i < 512; i++) {
      const at = table + i * 8;
      const lo = mem.read64(at);
      const hi = mem.hi;
      if ((lo & SS_PRESENT) === 0) continue;
      if ((hi & this.hawHi) !== 0 || (lo & this.hawLo) !== 0) {
        this.tableProblem(walk, at, level, "address bits at or above the host address width", fr);
        continue;
      }
      const leaf = level === 1 || (lo & SS_PTE_PS) !== 0;
      if (leaf && level > 1) {
        if (level > 3 || (sllps & (1 << (level - 2))) === 0) {
          const msg =
            level > 3 ? `PS set at level ${level}` : `PS set but CAP.SLLPS lacks this page size`;
          this.tableProblem(walk, at, level, msg, fr);
          continue;
        }
        if ((lo & (LEAF_ALIGN_LO[level] as number)) !== 0) {
          this.tableProblem(walk, at, level, "address bits inside the large page are set", fr);
          continue;
        }
      }
      if (leaf) {
        if ((lo & this.ssLeafRsvLo) !== 0 || (hi & this.ssLeafRsvHi) !== 0) {
          const msg = (lo & this.ssLeafRsvLo) !== 0 ? "SNP set without ECAP.SC" : "TM set";
          this.tableProblem(walk, at, level, msg, fr);
          continue;
        }
      } else if ((lo & SS_PTE_SNP) !== 0 || (hi & SS_PTE_TM_HI) !== 0) {
        this.tableProblem(walk, at, level, "SNP or TM set in a non-leaf entry", fr);
        continue;
      }
      let p = perm;
      if ((lo & SS_PTE_R) === 0) p &= ~F_R;
      if ((lo & SS_PTE_W) === 0) p &= ~F_W;
      const addr = (hi & SS_PTE_ADDR_HI) * TWO32 + ((lo & SS_PTE_ADDR_LO) >>> 0);
      const vpn = base + i * pages;
      if (leaf) {
        walk.out.add(vpn, addr / 4096, pages, p | ((lo & SS_PTE_SNP) !== 0 ? F_SNP : 0));
      } else {
        this.walkSs(walk, addr, level - 1, vpn, p);
        if (walk.stopped) return;
      }
    }
  }

  /**
   * The host frame second-stage table `root` (`levels`) maps guest frame `gpfn` to with read
   * permission, or -1. For nested first-stage table addresses.
   */
  private ssLookup(root: number, levels: number, gpfn: number): number {
    const mem = this.mem;
    let table = root;
    if (gpfn >= 2 ** (9 * levels)) return -1;
    for (let level = levels; level >= 1; level--) {
      if (!this.inMemory(table, 4096)) return -1;
      const pages = PAGES[level] as number;
      const at = table + (Math.floor(gpfn / pages) % 512) * 8;
      const lo = mem.read64(at);
      const hi = mem.hi;
      if ((lo & SS_PTE_R) === 0) return -1;
      if ((hi & this.hawHi) !== 0 || (lo & this.hawLo) !== 0) return -1;
      const addr = (hi & SS_PTE_ADDR_HI) * TWO32 + ((lo & SS_PTE_ADDR_LO) >>> 0);
      const leaf = level === 1 || (lo & SS_PTE_PS) !== 0;
      if (leaf) {
        if (level > 3 || (lo & (LEAF_ALIGN_LO[level] as number)) !== 0) return -1;
        return addr / 4096 + (gpfn % pages);
      }
      table = addr;
    }
    return -1;
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
  private walkFs(walk: TableWalk, gTable: number, level: number, base: number, perm: number) {
    const ref = walk.ref;
    const nested = ref.ssRoot >= 0;
    let table = gTable;
    if (nested) {
      const hpfn = this.ssLookup(ref.ssRoot, ref.ssLevels, gTable / 4096);
      if (hpfn < 0) {
        const msg = `table at guest-physical ${toHex(gTable)} is not mapped readable by the second stage`;
        const fr = level === ref.levels ? VTD_FR.SM_FS_ROOT_READ : VTD_FR.SM_FS_ENTRY_READ;
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
        walk.out.add(vpn, addr / 4096, pages, p);
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
  if (ttm === 2) return "RTADDR.TTM is 2, a reserved mode: no tables to decode";
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
 * listed, blocked when its entry is missing.
 *
 * @spec Intel VT-d Architecture Specification 3.4 (root, context, PASID structures), 9.1-9.8
 */
export function decodeVtd(mem: PhysMemory, options: VtdDecodeOptions): VtdDecodeDocument | string {
  const mode = vtdRtaddrMode(options.rtaddr);
  if (typeof mode === "string") return mode;
  const scalable = mode.mode === "scalable";
  const d = new VtdDecoder(mem, scalable, mode.rootTable, options.device, options.pasid, options);
  if (mode.rootTable + 4096 > mem.pfnLimit * 4096) {
    d.problems.push({
      address: toHex(mode.rootTable),
      structure: "root table",
      message: "the root table is outside memory",
      faultReason: scalable ? VTD_FR.SM_ROOT_TABLE_ADDR_INVALID : VTD_FR.ROOT_TABLE_ACCESS,
    });
  } else if (scalable) d.decodeScalable();
  else d.decodeLegacy();
  const pageTables = options.mappings === false ? {} : d.pageTables();
  // With a PASID filter, only the devices that have that PASID.
  const devices =
    options.pasid === undefined ? d.devices : d.devices.filter((x) => x.translations.length > 0);
  return {
    arch: "vtd",
    mode: mode.mode,
    rootTable: toHex(mode.rootTable),
    devices,
    pageTables,
    rtaddr: toHex(BigInt.asUintN(64, BigInt(options.rtaddr))),
    problems: d.problems,
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

/** The entry's fields as the field-table printer shows them (non-zero fields, named values). */
function formatEntry(e: VtdDecodedEntry): string {
  const layout = LAYOUTS[e.layout];
  if (layout === undefined) return e.raw.join(" ");
  const words: number[] = [];
  for (const q of e.raw) {
    const v = BigInt(q);
    words.push(Number(v & 0xffffffffn), Number(v >> 32n));
  }
  return formatLayout(layout, words);
}

function formatSize(bytes: number): string {
  const units: Array<[number, string]> = [
    [2 ** 40, "TiB"],
    [2 ** 30, "GiB"],
    [2 ** 20, "MiB"],
    [2 ** 10, "KiB"],
  ];
  for (const [unit, name] of units) {
    if (bytes >= unit && bytes % unit === 0) return `${bytes / unit} ${name}`;
  }
  return `${bytes} B`;
}

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

function formatMapping(m: VtdMapping): string {
  // Number() reads the hex exactly below 2^53; canonical upper-half addresses need BigInt.
  const start = Number(m.iova);
  const end =
    start + m.size <= Number.MAX_SAFE_INTEGER
      ? toHex(start + m.size - 1)
      : toHex(BigInt(m.iova) + BigInt(m.size) - 1n);
  let perms = `${m.r ? "r" : "-"}${m.w ? "w" : "-"}`;
  if (m.x !== undefined) perms += m.x ? "x" : "-";
  if (m.u) perms += " user";
  if (m.snp) perms += " snoop";
  return `  ${m.iova}-${end} -> ${m.pa}  ${formatSize(m.size)}  ${perms}`;
}

/**
 * The decode document as text: a tree device -> context -> (PASID) -> table root with each entry's
 * fields, then each page table's coalesced mappings, then the problems.
 */
export function formatVtdDecode(doc: VtdDecodeDocument): string {
  const lines: string[] = [];
  lines.push(`VT-d ${doc.mode} mode, root table ${doc.rootTable} (RTADDR ${doc.rtaddr})`);
  if (doc.devices.length === 0) lines.push("no device has a present context entry");
  for (const dev of doc.devices) {
    lines.push("");
    const extra = dev.deviceTlb ? ", device-TLB" : "";
    lines.push(`${dev.bdf} (sid ${toHex(dev.sid, 4)}${extra})`);
    lines.push(`  root entry     @${dev.rootEntry.address}  ${formatEntry(dev.rootEntry)}`);
    lines.push(`  context entry  @${dev.contextEntry.address}  ${formatEntry(dev.contextEntry)}`);
    if (dev.pasidDirectory !== undefined) {
      lines.push(
        `  PASID directory ${dev.pasidDirectory} (${dev.pasidDirectoryEntries} entries), RID_PASID ${dev.ridPasid}`,
      );
    }
    for (const t of dev.translations) {
      lines.push(`  ${formatTranslation(t)}`);
      if (t.pasidDirEntry !== undefined) {
        lines.push(`    dir entry    @${t.pasidDirEntry.address}  ${formatEntry(t.pasidDirEntry)}`);
      }
      if (t.pasidEntry !== undefined) {
        lines.push(`    PASID entry  @${t.pasidEntry.address}  ${formatEntry(t.pasidEntry)}`);
      }
    }
  }
  for (const [key, table] of Object.entries(doc.pageTables)) {
    lines.push("");
    const nested =
      table.secondStageTable === undefined
        ? ""
        : `, nested: table and output addresses guest-physical, through ${table.secondStageTable}`;
    const count = table.mappings.length;
    lines.push(
      `page table ${key}: ${table.stage}, ${table.levels} levels${nested}, ${count} mapping${count === 1 ? "" : "s"}`,
    );
    for (const m of table.mappings) lines.push(formatMapping(m));
  }
  if (doc.problems.length > 0) {
    lines.push("");
    lines.push(`problems (${doc.problems.length}):`);
    for (const p of doc.problems) {
      const fr =
        p.faultReason === undefined
          ? ""
          : ` [fault ${toHex(p.faultReason, 2)} ${vtdFaultName(p.faultReason)}]`;
      lines.push(`  ${p.address} ${p.structure}: ${p.message}${fr}`);
    }
  }
  return `${lines.join("\n")}\n`;
}
