// The oracle on VT-d: the default scenario passes without injections on several seeds, and each
// injected driver bug is caught with the right diagnosis (the stale cache, the missing
// invalidation, the ID and its history).

import { describe, expect, it } from "vitest";
import type { Violation } from "../src/oracle/violation.js";
import { runScenario } from "../src/scenario.js";
import { vtdDefaultScenario } from "../src/scenarios/vtd-default.js";

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
