// What does a PASID cost through IoasidSpace, uncharged (in-kernel DMA) and charged to a user's
// node two levels below the root (SVA)? Same churn as ida_churn: 100,000 live PASIDs in a 20-bit
// space, then 1,000,000 times free a random one and allocate the lowest free.

import { emit, fail, nowNs, repeat, xorshift32 } from "../../../scripts/bench-kit.js";
import { type ChargeNode, ChargeTree, IoasidSet, IoasidSpace } from "../src/index.js";

const LIVE = 100_000;
const N = 1_000_000;
const PASID_MAX = (1 << 20) - 1;

const idx = new Int32Array(N);
const xs = xorshift32(0x9e3779b9);
for (let t = 0; t < N; t++) idx[t] = xs() % LIVE;
const live = new Int32Array(LIVE);
const priv = { owner: "bench" };
let sink = 0;

function churn(charged: boolean): number {
  const charges = new ChargeTree({ capacity: 1 << 20 });
  const user = charges.createNode(charges.root, "user", LIVE);
  const job = typeof user === "string" ? user : charges.createNode(user, "job");
  if (typeof job === "string") fail(`createNode: ${job}`);
  const node: ChargeNode | undefined = charged ? job : undefined;
  const space = new IoasidSpace<typeof priv>({ charges });
  const set = new IoasidSet(charged ? "sva" : "dma-api");
  for (let k = 0; k < LIVE; k++) {
    const id = space.alloc(set, 1, PASID_MAX, priv, node);
    if (typeof id !== "number") fail(`alloc: ${id}`);
    live[k] = id;
  }
  let sum = 0;
  const t0 = nowNs();
  for (let t = 0; t < N; t++) {
    const slot = idx[t];
    space.free(live[slot]);
    const id = space.alloc(set, 1, PASID_MAX, priv, node) as number;
    live[slot] = id;
    sum += id;
  }
  const t1 = nowNs();
  sink += sum;
  if (space.size() !== LIVE || job.current !== (charged ? LIVE : 0)) fail("bad state after churn");
  return (t1 - t0) / N;
}

for (const charged of [false, true]) {
  const r = repeat(() => churn(charged));
  emit({
    bench: "ioasid",
    name: charged ? "ioasid_churn_charged" : "ioasid_churn",
    ns_per_op: r.ns,
    ops: N,
    min_ns: r.min,
    max_ns: r.max,
    unit: "free+alloc pair",
  });
}
if (sink === -1) process.stderr.write("unreachable\n");
