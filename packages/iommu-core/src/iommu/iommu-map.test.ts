// Tests of iommu_pgsize against a brute-force reference, iommu_map/unmap/map_sg, and a model run.

import { fc, test } from "@fast-check/vitest";
import { beforeEach, describe, expect } from "vitest";
import type { Device } from "../device/device.js";
import {
  AT_UNTRANSLATED,
  DMA_READ,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  XLATE_OK,
} from "../device/iommu-hardware.js";
import type { MockDomain } from "../mock/mock-iommu.js";
import { ModelBug } from "../platform/bug.js";
import { MockMachine } from "../testing/mock-machine.js";
import { IOMMU_READ, IOMMU_WRITE } from "./io-pgtable.js";
import { IOMMU_DOMAIN_UNMANAGED, IommuDomain } from "./iommu-domain.js";
import {
  iommuAttachDevice,
  iommuDetachDevice,
  iommuDomainFree,
  iommuPagingDomainAlloc,
} from "./iommu-group.js";
import {
  iommuIovaToPhys,
  iommuMap,
  iommuMapSg,
  iommuPgsize,
  iommuPgsizeCount,
  iommuUnmap,
  iommuUnmapFast,
} from "./iommu-map.js";
import { IommuIotlbGather } from "./iotlb-gather.js";

const SZ_4K = 0x1000;
const SZ_16K = 0x4000;
const SZ_64K = 0x1_0000;
const SZ_2M = 0x20_0000;
const SZ_512M = 0x2000_0000;
const SZ_1G = 0x4000_0000;
const SZ_16G = 2 ** 34;
const RW = IOMMU_READ | IOMMU_WRITE;

/** A failure message only when it fails: expect() is too slow for the hot loops of the properties. */
function same(got: unknown, want: unknown, what: () => string): void {
  if (got !== want) expect(got, what()).toBe(want);
}

// ---------------------------------------------------------------------------------------------
// iommuPgsize against a brute-force reference

/** Page sizes the generated bitmaps draw from: the usual 4K/2M/1G and odd ones. */
const PGSIZE_BITS = [12, 13, 14, 16, 21, 25, 29, 30, 34];

function bitmapOf(bits: readonly number[]): number {
  return bits.reduce((acc, b) => acc + 2 ** b, 0);
}

/** The sizes of `bitmap`, ascending, by testing every bit. */
function sizesOf(bitmap: number): number[] {
  const out: number[] = [];
  for (let b = 0; b <= 52; b++) if (Math.floor(bitmap / 2 ** b) % 2 === 1) out.push(2 ** b);
  return out;
}

/** Whether a page of `s` may start at `iova` → `pa` within `size` bytes. */
function fits(s: number, iova: number, pa: number, size: number): boolean {
  return s <= size && iova % s === 0 && pa % s === 0;
}

/**
 * The kernel's rule, restated: the largest size of the bitmap that fits the size and both
 * alignments; as many of them as fit, unless the range reaches past the first boundary of the
 * next larger size where iova and pa are both aligned to it with a whole larger page after it,
 * in which case the count stops at that boundary.
 */
function refPgsize(bitmap: number, iova: number, pa: number, size: number): [number, number] {
  const sizes = sizesOf(bitmap);
  let best = 0;
  for (const s of sizes) if (fits(s, iova, pa, size)) best = s;
  if (best === 0) return [0, 0];
  let count = Math.floor(size / best);
  const next = sizes.find((s) => s > best);
  if (next !== undefined) {
    const boundary = (Math.floor(iova / next) + 1) * next;
    const paThere = pa + (boundary - iova);
    if (paThere % next === 0 && boundary + next <= iova + size) count = (boundary - iova) / best;
  }
  return [best, count];
}

/** The largest size of `bitmap` a page at `iova` → `pa` may have with `size` bytes left. */
function largestFit(bitmap: number, iova: number, pa: number, size: number): number {
  let best = 0;
  for (const s of sizesOf(bitmap)) if (fits(s, iova, pa, size)) best = s;
  return best;
}

/** An address of 2^align granularity below 2^width (up to 57 bits, exact as a double). */
const addrArb = (width: number) =>
  fc
    .tuple(fc.integer({ min: 12, max: 36 }), fc.bigInt({ min: 0n, max: 2n ** 45n - 1n }))
    .map(([align, m]) => Number(m % 2n ** BigInt(width - align)) * 2 ** align);

/** A bitmap, an IOVA, a PA and a size, all aligned to the bitmap's smallest page. */
const pgsizeCaseArb = fc
  .tuple(
    fc.subarray(PGSIZE_BITS, { minLength: 1 }),
    fc.oneof(addrArb(48), addrArb(57)),
    addrArb(52),
    fc.oneof(fc.constant(-1), fc.integer({ min: 12, max: 36 })),
    fc.array(fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 12, max: 35 })), {
      minLength: 1,
      maxLength: 3,
    }),
  )
  .map(([bits, iova0, pa0, congruent, terms]) => {
    const bitmap = bitmapOf(bits);
    const min = 2 ** Math.min(...bits);
    // Often make pa share iova's offset within a large size, so that larger pages become possible.
    let pa = pa0;
    if (congruent >= 0) {
      const c = 2 ** congruent;
      pa = pa0 - (pa0 % c) + (iova0 % c);
      if (pa >= 2 ** 52) pa -= c;
    }
    const iova = iova0 - (iova0 % min);
    pa -= pa % min;
    const raw = terms.reduce((acc, [k, e]) => acc + k * 2 ** e, 0);
    const size = Math.ceil(raw / min) * min;
    return { bitmap, iova, pa, size };
  });

describe("iommuPgsize", () => {
  test.prop([pgsizeCaseArb], { seed: 0x9a9e, numRuns: 3000 })(
    "picks the size and count of the brute-force reference",
    ({ bitmap, iova, pa, size }) => {
      const pg = iommuPgsize(bitmap, iova, pa, size);
      const count = iommuPgsizeCount();
      const [refPg, refCount] = refPgsize(bitmap, iova, pa, size);
      same(pg, refPg, () => "page size");
      same(count, refCount, () => "count");
      // What the reference promises, checked directly.
      const sizes = sizesOf(bitmap);
      same(sizes.includes(pg), true, () => "in the bitmap");
      same(fits(pg, iova, pa, size), true, () => "fits size and alignment");
      for (const s of sizes)
        if (s > pg) same(fits(s, iova, pa, size), false, () => `${s} fits too`);
      same(count >= 1 && count * pg <= size, true, () => `count ${count}`);
      if (count < Math.floor(size / pg)) {
        // Stopped early: exactly where a larger page starts.
        const at = iova + count * pg;
        const next = largestFit(bitmap, at, pa + count * pg, size - count * pg);
        same(next > pg, true, () => "a larger page where the count stops");
      }
    },
  );

  test.prop([pgsizeCaseArb], { seed: 0x711e, numRuns: 600 })(
    "run by run, the pages tile the range and each page is the largest that fits where it starts",
    ({ bitmap, iova, pa, size }) => {
      let at = iova;
      let to = pa;
      let left = size;
      let runs = 0;
      while (left > 0) {
        const pg = iommuPgsize(bitmap, at, to, left);
        const count = iommuPgsizeCount();
        same(pg > 0 && count > 0, true, () => `run ${runs}: ${count} pages of ${pg}`);
        // The first and last few pages of the run are each the largest fit at their place.
        for (let k = 0; k < count; k++) {
          if (k === 8 && count > 16) k = count - 8;
          const fit = largestFit(bitmap, at + k * pg, to + k * pg, left - k * pg);
          same(fit, pg, () => `run ${runs}, page ${k}`);
        }
        at += count * pg;
        to += count * pg;
        left -= count * pg;
        same(left >= 0, true, () => "past the end");
        // A run ends at the end, before a tail too small for its size, or where a larger page starts.
        if (left > 0)
          same(largestFit(bitmap, at, to, left) !== pg, true, () => `run ${runs} ends early`);
        runs++;
      }
      same(runs <= 2 * PGSIZE_BITS.length + 1, true, () => `${runs} runs`);
      same(at - iova, size, () => "bytes covered");
    },
  );

  const BITMAP = SZ_4K + SZ_2M + SZ_1G;

  test("4K|2M|1G: 2 MiB - 8 KiB + 2 MiB + 16 KiB from 2 MiB - 8 KiB is 2 x 4K, 1 x 2M, 2 x 4K", () => {
    const runs: [number, number][] = [];
    let at = SZ_2M - 0x2000;
    let left = SZ_2M + 0x4000;
    while (left > 0) {
      const pg = iommuPgsize(BITMAP, at, at + SZ_1G, left);
      runs.push([pg, iommuPgsizeCount()]);
      at += pg * iommuPgsizeCount();
      left -= pg * iommuPgsizeCount();
    }
    expect(runs).toEqual([
      [SZ_4K, 2],
      [SZ_2M, 1],
      [SZ_4K, 2],
    ]);
  });

  test("pages stay 4 KiB when iova and pa differ in their offset within 2 MiB", () => {
    expect(iommuPgsize(BITMAP, SZ_2M - SZ_4K, SZ_2M, 2 * SZ_2M)).toBe(SZ_4K);
    expect(iommuPgsizeCount()).toBe(1024);
  });

  test("the count does not stop at a boundary when no whole larger page fits after it", () => {
    expect(iommuPgsize(BITMAP, SZ_2M - SZ_4K, SZ_2M - SZ_4K, SZ_2M)).toBe(SZ_4K);
    expect(iommuPgsizeCount()).toBe(512);
  });

  test("an address of 0 constrains nothing; the size does", () => {
    expect(iommuPgsize(BITMAP, 0, 0, 3 * SZ_1G)).toBe(SZ_1G);
    expect(iommuPgsizeCount()).toBe(3);
    expect(iommuPgsize(BITMAP, 0, SZ_2M, SZ_1G)).toBe(SZ_2M);
  });

  test("odd sizes: 16K|64K|512M|16G pick 64K, then 512M, then 16G as alignment and size allow", () => {
    const odd = SZ_16K + SZ_64K + SZ_512M + SZ_16G;
    expect(iommuPgsize(odd, SZ_16K, SZ_16K, SZ_1G)).toBe(SZ_16K);
    expect(iommuPgsizeCount()).toBe(3);
    expect(iommuPgsize(odd, SZ_64K, SZ_64K, SZ_1G)).toBe(SZ_64K);
    expect(iommuPgsizeCount()).toBe((SZ_512M - SZ_64K) / SZ_64K);
    expect(iommuPgsize(odd, SZ_16G, 2 * SZ_16G, 2 * SZ_16G + SZ_512M)).toBe(SZ_16G);
    expect(iommuPgsizeCount()).toBe(2);
  });

  test("IOVAs above 2^53 keep their exact alignment", () => {
    expect(iommuPgsize(BITMAP, 2 ** 56 + SZ_2M, SZ_2M, 2 * SZ_1G)).toBe(SZ_2M);
    expect(iommuPgsizeCount()).toBe(SZ_1G / SZ_2M - 1);
    expect(iommuPgsize(BITMAP, 2 ** 56 + SZ_1G, SZ_1G, 2 * SZ_1G)).toBe(SZ_1G);
    expect(iommuPgsize(BITMAP, 2 ** 56 + SZ_4K, SZ_4K, SZ_4K)).toBe(SZ_4K);
  });

  test("no page size fits: 0 pages of 0 bytes", () => {
    expect(iommuPgsize(SZ_2M, SZ_4K, 0, SZ_2M)).toBe(0);
    expect(iommuPgsizeCount()).toBe(0);
    expect(iommuPgsize(BITMAP, 0, 0, 0)).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// iommuMap / iommuUnmap on a mock domain

/** A machine, one device, and an unattached paging domain of the mock driver. */
function setup(): { m: MockMachine; dev: Device; domain: MockDomain } {
  const m = new MockMachine();
  const dev = m.addDevice({ name: "dev", rid: 0x20 }) as Device;
  const domain = iommuPagingDomainAlloc(dev) as MockDomain;
  expect(typeof domain).toBe("object");
  return { m, dev, domain };
}

/** log2 of the leaf that maps `iova` as the hardware walks it now (the domain must be attached). */
function leafShift(m: MockMachine, dev: Device, iova: number): number {
  const req = newTranslationRequest();
  const out = newTranslationResult();
  req.rid = dev.rid;
  req.pasid = NO_PASID;
  req.iovaPfn = Math.floor(iova / SZ_4K);
  req.access = DMA_READ;
  req.at = AT_UNTRANSLATED;
  m.hw.translateUncached(req, out);
  return out.status === XLATE_OK ? out.sizeShift : -1;
}

const IOVA = SZ_1G;
const PA = 0x80_0000_0000;

describe("iommuMap errnos", () => {
  let m: MockMachine;
  let domain: MockDomain;
  let frames0: number;
  beforeEach(() => {
    ({ m, domain } = setup());
    frames0 = m.frames.liveFrames;
  });

  test("identity and blocked domains do not map or unmap: EINVAL", () => {
    for (const d of [m.driver.identityDomain, m.driver.blockedDomain]) {
      expect(iommuMap(d, IOVA, PA, SZ_4K, RW)).toBe("EINVAL");
      expect(iommuUnmap(d, IOVA, SZ_4K)).toBe("EINVAL");
      expect(iommuUnmapFast(d, IOVA, SZ_4K, new IommuIotlbGather())).toBe("EINVAL");
    }
    expect(iommuIovaToPhys(m.driver.identityDomain, IOVA + 5)).toBe(IOVA + 5);
    expect(iommuIovaToPhys(m.driver.blockedDomain, IOVA)).toBe(-1);
  });

  test("a paging domain whose driver has no map_pages: ENODEV", () => {
    const d = new IommuDomain(IOMMU_DOMAIN_UNMANAGED, { attachDev: () => 0 });
    d.pgsizeBitmap = SZ_4K;
    expect(iommuMap(d, IOVA, PA, SZ_4K, RW)).toBe("ENODEV");
    expect(iommuUnmap(d, IOVA, SZ_4K)).toBe("EINVAL");
  });

  test.each([
    ["iova", IOVA + 0x800, PA, SZ_4K],
    ["pa", IOVA, PA + 0x10, SZ_4K],
    ["size", IOVA, PA, SZ_4K + 0x200],
  ])("a %s not aligned to the smallest page: EINVAL, nothing mapped", (_what, iova, pa, size) => {
    expect(iommuMap(domain, iova, pa, size, RW)).toBe("EINVAL");
    expect(iommuIovaToPhys(domain, IOVA)).toBe(-1);
    expect(m.frames.liveFrames).toBe(frames0);
  });

  test("unaligned unmap returns EINVAL and unmaps nothing", () => {
    expect(iommuMap(domain, IOVA, PA, 2 * SZ_4K, RW)).toBe(0);
    expect(iommuUnmap(domain, IOVA + 0x800, SZ_4K)).toBe("EINVAL");
    expect(iommuUnmap(domain, IOVA, SZ_4K + 1)).toBe("EINVAL");
    expect(iommuIovaToPhys(domain, IOVA)).toBe(PA);
  });

  test("a map with neither read nor write: EINVAL", () => {
    expect(iommuMap(domain, IOVA, PA, SZ_4K, 0)).toBe("EINVAL");
  });

  test("a zero-byte map maps nothing and succeeds", () => {
    expect(iommuMap(domain, IOVA, PA, 0, RW)).toBe(0);
    expect(m.frames.liveFrames).toBe(frames0);
    expect(iommuUnmap(domain, IOVA, 0)).toBe(0);
  });

  test("a map overlapping a mapping: EEXIST, the pages it mapped before the overlap are unmapped again", () => {
    expect(iommuMap(domain, IOVA + 2 * SZ_4K, PA + SZ_1G, SZ_4K, RW)).toBe(0);
    expect(iommuMap(domain, IOVA, PA, 4 * SZ_4K, RW)).toBe("EEXIST");
    expect(iommuIovaToPhys(domain, IOVA)).toBe(-1);
    expect(iommuIovaToPhys(domain, IOVA + SZ_4K)).toBe(-1);
    expect(iommuIovaToPhys(domain, IOVA + 2 * SZ_4K)).toBe(PA + SZ_1G);
    expect(iommuIovaToPhys(domain, IOVA + 3 * SZ_4K)).toBe(-1);
  });

  test("a 2 MiB page over a mapped 4 KiB page, or a 4 KiB page into a 2 MiB one: EEXIST", () => {
    expect(iommuMap(domain, IOVA + SZ_2M + 5 * SZ_4K, PA, SZ_4K, RW)).toBe(0);
    expect(iommuMap(domain, IOVA, PA, 2 * SZ_2M, RW)).toBe("EEXIST");
    expect(iommuIovaToPhys(domain, IOVA)).toBe(-1);
    expect(iommuMap(domain, IOVA + 4 * SZ_2M, PA, SZ_2M, RW)).toBe(0);
    expect(iommuMap(domain, IOVA + 4 * SZ_2M + SZ_4K, PA, SZ_4K, RW)).toBe("EEXIST");
    expect(iommuIovaToPhys(domain, IOVA + 4 * SZ_2M + SZ_4K)).toBe(PA + SZ_4K);
  });

  test("an IOVA range past the 48-bit input space: ERANGE, nothing left mapped", () => {
    const top = 2 ** 48;
    expect(iommuMap(domain, top - SZ_4K, PA, 2 * SZ_4K, RW)).toBe("ERANGE");
    expect(iommuMap(domain, top, PA, SZ_4K, RW)).toBe("ERANGE");
    // The 4K and 2M runs below the top map, then the last run does not fit: all undone.
    const frames = m.frames.liveFrames;
    expect(iommuMap(domain, top - 2 * SZ_2M - SZ_4K, PA - SZ_4K, 2 * SZ_2M + 2 * SZ_4K, RW)).toBe(
      "ERANGE",
    );
    expect(iommuIovaToPhys(domain, top - 2 * SZ_2M - SZ_4K)).toBe(-1);
    expect(iommuIovaToPhys(domain, top - SZ_2M)).toBe(-1);
    expect(m.frames.liveFrames).toBeGreaterThanOrEqual(frames);
  });

  test("a physical range past the 52-bit output space: ERANGE", () => {
    expect(iommuMap(domain, IOVA, 2 ** 52 - SZ_4K, 2 * SZ_4K, RW)).toBe("ERANGE");
    expect(iommuIovaToPhys(domain, IOVA)).toBe(-1);
  });

  test("no frame left for a table: ENOMEM, nothing left mapped", () => {
    const hog: number[] = [];
    for (;;) {
      const f = m.frames.alloc(0);
      if (typeof f !== "number") break;
      hog.push(f);
    }
    expect(iommuMap(domain, IOVA, PA, SZ_4K, RW)).toBe("ENOMEM");
    expect(iommuIovaToPhys(domain, IOVA)).toBe(-1);
    for (const f of hog) m.frames.free(f, 0);
  });
});

describe("iommuMap page sizes", () => {
  let m: MockMachine;
  let dev: Device;
  let domain: MockDomain;
  let frames0: number;
  beforeEach(() => {
    ({ m, dev, domain } = setup());
    expect(iommuAttachDevice(domain, dev)).toBe(0);
    frames0 = m.frames.liveFrames;
  });

  test("a 2 MiB-aligned 4 MiB range maps two 2 MiB leaves: two new tables, no leaf table", () => {
    expect(iommuMap(domain, IOVA, PA, 2 * SZ_2M, RW)).toBe(0);
    expect(m.frames.liveFrames - frames0).toBe(2);
    expect(iommuIovaToPhys(domain, IOVA + 0x12345)).toBe(PA + 0x12345);
    expect(iommuIovaToPhys(domain, IOVA + SZ_2M + 0x1000)).toBe(PA + SZ_2M + 0x1000);
    expect(leafShift(m, dev, IOVA)).toBe(21);
    expect(leafShift(m, dev, IOVA + SZ_2M + 0x1000)).toBe(21);
  });

  test("the same range with pa off by 4 KiB within 2 MiB needs 4 KiB pages and leaf tables", () => {
    expect(iommuMap(domain, IOVA, PA + SZ_4K, 2 * SZ_2M, RW)).toBe(0);
    expect(m.frames.liveFrames - frames0).toBe(4);
    expect(leafShift(m, dev, IOVA)).toBe(12);
    expect(iommuIovaToPhys(domain, IOVA + 2 * SZ_2M - 1)).toBe(PA + SZ_4K + 2 * SZ_2M - 1);
  });

  test("a 1 GiB-aligned 1 GiB range is one 1 GiB leaf", () => {
    expect(iommuMap(domain, 4 * SZ_1G, 2 * SZ_1G, SZ_1G, RW)).toBe(0);
    expect(m.frames.liveFrames - frames0).toBe(1);
    expect(leafShift(m, dev, 4 * SZ_1G + 0x3fff_f000)).toBe(30);
    expect(iommuIovaToPhys(domain, 4 * SZ_1G + 0x3fff_ffff)).toBe(3 * SZ_1G - 1);
  });

  test("a range from 8 KiB below a 2 MiB boundary maps 4K, 4K, 2M, 4K, 4K", () => {
    const start = IOVA + SZ_2M - 0x2000;
    expect(iommuMap(domain, start, PA + SZ_2M - 0x2000, SZ_2M + 0x4000, RW)).toBe(0);
    const shifts = [0, 0x1000, 0x2000, 0x2000 + SZ_2M - SZ_4K, SZ_2M + 0x2000, SZ_2M + 0x3000].map(
      (o) => leafShift(m, dev, start + o),
    );
    expect(shifts).toEqual([12, 12, 21, 21, 12, 12]);
    expect(leafShift(m, dev, start + SZ_2M + 0x4000)).toBe(-1);
  });
});

describe("iommuUnmap", () => {
  let m: MockMachine;
  let dev: Device;
  let domain: MockDomain;
  beforeEach(() => {
    ({ m, dev, domain } = setup());
  });

  test("returns the bytes unmapped and stops at the first hole", () => {
    expect(iommuMap(domain, IOVA, PA, 2 * SZ_4K, RW)).toBe(0);
    expect(iommuMap(domain, IOVA + 3 * SZ_4K, PA, SZ_4K, RW)).toBe(0);
    expect(iommuUnmap(domain, IOVA, 4 * SZ_4K)).toBe(2 * SZ_4K);
    expect(iommuIovaToPhys(domain, IOVA + SZ_4K)).toBe(-1);
    expect(iommuIovaToPhys(domain, IOVA + 3 * SZ_4K)).toBe(PA);
    expect(iommuUnmap(domain, IOVA, SZ_4K)).toBe(0);
  });

  test("unmaps 4 KiB and 2 MiB leaves of one range together", () => {
    const start = IOVA + SZ_2M - SZ_4K;
    expect(iommuMap(domain, start, PA - SZ_4K, SZ_2M + 2 * SZ_4K, RW)).toBe(0);
    expect(iommuUnmap(domain, start, SZ_2M + 2 * SZ_4K)).toBe(SZ_2M + 2 * SZ_4K);
    for (const o of [0, SZ_4K, SZ_2M, SZ_2M + SZ_4K])
      expect(iommuIovaToPhys(domain, start + o)).toBe(-1);
  });

  test("the mock format does not split a 2 MiB leaf: unmapping part of it unmaps 0 bytes, the leaf stays whole", () => {
    expect(iommuAttachDevice(domain, dev)).toBe(0);
    expect(iommuMap(domain, IOVA, PA, SZ_2M, RW)).toBe(0);
    expect(iommuUnmap(domain, IOVA, SZ_4K)).toBe(0);
    expect(iommuUnmap(domain, IOVA + SZ_4K, SZ_2M - SZ_4K)).toBe(0);
    expect(iommuUnmap(domain, IOVA + SZ_1G - SZ_2M, SZ_4K)).toBe(0);
    expect(iommuIovaToPhys(domain, IOVA + SZ_4K)).toBe(PA + SZ_4K);
    expect(leafShift(m, dev, IOVA + SZ_2M - SZ_4K)).toBe(21);
    // A range that covers the leaf takes it whole.
    expect(iommuUnmap(domain, IOVA, SZ_2M)).toBe(SZ_2M);
    expect(leafShift(m, dev, IOVA)).toBe(-1);
  });

  test("a 2 MiB-aligned unmap over a leaf table clears the whole table and counts 2 MiB, holes and all", () => {
    const frames0 = m.frames.liveFrames;
    expect(iommuMap(domain, IOVA + SZ_4K, PA, SZ_4K, RW)).toBe(0);
    expect(iommuMap(domain, IOVA + 9 * SZ_4K, PA, SZ_4K, RW)).toBe(0);
    expect(m.frames.liveFrames - frames0).toBe(3);
    expect(iommuUnmap(domain, IOVA, SZ_2M)).toBe(SZ_2M);
    expect(iommuIovaToPhys(domain, IOVA + 9 * SZ_4K)).toBe(-1);
    expect(m.frames.liveFrames - frames0).toBe(2);
  });

  test("a 2 MiB-aligned unmap where nothing is mapped unmaps 0 bytes", () => {
    expect(iommuMap(domain, IOVA + SZ_2M, PA, SZ_4K, RW)).toBe(0);
    expect(iommuUnmap(domain, IOVA, SZ_2M)).toBe(0);
    expect(iommuUnmap(domain, IOVA, 2 * SZ_2M)).toBe(0);
    expect(iommuIovaToPhys(domain, IOVA + SZ_2M)).toBe(PA);
  });

  test("iommuUnmapFast leaves the leaves in the gather for the caller to sync", () => {
    expect(iommuMap(domain, IOVA, PA, 3 * SZ_4K, RW)).toBe(0);
    expect(iommuAttachDevice(domain, dev)).toBe(0);
    const g = new IommuIotlbGather();
    const syncs = m.driver.invalidations.range;
    expect(iommuUnmapFast(domain, IOVA, 3 * SZ_4K, g)).toBe(3 * SZ_4K);
    expect([g.start, g.end, g.pgsize]).toEqual([IOVA, IOVA + 3 * SZ_4K - 1, SZ_4K]);
    expect(m.driver.invalidations.range).toBe(syncs);
    expect(iommuIovaToPhys(domain, IOVA)).toBe(-1);
  });
});

describe("iommuMapSg", () => {
  let m: MockMachine;
  let dev: Device;
  let domain: MockDomain;
  let frames0: number;
  beforeEach(() => {
    ({ m, dev, domain } = setup());
    expect(iommuAttachDevice(domain, dev)).toBe(0);
    frames0 = m.frames.liveFrames;
  });

  test("entries are mapped back to back from the IOVA; returns the bytes mapped", () => {
    const sg = [
      { pa: PA + 0x10_0000, length: 2 * SZ_4K },
      { pa: PA + 0x50_0000, length: SZ_4K },
      { pa: PA, length: 3 * SZ_4K },
    ];
    expect(iommuMapSg(domain, IOVA, sg, RW)).toBe(6 * SZ_4K);
    expect(iommuIovaToPhys(domain, IOVA + SZ_4K + 0x10)).toBe(PA + 0x10_0000 + SZ_4K + 0x10);
    expect(iommuIovaToPhys(domain, IOVA + 2 * SZ_4K)).toBe(PA + 0x50_0000);
    expect(iommuIovaToPhys(domain, IOVA + 5 * SZ_4K)).toBe(PA + 2 * SZ_4K);
    expect(iommuIovaToPhys(domain, IOVA + 6 * SZ_4K)).toBe(-1);
  });

  test("physically contiguous entries are merged, so that they can share a 2 MiB page", () => {
    const sg = [
      { pa: PA, length: SZ_4K },
      { pa: PA + SZ_4K, length: SZ_2M - 2 * SZ_4K },
      { pa: PA + SZ_2M - SZ_4K, length: SZ_4K },
    ];
    expect(iommuMapSg(domain, IOVA, sg, RW)).toBe(SZ_2M);
    expect(leafShift(m, dev, IOVA + SZ_4K)).toBe(21);
    expect(m.frames.liveFrames - frames0).toBe(2);
  });

  test("zero-length entries are skipped", () => {
    const sg = [
      { pa: PA, length: 0 },
      { pa: PA + SZ_2M, length: SZ_4K },
      { pa: PA + SZ_1G, length: 0 },
    ];
    expect(iommuMapSg(domain, IOVA, sg, RW)).toBe(SZ_4K);
    expect(iommuIovaToPhys(domain, IOVA)).toBe(PA + SZ_2M);
  });

  test("a failing entry unmaps the entries mapped before it, and returns its errno", () => {
    expect(iommuMap(domain, IOVA + 3 * SZ_4K, PA + SZ_1G, SZ_4K, RW)).toBe(0);
    const sg = [
      { pa: PA, length: SZ_4K },
      { pa: PA + SZ_2M, length: 2 * SZ_4K },
      { pa: PA + 2 * SZ_2M, length: SZ_4K },
    ];
    expect(iommuMapSg(domain, IOVA, sg, RW)).toBe("EEXIST");
    for (let i = 0; i < 3; i++) expect(iommuIovaToPhys(domain, IOVA + i * SZ_4K)).toBe(-1);
    expect(iommuIovaToPhys(domain, IOVA + 3 * SZ_4K)).toBe(PA + SZ_1G);
  });

  test("an entry that does not end on a page: EINVAL, nothing left mapped", () => {
    const sg = [
      { pa: PA, length: SZ_4K },
      { pa: PA + SZ_2M, length: 0x800 },
      { pa: PA + 2 * SZ_2M, length: SZ_4K },
    ];
    expect(iommuMapSg(domain, IOVA, sg, RW)).toBe("EINVAL");
    expect(iommuIovaToPhys(domain, IOVA)).toBe(-1);
  });

  test("an empty list maps nothing", () => {
    expect(iommuMapSg(domain, IOVA, [], RW)).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// A model run: random maps and unmaps against a reference of 4 KiB pages

/** The window the model run maps in: 64 MiB at 1 GiB. */
const WIN = SZ_1G;
const WIN_PAGES = 16384;
const LEAF_SHIFTS = [30, 21, 12];

interface RefPage {
  pa: number;
  /** log2 of the leaf the page is part of. */
  shift: number;
}

/** The largest mock page (4K/2M/1G) that fits at `iova` → `pa` with `left` bytes to go. */
function greedyShift(iova: number, pa: number, left: number): number {
  for (const s of LEAF_SHIFTS) if (fits(2 ** s, iova, pa, left)) return s;
  return -1;
}

class RefDomain {
  readonly pages = new Map<number, RefPage>();

  /** 'EEXIST' when a page of the range is mapped; else maps it in greedy largest leaves. */
  map(iova: number, pa: number, size: number): 0 | "EEXIST" {
    for (let a = iova; a < iova + size; a += SZ_4K) if (this.pages.has(a / SZ_4K)) return "EEXIST";
    let at = iova;
    while (at < iova + size) {
      const shift = greedyShift(at, pa + (at - iova), iova + size - at);
      for (let k = 0; k < 2 ** (shift - 12); k++) {
        this.pages.set(at / SZ_4K + k, { pa: pa + (at - iova) + k * SZ_4K, shift });
      }
      at += 2 ** shift;
    }
    return 0;
  }

  /**
   * The kernel's unmap on the mock format: the range is cut into the largest aligned chunks; each
   * clears what lies inside it and counts whole, unless it is a hole or inside a larger leaf,
   * where the unmap stops.
   */
  unmap(iova: number, size: number): number {
    let at = iova;
    while (at < iova + size) {
      const shift = greedyShift(at, at, iova + size - at);
      const first = at / SZ_4K;
      const n = 2 ** (shift - 12);
      const head = this.pages.get(first);
      if (head !== undefined && head.shift > shift) break;
      let any = false;
      for (let k = 0; k < n; k++) any ||= this.pages.has(first + k);
      if (!any) break;
      for (let k = 0; k < n; k++) this.pages.delete(first + k);
      at += 2 ** shift;
    }
    return at - iova;
  }
}

type Op = {
  kind: "map" | "unmap";
  page: number;
  pages: number;
  delta: number;
  /** Move the start to the next page that is mapped (unmap) or free (map), so fewer ops are no-ops. */
  aim: boolean;
  samples: number[];
};

/** A page index of the window, often near a 2 MiB boundary. */
const pageArb = fc.oneof(
  fc.integer({ min: 0, max: WIN_PAGES - 1 }),
  fc
    .tuple(fc.integer({ min: 0, max: WIN_PAGES / 512 - 1 }), fc.integer({ min: -3, max: 3 }))
    .map(([b, d]) => Math.min(WIN_PAGES - 1, Math.max(0, b * 512 + d))),
);

const countArb = fc.oneof(
  fc.integer({ min: 1, max: 16 }),
  fc.integer({ min: 500, max: 1100 }),
  fc.constantFrom(512, 1024),
);

/** pa - iova: a multiple of 2 MiB (so 2 MiB leaves are possible), or not. */
const deltaArb = fc.tuple(
  fc.integer({ min: -200, max: 200 }),
  fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 511 })),
);

const opArb: fc.Arbitrary<Op> = fc
  .record({
    kind: fc.constantFrom("map", "unmap"),
    page: pageArb,
    pages: countArb,
    delta: deltaArb,
    aim: fc.boolean(),
    samples: fc.array(fc.integer({ min: 0, max: WIN_PAGES - 1 }), { minLength: 6, maxLength: 6 }),
  })
  .map(({ kind, page, pages, delta, aim, samples }) => ({
    kind: kind as "map" | "unmap",
    page,
    pages,
    delta: delta[0] * SZ_2M + delta[1] * SZ_4K,
    aim,
    samples,
  }));

describe("model run", () => {
  test.prop([fc.array(opArb, { minLength: 1, maxLength: 500, size: "max" })], {
    seed: 0x3a9,
    numRuns: 16,
  })(
    "random maps and unmaps agree with a reference of 4 KiB pages, page by page and leaf by leaf",
    (ops) => {
      const { m, dev, domain } = setup();
      // The domain's root table is the one frame it holds so far.
      const baseline = m.frames.liveFrames - 1;
      expect(iommuAttachDevice(domain, dev)).toBe(0);
      const ref = new RefDomain();
      const check = (page: number, step: number) => {
        if (page < 0 || page >= WIN_PAGES) return;
        const iova = WIN + page * SZ_4K;
        const off = (page * 0x9e7) % SZ_4K;
        const want = ref.pages.get(iova / SZ_4K);
        same(iommuIovaToPhys(domain, iova + off), want === undefined ? -1 : want.pa + off, () => {
          return `step ${step}: iova 0x${(iova + off).toString(16)}`;
        });
        same(leafShift(m, dev, iova), want === undefined ? -1 : want.shift, () => {
          return `step ${step}: leaf size at 0x${iova.toString(16)}`;
        });
      };
      ops.forEach((op, step) => {
        let page = op.page;
        if (op.aim) {
          const want = op.kind === "unmap";
          for (let k = 0; k < WIN_PAGES; k++) {
            const p = (op.page + k) % WIN_PAGES;
            if (ref.pages.has(WIN / SZ_4K + p) === want) {
              page = p;
              break;
            }
          }
        }
        const pages = Math.min(op.pages, WIN_PAGES - page);
        const iova = WIN + page * SZ_4K;
        const size = pages * SZ_4K;
        if (op.kind === "map") {
          const pa = iova + op.delta;
          same(
            iommuMap(domain, iova, pa, size, RW),
            ref.map(iova, pa, size),
            () => `step ${step}: map`,
          );
        } else {
          same(iommuUnmap(domain, iova, size), ref.unmap(iova, size), () => `step ${step}: unmap`);
        }
        for (const p of [page - 1, page, page + pages - 1, page + pages]) check(p, step);
        for (const p of op.samples) check(p, step);
      });
      for (let p = 0; p < WIN_PAGES; p++) check(p, ops.length);
      // Whatever the run left behind, freeing the domain returns every table frame.
      expect(iommuDetachDevice(domain, dev)).toBe(0);
      iommuDomainFree(domain);
      expect(m.frames.liveFrames).toBe(baseline);
    },
  );
});

describe("a table format that breaks the map_pages contract", () => {
  test("success with nothing mapped is a model bug, not an endless loop", () => {
    const domain = new IommuDomain(IOMMU_DOMAIN_UNMANAGED, {
      attachDev: () => 0,
      mapPages: (d) => {
        d.mapped = 0;
        return 0;
      },
    });
    domain.pgsizeBitmap = 0x1000;
    expect(() => iommuMap(domain, 0x1000, 0x2000, 0x1000, IOMMU_READ)).toThrow(ModelBug);
  });
});
