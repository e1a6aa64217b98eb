// Random sequences of bind / unbind / exit / create over three processes and three devices (two
// behind one IOMMU, one behind another), on VT-d and SMMUv3, against a small reference model of
// iommu-sva.c: which mm has which PASID, the users of each bond, the SVA domains per (mm, IOMMU).
// After every step the machine must agree with the model; at the end nothing is left.

import { SmmuMachine } from "@iommu-sim/arm-smmu/testing";
import { VtdMachine } from "@iommu-sim/intel-vtd/testing";
import { ChargeTree } from "@iommu-sim/ioasid";
import {
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_PASID_INVALID,
  iommuDevEnableFeature,
} from "@iommu-sim/iommu-core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type IommuMmData,
  type IommuSva,
  iommuSvaBindDevice,
  iommuSvaGetPasid,
  iommuSvaUnbindDevice,
  Mm,
  mmGetPasid,
} from "../src/index.js";

type Arch = "vtd" | "smmu";

/** Device i sits behind IOMMU IOMMU_OF[i]. */
const IOMMU_OF = [0, 0, 1] as const;
const RIDS = [0x0100, 0x0108, 0x0200] as const;
const SLOTS = 3;

type Op =
  | { kind: "bind"; slot: number; dev: number }
  | { kind: "unbind"; slot: number; dev: number }
  | { kind: "exit"; slot: number }
  | { kind: "create"; slot: number };

const slot = fc.integer({ min: 0, max: SLOTS - 1 });
const devIdx = fc.integer({ min: 0, max: RIDS.length - 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("bind" as const), slot, dev: devIdx }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("unbind" as const), slot, dev: devIdx }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("exit" as const), slot }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("create" as const), slot }) },
);

/** The model's view of one process. */
interface Proc {
  readonly mm: Mm;
  exited: boolean;
  /** The PASID the model expects the mm to hold, or null. */
  pasid: number | null;
  /** Bonds by device index: the handle the machine returned and the users the model counts. */
  readonly bonds: Map<number, { handle: IommuSva; users: number }>;
}

/** The mm_struct is still there: the task lives, or some bond holds it. */
const alive = (p: Proc): boolean => !p.exited || p.bonds.size > 0;

function machine(arch: Arch) {
  const charges = new ChargeTree({ capacity: 2 ** 20, name: "pasid" });
  const m =
    arch === "vtd"
      ? new VtdMachine({ charges, units: [{}, { rids: [RIDS[2]] }] })
      : new SmmuMachine({ charges, smmus: [{}, { sids: [RIDS[2]] }] });
  const devs = RIDS.map((rid, i) => {
    const d = m.addDevice({ name: `d${i}`, rid, pasidBits: 8, ats: true, pri: true });
    if (typeof d === "string") throw new Error(d);
    expect(iommuDevEnableFeature(d, IOMMU_DEV_FEAT_IOPF)).toBe(0);
    return d;
  });
  const user = charges.createNode(charges.root, "u", Number.POSITIVE_INFINITY);
  if (typeof user === "string") throw new Error(user);
  return { m, devs, user };
}

function run(arch: Arch, ops: readonly Op[]): void {
  const { m, devs, user } = machine(arch);
  const space = m.subsys.pasids;
  const frames = m.frames.liveFrames;
  const create = (): Proc => {
    const mm = Mm.create({
      name: "p",
      mem: m.mem,
      frames: m.frames,
      format: arch === "vtd" ? "x86-64" : "aarch64",
      charge: user,
    });
    if (typeof mm === "string") throw new Error(mm);
    return { mm, exited: false, pasid: null, bonds: new Map() };
  };
  const slots: Proc[] = Array.from({ length: SLOTS }, create);
  /** Every process ever created (a replaced one may still hold bonds). */
  const all: Proc[] = [...slots];

  const lowestFree = (): number => {
    const held = new Set(all.filter(alive).map((p) => p.pasid));
    let pasid = 1;
    while (held.has(pasid)) pasid++;
    return pasid;
  };

  const check = (): void => {
    const live = all.filter((p) => alive(p) && p.pasid !== null);
    // PASIDs allocated are exactly those of mms still there that got one; each charged once.
    expect(space.size()).toBe(live.length);
    for (const p of live) {
      expect(space.has(p.pasid as number)).toBe(true);
      expect(space.chargeOf(p.pasid as number)).toBe(user);
    }
    expect(user.current).toBe(live.length);
    for (const p of all) {
      if (alive(p)) expect(mmGetPasid(p.mm)).toBe(p.pasid ?? IOMMU_PASID_INVALID);
      else expect(p.mm.count).toBe(0);
      // Domains: one per IOMMU of a bound device on SMMUv3, one for all on VT-d.
      const iommus = new Set([...p.bonds.keys()].map((d) => IOMMU_OF[d]));
      const want = arch === "smmu" ? iommus.size : Math.min(iommus.size, 1);
      const doms = (p.mm.iommuMm as IommuMmData | null)?.svaDomains ?? [];
      expect(doms).toHaveLength(want);
      for (const d of doms) {
        const users = [...p.bonds.values()].filter((b) => b.handle.domain === d).length;
        expect(d.users).toBe(users);
        expect(d.mm).toBe(p.mm);
      }
    }
    // Every attachment is a bond of the model, and every bond is attached.
    for (let i = 0; i < devs.length; i++) {
      const arr = devs[i].iommu?.group?.pasidArray;
      if (arr === undefined) throw new Error("no group");
      const bonds = all.filter((p) => p.bonds.has(i));
      expect(arr.size).toBe(bonds.length);
      for (const p of bonds) {
        const b = p.bonds.get(i) as { handle: IommuSva; users: number };
        expect(arr.get(p.pasid as number)?.handle).toBe(b.handle);
        expect(b.handle.users).toBe(b.users);
        expect(b.handle.dev).toBe(devs[i]);
      }
    }
  };

  for (const op of ops) {
    const p = slots[op.slot];
    switch (op.kind) {
      case "bind": {
        const ret = iommuSvaBindDevice(devs[op.dev], p.mm);
        if (p.exited) {
          expect(ret).toBe("EINVAL");
          break;
        }
        if (typeof ret === "string") throw new Error(`bind: ${ret}`);
        const had = p.bonds.get(op.dev);
        if (had !== undefined) {
          expect(ret).toBe(had.handle);
          had.users++;
        } else {
          if (p.pasid === null) p.pasid = lowestFree();
          p.bonds.set(op.dev, { handle: ret, users: 1 });
        }
        expect(iommuSvaGetPasid(ret)).toBe(p.pasid);
        break;
      }
      case "unbind": {
        const b = p.bonds.get(op.dev);
        if (b === undefined) break;
        expect(iommuSvaUnbindDevice(b.handle)).toBe(0);
        if (--b.users === 0) {
          p.bonds.delete(op.dev);
          // A bond undone is undone for good.
          expect(iommuSvaUnbindDevice(b.handle)).toBe("EINVAL");
        }
        break;
      }
      case "exit":
        p.mm.exit();
        p.exited = true;
        break;
      case "create":
        if (!p.exited) break;
        slots[op.slot] = create();
        all.push(slots[op.slot]);
        break;
    }
    check();
  }

  for (const p of all) {
    p.mm.exit();
    p.exited = true;
    for (const [d, b] of [...p.bonds]) {
      while (b.users > 0) {
        expect(iommuSvaUnbindDevice(b.handle)).toBe(0);
        b.users--;
      }
      p.bonds.delete(d);
    }
    check();
  }
  expect(space.size()).toBe(0);
  expect(user.current).toBe(0);
  expect(m.frames.liveFrames).toBe(frames);
}

describe.each(["vtd", "smmu"] as const)("%s", (arch) => {
  it("bind / unbind / exit / create agree with the reference model, and nothing leaks", () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => run(arch, ops)),
      { seed: 0x5fa, numRuns: 80 },
    );
  });
});
