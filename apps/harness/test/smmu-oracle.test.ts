// The harness on SMMUv3: the default scenario runs clean, each --inject is caught with the
// diagnosis a kernel developer needs, and one scenario on both architectures compares DMA by DMA.

import { CMDQ_OP } from "@iommu-sim/arm-smmu/format";
import { NO_PASID } from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { bothPassed, compareOutcomes, runBoth } from "../src/compare.js";
import type { DmaOutcome } from "../src/machine/harness.js";
import { SMMU_INJECTIONS, SmmuHarness, type SmmuInjection } from "../src/machine/smmu-harness.js";
import type { Violation } from "../src/oracle/violation.js";
import { runScenario } from "../src/scenario.js";
import {
  SMMU_DEFAULT_MACHINE,
  smmuDefaultScenario,
  vtdDefaultScenario,
} from "../src/scenarios/machine-default.js";

function run(seed: number, inject: SmmuInjection | null = null) {
  return runScenario(smmuDefaultScenario, seed, { inject });
}

function first(vs: readonly Violation[], kind: Violation["kind"]): Violation {
  const v = vs.find((x) => x.kind === kind);
  if (v === undefined) throw new Error(`no ${kind} among ${vs.map((x) => x.kind).join(", ")}`);
  return v;
}

describe("the default scenario on SMMUv3", () => {
  it.each([1, 2, 3])("passes every check with no violation (seed %i)", async (seed) => {
    const r = await run(seed);
    expect(r.failures).toEqual([]);
    expect(r.violations).toEqual([]);
    expect(r.arch).toBe("smmu");
    expect(r.dmas).toBeGreaterThan(400);
  });

  it("is deterministic: the same seed gives the same report", async () => {
    const a = await run(5);
    const b = await run(5);
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
  });
});

describe("--inject on SMMUv3: each planted driver bug is caught and diagnosed", () => {
  it("skip-tlbi: a stale TLB entry after an unmap, missing CMD_TLBI_NH_VA for its ASID and page", async () => {
    const r = await run(1, "skip-tlbi");
    const v = first(r.violations, "stale-translation");
    expect(v.staleEntry?.cache).toBe("tlb");
    expect(v.missingInvalidation?.descriptor).toBe("CMD_TLBI_NH_VA");
    expect(v.missingInvalidation?.fields).toMatchObject({ Leaf: 1 });
    expect(v.missingInvalidation?.fields.ASID).toBeGreaterThan(0);
    expect(v.message).toMatch(/removed by dma_unmap/);
  });

  it("skip-cfgi: a CD cached after its CD was cleared, missing CMD_CFGI_CD", async () => {
    const r = await run(1, "skip-cfgi");
    const stale = r.violations.filter(
      (v) => v.staleEntry?.cache === "cd-cache" || v.staleEntry?.cache === "ste-cache",
    );
    expect(stale.length).toBeGreaterThan(0);
    const missing = r.violations.map((v) => v.missingInvalidation?.descriptor);
    expect(missing).toContain("CMD_CFGI_CD");
  });

  it("skip-atc-inv: a stale ATC entry of the device, missing CMD_ATC_INV with its StreamID", async () => {
    const r = await run(1, "skip-atc-inv");
    const v = first(r.violations, "stale-translation");
    expect(v.staleEntry?.cache).toBe("atc");
    expect(v.missingInvalidation?.descriptor).toBe("CMD_ATC_INV");
    expect(v.missingInvalidation?.fields.SID).toMatch(/^0x/);
  });

  it("early-asid-reuse: the ASID freed while TLB entries carry it, with its history", async () => {
    const r = await run(1, "early-asid-reuse");
    const v = first(r.violations, "id-reuse");
    expect(v.id?.space).toBe("asid");
    expect(v.missingInvalidation?.descriptor).toBe("CMD_TLBI_NH_ASID");
    expect(v.history?.some((h) => /allocated to domain#/.test(h.event))).toBe(true);
    expect(v.message).toMatch(/freed while \d+ (TLB|walk-cache) entr/);
  });

  it("torn-ste-write: the STE seen between two stores is neither the old nor the new one", async () => {
    const r = await run(1, "torn-ste-write");
    const v = first(r.violations, "torn-update");
    expect(v.message).toMatch(/STE of StreamID 0x8/);
    expect(v.message).toMatch(/neither the old nor the new configuration|illegal/);
  });

  it("knows exactly the SMMU injections of issues 8 and 9", () => {
    expect(Object.keys(SMMU_INJECTIONS).sort()).toEqual(
      [
        "early-asid-reuse",
        "skip-atc-inv",
        "skip-cfgi",
        "skip-tlbi",
        "torn-ste-write",
        "skip-notifier-flush",
        "skip-atc-on-notifier",
        "free-pasid-on-unbind",
      ].sort(),
    );
  });
});

describe("the SMMU oracle's configuration check", () => {
  it("a PASID whose STE in memory has no stage 1 is aborted (C_BAD_SUBSTREAMID), whatever a stale cached STE holds", () => {
    const h = new SmmuHarness(SMMU_DEFAULT_MACHINE, 1);
    const nvme = h.addDevice({ name: "nvme0", rid: 0x10, pasidBits: 8, ats: true });
    if (typeof nvme === "string") throw new Error(nvme);
    const identity = h.domainAlloc(nvme, "identity");
    const d = h.domainAlloc(nvme, "paging");
    const p = h.pasidAlloc(nvme, "test");
    if (typeof identity === "string" || typeof d === "string" || typeof p === "string")
      throw new Error("setup");
    expect(h.attach(nvme, identity)).toBe(0);
    expect(h.pasidAttach(nvme, p, d)).toBe(0);
    // The CD-table STE (S1DSS bypass) gets cached; then CFGI_STE is lost, so detaching the last
    // PASID leaves it cached while memory holds the plain bypass STE.
    h.dma(nvme, NO_PASID, 0x1000, 8, false);
    const q = h.m.smmus[0]?.smmu.cmdq;
    if (q === undefined) throw new Error("no SMMU");
    const add = q.add.bind(q);
    q.add = () => (((q.w[0] as number) & 0xff) === CMDQ_OP.CFGI_STE ? 0 : add());
    expect(h.pasidDetach(nvme, p)).toBe(0);
    expect(h.m.smmus[0]?.hw.configCache.peekSte(0x10)?.s1).toBe(true);
    expect(h.oracle.violations.filter((v) => v.kind === "isolation")).toEqual([]);
  });
});

describe("one scenario, two architectures", () => {
  it.each([1, 7])(
    "the default scenario gives the same DMA outcomes on VT-d and SMMUv3 (seed %i)",
    async (seed) => {
      const r = await runBoth(vtdDefaultScenario, smmuDefaultScenario, seed);
      expect(r.runs.map((x) => x.arch)).toEqual(["vtd", "smmu"]);
      expect(r.compared).toBe(r.runs[0].dmas);
      expect(r.differences).toEqual([]);
      expect(bothPassed(r)).toBe(true);
    },
  );

  it("a driver bug on one side shows as DMAs that differ (a stale TLB lets a DMA through)", async () => {
    const r = await runBoth(vtdDefaultScenario, smmuDefaultScenario, 1, {
      inject: "skip-tlbi",
      injectArch: "smmu",
    });
    expect(r.runs[0].violationsTotal).toBe(0);
    expect(r.runs[1].violationsTotal).toBeGreaterThan(0);
    expect(r.differencesTotal).toBeGreaterThan(0);
    const d = r.differences[0];
    expect(d?.outcomes.vtd).toBe("fault");
    expect(d?.outcomes.smmu).toMatch(/^ok/);
    expect(bothPassed(r)).toBe(false);
  });

  const base: DmaOutcome = {
    device: "d",
    pasid: null,
    iova: 0x1000,
    size: 8,
    write: false,
    status: 0,
    digest: 5,
  };

  it("compareOutcomes: bytes read, completion, and the DMA itself are compared", () => {
    const a = { arch: "vtd", outcomes: [base, base, base, { ...base, status: 1, digest: 0 }] };
    const b = {
      arch: "smmu",
      outcomes: [
        base,
        { ...base, digest: 6 },
        { ...base, status: 1, digest: 0 },
        { ...base, status: 3, digest: 0 },
      ],
    };
    const c = compareOutcomes(a, b);
    expect(c.compared).toBe(4);
    expect(c.total).toBe(2);
    expect(c.differences.map((d) => d.index)).toEqual([1, 2]);
    expect(c.differences[0]?.outcomes).toEqual({
      vtd: "ok, bytes 00000005",
      smmu: "ok, bytes 00000006",
    });
    expect(c.differences[1]?.outcomes.smmu).toBe("fault");
  });

  it("compareOutcomes: a run that stopped early or made another DMA differs there", () => {
    const c = compareOutcomes(
      { arch: "vtd", outcomes: [base, { ...base, iova: 0x2000 }] },
      { arch: "smmu", outcomes: [base] },
    );
    expect(c.total).toBe(1);
    expect(c.differences[0]?.outcomes.smmu).toMatch(/no such DMA/);
    const d = compareOutcomes(
      { arch: "vtd", outcomes: [{ ...base, device: "x" }] },
      { arch: "smmu", outcomes: [base] },
    );
    expect(d.differences[0]?.dma).toMatch(/^x read .* \/ d read/);
  });
});
