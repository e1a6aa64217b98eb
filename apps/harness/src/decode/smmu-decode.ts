// Decoding the Arm SMMUv3 translation structures found in a memory image (stream table, STEs, CD
// tables and CDs, VMSAv8-64 stage 1 and stage 2 tables) into one document: which StreamIDs and
// SubstreamIDs translate how, and what each page table maps.
//
// Only what the SMMUv3 specification defines is read, so tables written by any driver decode the
// same way. Whether an STE or CD is usable is the hardware model's own verdict (`decodeSteWords`,
// `decodeCd`), stage 2 fetches of nested CDs and stage 1 tables go through the hardware's walker,
// and the page-table rules are the walker's; a malformed structure is reported in `problems`, with
// the event a transaction through it would raise, and never thrown. The work is bounded whatever
// the image holds (a 2^32-entry stream table, looping tables): budgets of stream-table entries,
// devices, CD entries, translations, table pages, mappings and problems, and a document that says
// when one of them cut it short (`truncated`). Large tables are read only where the image holds
// memory: a page never written reads as zeros and holds no valid entry.

import {
  ADDR_SIZE_BITS,
  CD,
  CD_L2_ENTRIES_4K,
  CD_L2_ENTRIES_64K,
  CD_SIZE,
  EVT_ID,
  evtName,
  L1_CD,
  L1_CD_SIZE,
  L1_STD,
  L1_STD_SIZE,
  LPAE_DESC_RES0_HI,
  LPAE_S1_BLOCK_DESC,
  LPAE_S1_TABLE_DESC,
  LPAE_S2_BLOCK_DESC,
  lpaeDescPa,
  S1DSS_SSID0,
  S1FMT_4K_L2,
  S1FMT_64K_L2,
  STE,
  STE_SIZE,
  STRTAB_BASE_CFG_REG,
  STRTAB_BASE_REG,
  STRTAB_FMT_2LVL,
  tg0PageShift,
  tg1PageShift,
} from "@iommu-sim/arm-smmu/format";
import {
  CFG_OK,
  DEFAULT_SMMU_FEATURES,
  decodeCd,
  decodeSteWords,
  levelShift,
  NO_SSID,
  SmmuCdConfig,
  type SmmuCdFetchPort,
  type SmmuFeatures,
  SmmuSteConfig,
  SmmuWalker,
  W_OK,
  walkEventId,
} from "@iommu-sim/arm-smmu/hw";
import {
  decode,
  type Field,
  fieldOf,
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
  MAX_U64,
  type MappingColumns,
  mappingRange,
  pushMappingLines,
  pushProblemLines,
  TableDecoder,
  type TableWalk,
} from "./decode-common.js";

/** How an STE's Config treats its StreamID's transactions. */
export type SmmuDeviceConfig = "abort" | "bypass" | "s1" | "s2" | "nested";

/** How one translation (a StreamID's requests without or with one SubstreamID) is done. */
export type SmmuTranslationType = "s1" | "s2" | "nested" | "bypass" | "blocked";

/** An event number with its spec name. */
export interface SmmuEventRef {
  readonly id: number;
  readonly name: string;
}

/** One structure entry as found in memory (`STE`, `L1STD`, `CD`, `L1CD`). */
export interface SmmuDecodedEntry extends DecodedEntry {
  /** Nested configurations: the IPA the SMMU fetched it by (translated through stage 2). */
  readonly ipa?: string;
}

/** One translation of a device: requests without a SubstreamID (`ssid` null) or with one. */
export interface SmmuDecodedTranslation {
  /** Null for requests without a SubstreamID; else the SubstreamID (the CD index). */
  readonly ssid: number | null;
  readonly type: SmmuTranslationType;
  /** Stage 1: the CD's ASID (0 for the EL2 StreamWorld). */
  readonly asid?: number;
  /** Stage 2: the STE's S2VMID. */
  readonly vmid?: number;
  /**
   * Key in `pageTables` of the table walked first: stage 1 TTB0 (s1, nested; null with EPD0),
   * or the stage 2 table (s2); null for bypass and blocked.
   */
  readonly pageTable: string | null;
  /** Stage 1 TTB1 table, when the CD enables it (EPD1 = 0). */
  readonly ttb1Table?: string;
  /** Nested: the stage 2 table that translates the stage 1 tables and their output. */
  readonly secondStageTable?: string;
  /** Blocked: the event a request gets; absent when it is terminated without one (abort STE). */
  readonly event?: SmmuEventRef;
  /** The CD used, and for a 2-level CD table its L1CD (absent when none could be located). */
  readonly cd?: SmmuDecodedEntry;
  readonly l1cd?: SmmuDecodedEntry;
}

/** A stage 1 STE's CD table. */
export interface SmmuCdTableInfo {
  /** STE.S1ContextPtr (an IPA when nested). */
  readonly address: string;
  /** `single` (S1CDMax 0: one CD), `linear`, `2lvl-4K` (64-CD leaves) or `2lvl-64K` (1024). */
  readonly format: "single" | "linear" | "2lvl-4K" | "2lvl-64K";
  /** 2^S1CDMax. */
  readonly entries: number;
  /** STE.S1DSS as the SMMU applies it: what requests without a SubstreamID do. */
  readonly s1dss: "terminate" | "bypass" | "SSID0";
  /** The table lives in IPA space (nested). */
  readonly ipa: boolean;
}

/** A StreamID with a valid STE (V = 1). */
export interface SmmuDecodedDevice {
  readonly sid: number;
  /** STE.Config: 0b0xx abort, 0b100 bypass, 0b101 s1, 0b110 s2, 0b111 nested. */
  readonly config: SmmuDeviceConfig;
  /** Requests without a SubstreamID first, then by SubstreamID. */
  readonly translations: readonly SmmuDecodedTranslation[];
  /** A limit left CDs of this device undecoded; its no-SubstreamID translation is always there. */
  readonly truncated: boolean;
  readonly ste: SmmuDecodedEntry;
  /** 2-level stream table: the L1STD that leads to the STE. */
  readonly l1std?: SmmuDecodedEntry;
  /** Stage 2 (s2, nested): S2VMID and the stage 2 table's key. */
  readonly vmid?: number;
  readonly secondStageTable?: string;
  /** Stage 1 (s1, nested): the CD table. */
  readonly cdTable?: SmmuCdTableInfo;
}

/** A run of stage 1 pages with consecutive output addresses and equal attributes. */
export interface SmmuS1Mapping {
  /** Input address (TTB1 tables: the 64-bit address of the upper range). */
  readonly iova: string;
  /** Output address (a nested stage 1: an IPA). */
  readonly pa: string;
  /** Bytes. */
  readonly size: number;
  /** Readable (always, at stage 1), writable (AP[2] clear) and executable by unprivileged requests (UXN clear). */
  readonly r: boolean;
  readonly w: boolean;
  readonly x: boolean;
  /** Unprivileged requests allowed (AP[1] set). */
  readonly u: boolean;
  /** AP[2:1], UXN and PXN after the table descriptors' APTable/UXNTable/PXNTable (unless HAD). */
  readonly AP: number;
  readonly UXN: number;
  readonly PXN: number;
  readonly AttrIndx: number;
  readonly SH: number;
  readonly AF: number;
  readonly nG: number;
  readonly DBM: number;
  readonly Contiguous: number;
}

/** A run of stage 2 pages with consecutive output addresses and equal attributes. */
export interface SmmuS2Mapping {
  /** Input address: an IPA. */
  readonly iova: string;
  readonly pa: string;
  readonly size: number;
  /** S2AP[0] read, S2AP[1] write, XN[1] clear. */
  readonly r: boolean;
  readonly w: boolean;
  readonly x: boolean;
  readonly S2AP: number;
  readonly XN: number;
  readonly MemAttr: number;
  readonly SH: number;
  readonly AF: number;
  readonly DBM: number;
  readonly Contiguous: number;
}

export type SmmuMapping = SmmuS1Mapping | SmmuS2Mapping;

/** One page table, decoded once however many translations use it. */
export interface SmmuDecodedPageTable {
  readonly stage: 1 | 2;
  /** Stage 1: the CD range it serves. */
  readonly range?: "TTB0" | "TTB1";
  /** Granule in bytes: 4096, 16384 or 65536. */
  readonly granule: number;
  readonly startLevel: number;
  /** Input address bits (64 - TxSZ) and effective output address bits (IPS / S2PS, and OAS). */
  readonly ias: number;
  readonly oas: number;
  /** Address of the starting table (nested stage 1: an IPA). */
  readonly root: string;
  /** Stage 2: the number of concatenated starting tables, when more than one. */
  readonly concatenated?: number;
  /** Stage 1: hierarchical attributes disabled (CD.HADx with IDR3.HAD). */
  readonly had?: boolean;
  readonly mappings: readonly SmmuMapping[];
  /** 4 KiB pieces of tables visited (read, or found unreadable or outside the image). */
  readonly tablePages: number;
  /** A limit stopped the enumeration (`maxTablePages` or `maxMappings`): mappings are missing. */
  readonly truncated: boolean;
  /**
   * Tables (this one or those it points to) of which the image holds no page: read as zeros (a
   * hole, or pages the dump left out). Only with an image whose coverage is known, and not 0.
   */
  readonly notInImage?: number;
  /** Nested stage 1: the stage 2 table (key) that translates its table addresses. */
  readonly secondStageTable?: string;
}

/**
 * Something in memory that the SMMU would refuse or that makes no sense (its `address` is an IPA
 * where the message says so).
 */
export interface SmmuDecodeProblem extends DecodeProblemBase {
  /** The event a transaction using the structure gets, when it gets one. */
  readonly event?: SmmuEventRef;
}

/** The stream table the registers select, as the SMMU uses it. */
export interface SmmuStreamTableInfo {
  /** STRTAB_BASE.ADDR aligned as the format requires. */
  readonly address: string;
  readonly format: "linear" | "2-level";
  /** Effective LOG2SIZE: min(STRTAB_BASE_CFG.LOG2SIZE, IDR1.SIDSIZE). */
  readonly log2size: number;
  /** 2-level: the effective SPLIT (6, 8 or 10). */
  readonly split?: number;
}

/** What `decodeSmmu` returns. */
export interface SmmuDecodeDocument {
  readonly arch: "smmu";
  readonly streamTable: SmmuStreamTableInfo;
  readonly devices: readonly SmmuDecodedDevice[];
  readonly pageTables: Readonly<Record<string, SmmuDecodedPageTable>>;
  /** The register values decoded. */
  readonly strtabBase: string;
  readonly strtabCfg: string;
  readonly problems: readonly SmmuDecodeProblem[];
  /** A limit cut the decode short (see `SMMU_DECODE_LIMITS`); the problems say which. */
  readonly truncated: boolean;
}

/** The address ranges a memory image holds (`ImageCoverage`). */
export type SmmuImageCoverage = DecodeImageCoverage;

/**
 * The default work limits of `decodeSmmu`. A machine's real tables stay far below them; an image
 * with looping, shared or garbage tables reaches them in seconds and the document says so.
 */
export const SMMU_DECODE_LIMITS = Object.freeze({
  /** 4 KiB pages of page tables read, over all page tables (2^18: 1 GiB of tables). */
  maxTablePages: 1 << 18,
  /** Mappings listed, over all page tables. */
  maxMappings: 1 << 20,
  /** STE slots and L1 stream table descriptors read (pages never written are skipped free). */
  maxStreamEntries: 1 << 22,
  /** Devices (valid STEs) listed. */
  maxDevices: 1 << 16,
  /** CD slots and L1CDs read, over all devices. */
  maxCdEntries: 1 << 22,
  /** SubstreamID translations listed besides each device's no-SubstreamID one, over all devices. */
  maxTranslations: 1 << 16,
  /** Problems listed; the rest are counted in a last one. */
  maxProblems: 1000,
});

/** Options of `decodeSmmu`. */
export interface SmmuDecodeOptions {
  /** SMMU_STRTAB_BASE (64 bits): ADDR [55:6], RA [62]. */
  readonly strtabBase: bigint | number;
  /** SMMU_STRTAB_BASE_CFG (32 bits): LOG2SIZE [5:0], SPLIT [10:6], FMT [17:16]. */
  readonly strtabCfg: bigint | number;
  /** The SMMU's features (its ID registers); default `DEFAULT_SMMU_FEATURES`. */
  readonly features?: SmmuFeatures;
  /** Only this StreamID. */
  readonly device?: number;
  /** Only translations of this SubstreamID (requests without one are left out). */
  readonly ssid?: number;
  /** Enumerate the page tables (default true); false leaves `pageTables` empty. */
  readonly mappings?: boolean;
  readonly maxTablePages?: number;
  readonly maxMappings?: number;
  readonly maxStreamEntries?: number;
  readonly maxDevices?: number;
  readonly maxCdEntries?: number;
  readonly maxTranslations?: number;
  readonly maxProblems?: number;
  /** Which memory the image holds (`MemoryImage.coverage`); default all of memory. */
  readonly coverage?: SmmuImageCoverage | null;
}

// --- Field constants, derived once from the field tables ----------------------------------------

/** Problems listed per device's CD table before the rest are only counted. */
const MAX_CD_PROBLEMS = 32;
/** Frames a range may span before its populated frames are found from the memory's list. */
const FRAME_SCAN_LIMIT = 1 << 16;

/** A field inside one 32-bit word: its word (0 or 1 of a 64-bit entry), shift and mask. */
interface Bits {
  readonly word: number;
  readonly shift: number;
  readonly mask: number;
}

function bits(layout: Layout, name: string): Bits {
  const f: Field = fieldOf(layout, name);
  return Object.freeze({ word: f.word, shift: f.shift, mask: f.mask });
}

/** The field's value in the descriptor halves `lo`, `hi`. */
function fv(b: Bits, lo: number, hi: number): number {
  return ((b.word === 0 ? lo : hi) >>> b.shift) & b.mask;
}

const S1B = LPAE_S1_BLOCK_DESC;
const S2B = LPAE_S2_BLOCK_DESC;
const D_VALID = bits(S1B, "Valid");
const D_TYPE = bits(S1B, "Type");
const D1_ATTRINDX = bits(S1B, "AttrIndx");
const D1_AP = bits(S1B, "AP");
const D_SH = bits(S1B, "SH");
const D_AF = bits(S1B, "AF");
const D1_NG = bits(S1B, "nG");
const D_DBM = bits(S1B, "DBM");
const D_CONT = bits(S1B, "Contiguous");
const D1_PXN = bits(S1B, "PXN");
const D1_UXN = bits(S1B, "UXN");
const T1_PXNT = bits(LPAE_S1_TABLE_DESC, "PXNTable");
const T1_UXNT = bits(LPAE_S1_TABLE_DESC, "UXNTable");
const T1_APT = bits(LPAE_S1_TABLE_DESC, "APTable");
const D2_MEMATTR = bits(S2B, "MemAttr");
const D2_S2AP = bits(S2B, "S2AP");
const D2_XN = bits(S2B, "XN");

const STE_V = bits(STE, "V");
const STE_CONFIG = bits(STE, "Config");
const L1S_SPAN = bits(L1_STD, "Span");
const L1C_V = bits(L1_CD, "V");
const CD_V = fieldOf(CD, "V");

// Hierarchical attributes collected down a stage 1 walk (APTable[0], APTable[1], UXN, PXN).
const H_NOU = 1;
const H_RO = 2;
const H_UXN = 4;
const H_PXN = 8;

const LAYOUTS = layoutsByName([STE, L1_STD, CD, L1_CD]);

/** The spec name of event `id`, with it. */
export function smmuEventRef(id: number): SmmuEventRef {
  return { id, name: evtName(id) };
}

/**
 * An address field of the 64-bit word at `w[word]` as a number: the bits of `lowMask` in the low
 * half, bits 32 up to 55 (`wide`) or 51 in the high half (above 2^53 inexact, as in the hardware).
 */
function ptrOf(w: ArrayLike<number>, word: number, lowMask: number, wide = true): number {
  const hiMask = wide ? 0xffffff : 0xfffff;
  return ((w[word + 1] as number) & hiMask) * TWO32 + (((w[word] as number) & lowMask) >>> 0);
}

/** Whether granule shift `g` is implemented (IDR5.GRANx). */
function granuleOk(f: SmmuFeatures, g: number): boolean {
  return f.granules.includes(g === 12 ? "4K" : g === 14 ? "16K" : "64K");
}

/** The granule's name (`4K`). */
function granuleName(g: number): string {
  return `${2 ** (g - 10)}K`;
}

/**
 * Block descriptors the walker accepts (no DS): 4K at levels 1 and 2, 16K at level 2, 64K at
 * level 2, and at level 1 only with a 52-bit output.
 */
function blockOk(g: number, level: number, outBits: number): boolean {
  if (level === 2) return true;
  if (level === 1) return g === 12 || (g === 16 && outBits === 52);
  return false;
}

// --- Why the SMMU refuses an STE or CD ------------------------------------------------------------

/**
 * Why the SMMU finds the valid STE `w` ILLEGAL (C_BAD_STE), in words, or "" when it does not.
 * The checks and their order are `decodeSteWords`' (hw/smmu-config.ts); a property test keeps
 * the two in step: this function explains, the hardware decides.
 *
 * @spec Arm SMMUv3 (IHI 0070) 5.2 (STE fields), 5.2.2 (ILLEGAL STE conditions)
 */
export function explainSteIllegal(w: ArrayLike<number>, f: SmmuFeatures): string {
  const v = decode(STE, w);
  const val = (name: string) => Number(v[name]);
  const config = val("Config");
  if (val("V") === 0 || config < 4) return "";
  const rsv = reservedBitsSet(STE, w);
  if (f.checkReserved && rsv.length > 0) return `reserved bits set: ${formatBits(rsv)}`;
  if (config === 4) return "";
  const s1 = (config & 1) !== 0;
  const s2 = (config & 2) !== 0;
  if (s1 && !f.s1p) return "Config selects stage 1, which the SMMU lacks (IDR0.S1P is 0)";
  if (s2 && !f.s2p) return "Config selects stage 2, which the SMMU lacks (IDR0.S2P is 0)";
  const eats = f.ats ? val("EATS") : 0;
  if (eats === 2)
    return "EATS 0b10 (split-stage ATS) is not supported: IDR0.NS1ATS is 1 in this model";
  let el2 = false;
  if (s1) {
    const cdMax = f.ssidBits === 0 ? 0 : val("S1CDMax");
    const fmt = val("S1Fmt");
    if (cdMax > f.ssidBits) return `S1CDMax ${cdMax} is above IDR1.SSIDSIZE ${f.ssidBits}`;
    if (cdMax > 0 && (fmt === S1FMT_4K_L2 || fmt === S1FMT_64K_L2) && !f.cd2l)
      return `S1Fmt ${fmt} selects a 2-level CD table, which the SMMU lacks (IDR0.CD2L is 0)`;
    if (val("S1STALLD") !== 0 && f.stallModel !== 0)
      return `S1STALLD is 1 but IDR0.STALL_MODEL is ${f.stallModel}: stalls are not the software's choice`;
    if (!s2) {
      const strw = val("STRW");
      if (f.hyp) {
        if ((strw & 1) !== 0) return `STRW ${strw} is ILLEGAL in a Non-secure STE`;
        el2 = strw === 2;
      } else if (strw !== 0 && f.checkReserved) {
        return `STRW ${strw} selects an EL2 StreamWorld, which the SMMU lacks (IDR0.Hyp is 0)`;
      }
      const ptr = ptrOf(w, 0, 0xffffffc0);
      if (ptr >= 2 ** f.oas)
        return `S1ContextPtr ${toHex(ptr)} is beyond the ${f.oas}-bit output address size (IDR5.OAS)`;
    }
  }
  const vmid = f.s2p ? val("S2VMID") : 0;
  if (!el2 && f.vmidBits === 8 && vmid > 0xff)
    return `S2VMID ${toHex(vmid)} needs 16-bit VMIDs (IDR0.VMID16 is 0)`;
  if (!s2) return "";
  const tg = val("S2TG");
  const g = tg0PageShift(tg);
  if (g === 0) return "S2TG 3 is reserved";
  if (!granuleOk(f, g))
    return `S2TG ${tg} selects the ${granuleName(g)} granule, which the SMMU lacks (IDR5.GRAN${granuleName(g)} is 0)`;
  if (val("S2AA64") === 0)
    return "S2AA64 is 0 (VMSAv8-32 LPAE stage 2 tables): this SMMU walks VMSAv8-64 tables only";
  if (val("S2ENDI") !== 0)
    return "S2ENDI is 1 (big-endian tables): this SMMU is little-endian only";
  const tsz = val("S2T0SZ");
  const ias = f.ttf === 3 ? Math.max(40, f.oas) : f.oas;
  const min = Math.max(g === 16 ? 12 : 16, 64 - ias);
  const max = f.stt ? (g === 16 ? 47 : 48) : 39;
  if (tsz < min || tsz > max)
    return `S2T0SZ ${tsz} is outside ${min}..${max} (the ${granuleName(g)} granule, a ${ias}-bit IAS${f.stt ? "" : ", no IDR3.STT"})`;
  const ps = ADDR_SIZE_BITS[val("S2PS")] as number;
  let outBits = Math.min(ps === 56 ? 52 : ps, f.oas);
  if (g !== 16 && outBits > 48) outBits = 48;
  const sl0 = val("S2SL0");
  if (sl0 === 3) return "S2SL0 3 is reserved";
  const start = (g === 12 ? 2 : 3) - sl0;
  const idxBits = 64 - tsz - levelShift(g, start);
  if (idxBits < 1 || idxBits > g + 1)
    return `S2SL0 ${sl0} (start at level ${start}) does not suit S2T0SZ ${tsz}: the starting level would resolve ${idxBits} address bits (1 to ${g + 1}, at most 16 concatenated tables)`;
  if (g === 16 && start === 0)
    return `S2SL0 ${sl0} starts at level 0, which the 64K granule does not have`;
  const ttb = ptrOf(w, 6, 0xfffffff0, false);
  if (ttb >= 2 ** outBits)
    return `S2TTB ${toHex(ttb)} is beyond the ${outBits}-bit stage 2 output size (S2PS, IDR5.OAS)`;
  const ha = val("S2HA") !== 0;
  const hd = val("S2HD") !== 0;
  if (ha && f.httu < 1) return "S2HA is 1 but IDR0.HTTU is 0";
  if (hd && f.httu < 2) return `S2HD is 1 but IDR0.HTTU is ${f.httu}`;
  const s2s = val("S2S") !== 0;
  if (s2s && f.stallModel === 1) return "S2S is 1 but IDR0.STALL_MODEL is 1 (terminate only)";
  if (!s2s && f.stallModel === 2) return "S2S is 0 but IDR0.STALL_MODEL is 2 (stall forced)";
  if (eats === 1 && s2s) return "EATS 1 (full ATS) through a stalling stage 2 (S2S 1)";
  return "";
}

/**
 * Why the SMMU finds CD `w` ILLEGAL or unusable under the STE `ste` (C_BAD_CD), in words, or ""
 * when it does not. The checks and their order are `decodeCdWords`'; a property test keeps the
 * two in step.
 *
 * @spec Arm SMMUv3 (IHI 0070) 5.4 (CD fields), 5.4.1 (ILLEGAL CD conditions)
 */
export function explainCdIllegal(
  w: ArrayLike<number>,
  ste: SmmuSteConfig,
  f: SmmuFeatures,
): string {
  const v = decode(CD, w);
  const val = (name: string) => Number(v[name]);
  if (val("V") === 0) return "V is 0";
  const rsv = reservedBitsSet(CD, w);
  if (f.checkReserved && rsv.length > 0) return `reserved bits set: ${formatBits(rsv)}`;
  if (val("AA64") === 0)
    return "AA64 is 0 (VMSAv8-32 LPAE tables): this SMMU walks VMSAv8-64 tables only";
  const el2 = ste.el2 && !ste.e2h;
  const epd0 = el2 ? false : val("EPD0") !== 0;
  const epd1 = el2 ? true : val("EPD1") !== 0;
  if (!(epd0 && epd1) && val("ENDI") !== 0)
    return "ENDI is 1 (big-endian tables): this SMMU is little-endian only";
  const ips = ADDR_SIZE_BITS[val("IPS")] as number;
  const outBits = Math.min(ips === 56 ? 52 : ips, f.oas);
  if (val("HA") !== 0 && f.httu < 1) return "HA is 1 but IDR0.HTTU is 0";
  if (val("HD") !== 0 && f.httu < 2) return `HD is 1 but IDR0.HTTU is ${f.httu}`;
  const s = val("S") !== 0;
  if (s && f.stallModel === 1) return "S is 1 but IDR0.STALL_MODEL is 1 (terminate only)";
  if (s && f.stallModel === 0 && ste.s1StallD)
    return "S is 1 but the STE's S1STALLD forbids stalls";
  if (!s && f.stallModel === 2) return "S is 0 but IDR0.STALL_MODEL is 2 (stall forced)";
  if (val("A") === 0 && f.termModel === 1)
    return "A is 0 but IDR0.TERM_MODEL is 1 (terminated transactions always abort)";
  const asid = el2 ? 0 : val("ASID");
  if (f.asidBits === 8 && asid > 0xff)
    return `ASID ${toHex(asid)} needs 16-bit ASIDs (IDR0.ASID16 is 0)`;
  const range = (n: 0 | 1): string => {
    const tg = val(`TG${n}`);
    const g = n === 0 ? tg0PageShift(tg) : tg1PageShift(tg);
    const tsz = val(`T${n}SZ`);
    if (g === 0) return `TG${n} ${tg} is reserved`;
    if (!granuleOk(f, g))
      return `TG${n} ${tg} selects the ${granuleName(g)} granule, which the SMMU lacks (IDR5.GRAN${granuleName(g)} is 0)`;
    const min = f.vax && g === 16 ? 12 : 16;
    const max = f.stt ? (g === 16 ? 47 : 48) : 39;
    if (tsz < min || tsz > max)
      return `T${n}SZ ${tsz} is outside ${min}..${max} (the ${granuleName(g)} granule${f.stt ? "" : ", no IDR3.STT"})`;
    const ttb = ptrOf(w, n === 0 ? 2 : 4, 0xfffffff0, false);
    if (ttb >= 2 ** outBits)
      return `TTB${n} ${toHex(ttb)} is beyond the ${outBits}-bit output size (IPS, IDR5.OAS)`;
    if (g !== 16 && ttb >= 2 ** 48)
      return `TTB${n} ${toHex(ttb)} is beyond 48 bits, which the ${granuleName(g)} granule cannot hold`;
    return "";
  };
  if (!epd0) {
    const why = range(0);
    if (why !== "") return why;
  }
  if (!epd1) return range(1);
  return "";
}

// --- The decoder -------------------------------------------------------------------------------------

/** A page table some translation uses, waiting to be enumerated. */
interface TableRef {
  key: string;
  stage: 1 | 2;
  root: number;
  pgShift: number;
  startLevel: number;
  ia: number;
  outBits: number;
  /** 0: TTB0 (and stage 2), 1: TTB1. */
  range: 0 | 1;
  had: boolean;
  /** Nested stage 1: the STE whose stage 2 translates its table addresses, and its key. */
  ste: SmmuSteConfig | null;
  s2Key: string | undefined;
}

// Mapping flags. Stage 1: AP [1:0], UXN 2, PXN 3, AttrIndx [6:4], SH [8:7], AF 9, nG 10, DBM 11,
// Contiguous 12. Stage 2: S2AP [1:0], XN [3:2], MemAttr [7:4], SH [9:8], AF 10, DBM 11,
// Contiguous 12.

type Walk = TableWalk<TableRef>;

/** What one stage 1 device's CD scan collects. */
interface CdScan {
  readonly sid: number;
  readonly ste: SmmuSteConfig;
  readonly translations: SmmuDecodedTranslation[];
  truncated: boolean;
  problems: number;
}

/** The stream table STRTAB_BASE and STRTAB_BASE_CFG select, as the SMMU latches it. */
export interface SmmuStreamTableSetting {
  /** ADDR, aligned to the table. */
  readonly base: number;
  /** Effective LOG2SIZE. */
  readonly log2size: number;
  /** 0 linear, 1 2-level (after the SMMU's substitutions). */
  readonly fmt: number;
  /** Effective SPLIT: 6, 8 or 10. */
  readonly split: number;
  /** What the SMMU ignored or replaced, in words. */
  readonly notes: readonly string[];
}

/**
 * The stream table STRTAB_BASE and STRTAB_BASE_CFG select on an SMMU with features `f`, as the
 * SMMU latches it (effective LOG2SIZE, FMT and SPLIT, ADDR aligned to the table), with notes on
 * values it ignores or replaces; a message when a value does not fit its register.
 *
 * @spec Arm SMMUv3 (IHI 0070) 6.3.24, 6.3.25
 */
export function smmuStreamTableOf(
  strtabBase: bigint | number,
  strtabCfg: bigint | number,
  f: SmmuFeatures,
): SmmuStreamTableSetting | string {
  const baseValue = BigInt(strtabBase);
  const cfgValue = BigInt(strtabCfg);
  if (baseValue < 0n || baseValue > MAX_U64)
    return `STRTAB_BASE ${baseValue} does not fit a 64-bit register`;
  if (cfgValue < 0n || cfgValue > 0xffffffffn)
    return `STRTAB_BASE_CFG ${toHex(cfgValue)} does not fit a 32-bit register`;
  const notes: string[] = [];
  const bw = [Number(baseValue & 0xffffffffn), Number(baseValue >> 32n)];
  const cw = [Number(cfgValue)];
  const bRsv = reservedBitsSet(STRTAB_BASE_REG, bw);
  if (bRsv.length > 0)
    notes.push(`STRTAB_BASE: reserved bits ${formatBits(bRsv)} are set; the SMMU ignores them`);
  const cRsv = reservedBitsSet(STRTAB_BASE_CFG_REG, cw);
  if (cRsv.length > 0)
    notes.push(`STRTAB_BASE_CFG: reserved bits ${formatBits(cRsv)} are set; the SMMU ignores them`);
  const cfg = decode(STRTAB_BASE_CFG_REG, cw);
  const given = Number(cfg.LOG2SIZE);
  const log2size = Math.min(given, f.sidBits);
  if (given > f.sidBits)
    notes.push(
      `STRTAB_BASE_CFG.LOG2SIZE ${given} is above IDR1.SIDSIZE ${f.sidBits}: ${f.sidBits} is used`,
    );
  const fmtGiven = Number(cfg.FMT);
  let fmt = 0;
  if (fmtGiven === STRTAB_FMT_2LVL && f.twoLevelStreamTable) fmt = STRTAB_FMT_2LVL;
  else if (fmtGiven === STRTAB_FMT_2LVL)
    notes.push(
      "STRTAB_BASE_CFG.FMT is 1 (2-level) but IDR0.ST_LEVEL offers linear tables only: read as linear",
    );
  else if (fmtGiven !== 0)
    notes.push(`STRTAB_BASE_CFG.FMT ${fmtGiven} is reserved and behaves as 0: read as linear`);
  const splitGiven = Number(cfg.SPLIT);
  const split = splitGiven === 8 || splitGiven === 10 ? splitGiven : 6;
  if (fmt === STRTAB_FMT_2LVL && split !== splitGiven)
    notes.push(`STRTAB_BASE_CFG.SPLIT ${splitGiven} is reserved and behaves as 6`);
  const addr = ptrOf(bw, 0, 0xffffffc0);
  // Aligned by the literal LOG2SIZE, not the one SIDSIZE limits (6.3.24), as SmmuV3 latches it.
  const bytes =
    fmt === STRTAB_FMT_2LVL
      ? Math.max(64, L1_STD_SIZE * 2 ** Math.max(0, given - split))
      : STE_SIZE * 2 ** given;
  const base = addr - (addr % bytes);
  if (base !== addr)
    notes.push(
      `STRTAB_BASE.ADDR ${toHex(addr)} is not aligned to the table's ${bytes} bytes: the SMMU reads ${toHex(base)}`,
    );
  return { base, log2size, fmt, split, notes };
}

class SmmuDecoder extends TableDecoder<TableRef, SmmuDecodedPageTable, SmmuDecodeProblem> {
  readonly devices: SmmuDecodedDevice[] = [];
  private readonly reported = new Set<string>();
  private readonly walker: SmmuWalker;
  private readonly port: SmmuCdFetchPort;
  private allFrames: number[] | null = null;
  // Budgets (besides the table-page and mapping ones).
  private readonly maxStreamEntries: number;
  private readonly maxDevices: number;
  private readonly maxCdEntries: number;
  private readonly maxTranslations: number;
  private streamEntriesLeft: number;
  private cdEntriesLeft: number;
  private translationsLeft: number;
  /** Why the stream table scan stopped for good (a limit), or "". */
  private streamStopped = "";
  private cdEntriesReported = false;
  private translationsReported = false;

  constructor(
    mem: PhysMemory,
    private readonly f: SmmuFeatures,
    private readonly st: SmmuStreamTableSetting,
    private readonly device: number | undefined,
    private readonly ssidFilter: number | "none" | undefined,
    options: SmmuDecodeOptions,
  ) {
    super(mem, st.base, options, SMMU_DECODE_LIMITS);
    const walker = new SmmuWalker(mem);
    // Side-effect free, uncached: as `translateUncached` walks.
    walker.updateFlags = false;
    walker.walkCache = null;
    this.walker = walker;
    this.port = {
      s2Fetch(ste: SmmuSteConfig, ipa: number): number {
        const w = walker.fetchIpa(ste, ipa, false);
        return w === W_OK ? 0 : walkEventId(w);
      },
      get fetchPa() {
        return walker.s2FetchPa;
      },
      get fetchLevel() {
        return walker.level;
      },
      get fetchAbortAddr() {
        return walker.fetchAddr;
      },
    };
    const L = SMMU_DECODE_LIMITS;
    this.maxStreamEntries = decodeLimit(options.maxStreamEntries, L.maxStreamEntries);
    this.maxDevices = decodeLimit(options.maxDevices, L.maxDevices);
    this.maxCdEntries = decodeLimit(options.maxCdEntries, L.maxCdEntries);
    this.maxTranslations = decodeLimit(options.maxTranslations, L.maxTranslations);
    this.streamEntriesLeft = this.maxStreamEntries;
    this.cdEntriesLeft = this.maxCdEntries;
    this.translationsLeft = this.maxTranslations;
  }

  // --- Helpers -----------------------------------------------------------------------------------

  override problem(address: number, structure: string, message: string, event?: number): void {
    // The same structure may be met twice (a CD located for a request and again by the scan).
    const key = `${address}|${structure}|${message}`;
    if (this.reported.has(key)) return;
    this.reported.add(key);
    super.problem(address, structure, message, event);
  }

  protected override codeOf(event: number): { event: SmmuEventRef } {
    return { event: smmuEventRef(event) };
  }

  /**
   * Whether the image holds any page of [pa, pa + bytes) (the first 16 pages are looked at), or
   * its coverage is unknown. Dump tools leave out pages of zeros, which read as the SMMU reads
   * them: only a structure none of which is in the image is worth a note.
   */
  private anyInImage(pa: number, bytes: number): boolean {
    const c = this.coverage;
    if (c === null) return true;
    const first = Math.floor(pa / 4096);
    const last = Math.min(Math.ceil((pa + bytes) / 4096), first + 16);
    for (let pfn = first; pfn < last; pfn++) {
      const from = Math.max(pa, pfn * 4096);
      const to = Math.min(pa + bytes, (pfn + 1) * 4096);
      if (c.covers(from, to - from)) return true;
    }
    return false;
  }

  /** Note a structure none of which is in the image (it reads as zeros). */
  private noteNotInImage(pa: number, bytes: number, structure: string, what: string): void {
    if (this.anyInImage(pa, bytes)) return;
    const msg = `${what} ${toHex(pa)} is not in the image (a hole, or a page the dump left out): read as zeros`;
    this.problem(pa, structure, msg);
  }

  /**
   * The frames holding data in [start, end) (in memory), ascending: a page never written reads as
   * zeros and holds no valid entry, so huge tables cost what the image holds, not their size.
   */
  private populatedIn(start: number, end: number): number[] {
    const first = Math.floor(start / 4096);
    const last = Math.ceil(end / 4096);
    const out: number[] = [];
    if (last - first <= FRAME_SCAN_LIMIT) {
      for (let pfn = first; pfn < last; pfn++) if (this.mem.isPopulated(pfn)) out.push(pfn);
      return out;
    }
    if (this.allFrames === null) this.allFrames = this.mem.populatedFrames();
    const all = this.allFrames;
    let lo = 0;
    let hi = all.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((all[mid] as number) < first) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < all.length && (all[i] as number) < last; i++) out.push(all[i] as number);
    return out;
  }

  /** The PA stage 2 gives IPA `ipa` for an SMMU fetch, or minus the event of its fault. */
  private s2pa(ste: SmmuSteConfig, ipa: number): number {
    const w = this.walker.fetchIpa(ste, ipa, false);
    return w === W_OK ? this.walker.s2FetchPa : -walkEventId(w);
  }

  /** A table is read differently with another granule, range, sizes or stage 2 walk. */
  protected override readingOf(ref: Omit<TableRef, "key">): string {
    const s2 =
      ref.ste === null ? "" : `${ref.s2Key}/${+ref.ste.s2Affd}${+ref.ste.s2Ha}${+ref.ste.s2Ptw}`;
    return `${ref.stage}/${ref.root}/${ref.pgShift}/${ref.startLevel}/${ref.ia}/${ref.outBits}/${ref.range}/${+ref.had}/${s2}`;
  }

  /** The key of the stage 2 table of `ste`. */
  private s2Table(ste: SmmuSteConfig): string {
    const r = ste.s2Range;
    return this.tableKey({
      stage: 2,
      root: r.ttb,
      pgShift: r.pgShift,
      startLevel: r.startLevel,
      ia: r.ia,
      outBits: ste.s2OutBits,
      range: 0,
      had: false,
      ste: null,
      s2Key: undefined,
    });
  }

  /** The key of the stage 1 table of `cd`'s TTB0 or TTB1, or null when the range is disabled. */
  private s1Table(ste: SmmuSteConfig, cd: SmmuCdConfig, range: 0 | 1): string | null {
    const r = range === 0 ? cd.t0 : cd.t1;
    if (r.disabled) return null;
    return this.tableKey({
      stage: 1,
      root: r.ttb,
      pgShift: r.pgShift,
      startLevel: r.startLevel,
      ia: r.ia,
      outBits: cd.outBits,
      range,
      had: r.had,
      ste: ste.s2 ? ste : null,
      s2Key: ste.s2 ? this.s2Table(ste) : undefined,
    });
  }

  // --- The stream table --------------------------------------------------------------------------

  /** Charge one stream-table entry; false (said once) when the budget is spent. */
  private streamEntry(at: number): boolean {
    if (this.streamStopped !== "") return false;
    if (this.streamEntriesLeft > 0) {
      this.streamEntriesLeft--;
      return true;
    }
    this.stopStream(
      at,
      `stopped reading the stream table after ${this.maxStreamEntries} entries (limit maxStreamEntries): devices with higher StreamIDs are missing`,
    );
    return false;
  }

  private stopStream(at: number, why: string): void {
    this.streamStopped = why;
    this.truncated = true;
    this.problem(at, "stream table", why);
  }

  decodeStreamTable(): void {
    const st = this.st;
    const limit = 2 ** st.log2size;
    if (this.device !== undefined && this.device >= limit) {
      this.problem(
        st.base,
        "stream table",
        `StreamID ${toHex(this.device)} is beyond the stream table (2^${st.log2size} StreamIDs): its transactions are aborted`,
        EVT_ID.C_BAD_STREAMID,
      );
      return;
    }
    if (st.fmt === STRTAB_FMT_2LVL) this.decodeTwoLevel();
    else this.scanStes(st.base, 0, limit, "stream table", undefined);
  }

  /**
   * STE slots [0, count) of the array at `base` for StreamIDs from `firstSid` (one linear table,
   * or one level-2 table of a 2-level one reached through `l1std`).
   */
  private scanStes(
    base: number,
    firstSid: number,
    count: number,
    what: string,
    l1std: SmmuDecodedEntry | undefined,
  ): void {
    const bytes = count * STE_SIZE;
    let from = 0;
    let to = count;
    if (this.device !== undefined) {
      from = this.device - firstSid;
      to = from + 1;
    }
    const start = base + from * STE_SIZE;
    const end = base + to * STE_SIZE;
    if (end > this.memLimit) {
      const firstOut = Math.max(from, Math.ceil((this.memLimit - base) / STE_SIZE));
      this.problem(
        base,
        what,
        `${what} ${toHex(base)} (${bytes} bytes) reaches beyond memory: the STEs of StreamIDs from ${toHex(firstSid + firstOut)} cannot be fetched`,
        EVT_ID.F_STE_FETCH,
      );
    }
    if (start < this.memLimit)
      this.noteNotInImage(start, Math.min(end, this.memLimit) - start, what, what);
    for (const pfn of this.populatedIn(start, Math.min(end, this.memLimit))) {
      const lo = Math.max(start, pfn * 4096);
      const hi = Math.min(end, (pfn + 1) * 4096);
      for (let at = lo; at < hi; at += STE_SIZE) {
        if (!this.streamEntry(at)) return;
        if ((this.mem.read32(at) & (STE_V.mask << STE_V.shift)) === 0) continue;
        if (this.devices.length >= this.maxDevices) {
          this.stopStream(
            at,
            `stopped listing devices after ${this.maxDevices} (limit maxDevices): devices with higher StreamIDs are missing`,
          );
          return;
        }
        this.steDevice(firstSid + (at - base) / STE_SIZE, at, l1std);
      }
    }
  }

  private decodeTwoLevel(): void {
    const st = this.st;
    const perL2 = 2 ** st.split;
    const count = Math.max(1, 2 ** (st.log2size - st.split));
    let from = 0;
    let to = count;
    if (this.device !== undefined) {
      from = Math.floor(this.device / perL2);
      to = from + 1;
    }
    const start = st.base + from * L1_STD_SIZE;
    const end = st.base + to * L1_STD_SIZE;
    if (end > this.memLimit) {
      this.problem(
        st.base,
        "stream table",
        `the level-1 stream table ${toHex(st.base)} reaches beyond memory: its descriptors there cannot be fetched`,
        EVT_ID.F_STE_FETCH,
      );
    }
    if (start < this.memLimit) {
      const head = Math.min(end, this.memLimit) - start;
      this.noteNotInImage(start, head, "stream table", "the level-1 stream table");
    }
    const w = new Uint32Array(2);
    for (const pfn of this.populatedIn(start, Math.min(end, this.memLimit))) {
      const lo = Math.max(start, pfn * 4096);
      const hi = Math.min(end, (pfn + 1) * 4096);
      for (let at = lo; at < hi; at += L1_STD_SIZE) {
        if (!this.streamEntry(at)) return;
        w[0] = this.mem.read64(at);
        w[1] = this.mem.hi;
        if ((w[0] | w[1]) === 0) continue;
        this.l1Descriptor((at - st.base) / L1_STD_SIZE, at, w);
        if (this.streamStopped !== "") return;
      }
    }
  }

  /** @spec Arm SMMUv3 (IHI 0070) 5.1 (L1STD: Span, L2Ptr) */
  private l1Descriptor(index: number, at: number, w: Uint32Array): void {
    const st = this.st;
    const perL2 = 2 ** st.split;
    const first = index * perL2;
    const last = Math.min(first + perL2, 2 ** st.log2size) - 1;
    const range = `StreamIDs ${toHex(first)}-${toHex(last)}`;
    const where = `L1STD of ${range}`;
    const span = fv(L1S_SPAN, w[0] as number, 0);
    const rsv = reservedBitsSet(L1_STD, w);
    // The SMMU's checks, in decodeSte's order: each makes every StreamID under it invalid.
    let bad = "";
    if (span === 0) bad = "Span is 0 but the descriptor is not";
    else if (span > 12) bad = `Span ${span} is reserved`;
    else if (span > st.split + 1) bad = `Span ${span} is above SPLIT + 1 (${st.split + 1})`;
    else if (rsv.length > 0 && this.f.checkReserved) bad = `reserved bits set: ${formatBits(rsv)}`;
    if (bad !== "") {
      this.problem(at, where, `${bad}: its StreamIDs are invalid`, EVT_ID.C_BAD_STREAMID);
      return;
    }
    if (rsv.length > 0)
      this.problem(at, where, `reserved bits set: ${formatBits(rsv)} (ignored by this SMMU)`);
    const entries = 2 ** (span - 1);
    const size = STE_SIZE * entries;
    const l2 = ptrOf(w, 0, 0xffffffc0);
    const base = l2 - (l2 % size);
    const count = Math.min(entries, last - first + 1);
    if (this.device !== undefined && this.device - first >= count) {
      const msg = `StreamID ${toHex(this.device)} is beyond the Span (${entries} STEs): its transactions are aborted`;
      this.problem(at, where, msg, EVT_ID.C_BAD_STREAMID);
      return;
    }
    const l1std = decodedEntry(L1_STD, at, w);
    this.scanStes(base, first, count, `level-2 stream table of ${range}`, l1std);
  }

  /** A valid STE: the device, its translations and the tables they use. */
  private steDevice(sid: number, at: number, l1std: SmmuDecodedEntry | undefined): void {
    const f = this.f;
    const words = loadLayout(this.mem, STE, at);
    const ste = decodeSteWords(words, f, new SmmuSteConfig());
    ste.sid = sid;
    const configField = fv(STE_CONFIG, words[0] as number, 0);
    const config: SmmuDeviceConfig =
      configField < 4
        ? "abort"
        : configField === 4
          ? "bypass"
          : configField === 5
            ? "s1"
            : configField === 6
              ? "s2"
              : "nested";
    const where = `STE of StreamID ${toHex(sid)}`;
    const base = {
      sid,
      config,
      ste: decodedEntry(STE, at, words),
      ...(l1std === undefined ? {} : { l1std }),
    };
    const push = (d: SmmuDecodedDevice) => {
      // With a SubstreamID filter, only the devices that have that SubstreamID.
      if (typeof this.ssidFilter === "number" && d.translations.length === 0) return;
      this.devices.push(d);
    };
    const one = (t: SmmuDecodedTranslation): SmmuDecodedTranslation[] =>
      this.ssidFilter === undefined || this.ssidFilter === "none" ? [t] : [];
    if (ste.status !== CFG_OK) {
      this.problem(at, where, explainSteIllegal(words, f) || "ILLEGAL", ste.status);
      const t: SmmuDecodedTranslation = {
        ssid: null,
        type: "blocked",
        pageTable: null,
        event: smmuEventRef(ste.status),
      };
      push({ ...base, translations: one(t), truncated: false });
      return;
    }
    const rsv = reservedBitsSet(STE, words);
    if (rsv.length > 0) {
      // Reached only when the SMMU does not check them: an abort STE, or checkReserved off.
      const why = f.checkReserved ? "not checked in an abort STE" : "ignored by this SMMU";
      this.problem(at, where, `reserved bits set: ${formatBits(rsv)} (${why})`);
    }
    if (config === "abort") {
      push({
        ...base,
        translations: one({ ssid: null, type: "blocked", pageTable: null }),
        truncated: false,
      });
      return;
    }
    if (config === "bypass") {
      push({
        ...base,
        translations: one({ ssid: null, type: "bypass", pageTable: null }),
        truncated: false,
      });
      return;
    }
    // With a SubstreamID filter a device without CDs has nothing to list: no table to enumerate.
    const filtered = typeof this.ssidFilter === "number";
    if (!ste.s1) {
      if (filtered) return;
      const s2Key = this.s2Table(ste);
      const t: SmmuDecodedTranslation = {
        ssid: null,
        type: "s2",
        vmid: ste.vmid,
        pageTable: s2Key,
      };
      push({
        ...base,
        vmid: ste.vmid,
        secondStageTable: s2Key,
        translations: [t],
        truncated: false,
      });
      return;
    }
    const scan: CdScan = { sid, ste, translations: [], truncated: false, problems: 0 };
    if (this.ssidFilter === undefined || this.ssidFilter === "none")
      scan.translations.push(this.cdTranslation(scan, NO_SSID));
    if (ste.s1CdMax > 0 && this.ssidFilter !== "none") this.scanCds(scan);
    if (scan.problems > MAX_CD_PROBLEMS) {
      const more = scan.problems - MAX_CD_PROBLEMS;
      this.problem(
        ste.s1ContextPtr,
        `CD table of StreamID ${toHex(sid)}`,
        `${more} more problems in this CD table not listed`,
      );
    }
    if (filtered && scan.translations.length === 0) return;
    const s2 = ste.s2 ? { vmid: ste.vmid, secondStageTable: this.s2Table(ste) } : {};
    const fmt = ste.s1Fmt;
    const cdTable: SmmuCdTableInfo = {
      address: toHex(ste.s1ContextPtr),
      format:
        ste.s1CdMax === 0
          ? "single"
          : fmt === S1FMT_4K_L2
            ? "2lvl-4K"
            : fmt === S1FMT_64K_L2
              ? "2lvl-64K"
              : "linear",
      entries: ste.cdLimit,
      s1dss: ste.s1Dss === 1 ? "bypass" : ste.s1Dss === S1DSS_SSID0 ? "SSID0" : "terminate",
      ipa: ste.s2,
    };
    push({
      ...base,
      ...s2,
      cdTable,
      translations: scan.translations,
      truncated: scan.truncated,
    });
  }

  // --- Context descriptors -----------------------------------------------------------------------

  /** A problem of a device's CD table (capped per device). */
  private cdProblem(scan: CdScan, at: number, where: string, msg: string, event?: number): void {
    scan.problems++;
    if (scan.problems > MAX_CD_PROBLEMS) return;
    this.problem(at, where, msg, event);
  }

  /** Charge one CD-table entry; false (said once) when the budget is spent. */
  private cdEntry(scan: CdScan): boolean {
    if (this.cdEntriesLeft > 0) {
      this.cdEntriesLeft--;
      return true;
    }
    scan.truncated = true;
    this.truncated = true;
    if (!this.cdEntriesReported) {
      this.cdEntriesReported = true;
      this.problem(
        scan.ste.s1ContextPtr,
        `CD table of StreamID ${toHex(scan.sid)}`,
        `stopped reading CD tables after ${this.maxCdEntries} entries (limit maxCdEntries): from this device on, only translations without a SubstreamID are certain to be listed`,
      );
    }
    return false;
  }

  /**
   * Where the SMMU reads CD `index` of `ste`'s table: the CD's PA (and IPA when nested) and the
   * L1CD, or null when it cannot be located (the decodeCd status says why). The addressing is
   * decodeCd's.
   */
  private locateCd(
    ste: SmmuSteConfig,
    index: number,
  ): { pa: number; ipa: number; l1cd?: SmmuDecodedEntry } | null {
    let at = ste.s1ContextPtr + index * CD_SIZE;
    let l1cd: SmmuDecodedEntry | undefined;
    if (ste.s1Fmt === S1FMT_4K_L2 || ste.s1Fmt === S1FMT_64K_L2) {
      const leaf = ste.s1Fmt === S1FMT_4K_L2 ? CD_L2_ENTRIES_4K : CD_L2_ENTRIES_64K;
      const l1 = ste.s1ContextPtr + Math.floor(index / leaf) * L1_CD_SIZE;
      const l1pa = ste.s2 ? this.s2pa(ste, l1) : l1;
      if (l1pa < 0 || !this.inMemory(l1pa, L1_CD_SIZE)) return null;
      const w = loadLayout(this.mem, L1_CD, l1pa);
      if (fv(L1C_V, w[0] as number, 0) === 0) return null;
      l1cd = decodedEntry(L1_CD, l1pa, w, ste.s2 ? l1 : undefined);
      const l2 = ptrOf(w, 0, 0xfffff000);
      at = l2 - (l2 % (leaf * CD_SIZE)) + (index % leaf) * CD_SIZE;
    }
    const pa = ste.s2 ? this.s2pa(ste, at) : at;
    if (pa < 0 || !this.inMemory(pa, CD_SIZE)) return null;
    return l1cd === undefined ? { pa, ipa: at } : { pa, ipa: at, l1cd };
  }

  /**
   * The translation of requests with SubstreamID `ssid` (or NO_SSID) through the stage 1 STE of
   * `scan`, by the hardware's own CD decode.
   *
   * @spec Arm SMMUv3 (IHI 0070) 5.2 (S1DSS, S1CDMax), 5.4, 3.4.3
   */
  private cdTranslation(scan: CdScan, ssid: number): SmmuDecodedTranslation {
    const ste = scan.ste;
    const f = this.f;
    const cfg = decodeCd(this.mem, ste, ssid, f, this.port, new SmmuCdConfig());
    const who = ssid === NO_SSID ? null : ssid;
    const s2Key = ste.s2 ? this.s2Table(ste) : undefined;
    if (cfg.bypass) {
      return s2Key === undefined
        ? { ssid: who, type: "bypass", pageTable: null }
        : { ssid: who, type: "s2", vmid: ste.vmid, pageTable: s2Key };
    }
    const index = ssid === NO_SSID ? 0 : ssid;
    const where = `CD ${index} of StreamID ${toHex(scan.sid)}`;
    const status = cfg.status;
    if (status === EVT_ID.F_STREAM_DISABLED) {
      return { ssid: who, type: "blocked", pageTable: null, event: smmuEventRef(status) };
    }
    const loc = this.locateCd(ste, index);
    const words = loc === null ? null : loadLayout(this.mem, CD, loc.pa);
    const located =
      loc === null || words === null
        ? {}
        : {
            cd: decodedEntry(CD, loc.pa, words, ste.s2 ? loc.ipa : undefined),
            ...(loc.l1cd === undefined ? {} : { l1cd: loc.l1cd }),
          };
    if (status !== CFG_OK) {
      const ipa = ste.s2 ? " (an IPA)" : "";
      let msg = "";
      if (status === EVT_ID.C_BAD_CD) {
        // A CD with V = 0 is absent, not malformed; the translation says it is blocked.
        if (words !== null && (((words[0] as number) >>> CD_V.shift) & 1) === 1)
          msg = explainCdIllegal(words, ste, f) || "ILLEGAL";
      } else if (status === EVT_ID.C_BAD_SUBSTREAMID) {
        msg = this.l1cdWhy(ste, index);
      } else if (status === EVT_ID.F_CD_FETCH) {
        msg = `the CD${ste.s1Fmt === 0 ? "" : " or its L1CD"} cannot be fetched: outside memory`;
      } else {
        msg = `the CD${ste.s1Fmt === 0 ? "" : " or its L1CD"}${ipa} is not mapped readable by stage 2 (IPA ${toHex(cfg.faultIpa)})`;
      }
      if (msg !== "") {
        const at = loc === null ? ste.s1ContextPtr + index * CD_SIZE : loc.pa;
        this.cdProblem(scan, at, where, msg, status);
      }
      return {
        ssid: who,
        type: "blocked",
        pageTable: null,
        event: smmuEventRef(status),
        ...located,
      };
    }
    const t1 = this.s1Table(ste, cfg, 1);
    return {
      ssid: who,
      type: ste.s2 ? "nested" : "s1",
      asid: cfg.asid,
      ...(ste.s2 ? { vmid: ste.vmid } : {}),
      pageTable: this.s1Table(ste, cfg, 0),
      ...(t1 === null ? {} : { ttb1Table: t1 }),
      ...(s2Key === undefined ? {} : { secondStageTable: s2Key }),
      ...located,
    };
  }

  /** Why an L1CD refuses CD `index` (C_BAD_SUBSTREAMID), or "" for an invalid (V = 0) one. */
  private l1cdWhy(ste: SmmuSteConfig, index: number): string {
    if (ste.s1Fmt !== S1FMT_4K_L2 && ste.s1Fmt !== S1FMT_64K_L2) return "";
    const leaf = ste.s1Fmt === S1FMT_4K_L2 ? CD_L2_ENTRIES_4K : CD_L2_ENTRIES_64K;
    const l1 = ste.s1ContextPtr + Math.floor(index / leaf) * L1_CD_SIZE;
    const l1pa = ste.s2 ? this.s2pa(ste, l1) : l1;
    if (l1pa < 0 || !this.inMemory(l1pa, L1_CD_SIZE)) return "";
    return this.l1cdRefusal(ste, loadLayout(this.mem, L1_CD, l1pa), leaf);
  }

  /** Why the SMMU refuses a valid L1CD, or "" (also for V = 0). The rules are decodeCd's. */
  private l1cdRefusal(ste: SmmuSteConfig, w: ArrayLike<number>, leaf: number): string {
    if (fv(L1C_V, w[0] as number, 0) === 0) return "";
    const l2 = ptrOf(w, 0, 0xfffff000);
    if (!ste.s2 && l2 >= 2 ** this.f.oas)
      return `L2Ptr ${toHex(l2)} is beyond the ${this.f.oas}-bit output address size (IDR5.OAS)`;
    if (this.f.checkReserved) {
      const rsv = reservedBitsSet(L1_CD, w);
      if (rsv.length > 0) return `reserved bits set: ${formatBits(rsv)}`;
      if (leaf === CD_L2_ENTRIES_64K && l2 % 65536 !== 0)
        return `L2Ptr ${toHex(l2)} is not 64 KiB aligned (bits [15:12] are RES0 with 1024-CD leaves)`;
    }
    return "";
  }

  /** The CDs of a stage 1 STE with S1CDMax > 0: every valid one is a translation. */
  private scanCds(scan: CdScan): void {
    const ste = scan.ste;
    const total = ste.cdLimit;
    let from = 0;
    let to = total;
    if (typeof this.ssidFilter === "number") {
      from = this.ssidFilter;
      to = Math.min(total, from + 1);
    }
    if (from >= to) return;
    if (ste.s1Fmt !== S1FMT_4K_L2 && ste.s1Fmt !== S1FMT_64K_L2) {
      this.scanCdRange(scan, ste.s1ContextPtr, 0, from, to, undefined);
      return;
    }
    const leaf = ste.s1Fmt === S1FMT_4K_L2 ? CD_L2_ENTRIES_4K : CD_L2_ENTRIES_64K;
    const where = (i: number) =>
      `L1CD of StreamID ${toHex(scan.sid)} (SubstreamIDs ${i * leaf}-${Math.min(total, (i + 1) * leaf) - 1})`;
    const w = new Uint32Array(2);
    for (let i = Math.floor(from / leaf); i * leaf < to; i++) {
      if (!this.cdEntry(scan)) return;
      const ipa = ste.s1ContextPtr + i * L1_CD_SIZE;
      const pa = ste.s2 ? this.s2pa(ste, ipa) : ipa;
      if (pa < 0) {
        const msg = `the L1CD (IPA ${toHex(ipa)}) is not mapped readable by stage 2`;
        this.cdProblem(scan, ipa, where(i), msg, -pa);
        continue;
      }
      if (!this.inMemory(pa, L1_CD_SIZE)) {
        this.cdProblem(scan, pa, where(i), "the L1CD is outside memory", EVT_ID.F_CD_FETCH);
        // The rest of the L1 table is further out.
        return;
      }
      w[0] = this.mem.read64(pa);
      w[1] = this.mem.hi;
      if (fv(L1C_V, w[0] as number, 0) === 0) continue;
      const why = this.l1cdRefusal(ste, w, leaf);
      if (why !== "") {
        this.cdProblem(
          scan,
          pa,
          where(i),
          `${why}: its SubstreamIDs are invalid`,
          EVT_ID.C_BAD_SUBSTREAMID,
        );
        continue;
      }
      const l2 = ptrOf(w, 0, 0xfffff000);
      const base = l2 - (l2 % (leaf * CD_SIZE));
      const l1cd = decodedEntry(L1_CD, pa, w, ste.s2 ? ipa : undefined);
      const first = i * leaf;
      this.scanCdRange(scan, base, first, Math.max(from, first), Math.min(to, first + leaf), l1cd);
      if (scan.truncated) return;
    }
  }

  /**
   * CD slots [from, to) of the CD array at `table` (an IPA when nested) whose slot 0 is CD
   * `first`: each valid CD becomes a translation.
   */
  private scanCdRange(
    scan: CdScan,
    table: number,
    first: number,
    from: number,
    to: number,
    l1cd: SmmuDecodedEntry | undefined,
  ): void {
    const ste = scan.ste;
    const start = table + (from - first) * CD_SIZE;
    const end = table + (to - first) * CD_SIZE;
    const where = `CD table of StreamID ${toHex(scan.sid)}`;
    if (!ste.s2 && end <= this.memLimit) this.noteNotInImage(start, end - start, where, "CD table");
    for (let chunk = start; chunk < end; ) {
      const next = Math.min(end, (Math.floor(chunk / 4096) + 1) * 4096);
      // Each page is charged (a stage 2 walk when nested), then each slot of a page with data.
      if (!this.cdEntry(scan)) return;
      const pa = ste.s2 ? this.s2pa(ste, chunk) : chunk;
      const here = chunk;
      chunk = next;
      if (pa < 0) {
        const msg = `CDs at IPA ${toHex(here)} are not mapped readable by stage 2`;
        this.cdProblem(scan, here, where, msg, -pa);
        continue;
      }
      if (!this.inMemory(pa, next - here)) {
        this.cdProblem(
          scan,
          pa,
          where,
          `CDs at ${toHex(pa)} are outside memory`,
          EVT_ID.F_CD_FETCH,
        );
        return;
      }
      // A page never written holds no valid CD; its slots cost nothing.
      if (!this.mem.isPopulated(Math.floor(pa / 4096))) continue;
      for (let at = here; at < next; at += CD_SIZE) {
        if (!this.cdEntry(scan)) return;
        const slotPa = pa + (at - here);
        if (((this.mem.read32(slotPa) >>> CD_V.shift) & 1) === 0) continue;
        const index = first + (at - table) / CD_SIZE;
        // CD 0 under S1DSS = SSID0 serves requests without a SubstreamID (listed as those).
        if (index === 0 && ste.s1Dss === S1DSS_SSID0) continue;
        if (this.translationsLeft <= 0) {
          scan.truncated = true;
          this.truncated = true;
          if (!this.translationsReported) {
            this.translationsReported = true;
            this.problem(
              slotPa,
              where,
              `stopped listing SubstreamID translations after ${this.maxTranslations} (limit maxTranslations): from this device on, only translations without a SubstreamID are listed`,
            );
          }
          return;
        }
        this.translationsLeft--;
        const t = this.cdTranslation(scan, index);
        scan.translations.push(l1cd !== undefined && t.l1cd === undefined ? { ...t, l1cd } : t);
      }
    }
  }

  // --- Page tables -------------------------------------------------------------------------------

  protected override tableName(ref: TableRef): string {
    const nested = ref.s2Key === undefined ? "" : ` (nested in ${ref.s2Key})`;
    const range = ref.stage === 1 ? ` ${ref.range === 0 ? "TTB0" : "TTB1"}` : "";
    return `stage ${ref.stage}${range} table ${ref.key}${nested}`;
  }

  protected override enumerate(ref: TableRef): SmmuDecodedPageTable {
    const walk = this.startWalk(ref);
    const g = ref.pgShift;
    const rootBits = ref.ia - levelShift(g, ref.startLevel);
    this.walkTable(walk, ref.root, ref.startLevel, 0, 0, 2 ** rootBits);
    const runs = this.finishWalk(walk);
    const mappings: SmmuMapping[] = [];
    // TTB1 input addresses are the top of the 64-bit space: 2^64 - 2^ia onwards.
    const upper = ref.range === 1 ? (1n << 64n) - (1n << BigInt(ref.ia)) : 0n;
    for (let i = 0; i < runs.length; i += 4) {
      const vpn = runs[i] as number;
      const pfn = runs[i + 1] as number;
      const pages = runs[i + 2] as number;
      const fl = runs[i + 3] as number;
      const iova = ref.range === 1 ? toHex(upper + BigInt(vpn) * 4096n) : toHex(vpn * 4096);
      const pa = toHex(pfn * 4096);
      const size = pages * 4096;
      const AF = (fl >>> 9) & 1;
      // Literal objects of one shape each (no spread): a million of them must stay cheap.
      if (ref.stage === 1) {
        const AP = fl & 3;
        const UXN = (fl >>> 2) & 1;
        mappings.push({
          iova,
          pa,
          size,
          r: true,
          w: (AP & 2) === 0,
          x: UXN === 0,
          u: (AP & 1) !== 0,
          AP,
          UXN,
          PXN: (fl >>> 3) & 1,
          AttrIndx: (fl >>> 4) & 7,
          SH: (fl >>> 7) & 3,
          AF,
          nG: (fl >>> 10) & 1,
          DBM: (fl >>> 11) & 1,
          Contiguous: (fl >>> 12) & 1,
        });
      } else {
        const S2AP = fl & 3;
        const XN = (fl >>> 2) & 3;
        mappings.push({
          iova,
          pa,
          size,
          r: (S2AP & 1) !== 0,
          w: (S2AP & 2) !== 0,
          x: (XN & 2) === 0,
          S2AP,
          XN,
          MemAttr: (fl >>> 4) & 15,
          SH: (fl >>> 8) & 3,
          AF: (fl >>> 10) & 1,
          DBM: (fl >>> 11) & 1,
          Contiguous: (fl >>> 12) & 1,
        });
      }
    }
    const idxBits = ref.ia - levelShift(g, ref.startLevel);
    const concatenated = ref.stage === 2 && idxBits > g - 3 ? 2 ** (idxBits - (g - 3)) : 1;
    return {
      stage: ref.stage,
      ...(ref.stage === 1
        ? { range: ref.range === 0 ? ("TTB0" as const) : ("TTB1" as const) }
        : {}),
      granule: 2 ** g,
      startLevel: ref.startLevel,
      ias: ref.ia,
      oas: ref.outBits,
      root: toHex(ref.root),
      ...(concatenated > 1 ? { concatenated } : {}),
      ...(ref.had ? { had: true } : {}),
      mappings,
      tablePages: walk.tablePages,
      truncated: walk.stopped,
      ...(walk.notInImage === 0 ? {} : { notInImage: walk.notInImage }),
      ...(ref.s2Key === undefined ? {} : { secondStageTable: ref.s2Key }),
    };
  }

  /**
   * The PA of each 4 KiB piece of the table at `table` (`bytes` long): itself, or for a nested
   * stage 1 its stage 2 translation as the SMMU fetches it. A piece that cannot be read (a stage
   * 2 fault, outside memory: reported) is -1, one outside the image -2. Null when the image holds
   * none of the table (counted in `notInImage`), or a limit stopped the walk.
   */
  private tablePieces(walk: Walk, table: number, bytes: number, level: number): number[] | null {
    const ref = walk.ref;
    const pieces: number[] = [];
    let holes = 0;
    for (let off = 0; off < bytes; off += 4096) {
      const chunk = Math.min(4096, bytes - off);
      // Every piece is charged before it is looked at: a hostile table may name millions of
      // unreadable ones, each costing a stage 2 walk or a coverage lookup.
      if (!this.mayRead(walk, table + off)) return null;
      this.chargePage(walk);
      let pa = table + off;
      if (ref.ste !== null) {
        pa = this.s2pa(ref.ste, table + off);
        if (pa < 0) {
          const msg = `table at IPA ${toHex(table + off)} is not mapped readable by stage 2 (${evtName(-pa)})`;
          this.tableProblem(walk, table + off, level, msg, -pa, true);
          pieces.push(-1);
          continue;
        }
      }
      if (!this.inMemory(pa, chunk)) {
        const msg = `table ${toHex(pa)} is outside memory`;
        this.tableProblem(walk, pa, level, msg, EVT_ID.F_WALK_EABT, true);
        pieces.push(-1);
        continue;
      }
      if (this.coverage !== null && !this.coverage.covers(pa, chunk)) {
        holes++;
        pieces.push(-2);
        continue;
      }
      pieces.push(pa);
    }
    if (holes > 0 && holes === pieces.length) {
      walk.notInImage++;
      return null;
    }
    return pieces;
  }

  /**
   * The table at `table` (nested stage 1: an IPA, each 4 KiB of it translated by stage 2 as the
   * SMMU fetches it) at `level` with `entries` descriptors, covering input pages from `baseVpn`.
   * Descriptors the walker refuses are reported and left out; the rules and their order are
   * SmmuWalker's.
   *
   * @spec Arm ARM DDI0487 D8.3 (VMSAv8-64 descriptors); Arm SMMUv3 (IHI 0070) 3.4 (address sizes)
   */
  private walkTable(
    walk: Walk,
    table: number,
    level: number,
    baseVpn: number,
    hier: number,
    entries: number,
  ): void {
    const ref = walk.ref;
    const mem = this.mem;
    const g = ref.pgShift;
    const granule = 2 ** g;
    const pages = 2 ** (levelShift(g, level) - 12);
    const outLimit = 2 ** ref.outBits;
    const bytes = entries * 8;
    if (walk.stopped) return;
    const pieces = this.tablePieces(walk, table, bytes, level);
    if (pieces === null) return;
    for (let off = 0; off < bytes; off += 4096) {
      const chunk = Math.min(4096, bytes - off);
      const pa = pieces[off / 4096] as number;
      // Unreadable (reported), or a page the image lacks: it reads as zeros.
      if (pa < 0) continue;
      // A page never written reads as zeros: no valid descriptor.
      if (!mem.isPopulated(Math.floor(pa / 4096))) continue;
      for (let i = off / 8; i < (off + chunk) / 8; i++) {
        const at = pa + (i * 8 - off);
        const lo = mem.read64(at);
        const hi = mem.hi;
        if (fv(D_VALID, lo, hi) === 0) continue;
        const isTable = fv(D_TYPE, lo, hi) !== 0 && level < 3;
        if (level === 3 && fv(D_TYPE, lo, hi) === 0) {
          const msg = "bits[1:0] are 0b01 at level 3: a reserved encoding, treated as invalid";
          this.tableProblem(walk, at, level, msg, EVT_ID.F_TRANSLATION);
          continue;
        }
        if (!isTable && level < 3 && !blockOk(g, level, ref.outBits)) {
          const need = g === 16 && level === 1 ? " without a 52-bit output size" : "";
          const msg = `a block descriptor at level ${level} is not allowed with the ${granuleName(g)} granule${need}`;
          this.tableProblem(walk, at, level, msg, EVT_ID.F_TRANSLATION);
          continue;
        }
        if (g !== 16 && (hi & LPAE_DESC_RES0_HI) !== 0) {
          const msg = `output address bits [49:48] are set, beyond what the ${granuleName(g)} granule holds`;
          this.tableProblem(walk, at, level, msg, EVT_ID.F_ADDR_SIZE);
          continue;
        }
        const oa = lpaeDescPa(lo, hi, granule);
        if (oa >= outLimit) {
          const what = isTable ? "next-level table" : "output address";
          const msg = `${what} ${toHex(oa)} is beyond the ${ref.outBits}-bit output size`;
          this.tableProblem(walk, at, level, msg, EVT_ID.F_ADDR_SIZE);
          continue;
        }
        const vpn = baseVpn + i * pages;
        if (isTable) {
          let h = hier;
          if (ref.stage === 1 && !ref.had) {
            const apt = fv(T1_APT, lo, hi);
            if ((apt & 1) !== 0) h |= H_NOU;
            if ((apt & 2) !== 0) h |= H_RO;
            if (fv(T1_UXNT, lo, hi) !== 0) h |= H_UXN;
            if (fv(T1_PXNT, lo, hi) !== 0) h |= H_PXN;
          }
          this.walkTable(walk, oa, level + 1, vpn, h, 2 ** (g - 3));
          if (walk.stopped) return;
          continue;
        }
        if (level < 3 && oa % (pages * 4096) !== 0) {
          const msg = `output address ${toHex(oa)} has bits set below the block size (RES0): the SMMU adds them to the offset`;
          this.tableProblem(walk, at, level, msg);
        }
        const sh = fv(D_SH, lo, hi);
        const af = fv(D_AF, lo, hi);
        const dbm = fv(D_DBM, lo, hi);
        const cont = fv(D_CONT, lo, hi);
        let flags: number;
        if (ref.stage === 1) {
          let ap = fv(D1_AP, lo, hi);
          if ((hier & H_NOU) !== 0) ap &= ~1;
          if ((hier & H_RO) !== 0) ap |= 2;
          const uxn = fv(D1_UXN, lo, hi) | ((hier & H_UXN) !== 0 ? 1 : 0);
          const pxn = fv(D1_PXN, lo, hi) | ((hier & H_PXN) !== 0 ? 1 : 0);
          flags =
            ap |
            (uxn << 2) |
            (pxn << 3) |
            (fv(D1_ATTRINDX, lo, hi) << 4) |
            (sh << 7) |
            (af << 9) |
            (fv(D1_NG, lo, hi) << 10) |
            (dbm << 11) |
            (cont << 12);
        } else {
          flags =
            fv(D2_S2AP, lo, hi) |
            (fv(D2_XN, lo, hi) << 2) |
            (fv(D2_MEMATTR, lo, hi) << 4) |
            (sh << 8) |
            (af << 10) |
            (dbm << 11) |
            (cont << 12);
        }
        if (!this.leaf(walk, at, vpn, oa / 4096, pages, flags)) return;
      }
    }
  }
}

/**
 * Decode the structures STRTAB_BASE and STRTAB_BASE_CFG select in `mem`: every StreamID with a
 * valid STE, its translations (requests without a SubstreamID, and each valid CD), and every
 * page table they use, enumerated once into coalesced mappings. Returns a one-line message
 * instead when a register value does not fit its register.
 *
 * Whether an STE or CD is usable, and how a nested CD is fetched through stage 2, is the hardware
 * model's decode (`decodeSteWords`, `decodeCd`, `SmmuWalker.fetchIpa`) on `features`; the
 * problems explain its verdicts. A pure function of `mem` and `options`: nothing is written.
 *
 * Never throws, and its work is bounded whatever `mem` holds: the limits (`SMMU_DECODE_LIMITS`,
 * or the `max*` options) cap stream-table and CD entries read, devices, translations, table pages,
 * mappings and problems, and a document cut short by one has `truncated` set and a problem naming
 * the limit. With `coverage`, structures the image does not hold are noted (they read as zeros).
 *
 * @spec Arm SMMUv3 (IHI 0070) 5.1-5.4 (stream table, STE, CD tables, CD), 3.4, 6.3.24-6.3.25
 */
export function decodeSmmu(
  mem: PhysMemory,
  options: SmmuDecodeOptions,
): SmmuDecodeDocument | string {
  const f = options.features ?? DEFAULT_SMMU_FEATURES;
  const st = smmuStreamTableOf(options.strtabBase, options.strtabCfg, f);
  if (typeof st === "string") return st;
  const filter = options.ssid;
  const d = new SmmuDecoder(mem, f, st, options.device, filter, options);
  for (const note of st.notes) d.problem(st.base, "stream table", note);
  if (st.base >= mem.pfnLimit * 4096) {
    d.problem(
      st.base,
      "stream table",
      "the stream table is outside memory: every STE fetch aborts",
      EVT_ID.F_STE_FETCH,
    );
  } else d.decodeStreamTable();
  const pageTables = options.mappings === false ? {} : d.pageTables();
  d.finishProblems();
  const u64 = BigInt.asUintN(64, BigInt(options.strtabBase));
  return {
    arch: "smmu",
    streamTable: {
      address: toHex(st.base),
      format: st.fmt === STRTAB_FMT_2LVL ? "2-level" : "linear",
      log2size: st.log2size,
      ...(st.fmt === STRTAB_FMT_2LVL ? { split: st.split } : {}),
    },
    devices: d.devices,
    pageTables,
    strtabBase: toHex(u64, 16),
    strtabCfg: toHex(BigInt(options.strtabCfg), 8),
    problems: d.problems,
    truncated: d.truncated,
  };
}

/**
 * The translation a request from `sid` with `ssid` (null: none) gets, as `decodeSmmu` describes
 * it; null when the StreamID has no valid STE or the registers select nothing. No page table is
 * enumerated.
 */
export function lookupSmmuTranslation(
  mem: PhysMemory,
  options: {
    strtabBase: bigint | number;
    strtabCfg: bigint | number;
    sid: number;
    ssid: number | null;
    features?: SmmuFeatures;
  },
): SmmuDecodedTranslation | null {
  const f = options.features ?? DEFAULT_SMMU_FEATURES;
  const st = smmuStreamTableOf(options.strtabBase, options.strtabCfg, f);
  if (typeof st === "string" || options.sid >= 2 ** st.log2size) return null;
  if (st.base >= mem.pfnLimit * 4096) return null;
  // Requests without a SubstreamID need no CD scan.
  const filter = options.ssid === null ? "none" : options.ssid;
  const d = new SmmuDecoder(mem, f, st, options.sid, filter, {
    strtabBase: options.strtabBase,
    strtabCfg: options.strtabCfg,
    mappings: false,
  });
  d.decodeStreamTable();
  const dev = d.devices[0];
  if (dev === undefined) return null;
  if (options.ssid === null) return dev.translations.find((t) => t.ssid === null) ?? null;
  if (dev.config === "bypass" || dev.config === "abort" || dev.config === "s2") return null;
  return dev.translations.find((t) => t.ssid === options.ssid) ?? null;
}

// --- The human-readable form ---------------------------------------------------------------------

function formatEvent(e: SmmuEventRef | undefined): string {
  return e === undefined ? "" : `event ${toHex(e.id, 2)} ${e.name}`;
}

function formatTranslation(t: SmmuDecodedTranslation): string {
  const who = t.ssid === null ? "no SubstreamID" : `SubstreamID ${t.ssid}`;
  if (t.type === "blocked") {
    return t.event === undefined
      ? `${who}: blocked (abort STE: terminated without an event)`
      : `${who}: blocked (${formatEvent(t.event)})`;
  }
  if (t.type === "bypass") return `${who}: bypass`;
  if (t.type === "s2") return `${who}: stage 2, VMID ${t.vmid}, table ${t.pageTable}`;
  const ttb0 = t.pageTable === null ? "TTB0 disabled" : `table ${t.pageTable}`;
  const ttb1 = t.ttb1Table === undefined ? "" : `, TTB1 table ${t.ttb1Table}`;
  const nested = t.type === "nested" ? `, VMID ${t.vmid}, second stage ${t.secondStageTable}` : "";
  return `${who}: ${t.type === "nested" ? "nested" : "stage 1"}, ASID ${t.asid}, ${ttb0}${ttb1}${nested}`;
}

/** The columns of one mapping line: input range, output, size, permissions and attributes. */
function mappingColumns(m: SmmuMapping): MappingColumns {
  let perms = `${m.r ? "r" : "-"}${m.w ? "w" : "-"}${m.x ? "x" : "-"}`;
  const attrs: string[] = [];
  if ("AP" in m) {
    if (m.u) perms += " user";
    if (m.PXN) attrs.push("PXN");
    attrs.push(`AttrIndx=${m.AttrIndx}`, `SH=${m.SH}`);
    if (m.nG) attrs.push("nG");
  } else {
    attrs.push(`MemAttr=${toHex(m.MemAttr)}`, `SH=${m.SH}`);
  }
  if (!m.AF) attrs.push("AF=0");
  if (m.DBM) attrs.push("DBM");
  if (m.Contiguous) attrs.push("Contiguous");
  return [mappingRange(m.iova, m.size), m.pa, formatSize(m.size), `${perms}  ${attrs.join(" ")}`];
}

/** Who walks each page table, by key. */
function tableUsers(doc: SmmuDecodeDocument): Map<string, string[]> {
  const users = new Map<string, string[]>();
  for (const dev of doc.devices) {
    const sid = `sid ${toHex(dev.sid)}`;
    for (const t of dev.translations) {
      const who = t.ssid === null ? sid : `${sid} ssid ${t.ssid}`;
      addTableUser(users, t.pageTable, who);
      addTableUser(users, t.ttb1Table, who);
      addTableUser(users, t.secondStageTable, `${who} (stage 2)`);
    }
  }
  return users;
}

/**
 * The decode document as text: a summary, then per StreamID its STE (and L1STD), CD table and
 * translations (each with its CD), then each page table with who uses it and its coalesced
 * mappings in aligned columns, then the problems.
 */
export function formatSmmuDecode(doc: SmmuDecodeDocument): string {
  const lines: string[] = [];
  const st = doc.streamTable;
  const split = st.split === undefined ? "" : `, SPLIT ${st.split}`;
  lines.push(
    `SMMUv3 stream table ${st.address} (${st.format}, 2^${st.log2size} StreamIDs${split}; STRTAB_BASE ${doc.strtabBase}, STRTAB_BASE_CFG ${doc.strtabCfg})`,
  );
  lines.push(formatSummary(doc, "no StreamID has a valid STE"));
  let l1 = "";
  const devs = doc.devices;
  for (let i = 0; i < devs.length; i++) {
    const dev = devs[i] as SmmuDecodedDevice;
    if (dev.l1std !== undefined && dev.l1std.address !== l1) {
      l1 = dev.l1std.address;
      lines.push("");
      lines.push(`L1STD @${dev.l1std.address}  ${formatEntry(dev.l1std, LAYOUTS)}`);
    }
    lines.push("");
    // A run of identical abort STEs (new kernels fill whole tables with them): one line.
    let last = i;
    while (
      dev.config === "abort" &&
      last + 1 < devs.length &&
      (devs[last + 1] as SmmuDecodedDevice).sid === (devs[last] as SmmuDecodedDevice).sid + 1 &&
      (devs[last + 1] as SmmuDecodedDevice).config === "abort" &&
      (devs[last + 1] as SmmuDecodedDevice).l1std?.address === dev.l1std?.address &&
      (devs[last + 1] as SmmuDecodedDevice).ste.raw.join() === dev.ste.raw.join()
    )
      last++;
    if (last > i) {
      const to = devs[last] as SmmuDecodedDevice;
      lines.push(
        `sid ${toHex(dev.sid)}-${toHex(to.sid)} (${last - i + 1} StreamIDs): abort, STE ${formatEntry(dev.ste, LAYOUTS)} each (first @${dev.ste.address})`,
      );
      i = last;
      continue;
    }
    const extra = dev.truncated ? ", CD list truncated" : "";
    lines.push(`sid ${toHex(dev.sid)} (${dev.sid}): ${dev.config}${extra}`);
    lines.push(`  STE    @${dev.ste.address}  ${formatEntry(dev.ste, LAYOUTS)}`);
    if (dev.cdTable !== undefined) {
      const c = dev.cdTable;
      lines.push(
        `  CD table ${c.address}${c.ipa ? " (IPA)" : ""} (${c.format}, ${count(c.entries, "CD")}), S1DSS ${c.s1dss}`,
      );
    }
    for (const t of dev.translations) {
      lines.push(`  ${formatTranslation(t)}`);
      if (t.l1cd !== undefined) {
        const ipa = t.l1cd.ipa === undefined ? "" : ` (IPA ${t.l1cd.ipa})`;
        lines.push(`    L1CD @${t.l1cd.address}${ipa}  ${formatEntry(t.l1cd, LAYOUTS)}`);
      }
      if (t.cd !== undefined) {
        const ipa = t.cd.ipa === undefined ? "" : ` (IPA ${t.cd.ipa})`;
        lines.push(`    CD   @${t.cd.address}${ipa}  ${formatEntry(t.cd, LAYOUTS)}`);
      }
    }
  }
  const users = tableUsers(doc);
  for (const [key, table] of Object.entries(doc.pageTables)) {
    lines.push("");
    const range = table.range === undefined ? "" : ` ${table.range}`;
    const nested =
      table.secondStageTable === undefined
        ? ""
        : `, nested: table and output addresses are IPAs, through ${table.secondStageTable}`;
    const concat = table.concatenated === undefined ? "" : ` (${table.concatenated} concatenated)`;
    const note = formatTableNotes(
      table,
      "table",
      table.had ? ["hierarchical attributes disabled"] : [],
    );
    lines.push(
      `page table ${key}: stage ${table.stage}${range}, ${granuleName(Math.log2(table.granule))} granule, start level ${table.startLevel}${concat}, ${table.ias}-bit input, ${table.oas}-bit output${nested}, ${count(table.mappings.length, "mapping")}${note}${formatUsers(users.get(key))}`,
    );
    pushMappingLines(lines, table.mappings, mappingColumns);
  }
  pushProblemLines(lines, doc.problems, (p) =>
    p.event === undefined ? "" : ` [${formatEvent(p.event)}]`,
  );
  return `${lines.join("\n")}\n`;
}
