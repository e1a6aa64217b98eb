// The oracle on VT-d: the default scenario passes without injections on several seeds, and each
// injected driver bug is caught with the right diagnosis (the stale cache, the missing
// invalidation, the ID and its history).

import {
  DMA_OK,
  DMA_PAGE_REQUESTED,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuDevEnableFeature,
  iommuMap,
  iommuMapNosync,
  iommuUnmap,
  NO_PASID,
} from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { VtdHarness } from "../src/machine/vtd-harness.js";
import type { Violation } from "../src/oracle/violation.js";
import { runScenario } from "../src/scenario.js";
import { vtdDefaultScenario } from "../src/scenarios/machine-default.js";

async function run(inject: string | null, seed = 1) {
  return runScenario(vtdDefaultScenario, seed, { inject });
}

function kinds(vs: readonly Violation[]): Set<string> {
  return new Set(vs.map((v) => v.kind));
}

describe("the default VT-d scenario", () => {
  it.each([1, 2, 0xdeadbeef])("passes every check with no violation (seed %i)", async (seed) => {
    const r = await run(null, seed);
    expect(r.failures).toEqual([]);
    expect(r.violations).toEqual([]);
    expect(r.violationsTotal).toBe(0);
    expect(r.dmas).toBeGreaterThan(300);
  });

  it("is deterministic: the same seed gives the same report", async () => {
    const a = await run("skip-iotlb-flush", 5);
    const b = await run("skip-iotlb-flush", 5);
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
  });
});

describe("injected driver bugs are caught with the right diagnosis", () => {
  it("skip-iotlb-flush: a stale IOTLB entry after unmap, and the PASID-based IOTLB invalidation that was missing", async () => {
    const r = await run("skip-iotlb-flush");
    const v = r.violations.find((x) => x.kind === "stale-translation");
    expect(v).toBeDefined();
    expect(v?.staleEntry?.cache).toBe("iotlb");
    expect(v?.staleEntry?.fields.kind).toBe("first-stage");
    expect(v?.missingInvalidation?.descriptor).toBe("PASID-based IOTLB invalidation (type 6)");
    expect(v?.missingInvalidation?.fields.G).toBe("page");
    // Nothing covered it during the unmap: missing, not too early.
    expect(v?.earlyInvalidation).toBeUndefined();
    expect(v?.message).toMatch(/; missing: PASID-based IOTLB invalidation \(type 6\)/);
    expect(v?.message).toMatch(/removed by dma_unmap\(nic0, 0x[0-9a-f]+\)/);
    expect(v?.dma?.expected).toBe("a fault (not mapped)");
    // Nothing else is wrong: teardown still flushes, so no ID is reused while cached.
    expect(kinds(r.violations)).toEqual(new Set(["stale-translation"]));
  });

  it("skip-pasid-cache-flush: a stale PASID-cache entry after the PASID was detached", async () => {
    const r = await run("skip-pasid-cache-flush");
    const v = r.violations.find((x) => x.kind === "stale-translation");
    expect(v?.staleEntry?.cache).toBe("pasid-cache");
    expect(v?.staleEntry?.fields.SID).toBe("0x20");
    expect(v?.missingInvalidation).toEqual({
      descriptor: "PASID-cache invalidation (type 7)",
      fields: { G: "PASID-selective", DID: v?.staleEntry?.fields.DID, PASID: v?.dma?.pasid },
    });
    expect(v?.message).toMatch(/SM_PASID_ENTRY_NOT_PRESENT/);
    const id = r.violations.find((x) => x.kind === "id-reuse" && x.id?.space === "pasid");
    expect(id?.missingInvalidation?.descriptor).toBe("PASID-cache invalidation (type 7)");
  });

  it("skip-devtlb-flush: a stale ATC entry, and the device-TLB invalidation that was missing", async () => {
    const r = await run("skip-devtlb-flush");
    const v = r.violations.find((x) => x.kind === "stale-translation");
    expect(v?.staleEntry?.cache).toBe("device-tlb");
    expect(v?.staleEntry?.where).toBe("nvme0");
    expect(v?.missingInvalidation?.descriptor).toBe("device-TLB invalidation (type 3)");
    expect(v?.missingInvalidation?.fields.SID).toBe("0x10");
    expect(kinds(r.violations)).toEqual(new Set(["stale-translation"]));
    expect(r.violations.every((x) => x.staleEntry?.cache === "device-tlb")).toBe(true);
  });

  it("early-pasid-free: the PASID went back to the allocator while caches held it, with its history", async () => {
    const r = await run("early-pasid-free");
    expect(kinds(r.violations)).toEqual(new Set(["id-reuse"]));
    const v = r.violations[0] as Violation;
    expect(v.id).toEqual({ space: "pasid", unit: null, value: 2 });
    expect(v.message).toMatch(/^PASID 2 freed while dmar0's PASID cache \(SID 0x20, DID \d+\)/);
    expect(v.missingInvalidation?.descriptor).toBe("PASID-cache invalidation (type 7)");
    const events = (v.history ?? []).map((e) => e.event);
    expect(events).toEqual([
      "allocated to wq0 user context",
      expect.stringMatching(/^attached wq0 to domain#\d+$/),
      "detached from wq0 (detach returned)",
      "freed",
    ]);
  });

  it("early-did-reuse: a domain ID freed while tagged entries remain, and another device then reaches the old domain's memory", async () => {
    const r = await run("early-did-reuse");
    const v = r.violations[0] as Violation;
    expect(v.kind).toBe("id-reuse");
    expect(v.id?.space).toBe("did");
    expect(v.id?.unit).toBe("dmar0");
    expect(v.message).toMatch(/^domain ID \d+ of dmar0 freed while \d+ IOTLB entries/);
    expect((v.history ?? []).map((e) => e.event.replace(/#\d+/, "#N"))).toEqual([
      "allocated to domain#N",
      "freed by domain#N",
    ]);
    // The reused ID lets nvme0 hit wq0's old translation.
    const leak = r.violations.find(
      (x) =>
        x.kind === "stale-translation" &&
        x.dma?.device === "nvme0" &&
        x.staleEntry?.cache === "iotlb",
    );
    expect(leak?.staleEntry?.fields.DID).toBe(v.id?.value);
  });
});

describe("checks beyond the injections", () => {
  const machine = (cachingMode = false) =>
    new VtdHarness(
      {
        units: [{ name: "dmar0", cachingMode }],
        devices: [{ name: "acc0", rid: 0x0018, pasidBits: 8, ats: true, pri: true }],
      },
      1,
    );

  it("spurious-fault: a map the unit never hears about under caching mode leaves a not-present IOTLB entry", () => {
    const h = machine(true);
    const dev = h.addDevice({ name: "acc0", rid: 0x0018, pasidBits: 8, ats: false });
    if (typeof dev === "string") throw new Error(dev);
    const d = h.domainAlloc(dev, "paging", "second") as IommuDomain;
    expect(h.attach(dev, d)).toBe(0);
    // A DMA to nothing: caching mode lets the unit cache the not-present answer.
    expect(h.dma(dev, NO_PASID, 0x40000, 8, false)).not.toBe(DMA_OK);
    // The owner maps the page, but without iotlb_sync_map (the flush caching mode needs).
    const pa = h.m.frames.alloc(0) as number;
    expect(iommuMapNosync(d, 0x40000, pa, 4096, IOMMU_READ | IOMMU_WRITE)).toBe(0);
    h.oracle.mapped(d, 0x40000, pa, 4096, IOMMU_READ | IOMMU_WRITE);
    expect(h.dma(dev, NO_PASID, 0x40000, 8, false)).not.toBe(DMA_OK);
    const v = h.oracle.violations.find((x) => x.kind === "spurious-fault");
    expect(v?.staleEntry).toMatchObject({
      cache: "iotlb",
      fields: { perm: "---", kind: "second-stage" },
    });
    expect(v?.missingInvalidation?.descriptor).toBe("IOTLB invalidation (type 2)");
    expect(v?.message).toMatch(
      /^acc0 read at 0x40000 faulted \(reason 0x6, NO_READ\)|^acc0 read at 0x40000 faulted/,
    );
    // With the sync, the same map is seen at once.
    expect(iommuUnmap(d, 0x40000, 4096)).toBe(4096);
    expect(iommuMap(d, 0x40000, pa, 4096, IOMMU_READ)).toBe(0);
    h.oracle.mapped(d, 0x40000, pa, 4096, IOMMU_READ);
    expect(h.dma(dev, NO_PASID, 0x40000, 8, false)).toBe(DMA_OK);
  });

  it("page-request: a response for a group the device never asked is reported", () => {
    const h = machine();
    const dev = h.addDevice({ name: "acc0", rid: 0x0018, pasidBits: 8, ats: true, pri: true });
    if (typeof dev === "string") throw new Error(dev);
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    // A response nobody asked for, straight through the invalidation queue.
    const unit = h.m.driver.units[0];
    unit?.qi?.addPageResponse(0x0018, 3, true, 0, 77, true);
    unit?.qi?.submit();
    h.teardown();
    expect(h.oracle.violations.map((v) => v.kind)).toEqual(["page-request"]);
    expect(h.oracle.violations[0]?.message).toMatch(
      /acc0: a page group response came for a group it had not asked/,
    );
  });

  it("page-request: every group of a demand-paged PASID is answered once (clean run)", () => {
    const h = machine();
    const dev = h.addDevice({ name: "acc0", rid: 0x0018, pasidBits: 8, ats: true, pri: true });
    if (typeof dev === "string") throw new Error(dev);
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    const d = h.domainAlloc(dev, "paging") as IommuDomain;
    // A handler that keeps every group: detaching answers them.
    d.iopfHandler = () => 0;
    const p = h.pasidAlloc(dev, "test") as number;
    expect(h.pasidAttach(dev, p, d)).toBe(0);
    expect(h.dma(dev, p, 0x9000, 8, true)).toBe(DMA_PAGE_REQUESTED);
    expect(dev.priOutstanding).toBe(1);
    h.teardown();
    expect(h.oracle.violations).toEqual([]);
  });

  it("lost-fault: fault records nobody reads overflow, and the overflow is reported", () => {
    const h = machine();
    const dev = h.addDevice({ name: "acc0", rid: 0x0018 });
    if (typeof dev === "string") throw new Error(dev);
    // DMAs straight from the device: no interrupt is serviced in between.
    const buf = new Uint8Array(8);
    for (let i = 0; i < 300; i++) dev.read(0x100000 + i * 4096, buf);
    h.teardown();
    const kinds = h.oracle.violations.map((v) => v.kind);
    expect(kinds).toContain("lost-fault");
    expect(h.oracle.violations.find((v) => v.kind === "lost-fault")?.message).toMatch(
      /dmar0: \d+ fault\(s\) lost: the fault recording registers were full \(PFO\)/,
    );
  });

  it("a lazy DMA-API unmap may stay cached until the flush queue flushes, not after", () => {
    const h = new VtdHarness(
      { units: [{ name: "dmar0" }], devices: [{ name: "nic0", rid: 0x0008 }], lazy: true },
      1,
    );
    const dev = h.addDevice({ name: "nic0", rid: 0x0008 });
    if (typeof dev === "string") throw new Error(dev);
    h.m.driver.inject.skipIotlbFlush = false;
    const b = h.dmaMap(dev, 4096, 0);
    if (typeof b === "string") throw new Error(b);
    expect(h.dma(dev, NO_PASID, b.dma, 8, false)).toBe(DMA_OK);
    h.dmaUnmap(b);
    // Still cached: tolerated while the flush queue holds the IOVA.
    expect(h.dma(dev, NO_PASID, b.dma, 8, false)).toBe(DMA_OK);
    expect(h.oracle.violations).toEqual([]);
    // The flush queue flushes (its timer), the stale entry is gone.
    h.m.clock.advance(20_000);
    expect(h.dma(dev, NO_PASID, b.dma, 8, false)).not.toBe(DMA_OK);
    expect(h.oracle.violations).toEqual([]);
  });
});
