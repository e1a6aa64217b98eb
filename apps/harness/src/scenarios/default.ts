// The default scenario of `iommu-sim run`. For now a placeholder on the PASID space alone, until
// the mock IOMMU of iommu-core can carry a real run.

import { INVALID_IOASID, IoasidSet, IoasidSpace } from "@iommu-sim/ioasid";
import type { Scenario, ScenarioContext } from "../scenario.js";

/** PCIe PASIDs are 20 bits wide. */
const PASID_MAX = (1 << 20) - 1;

/** Allocate, free and reallocate a seed-dependent number of PASIDs, checking each result. */
export const defaultScenario: Scenario = {
  name: "default",
  arch: "mock",
  description: "allocate, free and reallocate PASIDs (placeholder until the mock IOMMU runs)",
  run(ctx: ScenarioContext): void {
    const space = new IoasidSpace();
    const set = new IoasidSet("default");
    const min = 1 + (ctx.seed % 64);
    const count = 8 + (ctx.seed % 9);

    const ids: number[] = [];
    for (let i = 0; i < count; i++) {
      const id = space.alloc(set, min, PASID_MAX, null);
      ctx.countOp();
      ctx.check(
        "pasid-alloc-lowest",
        id === min + i,
        `alloc #${i} returned ${String(id)}, expected ${min + i}`,
      );
      if (typeof id === "number") ids.push(id);
    }

    // Free every other PASID; the lowest freed one must be the next handed out.
    let live = ids.length;
    for (let i = 0; i < ids.length; i += 2) {
      const freed = space.free(ids[i]);
      ctx.countOp();
      ctx.check("pasid-free", freed === 0, `free(${ids[i]}) returned ${String(freed)}`);
      if (freed === 0) live--;
    }
    const again = space.free(ids[0]);
    ctx.countOp();
    ctx.check("pasid-double-free", again === "ENOENT", `second free returned ${String(again)}`);
    const reused = space.alloc(set, min, PASID_MAX, null);
    ctx.countOp();
    ctx.check("pasid-reuse-lowest", reused === ids[0], `realloc returned ${String(reused)}`);
    if (typeof reused === "number") live++;
    ctx.check("pasid-valid", reused !== INVALID_IOASID, "realloc returned INVALID_IOASID");

    // Teardown returns the space to its baseline.
    const freedAll = space.freeAll(set);
    ctx.countOp();
    ctx.check("pasid-free-all", freedAll === live, `freeAll freed ${freedAll}, expected ${live}`);
    ctx.check("pasid-no-leak", space.size() === 0, `${space.size()} PASIDs left after freeAll`);
  },
};
