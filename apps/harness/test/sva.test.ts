// The sva scenario end to end: clean on VT-d, on SMMUv3 and compared across both; each SVA
// injection caught with the diagnosis a kernel developer needs; and the CLI's view of it.

import { DMA_OK } from "@iommu-sim/iommu-core";
import { PROT_READ, PROT_WRITE } from "@iommu-sim/sva";
import { describe, expect, it } from "vitest";
import { EXIT, main } from "../src/cli.js";
import { bothPassed, runBoth } from "../src/compare.js";
import type { Harness, MachineSpec } from "../src/machine/harness.js";
import { SmmuHarness } from "../src/machine/smmu-harness.js";
import type { SvaProcess } from "../src/machine/sva-world.js";
import { VtdHarness } from "../src/machine/vtd-harness.js";
import type { Violation } from "../src/oracle/violation.js";
import { type RunReport, runScenario, type Scenario } from "../src/scenario.js";
import { smmuSvaScenario, vtdSvaScenario } from "../src/scenarios/sva.js";

const ON: Readonly<Record<string, Scenario>> = { vtd: vtdSvaScenario, smmu: smmuSvaScenario };
const ARCHES = ["vtd", "smmu"] as const;

function run(arch: string, seed: number, inject: string | null = null): Promise<RunReport> {
  return runScenario(ON[arch] as Scenario, seed, { inject });
}

function ofKind(r: RunReport, kind: Violation["kind"]): Violation[] {
  return r.violations.filter((v) => v.kind === kind);
}

/** Run `iommu-sim ...args` in-process, capturing both streams. */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const code = await main(["node", "iommu-sim", ...args], {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
  });
  return { code, stdout, stderr };
}

/** The notifier's part of a stale-translation report on an SVA domain. */
const NOTIFIER_HINT =
  /only through the SVA domain's mmu notifier \(arch_invalidate_secondary_tlbs\)/;

describe("the sva scenario runs clean", () => {
  for (const arch of ARCHES) {
    it.each([1, 2, 3, 4])(`${arch}: no failed check and no violation (seed %i)`, async (seed) => {
      const r = await run(arch, seed);
      expect(r.scenario).toBe("sva");
      expect(r.arch).toBe(arch);
      expect(r.failures).toEqual([]);
      expect(r.violations).toEqual([]);
      expect(r.violationsTotal).toBe(0);
      // Work-queue descriptors, demand paging, the munmap/mprotect faults and the seeded mix ran.
      expect(r.dmas).toBeGreaterThan(250);
      expect(r.faults).toBeGreaterThan(20);
      expect(r.checks.passed).toBeGreaterThan(100);
    });
  }

  // The seeded mix takes write away and gives it back; a write after that must complete. x86
  // needs no flush for the upgrade (a write through a clean IOTLB entry walks again to set D);
  // arm64's pte_needs_flush flushes any change of a valid PTE, so the notifier drops the SMMU's
  // read-only TLB entry.
  it.each(["vtd", "smmu"])(
    "%s: a write after an mprotect gives write back completes (seed 3's mix does this)",
    (arch) => {
      const spec: MachineSpec = {
        units: [{ name: "iommu0" }],
        devices: [{ name: "accel0", rid: 0x18, pasidBits: 20, ats: true, pri: true }],
      };
      const h: Harness = arch === "vtd" ? new VtdHarness(spec, 1) : new SmmuHarness(spec, 1);
      const dev = h.addDevice(spec.devices[0] as MachineSpec["devices"][number]);
      if (typeof dev === "string") throw new Error(dev);
      const p = h.sva.processCreate("procA") as SvaProcess;
      expect(typeof h.sva.bind(dev, p)).toBe("number");
      const va = h.sva.mmap(p, 4096, PROT_READ | PROT_WRITE) as number;
      const write = (): number => h.sva.dma(dev, p, va, new Uint8Array(8), true);
      expect(write()).toBe(DMA_OK);
      expect(h.sva.mprotect(p, va, 4096, PROT_READ)).toBe(0);
      expect(write()).not.toBe(DMA_OK);
      expect(h.sva.mprotect(p, va, 4096, PROT_READ | PROT_WRITE)).toBe(0);
      expect(write()).toBe(DMA_OK);
      expect(h.oracle.violations).toEqual([]);
    },
  );

  it("is deterministic: the same seed gives the same report", async () => {
    const a = await run("smmu", 7);
    const b = await run("smmu", 7);
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
  });

  it.each([1, 2, 3, 4])(
    "--arch both: every DMA completes on both architectures or on neither, with the same bytes (seed %i)",
    async (seed) => {
      const r = await runBoth(vtdSvaScenario, smmuSvaScenario, seed);
      expect(r.scenario).toBe("sva");
      expect(r.runs.map((x) => x.arch)).toEqual(["vtd", "smmu"]);
      expect(r.compared).toBeGreaterThan(400);
      expect(r.differences).toEqual([]);
      expect(r.differencesTotal).toBe(0);
      expect(bothPassed(r)).toBe(true);
    },
  );
});

describe("skip-notifier-flush: the notifier flushes nothing, so munmap and mprotect leave caches stale", () => {
  for (const arch of ARCHES) {
    it(`${arch}: stale translations name the munmap or mprotect, the cache and the missing invalidation`, async () => {
      const r = await run(arch, 1, "skip-notifier-flush");
      const stale = ofKind(r, "stale-translation");
      expect(stale.length).toBeGreaterThan(0);
      expect(r.failures.map((f) => f.check)).toContain("dma-after-munmap");
      for (const v of stale) {
        expect(v.message).toMatch(
          /\(removed by (munmap|mprotect)\(procA, 0x[0-9a-f]+, 0x[0-9a-f]+/,
        );
        expect(v.message).toMatch(NOTIFIER_HINT);
        expect(v.dma?.pasid).toBeGreaterThan(0);
      }
      const atc = arch === "vtd" ? "device-tlb" : "atc";
      const tlb = arch === "vtd" ? "iotlb" : "tlb";
      const caches = new Set(stale.map((v) => v.staleEntry?.cache));
      // Both the IOMMU's TLB and the devices' ATCs kept what the notifier should have flushed.
      expect([...caches].sort()).toEqual([atc, tlb].sort());
      expect(stale.some((v) => /\(removed by munmap\(/.test(v.message))).toBe(true);
      expect(stale.some((v) => /\(removed by mprotect\(/.test(v.message))).toBe(true);

      const viaTlb = stale.find((v) => v.staleEntry?.cache === tlb) as Violation;
      const viaAtc = stale.find((v) => v.staleEntry?.cache === atc) as Violation;
      const pasid = viaAtc.dma?.pasid as number;
      if (arch === "vtd") {
        expect(viaTlb.missingInvalidation).toMatchObject({
          descriptor: "PASID-based IOTLB invalidation (type 6)",
          fields: { G: "page", PASID: pasid, DID: 1, AM: 0 },
        });
        expect(viaAtc.missingInvalidation).toMatchObject({
          descriptor: "PASID-based device-TLB invalidation (type 8)",
          fields: { PASID: pasid },
        });
      } else {
        expect(viaTlb.missingInvalidation?.descriptor).toMatch(/^CMD_TLBI_NH_(VA|ASID)$/);
        expect(viaTlb.missingInvalidation?.fields.ASID).toBeGreaterThan(0);
        expect(viaAtc.missingInvalidation).toMatchObject({
          descriptor: "CMD_ATC_INV",
          fields: { SSV: 1, SSID: pasid },
        });
      }
      // The address in the missing invalidation is the page the DMA reached.
      const page = (v: Violation): string =>
        `0x${(Math.floor(Number(v.dma?.iova) / 4096) * 4096).toString(16)}`;
      const addr = (v: Violation): unknown =>
        v.missingInvalidation?.fields.ADDR ?? v.missingInvalidation?.fields.Address;
      expect(addr(viaAtc)).toBe(page(viaAtc));
      expect(addr(viaTlb)).toBe(page(viaTlb));
    });
  }

  it("--arch both: the violations of the VT-d run, and DMAs that complete on VT-d only", async () => {
    const r = await runBoth(vtdSvaScenario, smmuSvaScenario, 1, {
      inject: "skip-notifier-flush",
      injectArch: "vtd",
    });
    expect(ofKind(r.runs[0], "stale-translation").length).toBeGreaterThan(0);
    expect(r.runs[1].violations).toEqual([]);
    expect(r.differencesTotal).toBeGreaterThan(0);
    const first = r.differences[0];
    expect(first?.outcomes.vtd).toMatch(/^ok/);
    expect(first?.outcomes.smmu).not.toMatch(/^ok/);
    expect(bothPassed(r)).toBe(false);
  });
});

describe("skip-atc-on-notifier: the notifier flushes the IOMMU's TLB but no ATC", () => {
  for (const arch of ARCHES) {
    it(`${arch}: only ATC entries are stale, each missing the ATC invalidation for its PASID`, async () => {
      const r = await run(arch, 1, "skip-atc-on-notifier");
      const stale = ofKind(r, "stale-translation");
      expect(stale.length).toBeGreaterThan(0);
      const atc = arch === "vtd" ? "device-tlb" : "atc";
      const descriptor =
        arch === "vtd" ? "PASID-based device-TLB invalidation (type 8)" : "CMD_ATC_INV";
      for (const v of stale) {
        expect(v.staleEntry?.cache).toBe(atc);
        expect(v.missingInvalidation?.descriptor).toBe(descriptor);
        const f = v.missingInvalidation?.fields ?? {};
        expect(arch === "vtd" ? f.PASID : f.SSID).toBe(v.dma?.pasid);
        expect(v.message).toMatch(/\(removed by (munmap|mprotect)\(procA, /);
        expect(v.message).toMatch(NOTIFIER_HINT);
      }
      // Nothing but stale ATC entries: the IOTLB was flushed, no ID reused, nothing leaked.
      expect(new Set(r.violations.map((v) => v.kind))).toEqual(new Set(["stale-translation"]));
    });
  }

  it("--arch both: DMAs differ between the architectures", async () => {
    const r = await runBoth(vtdSvaScenario, smmuSvaScenario, 1, {
      inject: "skip-atc-on-notifier",
      injectArch: "vtd",
    });
    expect(ofKind(r.runs[0], "stale-translation").length).toBeGreaterThan(0);
    expect(r.differencesTotal).toBeGreaterThan(0);
    expect(bothPassed(r)).toBe(false);
  });
});

describe("free-pasid-on-unbind: the last unbind frees the PASID the mm still holds", () => {
  for (const arch of ARCHES) {
    it(`${arch}: id-reuse names the PASID and the mm, and the late ENQCMD work reaches the next process`, async () => {
      const r = await run(arch, 1, "free-pasid-on-unbind");
      expect(r.failures.map((f) => f.check)).toEqual(
        expect.arrayContaining(["pasid-not-reused", "late-work-faults"]),
      );
      const reuse = ofKind(r, "id-reuse").find((v) => /the mm of procD/.test(v.message));
      expect(reuse).toBeDefined();
      const pasid = reuse?.id?.value as number;
      expect(reuse?.id).toEqual({ space: "pasid", unit: null, value: pasid });
      expect(reuse?.message).toMatch(
        new RegExp(
          `^PASID ${pasid} freed while the mm of procD still holds it \\(mm->iommu_mm->pasid\\)`,
        ),
      );
      expect(reuse?.missingInvalidation?.descriptor).toMatch(/mm_pasid_drop/);
      expect(reuse?.history?.some((h) => h.event === "bound wq0 to procD (SVA)")).toBe(true);

      // procE got the same PASID; procD's late descriptor read procE's memory through it.
      const iso = ofKind(r, "isolation").find((v) => /for procD's work/.test(v.message));
      expect(iso?.message).toMatch(
        new RegExp(
          `^wq0 PASID ${pasid} read at 0x[0-9a-f]+ for procD's work reached 0x[0-9a-f]+ in the address space of procE: PASID ${pasid} no longer names procD's address space`,
        ),
      );
      expect(iso?.history?.some((h) => h.event === "bound wq0 to procE (SVA)")).toBe(true);
    });
  }

  it("--arch both: the VT-d run's violations, and DMAs that differ", async () => {
    const r = await runBoth(vtdSvaScenario, smmuSvaScenario, 1, {
      inject: "free-pasid-on-unbind",
      injectArch: "vtd",
    });
    expect(ofKind(r.runs[0], "id-reuse").length).toBeGreaterThan(0);
    expect(ofKind(r.runs[0], "isolation").length).toBeGreaterThan(0);
    expect(r.runs[1].violations).toEqual([]);
    expect(r.differencesTotal).toBeGreaterThan(0);
  });
});

describe("iommu-sim run --scenario sva", () => {
  it("exits 0 with the summary", async () => {
    const r = await cli("run", "--scenario", "sva");
    expect(r.code).toBe(EXIT.OK);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/^scenario {4}sva\narch {8}vtd\nseed {8}1\n/);
    expect(r.stdout).toMatch(/^checks {6}\d+ passed, 0 failed$/m);
    expect(r.stdout).toMatch(/^violations {2}0$/m);
  });

  it("--json is one document of scenario sva, on either architecture", async () => {
    for (const arch of ARCHES) {
      const r = await cli("run", "--scenario", "sva", "--arch", arch, "--json");
      expect(r.code).toBe(EXIT.OK);
      expect(r.stdout.trimEnd().split("\n")).toHaveLength(1);
      const doc = JSON.parse(r.stdout);
      expect(doc).toMatchObject({ scenario: "sva", arch, violations: [], violationsTotal: 0 });
    }
  });

  it("--arch both prints both runs and 0 differences", async () => {
    const r = await cli("run", "--scenario", "sva", "--arch", "both");
    expect(r.code).toBe(EXIT.OK);
    expect(r.stdout).toMatch(/^compare {5}\d+ DMAs on vtd and smmu, 0 differences$/m);
    expect(r.stdout.match(/^scenario {4}sva$/gm)).toHaveLength(2);
  });

  it("--inject free-pasid-on-unbind --arch smmu exits 1 with the id-reuse and isolation", async () => {
    const r = await cli(
      "run",
      "--scenario",
      "sva",
      "--arch",
      "smmu",
      "--inject",
      "free-pasid-on-unbind",
    );
    expect(r.code).toBe(EXIT.CHECK_FAILED);
    expect(r.stdout).toMatch(/^FAILED {6}late-work-faults: /m);
    expect(r.stdout).toMatch(
      /^VIOLATION {3}id-reuse at t=\d+: PASID \d+ freed while the mm of procD/m,
    );
    expect(r.stdout).toMatch(
      /^VIOLATION {3}isolation at t=\d+: wq0 PASID \d+ read .* for procD's work/m,
    );
  });

  it("--arch both --inject skip-notifier-flush exits 1 with the violations and the differences", async () => {
    const r = await cli(
      "run",
      "--scenario",
      "sva",
      "--arch",
      "both",
      "--inject",
      "skip-notifier-flush",
    );
    expect(r.code).toBe(EXIT.CHECK_FAILED);
    expect(r.stdout).toMatch(/^VIOLATION {3}stale-translation at t=\d+: accel\d PASID \d+ /m);
    expect(r.stdout).toMatch(/^compare {5}\d+ DMAs on vtd and smmu, [1-9]\d* differences?$/m);
    expect(r.stdout).toMatch(/^DIFFERENT {3}DMA #\d+ accel\d PASID \d+ .*: vtd ok/m);
  });

  it("the help lists the sva scenario on vtd and smmu, and the SVA injections", async () => {
    const r = await cli("run", "--help");
    expect(r.code).toBe(EXIT.OK);
    expect(r.stdout).toMatch(/^ {2}sva \(vtd\): processes share their address spaces/m);
    expect(r.stdout).toMatch(/^ {2}sva \(smmu\): /m);
    const flat = r.stdout.replace(/\s+/g, " ");
    for (const name of ["skip-notifier-flush", "skip-atc-on-notifier", "free-pasid-on-unbind"])
      expect(flat).toContain(name);
  });
});
