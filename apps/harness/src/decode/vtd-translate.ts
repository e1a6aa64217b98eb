// Translating requests against a memory image with the VT-d hardware model itself: a unit with
// minimal caches, brought up through its registers on the image's tables as a driver would, and
// asked for a side-effect-free walk per query.

import { GCMD_SRTP, GCMD_TE, GSTS_RTPS, GSTS_TES, VTD_REG } from "@iommu-sim/intel-vtd/format";
import {
  decodeVtdCaps,
  type VtdCapabilities,
  VtdUnit,
  validateVtdCaps,
  vtdCapValue,
  vtdEcapValue,
  vtdVerValue,
} from "@iommu-sim/intel-vtd/hw";
import { XLATE_OK } from "@iommu-sim/iommu-core";
import { type PhysMemory, toHex } from "@iommu-sim/iommu-core/platform";
import {
  parseBdf,
  parseBounded,
  parseIdQuery,
  perQuery,
  pollUntil,
  type QueryAccessOptions,
  QueryRunner,
  translationGrant,
} from "./decode-common.js";
import { lookupVtdTranslation, VTD_PERMISSIVE_CAPS, vtdFaultName } from "./vtd-decode.js";

// Moved to decode-common.ts; still exported here, where the CLI and users found it.
export { parseUnsigned } from "./decode-common.js";

/** One request to translate: `SID[:PASID]@IOVA`. */
export interface VtdQuery {
  /** Source ID (bus << 8 | devfn). */
  readonly sid: number;
  /** PASID, or null for a request without one. */
  readonly pasid: number | null;
  /** Input address, any 64-bit value. */
  readonly iova: bigint;
}

/** What a query answers: a translation or the fault the unit reports. */
export type VtdTranslateResult =
  | {
      readonly sid: number;
      readonly pasid: number | null;
      readonly iova: string;
      readonly result: "ok";
      readonly pa: string;
      readonly pageSize: number;
      readonly r: boolean;
      readonly w: boolean;
      readonly passThrough: boolean;
    }
  | {
      readonly sid: number;
      readonly pasid: number | null;
      readonly iova: string;
      readonly result: "fault";
      readonly faultReason: number;
      readonly faultName: string;
    };

const PASID_MAX = 0xfffff;

/**
 * A source ID written as a PCI address `BB:DD.F` (hex bus and device, function 0-7), or as a
 * number (decimal or 0x hex, at most 0xffff). Returns the SID or what is wrong.
 */
export function parseSid(text: string): number | string {
  return (
    parseBdf(text) ?? parseBounded(text, 0xffffn, "a source ID: BB:DD.F, or a number up to 0xffff")
  );
}

/** A PASID (decimal or 0x hex, at most 2^20 - 1), or what is wrong. */
export function parsePasid(text: string): number | string {
  return parseBounded(text, BigInt(PASID_MAX), "a PASID: a number up to 0xfffff");
}

/**
 * Parse `SID[:PASID]@IOVA`: SID as `parseSid` takes it (a BDF's own colon is told apart by its
 * dot), PASID as `parsePasid`, IOVA decimal or 0x hex up to 2^64 - 1. Returns the query or a
 * message naming the part that is wrong.
 */
export function parseVtdQuery(text: string): VtdQuery | string {
  const q = parseIdQuery(text, "expected SID[:PASID]@IOVA", parseSid, parsePasid);
  return typeof q === "string" ? q : { sid: q.sid, pasid: q.sub, iova: q.iova };
}

/** Options of `VtdTranslator` (and the access of every query: `write`, `exec`, `priv`). */
export interface VtdTranslatorOptions extends QueryAccessOptions {
  /** The RTADDR register value: root table address and TTM. */
  readonly rtaddr: bigint;
  /** CAP and ECAP register values; each missing one is `VTD_PERMISSIVE_CAPS`'s. */
  readonly cap?: bigint;
  readonly ecap?: bigint;
}

const halves = (v: bigint): [number, number] => [
  Number(v & 0xffffffffn),
  Number((v >> 32n) & 0xffffffffn),
];

const join64 = ([lo, hi]: readonly [number, number]): bigint =>
  (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);

/**
 * The capabilities CAP and ECAP describe (a missing register takes the permissive unit's value),
 * or why they cannot describe a unit.
 */
export function vtdCapsFromRegisters(cap?: bigint, ecap?: bigint): VtdCapabilities | string {
  const capValue = cap === undefined ? vtdCapValue(VTD_PERMISSIVE_CAPS) : halves(cap);
  const ecapValue = ecap === undefined ? vtdEcapValue(VTD_PERMISSIVE_CAPS) : halves(ecap);
  const caps = decodeVtdCaps(vtdVerValue(VTD_PERMISSIVE_CAPS), capValue, ecapValue);
  const problem = validateVtdCaps(caps);
  if (problem !== null) {
    return `CAP ${toHex(join64(capValue), 16)} / ECAP ${toHex(join64(ecapValue), 16)} describe no unit: ${problem}`;
  }
  return caps;
}

/**
 * A VT-d unit on an image's tables, answering `SID[:PASID]@IOVA` queries. The unit has minimal
 * caches and a 52-bit host address width, and is brought up only through its registers, as a
 * driver does: RTADDR (low then high half), GCMD.SRTP and a wait for GSTS.RTPS, then GCMD.TE and
 * a wait for GSTS.TES. Each query is one untranslated request through `translateUncached`, so no
 * Accessed/Dirty flag is set and no fault recorded.
 *
 * @spec Intel VT-d Architecture Specification 10.4.4-10.4.6 (GCMD, GSTS, RTADDR)
 * @kernel drivers/iommu/intel/iommu.c iommu_set_root_entry
 */
export class VtdTranslator {
  readonly unit: VtdUnit;
  readonly caps: VtdCapabilities;
  private readonly mem: PhysMemory;
  private readonly rtaddr: bigint;
  private readonly queries: QueryRunner;
  /** Whether (sid, pasid) is pass-through, from the entries: "sid" or "sid:pasid" keys. */
  private readonly passThrough = new Map<string, boolean>();

  private constructor(mem: PhysMemory, caps: VtdCapabilities, options: VtdTranslatorOptions) {
    this.mem = mem;
    this.caps = caps;
    this.rtaddr = BigInt.asUintN(64, options.rtaddr);
    this.queries = new QueryRunner(options);
    this.unit = new VtdUnit({ mem, caps, cache: { policy: "minimal" }, haw: 52 });
    const [lo, hi] = halves(this.rtaddr);
    const unit = this.unit;
    unit.write32(VTD_REG.RTADDR, lo);
    unit.write32(VTD_REG.RTADDR + 4, hi);
    unit.write32(VTD_REG.GCMD, GCMD_SRTP);
    waitFor(unit, GSTS_RTPS);
    unit.write32(VTD_REG.GCMD, GCMD_TE);
    waitFor(unit, GSTS_TES);
  }

  /** A translator on `mem`, or why the capability registers describe no unit. */
  static create(mem: PhysMemory, options: VtdTranslatorOptions): VtdTranslator | string {
    const caps = vtdCapsFromRegisters(options.cap, options.ecap);
    if (typeof caps === "string") return caps;
    return new VtdTranslator(mem, caps, options);
  }

  /** Run one query through the unit. */
  translate(q: VtdQuery): VtdTranslateResult {
    const out = this.queries.run(this.unit, q.sid, q.sid, q.pasid, q.iova);
    const head = { sid: q.sid, pasid: q.pasid, iova: toHex(q.iova) };
    if (out.status !== XLATE_OK) {
      return {
        ...head,
        result: "fault",
        faultReason: out.code,
        faultName: vtdFaultName(out.code),
      };
    }
    const passThrough = this.isPassThrough(q.sid, q.pasid);
    return {
      ...head,
      result: "ok",
      // Pass-through output equals the input, which may be above 2^53 where `out.pa` rounds.
      pa: passThrough ? toHex(q.iova) : toHex(out.pa),
      ...translationGrant(out),
      passThrough,
    };
  }

  /** Whether the entries select pass-through (TT 2 / PGTT 4) for (sid, pasid). */
  private isPassThrough(sid: number, pasid: number | null): boolean {
    return perQuery(this.passThrough, sid, pasid, () => {
      const t = lookupVtdTranslation(this.mem, {
        rtaddr: this.rtaddr,
        sid,
        pasid,
        caps: this.caps,
      });
      return t?.type === "pass-through";
    });
  }
}

/** Poll GSTS until `bit` is set, as the kernel's IOMMU_WAIT_OP does (the model completes at once). */
function waitFor(unit: VtdUnit, bit: number): void {
  pollUntil(
    () => (unit.read32(VTD_REG.GSTS) & bit) !== 0,
    `VT-d unit never set GSTS bit ${toHex(bit)}`,
  );
}
