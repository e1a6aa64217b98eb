// Does the public Ida API keep up with a tight C bitmap? Workload 1 of ../shared/bench-c/README.md
// (ida_seq_alloc, ida_seq_free, ida_churn, ida_churn_frag), same streams, same checksums. Beside
// them, ida_churn_tree runs ida_churn 2^20 IDs higher, past the flat window, so the figure is that
// of the sparse radix tree alone: the price of the choice the window makes for the low IDs.

import { emit, fail, nowNs, repeat, xorshift32 } from "../../../scripts/bench-kit.js";
import { Ida } from "../src/index.js";

const NIDS = 1 << 20;
const MAX = NIDS - 1;
const SEQ_N = 1_000_000;
const LIVE = 100_000;
const CHURN_N = 1_000_000;
const FRAG_SPAN = 200_000;
const CHECKSUM_CHURN = 333338333350000;
const CHECKSUM_FRAG = 249867704678832;
/** Where ida_churn_tree's IDs start: the first ID the flat window never holds. */
const TREE_BASE = 1 << 20;
/** Σ (k+1) over the live slots: each ID is TREE_BASE higher, so the checksum grows by this much. */
const SLOT_WEIGHTS = (LIVE * (LIVE + 1)) / 2;

let sink = 0;
const live = new Int32Array(FRAG_SPAN);
const idx = new Int32Array(CHURN_N);

function id(r: number | string): number {
  if (typeof r !== "number") fail(`allocation failed: ${r}`);
  return r;
}

/** One repetition of ida_seq_alloc + ida_seq_free, returning ns per alloc and per free. */
function seq(): [number, number] {
  const ida = new Ida();
  // Sums stay in locals: a module-level number would be boxed anew on every `+=`.
  let sum = 0;
  const t0 = nowNs();
  for (let n = 0; n < SEQ_N; n++) sum += ida.allocRange(1, MAX) as number;
  const t1 = nowNs();
  for (let i = 1; i <= SEQ_N; i++) sum += ida.free(i) as number;
  const t2 = nowNs();
  sink += sum;
  if (ida.size !== 0 || ida.allocRange(0, MAX) !== 0) fail("ida not empty after seq free");
  return [(t1 - t0) / SEQ_N, (t2 - t1) / SEQ_N];
}

/** The timed loop shared by both churn workloads: free a random live ID, allocate the lowest. */
function churnLoop(ida: Ida, min: number, max: number): number {
  let sum = 0;
  const t0 = nowNs();
  for (let t = 0; t < CHURN_N; t++) {
    const slot = idx[t];
    ida.free(live[slot]);
    const got = ida.allocRange(min, max) as number;
    live[slot] = got;
    sum += got;
  }
  const t1 = nowNs();
  sink += sum;
  return (t1 - t0) / CHURN_N;
}

function checksum(): number {
  let c = 0;
  for (let k = 0; k < LIVE; k++) c += live[k] * (k + 1);
  return c;
}

/** ida_churn on the IDs [base + 1, base + 2^20 - 1]. */
function churn(base: number): number {
  const ida = new Ida();
  const xs = xorshift32(0x9e3779b9);
  for (let k = 0; k < LIVE; k++) live[k] = id(ida.allocRange(base + 1, base + MAX));
  for (let t = 0; t < CHURN_N; t++) idx[t] = xs() % LIVE;
  const ns = churnLoop(ida, base + 1, base + MAX);
  const want = CHECKSUM_CHURN + base * SLOT_WEIGHTS;
  if (checksum() !== want) fail(`ida_churn checksum ${checksum()} != ${want} (base ${base})`);
  return ns;
}

function churnFrag(): number {
  const ida = new Ida();
  const xs = xorshift32(0x2545f491);
  for (let k = 0; k < FRAG_SPAN; k++) live[k] = id(ida.allocRange(1, MAX));
  for (let i = FRAG_SPAN - 1; i > 0; i--) {
    const j = xs() % (i + 1);
    const tmp = live[i];
    live[i] = live[j];
    live[j] = tmp;
  }
  for (let k = LIVE; k < FRAG_SPAN; k++) ida.free(live[k]);
  for (let t = 0; t < CHURN_N; t++) idx[t] = xs() % LIVE;
  const ns = churnLoop(ida, 1, MAX);
  if (checksum() !== CHECKSUM_FRAG)
    fail(`ida_churn_frag checksum ${checksum()} != ${CHECKSUM_FRAG}`);
  const lowest = ida.allocRange(1, MAX);
  if (lowest !== LIVE) fail(`ida_churn_frag lowest free after ${lowest} != ${LIVE}`);
  return ns;
}

const perFree: number[] = [];
const a = repeat(() => {
  const [alloc, free] = seq();
  perFree.push(free);
  return alloc;
});
const f = repeat(() => seq()[1]);
emit({
  bench: "ioasid",
  name: "ida_seq_alloc",
  ns_per_op: a.ns,
  ops: SEQ_N,
  min_ns: a.min,
  max_ns: a.max,
});
emit({
  bench: "ioasid",
  name: "ida_seq_free",
  ns_per_op: f.ns,
  ops: SEQ_N,
  min_ns: f.min,
  max_ns: f.max,
});
const c = repeat(() => churn(0));
emit({
  bench: "ioasid",
  name: "ida_churn",
  ns_per_op: c.ns,
  ops: CHURN_N,
  min_ns: c.min,
  max_ns: c.max,
  unit: "free+alloc pair",
  checksum: CHECKSUM_CHURN,
});
const cf = repeat(churnFrag);
emit({
  bench: "ioasid",
  name: "ida_churn_frag",
  ns_per_op: cf.ns,
  ops: CHURN_N,
  min_ns: cf.min,
  max_ns: cf.max,
  unit: "free+alloc pair",
  checksum: CHECKSUM_FRAG,
});
const ct = repeat(() => churn(TREE_BASE));
emit({
  bench: "ioasid",
  name: "ida_churn_tree",
  ns_per_op: ct.ns,
  ops: CHURN_N,
  min_ns: ct.min,
  max_ns: ct.max,
  unit: "free+alloc pair",
  checksum: CHECKSUM_CHURN + TREE_BASE * SLOT_WEIGHTS,
});
if (sink === -1) process.stderr.write("unreachable\n");
