// A unit fed a memory image, as when decoding a dump of a real machine: tables laid out the way
// Linux's VT-d driver writes them, saved as an ELF core (as `dump-guest-memory` writes it) and
// loaded into fresh memory; a new unit pointed at the root table through RTADDR translates
// exactly as the unit that was running.

import { IOMMU_READ, IOMMU_WRITE, XLATE_FAULT, XLATE_OK } from "@iommu-sim/iommu-core";
import {
  FrameAllocator,
  loadElfCore,
  PhysMemory,
  saveElfCore,
} from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { FLPM_5LEVEL, PGTT_FL, PGTT_SL } from "../src/format/pasid-entry.js";
import { GCMD_SRTP, GCMD_TE, VTD_REG } from "../src/format/registers.js";
import { LEGACY_VTD_CAPS } from "../src/hw/vtd-caps.js";
import { VtdUnit } from "../src/hw/vtd-unit.js";
import { VtdFsPgtable } from "../src/pgtable/first-stage.js";
import { VtdSsPgtable } from "../src/pgtable/second-stage.js";
import { VtdTableBuilder, xlate } from "./table-builder.js";

const RW = IOMMU_READ | IOMMU_WRITE;

/** A unit brought up on `mem` with the root table at `rta`, as firmware or a kdump kernel finds it. */
function unitOn(mem: PhysMemory, rta: number, scalable: boolean, legacy = false): VtdUnit {
  const unit = new VtdUnit({ mem, caps: legacy ? LEGACY_VTD_CAPS : {} });
  unit.write32(VTD_REG.RTADDR, (rta | (scalable ? 1 << 10 : 0)) >>> 0);
  unit.write32(VTD_REG.RTADDR + 4, 0);
  unit.write32(VTD_REG.GCMD, GCMD_SRTP);
  unit.write32(VTD_REG.GCMD, GCMD_TE);
  return unit;
}

function reload(mem: PhysMemory): PhysMemory {
  const image = saveElfCore(mem, { machine: 62 });
  const loaded = loadElfCore(image);
  if (!(loaded instanceof PhysMemory)) throw new Error(String(loaded));
  return loaded;
}

describe("a unit on a memory image", () => {
  it("translates a scalable-mode image as the running unit did (first stage, 5-level; second stage)", () => {
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x400_0000 });
    const b = new VtdTableBuilder(mem, frames);
    const rta = b.frame();
    // Linux: PASIDDIRPTR + PDTS, DTE and PASIDE and PRE per device capability, FPD clear, P.
    const dir = b.setSmContext(rta, 0x0300, { DTE: 1, PASIDE: 1, PRE: 1 });
    const fs = new VtdFsPgtable({ mem, frames, levels: 5, superpages: 0x4020_0000, tlb: null });
    expect(fs.mapPages(0x7f_0000_0000, 0x2_0000_0000, 0x1000, 16, RW)).toBe(0);
    expect(fs.mapPages(0x40_0000, 0x3_0000_0000, 0x20_0000, 1, IOMMU_READ)).toBe(0);
    b.setPasidEntry(dir, 0, { PGTT: PGTT_FL, DID: 2, AW: 3, FLPM: FLPM_5LEVEL, FLPTR: fs.rootPa });
    const ss = new VtdSsPgtable({ mem, frames, agaw: 2, superpages: 0x4020_0000, tlb: null });
    expect(ss.mapPages(0x1000_0000, 0x4_0000_0000, 0x1000, 4, RW)).toBe(0);
    b.setPasidEntry(dir, 5, { PGTT: PGTT_SL, DID: 3, AW: 2, SLPTPTR: ss.rootPa });

    const running = unitOn(mem, rta, true);
    const image = reload(mem);
    const fresh = unitOn(image, rta, true);
    const probes: Array<[number, { pasid?: number; write?: boolean }]> = [
      [0x7f_0000_0123, {}],
      [0x7f_0000_f123, { write: true }],
      [0x7f_0001_0000, {}],
      [0x40_1234, {}],
      [0x40_1234, { write: true }],
      [0x1000_2abc, { pasid: 5 }],
      [0x1000_4000, { pasid: 5 }],
    ];
    for (const [iova, opts] of probes) {
      expect(xlate(fresh, 0x0300, iova, opts)).toEqual(xlate(running, 0x0300, iova, opts));
    }
    expect(xlate(fresh, 0x0300, 0x7f_0000_f123)).toMatchObject({
      status: XLATE_OK,
      pa: 0x2_0000_f123,
    });
    expect(xlate(fresh, 0x0300, 0x40_1234, { write: true })).toMatchObject({ status: XLATE_FAULT });
    expect(xlate(fresh, 0x0300, 0x1000_2abc, { pasid: 5 })).toMatchObject({
      status: XLATE_OK,
      pa: 0x4_0000_2abc,
    });
  });

  it("translates a legacy-mode image", () => {
    const mem = new PhysMemory();
    const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x400_0000 });
    const b = new VtdTableBuilder(mem, frames);
    const rta = b.frame();
    const ss = new VtdSsPgtable({ mem, frames, agaw: 2, superpages: 0x20_0000, tlb: null });
    expect(ss.mapPages(0xfff0_0000, 0x5_0000_0000, 0x1000, 1, RW)).toBe(0);
    b.setContext(rta, 0x00f8, { TT: 0, AW: 2, DID: 9, SLPTPTR: ss.rootPa });
    const fresh = unitOn(reload(mem), rta, false, true);
    expect(xlate(fresh, 0x00f8, 0xfff0_0042, { write: true })).toMatchObject({
      status: XLATE_OK,
      pa: 0x5_0000_0042,
    });
    expect(xlate(fresh, 0x00f9, 0xfff0_0042)).toMatchObject({ status: XLATE_FAULT, code: 2 });
  });
});
