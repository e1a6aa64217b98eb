import { describe, expect, it } from "vitest";
import { VtdHarness } from "../src/machine/vtd-harness.js";
import { runScenario } from "../src/scenario.js";
import { harnessScenario } from "../src/scenarios/machine-default.js";

const SPEC = { units: [{ name: "dmar0" }], devices: [] };

describe("harnessScenario", () => {
  it("a throw after the oracle reported a violation stops the run with a failed check and keeps the violations", async () => {
    const s = harnessScenario(
      "t",
      "vtd",
      "test",
      (seed) => new VtdHarness(SPEC, seed),
      (h) => {
        // Stand in for a violation that wrecked memory, then for what the model trips over.
        (h.oracle as unknown as { report(v: unknown): void }).report({
          kind: "isolation",
          time: 0,
          message: "planted",
        });
        throw new Error("CpuPgtable: pgd dropped while tables or entries remain");
      },
    );
    const r = await runScenario(s, 1);
    expect(r.violationsTotal).toBe(1);
    expect(r.failures).toEqual([
      {
        check: "run",
        message:
          "stopped after the oracle's violations wrecked the machine's memory: CpuPgtable: pgd dropped while tables or entries remain",
      },
    ]);
  });

  it("a throw without a violation is a bug of the model and propagates", async () => {
    const s = harnessScenario(
      "t",
      "vtd",
      "test",
      (seed) => new VtdHarness(SPEC, seed),
      () => {
        throw new Error("model bug");
      },
    );
    await expect(runScenario(s, 1)).rejects.toThrow("model bug");
  });
});
