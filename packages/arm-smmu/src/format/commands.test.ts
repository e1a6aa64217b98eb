import { decode, encode, hasReservedBits, type Layout } from "@iommu-sim/iommu-core/platform";
import { describeLayouts } from "@iommu-sim/iommu-core/testing/layout";
import { describe, expect, it } from "vitest";
import {
  ATC_INV_SIZE_ALL,
  CFGI_ALL_RANGE,
  CMD_ATC_INV,
  CMD_CFGI_CD,
  CMD_CFGI_STE,
  CMD_CFGI_STE_RANGE,
  CMD_PRI_RESP,
  CMD_RESUME,
  CMD_SIZE,
  CMD_SYNC,
  CMD_SYNC_CS_IRQ,
  CMD_SYNC_CS_SEV,
  CMD_TLBI_NH_VA,
  CMD_TLBI_S2_IPA,
  CMDQ_OP,
  type CommandFeatures,
  cmdLayout,
  cmdName,
  commandError,
  PRI_RESP_SUCC,
  RESUME_ACTION_ABORT,
  RESUME_ACTION_RETRY,
} from "./commands.js";
import { CMDQ_CONS_ERR_ILL, CMDQ_CONS_ERR_NONE } from "./registers.js";

const ALL_LAYOUTS: Layout[] = [];
for (let op = 0; op < 256; op++) {
  const l = cmdLayout(op);
  if (l !== null && !ALL_LAYOUTS.includes(l)) ALL_LAYOUTS.push(l);
}
describeLayouts(ALL_LAYOUTS);

const FULL: CommandFeatures = {
  s1p: true,
  s2p: true,
  hyp: true,
  ats: true,
  pri: true,
  stallModel: 0,
  ril: true,
  ds: false,
  checkReserved: true,
};

function words(l: Layout, v: Record<string, number>): number[] {
  return [...encode(l, v)];
}

describe("command encodings match the kernel's arm_smmu_cmdq_build_cmd", () => {
  it("has a 128-bit layout for every architected opcode and none for reserved ones", () => {
    expect(CMD_SIZE).toBe(16);
    expect(ALL_LAYOUTS.every((l) => l.bits === 128)).toBe(true);
    for (const op of Object.values(CMDQ_OP)) expect(cmdLayout(op)).not.toBeNull();
    for (const op of [0x00, 0x08, 0x14, 0x19, 0x29, 0x31, 0x42, 0x47, 0x74, 0x80, 0x8f, 0xff])
      expect(cmdLayout(op)).toBeNull();
    expect(cmdName(0x12)).toBe("CMD_TLBI_NH_VA");
    expect(cmdName(0x46)).toBe("CMD_SYNC");
    expect(cmdName(0x04)).toBe("CMD_CFGI_STE_RANGE");
    expect(cmdName(0x09)).toBe("CMD_RESERVED_0x09");
  });

  it("CMD_SYNC with CS=SEV", () => {
    expect(words(CMD_SYNC, { Opcode: CMDQ_OP.CMD_SYNC, CS: CMD_SYNC_CS_SEV })).toEqual([
      0x2046, 0, 0, 0,
    ]);
  });

  it("CMD_SYNC with CS=IRQ polling its own slot (MSH=ISH, MSIAttr=OIWB, MSIData=0)", () => {
    const w = words(CMD_SYNC, {
      Opcode: CMDQ_OP.CMD_SYNC,
      CS: CMD_SYNC_CS_IRQ,
      MSH: 3,
      MSIAttr: 0xf,
      MSIAddress: 0x8_1234_5670,
    });
    expect(w).toEqual([0x0fc01046, 0, 0x12345670, 0x8]);
  });

  it("TLBI_NH_VA with ASID 5, address 0x12345000, leaf", () => {
    const w = words(CMD_TLBI_NH_VA, {
      Opcode: CMDQ_OP.TLBI_NH_VA,
      ASID: 5,
      Leaf: 1,
      Address: 0x12345000,
    });
    expect(w).toEqual([0x12, 0x00050000, 0x12345001, 0]);
  });

  it("range TLBI_NH_VA of 2 MiB blocks (TG=4K, TTL=2, NUM=1, SCALE=3)", () => {
    const w = words(CMD_TLBI_NH_VA, {
      Opcode: CMDQ_OP.TLBI_NH_VA,
      NUM: 1,
      SCALE: 3,
      VMID: 0,
      ASID: 9,
      Leaf: 1,
      TTL: 2,
      TG: 1,
      Address: 0x4_0020_0000,
    });
    expect(w).toEqual([
      0x12 | (1 << 12) | (3 << 20),
      9 << 16,
      0x00200001 | (2 << 8) | (1 << 10),
      4,
    ]);
  });

  it("TLBI_S2_IPA keeps IPA[55:12] and VMID", () => {
    const w = words(CMD_TLBI_S2_IPA, { Opcode: 0x2a, VMID: 3, Leaf: 1, IPA: 0x8_0000_1000 });
    expect(w).toEqual([0x2a, 3, 0x1001, 8]);
    expect(CMD_TLBI_S2_IPA.reserved[3]).toBe(0xff000000);
  });

  it("CFGI_STE, CFGI_ALL (CFGI_STE_RANGE with Range 31) and CFGI_CD", () => {
    expect(words(CMD_CFGI_STE, { Opcode: 3, StreamID: 0x123, Leaf: 1 })).toEqual([3, 0x123, 1, 0]);
    expect(words(CMD_CFGI_STE_RANGE, { Opcode: CMDQ_OP.CFGI_ALL, Range: CFGI_ALL_RANGE })).toEqual([
      4, 0, 31, 0,
    ]);
    expect(words(CMD_CFGI_CD, { Opcode: 5, SubstreamID: 7, StreamID: 9, Leaf: 1 })).toEqual([
      5 | (7 << 12),
      9,
      1,
      0,
    ]);
  });

  it("ATC_INV of everything, PRI_RESP and RESUME", () => {
    expect(words(CMD_ATC_INV, { Opcode: 0x40, StreamID: 2, Size: ATC_INV_SIZE_ALL })).toEqual([
      0x40, 2, 52, 0,
    ]);
    expect(
      words(CMD_PRI_RESP, {
        Opcode: 0x41,
        SSV: 1,
        SubstreamID: 4,
        StreamID: 8,
        PRGIndex: 0x1ff,
        Resp: PRI_RESP_SUCC,
      }),
    ).toEqual([0x41 | (1 << 11) | (4 << 12), 8, 0x21ff, 0]);
    // The kernel writes the 2-bit {Ab, Ac} value at [13:12].
    const retry = words(CMD_RESUME, { Opcode: 0x44, Ac: 1, StreamID: 3, STAG: 0x55 });
    expect(retry).toEqual([0x44 | (RESUME_ACTION_RETRY << 12), 3, 0x55, 0]);
    const abort = decode(CMD_RESUME, [0x44 | (RESUME_ACTION_ABORT << 12), 3, 0x55, 0]);
    expect([abort.Ac, abort.Ab]).toEqual([0, 1]);
  });
});

describe("commandError follows 4.1.3", () => {
  const ill = (w: number[], f: Partial<CommandFeatures> = {}) =>
    commandError(w, 0, { ...FULL, ...f });

  it("accepts the commands Linux issues", () => {
    expect(ill([0x2046, 0, 0, 0])).toBe(CMDQ_CONS_ERR_NONE);
    expect(ill([0x12, 0x00050000, 0x12345001, 0])).toBe(CMDQ_CONS_ERR_NONE);
    expect(ill([4, 0, 31, 0])).toBe(CMDQ_CONS_ERR_NONE);
  });
  it("rejects reserved and IMPLEMENTATION DEFINED opcodes", () => {
    for (const op of [0, 0x08, 0x47, 0x80, 0xff])
      expect(ill([op, 0, 0, 0])).toBe(CMDQ_CONS_ERR_ILL);
  });
  it("rejects Secure-only, MPAM and DPT commands on the Non-secure queue", () => {
    for (const op of [0x18, 0x1a, 0x50, 0x51, 0x52, 0x53, 0x58, 0x5a, 0x60, 0x07, 0x70, 0x73])
      expect(ill([op, 0, 0, 0])).toBe(CMDQ_CONS_ERR_ILL);
  });
  it("rejects SSec == 1", () => {
    expect(ill([3 | (1 << 10), 0, 1, 0])).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x44 | (1 << 10), 0, 0, 0])).toBe(CMDQ_CONS_ERR_ILL);
  });
  it("rejects commands for features the SMMU lacks", () => {
    expect(ill([0x05, 0, 0, 0], { s1p: false })).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x11, 0, 0, 0], { s1p: false })).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x12, 0, 0x1000, 0], { s1p: false })).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x20, 0, 0, 0], { hyp: false })).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x22, 0, 0x1000, 0], { hyp: false })).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x28, 0, 0, 0], { s2p: false })).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x2a, 0, 0x1000, 0], { s2p: false })).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x40, 0, 0, 0], { ats: false })).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x41, 0, 0, 0], { pri: false })).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x44, 0, 0, 0], { stallModel: 1 })).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x45, 0, 0, 0], { stallModel: 1 })).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x30, 0, 0, 0], { s1p: false, hyp: false })).toBe(CMDQ_CONS_ERR_NONE);
  });
  it("rejects illegal parameters", () => {
    expect(ill([0x46 | (3 << 12), 0, 0, 0])).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x41, 0, 3 << 12, 0])).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x40, 0, 53, 0])).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x40, 0, 52, 0])).toBe(CMDQ_CONS_ERR_NONE);
    // TG != 0 with NUM == SCALE == TTL == 0 is Reserved.
    expect(ill([0x12, 0, 0x1000 | (1 << 10), 0])).toBe(CMDQ_CONS_ERR_ILL);
    // TG = 16K with TTL = 1 needs IDR5.DS.
    expect(ill([0x12, 0, 0x1000 | (2 << 10) | (1 << 8), 0])).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x12, 0, 0x1000 | (2 << 10) | (1 << 8), 0], { ds: true })).toBe(CMDQ_CONS_ERR_NONE);
  });
  it("rejects non-zero RES0 fields only when configured to check them", () => {
    const res0 = [0x46 | (1 << 8), 0, 0, 0];
    expect(ill(res0)).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill(res0, { checkReserved: false })).toBe(CMDQ_CONS_ERR_NONE);
    // Range fields are RES0 without RIL, SCALE[5] without DS, TTL128 always here.
    const range = [0x12 | (1 << 12), 0, 0x1000 | (1 << 10) | (3 << 8), 0];
    expect(ill(range)).toBe(CMDQ_CONS_ERR_NONE);
    expect(ill(range, { ril: false })).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x12 | (1 << 25), 0, 0x1000 | (1 << 10) | (3 << 8), 0])).toBe(CMDQ_CONS_ERR_ILL);
    expect(ill([0x12 | (1 << 25), 0, 0x1000 | (1 << 10) | (3 << 8), 0], { ds: true })).toBe(
      CMDQ_CONS_ERR_NONE,
    );
    expect(ill([0x12, 0, 0x1000 | (1 << 10) | (3 << 8) | (1 << 7), 0])).toBe(CMDQ_CONS_ERR_ILL);
    expect(hasReservedBits(CMD_TLBI_NH_VA, [0x12 | (1 << 8), 0, 0, 0])).toBe(true);
  });
});
