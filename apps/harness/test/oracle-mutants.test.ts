// Mutation testing of the VT-d oracle: realistic driver bugs, each planted in one VtdDriver /
// VtdQi instance by wrapping its methods (the driver's source is never touched), must be caught by
// the fuzzer or the default scenario with a diagnosis that points at the bug. Bugs the spec makes
// harmless are listed apart and must stay silent. MUTANT_TABLE=1 prints how fast each was caught.

import type {
  DeviceDomainInfo,
  DmarDomain,
  IntelIommu,
  PasidTable,
  VtdDriver,
  VtdQi,
} from "@iommu-sim/intel-vtd/driver";
import { IOTLB_G_PAGE, PC_G_PASID } from "@iommu-sim/intel-vtd/format";
import type { CacheTag, Device, IommuDomain, IommuDomainOps } from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import type { VtdHarness } from "../src/machine/vtd-harness.js";
import {
  CatchTable,
  during,
  expectHarmless,
  fuzzHunt,
  itCatchesInScenario,
  itListsAtLeast,
  plantMapOnePageOff,
  plantResponseTwice,
  VTD,
  type VtdFuzzConfig,
  type VtdMutant,
  wrapEach,
} from "./mutant-kit.js";

const PAGE = 4096;

/** The driver's private steps the mutants wrap (TypeScript `private` only: plain properties). */
interface DriverInternals {
  pagingOps: IommuDomainOps;
  pasidTearDown(info: DeviceDomainInfo, pasid: number, freeingDid: boolean): void;
  pasidSetup(info: DeviceDomainInfo, pasid: number, domain: DmarDomain | null): 0 | string;
  pasidFields(unit: IntelIommu, domain: DmarDomain | null): Record<string, number>;
  setDevPasid(domain: DmarDomain, dev: Device, pasid: number, old: IommuDomain | null): 0 | string;
  legacyContextClear(info: DeviceDomainInfo, freeingDid: boolean): void;
  disableAts(info: DeviceDomainInfo): void;
  tagsUnassign(domain: DmarDomain, info: DeviceDomainInfo, pasid: number): void;
  psiMask(pfn: number, endPfn: number): number;
  iotlbSyncMap(domain: DmarDomain, iova: number, size: number): 0;
  stageIotlb(
    qi: VtdQi,
    unit: IntelIommu,
    domain: DmarDomain,
    tag: CacheTag,
    pfn: number,
    mask: number,
    leaf: boolean,
  ): void;
  pageRequest(unit: IntelIommu, at: number, devices: Map<number, Device>): void;
}

function internals(h: VtdHarness): DriverInternals {
  return h.m.driver as unknown as DriverInternals;
}

function queues(h: VtdHarness): VtdQi[] {
  return h.m.driver.units.map((u) => u.qi).filter((q): q is VtdQi => q !== null);
}

const SCALABLE: VtdFuzzConfig = { mode: "scalable" };
const LEGACY: VtdFuzzConfig = { mode: "legacy" };

// --- The bugs --------------------------------------------------------------------------------------

const MUTANTS: readonly VtdMutant[] = [
  {
    name: "piotlb-wrong-did",
    bug: "PASID-based IOTLB invalidations carry the next domain ID instead of the domain's own",
    fuzz: [SCALABLE],
    plant(h) {
      wrapEach(
        queues(h),
        "addPiotlb",
        (orig) => (did, pasid, addr, pages, ih) => orig(did + 1, pasid, addr, pages, ih),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "iotlb",
      descriptor: "PASID-based IOTLB invalidation (type 6)",
      message: /was aimed at it but missed: its DID \d+ is not the entry's \d+$/,
    },
  },
  {
    name: "piotlb-am-too-small",
    bug: "page-selective PASID-based IOTLB invalidations cover half the block (AM one too small)",
    fuzz: [SCALABLE],
    plant(h) {
      wrapEach(
        queues(h),
        "addPiotlb",
        (orig) => (did, pasid, addr, pages, ih) =>
          orig(did, pasid, addr, pages > 1 ? pages / 2 : pages, ih),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "iotlb",
      descriptor: "PASID-based IOTLB invalidation (type 6)",
      message:
        /PASID-based IOTLB invalidation \(type 6\) G=page .*was aimed at it but missed: its range \[0x[0-9a-f]+, 0x[0-9a-f]+\) \(AM \d+, \d+ pages?\) (ends before|starts after) the entry at 0x[0-9a-f]+/,
    },
  },
  {
    name: "iotlb-am-too-small",
    bug: "page-selective IOTLB invalidations (type 2) of second-stage domains have AM one too small",
    fuzz: [LEGACY, SCALABLE],
    plant(h) {
      wrapEach(
        queues(h),
        "addIotlb",
        (orig) => (g, did, addr, am, ih) =>
          orig(g, did, addr, g === IOTLB_G_PAGE && am > 0 ? am - 1 : am, ih),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "iotlb",
      descriptor: "IOTLB invalidation (type 2)",
      message:
        /IOTLB invalidation \(type 2\) G=page .*was aimed at it but missed: its range \[0x[0-9a-f]+, 0x[0-9a-f]+\) \(AM \d+, \d+ pages?\) (ends before|starts after) the entry at 0x[0-9a-f]+/,
    },
  },
  {
    name: "psi-unaligned",
    bug: "the invalidation block is the range's size rounded up, not widened until one aligned block covers the range (before calculate_psi_aligned_address)",
    fuzz: [SCALABLE, LEGACY],
    plant(h) {
      const drv = internals(h);
      drv.psiMask = (pfn, endPfn) => {
        const n = endPfn - pfn + 1;
        return n <= 1 ? 0 : 32 - Math.clz32(n - 1);
      };
    },
    // The IOTLB's or the ATC's entry for the end of the range, whichever the device used: the
    // flush's block, as large as the range but not aligned on it, stops short of it.
    expect: {
      kind: "stale-translation",
      message:
        /\(removed by unmap\(domain#\d+, 0x[0-9a-f]+, 0x[2-8]000\).*was aimed at it but missed: its range \[0x[0-9a-f]+, 0x[0-9a-f]+\) \([^)]+\) ends before the entry at 0x[0-9a-f]+/,
    },
  },
  {
    name: "drop-pasid-devtlb",
    bug: "no device-TLB invalidation for a PASID other than the RID's (type 8 never sent)",
    fuzz: [SCALABLE],
    plant(h) {
      for (const qi of queues(h)) qi.addPasidDevtlb = () => {};
    },
    expect: {
      kind: "stale-translation",
      cache: "device-tlb",
      descriptor: "PASID-based device-TLB invalidation (type 8)",
    },
  },
  {
    name: "devtlb-wrong-sid",
    bug: "device-TLB invalidations without PASID go to the neighbouring function's source ID",
    fuzz: [SCALABLE],
    scenario: true,
    plant(h) {
      wrapEach(
        queues(h),
        "addDevtlb",
        (orig) => (sid, pfsid, qdep, addr, order) => orig(sid ^ 0x8, pfsid, qdep, addr, order),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "device-tlb",
      descriptor: "device-TLB invalidation (type 3)",
      message:
        /device-TLB invalidation \(type 3\) SID=(0x[0-9a-f]+) .*was aimed at it but missed: its SID \1 is not the device's 0x[0-9a-f]+/,
    },
  },
  {
    name: "piotlb-for-second-stage",
    bug: "scalable mode: second-stage domains are invalidated with page-selective PASID-based IOTLB invalidations, which leave second-stage entries alone",
    fuzz: [SCALABLE],
    plant(h) {
      const drv = internals(h);
      drv.stageIotlb = (qi, unit, _domain, tag, pfn, mask, leaf) => {
        if (mask >= 52) qi.addPiotlb(tag.id, tag.pasid, 0, -1, false);
        else qi.addPiotlb(tag.id, tag.pasid, (pfn - (pfn % 2 ** mask)) * PAGE, 2 ** mask, leaf);
        if (qi.pending >= 16) unit.submit();
      };
    },
    expect: {
      kind: "stale-translation",
      cache: "iotlb",
      descriptor: "IOTLB invalidation (type 2)",
      message:
        /PASID-based IOTLB invalidation \(type 6\) G=page .*was aimed at it but missed: a page-selective PASID-based IOTLB invalidation never removes second-stage IOTLB entries: they need an IOTLB invalidation \(type 2\)/,
    },
  },
  {
    name: "skip-pasid-cache-on-replace",
    bug: "replacing the domain at a PASID tears the old entry down without the PASID-cache invalidation",
    fuzz: [SCALABLE],
    plant(h) {
      const drv = internals(h);
      const replacing = { on: false };
      const setDevPasid = drv.setDevPasid.bind(drv);
      drv.setDevPasid = (domain, dev, pasid, old) =>
        old === null
          ? setDevPasid(domain, dev, pasid, old)
          : during(replacing, setDevPasid)(domain, dev, pasid, old);
      wrapEach(queues(h), "addPasidCache", (orig) => (g, did, pasid) => {
        if (!replacing.on) orig(g, did, pasid);
      });
    },
    expect: {
      kind: "stale-translation",
      cache: "pasid-cache",
      descriptor: "PASID-cache invalidation (type 7)",
    },
  },
  {
    name: "pasid-cache-wrong-pasid",
    bug: "PASID-selective PASID-cache invalidations name the next PASID",
    fuzz: [SCALABLE],
    plant(h) {
      wrapEach(
        queues(h),
        "addPasidCache",
        (orig) => (g, did, pasid) => orig(g, did, g === PC_G_PASID ? pasid + 1 : pasid),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "pasid-cache",
      descriptor: "PASID-cache invalidation (type 7)",
      message:
        /PASID-cache invalidation \(type 7\) G=pasid DID=\d+ PASID=(\d+) at t=\d+ was aimed at it but missed: its PASID \1 is not the entry's \d+/,
    },
  },
  {
    name: "flush-before-clear",
    bug: "a PASID entry is torn down by flushing first and clearing it afterwards (P is not cleared first), so a DMA in between caches it again",
    fuzz: [{ mode: "scalable", race: true }],
    plant(h, devices) {
      for (const dev of devices) {
        const table = h.m.driver.deviceInfo(dev)?.pasidTable as PasidTable | null;
        // The entry stays present through the invalidations; `clear` zeroes it after them.
        if (table) table.clearPresent = () => {};
      }
    },
    expect: { kind: "stale-translation", cache: "pasid-cache", early: true },
  },
  {
    name: "devtlb-before-iotlb",
    bug: "the device-TLB invalidation is queued before the IOTLB invalidation, so the device refills its ATC from the stale IOTLB in between",
    fuzz: [{ mode: "scalable", race: true }],
    plant(h) {
      for (const qi of queues(h)) {
        const held: (() => void)[] = [];
        const piotlb = qi.addPiotlb.bind(qi);
        const iotlb = qi.addIotlb.bind(qi);
        const submit = qi.submit.bind(qi);
        qi.addPiotlb = (...a) => held.push(() => piotlb(...a));
        qi.addIotlb = (...a) => held.push(() => iotlb(...a));
        qi.submit = (fence, drain) => {
          for (const f of held.splice(0)) f();
          return submit(fence, drain);
        };
      }
    },
    expect: {
      kind: "stale-translation",
      early: true,
      cache: "device-tlb",
    },
  },
  {
    name: "legacy-skip-context-flush",
    bug: "legacy mode: tearing down a context entry skips the device-selective context-cache invalidation",
    fuzz: [LEGACY],
    plant(h) {
      const drv = internals(h);
      const clearing = { on: false };
      drv.legacyContextClear = during(clearing, drv.legacyContextClear.bind(drv));
      wrapEach(queues(h), "addContext", (orig) => (g, did, sid, fm) => {
        if (!clearing.on) orig(g, did, sid, fm);
      });
    },
    expect: {
      kind: "stale-translation",
      cache: "context-cache",
      descriptor: "context-cache invalidation (type 1)",
    },
  },
  {
    name: "legacy-keeps-ats",
    bug: "legacy mode: clearing a context entry leaves ATS on, so behind a pass-through entry (which refuses translation requests) every DMA of the device faults",
    fuzz: [LEGACY],
    plant(h) {
      const drv = internals(h);
      const clearing = { on: false };
      drv.legacyContextClear = during(clearing, drv.legacyContextClear.bind(drv));
      const disableAts = drv.disableAts.bind(drv);
      drv.disableAts = (info) => {
        if (!clearing.on) disableAts(info);
      };
    },
    expect: {
      kind: "spurious-fault",
      message: /ATS is enabled on d\d, but its configuration refuses translation requests/,
    },
  },
  {
    name: "teardown-wrong-pasid",
    bug: "detaching PASID p tears down the entry of PASID p + 1",
    fuzz: [SCALABLE],
    plant(h) {
      const drv = internals(h);
      const orig = drv.pasidTearDown.bind(drv);
      drv.pasidTearDown = (info, pasid, freeing) =>
        orig(info, pasid === 0 ? 0 : pasid + 1, freeing);
    },
    expect: { kind: "isolation", message: /but the PASID entry \d+ in memory of dmar0 is present/ },
  },
  {
    name: "attach-stale-table",
    bug: "a new PASID entry points at the table of the domain set up before it (a stale variable)",
    fuzz: [SCALABLE],
    scenario: true,
    plant(h) {
      const drv = internals(h);
      const orig = drv.pasidFields.bind(drv);
      let previous: number | undefined;
      drv.pasidFields = (unit, domain) => {
        const f = orig(unit, domain);
        const key = f.FLPTR !== undefined ? "FLPTR" : f.SLPTPTR !== undefined ? "SLPTPTR" : null;
        if (key !== null) {
          const root = f[key] as number;
          if (previous !== undefined) f[key] = previous;
          previous = root;
        }
        return f;
      };
    },
    expect: {
      kind: "isolation",
      message: /translates through 0x[0-9a-f]+, not the domain's table/,
    },
  },
  {
    name: "map-wrong-pa",
    bug: "a map of more than one page starts one page too far into the physical range",
    fuzz: [SCALABLE, LEGACY],
    plant(h) {
      plantMapOnePageOff(internals(h).pagingOps);
    },
    expect: { kind: "isolation", message: /which the tables map but domain#\d+.* does not/ },
  },
  {
    name: "forget-tag-unassign",
    bug: "detach never unassigns the domain's cache tags",
    fuzz: [SCALABLE, LEGACY],
    plant(h) {
      internals(h).tagsUnassign = () => {};
    },
    expect: { kind: "leak", message: /freed with \d+ cache tag\(s\) still assigned/ },
  },
  {
    name: "never-free-did",
    bug: "the last detach from a unit never gives the domain ID back",
    fuzz: [SCALABLE, LEGACY],
    plant(h) {
      for (const unit of h.m.driver.units) unit.freeDid = () => {};
    },
    expect: { kind: "leak", message: /domain ID \d+ of dmar0, but the ID is still allocated/ },
  },
  {
    name: "page-response-twice",
    bug: "every page group response is sent twice",
    fuzz: [SCALABLE],
    scenario: true,
    plant(h) {
      plantResponseTwice(h.m.driver);
    },
    expect: { kind: "page-request", message: /a group it had not asked/ },
  },
  {
    name: "drop-page-requests",
    bug: "page requests are read from the queue but never reported to IOPF",
    fuzz: [SCALABLE],
    scenario: true,
    plant(h) {
      internals(h).pageRequest = () => {};
    },
    expect: { kind: "page-request", message: /never answered/ },
  },
  {
    name: "cm-skip-sync-map",
    bug: "caching mode: maps of second-stage domains skip iotlb_sync_map, so a cached not-present entry stays",
    fuzz: [
      { mode: "legacy", cachingMode: true },
      { mode: "scalable", cachingMode: true },
    ],
    plant(h) {
      internals(h).iotlbSyncMap = () => 0;
    },
    expect: { kind: "spurious-fault", cache: "iotlb", descriptor: "IOTLB invalidation (type 2)" },
  },
  {
    name: "cm-skip-pasid-setup-flush",
    bug: "caching mode: a new PASID entry is written without the PASID-cache invalidation of the not-present entry the unit may hold",
    fuzz: [{ mode: "scalable", cachingMode: true }],
    plant(h) {
      const drv = internals(h);
      const setting = { on: false };
      drv.pasidSetup = during(setting, drv.pasidSetup.bind(drv));
      wrapEach(queues(h), "addPasidCache", (orig) => (g, did, pasid) => {
        if (!setting.on) orig(g, did, pasid);
      });
    },
    expect: { kind: "spurious-fault", cache: "pasid-cache" },
  },
  {
    name: "misread-mamv",
    bug: "the driver takes CAP.MAMV as 63, so a whole-domain flush goes out page-selective with an AM the unit refuses",
    fuzz: [{ mode: "legacy", lazy: true }],
    plant(h) {
      for (const unit of h.m.driver.units) (unit.caps as { MAMV: number }).MAMV = 63;
    },
    expect: { kind: "invalidation-error", message: /refused \d+ invalidation descriptor/ },
  },
  {
    name: "fq-flush-skips-devtlb",
    bug: "the flush queue's whole-domain flush skips the device-TLB tags",
    fuzz: [{ mode: "scalable", lazy: true }],
    plant(h) {
      const drv = h.m.driver as VtdDriver;
      const orig = drv.flushAll.bind(drv);
      drv.flushAll = (tag: CacheTag) => {
        if (tag.dev === null) orig(tag);
      };
    },
    expect: { kind: "stale-translation", cache: "device-tlb" },
  },
];

/** First-stage invalidations the equivalent mutant sent as type 2 (it must have run to prove anything). */
let iotlbForFirstStage = 0;

/**
 * Bugs that are no bugs by the spec: the oracle must stay silent (they also show the oracle does
 * not simply flag any change to the driver).
 */
const EQUIVALENT: readonly VtdMutant[] = [
  {
    name: "iotlb-for-first-stage",
    bug: "first-stage domains are invalidated with IOTLB invalidations (type 2) instead of PASID-based ones: a page-selective type 2 removes every first-stage entry of the domain ID whatever its address (VT-d 6.5.2.3), so it only over-invalidates",
    fuzz: [SCALABLE],
    plant(h) {
      const drv = internals(h);
      const orig = drv.stageIotlb.bind(drv);
      drv.stageIotlb = (qi, unit, domain, tag, pfn, mask, leaf) => {
        if (!domain.useFirstLevel || mask > unit.caps.MAMV) {
          orig(qi, unit, domain, tag, pfn, mask, leaf);
          return;
        }
        qi.addIotlb(IOTLB_G_PAGE, tag.id, (pfn - (pfn % 2 ** mask)) * PAGE, mask, false);
        iotlbForFirstStage++;
        if (qi.pending >= 16) unit.submit();
      };
    },
    expect: { kind: "stale-translation" },
  },
];

// --- Running them ----------------------------------------------------------------------------------

const table = CatchTable.printedAfterAll();

describe("planted driver bugs are caught by the oracle with a diagnosis that points at them", () => {
  it.each(MUTANTS.filter((m) => m.fuzz !== undefined).map((m) => [m.name, m] as const))(
    "%s (fuzz)",
    // The configurations in order: the first that catches the bug counts.
    (_name, m) => table.expectCaught(m, fuzzHunt(VTD, m, m.fuzz ?? [])),
  );

  itCatchesInScenario(VTD, MUTANTS, table);

  itListsAtLeast(MUTANTS, 15);
});

describe("bugs the spec makes harmless raise nothing", () => {
  it.each(EQUIVALENT.map((m) => [m.name, m] as const))("%s", (_name, m) => {
    iotlbForFirstStage = 0;
    expectHarmless(VTD, m);
    expect(iotlbForFirstStage).toBeGreaterThan(20);
  });
});
