// Checks groups, default domains, attach/detach/replace and DMA ownership against the mock IOMMU.

import { describe, expect, it } from "vitest";
import { dmaRead, mockOps, ok } from "../../test/helpers.js";
import { Device, type DeviceOptions, DMA_FAULT, DMA_OK } from "../device/device.js";
import { pciRid } from "../device/pci.js";
import { MockMachine, type MockMachineOptions } from "../testing/mock-machine.js";
import { iommuFwspecInit, iommuProbeDevice, iommuReleaseDevice } from "./dev-iommu.js";
import { IOMMU_READ, IOMMU_WRITE } from "./io-pgtable.js";
import {
  type AttachErrno,
  IOMMU_DOMAIN_DMA,
  IOMMU_DOMAIN_DMA_FQ,
  IOMMU_DOMAIN_IDENTITY,
  type IommuDomain,
} from "./iommu-domain.js";
import {
  type IommuGroup,
  iommuAttachDevice,
  iommuAttachGroup,
  iommuDetachDevice,
  iommuDetachGroup,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDeviceUnuseDefaultDomain,
  iommuDeviceUseDefaultDomain,
  iommuDomainFree,
  iommuDomainIsLazy,
  iommuGetDomainForDev,
  iommuGroupAlloc,
  iommuGroupClaimDmaOwner,
  iommuGroupDmaOwnerClaimed,
  iommuGroupGet,
  iommuGroupReleaseDmaOwner,
  iommuGroupReplaceDomain,
  iommuPagingDomainAlloc,
  iommuSetupDefaultDomain,
} from "./iommu-group.js";
import { iommuMap } from "./iommu-map.js";
import { IOMMU_CAP_DEFERRED_FLUSH, type IommuOps } from "./iommu-ops.js";
import { iommuAttachDevicePasid, iommuDetachDevicePasid } from "./pasid.js";

const RW = IOMMU_READ | IOMMU_WRITE;
const IOVA = 0x40_0000;

function plugMock(m: MockMachine, name: string, rid: number, extra: Partial<DeviceOptions> = {}) {
  return ok(m.addDevice({ name, rid, ...extra }));
}

/** Plug a device into the machine's bus and probe it through `ops` instead of the driver itself. */
function plugWith(m: MockMachine, ops: IommuOps, name: string, rid: number): Device {
  const dev = new Device({ name, rid });
  expect(m.bus.addDevice(dev, m.hw)).toBe(0);
  expect(iommuFwspecInit(dev, m.subsys, ops)).toBe(0);
  expect(iommuProbeDevice(dev)).toBe(0);
  return dev;
}

/** Ops whose devices all join one group. */
function sharedGroupOps(m: MockMachine, over: Partial<IommuOps> = {}): IommuOps {
  let shared: IommuGroup | null = null;
  return mockOps(m.driver, {
    deviceGroup: () => {
      if (shared === null || shared.devices.length === 0) shared = ok(iommuGroupAlloc(m.subsys));
      return shared;
    },
    ...over,
  });
}

/** A frame holding `bytes` at its start. */
function frameWith(m: MockMachine, bytes: number[]): number {
  const pa = ok(m.frames.alloc(0));
  m.mem.writeBytes(pa, Uint8Array.from(bytes));
  return pa;
}

/** Make attachDev of `domain` fail for `dev` with `errno` (test-local wrapper of the mock's op). */
function failAttachFor(domain: IommuDomain, dev: Device, errno: AttachErrno): void {
  const orig = domain.ops.attachDev;
  domain.ops = {
    ...domain.ops,
    attachDev: (d, target, old) => (target === dev ? errno : orig(d, target, old)),
  };
}

describe("probe: group and default domain", () => {
  it("puts a probed device in a group of its own, attached to a DMA default domain", () => {
    const m = new MockMachine();
    const dev = plugMock(m, "nic", pciRid(1, 0, 0));
    const group = iommuGroupGet(dev) as IommuGroup;
    expect(group.devices).toEqual([dev]);
    expect(group.defaultDomain?.type).toBe(IOMMU_DOMAIN_DMA);
    expect(group.domain).toBe(group.defaultDomain);
    expect(iommuGetDomainForDev(dev)).toBe(group.defaultDomain);
    expect(m.subsys.groupIds.has(group.id)).toBe(true);
  });

  it("gives each device its own group number", () => {
    const m = new MockMachine();
    const a = iommuGroupGet(plugMock(m, "a", pciRid(1, 0, 0))) as IommuGroup;
    const b = iommuGroupGet(plugMock(m, "b", pciRid(1, 1, 0))) as IommuGroup;
    expect(a).not.toBe(b);
    expect(a.id).not.toBe(b.id);
    expect(m.subsys.groupIds.size).toBe(2);
  });

  it("the identity policy gives the driver's identity domain, and DMA addresses are physical", () => {
    const m = new MockMachine({ defaultDomain: "identity" });
    const dev = plugMock(m, "nic", pciRid(1, 0, 0));
    const group = iommuGroupGet(dev) as IommuGroup;
    expect(group.defaultDomain).toBe(m.driver.identityDomain);
    expect(group.defaultDomain?.type).toBe(IOMMU_DOMAIN_IDENTITY);
    const pa = frameWith(m, [1, 2, 3, 4]);
    expect(dmaRead(dev, pa, 4)).toEqual({ status: DMA_OK, bytes: [1, 2, 3, 4] });
  });

  it("the lazy policy gives a DMA_FQ domain when the driver can defer flushes", () => {
    const m = new MockMachine({ strict: false });
    const group = iommuGroupGet(plugMock(m, "nic", pciRid(1, 0, 0))) as IommuGroup;
    expect(group.defaultDomain?.type).toBe(IOMMU_DOMAIN_DMA_FQ);
    expect(iommuDomainIsLazy(group.defaultDomain as IommuDomain)).toBe(true);
  });

  it("the lazy policy stays strict when the driver cannot defer flushes", () => {
    const m = new MockMachine({ strict: false });
    const ops = mockOps(m.driver, {
      capable: (dev, cap) => cap !== IOMMU_CAP_DEFERRED_FLUSH && m.driver.capable(dev, cap),
    });
    const group = iommuGroupGet(plugWith(m, ops, "nic", pciRid(1, 0, 0))) as IommuGroup;
    expect(group.defaultDomain?.type).toBe(IOMMU_DOMAIN_DMA);
    expect(iommuDomainIsLazy(group.defaultDomain as IommuDomain)).toBe(false);
  });

  it("the driver's def_domain_type wins over the DMA policy", () => {
    const m = new MockMachine();
    const ops = mockOps(m.driver, { defDomainType: () => IOMMU_DOMAIN_IDENTITY });
    const group = iommuGroupGet(plugWith(m, ops, "nic", pciRid(1, 0, 0))) as IommuGroup;
    expect(group.defaultDomain).toBe(m.driver.identityDomain);
  });

  it("the driver's def_domain_type wins over the identity policy", () => {
    const m = new MockMachine({ defaultDomain: "identity" });
    const ops = mockOps(m.driver, { defDomainType: () => IOMMU_DOMAIN_DMA });
    const group = iommuGroupGet(plugWith(m, ops, "nic", pciRid(1, 0, 0))) as IommuGroup;
    expect(group.defaultDomain?.type).toBe(IOMMU_DOMAIN_DMA);
  });

  it("a driver requiring DMA gets a strict domain under the lazy policy", () => {
    const m = new MockMachine({ strict: false });
    const ops = mockOps(m.driver, { defDomainType: () => IOMMU_DOMAIN_DMA });
    const group = iommuGroupGet(plugWith(m, ops, "nic", pciRid(1, 0, 0))) as IommuGroup;
    expect(group.defaultDomain?.type).toBe(IOMMU_DOMAIN_DMA);
  });

  it("a def_domain_type of 0 leaves the choice to the policy", () => {
    const m = new MockMachine({ defaultDomain: "identity" });
    const ops = mockOps(m.driver, { defDomainType: () => 0 });
    const group = iommuGroupGet(plugWith(m, ops, "nic", pciRid(1, 0, 0))) as IommuGroup;
    expect(group.defaultDomain).toBe(m.driver.identityDomain);
  });

  it("an identity policy the driver cannot honour falls back to a DMA domain", () => {
    const m = new MockMachine({ defaultDomain: "identity" });
    const ops = mockOps(m.driver, { identityDomain: undefined });
    const group = iommuGroupGet(plugWith(m, ops, "nic", pciRid(1, 0, 0))) as IommuGroup;
    expect(group.defaultDomain?.type).toBe(IOMMU_DOMAIN_DMA);
  });

  it("a type the driver requires but cannot provide fails the probe (no fallback)", () => {
    const m = new MockMachine();
    const ops = mockOps(m.driver, {
      identityDomain: undefined,
      defDomainType: () => IOMMU_DOMAIN_IDENTITY,
    });
    const dev = new Device({ name: "nic", rid: pciRid(1, 0, 0) });
    expect(m.bus.addDevice(dev, m.hw)).toBe(0);
    expect(iommuFwspecInit(dev, m.subsys, ops)).toBe(0);
    expect(iommuProbeDevice(dev)).toBe("EOPNOTSUPP");
    expect(iommuGroupGet(dev)).toBeNull();
    expect(m.subsys.groupIds.size).toBe(0);
    expect(m.driver.didsInUse).toBe(0);
  });

  it("devices of one group that ask for different types get identity, as the kernel recovers", () => {
    const m = new MockMachine();
    const ops = sharedGroupOps(m, {
      defDomainType: (dev) => (dev.name === "a" ? IOMMU_DOMAIN_DMA : IOMMU_DOMAIN_IDENTITY),
    });
    const a = plugWith(m, ops, "a", pciRid(1, 0, 0));
    plugWith(m, ops, "b", pciRid(1, 0, 1));
    const group = iommuGroupGet(a) as IommuGroup;
    expect(group.defaultDomain?.type).toBe(IOMMU_DOMAIN_DMA);
    expect(iommuSetupDefaultDomain(group, 0)).toBe(0);
    expect(group.defaultDomain).toBe(m.driver.identityDomain);
    expect(group.domain).toBe(m.driver.identityDomain);
    // The DMA domain it replaced was freed.
    expect(m.driver.didsInUse).toBe(0);
  });

  it("a target type the devices' driver contradicts returns EINVAL and keeps the default", () => {
    const m = new MockMachine();
    const ops = mockOps(m.driver, { defDomainType: () => IOMMU_DOMAIN_DMA });
    const group = iommuGroupGet(plugWith(m, ops, "nic", pciRid(1, 0, 0))) as IommuGroup;
    const def = group.defaultDomain;
    expect(iommuSetupDefaultDomain(group, IOMMU_DOMAIN_IDENTITY)).toBe("EINVAL");
    expect(group.defaultDomain).toBe(def);
    expect(group.domain).toBe(def);
  });

  it("a target type replaces the default domain and frees the old one", () => {
    const m = new MockMachine();
    const group = iommuGroupGet(plugMock(m, "nic", pciRid(1, 0, 0))) as IommuGroup;
    expect(m.driver.didsInUse).toBe(1);
    expect(iommuSetupDefaultDomain(group, IOMMU_DOMAIN_IDENTITY)).toBe(0);
    expect(group.defaultDomain).toBe(m.driver.identityDomain);
    expect(group.domain).toBe(m.driver.identityDomain);
    expect(m.driver.didsInUse).toBe(0);
  });
});

describe("multi-device groups", () => {
  function twoInOneGroup(options?: MockMachineOptions) {
    const m = new MockMachine(options);
    const ops = sharedGroupOps(m);
    const a = plugWith(m, ops, "a", pciRid(2, 0, 0));
    const b = plugWith(m, ops, "b", pciRid(2, 0, 1));
    return { m, ops, a, b, group: iommuGroupGet(a) as IommuGroup };
  }

  it("a second device joins the group and the domain it has", () => {
    const { m, a, b, group } = twoInOneGroup();
    expect(iommuGroupGet(b)).toBe(group);
    expect(group.devices).toEqual([a, b]);
    expect(m.subsys.groupIds.size).toBe(1);
    // One default domain for both: the DMA domain was allocated once.
    expect(m.driver.didsInUse).toBe(1);
    expect(iommuGetDomainForDev(b)).toBe(group.defaultDomain);
  });

  it("iommuAttachDevice refuses a device whose group has other devices (EINVAL)", () => {
    const { m, a, group } = twoInOneGroup();
    const d = ok(iommuPagingDomainAlloc(a));
    expect(iommuAttachDevice(d, a)).toBe("EINVAL");
    expect(group.domain).toBe(group.defaultDomain);
    iommuDomainFree(d);
    expect(m.driver.didsInUse).toBe(1);
  });

  it("iommuAttachGroup moves every device, and the DMA of each follows", () => {
    const { m, a, b, group } = twoInOneGroup();
    const d = ok(iommuPagingDomainAlloc(a));
    expect(iommuMap(d, IOVA, frameWith(m, [9, 8, 7]), 4096, RW)).toBe(0);
    expect(iommuAttachGroup(d, group)).toBe(0);
    expect(group.domain).toBe(d);
    expect(dmaRead(a, IOVA, 3)).toEqual({ status: DMA_OK, bytes: [9, 8, 7] });
    expect(dmaRead(b, IOVA, 3)).toEqual({ status: DMA_OK, bytes: [9, 8, 7] });
  });

  it("iommuDetachDevice refuses a device of a multi-device group (EINVAL)", () => {
    const { a, group } = twoInOneGroup();
    const d = ok(iommuPagingDomainAlloc(a));
    expect(iommuAttachGroup(d, group)).toBe(0);
    expect(iommuDetachDevice(d, a)).toBe("EINVAL");
    expect(group.domain).toBe(d);
  });

  it("iommuDetachGroup returns every device to the default domain", () => {
    const { m, a, b, group } = twoInOneGroup();
    const d = ok(iommuPagingDomainAlloc(a));
    expect(iommuMap(d, IOVA, frameWith(m, [5]), 4096, RW)).toBe(0);
    expect(iommuAttachGroup(d, group)).toBe(0);
    expect(iommuDetachGroup(d, group)).toBe(0);
    expect(group.domain).toBe(group.defaultDomain);
    expect(dmaRead(a, IOVA, 1).status).toBe(DMA_FAULT);
    expect(dmaRead(b, IOVA, 1).status).toBe(DMA_FAULT);
  });

  it("when one device fails to attach, the devices already moved go back and the group stays", () => {
    const { m, a, b, group } = twoInOneGroup();
    const def = group.defaultDomain as IommuDomain;
    expect(iommuMap(def, IOVA, frameWith(m, [1, 1]), 4096, RW)).toBe(0);
    const d = ok(iommuPagingDomainAlloc(a));
    expect(iommuMap(d, IOVA + 4096, frameWith(m, [2, 2]), 4096, RW)).toBe(0);
    failAttachFor(d, b, "ENOSPC");
    expect(iommuAttachGroup(d, group)).toBe("ENOSPC");
    expect(group.domain).toBe(def);
    for (const dev of [a, b]) {
      expect(dmaRead(dev, IOVA, 2)).toEqual({ status: DMA_OK, bytes: [1, 1] });
      expect(dmaRead(dev, IOVA + 4096, 2).status).toBe(DMA_FAULT);
    }
  });

  it("the group and its number live until its last device is released", () => {
    const { m, a, b, group } = twoInOneGroup();
    expect(iommuReleaseDevice(a)).toBe(0);
    expect(group.devices).toEqual([b]);
    expect(group.defaultDomain).not.toBeNull();
    expect(m.subsys.groupIds.has(group.id)).toBe(true);
    expect(iommuReleaseDevice(b)).toBe(0);
    expect(group.defaultDomain).toBeNull();
    expect(m.subsys.groupIds.size).toBe(0);
    expect(m.driver.didsInUse).toBe(0);
  });
});

describe("attach and detach", () => {
  function oneDevice(options?: MockMachineOptions) {
    const m = new MockMachine(options);
    const dev = plugMock(m, "nic", pciRid(1, 0, 0));
    return { m, dev, group: iommuGroupGet(dev) as IommuGroup };
  }

  it("after attaching an empty paging domain the device's DMA faults", () => {
    const { m, dev } = oneDevice();
    const def = iommuGetDomainForDev(dev) as IommuDomain;
    expect(iommuMap(def, IOVA, frameWith(m, [3]), 4096, RW)).toBe(0);
    expect(dmaRead(dev, IOVA, 1)).toEqual({ status: DMA_OK, bytes: [3] });
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(iommuGetDomainForDev(dev)).toBe(d);
    expect(dmaRead(dev, IOVA, 1).status).toBe(DMA_FAULT);
  });

  it("after mapping a page in the attached domain the device reads its bytes and writes them", () => {
    const { m, dev } = oneDevice();
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevice(d, dev)).toBe(0);
    const pa = frameWith(m, [0xde, 0xad, 0xbe, 0xef]);
    expect(iommuMap(d, IOVA, pa, 4096, RW)).toBe(0);
    expect(dmaRead(dev, IOVA, 4)).toEqual({ status: DMA_OK, bytes: [0xde, 0xad, 0xbe, 0xef] });
    expect(dev.write(IOVA + 8, Uint8Array.from([7, 7]))).toBe(DMA_OK);
    expect(m.mem.read8(pa + 8)).toBe(7);
  });

  it("attaching a second domain while away from the default returns EBUSY", () => {
    const { dev } = oneDevice();
    const d1 = ok(iommuPagingDomainAlloc(dev));
    const d2 = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevice(d1, dev)).toBe(0);
    expect(iommuAttachDevice(d2, dev)).toBe("EBUSY");
    expect(iommuGetDomainForDev(dev)).toBe(d1);
  });

  it("attaching the attached non-default domain again returns EBUSY too", () => {
    const { dev } = oneDevice();
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(iommuAttachDevice(d, dev)).toBe("EBUSY");
  });

  it("attaching a domain of another driver returns EINVAL", () => {
    const { dev, group } = oneDevice();
    const other = new MockMachine({ seed: 2 });
    const foreignDev = plugMock(other, "x", pciRid(1, 0, 0));
    const foreign = ok(iommuPagingDomainAlloc(foreignDev));
    expect(iommuAttachDevice(foreign, dev)).toBe("EINVAL");
    expect(iommuAttachDevice(other.driver.identityDomain, dev)).toBe("EINVAL");
    expect(iommuAttachGroup(foreign, group)).toBe("EINVAL");
    expect(group.domain).toBe(group.defaultDomain);
  });

  it("attaching a domain of another driver of the same subsystem returns EINVAL", () => {
    const { m, dev } = oneDevice();
    // Another IommuOps is another driver to the core, even with the same code behind it.
    const otherOps = mockOps(m.driver);
    const otherDev = plugWith(m, otherOps, "other", pciRid(1, 1, 0));
    const theirs = ok(iommuPagingDomainAlloc(otherDev));
    expect(theirs.owner).toBe(otherOps);
    expect(iommuAttachDevice(theirs, dev)).toBe("EINVAL");
    const ours = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevice(ours, otherDev)).toBe("EINVAL");
    expect(iommuAttachDevice(ours, dev)).toBe(0);
  });

  it("the driver's static identity domain can be attached, and DMA passes through", () => {
    const { m, dev } = oneDevice();
    expect(iommuAttachDevice(m.driver.identityDomain, dev)).toBe(0);
    const pa = frameWith(m, [4, 2]);
    expect(dmaRead(dev, pa, 2)).toEqual({ status: DMA_OK, bytes: [4, 2] });
  });

  it("an unprobed device returns ENODEV", () => {
    const { m, dev } = oneDevice();
    const d = ok(iommuPagingDomainAlloc(dev));
    const stray = new Device({ name: "stray", rid: pciRid(3, 0, 0) });
    expect(iommuAttachDevice(d, stray)).toBe("ENODEV");
    expect(iommuDetachDevice(d, stray)).toBe("ENODEV");
    expect(iommuPagingDomainAlloc(stray)).toBe("ENODEV");
    // A device with a firmware description that was not probed yet is no better.
    expect(iommuFwspecInit(stray, m.subsys, m.driver)).toBe(0);
    expect(iommuAttachDevice(d, stray)).toBe("ENODEV");
  });

  it("an empty group returns ENODEV", () => {
    const { m, dev } = oneDevice();
    const d = ok(iommuPagingDomainAlloc(dev));
    const empty = ok(iommuGroupAlloc(m.subsys));
    expect(iommuAttachGroup(d, empty)).toBe("ENODEV");
    expect(iommuGroupReplaceDomain(empty, d)).toBe("ENODEV");
    m.subsys.groupIds.free(empty.id);
  });

  it("detach returns the device to its default domain", () => {
    const { m, dev, group } = oneDevice();
    const def = group.defaultDomain as IommuDomain;
    expect(iommuMap(def, IOVA, frameWith(m, [6]), 4096, RW)).toBe(0);
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(dmaRead(dev, IOVA, 1).status).toBe(DMA_FAULT);
    expect(iommuDetachDevice(d, dev)).toBe(0);
    expect(group.domain).toBe(def);
    expect(dmaRead(dev, IOVA, 1)).toEqual({ status: DMA_OK, bytes: [6] });
    // Away no more: another domain may be attached now.
    expect(iommuAttachDevice(ok(iommuPagingDomainAlloc(dev)), dev)).toBe(0);
  });

  it("detach with a domain that is not attached returns EINVAL and changes nothing", () => {
    const { dev, group } = oneDevice();
    const d1 = ok(iommuPagingDomainAlloc(dev));
    const d2 = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevice(d1, dev)).toBe(0);
    expect(iommuDetachDevice(d2, dev)).toBe("EINVAL");
    expect(iommuDetachGroup(d2, group)).toBe("EINVAL");
    expect(group.domain).toBe(d1);
  });

  it("detach while a user owns the group goes to the blocking domain, not the default", () => {
    const { m, dev, group } = oneDevice();
    const def = group.defaultDomain as IommuDomain;
    expect(iommuMap(def, IOVA, frameWith(m, [6]), 4096, RW)).toBe(0);
    const owner = {};
    expect(iommuGroupClaimDmaOwner(group, owner)).toBe(0);
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(iommuDetachDevice(d, dev)).toBe(0);
    expect(group.domain).toBe(group.blockingDomain);
    expect(group.domain).toBe(m.driver.blockedDomain);
    expect(dmaRead(dev, IOVA, 1).status).toBe(DMA_FAULT);
  });

  it("a freed attached domain's ID comes back after detach", () => {
    const { m, dev } = oneDevice();
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(m.driver.didsInUse).toBe(2);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(iommuDetachDevice(d, dev)).toBe(0);
    iommuDomainFree(d);
    expect(m.driver.didsInUse).toBe(1);
  });
});

describe("replace", () => {
  function owned() {
    const m = new MockMachine();
    const dev = plugMock(m, "nic", pciRid(1, 0, 0));
    const group = iommuGroupGet(dev) as IommuGroup;
    expect(iommuGroupClaimDmaOwner(group, {})).toBe(0);
    return { m, dev, group };
  }

  it("moves the group from one domain straight to another, where attach says EBUSY", () => {
    const { m, dev, group } = owned();
    const d1 = ok(iommuPagingDomainAlloc(dev));
    const d2 = ok(iommuPagingDomainAlloc(dev));
    expect(iommuMap(d2, IOVA, frameWith(m, [2]), 4096, RW)).toBe(0);
    expect(iommuAttachGroup(d1, group)).toBe(0);
    expect(iommuAttachGroup(d2, group)).toBe("EBUSY");
    expect(iommuGroupReplaceDomain(group, d2)).toBe(0);
    expect(group.domain).toBe(d2);
    expect(dmaRead(dev, IOVA, 1)).toEqual({ status: DMA_OK, bytes: [2] });
  });

  it("replacing with the attached domain is a no-op that succeeds", () => {
    const { dev, group } = owned();
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuGroupReplaceDomain(group, d)).toBe(0);
    expect(iommuGroupReplaceDomain(group, d)).toBe(0);
    expect(group.domain).toBe(d);
  });

  it("a failed replace keeps the old domain, and DMA still goes through it", () => {
    const { m, dev, group } = owned();
    const d1 = ok(iommuPagingDomainAlloc(dev));
    expect(iommuMap(d1, IOVA, frameWith(m, [1]), 4096, RW)).toBe(0);
    expect(iommuGroupReplaceDomain(group, d1)).toBe(0);
    const d2 = ok(iommuPagingDomainAlloc(dev));
    failAttachFor(d2, dev, "ENOMEM");
    expect(iommuGroupReplaceDomain(group, d2)).toBe("ENOMEM");
    expect(group.domain).toBe(d1);
    expect(dmaRead(dev, IOVA, 1)).toEqual({ status: DMA_OK, bytes: [1] });
  });

  it("replacing with a domain of another driver returns EINVAL", () => {
    const { dev, group } = owned();
    const other = new MockMachine({ seed: 3 });
    const foreign = ok(iommuPagingDomainAlloc(plugMock(other, "x", pciRid(1, 0, 0))));
    const before = group.domain;
    expect(iommuGroupReplaceDomain(group, foreign)).toBe("EINVAL");
    expect(group.domain).toBe(before);
    expect(dev.iommu?.group).toBe(group);
  });
});

describe("DMA ownership", () => {
  function setup(extra: Partial<DeviceOptions> = {}) {
    const m = new MockMachine();
    const dev = plugMock(m, "nic", pciRid(1, 0, 0), extra);
    const group = iommuGroupGet(dev) as IommuGroup;
    const def = group.defaultDomain as IommuDomain;
    expect(iommuMap(def, IOVA, frameWith(m, [8]), 4096, RW)).toBe(0);
    return { m, dev, group, def };
  }

  it("claiming a group moves it to the blocking domain, where its DMA faults", () => {
    const { m, dev, group } = setup();
    const owner = {};
    expect(iommuGroupClaimDmaOwner(group, owner)).toBe(0);
    expect(group.owner).toBe(owner);
    expect(iommuGroupDmaOwnerClaimed(group)).toBe(true);
    expect(group.blockingDomain).toBe(m.driver.blockedDomain);
    expect(group.domain).toBe(group.blockingDomain);
    expect(dmaRead(dev, IOVA, 1).status).toBe(DMA_FAULT);
  });

  it("an owner may attach its own domain from the blocking domain", () => {
    const { m, dev, group } = setup();
    expect(iommuGroupClaimDmaOwner(group, {})).toBe(0);
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuMap(d, IOVA, frameWith(m, [4]), 4096, RW)).toBe(0);
    expect(iommuAttachGroup(d, group)).toBe(0);
    expect(dmaRead(dev, IOVA, 1)).toEqual({ status: DMA_OK, bytes: [4] });
  });

  it("claiming while a kernel driver uses the default domain returns EPERM", () => {
    const { dev, group, def } = setup();
    expect(iommuDeviceUseDefaultDomain(dev)).toBe(0);
    expect(iommuGroupClaimDmaOwner(group, {})).toBe("EPERM");
    expect(iommuDeviceClaimDmaOwner(dev, {})).toBe("EPERM");
    expect(group.owner).toBeNull();
    expect(group.domain).toBe(def);
  });

  it("a second owner is refused with EPERM, through the group or a device", () => {
    const { dev, group } = setup();
    const first = {};
    expect(iommuGroupClaimDmaOwner(group, first)).toBe(0);
    expect(iommuGroupClaimDmaOwner(group, first)).toBe("EPERM");
    expect(iommuGroupClaimDmaOwner(group, {})).toBe("EPERM");
    expect(iommuDeviceClaimDmaOwner(dev, {})).toBe("EPERM");
    expect(group.owner).toBe(first);
  });

  it("claiming while the group is away from its default domain returns EBUSY", () => {
    const { dev, group } = setup();
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(iommuGroupClaimDmaOwner(group, {})).toBe("EBUSY");
    expect(iommuDeviceClaimDmaOwner(dev, {})).toBe("EBUSY");
    expect(group.owner).toBeNull();
    expect(group.ownerCnt).toBe(0);
    expect(group.domain).toBe(d);
  });

  it("claiming while a PASID is attached returns EBUSY", () => {
    const { dev, group, def } = setup({ pasidBits: 8 });
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevicePasid(d, dev, 5)).toBe(0);
    expect(iommuGroupClaimDmaOwner(group, {})).toBe("EBUSY");
    expect(iommuDeviceClaimDmaOwner(dev, {})).toBe("EBUSY");
    expect(group.domain).toBe(def);
    expect(iommuDetachDevicePasid(d, dev, 5)).toBe(0);
    expect(iommuGroupClaimDmaOwner(group, {})).toBe(0);
  });

  it("the same owner claims through devices several times; the last release returns the default", () => {
    const { dev, group, def } = setup();
    const owner = {};
    expect(iommuDeviceClaimDmaOwner(dev, owner)).toBe(0);
    expect(iommuDeviceClaimDmaOwner(dev, owner)).toBe(0);
    expect(group.ownerCnt).toBe(2);
    expect(iommuDeviceReleaseDmaOwner(dev)).toBe(0);
    expect(group.owner).toBe(owner);
    expect(group.domain).toBe(group.blockingDomain);
    expect(dmaRead(dev, IOVA, 1).status).toBe(DMA_FAULT);
    expect(iommuDeviceReleaseDmaOwner(dev)).toBe(0);
    expect(group.owner).toBeNull();
    expect(group.ownerCnt).toBe(0);
    expect(group.domain).toBe(def);
    expect(dmaRead(dev, IOVA, 1)).toEqual({ status: DMA_OK, bytes: [8] });
    expect(iommuDeviceReleaseDmaOwner(dev)).toBe("EINVAL");
  });

  it("releasing returns the group from whatever the owner attached to the default domain", () => {
    const { dev, group, def } = setup();
    expect(iommuGroupClaimDmaOwner(group, {})).toBe(0);
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachGroup(d, group)).toBe(0);
    expect(iommuGroupReleaseDmaOwner(group)).toBe(0);
    expect(iommuGroupDmaOwnerClaimed(group)).toBe(false);
    expect(group.domain).toBe(def);
    expect(dmaRead(dev, IOVA, 1)).toEqual({ status: DMA_OK, bytes: [8] });
  });

  it("releasing a group nobody owns returns EINVAL", () => {
    const { dev, group } = setup();
    expect(iommuGroupReleaseDmaOwner(group)).toBe("EINVAL");
    expect(iommuDeviceReleaseDmaOwner(dev)).toBe("EINVAL");
    // Kernel drivers' use of the default domain is not ownership.
    expect(iommuDeviceUseDefaultDomain(dev)).toBe(0);
    expect(iommuGroupReleaseDmaOwner(group)).toBe("EINVAL");
    expect(iommuDeviceReleaseDmaOwner(dev)).toBe("EINVAL");
    expect(group.ownerCnt).toBe(1);
  });

  it("releasing while the owner has PASIDs attached returns EINVAL and keeps ownership", () => {
    const { dev, group } = setup({ pasidBits: 8 });
    const owner = {};
    expect(iommuGroupClaimDmaOwner(group, owner)).toBe(0);
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevicePasid(d, dev, 3)).toBe(0);
    expect(iommuGroupReleaseDmaOwner(group)).toBe("EINVAL");
    expect(iommuDeviceReleaseDmaOwner(dev)).toBe("EINVAL");
    expect(group.owner).toBe(owner);
    expect(group.domain).toBe(group.blockingDomain);
    expect(iommuDetachDevicePasid(d, dev, 3)).toBe(0);
    expect(iommuGroupReleaseDmaOwner(group)).toBe(0);
  });

  it("device claim and release of an unprobed device return ENODEV", () => {
    const stray = new Device({ name: "stray", rid: pciRid(3, 0, 0) });
    expect(iommuDeviceClaimDmaOwner(stray, {})).toBe("ENODEV");
    expect(iommuDeviceReleaseDmaOwner(stray)).toBe("ENODEV");
  });

  it("claiming an empty group returns ENODEV", () => {
    const m = new MockMachine();
    const empty = ok(iommuGroupAlloc(m.subsys));
    expect(iommuGroupClaimDmaOwner(empty, {})).toBe("ENODEV");
  });
});

describe("kernel drivers using the default domain", () => {
  function setup(extra: Partial<DeviceOptions> = {}) {
    const m = new MockMachine();
    const dev = plugMock(m, "nic", pciRid(1, 0, 0), extra);
    return { m, dev, group: iommuGroupGet(dev) as IommuGroup };
  }

  it("several kernel drivers may use the default domain together", () => {
    const { dev, group } = setup();
    expect(iommuDeviceUseDefaultDomain(dev)).toBe(0);
    expect(iommuDeviceUseDefaultDomain(dev)).toBe(0);
    expect(group.ownerCnt).toBe(2);
    expect(group.owner).toBeNull();
    expect(iommuDeviceUnuseDefaultDomain(dev)).toBe(0);
    expect(iommuDeviceUnuseDefaultDomain(dev)).toBe(0);
    expect(group.ownerCnt).toBe(0);
  });

  it("using the default domain while a user owns the group returns EBUSY", () => {
    const { dev, group } = setup();
    expect(iommuGroupClaimDmaOwner(group, {})).toBe(0);
    expect(iommuDeviceUseDefaultDomain(dev)).toBe("EBUSY");
    expect(group.ownerCnt).toBe(1);
  });

  it("the first user may bind while the group is away from its default; a second gets EBUSY", () => {
    const { dev, group } = setup();
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(iommuDeviceUseDefaultDomain(dev)).toBe(0);
    expect(iommuDeviceUseDefaultDomain(dev)).toBe("EBUSY");
    expect(group.ownerCnt).toBe(1);
  });

  it("a second user gets EBUSY while a PASID is attached", () => {
    const { dev, group } = setup({ pasidBits: 8 });
    expect(iommuDeviceUseDefaultDomain(dev)).toBe(0);
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevicePasid(d, dev, 1)).toBe(0);
    expect(iommuDeviceUseDefaultDomain(dev)).toBe("EBUSY");
    expect(group.ownerCnt).toBe(1);
  });

  it("unuse without a use returns EINVAL", () => {
    const { dev, group } = setup();
    expect(iommuDeviceUnuseDefaultDomain(dev)).toBe("EINVAL");
    expect(group.ownerCnt).toBe(0);
  });

  it("unuse while a user owns the group returns EINVAL and keeps the ownership", () => {
    const { dev, group } = setup();
    expect(iommuGroupClaimDmaOwner(group, {})).toBe(0);
    expect(iommuDeviceUnuseDefaultDomain(dev)).toBe("EINVAL");
    expect(group.ownerCnt).toBe(1);
  });

  it("unuse while a PASID is attached returns EINVAL", () => {
    const { dev, group } = setup({ pasidBits: 8 });
    expect(iommuDeviceUseDefaultDomain(dev)).toBe(0);
    const d = ok(iommuPagingDomainAlloc(dev));
    expect(iommuAttachDevicePasid(d, dev, 1)).toBe(0);
    expect(iommuDeviceUnuseDefaultDomain(dev)).toBe("EINVAL");
    expect(group.ownerCnt).toBe(1);
    expect(iommuDetachDevicePasid(d, dev, 1)).toBe(0);
    expect(iommuDeviceUnuseDefaultDomain(dev)).toBe(0);
  });

  it("a device without a group may always bind and unbind", () => {
    const stray = new Device({ name: "stray", rid: pciRid(3, 0, 0) });
    expect(iommuDeviceUseDefaultDomain(stray)).toBe(0);
    expect(iommuDeviceUnuseDefaultDomain(stray)).toBe(0);
  });
});

describe("release", () => {
  it("releasing the last device frees the default domain, the group number and the domain IDs", () => {
    const m = new MockMachine();
    const frames = m.frames.liveAllocations;
    const dev = plugMock(m, "nic", pciRid(1, 0, 0));
    const group = iommuGroupGet(dev) as IommuGroup;
    expect(m.driver.didsInUse).toBe(1);
    expect(m.subsys.groupIds.size).toBe(1);
    expect(iommuReleaseDevice(dev)).toBe(0);
    expect(group.defaultDomain).toBeNull();
    expect(group.domain).toBeNull();
    expect(group.devices).toEqual([]);
    expect(iommuGroupGet(dev)).toBeNull();
    expect(m.subsys.groupIds.size).toBe(0);
    expect(m.driver.didsInUse).toBe(0);
    expect(m.frames.liveAllocations).toBe(frames);
  });

  it("a released device's DMA is blocked", () => {
    const m = new MockMachine({ defaultDomain: "identity" });
    const dev = plugMock(m, "nic", pciRid(1, 0, 0));
    const pa = frameWith(m, [1]);
    expect(dmaRead(dev, pa, 1).status).toBe(DMA_OK);
    expect(iommuReleaseDevice(dev)).toBe(0);
    expect(dmaRead(dev, pa, 1).status).toBe(DMA_FAULT);
  });

  it("releasing after ownership frees the blocking domain only if it is not the static one", () => {
    const m = new MockMachine();
    const dev = plugMock(m, "nic", pciRid(1, 0, 0));
    const group = iommuGroupGet(dev) as IommuGroup;
    expect(iommuGroupClaimDmaOwner(group, {})).toBe(0);
    expect(iommuGroupReleaseDmaOwner(group)).toBe(0);
    expect(iommuReleaseDevice(dev)).toBe(0);
    expect(group.blockingDomain).toBeNull();
    // The driver's static blocked domain survives and still works for other devices.
    const other = plugMock(m, "other", pciRid(1, 1, 0));
    const g2 = iommuGroupGet(other) as IommuGroup;
    expect(iommuGroupClaimDmaOwner(g2, {})).toBe(0);
    expect(g2.domain).toBe(m.driver.blockedDomain);
  });

  it("a driver without a blocked domain gets an empty paging domain as blocking, freed on release", () => {
    const m = new MockMachine();
    const ops = mockOps(m.driver, { blockedDomain: undefined });
    const dev = plugWith(m, ops, "nic", pciRid(1, 0, 0));
    const group = iommuGroupGet(dev) as IommuGroup;
    expect(m.driver.didsInUse).toBe(1);
    expect(iommuGroupClaimDmaOwner(group, {})).toBe(0);
    expect(group.blockingDomain?.isPaging).toBe(true);
    expect(m.driver.didsInUse).toBe(2);
    expect(dmaRead(dev, IOVA, 1).status).toBe(DMA_FAULT);
    expect(iommuGroupReleaseDmaOwner(group)).toBe(0);
    expect(iommuReleaseDevice(dev)).toBe(0);
    expect(m.driver.didsInUse).toBe(0);
    expect(m.subsys.groupIds.size).toBe(0);
  });
});
