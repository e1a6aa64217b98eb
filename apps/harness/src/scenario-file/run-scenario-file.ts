// Runs a validated scenario file: the machine it describes under the oracle, then its steps in
// order. A step that fails names its place in the file; the oracle's violations end the run.

import {
  type Device,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_OK,
  DMA_TO_DEVICE,
  IOMMU_DOMAIN_IDENTITY,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuGetDmaDomain,
  iommuGetDomainForDev,
  iommuGetDomainForDevPasid,
  NO_PASID,
} from "@iommu-sim/iommu-core";
import type { DmaBuffer, Harness, MachineSpec as HarnessMachineSpec } from "../machine/harness.js";
import { SmmuHarness, type SmmuInjection } from "../machine/smmu-harness.js";
import { VtdHarness, type VtdInjection } from "../machine/vtd-harness.js";
import type { Scenario, ScenarioContext } from "../scenario.js";
import type { Loc, PasidRef, ScenarioSpec, StepSpec } from "./scenario-spec.js";

const PAGE = 4096;
/** Where `submit` puts its ring and buffers in a paging domain (below 2^47, page aligned). */
const SUBMIT_WINDOW = 0x7f00_0000_0000;

const DIRS = {
  "to-device": DMA_TO_DEVICE,
  "from-device": DMA_FROM_DEVICE,
  bidirectional: DMA_BIDIRECTIONAL,
};

/** A mapping a `map` step named. */
interface NamedMap {
  domain: IommuDomain;
  iova: number;
  size: number;
}

/** The state of one run: the harness and what the steps named. */
class FileRun {
  readonly domains = new Map<string, IommuDomain>();
  readonly pasids = new Map<string, number>();
  readonly buffers = new Map<string, DmaBuffer>();
  readonly maps = new Map<string, NamedMap>();

  constructor(
    readonly spec: ScenarioSpec,
    readonly h: Harness,
    readonly ctx: ScenarioContext,
  ) {}

  where(loc: Loc): string {
    return `${this.spec.file}:${loc.line}`;
  }

  fail(step: StepSpec, what: string): void {
    this.ctx.check(step.op, false, `${this.where(step.loc)}: ${step.op}: ${what}`);
  }

  dev(name: string): Device | null {
    return this.h.devices.get(name) ?? null;
  }

  pasidOf(ref: PasidRef | undefined): number {
    if (ref === undefined) return NO_PASID;
    if (typeof ref === "number") return ref;
    return this.pasids.get(ref) ?? -2;
  }

  run(steps: readonly StepSpec[]): void {
    for (const step of steps) this.step(step);
  }

  step(s: StepSpec): void {
    const h = this.h;
    const ctx = this.ctx;
    switch (s.op) {
      case "domain": {
        // A domain is created for the first device: every device of a unit can use it.
        const first = h.devices.values().next().value as Device | undefined;
        if (first === undefined) {
          this.fail(s, "no device to allocate a domain for");
          return;
        }
        const d = h.domainAlloc(first, s.type, s.stage);
        ctx.countOp();
        if (typeof d === "string") {
          this.fail(s, `${s.name}: ${d}`);
          return;
        }
        this.domains.set(s.name, d);
        return;
      }
      case "attach": {
        const dev = this.dev(s.device);
        if (dev === null) {
          this.fail(s, `${s.device} was unplugged`);
          return;
        }
        const target = s.domain === "default" ? "default" : this.domains.get(s.domain);
        if (target === undefined) {
          this.fail(s, `${s.domain} was freed`);
          return;
        }
        const ret = h.attach(dev, target);
        ctx.countOp();
        if (ret !== 0) this.fail(s, `${s.device} to ${s.domain}: ${ret}`);
        return;
      }
      case "pasid-alloc": {
        const any = [...h.devices.values()].find((d) => d.maxPasids > 1);
        if (any === undefined) {
          this.fail(s, "no device with PASIDs");
          return;
        }
        const p = h.pasidAlloc(any, s.name);
        ctx.countOp();
        if (typeof p === "string") {
          this.fail(s, `${s.name}: ${p}`);
          return;
        }
        this.pasids.set(s.name, p);
        return;
      }
      case "pasid-attach": {
        const dev = this.dev(s.device);
        const d = this.domains.get(s.domain);
        const p = this.pasidOf(s.pasid);
        if (dev === null || d === undefined || p < 0) {
          this.fail(s, "device, domain or PASID is gone");
          return;
        }
        const ret = h.pasidAttach(dev, p, d);
        ctx.countOp();
        if (ret !== 0) this.fail(s, `${s.device} PASID ${p} to ${s.domain}: ${ret}`);
        return;
      }
      case "pasid-detach": {
        const dev = this.dev(s.device);
        const p = this.pasidOf(s.pasid);
        if (dev === null || p < 0) {
          this.fail(s, "device or PASID is gone");
          return;
        }
        const ret = h.pasidDetach(dev, p);
        ctx.countOp();
        if (ret !== 0) this.fail(s, `${s.device} PASID ${p}: ${ret}`);
        return;
      }
      case "pasid-free": {
        const p = this.pasids.get(s.pasid);
        if (p === undefined) {
          this.fail(s, `${s.pasid} was freed`);
          return;
        }
        const ret = h.pasidFree(p);
        ctx.countOp();
        this.pasids.delete(s.pasid);
        if (ret !== 0) this.fail(s, `PASID ${p}: ${ret}`);
        return;
      }
      case "dma-pasid": {
        const dev = this.dev(s.device);
        if (dev === null) {
          this.fail(s, `${s.device} was unplugged`);
          return;
        }
        const p = h.dmaPasidEnable(dev);
        ctx.countOp();
        if (typeof p === "string") {
          this.fail(s, `${s.device}: ${p}`);
          return;
        }
        this.pasids.set(s.name, p);
        return;
      }
      case "map": {
        const d = this.domains.get(s.domain);
        if (d === undefined) {
          this.fail(s, `${s.domain} was freed`);
          return;
        }
        const pa = h.map(d, s.iova, s.size, s.perm);
        ctx.countOp();
        if (typeof pa === "string") {
          this.fail(s, `${s.domain} at 0x${s.iova.toString(16)}: ${pa}`);
          return;
        }
        if (s.name !== undefined) this.maps.set(s.name, { domain: d, iova: s.iova, size: s.size });
        return;
      }
      case "unmap": {
        const d = this.domains.get(s.domain);
        if (d === undefined) {
          this.fail(s, `${s.domain} was freed`);
          return;
        }
        const ret = h.unmap(d, s.iova, s.size);
        ctx.countOp();
        if (ret !== s.size)
          this.fail(s, `${s.domain} at 0x${s.iova.toString(16)}: unmapped ${ret}`);
        return;
      }
      case "domain-free": {
        const d = this.domains.get(s.domain);
        if (d === undefined) {
          this.fail(s, `${s.domain} was freed`);
          return;
        }
        const ret = h.domainFree(d);
        ctx.countOp();
        this.domains.delete(s.domain);
        if (ret !== 0) this.fail(s, `${s.domain}: ${ret}`);
        return;
      }
      case "dma": {
        const dev = this.dev(s.device);
        if (dev === null) {
          this.fail(s, `${s.device} was unplugged`);
          return;
        }
        const st = h.dma(dev, this.pasidOf(s.pasid), s.iova, s.size, s.access === "write");
        ctx.countDma();
        if (st !== DMA_OK) ctx.countFault();
        if (s.expect !== undefined) {
          const ok = s.expect === "ok" ? st === DMA_OK : st !== DMA_OK;
          ctx.check(
            "dma",
            ok,
            `${this.where(s.loc)}: dma: ${s.device} ${s.access} at 0x${s.iova.toString(16)}: expected ${s.expect}, got status ${st}`,
          );
        }
        return;
      }
      case "dma-map": {
        const dev = this.dev(s.device);
        if (dev === null) {
          this.fail(s, `${s.device} was unplugged`);
          return;
        }
        const b = h.dmaMap(dev, s.size, DIRS[s.dir]);
        ctx.countOp();
        if (typeof b === "string") {
          this.fail(s, `${s.name}: ${b}`);
          return;
        }
        this.buffers.set(s.name, b);
        return;
      }
      case "dma-unmap": {
        const b = this.buffers.get(s.buffer);
        if (b === undefined) {
          this.fail(s, `${s.buffer} was unmapped`);
          return;
        }
        h.dmaUnmap(b);
        ctx.countOp();
        this.buffers.delete(s.buffer);
        return;
      }
      case "copy": {
        const dev = this.dev(s.device);
        if (dev === null) {
          this.fail(s, `${s.device} was unplugged`);
          return;
        }
        const st = h.copy(dev, this.pasidOf(s.pasid), s.src, s.dst, s.size);
        ctx.countDma(2);
        ctx.check("copy", st === DMA_OK, `${this.where(s.loc)}: copy: ${s.device}: status ${st}`);
        return;
      }
      case "submit":
        this.submit(s);
        return;
      case "random":
        this.random(s.count, s.devices, s);
        return;
      case "repeat":
        for (let i = 0; i < s.count; i++) this.run(s.steps);
        return;
      case "unplug": {
        const dev = this.dev(s.device);
        if (dev === null) {
          this.fail(s, `${s.device} was unplugged`);
          return;
        }
        for (const [name, b] of [...this.buffers]) {
          if (b.dev === dev) {
            h.dmaUnmap(b);
            this.buffers.delete(name);
          }
        }
        for (const p of this.pasids.values()) {
          if (iommuGetDomainForDevPasid(dev, p) !== null) h.pasidDetach(dev, p);
        }
        const ret = h.unplug(dev);
        ctx.countOp();
        if (ret !== 0) this.fail(s, `${s.device}: ${ret}`);
        return;
      }
    }
  }

  /**
   * A work-queue device runs `count` descriptors: a ring and source/destination buffers go into
   * the address space the device uses at the PASID (a window of its paging domain, DMA-API
   * buffers for a DMA domain, host memory under identity), the device copies, and the bytes and
   * completion records are checked.
   */
  private submit(s: Extract<StepSpec, { op: "submit" }>): void {
    const h = this.h;
    const dev = this.dev(s.device);
    if (dev === null) {
      this.fail(s, `${s.device} was unplugged`);
      return;
    }
    const pasid = this.pasidOf(s.pasid);
    const domain =
      pasid === NO_PASID ? iommuGetDomainForDev(dev) : iommuGetDomainForDevPasid(dev, pasid);
    if (domain === null) {
      this.fail(s, `nothing is attached at PASID ${pasid} of ${s.device}`);
      return;
    }
    const slots = Math.min(s.count, 64);
    const ringSize = 64 * 32;
    const areas: { iova: number; pa: number; undo: () => void }[] = [];
    const area = (size: number): { iova: number; pa: number } | string => {
      if (domain === iommuGetDmaDomain(dev)) {
        const b = h.dmaMap(dev, size, DMA_BIDIRECTIONAL);
        if (typeof b === "string") return b;
        areas.push({ iova: b.dma, pa: b.pa, undo: () => h.dmaUnmap(b) });
        return { iova: b.dma, pa: b.pa };
      }
      if (domain.type === IOMMU_DOMAIN_IDENTITY) {
        let order = 0;
        while (PAGE << order < size) order++;
        const f = h.m.frames.alloc(order);
        if (typeof f !== "number") return f;
        areas.push({ iova: f, pa: f, undo: () => h.m.frames.free(f, order) });
        return { iova: f, pa: f };
      }
      const iova = SUBMIT_WINDOW + areas.length * 0x100_0000;
      const pa = h.map(domain, iova, Math.ceil(size / PAGE) * PAGE, IOMMU_READ | IOMMU_WRITE);
      if (typeof pa === "string") return pa;
      areas.push({ iova, pa, undo: () => h.unmap(domain, iova, Math.ceil(size / PAGE) * PAGE) });
      return { iova, pa };
    };
    const ring = area(ringSize);
    const src = area(slots * s.size);
    const dst = area(slots * s.size);
    if (typeof ring === "string" || typeof src === "string" || typeof dst === "string") {
      for (const a of areas) a.undo();
      this.fail(s, "no memory for the ring and buffers");
      return;
    }
    const mem = h.m.mem;
    for (let i = 0; i < slots; i++) {
      const at = ring.pa + i * 32;
      mem.write64(
        at,
        (src.iova + i * s.size) % 2 ** 32,
        Math.floor((src.iova + i * s.size) / 2 ** 32),
      );
      mem.write64(
        at + 8,
        (dst.iova + i * s.size) % 2 ** 32,
        Math.floor((dst.iova + i * s.size) / 2 ** 32),
      );
      mem.write32(at + 16, s.size);
      mem.write32(at + 24, 0);
      mem.write32(src.pa + i * s.size, 0x5a000000 + i);
    }
    const done = h.workQueue(dev, pasid, ring.iova, s.count, s.size);
    this.ctx.countDma(done * 4);
    let good = done === s.count;
    for (let i = 0; i < Math.min(done, slots) && good; i++) {
      good =
        mem.read32(dst.pa + i * s.size) === 0x5a000000 + i &&
        mem.read32(ring.pa + i * 32 + 24) === 1;
    }
    this.ctx.check(
      "submit",
      good,
      `${this.where(s.loc)}: submit: ${s.device} completed ${done} of ${s.count} descriptors${good || done !== s.count ? "" : " with wrong bytes"}`,
    );
    for (const a of areas) a.undo();
  }

  /** A seeded random mix of DMA-API maps, DMAs and unmaps on `devices`; every unmap must fault after. */
  private random(count: number, names: readonly string[], s: StepSpec): void {
    const h = this.h;
    const prng = h.m.prng;
    // The DMA API serves a device only while it is in its default (DMA) domain.
    const devs = names
      .map((n) => this.dev(n))
      .filter((d): d is Device => d !== null && iommuGetDomainForDev(d) === iommuGetDmaDomain(d));
    if (devs.length === 0) {
      this.fail(s, "no device is in its DMA-API domain");
      return;
    }
    const live: DmaBuffer[] = [];
    for (let i = 0; i < count; i++) {
      const r = prng.below(10);
      if (r < 4 || live.length === 0) {
        const d = devs[prng.below(devs.length)] as Device;
        const b = h.dmaMap(d, 1 + prng.below(4 * PAGE), DMA_BIDIRECTIONAL);
        this.ctx.countOp();
        if (typeof b !== "string") live.push(b);
      } else if (r < 8) {
        const b = live[prng.below(live.length)] as DmaBuffer;
        const st = h.dma(b.dev, NO_PASID, b.dma, b.size, prng.below(2) === 0);
        this.ctx.countDma();
        if (st !== DMA_OK)
          this.ctx.check(
            "random",
            false,
            `${this.where(s.loc)}: random: ${b.dev.name}: DMA to a mapped buffer: status ${st}`,
          );
      } else {
        const k = prng.below(live.length);
        const b = live[k] as DmaBuffer;
        live.splice(k, 1);
        h.dmaUnmap(b);
        this.ctx.countOp();
        // With lazy invalidation the old translation may live on until the flush queue drains.
        if (h.oracle.lazy) continue;
        const st = h.dma(b.dev, NO_PASID, b.dma, 8, false);
        this.ctx.countDma();
        if (st === DMA_OK)
          this.ctx.check(
            "random",
            false,
            `${this.where(s.loc)}: random: ${b.dev.name}: DMA after unmap succeeded`,
          );
        else this.ctx.countFault();
      }
    }
    for (const b of live) h.dmaUnmap(b);
  }
}

/**
 * The scenario a validated file describes, on `arch` (default: the file's; a file with arch `both`
 * gives one scenario per architecture).
 */
export function scenarioFromFile(
  spec: ScenarioSpec,
  arch: "vtd" | "smmu" = fileArch(spec),
): Scenario {
  return {
    name: spec.scenario,
    arch,
    description: spec.description,
    run(ctx: ScenarioContext): void {
      const machine: HarnessMachineSpec = {
        memory: spec.machine.memory,
        lazy: spec.invalidation === "lazy",
        units: spec.machine.units.map((u) => ({
          name: u.name,
          mode: u.mode,
          cache: u.cache,
          cachingMode: u.cachingMode,
          pasidBits: u.pasidBits,
          ats: u.ats,
          pri: u.pri,
          superpages: u.superpages,
          ...(u.iotlb === undefined ? {} : { iotlb: u.iotlb }),
        })),
        devices: spec.machine.devices.map((d) => ({
          name: d.name,
          rid: d.rid,
          kind: d.kind,
          pasidBits: d.pasidBits,
          ats: d.ats,
          pri: d.pri,
          ...(d.unit === null ? {} : { unit: d.unit }),
          ...(d.ats ? { atc: d.atc } : {}),
        })),
      };
      const h: Harness =
        arch === "smmu"
          ? new SmmuHarness(machine, ctx.seed, (ctx.inject as SmmuInjection | null) ?? null)
          : new VtdHarness(machine, ctx.seed, (ctx.inject as VtdInjection | null) ?? null);
      if (ctx.outcomes !== null) h.recordOutcomes();
      if (ctx.traceListener !== null) h.m.trace.subscribe(ctx.traceListener);
      const run = new FileRun(spec, h, ctx);
      for (const d of spec.machine.devices) {
        const dev = h.addDevice({
          name: d.name,
          rid: d.rid,
          pasidBits: d.pasidBits,
          ats: d.ats,
          pri: d.pri,
          ...(d.ats ? { atc: d.atc } : {}),
        });
        ctx.countOp();
        ctx.check(
          "probe",
          typeof dev !== "string",
          `${spec.file}:${d.loc.line}: ${d.name}: probe failed: ${String(dev)}`,
        );
        if (typeof dev === "string") return;
      }
      run.run(spec.steps);
      for (const b of run.buffers.values()) h.dmaUnmap(b);
      ctx.snapshot(h.m.mem, h.snapshotRegisters());
      h.teardown();
      ctx.violations(h.oracle.violations, h.oracle.stats.violations);
      if (ctx.outcomes !== null && h.outcomes !== null) ctx.outcomes.push(...h.outcomes);
    },
  };
}

/** The one architecture a file runs on (`both` and `mock` files are run through the CLI's paths). */
function fileArch(spec: ScenarioSpec): "vtd" | "smmu" {
  return spec.arch === "smmu" ? "smmu" : "vtd";
}
