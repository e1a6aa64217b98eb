// The SVA scenario, on VT-d and on SMMUv3: processes share their address spaces with devices
// behind two IOMMU instances. Two processes feed one work-queue device (ENQCMD-style descriptors
// tagged with each process's PASID); a PRI accelerator demand-pages a buffer through the SVA fault
// handler; munmap and mprotect must reach every cache through the mmu notifier; a process exits
// while bound; a user hits its PASID limit; a process unbinds and another binds after it. The
// oracle checks every DMA against the process's own view of its address space.

import {
  type Device,
  DMA_OK,
  DMA_PAGE_REQUESTED,
  IOMMU_PASID_INVALID,
} from "@iommu-sim/iommu-core";
import { type IommuMmData, mmGetPasid, PROT_READ, PROT_WRITE } from "@iommu-sim/sva";
import type { DeviceSpec, Harness, MachineSpec } from "../machine/harness.js";
import { SmmuHarness, type SmmuInjection } from "../machine/smmu-harness.js";
import type { SvaProcess } from "../machine/sva-world.js";
import { VtdHarness, type VtdInjection } from "../machine/vtd-harness.js";
import type { Scenario, ScenarioContext } from "../scenario.js";
import { harnessScenario, scenarioKit } from "./machine-default.js";

const PAGE = 4096;

/** wq0 and accel0 behind the first IOMMU, accel1 behind the second. */
const SVA_DEVICES: readonly DeviceSpec[] = [
  { name: "wq0", rid: 0x0020, unit: "iommu0", pasidBits: 20, ats: true, kind: "work-queue" },
  { name: "accel0", rid: 0x0018, unit: "iommu0", pasidBits: 20, ats: true, pri: true },
  { name: "accel1", rid: 0x0108, unit: "iommu1", pasidBits: 20, ats: true, pri: true },
];

export const SVA_MACHINE: MachineSpec = {
  units: [{ name: "iommu0" }, { name: "iommu1" }],
  devices: SVA_DEVICES,
};

/** Run the SVA scenario on `h` (either architecture). */
export function runSva(h: Harness, ctx: ScenarioContext): void {
  const w = h.sva;
  const prng = h.m.prng;
  const { check, dev } = scenarioKit(h, ctx);
  const proc = (name: string, user: string, max?: number): SvaProcess => {
    const u = w.user(user, max);
    if (typeof u === "string") throw new Error(`user ${user}: ${u}`);
    const p = w.processCreate(name, u);
    if (typeof p === "string") throw new Error(`process ${name}: ${p}`);
    ctx.countOp();
    return p;
  };
  const mmap = (p: SvaProcess, pages: number, prot = PROT_READ | PROT_WRITE): number => {
    const va = w.mmap(p, pages * PAGE, prot);
    ctx.countOp();
    if (typeof va === "string") throw new Error(`${p.name}: mmap: ${va}`);
    return va;
  };
  const bind = (d: Device, p: SvaProcess, what: string): number => {
    const pasid = w.bind(d, p);
    ctx.countOp();
    check(what, typeof pasid === "number", `${d.name}: bind ${p.name}: ${String(pasid)}`);
    return typeof pasid === "number" ? pasid : -1;
  };
  const dma = (d: Device, p: SvaProcess, va: number, size: number, write: boolean): number => {
    const buf = new Uint8Array(size);
    if (write) for (let i = 0; i < size; i++) buf[i] = (va + i) & 0xff;
    const st = w.dma(d, p, va, buf, write);
    ctx.countDma();
    if (st !== DMA_OK) ctx.countFault();
    return st;
  };
  const faults = (d: Device, p: SvaProcess, va: number, write: boolean, what: string): void => {
    const st = dma(d, p, va, 8, write);
    check(what, st !== DMA_OK, `${d.name}: ${p.name}'s DMA at 0x${va.toString(16)} succeeded`);
  };
  /** Descriptors in `p`'s memory: copy page i of src to page i of dst. */
  const writeRing = (p: SvaProcess, ring: number, src: number, dst: number, n: number): void => {
    for (let i = 0; i < n; i++) {
      const d = new Uint8Array(32);
      const v = new DataView(d.buffer);
      v.setUint32(0, (src + i * PAGE) >>> 0, true);
      v.setUint32(4, Math.floor((src + i * PAGE) / 2 ** 32), true);
      v.setUint32(8, (dst + i * PAGE) >>> 0, true);
      v.setUint32(12, Math.floor((dst + i * PAGE) / 2 ** 32), true);
      v.setUint32(16, PAGE, true);
      w.cpuWrite(p, ring + i * 32, d);
      const data = new Uint8Array(PAGE);
      for (let k = 0; k < PAGE; k++) data[k] = (i * 31 + k + p.name.length) & 0xff;
      w.cpuWrite(p, src + i * PAGE, data);
    }
    ctx.countOp(2 * n);
  };
  const copied = (p: SvaProcess, src: number, dst: number, n: number): boolean => {
    const a = new Uint8Array(PAGE);
    const b = new Uint8Array(PAGE);
    for (let i = 0; i < n; i++) {
      w.cpuRead(p, src + i * PAGE, a);
      w.cpuRead(p, dst + i * PAGE, b);
      for (let k = 0; k < PAGE; k++) if (a[k] !== b[k]) return false;
    }
    return true;
  };

  for (const spec of SVA_DEVICES) {
    const d = h.addDevice(spec);
    ctx.countOp();
    if (!check("probe", typeof d !== "string", `${spec.name}: probe failed: ${String(d)}`)) return;
  }
  const wq = dev("wq0");
  const accel = dev("accel0");
  const accel1 = dev("accel1");

  // 1. Two processes share the work-queue device, each through its own PASID.
  const a = proc("procA", "alice", 4);
  const b = proc("procB", "bob", 4);
  const pa = bind(wq, a, "sva-bind");
  const pb = bind(wq, b, "sva-bind");
  check("sva-pasids", pa !== pb && pa > 0 && pb > 0, `PASIDs ${pa} and ${pb}`);
  const again = w.bind(wq, a);
  check(
    "sva-bind-twice",
    again === pa && a.bonds.get(wq)?.users === 2,
    `bind again: ${String(again)}`,
  );
  check(
    "sva-unbind-ref",
    w.unbind(wq, a) === 0 && a.bonds.get(wq)?.users === 1,
    "unbind of one of two binds",
  );
  ctx.countOp(2);
  for (const p of [a, b]) {
    const ring = mmap(p, 1);
    const src = mmap(p, 8);
    const dst = mmap(p, 8);
    writeRing(p, ring, src, dst, 8);
    // The destination is never touched by the CPU: the work-queue device has no PRI, so the
    // process pre-faults it (as a DSA user pins or touches its buffers).
    w.cpuWrite(p, dst, new Uint8Array(8 * PAGE));
    const done = w.enqcmd(wq, p, ring, 8);
    ctx.countDma(done * 4);
    check("enqcmd", done === 8, `wq0: ${done} of 8 of ${p.name}'s descriptors completed`);
    check("enqcmd-bytes", copied(p, src, dst, 8), `wq0: ${p.name}'s copies differ`);
  }

  // 2. Demand paging: accel0 writes a buffer the CPU never touched; each page is a page request
  // the SVA handler serves by faulting the page into A's address space.
  check("sva-bind-pri", bind(accel, a, "sva-bind") === pa, "accel0 gets A's PASID");
  const lazy = mmap(a, 16);
  let served = 0;
  for (let i = 0; i < 16; i++)
    if (dma(accel, a, lazy + i * PAGE + 8 * i, 64, true) === DMA_OK) served++;
  check("demand-paging", served === 16, `accel0: ${served} of 16 pages faulted in`);
  const got = new Uint8Array(64);
  w.cpuRead(a, lazy + 5 * PAGE + 40, got);
  check(
    "demand-paging-bytes",
    got[0] === ((lazy + 5 * PAGE + 40) & 0xff),
    "accel0's write is not in A's memory",
  );
  // Outside every VMA, or against the VMA's permissions, the handler refuses: the DMA fails.
  faults(accel, a, 0x7000_0000, false, "page-request-no-vma");
  const ro = mmap(a, 2, PROT_READ);
  faults(accel, a, ro, true, "page-request-read-only");
  check(
    "read-only-read",
    dma(accel, a, ro, 8, false) === DMA_OK,
    "accel0: read of a read-only page",
  );

  // 3. munmap while the device has the range cached: after munmap returns the notifier has
  // flushed the IOTLB and the ATC, so the device faults (its page request finds no VMA).
  const shared = mmap(a, 4);
  for (let i = 0; i < 4; i++) dma(accel, a, shared + i * PAGE, 32, true);
  for (let i = 0; i < 4; i++) dma(accel, a, shared + i * PAGE, 32, false);
  check("munmap", w.munmap(a, shared + PAGE, 2 * PAGE) === 0, "munmap failed");
  ctx.countOp();
  faults(accel, a, shared + PAGE, false, "dma-after-munmap");
  faults(accel, a, shared + 2 * PAGE + 16, true, "dma-after-munmap");
  check(
    "dma-next-to-munmap",
    dma(accel, a, shared, 32, false) === DMA_OK,
    "accel0: the page before the hole",
  );
  // mprotect to read-only: writes fail from then on, reads go on.
  check("mprotect", w.mprotect(a, shared + 3 * PAGE, PAGE, PROT_READ) === 0, "mprotect failed");
  ctx.countOp();
  faults(accel, a, shared + 3 * PAGE, true, "dma-write-after-mprotect");
  check(
    "dma-read-after-mprotect",
    dma(accel, a, shared + 3 * PAGE, 8, false) === DMA_OK,
    "read after mprotect",
  );

  // 4. One SVA domain per IOMMU instance: accel1 sits behind the second IOMMU. VT-d's SVA domain
  // spans units (one per mm); an SMMU's belongs to one SMMU (one per mm and SMMU).
  check("sva-bind-second-iommu", bind(accel1, a, "sva-bind") === pa, "accel1 gets A's PASID");
  const domains = (a.mm.iommuMm as IommuMmData | null)?.svaDomains.length ?? 0;
  const want = h.arch === "smmu" ? 2 : 1;
  check("sva-domains", domains === want, `A has ${domains} SVA domain(s), want ${want}`);
  const far = mmap(a, 2);
  check(
    "sva-second-iommu-dma",
    dma(accel1, a, far, 64, true) === DMA_OK,
    "accel1: demand-paged write",
  );
  check("sva-second-iommu-dma", dma(accel, a, far, 64, false) === DMA_OK, "accel0 reads it");

  // 5. A user hitting its PASID limit: carol may hold one PASID; her second process's bind fails
  // and leaves nothing behind. Kernel DMA at a PASID is never charged.
  const tree = w.charges;
  const c1 = proc("procC1", "carol", 1);
  const c2 = proc("procC2", "carol", 1);
  bind(wq, c1, "sva-bind-under-limit");
  const allocated = [...h.m.subsys.pasids.allocated()].length;
  const over = w.bind(wq, c2);
  ctx.countOp();
  check("pasid-limit", over === "EBUSY", `procC2's bind over carol's limit: ${String(over)}`);
  check(
    "pasid-limit-nothing-behind",
    [...h.m.subsys.pasids.allocated()].length === allocated &&
      mmGetPasid(c2.mm) === IOMMU_PASID_INVALID &&
      (tree?.find("/carol")?.current ?? -1) === 1,
    "a failed bind left a PASID or a charge behind",
  );
  const rootBefore = tree?.root.current ?? 0;
  const kp = h.dmaPasidEnable(accel1);
  ctx.countOp();
  check(
    "kernel-pasid-uncharged",
    typeof kp === "number" && (tree?.root.current ?? 0) === rootBefore,
    `kernel PASID ${String(kp)} charged`,
  );

  // 6. A process exits while bound: the notifiers' release tears its PASID entries down, so its
  // PASID faults on the device at once; the PASID itself lives until the device lets go.
  const bRing = mmap(b, 1);
  w.cpuWrite(b, bRing, new Uint8Array(64));
  w.exit(b);
  ctx.countOp();
  faults(wq, b, bRing, false, "dma-after-exit");
  check("pasid-after-exit", h.m.subsys.pasids.has(pb), `PASID ${pb} freed before the unbind`);
  check("unbind-after-exit", w.unbind(wq, b) === 0, "unbind after exit");
  ctx.countOp();
  check(
    "pasid-freed-with-mm",
    !h.m.subsys.pasids.has(pb),
    `PASID ${pb} still allocated after B went`,
  );

  // 7. A process unbinds and another binds: the first keeps its PASID (its mm lives), so the
  // second gets another, and the first one's late work cannot reach the second's memory.
  const d = proc("procD", "dave");
  const e = proc("procE", "erin");
  const pd = bind(wq, d, "sva-bind");
  const dRing = mmap(d, 1);
  const dSrc = mmap(d, 2);
  const dDst = mmap(d, 2);
  writeRing(d, dRing, dSrc, dDst, 2);
  check("unbind", w.unbind(wq, d) === 0, "unbind procD");
  ctx.countOp();
  const pe = bind(wq, e, "sva-bind");
  check("pasid-not-reused", pe !== pd, `procE got PASID ${pe}, procD's`);
  const eRing = mmap(e, 1);
  const eSrc = mmap(e, 2);
  const eDst = mmap(e, 2);
  writeRing(e, eRing, eSrc, eDst, 2);
  w.cpuWrite(e, eDst, new Uint8Array(2 * PAGE));
  // D's late descriptor (ENQCMD still carries D's PASID): nothing of D is bound any more.
  const late = w.enqcmd(wq, d, dRing, 2);
  ctx.countDma();
  check("late-work-faults", late === 0, `wq0: ${late} of procD's descriptors ran after its unbind`);
  check("enqcmd", w.enqcmd(wq, e, eRing, 2) === 2, "wq0: procE's descriptors");

  // 8. A seeded mix on A: demand-paged writes, reads, munmaps and mprotects.
  const mix = mmap(a, 64);
  for (let i = 0; i < 200; i++) {
    const page = prng.below(64);
    const va = mix + page * PAGE + prng.below(PAGE / 64) * 64;
    const r = prng.below(10);
    if (r < 7) dma(prng.below(2) === 0 ? accel : accel1, a, va, 64, r < 4);
    else if (r < 9) {
      w.munmap(a, mix + page * PAGE, PAGE);
      ctx.countOp();
      faults(accel, a, va, false, "mix-dma-after-munmap");
      const again = w.mmap(a, PAGE, PROT_READ | PROT_WRITE, mix + page * PAGE);
      ctx.countOp();
      check("mix-remap", again === mix + page * PAGE, `mmap fixed: ${String(again)}`);
    } else {
      w.mprotect(a, mix + page * PAGE, PAGE, PROT_READ);
      ctx.countOp();
      faults(accel1, a, va, true, "mix-write-after-mprotect");
      w.mprotect(a, mix + page * PAGE, PAGE, PROT_READ | PROT_WRITE);
    }
  }
  check("pri-answered", dma(accel, a, mix, 8, false) !== DMA_PAGE_REQUESTED, "accel0 left waiting");

  // 9. Everything back; the oracle checks for leaks.
  h.processQueues();
  ctx.snapshot(h.m.mem, h.snapshotRegisters());
  h.teardown();
  ctx.countOp();
}

/** The SVA scenario on two VT-d units. */
export const vtdSvaScenario: Scenario = harnessScenario(
  "sva",
  "vtd",
  "processes share their address spaces with a work queue and PRI accelerators on two VT-d units: ENQCMD work, demand paging, munmap/mprotect through the notifier, exit while bound, PASID limits",
  (seed, inject) => new VtdHarness(SVA_MACHINE, seed, inject as VtdInjection | null),
  runSva,
);

/** The SVA scenario on two SMMUv3s. */
export const smmuSvaScenario: Scenario = harnessScenario(
  "sva",
  "smmu",
  "the same processes and devices behind two SMMUv3s: SVA CDs over AArch64 page tables, one SVA domain per SMMU, TLBI by ASID on munmap",
  (seed, inject) => new SmmuHarness(SVA_MACHINE, seed, inject as SmmuInjection | null),
  runSva,
);
