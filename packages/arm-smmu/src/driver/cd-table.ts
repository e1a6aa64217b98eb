// A master's context descriptor table (struct arm_smmu_ctx_desc_cfg): linear, or 2-level with
// 1024-CD leaf tables allocated on first use.

import { TWO32 } from "@iommu-sim/iommu-core/platform";
import { CD_L2_ENTRIES_64K, CD_SIZE, L1_CD_SIZE } from "../format/cd.js";
import { S1FMT_64K_L2, S1FMT_LINEAR } from "../format/ste.js";
import type { ArmSmmuDevice } from "./arm-smmu-device.js";

/**
 * The CD table of one master.
 *
 * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h struct arm_smmu_ctx_desc_cfg
 */
export class CdTable {
  /** Valid CDs at SSIDs other than 0. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h arm_smmu_ctx_desc_cfg.used_ssids */
  usedSsids = 0;
  /** The master's STE points at this table. */
  inSte = false;
  private readonly l2 = new Map<number, number>();

  private constructor(
    private readonly smmu: ArmSmmuDevice,
    /** STE.S1Fmt: linear or 64K-L2 (1024 CDs per leaf table). */
    readonly s1fmt: number,
    /** STE.S1CDMax: log2 of the CDs the table can hold. */
    readonly s1cdmax: number,
    /** PA of the table (linear) or of the L1 descriptors. */
    readonly pa: number,
  ) {}

  /**
   * A table for 2^ssidBits CDs: linear unless the SMMU has 2-level CD tables and more than one
   * leaf's worth is needed.
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_alloc_cd_tables
   */
  static alloc(smmu: ArmSmmuDevice, ssidBits: number): CdTable | "ENOMEM" {
    const max = 2 ** ssidBits;
    if (!smmu.features.twoLvlCdtab || max <= CD_L2_ENTRIES_64K) {
      const pa = smmu.allocBytes(Math.max(12, Math.log2(max * CD_SIZE)));
      if (pa === "ENOMEM") return pa;
      return new CdTable(smmu, S1FMT_LINEAR, ssidBits, pa);
    }
    const l1 = Math.ceil(max / CD_L2_ENTRIES_64K);
    const pa = smmu.allocBytes(Math.max(12, Math.ceil(Math.log2(l1 * L1_CD_SIZE))));
    if (pa === "ENOMEM") return pa;
    return new CdTable(smmu, S1FMT_64K_L2, ssidBits, pa);
  }

  /**
   * PA of the CD at `ssid`, or -1 when its leaf table does not exist and `alloc` is false. With
   * `alloc`, a missing leaf table is allocated and its L1 descriptor written with one store;
   * `onL1` then runs (the caller syncs the CD, non-leaf: an invalid L1 descriptor can be cached).
   *
   * @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_alloc_cd_ptr
   */
  cdPtr(ssid: number, alloc: boolean, onL1?: () => void): number | "ENOMEM" {
    if (ssid < 0 || ssid >= 2 ** this.s1cdmax) return -1;
    if (this.s1fmt === S1FMT_LINEAR) return this.pa + ssid * CD_SIZE;
    const idx = Math.floor(ssid / CD_L2_ENTRIES_64K);
    let leaf = this.l2.get(idx);
    if (leaf === undefined) {
      if (!alloc) return -1;
      const pa = this.smmu.allocBytes(Math.log2(CD_L2_ENTRIES_64K * CD_SIZE));
      if (pa === "ENOMEM") return pa;
      leaf = pa;
      this.l2.set(idx, pa);
      // L1CD: V (bit 0) and L2Ptr[55:12].
      this.smmu.mem.write64(
        this.pa + idx * L1_CD_SIZE,
        ((pa % TWO32) | 1) >>> 0,
        Math.floor(pa / TWO32),
      );
      onL1?.();
    }
    return leaf + (ssid % CD_L2_ENTRIES_64K) * CD_SIZE;
  }

  /** Give back the table and its leaves. @kernel drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c arm_smmu_free_cd_tables */
  free(): void {
    for (const pa of this.l2.values()) this.smmu.freeBytes(pa);
    this.l2.clear();
    this.smmu.freeBytes(this.pa);
  }
}
