// Tests of the walkers' per-level reserved-bit rules that depend on the unit: second-stage SNP
// (bit 11) and TM (bit 62), and the first-stage bits 63:52 that are not reserved.

import { XLATE_FAULT, XLATE_OK } from "@iommu-sim/iommu-core";
import type { PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { vtdTestMachine, xlate, xlateFresh } from "../../test/table-builder.js";
import { VTD_FR } from "../format/fault-record.js";
import { PGTT_FL, PGTT_SL } from "../format/pasid-entry.js";
import { DEFAULT_VTD_CAPS, LEGACY_VTD_CAPS, type VtdCapabilities } from "./vtd-caps.js";

const SID = 0x10;
const IOVA = 0x1234_5000;
const PA = 0x8_0000_0000;
const DID = 5;
const SNP = 1 << 11;
/** TM is entry bit 62: bit 30 of the high word. */
const TM_HI = 1 << 30;
/** XD is entry bit 63; bits 62:52 are ignored. */
const XD_HI = 0x80000000;
const IGNORED_HI = 0x7ff00000;

/** A legacy unit with IOVA mapped through a 4-level second-stage table; returns the entries. */
function legacy(caps: Partial<VtdCapabilities> = {}) {
  const m = vtdTestMachine({ caps: { ...LEGACY_VTD_CAPS, ...caps } });
  const root = m.b.frame();
  m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID });
  const leaf = m.b.ssMap(root, 4, IOVA, PA);
  // IOVA's index is 0 at level 4: the PML4E is the table's first entry.
  return { ...m, leaf, pml4e: root };
}

/** A scalable unit with PASID 0 (RID_PASID) mapping IOVA through a second-stage table. */
function scalable(caps: Partial<VtdCapabilities> = {}) {
  const m = vtdTestMachine({ caps: { ...DEFAULT_VTD_CAPS, ...caps } });
  const dir = m.b.setSmContext(m.rta, SID, {});
  const root = m.b.frame();
  const leaf = m.b.ssMap(root, 4, IOVA, PA);
  m.b.setPasidEntry(dir, 0, { PGTT: PGTT_SL, DID, SLPTPTR: root, AW: 2 });
  return { ...m, leaf, pml4e: root, dir };
}

/** Set bits in the low and high words of the 64-bit entry at `pa`. */
function orBits(m: { mem: PhysMemory }, pa: number, lo: number, hi = 0): void {
  const l = m.mem.read64(pa);
  const h = m.mem.hi;
  m.mem.write64(pa, (l | lo) >>> 0, (h | hi) >>> 0);
}

describe("second-stage SNP (bit 11)", () => {
  it("is reserved in a table entry even with ECAP.SC (QEMU's non-leaf masks, VirtualBox)", () => {
    for (const snoopControl of [false, true]) {
      const m = legacy({ snoopControl });
      orBits(m, m.pml4e, SNP);
      expect(xlate(m.unit, SID, IOVA)).toMatchObject({
        status: XLATE_FAULT,
        code: VTD_FR.PAGING_ENTRY_RESERVED,
      });
    }
  });

  it("is reserved in a legacy-mode leaf without ECAP.SC and allowed with it", () => {
    const off = legacy({ snoopControl: false });
    orBits(off, off.leaf, SNP);
    expect(xlate(off.unit, SID, IOVA).code).toBe(VTD_FR.PAGING_ENTRY_RESERVED);
    const on = legacy({ snoopControl: true });
    orBits(on, on.leaf, SNP);
    expect(xlate(on.unit, SID, IOVA)).toMatchObject({ status: XLATE_OK, pa: PA });
  });

  it("is allowed in a scalable-mode leaf without ECAP.SC (QEMU unreserves it in scalable mode)", () => {
    const m = scalable({ snoopControl: false });
    orBits(m, m.leaf, SNP);
    expect(xlate(m.unit, SID, IOVA)).toMatchObject({ status: XLATE_OK, pa: PA });
    // The table entry is still checked (on a fresh walk: the paging-structure cache holds it).
    orBits(m, m.pml4e, SNP);
    expect(xlateFresh(m.unit, SID, IOVA).code).toBe(VTD_FR.SM_SS_ENTRY_RESERVED);
  });
});

describe("second-stage TM (bit 62)", () => {
  it("is reserved in every entry of a VT-d 3.2+ unit, leaf included (QEMU x-stale-tm off)", () => {
    const m = scalable();
    orBits(m, m.leaf, 0, TM_HI);
    expect(xlate(m.unit, SID, IOVA).code).toBe(VTD_FR.SM_SS_ENTRY_RESERVED);
  });

  it("is allowed in a leaf of an older unit with ECAP.DT, never in a table entry", () => {
    const m = legacy({ deviceTlb: true, version: { major: 1, minor: 0 } });
    orBits(m, m.leaf, 0, TM_HI);
    expect(xlate(m.unit, SID, IOVA)).toMatchObject({ status: XLATE_OK, pa: PA });
    const t = legacy({ deviceTlb: true, version: { major: 1, minor: 0 } });
    orBits(t, t.pml4e, 0, TM_HI);
    expect(xlate(t.unit, SID, IOVA).code).toBe(VTD_FR.PAGING_ENTRY_RESERVED);
    const noDt = legacy({ deviceTlb: false, prs: false, version: { major: 1, minor: 0 } });
    orBits(noDt, noDt.leaf, 0, TM_HI);
    expect(xlate(noDt.unit, SID, IOVA).code).toBe(VTD_FR.PAGING_ENTRY_RESERVED);
  });
});

describe("first-stage bits 63:52", () => {
  it("are not reserved: XD takes execute away, the rest is ignored (QEMU's masks ignore 63:52)", () => {
    const m = vtdTestMachine({ caps: { ...DEFAULT_VTD_CAPS, ers: true } });
    const dir = m.b.setSmContext(m.rta, SID, { PASIDE: 1 });
    const fl = m.b.frame();
    const leaf = m.b.fsMap(fl, 4, IOVA, PA);
    orBits(m, fl, 0, IGNORED_HI);
    orBits(m, leaf, 0, (XD_HI | IGNORED_HI) >>> 0);
    m.b.setPasidEntry(dir, 3, { PGTT: PGTT_FL, DID, FLPTR: fl, SRE: 1, ERE: 1 });
    expect(xlate(m.unit, SID, IOVA, { pasid: 3 })).toMatchObject({ status: XLATE_OK, pa: PA });
    expect(xlate(m.unit, SID, IOVA, { pasid: 3, exec: true, read: true }).code).toBe(
      VTD_FR.SM_NO_EXECUTE,
    );
  });
});
