// Fuzzing the VT-d unit's guest-facing interfaces: random register writes, translations and page
// requests over tables of random bytes, and random invalidation-queue contents. The unit never
// throws; every answer is a translation or a fault with a reason; with nothing cached, translate
// agrees with a fresh walk; a queue either drains or stops with IQE/ITE.

import { fc, test } from "@fast-check/vitest";
import {
  NO_PASID,
  newTranslationRequest,
  newTranslationResult,
  type TranslationRequest,
  XLATE_FAULT,
  XLATE_OK,
} from "@iommu-sim/iommu-core";
import { encode, Prng } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { VTD_FR } from "../src/format/fault-record.js";
import { invDescLayout } from "../src/format/inv-desc.js";
import {
  FSTS_IQE,
  FSTS_ITE,
  GCMD_QIE,
  GCMD_SRTP,
  GCMD_TE,
  VTD_REG,
} from "../src/format/registers.js";
import { LEGACY_VTD_CAPS } from "../src/hw/vtd-caps.js";
import type { VtdUnit } from "../src/hw/vtd-unit.js";
import { RecordingPort, vtdTestMachine } from "./table-builder.js";

/** Frames of random table contents. */
const REGION_FRAMES = 24;
const RIDS = [0x10, 0x11, 0x90, 0x100, 0xff];

/**
 * Fill the region with random tables: frame 0 a root table, 1-3 context tables, 4-5 PASID
 * directories, 6-8 PASID tables, the rest page tables. Each entry is random within its role
 * (present or not, flags, AW, PGTT, DID, large pages, leaves anywhere in memory) and points at a
 * random frame of the next role, so walks reach every level; some qwords are noise (zero,
 * random, or a stray high bit) to hit the reserved-bit and not-present paths everywhere.
 */
function fillRandom(mem: VtdUnit["mem"], frames: number[], rng: Prng): void {
  const pick = (from: number, to: number) => frames[from + rng.below(to - from)] as number;
  const ctx = () => pick(1, 4);
  const dir = () => pick(4, 6);
  const ptbl = () => pick(6, 9);
  const pt = () => pick(9, frames.length);
  const small = (n: number) => rng.below(n);
  const put = (at: number, lo: number, hi = 0) => {
    const noise = rng.below(40);
    if (noise === 0) mem.write64(at, 0, 0);
    else if (noise === 1) mem.write64(at, rng.nextU32(), rng.nextU32());
    else if (noise === 2) mem.write64(at, lo >>> 0, (hi | (1 << small(32))) >>> 0);
    else if (noise === 3) mem.write64(at, (lo | (1 << small(12))) >>> 0, hi >>> 0);
    else mem.write64(at, lo >>> 0, hi >>> 0);
  };
  const root = frames[0] as number;
  for (let i = 0; i < 256; i++) {
    put(root + i * 16, ctx() | 1);
    put(root + i * 16 + 8, rng.chance(0.7) ? 0 : ctx() | 1);
  }
  for (let f = 1; f < 4; f++) {
    const base = frames[f] as number;
    for (let at = base; at < base + 4096; at += 32) {
      // Frame 3 holds legacy entries, frames 1-2 scalable ones (a root may point anywhere).
      if (f === 3) {
        for (const e of [at, at + 16]) {
          put(e, pt() | 1 | (small(8) === 0 ? 2 : 0) | ((small(6) === 0 ? small(4) : 0) << 2));
          put(e + 8, (small(4) === 0 ? small(8) : 2) | (small(8) << 8));
        }
      } else {
        put(
          at,
          dir() |
            1 |
            (small(2) << 2) |
            (small(4) === 0 ? 0 : 8) |
            (small(2) << 4) |
            ((small(4) === 0 ? small(3) : 0) << 9),
        );
        put(at + 8, small(8) === 0 ? small(4) : 0);
        put(at + 16, 0);
        put(at + 24, 0);
      }
    }
  }
  for (let f = 4; f < 6; f++) {
    const base = frames[f] as number;
    for (let at = base; at < base + 4096; at += 8) put(at, ptbl() | 1 | (small(16) === 0 ? 2 : 0));
  }
  for (let f = 6; f < 9; f++) {
    const base = frames[f] as number;
    for (let at = base; at < base + 4096; at += 64) {
      const aw = small(4) === 0 ? small(4) : 2;
      const pgtt = small(8) === 0 ? small(8) : 1 + small(4);
      put(
        at,
        pt() |
          1 |
          (aw << 2) |
          (pgtt << 6) |
          (small(4) === 0 ? 0x200 : 0) |
          (small(8) === 0 ? 0x20 : 0),
      );
      put(at + 8, small(8));
      put(
        at + 16,
        pt() |
          small(2) |
          (small(2) << 1) |
          ((small(4) === 0 ? 1 : 0) << 2) |
          (small(2) << 4) |
          (small(2) << 6),
      );
      for (let q = 3; q < 8; q++) put(at + q * 8, 0);
    }
  }
  for (let f = 9; f < frames.length; f++) {
    const base = frames[f] as number;
    for (let at = base; at < base + 4096; at += 8) {
      const r = small(8);
      if (r === 0) put(at, 0);
      else if (r < 5) put(at, pt() | 7 | (small(4) === 0 ? 0x60 : 0));
      else {
        // A leaf (or, below level 1, a large page) anywhere in the first 2^40 bytes.
        const frame = rng.nextU32() & 0xfffff000;
        const ps = small(3) === 0 ? 0x80 : 0;
        const aligned = ps ? (frame & ~0x3fff_ffff) >>> 0 : frame;
        put(
          at,
          aligned | (small(8) | 1) | ps | (small(4) << 5),
          small(4) === 0 ? 0x80000000 : small(256),
        );
      }
    }
  }
}

type Op =
  | { k: "reg"; off: number; v: number }
  | {
      k: "xlate";
      rid: number;
      pasid: number;
      vpn: number;
      off: number;
      access: number;
      priv: boolean;
      at: number;
    }
  | {
      k: "prq";
      rid: number;
      pasid: number;
      vpn: number;
      access: number;
      priv: boolean;
      prgi: number;
      last: boolean;
    };

const U32 = fc.nat({ max: 0xffffffff });
const rid = fc.oneof(fc.constantFrom(...RIDS), fc.nat({ max: 0xffff }));
const pasid = fc.oneof(fc.constant(NO_PASID), fc.nat({ max: 70 }), fc.nat({ max: 0xfffff }));
const vpn = fc.oneof(
  fc.nat({ max: 0x1_0000 }),
  fc.nat({ max: 2 ** 36 - 1 }),
  fc.nat({ max: 2 ** 45 - 1 }),
  fc.integer({ min: 2 ** 52 - 2 ** 36, max: 2 ** 52 - 1 }),
);

/** Register writes, biased towards the registers with handshakes. */
function regOp(regionFrame: fc.Arbitrary<number>): fc.Arbitrary<Op> {
  const reg = (off: number, v: fc.Arbitrary<number>) =>
    v.map((x) => ({ k: "reg" as const, off, v: x >>> 0 }));
  return fc.oneof(
    {
      weight: 3,
      arbitrary: fc
        .tuple(fc.nat({ max: 0x3ff }), U32)
        .map(([o, v]) => ({ k: "reg" as const, off: o * 4, v })),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.nat({ max: 0x1003 }), U32)
        .map(([o, v]) => ({ k: "reg" as const, off: o, v })),
    },
    {
      weight: 3,
      arbitrary: reg(
        VTD_REG.GCMD,
        fc
          .tuple(fc.boolean(), fc.boolean(), fc.boolean(), U32)
          .map(
            ([te, srtp, qie, r]) =>
              (te ? GCMD_TE : 0) | (srtp ? GCMD_SRTP : 0) | (qie ? GCMD_QIE : 0) | (r & 0x3bffffff),
          ),
      ),
    },
    {
      weight: 2,
      arbitrary: reg(
        VTD_REG.RTADDR,
        fc
          .tuple(regionFrame, fc.nat({ max: 3 }), fc.nat({ max: 0x3ff }))
          .map(([f, ttm, low]) => f | (ttm << 10) | low),
      ),
    },
    { weight: 1, arbitrary: reg(VTD_REG.RTADDR + 4, fc.oneof(fc.constant(0), U32)) },
    {
      weight: 2,
      arbitrary: reg(
        VTD_REG.IQA,
        fc
          .tuple(regionFrame, fc.boolean(), fc.nat({ max: 7 }))
          .map(([f, dw, qs]) => f | (dw ? 0x800 : 0) | qs),
      ),
    },
    {
      weight: 3,
      arbitrary: reg(
        VTD_REG.IQT,
        fc.oneof(
          fc.nat({ max: 0x40 }).map((i) => i * 16),
          U32,
        ),
      ),
    },
    { weight: 2, arbitrary: reg(VTD_REG.FSTS, U32) },
    { weight: 1, arbitrary: reg(VTD_REG.FECTL, U32) },
    { weight: 1, arbitrary: reg(VTD_REG.IECTL, U32) },
    { weight: 1, arbitrary: reg(VTD_REG.ICS, U32) },
    { weight: 1, arbitrary: reg(VTD_REG.CCMD, U32) },
    { weight: 1, arbitrary: reg(VTD_REG.CCMD + 4, U32) },
    { weight: 1, arbitrary: reg(0xf0, U32) },
    { weight: 1, arbitrary: reg(0xfc, U32) },
    {
      weight: 2,
      arbitrary: reg(
        VTD_REG.PQA,
        fc.tuple(regionFrame, fc.nat({ max: 7 })).map(([f, pqs]) => f | pqs),
      ),
    },
    { weight: 1, arbitrary: reg(VTD_REG.PQH, U32) },
    { weight: 1, arbitrary: reg(VTD_REG.PQT, U32) },
    { weight: 1, arbitrary: reg(VTD_REG.PRS, U32) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.nat({ max: 31 }), U32)
        .map(([i, v]) => ({ k: "reg" as const, off: 0x220 + i * 4, v })),
    },
  );
}

const xlateOp: fc.Arbitrary<Op> = fc
  .record({
    rid,
    pasid,
    vpn,
    off: fc.nat({ max: 0xfff }),
    access: fc.integer({ min: 1, max: 7 }),
    priv: fc.boolean(),
    at: fc.oneof(
      { weight: 4, arbitrary: fc.constant(0) },
      { weight: 1, arbitrary: fc.nat({ max: 2 }) },
    ),
  })
  .map((r) => ({ k: "xlate" as const, ...r }));

const prqOp: fc.Arbitrary<Op> = fc
  .record({
    rid,
    pasid,
    vpn,
    access: fc.integer({ min: 0, max: 7 }),
    priv: fc.boolean(),
    prgi: fc.nat({ max: 511 }),
    last: fc.boolean(),
  })
  .map((r) => ({ k: "prq" as const, ...r }));

interface World {
  unit: VtdUnit;
  frames: number[];
  req: TranslationRequest;
}

function world(
  seed: number,
  legacy: boolean,
  policy: "minimal" | "maximal",
  cachingMode: boolean,
): World {
  const m = vtdTestMachine({
    caps: { ...(legacy ? LEGACY_VTD_CAPS : {}), cachingMode, ers: !legacy, rps: !legacy, nfr: 3 },
    cache:
      policy === "maximal"
        ? { policy, iotlbSets: 4, iotlbWays: 2, contextEntries: 4, pasidEntries: 4, pscEntries: 4 }
        : { policy },
  });
  const frames: number[] = [];
  for (let i = 0; i < REGION_FRAMES; i++) frames.push(m.b.frame());
  fillRandom(m.mem, frames, new Prng(seed));
  m.unit.write32(VTD_REG.RTADDR, ((frames[0] as number) | (legacy ? 0 : 1 << 10)) >>> 0);
  m.unit.write32(VTD_REG.GCMD, (GCMD_TE | GCMD_QIE | GCMD_SRTP) >>> 0);
  m.unit.write32(VTD_REG.PQA, frames[1] as number);
  for (const r of RIDS) m.unit.connect(new RecordingPort(r));
  return { unit: m.unit, frames, req: newTranslationRequest() };
}

const fresh = newTranslationResult();
const cached = newTranslationResult();

/** Outcomes seen by `run`, by fault reason (0: translated), to check the fuzz reaches deep. */
const seen = new Map<number, number>();

function run(w: World, ops: Op[], compare: boolean): void {
  const { unit, req } = w;
  for (const op of ops) {
    if (op.k === "reg") {
      unit.write32(op.off, op.v);
      unit.read32(op.off);
      continue;
    }
    if (op.k === "prq") {
      unit.pageRequest({
        rid: op.rid,
        sid: op.rid,
        pasid: op.pasid,
        iovaPfn: op.vpn,
        access: op.access,
        privileged: op.priv,
        prgIndex: op.prgi,
        last: op.last,
      });
      continue;
    }
    req.rid = op.rid;
    req.sid = op.rid;
    req.pasid = op.pasid;
    req.iovaPfn = op.vpn;
    req.offset = op.off;
    req.access = op.access;
    req.privileged = op.priv;
    req.at = op.at;
    // The fresh walk first: the real one may set A/D flags in the random tables.
    unit.translateUncached(req, fresh);
    unit.translate(req, cached);
    seen.set(cached.code, (seen.get(cached.code) ?? 0) + 1);
    for (const r of [fresh, cached]) {
      if (r.status === XLATE_OK) {
        expect(r.code).toBe(0);
        expect(Number.isInteger(r.pa) && r.pa >= 0 && r.pa < 2 ** 64).toBe(true);
        expect([12, 21, 30]).toContain(r.sizeShift);
      } else {
        expect(r.status).toBe(XLATE_FAULT);
        expect(r.code).toBeGreaterThan(0);
        expect(r.code).toBeLessThan(256);
        expect(r.fault).toBeGreaterThan(0);
      }
    }
    if (compare) {
      expect({
        status: cached.status,
        pa: cached.pa,
        perm: cached.perm,
        code: cached.code,
      }).toEqual({
        status: fresh.status,
        pa: fresh.pa,
        perm: fresh.perm,
        code: fresh.code,
      });
    }
  }
}

const opsFor = (frames: fc.Arbitrary<number>) =>
  fc.array(
    fc.oneof(
      { weight: 2, arbitrary: regOp(frames) },
      { weight: 5, arbitrary: xlateOp },
      { weight: 2, arbitrary: prqOp },
    ),
    {
      maxLength: 60,
    },
  );

// Region frames are handed out in order from the allocator, right after the root-table frame
// vtdTestMachine takes; 0x100_0000 is its base.
const regionFrame = fc.nat({ max: REGION_FRAMES + 2 }).map((i) => 0x100_0000 + i * 4096);

describe("fuzz: registers, translations and page requests over random tables", () => {
  test.prop([U32, fc.boolean(), opsFor(regionFrame)], { seed: 0x7d0001, numRuns: 300 })(
    "minimal caches: never throws, and translate agrees with a fresh walk",
    (seed, legacy, ops) => {
      run(world(seed, legacy, "minimal", false), ops, true);
    },
  );

  test.prop([U32, fc.boolean(), fc.boolean(), opsFor(regionFrame)], {
    seed: 0x7d0002,
    numRuns: 300,
  })(
    "tiny maximal caches, with and without caching mode: never throws, every answer well-formed",
    (seed, legacy, cm, ops) => {
      run(world(seed, legacy, "maximal", cm), ops, false);
    },
  );

  // Runs after the properties above: the random tables must reach the deep levels, or the
  // properties prove little.
  it("the random tables drive requests to translations and to faults at every level", () => {
    expect(seen.get(0) ?? 0).toBeGreaterThan(20);
    for (const deep of [
      VTD_FR.NO_WRITE,
      VTD_FR.SM_PASID_ENTRY_RESERVED,
      VTD_FR.SM_FS_NON_CANONICAL,
    ])
      expect(seen.has(deep), `reason 0x${deep.toString(16)} seen`).toBe(true);
    expect(seen.size).toBeGreaterThan(25);
  });
});

// ----- Random queue contents ------------------------------------------------------------------

/** A descriptor: a layout-shaped one of a random type with random field values, or raw words. */
const descriptor: fc.Arbitrary<number[]> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.integer({ min: 1, max: 9 }), fc.array(U32, { minLength: 8, maxLength: 8 }))
      .map(([type, r]) => {
        const layout = invDescLayout(type);
        if (layout === null) return r;
        const values: Record<string, bigint> = {};
        for (const [i, f] of layout.fields.entries()) {
          if (f.name === "Type" || f.name === "TypeHi") continue;
          // Mostly small values (valid granularities, near addresses), sometimes any.
          const wide = (BigInt(r[i % 8] as number) << 32n) | BigInt(r[(i + 3) % 8] as number);
          const bits = BigInt(Math.min(f.width, (r[(i + 5) % 8] as number) % 5 === 0 ? 64 : 2));
          const raw = wide & ((1n << bits) - 1n);
          values[f.name] = f.addr ? raw << BigInt(f.lsb & 63) : raw;
        }
        const w = encode(layout, { ...values, Type: type });
        return [...w, 0, 0, 0, 0];
      }),
  },
  { weight: 1, arbitrary: fc.array(U32, { minLength: 8, maxLength: 8 }) },
);

const queueTotals = { descriptors: 0, errors: 0, timeouts: 0 };

describe("fuzz: random invalidation queue contents", () => {
  test.prop(
    [
      fc.boolean(),
      fc.nat({ max: 4 }),
      fc.array(descriptor, { minLength: 1, maxLength: 24 }),
      fc.array(fc.oneof(fc.nat({ max: 0x30 }), U32), { minLength: 1, maxLength: 6 }),
    ],
    { seed: 0x7d0003, numRuns: 200 },
  )(
    "the unit never throws; the queue drains or stops with IQE or ITE",
    (legacy, w, descs, tails) => {
      // Mostly the width the mode needs (128-bit legacy, 256-bit scalable), sometimes the other.
      const dw = legacy ? w === 0 : w !== 0;
      const m = vtdTestMachine({ caps: legacy ? LEGACY_VTD_CAPS : {}, qi: false });
      const port = new RecordingPort(0x10);
      m.unit.connect(port);
      const base = m.b.frame(1); // 2 pages
      m.unit.write32(VTD_REG.IQT, 0);
      m.unit.write32(VTD_REG.IQA, (base | (dw ? 0x800 : 0) | 1) >>> 0);
      m.unit.write32(VTD_REG.GCMD, (GCMD_TE | GCMD_QIE) >>> 0);
      const slot = dw ? 32 : 16;
      descs.forEach((d, i) => {
        for (let j = 0; j < slot / 4; j += 2)
          m.mem.write64(base + i * slot + j * 4, d[j] as number, d[j + 1] as number);
      });
      const iq = () => ({
        h: m.unit.read32(VTD_REG.IQH),
        t: m.unit.read32(VTD_REG.IQT),
        fsts: m.unit.read32(VTD_REG.FSTS),
      });
      // Every descriptor (twice, to step over errors), then random tails; software clears the
      // errors between tries.
      for (const t of [
        descs.length * slot,
        descs.length * slot,
        ...tails.map((x) => (x < 0x40 ? x * 16 : x)),
      ]) {
        m.unit.write32(VTD_REG.IQT, t >>> 0);
        const s = iq();
        expect(s.h === s.t || (s.fsts & (FSTS_IQE | FSTS_ITE)) !== 0).toBe(true);
        expect(s.h % 16).toBe(0);
        if ((s.fsts & FSTS_ITE) !== 0) queueTotals.timeouts++;
        // As qi_check_fault does: replace the offending descriptor with a wait, then clear IQE.
        if ((s.fsts & FSTS_IQE) !== 0 && s.h < 8192) {
          m.mem.write64(base + s.h, 5, 0);
          for (let j = 8; j < slot; j += 8) m.mem.write64(base + s.h + j, 0, 0);
        }
        m.unit.write32(VTD_REG.FSTS, FSTS_IQE | FSTS_ITE);
      }
      queueTotals.descriptors += m.unit.stats.descriptors;
      queueTotals.errors += m.unit.stats.invalidationErrors;
    },
  );

  it("the random queues both run descriptors and hit every kind of queue error", () => {
    expect(queueTotals.descriptors).toBeGreaterThan(200);
    expect(queueTotals.errors).toBeGreaterThan(50);
    expect(queueTotals.timeouts).toBeGreaterThan(0);
  });
});
