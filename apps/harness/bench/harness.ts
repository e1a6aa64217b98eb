// How fast does the harness run VT-d end to end? dma_checked: 4 KiB DMAs with the oracle on (the
// unit's cached answer, a fresh uncached walk and the owner's map compared for every page; goal:
// one million per second on one core), next to the same DMAs unchecked. map_unmap_driver: one
// 4 KiB map + unmap through the driver, the unmap's invalidation going round the queue with a wait
// descriptor, for first- and second-stage domains.

import {
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuMap,
  iommuUnmap,
  NO_PASID,
} from "@iommu-sim/iommu-core";
import { emit, fail, nowNs, repeat, xorshift32 } from "../../../scripts/bench-kit.js";
import { VtdHarness } from "../src/machine/vtd-harness.js";

const PAGE = 4096;
const PAGES = 4096;
const DMAS = 200_000;
const IOVA0 = 0x1000_0000;

function dmaMachine(): { h: VtdHarness; domain: IommuDomain } {
  const h = new VtdHarness(
    { units: [{ name: "dmar0" }], devices: [{ name: "nic0", rid: 0x0008 }], memory: 512 * 2 ** 20 },
    1,
  );
  const dev = h.addDevice({ name: "nic0", rid: 0x0008 });
  if (typeof dev === "string") fail(`probe: ${dev}`);
  const domain = h.domainAlloc(dev, "paging");
  if (typeof domain === "string") fail(`domain: ${domain}`);
  if (h.map(domain, IOVA0, PAGES * PAGE, IOMMU_READ | IOMMU_WRITE) === "ENOMEM") fail("map");
  if (h.attach(dev, domain) !== 0) fail("attach");
  return { h, domain };
}

function benchDma(checked: boolean): void {
  const { h } = dmaMachine();
  const dev = h.devices.get("nic0");
  if (dev === undefined) fail("no device");
  if (!checked) dev.observer = null;
  const buf = new Uint8Array(PAGE);
  const next = xorshift32(0x9e3779b9);
  const iovas = new Float64Array(DMAS);
  for (let i = 0; i < DMAS; i++) iovas[i] = IOVA0 + (next() % PAGES) * PAGE;
  let bad = 0;
  const r = repeat(() => {
    const t0 = nowNs();
    for (let i = 0; i < DMAS; i++) bad += dev.read(iovas[i] as number, buf, NO_PASID);
    return (nowNs() - t0) / DMAS;
  });
  if (bad !== 0) fail(`${bad} DMAs failed`);
  if (checked && h.oracle.stats.violations !== 0) fail("the oracle reported violations");
  if (checked && h.oracle.stats.pages < DMAS) fail("the oracle did not check every page");
  emit({
    bench: "harness",
    name: checked ? "dma_checked" : "dma_unchecked",
    ns_per_op: r.ns,
    min_ns: r.min,
    max_ns: r.max,
    ops: DMAS,
    dmas_per_second: Math.round(1e9 / r.ns),
    unit: checked
      ? "4 KiB device read, oracle on (fresh walk + shadow per page)"
      : "4 KiB device read, oracle off",
  });
}

function benchMapUnmap(stage: "first" | "second"): void {
  const h = new VtdHarness(
    { units: [{ name: "dmar0" }], devices: [{ name: "nic0", rid: 0x0008, ats: true }] },
    1,
  );
  const dev = h.addDevice({ name: "nic0", rid: 0x0008, ats: true });
  if (typeof dev === "string") fail(`probe: ${dev}`);
  const domain = h.domainAlloc(dev, "paging", stage);
  if (typeof domain === "string") fail(`domain: ${domain}`);
  if (h.attach(dev, domain) !== 0) fail("attach");
  const pa = h.m.frames.alloc(0) as number;
  const N = 50_000;
  const qi = h.m.driver.units[0]?.qi;
  const before = qi?.stats.waits ?? 0;
  let bad = 0;
  const r = repeat(() => {
    const t0 = nowNs();
    for (let i = 0; i < N; i++) {
      const iova = IOVA0 + (i & 255) * PAGE;
      bad += iommuMap(domain, iova, pa, PAGE, IOMMU_READ | IOMMU_WRITE) === 0 ? 0 : 1;
      bad += iommuUnmap(domain, iova, PAGE) === PAGE ? 0 : 1;
    }
    return (nowNs() - t0) / N;
  });
  if (bad !== 0) fail(`${bad} map/unmap calls failed`);
  const waits = (qi?.stats.waits ?? 0) - before;
  if (waits < N) fail(`only ${waits} invalidation waits for ${N} unmaps`);
  emit({
    bench: "harness",
    name: stage === "first" ? "map_unmap_driver" : "map_unmap_driver_ss",
    ns_per_op: r.ns,
    min_ns: r.min,
    max_ns: r.max,
    ops: N,
    unit: `4 KiB iommu_map + iommu_unmap, ${stage}-stage domain, IOTLB + device-TLB invalidation and wait through the queue`,
  });
}

benchDma(true);
benchDma(false);
benchMapUnmap("first");
benchMapUnmap("second");
