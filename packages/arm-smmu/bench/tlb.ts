// Is SmmuTlb's lookup fast enough not to be the bottleneck of translate? Workload 3 of
// ../shared/bench-c/README.md (tlb_hit, tlb_mixed90) on the TLB alone: same geometry (512 sets x
// 8 ways, LRU stamps), same streams, same checks. A miss "walks" with a stub that computes the
// output address arithmetically, so smmu_tlb_mixed90 measures the cache, not DRAM (C's miss is a
// real table walk). The C key (DID, PASID, VPN) maps to (VMID, ASID, VPN): domain d has
// VMID d+1 and ASID 0x1000+d, stage-1 4-KiB entries.

import {
  emit,
  fail,
  median,
  nowNs,
  REPS,
  W3,
  WARMUP,
  workload3Streams,
} from "../../../scripts/bench-kit.js";
import { SMMU_PERM_R, SMMU_PERM_W, SMMU_TLB_S1, SmmuTlb } from "../src/hw/smmu-tlb.js";

const SETS = W3.SETS;
const WAYS = W3.WAYS;
const PAGES_PER_DOM = W3.PAGES_PER_DOM;
const V0 = W3.V0;
const PA0_FRAME = W3.PA0_FRAME;
const NKEYS = W3.NKEYS;
const N_HIT = W3.N_HIT;
const N_MIX = W3.N_MIX;
const RW = SMMU_PERM_R | SMMU_PERM_W;
const MIXED_HIT_RATE = W3.MIXED_HIT_RATE;

const vmid = (d: number) => d + 1;
const asid = (d: number) => 0x1000 + d;

const { hot, mdom, mk } = workload3Streams();

/** The miss path: "walk" domain d's table (a stub: PA arithmetic), insert, return the frame. */
function refill(t: SmmuTlb, d: number, k: number): number {
  const frame = PA0_FRAME + d * PAGES_PER_DOM + k;
  t.insert(vmid(d), asid(d), V0 + k, 12, false, SMMU_TLB_S1, frame, RW);
  return frame;
}

/** translate(vmid, asid, iova, R) as iotlb.c: hit -> permission check + PA; miss -> refill. */
function translate(t: SmmuTlb, d: number, k: number): number {
  const vpn = V0 + k;
  const i = t.lookup(vmid(d), asid(d), vpn);
  if (i >= 0) {
    if ((t.permOf(i) & SMMU_PERM_R) === 0) return -1;
    return t.oaFrameFor(i, vpn) * 4096;
  }
  return refill(t, d, k) * 4096;
}

function warm(t: SmmuTlb): void {
  for (let h = 0; h < 2048; h++) translate(t, h >> 7, h);
  t.resetCounters();
}

let sink = 0;

function runHit(): number {
  const t = new SmmuTlb(SETS, WAYS);
  warm(t);
  let sum = 0;
  const t0 = nowNs();
  for (let i = 0; i < N_HIT; i++) {
    const h = hot[i & (NKEYS - 1)] as number;
    sum += translate(t, h >> 7, h);
  }
  const t1 = nowNs();
  if (t.hits !== N_HIT || t.misses !== 0) fail(`smmu_tlb_hit: ${t.misses} misses`);
  sink += sum;
  return (t1 - t0) / N_HIT;
}

let mixedRate = 0;

function runMixed(): number {
  const t = new SmmuTlb(SETS, WAYS);
  warm(t);
  let sum = 0;
  const t0 = nowNs();
  for (let i = 0; i < N_MIX; i++) {
    const j = i & (NKEYS - 1);
    sum += translate(t, mdom[j] as number, mk[j] as number);
  }
  const t1 = nowNs();
  mixedRate = t.hits / (t.hits + t.misses);
  if (mixedRate.toFixed(5) !== MIXED_HIT_RATE) {
    fail(`smmu_tlb_mixed90: hit rate ${mixedRate.toFixed(5)}, C measures ${MIXED_HIT_RATE}`);
  }
  sink += sum;
  return (t1 - t0) / N_MIX;
}

function selftest(): void {
  const t = new SmmuTlb(SETS, WAYS);
  const expect = (PA0_FRAME + 3 * PAGES_PER_DOM + 77) * 4096;
  if (translate(t, 3, 77) !== expect || t.misses !== 1) fail("miss xlate");
  if (translate(t, 3, 77) !== expect || t.hits !== 1) fail("hit xlate");
  if (t.lookup(vmid(3), asid(4), V0 + 77) !== -1) fail("ASID is part of the key");
  if (t.lookup(vmid(4), asid(3), V0 + 77) !== -1) fail("VMID is part of the key");
}

selftest();
const hit: number[] = [];
const mix: number[] = [];
for (let r = -WARMUP; r < REPS; r++) {
  const a = runHit();
  const b = runMixed();
  if (r >= 0) {
    hit.push(a);
    mix.push(b);
  }
}
const stat = (v: number[]) => ({
  ns_per_op: median(v),
  min_ns: Math.min(...v),
  max_ns: Math.max(...v),
});
emit({
  bench: "arm-smmu",
  name: "smmu_tlb_hit",
  ops: N_HIT,
  ...stat(hit),
  hit_rate: 1,
  c_workload: "tlb_hit",
  unit: "SmmuTlb.lookup + permission check",
});
emit({
  bench: "arm-smmu",
  name: "smmu_tlb_mixed90",
  ops: N_MIX,
  ...stat(mix),
  hit_rate: Number(mixedRate.toFixed(5)),
  c_workload: "tlb_mixed90",
  unit: "lookup; miss = stub walk + insert",
});
if (sink === -1) process.stderr.write("unreachable\n");
