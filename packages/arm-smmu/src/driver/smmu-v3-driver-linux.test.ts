// The SMMUv3 driver against the rules of Linux's drivers/iommu/arm/arm-smmu-v3 that it once got
// wrong: each test names the kernel function whose rule it checks and failed before the fix. The
// commands are read back as the SMMU executes them, the registers through a tap.

import {
  DMA_FAULT,
  DMA_OK,
  DMA_PAGE_REQUESTED,
  DMA_STALLED,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_PAGE_RESP_INVALID,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuAllocGlobalPasid,
  iommuAttachDevice,
  iommuAttachDevicePasid,
  iommuDetachDevice,
  iommuDevDisableFeature,
  iommuDevEnableFeature,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
  iopfGroupResponse,
} from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import {
  add,
  bringUp,
  cdOf,
  frame,
  ops,
  paging,
  record,
  steOf,
  tapped,
} from "../../test/driver-kit.js";
import { CMDQ_OP } from "../format/commands.js";
import { GERROR_EVTQ_ABT_ERR, SMMU_REG } from "../format/registers.js";
import { ARM_SMMU_DOMAIN_S1, ARM_SMMU_DOMAIN_S2 } from "./smmu-domain.js";

const PAGE = 4096;
const RW = IOMMU_READ | IOMMU_WRITE;

describe("command queue (arm_smmu_cmdq_*)", () => {
  it("arm_smmu_cmdq_batch_add: a batch holding 64 commands goes out with its CMD_SYNC in one CMDQ_PROD write", () => {
    const { m, hw, tap } = tapped({ ril: false });
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    const pa = frame(m);
    for (let i = 0; i < 64; i++) expect(iommuMap(d, 0x100000 + i * PAGE, pa, PAGE, RW)).toBe(0);
    const cmds = record(hw);
    const prods = tap.writes(SMMU_REG.CMDQ_PROD).length;
    expect(iommuUnmap(d, 0x100000, 64 * PAGE)).toBe(64 * PAGE);
    expect(ops(cmds)).toEqual([...Array<number>(64).fill(CMDQ_OP.TLBI_NH_VA), CMDQ_OP.CMD_SYNC]);
    expect(tap.writes(SMMU_REG.CMDQ_PROD).length - prods).toBe(1);
  });

  it("arm_smmu_cmdq_build_cmd: a CMD_SYNC without MSI polling is CS=SIG_SEV with MSH=ISH and MSIAttr=OIWB", () => {
    const { m, hw } = tapped({ msi: false });
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const cmds = record(hw);
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    const syncs = cmds.filter((c) => c.op === CMDQ_OP.CMD_SYNC);
    expect(syncs.length).toBeGreaterThan(0);
    for (const s of syncs) expect(s.f).toMatchObject({ CS: 2, MSH: 3, MSIAttr: 0xf });
  });

  it("__arm_smmu_cmdq_skip_err: the refused command is rewritten as the CMD_SYNC build_cmd makes (MSH=ISH, MSIAttr=OIWB)", () => {
    const { hw, smmu } = tapped({ msi: false });
    const q = smmu.cmdq;
    const cmds = record(hw);
    // Opcode 0x7f does not exist: CERROR_ILL.
    q.bare(0x7f);
    q.add();
    expect(q.submit()).toBe(0);
    expect(q.stats.refused).toBe(1);
    expect(ops(cmds)).toEqual([CMDQ_OP.CMD_SYNC, CMDQ_OP.CMD_SYNC]);
    expect(cmds[0]?.f).toMatchObject({ CS: 2, MSH: 3, MSIAttr: 0xf });
  });

  it("arm_smmu_gerror_handler: every active global error is acknowledged (GERRORN = GERROR)", () => {
    const { m, hw, smmu } = tapped();
    const dev = add(m, { name: "nic0", rid: 0x10 });
    // The event queue's memory refuses writes: the SMMU reports EVENTQ_ABT_ERR.
    const base = smmu.evtq.base;
    const bytes = 2 ** smmu.evtq.log2 * 32;
    m.mem.faultHook = (pa, _n, write) => write && pa >= base && pa < base + bytes;
    expect(dev.read32(0x5000)).toBe(DMA_FAULT);
    m.mem.faultHook = null;
    const active = () => (hw.read32(SMMU_REG.GERROR) ^ hw.read32(SMMU_REG.GERRORN)) >>> 0;
    expect(active() & GERROR_EVTQ_ABT_ERR).not.toBe(0);
    m.processQueues();
    expect(active()).toBe(0);
  });
});

describe("bring-up (arm_smmu_device_hw_probe, arm_smmu_device_reset)", () => {
  it("arm_smmu_device_hw_probe: a command queue of 64 entries or fewer is refused with ENXIO", () => {
    expect(bringUp({ cmdqs: 6 })).toBe("ENXIO");
    expect(typeof bringUp({ cmdqs: 7 })).toBe("object");
  });

  it("arm_smmu_device_hw_probe: translation tables of the other endianness only (IDR0.TTENDIAN = BE) are refused with ENXIO", () => {
    const ret = bringUp({}, (hw, tap) => {
      const idr0 = hw.read32(SMMU_REG.IDR0);
      tap.override.set(SMMU_REG.IDR0, ((idr0 & ~(3 << 21)) | (3 << 21)) >>> 0);
    });
    expect(ret).toBe("ENXIO");
  });

  it("arm_smmu_device_hw_probe: IDR0.CD2L alone gives 2-level CD tables, also with a linear stream table", () => {
    const { m } = tapped({ twoLevelStreamTable: false, sidBits: 8, cd2l: true, ssidBits: 20 });
    const dev = add(m, { name: "acc", rid: 0x10, pasidBits: 20 });
    const master = m.driver.master(dev);
    expect(master?.ssidBits).toBe(20);
    const d = paging(dev);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(master?.cdTable?.s1fmt).toBe(2);
  });

  it("arm_smmu_device_hw_probe: ias is at least 40 bits with AArch32 tables (TTF), so stage 2 takes 40-bit IPAs on a 36-bit OAS", () => {
    const { m } = tapped({ ttf: 3, oas: 36 });
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const d = paging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    expect(d.stage).toBe(ARM_SMMU_DOMAIN_S2);
    expect(d.geometry.apertureEnd).toBe(2 ** 40 - 1);
  });

  it("arm_smmu_device_hw_probe: an output size it does not know (IDR5.OAS = 56 bits) is taken as 48 bits", () => {
    const { smmu } = tapped({}, (hw0, tap) => {
      tap.override.set(SMMU_REG.IDR5, (hw0.read32(SMMU_REG.IDR5) | 7) >>> 0);
    });
    expect(smmu.features.oas).toBe(48);
  });

  it("arm_smmu_device_hw_probe: max_pasids is 1 << SSIDSIZE (1 without SubstreamIDs)", () => {
    const { smmu } = tapped({ ssidBits: 0 });
    expect(smmu.iommu.maxPasids).toBe(1);
  });

  it("arm_smmu_setup_msis: the IRQ_CFG0 addresses are cleared between IRQ_CTRL = 0 and the enable", () => {
    const { hw, tap } = tapped({}, (hw0) => {
      hw0.write32(SMMU_REG.EVENTQ_IRQ_CFG0, 0xdead0000);
      hw0.write32(SMMU_REG.GERROR_IRQ_CFG0, 0xbeef0000);
    });
    expect(hw.read32(SMMU_REG.EVENTQ_IRQ_CFG0)).toBe(0);
    expect(hw.read32(SMMU_REG.GERROR_IRQ_CFG0)).toBe(0);
    expect(hw.read32(SMMU_REG.PRIQ_IRQ_CFG0)).toBe(0);
    const at = (off: number, v?: number) =>
      tap.log.findIndex((e) => e[0] === "w" && e[1] === off && (v === undefined || e[2] === v));
    expect(at(SMMU_REG.IRQ_CTRL, 0)).toBeLessThan(at(SMMU_REG.EVENTQ_IRQ_CFG0));
    expect(at(SMMU_REG.EVENTQ_IRQ_CFG0)).toBeLessThan(at(SMMU_REG.IRQ_CTRL, 7));
  });

  it("arm_smmu_update_gbpa: with SMMUEN left on, GBPA is read until Update is clear before and after the abort is set", () => {
    const { tap } = tapped({}, (hw0) => hw0.write32(SMMU_REG.CR0, 1));
    const i = tap.log.findIndex((e) => e[0] === "w" && e[1] === SMMU_REG.GBPA);
    expect(i).toBeGreaterThan(0);
    expect(tap.log[i - 1]).toEqual(["r", SMMU_REG.GBPA, expect.any(Number)]);
    expect(tap.log[i + 1]).toEqual(["r", SMMU_REG.GBPA, expect.any(Number)]);
    expect((tap.log[i]?.[2] ?? 0) >>> 31).toBe(1);
    expect(((tap.log[i]?.[2] ?? 0) >>> 20) & 1).toBe(1);
  });
});

describe("masters (arm_smmu_probe_device)", () => {
  it("arm_smmu_probe_device: PCI PASID is enabled even when the SMMU has no SubstreamIDs", () => {
    const { m } = tapped({ ssidBits: 0, cd2l: false });
    const dev = add(m, { name: "acc", rid: 0x10, pasidBits: 8 });
    expect(dev.pasidEnabled).toBe(true);
    expect(m.driver.master(dev)?.ssidBits).toBe(0);
  });

  it("arm_smmu_insert_master: a StreamID another master holds is refused with ENODEV", () => {
    const { m } = tapped();
    add(m, { name: "a", rid: 0x10 });
    expect(m.addDevice({ name: "b", rid: 0x20, sid: 0x10 })).toBe("ENODEV");
  });
});

describe("domains and attach", () => {
  it("arm_smmu_domain_alloc_paging_flags: PASID needs stage 1, NEST_PARENT combines with nothing, DIRTY_TRACKING gives HA|HD", () => {
    const s2only = tapped({ s1p: false });
    const a = add(s2only.m, { name: "a", rid: 0x10 });
    expect(iommuPagingDomainAllocFlags(a, IOMMU_HWPT_ALLOC_PASID)).toBe("EOPNOTSUPP");
    const { m, hw } = tapped();
    const dev = add(m, { name: "nic0", rid: 0x10 });
    expect(
      iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_PASID),
    ).toBe("EOPNOTSUPP");
    const d = paging(dev, IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
    expect(d.stage).toBe(ARM_SMMU_DOMAIN_S1);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(cdOf(m, hw, 0x10, 0)).toMatchObject({ HA: 1, HD: 1 });
  });

  it("arm_smmu_domain_finalise: a nesting parent on an SMMU with IDR3.FWB gets the S2FWB quirk and STE.S2FWB", () => {
    const { m, hw } = tapped({}, (hw0, tap) => {
      tap.override.set(SMMU_REG.IDR3, (hw0.read32(SMMU_REG.IDR3) | (1 << 8)) >>> 0);
    });
    const dev = add(m, { name: "vf0", rid: 0x10 });
    const d = paging(dev, IOMMU_HWPT_ALLOC_NEST_PARENT);
    expect(iommuMap(d, 0x40000, frame(m), PAGE, RW)).toBe(0);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(steOf(m, hw, 0x10)).toMatchObject({ Config: 6, S2FWB: 1 });
  });

  it("arm_smmu_tlb_inv_range_domain: an unmap invalidates the domain's ASID also while no device is attached", () => {
    const { m } = tapped();
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const d = paging(dev);
    const pa = frame(m);
    expect(iommuMap(d, 0x40000, pa, PAGE, RW)).toBe(0);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(dev.read32(0x40000)).toBe(DMA_OK);
    expect(iommuDetachDevice(d, dev)).toBe(0);
    expect(iommuUnmap(d, 0x40000, PAGE)).toBe(PAGE);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(dev.read32(0x40000)).toBe(DMA_FAULT);
  });

  it("arm_smmu_tlb_inv_context: flush-all of a domain no device uses still sends TLBI_NH_ASID and a sync", () => {
    const { m, hw } = tapped();
    const dev = add(m, { name: "nic0", rid: 0x10 });
    const d = paging(dev);
    const cmds = record(hw);
    m.driver.tlbInvContext(d);
    expect(ops(cmds)).toEqual([CMDQ_OP.TLBI_NH_ASID, CMDQ_OP.CMD_SYNC]);
    expect(cmds[0]?.f).toMatchObject({ ASID: d.asid });
  });

  it("arm_smmu_attach_commit: ats_enabled follows the attach state even when pci_enable_ats fails, so ATC_INV still goes out", () => {
    const { m, hw } = tapped({}, undefined, { defaultDomain: "identity" });
    const dev = add(m, { name: "nic0", rid: 0x10, ats: true });
    const d = paging(dev);
    // ATS already on at the device (the identity domain left it off): pci_enable_ats refuses.
    expect(dev.atsEnabled).toBe(false);
    expect(dev.enableAts(12)).toBe(0);
    expect(iommuAttachDevice(d, dev)).toBe(0);
    expect(m.driver.master(dev)?.atsEnabled).toBe(true);
    const pa = frame(m);
    expect(iommuMap(d, 0x40000, pa, PAGE, RW)).toBe(0);
    const cmds = record(hw);
    expect(iommuUnmap(d, 0x40000, PAGE)).toBe(PAGE);
    expect(cmds.some((c) => c.op === CMDQ_OP.ATC_INV)).toBe(true);
  });
});

describe("faults (arm_smmu_evtq_thread, arm_smmu_priq_thread, iopf_error_response)", () => {
  it("iopf_error_response: a stall the core cannot take is answered CMD_RESUME with abort", () => {
    const { m, hw } = tapped({ stallModel: 0 });
    const dev = add(m, { name: "dma0", rid: 0x10, isPci: false, stall: true });
    expect(m.driver.master(dev)?.stallEnabled).toBe(true);
    const cmds = record(hw);
    expect(dev.read32(0x7000)).toBe(DMA_STALLED);
    m.processQueues();
    const resume = cmds.filter((c) => c.op === CMDQ_OP.RESUME);
    expect(resume).toHaveLength(1);
    expect(resume[0]?.f).toMatchObject({ StreamID: 0x10, Ac: 0, Ab: 1 });
    expect(hw.stalledTags(0x10)).toEqual([]);
    expect(dev.read32(0x7000)).toBe(DMA_FAULT);
  });

  it("iopf_error_response: a page request the core cannot take is answered as IOMMU_PAGE_RESP_INVALID (InvalidRequest), which leaves PRI running", () => {
    const { m, hw } = tapped();
    const dev = add(m, { name: "acc", rid: 0x10, pasidBits: 8, ats: true, pri: true });
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    expect(iommuDevDisableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    const d = paging(dev);
    const pasid = iommuAllocGlobalPasid(dev);
    expect(iommuAttachDevicePasid(d, dev, pasid)).toBe(0);
    const cmds = record(hw);
    expect(dev.write32(0x9000, 1, pasid)).toBe(DMA_PAGE_REQUESTED);
    m.processQueues();
    const resp = cmds.filter((c) => c.op === CMDQ_OP.PRI_RESP);
    expect(resp).toHaveLength(1);
    expect(resp[0]?.f).toMatchObject({ Resp: 1, SSV: 1, SubstreamID: pasid });
    expect(dev.priStopped).toBe(false);
  });

  it("arm_smmu_evtq_thread: each record is consumed with its own CONS write and PROD is read again until the queue is empty", () => {
    const { m, tap } = tapped({ stallModel: 0, eventqs: 1 });
    const dev = add(m, { name: "dma0", rid: 0x10, isPci: false, stall: true });
    expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    const d: IommuDomain = paging(dev);
    let handled = 0;
    d.iopfHandler = (group) => {
      handled++;
      iopfGroupResponse(group, IOMMU_PAGE_RESP_INVALID);
      return 0;
    };
    expect(iommuAttachDevice(d, dev)).toBe(0);
    // Two records fit the queue; the SMMU holds the other two stall records until CONS moves.
    for (let i = 0; i < 4; i++) expect(dev.read32(0x7000 + i * PAGE)).toBe(DMA_STALLED);
    const cons = tap.writes(SMMU_REG.EVENTQ_CONS).length;
    expect(m.driver.processEvents()).toBe(4);
    expect(handled).toBe(4);
    expect(tap.writes(SMMU_REG.EVENTQ_CONS).length - cons).toBe(4);
    for (let i = 0; i < 4; i++) expect(dev.read32(0x7000 + i * PAGE)).toBe(DMA_FAULT);
  });
});
