// Fuzzing a driver and its IOMMU (VT-d or SMMUv3) under the oracle: seeded random sequences of
// what owners do (domains, attaches, PASID attach / replace / detach, maps, unmaps, on SMMUv3
// unmaps that free a page table, DMA-API buffers, DMAs, queue processing, flush-queue timeouts) on
// a small IOVA space, so that addresses, domain IDs and PASIDs are reused all the time; optionally
// with devices doing DMA while the driver waits for its invalidations. Every DMA is checked by the
// oracle; the run ends with teardown and the leak check.

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
import type { DeviceSpec, DmaBuffer, Harness, MachineSpec } from "../machine/harness.js";
import { SmmuHarness, type SmmuInjection } from "../machine/smmu-harness.js";
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
  /** Operations carried out (all of them unless the model threw). */
  readonly ops: number;
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
    devices,
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
  const d2 = devs[2] as Device;
  const d3 = devs[3];
  if (d3 !== undefined && iommuDevEnableFeature(d3, IOMMU_DEV_FEAT_IOPF) !== 0) {
    throw new Error("fuzz: IOPF enable on the stalling device failed");
  }
  if (scalable && iommuDevEnableFeature(d2, IOMMU_DEV_FEAT_IOPF) !== 0) {
    throw new Error("fuzz: IOPF enable failed");
  }
  options.setup?.(h, devs);
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
  /** One DMA through the harness; one that went through is remembered for the racing DMAs. */
  const dma = (dev: Device, pasid: number, iova: number, size: number, write: boolean): number => {
    const status = h.dma(dev, pasid, iova, size, write);
    if (status === DMA_OK) {
      const page = Math.floor(iova / PAGE) * PAGE;
      const i = recent.findIndex((c) => c.dev === dev && c.pasid === pasid && c.iova === page);
      if (i >= 0) recent.splice(i, 1);
      recent.unshift({ dev, pasid, iova: page });
      if (recent.length > RACE_CONTEXTS) recent.length = RACE_CONTEXTS;
    }
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

  /** The last DMA-API buffer unmapped: its old address must fault once the unmap is flushed. */
  let lastUnmapped: DmaBuffer | null = null;
  for (let op = 0; op < options.ops; op++) {
    raceBudget = RACE_BUDGET;
    raceNext = 0;
    const r = prng.below(100);
    if (r < 8) {
      if (domains.length >= 4) continue;
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
      if (domains.length === 0) continue;
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
      if (domains.length === 0) continue;
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
      if (mappings.length === 0) continue;
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
      if (pasids.length >= 4) continue;
      const p = h.pasidAlloc(pick(devs.slice(1)), "fuzz");
      if (typeof p === "number") pasids.push(p);
      note(typeof p === "string" ? p : 0, `pasid-alloc -> ${p}`);
    } else if (scalable && r < 54) {
      if (pasids.length === 0 || domains.length === 0) continue;
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
      if (pasids.length === 0) continue;
      const k = prng.below(pasids.length);
      const p = pasids[k] as number;
      // Only a PASID nothing is attached at goes back (the owner's rule).
      if (devs.some((d) => iommuGetDomainForDevPasid(d, p) !== null)) continue;
      pasids.splice(k, 1);
      note(h.pasidFree(p), `pasid-free ${p}`);
    } else if (r < 63) {
      const dev = pick(devs);
      if (iommuGetDomainForDev(dev) !== dev.iommu?.group?.defaultDomain) continue;
      const b = h.dmaMap(dev, 1 + prng.below(3 * PAGE), DMA_BIDIRECTIONAL);
      if (typeof b !== "string") buffers.push(b);
      note(
        typeof b === "string" ? b : 0,
        `dma-map ${dev.name} -> ${typeof b === "string" ? b : hex(b.dma)}`,
      );
    } else if (r < 68) {
      if (buffers.length === 0) continue;
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
  }
  // The owners give everything back; then the oracle's end checks.
  racing = false;
  if (h instanceof SmmuHarness) for (const { hw } of h.m.smmus) hw.autoProcessQueue = true;
  for (const b of buffers) {
    if (iommuGetDomainForDev(b.dev) !== b.dev.iommu?.group?.defaultDomain)
      h.attach(b.dev, "default");
    h.dmaUnmap(b);
  }
  h.teardown();
  if (firstViolationOp < 0 && h.oracle.stats.violations > 0) {
    firstViolationOp = options.ops;
    firstViolationLine = log.length;
  }
  return {
    seed: options.seed,
    arch,
    mode,
    ops: options.ops,
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
