// Queued invalidation on the VT-d unit: for every descriptor type, a cached translation survives an
// invalidation that does not cover it and is gone after one that does; device-TLB and page group
// response delivery; invalidation wait; queue errors; stepping the queue; cache policies.

import { NO_PASID, XLATE_FAULT, XLATE_OK } from "@iommu-sim/iommu-core";
import type { FieldValues } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { VTD_FR } from "../src/format/fault-record.js";
import { FS_PTE } from "../src/format/first-stage-pte.js";
import { encodeDevTlbRange, INV_DESC_TYPE } from "../src/format/inv-desc.js";
import { PGTT_FL, PGTT_NESTED, PGTT_SL } from "../src/format/pasid-entry.js";
import {
  ECTL_IM,
  ECTL_IP,
  FSTS_IQE,
  FSTS_ITE,
  GCMD_QIE,
  GCMD_TE,
  VTD_REG,
} from "../src/format/registers.js";
import { LEGACY_VTD_CAPS, type VtdCapabilities } from "../src/hw/vtd-caps.js";
import type { VtdInterruptSource } from "../src/hw/vtd-unit.js";
import {
  QiSubmitter,
  RecordingPort,
  type VtdTestMachine,
  type VtdTestMachineOptions,
  vtdTestMachine,
  xlate,
  xlateFresh,
} from "./table-builder.js";

const T = INV_DESC_TYPE;
const SID = 0x10;
const PA = 0x8_0000_0000;
const PA2 = 0x9_0000_0000;
const IOVA = 0x4000_0000;

type XlateOpts = Parameters<typeof xlate>[3];
/** What a request gets: the fields a stale answer would differ in. */
const outcome = (r: ReturnType<typeof xlate>) => ({ status: r.status, pa: r.pa, code: r.code });

/** A translation the unit has cached, whose tables were then changed behind its back. */
interface Stale {
  m: VtdTestMachine & { qi: QiSubmitter };
  cached(): ReturnType<typeof outcome>;
  fresh(): ReturnType<typeof outcome>;
  /** What the cached answer was before the change. */
  old: ReturnType<typeof outcome>;
}

function probe(m: VtdTestMachine, rid: number, iova: number, opts: XlateOpts = {}) {
  return {
    cached: () => outcome(xlate(m.unit, rid, iova, opts)),
    fresh: () => outcome(xlateFresh(m.unit, rid, iova, opts)),
  };
}

/** Prime the cache, run `change`, and check that the unit now answers stale. */
function makeStale(
  m: VtdTestMachine,
  rid: number,
  iova: number,
  opts: XlateOpts,
  change: () => void,
): Stale {
  const p = probe(m, rid, iova, opts);
  const old = p.cached();
  expect(old.status).toBe(XLATE_OK);
  change();
  expect(p.cached()).toEqual(old);
  expect(p.fresh()).not.toEqual(old);
  if (m.qi === null) throw new Error("machine without QI");
  return { m: m as Stale["m"], ...p, old };
}

function survives(s: Stale, descs: [number, FieldValues][]): void {
  for (const d of descs) {
    expect(s.m.qi.submit([d]), `descriptor ${JSON.stringify(d)} completes`).toBe(true);
    expect(s.cached(), `survives ${JSON.stringify(d)}`).toEqual(s.old);
  }
}

function gone(s: Stale, desc: [number, FieldValues]): void {
  expect(s.m.qi.submit([desc])).toBe(true);
  expect(s.cached()).toEqual(s.fresh());
  expect(s.cached()).not.toEqual(s.old);
}

// ----- Scenarios ------------------------------------------------------------------------------

/** Legacy: SID -> DID 5, IOVA -> PA; the leaf then points at PA2. */
function legacyLeaf(opts: VtdTestMachineOptions = {}): Stale {
  const m = vtdTestMachine({ ...opts, caps: { ...LEGACY_VTD_CAPS, ...opts.caps } });
  const root = m.b.frame();
  m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID: 5 });
  m.b.ssMap(root, 4, IOVA, PA);
  return makeStale(m, SID, IOVA, {}, () => m.b.ssMap(root, 4, IOVA, PA2));
}

/** Legacy: the context entry of `sid` (DID 5) moves to DID 9 and a table mapping IOVA -> PA2. */
function legacyContext(sid = SID): Stale {
  const m = vtdTestMachine({ caps: LEGACY_VTD_CAPS });
  const root = m.b.frame();
  m.b.setContext(m.rta, sid, { SLPTPTR: root, AW: 2, DID: 5 });
  m.b.ssMap(root, 4, IOVA, PA);
  return makeStale(m, sid, IOVA, {}, () => {
    const root2 = m.b.frame();
    m.b.ssMap(root2, 4, IOVA, PA2);
    m.b.setContext(m.rta, sid, { SLPTPTR: root2, AW: 2, DID: 9 });
  });
}

/** Scalable: PASID `pasid` of SID with PGTT `pgtt`, DID `did`; the leaf then points at PA2. */
function smLeaf(pgtt: number, did = 6, pasid = 3, caps: Partial<VtdCapabilities> = {}): Stale {
  const m = vtdTestMachine({ caps });
  const dir = m.b.setSmContext(m.rta, SID, {});
  const root = m.b.frame();
  let remap: () => void;
  if (pgtt === PGTT_FL) {
    m.b.fsMap(root, 4, IOVA, PA);
    m.b.setPasidEntry(dir, pasid, { PGTT: PGTT_FL, DID: did, FLPTR: root });
    remap = () => m.b.fsMap(root, 4, IOVA, PA2);
  } else if (pgtt === PGTT_SL) {
    m.b.ssMap(root, 4, IOVA, PA);
    m.b.setPasidEntry(dir, pasid, { PGTT: PGTT_SL, DID: did, SLPTPTR: root, AW: 2 });
    remap = () => m.b.ssMap(root, 4, IOVA, PA2);
  } else {
    // Nested: the first stage maps IOVA -> GPA; the second stage GPA -> PA and every FL table 1:1.
    const s2 = m.b.frame();
    for (let gpa = 0x100_0000; gpa < 0x500_0000; gpa += 0x20_0000) m.b.ssMap(s2, 4, gpa, gpa, 2);
    const gpa = 0x7000_0000;
    m.b.fsMap(root, 4, IOVA, gpa);
    m.b.ssMap(s2, 4, gpa, PA);
    m.b.setPasidEntry(dir, pasid, { PGTT: PGTT_NESTED, DID: did, FLPTR: root, SLPTPTR: s2, AW: 2 });
    remap = () => m.b.ssMap(s2, 4, gpa, PA2);
  }
  const opts = pasid === 0 ? {} : { pasid };
  return makeStale(m, SID, IOVA, opts, remap);
}

/** Scalable: PASID 3's entry moves from DID 6 to DID 7 with a table mapping IOVA -> PA2. */
function smPasidEntry(): Stale {
  const m = vtdTestMachine();
  const dir = m.b.setSmContext(m.rta, SID, {});
  const root = m.b.frame();
  m.b.fsMap(root, 4, IOVA, PA);
  m.b.setPasidEntry(dir, 3, { PGTT: PGTT_FL, DID: 6, FLPTR: root });
  return makeStale(m, SID, IOVA, { pasid: 3 }, () => {
    const root2 = m.b.frame();
    m.b.fsMap(root2, 4, IOVA, PA2);
    m.b.setPasidEntry(dir, 3, { PGTT: PGTT_FL, DID: 7, FLPTR: root2 });
  });
}

/** Scalable: the context entry of `sid` loses PASIDE, so requests with PASID would fault 0x45. */
function smContext(sid = SID): Stale {
  const m = vtdTestMachine();
  const dir = m.b.setSmContext(m.rta, sid, {});
  const root = m.b.frame();
  m.b.fsMap(root, 4, IOVA, PA);
  m.b.setPasidEntry(dir, 3, { PGTT: PGTT_FL, DID: 6, FLPTR: root });
  return makeStale(m, sid, IOVA, { pasid: 3 }, () => {
    m.b.setSmContext(m.rta, sid, { PASIDDIRPTR: dir, PASIDE: 0 });
  });
}

// ----- Context-cache invalidation (type 1) ----------------------------------------------------

describe("context-cache invalidation (type 1)", () => {
  it("global covers every entry", () => {
    gone(legacyContext(), [T.CC, { G: 1 }]);
  });

  it("domain-selective (legacy): another DID does not cover the entry, its DID does", () => {
    const s = legacyContext();
    survives(s, [
      [T.CC, { G: 2, DID: 9 }], // the entry's new DID in memory is not the cached one
      [T.CC, { G: 2, DID: 4 }],
    ]);
    gone(s, [T.CC, { G: 2, DID: 5 }]);
  });

  // FM n masks the top n bits of the function number (FM=1: bit 2, 2: bits 2:1, 3: bits 2:0).
  for (const [fm, covering, others] of [
    [0, SID, [SID ^ 1, SID ^ 4, SID + 8]],
    [1, SID | 4, [SID ^ 1, SID ^ 2, SID + 8]],
    [2, SID | 6, [SID ^ 1, SID + 8]],
    [3, SID | 7, [SID + 8, SID ^ 0x100]],
  ] as const) {
    it(`device-selective with FM=${fm}: covers SID 0x${covering.toString(16)}, not ${others.map((o) => `0x${o.toString(16)}`).join(", ")}`, () => {
      const s = legacyContext();
      survives(
        s,
        others.map((sid) => [T.CC, { G: 3, SID: sid, FM: fm, DID: 5 }] as [number, FieldValues]),
      );
      gone(s, [T.CC, { G: 3, SID: covering, FM: fm, DID: 5 }]);
    });
  }

  it("scalable mode: device-selective covers by SID and FM", () => {
    const s = smContext();
    survives(s, [
      [T.CC, { G: 3, SID: SID ^ 1 }],
      [T.CC, { G: 3, SID: SID + 8, FM: 3 }],
    ]);
    gone(s, [T.CC, { G: 3, SID: SID | 7, FM: 3 }]);
  });

  it("scalable mode: domain-selective ignores the DID (context entries have none) and covers all", () => {
    gone(smContext(), [T.CC, { G: 2, DID: 1234 }]);
  });

  it("scalable mode: global covers", () => {
    gone(smContext(), [T.CC, { G: 1 }]);
  });

  it("context-cache invalidation does not touch the IOTLB", () => {
    const s = legacyLeaf();
    survives(s, [[T.CC, { G: 1 }]]);
  });
});

// ----- IOTLB invalidation (type 2) ------------------------------------------------------------

describe("IOTLB invalidation (type 2)", () => {
  it("global covers every translation", () => {
    gone(legacyLeaf(), [T.IOTLB, { G: 1 }]);
  });

  it("domain-selective: another DID does not cover, the translation's DID does", () => {
    const s = legacyLeaf();
    survives(s, [[T.IOTLB, { G: 2, DID: 6 }]]);
    gone(s, [T.IOTLB, { G: 2, DID: 5 }]);
  });

  it("page-selective: other pages, ranges and DIDs do not cover; the page does", () => {
    const s = legacyLeaf();
    survives(s, [
      [T.IOTLB, { G: 3, DID: 5, ADDR: IOVA + 0x1000 }],
      [T.IOTLB, { G: 3, DID: 5, ADDR: IOVA - 0x1000 }],
      [T.IOTLB, { G: 3, DID: 5, ADDR: IOVA + 0x2000, AM: 1 }],
      [T.IOTLB, { G: 3, DID: 5, ADDR: IOVA - 0x20_0000, AM: 9 }],
      [T.IOTLB, { G: 3, DID: 6, ADDR: IOVA }],
    ]);
    gone(s, [T.IOTLB, { G: 3, DID: 5, ADDR: IOVA }]);
  });

  it("page-selective with AM covers the aligned 2^AM pages (ADDR's low bits ignored)", () => {
    const s = legacyLeaf();
    gone(s, [T.IOTLB, { G: 3, DID: 5, ADDR: IOVA + 0x7000, AM: 4 }]);
  });

  it("page-selective with IH=1 still removes the leaf translation", () => {
    gone(legacyLeaf(), [T.IOTLB, { G: 3, DID: 5, ADDR: IOVA, IH: 1 }]);
  });

  it("page-selective on a unit without PSI is performed domain-selective", () => {
    const s = legacyLeaf({ caps: { psi: false, mamv: 0 } });
    survives(s, [[T.IOTLB, { G: 3, DID: 6, ADDR: IOVA }]]);
    gone(s, [T.IOTLB, { G: 3, DID: 5, ADDR: 0x7000_0000 }]);
  });

  it("a 2 MiB translation goes with a page-selective flush of any 4 KiB page inside it", () => {
    const m = vtdTestMachine({ caps: LEGACY_VTD_CAPS });
    const root = m.b.frame();
    m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID: 5 });
    m.b.ssMap(root, 4, IOVA, PA, 2);
    const s = makeStale(m, SID, IOVA + 0x1000, {}, () => m.b.ssMap(root, 4, IOVA, PA2, 2));
    survives(s, [[T.IOTLB, { G: 3, DID: 5, ADDR: IOVA + 0x20_0000 }]]);
    gone(s, [T.IOTLB, { G: 3, DID: 5, ADDR: IOVA + 0x1f_f000 }]);
  });

  it("scalable, second stage: page-selective covers the page of every PASID of the DID", () => {
    const s = smLeaf(PGTT_SL, 6, 9);
    survives(s, [
      [T.IOTLB, { G: 3, DID: 6, ADDR: IOVA + 0x1000 }],
      [T.IOTLB, { G: 2, DID: 7 }],
    ]);
    gone(s, [T.IOTLB, { G: 3, DID: 6, ADDR: IOVA }]);
  });

  it("scalable, first stage: page-selective removes the DID's first-stage translations whatever the address", () => {
    const s = smLeaf(PGTT_FL);
    survives(s, [[T.IOTLB, { G: 3, DID: 7, ADDR: IOVA }]]);
    gone(s, [T.IOTLB, { G: 3, DID: 6, ADDR: 0x7000_0000 }]);
  });

  it("scalable, first stage: domain-selective covers", () => {
    const s = smLeaf(PGTT_FL);
    survives(s, [[T.IOTLB, { G: 2, DID: 7 }]]);
    gone(s, [T.IOTLB, { G: 2, DID: 6 }]);
  });
});

// ----- PASID-based IOTLB invalidation (type 6) ------------------------------------------------

describe("PASID-based IOTLB invalidation (type 6)", () => {
  it("PASID-selective: other PASID or DID does not cover; the DID and PASID do", () => {
    const s = smLeaf(PGTT_FL);
    survives(s, [
      [T.PIOTLB, { G: 2, DID: 6, PASID: 4 }],
      [T.PIOTLB, { G: 2, DID: 7, PASID: 3 }],
    ]);
    gone(s, [T.PIOTLB, { G: 2, DID: 6, PASID: 3 }]);
  });

  it("page-selective: other pages, PASIDs and DIDs do not cover; the page does", () => {
    const s = smLeaf(PGTT_FL);
    survives(s, [
      [T.PIOTLB, { G: 3, DID: 6, PASID: 3, ADDR: IOVA + 0x1000 }],
      [T.PIOTLB, { G: 3, DID: 6, PASID: 3, ADDR: IOVA + 0x2000, AM: 1 }],
      [T.PIOTLB, { G: 3, DID: 6, PASID: 4, ADDR: IOVA }],
      [T.PIOTLB, { G: 3, DID: 7, PASID: 3, ADDR: IOVA }],
    ]);
    gone(s, [T.PIOTLB, { G: 3, DID: 6, PASID: 3, ADDR: IOVA, IH: 1 }]);
  });

  it("page-selective accepts an AM above MAMV (any AM, independent of CAP.MAMV)", () => {
    const s = smLeaf(PGTT_FL);
    gone(s, [T.PIOTLB, { G: 3, DID: 6, PASID: 3, ADDR: 0, AM: 40 }]);
  });

  it("page-selective does not select second-stage translations; PASID-selective does", () => {
    const s = smLeaf(PGTT_SL, 6, 9);
    survives(s, [[T.PIOTLB, { G: 3, DID: 6, PASID: 9, ADDR: IOVA }]]);
    gone(s, [T.PIOTLB, { G: 2, DID: 6, PASID: 9 }]);
  });

  it("nested translations are covered like first-stage ones", () => {
    const s = smLeaf(PGTT_NESTED);
    survives(s, [[T.PIOTLB, { G: 3, DID: 6, PASID: 3, ADDR: IOVA + 0x1000 }]]);
    gone(s, [T.PIOTLB, { G: 3, DID: 6, PASID: 3, ADDR: IOVA }]);
  });

  it("requests without PASID are tagged with RID_PASID", () => {
    const s = smLeaf(PGTT_FL, 6, 0);
    survives(s, [[T.PIOTLB, { G: 2, DID: 6, PASID: 1 }]]);
    gone(s, [T.PIOTLB, { G: 2, DID: 6, PASID: 0 }]);
  });
});

// ----- PASID-cache invalidation (type 7) ------------------------------------------------------

describe("PASID-cache invalidation (type 7)", () => {
  it("domain-selective: another DID does not cover; the cached entry's DID does", () => {
    const s = smPasidEntry();
    survives(s, [
      [T.PC, { G: 0, DID: 7 }], // the DID now in memory is not the cached one
      [T.PC, { G: 0, DID: 8 }],
    ]);
    gone(s, [T.PC, { G: 0, DID: 6 }]);
  });

  it("PASID-selective: another PASID or DID does not cover; DID and PASID do", () => {
    const s = smPasidEntry();
    survives(s, [
      [T.PC, { G: 1, DID: 6, PASID: 4 }],
      [T.PC, { G: 1, DID: 7, PASID: 3 }],
    ]);
    gone(s, [T.PC, { G: 1, DID: 6, PASID: 3 }]);
  });

  it("global covers", () => {
    gone(smPasidEntry(), [T.PC, { G: 3 }]);
  });

  it("a context-cache invalidation does not drop PASID-cache entries", () => {
    survives(smPasidEntry(), [[T.CC, { G: 1 }]]);
  });

  it("PASID-cache invalidation does not touch the IOTLB", () => {
    survives(smLeaf(PGTT_FL), [[T.PC, { G: 3 }]]);
  });
});

// ----- Paging-structure caches and IH --------------------------------------------------------

describe("paging-structure caches and the invalidation hint", () => {
  /** First stage: a translation is cached, then its PDE is repointed at a new page table. */
  function pdeMoved(): Stale {
    const m = vtdTestMachine();
    const dir = m.b.setSmContext(m.rta, SID, {});
    const root = m.b.frame();
    m.b.fsMap(root, 4, IOVA, PA);
    m.b.setPasidEntry(dir, 3, { PGTT: PGTT_FL, DID: 6, FLPTR: root });
    return makeStale(m, SID, IOVA, { pasid: 3 }, () => {
      const pt = m.b.frame();
      m.b.write(FS_PTE, pt + ((IOVA / 4096) % 512) * 8, { P: 1, RW: 1, US: 1, ADDR: PA2 });
      const pde = m.b.entryAddr(root, 4, IOVA, 2, (lo) => (lo & 1) !== 0);
      m.b.write(FS_PTE, pde, { P: 1, RW: 1, US: 1, ADDR: pt });
    });
  }

  it("page-selective with IH=1 keeps the cached non-leaf entries; IH=0 drops them", () => {
    const s = pdeMoved();
    survives(s, [[T.PIOTLB, { G: 3, DID: 6, PASID: 3, ADDR: IOVA, IH: 1 }]]);
    gone(s, [T.PIOTLB, { G: 3, DID: 6, PASID: 3, ADDR: IOVA, IH: 0 }]);
  });

  it("PASID-selective drops the cached non-leaf entries", () => {
    gone(pdeMoved(), [T.PIOTLB, { G: 2, DID: 6, PASID: 3 }]);
  });
});

// ----- Device-TLB invalidation (types 3 and 8) ------------------------------------------------

describe("device-TLB invalidation", () => {
  function withPorts(opts: VtdTestMachineOptions = {}) {
    const m = vtdTestMachine(opts);
    const port = new RecordingPort(SID);
    const other = new RecordingPort(SID + 1);
    m.unit.connect(port);
    m.unit.connect(other);
    return { ...m, qi: m.qi as QiSubmitter, port, other };
  }

  it("type 3 reaches only the device it names, with the page or the encoded range", () => {
    for (const legacy of [true, false]) {
      const m = withPorts(legacy ? { caps: LEGACY_VTD_CAPS } : {});
      expect(m.qi.submit([[T.DEV_TLB, { SID, ADDR: 0x1234_5000 }]])).toBe(true);
      const r = encodeDevTlbRange(0x40000, 9);
      expect(m.qi.submit([[T.DEV_TLB, { SID, S: r.s, ADDR: r.addrPfn * 4096 }]])).toBe(true);
      const all = encodeDevTlbRange(0, 52);
      expect(
        m.qi.submit([
          [T.DEV_TLB, { SID, S: 1, ADDR: BigInt(all.addrPfn) * 4096n, PFSIDLo: 3, MIP: 4 }],
        ]),
      ).toBe(true);
      expect(m.port.calls).toEqual([
        { op: "atsInvalidate", pasid: NO_PASID, iovaPfn: 0x12345, pages: 1, global: false },
        { op: "atsInvalidate", pasid: NO_PASID, iovaPfn: 0x40000, pages: 512, global: false },
        { op: "atsInvalidate", pasid: NO_PASID, iovaPfn: 0, pages: 0, global: false },
      ]);
      expect(m.other.calls).toEqual([]);
    }
  });

  it("type 8 carries the PASID and G reaches only the named device", () => {
    const m = withPorts();
    const r = encodeDevTlbRange(0x100, 4);
    expect(
      m.qi.submit([
        [T.PDEV_TLB, { SID, PASID: 7, S: r.s, ADDR: r.addrPfn * 4096 }],
        [T.PDEV_TLB, { SID, PASID: 7, G: 1, ADDR: 0x5000 }],
      ]),
    ).toBe(true);
    expect(m.port.calls).toEqual([
      { op: "atsInvalidate", pasid: 7, iovaPfn: 0x100, pages: 16, global: false },
      { op: "atsInvalidate", pasid: 7, iovaPfn: 5, pages: 1, global: true },
    ]);
    expect(m.other.calls).toEqual([]);
  });

  it("a device-TLB invalidation to a disconnected SID times out: ITE, ITESID, the queue stops", () => {
    const events: VtdInterruptSource[] = [];
    const m = withPorts({ unit: { onInterrupt: (s) => events.push(s) } });
    m.unit.write32(VTD_REG.FECTL, 0);
    m.unit.disconnect(m.other);
    m.unit.disconnect(new RecordingPort(SID)); // not the connected port object: no effect
    expect(m.qi.submit([[T.DEV_TLB, { SID: SID + 1, ADDR: 0 }]])).toBe(false);
    const fsts = m.unit.read32(VTD_REG.FSTS);
    expect(fsts & (FSTS_ITE | FSTS_IQE)).toBe(FSTS_ITE);
    expect(m.unit.read32(VTD_REG.IQER + 4) & 0xffff).toBe(SID + 1);
    expect(events).toEqual(["fault"]);
    // The wait behind it was fetched and aborted: IQH is past it, its status was not written.
    expect(m.qi.head).toBe(m.qi.tailOffset);
    expect(m.unit.queueStopped).toBe(true);
    m.unit.write32(VTD_REG.FSTS, FSTS_ITE);
    expect(m.unit.queueStopped).toBe(false);
    expect(m.qi.head).toBe(m.qi.tailOffset);
    // Still delivered to the connected port.
    expect(m.qi.submit([[T.DEV_TLB, { SID, ADDR: 0 }]])).toBe(true);
    expect(m.port.calls).toHaveLength(1);
  });

  // Spec 6.5.2.11 (quoted in the Linux ITE fix 20260306101516): "When a Device-TLB invalidation
  // or PASID-based-Device-TLB invalidation time-out is detected, hardware must not complete any
  // pending inv_wait_dsc commands." Linux's qi_check_fault marks every slot below IQH aborted and
  // resubmits; a wait that completed after ITE was cleared would report a failed flush as done.
  it("ITE aborts the pending wait: no status write, and clearing ITE does not complete it", () => {
    const events: VtdInterruptSource[] = [];
    const m = withPorts({ unit: { onInterrupt: (s) => events.push(s) } });
    m.unit.write32(VTD_REG.IECTL, 0);
    m.unit.disconnect(m.other);
    const status = m.b.frame();
    m.qi.put(T.DEV_TLB, { SID: SID + 1, ADDR: 0 });
    m.qi.put(T.IOTLB, { G: 1 });
    m.qi.put(T.WAIT, { SW: 1, IF: 1, SDATA: 2, SADDR: status });
    const afterWait = m.qi.tailOffset;
    m.qi.put(T.WAIT, { SW: 1, SDATA: 3, SADDR: status + 4 });
    m.qi.commit();
    expect(m.unit.read32(VTD_REG.FSTS) & FSTS_ITE).toBe(FSTS_ITE);
    expect(m.qi.head).toBe(afterWait);
    expect(m.mem.read32(status)).toBe(0);
    expect(m.unit.read32(VTD_REG.ICS)).toBe(0);
    m.unit.write32(VTD_REG.FSTS, FSTS_ITE);
    // The aborted wait stays aborted; the queue resumes with the descriptor after it.
    expect(m.mem.read32(status)).toBe(0);
    expect(m.mem.read32(status + 4)).toBe(3);
    expect(events).not.toContain("invalidation");
  });

  it("the abort reaches the pending wait even when a step budget ends at the timed-out descriptor", () => {
    const m = withPorts({ unit: { autoProcessQueue: false } });
    m.unit.disconnect(m.other);
    const status = m.b.frame();
    m.qi.put(T.DEV_TLB, { SID: SID + 1, ADDR: 0 });
    m.qi.put(T.WAIT, { SW: 1, SDATA: 2, SADDR: status });
    m.qi.commit();
    expect(m.unit.processInvalidations(1)).toBe(2);
    m.unit.write32(VTD_REG.FSTS, FSTS_ITE);
    m.unit.processInvalidations();
    expect(m.mem.read32(status)).toBe(0);
    expect(m.qi.head).toBe(m.qi.tailOffset);
  });

  // IQERCD_REG.ITESID (Intel SoC register manuals): "If ITE field is Clear at the time of
  // Invalidation Time-out error detection, hardware copies the Requester-id ... into this field."
  it("ITESID keeps the requester of the first time-out while ITE is set", () => {
    const m = withPorts();
    m.unit.disconnect(m.other);
    m.unit.disconnect(m.port);
    m.qi.put(T.DEV_TLB, { SID: SID + 1, ADDR: 0 });
    m.qi.put(T.DEV_TLB, { SID, ADDR: 0 });
    m.qi.put(T.WAIT, { SW: 1, SDATA: 2, SADDR: m.b.frame() });
    m.qi.commit();
    expect(m.unit.read32(VTD_REG.IQER + 4) & 0xffff).toBe(SID + 1);
  });

  it("device-TLB descriptors on a unit without ECAP.DT are invalid types", () => {
    const m = vtdTestMachine({ caps: { ...LEGACY_VTD_CAPS, deviceTlb: false } });
    expect((m.qi as QiSubmitter).submit([[T.DEV_TLB, { SID, ADDR: 0 }]])).toBe(false);
    expect(m.unit.read32(VTD_REG.IQER) & 0xf).toBe(3);
  });
});

// ----- Page group response (type 9) -----------------------------------------------------------

describe("page group response (type 9)", () => {
  it("reaches the device named by RID, with PASID only when PP is set", () => {
    const m = vtdTestMachine();
    const port = new RecordingPort(SID);
    m.unit.connect(port);
    expect(
      (m.qi as QiSubmitter).submit([
        [T.PGRP_RESP, { RID: SID, PP: 1, PASID: 9, PRGI: 0x1ab, RC: 0 }],
        [T.PGRP_RESP, { RID: SID, PP: 0, PASID: 9, PRGI: 3, RC: 1, LPIG: 1 }],
        [T.PGRP_RESP, { RID: SID + 1, PP: 1, PASID: 9, PRGI: 4, RC: 0xf }],
      ]),
    ).toBe(true);
    expect(port.calls).toEqual([
      { op: "prgResponse", pasid: 9, prgIndex: 0x1ab, code: 0 },
      { op: "prgResponse", pasid: NO_PASID, prgIndex: 3, code: 1 },
    ]);
    expect(m.unit.stats.pageResponses).toBe(2);
  });

  it("private data in qw2/qw3 is allowed in a page group response", () => {
    const m = vtdTestMachine();
    const port = new RecordingPort(SID);
    m.unit.connect(port);
    (m.qi as QiSubmitter).put(
      T.PGRP_RESP,
      { RID: SID, PP: 1, PASID: 1, PRGI: 2 },
      [0, 0, 0, 0, 1, 2, 3, 4],
    );
    expect((m.qi as QiSubmitter).submit([])).toBe(true);
    expect(port.calls).toHaveLength(1);
  });

  it("on a unit without page requests it is an invalid type", () => {
    const m = vtdTestMachine({ caps: { prs: false, pds: false } });
    expect((m.qi as QiSubmitter).submit([[T.PGRP_RESP, { RID: SID }]])).toBe(false);
    expect(m.unit.read32(VTD_REG.IQER) & 0xf).toBe(3);
  });
});

// ----- Invalidation wait (type 5) -------------------------------------------------------------

describe("invalidation wait (type 5)", () => {
  function machine() {
    const events: VtdInterruptSource[] = [];
    const m = vtdTestMachine({ unit: { onInterrupt: (s) => events.push(s) } });
    return { ...m, qi: m.qi as QiSubmitter, events };
  }

  it("SW writes the status data to the status address", () => {
    const m = machine();
    const status = m.b.frame() + 0x124;
    m.qi.put(T.WAIT, { SW: 1, SDATA: 0xdead_beef, SADDR: status });
    m.qi.commit();
    expect(m.mem.read32(status) >>> 0).toBe(0xdead_beef);
  });

  it("IF with IECTL.IM set sets ICS.IWC and IP; clearing IM sends the event", () => {
    const m = machine();
    expect(m.unit.read32(VTD_REG.IECTL) >>> 0).toBe(ECTL_IM);
    expect(m.qi.submit([[T.WAIT, { IF: 1 }]])).toBe(true);
    expect(m.unit.read32(VTD_REG.ICS)).toBe(1);
    expect(m.unit.read32(VTD_REG.IECTL) >>> 0).toBe((ECTL_IM | ECTL_IP) >>> 0);
    expect(m.events).toEqual([]);
    m.unit.write32(VTD_REG.IECTL, 0);
    expect(m.events).toEqual(["invalidation"]);
    // ICS.IWC is write-1-to-clear.
    m.unit.write32(VTD_REG.ICS, 0);
    expect(m.unit.read32(VTD_REG.ICS)).toBe(1);
    m.unit.write32(VTD_REG.ICS, 1);
    expect(m.unit.read32(VTD_REG.ICS)).toBe(0);
  });

  it("IF with IECTL.IM clear sends the event at once", () => {
    const m = machine();
    m.unit.write32(VTD_REG.IECTL, 0);
    expect(m.qi.submit([[T.WAIT, { IF: 1 }]])).toBe(true);
    expect(m.events).toEqual(["invalidation"]);
  });

  // IECTL_REG.IP (VT-d register definition, e.g. Intel Core datasheet vol. 2 IECTL_REG): "If the
  // IWC field in the Invalidation Completion Status register was already Set at the time of
  // setting this field, it is not treated as a new interrupt condition." QEMU
  // vtd_generate_completion_event skips the event the same way.
  it("a wait with IF while ICS.IWC is still set raises no new completion event", () => {
    const m = machine();
    m.unit.write32(VTD_REG.IECTL, 0);
    expect(m.qi.submit([[T.WAIT, { IF: 1 }]])).toBe(true);
    expect(m.events).toEqual(["invalidation"]);
    expect(m.qi.submit([[T.WAIT, { IF: 1 }]])).toBe(true);
    expect(m.events).toEqual(["invalidation"]);
    m.unit.write32(VTD_REG.IECTL, ECTL_IM);
    expect(m.qi.submit([[T.WAIT, { IF: 1 }]])).toBe(true);
    expect(m.unit.read32(VTD_REG.IECTL) >>> 0).toBe(ECTL_IM);
    // Once software clears IWC, the next completion is a new condition again.
    m.unit.write32(VTD_REG.ICS, 1);
    m.unit.write32(VTD_REG.IECTL, 0);
    expect(m.qi.submit([[T.WAIT, { IF: 1 }]])).toBe(true);
    expect(m.events).toEqual(["invalidation", "invalidation"]);
  });

  it("clearing ICS.IWC while masked clears IP: unmasking later sends nothing", () => {
    const m = machine();
    m.qi.submit([[T.WAIT, { IF: 1 }]]);
    m.unit.write32(VTD_REG.ICS, 1);
    expect(m.unit.read32(VTD_REG.IECTL) >>> 0).toBe(ECTL_IM);
    m.unit.write32(VTD_REG.IECTL, 0);
    expect(m.events).toEqual([]);
  });

  it("FN: the descriptors after a fence run after everything before it", () => {
    const m = machine();
    const port = new RecordingPort(SID);
    m.unit.connect(port);
    const status = m.b.frame();
    m.qi.put(T.DEV_TLB, { SID, ADDR: 0x1000 });
    m.qi.put(T.WAIT, { FN: 1, SW: 1, SDATA: 1, SADDR: status });
    m.qi.put(T.DEV_TLB, { SID, ADDR: 0x2000 });
    m.qi.put(T.WAIT, { SW: 1, SDATA: 2, SADDR: status + 4 });
    m.qi.commit();
    expect(port.calls.map((c) => (c.op === "atsInvalidate" ? c.iovaPfn : -1))).toEqual([1, 2]);
    expect([m.mem.read32(status), m.mem.read32(status + 4)]).toEqual([1, 2]);
  });

  it("PD completes with ECAP.PDS and is a reserved bit without it", () => {
    const m = machine();
    expect(m.qi.submit([[T.WAIT, { PD: 1 }]])).toBe(true);
    const m2 = vtdTestMachine({ caps: { pds: false } });
    expect((m2.qi as QiSubmitter).submit([[T.WAIT, { PD: 1 }]])).toBe(false);
    expect(m2.unit.read32(VTD_REG.IQER) & 0xf).toBe(4);
  });

  it("a queue that wraps keeps processing in order", () => {
    const m = vtdTestMachine({ caps: LEGACY_VTD_CAPS });
    for (let i = 0; i < 200; i++)
      expect((m.qi as QiSubmitter).submit([[T.IOTLB, { G: 1 }]])).toBe(true);
    expect((m.qi as QiSubmitter).head).toBe((m.qi as QiSubmitter).tailOffset);
    expect(m.unit.stats.descriptors).toBe(400);
  });
});

// ----- Invalid descriptors and queue errors ---------------------------------------------------

describe("queue errors", () => {
  /** Queue `bad` (raw words) then a status-writing wait; returns what happened. */
  function runBad(m: VtdTestMachine, bad: readonly number[]) {
    const qi = m.qi as QiSubmitter;
    const status = m.b.frame();
    const slot = qi.tailOffset;
    qi.putRaw(bad);
    qi.put(T.WAIT, { SW: 1, SDATA: 7, SADDR: status });
    qi.commit();
    return { qi, status, slot };
  }

  /** IQE with `iqei`, IQH left on the bad slot, the wait not run; after repair and clear it runs. */
  function expectIqe(m: VtdTestMachine, bad: readonly number[], iqei: number): void {
    const { qi, status, slot } = runBad(m, bad);
    expect(m.unit.read32(VTD_REG.FSTS) & FSTS_IQE).toBe(FSTS_IQE);
    expect(m.unit.read32(VTD_REG.IQER) & 0xf).toBe(iqei);
    expect(qi.head).toBe(slot);
    expect(m.mem.read32(status)).toBe(0);
    // Nothing runs while IQE is set, whatever software queues.
    expect(m.unit.processInvalidations()).toBe(0);
    // Software overwrites the bad slot with a harmless wait and clears IQE: the queue resumes.
    m.mem.write64(qi.base + slot, 5, 0);
    for (let i = 8; i < (qi.wide ? 32 : 16); i += 8) m.mem.write64(qi.base + slot + i, 0, 0);
    m.unit.write32(VTD_REG.FSTS, FSTS_IQE);
    expect(m.mem.read32(status)).toBe(7);
    expect(qi.head).toBe(qi.tailOffset);
    expect(m.unit.read32(VTD_REG.FSTS) & FSTS_IQE).toBe(0);
  }

  const legacy = () => vtdTestMachine({ caps: LEGACY_VTD_CAPS });
  const scalable = () => vtdTestMachine();

  it("an undefined type (0, 0xA, 0xF, Type[6:4] != 0): IQEI 3", () => {
    for (const w0 of [0, 0xa, 0xf, 0x200 | 5]) expectIqe(legacy(), [w0, 0, 0, 0], 3);
  });

  it("a type the unit does not support (PASID types on a legacy unit, IEC without IR): IQEI 3", () => {
    for (const type of [T.PIOTLB, T.PC, T.PDEV_TLB, T.PGRP_RESP, T.IEC])
      expectIqe(legacy(), [type, 0, 0, 0], 3);
  });

  it("reserved bits set: IQEI 4", () => {
    for (const bad of [
      [T.CC | 0x10 | 0x40, 0, 0, 0], // CC bit 6
      [T.CC | 0x10, 1 << 18, 0, 0], // CC bit 50
      [T.CC | 0x10, 0, 1, 0], // CC qw1
      [T.IOTLB | 0x30, 0, 0x80, 0], // IOTLB qw1 bit 7
      [T.IOTLB | 0x10 | 0x100, 0, 0, 0], // IOTLB bit 8
      [T.WAIT | 0x100, 0, 0, 0], // wait bit 8
      [T.WAIT | 0x20, 0, 1, 0], // wait SADDR bit 0
      [T.DEV_TLB, 0, 2, 0], // dev-TLB qw1 bit 1
    ])
      expectIqe(legacy(), bad, 4);
    for (const bad of [
      [T.PC | 0x30, 1 << 20, 0, 0], // PC bit 52
      [T.PIOTLB | 0x20, 0, 0x80, 0], // PIOTLB qw1 bit 7
      [T.PGRP_RESP, 0, 1, 0], // response qw1 bit 0
      [T.IOTLB | 0x10, 0, 0, 0, 1, 0, 0, 0], // qw2 of a 256-bit slot
      [T.WAIT | 0x20, 0, 0, 0, 0, 0, 0, 0x80000000], // qw3 of a 256-bit slot
    ])
      expectIqe(scalable(), bad, 4);
  });

  it("a reserved granularity (CC G=0, IOTLB G=0, PIOTLB G=0/1, PC G=2): IQEI 4", () => {
    expectIqe(legacy(), [T.CC, 0, 0, 0], 4);
    expectIqe(legacy(), [T.IOTLB, 0, 0, 0], 4);
    expectIqe(scalable(), [T.PIOTLB, 0, 0, 0], 4);
    expectIqe(scalable(), [T.PIOTLB | 0x10, 0, 0, 0], 4);
    expectIqe(scalable(), [T.PC | 0x20, 0, 0, 0], 4);
  });

  it("an IOTLB page-selective descriptor with AM above MAMV: IQEI 4", () => {
    expectIqe(legacy(), [T.IOTLB | 0x30, 0, LEGACY_VTD_CAPS.mamv + 1, 0], 4);
  });

  it("128-bit descriptors in scalable mode (IQA.DW=0): IQEI 5", () => {
    const m = vtdTestMachine({ qi: false });
    const qi = new QiSubmitter(m.unit, m.b, false);
    m.unit.write32(VTD_REG.GCMD, (GCMD_TE | GCMD_QIE) >>> 0);
    const status = m.b.frame();
    qi.put(T.WAIT, { SW: 1, SDATA: 7, SADDR: status });
    qi.commit();
    expect(m.unit.read32(VTD_REG.FSTS) & FSTS_IQE).toBe(FSTS_IQE);
    expect(m.unit.read32(VTD_REG.IQER) & 0xf).toBe(5);
    expect(qi.head).toBe(0);
    expect(m.mem.read32(status)).toBe(0);
  });

  it("IQT with bit 4 set while DW=1: IQEI 6, nothing runs", () => {
    const m = scalable();
    const qi = m.qi as QiSubmitter;
    const status = m.b.frame();
    qi.put(T.WAIT, { SW: 1, SDATA: 7, SADDR: status });
    m.unit.write32(VTD_REG.IQT, 0x30);
    expect(m.unit.read32(VTD_REG.IQER) & 0xf).toBe(6);
    expect(m.unit.read32(VTD_REG.FSTS) & FSTS_IQE).toBe(FSTS_IQE);
    expect(qi.head).toBe(0);
    expect(m.mem.read32(status)).toBe(0);
    // Software fixes IQT, then clears IQE.
    m.unit.write32(VTD_REG.IQT, 0x20);
    m.unit.write32(VTD_REG.FSTS, FSTS_IQE);
    expect(m.mem.read32(status)).toBe(7);
  });

  it("IQT beyond the queue: IQEI 1, nothing runs", () => {
    const m = legacy();
    const qi = m.qi as QiSubmitter;
    const status = m.b.frame();
    qi.put(T.WAIT, { SW: 1, SDATA: 7, SADDR: status });
    m.unit.write32(VTD_REG.IQT, 0x1010);
    expect(m.unit.read32(VTD_REG.IQER) & 0xf).toBe(1);
    expect(qi.head).toBe(0);
    expect(m.mem.read32(status)).toBe(0);
    m.unit.write32(VTD_REG.IQT, 0x10);
    m.unit.write32(VTD_REG.FSTS, FSTS_IQE);
    expect(m.mem.read32(status)).toBe(7);
  });

  it("a bus error fetching a descriptor: IQEI 2", () => {
    const m = legacy();
    const qi = m.qi as QiSubmitter;
    m.mem.faultHook = (pa, _n, write) => !write && pa >= qi.base && pa < qi.base + 4096;
    qi.put(T.WAIT, {});
    qi.commit();
    expect(m.unit.read32(VTD_REG.IQER) & 0xf).toBe(2);
    expect(qi.head).toBe(0);
    m.mem.faultHook = null;
    m.unit.write32(VTD_REG.FSTS, FSTS_IQE);
    expect(qi.head).toBe(16);
  });

  it("IQE raises the fault event; a second error while IQE is set is no new event", () => {
    const events: VtdInterruptSource[] = [];
    const m = vtdTestMachine({
      caps: LEGACY_VTD_CAPS,
      unit: { onInterrupt: (s) => events.push(s) },
    });
    m.unit.write32(VTD_REG.FECTL, 0);
    runBad(m, [0xf, 0, 0, 0]);
    expect(events).toEqual(["fault"]);
    // A translation fault while IQE is pending is no new interrupt condition either.
    xlate(m.unit, 0x300, 0);
    expect(events).toEqual(["fault"]);
  });
});

// ----- Stepping the queue ---------------------------------------------------------------------

describe("processInvalidations", () => {
  it("with autoProcessQueue off, descriptors wait for processInvalidations(budget)", () => {
    const m = vtdTestMachine({ caps: LEGACY_VTD_CAPS, unit: { autoProcessQueue: false } });
    const qi = m.qi as QiSubmitter;
    const status = m.b.frame();
    qi.put(T.WAIT, { SW: 1, SDATA: 1, SADDR: status });
    qi.put(T.WAIT, { SW: 1, SDATA: 2, SADDR: status });
    qi.put(T.WAIT, { SW: 1, SDATA: 3, SADDR: status });
    qi.commit();
    expect(qi.head).toBe(0);
    expect(m.mem.read32(status)).toBe(0);
    expect(m.unit.processInvalidations(1)).toBe(1);
    expect(qi.head).toBe(16);
    expect(m.mem.read32(status)).toBe(1);
    expect(m.unit.processInvalidations(0)).toBe(0);
    expect(m.unit.processInvalidations()).toBe(2);
    expect(m.mem.read32(status)).toBe(3);
    expect(qi.head).toBe(48);
    expect(m.unit.processInvalidations()).toBe(0);
  });

  it("processInvalidations does nothing while QI is disabled", () => {
    const m = vtdTestMachine({ caps: LEGACY_VTD_CAPS, unit: { autoProcessQueue: false } });
    const qi = m.qi as QiSubmitter;
    qi.put(T.WAIT, {});
    qi.commit();
    m.unit.write32(VTD_REG.GCMD, GCMD_TE);
    expect(m.unit.processInvalidations()).toBe(0);
    expect(qi.head).toBe(0);
  });
});

// ----- Cache policies and caching mode --------------------------------------------------------

describe("cache policies", () => {
  it("maximal serves the old translation after a table change without invalidation; minimal the new", () => {
    for (const policy of ["maximal", "minimal"] as const) {
      const m = vtdTestMachine({ caps: LEGACY_VTD_CAPS, cache: { policy } });
      const root = m.b.frame();
      m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID: 5 });
      m.b.ssMap(root, 4, IOVA, PA);
      expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
      m.b.ssMap(root, 4, IOVA, PA2);
      expect(xlate(m.unit, SID, IOVA).pa).toBe(policy === "maximal" ? PA : PA2);
      // Context and PASID-entry changes too.
      const root2 = m.b.frame();
      m.b.ssMap(root2, 4, IOVA, 0xa_0000_0000);
      m.b.setContext(m.rta, SID, { SLPTPTR: root2, AW: 2, DID: 9 });
      expect(xlate(m.unit, SID, IOVA).pa).toBe(policy === "maximal" ? PA : 0xa_0000_0000);
      expect(m.unit.iotlb.size()).toBe(policy === "maximal" ? 1 : 0);
    }
  });

  it("minimal answers exactly what a fresh walk answers, scalable mode included", () => {
    const m = vtdTestMachine({ cache: { policy: "minimal" } });
    const dir = m.b.setSmContext(m.rta, SID, {});
    const root = m.b.frame();
    m.b.fsMap(root, 4, IOVA, PA);
    m.b.setPasidEntry(dir, 3, { PGTT: PGTT_FL, DID: 6, FLPTR: root });
    const p = probe(m, SID, IOVA, { pasid: 3 });
    expect(p.cached()).toEqual(p.fresh());
    m.b.fsMap(root, 4, IOVA, PA2);
    expect(p.cached()).toEqual(p.fresh());
    m.b.setPasidEntry(dir, 3, { PGTT: PGTT_FL, DID: 6, FLPTR: root, P: 0 });
    expect(p.cached()).toEqual(p.fresh());
    expect(p.cached().code).toBe(VTD_FR.SM_PASID_ENTRY_NOT_PRESENT);
  });

  describe("caching mode", () => {
    function notPresent(cachingMode: boolean, policy: "maximal" | "minimal" = "maximal") {
      const m = vtdTestMachine({ caps: { ...LEGACY_VTD_CAPS, cachingMode }, cache: { policy } });
      const root = m.b.frame();
      m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID: 5 });
      m.b.ssMap(root, 4, IOVA + 0x1000, PA); // builds the tables; IOVA itself stays unmapped
      expect(xlate(m.unit, SID, IOVA)).toMatchObject({ status: XLATE_FAULT, code: VTD_FR.NO_READ });
      m.b.ssMap(root, 4, IOVA, PA);
      return { ...m, qi: m.qi as QiSubmitter };
    }

    it("CM=1, maximal: a not-present result is cached until an invalidation covers it", () => {
      const m = notPresent(true);
      expect(xlate(m.unit, SID, IOVA).code).toBe(VTD_FR.NO_READ);
      expect(m.qi.submit([[T.IOTLB, { G: 3, DID: 5, ADDR: IOVA + 0x1000 }]])).toBe(true);
      expect(xlate(m.unit, SID, IOVA).code).toBe(VTD_FR.NO_READ);
      expect(m.qi.submit([[T.IOTLB, { G: 3, DID: 5, ADDR: IOVA }]])).toBe(true);
      expect(xlate(m.unit, SID, IOVA)).toMatchObject({ status: XLATE_OK, pa: PA });
    });

    it("CM=1, maximal: a not-present context entry is cached until a context invalidation", () => {
      const m = vtdTestMachine({ caps: { ...LEGACY_VTD_CAPS, cachingMode: true } });
      expect(xlate(m.unit, SID, IOVA).code).toBe(VTD_FR.ROOT_NOT_PRESENT);
      const root = m.b.frame();
      m.b.setContext(m.rta, SID, { SLPTPTR: root, AW: 2, DID: 5 });
      m.b.ssMap(root, 4, IOVA, PA);
      expect(xlate(m.unit, SID, IOVA).code).toBe(VTD_FR.ROOT_NOT_PRESENT);
      expect((m.qi as QiSubmitter).submit([[T.CC, { G: 3, SID: SID + 1 }]])).toBe(true);
      expect(xlate(m.unit, SID, IOVA).code).toBe(VTD_FR.ROOT_NOT_PRESENT);
      expect((m.qi as QiSubmitter).submit([[T.CC, { G: 3, SID }]])).toBe(true);
      expect(xlate(m.unit, SID, IOVA).pa).toBe(PA);
    });

    it("CM=1, maximal: a not-present first-stage result is never cached (caching mode excludes first-stage mappings)", () => {
      const m = vtdTestMachine({ caps: { cachingMode: true } });
      const dir = m.b.setSmContext(m.rta, SID, {});
      const root = m.b.frame();
      m.b.fsMap(root, 4, IOVA + 0x1000, PA);
      m.b.setPasidEntry(dir, 3, { PGTT: PGTT_FL, DID: 6, FLPTR: root });
      expect(xlate(m.unit, SID, IOVA, { pasid: 3 }).code).toBe(VTD_FR.SM_FS_ENTRY_NOT_PRESENT);
      m.b.fsMap(root, 4, IOVA, PA);
      // No invalidation: Linux's iotlb_sync_map sends none for first-stage domains.
      expect(xlate(m.unit, SID, IOVA, { pasid: 3 })).toMatchObject({ status: XLATE_OK, pa: PA });
    });

    it("CM=1, maximal: a not-present second-stage result in scalable mode is cached until covered", () => {
      const m = vtdTestMachine({ caps: { cachingMode: true } });
      const dir = m.b.setSmContext(m.rta, SID, {});
      const root = m.b.frame();
      m.b.ssMap(root, 4, IOVA + 0x1000, PA);
      m.b.setPasidEntry(dir, 3, { PGTT: PGTT_SL, DID: 6, SLPTPTR: root, AW: 2 });
      expect(xlate(m.unit, SID, IOVA, { pasid: 3 }).status).toBe(XLATE_FAULT);
      m.b.ssMap(root, 4, IOVA, PA);
      expect(xlate(m.unit, SID, IOVA, { pasid: 3 }).status).toBe(XLATE_FAULT);
      expect((m.qi as QiSubmitter).submit([[T.IOTLB, { G: 3, DID: 6, ADDR: IOVA }]])).toBe(true);
      expect(xlate(m.unit, SID, IOVA, { pasid: 3 })).toMatchObject({ status: XLATE_OK, pa: PA });
    });

    it("CM=1, maximal: a cached not-present PASID entry goes with the PASID-selective invalidation that uses the new entry's DID", () => {
      const m = vtdTestMachine({ caps: { cachingMode: true } });
      const dir = m.b.setSmContext(m.rta, SID, {});
      const root = m.b.frame();
      m.b.fsMap(root, 4, IOVA, PA);
      // PASID 4's entry makes the leaf table present, so PASID 3 is a not-present entry.
      m.b.setPasidEntry(dir, 4, { PGTT: PGTT_FL, DID: 7, FLPTR: root });
      expect(xlate(m.unit, SID, IOVA, { pasid: 3 }).code).toBe(VTD_FR.SM_PASID_ENTRY_NOT_PRESENT);
      m.b.setPasidEntry(dir, 3, { PGTT: PGTT_FL, DID: 6, FLPTR: root });
      expect(xlate(m.unit, SID, IOVA, { pasid: 3 }).code).toBe(VTD_FR.SM_PASID_ENTRY_NOT_PRESENT);
      // Another PASID does not cover it.
      expect((m.qi as QiSubmitter).submit([[T.PC, { G: 1, DID: 6, PASID: 4 }]])).toBe(true);
      expect(xlate(m.unit, SID, IOVA, { pasid: 3 }).code).toBe(VTD_FR.SM_PASID_ENTRY_NOT_PRESENT);
      expect((m.qi as QiSubmitter).submit([[T.PC, { G: 1, DID: 6, PASID: 3 }]])).toBe(true);
      expect(xlate(m.unit, SID, IOVA, { pasid: 3 })).toMatchObject({ status: XLATE_OK, pa: PA });
    });

    it("CM=0: a not-present result is never cached", () => {
      const m = notPresent(false);
      expect(xlate(m.unit, SID, IOVA)).toMatchObject({ status: XLATE_OK, pa: PA });
    });

    it("CM=1 under the minimal policy caches nothing", () => {
      const m = notPresent(true, "minimal");
      expect(xlate(m.unit, SID, IOVA)).toMatchObject({ status: XLATE_OK, pa: PA });
      expect(m.unit.cacheConfig.cacheNotPresent).toBe(false);
    });
  });
});
