// The oracle on processes, on a small SvaWorld machine of either architecture: a DMA through a
// cache the notifier left stale, a process's work reaching another address space through a
// reused PASID, the PASID entry / CD of a process that exited, and the PASID mm_pasid_drop frees.

import { CD } from "@iommu-sim/arm-smmu/format";
import { PASID_ENTRY } from "@iommu-sim/intel-vtd/format";
import { type Device, DMA_OK } from "@iommu-sim/iommu-core";
import { decode } from "@iommu-sim/iommu-core/platform";
import { PROT_READ, PROT_WRITE } from "@iommu-sim/sva";
import { describe, expect, it } from "vitest";
import type { DeviceSpec, Harness, MachineSpec } from "../src/machine/harness.js";
import { SmmuHarness, type SmmuInjection } from "../src/machine/smmu-harness.js";
import type { SvaProcess } from "../src/machine/sva-world.js";
import { VtdHarness, type VtdInjection } from "../src/machine/vtd-harness.js";
import type { Violation } from "../src/oracle/violation.js";

const PAGE = 4096;
const RW = PROT_READ | PROT_WRITE;

/**
 * An ATS + PRI accelerator, and a DMA engine without PRI whose ATC holds one translation, so that
 * the IOTLB / TLB answers for a page it touched two pages ago (VT-d's SVA needs ATS on).
 */
const ACCEL: DeviceSpec = { name: "accel0", rid: 0x18, pasidBits: 20, ats: true, pri: true };
const DMA0: DeviceSpec = { name: "dma0", rid: 0x28, pasidBits: 20, ats: true, atc: 1 };
const SPEC: MachineSpec = { units: [{ name: "iommu0" }], devices: [ACCEL, DMA0] };

type Arch = "vtd" | "smmu";
const ARCHES: readonly Arch[] = ["vtd", "smmu"];

function machine(arch: Arch, inject: string | null = null): Harness {
  return arch === "vtd"
    ? new VtdHarness(SPEC, 1, inject as VtdInjection | null)
    : new SmmuHarness(SPEC, 1, inject as SmmuInjection | null);
}

function device(h: Harness, spec: DeviceSpec): Device {
  const d = h.addDevice(spec);
  if (typeof d === "string") throw new Error(`${spec.name}: ${d}`);
  return d;
}

function newProcess(h: Harness, name: string): SvaProcess {
  const p = h.sva.processCreate(name);
  if (typeof p === "string") throw new Error(`${name}: ${p}`);
  return p;
}

function bind(h: Harness, dev: Device, p: SvaProcess): number {
  const pasid = h.sva.bind(dev, p);
  if (typeof pasid === "string") throw new Error(`bind ${p.name}: ${pasid}`);
  return pasid;
}

/** `pages` pages of `p`, touched by the CPU (so a device without PRI can reach them). */
function buffer(h: Harness, p: SvaProcess, pages: number, fill = 0x5a): number {
  const va = h.sva.mmap(p, pages * PAGE, RW);
  if (typeof va === "string") throw new Error(`mmap: ${va}`);
  expect(h.sva.cpuWrite(p, va, new Uint8Array(pages * PAGE).fill(fill))).toBe(0);
  return va;
}

function read(h: Harness, dev: Device, p: SvaProcess, va: number): number {
  return h.sva.dma(dev, p, va, new Uint8Array(8), false);
}

function kinds(h: Harness): string[] {
  return h.oracle.violations.map((v) => v.kind);
}

/** The 64-byte entry at `pa` as 16 words. */
function save(h: Harness, pa: number): number[] {
  const w: number[] = [];
  for (let i = 0; i < 16; i++) w.push(h.m.mem.read32(pa + 4 * i));
  return w;
}

/** Write `w` back at `pa`, qword 0 (P, V, EPD0) last so that no half entry is ever live. */
function restore(h: Harness, pa: number, w: readonly number[]): void {
  for (let q = 7; q >= 0; q--)
    h.m.mem.write64(pa + 8 * q, w[2 * q] as number, w[2 * q + 1] as number);
}

/** Where the device's entry for `pasid` is in memory: the PASID entry on VT-d, the CD on SMMUv3. */
function entryAddr(h: Harness, dev: Device, pasid: number): number {
  if (h instanceof VtdHarness)
    return h.m.driver.deviceInfo(dev)?.pasidTable?.entryAddr(pasid, false) ?? 0;
  const s = h as SmmuHarness;
  const master = s.m.driver.master(dev);
  return master === null ? -1 : s.m.driver.getCdPtr(master, pasid);
}

describe.each(ARCHES)("a cache the mmu notifier left stale (%s)", (arch) => {
  const tlb = arch === "vtd" ? "iotlb" : "tlb";
  const atc = arch === "vtd" ? "device-tlb" : "atc";

  /** dma0 reads a page of procA (then another, out of its ATC), procA unmaps it, dma0 reads it. */
  function afterMunmap(inject: string | null) {
    const h = machine(arch, inject);
    const dev = device(h, DMA0);
    const a = newProcess(h, "procA");
    const pasid = bind(h, dev, a);
    const va = buffer(h, a, 2);
    expect(read(h, dev, a, va + 8)).toBe(DMA_OK);
    expect(read(h, dev, a, va + PAGE)).toBe(DMA_OK);
    expect(h.sva.munmap(a, va, PAGE)).toBe(0);
    return { h, dev, a, pasid, va, st: read(h, dev, a, va + 16) };
  }

  it("without a bug, the munmapped page faults and nothing is reported", () => {
    const { h, st, dev, a, va } = afterMunmap(null);
    expect(st).not.toBe(DMA_OK);
    expect(read(h, dev, a, va + PAGE)).toBe(DMA_OK);
    h.teardown();
    expect(h.oracle.violations).toEqual([]);
  });

  it(`a DMA through the ${tlb} entry of a munmapped page is a stale translation naming the munmap and the missing invalidation`, () => {
    const { h, st, pasid, va } = afterMunmap("skip-notifier-flush");
    expect(st).toBe(DMA_OK);
    expect(kinds(h)).toEqual(["stale-translation"]);
    const v = h.oracle.violations[0] as Violation;
    expect(v.dma).toMatchObject({
      device: "dma0",
      pasid,
      access: "read",
      expected: "a fault (not mapped)",
    });
    expect(v.staleEntry).toMatchObject({ cache: tlb, where: "iommu0" });
    expect(v.message).toContain(`(removed by munmap(procA, 0x${va.toString(16)}, 0x1000) at t=`);
    expect(v.message).toMatch(/SVA domain's mmu notifier \(arch_invalidate_secondary_tlbs\)/);
    expect(v.history?.[0]?.event).toMatch(/^the mapping was removed by munmap\(procA, /);
    const addr = `0x${va.toString(16)}`;
    if (arch === "vtd")
      expect(v.missingInvalidation).toEqual({
        descriptor: "PASID-based IOTLB invalidation (type 6)",
        fields: { G: "page", DID: 1, PASID: pasid, ADDR: addr, AM: 0 },
      });
    else {
      expect(v.missingInvalidation?.descriptor).toBe("CMD_TLBI_NH_VA");
      expect(v.missingInvalidation?.fields).toMatchObject({ VMID: 0, Address: addr, Leaf: 1 });
      expect(v.missingInvalidation?.fields.ASID).toBeGreaterThan(0);
    }
  });

  it(`an mprotect to read-only that leaves the ${tlb} writable is a stale write`, () => {
    const h = machine(arch, "skip-notifier-flush");
    const dev = device(h, DMA0);
    const a = newProcess(h, "procA");
    bind(h, dev, a);
    const va = buffer(h, a, 2);
    expect(h.sva.dma(dev, a, va, new Uint8Array(8), true)).toBe(DMA_OK);
    expect(h.sva.dma(dev, a, va + PAGE, new Uint8Array(8), true)).toBe(DMA_OK);
    expect(h.sva.mprotect(a, va, PAGE, PROT_READ)).toBe(0);
    expect(h.sva.dma(dev, a, va, new Uint8Array(8), true)).toBe(DMA_OK);
    expect(kinds(h)).toEqual(["stale-translation"]);
    const v = h.oracle.violations[0] as Violation;
    expect(v.dma?.access).toBe("write");
    expect(v.staleEntry?.cache).toBe(tlb);
    expect(v.message).toContain(
      `(removed by mprotect(procA, 0x${va.toString(16)}, 0x1000, 1) at t=`,
    );
  });

  it(`a DMA through the ${atc} of a munmapped page is reported with the ATC invalidation for the PASID`, () => {
    const h = machine(arch, "skip-atc-on-notifier");
    const dev = device(h, ACCEL);
    const a = newProcess(h, "procA");
    const pasid = bind(h, dev, a);
    const va = h.sva.mmap(a, 2 * PAGE, RW) as number;
    // Demand paging through PRI, then the ATC holds the page.
    expect(h.sva.dma(dev, a, va, new Uint8Array(8), true)).toBe(DMA_OK);
    expect(read(h, dev, a, va)).toBe(DMA_OK);
    expect(h.sva.munmap(a, va, PAGE)).toBe(0);
    expect(read(h, dev, a, va)).toBe(DMA_OK);
    expect(kinds(h)).toEqual(["stale-translation"]);
    const v = h.oracle.violations[0] as Violation;
    expect(v.staleEntry).toMatchObject({ cache: atc, where: "accel0" });
    const f = v.missingInvalidation?.fields ?? {};
    if (arch === "vtd") {
      expect(v.missingInvalidation?.descriptor).toBe(
        "PASID-based device-TLB invalidation (type 8)",
      );
      expect(f).toMatchObject({ SID: "0x18", PASID: pasid, ADDR: `0x${va.toString(16)}` });
    } else {
      expect(v.missingInvalidation?.descriptor).toBe("CMD_ATC_INV");
      expect(f).toMatchObject({
        SID: "0x18",
        SSV: 1,
        SSID: pasid,
        Address: `0x${va.toString(16)}`,
      });
    }
  });
});

describe.each(ARCHES)("a process's work at a PASID that names another mm (%s)", (arch) => {
  /** procD binds dma0 and unbinds; procE binds; procD's late descriptor reads its ring. */
  function lateWork(inject: string | null) {
    const h = machine(arch, inject);
    const dev = device(h, DMA0);
    const d = newProcess(h, "procD");
    const e = newProcess(h, "procE");
    const pd = bind(h, dev, d);
    const ring = buffer(h, d, 1, 0xdd);
    expect(h.sva.unbind(dev, d)).toBe(0);
    const pe = bind(h, dev, e);
    // procE's first buffer lands at the same address as procD's ring.
    expect(buffer(h, e, 1, 0xee)).toBe(ring);
    const got = new Uint8Array(8);
    const st = h.sva.dma(dev, d, ring, got, false);
    return { h, pd, pe, ring, st, got };
  }

  it("without a bug procE gets another PASID and procD's late work faults", () => {
    const { h, pd, pe, st } = lateWork(null);
    expect(pe).not.toBe(pd);
    expect(st).not.toBe(DMA_OK);
    h.teardown();
    expect(h.oracle.violations).toEqual([]);
  });

  it("with the PASID freed at unbind, procD's work reaching procE's memory is an isolation violation", () => {
    const { h, pd, pe, ring, st, got } = lateWork("free-pasid-on-unbind");
    expect(pe).toBe(pd);
    // The DMA itself is what procE's address space maps: only the owner check can see it.
    expect(st).toBe(DMA_OK);
    expect(got[0]).toBe(0xee);
    expect(kinds(h)).toEqual(["id-reuse", "isolation"]);
    const reuse = h.oracle.violations[0] as Violation;
    expect(reuse.id).toEqual({ space: "pasid", unit: null, value: pd });
    expect(reuse.message).toMatch(
      new RegExp(`^PASID ${pd} freed while the mm of procD still holds it`),
    );
    const iso = h.oracle.violations[1] as Violation;
    expect(iso.message).toMatch(
      new RegExp(
        `^dma0 PASID ${pd} read at 0x${ring.toString(16)} for procD's work reached 0x[0-9a-f]+ in the address space of procE: PASID ${pd} no longer names procD's address space$`,
      ),
    );
    expect(iso.history?.map((x) => x.event)).toEqual(
      expect.arrayContaining(["bound dma0 to procD (SVA)", "bound dma0 to procE (SVA)"]),
    );
  });

  it("the owner check ends with the DMA: procE's own work at the PASID is not reported", () => {
    const { h, pd, ring } = lateWork("free-pasid-on-unbind");
    const e = h.sva.processes.get("procE") as SvaProcess;
    const dev = h.devices.get("dma0") as Device;
    expect(h.sva.dma(dev, e, ring, new Uint8Array(8), false)).toBe(DMA_OK);
    expect(h.sva.enqcmdPasid(e)).toBe(pd);
    // A DMA at the PASID outside any process's work is the domain's business alone.
    expect(h.deviceRead(dev, pd, ring, new Uint8Array(8))).toBe(DMA_OK);
    expect(kinds(h)).toEqual(["id-reuse", "isolation"]);
  });
});

describe.each(ARCHES)("a process that exits while bound (%s)", (arch) => {
  function exited() {
    const h = machine(arch);
    const dev = device(h, DMA0);
    const a = newProcess(h, "procA");
    const pasid = bind(h, dev, a);
    const va = buffer(h, a, 1);
    expect(read(h, dev, a, va)).toBe(DMA_OK);
    const at = entryAddr(h, dev, pasid);
    expect(at).toBeGreaterThan(0);
    const live = save(h, at);
    h.sva.exit(a);
    return { h, dev, a, pasid, va, at, live };
  }

  it(
    arch === "vtd"
      ? "leaves its PASID entry non-present"
      : "leaves its CD valid with EPD0 (every access faults)",
    () => {
      const { h, dev, a, va, at } = exited();
      const now = save(h, at);
      if (arch === "vtd") expect(decode(PASID_ENTRY, now).P).toBe(0);
      else expect(decode(CD, now)).toMatchObject({ V: 1, EPD0: 1, TTB0: 0 });
      expect(read(h, dev, a, va)).not.toBe(DMA_OK);
      expect(h.oracle.violations).toEqual([]);
    },
  );

  it(`an entry written back live after the exit is reported as an isolation violation`, () => {
    const { h, pasid, at, live } = exited();
    restore(h, at, live);
    h.oracle.checkpoint();
    expect(kinds(h)).toEqual(["isolation"]);
    const msg = (h.oracle.violations[0] as Violation).message;
    if (arch === "vtd")
      expect(msg).toMatch(
        new RegExp(
          `^dma0 PASID ${pasid}: the SVA domain of procA is attached there, but the PASID entry ${pasid} in memory of iommu0 is still present \\(FLPTR 0x[0-9a-f]+\\) after procA exited$`,
        ),
      );
    else
      expect(msg).toMatch(
        new RegExp(
          `^dma0 PASID ${pasid}: the SVA domain of procA is attached there, but the CD in memory of iommu0 translates through 0x[0-9a-f]+ \\(ASID \\d+\\) after procA exited`,
        ),
      );
    // Reported once, not at every later check.
    h.oracle.checkpoint();
    expect(kinds(h)).toEqual(["isolation"]);
  });

  it("the PASID mm_pasid_drop frees after the unbind is not reported, and teardown is clean", () => {
    const { h, dev, a, pasid } = exited();
    expect(h.m.subsys.pasids.has(pasid)).toBe(true);
    expect(h.sva.unbind(dev, a)).toBe(0);
    expect(h.m.subsys.pasids.has(pasid)).toBe(false);
    expect(h.oracle.violations).toEqual([]);
    h.teardown();
    expect(h.oracle.violations).toEqual([]);
  });

  it("a PASID the unbind after the exit frees early is reported for the mm's later free, not for work", () => {
    const h = machine(arch, "free-pasid-on-unbind");
    const dev = device(h, DMA0);
    const a = newProcess(h, "procA");
    const pasid = bind(h, dev, a);
    h.sva.exit(a);
    expect(h.sva.unbind(dev, a)).toBe(0);
    expect(kinds(h)).toEqual(["id-reuse"]);
    const v = h.oracle.violations[0] as Violation;
    expect(v.id).toEqual({ space: "pasid", unit: null, value: pasid });
    expect(v.message).toMatch(
      new RegExp(
        `^PASID ${pasid} freed while the mm of procA still holds it \\(mm->iommu_mm->pasid\\): procA has exited, but mm_pasid_drop frees it again when the mm goes`,
      ),
    );
    expect(v.message).not.toMatch(/work keeps carrying it/);
  });

  it("unbind first, exit later: the PASID lives with the mm and goes with it, unreported", () => {
    const h = machine(arch);
    const dev = device(h, DMA0);
    const a = newProcess(h, "procA");
    const pasid = bind(h, dev, a);
    expect(h.sva.unbind(dev, a)).toBe(0);
    expect(h.m.subsys.pasids.has(pasid)).toBe(true);
    h.sva.exit(a);
    expect(h.m.subsys.pasids.has(pasid)).toBe(false);
    h.teardown();
    expect(h.oracle.violations).toEqual([]);
  });
});
