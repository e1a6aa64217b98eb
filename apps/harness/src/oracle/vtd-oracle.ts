// The isolation oracle on a VT-d machine (DESIGN.md checks 1-4 and 6), live on every DMA page: the
// unit's answer next to a fresh uncached walk of the tables in memory and next to what the
// domain's owner mapped; after every attachment change, the entries in memory next to what is
// attached; domain IDs and PASIDs followed through their lives; leaks at the end.

import type { DmarDomain, IntelIommu } from "@iommu-sim/intel-vtd/driver";
import {
  IQER_REG,
  PGTT_PT,
  PGTT_SL,
  VTD_REG,
  vtdFaultReasonName,
} from "@iommu-sim/intel-vtd/format";
import {
  VTD_KIND_FIRST_STAGE,
  VTD_KIND_NESTED,
  VTD_PASID_NONE,
  type VtdUnit,
} from "@iommu-sim/intel-vtd/hw";
import type { VtdMachine } from "@iommu-sim/intel-vtd/testing";
import {
  AT_TRANSLATION_REQUEST,
  AT_UNTRANSLATED,
  type Device,
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  type DmaPageObserver,
  IOMMU_DOMAIN_BLOCKED,
  IOMMU_DOMAIN_IDENTITY,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDmaCookie,
  type IommuDomain,
  iommuGetDomainForDev,
  iommuGetDomainForDevPasid,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
import { fieldOf } from "@iommu-sim/iommu-core/platform";
import { SHADOW_BLOCKED, SHADOW_IDENTITY, SHADOW_PAGING, ShadowDomain } from "./shadow.js";
import { type HistoryEvent, hex, type MissingInvalidation, type Violation } from "./violation.js";
import { diagnoseVtdStale, kindName } from "./vtd-diagnose.js";
import { VtdEntryWatch } from "./vtd-hitless.js";
import { VtdInvalidationLog } from "./vtd-invalidation-log.js";

const PAGE = 4096;
const IQEI = fieldOf(IQER_REG, "IQEI");
/** Violations kept in full; more are only counted. */
const MAX_VIOLATIONS = 64;

/** Per-device state of the per-page check. */
interface DeviceRecord {
  readonly dev: Device;
  readonly hw: VtdUnit;
  /** The driver's view of the unit (domain IDs of the domains attached through it). */
  readonly iommu: IntelIommu | null;
  /** The PASIDs attached at the last configuration check (a detach is checked once after). */
  pasids: number[];
  /** The context of the last page checked: its PASID, the attachment epoch, the domain, the shadow. */
  pasid: number;
  epoch: number;
  domain: IommuDomain | null;
  shadow: ShadowDomain;
}

/** Counters of the oracle. */
export interface VtdOracleStats {
  /** DMA pages checked. */
  pages: number;
  /** Stale hits that gave exactly what the owner maps (not reported). */
  benignStale: number;
  /** Violations seen, including those beyond the ones kept. */
  violations: number;
}

/**
 * Watches a VtdMachine. The harness tells it what owners do (domains, maps, attachments, PASIDs);
 * the devices report every page they reach (`Device.observer`); the driver reports domain IDs.
 */
export class VtdOracle implements DmaPageObserver {
  readonly violations: Violation[] = [];
  readonly stats: VtdOracleStats = { pages: 0, benignStale: 0, violations: 0 };
  /** Tolerate stale hits on DMA-API pages unmapped lazily (flush queue not yet drained). */
  lazy = false;

  private readonly m: VtdMachine;
  private readonly shadows = new Map<IommuDomain, ShadowDomain>();
  private readonly identity = new ShadowDomain(SHADOW_IDENTITY, "identity");
  private readonly blocked = new ShadowDomain(SHADOW_BLOCKED, "blocked");
  private readonly records = new Map<Device, DeviceRecord>();
  private last: DeviceRecord | null = null;
  private epoch = 1;
  private readonly req = newTranslationRequest();
  private readonly res = newTranslationResult();
  /** Histories of IDs: "did:dmar0:5", "pasid:7". */
  private readonly histories = new Map<string, HistoryEvent[]>();
  /** IDs already reported in their current life (key → allocation count at report). */
  private readonly reported = new Map<string, number>();
  private readonly lives = new Map<string, number>();
  private readonly staleSeen = new Set<string>();
  /** The domain each domain ID was last handed to ("dmar0:5" → domain). */
  private readonly didOwners = new Map<string, { unit: IntelIommu; did: number; domain: object }>();
  /** Refused descriptors and given-up waits already reported, per unit. */
  private readonly queueErrorsSeen = new Map<VtdUnit, { refused: number; timeouts: number }>();
  /** Devices already reported for an unexpected page group response. */
  private readonly unexpectedPrgSeen = new Set<Device>();

  /** What the units' invalidation queues carried out. */
  private readonly invLog: VtdInvalidationLog;
  /** Context and PASID entries sampled after every store (check 5). */
  private readonly entries: VtdEntryWatch;
  /** The log mark at the start of the last operation that changed (device, PASID)'s context. */
  private readonly contextMarks = new Map<string, number>();

  constructor(machine: VtdMachine) {
    this.m = machine;
    this.entries = new VtdEntryWatch(machine.mem);
    this.invLog = new VtdInvalidationLog(
      machine.units.map((u) => u.hw),
      () => this.now,
    );
    machine.driver.hooks = {
      didAllocated: (unit, did, domain) => this.didAllocated(unit, did, domain),
      didFreed: (unit, did, domain) => this.didFreed(unit, did, domain),
    };
  }

  private get now(): number {
    return this.m.clock.now;
  }

  // --- What the owners do --------------------------------------------------------------------------

  /** Check every page `dev` reaches from now on. */
  watch(dev: Device): void {
    const hw = this.m.hwFor(dev.rid);
    if (hw === null) return;
    const iommu = this.m.units.find((u) => u.hw === hw)?.iommu ?? null;
    this.records.set(dev, {
      dev,
      hw,
      iommu,
      pasids: [],
      pasid: -2,
      epoch: 0,
      domain: null,
      shadow: this.blocked,
    });
    dev.observer = this;
    this.entries.watch(dev, hw);
  }

  /** Stop checking `dev` (unplugged). */
  unwatch(dev: Device): void {
    this.checkTorn();
    this.records.delete(dev);
    if (this.last?.dev === dev) this.last = null;
    dev.observer = null;
    this.entries.unwatch(dev);
  }

  /** A paging domain an owner will map into. */
  domainCreated(domain: IommuDomain, label: string): ShadowDomain {
    let s = this.shadows.get(domain);
    if (s === undefined) {
      s = new ShadowDomain(SHADOW_PAGING, label);
      // First-stage tables have no write-only pages: a writable page is present, so readable.
      s.writeImpliesRead = (domain as Partial<DmarDomain>).useFirstLevel === true;
      this.shadows.set(domain, s);
    }
    return s;
  }

  /**
   * The owner freed `domain`: nothing of it may stay behind in the driver (check 4): no cache tag
   * (each one is an attachment whose detach forgot it) and no domain ID still allocated to it on
   * any unit (the ID is lost to every later domain).
   */
  domainFreed(domain: IommuDomain): void {
    this.shadows.delete(domain);
    const label = `domain#${domain.id}`;
    const tags = (domain as Partial<DmarDomain>).cacheTags?.tags ?? [];
    if (tags.length > 0) {
      const list = tags
        .map(
          (t) =>
            `${["IOTLB", "device-TLB", "nesting IOTLB", "nesting device-TLB"][t.kind] ?? t.kind} tag (DID ${t.id}` +
            `${t.pasid === NO_PASID || t.pasid === 0 ? "" : `, PASID ${t.pasid}`}${t.dev === null ? "" : `, ${t.dev.name}`}, ${t.users} user${t.users === 1 ? "" : "s"})`,
        )
        .join(", ");
      this.report({
        kind: "leak",
        time: this.now,
        message: `${label} was freed with ${tags.length} cache tag(s) still assigned: ${list}; the detach that should have unassigned them did not (cache_tag_unassign_domain)`,
      });
    }
    for (const [key, o] of this.didOwners) {
      if (o.domain !== domain) continue;
      this.didOwners.delete(key);
      if (!o.unit.domainIds.has(o.did)) continue;
      const history = [...(this.histories.get(idKey("did", o.unit.name, o.did)) ?? [])];
      this.report({
        kind: "leak",
        time: this.now,
        message: `${label} was freed but its domain ID ${o.did} of ${o.unit.name} is still allocated (domain_detach_iommu never gave it back)`,
        id: { space: "did", unit: o.unit.name, value: o.did },
        history,
      });
    }
    this.attachmentsChanged();
  }

  /** The owner mapped [iova, iova + size) to pa. */
  mapped(domain: IommuDomain, iova: number, pa: number, size: number, prot: number): void {
    this.domainCreated(domain, `domain#${domain.id}`).map(iova, pa, size, prot);
  }

  /**
   * The owner's unmap of [iova, iova + size) returned (`op` says which call, for reports). For a
   * lazy DMA-API unmap the pages may stay cached until the domain's flush queue flushes next.
   */
  unmapped(
    domain: IommuDomain,
    iova: number,
    size: number,
    op: string,
    lazy = false,
    seq = -1,
  ): void {
    const mark = lazy ? fqFlushes(domain) : -1;
    this.shadows.get(domain)?.unmap(iova, size, `${op} at t=${this.now}`, mark, seq);
    this.checkQueues();
  }

  /**
   * Where the invalidation log stands: an owner takes it before an operation that removes a
   * translation and hands it to `unmapped` or `contextChanged`, so that a stale entry can be
   * told apart from a flush that came too early.
   */
  mark(): number {
    return this.invLog.mark();
  }

  /** What (dev, pasid) translates through changed by an operation that started at `seq`. */
  contextChanged(dev: Device, pasid: number, seq: number): void {
    this.contextMarks.set(`${dev.name}:${pasid}`, seq);
  }

  /**
   * An attachment changed somewhere: contexts are resolved again, and the entries in memory must
   * now say what is attached (checkConfig), whether or not a DMA comes to show it.
   */
  attachmentsChanged(): void {
    this.epoch++;
    this.checkTorn();
    this.checkConfig();
    this.checkQueues();
  }

  /**
   * The checks that need no DMA, for a driver of the oracle to run between two operations: the
   * entries in memory against the attachments, the invalidation queues, the page group responses.
   */
  checkpoint(): void {
    this.checkTorn();
    this.checkConfig();
    this.checkQueues();
    this.checkUnexpectedResponses();
  }

  /**
   * Check 5: what the hardware could have seen of each context and PASID entry between the
   * stores of the operation that just ended was the entry before, after, or not present.
   */
  private checkTorn(): void {
    for (const t of this.entries.settle()) {
      const where = `${t.device}${t.pasid === null ? "" : ` PASID ${t.pasid}`}`;
      const entry = t.pasid === null ? "context entry" : "PASID entry";
      const key = `torn:${where}:${t.seen}`;
      if (this.staleSeen.has(key)) continue;
      this.staleSeen.add(key);
      this.report({
        kind: "torn-update",
        time: this.now,
        message:
          t.illegal !== null
            ? `${where}: between two stores the ${entry} in ${t.unit}'s memory was present and illegal (fault ${hex(t.illegal)}, ${vtdFaultReasonName(t.illegal)}): ${t.unit} could have used it`
            : `${where}: between two stores the ${entry} in ${t.unit}'s memory was present as neither the old nor the new configuration: seen "${t.seen}", before "${t.before}", after "${t.after}"`,
      });
    }
  }

  /** Add an event to an ID's history. */
  note(space: "pasid" | "did", unit: string | null, value: number, event: string): void {
    const key = idKey(space, unit, value);
    let h = this.histories.get(key);
    if (h === undefined) {
      h = [];
      this.histories.set(key, h);
    }
    h.push({ time: this.now, event });
    if (h.length > 32) h.splice(0, h.length - 32);
  }

  /** A global PASID was allocated (for `owner`): it must not be in any cache now. */
  pasidAllocated(pasid: number, owner: string): void {
    const key = idKey("pasid", null, pasid);
    this.lives.set(key, (this.lives.get(key) ?? 0) + 1);
    this.note("pasid", null, pasid, `allocated to ${owner}`);
    this.checkPasidUnused(pasid, "allocated again");
  }

  /** A global PASID went back to the allocator: no cache may hold it any more. */
  pasidFreed(pasid: number): void {
    this.note("pasid", null, pasid, "freed");
    for (const rec of this.records.values()) {
      const attached = iommuGetDomainForDevPasid(rec.dev, pasid);
      if (attached === null) continue;
      this.reportId(
        "pasid",
        null,
        pasid,
        `PASID ${pasid} freed while still attached to ${rec.dev.name} (domain#${attached.id}): it can be handed to another owner and reach that domain`,
        { descriptor: "none: detach the PASID before freeing it", fields: {} },
      );
      return;
    }
    this.checkPasidUnused(pasid, "freed");
  }

  private didAllocated(unit: IntelIommu, did: number, domain: DmarDomain): void {
    this.didOwners.set(`${unit.name}:${did}`, { unit, did, domain });
    const key = idKey("did", unit.name, did);
    this.lives.set(key, (this.lives.get(key) ?? 0) + 1);
    this.note("did", unit.name, did, `allocated to domain#${domain.id}`);
    this.checkDidUnused(unit, did, "allocated again");
  }

  private didFreed(unit: IntelIommu, did: number, domain: DmarDomain): void {
    this.note("did", unit.name, did, `freed by domain#${domain.id}`);
    if (unit.domainIds.has(did)) {
      // The driver let go of the ID but never gave it back to the allocator: lost for good.
      this.didOwners.delete(`${unit.name}:${did}`);
      this.report({
        kind: "leak",
        time: this.now,
        message: `domain#${domain.id} let go of domain ID ${did} of ${unit.name}, but the ID is still allocated (never returned to the allocator)`,
        id: { space: "did", unit: unit.name, value: did },
        history: [...(this.histories.get(idKey("did", unit.name, did)) ?? [])],
      });
      return;
    }
    this.checkDidUnused(unit, did, "freed");
  }

  // --- Check 1 and 2: every DMA page --------------------------------------------------------------

  dmaPage(
    dev: Device,
    pasid: number,
    iovaPfn: number,
    access: number,
    privileged: boolean,
    pa: number,
    viaAtc: boolean,
  ): void {
    this.stats.pages++;
    let rec = this.last;
    if (rec === null || rec.dev !== dev) {
      rec = this.records.get(dev) ?? null;
      if (rec === null) return;
      this.last = rec;
    }
    if (rec.epoch !== this.epoch || rec.pasid !== pasid) this.resolve(rec, pasid);
    const offset = pa % PAGE;
    const req = this.req;
    const res = this.res;
    req.rid = dev.rid;
    req.sid = dev.sid;
    req.pasid = pasid;
    req.iovaPfn = iovaPfn;
    req.offset = offset;
    req.access = access;
    req.privileged = privileged;
    req.at = AT_UNTRANSLATED;
    rec.hw.translateUncached(req, res);
    const fresh = res.status === XLATE_OK && res.pa === pa;
    const shadow = rec.shadow;
    let allowed: boolean;
    let expectedPa = -1;
    if (shadow.kind === SHADOW_PAGING) {
      const e = shadow.lookup(iovaPfn);
      if (e < 0) allowed = false;
      else {
        expectedPa = Math.floor(e / 4) * PAGE + offset;
        const prot = shadow.grants(e);
        const need =
          ((access & DMA_WRITE) !== 0 ? IOMMU_WRITE : 0) |
          ((access & (DMA_READ | DMA_EXEC)) !== 0 ? IOMMU_READ : 0);
        allowed = expectedPa === pa && (prot & need) === need;
      }
    } else if (shadow.kind === SHADOW_IDENTITY) {
      expectedPa = iovaPfn * PAGE + offset;
      allowed = expectedPa === pa;
    } else {
      allowed = false;
    }
    if (fresh && allowed) return;
    this.slowPath(rec, pasid, iovaPfn, access, privileged, pa, viaAtc, fresh, allowed, expectedPa);
  }

  /** Find what is attached at (device, pasid) now, and its shadow. */
  private resolve(rec: DeviceRecord, pasid: number): void {
    const dev = rec.dev;
    const domain =
      pasid === NO_PASID ? iommuGetDomainForDev(dev) : iommuGetDomainForDevPasid(dev, pasid);
    rec.domain = domain;
    rec.pasid = pasid;
    rec.epoch = this.epoch;
    if (domain === null || domain.type === IOMMU_DOMAIN_BLOCKED) rec.shadow = this.blocked;
    else if (domain.type === IOMMU_DOMAIN_IDENTITY) rec.shadow = this.identity;
    else rec.shadow = this.shadows.get(domain) ?? this.domainCreated(domain, `domain#${domain.id}`);
  }

  /** Whether the owner's map lets `access` (not privileged, not exec) reach page `iovaPfn`. */
  private ownerAllows(shadow: ShadowDomain, iovaPfn: number, access: number): boolean {
    if (shadow.kind === SHADOW_IDENTITY) return true;
    if (shadow.kind !== SHADOW_PAGING) return false;
    const e = shadow.lookup(iovaPfn);
    if (e < 0) return false;
    const need = (access & DMA_WRITE) !== 0 ? IOMMU_WRITE : IOMMU_READ;
    return (shadow.grants(e) & need) === need;
  }

  /**
   * A DMA page faulted. When the owner maps the page with that access (a plain read or write, not
   * privileged, not exec, which the shadow does not model), the fault is spurious: a cache
   * answered from before the map (a stale not-present entry, an old configuration), or the
   * tables lost the mapping.
   */
  dmaFault(
    dev: Device,
    pasid: number,
    iovaPfn: number,
    access: number,
    privileged: boolean,
    viaAtc: boolean,
  ): void {
    const rec = this.records.get(dev);
    if (rec === undefined || privileged || (access & DMA_EXEC) !== 0) return;
    if (rec.epoch !== this.epoch || rec.pasid !== pasid) this.resolve(rec, pasid);
    if (!this.ownerAllows(rec.shadow, iovaPfn, access)) return;
    const key = `sf:${dev.name}:${pasid}:${iovaPfn}`;
    if (this.staleSeen.has(key)) return;
    this.staleSeen.add(key);
    const req = this.req;
    req.rid = dev.rid;
    req.sid = dev.sid;
    req.pasid = pasid;
    req.iovaPfn = iovaPfn;
    req.offset = 0;
    req.access = access;
    req.privileged = false;
    req.at = AT_UNTRANSLATED;
    const accessName = (access & DMA_WRITE) !== 0 ? "write" : "read";
    const where = `${dev.name}${pasid === NO_PASID ? "" : ` PASID ${pasid}`} ${accessName} at ${hex(iovaPfn * PAGE)}`;
    if (dev.atsEnabled && !viaAtc) {
      // The device asked with an ATS Translation Request: the configuration may refuse those.
      req.at = AT_TRANSLATION_REQUEST;
      rec.hw.translateUncached(req, this.res);
      req.at = AT_UNTRANSLATED;
      if (this.res.status !== XLATE_OK) {
        this.report({
          kind: "spurious-fault",
          time: this.now,
          message:
            `${where} faulted although ${rec.shadow.label} maps it: ATS is enabled on ${dev.name}, ` +
            `but its configuration refuses translation requests (${this.freshText()})`,
        });
        return;
      }
    }
    rec.hw.translateUncached(req, this.res);
    const tablesOk = this.res.status === XLATE_OK;
    if (!tablesOk) {
      this.report({
        kind: "spurious-fault",
        time: this.now,
        message: `${where} faulted although ${rec.shadow.label} maps it: the tables in memory do not (${this.freshText()})`,
      });
      return;
    }
    const { entry, missing } = diagnoseVtdStale(
      rec.dev,
      rec.hw,
      pasid,
      iovaPfn,
      access,
      false,
      viaAtc,
    );
    this.report({
      kind: "spurious-fault",
      time: this.now,
      message:
        `${where} faulted (reason ${hex(dev.lastFaultCode)}, ${vtdFaultReasonName(dev.lastFaultCode)}) although ${rec.shadow.label} maps it and the tables give ${this.freshText()}: ` +
        `a stale ${entry.cache} entry of ${entry.where} answered; missing: ${missing.descriptor} ${fieldText(missing.fields)}`,
      staleEntry: entry,
      missingInvalidation: missing,
    });
  }

  private slowPath(
    rec: DeviceRecord,
    pasid: number,
    iovaPfn: number,
    access: number,
    privileged: boolean,
    pa: number,
    viaAtc: boolean,
    fresh: boolean,
    allowed: boolean,
    expectedPa: number,
  ): void {
    const dev = rec.dev;
    const iova = iovaPfn * PAGE + (pa % PAGE);
    const accessName =
      (access & DMA_WRITE) !== 0 ? "write" : (access & DMA_EXEC) !== 0 ? "exec" : "read";
    const dma = {
      device: dev.name,
      pasid: pasid === NO_PASID ? null : pasid,
      iova: hex(iova),
      access: accessName,
      pa: hex(pa),
      expected: allowed
        ? hex(pa)
        : expectedPa >= 0
          ? hex(expectedPa)
          : rec.shadow.kind === SHADOW_BLOCKED
            ? "nothing (blocked)"
            : "a fault (not mapped)",
    };
    if (!fresh) {
      if (allowed) {
        // The cache answered what the owner maps anyway (e.g. the same page mapped again).
        this.stats.benignStale++;
        return;
      }
      // A lazy unmap may stay cached until the domain's flush queue flushes next.
      const mark = rec.shadow.lazyFlushMark(iovaPfn);
      if (mark >= 0 && rec.domain !== null && fqFlushes(rec.domain) === mark) return;
      const key = `${dev.name}:${pasid}:${iovaPfn}`;
      if (this.staleSeen.has(key)) return;
      this.staleSeen.add(key);
      const { entry, missing } = diagnoseVtdStale(
        rec.dev,
        rec.hw,
        pasid,
        iovaPfn,
        access,
        privileged,
        viaAtc,
      );
      const removed = rec.shadow.removal(iovaPfn);
      const history: HistoryEvent[] =
        removed === undefined
          ? []
          : [{ time: this.now, event: `the mapping was removed by ${removed}` }];
      // Was the entry covered by an invalidation during that operation, and filled again after?
      const opMark =
        removed !== undefined
          ? rec.shadow.removalMark(iovaPfn)
          : (this.contextMarks.get(`${dev.name}:${pasid}`) ?? -1);
      const early = this.invLog.coveringSince(opMark, rec.hw.name, dev.rid & 0xffff, entry);
      const diagnosis =
        early === null
          ? `; missing: ${missing.descriptor} ${fieldText(missing.fields)}`
          : `; ${early.descriptor} ${fieldText(early.fields)} covered it at t=${early.time}, during that operation, ` +
            "but the entry was filled again after it: the invalidation came too early " +
            "(before the entry was cleared, or before a walk or translation request that raced with it)";
      this.report({
        kind: "stale-translation",
        time: this.now,
        message:
          `${dev.name}${pasid === NO_PASID ? "" : ` PASID ${pasid}`} ${accessName} at ${hex(iova)} reached ${hex(pa)} ` +
          `through a stale ${entry.cache} entry of ${entry.where}; the tables in memory give ${this.freshText()}` +
          (removed === undefined ? "" : ` (removed by ${removed})`) +
          diagnosis,
        dma,
        staleEntry: entry,
        missingInvalidation: missing,
        ...(early === null ? {} : { earlyInvalidation: early }),
        history,
      });
      return;
    }
    const key = `iso:${dev.name}:${pasid}:${iovaPfn}`;
    if (this.staleSeen.has(key)) return;
    this.staleSeen.add(key);
    this.report({
      kind: "isolation",
      time: this.now,
      message:
        `${dev.name}${pasid === NO_PASID ? "" : ` PASID ${pasid}`} ${accessName} at ${hex(iova)} reached ${hex(pa)}, ` +
        `which the tables map but ${rec.shadow.label} does not (expected ${dma.expected})`,
      dma,
    });
  }

  private freshText(): string {
    const res = this.res;
    return res.status === XLATE_OK
      ? hex(res.pa)
      : `a fault (reason ${hex(res.code)}, ${vtdFaultReasonName(res.code)})`;
  }

  // --- Check 3: IDs ----------------------------------------------------------------------------------

  private checkDidUnused(unit: IntelIommu, did: number, what: string): void {
    const hw = this.m.units.find((u) => u.iommu === unit)?.hw;
    if (hw === undefined) return;
    const held: string[] = [];
    const iotlb = hw.iotlb.entries().filter((e) => e.did === did);
    if (iotlb.length > 0) {
      const e = iotlb[0] as (typeof iotlb)[number];
      held.push(
        `${iotlb.length} IOTLB entr${iotlb.length === 1 ? "y" : "ies"} (e.g. ${kindName(e.kind)} ${e.pasid === VTD_PASID_NONE ? "" : `PASID ${e.pasid} `}${hex(e.vpn * PAGE)} → ${hex(e.paFrame * PAGE)})`,
      );
    }
    const pc = hw.pasidCache.entries().filter((e) => e.did === did && e.value.status === 0);
    if (pc.length > 0) held.push(`${pc.length} PASID-cache entr${pc.length === 1 ? "y" : "ies"}`);
    const psc = hw.psc.entries().filter((e) => e.did === did);
    if (psc.length > 0)
      held.push(`${psc.length} paging-structure-cache entr${psc.length === 1 ? "y" : "ies"}`);
    const cc = hw.contextCache.entries().filter((e) => e.did === did && e.value.status === 0);
    if (cc.length > 0) held.push(`${cc.length} context-cache entr${cc.length === 1 ? "y" : "ies"}`);
    if (held.length === 0) return;
    const first = iotlb[0];
    const missing: MissingInvalidation =
      iotlb.length > 0 || psc.length > 0
        ? first !== undefined &&
          (first.kind === VTD_KIND_FIRST_STAGE || first.kind === VTD_KIND_NESTED)
          ? {
              descriptor: "PASID-based IOTLB invalidation (type 6)",
              fields: { G: "PASID-selective", DID: did, PASID: first.pasid },
            }
          : { descriptor: "IOTLB invalidation (type 2)", fields: { G: "domain", DID: did } }
        : pc.length > 0
          ? { descriptor: "PASID-cache invalidation (type 7)", fields: { G: "domain", DID: did } }
          : {
              descriptor: "context-cache invalidation (type 1)",
              fields: { G: "domain", DID: did },
            };
    this.reportId(
      "did",
      unit.name,
      did,
      `domain ID ${did} of ${unit.name} ${what} while ${held.join(", ")} still tagged with it`,
      missing,
    );
  }

  private checkPasidUnused(pasid: number, what: string): void {
    const held: string[] = [];
    let missing: MissingInvalidation | null = null;
    for (const { hw } of this.m.units) {
      const pc = hw.pasidCache.entries().filter((e) => e.pasid === pasid && e.value.status === 0);
      if (pc.length > 0) {
        const e = pc[0] as (typeof pc)[number];
        held.push(`${hw.name}'s PASID cache (SID ${hex(e.sid)}, DID ${e.did})`);
        missing ??= {
          descriptor: "PASID-cache invalidation (type 7)",
          fields: { G: "PASID-selective", DID: e.did, PASID: pasid },
        };
      }
      const iotlb = hw.iotlb.entries().filter((e) => e.pasid === pasid);
      if (iotlb.length > 0) {
        const e = iotlb[0] as (typeof iotlb)[number];
        held.push(
          `${iotlb.length} IOTLB entr${iotlb.length === 1 ? "y" : "ies"} of ${hw.name} (DID ${e.did})`,
        );
        missing ??= {
          descriptor: "PASID-based IOTLB invalidation (type 6)",
          fields: { G: "PASID-selective", DID: e.did, PASID: pasid },
        };
      }
      const psc = hw.psc.entries().filter((e) => e.pasid === pasid);
      if (psc.length > 0) held.push(`${psc.length} paging-structure-cache entries of ${hw.name}`);
    }
    for (const dev of this.m.bus.devices()) {
      const n = dev.atc?.entries().filter((e) => e.pasid === pasid).length ?? 0;
      if (n > 0) {
        held.push(`${n} ATC entr${n === 1 ? "y" : "ies"} of ${dev.name}`);
        missing ??= {
          descriptor: "PASID-based device-TLB invalidation (type 8)",
          fields: { SID: hex(dev.rid), PASID: pasid, G: 0 },
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

  private reportId(
    space: "pasid" | "did",
    unit: string | null,
    value: number,
    message: string,
    missing: MissingInvalidation,
  ): void {
    const key = idKey(space, unit, value);
    const life = this.lives.get(key) ?? 0;
    const last = this.reported.get(key);
    // One report per life, and none for the allocation right after a reported free.
    if (last === life || (last === life - 1 && message.includes("allocated again"))) return;
    this.reported.set(key, life);
    this.report({
      kind: "id-reuse",
      time: this.now,
      message: `${message}; missing: ${missing.descriptor} ${fieldText(missing.fields)}`,
      id: { space, unit, value },
      missingInvalidation: missing,
      history: [...(this.histories.get(key) ?? [])],
    });
  }

  // --- Check 1 without a DMA: the entries in memory against the attachments ------------------------

  /**
   * For every watched device, at the RID and at every PASID attached now or at the last check:
   * the context / PASID entry in memory must translate through what is attached there and nothing
   * else: no entry (or a blocked one) when nothing or the blocked domain is, pass-through for the
   * identity domain, and for a paging domain its own table root, stage and domain ID on the unit.
   * An entry that reaches other tables (or any, where nothing is attached) is an isolation
   * violation at once, before a DMA shows it; a missing one is reported as a spurious fault.
   */
  private checkConfig(): void {
    for (const rec of this.records.values()) {
      const dev = rec.dev;
      const attached = dev.iommu?.group?.pasidArray;
      const now: number[] = [];
      if (attached !== undefined) for (const p of attached.keys()) now.push(p);
      this.checkEntry(rec, NO_PASID, iommuGetDomainForDev(dev));
      for (const p of now) this.checkEntry(rec, p, iommuGetDomainForDevPasid(dev, p));
      for (const p of rec.pasids) if (!now.includes(p)) this.checkEntry(rec, p, null);
      rec.pasids = now;
    }
  }

  private checkEntry(rec: DeviceRecord, pasid: number, domain: IommuDomain | null): void {
    const dev = rec.dev;
    const req = newTranslationRequest();
    req.rid = dev.rid;
    req.sid = dev.sid;
    req.pasid = pasid;
    const ins = rec.hw.inspect(req);
    const ctx = ins.context.fresh;
    // What the entry in memory gives: nothing, pass-through, or a table (stage, root, DID).
    let present: boolean;
    let passThrough = false;
    let firstStage = false;
    let root = -1;
    let did = -1;
    let levels = -1;
    let entryName: string;
    if (ins.pasidEntry !== null) {
      const pe = ins.pasidEntry.fresh;
      entryName = `PASID entry ${ins.pasidEntry.pasid}${pasid === NO_PASID ? " (RID_PASID)" : ""}`;
      present = ctx.status === 0 && pe !== null && pe.status === 0;
      if (present && pe !== null) {
        passThrough = pe.pgtt === PGTT_PT;
        firstStage = pe.pgtt !== PGTT_SL && !passThrough;
        root = pe.pgtt === PGTT_SL ? pe.slptptr : pe.flptr;
        levels = pe.pgtt === PGTT_SL ? pe.ssLevels : pe.fsLevels;
        did = pe.did;
      }
    } else {
      entryName = "context entry";
      // Legacy mode has no PASIDs: a request with one always faults.
      present = pasid === NO_PASID && ctx.status === 0;
      if (present) {
        passThrough = ctx.tt === 2;
        root = ctx.slptptr;
        levels = ctx.levels;
        did = ctx.did;
      }
    }
    const paging = domain !== null && domain.type !== IOMMU_DOMAIN_BLOCKED;
    const identity = domain !== null && domain.type === IOMMU_DOMAIN_IDENTITY;
    const table = paging && !identity ? (domain as Partial<DmarDomain>).pgtable : undefined;
    if (paging && !identity && table === undefined) return; // not a table the oracle can read
    let problem: string | null = null;
    let grantsMore = false;
    if (!paging) {
      if (present) {
        problem = passThrough
          ? "is present and passes requests through"
          : `is present and translates through ${hex(root)} (DID ${did})`;
        grantsMore = true;
      }
    } else if (!present) {
      problem = `is not present (${ins.pasidEntry?.fresh === null ? "no PASID table" : "P clear or invalid"})`;
    } else if (identity) {
      if (!passThrough) {
        problem = `translates through ${hex(root)} (DID ${did}) instead of passing requests through`;
        grantsMore = true;
      }
    } else {
      const d = domain as DmarDomain;
      const wantRoot = (table as DmarDomain["pgtable"]).rootPa;
      const wantDid = rec.iommu === null ? did : d.didOn(rec.iommu);
      if (passThrough) {
        problem = "passes requests through";
        grantsMore = true;
      } else if (root !== wantRoot) {
        problem = `translates through ${hex(root)}, not the domain's table at ${hex(wantRoot)}`;
        grantsMore = true;
      } else if (ins.pasidEntry !== null && firstStage !== d.useFirstLevel) {
        problem = `walks the table as ${firstStage ? "first" : "second"}-stage; the domain's is ${d.useFirstLevel ? "first" : "second"}-stage`;
        grantsMore = true;
      } else if (did !== wantDid) {
        problem = `tags what it caches with DID ${did}, not the domain's ID ${wantDid} (its invalidations miss them)`;
        grantsMore = true;
      } else if (levels !== d.levels) {
        // The walk would read the table's levels as the wrong ones: other addresses, other pages.
        problem = `walks ${levels} levels; the domain's table has ${d.levels}`;
        grantsMore = true;
      }
    }
    if (problem === null) return;
    const where = `${dev.name}${pasid === NO_PASID ? "" : ` PASID ${pasid}`}`;
    const key = `cfg:${where}:${problem}`;
    if (this.staleSeen.has(key)) return;
    this.staleSeen.add(key);
    const what =
      domain === null
        ? "nothing is attached"
        : domain.type === IOMMU_DOMAIN_BLOCKED
          ? "the blocked domain is attached"
          : identity
            ? "the identity domain is attached"
            : `${this.shadows.get(domain)?.label ?? `domain#${domain.id}`} is attached`;
    this.report({
      kind: grantsMore ? "isolation" : "spurious-fault",
      time: this.now,
      message: `${where}: ${what} there, but the ${entryName} in memory of ${rec.hw.name} ${problem}`,
    });
  }

  // --- Invalidation queues ---------------------------------------------------------------------------

  /**
   * Every invalidation the driver queued was carried out: the unit refused none (IQE, with the
   * bad descriptor replaced by a wait, so it never happened) and the driver never stopped waiting
   * for one (a time-out).
   */
  private checkQueues(): void {
    for (const { hw, iommu } of this.m.units) {
      const seen = this.queueErrorsSeen.get(hw) ?? { refused: 0, timeouts: 0 };
      const refused = hw.stats.invalidationErrors - seen.refused;
      const timeouts = (iommu.qi?.stats.timeouts ?? 0) - seen.timeouts;
      if (refused === 0 && timeouts === 0) continue;
      this.queueErrorsSeen.set(hw, {
        refused: hw.stats.invalidationErrors,
        timeouts: iommu.qi?.stats.timeouts ?? 0,
      });
      const iqei = (hw.read32(VTD_REG.IQER) >>> IQEI.shift) & IQEI.mask;
      this.report({
        kind: "invalidation-error",
        time: this.now,
        message:
          refused > 0
            ? `${hw.name} refused ${refused} invalidation descriptor(s) (IQE, last IQEI ${iqei}: ${IQEI_NAMES[iqei] ?? "unknown"}): the invalidation never happened`
            : `${iommu.name}: the driver gave up waiting for ${timeouts} invalidation batch(es)`,
      });
    }
  }

  // --- Check 6: page requests and faults -----------------------------------------------------------

  /** A device got a page group response for a group it had not asked (or asked and was answered). */
  private checkUnexpectedResponses(): void {
    for (const { dev } of this.records.values()) {
      if (!dev.priUnexpectedPrgIndex || this.unexpectedPrgSeen.has(dev)) continue;
      this.unexpectedPrgSeen.add(dev);
      this.report({
        kind: "page-request",
        time: this.now,
        message: `${dev.name}: a page group response came for a group it had not asked (PRI Unexpected PRG Index)`,
      });
    }
  }

  /**
   * Every page request group a device sent got exactly one response: none left outstanding, none
   * answered that it had not asked. Call before the devices go.
   */
  checkPageRequests(): void {
    for (const { dev } of this.records.values()) {
      if (!dev.priEnabled && dev.priOutstanding === 0 && !dev.priUnexpectedPrgIndex) continue;
      if (dev.priOutstanding > 0) {
        this.report({
          kind: "page-request",
          time: this.now,
          message: `${dev.name}: ${dev.priOutstanding} page request group(s) never answered`,
        });
      }
    }
    this.checkUnexpectedResponses();
  }

  /** Every fault the units took was recorded and read by the driver (none lost to overflow). */
  checkFaultsReported(): void {
    for (const { hw, iommu } of this.m.units) {
      if (hw.faults.suppressed > 0) {
        this.report({
          kind: "lost-fault",
          time: this.now,
          message: `${hw.name}: ${hw.faults.suppressed} fault(s) lost: the fault recording registers were full (PFO)`,
        });
      }
      if (hw.faults.recorded !== iommu.faultLog.length) {
        this.report({
          kind: "lost-fault",
          time: this.now,
          message: `${hw.name}: ${hw.faults.recorded} fault(s) recorded, ${iommu.faultLog.length} read by the driver`,
        });
      }
    }
  }

  // --- Check 4: leaks --------------------------------------------------------------------------------

  /**
   * After teardown: every domain ID back (with the history of each one that is not), no global
   * PASID allocated, frames back to `framesBaseline`, no page request or IOPF work pending.
   */
  checkLeaks(framesBaseline: number): void {
    const m = this.m;
    for (const { iommu } of m.units) {
      for (
        let did = iommu.domainIds.nextUsed(2);
        did >= 0;
        did = iommu.domainIds.nextUsed(did + 1)
      ) {
        this.report({
          kind: "leak",
          time: this.now,
          message: `domain ID ${did} of ${iommu.name} is still allocated after teardown`,
          id: { space: "did", unit: iommu.name, value: did },
          history: [...(this.histories.get(idKey("did", iommu.name, did)) ?? [])],
        });
      }
    }
    const pasids = m.subsys.pasids.size(m.subsys.globalPasidSet);
    if (pasids > 0) {
      for (const [key, h] of this.histories) {
        if (!key.startsWith("pasid:")) continue;
        const value = Number(key.slice(6));
        if (!m.subsys.pasids.has(value)) continue;
        this.report({
          kind: "leak",
          time: this.now,
          message: `PASID ${value} is still allocated after teardown`,
          id: { space: "pasid", unit: null, value },
          history: [...h],
        });
      }
    }
    // Context tables stay with their unit until it shuts down, as in the kernel.
    let tables = 0;
    for (const { iommu } of m.units) tables += iommu.contextTableFrames;
    const live = m.frames.liveFrames - tables;
    if (live !== framesBaseline) {
      this.report({
        kind: "leak",
        time: this.now,
        message: `${live - framesBaseline} page frames still allocated after teardown (baseline ${framesBaseline} plus ${tables} context tables, now ${live + tables})`,
      });
    }
  }

  private report(v: Violation): void {
    this.stats.violations++;
    if (this.violations.length < MAX_VIOLATIONS) this.violations.push(v);
  }
}

/** The flush count of `domain`'s flush queue (0 without one). */
function fqFlushes(domain: IommuDomain): number {
  return (domain.iovaCookie as IommuDmaCookie | null)?.fq?.flushes ?? 0;
}

/**
 * IQER_REG.IQEI: what made the unit refuse a descriptor, by the values the unit model reports
 * (the kernel prints only the number).
 *
 * @spec Intel VT-d Architecture Specification 10.4 IQER_REG
 */
const IQEI_NAMES: readonly string[] = [
  "none",
  "tail pointer beyond the queue",
  "descriptor fetch failed",
  "invalid descriptor type",
  "reserved field set",
  "descriptor width does not match the mode",
  "tail pointer not aligned",
];

function idKey(space: "pasid" | "did", unit: string | null, value: number): string {
  return space === "pasid" ? `pasid:${value}` : `did:${unit}:${value}`;
}

function fieldText(fields: Readonly<Record<string, string | number>>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}
