// Fuzzing VT-d and SMMUv3 under the oracle: the Linux-faithful drivers survive random operation
// sequences in every mode and cache configuration, strict or lazy, with or without devices racing
// the driver's invalidations, with no violation; every injected driver bug is found.

import { describe, expect, it } from "vitest";
import type { SmmuInjection } from "../machine/smmu-harness.js";
import type { VtdInjection } from "../machine/vtd-harness.js";
import { runFuzz, runVtdFuzz } from "./fuzz.js";

const CONFIGS = [
  { mode: "scalable", cachingMode: false, cache: "maximal" },
  { mode: "scalable", cachingMode: true, cache: "maximal" },
  { mode: "scalable", cachingMode: false, cache: "minimal" },
  { mode: "legacy", cachingMode: false, cache: "maximal" },
  { mode: "legacy", cachingMode: true, cache: "maximal" },
  { mode: "scalable", cachingMode: false, cache: "maximal", race: true },
  { mode: "scalable", cachingMode: true, cache: "minimal", race: true },
  { mode: "legacy", cachingMode: true, cache: "maximal", race: true },
  { mode: "scalable", cachingMode: false, cache: "maximal", lazy: true },
  { mode: "legacy", cachingMode: false, cache: "maximal", lazy: true, race: true },
] as const;

describe("random operation sequences on VT-d", () => {
  it.each(CONFIGS)(
    "find no violation with the driver as Linux writes it ($mode, CM=$cachingMode, $cache, lazy=$lazy, race=$race)",
    (cfg) => {
      for (let seed = 1; seed <= 6; seed++) {
        const r = runVtdFuzz({ seed, ops: 400, ...cfg });
        expect(r.violations.map((v) => v.message)).toEqual([]);
        expect(r.firstViolationOp).toBe(-1);
        expect(r.dmas).toBeGreaterThan(50);
      }
    },
  );

  it("are deterministic: the same seed gives the same run", () => {
    const a = runVtdFuzz({ seed: 9, ops: 300, inject: "skip-iotlb-flush" });
    const b = runVtdFuzz({ seed: 9, ops: 300, inject: "skip-iotlb-flush" });
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
    const c = runVtdFuzz({ seed: 9, ops: 300, race: true, lazy: true });
    const d = runVtdFuzz({ seed: 9, ops: 300, race: true, lazy: true });
    expect(JSON.stringify(c)).toBe(JSON.stringify(d));
  });

  it("race: devices do DMA while the driver waits for its invalidations, one descriptor at a time", () => {
    const quiet = runVtdFuzz({ seed: 3, ops: 300 });
    const racing = runVtdFuzz({ seed: 3, ops: 300, race: true });
    expect(quiet.races).toBe(0);
    expect(racing.races).toBeGreaterThan(100);
    // The owners' operations are the same; only the devices' timing differs.
    expect(racing.log).toEqual(quiet.log);
  });

  it("replace: a PASID's domain is replaced in place, and the old domain's pages fault after it", () => {
    const lines = [1, 2, 3].flatMap((seed) => runVtdFuzz({ seed, ops: 400 }).log);
    const replaced = lines.filter((l) =>
      /^pasid-replace d\d \d+ domain#\d+ -> domain#\d+$/.test(l),
    );
    expect(replaced.length).toBeGreaterThan(0);
    expect(lines.some((l) => / \(after replace\) -> /.test(l))).toBe(true);
  });

  it("lazy: flush-queue timeouts flush DMA-API unmaps, and the old addresses are tried after them", () => {
    const lines = [1, 2, 3].flatMap((seed) => runVtdFuzz({ seed, ops: 400, lazy: true }).log);
    expect(lines).toContain("flush-queue timeout");
    expect(lines.some((l) => / \(unmapped, after the flush-queue timeout\) -> /.test(l))).toBe(
      true,
    );
  });

  // The fuzzer probes right after a detach, before the driver's next call: an early-freed PASID
  // shows there as a stale translation, or as an ID reused while cached when it is freed first.
  // The SVA injections (notifier, PASID lifetime) are caught by the sva scenario's tests.
  const expected: Partial<Record<VtdInjection, readonly string[]>> = {
    "skip-iotlb-flush": ["stale-translation"],
    "skip-pasid-cache-flush": ["stale-translation"],
    "skip-devtlb-flush": ["stale-translation"],
    "early-pasid-free": ["stale-translation", "id-reuse"],
    "early-did-reuse": ["id-reuse"],
  };
  it.each(Object.keys(expected) as VtdInjection[])("find %s within a few seeds", (inject) => {
    let found: ReturnType<typeof runVtdFuzz> | null = null;
    for (let seed = 1; seed <= 8 && found === null; seed++) {
      const r = runVtdFuzz({ seed, ops: 400, mode: "scalable", inject });
      if (r.violationsTotal > 0) found = r;
    }
    expect(found).not.toBeNull();
    expect(found?.violations.some((v) => (expected[inject] ?? []).includes(v.kind))).toBe(true);
    // The log ends with the operation after which the first violation was seen.
    expect(found?.log.length).toBeGreaterThan(0);
    expect(found?.firstViolationOp).toBeGreaterThanOrEqual(0);
    expect(found?.firstViolationOp).toBeLessThanOrEqual(400);
  });
});

const SMMU_CONFIGS = [
  { cache: "maximal" },
  { cache: "minimal" },
  { cache: "maximal", race: true },
  { cache: "minimal", race: true },
  { cache: "maximal", lazy: true },
  { cache: "maximal", lazy: true, race: true },
] as const;

describe("random operation sequences on SMMUv3", () => {
  it.each(SMMU_CONFIGS)(
    "find no violation with the driver as Linux writes it ($cache, lazy=$lazy, race=$race)",
    (cfg) => {
      for (let seed = 1; seed <= 5; seed++) {
        const r = runFuzz({ arch: "smmu", seed, ops: 400, ...cfg });
        expect(r.violations.map((v) => v.message)).toEqual([]);
        expect(r.arch).toBe("smmu");
        expect(r.dmas).toBeGreaterThan(50);
      }
    },
  );

  it("race: devices do DMA while the driver waits for its CMD_SYNC, one command at a time", () => {
    const quiet = runFuzz({ arch: "smmu", seed: 3, ops: 300 });
    const racing = runFuzz({ arch: "smmu", seed: 3, ops: 300, race: true });
    expect(quiet.races).toBe(0);
    expect(racing.races).toBeGreaterThan(100);
    expect(racing.log).toEqual(quiet.log);
  });

  it("table unmaps: pages mapped in a 2 MiB window, the whole window unmapped (its level 3 table freed), then tried again", () => {
    const lines = [1, 2, 3].flatMap((seed) => runFuzz({ arch: "smmu", seed, ops: 400 }).log);
    expect(
      lines.filter((l) => / 0x40000000 2M \(frees its level 3 table\)$/.test(l)).length,
    ).toBeGreaterThan(3);
    expect(lines.some((l) => / \(after table unmap\) -> /.test(l))).toBe(true);
    // VT-d never draws it: its operation sequences stay as they were.
    const vtd = [1, 2, 3].flatMap((seed) => runVtdFuzz({ seed, ops: 400 }).log);
    expect(vtd.some((l) => /0x40000000/.test(l))).toBe(false);
  });

  const expected: Partial<Record<SmmuInjection, readonly string[]>> = {
    "skip-tlbi": ["stale-translation", "id-reuse"],
    "skip-cfgi": ["stale-translation", "spurious-fault", "id-reuse"],
    "skip-atc-inv": ["stale-translation"],
    "early-asid-reuse": ["id-reuse"],
    "torn-ste-write": ["torn-update"],
  };
  it.each(Object.keys(expected) as SmmuInjection[])("find %s within a few seeds", (inject) => {
    let found: ReturnType<typeof runFuzz> | null = null;
    for (let seed = 1; seed <= 8 && found === null; seed++) {
      const r = runFuzz({ arch: "smmu", seed, ops: 400, inject });
      if (r.violationsTotal > 0) found = r;
    }
    expect(found).not.toBeNull();
    expect(found?.violations.some((v) => (expected[inject] ?? []).includes(v.kind))).toBe(true);
  });
});
