// Processes on a harness machine: address spaces with CPU page tables, users with PASID limits,
// SVA binds, and the two devices that work in a process's address space: a work-queue device fed
// descriptors tagged with the process's PASID (the ENQCMD model) and a PRI accelerator whose
// faults are paged in through the SVA fault handler. Every owner operation is told to the oracle.

import type { ChargeNode, ChargeTree } from "@iommu-sim/ioasid";
import {
  type Device,
  DMA_OK,
  DMA_PAGE_REQUESTED,
  DmaReason,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_PASID_INVALID,
  iommuDevEnableFeature,
} from "@iommu-sim/iommu-core";
import {
  type IommuSva,
  iommuSvaBindDevice,
  iommuSvaGetPasid,
  iommuSvaUnbindDevice,
  Mm,
  mmGetPasid,
  type SvaInjections,
  svaState,
} from "@iommu-sim/sva";
import { hex } from "../oracle/violation.js";
import type { Harness } from "./harness.js";

/** A process: its address space, the user it is charged to, and its bonds with devices. */
export interface SvaProcess {
  readonly name: string;
  readonly mm: Mm;
  readonly user: ChargeNode | null;
  /** Bonds by device, with how many binds each holds. */
  readonly bonds: Map<Device, IommuSva>;
  exited: boolean;
}

/** Bugs `--inject` can plant in the generic SVA layer, on either architecture. */
export const SVA_INJECTIONS = Object.freeze({
  "free-pasid-on-unbind": "freePasidOnUnbind",
} as const);

/** Whether an injection's field belongs to the SVA layer rather than the driver. */
export function isSvaInjection(field: string): field is keyof SvaInjections {
  return Object.values(SVA_INJECTIONS).includes(field as "freePasidOnUnbind");
}

/** How many times a PRI device retries a page after a page request before giving up. */
const PRI_RETRIES = 4;

/** The processes of one harness machine. */
export class SvaWorld {
  readonly h: Harness;
  readonly processes = new Map<string, SvaProcess>();
  /** The charge tree of the machine (users' PASID limits). */
  readonly charges: ChargeTree | undefined;

  constructor(h: Harness) {
    this.h = h;
    this.charges = h.m.subsys.charges;
    const oracle = h.oracle;
    svaState(h.m.subsys).hooks = {
      pasidAllocated: (mm, pasid) => oracle.svaPasidAllocated(mm, pasid),
      pasidFreed: (mm, pasid) => oracle.svaPasidFreed(mm, pasid),
    };
  }

  /** A user's node in the charge tree (`max` PASIDs; Infinity for no limit). */
  user(name: string, max = Number.POSITIVE_INFINITY): ChargeNode | string {
    const tree = this.charges;
    if (tree === undefined) return "EOPNOTSUPP";
    const have = tree.find(`/${name}`);
    if (have !== undefined) return have;
    return tree.createNode(tree.root, name, max);
  }

  /** Start a process with an empty address space in the CPU's page-table format. */
  processCreate(
    name: string,
    user: ChargeNode | null = null,
    levels: 4 | 5 = 4,
  ): SvaProcess | string {
    if (this.processes.has(name)) return "EEXIST";
    const mm = Mm.create({
      name,
      mem: this.h.m.mem,
      frames: this.h.m.frames,
      format: this.h.arch === "smmu" ? "aarch64" : "x86-64",
      levels,
      charge: user,
      trace: this.h.m.trace,
    });
    if (typeof mm === "string") return mm;
    mm.observer = this.h.oracle;
    const p: SvaProcess = { name, mm, user, bonds: new Map(), exited: false };
    this.processes.set(name, p);
    return p;
  }

  mmap(p: SvaProcess, length: number, prot: number, addr = 0): number | string {
    return p.mm.mmap(addr, length, prot, addr !== 0);
  }

  /** munmap: the notifier flushes the IOMMUs before it returns; the oracle checks from then on. */
  munmap(p: SvaProcess, addr: number, length: number): 0 | string {
    return this.mmOp(p, `munmap(${p.name}, ${hex(addr)}, ${hex(length)})`, () =>
      p.mm.munmap(addr, length),
    );
  }

  mprotect(p: SvaProcess, addr: number, length: number, prot: number): 0 | string {
    return this.mmOp(p, `mprotect(${p.name}, ${hex(addr)}, ${hex(length)}, ${prot})`, () =>
      p.mm.mprotect(addr, length, prot),
    );
  }

  /** The process writes its own memory (demand-faulting it in). */
  cpuWrite(p: SvaProcess, addr: number, bytes: Uint8Array): 0 | string {
    return p.mm.write(addr, bytes);
  }

  cpuRead(p: SvaProcess, addr: number, out: Uint8Array): 0 | string {
    return p.mm.read(addr, out);
  }

  /**
   * The process exits with its bonds still in place (its device files are closed afterwards by
   * `unbindAll`): the notifiers' release tears the PASID entries down first.
   */
  exit(p: SvaProcess): void {
    if (p.exited) return;
    p.exited = true;
    this.mmOp(p, `exit(${p.name})`, () => {
      p.mm.exit();
      return 0;
    });
  }

  private mmOp<R>(p: SvaProcess, op: string, fn: () => R): R {
    const oracle = this.h.oracle;
    const seq = oracle.mark();
    oracle.mmOpBegin(op, seq, p.mm);
    const ret = fn();
    oracle.mmOpEnd(seq);
    return ret;
  }

  /** Bind `p`'s address space to `dev` (a device driver's open of a work queue). */
  bind(dev: Device, p: SvaProcess): number | string {
    // A PRI device takes its faults through the IOMMU's fault queue (the device driver enables
    // IOPF before binding, as with IOMMU_DEV_FEAT_IOPF).
    if (dev.priCap && dev.iommu !== null && dev.iommu.faultParam === null) {
      const r = iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF);
      if (r !== 0) return r;
    }
    const before = mmGetPasid(p.mm);
    const handle = iommuSvaBindDevice(dev, p.mm);
    this.h.oracle.attachmentsChanged();
    if (typeof handle === "string") return handle;
    p.bonds.set(dev, handle);
    const pasid = iommuSvaGetPasid(handle);
    if (before !== pasid) this.h.oracle.note("pasid", null, pasid, `PASID of ${p.name}'s mm`);
    this.h.oracle.note("pasid", null, pasid, `bound ${dev.name} to ${p.name} (SVA)`);
    this.h.oracle.svaBound(
      dev,
      p.mm,
      pasid,
      p.user,
      this.h.m.subsys.pasids.chargeOf(pasid) ?? null,
    );
    return pasid;
  }

  /** Undo one bind of `dev` to `p`. */
  unbind(dev: Device, p: SvaProcess): 0 | string {
    const handle = p.bonds.get(dev);
    if (handle === undefined) return "ENOENT";
    const pasid = mmGetPasid(p.mm);
    const seq = this.h.oracle.mark();
    this.h.oracle.contextChanged(dev, pasid, seq);
    const ret = iommuSvaUnbindDevice(handle);
    if (handle.users === 0) p.bonds.delete(dev);
    this.h.oracle.note(
      "pasid",
      null,
      pasid,
      `unbound ${dev.name} from ${p.name} (unbind returned)`,
    );
    this.h.oracle.attachmentsChanged();
    return ret;
  }

  /** Every bond undone, every process exited: what teardown needs. */
  teardown(): void {
    for (const p of this.processes.values()) {
      if (!p.exited) this.exit(p);
      for (const [dev, handle] of [...p.bonds]) {
        while (handle.users > 0) this.unbind(dev, p);
      }
    }
    this.processes.clear();
  }

  // --- Device work in a process's address space -------------------------------------------------

  /** The PASID the CPU puts into `p`'s ENQCMD (IA32_PASID, from the mm), or -1 without one. */
  enqcmdPasid(p: SvaProcess): number {
    const pasid = mmGetPasid(p.mm);
    return pasid === IOMMU_PASID_INVALID ? -1 : pasid;
  }

  /**
   * A DMA of `p`'s work by `dev` at `va`: tagged with the process's PASID, retried after a page
   * request was answered (PRI), checked by the oracle against `p`'s address space. Returns the
   * device's last status.
   */
  dma(dev: Device, p: SvaProcess, va: number, buf: Uint8Array, write: boolean): number {
    const pasid = this.enqcmdPasid(p);
    if (pasid < 0) return -1;
    const oracle = this.h.oracle;
    oracle.expectOwner(dev, pasid, p.mm);
    let st = 0;
    for (let i = 0; i <= PRI_RETRIES; i++) {
      st = write ? this.h.deviceWrite(dev, pasid, va, buf) : this.h.deviceRead(dev, pasid, va, buf);
      if (st !== DMA_PAGE_REQUESTED) break;
      // The fault queue's work runs the SVA handler; its response reaches the device.
      this.h.processQueues();
    }
    oracle.expectOwner(dev, pasid, null);
    if (st !== DMA_OK && dev.lastReason === DmaReason.PRG_SUCCESS_NO_ACCESS)
      oracle.svaSuccessWithoutAccess(dev, pasid, p.mm, dev.lastFaultIova, write);
    return st;
  }

  /**
   * The work-queue device runs `count` descriptors `p` submitted with ENQCMD: each one is 32 bytes
   * at `ring` + 32 i in `p`'s memory (src, dst, size), copied, then completed with status 1 at offset
   * 24. Returns the descriptors completed.
   */
  enqcmd(dev: Device, p: SvaProcess, ring: number, count: number): number {
    const desc = new Uint8Array(32);
    const view = new DataView(desc.buffer);
    const completion = new Uint8Array([1, 0, 0, 0]);
    let done = 0;
    for (let i = 0; i < count; i++) {
      const at = ring + i * 32;
      if (this.dma(dev, p, at, desc, false) !== DMA_OK) break;
      const src = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
      const dst = view.getUint32(8, true) + view.getUint32(12, true) * 2 ** 32;
      const n = Math.min(view.getUint32(16, true), 1 << 16);
      const data = new Uint8Array(n);
      if (this.dma(dev, p, src, data, false) !== DMA_OK) break;
      if (this.dma(dev, p, dst, data, true) !== DMA_OK) break;
      if (this.dma(dev, p, at + 24, completion, true) !== DMA_OK) break;
      done++;
    }
    return done;
  }
}
