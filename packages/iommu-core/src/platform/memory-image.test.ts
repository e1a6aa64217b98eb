import { crc32 } from "node:zlib";
import { describe, expect, it } from "vitest";
import { xorshift32 } from "../../../../scripts/bench-kit.js";
import {
  ImageError,
  loadElfCore,
  loadRawImage,
  loadSparseImage,
  SPARSE_IMAGE_VERSION,
  saveElfCore,
  saveSparseImage,
} from "./memory-image.js";
import { PAGE_SIZE, PhysMemory } from "./phys-memory.js";

const P = PAGE_SIZE;

/** A memory with runs, lone frames, a frame above 2^20 frames, the top frame and a zero frame. */
function sampleMemory(paBits = 52): PhysMemory {
  const mem = new PhysMemory({ paBits });
  mem.fill(0, 3 * P, 0x11); // frames 0..2: one run
  mem.write64(10 * P + 8, 0xdeadbeef, 0x80000001);
  mem.write8(11 * P + 4095, 0x7f); // frame 11 continues the run of frame 10
  mem.fill(20 * P, P, 0); // populated, all zero
  if (paBits > 40) mem.write32(2 ** 40 + 0x40, 0xcafef00d);
  mem.write64(2 ** paBits - 8, 1, 2);
  return mem;
}

/** Same contents, frame by frame (unpopulated frames compare as zeros). */
function expectSameContents(a: PhysMemory, b: PhysMemory): void {
  const frames = new Set([...a.populatedFrames(), ...b.populatedFrames()]);
  const zero = new Uint8Array(P);
  for (const pfn of frames) {
    const fa = a.frameBytes(pfn) ?? zero;
    const fb = b.frameBytes(pfn) ?? zero;
    expect(Buffer.compare(fa, fb), `frame ${pfn}`).toBe(0);
  }
}

function expectError(
  got: PhysMemory | ImageError | 0,
  where: string,
  offset: number,
  what: RegExp,
): ImageError {
  expect(got).toBeInstanceOf(ImageError);
  const e = got as ImageError;
  expect({ where: e.where, offset: e.offset }).toEqual({ where, offset });
  expect(e.what).toMatch(what);
  expect(e.message).toBe(`${e.format}: ${where} (offset 0x${offset.toString(16)}): ${e.what}`);
  return e;
}

describe("sparse image round trip", () => {
  it("restores the contents and the address width", () => {
    const mem = sampleMemory();
    const back = loadSparseImage(saveSparseImage(mem)) as PhysMemory;
    expect(back).toBeInstanceOf(PhysMemory);
    expect(back.paBits).toBe(52);
    expectSameContents(mem, back);
    expect(back.read64(10 * P + 8)).toBe(0xdeadbeef);
    expect(back.hi).toBe(0x80000001);
  });

  it("leaves all-zero frames out by default and keeps them (same populated frames) if asked", () => {
    const mem = sampleMemory();
    const lean = loadSparseImage(saveSparseImage(mem)) as PhysMemory;
    expect(lean.isPopulated(20)).toBe(false);
    const full = loadSparseImage(saveSparseImage(mem, { omitZeroFrames: false })) as PhysMemory;
    expect(full.populatedFrames()).toEqual(mem.populatedFrames());
    expect(saveSparseImage(mem)[11]).toBe(1);
    expect(saveSparseImage(mem, { omitZeroFrames: false })[11]).toBe(0);
  });

  it("is deterministic: the same contents give the same bytes, whatever the write order", () => {
    const a = new PhysMemory();
    a.write32(0x5000, 1);
    a.write32(0x1000, 2);
    a.write32(0x2000, 3);
    const b = new PhysMemory();
    b.write32(0x2000, 3);
    b.write32(0x1000, 2);
    b.write32(0x5000, 1);
    b.write32(0x9000, 0); // a zero frame, left out
    expect(Buffer.compare(saveSparseImage(a), saveSparseImage(b))).toBe(0);
    expect(Buffer.compare(saveSparseImage(a), saveSparseImage(a))).toBe(0);
  });

  it("lays out header, runs and checksum as docs/memory-image.md says", () => {
    const mem = new PhysMemory({ paBits: 48 });
    mem.write8(5 * P, 0xaa);
    mem.write8(6 * P + 1, 0xbb);
    mem.write8(2 ** 35 * P, 0xcc);
    const img = saveSparseImage(mem);
    const v = new DataView(img.buffer);
    expect(new TextDecoder().decode(img.subarray(0, 8))).toBe("IOMMUSIM");
    expect(v.getUint16(8, true)).toBe(SPARSE_IMAGE_VERSION);
    expect([img[10], img[11]]).toEqual([48, 1]);
    expect([v.getUint32(12, true), v.getUint32(16, true)]).toEqual([2, 3]);
    expect([v.getUint32(32, true), v.getUint32(36, true), v.getUint32(40, true)]).toEqual([
      5, 0, 2,
    ]);
    expect(img[48]).toBe(0xaa);
    expect(img[48 + P + 1]).toBe(0xbb);
    const run1 = 48 + 2 * P;
    expect([v.getUint32(run1, true), v.getUint32(run1 + 4, true)]).toEqual([0, 8]);
    expect(img.length).toBe(32 + 2 * 16 + 3 * P + 4);
  });

  it("ends with the standard CRC-32 (zlib's) of everything before it", () => {
    const img = saveSparseImage(sampleMemory());
    const stored = new DataView(img.buffer).getUint32(img.length - 4, true);
    expect(stored).toBe(crc32(img.subarray(0, img.length - 4)));
  });

  it("round-trips an empty memory", () => {
    const img = saveSparseImage(new PhysMemory({ paBits: 39 }));
    expect(img.length).toBe(36);
    const back = loadSparseImage(img) as PhysMemory;
    expect(back.paBits).toBe(39);
    expect(back.populatedFrameCount).toBe(0);
  });

  it("loads into a given memory, overwriting the image's frames and keeping the rest", () => {
    const img = saveSparseImage(sampleMemory(40));
    const mem = new PhysMemory({ paBits: 40 });
    mem.fill(0, P, 0x99);
    mem.write8(100 * P, 5);
    expect(loadSparseImage(img, mem)).toBe(mem);
    expect(mem.read8(0)).toBe(0x11);
    expect(mem.read8(100 * P)).toBe(5);
  });

  it("can be loaded with an offset: the bytes may be a view into a larger buffer", () => {
    const img = saveSparseImage(sampleMemory());
    const big = new Uint8Array(img.length + 3);
    big.set(img, 3);
    expectSameContents(loadSparseImage(big.subarray(3)) as PhysMemory, sampleMemory());
  });
});

/** A valid image with two runs: frames 1..2 and frame 7, paBits 40, zero frames omitted. */
function sparseSample(): Uint8Array {
  const mem = new PhysMemory({ paBits: 40 });
  mem.fill(P, 2 * P, 0x21);
  mem.fill(7 * P, P, 0x77);
  return saveSparseImage(mem);
}
const RUN0 = 32;
const RUN1 = 32 + 16 + 2 * P;
const CRC_AT = RUN1 + 16 + P;

function patched(img: Uint8Array, edit: (v: DataView, b: Uint8Array) => void): Uint8Array {
  const copy = img.slice();
  edit(new DataView(copy.buffer), copy);
  return copy;
}

describe("sparse image errors", () => {
  const img = sparseSample();
  const cases: [string, Uint8Array, string, number, RegExp][] = [
    [
      "a file shorter than the header",
      img.subarray(0, 31),
      "header",
      0,
      /shorter than the 32-byte/,
    ],
    ["a bad magic", patched(img, (_, b) => (b[3] = 0x58)), "header", 0, /bad magic/],
    ["an unknown version", patched(img, (v) => v.setUint16(8, 2, true)), "header", 8, /version 2/],
    ["paBits below 12", patched(img, (_, b) => (b[10] = 11)), "header", 10, /paBits 11/],
    ["paBits above 52", patched(img, (_, b) => (b[10] = 53)), "header", 10, /paBits 53/],
    ["an unknown flag", patched(img, (_, b) => (b[11] = 3)), "header", 11, /unknown flag bits 0x2/],
    [
      "a reserved header word",
      patched(img, (v) => v.setUint32(24, 1, true)),
      "header",
      24,
      /reserved/,
    ],
    [
      "a run header cut off",
      patched(img, (v) => v.setUint32(12, 3, true)),
      "run 2",
      CRC_AT,
      /run header extends past the end/,
    ],
    [
      "a first frame of 2^52 or more",
      patched(img, (v) => v.setUint32(RUN1 + 4, 0x100000, true)),
      "run 1",
      RUN1,
      /first frame 0x10000000000007 is beyond the 40-bit/,
    ],
    [
      "a first frame beyond the address space",
      patched(img, (v) => v.setUint32(RUN1, 2 ** 28, true)),
      "run 1",
      RUN1,
      /beyond the 40-bit/,
    ],
    [
      "a run of no frames",
      patched(img, (v) => v.setUint32(RUN0 + 8, 0, true)),
      "run 0",
      RUN0 + 8,
      /no frames/,
    ],
    [
      "a reserved run word",
      patched(img, (v) => v.setUint32(RUN1 + 12, 9, true)),
      "run 1",
      RUN1 + 12,
      /reserved/,
    ],
    [
      "runs out of order",
      patched(img, (v) => v.setUint32(RUN1, 0, true)),
      "run 1",
      RUN1,
      /not above the previous run's last \(0x2\)/,
    ],
    [
      "overlapping runs",
      patched(img, (v) => v.setUint32(RUN1, 2, true)),
      "run 1",
      RUN1,
      /not above the previous/,
    ],
    [
      "a run that runs past the address space",
      patched(img, (v) => {
        v.setUint32(RUN1, 2 ** 28 - 1, true);
        v.setUint32(RUN1 + 8, 2, true);
      }),
      "run 1",
      RUN1,
      /run past the 40-bit address space/,
    ],
    [
      "run data cut off",
      img.subarray(0, RUN1 + 16 + 100),
      "run 1",
      RUN1,
      /1 frames extend past the end of the file/,
    ],
    [
      "a frame count that does not match the runs",
      patched(img, (v) => v.setUint32(16, 4, true)),
      "header",
      16,
      /frame count 4 does not match the 3 frames/,
    ],
    [
      "a missing checksum",
      img.subarray(0, CRC_AT + 2),
      "checksum",
      CRC_AT,
      /ends before the checksum/,
    ],
    [
      "bytes after the checksum",
      new Uint8Array([...img, 0, 0]),
      "checksum",
      CRC_AT + 4,
      /2 unexpected bytes after the checksum/,
    ],
    [
      "a flipped data bit",
      patched(img, (_, b) => (b[RUN1 + 16 + 5] ^= 0x10)),
      "checksum",
      CRC_AT,
      /CRC-32 is 0x[0-9a-f]{8}, the contents give 0x[0-9a-f]{8}/,
    ],
  ];

  for (const [rule, bytes, where, offset, what] of cases) {
    it(`reports ${rule} once, with its place and offset`, () => {
      expectError(loadSparseImage(bytes), where, offset, what);
    });
  }

  it("says which address space is too small when loading into a given memory", () => {
    const e = loadSparseImage(saveSparseImage(sampleMemory()), new PhysMemory({ paBits: 39 }));
    expectError(e, "run 2", 32 + 16 * 2 + 5 * P, /beyond the target memory's 39-bit address space/);
  });

  it("writes nothing into the given memory when the image is bad", () => {
    const mem = new PhysMemory({ paBits: 40 });
    const bad = patched(img, (_, b) => (b[CRC_AT] ^= 1));
    expect(loadSparseImage(bad, mem)).toBeInstanceOf(ImageError);
    expect(mem.populatedFrameCount).toBe(0);
  });

  it("reports a write the memory refuses (bus error) as an error of its run", () => {
    const mem = new PhysMemory({ paBits: 40 });
    mem.faultHook = (pa) => pa >= 7 * P;
    expectError(loadSparseImage(img, mem), "run 1", RUN1, /refused the write/);
  });
});

describe("raw images", () => {
  it("stores the bytes at the base address, across frames", () => {
    const mem = new PhysMemory();
    const bytes = new Uint8Array(2 * P + 10).map((_, i) => (i % 251) + 1);
    expect(loadRawImage(mem, bytes, 0x12345000 - 5)).toBe(0);
    const back = new Uint8Array(bytes.length);
    mem.readBytes(0x12345000 - 5, back);
    expect(Buffer.compare(back, bytes)).toBe(0);
  });

  it("leaves all-zero pages unpopulated, but zeroes populated frames they cover", () => {
    const mem = new PhysMemory();
    mem.fill(3 * P, P, 0xee);
    const bytes = new Uint8Array(8 * P);
    bytes[5 * P + 7] = 1;
    expect(loadRawImage(mem, bytes, 0)).toBe(0);
    expect(mem.populatedFrames()).toEqual([3, 5]);
    expect(mem.read8(3 * P + 100)).toBe(0);
    expect(mem.read8(5 * P + 7)).toBe(1);
  });

  it("fits exactly at the top of the address space and fails one byte further", () => {
    const mem = new PhysMemory({ paBits: 20 });
    expect(loadRawImage(mem, new Uint8Array(16).fill(1), 2 ** 20 - 16)).toBe(0);
    const e = loadRawImage(mem, new Uint8Array(16).fill(2), 2 ** 20 - 15);
    expectError(e, "data", 15, /would land at 0x100000, beyond the 20-bit physical address space/);
    expect(mem.read8(2 ** 20 - 15)).toBe(1); // nothing written
  });

  it("rejects a base address that is negative, fractional or outside the space", () => {
    const mem = new PhysMemory({ paBits: 20 });
    for (const base of [-1, 0.5, Number.NaN, 2 ** 20]) {
      expectError(loadRawImage(mem, new Uint8Array(1), base), "data", 0, /base address/);
    }
  });

  it("loads an empty image anywhere inside the space", () => {
    const mem = new PhysMemory({ paBits: 20 });
    expect(loadRawImage(mem, new Uint8Array(0), 0x1000)).toBe(0);
    expect(mem.populatedFrameCount).toBe(0);
  });

  it("reports a write the memory refuses", () => {
    const mem = new PhysMemory();
    mem.faultHook = () => true;
    expectError(loadRawImage(mem, new Uint8Array(4).fill(1), 0), "data", 0, /refused the write/);
  });
});

// ---------------------------------------------------------------------------------------------
// ELF cores

interface Phdr {
  type?: number;
  offset: number | bigint;
  paddr: number | bigint;
  filesz: number | bigint;
  memsz?: number | bigint;
  vaddr?: bigint;
}

/**
 * An ELF64 little-endian core built field by field, independent of saveElfCore: the header, the
 * program headers at `phoff` (default 64), then `data` chunks at their offsets.
 */
function buildCore(
  phdrs: readonly Phdr[],
  data: readonly [number, Uint8Array][] = [],
  size?: number,
  phoff = 64,
): Uint8Array {
  let end = phoff + phdrs.length * 56;
  for (const [at, bytes] of data) end = Math.max(end, at + bytes.length);
  const out = new Uint8Array(size ?? end);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 4, true); // ET_CORE
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(32, BigInt(phoff), true);
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, phdrs.length, true);
  phdrs.forEach((p, k) => {
    const at = phoff + k * 56;
    v.setUint32(at, p.type ?? 1, true);
    v.setUint32(at + 4, 7, true);
    v.setBigUint64(at + 8, BigInt(p.offset), true);
    v.setBigUint64(at + 16, p.vaddr ?? BigInt(p.paddr), true);
    v.setBigUint64(at + 24, BigInt(p.paddr), true);
    v.setBigUint64(at + 32, BigInt(p.filesz), true);
    v.setBigUint64(at + 40, BigInt(p.memsz ?? p.filesz), true);
  });
  for (const [at, bytes] of data) out.set(bytes, at);
  return out;
}

const bytesOf = (n: number, seed: number) =>
  new Uint8Array(n).map((_, i) => ((i * seed) % 255) + 1);

describe("ELF core round trip", () => {
  it("saveElfCore writes a core loadElfCore reads back with the same contents", () => {
    const mem = sampleMemory();
    const back = loadElfCore(saveElfCore(mem)) as PhysMemory;
    expect(back).toBeInstanceOf(PhysMemory);
    expectSameContents(mem, back);
    const full = loadElfCore(saveElfCore(mem, { omitZeroFrames: false })) as PhysMemory;
    expect(full.populatedFrames()).toEqual(mem.populatedFrames());
  });

  it("writes one PT_LOAD per run of populated frames, paddr = vaddr, data page-aligned", () => {
    const mem = new PhysMemory();
    mem.fill(0x1000, 0x2000, 1); // frames 1..2
    mem.write8(0x9000, 2);
    const core = saveElfCore(mem, { machine: 183 });
    const v = new DataView(core.buffer);
    expect([...core.subarray(0, 7)]).toEqual([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
    expect(v.getUint16(16, true)).toBe(4);
    expect(v.getUint16(18, true)).toBe(183);
    expect(v.getUint16(54, true)).toBe(56);
    expect(v.getUint16(56, true)).toBe(2);
    const ph = (k: number, field: number) => Number(v.getBigUint64(64 + k * 56 + field, true));
    expect(v.getUint32(64, true)).toBe(1);
    expect([ph(0, 8), ph(0, 16), ph(0, 24), ph(0, 32), ph(0, 40)]).toEqual([
      0x1000, 0x1000, 0x1000, 0x2000, 0x2000,
    ]);
    expect([ph(1, 8), ph(1, 24), ph(1, 32)]).toEqual([0x3000, 0x9000, 0x1000]);
    expect(core.length).toBe(0x4000);
  });

  it("an empty memory gives a core without segments, which loads as an empty memory", () => {
    const core = saveElfCore(new PhysMemory());
    expect(new DataView(core.buffer).getUint16(56, true)).toBe(0);
    expect((loadElfCore(core) as PhysMemory).populatedFrameCount).toBe(0);
  });
});

describe("ELF core loading", () => {
  it("places each PT_LOAD at p_paddr and skips PT_NOTE, as in a QEMU dump-guest-memory", () => {
    const note = bytesOf(40, 3);
    const low = bytesOf(0x3000, 5);
    const high = bytesOf(0x1000, 7);
    const core = buildCore(
      [
        { type: 4, offset: 0x100, paddr: 0, filesz: note.length }, // PT_NOTE
        { offset: 0x1000, paddr: 0, filesz: low.length },
        { offset: 0x4000, paddr: 0x1_0000_0000, filesz: high.length },
      ],
      [
        [0x100, note],
        [0x1000, low],
        [0x4000, high],
      ],
    );
    const mem = loadElfCore(core) as PhysMemory;
    expect(mem).toBeInstanceOf(PhysMemory);
    const back = new Uint8Array(0x3000);
    mem.readBytes(0, back);
    expect(Buffer.compare(back, low)).toBe(0);
    expect(mem.read8(0x1_0000_0000 + 17)).toBe(high[17]);
    expect(mem.populatedFrames()).toEqual([0, 1, 2, 2 ** 20]);
  });

  it("uses p_paddr, not p_vaddr, when p_vaddr is a kernel virtual address (kdump vmcore)", () => {
    const data = bytesOf(0x1000, 11);
    const core = buildCore(
      [{ offset: 0x1000, paddr: 0x20_0000, vaddr: 0xffff888000200000n, filesz: 0x1000 }],
      [[0x1000, data]],
    );
    const mem = loadElfCore(core) as PhysMemory;
    expect(mem.read8(0x20_0000 + 9)).toBe(data[9]);
    expect(mem.populatedFrames()).toEqual([0x200]);
  });

  it("reads p_memsz beyond p_filesz as zeros, zeroing populated frames of a given memory", () => {
    const mem = new PhysMemory();
    mem.fill(0x5000, 0x3000, 0xee);
    mem.write8(0x9000, 0x42); // past the segment: kept
    const core = buildCore(
      [{ offset: 0x100, paddr: 0x5000, filesz: 0x10, memsz: 0x4000 }],
      [[0x100, bytesOf(0x10, 1)]],
    );
    expect(loadElfCore(core, mem)).toBe(mem);
    expect(mem.read8(0x5000)).toBe(1);
    expect(mem.read8(0x5010)).toBe(0);
    expect(mem.read8(0x7fff)).toBe(0);
    expect(mem.read8(0x9000)).toBe(0x42);
    expect(mem.populatedFrames()).toEqual([5, 6, 7, 9]);
  });

  it("zeroes the populated frames under a zero tail far larger than the memory's contents", () => {
    const mem = new PhysMemory();
    mem.write8(0x2000_0000, 1);
    mem.write8(0x3fff_ffff, 2);
    mem.write8(0x4000_0000, 3); // just past the segment: kept
    const core = buildCore([{ offset: 0x100, paddr: 0x1000, filesz: 0, memsz: 0x3fff_f000 }]);
    expect(loadElfCore(core, mem)).toBe(mem);
    expect([mem.read8(0x2000_0000), mem.read8(0x3fff_ffff), mem.read8(0x4000_0000)]).toEqual([
      0, 0, 3,
    ]);
  });

  it("accepts segments at unaligned addresses and file offsets, and empty segments", () => {
    const data = bytesOf(100, 13);
    const core = buildCore(
      [
        { offset: 0x123, paddr: 0x1ffe, filesz: 100 },
        { offset: 0, paddr: 0x1ffe, filesz: 0, memsz: 0 },
      ],
      [[0x123, data]],
    );
    const mem = loadElfCore(core) as PhysMemory;
    expect(mem.read8(0x1ffe)).toBe(data[0]);
    expect(mem.read8(0x1ffe + 99)).toBe(data[99]);
  });

  it("finds the segment count in section header 0 when e_phnum is PN_XNUM", () => {
    const a = bytesOf(16, 17);
    const core = buildCore(
      [
        { offset: 0x200, paddr: 0x1000, filesz: 16 },
        { offset: 0x200, paddr: 0x3000, filesz: 16 },
      ],
      [[0x200, a]],
      0x300,
    );
    const v = new DataView(core.buffer);
    v.setUint16(56, 0xffff, true);
    v.setBigUint64(40, 0x240n, true); // e_shoff
    v.setUint16(58, 64, true); // e_shentsize
    v.setUint16(60, 1, true);
    v.setUint32(0x240 + 44, 2, true); // sh_info
    const mem = loadElfCore(core) as PhysMemory;
    expect(mem.populatedFrames()).toEqual([1, 3]);
    expect(mem.read8(0x3000 + 15)).toBe(a[15]);
  });

  it("loads into the given memory and leaves its other frames alone", () => {
    const mem = new PhysMemory({ paBits: 36 });
    mem.write8(0x50_0000, 9);
    expect(loadElfCore(saveElfCore(sampleMemory(36)), mem)).toBe(mem);
    expect(mem.read8(0x50_0000)).toBe(9);
    expect(mem.read8(0)).toBe(0x11);
  });
});

describe("ELF core errors", () => {
  const good = buildCore(
    [
      { type: 4, offset: 0x200, paddr: 0, filesz: 8 },
      { offset: 0x200, paddr: 0x1000, filesz: 0x100, memsz: 0x1000 },
      { offset: 0x300, paddr: 0x8000, filesz: 0x100 },
    ],
    [[0x200, bytesOf(0x200, 3)]],
  );
  const PH1 = 64 + 56;
  const PH2 = 64 + 112;
  const edit = (f: (v: DataView, b: Uint8Array) => void) => patched(good, f);
  const set64 = (at: number, value: bigint) => edit((v) => v.setBigUint64(at, value, true));
  const EH = "ELF header";

  it("the unedited core loads (so each case below fails for its own edit)", () => {
    expect(loadElfCore(good)).toBeInstanceOf(PhysMemory);
  });

  const cases: [string, Uint8Array, string, number, RegExp][] = [
    ["a file shorter than the ELF header", good.subarray(0, 63), EH, 0, /shorter than the 64-byte/],
    ["a bad magic", edit((_, b) => (b[1] = 0x45 + 1)), EH, 0, /bad magic/],
    ["a 32-bit class", edit((_, b) => (b[4] = 1)), EH, 4, /EI_CLASS is 1, not ELFCLASS64/],
    ["big-endian data", edit((_, b) => (b[5] = 2)), EH, 5, /EI_DATA is 2, not ELFDATA2LSB/],
    ["an unknown EI_VERSION", edit((_, b) => (b[6] = 0)), EH, 6, /EI_VERSION is 0/],
    [
      "a type other than ET_CORE",
      edit((v) => v.setUint16(16, 2, true)),
      EH,
      16,
      /e_type is 2, not ET_CORE/,
    ],
    ["an unknown e_version", edit((v) => v.setUint32(20, 2, true)), EH, 20, /e_version is 2/],
    [
      "an e_phoff of 2^52",
      set64(32, 1n << 52n),
      EH,
      32,
      /e_phoff 0x10000000000000 is 2\^52 or more/,
    ],
    [
      "a phentsize other than 56",
      edit((v) => v.setUint16(54, 64, true)),
      EH,
      54,
      /e_phentsize is 64, not 56/,
    ],
    [
      "a program header table past the end of the file",
      edit((v) => v.setUint16(56, 50, true)),
      EH,
      32,
      /program header table \(50 entries at 0x40\) runs past the end/,
    ],
    [
      "a program header table starting past the end",
      set64(32, 0x10000n),
      EH,
      32,
      /runs past the end/,
    ],
    [
      "PN_XNUM without a section header in the file",
      edit((v) => v.setUint16(56, 0xffff, true)),
      EH,
      40,
      /PN_XNUM but e_shoff 0x0 is not a section header in the file/,
    ],
    [
      "PN_XNUM with a wrong e_shentsize",
      edit((v) => {
        v.setUint16(56, 0xffff, true);
        v.setBigUint64(40, 0x100n, true);
      }),
      EH,
      58,
      /e_shentsize is 0, not 64/,
    ],
    [
      "a p_offset of 2^52",
      set64(PH1 + 8, 1n << 52n),
      "program header 1",
      PH1,
      /p_offset 0x10000000000000 is 2\^52/,
    ],
    [
      "a p_paddr of 2^63",
      set64(PH1 + 24, 1n << 63n),
      "program header 1",
      PH1,
      /p_paddr 0x8000000000000000 is 2\^52/,
    ],
    [
      "a p_filesz of 2^64-1",
      set64(PH1 + 32, (1n << 64n) - 1n),
      "program header 1",
      PH1,
      /p_filesz 0xffffffffffffffff/,
    ],
    [
      "a p_memsz of 2^52",
      set64(PH2 + 40, 1n << 52n),
      "program header 2",
      PH2,
      /p_memsz 0x10000000000000/,
    ],
    [
      "p_filesz above p_memsz",
      set64(PH1 + 40, 0xffn),
      "program header 1",
      PH1,
      /p_filesz 0x100 is larger than p_memsz 0xff/,
    ],
    [
      "a segment past the end of the file",
      edit((v) => {
        v.setBigUint64(PH2 + 32, 0x101n, true);
        v.setBigUint64(PH2 + 40, 0x101n, true);
      }),
      "program header 2",
      PH2,
      /^segment extends past the end of the file$/,
    ],
    [
      "a segment whose offset is past the end of the file",
      set64(PH2 + 8, 0x10_0000n),
      "program header 2",
      PH2,
      /^segment extends past the end of the file$/,
    ],
    [
      "a segment beyond the 52-bit physical address space",
      set64(PH2 + 24, (1n << 52n) - 0x80n),
      "program header 2",
      PH2,
      /segment 0xfffffffffff80\+0x100 lies beyond the 52-bit physical address space/,
    ],
    [
      "overlapping segments",
      set64(PH2 + 24, 0x1800n),
      "program header 2",
      PH2,
      /segment 0x1800\+0x100 overlaps that of program header 1/,
    ],
  ];

  for (const [rule, bytes, where, offset, what] of cases) {
    it(`reports ${rule} once, with its place and offset`, () => {
      expectError(loadElfCore(bytes), where, offset, what);
    });
  }

  it("names the later program header of two overlapping ones, whatever their address order", () => {
    const core = set64(PH1 + 24, 0x8080n);
    expectError(loadElfCore(core), "program header 2", PH2, /overlaps that of program header 1/);
  });

  it("checks segments against the given memory's address space", () => {
    const e = loadElfCore(good, new PhysMemory({ paBits: 15 }));
    expectError(
      e,
      "program header 2",
      PH2,
      /beyond the target memory's 15-bit physical address space/,
    );
  });

  it("writes nothing into the given memory when a later header is bad", () => {
    const mem = new PhysMemory();
    expect(loadElfCore(set64(PH2 + 24, 1n << 60n), mem)).toBeInstanceOf(ImageError);
    expect(mem.populatedFrameCount).toBe(0);
  });

  it("matches the message layout of the documentation example", () => {
    const e = loadElfCore(set64(PH1 + 32, 0x1000n)) as ImageError;
    expect(e.message).toBe(
      "ELF core: program header 1 (offset 0x78): segment extends past the end of the file",
    );
    expect(String(e)).toBe(e.message);
  });
});

describe("image loaders on hostile input", () => {
  it("never throw on random, truncated or bit-flipped images: memory or an error", () => {
    const rnd = xorshift32(0x1b873593);
    const sparse = saveSparseImage(sampleMemory(40));
    const small = new PhysMemory({ paBits: 40 });
    small.fill(0x3000, 0x2000, 0x5a);
    small.write8(0x10_0000, 1);
    const sparseSmall = saveSparseImage(small);
    const elf = saveElfCore(small);
    const elfHand = buildCore(
      [
        { type: 4, offset: 0x200, paddr: 0, filesz: 8 },
        { offset: 0x200, paddr: 0x1000, filesz: 0x100, memsz: 0x1000 },
        { offset: 0x300, paddr: 0x8000, filesz: 0x100 },
      ],
      [[0x200, bytesOf(0x200, 3)]],
    );
    const seeds = [sparseSmall, elf, elfHand, sparse];
    /** Per loader: [loaded, rejected]. */
    const outcomes = [0, 1, 2, 3, 4].map(() => [0, 0]);
    for (let round = 0; round < 1500; round++) {
      const base = seeds[round % seeds.length];
      let bytes: Uint8Array;
      const how = rnd() % 4;
      if (how === 0) {
        bytes = base.slice(0, rnd() % (base.length + 1));
      } else if (how === 1) {
        bytes = base.slice();
        const flips = 1 + (rnd() % 8);
        // Bias the flips towards the headers, where they change the control flow.
        for (let i = 0; i < flips; i++) {
          const at = rnd() % (rnd() & 1 ? Math.min(bytes.length, 512) : bytes.length);
          bytes[at] ^= 1 << (rnd() % 8);
        }
      } else if (how === 2) {
        bytes = new Uint8Array(rnd() % 700).map(() => rnd() & 0xff);
        if (bytes.length >= 8 && rnd() & 1) bytes.set(base.subarray(0, 8)); // right magic
      } else {
        bytes = base.slice();
        // Overwrite one aligned 64-bit field with an extreme value.
        const at = 8 * (rnd() % Math.min(64, bytes.length >> 3));
        const extremes = [0n, 1n, (1n << 52n) - 1n, 1n << 52n, (1n << 64n) - 1n, 0xfffn];
        new DataView(bytes.buffer).setBigUint64(at, extremes[rnd() % extremes.length], true);
      }
      if (base !== elf && base !== elfHand && bytes.length >= 36 && rnd() & 1) {
        // Re-seal the checksum, so that the sparse loader's structure checks see the damage.
        new DataView(bytes.buffer, bytes.byteOffset).setUint32(
          bytes.length - 4,
          crc32(bytes.subarray(0, bytes.length - 4)),
          true,
        );
      }
      const results = [
        loadSparseImage(bytes),
        loadElfCore(bytes),
        loadSparseImage(bytes, new PhysMemory({ paBits: 30 })),
        loadElfCore(bytes, new PhysMemory({ paBits: 30 })),
        loadRawImage(new PhysMemory({ paBits: 24 }), bytes, 2 ** 24 - (rnd() % 2 ** 16)),
      ];
      results.forEach((result, i) => {
        if (result instanceof ImageError) {
          outcomes[i][1]++;
          expect(result.message.length).toBeGreaterThan(0);
        } else {
          expect(result === 0 || result instanceof PhysMemory).toBe(true);
          outcomes[i][0]++;
        }
      });
    }
    // Every loader both loads and rejects some inputs, so the loop reaches past the first checks.
    for (const [ok, rejected] of outcomes) {
      expect(ok).toBeGreaterThan(20);
      expect(rejected).toBeGreaterThan(20);
    }
  });
});
