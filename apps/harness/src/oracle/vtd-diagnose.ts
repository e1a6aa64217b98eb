// Diagnosing a stale VT-d translation: which cache answered (the device's ATC, or the unit's
// context, PASID, IOTLB or paging-structure cache, compared with what memory says now) and the
// invalidation descriptor that would have removed the entry.

import {
  VTD_KIND_FIRST_STAGE,
  VTD_KIND_NESTED,
  VTD_PASID_NONE,
  type VtdDevConfig,
  type VtdPasidConfig,
  type VtdUnit,
} from "@iommu-sim/intel-vtd/hw";
import { type Device, NO_PASID, newTranslationRequest } from "@iommu-sim/iommu-core";
import { hex, type MissingInvalidation, type StaleEntry } from "./violation.js";

const PAGE = 4096;

/**
 * Which cache answered, and the descriptor that would have removed the entry. The ATC when the
 * device used it; else the first cached structure that differs from memory: context entry,
 * PASID entry, then the IOTLB entry for the page, then the deepest paging-structure entry on
 * its path (with the address and size it reaches, so invalidation ranges can be matched).
 */
export function diagnoseVtdStale(
  dev: Device,
  hw: VtdUnit,
  pasid: number,
  iovaPfn: number,
  access: number,
  privileged: boolean,
  viaAtc: boolean,
): { entry: StaleEntry; missing: MissingInvalidation } {
  const sid = dev.rid & 0xffff;
  if (viaAtc) {
    const e = dev.atc
      ?.entries()
      .find(
        (a) =>
          a.pasid === pasid &&
          iovaPfn >= a.iovaPfn &&
          iovaPfn < a.iovaPfn + 2 ** (a.sizeShift - 12),
      );
    const order = e === undefined ? 0 : e.sizeShift - 12;
    const base = e === undefined ? iovaPfn : e.iovaPfn;
    return {
      entry: {
        cache: "device-tlb",
        where: dev.name,
        fields: {
          pasid: pasid === NO_PASID ? null : pasid,
          iova: hex(base * PAGE),
          pa: e === undefined ? null : hex(e.paBase),
          size: 2 ** (order + 12),
          perm: e === undefined ? null : permText(e.perm),
        },
      },
      missing:
        pasid === NO_PASID || pasid === 0
          ? {
              descriptor: "device-TLB invalidation (type 3)",
              fields: {
                SID: hex(sid),
                ADDR: hex(base * PAGE),
                S: order > 0 ? 1 : 0,
                pages: 2 ** order,
              },
            }
          : {
              descriptor: "PASID-based device-TLB invalidation (type 8)",
              fields: {
                SID: hex(sid),
                PASID: pasid,
                ADDR: hex(base * PAGE),
                S: order > 0 ? 1 : 0,
                pages: 2 ** order,
              },
            },
    };
  }
  const req = newTranslationRequest();
  req.rid = dev.rid;
  req.sid = dev.sid;
  req.pasid = pasid;
  req.iovaPfn = iovaPfn;
  req.access = access;
  req.privileged = privileged;
  const ins = hw.inspect(req);
  const ctx = ins.context;
  if (ctx.cached !== null && !sameDevConfig(ctx.cached, ctx.fresh)) {
    return {
      entry: {
        cache: "context-cache",
        where: hw.name,
        fields: { SID: hex(sid), DID: ctx.cached.did, present: ctx.cached.status === 0 },
      },
      missing: {
        descriptor: "context-cache invalidation (type 1)",
        fields: { G: "device", SID: hex(sid), DID: ctx.cached.did },
      },
    };
  }
  const pe = ins.pasidEntry;
  if (
    pe !== null &&
    pe.cached !== null &&
    (pe.fresh === null || !samePasidConfig(pe.cached, pe.fresh))
  ) {
    return {
      entry: {
        cache: "pasid-cache",
        where: hw.name,
        fields: {
          SID: hex(sid),
          PASID: pe.pasid,
          DID: pe.cached.did,
          PGTT: pe.cached.pgtt,
          root: hex(pe.cached.pgtt === 2 ? pe.cached.slptptr : pe.cached.flptr),
        },
      },
      missing: {
        descriptor: "PASID-cache invalidation (type 7)",
        fields: { G: "PASID-selective", DID: pe.cached.did, PASID: pe.pasid },
      },
    };
  }
  const t = ins.iotlb;
  if (t !== null) {
    const am = t.sizeShift - 12;
    const tagPasid = t.pasid === VTD_PASID_NONE ? null : t.pasid;
    const firstStage = t.kind === VTD_KIND_FIRST_STAGE || t.kind === VTD_KIND_NESTED;
    return {
      entry: {
        cache: "iotlb",
        where: hw.name,
        fields: {
          DID: t.did,
          PASID: tagPasid,
          iova: hex(t.vpn * PAGE),
          pa: hex(t.paFrame * PAGE),
          size: 2 ** t.sizeShift,
          kind: kindName(t.kind),
          perm: permText(t.perm),
        },
      },
      missing: firstStage
        ? {
            descriptor: "PASID-based IOTLB invalidation (type 6)",
            fields: {
              G: "page",
              DID: t.did,
              PASID: tagPasid ?? 0,
              ADDR: hex(t.vpn * PAGE),
              AM: am,
            },
          }
        : {
            descriptor: "IOTLB invalidation (type 2)",
            fields: { G: "page", DID: t.did, ADDR: hex(t.vpn * PAGE), AM: am },
          },
    };
  }
  if (ins.psc.length > 0) {
    // The walk resumes below the deepest cached entry (lookupDeepest): that one answered.
    const p = ins.psc.reduce((a, b) => (b.level < a.level ? b : a));
    const firstStage = p.kind === VTD_KIND_FIRST_STAGE || p.kind === VTD_KIND_NESTED;
    const am = 9 * (p.level - 1);
    const base = p.tag * 512 ** (p.level - 1);
    return {
      entry: {
        cache: "paging-structure-cache",
        where: hw.name,
        fields: {
          DID: p.did,
          PASID: p.pasid === VTD_PASID_NONE ? null : p.pasid,
          level: p.level,
          table: hex(p.tableFrame * PAGE),
          iova: hex(base * PAGE),
          size: 2 ** (am + 12),
          kind: kindName(p.kind),
        },
      },
      missing: firstStage
        ? {
            descriptor: "PASID-based IOTLB invalidation (type 6)",
            fields: {
              G: "page",
              DID: p.did,
              PASID: p.pasid,
              ADDR: hex(base * PAGE),
              AM: am,
              IH: 0,
            },
          }
        : {
            descriptor: "IOTLB invalidation (type 2)",
            fields: { G: "page", DID: p.did, ADDR: hex(base * PAGE), AM: am, IH: 0 },
          },
    };
  }
  return {
    entry: { cache: "unknown", where: hw.name, fields: { SID: hex(sid) } },
    missing: { descriptor: "unknown", fields: {} },
  };
}

/** r/w/x of a permission mask. */
export function permText(perm: number): string {
  return `${perm & 1 ? "r" : "-"}${perm & 2 ? "w" : "-"}${perm & 4 ? "x" : "-"}`;
}

/** The name of a VT-d translation kind (VTD_KIND_*). */
export function kindName(kind: number): string {
  return ["?", "first-stage", "second-stage", "nested", "pass-through"][kind] ?? String(kind);
}

function sameDevConfig(a: VtdDevConfig, b: VtdDevConfig): boolean {
  return (
    a.status === b.status &&
    a.did === b.did &&
    a.tt === b.tt &&
    a.slptptr === b.slptptr &&
    a.levels === b.levels &&
    a.pasidDirPtr === b.pasidDirPtr &&
    a.paside === b.paside &&
    a.dte === b.dte &&
    a.ridPasid === b.ridPasid
  );
}

function samePasidConfig(a: VtdPasidConfig, b: VtdPasidConfig): boolean {
  return (
    a.status === b.status &&
    a.pgtt === b.pgtt &&
    a.did === b.did &&
    a.slptptr === b.slptptr &&
    a.flptr === b.flptr &&
    a.fsLevels === b.fsLevels &&
    a.ssLevels === b.ssLevels
  );
}
