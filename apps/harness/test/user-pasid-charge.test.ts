import { describe, expect, it } from "vitest";
import type { Harness, MachineSpec } from "../src/machine/harness.js";
import { SmmuHarness } from "../src/machine/smmu-harness.js";
import { VtdHarness } from "../src/machine/vtd-harness.js";

const SPEC: MachineSpec = {
  units: [{ name: "iommu0" }],
  devices: [],
};

const MAKERS: ReadonlyArray<[string, () => Harness]> = [
  ["vtd", () => new VtdHarness(SPEC, 1)],
  ["smmu", () => new SmmuHarness(SPEC, 1)],
];

describe.each(MAKERS)("PASIDs handed to user space (%s)", (_arch, make) => {
  function setup() {
    const h = make();
    const dev = h.addDevice({ name: "wq0", rid: 0x20, pasidBits: 20, ats: true });
    if (typeof dev === "string") throw new Error(dev);
    const user = h.sva.user("carol", 1);
    if (typeof user === "string") throw new Error(user);
    return { h, dev, user };
  }

  it("are charged where they are first attached, not when allocated", () => {
    const { h, dev, user } = setup();
    const p = h.pasidAlloc(dev, "carol's queue", user) as number;
    expect(typeof p).toBe("number");
    expect(user.current).toBe(0);
    const d = h.domainAlloc(dev, "paging");
    if (typeof d === "string") throw new Error(d);
    expect(h.pasidAttach(dev, p, d)).toBe(0);
    expect(user.current).toBe(1);
    // Detaching and attaching again charges nothing more: the PASID is held until freed.
    expect(h.pasidDetach(dev, p)).toBe(0);
    expect(h.pasidAttach(dev, p, d)).toBe(0);
    expect(user.current).toBe(1);
    expect(h.pasidDetach(dev, p)).toBe(0);
    expect(h.pasidFree(p)).toBe(0);
    expect(user.current).toBe(0);
    h.teardown();
    expect(h.oracle.violations).toEqual([]);
  });

  it("an attach over the user's limit fails with EBUSY and leaves the PASID unattached and uncharged", () => {
    const { h, dev, user } = setup();
    const d = h.domainAlloc(dev, "paging");
    if (typeof d === "string") throw new Error(d);
    const p1 = h.pasidAlloc(dev, "first", user) as number;
    const p2 = h.pasidAlloc(dev, "second", user) as number;
    expect(h.pasidAttach(dev, p1, d)).toBe(0);
    expect(h.pasidAttach(dev, p2, d)).toBe("EBUSY");
    expect(user.current).toBe(1);
    expect(h.m.subsys.pasids.chargeOf(p2)).toBeNull();
    expect(dev.iommu?.group?.pasidArray.has(p2)).toBe(false);
    expect(user.eventsLocal.max).toBe(1);
    h.teardown();
  });

  it("SVA binds and user-space PASIDs of one user share the limit", () => {
    const { h, dev, user } = setup();
    const proc = h.sva.processCreate("carol-proc", user);
    if (typeof proc === "string") throw new Error(proc);
    expect(typeof h.sva.bind(dev, proc)).toBe("number");
    expect(user.current).toBe(1);
    const d = h.domainAlloc(dev, "paging");
    if (typeof d === "string") throw new Error(d);
    const p = h.pasidAlloc(dev, "carol's queue", user) as number;
    expect(h.pasidAttach(dev, p, d)).toBe("EBUSY");
    h.teardown();
    expect(user.current).toBe(0);
  });

  it("a kernel PASID (no user) is never charged", () => {
    const { h, dev } = setup();
    const root = h.m.subsys.charges?.root;
    const d = h.domainAlloc(dev, "paging");
    if (typeof d === "string") throw new Error(d);
    const p = h.pasidAlloc(dev, "kernel") as number;
    expect(h.pasidAttach(dev, p, d)).toBe(0);
    expect(root?.current).toBe(0);
    h.teardown();
  });
});
