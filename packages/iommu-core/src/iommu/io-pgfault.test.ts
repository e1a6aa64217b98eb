// Checks I/O page faults: fault queues, request groups, handlers, exactly-one responses, teardown.

import { describe, expect, it } from "vitest";
import { ok } from "../../test/helpers.js";
import { Device, DMA_FAULT, DMA_OK, DMA_PAGE_REQUESTED } from "../device/device.js";
import { pciRid } from "../device/pci.js";
import type { MockIommuDriver } from "../mock/mock-iommu.js";
import { MockMachine } from "../testing/mock-machine.js";
import { iommuFwspecInit, iommuProbeDevice, iommuReleaseDevice } from "./dev-iommu.js";
import {
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_FAULT_PERM_READ,
  type IopfFault,
  type IopfGroup,
  IopfQueue,
  iommuReportDeviceFault,
  iopfGroupResponse,
} from "./io-pgfault.js";
import { IOMMU_READ, IOMMU_WRITE } from "./io-pgtable.js";
import type { IommuDomain } from "./iommu-domain.js";
import { iommuAttachDevice, iommuDetachDevice, iommuPagingDomainAlloc } from "./iommu-group.js";
import { iommuMap } from "./iommu-map.js";
import {
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_PAGE_RESP_FAILURE,
  IOMMU_PAGE_RESP_INVALID,
  IOMMU_PAGE_RESP_SUCCESS,
  type IommuOps,
  type IommuPageResponse,
} from "./iommu-ops.js";
import {
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuReplaceDevicePasid,
} from "./pasid.js";

/** Test-local configuration of the documented mock: page responses are recorded, not sent. */
function recordingOps(driver: MockIommuDriver, responses: IommuPageResponse[]): IommuOps {
  return {
    name: driver.name,
    pgsizeBitmap: driver.pgsizeBitmap,
    identityDomain: driver.identityDomain,
    blockedDomain: driver.blockedDomain,
    capable: (dev, cap) => driver.capable(dev, cap),
    probeDevice: (dev) => driver.probeDevice(dev),
    releaseDevice: (dev) => driver.releaseDevice(dev),
    domainAllocPaging: (dev) => driver.domainAllocPaging(dev),
    domainAllocPagingFlags: (dev, flags) => driver.domainAllocPagingFlags(dev, flags),
    pageResponse: (_dev, _evt, msg) => {
      responses.push({ ...msg });
    },
  };
}

/** A probed PASID-capable device in a fresh fault queue; its page responses land in `responses`. */
function setup() {
  const m = new MockMachine();
  const responses: IommuPageResponse[] = [];
  const ops = recordingOps(m.driver, responses);
  const plug = (name: string, rid: number) => {
    const dev = new Device({ name, rid, pasidBits: 8 });
    expect(m.bus.addDevice(dev, m.hw)).toBe(0);
    expect(iommuFwspecInit(dev, m.subsys, ops)).toBe(0);
    expect(iommuProbeDevice(dev)).toBe(0);
    return dev;
  };
  const dev = plug("acc", pciRid(1, 0, 0));
  const queue = new IopfQueue("q");
  expect(queue.addDevice(dev)).toBe(0);
  return { m, dev, queue, responses, plug };
}

/** A page request at `pasid` (-1: without a PASID). */
function req(grpid: number, pasid: number, last: boolean, addr = 0x1000): IopfFault {
  return {
    fault: {
      flags:
        (pasid >= 0 ? IOMMU_FAULT_PAGE_REQUEST_PASID_VALID : 0) |
        (last ? IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE : 0),
      pasid: Math.max(pasid, 0),
      grpid,
      perm: IOMMU_FAULT_PERM_READ,
      addr,
      privateData: [0, 0],
    },
  };
}

/** A paging domain at `pasid` of `dev` whose handler keeps every group it gets, unanswered. */
function collecting(dev: Device, pasid: number, handle: unknown = null) {
  const groups: IopfGroup[] = [];
  const domain = ok(iommuPagingDomainAlloc(dev));
  domain.iopfHandler = (g) => {
    groups.push(g);
    return 0;
  };
  expect(iommuAttachDevicePasid(domain, dev, pasid, handle)).toBe(0);
  return { domain, groups };
}

describe("IopfQueue.addDevice / removeDevice", () => {
  it("an unprobed device returns ENODEV", () => {
    const { m } = setup();
    const queue = new IopfQueue("other");
    const bare = new Device({ name: "bare", rid: pciRid(5, 0, 0) });
    expect(queue.addDevice(bare)).toBe("ENODEV");
    const described = new Device({ name: "described", rid: pciRid(5, 1, 0) });
    expect(iommuFwspecInit(described, m.subsys, m.driver)).toBe(0);
    expect(queue.addDevice(described)).toBe("ENODEV");
    expect(queue.devices).toEqual([]);
  });

  it("a device already in a queue returns EBUSY, in that queue or another", () => {
    const { dev, queue } = setup();
    expect(queue.addDevice(dev)).toBe("EBUSY");
    expect(new IopfQueue("other").addDevice(dev)).toBe("EBUSY");
    expect(queue.devices).toEqual([dev]);
  });

  it("removing a device that is not in this queue returns EINVAL", () => {
    const { dev, queue, plug } = setup();
    const other = new IopfQueue("other");
    expect(other.removeDevice(dev)).toBe("EINVAL");
    expect(queue.removeDevice(plug("b", pciRid(2, 0, 0)))).toBe("EINVAL");
    expect(dev.iommu?.faultParam?.queue).toBe(queue);
  });

  it("a removed device leaves the queue and may join one again", () => {
    const { dev, queue } = setup();
    expect(queue.removeDevice(dev)).toBe(0);
    expect(queue.devices).toEqual([]);
    expect(dev.iommu?.faultParam).toBeNull();
    expect(queue.removeDevice(dev)).toBe("EINVAL");
    const other = new IopfQueue("other");
    expect(other.addDevice(dev)).toBe(0);
  });
});

describe("iommuReportDeviceFault: grouping", () => {
  it("a device in no fault queue returns ENODEV and counts nothing", () => {
    const { queue, plug } = setup();
    const outside = plug("b", pciRid(2, 0, 0));
    expect(iommuReportDeviceFault(outside, req(1, 1, true))).toBe("ENODEV");
    expect(queue.stats.requests).toBe(0);
  });

  it("requests before the last of a group wait; the last hands the whole group over", () => {
    const { dev, queue } = setup();
    const { groups } = collecting(dev, 1);
    const first = req(4, 1, false, 0x1000);
    const second = req(4, 1, false, 0x2000);
    const last = req(4, 1, true, 0x3000);
    expect(iommuReportDeviceFault(dev, first)).toBe(0);
    expect(iommuReportDeviceFault(dev, second)).toBe(0);
    expect(groups).toEqual([]);
    expect(iommuReportDeviceFault(dev, last)).toBe(0);
    expect(groups.length).toBe(1);
    const g = groups[0];
    expect(g.faults).toEqual([first, second, last]);
    expect(g.faultCount).toBe(3);
    expect(g.lastFault).toBe(last);
    expect(g.dev).toBe(dev);
    expect(queue.stats.requests).toBe(3);
    expect(queue.stats.groups).toBe(1);
    expect(dev.iommu?.faultParam?.partial).toEqual([]);
  });

  it("a partial request of another group stays waiting for its own last request", () => {
    const { dev } = setup();
    const { groups } = collecting(dev, 1);
    const other = req(5, 1, false, 0x5000);
    expect(iommuReportDeviceFault(dev, req(4, 1, false))).toBe(0);
    expect(iommuReportDeviceFault(dev, other)).toBe(0);
    expect(iommuReportDeviceFault(dev, req(4, 1, true))).toBe(0);
    expect(groups[0].faultCount).toBe(2);
    expect(dev.iommu?.faultParam?.partial).toEqual([other]);
    expect(iommuReportDeviceFault(dev, req(5, 1, true))).toBe(0);
    expect(groups[1].faults[0]).toBe(other);
    expect(groups[1].faultCount).toBe(2);
  });

  it("a last request without partials is a group of one", () => {
    const { dev } = setup();
    const { groups } = collecting(dev, 1);
    expect(iommuReportDeviceFault(dev, req(0, 1, true))).toBe(0);
    expect(groups[0].faultCount).toBe(1);
  });
});

describe("iommuReportDeviceFault: handlers and responses", () => {
  it("the handler of the domain attached at the PASID gets the group, with the attach handle", () => {
    const { dev, queue, responses } = setup();
    const handle = { bond: 1 };
    const { domain, groups } = collecting(dev, 3, handle);
    collecting(dev, 4);
    expect(iommuReportDeviceFault(dev, req(7, 3, true))).toBe(0);
    expect(groups.length).toBe(1);
    expect(groups[0].domain).toBe(domain);
    expect(groups[0].attachHandle).toBe(handle);
    // The handler has not answered yet: the group waits.
    expect(groups[0].responded).toBe(false);
    expect(responses).toEqual([]);
    expect(queue.pendingGroups).toBe(1);
  });

  it("the handler's response goes out once, under the last request's PASID and group index", () => {
    const { dev, queue, responses } = setup();
    const { groups } = collecting(dev, 3);
    expect(iommuReportDeviceFault(dev, req(7, 3, false))).toBe(0);
    expect(iommuReportDeviceFault(dev, req(7, 3, true))).toBe(0);
    expect(iopfGroupResponse(groups[0], IOMMU_PAGE_RESP_SUCCESS)).toBe(0);
    expect(responses).toEqual([{ pasid: 3, grpid: 7, code: IOMMU_PAGE_RESP_SUCCESS }]);
    expect(groups[0].responded).toBe(true);
    expect(groups[0].responseCode).toBe(IOMMU_PAGE_RESP_SUCCESS);
    expect(queue.pendingGroups).toBe(0);
    expect(queue.stats.responses).toBe(1);
    expect(queue.stats.autoResponses).toBe(0);
  });

  it("a second response to a group returns EALREADY, sends nothing and counts a duplicate", () => {
    const { dev, queue, responses } = setup();
    const { groups } = collecting(dev, 3);
    expect(iommuReportDeviceFault(dev, req(7, 3, true))).toBe(0);
    expect(iopfGroupResponse(groups[0], IOMMU_PAGE_RESP_SUCCESS)).toBe(0);
    expect(iopfGroupResponse(groups[0], IOMMU_PAGE_RESP_FAILURE)).toBe("EALREADY");
    expect(iopfGroupResponse(groups[0], IOMMU_PAGE_RESP_SUCCESS)).toBe("EALREADY");
    expect(responses.length).toBe(1);
    expect(groups[0].responseCode).toBe(IOMMU_PAGE_RESP_SUCCESS);
    expect(queue.stats.responses).toBe(1);
    expect(queue.stats.duplicateResponses).toBe(2);
  });

  it("a request without a PASID goes to the handler of the domain at the RID", () => {
    const { dev, responses } = setup();
    const domain = ok(iommuPagingDomainAlloc(dev));
    const groups: IopfGroup[] = [];
    domain.iopfHandler = (g) => {
      groups.push(g);
      return iopfGroupResponse(g, IOMMU_PAGE_RESP_SUCCESS);
    };
    expect(iommuAttachDevice(domain, dev)).toBe(0);
    expect(iommuReportDeviceFault(dev, req(2, -1, true))).toBe(0);
    expect(groups.length).toBe(1);
    expect(groups[0].domain).toBe(domain);
    expect(groups[0].attachHandle).toBeNull();
    expect(responses).toEqual([{ pasid: 0, grpid: 2, code: IOMMU_PAGE_RESP_SUCCESS }]);
  });

  it("with nothing attached at the PASID the core answers IOMMU_PAGE_RESP_INVALID at once (iopf_error_response)", () => {
    const { dev, queue, responses } = setup();
    expect(iommuReportDeviceFault(dev, req(1, 9, true))).toBe(0);
    expect(responses).toEqual([{ pasid: 9, grpid: 1, code: IOMMU_PAGE_RESP_INVALID }]);
    expect(queue.stats.autoResponses).toBe(1);
    expect(queue.pendingGroups).toBe(0);
  });

  it("a domain without a handler gets IOMMU_PAGE_RESP_INVALID automatically", () => {
    const { dev, queue, responses } = setup();
    const domain = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevicePasid(domain, dev, 2)).toBe(0);
    expect(iommuReportDeviceFault(dev, req(1, 2, true))).toBe(0);
    // The RID's default domain has no handler either.
    expect(iommuReportDeviceFault(dev, req(2, -1, true))).toBe(0);
    expect(responses.map((r) => r.code)).toEqual([
      IOMMU_PAGE_RESP_INVALID,
      IOMMU_PAGE_RESP_INVALID,
    ]);
    expect(queue.stats.autoResponses).toBe(2);
  });

  it("a handler that returns an errno gets one IOMMU_PAGE_RESP_FAILURE response", () => {
    const { dev, queue, responses } = setup();
    const domain = ok(iommuPagingDomainAlloc(dev));
    let calls = 0;
    domain.iopfHandler = () => {
      calls++;
      return "ENOMEM";
    };
    expect(iommuAttachDevicePasid(domain, dev, 2)).toBe(0);
    expect(iommuReportDeviceFault(dev, req(1, 2, true))).toBe(0);
    expect(calls).toBe(1);
    expect(responses).toEqual([{ pasid: 2, grpid: 1, code: IOMMU_PAGE_RESP_FAILURE }]);
    expect(queue.stats.autoResponses).toBe(1);
    expect(queue.pendingGroups).toBe(0);
  });

  it("a handler that answered and then returns an errno still sends only its answer", () => {
    const { dev, queue, responses } = setup();
    const domain = ok(iommuPagingDomainAlloc(dev));
    domain.iopfHandler = (g) => {
      iopfGroupResponse(g, IOMMU_PAGE_RESP_INVALID);
      return "EINVAL";
    };
    expect(iommuAttachDevicePasid(domain, dev, 2)).toBe(0);
    expect(iommuReportDeviceFault(dev, req(1, 2, true))).toBe(0);
    expect(responses).toEqual([{ pasid: 2, grpid: 1, code: IOMMU_PAGE_RESP_INVALID }]);
    expect(queue.stats.autoResponses).toBe(0);
    expect(queue.stats.duplicateResponses).toBe(0);
  });
});

describe("deferred work", () => {
  it("a handler may defer its group to the queue's work, run later in order and by budget", () => {
    const { dev, queue, responses } = setup();
    const domain = ok(iommuPagingDomainAlloc(dev));
    const ran: number[] = [];
    domain.iopfHandler = (g) => {
      queue.queueWork(g, (w) => {
        ran.push(w.lastFault.fault.grpid);
        iopfGroupResponse(w, IOMMU_PAGE_RESP_SUCCESS);
      });
      return 0;
    };
    expect(iommuAttachDevicePasid(domain, dev, 2)).toBe(0);
    for (const grpid of [1, 2, 3]) expect(iommuReportDeviceFault(dev, req(grpid, 2, true))).toBe(0);
    expect(responses).toEqual([]);
    expect(queue.workPending).toBe(3);
    expect(queue.pendingGroups).toBe(3);
    expect(queue.runWork(2)).toBe(2);
    expect(ran).toEqual([1, 2]);
    expect(queue.workPending).toBe(1);
    expect(queue.runWork()).toBe(1);
    expect(queue.runWork()).toBe(0);
    expect(ran).toEqual([1, 2, 3]);
    expect(responses.map((r) => r.grpid)).toEqual([1, 2, 3]);
    expect(queue.pendingGroups).toBe(0);
  });
});

describe("teardown answers what is pending", () => {
  it("removing a device answers its pending groups IOMMU_PAGE_RESP_INVALID and drops the rest", () => {
    const { dev, queue, responses, plug } = setup();
    const { domain } = collecting(dev, 2);
    const other = plug("b", pciRid(2, 0, 0));
    expect(queue.addDevice(other)).toBe(0);
    const otherDomain = ok(iommuPagingDomainAlloc(other));
    let deferredRan = false;
    otherDomain.iopfHandler = (g) => {
      queue.queueWork(g, () => {
        deferredRan = true;
      });
      return 0;
    };
    expect(iommuAttachDevicePasid(otherDomain, other, 2)).toBe(0);
    domain.iopfHandler = (g) => {
      queue.queueWork(g, () => {
        deferredRan = true;
      });
      return 0;
    };
    expect(iommuReportDeviceFault(dev, req(1, 2, true))).toBe(0);
    expect(iommuReportDeviceFault(dev, req(2, 2, true))).toBe(0);
    expect(iommuReportDeviceFault(dev, req(3, 2, false))).toBe(0);
    expect(iommuReportDeviceFault(other, req(1, 2, true))).toBe(0);
    expect(queue.removeDevice(dev)).toBe(0);
    expect(responses).toEqual([
      { pasid: 2, grpid: 1, code: IOMMU_PAGE_RESP_INVALID },
      { pasid: 2, grpid: 2, code: IOMMU_PAGE_RESP_INVALID },
    ]);
    expect(queue.stats.discarded).toBe(1);
    expect(queue.stats.autoResponses).toBe(2);
    // The removed device's work is gone; the other device's stays.
    expect(queue.workPending).toBe(1);
    expect(queue.pendingGroups).toBe(1);
    deferredRan = false;
    expect(queue.runWork()).toBe(1);
    expect(deferredRan).toBe(true);
  });

  it("detaching the domain at a PASID answers its pending groups there, and only there", () => {
    const { dev, queue, responses } = setup();
    const a = collecting(dev, 2);
    const b = collecting(dev, 3);
    expect(iommuReportDeviceFault(dev, req(1, 2, true))).toBe(0);
    expect(iommuReportDeviceFault(dev, req(2, 3, true))).toBe(0);
    expect(iommuReportDeviceFault(dev, req(3, 2, false))).toBe(0);
    expect(iommuReportDeviceFault(dev, req(4, 3, false))).toBe(0);
    expect(iommuDetachDevicePasid(a.domain, dev, 2)).toBe(0);
    expect(responses).toEqual([{ pasid: 2, grpid: 1, code: IOMMU_PAGE_RESP_INVALID }]);
    expect(a.groups[0].responded).toBe(true);
    expect(b.groups[0].responded).toBe(false);
    // The partial request at PASID 2 is dropped; the one at PASID 3 still waits.
    expect(dev.iommu?.faultParam?.partial.map((f) => f.fault.pasid)).toEqual([3]);
    expect(queue.stats.discarded).toBe(1);
    // The handler answering late sends nothing more.
    expect(iopfGroupResponse(a.groups[0], IOMMU_PAGE_RESP_SUCCESS)).toBe("EALREADY");
    expect(responses.length).toBe(1);
  });

  it("replacing the domain at a PASID answers the old domain's pending groups", () => {
    const { dev, responses } = setup();
    const old = collecting(dev, 2, {});
    const next = ok(iommuPagingDomainAlloc(dev));
    expect(iommuReportDeviceFault(dev, req(1, 2, true))).toBe(0);
    expect(iommuReplaceDevicePasid(next, dev, 2, {})).toBe(0);
    expect(responses).toEqual([{ pasid: 2, grpid: 1, code: IOMMU_PAGE_RESP_INVALID }]);
    expect(old.groups[0].responded).toBe(true);
  });

  it("detaching the domain at the RID answers its pending groups", () => {
    const { dev, responses } = setup();
    const domain = ok(iommuPagingDomainAlloc(dev));
    const groups: IopfGroup[] = [];
    domain.iopfHandler = (g) => {
      groups.push(g);
      return 0;
    };
    expect(iommuAttachDevice(domain, dev)).toBe(0);
    expect(iommuReportDeviceFault(dev, req(6, -1, true))).toBe(0);
    expect(iommuDetachDevice(domain, dev)).toBe(0);
    expect(responses).toEqual([{ pasid: 0, grpid: 6, code: IOMMU_PAGE_RESP_INVALID }]);
    expect(groups[0].responded).toBe(true);
  });

  it("discardPartial drops every device's partial requests; a later last request stands alone", () => {
    const { dev, queue, plug } = setup();
    const other = plug("b", pciRid(2, 0, 0));
    expect(queue.addDevice(other)).toBe(0);
    const { groups } = collecting(dev, 2);
    expect(iommuReportDeviceFault(dev, req(1, 2, false))).toBe(0);
    expect(iommuReportDeviceFault(dev, req(1, 2, false))).toBe(0);
    expect(iommuReportDeviceFault(other, req(1, 2, false))).toBe(0);
    queue.discardPartial();
    expect(queue.stats.discarded).toBe(3);
    expect(dev.iommu?.faultParam?.partial).toEqual([]);
    expect(other.iommu?.faultParam?.partial).toEqual([]);
    expect(iommuReportDeviceFault(dev, req(1, 2, true))).toBe(0);
    expect(groups[0].faultCount).toBe(1);
  });
});

describe("end to end: a PRI-capable device faults a page in", () => {
  function priMachine() {
    const m = new MockMachine();
    const dev = ok(
      m.addDevice({ name: "gpu", rid: pciRid(3, 0, 0), ats: true, pri: true, pasidBits: 8 }),
    );
    expect(m.driver.devEnableFeat(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    const pa = ok(m.frames.alloc(0));
    m.mem.writeBytes(pa + 0x10, Uint8Array.from([0xca, 0xfe, 0xf0, 0x0d]));
    return { m, dev, pa };
  }
  const IOVA = 0x7000_0000;

  it("the handler maps the page and answers success; the retried DMA reads the bytes", () => {
    const { m, dev, pa } = priMachine();
    const domain = ok(iommuPagingDomainAlloc(dev));
    const seen: number[] = [];
    domain.iopfHandler = (g) => {
      for (const f of g.faults) {
        seen.push(f.fault.addr);
        const ret = iommuMap(
          g.domain as IommuDomain,
          f.fault.addr,
          pa,
          4096,
          IOMMU_READ | IOMMU_WRITE,
        );
        if (ret !== 0) return ret;
      }
      return iopfGroupResponse(g, IOMMU_PAGE_RESP_SUCCESS);
    };
    expect(iommuAttachDevicePasid(domain, dev, 3)).toBe(0);
    const buf = new Uint8Array(4);
    expect(dev.read(IOVA + 0x10, buf, 3)).toBe(DMA_PAGE_REQUESTED);
    // Nothing happens until software drains the page request queue.
    expect(seen).toEqual([]);
    expect(dev.read(IOVA + 0x10, buf, 3)).toBe(DMA_PAGE_REQUESTED);
    expect(m.processQueues()).toBeGreaterThan(0);
    expect(seen).toEqual([IOVA]);
    expect(dev.read(IOVA + 0x10, buf, 3)).toBe(DMA_OK);
    expect([...buf]).toEqual([0xca, 0xfe, 0xf0, 0x0d]);
    const stats = m.driver.iopfQueue.stats;
    expect(stats.groups).toBe(1);
    expect(stats.responses).toBe(1);
    expect(stats.autoResponses).toBe(0);
    expect(dev.stats.pageRequests).toBe(1);
    expect(dev.stats.responses).toBe(1);
    expect(dev.stats.unexpectedResponses).toBe(0);
  });

  it("a handler that defers to the queue's work is run by processQueues", () => {
    const { m, dev, pa } = priMachine();
    const domain = ok(iommuPagingDomainAlloc(dev));
    domain.iopfHandler = (g) => {
      m.driver.iopfQueue.queueWork(g, (w) => {
        expect(iommuMap(domain, w.lastFault.fault.addr, pa, 4096, IOMMU_READ)).toBe(0);
        iopfGroupResponse(w, IOMMU_PAGE_RESP_SUCCESS);
      });
      return 0;
    };
    expect(iommuAttachDevicePasid(domain, dev, 3)).toBe(0);
    const buf = new Uint8Array(2);
    expect(dev.read(IOVA + 0x10, buf, 3)).toBe(DMA_PAGE_REQUESTED);
    m.processQueues();
    expect(m.driver.iopfQueue.workPending).toBe(0);
    expect(dev.read(IOVA + 0x10, buf, 3)).toBe(DMA_OK);
    expect([...buf]).toEqual([0xca, 0xfe]);
  });

  it("without a handler the request is answered with failure and the retried DMA faults", () => {
    const { m, dev } = priMachine();
    const domain = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevicePasid(domain, dev, 3)).toBe(0);
    const buf = new Uint8Array(1);
    expect(dev.read(IOVA, buf, 3)).toBe(DMA_PAGE_REQUESTED);
    m.processQueues();
    expect(m.driver.iopfQueue.stats.autoResponses).toBe(1);
    expect(dev.read(IOVA, buf, 3)).toBe(DMA_FAULT);
    expect(dev.stats.responses).toBe(1);
  });

  it("releasing a device with a pending group answers it before the device goes", () => {
    const { m, dev } = priMachine();
    const domain = ok(iommuPagingDomainAlloc(dev));
    domain.iopfHandler = () => 0;
    expect(iommuAttachDevicePasid(domain, dev, 3)).toBe(0);
    expect(dev.read(IOVA, new Uint8Array(1), 3)).toBe(DMA_PAGE_REQUESTED);
    m.processQueues();
    const queue = m.driver.iopfQueue;
    expect(queue.pendingGroups).toBe(1);
    expect(iommuReleaseDevice(dev)).toBe(0);
    expect(queue.devices).toEqual([]);
    expect(queue.stats.responses).toBe(1);
    expect(queue.stats.autoResponses).toBe(1);
    // The device heard its answer (Invalid Request), so no request of it is left waiting.
    expect(dev.stats.responses).toBe(1);
  });
});
