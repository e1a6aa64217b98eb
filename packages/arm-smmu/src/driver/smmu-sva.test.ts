// SVA on SMMUv3 end to end: FEAT_SVA at probe, SVA domains over a process's AArch64 table (built
// descriptor by descriptor, as the CPU would use it) bound at a PASID by hand as the core's bind
// does, DMAs walking that table, the mmu notifier's invalidation commands, release at process
// exit, teardown, IOPF for stalling and PRI masters, and every errno path.

import {
  Device,
  type DeviceOptions,
  DMA_EXEC,
  DMA_FAULT,
  DMA_OK,
  DMA_PAGE_REQUESTED,
  DMA_PRIV,
  DMA_STALLED,
  IOMMU_DOMAIN_SVA,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_PAGE_RESP_SUCCESS,
  type IommuDomain,
  IopfQueue,
  iommuAttachDevice,
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuDomainFree,
  iommuDomainInit,
  iopfGroupResponse,
  PCI_PASID_CAP_EXEC,
  PCI_PASID_CAP_PRIV,
} from "@iommu-sim/iommu-core";
import { TestMm } from "@iommu-sim/iommu-core/testing";
import { describe, expect, it } from "vitest";
import {
  add,
  type Cmd,
  cdOf,
  frame,
  machine,
  ops,
  paging,
  record,
  steOf,
  Tap,
} from "../../test/driver-kit.js";
import { CMDQ_OP } from "../format/commands.js";
import { EVT_ID } from "../format/events.js";
import { SMMU_REG } from "../format/registers.js";
import { STE_CFG_S1_TRANS } from "../format/ste.js";
import type { SmmuFeatures } from "../hw/smmu-features.js";
import { SmmuV3 } from "../hw/smmu-v3.js";
import { SmmuMachine } from "../testing/smmu-machine.js";
import { type LpaeTable, SmmuTableBuilder, SmmuTestMachine } from "../testing/table-builder.js";
import {
  type ArmCpuFeatures,
  ArmSmmuSvaDomain,
  armSmmuSvaSupported,
  DEFAULT_ARM_CPU_FEATURES,
  parangeToPhysShift,
} from "./smmu-sva.js";
import { atcSpan } from "./smmu-v3-driver.js";

const PAGE = 4096;
/** A MAIR_EL1 with distinct bytes in both halves, to see it copied whole. */
const MAIR: readonly [number, number] = [0x0044ffff, 0x00000004];
const PASID = 5;

/** A process: its AArch64 table (4 levels, 4K, 48-bit VA) and the address space around it. */
interface Proc {
  readonly pt: LpaeTable;
  readonly mm: TestMm;
}

function proc(m: SmmuMachine, name = "proc"): Proc {
  const pt = new SmmuTableBuilder(m.mem, m.frames).lpae(1, 12, 48);
  const mm = new TestMm({ name, pgd: pt.root, pgtableFormat: "aarch64", mair: MAIR, parange: 5 });
  return { pt, mm };
}

interface UserPage {
  ro?: boolean;
  exec?: boolean;
  af?: boolean;
  dbm?: boolean;
  /** AP[1] = 0: a kernel page, no EL0 access. */
  kernel?: boolean;
}

/** A page as arm64 maps user memory: AP[1] (EL0 access), AP[2] when read-only, PXN, UXN unless executable, nG, AF. */
function mapUser(p: Proc, va: number, pa: number, o: UserPage = {}): number {
  return p.pt.map(va, pa, 3, {
    ap: (o.kernel ? 0 : 1) | (o.ro ? 2 : 0),
    pxn: true,
    uxn: !o.exec,
    af: o.af ?? true,
    dbm: o.dbm,
  });
}

function clearPte(p: Proc, va: number): void {
  p.pt.raw(va, 3, 0, 0);
}

/** What the core's SVA bind does around the driver: allocate, init as SVA, hold the mm, set the handler. */
function svaDomain(m: SmmuMachine, dev: Device, mm: TestMm): ArmSmmuSvaDomain {
  const d = m.driver.domainAllocSva(dev, mm);
  if (typeof d === "string") throw new Error(`domainAllocSva: ${d}`);
  iommuDomainInit(d, IOMMU_DOMAIN_SVA, m.driver, m.subsys);
  mm.mmgrab();
  d.mm = mm;
  d.iopfHandler = () => 0;
  expect(d).toBeInstanceOf(ArmSmmuSvaDomain);
  return d as ArmSmmuSvaDomain;
}

function bind(d: IommuDomain, dev: Device, pasid = PASID): void {
  expect(iommuAttachDevicePasid(d, dev, pasid)).toBe(0);
}

/** An ATS device with PASIDs (no PRI: its faults are plain faults). */
const ACC: DeviceOptions = { name: "acc", rid: 0x10, pasidBits: 8, ats: true };
/** A device with PASIDs and neither ATS nor PRI: every access goes through the SMMU's TLB. */
const NIC: DeviceOptions = { name: "nic", rid: 0x18, pasidBits: 8 };

/** A machine with one SMMU and a bound device, plus a process with one page at `va`. */
function bound(features: Partial<SmmuFeatures> = {}, dopts: DeviceOptions = ACC) {
  const { m, hw, smmu } = machine(features);
  const dev = add(m, dopts);
  const p = proc(m);
  const buf = frame(m);
  const va = 0x7f12_3456_7000;
  mapUser(p, va, buf);
  const d = svaDomain(m, dev, p.mm);
  bind(d, dev);
  return { m, hw, smmu, dev, p, d, buf, va };
}

/** A driver with CPUs `cpu` and one SMMU of `features`, reached through a tap (ID register overrides). */
function withCpu(
  cpu: Partial<ArmCpuFeatures>,
  features: Partial<SmmuFeatures> = {},
  before?: (tap: Tap) => void,
) {
  const m = new SmmuMachine({ smmus: [] });
  m.driver.cpu = { ...DEFAULT_ARM_CPU_FEATURES, ...cpu };
  const hw = new SmmuV3({ name: "smmu0", mem: m.mem, features, trace: m.trace });
  const tap = new Tap(hw);
  before?.(tap);
  const smmu = m.driver.addSmmu({ name: "smmu0", mmio: tap });
  if (typeof smmu === "string") throw new Error(smmu);
  m.smmus.push({ hw, smmu });
  return { m, hw, smmu };
}

function cmdsOf(cmds: readonly Cmd[], op: number): Cmd[] {
  return cmds.filter((c) => c.op === op);
}

describe("ARM_SMMU_FEAT_SVA at probe", () => {
  const ok = {
    s1: true,
    coherent: true,
    vax: false,
    bbml2: false,
    pgsizeBitmap: PAGE | (1 << 21) | (1 << 30),
    oas: 48,
    asidBits: 16,
  };
  const cpu = DEFAULT_ARM_CPU_FEATURES;

  it.each([
    ["no stage 1", { s1: false }, {}],
    ["incoherent walks", { coherent: false }, {}],
    ["no PAGE_SIZE among the page sizes", { pgsizeBitmap: 1 << 16 }, {}],
    ["an OAS below the CPUs' PA size", { oas: 44 }, {}],
    ["fewer ASID bits than the CPUs", { asidBits: 8 }, {}],
    ["52-bit VAs with 4K pages (LPA2)", { vax: true }, { vaBits: 52 }],
    [
      "52-bit VAs with 64K pages but no VAX",
      { pgsizeBitmap: 1 << 16 },
      { vaBits: 52, pageShift: 16 },
    ],
    ["BBML2 CPUs and an SMMU without it", {}, { bbml2NoAbort: true }],
  ] as const)("is off with %s", (_n, f, c) => {
    expect(armSmmuSvaSupported(ok, cpu)).toBe(true);
    expect(armSmmuSvaSupported({ ...ok, ...f }, { ...cpu, ...c })).toBe(false);
  });

  it("is on with the smaller CPU (fewer ASID bits, smaller PA), 52-bit VAs with 64K pages and VAX, BBML2 on both", () => {
    expect(armSmmuSvaSupported(ok, { ...cpu, asidBits: 8, parange: 2 })).toBe(true);
    const big = { ...ok, vax: true, pgsizeBitmap: 1 << 16, oas: 52 };
    expect(armSmmuSvaSupported(big, { ...cpu, vaBits: 52, pageShift: 16, parange: 6 })).toBe(true);
    expect(armSmmuSvaSupported({ ...ok, bbml2: true }, { ...cpu, bbml2NoAbort: true })).toBe(true);
  });

  it("PARange encodings map to the PA sizes Linux uses", () => {
    expect([0, 1, 2, 3, 4, 5, 6].map(parangeToPhysShift)).toEqual([32, 36, 40, 42, 44, 48, 52]);
  });

  it("the default SMMU and CPUs have it; incoherence, 8-bit ASIDs under 16-bit CPUs or a wider CPU PA clear it", () => {
    expect(machine().smmu.features.sva).toBe(true);
    expect(machine({ cohacc: false }).smmu.features.sva).toBe(false);
    expect(machine({ asidBits: 8 }).smmu.features.sva).toBe(false);
    expect(withCpu({ parange: 6 }).smmu.features.sva).toBe(false);
    expect(withCpu({ asidBits: 8 }, { asidBits: 8 }).smmu.features.sva).toBe(true);
  });

  it("with BBML2 CPUs the SMMU needs IDR3.BBML = 2", () => {
    expect(withCpu({ bbml2NoAbort: true }).smmu.features.sva).toBe(false);
    const both = withCpu({ bbml2NoAbort: true }, {}, (tap) =>
      tap.override.set(SMMU_REG.IDR3, tap.hw.read32(SMMU_REG.IDR3) | (2 << 11)),
    );
    expect(both.smmu.features.bbml2).toBe(true);
    expect(both.smmu.features.sva).toBe(true);
  });
});

describe("a bound device", () => {
  it("DMAs at the PASID walk the process's table to the right PA, reading and writing", () => {
    const { m, dev, buf, va } = bound();
    m.mem.write32(buf + 0x10, 0xcafe);
    expect(dev.read32(va + 0x10, PASID)).toBe(DMA_OK);
    expect(dev.lo >>> 0).toBe(0xcafe);
    expect(dev.write32(va + 0x24, 0x1234, PASID)).toBe(DMA_OK);
    expect(m.mem.read32(buf + 0x24)).toBe(0x1234);
    // Unmapped in the process: a fault.
    expect(dev.read32(va + PAGE, PASID)).toBe(DMA_FAULT);
  });

  it("its CD is the one Linux writes: TTB0 = pgd, T0SZ 16, TG0 4K, WBWA inner shareable walks, EPD1, IPS = PARange, AA64, R, A, ASET, the domain's ASID, MAIR_EL1", () => {
    const { m, hw, d, p } = bound();
    expect(cdOf(m, hw, 0x10, PASID)).toMatchObject({
      V: 1,
      T0SZ: 16,
      TG0: 0,
      IR0: 1,
      OR0: 1,
      SH0: 3,
      EPD0: 0,
      EPD1: 1,
      IPS: 5,
      AA64: 1,
      HA: 0,
      HD: 0,
      S: 0,
      R: 1,
      A: 1,
      ASET: 1,
      ASID: d.asid,
      TTB0: p.mm.pgd,
      MAIR0: MAIR[0],
      MAIR1: MAIR[1],
      ENDI: 0,
      PAN: 0,
    });
    // The RID keeps its DMA domain's CD at SSID 0; the STE (CD table, full ATS) was in place.
    expect(steOf(m, hw, 0x10)).toMatchObject({ Config: STE_CFG_S1_TRANS, EATS: 1 });
    expect(d.pgsizeBitmap).toBe(PAGE);
  });

  it("has its own ASID from the driver's allocator, reported through the hooks, not the RID domain's", () => {
    const { m } = machine();
    const dev = add(m, ACC);
    const log: string[] = [];
    m.driver.hooks = {
      asidAllocated: (a) => log.push(`+${a}`),
      asidFreed: (a) => log.push(`-${a}`),
    };
    const p = proc(m);
    const d = svaDomain(m, dev, p.mm);
    const rid = paging(dev);
    expect(d.asid).toBeGreaterThan(0);
    expect(d.asid).not.toBe(rid.asid);
    expect(m.driver.asids.has(d.asid)).toBe(true);
    expect(log).toEqual([`+${d.asid}`, `+${rid.asid}`]);
    // Registered on the mm, holding an mm_struct count.
    expect([...p.mm.registered]).toEqual([d.mmuNotifier]);
    iommuDomainFree(d);
    iommuDomainFree(rid);
  });

  it("the walk follows arm64's user permissions: AP[1] for unprivileged requests, AP[2] read-only, UXN, PXN, AF", () => {
    const { m } = machine();
    const dev = add(m, { ...NIC, pasidFeatures: PCI_PASID_CAP_EXEC | PCI_PASID_CAP_PRIV });
    const p = proc(m);
    const buf = frame(m);
    const base = 0x40_0000;
    mapUser(p, base, buf); // RW user data
    mapUser(p, base + PAGE, buf, { ro: true });
    mapUser(p, base + 2 * PAGE, buf, { exec: true, ro: true }); // text
    mapUser(p, base + 3 * PAGE, buf, { kernel: true });
    mapUser(p, base + 4 * PAGE, buf, { af: false });
    bind(svaDomain(m, dev, p.mm), dev);
    expect(dev.write32(base, 1, PASID)).toBe(DMA_OK);
    expect(dev.read32(base + PAGE, PASID)).toBe(DMA_OK);
    expect(dev.write32(base + PAGE, 1, PASID)).toBe(DMA_FAULT);
    expect(dev.read32(base + 2 * PAGE, PASID, DMA_EXEC)).toBe(DMA_OK);
    expect(dev.read32(base, PASID, DMA_EXEC)).toBe(DMA_FAULT);
    // User pages are PXN: no privileged fetch even from text; privileged data reads are fine (no PAN).
    expect(dev.read32(base + 2 * PAGE, PASID, DMA_EXEC | DMA_PRIV)).toBe(DMA_FAULT);
    expect(dev.read32(base + PAGE, PASID, DMA_PRIV)).toBe(DMA_OK);
    // AP[1] = 0: only privileged requests.
    expect(dev.read32(base + 3 * PAGE, PASID)).toBe(DMA_FAULT);
    expect(dev.read32(base + 3 * PAGE, PASID, DMA_PRIV)).toBe(DMA_OK);
    // AF = 0 and no HA in the CD: an Access flag fault, the descriptor untouched.
    expect(dev.read32(base + 4 * PAGE, PASID)).toBe(DMA_FAULT);
    m.processQueues();
    const ids = m.driver.events.map((e) => e.id);
    expect(ids).toEqual([
      EVT_ID.F_PERMISSION,
      EVT_ID.F_PERMISSION,
      EVT_ID.F_PERMISSION,
      EVT_ID.F_PERMISSION,
      EVT_ID.F_ACCESS,
    ]);
    expect(m.driver.events.every((e) => e.ssid === PASID && e.sid === NIC.rid)).toBe(true);
  });
});

describe("the mmu notifier", () => {
  it("a cleared PTE and the CPU's flush: TLBI_NH_VA (range form, non-leaf, the domain's ASID), CMD_SYNC, ATC_INV at the SSID, CMD_SYNC; then the DMA faults", () => {
    const { hw, dev, p, d, va } = bound();
    expect(dev.read32(va, PASID)).toBe(DMA_OK);
    clearPte(p, va);
    const cmds = record(hw);
    p.mm.flush(va, va + PAGE);
    expect(ops(cmds)).toEqual([
      CMDQ_OP.TLBI_NH_VA,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.ATC_INV,
      CMDQ_OP.CMD_SYNC,
    ]);
    // One page, non-leaf: grown to two pages (SCALE 1, NUM 0) so scale and num are not both 0.
    expect(cmds[0]?.f).toMatchObject({
      ASID: d.asid,
      Leaf: 0,
      TG: 1,
      TTL: 0,
      SCALE: 1,
      NUM: 0,
      Address: va,
    });
    expect(cmds[2]?.f).toMatchObject({
      StreamID: 0x10,
      SSV: 1,
      SubstreamID: PASID,
      Size: 0,
      Address: va,
    });
    expect(dev.read32(va, PASID)).toBe(DMA_FAULT);
  });

  it("without range invalidation: one TLBI_NH_VA per page, non-leaf, no range fields", () => {
    const { hw, p, d, va } = bound({ ril: false });
    const cmds = record(hw);
    p.mm.flush(va, va + 3 * PAGE);
    const tlbi = cmdsOf(cmds, CMDQ_OP.TLBI_NH_VA);
    expect(tlbi.map((c) => c.f.Address)).toEqual([va, va + PAGE, va + 2 * PAGE]);
    expect(tlbi.every((c) => c.f.ASID === d.asid && c.f.Leaf === 0 && c.f.NUM === 0)).toBe(true);
    expect(ops(cmds).slice(3)).toEqual([CMDQ_OP.CMD_SYNC, CMDQ_OP.ATC_INV, CMDQ_OP.CMD_SYNC]);
    const span = atcSpan(va, 3 * PAGE);
    expect(cmds[4]?.f).toMatchObject({
      SSV: 1,
      SubstreamID: PASID,
      Size: span.log2,
      Address: span.addr,
    });
  });

  it("a flush of everything: TLBI_NH_ASID and the whole ATC of the SSID", () => {
    const { hw, p, d } = bound();
    const cmds = record(hw);
    p.mm.flushAll();
    expect(ops(cmds)).toEqual([
      CMDQ_OP.TLBI_NH_ASID,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.ATC_INV,
      CMDQ_OP.CMD_SYNC,
    ]);
    expect(cmds[0]?.f.ASID).toBe(d.asid);
    expect(cmds[2]?.f).toMatchObject({ SSV: 1, SubstreamID: PASID, Size: 52 });
  });

  it("without range invalidation CMDQ_MAX_TLBI_OPS (512) pages or more drop the whole ASID; 511 go page by page", () => {
    const { hw, p, va } = bound({ ril: false });
    let cmds = record(hw);
    p.mm.flush(va, va + 512 * PAGE);
    expect(ops(cmds).slice(0, 2)).toEqual([CMDQ_OP.TLBI_NH_ASID, CMDQ_OP.CMD_SYNC]);
    expect(cmdsOf(cmds, CMDQ_OP.ATC_INV)[0]?.f.Size).toBe(52);
    cmds = record(hw);
    p.mm.flush(va, va + 511 * PAGE);
    expect(cmdsOf(cmds, CMDQ_OP.TLBI_NH_VA)).toHaveLength(511);
    expect(cmdsOf(cmds, CMDQ_OP.TLBI_NH_ASID)).toHaveLength(0);
  });

  it("with range invalidation a huge range stays a few range commands", () => {
    const { hw, p, va } = bound();
    const cmds = record(hw);
    // 1 TiB = 2^28 pages: one command of SCALE 28, NUM 0.
    p.mm.flush(0, 2 ** 40);
    expect(ops(cmds)).toEqual([
      CMDQ_OP.TLBI_NH_VA,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.ATC_INV,
      CMDQ_OP.CMD_SYNC,
    ]);
    expect(cmds[0]?.f).toMatchObject({ SCALE: 28, NUM: 0, Address: 0, Leaf: 0 });
    expect(cmds[2]?.f).toMatchObject({ Size: 28, Address: 0 });
    expect(va).toBeGreaterThan(2 ** 40);
  });

  it("under VHE the commands are TLBI_EL2_VA and TLBI_EL2_ASID", () => {
    const m = new SmmuMachine({ smmus: [{ vhe: true }] });
    const hw = m.smmus[0]?.hw as SmmuV3;
    const dev = add(m, ACC);
    const p = proc(m);
    bind(svaDomain(m, dev, p.mm), dev);
    const cmds = record(hw);
    p.mm.flush(0x1000, 0x2000);
    p.mm.flushAll();
    expect(ops(cmds).filter((o) => o !== CMDQ_OP.CMD_SYNC && o !== CMDQ_OP.ATC_INV)).toEqual([
      CMDQ_OP.TLBI_EL2_VA,
      CMDQ_OP.TLBI_EL2_ASID,
    ]);
  });

  it("skipNotifierFlush: no command at all, and the stale TLB entry still answers", () => {
    const { m, hw, dev, p, buf, va } = bound({}, NIC);
    m.mem.write32(buf, 0x99);
    expect(dev.read32(va, PASID)).toBe(DMA_OK);
    m.driver.inject.skipNotifierFlush = true;
    clearPte(p, va);
    const cmds = record(hw);
    p.mm.flush(va, va + PAGE);
    expect(cmds).toEqual([]);
    expect(dev.read32(va, PASID)).toBe(DMA_OK);
    expect(dev.lo).toBe(0x99);
    m.driver.inject.skipNotifierFlush = false;
    p.mm.flush(va, va + PAGE);
    expect(dev.read32(va, PASID)).toBe(DMA_FAULT);
  });

  it("skipAtcOnNotifier: the TLBI and its sync only; the device's ATC still answers while the SMMU no longer translates", () => {
    const { m, hw, dev, p, d, buf, va } = bound();
    const nic = add(m, NIC);
    bind(d, nic);
    m.mem.write32(buf, 0x77);
    expect(dev.read32(va, PASID)).toBe(DMA_OK);
    expect(nic.read32(va, PASID)).toBe(DMA_OK);
    m.driver.inject.skipAtcOnNotifier = true;
    clearPte(p, va);
    const cmds = record(hw);
    p.mm.flush(va, va + PAGE);
    expect(ops(cmds)).toEqual([CMDQ_OP.TLBI_NH_VA, CMDQ_OP.CMD_SYNC]);
    expect(dev.read32(va, PASID)).toBe(DMA_OK);
    expect(dev.lo).toBe(0x77);
    expect(nic.read32(va, PASID)).toBe(DMA_FAULT);
  });
});

describe("one SVA domain per (mm, SMMU)", () => {
  it("two devices on one SMMU share the domain: one ASID, one notifier, both ATCs invalidated", () => {
    const { m, hw } = machine();
    const a = add(m, ACC);
    const b = add(m, { ...ACC, name: "acc1", rid: 0x11 });
    const p = proc(m);
    const d = svaDomain(m, a, p.mm);
    bind(d, a);
    bind(d, b);
    expect(cdOf(m, hw, 0x10, PASID).ASID).toBe(d.asid);
    expect(cdOf(m, hw, 0x11, PASID).ASID).toBe(d.asid);
    expect(p.mm.registered.size).toBe(1);
    const cmds = record(hw);
    p.mm.flush(0x5000, 0x6000);
    expect(cmdsOf(cmds, CMDQ_OP.TLBI_NH_VA)).toHaveLength(1);
    // Newest attachment first.
    expect(cmdsOf(cmds, CMDQ_OP.ATC_INV).map((c) => c.f.StreamID)).toEqual([0x11, 0x10]);
  });

  it("a device on another SMMU gets EINVAL from the first SMMU's domain, and its own domain (own ASID, own notifier) works", () => {
    const m = new SmmuMachine({ smmus: [{ sids: [0x10] }, { sids: [0x20] }] });
    const hw1 = m.smmus[1]?.hw as SmmuV3;
    const a = add(m, ACC);
    const c = add(m, { ...ACC, name: "far", rid: 0x20 });
    const p = proc(m);
    const buf = frame(m);
    mapUser(p, 0x9000, buf);
    const d0 = svaDomain(m, a, p.mm);
    bind(d0, a);
    expect(d0.ops.setDevPasid?.(d0, c, PASID, null)).toBe("EINVAL");
    expect(iommuAttachDevicePasid(d0, c, PASID)).toBe("EINVAL");
    expect(cdOf(m, hw1, 0x20, PASID).V).toBe(0);
    const d1 = svaDomain(m, c, p.mm);
    expect(d1.asid).not.toBe(d0.asid);
    bind(d1, c);
    expect(p.mm.registered.size).toBe(2);
    expect(c.read32(0x9000, PASID)).toBe(DMA_OK);
    const cmds = record(hw1);
    p.mm.flush(0x9000, 0xa000);
    expect(cmdsOf(cmds, CMDQ_OP.TLBI_NH_VA)[0]?.f.ASID).toBe(d1.asid);
    expect(c.read32(0x9000, PASID)).toBe(DMA_OK); // still mapped: the flush only dropped caches
  });
});

describe("release at process exit, then unbind", () => {
  it("every CD becomes the released form (hitlessly), then TLBI_NH_ASID and every ATC; DMAs fault without a record", () => {
    const { m, hw, dev, p, d, va } = bound();
    const nic = add(m, NIC);
    bind(d, nic);
    expect(dev.read32(va, PASID)).toBe(DMA_OK);
    expect(nic.read32(va, PASID)).toBe(DMA_OK);
    const cdAt = [hw.cdAddress(0x10, PASID), hw.cdAddress(NIC.rid, PASID)];
    let invalidSeen = false;
    const cmds: number[] = [];
    hw.commandObserver = (w) => {
      cmds.push((w[0] as number) & 0xff);
      for (const at of cdAt) if ((m.mem.read32(at) & (1 << 31)) === 0) invalidSeen = true;
    };
    p.mm.release();
    expect(invalidSeen).toBe(false);
    expect(d.released).toBe(true);
    const tail = cmds.slice(cmds.indexOf(CMDQ_OP.TLBI_NH_ASID));
    expect(tail).toEqual([
      CMDQ_OP.TLBI_NH_ASID,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.ATC_INV,
      CMDQ_OP.CMD_SYNC,
    ]);
    expect(
      cmds
        .slice(0, cmds.indexOf(CMDQ_OP.TLBI_NH_ASID))
        .every((o) => o === CMDQ_OP.CFGI_CD || o === CMDQ_OP.CMD_SYNC),
    ).toBe(true);
    for (const sid of [0x10, NIC.rid]) {
      expect(cdOf(m, hw, sid, PASID)).toMatchObject({
        V: 1,
        EPD0: 1,
        EPD1: 1,
        T0SZ: 0,
        TTB0: 0,
        S: 0,
        R: 0,
        A: 1,
        ASID: d.asid,
        MAIR0: MAIR[0],
      });
    }
    const before = m.driver.eventsTotal;
    expect(dev.read32(va, PASID)).toBe(DMA_FAULT);
    expect(nic.read32(va, PASID)).toBe(DMA_FAULT);
    m.processQueues();
    expect(m.driver.eventsTotal).toBe(before);
    // The mm is gone: no new attachment.
    const late = add(m, { ...NIC, name: "late", rid: 0x19 });
    expect(iommuAttachDevicePasid(d, late, PASID)).toBe("EINVAL");
  });

  it("with stalls forced the released CD keeps S and R", () => {
    const { m, hw, p } = bound(
      { stallModel: 2 },
      { name: "dma", rid: 0x10, isPci: false, pasidBits: 8 },
    );
    expect(cdOf(m, hw, 0x10, PASID)).toMatchObject({ S: 1, R: 1 });
    p.mm.release();
    expect(cdOf(m, hw, 0x10, PASID)).toMatchObject({ EPD0: 1, S: 1, R: 1 });
  });

  it("detach and free: the CD cleared, TLBI_NH_ASID before the ASID is back, no notifier left, the mm counts back", () => {
    const { m, hw, dev, p, d } = bound();
    const log: string[] = [];
    m.driver.hooks = { asidFreed: (a) => log.push(`-${a}`) };
    p.mm.release();
    expect(p.mm.count).toBe(3); // the mm's own, the notifier's, the core's
    expect(iommuDetachDevicePasid(d, dev, PASID)).toBe(0);
    expect(cdOf(m, hw, 0x10, PASID).V).toBe(0);
    expect(d.devices).toEqual([]);
    hw.commandObserver = (w) => {
      if (((w[0] as number) & 0xff) === CMDQ_OP.TLBI_NH_ASID) log.push("tlbi");
    };
    const asid = d.asid;
    iommuDomainFree(d);
    expect(log).toEqual(["tlbi", `-${asid}`]);
    expect(m.driver.asids.has(asid)).toBe(false);
    expect(d.freed).toBe(true);
    expect(p.mm.registered.size).toBe(0);
    expect(p.mm.count).toBe(1);
    expect(m.driver.master(dev)?.cdTable?.usedSsids).toBe(0);
  });

  it("unbind without exit: free puts the notifier, and the mm can be bound again", () => {
    const { m, dev, p, d, va } = bound();
    expect(iommuDetachDevicePasid(d, dev, PASID)).toBe(0);
    iommuDomainFree(d);
    expect(p.mm.registered.size).toBe(0);
    expect(m.driver.idsInUse).toBe(1); // the RID's DMA domain
    const again = svaDomain(m, dev, p.mm);
    bind(again, dev);
    expect(dev.read32(va, PASID)).toBe(DMA_OK);
  });
});

describe("IOPF for SVA attachments", () => {
  it("a stalling master joins the IOPF queue while bound: the stalled DMA is resolved by the handler and completes", () => {
    const { m, hw } = machine({ stallModel: 0 });
    const dev = add(m, { name: "dma", rid: 0x10, isPci: false, stall: true, pasidBits: 8 });
    const master = m.driver.master(dev);
    const p = proc(m);
    const buf = frame(m);
    m.mem.write32(buf + 8, 0x31);
    const d = svaDomain(m, dev, p.mm);
    d.iopfHandler = (g) => {
      mapUser(p, g.lastFault.fault.addr & ~0xfff, buf);
      iopfGroupResponse(g, IOMMU_PAGE_RESP_SUCCESS);
      return 0;
    };
    bind(d, dev);
    expect(cdOf(m, hw, 0x10, PASID).S).toBe(1);
    expect(master?.iopfRefcount).toBe(1);
    expect(dev.read32(0x3008, PASID)).toBe(DMA_STALLED);
    m.processQueues();
    expect(dev.read32(0x3008, PASID)).toBe(DMA_OK);
    expect(dev.lo).toBe(0x31);
    expect(iommuDetachDevicePasid(d, dev, PASID)).toBe(0);
    expect(master?.iopfRefcount).toBe(0);
    expect(dev.iommu?.faultParam).toBeNull();
  });

  it("a PRI master gets PRI enabled and its page requests reach the handler", () => {
    const { m } = machine();
    const dev = add(m, { ...ACC, pri: true });
    const p = proc(m);
    const buf = frame(m);
    const d = svaDomain(m, dev, p.mm);
    d.iopfHandler = (g) => {
      mapUser(p, g.lastFault.fault.addr & ~0xfff, buf);
      iopfGroupResponse(g, IOMMU_PAGE_RESP_SUCCESS);
      return 0;
    };
    bind(d, dev);
    expect(dev.priEnabled).toBe(true);
    expect(dev.write32(0x8000, 5, PASID)).toBe(DMA_PAGE_REQUESTED);
    m.processQueues();
    expect(dev.write32(0x8000, 5, PASID)).toBe(DMA_OK);
    expect(m.mem.read32(buf)).toBe(5);
  });

  it("a master that can neither stall nor request pages is bound without IOPF", () => {
    const { m, dev } = bound();
    expect(m.driver.master(dev)?.iopfRefcount).toBe(0);
    expect(dev.iommu?.faultParam).toBeNull();
  });

  it("PRI that cannot be reset (enabled behind the driver's back) fails the attach with ENODEV", () => {
    const { m, hw } = machine();
    const dev = add(m, { ...ACC, pri: true });
    expect(dev.enablePri(8)).toBe(0);
    const d = svaDomain(m, dev, proc(m).mm);
    expect(iommuAttachDevicePasid(d, dev, PASID)).toBe("ENODEV");
    expect(d.devices).toEqual([]);
    expect(cdOf(m, hw, 0x10, PASID).V).toBe(0);
    expect(m.driver.master(dev)?.iopfRefcount).toBe(0);
  });

  it("an IOPF queue that refuses the master fails the attach (EBUSY) with nothing installed", () => {
    const { m, hw } = machine();
    const dev = add(m, { ...ACC, pri: true });
    expect(new IopfQueue("other").addDevice(dev)).toBe(0);
    const p = proc(m);
    const d = svaDomain(m, dev, p.mm);
    expect(iommuAttachDevicePasid(d, dev, PASID)).toBe("EBUSY");
    expect(d.devices).toEqual([]);
    expect(cdOf(m, hw, 0x10, PASID).V).toBe(0);
    expect(p.mm.users).toBe(1);
  });
});

describe("errno paths", () => {
  it("domainAllocSva: ENODEV for an unprobed device", () => {
    const { m } = machine();
    const p = proc(m);
    expect(m.driver.domainAllocSva(new Device({ name: "x", rid: 1 }), p.mm)).toBe("ENODEV");
  });

  it("domainAllocSva: EOPNOTSUPP without FEAT_SVA, for an x86-64 mm, and for an mm of another page or VA size", () => {
    const plain = machine({ cohacc: false });
    expect(plain.m.driver.domainAllocSva(add(plain.m, ACC), proc(plain.m).mm)).toBe("EOPNOTSUPP");
    const { m } = machine();
    const dev = add(m, ACC);
    const pgd = frame(m);
    expect(m.driver.domainAllocSva(dev, new TestMm({ pgd }))).toBe("EOPNOTSUPP");
    const mm57 = new TestMm({ pgd, pgtableFormat: "aarch64", vaBits: 52 });
    expect(m.driver.domainAllocSva(dev, mm57)).toBe("EOPNOTSUPP");
    expect(m.driver.idsInUse).toBe(1);
  });

  it("domainAllocSva: ENOMEM when no ASID is left", () => {
    // 8-bit ASIDs on the SMMU need CPUs with 8-bit ASIDs for FEAT_SVA.
    const { m } = withCpu({ asidBits: 8 }, { asidBits: 8 });
    const dev = add(m, ACC);
    const p = proc(m);
    for (let a = 1; a < 256; a++) if (!m.driver.asids.has(a)) m.driver.asids.allocRange(a, a);
    expect(m.driver.domainAllocSva(dev, p.mm)).toBe("ENOMEM");
    expect(p.mm.registered.size).toBe(0);
  });

  it("domainAllocSva: the registration's EINVAL for an exited mm, with the ASID given back", () => {
    const { m } = machine();
    const dev = add(m, ACC);
    const p = proc(m);
    p.mm.release();
    const log: string[] = [];
    m.driver.hooks = {
      asidAllocated: (a) => log.push(`+${a}`),
      asidFreed: (a) => log.push(`-${a}`),
    };
    expect(m.driver.domainAllocSva(dev, p.mm)).toBe("EINVAL");
    expect(log).toHaveLength(2);
    expect(log[1]).toBe(log[0]?.replace("+", "-"));
    expect(m.driver.idsInUse).toBe(1);
  });

  it("setDevPasid: ENODEV for an unprobed device, EOPNOTSUPP for a master of an SMMU without SVA", () => {
    const m = new SmmuMachine({
      smmus: [{ sids: [0x10] }, { sids: [0x20], features: { cohacc: false } }],
    });
    const a = add(m, ACC);
    const c = add(m, { ...ACC, name: "far", rid: 0x20 });
    const d = svaDomain(m, a, proc(m).mm);
    expect(d.ops.setDevPasid?.(d, new Device({ name: "x", rid: 1 }), PASID, null)).toBe("ENODEV");
    expect(d.ops.setDevPasid?.(d, c, PASID, null)).toBe("EOPNOTSUPP");
  });

  it("setDevPasid: EINVAL for a PASID beyond the master's SubstreamIDs and for a stage-2 RID (no CD table)", () => {
    const { m, hw } = machine();
    const dev = add(m, ACC);
    const d = svaDomain(m, dev, proc(m).mm);
    expect(d.ops.setDevPasid?.(d, dev, 256, null)).toBe("EINVAL");
    expect(d.ops.setDevPasid?.(d, dev, 0, null)).toBe("EINVAL");
    const s2 = add(m, { ...ACC, name: "s2dev", rid: 0x12 });
    expect(iommuAttachDevice(paging(s2, IOMMU_HWPT_ALLOC_NEST_PARENT), s2)).toBe(0);
    expect(iommuAttachDevicePasid(d, s2, PASID)).toBe("EINVAL");
    expect(steOf(m, hw, 0x12).Config).toBe(6);
    expect(d.devices).toEqual([]);
  });

  it("setDevPasid: ENOMEM without a frame for the CD leaf table, the mm reference given back", () => {
    const { m } = machine();
    const dev = add(m, { ...ACC, pasidBits: 20 });
    const p = proc(m);
    const d = svaDomain(m, dev, p.mm);
    const held: number[] = [];
    for (;;) {
      const pa = m.frames.alloc(0);
      if (typeof pa !== "number") break;
      held.push(pa);
    }
    expect(d.ops.setDevPasid?.(d, dev, 70000, null)).toBe("ENOMEM");
    expect(p.mm.users).toBe(1);
    for (const pa of held) m.frames.free(pa, 0);
  });

  it("the SVA domain cannot be attached at a RID", () => {
    const { m, dev, d } = bound();
    expect(d.ops.attachDev(d, dev, null)).toBe("EINVAL");
    expect(() => d.pgtable).toThrow(/no io-pgtable/);
    expect(m.driver.master(dev)?.pasids.get(PASID)).toBe(d);
  });
});

describe("hardware: the SVA CD over an AArch64 table (no driver)", () => {
  function hwSva(cd: Record<string, number>, leaf: { af?: boolean; dbm?: boolean; ro?: boolean }) {
    const t = new SmmuTestMachine({ features: { httu: 2 } });
    const pt = t.b.lpae(1, 12, 48);
    const buf = t.b.frame();
    const va = 0x5555_0000_0000;
    const at = pt.map(va, buf, 3, {
      ap: 1 | (leaf.ro ? 2 : 0),
      pxn: true,
      uxn: true,
      af: leaf.af,
      dbm: leaf.dbm,
    });
    const cdt = t.b.cdTable(4);
    t.b.setCd(cdt, 3, { ...t.b.s1CdFields(pt, 9), ASET: 1, ...cd });
    t.b.setSte(t.st, 1, { Config: 5, S1ContextPtr: cdt.ptr, S1CDMax: 4, S1STALLD: 1 });
    return { t, at, va };
  }

  it("HA sets the Access flag in the process's descriptor instead of faulting", () => {
    const { t, at, va } = hwSva({ HA: 1 }, { af: false });
    expect(t.mem.read32(at) & (1 << 10)).toBe(0);
    expect(t.dma(1, 3, va).status).toBe(0);
    expect(t.mem.read32(at) & (1 << 10)).not.toBe(0);
    const off = hwSva({}, { af: false });
    expect(off.t.dma(1, 3, off.va).status).not.toBe(0);
    expect(off.t.events().map((e) => e.id)).toEqual([EVT_ID.F_ACCESS]);
  });

  it("HD makes a writable-clean (DBM, AP[2]) page dirty on a write; without HD the write faults", () => {
    const { t, at, va } = hwSva({ HA: 1, HD: 1 }, { ro: true, dbm: true });
    expect(t.mem.read32(at) & (1 << 7)).not.toBe(0);
    expect(t.dma(1, 3, va, 2).status).toBe(0);
    expect(t.mem.read32(at) & (1 << 7)).toBe(0);
    const off = hwSva({ HA: 1 }, { ro: true, dbm: true });
    expect(off.t.dma(1, 3, off.va, 2).status).not.toBe(0);
    expect(off.t.events().map((e) => e.id)).toEqual([EVT_ID.F_PERMISSION]);
  });

  it("EPD0 (the released CD) is a translation fault for every address", () => {
    const { t, va } = hwSva({ EPD0: 1 }, {});
    expect(t.dma(1, 3, va).status).not.toBe(0);
    expect(t.events().map((e) => e.id)).toEqual([EVT_ID.F_TRANSLATION]);
  });
});
