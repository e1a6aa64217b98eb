// iommu-sva.c piece by piece: the page-request handler against a bare address space, the group
// handler's sticky errors and single response, the IOPF hook, a driver without SVA, and the
// per-machine state. Whole-machine rules (PASIDs, bonds, domains, charges) are in ../test/sva-*.

import { VtdMachine } from "@iommu-sim/intel-vtd/testing";
import {
  type Device,
  FrameAllocator,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_FAULT_PERM_EXEC,
  IOMMU_FAULT_PERM_PRIV,
  IOMMU_FAULT_PERM_READ,
  IOMMU_FAULT_PERM_WRITE,
  IOMMU_PAGE_RESP_INVALID,
  IOMMU_PAGE_RESP_SUCCESS,
  IOMMU_PASID_INVALID,
  type IommuFaultPageRequest,
  IopfGroup,
  iommuDevEnableFeature,
  iommuReportDeviceFault,
  PhysMemory,
} from "@iommu-sim/iommu-core";
import { TraceRecorder } from "@iommu-sim/iommu-core/platform";
import { MockMachine } from "@iommu-sim/iommu-core/testing";
import { describe, expect, it } from "vitest";
import {
  iommuSvaBindDevice,
  iommuSvaGetPasid,
  iommuSvaHandleMm,
  iommuSvaIopfHandler,
  iommuSvaUnbindDevice,
  mmGetPasid,
  mmPasidDrop,
  svaState,
} from "./iommu-sva.js";
import { Mm, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, VM_WRITE } from "./mm/index.js";

const PAGE = 4096;
const R = IOMMU_FAULT_PERM_READ;
const W = IOMMU_FAULT_PERM_WRITE;
const X = IOMMU_FAULT_PERM_EXEC;

function bareMm(frames = 64) {
  const mem = new PhysMemory();
  const alloc = new FrameAllocator(mem, { basePa: 0x100_0000, size: frames * PAGE });
  const mm = new Mm({ name: "proc", mem, frames: alloc, format: "x86-64" });
  return { mm, frames: alloc };
}

function mmap(mm: Mm, pages: number, prot: number): number {
  const va = mm.mmap(0, pages * PAGE, prot);
  if (typeof va === "string") throw new Error(va);
  return va;
}

function request(addr: number, perm: number, flags = IOMMU_FAULT_PAGE_REQUEST_PASID_VALID) {
  return { flags, pasid: 1, grpid: 0, perm, addr, privateData: [0, 0] } as IommuFaultPageRequest;
}

describe("iommuSvaHandleMm", () => {
  it("a request without a PASID is INVALID and faults nothing in", () => {
    const { mm } = bareMm();
    const va = mmap(mm, 1, PROT_READ);
    expect(iommuSvaHandleMm(request(va, R, 0), mm)).toBe(IOMMU_PAGE_RESP_INVALID);
    expect(mm.residentPages).toBe(0);
  });

  it("a read in a readable VMA is SUCCESS and maps the page", () => {
    const { mm } = bareMm();
    const va = mmap(mm, 2, PROT_READ);
    expect(iommuSvaHandleMm(request(va + PAGE + 8, R), mm)).toBe(IOMMU_PAGE_RESP_SUCCESS);
    expect(mm.residentPages).toBe(1);
    expect(mm.lookup(va + PAGE)).toBeGreaterThan(0);
    expect(mm.lookup(va)).toBe(-1);
  });

  it("a write in a writable VMA is SUCCESS and maps the page writable", () => {
    const { mm } = bareMm();
    const va = mmap(mm, 1, PROT_READ | PROT_WRITE);
    expect(iommuSvaHandleMm(request(va, R | W), mm)).toBe(IOMMU_PAGE_RESP_SUCCESS);
    expect(mm.lookupFlags(va) & VM_WRITE).toBe(VM_WRITE);
  });

  it("an access the VMA does not allow is INVALID: write to read-only, exec of non-exec, read of PROT_NONE", () => {
    const { mm } = bareMm();
    const ro = mmap(mm, 1, PROT_READ);
    const none = mmap(mm, 1, PROT_NONE);
    expect(iommuSvaHandleMm(request(ro, W), mm)).toBe(IOMMU_PAGE_RESP_INVALID);
    expect(iommuSvaHandleMm(request(ro, R | X), mm)).toBe(IOMMU_PAGE_RESP_INVALID);
    expect(iommuSvaHandleMm(request(none, R), mm)).toBe(IOMMU_PAGE_RESP_INVALID);
    // No permission asked: the fault handler still refuses a VMA without any access.
    expect(iommuSvaHandleMm(request(none, 0), mm)).toBe(IOMMU_PAGE_RESP_INVALID);
    expect(mm.residentPages).toBe(0);
  });

  it("a read of a write-only VMA is INVALID: the request's access must be in the VMA's flags", () => {
    const { mm } = bareMm();
    const wo = mmap(mm, 1, PROT_WRITE);
    // The CPU's fault path would let a read through (any permission will do); SVA asks VM_READ.
    expect(iommuSvaHandleMm(request(wo, R), mm)).toBe(IOMMU_PAGE_RESP_INVALID);
    expect(iommuSvaHandleMm(request(wo, R | W), mm)).toBe(IOMMU_PAGE_RESP_INVALID);
    expect(mm.residentPages).toBe(0);
    expect(iommuSvaHandleMm(request(wo, W), mm)).toBe(IOMMU_PAGE_RESP_SUCCESS);
  });

  it("an exec in an executable VMA is SUCCESS, a privileged request too", () => {
    const { mm } = bareMm();
    const va = mmap(mm, 2, PROT_READ | PROT_EXEC);
    expect(iommuSvaHandleMm(request(va, R | X), mm)).toBe(IOMMU_PAGE_RESP_SUCCESS);
    const priv = IOMMU_FAULT_PERM_PRIV;
    expect(iommuSvaHandleMm(request(va + PAGE, R | priv), mm)).toBe(IOMMU_PAGE_RESP_SUCCESS);
    expect(mm.residentPages).toBe(2);
  });

  it("an address in no VMA is INVALID", () => {
    const { mm } = bareMm();
    const va = mmap(mm, 1, PROT_READ | PROT_WRITE);
    expect(iommuSvaHandleMm(request(va + PAGE, R), mm)).toBe(IOMMU_PAGE_RESP_INVALID);
    expect(iommuSvaHandleMm(request(va - PAGE, R), mm)).toBe(IOMMU_PAGE_RESP_INVALID);
    expect(mm.residentPages).toBe(0);
  });

  it("the fault handler's own failure (no frame left) is INVALID", () => {
    const { mm, frames } = bareMm(8);
    const va = mmap(mm, 1, PROT_READ);
    while (typeof frames.alloc(0) === "number");
    expect(iommuSvaHandleMm(request(va, R), mm)).toBe(IOMMU_PAGE_RESP_INVALID);
    expect(mm.residentPages).toBe(0);
  });

  it("an exited mm is INVALID, and no reference to it is taken or dropped", () => {
    const { mm } = bareMm();
    const va = mmap(mm, 1, PROT_READ);
    mm.mmgrab();
    mm.exit();
    expect(iommuSvaHandleMm(request(va, R), mm)).toBe(IOMMU_PAGE_RESP_INVALID);
    expect(mm.users).toBe(0);
    expect(mm.count).toBe(1);
    mm.mmdrop();
  });

  it("the address-space reference it takes is given back", () => {
    const { mm } = bareMm();
    const va = mmap(mm, 1, PROT_READ);
    iommuSvaHandleMm(request(va, R), mm);
    iommuSvaHandleMm(request(va + PAGE, R), mm);
    expect(mm.users).toBe(1);
    expect(mm.count).toBe(1);
  });
});

/** One VT-d unit, a PRI device in its fault queue, a process bound to it. */
function boundRig() {
  const m = new VtdMachine();
  const dev = m.addDevice({ name: "acc", rid: 0x0100, pasidBits: 8, ats: true, pri: true });
  if (typeof dev === "string") throw new Error(dev);
  expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
  const mm = Mm.create({ name: "p", mem: m.mem, frames: m.frames, format: "x86-64" });
  if (typeof mm === "string") throw new Error(mm);
  const h = iommuSvaBindDevice(dev, mm);
  if (typeof h === "string") throw new Error(h);
  return { m, dev, mm, h, pasid: iommuSvaGetPasid(h) };
}

/** A driver reports one page request of group `grpid`. */
function report(dev: Device, pasid: number, grpid: number, addr: number, last: boolean) {
  const flags =
    IOMMU_FAULT_PAGE_REQUEST_PASID_VALID | (last ? IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE : 0);
  expect(
    iommuReportDeviceFault(dev, {
      fault: { flags, pasid, grpid, perm: R, addr, privateData: [0, 0] },
    }),
  ).toBe(0);
}

describe("the SVA group handler", () => {
  it("handles a group in the fault queue's work, not when it is reported", () => {
    const { m, dev, mm, pasid } = boundRig();
    const va = mmap(mm, 1, PROT_READ);
    report(dev, pasid, 3, va, true);
    expect(mm.residentPages).toBe(0);
    expect(dev.iommu?.faultParam?.queue.workPending).toBe(1);
    m.processQueues();
    expect(mm.residentPages).toBe(1);
  });

  it("errors are sticky: the requests after a failing one are not handled, and the group gets one INVALID", () => {
    const { m, dev, mm, pasid } = boundRig();
    const va = mmap(mm, 3, PROT_READ);
    const responses = new TraceRecorder(m.trace, { kinds: ["iopf"] });
    const seen: number[] = [];
    svaState(m.subsys).hooks.faultHandled = (who, fault, code) => {
      expect(who).toBe(mm);
      seen.push(fault.addr, code);
    };
    report(dev, pasid, 5, va, false);
    report(dev, pasid, 5, va + 64 * PAGE, false);
    report(dev, pasid, 5, va + 2 * PAGE, true);
    m.processQueues();
    expect(mm.lookup(va)).toBeGreaterThan(0);
    expect(mm.lookup(va + 2 * PAGE)).toBe(-1);
    expect(responses.ofKind("iopf").map((e) => [e.data.grpid, e.data.response])).toEqual([
      [5, IOMMU_PAGE_RESP_INVALID],
    ]);
    // The hook sees the group once, under its last request.
    expect(seen).toEqual([va + 2 * PAGE, IOMMU_PAGE_RESP_INVALID]);
  });

  it("a group whose requests all succeed gets one SUCCESS", () => {
    const { m, dev, mm, pasid } = boundRig();
    const va = mmap(mm, 2, PROT_READ);
    const responses = new TraceRecorder(m.trace, { kinds: ["iopf"] });
    report(dev, pasid, 9, va, false);
    report(dev, pasid, 9, va + PAGE, true);
    m.processQueues();
    expect(mm.residentPages).toBe(2);
    expect(responses.ofKind("iopf").map((e) => e.data.response)).toEqual([IOMMU_PAGE_RESP_SUCCESS]);
  });

  it("every SVA domain takes its faults through iommuSvaIopfHandler", () => {
    const { h, mm } = boundRig();
    expect(h.domain.iopfHandler).toBe(iommuSvaIopfHandler);
    expect(h.domain.mm).toBe(mm);
  });

  it("iommuSvaIopfHandler: ENODEV for a device in no fault queue", () => {
    const { m } = boundRig();
    const plain = m.addDevice({ name: "wq", rid: 0x0108, pasidBits: 8, ats: true });
    if (typeof plain === "string") throw new Error(plain);
    const evt = { fault: request(0x1000, R) };
    expect(iommuSvaIopfHandler(new IopfGroup(plain, evt, [evt]))).toBe("ENODEV");
  });
});

describe("a driver without SVA", () => {
  it("bind is EOPNOTSUPP and gives the PASID it took back", () => {
    const m = new MockMachine();
    const dev = m.addDevice({ name: "d", rid: 0x0100, pasidBits: 8 });
    if (typeof dev === "string") throw new Error(dev);
    const mm = Mm.create({ name: "p", mem: m.mem, frames: m.frames, format: "x86-64" });
    if (typeof mm === "string") throw new Error(mm);
    const frames = m.frames.liveFrames;
    expect(iommuSvaBindDevice(dev, mm)).toBe("EOPNOTSUPP");
    expect(m.subsys.pasids.size()).toBe(0);
    expect(mmGetPasid(mm)).toBe(IOMMU_PASID_INVALID);
    expect(mm.count).toBe(1);
    expect(m.frames.liveFrames).toBe(frames);
  });
});

describe("the mm's PASID", () => {
  it("is IOMMU_PASID_INVALID before the first bind; mmPasidDrop then does nothing", () => {
    const { mm } = bareMm();
    expect(mmGetPasid(mm)).toBe(IOMMU_PASID_INVALID);
    mmPasidDrop(mm);
    expect(mm.iommuMm).toBeNull();
  });

  it("a bond's PASID is its mm's, and stays readable after the unbind", () => {
    const { mm, h, pasid } = boundRig();
    expect(pasid).toBe(mmGetPasid(mm));
    expect(iommuSvaUnbindDevice(h)).toBe(0);
    expect(iommuSvaGetPasid(h)).toBe(pasid);
  });
});

describe("svaState", () => {
  it("one state per machine, created without injections or hooks", () => {
    const a = new MockMachine();
    const b = new MockMachine();
    const s = svaState(a.subsys);
    expect(s).toEqual({ inject: { freePasidOnUnbind: false }, hooks: {} });
    expect(svaState(a.subsys)).toBe(s);
    expect(svaState(b.subsys)).not.toBe(s);
  });
});
