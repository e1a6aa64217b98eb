// Is VtdIotlb's lookup fast enough not to be the bottleneck of translate? Workload 3 of
// ../shared/bench-c/README.md (tlb_hit, tlb_mixed90) on the IOTLB alone: same geometry (512 sets x
// 8 ways, LRU stamps), same streams, same checks. A miss "walks" with a stub that computes the PA
// arithmetically, so iotlb_mixed90 measures the cache, not DRAM (C's miss is a real table walk).
// Domain d has DID d+1 and PASID 0x10000+d, as in C.

import { W3 } from "../../../scripts/bench-kit.js";
import { runWorkload3, workload3Pa } from "../../../scripts/bench-workload3.js";
import {
  VTD_KIND_SECOND_STAGE,
  VTD_PERM_R,
  VTD_PERM_W,
  VTD_SHIFT_4K,
  VtdIotlb,
} from "../src/hw/iotlb.js";

const V0 = W3.V0;
const RW = VTD_PERM_R | VTD_PERM_W;

runWorkload3({
  bench: "intel-vtd",
  prefix: "iotlb_",
  unit: { hit: "VtdIotlb.lookup + permission check", mixed: "lookup; miss = stub walk + insert" },
  make: () => new VtdIotlb(W3.SETS, W3.WAYS),
  translate(t, d, k) {
    const vpn = V0 + k;
    const i = t.lookup(d + 1, 0x10000 + d, vpn);
    if (i >= 0) return (t.permOf(i) & VTD_PERM_R) === 0 ? -1 : t.paFrameOf(i) * 4096;
    const pa = workload3Pa(d, k);
    t.insert(d + 1, 0x10000 + d, vpn, VTD_SHIFT_4K, VTD_KIND_SECOND_STAGE, pa / 4096, RW);
    return pa;
  },
});
