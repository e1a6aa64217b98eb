// decode smmu and translate smmu on tables the SMMUv3 driver wrote: every domain's mappings and
// every attachment (RID and PASIDs, stage 1 and stage 2, linear and 2-level stream and CD tables)
// read back as the driver made them, and translate agrees with the uncached walk on every page.

import { SMMU_REG } from "@iommu-sim/arm-smmu/format";
import type { SmmuFeatures, SmmuV3 } from "@iommu-sim/arm-smmu/hw";
import { SmmuMachine } from "@iommu-sim/arm-smmu/testing";
import {
  DMA_READ,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuAllocGlobalPasidOrErrno,
  iommuAttachDevice,
  iommuAttachDevicePasid,
  iommuMap,
  iommuPagingDomainAlloc,
  iommuPagingDomainAllocFlags,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { decodeSmmu, type SmmuDecodeDocument } from "./smmu-decode.js";
import { SmmuTranslator } from "./smmu-translate.js";

const PAGE = 4096;

function registers(hw: SmmuV3): { strtabBase: bigint; strtabCfg: bigint } {
  const lo = hw.read32(SMMU_REG.STRTAB_BASE);
  const hi = hw.read32(SMMU_REG.STRTAB_BASE + 4);
  return {
    strtabBase: (BigInt(hi) << 32n) | BigInt(lo),
    strtabCfg: BigInt(hw.read32(SMMU_REG.STRTAB_BASE_CFG)),
  };
}

function ok<T>(x: T | string): T {
  if (typeof x === "string") throw new Error(x);
  return x;
}

interface Built {
  m: SmmuMachine;
  hw: SmmuV3;
  /** (sid, ssid or null) → the domain and its mapped pages (iova → pa). */
  expected: { sid: number; ssid: number | null; domain: IommuDomain; pages: Map<number, number> }[];
}

function build(features: Partial<SmmuFeatures>): Built {
  const m = new SmmuMachine({ smmus: [{ features }] });
  const hw = m.smmus[0]?.hw as SmmuV3;
  const expected: Built["expected"] = [];
  const mapSome = (d: IommuDomain, base: number, n: number): Map<number, number> => {
    const pages = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const pa = ok(m.frames.alloc(0));
      expect(iommuMap(d, base + i * 2 * PAGE, pa, PAGE, IOMMU_READ | IOMMU_WRITE)).toBe(0);
      pages.set(base + i * 2 * PAGE, pa);
    }
    return pages;
  };
  // A stage-1 domain at a RID with two PASIDs; a stage-2 domain at another RID.
  const a = ok(m.addDevice({ name: "a", rid: 0x10, pasidBits: 12, ats: true }));
  const b = ok(m.addDevice({ name: "b", rid: 0x230 }));
  const d1 = ok(iommuPagingDomainAlloc(a));
  expect(iommuAttachDevice(d1, a)).toBe(0);
  expected.push({ sid: 0x10, ssid: null, domain: d1, pages: mapSome(d1, 0x10_0000, 5) });
  for (const base of [0x40_0000, 0x80_0000]) {
    const d = ok(iommuPagingDomainAlloc(a));
    const p = ok(iommuAllocGlobalPasidOrErrno(a));
    expect(iommuAttachDevicePasid(d, a, p)).toBe(0);
    expected.push({ sid: 0x10, ssid: p, domain: d, pages: mapSome(d, base, 3) });
  }
  const d2 = ok(iommuPagingDomainAllocFlags(b, IOMMU_HWPT_ALLOC_NEST_PARENT));
  expect(iommuAttachDevice(d2, b)).toBe(0);
  expected.push({ sid: 0x230, ssid: null, domain: d2, pages: mapSome(d2, 0x20_0000, 4) });
  return { m, hw, expected };
}

function mappedPages(doc: SmmuDecodeDocument, table: string | null): Map<number, number> {
  const out = new Map<number, number>();
  if (table === null) return out;
  const pt = doc.pageTables[table];
  for (const mp of pt?.mappings ?? []) {
    const iova = Number(BigInt(mp.iova));
    const pa = Number(BigInt(mp.pa));
    for (let off = 0; off < mp.size; off += PAGE) out.set(iova + off, pa + off);
  }
  return out;
}

describe.each([
  ["2-level stream table, 2-level CD tables", {}],
  [
    "linear stream table, linear CD tables",
    { twoLevelStreamTable: false, sidBits: 10, cd2l: false },
  ],
] as const)("decode smmu on the driver's tables (%s)", (_name, features) => {
  it("finds every attachment with its ASID or VMID and every page the domain maps", () => {
    const { m, hw, expected } = build(features);
    const doc = ok(decodeSmmu(m.mem, registers(hw)));
    expect(doc.problems).toEqual([]);
    for (const e of expected) {
      const dev = doc.devices.find((d) => d.sid === e.sid);
      expect(dev).toBeDefined();
      const t = dev?.translations.find((x) => x.ssid === e.ssid);
      expect(t, `sid ${e.sid} ssid ${e.ssid}`).toBeDefined();
      const dom = e.domain as unknown as { stage: number; asid: number; vmid: number };
      if (dom.stage === 1) {
        expect(t?.type).toBe("s1");
        expect(t?.asid).toBe(dom.asid);
      } else {
        expect(dev?.vmid).toBe(dom.vmid);
      }
      const pages = mappedPages(doc, t?.pageTable ?? dev?.secondStageTable ?? null);
      for (const [iova, pa] of e.pages) expect(pages.get(iova)).toBe(pa);
      expect(pages.size).toBe(e.pages.size);
    }
  });

  it("translate agrees with the SMMU's uncached walk on every mapped page and next to it", () => {
    const { m, hw, expected } = build(features);
    const tr = ok(SmmuTranslator.create(m.mem, registers(hw)));
    const req = newTranslationRequest();
    const res = newTranslationResult();
    for (const e of expected) {
      for (const iova of [...e.pages.keys()].flatMap((v) => [v, v + PAGE])) {
        const got = tr.translate({ sid: e.sid, ssid: e.ssid, iova: BigInt(iova) });
        req.rid = e.sid;
        req.sid = e.sid;
        req.pasid = e.ssid ?? NO_PASID;
        req.iovaPfn = iova / PAGE;
        req.offset = 0;
        req.access = DMA_READ;
        req.privileged = false;
        hw.translateUncached(req, res);
        expect(got.result).toBe(res.status === XLATE_OK ? "ok" : "fault");
        if (got.result === "ok") expect(BigInt(got.pa)).toBe(BigInt(res.pa));
      }
    }
  });
});
