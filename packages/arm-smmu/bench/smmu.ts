// How fast is a DMA through the whole SMMUv3 model? Workload 3 of ../shared/bench-c/README.md
// (tlb_hit, tlb_mixed90) through SmmuV3.translate, with the 16 domains as 16 SubstreamIDs of one
// StreamID (SSID 0x10000 + d, as the C workload's PASIDs, in a 2-level CD table; ASID d + 1 as its
// domain ids): STE and CD cache lookups, the TLB, and on a miss a real 4-level stage 1 walk. Then
// a nested translation with nothing cached (minimal policy: STE, CD through stage 2, 4 stage 1
// levels each through stage 2, the output through stage 2), and the command queue's throughput
// (batches of 16 TLBI_NH_VA and one CMD_SYNC).

import {
  DMA_READ,
  newTranslationRequest,
  newTranslationResult,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
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
import { CMDQ_OP } from "../src/format/commands.js";
import { SMMU_REG } from "../src/format/registers.js";
import { SmmuTestMachine, smmuTestMachine } from "../src/testing/table-builder.js";

const NDOM = W3.DOMAINS;
const PAGES_PER_DOM = W3.PAGES_PER_DOM;
const V0 = W3.V0;
const PA0_FRAME = W3.PA0_FRAME;
const NKEYS = W3.NKEYS;
const N_HIT = 5_000_000;
const N_MIX = 3_000_000;
const N_NESTED = 200_000;
const MIXED_HIT_RATE = W3.MIXED_HIT_RATE;
const SID = 0;
const ssidOf = (d: number) => 0x10000 + d;
const { hot, mdom, mk } = workload3Streams();

/** The workload-3 machine: SID 0, S1CDMax 17 with 64K leaf CD tables, 16 CDs with full tables. */
function workload3(): SmmuTestMachine {
  const m = smmuTestMachine();
  const cdt = m.b.cdTable(17, 2);
  for (let d = 0; d < NDOM; d++) {
    const pt = m.b.lpae(1, 12, 48);
    m.b.setCd(cdt, ssidOf(d), m.b.s1CdFields(pt, d + 1));
    // One level 3 table per 2 MiB: create it through the builder, then fill its 512 entries.
    for (let k = 0; k < PAGES_PER_DOM; k += 512) {
      const at = pt.map((V0 + k) * 4096, (PA0_FRAME + d * PAGES_PER_DOM + k) * 4096);
      const lo = m.mem.read32(at);
      const hi = m.mem.read32(at + 4);
      for (let j = 1; j < 512; j++) {
        const pa = (PA0_FRAME + d * PAGES_PER_DOM + k + j) * 4096;
        m.mem.write64(
          at + j * 8,
          ((lo & 0xfff) | (pa % 2 ** 32)) >>> 0,
          (hi & ~0xffff) | Math.floor(pa / 2 ** 32),
        );
      }
    }
  }
  m.b.setSte(m.st, SID, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 17, S1Fmt: 2, S1DSS: 1 });
  return m;
}

const req = newTranslationRequest();
const out = newTranslationResult();
req.sid = SID;
req.access = DMA_READ;
let sink = 0;

function translate(m: SmmuTestMachine, d: number, k: number): number {
  req.pasid = ssidOf(d);
  req.iovaPfn = V0 + k;
  m.smmu.translate(req, out);
  return out.pa;
}

function warm(m: SmmuTestMachine): void {
  for (let h = 0; h < 2048; h++) {
    const pa = translate(m, h >> 7, h);
    if (out.status !== XLATE_OK || pa !== (PA0_FRAME + (h >> 7) * PAGES_PER_DOM + h) * 4096)
      fail(`warm translate ${h}: status ${out.status} pa ${pa}`);
  }
  m.smmu.tlb.resetCounters();
}

let hitRate = 0;
function runHit(m: SmmuTestMachine): number {
  m.smmu.tlb.clear();
  warm(m);
  let sum = 0;
  const t0 = nowNs();
  for (let i = 0; i < N_HIT; i++) {
    const h = hot[i & (NKEYS - 1)] as number;
    sum += translate(m, h >> 7, h);
  }
  const t1 = nowNs();
  const t = m.smmu.tlb;
  hitRate = t.hits / (t.hits + t.misses);
  if (t.misses !== 0) fail(`tlb_hit: ${t.misses} misses`);
  sink += sum;
  return (t1 - t0) / N_HIT;
}

let mixedRate = 0;
function runMixed(m: SmmuTestMachine): number {
  m.smmu.tlb.clear();
  warm(m);
  let sum = 0;
  const t0 = nowNs();
  for (let i = 0; i < N_MIX; i++) {
    const j = i & (NKEYS - 1);
    sum += translate(m, mdom[j] as number, mk[j] as number);
  }
  const t1 = nowNs();
  const t = m.smmu.tlb;
  mixedRate = t.hits / (t.hits + t.misses);
  if (mixedRate.toFixed(5) !== MIXED_HIT_RATE)
    fail(`tlb_mixed90: hit rate ${mixedRate.toFixed(5)}, C measures ${MIXED_HIT_RATE}`);
  sink += sum;
  return (t1 - t0) / N_MIX;
}

/** Nested STE 1 (VMID 9): stage 2 maps the builder's memory at +IPA_OFF and the output range. */
const IPA_OFF = 0x3000_0000;
function nestedMachine(): SmmuTestMachine {
  const m = smmuTestMachine({ cache: { policy: "minimal" } });
  const s2 = m.b.lpae(2, 12, 40);
  for (let pa = 0; pa < 0x4020_0000; pa += 0x20_0000) s2.map(pa + IPA_OFF, pa, 2);
  for (let k = 0; k < 512; k++) s2.map(0x2000_0000 + k * 4096, 0x9000_0000 + k * 4096);
  const s1 = m.b.lpae(1, 12, 48, { ipaOffset: -IPA_OFF });
  for (let k = 0; k < 512; k++) s1.map(0x1_0000_0000 + k * 4096, 0x2000_0000 + k * 4096);
  const cdt = m.b.cdTable(0);
  m.b.setCd(cdt, 0, m.b.s1CdFields(s1, 5));
  m.b.setSte(m.st, 1, { Config: 7, S1ContextPtr: cdt.ptr + IPA_OFF, ...m.b.s2SteFields(s2, 9) });
  return m;
}

let nestedReads = 0;
function runNested(m: SmmuTestMachine): number {
  const xs = xorshift32(0x1234567);
  req.sid = 1;
  req.pasid = -1;
  let sum = 0;
  const reads0 = m.smmu.walker.reads;
  const t0 = nowNs();
  for (let i = 0; i < N_NESTED; i++) {
    const k = xs() & 511;
    req.iovaPfn = 0x100000 + k;
    m.smmu.translate(req, out);
    sum += out.pa;
  }
  const t1 = nowNs();
  nestedReads = (m.smmu.walker.reads - reads0) / N_NESTED;
  req.sid = SID;
  if (out.status !== XLATE_OK) fail(`nested_walk: status ${out.status} code ${out.code}`);
  sink += sum;
  return (t1 - t0) / N_NESTED;
}

const BATCHES = 20_000;
const PER_BATCH = 17;
function runCmdq(): number {
  const m = smmuTestMachine({ queueLog2: 12 });
  const cmds: Uint32Array[] = [];
  for (let i = 0; i < 16; i++)
    cmds.push(
      SmmuTestMachine.command(CMDQ_OP.TLBI_NH_VA, { ASID: 1, Address: (V0 + i) * 4096, Leaf: 1 }),
    );
  cmds.push(SmmuTestMachine.command(CMDQ_OP.CMD_SYNC, {}));
  const s = m.smmu;
  const mem = m.mem;
  const mask = 2 ** 12 - 1;
  let prod = 0;
  const t0 = nowNs();
  for (let b = 0; b < BATCHES; b++) {
    // What a driver does per batch: write the 17 commands at PROD, then publish PROD once.
    for (let i = 0; i < PER_BATCH; i++) {
      const c = cmds[i] as Uint32Array;
      const at = m.cmdq + ((prod + i) & mask) * 16;
      mem.write64(at, c[0] as number, c[1] as number);
      mem.write64(at + 8, c[2] as number, c[3] as number);
    }
    prod = (prod + PER_BATCH) & (2 * mask + 1);
    s.write32(SMMU_REG.CMDQ_PROD, prod);
  }
  const t1 = nowNs();
  if (s.stats.commandErrors !== 0 || s.stats.syncs !== BATCHES)
    fail(`cmdq: ${s.stats.syncs} syncs`);
  return (t1 - t0) / (BATCHES * PER_BATCH);
}

// Workload names on the command line run only those (for profiling one of them).
const only = new Set(process.argv.slice(2));
const wanted = (name: string) => only.size === 0 || only.has(name);
const m3 = workload3();
const mn = nestedMachine();
const hit: number[] = [];
const mix: number[] = [];
const nest: number[] = [];
const cq: number[] = [];
for (let r = -WARMUP; r < REPS; r++) {
  const a = wanted("tlb_hit") ? runHit(m3) : 0;
  const b = wanted("tlb_mixed90") ? runMixed(m3) : 0;
  const c = wanted("nested_walk") ? runNested(mn) : 0;
  const d = wanted("cmdq_commands") ? runCmdq() : 0;
  if (r >= 0) {
    hit.push(a);
    mix.push(b);
    nest.push(c);
    cq.push(d);
  }
}
const stat = (v: number[]) => ({
  ns_per_op: median(v),
  min_ns: Math.min(...v),
  max_ns: Math.max(...v),
});
if (wanted("tlb_hit"))
  emit({
    bench: "arm-smmu",
    name: "tlb_hit",
    ops: N_HIT,
    ...stat(hit),
    hit_rate: hitRate,
    c_workload: "tlb_hit",
    unit: "SmmuV3.translate, 16 SSIDs of SID 0",
  });
if (wanted("tlb_mixed90"))
  emit({
    bench: "arm-smmu",
    name: "tlb_mixed90",
    ops: N_MIX,
    ...stat(mix),
    hit_rate: Number(mixedRate.toFixed(5)),
    c_workload: "tlb_mixed90",
    unit: "SmmuV3.translate, misses walk 4 levels",
  });
if (wanted("nested_walk"))
  emit({
    bench: "arm-smmu",
    name: "nested_walk",
    ops: N_NESTED,
    ...stat(nest),
    reads_per_op: nestedReads,
    unit: "SmmuV3.translate, minimal policy, 4K S1 (4 levels) over 4K S2 (3 levels)",
  });
if (wanted("cmdq_commands"))
  emit({
    bench: "arm-smmu",
    name: "cmdq_commands",
    ops: BATCHES * PER_BATCH,
    ...stat(cq),
    commands_per_s: Math.round(1e9 / median(cq)),
    unit: "16 TLBI_NH_VA + 1 CMD_SYNC per CMDQ_PROD write (command writes included), default caches",
  });
if (sink === 0.5) process.stderr.write("");
