// How fast does shared virtual addressing run end to end? sva_fault_roundtrip: one device page
// request on a page the process never touched → the IOMMU's page request queue → IOPF → the SVA
// handler's mm fault (a frame mapped into the CPU page table) → the page response back through the
// queue → the device's retry succeeding. sva_dma_checked: 4 KiB DMAs at a process's PASID through
// its own CPU page table, every page checked by the oracle against the process's address space.

import { type Device, DMA_OK, DMA_PAGE_REQUESTED } from "@iommu-sim/iommu-core";
import { PROT_READ, PROT_WRITE } from "@iommu-sim/sva";
import { emit, fail, nowNs, repeat, xorshift32 } from "../../../scripts/bench-kit.js";
import type { Harness } from "../src/machine/harness.js";
import { SmmuHarness } from "../src/machine/smmu-harness.js";
import type { SvaProcess } from "../src/machine/sva-world.js";
import { VtdHarness } from "../src/machine/vtd-harness.js";

const PAGE = 4096;
const FAULTS = 2000;
const PAGES = 4096;
const DMAS = 200_000;

function machine(arch: "vtd" | "smmu"): { h: Harness; dev: Device; p: SvaProcess; pasid: number } {
  const spec = {
    units: [{ name: "iommu0" }],
    devices: [],
    memory: 1024 * 2 ** 20,
  };
  const h = arch === "vtd" ? new VtdHarness(spec, 1) : new SmmuHarness(spec, 1);
  const dev = h.addDevice({ name: "accel0", rid: 0x18, pasidBits: 20, ats: true, pri: true });
  if (typeof dev === "string") fail(`probe: ${dev}`);
  const p = h.sva.processCreate("proc");
  if (typeof p === "string") fail(`process: ${p}`);
  const pasid = h.sva.bind(dev, p);
  if (typeof pasid === "string") fail(`bind: ${pasid}`);
  return { h, dev, p, pasid };
}

function benchFaults(arch: "vtd" | "smmu"): void {
  const { h, dev, p, pasid } = machine(arch);
  dev.observer = null;
  const buf = new Uint8Array(8);
  let bad = 0;
  const r = repeat(() => {
    const va = h.sva.mmap(p, FAULTS * PAGE, PROT_READ | PROT_WRITE);
    if (typeof va === "string") fail(`mmap: ${va}`);
    const t0 = nowNs();
    for (let i = 0; i < FAULTS; i++) {
      const at = va + i * PAGE;
      if (dev.write(at, buf, pasid) !== DMA_PAGE_REQUESTED) bad++;
      h.m.processQueues();
      if (dev.write(at, buf, pasid) !== DMA_OK) bad++;
    }
    const ns = (nowNs() - t0) / FAULTS;
    h.sva.munmap(p, va, FAULTS * PAGE);
    return ns;
  });
  if (bad !== 0) fail(`${bad} page requests went wrong`);
  emit({
    bench: "sva",
    name: `sva_fault_roundtrip${arch === "vtd" ? "" : "_smmu"}`,
    arch,
    ns_per_op: r.ns,
    min_ns: r.min,
    max_ns: r.max,
    ops: FAULTS,
    unit: "device page request → page request queue → IOPF → mm fault → page response → retry",
  });
}

function benchDma(arch: "vtd" | "smmu"): void {
  const { h, dev, p, pasid } = machine(arch);
  const va = h.sva.mmap(p, PAGES * PAGE, PROT_READ | PROT_WRITE);
  if (typeof va === "string") fail(`mmap: ${va}`);
  // The process touches its buffer: every page present before the device reads it.
  if (h.sva.cpuWrite(p, va, new Uint8Array(PAGES * PAGE)) !== 0) fail("cpu write");
  const buf = new Uint8Array(PAGE);
  const next = xorshift32(0x9e3779b9);
  const vas = new Float64Array(DMAS);
  for (let i = 0; i < DMAS; i++) vas[i] = va + (next() % PAGES) * PAGE;
  let bad = 0;
  const r = repeat(() => {
    const t0 = nowNs();
    for (let i = 0; i < DMAS; i++) bad += dev.read(vas[i] as number, buf, pasid);
    return (nowNs() - t0) / DMAS;
  });
  if (bad !== 0) fail(`${bad} DMAs failed`);
  if (h.oracle.stats.violations !== 0) fail("the oracle found violations");
  emit({
    bench: "sva",
    name: `sva_dma_checked${arch === "vtd" ? "" : "_smmu"}`,
    arch,
    ns_per_op: r.ns,
    min_ns: r.min,
    max_ns: r.max,
    ops: DMAS,
    dmas_per_second: Math.round(1e9 / r.ns),
    unit: "4 KiB DMA at a process PASID through the CPU page table, checked by the oracle",
  });
}

const only = process.argv[2];
const all: Record<string, () => void> = {
  sva_fault_roundtrip: () => benchFaults("vtd"),
  sva_fault_roundtrip_smmu: () => benchFaults("smmu"),
  sva_dma_checked: () => benchDma("vtd"),
  sva_dma_checked_smmu: () => benchDma("smmu"),
};
for (const [name, run] of Object.entries(all)) if (only === undefined || only === name) run();
