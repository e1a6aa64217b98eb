// The README's example, run as written.

import { expect, it } from "vitest";
import { DMA_BIDIRECTIONAL, DMA_OK, iommuDmaMapPhys } from "../src/index.js";
import { MockMachine } from "../src/testing/index.js";

it("the README example reads back the bytes through the mock IOMMU", () => {
  const m = new MockMachine({ seed: 1 });
  const dev = m.addDevice({ name: "nic0", rid: 0x100 });
  if (typeof dev === "string") throw new Error(dev);
  const buf = m.frames.alloc(0) as number;
  m.mem.writeBytes(buf, new Uint8Array([1, 2, 3, 4]));
  const dma = iommuDmaMapPhys(dev, buf, 4, DMA_BIDIRECTIONAL) as number;
  const out = new Uint8Array(4);
  expect(dev.read(dma, out)).toBe(DMA_OK);
  expect([...out]).toEqual([1, 2, 3, 4]);
  // The DMA address is an IOVA, not the physical address: the IOMMU translated it.
  expect(dma).not.toBe(buf);
});
