// Runs a validated scenario file: the machine it describes under the oracle, then its steps in
// order (processes and their SVA binds through the harness's SvaWorld). A step that fails names
// its place in the file; the oracle's violations end the run.

import type { ChargeNode } from "@iommu-sim/ioasid";
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
import { PROT_READ, PROT_WRITE } from "@iommu-sim/sva";
import type { DmaBuffer, Harness, MachineSpec as HarnessMachineSpec } from "../machine/harness.js";
import { SmmuHarness, type SmmuInjection } from "../machine/smmu-harness.js";
import type { SvaProcess, SvaWorld } from "../machine/sva-world.js";
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

/** A region an `mmap` step mapped: whose address space, where. */
interface MappedRegion {
  readonly p: SvaProcess;
  readonly va: number;
}

/** Bytes of one work-queue descriptor (src, dst, size; the completion status at 24). */
const DESC = 32;
/** Descriptors in a process's one-page ring. */
const RING_SLOTS = PAGE / DESC;

/** The state of one run: the harness and what the steps named. */
class FileRun {
  readonly domains = new Map<string, IommuDomain>();
  readonly pasids = new Map<string, number>();
  readonly buffers = new Map<string, DmaBuffer>();
  readonly maps = new Map<string, NamedMap>();
  readonly users = new Map<string, ChargeNode>();
  /** The latest mapping of each region name (one `mmap` in a repeat maps it again). */
  readonly regions = new Map<string, MappedRegion>();
  /** Set once a step touches processes: only then does the machine get an SvaWorld. */
  private world: SvaWorld | null = null;
  /** `enqcmd` steps run so far: each fills its source with different bytes. */
  private jobs = 0;
  /** Each process's descriptor ring (its address). */
  private readonly rings = new Map<SvaProcess, number>();

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

  get sva(): SvaWorld {
    this.world ??= this.h.sva;
    return this.world;
  }

  /** Each user of the file: a node of the PASID charge tree with its limit. */
  createUsers(): void {
    for (const u of this.spec.users) {
      const node = this.sva.user(u.name, u.pasidLimit ?? Number.POSITIVE_INFINITY);
      this.ctx.countOp();
      if (typeof node === "string") {
        this.ctx.check("user", false, `${this.where(u.loc)}: user ${u.name}: ${node}`);
        continue;
      }
      this.users.set(u.name, node);
    }
  }

  /** A process the steps started, or null (a failed check) when its `process` step failed. */
  proc(s: StepSpec, name: string): SvaProcess | null {
    const p = this.sva.processes.get(name);
    if (p === undefined) this.fail(s, `process ${name} was not started`);
    return p ?? null;
  }

  /** A region's mapping, or null (a failed check) when its `mmap` step failed. */
  region(s: StepSpec, name: string): MappedRegion | null {
    const r = this.regions.get(name);
    if (r === undefined) this.fail(s, `region ${name} was not mapped`);
    return r ?? null;
  }

  /** A step's outcome against its expectation: a check either way (`detail` follows `got`). */
  expect(
    s: StepSpec,
    what: string,
    expected: string | number,
    got: string | number,
    detail = "",
  ): void {
    this.ctx.check(
      s.op,
      expected === got,
      `${this.where(s.loc)}: ${s.op}: ${what}: expected ${expected}, got ${got}${detail}`,
    );
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
        // Its driver's remove closes every process's handle first (the core expects no bond).
        if (this.world !== null) {
          for (const p of this.world.processes.values()) {
            while (p.bonds.has(dev)) this.world.unbind(dev, p);
          }
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
      default:
        this.svaStep(s);
    }
  }

  /** The steps of processes: address spaces, binds, and devices working in them. */
  private svaStep(s: StepSpec): void {
    const ctx = this.ctx;
    switch (s.op) {
      case "process": {
        const user = s.user === undefined ? null : (this.users.get(s.user) ?? null);
        if (s.user !== undefined && user === null) {
          this.fail(s, `user ${s.user} was not created`);
          return;
        }
        const p = this.sva.processCreate(s.name, user);
        ctx.countOp();
        if (typeof p === "string") this.fail(s, `${s.name}: ${p}`);
        return;
      }
      case "mmap": {
        const p = this.proc(s, s.process);
        if (p === null) return;
        const va = this.sva.mmap(p, s.pages * PAGE, s.prot);
        ctx.countOp();
        if (typeof va === "number") this.regions.set(s.name, { p, va });
        const got = typeof va === "number" ? "ok" : va;
        const at = typeof va === "number" ? ` (at 0x${va.toString(16)})` : "";
        this.expect(s, `${s.name} in ${s.process}`, s.expect, got, at);
        return;
      }
      case "munmap": {
        const r = this.region(s, s.region);
        if (r === null) return;
        const ret = this.sva.munmap(r.p, r.va + s.page * PAGE, s.pages * PAGE);
        ctx.countOp();
        if (ret !== 0) this.fail(s, `${s.region}: ${ret}`);
        return;
      }
      case "mprotect": {
        const r = this.region(s, s.region);
        if (r === null) return;
        const ret = this.sva.mprotect(r.p, r.va + s.page * PAGE, s.pages * PAGE, s.prot);
        ctx.countOp();
        this.expect(s, `${s.region} pages ${s.page}+${s.pages}`, s.expect, ret === 0 ? "ok" : ret);
        return;
      }
      case "cpu-write": {
        const r = this.region(s, s.region);
        if (r === null) return;
        const ret = this.cpuWrite(r, s.page, s.pages);
        ctx.countOp();
        this.expect(
          s,
          `${r.p.name} writes ${s.region} pages ${s.page}+${s.pages}`,
          s.expect,
          ret === 0 ? "ok" : "fault",
          ret === 0 ? "" : ` (${ret})`,
        );
        return;
      }
      case "bind": {
        const dev = this.dev(s.device);
        if (dev === null) {
          this.fail(s, `${s.device} was unplugged`);
          return;
        }
        const p = this.proc(s, s.process);
        if (p === null) return;
        const ret = this.sva.bind(dev, p);
        ctx.countOp();
        const got = typeof ret === "number" ? "ok" : ret;
        const pasid = typeof ret === "number" ? ` (PASID ${ret})` : "";
        this.expect(s, `${s.device} to ${s.process}`, s.expect, got, pasid);
        return;
      }
      case "unbind": {
        const dev = this.dev(s.device);
        if (dev === null) {
          this.fail(s, `${s.device} was unplugged`);
          return;
        }
        const p = this.proc(s, s.process);
        if (p === null) return;
        const ret = this.sva.unbind(dev, p);
        ctx.countOp();
        this.expect(s, `${s.device} from ${s.process}`, s.expect, ret === 0 ? "ok" : ret);
        return;
      }
      case "exit": {
        const p = this.proc(s, s.process);
        if (p === null) return;
        if (p.exited) {
          this.fail(s, `${s.process} has exited already`);
          return;
        }
        this.sva.exit(p);
        ctx.countOp();
        return;
      }
      case "sva-dma": {
        const dev = this.dev(s.device);
        if (dev === null) {
          this.fail(s, `${s.device} was unplugged`);
          return;
        }
        const p = this.proc(s, s.process);
        const r = p === null ? null : this.region(s, s.region);
        if (p === null || r === null) return;
        const va = r.va + s.offset;
        const write = s.access === "write";
        const buf = new Uint8Array(s.size);
        if (write) for (let i = 0; i < s.size; i++) buf[i] = (va + i) & 0xff;
        const st = this.sva.dma(dev, p, va, buf, write);
        ctx.countDma();
        if (st !== DMA_OK) ctx.countFault();
        if (s.expect === undefined) return;
        const ok = s.expect === "ok" ? st === DMA_OK : st !== DMA_OK;
        const got = st < 0 ? `no PASID (${s.process} never bound a device)` : `status ${st}`;
        ctx.check(
          "sva-dma",
          ok,
          `${this.where(s.loc)}: sva-dma: ${s.device} ${s.access} at 0x${va.toString(16)} (${s.region}+0x${s.offset.toString(16)}) for ${s.process}: expected ${s.expect}, got ${got}`,
        );
        return;
      }
      case "enqcmd":
        this.enqcmd(s);
        return;
      default:
        return;
    }
  }

  /**
   * The process writes `pages` pages of region `r` from `page`: byte a holds a + a / 4096 (mod
   * 256), so every page differs from its neighbours. Returns 0 or the first page's errno.
   */
  private cpuWrite(r: MappedRegion, page: number, pages: number): 0 | string {
    const buf = new Uint8Array(PAGE);
    for (let i = 0; i < pages; i++) {
      const at = r.va + (page + i) * PAGE;
      const salt = Math.floor(at / PAGE);
      for (let k = 0; k < PAGE; k++) buf[k] = (at + k + salt) & 0xff;
      const ret = this.sva.cpuWrite(r.p, at, buf);
      if (ret !== 0) return ret;
    }
    return 0;
  }

  /**
   * ENQCMD work: the process writes fresh bytes into the first `count` pages of src and the
   * descriptors (page i of src to page i of dst) into its ring, a batch of {@link RING_SLOTS} at a
   * time; the device runs each batch at the process's PASID; the completed copies are checked byte
   * for byte.
   */
  private enqcmd(s: Extract<StepSpec, { op: "enqcmd" }>): void {
    const ctx = this.ctx;
    const w = this.sva;
    const dev = this.dev(s.device);
    if (dev === null) {
      this.fail(s, `${s.device} was unplugged`);
      return;
    }
    const p = this.proc(s, s.process);
    const src = p === null ? null : this.region(s, s.src);
    const dst = src === null ? null : this.region(s, s.dst);
    if (p === null || src === null || dst === null) return;
    const what = `${s.device} ran ${s.process}'s ${s.count} descriptors`;
    if (p.exited) {
      this.expect(s, what, s.expect, 0, ` (${s.process} has exited: it submits nothing)`);
      return;
    }
    const ring = this.ringOf(p);
    if (typeof ring === "string") {
      this.fail(s, `${s.process} cannot map its ring: ${ring}`);
      return;
    }
    const data = new Uint8Array(PAGE);
    const salt = ++this.jobs * 17;
    let ret: 0 | string = 0;
    for (let i = 0; i < s.count && ret === 0; i++) {
      for (let k = 0; k < PAGE; k++) data[k] = (k + i * 31 + salt) & 0xff;
      ret = w.cpuWrite(p, src.va + i * PAGE, data);
    }
    const descs = new Uint8Array(RING_SLOTS * DESC);
    const view = new DataView(descs.buffer);
    let done = 0;
    for (let first = 0; first < s.count && ret === 0; first += RING_SLOTS) {
      const n = Math.min(RING_SLOTS, s.count - first);
      descs.fill(0);
      for (let j = 0; j < n; j++) {
        const from = src.va + (first + j) * PAGE;
        const to = dst.va + (first + j) * PAGE;
        view.setUint32(j * DESC, from % 2 ** 32, true);
        view.setUint32(j * DESC + 4, Math.floor(from / 2 ** 32), true);
        view.setUint32(j * DESC + 8, to % 2 ** 32, true);
        view.setUint32(j * DESC + 12, Math.floor(to / 2 ** 32), true);
        view.setUint32(j * DESC + 16, PAGE, true);
      }
      ret = w.cpuWrite(p, ring, descs.subarray(0, n * DESC));
      if (ret !== 0) break;
      const k = w.enqcmd(dev, p, ring, n);
      ctx.countDma(k * 4);
      done += k;
      if (k < n) break;
    }
    ctx.countOp();
    if (ret !== 0) {
      this.fail(s, `${s.process} cannot write its descriptors and source: ${ret}`);
      return;
    }
    this.expect(s, what, s.expect, done);
    if (done === 0) return;
    const a = new Uint8Array(PAGE);
    const b = new Uint8Array(PAGE);
    let same = true;
    for (let i = 0; i < done && same; i++) {
      same = w.cpuRead(p, src.va + i * PAGE, a) === 0 && w.cpuRead(p, dst.va + i * PAGE, b) === 0;
      for (let k = 0; k < PAGE && same; k++) same = a[k] === b[k];
    }
    ctx.check(
      "enqcmd-bytes",
      same,
      `${this.where(s.loc)}: enqcmd: ${s.device}: ${s.dst} differs from ${s.src} after ${done} descriptors`,
    );
  }

  /** The process's descriptor ring: one page it maps at its first `enqcmd` and keeps. */
  private ringOf(p: SvaProcess): number | string {
    const have = this.rings.get(p);
    if (have !== undefined) return have;
    const ring = this.sva.mmap(p, PAGE, PROT_READ | PROT_WRITE);
    this.ctx.countOp();
    if (typeof ring === "number") this.rings.set(p, ring);
    return ring;
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
      if (spec.users.length > 0) run.createUsers();
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
      // A violation may have let a device write where it must not (a stale translation into a
      // frame that is a process's page table now): what the model trips over then is the
      // violation's aftermath, reported with it. Without a violation a throw is a bug.
      let stopped: string | null = null;
      const stop = (e: unknown): void => {
        if (h.oracle.stats.violations === 0) throw e;
        stopped = e instanceof Error ? e.message : String(e);
      };
      try {
        run.run(spec.steps);
        for (const b of run.buffers.values()) h.dmaUnmap(b);
      } catch (e) {
        stop(e);
      }
      ctx.snapshot(h.m.mem, h.snapshotRegisters());
      if (stopped === null) {
        try {
          h.teardown();
        } catch (e) {
          stop(e);
        }
      }
      if (stopped !== null) {
        ctx.check(
          "run",
          false,
          `${spec.file}: stopped after the oracle's violations wrecked the machine's memory: ${stopped}`,
        );
      }
      ctx.violations(h.oracle.violations, h.oracle.stats.violations);
      if (ctx.outcomes !== null && h.outcomes !== null) ctx.outcomes.push(...h.outcomes);
    },
  };
}

/** The one architecture a file runs on (`both` and `mock` files are run through the CLI's paths). */
function fileArch(spec: ScenarioSpec): "vtd" | "smmu" {
  return spec.arch === "smmu" ? "smmu" : "vtd";
}
