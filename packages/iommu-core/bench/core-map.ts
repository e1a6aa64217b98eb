// What does a page cost through the whole generic layer? iommuMap / iommuUnmap on a mock paging
// domain attached to a device, so every unmap walks the domain's cache tags and invalidates the
// mock IOTLB through its registers: core_map_4k, core_unmap_4k (ns per 4 KiB page, flush included)
// and core_map_2m (ns per 2 MiB page). Beside them the same maps through MockPgtable alone
// (pt_map_4k in bench/pgtable.ts) show what the layer adds.

import { emit, fail, nowNs, repeat } from "../../../scripts/bench-kit.js";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  iommuAttachDevice,
  iommuDomainFree,
  iommuMap,
  iommuPagingDomainAlloc,
  iommuUnmap,
} from "../src/index.js";
import { MockMachine } from "../src/testing/index.js";

const N4K = 200_000;
const N2M = 10_000;
const IOVA_4K = 0x1_0000_0000;
const PA_4K = 0x80_0000_0000;
const IOVA_2M = 0x40_0000_0000;
const PA_2M = 0x100_0000_0000;
const SZ_4K = 4096;
const SZ_2M = 2 * 1024 * 1024;
const PROT = IOMMU_READ | IOMMU_WRITE;

function machine() {
  const m = new MockMachine({ paBits: 48, framesSize: 64 * 2 ** 20 });
  const dev = m.addDevice({ name: "bench0", rid: 0x100 });
  if (typeof dev === "string") fail(`device: ${dev}`);
  const domain = iommuPagingDomainAlloc(dev);
  if (typeof domain === "string") fail(`domain: ${domain}`);
  const ret = iommuAttachDevice(domain, dev);
  if (ret !== 0) fail(`attach: ${ret}`);
  return { m, dev, domain };
}

/** One repetition of map + unmap of N4K pages, one call per page. */
function rep4k(): [number, number] {
  const { m, domain } = machine();
  let sum = 0;
  const t0 = nowNs();
  for (let i = 0; i < N4K; i++)
    sum += iommuMap(domain, IOVA_4K + i * SZ_4K, PA_4K + i * SZ_4K, SZ_4K, PROT) as number;
  const t1 = nowNs();
  for (let i = 0; i < N4K; i++) sum += iommuUnmap(domain, IOVA_4K + i * SZ_4K, SZ_4K) as number;
  const t2 = nowNs();
  if (sum !== N4K * SZ_4K) fail(`4k: sum ${sum}`);
  if (m.hw.stats.invalidations < N4K) fail("unmaps did not invalidate");
  iommuDomainFree(domain);
  return [(t1 - t0) / N4K, (t2 - t1) / N4K];
}

function rep2m(): number {
  const { domain } = machine();
  let sum = 0;
  const t0 = nowNs();
  for (let i = 0; i < N2M; i++)
    sum += iommuMap(domain, IOVA_2M + i * SZ_2M, PA_2M + i * SZ_2M, SZ_2M, PROT) as number;
  const t1 = nowNs();
  if (sum !== 0) fail(`2m: sum ${sum}`);
  iommuDomainFree(domain);
  return (t1 - t0) / N2M;
}

const unmapNs: number[] = [];
const map = repeat(() => {
  const [m, u] = rep4k();
  unmapNs.push(u);
  return m;
});
emit({
  bench: "iommu-core",
  name: "core_map_4k",
  ns_per_op: map.ns,
  ops: N4K,
  min_ns: map.min,
  max_ns: map.max,
});
const timedUnmaps = unmapNs.slice(-5).sort((a, b) => a - b);
emit({
  bench: "iommu-core",
  name: "core_unmap_4k",
  ns_per_op: timedUnmaps[2],
  ops: N4K,
  min_ns: timedUnmaps[0],
  max_ns: timedUnmaps[4],
});
const m2 = repeat(rep2m);
emit({
  bench: "iommu-core",
  name: "core_map_2m",
  ns_per_op: m2.ns,
  ops: N2M,
  min_ns: m2.min,
  max_ns: m2.max,
});
