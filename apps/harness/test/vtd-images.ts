// Memory images for the decode and translate tests: VT-d machines whose page tables are written
// by the format's io-pgtable (as Linux writes them) and whose root, context and PASID structures
// are written through the field tables, saved to a temporary directory as an ELF core, a sparse
// image or a raw dump; and the reference the decoder is checked against.

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
  type PhysMemory,
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
