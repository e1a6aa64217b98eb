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
import {
  DMA_EXEC,
  DMA_READ,
  DMA_WRITE,
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
import { bug, type PhysMemory, toHex } from "@iommu-sim/iommu-core/platform";
import { lookupVtdTranslation, VTD_PERMISSIVE_CAPS, vtdFaultName } from "./vtd-decode.js";

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

const MAX_U64 = (1n << 64n) - 1n;
const PASID_MAX = 0xfffff;

/**
 * A source ID written as a PCI address `BB:DD.F` (hex bus and device, function 0-7), or as a
 * number (decimal or 0x hex, at most 0xffff). Returns the SID or what is wrong.
 */
export function parseSid(text: string): number | string {
  const bdf = /^([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$/.exec(text);
  if (bdf !== null) {
    const dev = Number.parseInt(bdf[2] as string, 16);
    if (dev > 0x1f) return `device ${toHex(dev)} in ${text} is above 0x1f`;
    return (Number.parseInt(bdf[1] as string, 16) << 8) | (dev << 3) | Number(bdf[3]);
  }
  const n = parseUnsigned(text);
  if (n === null || n > 0xffffn) {
    return `expected a source ID: BB:DD.F, or a number up to 0xffff, got ${JSON.stringify(text)}`;
  }
  return Number(n);
}

/** A PASID (decimal or 0x hex, at most 2^20 - 1), or what is wrong. */
export function parsePasid(text: string): number | string {
  const n = parseUnsigned(text);
  if (n === null || n > BigInt(PASID_MAX)) {
    return `expected a PASID: a number up to 0xfffff, got ${JSON.stringify(text)}`;
  }
  return Number(n);
}

/** An unsigned integer in decimal or with a 0x prefix in hex, at most 2^64 - 1; null otherwise. */
export function parseUnsigned(text: string): bigint | null {
  if (!/^(?:[0-9]+|0[xX][0-9a-fA-F]+)$/.test(text)) return null;
  const v = BigInt(text);
  return v <= MAX_U64 ? v : null;
}

/**
 * Parse `SID[:PASID]@IOVA`: SID as `parseSid` takes it (a BDF's own colon is told apart by its
 * dot), PASID as `parsePasid`, IOVA decimal or 0x hex up to 2^64 - 1. Returns the query or a
 * message naming the part that is wrong.
 */
export function parseVtdQuery(text: string): VtdQuery | string {
  const at = text.indexOf("@");
  if (at < 0 || at !== text.lastIndexOf("@")) return "expected SID[:PASID]@IOVA";
  const who = text.slice(0, at);
  const iovaText = text.slice(at + 1);
  let sidText = who;
  let pasidText: string | undefined;
  // A BDF holds one colon before its dot; a PASID follows the last colon after the SID.
  const bdfWithPasid = /^([0-9a-fA-F]{1,2}:[0-9a-fA-F]{1,2}\.[0-7]):(.*)$/.exec(who);
  if (bdfWithPasid !== null) {
    sidText = bdfWithPasid[1] as string;
    pasidText = bdfWithPasid[2] as string;
  } else if (!who.includes(".") && who.includes(":")) {
    const colon = who.indexOf(":");
    sidText = who.slice(0, colon);
    pasidText = who.slice(colon + 1);
  }
  const sid = parseSid(sidText);
  if (typeof sid === "string") return sid;
  let pasid: number | null = null;
  if (pasidText !== undefined) {
    const p = parsePasid(pasidText);
    if (typeof p === "string") return p;
    pasid = p;
  }
  const iova = parseUnsigned(iovaText);
  if (iova === null) {
    return `expected an IOVA: a number up to 2^64 - 1, decimal or 0x hex, got ${JSON.stringify(iovaText)}`;
  }
  return { sid, pasid, iova };
}

/** Options of `VtdTranslator`. */
export interface VtdTranslatorOptions {
  /** The RTADDR register value: root table address and TTM. */
  readonly rtaddr: bigint;
  /** CAP and ECAP register values; each missing one is `VTD_PERMISSIVE_CAPS`'s. */
  readonly cap?: bigint;
  readonly ecap?: bigint;
  /** The access every query makes: a read unless `write`; `exec` adds an instruction fetch. */
  readonly write?: boolean;
  readonly exec?: boolean;
  /** Supervisor (privileged) requests. */
  readonly priv?: boolean;
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
  private readonly access: number;
  private readonly priv: boolean;
  /** Whether (sid, pasid) is pass-through, from the entries: "sid" or "sid:pasid" keys. */
  private readonly passThrough = new Map<string, boolean>();
  private readonly req = newTranslationRequest();
  private readonly out = newTranslationResult();

  private constructor(mem: PhysMemory, caps: VtdCapabilities, options: VtdTranslatorOptions) {
    this.mem = mem;
    this.caps = caps;
    this.rtaddr = BigInt.asUintN(64, options.rtaddr);
    this.access = (options.write ? DMA_WRITE : DMA_READ) | (options.exec ? DMA_EXEC : 0);
    this.priv = options.priv ?? false;
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
    const req = this.req;
    const out = this.out;
    req.rid = q.sid;
    req.sid = q.sid;
    req.pasid = q.pasid ?? NO_PASID;
    // Page number and offset keep an IOVA above 2^53 exact (the page number is below 2^52).
    req.iovaPfn = Number(q.iova >> 12n);
    req.offset = Number(q.iova & 0xfffn);
    req.access = this.access;
    req.privileged = this.priv;
    req.at = 0;
    this.unit.translateUncached(req, out);
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
      pageSize: 2 ** out.sizeShift,
      r: (out.perm & DMA_READ) !== 0,
      w: (out.perm & DMA_WRITE) !== 0,
      passThrough,
    };
  }

  /** Whether the entries select pass-through (TT 2 / PGTT 4) for (sid, pasid). */
  private isPassThrough(sid: number, pasid: number | null): boolean {
    const key = pasid === null ? `${sid}` : `${sid}:${pasid}`;
    let known = this.passThrough.get(key);
    if (known === undefined) {
      const t = lookupVtdTranslation(this.mem, {
        rtaddr: this.rtaddr,
        sid,
        pasid,
        caps: this.caps,
      });
      known = t?.type === "pass-through";
      this.passThrough.set(key, known);
    }
    return known;
  }
}

/** Poll GSTS until `bit` is set, as the kernel's IOMMU_WAIT_OP does (the model completes at once). */
function waitFor(unit: VtdUnit, bit: number): void {
  for (let tries = 0; tries < 1000; tries++) {
    if ((unit.read32(VTD_REG.GSTS) & bit) !== 0) return;
  }
  bug(`VT-d unit never set GSTS bit ${toHex(bit)}`);
}
