// The isolation oracle on a VT-d machine: the architecture-neutral checks of IsolationOracle,
// with the unit's caches inspected by VtdUnit.inspect, context and PASID entries checked against
// the attachments, domain IDs followed through the driver's hooks, the invalidation queue's and
// fault registers' errors reported, and a missing invalidation explained when one was issued with
// a wrong field.

import {
  type DmarDomain,
  DmarSvaDomain,
  FLPT_DEFAULT_DID,
  type IntelIommu,
} from "@iommu-sim/intel-vtd/driver";
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
  type CacheTag,
  type Device,
  IOMMU_DOMAIN_BLOCKED,
  IOMMU_DOMAIN_IDENTITY,
  type IommuDomain,
  type IommuMm,
  NO_PASID,
  newTranslationRequest,
} from "@iommu-sim/iommu-core";
import { fieldOf } from "@iommu-sim/iommu-core/platform";
import {
  type DeviceRecord,
  type EarlyInvalidation,
  fieldText,
  IsolationOracle,
  type SvaCacheHit,
  type TornReport,
} from "./oracle.js";
import { hex, type MissingInvalidation, type StaleEntry } from "./violation.js";
import { diagnoseVtdStale, kindName } from "./vtd-diagnose.js";
import { VtdEntryWatch } from "./vtd-hitless.js";
import { VtdInvalidationLog } from "./vtd-invalidation-log.js";

const PAGE = 4096;
const IQEI = fieldOf(IQER_REG, "IQEI");
const TAG_KINDS = ["IOTLB", "device-TLB", "nesting IOTLB", "nesting device-TLB"];

/** Counters of the oracle (the architecture-neutral ones). */
export type { OracleStats as VtdOracleStats } from "./oracle.js";

/**
 * Watches a VtdMachine. The harness tells it what owners do (domains, maps, attachments, PASIDs);
 * the devices report every page they reach (`Device.observer`); the driver reports domain IDs.
 */
export class VtdOracle extends IsolationOracle<VtdUnit> {
  private readonly m: VtdMachine;
  /** The domain each domain ID was last handed to ("dmar0:5" → domain). */
  private readonly didOwners = new Map<string, { unit: IntelIommu; did: number; domain: object }>();
  /** Refused descriptors and given-up waits already reported, per unit. */
  private readonly queueErrorsSeen = new Map<VtdUnit, { refused: number; timeouts: number }>();
  /** What the units' invalidation queues carried out. */
  private readonly invLog: VtdInvalidationLog;
  /** Context and PASID entries sampled after every store (check 5). */
  private readonly entries: VtdEntryWatch;

  constructor(machine: VtdMachine) {
    super(machine.clock);
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

  private iommuOf(hw: VtdUnit): IntelIommu | null {
    return this.m.units.find((u) => u.hw === hw)?.iommu ?? null;
  }

  protected hwFor(dev: Device): VtdUnit | null {
    return this.m.hwFor(dev.rid);
  }

  protected watchEntries(dev: Device, hw: VtdUnit): void {
    this.entries.watch(dev, hw);
  }

  protected unwatchEntries(dev: Device): void {
    this.entries.unwatch(dev);
  }

  /** First-stage tables have no write-only pages: a writable page is present, so readable. */
  protected writeImpliesRead(domain: IommuDomain): boolean {
    return (domain as Partial<DmarDomain>).useFirstLevel === true;
  }

  protected tagText(t: CacheTag): string {
    return (
      `${TAG_KINDS[t.kind] ?? t.kind} tag (DID ${t.id}` +
      `${t.pasid === NO_PASID || t.pasid === 0 ? "" : `, PASID ${t.pasid}`}${t.dev === null ? "" : `, ${t.dev.name}`}, ${t.users} user${t.users === 1 ? "" : "s"})`
    );
  }

  /** No domain ID may still be allocated to a freed domain on any unit (it is lost to every later one). */
  protected checkDomainIds(domain: IommuDomain, label: string): void {
    for (const [key, o] of this.didOwners) {
      if (o.domain !== domain) continue;
      this.didOwners.delete(key);
      if (!o.unit.domainIds.has(o.did)) continue;
      this.report({
        kind: "leak",
        time: this.now,
        message: `${label} was freed but its domain ID ${o.did} of ${o.unit.name} is still allocated (domain_detach_iommu never gave it back)`,
        id: { space: "did", unit: o.unit.name, value: o.did },
        history: this.historyOf("did", o.unit.name, o.did),
      });
    }
  }

  /**
   * Where the invalidation log stands: an owner takes it before an operation that removes a
   * translation and hands it to `unmapped` or `contextChanged`, so that a stale entry can be
   * told apart from a flush that came too early.
   */
  mark(): number {
    return this.invLog.mark();
  }

  protected diagnose(
    rec: DeviceRecord<VtdUnit>,
    pasid: number,
    iovaPfn: number,
    access: number,
    privileged: boolean,
    viaAtc: boolean,
  ): { entry: StaleEntry; missing: MissingInvalidation } {
    return diagnoseVtdStale(rec.dev, rec.hw, pasid, iovaPfn, access, privileged, viaAtc);
  }

  /**
   * A descriptor the removing operation (log marks [mark, end)) carried out that was aimed at the
   * entry with one wrong field (DID, PASID, SID, range, IH, descriptor type); for a
   * paging-structure entry, whose table any later operation may have freed, else the newest
   * leaf-only (IH = 1) flush of its reach since `mark` (no mark, as for a context the fuzzer set
   * up without one: in the whole log).
   */
  protected override explainMissing(
    mark: number,
    end: number,
    rec: DeviceRecord<VtdUnit>,
    entry: StaleEntry,
  ): string | null {
    const unit = rec.hw.name;
    const missed =
      this.invLog.missedSince(mark, end, unit, rec.dev.rid & 0xffff, entry) ??
      this.invLog.leafOnlySince(Math.max(mark, 0), unit, entry);
    if (missed === null) return null;
    return `${missed.descriptor} ${fieldText(missed.fields)} at t=${missed.time} was aimed at it but missed: ${missed.reason}`;
  }

  protected coveringSince(
    mark: number,
    rec: DeviceRecord<VtdUnit>,
    entry: StaleEntry,
  ): EarlyInvalidation | null {
    return this.invLog.coveringSince(mark, rec.hw.name, rec.dev.rid & 0xffff, entry);
  }

  protected faultName(code: number): string {
    return `reason ${hex(code)}, ${vtdFaultReasonName(code)}`;
  }

  /**
   * Check 5: what the hardware could have seen of each context and PASID entry between the
   * stores of the operation that just ended was the entry before, after, or not present.
   */
  protected settleTorn(): TornReport[] {
    return this.entries.settle().map((t) => {
      const where = `${t.device}${t.pasid === null ? "" : ` PASID ${t.pasid}`}`;
      const entry = t.pasid === null ? "context entry" : "PASID entry";
      return {
        key: `torn:${where}:${t.seen}`,
        message:
          t.illegal !== null
            ? `${where}: between two stores the ${entry} in ${t.unit}'s memory was present and illegal (fault ${hex(t.illegal)}, ${vtdFaultReasonName(t.illegal)}): ${t.unit} could have used it`
            : `${where}: between two stores the ${entry} in ${t.unit}'s memory was present as neither the old nor the new configuration: seen "${t.seen}", before "${t.before}", after "${t.after}"`,
      };
    });
  }

  private didAllocated(unit: IntelIommu, did: number, domain: DmarDomain): void {
    this.didOwners.set(`${unit.name}:${did}`, { unit, did, domain });
    this.born("did", unit.name, did);
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
        history: this.historyOf("did", unit.name, did),
      });
      return;
    }
    this.checkDidUnused(unit, did, "freed");
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

  /** The IOTLB entries of FLPT_DEFAULT_DID at `mm`'s PASID, and its ATC entries, that reach `pfn`. */
  protected svaCachesTranslating(mm: IommuMm, pfn: number): SvaCacheHit[] {
    const pasid = (mm.iommuMm as { pasid?: number } | null)?.pasid;
    if (pasid === undefined) return [];
    const out: SvaCacheHit[] = [];
    for (const { hw } of this.m.units) {
      for (const e of hw.iotlb.entries()) {
        if (e.did !== FLPT_DEFAULT_DID || e.pasid !== pasid) continue;
        const pages = 2 ** (e.sizeShift - 12);
        if (pfn < e.paFrame || pfn >= e.paFrame + pages) continue;
        const address = (e.vpn + (pfn - e.paFrame)) * PAGE;
        out.push({
          text: `${hw.name}'s IOTLB (DID ${e.did}, PASID ${pasid}, ${hex(address)})`,
          entry: {
            cache: "iotlb",
            where: hw.name,
            fields: { DID: e.did, PASID: pasid, address: hex(address) },
          },
        });
      }
    }
    out.push(...this.atcHitsFor(pasid, pfn, "device-tlb"));
    return out;
  }

  protected checkPasidUnused(pasid: number, what: string): void {
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

  // --- Check 1 without a DMA: the entries in memory against the attachments ------------------------

  /**
   * For every watched device, at the RID and at every PASID attached now or at the last check:
   * the context / PASID entry in memory must translate through what is attached there and nothing
   * else: no entry (or a blocked one) when nothing or the blocked domain is, pass-through for the
   * identity domain, and for a paging domain its own table root, stage and domain ID on the unit.
   * An entry that reaches other tables (or any, where nothing is attached) is an isolation
   * violation at once, before a DMA shows it; a missing one is reported as a spurious fault.
   */
  protected checkConfig(): void {
    this.forEachAttachment((rec, pasid, domain) => this.checkEntry(rec, pasid, domain));
  }

  private checkEntry(rec: DeviceRecord<VtdUnit>, pasid: number, domain: IommuDomain | null): void {
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
    if (domain instanceof DmarSvaDomain && domain.mm !== null) {
      this.checkSvaEntry(rec, pasid, domain, entryName, present, firstStage, root, did, levels);
      return;
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
      const iommu = this.iommuOf(rec.hw);
      const wantDid = iommu === null ? did : d.didOn(iommu);
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
    this.reportConfig(
      `cfg:${where}:${problem}`,
      grantsMore,
      `${where}: ${this.attachedText(domain)} there, but the ${entryName} in memory of ${rec.hw.name} ${problem}`,
    );
  }

  /**
   * An SVA domain's PASID entry: first stage over the process's page table (FLPTR = its pgd, its
   * levels) tagged with FLPT_DEFAULT_DID while the mm lives; not present once it was released.
   * The domain itself must not have been freed (its notifier put) while still attached.
   */
  private checkSvaEntry(
    rec: DeviceRecord<VtdUnit>,
    pasid: number,
    domain: DmarSvaDomain,
    entryName: string,
    present: boolean,
    firstStage: boolean,
    root: number,
    did: number,
    levels: number,
  ): void {
    const mm = domain.mm as IommuMm;
    let problem: string | null = null;
    let grantsMore = true;
    if (domain.freed) {
      // Freed with a device still attached: nothing keeps the caches behind the entry coherent.
      this.reportConfig(
        `cfg:${rec.dev.name} PASID ${pasid}:freed`,
        true,
        `${rec.dev.name} PASID ${pasid}: the SVA domain of ${mm.name} is attached there, but it was freed: its mmu notifier was put, so ${mm.name}'s munmap and mprotect no longer reach what ${rec.hw.name} caches through the ${entryName}; an SVA domain is freed only after its last device let go (iommu_sva_unbind_device counts its users)`,
      );
      return;
    }
    if (mm.users === 0) {
      if (present) problem = `is still present (FLPTR ${hex(root)}) after ${mm.name} exited`;
    } else if (!present) {
      problem = "is not present";
      grantsMore = false;
    } else if (!firstStage) problem = "does not walk first-stage (the CPU's table format)";
    else if (root !== mm.pgd)
      problem = `walks ${hex(root)}, not ${mm.name}'s page table at ${hex(mm.pgd)}`;
    else if (did !== FLPT_DEFAULT_DID)
      problem = `tags what it caches with DID ${did}, not FLPT_DEFAULT_DID (${FLPT_DEFAULT_DID})`;
    else if (levels !== mm.levels)
      problem = `walks ${levels} levels; ${mm.name}'s table has ${mm.levels}`;
    if (problem === null) return;
    const where = `${rec.dev.name} PASID ${pasid}`;
    this.reportConfig(
      `cfg:${where}:${problem}`,
      grantsMore,
      `${where}: the SVA domain of ${mm.name} is attached there, but the ${entryName} in memory of ${rec.hw.name} ${problem}`,
    );
  }

  // --- Invalidation queues ---------------------------------------------------------------------------

  /**
   * Every invalidation the driver queued was carried out: the unit refused none (IQE, with the
   * bad descriptor replaced by a wait, so it never happened) and the driver never stopped waiting
   * for one (a time-out).
   */
  protected checkQueues(): void {
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

  // --- Check 6: faults --------------------------------------------------------------------------------

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
          history: this.historyOf("did", iommu.name, did),
        });
      }
    }
    if (m.subsys.pasids.size(m.subsys.globalPasidSet) > 0)
      this.checkPasidLeaks((p) => m.subsys.pasids.has(p));
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
