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
  ImageInputError,
  loadImageBytes,
  readImageInput,
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
