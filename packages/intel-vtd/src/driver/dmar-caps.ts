// What the driver reads of a unit's capability registers (the kernel's cap_*/ecap_* macros),
// decoded with the CAP_REG and ECAP_REG field tables.

import { decode, type Mmio } from "@iommu-sim/iommu-core/platform";
import { CAP_REG, ECAP_REG, VTD_REG } from "../format/registers.js";

/**
 * The CAP and ECAP fields the driver acts on, by their spec names.
 *
 * @kernel drivers/iommu/intel/iommu.h cap_sagaw
 */
export interface DmarCaps {
  readonly ND: number;
  readonly RWBF: boolean;
  readonly PLMR: boolean;
  readonly PHMR: boolean;
  readonly CM: boolean;
  readonly SAGAW: number;
  /** MGAW + 1: the widest guest address. */
  readonly mgaw: number;
  /** Fault recording registers at FRO * 16. */
  readonly FRO: number;
  readonly SLLPS: number;
  readonly PSI: boolean;
  /** Fault recording registers: NFR + 1. */
  readonly nfr: number;
  readonly MAMV: number;
  readonly DWD: boolean;
  readonly DRD: boolean;
  readonly FL1GP: boolean;
  readonly FL5LP: boolean;
  readonly ESRTPS: boolean;
  readonly C: boolean;
  readonly QI: boolean;
  readonly DT: boolean;
  readonly PT: boolean;
  readonly SC: boolean;
  readonly NEST: boolean;
  readonly PRS: boolean;
  readonly ERS: boolean;
  readonly SRS: boolean;
  readonly PSS: number;
  readonly PASID: boolean;
  readonly PDS: boolean;
  /** Device-TLB invalidation throttling: PFSID is meaningful (reserved, so 0, without it). */
  readonly DIT: boolean;
  readonly SMTS: boolean;
  readonly SLADS: boolean;
  readonly SLTS: boolean;
  readonly FLTS: boolean;
  readonly SMPWCS: boolean;
}

/** Read CAP and ECAP through `mmio`. @kernel drivers/iommu/intel/dmar.c map_iommu */
export function readDmarCaps(mmio: Mmio): DmarCaps {
  const c = decode(CAP_REG, [mmio.read32(VTD_REG.CAP), mmio.read32(VTD_REG.CAP + 4)]);
  const e = decode(ECAP_REG, [mmio.read32(VTD_REG.ECAP), mmio.read32(VTD_REG.ECAP + 4)]);
  const n = (x: unknown): number => Number(x);
  const t = (x: unknown): boolean => Number(x) === 1;
  return {
    ND: n(c.ND),
    RWBF: t(c.RWBF),
    PLMR: t(c.PLMR),
    PHMR: t(c.PHMR),
    CM: t(c.CM),
    SAGAW: n(c.SAGAW),
    mgaw: n(c.MGAW) + 1,
    FRO: n(c.FRO),
    SLLPS: n(c.SLLPS),
    PSI: t(c.PSI),
    nfr: n(c.NFR) + 1,
    MAMV: n(c.MAMV),
    DWD: t(c.DWD),
    DRD: t(c.DRD),
    FL1GP: t(c.FL1GP),
    FL5LP: t(c.FL5LP),
    ESRTPS: t(c.ESRTPS),
    C: t(e.C),
    QI: t(e.QI),
    DT: t(e.DT),
    PT: t(e.PT),
    SC: t(e.SC),
    NEST: t(e.NEST),
    PRS: t(e.PRS),
    ERS: t(e.ERS),
    SRS: t(e.SRS),
    PSS: n(e.PSS),
    PASID: t(e.PASID),
    PDS: t(e.PDS),
    DIT: t(e.DIT),
    SMTS: t(e.SMTS),
    SLADS: t(e.SLADS),
    SLTS: t(e.SLTS),
    FLTS: t(e.FLTS),
    SMPWCS: t(e.SMPWCS),
  };
}

/** Number of domain IDs CAP.ND allows: 2^(4 + 2 ND), at most 65536. @kernel drivers/iommu/intel/iommu.h cap_ndoms */
export function capNdoms(caps: DmarCaps): number {
  return Math.min(2 ** (4 + 2 * caps.ND), 65536);
}
