// Tests of the IOVA allocator: each kernel rule by name, then random runs against a reference.

import { fc, test } from "@fast-check/vitest";
import { describe, expect } from "vitest";
import { xorshift32 } from "../../../../scripts/bench-kit.js";
import { ModelBug } from "../platform/bug.js";
import {
  IOVA_MAG_SIZE,
  IOVA_RANGE_CACHE_MAX_SIZE,
  type Iova,
  IovaDomain,
  iovaRcacheRange,
  iovaSize,
} from "./iova.js";

const SZ_4K = 4096;
/** With a 4 KiB granule: the first pfn at 4 GiB. */
const DMA32 = 2 ** 20;
/** A 48-bit limit with a 4 KiB granule. */
const LIMIT48 = 2 ** 36 - 1;

function range(iova: Iova | null): [number, number] | null {
  return iova === null ? null : [iova.pfnLo, iova.pfnHi];
}

function ranges(dom: IovaDomain): [number, number][] {
  return dom.iovas().map((r) => [r.pfnLo, r.pfnHi]);
}

/** An assertion cheap enough for the hot loops of the random runs (expect costs microseconds). */
function same(got: unknown, want: unknown, what: string): void {
  if (got === want) return;
  if (Array.isArray(got) && Array.isArray(want) && got.every((x, i) => x === want[i])) return;
  expect(got, what).toEqual(want);
}

/** Allocate and expect success. */
function alloc(dom: IovaDomain, size: number, limit: number, aligned = true): Iova {
  const iova = dom.allocIova(size, limit, aligned);
  if (iova === null) throw new Error(`allocIova(${size}, ${limit}) failed`);
  return iova;
}

describe("IovaDomain: a new domain", () => {
  test("a new domain has the 32-bit boundary at 2^32 >> shift, no ranges and nothing cached", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    expect(dom.granule).toBe(SZ_4K);
    expect(dom.startPfn).toBe(1);
    expect(dom.iovaShift).toBe(12);
    expect(dom.dma32PfnLimit).toBe(DMA32);
    expect(dom.maxPfn).toBe(2 ** 52 - 1);
    expect(dom.max32AllocSize).toBe(DMA32);
    expect(dom.cpus).toBe(1);
    expect(dom.iovas()).toEqual([]);
    expect(dom.liveCount).toBe(0);
    expect(dom.cachedCount).toBe(0);
    expect(dom.reservedCount).toBe(0);
    expect(new IovaDomain(1 << 16, 1).dma32PfnLimit).toBe(1 << 16);
    expect(new IovaDomain(512, 1).dma32PfnLimit).toBe(1 << 23);
  });

  test("a small granule keeps pfns below 2^53", () => {
    const dom = new IovaDomain(1, 0);
    expect(dom.maxPfn).toBe(2 ** 53 - 2);
    expect(range(dom.allocIova(1, Number.MAX_SAFE_INTEGER, false))).toEqual([
      2 ** 53 - 2,
      2 ** 53 - 2,
    ]);
  });

  test("a granule that is not a power of two up to 64 KiB, a bad start pfn or CPU count is a model bug", () => {
    for (const g of [0, 3, 4095, 1 << 17, 1.5, Number.NaN]) {
      expect(() => new IovaDomain(g, 1), String(g)).toThrow(ModelBug);
    }
    for (const s of [-1, 0.5, 2 ** 53]) {
      expect(() => new IovaDomain(SZ_4K, s), String(s)).toThrow(ModelBug);
    }
    for (const cpus of [0, -1, 1.5, 5000]) {
      expect(() => new IovaDomain(SZ_4K, 1, { cpus }), String(cpus)).toThrow(ModelBug);
    }
  });

  test("the iova.h helpers convert between bytes and pfns", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    expect(dom.iovaMask).toBe(0xfff);
    expect(dom.iovaOffset(0x12345)).toBe(0x345);
    expect(dom.iovaAlign(1)).toBe(SZ_4K);
    expect(dom.iovaAlign(SZ_4K)).toBe(SZ_4K);
    expect(dom.iovaAlign(SZ_4K + 1)).toBe(2 * SZ_4K);
    expect(dom.iovaPfn(0x12345)).toBe(0x12);
    expect(dom.iovaPfn(2 ** 52)).toBe(2 ** 40);
    const iova = alloc(dom, 3, 0xfffff, false);
    expect(iovaSize(iova)).toBe(3);
    expect(dom.iovaDmaAddr(iova)).toBe(iova.pfnLo * SZ_4K);
    expect(iovaRcacheRange()).toBe(128 * 1024);
    expect(IOVA_RANGE_CACHE_MAX_SIZE).toBe(6);
    expect(IOVA_MAG_SIZE).toBe(127);
  });
});

describe("IovaDomain: allocIova", () => {
  test("ranges are handed out top-down, each right below the last", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    expect(range(dom.allocIova(1, 1000, false))).toEqual([1000, 1000]);
    expect(range(dom.allocIova(1, 1000, false))).toEqual([999, 999]);
    expect(range(dom.allocIova(3, 1000, false))).toEqual([996, 998]);
    expect(range(dom.allocIova(2, 1000, false))).toEqual([994, 995]);
    expect(dom.liveCount).toBe(4);
  });

  test("the limit is inclusive: a range ends at limitPfn at the highest", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    expect(range(dom.allocIova(4, 0x103, true))).toEqual([0x100, 0x103]);
    expect(range(new IovaDomain(SZ_4K, 1).allocIova(1, 0x200, false))).toEqual([0x200, 0x200]);
  });

  test("size-aligned ranges start on a multiple of size rounded up to a power of two", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    expect(range(dom.allocIova(1, 1000, true))).toEqual([1000, 1000]);
    // 3 rounds up to 4: the highest multiple of 4 with room below 1000 is 996.
    expect(range(dom.allocIova(3, 1000, true))).toEqual([996, 998]);
    expect(range(dom.allocIova(5, 1000, true))).toEqual([984, 988]);
    expect(range(dom.allocIova(16, 1000, true))).toEqual([960, 975]);
    expect(range(dom.allocIova(1, 1000, true))).toEqual([959, 959]);
    // Without alignment the same request ends right below the last range.
    expect(range(dom.allocIova(5, 1000, false))).toEqual([954, 958]);
  });

  test("ranges never go below startPfn; when the space is full allocation fails", () => {
    const dom = new IovaDomain(SZ_4K, 8);
    expect(range(dom.allocIova(8, 15, true))).toEqual([8, 15]);
    expect(dom.allocIova(1, 15, false)).toBeNull();
    expect(dom.allocIova(1, 7, false)).toBeNull();
    const dom2 = new IovaDomain(SZ_4K, 10);
    // An aligned range that would start below startPfn does not fit.
    expect(dom2.allocIova(8, 20, true)).toBeNull();
    expect(range(dom2.allocIova(7, 20, false))).toEqual([14, 20]);
  });

  test("a size that is not a positive integer or a negative limit returns null and changes nothing", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    for (const size of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(dom.allocIova(size, 1000, false), String(size)).toBeNull();
    }
    for (const limit of [-1, 0.5, Number.NaN]) {
      expect(dom.allocIova(1, limit, false), String(limit)).toBeNull();
    }
    expect(dom.iovas()).toEqual([]);
    expect(dom.max32AllocSize).toBe(DMA32);
  });

  test("a limit beyond the 64-bit space is clamped to maxPfn", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    expect(range(dom.allocIova(1, 2 ** 53, false))).toEqual([2 ** 52 - 1, 2 ** 52 - 1]);
  });

  test("48-bit IOVAs: pfns above 2^32 are exact", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    expect(range(dom.allocIova(1, LIMIT48, true))).toEqual([LIMIT48, LIMIT48]);
    expect(range(dom.allocIova(512, LIMIT48, true))).toEqual([LIMIT48 - 1023, LIMIT48 - 512]);
    // The hole above the 512-pfn range is skipped: see "a hole above the cached node".
    expect(range(dom.allocIova(1, LIMIT48, true))).toEqual([LIMIT48 - 1024, LIMIT48 - 1024]);
    expect(dom.iovaDmaAddr(dom.findIova(LIMIT48) as Iova)).toBe(2 ** 48 - SZ_4K);
  });

  test("32-bit limits allocate below 4 GiB from their own cached node", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    expect(range(dom.allocIova(1, LIMIT48, true))).toEqual([LIMIT48, LIMIT48]);
    expect(range(dom.allocIova(1, DMA32 - 1, true))).toEqual([DMA32 - 1, DMA32 - 1]);
    expect(range(dom.allocIova(1, LIMIT48, true))).toEqual([LIMIT48 - 1, LIMIT48 - 1]);
    expect(range(dom.allocIova(1, DMA32 - 1, true))).toEqual([DMA32 - 2, DMA32 - 2]);
  });

  test("a hole above the cached node is skipped while there is room below it", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    alloc(dom, 1, LIMIT48); // LIMIT48
    const b = alloc(dom, 1, LIMIT48); // LIMIT48 - 1
    alloc(dom, 1, LIMIT48); // LIMIT48 - 2
    dom.freeIova(b.pfnLo);
    // A 4-aligned range does not fit the one-pfn hole: it goes lower and becomes the cached node.
    expect(range(dom.allocIova(4, LIMIT48, true))).toEqual([LIMIT48 - 7, LIMIT48 - 4]);
    // The next one-pfn range comes from below the cached node, not from the higher hole.
    expect(range(dom.allocIova(1, LIMIT48, true))).toEqual([LIMIT48 - 8, LIMIT48 - 8]);
  });

  test("when nothing fits below the cached node, the retry searches between it and the limit", () => {
    const top = 99;
    const dom = new IovaDomain(SZ_4K, 90);
    alloc(dom, 1, top); // 99
    const b = alloc(dom, 1, top); // 98
    alloc(dom, 1, top); // 97
    dom.freeIova(b.pfnLo);
    expect(range(dom.allocIova(4, top, true))).toEqual([92, 95]);
    expect(range(dom.allocIova(1, top, true))).toEqual([91, 91]);
    expect(range(dom.allocIova(1, top, true))).toEqual([90, 90]);
    // Below the cached node (90) there is nothing left; the retry finds 98, then 96.
    expect(range(dom.allocIova(1, top, true))).toEqual([98, 98]);
    expect(range(dom.allocIova(1, top, true))).toEqual([96, 96]);
    expect(dom.allocIova(1, top, true)).toBeNull();
  });

  test("a failed 32-bit allocation makes that size and larger fail at once; smaller sizes still search", () => {
    const dom = new IovaDomain(1 << 16, 1); // 65536 pfns below 4 GiB
    const limit = dom.dma32PfnLimit - 1;
    expect(dom.reserveIova(1, limit - 8)).not.toBeNull(); // 8 pfns left: [limit - 7, limit]
    expect(dom.allocIova(16, limit, true)).toBeNull();
    expect(dom.max32AllocSize).toBe(16);
    expect(range(dom.allocIova(8, limit, true))).toEqual([limit - 7, limit]);
    // The space is full now, but 32 >= 16 fails without a walk and leaves the mark as it was.
    expect(dom.allocIova(32, limit, true)).toBeNull();
    expect(dom.max32AllocSize).toBe(16);
    expect(dom.allocIova(1, limit, true)).toBeNull();
    expect(dom.max32AllocSize).toBe(1);
  });

  test("the 32-bit fast failure also stops a fit that a wider 32-bit search would find", () => {
    // The kernel records the failing size whatever the limit: a failure under a low limit then
    // stops a request whose limit is 4 GiB.
    const dom = new IovaDomain(1 << 16, 1);
    const low = 1000;
    expect(dom.reserveIova(1, low)).not.toBeNull();
    expect(dom.allocIova(4, low, true)).toBeNull();
    expect(dom.max32AllocSize).toBe(4);
    expect(dom.allocIova(4, dom.dma32PfnLimit - 1, true)).toBeNull();
    expect(range(dom.allocIova(2, dom.dma32PfnLimit - 1, true))).not.toBeNull();
  });

  test("freeing a range below 4 GiB clears the 32-bit failure size", () => {
    const dom = new IovaDomain(1 << 16, 1);
    const limit = dom.dma32PfnLimit - 1;
    dom.reserveIova(1, limit - 8);
    const a = alloc(dom, 8, limit);
    expect(dom.allocIova(8, limit, true)).toBeNull();
    expect(dom.max32AllocSize).toBe(8);
    dom.__freeIova(a);
    expect(dom.max32AllocSize).toBe(dom.dma32PfnLimit);
    expect(range(dom.allocIova(8, limit, true))).toEqual([limit - 7, limit]);
  });

  test("a 64-bit failure arms the 32-bit fast failure too", () => {
    const dom = new IovaDomain(1 << 16, 1);
    expect(dom.allocIova(2 ** 40, 2 ** 40, true)).toBeNull();
    expect(dom.max32AllocSize).toBe(2 ** 40);
    expect(dom.allocIova(2 ** 48, dom.maxPfn, true)).toBeNull();
    expect(dom.max32AllocSize).toBe(2 ** 48);
  });
});

describe("IovaDomain: findIova and freeIova", () => {
  test("findIova returns the range holding a pfn, and null for a free or bad pfn", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const a = alloc(dom, 4, 1003);
    for (let p = 1000; p <= 1003; p++) expect(dom.findIova(p)).toBe(a);
    expect(dom.findIova(999)).toBeNull();
    expect(dom.findIova(1004)).toBeNull();
    expect(dom.findIova(0)).toBeNull();
    for (const bad of [-1, 1000.5, Number.NaN, 2 ** 53 - 1]) expect(dom.findIova(bad)).toBeNull();
  });

  test("freeIova of any pfn in a range frees the whole range; a free pfn does nothing", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const a = alloc(dom, 4, 1003);
    const b = alloc(dom, 4, 1003);
    dom.freeIova(500);
    dom.freeIova(-3);
    expect(dom.liveCount).toBe(2);
    dom.freeIova(a.pfnLo + 2);
    expect(dom.findIova(a.pfnLo)).toBeNull();
    expect(dom.findIova(b.pfnLo)).toBe(b);
    expect(dom.liveCount).toBe(1);
  });

  test("freeing makes room: the freed range is handed out again", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const a = alloc(dom, 2, 1001);
    const b = alloc(dom, 2, 1001);
    alloc(dom, 2, 1001);
    dom.freeIova(b.pfnLo);
    expect(range(dom.allocIova(2, 1001, true))).toEqual([b.pfnLo, b.pfnHi]);
    dom.freeIova(a.pfnLo);
    expect(range(dom.allocIova(2, 1001, true))).toEqual([a.pfnLo, a.pfnHi]);
  });

  test("__freeIova of a range that is not in the domain does nothing", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const other = new IovaDomain(SZ_4K, 1);
    const a = alloc(dom, 1, 100);
    const x = alloc(other, 1, 100);
    dom.__freeIova({ pfnLo: 100, pfnHi: 100 });
    dom.__freeIova(x);
    expect(dom.findIova(100)).toBe(a);
    dom.__freeIova(a);
    dom.__freeIova(a);
    expect(dom.iovas()).toEqual([]);
    expect(dom.liveCount).toBe(0);
  });
});

describe("IovaDomain: reserveIova", () => {
  test("a reserved range is never handed out", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const r = dom.reserveIova(990, 1000);
    expect(range(r)).toEqual([990, 1000]);
    expect(dom.reservedCount).toBe(1);
    expect(dom.liveCount).toBe(0);
    expect(range(dom.allocIova(4, 1000, true))).toEqual([984, 987]);
    expect(range(dom.allocIova(1, 1000, true))).toEqual([983, 983]);
  });

  test("a reservation overlapping ranges grows the first one down and adds the rest above", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    dom.reserveIova(10, 20);
    dom.reserveIova(30, 40);
    // Covers [5, 35]: [10, 20] grows to [5, 20], then [30, 40] grows down to [21, 40].
    const r = dom.reserveIova(5, 35);
    expect(range(r)).toEqual([21, 40]);
    expect(ranges(dom)).toEqual([
      [5, 20],
      [21, 40],
    ]);
    expect(dom.reservedCount).toBe(2);
    // Past the last overlapping range the remainder is a new range.
    expect(range(dom.reserveIova(38, 50))).toEqual([41, 50]);
    expect(ranges(dom)).toEqual([
      [5, 20],
      [21, 40],
      [41, 50],
    ]);
    expect(dom.reservedCount).toBe(3);
  });

  test("a reservation inside an existing range returns that range and inserts nothing", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const r = dom.reserveIova(10, 20);
    expect(dom.reserveIova(12, 15)).toBe(r);
    expect(dom.reserveIova(10, 20)).toBe(r);
    expect(dom.reservedCount).toBe(1);
  });

  test("a reservation overlapping an allocated range grows that range, as the kernel does", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const a = alloc(dom, 4, 103); // [100, 103]
    expect(dom.reserveIova(98, 101)).toBe(a);
    expect(range(a)).toEqual([98, 103]);
    expect(dom.reservedCount).toBe(0);
    expect(dom.liveCount).toBe(1);
  });

  test("a reservation with pfnLo > pfnHi or a pfn beyond maxPfn returns null", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    expect(dom.reserveIova(20, 10)).toBeNull();
    expect(dom.reserveIova(-1, 10)).toBeNull();
    expect(dom.reserveIova(1, 2 ** 52)).toBeNull();
    expect(dom.reserveIova(1.5, 2)).toBeNull();
    expect(range(dom.reserveIova(2 ** 52 - 1, 2 ** 52 - 1))).toEqual([2 ** 52 - 1, 2 ** 52 - 1]);
    expect(dom.reservedCount).toBe(1);
  });

  test("freeIova of a reserved range frees it", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    dom.reserveIova(10, 20);
    dom.freeIova(15);
    expect(dom.reservedCount).toBe(0);
    expect(dom.iovas()).toEqual([]);
  });
});

describe("IovaDomain: the rcaches", () => {
  test("allocIovaFast rounds sizes below 32 up to a power of two and size-aligns them", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    expect(dom.allocIovaFast(3, 1000, false)).toBe(996);
    expect(iovaSize(dom.findIova(996) as Iova)).toBe(4);
    expect(dom.allocIovaFast(17, 1000, false)).toBe(960);
    expect(iovaSize(dom.findIova(960) as Iova)).toBe(32);
    // 33 and up are not rounded (they are never cached), but still size-aligned.
    expect(dom.allocIovaFast(33, 1000, false)).toBe(896);
    expect(iovaSize(dom.findIova(896) as Iova)).toBe(33);
  });

  test("the rcache returns the most recently freed pfn of the same size first", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const pfns = [1, 2, 3, 4].map(() => dom.allocIovaFast(1, LIMIT48, false));
    for (const p of pfns) dom.freeIovaFast(p, 1);
    expect(dom.cachedCount).toBe(4);
    expect(dom.liveCount).toBe(0);
    expect(dom.iovas().length).toBe(4);
    const again = [1, 2, 3, 4].map(() => dom.allocIovaFast(1, LIMIT48, false));
    expect(again).toEqual([...pfns].reverse());
    expect(dom.cachedCount).toBe(0);
    expect(dom.liveCount).toBe(4);
  });

  test("rcaches are per size order: sizes 3 and 4 share one, size 2 does not", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const p = dom.allocIovaFast(3, LIMIT48, false);
    dom.freeIovaFast(p, 3);
    const q = dom.allocIovaFast(2, LIMIT48, false);
    expect(q).not.toBe(p);
    expect(dom.allocIovaFast(4, LIMIT48, false)).toBe(p);
  });

  test("the rcache only hands out a pfn whose range ends at or below the limit", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const low = dom.allocIovaFast(2, DMA32 - 1, false);
    const high = dom.allocIovaFast(2, LIMIT48, false);
    dom.freeIovaFast(low, 2);
    dom.freeIovaFast(high, 2);
    // The newest (high) does not fit a 32-bit limit: the older one below 4 GiB is taken.
    expect(dom.allocIovaFast(2, DMA32 - 1, false)).toBe(low);
    // The limit counts the whole range: low + 1 must be <= limit.
    dom.freeIovaFast(low, 2);
    expect(dom.allocIovaFast(2, low, false)).not.toBe(low);
    expect(dom.allocIovaFast(2, low + 1, false)).toBe(low);
    expect(dom.allocIovaFast(2, LIMIT48, false)).toBe(high);
  });

  test("only the loaded magazine is searched: a fitting pfn in the previous one is not found", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const first = dom.allocIovaFast(1, DMA32 - 1, false);
    const highs: number[] = [];
    for (let i = 0; i < IOVA_MAG_SIZE; i++) highs.push(dom.allocIovaFast(1, LIMIT48, false));
    // first + 126 highs fill the loaded magazine; the 127th high swaps it to prev.
    dom.freeIovaFast(first, 1);
    for (const h of highs) dom.freeIovaFast(h, 1);
    const got = dom.allocIovaFast(1, DMA32 - 1, false);
    expect(got).not.toBe(first);
    expect(dom.findIova(got)?.pfnLo).toBe(got);
    expect(dom.cachedCount).toBe(IOVA_MAG_SIZE + 1);
  });

  test("magazines hold 127 pfns: a full loaded one swaps with prev, then goes to the depot", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const n = 2 * IOVA_MAG_SIZE;
    const pfns: number[] = [];
    for (let i = 0; i < n; i++) pfns.push(dom.allocIovaFast(1, LIMIT48, false));
    for (const p of pfns) dom.freeIovaFast(p, 1);
    expect(dom.depotSize(0)).toBe(0);
    expect(dom.cachedCount).toBe(n);
    dom.freeIovaFast(dom.allocIova(1, LIMIT48, true)?.pfnLo as number, 1);
    expect(dom.depotSize(0)).toBe(1);
    expect(dom.cachedCount).toBe(n + 1);
  });

  test("a depot magazine is loaded once both of a CPU's magazines are empty", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const pfns: number[] = [];
    for (let i = 0; i < 3 * IOVA_MAG_SIZE; i++) pfns.push(dom.allocIovaFast(1, LIMIT48, false));
    for (const p of pfns) dom.freeIovaFast(p, 1);
    // loaded = pfns[254..380], prev = pfns[0..126], depot = [pfns[127..253]].
    const got: number[] = [];
    for (let i = 0; i < 3 * IOVA_MAG_SIZE; i++) got.push(dom.allocIovaFast(1, LIMIT48, false));
    const m = IOVA_MAG_SIZE;
    expect(got.slice(0, m)).toEqual(pfns.slice(2 * m).reverse());
    expect(got.slice(m, 2 * m)).toEqual(pfns.slice(0, m).reverse());
    expect(got.slice(2 * m)).toEqual(pfns.slice(m, 2 * m).reverse());
    expect(dom.cachedCount).toBe(0);
    expect(dom.depotSize(0)).toBe(0);
  });

  test("rcaches are per CPU: a pfn freed on one CPU is not handed out on another", () => {
    const dom = new IovaDomain(SZ_4K, 1, { cpus: 2 });
    const p = dom.allocIovaFast(1, LIMIT48, false, 0);
    dom.freeIovaFast(p, 1, 0);
    const q = dom.allocIovaFast(1, LIMIT48, false, 1);
    expect(q).not.toBe(p);
    expect(dom.allocIovaFast(1, LIMIT48, false, 0)).toBe(p);
  });

  test("when the tree is full, allocIovaFast with flushRcache returns every cached pfn and retries", () => {
    const dom = new IovaDomain(SZ_4K, 96, { cpus: 2 });
    const limit = 111; // 16 pfns
    const a = dom.allocIovaFast(8, limit, false, 0);
    const b = dom.allocIovaFast(4, limit, false, 1);
    const c = dom.allocIovaFast(4, limit, false, 0);
    expect([a, b, c]).toEqual([104, 100, 96]);
    dom.freeIovaFast(a, 8, 0);
    dom.freeIovaFast(b, 4, 1);
    expect(dom.cachedCount).toBe(2);
    // Nothing of size 16 is cached and the tree is full: without the flush it fails.
    expect(dom.allocIovaFast(16, limit, false)).toBe(0);
    expect(dom.cachedCount).toBe(2);
    dom.freeIova(c);
    expect(dom.allocIovaFast(16, limit, true, 0)).toBe(96);
    expect(dom.cachedCount).toBe(0);
    expect(ranges(dom)).toEqual([[96, 111]]);
    expect(dom.liveCount).toBe(1);
  });

  test("the flush on failure returns depot magazines too", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const limit = 3 * IOVA_MAG_SIZE;
    const pfns: number[] = [];
    for (let i = 0; i < limit; i++) pfns.push(dom.allocIovaFast(1, limit, false));
    expect(dom.allocIovaFast(1, limit, false)).toBe(0);
    for (const p of pfns) dom.freeIovaFast(p, 1);
    expect(dom.depotSize(0)).toBe(1);
    expect(dom.allocIovaFast(2, limit, true)).toBe(limit - 1);
    expect(dom.cachedCount).toBe(0);
    expect(dom.depotSize(0)).toBe(0);
    expect(dom.liveCount).toBe(1);
  });

  test("freeIovaFast of a size above 32 frees straight into the tree", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const p = dom.allocIovaFast(33, LIMIT48, false);
    dom.freeIovaFast(p, 33);
    expect(dom.cachedCount).toBe(0);
    expect(dom.iovas()).toEqual([]);
  });

  test("freeCpuCachedIovas returns one CPU's pfns to the tree", () => {
    const dom = new IovaDomain(SZ_4K, 1, { cpus: 2 });
    const p = dom.allocIovaFast(1, LIMIT48, false, 0);
    const q = dom.allocIovaFast(2, LIMIT48, false, 1);
    dom.freeIovaFast(p, 1, 0);
    dom.freeIovaFast(q, 2, 1);
    dom.freeCpuCachedIovas(1);
    expect(dom.cachedCount).toBe(1);
    expect(dom.findIova(q)).toBeNull();
    expect(dom.findIova(p)?.pfnLo).toBe(p);
    dom.freeCpuCachedIovas(7);
    expect(dom.cachedCount).toBe(1);
  });

  test("runDepotWork trims each depot to one magazine per CPU, newest first", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    const n = 5 * IOVA_MAG_SIZE;
    const pfns: number[] = [];
    for (let i = 0; i < n; i++) pfns.push(dom.allocIovaFast(1, LIMIT48, false));
    for (const p of pfns) dom.freeIovaFast(p, 1);
    expect(dom.depotSize(0)).toBe(3);
    expect(dom.runDepotWork()).toBe(2);
    expect(dom.depotSize(0)).toBe(1);
    expect(dom.cachedCount).toBe(n - 2 * IOVA_MAG_SIZE);
    // The magazine left in the depot is the first one deposited.
    expect(dom.findIova(pfns[IOVA_MAG_SIZE])?.pfnLo).toBe(pfns[IOVA_MAG_SIZE]);
    expect(dom.findIova(pfns[2 * IOVA_MAG_SIZE])).toBeNull();
    expect(dom.runDepotWork()).toBe(0);
  });

  test("allocIovaFast and freeIovaFast with bad input fail or free through the tree", () => {
    const dom = new IovaDomain(SZ_4K, 1);
    expect(dom.allocIovaFast(0, 100, true)).toBe(0);
    expect(dom.allocIovaFast(1, -1, true)).toBe(0);
    expect(dom.allocIovaFast(1, 100, true, 1)).toBe(0);
    const p = dom.allocIovaFast(1, 100, true);
    dom.freeIovaFast(p, 1, 3);
    expect(dom.cachedCount).toBe(0);
    expect(dom.iovas()).toEqual([]);
  });
});

describe("IovaDomain: putIovaDomain", () => {
  test("putIovaDomain frees every range and cached pfn, and the domain starts over", () => {
    const dom = new IovaDomain(SZ_4K, 1, { cpus: 2 });
    dom.reserveIova(5000, 6000);
    for (let i = 0; i < 300; i++) dom.freeIovaFast(dom.allocIovaFast(1, LIMIT48, false, 1), 1, 1);
    for (let i = 0; i < 300; i++) dom.allocIovaFast(1, DMA32 - 1, false, 0);
    const limit = DMA32 - 1;
    dom.reserveIova(1, limit - 8);
    expect(dom.allocIova(16, limit, true)).toBeNull();
    dom.putIovaDomain();
    expect(dom.iovas()).toEqual([]);
    expect(dom.liveCount).toBe(0);
    expect(dom.cachedCount).toBe(0);
    expect(dom.reservedCount).toBe(0);
    expect(dom.max32AllocSize).toBe(DMA32);
    expect(dom.depotSize(0)).toBe(0);
    expect(dom.allocIovaFast(1, LIMIT48, false, 1)).toBe(LIMIT48);
    expect(range(dom.allocIova(1, DMA32 - 1, true))).toEqual([DMA32 - 1, DMA32 - 1]);
  });
});

// ---------------------------------------------------------------------------------------------
// The reference: occupancy as a bitmap scanned top-down, ranges as a plain sorted array, the
// kernel's cached-node and max32 rules restated over them, and magazines as JS arrays.

interface RefRange {
  lo: number;
  hi: number;
  reserved: boolean;
}

const MAG = IOVA_MAG_SIZE;

class ReferenceIova {
  readonly used: Uint8Array;
  ranges: RefRange[] = [];
  readonly anchor: RefRange = { lo: 2 ** 53 - 1, hi: 2 ** 53 - 1, reserved: false };
  cached: RefRange = this.anchor;
  cached32: RefRange = this.anchor;
  max32: number;
  cachedPfns = 0;
  loaded: number[][][] = [];
  prev: number[][][] = [];
  depot: number[][][] = [];

  constructor(
    readonly dma32: number,
    readonly start: number,
    readonly cpus: number,
    space: number,
  ) {
    this.used = new Uint8Array(space);
    this.max32 = dma32;
    for (let s = 0; s < 6; s++) {
      this.loaded.push(Array.from({ length: cpus }, () => []));
      this.prev.push(Array.from({ length: cpus }, () => []));
      this.depot.push([]);
    }
  }

  get allocated(): number {
    return this.ranges.filter((r) => !r.reserved).length;
  }

  get reservedCount(): number {
    return this.ranges.filter((r) => r.reserved).length;
  }

  /** The highest p in [a, b - size + 1], a multiple of align, with p .. p + size - 1 unused. */
  highestFit(a: number, b: number, size: number, align: number): number {
    let run = 0; // unused pfns from q upwards, up to b
    for (let q = b; q >= a; q--) {
      run = this.used[q] ? 0 : run + 1;
      if (run >= size && q % align === 0) return q;
    }
    return -1;
  }

  find(pfn: number): RefRange | null {
    return this.ranges.find((r) => r.lo <= pfn && pfn <= r.hi) ?? null;
  }

  insert(r: RefRange): void {
    this.ranges.push(r);
    this.ranges.sort((x, y) => x.lo - y.lo);
    this.used.fill(1, r.lo, r.hi + 1);
  }

  remove(r: RefRange): void {
    const next = this.ranges.find((x) => x.lo > r.lo) ?? this.anchor;
    if (r === this.cached32 || (r.hi < this.dma32 && r.lo >= this.cached32.lo)) {
      this.cached32 = next;
    }
    if (r.lo < this.dma32) this.max32 = this.dma32;
    if (r.lo >= this.cached.lo) this.cached = next;
    this.ranges = this.ranges.filter((x) => x !== r);
    this.used.fill(0, r.lo, r.hi + 1);
  }

  alloc(size: number, limit: number, aligned: boolean): [number, number] | null {
    let align = 1;
    while (aligned && align < size) align *= 2;
    const limitEx = limit + 1;
    if (limitEx <= this.dma32 && size >= this.max32) return null;
    const c = limitEx <= this.dma32 ? this.cached32 : this.cached;
    // Below the cached node first, then (once) between it and the limit.
    let p = this.highestFit(this.start, Math.min(limit, c.lo - 1), size, align);
    if (p < 0 && c.hi < limitEx) p = this.highestFit(c.hi + 1, limit, size, align);
    if (p < 0) {
      this.max32 = size;
      return null;
    }
    const r = { lo: p, hi: p + size - 1, reserved: false };
    this.insert(r);
    if (r.hi < this.dma32) this.cached32 = r;
    else this.cached = r;
    return [r.lo, r.hi];
  }

  free(pfn: number): void {
    const r = this.find(pfn);
    if (r) this.remove(r);
  }

  reserve(lo: number, hi: number): [number, number] {
    let overlap = false;
    for (const r of this.ranges) {
      if (lo <= r.hi && hi >= r.lo) {
        if (lo < r.lo) r.lo = lo;
        if (hi > r.hi) lo = r.hi + 1;
        if (lo >= r.lo && hi <= r.hi) {
          this.used.fill(1, r.lo, r.hi + 1);
          return [r.lo, r.hi];
        }
        overlap = true;
      } else if (overlap) break;
    }
    this.insert({ lo, hi, reserved: true });
    for (const r of this.ranges) this.used.fill(1, r.lo, r.hi + 1);
    return [lo, hi];
  }

  static order(size: number): number {
    let k = 0;
    while (2 ** k < size) k++;
    return k;
  }

  freePfns(mag: number[]): void {
    for (const pfn of mag) this.free(pfn);
    this.cachedPfns -= mag.length;
    mag.length = 0;
  }

  allocFast(size: number, limit: number, flush: boolean, cpu: number): number {
    let sz = size;
    if (sz < 32) sz = 2 ** ReferenceIova.order(sz);
    const k = ReferenceIova.order(sz);
    if (k < 6) {
      if (this.loaded[k][cpu].length === 0) {
        if (this.prev[k][cpu].length > 0) {
          [this.loaded[k][cpu], this.prev[k][cpu]] = [this.prev[k][cpu], this.loaded[k][cpu]];
        } else if (this.depot[k].length > 0) {
          this.loaded[k][cpu] = this.depot[k].pop() as number[];
        }
      }
      const mag = this.loaded[k][cpu];
      const max = limit + 1 >= sz ? limit + 1 - sz : Number.POSITIVE_INFINITY;
      for (let i = mag.length - 1; i >= 0; i--) {
        if (mag[i] <= max) {
          const pfn = mag[i];
          const top = mag.pop() as number;
          if (i < mag.length) mag[i] = top;
          this.cachedPfns--;
          return pfn;
        }
      }
    }
    for (;;) {
      const r = this.alloc(sz, limit, true);
      if (r) return r[0];
      if (!flush) return 0;
      flush = false;
      this.flushCpus();
      this.flushDepots(0);
    }
  }

  flushCpus(only = -1): void {
    for (let c = 0; c < this.cpus; c++) {
      if (only >= 0 && c !== only) continue;
      for (let k = 0; k < 6; k++) {
        this.freePfns(this.loaded[k][c]);
        this.freePfns(this.prev[k][c]);
      }
    }
  }

  flushDepots(keep: number): number {
    let n = 0;
    for (let k = 0; k < 6; k++) {
      while (this.depot[k].length > keep) {
        this.freePfns(this.depot[k].pop() as number[]);
        n++;
      }
    }
    return n;
  }

  freeFast(pfn: number, size: number, cpu: number): void {
    if (size > 32) {
      this.free(pfn);
      return;
    }
    const k = ReferenceIova.order(size);
    if (this.loaded[k][cpu].length === MAG) {
      if (this.prev[k][cpu].length < MAG) {
        [this.loaded[k][cpu], this.prev[k][cpu]] = [this.prev[k][cpu], this.loaded[k][cpu]];
      } else {
        this.depot[k].push(this.loaded[k][cpu]);
        this.loaded[k][cpu] = [];
      }
    }
    this.loaded[k][cpu].push(pfn);
    this.cachedPfns++;
  }
}

/** A domain shape for the random runs: a window of `w` pfns on each side of the 4 GiB line. */
interface Shape {
  granule: number;
  w: number;
  cpus: number;
}

const SHAPES: Shape[] = [
  { granule: 1 << 16, w: 600, cpus: 1 },
  { granule: 1 << 16, w: 300, cpus: 2 },
  { granule: SZ_4K, w: 800, cpus: 3 },
];

/** One long random run of every operation, checked step by step against the reference. */
function randomRun(seed: number, shape: Shape, steps: number): void {
  const rnd = xorshift32(seed);
  const { granule, w, cpus } = shape;
  const dma32 = 2 ** 32 / granule;
  const start = dma32 - w;
  const top = dma32 + w - 1;
  const limits = [dma32 - 1, dma32 - 1 - Math.floor(w / 3), top, dma32 + Math.floor(w / 2), top];
  const dom = new IovaDomain(granule, start, { cpus });
  const ref = new ReferenceIova(dma32, start, cpus, top + 64);
  // What the caller owns: tree ranges [pfnLo, pfnHi] and fast ranges [pfn, size asked].
  const treeLive: [number, number][] = [];
  const fastLive: [number, number, number][] = []; // pfn, size asked, rounded size
  const take = <T>(list: T[]): T => {
    const i = rnd() % list.length;
    const x = list[i];
    list[i] = list[list.length - 1];
    list.pop();
    return x;
  };
  const pickSize = (): number => {
    const r = rnd() % 16;
    if (r < 9) return 1;
    if (r < 13) return 1 + (rnd() % 4);
    if (r < 15) return 1 + (rnd() % 40);
    return 1 + (rnd() % Math.floor(w / 3));
  };
  const owned = (lo: number, hi: number): boolean =>
    ref.ranges.some((r) => !r.reserved && r.lo <= hi && lo <= r.hi);
  /** Why a new range [lo, lo + size - 1] breaks a rule, or "" when it fits. */
  const misfit = (lo: number, size: number, limit: number, align: number): string => {
    const hi = lo + size - 1;
    if (lo < start || hi > limit || lo % align !== 0) return `[${lo}, ${hi}] outside or unaligned`;
    for (const [a, b] of treeLive) if (hi >= a && lo <= b) return `overlaps [${a}, ${b}]`;
    for (const [p, , s] of fastLive) if (hi >= p && lo < p + s) return `overlaps fast ${p}`;
    return "";
  };

  for (let t = 0; t < steps; t++) {
    // Phases: mostly allocating, mostly freeing, then mixed, so that magazines fill and drain.
    const phase = Math.floor(t / 300) % 3;
    const r = rnd() % 100;
    const allocBias = phase === 0 ? 30 : phase === 1 ? -25 : 0;
    if (r < 25 + allocBias / 2) {
      const size = pickSize();
      const limit = limits[rnd() % limits.length];
      const aligned = rnd() % 4 !== 0;
      const armed = limit + 1 <= dma32 && size >= dom.max32AllocSize;
      const got = range(dom.allocIova(size, limit, aligned));
      const want = ref.alloc(size, limit, aligned);
      same(got, want, `step ${t}: allocIova(${size}, ${limit}, ${aligned})`);
      let align = 1;
      while (aligned && align < size) align *= 2;
      if (got) {
        same(misfit(got[0], size, limit, align), "", `step ${t}`);
        treeLive.push(got);
      } else if (!armed) {
        // A failure that was not the 32-bit fast path means no fit anywhere under the limit.
        same(ref.highestFit(start, limit, size, align), -1, `step ${t}: missed a fit`);
      }
    } else if (r < 40) {
      if (treeLive.length > 0) {
        const [lo, hi] = take(treeLive);
        const pfn = lo + (rnd() % (hi - lo + 1));
        if (rnd() % 2 === 0) dom.freeIova(pfn);
        else dom.__freeIova(dom.findIova(pfn) as Iova);
        ref.free(pfn);
      }
    } else if (r < 44) {
      const lo = start - 20 + (rnd() % (2 * w + 20));
      const hi = Math.min(top, lo + (rnd() % 24));
      // Reservations stay clear of ranges the run owns (or has cached).
      if (!owned(lo, hi)) same(range(dom.reserveIova(lo, hi)), ref.reserve(lo, hi), `step ${t}`);
    } else if (r < 46) {
      const reserved = ref.ranges.filter((x) => x.reserved);
      if (reserved.length > 0) {
        const x = reserved[rnd() % reserved.length];
        const pfn = x.lo + (rnd() % (x.hi - x.lo + 1));
        dom.freeIova(pfn);
        ref.free(pfn);
      }
    } else if (r < 72 + allocBias) {
      const size = pickSize();
      const limit = limits[rnd() % limits.length];
      const flush = rnd() % 2 === 0;
      const cpu = rnd() % cpus;
      const got = dom.allocIovaFast(size, limit, flush, cpu);
      same(got, ref.allocFast(size, limit, flush, cpu), `step ${t}: allocIovaFast(${size})`);
      if (got !== 0) {
        const rounded = size < 32 ? 2 ** ReferenceIova.order(size) : size;
        let align = 1;
        while (align < rounded) align *= 2;
        same(misfit(got, rounded, limit, align), "", `step ${t}`);
        fastLive.push([got, size, rounded]);
      }
    } else if (r < 96) {
      if (fastLive.length > 0) {
        const [pfn, size] = take(fastLive);
        const cpu = rnd() % cpus;
        dom.freeIovaFast(pfn, size, cpu);
        ref.freeFast(pfn, size, cpu);
      }
    } else if (r < 97) {
      const cpu = rnd() % cpus;
      dom.freeCpuCachedIovas(cpu);
      ref.flushCpus(cpu);
    } else if (r < 98) {
      dom.freeGlobalCachedIovas();
      ref.flushDepots(0);
    } else if (r < 99) {
      same(dom.runDepotWork(), ref.flushDepots(cpus), `step ${t}: runDepotWork`);
    } else if (rnd() % 4 === 0) {
      // A burst on one CPU: enough frees of one size to fill both magazines and reach the depot.
      const cpu = rnd() % cpus;
      const limit = limits[rnd() % limits.length];
      const n = 150 + (rnd() % 400);
      const burst: number[] = [];
      for (let i = 0; i < n; i++) {
        const got = dom.allocIovaFast(1, limit, true, cpu);
        same(got, ref.allocFast(1, limit, true, cpu), `step ${t}: burst alloc ${i}`);
        if (got === 0) break;
        same(misfit(got, 1, limit, 1), "", `step ${t}: burst alloc ${i}`);
        burst.push(got);
      }
      for (const pfn of burst) {
        dom.freeIovaFast(pfn, 1, cpu);
        ref.freeFast(pfn, 1, cpu);
      }
    } else {
      const pfn = start - 30 + (rnd() % (2 * w + 60));
      const f = ref.find(pfn);
      same(range(dom.findIova(pfn)), f ? [f.lo, f.hi] : null, `step ${t}: findIova(${pfn})`);
    }
    same(dom.cachedCount, ref.cachedPfns, `step ${t}: cachedCount`);
    same(dom.liveCount, treeLive.length + fastLive.length, `step ${t}: liveCount`);
    same(dom.max32AllocSize, ref.max32, `step ${t}: max32AllocSize`);
    if (t % 256 === 0) expect(ranges(dom)).toEqual(ref.ranges.map((x) => [x.lo, x.hi]));
  }
  expect(ranges(dom)).toEqual(ref.ranges.map((x) => [x.lo, x.hi]));
  expect(dom.reservedCount).toBe(ref.reservedCount);
  expect(dom.liveCount + dom.cachedCount).toBe(ref.allocated);
  // Returning everything leaves only the reservations.
  for (const [lo] of treeLive) dom.freeIova(lo);
  for (const [pfn, size] of fastLive) dom.freeIovaFast(pfn, size, 0);
  for (let c = 0; c < cpus; c++) dom.freeCpuCachedIovas(c);
  dom.freeGlobalCachedIovas();
  expect(dom.liveCount).toBe(0);
  expect(dom.cachedCount).toBe(0);
  expect(dom.iovas().length).toBe(dom.reservedCount);
}

describe("IovaDomain: random runs against the reference", () => {
  test.prop([fc.integer({ min: 1, max: 0xffffffff }), fc.constantFrom(...SHAPES.keys())], {
    seed: 42,
    numRuns: 24,
  })(
    "3,000 random operations agree with a bitmap reference that applies the cached-node rules",
    (seed, s) => {
      randomRun(seed, SHAPES[s], 3000);
    },
  );

  test.prop([fc.integer({ min: 1, max: 0xffffffff })], { seed: 7, numRuns: 12 })(
    "allocIova without the rcache: every range fits, and it fails only when nothing fits or the 32-bit fast failure is armed",
    (seed) => {
      // Only the invariants here, against a bare bitmap: no knowledge of the cached nodes.
      const rnd = xorshift32(seed);
      const granule = 1 << 16;
      const dma32 = 2 ** 16;
      const start = dma32 - 700;
      const top = dma32 + 700;
      const dom = new IovaDomain(granule, start);
      const used = new Uint8Array(top + 1);
      const live: Iova[] = [];
      const fits = (limit: number, size: number, align: number): boolean => {
        let run = 0;
        for (let q = limit; q >= start; q--) {
          run = used[q] ? 0 : run + 1;
          if (run >= size && q % align === 0) return true;
        }
        return false;
      };
      for (let t = 0; t < 4000; t++) {
        if (rnd() % 100 < 55 - (Math.floor(t / 500) % 2) * 20) {
          const size = rnd() % 4 === 0 ? 1 + (rnd() % 64) : 1 + (rnd() % 3);
          const limit = [dma32 - 1, top, dma32 - 300, dma32 + 200][rnd() % 4];
          const aligned = rnd() % 2 === 0;
          const align = aligned ? 2 ** Math.ceil(Math.log2(size)) : 1;
          const armed = limit + 1 <= dma32 && size >= dom.max32AllocSize;
          const iova = dom.allocIova(size, limit, aligned);
          if (iova === null) {
            if (!armed) same(fits(limit, size, align), false, `step ${t}: missed a fit`);
            continue;
          }
          same(iovaSize(iova), size, `step ${t}: size`);
          const inside = iova.pfnLo >= start && iova.pfnHi <= limit && iova.pfnLo % align === 0;
          same(inside, true, `step ${t}: [${iova.pfnLo}, ${iova.pfnHi}] outside or unaligned`);
          const firstUsed = used.indexOf(1, iova.pfnLo);
          same(
            firstUsed < 0 || firstUsed > iova.pfnHi,
            true,
            `step ${t}: overlaps pfn ${firstUsed}`,
          );
          used.fill(1, iova.pfnLo, iova.pfnHi + 1);
          live.push(iova);
        } else if (live.length > 0) {
          const i = rnd() % live.length;
          const iova = live[i];
          live[i] = live[live.length - 1];
          live.pop();
          dom.__freeIova(iova);
          used.fill(0, iova.pfnLo, iova.pfnHi + 1);
        }
        same(dom.liveCount, live.length, `step ${t}: liveCount`);
      }
    },
  );
});
