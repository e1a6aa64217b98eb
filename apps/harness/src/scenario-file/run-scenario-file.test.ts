// Running scenario files: the examples pass under the oracle, a step that fails names its place in
// the file, and an injected driver bug fails the run with violations; processes and their SVA
// binds run the same way, on VT-d and on SMMUv3.

import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { EXIT, main } from "../cli.js";
import { runBoth } from "../compare.js";
import { type RunReport, runScenario } from "../scenario.js";
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

// ---- processes and SVA ------------------------------------------------------------------------

/** A file with a work queue, a PRI accelerator and users alice (one PASID) and bob. */
function svaInline(steps: string[], arch: "vtd" | "smmu" = "vtd"): ScenarioSpec {
  const text = [
    "version: 1",
    "scenario: sva-inline",
    `arch: ${arch}`,
    "machine:",
    "  units:",
    "    - name: iommu0",
    "  devices:",
    '    - { name: wq0, bdf: "00:04.0", kind: work-queue, pasid-bits: 20, ats: true }',
    '    - { name: acc0, bdf: "00:03.0", pasid-bits: 20, ats: true, pri: true }',
    "users:",
    "  - { name: alice, pasid-limit: 1 }",
    "  - { name: bob }",
    "steps:",
    ...steps,
  ].join("\n");
  const spec = parseScenarioFile(text, "sva.yaml");
  if (!("steps" in spec)) throw new Error(String(spec));
  return spec;
}

/** `iommu-sim ...args` in-process, both streams captured. */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const code = await main(["node", "iommu-sim", ...args], {
    stdout: { write: (chunk: string) => (stdout += chunk) },
    stderr: { write: (chunk: string) => (stderr += chunk) },
  });
  return { code, stdout, stderr };
}

const SVA_EXAMPLE = path.join(dir, "sva-processes.yaml");

describe("sva-processes.yaml", () => {
  it.each(["vtd", "smmu"] as const)(
    "passes on %s: every expectation met, no violation",
    async (arch) => {
      const spec = load("sva-processes");
      const r = await runScenario(scenarioFromFile(spec, arch), spec.seed ?? 1);
      expect(r.arch).toBe(arch);
      expect(r.failures).toEqual([]);
      expect(r.violations).toEqual([]);
      // Each sva-dma with an expectation, mmap, bind, unbind, cpu-write and enqcmd is a check.
      expect(r.checks.passed).toBeGreaterThanOrEqual(50);
      expect(r.dmas).toBeGreaterThan(60);
      expect(r.faults).toBe(9);
    },
  );

  it("passes on both architectures with the same outcome for every DMA", async () => {
    const spec = load("sva-processes");
    const r = await runBoth(
      scenarioFromFile(spec, "vtd"),
      scenarioFromFile(spec, "smmu"),
      spec.seed ?? 1,
    );
    for (const run of r.runs) {
      expect(run.failures).toEqual([]);
      expect(run.violations).toEqual([]);
    }
    expect(r.differences).toEqual([]);
    expect(r.compared).toBeGreaterThan(80);
  });

  it.each(["vtd", "smmu"] as const)(
    "%s: a notifier that flushes nothing (skip-notifier-flush) is caught after the munmap and the mprotect",
    async (arch) => {
      const spec = load("sva-processes");
      const r = await runScenario(scenarioFromFile(spec, arch), spec.seed ?? 1, {
        inject: "skip-notifier-flush",
      });
      expect(r.violations.length).toBeGreaterThan(0);
      expect(new Set(r.violations.map((v) => v.kind))).toEqual(new Set(["stale-translation"]));
      const removedBy = r.violations.map((v) => /removed by (\w+)\(proc-a, /.exec(v.message)?.[1]);
      expect(new Set(removedBy)).toEqual(new Set(["munmap", "mprotect"]));
      for (const v of r.violations) {
        expect(v.message).toMatch(/arch_invalidate_secondary_tlbs/);
        expect(v.missingInvalidation).toBeDefined();
      }
      // The DMAs the file says must fault are the failed checks, each at its line.
      expect(r.failures.map((f) => /^\S+: sva-dma: \S+/.exec(f.message)?.[0])).toEqual([
        "scenarios/sva-processes.yaml:73: sva-dma: accel0",
        "scenarios/sva-processes.yaml:74: sva-dma: wq0",
        "scenarios/sva-processes.yaml:75: sva-dma: accel0",
        "scenarios/sva-processes.yaml:79: sva-dma: accel0",
      ]);
    },
  );

  it("runs from the command line: exit 0 on both, exit 1 with the injection", async () => {
    const clean = await cli("run", SVA_EXAMPLE, "--arch", "both");
    expect(clean.stderr).toBe("");
    expect(clean.stdout).toMatch(/compare {5}\d+ DMAs on vtd and smmu, 0 differences/);
    expect(clean.code).toBe(EXIT.OK);
    const caught = await cli("run", SVA_EXAMPLE, "--inject", "skip-notifier-flush");
    expect(caught.code).toBe(EXIT.CHECK_FAILED);
    expect(caught.stdout).toMatch(/^VIOLATION {3}stale-translation /m);
    expect(caught.stderr).toBe("");
  });

  it("a bad SVA step is one located line and exit 2, not a stack trace", async () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), "iommu-sim-")), "bad.yaml");
    const text = readFileSync(SVA_EXAMPLE, "utf8").replace(
      "bind: { device: wq0, process: proc-a }",
      "bind: { device: wq0, process: proc-z }",
    );
    writeFileSync(file, text);
    const r = await cli("run", file);
    expect(r.code).toBe(EXIT.USAGE);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(
      `iommu-sim: ${file}:36:35: steps[3].bind.process: unknown process "proc-z" (defined so far: proc-a, proc-b, proc-a2) [unknown-name]\n`,
    );
  });
});

describe("SVA steps", () => {
  /** The failed checks' messages. */
  const failed = (r: RunReport): string[] => r.failures.map((f) => f.message);

  it("a bind over the user's PASID limit fails with EBUSY: expected, a passed check; not, a failed one", async () => {
    const spec = svaInline([
      "  - process: { name: a1, user: alice }",
      "  - process: { name: a2, user: alice }",
      "  - process: { name: b1, user: bob }",
      "  - bind: { device: wq0, process: a1 }",
      "  - bind: { device: wq0, process: a2, expect: EBUSY }",
      "  - bind: { device: acc0, process: a2 }",
      "  - bind: { device: wq0, process: b1, expect: EBUSY }",
    ]);
    const r = await runScenario(scenarioFromFile(spec), 1);
    expect(failed(r)).toEqual([
      "sva.yaml:19: bind: acc0 to a2: expected ok, got EBUSY",
      "sva.yaml:20: bind: wq0 to b1: expected EBUSY, got ok (PASID 2)",
    ]);
    // The two probes, a1's bind and a2's expected EBUSY.
    expect(r.checks.passed).toBe(4);
    expect(r.violations).toEqual([]);
  });

  it("an sva-dma whose expectation fails is a failed check naming the region, the address and the status", async () => {
    const spec = svaInline([
      "  - process: { name: p }",
      "  - mmap: { process: p, name: r, pages: 2, prot: r }",
      "  - sva-dma: { device: acc0, region: r, offset: 0x10, size: 8, op: read, expect: fault }",
      "  - bind: { device: acc0, process: p }",
      "  - sva-dma: { device: acc0, region: r, offset: 4KiB, size: 8, op: write, expect: ok }",
      "  - sva-dma: { device: acc0, region: r, offset: 4KiB, size: 8, op: read, expect: fault }",
    ]);
    const r = await runScenario(scenarioFromFile(spec), 1);
    expect(failed(r)).toEqual([
      "sva.yaml:18: sva-dma: acc0 write at 0x10001000 (r+0x1000) for p: expected ok, got status 1",
      "sva.yaml:19: sva-dma: acc0 read at 0x10001000 (r+0x1000) for p: expected fault, got status 0",
    ]);
    // Before the bind the process has no PASID: the device cannot even tag the DMA, which counts
    // as a fault. Passed: the two probes, the mmap, that DMA and the bind.
    expect(r.checks.passed).toBe(5);
    expect(r.violations).toEqual([]);
  });

  it("a DMA with no PASID to carry fails with the reason, and steps on a region never mapped fail", async () => {
    const spec = svaInline([
      "  - process: { name: p }",
      "  - mmap: { process: p, name: r, pages: 1 }",
      "  - sva-dma: { device: acc0, region: r, size: 8, op: read, expect: ok }",
      "  - exit: { process: p }",
      "  - exit: { process: p }",
      "  - mmap: { process: p, name: late, pages: 1 }",
      "  - cpu-write: { region: late }",
      "  - mmap: { process: p, name: late2, pages: 1, expect: ENOMEM }",
    ]);
    const r = await runScenario(scenarioFromFile(spec), 1);
    expect(failed(r)).toEqual([
      "sva.yaml:16: sva-dma: acc0 read at 0x10000000 (r+0x0) for p: expected ok, got no PASID (p never bound a device)",
      "sva.yaml:18: exit: p has exited already",
      "sva.yaml:19: mmap: late in p: expected ok, got ENOMEM",
      "sva.yaml:20: cpu-write: region late was not mapped",
    ]);
    expect(r.violations).toEqual([]);
  });

  it("cpu-write faults in the pages a work queue without PRI needs; mprotect and munmap take page ranges", async () => {
    const spec = svaInline([
      "  - process: { name: p, user: bob }",
      "  - bind: { device: wq0, process: p }",
      "  - mmap: { process: p, name: src, pages: 4 }",
      "  - mmap: { process: p, name: dst, pages: 4 }",
      "  - enqcmd: { device: wq0, src: src, dst: dst, count: 4, expect: 0 }",
      "  - cpu-write: { region: dst, page: 2, pages: 2 }",
      "  - enqcmd: { device: wq0, src: src, dst: dst, count: 4, expect: 0 }",
      "  - cpu-write: { region: dst, pages: 2 }",
      "  - enqcmd: { device: wq0, src: src, dst: dst, count: 4 }",
      "  - mprotect: { region: dst, page: 3, prot: r }",
      "  - enqcmd: { device: wq0, src: src, dst: dst, count: 4, expect: 3 }",
      "  - cpu-write: { region: dst, page: 3, expect: fault }",
      "  - munmap: { region: dst, page: 1, pages: 1 }",
      "  - mprotect: { region: dst, prot: rw, expect: ENOMEM }",
      "  - enqcmd: { device: wq0, src: src, dst: dst, count: 2, expect: 1 }",
    ]);
    for (const arch of ["vtd", "smmu"] as const) {
      const r = await runScenario(scenarioFromFile(spec, arch), 1);
      expect(failed(r), arch).toEqual([]);
      expect(r.violations, arch).toEqual([]);
    }
  });

  it("enqcmd runs more descriptors than a ring holds, a ring at a time, and checks every copy", async () => {
    const spec = svaInline([
      "  - process: { name: p }",
      "  - bind: { device: wq0, process: p }",
      "  - mmap: { process: p, name: src, pages: 300 }",
      "  - mmap: { process: p, name: dst, pages: 300 }",
      "  - cpu-write: { region: dst }",
      "  - enqcmd: { device: wq0, src: src, dst: dst, count: 300 }",
    ]);
    const r = await runScenario(scenarioFromFile(spec), 1);
    expect(failed(r)).toEqual([]);
    // The probes, the bind, two mmaps, the cpu-write, the count and the bytes.
    expect(r.checks.passed).toBe(8);
    expect(r.dmas).toBe(1200);
  });

  it("an unplug unbinds every process from the device first, and teardown leaves nothing behind", async () => {
    const spec = svaInline([
      "  - process: { name: p }",
      "  - process: { name: q }",
      "  - bind: { device: acc0, process: p }",
      "  - bind: { device: acc0, process: p }",
      "  - bind: { device: acc0, process: q }",
      "  - bind: { device: wq0, process: q }",
      "  - mmap: { process: p, name: r, pages: 1 }",
      "  - sva-dma: { device: acc0, region: r, size: 64, op: write, expect: ok }",
      "  - unplug: { device: acc0 }",
      "  - unbind: { device: wq0, process: p, expect: ENOENT }",
      "  - bind: { device: acc0, process: p }",
    ]);
    for (const arch of ["vtd", "smmu"] as const) {
      const r = await runScenario(scenarioFromFile(spec, arch), 1);
      expect(failed(r), arch).toEqual(["sva.yaml:24: bind: acc0 was unplugged"]);
      expect(r.violations, arch).toEqual([]);
    }
  });

  it("memory a violation let a device write into stops the run with a failed check, the violation reported", async () => {
    // Under the injection the stale translation of a freed page lets the device write into what
    // is another process's page table by then: its exit trips over the garbage.
    const spec = svaInline([
      "  - process: { name: pa }",
      "  - bind: { device: acc0, process: pa }",
      "  - mmap: { process: pa, name: r1, pages: 1 }",
      "  - sva-dma: { device: acc0, region: r1, size: 4KiB, op: write, expect: ok }",
      "  - munmap: { region: r1 }",
      "  - process: { name: pb }",
      "  - mmap: { process: pb, name: r2, pages: 1 }",
      "  - cpu-write: { region: r2 }",
      "  - sva-dma: { device: acc0, process: pa, region: r1, size: 4KiB, op: write, expect: fault }",
      "  - exit: { process: pb }",
    ]);
    const clean = await runScenario(scenarioFromFile(spec), 1);
    expect(failed(clean)).toEqual([]);
    const r = await runScenario(scenarioFromFile(spec), 1, { inject: "skip-notifier-flush" });
    expect(r.violations[0]?.kind).toBe("stale-translation");
    expect(failed(r).at(-1)).toMatch(
      /^sva\.yaml: stopped after the oracle's violations wrecked the machine's memory: /,
    );
  });
});
