// Translation through the VT-d unit in every mode (legacy TT, scalable PGTT), page size and table
// depth, the access rules of each stage, ATS, and one test per fault reason the unit raises.

import {
  AT_TRANSLATED,
  AT_TRANSLATION_REQUEST,
  DMA_READ,
  DMA_WRITE,
  XLATE_FAULT,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
import type { FieldValues } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { VTD_FR } from "../src/format/fault-record.js";
import { FS_PTE } from "../src/format/first-stage-pte.js";
import { PGTT_FL, PGTT_NESTED, PGTT_PT, PGTT_SL } from "../src/format/pasid-entry.js";
import { FSTS_PPF, VTD_REG } from "../src/format/registers.js";
import { SS_PTE } from "../src/format/second-stage-pte.js";
import { LEGACY_VTD_CAPS, type VtdCapabilities } from "../src/hw/vtd-caps.js";
import {
  readFrcd,
  type VtdTestMachine,
  vtdTestMachine,
  xlate,
  xlateFresh,
} from "./table-builder.js";

const SID = 0x10;
const DID = 5;
const PA = 0x8_0000_0000;
const PAGE_SIZES = [
  [1, 12, "4 KiB"],
  [2, 21, "2 MiB"],
  [3, 30, "1 GiB"],
] as const;
/** Caps with every second-stage depth (3, 4 and 5 levels). */
const ALL_SAGAW = 0b01110;

type Result = ReturnType<typeof xlate>;

/** `r` faulted with `code`, and the unit recorded exactly that reason in its latest record. */
function expectFault(m: VtdTestMachine, r: Result, code: number): void {
  expect(r).toMatchObject({ status: XLATE_FAULT, code });
  const n = m.unit.faults.recorded;
  expect(n).toBeGreaterThan(0);
  expect(readFrcd(m.unit, (n - 1) % m.unit.faults.numRecords)).toMatchObject({ F: 1, FR: code });
}

/** `r` faulted with `code` and nothing was recorded (FPD, or an ATS answer). */
function expectSilent(m: VtdTestMachine): void {
  expect(m.unit.read32(VTD_REG.FSTS) & FSTS_PPF).toBe(0);
}

function legacyMachine(caps: Partial<VtdCapabilities> = {}): VtdTestMachine {
  return vtdTestMachine({ caps: { ...LEGACY_VTD_CAPS, ...caps } });
}

/** Scalable machine with SID's context entry (extra fields) and its PASID directory. */
function smMachine(caps: Partial<VtdCapabilities> = {}, ctx: FieldValues = {}) {
  const m = vtdTestMachine({ caps });
  const dir = m.b.setSmContext(m.rta, SID, ctx);
  return { ...m, dir };
}

/** Reads of [pa, pa + bytes) fail on the bus from now on. */
function failReads(m: VtdTestMachine, pa: number, bytes = 4096): void {
  m.mem.faultHook = (at, n, write) => !write && at + n > pa && at < pa + bytes;
}

/** Set `bits` in the low (or, with `hi`, high) word of the 64-bit entry at `pa`. */
function orWord(m: VtdTestMachine, pa: number, bits: number, hi = false): void {
  const at = pa + (hi ? 4 : 0);
  m.mem.write32(at, (m.mem.read32(at) | bits) >>> 0);
}

// ---------------------------------------------------------------------------------------------

describe("legacy mode", () => {
  for (const levels of [3, 4, 5]) {
    for (const [level, shift, name] of PAGE_SIZES) {
      it(`TT=0 walks a ${levels}-level second-stage table to a ${name} page`, () => {
        const m = legacyMachine({ sagaw: ALL_SAGAW, mgaw: 57 });
        const root = m.b.frame();
        m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: levels - 2, DID });
        const top = levels === 3 ? 2 ** 39 : levels === 4 ? 2 ** 48 : 2 ** 57;
        const iova = top - 2 ** shift; // the last page the table can map
        m.b.ssMap(root, levels, iova, PA, level);
        const off = 2 ** shift - 0x10;
        expect(xlate(m.unit, SID, iova + off, { write: true })).toMatchObject({
          status: XLATE_OK,
          pa: PA + off,
          sizeShift: shift,
          perm: DMA_READ | DMA_WRITE | 4,
        });
      });
    }
  }

  it("an input address beyond the table's width faults 0x4", () => {
    const m = legacyMachine({ sagaw: ALL_SAGAW, mgaw: 57 });
    const root = m.b.frame();
    m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 1, DID });
    expectFault(m, xlate(m.unit, SID, 2 ** 39), VTD_FR.ADDR_BEYOND_MGAW);
  });

  it("an input address beyond MGAW faults 0x4 even in a wider table", () => {
    const m = legacyMachine({ sagaw: ALL_SAGAW, mgaw: 48 });
    const root = m.b.frame();
    m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 3, DID });
    m.b.ssMap(root, 5, 2 ** 50, PA);
    expectFault(m, xlate(m.unit, SID, 2 ** 50), VTD_FR.ADDR_BEYOND_MGAW);
  });

  it("permissions: a write to a read-only page faults 0x5, a read of a write-only page 0x6", () => {
    const m = legacyMachine();
    const root = m.b.frame();
    m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID });
    m.b.ssMap(root, 4, 0x1000, PA, 1, { R: 1 });
    m.b.ssMap(root, 4, 0x2000, PA, 1, { W: 1 });
    expect(xlate(m.unit, SID, 0x1000)).toMatchObject({ status: XLATE_OK, perm: DMA_READ | 4 });
    expectFault(m, xlate(m.unit, SID, 0x1000, { write: true }), VTD_FR.NO_WRITE);
    expect(xlate(m.unit, SID, 0x2000, { write: true, read: false }).status).toBe(XLATE_OK);
    expectFault(m, xlate(m.unit, SID, 0x2000), VTD_FR.NO_READ);
    // Not present: by the access.
    expectFault(m, xlate(m.unit, SID, 0x3000), VTD_FR.NO_READ);
    expectFault(m, xlate(m.unit, SID, 0x3000, { write: true }), VTD_FR.NO_WRITE);
  });

  it("TT=0 blocks ATS translation requests and translated requests with 0xD", () => {
    const m = legacyMachine();
    const root = m.b.frame();
    m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID });
    m.b.ssMap(root, 4, 0x1000, PA);
    expectFault(
      m,
      xlate(m.unit, SID, 0x1000, { at: AT_TRANSLATION_REQUEST }),
      VTD_FR.CONTEXT_TT_BLOCKED,
    );
    expectFault(m, xlate(m.unit, SID, 0x1000, { at: AT_TRANSLATED }), VTD_FR.CONTEXT_TT_BLOCKED);
  });

  it("TT=1 answers translation requests with the permissions, without a fault for an unmapped page", () => {
    const m = legacyMachine();
    const root = m.b.frame();
    m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID, TT: 1 });
    m.b.ssMap(root, 4, 0x20_0000, PA, 2, { R: 1 });
    expect(
      xlate(m.unit, SID, 0x20_1000, { at: AT_TRANSLATION_REQUEST, write: true }),
    ).toMatchObject({
      status: XLATE_OK,
      pa: PA + 0x1000,
      perm: DMA_READ | 4,
      sizeShift: 21,
    });
    expect(xlate(m.unit, SID, 0x4000_0000, { at: AT_TRANSLATION_REQUEST })).toMatchObject({
      status: XLATE_OK,
      perm: 0,
    });
    expectSilent(m);
    // Translated requests carry host addresses already.
    expect(xlate(m.unit, SID, 0x1234_5678, { at: AT_TRANSLATED })).toMatchObject({
      status: XLATE_OK,
      pa: 0x1234_5678,
    });
    // Untranslated requests still walk.
    expect(xlate(m.unit, SID, 0x20_0010).pa).toBe(PA + 0x10);
  });

  it("TT=2 passes untranslated requests through", () => {
    const m = legacyMachine();
    m.b.setContext(m.rta, SID, { AW: 2, DID, TT: 2 });
    expect(xlate(m.unit, SID, 0x1234_5678, { write: true })).toMatchObject({
      status: XLATE_OK,
      pa: 0x1234_5678,
    });
  });

  it("TT=2 on a unit without ECAP.PT is an invalid context entry (0x3)", () => {
    const m = legacyMachine({ passThrough: false });
    m.b.setContext(m.rta, SID, { AW: 2, DID, TT: 2 });
    expectFault(m, xlate(m.unit, SID, 0x1000), VTD_FR.CONTEXT_INVALID);
  });

  it("TT=3 is an invalid context entry (0x3)", () => {
    const m = legacyMachine();
    m.b.setContext(m.rta, SID, { SLPTPTR: m.b.frame(), AW: 2, DID, TT: 3 });
    expectFault(m, xlate(m.unit, SID, 0x1000), VTD_FR.CONTEXT_INVALID);
  });

  it("TT=1 on a unit without device-TLBs is an invalid context entry (0x3)", () => {
    const m = legacyMachine({ deviceTlb: false, prs: false });
    m.b.setContext(m.rta, SID, { SLPTPTR: m.b.frame(), AW: 2, DID, TT: 1 });
    expectFault(m, xlate(m.unit, SID, 0x1000), VTD_FR.CONTEXT_INVALID);
  });

  it("an AW not in SAGAW is an invalid context entry (0x3)", () => {
    const m = legacyMachine(); // SAGAW: 4-level only
    for (const aw of [0, 1, 3, 4, 7]) {
      m.b.setContext(m.rta, SID + aw, { SLPTPTR: m.b.frame(), AW: aw, DID });
      expectFault(m, xlate(m.unit, SID + aw, 0x1000), VTD_FR.CONTEXT_INVALID);
    }
  });

  it("a request with a PASID in legacy mode faults 0x31", () => {
    const m = legacyMachine();
    const root = m.b.frame();
    m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID });
    m.b.ssMap(root, 4, 0x1000, PA);
    expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 1 }), VTD_FR.SM_TTM_LEGACY_WITH_PASID);
  });

  it("an output address in the interrupt range faults 0xE", () => {
    const m = legacyMachine();
    const root = m.b.frame();
    m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID });
    m.b.ssMap(root, 4, 0x1000, 0xfee0_0000);
    m.b.ssMap(root, 4, 0x2000, 0xfeef_f000);
    m.b.ssMap(root, 4, 0x3000, 0xfef0_0000);
    expectFault(m, xlate(m.unit, SID, 0x1000), VTD_FR.INTERRUPT_ADDR);
    expectFault(m, xlate(m.unit, SID, 0x2000, { write: true }), VTD_FR.INTERRUPT_ADDR);
    expect(xlate(m.unit, SID, 0x3000).pa).toBe(0xfef0_0000);
  });

  describe("fault reasons of the root, context and paging entries", () => {
    function mapped() {
      const m = legacyMachine();
      const root = m.b.frame();
      const ctx = m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID });
      const leaf = m.b.ssMap(root, 4, 0x1000, PA);
      return { ...m, root, ctx, leaf };
    }

    it("root entry not present: 0x1", () => {
      const m = mapped();
      expectFault(m, xlate(m.unit, 0x0210, 0x1000), VTD_FR.ROOT_NOT_PRESENT);
    });

    it("context entry not present: 0x2", () => {
      const m = mapped();
      expectFault(m, xlate(m.unit, SID + 1, 0x1000), VTD_FR.CONTEXT_NOT_PRESENT);
    });

    it("reserved bits in the root entry (bit 1, high qword, CTP above HAW): 0xA", () => {
      for (const [bits, hi, qw1] of [
        [2, false, false],
        [1, false, true],
        [1 << 14, true, false],
      ] as const) {
        const m = mapped();
        orWord(m, m.rta + (qw1 ? 8 : 0), bits, hi);
        expectFault(m, xlate(m.unit, SID, 0x1000), VTD_FR.ROOT_ENTRY_RESERVED);
      }
    });

    it("reserved bits in the context entry (bits 11:4, 71, 127:88, SLPTPTR above HAW): 0xB", () => {
      for (const [off, bits] of [
        [0, 0x10],
        [0, 0x800],
        [8, 0x80],
        [12, 0x0100_0000],
        [4, 1 << 14],
      ] as const) {
        const m = mapped();
        orWord(m, m.ctx + (off & ~7), bits, (off & 4) !== 0);
        expectFault(m, xlate(m.unit, SID, 0x1000), VTD_FR.CONTEXT_ENTRY_RESERVED);
      }
    });

    it("reserved bits in a paging entry (address above HAW, PS at level 4): 0xC", () => {
      const m = mapped();
      orWord(m, m.leaf, 1 << 14, true);
      expectFault(m, xlate(m.unit, SID, 0x1000), VTD_FR.PAGING_ENTRY_RESERVED);
      const m2 = mapped();
      orWord(m2, m2.root, 0x80);
      expectFault(m2, xlate(m2.unit, SID, 0x1000), VTD_FR.PAGING_ENTRY_RESERVED);
    });

    it("a 1 GiB leaf on a unit without 1 GiB second-stage pages is reserved: 0xC", () => {
      const m = legacyMachine({ superpages: ["2M"] });
      const root = m.b.frame();
      m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID });
      m.b.ssMap(root, 4, 0x4000_0000, PA, 3);
      expectFault(m, xlate(m.unit, SID, 0x4000_0000), VTD_FR.PAGING_ENTRY_RESERVED);
    });

    it("a 2 MiB leaf with address bits inside its page is reserved: 0xC", () => {
      const m = legacyMachine();
      const root = m.b.frame();
      m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID });
      m.b.ssMap(root, 4, 0x20_0000, PA + 0x1000, 2);
      expectFault(m, xlate(m.unit, SID, 0x20_0000), VTD_FR.PAGING_ENTRY_RESERVED);
    });

    it("a bus error reading the root table: 0x8", () => {
      const m = mapped();
      failReads(m, m.rta);
      expectFault(m, xlate(m.unit, SID, 0x1000), VTD_FR.ROOT_TABLE_ACCESS);
    });

    it("a bus error reading the context table: 0x9", () => {
      const m = mapped();
      failReads(m, m.ctx - (m.ctx % 4096));
      expectFault(m, xlate(m.unit, SID, 0x1000), VTD_FR.CONTEXT_TABLE_ACCESS);
    });

    it("a bus error reading a paging entry: 0x7", () => {
      const m = mapped();
      failReads(m, m.leaf - (m.leaf % 4096));
      expectFault(m, xlate(m.unit, SID, 0x1000), VTD_FR.PAGING_ENTRY_ACCESS);
    });
  });
});

// ---------------------------------------------------------------------------------------------

describe("scalable mode", () => {
  describe("requests without PASID use RID_PASID", () => {
    it("RID_PASID 0 by default", () => {
      const m = smMachine();
      const fl = m.b.frame();
      m.b.fsMap(fl, 4, 0x1000, PA);
      m.b.setPasidEntry(m.dir, 0, { PGTT: PGTT_FL, DID, FLPTR: fl });
      expect(xlate(m.unit, SID, 0x1010)).toMatchObject({ status: XLATE_OK, pa: PA + 0x10 });
    });

    it("a non-zero RID_PASID selects that PASID entry when ECAP.RPS is set", () => {
      const m = smMachine({ rps: true }, { RID_PASID: 42 });
      const fl = m.b.frame();
      m.b.fsMap(fl, 4, 0x1000, PA);
      m.b.setPasidEntry(m.dir, 42, { PGTT: PGTT_FL, DID, FLPTR: fl });
      expect(xlate(m.unit, SID, 0x1000).pa).toBe(PA);
      // The request is still one without PASID: its fault record has PP = 0.
      expectFault(m, xlate(m.unit, SID, 0x5000), VTD_FR.SM_FS_ENTRY_NOT_PRESENT);
      expect(readFrcd(m.unit, 0)).toMatchObject({ PP: 0, PV: 0 });
    });

    it("a non-zero RID_PASID without ECAP.RPS faults 0x48", () => {
      const m = smMachine({}, { RID_PASID: 42 });
      expectFault(m, xlate(m.unit, SID, 0x1000), VTD_FR.SM_RID_PASID_ERROR);
    });

    it("RID_PRIV makes requests without PASID supervisor requests", () => {
      const m = smMachine({}, { RID_PRIV: 1 });
      const fl = m.b.frame();
      m.b.fsMap(fl, 4, 0x1000, PA, 1, { P: 1, RW: 1 }); // U/S = 0: supervisor only
      m.b.setPasidEntry(m.dir, 0, { PGTT: PGTT_FL, DID, FLPTR: fl, SRE: 1 });
      expect(xlate(m.unit, SID, 0x1000).pa).toBe(PA);
    });
  });

  for (const levels of [4, 5]) {
    for (const [level, shift, name] of PAGE_SIZES) {
      it(`first stage, ${levels}-level, ${name} pages, lowest and highest canonical page`, () => {
        const m = smMachine();
        const fl = m.b.frame();
        const size = 2n ** BigInt(shift);
        const half = levels === 5 ? 2n ** 56n : 2n ** 47n;
        const highest = half - size; // top of the lower half
        const upper = 2n ** 64n - size; // top of the upper half
        m.b.fsMap(fl, levels, 0n, PA, level);
        m.b.fsMap(fl, levels, highest, PA + 2 ** 31, level);
        m.b.fsMap(fl, levels, upper, PA + 2 ** 32, level);
        m.b.setPasidEntry(m.dir, 3, { PGTT: PGTT_FL, DID, FLPTR: fl, FLPM: levels === 5 ? 1 : 0 });
        // The first non-canonical addresses above the lower half and below the upper half.
        expectFault(m, xlate(m.unit, SID, half, { pasid: 3 }), VTD_FR.SM_FS_NON_CANONICAL);
        expectFault(
          m,
          xlate(m.unit, SID, 2n ** 64n - half - 4096n, { pasid: 3 }),
          VTD_FR.SM_FS_NON_CANONICAL,
        );
        const off = 2 ** shift - 8;
        expect(xlate(m.unit, SID, BigInt(off), { pasid: 3, write: true })).toMatchObject({
          status: XLATE_OK,
          pa: PA + off,
          sizeShift: shift,
        });
        expect(xlate(m.unit, SID, highest + BigInt(off), { pasid: 3 })).toMatchObject({
          status: XLATE_OK,
          pa: PA + 2 ** 31 + off,
          sizeShift: shift,
        });
        expect(xlate(m.unit, SID, upper + BigInt(off), { pasid: 3 })).toMatchObject({
          status: XLATE_OK,
          pa: PA + 2 ** 32 + off,
          sizeShift: shift,
        });
      });
    }
  }

  for (const levels of [3, 4, 5]) {
    for (const [level, shift, name] of PAGE_SIZES) {
      it(`second stage, ${levels}-level (AW ${levels - 2}), ${name} pages up to the top of the width`, () => {
        const m = smMachine({ sagaw: ALL_SAGAW });
        const sl = m.b.frame();
        const width = 30n + 9n * BigInt(levels - 2);
        const top = 2n ** width - 2n ** BigInt(shift);
        m.b.ssMap(sl, levels, 0n, PA, level);
        m.b.ssMap(sl, levels, top, PA + 2 ** 33, level);
        m.b.setPasidEntry(m.dir, 9, { PGTT: PGTT_SL, DID, SLPTPTR: sl, AW: levels - 2 });
        expectFault(m, xlate(m.unit, SID, 2n ** width, { pasid: 9 }), VTD_FR.SM_ADDR_BEYOND_MGAW);
        const off = 2 ** shift - 8;
        expect(xlate(m.unit, SID, BigInt(off), { pasid: 9, write: true })).toMatchObject({
          status: XLATE_OK,
          pa: PA + off,
          sizeShift: shift,
        });
        expect(xlate(m.unit, SID, top + BigInt(off), { pasid: 9 })).toMatchObject({
          status: XLATE_OK,
          pa: PA + 2 ** 33 + off,
          sizeShift: shift,
        });
      });
    }
  }

  // The IOTLB tags a page by input-address bits 56:12 and is looked up before the walk's
  // canonical and width checks, so an address that must fault hits the cached translation of
  // its 45-bit alias. A non-canonical address (0x80) or one beyond the table's width (0x83) faults
  // whatever the caches hold: the checks are on the request's own address.
  it("a non-canonical address faults even when its 45-bit alias is cached", () => {
    const m = smMachine();
    const fl = m.b.frame();
    m.b.fsMap(fl, 5, 0xff_ffff_ffff_f000n, PA);
    m.b.setPasidEntry(m.dir, 3, { PGTT: PGTT_FL, DID, FLPTR: fl, FLPM: 1 });
    expect(xlate(m.unit, SID, 0xff_ffff_ffff_f000n, { pasid: 3 }).pa).toBe(PA);
    expectFault(
      m,
      xlate(m.unit, SID, 0xfeff_ffff_ffff_f000n, { pasid: 3 }),
      VTD_FR.SM_FS_NON_CANONICAL,
    );
  });

  it("an address beyond a 5-level table's width faults even when its alias is cached", () => {
    const m = smMachine();
    const sl = m.b.frame();
    m.b.ssMap(sl, 5, 0, PA);
    m.b.setPasidEntry(m.dir, 9, { PGTT: PGTT_SL, DID, SLPTPTR: sl, AW: 3 });
    expect(xlate(m.unit, SID, 0, { pasid: 9 }).pa).toBe(PA);
    expectFault(m, xlate(m.unit, SID, 2n ** 57n, { pasid: 9 }), VTD_FR.SM_ADDR_BEYOND_MGAW);
  });

  it("second stage also serves requests without PASID (RID_PASID entry)", () => {
    const m = smMachine();
    const sl = m.b.frame();
    m.b.ssMap(sl, 4, 0x1000, PA);
    m.b.setPasidEntry(m.dir, 0, { PGTT: PGTT_SL, DID, SLPTPTR: sl, AW: 2 });
    expect(xlate(m.unit, SID, 0x1000, { write: true }).pa).toBe(PA);
  });

  it("pass-through: output = input, for requests with and without PASID", () => {
    const m = smMachine();
    m.b.setPasidEntry(m.dir, 0, { PGTT: PGTT_PT, DID: 1 });
    m.b.setPasidEntry(m.dir, 5, { PGTT: PGTT_PT, DID: 1 });
    expect(xlate(m.unit, SID, 0x1234_5678, { write: true })).toMatchObject({
      status: XLATE_OK,
      pa: 0x1234_5678,
    });
    expect(xlate(m.unit, SID, 0x8765_4321, { pasid: 5 }).pa).toBe(0x8765_4321);
  });

  describe("nested", () => {
    /** FL tables anywhere in the allocator's range are mapped 1:1 by the second stage. */
    function nested(caps: Partial<VtdCapabilities> = {}, ssLevels = 4) {
      const m = smMachine({ sagaw: ALL_SAGAW, ...caps });
      const s2 = m.b.frame();
      for (let gpa = 0x100_0000; gpa < 0x500_0000; gpa += 0x20_0000)
        m.b.ssMap(s2, ssLevels, gpa, gpa, 2);
      const gfl = m.b.frame();
      return { ...m, s2, gfl, ssLevels };
    }
    const GPA = 0x2000_0000;

    for (const [flLevel, flShift, name] of PAGE_SIZES) {
      for (const [ssLevel, ssShift, ssName] of PAGE_SIZES) {
        it(`a ${name} first-stage page over a ${ssName} second-stage page`, () => {
          const m = nested();
          const iova = 0x40_0000_0000;
          m.b.fsMap(m.gfl, 4, iova, GPA * 4, flLevel);
          m.b.ssMap(m.s2, 4, GPA * 4, PA, ssLevel);
          m.b.setPasidEntry(m.dir, 9, {
            PGTT: PGTT_NESTED,
            DID,
            FLPTR: m.gfl,
            SLPTPTR: m.s2,
            AW: 2,
          });
          const off = 0xabc;
          expect(xlate(m.unit, SID, iova + off, { pasid: 9, write: true })).toMatchObject({
            status: XLATE_OK,
            pa: PA + off,
            sizeShift: Math.min(flShift, ssShift),
          });
        });
      }
    }

    it("5-level first stage nested over a 5-level second stage", () => {
      const m = nested({}, 5);
      const iova = 0xff_ffff_ffff_f000n;
      m.b.fsMap(m.gfl, 5, iova, GPA);
      m.b.ssMap(m.s2, 5, GPA, PA);
      m.b.setPasidEntry(m.dir, 9, {
        PGTT: PGTT_NESTED,
        DID,
        FLPTR: m.gfl,
        SLPTPTR: m.s2,
        AW: 3,
        FLPM: 1,
      });
      expect(xlate(m.unit, SID, iova + 4n, { pasid: 9 }).pa).toBe(PA + 4);
    });

    function entry(m: ReturnType<typeof nested>, fields: FieldValues = {}) {
      m.b.setPasidEntry(m.dir, 9, {
        PGTT: PGTT_NESTED,
        DID,
        FLPTR: m.gfl,
        SLPTPTR: m.s2,
        AW: 2,
        ...fields,
      });
    }

    it("the first-stage root not readable through the second stage: 0x75", () => {
      const m = nested();
      entry(m, { FLPTR: 0x6000_0000 });
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 9 }), VTD_FR.SM_FS_ROOT_READ);
      // A second-stage entry with W only is not readable either.
      const m2 = nested();
      m2.b.ssMap(m2.s2, 4, 0x6000_0000, m2.gfl, 1, { W: 1 });
      entry(m2, { FLPTR: 0x6000_0000 });
      expectFault(m2, xlate(m2.unit, SID, 0x1000, { pasid: 9 }), VTD_FR.SM_FS_ROOT_READ);
    });

    it("a lower first-stage table not readable through the second stage: 0x76", () => {
      const m = nested();
      m.b.write(FS_PTE, m.gfl, { P: 1, RW: 1, US: 1, ADDR: 0x6000_0000 });
      entry(m);
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 9 }), VTD_FR.SM_FS_ENTRY_READ);
    });

    it("a first-stage table address beyond the second stage's width: 0x74", () => {
      const m = nested({}, 3);
      m.b.write(FS_PTE, m.gfl, { P: 1, RW: 1, US: 1, ADDR: 2 ** 40 });
      entry(m, { AW: 1 });
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 9 }), VTD_FR.SM_FS_ENTRY_ADDR_BEYOND_MGAW);
    });

    it("the output address not mapped by the second stage: 0x79", () => {
      const m = nested();
      m.b.fsMap(m.gfl, 4, 0x1000, 0x6000_0000);
      entry(m);
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 9 }), VTD_FR.SM_SS_ENTRY_PERMISSION);
    });

    it("a write needs both stages' write permission: 0x85", () => {
      const m = nested();
      m.b.fsMap(m.gfl, 4, 0x1000, GPA);
      m.b.ssMap(m.s2, 4, GPA, PA, 1, { R: 1 });
      entry(m);
      expect(xlate(m.unit, SID, 0x1000, { pasid: 9 }).pa).toBe(PA);
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 9, write: true }), VTD_FR.SM_NO_WRITE);
    });

    // In nested translation the first-stage tables are guest-physical: setting an Accessed or
    // Dirty flag is a write through the second stage. Linux's reason text for 0x77 is "Write
    // permission error in first-level paging entry in Nested translation" (dmar.c
    // dma_remap_sm_fault_reasons); the A/D update is the only write the unit makes to such an entry.
    it("an A/D update of a first-stage entry the second stage maps read-only faults 0x77", () => {
      const m = nested();
      const iova = 0x1000;
      m.b.fsMap(m.gfl, 4, iova, GPA);
      m.b.ssMap(m.s2, 4, GPA, PA);
      entry(m);
      for (let gpa = 0x100_0000; gpa < 0x500_0000; gpa += 0x20_0000)
        m.b.ssMap(m.s2, 4, gpa, gpa, 2, { R: 1 });
      // A is clear in the root entry: the first update already needs a write.
      expectFault(m, xlate(m.unit, SID, iova, { pasid: 9 }), VTD_FR.SM_FS_ENTRY_WRITE);
      // With A set at every level a read needs no update; a write must still set D in the leaf.
      const A = 0x20;
      const D = 0x40;
      for (let level = 4; level >= 1; level--) {
        const at = m.b.entryAddr(m.gfl, 4, iova, level, (lo) => (lo & 1) !== 0);
        m.mem.write32(at, (m.mem.read32(at) | A) >>> 0);
      }
      expect(xlate(m.unit, SID, iova, { pasid: 9 })).toMatchObject({ status: XLATE_OK, pa: PA });
      expectFault(m, xlate(m.unit, SID, iova, { pasid: 9, write: true }), VTD_FR.SM_FS_ENTRY_WRITE);
      const leaf = m.b.entryAddr(m.gfl, 4, iova, 1, (lo) => (lo & 1) !== 0);
      m.mem.write32(leaf, (m.mem.read32(leaf) | D) >>> 0);
      expect(xlate(m.unit, SID, iova, { pasid: 9, write: true })).toMatchObject({
        status: XLATE_OK,
        pa: PA,
      });
    });

    it("nested without ECAP.NEST is an invalid PASID entry (0x5B)", () => {
      const m = nested({ nest: false });
      entry(m);
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 9 }), VTD_FR.SM_PASID_ENTRY_INVALID);
    });

    // WPE=0 lets supervisor writes ignore first-stage R/W; in nested translation the first stage
    // is a first stage like any other (the second stage's W still applies). The unit applies the
    // WPE=0 exemption to PGTT=001 only.
    it("a supervisor write with WPE=0 ignores first-stage R/W in nested translation too", () => {
      const m = nested();
      m.b.fsMap(m.gfl, 4, 0x1000, GPA, 1, { P: 1, US: 1 });
      m.b.ssMap(m.s2, 4, GPA, PA);
      entry(m, { SRE: 1 });
      expect(xlate(m.unit, SID, 0x1000, { pasid: 9, priv: true, write: true })).toMatchObject({
        status: XLATE_OK,
        pa: PA,
      });
    });
  });

  describe("first-stage access rules", () => {
    function fl(caps: Partial<VtdCapabilities> = {}, entryFields: FieldValues = {}) {
      const m = smMachine({ ers: true, ...caps });
      const root = m.b.frame();
      m.b.setPasidEntry(m.dir, 3, { PGTT: PGTT_FL, DID, FLPTR: root, ...entryFields });
      return { ...m, root };
    }

    it("a user request to a page with U/S=0 at any level faults 0x81; a supervisor one passes", () => {
      const m = fl({}, { SRE: 1 });
      m.b.fsMap(m.root, 4, 0x1000, PA, 1, { P: 1, RW: 1 });
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 3 }), VTD_FR.SM_FS_PRIV_VIOLATION);
      expect(xlate(m.unit, SID, 0x1000, { pasid: 3, priv: true }).pa).toBe(PA);
      // U/S=0 in a table entry above a U/S=1 leaf.
      const leaf = m.b.fsMap(m.root, 4, 0x4000_0000, PA);
      const pde = m.b.entryAddr(m.root, 4, 0x4000_0000, 2, (lo) => (lo & 1) !== 0);
      expect(pde).toBeGreaterThan(0);
      m.mem.write32(pde, m.mem.read32(pde) & ~4);
      expect(leaf).toBeGreaterThan(0);
      expectFault(m, xlate(m.unit, SID, 0x4000_0000, { pasid: 3 }), VTD_FR.SM_FS_PRIV_VIOLATION);
    });

    it("a supervisor request with SRE=0 faults 0x5D", () => {
      const m = fl();
      m.b.fsMap(m.root, 4, 0x1000, PA);
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 3, priv: true }), VTD_FR.SM_SRE_CLEAR);
    });

    it("a supervisor request on a unit without ECAP.SRS faults 0x5D even with SRE=1", () => {
      const m = fl({ srs: false }, { SRE: 1 });
      m.b.fsMap(m.root, 4, 0x1000, PA);
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 3, priv: true }), VTD_FR.SM_SRE_CLEAR);
    });

    it("writes to R/W=0: user faults 0x85; supervisor passes with WPE=0 and faults with WPE=1", () => {
      for (const wpe of [0, 1]) {
        const m = fl({}, { SRE: 1, WPE: wpe });
        m.b.fsMap(m.root, 4, 0x1000, PA, 1, { P: 1, US: 1 });
        expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 3, write: true }), VTD_FR.SM_NO_WRITE);
        const r = xlate(m.unit, SID, 0x1000, { pasid: 3, write: true, priv: true });
        if (wpe) expectFault(m, r, VTD_FR.SM_NO_WRITE);
        else expect(r).toMatchObject({ status: XLATE_OK, pa: PA });
      }
    });

    it("an execute request with ERE=0 faults 0x5C (and on a unit without ECAP.ERS)", () => {
      const m = fl();
      m.b.fsMap(m.root, 4, 0x1000, PA);
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 3, exec: true }), VTD_FR.SM_ERE_CLEAR);
      const m2 = fl({ ers: false }, { ERE: 1 });
      m2.b.fsMap(m2.root, 4, 0x1000, PA);
      expectFault(m2, xlate(m2.unit, SID, 0x1000, { pasid: 3, exec: true }), VTD_FR.SM_ERE_CLEAR);
    });

    it("XD at any level denies execute (0x82); without XD execute is granted", () => {
      const m = fl({}, { ERE: 1 });
      m.b.fsMap(m.root, 4, 0x1000, PA);
      m.b.fsMap(m.root, 4, 0x2000, PA, 1, { P: 1, RW: 1, US: 1, XD: 1 });
      expect(xlate(m.unit, SID, 0x1000, { pasid: 3, exec: true })).toMatchObject({
        status: XLATE_OK,
        perm: DMA_READ | DMA_WRITE | 4,
      });
      expectFault(m, xlate(m.unit, SID, 0x2000, { pasid: 3, exec: true }), VTD_FR.SM_NO_EXECUTE);
      expect(xlate(m.unit, SID, 0x2000, { pasid: 3 })).toMatchObject({
        status: XLATE_OK,
        perm: DMA_READ | DMA_WRITE,
      });
      // XD in the PML4E above a leaf without it (a fresh walk: the IOTLB still holds the old one).
      orWord(m, m.root, 0x80000000, true);
      expect(xlateFresh(m.unit, SID, 0x1000, { pasid: 3, exec: true })).toMatchObject({
        status: XLATE_FAULT,
        code: VTD_FR.SM_NO_EXECUTE,
      });
    });

    it("SMEP denies supervisor execute from user pages (0x82), not from supervisor pages", () => {
      for (const smep of [0, 1]) {
        const m = fl({}, { ERE: 1, SRE: 1, SMEP: smep });
        m.b.fsMap(m.root, 4, 0x1000, PA);
        m.b.fsMap(m.root, 4, 0x4000_0000, PA, 1, { P: 1, RW: 1 });
        // Make the supervisor page's path U/S=0 throughout.
        for (const lvl of [4, 3, 2]) {
          const at = m.b.entryAddr(m.root, 4, 0x4000_0000, lvl, (lo) => (lo & 1) !== 0);
          if (lvl < 4) m.mem.write32(at, m.mem.read32(at) & ~4);
        }
        const r = xlate(m.unit, SID, 0x1000, { pasid: 3, exec: true, priv: true });
        if (smep) expectFault(m, r, VTD_FR.SM_NO_EXECUTE);
        else expect(r.status).toBe(XLATE_OK);
        expect(xlate(m.unit, SID, 0x4000_0000, { pasid: 3, exec: true, priv: true }).status).toBe(
          XLATE_OK,
        );
      }
    });

    it("the walk sets A on every level and D on the leaf only for a write", () => {
      const m = fl();
      const leaf = m.b.fsMap(m.root, 4, 0x1000, PA);
      const path = [4, 3, 2].map((l) =>
        m.b.entryAddr(m.root, 4, 0x1000, l, (lo) => (lo & 1) !== 0),
      );
      const flags = (at: number) => m.b.read(FS_PTE, at);
      // An oracle walk changes nothing.
      xlateFresh(m.unit, SID, 0x1000, { pasid: 3, write: true });
      expect(flags(leaf)).toMatchObject({ A: 0, D: 0 });
      xlate(m.unit, SID, 0x1000, { pasid: 3 });
      for (const at of [...path, leaf]) expect(flags(at)).toMatchObject({ A: 1, D: 0 });
      xlate(m.unit, SID, 0x1000, { pasid: 3, write: true });
      expect(flags(leaf)).toMatchObject({ A: 1, D: 1 });
      for (const at of path) expect(flags(at).D).toBe(0);
    });

    it("a write through an IOTLB entry cached by a read walks again and sets D", () => {
      const m = fl();
      const leaf = m.b.fsMap(m.root, 4, 0x1000, PA);
      xlate(m.unit, SID, 0x1000, { pasid: 3 });
      expect(m.b.read(FS_PTE, leaf).D).toBe(0);
      xlate(m.unit, SID, 0x1000, { pasid: 3, write: true });
      expect(m.b.read(FS_PTE, leaf).D).toBe(1);
    });

    // The dirty flag records a write that happened; QEMU checks R/W before it sets A/D
    // (vtd_iova_to_fspte), and the x86 rules the first stage follows never set D for a write
    // that faults. The unit's walker sets D before the unit checks the permission.
    it("a write denied by R/W=0 leaves the leaf's D flag clear", () => {
      const m = fl();
      const leaf = m.b.fsMap(m.root, 4, 0x1000, PA, 1, { P: 1, US: 1 });
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 3, write: true }), VTD_FR.SM_NO_WRITE);
      expect(m.b.read(FS_PTE, leaf).D).toBe(0);
    });

    it("5-level paging on a unit without FL5LP is an invalid PASID entry (0x5B)", () => {
      const m = fl({ firstStage5Level: false }, { FLPM: 1 });
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 3 }), VTD_FR.SM_PASID_ENTRY_INVALID);
      const m2 = fl({}, { FLPM: 2 });
      expectFault(m2, xlate(m2.unit, SID, 0x1000, { pasid: 3 }), VTD_FR.SM_PASID_ENTRY_INVALID);
    });

    it("reserved bits in a first-stage entry (PS in a PML4E, 1 GiB without FL1GP, HAW): 0x72", () => {
      const m = fl();
      m.b.fsMap(m.root, 4, 0x1000, PA);
      orWord(m, m.root, 0x80);
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 3 }), VTD_FR.SM_FS_ENTRY_RESERVED);
      const m2 = fl({ firstStage1G: false });
      m2.b.fsMap(m2.root, 4, 0x4000_0000, PA, 3);
      expectFault(m2, xlate(m2.unit, SID, 0x4000_0000, { pasid: 3 }), VTD_FR.SM_FS_ENTRY_RESERVED);
      const m3 = fl();
      const leaf = m3.b.fsMap(m3.root, 4, 0x1000, PA);
      orWord(m3, leaf, 1 << 14, true);
      expectFault(m3, xlate(m3.unit, SID, 0x1000, { pasid: 3 }), VTD_FR.SM_FS_ENTRY_RESERVED);
    });

    it("bit 12 of a large first-stage leaf is PAT, not an address bit", () => {
      const m = fl();
      const leaf = m.b.fsMap(m.root, 4, 0x20_0000, PA, 2);
      orWord(m, leaf, 0x1000);
      expect(xlate(m.unit, SID, 0x20_1234, { pasid: 3 }).pa).toBe(PA + 0x1234);
    });

    it("not present at any level: 0x71; an output in the interrupt range: 0x87", () => {
      const m = fl();
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 3 }), VTD_FR.SM_FS_ENTRY_NOT_PRESENT);
      m.b.fsMap(m.root, 4, 0x1000, 0xfee0_1000);
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 3 }), VTD_FR.SM_INTERRUPT_ADDR);
    });

    it("a bus error reading a first-stage entry: 0x70", () => {
      const m = fl();
      const leaf = m.b.fsMap(m.root, 4, 0x1000, PA);
      failReads(m, leaf - (leaf % 4096));
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 3 }), VTD_FR.SM_FS_ENTRY_ACCESS);
    });
  });

  describe("second-stage access rules", () => {
    function sl(entryFields: FieldValues = {}) {
      const m = smMachine();
      const root = m.b.frame();
      m.b.setPasidEntry(m.dir, 9, { PGTT: PGTT_SL, DID, SLPTPTR: root, AW: 2, ...entryFields });
      return { ...m, root };
    }

    it("a write to R-only faults 0x85, a read of W-only 0x86, not present 0x79", () => {
      const m = sl();
      m.b.ssMap(m.root, 4, 0x1000, PA, 1, { R: 1 });
      m.b.ssMap(m.root, 4, 0x2000, PA, 1, { W: 1 });
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 9, write: true }), VTD_FR.SM_NO_WRITE);
      expectFault(m, xlate(m.unit, SID, 0x2000, { pasid: 9 }), VTD_FR.SM_NO_READ);
      expectFault(m, xlate(m.unit, SID, 0x3000, { pasid: 9 }), VTD_FR.SM_SS_ENTRY_PERMISSION);
    });

    it("reserved bits in a second-stage entry: 0x7A; a bus error: 0x78", () => {
      const m = sl();
      const leaf = m.b.ssMap(m.root, 4, 0x1000, PA);
      orWord(m, leaf, 1 << 15, true);
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 9 }), VTD_FR.SM_SS_ENTRY_RESERVED);
      const m2 = sl();
      const leaf2 = m2.b.ssMap(m2.root, 4, 0x1000, PA);
      failReads(m2, leaf2 - (leaf2 % 4096));
      expectFault(m2, xlate(m2.unit, SID, 0x1000, { pasid: 9 }), VTD_FR.SM_SS_ENTRY_ACCESS);
    });

    it("an AW not in SAGAW is an invalid PASID entry (0x5B)", () => {
      const m = sl({ AW: 1 });
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 9 }), VTD_FR.SM_PASID_ENTRY_INVALID);
    });

    it("the output in the interrupt range: 0x87", () => {
      const m = sl();
      m.b.ssMap(m.root, 4, 0x1000, 0xfeef_f000);
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 9 }), VTD_FR.SM_INTERRUPT_ADDR);
    });

    it("SLEE: execute permission from X at every level; without SLEE from R", () => {
      const m = vtdTestMachine({ caps: { ers: true } });
      const dir = m.b.setSmContext(m.rta, SID, {});
      const root = m.b.frame();
      m.b.ssMap(root, 4, 0x1000, PA, 1, { R: 1, W: 1 });
      m.b.ssMap(root, 4, 0x2000, PA, 1, { R: 1, W: 1, X: 1 });
      // X is needed at every level: give the table entries on 0x2000's path X too.
      for (const lvl of [4, 3, 2]) {
        const at = m.b.entryAddr(root, 4, 0x2000, lvl, (lo) => (lo & 3) !== 0);
        m.mem.write32(at, m.mem.read32(at) | 4);
      }
      m.b.setPasidEntry(dir, 1, { PGTT: PGTT_SL, DID, SLPTPTR: root, AW: 2, ERE: 1 });
      m.b.setPasidEntry(dir, 2, { PGTT: PGTT_SL, DID: 6, SLPTPTR: root, AW: 2, ERE: 1, SLEE: 1 });
      expect(xlate(m.unit, SID, 0x1000, { pasid: 1, exec: true }).status).toBe(XLATE_OK);
      expectFault(m, xlate(m.unit, SID, 0x1000, { pasid: 2, exec: true }), VTD_FR.SM_NO_EXECUTE);
      expect(xlate(m.unit, SID, 0x2000, { pasid: 2, exec: true }).status).toBe(XLATE_OK);
    });

    it("SLADE sets A and D in second-stage entries; without it they stay clear", () => {
      for (const slade of [0, 1]) {
        const m = sl({ SLADE: slade });
        const leaf = m.b.ssMap(m.root, 4, 0x1000, PA);
        xlate(m.unit, SID, 0x1000, { pasid: 9, write: true });
        expect(m.b.read(SS_PTE, leaf)).toMatchObject({ A: slade, D: slade });
      }
    });
  });

  describe("ATS in scalable mode", () => {
    function ats(ctx: FieldValues = { DTE: 1 }) {
      const m = smMachine({}, ctx);
      const root = m.b.frame();
      m.b.fsMap(root, 4, 0x1000, PA);
      m.b.fsMap(root, 4, 0x2000, PA + 0x1000, 1, { P: 1, US: 1 });
      m.b.fsMap(root, 4, 0x20_0000, PA + 0x20_0000, 2);
      m.b.setPasidEntry(m.dir, 3, { PGTT: PGTT_FL, DID, FLPTR: root });
      m.b.setPasidEntry(m.dir, 0, { PGTT: PGTT_FL, DID, FLPTR: root });
      return m;
    }

    it("a translation request returns the translation and its permissions", () => {
      const m = ats();
      const at = AT_TRANSLATION_REQUEST;
      expect(xlate(m.unit, SID, 0x1000, { pasid: 3, at })).toMatchObject({
        status: XLATE_OK,
        pa: PA,
        perm: DMA_READ | DMA_WRITE,
      });
      expect(xlate(m.unit, SID, 0x2000, { pasid: 3, at, write: true })).toMatchObject({
        status: XLATE_OK,
        pa: PA + 0x1000,
        perm: DMA_READ,
      });
      expect(xlate(m.unit, SID, 0x20_0000, { at })).toMatchObject({
        status: XLATE_OK,
        sizeShift: 21,
      });
    });

    it("a translation request for an unmapped page returns no permission and records no fault", () => {
      const m = ats();
      expect(
        xlate(m.unit, SID, 0x7000_0000, { pasid: 3, at: AT_TRANSLATION_REQUEST }),
      ).toMatchObject({
        status: XLATE_OK,
        perm: 0,
      });
      expectSilent(m);
    });

    it("a translated request passes through; with DTE=0 both kinds fault 0x44", () => {
      const m = ats();
      expect(xlate(m.unit, SID, 0x7000_0123, { pasid: 3, at: AT_TRANSLATED }).pa).toBe(0x7000_0123);
      const m2 = ats({});
      expectFault(
        m2,
        xlate(m2.unit, SID, 0x1000, { pasid: 3, at: AT_TRANSLATION_REQUEST }),
        VTD_FR.SM_DTE_CLEAR,
      );
      expectFault(m2, xlate(m2.unit, SID, 0x1000, { at: AT_TRANSLATED }), VTD_FR.SM_DTE_CLEAR);
    });

    it("DTE on a unit without device-TLBs is treated as clear (0x44)", () => {
      const m = vtdTestMachine({ caps: { deviceTlb: false, prs: false, pds: false } });
      const dir = m.b.setSmContext(m.rta, SID, { DTE: 1 });
      m.b.setPasidEntry(dir, 0, { PGTT: PGTT_PT, DID: 1 });
      expectFault(
        m,
        xlate(m.unit, SID, 0x1000, { at: AT_TRANSLATION_REQUEST }),
        VTD_FR.SM_DTE_CLEAR,
      );
    });
  });

  describe("fault reasons of root, context, PASID directory and PASID entries", () => {
    function ready(ctx: FieldValues = {}, caps: Partial<VtdCapabilities> = {}) {
      const m = smMachine(caps, ctx);
      const fl = m.b.frame();
      m.b.fsMap(fl, 4, 0x1000, PA);
      const pe = m.b.setPasidEntry(m.dir, 3, { PGTT: PGTT_FL, DID, FLPTR: fl });
      const ctxAt = m.b.smContextAddr(m.rta, SID);
      return { ...m, fl, pe, ctxAt };
    }
    const go = (m: VtdTestMachine, pasid = 3) => xlate(m.unit, SID, 0x1000, { pasid });

    it("the request works when nothing is wrong", () => {
      expect(go(ready()).pa).toBe(PA);
    });

    it("root entry LP/UP clear: 0x39 (lower and upper halves are separate)", () => {
      const m = ready();
      expectFault(m, xlate(m.unit, 0x0305, 0x1000), VTD_FR.SM_ROOT_ENTRY_NOT_PRESENT);
      // SID 0x90 is in the upper half of bus 0, which has only a lower table.
      expectFault(m, xlate(m.unit, 0x90, 0x1000), VTD_FR.SM_ROOT_ENTRY_NOT_PRESENT);
      m.b.setSmContext(m.rta, 0x90, {});
      expect(xlate(m.unit, 0x90, 0x1000).code).toBe(VTD_FR.SM_PASID_DIR_ENTRY_NOT_PRESENT);
    });

    it("reserved bits in the root entry: 0x3A", () => {
      for (const [off, bits] of [
        [0, 2],
        [8, 2],
        [4, 1 << 14],
      ] as const) {
        const m = ready();
        orWord(m, m.rta + (off & ~7), bits, (off & 4) !== 0);
        expectFault(m, go(m), VTD_FR.SM_ROOT_ENTRY_RESERVED);
      }
    });

    it("context entry P clear: 0x41", () => {
      const m = ready();
      expectFault(m, xlate(m.unit, SID + 1, 0x1000), VTD_FR.SM_CONTEXT_ENTRY_NOT_PRESENT);
    });

    it("reserved bits in the context entry (bits 8:5, 127:85, 255:128): 0x42", () => {
      for (const [off, bits] of [
        [0, 0x20],
        [8, 1 << 21],
        [16, 1],
        [28, 0x80000000],
      ] as const) {
        const m = ready();
        orWord(m, m.ctxAt + (off & ~7), bits, (off & 4) !== 0);
        expectFault(m, go(m), VTD_FR.SM_CONTEXT_ENTRY_RESERVED);
      }
    });

    it("a request with PASID and PASIDE clear: 0x45", () => {
      const m = ready({ PASIDE: 0 });
      expectFault(m, go(m), VTD_FR.SM_PASIDE_CLEAR);
      // Requests without PASID still work.
      m.b.setPasidEntry(m.dir, 0, { PGTT: PGTT_FL, DID, FLPTR: m.fl });
      expect(xlate(m.unit, SID, 0x1000).pa).toBe(PA);
    });

    it("a PASID beyond the directory's size (PDTS) or ECAP.PSS: 0x46", () => {
      const m = ready();
      expectFault(m, go(m, 2 ** 13), VTD_FR.SM_PASID_TOO_LARGE);
      const m2 = ready({ PDTS: 1 });
      m2.b.setPasidEntry(m2.dir, 2 ** 13, { PGTT: PGTT_FL, DID, FLPTR: m2.fl });
      expect(go(m2, 2 ** 13).pa).toBe(PA);
      expectFault(m2, go(m2, 2 ** 14), VTD_FR.SM_PASID_TOO_LARGE);
      const m3 = ready({}, { pss: 4 });
      expectFault(m3, go(m3, 32), VTD_FR.SM_PASID_TOO_LARGE);
    });

    it("PASID directory entry P clear: 0x51; reserved bits: 0x52", () => {
      const m = ready();
      expectFault(m, go(m, 64), VTD_FR.SM_PASID_DIR_ENTRY_NOT_PRESENT);
      const m2 = ready();
      orWord(m2, m2.dir, 0x4);
      expectFault(m2, go(m2), VTD_FR.SM_PASID_DIR_ENTRY_RESERVED);
    });

    it("PASID entry P clear: 0x59", () => {
      const m = ready();
      expectFault(m, go(m, 4), VTD_FR.SM_PASID_ENTRY_NOT_PRESENT);
    });

    it("reserved bits in the PASID entry (bits 11:10, 86:80, 139:136, qw3..7): 0x5A", () => {
      for (const [off, bits] of [
        [0, 0x400],
        [8, 1 << 16],
        [16, 1 << 8],
        [24, 1],
        [60, 0x80000000],
      ] as const) {
        const m = ready();
        orWord(m, m.pe + (off & ~7), bits, (off & 4) !== 0);
        expectFault(m, go(m), VTD_FR.SM_PASID_ENTRY_RESERVED);
      }
    });

    it("an FLPTR above the host address width is reserved: 0x5A", () => {
      const m = ready();
      m.b.setPasidEntry(m.dir, 3, { PGTT: PGTT_FL, DID, FLPTR: 2 ** 47 });
      expectFault(m, go(m), VTD_FR.SM_PASID_ENTRY_RESERVED);
    });

    it("a reserved PGTT (0, 5, 6, 7) is an invalid PASID entry: 0x5B", () => {
      for (const pgtt of [0, 5, 6, 7]) {
        const m = ready();
        m.b.setPasidEntry(m.dir, 3, { PGTT: pgtt, DID, FLPTR: m.fl });
        expectFault(m, go(m), VTD_FR.SM_PASID_ENTRY_INVALID);
      }
    });

    it("a PGTT the unit does not support is invalid: 0x5B", () => {
      const m = ready({}, { passThrough: false });
      m.b.setPasidEntry(m.dir, 3, { PGTT: PGTT_PT, DID });
      expectFault(m, go(m), VTD_FR.SM_PASID_ENTRY_INVALID);
    });

    it("bus errors: root 0x38, context 0x40, PASID directory 0x50, PASID entry 0x58", () => {
      const cases: [(m: ReturnType<typeof ready>) => number, number][] = [
        [(m) => m.rta, VTD_FR.SM_ROOT_ENTRY_ACCESS],
        [(m) => m.ctxAt - (m.ctxAt % 4096), VTD_FR.SM_CONTEXT_ENTRY_ACCESS],
        [(m) => m.dir, VTD_FR.SM_PASID_DIR_ENTRY_ACCESS],
        [(m) => m.pe - (m.pe % 4096), VTD_FR.SM_PASID_ENTRY_ACCESS],
      ];
      for (const [where, code] of cases) {
        const m = ready();
        failReads(m, where(m));
        expectFault(m, go(m), code);
      }
    });

    it("page walks read through a bus error never throw and report each reason once", () => {
      const m = ready();
      m.mem.faultHook = () => true;
      expect(() => go(m)).not.toThrow();
      expect(m.unit.faults.recorded).toBe(1);
    });
  });
});
