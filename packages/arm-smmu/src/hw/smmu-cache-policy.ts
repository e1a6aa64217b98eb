// How much an SMMUv3 caches: the policy (maximal or minimal) and every cache's capacity.

/**
 * "maximal": cache everything the spec permits and keep it until an invalidation command that is
 * required to remove it (the default for bug hunting: a missing or too-narrow invalidation shows
 * up as a stale translation). "minimal": cache nothing, every request fetches its STE and CD and
 * walks (the reference the maximal model is compared with).
 *
 * @spec SMMUv3 16.2 (caching is optional; what each cache may hold)
 */
export type SmmuCachePolicy = "maximal" | "minimal";

/** Every cache capacity of one SMMU. */
export interface SmmuCacheConfig {
  readonly policy: SmmuCachePolicy;
  /** TLB sets: 0 or a power of two. */
  readonly tlbSets: number;
  /** TLB ways per set (0 = no TLB). */
  readonly tlbWays: number;
  /** STE-cache entries (decoded STEs by StreamID). */
  readonly steEntries: number;
  /** CD-cache entries (decoded CDs by StreamID and SubstreamID). */
  readonly cdEntries: number;
  /** Walk-cache entries (table descriptors of both stages together). */
  readonly walkEntries: number;
}

/** Maximal caching with the C baseline's TLB geometry (512 x 8, see ../shared/bench-c). */
export const DEFAULT_SMMU_CACHE_CONFIG: SmmuCacheConfig = Object.freeze({
  policy: "maximal",
  tlbSets: 512,
  tlbWays: 8,
  steEntries: 64,
  cdEntries: 256,
  walkEntries: 64,
});

/** Nothing cached: every capacity 0, every request fetches and walks. */
export const MINIMAL_SMMU_CACHE_CONFIG: SmmuCacheConfig = Object.freeze({
  policy: "minimal",
  tlbSets: 0,
  tlbWays: 0,
  steEntries: 0,
  cdEntries: 0,
  walkEntries: 0,
});

const MAX_ENTRIES = 1 << 20;
const MAX_WAYS = 256;
const CAPACITY_KEYS = ["tlbSets", "tlbWays", "steEntries", "cdEntries", "walkEntries"] as const;

/**
 * Fill `partial` from the policy's defaults (`policy` defaults to "maximal"; under "minimal" a
 * capacity may still be set explicitly) and check it. Returns the frozen config, or one message
 * naming the bad field (for a scenario file or the CLI to report).
 */
export function resolveSmmuCacheConfig(
  partial: Partial<SmmuCacheConfig> = {},
): SmmuCacheConfig | string {
  const policy = partial.policy ?? "maximal";
  if (policy !== "maximal" && policy !== "minimal") {
    return `cache policy: expected "maximal" or "minimal", got ${JSON.stringify(policy)}`;
  }
  const base = policy === "maximal" ? DEFAULT_SMMU_CACHE_CONFIG : MINIMAL_SMMU_CACHE_CONFIG;
  const cfg = {
    policy,
    tlbSets: partial.tlbSets ?? base.tlbSets,
    tlbWays: partial.tlbWays ?? base.tlbWays,
    steEntries: partial.steEntries ?? base.steEntries,
    cdEntries: partial.cdEntries ?? base.cdEntries,
    walkEntries: partial.walkEntries ?? base.walkEntries,
  };
  for (const key of CAPACITY_KEYS) {
    const v: unknown = cfg[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > MAX_ENTRIES) {
      return `cache ${key}: expected an integer in [0, ${MAX_ENTRIES}], got ${String(v)}`;
    }
  }
  if ((cfg.tlbSets & (cfg.tlbSets - 1)) !== 0) {
    return `cache tlbSets: expected 0 or a power of two, got ${cfg.tlbSets}`;
  }
  if (cfg.tlbWays > MAX_WAYS) {
    return `cache tlbWays: expected at most ${MAX_WAYS}, got ${cfg.tlbWays}`;
  }
  return Object.freeze(cfg);
}
