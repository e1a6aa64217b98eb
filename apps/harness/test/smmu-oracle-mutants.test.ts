// Mutation testing of the SMMUv3 oracle: realistic driver bugs, each planted in one SmmuV3Driver /
// SmmuCmdq instance by wrapping its methods (the driver's source is never touched), must be caught
// by the fuzzer (with and without devices racing the command queue) or the default scenario, with
// a diagnosis that points at the bug. Bugs the spec makes harmless are listed apart and must stay
// silent. MUTANT_TABLE=1 prints how fast each was caught and what the oracle said.

import {
  ARM_SMMU_DOMAIN_S1,
  type ArmSmmuDomain,
  type ArmSmmuMaster,
  CD_USED_OPS,
  entryQwordDiff,
  type SmmuCmdq,
  type SmmuV3Driver,
  STE_USED_OPS,
  writeEntry,
} from "@iommu-sim/arm-smmu/driver";
import { ATC_INV_SIZE_ALL, CMDQ_OP } from "@iommu-sim/arm-smmu/format";
import type { LpaePgtable } from "@iommu-sim/arm-smmu/pgtable";
import type { Device, IommuDomain, IommuDomainOps } from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import type { SmmuHarness } from "../src/machine/smmu-harness.js";
import {
  CatchTable,
  during,
  expectHarmless,
  fuzzHunt,
  itCatchesInScenario,
  itListsAtLeast,
  plantMapOnePageOff,
  plantResponseTwice,
  SMMU,
  type SmmuFuzzConfig,
  type SmmuMutant,
  wrapEach,
} from "./mutant-kit.js";

/** The driver's private steps the mutants wrap (TypeScript `private` only: plain properties). */
interface DriverInternals {
  readonly pagingOps: IommuDomainOps;
  readonly mem: SmmuHarness["m"]["mem"];
  installSte(master: ArmSmmuMaster, target: Uint32Array): void;
  writeCd(master: ArmSmmuMaster, ssid: number, pa: number, target: Uint32Array): void;
  syncCd(master: ArmSmmuMaster, ssid: number, leaf: boolean): void;
  makeS1CdFor(master: ArmSmmuMaster, domain: ArmSmmuDomain, out: Uint32Array): void;
  attachPrepare(
    master: ArmSmmuMaster,
    domain: ArmSmmuDomain | null,
    ssid: number,
    atsWanted: boolean,
    nestedAtsFlush?: boolean,
  ): { ats: boolean };
  removeMasterDomain(master: ArmSmmuMaster, old: IommuDomain | null, ssid: number): void;
  enableAts(master: ArmSmmuMaster): void;
  atcInvMaster(master: ArmSmmuMaster, ssid: number): void;
  atcInvDomain(domain: ArmSmmuDomain, iova: number, size: number): void;
  blockingSetDevPasid(dev: Device, pasid: number, old: IommuDomain | null): 0 | string;
  domainFreePaging(domain: ArmSmmuDomain): void;
  stageTlbiRange(
    smmu: ArmSmmuDomain["smmu"],
    domain: ArmSmmuDomain,
    iova: number,
    size: number,
    granule: number,
    leaf: boolean,
  ): void;
}

function driver(h: SmmuHarness): SmmuV3Driver {
  return h.m.driver;
}

function internals(h: SmmuHarness): DriverInternals {
  return h.m.driver as unknown as DriverInternals;
}

function queues(h: SmmuHarness): SmmuCmdq[] {
  return h.m.smmus.map((s) => s.smmu.cmdq);
}

/** Drop the commands `drop` picks (by opcode, from the staged words) instead of queueing them. */
function dropCommands(h: SmmuHarness, drop: (opcode: number, w: Uint32Array) => boolean): void {
  for (const q of queues(h)) {
    const add = q.add.bind(q);
    q.add = () => (drop((q.w[0] as number) & 0xff, q.w) ? 0 : add());
  }
}

/**
 * Free the domains `which` picks by `free` instead of the driver's domain_free_paging; the others
 * go the driver's way.
 */
function replaceFree(
  h: SmmuHarness,
  which: (domain: ArmSmmuDomain) => boolean,
  free: (domain: ArmSmmuDomain) => void,
): void {
  const inner = internals(h);
  const orig = inner.domainFreePaging.bind(inner);
  inner.domainFreePaging = (domain) => (which(domain) ? free(domain) : orig(domain));
}

/** Whether `domain` is a stage-1 domain. */
function stage1(domain: ArmSmmuDomain): boolean {
  return domain.stage === ARM_SMMU_DOMAIN_S1;
}

const PLAIN: SmmuFuzzConfig = {};
const RACE: SmmuFuzzConfig = { race: true };
/** Caught without and with devices racing the command queue. */
const BOTH: readonly SmmuFuzzConfig[] = [PLAIN, RACE];

// --- The bugs --------------------------------------------------------------------------------------

const MUTANTS: readonly SmmuMutant[] = [
  {
    name: "tlbi-va-wrong-asid",
    bug: "stage-1 range invalidations (TLBI_NH_VA) carry the next ASID instead of the domain's",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      wrapEach(
        queues(h),
        "tlbiVa",
        (tlbiVa) => (op, id, addr, leaf, tg, ttl, scale, num) =>
          tlbiVa(op, op === CMDQ_OP.TLBI_S2_IPA ? id : id + 1, addr, leaf, tg, ttl, scale, num),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "tlb",
      descriptor: "CMD_TLBI_NH_VA",
      message: /CMD_TLBI_NH_VA .* was aimed at it but missed: its ASID \d+ is not the entry's \d+/,
    },
  },
  {
    name: "tlbi-ipa-wrong-vmid",
    bug: "stage-2 range invalidations (TLBI_S2_IPA) carry the next VMID instead of the domain's",
    fuzz: BOTH,
    plant(h) {
      wrapEach(
        queues(h),
        "tlbiVa",
        (tlbiVa) => (op, id, addr, leaf, tg, ttl, scale, num) =>
          tlbiVa(op, op === CMDQ_OP.TLBI_S2_IPA ? id + 1 : id, addr, leaf, tg, ttl, scale, num),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "tlb",
      descriptor: "CMD_TLBI_S2_IPA",
      message: /CMD_TLBI_S2_IPA .* was aimed at it but missed: its VMID \d+ is not the entry's \d+/,
    },
  },
  {
    name: "range-num-short",
    bug: "range invalidations encode NUM one too small, so each command covers one chunk (2^SCALE pages) too few",
    fuzz: BOTH,
    plant(h) {
      wrapEach(
        queues(h),
        "tlbiVa",
        (tlbiVa) => (op, id, addr, leaf, tg, ttl, scale, num) =>
          tlbiVa(op, id, addr, leaf, tg, ttl, scale, tg !== 0 && num > 0 ? num - 1 : num),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "tlb",
      message:
        /was aimed at it but missed: its range \[0x[0-9a-f]+, 0x[0-9a-f]+\) \(\d+ pages?\) ends before the entry/,
    },
  },
  {
    name: "ttl-off-by-one",
    bug: "leaf range invalidations of 4 KiB pages give TTL 2 (level 2) instead of 3, so the level 3 entries stay",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      wrapEach(
        queues(h),
        "tlbiVa",
        (tlbiVa) => (op, id, addr, leaf, tg, ttl, scale, num) =>
          tlbiVa(op, id, addr, leaf, tg, leaf && ttl === 3 ? 2 : ttl, scale, num),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "tlb",
      message: /missed: its TTL 2 limits it to level 2 entries, and the entry is a level 3 one/,
    },
  },
  {
    name: "walk-flush-leaf-only",
    bug: "the walk flush of a freed table (tlb_flush_walk) goes out as a leaf-only invalidation, which leaves the walk cache's pointer to the freed table",
    fuzz: BOTH,
    plant(h) {
      const drv = driver(h);
      const orig = drv.tlbInvRangeDomain.bind(drv);
      drv.tlbInvRangeDomain = (domain, iova, size, granule) =>
        orig(domain, iova, size, granule, true);
    },
    expect: {
      kind: "stale-translation",
      cache: "walk-cache",
      descriptor: "CMD_TLBI_NH_VA",
      message: /missed: Leaf = 1 removes leaf entries only/,
    },
  },
  {
    name: "nh-va-for-stage-2",
    bug: "stage-2 domains are invalidated with TLBI_NH_VA (stage 1 entries of the ASID) instead of TLBI_S2_IPA",
    fuzz: BOTH,
    plant(h) {
      wrapEach(
        queues(h),
        "tlbiVa",
        (tlbiVa) =>
          (op, ...rest) =>
            tlbiVa(op === CMDQ_OP.TLBI_S2_IPA ? CMDQ_OP.TLBI_NH_VA : op, ...rest),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "tlb",
      descriptor: "CMD_TLBI_S2_IPA",
      message: /CMD_TLBI_NH_VA never removes stage 2 TLB entries: they need CMD_TLBI_S2_IPA/,
    },
  },
  {
    name: "atc-inv-wrong-ssid",
    bug: "ATC invalidations at a PASID carry the next SubstreamID",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      wrapEach(
        queues(h),
        "atcInv",
        (atcInv) => (sid, ssid, addr, size) => atcInv(sid, ssid === 0 ? 0 : ssid + 1, addr, size),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "atc",
      descriptor: "CMD_ATC_INV",
      message: /missed: its SubstreamID \d+ is not the entry's \d+/,
    },
  },
  {
    name: "atc-span-short",
    bug: "the ATC_INV span is one power of two too small (atcSpan off by one), so it covers half the range",
    fuzz: BOTH,
    plant(h) {
      wrapEach(
        queues(h),
        "atcInv",
        (atcInv) => (sid, ssid, addr, size) =>
          atcInv(sid, ssid, addr, size > 0 && size < ATC_INV_SIZE_ALL ? size - 1 : size),
      );
    },
    expect: {
      kind: "stale-translation",
      cache: "atc",
      descriptor: "CMD_ATC_INV",
      message:
        /missed: its span \[0x[0-9a-f]+, 0x[0-9a-f]+\) \(Size \d+\) does not reach the entry/,
    },
  },
  {
    name: "cfgi-cd-wrong-ssid",
    bug: "CFGI_CD for a PASID's CD names the next SubstreamID",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      wrapEach(
        queues(h),
        "cfgiCd",
        (cfgiCd) => (sid, ssid, leaf) => cfgiCd(sid, ssid === 0 ? 0 : ssid + 1, leaf),
      );
    },
    expect: {
      kind: ["stale-translation", "spurious-fault"],
      cache: "cd-cache",
      descriptor: "CMD_CFGI_CD",
      message: /missed: its SubstreamID \d+ is not the entry's \d+/,
    },
  },
  {
    name: "cfgi-ste-wrong-sid",
    bug: "CFGI_STE names the StreamID of the neighbouring function (StreamID ^ 8)",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      wrapEach(queues(h), "cfgiSte", (cfgiSte) => (sid, leaf) => cfgiSte(sid ^ 0x8, leaf));
    },
    // The stale STE may first show long after the attach that missed it, when its commands have
    // left the log: the explanation of the wrong StreamID is then not given (the diagnosis is).
    expect: {
      kind: ["stale-translation", "spurious-fault"],
      cache: "ste-cache",
      descriptor: "CMD_CFGI_STE",
      message:
        /missing: CMD_CFGI_STE SID=0x8\b|missed: its StreamID 0x[0-9a-f]+ is not the entry's 0x[0-9a-f]+/,
    },
  },
  {
    name: "breaking-ste-without-cfgi",
    bug: "a breaking STE update (V=0, the rest, then qword 0) stores its steps without CFGI_STE (the CMD_SYNCs still go out)",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      const drv = internals(h);
      const breaking = { on: false };
      const installSte = drv.installSte.bind(drv);
      const upd = new Uint32Array(16);
      drv.installSte = (master, target) => {
        const pa = master.smmu.stePa(master.sid);
        const cur = new Uint32Array(16);
        for (let i = 0; i < 16; i++) cur[i] = drv.mem.read32(pa + 4 * i);
        const diff = entryQwordDiff(STE_USED_OPS, cur, target, upd);
        if ((diff & (diff - 1)) !== 0) during(breaking, installSte)(master, target);
        else installSte(master, target);
      };
      dropCommands(h, (op) => breaking.on && op === CMDQ_OP.CFGI_STE);
    },
    expect: {
      kind: ["stale-translation", "spurious-fault"],
      cache: "ste-cache",
      descriptor: "CMD_CFGI_STE",
    },
  },
  {
    name: "torn-cd-write",
    bug: "CDs are written qword by qword in index order (V=1 in qword 0 first) with one sync at the end",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      const drv = internals(h);
      drv.writeCd = (master, ssid, pa, target) => {
        const table = master.cdTable;
        const curValid = (drv.mem.read32(pa) & (1 << 31)) !== 0;
        const tgtValid = ((target[0] as number) & (1 << 31)) !== 0;
        if (table !== null && ssid !== 0 && curValid !== tgtValid)
          table.usedSsids += tgtValid ? 1 : -1;
        const ops = { ...CD_USED_OPS, sync: () => drv.syncCd(master, ssid, true) };
        writeEntry(ops, drv.mem, pa, target, { torn: true });
      };
    },
    expect: { kind: "torn-update", message: /CD \d+/ },
  },
  {
    name: "pasid-clear-without-cfgi",
    bug: "detaching a PASID clears its CD without the CFGI_CD",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      const drv = internals(h);
      const detaching = { on: false };
      drv.blockingSetDevPasid = during(detaching, drv.blockingSetDevPasid.bind(drv));
      dropCommands(h, (op) => detaching.on && op === CMDQ_OP.CFGI_CD);
    },
    expect: { kind: "stale-translation", cache: "cd-cache", descriptor: "CMD_CFGI_CD" },
  },
  {
    name: "invalidate-before-clear",
    bug: "detaching a PASID invalidates first (CFGI_CD, ATC_INV, each with its CMD_SYNC) and clears the CD afterwards, so a DMA in between caches the CD again",
    // Only with racing DMAs: without them nothing refills a cache between the commands.
    fuzz: [RACE],
    plant(h) {
      const drv = driver(h);
      const inner = internals(h);
      const clearing = { on: false };
      const detach = inner.blockingSetDevPasid.bind(inner);
      inner.blockingSetDevPasid = (dev, pasid, old) => {
        const master = drv.master(dev);
        if (master !== null) {
          inner.syncCd(master, pasid, true);
          if (master.atsEnabled) inner.atcInvMaster(master, pasid);
        }
        return during(clearing, detach)(dev, pasid, old);
      };
      dropCommands(h, (op) => clearing.on && (op === CMDQ_OP.CFGI_CD || op === CMDQ_OP.ATC_INV));
    },
    expect: { kind: "stale-translation", cache: "cd-cache", early: true },
  },
  {
    name: "atc-inv-before-tlbi",
    bug: "unmaps invalidate the ATCs before the TLB, so a device refills its ATC from the stale TLB in between",
    // Only with racing DMAs: without them nothing refills a cache between the commands.
    fuzz: [RACE],
    plant(h) {
      const drv = driver(h);
      const inner = internals(h);
      drv.tlbInvRangeDomain = (domain, iova, size, granule, leaf) => {
        if (size === 0) return;
        const q = domain.smmu.cmdq;
        inner.atcInvDomain(domain, iova, size);
        inner.stageTlbiRange(domain.smmu, domain, iova, size, granule, leaf);
        q.submit();
        if (domain.nestParent) {
          q.bare(CMDQ_OP.TLBI_NH_ALL);
          q.w[1] = domain.vmid & 0xffff;
          q.issueWithSync();
        }
      };
    },
    expect: { kind: "stale-translation", cache: "atc", early: true },
  },
  {
    name: "unmap-without-sync",
    bug: "an unmap's invalidation batch is issued without its CMD_SYNC: the commands are queued, never waited for",
    // Only with racing DMAs: otherwise the SMMU carries out commands as soon as PROD moves, so
    // the wait that is missing changes nothing.
    fuzz: [RACE],
    plant(h) {
      const drv = driver(h);
      const unmapping = { on: false };
      drv.tlbInvRangeDomain = during(unmapping, drv.tlbInvRangeDomain.bind(drv));
      for (const q of queues(h)) {
        const submit = q.submit.bind(q);
        q.submit = () => (unmapping.on ? q.submitNoSync() : submit());
      }
    },
    expect: {
      kind: "stale-translation",
      descriptor: "CMD_SYNC",
      message:
        /would remove it, but it is still in smmu0's command queue .*: issued, and never waited for with a CMD_SYNC/,
    },
  },
  {
    name: "asid-freed-before-tlbi",
    bug: "a freed stage-1 domain gives its ASID back before its last TLBI_NH_ASID",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      const drv = driver(h);
      replaceFree(h, stage1, (domain) => {
        drv.asids.free(domain.asid);
        drv.hooks.asidFreed?.(domain.asid, domain);
        drv.tlbInvContext(domain);
        domain.pgtable.free();
      });
    },
    expect: { kind: "id-reuse", space: "asid", descriptor: "CMD_TLBI_NH_ASID" },
  },
  {
    name: "vmid-freed-without-tlbi",
    bug: "a freed stage-2 domain gives its VMID back without TLBI_S12_VMALL",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      const drv = driver(h);
      replaceFree(
        h,
        (domain) => !stage1(domain),
        (domain) => {
          domain.pgtable.free();
          domain.smmu.vmids.free(domain.vmid);
          drv.hooks.vmidFreed?.(domain.smmu, domain.vmid, domain);
        },
      );
    },
    expect: { kind: "id-reuse", space: "vmid", descriptor: "CMD_TLBI_S12_VMALL" },
  },
  {
    name: "never-free-asid",
    bug: "a freed stage-1 domain never gives its ASID back",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      const drv = driver(h);
      replaceFree(h, stage1, (domain) => {
        drv.tlbInvContext(domain);
        domain.pgtable.free();
      });
    },
    expect: { kind: "leak", space: "asid", message: /ASID \d+ is still allocated/ },
  },
  {
    name: "detach-keeps-cache-tags",
    bug: "the old domain forgets the attachment (master_domain) but not its cache tags",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      const inner = internals(h);
      inner.removeMasterDomain = (master, old, ssid) => {
        if (old === null) return;
        const d = (old as { parent?: ArmSmmuDomain }).parent ?? (old as ArmSmmuDomain);
        if (!("devices" in d)) return;
        const i = d.devices.findIndex((md) => md.master === master && md.ssid === ssid);
        if (i < 0) return;
        const md = d.devices[i] as (typeof d.devices)[number];
        d.devices.splice(i, 1);
        if (md.ats) d.nrAtsMasters--;
      };
    },
    expect: { kind: "leak", message: /freed with \d+ cache tag\(s\) still assigned/ },
  },
  {
    name: "cd-stale-ttb0",
    bug: "a new CD points TTB0 at the table of the domain whose CD was written before it (a stale variable)",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      const inner = internals(h);
      const make = inner.makeS1CdFor.bind(inner);
      let previous: LpaePgtable | null = null;
      inner.makeS1CdFor = (master, domain, out) => {
        const use =
          previous === null
            ? domain
            : (Object.create(domain, { pgtable: { value: previous } }) as ArmSmmuDomain);
        make(master, use, out);
        previous = domain.pgtable;
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
    fuzz: BOTH,
    plant(h) {
      plantMapOnePageOff(internals(h).pagingOps);
    },
    expect: { kind: "isolation", message: /which the tables map but domain#\d+.* does not/ },
  },
  {
    name: "ats-left-on-at-bypass",
    bug: "moving the RID to a bypass STE leaves ATS enabled at the device, whose translation requests the bypass STE refuses",
    fuzz: BOTH,
    plant(h) {
      const inner = internals(h);
      const prepare = inner.attachPrepare.bind(inner);
      inner.attachPrepare = (master, domain, ssid, atsWanted, nested) => {
        if (domain !== null || atsWanted) return prepare(master, domain, ssid, atsWanted, nested);
        const dev = master.dev;
        const disable = dev.disableAts;
        dev.disableAts = () => {};
        try {
          return prepare(master, domain, ssid, atsWanted, nested);
        } finally {
          dev.disableAts = disable;
        }
      };
    },
    expect: {
      kind: "spurious-fault",
      message: /ATS is enabled on d\d, but its configuration refuses translation requests/,
    },
  },
  {
    name: "pri-resp-twice",
    bug: "every page group response is sent twice",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      plantResponseTwice(driver(h));
    },
    expect: { kind: "page-request", message: /a group it had not asked/ },
  },
  {
    name: "pri-resp-wrong-prgi",
    bug: "CMD_PRI_RESP carries the next PRG index",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      wrapEach(
        queues(h),
        "priResp",
        (priResp) => (sid, ssv, ssid, prgi, resp) =>
          priResp(sid, ssv, ssid, (prgi + 1) & 0x1ff, resp),
      );
    },
    expect: { kind: "page-request" },
  },
  {
    name: "page-response-never-sent",
    bug: "page group responses are never sent",
    fuzz: BOTH,
    scenario: true,
    plant(h) {
      driver(h).pageResponse = () => {};
    },
    expect: { kind: "page-request", message: /never answered/ },
  },
  {
    name: "stall-never-resumed",
    bug: "a stalled transaction's fault is handled, but a prefetch goes to the queue instead of its CMD_RESUME",
    fuzz: BOTH,
    plant(h) {
      wrapEach(
        queues(h),
        "resume",
        (resume) => (sid, stag, retry, abort) =>
          resume(sid, stag, retry, abort).prefetchConfig(sid),
      );
    },
    expect: {
      kind: "page-request",
      message: /stalled transaction\(s\) never resumed or terminated/,
    },
  },
  {
    name: "resume-always-terminates",
    bug: "CMD_RESUME always terminates the stalled transaction (Ac = 0), also when the handler resolved the fault",
    fuzz: BOTH,
    plant(h) {
      wrapEach(queues(h), "resume", (resume) => (sid, stag) => resume(sid, stag, false, true));
    },
    expect: { kind: "page-request", message: /terminated although its fault's handler answered/ },
  },
  {
    name: "resume-wrong-stag",
    bug: "CMD_RESUME carries the next stall tag",
    fuzz: BOTH,
    plant(h) {
      wrapEach(
        queues(h),
        "resume",
        (resume) => (sid, stag, retry, abort) => resume(sid, (stag + 1) & 0xffff, retry, abort),
      );
    },
    expect: { kind: "page-request", message: /stalled transaction/ },
  },
];

// --- Bugs the spec makes harmless ------------------------------------------------------------------

/** How often each harmless variant's changed step ran (it must have run to prove anything). */
const ran = new Map<string, number>();

function count(name: string): void {
  ran.set(name, (ran.get(name) ?? 0) + 1);
}

/**
 * Changes that are no bugs: they only add or widen invalidations, or drop a hint. The oracle
 * must stay silent (they also show the oracle does not simply flag any change to the driver).
 */
const EQUIVALENT: readonly SmmuMutant[] = [
  {
    name: "extra-cmd-sync",
    bug: "every batch is followed by a second, empty CMD_SYNC",
    fuzz: BOTH,
    plant(h) {
      wrapEach(queues(h), "submit", (submit) => () => {
        const r = submit();
        count("extra-cmd-sync");
        return r === 0 ? submit() : r;
      });
    },
    expect: { kind: "stale-translation" },
  },
  {
    name: "tlbi-asid-for-range",
    bug: "every range invalidation is widened to the whole ASID (TLBI_NH_ASID) or VMID (TLBI_S12_VMALL), ATCs whole",
    fuzz: BOTH,
    plant(h) {
      const drv = driver(h);
      drv.tlbInvRangeDomain = (domain, _iova, size) => {
        if (size === 0) return;
        count("tlbi-asid-for-range");
        drv.tlbInvContext(domain);
      };
    },
    expect: { kind: "stale-translation" },
  },
  {
    name: "atc-span-larger",
    bug: "ATC_INV spans are twice as large as needed",
    fuzz: BOTH,
    plant(h) {
      wrapEach(queues(h), "atcInv", (atcInv) => (sid, ssid, addr, size) => {
        if (size >= ATC_INV_SIZE_ALL - 1) return atcInv(sid, ssid, addr, size);
        count("atc-span-larger");
        return atcInv(sid, ssid, addr, size + 1);
      });
    },
    expect: { kind: "stale-translation" },
  },
  {
    name: "atc-inv-without-ssv",
    bug: "ATC invalidations at a PASID go out without SSV: an Invalidate Request without a PASID covers every PASID of the range (PCIe 10.3.1), so it only over-invalidates",
    fuzz: BOTH,
    plant(h) {
      wrapEach(queues(h), "atcInv", (atcInv) => (sid, ssid, addr, size) => {
        if (ssid !== 0) count("atc-inv-without-ssv");
        return atcInv(sid, 0, addr, size);
      });
    },
    expect: { kind: "stale-translation" },
  },
  {
    name: "no-prefetch-config",
    bug: "CMD_PREFETCH_CONFIG is never sent (a hint)",
    fuzz: BOTH,
    plant(h) {
      dropCommands(h, (op) => {
        if (op !== CMDQ_OP.PREFETCH_CONFIG) return false;
        count("no-prefetch-config");
        return true;
      });
    },
    expect: { kind: "stale-translation" },
  },
  {
    name: "ats-enable-without-atc-inv",
    bug: "ATS is enabled without invalidating the whole ATC first: every path that turns ATS off invalidates the whole ATC right after, so it is empty already",
    fuzz: BOTH,
    plant(h) {
      const inner = internals(h);
      inner.enableAts = (master) => {
        count("ats-enable-without-atc-inv");
        const f = master.smmu.features.pgsizeBitmap;
        master.dev.enableAts(Math.log2(f & -f));
      };
    },
    expect: { kind: "stale-translation" },
  },
];

// --- Running them ----------------------------------------------------------------------------------

const table = CatchTable.printedAfterAll();

/** Each mutant in each of its configurations (each must catch it within seeds 1..HUNT_SEEDS). */
const fuzzCases = MUTANTS.flatMap((m) =>
  (m.fuzz ?? []).map((cfg) => [`${m.name} (fuzz ${SMMU.flags(cfg)})`, m, cfg] as const),
);

describe("planted SMMUv3 driver bugs are caught by the oracle with a diagnosis that points at them", () => {
  it.each(fuzzCases)("%s", (_name, m, cfg) => table.expectCaught(m, fuzzHunt(SMMU, m, [cfg])));

  itCatchesInScenario(SMMU, MUTANTS, table);

  itListsAtLeast(MUTANTS, 16);
});

describe("changes the spec makes harmless raise nothing", () => {
  it.each(EQUIVALENT.map((m) => [m.name, m] as const))("%s", (_name, m) => {
    ran.delete(m.name);
    expectHarmless(SMMU, m, 8);
    expect(ran.get(m.name) ?? 0).toBeGreaterThan(4);
  });
});

/** Configurations of the clean runs: the oracle's changes must not flag the unmodified driver. */
const CLEAN: readonly SmmuFuzzConfig[] = [PLAIN, RACE, { lazy: true, race: true }, { iotlb: 4 }];

describe("the driver as Linux writes it raises nothing", () => {
  it.each(
    CLEAN.map(
      (cfg) =>
        [SMMU.flags(cfg) + (cfg.iotlb === undefined ? "" : ` iotlb ${cfg.iotlb}`), cfg] as const,
    ),
  )("fuzz %s, seeds 1..25", (_name, cfg) => {
    for (let seed = 1; seed <= 25; seed++) {
      const r = SMMU.fuzz(cfg, seed, () => {});
      expect(r.violations.map((v) => v.message)).toEqual([]);
    }
  });
});
