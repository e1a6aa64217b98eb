import { describe, expect, test } from "vitest";
import {
  DEFAULT_SMMU_CACHE_CONFIG,
  MINIMAL_SMMU_CACHE_CONFIG,
  resolveSmmuCacheConfig,
} from "./smmu-cache-policy.js";

describe("resolveSmmuCacheConfig", () => {
  test("no input gives the maximal defaults: TLB 512 x 8, STE 64, CD 256, walk 64", () => {
    expect(resolveSmmuCacheConfig()).toEqual(DEFAULT_SMMU_CACHE_CONFIG);
    expect(DEFAULT_SMMU_CACHE_CONFIG).toEqual({
      policy: "maximal",
      tlbSets: 512,
      tlbWays: 8,
      steEntries: 64,
      cdEntries: 256,
      walkEntries: 64,
    });
  });

  test("the minimal policy caches nothing unless a capacity is given", () => {
    expect(resolveSmmuCacheConfig({ policy: "minimal" })).toEqual(MINIMAL_SMMU_CACHE_CONFIG);
    const cfg = resolveSmmuCacheConfig({ policy: "minimal", steEntries: 4 });
    expect(cfg).toMatchObject({ policy: "minimal", steEntries: 4, tlbWays: 0 });
  });

  test("a partial maximal config keeps the other defaults and is frozen", () => {
    const cfg = resolveSmmuCacheConfig({ tlbSets: 2, tlbWays: 1 });
    expect(cfg).toMatchObject({ tlbSets: 2, tlbWays: 1, cdEntries: 256 });
    expect(Object.isFrozen(cfg)).toBe(true);
  });

  test("capacity 0 everywhere is allowed", () => {
    const cfg = resolveSmmuCacheConfig({ tlbSets: 0, tlbWays: 0, cdEntries: 0 });
    expect(typeof cfg).toBe("object");
  });

  test("each bad value gives one message naming its field", () => {
    expect(resolveSmmuCacheConfig({ policy: "huge" as never })).toMatch(/cache policy/);
    expect(resolveSmmuCacheConfig({ tlbSets: 3 })).toMatch(/tlbSets.*power of two/);
    expect(resolveSmmuCacheConfig({ tlbWays: 257 })).toMatch(/tlbWays.*at most 256/);
    expect(resolveSmmuCacheConfig({ steEntries: -1 })).toMatch(/steEntries/);
    expect(resolveSmmuCacheConfig({ cdEntries: 1.5 })).toMatch(/cdEntries/);
    expect(resolveSmmuCacheConfig({ walkEntries: "8" as never })).toMatch(/walkEntries/);
    expect(resolveSmmuCacheConfig({ tlbSets: 2 ** 21 })).toMatch(/tlbSets/);
  });
});
