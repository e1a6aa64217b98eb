// Scenario files that validate never make the run throw: random step sequences over a small
// machine, in any order (freed domains used again, PASIDs on devices without them, unmaps of what
// was never mapped, unplugged devices; binds over a user's limit, DMAs of exited processes,
// unbinds of what was never bound), end in checks and violations, never an exception.

import { fc, test } from "@fast-check/vitest";
import { describe, expect } from "vitest";
import { runScenario } from "../scenario.js";
import { parseScenarioFile } from "./parse-scenario.js";
import { scenarioFromFile } from "./run-scenario-file.js";

const DEVICES = ["nic0", "acc0", "wq0"];
const DOMAINS = ["d0", "d1", "d2"];
const PASIDS = ["p0", "p1"];
const BUFFERS = ["b0", "b1"];
const PROCESSES = ["q0", "q1"];
/** Each process's region, by process. */
const REGION: Readonly<Record<string, string>> = { q0: "r0", q1: "r1" };

/**
 * One step as YAML, from random choices over names the prelude defined (a name is defined once; a
 * step may use it after it was freed, which the run must answer with a failed check).
 */
const step = fc.oneof(
  fc
    .record({ d: fc.constantFrom(...DEVICES), to: fc.constantFrom(...DOMAINS, "default") })
    .map((r) => `  - attach: { device: ${r.d}, domain: ${r.to} }`),
  fc
    .record({
      d: fc.constantFrom("acc0", "wq0"),
      p: fc.constantFrom(...PASIDS),
      to: fc.constantFrom(...DOMAINS),
    })
    .map((r) => `  - pasid-attach: { device: ${r.d}, pasid: ${r.p}, domain: ${r.to} }`),
  fc
    .record({ d: fc.constantFrom("acc0", "wq0"), p: fc.constantFrom(...PASIDS) })
    .map((r) => `  - pasid-detach: { device: ${r.d}, pasid: ${r.p} }`),
  fc.constantFrom(...PASIDS).map((p) => `  - pasid-free: { pasid: ${p} }`),
  fc
    .record({
      to: fc.constantFrom(...DOMAINS),
      page: fc.integer({ min: 0, max: 31 }),
      n: fc.integer({ min: 1, max: 8 }),
    })
    .map(
      (r) => `  - map: { domain: ${r.to}, iova: ${0x100000 + r.page * 4096}, size: ${r.n * 4096} }`,
    ),
  fc
    .record({
      to: fc.constantFrom(...DOMAINS),
      page: fc.integer({ min: 0, max: 31 }),
      n: fc.integer({ min: 1, max: 8 }),
    })
    .map(
      (r) =>
        `  - unmap: { domain: ${r.to}, iova: ${0x100000 + r.page * 4096}, size: ${r.n * 4096} }`,
    ),
  fc.constantFrom(...DOMAINS).map((d) => `  - domain-free: { domain: ${d} }`),
  fc
    .record({
      d: fc.constantFrom(...DEVICES),
      page: fc.integer({ min: 0, max: 40 }),
      w: fc.boolean(),
      p: fc.constantFrom("", ", pasid: p0", ", pasid: 5"),
    })
    .map(
      (r) =>
        `  - dma: { device: ${r.d}, iova: ${0x100000 + r.page * 4096}, size: 64, op: ${r.w ? "write" : "read"}${r.d === "nic0" ? "" : r.p} }`,
    ),
  fc.constantFrom(...BUFFERS).map((b) => `  - dma-unmap: { buffer: ${b} }`),
  fc
    .record({ d: fc.constantFrom("nic0", "acc0") })
    .map((r) => `  - copy: { device: ${r.d}, src: 0x100000, dst: 0x108000, size: 8KiB }`),
  fc
    .constantFrom("", ", pasid: k", ", pasid: p0")
    .map((p) => `  - submit: { device: wq0, count: 4, size: 4KiB${p} }`),
  fc
    .record({ p: fc.constantFrom("k", "p1"), page: fc.integer({ min: 0, max: 40 }) })
    .map(
      (r) =>
        `  - dma: { device: wq0, pasid: ${r.p}, iova: ${0x100000 + r.page * 4096}, size: 64, op: read }`,
    ),
  fc.constant("  - random: { count: 20 }"),
  fc
    .record({ d: fc.constantFrom("acc0", "wq0"), p: fc.constantFrom(...PROCESSES) })
    .map((r) => `  - bind: { device: ${r.d}, process: ${r.p}, expect: ok }`),
  fc
    .record({ d: fc.constantFrom("acc0", "wq0"), p: fc.constantFrom(...PROCESSES) })
    .map((r) => `  - unbind: { device: ${r.d}, process: ${r.p} }`),
  fc.constantFrom(...PROCESSES).map((p) => `  - exit: { process: ${p} }`),
  fc
    .record({
      r: fc.constantFrom("r0", "r1"),
      page: fc.integer({ min: 0, max: 3 }),
      op: fc.constantFrom("munmap", "mprotect-r", "mprotect-rw", "mprotect-none", "cpu-write"),
    })
    .map((r) =>
      r.op === "munmap" || r.op === "cpu-write"
        ? `  - ${r.op}: { region: ${r.r}, page: ${r.page}, pages: 1 }`
        : `  - mprotect: { region: ${r.r}, page: ${r.page}, pages: 1, prot: ${r.op.slice(9)} }`,
    ),
  fc
    .record({
      d: fc.constantFrom("acc0", "wq0"),
      p: fc.constantFrom(...PROCESSES),
      r: fc.constantFrom("r0", "r1"),
      at: fc.integer({ min: 0, max: 4 * 4096 - 64 }),
      w: fc.boolean(),
    })
    .map(
      (r) =>
        `  - sva-dma: { device: ${r.d}, process: ${r.p}, region: ${r.r}, offset: ${r.at}, size: 64, op: ${r.w ? "write" : "read"} }`,
    ),
  fc.record({ p: fc.constantFrom(...PROCESSES), n: fc.integer({ min: 1, max: 4 }) }).map((r) => {
    const region = REGION[r.p] as string;
    return `  - enqcmd: { device: wq0, process: ${r.p}, src: ${region}, dst: ${region}, count: ${r.n} }`;
  }),
  fc.constantFrom(...DEVICES).map((d) => `  - unplug: { device: ${d} }`),
);

const HEADER = [
  "version: 1",
  "scenario: fuzzed",
  "arch: vtd",
  "machine:",
  "  units:",
  "    - name: dmar0",
  "  devices:",
  '    - { name: nic0, bdf: "00:01.0" }',
  '    - { name: acc0, bdf: "00:02.0", pasid-bits: 8, ats: true, pri: true }',
  '    - { name: wq0, bdf: "00:03.0", kind: work-queue, pasid-bits: 8, ats: true }',
  "users:",
  "  - { name: u1, pasid-limit: 1 }",
  "steps:",
  "  - domain: { name: d0, type: paging, stage: first }",
  "  - domain: { name: d1, type: paging, stage: second }",
  "  - domain: { name: d2, type: identity }",
  "  - pasid-alloc: { name: p0 }",
  "  - pasid-alloc: { name: p1 }",
  "  - dma-map: { device: nic0, name: b0, size: 8KiB }",
  "  - dma-map: { device: acc0, name: b1, size: 8KiB }",
  "  - dma-pasid: { device: wq0, name: k }",
  "  - process: { name: q0, user: u1 }",
  "  - process: { name: q1 }",
  "  - mmap: { process: q0, name: r0, pages: 4 }",
  "  - mmap: { process: q1, name: r1, pages: 4 }",
];

describe("running validated scenario files", () => {
  test.prop(
    [fc.array(step, { minLength: 1, maxLength: 30 }), fc.integer({ min: 0, max: 0xffff })],
    {
      numRuns: 80,
      seed: 20261126,
    },
  )("never throws: every outcome is a check, a count or a violation", async (steps, seed) => {
    const spec = parseScenarioFile([...HEADER, ...steps].join("\n"), "fuzzed.yaml");
    if (!("steps" in spec)) throw new Error(`the generated file does not validate: ${spec}`);
    const r = await runScenario(scenarioFromFile(spec), seed);
    expect(r.checks.passed + r.checks.failed).toBeGreaterThanOrEqual(3);
    for (const f of r.failures) expect(f.message).toMatch(/^(fuzzed\.yaml:\d+: |[a-z0-9]+: )/);
    // The driver is Linux-faithful: the oracle finds nothing but the owners' own misuse (a PASID
    // freed while still attached, which the file may do).
    const misuse = /^PASID \d+ freed while still attached to /;
    expect(r.violations.filter((v) => !misuse.test(v.message)).map((v) => v.message)).toEqual([]);
  });
});
