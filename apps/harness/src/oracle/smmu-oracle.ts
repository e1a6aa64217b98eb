// The isolation oracle on an SMMUv3 machine: the architecture-neutral checks of IsolationOracle,
// with the SMMU's caches inspected by SmmuV3.inspect, STEs and CDs checked against the
// attachments, ASIDs and VMIDs followed through the driver's hooks, check 5 from the hardware
// side (every store into an STE or CD the SMMU fetched), the command queue's errors and lost
// events reported, and a missing invalidation explained when it was issued but not waited for
// or issued with a wrong parameter.

import {
  ARM_SMMU_DOMAIN_S1,
  ARM_SMMU_DOMAIN_SVA,
  type ArmSmmuDevice,
  ArmSmmuDomain,
  ArmSmmuNestedDomain,
  ArmSmmuSvaDomain,
} from "@iommu-sim/arm-smmu/driver";
import { evtName } from "@iommu-sim/arm-smmu/format";
import { CFG_OK, type SmmuV3 } from "@iommu-sim/arm-smmu/hw";
import type { SmmuMachine } from "@iommu-sim/arm-smmu/testing";
import {
  CACHE_TAG_IOTLB,
  type CacheTag,
  type Device,
  IOMMU_DOMAIN_BLOCKED,
  IOMMU_DOMAIN_IDENTITY,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_PAGE_RESP_SUCCESS,
  type IommuDomain,
  type IommuMm,
  NO_PASID,
  newTranslationRequest,
} from "@iommu-sim/iommu-core";
import {
  type DeviceRecord,
  type EarlyInvalidation,
  fieldText,
  IsolationOracle,
  type SvaCacheHit,
  type TornReport,
} from "./oracle.js";
import { diagnoseSmmuStale } from "./smmu-diagnose.js";
import { SmmuEntryWatch } from "./smmu-hitless.js";
import { pendingCovering, SmmuInvalidationLog } from "./smmu-invalidation-log.js";
import { hex, type MissingInvalidation, type StaleEntry } from "./violation.js";

const PAGE = 4096;
/** STE.Config values. @spec Arm SMMUv3 (IHI 0070) 5.2 */
const CFG_ABORT = 0;
const CFG_BYPASS = 4;
/** STE.S1DSS values. */
const S1DSS_TERMINATE = 0;
const S1DSS_BYPASS = 1;

function stallKey(dev: Device, pasid: number, pfn: number): string {
  return `${dev.name}:${pasid}:${pfn}`;
}

/**
 * Watches an SmmuMachine. The harness tells it what owners do; the devices report every page they
 * reach; the driver reports ASIDs and VMIDs.
 */
export class SmmuOracle extends IsolationOracle<SmmuV3> {
  private readonly m: SmmuMachine;
  private readonly invLog: SmmuInvalidationLog;
  private readonly entries: SmmuEntryWatch;
  /** The core's last answer to a stall fault, by device, PASID and page. */
  private readonly responses = new Map<string, number>();
  /** Command-queue errors already reported, per SMMU. */
  private readonly queueErrorsSeen = new Map<ArmSmmuDevice, number>();

  constructor(machine: SmmuMachine) {
    super(machine.clock);
    this.m = machine;
    this.entries = new SmmuEntryWatch();
    this.invLog = new SmmuInvalidationLog(
      machine.smmus.map((s) => s.hw),
      () => this.now,
    );
    machine.driver.hooks = {
      asidAllocated: (asid, domain) => {
        this.born("asid", null, asid);
        this.note("asid", null, asid, `allocated to domain#${domain.id}`);
        this.checkTagUnused("asid", null, asid, "allocated again");
      },
      asidFreed: (asid, domain) => {
        this.note("asid", null, asid, `freed by domain#${domain.id}`);
        this.checkTagUnused("asid", null, asid, "freed");
      },
      vmidAllocated: (smmu, vmid, domain) => {
        this.born("vmid", smmu.name, vmid);
        this.note("vmid", smmu.name, vmid, `allocated to domain#${domain.id}`);
        this.checkTagUnused("vmid", smmu.name, vmid, "allocated again");
      },
      vmidFreed: (smmu, vmid, domain) => {
        this.note("vmid", smmu.name, vmid, `freed by domain#${domain.id}`);
        this.checkTagUnused("vmid", smmu.name, vmid, "freed");
      },
      pageResponded: (dev, evt, msg) => {
        const f = evt.fault;
        const pasid = (f.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID) !== 0 ? f.pasid : NO_PASID;
        this.responses.set(stallKey(dev, pasid, Math.floor(f.addr / PAGE)), msg.code);
      },
    };
  }

  protected hwFor(dev: Device): SmmuV3 | null {
    return this.m.hwFor(dev.sid);
  }

  protected watchEntries(dev: Device, hw: SmmuV3): void {
    this.entries.watch(dev, hw);
  }

  protected unwatchEntries(dev: Device): void {
    this.entries.unwatch(dev);
  }

  /** Stage-1 permissions have no write-only page (AP[2] read-only or read/write). */
  protected writeImpliesRead(domain: IommuDomain): boolean {
    return (
      domain instanceof ArmSmmuDomain &&
      (domain.stage === ARM_SMMU_DOMAIN_S1 || domain.stage === ARM_SMMU_DOMAIN_SVA)
    );
  }

  protected tagText(t: CacheTag): string {
    const d = t.kind === CACHE_TAG_IOTLB ? "TLB" : "ATC";
    return `${d} tag (${t.id}${t.pasid > 0 ? `, SSID ${t.pasid}` : ""}${t.dev === null ? "" : `, ${t.dev.name}`}, ${t.users} user${t.users === 1 ? "" : "s"})`;
  }

  /** A freed stage-1 domain's ASID (stage 2: VMID) is back with its allocator. */
  protected checkDomainIds(domain: IommuDomain, label: string): void {
    if (!(domain instanceof ArmSmmuDomain)) return;
    const s1 = domain.stage === ARM_SMMU_DOMAIN_S1 || domain.stage === ARM_SMMU_DOMAIN_SVA;
    const held = s1 ? this.m.driver.asids.has(domain.asid) : domain.smmu.vmids.has(domain.vmid);
    if (!held) return;
    const space = s1 ? "asid" : "vmid";
    const unit = s1 ? null : domain.smmu.name;
    const value = s1 ? domain.asid : domain.vmid;
    this.report({
      kind: "leak",
      time: this.now,
      message: `${label} was freed but its ${space.toUpperCase()} ${value} is still allocated`,
      id: { space, unit, value },
      history: this.historyOf(space, unit, value),
    });
  }

  mark(): number {
    return this.invLog.mark();
  }

  protected diagnose(
    rec: DeviceRecord<SmmuV3>,
    pasid: number,
    iovaPfn: number,
    access: number,
    privileged: boolean,
    viaAtc: boolean,
  ): { entry: StaleEntry; missing: MissingInvalidation } {
    const d = diagnoseSmmuStale(rec.dev, rec.hw, pasid, iovaPfn, access, privileged, viaAtc);
    // The invalidation is in the command queue, not yet carried out: what is missing is the
    // CMD_SYNC the driver should have waited for after it.
    const pending = pendingCovering(rec.hw, rec.dev.sid >>> 0, d.entry);
    if (pending === null) return d;
    return {
      entry: d.entry,
      missing: {
        descriptor: "CMD_SYNC",
        fields: { after: pending.descriptor, CONS: hex(pending.cons), PROD: hex(pending.prod) },
      },
    };
  }

  /**
   * A command that would remove the entry still waiting in the command queue, or one the
   * removing operation (log marks [mark, end)) executed that was aimed at the entry with one
   * wrong parameter.
   */
  protected override explainMissing(
    mark: number,
    end: number,
    rec: DeviceRecord<SmmuV3>,
    entry: StaleEntry,
  ): string | null {
    const sid = rec.dev.sid >>> 0;
    const pending = pendingCovering(rec.hw, sid, entry);
    if (pending !== null)
      return `${pending.descriptor} ${fieldText(pending.fields)} would remove it, but it is still in ${rec.hw.name}'s command queue (CONS ${hex(pending.cons)}, PROD ${hex(pending.prod)}): issued, and never waited for with a CMD_SYNC`;
    const missed = this.invLog.missedSince(mark, end, rec.hw.name, sid, entry);
    if (missed === null) return null;
    return `${missed.descriptor} ${fieldText(missed.fields)} at t=${missed.time} was aimed at it but missed: ${missed.reason}`;
  }

  protected coveringSince(
    mark: number,
    rec: DeviceRecord<SmmuV3>,
    entry: StaleEntry,
  ): EarlyInvalidation | null {
    return this.invLog.coveringSince(mark, rec.hw.name, rec.dev.sid >>> 0, entry);
  }

  /** An event ID by name; 0 (no SMMU event: an ATS answer or a page request) as such. */
  /**
   * A stalled transaction came back terminated: its fault's handler must not have resolved it
   * (IOMMU_PAGE_RESP_SUCCESS asks for CMD_RESUME with Ac = retry).
   */
  protected override stallTerminated(
    rec: DeviceRecord<SmmuV3>,
    pasid: number,
    iovaPfn: number,
  ): void {
    const key = stallKey(rec.dev, pasid, iovaPfn);
    const code = this.responses.get(key);
    this.responses.delete(key);
    if (code !== IOMMU_PAGE_RESP_SUCCESS) return;
    const where = `${rec.dev.name}${pasid === NO_PASID ? "" : ` PASID ${pasid}`} at ${hex(iovaPfn * PAGE)}`;
    this.report({
      kind: "page-request",
      time: this.now,
      message: `${where}: the stalled transaction was terminated although its fault's handler answered IOMMU_PAGE_RESP_SUCCESS: the CMD_RESUME should retry it (Ac = 1)`,
    });
  }

  protected faultName(code: number): string {
    return code === 0 ? "no event recorded" : `event ${hex(code)} ${evtName(code)}`;
  }

  /** Check 5 from the hardware side: every STE and CD the SMMU could have read between stores. */
  protected settleTorn(): TornReport[] {
    return this.entries.settle().map((t) => {
      const where = `${t.device}${t.kind === "cd" ? ` CD ${t.ssid}` : ""}`;
      const entry = t.kind === "ste" ? `STE of StreamID ${hex(t.sid)}` : `CD ${t.ssid}`;
      return {
        key: `torn:${where}:${t.seen}`,
        message:
          t.illegal !== null
            ? `${where}: between two stores the ${entry} in ${t.unit}'s memory was illegal (${this.faultName(t.illegal)}): ${t.unit} could have fetched it`
            : `${where}: between two stores the ${entry} in ${t.unit}'s memory was neither the old nor the new configuration (${t.changed}): ${t.unit} could have fetched it; a change of several qwords needs the break (V = 0) first`,
      };
    });
  }

  // --- Check 3: IDs ----------------------------------------------------------------------------------

  /** No TLB or walk-cache entry of any SMMU may be tagged with an ASID or VMID being freed or reused. */
  private checkTagUnused(
    space: "asid" | "vmid",
    unit: string | null,
    value: number,
    what: string,
  ): void {
    const held: string[] = [];
    let first: { vmid: number; asid: number; vpn: number; oaFrame: number } | null = null;
    for (const { hw } of this.m.smmus) {
      if (unit !== null && hw.name !== unit) continue;
      let n = 0;
      hw.tlb.forEach((e) => {
        const hit = space === "asid" ? e.asid === value && !e.global : e.vmid === value;
        if (!hit) return;
        n++;
        first ??= { vmid: e.vmid, asid: e.asid, vpn: e.vpn, oaFrame: e.oaFrame };
      });
      if (n > 0) held.push(`${n} TLB entr${n === 1 ? "y" : "ies"} of ${hw.name}`);
      let w = 0;
      hw.walkCache.forEach((e) => {
        if (space === "asid" ? e.asid === value && e.stage === 1 : e.vmid === value) w++;
      });
      if (w > 0) held.push(`${w} walk-cache entr${w === 1 ? "y" : "ies"} of ${hw.name}`);
    }
    if (held.length === 0) return;
    const f = first as { vmid: number; asid: number; vpn: number; oaFrame: number } | null;
    const example = f === null ? "" : ` (e.g. ${hex(f.vpn * PAGE)} → ${hex(f.oaFrame * PAGE)})`;
    const missing: MissingInvalidation =
      space === "asid"
        ? { descriptor: "CMD_TLBI_NH_ASID", fields: { VMID: f?.vmid ?? 0, ASID: value } }
        : { descriptor: "CMD_TLBI_S12_VMALL", fields: { VMID: value } };
    this.reportId(
      space,
      unit,
      value,
      `${space.toUpperCase()} ${value}${unit === null ? "" : ` of ${unit}`} ${what} while ${held.join(", ")} still tagged with it${example}`,
      missing,
    );
  }

  /** The TLB entries of `mm`'s SVA domains' ASIDs, and the ATC entries at its PASID, that reach `pfn`. */
  protected svaCachesTranslating(mm: IommuMm, pfn: number): SvaCacheHit[] {
    const data = mm.iommuMm as { pasid?: number; svaDomains?: readonly IommuDomain[] } | null;
    const pasid = data?.pasid;
    if (pasid === undefined) return [];
    const out: SvaCacheHit[] = [];
    for (const d of data?.svaDomains ?? []) {
      if (!(d instanceof ArmSmmuSvaDomain)) continue;
      const hw = this.m.smmus.find((s) => s.smmu === d.smmu)?.hw;
      hw?.tlb.forEach((e) => {
        if (e.asid !== d.asid || e.global) return;
        const pages = 2 ** (e.sizeShift - 12);
        if (pfn < e.oaFrame || pfn >= e.oaFrame + pages) return;
        const address = (e.vpn + (pfn - e.oaFrame)) * PAGE;
        out.push({
          text: `${hw.name}'s TLB (ASID ${e.asid}, ${hex(address)})`,
          entry: {
            cache: "tlb",
            where: hw.name,
            fields: { VMID: e.vmid, ASID: e.asid, address: hex(address) },
          },
        });
      });
    }
    out.push(...this.atcHitsFor(pasid, pfn, "atc"));
    return out;
  }

  /** No CD cache and no ATC may still hold `pasid` (as an SSID). */
  protected checkPasidUnused(pasid: number, what: string): void {
    const held: string[] = [];
    let missing: MissingInvalidation | null = null;
    for (const { hw } of this.m.smmus) {
      const cds = hw.configCache
        .entries()
        .cd.filter((e) => e.ssid === pasid && e.cfg.status === CFG_OK);
      if (cds.length > 0) {
        const e = cds[0] as (typeof cds)[number];
        held.push(`${hw.name}'s CD cache (StreamID ${hex(e.sid)})`);
        missing ??= { descriptor: "CMD_CFGI_CD", fields: { SID: hex(e.sid), SSID: pasid } };
      }
    }
    for (const dev of this.m.bus.devices()) {
      const n = dev.atc?.entries().filter((e) => e.pasid === pasid).length ?? 0;
      if (n > 0) {
        held.push(`${n} ATC entr${n === 1 ? "y" : "ies"} of ${dev.name}`);
        missing ??= {
          descriptor: "CMD_ATC_INV",
          fields: { SID: hex(dev.sid), SSV: 1, SSID: pasid, Size: 52 },
        };
      }
    }
    if (held.length === 0) return;
    this.reportId(
      "pasid",
      null,
      pasid,
      `PASID ${pasid} ${what} while ${held.join(", ")} still held it`,
      missing ?? { descriptor: "unknown", fields: {} },
    );
  }

  // --- Check 1 without a DMA: STEs and CDs against the attachments -----------------------------------

  protected checkConfig(): void {
    this.forEachAttachment((rec, pasid, domain) => this.checkEntry(rec, pasid, domain));
  }

  /**
   * What the STE (and CD) in memory do with requests of (device, pasid) must be what is attached:
   * abort (or a CD-table STE terminating SSID-less traffic, or an invalid CD) for nothing or the
   * blocked domain; bypass (or S1DSS bypass) for identity; for a stage-1 domain its CD (TTB0 at its
   * table, its ASID), for a stage-2 domain S2TTB at its table with its VMID.
   */
  private checkEntry(rec: DeviceRecord<SmmuV3>, pasid: number, domain: IommuDomain | null): void {
    if (domain instanceof ArmSmmuNestedDomain) return; // the guest's tables: not the owner's map
    const req = newTranslationRequest();
    req.rid = rec.dev.rid;
    req.sid = rec.dev.sid;
    req.pasid = pasid;
    const ins = rec.hw.inspect(req);
    const ste = ins.ste.fresh;
    const usable = ste.status === CFG_OK;
    const cd = ins.cd?.fresh ?? null;
    // What memory gives: "abort", "bypass", "s1" (root, asid), "s2" (root, vmid), or "bad".
    let got: string;
    let root = -1;
    let tag = -1;
    if (!usable) got = "bad";
    else if (ste.config === CFG_ABORT || ste.config < 4) got = "abort";
    else if (ste.config === CFG_BYPASS) got = "bypass";
    else if (ste.s1) {
      if (pasid === NO_PASID && ste.s1CdMax > 0 && ste.s1Dss !== 2) {
        got =
          ste.s1Dss === S1DSS_BYPASS
            ? ste.s2
              ? "s2"
              : "bypass"
            : ste.s1Dss === S1DSS_TERMINATE
              ? "abort"
              : "bad";
        if (got === "s2") {
          root = ste.s2Range.ttb;
          tag = ste.vmid;
        }
      } else if (cd === null || cd.status !== CFG_OK) got = "abort";
      else if (cd.bypass) got = "bypass";
      else {
        got = "s1";
        root = cd.t0.ttb;
        tag = cd.asid;
      }
    } else {
      got = "s2";
      root = ste.s2Range.ttb;
      tag = ste.vmid;
    }
    // A request with a SubstreamID through an STE without stage 1 (bypass, stage 2 only) is a
    // C_BAD_SUBSTREAMID: memory aborts it, whatever a cached STE would do.
    if (pasid !== NO_PASID && got !== "bad" && !(ste.s1 && ste.config > CFG_BYPASS)) got = "abort";
    let want: string;
    let wantRoot = -1;
    let wantTag = -1;
    // An SVA domain is named by its process, and a released one says so.
    let attached = this.attachedText(domain);
    let table = "the domain's table";
    let after = "";
    if (domain === null || domain.type === IOMMU_DOMAIN_BLOCKED) want = "abort";
    else if (domain.type === IOMMU_DOMAIN_IDENTITY) want = "bypass";
    else if (domain instanceof ArmSmmuSvaDomain) {
      // An SVA CD walks the process's table with the domain's ASID; once the mm was released,
      // the CD stays valid with EPD0 (every access faults).
      const mm = domain.svaMm;
      attached = `the SVA domain of ${mm.name} is attached`;
      table = `${mm.name}'s page table`;
      if (domain.freed) {
        // Freed with a master still attached: its ASID is back in the allocator and its notifier
        // gone, so nothing keeps the caches behind the CD coherent.
        this.reportConfig(
          `cfg:${rec.dev.name} PASID ${pasid}:freed`,
          true,
          `${rec.dev.name} PASID ${pasid}: ${attached} there, but it was freed: its ASID ${domain.asid} went back to the allocator and its mmu notifier was put, so ${mm.name}'s munmap and mprotect no longer reach ${rec.hw.name} and the next domain with that ASID shares its TLB entries; an SVA domain is freed only after its last master let go (iommu_sva_unbind_device counts its users)`,
        );
        return;
      }
      if (mm.users === 0) {
        if (got === "s1" && cd !== null && cd.t0.disabled) return;
        want = "abort";
        after = ` after ${mm.name} exited (its release leaves the CD valid with EPD0: arm_smmu_mm_release)`;
      } else {
        want = "s1";
        wantRoot = mm.pgd;
        wantTag = domain.tag;
      }
      if (want === "abort" && got === "abort") return;
    } else if (domain instanceof ArmSmmuDomain) {
      want = domain.stage === ARM_SMMU_DOMAIN_S1 ? "s1" : "s2";
      wantRoot = domain.pgtable.rootPa;
      wantTag = domain.tag;
    } else return;
    let problem: string | null = null;
    let grantsMore = false;
    if (got === "bad") {
      problem = `is not usable (${this.faultName(ste.status)})`;
      grantsMore = false;
      if (want === "abort") return;
    } else if (got !== want) {
      problem =
        got === "abort"
          ? "aborts the requests"
          : got === "bypass"
            ? "lets the requests bypass translation"
            : `translates through ${hex(root)} (${got === "s1" ? "ASID" : "VMID"} ${tag})`;
      grantsMore = got !== "abort";
    } else if ((got === "s1" || got === "s2") && root !== wantRoot) {
      problem = `translates through ${hex(root)}, not ${table} at ${hex(wantRoot)}`;
      grantsMore = true;
    } else if ((got === "s1" || got === "s2") && tag !== wantTag) {
      problem = `tags what it caches with ${got === "s1" ? "ASID" : "VMID"} ${tag}, not the domain's ${wantTag} (its invalidations miss them)`;
      grantsMore = true;
    }
    if (problem === null) return;
    const where = `${rec.dev.name}${pasid === NO_PASID ? "" : ` PASID ${pasid}`}`;
    const entry =
      pasid === NO_PASID && got !== "s1"
        ? "STE"
        : got === "s1" && domain instanceof ArmSmmuSvaDomain
          ? "CD"
          : "STE/CD";
    this.reportConfig(
      `cfg:${where}:${problem}`,
      grantsMore,
      `${where}: ${attached} there, but the ${entry} in memory of ${rec.hw.name} ${problem}${after}`,
    );
  }

  // --- Command queue ---------------------------------------------------------------------------------

  /**
   * Every command the driver queued was carried out: the SMMU refused none (CERROR_ILL, the
   * command skipped), no ATC invalidation timed out, and the driver never gave up on a CMD_SYNC.
   */
  protected checkQueues(): void {
    for (const { smmu } of this.m.smmus) {
      const s = smmu.cmdq.stats;
      const total = s.refused + s.timeouts + s.atcSyncErrors;
      const seen = this.queueErrorsSeen.get(smmu) ?? 0;
      if (total === seen) continue;
      this.queueErrorsSeen.set(smmu, total);
      const last = smmu.cmdq.refusedCommands.at(-1);
      this.report({
        kind: "invalidation-error",
        time: this.now,
        message:
          s.refused > 0 && last !== undefined
            ? `${smmu.name} refused a command (CERROR_ILL, words ${last.words.map((w) => hex(w)).join(" ")}): it was skipped, so that invalidation never happened`
            : s.atcSyncErrors > 0
              ? `${smmu.name}: a CMD_SYNC failed on an ATC invalidation that timed out (CERROR_ATC_INV_SYNC)`
              : `${smmu.name}: the driver gave up waiting for a CMD_SYNC`,
      });
    }
  }

  // --- Check 6: faults --------------------------------------------------------------------------------

  /** Every event the SMMUs raised reached the driver (none lost to a full or disabled queue). */
  checkFaultsReported(): void {
    for (const { hw, smmu } of this.m.smmus) {
      if (hw.stats.eventsLost > 0) {
        this.report({
          kind: "lost-fault",
          time: this.now,
          message: `${hw.name}: ${hw.stats.eventsLost} event(s) lost (event queue full, disabled or aborted)`,
        });
      }
      if (smmu.evtq.overflows > 0 || (smmu.priq?.overflows ?? 0) > 0) {
        this.report({
          kind: "lost-fault",
          time: this.now,
          message: `${hw.name}: the driver saw its event or PRI queue overflow`,
        });
      }
    }
  }

  // --- Check 4: leaks --------------------------------------------------------------------------------

  /**
   * After teardown: every ASID and VMID back, no global PASID allocated, frames back to the
   * baseline (the SMMUs' L2 stream tables stay, as in the kernel).
   */
  checkLeaks(framesBaseline: number): void {
    const d = this.m.driver;
    for (let id = d.asids.nextUsed(0); id >= 0; id = d.asids.nextUsed(id + 1)) {
      this.report({
        kind: "leak",
        time: this.now,
        message: `ASID ${id} is still allocated after teardown`,
        id: { space: "asid", unit: null, value: id },
        history: this.historyOf("asid", null, id),
      });
    }
    let tables = 0;
    for (const { smmu } of this.m.smmus) {
      for (let id = smmu.vmids.nextUsed(0); id >= 0; id = smmu.vmids.nextUsed(id + 1)) {
        this.report({
          kind: "leak",
          time: this.now,
          message: `VMID ${id} of ${smmu.name} is still allocated after teardown`,
          id: { space: "vmid", unit: smmu.name, value: id },
          history: this.historyOf("vmid", smmu.name, id),
        });
      }
      tables += smmu.l2Tables.size * 4;
    }
    const subsys = this.m.subsys;
    if (subsys.pasids.size(subsys.globalPasidSet) > 0)
      this.checkPasidLeaks((p) => subsys.pasids.has(p));
    const live = this.m.frames.liveFrames - tables;
    if (live !== framesBaseline) {
      this.report({
        kind: "leak",
        time: this.now,
        message: `${live - framesBaseline} page frames still allocated after teardown (baseline ${framesBaseline} plus ${tables} in L2 stream tables, now ${live + tables})`,
      });
    }
  }
}
