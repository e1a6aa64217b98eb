// How fast does the harness run VT-d and SMMUv3 end to end? dma_checked: 4 KiB DMAs with the
// oracle on (the IOMMU's cached answer, a fresh uncached walk and the owner's map compared for
// every page; goal: one million per second on one core), next to the same DMAs unchecked.
// map_unmap_driver: one 4 KiB map + unmap through the driver, the unmap's invalidation going round
// the queue with a wait descriptor (VT-d) or a CMD_SYNC (SMMUv3), for each kind of domain.

import { SmmuMachine } from "@iommu-sim/arm-smmu/testing";
import { VtdMachine } from "@iommu-sim/intel-vtd/testing";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuAttachDevice,
  iommuMap,
  iommuPagingDomainAlloc,
  iommuUnmap,
  NO_PASID,
} from "@iommu-sim/iommu-core";
import { emit, fail, nowNs, repeat, xorshift32 } from "../../../scripts/bench-kit.js";
import type { Harness } from "../src/machine/harness.js";
import { SmmuHarness } from "../src/machine/smmu-harness.js";
import { VtdHarness } from "../src/machine/vtd-harness.js";

const PAGE = 4096;
const PAGES = 4096;
const DMAS = 200_000;
const IOVA0 = 0x1000_0000;

function dmaMachine(arch: "vtd" | "smmu"): { h: Harness; domain: IommuDomain } {
  const spec = {
    units: [{ name: arch === "vtd" ? "dmar0" : "smmu0" }],
    devices: [{ name: "nic0", rid: 0x0008 }],
    memory: 512 * 2 ** 20,
  };
  const h = arch === "vtd" ? new VtdHarness(spec, 1) : new SmmuHarness(spec, 1);
  const dev = h.addDevice({ name: "nic0", rid: 0x0008 });
  if (typeof dev === "string") fail(`probe: ${dev}`);
  const domain = h.domainAlloc(dev, "paging");
  if (typeof domain === "string") fail(`domain: ${domain}`);
  if (h.map(domain, IOVA0, PAGES * PAGE, IOMMU_READ | IOMMU_WRITE) === "ENOMEM") fail("map");
  if (h.attach(dev, domain) !== 0) fail("attach");
  return { h, domain };
}

function benchDma(arch: "vtd" | "smmu", checked: boolean): void {
  const { h } = dmaMachine(arch);
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
    name: `${checked ? "dma_checked" : "dma_unchecked"}${arch === "vtd" ? "" : "_smmu"}`,
    arch,
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

/**
 * One 4 KiB map + unmap through the driver, the unmap's IOTLB and device-TLB invalidations and
 * their wait going round the queue. `checked`: on the harness, with the oracle watching (its
 * shadow map, the entry watch and the invalidation log); else on a bare VtdMachine.
 */
function benchMapUnmap(stage: "first" | "second", checked: boolean): void {
  let frames: { alloc(order: number): number | string };
  let qiWaits: () => number;
  let map: (iova: number, pa: number) => number;
  let unmap: (iova: number) => number;
  if (checked) {
    const h = new VtdHarness(
      { units: [{ name: "dmar0" }], devices: [{ name: "nic0", rid: 0x0008, ats: true }] },
      1,
    );
    const dev = h.addDevice({ name: "nic0", rid: 0x0008, ats: true });
    if (typeof dev === "string") fail(`probe: ${dev}`);
    const d = h.domainAlloc(dev, "paging", stage);
    if (typeof d === "string") fail(`domain: ${d}`);
    if (h.attach(dev, d) !== 0) fail("attach");
    frames = h.m.frames;
    qiWaits = () => h.m.driver.units[0]?.qi?.stats.waits ?? 0;
    map = (iova, pa) => {
      const r = iommuMap(d, iova, pa, PAGE, IOMMU_READ | IOMMU_WRITE);
      h.oracle.mapped(d, iova, pa, PAGE, IOMMU_READ | IOMMU_WRITE);
      return r === 0 ? 0 : 1;
    };
    unmap = (iova) => {
      const seq = h.oracle.mark();
      const r = iommuUnmap(d, iova, PAGE);
      h.oracle.unmapped(d, iova, PAGE, "unmap", false, seq);
      return r === PAGE ? 0 : 1;
    };
  } else {
    const m = new VtdMachine({ units: [{ name: "dmar0" }] });
    const dev = m.addDevice({ name: "nic0", rid: 0x0008, ats: true });
    if (typeof dev === "string") fail(`probe: ${dev}`);
    m.driver.firstStage = stage === "first";
    const d = iommuPagingDomainAlloc(dev);
    if (typeof d === "string") fail(`domain: ${d}`);
    if (iommuAttachDevice(d, dev) !== 0) fail("attach");
    frames = m.frames;
    qiWaits = () => m.driver.units[0]?.qi?.stats.waits ?? 0;
    map = (iova, pa) => (iommuMap(d, iova, pa, PAGE, IOMMU_READ | IOMMU_WRITE) === 0 ? 0 : 1);
    unmap = (iova) => (iommuUnmap(d, iova, PAGE) === PAGE ? 0 : 1);
  }
  const pa = frames.alloc(0) as number;
  const N = 50_000;
  const before = qiWaits();
  let bad = 0;
  const r = repeat(() => {
    const t0 = nowNs();
    for (let i = 0; i < N; i++) {
      const iova = IOVA0 + (i & 255) * PAGE;
      bad += map(iova, pa) === 0 ? 0 : 1;
      bad += unmap(iova);
    }
    return (nowNs() - t0) / N;
  });
  if (bad !== 0) fail(`${bad} map/unmap calls failed`);
  const waits = qiWaits() - before;
  if (waits < N) fail(`only ${waits} invalidation waits for ${N} unmaps`);
  emit({
    bench: "harness",
    name: `map_unmap_${checked ? "checked" : "driver"}${stage === "first" ? "" : "_ss"}`,
    ns_per_op: r.ns,
    min_ns: r.min,
    max_ns: r.max,
    ops: N,
    unit: `4 KiB iommu_map + iommu_unmap, ${stage}-stage domain, IOTLB + device-TLB invalidation and wait through the queue${checked ? ", under the oracle" : ""}`,
  });
}

/**
 * One 4 KiB map + unmap through the SMMUv3 driver on a bare SmmuMachine, stage 1 or stage 2 (an
 * SMMU without stage 1, where Linux's paging domains are stage 2), with an ATS device: the
 * unmap's TLBI_NH_VA (TLBI_S2_IPA) and CMD_SYNC, then ATC_INV and CMD_SYNC.
 */
function benchMapUnmapSmmu(stage: "first" | "second"): void {
  const m = new SmmuMachine({ smmus: [{ features: { s1p: stage === "first" } }] });
  const dev = m.addDevice({ name: "nic0", rid: 0x0008, ats: true });
  if (typeof dev === "string") fail(`probe: ${dev}`);
  const d = iommuPagingDomainAlloc(dev);
  if (typeof d === "string") fail(`domain: ${d}`);
  if (iommuAttachDevice(d, dev) !== 0) fail("attach");
  const hw = m.smmus[0]?.hw;
  if (hw === undefined) fail("no SMMU");
  const pa = m.frames.alloc(0) as number;
  const N = 50_000;
  const before = hw.stats.syncs;
  let bad = 0;
  const r = repeat(() => {
    const t0 = nowNs();
    for (let i = 0; i < N; i++) {
      const iova = IOVA0 + (i & 255) * PAGE;
      bad += iommuMap(d, iova, pa, PAGE, IOMMU_READ | IOMMU_WRITE) === 0 ? 0 : 1;
      bad += iommuUnmap(d, iova, PAGE) === PAGE ? 0 : 1;
    }
    return (nowNs() - t0) / N;
  });
  if (bad !== 0) fail(`${bad} map/unmap calls failed`);
  const syncs = hw.stats.syncs - before;
  if (syncs < 2 * N) fail(`only ${syncs} CMD_SYNCs for ${N} unmaps`);
  emit({
    bench: "harness",
    name: `map_unmap_driver_smmu${stage === "first" ? "" : "_s2"}`,
    arch: "smmu",
    ns_per_op: r.ns,
    min_ns: r.min,
    max_ns: r.max,
    ops: N,
    unit: `4 KiB iommu_map + iommu_unmap, stage-${stage === "first" ? 1 : 2} domain, TLB invalidation + CMD_SYNC, ATC_INV + CMD_SYNC`,
  });
}

/** The stage-1 SMMUv3 map + unmap under the oracle (shadow, command log, hitless watch). */
function benchMapUnmapCheckedSmmu(): void {
  const h = new SmmuHarness(
    { units: [{ name: "smmu0" }], devices: [{ name: "nic0", rid: 0x0008, ats: true }] },
    1,
  );
  const dev = h.addDevice({ name: "nic0", rid: 0x0008, ats: true });
  if (typeof dev === "string") fail(`probe: ${dev}`);
  const d = h.domainAlloc(dev, "paging");
  if (typeof d === "string") fail(`domain: ${d}`);
  if (h.attach(dev, d) !== 0) fail("attach");
  const hw = h.m.smmus[0]?.hw;
  if (hw === undefined) fail("no SMMU");
  const pa = h.m.frames.alloc(0) as number;
  const N = 50_000;
  const before = hw.stats.syncs;
  let bad = 0;
  const r = repeat(() => {
    const t0 = nowNs();
    for (let i = 0; i < N; i++) {
      const iova = IOVA0 + (i & 255) * PAGE;
      bad += iommuMap(d, iova, pa, PAGE, IOMMU_READ | IOMMU_WRITE) === 0 ? 0 : 1;
      h.oracle.mapped(d, iova, pa, PAGE, IOMMU_READ | IOMMU_WRITE);
      const seq = h.oracle.mark();
      bad += iommuUnmap(d, iova, PAGE) === PAGE ? 0 : 1;
      h.oracle.unmapped(d, iova, PAGE, "unmap", false, seq);
    }
    return (nowNs() - t0) / N;
  });
  if (bad !== 0) fail(`${bad} map/unmap calls failed`);
  if (hw.stats.syncs - before < 2 * N) fail("too few CMD_SYNCs");
  if (h.oracle.stats.violations !== 0) fail("the oracle reported violations");
  emit({
    bench: "harness",
    name: "map_unmap_checked_smmu",
    arch: "smmu",
    ns_per_op: r.ns,
    min_ns: r.min,
    max_ns: r.max,
    ops: N,
    unit: "4 KiB iommu_map + iommu_unmap, stage-1 domain, TLBI + ATC_INV with their CMD_SYNCs, under the oracle",
  });
}

benchDma("vtd", true);
benchDma("vtd", false);
benchMapUnmap("first", false);
benchMapUnmap("second", false);
benchMapUnmap("first", true);
benchDma("smmu", true);
benchDma("smmu", false);
benchMapUnmapSmmu("first");
benchMapUnmapSmmu("second");
benchMapUnmapCheckedSmmu();
