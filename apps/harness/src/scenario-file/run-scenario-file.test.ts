// Running scenario files: the examples pass under the oracle, a step that fails names its place in
// the file, and an injected driver bug fails the run with violations.

import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { runBoth } from "../compare.js";
import { runScenario } from "../scenario.js";
import { parseScenarioFile } from "./parse-scenario.js";
import { scenarioFromFile } from "./run-scenario-file.js";
import type { ScenarioSpec } from "./scenario-spec.js";

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../scenarios");

function load(name: string): ScenarioSpec {
  const file = path.join(dir, `${name}.yaml`);
  const spec = parseScenarioFile(readFileSync(file, "utf8"), `scenarios/${name}.yaml`);
  if (!("steps" in spec)) throw new Error(String(spec));
  return spec;
}

function inline(steps: string[], devices = ['    - { name: nic0, bdf: "00:01.0" }']): ScenarioSpec {
  const text = [
    "version: 1",
    "scenario: inline",
    "arch: vtd",
    "machine:",
    "  units:",
    "    - name: dmar0",
    "  devices:",
    ...devices,
    "steps:",
    ...steps,
  ].join("\n");
  const spec = parseScenarioFile(text, "inline.yaml");
  if (!("steps" in spec)) throw new Error(String(spec));
  return spec;
}

describe("the example scenario files", () => {
  it.each(["two-tenants", "sva-style-pasids", "dma-api-churn", "legacy-two-units"])(
    "%s passes with no violation",
    async (name) => {
      const spec = load(name);
      const r = await runScenario(scenarioFromFile(spec), spec.seed ?? 1);
      expect(r.failures).toEqual([]);
      expect(r.violations).toEqual([]);
      expect(r.dmas).toBeGreaterThan(0);
      expect(r.scenario).toBe(name);
      expect(r.arch).toBe("vtd");
    },
  );

  it.each(["two-tenants", "sva-style-pasids", "dma-api-churn"])(
    "%s passes on SMMUv3 too, with the same DMA outcomes as on VT-d",
    async (name) => {
      const spec = load(name);
      const r = await runBoth(
        scenarioFromFile(spec, "vtd"),
        scenarioFromFile(spec, "smmu"),
        spec.seed ?? 1,
      );
      expect(r.runs[1].arch).toBe("smmu");
      expect(r.runs[1].failures).toEqual([]);
      expect(r.runs[1].violations).toEqual([]);
      expect(r.differences).toEqual([]);
      expect(r.compared).toBeGreaterThan(0);
    },
  );

  it("a file with arch both runs on VT-d unless an architecture is asked for", () => {
    const spec = load("two-tenants");
    expect(spec.arch).toBe("both");
    expect(scenarioFromFile(spec).arch).toBe("vtd");
    expect(scenarioFromFile(spec, "smmu").arch).toBe("smmu");
  });
});

describe("steps", () => {
  it("a DMA whose expectation fails is a failed check naming the file and line", async () => {
    const spec = inline([
      "  - domain: { name: d1 }",
      "  - attach: { device: nic0, domain: d1 }",
      "  - dma: { device: nic0, iova: 0x1000, size: 64, op: read, expect: ok }",
      "  - attach: { device: nic0, domain: default }",
    ]);
    const r = await runScenario(scenarioFromFile(spec), 1);
    expect(r.failures).toEqual([
      {
        check: "dma",
        message: "inline.yaml:12: dma: nic0 read at 0x1000: expected ok, got status 1",
      },
    ]);
    expect(r.violations).toEqual([]);
  });

  it("an operation the core refuses is a failed check with its errno", async () => {
    const spec = inline([
      "  - domain: { name: d1 }",
      "  - map: { domain: d1, iova: 0x10000, size: 8KiB }",
      "  - map: { domain: d1, iova: 0x10000, size: 4KiB }",
    ]);
    const r = await runScenario(scenarioFromFile(spec), 1);
    expect(r.failures).toEqual([
      { check: "map", message: "inline.yaml:12: map: d1 at 0x10000: EEXIST" },
    ]);
  });

  it("mapped pages reach their memory and copies land; unmapped ones fault", async () => {
    const spec = inline([
      "  - domain: { name: d1, stage: second }",
      "  - map: { domain: d1, iova: 0x100000, size: 64KiB }",
      "  - attach: { device: nic0, domain: d1 }",
      "  - copy: { device: nic0, src: 0x100000, dst: 0x108000, size: 32KiB }",
      "  - unmap: { domain: d1, iova: 0x100000, size: 64KiB }",
      "  - dma: { device: nic0, iova: 0x100000, size: 4KiB, op: read, expect: fault }",
      "  - attach: { device: nic0, domain: default }",
      "  - domain-free: { domain: d1 }",
    ]);
    const r = await runScenario(scenarioFromFile(spec), 1);
    expect(r.failures).toEqual([]);
    expect(r.checks.passed).toBeGreaterThanOrEqual(3);
    expect(r.violations).toEqual([]);
  });

  it("an injected driver bug fails a file's run with violations", async () => {
    const spec = load("two-tenants");
    const r = await runScenario(scenarioFromFile(spec), 7, { inject: "skip-iotlb-flush" });
    expect(r.violations.length).toBeGreaterThan(0);
    expect(r.violations[0]?.kind).toBe("stale-translation");
  });

  it("on a legacy-mode unit a skipped flush leaves a second-stage IOTLB entry: the missing invalidation is type 2", async () => {
    const spec = load("legacy-two-units");
    const r = await runScenario(scenarioFromFile(spec), 11, { inject: "skip-iotlb-flush" });
    const v = r.violations.find((x) => x.staleEntry?.where === "dmar0");
    expect(v?.staleEntry?.fields).toMatchObject({ kind: "second-stage", PASID: null });
    expect(v?.missingInvalidation).toMatchObject({
      descriptor: "IOTLB invalidation (type 2)",
      fields: { G: "page", AM: 0 },
    });
    // The same domain on the scalable unit has its own domain ID there, and its own stale entry.
    expect(r.violations.some((x) => x.staleEntry?.where === "dmar1")).toBe(true);
  });

  it("work submitted at a PASID of the DMA API's domain, of identity and of a paging domain completes", async () => {
    const spec = inline(
      [
        "  - dma-pasid: { device: wq0, name: k }",
        "  - submit: { device: wq0, pasid: k, count: 8, size: 4KiB }",
        "  - pasid-alloc: { name: u }",
        "  - domain: { name: id, type: identity }",
        "  - pasid-attach: { device: wq0, pasid: u, domain: id }",
        "  - submit: { device: wq0, pasid: u, count: 4, size: 4KiB }",
        "  - pasid-detach: { device: wq0, pasid: u }",
        "  - domain: { name: d1 }",
        "  - pasid-attach: { device: wq0, pasid: u, domain: d1 }",
        "  - submit: { device: wq0, pasid: u, count: 70, size: 8KiB }",
        "  - unplug: { device: wq0 }",
      ],
      ['    - { name: wq0, bdf: "00:02.0", kind: work-queue, pasid-bits: 8, ats: true }'],
    );
    const r = await runScenario(scenarioFromFile(spec), 3);
    expect(r.failures).toEqual([]);
    expect(r.violations).toEqual([]);
  });
});
