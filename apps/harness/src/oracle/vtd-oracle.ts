// The isolation oracle on a VT-d machine (DESIGN.md checks 1-4), live on every DMA page: the
// unit's answer next to a fresh uncached walk of the tables in memory and next to what the
// domain's owner mapped; domain IDs and PASIDs followed through their lives; leaks at the end.

import type { DmarDomain, IntelIommu } from "@iommu-sim/intel-vtd/driver";
import { vtdFaultReasonName } from "@iommu-sim/intel-vtd/format";
import {
  VTD_KIND_FIRST_STAGE,
  VTD_KIND_NESTED,
  VTD_PASID_NONE,
  type VtdDevConfig,
  type VtdPasidConfig,
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
import { SHADOW_BLOCKED, SHADOW_IDENTITY, SHADOW_PAGING, ShadowDomain } from "./shadow.js";
import {
  type HistoryEvent,
  hex,
  type MissingInvalidation,
  type StaleEntry,
  type Violation,
} from "./violation.js";

const PAGE = 4096;
/** Violations kept in full; more are only counted. */
const MAX_VIOLATIONS = 64;

/** Per-device state of the per-page check. */
interface DeviceRecord {
  readonly dev: Device;
  readonly hw: VtdUnit;
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

  constructor(machine: VtdMachine) {
    this.m = machine;
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
    this.records.set(dev, { dev, hw, pasid: -2, epoch: 0, domain: null, shadow: this.blocked });
    dev.observer = this;
  }

  /** Stop checking `dev` (unplugged). */
  unwatch(dev: Device): void {
    this.records.delete(dev);
    if (this.last?.dev === dev) this.last = null;
    dev.observer = null;
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

  domainFreed(domain: IommuDomain): void {
    this.shadows.delete(domain);
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
  unmapped(domain: IommuDomain, iova: number, size: number, op: string, lazy = false): void {
    const mark = lazy ? fqFlushes(domain) : -1;
    this.shadows.get(domain)?.unmap(iova, size, `${op} at t=${this.now}`, mark);
  }

  /** An attachment changed somewhere: contexts are resolved again. */
  attachmentsChanged(): void {
    this.epoch++;
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
    this.checkPasidUnused(pasid, "freed");
  }

  private didAllocated(unit: IntelIommu, did: number, domain: DmarDomain): void {
    const key = idKey("did", unit.name, did);
    this.lives.set(key, (this.lives.get(key) ?? 0) + 1);
    this.note("did", unit.name, did, `allocated to domain#${domain.id}`);
    this.checkDidUnused(unit, did, "allocated again");
  }

  private didFreed(unit: IntelIommu, did: number, domain: DmarDomain): void {
    this.note("did", unit.name, did, `freed by domain#${domain.id}`);
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
    const { entry, missing } = this.diagnose(rec, pasid, iovaPfn, access, false, viaAtc);
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
      const { entry, missing } = this.diagnose(rec, pasid, iovaPfn, access, privileged, viaAtc);
      const removed = rec.shadow.removal(iovaPfn);
      const history: HistoryEvent[] =
        removed === undefined
          ? []
          : [{ time: this.now, event: `the mapping was removed by ${removed}` }];
      this.report({
        kind: "stale-translation",
        time: this.now,
        message:
          `${dev.name}${pasid === NO_PASID ? "" : ` PASID ${pasid}`} ${accessName} at ${hex(iova)} reached ${hex(pa)} ` +
          `through a stale ${entry.cache} entry of ${entry.where}; the tables in memory give ${this.freshText()}` +
          (removed === undefined ? "" : ` (removed by ${removed})`) +
          `; missing: ${missing.descriptor} ${fieldText(missing.fields)}`,
        dma,
        staleEntry: entry,
        missingInvalidation: missing,
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

  /**
   * Which cache answered, and the descriptor that would have removed the entry. The ATC when the
   * device used it; else the first cached structure that differs from memory: context entry,
   * PASID entry, then the IOTLB entry for the page, then the paging-structure entries.
   */
  private diagnose(
    rec: DeviceRecord,
    pasid: number,
    iovaPfn: number,
    access: number,
    privileged: boolean,
    viaAtc: boolean,
  ): { entry: StaleEntry; missing: MissingInvalidation } {
    const dev = rec.dev;
    const hw = rec.hw;
    const sid = dev.rid & 0xffff;
    if (viaAtc) {
      const e = dev.atc
        ?.entries()
        .find(
          (a) =>
            a.pasid === pasid &&
            iovaPfn >= a.iovaPfn &&
            iovaPfn < a.iovaPfn + 2 ** (a.sizeShift - 12),
        );
      const order = e === undefined ? 0 : e.sizeShift - 12;
      const base = e === undefined ? iovaPfn : e.iovaPfn;
      return {
        entry: {
          cache: "device-tlb",
          where: dev.name,
          fields: {
            pasid: pasid === NO_PASID ? null : pasid,
            iova: hex(base * PAGE),
            pa: e === undefined ? null : hex(e.paBase),
            size: 2 ** (order + 12),
            perm: e === undefined ? null : permText(e.perm),
          },
        },
        missing:
          pasid === NO_PASID || pasid === 0
            ? {
                descriptor: "device-TLB invalidation (type 3)",
                fields: {
                  SID: hex(sid),
                  ADDR: hex(base * PAGE),
                  S: order > 0 ? 1 : 0,
                  pages: 2 ** order,
                },
              }
            : {
                descriptor: "PASID-based device-TLB invalidation (type 8)",
                fields: {
                  SID: hex(sid),
                  PASID: pasid,
                  ADDR: hex(base * PAGE),
                  S: order > 0 ? 1 : 0,
                  pages: 2 ** order,
                },
              },
      };
    }
    const req = newTranslationRequest();
    req.rid = dev.rid;
    req.sid = dev.sid;
    req.pasid = pasid;
    req.iovaPfn = iovaPfn;
    req.access = access;
    req.privileged = privileged;
    const ins = hw.inspect(req);
    const ctx = ins.context;
    if (ctx.cached !== null && !sameDevConfig(ctx.cached, ctx.fresh)) {
      return {
        entry: {
          cache: "context-cache",
          where: hw.name,
          fields: { SID: hex(sid), DID: ctx.cached.did, present: ctx.cached.status === 0 },
        },
        missing: {
          descriptor: "context-cache invalidation (type 1)",
          fields: { G: "device", SID: hex(sid), DID: ctx.cached.did },
        },
      };
    }
    const pe = ins.pasidEntry;
    if (
      pe !== null &&
      pe.cached !== null &&
      (pe.fresh === null || !samePasidConfig(pe.cached, pe.fresh))
    ) {
      return {
        entry: {
          cache: "pasid-cache",
          where: hw.name,
          fields: {
            SID: hex(sid),
            PASID: pe.pasid,
            DID: pe.cached.did,
            PGTT: pe.cached.pgtt,
            root: hex(pe.cached.pgtt === 2 ? pe.cached.slptptr : pe.cached.flptr),
          },
        },
        missing: {
          descriptor: "PASID-cache invalidation (type 7)",
          fields: { G: "PASID-selective", DID: pe.cached.did, PASID: pe.pasid },
        },
      };
    }
    const t = ins.iotlb;
    if (t !== null) {
      const am = t.sizeShift - 12;
      const tagPasid = t.pasid === VTD_PASID_NONE ? null : t.pasid;
      const firstStage = t.kind === VTD_KIND_FIRST_STAGE || t.kind === VTD_KIND_NESTED;
      return {
        entry: {
          cache: "iotlb",
          where: hw.name,
          fields: {
            DID: t.did,
            PASID: tagPasid,
            iova: hex(t.vpn * PAGE),
            pa: hex(t.paFrame * PAGE),
            size: 2 ** t.sizeShift,
            kind: kindName(t.kind),
            perm: permText(t.perm),
          },
        },
        missing: firstStage
          ? {
              descriptor: "PASID-based IOTLB invalidation (type 6)",
              fields: {
                G: "page",
                DID: t.did,
                PASID: tagPasid ?? 0,
                ADDR: hex(t.vpn * PAGE),
                AM: am,
              },
            }
          : {
              descriptor: "IOTLB invalidation (type 2)",
              fields: { G: "page", DID: t.did, ADDR: hex(t.vpn * PAGE), AM: am },
            },
      };
    }
    if (ins.psc.length > 0) {
      const p = ins.psc[0] as (typeof ins.psc)[number];
      const firstStage = p.kind === VTD_KIND_FIRST_STAGE || p.kind === VTD_KIND_NESTED;
      const am = 9 * (p.level - 1);
      const base = p.tag * 512 ** (p.level - 1);
      return {
        entry: {
          cache: "paging-structure-cache",
          where: hw.name,
          fields: {
            DID: p.did,
            PASID: p.pasid === VTD_PASID_NONE ? null : p.pasid,
            level: p.level,
            table: hex(p.tableFrame * PAGE),
          },
        },
        missing: firstStage
          ? {
              descriptor: "PASID-based IOTLB invalidation (type 6)",
              fields: {
                G: "page",
                DID: p.did,
                PASID: p.pasid,
                ADDR: hex(base * PAGE),
                AM: am,
                IH: 0,
              },
            }
          : {
              descriptor: "IOTLB invalidation (type 2)",
              fields: { G: "page", DID: p.did, ADDR: hex(base * PAGE), AM: am, IH: 0 },
            },
      };
    }
    return {
      entry: { cache: "unknown", where: hw.name, fields: { SID: hex(sid) } },
      missing: { descriptor: "unknown", fields: {} },
    };
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

  // --- Check 6: page requests and faults -----------------------------------------------------------

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
      if (dev.priUnexpectedPrgIndex) {
        this.report({
          kind: "page-request",
          time: this.now,
          message: `${dev.name}: a page group response came for a group it had not asked (PRI Unexpected PRG Index)`,
        });
      }
    }
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

function idKey(space: "pasid" | "did", unit: string | null, value: number): string {
  return space === "pasid" ? `pasid:${value}` : `did:${unit}:${value}`;
}

function fieldText(fields: Readonly<Record<string, string | number>>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}

function permText(perm: number): string {
  return `${perm & 1 ? "r" : "-"}${perm & 2 ? "w" : "-"}${perm & 4 ? "x" : "-"}`;
}

function kindName(kind: number): string {
  return ["?", "first-stage", "second-stage", "nested", "pass-through"][kind] ?? String(kind);
}

function sameDevConfig(a: VtdDevConfig, b: VtdDevConfig): boolean {
  return (
    a.status === b.status &&
    a.did === b.did &&
    a.tt === b.tt &&
    a.slptptr === b.slptptr &&
    a.levels === b.levels &&
    a.pasidDirPtr === b.pasidDirPtr &&
    a.paside === b.paside &&
    a.dte === b.dte &&
    a.ridPasid === b.ridPasid
  );
}

function samePasidConfig(a: VtdPasidConfig, b: VtdPasidConfig): boolean {
  return (
    a.status === b.status &&
    a.pgtt === b.pgtt &&
    a.did === b.did &&
    a.slptptr === b.slptptr &&
    a.flptr === b.flptr &&
    a.fsLevels === b.fsLevels &&
    a.ssLevels === b.ssLevels
  );
}
