// Diagnosing stale SMMU answers on a real SmmuV3: the cache named, and the command named is one
// that, submitted, does remove the entry.

import { CMDQ_OP, CR2_E2H, CR2_RECINVSID, EVT_ID } from "@iommu-sim/arm-smmu/format";
import { SmmuTestMachine, smmuTestMachine } from "@iommu-sim/arm-smmu/testing";
import { Device, DMA_READ, NO_PASID, XLATE_OK } from "@iommu-sim/iommu-core";
import { describe, expect, it } from "vitest";
import { diagnoseSmmuStale, sameConfig } from "./smmu-diagnose.js";
import type { MissingInvalidation } from "./violation.js";

const VA = 0x4000_0000;
const PA = 0x8000_0000;

/** The opcode of each command a diagnosis names. */
const OPS: Record<string, number> = {
  CMD_CFGI_STE: CMDQ_OP.CFGI_STE,
  CMD_CFGI_CD: CMDQ_OP.CFGI_CD,
  CMD_TLBI_NH_VA: CMDQ_OP.TLBI_NH_VA,
  CMD_TLBI_EL2_VA: CMDQ_OP.TLBI_EL2_VA,
  CMD_TLBI_S2_IPA: CMDQ_OP.TLBI_S2_IPA,
  CMD_TLBI_NH_ASID: CMDQ_OP.TLBI_NH_ASID,
  CMD_TLBI_S12_VMALL: CMDQ_OP.TLBI_S12_VMALL,
  CMD_TLBI_EL2_ASID: CMDQ_OP.TLBI_EL2_ASID,
  CMD_ATC_INV: CMDQ_OP.ATC_INV,
};

/** The brief's parameter names -> the command layouts' field names. */
const LAYOUT_NAME: Record<string, string> = {
  SID: "StreamID",
  SSID: "SubstreamID",
};

/** Submit the command a diagnosis names (with a CMD_SYNC). */
function submit(m: SmmuTestMachine, missing: MissingInvalidation): void {
  const op = OPS[missing.descriptor];
  if (op === undefined) throw new Error(`no opcode for ${missing.descriptor}`);
  const values: Record<string, number> = {};
  for (const [k, v] of Object.entries(missing.fields)) {
    const name = op === CMDQ_OP.TLBI_S2_IPA && k === "Address" ? "IPA" : (LAYOUT_NAME[k] ?? k);
    values[name] = typeof v === "string" ? Number(v) : v;
  }
  m.submit(SmmuTestMachine.command(op, values));
}

function machine(o: Parameters<typeof smmuTestMachine>[0] = {}) {
  const m = smmuTestMachine(o);
  const dev = new Device({ name: "dev4", rid: 4, sid: 4, ats: true, pasidBits: 8 });
  return { m, dev };
}

/** A stage 1 STE for SID 4 with CD 0 of ASID `asid` mapping VA -> PA. */
function s1(m: SmmuTestMachine, asid: number, ste: Record<string, number> = {}) {
  const pt = m.b.lpae(1, 12, 48);
  const at = pt.map(VA, PA);
  const cdt = m.b.cdTable(0);
  m.b.setCd(cdt, 0, m.b.s1CdFields(pt, asid));
  m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt.ptr, ...ste });
  return { pt, at, cdt };
}

const diagnose = (dev: Device, m: SmmuTestMachine, ssid = NO_PASID, viaAtc = false) =>
  diagnoseSmmuStale(dev, m.smmu, ssid, VA / 4096, DMA_READ, false, viaAtc);

describe("diagnoseSmmuStale", () => {
  it("names the STE cache when the cached STE differs from memory, and CMD_CFGI_STE removes it", () => {
    const { m, dev } = machine();
    m.b.setSte(m.st, 4, { Config: 4 });
    m.dma(4, -1, VA);
    m.b.setSte(m.st, 4, { Config: 0 });
    const { entry, missing } = diagnose(dev, m);
    expect(entry).toMatchObject({
      cache: "ste-cache",
      where: "smmu0",
      fields: { SID: "0x4", Config: 4 },
    });
    expect(missing).toEqual({ descriptor: "CMD_CFGI_STE", fields: { SID: "0x4" } });
    submit(m, missing);
    expect(m.dma(4, -1, VA).status).not.toBe(XLATE_OK);
  });

  it("names the CD cache when the cached CD differs, and CMD_CFGI_CD {SID, SSID} removes it", () => {
    const { m, dev } = machine();
    const { pt, cdt } = s1(m, 7);
    m.dma(4, -1, VA);
    m.b.setCd(cdt, 0, m.b.s1CdFields(pt, 8));
    const { entry, missing } = diagnose(dev, m);
    expect(entry).toMatchObject({ cache: "cd-cache", fields: { SID: "0x4", SSID: 0, ASID: 7 } });
    expect(missing).toEqual({ descriptor: "CMD_CFGI_CD", fields: { SID: "0x4", SSID: 0 } });
    submit(m, missing);
    expect(m.smmu.configCache.cdSize()).toBe(0);
  });

  it("names the TLB entry with its tags, and CMD_TLBI_NH_VA {VMID, ASID, Address, Leaf} removes it", () => {
    const { m, dev } = machine();
    const { at } = s1(m, 7);
    m.dma(4, -1, VA);
    m.mem.write64(at, 0, 0);
    const { entry, missing } = diagnose(dev, m);
    expect(entry).toEqual({
      cache: "tlb",
      where: "smmu0",
      fields: {
        VMID: 0,
        ASID: 7,
        el2: false,
        iova: "0x40000000",
        pa: "0x80000000",
        size: 4096,
        global: false,
        kind: "stage 1",
        granule: 12,
        level: 3,
        perm: "rwx",
      },
    });
    expect(missing).toEqual({
      descriptor: "CMD_TLBI_NH_VA",
      fields: { VMID: 0, ASID: 7, Address: "0x40000000", Leaf: 1 },
    });
    submit(m, missing);
    expect(m.dma(4, -1, VA).code).toBe(EVT_ID.F_TRANSLATION);
  });

  it("a global entry is invalidated under the ASID it answered", () => {
    const { m, dev } = machine();
    const pt = m.b.lpae(1, 12, 48);
    const at = pt.map(VA, PA, 3, { ng: false });
    const cdt = m.b.cdTable(0);
    m.b.setCd(cdt, 0, m.b.s1CdFields(pt, 9));
    m.b.setSte(m.st, 4, { Config: 5, S1ContextPtr: cdt.ptr });
    m.dma(4, -1, VA);
    m.mem.write64(at, 0, 0);
    const { entry, missing } = diagnose(dev, m);
    expect(entry.fields).toMatchObject({ global: true, ASID: 0 });
    expect(missing.fields).toMatchObject({ ASID: 9 });
    submit(m, missing);
    expect(m.dma(4, -1, VA).status).not.toBe(XLATE_OK);
  });

  it("a stage 2 only entry needs CMD_TLBI_S2_IPA {VMID, Address}", () => {
    const { m, dev } = machine();
    const pt = m.b.lpae(2, 12, 40);
    m.b.setSte(m.st, 4, { Config: 6, ...m.b.s2SteFields(pt, 5) });
    const at = pt.map(VA, PA);
    m.dma(4, -1, VA);
    m.mem.write64(at, 0, 0);
    const { entry, missing } = diagnose(dev, m);
    expect(entry.fields).toMatchObject({ VMID: 5, ASID: null, kind: "stage 2" });
    expect(missing).toEqual({
      descriptor: "CMD_TLBI_S2_IPA",
      fields: { VMID: 5, Address: "0x40000000" },
    });
    submit(m, missing);
    expect(m.dma(4, -1, VA).status).not.toBe(XLATE_OK);
  });

  it("an EL2 StreamWorld entry needs CMD_TLBI_EL2_VA (with E2H, under its ASID)", () => {
    for (const e2h of [false, true]) {
      const { m, dev } = machine({ cr2: CR2_RECINVSID | (e2h ? CR2_E2H : 0) });
      const { at } = s1(m, 3, { STRW: 2 });
      m.dma(4, -1, VA);
      m.mem.write64(at, 0, 0);
      const { entry, missing } = diagnose(dev, m);
      expect(entry.fields).toMatchObject({ VMID: null, el2: true });
      expect(missing.descriptor).toBe("CMD_TLBI_EL2_VA");
      expect(missing.fields.ASID).toBe(e2h ? 3 : 0);
      submit(m, missing);
      expect(m.dma(4, -1, VA).status).not.toBe(XLATE_OK);
    }
  });

  it("a walk-cache entry on the path needs a non-leaf CMD_TLBI_NH_VA (stage 1) or CMD_TLBI_S2_IPA (stage 2) over its span", () => {
    const { m, dev } = machine();
    const { pt } = s1(m, 7);
    m.dma(4, -1, VA);
    // A leaf-only invalidation leaves the walk cache; the level 2 table is then replaced.
    m.submit(SmmuTestMachine.command(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 }));
    const l2 = pt.entryAddr(VA, 2);
    m.mem.write64(l2, 0, 0);
    const { entry, missing } = diagnose(dev, m);
    expect(entry).toMatchObject({ cache: "walk-cache", fields: { stage: 1, ASID: 7, level: 2 } });
    expect(missing).toEqual({
      descriptor: "CMD_TLBI_NH_VA",
      fields: { VMID: 0, ASID: 7, Address: "0x40000000", Leaf: 0 },
    });
    submit(m, missing);
    expect(m.smmu.walkCache.size()).toBe(0);

    const n = machine();
    const s2 = n.m.b.lpae(2, 12, 40);
    n.m.b.setSte(n.m.st, 4, { Config: 6, ...n.m.b.s2SteFields(s2, 5) });
    s2.map(VA, PA);
    n.m.dma(4, -1, VA);
    n.m.submit(SmmuTestMachine.command(CMDQ_OP.TLBI_S2_IPA, { VMID: 5, IPA: VA, Leaf: 1 }));
    const d = diagnose(n.dev, n.m);
    expect(d.entry.fields).toMatchObject({ stage: 2, ASID: null, VMID: 5, level: 2 });
    expect(d.missing).toEqual({
      descriptor: "CMD_TLBI_S2_IPA",
      fields: { VMID: 5, Address: "0x40000000", Leaf: 0 },
    });
    submit(n.m, d.missing);
    expect(n.m.smmu.walkCache.size()).toBe(0);
  });

  it("a TLB entry refilled through a walk-cache entry whose table is gone names the walk cache", () => {
    const { m, dev } = machine();
    const { pt } = s1(m, 7);
    m.dma(4, -1, VA);
    // The level 2 descriptor goes (its table freed, its leaves left as they were), the TLB is
    // invalidated leaf-only, and a DMA refills the TLB through the walk cache.
    m.mem.write64(pt.entryAddr(VA, 2), 0, 0);
    m.submit(SmmuTestMachine.command(CMDQ_OP.TLBI_NH_VA, { ASID: 7, Address: VA, Leaf: 1 }));
    expect(m.dma(4, -1, VA).status).toBe(XLATE_OK);
    expect(m.smmu.tlb.size()).toBe(1);
    const { entry, missing } = diagnose(dev, m);
    expect(entry).toMatchObject({ cache: "walk-cache", fields: { level: 2 } });
    expect(missing.fields).toMatchObject({ Leaf: 0 });
    submit(m, missing);
    expect(m.smmu.tlb.size()).toBe(0);
    expect(m.dma(4, -1, VA).status).not.toBe(XLATE_OK);
    // While the tables still reach the cached table, the TLB entry is the one named.
    const n = machine();
    const t = s1(n.m, 7);
    n.m.dma(4, -1, VA);
    n.m.mem.write64(t.at, 0, 0);
    expect(diagnose(n.dev, n.m).entry.cache).toBe("tlb");
  });

  it("names the device's ATC entry when the DMA used it, with CMD_ATC_INV {SID, SSV, SSID, Address, Size}", () => {
    const { m, dev } = machine();
    const atc = dev.atc;
    if (atc === null) throw new Error("no ATC");
    atc.insert(NO_PASID, VA / 4096, 21, 0x20_0000, 3);
    atc.insert(5, VA / 4096, 12, PA, 1);
    let d = diagnose(dev, m, NO_PASID, true);
    expect(d.entry).toEqual({
      cache: "atc",
      where: "dev4",
      fields: {
        SID: "0x4",
        pasid: null,
        iova: "0x40000000",
        pa: "0x200000",
        size: 0x20_0000,
        perm: "rw-",
      },
    });
    expect(d.missing).toEqual({
      descriptor: "CMD_ATC_INV",
      fields: { SID: "0x4", SSV: 0, SSID: 0, Address: "0x40000000", Size: 9 },
    });
    d = diagnose(dev, m, 5, true);
    expect(d.missing.fields).toEqual({
      SID: "0x4",
      SSV: 1,
      SSID: 5,
      Address: "0x40000000",
      Size: 0,
    });
    // The command reaches the device and removes the entry.
    m.smmu.connect(dev);
    submit(m, d.missing);
    expect(atc.entries().map((e) => e.pasid)).toEqual([NO_PASID]);
  });

  it("with nothing cached for the page says unknown", () => {
    const { m, dev } = machine();
    s1(m, 7);
    expect(diagnose(dev, m)).toEqual({
      entry: { cache: "unknown", where: "smmu0", fields: { SID: "0x4" } },
      missing: { descriptor: "unknown", fields: {} },
    });
  });
});

describe("sameConfig", () => {
  it("compares configuration fields, walk ranges included, and ignores bookkeeping and memos", () => {
    const a = { sid: 1, fetchAddr: 5, memoWords: [1], config: 5, r: { ttb: 0x1000 } };
    expect(sameConfig(a, { ...a, sid: 2, fetchAddr: 6, memoWords: [2] })).toBe(true);
    expect(sameConfig(a, { ...a, config: 6 })).toBe(false);
    expect(sameConfig(a, { ...a, r: { ttb: 0x2000 } })).toBe(false);
  });
});
