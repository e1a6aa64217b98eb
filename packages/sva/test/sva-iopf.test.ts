// The SVA page-fault path on whole machines, VT-d and SMMUv3 alike: a device's page request goes
// through the IOMMU's page request queue, the core's IOPF grouping and the fault queue's work to
// iommu-sva.c's handler, which pages the address in through the process's own fault handler and
// answers; the device then retries. Also a process exiting while bound.

import { SmmuMachine } from "@iommu-sim/arm-smmu/testing";
import { VtdMachine } from "@iommu-sim/intel-vtd/testing";
import {
  type Device,
  type DeviceOptions,
  DMA_FAULT,
  DMA_OK,
  DMA_PAGE_REQUESTED,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_FAULT_PERM_READ,
  IOMMU_PAGE_RESP_INVALID,
  IOMMU_PAGE_RESP_SUCCESS,
  type IopfStats,
  iommuDevEnableFeature,
  iommuReportDeviceFault,
} from "@iommu-sim/iommu-core";
import { TraceRecorder } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import {
  type IommuSva,
  iommuSvaBindDevice,
  iommuSvaGetPasid,
  iommuSvaUnbindDevice,
  Mm,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  svaState,
} from "../src/index.js";

type Arch = "vtd" | "smmu";
const PAGE = 4096;

interface Rig {
  readonly arch: Arch;
  readonly m: VtdMachine | SmmuMachine;
  /** Every page response sent, with its code (the core's trace). */
  readonly responses: TraceRecorder;
  /** What the SVA handler answered, per group, with the mm it worked in. */
  readonly handled: { mm: Mm | null; addr: number; code: number }[];
}

function rig(arch: Arch): Rig {
  const m = arch === "vtd" ? new VtdMachine() : new SmmuMachine();
  const handled: Rig["handled"] = [];
  svaState(m.subsys).hooks = {
    faultHandled: (mm, fault, code) => handled.push({ mm, addr: fault.addr, code }),
  };
  return { arch, m, responses: new TraceRecorder(m.trace, { kinds: ["iopf"] }), handled };
}

/** A device with PASID and ATS, and PRI unless told otherwise (then IOPF enabled). */
function addDev(r: Rig, o: Partial<DeviceOptions> & { name: string; rid: number }): Device {
  const dev = r.m.addDevice({ pasidBits: 8, ats: true, pri: true, ...o });
  if (typeof dev === "string") throw new Error(`${o.name}: ${dev}`);
  if (dev.priCap) expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
  return dev;
}

function proc(r: Rig, name = "p"): Mm {
  const mm = Mm.create({
    name,
    mem: r.m.mem,
    frames: r.m.frames,
    format: r.arch === "vtd" ? "x86-64" : "aarch64",
  });
  if (typeof mm === "string") throw new Error(mm);
  return mm;
}

function bind(dev: Device, mm: Mm): IommuSva {
  const h = iommuSvaBindDevice(dev, mm);
  if (typeof h === "string") throw new Error(`bind: ${h}`);
  return h;
}

function mmap(mm: Mm, pages: number, prot: number): number {
  const va = mm.mmap(0, pages * PAGE, prot);
  if (typeof va === "string") throw new Error(va);
  return va;
}

/** One device access; a page request is let through the queues and the access retried once. */
function dma(r: Rig, dev: Device, pasid: number, va: number, buf: Uint8Array, write: boolean) {
  const access = () => (write ? dev.write(va, buf, pasid) : dev.read(va, buf, pasid));
  const first = access();
  if (first !== DMA_PAGE_REQUESTED) return { first, retry: first };
  r.m.processQueues();
  return { first, retry: access() };
}

function stats(dev: Device): IopfStats {
  const q = dev.iommu?.faultParam?.queue;
  if (q === undefined) throw new Error("no fault queue");
  return q.stats;
}

/** Every group answered exactly once, by someone, and the device saw each answer. */
function expectEachAnsweredOnce(r: Rig, dev: Device): void {
  const s = stats(dev);
  expect(s.responses).toBe(s.groups);
  expect(s.duplicateResponses).toBe(0);
  expect(r.responses.ofKind("iopf")).toHaveLength(s.groups);
  expect(dev.stats.responses).toBe(dev.stats.pageRequests);
  expect(dev.stats.unexpectedResponses).toBe(0);
}

describe.each(["vtd", "smmu"] as const)("%s", (arch) => {
  describe("page requests through the SVA handler", () => {
    it("a request on a VMA page: the handler maps it, answers SUCCESS, and the retried DMA succeeds", () => {
      const r = rig(arch);
      const dev = addDev(r, { name: "acc", rid: 0x0100 });
      const mm = proc(r);
      const va = mmap(mm, 4, PROT_READ | PROT_WRITE);
      const pasid = iommuSvaGetPasid(bind(dev, mm));
      const data = Uint8Array.from({ length: 64 }, (_, i) => i ^ 0x5a);
      const { first, retry } = dma(r, dev, pasid, va + PAGE + 128, data, true);
      expect(first).toBe(DMA_PAGE_REQUESTED);
      expect(retry).toBe(DMA_OK);
      expect(r.handled).toEqual([{ mm, addr: va + PAGE, code: IOMMU_PAGE_RESP_SUCCESS }]);
      expect(r.responses.ofKind("iopf").map((e) => e.data.response)).toEqual([
        IOMMU_PAGE_RESP_SUCCESS,
      ]);
      // The device wrote into the process's own page, which the CPU now sees.
      expect(mm.residentPages).toBe(1);
      const back = new Uint8Array(64);
      expect(mm.read(va + PAGE + 128, back)).toBe(0);
      expect(back).toEqual(data);
      // Mapped now: no further request.
      expect(dma(r, dev, pasid, va + PAGE, new Uint8Array(8), false).first).toBe(DMA_OK);
      expectEachAnsweredOnce(r, dev);
    });

    it("a request outside any VMA: INVALID, the retried DMA fails, nothing is mapped", () => {
      const r = rig(arch);
      const dev = addDev(r, { name: "acc", rid: 0x0100 });
      const mm = proc(r);
      const va = mmap(mm, 1, PROT_READ | PROT_WRITE);
      const pasid = iommuSvaGetPasid(bind(dev, mm));
      const { first, retry } = dma(r, dev, pasid, va + 16 * PAGE, new Uint8Array(8), false);
      expect(first).toBe(DMA_PAGE_REQUESTED);
      expect(retry).toBe(DMA_FAULT);
      expect(r.handled).toEqual([{ mm, addr: va + 16 * PAGE, code: IOMMU_PAGE_RESP_INVALID }]);
      expect(mm.residentPages).toBe(0);
      expectEachAnsweredOnce(r, dev);
    });

    it("a request against the VMA's permissions (write to read-only, read of PROT_NONE): INVALID, the DMA fails", () => {
      const r = rig(arch);
      const dev = addDev(r, { name: "acc", rid: 0x0100 });
      const mm = proc(r);
      const ro = mmap(mm, 1, PROT_READ);
      const none = mmap(mm, 1, PROT_NONE);
      const pasid = iommuSvaGetPasid(bind(dev, mm));
      expect(dma(r, dev, pasid, ro, new Uint8Array(8), true)).toEqual({
        first: DMA_PAGE_REQUESTED,
        retry: DMA_FAULT,
      });
      expect(dma(r, dev, pasid, none, new Uint8Array(8), false)).toEqual({
        first: DMA_PAGE_REQUESTED,
        retry: DMA_FAULT,
      });
      expect(r.handled.map((h) => h.code)).toEqual([
        IOMMU_PAGE_RESP_INVALID,
        IOMMU_PAGE_RESP_INVALID,
      ]);
      expect(mm.residentPages).toBe(0);
      // What the VMA allows still works.
      expect(dma(r, dev, pasid, ro, new Uint8Array(8), false).retry).toBe(DMA_OK);
      expectEachAnsweredOnce(r, dev);
    });

    it("a request handled after the mm exited: INVALID, the retried DMA fails", () => {
      const r = rig(arch);
      const dev = addDev(r, { name: "acc", rid: 0x0100 });
      const mm = proc(r);
      const va = mmap(mm, 1, PROT_READ | PROT_WRITE);
      const h = bind(dev, mm);
      const pasid = iommuSvaGetPasid(h);
      const buf = new Uint8Array(8);
      expect(dev.read(va, buf, pasid)).toBe(DMA_PAGE_REQUESTED);
      mm.exit();
      r.m.processQueues();
      expect(r.handled).toEqual([{ mm, addr: va, code: IOMMU_PAGE_RESP_INVALID }]);
      expect(dev.read(va, buf, pasid)).not.toBe(DMA_OK);
      expectEachAnsweredOnce(r, dev);
      expect(iommuSvaUnbindDevice(h)).toBe(0);
    });

    it("every group of several devices and processes is answered exactly once", () => {
      const r = rig(arch);
      const devs = [addDev(r, { name: "a", rid: 0x0100 }), addDev(r, { name: "b", rid: 0x0108 })];
      const mms = [proc(r, "p"), proc(r, "q")];
      const vas = mms.map((mm) => mmap(mm, 8, PROT_READ));
      const bonds = devs.flatMap((d) => mms.map((mm) => bind(d, mm)));
      const buf = new Uint8Array(8);
      // Several requests in flight at once, a mix of good and bad, then one catch-up.
      for (const h of bonds) {
        const pasid = iommuSvaGetPasid(h);
        const va = vas[mms.indexOf(h.domain.mm as Mm)];
        for (const [off, write] of [
          [0, false],
          [PAGE, true],
          [64 * PAGE, false],
        ] as const) {
          const st = write ? h.dev.write(va + off, buf, pasid) : h.dev.read(va + off, buf, pasid);
          expect(st).toBe(DMA_PAGE_REQUESTED);
        }
      }
      r.m.processQueues();
      for (const d of devs) expectEachAnsweredOnce(r, d);
      expect(r.handled).toHaveLength(12);
      expect(r.handled.filter((h) => h.code === IOMMU_PAGE_RESP_SUCCESS)).toHaveLength(4);
      for (const h of bonds) expect(iommuSvaUnbindDevice(h)).toBe(0);
    });

    it("a request for a PASID with nothing attached is answered by the core, never the SVA handler", () => {
      const r = rig(arch);
      const dev = addDev(r, { name: "acc", rid: 0x0100 });
      const mm = proc(r);
      const va = mmap(mm, 1, PROT_READ);
      const pasid = iommuSvaGetPasid(bind(dev, mm));
      const s = stats(dev);
      const auto = s.autoResponses;
      // As a driver reports a request it read from its queue.
      const ret = iommuReportDeviceFault(dev, {
        fault: {
          flags: IOMMU_FAULT_PAGE_REQUEST_PASID_VALID | IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
          pasid: pasid + 1,
          grpid: 7,
          perm: IOMMU_FAULT_PERM_READ,
          addr: va,
          privateData: [0, 0],
        },
      });
      expect(ret).toBe(0);
      r.m.processQueues();
      expect(s.autoResponses).toBe(auto + 1);
      expect(s.responses).toBe(s.groups);
      expect(r.handled).toEqual([]);
      const codes = r.responses.ofKind("iopf").map((e) => e.data.response);
      expect(codes).toHaveLength(1);
      expect(codes[0]).not.toBe(IOMMU_PAGE_RESP_SUCCESS);
    });

    it("a request in flight when its bond is undone is answered exactly once, and the retry fails", () => {
      const r = rig(arch);
      const dev = addDev(r, { name: "acc", rid: 0x0100 });
      const mm = proc(r);
      const va = mmap(mm, 1, PROT_READ);
      const h = bind(dev, mm);
      const pasid = iommuSvaGetPasid(h);
      const buf = new Uint8Array(8);
      expect(dev.read(va, buf, pasid)).toBe(DMA_PAGE_REQUESTED);
      expect(iommuSvaUnbindDevice(h)).toBe(0);
      r.m.processQueues();
      expectEachAnsweredOnce(r, dev);
      expect(dev.read(va, buf, pasid)).not.toBe(DMA_OK);
    });
  });

  // The core answers a request nobody handles with INVALID, as the kernel's iopf_error_response
  // does (FAILURE would halt the device's PRI). VT-d drains the request through the SVA handler
  // before the unbind returns, so never gets there.
  it("a request in flight when its bond is undone leaves the device's PRI working for another process", () => {
    const r = rig(arch);
    const dev = addDev(r, { name: "acc", rid: 0x0100 });
    const [p, q] = [proc(r, "p"), proc(r, "q")];
    const vp = mmap(p, 1, PROT_READ);
    const vq = mmap(q, 1, PROT_READ);
    const hp = bind(dev, p);
    const pq = iommuSvaGetPasid(bind(dev, q));
    expect(dev.read(vp, new Uint8Array(8), iommuSvaGetPasid(hp))).toBe(DMA_PAGE_REQUESTED);
    expect(iommuSvaUnbindDevice(hp)).toBe(0);
    r.m.processQueues();
    expect(dev.priResponseFailure).toBe(false);
    expect(dma(r, dev, pq, vq, new Uint8Array(8), false)).toEqual({
      first: DMA_PAGE_REQUESTED,
      retry: DMA_OK,
    });
  });

  describe("exit while bound", () => {
    it("DMA at the PASID faults at once; the PASID stays allocated until the unbind", () => {
      const r = rig(arch);
      // No PRI: the device cannot ask for pages, so the CPU populates them first.
      const dev = addDev(r, { name: "wq", rid: 0x0100, pri: false });
      const mm = proc(r);
      const va = mmap(mm, 2, PROT_READ | PROT_WRITE);
      expect(mm.write(va, new Uint8Array([1, 2, 3, 4]))).toBe(0);
      const h = bind(dev, mm);
      const pasid = iommuSvaGetPasid(h);
      const buf = new Uint8Array(4);
      expect(dev.read(va, buf, pasid)).toBe(DMA_OK);
      expect(buf).toEqual(new Uint8Array([1, 2, 3, 4]));
      mm.exit();
      const requests = dev.stats.pageRequests;
      expect(dev.read(va, buf, pasid)).toBe(DMA_FAULT);
      expect(dev.write(va, buf, pasid)).toBe(DMA_FAULT);
      expect(dev.stats.pageRequests).toBe(requests);
      expect(r.m.subsys.pasids.has(pasid)).toBe(true);
      r.m.processQueues();
      expect(r.m.subsys.pasids.has(pasid)).toBe(true);
      expect(iommuSvaUnbindDevice(h)).toBe(0);
      expect(r.m.subsys.pasids.has(pasid)).toBe(false);
    });

    it("a PRI device's DMA after exit never succeeds: no SUCCESS is sent, nothing is mapped", () => {
      const r = rig(arch);
      const dev = addDev(r, { name: "acc", rid: 0x0100 });
      const mm = proc(r);
      const va = mmap(mm, 2, PROT_READ | PROT_WRITE);
      const h = bind(dev, mm);
      const pasid = iommuSvaGetPasid(h);
      expect(dma(r, dev, pasid, va, new Uint8Array(8), true).retry).toBe(DMA_OK);
      mm.exit();
      const sent = r.responses.ofKind("iopf").length;
      for (const at of [va, va + PAGE]) {
        const { first, retry } = dma(r, dev, pasid, at, new Uint8Array(8), false);
        expect(first).not.toBe(DMA_OK);
        expect(retry).not.toBe(DMA_OK);
      }
      const after = r.responses.ofKind("iopf").slice(sent);
      expect(after.every((e) => e.data.response !== IOMMU_PAGE_RESP_SUCCESS)).toBe(true);
      expect(mm.residentPages).toBe(0);
      expectEachAnsweredOnce(r, dev);
      expect(iommuSvaUnbindDevice(h)).toBe(0);
      expect(r.m.subsys.pasids.has(pasid)).toBe(false);
    });
  });
});
