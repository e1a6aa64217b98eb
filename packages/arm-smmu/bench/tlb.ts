// Is SmmuTlb's lookup fast enough not to be the bottleneck of translate? Workload 3 of
// ../shared/bench-c/README.md (tlb_hit, tlb_mixed90) on the TLB alone: same geometry (512 sets x
// 8 ways, LRU stamps), same streams, same checks. A miss "walks" with a stub that computes the
// output address arithmetically, so smmu_tlb_mixed90 measures the cache, not DRAM (C's miss is a
// real table walk). The C key (DID, PASID, VPN) maps to (VMID, ASID, VPN): domain d has
// VMID d+1 and ASID 0x1000+d, stage-1 4-KiB entries.

import { W3 } from "../../../scripts/bench-kit.js";
import { runWorkload3, workload3Pa } from "../../../scripts/bench-workload3.js";
import { SMMU_PERM_R, SMMU_PERM_W, SMMU_TLB_S1, SmmuTlb } from "../src/hw/smmu-tlb.js";

const V0 = W3.V0;
const RW = SMMU_PERM_R | SMMU_PERM_W;

// The key is (VMID, ASID, VPN); a second lookup with the domains' VMIDs and ASIDs swapped must
// miss, so neither is left out of it.
{
  const t = new SmmuTlb(W3.SETS, W3.WAYS);
  t.insert(4, 0x1003, V0 + 77, 12, false, SMMU_TLB_S1, 1, RW);
  if (t.lookup(4, 0x1004, V0 + 77) !== -1 || t.lookup(5, 0x1003, V0 + 77) !== -1) {
    throw new Error("SmmuTlb: VMID and ASID must both be part of the key");
  }
}

runWorkload3({
  bench: "arm-smmu",
  prefix: "smmu_tlb_",
  unit: { hit: "SmmuTlb.lookup + permission check", mixed: "lookup; miss = stub walk + insert" },
  make: () => new SmmuTlb(W3.SETS, W3.WAYS),
  translate(t, d, k) {
    const vpn = V0 + k;
    const i = t.lookup(d + 1, 0x1000 + d, vpn);
    if (i >= 0) return (t.permOf(i) & SMMU_PERM_R) === 0 ? -1 : t.oaFrameFor(i, vpn) * 4096;
    const pa = workload3Pa(d, k);
    t.insert(d + 1, 0x1000 + d, vpn, 12, false, SMMU_TLB_S1, pa / 4096, RW);
    return pa;
  },
});
