// The SMMU invalidation log: which executed command covers which stale cache entry.

import { CMDQ_OP } from "@iommu-sim/arm-smmu/format";
import {
  SMMU_ASID_IPA,
  SMMU_TLB_S1,
  SMMU_TLB_S2,
  type SmmuTlbEntry,
  type SmmuWalkCacheEntry,
} from "@iommu-sim/arm-smmu/hw";
import { SmmuTestMachine, smmuTestMachine } from "@iommu-sim/arm-smmu/testing";
import { describe, expect, it } from "vitest";
import { smmuTlbFields, smmuWalkFields } from "./smmu-diagnose.js";
import { pendingCovering, SmmuInvalidationLog } from "./smmu-invalidation-log.js";
import type { StaleEntry } from "./violation.js";

const cmd = SmmuTestMachine.command;
const VA = 0x4000_0000;

function setup(o: Parameters<typeof smmuTestMachine>[0] = {}) {
  const m = smmuTestMachine(o);
  let t = 0;
  const log = new SmmuInvalidationLog([m.smmu], () => t);
  return { m, log, tick: () => t++ };
}

/** A TLB entry of `kind` as a diagnosis reports it. */
function tlb(o: Partial<SmmuTlbEntry> = {}): StaleEntry {
  const e: SmmuTlbEntry = {
    index: 0,
    vmid: 0,
    asid: 7,
    vpn: VA / 4096,
    sizeShift: 12,
    global: false,
    kind: SMMU_TLB_S1,
    oaFrame: 0x80000,
    perm: 3,
    tgShift: 12,
    level: 3,
    stamp: 0,
    ...o,
  };
  return { cache: "tlb", where: "smmu0", fields: smmuTlbFields(e) };
}

describe("SmmuInvalidationLog", () => {
  it("finds the first command since the mark that covered a TLB entry, decoded", () => {
    const { m, log, tick } = setup();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 }));
    const mark = log.mark();
    tick();
    expect(log.coveringSince(mark, "smmu0", 4, tlb())).toBeNull();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA + 0x1000, Leaf: 1 }));
    tick();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 }));
    tick();
    m.submit(cmd(CMDQ_OP.TLBI_NH_ASID, { ASID: 7 }));
    expect(log.coveringSince(mark, "smmu0", 4, tlb())).toEqual({
      descriptor: "CMD_TLBI_NH_VA",
      time: 2,
      fields: { ASID: 7, Leaf: 1, Address: "0x40000000" },
    });
    // Another ASID, VMID, page or SMMU is not covered by the VA commands.
    expect(log.coveringSince(mark, "smmu0", 4, tlb({ asid: 8 }))).toBeNull();
    expect(log.coveringSince(mark, "smmu1", 4, tlb())).toBeNull();
    expect(log.coveringSince(mark, "smmu0", 4, tlb({ vmid: 1 }))).toBeNull();
    expect(log.coveringSince(mark, "smmu0", 4, tlb({ vpn: VA / 4096 + 2 }))?.descriptor).toBe(
      "CMD_TLBI_NH_ASID",
    );
    // No mark: nothing is searched.
    expect(log.coveringSince(-1, "smmu0", 4, tlb())).toBeNull();
  });

  it("applies the TLB's scopes: global entries, stage 2 only entries, VMID-wide and everything", () => {
    const { m, log } = setup();
    const mark = log.mark();
    m.submit(cmd(CMDQ_OP.TLBI_NH_ASID, { ASID: 7 }));
    // NH_ASID leaves global entries; NH_VA of any ASID takes them.
    expect(log.coveringSince(mark, "smmu0", 4, tlb({ global: true, asid: 0 }))).toBeNull();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 3, Address: VA, Leaf: 1 }));
    expect(log.coveringSince(mark, "smmu0", 4, tlb({ global: true, asid: 0 }))?.descriptor).toBe(
      "CMD_TLBI_NH_VA",
    );
    const s2 = tlb({ kind: SMMU_TLB_S2, asid: SMMU_ASID_IPA, vmid: 5 });
    expect(log.coveringSince(mark, "smmu0", 4, s2)).toBeNull();
    m.submit(cmd(CMDQ_OP.TLBI_S2_IPA, { VMID: 5, IPA: VA, Leaf: 1 }));
    expect(log.coveringSince(mark, "smmu0", 4, s2)?.descriptor).toBe("CMD_TLBI_S2_IPA");
    const v9 = tlb({ vmid: 9 });
    m.submit(cmd(CMDQ_OP.TLBI_S12_VMALL, { VMID: 9 }));
    expect(log.coveringSince(mark, "smmu0", 4, v9)?.descriptor).toBe("CMD_TLBI_S12_VMALL");
    const v10 = tlb({ vmid: 10 });
    expect(log.coveringSince(mark, "smmu0", 4, v10)).toBeNull();
    m.submit(cmd(CMDQ_OP.TLBI_NSNH_ALL));
    expect(log.coveringSince(mark, "smmu0", 4, v10)?.descriptor).toBe("CMD_TLBI_NSNH_ALL");
  });

  it("decodes range invalidations as the SMMU does (RIL: NUM, SCALE, TG, TTL)", () => {
    const { m, log } = setup();
    const mark = log.mark();
    // 4 pages from VA - 0x2000 with TG 4K: covers VA.
    m.submit(
      cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA - 0x2000, Leaf: 1, TG: 1, NUM: 3, TTL: 3 }),
    );
    expect(log.coveringSince(mark, "smmu0", 4, tlb())?.descriptor).toBe("CMD_TLBI_NH_VA");
    // TTL 2 (level 2 leaves only) keeps a level 3 entry.
    expect(log.coveringSince(mark, "smmu0", 4, tlb({ level: 2 }))).toBeNull();
    // Without RIL the range fields are ignored: one page at Address.
    const n = setup({ features: { ril: false } });
    const k = n.log.mark();
    n.m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA - 0x2000, Leaf: 1 }));
    expect(n.log.coveringSince(k, "smmu0", 4, tlb())).toBeNull();
  });

  it("walk-cache entries: a leaf-only invalidation leaves them, Leaf = 0 and NH_ASID take them", () => {
    const { m, log } = setup();
    const walk: StaleEntry = {
      cache: "walk-cache",
      where: "smmu0",
      fields: smmuWalkFields({
        index: 0,
        vmid: 0,
        asid: 7,
        stage: 1,
        level: 2,
        tgShift: 12,
        tag: Math.floor(VA / 0x20_0000),
        tablePa: 0x1000,
        attrs: 0,
        stamp: 0,
      }),
    };
    const mark = log.mark();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 }));
    expect(log.coveringSince(mark, "smmu0", 4, walk)).toBeNull();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA + 0x5000, Leaf: 0 }));
    expect(log.coveringSince(mark, "smmu0", 4, walk)?.fields).toMatchObject({
      Address: "0x40005000",
    });
    const later = log.mark();
    m.submit(cmd(CMDQ_OP.TLBI_NH_ASID, { ASID: 7 }));
    expect(log.coveringSince(later, "smmu0", 4, walk)?.descriptor).toBe("CMD_TLBI_NH_ASID");
  });

  it("STE and CD cache entries: CFGI_STE takes both, CFGI_CD only its SubstreamID, ranges and ALL", () => {
    const { m, log } = setup();
    const ste: StaleEntry = { cache: "ste-cache", where: "smmu0", fields: { SID: "0x4" } };
    const cd = (ssid: number): StaleEntry => ({
      cache: "cd-cache",
      where: "smmu0",
      fields: { SID: "0x4", SSID: ssid },
    });
    let mark = log.mark();
    m.submit(cmd(CMDQ_OP.CFGI_CD, { StreamID: 4, SubstreamID: 3, Leaf: 1 }));
    expect(log.coveringSince(mark, "smmu0", 4, cd(3))?.descriptor).toBe("CMD_CFGI_CD");
    expect(log.coveringSince(mark, "smmu0", 4, cd(2))).toBeNull();
    expect(log.coveringSince(mark, "smmu0", 4, ste)).toBeNull();
    expect(log.coveringSince(mark, "smmu0", 5, cd(3))).toBeNull();
    m.submit(cmd(CMDQ_OP.CFGI_CD_ALL, { StreamID: 4 }));
    expect(log.coveringSince(mark, "smmu0", 4, cd(2))?.descriptor).toBe("CMD_CFGI_CD_ALL");
    mark = log.mark();
    m.submit(cmd(CMDQ_OP.CFGI_STE, { StreamID: 4, Leaf: 1 }));
    expect(log.coveringSince(mark, "smmu0", 4, ste)?.descriptor).toBe("CMD_CFGI_STE");
    expect(log.coveringSince(mark, "smmu0", 4, cd(9))?.descriptor).toBe("CMD_CFGI_STE");
    mark = log.mark();
    m.submit(cmd(CMDQ_OP.CFGI_STE_RANGE, { StreamID: 6, Range: 1 }));
    expect(log.coveringSince(mark, "smmu0", 4, ste)?.descriptor).toBe("CMD_CFGI_STE_RANGE");
    expect(log.coveringSince(mark, "smmu0", 8, ste)).toBeNull();
    m.submit(cmd(CMDQ_OP.CFGI_STE_RANGE, { Range: 31 }));
    expect(log.coveringSince(mark, "smmu0", 8, ste)?.fields).toEqual({ Range: 31 });
  });

  it("ATC entries: ATC_INV of the StreamID, its SubstreamID (or none: every one) and span", () => {
    const { m, log } = setup();
    m.port(4);
    const atc = (pasid: number | null, iova: number, size = 4096): StaleEntry => ({
      cache: "atc",
      where: "dev4",
      fields: { SID: "0x4", pasid, iova: `0x${iova.toString(16)}`, size },
    });
    const mark = log.mark();
    m.submit(cmd(CMDQ_OP.ATC_INV, { StreamID: 4, SSV: 1, SubstreamID: 3, Address: VA, Size: 2 }));
    expect(log.coveringSince(mark, "smmu0", 4, atc(3, VA + 0x3000))?.descriptor).toBe(
      "CMD_ATC_INV",
    );
    expect(log.coveringSince(mark, "smmu0", 4, atc(3, VA + 0x4000))).toBeNull();
    expect(log.coveringSince(mark, "smmu0", 4, atc(2, VA))).toBeNull();
    expect(log.coveringSince(mark, "smmu0", 4, atc(null, VA))).toBeNull();
    expect(log.coveringSince(mark, "smmu0", 5, atc(3, VA))).toBeNull();
    m.submit(cmd(CMDQ_OP.ATC_INV, { StreamID: 4, Size: 52 }));
    expect(log.coveringSince(mark, "smmu0", 4, atc(2, 0x1234_5000))?.fields).toEqual({
      StreamID: 4,
      Size: 52,
    });
    expect(log.coveringSince(mark, "smmu0", 4, atc(null, VA, 0x20_0000))).not.toBeNull();
  });

  it("keeps the last 4096 commands, chains an observer already set, and ignores malformed entries", () => {
    const m = smmuTestMachine();
    const earlier: number[] = [];
    m.smmu.commandObserver = (w) => {
      earlier.push((w[0] as number) & 0xff);
    };
    const log = new SmmuInvalidationLog([m.smmu], () => 0);
    const mark = log.mark();
    m.submit(cmd(CMDQ_OP.TLBI_NH_ASID, { ASID: 7 }));
    expect(earlier).toEqual([CMDQ_OP.TLBI_NH_ASID, CMDQ_OP.CMD_SYNC]);
    expect(log.coveringSince(mark, "smmu0", 4, tlb())).not.toBeNull();
    const sync = cmd(CMDQ_OP.CMD_SYNC);
    const observe = m.smmu.commandObserver;
    for (let i = 0; i < 4096; i++) observe?.(sync, 0);
    expect(log.coveringSince(mark, "smmu0", 4, tlb())).toBeNull();
    const bad: StaleEntry = { cache: "tlb", where: "smmu0", fields: { VMID: "x" } };
    expect(log.coveringSince(0, "smmu0", 4, bad)).toBeNull();
    const other: StaleEntry = { cache: "iotlb", where: "smmu0", fields: {} };
    expect(log.coveringSince(0, "smmu0", 4, other)).toBeNull();
  });
});

/** A stage 1 walk-cache entry (level 2 over VA) as a diagnosis reports it. */
function walkEntry(o: Partial<SmmuWalkCacheEntry> = {}): StaleEntry {
  return {
    cache: "walk-cache",
    where: "smmu0",
    fields: smmuWalkFields({
      index: 0,
      vmid: 0,
      asid: 7,
      stage: 1,
      level: 2,
      tgShift: 12,
      tag: Math.floor(VA / 0x20_0000),
      tablePa: 0x1000,
      attrs: 0,
      stamp: 0,
      ...o,
    }),
  };
}

describe("SmmuInvalidationLog.missedSince: a command aimed at the entry with one wrong parameter", () => {
  const missed = (log: SmmuInvalidationLog, mark: number, e: StaleEntry, sid = 4) =>
    log.missedSince(mark, -1, "smmu0", sid, e)?.reason ?? null;

  it("names a wrong ASID, VMID, opcode, TTL, Leaf or a range that stops short", () => {
    const { m, log } = setup();
    let mark = log.mark();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 8, Address: VA, Leaf: 1 }));
    expect(log.missedSince(mark, -1, "smmu0", 4, tlb())).toMatchObject({
      descriptor: "CMD_TLBI_NH_VA",
      fields: { ASID: 8, Leaf: 1, Address: "0x40000000" },
      reason: "its ASID 8 is not the entry's 7",
    });
    mark = log.mark();
    const s2 = tlb({ kind: SMMU_TLB_S2, asid: SMMU_ASID_IPA, vmid: 5 });
    m.submit(cmd(CMDQ_OP.TLBI_S2_IPA, { VMID: 6, IPA: VA, Leaf: 1 }));
    expect(missed(log, mark, s2)).toBe("its VMID 6 is not the entry's 5");
    mark = log.mark();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 5, Address: VA, Leaf: 1 }));
    expect(missed(log, mark, s2)).toBe(
      "CMD_TLBI_NH_VA never removes stage 2 TLB entries: they need CMD_TLBI_S2_IPA",
    );
    mark = log.mark();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1, TG: 1, TTL: 2 }));
    expect(missed(log, mark, tlb())).toBe(
      "its TTL 2 limits it to level 2 entries, and the entry is a level 3 one",
    );
    mark = log.mark();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 }));
    expect(missed(log, mark, walkEntry())).toMatch(/^Leaf = 1 removes leaf entries only/);
    mark = log.mark();
    // 3 pages from VA - 0x3000 end just before VA; 3 pages from VA + 0x1000 start just after.
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA - 0x3000, Leaf: 1, TG: 1, NUM: 2 }));
    expect(missed(log, mark, tlb())).toBe(
      "its range [0x3fffd000, 0x40000000) (3 pages) ends before the entry at 0x40000000",
    );
    mark = log.mark();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA + 0x1000, Leaf: 1, TG: 1, NUM: 2 }));
    expect(missed(log, mark, tlb())).toBe(
      "its range [0x40001000, 0x40004000) starts after the entry at 0x40000000",
    );
  });

  it("names a wrong StreamID or SubstreamID of a CFGI or an ATC_INV, and an ATC span too small", () => {
    const { m, log } = setup();
    m.port(4);
    const cd: StaleEntry = { cache: "cd-cache", where: "smmu0", fields: { SID: "0x4", SSID: 3 } };
    const ste: StaleEntry = { cache: "ste-cache", where: "smmu0", fields: { SID: "0x4" } };
    let mark = log.mark();
    m.submit(cmd(CMDQ_OP.CFGI_CD, { StreamID: 4, SubstreamID: 4, Leaf: 1 }));
    expect(missed(log, mark, cd)).toBe("its SubstreamID 4 is not the entry's 3");
    mark = log.mark();
    m.submit(cmd(CMDQ_OP.CFGI_STE, { StreamID: 0xc, Leaf: 1 }));
    expect(missed(log, mark, ste)).toBe("its StreamID 0xc is not the entry's 0x4");
    const atc = (pasid: number | null, iova: number): StaleEntry => ({
      cache: "atc",
      where: "dev4",
      fields: { SID: "0x4", pasid, iova: `0x${iova.toString(16)}`, size: 4096 },
    });
    mark = log.mark();
    m.submit(cmd(CMDQ_OP.ATC_INV, { StreamID: 4, SSV: 1, SubstreamID: 2, Address: VA, Size: 1 }));
    expect(missed(log, mark, atc(3, VA))).toBe("its SubstreamID 2 is not the entry's 3");
    expect(missed(log, mark, atc(null, VA))).toBe(
      "SSV = 1 (SubstreamID 2) leaves the entries the device cached without a PASID",
    );
    expect(missed(log, mark, atc(2, VA + 0x2000))).toBe(
      "its span [0x40000000, 0x40002000) (Size 1) does not reach the entry at 0x40002000",
    );
  });

  it("looks only at the removing operation's commands when its end is known", () => {
    const { m, log } = setup();
    const mark = log.mark();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA + 0x10_0000, Leaf: 1 }));
    const end = log.mark();
    // A later operation's command for the same page of another ASID is not blamed.
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 8, Address: VA, Leaf: 1 }));
    expect(log.missedSince(mark, end, "smmu0", 4, tlb())).toBeNull();
    expect(log.missedSince(mark, -1, "smmu0", 4, tlb())?.reason).toBe(
      "its ASID 8 is not the entry's 7",
    );
  });

  it("is null when nothing was close: no command, a far range, a covering command, no mark", () => {
    const { m, log } = setup();
    const mark = log.mark();
    expect(log.missedSince(mark, -1, "smmu0", 4, tlb())).toBeNull();
    m.submit(cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA + 0x10_0000, Leaf: 1 }));
    expect(log.missedSince(mark, -1, "smmu0", 4, tlb())).toBeNull();
    m.submit(cmd(CMDQ_OP.TLBI_NH_ASID, { ASID: 7 }));
    expect(log.missedSince(mark, -1, "smmu0", 4, tlb())).toBeNull();
    expect(log.missedSince(-1, -1, "smmu0", 4, tlb({ asid: 9 }))).toBeNull();
    expect(log.missedSince(mark, -1, "smmu1", 4, tlb({ asid: 9 }))).toBeNull();
  });
});

describe("pendingCovering: an invalidation published but not yet consumed", () => {
  it("finds a command between CMDQ_CONS and CMDQ_PROD that covers the entry, until the SMMU runs it", () => {
    const m = smmuTestMachine({ autoProcessQueue: false });
    m.submitRaw([cmd(CMDQ_OP.PREFETCH_CONFIG, { StreamID: 4 })]);
    m.submitRaw([cmd(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 })]);
    expect(pendingCovering(m.smmu, 4, tlb())).toEqual({
      descriptor: "CMD_TLBI_NH_VA",
      fields: { ASID: 7, Leaf: 1, Address: "0x40000000" },
      cons: 0,
      prod: 2,
    });
    expect(pendingCovering(m.smmu, 4, tlb({ asid: 8 }))).toBeNull();
    m.smmu.processCommands(1);
    expect(pendingCovering(m.smmu, 4, tlb())?.cons).toBe(1);
    m.smmu.processCommands();
    expect(pendingCovering(m.smmu, 4, tlb())).toBeNull();
    const other: StaleEntry = { cache: "unknown", where: "smmu0", fields: {} };
    expect(pendingCovering(m.smmu, 4, other)).toBeNull();
  });

  it("reads across the queue's wrap", () => {
    const m = smmuTestMachine({ autoProcessQueue: false, queueLog2: 2 });
    for (let i = 0; i < 3; i++) m.submitRaw([cmd(CMDQ_OP.PREFETCH_CONFIG, { StreamID: 4 })]);
    m.smmu.processCommands();
    m.submitRaw([cmd(CMDQ_OP.PREFETCH_CONFIG, { StreamID: 4 })]);
    m.submitRaw([cmd(CMDQ_OP.TLBI_NH_ASID, { ASID: 7 })]);
    expect(pendingCovering(m.smmu, 4, tlb())).toMatchObject({
      descriptor: "CMD_TLBI_NH_ASID",
      cons: 3,
      prod: 5,
    });
  });
});
