// The driver's command queue against the SMMUv3 model: command encodings, batches, CMD_SYNC
// completion by MSI or by CONS, a full and wrapping queue, and the command errors the GERROR
// handler deals with.

import { decode } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { type Cmd, ops, record, type Tapped, tapped } from "../../test/driver-kit.js";
import { CMD_SYNC, CMDQ_OP } from "../format/commands.js";
import { CMDQ_CONS_ERR_ILL, SMMU_REG } from "../format/registers.js";
import type { SmmuFeatures } from "../hw/smmu-features.js";
import { CMDQ_BATCH_ENTRIES, type SmmuCmdq } from "./cmdq.js";

/** An SMMU brought up through a tap, with every command it executes from then on recorded. */
function queue(features: Partial<SmmuFeatures> = {}): Tapped & { q: SmmuCmdq; cmds: Cmd[] } {
  const t = tapped(features);
  return { ...t, q: t.smmu.cmdq, cmds: record(t.hw) };
}

describe("command encodings", () => {
  it("the builders fill the fields Linux fills (arm_smmu_cmdq_build_cmd)", () => {
    const { q, cmds } = queue();
    q.cfgiSte(0x1234, true).add();
    q.cfgiCd(0x1234, 77, false).add();
    q.cfgiAll().add();
    q.prefetchConfig(0x22).add();
    q.tlbiAsid(9, false).add();
    q.tlbiS12Vmall(5).add();
    q.tlbiVa(CMDQ_OP.TLBI_NH_VA, 9, 0x1234_5000, true, 1, 3, 2, 4).add();
    q.tlbiVa(CMDQ_OP.TLBI_S2_IPA, 5, 0x8000_0000, false, 0, 0, 0, 0).add();
    q.atcInv(0x10, 0, 0, 52).add();
    q.atcInv(0x10, 6, 0x40000, 2).add();
    expect(q.submit()).toBe(0);
    expect(cmds.map((c) => c.f)).toEqual([
      expect.objectContaining({ StreamID: 0x1234, Leaf: 1 }),
      expect.objectContaining({ StreamID: 0x1234, SubstreamID: 77, Leaf: 0 }),
      expect.objectContaining({ Range: 31 }),
      expect.objectContaining({ StreamID: 0x22, SSV: 0, SubstreamID: 0 }),
      expect.objectContaining({ ASID: 9, VMID: 0 }),
      expect.objectContaining({ VMID: 5 }),
      expect.objectContaining({
        ASID: 9,
        Address: 0x1234_5000,
        Leaf: 1,
        TG: 1,
        TTL: 3,
        SCALE: 2,
        NUM: 4,
      }),
      expect.objectContaining({ VMID: 5, IPA: 0x8000_0000, Leaf: 0 }),
      expect.objectContaining({ StreamID: 0x10, SSV: 0, Size: 52, Address: 0 }),
      expect.objectContaining({ StreamID: 0x10, SSV: 1, SubstreamID: 6, Size: 2 }),
      expect.objectContaining({ CS: 1 }),
    ]);
  });

  it("PRI_RESP and RESUME need no CMD_SYNC: they go out alone", () => {
    const { q, cmds } = queue();
    q.priResp(0x10, true, 3, 0x1ff, 2).add();
    q.resume(0x20, 0xbeef, false, true).add();
    expect(q.submitNoSync()).toBe(0);
    expect(ops(cmds)).toEqual([CMDQ_OP.PRI_RESP, CMDQ_OP.RESUME]);
    expect(cmds[0]?.f).toMatchObject({ StreamID: 0x10, SSV: 1, SubstreamID: 3, PRGIndex: 0x1ff });
    expect(cmds[1]?.f).toMatchObject({ StreamID: 0x20, STAG: 0xbeef, Ac: 0, Ab: 1 });
    expect(q.submitNoSync()).toBe(0);
    expect(q.stats.syncs).toBe(3);
  });
});

describe("CMD_SYNC completion", () => {
  it("with coherent MSIs the sync is CS=SIG_IRQ aimed at its own slot with MSIData 0, and completes by that write", () => {
    const { m, hw, q } = queue({ msi: true, cohacc: true });
    expect(q.msiPoll).toBe(true);
    const cons = hw.read32(SMMU_REG.CMDQ_CONS) & 0xfffff;
    const slot = q.base + (cons % 2 ** q.log2) * 16;
    let seen: Record<string, number> = {};
    hw.commandObserver = (w) => {
      seen = decode(CMD_SYNC, w) as Record<string, number>;
    };
    expect(q.submit()).toBe(0);
    expect(seen).toMatchObject({ CS: 1, MSH: 3, MSIAttr: 0xf, MSIData: 0, MSIAddress: slot });
    expect(m.mem.read32(slot)).toBe(0);
  });

  it("without them (or without coherency) it is CS=SIG_SEV and completes when CONS passes it", () => {
    for (const f of [{ msi: false }, { cohacc: false }]) {
      const { hw, q } = queue(f);
      expect(q.msiPoll).toBe(false);
      expect(q.submit()).toBe(0);
      expect(hw.read32(SMMU_REG.CMDQ_CONS)).toBe(hw.read32(SMMU_REG.CMDQ_PROD));
    }
  });

  it("a sync the SMMU never completes gives ETIMEDOUT after a bounded wait, and is counted", () => {
    const { hw, q } = queue();
    hw.autoProcessQueue = false;
    q.prefetchConfig(1).add();
    expect(q.submit()).toBe("ETIMEDOUT");
    expect(q.stats.timeouts).toBe(1);
  });
});

describe("batches, a full queue and wrapping", () => {
  it("adding a 65th command issues the first 64 without a sync; the rest goes with the CMD_SYNC", () => {
    const { tap, q, cmds } = queue();
    const prodWrites = () => tap.writes(SMMU_REG.CMDQ_PROD).length;
    const before = prodWrites();
    for (let i = 0; i < CMDQ_BATCH_ENTRIES; i++) q.prefetchConfig(i).add();
    expect(prodWrites()).toBe(before);
    q.prefetchConfig(64).add();
    expect(prodWrites()).toBe(before + 1);
    expect(cmds).toHaveLength(64);
    expect(q.pending).toBe(1);
    expect(q.submit()).toBe(0);
    expect(prodWrites()).toBe(before + 2);
    expect(ops(cmds).slice(64)).toEqual([CMDQ_OP.PREFETCH_CONFIG, CMDQ_OP.CMD_SYNC]);
  });

  it("a 128-entry queue the SMMU drains a few commands at a time: 300 commands wait for space, wrap, and arrive in order", () => {
    const { hw, q, cmds } = queue({ cmdqs: 7 });
    expect(q.log2).toBe(7);
    hw.autoProcessQueue = false;
    q.idle = () => {
      hw.processCommands(5);
    };
    for (let i = 0; i < 300; i++) expect(q.prefetchConfig(i).add()).toBe(0);
    expect(q.submit()).toBe(0);
    const pf = cmds.filter((c) => c.op === CMDQ_OP.PREFETCH_CONFIG).map((c) => c.f.StreamID);
    expect(pf).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(cmds.filter((c) => c.op === CMDQ_OP.CMD_SYNC)).toHaveLength(1);
    // 300 + sync + bring-up's 6 entries: the index went round the 128 slots twice.
    expect(hw.read32(SMMU_REG.CMDQ_PROD) & 0xff).toBe((306 + 1) % 256);
    expect(q.stats.timeouts).toBe(0);
  });

  it("no space ever freed: the wait for space gives ETIMEDOUT", () => {
    const { hw, q } = queue({ cmdqs: 7 });
    hw.autoProcessQueue = false;
    for (let i = 0; i < 64; i++) q.prefetchConfig(i).add();
    expect(q.submitNoSync()).toBe(0);
    for (let i = 0; i < 64; i++) q.prefetchConfig(i).add();
    expect(q.submit()).toBe("ETIMEDOUT");
    expect(q.stats.timeouts).toBe(1);
  });
});

describe("command errors (GERROR.CMDQ_ERR)", () => {
  it("an illegal command is skipped: rewritten as a CMD_SYNC, counted, kept for reports; the queue goes on", () => {
    const { q, cmds } = queue();
    q.prefetchConfig(1).add();
    q.bare(0x7f).add();
    q.prefetchConfig(2).add();
    expect(q.submit()).toBe(0);
    expect(q.stats.refused).toBe(1);
    expect(q.refusedCommands.at(-1)).toEqual({ words: [0x7f, 0, 0, 0], code: CMDQ_CONS_ERR_ILL });
    expect(ops(cmds)).toEqual([
      CMDQ_OP.PREFETCH_CONFIG,
      CMDQ_OP.CMD_SYNC,
      CMDQ_OP.PREFETCH_CONFIG,
      CMDQ_OP.CMD_SYNC,
    ]);
  });

  it("a fetch abort is retried as it is (CERROR_ABT)", () => {
    const { m, q, cmds } = queue();
    let refuse = 1;
    m.mem.faultHook = (pa, _n, write) => {
      if (write || pa < q.base || pa >= q.base + 16 * 2 ** q.log2 || refuse === 0) return false;
      refuse--;
      return true;
    };
    q.prefetchConfig(9).add();
    expect(q.submit()).toBe(0);
    m.mem.faultHook = null;
    expect(q.stats.aborts).toBe(1);
    expect(ops(cmds)).toEqual([CMDQ_OP.PREFETCH_CONFIG, CMDQ_OP.CMD_SYNC]);
  });

  it("an ATC_INV no device answers fails its CMD_SYNC (CERROR_ATC_INV_SYNC); the sync is retried and completes", () => {
    const { q, cmds } = queue();
    q.atcInv(0x4242, 0, 0, 52).add();
    expect(q.submit()).toBe(0);
    expect(q.stats.atcSyncErrors).toBe(1);
    expect(q.stats.refused).toBe(0);
    expect(ops(cmds)).toEqual([CMDQ_OP.ATC_INV, CMDQ_OP.CMD_SYNC]);
  });

  it("errors the SMMU reports outside a wait are handled by processGlobalErrors", () => {
    const { m, hw, q } = queue();
    hw.autoProcessQueue = false;
    q.bare(0x7f).add();
    expect(q.submitNoSync()).toBe(0);
    hw.processCommands();
    expect((hw.read32(SMMU_REG.GERROR) ^ hw.read32(SMMU_REG.GERRORN)) & 1).toBe(1);
    hw.autoProcessQueue = true;
    m.driver.processGlobalErrors();
    expect(hw.read32(SMMU_REG.GERROR)).toBe(hw.read32(SMMU_REG.GERRORN));
    expect(q.stats.refused).toBe(1);
    expect(hw.read32(SMMU_REG.CMDQ_CONS)).toBe(hw.read32(SMMU_REG.CMDQ_PROD));
  });
});
