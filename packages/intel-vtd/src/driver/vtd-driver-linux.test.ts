// The VT-d driver against the orders, fields and invalidations of Linux's drivers/iommu/intel:
// every descriptor the driver submits is read back from the ring through a register tap, next to
// the table entries as the hardware could sample them at that moment.

import {
  type Device,
  DMA_OK,
  DMA_PAGE_REQUESTED,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_DOMAIN_DMA,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_NO_PASID,
  IOMMU_PAGE_RESP_SUCCESS,
  IOMMU_READ,
  type IommuDomain,
  iommuAllocGlobalPasid,
  iommuAttachDevice,
  iommuAttachDevicePasid,
  iommuDetachDevice,
  iommuDetachDevicePasid,
  iommuDevDisableFeature,
  iommuDevEnableFeature,
  iommuDomainIsLazy,
  iommuGetDmaDomain,
  iommuGetDomainForDev,
  iommuMap,
  iommuPagingDomainAlloc,
  iommuPagingDomainAllocFlags,
  iommuReplaceDevicePasid,
  iommuUnmap,
  iopfGroupResponse,
} from "@iommu-sim/iommu-core";
import { decode, type Mmio, type PhysMemory, TWO32 } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { CONTEXT_ENTRY, SM_CONTEXT_ENTRY } from "../format/context-entry.js";
import { INV_DESC_TYPE, invDescLayout } from "../format/inv-desc.js";
import { PASID_ENTRY } from "../format/pasid-entry.js";
import { GCMD_TE, GCMD_WBF, VTD_REG } from "../format/registers.js";
import { LEGACY_VTD_CAPS, type VtdCapabilities } from "../hw/vtd-caps.js";
import { VtdUnit } from "../hw/vtd-unit.js";
import { VtdMachine, type VtdMachineOptions } from "../testing/vtd-machine.js";
import type { DmarDomain } from "./dmar-domain.js";
import type { IntelIommu } from "./intel-iommu.js";

const PAGE = 4096;
const TYPE_NAME: Record<number, string> = {
  [INV_DESC_TYPE.CC]: "cc",
  [INV_DESC_TYPE.IOTLB]: "iotlb",
  [INV_DESC_TYPE.DEV_TLB]: "devtlb",
  [INV_DESC_TYPE.WAIT]: "wait",
  [INV_DESC_TYPE.PIOTLB]: "piotlb",
  [INV_DESC_TYPE.PC]: "pc",
  [INV_DESC_TYPE.PDEV_TLB]: "pdevtlb",
  [INV_DESC_TYPE.PGRP_RESP]: "resp",
};

/** One descriptor read back from the ring: its kind and its fields (the raw qword-1 high half too). */
interface Desc {
  kind: string;
  f: Record<string, number>;
  qw1hi: number;
  qw1lo: number;
}

/**
 * The driver's view of a unit, recording on the way: register writes, and at each IQT move the
 * descriptors between the old and the new tail (so a batch is what one submission carried, its
 * wait last).
 */
class Tap implements Mmio {
  readonly batches: Desc[][] = [];
  readonly writes: [number, number][] = [];
  /** Called with each batch before the hardware sees the tail move. */
  onSubmit: ((batch: Desc[]) => void) | null = null;
  private ring = 0;
  private wide = false;
  private tail = 0;

  constructor(
    readonly hw: VtdUnit,
    private readonly mem: PhysMemory,
  ) {}

  read32(offset: number): number {
    return this.hw.read32(offset);
  }

  write32(offset: number, value: number): void {
    this.writes.push([offset, value >>> 0]);
    if (offset === VTD_REG.IQA) {
      this.ring = (value & 0xfffff000) >>> 0;
      this.wide = (value & (1 << 11)) !== 0;
    } else if (offset === VTD_REG.IQA + 4) {
      this.ring += value * TWO32;
    } else if (offset === VTD_REG.IQT) {
      const slot = this.wide ? 32 : 16;
      const batch: Desc[] = [];
      for (let t = this.tail; t !== value; t = (t + slot) % (256 * slot)) {
        batch.push(this.read(this.ring + t));
      }
      this.tail = value;
      if (batch.length > 0) {
        this.batches.push(batch);
        this.onSubmit?.(batch);
      }
    }
    this.hw.write32(offset, value);
  }

  private read(at: number): Desc {
    const w = [0, 0, 0, 0];
    for (let q = 0; q < 2; q++) {
      w[q * 2] = this.mem.read64(at + q * 8);
      w[q * 2 + 1] = this.mem.hi;
    }
    const type = (w[0] as number) & 0xf;
    const layout = invDescLayout(type);
    const f: Record<string, number> = {};
    if (layout !== null) {
      for (const [k, v] of Object.entries(decode(layout, w))) f[k] = Number(v);
    }
    return {
      kind: TYPE_NAME[type] ?? `type${type}`,
      f,
      qw1lo: w[2] as number,
      qw1hi: w[3] as number,
    };
  }

  /** Every descriptor submitted since `from` batches ago, flattened. */
  since(from: number): Desc[] {
    return this.batches.slice(from).flat();
  }

  /** The kinds of each batch since `from`. */
  shapes(from: number): string[][] {
    return this.batches.slice(from).map((b) => b.map((d) => d.kind));
  }

  gcmdWrites(since = 0): number[] {
    return this.writes
      .slice(since)
      .filter(([o]) => o === VTD_REG.GCMD)
      .map(([, v]) => v);
  }
}

interface TapUnit {
  caps?: Partial<VtdCapabilities>;
  scalable?: boolean;
  rids?: readonly number[];
}

/** A machine whose units the driver reaches through taps. */
function tapped(
  units: TapUnit[] = [{}],
  options: Omit<VtdMachineOptions, "units"> = {},
): { m: VtdMachine; taps: Tap[] } {
  const m = new VtdMachine({ ...options, units: [] });
  const taps: Tap[] = [];
  units.forEach((u, i) => {
    const name = `dmar${i}`;
    const hw = new VtdUnit({ name, mem: m.mem, caps: u.caps });
    const tap = new Tap(hw, m.mem);
    const iommu = m.driver.addUnit({ name, mmio: tap, scalable: u.scalable, rids: u.rids });
    if (typeof iommu === "string") throw new Error(`bring-up: ${iommu}`);
    m.units.push({ hw, iommu });
    taps.push(tap);
  });
  return { m, taps };
}

function add(m: VtdMachine, options: Parameters<VtdMachine["addDevice"]>[0]): Device {
  const dev = m.addDevice(options);
  if (typeof dev === "string") throw new Error(`${options.name}: ${dev}`);
  return dev;
}

function paging(dev: Device, flags = 0): DmarDomain {
  const d = flags === 0 ? iommuPagingDomainAlloc(dev) : iommuPagingDomainAllocFlags(dev, flags);
  if (typeof d === "string") throw new Error(d);
  return d as DmarDomain;
}

function unitOf(m: VtdMachine, i = 0): IntelIommu {
  return m.driver.units[i] as IntelIommu;
}

/** The eight qwords of the PASID entry of (dev, pasid), as [lo, hi] pairs. */
function pasidEntryAt(m: VtdMachine, dev: Device, pasid: number): number {
  const table = m.driver.deviceInfo(dev)?.pasidTable;
  if (!table) throw new Error("no PASID table");
  return table.entryAddr(pasid, false);
}

function readEntry(mem: PhysMemory, at: number, qwords: number): number[] {
  const w: number[] = [];
  for (let q = 0; q < qwords; q++) {
    w.push(mem.read64(at + q * 8), mem.hi);
  }
  return w;
}

function pasidFields(m: VtdMachine, dev: Device, pasid: number): Record<string, number> {
  const at = pasidEntryAt(m, dev, pasid);
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(decode(PASID_ENTRY, readEntry(m.mem, at, 8))))
    out[k] = Number(v);
  return out;
}

function contextAt(m: VtdMachine, dev: Device): number {
  const info = m.driver.deviceInfo(dev);
  if (info === null) throw new Error("not probed");
  return info.unit.contextAddr(info.bus, info.devfn, false);
}

describe("PASID entries (pasid.c)", () => {
  it("replacing the domain at a PASID never shows the hardware a present entry mixing old and new", () => {
    const { m, taps } = tapped();
    const tap = taps[0] as Tap;
    const dev = add(m, { name: "acc", rid: 0x0100, pasidBits: 8, ats: true });
    const a = paging(dev);
    const b = paging(dev);
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(a, dev, pasid, "a")).toBe(0);
    const at = pasidEntryAt(m, dev, pasid);
    const unit = unitOf(m);
    const didA = a.didOn(unit);
    const rootA = a.pgtable.rootPa;
    const torn: string[] = [];
    m.mem.onWrite = (pa) => {
      if (pa < at || pa >= at + 64) return;
      const f = decode(PASID_ENTRY, readEntry(m.mem, at, 8));
      if (Number(f.P) !== 1) return;
      const did = Number(f.DID);
      const root = Number(f.FLPTR);
      const okA = did === didA && root === rootA;
      const okB = did === b.didOn(unit) && root === b.pgtable.rootPa;
      if (!okA && !okB) torn.push(`P=1 DID=${did} FLPTR=${root.toString(16)}`);
    };
    const from = tap.batches.length;
    expect(iommuReplaceDevicePasid(b, dev, pasid, "b")).toBe(0);
    m.mem.onWrite = null;
    expect(torn).toEqual([]);
    // Linux tears the old entry down (with its invalidations under the old DID) and sets up anew.
    const kinds = tap.since(from).filter((d) => d.kind !== "wait");
    expect(kinds.slice(0, 3).map((d) => [d.kind, d.f.DID ?? -1])).toEqual([
      ["pc", didA],
      ["piotlb", didA],
      ["pdevtlb", -1],
    ]);
    expect(pasidFields(m, dev, pasid)).toMatchObject({ P: 1, DID: b.didOn(unit) });
  });

  it("tear-down clears P alone, invalidates under the entry's DID, then zeroes the entry", () => {
    const { m, taps } = tapped();
    const tap = taps[0] as Tap;
    const dev = add(m, { name: "acc", rid: 0x0100, pasidBits: 8 });
    const d = paging(dev);
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(d, dev, pasid)).toBe(0);
    const did = d.didOn(unitOf(m));
    const seen: Record<string, number>[] = [];
    tap.onSubmit = (batch) => {
      if (batch[0]?.kind === "pc") seen.push(pasidFields(m, dev, pasid));
    };
    expect(iommuDetachDevicePasid(d, dev, pasid)).toBe(0);
    tap.onSubmit = null;
    expect(seen[0]).toMatchObject({ P: 0, DID: did, PGTT: 1 });
    expect(pasidFields(m, dev, pasid)).toMatchObject({ P: 0, DID: 0, PGTT: 0, FLPTR: 0 });
  });

  it("under caching mode a new entry is flushed PASID-selectively, with a PASID-based IOTLB flush whatever its PGTT", () => {
    const { m, taps } = tapped([{ caps: { cachingMode: true } }]);
    const tap = taps[0] as Tap;
    const dev = add(m, { name: "acc", rid: 0x0100, pasidBits: 8 });
    m.driver.firstStage = false;
    const d = paging(dev);
    expect(d.useFirstLevel).toBe(false);
    const pasid = iommuAllocGlobalPasid(dev);
    const from = tap.batches.length;
    expect(iommuAttachDevicePasid(d, dev, pasid)).toBe(0);
    const did = d.didOn(unitOf(m));
    expect(tap.shapes(from)).toEqual([
      ["pc", "wait"],
      ["piotlb", "wait"],
    ]);
    expect(tap.since(from)[0]?.f).toMatchObject({ G: 1, DID: did, PASID: pasid });
    expect(tap.since(from)[2]?.f).toMatchObject({ G: 2, DID: did, PASID: pasid });
  });

  it("SLADE stays clear when a dirty-tracking domain is attached (tracking starts off)", () => {
    const { m } = tapped([{ caps: { slads: true } }]);
    const dev = add(m, { name: "nic", rid: 0x0100 });
    const d = paging(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    expect(d.useFirstLevel).toBe(false);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(pasidFields(m, dev, IOMMU_NO_PASID)).toMatchObject({ P: 1, PGTT: 2, SLADE: 0 });
  });

  it("first-stage entries use 5-level paging (FLPM 1) when MGAW > 48 and CAP.FL5LP, else 4-level", () => {
    const { m } = tapped([{}, { caps: { firstStage5Level: false, mgaw: 48 }, rids: [0x0200] }]);
    const a = add(m, { name: "a", rid: 0x0100, pasidBits: 8 });
    const b = add(m, { name: "b", rid: 0x0200, pasidBits: 8 });
    const da = paging(a);
    const db = paging(b);
    expect(da.levels).toBe(5);
    expect(db.levels).toBe(4);
    // A 5-level table cannot go to a unit that walks only 4 levels.
    expect(iommuAttachDevice(da, b)).toBe("EINVAL");
    expect(iommuAttachDevice(da, a)).toBe(0);
    expect(iommuAttachDevice(db, b)).toBe(0);
    expect(pasidFields(m, a, IOMMU_NO_PASID)).toMatchObject({ PGTT: 1, FLPM: 1 });
    expect(pasidFields(m, b, IOMMU_NO_PASID)).toMatchObject({ PGTT: 1, FLPM: 0 });
  });
});

describe("context entries (iommu.c, pasid.c)", () => {
  it("legacy tear-down clears P alone, invalidates under the entry's DID, then zeroes the entry", () => {
    const { m, taps } = tapped([{ caps: LEGACY_VTD_CAPS, scalable: false }]);
    const tap = taps[0] as Tap;
    const dev = add(m, { name: "nic", rid: 0x0100 });
    const dma = iommuGetDomainForDev(dev) as DmarDomain;
    const did = dma.didOn(unitOf(m));
    const at = contextAt(m, dev);
    const seen: Record<string, number>[] = [];
    tap.onSubmit = (batch) => {
      if (batch[0]?.kind !== "cc") return;
      const f: Record<string, number> = {};
      for (const [k, v] of Object.entries(decode(CONTEXT_ENTRY, readEntry(m.mem, at, 2))))
        f[k] = Number(v);
      seen.push(f);
    };
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    tap.onSubmit = null;
    expect(seen[0]).toMatchObject({ P: 0, DID: did });
    expect(seen[0]?.SLPTPTR).not.toBe(0);
  });

  it("under caching mode a new scalable-mode context entry is flushed: device context cache, then DID 0's IOTLB", () => {
    const { m, taps } = tapped([{ caps: { cachingMode: true } }]);
    const tap = taps[0] as Tap;
    const from = tap.batches.length;
    add(m, { name: "nic", rid: 0x0100 });
    const flat = tap.since(from);
    expect(flat.slice(0, 4).map((d) => d.kind)).toEqual(["cc", "wait", "iotlb", "wait"]);
    expect(flat[0]?.f).toMatchObject({ G: 3, SID: 0x0100 });
    expect(flat[2]?.f).toMatchObject({ G: 2, DID: 0 });
  });

  it("release turns PRI, ATS and PASID off before the context entry goes: only the context cache is flushed", () => {
    const { m, taps } = tapped();
    const tap = taps[0] as Tap;
    const dev = add(m, { name: "acc", rid: 0x0100, pasidBits: 8, ats: true, pri: true });
    expect(dev.atsEnabled).toBe(true);
    const from = tap.batches.length;
    m.removeDevice(dev);
    // The core parks the device in the blocking domain first; the driver's release comes last.
    const shapes = tap.shapes(from);
    expect(shapes[shapes.length - 1]).toEqual(["cc", "wait"]);
    expect(shapes.flat().filter((k) => k === "cc")).toHaveLength(1);
    expect(dev.atsEnabled || dev.priEnabled || dev.pasidEnabled).toBe(false);
  });
});

describe("cache tags (cache.c)", () => {
  it("second-stage IOTLB invalidations (type 2) never carry IH: Linux's hint is masked off with the address", () => {
    const { m, taps } = tapped();
    const tap = taps[0] as Tap;
    const dev = add(m, { name: "nic", rid: 0x0100 });
    m.driver.firstStage = false;
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    // Two pages, one unmapped: only a leaf changes, so the core asks for the hint.
    const pa = m.frames.alloc(1) as number;
    expect(iommuMap(d, 0x40000, pa, 2 * PAGE, IOMMU_READ)).toBe(0);
    const from = tap.batches.length;
    expect(iommuUnmap(d, 0x40000, PAGE)).toBe(PAGE);
    const iotlb = tap.since(from).filter((x) => x.kind === "iotlb");
    expect(iotlb).toHaveLength(1);
    expect(iotlb[0]?.f).toMatchObject({ G: 3, AM: 0, IH: 0 });
  });

  it("a flush submits at most 16 descriptors before it waits (QI_MAX_BATCHED_DESC_COUNT)", () => {
    const { m, taps } = tapped();
    const tap = taps[0] as Tap;
    const devs: Device[] = [];
    for (let i = 0; i < 16; i++)
      devs.push(add(m, { name: `d${i}`, rid: 0x0100 + i * 8, ats: true }));
    const d = paging(devs[0] as Device);
    for (const dev of devs) expect(iommuAttachDevice(d, dev)).toBe(0);
    const pa = m.frames.alloc(0) as number;
    expect(iommuMap(d, 0x40000, pa, PAGE, IOMMU_READ)).toBe(0);
    const from = tap.batches.length;
    expect(iommuUnmap(d, 0x40000, PAGE)).toBe(PAGE);
    // One IOTLB tag and sixteen device-TLB tags: 16 + wait, then 1 + wait.
    expect(tap.shapes(from).map((b) => b.length)).toEqual([17, 2]);
  });

  it("under caching mode a map of a second-stage domain flushes each IOTLB tag and waits once per unit", () => {
    const { m, taps } = tapped([{ caps: { cachingMode: true } }]);
    const tap = taps[0] as Tap;
    const dev = add(m, { name: "acc", rid: 0x0100, pasidBits: 8 });
    m.driver.firstStage = false;
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(d, dev, pasid)).toBe(0);
    const pa = m.frames.alloc(0) as number;
    const from = tap.batches.length;
    expect(iommuMap(d, 0x40000, pa, PAGE, IOMMU_READ)).toBe(0);
    expect(tap.shapes(from)).toEqual([["iotlb", "iotlb", "wait"]]);
  });

  it("the write buffer is flushed for CAP.RWBF only, never because of caching mode", () => {
    const cm = tapped([{ caps: { cachingMode: true } }]);
    const dev = add(cm.m, { name: "nic", rid: 0x0100 });
    const d = paging(dev);
    expect(d.useFirstLevel).toBe(true);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(iommuMap(d, 0x40000, cm.m.frames.alloc(0) as number, PAGE, IOMMU_READ)).toBe(0);
    expect(cm.taps[0]?.gcmdWrites().some((v) => (v & GCMD_WBF) !== 0)).toBe(false);
    const rwbf = tapped([{ caps: { rwbf: true } }]);
    const dev2 = add(rwbf.m, { name: "nic", rid: 0x0100 });
    const d2 = paging(dev2);
    expect(iommuAttachDevice(d2, dev2)).toBe(0);
    const before = rwbf.taps[0]?.gcmdWrites().length ?? 0;
    expect(iommuMap(d2, 0x40000, rwbf.m.frames.alloc(0) as number, PAGE, IOMMU_READ)).toBe(0);
    expect(
      rwbf.taps[0]
        ?.gcmdWrites()
        .slice(before)
        .some((v) => (v & GCMD_WBF) !== 0),
    ).toBe(true);
  });

  it("device-TLB invalidations carry PFSID 0 without ECAP.DIT, the function's own RID with it", () => {
    for (const dit of [false, true]) {
      const { m, taps } = tapped([{ caps: { dit } }]);
      const tap = taps[0] as Tap;
      const dev = add(m, { name: "nic", rid: 0x1234, ats: true });
      const d = iommuGetDomainForDev(dev) as DmarDomain;
      const pa = m.frames.alloc(0) as number;
      expect(iommuMap(d, 0x40000, pa, PAGE, IOMMU_READ)).toBe(0);
      const from = tap.batches.length;
      expect(iommuUnmap(d, 0x40000, PAGE)).toBe(PAGE);
      const dt = tap.since(from).find((x) => x.kind === "devtlb");
      const pfsid = (dt?.f.PFSIDHi ?? -1) * 16 + (dt?.f.PFSIDLo ?? -1);
      expect(pfsid).toBe(dit ? 0x1234 : 0);
    }
  });
});

describe("probe, ATS, PRI (iommu.c)", () => {
  it("PRI needs scalable mode, ATS, ECAP.PRS and ECAP.PDS: without PDS the context entry has no PRE", () => {
    const { m } = tapped([{ caps: { pds: false } }]);
    const dev = add(m, { name: "acc", rid: 0x0100, pasidBits: 8, ats: true, pri: true });
    const f = decode(SM_CONTEXT_ENTRY, readEntry(m.mem, contextAt(m, dev), 4));
    expect(Number(f.PRE)).toBe(0);
    expect(Number(f.DTE)).toBe(1);
    expect(dev.priEnabled).toBe(false);
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe("ENODEV");
  });

  it("PASID, ATS and PRI go on at probe finalize; IOPF enable only joins the fault queue", () => {
    const { m } = tapped();
    const dev = add(m, { name: "acc", rid: 0x0100, pasidBits: 8, ats: true, pri: true });
    expect([dev.pasidEnabled, dev.atsEnabled, dev.priEnabled]).toEqual([true, true, true]);
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(iommuDevDisableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(dev.priEnabled).toBe(true);
    m.removeDevice(dev);
    expect(dev.priEnabled).toBe(false);
  });

  it("legacy mode turns ATS on behind a paging domain's context entry only, and off when it goes", () => {
    const { m } = tapped([{ caps: LEGACY_VTD_CAPS, scalable: false }], {
      defaultDomain: "identity",
    });
    const dev = add(m, { name: "nic", rid: 0x0100, ats: true });
    expect(dev.atsEnabled).toBe(false);
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(dev.atsEnabled).toBe(true);
    expect(iommuDetachDevice(d, dev)).toBe(0);
    expect(iommuGetDomainForDev(dev)).toBe(m.driver.identityDomain);
    expect(dev.atsEnabled).toBe(false);
  });

  it("a unit without pass-through gives its devices a DMA default domain (device_def_domain_type)", () => {
    const { m } = tapped([{ caps: { passThrough: false } }], { defaultDomain: "identity" });
    const dev = add(m, { name: "nic", rid: 0x0100 });
    expect(iommuGetDomainForDev(dev)?.type).toBe(IOMMU_DOMAIN_DMA);
  });

  it("caching mode with second-stage-only units makes DMA strict (iommu_set_dma_strict)", () => {
    const { m } = tapped(
      [
        {
          caps: {
            cachingMode: true,
            flts: false,
            firstStage1G: false,
            firstStage5Level: false,
            nest: false,
          },
        },
      ],
      {
        strict: false,
      },
    );
    const dev = add(m, { name: "nic", rid: 0x0100 });
    const dma = iommuGetDmaDomain(dev) as IommuDomain;
    expect(iommuDomainIsLazy(dma)).toBe(false);
  });
});

describe("attach (iommu.c)", () => {
  it("an attach that runs out of domain IDs after blocking puts the device back on its old domain", () => {
    // CAP.ND 0: 16 IDs, 0 and 1 reserved. Pass-through holds no ID, so blocking frees none.
    const { m } = tapped([{ caps: { numDomainsBits: 4 } }], { defaultDomain: "identity" });
    const a = add(m, { name: "a", rid: 0x0100 });
    for (let i = 0; m.driver.didsInUse < 14; i++) {
      const f = add(m, { name: `f${i}`, rid: 0x0200 + i * 8 });
      expect(iommuAttachDevice(paging(f), f)).toBe(0);
    }
    const buf = m.frames.alloc(0) as number;
    m.mem.write32(buf, 0x5a5a);
    expect(iommuAttachDevice(paging(a), a)).toBe("ENOSPC");
    expect(iommuGetDomainForDev(a)).toBe(m.driver.identityDomain);
    // Still pass-through: the DMA reaches the buffer.
    expect(a.read32(buf)).toBe(DMA_OK);
    expect(a.lo).toBe(0x5a5a);
  });

  it("paging_domain_compatible: a domain using 1 GiB pages cannot go to a unit without them", () => {
    const { m } = tapped([
      {},
      { caps: { firstStage1G: false, superpages: ["2M"] }, rids: [0x0200] },
    ]);
    const a = add(m, { name: "a", rid: 0x0100 });
    const b = add(m, { name: "b", rid: 0x0200 });
    const fs = paging(a);
    expect(fs.useFirstLevel).toBe(true);
    expect(iommuAttachDevice(fs, b)).toBe("EINVAL");
    m.driver.firstStage = false;
    const ss = paging(a);
    expect(ss.useFirstLevel).toBe(false);
    expect(iommuAttachDevice(ss, b)).toBe("EINVAL");
  });

  it("a PASID out of the device's table is ENODEV (no entry), as the setup functions return", () => {
    const { m } = tapped();
    const dev = add(m, { name: "acc", rid: 0x0100, pasidBits: 4 });
    const d = paging(dev);
    expect(m.driver.pagingOpsFor(d).setDevPasid?.(d, dev, 2 ** 19, null)).toBe("ENODEV");
  });
});

describe("bring-up (iommu.c init_dmars, dmar.c)", () => {
  it("the global invalidations after SRTP each complete with their own wait", () => {
    const { taps } = tapped();
    expect(taps[0]?.shapes(0).slice(0, 3)).toEqual([
      ["cc", "wait"],
      ["pc", "wait"],
      ["iotlb", "wait"],
    ]);
  });

  it("256-bit descriptors whenever ECAP.SMTS, the page request queue whenever ECAP.PRS, even in legacy mode", () => {
    const { m, taps } = tapped([{ scalable: false }]);
    const iqa = taps[0]?.writes.find(([o]) => o === VTD_REG.IQA)?.[1] ?? 0;
    expect(iqa & (1 << 11)).not.toBe(0);
    expect(unitOf(m).sm).toBe(false);
    expect(unitOf(m).prqBase).not.toBe(0);
  });

  it("translation is enabled before the protected memory regions are disabled", () => {
    const { taps } = tapped([{ caps: { plmr: true } }]);
    const w = taps[0]?.writes ?? [];
    const te = w.findIndex(([o, v]) => o === VTD_REG.GCMD && (v & GCMD_TE) !== 0);
    const pmen = w.findIndex(([o]) => o === VTD_REG.PMEN);
    expect(te).toBeGreaterThan(0);
    expect(pmen).toBeGreaterThan(te);
  });
});

describe("faults (dmar.c)", () => {
  it("dmar_fault leaves FSTS alone when no fault record is pending (PPF clear)", () => {
    const { m, taps } = tapped();
    const tap = taps[0] as Tap;
    const from = tap.writes.length;
    expect(m.driver.processFaults()).toBe(0);
    expect(tap.writes.slice(from).filter(([o]) => o === VTD_REG.FSTS)).toEqual([]);
  });
});

describe("page requests (prq.c)", () => {
  it("page group responses leave bit 66 (the former LPIG) clear", () => {
    const { m, taps } = tapped();
    const tap = taps[0] as Tap;
    const dev = add(m, { name: "acc", rid: 0x0100, pasidBits: 8, ats: true, pri: true });
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    const d = paging(dev);
    d.iopfHandler = (group) => {
      iopfGroupResponse(group, IOMMU_PAGE_RESP_SUCCESS);
      return 0;
    };
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(d, dev, pasid)).toBe(0);
    const from = tap.batches.length;
    expect(dev.write32(0x9000, 1, pasid)).toBe(DMA_PAGE_REQUESTED);
    m.processQueues();
    const resp = tap.since(from).filter((x) => x.kind === "resp");
    expect(resp).toHaveLength(1);
    expect((resp[0]?.qw1lo ?? -1) & 4).toBe(0);
    expect(resp[0]?.f).toMatchObject({ PP: 1, PASID: pasid, RC: 0 });
  });

  it("tearing a PASID down with IOPF on drains it: its queued requests first, then wait(fence), P_IOTLB, P_DevTLB and a page-drain wait", () => {
    const { m, taps } = tapped();
    const tap = taps[0] as Tap;
    const dev = add(m, { name: "acc", rid: 0x0100, pasidBits: 8, ats: true, pri: true });
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    const d = paging(dev);
    let handled = 0;
    d.iopfHandler = (group) => {
      handled++;
      iopfGroupResponse(group, IOMMU_PAGE_RESP_SUCCESS);
      return 0;
    };
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(d, dev, pasid)).toBe(0);
    // A page request sits in the queue: nobody serviced the interrupt yet.
    expect(dev.write32(0x9000, 1, pasid)).toBe(DMA_PAGE_REQUESTED);
    expect(handled).toBe(0);
    const from = tap.batches.length;
    expect(iommuDetachDevicePasid(d, dev, pasid)).toBe(0);
    expect(handled).toBe(1);
    expect(dev.priOutstanding).toBe(0);
    const drain = tap.batches.slice(from).find((b) => b.length === 4);
    expect(drain?.map((x) => x.kind)).toEqual(["wait", "piotlb", "pdevtlb", "wait"]);
    expect(drain?.[0]?.f).toMatchObject({ FN: 1, SW: 0 });
    expect(drain?.[1]?.f).toMatchObject({ G: 2, PASID: pasid });
    expect(drain?.[3]?.f).toMatchObject({ PD: 1, SW: 1 });
  });
});
