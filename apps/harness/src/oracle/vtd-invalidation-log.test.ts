// The VT-d invalidation log: which executed descriptor covers which stale cache entry, and which
// one was aimed at it with one wrong field.

import { VtdQi } from "@iommu-sim/intel-vtd/driver";
import {
  CC_G_DEVICE,
  CC_G_DOMAIN,
  GCMD_QIE,
  GCMD_SRTP,
  IOTLB_G_DOMAIN,
  IOTLB_G_PAGE,
  PC_G_DOMAIN,
  PC_G_PASID,
  RTADDR_TTM_SCALABLE,
  VTD_REG,
} from "@iommu-sim/intel-vtd/format";
import { type VtdCapabilities, VtdUnit } from "@iommu-sim/intel-vtd/hw";
import { Device } from "@iommu-sim/iommu-core";
import { FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import type { StaleEntry } from "./violation.js";
import { VtdInvalidationLog } from "./vtd-invalidation-log.js";

function setup(caps: Partial<VtdCapabilities> = {}) {
  const mem = new PhysMemory();
  const frames = new FrameAllocator(mem, { basePa: 0x100_0000, size: 0x100_0000 });
  const unit = new VtdUnit({ mem, name: "dmar0", caps });
  const qi = VtdQi.alloc(mem, unit, frames, true) as VtdQi;
  unit.write32(VTD_REG.GCMD, GCMD_QIE);
  // Devices that answer ATS invalidations, so a device-TLB descriptor does not time out.
  for (const rid of [0x10, 0x18, 0x20, 0x28])
    unit.connect(new Device({ name: `d${rid.toString(16)}`, rid, ats: true, pasidBits: 8 }));
  let t = 0;
  const log = new VtdInvalidationLog([unit], () => t);
  return { unit, qi, log, tick: () => t++ };
}

const hex = (n: number) => `0x${n.toString(16)}`;

const iotlb = (did: number, pasid: number | null, iova: number, kind: string): StaleEntry => ({
  cache: "iotlb",
  where: "dmar0",
  fields: { DID: did, PASID: pasid, iova: hex(iova), size: 4096, kind },
});

const pc = (did: number, pasid: number): StaleEntry => ({
  cache: "pasid-cache",
  where: "dmar0",
  fields: { DID: did, PASID: pasid },
});

const cc = (did: number): StaleEntry => ({
  cache: "context-cache",
  where: "dmar0",
  fields: { DID: did },
});

const atc = (pasid: number | null, iova: number): StaleEntry => ({
  cache: "device-tlb",
  where: "acc0",
  fields: { pasid, iova: hex(iova), size: 4096 },
});

/** A paging-structure entry of `level` on the path to `iova`, as vtd-diagnose reports it. */
function psc(
  did: number,
  pasid: number | null,
  level: number,
  iova: number,
  kind: string,
): StaleEntry {
  const reach = 4096 * 512 ** (level - 1);
  return {
    cache: "paging-structure-cache",
    where: "dmar0",
    fields: {
      DID: did,
      PASID: pasid,
      level,
      table: "0x5000",
      iova: hex(iova - (iova % reach)),
      size: reach,
      kind,
    },
  };
}

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
    expect(log.coveringSince(mark, "dmar0", 0x20, pc(4, 9))).not.toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x20, pc(4, 8))).toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x18, cc(0))).not.toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x19, cc(0))).toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x20, atc(9, 0x7000))).not.toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x20, atc(9, 0x8000))).toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x20, atc(8, 0x7000))).toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x21, atc(9, 0x7000))).toBeNull();
    // No mark: nothing is searched.
    expect(log.coveringSince(-1, "dmar0", 0x20, pc(4, 9))).toBeNull();
  });
});

describe("VtdInvalidationLog: scopes beyond the IOTLB", () => {
  it("paging-structure entries: IH = 1 keeps them, IH = 0 and PASID-selective type 6 take first-stage ones, type 2 second-stage ones", () => {
    const { qi, log } = setup();
    const fs = psc(5, 3, 2, 0x200000, "first-stage");
    const ss = psc(7, null, 2, 0x200000, "second-stage");
    let mark = log.mark();
    qi.addPiotlb(5, 3, 0x201000, 1, true);
    qi.addIotlb(IOTLB_G_PAGE, 7, 0x201000, 0, true);
    qi.submit();
    expect(log.coveringSince(mark, "dmar0", 0x10, fs)).toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x10, ss)).toBeNull();
    qi.addPiotlb(5, 3, 0x3ff000, 1, false);
    qi.addIotlb(IOTLB_G_PAGE, 7, 0x3ff000, 0, false);
    qi.submit();
    expect(log.coveringSince(mark, "dmar0", 0x10, fs)?.fields).toMatchObject({ DID: 5, PASID: 3 });
    expect(log.coveringSince(mark, "dmar0", 0x10, ss)?.fields).toMatchObject({ DID: 7, G: "page" });
    // A page outside the entry's 2 MiB reach leaves it.
    mark = log.mark();
    qi.addPiotlb(5, 3, 0x400000, 1, false);
    qi.addIotlb(IOTLB_G_PAGE, 7, 0x400000, 0, false);
    qi.submit();
    expect(log.coveringSince(mark, "dmar0", 0x10, fs)).toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x10, ss)).toBeNull();
    // PASID-selective type 6: first-stage paging-structure entries go, second-stage ones stay.
    mark = log.mark();
    qi.addPiotlb(5, 3, 0, -1, false);
    qi.addPiotlb(7, 3, 0, -1, false);
    qi.submit();
    expect(log.coveringSince(mark, "dmar0", 0x10, fs)?.fields).toEqual({
      G: "pasid",
      DID: 5,
      PASID: 3,
    });
    expect(log.coveringSince(mark, "dmar0", 0x10, ss)).toBeNull();
  });

  it("type 6 PASID-selective takes second-stage IOTLB entries of its PASID (table 21); page-selective does not", () => {
    const { qi, log } = setup();
    const ss = iotlb(3, 3, 0x439000, "second-stage");
    const mark = log.mark();
    qi.addPiotlb(3, 3, 0x439000, 1, false);
    qi.submit();
    expect(log.coveringSince(mark, "dmar0", 0x10, ss)).toBeNull();
    qi.addPiotlb(3, 3, 0, -1, false);
    qi.submit();
    expect(log.coveringSince(mark, "dmar0", 0x10, ss)).not.toBeNull();
  });

  it("without CAP.PSI a page-selective type 2 is carried out domain-selective", () => {
    const { qi, log } = setup({ psi: false, mamv: 0 });
    const mark = log.mark();
    qi.addIotlb(IOTLB_G_PAGE, 7, 0x200000, 0, false);
    qi.submit();
    expect(
      log.coveringSince(mark, "dmar0", 0, iotlb(7, null, 0x900000, "second-stage")),
    ).not.toBeNull();
  });

  it("a domain-selective context-cache invalidation takes every entry in scalable mode, the DID's in legacy mode", () => {
    const { unit, qi, log } = setup();
    const mark = log.mark();
    qi.addContext(CC_G_DOMAIN, 3, 0, 0);
    qi.submit();
    expect(log.coveringSince(mark, "dmar0", 0x18, cc(3))).not.toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x18, cc(4))).toBeNull();
    unit.write32(VTD_REG.RTADDR, 0x20_0000 | (RTADDR_TTM_SCALABLE << 10));
    unit.write32(VTD_REG.GCMD, GCMD_QIE | GCMD_SRTP);
    expect(unit.scalableMode).toBe(true);
    expect(log.coveringSince(mark, "dmar0", 0x18, cc(4))).not.toBeNull();
  });

  it("a PASID-selective PASID-cache invalidation also takes the PASID's cached invalid entry (DID 0)", () => {
    const { qi, log } = setup();
    const mark = log.mark();
    qi.addPasidCache(PC_G_PASID, 4, 9);
    qi.submit();
    expect(log.coveringSince(mark, "dmar0", 0x20, pc(0, 9))).not.toBeNull();
    expect(log.coveringSince(mark, "dmar0", 0x20, pc(0, 8))).toBeNull();
  });
});

describe("VtdInvalidationLog.missedSince: a descriptor aimed at the entry with one wrong field", () => {
  const missed = (log: VtdInvalidationLog, mark: number, e: StaleEntry, sid = 0x20) =>
    log.missedSince(mark, -1, "dmar0", sid, e)?.reason ?? null;

  it("names a wrong DID of type 2 (page and domain), type 6, type 7 (PASID and domain) and a legacy domain-selective type 1", () => {
    const { qi, log } = setup();
    const cases: [() => void, StaleEntry, string][] = [
      [
        () => qi.addIotlb(IOTLB_G_PAGE, 7, 0x200000, 0, false),
        iotlb(8, null, 0x200000, "second-stage"),
        "its DID 7 is not the entry's 8",
      ],
      [
        () => qi.addIotlb(IOTLB_G_DOMAIN, 7, 0, 0, false),
        iotlb(8, null, 0x200000, "second-stage"),
        "its DID 7 is not the entry's 8",
      ],
      [
        () => qi.addPiotlb(6, 3, 0x40000, 1, false),
        iotlb(5, 3, 0x40000, "first-stage"),
        "its DID 6 is not the entry's 5",
      ],
      [() => qi.addPasidCache(PC_G_PASID, 4, 9), pc(5, 9), "its DID 4 is not the entry's 5"],
      [() => qi.addPasidCache(PC_G_DOMAIN, 4, 0), pc(5, 9), "its DID 4 is not the entry's 5"],
      [() => qi.addContext(CC_G_DOMAIN, 3, 0, 0), cc(4), "its DID 3 is not the entry's 4"],
    ];
    for (const [add, entry, reason] of cases) {
      const mark = log.mark();
      add();
      qi.submit();
      expect(missed(log, mark, entry)).toBe(reason);
    }
  });

  it("names a wrong PASID of type 6, 7 and 8, with the descriptor's fields (the blamed one even when 0)", () => {
    const { qi, log, tick } = setup();
    let mark = log.mark();
    tick();
    qi.addPiotlb(1, 0, 0x10005000, 1, false);
    qi.submit();
    expect(
      log.missedSince(mark, -1, "dmar0", 0x20, iotlb(1, 2, 0x10005000, "first-stage")),
    ).toEqual({
      descriptor: "PASID-based IOTLB invalidation (type 6)",
      time: 1,
      fields: { G: "page", DID: 1, PASID: 0, ADDR: "0x10005000" },
      reason: "its PASID 0 is not the entry's 2",
    });
    mark = log.mark();
    qi.addPasidCache(PC_G_PASID, 4, 8);
    qi.submit();
    expect(missed(log, mark, pc(4, 9))).toBe("its PASID 8 is not the entry's 9");
    mark = log.mark();
    qi.addPasidDevtlb(0x20, 0, 3, 0, 0x7000, 0);
    qi.submit();
    expect(log.missedSince(mark, -1, "dmar0", 0x20, atc(9, 0x7000))).toMatchObject({
      descriptor: "PASID-based device-TLB invalidation (type 8)",
      fields: { SID: "0x20", PASID: 3, G: "pasid", ADDR: "0x7000" },
      reason: "its PASID 3 is not the entry's 9",
    });
  });

  it("names a wrong SID of a device-selective type 1 (FM taken into account), type 3 and type 8", () => {
    const { qi, log } = setup();
    let mark = log.mark();
    qi.addContext(CC_G_DEVICE, 0, 0x19, 0);
    qi.submit();
    expect(missed(log, mark, cc(0), 0x18)).toBe("its SID 0x19 is not the entry's 0x18");
    mark = log.mark();
    // FM = 1 ignores function bit 2: 0x1c covers 0x18.
    qi.addContext(CC_G_DEVICE, 0, 0x1c, 1);
    qi.submit();
    expect(log.coveringSince(mark, "dmar0", 0x18, cc(0))).not.toBeNull();
    expect(missed(log, mark, cc(0), 0x18)).toBeNull();
    mark = log.mark();
    qi.addDevtlb(0x28, 0, 0, 0x7000, 0);
    qi.submit();
    expect(log.missedSince(mark, -1, "dmar0", 0x20, atc(null, 0x7000))).toMatchObject({
      descriptor: "device-TLB invalidation (type 3)",
      fields: { SID: "0x28", ADDR: "0x7000" },
      reason: "its SID 0x28 is not the device's 0x20",
    });
    mark = log.mark();
    qi.addPasidDevtlb(0x28, 0, 9, 0, 0x7000, 0);
    qi.submit();
    expect(missed(log, mark, atc(9, 0x7000))).toBe("its SID 0x28 is not the device's 0x20");
  });

  it("names a range that stops short: an AM too small, a block just before or past the entry, a device-TLB span", () => {
    const { qi, log } = setup();
    let mark = log.mark();
    qi.addPiotlb(5, 3, 0x40000, 2, false);
    qi.submit();
    const fs = (iova: number) => iotlb(5, 3, iova, "first-stage");
    expect(missed(log, mark, fs(0x42000))).toBe(
      "its range [0x40000, 0x42000) (AM 1, 2 pages) ends before the entry at 0x42000",
    );
    expect(missed(log, mark, fs(0x3f000))).toBe(
      "its range [0x40000, 0x42000) (AM 1, 2 pages) starts after the entry at 0x3f000",
    );
    // Within the aligned block of four times the range (AM two larger), still close.
    expect(missed(log, mark, fs(0x45000))).toBe(
      "its range [0x40000, 0x42000) (AM 1, 2 pages) ends before the entry at 0x45000",
    );
    // Beyond it, not: another page altogether.
    expect(missed(log, mark, fs(0x48000))).toBeNull();
    mark = log.mark();
    qi.addIotlb(IOTLB_G_PAGE, 7, 0x200000, 0, false);
    qi.submit();
    expect(missed(log, mark, iotlb(7, null, 0x201000, "second-stage"))).toBe(
      "its range [0x200000, 0x201000) (AM 0, 1 page) ends before the entry at 0x201000",
    );
    mark = log.mark();
    qi.addPasidDevtlb(0x20, 0, 9, 0, 0x8000, 1);
    qi.submit();
    expect(missed(log, mark, atc(9, 0xa000))).toBe(
      "its range [0x8000, 0xa000) (2 pages) ends before the entry at 0xa000",
    );
  });

  it("names IH = 1 on a page-selective type 6 or type 2 that reaches a paging-structure entry", () => {
    const { qi, log } = setup();
    let mark = log.mark();
    qi.addPiotlb(5, 3, 0x201000, 1, true);
    qi.submit();
    expect(
      log.missedSince(mark, -1, "dmar0", 0x10, psc(5, 3, 2, 0x200000, "first-stage")),
    ).toMatchObject({
      fields: { G: "page", DID: 5, PASID: 3, IH: 1, ADDR: "0x201000" },
      reason:
        "IH = 1 says only leaf entries changed, so the paging-structure caches keep the level 2 entry, which points at a table that is gone (a freed page table needs IH = 0)",
    });
    mark = log.mark();
    qi.addIotlb(IOTLB_G_PAGE, 7, 0x201000, 0, true);
    qi.submit();
    expect(missed(log, mark, psc(7, null, 2, 0x200000, "second-stage"))).toMatch(/^IH = 1 says/);
    // The IOTLB takes its leaf entries whatever IH says: nothing to blame there.
    expect(
      log.coveringSince(mark, "dmar0", 0x20, iotlb(7, null, 0x201000, "second-stage")),
    ).not.toBeNull();
  });

  it("names the descriptor type: type 6 for second-stage entries, type 8 for entries cached without a PASID", () => {
    const { qi, log } = setup();
    let mark = log.mark();
    qi.addPiotlb(3, 3, 0x438000, 8, false);
    qi.submit();
    expect(missed(log, mark, iotlb(3, 3, 0x439000, "second-stage"))).toBe(
      "a page-selective PASID-based IOTLB invalidation never removes second-stage IOTLB entries: they need an IOTLB invalidation (type 2)",
    );
    mark = log.mark();
    qi.addPiotlb(7, 1, 0, -1, false);
    qi.submit();
    expect(missed(log, mark, psc(7, null, 3, 0x4000_0000, "second-stage"))).toBe(
      "a PASID-based IOTLB invalidation never removes second-stage paging-structure-cache entries: they need an IOTLB invalidation (type 2)",
    );
    mark = log.mark();
    qi.addPasidDevtlb(0x20, 0, 9, 0, 0x7000, 0);
    qi.submit();
    expect(missed(log, mark, atc(null, 0x7000))).toBe(
      "a PASID-based device-TLB invalidation leaves the entries the device cached without a PASID: they need a device-TLB invalidation (type 3)",
    );
  });

  it("looks only at the removing operation's descriptors, on its unit, when its end is known", () => {
    const { qi, log } = setup();
    const entry = iotlb(5, 3, 0x40000, "first-stage");
    const mark = log.mark();
    qi.addPiotlb(5, 3, 0x80000, 1, false);
    qi.submit();
    const end = log.mark();
    // A later operation's descriptor for the same page of another DID is not blamed.
    qi.addPiotlb(6, 3, 0x40000, 1, false);
    qi.submit();
    expect(log.missedSince(mark, end, "dmar0", 0x10, entry)).toBeNull();
    expect(log.missedSince(mark, -1, "dmar0", 0x10, entry)?.reason).toBe(
      "its DID 6 is not the entry's 5",
    );
    expect(log.missedSince(mark, -1, "dmar1", 0x10, entry)).toBeNull();
  });

  it("is null when nothing was close: no descriptor, two wrong fields, a covering one, no mark, a malformed entry", () => {
    const { qi, log } = setup();
    const entry = iotlb(5, 3, 0x40000, "first-stage");
    const mark = log.mark();
    expect(log.missedSince(mark, -1, "dmar0", 0x10, entry)).toBeNull();
    qi.addPiotlb(6, 4, 0x40000, 1, false);
    qi.submit();
    expect(log.missedSince(mark, -1, "dmar0", 0x10, entry)).toBeNull();
    qi.addPiotlb(5, 3, 0, -1, false);
    qi.submit();
    expect(
      log.missedSince(mark, -1, "dmar0", 0x10, iotlb(5, 3, 0x80000, "first-stage")),
    ).toBeNull();
    expect(log.missedSince(-1, -1, "dmar0", 0x10, iotlb(6, 3, 0x40000, "first-stage"))).toBeNull();
    const bad: StaleEntry = { cache: "iotlb", where: "dmar0", fields: { DID: 5, iova: "x" } };
    expect(log.missedSince(mark, -1, "dmar0", 0x10, bad)).toBeNull();
    const other: StaleEntry = { cache: "tlb", where: "dmar0", fields: {} };
    expect(log.missedSince(mark, -1, "dmar0", 0x10, other)).toBeNull();
  });
});

describe("VtdInvalidationLog.leafOnlySince: the leaf-only flush a paging-structure entry outlived", () => {
  it("names the newest IH = 1 flush of the entry's reach, none older than a flush that removed it, and only for IH", () => {
    const { qi, log, tick } = setup();
    const entry = psc(5, 3, 2, 0x200000, "first-stage");
    qi.addPiotlb(5, 3, 0x201000, 1, true);
    qi.submit();
    tick();
    const second = log.mark();
    qi.addPiotlb(5, 3, 0x202000, 1, true);
    qi.submit();
    tick();
    const third = log.mark();
    // Another DID with IH = 1: two fields wrong, not named.
    qi.addPiotlb(6, 3, 0x203000, 1, true);
    qi.submit();
    expect(log.leafOnlySince(0, "dmar0", entry)).toMatchObject({
      time: 1,
      fields: { ADDR: "0x202000", IH: 1 },
    });
    expect(log.leafOnlySince(second, "dmar0", entry)?.time).toBe(1);
    expect(log.leafOnlySince(third, "dmar0", entry)).toBeNull();
    tick();
    qi.addPiotlb(5, 3, 0x200000, 1, false);
    qi.submit();
    expect(log.leafOnlySince(0, "dmar0", entry)).toBeNull();
    tick();
    qi.addPiotlb(5, 3, 0x3ff000, 1, true);
    qi.submit();
    expect(log.leafOnlySince(0, "dmar0", entry)?.time).toBe(4);
    // Only paging-structure entries outlive a leaf-only flush.
    expect(log.leafOnlySince(0, "dmar0", iotlb(5, 3, 0x3ff000, "first-stage"))).toBeNull();
    expect(log.leafOnlySince(-1, "dmar0", entry)).toBeNull();
  });
});
