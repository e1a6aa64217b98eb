// Fuzzing VT-d and SMMUv3 under the oracle: the Linux-faithful drivers survive random operation
// sequences in every mode and cache configuration, strict or lazy, with or without devices racing
// the driver's invalidations, with processes sharing their address spaces with devices (SVA), with
// no violation; every injected driver or SVA-layer bug is found.

import { bug, ModelBug } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import type { Harness } from "../machine/harness.js";
import type { SmmuInjection } from "../machine/smmu-harness.js";
import type { VtdInjection } from "../machine/vtd-harness.js";
import { type FuzzResult, runFuzz, runVtdFuzz } from "./fuzz.js";

/** What the SVA injections (either architecture) must show as. */
const SVA_EXPECTED = {
  "skip-notifier-flush": ["stale-translation"],
  "skip-atc-on-notifier": ["stale-translation"],
  "free-pasid-on-unbind": ["id-reuse", "isolation"],
} as const;

/**
 * Racing DMAs draw nothing from the owners' PRNG, so with one seed the owners do the same
 * operations. Whole logs agree only where no racing read faulted on a device whose faults are
 * handled (d2's and the accelerator's page requests, d3's stalls): a page a handler mapped in, or
 * a request still outstanding, changes what later DMAs see, and demand-paged pages change the
 * mappings the owners pick from. These seeds are such runs (they move when the operation mix does).
 */
const RACE_SEED = { vtd: 5, smmu: 1 } as const;

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
    const quiet = runVtdFuzz({ seed: RACE_SEED.vtd, ops: 300 });
    const racing = runVtdFuzz({ seed: RACE_SEED.vtd, ops: 300, race: true });
    expect(quiet.races).toBe(0);
    expect(racing.races).toBeGreaterThan(100);
    // The owners' operations are the same; only the devices' timing differs.
    expect(racing.log).toEqual(quiet.log);
    expect(quiet.log.some((l) => l.startsWith("sva-dma "))).toBe(true);
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
  // Its processes probe right after munmap / mprotect / exit: a notifier that did not flush shows
  // as a stale translation; a PASID freed while its mm lives, as an ID reused (or, once another
  // process binds it, as one process's work reaching the other's memory).
  const expected: Partial<Record<VtdInjection, readonly string[]>> = {
    "skip-iotlb-flush": ["stale-translation"],
    "skip-pasid-cache-flush": ["stale-translation"],
    "skip-devtlb-flush": ["stale-translation"],
    "early-pasid-free": ["stale-translation", "id-reuse"],
    "early-did-reuse": ["id-reuse"],
    ...SVA_EXPECTED,
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
    const quiet = runFuzz({ arch: "smmu", seed: RACE_SEED.smmu, ops: 300 });
    const racing = runFuzz({ arch: "smmu", seed: RACE_SEED.smmu, ops: 300, race: true });
    expect(quiet.races).toBe(0);
    expect(racing.races).toBeGreaterThan(100);
    expect(racing.log).toEqual(quiet.log);
    expect(quiet.log.some((l) => l.startsWith("sva-dma "))).toBe(true);
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
    ...SVA_EXPECTED,
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

describe("processes and SVA among the operations", () => {
  const ARCHS = ["vtd", "smmu"] as const;
  /** Clean runs, seeds 1..3 of 400 operations, once per architecture. */
  const clean = new Map<string, FuzzResult[]>();
  const cleanRuns = (arch: "vtd" | "smmu"): FuzzResult[] => {
    let runs = clean.get(arch);
    if (runs === undefined) {
      runs = [1, 2, 3].map((seed) => runFuzz({ arch, seed, ops: 400 }));
      clean.set(arch, runs);
    }
    return runs;
  };
  const count = (lines: readonly string[], re: RegExp): number =>
    lines.filter((l) => re.test(l)).length;

  it.each(ARCHS)(
    "find no violation on %s while processes map, unmap, protect, bind, unbind, exit while bound and have their work done",
    (arch) => {
      const runs = cleanRuns(arch);
      for (const r of runs) {
        expect(r.violations.map((v) => v.message)).toEqual([]);
        expect(r.stopped).toBeNull();
        expect(r.ops).toBe(400);
      }
      const lines = runs.flatMap((r) => r.log);
      // Every kind of SVA operation was drawn, so a generator that drew none cannot pass.
      expect(count(lines, /^process-create p\d+ \(\w+, \d PASIDs\)$/)).toBeGreaterThan(5);
      expect(count(lines, /^mmap p\d+ 0x[0-9a-f]+ \dp prot=\d$/)).toBeGreaterThan(10);
      expect(count(lines, /^munmap p\d+ /)).toBeGreaterThan(3);
      expect(count(lines, /^mprotect p\d+ /)).toBeGreaterThan(3);
      expect(count(lines, /^cpu-write p\d+ 0x[0-9a-f]+ \d+B$/)).toBeGreaterThan(3);
      expect(count(lines, /^sva-bind (wq|accel|narrow) p\d+ -> PASID \d+$/)).toBeGreaterThan(10);
      expect(count(lines, /^sva-unbind (wq|accel|narrow) p\d+$/)).toBeGreaterThan(5);
      expect(count(lines, /^exit p\d+ \(still bound\)$/)).toBeGreaterThan(0);
      // Work that went through: the PRI accelerator paging in, the work queue on touched pages,
      // ENQCMD descriptors completed.
      expect(
        count(lines, /^sva-dma accel p\d+ pasid=\d+ (read|write) 0x[0-9a-f]+ -> 0$/),
      ).toBeGreaterThan(0);
      expect(
        count(lines, /^sva-dma wq p\d+ pasid=\d+ (read|write) 0x[0-9a-f]+ -> 0$/),
      ).toBeGreaterThan(0);
      expect(
        count(lines, /^enqcmd wq p\d+ .* ([12]) descriptor\(s\), done -> \1$/),
      ).toBeGreaterThan(0);
      // A second bind of the same device to the same process: the same PASID, one more user.
      expect(
        lines.some((l, i) => /^sva-bind \w+ p\d+ -> PASID \d+$/.test(l) && lines[i + 1] === l),
      ).toBe(true);
    },
  );

  it.each(ARCHS)(
    "on %s, every DMA right after a munmap, an mprotect that takes a permission, an exit or a last unbind faults",
    (arch) => {
      const lines = cleanRuns(arch).flatMap((r) => r.log);
      const after =
        /^sva-dma \w+ p\d+ pasid=\d+ (read|write) 0x[0-9a-f]+ \(after (munmap|mprotect|exit|unbind)[^)]*\) -> (\S+)$/;
      const probes = lines.flatMap((l) => {
        const m = after.exec(l);
        return m === null ? [] : [{ why: m[2], status: m[3] }];
      });
      for (const why of ["munmap", "mprotect", "exit", "unbind"])
        expect(
          probes.some((p) => p.why === why),
          why,
        ).toBe(true);
      expect(probes.filter((p) => p.status === "0")).toEqual([]);
      // The caches had something to lose: the same pages went through just before.
      expect(count(lines, /\(before (munmap|mprotect|exit|unbind)[^)]*\) -> 0$/)).toBeGreaterThan(
        10,
      );
    },
  );

  it.each(ARCHS)(
    "on %s, binds refused over a user's PASID limit, beyond a device's PASID width or for an exited process are refusals, not violations",
    (arch) => {
      const runs = [1, 2, 3, 4, 5, 6].map((seed) => runFuzz({ arch, seed, ops: 400 }));
      for (const r of runs) expect(r.violations.map((v) => v.message)).toEqual([]);
      const lines = runs.flatMap((r) => r.log);
      // Over the user's limit; a process's PASID beyond the narrow device's 2 bits; its 3 PASIDs
      // all taken by a first bind; a process that has exited.
      for (const errno of ["EBUSY", "EOVERFLOW", "ENOSPC", "EINVAL"])
        expect(
          lines.some((l) => l.startsWith("sva-bind ") && l.endsWith(` -> ${errno}`)),
          errno,
        ).toBe(true);
    },
  );

  it("skip-notifier-flush leaves IOTLB entries stale, skip-atc-on-notifier only device-TLB / ATC entries", () => {
    const iotlb = { vtd: ["iotlb"], smmu: ["tlb", "walk-cache"] };
    const atc = { vtd: "device-tlb", smmu: "atc" };
    const staleIn = (r: FuzzResult): string[] =>
      r.violations
        .filter((v) => v.kind === "stale-translation")
        .map((v) => v.staleEntry?.cache ?? "none");
    for (const arch of ARCHS) {
      // A device that did not warm its own ATC reaches the IOTLB the notifier left stale.
      let seen = false;
      for (let seed = 1; seed <= 8 && !seen; seed++) {
        const r = runFuzz({ arch, seed, ops: 400, inject: "skip-notifier-flush" });
        seen = staleIn(r).some((c) => iotlb[arch].includes(c));
      }
      expect(seen, arch).toBe(true);
      const onlyAtc = [1, 2, 3].flatMap((seed) =>
        staleIn(runFuzz({ arch, seed, ops: 400, inject: "skip-atc-on-notifier" })),
      );
      expect(onlyAtc.length).toBeGreaterThan(0);
      expect(new Set(onlyAtc)).toEqual(new Set([atc[arch]]));
    }
  });

  it("free-pasid-on-unbind: the PASID a live process still holds is reported when it goes back", () => {
    for (const arch of ARCHS) {
      const r = runFuzz({ arch, seed: 1, ops: 400, inject: "free-pasid-on-unbind" });
      const v = r.violations.find((x) => x.kind === "id-reuse" && x.id?.space === "pasid");
      expect(v?.message).toMatch(/freed while the mm of p\d+ still holds it/);
      // Seen at the unbind, not only at teardown.
      expect(r.firstViolationOp).toBeLessThan(400);
      expect(r.log.at(-1)).toMatch(/^sva-(unbind \w+ p\d+|dma .*\(after unbind\).*)$/);
    }
  });

  it("sva: false, or legacy VT-d, has no processes: the machine and operations of before", () => {
    for (const r of [
      runVtdFuzz({ seed: 2, ops: 300, sva: false }),
      runVtdFuzz({ seed: 2, ops: 300, mode: "legacy" }),
      runFuzz({ arch: "smmu", seed: 2, ops: 300, sva: false }),
    ]) {
      expect(r.violations).toEqual([]);
      expect(
        count(r.log, /^(process-create|mmap|munmap|mprotect|cpu-write|sva-|exit|enqcmd)/),
      ).toBe(0);
    }
    expect(JSON.stringify(runVtdFuzz({ seed: 2, ops: 300, sva: false }))).toBe(
      JSON.stringify(runVtdFuzz({ seed: 2, ops: 300, sva: false })),
    );
  });

  it("a run whose model trips over memory a violation corrupted stops there and keeps the violation; before any violation it throws", () => {
    // What a device wrote where the tables never let it (a process's page tables, say) can make
    // the model fail later: planted here as a CPU write that fails once a violation was seen.
    const trip =
      (always: boolean) =>
      (h: Harness): void => {
        const w = h.sva;
        const cpuWrite = w.cpuWrite.bind(w);
        w.cpuWrite = (p, addr, bytes) => {
          if (always || h.oracle.stats.violations > 0) bug(`page tables of ${p.name} trodden on`);
          return cpuWrite(p, addr, bytes);
        };
      };
    for (const arch of ARCHS) {
      const r = runFuzz({
        arch,
        seed: 1,
        ops: 400,
        inject: "skip-notifier-flush",
        setup: trip(false),
      });
      expect(r.stopped).toMatch(/^page tables of p\d+ trodden on$/);
      expect(r.ops).toBeLessThan(400);
      expect(r.violations.some((v) => v.kind === "stale-translation")).toBe(true);
      expect(r.firstViolationOp).toBeGreaterThanOrEqual(0);
      expect(r.firstViolationOp).toBeLessThanOrEqual(r.ops);
      // Without the injection nothing trips.
      expect(runFuzz({ arch, seed: 1, ops: 400, setup: trip(false) }).stopped).toBeNull();
      // A failure with no violation before it is the model's own bug.
      expect(() => runFuzz({ arch, seed: 1, ops: 400, setup: trip(true) })).toThrow(ModelBug);
    }
  });
});
