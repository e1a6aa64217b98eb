// Memory images: how PhysMemory is saved and loaded (the project's sparse image format, raw
// binaries, and ELF64 core files as QEMU's dump-guest-memory and kdump's /proc/vmcore write them).

import { PAGE_SHIFT, PAGE_SIZE, PhysMemory } from "./phys-memory.js";
import { TWO32, toBig, toHex } from "./u64.js";

/**
 * What is wrong with an image and where: returned by the loaders, never thrown. `message` reads
 * like `ELF core: program header 3 (offset 0xe8): segment extends past the end of the file`.
 */
export class ImageError {
  /** The one-line description: format, place, offset, problem. */
  readonly message: string;

  constructor(
    /** The format being read: "sparse image", "ELF core" or "raw image". */
    readonly format: string,
    /** The structure at fault, e.g. "header", "run 2", "program header 3". */
    readonly where: string,
    /** Byte offset in the image of the structure or field at fault. */
    readonly offset: number,
    /** What is wrong with it. */
    readonly what: string,
  ) {
    this.message = `${format}: ${where} (offset ${toHex(offset)}): ${what}`;
  }

  toString(): string {
    return this.message;
  }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/** Options of the image writers. */
export interface SaveImageOptions {
  /**
   * Leave out populated frames that hold only zeros (default true): they read the same as frames
   * never written, so the loaded memory has the same contents, with fewer populated frames.
   */
  omitZeroFrames?: boolean;
}

/** A run of consecutive populated frames. */
interface FrameRun {
  pfn: number;
  count: number;
}

function isZero(bytes: Uint8Array, offset: number, length: number): boolean {
  for (let i = offset, end = offset + length; i < end; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** The populated frames of `mem` as ascending runs of consecutive frame numbers. */
function frameRuns(mem: PhysMemory, omitZeroFrames: boolean): FrameRun[] {
  const runs: FrameRun[] = [];
  let last: FrameRun | undefined;
  for (const pfn of mem.populatedFrames()) {
    const frame = mem.frameBytes(pfn) as Uint8Array;
    if (omitZeroFrames && isZero(frame, 0, PAGE_SIZE)) continue;
    if (last !== undefined && last.pfn + last.count === pfn) last.count++;
    else {
      last = { pfn, count: 1 };
      runs.push(last);
    }
  }
  return runs;
}

/** Copies the frames of `run` into `out`, back to back from `at`. */
function copyRun(mem: PhysMemory, run: FrameRun, out: Uint8Array, at: number): void {
  for (let f = 0; f < run.count; f++) {
    out.set(mem.frameBytes(run.pfn + f) as Uint8Array, at + f * PAGE_SIZE);
  }
}

/**
 * Store `length` bytes of `src` from `offset` at `pa`, frame by frame: an all-zero piece is stored
 * with `fill`, which leaves an unpopulated frame unpopulated, so a mostly empty image keeps memory
 * sparse. Returns false if the memory refused any part (a bus error from its fault hook).
 */
function storeSparse(mem: PhysMemory, pa: number, src: Uint8Array, offset: number, length: number) {
  let ok = true;
  let done = 0;
  while (done < length) {
    const at = pa + done;
    const n = Math.min(length - done, PAGE_SIZE - (at % PAGE_SIZE));
    const piece = isZero(src, offset + done, n)
      ? mem.fill(at, n, 0)
      : mem.writeBytes(at, src, offset + done, n);
    ok &&= piece;
    done += n;
  }
  return ok;
}

/** Zero [pa, pa + length) where memory is populated; unpopulated frames already read as zero. */
function zeroPopulated(mem: PhysMemory, pa: number, length: number): boolean {
  if (length === 0 || mem.populatedFrameCount === 0) return true;
  let ok = true;
  const end = pa + length;
  const first = Math.floor(pa / PAGE_SIZE);
  const last = Math.floor((end - 1) / PAGE_SIZE);
  const zero = (pfn: number) => {
    const from = Math.max(pa, pfn * PAGE_SIZE);
    const to = Math.min(end, (pfn + 1) * PAGE_SIZE);
    if (from < to) ok = mem.fill(from, to - from, 0) && ok;
  };
  // Walk whichever is shorter: the frames of the range, or the populated frames.
  if (last - first < mem.populatedFrameCount) {
    for (let pfn = first; pfn <= last; pfn++) if (mem.isPopulated(pfn)) zero(pfn);
  } else {
    for (const pfn of mem.populatedFrames()) zero(pfn);
  }
  return ok;
}

/** Reads the little-endian u64 at `at` as a number, or -1 when it is 2^52 or more. */
function u64At(view: DataView, at: number): number {
  const hi = view.getUint32(at + 4, true);
  if (hi >= 1 << 20) return -1;
  return hi * TWO32 + view.getUint32(at, true);
}

function hexU64At(view: DataView, at: number): string {
  return toHex(toBig(view.getUint32(at + 4, true), view.getUint32(at, true)));
}

function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, value >>> 0, true);
  view.setUint32(at + 4, Math.floor(value / TWO32), true);
}

// CRC-32 (the IEEE polynomial, reflected, as zlib and Ethernet use it) over the sparse image.
const CRC_TABLE = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  CRC_TABLE[n] = c >>> 0;
}

/** CRC-32 of bytes[0, length), as a uint32. */
function crc32(bytes: Uint8Array, length: number): number {
  let c = 0xffffffff;
  for (let i = 0; i < length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// The sparse image format (docs/memory-image.md)

const SPARSE = "sparse image";
/** "IOMMUSIM" in ASCII. */
const SPARSE_MAGIC = [0x49, 0x4f, 0x4d, 0x4d, 0x55, 0x53, 0x49, 0x4d];
/** The format version this code writes and the only one it reads. */
export const SPARSE_IMAGE_VERSION = 1;
const SPARSE_HEADER = 32;
const SPARSE_RUN_HEADER = 16;
const SPARSE_TRAILER = 4;
/** Header flag: populated all-zero frames were left out. */
const FLAG_ZERO_FRAMES_OMITTED = 1;

/**
 * Save `mem` in the sparse image format: a header, then each run of consecutive populated frames
 * (ascending) with its frame bytes, then a CRC-32. Deterministic: the same memory contents (and
 * populated frames, when zero frames are kept) give the same bytes.
 */
export function saveSparseImage(mem: PhysMemory, options: SaveImageOptions = {}): Uint8Array {
  const omit = options.omitZeroFrames ?? true;
  const runs = frameRuns(mem, omit);
  let frames = 0;
  for (const run of runs) frames += run.count;
  const size =
    SPARSE_HEADER + runs.length * SPARSE_RUN_HEADER + frames * PAGE_SIZE + SPARSE_TRAILER;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out.set(SPARSE_MAGIC, 0);
  view.setUint16(8, SPARSE_IMAGE_VERSION, true);
  out[10] = mem.paBits;
  out[11] = omit ? FLAG_ZERO_FRAMES_OMITTED : 0;
  view.setUint32(12, runs.length, true);
  view.setUint32(16, frames, true);
  let at = SPARSE_HEADER;
  for (const run of runs) {
    setU64(view, at, run.pfn);
    view.setUint32(at + 8, run.count, true);
    at += SPARSE_RUN_HEADER;
    copyRun(mem, run, out, at);
    at += run.count * PAGE_SIZE;
  }
  view.setUint32(at, crc32(out, at), true);
  return out;
}

/**
 * Load a sparse image into `mem` (whose address space must hold every run), or into a new
 * PhysMemory with the image's address width. The whole image is checked before anything is
 * written, so an ImageError (returned, never thrown) leaves `mem` untouched; only a write that
 * `mem`'s fault hook refuses stops a load half way.
 */
export function loadSparseImage(bytes: Uint8Array, mem?: PhysMemory): PhysMemory | ImageError {
  const fail = (where: string, offset: number, what: string) =>
    new ImageError(SPARSE, where, offset, what);
  const len = bytes.length;
  if (len < SPARSE_HEADER) {
    return fail(
      "header",
      0,
      `the file is ${len} bytes, shorter than the ${SPARSE_HEADER}-byte header`,
    );
  }
  for (let i = 0; i < SPARSE_MAGIC.length; i++) {
    if (bytes[i] !== SPARSE_MAGIC[i]) return fail("header", 0, 'bad magic: not "IOMMUSIM"');
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, len);
  const version = view.getUint16(8, true);
  if (version !== SPARSE_IMAGE_VERSION) {
    return fail(
      "header",
      8,
      `format version ${version} is not supported (only ${SPARSE_IMAGE_VERSION} is)`,
    );
  }
  const paBits = bytes[10];
  if (paBits < 12 || paBits > 52) {
    return fail("header", 10, `paBits ${paBits} is outside [12, 52]`);
  }
  const flags = bytes[11];
  if ((flags & ~FLAG_ZERO_FRAMES_OMITTED) !== 0) {
    return fail("header", 11, `unknown flag bits ${toHex(flags & ~FLAG_ZERO_FRAMES_OMITTED)}`);
  }
  const runCount = view.getUint32(12, true);
  const frameCount = view.getUint32(16, true);
  for (let at = 20; at < SPARSE_HEADER; at += 4) {
    if (view.getUint32(at, true) !== 0) return fail("header", at, "reserved word is not zero");
  }
  const pfnLimit = mem === undefined ? 2 ** (paBits - PAGE_SHIFT) : mem.pfnLimit;
  const space = mem === undefined ? `${paBits}-bit` : `target memory's ${mem.paBits}-bit`;

  // Pass 1: check every run, so a bad image writes nothing.
  let at = SPARSE_HEADER;
  let prevEnd = 0;
  let frames = 0;
  for (let r = 0; r < runCount; r++) {
    const where = `run ${r}`;
    if (at + SPARSE_RUN_HEADER > len)
      return fail(where, at, "run header extends past the end of the file");
    const pfn = u64At(view, at);
    const count = view.getUint32(at + 8, true);
    if (pfn < 0 || pfn >= pfnLimit) {
      return fail(
        where,
        at,
        `first frame ${hexU64At(view, at)} is beyond the ${space} address space`,
      );
    }
    if (count === 0) return fail(where, at + 8, "run holds no frames");
    if (view.getUint32(at + 12, true) !== 0)
      return fail(where, at + 12, "reserved word is not zero");
    if (pfn < prevEnd) {
      return fail(
        where,
        at,
        `first frame ${toHex(pfn)} is not above the previous run's last (${toHex(prevEnd - 1)})`,
      );
    }
    if (pfn + count > pfnLimit) {
      return fail(
        where,
        at,
        `frames ${toHex(pfn)}-${toHex(pfn + count - 1)} run past the ${space} address space`,
      );
    }
    if (at + SPARSE_RUN_HEADER + count * PAGE_SIZE > len) {
      return fail(where, at, `the run's ${count} frames extend past the end of the file`);
    }
    prevEnd = pfn + count;
    frames += count;
    at += SPARSE_RUN_HEADER + count * PAGE_SIZE;
  }
  if (frames !== frameCount) {
    return fail(
      "header",
      16,
      `frame count ${frameCount} does not match the ${frames} frames of the runs`,
    );
  }
  if (len - at < SPARSE_TRAILER) return fail("checksum", at, "the file ends before the checksum");
  if (len - at > SPARSE_TRAILER) {
    return fail(
      "checksum",
      at + SPARSE_TRAILER,
      `${len - at - SPARSE_TRAILER} unexpected bytes after the checksum`,
    );
  }
  const stored = view.getUint32(at, true);
  const computed = crc32(bytes, at);
  if (stored !== computed) {
    return fail(
      "checksum",
      at,
      `CRC-32 is ${toHex(stored, 8)}, the contents give ${toHex(computed, 8)}`,
    );
  }

  // Pass 2: store.
  const target = mem ?? new PhysMemory({ paBits });
  at = SPARSE_HEADER;
  for (let r = 0; r < runCount; r++) {
    const pfn = u64At(view, at);
    const count = view.getUint32(at + 8, true);
    if (!target.writeBytes(pfn * PAGE_SIZE, bytes, at + SPARSE_RUN_HEADER, count * PAGE_SIZE)) {
      return fail(`run ${r}`, at, "the target memory refused the write (bus error)");
    }
    at += SPARSE_RUN_HEADER + count * PAGE_SIZE;
  }
  return target;
}

// ---------------------------------------------------------------------------------------------
// Raw binaries

/**
 * Store a raw binary image at `basePa`. All-zero pages of the image leave unpopulated frames
 * unpopulated. Returns 0, or an ImageError (nothing written) when the image does not fit in the
 * address space; a write refused by the fault hook stops the load with an ImageError.
 */
export function loadRawImage(mem: PhysMemory, bytes: Uint8Array, basePa: number): 0 | ImageError {
  const limit = mem.pfnLimit * PAGE_SIZE;
  if (!Number.isSafeInteger(basePa) || basePa < 0 || basePa >= limit) {
    return new ImageError(
      "raw image",
      "data",
      0,
      `base address ${basePa} is outside the ${mem.paBits}-bit physical address space`,
    );
  }
  if (bytes.length > limit - basePa) {
    return new ImageError(
      "raw image",
      "data",
      limit - basePa,
      `byte would land at ${toHex(limit)}, beyond the ${mem.paBits}-bit physical address space`,
    );
  }
  if (!storeSparse(mem, basePa, bytes, 0, bytes.length)) {
    return new ImageError(
      "raw image",
      "data",
      0,
      "the target memory refused the write (bus error)",
    );
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// ELF64 core files

const ELF = "ELF core";
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const SHDR_SIZE = 64;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const EV_CURRENT = 1;
const ET_CORE = 4;
const PT_LOAD = 1;
/** e_phnum value meaning "the real count is in section header 0's sh_info". */
const PN_XNUM = 0xffff;
const PF_X = 1;
const PF_W = 2;
const PF_R = 4;

/** Options of `saveElfCore`. */
export interface SaveElfCoreOptions extends SaveImageOptions {
  /** e_machine (default 0, EM_NONE; 62 is EM_X86_64, 183 EM_AARCH64, 243 EM_RISCV). */
  machine?: number;
}

interface Segment {
  index: number;
  header: number;
  pa: number;
  memsz: number;
  offset: number;
  filesz: number;
}

/**
 * Load an ELF64 little-endian core file, as QEMU's `dump-guest-memory` (ELF format) and kdump's
 * /proc/vmcore write them, into `mem` or a new 52-bit PhysMemory. Each PT_LOAD segment's file
 * bytes go to its p_paddr (the guest physical address in both; p_vaddr may be a kernel virtual
 * address and is ignored); the part of p_memsz beyond p_filesz reads as zero; PT_NOTE and other
 * segments are skipped. Every header is checked before anything is written, so an ImageError
 * (returned, never thrown) leaves `mem` untouched. 64-bit fields of 2^52 or more are rejected.
 *
 * @kernel include/uapi/linux/elf.h Elf64_Phdr
 */
export function loadElfCore(bytes: Uint8Array, mem?: PhysMemory): PhysMemory | ImageError {
  const fail = (where: string, offset: number, what: string) =>
    new ImageError(ELF, where, offset, what);
  const len = bytes.length;
  const EH = "ELF header";
  if (len < EHDR_SIZE) {
    return fail(EH, 0, `the file is ${len} bytes, shorter than the ${EHDR_SIZE}-byte ELF header`);
  }
  if (bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c || bytes[3] !== 0x46) {
    return fail(EH, 0, "bad magic: not an ELF file");
  }
  if (bytes[4] !== ELFCLASS64) return fail(EH, 4, `EI_CLASS is ${bytes[4]}, not ELFCLASS64 (2)`);
  if (bytes[5] !== ELFDATA2LSB) {
    return fail(
      EH,
      5,
      `EI_DATA is ${bytes[5]}, not ELFDATA2LSB (1): only little-endian cores are read`,
    );
  }
  if (bytes[6] !== EV_CURRENT) return fail(EH, 6, `EI_VERSION is ${bytes[6]}, not EV_CURRENT (1)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, len);
  const type = view.getUint16(16, true);
  if (type !== ET_CORE) return fail(EH, 16, `e_type is ${type}, not ET_CORE (4)`);
  const version = view.getUint32(20, true);
  if (version !== EV_CURRENT) return fail(EH, 20, `e_version is ${version}, not EV_CURRENT (1)`);
  const phoff = u64At(view, 32);
  if (phoff < 0) return fail(EH, 32, `e_phoff ${hexU64At(view, 32)} is 2^52 or more`);
  let phnum = view.getUint16(56, true);
  if (phnum === PN_XNUM) {
    // Too many segments for e_phnum: the count sits in sh_info of section header 0.
    const shoff = u64At(view, 40);
    if (shoff <= 0 || shoff > len - SHDR_SIZE) {
      return fail(
        EH,
        40,
        `e_phnum is PN_XNUM but e_shoff ${hexU64At(view, 40)} is not a section header in the file`,
      );
    }
    const shentsize = view.getUint16(58, true);
    if (shentsize !== SHDR_SIZE) return fail(EH, 58, `e_shentsize is ${shentsize}, not 64`);
    phnum = view.getUint32(shoff + 44, true);
  }
  if (phnum === 0) return mem ?? new PhysMemory();
  const phentsize = view.getUint16(54, true);
  if (phentsize !== PHDR_SIZE) return fail(EH, 54, `e_phentsize is ${phentsize}, not 56`);
  if (phoff > len || phnum * PHDR_SIZE > len - phoff) {
    const table = `the program header table (${phnum} entries at ${toHex(phoff)})`;
    return fail(EH, 32, `${table} runs past the end of the file`);
  }

  const limit = mem === undefined ? 2 ** 52 : mem.pfnLimit * PAGE_SIZE;
  const space = mem === undefined ? "52-bit" : `target memory's ${mem.paBits}-bit`;
  const segments: Segment[] = [];
  for (let k = 0; k < phnum; k++) {
    const ph = phoff + k * PHDR_SIZE;
    if (view.getUint32(ph, true) !== PT_LOAD) continue;
    const where = `program header ${k}`;
    const offset = u64At(view, ph + 8);
    const pa = u64At(view, ph + 24);
    const filesz = u64At(view, ph + 32);
    const memsz = u64At(view, ph + 40);
    if (offset < 0) return fail(where, ph, `p_offset ${hexU64At(view, ph + 8)} is 2^52 or more`);
    if (pa < 0) return fail(where, ph, `p_paddr ${hexU64At(view, ph + 24)} is 2^52 or more`);
    if (filesz < 0) return fail(where, ph, `p_filesz ${hexU64At(view, ph + 32)} is 2^52 or more`);
    if (memsz < 0) return fail(where, ph, `p_memsz ${hexU64At(view, ph + 40)} is 2^52 or more`);
    if (filesz > memsz) {
      return fail(where, ph, `p_filesz ${toHex(filesz)} is larger than p_memsz ${toHex(memsz)}`);
    }
    // A segment with no file bytes (all zero fill) may name any offset.
    if (filesz > 0 && (offset > len || filesz > len - offset)) {
      return fail(where, ph, "segment extends past the end of the file");
    }
    if (memsz === 0) continue;
    if (pa >= limit || memsz > limit - pa) {
      return fail(
        where,
        ph,
        `segment ${toHex(pa)}+${toHex(memsz)} lies beyond the ${space} physical address space`,
      );
    }
    segments.push({ index: k, header: ph, pa, memsz, offset, filesz });
  }
  const byPa = [...segments].sort((a, b) => a.pa - b.pa || a.index - b.index);
  for (let i = 1; i < byPa.length; i++) {
    const a = byPa[i - 1];
    const b = byPa[i];
    if (b.pa < a.pa + a.memsz) {
      const [first, second] = a.index < b.index ? [a, b] : [b, a];
      const segment = `segment ${toHex(second.pa)}+${toHex(second.memsz)}`;
      const what = `${segment} overlaps that of program header ${first.index}`;
      return fail(`program header ${second.index}`, second.header, what);
    }
  }

  const target = mem ?? new PhysMemory();
  for (const s of segments) {
    const ok =
      storeSparse(target, s.pa, bytes, s.offset, s.filesz) &&
      zeroPopulated(target, s.pa + s.filesz, s.memsz - s.filesz);
    if (!ok)
      return fail(
        `program header ${s.index}`,
        s.header,
        "the target memory refused the write (bus error)",
      );
  }
  return target;
}

/**
 * Write `mem` as an ELF64 little-endian core file: one PT_LOAD per run of consecutive populated
 * frames (p_paddr and p_vaddr both the physical address), file data page-aligned after the
 * headers, PN_XNUM and a section header when there are 65535 runs or more. `loadElfCore` and
 * tools that read QEMU dumps read it back.
 *
 * @kernel include/uapi/linux/elf.h Elf64_Ehdr
 */
export function saveElfCore(mem: PhysMemory, options: SaveElfCoreOptions = {}): Uint8Array {
  const runs = frameRuns(mem, options.omitZeroFrames ?? true);
  const xnum = runs.length >= PN_XNUM;
  const headers = EHDR_SIZE + runs.length * PHDR_SIZE + (xnum ? SHDR_SIZE : 0);
  const dataStart = Math.ceil(headers / PAGE_SIZE) * PAGE_SIZE;
  let frames = 0;
  for (const run of runs) frames += run.count;
  const out = new Uint8Array(dataStart + frames * PAGE_SIZE);
  const view = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, ELFCLASS64, ELFDATA2LSB, EV_CURRENT], 0);
  view.setUint16(16, ET_CORE, true);
  view.setUint16(18, options.machine ?? 0, true);
  view.setUint32(20, EV_CURRENT, true);
  setU64(view, 32, EHDR_SIZE);
  const shoff = EHDR_SIZE + runs.length * PHDR_SIZE;
  if (xnum) setU64(view, 40, shoff);
  view.setUint16(52, EHDR_SIZE, true);
  view.setUint16(54, PHDR_SIZE, true);
  view.setUint16(56, xnum ? PN_XNUM : runs.length, true);
  if (xnum) {
    view.setUint16(58, SHDR_SIZE, true);
    view.setUint16(60, 1, true);
    view.setUint32(shoff + 44, runs.length, true);
  }
  let ph = EHDR_SIZE;
  let data = dataStart;
  for (const run of runs) {
    const pa = run.pfn * PAGE_SIZE;
    const size = run.count * PAGE_SIZE;
    view.setUint32(ph, PT_LOAD, true);
    view.setUint32(ph + 4, PF_R | PF_W | PF_X, true);
    setU64(view, ph + 8, data);
    setU64(view, ph + 16, pa);
    setU64(view, ph + 24, pa);
    setU64(view, ph + 32, size);
    setU64(view, ph + 40, size);
    copyRun(mem, run, out, data);
    ph += PHDR_SIZE;
    data += size;
  }
  return out;
}
