// Fuzzing a driver and its IOMMU (VT-d or SMMUv3) under the oracle: seeded random sequences of
// what owners do (domains, attaches, PASID attach / replace / detach, maps, unmaps, on SMMUv3
// unmaps that free a page table, DMA-API buffers, DMAs, queue processing, flush-queue timeouts) on
// a small IOVA space, so that addresses, domain IDs and PASIDs are reused all the time; optionally
// with devices doing DMA while the driver waits for its invalidations. Where there are PASIDs,
// processes too: mmap / munmap / mprotect, CPU writes, SVA binds and unbinds, exits while bound,
// and their work on a work-queue device and a PRI accelerator. Every DMA is checked by the oracle;
// the run ends with teardown and the leak check.

import {
  type Device,
  DMA_BIDIRECTIONAL,
  DMA_OK,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_PAGE_RESP_SUCCESS,
  IOMMU_READ,
  IOMMU_WRITE,
  IOVA_DEFAULT_FQ_TIMEOUT,
  type IommuDomain,
  iommuDevEnableFeature,
  iommuGetDomainForDev,
  iommuGetDomainForDevPasid,
  iommuReplaceDevicePasid,
  iopfGroupResponse,
  NO_PASID,
} from "@iommu-sim/iommu-core";
import { MMAP_BASE, PROT_NONE, PROT_READ, PROT_WRITE, VM_READ, VM_WRITE } from "@iommu-sim/sva";
import type { DeviceSpec, DmaBuffer, Harness, MachineSpec } from "../machine/harness.js";
import { SmmuHarness, type SmmuInjection } from "../machine/smmu-harness.js";
import type { SvaProcess } from "../machine/sva-world.js";
import { VtdHarness, type VtdInjection } from "../machine/vtd-harness.js";
import { hex, type Violation } from "../oracle/violation.js";

const PAGE = 4096;
/** The IOVA space the fuzzer maps in: small, so that ranges collide and are reused. */
const IOVA_PAGES = 64;
const IOVA_BASE = 0x40_0000;
/** Recent DMA contexts the racing DMAs replay, most recent first. */
const RACE_CONTEXTS = 2;
/**
 * Racing DMAs per operation: fewer than the unit's fault recording registers (8), so the faults
 * they take never overflow before the fuzzer lets the driver read them after the operation.
 */
const RACE_BUDGET = 4;
/**
 * SMMU only: a 2 MiB-aligned window outside the IOVA space above, where a few pages are mapped
 * and the whole window is then unmapped at once, so the level 3 table under it is freed and the
 * driver must flush the walk (tlb_flush_walk: a non-leaf invalidation).
 */
const TABLE_WINDOW = 0x4000_0000;
const TABLE_SPAN = 2 * 2 ** 20;

/**
 * The devices that work in process address spaces (scalable mode only). Their RIDs are not the
 * other devices', and the old operations never pick them, so those keep their frequencies.
 */
const SVA_DEVICES: readonly DeviceSpec[] = [
  // A work queue without PRI: its DMA reaches only pages the process has touched.
  { name: "wq", rid: 0x0020, kind: "work-queue", pasidBits: 20, ats: true },
  // An accelerator whose faults are paged in through the SVA handler.
  { name: "accel", rid: 0x0028, pasidBits: 20, ats: true, pri: true },
  // PASIDs 1..3 only: a process whose PASID is wider cannot bind it (EOVERFLOW), and a first bind
  // through it finds the small range full (ENOSPC).
  { name: "narrow", rid: 0x0030, pasidBits: 2, ats: true },
];
/** Users (name, PASID limit) the processes are charged to: small limits, so binds hit them. */
const SVA_USERS: readonly (readonly [string, number])[] = [
  ["alice", 1],
  ["bob", 2],
  ["carol", 3],
];
/** Processes alive at once. */
const SVA_PROCS = 4;
/**
 * The window every process maps in: the same addresses in each, so that work reaching another
 * process's address space through a reused PASID finds pages there.
 */
const SVA_BASE = MMAP_BASE;
const SVA_PAGES = 32;
/** The draw of an operation is below 100 + SVA_WEIGHT; the SVA operations take the top part. */
const SVA_WEIGHT = 34;

/** How to fuzz. */
export interface FuzzOptions<H extends Harness = Harness> {
  readonly seed: number;
  /** Operations per run. */
  readonly ops: number;
  /** The IOMMU (default VT-d). */
  readonly arch?: "vtd" | "smmu";
  /** VT-d only. */
  readonly mode?: "scalable" | "legacy";
  /** VT-d only. */
  readonly cachingMode?: boolean;
  readonly cache?: "maximal" | "minimal";
  /** IOTLB entries (small ones make replacement happen all the time). */
  readonly iotlb?: number;
  readonly inject?: VtdInjection | SmmuInjection | null;
  /** Lazy (flush-queue) invalidation for DMA-API domains, with flush-queue timeouts among the operations. */
  readonly lazy?: boolean;
  /**
   * Devices keep doing DMA while the driver waits for its invalidations: the unit carries out one
   * descriptor per poll of the driver, and before each one a device re-reads a page it reached
   * recently (unchecked: inside an operation either answer is allowed). What those DMAs leave in
   * the caches is checked once the operation returns, which shows ordering bugs (an entry flushed
   * before it was cleared, a device-TLB flushed before the IOTLB it refills from).
   */
  readonly race?: boolean;
  /**
   * Processes and their SVA binds among the operations (default: in scalable mode; legacy VT-d has
   * no PASIDs). Off, the machine has no SVA devices and the old operation sequences come back.
   */
  readonly sva?: boolean;
  /** Called once the devices are probed, before the first operation (tests plant driver bugs here). */
  readonly setup?: (h: H, devices: readonly Device[]) => void;
}

/** How to fuzz VT-d (tests plant bugs through a VtdHarness). */
export type VtdFuzzOptions = Omit<FuzzOptions<VtdHarness>, "arch" | "inject"> & {
  readonly inject?: VtdInjection | null;
};

/** What one run found. */
export interface FuzzResult {
  readonly seed: number;
  readonly arch: "vtd" | "smmu";
  readonly mode: "scalable" | "legacy";
  /** Operations carried out: all of them, unless the run was `stopped`. */
  readonly ops: number;
  /**
   * What the model tripped over in memory a violation had corrupted (a device wrote into a
   * process's page tables, say), ending the run early; null when it ran to the end.
   */
  readonly stopped: string | null;
  readonly dmas: number;
  /** Owner operations the core or driver refused (an errno): expected, counted. */
  readonly refused: number;
  /** DMAs the devices did while the driver waited for an invalidation (`race`). */
  readonly races: number;
  readonly violations: readonly Violation[];
  readonly violationsTotal: number;
  /**
   * Index of the operation after which the first violation was seen (`ops` when it was seen at
   * teardown), or -1.
   */
  readonly firstViolationOp: number;
  /** The operations, one line each (the last ones before the first violation, or all). */
  readonly log: readonly string[];
}

interface Mapping {
  domain: IommuDomain;
  iova: number;
  size: number;
}

/** What one VT-d run found. */
export type VtdFuzzResult = FuzzResult;

/** One fuzz run on VT-d. */
export function runVtdFuzz(options: VtdFuzzOptions): FuzzResult {
  return runFuzz({ ...options, arch: "vtd" } as FuzzOptions);
}

/** One fuzz run. Throws only on a model bug (the CLI reports it as an internal error). */
export function runFuzz(options: FuzzOptions): FuzzResult {
  const arch = options.arch ?? "vtd";
  const mode = arch === "smmu" ? "scalable" : (options.mode ?? "scalable");
  const scalable = mode === "scalable";
  const devices: DeviceSpec[] = [
    { name: "d0", rid: 0x0008 },
    { name: "d1", rid: 0x0010, ats: true, pasidBits: scalable ? 6 : 0 },
    { name: "d2", rid: 0x0018, ats: true, pri: scalable, pasidBits: scalable ? 6 : 0 },
  ];
  // Behind an SMMU, also a platform device whose faults stall: they reach IOPF through the event
  // queue and are answered with CMD_RESUME.
  if (arch === "smmu") devices.push({ name: "d3", rid: 0x0040, stall: true, pasidBits: 6 });
  const svaOn = scalable && options.sva !== false;
  const spec: MachineSpec = {
    units: [
      {
        name: arch === "smmu" ? "smmu0" : "dmar0",
        mode,
        cache: options.cache ?? "maximal",
        cachingMode: arch === "vtd" && (options.cachingMode ?? false),
        iotlb: options.iotlb ?? 16,
      },
    ],
    devices: svaOn ? [...devices, ...SVA_DEVICES] : devices,
    memory: 64 * 2 ** 20,
    lazy: options.lazy === true,
  };
  const h: Harness =
    arch === "smmu"
      ? new SmmuHarness(spec, options.seed, (options.inject as SmmuInjection | null) ?? null)
      : new VtdHarness(spec, options.seed, (options.inject as VtdInjection | null) ?? null);
  const prng = h.m.prng;
  const log: string[] = [];
  let refused = 0;
  let dmas = 0;
  let races = 0;
  let firstViolationOp = -1;
  /** The log line of the operation (or DMA) after which the first violation was seen. */
  let firstViolationLine = -1;
  const devs: Device[] = [];
  for (const d of devices) {
    const dev = h.addDevice(d);
    if (typeof dev === "string") throw new Error(`fuzz: probe of ${d.name} failed: ${dev}`);
    devs.push(dev);
  }
  const svaDevs: Device[] = [];
  for (const d of svaOn ? SVA_DEVICES : []) {
    const dev = h.addDevice(d);
    if (typeof dev === "string") throw new Error(`fuzz: probe of ${d.name} failed: ${dev}`);
    svaDevs.push(dev);
  }
  const d2 = devs[2] as Device;
  const d3 = devs[3];
  if (d3 !== undefined && iommuDevEnableFeature(d3, IOMMU_DEV_FEAT_IOPF) !== 0) {
    throw new Error("fuzz: IOPF enable on the stalling device failed");
  }
  if (scalable && iommuDevEnableFeature(d2, IOMMU_DEV_FEAT_IOPF) !== 0) {
    throw new Error("fuzz: IOPF enable failed");
  }
  options.setup?.(h, [...devs, ...svaDevs]);
  const identity = h.domainAlloc(devs[0] as Device, "identity") as IommuDomain;
  /** (device, PASID, IOVA) of recent DMAs that went through, most recent first. */
  const recent: { dev: Device; pasid: number; iova: number }[] = [];
  let raceBudget = 0;
  let raceNext = 0;
  let racing = options.race === true;
  const raceBuf = new Uint8Array(8);
  const race = (): void => {
    if (!racing || raceBudget <= 0 || recent.length === 0) return;
    raceBudget--;
    const c = recent[raceNext++ % recent.length] as (typeof recent)[number];
    // Not checked: the operation under way may legitimately leave either answer.
    const observer = c.dev.observer;
    c.dev.observer = null;
    c.dev.read(c.iova, raceBuf, c.pasid);
    c.dev.observer = observer;
    races++;
  };
  if (racing && h instanceof VtdHarness) {
    for (const { hw, iommu } of h.m.units) {
      const qi = iommu.qi;
      if (qi === null) continue;
      hw.autoProcessQueue = false;
      qi.idle = () => {
        race();
        hw.processInvalidations(1);
      };
    }
  } else if (racing && h instanceof SmmuHarness) {
    // The SMMU runs one command per poll of the driver's CMD_SYNC wait.
    for (const { hw, smmu } of h.m.smmus) {
      hw.autoProcessQueue = false;
      smmu.cmdq.idle = () => {
        race();
        hw.processCommands(1);
      };
    }
  }
  /** A DMA context that went through, for the racing DMAs. */
  const remember = (dev: Device, pasid: number, iova: number): void => {
    const page = Math.floor(iova / PAGE) * PAGE;
    // A racing DMA that faulted there would have the page mapped by a fault handler under an
    // address the whole-window unmap does not give back to the harness (only its first page).
    if (page > TABLE_WINDOW && page < TABLE_WINDOW + TABLE_SPAN) return;
    const i = recent.findIndex((c) => c.dev === dev && c.pasid === pasid && c.iova === page);
    if (i >= 0) recent.splice(i, 1);
    recent.unshift({ dev, pasid, iova: page });
    if (recent.length > RACE_CONTEXTS) recent.length = RACE_CONTEXTS;
  };
  /** One DMA through the harness; one that went through is remembered for the racing DMAs. */
  const dma = (dev: Device, pasid: number, iova: number, size: number, write: boolean): number => {
    const status = h.dma(dev, pasid, iova, size, write);
    if (status === DMA_OK) remember(dev, pasid, iova);
    return status;
  };
  const domains: IommuDomain[] = [];
  const pasids: number[] = [];
  const mappings: Mapping[] = [];
  const buffers: DmaBuffer[] = [];
  const pick = <T>(list: readonly T[]): T => list[prng.below(list.length)] as T;
  /** Where `domain` translates now: (device, PASID or NO_PASID) pairs. */
  const contextsOf = (domain: IommuDomain): [Device, number][] => {
    const out: [Device, number][] = [];
    for (const dev of devs) {
      if (iommuGetDomainForDev(dev) === domain) out.push([dev, NO_PASID]);
      for (const p of pasids) if (iommuGetDomainForDevPasid(dev, p) === domain) out.push([dev, p]);
    }
    return out;
  };
  /** A DMA at `iova` through one of the contexts of `domain` (nothing when it has none). */
  const probe = (domain: IommuDomain, iova: number, why: string): void => {
    const ctxs = contextsOf(domain);
    if (ctxs.length === 0) return;
    const [dev, pasid] = pick(ctxs);
    const write = prng.below(2) === 0;
    const st = dma(dev, pasid, iova, 8, write);
    dmas++;
    log.push(
      `dma ${dev.name}${pasid === NO_PASID ? "" : ` pasid=${pasid}`} ${write ? "write" : "read"} ${hex(iova)} (${why}) -> ${st}`,
    );
  };
  const st = (status: number, what: string) => {
    dmas++;
    log.push(`${what} -> ${status}`);
  };
  const note = (ok: boolean | string | number, what: string) => {
    if (typeof ok === "string") refused++;
    log.push(`${what}${typeof ok === "string" ? ` -> ${ok}` : ""}`);
  };
  const demandPaging = (d: IommuDomain) => {
    // Page faults map the page (read/write) and succeed, as an SVA-like handler would.
    d.iopfHandler = (group) => {
      for (const f of group.faults) {
        const page = Math.floor(f.fault.addr / PAGE) * PAGE;
        if (h.map(d, page, PAGE, IOMMU_READ | IOMMU_WRITE) !== "EEXIST") {
          mappings.push({ domain: d, iova: page, size: PAGE });
        }
      }
      iopfGroupResponse(group, IOMMU_PAGE_RESP_SUCCESS);
      return 0;
    };
  };

  const svaOp = svaOn
    ? svaFuzzer(h, svaDevs, {
        note,
        dma: (status, what) => {
          dmas++;
          log.push(`${what} -> ${status}`);
        },
        remember,
        devicesWork: (fn) => {
          // Racing is about the driver's waits: a process's work waits for its page responses,
          // which an SMMU stepped by hand would otherwise only send after the operation.
          if (!racing || !(h instanceof SmmuHarness)) return fn();
          for (const { hw } of h.m.smmus) hw.autoProcessQueue = true;
          const ret = fn();
          for (const { hw } of h.m.smmus) hw.autoProcessQueue = false;
          return ret;
        },
      })
    : null;

  /** The last DMA-API buffer unmapped: its old address must fault once the unmap is flushed. */
  let lastUnmapped: DmaBuffer | null = null;
  /** Operations carried out; fewer than asked when memory a violation corrupted stopped the run. */
  let op = 0;
  /** Why the run stopped early, or null. */
  let wrecked: string | null = null;
  /**
   * A violation may have let a device write where it must not, into a process's page tables say:
   * what the model then trips over is its aftermath, not a model bug. Anything else is one.
   */
  const stop = (e: unknown): void => {
    if (h.oracle.stats.violations === 0) throw e;
    wrecked = e instanceof Error ? e.message : String(e);
    log.push(`stopped: ${wrecked}`);
    if (firstViolationOp < 0) {
      firstViolationOp = op;
      firstViolationLine = log.length - 1;
    }
  };
  /** One operation (and the checks after it). */
  const step = (): void => {
    raceBudget = RACE_BUDGET;
    raceNext = 0;
    const r = prng.below(svaOp === null ? 100 : 100 + SVA_WEIGHT);
    if (r >= 100) {
      if (svaOp === null || !svaOp(r - 100)) return;
    } else if (r < 8) {
      if (domains.length >= 4) return;
      const stage = prng.below(2) === 0 ? "first" : "second";
      const d = h.domainAlloc(pick(devs), "paging", stage);
      if (typeof d !== "string") {
        domains.push(d);
        if (prng.below(2) === 0) demandPaging(d);
      }
      note(
        typeof d === "string" ? d : 0,
        `domain-alloc ${stage} -> ${typeof d === "string" ? d : `domain#${d.id}`}`,
      );
    } else if (r < 12) {
      if (domains.length === 0) return;
      const k = prng.below(domains.length);
      const d = domains[k] as IommuDomain;
      const ret = h.domainFree(d);
      if (ret === 0) {
        domains.splice(k, 1);
        for (let i = mappings.length - 1; i >= 0; i--)
          if (mappings[i]?.domain === d) mappings.splice(i, 1);
      }
      note(ret, `domain-free domain#${d.id}`);
    } else if (r < 20) {
      const dev = pick(devs);
      const c = prng.below(4);
      const target =
        c === 0 || domains.length === 0 ? "default" : c === 1 ? identity : pick(domains);
      const ret = h.attach(dev, target);
      note(ret, `attach ${dev.name} ${target === "default" ? "default" : `domain#${target.id}`}`);
    } else if (r < 34) {
      if (domains.length === 0) return;
      const d = pick(domains);
      const pages = 1 + prng.below(8);
      const iova = IOVA_BASE + prng.below(IOVA_PAGES - pages + 1) * PAGE;
      const prot = [IOMMU_READ, IOMMU_WRITE, IOMMU_READ | IOMMU_WRITE][prng.below(3)] as number;
      const pa = h.map(d, iova, pages * PAGE, prot);
      if (typeof pa === "number") mappings.push({ domain: d, iova, size: pages * PAGE });
      note(
        typeof pa === "string" ? pa : 0,
        `map domain#${d.id} ${hex(iova)} ${pages}p prot=${prot}`,
      );
      if (typeof pa === "number" && prng.below(2) === 0)
        probe(d, iova + prng.below(pages) * PAGE, "after map");
    } else if (r < 44 && arch === "smmu" && domains.length > 0 && prng.below(8) === 0) {
      // A level 3 table freed by an unmap of the whole block it sits under (VT-d: not drawn, so
      // its sequences are unchanged).
      const d = pick(domains);
      const pages = 1 + prng.below(8);
      const pa = h.map(d, TABLE_WINDOW, pages * PAGE, IOMMU_READ | IOMMU_WRITE);
      note(
        typeof pa === "string" ? pa : 0,
        `map domain#${d.id} ${hex(TABLE_WINDOW)} ${pages}p prot=${IOMMU_READ | IOMMU_WRITE}`,
      );
      if (typeof pa === "number") {
        probe(d, TABLE_WINDOW + prng.below(pages) * PAGE, "before table unmap");
        const ret = h.unmap(d, TABLE_WINDOW, TABLE_SPAN);
        note(
          typeof ret === "string" ? ret : 0,
          `unmap domain#${d.id} ${hex(TABLE_WINDOW)} 2M (frees its level 3 table)`,
        );
        // Only the window's first page: the harness keeps the mapping under that address, so a
        // page fault that maps it again stays one mapping.
        probe(d, TABLE_WINDOW, "after table unmap");
      }
    } else if (r < 44) {
      if (mappings.length === 0) return;
      const k = prng.below(mappings.length);
      const mp = mappings[k] as Mapping;
      mappings.splice(k, 1);
      // Warm the caches, unmap, then try the old pages again: a missed flush shows at once. The
      // last page too, since a flush of too small a block misses the end of the range.
      const last = mp.iova + mp.size - PAGE;
      if (prng.below(2) === 0) {
        probe(mp.domain, mp.iova, "before unmap");
        if (last !== mp.iova) probe(mp.domain, last, "before unmap, last page");
      }
      const ret = h.unmap(mp.domain, mp.iova, mp.size);
      note(
        typeof ret === "string" ? ret : 0,
        `unmap domain#${mp.domain.id} ${hex(mp.iova)} ${mp.size / PAGE}p`,
      );
      probe(mp.domain, mp.iova, "after unmap");
      if (last !== mp.iova) probe(mp.domain, last, "after unmap, last page");
    } else if (scalable && r < 48) {
      if (pasids.length >= 4) return;
      const p = h.pasidAlloc(pick(devs.slice(1)), "fuzz");
      if (typeof p === "number") pasids.push(p);
      note(typeof p === "string" ? p : 0, `pasid-alloc -> ${p}`);
    } else if (scalable && r < 54) {
      if (pasids.length === 0 || domains.length === 0) return;
      const dev = pick(devs.slice(1));
      const p = pick(pasids);
      const cur = iommuGetDomainForDevPasid(dev, p);
      let ret: 0 | string;
      if (cur !== null) {
        const m = mappings.find((x) => x.domain === cur);
        const at = m?.iova ?? IOVA_BASE;
        if (prng.below(2) === 0) {
          st(
            dma(dev, p, at, 8, false),
            `dma ${dev.name} pasid=${p} read ${hex(at)} (before detach)`,
          );
        }
        const others = domains.filter((x) => x !== cur);
        if (others.length > 0 && prng.below(3) === 0) {
          // Replace in place (iommufd's way): the old domain's translations must go with it.
          const d = pick(others);
          h.oracle.contextChanged(dev, p, h.oracle.mark());
          ret = iommuReplaceDevicePasid(d, dev, p, "fuzz");
          if (ret === 0)
            h.oracle.note("pasid", null, p, `replaced on ${dev.name} by domain#${d.id}`);
          h.oracle.attachmentsChanged();
          note(ret, `pasid-replace ${dev.name} ${p} domain#${cur.id} -> domain#${d.id}`);
          st(
            dma(dev, p, at, 8, false),
            `dma ${dev.name} pasid=${p} read ${hex(at)} (after replace)`,
          );
        } else {
          ret = h.pasidDetach(dev, p);
          note(ret, `pasid-detach ${dev.name} ${p}`);
          st(
            dma(dev, p, at, 8, false),
            `dma ${dev.name} pasid=${p} read ${hex(at)} (after detach)`,
          );
        }
      } else {
        const d = prng.below(5) === 0 ? identity : pick(domains);
        ret = h.pasidAttach(dev, p, d);
        note(ret, `pasid-attach ${dev.name} ${p} domain#${d.id}`);
      }
    } else if (scalable && r < 57) {
      if (pasids.length === 0) return;
      const k = prng.below(pasids.length);
      const p = pasids[k] as number;
      // Only a PASID nothing is attached at goes back (the owner's rule).
      if (devs.some((d) => iommuGetDomainForDevPasid(d, p) !== null)) return;
      pasids.splice(k, 1);
      note(h.pasidFree(p), `pasid-free ${p}`);
    } else if (r < 63) {
      const dev = pick(devs);
      if (iommuGetDomainForDev(dev) !== dev.iommu?.group?.defaultDomain) return;
      const b = h.dmaMap(dev, 1 + prng.below(3 * PAGE), DMA_BIDIRECTIONAL);
      if (typeof b !== "string") buffers.push(b);
      note(
        typeof b === "string" ? b : 0,
        `dma-map ${dev.name} -> ${typeof b === "string" ? b : hex(b.dma)}`,
      );
    } else if (r < 68) {
      if (buffers.length === 0) return;
      const k = prng.below(buffers.length);
      const b = buffers[k] as DmaBuffer;
      buffers.splice(k, 1);
      // The DMA API serves a device only in its default domain; back there first if it left.
      if (iommuGetDomainForDev(b.dev) !== b.dev.iommu?.group?.defaultDomain)
        h.attach(b.dev, "default");
      // Warm the caches with the buffer's first page, so a missed flush has something to show.
      if (prng.below(2) === 0)
        st(
          dma(b.dev, NO_PASID, b.dma, 8, false),
          `dma ${b.dev.name} read ${hex(b.dma)} (before dma-unmap)`,
        );
      h.dmaUnmap(b);
      note(0, `dma-unmap ${b.dev.name} ${hex(b.dma)}`);
      // Lazy: the old address may still be cached; it must fault once the flush queue flushed
      // (tried after the next flush-queue timeout).
      lastUnmapped = b;
    } else if (r < 80 && mappings.length > 0) {
      const mp = pick(mappings);
      probe(
        mp.domain,
        mp.iova + prng.below(mp.size / PAGE) * PAGE + prng.below(PAGE - 8),
        "mapped",
      );
    } else if (r < 97) {
      const dev = pick(devs);
      let pasid = NO_PASID;
      if (scalable && dev !== devs[0] && prng.below(3) === 0)
        pasid = pasids.length > 0 ? pick(pasids) : 1;
      let iova: number;
      if (buffers.length > 0 && prng.below(3) === 0) {
        const b = pick(buffers);
        iova = b.dma + prng.below(b.size);
      } else {
        iova = IOVA_BASE + prng.below(IOVA_PAGES * PAGE - 64);
      }
      const write = prng.below(2) === 0;
      const st = dma(dev, pasid, iova, 1 + prng.below(64), write);
      dmas++;
      note(
        0,
        `dma ${dev.name}${pasid === NO_PASID ? "" : ` pasid=${pasid}`} ${write ? "write" : "read"} ${hex(iova)} -> ${st}`,
      );
    } else if (options.lazy === true && prng.below(2) === 0) {
      // The flush queues' timers run out: every lazy unmap is flushed now.
      h.m.clock.advance(IOVA_DEFAULT_FQ_TIMEOUT);
      note(0, "flush-queue timeout");
      const b = lastUnmapped;
      if (b !== null && iommuGetDomainForDev(b.dev) === b.dev.iommu?.group?.defaultDomain)
        st(
          dma(b.dev, NO_PASID, b.dma, 8, false),
          `dma ${b.dev.name} read ${hex(b.dma)} (unmapped, after the flush-queue timeout)`,
        );
    } else {
      h.processQueues();
      note(0, "process-queues");
    }
    // The SMMU carries out what the driver queued without waiting (CMD_RESUME, CMD_PRI_RESP,
    // PREFETCH): stepped by hand while racing, it catches up between two operations.
    if (racing && h instanceof SmmuHarness) for (const { hw } of h.m.smmus) hw.processCommands();
    // What the racing DMAs faulted on is read before the next operation, as the interrupt would.
    if (racing) h.serviceInterrupts();
    h.oracle.checkpoint();
    if (firstViolationOp < 0 && h.oracle.stats.violations > 0) {
      firstViolationOp = op;
      firstViolationLine = log.length - 1;
    }
  };
  try {
    for (; op < options.ops; op++) step();
  } catch (e) {
    stop(e);
  }
  // The owners give everything back; then the oracle's end checks.
  racing = false;
  if (h instanceof SmmuHarness) for (const { hw } of h.m.smmus) hw.autoProcessQueue = true;
  if (wrecked === null) {
    try {
      for (const b of buffers) {
        if (iommuGetDomainForDev(b.dev) !== b.dev.iommu?.group?.defaultDomain)
          h.attach(b.dev, "default");
        h.dmaUnmap(b);
      }
      h.teardown();
    } catch (e) {
      stop(e);
    }
  }
  if (firstViolationOp < 0 && h.oracle.stats.violations > 0) {
    firstViolationOp = options.ops;
    firstViolationLine = log.length;
  }
  return {
    seed: options.seed,
    arch,
    mode,
    ops: op,
    stopped: wrecked,
    dmas,
    refused,
    races,
    violations: h.oracle.violations,
    violationsTotal: h.oracle.stats.violations,
    firstViolationOp,
    log:
      firstViolationLine >= 0
        ? log.slice(Math.max(0, firstViolationLine - 19), firstViolationLine + 1)
        : log,
  };
}

/** What the SVA operations report to the run. */
interface SvaFuzzIo {
  /** An owner operation, logged; an errno counts as refused. */
  note(ok: boolean | string | number, what: string): void;
  /** A DMA, counted and logged with its status. */
  dma(status: number | string, what: string): void;
  /** A context that went through, for the racing DMAs. */
  remember(dev: Device, pasid: number, iova: number): void;
  /** `fn`, a process's work on its devices, retried after page requests. */
  devicesWork(fn: () => number): number;
}

/**
 * The SVA operations of a run: `op(r)` carries out operation `r` (0 <= r < SVA_WEIGHT) and says
 * whether there was anything to do. Processes are charged to users with small PASID limits; each
 * maps, unmaps and protects ranges of the same window, binds (also twice) and unbinds the SVA
 * devices, has work done in its address space, and sometimes exits while still bound. Right
 * after each munmap, mprotect, exit or last unbind, a device bound to the process tries the pages
 * it reached just before: that DMA must fault.
 */
function svaFuzzer(h: Harness, svaDevs: readonly Device[], io: SvaFuzzIo): (r: number) => boolean {
  const w = h.sva;
  const prng = h.m.prng;
  const wq = svaDevs[0] as Device;
  const pick = <T>(list: readonly T[]): T => list[prng.below(list.length)] as T;
  /** Processes alive, and exited ones whose devices still hold bonds. */
  const procs: SvaProcess[] = [];
  let made = 0;
  const buf = new Uint8Array(64);
  const view = new DataView(buf.buffer);
  const live = (): SvaProcess[] => procs.filter((p) => !p.exited);
  const gone = (p: SvaProcess): void => {
    if (p.exited && p.bonds.size === 0) procs.splice(procs.indexOf(p), 1);
  };
  /** A live process, mostly one with bonds (whose caches a removal has to reach); or null. */
  const pickLive = (): SvaProcess | null => {
    const all = live();
    if (all.length === 0) return null;
    const bound = all.filter((x) => x.bonds.size > 0);
    return pick(bound.length > 0 && prng.below(4) !== 0 ? bound : all);
  };
  const pageVa = (i: number): number => SVA_BASE + i * PAGE;
  /** A page of the window where `ok` holds, searched from a random one; else that random one. */
  const pagePick = (ok: (va: number) => boolean): number => {
    const start = prng.below(SVA_PAGES);
    for (let k = 0; k < SVA_PAGES; k++) {
      const va = pageVa((start + k) % SVA_PAGES);
      if (ok(va)) return va;
    }
    return pageVa(start);
  };
  const hasVma = (p: SvaProcess) => (va: number) => p.mm.vmaLookup(va) !== null;
  const resident = (p: SvaProcess) => (va: number) => p.mm.lookup(va) >= 0;
  const writable = (p: SvaProcess) => (va: number) =>
    ((p.mm.vmaLookup(va)?.flags ?? 0) & VM_WRITE) !== 0;
  const readable = (p: SvaProcess) => (va: number) =>
    ((p.mm.vmaLookup(va)?.flags ?? 0) & VM_READ) !== 0;
  const bondDev = (p: SvaProcess): Device | null =>
    p.bonds.size === 0 ? null : pick([...p.bonds.keys()]);
  /** Up to `max` pages from a page of `p` with a VMA (where the caches can hold something). */
  const range = (p: SvaProcess, max: number): [number, number] => {
    const va = pagePick(hasVma(p));
    return [va, Math.min(1 + prng.below(max), SVA_PAGES - (va - SVA_BASE) / PAGE)];
  };

  /** `dev` does `p`'s work at `va` (at the process's PASID; PRI devices page faults in). */
  const dma = (
    dev: Device,
    p: SvaProcess,
    va: number,
    size: number,
    write: boolean,
    why: string | null,
  ): number => {
    const b = buf.subarray(0, size);
    if (write) for (let i = 0; i < size; i++) b[i] = (va + i) & 0xff;
    const pasid = w.enqcmdPasid(p);
    const what = `sva-dma ${dev.name} ${p.name}${pasid < 0 ? "" : ` pasid=${pasid}`} ${write ? "write" : "read"} ${hex(va)}${why === null ? "" : ` (${why})`}`;
    if (pasid < 0) {
      // Its mm has no PASID (never bound, or gone): nothing to send, nothing to probe.
      if (why === null) io.note(0, `${what}: no PASID, nothing sent`);
      return -1;
    }
    const st = io.devicesWork(() => w.dma(dev, p, va, b, write));
    io.dma(st, what);
    if (st === DMA_OK) io.remember(dev, pasid, va);
    return st;
  };
  /** The CPU, then `dev`, touch `va`, so that the IOTLB and the device's ATC hold it. */
  const warm = (dev: Device, p: SvaProcess, va: number, write: boolean, why: string): void => {
    const b = buf.subarray(0, 8);
    if (write) w.cpuWrite(p, va, b);
    else w.cpuRead(p, va, b);
    dma(dev, p, va, 8, write, why);
  };

  const create = (): boolean => {
    if (live().length >= SVA_PROCS) return false;
    const [user, max] = pick(SVA_USERS);
    const u = w.user(user, max);
    if (typeof u === "string") throw new Error(`fuzz: user ${user}: ${u}`);
    const name = `p${made++}`;
    const p = w.processCreate(name, u);
    io.note(typeof p === "string" ? p : 0, `process-create ${name} (${user}, ${max} PASIDs)`);
    if (typeof p === "string") return true;
    procs.push(p);
    // Something to work on from the start.
    const pages = 1 + prng.below(8);
    const va = pageVa(prng.below(SVA_PAGES - pages + 1));
    const ret = w.mmap(p, pages * PAGE, PROT_READ | PROT_WRITE, va);
    io.note(typeof ret === "string" ? ret : 0, `mmap ${name} ${hex(va)} ${pages}p prot=3`);
    return true;
  };

  const mmap = (): boolean => {
    const all = live();
    if (all.length === 0) return false;
    const p = pick(all);
    const want = 1 + prng.below(8);
    // A free run of pages from a free page (MAP_FIXED_NOREPLACE refuses to overlap).
    const va = pagePick((x) => !hasVma(p)(x));
    let pages = 0;
    while (pages < want && va + pages * PAGE < pageVa(SVA_PAGES) && !hasVma(p)(va + pages * PAGE))
      pages++;
    if (pages === 0) pages = 1;
    const rw = PROT_READ | PROT_WRITE;
    const prot = pick([rw, rw, rw, rw, PROT_READ, PROT_NONE]);
    const ret = w.mmap(p, pages * PAGE, prot, va);
    io.note(typeof ret === "string" ? ret : 0, `mmap ${p.name} ${hex(va)} ${pages}p prot=${prot}`);
    return true;
  };

  const munmap = (): boolean => {
    const p = pickLive();
    if (p === null) return false;
    const [va, pages] = range(p, 4);
    const last = va + (pages - 1) * PAGE;
    const dev = bondDev(p);
    if (dev !== null) {
      warm(dev, p, va, false, "before munmap");
      if (last !== va) warm(dev, p, last, false, "before munmap, last page");
    }
    io.note(w.munmap(p, va, pages * PAGE), `munmap ${p.name} ${hex(va)} ${pages}p`);
    if (dev !== null) {
      dma(dev, p, va, 8, prng.below(2) === 0, "after munmap");
      if (last !== va) dma(dev, p, last, 8, false, "after munmap, last page");
      // A device that did not warm its own ATC there walks through the IOTLB the warming filled
      // (one per PASID and domain ID, shared by the devices behind the unit).
      const others = [...p.bonds.keys()].filter((d) => d !== dev);
      if (others.length > 0) dma(pick(others), p, va, 8, false, "after munmap, another device");
    }
    return true;
  };

  const mprotect = (): boolean => {
    const p = pickLive();
    if (p === null) return false;
    const [va, pages] = range(p, 4);
    const prot = pick([PROT_READ, PROT_NONE, PROT_READ | PROT_WRITE]);
    const dev = bondDev(p);
    // A write when the page allows it, so that a writable translation is what gets cached.
    if (dev !== null) warm(dev, p, va, writable(p)(va), "before mprotect");
    io.note(
      w.mprotect(p, va, pages * PAGE, prot),
      `mprotect ${p.name} ${hex(va)} ${pages}p prot=${prot}`,
    );
    // What the new protection takes away must fault (read-write takes nothing).
    if (dev !== null && prot !== (PROT_READ | PROT_WRITE))
      dma(dev, p, va, 8, prot === PROT_READ, "after mprotect");
    return true;
  };

  const cpuWrite = (): boolean => {
    const all = live();
    if (all.length === 0) return false;
    const p = pick(all);
    const va = pagePick(writable(p)) + prng.below(PAGE / 64) * 64;
    const n = 8 + prng.below(57);
    for (let i = 0; i < n; i++) buf[i] = (made * 7 + va + i) & 0xff;
    io.note(w.cpuWrite(p, va, buf.subarray(0, n)), `cpu-write ${p.name} ${hex(va)} ${n}B`);
    return true;
  };

  const bind = (): boolean => {
    if (procs.length === 0) return false;
    // Exited processes too: their bind is refused (EINVAL).
    const p = pick(procs);
    const dev = pick(svaDevs);
    const times = prng.below(4) === 0 ? 2 : 1;
    for (let i = 0; i < times; i++) {
      const ret = w.bind(dev, p);
      io.note(
        typeof ret === "string" ? ret : 0,
        `sva-bind ${dev.name} ${p.name}${typeof ret === "string" ? "" : ` -> PASID ${ret}`}`,
      );
    }
    return true;
  };

  const unbind = (): boolean => {
    const all = procs.filter((p) => p.bonds.size > 0);
    if (all.length === 0) return false;
    const p = pick(all);
    const dev = bondDev(p) as Device;
    const lastUser = p.bonds.get(dev)?.users === 1;
    const va = pagePick(p.exited ? () => true : hasVma(p));
    if (lastUser && !p.exited) warm(dev, p, va, false, "before unbind");
    io.note(w.unbind(dev, p), `sva-unbind ${dev.name} ${p.name}`);
    if (lastUser) dma(dev, p, va, 8, false, "after unbind");
    gone(p);
    return true;
  };

  const exit = (): boolean => {
    // Mostly one still bound, whose release must tear its PASID entries down.
    const p = pickLive();
    if (p === null) return false;
    const dev = bondDev(p);
    const va = pagePick(hasVma(p));
    if (dev !== null) warm(dev, p, va, false, "before exit");
    w.exit(p);
    io.note(0, `exit ${p.name}${p.bonds.size > 0 ? " (still bound)" : ""}`);
    if (dev !== null) dma(dev, p, va, 8, false, "after exit");
    gone(p);
    return true;
  };

  const work = (): boolean => {
    if (procs.length === 0) return false;
    // Mostly processes with bonds; exited ones too: their devices' late work must fault.
    const bound = procs.filter((x) => x.bonds.size > 0);
    const p = pick(bound.length > 0 && prng.below(4) !== 0 ? bound : procs);
    const bonded = bondDev(p);
    const dev = bonded !== null && prng.below(4) !== 0 ? bonded : pick(svaDevs);
    const write = prng.below(2) === 0;
    // Mostly where the access can succeed: a VMA that allows it, with PRI; without PRI, a page
    // the CPU has touched too. Now and then anywhere.
    const allows = write ? writable(p) : readable(p);
    const ok = dev.priCap ? allows : (va: number) => allows(va) && resident(p)(va);
    const va =
      (prng.below(8) === 0 ? pageVa(prng.below(SVA_PAGES)) : pagePick(ok)) + prng.below(PAGE - 64);
    dma(dev, p, va, 1 + prng.below(64), write, null);
    return true;
  };

  const enqcmd = (): boolean => {
    const all = procs.filter((p) => !p.exited && p.bonds.has(wq));
    if (all.length === 0) return false;
    const p = pick(all);
    const n = 1 + prng.below(2);
    const ring = pagePick(writable(p)) + prng.below(PAGE / 32 - n) * 32;
    const src = pagePick(writable(p)) + prng.below(PAGE / 64 - n) * 64;
    const dst = pagePick(writable(p)) + prng.below(PAGE / 64 - n) * 64;
    const desc = buf.subarray(0, 32);
    for (let i = 0; i < n; i++) {
      desc.fill(0);
      view.setUint32(0, (src + i * 64) >>> 0, true);
      view.setUint32(4, Math.floor((src + i * 64) / 2 ** 32), true);
      view.setUint32(8, (dst + i * 64) >>> 0, true);
      view.setUint32(12, Math.floor((dst + i * 64) / 2 ** 32), true);
      view.setUint32(16, 64, true);
      w.cpuWrite(p, ring + i * 32, desc);
    }
    for (let i = 0; i < 64; i++) buf[i] = (made + i) & 0xff;
    for (let i = 0; i < n; i++) w.cpuWrite(p, src + i * 64, buf);
    // The work queue has no PRI: the process touches the destination first, mostly.
    if (prng.below(4) !== 0) for (let i = 0; i < n; i++) w.cpuWrite(p, dst + i * 64, buf);
    const done = io.devicesWork(() => w.enqcmd(wq, p, ring, n));
    io.dma(
      done,
      `enqcmd ${wq.name} ${p.name} ring=${hex(ring)} src=${hex(src)} dst=${hex(dst)} ${n} descriptor(s), done`,
    );
    return true;
  };

  // Weights: create 2, mmap 4, munmap 4, mprotect 3, cpu-write 2, bind 4, unbind 3, exit 2,
  // work 8, enqcmd 2 (SVA_WEIGHT in all).
  return (r: number): boolean => {
    // With every process gone, the next one starts (rather than waiting for its own draw).
    if (r < 2 || procs.every((p) => p.exited)) return create();
    if (r < 6) return mmap();
    if (r < 10) return munmap();
    if (r < 13) return mprotect();
    if (r < 15) return cpuWrite();
    if (r < 19) return bind();
    if (r < 22) return unbind();
    if (r < 24) return exit();
    if (r < 32) return work();
    return enqcmd();
  };
}
