// iommu-sva.c's bind and unbind on whole machines, VT-d and SMMUv3 alike: the mm's PASID and its
// lifetime, bonds and their users, SVA domains per (mm, IOMMU), the errnos (each failure leaving
// nothing behind), PASID charges, and the free-pasid-on-unbind injection.

import { SmmuMachine } from "@iommu-sim/arm-smmu/testing";
import { VtdMachine } from "@iommu-sim/intel-vtd/testing";
import { type ChargeNode, ChargeTree } from "@iommu-sim/ioasid";
import {
  Device,
  type DeviceOptions,
  IOMMU_DEV_FEAT_IOPF,
  IOMMU_DOMAIN_SVA,
  IOMMU_PASID_INVALID,
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuDevEnableFeature,
  iommuDmaDisablePasid,
  iommuDmaEnablePasid,
  iommuDomainFree,
  iommuPagingDomainAlloc,
} from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import {
  type IommuMmData,
  IommuSva,
  iommuSvaBindDevice,
  iommuSvaGetPasid,
  iommuSvaUnbindDevice,
  Mm,
  mmGetPasid,
  svaState,
} from "../src/index.js";

type Arch = "vtd" | "smmu";

/** A VT-d unit / an SMMU that cannot share CPU page tables (no SVA in the driver). */
const NO_SVA_VTD = {
  caps: { flts: false, firstStage1G: false, firstStage5Level: false, nest: false },
};
const NO_SVA_SMMU = { features: { cohacc: false } };

/** A machine of either architecture: IOMMU 0 serves every requester but 0x0200 and 0x0300. */
interface Rig {
  readonly arch: Arch;
  readonly m: VtdMachine | SmmuMachine;
  readonly charges: ChargeTree;
  /** PRI devices with 8 PASID bits: a and b behind IOMMU 0, c behind IOMMU 1. */
  readonly a: Device;
  readonly b: Device;
  readonly c: Device;
}

const RID_A = 0x0100;
const RID_B = 0x0108;
const RID_C = 0x0200;
/** Behind the third IOMMU, which has no SVA. */
const RID_NO_SVA = 0x0300;

function rig(arch: Arch): Rig {
  const charges = new ChargeTree({ capacity: 2 ** 20, name: "pasid" });
  const m =
    arch === "vtd"
      ? new VtdMachine({
          charges,
          units: [{}, { rids: [RID_C] }, { ...NO_SVA_VTD, rids: [RID_NO_SVA] }],
        })
      : new SmmuMachine({
          charges,
          smmus: [{}, { sids: [RID_C] }, { ...NO_SVA_SMMU, sids: [RID_NO_SVA] }],
        });
  const r = { arch, m, charges } as Rig;
  return {
    ...r,
    a: addDev(r, { name: "a", rid: RID_A }),
    b: addDev(r, { name: "b", rid: RID_B }),
    c: addDev(r, { name: "c", rid: RID_C }),
  };
}

/** Plug in a device (PASID 8 bits, ATS and PRI unless told otherwise), IOPF on for PRI. */
function addDev(r: Pick<Rig, "m">, o: Partial<DeviceOptions> & { name: string; rid: number }) {
  const ats = o.ats ?? true;
  const dev = r.m.addDevice({ pasidBits: 8, ats, pri: ats, ...o });
  if (typeof dev === "string") throw new Error(`${o.name}: ${dev}`);
  if (dev.priCap) expect(iommuDevEnableFeature(dev, IOMMU_DEV_FEAT_IOPF)).toBe(0);
  return dev;
}

function proc(r: Rig, name: string, charge: ChargeNode | null = null): Mm {
  const mm = Mm.create({
    name,
    mem: r.m.mem,
    frames: r.m.frames,
    format: r.arch === "vtd" ? "x86-64" : "aarch64",
    charge,
  });
  if (typeof mm === "string") throw new Error(mm);
  return mm;
}

function user(r: Rig, name: string, max: number): ChargeNode {
  const n = r.charges.createNode(r.charges.root, name, max);
  if (typeof n === "string") throw new Error(n);
  return n;
}

function bind(dev: Device, mm: Mm): IommuSva {
  const h = iommuSvaBindDevice(dev, mm);
  if (typeof h === "string") throw new Error(`bind ${dev.name} ${mm.name}: ${h}`);
  return h;
}

function domains(mm: Mm) {
  return (mm.iommuMm as IommuMmData | null)?.svaDomains ?? [];
}

function attached(dev: Device, pasid: number) {
  return dev.iommu?.group?.pasidArray.get(pasid);
}

/** Everything a failed bind must leave as it found it. */
function snapshot(r: Rig, mm: Mm, devs: readonly Device[]) {
  return {
    pasids: r.m.subsys.pasids.size(),
    charged: r.charges.root.current,
    mmPasid: mmGetPasid(mm),
    mmCount: mm.count,
    domains: domains(mm).length,
    frames: r.m.frames.liveFrames,
    attached: devs.map((d) => [...(d.iommu?.group?.pasidArray.keys() ?? [])]),
  };
}

describe.each(["vtd", "smmu"] as const)("%s", (arch) => {
  describe("the mm's PASID", () => {
    it("the first bind allocates the lowest free global PASID, from 1", () => {
      const r = rig(arch);
      const [p1, p2, p3] = [proc(r, "p1"), proc(r, "p2"), proc(r, "p3")];
      expect(mmGetPasid(p1)).toBe(IOMMU_PASID_INVALID);
      const h1 = bind(r.a, p1);
      expect(iommuSvaGetPasid(h1)).toBe(1);
      expect(mmGetPasid(p1)).toBe(1);
      // A kernel PASID of the DMA API takes the next one from the same space.
      expect(iommuDmaEnablePasid(r.b)).toBe(2);
      expect(iommuSvaGetPasid(bind(r.a, p2))).toBe(3);
      p1.exit();
      expect(iommuSvaUnbindDevice(h1)).toBe(0);
      expect(r.m.subsys.pasids.has(1)).toBe(false);
      expect(iommuSvaGetPasid(bind(r.c, p3))).toBe(1);
      expect(iommuDmaDisablePasid(r.b)).toBe(0);
    });

    it("a second device bound to the same mm gets the same PASID, on either IOMMU", () => {
      const r = rig(arch);
      const mm = proc(r, "p");
      const pa = iommuSvaGetPasid(bind(r.a, mm));
      expect(iommuSvaGetPasid(bind(r.b, mm))).toBe(pa);
      expect(iommuSvaGetPasid(bind(r.c, mm))).toBe(pa);
      expect(r.m.subsys.pasids.size()).toBe(1);
    });

    it("unbind does not free the PASID: the mm keeps it for its next bind", () => {
      const r = rig(arch);
      const mm = proc(r, "p");
      const h = bind(r.a, mm);
      const pasid = iommuSvaGetPasid(h);
      expect(iommuSvaUnbindDevice(h)).toBe(0);
      expect(attached(r.a, pasid)).toBeUndefined();
      expect(domains(mm)).toHaveLength(0);
      expect(r.m.subsys.pasids.has(pasid)).toBe(true);
      expect(mmGetPasid(mm)).toBe(pasid);
      expect(iommuSvaGetPasid(bind(r.c, mm))).toBe(pasid);
    });

    it("the PASID is freed when the mm goes: at exit after the last unbind", () => {
      const r = rig(arch);
      const mm = proc(r, "p");
      const freed: number[] = [];
      svaState(r.m.subsys).hooks = { pasidFreed: (_mm, p) => freed.push(p) };
      const pasid = iommuSvaGetPasid(bind(r.a, mm));
      expect(iommuSvaUnbindDevice(attached(r.a, pasid)?.handle as IommuSva)).toBe(0);
      expect(r.m.subsys.pasids.has(pasid)).toBe(true);
      mm.exit();
      expect(r.m.subsys.pasids.has(pasid)).toBe(false);
      expect(freed).toEqual([pasid]);
    });

    it("the PASID is freed when the mm goes: at the last unbind after exit (the last mmdrop)", () => {
      const r = rig(arch);
      const mm = proc(r, "p");
      const allocated: number[] = [];
      const freed: number[] = [];
      svaState(r.m.subsys).hooks = {
        pasidAllocated: (m, p) => allocated.push(m === mm ? p : -1),
        pasidFreed: (m, p) => freed.push(m === mm ? p : -1),
      };
      const ha = bind(r.a, mm);
      const hc = bind(r.c, mm);
      const pasid = iommuSvaGetPasid(ha);
      expect(allocated).toEqual([pasid]);
      mm.exit();
      expect(r.m.subsys.pasids.has(pasid)).toBe(true);
      expect(iommuSvaUnbindDevice(ha)).toBe(0);
      expect(r.m.subsys.pasids.has(pasid)).toBe(true);
      expect(freed).toEqual([]);
      expect(iommuSvaUnbindDevice(hc)).toBe(0);
      expect(r.m.subsys.pasids.has(pasid)).toBe(false);
      expect(freed).toEqual([pasid]);
      expect(mm.count).toBe(0);
    });
  });

  describe("bonds", () => {
    it("binding the same (dev, mm) twice returns the same bond with users 2", () => {
      const r = rig(arch);
      const mm = proc(r, "p");
      const h = bind(r.a, mm);
      expect(bind(r.a, mm)).toBe(h);
      expect(h.users).toBe(2);
      expect(h.domain.users).toBe(1);
      expect(attached(r.a, iommuSvaGetPasid(h))?.handle).toBe(h);
    });

    it("the first unbind of two keeps the attachment; the second detaches; a third is EINVAL", () => {
      const r = rig(arch);
      const mm = proc(r, "p");
      const h = bind(r.a, mm);
      bind(r.a, mm);
      const pasid = iommuSvaGetPasid(h);
      const domain = h.domain;
      expect(iommuSvaUnbindDevice(h)).toBe(0);
      expect(h.users).toBe(1);
      expect(attached(r.a, pasid)?.domain).toBe(domain);
      expect(domains(mm)).toEqual([domain]);
      expect(iommuSvaUnbindDevice(h)).toBe(0);
      expect(h.users).toBe(0);
      expect(attached(r.a, pasid)).toBeUndefined();
      expect(domains(mm)).toEqual([]);
      expect(iommuSvaUnbindDevice(h)).toBe("EINVAL");
    });

    it("a bond is the attach handle at the PASID, naming the device and the mm's SVA domain", () => {
      const r = rig(arch);
      const mm = proc(r, "p");
      const h = bind(r.b, mm);
      expect(h).toBeInstanceOf(IommuSva);
      expect(h.dev).toBe(r.b);
      expect(h.domain.type).toBe(IOMMU_DOMAIN_SVA);
      expect(h.domain.mm).toBe(mm);
      expect(attached(r.b, iommuSvaGetPasid(h))).toEqual({ domain: h.domain, handle: h });
    });
  });

  describe("SVA domains: one per (mm, IOMMU)", () => {
    it("two devices on one IOMMU share the mm's domain (users 2)", () => {
      const r = rig(arch);
      const mm = proc(r, "p");
      const ha = bind(r.a, mm);
      const hb = bind(r.b, mm);
      expect(hb).not.toBe(ha);
      expect(hb.domain).toBe(ha.domain);
      expect(ha.domain.users).toBe(2);
      expect(domains(mm)).toEqual([ha.domain]);
    });

    it(`a device behind a second IOMMU: ${arch === "smmu" ? "a second domain" : "the same domain (VT-d's SVA domains span units)"}`, () => {
      const r = rig(arch);
      const mm = proc(r, "p");
      const ha = bind(r.a, mm);
      const hc = bind(r.c, mm);
      if (arch === "smmu") {
        expect(hc.domain).not.toBe(ha.domain);
        // Newest first, as list_add keeps them: a bind tries the latest domain first.
        expect(domains(mm)).toEqual([hc.domain, ha.domain]);
        expect(ha.domain.users).toBe(1);
        expect(hc.domain.users).toBe(1);
      } else {
        expect(hc.domain).toBe(ha.domain);
        expect(domains(mm)).toEqual([ha.domain]);
        expect(ha.domain.users).toBe(2);
      }
    });

    it("the last unbind from a domain frees it (its mm reference with it); the others stay", () => {
      const r = rig(arch);
      const mm = proc(r, "p");
      const ha = bind(r.a, mm);
      const hb = bind(r.b, mm);
      const hc = bind(r.c, mm);
      expect(iommuSvaUnbindDevice(ha)).toBe(0);
      // On VT-d c shares the domain too.
      expect(ha.domain.users).toBe(arch === "smmu" ? 1 : 2);
      expect(domains(mm)).toContain(ha.domain);
      expect(iommuSvaUnbindDevice(hb)).toBe(0);
      expect(domains(mm)).toEqual(arch === "smmu" ? [hc.domain] : [ha.domain]);
      expect(iommuSvaUnbindDevice(hc)).toBe(0);
      expect(domains(mm)).toEqual([]);
      // Only the task's own reference is left.
      expect(mm.count).toBe(1);
    });

    it("each mm has its own domains and PASID on a shared device", () => {
      const r = rig(arch);
      const [p, q] = [proc(r, "p"), proc(r, "q")];
      const hp = bind(r.a, p);
      const hq = bind(r.a, q);
      expect(hq.domain).not.toBe(hp.domain);
      expect(iommuSvaGetPasid(hq)).not.toBe(iommuSvaGetPasid(hp));
      expect(attached(r.a, iommuSvaGetPasid(hp))?.handle).toBe(hp);
      expect(attached(r.a, iommuSvaGetPasid(hq))?.handle).toBe(hq);
    });
  });

  describe("errnos, each failure leaving nothing behind", () => {
    it("ENODEV for a device no IOMMU probed, or one removed", () => {
      const r = rig(arch);
      const mm = proc(r, "p");
      const before = snapshot(r, mm, []);
      const stray = new Device({ name: "stray", rid: 0x0500, pasidBits: 8 });
      expect(iommuSvaBindDevice(stray, mm)).toBe("ENODEV");
      const gone = addDev(r, { name: "gone", rid: 0x0510 });
      expect(r.m.removeDevice(gone)).toBe(0);
      const base = snapshot(r, mm, []);
      expect(iommuSvaBindDevice(gone, mm)).toBe("ENODEV");
      expect(snapshot(r, mm, [])).toEqual(base);
      expect(base.pasids).toBe(before.pasids);
      expect(mmGetPasid(mm)).toBe(IOMMU_PASID_INVALID);
    });

    it("EINVAL for an mm that has exited, with or without a PASID", () => {
      const r = rig(arch);
      const fresh = proc(r, "fresh");
      fresh.exit();
      const before = snapshot(r, fresh, [r.a]);
      // The task's exit dropped the last mm_struct reference: nothing to bind any more.
      expect(iommuSvaBindDevice(r.a, fresh)).toBe("EINVAL");
      expect(snapshot(r, fresh, [r.a])).toEqual(before);
      const bound = proc(r, "bound");
      const h = bind(r.a, bound);
      bound.exit();
      const snap = snapshot(r, bound, [r.a, r.c]);
      expect(iommuSvaBindDevice(r.c, bound)).toBe("EINVAL");
      expect(iommuSvaBindDevice(r.a, bound)).toBe("EINVAL");
      expect(h.users).toBe(1);
      expect(snapshot(r, bound, [r.a, r.c])).toEqual(snap);
    });

    it("EBUSY when a paging domain is attached at the mm's PASID on the device", () => {
      const r = rig(arch);
      const mm = proc(r, "p", user(r, "u", 10));
      const pasid = iommuSvaGetPasid(bind(r.a, mm));
      const paging = iommuPagingDomainAlloc(r.b);
      if (typeof paging === "string") throw new Error(paging);
      expect(iommuAttachDevicePasid(paging, r.b, pasid)).toBe(0);
      const before = snapshot(r, mm, [r.a, r.b]);
      expect(iommuSvaBindDevice(r.b, mm)).toBe("EBUSY");
      expect(snapshot(r, mm, [r.a, r.b])).toEqual(before);
      expect(attached(r.b, pasid)?.domain).toBe(paging);
      expect(iommuDetachDevicePasid(paging, r.b, pasid)).toBe(0);
      iommuDomainFree(paging);
      expect(iommuSvaGetPasid(bind(r.b, mm))).toBe(pasid);
    });

    it("EBUSY when a paging domain holds the PASID a first bind would get: that PASID goes back", () => {
      const r = rig(arch);
      const u = user(r, "u", 10);
      const mm = proc(r, "p", u);
      const paging = iommuPagingDomainAlloc(r.a);
      if (typeof paging === "string") throw new Error(paging);
      // A PASID attached without coming from the global space (as a guest's own PASID may be).
      expect(iommuAttachDevicePasid(paging, r.a, 1)).toBe(0);
      const before = snapshot(r, mm, [r.a]);
      expect(iommuSvaBindDevice(r.a, mm)).toBe("EBUSY");
      expect(snapshot(r, mm, [r.a])).toEqual(before);
      expect(r.m.subsys.pasids.has(1)).toBe(false);
      expect(u.current).toBe(0);
      expect(iommuDetachDevicePasid(paging, r.a, 1)).toBe(0);
      iommuDomainFree(paging);
    });

    it("ENOSPC for a device without PASID support", () => {
      const r = rig(arch);
      const mm = proc(r, "p");
      const plain = addDev(r, { name: "plain", rid: 0x0110, pasidBits: 0, pri: false });
      const before = snapshot(r, mm, [plain]);
      expect(iommuSvaBindDevice(plain, mm)).toBe("ENOSPC");
      expect(snapshot(r, mm, [plain])).toEqual(before);
    });

    it("ENOSPC when the device's PASID range is used up", () => {
      const r = rig(arch);
      // One PASID bit: PASID 1 is all the device can use.
      const narrow = addDev(r, { name: "narrow", rid: 0x0110, pasidBits: 1 });
      bind(narrow, proc(r, "p1"));
      const mm = proc(r, "p2");
      const before = snapshot(r, mm, [narrow]);
      expect(iommuSvaBindDevice(narrow, mm)).toBe("ENOSPC");
      expect(snapshot(r, mm, [narrow])).toEqual(before);
      // A wider device still finds room.
      expect(iommuSvaGetPasid(bind(r.a, mm))).toBe(2);
    });

    it("EOVERFLOW when the mm's PASID is beyond a second device's PASID width", () => {
      const r = rig(arch);
      const narrow = addDev(r, { name: "narrow", rid: 0x0110, pasidBits: 1 });
      bind(r.a, proc(r, "p1"));
      const mm = proc(r, "p2");
      const h = bind(r.a, mm);
      expect(iommuSvaGetPasid(h)).toBe(2);
      const before = snapshot(r, mm, [r.a, narrow]);
      expect(iommuSvaBindDevice(narrow, mm)).toBe("EOVERFLOW");
      expect(snapshot(r, mm, [r.a, narrow])).toEqual(before);
      expect(h.users).toBe(1);
    });

    it("EOPNOTSUPP from a driver that cannot do SVA on the device's IOMMU", () => {
      const r = rig(arch);
      const dev = addDev(r, { name: "nosva", rid: RID_NO_SVA });
      const mm = proc(r, "p", user(r, "u", 10));
      const before = snapshot(r, mm, [dev]);
      expect(iommuSvaBindDevice(dev, mm)).toBe("EOPNOTSUPP");
      expect(snapshot(r, mm, [dev])).toEqual(before);
      // The same mm binds elsewhere, and then fails there without touching its PASID.
      const pasid = iommuSvaGetPasid(bind(r.a, mm));
      const snap = snapshot(r, mm, [r.a, dev]);
      expect(iommuSvaBindDevice(dev, mm)).toBe("EOPNOTSUPP");
      expect(snapshot(r, mm, [r.a, dev])).toEqual(snap);
      expect(mmGetPasid(mm)).toBe(pasid);
    });
  });

  describe("PASID charges", () => {
    it("over a user's limit the second process's bind is EBUSY and leaves nothing; after the first goes it binds", () => {
      const r = rig(arch);
      const u = user(r, "u", 1);
      const [p1, p2] = [proc(r, "p1", u), proc(r, "p2", u)];
      const h1 = bind(r.a, p1);
      const pasid = iommuSvaGetPasid(h1);
      expect(u.current).toBe(1);
      expect(r.m.subsys.pasids.chargeOf(pasid)).toBe(u);
      const before = snapshot(r, p2, [r.a, r.c]);
      expect(iommuSvaBindDevice(r.a, p2)).toBe("EBUSY");
      expect(iommuSvaBindDevice(r.c, p2)).toBe("EBUSY");
      expect(snapshot(r, p2, [r.a, r.c])).toEqual(before);
      expect(u.current).toBe(1);
      p1.exit();
      expect(u.current).toBe(1);
      expect(iommuSvaUnbindDevice(h1)).toBe(0);
      expect(u.current).toBe(0);
      const h2 = bind(r.a, p2);
      expect(iommuSvaGetPasid(h2)).toBe(pasid);
      expect(u.current).toBe(1);
    });

    it("two devices bound to one process count once", () => {
      const r = rig(arch);
      const u = user(r, "u", 1);
      const mm = proc(r, "p", u);
      bind(r.a, mm);
      bind(r.b, mm);
      bind(r.c, mm);
      bind(r.c, mm);
      expect(u.current).toBe(1);
      expect(r.charges.root.current).toBe(1);
    });

    it("the charge stays with the PASID across unbinds, until the mm goes", () => {
      const r = rig(arch);
      const u = user(r, "u", 1);
      const mm = proc(r, "p", u);
      const h = bind(r.a, mm);
      expect(iommuSvaUnbindDevice(h)).toBe(0);
      expect(u.current).toBe(1);
      bind(r.c, mm);
      expect(u.current).toBe(1);
    });

    it("a kernel DMA-API PASID is never charged", () => {
      const r = rig(arch);
      const u = user(r, "u", 1);
      bind(r.a, proc(r, "p", u));
      const kp = iommuDmaEnablePasid(r.b);
      expect(typeof kp).toBe("number");
      expect(r.m.subsys.pasids.chargeOf(kp as number)).toBeNull();
      expect(u.current).toBe(1);
      expect(r.charges.root.current).toBe(1);
      expect(iommuDmaDisablePasid(r.b)).toBe(0);
    });

    it("a process with no user is never charged", () => {
      const r = rig(arch);
      const h = bind(r.a, proc(r, "p"));
      expect(r.m.subsys.pasids.chargeOf(iommuSvaGetPasid(h))).toBeNull();
      expect(r.charges.root.current).toBe(0);
    });
  });

  describe("free-pasid-on-unbind injection", () => {
    it("the PASID is free right after the last unbind while the mm still names it; another mm's bind gets it", () => {
      const r = rig(arch);
      svaState(r.m.subsys).inject.freePasidOnUnbind = true;
      const [p1, p2] = [proc(r, "p1"), proc(r, "p2")];
      const ha = bind(r.a, p1);
      const hc = bind(r.c, p1);
      const pasid = iommuSvaGetPasid(ha);
      expect(iommuSvaUnbindDevice(ha)).toBe(0);
      // Another bond of the mm is left: not yet.
      expect(r.m.subsys.pasids.has(pasid)).toBe(true);
      expect(iommuSvaUnbindDevice(hc)).toBe(0);
      expect(r.m.subsys.pasids.has(pasid)).toBe(false);
      expect(mmGetPasid(p1)).toBe(pasid);
      expect(iommuSvaGetPasid(bind(r.a, p2))).toBe(pasid);
      // Two live mms name one PASID: the old owner's next bind finds the other's bond there.
      expect(iommuSvaBindDevice(r.a, p1)).toBe("EBUSY");
    });

    it("off by default: the PASID outlives the unbind", () => {
      const r = rig(arch);
      expect(svaState(r.m.subsys).inject.freePasidOnUnbind).toBe(false);
      const h = bind(r.a, proc(r, "p"));
      expect(iommuSvaUnbindDevice(h)).toBe(0);
      expect(r.m.subsys.pasids.has(iommuSvaGetPasid(h))).toBe(true);
    });
  });

  it("after every bond is undone and every process gone, PASIDs, charges and frames are back", () => {
    const r = rig(arch);
    const frames = r.m.frames.liveFrames;
    const u = user(r, "u", 10);
    const mms = [proc(r, "p1", u), proc(r, "p2", u)];
    const bonds = [bind(r.a, mms[0]), bind(r.c, mms[0]), bind(r.a, mms[1]), bind(r.b, mms[1])];
    bind(r.b, mms[1]);
    mms[0].exit();
    for (const h of bonds) while (h.users > 0) expect(iommuSvaUnbindDevice(h)).toBe(0);
    mms[1].exit();
    expect(r.m.subsys.pasids.size()).toBe(0);
    expect(r.charges.root.current).toBe(0);
    expect(r.m.frames.liveFrames).toBe(frames);
  });
});
