// Tests of the DMA API: IOVA use, strict and flush-queue unmap, scatter lists, DMA with a PASID.

import { beforeEach, describe, expect, test } from "vitest";
import { Device, DMA_FAULT, DMA_OK } from "../device/device.js";
import { FaultKind, NO_PASID } from "../device/iommu-hardware.js";
import { MockFault } from "../mock/mock-format.js";
import type { MockDomain } from "../mock/mock-iommu.js";
import { MockMachine } from "../testing/mock-machine.js";
import {
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
  dmaInfoToProt,
  IOVA_DEFAULT_FQ_SIZE,
  IOVA_DEFAULT_FQ_TIMEOUT,
  type IommuDmaCookie,
  iommuDmaDisablePasid,
  iommuDmaEnablePasid,
  iommuDmaMapPhys,
  iommuDmaMapSg,
  iommuDmaUnmapPhys,
  iommuDmaUnmapSg,
  iommuGetDmaDomain,
} from "./dma-iommu.js";
import { IOMMU_READ, IOMMU_WRITE } from "./io-pgtable.js";
import { IOMMU_DOMAIN_DMA, IOMMU_DOMAIN_DMA_FQ } from "./iommu-domain.js";
import { iommuIovaToPhys } from "./iommu-map.js";

const SZ_4K = 0x1000;
const SZ_1G = 0x4000_0000;
const TWO32 = 2 ** 32;
/** Buffers live at 4 GiB and up, well away from the frames that hold tables. */
const PA = 0x1_0000_0000;
const BIDI = DMA_BIDIRECTIONAL;

function addDevice(
  m: MockMachine,
  name: string,
  rid: number,
  extra: Partial<ConstructorParameters<typeof Device>[0]> = {},
): Device {
  const dev = m.addDevice({ name, rid, ...extra });
  if (typeof dev === "string") throw new Error(`addDevice ${name}: ${dev}`);
  return dev;
}

function cookieOf(dev: Device): IommuDmaCookie {
  return (iommuGetDmaDomain(dev) as MockDomain).iovaCookie as IommuDmaCookie;
}

/** Map for DMA and expect an address. */
function map(dev: Device, pa: number, size: number, dir = BIDI): number {
  const dma = iommuDmaMapPhys(dev, pa, size, dir);
  if (typeof dma === "string") throw new Error(`map 0x${pa.toString(16)}: ${dma}`);
  return dma;
}

describe("strict domain", () => {
  let m: MockMachine;
  let dev: Device;
  let domain: MockDomain;
  beforeEach(() => {
    m = new MockMachine();
    dev = addDevice(m, "nvme", 0x100);
    domain = iommuGetDmaDomain(dev) as MockDomain;
  });

  test("the default domain is a strict DMA domain", () => {
    expect(domain.type).toBe(IOMMU_DOMAIN_DMA);
  });

  test("a mapped buffer is reachable by the device's DMA at the address returned", () => {
    m.mem.write32(PA + 0x40, 0xc0ffee);
    const dma = map(dev, PA, SZ_4K);
    expect(dma).not.toBe(PA);
    expect(dev.read32(dma + 0x40)).toBe(DMA_OK);
    expect(dev.lo).toBe(0xc0ffee);
    expect(dev.write32(dma + 0x44, 0x1234)).toBe(DMA_OK);
    expect(m.mem.read32(PA + 0x44)).toBe(0x1234);
  });

  test("after unmap returns, DMA to the address faults: no stale IOTLB entry survives", () => {
    const dma = map(dev, PA, SZ_4K);
    expect(dev.read32(dma)).toBe(DMA_OK);
    expect(m.hw.iotlbHas(domain.did, NO_PASID, dma / SZ_4K)).toBe(true);
    expect(iommuDmaUnmapPhys(dev, dma, SZ_4K, BIDI)).toBe(0);
    expect(m.hw.iotlbHas(domain.did, NO_PASID, dma / SZ_4K)).toBe(false);
    expect(dev.read32(dma)).toBe(DMA_FAULT);
    expect([dev.lastFaultKind, dev.lastFaultCode]).toEqual([
      FaultKind.TRANSLATION,
      MockFault.NOT_PRESENT,
    ]);
  });

  test("the IOVA of an unmapped buffer is reused at once", () => {
    const dma = map(dev, PA, SZ_4K);
    expect(map(dev, PA + SZ_4K, SZ_4K)).not.toBe(dma);
    expect(iommuDmaUnmapPhys(dev, dma, SZ_4K, BIDI)).toBe(0);
    expect(map(dev, PA + 2 * SZ_4K, SZ_4K)).toBe(dma);
  });

  test("the direction sets the permission: to-device is read-only, from-device write-only", () => {
    expect(dmaInfoToProt(DMA_TO_DEVICE)).toBe(IOMMU_READ);
    expect(dmaInfoToProt(DMA_FROM_DEVICE)).toBe(IOMMU_WRITE);
    expect(dmaInfoToProt(BIDI)).toBe(IOMMU_READ | IOMMU_WRITE);
    const out = map(dev, PA, SZ_4K, DMA_TO_DEVICE);
    expect(dev.read32(out)).toBe(DMA_OK);
    expect(dev.write32(out, 1)).toBe(DMA_FAULT);
    expect(dev.lastFaultKind).toBe(FaultKind.PERMISSION);
    const into = map(dev, PA + SZ_4K, SZ_4K, DMA_FROM_DEVICE);
    expect(dev.write32(into, 1)).toBe(DMA_OK);
    expect(dev.read32(into)).toBe(DMA_FAULT);
  });

  test("the DMA address keeps the buffer's offset within the granule", () => {
    m.mem.write32(PA + 0x234, 0xabcd);
    const dma = map(dev, PA + 0x234, 100);
    expect(dma % SZ_4K).toBe(0x234);
    expect(dev.read32(dma)).toBe(DMA_OK);
    expect(dev.lo).toBe(0xabcd);
    expect(iommuDmaUnmapPhys(dev, dma, 100, BIDI)).toBe(0);
    expect(dev.read32(dma)).toBe(DMA_FAULT);
  });

  test("a buffer that crosses a page boundary maps both pages, and unmap takes both", () => {
    const src = new Uint8Array(0x20).map((_, i) => i + 1);
    expect(m.mem.writeBytes(PA + 0xff0, src, 0, src.length)).toBe(true);
    const dma = map(dev, PA + 0xff0, 0x20);
    expect(dma % SZ_4K).toBe(0xff0);
    const buf = new Uint8Array(0x20);
    expect(dev.read(dma, buf)).toBe(DMA_OK);
    expect(buf).toEqual(src);
    expect(iommuDmaUnmapPhys(dev, dma, 0x20, BIDI)).toBe(0);
    expect(dev.read32(dma)).toBe(DMA_FAULT);
    expect(dev.read32(dma + 0x10)).toBe(DMA_FAULT);
  });

  test("unmapping an address that is not mapped: EINVAL", () => {
    const dma = map(dev, PA, SZ_4K);
    expect(iommuDmaUnmapPhys(dev, dma + 16 * SZ_4K, SZ_4K, BIDI)).toBe("EINVAL");
    expect(iommuDmaUnmapPhys(dev, dma, SZ_4K, BIDI)).toBe(0);
    expect(iommuDmaUnmapPhys(dev, dma, SZ_4K, BIDI)).toBe("EINVAL");
  });

  test("a zero or negative size: EINVAL", () => {
    expect(iommuDmaMapPhys(dev, PA, 0, BIDI)).toBe("EINVAL");
    expect(iommuDmaMapPhys(dev, PA, -SZ_4K, BIDI)).toBe("EINVAL");
  });
});

describe("lazy domain", () => {
  let m: MockMachine;
  let dev: Device;
  let domain: MockDomain;
  let cookie: IommuDmaCookie;
  beforeEach(() => {
    m = new MockMachine({ strict: false });
    dev = addDevice(m, "nic", 0x100);
    domain = iommuGetDmaDomain(dev) as MockDomain;
    map(dev, PA, SZ_4K); // sets up the cookie's allocator and flush queue
    cookie = cookieOf(dev);
  });

  test("the default domain is a DMA-FQ domain with a flush queue", () => {
    expect(domain.type).toBe(IOMMU_DOMAIN_DMA_FQ);
    expect(cookie.fq).not.toBeNull();
    expect(cookie.fq?.size).toBe(IOVA_DEFAULT_FQ_SIZE);
  });

  test("right after unmap the IOVA is not reused and the stale IOTLB entry may still translate", () => {
    m.mem.write32(PA + SZ_4K, 0x5a5a);
    const dma = map(dev, PA + SZ_4K, SZ_4K);
    expect(dev.read32(dma)).toBe(DMA_OK);
    expect(iommuDmaUnmapPhys(dev, dma, SZ_4K, BIDI)).toBe(0);
    // The table no longer maps it, but nothing was invalidated: that is the lazy contract.
    expect(iommuIovaToPhys(domain, dma)).toBe(-1);
    expect(dev.read32(dma)).toBe(DMA_OK);
    expect(dev.lo).toBe(0x5a5a);
    expect(cookie.fq?.length).toBe(1);
    expect(cookie.fq?.flushes).toBe(0);
    expect(map(dev, PA + 2 * SZ_4K, SZ_4K)).not.toBe(dma);
  });

  test("when the timeout passes the queue flushes: DMA faults and the IOVA is reusable", () => {
    const dma = map(dev, PA + SZ_4K, SZ_4K);
    expect(dev.read32(dma)).toBe(DMA_OK);
    expect(iommuDmaUnmapPhys(dev, dma, SZ_4K, BIDI)).toBe(0);
    m.clock.advance(IOVA_DEFAULT_FQ_TIMEOUT - 1);
    expect(cookie.fq?.flushes).toBe(0);
    expect(dev.read32(dma)).toBe(DMA_OK);
    m.clock.advance(1);
    expect(cookie.fq?.flushes).toBe(1);
    expect(cookie.fq?.length).toBe(0);
    expect(m.hw.iotlbHas(domain.did, NO_PASID, dma / SZ_4K)).toBe(false);
    expect(dev.read32(dma)).toBe(DMA_FAULT);
    expect(map(dev, PA + 2 * SZ_4K, SZ_4K)).toBe(dma);
  });

  test("the timer is armed by the first entry of an empty queue, not re-armed by later ones", () => {
    const a = map(dev, PA + SZ_4K, SZ_4K);
    const b = map(dev, PA + 2 * SZ_4K, SZ_4K);
    expect(iommuDmaUnmapPhys(dev, a, SZ_4K, BIDI)).toBe(0);
    m.clock.advance(IOVA_DEFAULT_FQ_TIMEOUT / 2);
    expect(iommuDmaUnmapPhys(dev, b, SZ_4K, BIDI)).toBe(0);
    m.clock.advance(IOVA_DEFAULT_FQ_TIMEOUT / 2);
    expect(cookie.fq?.flushes).toBe(1);
    expect(cookie.fq?.length).toBe(0);
    expect(m.clock.pending).toBe(0);
  });

  test("the unmap that finds 255 entries waiting flushes: the ring keeps one of its 256 slots free", () => {
    const dmas: number[] = [];
    for (let i = 0; i < IOVA_DEFAULT_FQ_SIZE; i++) dmas.push(map(dev, PA + i * SZ_4K, SZ_4K));
    expect(dev.read32(dmas[0])).toBe(DMA_OK);
    const iovad = cookie.iovad;
    if (iovad === null) throw new Error("no allocator");
    const live = iovad.liveCount;
    for (let i = 0; i < IOVA_DEFAULT_FQ_SIZE - 1; i++) {
      expect(iommuDmaUnmapPhys(dev, dmas[i], SZ_4K, BIDI)).toBe(0);
    }
    expect(cookie.fq?.length).toBe(IOVA_DEFAULT_FQ_SIZE - 1);
    expect(cookie.fq?.flushes).toBe(0);
    expect(iovad.liveCount).toBe(live);
    expect(dev.read32(dmas[0])).toBe(DMA_OK);
    expect(iommuDmaUnmapPhys(dev, dmas[IOVA_DEFAULT_FQ_SIZE - 1], SZ_4K, BIDI)).toBe(0);
    expect(cookie.fq?.flushes).toBe(1);
    expect(dev.read32(dmas[0])).toBe(DMA_FAULT);
    // The 255 flushed IOVAs are free again; the last one waits for the next flush.
    expect(cookie.fq?.length).toBe(1);
    expect(iovad.liveCount).toBe(live - (IOVA_DEFAULT_FQ_SIZE - 1));
    expect(dmas.slice(0, -1)).toContain(map(dev, PA, SZ_4K));
    // The timer armed by the first unmap still fires and takes the last one.
    m.clock.advance(IOVA_DEFAULT_FQ_TIMEOUT);
    expect(cookie.fq?.flushes).toBe(2);
    expect(cookie.fq?.length).toBe(0);
  });

  test("freeing the domain drains its flush queue and leaves nothing cached", () => {
    const dma = map(dev, PA + SZ_4K, SZ_4K);
    expect(dev.read32(dma)).toBe(DMA_OK);
    expect(iommuDmaUnmapPhys(dev, dma, SZ_4K, BIDI)).toBe(0);
    const did = domain.did;
    expect(m.removeDevice(dev)).toBe(0);
    expect(cookie.fq?.length).toBe(0);
    expect(m.hw.iotlbEntries().filter((e) => e.did === did)).toEqual([]);
    expect(m.clock.pending).toBe(0);
  });
});

describe("IOVA space", () => {
  test("a PCI device gets 32-bit IOVAs first, a platform device the top of the aperture", () => {
    const m = new MockMachine();
    const pci = addDevice(m, "pci", 0x200);
    const plat = addDevice(m, "plat", 0x300, { isPci: false });
    expect(pci.iommu?.dmaMask).toBe(2 ** 64);
    expect(map(pci, PA, SZ_4K)).toBe(TWO32 - SZ_4K);
    expect(map(plat, PA, SZ_4K)).toBe(2 ** 48 - SZ_4K);
  });

  test("a PCI device that ran out of 32-bit IOVAs goes 64-bit, and stays there", () => {
    const m = new MockMachine();
    const pci = addDevice(m, "pci", 0x200);
    // Three 1 GiB buffers fill the 32-bit space (the lowest gigabyte holds page 0, never used).
    const low = [0, 1, 2].map((i) => map(pci, 8 * SZ_1G + i * SZ_1G, SZ_1G));
    expect(low.every((a) => a < TWO32)).toBe(true);
    expect(pci.iommu?.pci32bitWorkaround).toBe(true);
    const high = map(pci, 12 * SZ_1G, SZ_1G);
    expect(high).toBeGreaterThanOrEqual(TWO32);
    expect(pci.iommu?.pci32bitWorkaround).toBe(false);
    // Even with 32-bit room again, new buffers stay above 4 GiB.
    expect(iommuDmaUnmapPhys(pci, low[0], SZ_1G, BIDI)).toBe(0);
    expect(map(pci, PA, SZ_4K)).toBeGreaterThanOrEqual(TWO32);
  });

  test("IOVAs stay below the DMA mask, and a full space fails the map with ENOMEM", () => {
    const m = new MockMachine();
    const dev = addDevice(m, "dev", 0x200);
    if (dev.iommu === null) throw new Error("not probed");
    dev.iommu.dmaMask = 2 ** 20 - 1; // 256 pages, page 0 never used
    const dmas: number[] = [];
    for (let i = 0; i < 255; i++) dmas.push(map(dev, PA + i * SZ_4K, SZ_4K));
    expect(Math.max(...dmas)).toBe(2 ** 20 - SZ_4K);
    expect(Math.min(...dmas)).toBe(SZ_4K);
    expect(iommuDmaMapPhys(dev, PA, SZ_4K, BIDI)).toBe("ENOMEM");
    expect(iommuDmaMapSg(dev, [{ pa: PA, length: 8 }], BIDI)).toBe("ENOMEM");
    expect(iommuDmaUnmapPhys(dev, dmas[7], SZ_4K, BIDI)).toBe(0);
    expect(map(dev, PA, SZ_4K)).toBe(dmas[7]);
  });

  test("an identity default domain has no DMA API: ENODEV, and DMA goes to the physical address", () => {
    const m = new MockMachine({ defaultDomain: "identity" });
    const dev = addDevice(m, "dev", 0x200);
    expect(iommuDmaMapPhys(dev, PA, SZ_4K, BIDI)).toBe("ENODEV");
    expect(iommuDmaUnmapPhys(dev, PA, SZ_4K, BIDI)).toBe("ENODEV");
    expect(iommuDmaMapSg(dev, [{ pa: PA, length: SZ_4K }], BIDI)).toBe("ENODEV");
    expect(iommuDmaUnmapSg(dev, [{ pa: PA, length: SZ_4K }], [PA], BIDI)).toBe("ENODEV");
    m.mem.write32(PA, 77);
    expect(dev.read32(PA)).toBe(DMA_OK);
    expect(dev.lo).toBe(77);
  });

  test("a device no IOMMU probed: ENODEV", () => {
    const dev = new Device({ name: "lonely", rid: 0x400 });
    expect(iommuDmaMapPhys(dev, PA, SZ_4K, BIDI)).toBe("ENODEV");
    expect(iommuDmaEnablePasid(dev)).toBe("ENODEV");
    expect(iommuDmaDisablePasid(dev)).toBe("ENODEV");
  });
});

describe("scatter lists", () => {
  let m: MockMachine;
  let dev: Device;
  beforeEach(() => {
    m = new MockMachine();
    dev = addDevice(m, "gpu", 0x100);
  });

  const sg = [
    { pa: PA + 0x100, length: 0x200 },
    { pa: PA + 0x10_0000, length: 0x3000 },
    { pa: PA + 0x20_0800, length: SZ_4K },
  ];

  test("entries map into one contiguous IOVA range, each keeping its offset", () => {
    for (const [i, s] of sg.entries()) m.mem.write32(s.pa, 0x100 + i);
    const dmas = iommuDmaMapSg(dev, sg, BIDI);
    if (typeof dmas === "string") throw new Error(dmas);
    expect(dmas).toHaveLength(3);
    expect(dmas.map((d) => d % SZ_4K)).toEqual([0x100, 0, 0x800]);
    // Each entry is padded to whole granules, and the next starts right after.
    expect(dmas[1] - dmas[0]).toBe(SZ_4K - 0x100);
    expect(dmas[2] - dmas[1]).toBe(0x3000 + 0x800);
    dmas.forEach((d, i) => {
      expect(dev.read32(d)).toBe(DMA_OK);
      expect(dev.lo).toBe(0x100 + i);
    });
    expect(dev.read32(dmas[2] + 0x7fc)).toBe(DMA_OK);
    expect(dev.read32(dmas[2] + 0x800)).toBe(DMA_OK); // the padding of the last page is mapped too
  });

  test("unmap_sg unmaps the whole range and the IOVA is free again", () => {
    const dmas = iommuDmaMapSg(dev, sg, BIDI);
    if (typeof dmas === "string") throw new Error(dmas);
    for (const d of dmas) expect(dev.read32(d)).toBe(DMA_OK);
    expect(iommuDmaUnmapSg(dev, sg, dmas, BIDI)).toBe(0);
    for (const d of dmas) expect(dev.read32(d)).toBe(DMA_FAULT);
    const again = iommuDmaMapSg(dev, sg, BIDI);
    expect(again).toEqual(dmas);
  });

  test("an empty list, a zero-length entry, or addresses that do not match the list: EINVAL", () => {
    expect(iommuDmaMapSg(dev, [], BIDI)).toBe("EINVAL");
    expect(iommuDmaMapSg(dev, [{ pa: PA, length: 0 }], BIDI)).toBe("EINVAL");
    const dmas = iommuDmaMapSg(dev, sg, BIDI);
    if (typeof dmas === "string") throw new Error(dmas);
    expect(iommuDmaUnmapSg(dev, sg, dmas.slice(1), BIDI)).toBe("EINVAL");
    expect(iommuDmaUnmapSg(dev, [], [], BIDI)).toBe("EINVAL");
  });
});

describe("DMA with a PASID", () => {
  let m: MockMachine;
  let dev: Device;
  let domain: MockDomain;
  beforeEach(() => {
    m = new MockMachine();
    dev = addDevice(m, "dsa", 0x100, { pasidBits: 8 });
    domain = iommuGetDmaDomain(dev) as MockDomain;
  });

  test("enable gives a PASID other than 0 through which DMA reaches the same mappings as the RID", () => {
    const pasid = iommuDmaEnablePasid(dev);
    if (typeof pasid === "string") throw new Error(pasid);
    expect(pasid).toBeGreaterThan(0);
    expect(pasid).toBeLessThan(256);
    expect(dev.iommu?.dmaPasid).toBe(pasid);
    expect(m.subsys.pasids.has(pasid)).toBe(true);
    m.mem.write32(PA, 0x9a51d);
    const dma = map(dev, PA, SZ_4K);
    expect(dev.read32(dma, pasid)).toBe(DMA_OK);
    expect(dev.lo).toBe(0x9a51d);
    expect(dev.read32(dma)).toBe(DMA_OK);
    expect(m.hw.iotlbHas(domain.did, pasid, dma / SZ_4K)).toBe(true);
  });

  test("a strict unmap invalidates the PASID's IOTLB entries too", () => {
    const pasid = iommuDmaEnablePasid(dev) as number;
    const dma = map(dev, PA, SZ_4K);
    expect(dev.read32(dma, pasid)).toBe(DMA_OK);
    expect(iommuDmaUnmapPhys(dev, dma, SZ_4K, BIDI)).toBe(0);
    expect(m.hw.iotlbHas(domain.did, pasid, dma / SZ_4K)).toBe(false);
    expect(dev.read32(dma, pasid)).toBe(DMA_FAULT);
  });

  test("enabling twice: EBUSY", () => {
    const pasid = iommuDmaEnablePasid(dev);
    expect(typeof pasid).toBe("number");
    expect(iommuDmaEnablePasid(dev)).toBe("EBUSY");
    expect(dev.iommu?.dmaPasid).toBe(pasid);
  });

  test("disable detaches the PASID, drops what the IOTLB holds for it, and frees it", () => {
    const pasid = iommuDmaEnablePasid(dev) as number;
    const dma = map(dev, PA, SZ_4K);
    expect(dev.read32(dma, pasid)).toBe(DMA_OK);
    expect(iommuDmaDisablePasid(dev)).toBe(0);
    expect(dev.iommu?.dmaPasid).toBe(0);
    expect(m.subsys.pasids.has(pasid)).toBe(false);
    expect(m.hw.iotlbHas(domain.did, pasid, dma / SZ_4K)).toBe(false);
    expect(dev.read32(dma, pasid)).toBe(DMA_FAULT);
    expect(dev.lastFaultCode).toBe(MockFault.PASID_ENTRY_INVALID);
    expect(dev.read32(dma)).toBe(DMA_OK);
    // Free, so the next enable may hand it out again.
    expect(iommuDmaEnablePasid(dev)).toBe(pasid);
  });

  test("disable without enable: EINVAL", () => {
    expect(iommuDmaDisablePasid(dev)).toBe("EINVAL");
    expect(iommuDmaEnablePasid(dev)).toBeTypeOf("number");
    expect(iommuDmaDisablePasid(dev)).toBe(0);
    expect(iommuDmaDisablePasid(dev)).toBe("EINVAL");
  });

  test("a device without PASIDs: ENODEV", () => {
    const plain = addDevice(m, "plain", 0x200);
    expect(iommuDmaEnablePasid(plain)).toBe("ENODEV");
    expect(plain.iommu?.dmaPasid).toBe(0);
  });
});
