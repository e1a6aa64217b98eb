// The SMMUv3 driver against the SMMUv3 model, through registers, memory and queues only: bring-up,
// stream and CD tables, every kind of domain with real DMAs, PASIDs, ATS, invalidation commands,
// page requests and stalls into IOPF, every error path, and what is given back at teardown.

import { fc, test } from "@fast-check/vitest";
import {
  Device,
  DMA_BIDIRECTIONAL,
  DMA_FAULT,
  DMA_OK,
  DMA_PAGE_REQUESTED,
  DMA_READ,
  DMA_STALLED,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_NO_PASID,
  IOMMU_PAGE_RESP_SUCCESS,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuAllocGlobalPasid,
  iommuAttachDevice,
  iommuAttachDevicePasid,
  iommuDetachDevice,
  iommuDetachDevicePasid,
  iommuDevEnableFeature,
  iommuDmaMapPhys,
  iommuDmaUnmapPhys,
  iommuDomainAllocNested,
  iommuDomainFree,
  iommuFreeGlobalPasid,
  iommuMap,
  iommuPagingDomainAlloc,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
  iopfGroupResponse,
  NO_PASID,
} from "@iommu-sim/iommu-core";
import { encode, type Mmio } from "@iommu-sim/iommu-core/platform";
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
} from "../../test/driver-kit.js";
import { CMDQ_OP } from "../format/commands.js";
import { EVT_ID } from "../format/events.js";
import { CR0_SMMUEN, CR2_E2H, CR2_RECINVSID, SMMU_REG } from "../format/registers.js";
import {
  S1DSS_BYPASS,
  S1DSS_SSID0,
  S1DSS_TERMINATE,
  STE,
  STE_CFG_ABORT,
  STE_CFG_BYPASS,
  STE_CFG_S1_TRANS,
  STRTAB_FMT_2LVL,
} from "../format/ste.js";
import { SmmuV3 } from "../hw/smmu-v3.js";
import { SmmuMachine } from "../testing/smmu-machine.js";
import { makeS1Cd } from "./entries.js";
import { ARM_SMMU_DOMAIN_S2, ArmSmmuNestedDomain } from "./smmu-domain.js";
import { atcSpan } from "./smmu-v3-driver.js";

const PAGE = 4096;
const RW = IOMMU_READ | IOMMU_WRITE;

/** The driver reaching an SMMU through register overrides (for ID registers the model never has). */
function overridden(hw: SmmuV3, reg: number, value: (v: number) => number): Mmio {
  return {
    read32: (o) => (o === reg ? value(hw.read32(o)) >>> 0 : hw.read32(o)),
    write32: (o, v) => hw.write32(o, v),
  };
}

describe("bring-up through the registers", () => {
  it("ends with CMDQ, EVENTQ, PRIQ, ATSCHK and SMMUEN acknowledged in CR0ACK, CR1 WB/ISH, CR2 RECINVSID|PTM", () => {
    const { hw, smmu } = machine();
    expect(hw.read32(SMMU_REG.CR0ACK)).toBe(0x1f);
    expect(hw.read32(SMMU_REG.CR0)).toBe(0x1f);
    expect(hw.read32(SMMU_REG.CR1)).toBe(0xd75);
    // PTM exists only with BTM in the model; RECINVSID always.
    expect(hw.read32(SMMU_REG.CR2) & CR2_RECINVSID).toBe(CR2_RECINVSID);
    expect(hw.read32(SMMU_REG.IRQ_CTRLACK)).toBe(7);
    expect(hw.enabled).toBe(true);
    // CMDQ_BASE: RA, the queue's address, LOG2SIZE.
    expect(hw.read32(SMMU_REG.CMDQ_BASE)).toBe((smmu.cmdq.base | smmu.cmdq.log2) >>> 0);
    expect(hw.read32(SMMU_REG.CMDQ_BASE + 4) >>> 30).toBe(1);
    expect(hw.read32(SMMU_REG.EVENTQ_BASE) & 31).toBe(smmu.evtq.log2);
    expect(hw.read32(SMMU_REG.PRIQ_BASE) & 31).toBe(smmu.priq?.log2);
  });

  it("caps the queues at the kernel's largest allocation (Q_MAX_SZ_SHIFT) and shrinks one that does not fit", () => {
    const { smmu } = machine({ cmdqs: 19, eventqs: 19, priqs: 19 });
    // 4 MiB blocks: 2^18 commands, 2^17 events, 2^18 PRI requests.
    expect(smmu.cmdq.log2).toBe(18);
    expect(smmu.evtq.log2).toBe(17);
    expect(smmu.priq?.log2).toBe(18);
    // 7 MiB: the command queue takes 4, the event queue shrinks to 2 (2^16 events).
    const small = machine({ cmdqs: 19, eventqs: 19, pri: false }, { framesSize: 7 * 2 ** 20 });
    expect(small.smmu.cmdq.log2).toBe(18);
    expect(small.smmu.evtq.log2).toBe(16);
    expect(small.smmu.priq).toBeNull();
  });

  it.each([
    ["linear", 6, 0, 6],
    ["linear when SIDSIZE fits one L2 table", 8, 0, 8],
    ["2-level with SPLIT 8", 16, STRTAB_FMT_2LVL, 16],
  ])("the stream table is %s (SIDSIZE %i)", (_n, sidBits, fmt, log2) => {
    const { hw, smmu } = machine({ sidBits });
    const cfg = hw.read32(SMMU_REG.STRTAB_BASE_CFG);
    expect((cfg >>> 16) & 3).toBe(fmt);
    expect(cfg & 0x3f).toBe(log2);
    expect((cfg >>> 6) & 0x1f).toBe(fmt === STRTAB_FMT_2LVL ? 8 : 0);
    expect(hw.read32(SMMU_REG.STRTAB_BASE)).toBe(smmu.strtab.base % 2 ** 32);
    expect(hw.read32(SMMU_REG.STRTAB_BASE + 4) >>> 30).toBe(1);
    expect(smmu.strtab.fmt).toBe(fmt);
  });

  it("a linear stream table starts with every STE an abort STE (V = 1, Config = abort)", () => {
    const { m, hw } = machine({ sidBits: 6, twoLevelStreamTable: false });
    for (const sid of [0, 17, 63]) expect(steOf(m, hw, sid)).toMatchObject({ V: 1, Config: 0 });
  });

  it("issues CFGI_ALL, TLBI_EL2_ALL (Hyp) and TLBI_NSNH_ALL, each with its own CMD_SYNC, after CMDQEN", () => {
    const m = new SmmuMachine({ smmus: [] });
    const hw = new SmmuV3({ name: "smmu0", mem: m.mem });
    const cmds = record(hw);
    expect(typeof m.driver.addSmmu({ name: "smmu0", mmio: hw })).toBe("object");
    expect(ops(cmds)).toEqual([
      CMDQ_OP.CFGI_STE_RANGE,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.TLBI_EL2_ALL,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.TLBI_NSNH_ALL,
      CMDQ_OP.CMD_SYNC,
    ]);
    expect(cmds[0]?.f.Range).toBe(31);
    const noHyp = new SmmuV3({ name: "smmu1", mem: m.mem, features: { hyp: false } });
    const c2 = record(noHyp);
    m.driver.addSmmu({ name: "smmu1", mmio: noHyp, sids: [0x4000] });
    expect(ops(c2)).not.toContain(CMDQ_OP.TLBI_EL2_ALL);
  });

  it("a VHE host sets CR2.E2H and makes stage-1 STEs EL2 and stage-1 invalidations TLBI_EL2_*", () => {
    const m = new SmmuMachine({ smmus: [{ vhe: true }] });
    const s = m.smmus[0] as { hw: SmmuV3 };
    expect(s.hw.read32(SMMU_REG.CR2) & CR2_E2H).toBe(CR2_E2H);
    const dev = add(m, { name: "nic0", rid: 0x10 });
    expect(steOf(m, s.hw, 0x10).STRW).toBe(2);
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(iommuMap(d, 0x40000, frame(m), PAGE, RW)).toBe(0);
    const cmds = record(s.hw);
    iommuUnmap(d, 0x40000, PAGE);
    m.driver.tlbInvContext(d);
    expect(ops(cmds)).toEqual([
      CMDQ_OP.TLBI_EL2_VA,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.TLBI_EL2_ASID,
      CMDQ_OP.CMD_SYNC,
    ]);
  });
});

describe("stream table and CD tables", () => {
  it("allocates an L2 stream table with the first master of its 256 StreamIDs, and writes its L1 descriptor (Span 9)", () => {
    const { m, hw, smmu } = machine();
    expect(smmu.l2Tables.size).toBe(0);
    add(m, { name: "a", rid: 0x0310 });
    add(m, { name: "b", rid: 0x03f0 });
    expect(smmu.l2Tables.size).toBe(1);
    add(m, { name: "c", rid: 0x1200 });
    expect(smmu.l2Tables.size).toBe(2);
    const l2 = smmu.l2Tables.get(3) as number;
    const lo = m.mem.read64(smmu.strtab.base + 3 * 8);
    expect(lo & 0x1f).toBe(9);
    expect((lo & ~0x3f) >>> 0).toBe(l2 % 2 ** 32);
    expect(hw.steAddress(0x0310)).toBe(l2 + 0x10 * 64);
    // The rest of the span stays abort.
    expect(steOf(m, hw, 0x0311)).toMatchObject({ V: 1, Config: STE_CFG_ABORT });
  });

  it("an STE change is CFGI_STE (leaf) + CMD_SYNC per step, then CMD_PREFETCH_CONFIG with no sync", () => {
    const { m, hw } = machine();
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const cmds = record(hw);
    expect(iommuAttachDevice(m.driver.identityDomain, dev)).toBe(0);
    const steOps = ops(cmds).filter((o) => o !== CMDQ_OP.CFGI_CD);
    // cdtable -> bypass is hitless in three steps (KUnit: 3 syncs).
    expect(steOps.slice(0, 7)).toEqual([
      CMDQ_OP.CFGI_STE,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.CFGI_STE,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.CFGI_STE,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.PREFETCH_CONFIG,
    ]);
    expect(cmds.find((c) => c.op === CMDQ_OP.CFGI_STE)?.f).toMatchObject({
      StreamID: 0x10,
      Leaf: 1,
    });
    expect(cmds.find((c) => c.op === CMDQ_OP.PREFETCH_CONFIG)?.f.StreamID).toBe(0x10);
  });

  it("a master without SubstreamIDs gets a one-CD table and an STE with S1CDMax 0 and S1DSS SSID0", () => {
    const { m, hw } = machine();
    add(m, { name: "nic0", rid: 0x10 });
    expect(steOf(m, hw, 0x10)).toMatchObject({
      V: 1,
      Config: STE_CFG_S1_TRANS,
      S1Fmt: 0,
      S1CDMax: 0,
      S1DSS: S1DSS_SSID0,
    });
    expect(cdOf(m, hw, 0x10, 0)).toMatchObject({ V: 1, AA64: 1, ASET: 1, EPD1: 1 });
  });

  it("PASIDs: a linear CD table up to 1024 CDs, a 2-level one beyond, with leaf tables made on first use", () => {
    const { m, hw } = machine();
    const lin = add(m, { name: "lin", rid: 0x10, pasidBits: 8 });
    const big = add(m, { name: "big", rid: 0x20, pasidBits: 20 });
    expect(steOf(m, hw, 0x10)).toMatchObject({ S1Fmt: 0, S1CDMax: 8 });
    expect(steOf(m, hw, 0x20)).toMatchObject({ S1Fmt: 2, S1CDMax: 20 });
    const d = paging(big);
    const cmds = record(hw);
    expect(iommuAttachDevicePasid(d, big, 5000)).toBe(0);
    // The new L1 descriptor is synced non-leaf before the CD itself goes in.
    const cfgi = cmds.filter((c) => c.op === CMDQ_OP.CFGI_CD);
    expect(cfgi[0]?.f).toMatchObject({ StreamID: 0x20, SubstreamID: 5000, Leaf: 0 });
    expect(cfgi.slice(1).every((c) => c.f.Leaf === 1)).toBe(true);
    expect(cdOf(m, hw, 0x20, 5000)).toMatchObject({ V: 1, ASID: d.asid });
    const buf = frame(m);
    m.mem.write32(buf, 0x1234);
    expect(iommuMap(d, 0x40000, buf, PAGE, RW)).toBe(0);
    expect(big.read32(0x40000, 5000)).toBe(DMA_OK);
    expect(big.lo).toBe(0x1234);
    expect(big.read32(0x40000)).toBe(DMA_FAULT);
    const d2 = paging(lin);
    expect(iommuAttachDevicePasid(d2, lin, 200)).toBe(0);
    expect(iommuMap(d2, 0x40000, buf, PAGE, IOMMU_READ)).toBe(0);
    expect(lin.read32(0x40000, 200)).toBe(DMA_OK);
  });

  it("without 2-level CD tables a master gets at most 1024 SubstreamIDs", () => {
    const { m } = machine({ cd2l: false });
    const dev = add(m, { name: "acc", rid: 0x10, pasidBits: 20 });
    expect(m.driver.master(dev)?.ssidBits).toBe(10);
    const d = paging(dev);
    expect(d.ops.setDevPasid?.(d, dev, 1024, null)).toBe("EINVAL");
  });

  it("release gives the CD table (and its leaf tables) back", () => {
    const { m } = machine();
    const base = m.frames.liveFrames;
    const dev = add(m, { name: "big", rid: 0x20, pasidBits: 20 });
    const d = paging(dev);
    expect(iommuAttachDevicePasid(d, dev, 5000)).toBe(0);
    expect(iommuAttachDevicePasid(d, dev, 9000)).toBe(0);
    expect(iommuDetachDevicePasid(d, dev, 5000)).toBe(0);
    expect(iommuDetachDevicePasid(d, dev, 9000)).toBe(0);
    expect(m.removeDevice(dev)).toBe(0);
    iommuDomainFree(d);
    // Only the L2 stream table stays (the kernel keeps it for the SMMU's life).
    expect(m.frames.liveFrames).toBe(base + 4);
  });
});

describe("domains: DMAs through each kind", () => {
  it("stage 1: a DMA-API buffer the device reads and writes, faulting after the unmap", () => {
    const { m } = machine();
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const buf = frame(m);
    m.mem.write32(buf + 8, 0xdeadbeef);
    const dma = iommuDmaMapPhys(dev, buf, PAGE, DMA_BIDIRECTIONAL);
    if (typeof dma !== "number") throw new Error(String(dma));
    expect(dev.read32(dma + 8)).toBe(DMA_OK);
    expect(dev.lo >>> 0).toBe(0xdeadbeef);
    expect(dev.write32(dma + 16, 7)).toBe(DMA_OK);
    expect(m.mem.read32(buf + 16)).toBe(7);
    iommuDmaUnmapPhys(dev, dma, PAGE, DMA_BIDIRECTIONAL);
    expect(dev.read32(dma + 8)).toBe(DMA_FAULT);
  });

  it("stage 2 (nesting parent): an S2 STE with the domain's VMID; read-only mappings refuse writes", () => {
    const { m, hw } = machine();
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const d = paging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    expect(d.stage).toBe(ARM_SMMU_DOMAIN_S2);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(steOf(m, hw, 0x10)).toMatchObject({ Config: 6, S2VMID: d.vmid, S2AA64: 1, S2R: 1 });
    const buf = frame(m);
    expect(iommuMap(d, 0x80000, buf, PAGE, IOMMU_READ)).toBe(0);
    expect(dev.read32(0x80000)).toBe(DMA_OK);
    expect(dev.write32(0x80000, 1)).toBe(DMA_FAULT);
  });

  it("a stage-2-only SMMU gives stage-2 domains by default", () => {
    const { m } = machine({ s1p: false });
    const dev = add(m, { name: "nic0", rid: 0x10 });
    expect(paging(dev).stage).toBe(ARM_SMMU_DOMAIN_S2);
  });

  it("identity passes DMAs through (bypass STE, SHCFG incoming); blocked aborts them", () => {
    const { m, hw } = machine();
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const buf = frame(m);
    m.mem.write32(buf, 99);
    expect(iommuAttachDevice(m.driver.identityDomain, dev)).toBe(0);
    expect(steOf(m, hw, 0x10)).toMatchObject({ Config: STE_CFG_BYPASS, SHCFG: 1 });
    expect(dev.read32(buf)).toBe(DMA_OK);
    expect(dev.lo).toBe(99);
    const m2 = machine();
    const dev2 = add(m2.m, { name: "nic0", rid: 0x10 });
    expect(iommuAttachDevice(m2.m.driver.blockedDomain, dev2)).toBe(0);
    expect(steOf(m2.m, m2.hw, 0x10)).toMatchObject({ Config: STE_CFG_ABORT });
    expect(dev2.read32(0x1000)).toBe(DMA_FAULT);
  });

  it("identity or blocked RID with PASIDs in use keeps a CD-table STE with S1DSS bypass or terminate", () => {
    const { m, hw } = machine({}, { defaultDomain: "identity" });
    const dev = add(m, { name: "acc", rid: 0x10, pasidBits: 8 });
    expect(steOf(m, hw, 0x10).Config).toBe(STE_CFG_BYPASS);
    const d = paging(dev);
    const buf = frame(m);
    m.mem.write32(buf, 5);
    expect(iommuMap(d, 0x40000, buf, PAGE, RW)).toBe(0);
    expect(iommuAttachDevicePasid(d, dev, 3)).toBe(0);
    expect(steOf(m, hw, 0x10)).toMatchObject({ Config: STE_CFG_S1_TRANS, S1DSS: S1DSS_BYPASS });
    expect(dev.read32(0x40000, 3)).toBe(DMA_OK);
    expect(dev.read32(buf)).toBe(DMA_OK);
    expect(iommuDetachDevicePasid(d, dev, 3)).toBe(0);
    // The last PASID gone: the plain bypass STE again.
    expect(steOf(m, hw, 0x10).Config).toBe(STE_CFG_BYPASS);
    expect(m.driver.master(dev)?.cdTable?.usedSsids).toBe(0);
  });

  it("a PASID on a stage-2 RID is refused (EINVAL); a blocked RID with a PASID uses S1DSS terminate", () => {
    const { m, hw } = machine();
    const dev = add(m, { name: "acc", rid: 0x10, pasidBits: 8 });
    const s2 = paging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    expect(iommuAttachDevice(s2, dev)).toBe(0);
    const s1 = paging(dev);
    expect(s1.ops.setDevPasid?.(s1, dev, 3, null)).toBe("EINVAL");
    const m2 = machine();
    const dev2 = add(m2.m, { name: "acc", rid: 0x10, pasidBits: 8 });
    expect(iommuAttachDevice(m2.m.driver.blockedDomain, dev2)).toBe(0);
    const d = paging(dev2);
    expect(iommuAttachDevicePasid(d, dev2, 3)).toBe(0);
    expect(steOf(m2.m, m2.hw, 0x10)).toMatchObject({ S1DSS: S1DSS_TERMINATE });
    expect(dev2.read32(0x1000)).toBe(DMA_FAULT);
    void hw;
  });

  it("nested: the guest's vSTE (abort, bypass = the parent's stage 2, stage 1 with a CD table in IPA space)", () => {
    const { m, hw } = machine();
    const dev = add(m, { name: "vf0", rid: 0x10 });
    const parent = paging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    // The guest's RAM: IPA = PA over the frame pool.
    expect(iommuMap(parent, 16 * 2 ** 20, 16 * 2 ** 20, 256 * 2 ** 20, RW)).toBe(0);
    const buf = frame(m);
    m.mem.write32(buf, 0xabc);
    const vste = (cfg: number, extra: Record<string, number> = {}) =>
      Array.from(encode(STE, { V: 1, Config: cfg, ...extra })).slice(0, 4);
    const abort = iommuDomainAllocNested(dev, parent, 0, { vste: vste(STE_CFG_ABORT) });
    expect(abort).toBeInstanceOf(ArmSmmuNestedDomain);
    expect(iommuAttachDevice(abort as IommuDomain, dev)).toBe(0);
    expect(dev.read32(buf)).toBe(DMA_FAULT);
    expect(iommuDetachDevice(abort as IommuDomain, dev)).toBe(0);
    const bypass = iommuDomainAllocNested(dev, parent, 0, { vste: vste(STE_CFG_BYPASS) });
    expect(iommuAttachDevice(bypass as IommuDomain, dev)).toBe(0);
    expect(steOf(m, hw, 0x10).Config).toBe(6);
    expect(dev.read32(buf)).toBe(DMA_OK);
    expect(dev.lo).toBe(0xabc);
    expect(iommuDetachDevice(bypass as IommuDomain, dev)).toBe(0);
    // A guest stage 1: its table built by a stage-1 domain nobody attaches, its CD in a frame.
    const guest = paging(dev);
    expect(iommuMap(guest, 0x7000_0000, buf, PAGE, RW)).toBe(0);
    const cdPa = frame(m);
    const cd = new Uint32Array(16);
    makeS1Cd(cd, {
      asid: 9,
      ttb0: guest.pgtable.rootPa,
      t0sz: 16,
      tg0: 0,
      irgn0: 1,
      orgn0: 1,
      sh0: 3,
      ips: 5,
      mair: [0xf404ff44, 0],
      stallEnabled: false,
    });
    for (let i = 0; i < 16; i++) m.mem.write32(cdPa + 4 * i, cd[i] as number);
    const s1 = iommuDomainAllocNested(dev, parent, 0, {
      vste: vste(STE_CFG_S1_TRANS, { S1ContextPtr: cdPa, S1DSS: 0 }),
    });
    expect(iommuAttachDevice(s1 as IommuDomain, dev)).toBe(0);
    expect(steOf(m, hw, 0x10)).toMatchObject({ Config: 7, MEV: 1, S2VMID: parent.vmid });
    expect(dev.read32(0x7000_0000)).toBe(DMA_OK);
    expect(dev.lo).toBe(0xabc);
    expect(dev.read32(0x7000_1000)).toBe(DMA_FAULT);
  });

  it("a vSTE with bits the guest may not set is refused (EINVAL), as is a non-nesting parent", () => {
    const { m } = machine();
    const dev = add(m, { name: "vf0", rid: 0x10 });
    const parent = paging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    const bad = Array.from(encode(STE, { V: 1, Config: STE_CFG_BYPASS, STRW: 2 })).slice(0, 4);
    expect(iommuDomainAllocNested(dev, parent, 0, { vste: bad })).toBe("EINVAL");
    expect(iommuDomainAllocNested(dev, parent, 0, { vste: [1] })).toBe("EINVAL");
    expect(iommuDomainAllocNested(dev, parent, 1, { vste: [1, 0, 0, 0] })).toBe("EOPNOTSUPP");
    expect(iommuDomainAllocNested(dev, paging(dev), 0, { vste: [1, 0, 0, 0] })).toBe("EINVAL");
  });
});

describe("ATS", () => {
  it("enable: ATC_INV of everything (SSV 0) and its sync before the device's ATS goes on, after the EATS STE", () => {
    const { m, hw } = machine({}, { defaultDomain: "identity" });
    const dev = add(m, { name: "nic0", rid: 0x10, ats: true });
    expect(dev.atsEnabled).toBe(false);
    const seen: [number, boolean][] = [];
    hw.commandObserver = (w) => seen.push([(w[0] as number) & 0xff, dev.atsEnabled]);
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(steOf(m, hw, 0x10).EATS).toBe(1);
    const atc = seen.findIndex((s) => s[0] === CMDQ_OP.ATC_INV);
    const lastCfgi = seen.map((s) => s[0]).lastIndexOf(CMDQ_OP.CFGI_STE);
    expect(atc).toBeGreaterThan(lastCfgi);
    expect(seen[atc]?.[1]).toBe(false);
    expect(seen[atc + 1]).toEqual([CMDQ_OP.CMD_SYNC, false]);
    expect(dev.atsEnabled).toBe(true);
    expect(dev.atsStu).toBe(12);
  });

  it("disable: the device's ATS goes off before the STE loses EATS, then the whole ATC is invalidated", () => {
    const { m, hw } = machine();
    const dev = add(m, { name: "nic0", rid: 0x10, ats: true });
    expect(dev.atsEnabled).toBe(true);
    const seen: [number, boolean][] = [];
    hw.commandObserver = (w) => seen.push([(w[0] as number) & 0xff, dev.atsEnabled]);
    expect(iommuAttachDevice(m.driver.identityDomain, dev)).toBe(0);
    expect(seen.every((s) => !s[1])).toBe(true);
    expect(steOf(m, hw, 0x10).EATS).toBe(0);
    const op = seen.map((s) => s[0]);
    const atc = op.indexOf(CMDQ_OP.ATC_INV);
    expect(atc).toBeGreaterThan(op.lastIndexOf(CMDQ_OP.CFGI_STE));
    expect(op[atc + 1]).toBe(CMDQ_OP.CMD_SYNC);
    // CD 0 is cleared last, once the old domain let go of the master.
    expect(op.lastIndexOf(CMDQ_OP.CFGI_CD)).toBeGreaterThan(atc);
  });

  it("an unmap sends the TLBI, its sync, then ATC_INV over the covering power-of-two span and a sync", () => {
    const { m, hw } = machine();
    const dev = add(m, { name: "nic0", rid: 0x10, ats: true });
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    const buf = frame(m);
    for (let p = 7; p <= 10; p++) expect(iommuMap(d, p * PAGE, buf, PAGE, RW)).toBe(0);
    const cmds = record(hw);
    expect(iommuUnmap(d, 7 * PAGE, 4 * PAGE)).toBe(4 * PAGE);
    expect(ops(cmds)).toEqual([
      CMDQ_OP.TLBI_NH_VA,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.ATC_INV,
      CMDQ_OP.CMD_SYNC,
    ]);
    // Pages 7..10 need the 16 pages at 0.
    expect(cmds[2]?.f).toMatchObject({ StreamID: 0x10, SSV: 0, Size: 4, Address: 0 });
  });

  it("a PASID's ATC is invalidated with SSV and its SubstreamID", () => {
    const { m, hw } = machine();
    const dev = add(m, { name: "acc", rid: 0x10, ats: true, pasidBits: 8 });
    const d = paging(dev);
    expect(iommuAttachDevicePasid(d, dev, 4)).toBe(0);
    expect(iommuMap(d, 0x40000, frame(m), PAGE, RW)).toBe(0);
    const cmds = record(hw);
    iommuUnmap(d, 0x40000, PAGE);
    const atc = cmds.find((c) => c.op === CMDQ_OP.ATC_INV);
    expect(atc?.f).toMatchObject({ SSV: 1, SubstreamID: 4, Size: 0, Address: 0x40000 });
  });

  test.prop([fc.integer({ min: 0, max: 2 ** 36 }), fc.integer({ min: 1, max: 2 ** 24 })], {
    seed: 7,
  })(
    "atcSpan is the smallest aligned power-of-two run of 4K pages holding the range",
    (iova, size) => {
      const { addr, log2 } = atcSpan(iova, size);
      const first = Math.floor(iova / PAGE);
      const last = Math.floor((iova + size - 1) / PAGE);
      let ref = 0;
      while (Math.floor(first / 2 ** ref) !== Math.floor(last / 2 ** ref)) ref++;
      expect(log2).toBe(ref);
      expect(addr % (PAGE * 2 ** log2)).toBe(0);
      expect(addr).toBeLessThanOrEqual(first * PAGE);
      expect(addr + PAGE * 2 ** log2).toBeGreaterThan(last * PAGE);
    },
  );
});

describe("TLB invalidation commands", () => {
  function unmapCmds(ril: boolean, pages: number, at = 0x200000): Cmd[] {
    const { m, hw } = machine({ ril });
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    const buf = frame(m);
    for (let i = 0; i < pages; i++) iommuMap(d, at + i * PAGE, buf, PAGE, RW);
    const cmds = record(hw);
    expect(iommuUnmap(d, at, pages * PAGE)).toBe(pages * PAGE);
    return cmds;
  }

  it("without RIL: one TLBI_NH_VA per page (Leaf, ASID, no TG/TTL/NUM/SCALE), one CMD_SYNC", () => {
    const cmds = unmapCmds(false, 3);
    expect(ops(cmds)).toEqual([
      CMDQ_OP.TLBI_NH_VA,
      CMDQ_OP.TLBI_NH_VA,
      CMDQ_OP.TLBI_NH_VA,
      CMDQ_OP.CMD_SYNC,
    ]);
    expect(cmds.slice(0, 3).map((c) => c.f.Address)).toEqual([0x200000, 0x201000, 0x202000]);
    for (const c of cmds.slice(0, 3))
      expect(c.f).toMatchObject({ Leaf: 1, TG: 0, TTL: 0, NUM: 0, SCALE: 0, VMID: 0 });
  });

  it("with RIL: 3 pages in one range command (TG 4K, TTL 3, SCALE 0, NUM 2)", () => {
    const cmds = unmapCmds(true, 3);
    expect(ops(cmds)).toEqual([CMDQ_OP.TLBI_NH_VA, CMDQ_OP.CMD_SYNC]);
    expect(cmds[0]?.f).toMatchObject({
      Leaf: 1,
      TG: 1,
      TTL: 3,
      SCALE: 0,
      NUM: 2,
      Address: 0x200000,
    });
  });

  it("with RIL: 70 pages in chunks of 2^scale (SCALE 1 NUM 2, then SCALE 6 NUM 0)", () => {
    const cmds = unmapCmds(true, 70);
    expect(ops(cmds)).toEqual([CMDQ_OP.TLBI_NH_VA, CMDQ_OP.TLBI_NH_VA, CMDQ_OP.CMD_SYNC]);
    expect(cmds[0]?.f).toMatchObject({ SCALE: 1, NUM: 2, Address: 0x200000 });
    expect(cmds[1]?.f).toMatchObject({ SCALE: 6, NUM: 0, Address: 0x200000 + 6 * PAGE });
  });

  it("with RIL: a 2 MiB block is a level-2 leaf (TTL 2)", () => {
    const { m, hw } = machine({ ril: true });
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    const blk = m.frames.alloc(9) as number;
    expect(iommuMap(d, 0x4000_0000, blk, 2 ** 21, RW)).toBe(0);
    const cmds = record(hw);
    expect(iommuUnmap(d, 0x4000_0000, 2 ** 21)).toBe(2 ** 21);
    expect(cmds[0]?.f).toMatchObject({ TG: 1, TTL: 2, SCALE: 9, NUM: 0, Leaf: 1 });
  });

  it("a walk flush is non-leaf with TTL 0, and a page count ending in 1 chunk of 32 grows by one", () => {
    const { m, hw } = machine({ ril: true });
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    const cmds = record(hw);
    m.driver.tlbInvRangeDomain(d, 0x100000, 33 * PAGE, PAGE, false);
    expect(cmds[0]?.f).toMatchObject({ Leaf: 0, TTL: 0, SCALE: 1, NUM: 16 });
    expect(ops(cmds)).toEqual([CMDQ_OP.TLBI_NH_VA, CMDQ_OP.CMD_SYNC]);
  });

  test.prop([fc.integer({ min: 0, max: 2 ** 20 }), fc.integer({ min: 1, max: 5000 })], {
    seed: 11,
    numRuns: 40,
  })(
    "with RIL the leaf range commands cover exactly the unmapped pages, in order",
    (pfn, pages) => {
      const { m, hw } = machine({ ril: true });
      const dev = add(m, { name: "nic0", rid: 0x10 });
      const d = paging(dev);
      const cmds = record(hw);
      m.driver.tlbInvRangeDomain(d, pfn * PAGE, pages * PAGE, PAGE, true);
      let next = pfn * PAGE;
      for (const c of cmds.filter((x) => x.op === CMDQ_OP.TLBI_NH_VA)) {
        expect(c.f.Address).toBe(next);
        expect(c.f.TG).toBe(1);
        next += (c.f.NUM + 1) * 2 ** c.f.SCALE * PAGE;
      }
      expect(next).toBe((pfn + pages) * PAGE);
      expect(cmds.at(-1)?.op).toBe(CMDQ_OP.CMD_SYNC);
    },
  );

  it("stage 2: TLBI_S2_IPA with the VMID; a nesting parent also drops its guests' stage 1 (TLBI_NH_ALL)", () => {
    const { m, hw } = machine({ ril: false });
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const d = paging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(iommuMap(d, 0x40000, frame(m), PAGE, RW)).toBe(0);
    const cmds = record(hw);
    iommuUnmap(d, 0x40000, PAGE);
    expect(ops(cmds)).toEqual([
      CMDQ_OP.TLBI_S2_IPA,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.TLBI_NH_ALL,
      CMDQ_OP.CMD_SYNC,
    ]);
    expect(cmds[0]?.f).toMatchObject({ VMID: d.vmid, IPA: 0x40000, Leaf: 1 });
    expect(cmds[2]?.f).toMatchObject({ VMID: d.vmid });
  });

  it("flush-all: TLBI_NH_ASID (stage 1) or TLBI_S12_VMALL (stage 2) and a sync", () => {
    const { m, hw } = machine();
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const s1 = paging(dev);
    const s2 = paging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    const cmds = record(hw);
    m.driver.tlbInvContext(s1);
    m.driver.tlbInvContext(s2);
    expect(ops(cmds)).toEqual([
      CMDQ_OP.TLBI_NH_ASID,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.TLBI_S12_VMALL,
      CMDQ_OP.CMD_SYNC,
    ]);
    expect(cmds[0]?.f.ASID).toBe(s1.asid);
    expect(cmds[2]?.f.VMID).toBe(s2.vmid);
  });

  it("freeing a domain flushes its ASID before the ASID goes back (hooks see both)", () => {
    const { m, hw } = machine();
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const log: string[] = [];
    m.driver.hooks = {
      asidAllocated: (a) => log.push(`+asid ${a}`),
      asidFreed: (a) => log.push(`-asid ${a}`),
      vmidAllocated: (_s, v) => log.push(`+vmid ${v}`),
      vmidFreed: (_s, v) => log.push(`-vmid ${v}`),
    };
    const d = paging(dev);
    const s2 = paging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    hw.commandObserver = (w) => {
      if (((w[0] as number) & 0xff) === CMDQ_OP.TLBI_NH_ASID) log.push("tlbi");
    };
    iommuDomainFree(d);
    iommuDomainFree(s2);
    expect(log).toEqual([
      `+asid ${d.asid}`,
      `+vmid ${s2.vmid}`,
      "tlbi",
      `-asid ${d.asid}`,
      `-vmid ${s2.vmid}`,
    ]);
    expect(m.driver.asids.has(d.asid)).toBe(false);
  });
});

describe("page requests and stalls into IOPF", () => {
  it("PRI: a page request goes to the domain's handler, which maps the page; CMD_PRI_RESP Success; the retry works", () => {
    const { m, hw } = machine();
    const dev = add(m, { name: "acc", rid: 0x10, pasidBits: 8, ats: true, pri: true });
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(dev.priEnabled).toBe(true);
    const d = paging(dev);
    const buf = frame(m);
    d.iopfHandler = (group) => {
      iommuMap(d, group.lastFault.fault.addr, buf, PAGE, RW);
      iopfGroupResponse(group, IOMMU_PAGE_RESP_SUCCESS);
      return 0;
    };
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(d, dev, pasid)).toBe(0);
    const cmds = record(hw);
    expect(dev.write32(0x9000, 0x55, pasid)).toBe(DMA_PAGE_REQUESTED);
    m.processQueues();
    const resp = cmds.filter((c) => c.op === CMDQ_OP.PRI_RESP);
    expect(resp).toHaveLength(1);
    expect(resp[0]?.f).toMatchObject({ StreamID: 0x10, SSV: 1, SubstreamID: pasid, Resp: 2 });
    expect(dev.write32(0x9000, 0x55, pasid)).toBe(DMA_OK);
    expect(m.mem.read32(buf)).toBe(0x55);
    expect(iommuDetachDevicePasid(d, dev, pasid)).toBe(0);
    expect(iommuFreeGlobalPasid(m.subsys, pasid)).toBe(0);
  });

  it("PRI: a request of an unknown StreamID that ends its group gets Resp 0; other entries none", () => {
    const { m, hw } = machine();
    const cmds = record(hw);
    const req = {
      rid: 0x99,
      sid: 0x99,
      pasid: NO_PASID,
      iovaPfn: 5,
      access: DMA_READ,
      privileged: false,
      prgIndex: 3,
      last: false,
    };
    hw.pageRequest(req);
    hw.pageRequest({ ...req, last: true });
    expect(m.driver.processPageRequests()).toBe(2);
    expect(m.driver.badPageRequests).toBe(2);
    const resp = cmds.filter((c) => c.op === CMDQ_OP.PRI_RESP);
    expect(resp).toHaveLength(1);
    expect(resp[0]?.f).toMatchObject({ StreamID: 0x99, SSV: 0, PRGIndex: 3, Resp: 0 });
  });

  it("PRI: a stop marker (PASID, Last, no access) is not answered", () => {
    const { m, hw } = machine();
    const dev = add(m, { name: "acc", rid: 0x10, pasidBits: 8, ats: true, pri: true });
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    const cmds = record(hw);
    hw.pageRequest({
      rid: 0x10,
      sid: 0x10,
      pasid: 4,
      iovaPfn: 0,
      access: 0,
      privileged: false,
      prgIndex: 1,
      last: true,
    });
    expect(m.driver.processPageRequests()).toBe(1);
    expect(cmds).toEqual([]);
  });

  it("stall: a stalled DMA's event goes to the handler, which maps the page; CMD_RESUME retry; the DMA completes", () => {
    const { m, hw } = machine({ stallModel: 0 });
    const dev = add(m, { name: "dma0", rid: 0x10, isPci: false, stall: true });
    expect(m.driver.master(dev)?.stallEnabled).toBe(true);
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(cdOf(m, hw, 0x10, 0).S).toBe(1);
    expect(steOf(m, hw, 0x10).S1STALLD).toBe(0);
    const buf = frame(m);
    m.mem.write32(buf + 4, 0x77);
    const faults: number[] = [];
    d.iopfHandler = (group) => {
      faults.push(group.lastFault.fault.addr);
      iommuMap(d, group.lastFault.fault.addr & ~0xfff, buf, PAGE, RW);
      iopfGroupResponse(group, IOMMU_PAGE_RESP_SUCCESS);
      return 0;
    };
    const cmds = record(hw);
    const responded: [string, number, number][] = [];
    m.driver.hooks.pageResponded = (dv, evt, msg) =>
      responded.push([dv.name, evt.fault.addr, msg.code]);
    expect(dev.read32(0x6004)).toBe(DMA_STALLED);
    m.processQueues();
    expect(faults).toEqual([0x6004]);
    // The driver reports the core's answer before it becomes a command.
    expect(responded).toEqual([["dma0", 0x6004, IOMMU_PAGE_RESP_SUCCESS]]);
    const resume = cmds.filter((c) => c.op === CMDQ_OP.RESUME);
    expect(resume).toHaveLength(1);
    expect(resume[0]?.f).toMatchObject({ StreamID: 0x10, Ac: 1, Ab: 0 });
    expect(cmds.filter((c) => c.op === CMDQ_OP.CMD_SYNC)).toHaveLength(0);
    expect(dev.read32(0x6004)).toBe(DMA_OK);
    expect(dev.lo).toBe(0x77);
  });

  it("a master that cannot stall on an SMMU with stalls gets S1STALLD, and its faults are logged events", () => {
    const { m, hw } = machine({ stallModel: 0 });
    const dev = add(m, { name: "nic0", rid: 0x10 });
    expect(steOf(m, hw, 0x10).S1STALLD).toBe(1);
    expect(dev.read32(0x5000)).toBe(DMA_FAULT);
    expect(m.processQueues()).toBe(1);
    expect(m.driver.events.at(-1)).toMatchObject({
      smmu: "smmu0",
      id: EVT_ID.F_TRANSLATION,
      sid: 0x10,
      ssid: -1,
      addr: 0x5000,
      stall: false,
    });
  });

  it("an event queue overflow is counted and acknowledged (CONS.OVACKFLG = PROD.OVFLG)", () => {
    const { m, hw, smmu } = machine({ eventqs: 1 });
    const dev = add(m, { name: "nic0", rid: 0x10 });
    for (let i = 0; i < 3; i++) expect(dev.read32(0x5000 + i * PAGE)).toBe(DMA_FAULT);
    expect(hw.read32(SMMU_REG.EVENTQ_PROD) >>> 31).toBe(1);
    expect(m.driver.processEvents()).toBe(2);
    expect(smmu.evtq.overflows).toBe(1);
    expect(hw.read32(SMMU_REG.EVENTQ_CONS) >>> 31).toBe(1);
    expect(dev.read32(0x9000)).toBe(DMA_FAULT);
    expect(m.driver.processEvents()).toBe(1);
    expect(smmu.evtq.overflows).toBe(1);
  });

  it("IOPF needs a stalling or PRI-capable master (ENODEV); enable and disable are counted (EINVAL when off)", () => {
    const { m } = machine({ stallModel: 1 });
    const plain = add(m, { name: "nic0", rid: 0x10, ats: true });
    expect(iommuDevEnableFeature(plain, IOMMU_DEV_FEAT_IOPF)).toBe("ENODEV");
    expect(m.driver.devEnableFeat(plain, 99)).toBe("ENODEV");
    expect(m.driver.devDisableFeat(plain, IOMMU_DEV_FEAT_IOPF)).toBe("EINVAL");
    const acc = add(m, { name: "acc", rid: 0x20, pasidBits: 8, ats: true, pri: true });
    expect(m.driver.devEnableFeat(acc, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(m.driver.devEnableFeat(acc, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(m.driver.devDisableFeat(acc, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(m.driver.devDisableFeat(acc, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(m.driver.devDisableFeat(acc, IOMMU_DEV_FEAT_IOPF)).toBe("EINVAL");
    expect(acc.priEnabled).toBe(true);
    m.removeDevice(acc);
    expect(acc.priEnabled).toBe(false);
  });
});

describe("error paths", () => {
  it("bring-up refuses preset tables, no AArch64 tables and no translation stage (ENXIO), leaving no frames held", () => {
    const m = new SmmuMachine({ smmus: [] });
    const live = m.frames.liveFrames;
    const hw = new SmmuV3({ name: "x", mem: m.mem });
    const preset = overridden(hw, SMMU_REG.IDR1, (v) => v | (1 << 30));
    expect(m.driver.addSmmu({ name: "x", mmio: preset })).toBe("ENXIO");
    const aarch32 = overridden(hw, SMMU_REG.IDR0, (v) => v & ~(3 << 2));
    expect(m.driver.addSmmu({ name: "x", mmio: aarch32 })).toBe("ENXIO");
    const none = overridden(hw, SMMU_REG.IDR0, (v) => v & ~3);
    expect(m.driver.addSmmu({ name: "x", mmio: none })).toBe("ENXIO");
    expect(m.frames.liveFrames).toBe(live);
    expect(m.driver.smmus).toHaveLength(0);
  });

  it("bring-up: ENOMEM without frames for the queues and the stream table, ETIMEDOUT when CR0ACK never follows", () => {
    const m = new SmmuMachine({ smmus: [], framesSize: 3 * PAGE });
    const hw = new SmmuV3({ name: "x", mem: m.mem });
    expect(m.driver.addSmmu({ name: "x", mmio: hw })).toBe("ENOMEM");
    expect(m.frames.liveFrames).toBe(0);
    const m2 = new SmmuMachine({ smmus: [] });
    const hw2 = new SmmuV3({ name: "y", mem: m2.mem });
    const deaf = overridden(hw2, SMMU_REG.CR0ACK, () => 0);
    expect(m2.driver.addSmmu({ name: "y", mmio: deaf })).toBe("ETIMEDOUT");
    expect(hw2.read32(SMMU_REG.CR0) & CR0_SMMUEN).toBe(0);
  });

  it("EEXIST for a second catch-all SMMU or a StreamID another SMMU serves", () => {
    const m = new SmmuMachine({ smmus: [{}, { sids: [0x100] }] });
    const hw = new SmmuV3({ name: "z", mem: m.mem });
    expect(m.driver.addSmmu({ name: "z", mmio: hw })).toBe("EEXIST");
    expect(m.driver.addSmmu({ name: "z", mmio: hw, sids: [0x100] })).toBe("EEXIST");
    expect(m.driver.smmuFor(0x100)?.name).toBe("smmu1");
    expect(m.driver.smmuFor(0x200)?.name).toBe("smmu0");
  });

  it("ENODEV: a device no SMMU serves, or a StreamID beyond a linear stream table", () => {
    const m = new SmmuMachine({ smmus: [{ sids: [0x10] }] });
    expect(m.addDevice({ name: "stray", rid: 0x20 })).toBe("ENODEV");
    const lin = machine({ sidBits: 6, twoLevelStreamTable: false });
    expect(lin.m.addDevice({ name: "far", rid: 0x80 })).toBe("ENODEV");
  });

  it("EINVAL for a domain of another SMMU, at the RID and at a PASID", () => {
    const m = new SmmuMachine({ smmus: [{}, { sids: [0x100] }] });
    const a = add(m, { name: "a", rid: 0x10, pasidBits: 8 });
    const b = add(m, { name: "b", rid: 0x100, pasidBits: 8 });
    const db = paging(b);
    expect(iommuAttachDevice(db, a)).toBe("EINVAL");
    expect(db.ops.setDevPasid?.(db, a, 3, null)).toBe("EINVAL");
    const pb = paging(b, IOMMU_HWPT_ALLOC_NEST_PARENT);
    const nested = iommuDomainAllocNested(b, pb, 0, { vste: [0, 0, 0, 0] });
    expect(iommuAttachDevice(nested as IommuDomain, a)).toBe("EINVAL");
  });

  it("EBUSY: a stage-2 or nested domain at a RID whose CD table holds PASIDs", () => {
    const { m } = machine();
    const dev = add(m, { name: "acc", rid: 0x10, pasidBits: 8 });
    const d = paging(dev);
    expect(iommuAttachDevicePasid(d, dev, 3)).toBe(0);
    const s2 = paging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    expect(s2.ops.attachDev(s2, dev, null)).toBe("EBUSY");
    const nested = iommuDomainAllocNested(dev, s2, 0, { vste: [0, 0, 0, 0] }) as IommuDomain;
    expect(nested.ops.attachDev(nested, dev, null)).toBe("EBUSY");
  });

  it("EOPNOTSUPP for unknown flags, NEST_PARENT without both stages, DIRTY_TRACKING without coherent HTTU", () => {
    const { m } = machine({ httu: 1 });
    const dev = add(m, { name: "nic0", rid: 0x10 });
    expect(iommuPagingDomainAllocFlags(dev, 1 << 10)).toBe("EOPNOTSUPP");
    expect(iommuPagingDomainAllocFlags(dev, 1 << 1)).toBe("EOPNOTSUPP");
    const s1only = machine({ s2p: false });
    const d1 = add(s1only.m, { name: "nic0", rid: 0x10 });
    expect(iommuPagingDomainAllocFlags(d1, IOMMU_HWPT_ALLOC_NEST_PARENT)).toBe("EOPNOTSUPP");
  });

  it("ENOMEM: no frame for a page table, none for a CD table (the device stays where it was), no ASID left", () => {
    const { m, hw } = machine({ asidBits: 8 }, { defaultDomain: "identity" });
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const d = paging(dev);
    const held: number[] = [];
    for (;;) {
      const pa = m.frames.alloc(0);
      if (typeof pa !== "number") break;
      held.push(pa);
    }
    expect(iommuPagingDomainAlloc(dev)).toBe("ENOMEM");
    expect(iommuAttachDevice(d, dev)).toBe("ENOMEM");
    expect(steOf(m, hw, 0x10).Config).toBe(STE_CFG_BYPASS);
    for (const pa of held) m.frames.free(pa, 0);
    const doms: IommuDomain[] = [];
    for (;;) {
      const x = iommuPagingDomainAlloc(dev);
      if (typeof x === "string") {
        expect(x).toBe("ENOMEM");
        break;
      }
      doms.push(x);
    }
    // ASIDs 1..255, one held by `d`.
    expect(doms).toHaveLength(254);
  });
});

describe("more error paths", () => {
  it("ENODEV for a device the driver never probed, at every op that needs its master", () => {
    const { m } = machine();
    const dev = add(m, { name: "nic0", rid: 0x10, pasidBits: 8 });
    const stray = Device.create({ name: "stray", rid: 0x20, pasidBits: 8 });
    if (typeof stray === "string") throw new Error(stray);
    const d = paging(dev);
    const parent = paging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    const nested = iommuDomainAllocNested(dev, parent, 0, { vste: [0, 0, 0, 0] }) as IommuDomain;
    expect(d.ops.attachDev(d, stray, null)).toBe("ENODEV");
    expect(d.ops.setDevPasid?.(d, stray, 3, null)).toBe("ENODEV");
    expect(nested.ops.attachDev(nested, stray, null)).toBe("ENODEV");
    const id = m.driver.identityDomain;
    const blk = m.driver.blockedDomain;
    expect(id.ops.attachDev(id, stray, null)).toBe("ENODEV");
    expect(blk.ops.attachDev(blk, stray, null)).toBe("ENODEV");
    expect(blk.ops.setDevPasid?.(blk, stray, 3, d)).toBe("ENODEV");
    expect(m.driver.domainAllocPagingFlags(stray, 0)).toBe("ENODEV");
    expect(m.driver.devEnableFeat(stray, IOMMU_DEV_FEAT_IOPF)).toBe("ENODEV");
    expect(m.driver.devDisableFeat(stray, IOMMU_DEV_FEAT_IOPF)).toBe("EINVAL");
    expect(m.driver.probeDevice(stray)).toBe("ENODEV");
  });

  it("a stage-2 domain cannot go to a PASID (EINVAL)", () => {
    const { m } = machine();
    const dev = add(m, { name: "acc", rid: 0x10, pasidBits: 8 });
    const s2 = paging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    expect(s2.ops.setDevPasid?.(s2, dev, 3, null)).toBe("EINVAL");
  });

  it("ENOMEM: no frame for an L2 stream table at probe, none for a CD leaf table at a PASID, no VMID left", () => {
    const { m, smmu } = machine({ vmidBits: 8 });
    const dev = add(m, { name: "big", rid: 0x10, pasidBits: 20 });
    const d = paging(dev);
    const held: number[] = [];
    for (;;) {
      const pa = m.frames.alloc(0);
      if (typeof pa !== "number") break;
      held.push(pa);
    }
    expect(m.addDevice({ name: "far", rid: 0x4000 })).toBe("ENOMEM");
    expect(smmu.l2Tables.size).toBe(1);
    expect(d.ops.setDevPasid?.(d, dev, 70000, null)).toBe("ENOMEM");
    for (const pa of held) m.frames.free(pa, 0);
    let n = 0;
    for (;;) {
      const x = iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
      if (typeof x === "string") {
        expect(x).toBe("ENOMEM");
        break;
      }
      n++;
    }
    expect(n).toBe(255);
  });
});

describe("teardown", () => {
  it("after every device is removed and every domain freed, only the L2 stream tables stay; IDs are all back", () => {
    const { m, smmu } = machine();
    const base = m.frames.liveFrames;
    const ids = m.driver.idsInUse;
    const a = add(m, { name: "a", rid: 0x10, pasidBits: 20, ats: true, pri: true });
    const b = add(m, { name: "b", rid: 0x510 });
    const c = add(m, { name: "c", rid: 0x520, isPci: false, stall: true });
    const d = paging(a);
    const s2 = paging(b, IOMMU_HWPT_ALLOC_NEST_PARENT);
    expect(iommuDevEnableFeature(a, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(iommuAttachDevicePasid(d, a, 3000)).toBe(0);
    expect(iommuAttachDevice(s2, b)).toBe(0);
    const buf = frame(m);
    expect(iommuMap(d, 0x40000, buf, PAGE, RW)).toBe(0);
    expect(iommuMap(s2, 0x4000_0000, buf, PAGE, RW)).toBe(0);
    expect(a.read32(0x40000, 3000)).toBe(DMA_OK);
    expect(iommuDetachDevicePasid(d, a, 3000)).toBe(0);
    for (const dev of [a, b, c]) expect(m.removeDevice(dev)).toBe(0);
    iommuDomainFree(d);
    iommuDomainFree(s2);
    m.frames.free(buf, 0);
    expect(m.frames.liveFrames).toBe(base + smmu.l2Tables.size * 4);
    expect(smmu.l2Tables.size).toBe(2);
    expect(m.driver.idsInUse).toBe(ids);
    expect(smmu.cmdq.stats.timeouts).toBe(0);
    expect(smmu.cmdq.stats.refused).toBe(0);
    void IOMMU_NO_PASID;
  });
});
