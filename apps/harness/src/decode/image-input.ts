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
 * Build the physical memory an image describes. With `raw`, the bytes are stored from `base` in a
 * 52-bit memory; otherwise the format is recognised by content (ELF magic: an ELF64 core as QEMU's
 * `dump-guest-memory` or kdump writes it; "IOMMUSIM": the sparse image) and anything else is
 * refused with a hint to pass `--raw --base ADDR`. `source` names the file in messages.
 */
export function loadImageBytes(
  bytes: Uint8Array,
  source: string,
  options: { raw?: boolean; base?: number } = {},
): PhysMemory | ImageInputError {
  const wrap = (err: ImageError) => new ImageInputError("--image", `${source}: ${err.message}`);
  if (options.raw) {
    if (options.base === undefined) return new ImageInputError("--raw", "needs --base ADDR");
    const mem = new PhysMemory();
    const done = loadRawImage(mem, bytes, options.base);
    return done instanceof ImageError ? wrap(done) : mem;
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
  const loaded = format === "elf-core" ? loadElfCore(bytes) : loadSparseImage(bytes);
  return loaded instanceof ImageError ? wrap(loaded) : loaded;
}

/**
 * Read `--image FILE` (and `--raw --base ADDR`) into physical memory, or say in one line why not:
 * a missing option, a file that cannot be read, or an image that does not parse.
 */
export function readImageInput(
  options: ImageInputOptions,
  readFile: ReadFile = readFileSync,
): PhysMemory | ImageInputError {
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
  return loadImageBytes(bytes, options.image, { raw: options.raw, base: options.base });
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
