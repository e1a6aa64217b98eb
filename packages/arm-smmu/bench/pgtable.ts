// How fast does an uncached LPAE stage-1 walk run, per granule? Workload 2 of
// ../shared/bench-c/README.md (1,000,000 mapped pages, seed 0x1B873593, 2^20 indices, random walks)
// on 4K, 16K and 64K stage-1 tables, plus pt_map_4k for the C baseline's map loop.
//
// Two walkers over the same tables in the same memory:
// - walk_4k / walk_16k / walk_64k: the hardware walker, SmmuV3.translate with the minimal cache
//   policy, so every request fetches the STE and the CD and walks stage 1 from the root;
// - pt_walk_4k / pt_walk_16k / pt_walk_64k: the page-table code's own LpaePgtable.iovaToPhys.
// Both must produce the same checksum. The 4K results compare with C's pt_walk_random.
// Workload names on the command line (pt_map_4k, walk_4k, pt_walk_16k, ...) run only those.

import {
  DMA_READ,
  IOMMU_READ,
  IOMMU_WRITE,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
import { emit, fail, nowNs, repeat, xorshift32 } from "../../../scripts/bench-kit.js";
import { type LpaeGranule, LpaePgtable } from "../src/pgtable/lpae.js";
import { smmuTestMachine, tcrTgOfShift } from "../src/testing/table-builder.js";

const NPAGES = 1_000_000;
const NWALK = 10_000_000;
const NWALK_HW = 2_000_000;
const NIDX = 1 << 20;
const IOVA0 = 0x1_0000_0000;
const PA0 = 0x80_0000_0000;
const TWO32 = 4294967296;
const RW = IOMMU_READ | IOMMU_WRITE;
const only = new Set(process.argv.slice(2));
const wanted = (name: string) => only.size === 0 || only.has(name);

// The machine's frames start at 1 MiB: low addresses, so walks read PhysMemory's arrays directly.
const m = smmuTestMachine({ cache: { policy: "minimal" } });
const mem = m.mem;
const frames = m.frames;
const idx = new Int32Array(NIDX);
{
  const xs = xorshift32(0x1b873593);
  for (let t = 0; t < NIDX; t++) idx[t] = xs() % NPAGES;
}

function table(granule: LpaeGranule): LpaePgtable {
  return new LpaePgtable({ mem, frames, stage: 1, granule, ias: 48, oas: 48, tlb: null });
}

function mapAll(pt: LpaePgtable, granule: number): number {
  const t0 = nowNs();
  for (let i = 0; i < NPAGES; i++) {
    const rc = pt.mapPages(IOVA0 + i * granule, PA0 + i * granule, granule, 1, RW);
    if (rc !== 0) fail(`map ${i}: ${rc}`);
  }
  return (nowNs() - t0) / NPAGES;
}

let checksum = 0;

function ptWalk(pt: LpaePgtable, granule: number): number {
  let lo = 0;
  let hi = 0;
  const t0 = nowNs();
  for (let t = 0; t < NWALK; t++) {
    const pa = pt.iovaToPhys(IOVA0 + (idx[t & (NIDX - 1)] as number) * granule);
    lo ^= pa;
    hi ^= pa / TWO32;
  }
  const t1 = nowNs();
  checksum = (hi >>> 0) * TWO32 + (lo >>> 0);
  return (t1 - t0) / NWALK;
}

const req = newTranslationRequest();
const out = newTranslationResult();
req.access = DMA_READ;
req.pasid = NO_PASID;
req.offset = 0;

/** The same walks (the first NWALK_HW indices) through the SMMU, StreamID `sid`. */
function hwWalk(sid: number, granule: number): number {
  const s = m.smmu;
  const pagesPer = granule / 4096;
  const v0 = IOVA0 / 4096;
  req.sid = sid;
  let lo = 0;
  let hi = 0;
  const t0 = nowNs();
  for (let t = 0; t < NWALK_HW; t++) {
    req.iovaPfn = v0 + (idx[t & (NIDX - 1)] as number) * pagesPer;
    s.translate(req, out);
    const pa = out.pa;
    lo ^= pa;
    hi ^= pa / TWO32;
  }
  const t1 = nowNs();
  if (out.status !== XLATE_OK) fail(`hw walk: status ${out.status} code ${out.code}`);
  checksum = (hi >>> 0) * TWO32 + (lo >>> 0);
  return (t1 - t0) / NWALK_HW;
}

/** The pt walk's checksum over the first NWALK_HW indices, which hwWalk must reproduce. */
function expectedHw(pt: LpaePgtable, granule: number): number {
  let lo = 0;
  let hi = 0;
  for (let t = 0; t < NWALK_HW; t++) {
    const pa = pt.iovaToPhys(IOVA0 + (idx[t & (NIDX - 1)] as number) * granule);
    lo ^= pa;
    hi ^= pa / TWO32;
  }
  return (hi >>> 0) * TWO32 + (lo >>> 0);
}

function check(pt: LpaePgtable, granule: number): void {
  for (let t = 0; t < 1000; t++) {
    const i = idx[t] as number;
    if (pt.iovaToPhys(IOVA0 + i * granule + 0x123) !== PA0 + i * granule + 0x123) fail("xlate");
  }
  if (pt.iovaToPhys(IOVA0 + NPAGES * granule) !== -1) fail("unmapped");
}

if (wanted("pt_map_4k")) {
  const map4k = repeat(() => {
    const pt = table(4096);
    const ns = mapAll(pt, 4096);
    check(pt, 4096);
    pt.free();
    return ns;
  });
  emit({
    bench: "arm-smmu",
    name: "pt_map_4k",
    ops: NPAGES,
    ns_per_op: map4k.ns,
    min_ns: map4k.min,
    max_ns: map4k.max,
    unit: "LPAE stage-1 4K mapPages, one page per call",
  });
}

const GRANULES = [4096, 16384, 65536] as const;
for (let gi = 0; gi < GRANULES.length; gi++) {
  const granule = GRANULES[gi] as LpaeGranule;
  const k = `${granule / 1024}k`;
  if (!wanted(`walk_${k}`) && !wanted(`pt_walk_${k}`)) continue;
  const cWorkload = granule === 4096 ? { c_workload: "pt_walk_random" } : {};
  const before = frames.liveFrames;
  const pt = table(granule);
  mapAll(pt, granule);
  check(pt, granule);
  // StreamID gi + 1: one stage-1 CD (ASID gi + 1) whose TTB0 is this table.
  const sid = gi + 1;
  const cdt = m.b.cdTable(0);
  m.b.setCd(cdt, 0, {
    T0SZ: 16,
    TG0: tcrTgOfShift(Math.log2(granule)),
    IR0: 1,
    OR0: 1,
    SH0: 3,
    EPD1: 1,
    IPS: 5,
    ASID: sid,
    TTB0: pt.ttbr,
  });
  m.b.setSte(m.st, sid, { Config: 5, S1ContextPtr: cdt.ptr });
  if (wanted(`walk_${k}`)) {
    const want = expectedHw(pt, granule);
    const hw = repeat(() => hwWalk(sid, granule));
    if (checksum !== want) fail(`walk_${k}: checksum ${checksum}, iovaToPhys gives ${want}`);
    emit({
      bench: "arm-smmu",
      name: `walk_${k}`,
      ops: NWALK_HW,
      ns_per_op: hw.ns,
      min_ns: hw.min,
      max_ns: hw.max,
      ...cWorkload,
      unit: `SmmuV3.translate, minimal policy: STE, CD, stage-1 ${pt.levels}-level walk`,
      checksum,
    });
  }
  if (wanted(`pt_walk_${k}`)) {
    const r = repeat(() => ptWalk(pt, granule));
    emit({
      bench: "arm-smmu",
      name: `pt_walk_${k}`,
      ops: NWALK,
      ns_per_op: r.ns,
      min_ns: r.min,
      max_ns: r.max,
      ...cWorkload,
      unit: `stage-1 ${pt.levels}-level walk (LpaePgtable.iovaToPhys)`,
      checksum,
    });
  }
  pt.free();
  // The CD table's frame stays (the STE points at it).
  if (frames.liveFrames !== before + 1) fail(`leaked ${frames.liveFrames - before - 1} frames`);
}
