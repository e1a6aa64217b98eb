// A machine as the harness runs it, whatever its IOMMU: the machine, the oracle watching it, and
// the operations a scenario performs as the owners of domains, buffers and PASIDs (each one
// reported to the oracle), plus the devices' workloads: copy engines and a work-queue device.
// VtdHarness and SmmuHarness add how their machine is built.

import type { ChargeNode } from "@iommu-sim/ioasid";
import {
  type Device,
  type DeviceOptions,
  DMA_OK,
  type DmaBus,
  dmaInfoToProt,
  IOMMU_DOMAIN_BLOCKED,
  IOMMU_DOMAIN_IDENTITY,
  type IommuDomain,
  type IommuOps,
  type IommuSubsystem,
  iommuAllocGlobalPasidOrErrno,
  iommuAttachDevice,
  iommuAttachDevicePasid,
  iommuDetachDevice,
  iommuDetachDevicePasid,
  iommuDmaDisablePasid,
  iommuDmaEnablePasid,
  iommuDmaMapPhys,
  iommuDmaUnmapPhys,
  iommuDomainFree,
  iommuDomainIsLazy,
  iommuFreeGlobalPasid,
  iommuGetDmaDomain,
  iommuGetDomainForDev,
  iommuGetDomainForDevPasid,
  iommuMap,
  iommuUnmap,
  NO_PASID,
} from "@iommu-sim/iommu-core";
import type {
  FrameAllocator,
  LogicalClock,
  PhysMemory,
  Prng,
  Trace,
} from "@iommu-sim/iommu-core/platform";
import type { IsolationOracle, OracleHardware } from "../oracle/oracle.js";
import { hex } from "../oracle/violation.js";
import type { SnapshotUnit } from "../scenario.js";
import { SvaWorld } from "./sva-world.js";

const PAGE = 4096;

/** One IOMMU of a harness machine (a VT-d unit or an SMMU; each reads the fields it has). */
export interface UnitSpec {
  readonly name: string;
  /** VT-d only: scalable (default) or legacy mode. */
  readonly mode?: "scalable" | "legacy";
  readonly cache?: "maximal" | "minimal";
  /** IOTLB / SMMU TLB entries (a power of two). */
  readonly iotlb?: number;
  /** VT-d only: caching mode. */
  readonly cachingMode?: boolean;
  readonly pasidBits?: number;
  readonly ats?: boolean;
  readonly pri?: boolean;
  readonly superpages?: readonly ("2M" | "1G")[];
}

/** One device of a harness machine. */
export interface DeviceSpec {
  readonly name: string;
  /** bus << 8 | device << 3 | function; behind an SMMU also the StreamID. */
  readonly rid: number;
  /** The unit it sits behind (default: the first). */
  readonly unit?: string;
  readonly kind?: "copy-engine" | "work-queue";
  readonly pasidBits?: number;
  readonly ats?: boolean;
  readonly pri?: boolean;
  readonly atc?: number;
  /** A device that tolerates stalled transactions (SMMU stall model; a platform device). */
  readonly stall?: boolean;
}

/** A machine to build. */
export interface MachineSpec {
  readonly units: readonly UnitSpec[];
  readonly devices: readonly DeviceSpec[];
  /** Bytes of the frame pool (default 256 MiB). */
  readonly memory?: number;
  /** Lazy (flush-queue) invalidation for DMA-API domains (default strict). */
  readonly lazy?: boolean;
}

/** A DMA-API buffer: host memory, its DMA address, its direction. */
export interface DmaBuffer {
  readonly dev: Device;
  readonly frame: number;
  readonly order: number;
  readonly pa: number;
  readonly size: number;
  readonly dma: number;
  readonly dir: number;
}

/** A range mapped by `map`: its size and its host frames. */
interface Mapping {
  size: number;
  frame: number;
  order: number;
}

/** One DMA's outcome: who, where, which way, the status, and a digest of the bytes read. */
export interface DmaOutcome {
  readonly device: string;
  readonly pasid: number | null;
  readonly iova: number;
  readonly size: number;
  readonly write: boolean;
  readonly status: number;
  /** FNV-1a of the bytes a successful read returned (0 otherwise). */
  readonly digest: number;
}

/** 32-bit FNV-1a of `bytes`. */
function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ (bytes[i] as number), 0x01000193);
  return h >>> 0;
}

/** What the harness needs of a machine (VtdMachine and SmmuMachine have it). */
export interface HarnessMachine {
  readonly clock: LogicalClock;
  readonly trace: Trace;
  readonly prng: Prng;
  readonly mem: PhysMemory;
  readonly frames: FrameAllocator;
  readonly bus: DmaBus;
  readonly subsys: IommuSubsystem;
  readonly pendingInterrupts: number;
  addDevice(options: DeviceOptions): Device | string;
  removeDevice(dev: Device): 0 | "ENOENT";
  processQueues(): number;
}

/**
 * A machine under the oracle. Every owner operation goes through here so the oracle knows what is
 * mapped where; errnos come back as the core returns them.
 */
export abstract class Harness<
  M extends HarnessMachine = HarnessMachine,
  O extends IsolationOracle<OracleHardware> = IsolationOracle<OracleHardware>,
> {
  /** The architecture ("vtd", "smmu"). */
  abstract readonly arch: string;
  readonly m: M;
  readonly oracle: O;
  readonly devices = new Map<string, Device>();
  /** Frames in use after bring-up: the leak check's baseline. */
  readonly framesBaseline: number;
  private readonly mappings = new Map<IommuDomain, Map<number, Mapping>>();
  private readonly domains = new Set<IommuDomain>();
  private readonly pasids = new Set<number>();
  private readonly kernelPasids = new Map<Device, number>();
  /** PASIDs handed to user space, with the user each is charged to once attached. */
  private readonly userPasids = new Map<number, ChargeNode>();
  /**
   * Every DMA the harness made, in order, while recording (`recordOutcomes()`): what `--arch both`
   * compares between two architectures.
   */
  outcomes: DmaOutcome[] | null = null;
  private svaWorld: SvaWorld | null = null;

  constructor(m: M, oracle: O) {
    this.m = m;
    this.oracle = oracle;
    this.framesBaseline = m.frames.liveFrames;
  }

  /** The machine's processes and their SVA binds (created on first use). */
  get sva(): SvaWorld {
    this.svaWorld ??= new SvaWorld(this as unknown as Harness);
    return this.svaWorld;
  }

  /** Record every DMA's outcome from now on. */
  recordOutcomes(): void {
    this.outcomes ??= [];
  }

  /**
   * Attaching or detaching a PASID may rewrite the entry requests without PASID go through (an
   * SMMU's STE turns into a CD-table one and back): such an operation counts as a change of the
   * RID's context too, for the diagnoses of what it left stale.
   */
  protected readonly pasidChangesRid: boolean = false;

  /** The driver's ops (its identity and blocked domains). */
  protected abstract get driverOps(): IommuOps;
  /** A paging domain of the driver's kind for `dev`. */
  protected abstract pagingDomainAlloc(
    dev: Device,
    stage?: "first" | "second",
  ): IommuDomain | string;
  /** Run what the driver postponed (an injection's deferred invalidations). */
  protected abstract drainDeferred(): void;
  /** The registers `decode` needs to find the tables in a dump of this machine. */
  abstract snapshotRegisters(): SnapshotUnit[];

  get now(): number {
    return this.m.clock.now;
  }

  // --- Devices ---------------------------------------------------------------------------------------

  /** Plug in and probe a device; the oracle watches it from its first DMA. */
  addDevice(d: DeviceSpec): Device | string {
    const dev = this.m.addDevice({
      name: d.name,
      rid: d.rid,
      ...(d.stall === true ? { stall: true, isPci: false } : {}),
      pasidBits: d.pasidBits ?? 0,
      ats: d.ats ?? false,
      pri: d.pri ?? false,
      ...(d.atc === undefined ? {} : { atcEntries: d.atc }),
    });
    if (typeof dev === "string") return dev;
    this.devices.set(d.name, dev);
    this.oracle.watch(dev);
    this.oracle.attachmentsChanged();
    const dma = iommuGetDmaDomain(dev);
    if (dma !== null) this.oracle.domainCreated(dma, `domain#${dma.id} (DMA API of ${dev.name})`);
    return dev;
  }

  /** Unplug: the kernel PASID and every PASID attachment of the device go first. */
  unplug(dev: Device): 0 | string {
    const kp = this.kernelPasids.get(dev);
    if (kp !== undefined) this.dmaPasidDisable(dev);
    // Its driver detaches every PASID before the device goes (the core expects none attached).
    for (const p of this.pasidsOf(dev)) this.pasidDetach(dev, p);
    const ret = this.m.removeDevice(dev);
    this.oracle.unwatch(dev);
    this.oracle.attachmentsChanged();
    this.devices.delete(dev.name);
    return ret;
  }

  // --- Domains ---------------------------------------------------------------------------------------

  /** A domain: paging (`stage` picks the table kind where the IOMMU has two), identity or blocked. */
  domainAlloc(
    dev: Device,
    type: "paging" | "identity" | "blocked",
    stage?: "first" | "second",
  ): IommuDomain | string {
    const ops = this.driverOps;
    if (type === "identity") return ops.identityDomain ?? "EOPNOTSUPP";
    if (type === "blocked") return ops.blockedDomain ?? "EOPNOTSUPP";
    const d = this.pagingDomainAlloc(dev, stage);
    if (typeof d === "string") return d;
    this.domains.add(d);
    this.oracle.domainCreated(d, `domain#${d.id}`);
    return d;
  }

  /** Free a paging domain (its remaining mappings' frames too). */
  domainFree(domain: IommuDomain): 0 | string {
    if (domain.type === IOMMU_DOMAIN_IDENTITY || domain.type === IOMMU_DOMAIN_BLOCKED) return 0;
    if (!this.domains.has(domain)) return "ENOENT";
    if (!this.domainDetachable(domain)) return "EBUSY";
    const maps = this.mappings.get(domain);
    if (maps !== undefined) {
      for (const [iova, mp] of [...maps]) {
        iommuUnmap(domain, iova, mp.size);
        this.m.frames.free(mp.frame, mp.order);
      }
      this.mappings.delete(domain);
    }
    iommuDomainFree(domain);
    this.domains.delete(domain);
    this.oracle.domainFreed(domain);
    return 0;
  }

  /** Whether nothing uses `domain` (so it may be freed). */
  private domainDetachable(domain: IommuDomain): boolean {
    for (const dev of this.devices.values()) {
      if (iommuGetDomainForDev(dev) === domain) return false;
      for (const p of this.pasidsOf(dev))
        if (iommuGetDomainForDevPasid(dev, p) === domain) return false;
    }
    return true;
  }

  /** The PASIDs something is attached at on `dev` (the core's record, whoever allocated them). */
  private pasidsOf(dev: Device): number[] {
    return [...(dev.iommu?.group?.pasidArray.keys() ?? [])];
  }

  /** Attach `domain` at the RID (`"default"`: back to the default domain). */
  attach(dev: Device, domain: IommuDomain | "default"): 0 | string {
    this.oracle.contextChanged(dev, NO_PASID, this.oracle.mark());
    let ret: 0 | string;
    if (domain === "default") {
      const cur = iommuGetDomainForDev(dev);
      if (cur === null) return "ENODEV";
      ret = cur === dev.iommu?.group?.defaultDomain ? 0 : iommuDetachDevice(cur, dev);
    } else {
      ret = iommuAttachDevice(domain, dev);
    }
    this.oracle.attachmentsChanged();
    return ret;
  }

  // --- PASIDs ----------------------------------------------------------------------------------------

  /**
   * A global PASID for `dev`'s use. With `user`, the PASID is handed to user space for that user:
   * it is charged to the user's node where it is first attached (an attach over the limit fails
   * with EBUSY), never at allocation; without, it is the kernel's and never charged.
   */
  pasidAlloc(dev: Device, owner: string, user: ChargeNode | null = null): number | string {
    const p = iommuAllocGlobalPasidOrErrno(dev);
    if (typeof p === "string") return p;
    this.pasids.add(p);
    if (user !== null) this.userPasids.set(p, user);
    this.oracle.pasidAllocated(p, owner);
    return p;
  }

  pasidAttach(dev: Device, pasid: number, domain: IommuDomain): 0 | string {
    const user = this.userPasids.get(pasid);
    const space = this.m.subsys.pasids;
    let charged = false;
    if (user !== undefined && space.chargeOf(pasid) === null) {
      const c = space.charge(pasid, user);
      if (c !== 0) return c === "EBUSY" ? c : "EINVAL";
      charged = true;
    }
    if (this.pasidChangesRid) this.oracle.contextChanged(dev, NO_PASID, this.oracle.mark());
    const ret = iommuAttachDevicePasid(domain, dev, pasid);
    if (ret !== 0 && charged) space.uncharge(pasid);
    if (ret === 0)
      this.oracle.note("pasid", null, pasid, `attached ${dev.name} to domain#${domain.id}`);
    this.oracle.attachmentsChanged();
    return ret;
  }

  pasidDetach(dev: Device, pasid: number): 0 | string {
    const domain = iommuGetDomainForDevPasid(dev, pasid);
    if (domain === null) return "ENOENT";
    const seq = this.oracle.mark();
    this.oracle.contextChanged(dev, pasid, seq);
    if (this.pasidChangesRid) this.oracle.contextChanged(dev, NO_PASID, seq);
    const ret = iommuDetachDevicePasid(domain, dev, pasid);
    if (ret === 0)
      this.oracle.note("pasid", null, pasid, `detached from ${dev.name} (detach returned)`);
    this.oracle.attachmentsChanged();
    return ret;
  }

  pasidFree(pasid: number): 0 | string {
    if (!this.pasids.delete(pasid)) return "ENOENT";
    this.userPasids.delete(pasid);
    const ret = iommuFreeGlobalPasid(this.m.subsys, pasid);
    this.oracle.pasidFreed(pasid);
    return ret;
  }

  /** In-kernel DMA at a PASID (ENQCMDS work): the default domain at a global PASID. */
  dmaPasidEnable(dev: Device): number | string {
    const p = iommuDmaEnablePasid(dev);
    if (typeof p === "string") return p;
    this.kernelPasids.set(dev, p);
    this.oracle.pasidAllocated(p, `${dev.name} (kernel DMA)`);
    this.oracle.note("pasid", null, p, `attached ${dev.name} to its DMA domain`);
    this.oracle.attachmentsChanged();
    return p;
  }

  dmaPasidDisable(dev: Device): 0 | string {
    const p = this.kernelPasids.get(dev);
    if (p === undefined) return "EINVAL";
    const ret = iommuDmaDisablePasid(dev);
    this.kernelPasids.delete(dev);
    this.oracle.note(
      "pasid",
      null,
      p,
      `detached from ${dev.name} and freed (iommu_dma_disable_pasid)`,
    );
    this.oracle.pasidFreed(p);
    this.oracle.attachmentsChanged();
    return ret;
  }

  // --- Mappings --------------------------------------------------------------------------------------

  /**
   * Map `size` bytes at `iova` of `domain` to fresh host memory (one naturally aligned block of
   * frames), filled with a pattern. Returns the physical address.
   */
  map(domain: IommuDomain, iova: number, size: number, prot: number): number | string {
    const pages = Math.ceil(size / PAGE);
    let order = 0;
    while (1 << order < pages) order++;
    const frame = this.m.frames.alloc(order);
    if (typeof frame !== "number") return frame;
    const ret = iommuMap(domain, iova, frame, pages * PAGE, prot);
    if (ret !== 0) {
      this.m.frames.free(frame, order);
      return ret;
    }
    let maps = this.mappings.get(domain);
    if (maps === undefined) {
      maps = new Map();
      this.mappings.set(domain, maps);
    }
    maps.set(iova, { size: pages * PAGE, frame, order });
    this.oracle.mapped(domain, iova, frame, pages * PAGE, prot);
    return frame;
  }

  /** Unmap a range `map` made (the whole range), and give its memory back. */
  unmap(domain: IommuDomain, iova: number, size: number): number | string {
    const maps = this.mappings.get(domain);
    const mp = maps?.get(iova);
    const seq = this.oracle.mark();
    const ret = iommuUnmap(domain, iova, size);
    this.oracle.unmapped(
      domain,
      iova,
      size,
      `unmap(domain#${domain.id}, ${hex(iova)}, ${hex(size)})`,
      false,
      seq,
    );
    if (typeof ret === "number" && mp !== undefined && ret >= mp.size) {
      maps?.delete(iova);
      this.m.frames.free(mp.frame, mp.order);
    }
    this.oracle.checkpoint();
    return ret;
  }

  /** A DMA-API buffer of `size` bytes at a random offset in fresh memory. */
  dmaMap(dev: Device, size: number, dir: number): DmaBuffer | string {
    const pages = Math.ceil(size / PAGE) + 1;
    let order = 0;
    while (1 << order < pages) order++;
    const frame = this.m.frames.alloc(order);
    if (typeof frame !== "number") return frame;
    const offset = this.m.prng.below(PAGE / 8) * 8;
    const pa = frame + offset;
    const dma = iommuDmaMapPhys(dev, pa, size, dir);
    if (typeof dma !== "number") {
      this.m.frames.free(frame, order);
      return dma;
    }
    const domain = iommuGetDmaDomain(dev);
    const first = Math.floor(dma / PAGE) * PAGE;
    const span = Math.ceil((dma + size) / PAGE) * PAGE - first;
    if (domain !== null)
      this.oracle.mapped(domain, first, Math.floor(pa / PAGE) * PAGE, span, dmaInfoToProt(dir));
    return { dev, frame, order, pa, size, dma, dir };
  }

  dmaUnmap(b: DmaBuffer): void {
    const seq = this.oracle.mark();
    iommuDmaUnmapPhys(b.dev, b.dma, b.size, b.dir);
    const domain = iommuGetDmaDomain(b.dev);
    const first = Math.floor(b.dma / PAGE) * PAGE;
    const span = Math.ceil((b.dma + b.size) / PAGE) * PAGE - first;
    if (domain !== null) {
      const lazy = iommuDomainIsLazy(domain);
      this.oracle.unmapped(
        domain,
        first,
        span,
        `dma_unmap(${b.dev.name}, ${hex(b.dma)})${lazy ? " (lazy)" : ""}`,
        lazy,
        seq,
      );
    }
    this.m.frames.free(b.frame, b.order);
    this.oracle.checkpoint();
  }

  // --- Device work ------------------------------------------------------------------------------------

  /** One DMA of `size` bytes. The clock advances by one per DMA. Returns the device's DMA status. */
  dma(dev: Device, pasid: number, iova: number, size: number, write: boolean): number {
    const buf = new Uint8Array(size);
    if (write) for (let i = 0; i < size; i++) buf[i] = (iova + i) & 0xff;
    return write ? this.deviceWrite(dev, pasid, iova, buf) : this.deviceRead(dev, pasid, iova, buf);
  }

  /**
   * The device reads `buf.length` bytes at `iova` into `buf` (at `pasid`, or none), then the clock
   * advances and pending interrupts are serviced. Returns the device's DMA status.
   */
  deviceRead(dev: Device, pasid: number, iova: number, buf: Uint8Array): number {
    const st = dev.read(iova, buf, pasid);
    this.afterDma(dev, pasid, iova, buf, false, st);
    return st;
  }

  /** The device writes `buf` at `iova`; as `deviceRead`. */
  deviceWrite(dev: Device, pasid: number, iova: number, buf: Uint8Array): number {
    const st = dev.write(iova, buf, pasid);
    this.afterDma(dev, pasid, iova, buf, true, st);
    return st;
  }

  private afterDma(
    dev: Device,
    pasid: number,
    iova: number,
    buf: Uint8Array,
    write: boolean,
    status: number,
  ): void {
    if (this.outcomes !== null) {
      this.outcomes.push({
        device: dev.name,
        pasid: pasid === NO_PASID ? null : pasid,
        iova,
        size: buf.length,
        write,
        status,
        digest: status === DMA_OK && !write ? fnv1a(buf) : 0,
      });
    }
    this.m.clock.advance(1);
    this.serviceInterrupts();
  }

  /**
   * The CPU takes the units' pending interrupts: fault records are read and page requests go to
   * IOPF, as the interrupt handlers would between two DMAs. Returns the records processed.
   */
  serviceInterrupts(): number {
    return this.m.pendingInterrupts > 0 ? this.m.processQueues() : 0;
  }

  /**
   * A copy engine's job: read `size` bytes at `src`, write them at `dst` (both in the address
   * space of `pasid`). Returns the first failing status, or DMA_OK.
   */
  copy(dev: Device, pasid: number, src: number, dst: number, size: number): number {
    const buf = new Uint8Array(size);
    const st = this.deviceRead(dev, pasid, src, buf);
    if (st !== DMA_OK) return st;
    return this.deviceWrite(dev, pasid, dst, buf);
  }

  /**
   * A work-queue device (DSA-like) runs `count` descriptors submitted at `pasid`: each one it
   * reads from a ring (src, dst, size), copies, then writes a completion record. The ring and the
   * buffers live in `domain`'s address space at `base`. Returns the descriptors completed.
   */
  workQueue(dev: Device, pasid: number, base: number, count: number, size: number): number {
    let done = 0;
    const desc = new Uint8Array(32);
    const view = new DataView(desc.buffer);
    const completion = new Uint8Array([1, 0, 0, 0]);
    for (let i = 0; i < count; i++) {
      const at = base + (i % 64) * 32;
      if (this.deviceRead(dev, pasid, at, desc) !== DMA_OK) break;
      const src = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
      const dst = view.getUint32(8, true) + view.getUint32(12, true) * 2 ** 32;
      const n = Math.min(view.getUint32(16, true), size);
      if (this.copy(dev, pasid, src, dst, n) !== DMA_OK) break;
      // Completion record: status 1 at the descriptor's offset 24.
      if (this.deviceWrite(dev, pasid, at + 24, completion) !== DMA_OK) break;
      done++;
    }
    return done;
  }

  /** Let software catch up with the hardware (faults, page requests, IOPF). */
  processQueues(): number {
    const n = this.m.processQueues();
    this.oracle.checkpoint();
    return n;
  }

  // --- Teardown -------------------------------------------------------------------------------------

  /**
   * Give everything back: kernel PASIDs, PASID attachments, devices, domains, PASIDs; then check
   * that nothing leaked.
   */
  teardown(): void {
    // Processes first: their binds go before the devices, their address spaces before the leak check.
    this.svaWorld?.teardown();
    this.m.processQueues();
    for (const dev of [...this.devices.values()]) {
      const kp = this.kernelPasids.get(dev);
      // Every PASID still attached goes, also one an owner freed while it was attached.
      for (const p of this.pasidsOf(dev)) if (p !== kp) this.pasidDetach(dev, p);
    }
    // Detaching answered whatever the handlers still held; nothing may be left unanswered now.
    this.m.processQueues();
    this.oracle.checkPageRequests();
    for (const dev of [...this.devices.values()]) this.unplug(dev);
    for (const d of [...this.domains]) this.domainFree(d);
    for (const p of [...this.pasids]) this.pasidFree(p);
    this.drainDeferred();
    this.m.processQueues();
    this.oracle.checkFaultsReported();
    this.oracle.checkLeaks(this.framesBaseline);
  }
}
