// Check 5 on a real SmmuV3: STE and CD updates are hitless, torn ones are reported.

import { CD, EVT_ID, STE } from "@iommu-sim/arm-smmu/format";
import { type SmmuTestMachine, smmuTestMachine } from "@iommu-sim/arm-smmu/testing";
import { Device } from "@iommu-sim/iommu-core";
import { encode, type FieldValues } from "@iommu-sim/iommu-core/platform";
import { describe, expect, it } from "vitest";
import { SmmuEntryWatch } from "./smmu-hitless.js";

const VA = 0x4000_0000;
const PA = 0x8000_0000;

function setup(o: Parameters<typeof smmuTestMachine>[0] = {}) {
  const m = smmuTestMachine(o);
  const dev = new Device({ name: "dev3", rid: 3, sid: 3 });
  return { m, dev, watch: new SmmuEntryWatch() };
}

/** Store qword `q` of the 16 words `w` into the entry at `at`. */
function put(m: SmmuTestMachine, at: number, w: Uint32Array, q: number): void {
  m.mem.write64(at + 8 * q, w[2 * q] as number, w[2 * q + 1] as number);
}

/** A stage 1 STE's words over CD table `ptr`. */
function s1Ste(ptr: number, extra: FieldValues = {}): Uint32Array {
  return encode(STE, { V: 1, Config: 5, S1ContextPtr: ptr, ...extra });
}

/** A CD table with CD `ssid` (ASID `asid`) over a fresh stage 1 table mapping VA. */
function cdTable(m: SmmuTestMachine, ssid: number, asid: number, cdMax = 0) {
  const pt = m.b.lpae(1, 12, 48);
  pt.map(VA, PA);
  const t = m.b.cdTable(cdMax);
  const at = m.b.setCd(t, ssid, m.b.s1CdFields(pt, asid));
  return { pt, t, at };
}

describe("SmmuEntryWatch: STEs", () => {
  it("a hitless STE update (unused qwords first, then the critical one) reports nothing", () => {
    const { m, dev, watch } = setup();
    const steAt = m.b.setSte(m.st, 3, { Config: 0 });
    const x = cdTable(m, 0, 1);
    const y = cdTable(m, 0, 2);
    watch.watch(dev, m.smmu);
    // abort -> stage 1: qwords 1-7 are unused by an abort STE, qword 0 switches.
    const target = s1Ste(x.t.ptr);
    for (let q = 7; q >= 0; q--) put(m, steAt, target, q);
    expect(watch.settle()).toEqual([]);
    // One used qword changes: a single 64-bit store.
    put(m, steAt, s1Ste(y.t.ptr), 0);
    expect(watch.settle()).toEqual([]);
  });

  it("a torn STE update (a breaking change written qword 0 first, no V = 0) is reported", () => {
    const { m, dev, watch } = setup();
    const x = cdTable(m, 0, 1);
    const y = cdTable(m, 0, 2, 4);
    const steAt = m.b.setSte(m.st, 3, { Config: 5, S1ContextPtr: x.t.ptr });
    watch.watch(dev, m.smmu);
    // The new STE differs in qword 0 (S1ContextPtr, S1CDMax) and qword 1 (S1DSS).
    const target = s1Ste(y.t.ptr, { S1CDMax: 4, S1DSS: 2 });
    put(m, steAt, target, 0);
    put(m, steAt, target, 1);
    const torn = watch.settle();
    expect(torn).toHaveLength(1);
    expect(torn[0]).toMatchObject({
      device: "dev3",
      unit: "smmu0",
      kind: "ste",
      sid: 3,
      ssid: -1,
      pasid: null,
      illegal: null,
    });
    expect(torn[0]?.seen).toContain("S1CDMax=4");
    expect(torn[0]?.seen).toContain("S1DSS=terminate(0)");
    expect(torn[0]?.before).toContain(`S1ContextPtr=0x${x.t.ptr.toString(16)}`);
    expect(torn[0]?.after).toContain("S1DSS=SSID0(2)");
    // In short: the qword 0 fields were stored, the qword 1 one not yet.
    expect(torn[0]?.changed).toBe(
      `already new: S1ContextPtr (qword 0) 0x${x.t.ptr.toString(16)} -> 0x${y.t.ptr.toString(16)}; S1CDMax (qword 0) 0 -> 4; still old: S1DSS (qword 1) terminate(0), not yet SSID0(2)`,
    );
    // Nothing is left over for the next operation.
    expect(watch.settle()).toEqual([]);
  });

  it("the same change through V = 0 (the kernel's breaking update) reports nothing", () => {
    const { m, dev, watch } = setup();
    const x = cdTable(m, 0, 1);
    const y = cdTable(m, 0, 2, 4);
    const steAt = m.b.setSte(m.st, 3, { Config: 5, S1ContextPtr: x.t.ptr });
    watch.watch(dev, m.smmu);
    const target = s1Ste(y.t.ptr, { S1CDMax: 4, S1DSS: 2 });
    m.mem.write64(steAt, 0, 0);
    put(m, steAt, target, 1);
    put(m, steAt, target, 0);
    expect(watch.settle()).toEqual([]);
  });

  it("a valid but illegal STE seen between stores is reported with its event", () => {
    const { m, dev, watch } = setup();
    const pt = m.b.lpae(2, 12, 40);
    const steAt = m.b.setSte(m.st, 3, { Config: 6, ...m.b.s2SteFields(pt, 1) });
    watch.watch(dev, m.smmu);
    const lo = m.mem.read32(steAt + 16);
    const hi = m.mem.read32(steAt + 20);
    // S2TG = 3 is reserved: C_BAD_STE while it lasts.
    m.mem.write64(steAt + 16, lo, (hi | (3 << 14)) >>> 0);
    m.mem.write64(steAt + 16, lo, hi);
    const torn = watch.settle();
    expect(torn).toHaveLength(1);
    expect(torn[0]?.illegal).toBe(EVT_ID.C_BAD_STE);
    expect(torn[0]?.seen).toMatch(/^C_BAD_STE: V=1 Config=S2-only\(6\)/);
  });

  it("a change the SMMU did not show (a 2-level STE not fetched yet) becomes the new before at settle", () => {
    const { m, dev, watch } = setup({ streamTable: "2lvl", log2size: 16 });
    const a = m.b.lpae(2, 12, 40);
    // No level 2 table yet: the SMMU has no STE of SID 3 to fetch, and shows none of the stores
    // that install one.
    watch.watch(dev, m.smmu);
    const steAt = m.b.setSte(m.st, 3, { Config: 6, ...m.b.s2SteFields(a, 1) });
    expect(watch.settle()).toEqual([]);
    m.dma(3, -1, VA);
    // Rewriting qword 0 unchanged shows the old stage 2 STE, then qword 2 the new VMID.
    const target = encode(STE, { V: 1, Config: 6, ...m.b.s2SteFields(a, 2) });
    put(m, steAt, target, 0);
    put(m, steAt, target, 2);
    expect(watch.settle()).toEqual([]);
    // And a torn one is still caught, against the right "before".
    const b = m.b.lpae(2, 12, 40);
    const next = encode(STE, { V: 1, Config: 6, ...m.b.s2SteFields(b, 3) });
    put(m, steAt, next, 2);
    put(m, steAt, next, 3);
    const torn = watch.settle();
    expect(torn).toHaveLength(1);
    expect(torn[0]?.before).toContain("S2VMID=0x2");
    expect(torn[0]?.after).toContain("S2VMID=0x3");
  });

  it("unwatched StreamIDs are ignored, and unwatch removes the SMMU's hook", () => {
    const { m, dev, watch } = setup();
    const x = cdTable(m, 0, 1);
    const y = cdTable(m, 0, 2, 4);
    const at3 = m.b.setSte(m.st, 3, { Config: 5, S1ContextPtr: x.t.ptr });
    const at4 = m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: x.t.ptr });
    watch.watch(dev, m.smmu);
    watch.watch(dev, m.smmu);
    const target = s1Ste(y.t.ptr, { S1CDMax: 4, S1DSS: 2 });
    put(m, at4, target, 0);
    put(m, at4, target, 1);
    expect(watch.settle()).toEqual([]);
    watch.unwatch(dev);
    expect(m.mem.onWrite).toBeNull();
    put(m, at3, target, 0);
    put(m, at3, target, 1);
    expect(watch.settle()).toEqual([]);
  });
});

describe("SmmuEntryWatch: CDs", () => {
  /** A stage 1 STE for SID 3 over CD `ssid` (ASID 1), fetched by one DMA, then watched. */
  function cdSetup(ssid = 0, cdMax = 0) {
    const s = setup();
    const x = cdTable(s.m, ssid, 1, cdMax);
    s.m.b.setSte(s.m.st, 3, {
      Config: 5,
      S1ContextPtr: x.t.ptr,
      S1CDMax: cdMax,
      S1DSS: cdMax > 0 ? 1 : 0,
    });
    return { ...s, x };
  }

  /** CD words for TTB0 of table `pt` and ASID `asid`. */
  function cdWords(m: SmmuTestMachine, pt: ReturnType<typeof cdTable>["pt"], asid: number) {
    return encode(CD, { V: 1, AA64: 1, R: 1, A: 1, ...m.b.s1CdFields(pt, asid) });
  }

  it("a one-qword CD change (ASID) is hitless; TTB0 and ASID without V = 0 is torn", () => {
    const { m, dev, watch, x } = cdSetup();
    // Fetched and cached before the watch: its stores are shown all the same.
    m.dma(3, -1, VA);
    watch.watch(dev, m.smmu);
    put(m, x.at, cdWords(m, x.pt, 2), 0);
    expect(watch.settle()).toEqual([]);
    const other = m.b.lpae(1, 12, 48);
    const target = cdWords(m, other, 3);
    put(m, x.at, target, 1);
    put(m, x.at, target, 0);
    const torn = watch.settle();
    expect(torn).toHaveLength(1);
    expect(torn[0]).toMatchObject({ kind: "cd", sid: 3, ssid: 0, pasid: 0, illegal: null });
    expect(torn[0]?.seen).toContain("ASID=0x2");
    expect(torn[0]?.seen).toContain(`TTB0=0x${other.root.toString(16)}`);
    expect(torn[0]?.after).toContain("ASID=0x3");
    expect(torn[0]?.changed).toMatch(
      /^already new: TTB0 \(qword 1\) 0x[0-9a-f]+ -> 0x[0-9a-f]+; still old: ASID \(qword 0\) 0x2, not yet 0x3$/,
    );
  });

  it("a CD change through V = 0 reports nothing", () => {
    const { m, dev, watch, x } = cdSetup();
    m.dma(3, -1, VA);
    watch.watch(dev, m.smmu);
    const target = cdWords(m, m.b.lpae(1, 12, 48), 3);
    m.mem.write64(x.at, 0, 0);
    put(m, x.at, target, 1);
    put(m, x.at, target, 0);
    expect(watch.settle()).toEqual([]);
  });

  it("a CD the SMMU cached is learnt at settle and its torn update reported with its SubstreamID", () => {
    const { m, dev, watch, x } = cdSetup(3, 4);
    watch.watch(dev, m.smmu);
    m.dma(3, 3, VA);
    expect(watch.settle()).toEqual([]);
    const target = cdWords(m, m.b.lpae(1, 12, 48), 5);
    put(m, x.at, target, 1);
    put(m, x.at, target, 0);
    const torn = watch.settle();
    expect(torn).toHaveLength(1);
    expect(torn[0]).toMatchObject({ kind: "cd", ssid: 3, pasid: 3 });
  });

  it("a CD written before any settle knew it has no before: only an illegal view of it is reported", () => {
    const { m, dev, watch, x } = cdSetup(3, 4);
    watch.watch(dev, m.smmu);
    m.dma(3, 3, VA);
    const target = cdWords(m, m.b.lpae(1, 12, 48), 5);
    put(m, x.at, target, 1);
    put(m, x.at, target, 0);
    expect(watch.settle()).toEqual([]);
    // AA64 = 0 is ILLEGAL (C_BAD_CD) for a while.
    const bad = new Uint32Array(target);
    bad[1] = ((bad[1] as number) & ~(1 << 9)) >>> 0;
    put(m, x.at, bad, 0);
    put(m, x.at, target, 0);
    const torn = watch.settle();
    expect(torn).toHaveLength(1);
    expect(torn[0]?.illegal).toBe(EVT_ID.C_BAD_CD);
    expect(torn[0]?.changed).toBe("other: AA64 (qword 0) 0, before and after 1");
  });

  it("a CD view seen while the STE above it is not the stage 1 configuration does not count", () => {
    const { m, dev, watch, x } = cdSetup();
    m.dma(3, -1, VA);
    watch.watch(dev, m.smmu);
    // The STE goes to stage 2 only (breaking, through V = 0); the old CD stays where it was.
    const s2 = m.b.lpae(2, 12, 40);
    const steAt = m.smmu.steAddress(3);
    const ste = encode(STE, { V: 1, Config: 6, ...m.b.s2SteFields(s2, 1) });
    m.mem.write64(steAt, 0, 0);
    for (let q = 7; q >= 0; q--) put(m, steAt, ste, q);
    expect(watch.settle()).toEqual([]);
    const target = cdWords(m, m.b.lpae(1, 12, 48), 3);
    put(m, x.at, target, 1);
    put(m, x.at, target, 0);
    expect(watch.settle()).toEqual([]);
  });
});
