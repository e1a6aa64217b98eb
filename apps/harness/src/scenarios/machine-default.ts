// The default scenario, on VT-d and on SMMUv3: four PCI devices behind one IOMMU (a
// scalable-mode unit, or an SMMU) doing DMA-API traffic, kernel DMA at a PASID, user domains at
// PASIDs fed to a work-queue device, page faults served through the page request queue, domain
// and PASID turnover, and a seeded random mix; the oracle checks every DMA page, and every
// removal is followed by a DMA that must fault.

import {
  type Device,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_OK,
  DMA_PAGE_REQUESTED,
  DMA_TO_DEVICE,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_PAGE_RESP_SUCCESS,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuDevEnableFeature,
  iopfGroupResponse,
  NO_PASID,
} from "@iommu-sim/iommu-core";
import type { DeviceSpec, DmaBuffer, Harness, MachineSpec } from "../machine/harness.js";
import { SmmuHarness, type SmmuInjection } from "../machine/smmu-harness.js";
import { VtdHarness, type VtdInjection } from "../machine/vtd-harness.js";
import type { Scenario, ScenarioContext } from "../scenario.js";

const PAGE = 4096;

/** The devices of the default scenario (behind an SMMU, the requester ID is the StreamID). */
const DEFAULT_DEVICES: readonly DeviceSpec[] = [
  { name: "nic0", rid: 0x0008 },
  { name: "nvme0", rid: 0x0010, pasidBits: 8, ats: true },
  { name: "accel0", rid: 0x0018, pasidBits: 16, ats: true, pri: true },
  { name: "wq0", rid: 0x0020, pasidBits: 20, ats: true, kind: "work-queue" },
];

/** The machine of the default VT-d scenario. */
export const VTD_DEFAULT_MACHINE: MachineSpec = {
  units: [{ name: "dmar0" }],
  devices: DEFAULT_DEVICES,
};

/** The machine of the default SMMUv3 scenario. */
export const SMMU_DEFAULT_MACHINE: MachineSpec = {
  units: [{ name: "smmu0" }],
  devices: DEFAULT_DEVICES,
};

/**
 * What every harness scenario uses: `check` records a check and returns whether it passed; `dev`
 * is a device the scenario plugged in, by name.
 */
export function scenarioKit(
  h: Harness,
  ctx: ScenarioContext,
): {
  check: (name: string, ok: boolean, message: string) => boolean;
  dev: (name: string) => Device;
} {
  return {
    check(name, ok, message) {
      ctx.check(name, ok, message);
      return ok;
    },
    dev(name) {
      const d = h.devices.get(name);
      if (d === undefined) throw new Error(`no device ${name}`);
      return d;
    },
  };
}

/** Run the default scenario on `h` (either architecture), reporting checks to `ctx`. */
export function runMachineDefault(h: Harness, ctx: ScenarioContext): void {
  const prng = h.m.prng;
  const { check, dev } = scenarioKit(h, ctx);
  const dmaOk = (
    d: Device,
    pasid: number,
    iova: number,
    size: number,
    write: boolean,
    what: string,
  ) => {
    const st = h.dma(d, pasid, iova, size, write);
    ctx.countDma();
    return check(
      what,
      st === DMA_OK,
      `${d.name}: ${write ? "write" : "read"} at 0x${iova.toString(16)}: status ${st}`,
    );
  };
  const dmaFaults = (d: Device, pasid: number, iova: number, write: boolean, what: string) => {
    const st = h.dma(d, pasid, iova, 8, write);
    ctx.countDma();
    if (st !== DMA_OK) ctx.countFault();
    return check(
      what,
      st !== DMA_OK,
      `${d.name}: DMA at 0x${iova.toString(16)} after its removal succeeded`,
    );
  };

  for (const spec of DEFAULT_DEVICES) {
    const d = h.addDevice(spec);
    ctx.countOp();
    if (!check("probe", typeof d !== "string", `${spec.name}: probe failed: ${String(d)}`)) return;
  }
  const nic = dev("nic0");
  const nvme = dev("nvme0");
  const accel = dev("accel0");
  const wq = dev("wq0");

  // 1. DMA-API buffers: reads see the CPU's bytes, writes land, directions hold, unmaps fault.
  for (const d of [nic, nvme, accel]) {
    for (let i = 0; i < 6; i++) {
      const size = 8 + prng.below(3 * PAGE);
      const dir = [DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL][prng.below(3)] as number;
      const b = h.dmaMap(d, size, dir);
      ctx.countOp();
      if (
        !check("dma-map", typeof b !== "string", `${d.name}: map: ${String(b)}`) ||
        typeof b === "string"
      )
        return;
      const bytes = new Uint8Array(size);
      for (let k = 0; k < size; k++) bytes[k] = prng.nextU32() & 0xff;
      if (dir !== DMA_FROM_DEVICE) {
        h.m.mem.writeBytes(b.pa, bytes);
        const got = new Uint8Array(size);
        const st = h.deviceRead(d, NO_PASID, b.dma, got);
        ctx.countDma();
        check(
          "dma-read",
          st === DMA_OK && equal(got, bytes),
          `${d.name}: read of a mapped buffer: ${st}`,
        );
      }
      if (dir !== DMA_TO_DEVICE) {
        const st = h.deviceWrite(d, NO_PASID, b.dma, bytes);
        ctx.countDma();
        const host = new Uint8Array(size);
        h.m.mem.readBytes(b.pa, host);
        check(
          "dma-write",
          st === DMA_OK && equal(host, bytes),
          `${d.name}: write to a mapped buffer: ${st}`,
        );
      } else {
        const st = h.dma(d, NO_PASID, b.dma, 1, true);
        ctx.countDma();
        if (st !== DMA_OK) ctx.countFault();
        check("dma-direction", st !== DMA_OK, `${d.name}: write to a to-device buffer succeeded`);
      }
      h.dmaUnmap(b);
      ctx.countOp();
      dmaFaults(d, NO_PASID, b.dma, false, "dma-after-unmap");
    }
  }

  // 2. Kernel DMA at a PASID (ENQCMDS work) with the default domain attached there.
  const kp = h.dmaPasidEnable(accel);
  ctx.countOp();
  if (
    check("dma-pasid", typeof kp === "number", `accel0: enable PASID: ${String(kp)}`) &&
    typeof kp === "number"
  ) {
    const b = h.dmaMap(accel, 2 * PAGE, DMA_BIDIRECTIONAL);
    if (typeof b !== "string") {
      dmaOk(accel, kp, b.dma, 2 * PAGE, true, "dma-pasid-write");
      dmaOk(accel, kp, b.dma, 2 * PAGE, false, "dma-pasid-read");
      h.dmaUnmap(b);
      dmaFaults(accel, kp, b.dma, false, "dma-pasid-after-unmap");
    }
  }

  // 3. A user domain at a PASID of the work-queue device: a ring of descriptors and buffers.
  const d1 = h.domainAlloc(wq, "paging");
  const p1 = h.pasidAlloc(wq, "wq0 user context");
  ctx.countOp(2);
  if (typeof d1 === "string" || typeof p1 === "string") {
    check("user-domain", false, `wq0: domain ${String(d1)}, PASID ${String(p1)}`);
    return;
  }
  check("pasid-attach", h.pasidAttach(wq, p1, d1) === 0, "wq0: attach at a PASID failed");
  const ring = 0x10_0000;
  const src = 0x20_0000;
  const dst = 0x30_0000;
  const ringPa = h.map(d1, ring, PAGE, IOMMU_READ | IOMMU_WRITE);
  const srcPa = h.map(d1, src, 16 * PAGE, IOMMU_READ);
  const dstPa = h.map(d1, dst, 16 * PAGE, IOMMU_READ | IOMMU_WRITE);
  ctx.countOp(3);
  if (typeof ringPa === "string" || typeof srcPa === "string" || typeof dstPa === "string") {
    check("map", false, "wq0: mapping the ring and buffers failed");
    return;
  }
  for (let i = 0; i < 16; i++) {
    const at = ringPa + i * 32;
    h.m.mem.write64(at, src + i * PAGE, 0);
    h.m.mem.write64(at + 8, dst + i * PAGE, 0);
    h.m.mem.write32(at + 16, PAGE);
    for (let k = 0; k < PAGE; k += 4) h.m.mem.write32(srcPa + i * PAGE + k, (i << 24) | k);
  }
  const done = h.workQueue(wq, p1, ring, 16, PAGE);
  ctx.countDma(done * 4);
  check("work-queue", done === 16, `wq0: ${done} of 16 descriptors completed`);
  check(
    "work-queue-bytes",
    h.m.mem.read32(dstPa + 5 * PAGE + 64) === ((5 << 24) | 64),
    "wq0: copied bytes differ",
  );
  // Unmap one destination page: the device must no longer reach it.
  h.unmap(d1, dst, 16 * PAGE);
  ctx.countOp();
  dmaFaults(wq, p1, dst + 3 * PAGE, true, "pasid-dma-after-unmap");

  // 4. PASID teardown and reuse: detach, free, hand the number to another device and domain.
  check("pasid-detach", h.pasidDetach(wq, p1) === 0, "wq0: detach failed");
  check("pasid-free", h.pasidFree(p1) === 0, "wq0: PASID free failed");
  const d2 = h.domainAlloc(nvme, "paging");
  const p2 = h.pasidAlloc(nvme, "nvme0 user context");
  ctx.countOp(4);
  if (typeof d2 !== "string" && typeof p2 === "number") {
    check("pasid-attach", h.pasidAttach(nvme, p2, d2) === 0, "nvme0: attach at a PASID failed");
    const pa = h.map(d2, ring, PAGE, IOMMU_READ | IOMMU_WRITE);
    if (typeof pa === "number") dmaOk(nvme, p2, ring, 64, false, "pasid-reused-dma");
  }
  // The old context's PASID (and its ring) must be gone for wq0.
  dmaFaults(wq, p1, ring, false, "dma-after-pasid-detach");

  // 5. Domain-ID turnover: a domain at nic0's RID, then a new one at nvme0's RID.
  const d3 = h.domainAlloc(nic, "paging");
  ctx.countOp();
  if (typeof d3 !== "string") {
    const x = 0x40_0000;
    h.map(d3, x, 4 * PAGE, IOMMU_READ | IOMMU_WRITE);
    check("attach", h.attach(nic, d3) === 0, "nic0: attach failed");
    dmaOk(nic, NO_PASID, x, 4 * PAGE, false, "domain-dma");
    check("attach-default", h.attach(nic, "default") === 0, "nic0: back to default failed");
    dmaFaults(nic, NO_PASID, x, false, "dma-after-detach");
    const d4 = h.domainAlloc(nvme, "paging");
    ctx.countOp(3);
    if (typeof d4 !== "string") {
      h.map(d4, 0x80_0000, PAGE, IOMMU_READ);
      check("attach", h.attach(nvme, d4) === 0, "nvme0: attach failed");
      dmaFaults(nvme, NO_PASID, x, false, "new-domain-isolated");
      check("attach-default", h.attach(nvme, "default") === 0, "nvme0: back to default failed");
      h.domainFree(d4);
    }
    h.domainFree(d3);
  }

  // 5b. Other kinds of translation at nic0's RID: a second-stage (stage-2) table, then identity,
  // then back to its DMA domain; each change rewrites the device's entry in place.
  const d6 = h.domainAlloc(nic, "paging", "second");
  // Identity DMA reaches host memory at its own address: one below the frame pool, the same on
  // every machine (so two architectures' runs read the same bytes).
  const idf = 0x80_0000;
  for (let k = 0; k < 64; k += 4) h.m.mem.write32(idf + k, 0x1d000000 | k);
  ctx.countOp();
  if (typeof d6 !== "string") {
    const y = 0x50_0000;
    h.map(d6, y, 2 * PAGE, IOMMU_READ | IOMMU_WRITE);
    check("attach-second-stage", h.attach(nic, d6) === 0, "nic0: second-stage attach failed");
    dmaOk(nic, NO_PASID, y, 2 * PAGE, true, "second-stage-dma");
    check("attach-default", h.attach(nic, "default") === 0, "nic0: back to default failed");
    dmaFaults(nic, NO_PASID, y, false, "dma-after-second-stage-detach");
    const identity = h.domainAlloc(nic, "identity");
    if (typeof identity !== "string") {
      check("attach-identity", h.attach(nic, identity) === 0, "nic0: identity attach failed");
      dmaOk(nic, NO_PASID, idf, 64, false, "identity-dma");
      check("attach-default", h.attach(nic, "default") === 0, "nic0: back to default failed");
      dmaFaults(nic, NO_PASID, idf, false, "dma-after-identity-detach");
    }
    h.domainFree(d6);
    ctx.countOp(4);
  }

  // 6. Page faults: accel0 at a PASID whose domain maps pages on demand.
  const d5 = h.domainAlloc(accel, "paging");
  const p5 = h.pasidAlloc(accel, "accel0 demand paging");
  if (typeof d5 !== "string" && typeof p5 === "number") {
    check(
      "iopf-enable",
      iommuDevEnableFeature(accel, IOMMU_DEV_FEAT_IOPF) === 0,
      "accel0: IOPF enable failed",
    );
    d5.iopfHandler = (group) => {
      for (const f of group.faults) {
        const page = Math.floor(f.fault.addr / PAGE) * PAGE;
        h.map(d5 as IommuDomain, page, PAGE, IOMMU_READ | IOMMU_WRITE);
      }
      iopfGroupResponse(group, IOMMU_PAGE_RESP_SUCCESS);
      return 0;
    };
    check("pasid-attach", h.pasidAttach(accel, p5, d5) === 0, "accel0: attach failed");
    let served = 0;
    for (let i = 0; i < 8; i++) {
      const iova = 0x100_0000 + i * PAGE;
      let st = h.dma(accel, p5, iova, 64, true);
      ctx.countDma();
      if (st === DMA_PAGE_REQUESTED) {
        h.processQueues();
        st = h.dma(accel, p5, iova, 64, true);
        ctx.countDma();
        if (st === DMA_OK) served++;
      }
    }
    check("iopf", served === 8, `accel0: ${served} of 8 page faults served`);
  }

  // 7. A seeded random mix on nvme0's and accel0's DMA-API domains.
  const live: { b: DmaBuffer }[] = [];
  for (let i = 0; i < 400; i++) {
    const d = prng.below(2) === 0 ? nvme : accel;
    const r = prng.below(10);
    if (r < 4 || live.length === 0) {
      const b = h.dmaMap(d, 1 + prng.below(4 * PAGE), DMA_BIDIRECTIONAL);
      ctx.countOp();
      if (typeof b !== "string") live.push({ b });
    } else if (r < 8) {
      const { b } = live[prng.below(live.length)] as (typeof live)[number];
      dmaOk(b.dev, NO_PASID, b.dma, b.size, prng.below(2) === 0, "random-dma");
    } else {
      const k = prng.below(live.length);
      const { b } = live[k] as (typeof live)[number];
      live.splice(k, 1);
      dmaOk(b.dev, NO_PASID, b.dma, b.size, false, "random-dma");
      h.dmaUnmap(b);
      ctx.countOp();
      dmaFaults(b.dev, NO_PASID, b.dma, false, "random-dma-after-unmap");
    }
  }
  for (const { b } of live) h.dmaUnmap(b);

  // 8. Everything back; the oracle checks for leaks.
  h.processQueues();
  ctx.snapshot(h.m.mem, h.snapshotRegisters());
  h.teardown();
  ctx.countOp();
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * A scenario run on a harness: `make` builds the harness for a seed and the bug `--inject` names,
 * `body` runs on it; the run records DMA outcomes when the comparison of architectures asks, and
 * hands the oracle's findings over.
 */
export function harnessScenario(
  name: string,
  arch: string,
  description: string,
  make: (seed: number, inject: string | null) => Harness,
  body: (h: Harness, ctx: ScenarioContext) => void,
): Scenario {
  return {
    name,
    arch,
    description,
    run(ctx: ScenarioContext): void {
      const h = make(ctx.seed, ctx.inject);
      if (ctx.traceListener !== null) h.m.trace.subscribe(ctx.traceListener);
      if (ctx.outcomes !== null) h.recordOutcomes();
      try {
        body(h, ctx);
      } catch (e) {
        // A violation may have let a device write where it must not (a stale translation into a
        // frame that is a process's page table now): what the model trips over then is the
        // violation's aftermath, reported with it. Without a violation a throw is a bug.
        if (h.oracle.stats.violations === 0) throw e;
        const why = e instanceof Error ? e.message : String(e);
        ctx.check(
          "run",
          false,
          `stopped after the oracle's violations wrecked the machine's memory: ${why}`,
        );
      }
      ctx.violations(h.oracle.violations, h.oracle.stats.violations);
      if (ctx.outcomes !== null && h.outcomes !== null) ctx.outcomes.push(...h.outcomes);
    },
  };
}

/** The default scenario on VT-d; `ctx.inject` names the driver step to skip. */
export const vtdDefaultScenario: Scenario = harnessScenario(
  "default",
  "vtd",
  "four devices on a scalable-mode VT-d unit: DMA API, kernel and user PASIDs, a work queue, page faults, ID turnover, a random mix; the oracle on every DMA",
  (seed, inject) => new VtdHarness(VTD_DEFAULT_MACHINE, seed, inject as VtdInjection | null),
  runMachineDefault,
);

/** The default scenario on SMMUv3; `ctx.inject` names the driver step to skip. */
export const smmuDefaultScenario: Scenario = harnessScenario(
  "default",
  "smmu",
  "the same four devices behind an SMMUv3: stage-1 DMA domains, CD tables for PASIDs, PRI page faults, ASID turnover, a random mix; the oracle on every DMA",
  (seed, inject) => new SmmuHarness(SMMU_DEFAULT_MACHINE, seed, inject as SmmuInjection | null),
  runMachineDefault,
);
