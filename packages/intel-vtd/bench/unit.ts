// How fast is a translation through VtdUnit itself, registers, caches and tables in memory? Workload
// 3 of ../shared/bench-c/README.md (tlb_hit, tlb_mixed90) through `VtdUnit.translate`, plus a nested
// walk with no cache and the throughput of the invalidation queue.
//
// The 16 workload domains are 16 PASIDs of one device in scalable mode, each a second-stage 4-level
// table with DID d+1 and PASID 0x10000+d, so the IOTLB key is (DID, PASID, page) as in C. A C miss
// walks its table; here a miss walks the PASID's table in PhysMemory (the context and PASID
// entries come from their caches, which hold the 16 entries).
//
// For profiling, `--hit-only` or `--mixed-only` runs one loop six times and prints its ns/op.

import {
  AT_UNTRANSLATED,
  DMA_READ,
  newTranslationRequest,
  newTranslationResult,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
import { encode, FrameAllocator, PhysMemory, storeLayout } from "@iommu-sim/iommu-core/platform";
import {
  emit,
  fail,
  median,
  nowNs,
  REPS,
  W3,
  WARMUP,
  workload3Streams,
  xorshift32,
} from "../../../scripts/bench-kit.js";
import { SM_CONTEXT_ENTRY } from "../src/format/context-entry.js";
import {
  INV_DESC_TYPE,
  INV_WAIT_DESC,
  PIOTLB_G_PAGE,
  PIOTLB_INV_DESC,
} from "../src/format/inv-desc.js";
import { PASID_DIR_ENTRY, PASID_ENTRY, PGTT_NESTED, PGTT_SL } from "../src/format/pasid-entry.js";
import { GCMD_QIE, GCMD_SRTP, GCMD_TE, VTD_REG } from "../src/format/registers.js";
import { SM_ROOT_ENTRY } from "../src/format/root-entry.js";
import { SS_PTE } from "../src/format/second-stage-pte.js";
import { VtdUnit } from "../src/hw/vtd-unit.js";

const PAGES_PER_DOM = W3.PAGES_PER_DOM;
const V0 = W3.V0;
const PA0_FRAME = W3.PA0_FRAME;
const NKEYS = W3.NKEYS;
const N_HIT = W3.N_HIT;
const N_MIX = W3.N_MIX;
const N_NESTED = 1_000_000;
const RID = 0x0100;
const MIXED_HIT_RATE = W3.MIXED_HIT_RATE;

const mem = new PhysMemory();
const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x1000_0000 });

function frame(): number {
  const pa = frames.alloc(0);
  if (typeof pa !== "number") fail("out of frames");
  return pa;
}

function write(layout: typeof SS_PTE, pa: number, values: Record<string, number>): void {
  storeLayout(mem, layout, pa, encode(layout, values));
}

/** Map vpn → frame in a 4-level second-stage table (4 KiB leaf), tables R|W. */
function ssMap(root: number, vpn: number, pfn: number): void {
  let table = root;
  for (let level = 4; level > 1; level--) {
    const at = table + (Math.floor(vpn / 512 ** (level - 1)) % 512) * 8;
    const lo = mem.read32(at);
    if ((lo & 3) === 0) {
      const next = frame();
      write(SS_PTE, at, { R: 1, W: 1, ADDR: next });
      table = next;
    } else {
      table = (mem.read32(at + 4) & 0xfffff) * 4294967296 + ((lo & 0xfffff000) >>> 0);
    }
  }
  write(SS_PTE, table + (vpn % 512) * 8, { R: 1, W: 1, ADDR: pfn * 4096 });
}

function bringUp(unit: VtdUnit, rta: number): void {
  unit.write32(VTD_REG.RTADDR, (rta | (1 << 10)) >>> 0);
  unit.write32(VTD_REG.GCMD, GCMD_SRTP);
  unit.write32(VTD_REG.GCMD, GCMD_TE);
}

/** A root/context/PASID directory for RID with the given PASID entries. */
function scalableDevice(entries: Array<[number, Record<string, number>]>): number {
  const rta = frame();
  const ctx = frame();
  write(SM_ROOT_ENTRY, rta + (RID >>> 8) * 16, { LP: 1, LCTP: ctx });
  // PDTS 4: 2^11 directory entries (16 KiB) cover PASIDs below 2^17.
  const dirBig = frames.alloc(2);
  if (typeof dirBig !== "number") fail("out of frames");
  write(SM_CONTEXT_ENTRY, ctx + (RID & 0x7f) * 32, {
    P: 1,
    PASIDE: 1,
    PDTS: 4,
    PASIDDIRPTR: dirBig,
  });
  for (const [pasid, values] of entries) {
    const de = dirBig + Math.floor(pasid / 64) * 8;
    let table = (mem.read32(de) & 1) === 0 ? 0 : (mem.read32(de) & 0xfffff000) >>> 0;
    if (table === 0) {
      table = frame();
      write(PASID_DIR_ENTRY, de, { P: 1, SMPTBLPTR: table });
    }
    storeLayout(
      mem,
      PASID_ENTRY,
      table + (pasid % 64) * 64,
      encode(PASID_ENTRY, { P: 1, ...values }),
    );
  }
  return rta;
}

// --- Workload 3 -------------------------------------------------------------------------------------

const { hot, mdom, mk } = workload3Streams();

const entries: Array<[number, Record<string, number>]> = [];
for (let d = 0; d < 16; d++) {
  const root = frame();
  for (let k = 0; k < PAGES_PER_DOM; k++) ssMap(root, V0 + k, PA0_FRAME + d * PAGES_PER_DOM + k);
  entries.push([0x10000 + d, { PGTT: PGTT_SL, DID: d + 1, AW: 2, SLPTPTR: root }]);
}
const tlbRta = scalableDevice(entries);

const req = newTranslationRequest();
const out = newTranslationResult();
req.rid = RID;
req.sid = RID;
req.access = DMA_READ;
req.at = AT_UNTRANSLATED;

function newUnit(policy: "maximal" | "minimal"): VtdUnit {
  return new VtdUnit({ mem, cache: { policy, iotlbSets: 512, iotlbWays: 8 } });
}

function translate(unit: VtdUnit, d: number, k: number): number {
  req.pasid = 0x10000 + d;
  req.iovaPfn = V0 + k;
  req.offset = 0;
  unit.translate(req, out);
  return out.pa;
}

function warm(unit: VtdUnit): void {
  for (let h = 0; h < 2048; h++) {
    const pa = translate(unit, h >> 7, h);
    if (out.status !== XLATE_OK || pa !== (PA0_FRAME + (h >> 7) * PAGES_PER_DOM + h) * 4096)
      fail(
        `warm ${h}: status ${out.status} code 0x${out.code.toString(16)} pa 0x${pa.toString(16)}`,
      );
  }
}

let sink = 0;

function hitLoop(unit: VtdUnit): number {
  let s = 0;
  const t0 = nowNs();
  for (let t = 0; t < N_HIT; t++) {
    const h = hot[t & (NKEYS - 1)] as number;
    s += translate(unit, h >> 7, h);
  }
  const t1 = nowNs();
  sink += s;
  return (t1 - t0) / N_HIT;
}

function mixedLoop(unit: VtdUnit): number {
  let s = 0;
  const t0 = nowNs();
  for (let t = 0; t < N_MIX; t++) {
    const i = t & (NKEYS - 1);
    s += translate(unit, mdom[i] as number, mk[i] as number);
  }
  const t1 = nowNs();
  sink += s;
  return (t1 - t0) / N_MIX;
}

function tlbRep(): [number, number, number] {
  const a = newUnit("maximal");
  bringUp(a, tlbRta);
  warm(a);
  const hits0 = a.iotlb.hits;
  const miss0 = a.iotlb.misses;
  const hit = hitLoop(a);
  if (a.iotlb.hits - hits0 !== N_HIT || a.iotlb.misses !== miss0)
    fail("tlb_hit: hit rate is not 100%");
  const b = newUnit("maximal");
  bringUp(b, tlbRta);
  warm(b);
  const h1 = b.iotlb.hits;
  const m1 = b.iotlb.misses;
  const mixed = mixedLoop(b);
  const rate = (b.iotlb.hits - h1) / (b.iotlb.hits - h1 + b.iotlb.misses - m1);
  return [hit, mixed, rate];
}

// --- Nested walks ------------------------------------------------------------------------------------

/** A nested PASID: a 4-level first stage whose tables sit at GPAs a 4-level second stage maps 1:1. */
function nestedSetup(): { rta: number; pages: number } {
  const s2 = frame();
  const fl = frame();
  const pages = 4096;
  const gpaBase = 0x4000_0000 / 4096;
  let table = fl;
  // First-stage tables from the same allocator: identity-map every frame the allocator may hand out.
  const flTables: number[] = [];
  for (let level = 4; level > 1; level--) {
    const next = level > 2 ? frame() : 0;
    if (level > 2) {
      mem.write64(table, (next | 0x27) >>> 0, 0);
      flTables.push(next);
      table = next;
    }
  }
  // `table` is now the level-2 table: 8 level-1 tables cover 4096 pages.
  for (let j = 0; j < pages / 512; j++) {
    const l1 = frame();
    mem.write64(table + j * 8, (l1 | 0x27) >>> 0, 0);
    for (let i = 0; i < 512; i++) {
      const gpfn = gpaBase + j * 512 + i;
      mem.write64(l1 + i * 8, ((gpfn * 4096) | 0x67) >>> 0, 0);
    }
    flTables.push(l1);
  }
  for (const t of [fl, ...flTables]) ssMap(s2, t / 4096, t / 4096);
  for (let i = 0; i < pages; i++) ssMap(s2, gpaBase + i, 0x100_0000 + i);
  const rta = scalableDevice([
    [0x20, { PGTT: PGTT_NESTED, DID: 40, AW: 2, SLPTPTR: s2, FLPTR: fl, SRE: 1 }],
  ]);
  return { rta, pages };
}

const nested = nestedSetup();
const nidx = new Uint32Array(NKEYS);
{
  const xs = xorshift32(0x1b873593);
  for (let t = 0; t < NKEYS; t++) nidx[t] = xs() % nested.pages;
}

function nestedRep(): number {
  const unit = newUnit("minimal");
  bringUp(unit, nested.rta);
  req.pasid = 0x20;
  let s = 0;
  const t0 = nowNs();
  for (let t = 0; t < N_NESTED; t++) {
    req.iovaPfn = nidx[t & (NKEYS - 1)] as number;
    unit.translate(req, out);
    s += out.pa;
  }
  const t1 = nowNs();
  req.iovaPfn = 5;
  unit.translate(req, out);
  if (out.status !== XLATE_OK || out.pa !== (0x100_0000 + 5) * 4096)
    fail(`nested translation: ${out.status} code ${out.code}`);
  sink += s;
  return (t1 - t0) / N_NESTED;
}

// --- Invalidation queue ------------------------------------------------------------------------------

const QI_PAGES = 16; // 64 KiB: 2048 slots of 32 bytes
const QI_BATCH = 16; // 15 PASID-based IOTLB page invalidations and one wait, like a 16-descriptor batch
const QI_ROUNDS = 100_000;

function qiRep(): number {
  const unit = newUnit("maximal");
  bringUp(unit, tlbRta);
  const base = frames.alloc(4);
  if (typeof base !== "number") fail("out of frames");
  const status = frame();
  unit.write32(VTD_REG.IQT, 0);
  unit.write32(VTD_REG.IQA, (base | (1 << 11) | 4) >>> 0);
  unit.write32(VTD_REG.GCMD, GCMD_TE | GCMD_QIE);
  const size = QI_PAGES * 4096;
  const inv = encode(PIOTLB_INV_DESC, {
    Type: INV_DESC_TYPE.PIOTLB,
    G: PIOTLB_G_PAGE,
    DID: 1,
    PASID: 0x10000,
    ADDR: 0x1_0000_0000,
  });
  const wait = encode(INV_WAIT_DESC, { Type: INV_DESC_TYPE.WAIT, SW: 1, SDATA: 2, SADDR: status });
  let tail = 0;
  const t0 = nowNs();
  for (let r = 0; r < QI_ROUNDS; r++) {
    for (let i = 0; i < QI_BATCH - 1; i++) {
      const at = base + tail;
      mem.write64(at, inv[0] as number, inv[1] as number);
      mem.write64(at + 8, inv[2] as number, inv[3] as number);
      tail = (tail + 32) % size;
    }
    mem.write32(status, 0);
    const at = base + tail;
    mem.write64(at, wait[0] as number, wait[1] as number);
    mem.write64(at + 8, wait[2] as number, wait[3] as number);
    tail = (tail + 32) % size;
    unit.write32(VTD_REG.IQT, tail);
    if (mem.read32(status) !== 2) fail("wait descriptor did not complete");
  }
  const t1 = nowNs();
  if (unit.queueStopped) fail("queue error");
  return (t1 - t0) / (QI_ROUNDS * QI_BATCH);
}

// --- Runs --------------------------------------------------------------------------------------------

if (process.argv.includes("--hit-only")) {
  const u = newUnit("maximal");
  bringUp(u, tlbRta);
  warm(u);
  for (let r = 0; r < 6; r++) console.log(hitLoop(u));
  process.exit(0);
}
if (process.argv.includes("--mixed-only")) {
  const u = newUnit("maximal");
  bringUp(u, tlbRta);
  warm(u);
  for (let r = 0; r < 6; r++) console.log(mixedLoop(u));
  process.exit(0);
}
const tlbRuns: [number, number, number][] = [];
const nestedRuns: number[] = [];
const qiRuns: number[] = [];
for (let r = -WARMUP; r < REPS; r++) {
  const t = tlbRep();
  const n = nestedRep();
  const q = qiRep();
  if (r >= 0) {
    tlbRuns.push(t);
    nestedRuns.push(n);
    qiRuns.push(q);
  }
}
const stat = (v: number[]) => ({
  ns_per_op: median(v),
  min_ns: Math.min(...v),
  max_ns: Math.max(...v),
});
const rate = (tlbRuns[0] as [number, number, number])[2];
if (rate.toFixed(5) !== MIXED_HIT_RATE)
  fail(`tlb_mixed90 hit rate ${rate.toFixed(5)}, C has ${MIXED_HIT_RATE}`);
emit({
  bench: "intel-vtd",
  name: "tlb_hit",
  ops: N_HIT,
  ...stat(tlbRuns.map((r) => r[0])),
  hit_rate: 1,
  unit: "VtdUnit.translate, IOTLB hit",
});
emit({
  bench: "intel-vtd",
  name: "tlb_mixed90",
  ops: N_MIX,
  ...stat(tlbRuns.map((r) => r[1])),
  hit_rate: Number(rate.toFixed(5)),
  unit: "VtdUnit.translate, misses walk the 4-level table in memory",
});
emit({
  bench: "intel-vtd",
  name: "nested_walk",
  ops: N_NESTED,
  ...stat(nestedRuns),
  unit: "4-level first stage over 4-level second stage, no cache",
});
const qi = median(qiRuns);
emit({
  bench: "intel-vtd",
  name: "qi_descriptors",
  ops: QI_ROUNDS * QI_BATCH,
  ns_per_op: qi,
  min_ns: Math.min(...qiRuns),
  max_ns: Math.max(...qiRuns),
  descriptors_per_second: Math.round(1e9 / qi),
  unit: "15 PASID-based IOTLB invalidations + 1 wait per IQT write",
});
if (sink === 0.5) console.log("");
