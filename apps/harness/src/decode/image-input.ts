// The memory a decode or translate command reads: an image file recognised by its content (an
// ELF64 core or the project's sparse image), or a raw RAM dump placed at a given base address.

import { readFileSync } from "node:fs";
import {
  ImageError,
  loadElfCore,
  loadRawImage,
  loadSparseImage,
  PhysMemory,
} from "@iommu-sim/iommu-core/platform";

/** What the user asked for: `--image FILE`, optionally with `--raw --base ADDR`. */
export interface ImageInputOptions {
  /** The file to read (`--image`). */
  readonly image?: string;
  /** Read the file as a raw RAM dump (`--raw`); needs `base`. */
  readonly raw?: boolean;
  /** Physical address of the dump's first byte (`--base`), for `raw` only. */
  readonly base?: number;
}

/**
 * Why no memory could be built: `where` names the option (`--image`, `--raw`, `--base`), `what`
 * says what is wrong, with the file name and, for a malformed image, the loader's place and
 * offset. `message` is the one line the CLI prints after `iommu-sim: `.
 */
export class ImageInputError {
  readonly message: string;

  constructor(
    readonly where: string,
    readonly what: string,
  ) {
    this.message = `${where}: ${what}`;
  }
}

/** Reads a whole file (injected so tests can stand in for the file system). */
export type ReadFile = (path: string) => Uint8Array;

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];
/** "IOMMUSIM": the first bytes of the project's sparse image. */
const SPARSE_MAGIC = [0x49, 0x4f, 0x4d, 0x4d, 0x55, 0x53, 0x49, 0x4d];

/** The format of an image, recognised by its first bytes, or null for anything else. */
export function detectImageFormat(bytes: Uint8Array): "elf-core" | "sparse" | null {
  const starts = (magic: readonly number[]) =>
    bytes.length >= magic.length && magic.every((b, i) => bytes[i] === b);
  if (starts(ELF_MAGIC)) return "elf-core";
  if (starts(SPARSE_MAGIC)) return "sparse";
  return null;
}

/**
 * The physical ranges an image holds: the PT_LOAD segments of an ELF core (p_paddr to p_paddr +
 * p_memsz), or the span of a raw dump. An address outside them is a hole: no memory there on the
 * machine (QEMU's dump of guest RAM skips MMIO holes), or a page the dump tool left out (kdump's
 * makedumpfile drops zero and free pages; this project's writers drop zero frames). Either way it
 * reads as zeros, which the decoder says where it matters.
 */
export class ImageCoverage {
  /** Sorted, merged [start, end) ranges, as flat pairs. */
  private readonly bounds: number[] = [];

  constructor(ranges: ReadonlyArray<readonly [number, number]>) {
    const sorted = ranges.filter(([a, b]) => b > a).sort((x, y) => x[0] - y[0]);
    for (const [start, end] of sorted) {
      const last = this.bounds.length - 1;
      if (last > 0 && start <= (this.bounds[last] as number)) {
        this.bounds[last] = Math.max(this.bounds[last] as number, end);
      } else this.bounds.push(start, end);
    }
  }

  /** The merged ranges, ascending. */
  get ranges(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let i = 0; i < this.bounds.length; i += 2) {
      out.push([this.bounds[i] as number, this.bounds[i + 1] as number]);
    }
    return out;
  }

  /** Whether [pa, pa + bytes) lies wholly inside the image. */
  covers(pa: number, bytes: number): boolean {
    const b = this.bounds;
    // The last range starting at or below pa, by binary search over the starts.
    let lo = 0;
    let hi = b.length / 2 - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if ((b[2 * mid] as number) <= pa) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found >= 0 && pa + bytes <= (b[2 * found + 1] as number);
  }
}

/** An image read into memory: its format, and which ranges it holds (null: all of memory). */
export interface MemoryImage {
  readonly mem: PhysMemory;
  readonly format: "elf-core" | "sparse" | "raw";
  /**
   * The ranges the image holds; null for the sparse image, which keeps only frames with data and
   * so cannot tell a hole from a zero page.
   */
  readonly coverage: ImageCoverage | null;
}

/** The PT_LOAD ranges of an ELF core `loadElfCore` accepted (so its headers are sound). */
function elfLoadRanges(bytes: Uint8Array): Array<[number, number]> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const u64 = (at: number) => view.getUint32(at + 4, true) * 2 ** 32 + view.getUint32(at, true);
  const phoff = u64(32);
  let phnum = view.getUint16(56, true);
  // PN_XNUM: the count is sh_info of section header 0.
  if (phnum === 0xffff) phnum = view.getUint32(u64(40) + 44, true);
  const ranges: Array<[number, number]> = [];
  for (let k = 0; k < phnum; k++) {
    const ph = phoff + k * 56;
    if (ph + 56 > bytes.length) break;
    if (view.getUint32(ph, true) !== 1) continue; // PT_LOAD
    const pa = u64(ph + 24);
    ranges.push([pa, pa + u64(ph + 40)]);
  }
  return ranges;
}

/**
 * Build the physical memory an image describes, with the ranges it covers. With `raw`, the bytes
 * are stored from `base` in a 52-bit memory; otherwise the format is recognised by content (ELF
 * magic: an ELF64 core as QEMU's `dump-guest-memory` or kdump writes it; "IOMMUSIM": the sparse
 * image) and anything else is refused with a hint to pass `--raw --base ADDR`. `source` names the
 * file in messages.
 */
export function loadMemoryImage(
  bytes: Uint8Array,
  source: string,
  options: { raw?: boolean; base?: number } = {},
): MemoryImage | ImageInputError {
  const wrap = (err: ImageError) => new ImageInputError("--image", `${source}: ${err.message}`);
  if (options.raw) {
    if (options.base === undefined) return new ImageInputError("--raw", "needs --base ADDR");
    const mem = new PhysMemory();
    const done = loadRawImage(mem, bytes, options.base);
    if (done instanceof ImageError) return wrap(done);
    const coverage = new ImageCoverage([[options.base, options.base + bytes.length]]);
    return { mem, format: "raw", coverage };
  }
  if (options.base !== undefined) {
    return new ImageInputError("--base", "applies only to a raw dump: add --raw");
  }
  const format = detectImageFormat(bytes);
  if (format === null) {
    return new ImageInputError(
      "--image",
      `${source}: neither an ELF core nor an iommu-sim sparse image; for a raw RAM dump pass --raw --base ADDR`,
    );
  }
  if (format === "sparse") {
    const loaded = loadSparseImage(bytes);
    return loaded instanceof ImageError ? wrap(loaded) : { mem: loaded, format, coverage: null };
  }
  const loaded = loadElfCore(bytes);
  if (loaded instanceof ImageError) return wrap(loaded);
  return { mem: loaded, format, coverage: new ImageCoverage(elfLoadRanges(bytes)) };
}

/** `loadMemoryImage`, for callers that need only the memory. */
export function loadImageBytes(
  bytes: Uint8Array,
  source: string,
  options: { raw?: boolean; base?: number } = {},
): PhysMemory | ImageInputError {
  const image = loadMemoryImage(bytes, source, options);
  return image instanceof ImageInputError ? image : image.mem;
}

/**
 * Read `--image FILE` (and `--raw --base ADDR`) into physical memory, with the ranges the image
 * covers, or say in one line why not: a missing option, a file that cannot be read, or an image
 * that does not parse.
 */
export function readMemoryImage(
  options: ImageInputOptions,
  readFile: ReadFile = readFileSync,
): MemoryImage | ImageInputError {
  if (options.image === undefined) {
    return new ImageInputError("--image", "missing: name a memory image (--image FILE)");
  }
  if (options.raw && options.base === undefined) {
    return new ImageInputError("--raw", "needs --base ADDR");
  }
  if (!options.raw && options.base !== undefined) {
    return new ImageInputError("--base", "applies only to a raw dump: add --raw");
  }
  let bytes: Uint8Array;
  try {
    bytes = readFile(options.image);
  } catch (err) {
    return new ImageInputError("--image", `cannot read ${options.image}: ${describeFsError(err)}`);
  }
  return loadMemoryImage(bytes, options.image, { raw: options.raw, base: options.base });
}

/** `readMemoryImage`, for callers that need only the memory. */
export function readImageInput(
  options: ImageInputOptions,
  readFile: ReadFile = readFileSync,
): PhysMemory | ImageInputError {
  const image = readMemoryImage(options, readFile);
  return image instanceof ImageInputError ? image : image.mem;
}

/** A file-system error in a few words: "no such file or directory", "is a directory", ... */
function describeFsError(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  switch (code) {
    case "ENOENT":
      return "no such file or directory";
    case "EISDIR":
      return "is a directory";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "ERR_FS_FILE_TOO_LARGE":
      return "file too large to read at once";
    default:
      return err instanceof Error
        ? err.message.replace(/\s*\n\s*/g, " ")
        : String(err).replace(/\s*\n\s*/g, " ");
  }
}
