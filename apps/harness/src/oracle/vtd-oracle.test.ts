// The VT-d oracle's checks that need no DMA: entries in memory against the attachments, what a
// freed domain leaves behind, refused invalidations, unexpected page group responses. Each test
// plants the bug in one driver instance (its methods wrapped) and expects the report at once.

import type { DeviceDomainInfo, DmarDomain, IntelIommu } from "@iommu-sim/intel-vtd/driver";
import { IOTLB_G_PAGE } from "@iommu-sim/intel-vtd/format";
import {
  type Device,
  DMA_OK,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuDevEnableFeature,
} from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { VtdHarness } from "../machine/vtd-harness.js";

/** The driver's private steps the tests wrap (TypeScript `private` only). */
interface DriverInternals {
  pasidTearDown(info: DeviceDomainInfo, pasid: number, freeingDid: boolean): void;
  pasidSetup(info: DeviceDomainInfo, pasid: number, domain: DmarDomain | null): 0 | string;
  pasidFields(unit: IntelIommu, domain: DmarDomain | null): Record<string, number>;
  tagsUnassign(domain: DmarDomain, info: DeviceDomainInfo, pasid: number): void;
  domainDetachIommu(domain: DmarDomain, unit: IntelIommu): void;
}

function machine(mode: "scalable" | "legacy" = "scalable") {
  const h = new VtdHarness(
    {
      units: [{ name: "dmar0", mode }],
      devices: [{ name: "acc0", rid: 0x18, pasidBits: 8, ats: true, pri: true }],
    },
    1,
  );
  const dev = h.addDevice({
    name: "acc0",
    rid: 0x18,
    pasidBits: mode === "scalable" ? 8 : 0,
    ats: true,
    pri: mode === "scalable",
  });
  if (typeof dev === "string") throw new Error(dev);
  const drv = h.m.driver as unknown as DriverInternals;
  return { h, dev, drv };
}

function paging(h: VtdHarness, dev: Device, stage: "first" | "second" = "first"): IommuDomain {
  const d = h.domainAlloc(dev, "paging", stage);
  if (typeof d === "string") throw new Error(d);
  return d;
}

describe("entries in memory against the attachments (check 1 without a DMA)", () => {
  it("attach, replace and detach cycles as the driver writes them raise nothing", () => {
    for (const mode of ["scalable", "legacy"] as const) {
      const { h, dev } = machine(mode);
      const a = paging(h, dev, "second");
      const b = paging(h, dev);
      expect(h.attach(dev, a)).toBe(0);
      expect(h.attach(dev, "default")).toBe(0);
      expect(h.attach(dev, h.m.driver.identityDomain)).toBe(0);
      expect(h.attach(dev, "default")).toBe(0);
      if (mode === "scalable") {
        const p = h.pasidAlloc(dev, "t") as number;
        expect(h.pasidAttach(dev, p, b)).toBe(0);
        expect(h.pasidDetach(dev, p)).toBe(0);
        expect(h.pasidFree(p)).toBe(0);
      }
      h.oracle.checkpoint();
      h.teardown();
      expect(h.oracle.violations).toEqual([]);
    }
  });

  it("an entry left present after its PASID was detached is an isolation violation before any DMA", () => {
    const { h, dev, drv } = machine();
    const d = paging(h, dev);
    const p = h.pasidAlloc(dev, "t") as number;
    expect(h.pasidAttach(dev, p, d)).toBe(0);
    expect(h.oracle.violations).toEqual([]);
    drv.pasidTearDown = () => {};
    expect(h.pasidDetach(dev, p)).toBe(0);
    expect(h.oracle.violations.map((v) => [v.kind, v.message])).toEqual([
      [
        "isolation",
        expect.stringMatching(
          new RegExp(
            `^acc0 PASID ${p}: nothing is attached there, but the PASID entry ${p} in memory of dmar0 is present and translates through 0x[0-9a-f]+ \\(DID \\d+\\)$`,
          ),
        ),
      ],
    ]);
    // Reported once, not at every later check.
    h.oracle.checkpoint();
    expect(h.oracle.stats.violations).toBe(1);
  });

  it("an entry that points at another domain's table is an isolation violation", () => {
    const { h, dev, drv } = machine();
    const a = paging(h, dev);
    const b = paging(h, dev);
    const bRoot = (b as DmarDomain).pgtable.rootPa;
    const fields = drv.pasidFields.bind(drv);
    drv.pasidFields = (unit, domain) => ({ ...fields(unit, domain), FLPTR: bRoot });
    const p = h.pasidAlloc(dev, "t") as number;
    expect(h.pasidAttach(dev, p, a)).toBe(0);
    const v = h.oracle.violations[0];
    expect(v?.kind).toBe("isolation");
    expect(v?.message).toBe(
      `acc0 PASID ${p}: domain#${a.id} is attached there, but the PASID entry ${p} in memory of dmar0 translates through 0x${bRoot.toString(16)}, not the domain's table at 0x${(a as DmarDomain).pgtable.rootPa.toString(16)}`,
    );
  });

  it("an entry tagged with a domain ID other than the domain's is reported: its invalidations miss", () => {
    const { h, dev, drv } = machine();
    const a = paging(h, dev);
    const fields = drv.pasidFields.bind(drv);
    drv.pasidFields = (unit, domain) => {
      const f = fields(unit, domain);
      return { ...f, DID: (f.DID as number) + 7 };
    };
    const p = h.pasidAlloc(dev, "t") as number;
    expect(h.pasidAttach(dev, p, a)).toBe(0);
    expect(h.oracle.violations[0]?.message).toMatch(
      /PASID entry \d+ in memory of dmar0 tags what it caches with DID \d+, not the domain's ID \d+/,
    );
  });

  it("a domain the driver says it attached, with no entry in memory, is a spurious-fault report", () => {
    const { h, dev, drv } = machine();
    const a = paging(h, dev);
    drv.pasidSetup = () => 0;
    const p = h.pasidAlloc(dev, "t") as number;
    expect(h.pasidAttach(dev, p, a)).toBe(0);
    expect(h.oracle.violations.map((v) => v.kind)).toEqual(["spurious-fault"]);
    expect(h.oracle.violations[0]?.message).toMatch(
      new RegExp(`acc0 PASID ${p}: domain#${a.id} is attached there, but the PASID entry`),
    );
  });

  it("legacy mode: a context entry still on the default domain's table after another domain was attached", () => {
    const { h, dev } = machine("legacy");
    const a = paging(h, dev, "second");
    const dma = h.m.driver.deviceInfo(dev)?.domain as DmarDomain;
    // Attach without blocking first: the driver keeps the present entry as it is.
    (h.m.driver as unknown as { deviceBlockTranslation(d: Device): void }).deviceBlockTranslation =
      () => {};
    expect(h.attach(dev, a)).toBe(0);
    expect(h.oracle.violations[0]?.message).toBe(
      `acc0: domain#${a.id} is attached there, but the context entry in memory of dmar0 translates through 0x${dma.pgtable.rootPa.toString(16)}, not the domain's table at 0x${(a as DmarDomain).pgtable.rootPa.toString(16)}`,
    );
  });
});

describe("what a freed domain leaves behind (check 4, at the free)", () => {
  it("cache tags still assigned", () => {
    const { h, dev, drv } = machine();
    const a = paging(h, dev);
    drv.tagsUnassign = () => {};
    expect(h.attach(dev, a)).toBe(0);
    expect(h.attach(dev, "default")).toBe(0);
    expect(h.domainFree(a)).toBe(0);
    expect(h.oracle.violations.map((v) => v.kind)).toEqual(["leak"]);
    expect(h.oracle.violations[0]?.message).toMatch(
      new RegExp(
        `^domain#${a.id} was freed with 2 cache tag\\(s\\) still assigned: IOTLB tag \\(DID \\d+, 1 user\\), device-TLB tag \\(DID \\d+, acc0, 1 user\\)`,
      ),
    );
  });

  it("a domain ID the driver let go of but never returned, at the detach, with its history", () => {
    const { h, dev } = machine();
    const a = paging(h, dev);
    expect(h.attach(dev, a)).toBe(0);
    for (const unit of h.m.driver.units) unit.freeDid = () => {};
    expect(h.attach(dev, "default")).toBe(0);
    const v = h.oracle.violations[0];
    expect(v?.kind).toBe("leak");
    expect(v?.message).toMatch(
      new RegExp(
        `^domain#${a.id} let go of domain ID \\d+ of dmar0, but the ID is still allocated`,
      ),
    );
    expect(v?.history?.map((e) => e.event).slice(-2)).toEqual([
      `allocated to domain#${a.id}`,
      `freed by domain#${a.id}`,
    ]);
    // Not again when the domain is freed.
    expect(h.domainFree(a)).toBe(0);
    expect(h.oracle.stats.violations).toBe(1);
  });

  it("a domain freed while one of its domain IDs is still allocated", () => {
    const { h, dev } = machine();
    const a = paging(h, dev);
    expect(h.attach(dev, a)).toBe(0);
    const did = (a as DmarDomain).didOn(h.m.driver.units[0] as IntelIommu);
    // The last detach drops the domain's hold on the unit and nothing else: no free, no hook.
    (h.m.driver as unknown as DriverInternals).domainDetachIommu = (domain, unit) => {
      const cur = domain.iommuArray.get(unit);
      if (cur !== undefined && --cur.refcnt === 0) domain.iommuArray.delete(unit);
    };
    expect(h.attach(dev, "default")).toBe(0);
    expect(h.oracle.violations).toEqual([]);
    expect(h.domainFree(a)).toBe(0);
    expect(h.oracle.violations.map((v) => v.message)).toEqual([
      `domain#${a.id} was freed but its domain ID ${did} of dmar0 is still allocated (domain_detach_iommu never gave it back)`,
    ]);
  });

  it("a domain freed cleanly raises nothing, and a domain ID handed on is not blamed on the old owner", () => {
    const { h, dev } = machine();
    const a = paging(h, dev);
    expect(h.attach(dev, a)).toBe(0);
    expect(h.attach(dev, "default")).toBe(0);
    const b = paging(h, dev);
    // b takes the ID a gave back.
    expect(h.attach(dev, b)).toBe(0);
    expect(h.domainFree(a)).toBe(0);
    expect(h.attach(dev, "default")).toBe(0);
    expect(h.domainFree(b)).toBe(0);
    expect(h.oracle.violations).toEqual([]);
  });
});

describe("invalidations that never happened", () => {
  it("a descriptor the unit refuses (IQE) is reported once, with the reason", () => {
    const { h } = machine("legacy");
    const unit = h.m.driver.units[0] as IntelIommu;
    const qi = unit.qi;
    if (qi === null) throw new Error("no queue");
    // AM beyond CAP.MAMV: a reserved value for a page-selective IOTLB invalidation.
    qi.addIotlb(IOTLB_G_PAGE, 3, 0, 40, false);
    expect(unit.submit()).toBe("EINVAL");
    h.oracle.checkpoint();
    h.oracle.checkpoint();
    expect(h.oracle.violations.map((v) => [v.kind, v.message])).toEqual([
      [
        "invalidation-error",
        "dmar0 refused 1 invalidation descriptor(s) (IQE, last IQEI 4: reserved field set): the invalidation never happened",
      ],
    ]);
  });
});

describe("page group responses", () => {
  it("a response for a group the device never asked is reported at the next checkpoint, once", () => {
    const { h, dev } = machine();
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    const qi = h.m.driver.units[0]?.qi;
    qi?.addPageResponse(0x18, 3, true, 0, 77, false);
    qi?.submit();
    h.oracle.checkpoint();
    expect(h.oracle.violations.map((v) => v.kind)).toEqual(["page-request"]);
    h.teardown();
    expect(h.oracle.violations.map((v) => v.kind)).toEqual(["page-request"]);
  });

  it("a clean demand-paged run raises nothing at checkpoints", () => {
    const { h, dev } = machine();
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    const d = paging(h, dev);
    d.iopfHandler = (group) => {
      for (const f of group.faults) {
        h.map(d, Math.floor(f.fault.addr / 4096) * 4096, 4096, IOMMU_READ | IOMMU_WRITE);
      }
      return 0;
    };
    const p = h.pasidAlloc(dev, "t") as number;
    expect(h.pasidAttach(dev, p, d)).toBe(0);
    h.dma(dev, p, 0x5000, 8, true);
    h.processQueues();
    h.oracle.checkpoint();
    expect(h.dma(dev, p, 0x5000, 8, true)).toBe(DMA_OK);
    h.teardown();
    expect(h.oracle.violations).toEqual([]);
  });
});

describe("the entry check compares the walk's levels with the domain's table", () => {
  it("a PASID entry whose AW/FLPM says another number of levels is an isolation violation", async () => {
    const { VtdHarness } = await import("../machine/vtd-harness.js");
    const h = new VtdHarness(
      { units: [{ name: "dmar0" }], devices: [{ name: "wq0", rid: 0x0020, pasidBits: 8 }] },
      1,
    );
    const dev = h.addDevice({ name: "wq0", rid: 0x0020, pasidBits: 8 });
    if (typeof dev === "string") throw new Error(dev);
    const d = h.domainAlloc(dev, "paging", "second");
    if (typeof d === "string") throw new Error(d);
    const p = h.pasidAlloc(dev, "t");
    if (typeof p === "string") throw new Error(p);
    expect(h.pasidAttach(dev, p, d)).toBe(0);
    expect(h.oracle.violations).toEqual([]);
    // Rewrite the entry's AW (bits 4:2) to one level fewer, as a driver with a wrong AGAW would.
    const info = h.m.driver.deviceInfo(dev);
    const at = info?.pasidTable?.entryAddr(p, false) ?? 0;
    const w0 = h.m.mem.read32(at);
    const aw = (w0 >>> 2) & 7;
    h.m.mem.write32(at, ((w0 & ~(7 << 2)) | ((aw - 1) << 2)) >>> 0);
    h.oracle.checkpoint();
    expect(h.oracle.violations.map((v) => v.kind)).toEqual(["isolation"]);
    expect(h.oracle.violations[0]?.message).toMatch(/walks \d+ levels; the domain's table has \d+/);
  });
});

describe("a PASID freed while still attached", () => {
  it("is reported as id-reuse naming the device and domain, and teardown still cleans up", async () => {
    const { VtdHarness } = await import("../machine/vtd-harness.js");
    const h = new VtdHarness(
      { units: [{ name: "dmar0" }], devices: [{ name: "acc0", rid: 0x0018, pasidBits: 8 }] },
      1,
    );
    const dev = h.addDevice({ name: "acc0", rid: 0x0018, pasidBits: 8 });
    if (typeof dev === "string") throw new Error(dev);
    const d = h.domainAlloc(dev, "paging");
    const p = h.pasidAlloc(dev, "owner");
    if (typeof d === "string" || typeof p === "string") throw new Error("setup");
    expect(h.pasidAttach(dev, p, d)).toBe(0);
    expect(h.pasidFree(p)).toBe(0);
    expect(h.oracle.violations).toHaveLength(1);
    expect(h.oracle.violations[0]).toMatchObject({
      kind: "id-reuse",
      id: { space: "pasid", value: p },
    });
    expect(h.oracle.violations[0]?.message).toMatch(
      new RegExp(`^PASID ${p} freed while still attached to acc0 \\(domain#${d.id}\\)`),
    );
    h.teardown();
    expect(h.oracle.violations.map((v) => v.kind)).toEqual(["id-reuse"]);
  });
});

describe("check 5: torn entry updates", () => {
  async function machine(legacy = false) {
    const { VtdHarness } = await import("../machine/vtd-harness.js");
    const h = new VtdHarness(
      {
        units: [{ name: "dmar0", ...(legacy ? { mode: "legacy" as const } : {}) }],
        devices: [{ name: "acc0", rid: 0x0018, pasidBits: legacy ? 0 : 8 }],
      },
      1,
    );
    const dev = h.addDevice({ name: "acc0", rid: 0x0018, pasidBits: legacy ? 0 : 8 });
    if (typeof dev === "string") throw new Error(dev);
    return { h, dev };
  }

  it("a PASID entry written with P first (qword 0 before the rest) is seen present as a mix", async () => {
    const { h, dev } = await machine();
    const table = h.m.driver.deviceInfo(dev)?.pasidTable;
    if (!table) throw new Error("no PASID table");
    const { encode } = await import("@iommu-sim/iommu-core/platform");
    const { PASID_ENTRY } = await import("@iommu-sim/intel-vtd/format");
    // The planted bug: qwords in ascending order, so P lands before DID and the table pointer.
    table.write = (pasid, fields) => {
      const at = table.entryAddr(pasid, true);
      const w = encode(PASID_ENTRY, fields);
      for (let q = 0; q < 8; q++)
        h.m.mem.write64(at + q * 8, w[q * 2] as number, w[q * 2 + 1] as number);
      return 0;
    };
    const d = h.domainAlloc(dev, "paging");
    const p = h.pasidAlloc(dev, "t");
    if (typeof d === "string" || typeof p === "string") throw new Error("setup");
    expect(h.pasidAttach(dev, p, d)).toBe(0);
    const v = h.oracle.violations.find((x) => x.kind === "torn-update");
    expect(v?.message).toMatch(
      new RegExp(
        `^acc0 PASID ${p}: between two stores the PASID entry in dmar0's memory was present as neither the old nor the new configuration: seen "PGTT 1 DID 0 `,
      ),
    );
  });

  it("the driver as Linux writes it never tears: setup, replace and tear-down of PASIDs and RIDs", async () => {
    const { h, dev } = await machine();
    const d1 = h.domainAlloc(dev, "paging", "first");
    const d2 = h.domainAlloc(dev, "paging", "second");
    const p = h.pasidAlloc(dev, "t");
    if (typeof d1 === "string" || typeof d2 === "string" || typeof p === "string")
      throw new Error("setup");
    expect(h.pasidAttach(dev, p, d1)).toBe(0);
    const { iommuReplaceDevicePasid } = await import("@iommu-sim/iommu-core");
    expect(iommuReplaceDevicePasid(d2, dev, p, "h")).toBe(0);
    h.oracle.attachmentsChanged();
    expect(h.pasidDetach(dev, p)).toBe(0);
    expect(h.attach(dev, d1)).toBe(0);
    expect(h.attach(dev, "default")).toBe(0);
    expect(h.attach(dev, h.m.driver.identityDomain)).toBe(0);
    expect(h.attach(dev, "default")).toBe(0);
    h.teardown();
    expect(h.oracle.violations).toEqual([]);
  });

  it("a legacy context entry written low qword (P) first is seen present with the wrong DID", async () => {
    const { h, dev } = await machine(true);
    const mem = h.m.mem;
    // The planted bug: every 64-bit store pair into the context entry goes low qword first.
    const write64 = mem.write64.bind(mem);
    let held: [number, number, number] | null = null;
    mem.write64 = (pa: number, lo: number, hi: number) => {
      if (held !== null) {
        const [hpa, hlo, hhi] = held;
        held = null;
        if (pa === hpa - 8) {
          write64(pa, lo, hi);
          write64(hpa, hlo, hhi);
          return;
        }
        write64(hpa, hlo, hhi);
      }
      // Hold the high qword of a context entry (offset 8 in its 16 bytes) until its low one.
      const rta = h.m.units[0]?.hw.read32(0x20) ?? 0;
      if (pa % 16 === 8 && Math.abs(pa - rta) < 0x10_0000 && (lo & 0xffff00) !== 0) {
        held = [pa, lo, hi];
        return;
      }
      write64(pa, lo, hi);
    };
    const d = h.domainAlloc(dev, "paging");
    if (typeof d === "string") throw new Error(d);
    expect(h.attach(dev, d)).toBe(0);
    mem.write64 = write64;
    expect(
      h.oracle.violations.some((v) => v.kind === "torn-update" && /context entry/.test(v.message)),
    ).toBe(true);
  });
});
