import { describe, expect, test } from "vitest";
import {
  DEFAULT_VTD_CACHE_CONFIG,
  MINIMAL_VTD_CACHE_CONFIG,
  resolveVtdCacheConfig,
  type VtdCacheConfigInput,
} from "./cache-policy.js";

describe("VtdCacheConfig", () => {
  test("the default is maximal with the C baseline's 512 x 8 IOTLB", () => {
    expect(DEFAULT_VTD_CACHE_CONFIG).toMatchObject({
      policy: "maximal",
      iotlbSets: 512,
      iotlbWays: 8,
      contextEntries: 64,
      pasidEntries: 256,
      pscEntries: 64,
    });
    expect(resolveVtdCacheConfig()).toEqual(DEFAULT_VTD_CACHE_CONFIG);
  });

  test("the minimal policy has every capacity 0", () => {
    const cfg = resolveVtdCacheConfig({ policy: "minimal" });
    expect(cfg).toEqual(MINIMAL_VTD_CACHE_CONFIG);
    const c = MINIMAL_VTD_CACHE_CONFIG;
    expect([c.iotlbSets * c.iotlbWays, c.contextEntries, c.pasidEntries, c.pscEntries]).toEqual([
      0, 0, 0, 0,
    ]);
  });

  test("explicit capacities override the policy's defaults (tiny caches for tests)", () => {
    expect(resolveVtdCacheConfig({ iotlbSets: 2, iotlbWays: 2, pscEntries: 1 })).toMatchObject({
      policy: "maximal",
      iotlbSets: 2,
      iotlbWays: 2,
      pscEntries: 1,
      contextEntries: 64,
    });
  });

  test("cacheNotPresent is derived: only maximal with caching mode", () => {
    expect(resolveVtdCacheConfig({ cachingMode: true })).toMatchObject({ cacheNotPresent: true });
    expect(resolveVtdCacheConfig({ cachingMode: false })).toMatchObject({ cacheNotPresent: false });
    expect(resolveVtdCacheConfig({ policy: "minimal", cachingMode: true })).toMatchObject({
      cacheNotPresent: false,
    });
  });

  test("a resolved config is frozen", () => {
    expect(Object.isFrozen(resolveVtdCacheConfig())).toBe(true);
  });

  const bad: [VtdCacheConfigInput, RegExp][] = [
    [{ iotlbSets: 3 }, /iotlbSets: expected 0 or a power of two/],
    [{ iotlbSets: -1 }, /iotlbSets: expected an integer/],
    [{ iotlbWays: 1.5 }, /iotlbWays: expected an integer/],
    [{ iotlbWays: 257 }, /iotlbWays: expected at most 256/],
    [{ contextEntries: -4 }, /contextEntries/],
    [{ pasidEntries: Number.NaN }, /pasidEntries/],
    [{ pscEntries: 2 ** 21 }, /pscEntries/],
    [{ policy: "huge" as never }, /cache policy/],
    [{ cachingMode: 1 as never }, /cachingMode/],
  ];
  test.each(bad)("invalid input %j is rejected with a message naming the field", (input, msg) => {
    const r = resolveVtdCacheConfig(input);
    expect(typeof r).toBe("string");
    expect(r).toMatch(msg);
  });
});
