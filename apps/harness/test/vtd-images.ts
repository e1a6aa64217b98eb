// Memory images for the decode and translate tests: VT-d machines whose page tables are written
// by the format's io-pgtable (as Linux writes them) and whose root, context and PASID structures
// are written through the field tables, saved to a temporary directory as an ELF core, a sparse
// image or a raw dump; the reference the decoder is checked against; and hostile images of
// seeded garbage.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { FS_PTE } from "@iommu-sim/intel-vtd/format";
import { VtdFsPgtable, VtdSsPgtable } from "@iommu-sim/intel-vtd/pgtable";
import {
  type VtdTableBuilder,
  type VtdTestMachine,
  vtdTestMachine,
} from "@iommu-sim/intel-vtd/testing";
import { IOMMU_READ, IOMMU_WRITE } from "@iommu-sim/iommu-core";
import {
  PhysMemory,
  Prng,
  saveElfCore,
  saveSparseImage,
  toHex,
} from "@iommu-sim/iommu-core/platform";
import type { VtdMapping } from "../src/decode/vtd-decode.js";

export const RW = IOMMU_READ | IOMMU_WRITE;
export const SZ_4K = 0x1000;
export const SZ_2M = 0x20_0000;
export const SZ_1G = 0x4000_0000;

/** A temporary directory, removed by `cleanup`. */
export interface TempDir {
  readonly dir: string;
  file(name: string): string;
  cleanup(): void;
}

export function tempDir(): TempDir {
  const dir = mkdtempSync(path.join(tmpdir(), "iommu-sim-decode-"));
  return {
    dir,
    file: (name) => path.join(dir, name),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * Write `mem` to `file` as an ELF core (QEMU's `dump-guest-memory` layout), a sparse image, or a
 * raw dump of [base, base + length).
 */
export function saveImage(
  mem: PhysMemory,
  file: string,
  format: "elf" | "sparse" | { raw: { base: number; length: number } },
): void {
  let bytes: Uint8Array;
  if (format === "elf") bytes = saveElfCore(mem, { machine: 62 });
  else if (format === "sparse") bytes = saveSparseImage(mem);
  else {
    bytes = new Uint8Array(format.raw.length);
    mem.readBytes(format.raw.base, bytes);
  }
  writeFileSync(file, bytes);
}

/** One mapping as the driver made it: input, output, bytes and what the decoder should report. */
export interface RefRun {
  readonly iova: bigint;
  readonly pa: number;
  readonly size: number;
  readonly r: boolean;
  readonly w: boolean;
  /** First stage: execute and user; second stage: snoop. */
  readonly x?: boolean;
  readonly u?: boolean;
  readonly snp?: boolean;
}

/**
 * The decoder's expected view of disjoint driver mappings: sorted by IOVA, adjacent runs with
 * consecutive output addresses and equal permissions merged.
 */
export function coalesce(runs: readonly RefRun[]): VtdMapping[] {
  const sorted = [...runs].sort((a, b) => (a.iova < b.iova ? -1 : a.iova > b.iova ? 1 : 0));
  const out: RefRun[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (
      last !== undefined &&
      last.iova + BigInt(last.size) === r.iova &&
      last.pa + last.size === r.pa &&
      last.r === r.r &&
      last.w === r.w &&
      last.x === r.x &&
      last.u === r.u &&
      last.snp === r.snp
    ) {
      out[out.length - 1] = { ...last, size: last.size + r.size };
    } else out.push(r);
  }
  return out.map((r) => {
    const m = { iova: toHex(r.iova), pa: toHex(r.pa), size: r.size, r: r.r, w: r.w };
    return r.snp === undefined
      ? { ...m, x: r.x as boolean, u: r.u as boolean }
      : { ...m, snp: r.snp };
  });
}

/** A second-stage run as the decoder reports `VtdSsPgtable` mappings (no SNP). */
export function ssRun(iova: number | bigint, pa: number, size: number, prot: number): RefRun {
  return {
    iova: BigInt(iova),
    pa,
    size,
    r: (prot & IOMMU_READ) !== 0,
    w: (prot & IOMMU_WRITE) !== 0,
    snp: false,
  };
}

/** A first-stage run as the decoder reports `VtdFsPgtable` mappings: always readable, user, exec. */
export function fsRun(iova: number | bigint, pa: number, size: number, prot: number): RefRun {
  return { iova: BigInt(iova), pa, size, r: true, w: (prot & IOMMU_WRITE) !== 0, x: true, u: true };
}

/** Map through `table` and record the run; a failed map is a test bug. */
export function mapRun(
  table: VtdSsPgtable | VtdFsPgtable,
  runs: RefRun[],
  iova: number,
  pa: number,
  pgsize: number,
  count: number,
  prot: number,
): void {
  const ret = table.mapPages(iova, pa, pgsize, count, prot);
  if (ret !== 0) throw new Error(`map ${toHex(iova)} -> ${toHex(pa)}: ${ret}`);
  const run = table instanceof VtdSsPgtable ? ssRun : fsRun;
  runs.push(run(iova, pa, pgsize * count, prot));
}

/** A second-stage table in the machine's memory. */
export function ssTable(m: VtdTestMachine, agaw: 1 | 2 | 3 = 2): VtdSsPgtable {
  return new VtdSsPgtable({
    mem: m.mem,
    frames: m.frames,
    agaw,
    superpages: SZ_2M | SZ_1G,
    tlb: null,
  });
}

/** A first-stage table in the machine's memory. */
export function fsTable(m: VtdTestMachine, levels: 4 | 5 = 4): VtdFsPgtable {
  return new VtdFsPgtable({
    mem: m.mem,
    frames: m.frames,
    levels,
    superpages: SZ_2M | SZ_1G,
    tlb: null,
  });
}

/**
 * A guest's first-stage table for nested translation: table pages live in host frames but are
 * addressed by guest-physical addresses (host + `delta`), which the second-stage table `gss` maps
 * back. Entries are written through the FS_PTE field table.
 */
export class GuestFsTable {
  readonly rootHpa: number;
  readonly rootGpa: number;
  /** Table pages made so far. */
  tables = 0;
  /** What the second-stage table maps, as the decoder reports it. */
  readonly ssRuns: RefRun[] = [];

  constructor(
    private readonly b: VtdTableBuilder,
    private readonly gss: VtdSsPgtable,
    readonly levels: 4 | 5,
    readonly delta: number,
  ) {
    this.rootHpa = this.newTable();
    this.rootGpa = this.rootHpa + delta;
  }

  private newTable(): number {
    const hpa = this.b.frame();
    mapRun(this.gss, this.ssRuns, hpa + this.delta, hpa, SZ_4K, 1, RW);
    this.tables++;
    return hpa;
  }

  /** Map guest-physical `gpa` to host `hpa` in the second stage. */
  mapOutput(gpa: number, hpa: number, pgsize: number): void {
    mapRun(this.gss, this.ssRuns, gpa, hpa, pgsize, 1, RW);
  }

  /** Map `iova` to guest-physical `gpa` with a leaf at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB). */
  map(iova: number | bigint, gpa: number, level = 1, write = true): void {
    const vpn = Number(BigInt(iova) >> 12n);
    let table = this.rootHpa;
    for (let l = this.levels; l > level; l--) {
      const at = table + (Math.floor(vpn / 512 ** (l - 1)) % 512) * 8;
      const e = this.b.read(FS_PTE, at);
      if (e.P) {
        table = Number(e.ADDR) - this.delta;
      } else {
        const next = this.newTable();
        this.b.write(FS_PTE, at, { P: 1, RW: 1, US: 1, ADDR: next + this.delta });
        table = next;
      }
    }
    const at = table + (Math.floor(vpn / 512 ** (level - 1)) % 512) * 8;
    this.b.write(FS_PTE, at, {
      P: 1,
      RW: write ? 1 : 0,
      US: 1,
      ...(level > 1 ? { PS: 1 } : {}),
      ADDR: gpa,
    });
  }
}

/** A machine for the tests: caps that take 3- to 5-level second-stage tables. */
export function machine(scalable: boolean): VtdTestMachine {
  return vtdTestMachine({ scalable, caps: { sagaw: 0b01110 }, cache: { policy: "minimal" } });
}

/** RTADDR of the machine's root table in `scalable` or legacy mode. */
export function rtaddrOf(m: VtdTestMachine, scalable: boolean): bigint {
  return BigInt(m.rta) | (scalable ? 0x400n : 0n);
}

/** A hostile image: seeded garbage whose pointers chain, share and loop between its pages. */
export interface GarbageImage {
  readonly mem: PhysMemory;
  /** The root table (the first page), with a random TTM. */
  readonly rtaddr: bigint;
  /** The pages written, the root table first. */
  readonly pages: readonly number[];
}

/** How `garbageImage` fills its pages. */
export interface GarbageOptions {
  /** Pages written (default 24), 4 KiB-aligned, from 4 GiB up and beyond 512 GiB. */
  readonly pages?: number;
  /**
   * Out of 64 qwords: how many hold a pointer to one of the pages, and as many again a small
   * value (an AW, a DID, a RID_PASID) (default 6).
   */
  readonly pointers?: number;
  /** Out of 64 qwords: how many hold 64 random bits (default 2). */
  readonly random?: number;
  /** RTADDR.TTM (default random: 0 or 1 mostly, 2 and 3 sometimes). */
  readonly ttm?: number;
}

/**
 * Low bits a pointer qword carries, so that garbage often passes the first checks and leads
 * somewhere: P; R|W; P|PASIDE; PS leaves; PGTT 1-4 with AW 2; a PDTS; or (a quarter of the time)
 * 12 random bits.
 */
const PLAUSIBLE_FLAGS = [
  0x001, 0x003, 0x009, 0x00b, 0x041, 0x049, 0x083, 0x089, 0x0c9, 0x101, 0x109, 0x60b,
];

/**
 * Pages of seeded garbage: each qword is, by chance, a pointer to one of the pages (so root,
 * context, PASID and page-table entries lead to each other, to themselves, and round in loops)
 * with plausible or random flag bits below bit 12 and now and then random upper bits, a small
 * value, 64 random bits, or zero. The same seed gives the same image.
 */
export function garbageImage(seed: number, options: GarbageOptions = {}): GarbageImage {
  const prng = new Prng(seed);
  const n = options.pages ?? 24;
  const pointers = options.pointers ?? 6;
  const random = options.random ?? 2;
  const pages: number[] = [];
  for (let i = 0; i < n; i++) {
    // Most pages from 4 GiB up, a quarter beyond 512 GiB.
    const far = prng.below(4) === 0;
    const frame = far ? 2 ** 27 + prng.below(2 ** 20) : 0x10_0000 + prng.below(4096);
    pages.push(frame * 4096);
  }
  const mem = new PhysMemory();
  for (const page of pages) {
    for (let q = 0; q < 512; q++) {
      const r = prng.below(64);
      let lo = 0;
      let hi = 0;
      if (r < pointers) {
        const target = pages[prng.below(n)] as number;
        const flags =
          prng.below(4) === 0
            ? prng.below(4096)
            : (PLAUSIBLE_FLAGS[prng.below(PLAUSIBLE_FLAGS.length)] as number);
        lo = ((target % 2 ** 32) | flags) >>> 0;
        hi = Math.floor(target / 2 ** 32) | (prng.below(8) === 0 ? prng.nextU32() & 0xfff00000 : 0);
      } else if (r < 2 * pointers) {
        lo = (prng.below(8) | (prng.below(65536) << 8)) >>> 0;
      } else if (r < 2 * pointers + random) {
        lo = prng.nextU32();
        hi = prng.nextU32();
      }
      if (lo !== 0 || hi !== 0) mem.write64(page + q * 8, lo, hi >>> 0);
    }
  }
  const ttm = options.ttm ?? [0, 0, 0, 1, 1, 1, 2, 3][prng.below(8)];
  return { mem, rtaddr: BigInt(pages[0] as number) | (BigInt(ttm as number) << 10n), pages };
}
