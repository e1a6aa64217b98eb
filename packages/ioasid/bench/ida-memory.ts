// What does an Ida cost per live ID? Dense, sparse and clustered-sparse ID sets: build time per
// allocation, the bitmap's own byte count (Ida.memory) and, roughly, what the JS heap sees.

import { setImmediate as tick } from "node:timers/promises";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { emit, fail, nowNs, repeat } from "../../../scripts/bench-kit.js";
import { Ida } from "../src/index.js";

const DENSE_N = 1_000_000;
const SPARSE_N = 10_000;
const SPARSE_STRIDE = 214_748;
const CLUSTERS = 100;
const CLUSTER_SIZE = 100;
const CLUSTER_STRIDE = 21_474_836;
const MAX = 2 ** 31 - 1;
/** Idas built between two heap readings, so a small Ida stands out from the heap's jitter. */
const HEAP_COPIES = 10;

/** Fills a fresh Ida with one case's IDs; fails the bench if any allocation goes astray. */
type Build = (ida: Ida) => void;

function expect(got: number | string, want: number): void {
  if (got !== want) fail(`allocation returned ${got}, expected ${want}`);
}

/** IDs 0..DENSE_N-1, each the lowest free ID of the whole range. */
const dense: Build = (ida) => {
  for (let k = 0; k < DENSE_N; k++) expect(ida.allocRange(0, MAX), k);
};

/** SPARSE_N IDs spread evenly over the whole range: ID k = k * SPARSE_STRIDE. */
const sparse: Build = (ida) => {
  for (let k = 0; k < SPARSE_N; k++) {
    const id = k * SPARSE_STRIDE;
    expect(ida.allocRange(id, id), id);
  }
};

/** CLUSTERS runs of CLUSTER_SIZE consecutive IDs, the runs spread over the whole range. */
const clustered: Build = (ida) => {
  for (let c = 0; c < CLUSTERS; c++) {
    const base = c * CLUSTER_STRIDE;
    for (let i = 0; i < CLUSTER_SIZE; i++) expect(ida.allocRange(base + i, base + i), base + i);
  }
};

/**
 * A garbage collector to call before reading the heap: the one `--expose-gc` gives, or else one
 * obtained by turning that flag on at run time (V8 then installs `gc` in new contexts). Undefined
 * if neither works, which leaves the heap figures noisier.
 */
function findGc(): (() => void) | undefined {
  if (typeof globalThis.gc === "function") return globalThis.gc;
  try {
    setFlagsFromString("--expose-gc");
    const gc: unknown = runInNewContext("gc");
    return typeof gc === "function" ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}

const gc = findGc();

/**
 * JS heap plus ArrayBuffer bytes, after collecting garbage. V8 frees ArrayBuffer backing stores
 * off the main thread, so one gc() is not enough: collect, yield, collect again, yield.
 */
async function heapBytes(): Promise<number> {
  for (let round = 0; gc !== undefined && round < 2; round++) {
    gc();
    await tick();
  }
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** Median ns per allocation over repeated builds, each on a fresh Ida. */
function timeBuild(build: Build, ids: number): { ns: number; min: number; max: number } {
  return repeat(() => {
    const ida = new Ida();
    const t0 = nowNs();
    build(ida);
    const t1 = nowNs();
    if (ida.size !== ids) fail(`built ${ida.size} IDs, expected ${ids}`);
    return (t1 - t0) / ids;
  });
}

/**
 * Build HEAP_COPIES Idas between two heap readings; returns one of them and the heap growth per
 * Ida. Approximate: the delta includes whatever else the process allocated meanwhile (and, without
 * a usable gc, garbage from buffer growth); a cross-check on Ida.memory(), not a precise figure.
 */
async function measureHeap(build: Build): Promise<{ ida: Ida; heapDelta: number }> {
  const before = await heapBytes();
  const idas = Array.from({ length: HEAP_COPIES }, () => new Ida());
  for (const ida of idas) build(ida);
  const heapDelta = ((await heapBytes()) - before) / HEAP_COPIES;
  return { ida: idas[0], heapDelta };
}

async function run(name: string, build: Build, ids: number): Promise<void> {
  const t = timeBuild(build, ids);
  const { ida, heapDelta } = await measureHeap(build);
  const m = ida.memory();
  const perId = (bytes: number) => Math.round((bytes / ids) * 100) / 100;
  emit({
    bench: "ioasid",
    name,
    ns_per_op: t.ns,
    ops: ids,
    min_ns: t.min,
    max_ns: t.max,
    unit: "alloc while building",
    bytes_per_id: perId(m.liveBytes),
    reserved_bytes_per_id: perId(m.reservedBytes),
    heap_bytes_per_id: perId(heapDelta),
    live_bytes: m.liveBytes,
    reserved_bytes: m.reservedBytes,
    leaves: m.leaves,
    nodes: m.nodes,
  });
}

await run("ida_mem_dense", dense, DENSE_N);
await run("ida_mem_sparse", sparse, SPARSE_N);
await run("ida_mem_sparse_clustered", clustered, CLUSTERS * CLUSTER_SIZE);
if (gc === undefined) process.stderr.write("ida-memory: no gc available, heap figures are noisy\n");
