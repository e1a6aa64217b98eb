// Checks the per-device IOMMU state: firmware description, probe (and its failures) and release.

import { describe, expect, it } from "vitest";
import { mockOps } from "../../test/helpers.js";
import { Device, type DeviceOptions } from "../device/device.js";
import { pciRid } from "../device/pci.js";
import { MockMachine } from "../testing/mock-machine.js";
import {
  devHasIommu,
  devIommu,
  deviceIommuCapable,
  iommuDevDisableFeature,
  iommuDevEnableFeature,
  iommuFwspecInit,
  iommuProbeDevice,
  iommuReleaseDevice,
} from "./dev-iommu.js";
import { IOMMU_DOMAIN_BLOCKED, IOMMU_DOMAIN_IDENTITY, IommuDomain } from "./iommu-domain.js";
import { iommuGroupGet } from "./iommu-group.js";
import {
  IOMMU_CAP_DEFERRED_FLUSH,
  IOMMU_CAP_DIRTY_TRACKING,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_DEV_FEAT_SVA,
  type IommuOps,
} from "./iommu-ops.js";

/** A device on the machine's bus, described by firmware as behind `ops`, not probed yet. */
function described(m: MockMachine, ops: IommuOps, extra: Partial<DeviceOptions> = {}): Device {
  const dev = new Device({ name: "dev", rid: pciRid(1, 0, 0), ...extra });
  expect(m.bus.addDevice(dev, m.hw)).toBe(0);
  expect(iommuFwspecInit(dev, m.subsys, ops)).toBe(0);
  return dev;
}

function plug(m: MockMachine, extra: Partial<DeviceOptions> = {}): Device {
  const dev = m.addDevice({ name: "dev", rid: pciRid(1, 0, 0), ...extra });
  if (typeof dev === "string") throw new Error(dev);
  return dev;
}

describe("iommuFwspecInit", () => {
  it("records the driver once; the same driver again returns 0", () => {
    const m = new MockMachine();
    const dev = new Device({ name: "dev", rid: pciRid(1, 0, 0) });
    expect(iommuFwspecInit(dev, m.subsys, m.driver)).toBe(0);
    const param = devIommu(dev);
    expect(param?.ops).toBe(m.driver);
    expect(param?.subsys).toBe(m.subsys);
    expect(iommuFwspecInit(dev, m.subsys, m.driver)).toBe(0);
    expect(devIommu(dev)).toBe(param);
  });

  it("another driver for a described device returns EINVAL and keeps the first", () => {
    const m = new MockMachine();
    const dev = new Device({ name: "dev", rid: pciRid(1, 0, 0) });
    expect(iommuFwspecInit(dev, m.subsys, m.driver)).toBe(0);
    expect(iommuFwspecInit(dev, m.subsys, mockOps(m.driver))).toBe("EINVAL");
    const other = new MockMachine({ seed: 2 });
    expect(iommuFwspecInit(dev, other.subsys, m.driver)).toBe("EINVAL");
    expect(devIommu(dev)?.ops).toBe(m.driver);
    expect(devIommu(dev)?.subsys).toBe(m.subsys);
  });

  it("a PCI device starts with the 32-bit IOVA workaround, a platform device without", () => {
    const m = new MockMachine();
    const pci = new Device({ name: "pci", rid: pciRid(1, 0, 0) });
    const plat = new Device({ name: "plat", rid: 0x20000, isPci: false });
    expect(iommuFwspecInit(pci, m.subsys, m.driver)).toBe(0);
    expect(iommuFwspecInit(plat, m.subsys, m.driver)).toBe(0);
    expect(devIommu(pci)?.pci32bitWorkaround).toBe(true);
    expect(devIommu(plat)?.pci32bitWorkaround).toBe(false);
  });
});

describe("iommuProbeDevice", () => {
  it("a device without a firmware description returns ENODEV", () => {
    const dev = new Device({ name: "dev", rid: pciRid(1, 0, 0) });
    expect(iommuProbeDevice(dev)).toBe("ENODEV");
    expect(dev.iommu).toBeNull();
    expect(devHasIommu(dev)).toBe(false);
  });

  it("a probed device has the instance that serves it, and a group", () => {
    const m = new MockMachine();
    const dev = plug(m);
    expect(devHasIommu(dev)).toBe(true);
    expect(devIommu(dev)?.iommuDev).toBe(m.driver.iommu);
    expect(iommuGroupGet(dev)).not.toBeNull();
  });

  it("probing a probed device again returns 0 and changes nothing", () => {
    const m = new MockMachine();
    const dev = plug(m);
    const group = iommuGroupGet(dev);
    const def = group?.defaultDomain;
    expect(iommuProbeDevice(dev)).toBe(0);
    expect(iommuGroupGet(dev)).toBe(group);
    expect(group?.defaultDomain).toBe(def);
    expect(group?.devices).toEqual([dev]);
    expect(m.subsys.groupIds.size).toBe(1);
    expect(m.driver.didsInUse).toBe(1);
  });

  it("maxPasids is the smaller of the device's and the IOMMU's PASID counts", () => {
    expect(devIommu(plug(new MockMachine(), { pasidBits: 8 }))?.maxPasids).toBe(256);
    expect(devIommu(plug(new MockMachine({ pasidBits: 4 }), { pasidBits: 8 }))?.maxPasids).toBe(16);
    expect(devIommu(plug(new MockMachine({ pasidBits: 4 }), { pasidBits: 3 }))?.maxPasids).toBe(8);
  });

  it("maxPasids is 0 when either side has no PASIDs", () => {
    expect(devIommu(plug(new MockMachine()))?.maxPasids).toBe(0);
    expect(devIommu(plug(new MockMachine({ pasidBits: 0 }), { pasidBits: 8 }))?.maxPasids).toBe(0);
  });

  it("probe_finalize runs last, once the device sits in its group and default domain", () => {
    const m = new MockMachine();
    const seen: unknown[] = [];
    const ops = mockOps(m.driver, {
      probeFinalize: (dev) => seen.push(iommuGroupGet(dev)?.domain ?? null),
    });
    const dev = described(m, ops);
    expect(iommuProbeDevice(dev)).toBe(0);
    expect(seen).toEqual([iommuGroupGet(dev)?.defaultDomain]);
    expect(seen[0]).not.toBeNull();
  });
});

describe("a failed probe leaves nothing behind", () => {
  function baseline(m: MockMachine) {
    return {
      frames: m.frames.liveAllocations,
      groups: m.subsys.groupIds.size,
      dids: m.driver.didsInUse,
    };
  }

  function expectNothingLeft(m: MockMachine, dev: Device, base: ReturnType<typeof baseline>) {
    expect(devHasIommu(dev)).toBe(false);
    expect(iommuGroupGet(dev)).toBeNull();
    expect(devIommu(dev)?.maxPasids ?? 0).toBe(0);
    expect(m.frames.liveAllocations).toBe(base.frames);
    expect(m.subsys.groupIds.size).toBe(base.groups);
    expect(m.driver.didsInUse).toBe(base.dids);
    expect(dev.pasidEnabled).toBe(false);
  }

  it("when the driver refuses the device, its errno comes back", () => {
    const m = new MockMachine();
    const base = baseline(m);
    const dev = described(m, mockOps(m.driver, { probeDevice: () => "ENODEV" }), { pasidBits: 8 });
    expect(iommuProbeDevice(dev)).toBe("ENODEV");
    expectNothingLeft(m, dev, base);
  });

  it("when no group can be had, the driver forgets the device again", () => {
    const m = new MockMachine();
    const base = baseline(m);
    let released = 0;
    const ops = mockOps(m.driver, {
      deviceGroup: () => "ENOMEM",
      releaseDevice: (d) => {
        released++;
        m.driver.releaseDevice(d);
      },
    });
    const dev = described(m, ops, { pasidBits: 8 });
    expect(iommuProbeDevice(dev)).toBe("ENOMEM");
    expect(released).toBe(1);
    expectNothingLeft(m, dev, base);
  });

  it("when the default domain cannot be set up, the group and its number are gone too", () => {
    const m = new MockMachine();
    const base = baseline(m);
    const ops = mockOps(m.driver, {
      identityDomain: undefined,
      defDomainType: () => IOMMU_DOMAIN_IDENTITY,
    });
    const dev = described(m, ops, { pasidBits: 8 });
    expect(iommuProbeDevice(dev)).toBe("EOPNOTSUPP");
    expectNothingLeft(m, dev, base);
  });

  it("when attaching the default domain fails, its domain ID is given back", () => {
    const m = new MockMachine();
    const base = baseline(m);
    const ops = mockOps(m.driver, {
      domainAllocPagingFlags: (d, flags) => {
        const domain = m.driver.domainAllocPagingFlags(d, flags);
        if (typeof domain === "string") return domain;
        domain.ops = { ...domain.ops, attachDev: () => "ENOSPC" };
        return domain;
      },
    });
    const dev = described(m, ops);
    expect(iommuProbeDevice(dev)).toBe("ENOSPC");
    expectNothingLeft(m, dev, base);
  });

  it("a device may be probed again after a failed probe", () => {
    const m = new MockMachine();
    let refuse = true;
    const ops = mockOps(m.driver, {
      probeDevice: (d) => (refuse ? "ENOMEM" : m.driver.probeDevice(d)),
    });
    const dev = described(m, ops);
    expect(iommuProbeDevice(dev)).toBe("ENOMEM");
    refuse = false;
    expect(iommuProbeDevice(dev)).toBe(0);
    expect(devHasIommu(dev)).toBe(true);
    expect(iommuGroupGet(dev)?.devices).toEqual([dev]);
  });
});

describe("iommuReleaseDevice", () => {
  it("a device that was never probed returns ENODEV", () => {
    const m = new MockMachine();
    const bare = new Device({ name: "bare", rid: pciRid(2, 0, 0) });
    expect(iommuReleaseDevice(bare)).toBe("ENODEV");
    const dev = described(m, m.driver);
    expect(iommuReleaseDevice(dev)).toBe("ENODEV");
  });

  it("a released device is unprobed: a second release returns ENODEV", () => {
    const m = new MockMachine();
    const base = m.frames.liveAllocations;
    const dev = plug(m, { pasidBits: 8 });
    expect(iommuReleaseDevice(dev)).toBe(0);
    expect(devHasIommu(dev)).toBe(false);
    expect(devIommu(dev)?.maxPasids).toBe(0);
    expect(iommuGroupGet(dev)).toBeNull();
    expect(m.frames.liveAllocations).toBe(base);
    expect(iommuReleaseDevice(dev)).toBe("ENODEV");
  });

  it("a released device may be probed again", () => {
    const m = new MockMachine();
    const dev = plug(m);
    expect(iommuReleaseDevice(dev)).toBe(0);
    expect(iommuProbeDevice(dev)).toBe(0);
    expect(devHasIommu(dev)).toBe(true);
    expect(m.subsys.groupIds.size).toBe(1);
    expect(m.driver.didsInUse).toBe(1);
  });

  it("the driver's release domain is attached before the driver forgets the device", () => {
    const m = new MockMachine();
    const events: string[] = [];
    const blocked = m.driver.blockedDomain;
    const releaseDomain = new IommuDomain(IOMMU_DOMAIN_BLOCKED, {
      attachDev: (_d, dev, old) => {
        events.push("release-domain");
        return blocked.ops.attachDev(blocked, dev, old);
      },
    });
    const ops = mockOps(m.driver, {
      releaseDomain,
      releaseDevice: (d) => {
        events.push("release-device");
        m.driver.releaseDevice(d);
      },
    });
    const dev = described(m, ops);
    expect(iommuProbeDevice(dev)).toBe(0);
    expect(iommuReleaseDevice(dev)).toBe(0);
    expect(events).toEqual(["release-domain", "release-device"]);
  });
});

describe("capabilities and features", () => {
  it("device_iommu_capable asks the driver once the device is probed, and is false before", () => {
    const m = new MockMachine();
    const dev = described(m, m.driver);
    expect(deviceIommuCapable(dev, IOMMU_CAP_DEFERRED_FLUSH)).toBe(false);
    expect(iommuProbeDevice(dev)).toBe(0);
    expect(deviceIommuCapable(dev, IOMMU_CAP_DEFERRED_FLUSH)).toBe(true);
    expect(deviceIommuCapable(dev, IOMMU_CAP_DIRTY_TRACKING)).toBe(false);
  });

  it("enabling a feature without a probed device or a driver op returns ENODEV", () => {
    const m = new MockMachine();
    const noFeatures = { devEnableFeat: undefined, devDisableFeat: undefined };
    const dev = described(m, mockOps(m.driver, noFeatures), { ats: true, pri: true, pasidBits: 8 });
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe("ENODEV");
    expect(iommuProbeDevice(dev)).toBe(0);
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe("ENODEV");
    expect(iommuDevDisableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe("EBUSY");
  });

  it("IOPF goes through the driver: on for a PRI device, refused for SVA by the mock", () => {
    const m = new MockMachine();
    const dev = m.addDevice({ name: "acc", rid: 0x300, ats: true, pri: true, pasidBits: 8 });
    if (typeof dev === "string") throw new Error(dev);
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(m.driver.iopfQueue.devices).toContain(dev);
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_SVA)).toBe("ENODEV");
    expect(iommuDevDisableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(m.driver.iopfQueue.devices).not.toContain(dev);
    expect(iommuDevDisableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe("EINVAL");
  });
});
