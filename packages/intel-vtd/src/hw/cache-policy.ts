// How much a VT-d remapping unit caches: the policy (maximal or minimal) and every cache's capacity.

/**
 * "maximal": cache everything the spec permits, keep it until an invalidation that covers it (the
 * default for bug hunting: a missing flush shows up as a stale translation). "minimal": cache
 * nothing, every request walks (a reference to compare the maximal model with).
 */
export type VtdCachePolicy = "maximal" | "minimal";

/** Every cache capacity of one remapping unit. */
export interface VtdCacheConfig {
  readonly policy: VtdCachePolicy;
  /** IOTLB sets: 0 or a power of two. */
  readonly iotlbSets: number;
  /** IOTLB ways per set (0 = no IOTLB). */
  readonly iotlbWays: number;
  /** Context-cache entries. */
  readonly contextEntries: number;
  /** PASID-cache entries. */
  readonly pasidEntries: number;
  /** Paging-structure-cache entries (all levels and kinds together). */
  readonly pscEntries: number;
  /** CAP.CM as the unit reports it. */
  readonly cachingMode: boolean;
  /**
   * Derived: whether not-present and erroneous entries (context, PASID, paging entries) may be
   * cached. Only with CAP.CM=1 (caching mode, as in a virtual IOMMU) and the maximal policy;
   * otherwise a fault is never cached and the next request walks again.
   *
   * @spec VT-d 6.1 (caching mode), 10.4.2 (CAP.CM)
   */
  readonly cacheNotPresent: boolean;
}

/** The settable fields; `cacheNotPresent` is always derived. */
export type VtdCacheConfigInput = Partial<Omit<VtdCacheConfig, "cacheNotPresent">>;

/** Maximal caching with the C baseline's IOTLB geometry (512 x 8, see ../shared/bench-c). */
export const DEFAULT_VTD_CACHE_CONFIG: VtdCacheConfig = Object.freeze({
  policy: "maximal",
  iotlbSets: 512,
  iotlbWays: 8,
  contextEntries: 64,
  pasidEntries: 256,
  pscEntries: 64,
  cachingMode: false,
  cacheNotPresent: false,
});

/** Nothing cached: every capacity 0, every request walks. */
export const MINIMAL_VTD_CACHE_CONFIG: VtdCacheConfig = Object.freeze({
  policy: "minimal",
  iotlbSets: 0,
  iotlbWays: 0,
  contextEntries: 0,
  pasidEntries: 0,
  pscEntries: 0,
  cachingMode: false,
  cacheNotPresent: false,
});

const MAX_ENTRIES = 1 << 20;

/**
 * Fill `partial` from the policy's defaults (`policy` defaults to "maximal"; under "minimal" a
 * capacity may still be set explicitly) and check it. Returns the frozen config, or one message
 * naming the bad field.
 */
export function resolveVtdCacheConfig(partial: VtdCacheConfigInput = {}): VtdCacheConfig | string {
  const policy = partial.policy ?? "maximal";
  if (policy !== "maximal" && policy !== "minimal") {
    return `cache policy: expected "maximal" or "minimal", got ${JSON.stringify(policy)}`;
  }
  const base = policy === "maximal" ? DEFAULT_VTD_CACHE_CONFIG : MINIMAL_VTD_CACHE_CONFIG;
  const cfg = {
    policy,
    iotlbSets: partial.iotlbSets ?? base.iotlbSets,
    iotlbWays: partial.iotlbWays ?? base.iotlbWays,
    contextEntries: partial.contextEntries ?? base.contextEntries,
    pasidEntries: partial.pasidEntries ?? base.pasidEntries,
    pscEntries: partial.pscEntries ?? base.pscEntries,
    cachingMode: partial.cachingMode ?? base.cachingMode,
  };
  for (const key of [
    "iotlbSets",
    "iotlbWays",
    "contextEntries",
    "pasidEntries",
    "pscEntries",
  ] as const) {
    const v = cfg[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > MAX_ENTRIES) {
      return `cache ${key}: expected an integer in [0, ${MAX_ENTRIES}], got ${String(v)}`;
    }
  }
  if ((cfg.iotlbSets & (cfg.iotlbSets - 1)) !== 0) {
    return `cache iotlbSets: expected 0 or a power of two, got ${cfg.iotlbSets}`;
  }
  if (cfg.iotlbWays > 256) return `cache iotlbWays: expected at most 256, got ${cfg.iotlbWays}`;
  if (typeof cfg.cachingMode !== "boolean") {
    return `cache cachingMode: expected a boolean, got ${String(cfg.cachingMode)}`;
  }
  return Object.freeze({ ...cfg, cacheNotPresent: policy === "maximal" && cfg.cachingMode });
}
