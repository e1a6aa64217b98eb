// VtdUnit.inspect: what the unit's caches hold for a request, read without touching them.

import {
  AT_UNTRANSLATED,
  DMA_OK,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuAllocGlobalPasid,
  iommuAttachDevicePasid,
  iommuMap,
  iommuPagingDomainAllocFlags,
  newTranslationRequest,
} from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { VtdMachine } from "../testing/vtd-machine.js";
import { VTD_KIND_SECOND_STAGE, VTD_PASID_NONE } from "./iotlb.js";

const PAGE = 4096;
const IOVA = 0x4000_0000;

describe("VtdUnit.inspect", () => {
  it.each([
    ["second-stage", false],
    ["first-stage", true],
  ] as const)(
    "lists the paging-structure entries a PASID request through a %s table walks from",
    (_name, firstStage) => {
      const m = new VtdMachine({ firstStage });
      const dev = m.addDevice({ name: "d", rid: 0x18, pasidBits: 8 });
      if (typeof dev === "string") throw new Error(dev);
      const domain = iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC_PASID);
      if (typeof domain === "string") throw new Error(domain);
      const frame = m.frames.alloc(0);
      if (typeof frame === "string") throw new Error(frame);
      expect(iommuMap(domain, IOVA, frame, PAGE, IOMMU_READ | IOMMU_WRITE)).toBe(0);
      const pasid = iommuAllocGlobalPasid(dev);
      expect(iommuAttachDevicePasid(domain, dev, pasid)).toBe(0);
      expect(dev.read32(IOVA, pasid)).toBeGreaterThanOrEqual(0);
      expect(dev.stats.faults).toBe(0);
      expect(dev.lastStatus).toBe(DMA_OK);
      const req = newTranslationRequest();
      req.rid = dev.rid;
      req.sid = dev.sid;
      req.pasid = pasid;
      req.iovaPfn = IOVA / PAGE;
      req.at = AT_UNTRANSLATED;
      const ins = m.units[0]?.hw.inspect(req);
      expect(ins?.iotlb).not.toBeNull();
      expect(ins?.psc.length).toBeGreaterThan(0);
      for (const e of ins?.psc ?? []) {
        if (firstStage) expect(e.pasid).toBe(pasid);
        else expect([e.kind, e.pasid]).toEqual([VTD_KIND_SECOND_STAGE, VTD_PASID_NONE]);
      }
    },
  );
});
