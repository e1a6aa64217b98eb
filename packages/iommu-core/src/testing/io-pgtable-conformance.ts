// The io-pgtable conformance suite: the rules every page-table format of iommu-sim must keep.
//
// A format author runs it from a vitest test file, with a factory that builds a fresh, empty table
// on its own memory and frame allocator, wired to a RecordingFlushOps:
//
//   import { describeIoPgtableConformance, RecordingFlushOps } from "@iommu-sim/iommu-core/testing";
//   import { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
//   import { MyPgtable } from "../src/my-pgtable.js";
//
//   for (const levels of [3, 4] as const) {
//     describeIoPgtableConformance(`my format, ${levels} levels`, () => {
//       const mem = new PhysMemory();
//       const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x200_0000 });
//       const flush = new RecordingFlushOps();
//       const table = new MyPgtable({ mem, frames, levels, tlb: flush });
//       return { table, frames, flush, caps: { partialBlockUnmap: "zero", rangeErrno: "ERANGE" } };
//     });
//   }
//
// The geometry (page sizes, ias, oas, levels) is read from `table.cfg` and `table.levels` unless
// `caps` overrides it. The suite checks what the iommu core relies on, through the IoPgtable
// interface only, looping over mapPages/unmapPages as `__iommu_map`/`__iommu_unmap` do (so a
// format may stop at a table boundary and report progress in `mapped` or the return value):
//  - every page size maps at the bottom, the middle and the top of the input range and translates
//    at its first and last byte, to the bottom and the top of the output range;
//  - misaligned iova/pa, a size outside the bitmap and a prot without read or write give EINVAL;
//    an address past 2^ias or 2^oas gives `caps.rangeErrno`;
//  - mapping over anything mapped gives EEXIST, with `mapped` a prefix of the request that is
//    mapped, and nothing after it;
//  - unmap returns 0 on a hole and stops at the first hole; unmapping part of a block returns 0
//    or splits, as `caps.partialBlockUnmap` says; tlbAddPage sees each unmapped leaf once;
//  - when the allocator runs dry, map fails with ENOMEM and leaks nothing;
//  - `free()` gives every frame back;
//  - thousands of random map/unmap/lookup operations (fast-check, fixed seed) agree with a
//    reference that is a plain list of leaves.

import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import type { Errno } from "../errno.js";
import {
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuFlushOps,
  type IoPgtable,
} from "../iommu/io-pgtable.js";
import { IommuIotlbGather } from "../iommu/iotlb-gather.js";
import { type FrameAllocator, MAX_ORDER } from "../platform/frame-allocator.js";

/** A flush callback as the suite recorded it. */
export interface RecordedFlush {
  kind: "addPage" | "flushWalk" | "flushAll";
  iova: number;
  size: number;
  granule: number;
}

/**
 * IommuFlushOps that records every call, in order, and adds each page to the gather like
 * `iommu_iotlb_gather_add_page` does. Give one to the table the factory builds.
 *
 * @kernel include/linux/io-pgtable.h iommu_flush_ops
 */
export class RecordingFlushOps implements IommuFlushOps {
  readonly calls: RecordedFlush[] = [];

  tlbFlushAll(): void {
    this.calls.push({ kind: "flushAll", iova: 0, size: 0, granule: 0 });
  }

  tlbFlushWalk(iova: number, size: number, granule: number): void {
    this.calls.push({ kind: "flushWalk", iova, size, granule });
  }

  tlbAddPage(gather: IommuIotlbGather, iova: number, granule: number): void {
    this.calls.push({ kind: "addPage", iova, size: granule, granule });
    gather.addRange(iova, granule);
  }

  /** The recorded calls of one kind. */
  of(kind: RecordedFlush["kind"]): RecordedFlush[] {
    return this.calls.filter((c) => c.kind === kind);
  }

  clear(): void {
    this.calls.length = 0;
  }
}

/** What a format does and declares, beyond what `table.cfg` says. */
export interface IoPgtableCaps {
  /** Page sizes (default `table.cfg.pgsizeBitmap`). */
  pgsizeBitmap?: number;
  /** Input address bits (default `table.cfg.ias`). */
  ias?: number;
  /** Output address bits (default `table.cfg.oas`). */
  oas?: number;
  /** Walk depth (default `table.levels`). */
  levels?: number;
  /**
   * What an unmap of one page inside a larger leaf does: `"zero"` returns 0 and leaves the block
   * whole (Linux since 6.13), `"split"` replaces the block by a table and unmaps just the page.
   */
  partialBlockUnmap: "zero" | "split";
  /** The errno for an iova past 2^ias or a pa past 2^oas (io-pgtable-arm: ERANGE). */
  rangeErrno: "ERANGE" | "EINVAL";
  /**
   * Optional decoder: the IOMMU_READ/WRITE/NOEXEC/PRIV bits of the leaf mapping `iova`, or null.
   * When given, the suite checks that each mapping keeps the prot bits in `protBits`.
   */
  protOf?: (table: IoPgtable, iova: number) => number | null;
  /** The prot bits `protOf` reports faithfully (default IOMMU_READ | IOMMU_WRITE). */
  protBits?: number;
}

/** One fresh table and what the suite needs to observe it. */
export interface IoPgtableUnderTest {
  /** An empty table. */
  table: IoPgtable;
  /** The allocator the table takes its frames from (for the leak and ENOMEM checks). */
  frames: FrameAllocator;
  /** The flush callbacks the table was given. */
  flush: RecordingFlushOps;
  caps: IoPgtableCaps;
  /** `frames.liveFrames` before the table was built (default 0: an allocator of its own). */
  baselineFrames?: number;
}

/** Builds a fresh `IoPgtableUnderTest` on every call. */
export type IoPgtableFactory = () => IoPgtableUnderTest;

interface Geometry {
  sizes: number[];
  ias: number;
  oas: number;
  levels: number;
  caps: IoPgtableCaps;
}

interface Leaf {
  iova: number;
  size: number;
  pa: number;
  prot: number;
}

const RW = IOMMU_READ | IOMMU_WRITE;
const PROTS = [
  IOMMU_READ,
  IOMMU_WRITE,
  RW,
  IOMMU_READ | IOMMU_NOEXEC,
  RW | IOMMU_PRIV,
  IOMMU_WRITE | IOMMU_NOEXEC | IOMMU_PRIV,
];

function sizesOf(bitmap: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < 64; b++) if (Math.floor(bitmap / 2 ** b) % 2 === 1) out.push(2 ** b);
  return out;
}

function label(size: number): string {
  if (size >= 2 ** 30) return `${size / 2 ** 30} GiB`;
  if (size >= 2 ** 20) return `${size / 2 ** 20} MiB`;
  return `${size / 1024} KiB`;
}

function geometry(u: IoPgtableUnderTest): Geometry {
  const { table, caps } = u;
  return {
    sizes: sizesOf(caps.pgsizeBitmap ?? table.cfg.pgsizeBitmap),
    ias: caps.ias ?? table.cfg.ias,
    oas: caps.oas ?? table.cfg.oas,
    levels: caps.levels ?? table.levels,
    caps,
  };
}

function alignDown(x: number, a: number): number {
  return x - (x % a);
}

/**
 * `__iommu_map` for one page size: call mapPages until the run is mapped or it fails; returns
 * the first error (or 0) and the bytes mapped over all calls. Fails the test when a call
 * reports more than it was asked, a part page, or no progress without an error.
 *
 * @kernel drivers/iommu/iommu.c __iommu_map
 */
export function mapAll(
  t: IoPgtable,
  iova: number,
  pa: number,
  pgsize: number,
  pgcount: number,
  prot: number,
): { ret: 0 | Errno; mapped: number } {
  let mapped = 0;
  const size = pgsize * pgcount;
  while (mapped < size) {
    const ret = t.mapPages(iova + mapped, pa + mapped, pgsize, (size - mapped) / pgsize, prot);
    const got = t.mapped;
    expect(got % pgsize, "mapped is a whole number of pages").toBe(0);
    expect(got, "mapped never exceeds the request").toBeLessThanOrEqual(size - mapped);
    mapped += got;
    if (ret !== 0) return { ret, mapped };
    if (got === 0) throw new Error("mapPages returned 0 without mapping: __iommu_map would spin");
  }
  return { ret: 0, mapped };
}

/**
 * `__iommu_unmap` for one page size: call unmapPages until done or a call unmaps nothing;
 * returns the bytes unmapped.
 *
 * @kernel drivers/iommu/iommu.c __iommu_unmap
 */
export function unmapAll(
  t: IoPgtable,
  iova: number,
  pgsize: number,
  pgcount: number,
  gather: IommuIotlbGather | null,
): number {
  let done = 0;
  const size = pgsize * pgcount;
  while (done < size) {
    const n = t.unmapPages(iova + done, pgsize, (size - done) / pgsize, gather);
    if (n === 0) break;
    expect(n % pgsize, "unmapped is a whole number of pages").toBe(0);
    done += n;
  }
  return done;
}

/** The leaves of a reference table, keyed by IOVA, and lookups over them. */
class Reference {
  readonly leaves = new Map<number, Leaf>();

  constructor(private readonly sizes: readonly number[]) {}

  lookup(iova: number): number {
    for (const size of this.sizes) {
      const l = this.leaves.get(alignDown(iova, size));
      if (l !== undefined && l.size === size) return l.pa + (iova - l.iova);
    }
    return -1;
  }

  overlaps(iova: number, size: number): boolean {
    for (const l of this.leaves.values()) {
      if (iova < l.iova + l.size && l.iova < iova + size) return true;
    }
    return false;
  }
}

/** Doubles are exact integers only below 2^53; above, the suite probes page-aligned bytes only. */
const EXACT = 2 ** 53;

/** Check that `l` translates at its first, last and one middle byte. */
function expectLeaf(t: IoPgtable, l: Leaf, min: number, why: string): void {
  const exact = l.iova + l.size <= EXACT;
  const last = exact ? l.size - 1 : l.size - min;
  const mid = exact ? (l.size / 2) | 0x123 : l.size / 2;
  expect(t.iovaToPhys(l.iova), `${why}: first byte of 0x${l.iova.toString(16)}`).toBe(l.pa);
  expect(t.iovaToPhys(l.iova + last), `${why}: last byte`).toBe(l.pa + last);
  expect(t.iovaToPhys(l.iova + mid), `${why}: middle byte`).toBe(l.pa + mid);
}

function expectUnmapped(t: IoPgtable, iova: number, size: number, min: number, why: string): void {
  const last = iova + size <= EXACT ? size - 1 : size - min;
  expect(t.iovaToPhys(iova), `${why}: 0x${iova.toString(16)}`).toBe(-1);
  expect(t.iovaToPhys(iova + last), `${why}: last byte`).toBe(-1);
}

function expectFreed(u: IoPgtableUnderTest): void {
  u.table.free();
  expect(u.frames.liveFrames, "free() returns every frame").toBe(u.baselineFrames ?? 0);
}

/** Allocate every free frame of `frames`; returns a function that gives them back. */
function exhaust(frames: FrameAllocator): () => void {
  const held: [number, number][] = [];
  for (let order = MAX_ORDER; order >= 0; order--) {
    for (;;) {
      const pa = frames.alloc(order);
      if (typeof pa !== "number") break;
      held.push([pa, order]);
    }
  }
  return () => {
    for (const [pa, order] of held) frames.free(pa, order);
  };
}

/** One step of the random workload; fast-check draws these. */
interface Op {
  kind: number;
  size: number;
  region: number;
  anchor: number;
  step: number;
  count: number;
  pa: number;
  prot: number;
  pick: number;
}

const opArb: fc.Arbitrary<Op> = fc.record({
  kind: fc.nat(9),
  size: fc.nat(),
  region: fc.nat(),
  anchor: fc.nat(),
  step: fc.integer({ min: -8, max: 8 }),
  count: fc.integer({ min: 1, max: 4 }),
  pa: fc.maxSafeNat(),
  prot: fc.nat(),
  pick: fc.nat(),
});

/**
 * Define the conformance suite (vitest `describe`/`it` blocks) for the format `factory` builds.
 * Each test builds its own table; the factory is also called once while the suite is defined, to
 * read the geometry. See the file header for the rules and a usage example.
 *
 * @kernel drivers/iommu/io-pgtable-arm-selftests.c arm_lpae_run_tests
 * @kernel drivers/iommu/generic_pt/kunit_iommu_pt.h
 */
export function describeIoPgtableConformance(name: string, factory: IoPgtableFactory): void {
  const probe = factory();
  const g = geometry(probe);
  probe.table.free();

  describe(`io-pgtable conformance: ${name}`, () => {
    const { sizes, ias, oas, caps } = g;
    const inLimit = 2 ** ias;
    const outLimit = 2 ** oas;
    const min = sizes[0];

    it("declares a sane geometry", () => {
      const u = factory();
      expect(sizes.length, "at least one page size").toBeGreaterThan(0);
      expect(min, "pages are at least 4 KiB").toBeGreaterThanOrEqual(4096);
      expect(ias, "ias").toBeLessThanOrEqual(64);
      expect(oas, "oas").toBeLessThanOrEqual(52);
      expect(
        sizes.every((s) => s < inLimit && s < outLimit),
        "pages fit both spaces",
      ).toBe(true);
      expect(u.table.levels).toBe(g.levels);
      expectFreed(u);
    });

    for (const size of sizes) {
      it(`maps a ${label(size)} page at the bottom, middle and top of the input range`, () => {
        const u = factory();
        const t = u.table;
        const iovas = [0, inLimit / 2 - size, inLimit / 2, inLimit - size];
        const pas = [0, size, outLimit - size, outLimit / 2];
        const leaves = iovas.map((iova, i) => ({ iova, size, pa: pas[i], prot: RW }));
        for (const l of leaves)
          expect(mapAll(t, l.iova, l.pa, size, 1, RW)).toEqual({ ret: 0, mapped: size });
        for (const l of leaves) expectLeaf(t, l, min, "after map");
        expect(t.iovaToPhys(size), "the page after the first").toBe(-1);
        expect(t.iovaToPhys(inLimit - 2 * size), "the page before the last").toBe(-1);
        expect(t.iovaToPhys(inLimit), "2^ias").toBe(-1);
        expect(t.iovaToPhys(-1), "a negative iova").toBe(-1);
        for (const l of leaves) {
          expect(unmapAll(t, l.iova, size, 1, null)).toBe(size);
          expectUnmapped(t, l.iova, size, min, "after unmap");
        }
        expectFreed(u);
      });
    }

    it("a misaligned iova or pa returns EINVAL and maps nothing", () => {
      const u = factory();
      const t = u.table;
      for (const size of sizes) {
        const off = size === min ? min / 2 : min;
        const iova = 4 * size;
        expect(t.mapPages(iova + off, 0, size, 1, RW), `iova + 0x${off.toString(16)}`).toBe(
          "EINVAL",
        );
        expect(t.mapped).toBe(0);
        expect(t.mapPages(iova, size + off, size, 1, RW), `pa + 0x${off.toString(16)}`).toBe(
          "EINVAL",
        );
        expect(t.mapped).toBe(0);
        expectUnmapped(t, iova, size, min, "nothing mapped");
      }
      expectFreed(u);
    });

    it("a page size outside the bitmap returns EINVAL", () => {
      const u = factory();
      const bad = [0, 3 * 4096, 2 ** 13, 2 ** 16, 2 ** 21, 2 ** 30, 2 ** 39].filter(
        (s) => !sizes.includes(s) && s < inLimit,
      );
      for (const s of bad) {
        expect(u.table.mapPages(0, 0, s, 1, RW), `pgsize 0x${s.toString(16)}`).toBe("EINVAL");
        expect(u.table.mapped).toBe(0);
      }
      expect(u.table.iovaToPhys(0)).toBe(-1);
      expectFreed(u);
    });

    it("a prot without IOMMU_READ or IOMMU_WRITE returns EINVAL (Linux >= 6.11)", () => {
      const u = factory();
      for (const prot of [0, IOMMU_NOEXEC, IOMMU_PRIV]) {
        expect(u.table.mapPages(0, 0, min, 1, prot)).toBe("EINVAL");
        expect(u.table.mapped).toBe(0);
      }
      expect(u.table.iovaToPhys(0)).toBe(-1);
      expectFreed(u);
    });

    it(`an iova past 2^ias or a pa past 2^oas returns ${caps.rangeErrno}`, () => {
      const u = factory();
      const t = u.table;
      const errno = caps.rangeErrno;
      for (const size of sizes) {
        expect(mapAll(t, inLimit, 0, size, 1, RW).ret, "iova = 2^ias").toBe(errno);
        expect(mapAll(t, 0, outLimit, size, 1, RW).ret, "pa = 2^oas").toBe(errno);
        // A run that starts inside and ends outside: a format may map the part inside first.
        const r1 = mapAll(t, inLimit - size, 0, size, 2, RW);
        expect(r1.ret, "iova run across 2^ias").toBe(errno);
        expect(t.iovaToPhys(inLimit - size)).toBe(r1.mapped === 0 ? -1 : 0);
        expect(t.iovaToPhys(inLimit)).toBe(-1);
        unmapAll(t, inLimit - size, size, 1, null);
        const r2 = mapAll(t, 0, outLimit - size, size, 2, RW);
        expect(r2.ret, "pa run across 2^oas").toBe(errno);
        expect(t.iovaToPhys(size), "nothing maps to 2^oas").toBe(-1);
        unmapAll(t, 0, size, 1, null);
      }
      expectFreed(u);
    });

    it("mapping over a mapped page returns EEXIST and keeps the old mapping", () => {
      const u = factory();
      const t = u.table;
      for (const size of sizes) {
        const iova = 8 * sizes[sizes.length - 1] + 2 * size;
        expect(mapAll(t, iova, size, size, 1, RW).ret).toBe(0);
        expect(mapAll(t, iova, 2 * size, size, 1, RW)).toEqual({ ret: "EEXIST", mapped: 0 });
        expectLeaf(t, { iova, size, pa: size, prot: RW }, min, "old mapping");
      }
      expectFreed(u);
    });

    if (sizes.length > 1) {
      it("mapping a page inside a larger one, or a larger one over pages, returns EEXIST", () => {
        const u = factory();
        const t = u.table;
        const big = sizes[sizes.length - 1];
        const block = { iova: 2 * big, size: big, pa: 3 * big, prot: RW };
        expect(mapAll(t, block.iova, block.pa, big, 1, RW).ret).toBe(0);
        for (const small of sizes.slice(0, -1)) {
          expect(mapAll(t, block.iova + small, 0, small, 1, RW).ret, label(small)).toBe("EEXIST");
        }
        const pageIova = 4 * big + big / 2;
        expect(mapAll(t, pageIova, 0, min, 1, RW).ret).toBe(0);
        for (const larger of sizes.slice(1)) {
          const at = alignDown(pageIova, larger);
          expect(mapAll(t, at, 0, larger, 1, RW).ret, label(larger)).toBe("EEXIST");
        }
        expectLeaf(t, block, min, "block");
        expectLeaf(t, { iova: pageIova, size: min, pa: 0, prot: RW }, min, "page");
        expectFreed(u);
      });
    }

    it("EEXIST part-way through a run leaves a mapped prefix and nothing after it", () => {
      const u = factory();
      const t = u.table;
      for (const size of sizes) {
        const iova = 16 * sizes[sizes.length - 1];
        expect(mapAll(t, iova + 2 * size, 0, size, 1, RW).ret).toBe(0);
        const r = mapAll(t, iova, 8 * size, size, 4, RW);
        expect(r.ret).toBe("EEXIST");
        expect(r.mapped).toBeLessThanOrEqual(2 * size);
        for (let k = 0; k < 4; k++) {
          const v = iova + k * size;
          if (k === 2) expect(t.iovaToPhys(v), "the old page").toBe(0);
          else if (k * size < r.mapped) expect(t.iovaToPhys(v + 1)).toBe(8 * size + k * size + 1);
          else expect(t.iovaToPhys(v), `page ${k} past mapped`).toBe(-1);
        }
        unmapAll(t, iova, size, 4, null);
        unmapAll(t, iova + 2 * size, size, 1, null);
        expectUnmapped(t, iova, 4 * size, min, "cleaned up");
      }
      expectFreed(u);
    });

    it("unmap of a hole returns 0", () => {
      const u = factory();
      const t = u.table;
      for (const size of sizes) expect(t.unmapPages(0, size, 1, null), label(size)).toBe(0);
      expect(mapAll(t, 4 * min, 0, min, 1, RW).ret).toBe(0);
      expect(t.unmapPages(5 * min, min, 1, null), "next to a mapped page").toBe(0);
      expect(t.unmapPages(3 * min, min, 1, null), "before a mapped page").toBe(0);
      expect(t.iovaToPhys(4 * min)).toBe(0);
      expectFreed(u);
    });

    it("unmap across a hole stops at it", () => {
      const u = factory();
      const t = u.table;
      for (const size of sizes) {
        const iova = 32 * sizes[sizes.length - 1];
        expect(mapAll(t, iova, 0, size, 2, RW).ret).toBe(0);
        expect(mapAll(t, iova + 3 * size, 0, size, 1, RW).ret).toBe(0);
        expect(unmapAll(t, iova, size, 4, null)).toBe(2 * size);
        expectUnmapped(t, iova, 2 * size, min, "before the hole");
        expect(t.iovaToPhys(iova + 3 * size), "after the hole").toBe(0);
        expect(unmapAll(t, iova + 3 * size, size, 1, null)).toBe(size);
      }
      expectFreed(u);
    });

    if (sizes.length > 1) {
      it(`unmapping part of a block ${caps.partialBlockUnmap === "zero" ? "returns 0" : "splits it"}`, () => {
        const u = factory();
        const t = u.table;
        const big = sizes[1];
        const block = { iova: 4 * big, size: big, pa: 2 * big, prot: RW };
        expect(mapAll(t, block.iova, block.pa, big, 1, RW).ret).toBe(0);
        const n = t.unmapPages(block.iova + min, min, 1, null);
        if (caps.partialBlockUnmap === "zero") {
          expect(n).toBe(0);
          expectLeaf(t, block, min, "the block is whole");
        } else {
          expect(n).toBe(min);
          expect(t.iovaToPhys(block.iova + min)).toBe(-1);
          expect(t.iovaToPhys(block.iova)).toBe(block.pa);
          expect(t.iovaToPhys(block.iova + 2 * min)).toBe(block.pa + 2 * min);
          expect(t.iovaToPhys(block.iova + big - 1)).toBe(block.pa + big - 1);
        }
        expectFreed(u);
      });
    }

    it("tlbAddPage sees each unmapped leaf once, with its iova and size", () => {
      const u = factory();
      const t = u.table;
      const gather = new IommuIotlbGather();
      for (const size of sizes) {
        // Four pages across the middle of the input range: a boundary of every table level.
        const iova = inLimit / 2 - 2 * size;
        expect(mapAll(t, iova, 0, size, 4, RW).ret).toBe(0);
        u.flush.clear();
        gather.init();
        expect(unmapAll(t, iova, size, 4, gather)).toBe(4 * size);
        const pages = u.flush.of("addPage").map((c) => [c.iova, c.granule]);
        expect(pages).toEqual([0, 1, 2, 3].map((k) => [iova + k * size, size]));
        expect([gather.start, gather.end]).toEqual([iova, iova + 4 * size - 1]);
      }
      expectFreed(u);
    });

    if (g.levels > 1) {
      it("map returns ENOMEM when the allocator runs dry, and leaks nothing", () => {
        const u = factory();
        const t = u.table;
        const before = u.frames.liveFrames;
        const giveBack = exhaust(u.frames);
        const held = u.frames.liveFrames;
        // The middle of the input range needs a fresh path below the root.
        const r = mapAll(t, inLimit / 2, 0, min, 1, RW);
        expect(r).toEqual({ ret: "ENOMEM", mapped: 0 });
        expect(u.frames.liveFrames, "no frame kept by the failed map").toBe(held);
        giveBack();
        expect(u.frames.liveFrames).toBe(before);
        expect(mapAll(t, inLimit / 2, 0, min, 1, RW).ret).toBe(0);
        expect(t.iovaToPhys(inLimit / 2)).toBe(0);
        expectFreed(u);
      });
    }

    it("free() after a spread workload returns every frame", () => {
      const u = factory();
      const t = u.table;
      let pa = 0;
      for (const size of sizes) {
        for (const iova of [0, inLimit / 4, inLimit / 2 + 7 * size, inLimit - 8 * size]) {
          const at = alignDown(iova, size) + 3 * size;
          pa = Math.ceil(pa / size) * size;
          expect(mapAll(t, at, pa, size, 2, RW).ret).toBe(0);
          pa += 2 * size;
        }
      }
      expect(u.frames.liveFrames).toBeGreaterThan(u.baselineFrames ?? 0);
      expectFreed(u);
    });

    const regions = [0, inLimit / 2 - 4 * 2 ** 30, inLimit - 8 * 2 ** 30].map((r) =>
      Math.max(0, r),
    );
    const anchors = [
      0,
      2 ** 21 - 2 ** 14,
      2 ** 21,
      2 ** 30 - 2 ** 14,
      2 ** 30,
      2 ** 30 + 2 ** 21,
      3 * 2 ** 30,
    ];

    test.prop([fc.array(opArb, { minLength: 60, maxLength: 240 })], {
      seed: 0x10_9a_7e,
      numRuns: 24,
    })("random map/unmap/iovaToPhys sequences agree with a reference", (ops) => {
      const u = factory();
      const t = u.table;
      const ref = new Reference(sizes);
      const gather = new IommuIotlbGather();
      let step = 0;
      const place = (op: Op, size: number, count: number): number => {
        const base = regions[op.region % regions.length] + anchors[op.anchor % anchors.length];
        let iova = alignDown(base, size) + op.step * size;
        if (iova < 0) iova = 0;
        if (iova + count * size > inLimit) iova = alignDown(inLimit - count * size, size);
        return iova;
      };
      for (const op of ops) {
        step++;
        const size = sizes[op.size % sizes.length];
        if (op.kind < 5) {
          const count = op.count;
          const iova = place(op, size, count);
          const pa = alignDown(op.pa % (outLimit - count * size), size);
          const prot = PROTS[op.prot % PROTS.length];
          let clash = count;
          for (let k = 0; k < count && clash === count; k++) {
            if (ref.overlaps(iova + k * size, size)) clash = k;
          }
          const r = mapAll(t, iova, pa, size, count, prot);
          if (clash === count)
            expect(r, `step ${step}: map`).toEqual({ ret: 0, mapped: count * size });
          else {
            expect(r.ret, `step ${step}: map over a mapping`).toBe("EEXIST");
            expect(r.mapped).toBeLessThanOrEqual(clash * size);
          }
          const done = r.mapped / size;
          for (let k = 0; k < count; k++) {
            const l = { iova: iova + k * size, size, pa: pa + k * size, prot };
            if (k < done) {
              ref.leaves.set(l.iova, l);
              expectLeaf(t, l, min, `step ${step}: new page`);
              if (caps.protOf !== undefined) {
                const bits = caps.protBits ?? RW;
                expect(caps.protOf(t, l.iova) ?? -1, `step ${step}: prot`).toBe(prot & bits);
              }
            } else if (!ref.overlaps(l.iova, size)) {
              expectUnmapped(t, l.iova, size, min, `step ${step}: page past mapped`);
            }
          }
        } else if (op.kind < 8 && ref.leaves.size > 0) {
          const all = [...ref.leaves.values()];
          const first = all[op.pick % all.length];
          let count = 1;
          while (count < op.count) {
            const next = ref.leaves.get(first.iova + count * first.size);
            if (next === undefined || next.size !== first.size) break;
            count++;
          }
          u.flush.clear();
          gather.init();
          const n = unmapAll(t, first.iova, first.size, count, gather);
          expect(n, `step ${step}: unmap`).toBe(count * first.size);
          const pages = u.flush.of("addPage").map((c) => [c.iova, c.granule]);
          const want = Array.from({ length: count }, (_, k) => [
            first.iova + k * first.size,
            first.size,
          ]);
          expect(pages, `step ${step}: tlbAddPage`).toEqual(want);
          for (let k = 0; k < count; k++) {
            ref.leaves.delete(first.iova + k * first.size);
            expectUnmapped(
              t,
              first.iova + k * first.size,
              first.size,
              min,
              `step ${step}: unmapped`,
            );
          }
        } else {
          const iova = place(op, min, 1) + (op.pa % min);
          expect(t.iovaToPhys(iova), `step ${step}: probe 0x${iova.toString(16)}`).toBe(
            ref.lookup(iova),
          );
        }
        if (step % 32 === 0)
          for (const l of ref.leaves.values()) expectLeaf(t, l, min, `step ${step}`);
      }
      for (const l of ref.leaves.values()) expectLeaf(t, l, min, "end");
      expectFreed(u);
    });
  });
}
