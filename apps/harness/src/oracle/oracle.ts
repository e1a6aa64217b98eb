// The isolation oracle's architecture-neutral half (DESIGN.md checks 1-6): every DMA page a
// device reaches is compared with a fresh uncached walk of the tables in memory and with what the
// domain's owner mapped; IDs are followed through their lives; page requests are answered once.
// An architecture adds how its hardware is inspected, its entries checked and its IDs named.

import {
  AT_TRANSLATION_REQUEST,
  AT_UNTRANSLATED,
  type CacheTag,
  type Device,
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  type DmaPageObserver,
  DmaReason,
  IOMMU_DOMAIN_BLOCKED,
  IOMMU_DOMAIN_IDENTITY,
  IOMMU_DOMAIN_SVA,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDmaCookie,
  type IommuDomain,
  type IommuMm,
  iommuGetDomainForDev,
  iommuGetDomainForDevPasid,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  type TranslationRequest,
  type TranslationResult,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
import type { LogicalClock } from "@iommu-sim/iommu-core/platform";
import { type Mm, type MmObserver, VM_READ, VM_WRITE } from "@iommu-sim/sva";
import { SHADOW_BLOCKED, SHADOW_IDENTITY, SHADOW_PAGING, ShadowDomain } from "./shadow.js";
import {
  type CacheName,
  type HistoryEvent,
  hex,
  type MissingInvalidation,
  type StaleEntry,
  type Violation,
} from "./violation.js";

const PAGE = 4096;
/** Violations kept in full; more are only counted. */
const MAX_VIOLATIONS = 64;
/** Operations whose end mark is kept (for diagnoses of entries they removed). */
const MAX_OP_ENDS = 4096;

/** The name spaces of the IDs the oracle follows: global PASIDs and per-IOMMU cache tags. */
export type IdSpace = "pasid" | "did" | "asid" | "vmid";

/** What the oracle needs of an IOMMU: its name and a walk that touches no cache. */
export interface OracleHardware {
  readonly name: string;
  translateUncached(req: TranslationRequest, out: TranslationResult): void;
}

/** Per-device state of the per-page check. */
export interface DeviceRecord<H extends OracleHardware> {
  readonly dev: Device;
  readonly hw: H;
  /** The PASIDs attached at the last configuration check (a detach is checked once after). */
  pasids: number[];
  /** The context of the last page checked: its PASID, the attachment epoch, the domain, the shadow. */
  pasid: number;
  epoch: number;
  domain: IommuDomain | null;
  shadow: ShadowDomain;
}

/** Counters of the oracle. */
export interface OracleStats {
  /** DMA pages checked. */
  pages: number;
  /** Stale hits that gave exactly what the owner maps (not reported). */
  benignStale: number;
  /** Violations seen, including those beyond the ones kept. */
  violations: number;
}

/** A check-5 finding, already worded by the architecture. */
export interface TornReport {
  /** What makes two findings the same (reported once). */
  readonly key: string;
  readonly message: string;
}

/** An invalidation that covered a stale entry during the removing operation. */
export interface EarlyInvalidation {
  readonly descriptor: string;
  readonly time: number;
  readonly fields: Readonly<Record<string, string | number>>;
}

/** A cache entry of an SVA context that translates to a given frame. */
export interface SvaCacheHit {
  /** The entry as a report names it ("dmar0's IOTLB (DID 1, PASID 3, 0x10002000)"). */
  readonly text: string;
  readonly entry: StaleEntry;
}

/** The user a process is charged to, as a bind's check sees it. */
export interface SvaChargeView {
  readonly path: string;
  readonly max: number;
  readonly current: number;
}

/** The machine an oracle watches: its clock. */
export interface OracleMachine {
  readonly clock: LogicalClock;
}

/**
 * The oracle. The harness tells it what owners do (domains, maps, attachments, PASIDs); the
 * devices report every page they reach (`Device.observer`); the drivers report their IDs.
 */
export abstract class IsolationOracle<H extends OracleHardware>
  implements DmaPageObserver, MmObserver
{
  readonly violations: Violation[] = [];
  readonly stats: OracleStats = { pages: 0, benignStale: 0, violations: 0 };
  /** Tolerate stale hits on DMA-API pages unmapped lazily (flush queue not yet drained). */
  lazy = false;

  protected readonly shadows = new Map<IommuDomain, ShadowDomain>();
  protected readonly identity = new ShadowDomain(SHADOW_IDENTITY, "identity");
  protected readonly blocked = new ShadowDomain(SHADOW_BLOCKED, "blocked");
  protected readonly records = new Map<Device, DeviceRecord<H>>();
  private last: DeviceRecord<H> | null = null;
  private epoch = 1;
  protected readonly req = newTranslationRequest();
  protected readonly res = newTranslationResult();
  /** Histories of IDs: "did:dmar0:5", "asid:7", "pasid:7". */
  protected readonly histories = new Map<string, HistoryEvent[]>();
  /** IDs already reported in their current life (key → allocation count at report). */
  private readonly reported = new Map<string, number>();
  protected readonly lives = new Map<string, number>();
  protected readonly staleSeen = new Set<string>();
  /** Devices already reported for an unexpected page group response. */
  private readonly unexpectedPrgSeen = new Set<Device>();
  /** Unexpected stall resumes already reported, per device (the device's counter then). */
  private readonly unexpectedResumesSeen = new Map<Device, number>();
  /** The log mark at the start of the last operation that changed (device, PASID)'s context. */
  private readonly contextMarks = new Map<string, number>();
  /**
   * The last MAX_OP_ENDS operations that returned, as a ring: the log mark at their start and at
   * their return (looked up only to word a diagnosis; recorded on every unmap, so kept cheap).
   */
  private readonly opStarts = new Float64Array(MAX_OP_ENDS).fill(-1);
  private readonly opEndMarks = new Float64Array(MAX_OP_ENDS);
  private opNext = 0;
  /** Start marks of context changes whose operation has not returned yet. */
  private readonly opening: number[] = [];
  /** The owner's view of each process address space an SVA domain shares. */
  protected readonly mmShadows = new Map<IommuMm, ShadowDomain>();
  /** The process operation running now (munmap, mprotect, exit), for the removals it reports. */
  private mmOp = "";
  private mmOpSeq = -1;
  /** The address space the running process operation changes. */
  private mmOpMm: IommuMm | null = null;
  /**
   * Frames the running process operation freed while a cache of one of its SVA contexts still
   * translated to them: the operation's end tells a flush that came after the free from none.
   */
  private readonly freedCached: { pfn: number; va: number; hits: SvaCacheHit[]; time: number }[] =
    [];
  /** The PASID each address space was last bound with (a bind that returned a bond). */
  private readonly svaBoundPasid = new WeakMap<IommuMm, number>();
  /** The process whose work the next DMAs of `ownerDev` at `ownerPasid` do (ENQCMD), or null. */
  private ownerMm: IommuMm | null = null;
  private ownerDev: Device | null = null;
  private ownerPasid = -1;

  constructor(private readonly clock: LogicalClock) {}

  protected get now(): number {
    return this.clock.now;
  }

  // --- What an architecture provides ---------------------------------------------------------------

  /** The IOMMU serving `dev`, or null. */
  protected abstract hwFor(dev: Device): H | null;
  /** Start and stop watching a device's entries for check 5. */
  protected abstract watchEntries(dev: Device, hw: H): void;
  protected abstract unwatchEntries(dev: Device): void;
  /** Check 5: the torn or illegal entries seen since the last call. */
  protected abstract settleTorn(): TornReport[];
  /** A writable page of the domain is readable too (first-stage / stage-1 tables). */
  protected abstract writeImpliesRead(domain: IommuDomain): boolean;
  /** A cache tag as a reader would name it. */
  protected abstract tagText(tag: CacheTag): string;
  /** Check 4 at a domain's free: the IDs the driver still holds for it. */
  protected abstract checkDomainIds(domain: IommuDomain, label: string): void;
  /** Where the invalidation log stands. */
  abstract mark(): number;
  /** The stale entry that answered and the invalidation that would have removed it. */
  protected abstract diagnose(
    rec: DeviceRecord<H>,
    pasid: number,
    iovaPfn: number,
    access: number,
    privileged: boolean,
    viaAtc: boolean,
  ): { entry: StaleEntry; missing: MissingInvalidation };
  /** An invalidation since `mark` that covered `entry`, or null. */
  protected abstract coveringSince(
    mark: number,
    rec: DeviceRecord<H>,
    entry: StaleEntry,
  ): EarlyInvalidation | null;
  /**
   * Why no invalidation removed `entry`, when the architecture can tell more than "missing": an
   * invalidation the removing operation issued (log marks [mark, end); `end` -1 when unknown)
   * that was aimed at the entry with one wrong parameter, or one still waiting in a queue nobody
   * waited on. One clause for the report, or null (the default).
   */
  protected explainMissing(
    _mark: number,
    _end: number,
    _rec: DeviceRecord<H>,
    _entry: StaleEntry,
  ): string | null {
    return null;
  }
  /**
   * Check 6 for a stalled transaction software terminated, on the DMA that picked the answer up:
   * the architecture compares it with what the fault's handler answered. Nothing by default.
   */
  protected stallTerminated(_rec: DeviceRecord<H>, _pasid: number, _iovaPfn: number): void {}
  /** A fault code as "reason 0x.., name" or the event's name. */
  protected abstract faultName(code: number): string;
  /**
   * The IOTLB / TLB and ATC entries of `mm`'s SVA contexts (its PASID, or its SVA domains' ASIDs)
   * that translate some page to frame `pfn`.
   */
  protected abstract svaCachesTranslating(mm: IommuMm, pfn: number): SvaCacheHit[];
  /** Check 3: no cache of any IOMMU may hold `pasid` now. */
  protected abstract checkPasidUnused(pasid: number, what: string): void;
  /** Check 1 without a DMA: the entries in memory against the attachments. */
  protected abstract checkConfig(): void;
  /** The invalidations the drivers issued were all carried out. */
  protected abstract checkQueues(): void;
  /** Check 6: every fault the IOMMUs took was recorded and read. */
  abstract checkFaultsReported(): void;
  /** Check 4 at the end: IDs, PASIDs and frames back. */
  abstract checkLeaks(framesBaseline: number): void;

  // --- What the owners do --------------------------------------------------------------------------

  /** Check every page `dev` reaches from now on. */
  watch(dev: Device): void {
    const hw = this.hwFor(dev);
    if (hw === null) return;
    this.records.set(dev, {
      dev,
      hw,
      pasids: [],
      pasid: -2,
      epoch: 0,
      domain: null,
      shadow: this.blocked,
    });
    dev.observer = this;
    this.watchEntries(dev, hw);
  }

  /** Stop checking `dev` (unplugged). */
  unwatch(dev: Device): void {
    this.checkTorn();
    this.records.delete(dev);
    if (this.last?.dev === dev) this.last = null;
    dev.observer = null;
    this.unwatchEntries(dev);
  }

  /** A paging domain an owner will map into. */
  domainCreated(domain: IommuDomain, label: string): ShadowDomain {
    let s = this.shadows.get(domain);
    if (s === undefined) {
      s = new ShadowDomain(SHADOW_PAGING, label);
      s.writeImpliesRead = this.writeImpliesRead(domain);
      this.shadows.set(domain, s);
    }
    return s;
  }

  /**
   * The owner freed `domain`: nothing of it may stay behind in the driver (check 4): no cache tag
   * (each one is an attachment whose detach forgot it) and no ID still held for it.
   */
  domainFreed(domain: IommuDomain): void {
    this.shadows.delete(domain);
    const label = `domain#${domain.id}`;
    const tags = domain.cacheTags?.tags ?? [];
    if (tags.length > 0) {
      const list = tags.map((t) => this.tagText(t)).join(", ");
      this.report({
        kind: "leak",
        time: this.now,
        message: `${label} was freed with ${tags.length} cache tag(s) still assigned: ${list}; the detach that should have unassigned them did not (cache_tag_unassign_domain)`,
      });
    }
    this.checkDomainIds(domain, label);
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
    this.opEnded(seq);
    this.checkQueues();
  }

  /** What (dev, pasid) translates through changed by an operation that started at `seq`. */
  contextChanged(dev: Device, pasid: number, seq: number): void {
    this.contextMarks.set(`${dev.name}:${pasid}`, seq);
    this.opening.push(seq);
  }

  /** The operation that started at log mark `start` returned now. */
  private opEnded(start: number): void {
    if (start < 0) return;
    const i = this.opNext;
    this.opStarts[i] = start;
    this.opEndMarks[i] = this.mark();
    this.opNext = (i + 1) % MAX_OP_ENDS;
  }

  /** The log mark when the (latest) operation that started at `start` returned, or -1. */
  private opEnd(start: number): number {
    for (let k = 1; k <= MAX_OP_ENDS; k++) {
      const i = (this.opNext - k + MAX_OP_ENDS) % MAX_OP_ENDS;
      if (this.opStarts[i] === start) return this.opEndMarks[i] as number;
    }
    return -1;
  }

  /**
   * An attachment changed somewhere: contexts are resolved again, and the entries in memory must
   * now say what is attached (checkConfig), whether or not a DMA comes to show it.
   */
  attachmentsChanged(): void {
    for (const start of this.opening) this.opEnded(start);
    this.opening.length = 0;
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

  /** Check 5, reported once per finding. */
  private checkTorn(): void {
    for (const t of this.settleTorn()) {
      if (this.staleSeen.has(t.key)) continue;
      this.staleSeen.add(t.key);
      this.report({ kind: "torn-update", time: this.now, message: t.message });
    }
  }

  /** Add an event to an ID's history. */
  note(space: IdSpace, unit: string | null, value: number, event: string): void {
    const key = idKey(space, unit, value);
    let h = this.histories.get(key);
    if (h === undefined) {
      h = [];
      this.histories.set(key, h);
    }
    h.push({ time: this.now, event });
    if (h.length > 32) h.splice(0, h.length - 32);
  }

  /** An ID of `space` began a life (an allocation). */
  protected born(space: IdSpace, unit: string | null, value: number): void {
    const key = idKey(space, unit, value);
    this.lives.set(key, (this.lives.get(key) ?? 0) + 1);
  }

  /** The history of an ID, oldest first. */
  protected historyOf(space: IdSpace, unit: string | null, value: number): HistoryEvent[] {
    return [...(this.histories.get(idKey(space, unit, value)) ?? [])];
  }

  /** A global PASID was allocated (for `owner`): it must not be in any cache now. */
  pasidAllocated(pasid: number, owner: string): void {
    this.born("pasid", null, pasid);
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

  // --- Processes (SVA) -------------------------------------------------------------------------------

  /** The owner's view of `mm`: what its page tables map, as the process's operations report it. */
  mmShadow(mm: IommuMm): ShadowDomain {
    let s = this.mmShadows.get(mm);
    if (s === undefined) {
      s = new ShadowDomain(SHADOW_PAGING, `the address space of ${mm.name}`);
      s.writeImpliesRead = true;
      this.mmShadows.set(mm, s);
    }
    return s;
  }

  /**
   * A process operation that may remove pages of `mm` starts (`seq`: the invalidation log's
   * mark).
   */
  mmOpBegin(op: string, seq: number, mm: IommuMm | null = null): void {
    this.mmOp = op;
    this.mmOpSeq = seq;
    this.mmOpMm = mm;
    this.freedCached.length = 0;
  }

  /**
   * It returned: what it removed must be gone from every cache from now on. An exit's release
   * rewrote PASID entries / CDs, so the entries are settled and checked as after an attach. A
   * frame it freed while a cache still translated to it, and that no cache translates to now, was
   * flushed after the free: the IOMMUs could reach freed memory in between.
   */
  mmOpEnd(seq: number): void {
    const mm = this.mmOpMm;
    if (mm !== null) {
      for (const f of this.freedCached) {
        if (this.svaCachesTranslating(mm, f.pfn).length > 0) continue;
        const key = `uaf:${mm.name}:${f.pfn}`;
        if (this.staleSeen.has(key)) continue;
        this.staleSeen.add(key);
        const first = f.hits[0] as SvaCacheHit;
        this.report({
          kind: "stale-translation",
          time: f.time,
          message:
            `frame ${hex(f.pfn * PAGE)} (${mm.name}'s page ${hex(f.va)}) was freed at t=${f.time} during ${this.mmOp} while ${f.hits.map((x) => x.text).join(", ")} still translated to it; ` +
            "the invalidation came only after the free, so the IOMMU could reach freed memory in between: the mmu notifiers' flush must come before the pages are freed (tlb_finish_mmu flushes, then frees)",
          staleEntry: first.entry,
        });
      }
    }
    this.freedCached.length = 0;
    this.mmOp = "";
    this.mmOpSeq = -1;
    this.mmOpMm = null;
    this.opEnded(seq);
    this.attachmentsChanged();
  }

  /**
   * The process's `Mm` frees frame `pa` (a page or a page table). During a process operation, a
   * frame one of the process's SVA contexts still translates to is noted (judged when the
   * operation returns).
   */
  frameFreeing(mm: Mm, pa: number): void {
    if (mm !== this.mmOpMm || mm.iommuMm === null) return;
    const pfn = Math.floor(pa / PAGE);
    const hits = this.svaCachesTranslating(mm, pfn);
    if (hits.length === 0) return;
    const va = Number(hits[0]?.entry.fields.address ?? -1);
    this.freedCached.push({ pfn, va, hits, time: this.now });
  }

  /**
   * The ATC entries of `pasid` that translate a page to frame `pfn`, named as `cache` (the
   * architecture's name for a device's ATC).
   */
  protected atcHitsFor(pasid: number, pfn: number, cache: CacheName): SvaCacheHit[] {
    const out: SvaCacheHit[] = [];
    for (const { dev } of this.records.values()) {
      const atc = dev.atc;
      if (atc === null || atc === undefined) continue;
      for (const e of atc.entries()) {
        if (e.pasid !== pasid) continue;
        const base = Math.floor(e.paBase / PAGE);
        const pages = 2 ** (e.sizeShift - 12);
        if (pfn < base || pfn >= base + pages) continue;
        const address = (e.iovaPfn + (pfn - base)) * PAGE;
        out.push({
          text: `${dev.name}'s ATC (PASID ${pasid}, ${hex(address)})`,
          entry: { cache, where: dev.name, fields: { PASID: pasid, address: hex(address) } },
        });
      }
    }
    return out;
  }

  pageMapped(mm: Mm, va: number, pa: number, flags: number): void {
    this.mmShadow(mm).map(va, pa, PAGE, protOfVm(flags));
  }

  pageUnmapped(mm: Mm, va: number, _pa: number, op: string): void {
    this.mmShadow(mm).unmap(va, PAGE, `${this.mmOp || op} at t=${this.now}`, -1, this.mmOpSeq);
  }

  pageProtected(mm: Mm, va: number, pa: number, flags: number, op: string): void {
    const s = this.mmShadow(mm);
    s.unmap(va, PAGE, `${this.mmOp || op} at t=${this.now}`, -1, this.mmOpSeq);
    if (flags !== 0) s.map(va, pa, PAGE, protOfVm(flags));
  }

  /** An mm got its PASID (first bind). */
  svaPasidAllocated(mm: IommuMm, pasid: number): void {
    this.pasidAllocated(pasid, `the mm of ${mm.name} (SVA)`);
  }

  /**
   * A bind of `dev` to `mm` returned a bond at `pasid`. The PASID must be charged to the user the
   * process is charged to (`user`; null: none) and the user within its limit: the first attach of
   * an mm's PASID charges it (the misc cgroup's PASID count), once, whatever devices follow.
   * `charged` is the user the PASID space says the PASID counts against (null: nobody).
   */
  svaBound(
    dev: Device,
    mm: IommuMm,
    pasid: number,
    user: SvaChargeView | null,
    charged: SvaChargeView | null,
  ): void {
    this.svaBoundPasid.set(mm, pasid);
    if (user === null) return;
    const key = `charge:${mm.name}:${pasid}`;
    if (this.staleSeen.has(key)) return;
    let problem: string | null = null;
    if (charged !== user)
      problem = `PASID ${pasid} counts against ${charged === null ? "nobody" : charged.path}, not ${user.path}`;
    else if (user.current > user.max)
      problem = `${user.path} is charged ${user.current} PASIDs, over its limit of ${user.max}`;
    if (problem === null) return;
    this.staleSeen.add(key);
    this.report({
      kind: "pasid-charge",
      time: this.now,
      message: `bind of ${dev.name} to ${mm.name} returned PASID ${pasid}, but the PASID charge is off: ${problem} (${user.path}: limit ${user.max}, charged ${user.current}); the first attach of an mm's PASID must charge it to the process's user (misc cgroup), or a user holds more PASIDs than its limit`,
      id: { space: "pasid", unit: null, value: pasid },
      history: this.historyOf("pasid", null, pasid),
    });
  }

  /**
   * A PRI device doing `mm`'s work stopped at `va`: its page request for the page was answered
   * Success, yet the retried translation refused the access (the device's PRG Success, no access).
   */
  svaSuccessWithoutAccess(
    dev: Device,
    pasid: number,
    mm: IommuMm,
    va: number,
    write: boolean,
  ): void {
    const key = `prg:${dev.name}:${pasid}:${Math.floor(va / PAGE)}:${write}`;
    if (this.staleSeen.has(key)) return;
    this.staleSeen.add(key);
    this.report({
      kind: "page-request",
      time: this.now,
      message: `${dev.name} PASID ${pasid} ${write ? "write" : "read"} at ${hex(va)} for ${mm.name}'s work: its page request was answered Success, but the retried translation still refused the ${write ? "write" : "read"}; Success may answer only a fault that made the page present with that access (iommu_sva_handle_mm: the VMA must allow it and handle_mm_fault must succeed), anything else is Invalid Request`,
    });
  }

  /**
   * An mm's PASID went back to the allocator. Only the mm's end may free it: while the mm_struct
   * lives it still names the PASID (mm->iommu_mm), and the process's ENQCMD work keeps carrying it.
   */
  svaPasidFreed(mm: IommuMm, pasid: number): void {
    const held = (mm.iommuMm as { pasid?: number } | null)?.pasid;
    if (held !== pasid && mm.count > 0 && this.svaBoundPasid.get(mm) === pasid) {
      // mm_pasid_drop before the last mmdrop: the mm_struct lives on (its SVA domains hold it),
      // and so may its bonds at the PASID.
      this.note("pasid", null, pasid, `freed while the mm of ${mm.name} still lives`);
      this.reportId(
        "pasid",
        null,
        pasid,
        `PASID ${pasid} freed while the mm of ${mm.name} still lives (mm_count ${mm.count}${mm.users === 0 ? ", after its exit" : ""}): the next bind of another process can get it while ${mm.name}'s bonds still use it`,
        {
          descriptor: "none: an mm's PASID is freed only by its last mmdrop (mm_pasid_drop)",
          fields: {},
        },
      );
    } else if (held === pasid && mm.count > 0) {
      this.note("pasid", null, pasid, `freed while the mm of ${mm.name} still holds it`);
      // An exited process issues no more work, but its mm still frees the PASID when it goes.
      const harm =
        mm.users > 0
          ? `${mm.name}'s work keeps carrying it, and the next process to bind gets it`
          : `${mm.name} has exited, but mm_pasid_drop frees it again when the mm goes, whoever holds it then`;
      this.reportId(
        "pasid",
        null,
        pasid,
        `PASID ${pasid} freed while the mm of ${mm.name} still holds it (mm->iommu_mm->pasid): ${harm}`,
        { descriptor: "none: an mm's PASID is freed only with the mm (mm_pasid_drop)", fields: {} },
      );
    } else {
      this.note("pasid", null, pasid, `freed with the mm of ${mm.name}`);
    }
    this.pasidFreed(pasid);
  }

  /**
   * The next DMAs of `dev` at `pasid` do `mm`'s work (descriptors it submitted); null ends that.
   * A DMA that reaches another address space through the PASID breaks isolation between processes.
   */
  expectOwner(dev: Device, pasid: number, mm: IommuMm | null): void {
    this.ownerMm = mm;
    this.ownerDev = mm === null ? null : dev;
    this.ownerPasid = mm === null ? -1 : pasid;
  }

  private checkOwner(
    rec: DeviceRecord<H>,
    pasid: number,
    iovaPfn: number,
    access: number,
    pa: number,
  ): void {
    const mm = this.ownerMm as IommuMm;
    const domain = rec.domain;
    if (domain !== null && domain.type === IOMMU_DOMAIN_SVA && domain.mm === mm) return;
    const key = `owner:${rec.dev.name}:${pasid}:${mm.name}`;
    if (this.staleSeen.has(key)) return;
    this.staleSeen.add(key);
    const other =
      domain === null
        ? "nothing attached"
        : domain.type === IOMMU_DOMAIN_SVA && domain.mm !== null
          ? `the address space of ${domain.mm.name}`
          : `domain#${domain.id}`;
    const accessName = (access & DMA_WRITE) !== 0 ? "write" : "read";
    this.report({
      kind: "isolation",
      time: this.now,
      message: `${rec.dev.name} PASID ${pasid} ${accessName} at ${hex(iovaPfn * PAGE)} for ${mm.name}'s work reached ${hex(pa)} in ${other}: PASID ${pasid} no longer names ${mm.name}'s address space`,
      history: this.historyOf("pasid", null, pasid),
    });
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
    if (this.ownerMm !== null && dev === this.ownerDev && pasid === this.ownerPasid)
      this.checkOwner(rec, pasid, iovaPfn, access, pa);
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
  protected resolve(rec: DeviceRecord<H>, pasid: number): void {
    const dev = rec.dev;
    const domain =
      pasid === NO_PASID ? iommuGetDomainForDev(dev) : iommuGetDomainForDevPasid(dev, pasid);
    rec.domain = domain;
    rec.pasid = pasid;
    rec.epoch = this.epoch;
    if (domain === null || domain.type === IOMMU_DOMAIN_BLOCKED) rec.shadow = this.blocked;
    else if (domain.type === IOMMU_DOMAIN_IDENTITY) rec.shadow = this.identity;
    else if (domain.type === IOMMU_DOMAIN_SVA && domain.mm !== null)
      rec.shadow = this.mmShadow(domain.mm);
    else rec.shadow = this.shadows.get(domain) ?? this.domainCreated(domain, `domain#${domain.id}`);
  }

  /** Whether the owner's map lets `access` (not privileged, not exec) reach page `iovaPfn`. */
  protected ownerAllows(shadow: ShadowDomain, iovaPfn: number, access: number): boolean {
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
    // A stalled transaction software terminated: the answer to a page fault taken earlier, under
    // the configuration of that moment, not what the tables say now. Check 6 follows the answers.
    if (dev.lastReason === DmaReason.STALL_TERMINATED) {
      this.stallTerminated(rec, pasid, iovaPfn);
      return;
    }
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
    const ctxMark = this.contextMarks.get(`${dev.name}:${pasid}`) ?? -1;
    const why = this.explainMissing(ctxMark, this.opEnd(ctxMark), rec, entry);
    this.report({
      kind: "spurious-fault",
      time: this.now,
      message:
        `${where} faulted (${this.deviceFaultText(dev)}) although ${rec.shadow.label} maps it and the tables give ${this.freshText()}: ` +
        `a stale ${entry.cache} entry of ${entry.where} answered; missing: ${missing.descriptor} ${fieldText(missing.fields)}` +
        (why === null ? "" : `; ${why}`),
      staleEntry: entry,
      missingInvalidation: missing,
    });
  }

  protected slowPath(
    rec: DeviceRecord<H>,
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
      // Was the entry covered by an invalidation during that operation, and filled again after?
      const opMark =
        removed !== undefined
          ? rec.shadow.removalMark(iovaPfn)
          : (this.contextMarks.get(`${dev.name}:${pasid}`) ?? -1);
      const early = this.coveringSince(opMark, rec, entry);
      const why =
        early === null ? this.explainMissing(opMark, this.opEnd(opMark), rec, entry) : null;
      const diagnosis =
        early === null
          ? `; missing: ${missing.descriptor} ${fieldText(missing.fields)}${why === null ? "" : `; ${why}`}`
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
          diagnosis +
          (rec.domain?.type === IOMMU_DOMAIN_SVA && removed !== undefined
            ? svaRemovalHint(removed)
            : ""),
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

  /**
   * Why the device's last DMA failed, for reports: the IOMMU's fault code, or what the device was
   * told when it asked by ATS (a Translation Completion or a page request answer carries no fault
   * reason).
   */
  protected deviceFaultText(dev: Device): string {
    switch (dev.lastReason) {
      case DmaReason.ATS_NO_ACCESS:
        return "its translation request was granted no access";
      case DmaReason.PRG_SUCCESS_NO_ACCESS:
        return "its page request was answered Success, yet the retried translation granted no access";
      case DmaReason.PRG_INVALID:
        return "its page request was answered Invalid Request";
      case DmaReason.PRG_FAILURE:
        return "its page request was answered Response Failure";
      default:
        return this.faultName(dev.lastFaultCode);
    }
  }

  /** The fresh walk's answer, for reports. */
  protected freshText(): string {
    const res = this.res;
    return res.status === XLATE_OK ? hex(res.pa) : `a fault (${this.faultName(res.code)})`;
  }

  // --- Check 3: IDs ----------------------------------------------------------------------------------

  protected reportId(
    space: IdSpace,
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
      message: `${message}; missing: ${[missing.descriptor, fieldText(missing.fields)].filter((t) => t !== "").join(" ")}`,
      id: { space, unit, value },
      missingInvalidation: missing,
      history: [...(this.histories.get(key) ?? [])],
    });
  }

  // --- Check 1 without a DMA: the attachments to check ---------------------------------------------

  /**
   * For every watched device: `check(rec, pasid, domain)` at the RID and at every PASID attached
   * now or at the last check (a detached PASID is checked once more, with no domain).
   */
  protected forEachAttachment(
    check: (rec: DeviceRecord<H>, pasid: number, domain: IommuDomain | null) => void,
  ): void {
    for (const rec of this.records.values()) {
      const dev = rec.dev;
      const attached = dev.iommu?.group?.pasidArray;
      const now: number[] = [];
      if (attached !== undefined) for (const p of attached.keys()) now.push(p);
      check(rec, NO_PASID, iommuGetDomainForDev(dev));
      for (const p of now) check(rec, p, iommuGetDomainForDevPasid(dev, p));
      for (const p of rec.pasids) if (!now.includes(p)) check(rec, p, null);
      rec.pasids = now;
    }
  }

  /** What is attached, as a report says it. */
  protected attachedText(domain: IommuDomain | null): string {
    return domain === null
      ? "nothing is attached"
      : domain.type === IOMMU_DOMAIN_BLOCKED
        ? "the blocked domain is attached"
        : domain.type === IOMMU_DOMAIN_IDENTITY
          ? "the identity domain is attached"
          : `${this.shadows.get(domain)?.label ?? `domain#${domain.id}`} is attached`;
  }

  /** Report a configuration problem once. */
  protected reportConfig(key: string, grantsMore: boolean, message: string): void {
    if (this.staleSeen.has(key)) return;
    this.staleSeen.add(key);
    this.report({ kind: grantsMore ? "isolation" : "spurious-fault", time: this.now, message });
  }

  // --- Check 6: page requests -----------------------------------------------------------------------

  /** A device got a page group response for a group it had not asked (or asked and was answered). */
  protected checkUnexpectedResponses(): void {
    for (const { dev } of this.records.values()) {
      const resumes = dev.stats.unexpectedResumes;
      if (resumes > (this.unexpectedResumesSeen.get(dev) ?? 0)) {
        this.unexpectedResumesSeen.set(dev, resumes);
        this.report({
          kind: "page-request",
          time: this.now,
          message: `${dev.name}: a resume or termination came for a stalled transaction that was not waiting (an unknown or already answered stall tag)`,
        });
      }
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
      if (dev.stallsPending > 0) {
        this.report({
          kind: "page-request",
          time: this.now,
          message: `${dev.name}: ${dev.stallsPending} stalled transaction(s) never resumed or terminated`,
        });
      }
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

  /** Global PASIDs still allocated after teardown, each with its history. */
  protected checkPasidLeaks(allocated: (pasid: number) => boolean): void {
    for (const [key, h] of this.histories) {
      if (!key.startsWith("pasid:")) continue;
      const value = Number(key.slice(6));
      if (!allocated(value)) continue;
      this.report({
        kind: "leak",
        time: this.now,
        message: `PASID ${value} is still allocated after teardown`,
        id: { space: "pasid", unit: null, value },
        history: [...h],
      });
    }
  }

  protected report(v: Violation): void {
    this.stats.violations++;
    if (this.violations.length < MAX_VIOLATIONS) this.violations.push(v);
  }
}

/** How a process's removal reaches an SVA domain, for a stale translation it left behind. */
function svaRemovalHint(removed: string): string {
  return removed.startsWith("exit(")
    ? "; a process's exit reaches the IOMMU only through the SVA domain's mmu notifier release (exit_mmap runs it before it unmaps anything; no flush reaches the IOMMU after it), which must make every attachment of the domain fault and flush its IOTLB and ATC entries before the pages are freed"
    : "; a process's page-table change reaches the IOMMU only through the SVA domain's mmu notifier (arch_invalidate_secondary_tlbs), which must flush the IOTLB and every ATC for the range before the operation returns";
}

/** IOMMU_READ / IOMMU_WRITE of VM_* flags. */
function protOfVm(flags: number): number {
  return ((flags & VM_READ) !== 0 ? IOMMU_READ : 0) | ((flags & VM_WRITE) !== 0 ? IOMMU_WRITE : 0);
}

/** The flush count of `domain`'s flush queue (0 without one). */
function fqFlushes(domain: IommuDomain): number {
  return (domain.iovaCookie as IommuDmaCookie | null)?.fq?.flushes ?? 0;
}

/** The history key of an ID. */
export function idKey(space: IdSpace, unit: string | null, value: number): string {
  return unit === null ? `${space}:${value}` : `${space}:${unit}:${value}`;
}

/** Fields as "K=v K=v". */
export function fieldText(fields: Readonly<Record<string, string | number>>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}
