// Invalidation descriptor layouts and the device-TLB range encoding, checked against the kernel's
// descriptor builders and a slow bit-by-bit reference.

import { fc } from "@fast-check/vitest";
import {
  decode,
  encode,
  hasReservedBits,
  type Layout,
  ModelBug,
} from "@iommu-sim/iommu-core/platform";
import {
  checkLayoutReservedBits as checkReservedBits,
  checkLayoutRoundTrip as checkRoundTrip,
  qwordsOf as qwords,
} from "@iommu-sim/iommu-core/testing/layout";
import { describe, expect, it } from "vitest";
import {
  CC_G_DEVICE,
  CC_INV_DESC,
  DEV_TLB_INV_DESC,
  DEVTLB_ORDER_ALL,
  decodeDevTlbRange,
  encodeDevTlbRange,
  IEC_INV_DESC,
  INV_DESC_SIZE,
  INV_DESC_TYPE,
  INV_WAIT_DESC,
  IOTLB_G_DOMAIN,
  IOTLB_G_PAGE,
  IOTLB_INV_DESC,
  invDescLayout,
  invDescType,
  PC_G_PASID,
  PC_INV_DESC,
  PDEV_TLB_INV_DESC,
  PGRP_RESP_DESC,
  PGRP_RESP_INVALID,
  PIOTLB_G_PASID,
  PIOTLB_INV_DESC,
} from "./inv-desc.js";

const ONES = 0xffffffffffffffffn;
const PAGE_MASK = ONES ^ 0xfffn;

const ALL: [Layout, number][] = [
  [CC_INV_DESC, 1],
  [IOTLB_INV_DESC, 2],
  [DEV_TLB_INV_DESC, 3],
  [IEC_INV_DESC, 4],
  [INV_WAIT_DESC, 5],
  [PIOTLB_INV_DESC, 6],
  [PC_INV_DESC, 7],
  [PDEV_TLB_INV_DESC, 8],
  [PGRP_RESP_DESC, 9],
];

describe("invalidation descriptor layouts", () => {
  it("round-trip every field of every type, also at an offset", () => {
    for (const [layout, type] of ALL) checkRoundTrip(layout, 400 + type);
  });
  it("flag every uncovered bit as reserved", () => {
    for (const [layout] of ALL) checkReservedBits(layout);
  });
  it("are 128 bits each", () => {
    for (const [layout] of ALL) expect(layout.bits / 8).toBe(INV_DESC_SIZE);
  });
  it("reserve QEMU's reserved bits, less Type[6:4], PFSID and the fields the kernel writes", () => {
    const expected: [Layout, bigint[]][] = [
      [CC_INV_DESC, [0xfffc00000000f1c0n, ONES]],
      [IOTLB_INV_DESC, [0xffffffff0000f100n, 0xf80n]],
      [DEV_TLB_INV_DESC, [0x000f0000ffe001f0n, 0xffen]],
      [IEC_INV_DESC, [0xffff000007fff1e0n, ONES]],
      [INV_WAIT_DESC, [0x00000000fffff100n, 0x3n]],
      [PIOTLB_INV_DESC, [0xfff000000000f1c0n, 0xf80n]],
      [PC_INV_DESC, [0xfff000000000f1c0n, ONES]],
      [PDEV_TLB_INV_DESC, [0n, 0x7fen]],
      [PGRP_RESP_DESC, [0xfff00000000001c0n, 0xfffffffffffff003n]],
    ];
    for (const [layout, qw] of expected)
      expect([layout.name, qwords(layout.reserved)]).toEqual([layout.name, qw]);
  });
  it("map each defined type to its layout and everything else to null", () => {
    for (const [layout, type] of ALL) {
      expect(invDescLayout(type)).toBe(layout);
      expect(decode(layout, encode(layout, { Type: type })).Type).toBe(type);
      expect(layout.field.Type?.values?.[type]).toBeDefined();
    }
    for (const type of [0, INV_DESC_TYPE.PSTRM_RESP, 0xb, 0xf, 0x10, 0x19, 0x7f, 0x80, -1, 1.5])
      expect(invDescLayout(type)).toBeNull();
  });
  it("read the 7-bit type from Type[3:0] and Type[6:4] in bits 11:9", () => {
    expect(invDescType(0x00050032)).toBe(2);
    expect(invDescType(0x202)).toBe(0x12);
    expect(invDescType(0xe0f)).toBe(0x7f);
    expect(invDescLayout(invDescType(0x202))).toBeNull();
    const w = encode(PIOTLB_INV_DESC, { Type: 6, TypeHi: 1 });
    expect(hasReservedBits(PIOTLB_INV_DESC, w)).toBe(false);
    expect(invDescType(w[0] as number)).toBe(0x16);
  });
});

describe("descriptors as the kernel builds them", () => {
  it("type 2 page-selective: DID 5, addr 0x12345000, AM 3, IH 1 (qi_desc_iotlb)", () => {
    const w = encode(IOTLB_INV_DESC, {
      Type: 2,
      G: IOTLB_G_PAGE,
      DID: 5,
      ADDR: 0x12345000,
      AM: 3,
      IH: 1,
    });
    expect(qwords(w)).toEqual([0x50032n, 0x12345043n]);
    const drained = encode(IOTLB_INV_DESC, { ...decode(IOTLB_INV_DESC, w), DW: 1, DR: 1 });
    expect(qwords(drained)).toEqual([0x500f2n, 0x12345043n]);
  });
  it("type 2 domain-selective leaves qw1 zero", () => {
    const w = encode(IOTLB_INV_DESC, { Type: 2, G: IOTLB_G_DOMAIN, DID: 5 });
    expect(qwords(w)).toEqual([0x50022n, 0n]);
  });
  it("type 1 device-selective for 03:02.0 (qi_flush_context)", () => {
    const w = encode(CC_INV_DESC, { Type: 1, G: CC_G_DEVICE, DID: 0, SID: 0x0310, FM: 0 });
    expect(qwords(w)).toEqual([0x0000031000000031n, 0n]);
  });
  it("type 7 PASID-selective (pasid_cache_invalidation_with_pasid)", () => {
    const w = encode(PC_INV_DESC, { Type: 7, G: PC_G_PASID, DID: 5, PASID: 0x1234 });
    expect(qwords(w)).toEqual([0x0000123400050017n, 0n]);
  });
  it("type 6 PASID-selective (qi_desc_piotlb_all)", () => {
    const w = encode(PIOTLB_INV_DESC, { Type: 6, G: PIOTLB_G_PASID, DID: 5, PASID: 7 });
    expect(qwords(w)).toEqual([0x0000000700050026n, 0n]);
  });
  it("decodes type 5 status data at or above 2^31 as unsigned", () => {
    const w = encode(INV_WAIT_DESC, { Type: 5, SW: 1, SDATA: 0x80000002 });
    expect(decode(INV_WAIT_DESC, w).SDATA).toBe(0x80000002);
  });
  it("type 5 wait with status write of QI_DONE (qi_submit_sync)", () => {
    const w = encode(INV_WAIT_DESC, { Type: 5, SW: 1, SDATA: 2, SADDR: 0x10000040 });
    expect(qwords(w)).toEqual([0x0000000200000025n, 0x10000040n]);
    const drain = encode(INV_WAIT_DESC, { Type: 5, SW: 1, PD: 1, FN: 1, IF: 1, SDATA: 2 });
    expect(qwords(drain)[0]).toBe(0x00000002000000f5n);
  });
  it("type 3 whole range for 03:02.0 with its own PFSID (qi_desc_dev_iotlb, MAX_AGAW_PFN_WIDTH)", () => {
    const r = encodeDevTlbRange(0, DEVTLB_ORDER_ALL);
    const w = encode(DEV_TLB_INV_DESC, {
      Type: 3,
      SID: 0x0310,
      PFSIDLo: 0x0310 & 0xf,
      PFSIDHi: 0x0310 >> 4,
      MIP: 0,
      S: r.s,
      ADDR: BigInt(r.addrPfn) << 12n,
    });
    expect(qwords(w)).toEqual([0x0310031000000003n, 0x7ffffffffffff001n]);
    expect(qwords(w)[1]).toBe(kernelDevTlbQw1(0n, 52));
  });
  it("type 8 whole range: ADDR 0x7FFFFFFF_FFFFF000 with S (qi_desc_dev_iotlb_pasid)", () => {
    const r = encodeDevTlbRange(0, DEVTLB_ORDER_ALL);
    const w = encode(PDEV_TLB_INV_DESC, {
      Type: 8,
      SID: 0x0310,
      PASID: 5,
      PFSIDLo: 0,
      PFSIDHi: 0x31,
      S: r.s,
      ADDR: BigInt(r.addrPfn) << 12n,
    });
    expect(qwords(w)).toEqual([0x0310000503100008n, 0x7ffffffffffff800n]);
    expect(qwords(w)[1]).toBe(kernelPasidDevTlbQw1(0n, 52));
  });
  it("type 9 response to a bad request, with LPIG accepted as ignored (handle_bad_prq_event)", () => {
    const w = encode(PGRP_RESP_DESC, {
      Type: 9,
      PP: 1,
      RC: PGRP_RESP_INVALID,
      RID: 0x0310,
      PASID: 3,
      PRGI: 0x1ff,
      LPIG: 1,
    });
    expect(qwords(w)).toEqual([0x0000000303101019n, 0xffcn]);
    expect(hasReservedBits(PGRP_RESP_DESC, w)).toBe(false);
  });
});

// ----- device-TLB range encoding -----

/** qw1 of a type-3 descriptor as qi_desc_dev_iotlb builds it: ones ORed below bit 12 + m - 1. */
function kernelDevTlbQw1(addr: bigint, m: number): bigint {
  if (m === 0) return addr & PAGE_MASK;
  const a = addr | ((1n << BigInt(12 + m - 1)) - 1n);
  return (a & PAGE_MASK) | 1n;
}

/** qw1 of a type-8 descriptor as qi_desc_dev_iotlb_pasid builds it: ones 12..11+m, bit 11+m cleared, S = bit 11. */
function kernelPasidDevTlbQw1(addr: bigint, m: number): bigint {
  let q = addr & PAGE_MASK;
  if (m) {
    q |= ((1n << BigInt(m)) - 1n) << 12n;
    q &= ONES ^ (1n << BigInt(12 + m - 1));
    q |= 1n << 11n;
  }
  return q;
}

/** Slow decode: count the one bits from bit 12 up, one at a time. */
function refDecode(qw1: bigint, s: number): { pfn: number; pages: number } {
  const addr = (qw1 >> 12n) & ((1n << 52n) - 1n);
  if (!s) return { pfn: Number(addr), pages: 1 };
  let k = 0;
  while (k < 52 && (addr >> BigInt(k)) & 1n) k++;
  let pages = 1n << BigInt(k + 1);
  if (pages > 1n << 52n) pages = 1n << 52n;
  return { pfn: Number(addr & ~(pages - 1n)), pages: Number(pages) };
}

/** The two 32-bit halves of a 64-bit qw1. */
function halves(q: bigint): [number, number] {
  return [Number(q & 0xffffffffn), Number(q >> 32n)];
}

function alignedDown(pfn: number, order: number): number {
  return pfn - (pfn % 2 ** order);
}

function checkEncoding(pfn: number, order: number): void {
  const e = encodeDevTlbRange(pfn, order);
  const base = BigInt(alignedDown(pfn, order)) << 12n;
  const ours = BigInt(e.addrPfn) << 12n;
  expect(ours | BigInt(e.s)).toBe(kernelDevTlbQw1(base, order));
  expect(ours | (e.s ? 1n << 11n : 0n)).toBe(kernelPasidDevTlbQw1(base, order));
  const [lo, hi] = halves(ours);
  expect(decodeDevTlbRange(lo, hi, e.s)).toEqual({
    pfn: alignedDown(pfn, order),
    pages: 2 ** order,
  });
}

describe("encodeDevTlbRange", () => {
  it("matches both kernel builders for every pfn below 2^12 and order 0..13", () => {
    for (let order = 0; order <= 13; order++)
      for (let pfn = 0; pfn < 4096; pfn++) checkEncoding(pfn, order);
  });
  it("matches both kernel builders for any pfn below 2^52 and any order", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 52 - 1 }),
        fc.integer({ min: 0, max: 52 }),
        checkEncoding,
      ),
      { seed: 4242, numRuns: 2000 },
    );
  });
  it("encodes the whole space as ADDR 0x7FFFFFFF_FFFFF000 with S, from any pfn", () => {
    for (const pfn of [0, 1, 2 ** 51, 2 ** 52 - 1])
      expect(encodeDevTlbRange(pfn, 52)).toEqual({ addrPfn: 2 ** 51 - 1, s: 1 });
  });
  it("writes into the object it is given", () => {
    const out = { addrPfn: -1, s: -1 };
    expect(encodeDevTlbRange(0x100, 2, out)).toBe(out);
    expect(out).toEqual({ addrPfn: 0x101, s: 1 });
  });
  it("treats an order or pfn out of range as a model bug", () => {
    for (const [pfn, order] of [
      [0, 53],
      [0, -1],
      [0, 1.5],
      [-1, 0],
      [2 ** 52, 0],
      [0.5, 0],
    ] as const)
      expect(() => encodeDevTlbRange(pfn, order)).toThrow(ModelBug);
  });
});

describe("decodeDevTlbRange", () => {
  it("matches the bit-by-bit reference for every ADDR below 2^14, with and without S", () => {
    for (let raw = 0; raw < 1 << 14; raw++)
      for (const s of [0, 1]) {
        const q = BigInt(raw) << 12n;
        const [lo, hi] = halves(q);
        expect(decodeDevTlbRange(lo, hi, s)).toEqual(refDecode(q, s));
      }
  });
  it("matches the reference for ADDRs with high bits set", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: ONES }), fc.integer({ min: 0, max: 1 }), (q, s) => {
        const [lo, hi] = halves(q);
        expect(decodeDevTlbRange(lo, hi, s)).toEqual(refDecode(q, s));
      }),
      { seed: 4343, numRuns: 2000 },
    );
    for (let x = 0; x < 4096; x++) {
      const q = ((ONES >> 12n) - BigInt(x)) << 12n;
      const [lo, hi] = halves(q);
      expect(decodeDevTlbRange(lo, hi, 1)).toEqual(refDecode(q, 1));
    }
  });
  it("decodes the kernel's whole-space encodings of types 3 and 8 as all 2^52 pages", () => {
    for (const q of [0x7ffffffffffff001n, 0x7ffffffffffff800n]) {
      const [lo, hi] = halves(q);
      expect(decodeDevTlbRange(lo, hi, 1)).toEqual({ pfn: 0, pages: 2 ** 52 });
    }
  });
  it("clamps the all-ones ADDR (2^53 pages by the bit rule) to the whole space", () => {
    expect(decodeDevTlbRange(0xfffff000, 0xffffffff, 1)).toEqual({ pfn: 0, pages: 2 ** 52 });
  });
  it("ignores bits 11:0, where the S bits of both descriptor types live", () => {
    expect(decodeDevTlbRange(0x3000 | 0x801, 0, 1)).toEqual({ pfn: 0, pages: 8 });
    expect(decodeDevTlbRange(0x3000 | 0xfff, 0, 0)).toEqual({ pfn: 3, pages: 1 });
  });
  it("reads a single page at any pfn below 2^52 when S is clear", () => {
    expect(decodeDevTlbRange(0xfffff000, 0xffffffff, 0)).toEqual({ pfn: 2 ** 52 - 1, pages: 1 });
  });
  it("writes into the object it is given", () => {
    const out = { pfn: -1, pages: -1 };
    expect(decodeDevTlbRange(0x1000, 0, 0, out)).toBe(out);
    expect(out).toEqual({ pfn: 1, pages: 1 });
  });
});
