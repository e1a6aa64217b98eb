import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { xorshift32 } from "../../../../scripts/bench-kit.js";
import { ModelBug } from "./bug.js";
import { PAGE_SIZE, PhysMemory } from "./phys-memory.js";

const TOP = 2 ** 52;
/** A frame number above 2^20, so its frame lives in the Map rather than the array. */
const HIGH_PA = 2 ** 40 + 0x3000;
/** Frames below this (PA 2^31) live in 2 MiB sections, the ones above it in the Map. */
const SECTION_PFNS = 2 ** 31 / PAGE_SIZE;

describe("PhysMemory reads of unwritten memory", () => {
  it("read zeros everywhere and populate nothing", () => {
    const mem = new PhysMemory();
    expect(mem.read8(0x1234)).toBe(0);
    expect(mem.read16(0x1234)).toBe(0);
    expect(mem.read32(0x1234)).toBe(0);
    mem.hi = 99;
    expect(mem.read64(0x1238)).toBe(0);
    expect(mem.hi).toBe(0);
    expect(mem.read64(HIGH_PA)).toBe(0);
    expect(mem.read64Big(TOP - 8)).toBe(0n);
    expect(mem.populatedFrameCount).toBe(0);
    expect(mem.busError).toBe(false);
  });

  it("a write to one frame leaves its neighbours unpopulated and reading zero", () => {
    const mem = new PhysMemory();
    mem.write32(0x2000, 0xdeadbeef);
    expect(mem.populatedFrames()).toEqual([2]);
    expect(mem.read32(0x1ffc)).toBe(0);
    expect(mem.read32(0x3000)).toBe(0);
    expect(mem.read32(0x2004)).toBe(0);
  });
});

describe("PhysMemory round trips", () => {
  it("8, 16 and 32-bit values, including ones with the top bit set, read back unsigned", () => {
    const mem = new PhysMemory();
    mem.write8(0x10, 0xff);
    mem.write8(0x11, 0x80);
    mem.write16(0x12, 0x8001);
    mem.write32(0x14, 0x80000001);
    mem.write32(0x18, 0xffffffff);
    mem.write32(0x1c, -1); // an int32 -1 is the same 32 bits
    expect(mem.read8(0x10)).toBe(0xff);
    expect(mem.read8(0x11)).toBe(0x80);
    expect(mem.read16(0x12)).toBe(0x8001);
    expect(mem.read32(0x14)).toBe(0x80000001);
    expect(mem.read32(0x18)).toBe(0xffffffff);
    expect(mem.read32(0x1c)).toBe(0xffffffff);
  });

  it("is little-endian across widths", () => {
    const mem = new PhysMemory();
    mem.write64(0x40, 0x44332211, 0x88776655);
    expect(mem.read8(0x40)).toBe(0x11);
    expect(mem.read8(0x47)).toBe(0x88);
    expect(mem.read16(0x42)).toBe(0x4433);
    expect(mem.read16(0x46)).toBe(0x8877);
    expect(mem.read32(0x44)).toBe(0x88776655);
    mem.write16(0x44, 0xbeef);
    mem.write8(0x40, 0xaa);
    expect(mem.read64(0x40)).toBe(0x443322aa);
    expect(mem.hi).toBe(0x8877beef);
  });

  it("read64 returns the low half, leaves the high half in hi; read64Big/read64Number agree", () => {
    const mem = new PhysMemory();
    mem.write64(0x1000, 0xfedcba98, 0x80000000);
    expect(mem.read64(0x1000)).toBe(0xfedcba98);
    expect(mem.hi).toBe(0x80000000);
    expect(mem.read64Big(0x1000)).toBe(0x80000000fedcba98n);
    mem.write64(0x1008, 0xffffffff, 0x000fffff);
    expect(mem.read64Number(0x1008)).toBe(2 ** 52 - 1);
    expect(mem.hi).toBe(0x000fffff);
  });

  it("write64Big stores a BigInt modulo 2^64", () => {
    const mem = new PhysMemory();
    mem.write64Big(0x8, 0xffffffffffffffffn);
    expect(mem.read64(0x8)).toBe(0xffffffff);
    expect(mem.hi).toBe(0xffffffff);
    mem.write64Big(0x8, -2n);
    expect(mem.read64Big(0x8)).toBe(0xfffffffffffffffen);
    mem.write64Big(0x8, (1n << 64n) + 7n);
    expect(mem.read64Big(0x8)).toBe(7n);
  });

  test.prop([fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff })], {
    seed: 0x64,
    numRuns: 300,
  })("any 64-bit value round-trips through write64/read64 and write64Big/read64Big", (lo, hi) => {
    const mem = new PhysMemory();
    mem.write64(0x100, lo, hi);
    expect(mem.read64(0x100)).toBe(lo);
    expect(mem.hi).toBe(hi);
    const v = (BigInt(hi) << 32n) | BigInt(lo);
    expect(mem.read64Big(0x100)).toBe(v);
    mem.write64Big(0x200, v);
    expect(mem.read64(0x200)).toBe(lo);
    expect(mem.hi).toBe(hi);
  });

  it("works for frames above 2^20 (the Map path) and at the last 8 bytes below 2^52", () => {
    const mem = new PhysMemory();
    mem.write64(HIGH_PA, 0x11111111, 0x22222222);
    mem.write64(TOP - 8, 0x33333333, 0xf4444444);
    mem.write8(TOP - 9, 0x55);
    mem.write16(TOP - 12, 0x6666);
    mem.write32(2 ** 20 * PAGE_SIZE, 0x77777777); // the first frame past the array
    expect(mem.read64(HIGH_PA)).toBe(0x11111111);
    expect(mem.hi).toBe(0x22222222);
    expect(mem.read64(TOP - 8)).toBe(0x33333333);
    expect(mem.hi).toBe(0xf4444444);
    expect(mem.read8(TOP - 9)).toBe(0x55);
    expect(mem.read16(TOP - 12)).toBe(0x6666);
    expect(mem.read32(2 ** 20 * PAGE_SIZE)).toBe(0x77777777);
    expect(mem.read32(2 ** 20 * PAGE_SIZE - 4)).toBe(0);
    expect(mem.populatedFrames()).toEqual([2 ** 20, HIGH_PA / PAGE_SIZE, TOP / PAGE_SIZE - 1]);
    expect(mem.busError).toBe(false);
  });

  test.prop([fc.integer({ min: 1, max: 0x7fffffff })], { seed: 0x5eed, numRuns: 4 })(
    "random stores of every width agree with a byte-map reference, low and high frames alike",
    (seed) => {
      const rnd = xorshift32(seed);
      const mem = new PhysMemory();
      const ref = new Map<number, number>();
      const bases = [0, 0x7_0000, 2 ** 32 - PAGE_SIZE, 2 ** 45, TOP - 2 * PAGE_SIZE];
      const byte = (pa: number) => ref.get(pa) ?? 0;
      const wrong: string[] = [];
      for (let i = 0; i < 5000; i++) {
        const width = 1 << (rnd() & 3);
        const pa = bases[rnd() % bases.length] + ((rnd() % (2 * PAGE_SIZE)) & -width);
        const lo = rnd();
        const hi = rnd();
        if (rnd() & 1) {
          if (width === 1) mem.write8(pa, lo);
          else if (width === 2) mem.write16(pa, lo);
          else if (width === 4) mem.write32(pa, lo);
          else mem.write64(pa, lo, hi);
          for (let b = 0; b < width; b++) {
            const v = b < 4 ? lo >>> (8 * b) : hi >>> (8 * (b - 4));
            ref.set(pa + b, v & 0xff);
          }
        } else {
          let want = 0;
          for (let b = Math.min(width, 4) - 1; b >= 0; b--) want = want * 256 + byte(pa + b);
          const got =
            width === 1
              ? mem.read8(pa)
              : width === 2
                ? mem.read16(pa)
                : width === 4
                  ? mem.read32(pa)
                  : mem.read64(pa);
          if (got !== want) wrong.push(`read${8 * width}(${pa}) = ${got}, want ${want}`);
          if (width === 8) {
            let wantHi = 0;
            for (let b = 7; b >= 4; b--) wantHi = wantHi * 256 + byte(pa + b);
            if (mem.hi !== wantHi) wrong.push(`hi after read64(${pa}) = ${mem.hi}, want ${wantHi}`);
          }
        }
      }
      expect(wrong).toEqual([]);
      expect(mem.busError).toBe(false);
    },
  );
});

describe("PhysMemory accesses outside the address space", () => {
  it("read 0, drop writes and set busError instead of throwing", () => {
    const mem = new PhysMemory({ paBits: 32 });
    const end = 2 ** 32;
    mem.write32(end, 1);
    expect(mem.busError).toBe(true);
    expect(mem.populatedFrameCount).toBe(0);
    mem.busError = false;
    mem.write64(0x100, 5, 6);
    mem.hi = 0;
    expect(mem.read64(end)).toBe(0);
    expect(mem.busError).toBe(true);
    mem.busError = false;
    for (const read of [
      () => mem.read8(end),
      () => mem.read16(end + 2),
      () => mem.read32(-4),
      () => mem.read8(-1),
    ]) {
      expect(read()).toBe(0);
      expect(mem.busError).toBe(true);
      mem.busError = false;
    }
    for (const write of [
      () => mem.write8(end, 1),
      () => mem.write16(end + 4096, 1),
      () => mem.write64(-8, 1, 1),
      () => mem.write8(Number.POSITIVE_INFINITY, 1),
    ]) {
      write();
      expect(mem.busError).toBe(true);
      mem.busError = false;
    }
    expect(mem.populatedFrames()).toEqual([0]);
    expect(mem.read64(0x100)).toBe(5);
  });

  it("treats a NaN address as outside the space: read 0, write dropped, busError set", () => {
    const mem = new PhysMemory();
    expect(mem.read32(Number.NaN)).toBe(0);
    expect(mem.busError).toBe(true);
    mem.busError = false;
    mem.write64(Number.NaN, 1, 2);
    mem.write8(Number.NaN, 1);
    expect(mem.busError).toBe(true);
    expect(mem.populatedFrameCount).toBe(0);
    expect(mem.populatedFrames()).toEqual([]);
  });

  it("accepts the last byte of the space and refuses one past it", () => {
    const mem = new PhysMemory({ paBits: 12 });
    expect(mem.pfnLimit).toBe(1);
    mem.write64(4088, 1, 2);
    mem.write8(4095, 9);
    expect(mem.busError).toBe(false);
    expect(mem.inRange(4088, 8)).toBe(true);
    expect(mem.inRange(4089, 8)).toBe(false);
    expect(mem.inRange(-1)).toBe(false);
    mem.write8(4096, 1);
    expect(mem.busError).toBe(true);
  });

  it("refuses a paBits outside [12, 52] with ModelBug", () => {
    for (const paBits of [11, 53, 32.5]) {
      expect(() => new PhysMemory({ paBits })).toThrow(ModelBug);
    }
  });
});

describe("PhysMemory fault hook", () => {
  it("fails the accesses it chooses, with busError, seeing address, width and direction", () => {
    const mem = new PhysMemory();
    mem.write64(0x1000, 0xaa, 0xbb);
    mem.write32(0x2000, 0xcc);
    const asked: [number, number, boolean][] = [];
    mem.faultHook = (pa, bytes, write) => {
      asked.push([pa, bytes, write]);
      return pa >= 0x1000 && pa < 0x2000;
    };
    expect(mem.read64(0x1000)).toBe(0);
    expect(mem.hi).toBe(0);
    expect(mem.busError).toBe(true);
    mem.busError = false;
    mem.write32(0x1004, 0x55);
    expect(mem.busError).toBe(true);
    mem.busError = false;
    expect(mem.read32(0x2000)).toBe(0xcc);
    mem.write8(0x2001, 1);
    expect(mem.busError).toBe(false);
    expect(asked).toEqual([
      [0x1000, 8, false],
      [0x1004, 4, true],
      [0x2000, 4, false],
      [0x2001, 1, true],
    ]);
    mem.faultHook = null;
    expect(mem.read64(0x1000)).toBe(0xaa);
    expect(mem.hi).toBe(0xbb);
  });

  it("fails the frames of a bulk access that it refuses, and only those", () => {
    const mem = new PhysMemory();
    mem.fill(0, 3 * PAGE_SIZE, 0x11);
    mem.faultHook = (pa) => pa >= PAGE_SIZE && pa < 2 * PAGE_SIZE;
    const buf = new Uint8Array(3 * PAGE_SIZE).fill(0xee);
    expect(mem.readBytes(0, buf)).toBe(false);
    expect(mem.busError).toBe(true);
    expect(buf[0]).toBe(0x11);
    expect(buf[PAGE_SIZE]).toBe(0);
    expect(buf[2 * PAGE_SIZE]).toBe(0x11);
    expect(mem.writeBytes(0, new Uint8Array(3 * PAGE_SIZE).fill(0x22))).toBe(false);
    expect(mem.fill(0, 3 * PAGE_SIZE, 0x33)).toBe(false);
    mem.faultHook = null;
    expect([mem.read8(0), mem.read8(PAGE_SIZE), mem.read8(2 * PAGE_SIZE)]).toEqual([
      0x33, 0x11, 0x33,
    ]);
  });
});

describe("PhysMemory write observer", () => {
  it("sees one call per store with its address and width; a 64-bit store is one (pa, 8)", () => {
    const mem = new PhysMemory();
    const seen: [number, number][] = [];
    mem.onWrite = (pa, bytes) => seen.push([pa, bytes]);
    mem.write64(0x1008, 1, 2);
    mem.write32(0x100c, 3);
    mem.write16(0x1002, 4);
    mem.write8(0x1001, 5);
    mem.write64Big(0x2000, 6n);
    mem.read64(0x1008);
    expect(seen).toEqual([
      [0x1008, 8],
      [0x100c, 4],
      [0x1002, 2],
      [0x1001, 1],
      [0x2000, 8],
    ]);
  });

  it("is not called for a refused store, and once per touched frame for bulk stores", () => {
    const mem = new PhysMemory({ paBits: 20 });
    const seen: [number, number][] = [];
    mem.onWrite = (pa, bytes) => seen.push([pa, bytes]);
    mem.write64(2 ** 20, 1, 1);
    expect(seen).toEqual([]);
    mem.writeBytes(0xff0, new Uint8Array(0x20));
    mem.fill(0x1ff8, 0x1010, 7);
    expect(seen).toEqual([
      [0xff0, 0x10],
      [0x1000, 0x10],
      [0x1ff8, 8],
      [0x2000, 0x1000],
      [0x3000, 8],
    ]);
  });
});

describe("PhysMemory bulk access", () => {
  it("readBytes and writeBytes cross frame boundaries and honour offset and length", () => {
    const mem = new PhysMemory();
    const src = new Uint8Array(3 * PAGE_SIZE + 100);
    for (let i = 0; i < src.length; i++) src[i] = (i * 7 + 3) & 0xff;
    const pa = 5 * PAGE_SIZE - 50;
    expect(mem.writeBytes(pa, src)).toBe(true);
    expect(mem.populatedFrames()).toEqual([4, 5, 6, 7, 8]);
    const back = new Uint8Array(src.length);
    expect(mem.readBytes(pa, back)).toBe(true);
    expect(Buffer.compare(back, src)).toBe(0);
    for (const i of [0, 49, 50, PAGE_SIZE + 50, src.length - 1]) {
      expect(mem.read8(pa + i)).toBe(src[i]);
    }
    const part = new Uint8Array(20).fill(0xaa);
    expect(mem.readBytes(pa + 40, part, 5, 10)).toBe(true);
    expect([...part.subarray(0, 5)]).toEqual([0xaa, 0xaa, 0xaa, 0xaa, 0xaa]);
    expect([...part.subarray(5, 15)]).toEqual([...src.subarray(40, 50)]);
    expect(part[15]).toBe(0xaa);
    expect(mem.writeBytes(0x10, src, 100, 4)).toBe(true);
    expect(mem.read32(0x10)).toBe(
      (src[103] * 2 ** 24 + src[102] * 2 ** 16 + src[101] * 2 ** 8 + src[100]) >>> 0,
    );
  });

  it("readBytes of unwritten memory gives zeros and populates nothing", () => {
    const mem = new PhysMemory();
    const buf = new Uint8Array(2 * PAGE_SIZE).fill(1);
    expect(mem.readBytes(PAGE_SIZE + 8, buf)).toBe(true);
    expect(buf.every((b) => b === 0)).toBe(true);
    expect(mem.populatedFrameCount).toBe(0);
  });

  it("a bulk access that runs past the end of the space fails only the part outside", () => {
    const mem = new PhysMemory({ paBits: 16 });
    expect(mem.writeBytes(0x10000 - 4, new Uint8Array(8).fill(9))).toBe(false);
    expect(mem.busError).toBe(true);
    expect(mem.read32(0x10000 - 4)).toBe(0x09090909);
  });

  it("fill sets bytes across frames; fill with zero keeps unpopulated frames unpopulated", () => {
    const mem = new PhysMemory();
    expect(mem.fill(PAGE_SIZE - 2, PAGE_SIZE + 4, 0x5a)).toBe(true);
    expect(mem.populatedFrames()).toEqual([0, 1, 2]);
    expect(mem.read16(PAGE_SIZE - 2)).toBe(0x5a5a);
    expect(mem.read8(2 * PAGE_SIZE + 1)).toBe(0x5a);
    expect(mem.read8(2 * PAGE_SIZE + 2)).toBe(0);
    expect(mem.fill(0, 8 * PAGE_SIZE, 0)).toBe(true);
    expect(mem.populatedFrames()).toEqual([0, 1, 2]);
    expect(mem.read16(PAGE_SIZE - 2)).toBe(0);
    expect(mem.fill(100 * PAGE_SIZE, 50 * PAGE_SIZE, 0)).toBe(true);
    expect(mem.populatedFrameCount).toBe(3);
  });

  it("copy moves bytes across frames, also when source and destination overlap", () => {
    const mem = new PhysMemory();
    for (let i = 0; i < 64; i++) mem.write8(PAGE_SIZE - 32 + i, i + 1);
    expect(mem.copy(3 * PAGE_SIZE - 10, PAGE_SIZE - 32, 64)).toBe(true);
    for (let i = 0; i < 64; i++) expect(mem.read8(3 * PAGE_SIZE - 10 + i)).toBe(i + 1);
    expect(mem.copy(PAGE_SIZE - 16, PAGE_SIZE - 32, 64)).toBe(true);
    for (let i = 0; i < 64; i++) expect(mem.read8(PAGE_SIZE - 16 + i)).toBe(i + 1);
    expect(mem.copy(2 ** 52 - 8, 0, 16)).toBe(false);
  });
});

describe("PhysMemory alignment", () => {
  it("throws ModelBug for a misaligned 16, 32 or 64-bit access, reads and writes alike", () => {
    const mem = new PhysMemory();
    const bad = [
      () => mem.read16(1),
      () => mem.read32(2),
      () => mem.read64(4),
      () => mem.write16(3, 0),
      () => mem.write32(6, 0),
      () => mem.write64(12, 0, 0),
      () => mem.read64(HIGH_PA + 4),
      () => mem.write64(TOP - 4, 0, 0),
    ];
    for (const access of bad) expect(access).toThrow(ModelBug);
    expect(mem.populatedFrameCount).toBe(0);
  });
});

describe("PhysMemory frames", () => {
  it("discardFrame drops a frame: it reads zero again and no longer counts", () => {
    const mem = new PhysMemory();
    mem.write32(0x1000, 1);
    mem.write32(HIGH_PA, 2);
    mem.write32(0x5000, 3);
    expect(mem.populatedFrameCount).toBe(3);
    mem.discardFrame(1);
    mem.discardFrame(HIGH_PA / PAGE_SIZE);
    mem.discardFrame(77); // never populated: nothing happens
    expect(mem.populatedFrameCount).toBe(1);
    expect(mem.isPopulated(1)).toBe(false);
    expect(mem.read32(0x1000)).toBe(0);
    expect(mem.read32(HIGH_PA)).toBe(0);
    expect(mem.populatedFrames()).toEqual([5]);
    mem.write8(0x1000, 4);
    expect(mem.read32(0x1000)).toBe(4);
  });

  it("frameBytes is a live view of a populated frame and undefined for others", () => {
    const mem = new PhysMemory();
    expect(mem.frameBytes(3)).toBeUndefined();
    mem.write32(0x3010, 0x04030201);
    const view = mem.frameBytes(3) as Uint8Array;
    expect(view.length).toBe(PAGE_SIZE);
    expect([...view.subarray(0x10, 0x14)]).toEqual([1, 2, 3, 4]);
    view[0] = 0x42;
    expect(mem.read8(0x3000)).toBe(0x42);
  });

  it("lists populated frames ascending, array and Map frames together", () => {
    const mem = new PhysMemory();
    for (const pa of [2 ** 45, 0x9000, 2 ** 33, 0x1000, 2 ** 40]) mem.write8(pa, 1);
    expect(mem.populatedFrames()).toEqual([1, 9, 2 ** 21, 2 ** 28, 2 ** 33].map((pfn) => pfn));
  });
});

describe("PhysMemory sections (memory below 2^31)", () => {
  const SECTION = 2 ** 21;
  const LIMIT = 2 ** 31;

  it("keeps accesses at both sides of a section boundary and of 2^31 apart", () => {
    const mem = new PhysMemory();
    const pas = [SECTION - 8, SECTION, LIMIT - 8, LIMIT];
    pas.forEach((pa, k) => {
      mem.write64(pa, 0x11111111 * (k + 1), 0xa0b0c0d0 + k);
    });
    pas.forEach((pa, k) => {
      expect(mem.read64(pa)).toBe(0x11111111 * (k + 1));
      expect(mem.hi).toBe(0xa0b0c0d0 + k);
    });
    expect(mem.read32(SECTION - 4)).toBe(0xa0b0c0d0);
    expect(mem.read8(SECTION - 1)).toBe(0xa0);
    expect(mem.read16(LIMIT - 2)).toBe(0xa0b0);
    expect(mem.read8(LIMIT)).toBe(0x44);
    for (const pa of [SECTION - 16, SECTION + 8, LIMIT - 16, LIMIT + 8]) {
      expect(mem.read64(pa)).toBe(0);
      expect(mem.hi).toBe(0);
    }
    expect(mem.populatedFrames()).toEqual([
      SECTION / PAGE_SIZE - 1,
      SECTION / PAGE_SIZE,
      LIMIT / PAGE_SIZE - 1,
      LIMIT / PAGE_SIZE,
    ]);
    expect(mem.busError).toBe(false);
  });

  it("stores of every width into the last bytes below 2^31 and the first above it", () => {
    const mem = new PhysMemory();
    mem.write8(LIMIT - 1, 0x81);
    mem.write16(LIMIT - 4, 0x8283);
    mem.write32(LIMIT, 0x84858687);
    mem.write8(LIMIT + 4, 0x88);
    mem.write16(LIMIT + 6, 0x898a);
    expect(mem.read32(LIMIT - 4)).toBe(0x81008283);
    expect(mem.read64(LIMIT)).toBe(0x84858687);
    expect(mem.hi).toBe(0x898a0088);
  });

  it("bulk accesses cross a section boundary and the 2^31 limit", () => {
    const mem = new PhysMemory();
    const src = new Uint8Array(300);
    for (let i = 0; i < src.length; i++) src[i] = (i * 13 + 1) & 0xff;
    for (const pa of [SECTION - 152, LIMIT - 152]) {
      expect(mem.writeBytes(pa, src)).toBe(true);
      const back = new Uint8Array(src.length);
      expect(mem.readBytes(pa, back)).toBe(true);
      expect([...back]).toEqual([...src]);
      expect(mem.read8(pa + 151)).toBe(src[151]);
      expect(mem.read8(pa + 152)).toBe(src[152]);
      expect(mem.fill(pa + 140, 20, 0xee)).toBe(true);
      expect(mem.read32(pa + 148)).toBe(0xeeeeeeee);
      expect(mem.read32(pa + 152)).toBe(0xeeeeeeee);
      expect(mem.copy(pa + 1000, pa, 300)).toBe(true);
      expect(mem.read32(pa + 1148)).toBe(0xeeeeeeee);
      expect(mem.read8(pa + 1000)).toBe(src[0]);
    }
    expect(mem.busError).toBe(false);
  });
});

describe("PhysMemory fractional addresses", () => {
  it("are outside the space: reads give 0, writes are dropped, busError is set", () => {
    const mem = new PhysMemory();
    mem.write64(8, 0x11, 0x22);
    mem.write64(HIGH_PA, 0x33, 0x44);
    for (const pa of [8.5, 8.25, 2 ** 31 - 7.5, HIGH_PA + 0.5]) {
      const reads = [
        () => mem.read8(pa),
        () => mem.read16(pa),
        () => mem.read32(pa),
        () => mem.read64(pa),
        () => mem.read64Number(pa),
      ];
      for (const read of reads) {
        mem.hi = 99;
        expect(read()).toBe(0);
        expect(mem.busError).toBe(true);
        mem.busError = false;
      }
      expect(mem.hi).toBe(0);
      const writes = [
        () => mem.write8(pa, 0xff),
        () => mem.write16(pa, 0xffff),
        () => mem.write32(pa, 0xffffffff),
        () => mem.write64(pa, 0xffffffff, 0xffffffff),
        () => mem.writeBytes(pa, new Uint8Array(4).fill(0xff)),
        () => mem.fill(pa, 4, 0xff),
      ];
      for (const write of writes) {
        write();
        expect(mem.busError).toBe(true);
        mem.busError = false;
      }
      expect(mem.readBytes(pa, new Uint8Array(4))).toBe(false);
      mem.busError = false;
    }
    expect(mem.populatedFrames()).toEqual([0, HIGH_PA / PAGE_SIZE]);
    expect(mem.read64(8)).toBe(0x11);
    expect(mem.hi).toBe(0x22);
    expect(mem.read64(HIGH_PA)).toBe(0x33);
    expect(mem.hi).toBe(0x44);
  });
});

describe("PhysMemory fault hook and the unchecked path", () => {
  it("a hook that fails everything fails every access; removing it restores them", () => {
    const mem = new PhysMemory();
    mem.write64(0x1000, 7, 8);
    mem.write64(HIGH_PA, 9, 10);
    const hook = () => true;
    mem.faultHook = hook;
    expect(mem.faultHook).toBe(hook);
    for (const pa of [0x1000, HIGH_PA]) {
      for (const read of [
        () => mem.read8(pa),
        () => mem.read16(pa),
        () => mem.read32(pa),
        () => mem.read64(pa),
      ]) {
        expect(read()).toBe(0);
        expect(mem.busError).toBe(true);
        mem.busError = false;
      }
      mem.write64(pa, 1, 1);
      mem.write8(pa, 1);
      expect(mem.busError).toBe(true);
      mem.busError = false;
    }
    mem.write32(0x2000, 1); // an unpopulated frame stays so
    expect(mem.busError).toBe(true);
    mem.busError = false;
    expect(mem.populatedFrameCount).toBe(2);
    mem.faultHook = null;
    expect(mem.faultHook).toBeNull();
    expect(mem.read64(0x1000)).toBe(7);
    expect(mem.hi).toBe(8);
    expect(mem.read64(HIGH_PA)).toBe(9);
    expect(mem.hi).toBe(10);
    mem.write32(0x2000, 5);
    expect(mem.read32(0x2000)).toBe(5);
    expect(mem.busError).toBe(false);
  });

  it("a hook that refuses nothing sees every access below 2^31 too, then stops seeing them", () => {
    const mem = new PhysMemory();
    mem.write64(0x1000, 1, 2);
    let asked = 0;
    mem.faultHook = () => {
      asked++;
      return false;
    };
    mem.read64(0x1000);
    mem.read8(0x1001);
    mem.write64(0x1000, 3, 4);
    mem.write16(0x1002, 5);
    expect(asked).toBe(4);
    expect(mem.read64(0x1000)).toBe(0x00050003);
    expect(mem.hi).toBe(4);
    mem.faultHook = null;
    mem.read64(0x1000);
    mem.write64(0x1000, 1, 1);
    expect(asked).toBe(5);
  });
});

/** What a table walker does with `wordsOf`: the entry at `pa` by a direct read, or null. */
function directRead64(mem: PhysMemory, pa: number): [number, number] | null {
  const w = mem.wordsOf(pa);
  if (w === undefined) return null;
  const i = mem.wordIndex(pa);
  return [w[i], w[i + 1]];
}

describe("PhysMemory direct reads (wordsOf, wordIndex)", () => {
  it("give what read64 gives, at both sides of a section boundary and below 2^31", () => {
    const mem = new PhysMemory();
    const pas = [0, 0x1ff8, 2 ** 21 - 8, 2 ** 21, 2 ** 21 + 0x1230, 2 ** 31 - 8];
    for (const [k, pa] of pas.entries()) mem.write64(pa, (0x80000001 + k) >>> 0, 0xfedc0000 + k);
    for (const pa of pas) {
      const lo = mem.read64(pa);
      expect(directRead64(mem, pa)).toEqual([lo, mem.hi]);
    }
    // An unwritten frame of a section that holds data reads as zeros there too.
    expect(directRead64(mem, 2 ** 21 + 0x5000)).toEqual([0, 0]);
    expect(mem.wordIndex(2 ** 21 + 0x1230)).toBe(0x1230 >>> 2);
    expect(mem.busError).toBe(false);
  });

  it("are refused where read64 must answer: no data in the section, 2^31 and up, outside the space, not an integer", () => {
    const mem = new PhysMemory();
    mem.write64(0x1000, 1, 2);
    mem.write64(2 ** 31, 3, 4);
    for (const pa of [2 ** 21, 2 ** 31, 2 ** 31 + 0x1000, HIGH_PA, TOP, -8, 4096.5, Number.NaN]) {
      expect(mem.wordsOf(pa)).toBeUndefined();
    }
    expect(mem.wordsOf(0x1000)).toBeDefined();
    const small = new PhysMemory({ paBits: 20 });
    small.write64(0xff8, 5, 6);
    expect(directRead64(small, 0xff8)).toEqual([5, 6]);
    expect(small.wordsOf(2 ** 20)).toBeUndefined();
    expect(mem.busError).toBe(false);
    expect(small.busError).toBe(false);
  });

  it("are refused while a fault hook is installed, so that the hook sees every read; allowed again once it is removed", () => {
    const mem = new PhysMemory();
    mem.write64(0x3000, 7, 8);
    const asked: number[] = [];
    mem.faultHook = (pa) => {
      asked.push(pa);
      return true;
    };
    expect(mem.wordsOf(0x3000)).toBeUndefined();
    // The reader's fallback: read64 consults the hook, which fails the read as a bus error.
    expect(mem.read64(0x3000)).toBe(0);
    expect(mem.busError).toBe(true);
    expect(asked).toEqual([0x3000]);
    mem.faultHook = () => false;
    expect(mem.wordsOf(0x3000)).toBeUndefined();
    mem.faultHook = null;
    expect(directRead64(mem, 0x3000)).toEqual([7, 8]);
  });

  it("see stores made through write64, which the write observer sees", () => {
    const mem = new PhysMemory();
    mem.write64(0x4000, 0, 0);
    const w = mem.wordsOf(0x4008) as Uint32Array;
    const seen: number[] = [];
    mem.onWrite = (pa, bytes) => seen.push(pa, bytes);
    mem.write64(0x4008, 0x11, 0x22);
    expect([w[mem.wordIndex(0x4008)], w[mem.wordIndex(0x400c)]]).toEqual([0x11, 0x22]);
    expect(seen).toEqual([0x4008, 8]);
  });

  it("follow discardFrame: zeros within a section that keeps data, refused once it holds none", () => {
    const mem = new PhysMemory();
    mem.write64(0x6000, 1, 1);
    mem.write64(0x7000, 2, 2);
    mem.discardFrame(6);
    expect(directRead64(mem, 0x6000)).toEqual([0, 0]);
    mem.discardFrame(7);
    expect(mem.wordsOf(0x7000)).toBeUndefined();
    expect(mem.read64(0x7000)).toBe(0);
  });
});

describe("PhysMemory populated frames within a section", () => {
  it("only the written frame of a section is populated; discard zeroes it and unpopulates it", () => {
    const mem = new PhysMemory();
    mem.write32(0x5004, 0x12345678);
    expect(mem.populatedFrames()).toEqual([5]);
    expect([4, 5, 6, 511].map((pfn) => mem.isPopulated(pfn))).toEqual([false, true, false, false]);
    expect(mem.frameBytes(6)).toBeUndefined();
    mem.write64(0x6000, 1, 2);
    expect(mem.fill(0x7000, PAGE_SIZE, 0)).toBe(true);
    expect(mem.populatedFrames()).toEqual([5, 6]);
    mem.discardFrame(5);
    expect(mem.isPopulated(5)).toBe(false);
    expect(mem.populatedFrameCount).toBe(1);
    expect(mem.read32(0x5004)).toBe(0);
    expect(mem.read64(0x6000)).toBe(1);
    mem.write8(0x5000, 1);
    expect(mem.read32(0x5004)).toBe(0);
    expect(mem.populatedFrames()).toEqual([5, 6]);
    mem.discardFrame(5);
    mem.discardFrame(6);
    expect(mem.populatedFrameCount).toBe(0);
    expect(mem.populatedFrames()).toEqual([]);
    expect(mem.read64(0x6000)).toBe(0);
    mem.write8(0x6001, 0x42);
    expect(mem.read32(0x6000)).toBe(0x4200);
    expect(mem.populatedFrames()).toEqual([6]);
  });

  it("isPopulated is false for frame numbers that are negative, fractional or NaN", () => {
    const mem = new PhysMemory();
    mem.write8(0x1000, 1);
    for (const pfn of [-1, 1.5, Number.NaN, 2 ** 60]) expect(mem.isPopulated(pfn)).toBe(false);
    mem.discardFrame(1.5);
    expect(mem.populatedFrameCount).toBe(1);
  });

  it("frameBytes is one frame of the section: it aliases that frame and no neighbour", () => {
    const mem = new PhysMemory();
    const last = SECTION_PFNS - 1;
    for (const pfn of [3, 4, 511, 512, last, last + 1]) mem.write8(pfn * PAGE_SIZE + 1, pfn & 0xff);
    for (const pfn of [3, 511, last]) {
      const view = mem.frameBytes(pfn) as Uint8Array;
      const next = mem.frameBytes(pfn + 1) as Uint8Array;
      expect(view.length).toBe(PAGE_SIZE);
      expect(view[1]).toBe(pfn & 0xff);
      view[PAGE_SIZE - 1] = 0xa5;
      expect(mem.read8((pfn + 1) * PAGE_SIZE - 1)).toBe(0xa5);
      expect(next[0]).toBe(0);
      expect(mem.read8((pfn + 1) * PAGE_SIZE)).toBe(0);
      mem.write16(pfn * PAGE_SIZE + 2, 0x5a5b);
      expect([view[2], view[3]]).toEqual([0x5b, 0x5a]);
    }
  });
});

describe("PhysMemory bulk paths against a byte-map reference", () => {
  test.prop([fc.integer({ min: 1, max: 0x7fffffff })], { seed: 0xb01c, numRuns: 6 })(
    "readBytes, writeBytes, fill, copy and discardFrame near section and Map boundaries",
    (seed) => {
      const rnd = xorshift32(seed);
      const mem = new PhysMemory();
      const ref = new Map<number, number>();
      const populated = new Set<number>();
      const bases = [2 * PAGE_SIZE, 2 ** 21, 2 ** 31, 2 ** 40];
      const wrong: string[] = [];
      const pick = () => bases[rnd() % bases.length] - 2 * PAGE_SIZE + (rnd() % (4 * PAGE_SIZE));
      const size = () => (rnd() & 1 ? rnd() % 80 : rnd() % (2 * PAGE_SIZE + 100));
      for (let i = 0; i < 400; i++) {
        const op = rnd() % 5;
        const pa = pick();
        const n = size();
        if (op === 0) {
          const src = new Uint8Array(n);
          for (let k = 0; k < n; k++) src[k] = rnd();
          mem.writeBytes(pa, src);
          for (let k = 0; k < n; k++) {
            ref.set(pa + k, src[k]);
            populated.add(Math.floor((pa + k) / PAGE_SIZE));
          }
        } else if (op === 1) {
          const byte = rnd() % 3 === 0 ? 0 : rnd() & 0xff;
          mem.fill(pa, n, byte);
          for (let k = 0; k < n; k++) {
            const pfn = Math.floor((pa + k) / PAGE_SIZE);
            if (byte !== 0) populated.add(pfn);
            if (populated.has(pfn)) ref.set(pa + k, byte);
          }
        } else if (op === 2) {
          const from = pick();
          const bytes: number[] = [];
          for (let k = 0; k < n; k++) bytes.push(ref.get(from + k) ?? 0);
          mem.copy(pa, from, n);
          for (let k = 0; k < n; k++) {
            ref.set(pa + k, bytes[k]);
            populated.add(Math.floor((pa + k) / PAGE_SIZE));
          }
        } else if (op === 3) {
          const pfn = Math.floor(pa / PAGE_SIZE);
          mem.discardFrame(pfn);
          populated.delete(pfn);
          for (let k = 0; k < PAGE_SIZE; k++) ref.delete(pfn * PAGE_SIZE + k);
        } else {
          const dst = new Uint8Array(n + 2).fill(0xcc);
          mem.readBytes(pa, dst, 1, n);
          if (dst[0] !== 0xcc || dst[n + 1] !== 0xcc) wrong.push(`readBytes(${pa}, ${n}) overran`);
          for (let k = 0; k < n; k++) {
            if (dst[1 + k] !== (ref.get(pa + k) ?? 0)) {
              wrong.push(`byte ${pa + k} read ${dst[1 + k]}, want ${ref.get(pa + k) ?? 0}`);
              break;
            }
          }
        }
      }
      expect(wrong).toEqual([]);
      expect(mem.populatedFrames()).toEqual([...populated].sort((a, b) => a - b));
      expect(mem.populatedFrameCount).toBe(populated.size);
      expect(mem.busError).toBe(false);
    },
  );

  it("writeBytes from a view of the same memory copies as if through a buffer", () => {
    const mem = new PhysMemory();
    for (let i = 0; i < 64; i++) mem.write8(PAGE_SIZE + i, i + 1);
    const view = mem.frameBytes(1) as Uint8Array;
    expect(mem.writeBytes(PAGE_SIZE + 8, view, 0, 32)).toBe(true);
    for (let i = 0; i < 32; i++) expect(mem.read8(PAGE_SIZE + 8 + i)).toBe(i + 1);
    expect(mem.readBytes(PAGE_SIZE, view, 4, 16)).toBe(true);
    expect([...view.subarray(4, 8)]).toEqual([1, 2, 3, 4]);
  });

  it("copy stays right when the write observer copies from inside it", () => {
    const mem = new PhysMemory();
    for (let i = 0; i < 16; i++) mem.write8(0x1000 + i, i + 1);
    for (let i = 0; i < 16; i++) mem.write8(0x5000 + i, 0x80 + i);
    let nested = false;
    mem.onWrite = (pa) => {
      if (pa !== 0x2ff8 || nested) return;
      nested = true;
      mem.copy(0x6000, 0x5000, 16);
    };
    // The outer copy spans two frames, so its second half is stored after the nested copy ran.
    expect(mem.copy(0x2ff8, 0x1000, 16)).toBe(true);
    for (let i = 0; i < 16; i++) {
      expect(mem.read8(0x2ff8 + i)).toBe(i + 1);
      expect(mem.read8(0x6000 + i)).toBe(0x80 + i);
    }
  });
});
