import { XLATE_FAULT, XLATE_OK } from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { PGTT_FL, PGTT_NESTED, PGTT_SL } from "../src/format/pasid-entry.js";
import { LEGACY_VTD_CAPS } from "../src/hw/vtd-caps.js";
import { vtdTestMachine, xlate } from "./table-builder.js";

describe("smoke", () => {
  it("legacy second stage", () => {
    const m = vtdTestMachine({ caps: LEGACY_VTD_CAPS });
    const root = m.b.frame();
    m.b.setContext(m.rta, 0x10, { SLPTPTR: root, AW: 2, DID: 5 });
    m.b.ssMap(root, 4, 0x1234_5000, 0x8_0000_0000);
    const r = xlate(m.unit, 0x10, 0x1234_5678);
    expect(r).toMatchObject({ status: XLATE_OK, pa: 0x8_0000_0678 });
    const f = xlate(m.unit, 0x10, 0x2234_5678, { write: true });
    expect(f).toMatchObject({ status: XLATE_FAULT, code: 5 });
    expect(m.unit.read32(0x34) & 2).toBe(2);
  });
  it("scalable first stage, second stage, nested", () => {
    const m = vtdTestMachine();
    const dir = m.b.setSmContext(m.rta, 0x10, {});
    const fl = m.b.frame();
    m.b.fsMap(fl, 4, 0x4000_0000, 0x9000_0000);
    m.b.setPasidEntry(dir, 0, { PGTT: PGTT_FL, DID: 3, FLPTR: fl, AW: 2 });
    expect(xlate(m.unit, 0x10, 0x4000_0010)).toMatchObject({ status: XLATE_OK, pa: 0x9000_0010 });
    const sl = m.b.frame();
    m.b.ssMap(sl, 4, 0x4000_0000, 0xa000_0000, 2);
    m.b.setPasidEntry(dir, 7, { PGTT: PGTT_SL, DID: 4, SLPTPTR: sl, AW: 2 });
    expect(xlate(m.unit, 0x10, 0x4012_3010, { pasid: 7 })).toMatchObject({
      status: XLATE_OK,
      pa: 0xa012_3010,
      sizeShift: 21,
    });
    // Nested: FL tables live at GPAs mapped 1:1 by the SL table.
    const s2 = m.b.frame();
    const gfl = m.b.frame();
    m.b.fsMap(gfl, 4, 0x5000_0000, 0x2000_0000);
    for (let gpa = 0x100_0000; gpa < 0x500_0000; gpa += 0x20_0000) m.b.ssMap(s2, 4, gpa, gpa, 2);
    m.b.ssMap(s2, 4, 0x2000_0000, 0xb000_0000);
    m.b.setPasidEntry(dir, 9, { PGTT: PGTT_NESTED, DID: 6, FLPTR: gfl, SLPTPTR: s2, AW: 2 });
    expect(xlate(m.unit, 0x10, 0x5000_0004, { pasid: 9 })).toMatchObject({
      status: XLATE_OK,
      pa: 0xb000_0004,
    });
  });
});
