// The invalidation log: which executed descriptor covers which stale cache entry.

import { VtdQi } from "@iommu-sim/intel-vtd/driver";
import { GCMD_QIE, VTD_REG } from "@iommu-sim/intel-vtd/format";
import { VtdUnit } from "@iommu-sim/intel-vtd/hw";
import { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import type { StaleEntry } from "./violation.js";
import { VtdInvalidationLog } from "./vtd-invalidation-log.js";

function setup() {
  const mem = new PhysMemory();
  const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x100_0000 });
  const unit = new VtdUnit({ mem, name: "dmar0" });
  const qi = VtdQi.alloc(mem, unit, frames, true) as VtdQi;
  unit.write32(VTD_REG.GCMD, GCMD_QIE);
  let t = 0;
  const log = new VtdInvalidationLog([unit], () => t);
  return { unit, qi, log, tick: () => t++ };
}

const iotlb = (did: number, pasid: number | null, iova: number, kind: string): StaleEntry => ({
  cache: "iotlb",
  where: "dmar0",
  fields: { DID: did, PASID: pasid, iova: `0x${iova.toString(16)}`, size: 4096, kind },
});

describe("VtdInvalidationLog", () => {
  it("finds the PASID-based IOTLB invalidation that covered a first-stage entry, only after the mark", () => {
    const { qi, log, tick } = setup();
    qi.addPiotlb(5, 3, 0x40000, 1, false);
    qi.submit();
    const mark = log.mark();
    tick();
    expect(log.coveringSince(mark, "dmar0", 0x10, iotlb(5, 3, 0x40000, "first-stage"))).toBeNull();
    qi.addPiotlb(5, 3, 0x40000, 1, false);
    qi.submit();
    expect(
      log.coveringSince(mark, "dmar0", 0x10, iotlb(5, 3, 0x40000, "first-stage")),
    ).toMatchObject({
      descriptor: "PASID-based IOTLB invalidation (type 6)",
      time: 1,
    });
    // Another page, PASID, DID or unit is not covered.
    expect(log.coveringSince(mark, "dmar0", 0x10, iotlb(5, 3, 0x80000, "first-stage"))).toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x10, iotlb(5, 4, 0x40000, "first-stage"))).toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x10, iotlb(6, 3, 0x40000, "first-stage"))).toBeNull();
    expect(log.coveringSince(mark, "dmar1", 0x10, iotlb(5, 3, 0x40000, "first-stage"))).toBeNull();
    // A page-selective type 6 does not select second-stage entries.
    expect(log.coveringSince(mark, "dmar0", 0x10, iotlb(5, 3, 0x40000, "second-stage"))).toBeNull();
  });

  it("applies type 2's scopes: global, domain, and page (first-stage entries of the DID whatever the address)", () => {
    const { qi, log } = setup();
    const mark = log.mark();
    qi.addIotlb(3, 7, 0x200000, 0, false);
    qi.submit();
    expect(
      log.coveringSince(mark, "dmar0", 0, iotlb(7, null, 0x200000, "second-stage")),
    ).not.toBeNull();
    expect(
      log.coveringSince(mark, "dmar0", 0, iotlb(7, null, 0x201000, "second-stage")),
    ).toBeNull();
    expect(
      log.coveringSince(mark, "dmar0", 0, iotlb(7, 1, 0x900000, "first-stage")),
    ).not.toBeNull();
    expect(
      log.coveringSince(mark, "dmar0", 0, iotlb(8, null, 0x200000, "second-stage")),
    ).toBeNull();
    qi.addIotlb(1, 0, 0, 0, false);
    qi.submit();
    expect(
      log.coveringSince(mark, "dmar0", 0, iotlb(8, null, 0x200000, "second-stage")),
    ).not.toBeNull();
  });

  it("matches PASID-cache, context-cache and device-TLB entries by their descriptors", () => {
    const { qi, log } = setup();
    const mark = log.mark();
    qi.addPasidCache(1, 4, 9);
    qi.addContext(3, 0, 0x18, 0);
    qi.addPasidDevtlb(0x20, 0, 9, 0, 0x7000, 0);
    qi.submit();
    const pc = (did: number, pasid: number): StaleEntry => ({
      cache: "pasid-cache",
      where: "dmar0",
      fields: { DID: did, PASID: pasid },
    });
    expect(log.coveringSince(mark, "dmar0", 0x20, pc(4, 9))).not.toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x20, pc(4, 8))).toBeNull();
    const cc: StaleEntry = { cache: "context-cache", where: "dmar0", fields: { DID: 0 } };
    expect(log.coveringSince(mark, "dmar0", 0x18, cc)).not.toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x19, cc)).toBeNull();
    const atc = (pasid: number, iova: number): StaleEntry => ({
      cache: "device-tlb",
      where: "acc0",
      fields: { pasid, iova: `0x${iova.toString(16)}`, size: 4096 },
    });
    expect(log.coveringSince(mark, "dmar0", 0x20, atc(9, 0x7000))).not.toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x20, atc(9, 0x8000))).toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x20, atc(8, 0x7000))).toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x21, atc(9, 0x7000))).toBeNull();
    // No mark: nothing is searched.
    expect(log.coveringSince(-1, "dmar0", 0x20, pc(4, 9))).toBeNull();
  });
});
