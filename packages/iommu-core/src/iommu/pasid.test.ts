// Checks attaching domains at PASIDs (attach, replace, detach, handles) and the global PASID space.

import { ChargeTree } from "@iommu-sim/ioasid";
import { describe, expect, it } from "vitest";
import { dmaRead, mockOps, ok } from "../../test/helpers.js";
import { Device, type DeviceOptions, DMA_FAULT, DMA_OK } from "../device/device.js";
import { pciRid } from "../device/pci.js";
import { MockMachine, type MockMachineOptions } from "../testing/mock-machine.js";
import { iommuFwspecInit, iommuProbeDevice } from "./dev-iommu.js";
import { IOMMU_READ, IOMMU_WRITE } from "./io-pgtable.js";
import { IOMMU_DOMAIN_BLOCKED, IommuDomain, type IommuDomainOps } from "./iommu-domain.js";
import {
  type IommuGroup,
  iommuGroupAlloc,
  iommuGroupGet,
  iommuPagingDomainAlloc,
} from "./iommu-group.js";
import { iommuMap } from "./iommu-map.js";
import type { IommuOps } from "./iommu-ops.js";
import { IOMMU_NO_PASID, IOMMU_PASID_INVALID } from "./iommu-subsystem.js";
import {
  iommuAllocGlobalPasid,
  iommuAllocGlobalPasidOrErrno,
  iommuAttachDevicePasid,
  iommuAttachHandleGet,
  iommuDetachDevicePasid,
  iommuFreeGlobalPasid,
  iommuGetDomainForDevPasid,
  iommuReplaceDevicePasid,
} from "./pasid.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const IOVA = 0x80_0000;

function setup(extra: Partial<DeviceOptions> = {}, options?: MockMachineOptions) {
  const m = new MockMachine(options);
  const dev = ok(m.addDevice({ name: "acc", rid: pciRid(1, 0, 0), pasidBits: 8, ...extra }));
  return { m, dev };
}

/** A paging domain of `dev`'s driver with `bytes` at IOVA. */
function domainWith(m: MockMachine, dev: Device, bytes: number[]): IommuDomain {
  const d = ok(iommuPagingDomainAlloc(dev));
  const pa = ok(m.frames.alloc(0));
  m.mem.writeBytes(pa, Uint8Array.from(bytes));
  expect(iommuMap(d, IOVA, pa, 4096, RW)).toBe(0);
  return d;
}

/** `ops` without `setDevPasid` (test-local configuration). */
function withoutSetDevPasid(ops: IommuDomainOps): IommuDomainOps {
  const { setDevPasid: _, ...rest } = ops;
  return rest;
}

/** Make set_dev_pasid of `domain` fail for `dev` (test-local wrapper of the mock's op). */
function failSetDevPasidFor(domain: IommuDomain, dev: Device): void {
  const orig = domain.ops.setDevPasid;
  if (orig === undefined) throw new Error("no setDevPasid");
  domain.ops = {
    ...domain.ops,
    setDevPasid: (d, target, pasid, old) =>
      target === dev ? "ENOSPC" : orig(d, target, pasid, old),
  };
}

function plugWith(m: MockMachine, ops: IommuOps, name: string, rid: number, pasidBits: number) {
  const dev = new Device({ name, rid, pasidBits });
  expect(m.bus.addDevice(dev, m.hw)).toBe(0);
  expect(iommuFwspecInit(dev, m.subsys, ops)).toBe(0);
  expect(iommuProbeDevice(dev)).toBe(0);
  return dev;
}

describe("iommuAttachDevicePasid", () => {
  it("DMA with the PASID translates through the attached domain; the RID keeps its own", () => {
    const { m, dev } = setup();
    const d = domainWith(m, dev, [1, 2, 3]);
    expect(iommuAttachDevicePasid(d, dev, 5)).toBe(0);
    expect(iommuGetDomainForDevPasid(dev, 5)).toBe(d);
    expect(dmaRead(dev, IOVA, 3, 5)).toEqual({ status: DMA_OK, bytes: [1, 2, 3] });
    expect(dmaRead(dev, IOVA, 3).status).toBe(DMA_FAULT);
    expect(dmaRead(dev, IOVA, 3, 6).status).toBe(DMA_FAULT);
  });

  it("DMA with the PASID faults after detach, even right after a cached translation", () => {
    const { m, dev } = setup();
    const d = domainWith(m, dev, [4]);
    expect(iommuAttachDevicePasid(d, dev, 7)).toBe(0);
    expect(dmaRead(dev, IOVA, 1, 7).status).toBe(DMA_OK);
    expect(iommuDetachDevicePasid(d, dev, 7)).toBe(0);
    expect(iommuGetDomainForDevPasid(dev, 7)).toBeNull();
    expect(dmaRead(dev, IOVA, 1, 7).status).toBe(DMA_FAULT);
  });

  it("the driver's identity domain may be attached at a PASID", () => {
    const { m, dev } = setup();
    const pa = ok(m.frames.alloc(0));
    m.mem.write8(pa, 0x5a);
    expect(iommuAttachDevicePasid(m.driver.identityDomain, dev, 9)).toBe(0);
    expect(dmaRead(dev, pa, 1, 9)).toEqual({ status: DMA_OK, bytes: [0x5a] });
  });

  it("a domain without set_dev_pasid returns EOPNOTSUPP", () => {
    const { dev } = setup();
    const d = ok(iommuPagingDomainAlloc(dev));
    d.ops = withoutSetDevPasid(d.ops);
    expect(iommuAttachDevicePasid(d, dev, 1)).toBe("EOPNOTSUPP");
    expect(iommuGetDomainForDevPasid(dev, 1)).toBeNull();
  });

  it("a driver whose blocked domain cannot take a PASID away returns EOPNOTSUPP", () => {
    const m = new MockMachine();
    const noBlocked = plugWith(m, mockOps(m.driver, { blockedDomain: undefined }), "a", 0x100, 8);
    expect(iommuAttachDevicePasid(ok(iommuPagingDomainAlloc(noBlocked)), noBlocked, 1)).toBe(
      "EOPNOTSUPP",
    );
    const blocked = m.driver.blockedDomain;
    const mute = new IommuDomain(IOMMU_DOMAIN_BLOCKED, withoutSetDevPasid(blocked.ops));
    const muteDev = plugWith(m, mockOps(m.driver, { blockedDomain: mute }), "b", 0x200, 8);
    expect(iommuAttachDevicePasid(ok(iommuPagingDomainAlloc(muteDev)), muteDev, 1)).toBe(
      "EOPNOTSUPP",
    );
  });

  it("an unprobed device returns ENODEV", () => {
    const { dev } = setup();
    const d = ok(iommuPagingDomainAlloc(dev));
    const stray = new Device({ name: "stray", rid: pciRid(9, 0, 0), pasidBits: 8 });
    expect(iommuAttachDevicePasid(d, stray, 1)).toBe("ENODEV");
    expect(iommuReplaceDevicePasid(d, stray, 1, {})).toBe("ENODEV");
    expect(iommuDetachDevicePasid(d, stray, 1)).toBe("ENODEV");
    expect(iommuGetDomainForDevPasid(stray, 1)).toBeNull();
  });

  it("IOMMU_NO_PASID returns EINVAL: the RID is attached through the group", () => {
    const { dev } = setup();
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevicePasid(d, dev, IOMMU_NO_PASID)).toBe("EINVAL");
    expect(iommuGroupGet(dev)?.pasidArray.size).toBe(0);
  });

  it("a PASID at or beyond the device's PASID count returns EINVAL", () => {
    const { dev } = setup({ pasidBits: 8 });
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevicePasid(d, dev, 256)).toBe("EINVAL");
    expect(iommuAttachDevicePasid(d, dev, 0x10_0000)).toBe("EINVAL");
    expect(iommuAttachDevicePasid(d, dev, 255)).toBe(0);
  });

  it("the IOMMU's PASID count bounds the device's too", () => {
    const { dev } = setup({ pasidBits: 8 }, { pasidBits: 4 });
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevicePasid(d, dev, 16)).toBe("EINVAL");
    expect(iommuAttachDevicePasid(d, dev, 15)).toBe(0);
  });

  it("a PASID that is not a 32-bit unsigned integer returns EINVAL", () => {
    const { dev } = setup();
    const d = ok(iommuPagingDomainAlloc(dev));
    for (const pasid of [-1, 1.5, Number.NaN, 2 ** 32]) {
      expect(iommuAttachDevicePasid(d, dev, pasid)).toBe("EINVAL");
    }
  });

  it("a domain of another driver returns EINVAL", () => {
    const { dev } = setup();
    const other = setup({}, { seed: 2 });
    const foreign = ok(iommuPagingDomainAlloc(other.dev));
    expect(iommuAttachDevicePasid(foreign, dev, 1)).toBe("EINVAL");
    expect(iommuAttachDevicePasid(other.m.driver.identityDomain, dev, 1)).toBe("EINVAL");
    expect(iommuGetDomainForDevPasid(dev, 1)).toBeNull();
  });

  it("a PASID something is attached at returns EBUSY and keeps what is there", () => {
    const { m, dev } = setup();
    const d1 = domainWith(m, dev, [1]);
    const d2 = domainWith(m, dev, [2]);
    const handle = {};
    expect(iommuAttachDevicePasid(d1, dev, 3, handle)).toBe(0);
    expect(iommuAttachDevicePasid(d2, dev, 3)).toBe("EBUSY");
    expect(iommuAttachDevicePasid(d1, dev, 3)).toBe("EBUSY");
    expect(iommuGetDomainForDevPasid(dev, 3)).toBe(d1);
    expect(iommuAttachHandleGet(dev, 3)).toBe(handle);
    expect(dmaRead(dev, IOVA, 1, 3)).toEqual({ status: DMA_OK, bytes: [1] });
  });

  it("one domain may be attached at several PASIDs", () => {
    const { m, dev } = setup();
    const d = domainWith(m, dev, [6]);
    expect(iommuAttachDevicePasid(d, dev, 1)).toBe(0);
    expect(iommuAttachDevicePasid(d, dev, 2)).toBe(0);
    expect(iommuDetachDevicePasid(d, dev, 1)).toBe(0);
    expect(dmaRead(dev, IOVA, 1, 1).status).toBe(DMA_FAULT);
    expect(dmaRead(dev, IOVA, 1, 2)).toEqual({ status: DMA_OK, bytes: [6] });
  });

  it("set_dev_pasid's errno comes back and nothing is recorded", () => {
    const { dev } = setup();
    const d = ok(iommuPagingDomainAlloc(dev));
    failSetDevPasidFor(d, dev);
    expect(iommuAttachDevicePasid(d, dev, 4)).toBe("ENOSPC");
    expect(iommuGetDomainForDevPasid(dev, 4)).toBeNull();
  });

  it("a device without PASID support cannot have a domain at a PASID", () => {
    const { dev } = setup({ pasidBits: 0 });
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevicePasid(d, dev, 1)).toBe("EINVAL");
    expect(iommuGetDomainForDevPasid(dev, 1)).toBeNull();
  });

  it("a detached PASID may be attached again, to another domain", () => {
    const { m, dev } = setup();
    const d1 = domainWith(m, dev, [1]);
    const d2 = domainWith(m, dev, [2]);
    expect(iommuAttachDevicePasid(d1, dev, 3)).toBe(0);
    expect(dmaRead(dev, IOVA, 1, 3).bytes).toEqual([1]);
    expect(iommuDetachDevicePasid(d1, dev, 3)).toBe(0);
    expect(iommuAttachDevicePasid(d2, dev, 3)).toBe(0);
    expect(dmaRead(dev, IOVA, 1, 3)).toEqual({ status: DMA_OK, bytes: [2] });
  });
});

describe("PASIDs of a multi-device group", () => {
  function twoInOneGroup(bitsA: number, bitsB: number) {
    const m = new MockMachine();
    let shared: IommuGroup | null = null;
    const ops = mockOps(m.driver, {
      deviceGroup: () => {
        if (shared === null) shared = ok(iommuGroupAlloc(m.subsys));
        return shared;
      },
    });
    const a = plugWith(m, ops, "a", pciRid(2, 0, 0), bitsA);
    const b = plugWith(m, ops, "b", pciRid(2, 0, 1), bitsB);
    return { m, a, b };
  }

  it("attaching at a PASID attaches every device of the group", () => {
    const { m, a, b } = twoInOneGroup(8, 8);
    const d = domainWith(m, a, [3]);
    expect(iommuAttachDevicePasid(d, a, 5)).toBe(0);
    expect(iommuGetDomainForDevPasid(b, 5)).toBe(d);
    expect(dmaRead(a, IOVA, 1, 5)).toEqual({ status: DMA_OK, bytes: [3] });
    expect(dmaRead(b, IOVA, 1, 5)).toEqual({ status: DMA_OK, bytes: [3] });
    expect(iommuDetachDevicePasid(d, b, 5)).toBe(0);
    expect(dmaRead(a, IOVA, 1, 5).status).toBe(DMA_FAULT);
    expect(dmaRead(b, IOVA, 1, 5).status).toBe(DMA_FAULT);
  });

  it("a PASID beyond any group device's PASID count returns EINVAL", () => {
    const { m, a, b } = twoInOneGroup(8, 4);
    const d = domainWith(m, a, [3]);
    expect(iommuAttachDevicePasid(d, a, 16)).toBe("EINVAL");
    expect(iommuAttachDevicePasid(d, b, 15)).toBe(0);
  });

  it("when one device fails, the devices already done lose the PASID again", () => {
    const { m, a, b } = twoInOneGroup(8, 8);
    const d = domainWith(m, a, [3]);
    failSetDevPasidFor(d, b);
    expect(iommuAttachDevicePasid(d, a, 5)).toBe("ENOSPC");
    expect(iommuGetDomainForDevPasid(a, 5)).toBeNull();
    expect(dmaRead(a, IOVA, 1, 5).status).toBe(DMA_FAULT);
  });

  it("when one device fails a replace, the devices already done go back to the old domain", () => {
    const { m, a, b } = twoInOneGroup(8, 8);
    const d1 = domainWith(m, a, [1]);
    const d2 = domainWith(m, a, [2]);
    expect(iommuAttachDevicePasid(d1, a, 5, {})).toBe(0);
    failSetDevPasidFor(d2, b);
    expect(iommuReplaceDevicePasid(d2, a, 5, {})).toBe("ENOSPC");
    expect(iommuGetDomainForDevPasid(a, 5)).toBe(d1);
    expect(dmaRead(a, IOVA, 1, 5)).toEqual({ status: DMA_OK, bytes: [1] });
    expect(dmaRead(b, IOVA, 1, 5)).toEqual({ status: DMA_OK, bytes: [1] });
  });
});

describe("iommuReplaceDevicePasid", () => {
  it("moves the PASID straight to the new domain and handle", () => {
    const { m, dev } = setup();
    const d1 = domainWith(m, dev, [1]);
    const d2 = domainWith(m, dev, [2]);
    const h1 = { id: 1 };
    const h2 = { id: 2 };
    expect(iommuAttachDevicePasid(d1, dev, 5, h1)).toBe(0);
    expect(iommuReplaceDevicePasid(d2, dev, 5, h2)).toBe(0);
    expect(iommuGetDomainForDevPasid(dev, 5)).toBe(d2);
    expect(iommuAttachHandleGet(dev, 5)).toBe(h2);
    expect(dmaRead(dev, IOVA, 1, 5)).toEqual({ status: DMA_OK, bytes: [2] });
  });

  it("replacing with the attached domain only swaps the handle", () => {
    const { m, dev } = setup();
    const d = domainWith(m, dev, [1]);
    const h2 = {};
    expect(iommuAttachDevicePasid(d, dev, 5, {})).toBe(0);
    expect(iommuReplaceDevicePasid(d, dev, 5, h2)).toBe(0);
    expect(iommuAttachHandleGet(dev, 5)).toBe(h2);
    expect(dmaRead(dev, IOVA, 1, 5)).toEqual({ status: DMA_OK, bytes: [1] });
  });

  it("replace without an existing attachment returns EINVAL and attaches nothing", () => {
    const { dev } = setup();
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuReplaceDevicePasid(d, dev, 5, {})).toBe("EINVAL");
    expect(iommuGetDomainForDevPasid(dev, 5)).toBeNull();
  });

  it("replace without a handle returns EINVAL and keeps the attachment", () => {
    const { m, dev } = setup();
    const d1 = domainWith(m, dev, [1]);
    const d2 = ok(iommuPagingDomainAlloc(dev));
    const h1 = {};
    expect(iommuAttachDevicePasid(d1, dev, 5, h1)).toBe(0);
    expect(iommuReplaceDevicePasid(d2, dev, 5, null)).toBe("EINVAL");
    expect(iommuReplaceDevicePasid(d2, dev, 5, undefined)).toBe("EINVAL");
    expect(iommuGetDomainForDevPasid(dev, 5)).toBe(d1);
    expect(iommuAttachHandleGet(dev, 5)).toBe(h1);
  });

  it("IOMMU_NO_PASID, a foreign domain or a domain without set_dev_pasid are refused", () => {
    const { m, dev } = setup();
    const d1 = domainWith(m, dev, [1]);
    expect(iommuAttachDevicePasid(d1, dev, 5, {})).toBe(0);
    const d2 = ok(iommuPagingDomainAlloc(dev));
    expect(iommuReplaceDevicePasid(d2, dev, IOMMU_NO_PASID, {})).toBe("EINVAL");
    const other = setup({}, { seed: 4 });
    expect(iommuReplaceDevicePasid(ok(iommuPagingDomainAlloc(other.dev)), dev, 5, {})).toBe(
      "EINVAL",
    );
    d2.ops = withoutSetDevPasid(d2.ops);
    expect(iommuReplaceDevicePasid(d2, dev, 5, {})).toBe("EOPNOTSUPP");
    expect(iommuGetDomainForDevPasid(dev, 5)).toBe(d1);
  });

  it("a failed replace keeps the old domain and handle, and DMA still goes through it", () => {
    const { m, dev } = setup();
    const d1 = domainWith(m, dev, [1]);
    const d2 = domainWith(m, dev, [2]);
    const h1 = {};
    expect(iommuAttachDevicePasid(d1, dev, 5, h1)).toBe(0);
    failSetDevPasidFor(d2, dev);
    expect(iommuReplaceDevicePasid(d2, dev, 5, {})).toBe("ENOSPC");
    expect(iommuGetDomainForDevPasid(dev, 5)).toBe(d1);
    expect(iommuAttachHandleGet(dev, 5)).toBe(h1);
    expect(dmaRead(dev, IOVA, 1, 5)).toEqual({ status: DMA_OK, bytes: [1] });
  });
});

describe("iommuDetachDevicePasid", () => {
  it("detaching what is not attached at the PASID returns EINVAL and changes nothing", () => {
    const { m, dev } = setup();
    const d1 = domainWith(m, dev, [1]);
    const d2 = ok(iommuPagingDomainAlloc(dev));
    expect(iommuDetachDevicePasid(d1, dev, 5)).toBe("EINVAL");
    expect(iommuAttachDevicePasid(d1, dev, 5)).toBe(0);
    expect(iommuDetachDevicePasid(d2, dev, 5)).toBe("EINVAL");
    expect(iommuGetDomainForDevPasid(dev, 5)).toBe(d1);
    expect(dmaRead(dev, IOVA, 1, 5)).toEqual({ status: DMA_OK, bytes: [1] });
  });
});

describe("iommuAttachHandleGet", () => {
  it("returns the handle given at attach, and null without one", () => {
    const { dev } = setup();
    const d = ok(iommuPagingDomainAlloc(dev));
    const handle = { bond: 1 };
    expect(iommuAttachDevicePasid(d, dev, 1, handle)).toBe(0);
    expect(iommuAttachDevicePasid(d, dev, 2)).toBe(0);
    expect(iommuAttachHandleGet(dev, 1)).toBe(handle);
    expect(iommuAttachHandleGet(dev, 2)).toBeNull();
  });

  it("returns null for a PASID with nothing attached, after detach, and for an unprobed device", () => {
    const { dev } = setup();
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachHandleGet(dev, 1)).toBeNull();
    expect(iommuAttachDevicePasid(d, dev, 1, {})).toBe(0);
    expect(iommuDetachDevicePasid(d, dev, 1)).toBe(0);
    expect(iommuAttachHandleGet(dev, 1)).toBeNull();
    expect(iommuAttachHandleGet(new Device({ name: "x", rid: 7 }), 1)).toBeNull();
  });
});

describe("the global PASID allocator", () => {
  it("hands out the lowest free PASID from 1 up, and reuses a freed one", () => {
    const { m, dev } = setup();
    expect([1, 2, 3].map(() => iommuAllocGlobalPasid(dev))).toEqual([1, 2, 3]);
    expect(iommuFreeGlobalPasid(m.subsys, 2)).toBe(0);
    expect(iommuAllocGlobalPasid(dev)).toBe(2);
    expect(iommuAllocGlobalPasid(dev)).toBe(4);
  });

  it("stays below the device's PASID count", () => {
    const { m, dev } = setup({ pasidBits: 2 });
    expect([1, 2, 3].map(() => iommuAllocGlobalPasid(dev))).toEqual([1, 2, 3]);
    expect(iommuAllocGlobalPasid(dev)).toBe(IOMMU_PASID_INVALID);
    expect(iommuAllocGlobalPasidOrErrno(dev)).toBe("ENOSPC");
    expect(iommuFreeGlobalPasid(m.subsys, 3)).toBe(0);
    expect(iommuAllocGlobalPasid(dev)).toBe(3);
  });

  it("is one space for all devices: a device with a small range is full while others go on", () => {
    const m = new MockMachine();
    const small = ok(m.addDevice({ name: "small", rid: 0x100, pasidBits: 1 }));
    const big = ok(m.addDevice({ name: "big", rid: 0x200, pasidBits: 8 }));
    expect(iommuAllocGlobalPasid(big)).toBe(1);
    expect(iommuAllocGlobalPasid(small)).toBe(IOMMU_PASID_INVALID);
    expect(iommuAllocGlobalPasid(big)).toBe(2);
    expect(iommuFreeGlobalPasid(m.subsys, 1)).toBe(0);
    expect(iommuAllocGlobalPasid(small)).toBe(1);
  });

  it("a device without PASIDs gets IOMMU_PASID_INVALID", () => {
    const { dev } = setup({ pasidBits: 0 });
    expect(iommuAllocGlobalPasid(dev)).toBe(IOMMU_PASID_INVALID);
    expect(iommuAllocGlobalPasidOrErrno(dev)).toBe("ENODEV");
    const noIommuPasids = setup({ pasidBits: 8 }, { pasidBits: 0 });
    expect(iommuAllocGlobalPasid(noIommuPasids.dev)).toBe(IOMMU_PASID_INVALID);
    const stray = new Device({ name: "stray", rid: 9, pasidBits: 8 });
    expect(iommuAllocGlobalPasid(stray)).toBe(IOMMU_PASID_INVALID);
    expect(iommuAllocGlobalPasidOrErrno(stray)).toBe("ENODEV");
  });

  it("freeing IOMMU_PASID_INVALID returns EINVAL; a PASID not allocated returns ENOENT", () => {
    const { m, dev } = setup();
    expect(iommuFreeGlobalPasid(m.subsys, IOMMU_PASID_INVALID)).toBe("EINVAL");
    expect(iommuFreeGlobalPasid(m.subsys, 1)).toBe("ENOENT");
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuFreeGlobalPasid(m.subsys, pasid)).toBe(0);
    expect(iommuFreeGlobalPasid(m.subsys, pasid)).toBe("ENOENT");
  });

  it("a charged allocation over the node's limit fails; freeing uncharges", () => {
    const charges = new ChargeTree({ capacity: 100 });
    const user = ok(charges.createNode(charges.root, "user", 2));
    const { m, dev } = setup({}, { charges });
    const p1 = iommuAllocGlobalPasid(dev, user);
    const p2 = iommuAllocGlobalPasid(dev, user);
    expect([p1, p2]).toEqual([1, 2]);
    expect(user.current).toBe(2);
    expect(iommuAllocGlobalPasid(dev, user)).toBe(IOMMU_PASID_INVALID);
    expect(iommuAllocGlobalPasidOrErrno(dev, user)).toBe("EBUSY");
    expect(user.current).toBe(2);
    expect(iommuFreeGlobalPasid(m.subsys, p1)).toBe(0);
    expect(user.current).toBe(1);
    expect(iommuAllocGlobalPasid(dev, user)).toBe(1);
    expect(user.current).toBe(2);
  });

  it("uncharged (in-kernel) allocations are never limited", () => {
    const charges = new ChargeTree({ capacity: 1 });
    const user = ok(charges.createNode(charges.root, "user", 1));
    const { m, dev } = setup({}, { charges });
    expect(iommuAllocGlobalPasid(dev, user)).toBe(1);
    expect(iommuAllocGlobalPasid(dev, user)).toBe(IOMMU_PASID_INVALID);
    const kernel = [2, 3, 4, 5].map(() => iommuAllocGlobalPasid(dev));
    expect(kernel).toEqual([2, 3, 4, 5]);
    expect(user.current).toBe(1);
    expect(charges.root.current).toBe(1);
    for (const p of kernel) expect(iommuFreeGlobalPasid(m.subsys, p)).toBe(0);
    expect(user.current).toBe(1);
  });

  it("the root's capacity limits charged allocations of every node", () => {
    const charges = new ChargeTree({ capacity: 2 });
    const a = ok(charges.createNode(charges.root, "a"));
    const b = ok(charges.createNode(charges.root, "b"));
    const { dev } = setup({}, { charges });
    expect(iommuAllocGlobalPasid(dev, a)).toBe(1);
    expect(iommuAllocGlobalPasid(dev, b)).toBe(2);
    expect(iommuAllocGlobalPasidOrErrno(dev, b)).toBe("EBUSY");
    expect(iommuAllocGlobalPasid(dev)).toBe(3);
  });

  it("a charged allocation that finds the space full leaves no charge behind", () => {
    const charges = new ChargeTree({ capacity: 100 });
    const user = ok(charges.createNode(charges.root, "user"));
    const { dev } = setup({ pasidBits: 1 }, { charges });
    expect(iommuAllocGlobalPasid(dev, user)).toBe(1);
    expect(iommuAllocGlobalPasidOrErrno(dev, user)).toBe("ENOSPC");
    expect(user.current).toBe(1);
  });

  it("a charged allocation on a machine without a charge tree fails", () => {
    const charges = new ChargeTree({ capacity: 100 });
    const user = ok(charges.createNode(charges.root, "user"));
    const { dev } = setup();
    expect(iommuAllocGlobalPasid(dev, user)).toBe(IOMMU_PASID_INVALID);
    expect(iommuAllocGlobalPasidOrErrno(dev, user)).toBe("EINVAL");
    expect(user.current).toBe(0);
  });
});
