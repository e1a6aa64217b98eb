// What does one 64-bit access of PhysMemory cost, the access every table walk is made of?
// mem_read64 and mem_write64: 10,000,000 random aligned accesses to 16 MiB of populated frames
// (4,096 frames at PA 0; seed 0x1B873593, 2^20 addresses `(xs32() % 2^21) * 8`, cycled).
// mem_read64_l1: the same reads confined to the first 16 KiB (`addr & 0x3ff8`), so the data is
// cached and what remains is PhysMemory's own cost; u32_read64_l1 reads the same two words from a
// plain Uint32Array, the floor it is measured against.

import { emit, fail, nowNs, repeat, xorshift32 } from "../../../scripts/bench-kit.js";
import { PAGE_SIZE, PhysMemory } from "../src/platform/index.js";

const FRAMES = 4096;
const BYTES = FRAMES * PAGE_SIZE;
const SLOTS = BYTES / 8;
const ADDRS = 1 << 20;
const MASK = ADDRS - 1;
const N = 10_000_000;
const HOT_MASK = 0x3ff8;

/** Contents as a function of the address, so the read checksum can be computed without memory. */
const loAt = (pa: number) => Math.imul(pa, 0x9e3779b1) >>> 0;
const hiAt = (pa: number) => Math.imul(pa ^ 0x5bd1e995, 0x85ebca6b) >>> 0;

const xs = xorshift32(0x1b873593);
const addrs = new Uint32Array(ADDRS);
for (let i = 0; i < ADDRS; i++) addrs[i] = (xs() % SLOTS) * 8;

function filledMemory(): PhysMemory {
  const mem = new PhysMemory();
  for (let pa = 0; pa < BYTES; pa += 8) mem.write64(pa, loAt(pa), hiAt(pa));
  if (mem.populatedFrameCount !== FRAMES) fail(`populated ${mem.populatedFrameCount} frames`);
  return mem;
}

let expectedRead = 0;
for (let t = 0; t < N; t++) {
  const pa = addrs[t & MASK];
  expectedRead = (expectedRead + (loAt(pa) ^ hiAt(pa))) | 0;
}

let expectedHot = 0;
for (let t = 0; t < N; t++) {
  const pa = addrs[t & MASK] & HOT_MASK;
  expectedHot = (expectedHot + (loAt(pa) ^ hiAt(pa))) | 0;
}

let sink = 0;
const mem = filledMemory();
const plain = new Uint32Array((HOT_MASK + 8) / 4);
for (let pa = 0; pa < plain.length * 4; pa += 8) {
  plain[pa / 4] = loAt(pa);
  plain[pa / 4 + 1] = hiAt(pa);
}

function readRep(): number {
  let sum = 0;
  const t0 = nowNs();
  for (let t = 0; t < N; t++) {
    const lo = mem.read64(addrs[t & MASK]);
    sum = (sum + (lo ^ mem.hi)) | 0;
  }
  const t1 = nowNs();
  if (sum !== expectedRead) fail(`mem_read64 checksum ${sum} != ${expectedRead}`);
  sink += sum;
  return (t1 - t0) / N;
}

function readHotRep(): number {
  let sum = 0;
  const t0 = nowNs();
  for (let t = 0; t < N; t++) {
    const lo = mem.read64(addrs[t & MASK] & HOT_MASK);
    sum = (sum + (lo ^ mem.hi)) | 0;
  }
  const t1 = nowNs();
  if (sum !== expectedHot) fail(`mem_read64_l1 checksum ${sum} != ${expectedHot}`);
  sink += sum;
  return (t1 - t0) / N;
}

function plainHotRep(): number {
  let sum = 0;
  const t0 = nowNs();
  for (let t = 0; t < N; t++) {
    const i = (addrs[t & MASK] & HOT_MASK) >>> 2;
    sum = (sum + (plain[i] ^ plain[i + 1])) | 0;
  }
  const t1 = nowNs();
  if (sum !== expectedHot) fail(`u32_read64_l1 checksum ${sum} != ${expectedHot}`);
  sink += sum;
  return (t1 - t0) / N;
}

function writeRep(): number {
  const t0 = nowNs();
  for (let t = 0; t < N; t++) mem.write64(addrs[t & MASK], t, ~t);
  const t1 = nowNs();
  // Every stream slot comes round once in the last 2^20 steps, so each address holds the last t
  // of that final pass that wrote it.
  const last = new Map<number, number>();
  for (let t = N - ADDRS; t < N; t++) last.set(addrs[t & MASK], t);
  let bad = 0;
  for (const [pa, t] of last) if (mem.read64(pa) !== t || mem.hi !== ~t >>> 0) bad++;
  if (bad > 0) fail(`mem_write64 left ${bad} addresses with a wrong value`);
  sink += mem.read64(0);
  return (t1 - t0) / N;
}

const r = repeat(readRep);
emit({
  bench: "iommu-core",
  name: "mem_read64",
  ns_per_op: r.ns,
  ops: N,
  min_ns: r.min,
  max_ns: r.max,
  checksum: expectedRead,
});
for (const [name, rep] of [
  ["mem_read64_l1", readHotRep],
  ["u32_read64_l1", plainHotRep],
] as const) {
  const h = repeat(rep);
  emit({
    bench: "iommu-core",
    name,
    ns_per_op: h.ns,
    ops: N,
    min_ns: h.min,
    max_ns: h.max,
    checksum: expectedHot,
  });
}
const w = repeat(writeRep);
emit({
  bench: "iommu-core",
  name: "mem_write64",
  ns_per_op: w.ns,
  ops: N,
  min_ns: w.min,
  max_ns: w.max,
});
if (sink === 0.5) process.stderr.write("unreachable\n");
