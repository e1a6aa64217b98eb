// Mutation testing of the oracle's SVA checks: realistic bugs of the SVA paths (the VT-d and
// SMMUv3 drivers' SVA domains and notifiers, the generic SVA layer, the process address space),
// each planted in one machine by wrapping methods of its driver, domains or processes (sources
// never touched), must be caught by the fuzzer's SVA operations or the sva scenario with a
// diagnosis that points at the bug. Harmless variants must stay silent. MUTANT_TABLE=1 prints the
// catches.

import type { ArmSmmuSvaDomain } from "@iommu-sim/arm-smmu/driver";
import type { DeviceDomainInfo, DmarSvaDomain, VtdQi } from "@iommu-sim/intel-vtd/driver";
import {
  type Device,
  IOMMU_FAULT_PERM_WRITE,
  IOMMU_PAGE_RESP_SUCCESS,
  type IommuDomain,
  type IommuMm,
  type IopfGroup,
  iopfGroupResponse,
} from "@iommu-sim/iommu-core";
import { iommuSvaHandleMm, type Mm, mmPasidDrop } from "@iommu-sim/sva";
import { describe, expect, it } from "vitest";
import type { Harness } from "../src/machine/harness.js";
import type { SmmuHarness } from "../src/machine/smmu-harness.js";
import type { SvaProcess } from "../src/machine/sva-world.js";
import type { VtdHarness } from "../src/machine/vtd-harness.js";
import {
  CatchTable,
  during,
  type Expected,
  expectHarmless,
  fuzzHunt,
  itCatchesInScenario,
  SMMU_SVA,
  type SmmuFuzzConfig,
  type SmmuMutant,
  VTD_SVA,
  type VtdFuzzConfig,
  type VtdMutant,
  wrapEach,
} from "./mutant-kit.js";

const PAGE = 4096;

// --- Where the bugs go -----------------------------------------------------------------------------

/** What IntelSvm keeps private (TypeScript `private` only: plain properties). */
interface SvmInternals {
  invalidateSecondaryTlbs(domain: DmarSvaDomain, start: number, end: number): void;
  mmRelease(domain: DmarSvaDomain): void;
  setDevPasid(
    domain: DmarSvaDomain,
    dev: Device,
    pasid: number,
    old: IommuDomain | null,
  ): 0 | string;
  addDevPasid(domain: DmarSvaDomain, info: DeviceDomainInfo, pasid: number): void;
  domainFree(domain: DmarSvaDomain): void;
  readonly drv: {
    flushRange(domain: DmarSvaDomain, start: number, end: number, skipDevtlb: boolean): void;
    flushAll(domain: DmarSvaDomain, skipDevtlb: boolean): void;
    pasidTearDown(info: DeviceDomainInfo, pasid: number, faultIgnore: boolean): void;
    deviceInfo(dev: Device): DeviceDomainInfo | null;
  };
}

function svm(h: VtdHarness): SvmInternals {
  return h.m.driver.svm as unknown as SvmInternals;
}

function vtdQueues(h: VtdHarness): VtdQi[] {
  return h.m.driver.units.map((u) => u.qi).filter((q): q is VtdQi => q !== null);
}

/**
 * `flag.on` while the VT-d SVA notifier flushes (arch_invalidate_secondary_tlbs); `current` is
 * the domain it flushes.
 */
function vtdNotifying(h: VtdHarness): { on: boolean; current: DmarSvaDomain | null } {
  const s = svm(h);
  const flag = { on: false, current: null as DmarSvaDomain | null };
  const orig = s.invalidateSecondaryTlbs.bind(s);
  s.invalidateSecondaryTlbs = (domain, start, end) => {
    flag.current = domain;
    during(flag, orig)(domain, start, end);
    flag.current = null;
  };
  return flag;
}

/** Call `fn` with every SVA domain the driver of `h` allocates, before the core sees it. */
function onSvaDomain(h: Harness, fn: (d: IommuDomain) => void): void {
  const drv = (h as VtdHarness | SmmuHarness).m.driver as unknown as {
    domainAllocSva(dev: Device, mm: IommuMm): IommuDomain | string;
  };
  const orig = drv.domainAllocSva.bind(drv);
  drv.domainAllocSva = (dev, mm) => {
    const d = orig(dev, mm);
    if (typeof d !== "string") fn(d);
    return d;
  };
}

/** A domain's notifier ops, replaceable per domain (the driver's are shared by every domain). */
interface NotifierOps {
  archInvalidateSecondaryTlbs?(sub: unknown, mm: IommuMm, start: number, end: number): void;
  release?(sub: unknown, mm: IommuMm): void;
  freeNotifier?(sub: unknown): void;
}

/** Replace notifier op `name` of every SMMU SVA domain by what `wrap` makes of the driver's. */
function wrapSmmuNotifier<K extends keyof NotifierOps>(
  h: SmmuHarness,
  name: K,
  wrap: (orig: NonNullable<NotifierOps[K]>, domain: ArmSmmuSvaDomain) => NotifierOps[K],
): void {
  onSvaDomain(h, (d) => {
    const domain = d as ArmSmmuSvaDomain;
    const n = domain.mmuNotifier as unknown as { ops: NotifierOps };
    const orig = n.ops[name] as NonNullable<NotifierOps[K]>;
    n.ops = { ...n.ops, [name]: wrap(orig, domain) };
  });
}

/** `flag.on` while an SMMU SVA notifier flushes. */
function smmuNotifying(h: SmmuHarness): { on: boolean } {
  const flag = { on: false };
  wrapSmmuNotifier(h, "archInvalidateSecondaryTlbs", (orig) => during(flag, orig));
  return flag;
}

/**
 * Replace the IOPF handler of every SVA domain of `h` by one that queues `work` on the device's
 * fault queue (the SVA layer sets the handler once the driver returned the domain).
 */
function plantSvaFaultWork(h: Harness, work: (group: IopfGroup) => void): void {
  onSvaDomain(h, (d) => {
    let handler = d.iopfHandler;
    Object.defineProperty(d, "iopfHandler", {
      configurable: true,
      get: () => handler,
      set: (f: IommuDomain["iopfHandler"]) => {
        handler =
          f === null
            ? null
            : (group) => {
                const queue = group.dev.iommu?.faultParam?.queue ?? null;
                if (queue === null) return "ENODEV";
                queue.queueWork(group, work);
                return 0;
              };
      },
    });
  });
}

/** Call `fn` with every process `h`'s world creates. */
function onProcess(h: Harness, fn: (p: SvaProcess) => void): void {
  const w = h.sva;
  const orig = w.processCreate.bind(w);
  w.processCreate = (...a) => {
    const p = orig(...a);
    if (typeof p !== "string") fn(p);
    return p;
  };
}

/** What Mm keeps private that the mutants wrap. */
interface MmInternals {
  flushTlb(start: number, end: number, op: string): void;
  munmap(addr: number, length: number): 0 | "EINVAL";
}

/** The drivers' SVA domain free as Linux writes it: no check that nothing is attached. */
function freeWithoutCheck(h: Harness): void {
  if (h.arch === "vtd") {
    const s = svm(h as VtdHarness);
    s.domainFree = (domain) => {
      domain.notifier.mm?.mmuNotifierPut(domain.notifier);
    };
    return;
  }
  const drv = (h as SmmuHarness).m.driver;
  onSvaDomain(h, (d) => {
    const domain = d as ArmSmmuSvaDomain;
    domain.ops = {
      ...domain.ops,
      free: () => {
        drv.tlbInvAsid(domain.smmu, domain.asid);
        domain.mmuNotifier.mm?.mmuNotifierPut(domain.mmuNotifier);
      },
    };
  });
}

// --- The SVA layer and the process address space (planted on both architectures) ------------------

/** A bug of the SVA layer or the process address space: the same on either architecture. */
interface SvaLayerMutant {
  readonly name: string;
  readonly bug: string;
  readonly scenario?: boolean;
  /** False: the sva scenario alone hunts it (it catches it at once; the fuzzer takes seeds). */
  readonly fuzz?: false;
  plant(h: Harness): void;
  readonly expect: Expected;
}

const SVA_LAYER_MUTANTS: readonly SvaLayerMutant[] = [
  {
    name: "shared-domain-users-not-counted",
    bug: "a bind that reuses the mm's SVA domain for another device forgets domain->users++, so the first unbind frees the domain under the other device (the drivers' free as Linux writes it, without the model's attached check)",
    plant(h) {
      onSvaDomain(h, (d) => {
        let users = d.users;
        Object.defineProperty(d, "users", {
          configurable: true,
          get: () => users,
          set: (v: number) => {
            if (v < users || users === 0) users = v;
          },
        });
      });
      freeWithoutCheck(h);
    },
    // The entries' check: an SVA domain still attached somewhere must not have been freed.
    expect: {
      kind: "isolation",
      message:
        /PASID \d+: the SVA domain of \w+ is attached there, but it was freed: its (ASID \d+ went back to the allocator and its )?mmu notifier was put/,
    },
  },
  {
    name: "iopf-success-without-mapping",
    bug: "the SVA fault handler answers every page request Success without faulting the page in",
    plant(h) {
      plantSvaFaultWork(h, (group) => iopfGroupResponse(group, IOMMU_PAGE_RESP_SUCCESS));
    },
    // The device says why the work stopped: its request was answered Success, yet no access.
    expect: {
      kind: "page-request",
      message:
        /for \w+'s work: its page request was answered Success, but the retried translation still refused/,
    },
  },
  {
    name: "iopf-write-as-read",
    bug: "the SVA fault handler drops the write permission of a request: the VMA check and the fault are a read's, so a write to a read-only page is answered Success with the page mapped read-only",
    scenario: true,
    fuzz: false,
    plant(h) {
      plantSvaFaultWork(h, (group) => {
        const mm = (group.domain?.mm as Mm | null | undefined) ?? null;
        let status = IOMMU_PAGE_RESP_SUCCESS;
        for (const f of group.faults) {
          if (status !== IOMMU_PAGE_RESP_SUCCESS || mm === null) break;
          status = iommuSvaHandleMm(
            { ...f.fault, perm: f.fault.perm & ~IOMMU_FAULT_PERM_WRITE },
            mm,
          );
        }
        iopfGroupResponse(group, status);
      });
    },
    expect: {
      kind: "page-request",
      message:
        /write at 0x[0-9a-f]+ for \w+'s work: its page request was answered Success, but the retried translation still refused the write/,
    },
  },
  {
    name: "pasid-freed-at-exit",
    bug: "the mm's PASID is freed by the last mmput (exit) instead of the last mmdrop, while its SVA domains still hold the mm",
    plant(h) {
      onProcess(h, (p) => {
        const mm = p.mm;
        const put = mm.mmput.bind(mm);
        mm.mmput = () => {
          put();
          if (mm.users === 0) mmPasidDrop(mm);
        };
      });
    },
    // Not "freed while still attached" (the device's bond is a consequence): the mm lives on.
    expect: {
      kind: "id-reuse",
      space: "pasid",
      message: /freed while the mm of \w+ still lives/,
    },
  },
  {
    name: "charge-never-taken",
    bug: "a bind never charges the mm's PASID to the process's user (the charge returns success without counting), so a user holds more PASIDs than its limit",
    scenario: true,
    plant(h) {
      const w = h.sva;
      const binding = { on: false };
      w.bind = during(binding, w.bind.bind(w));
      const space = h.m.subsys.pasids;
      const charge = space.charge.bind(space);
      space.charge = (pasid, node) => (binding.on ? 0 : charge(pasid, node));
    },
    // Every bind that returns a bond must leave the mm's PASID charged to the process's user.
    expect: {
      kind: "pasid-charge",
      message:
        /bind of \w+ to \w+ returned PASID \d+, but the PASID charge is off: PASID \d+ counts against nobody, not \/\w+/,
    },
  },
  {
    name: "munmap-frees-before-flush",
    bug: "munmap frees the frames before the TLB flush (the notifiers' arch_invalidate_secondary_tlbs), so for a while the IOMMUs translate to freed memory",
    plant(h) {
      onProcess(h, (p) => {
        const mm = p.mm as unknown as MmInternals;
        let pending: (() => void) | null = null;
        const flush = mm.flushTlb.bind(mm);
        mm.flushTlb = (start, end, op) => {
          if (op === "munmap") pending = () => flush(start, end, op);
          else flush(start, end, op);
        };
        const munmap = mm.munmap.bind(mm);
        mm.munmap = (addr, length) => {
          const ret = munmap(addr, length);
          const f = pending;
          pending = null;
          f?.();
          return ret;
        };
      });
    },
    // A frame freed while a cache of the process's contexts still reached it, flushed only later.
    expect: {
      kind: "stale-translation",
      message:
        /\(\w+'s page 0x[0-9a-f]+\) was freed at t=\d+ during munmap\(\w+, .* still translated to it; the invalidation came only after the free/,
    },
  },
  {
    name: "mprotect-without-flush",
    bug: "mprotect downgrades the entries without the TLB flush, so the notifiers never hear of it",
    plant(h) {
      onProcess(h, (p) => {
        const mm = p.mm as unknown as MmInternals;
        const flush = mm.flushTlb.bind(mm);
        mm.flushTlb = (start, end, op) => {
          if (op !== "mprotect") flush(start, end, op);
        };
      });
    },
    expect: { kind: "stale-translation", message: /removed by mprotect\(\w+, / },
  },
];

const SCALABLE: VtdFuzzConfig = { mode: "scalable" };
const PLAIN: SmmuFuzzConfig = {};

// --- VT-d ------------------------------------------------------------------------------------------

const VTD_MUTANTS: readonly VtdMutant[] = [
  ...SVA_LAYER_MUTANTS.map((m) => ({
    ...m,
    name: `vtd-${m.name}`,
    fuzz: m.fuzz === false ? undefined : [SCALABLE],
  })),
  {
    name: "vtd-notifier-rid-pasid",
    bug: "the notifier's PASID-based IOTLB invalidations carry RID_PASID (0) instead of the mm's PASID",
    fuzz: [SCALABLE],
    plant(h) {
      const n = vtdNotifying(h);
      wrapEach(
        vtdQueues(h),
        "addPiotlb",
        (orig) => (did, pasid, addr, pages, ih) => orig(did, n.on ? 0 : pasid, addr, pages, ih),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "iotlb",
      descriptor: "PASID-based IOTLB invalidation (type 6)",
      // The notifier's descriptor is named with the PASID it carried.
      message:
        /removed by (munmap|mprotect)\(\w+, .*PASID-based IOTLB invalidation \(type 6\) G=page DID=1 PASID=0 .*was aimed at it but missed: its PASID 0 is not the entry's [1-9]\d*; .*SVA domain's mmu notifier/,
    },
  },
  {
    name: "vtd-notifier-paging-did",
    bug: "the notifier's IOTLB invalidations carry the DID of the device's RID domain instead of FLPT_DEFAULT_DID",
    fuzz: [SCALABLE],
    plant(h) {
      const n = vtdNotifying(h);
      const drv = svm(h).drv;
      wrapEach(vtdQueues(h), "addPiotlb", (orig) => (did, pasid, addr, pages, ih) => {
        const dp = n.on ? n.current?.devPasids.find((x) => x.pasid === pasid) : undefined;
        const info = dp === undefined ? null : drv.deviceInfo(dp.dev);
        const paging = info?.domain?.didOn(info.unit);
        orig(paging ?? did, pasid, addr, pages, ih);
      });
    },
    expect: {
      kind: "stale-translation",
      cache: "iotlb",
      descriptor: "PASID-based IOTLB invalidation (type 6)",
      message:
        /missing: PASID-based IOTLB invalidation \(type 6\) G=page DID=1 .*; PASID-based IOTLB invalidation \(type 6\) G=page DID=([02-9]|\d\d+) .*was aimed at it but missed: its DID \d+ is not the entry's 1;/,
    },
  },
  {
    name: "vtd-notifier-last-page",
    bug: "the notifier takes `end` for the last page's address: it flushes [start, end - PAGE - 1], one page short (nothing for a single page)",
    fuzz: [SCALABLE],
    scenario: true,
    plant(h) {
      const s = svm(h);
      s.invalidateSecondaryTlbs = (domain, start, end) => {
        if (end - PAGE > start) s.drv.flushRange(domain, start, end - PAGE - 1, false);
      };
    },
    // The entry of the range's last page, which the block the flush covers left out.
    expect: {
      kind: "stale-translation",
      message:
        /removed by (munmap|mprotect)\(\w+, 0x[0-9a-f]+, 0x[2-9a-f]000.*was aimed at it but missed: its range \[0x[0-9a-f]+, 0x[0-9a-f]+\) \([^)]+\) ends before the entry at 0x[0-9a-f]+/,
    },
  },
  {
    name: "vtd-notifier-leaf-only",
    bug: "the notifier's invalidations set IH (leaf-only) although munmap frees page-table pages, so the paging-structure caches keep pointing at them",
    fuzz: [SCALABLE],
    plant(h) {
      const n = vtdNotifying(h);
      wrapEach(
        vtdQueues(h),
        "addPiotlb",
        (orig) => (did, pasid, addr, pages, ih) => orig(did, pasid, addr, pages, ih || n.on),
      );
    },
    // A walk through the stale entry reads a freed (zeroed) table: the page faults although the
    // process maps it, or, once the frame is reused, reaches what it holds then.
    expect: {
      kind: ["spurious-fault", "stale-translation"],
      cache: "paging-structure-cache",
      message:
        /missing: PASID-based IOTLB invalidation \(type 6\) .*IH=0; PASID-based IOTLB invalidation \(type 6\) G=page .*IH=1 .*was aimed at it but missed: IH = 1 says only leaf entries changed/,
    },
  },
  {
    name: "vtd-notifier-devtlb-rid-pasid",
    bug: "the notifier's PASID-based device-TLB invalidations carry RID_PASID (0) instead of the mm's PASID",
    fuzz: [SCALABLE],
    plant(h) {
      const n = vtdNotifying(h);
      wrapEach(
        vtdQueues(h),
        "addPasidDevtlb",
        (orig) => (sid, pfsid, pasid, qdep, addr, order) =>
          orig(sid, pfsid, n.on ? 0 : pasid, qdep, addr, order),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "device-tlb",
      descriptor: "PASID-based device-TLB invalidation (type 8)",
      message:
        /removed by (munmap|mprotect)\(\w+, .*PASID-based device-TLB invalidation \(type 8\) SID=0x[0-9a-f]+ PASID=0 .*was aimed at it but missed: its PASID 0 is not the entry's [1-9]\d*/,
    },
  },
  {
    name: "vtd-release-first-device-only",
    bug: "the mm's release tears down the PASID entry of the domain's first device only",
    fuzz: [SCALABLE],
    plant(h) {
      const s = svm(h);
      s.mmRelease = (domain) => {
        const dp = domain.devPasids[0];
        const info = dp === undefined ? null : s.drv.deviceInfo(dp.dev);
        if (dp !== undefined && info !== null) s.drv.pasidTearDown(info, dp.pasid, true);
      };
    },
    expect: {
      kind: "isolation",
      message:
        /PASID \d+: the SVA domain of \w+ is attached there, but the PASID entry \d+ in memory of \w+ is still present \(FLPTR 0x[0-9a-f]+\) after \w+ exited/,
    },
  },
  {
    name: "vtd-release-skips-devtlb",
    bug: "the mm's release tears the PASID entries down without the device-TLB invalidation",
    fuzz: [SCALABLE],
    plant(h) {
      const s = svm(h);
      const releasing = { on: false };
      s.mmRelease = during(releasing, s.mmRelease.bind(s));
      wrapEach(vtdQueues(h), "addPasidDevtlb", (orig) => (...a) => {
        if (!releasing.on) orig(...a);
      });
    },
    expect: {
      kind: "stale-translation",
      cache: "device-tlb",
      message: /\(removed by exit\(\w+\) at t=\d+\).*the SVA domain's mmu notifier release/,
    },
  },
  {
    name: "vtd-second-device-no-entry",
    bug: "set_dev_pasid of an SVA domain already attached elsewhere records the device and its cache tags but writes no PASID entry (it takes the domain as set up)",
    fuzz: [SCALABLE],
    plant(h) {
      const s = svm(h);
      const orig = s.setDevPasid.bind(s);
      s.setDevPasid = (domain, dev, pasid, old) => {
        const info = s.drv.deviceInfo(dev);
        if (domain.devPasids.length === 0 || old !== null || info === null)
          return orig(domain, dev, pasid, old);
        s.addDevPasid(domain, info, pasid);
        info.pasids.set(pasid, domain);
        return 0;
      };
    },
    expect: {
      kind: "spurious-fault",
      message:
        /PASID \d+: the SVA domain of \w+ is attached there, but the PASID entry \d+ in memory of \w+ is not present/,
    },
  },
];

// --- SMMUv3 ----------------------------------------------------------------------------------------

const SMMU_MUTANTS: readonly SmmuMutant[] = [
  ...SVA_LAYER_MUTANTS.map((m) => ({
    ...m,
    name: `smmu-${m.name}`,
    fuzz: m.fuzz === false ? undefined : [PLAIN],
  })),
  {
    name: "smmu-notifier-asid-0",
    bug: "the notifier's TLB invalidations carry ASID 0 instead of the SVA domain's own ASID",
    fuzz: [PLAIN],
    plant(h) {
      const n = smmuNotifying(h);
      for (const { smmu } of h.m.smmus) {
        const q = smmu.cmdq;
        const va = q.tlbiVa.bind(q);
        const asid = q.tlbiAsid.bind(q);
        q.tlbiVa = (op, id, ...rest) => va(op, n.on ? 0 : id, ...rest);
        q.tlbiAsid = (id, el2) => asid(n.on ? 0 : id, el2);
      }
    },
    expect: {
      kind: "stale-translation",
      cache: "tlb",
      message: /was aimed at it but missed: its ASID 0 is not the entry's \d+/,
    },
  },
  {
    name: "smmu-notifier-atc-wrong-ssid",
    bug: "the notifier's ATC invalidations name the next SubstreamID",
    fuzz: [PLAIN],
    plant(h) {
      const n = smmuNotifying(h);
      for (const { smmu } of h.m.smmus) {
        const q = smmu.cmdq;
        const orig = q.atcInv.bind(q);
        q.atcInv = (sid, ssid, addr, size) => orig(sid, n.on ? ssid + 1 : ssid, addr, size);
      }
    },
    expect: { kind: "stale-translation", cache: "atc", descriptor: "CMD_ATC_INV" },
  },
  {
    name: "smmu-notifier-range-rounded-down",
    bug: "the notifier rounds the range's size down to a power of two before the TLBI_NH_VA range commands",
    fuzz: [PLAIN],
    plant(h) {
      const drv = h.m.driver;
      const n = smmuNotifying(h);
      const orig = drv.tlbInvRangeAsid.bind(drv);
      drv.tlbInvRangeAsid = (domain, iova, size, granule, leaf) =>
        orig(domain, iova, n.on ? 2 ** Math.floor(Math.log2(size)) : size, granule, leaf);
    },
    expect: { kind: "stale-translation", cache: "tlb", descriptor: "CMD_TLBI_NH_VA" },
  },
  {
    name: "smmu-release-without-tlbi",
    bug: "the mm's release rewrites the CDs (EPD0) but never sends TLBI_NH_ASID",
    fuzz: [PLAIN],
    plant(h) {
      const drv = h.m.driver;
      const releasing = { on: false };
      wrapSmmuNotifier(h, "release", (orig) => during(releasing, orig));
      const orig = drv.tlbInvAsid.bind(drv);
      drv.tlbInvAsid = (smmu, asid) => {
        if (!releasing.on) orig(smmu, asid);
      };
    },
    expect: {
      kind: "stale-translation",
      cache: "tlb",
      message: /\(removed by exit\(\w+\) at t=\d+\).*the SVA domain's mmu notifier release/,
    },
  },
  {
    name: "smmu-second-master-no-cd",
    bug: "set_dev_pasid of an SVA domain already attached to another master returns success without writing the CD (it takes the domain as set up)",
    fuzz: [PLAIN],
    plant(h) {
      onSvaDomain(h, (d) => {
        const domain = d as ArmSmmuSvaDomain;
        const set = domain.ops.setDevPasid;
        if (set === undefined) throw new Error("SVA domain without setDevPasid");
        domain.ops = {
          ...domain.ops,
          setDevPasid: (dom, dev, pasid, old) =>
            domain.devices.length > 0 && old === null ? 0 : set(dom, dev, pasid, old),
        };
      });
    },
    expect: {
      kind: "spurious-fault",
      message:
        /PASID \d+: the SVA domain of \w+ is attached there, but the STE\/CD in memory of \w+ aborts the requests/,
    },
  },
  {
    name: "smmu-free-asid-before-tlbi",
    bug: "freeing an SVA domain gives its ASID back before the TLBI_NH_ASID",
    fuzz: [PLAIN],
    plant(h) {
      const drv = h.m.driver;
      onSvaDomain(h, (d) => {
        const domain = d as ArmSmmuSvaDomain;
        domain.ops = {
          ...domain.ops,
          free: () => {
            const n = domain.mmuNotifier;
            n.mm?.mmuNotifierPut(n);
            drv.tlbInvAsid(domain.smmu, domain.asid);
          },
        };
      });
    },
    expect: { kind: "id-reuse", space: "asid", message: /ASID \d+ freed while/ },
  },
];

// --- Harmless variants -----------------------------------------------------------------------------

/** How often each harmless variant did its thing (it must have run to prove anything). */
const ran = new Map<string, number>();

function count(name: string): void {
  ran.set(name, (ran.get(name) ?? 0) + 1);
}

/** Over-invalidations the oracle must not flag (they also show it does not flag any change). */
const VTD_HARMLESS: readonly VtdMutant[] = [
  {
    name: "vtd-notifier-devtlb-without-pasid",
    bug: "the notifier's device-TLB invalidations go out without PASID (type 3): an ATS Invalidate Request without a PASID prefix removes the range's entries of every PASID (PCIe ATS), so it only over-invalidates",
    fuzz: [SCALABLE],
    plant(h) {
      const n = vtdNotifying(h);
      for (const qi of vtdQueues(h)) {
        const orig = qi.addPasidDevtlb.bind(qi);
        qi.addPasidDevtlb = (sid, pfsid, pasid, qdep, addr, order) => {
          if (!n.on) return orig(sid, pfsid, pasid, qdep, addr, order);
          count("vtd-notifier-devtlb-without-pasid");
          qi.addDevtlb(sid, pfsid, qdep, addr, order);
        };
      }
    },
    expect: { kind: "stale-translation" },
  },
  {
    name: "vtd-notifier-whole-pasid",
    bug: "the notifier flushes the domain's whole PASID (PASID-selective IOTLB, whole device-TLB) for any range",
    fuzz: [SCALABLE],
    plant(h) {
      const s = svm(h);
      s.invalidateSecondaryTlbs = (domain) => {
        count("vtd-notifier-whole-pasid");
        s.drv.flushAll(domain, false);
      };
    },
    expect: { kind: "stale-translation" },
  },
  {
    name: "vtd-notifier-wider-range",
    bug: "the notifier flushes a page more on each side of the range",
    fuzz: [SCALABLE],
    plant(h) {
      const s = svm(h);
      const orig = s.invalidateSecondaryTlbs.bind(s);
      s.invalidateSecondaryTlbs = (domain, start, end) => {
        if (end - start > 2 ** 40) return orig(domain, start, end);
        count("vtd-notifier-wider-range");
        s.drv.flushRange(domain, Math.max(0, start - PAGE), end + PAGE - 1, false);
      };
    },
    expect: { kind: "stale-translation" },
  },
];

const SMMU_HARMLESS: readonly SmmuMutant[] = [
  {
    name: "smmu-notifier-extra-atc-inv",
    bug: "after the range, the notifier invalidates every ATC of the domain once more, whole",
    fuzz: [PLAIN],
    plant(h) {
      const drv = h.m.driver;
      wrapSmmuNotifier(
        h,
        "archInvalidateSecondaryTlbs",
        (orig, domain) => (sub, mm, start, end) => {
          orig(sub, mm, start, end);
          count("smmu-notifier-extra-atc-inv");
          drv.atcInvDomain(domain, 0, 0);
        },
      );
    },
    expect: { kind: "stale-translation" },
  },
  {
    name: "smmu-notifier-tlbi-asid",
    bug: "the notifier drops the whole ASID (TLBI_NH_ASID) instead of the range's TLBI_NH_VA commands",
    fuzz: [PLAIN],
    plant(h) {
      const drv = h.m.driver;
      const n = smmuNotifying(h);
      const orig = drv.tlbInvRangeAsid.bind(drv);
      drv.tlbInvRangeAsid = (domain, iova, size, granule, leaf) => {
        if (!n.on) return orig(domain, iova, size, granule, leaf);
        count("smmu-notifier-tlbi-asid");
        drv.tlbInvAsid(domain.smmu, domain.asid);
      };
    },
    expect: { kind: "stale-translation" },
  },
];

// --- Running them ----------------------------------------------------------------------------------

const table = CatchTable.printedAfterAll();

describe("planted SVA bugs on VT-d are caught with a diagnosis that points at them", () => {
  it.each(VTD_MUTANTS.filter((m) => m.fuzz !== undefined).map((m) => [m.name, m] as const))(
    "%s (fuzz)",
    (_name, m) => table.expectCaught(m, fuzzHunt(VTD_SVA, m, m.fuzz ?? [])),
  );
  itCatchesInScenario(VTD_SVA, VTD_MUTANTS, table);
});

describe("planted SVA bugs on SMMUv3 are caught with a diagnosis that points at them", () => {
  it.each(SMMU_MUTANTS.filter((m) => m.fuzz !== undefined).map((m) => [m.name, m] as const))(
    "%s (fuzz)",
    (_name, m) => table.expectCaught(m, fuzzHunt(SMMU_SVA, m, m.fuzz ?? [])),
  );
  itCatchesInScenario(SMMU_SVA, SMMU_MUTANTS, table);
});

describe("the SVA bug tables", () => {
  it("have at least 14 bugs over both architectures, each under its own name", () => {
    const names = [...VTD_MUTANTS, ...SMMU_MUTANTS].map((m) => m.name);
    expect(names.length).toBeGreaterThanOrEqual(14);
    expect(new Set(names).size).toBe(names.length);
    // Every bug of the SVA layer is planted on both.
    for (const m of SVA_LAYER_MUTANTS) {
      expect(names).toContain(`vtd-${m.name}`);
      expect(names).toContain(`smmu-${m.name}`);
    }
  });
});

describe("harmless SVA variants raise nothing", () => {
  it.each(VTD_HARMLESS.map((m) => [m.name, m] as const))("%s (fuzz vtd, seeds 1..3)", (_n, m) => {
    ran.delete(m.name);
    expectHarmless(VTD_SVA, m, 3);
    expect(ran.get(m.name) ?? 0).toBeGreaterThan(10);
  });
  it.each(SMMU_HARMLESS.map((m) => [m.name, m] as const))("%s (fuzz smmu, seeds 1..3)", (_n, m) => {
    ran.delete(m.name);
    expectHarmless(SMMU_SVA, m, 3);
    expect(ran.get(m.name) ?? 0).toBeGreaterThan(10);
  });
});
