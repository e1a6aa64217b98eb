// The example of the package README, run as written: its comments state the results.

import { VtdMachine } from "@iommu-sim/intel-vtd/testing";
import { ChargeTree } from "@iommu-sim/ioasid";
import {
  DMA_OK,
  DMA_PAGE_REQUESTED,
  IOMMU_DEV_FEAT_IOPF,
  iommuDevEnableFeature,
} from "@iommu-sim/iommu-core";
import { expect, it } from "vitest";
import {
  iommuSvaBindDevice,
  iommuSvaGetPasid,
  iommuSvaUnbindDevice,
  Mm,
  PROT_READ,
  PROT_WRITE,
} from "../src/index.js";

it("the README example returns what its comments say", () => {
  const charges = new ChargeTree({ capacity: 1 << 20 });
  const m = new VtdMachine({ charges });
  const alice = charges.createNode(charges.root, "uid-1000", 1);
  if (typeof alice === "string") throw new Error(alice);

  // A process: an x86-64 address space whose page table the IOMMU will walk as it is.
  const mm = new Mm({
    name: "proc",
    mem: m.mem,
    frames: m.frames,
    format: "x86-64",
    charge: alice,
  });
  const buf = mm.mmap(0, 4 * 4096, PROT_READ | PROT_WRITE);
  expect(buf).toBe(0x1000_0000);

  // A PRI-capable accelerator, its faults going through the IOMMU's fault queue.
  const dev = m.addDevice({ name: "accel0", rid: 0x18, pasidBits: 20, ats: true, pri: true });
  if (typeof dev === "string") throw new Error(dev);
  expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);

  const bond = iommuSvaBindDevice(dev, mm);
  if (typeof bond === "string") throw new Error(bond);
  const pasid = iommuSvaGetPasid(bond);
  expect(pasid).toBe(1); // the mm's PASID, from the one global space
  expect(alice.current).toBe(1); // charged to the user where it was attached

  // The page was never touched: the device's write becomes a page request, the SVA handler
  // faults the page into the process, and the retried write lands in the process's memory.
  const bytes = new Uint8Array([1, 2, 3, 4]);
  expect(dev.write(buf as number, bytes, pasid)).toBe(DMA_PAGE_REQUESTED);
  m.processQueues();
  expect(dev.write(buf as number, bytes, pasid)).toBe(DMA_OK);
  const back = new Uint8Array(4);
  expect(mm.read(buf as number, back)).toBe(0);
  expect([...back]).toEqual([1, 2, 3, 4]);

  // munmap reaches the IOMMU through the mmu notifier: the device faults from then on.
  expect(mm.munmap(buf as number, 4 * 4096)).toBe(0);
  expect(dev.write(buf as number, bytes, pasid)).not.toBe(DMA_OK);
  m.processQueues();

  // Unbind keeps the PASID (the mm still lives); it goes with the mm.
  expect(iommuSvaUnbindDevice(bond)).toBe(0);
  expect(m.subsys.pasids.has(pasid)).toBe(true);
  mm.exit();
  expect(m.subsys.pasids.has(pasid)).toBe(false);
  expect(alice.current).toBe(0);
});
