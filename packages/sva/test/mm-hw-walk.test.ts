// Hardware cross-check: the mm's own tables walked by the IOMMU models exactly as they would be
// through an SVA binding (a VT-d first-stage walk from a PASID entry's FLPTR; an SMMUv3 stage-1
// walk through a CD built the way Linux builds an SVA CD) give the same physical address and the
// same permissions as mm.lookup / mm.lookupFlags, for random mappings.

import { CD } from "@iommu-sim/arm-smmu/format";
import {
  CFG_OK,
  DEFAULT_SMMU_FEATURES,
  decodeCdWords,
  P_R,
  P_U,
  P_W,
  P_X,
  W_OK as SMMU_W_OK,
  SmmuCdConfig,
  SmmuSteConfig,
  SmmuWalker,
  W_TRANSLATION,
} from "@iommu-sim/arm-smmu/hw";
import {
  P_EXEC,
  P_READ,
  P_USER,
  P_WRITE,
  W_OK as VTD_W_OK,
  VtdWalker,
  W_NOT_PRESENT,
} from "@iommu-sim/intel-vtd/hw";
import { encode, FrameAllocator, PhysMemory } from "@iommu-sim/iommu-core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  FAULT_FLAG_USER,
  FAULT_FLAG_WRITE,
  Mm,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
  VM_EXEC,
  VM_READ,
  VM_WRITE,
  type Vma,
} from "../src/mm/index.js";

/** The VMA at `va`, which the test knows is there. */
function vmaAt(mm: Mm, va: number): Vma {
  const v = mm.vmaLookup(va);
  if (v === null) throw new Error(`no VMA at 0x${va.toString(16)}`);
  return v;
}

const K = 4096;

interface Config {
  format: "x86-64" | "aarch64";
  levels: 4 | 5;
  /** Frames live above 4 GiB, so entries carry address bits in their high word. */
  basePa: number;
  /** Where the random mappings go: low (mmap search) and high (fixed) windows. */
  high: number;
}

const CONFIGS: Config[] = [
  { format: "x86-64", levels: 4, basePa: 2 ** 40, high: 2 ** 46 },
  { format: "x86-64", levels: 5, basePa: 2 ** 45, high: 2 ** 55 },
  { format: "aarch64", levels: 4, basePa: 2 ** 44, high: 2 ** 47 },
];

/** A walker that reads what the mm's tables say for `va`: { pa, flags } or null. */
type HwWalk = (va: number) => { pa: number; flags: number } | null;

function vtdWalk(mem: PhysMemory, mm: Mm): HwWalk {
  const w = new VtdWalker(mem, { haw: 52, sllps: 0, fl1gp: false });
  w.updateFlags = false;
  return (va) => {
    const r = w.walkFirstStage(mm.pgd, mm.levels, va / K, false, false, 0, 0, 0, false);
    if (r !== VTD_W_OK) {
      expect(r).toBe(W_NOT_PRESENT);
      return null;
    }
    // Every present page of a process is a user page.
    expect(w.perm & P_USER).toBe(P_USER);
    const flags =
      ((w.perm & P_READ) !== 0 ? VM_READ : 0) |
      ((w.perm & P_WRITE) !== 0 ? VM_WRITE : 0) |
      ((w.perm & P_EXEC) !== 0 ? VM_EXEC : 0);
    return { pa: w.pfn * K, flags };
  };
}

function smmuWalk(mem: PhysMemory, mm: Mm): HwWalk {
  // The SVA CD of arm_smmu_make_sva_cd: T0SZ from vabits, 4K granule, WBWA inner-shareable walks,
  // TTB1 off, IPS from the CPU's PARange, TTB0 the pgd, the CPU's MAIR, HA/HD with HTTU.
  const words = encode(CD, {
    T0SZ: 64 - mm.vaBits,
    TG0: 0,
    IR0: 1,
    OR0: 1,
    SH0: 3,
    EPD1: 1,
    V: 1,
    IPS: mm.parange,
    AA64: 1,
    HA: 1,
    HD: 1,
    R: 1,
    A: 1,
    ASET: 1,
    ASID: 7,
    TTB0: mm.pgd,
    MAIR0: mm.mair[0],
    MAIR1: mm.mair[1],
  });
  const ste = new SmmuSteConfig();
  ste.s1 = true;
  const cd = decodeCdWords(words, ste, DEFAULT_SMMU_FEATURES, new SmmuCdConfig());
  expect(cd.status).toBe(CFG_OK);
  const w = new SmmuWalker(mem);
  w.updateFlags = false;
  w.priv = false;
  return (va) => {
    const r = w.walkStage1(ste, cd, va / K, false);
    if (r !== SMMU_W_OK) {
      expect(r).toBe(W_TRANSLATION);
      return null;
    }
    expect(w.perm & P_U).toBe(P_U);
    expect(w.global).toBe(false);
    const flags =
      ((w.perm & P_R) !== 0 ? VM_READ : 0) |
      ((w.perm & P_W) !== 0 ? VM_WRITE : 0) |
      ((w.perm & P_X) !== 0 ? VM_EXEC : 0);
    return { pa: w.pfn * K, flags };
  };
}

const op = fc.oneof(
  fc.record({
    kind: fc.constant("mmap" as const),
    high: fc.boolean(),
    page: fc.integer({ min: 0, max: 1 << 20 }),
    pages: fc.integer({ min: 1, max: 600 }),
    prot: fc.integer({ min: 0, max: 7 }),
  }),
  fc.record({
    kind: fc.constant("touch" as const),
    pick: fc.nat(),
    pages: fc.integer({ min: 1, max: 24 }),
    write: fc.boolean(),
  }),
  fc.record({
    kind: fc.constant("mprotect" as const),
    pick: fc.nat(),
    pages: fc.integer({ min: 1, max: 64 }),
    prot: fc.integer({ min: 0, max: 7 }),
  }),
  fc.record({
    kind: fc.constant("munmap" as const),
    pick: fc.nat(),
    pages: fc.integer({ min: 1, max: 64 }),
  }),
);

describe("the IOMMU walkers read the mm's tables as the mm does", () => {
  for (const cfg of CONFIGS) {
    const name = `${cfg.format} ${cfg.levels}-level`;
    it(`${name}: ${cfg.format === "x86-64" ? "VT-d first-stage" : "SMMUv3 stage-1 (SVA CD)"} walk agrees with lookup`, () => {
      let seen = 0;
      let absent = 0;
      const perms = new Set<number>();
      fc.assert(
        fc.property(fc.array(op, { minLength: 8, maxLength: 40 }), (ops) => {
          const mem = new PhysMemory();
          const frames = new FrameAllocator(mem, { basePa: cfg.basePa, size: 0x80_0000 });
          const mm = new Mm({ name, mem, frames, format: cfg.format, levels: cfg.levels });
          const walk = cfg.format === "x86-64" ? vtdWalk(mem, mm) : smmuWalk(mem, mm);
          const probes: number[] = [];
          for (const o of ops) {
            const vmas = mm.vmas;
            const at = (pick: number) => {
              const v = vmas[pick % vmas.length];
              return v.start + ((pick >>> 8) % ((v.end - v.start) / K)) * K;
            };
            if (o.kind === "mmap") {
              const addr = o.high ? cfg.high + o.page * K : 0;
              const r = mm.mmap(addr, o.pages * K, o.prot, o.high);
              if (typeof r === "number") probes.push(r, r + (o.pages - 1) * K, r + o.pages * K);
            } else if (vmas.length === 0) {
            } else if (o.kind === "touch") {
              const flags = FAULT_FLAG_USER | (o.write ? FAULT_FLAG_WRITE : 0);
              for (let va = at(o.pick), n = 0; n < o.pages && mm.vmaLookup(va) !== null; n++) {
                mm.handleMmFault(vmaAt(mm, va), va, flags);
                va += K;
              }
            } else if (o.kind === "mprotect") {
              mm.mprotect(at(o.pick), o.pages * K, o.prot);
            } else {
              mm.munmap(at(o.pick), o.pages * K);
            }
          }
          let present = 0;
          for (const v of mm.vmas) {
            for (let va = v.start; va < v.end && va < v.start + 64 * K; va += K) probes.push(va);
          }
          for (const va of probes) {
            const hw = walk(va);
            const pa = mm.lookup(va);
            if (pa < 0) {
              expect(hw).toBeNull();
              absent++;
              continue;
            }
            present++;
            perms.add(mm.lookupFlags(va));
            expect(hw).toEqual({ pa, flags: mm.lookupFlags(va) });
            expect(mm.lookupFlags(va) & VM_READ).toBe(VM_READ);
          }
          mm.exit();
          for (const va of probes) expect(walk(va)).toBeNull();
          seen += present;
        }),
        { seed: 20240611, numRuns: 60 },
      );
      // The random runs reached present pages of every permission set, and absent ones.
      expect(seen).toBeGreaterThan(500);
      expect(absent).toBeGreaterThan(200);
      expect(perms.size).toBe(4);
    });
  }

  it("the walks see every permission combination a VMA can ask for", () => {
    for (const cfg of CONFIGS) {
      const mem = new PhysMemory();
      const frames = new FrameAllocator(mem, { basePa: cfg.basePa, size: 0x10_0000 });
      const mm = new Mm({ name: "perm", mem, frames, format: cfg.format, levels: cfg.levels });
      const walk = cfg.format === "x86-64" ? vtdWalk(mem, mm) : smmuWalk(mem, mm);
      for (let prot = 1; prot <= 7; prot++) {
        const va = mm.mmap(0, K, prot) as number;
        const write = (prot & PROT_WRITE) !== 0;
        expect(mm.handleMmFault(vmaAt(mm, va), va, write ? FAULT_FLAG_WRITE : 0)).toBe(0);
        const want = VM_READ | (prot & (PROT_WRITE | PROT_EXEC));
        expect(walk(va)).toEqual({ pa: mm.lookup(va), flags: want });
        expect(mm.lookupFlags(va)).toBe(want);
      }
      expect(mm.mprotect(mm.vmas[0].start, 7 * K, PROT_READ)).toBe(0);
      for (let i = 0; i < 7; i++) expect(walk(mm.vmas[0].start + i * K)?.flags).toBe(VM_READ);
    }
  });
});
