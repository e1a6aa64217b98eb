// Tests of how decode and translate read memory: images recognised by content, raw dumps at a base
// address, and one clear line for every way the input can be wrong.

import { mkdirSync, writeFileSync } from "node:fs";
import {
  PhysMemory,
  SPARSE_IMAGE_VERSION,
  saveElfCore,
  saveSparseImage,
} from "@iommu-sim/iommu-core/platform";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../../test/vtd-images.js";
import {
  detectImageFormat,
  ImageCoverage,
  ImageInputError,
  loadImageBytes,
  loadMemoryImage,
  readImageInput,
  readMemoryImage,
} from "./image-input.js";

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** A memory with a few recognisable words. */
function sample(): PhysMemory {
  const mem = new PhysMemory();
  mem.write64(0x1000, 0x1122_3344, 0x5566_7788);
  mem.write32(0x20_0000, 0xdead_beef);
  mem.write32(0x1_2345_6000, 0xcafe_f00d);
  return mem;
}

function expectSample(mem: PhysMemory | ImageInputError): void {
  expect(mem).toBeInstanceOf(PhysMemory);
  const m = mem as PhysMemory;
  expect(m.read64Big(0x1000)).toBe(0x5566_7788_1122_3344n);
  expect(m.read32(0x20_0000)).toBe(0xdead_beef);
  expect(m.read32(0x1_2345_6000)).toBe(0xcafe_f00d);
  expect(m.read32(0x3000)).toBe(0);
}

function expectError(got: PhysMemory | ImageInputError, where: string, what: RegExp): void {
  expect(got).toBeInstanceOf(ImageInputError);
  const e = got as ImageInputError;
  expect(e.where).toBe(where);
  expect(e.what).toMatch(what);
  expect(e.message).toBe(`${where}: ${e.what}`);
  expect(e.message).not.toContain("\n");
}

describe("detectImageFormat", () => {
  it("recognises ELF and the sparse image by their first bytes, nothing else", () => {
    expect(detectImageFormat(saveElfCore(sample()))).toBe("elf-core");
    expect(detectImageFormat(saveSparseImage(sample()))).toBe("sparse");
    expect(detectImageFormat(new Uint8Array([0x7f, 0x45, 0x4c]))).toBeNull();
    expect(detectImageFormat(new TextEncoder().encode("IOMMUSI"))).toBeNull();
    expect(detectImageFormat(new Uint8Array(4096))).toBeNull();
  });
});

describe("readImageInput", () => {
  it("loads an ELF core and a sparse image from files, recognised by content", () => {
    const elf = tmp.file("mem.bin");
    writeFileSync(elf, saveElfCore(sample(), { machine: 62 }));
    expectSample(readImageInput({ image: elf }));
    const sparse = tmp.file("mem.elf"); // the name does not matter
    writeFileSync(sparse, saveSparseImage(sample()));
    expectSample(readImageInput({ image: sparse }));
  });

  it("--raw --base places a raw dump at the base address, whatever its first bytes", () => {
    const file = tmp.file("raw.bin");
    const bytes = new Uint8Array(0x3000);
    bytes.set([0x7f, 0x45, 0x4c, 0x46]); // ELF magic, but raw was asked for
    new DataView(bytes.buffer).setUint32(0x2004, 0x8765_4321, true);
    writeFileSync(file, bytes);
    const mem = readImageInput({ image: file, raw: true, base: 0x1_0000_0000 });
    expect(mem).toBeInstanceOf(PhysMemory);
    const m = mem as PhysMemory;
    expect(m.read32(0x1_0000_0000)).toBe(0x464c_457f);
    expect(m.read32(0x1_0000_2004)).toBe(0x8765_4321);
    // All-zero pages stay unpopulated.
    expect(m.populatedFrameCount).toBe(2);
  });

  it("a missing --image, --raw without --base and --base without --raw are refused", () => {
    expectError(readImageInput({}), "--image", /^missing: name a memory image \(--image FILE\)$/);
    expectError(readImageInput({ image: "x", raw: true }), "--raw", /^needs --base ADDR$/);
    expectError(
      readImageInput({ image: "x", base: 0 }),
      "--base",
      /^applies only to a raw dump: add --raw$/,
    );
    expectError(loadImageBytes(new Uint8Array(8), "f", { raw: true }), "--raw", /needs --base/);
    expectError(loadImageBytes(new Uint8Array(8), "f", { base: 0 }), "--base", /add --raw/);
  });

  it("a file that cannot be read says why in a few words", () => {
    expectError(
      readImageInput({ image: tmp.file("absent") }),
      "--image",
      /^cannot read .*absent: no such file or directory$/,
    );
    const dir = tmp.file("a-directory");
    mkdirSync(dir);
    expectError(readImageInput({ image: dir }), "--image", /: is a directory$/);
    const denied = (code: string) => () => {
      throw Object.assign(new Error(`${code}: some\nlong text`), { code });
    };
    expectError(
      readImageInput({ image: "f" }, denied("EACCES")),
      "--image",
      /^cannot read f: permission denied$/,
    );
    expectError(
      readImageInput({ image: "f" }, denied("ERR_FS_FILE_TOO_LARGE")),
      "--image",
      /file too large to read at once$/,
    );
    expectError(
      readImageInput({ image: "f" }, denied("EIO")),
      "--image",
      /^cannot read f: EIO: some long text$/,
    );
    expectError(
      readImageInput({ image: "f" }, () => {
        throw "odd\nthing";
      }),
      "--image",
      /^cannot read f: odd thing$/,
    );
  });

  it("content that is neither format asks for --raw --base", () => {
    const file = tmp.file("junk.bin");
    writeFileSync(file, new TextEncoder().encode("not an image at all"));
    expectError(
      readImageInput({ image: file }),
      "--image",
      /junk\.bin: neither an ELF core nor an iommu-sim sparse image; for a raw RAM dump pass --raw --base ADDR$/,
    );
  });

  it("a malformed image is reported with the loader's place and offset", () => {
    const elf = saveElfCore(sample());
    const file = tmp.file("short.elf");
    writeFileSync(file, elf.subarray(0, elf.length - 100));
    expectError(
      readImageInput({ image: file }),
      "--image",
      /short\.elf: ELF core: program header \d+ \(offset 0x[0-9a-f]+\): segment extends past the end of the file$/,
    );
    const sparse = saveSparseImage(sample());
    sparse[sparse.length - 1] = (sparse[sparse.length - 1] as number) ^ 0xff;
    const bad = tmp.file("bad.img");
    writeFileSync(bad, sparse);
    expectError(
      readImageInput({ image: bad }),
      "--image",
      /bad\.img: sparse image: checksum \(offset 0x[0-9a-f]+\): CRC-32 is 0x[0-9a-f]{8}, the contents give 0x[0-9a-f]{8}$/,
    );
    const version = saveSparseImage(sample());
    version[8] = SPARSE_IMAGE_VERSION + 1;
    expectError(
      loadImageBytes(version, "v.img"),
      "--image",
      /^v\.img: sparse image: header \(offset 0x8\): format version 2 is not supported/,
    );
  });

  it("a raw dump that does not fit the 52-bit address space is refused", () => {
    expectError(
      loadImageBytes(new Uint8Array(0x2000), "r.bin", { raw: true, base: 2 ** 52 - 0x1000 }),
      "--image",
      /^r\.bin: raw image: data \(offset 0x1000\): byte would land at 0x10000000000000, beyond the 52-bit physical address space$/,
    );
  });
});

/**
 * A minimal ELF64 core: a PT_NOTE (ignored) and PT_LOAD segments `[paddr, filesz, memsz]` whose
 * file bytes are 0xab; with `xnum` the segment count sits in section header 0 (PN_XNUM).
 */
function elfCore(loads: ReadonlyArray<[number, number, number]>, xnum = false): Uint8Array {
  const phnum = loads.length + 1;
  const phoff = 64;
  const shoff = phoff + phnum * 56;
  const dataAt = shoff + 64;
  const size = dataAt + loads.reduce((n, [, filesz]) => n + filesz, 0);
  const bytes = new Uint8Array(size);
  const v = new DataView(bytes.buffer);
  bytes.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 4, true); // ET_CORE
  v.setUint16(18, 62, true);
  v.setUint32(20, 1, true);
  v.setBigUint64(32, BigInt(phoff), true);
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, xnum ? 0xffff : phnum, true);
  if (xnum) {
    v.setBigUint64(40, BigInt(shoff), true);
    v.setUint16(58, 64, true);
    v.setUint16(60, 1, true);
    v.setUint32(shoff + 44, phnum, true); // sh_info
  }
  v.setUint32(phoff, 4, true); // PT_NOTE
  let at = dataAt;
  loads.forEach(([paddr, filesz, memsz], i) => {
    const ph = phoff + (i + 1) * 56;
    v.setUint32(ph, 1, true); // PT_LOAD
    v.setBigUint64(ph + 8, BigInt(at), true);
    v.setBigUint64(ph + 16, 0xffff_8880_0000_0000n + BigInt(paddr), true); // a kernel vaddr
    v.setBigUint64(ph + 24, BigInt(paddr), true);
    v.setBigUint64(ph + 32, BigInt(filesz), true);
    v.setBigUint64(ph + 40, BigInt(memsz), true);
    bytes.fill(0xab, at, at + filesz);
    at += filesz;
  });
  return bytes;
}

describe("what an image covers", () => {
  it("an ELF core covers its PT_LOAD segments by p_paddr and p_memsz, zero fill included, and nothing between", () => {
    for (const xnum of [false, true]) {
      const image = loadMemoryImage(
        elfCore(
          [
            [0x1000, 0x1000, 0x3000],
            [0x1_0000_0000, 0x2000, 0x2000],
          ],
          xnum,
        ),
        "core",
      );
      if (image instanceof ImageInputError) throw new Error(image.message);
      expect(image.format).toBe("elf-core");
      expect(image.mem.read32(0x1000)).toBe(0xabab_abab);
      expect(image.coverage?.ranges).toEqual([
        [0x1000, 0x4000],
        [0x1_0000_0000, 0x1_0000_2000],
      ]);
      const covers = (pa: number, bytes = 0x1000) => image.coverage?.covers(pa, bytes);
      expect([covers(0x1000), covers(0x3000), covers(0x4000), covers(0)]).toEqual([
        true,
        true,
        false,
        false,
      ]);
      // A structure straddling the end of a segment is not wholly in the image.
      expect(covers(0x3800, 0x1000)).toBe(false);
      expect(covers(0x1_0000_1000)).toBe(true);
    }
  });

  it("a raw dump covers its span; the sparse image cannot tell a hole from zeros (no coverage)", () => {
    const raw = loadMemoryImage(new Uint8Array(0x3000), "r", { raw: true, base: 0x20_0000 });
    if (raw instanceof ImageInputError) throw new Error(raw.message);
    expect(raw.format).toBe("raw");
    expect(raw.coverage?.ranges).toEqual([[0x20_0000, 0x20_3000]]);
    const file = tmp.file("cover.img");
    writeFileSync(file, saveSparseImage(sample()));
    const sparse = readMemoryImage({ image: file });
    if (sparse instanceof ImageInputError) throw new Error(sparse.message);
    expect(sparse).toMatchObject({ format: "sparse", coverage: null });
    expectSample(sparse.mem);
    expect(readMemoryImage({})).toBeInstanceOf(ImageInputError);
  });

  it("ImageCoverage merges overlapping and touching ranges, ignores empty ones", () => {
    const c = new ImageCoverage([
      [0x5000, 0x6000],
      [0x1000, 0x2000],
      [0x2000, 0x3000],
      [0x1800, 0x2800],
      [0x9000, 0x9000],
    ]);
    expect(c.ranges).toEqual([
      [0x1000, 0x3000],
      [0x5000, 0x6000],
    ]);
    expect(c.covers(0x1000, 0x2000)).toBe(true);
    expect(c.covers(0x2fff, 2)).toBe(false);
    expect(c.covers(0x9000, 1)).toBe(false);
    expect(new ImageCoverage([]).covers(0, 1)).toBe(false);
  });
});
