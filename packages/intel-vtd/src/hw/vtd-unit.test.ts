// Tests of the VT-d unit's register file and handshakes: VER/CAP/ECAP, GCMD/GSTS, RTADDR latching,
// register-based invalidation (CCMD, IOTLB), fault status, fault events and fault recording.

import {
  AT_TRANSLATED,
  AT_TRANSLATION_REQUEST,
  DMA_WRITE,
  FaultKind,
  XLATE_FAULT,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
import { PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import {
  type QiSubmitter,
  readFrcd,
  type VtdTestMachineOptions,
  vtdTestMachine,
  xlate,
  xlateFresh,
} from "../../test/table-builder.js";
import { VTD_FR } from "../format/fault-record.js";
import { FS_PTE } from "../format/first-stage-pte.js";
import { PGTT_FL } from "../format/pasid-entry.js";
import {
  ECTL_IM,
  ECTL_IP,
  FSTS_IQE,
  FSTS_PFO,
  FSTS_PPF,
  GCMD_CFI,
  GCMD_EAFL,
  GCMD_IRE,
  GCMD_QIE,
  GCMD_SFL,
  GCMD_SIRTP,
  GCMD_SRTP,
  GCMD_TE,
  GCMD_WBF,
  GSTS_FLS,
  GSTS_QIES,
  GSTS_RTPS,
  GSTS_TES,
  VTD_REG,
} from "../format/registers.js";
import {
  DEFAULT_VTD_CAPS,
  decodeVtdCaps,
  LEGACY_VTD_CAPS,
  type VtdCapabilities,
  vtdCapValue,
  vtdEcapValue,
  vtdFrcdOffset,
  vtdIotlbRegOffset,
  vtdVerValue,
} from "./vtd-caps.js";
import { type VtdInterruptSource, VtdUnit } from "./vtd-unit.js";

const SID = 0x10;
const IOVA = 0x1234_5000;
const PA = 0x8_0000_0000;
const PA2 = 0x9_0000_0000;
const DID = 5;

/** A legacy-mode unit with SID mapped IOVA -> PA through a 4-level table of domain DID. */
function legacy(opts: VtdTestMachineOptions = {}) {
  const events: VtdInterruptSource[] = [];
  const m = vtdTestMachine({
    ...opts,
    caps: { ...LEGACY_VTD_CAPS, ...opts.caps },
    unit: { onInterrupt: (s) => events.push(s), ...opts.unit },
  });
  const root = m.b.frame();
  const ctx = m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID });
  const leaf = m.b.ssMap(root, 4, IOVA, PA);
  return { ...m, root, ctx, leaf, events };
}

/** Repoint the leaf of IOVA at PA2, so a fresh walk differs from a cached one. */
function retarget(m: ReturnType<typeof legacy>): void {
  m.b.ssMap(m.root, 4, IOVA, PA2);
}

const gsts = (u: VtdUnit) => u.read32(VTD_REG.GSTS) >>> 0;
const fsts = (u: VtdUnit) => u.read32(VTD_REG.FSTS) >>> 0;

describe("VER, CAP and ECAP", () => {
  for (const [name, caps] of [
    ["default", DEFAULT_VTD_CAPS],
    ["legacy", LEGACY_VTD_CAPS],
    ["custom", { ...DEFAULT_VTD_CAPS, nfr: 3, mamv: 9, cachingMode: true, esrtps: true }],
  ] as [string, VtdCapabilities][]) {
    it(`registers read the values built from the ${name} capabilities`, () => {
      const u = new VtdUnit({ mem: new PhysMemory(), caps });
      const [capLo, capHi] = vtdCapValue(caps);
      const [ecapLo, ecapHi] = vtdEcapValue(caps);
      expect(u.read32(VTD_REG.VER)).toBe(vtdVerValue(caps));
      expect(u.read32(VTD_REG.CAP)).toBe(capLo);
      expect(u.read32(VTD_REG.CAP + 4)).toBe(capHi);
      expect(u.read32(VTD_REG.ECAP)).toBe(ecapLo);
      expect(u.read32(VTD_REG.ECAP + 4)).toBe(ecapHi);
      const back = decodeVtdCaps(
        u.read32(VTD_REG.VER),
        [u.read32(VTD_REG.CAP), u.read32(VTD_REG.CAP + 4)],
        [u.read32(VTD_REG.ECAP), u.read32(VTD_REG.ECAP + 4)],
      );
      expect(back).toEqual({
        ...caps,
        version: { ...caps.version },
        superpages: [...caps.superpages],
      });
      // FRO and IRO point at where the unit really placed the blocks.
      expect(((capHi & 3) * 256 + (capLo >>> 24)) * 16).toBe(vtdFrcdOffset(caps));
      expect(((ecapLo >>> 8) & 0x3ff) * 16).toBe(vtdIotlbRegOffset(caps));
    });
  }

  it("writes to the read-only registers are ignored", () => {
    const u = new VtdUnit({ mem: new PhysMemory() });
    const before = [VTD_REG.VER, VTD_REG.CAP, VTD_REG.CAP + 4, VTD_REG.ECAP, VTD_REG.ECAP + 4].map(
      (o) => u.read32(o),
    );
    for (const o of [VTD_REG.VER, VTD_REG.CAP, VTD_REG.CAP + 4, VTD_REG.ECAP, VTD_REG.ECAP + 4])
      u.write32(o, 0xffffffff);
    u.write32(VTD_REG.GSTS, 0xffffffff);
    expect(
      [VTD_REG.VER, VTD_REG.CAP, VTD_REG.CAP + 4, VTD_REG.ECAP, VTD_REG.ECAP + 4].map((o) =>
        u.read32(o),
      ),
    ).toEqual(before);
    expect(gsts(u)).toBe(0);
  });

  it("misaligned and out-of-range offsets read 0 and ignore writes", () => {
    const u = new VtdUnit({ mem: new PhysMemory() });
    for (const o of [-4, 1, 0x1000, 0x2000, 3.5, Number.NaN]) {
      expect(u.read32(o)).toBe(0);
      u.write32(o, 0xffffffff);
    }
    expect(gsts(u)).toBe(0);
  });

  it("an invalid capability set is refused at construction", () => {
    expect(() => new VtdUnit({ mem: new PhysMemory(), caps: { nfr: 300 } })).toThrow(RangeError);
    expect(() => new VtdUnit({ mem: new PhysMemory(), haw: 60 })).toThrow(RangeError);
  });
});

describe("GCMD and GSTS", () => {
  it("GCMD reads as 0 and GSTS reports what bring-up enabled", () => {
    const m = legacy();
    expect(m.unit.read32(VTD_REG.GCMD)).toBe(0);
    expect(gsts(m.unit)).toBe((GSTS_TES | GSTS_RTPS | GSTS_QIES) >>> 0);
  });

  it("translation disabled passes every request through untranslated", () => {
    const m = legacy({ enable: false });
    expect(gsts(m.unit) & GSTS_TES).toBe(0);
    expect(xlate(m.unit, SID, IOVA + 0x10, { write: true })).toMatchObject({
      status: XLATE_OK,
      pa: IOVA + 0x10,
      perm: 7,
    });
    // Even for a requester with no context entry at all.
    expect(xlate(m.unit, 0x3300, 0x5000)).toMatchObject({ status: XLATE_OK, pa: 0x5000 });
    expect(fsts(m.unit)).toBe(0);
  });

  it("TE on and off toggles TES and translation", () => {
    const m = legacy();
    expect(xlate(m.unit, SID, IOVA)).toMatchObject({ status: XLATE_OK, pa: PA });
    m.unit.write32(VTD_REG.GCMD, GCMD_QIE);
    expect(gsts(m.unit)).toBe((GSTS_RTPS | GSTS_QIES) >>> 0);
    expect(xlate(m.unit, SID, IOVA).pa).toBe(IOVA);
    m.unit.write32(VTD_REG.GCMD, (GCMD_QIE | GCMD_TE) >>> 0);
    expect(gsts(m.unit) & GSTS_TES).not.toBe(0);
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
  });

  it("a GCMD write that omits an enabled persistent bit disables it (QEMU semantics)", () => {
    const m = legacy();
    m.unit.write32(VTD_REG.GCMD, GCMD_SRTP);
    // SRTP alone: TE and QIE were not written, so both turn off; RTPS stays set.
    expect(gsts(m.unit)).toBe(GSTS_RTPS);
  });

  it("one-shot bits act without disturbing the persistent enables written with them", () => {
    const m = legacy();
    const keep = (GCMD_TE | GCMD_QIE) >>> 0;
    for (const bit of [GCMD_WBF, GCMD_SFL, GCMD_SRTP]) {
      m.unit.write32(VTD_REG.GCMD, (keep | bit) >>> 0);
      // WBFS never reads 1 (the flush completes at once), FLS is not set without CAP.AFL.
      expect(gsts(m.unit)).toBe((GSTS_TES | GSTS_QIES | GSTS_RTPS) >>> 0);
    }
    // Bits of features the unit lacks (IR, AFL) do not show up in GSTS.
    m.unit.write32(VTD_REG.GCMD, (keep | GCMD_IRE | GCMD_SIRTP | GCMD_CFI | GCMD_EAFL) >>> 0);
    expect(gsts(m.unit)).toBe((GSTS_TES | GSTS_QIES | GSTS_RTPS) >>> 0);
  });

  it("RTADDR is latched only by SRTP", () => {
    const m = legacy();
    const rta2 = m.b.frame();
    const root2 = m.b.frame();
    m.b.setContext(rta2, SID, { SLPTPTR: root2, AW: 2, DID: 9 });
    m.b.ssMap(root2, 4, IOVA, PA2);
    m.unit.write32(VTD_REG.RTADDR, rta2);
    m.unit.write32(VTD_REG.RTADDR + 4, 0);
    expect(m.unit.read32(VTD_REG.RTADDR)).toBe(rta2);
    expect(xlateFresh(m.unit, SID, IOVA).pa).toBe(PA);
    m.unit.write32(VTD_REG.GCMD, (GCMD_TE | GCMD_QIE | GCMD_SRTP) >>> 0);
    expect(xlateFresh(m.unit, SID, IOVA).pa).toBe(PA2);
  });

  it("RTADDR keeps TTM and the address but drops reserved bits 9:0", () => {
    const u = new VtdUnit({ mem: new PhysMemory() });
    u.write32(VTD_REG.RTADDR, 0x1234_5fff);
    expect(u.read32(VTD_REG.RTADDR)).toBe(0x1234_5c00);
  });

  // IQH_REG.QH (VT-d register definition, e.g. Intel Core datasheet vol. 2 / Core Ultra SoC
  // registers): "Hardware resets this field to 0 whenever the queued invalidation is disabled
  // (QIES field Clear in the Global Status register)." QEMU vtd_handle_gcmd_qie does the same.
  it("disabling QIE resets IQH to 0, and it stays 0 when QIE is enabled again", () => {
    const m = legacy();
    const qi = m.qi as QiSubmitter;
    expect(qi.submit([[1, { G: 1 }]])).toBe(true);
    expect(qi.head).toBe(32);
    m.unit.write32(VTD_REG.GCMD, GCMD_TE);
    expect(gsts(m.unit) & GSTS_QIES).toBe(0);
    expect(qi.head).toBe(0);
    m.unit.write32(VTD_REG.IQT, 0);
    m.unit.write32(VTD_REG.GCMD, (GCMD_TE | GCMD_QIE) >>> 0);
    expect(qi.head).toBe(0);
  });

  it("without ESRTPS an SRTP keeps the caches; with ESRTPS it drops them", () => {
    for (const esrtps of [false, true]) {
      const m = legacy({ caps: { esrtps } });
      expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
      retarget(m);
      expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
      m.unit.write32(VTD_REG.GCMD, (GCMD_TE | GCMD_QIE | GCMD_SRTP) >>> 0);
      expect(xlate(m.unit, SID, IOVA).pa).toBe(esrtps ? PA2 : PA);
    }
  });

  it("a TTM the unit cannot use faults every request with 0x30", () => {
    // TTM=01 on a legacy-only unit, and the reserved TTM=10.
    for (const [caps, ttm] of [
      [LEGACY_VTD_CAPS, 1],
      [DEFAULT_VTD_CAPS, 2],
    ] as const) {
      const m = vtdTestMachine({ caps });
      m.unit.write32(VTD_REG.RTADDR, (m.rta | (ttm << 10)) >>> 0);
      m.unit.write32(VTD_REG.GCMD, (GCMD_TE | GCMD_QIE | GCMD_SRTP) >>> 0);
      expect(xlate(m.unit, SID, IOVA)).toMatchObject({
        status: XLATE_FAULT,
        code: VTD_FR.SM_ROOT_TABLE_ADDR_INVALID,
      });
      expect(readFrcd(m.unit, 0).FR).toBe(VTD_FR.SM_ROOT_TABLE_ADDR_INVALID);
    }
  });

  it("a root table above the host address width faults 0x8 (legacy) and 0x30 (scalable)", () => {
    for (const scalable of [false, true]) {
      const m = vtdTestMachine({ caps: scalable ? DEFAULT_VTD_CAPS : LEGACY_VTD_CAPS });
      m.unit.write32(VTD_REG.RTADDR, scalable ? 1 << 10 : 0);
      m.unit.write32(VTD_REG.RTADDR + 4, 1 << 14); // 2^46, the default HAW
      m.unit.write32(VTD_REG.GCMD, (GCMD_TE | GCMD_QIE | GCMD_SRTP) >>> 0);
      const code = scalable ? VTD_FR.SM_ROOT_TABLE_ADDR_INVALID : VTD_FR.ROOT_TABLE_ACCESS;
      expect(xlate(m.unit, SID, IOVA)).toMatchObject({ status: XLATE_FAULT, code });
      expect(readFrcd(m.unit, 0).FR).toBe(code);
    }
  });

  it("SFL sets FLS only with CAP.AFL (GCMD_REG.SFL, GSTS_REG.FLS)", () => {
    const m = legacy({ caps: { afl: true } });
    const keep = (GCMD_TE | GCMD_QIE) >>> 0;
    m.unit.write32(VTD_REG.GCMD, (keep | GCMD_SFL) >>> 0);
    expect(gsts(m.unit)).toBe((GSTS_TES | GSTS_QIES | GSTS_RTPS | GSTS_FLS) >>> 0);
  });
});

describe("protected memory regions (PMEN, PLMBASE/LIMIT, PHMBASE/LIMIT)", () => {
  const EPM = 0x80000000;
  const LOW = 0x0040_0000; // a 1 MiB region at 4 MiB
  const HIGH = 0x2_0000_0000; // a 2 MiB region at 8 GiB

  /** A legacy unit with both regions programmed and EPM set; translation off unless `te`. */
  function pmr(te: boolean, caps: Partial<VtdCapabilities> = { plmr: true, phmr: true }) {
    const m = legacy({ caps, enable: te });
    const u = m.unit;
    u.write32(VTD_REG.PLMBASE, LOW);
    u.write32(VTD_REG.PLMLIMIT, LOW);
    u.write32(VTD_REG.PHMBASE, 0);
    u.write32(VTD_REG.PHMBASE + 4, 2);
    u.write32(VTD_REG.PHMLIMIT, 0x0010_0000);
    u.write32(VTD_REG.PHMLIMIT + 4, 2);
    u.write32(VTD_REG.PMEN, EPM);
    return m;
  }

  it("are read-only 0 without CAP.PLMR and CAP.PHMR", () => {
    const u = new VtdUnit({ mem: new PhysMemory(), caps: { plmr: false, phmr: false } });
    for (const r of [VTD_REG.PMEN, VTD_REG.PLMBASE, VTD_REG.PLMLIMIT, VTD_REG.PHMBASE]) {
      u.write32(r, 0xffffffff);
      expect(u.read32(r)).toBe(0);
    }
    u.write32(VTD_REG.PHMLIMIT + 4, 0xffffffff);
    expect(u.read32(VTD_REG.PHMLIMIT + 4)).toBe(0);
  });

  it("keep bits 31:20 (low) and HAW-1:20 (high); PMEN.PRS follows EPM", () => {
    const u = new VtdUnit({ mem: new PhysMemory(), caps: { plmr: true, phmr: false } });
    u.write32(VTD_REG.PLMBASE, 0xffffffff);
    expect(u.read32(VTD_REG.PLMBASE) >>> 0).toBe(0xfff00000);
    u.write32(VTD_REG.PHMBASE + 4, 0xffffffff); // no PHMR: read-only
    expect(u.read32(VTD_REG.PHMBASE + 4)).toBe(0);
    expect(u.read32(VTD_REG.PMEN)).toBe(0);
    u.write32(VTD_REG.PMEN, 0xffffffff);
    expect(u.read32(VTD_REG.PMEN) >>> 0).toBe(0x80000001);
    u.write32(VTD_REG.PMEN, 0);
    expect(u.read32(VTD_REG.PMEN)).toBe(0);
    const h = new VtdUnit({ mem: new PhysMemory(), caps: { phmr: true }, haw: 39 });
    h.write32(VTD_REG.PHMLIMIT + 4, 0xffffffff);
    expect(h.read32(VTD_REG.PHMLIMIT + 4)).toBe(0x7f);
  });

  it("with translation off, DMA into a region is blocked and not recorded as a fault", () => {
    const m = pmr(false);
    for (const pa of [LOW, LOW + 0xff000, HIGH, HIGH + 0x1ff000]) {
      expect(xlate(m.unit, SID, pa)).toMatchObject({
        status: XLATE_FAULT,
        kind: FaultKind.BLOCKED,
        code: 0,
      });
    }
    for (const pa of [LOW - 0x1000, LOW + 0x100000, HIGH + 0x200000]) {
      expect(xlate(m.unit, SID, pa)).toMatchObject({ status: XLATE_OK, pa });
    }
    expect(fsts(m.unit) & FSTS_PPF).toBe(0);
    // A limit below its base disables that region; EPM clear disables both.
    m.unit.write32(VTD_REG.PLMLIMIT, 0);
    expect(xlate(m.unit, SID, LOW).status).toBe(XLATE_OK);
    m.unit.write32(VTD_REG.PMEN, 0);
    expect(xlate(m.unit, SID, HIGH).status).toBe(XLATE_OK);
  });

  it("with translation on, pass-through and translated requests into a region are blocked", () => {
    const m = pmr(true);
    const pt = 0x20;
    m.b.setContext(m.rta, pt, { TT: 2, AW: 2, DID: 7 });
    expect(xlate(m.unit, pt, LOW)).toMatchObject({ status: XLATE_FAULT, kind: FaultKind.BLOCKED });
    expect(xlate(m.unit, pt, LOW - 0x1000)).toMatchObject({ status: XLATE_OK, pa: LOW - 0x1000 });
    const ats = 0x30;
    m.b.setContext(m.rta, ats, { TT: 1, SLPTPTR: m.root, AW: 2, DID });
    expect(xlate(m.unit, ats, HIGH, { at: AT_TRANSLATED })).toMatchObject({
      status: XLATE_FAULT,
      kind: FaultKind.BLOCKED,
    });
    // A remapped request is not range-checked (the spec lets hardware skip it).
    m.b.ssMap(m.root, 4, 0x7000, LOW);
    expect(xlate(m.unit, SID, 0x7000)).toMatchObject({ status: XLATE_OK, pa: LOW });
    expect(fsts(m.unit) & FSTS_PPF).toBe(0);
  });
});

describe("register-based context-cache invalidation (CCMD)", () => {
  /** Legacy, QI off, SID's context entry cached; then the entry moves to DID 9 and PA2. */
  function staleContext() {
    const m = legacy({ qi: false });
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
    const root2 = m.b.frame();
    m.b.ssMap(root2, 4, IOVA, PA2);
    m.b.setContext(m.rta, SID, { SLPTPTR: root2, AW: 2, DID: 9 });
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
    expect(xlateFresh(m.unit, SID, IOVA).pa).toBe(PA2);
    return m;
  }
  function ccmd(u: VtdUnit, cirg: number, did: number, sid: number, fm = 0): number {
    u.write32(VTD_REG.CCMD, ((sid << 16) | did) >>> 0);
    u.write32(VTD_REG.CCMD + 4, (0x80000000 | (cirg << 29) | fm) >>> 0);
    return u.read32(VTD_REG.CCMD + 4) >>> 0;
  }

  it("ICC self-clears and CAIG reports the granularity performed", () => {
    for (const cirg of [1, 2, 3]) {
      const m = legacy({ qi: false });
      const hi = ccmd(m.unit, cirg, DID, SID);
      expect(hi >>> 31).toBe(0);
      expect((hi >>> 27) & 3).toBe(cirg);
    }
  });

  it("a reserved CIRG (0) does nothing and CAIG reads 0", () => {
    const m = staleContext();
    const hi = ccmd(m.unit, 0, DID, SID);
    expect((hi >>> 27) & 3).toBe(0);
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
  });

  it("a cached context entry survives device-selective for another SID and domain-selective for another DID", () => {
    const m = staleContext();
    ccmd(m.unit, 3, DID, SID + 8); // another device number
    ccmd(m.unit, 3, DID, SID ^ 1, 0); // another function, FM = 0
    ccmd(m.unit, 3, DID, SID ^ 1, 2); // FM=2 masks function bits 2:1, not bit 0
    ccmd(m.unit, 2, DID + 1, SID);
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
  });

  it("device-selective with a function mask covering the SID drops it", () => {
    const m = staleContext();
    ccmd(m.unit, 3, 0, SID | 6, 2); // FM=2 ignores function bits 2:1
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA2);
  });

  for (const [name, cirg] of [
    ["global", 1],
    ["domain-selective", 2],
    ["device-selective", 3],
  ] as const) {
    it(`${name} CCMD covering the entry drops it`, () => {
      const m = staleContext();
      ccmd(m.unit, cirg, DID, SID);
      expect(xlate(m.unit, SID, IOVA).pa).toBe(PA2);
    });
  }

  it("CCMD is ignored while queued invalidation is enabled", () => {
    const m = legacy();
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
    const root2 = m.b.frame();
    m.b.ssMap(root2, 4, IOVA, PA2);
    m.b.setContext(m.rta, SID, { SLPTPTR: root2, AW: 2, DID: 9 });
    const hi = ccmd(m.unit, 1, 0, 0);
    expect(hi >>> 31).toBe(0);
    expect((hi >>> 27) & 3).toBe(0);
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
  });
});

describe("register-based IOTLB invalidation (IVA/IOTLB)", () => {
  const IRO = vtdIotlbRegOffset(LEGACY_VTD_CAPS);
  function iotlbReg(u: VtdUnit, iirg: number, did: number, iova = 0, am = 0, ih = false): number {
    u.write32(IRO, ((iova % 2 ** 32) | am | (ih ? 64 : 0)) >>> 0);
    u.write32(IRO + 4, Math.floor(iova / 2 ** 32));
    u.write32(IRO + 8, 0);
    u.write32(IRO + 12, (0x80000000 | (iirg << 28) | did) >>> 0);
    return u.read32(IRO + 12) >>> 0;
  }
  function stale(opts: VtdTestMachineOptions = {}) {
    const m = legacy({ qi: false, ...opts });
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
    retarget(m);
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
    return m;
  }

  it("IVT self-clears and IAIG reports the granularity performed", () => {
    for (const iirg of [1, 2, 3]) {
      const m = legacy({ qi: false });
      const hi = iotlbReg(m.unit, iirg, DID, IOVA);
      expect(hi >>> 31).toBe(0);
      expect((hi >>> 25) & 3).toBe(iirg);
      expect((hi >>> 28) & 3).toBe(iirg);
    }
  });

  it("a cached translation survives domain- and page-selective flushes that do not cover it", () => {
    const m = stale();
    iotlbReg(m.unit, 2, DID + 1);
    iotlbReg(m.unit, 3, DID, IOVA + 0x1000);
    iotlbReg(m.unit, 3, DID, IOVA - 0x1000);
    iotlbReg(m.unit, 3, DID, IOVA + 0x2000, 1); // pages IOVA+2..+3
    iotlbReg(m.unit, 3, DID + 1, IOVA);
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
  });

  for (const [name, iirg, iova, am] of [
    ["global", 1, 0, 0],
    ["domain-selective", 2, 0, 0],
    ["page-selective", 3, IOVA, 0],
    ["page-selective with an address mask", 3, IOVA - 0x5000, 4],
  ] as const) {
    it(`${name} covering the page drops it`, () => {
      const m = stale();
      iotlbReg(m.unit, iirg, DID, iova, am);
      expect(xlate(m.unit, SID, IOVA).pa).toBe(PA2);
    });
  }

  it("page-selective with AM above MAMV is performed domain-selective (IAIG = domain)", () => {
    const m = stale({ caps: { mamv: 2 } });
    const hi = iotlbReg(m.unit, 3, DID, 0x7000_0000, 3);
    expect((hi >>> 25) & 3).toBe(2);
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA2);
  });

  it("page-selective without CAP.PSI is performed domain-selective (IAIG = domain)", () => {
    const m = stale({ caps: { psi: false, mamv: 0 } });
    const hi = iotlbReg(m.unit, 3, DID, 0x7000_0000);
    expect((hi >>> 25) & 3).toBe(2);
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA2);
  });

  it("a reserved IIRG (0) does nothing and IAIG reads 0", () => {
    const m = stale();
    const hi = iotlbReg(m.unit, 0, DID);
    expect((hi >>> 25) & 3).toBe(0);
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
  });

  it("the IOTLB register is ignored while queued invalidation is enabled", () => {
    const m = legacy();
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
    retarget(m);
    const hi = iotlbReg(m.unit, 1, 0);
    expect(hi >>> 31).toBe(0);
    expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
  });

  it("IVA reads back what was written", () => {
    const m = legacy({ qi: false });
    m.unit.write32(IRO, 0x1234_5047);
    m.unit.write32(IRO + 4, 0x12);
    expect(m.unit.read32(IRO) >>> 0).toBe(0x1234_5047);
    expect(m.unit.read32(IRO + 4)).toBe(0x12);
  });
});

describe("fault status, fault events and fault recording", () => {
  const FRO = vtdFrcdOffset(LEGACY_VTD_CAPS);

  it("a fault with FECTL.IM set leaves IP pending; clearing IM sends the event once", () => {
    const m = legacy();
    expect(m.unit.read32(VTD_REG.FECTL) >>> 0).toBe(ECTL_IM);
    xlate(m.unit, SID, 0x7000_0000);
    expect(fsts(m.unit) & FSTS_PPF).not.toBe(0);
    expect(m.unit.read32(VTD_REG.FECTL) >>> 0).toBe((ECTL_IM | ECTL_IP) >>> 0);
    expect(m.events).toEqual([]);
    m.unit.write32(VTD_REG.FECTL, 0);
    expect(m.events).toEqual(["fault"]);
    expect(m.unit.read32(VTD_REG.FECTL)).toBe(0);
  });

  it("a fault with FECTL.IM clear sends the event at once; further faults while PPF is set do not", () => {
    const m = legacy();
    m.unit.write32(VTD_REG.FECTL, 0);
    xlate(m.unit, SID, 0x7000_0000);
    expect(m.events).toEqual(["fault"]);
    xlate(m.unit, SID, 0x7000_1000);
    expect(m.events).toEqual(["fault"]);
    // Software clears both records: the next fault is a new interrupt condition.
    m.unit.write32(FRO + 12, 0x80000000);
    m.unit.write32(FRO + 16 + 12, 0x80000000);
    expect(fsts(m.unit) & FSTS_PPF).toBe(0);
    xlate(m.unit, SID, 0x7000_2000);
    expect(m.events).toEqual(["fault", "fault"]);
  });

  it("FEDATA/FEADDR/FEUADDR are plain storage", () => {
    const m = legacy();
    for (const [o, v] of [
      [VTD_REG.FEDATA, 0x4021],
      [VTD_REG.FEADDR, 0xfee0_0000],
      [VTD_REG.FEUADDR, 7],
    ] as const) {
      m.unit.write32(o, v);
      expect(m.unit.read32(o) >>> 0).toBe(v);
    }
  });

  it("FEADDR and IEADDR keep bits 1:0 zero (message addresses are dword aligned)", () => {
    const m = legacy();
    for (const o of [VTD_REG.FEADDR, VTD_REG.IEADDR]) {
      m.unit.write32(o, 0xfee0_0003);
      expect(m.unit.read32(o) >>> 0).toBe(0xfee0_0000);
    }
  });

  it("a legacy fault record reads back SID, FR, T, AT and the page address, without PASID", () => {
    const m = legacy();
    xlate(m.unit, SID, 0x7654_3210);
    const r = readFrcd(m.unit, 0);
    expect(r).toMatchObject({
      F: 1,
      SID,
      FR: VTD_FR.NO_READ,
      T: 1,
      PP: 0,
      PV: 0,
      AT: 0,
      FI: 0x7654_3000,
      PRIV: 0,
      EXE: 0,
    });
    xlate(m.unit, SID, 0x7654_5000, { write: true });
    expect(readFrcd(m.unit, 1)).toMatchObject({ FR: VTD_FR.NO_WRITE, T: 0, FI: 0x7654_5000 });
    expect((fsts(m.unit) >>> 8) & 0xff).toBe(0);
  });

  it("a scalable fault record reads back PP, the PASID, PRIV, EXE and a 57-bit address", () => {
    const m = vtdTestMachine({ caps: { ers: true } });
    const dir = m.b.setSmContext(m.rta, SID, {});
    const fl = m.b.frame();
    m.b.setPasidEntry(dir, 77, { PGTT: PGTT_FL, DID, FLPTR: fl, FLPM: 1, SRE: 1, ERE: 1 });
    const iova = 0xff_1234_5678_9000n;
    const r = xlate(m.unit, SID, iova + 0xabcn, { pasid: 77, priv: true, exec: true });
    expect(r).toMatchObject({ status: XLATE_FAULT, code: VTD_FR.SM_FS_ENTRY_NOT_PRESENT });
    const f = readFrcd(m.unit, 0);
    expect(f).toMatchObject({
      F: 1,
      SID,
      FR: VTD_FR.SM_FS_ENTRY_NOT_PRESENT,
      PP: 1,
      PV: 77,
      PRIV: 1,
      EXE: 1,
      T: 1,
      AT: 0,
    });
    expect(BigInt(f.FI as number | bigint)).toBe(iova);
  });

  it("an ATS translation request that is refused records AT = translation request", () => {
    const m = legacy();
    const r = xlate(m.unit, SID, IOVA, { at: AT_TRANSLATION_REQUEST });
    expect(r).toMatchObject({ status: XLATE_FAULT, code: VTD_FR.CONTEXT_TT_BLOCKED });
    expect(readFrcd(m.unit, 0)).toMatchObject({ FR: VTD_FR.CONTEXT_TT_BLOCKED, AT: 1 });
  });

  it("F is write-1-to-clear and the other record bits are read-only", () => {
    const m = legacy();
    xlate(m.unit, SID, 0x7000_0000);
    m.unit.write32(FRO + 8, 0);
    m.unit.write32(FRO + 12, 0x7fffffff);
    expect(readFrcd(m.unit, 0)).toMatchObject({ F: 1, SID });
    m.unit.write32(FRO + 12, 0x80000000);
    expect(readFrcd(m.unit, 0).F).toBe(0);
    expect(fsts(m.unit) & FSTS_PPF).toBe(0);
  });

  it("more faults than records set PFO and drop the fault; PFO is write-1-to-clear", () => {
    const m = legacy();
    const n = LEGACY_VTD_CAPS.nfr + 1;
    for (let i = 0; i < n; i++) xlate(m.unit, SID, 0x7000_0000 + i * 0x1000);
    expect(fsts(m.unit) & FSTS_PFO).toBe(0);
    xlate(m.unit, SID, 0x7100_0000);
    expect(fsts(m.unit) & (FSTS_PFO | FSTS_PPF)).toBe(FSTS_PFO | FSTS_PPF);
    for (let i = 0; i < n; i++) expect(readFrcd(m.unit, i).FI).toBe(0x7000_0000 + i * 0x1000);
    // PPF is read-only: writing it changes nothing; writing PFO clears PFO.
    m.unit.write32(VTD_REG.FSTS, FSTS_PPF);
    expect(fsts(m.unit) & (FSTS_PFO | FSTS_PPF)).toBe(FSTS_PFO | FSTS_PPF);
    m.unit.write32(VTD_REG.FSTS, FSTS_PFO);
    expect(fsts(m.unit) & (FSTS_PFO | FSTS_PPF)).toBe(FSTS_PPF);
    // While PFO was set nothing else was recorded.
    expect(m.unit.faults.recorded).toBe(n);
  });

  it("IQE in FSTS is write-1-to-clear", () => {
    const m = legacy();
    (m.qi as QiSubmitter).putRaw([0xf, 0, 0, 0]); // type 15: invalid
    (m.qi as QiSubmitter).commit();
    expect(fsts(m.unit) & FSTS_IQE).toBe(FSTS_IQE);
    m.unit.write32(VTD_REG.FSTS, 0);
    expect(fsts(m.unit) & FSTS_IQE).toBe(FSTS_IQE);
    // Software repairs the slot (as qi_check_fault does) before clearing IQE.
    m.mem.write64((m.qi as QiSubmitter).base, 5, 0);
    m.unit.write32(VTD_REG.FSTS, FSTS_IQE);
    expect(fsts(m.unit) & FSTS_IQE).toBe(0);
  });

  it("FPD suppresses the qualified faults of a context but not the unqualified ones", () => {
    const m = legacy();
    m.b.setContext(m.rta, SID, { SLPTPTR: m.root, AW: 2, DID, FPD: 1 });
    expect(xlate(m.unit, SID, 0x7000_0000)).toMatchObject({
      status: XLATE_FAULT,
      code: VTD_FR.NO_READ,
    });
    // Context entry invalid (TT=3) is qualified too.
    m.b.setContext(m.rta, SID + 1, { SLPTPTR: m.root, AW: 2, DID, FPD: 1, TT: 3 });
    expect(xlate(m.unit, SID + 1, IOVA).code).toBe(VTD_FR.CONTEXT_INVALID);
    expect(fsts(m.unit) & FSTS_PPF).toBe(0);
    expect(m.unit.stats.faultsSuppressed).toBe(2);
    // Reserved bits in the context entry are not qualified: recorded despite FPD.
    m.b.setContext(m.rta, SID + 2, { SLPTPTR: m.root, AW: 2, DID, FPD: 1 });
    m.mem.write32(
      m.b.legacyContextAddr(m.rta, SID + 2),
      m.mem.read32(m.b.legacyContextAddr(m.rta, SID + 2)) | 0x10,
    );
    expect(xlate(m.unit, SID + 2, IOVA).code).toBe(VTD_FR.CONTEXT_ENTRY_RESERVED);
    expect(readFrcd(m.unit, 0)).toMatchObject({ F: 1, FR: VTD_FR.CONTEXT_ENTRY_RESERVED });
  });

  it("FPD in a PASID entry suppresses its qualified faults", () => {
    const m = vtdTestMachine();
    const dir = m.b.setSmContext(m.rta, SID, {});
    const fl = m.b.frame();
    m.b.setPasidEntry(dir, 3, { PGTT: PGTT_FL, DID, FLPTR: fl, FPD: 1 });
    expect(xlate(m.unit, SID, 0x5000, { pasid: 3 }).code).toBe(VTD_FR.SM_FS_ENTRY_NOT_PRESENT);
    expect(fsts(m.unit) & FSTS_PPF).toBe(0);
    m.b.setPasidEntry(dir, 4, { PGTT: PGTT_FL, DID, FLPTR: fl });
    xlate(m.unit, SID, 0x5000, { pasid: 4 });
    expect(readFrcd(m.unit, 0)).toMatchObject({ F: 1, PV: 4 });
  });

  it("FPD in a non-present PASID entry suppresses the not-present fault (FPD is read whatever P is)", () => {
    // What Linux leaves behind an exiting process's SVA PASID: P clear, FPD set.
    const m = vtdTestMachine();
    const dir = m.b.setSmContext(m.rta, SID, { DTE: 1 });
    m.b.setPasidEntry(dir, 5, { P: 0, FPD: 1 });
    expect(xlate(m.unit, SID, 0x5000, { pasid: 5 })).toMatchObject({
      status: XLATE_FAULT,
      code: VTD_FR.SM_PASID_ENTRY_NOT_PRESENT,
    });
    expect(xlate(m.unit, SID, 0x5000, { pasid: 5, at: AT_TRANSLATION_REQUEST }).status).toBe(
      XLATE_FAULT,
    );
    expect(fsts(m.unit) & FSTS_PPF).toBe(0);
    expect(m.unit.stats.faultsSuppressed).toBe(2);
    // Without FPD the same entry's fault is recorded.
    m.b.setPasidEntry(dir, 6, { P: 0 });
    xlate(m.unit, SID, 0x5000, { pasid: 6 });
    expect(readFrcd(m.unit, 0)).toMatchObject({
      F: 1,
      PV: 6,
      FR: VTD_FR.SM_PASID_ENTRY_NOT_PRESENT,
    });
  });

  it("disabling translation restarts the fault recording index at 0", () => {
    const m = legacy();
    xlate(m.unit, SID, 0x7000_0000);
    xlate(m.unit, SID, 0x7000_1000);
    expect(m.unit.faults.nextIndex).toBe(2);
    m.unit.write32(VTD_REG.GCMD, GCMD_QIE);
    expect(m.unit.faults.nextIndex).toBe(0);
  });
});

describe("fault record fields", () => {
  it("FI keeps the address below MGAW (FRCD_REG.FI: bits 63:MGAW reserved zero)", () => {
    const m = vtdTestMachine({ caps: { mgaw: 48, sagaw: 0b00100, firstStage5Level: false } });
    const dir = m.b.setSmContext(m.rta, SID, {});
    m.b.setPasidEntry(dir, 5, { PGTT: PGTT_FL, DID, FLPTR: m.b.frame() });
    // Non-canonical for 4 levels: bits 63:47 are not copies of bit 47.
    const r = xlate(m.unit, SID, 0x0012_3456_7000_0000n, { pasid: 5 });
    expect(r.code).toBe(VTD_FR.SM_FS_NON_CANONICAL);
    expect(readFrcd(m.unit, 0).FI).toBe(0x3456_7000_0000);
  });

  it("AT is recorded only by units with ECAP.DT (FRCD_REG.AT: RsvdZ without device-TLBs)", () => {
    for (const deviceTlb of [true, false]) {
      const m = legacy({ caps: { deviceTlb, prs: false } });
      expect(xlate(m.unit, SID, IOVA, { at: AT_TRANSLATED }).code).toBe(VTD_FR.CONTEXT_TT_BLOCKED);
      expect(readFrcd(m.unit, 0)).toMatchObject({
        FR: VTD_FR.CONTEXT_TT_BLOCKED,
        AT: deviceTlb ? AT_TRANSLATED : 0,
      });
    }
  });
});

describe("descriptorObserver", () => {
  it("sees each descriptor the queue carried out, after it took effect, and not the refused one", () => {
    const m = vtdTestMachine();
    const seen: number[][] = [];
    m.unit.descriptorObserver = (w, wide) => {
      expect(wide).toBe(true);
      seen.push([w[0] as number, w[1] as number]);
    };
    const qi = m.qi as QiSubmitter;
    expect(qi.submit([[2, { G: 2, DID: 7 }]])).toBe(true);
    // Type 2 then the wait the submitter appends.
    expect(seen.map((w) => (w[0] as number) & 0xf)).toEqual([2, 5]);
    expect(((seen[0] as number[])[0] as number) >>> 16).toBe(7);
    // A reserved type is refused (IQE) and not reported.
    qi.putRaw([0xe, 0, 0, 0]);
    qi.commit();
    expect(m.unit.queueStopped).toBe(true);
    expect(seen).toHaveLength(2);
  });
});

describe("translation requests and first-stage Dirty flags", () => {
  /** A scalable-mode unit with PASID 3 of SID first-stage at a table mapping 0x1000 writable. */
  function fs(caps: Partial<VtdCapabilities> = {}) {
    const m = vtdTestMachine({ caps });
    const dir = m.b.setSmContext(m.rta, SID, { DTE: 1, PASIDE: 1 });
    const root = m.b.frame();
    m.b.setPasidEntry(dir, 3, { PGTT: PGTT_FL, DID, FLPTR: root });
    const leaf = m.b.fsMap(root, 4, 0x1000, PA);
    return { ...m, leaf };
  }
  const treq = { pasid: 3, at: AT_TRANSLATION_REQUEST };

  it("without ECAP.NWFS a translation request may write: it sets D in a writable leaf and grants W", () => {
    const m = fs();
    const r = xlate(m.unit, SID, 0x1000, treq);
    expect(r.status).toBe(XLATE_OK);
    expect(r.perm & DMA_WRITE).not.toBe(0);
    expect(m.b.read(FS_PTE, m.leaf)).toMatchObject({ A: 1, D: 1 });
  });

  it("with ECAP.NWFS a read-only request leaves D clear and gets no W over the clean leaf", () => {
    const m = fs({ nwfs: true });
    const r = xlate(m.unit, SID, 0x1000, treq);
    expect(r.status).toBe(XLATE_OK);
    expect(r.perm & DMA_WRITE).toBe(0);
    expect(m.b.read(FS_PTE, m.leaf)).toMatchObject({ A: 1, D: 0 });
    // The IOTLB entry that read cached cannot answer a request that needs W: the walk sets D.
    const w = xlate(m.unit, SID, 0x1000, { ...treq, write: true });
    expect(w.perm & DMA_WRITE).not.toBe(0);
    expect(m.b.read(FS_PTE, m.leaf).D).toBe(1);
    // Once D is set, a read-only request is granted W too.
    expect(xlate(m.unit, SID, 0x1000, treq).perm & DMA_WRITE).not.toBe(0);
  });

  it("a read-only leaf gets no D and no W from a translation request that may write", () => {
    const ro = vtdTestMachine();
    const dir = ro.b.setSmContext(ro.rta, SID, { DTE: 1 });
    const root = ro.b.frame();
    ro.b.setPasidEntry(dir, 3, { PGTT: PGTT_FL, DID, FLPTR: root });
    const leaf = ro.b.fsMap(root, 4, 0x1000, PA, 1, { P: 1, US: 1 });
    const r = xlate(ro.unit, SID, 0x1000, treq);
    expect(r.status).toBe(XLATE_OK);
    expect(r.perm & DMA_WRITE).toBe(0);
    expect(ro.b.read(FS_PTE, leaf)).toMatchObject({ A: 1, D: 0 });
  });
});
