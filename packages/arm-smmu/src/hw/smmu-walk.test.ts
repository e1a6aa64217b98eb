import { DMA_READ, DMA_WRITE, XLATE_OK } from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { CMDQ_OP } from "../format/commands.js";
import { EVT_ID } from "../format/events.js";
import { SmmuTestMachine, smmuTestMachine } from "../testing/table-builder.js";

const VA = 0x4000_0000;
const PA = 0x8000_0000;

function s1(m: SmmuTestMachine, pgShift = 12, cd: Record<string, number> = {}, oas?: number) {
  const pt = m.b.lpae(1, pgShift, 48);
  const cdt = m.b.cdTable(0);
  m.b.setCd(cdt, 0, m.b.s1CdFields(pt, 1, cd));
  m.b.setSte(m.st, 1, { Config: 5, S1ContextPtr: cdt.ptr });
  void oas;
  return pt;
}

describe("stage 1 walk", () => {
  it("a 64K level 1 block (4 TiB) needs a 52-bit output size", () => {
    const m = smmuTestMachine({ features: { oas: 52, vax: true } });
    const pt = m.b.lpae(1, 16, 52);
    const cdt = m.b.cdTable(0);
    m.b.setCd(cdt, 0, m.b.s1CdFields(pt, 1, { T0SZ: 12, IPS: 6 }));
    m.b.setSte(m.st, 1, { Config: 5, S1ContextPtr: cdt.ptr });
    pt.map(0x400_0000_0000, 0, 1);
    expect(m.dma(1, -1, 0x400_0000_0000 + 0x1234_5000).pa).toBe(0x1234_5000);
    const m2 = smmuTestMachine();
    const p2 = s1(m2, 16);
    p2.map(0x400_0000_0000, 0, 1);
    expect(m2.dma(1, -1, 0x400_0000_0000).code).toBe(EVT_ID.F_TRANSLATION);
  });

  it("output address bits [49:48] in a 4K descriptor are an Address Size fault", () => {
    const m = smmuTestMachine();
    const pt = s1(m);
    pt.map(VA, PA, 3, { hiBits: 1 << 16 });
    expect(m.dma(1, -1, VA).code).toBe(EVT_ID.F_ADDR_SIZE);
  });

  it("a table address above IPS is an Address Size fault at the table's level", () => {
    const m = smmuTestMachine();
    const pt = s1(m, 12, { IPS: 2 });
    pt.raw(VA, 0, (0x100_0000_0000 % 2 ** 32) | 3, 0x100);
    expect(m.dma(1, -1, VA).code).toBe(EVT_ID.F_ADDR_SIZE);
  });

  it("APTable limits the leaves below: read-only and privileged-only", () => {
    const m = smmuTestMachine();
    const pt = s1(m);
    pt.map(VA, PA, 3, {}, { apTable: 2 });
    expect(m.dma(1, -1, VA, DMA_WRITE).code).toBe(EVT_ID.F_PERMISSION);
    expect(m.dma(1, -1, VA, DMA_READ).status).toBe(XLATE_OK);
    const m2 = smmuTestMachine();
    const p2 = s1(m2);
    p2.map(VA, PA, 3, {}, { apTable: 1 });
    expect(m2.dma(1, -1, VA, DMA_READ).code).toBe(EVT_ID.F_PERMISSION);
    expect(m2.dma(1, -1, VA, DMA_READ, { priv: true }).status).toBe(XLATE_OK);
  });

  it("HAD0 makes APTable ignored", () => {
    const m = smmuTestMachine();
    const pt = s1(m, 12, { HAD0: 1 });
    pt.map(VA, PA, 3, {}, { apTable: 2 });
    expect(m.dma(1, -1, VA, DMA_WRITE).status).toBe(XLATE_OK);
  });

  it("an input address outside TTB0's range is a translation fault (T0SZ 25, 39-bit VA)", () => {
    const m = smmuTestMachine();
    const pt = m.b.lpae(1, 12, 39);
    const cdt = m.b.cdTable(0);
    m.b.setCd(cdt, 0, m.b.s1CdFields(pt, 1));
    m.b.setSte(m.st, 1, { Config: 5, S1ContextPtr: cdt.ptr });
    pt.map(VA, PA);
    expect(m.dma(1, -1, VA).pa).toBe(PA);
    expect(m.dma(1, -1, 2 ** 39 + VA).code).toBe(EVT_ID.F_TRANSLATION);
  });

  it("TBI0 ignores the top byte", () => {
    const m = smmuTestMachine();
    const pt = s1(m, 12, { TBI0: 1 });
    pt.map(VA, PA);
    expect(m.dma(1, -1, 0x5a00_0000_0000_0000 + VA).pa).toBe(PA);
  });
});

describe("walk cache", () => {
  it("a walk resumes from a cached table; Leaf = 1 leaves the walk cache, Leaf = 0 removes it", () => {
    const m = smmuTestMachine();
    const pt = s1(m);
    pt.map(VA, PA);
    pt.map(VA + 4096, PA + 4096);
    const w = m.smmu.walker;
    m.dma(1, -1, VA);
    const full = w.reads;
    expect(full).toBe(4);
    m.dma(1, -1, VA + 4096);
    expect(w.reads - full).toBe(1);
    m.submit(SmmuTestMachine.command(CMDQ_OP.TLBI_NH_VA, { ASID: 1, Address: VA + 8192, Leaf: 1 }));
    expect(m.smmu.walkCache.size()).toBeGreaterThan(0);
    m.submit(SmmuTestMachine.command(CMDQ_OP.TLBI_NH_VA, { ASID: 1, Address: VA + 8192, Leaf: 0 }));
    expect(m.smmu.walkCache.size()).toBe(0);
  });

  it("a stale cached table is used until the Leaf = 0 invalidation", () => {
    const m = smmuTestMachine();
    const pt = s1(m);
    pt.map(VA, PA);
    m.dma(1, -1, VA);
    // Replace the level 2 descriptor with a new table that maps VA + 4K elsewhere.
    const l2at = pt.entryAddr(VA, 2);
    const newL3 = m.b.frame();
    m.mem.write64(newL3 + 8, (0x9000_0000 | 0x400 | 0x3 | 0x40 | 0x800) >>> 0, 0);
    m.mem.write64(l2at, (newL3 | 3) >>> 0, 0);
    expect(m.dma(1, -1, VA + 4096).code).toBe(EVT_ID.F_TRANSLATION);
    m.submit(SmmuTestMachine.command(CMDQ_OP.TLBI_NH_VA, { ASID: 1, Address: VA, Leaf: 0 }));
    expect(m.dma(1, -1, VA + 4096).pa).toBe(0x9000_0000);
  });
});
