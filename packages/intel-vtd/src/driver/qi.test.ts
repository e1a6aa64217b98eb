// The driver's invalidation queue against the unit: batches complete through the wait
// descriptor's status write, a refused descriptor (IQE) is replaced and reported, a device-TLB
// time-out (ITE) is retried and reported, and the queue keeps working afterwards.

import { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { IOTLB_G_DOMAIN, IOTLB_G_PAGE, PC_G_PASID } from "../format/inv-desc.js";
import { FSTS_IQE, FSTS_ITE, GCMD_QIE, VTD_REG } from "../format/registers.js";
import { VtdUnit } from "../hw/vtd-unit.js";
import { pagesOrder, QI_LENGTH, VtdQi } from "./qi.js";

function setup(wide = true) {
  const mem = new PhysMemory();
  const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x100_0000 });
  const unit = new VtdUnit({ mem });
  const qi = VtdQi.alloc(mem, unit, frames, wide);
  if (typeof qi === "string") throw new Error(qi);
  unit.write32(VTD_REG.GCMD, GCMD_QIE);
  return { mem, frames, unit, qi };
}

describe("VtdQi", () => {
  it("submits a batch with one wait and completes it", () => {
    const { unit, qi } = setup();
    const before = unit.stats.descriptors;
    qi.addIotlb(IOTLB_G_DOMAIN, 5, 0, 0, false);
    qi.addPasidCache(PC_G_PASID, 5, 7);
    qi.addPiotlb(5, 7, 0x40000, 3, true);
    expect(qi.pending).toBe(3);
    expect(qi.submit()).toBe(0);
    expect(qi.pending).toBe(0);
    expect(unit.stats.descriptors - before).toBe(4);
    expect(qi.stats).toMatchObject({
      submits: 1,
      descriptors: 4,
      waits: 1,
      iotlb: 1,
      piotlb: 1,
      pasidCache: 1,
      errors: 0,
    });
  });

  it("an empty submit touches nothing", () => {
    const { unit, qi } = setup();
    expect(qi.submit()).toBe(0);
    expect(unit.stats.descriptors).toBe(0);
    expect(qi.stats.submits).toBe(0);
  });

  it("wraps around the ring many times (legacy 128-bit descriptors too)", () => {
    for (const wide of [true, false]) {
      const { qi, unit } = setup(wide);
      for (let i = 0; i < 3 * QI_LENGTH; i++) {
        qi.addIotlb(IOTLB_G_PAGE, 2, i * 4096, 0, false);
        expect(qi.submit()).toBe(0);
      }
      expect(unit.queueStopped).toBe(false);
      expect(unit.stats.invalidationErrors).toBe(0);
    }
  });

  it("a descriptor the unit refuses (IQE) is replaced by the wait: EINVAL, and the queue goes on", () => {
    const { unit, qi } = setup();
    // AM above CAP.MAMV is reserved for a page-selective IOTLB invalidation.
    qi.addIotlb(IOTLB_G_PAGE, 2, 0, 63, false);
    expect(qi.submit()).toBe("EINVAL");
    expect(unit.read32(VTD_REG.FSTS) & FSTS_IQE).toBe(0);
    expect(unit.queueStopped).toBe(false);
    expect(qi.stats.errors).toBe(1);
    qi.addIotlb(IOTLB_G_DOMAIN, 2, 0, 0, false);
    expect(qi.submit()).toBe(0);
  });

  it("a device-TLB invalidation nobody answers times out (ITE): retried, then ETIMEDOUT; the queue goes on", () => {
    const { unit, qi } = setup();
    qi.addDevtlb(0x1234, 0x1234, 0, 0, 52);
    expect(qi.submit()).toBe("ETIMEDOUT");
    expect(unit.read32(VTD_REG.FSTS) & FSTS_ITE).toBe(0);
    expect(qi.stats.errors).toBe(1);
    qi.addIotlb(IOTLB_G_DOMAIN, 2, 0, 0, false);
    expect(qi.submit()).toBe(0);
  });

  it("a unit that processes only when stepped completes while the driver polls through idle", () => {
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x100_0000 });
    const unit = new VtdUnit({ mem, autoProcessQueue: false });
    const qi = VtdQi.alloc(mem, unit, frames, true) as VtdQi;
    unit.write32(VTD_REG.GCMD, GCMD_QIE);
    qi.addIotlb(IOTLB_G_DOMAIN, 3, 0, 0, false);
    expect(qi.submit()).toBe("ETIMEDOUT");
    qi.idle = () => unit.processInvalidations(1);
    qi.addIotlb(IOTLB_G_DOMAIN, 3, 0, 0, false);
    expect(qi.submit()).toBe(0);
  });

  it("a batch longer than the staging buffer keeps every descriptor's fields (growth does not drop them)", () => {
    const { mem, qi, unit } = setup();
    for (let did = 2; did < 22; did++) qi.addIotlb(IOTLB_G_DOMAIN, did, 0, 0, false);
    expect(qi.submit()).toBe(0);
    for (let i = 0; i < 20; i++) expect(mem.read32(qi.base + i * 32) >>> 16).toBe(i + 2);
    expect(unit.stats.invalidationErrors).toBe(0);
  });

  it("a wait descriptor can be staged (fence, no status write) and the closing wait can drain page requests", () => {
    const { mem, qi } = setup();
    qi.addWait(true);
    qi.addIotlb(IOTLB_G_DOMAIN, 2, 0, 0, false);
    expect(qi.submit(false, true)).toBe(0);
    // Staged wait: type 5, FN (bit 6), no SW (bit 5).
    expect(mem.read32(qi.base) & 0x7f).toBe(0x45);
    // Closing wait: SW and PD (bit 7).
    expect(mem.read32(qi.base + 64) & 0xff).toBe(0xa5);
  });

  it("pagesOrder rounds up to a power of two", () => {
    expect([1, 2, 3, 4, 5, 512, 513].map(pagesOrder)).toEqual([0, 1, 2, 2, 3, 9, 10]);
    expect(pagesOrder(2 ** 40)).toBe(40);
    expect(pagesOrder(2 ** 40 + 1)).toBe(41);
  });
});
