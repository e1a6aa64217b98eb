import { encode, type Field, getField } from "@iommu-sim/iommu-core/platform";
import { describeLayouts } from "@iommu-sim/iommu-core/testing/layout";
import { describe, expect, it } from "vitest";
import {
  AIDR_REG,
  CMDQ_BASE_REG,
  CMDQ_CONS_ERR_MASK,
  CMDQ_CONS_ERR_SHIFT,
  CMDQ_CONS_REG,
  CMDQ_PROD_REG,
  CR0_ATSCHK,
  CR0_CMDQEN,
  CR0_EVTQEN,
  CR0_PRIQEN,
  CR0_REG,
  CR0_SMMUEN,
  CR0_WRITABLE,
  CR1_REG,
  CR2_REG,
  EVENTQ_BASE_REG,
  GBPA_ABORT,
  GBPA_REG,
  GBPA_UPDATE,
  GERROR_CMDQ_ERR,
  GERROR_ERR_MASK,
  GERROR_EVTQ_ABT_ERR,
  GERROR_MSI_CMDQ_ABT_ERR,
  GERROR_MSI_GERROR_ABT_ERR,
  GERROR_PRIQ_ABT_ERR,
  GERROR_REG,
  GERROR_SFM_ERR,
  IDR0_REG,
  IDR1_REG,
  IDR2_REG,
  IDR3_REG,
  IDR4_REG,
  IDR5_REG,
  IIDR_REG,
  IRQ_CFG0_REG,
  IRQ_CFG1_REG,
  IRQ_CFG2_REG,
  IRQ_CTRL_EVTQ_IRQEN,
  IRQ_CTRL_GERROR_IRQEN,
  IRQ_CTRL_PRIQ_IRQEN,
  IRQ_CTRL_REG,
  PRIQ_BASE_REG,
  PRIQ_IRQ_CFG2_REG,
  Q_BASE_REG,
  Q_CONS_REG,
  Q_OVERFLOW_FLAG,
  Q_PROD_REG,
  qEmpty,
  qFull,
  qIdx,
  qInc,
  qWrap,
  SMMU_REG,
  STATUSR_REG,
  STRTAB_BASE_CFG_REG,
  STRTAB_BASE_REG,
} from "./registers.js";

describeLayouts([
  IDR0_REG,
  IDR1_REG,
  IDR2_REG,
  IDR3_REG,
  IDR4_REG,
  IDR5_REG,
  IIDR_REG,
  AIDR_REG,
  CR0_REG,
  CR1_REG,
  CR2_REG,
  STATUSR_REG,
  GBPA_REG,
  IRQ_CTRL_REG,
  GERROR_REG,
  IRQ_CFG0_REG,
  IRQ_CFG1_REG,
  IRQ_CFG2_REG,
  PRIQ_IRQ_CFG2_REG,
  STRTAB_BASE_REG,
  STRTAB_BASE_CFG_REG,
  CMDQ_BASE_REG,
  EVENTQ_BASE_REG,
  PRIQ_BASE_REG,
  Q_BASE_REG,
  CMDQ_PROD_REG,
  CMDQ_CONS_REG,
  Q_PROD_REG,
  Q_CONS_REG,
]);

describe("register offsets", () => {
  it("puts the event and PRI queue PROD/CONS on page 1 only", () => {
    expect(SMMU_REG.EVENTQ_PROD).toBe(0x100a8);
    expect(SMMU_REG.EVENTQ_CONS).toBe(0x100ac);
    expect(SMMU_REG.PRIQ_PROD).toBe(0x100c8);
    expect(SMMU_REG.PRIQ_CONS).toBe(0x100cc);
  });
  it("matches the kernel's page-0 offsets", () => {
    expect([
      SMMU_REG.CR0,
      SMMU_REG.GBPA,
      SMMU_REG.GERROR_IRQ_CFG2,
      SMMU_REG.STRTAB_BASE_CFG,
    ]).toEqual([0x20, 0x44, 0x74, 0x88]);
    expect([SMMU_REG.CMDQ_CONS, SMMU_REG.EVENTQ_IRQ_CFG2, SMMU_REG.PRIQ_IRQ_CFG2]).toEqual([
      0x9c, 0xbc, 0xdc,
    ]);
  });
});

describe("hot bits derived from the tables", () => {
  it("match the kernel's CR0, IRQ_CTRL, GBPA and GERROR constants", () => {
    expect([CR0_SMMUEN, CR0_PRIQEN, CR0_EVTQEN, CR0_CMDQEN, CR0_ATSCHK]).toEqual([1, 2, 4, 8, 16]);
    expect(CR0_WRITABLE).toBe(0x3df);
    expect([IRQ_CTRL_GERROR_IRQEN, IRQ_CTRL_PRIQ_IRQEN, IRQ_CTRL_EVTQ_IRQEN]).toEqual([1, 2, 4]);
    expect(GBPA_UPDATE).toBe(0x80000000);
    expect(GBPA_ABORT).toBe(1 << 20);
    expect([GERROR_CMDQ_ERR, GERROR_EVTQ_ABT_ERR, GERROR_PRIQ_ABT_ERR]).toEqual([1, 4, 8]);
    expect([GERROR_MSI_CMDQ_ABT_ERR, GERROR_MSI_GERROR_ABT_ERR, GERROR_SFM_ERR]).toEqual([
      0x10, 0x80, 0x100,
    ]);
    expect(GERROR_ERR_MASK).toBe(0x1fd);
    expect(Q_OVERFLOW_FLAG).toBe(0x80000000);
    expect([CMDQ_CONS_ERR_SHIFT, CMDQ_CONS_ERR_MASK]).toEqual([24, 0x7f000000]);
  });
  it("encodes the CR1 value Linux writes (ISH, WB, WB for tables and queues) as 0xD75", () => {
    const w = encode(CR1_REG, {
      TABLE_SH: 3,
      TABLE_OC: 1,
      TABLE_IC: 1,
      QUEUE_SH: 3,
      QUEUE_OC: 1,
      QUEUE_IC: 1,
    });
    expect(w[0]).toBe(0xd75);
  });
  it("encodes a queue base as Linux does: RWA | address | LOG2SIZE", () => {
    const w = encode(Q_BASE_REG, { RWA: 1, ADDR: 0x8_1234_0000, LOG2SIZE: 10 });
    expect([w[0], w[1]]).toEqual([0x1234000a, 0x40000008]);
  });
});

describe("queue pointers", () => {
  it("split index and wrap at LOG2SIZE", () => {
    expect(qIdx(0x13, 4)).toBe(3);
    expect(qWrap(0x13, 4)).toBe(1);
    expect(qInc(0x1f, 4)).toBe(0);
    expect(qInc(0x0f, 4)).toBe(0x10);
  });
  it("tell empty (same index and wrap) from full (same index, other wrap)", () => {
    expect(qEmpty(0x13, 0x13, 4)).toBe(true);
    expect(qFull(0x13, 0x13, 4)).toBe(false);
    expect(qFull(0x03, 0x13, 4)).toBe(true);
    expect(qEmpty(0x03, 0x13, 4)).toBe(false);
    expect(qEmpty(Q_OVERFLOW_FLAG | 0x5, 0x5, 4)).toBe(true);
  });
});

describe("32-bit fields", () => {
  it("decode with bit 31 set as an unsigned number", () => {
    const w = new Uint32Array([0x80000000]);
    expect(getField(IRQ_CFG1_REG.field.DATA as Field, w)).toBe(0x80000000);
  });
});
