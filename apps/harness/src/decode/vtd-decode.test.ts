// Tests of the VT-d decoder: documents of legacy and scalable images built as Linux lays tables
// out, checked exactly (coalescing included); random driver mappings against a reference; every
// kind of malformed entry reported, never thrown.

import { fc, test } from "@fast-check/vitest";
import type { DmarDomain, IntelIommu } from "@iommu-sim/intel-vtd/driver";
import {
  CONTEXT_ENTRY,
  FS_PTE,
  ROOT_ENTRY,
  SM_CONTEXT_ENTRY,
  SS_PTE,
  VTD_FR,
  VTD_REG,
} from "@iommu-sim/intel-vtd/format";
import { LEGACY_VTD_CAPS, type VtdUnit, vtdCapValue, vtdEcapValue } from "@iommu-sim/intel-vtd/hw";
import { VtdMachine, type VtdTestMachine, xlateFresh } from "@iommu-sim/intel-vtd/testing";
import {
  type Device,
  IOMMU_READ,
  IOMMU_WRITE,
  iommuAllocGlobalPasid,
  iommuAttachDevice,
  iommuAttachDevicePasid,
  iommuGetDomainForDev,
  iommuMap,
  iommuPagingDomainAlloc,
} from "@iommu-sim/iommu-core";
import { PhysMemory, saveElfCore, toHex } from "@iommu-sim/iommu-core/platform";
import { afterAll, describe, expect, it } from "vitest";
import {
  coalesce,
  fsRun,
  fsTable,
  GuestFsTable,
  garbageImage,
  machine,
  mapRun,
  type RefRun,
  RW,
  rtaddrOf,
  SZ_1G,
  SZ_2M,
  SZ_4K,
  saveImage,
  ssRun,
  ssTable,
  tempDir,
} from "../../test/vtd-images.js";
import { ImageInputError, loadMemoryImage, readImageInput } from "./image-input.js";
import {
  decodeVtd,
  formatBdf,
  formatVtdDecode,
  lookupVtdTranslation,
  VTD_DECODE_LIMITS,
  VTD_PERMISSIVE_CAPS,
  type VtdDecodeDocument,
  type VtdDecodeOptions,
  vtdFaultName,
  vtdRtaddrMode,
} from "./vtd-decode.js";
import { VtdTranslator, vtdCapsFromRegisters } from "./vtd-translate.js";

/** Decode and fail the test on a refused RTADDR. */
function decodeOk(mem: PhysMemory, options: VtdDecodeOptions): VtdDecodeDocument {
  const doc = decodeVtd(mem, options);
  if (typeof doc === "string") throw new Error(doc);
  return doc;
}

/** The document without the raw entries, for whole-document comparisons. */
function skeleton(doc: VtdDecodeDocument) {
  return {
    ...doc,
    devices: doc.devices.map(({ rootEntry, contextEntry, ...dev }) => ({
      ...dev,
      translations: dev.translations.map(({ pasidDirEntry, pasidEntry, ...t }) => t),
    })),
  };
}

/**
 * The slow, obvious count of table pages under `root`: every present non-leaf entry's table, once
 * per reference. `present` and `leaf` say what an entry at a level is.
 */
function countTables(mem: PhysMemory, root: number, levels: number, fs: boolean): number {
  let n = 1;
  for (let i = 0; i < 512 && levels > 1; i++) {
    const v = mem.read64Big(root + i * 8);
    const present = fs ? (v & 1n) !== 0n : (v & 3n) !== 0n;
    if (!present || (v & 0x80n) !== 0n) continue;
    const next = Number(v & 0x000ffffffffff000n);
    n += countTables(mem, next, levels - 1, fs);
  }
  return n;
}

const hex = toHex;
const tmp = tempDir();
afterAll(() => tmp.cleanup());
let n = 0;

describe("decodeVtd, legacy mode", () => {
  function legacyImage() {
    const m = machine(false);
    const { b, rta, mem } = m;
    const runs4: RefRun[] = [];
    const ss4 = ssTable(m, 2);
    mapRun(ss4, runs4, 0x1000, 0x8000_0000, SZ_4K, 4, RW);
    // Adjacent with the next output address but read-only: a separate run.
    mapRun(ss4, runs4, 0x5000, 0x8000_4000, SZ_4K, 1, IOMMU_READ);
    // Two 2 MiB leaves that continue each other: one run.
    mapRun(ss4, runs4, 0x4000_0000, 0x1_0000_0000, SZ_2M, 2, RW);
    mapRun(ss4, runs4, 0x80_0000_0000, 0x2_4000_0000, SZ_1G, 1, IOMMU_WRITE);
    b.setContext(rta, 0x10, { TT: 0, AW: 2, DID: 5, SLPTPTR: ss4.rootPa });
    b.setContext(rta, 0x11, { TT: 1, AW: 2, DID: 5, SLPTPTR: ss4.rootPa });
    b.setContext(rta, 0x100, { TT: 2, AW: 2, DID: 7 });
    const bad = b.setContext(rta, 0x101, { TT: 3, AW: 2, DID: 8 });
    const runs3: RefRun[] = [];
    const ss3 = ssTable(m, 1);
    mapRun(ss3, runs3, 0x7f_ffff_f000, 0x1234_5000, SZ_4K, 1, RW);
    b.setContext(rta, 0x2ff, { AW: 1, DID: 9, SLPTPTR: ss3.rootPa });
    const runs5: RefRun[] = [];
    const ss5 = ssTable(m, 3);
    mapRun(ss5, runs5, 2 ** 48 + 0x2000, 0x5000, SZ_4K, 1, RW);
    b.setContext(rta, 0x300, { AW: 3, DID: 10, SLPTPTR: ss5.rootPa });
    // Bit 71 is reserved in a legacy context entry.
    const reserved = b.setContext(rta, 0x400, { AW: 2, DID: 11, SLPTPTR: ss4.rootPa });
    mem.write32(reserved + 8, mem.read32(reserved + 8) | 0x80);
    return { m, ss4, ss3, ss5, runs4, runs3, runs5, bad, reserved };
  }

  it("lists every present device, its translation and each page table once, coalesced", () => {
    const { m, ss4, ss3, ss5, runs4, runs3, runs5, bad, reserved } = legacyImage();
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false) });
    const ss = (did: number, levels: number, root: number) => ({
      pasid: null,
      type: "second-stage",
      did,
      levels,
      pageTable: hex(root),
    });
    expect(skeleton(doc)).toEqual({
      arch: "vtd",
      mode: "legacy",
      rootTable: hex(m.rta),
      rtaddr: hex(m.rta),
      truncated: false,
      devices: [
        {
          bdf: "00:02.0",
          sid: 0x10,
          deviceTlb: false,
          truncated: false,
          translations: [ss(5, 4, ss4.rootPa)],
        },
        {
          bdf: "00:02.1",
          sid: 0x11,
          deviceTlb: true,
          truncated: false,
          translations: [ss(5, 4, ss4.rootPa)],
        },
        {
          bdf: "01:00.0",
          sid: 0x100,
          deviceTlb: false,
          truncated: false,
          translations: [{ pasid: null, type: "pass-through", did: 7, levels: 0, pageTable: null }],
        },
        {
          bdf: "01:00.1",
          sid: 0x101,
          deviceTlb: false,
          truncated: false,
          translations: [
            {
              pasid: null,
              type: "blocked",
              did: 8,
              levels: 0,
              pageTable: null,
              faultReason: VTD_FR.CONTEXT_INVALID,
              faultName: "CONTEXT_INVALID",
            },
          ],
        },
        {
          bdf: "02:1f.7",
          sid: 0x2ff,
          deviceTlb: false,
          truncated: false,
          translations: [ss(9, 3, ss3.rootPa)],
        },
        {
          bdf: "03:00.0",
          sid: 0x300,
          deviceTlb: false,
          truncated: false,
          translations: [ss(10, 5, ss5.rootPa)],
        },
        {
          bdf: "04:00.0",
          sid: 0x400,
          deviceTlb: false,
          truncated: false,
          translations: [
            {
              pasid: null,
              type: "blocked",
              did: 11,
              levels: 0,
              pageTable: null,
              faultReason: VTD_FR.CONTEXT_ENTRY_RESERVED,
              faultName: "CONTEXT_ENTRY_RESERVED",
            },
          ],
        },
      ],
      pageTables: {
        [hex(ss4.rootPa)]: {
          stage: "second-stage",
          levels: 4,
          root: hex(ss4.rootPa),
          tablePages: countTables(m.mem, ss4.rootPa, 4, false),
          truncated: false,
          mappings: coalesce(runs4),
        },
        [hex(ss3.rootPa)]: {
          stage: "second-stage",
          levels: 3,
          root: hex(ss3.rootPa),
          tablePages: 3,
          truncated: false,
          mappings: coalesce(runs3),
        },
        [hex(ss5.rootPa)]: {
          stage: "second-stage",
          levels: 5,
          root: hex(ss5.rootPa),
          tablePages: 5,
          truncated: false,
          mappings: coalesce(runs5),
        },
      },
      problems: [
        {
          address: hex(bad),
          structure: "context entry of 01:00.1",
          message: "TT 3 is reserved",
          faultReason: VTD_FR.CONTEXT_INVALID,
        },
        {
          address: hex(reserved),
          structure: "context entry of 04:00.0",
          message: "reserved bits set: 71",
          faultReason: VTD_FR.CONTEXT_ENTRY_RESERVED,
        },
      ],
    });
    // The coalescing itself, spelled out.
    expect(doc.pageTables[hex(ss4.rootPa)]?.mappings).toEqual([
      { iova: "0x1000", pa: "0x80000000", size: 0x4000, r: true, w: true, snp: false },
      { iova: "0x5000", pa: "0x80004000", size: 0x1000, r: true, w: false, snp: false },
      { iova: "0x40000000", pa: "0x100000000", size: 0x40_0000, r: true, w: true, snp: false },
      { iova: "0x8000000000", pa: "0x240000000", size: SZ_1G, r: false, w: true, snp: false },
    ]);
    expect(doc.pageTables[hex(ss5.rootPa)]?.mappings[0]?.iova).toBe("0x1000000002000");
  });

  it("gives each device its root and context entry: address, raw qwords and spec fields", () => {
    const { m, ss4 } = legacyImage();
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false) });
    const ctp = Number(m.b.read(ROOT_ENTRY, m.rta).CTP);
    const dev = doc.devices[0];
    expect(dev?.rootEntry).toEqual({
      layout: "root-entry",
      address: hex(m.rta),
      raw: [hex(ctp + 1, 16), hex(0, 16)],
      fields: { P: 1, CTP: hex(ctp) },
    });
    expect(dev?.contextEntry).toEqual({
      layout: "context-entry",
      address: hex(ctp + 0x10 * 16),
      raw: [hex(ss4.rootPa + 1, 16), hex((5 << 8) | 2, 16)],
      fields: { P: 1, FPD: 0, TT: 0, SLPTPTR: hex(ss4.rootPa), AW: 2, AVAIL: 0, DID: 5 },
    });
  });

  it("--device and --pasid filters: one device; a PASID leaves no legacy translation", () => {
    const { m, ss3 } = legacyImage();
    const one = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false), device: 0x2ff });
    expect(one.devices.map((d) => d.bdf)).toEqual(["02:1f.7"]);
    expect(Object.keys(one.pageTables)).toEqual([hex(ss3.rootPa)]);
    const none = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false), pasid: 0 });
    expect(none.devices).toEqual([]);
    expect(none.pageTables).toEqual({});
    const absent = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false), device: 0x1234 });
    expect(absent.devices).toEqual([]);
  });

  it("mappings: false skips page-table enumeration", () => {
    const { m } = legacyImage();
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false), mappings: false });
    expect(doc.pageTables).toEqual({});
    expect(doc.devices).toHaveLength(7);
  });

  it("capability-dependent context rules: AW outside SAGAW, TT 2 without PT, TT 1 without DT", () => {
    const { m } = legacyImage();
    const caps = { ...LEGACY_VTD_CAPS, passThrough: false, deviceTlb: false, sagaw: 0b100 };
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false), caps });
    const types = Object.fromEntries(
      doc.devices.map((d) => [d.bdf, d.translations[0]?.faultName ?? d.translations[0]?.type]),
    );
    expect(types).toEqual({
      "00:02.0": "second-stage",
      "00:02.1": "CONTEXT_INVALID",
      "01:00.0": "CONTEXT_INVALID",
      "01:00.1": "CONTEXT_INVALID",
      "02:1f.7": "CONTEXT_INVALID",
      "03:00.0": "CONTEXT_INVALID",
      "04:00.0": "CONTEXT_ENTRY_RESERVED",
    });
    const messages = doc.problems.map((p) => p.message);
    expect(messages).toContain("TT 1 (device-TLB) needs ECAP.DT");
    expect(messages).toContain("TT 2 (pass-through) needs ECAP.PT");
    expect(messages).toContain("AW 1 is not a supported AGAW (SAGAW 0x4)");
    expect(doc.devices[1]?.deviceTlb).toBe(false);
  });

  it("a root entry with reserved bits, or a pointer beyond HAW or memory, hides its bus", () => {
    const m = machine(false);
    const ss = ssTable(m, 2);
    m.b.setContext(m.rta, 0x0010, { AW: 2, DID: 1, SLPTPTR: ss.rootPa });
    m.b.setContext(m.rta, 0x0110, { AW: 2, DID: 1, SLPTPTR: ss.rootPa });
    m.b.setContext(m.rta, 0x0210, { AW: 2, DID: 1, SLPTPTR: ss.rootPa });
    m.mem.write32(m.rta + 16 + 8, 1); // bit 64 of bus 1's root entry: reserved
    m.b.write(ROOT_ENTRY, m.rta + 32, { P: 1, CTP: 2 ** 41 }); // bus 2: above a 40-bit HAW
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false), haw: 40 });
    expect(doc.devices.map((d) => d.bdf)).toEqual(["00:02.0"]);
    expect(doc.problems).toEqual([
      {
        address: hex(m.rta + 16),
        structure: "root entry of bus 01",
        message:
          "reserved bits set: 64 (bit 64 is UP in a scalable-mode root entry: should RTADDR.TTM be 1?)",
        faultReason: VTD_FR.ROOT_ENTRY_RESERVED,
      },
      {
        address: hex(m.rta + 32),
        structure: "root entry of bus 02",
        message: "context-table pointer 0x20000000000 is at or above the host address width",
        faultReason: VTD_FR.ROOT_ENTRY_RESERVED,
      },
    ]);
    const small = new PhysMemory({ paBits: 32 });
    small.write64(0x1000, 1, 0x10); // CTP 0x10_0000_0000: beyond a 32-bit memory
    const far = decodeOk(small, { rtaddr: 0x1000 });
    expect(far.problems).toEqual([
      {
        address: "0x1000",
        structure: "root entry of bus 00",
        message: "context-table pointer 0x1000000000 is outside memory",
        faultReason: VTD_FR.CONTEXT_TABLE_ACCESS,
      },
    ]);
  });

  it("a context entry with SLPTPTR beyond HAW is blocked as reserved", () => {
    const m = machine(false);
    const at = m.b.setContext(m.rta, 0x20, { AW: 2, DID: 3, SLPTPTR: 2 ** 45 });
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false), haw: 44 });
    expect(doc.devices[0]?.translations[0]).toMatchObject({
      type: "blocked",
      faultReason: VTD_FR.CONTEXT_ENTRY_RESERVED,
    });
    expect(doc.problems[0]).toMatchObject({
      address: hex(at),
      message: expect.stringMatching(/SLPTPTR 0x200000000000/),
    });
  });
});

describe("decodeVtd, scalable mode", () => {
  function scalableImage() {
    const m = machine(true);
    const { b, rta } = m;
    // 00:03.0: first stage for requests without PASID, then second stage, pass-through, nested,
    // and an entry with a reserved PGTT.
    const dir = b.setSmContext(rta, 0x18, { DTE: 1, PASIDE: 1, PRE: 1 });
    const fsRuns: RefRun[] = [];
    const fs = fsTable(m, 4);
    mapRun(fs, fsRuns, 0x1000, 0x2_0000_0000, SZ_4K, 16, RW);
    mapRun(fs, fsRuns, 0x40_0000, 0x3_0000_0000, SZ_2M, 1, IOMMU_READ);
    mapRun(fs, fsRuns, 0x4000_0000, 0x4_0000_0000, SZ_1G, 1, RW);
    b.setPasidEntry(dir, 0, { PGTT: 1, DID: 2, AW: 2, FLPTR: fs.rootPa });
    const ssRuns: RefRun[] = [];
    const ss = ssTable(m, 2);
    mapRun(ss, ssRuns, 0x1000_0000, 0x5_0000_0000, SZ_4K, 4, RW);
    b.setPasidEntry(dir, 5, { PGTT: 2, DID: 3, AW: 2, SLPTPTR: ss.rootPa });
    b.setPasidEntry(dir, 6, { PGTT: 4, DID: 1, AW: 2 });
    const gss = ssTable(m, 2);
    const guest = new GuestFsTable(b, gss, 4, 0x10_0000_0000);
    guest.map(0x7000, 0x2000_0000);
    guest.map(0x20_0000, 0x4000_0000, 2, false);
    guest.mapOutput(0x2000_0000, 0x6_0000_0000, SZ_4K);
    guest.mapOutput(0x4000_0000, 0x7_0000_0000, SZ_2M);
    b.setPasidEntry(dir, 7, {
      PGTT: 3,
      DID: 4,
      AW: 2,
      SLPTPTR: gss.rootPa,
      FLPTR: guest.rootGpa,
    });
    const invalid = b.setPasidEntry(dir, 8, { PGTT: 6, DID: 4 });
    // 00:10.0 (upper context table): 5-level first stage at PASID 100 with both canonical
    // halves; no entry for RID_PASID 0.
    const dir2 = b.setSmContext(rta, 0x80, { PASIDE: 1 });
    const fs5 = b.frame();
    b.fsMap(fs5, 5, 0x00ff_ffff_ffff_f000n, 0x9_0000_0000);
    b.fsMap(fs5, 5, 0xff00_0000_0000_0000n, 0x9_0000_1000);
    b.setPasidEntry(dir2, 100, { PGTT: 1, DID: 12, FLPM: 1, FLPTR: fs5 });
    // 02:00.0: PDTS 2, RID_PASID 3 pass-through, PASID 20000 on the shared second-stage table.
    const dir3 = b.setSmContext(rta, 0x200, { PASIDE: 1, PDTS: 2, RID_PASID: 3 });
    b.setPasidEntry(dir3, 3, { PGTT: 4, DID: 20, AW: 2 });
    b.setPasidEntry(dir3, 20000, { PGTT: 2, DID: 21, AW: 2, SLPTPTR: ss.rootPa });
    // 03:00.0: PASIDE clear, so its PASID 9 entry is unreachable.
    const dir4 = b.setSmContext(rta, 0x300, { PASIDE: 0 });
    b.setPasidEntry(dir4, 0, { PGTT: 4, DID: 30, AW: 2 });
    b.setPasidEntry(dir4, 9, { PGTT: 4, DID: 31, AW: 2 });
    const ctx4 = b.smContextAddr(rta, 0x300);
    return { m, fs, ss, gss, guest, fs5, fsRuns, ssRuns, invalid, ctx4, dir, dir2, dir3, dir4 };
  }

  it("lists devices, PASIDs and each page table once, with canonical first-stage IOVAs", () => {
    const { m, fs, ss, gss, guest, fs5, fsRuns, ssRuns, invalid, ctx4, dir, dir2, dir3, dir4 } =
      scalableImage();
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, true) });
    const blocked = (pasid: number, did: number, fr: number, rid = false) => ({
      pasid,
      type: "blocked",
      did,
      levels: 0,
      pageTable: null,
      ...(rid ? { ridPasid: true } : {}),
      faultReason: fr,
      faultName: vtdFaultName(fr),
    });
    const pt = (pasid: number, did: number, rid = false) => ({
      pasid,
      type: "pass-through",
      did,
      levels: 0,
      pageTable: null,
      ...(rid ? { ridPasid: true } : {}),
    });
    expect(skeleton(doc)).toEqual({
      arch: "vtd",
      mode: "scalable",
      rootTable: hex(m.rta),
      rtaddr: hex(m.rta + 0x400),
      truncated: false,
      devices: [
        {
          bdf: "00:03.0",
          sid: 0x18,
          deviceTlb: true,
          truncated: false,
          pasidDirectory: hex(dir),
          pasidDirectoryEntries: 128,
          ridPasid: 0,
          translations: [
            {
              pasid: 0,
              type: "first-stage",
              did: 2,
              levels: 4,
              pageTable: hex(fs.rootPa),
              ridPasid: true,
            },
            { pasid: 5, type: "second-stage", did: 3, levels: 4, pageTable: hex(ss.rootPa) },
            pt(6, 1),
            {
              pasid: 7,
              type: "nested",
              did: 4,
              levels: 4,
              pageTable: hex(guest.rootGpa),
              secondStageTable: hex(gss.rootPa),
              secondStageLevels: 4,
            },
            blocked(8, 4, VTD_FR.SM_PASID_ENTRY_INVALID),
          ],
        },
        {
          bdf: "00:10.0",
          sid: 0x80,
          deviceTlb: false,
          truncated: false,
          pasidDirectory: hex(dir2),
          pasidDirectoryEntries: 128,
          ridPasid: 0,
          translations: [
            blocked(0, 0, VTD_FR.SM_PASID_DIR_ENTRY_NOT_PRESENT, true),
            { pasid: 100, type: "first-stage", did: 12, levels: 5, pageTable: hex(fs5) },
          ],
        },
        {
          bdf: "02:00.0",
          sid: 0x200,
          deviceTlb: false,
          truncated: false,
          pasidDirectory: hex(dir3),
          pasidDirectoryEntries: 512,
          ridPasid: 3,
          translations: [
            pt(3, 20, true),
            { pasid: 20000, type: "second-stage", did: 21, levels: 4, pageTable: hex(ss.rootPa) },
          ],
        },
        {
          bdf: "03:00.0",
          sid: 0x300,
          deviceTlb: false,
          truncated: false,
          pasidDirectory: hex(dir4),
          pasidDirectoryEntries: 128,
          ridPasid: 0,
          translations: [pt(0, 30, true), pt(9, 31)],
        },
      ],
      pageTables: {
        [hex(fs.rootPa)]: {
          stage: "first-stage",
          levels: 4,
          root: hex(fs.rootPa),
          tablePages: countTables(m.mem, fs.rootPa, 4, true),
          truncated: false,
          mappings: coalesce(fsRuns),
        },
        [hex(ss.rootPa)]: {
          stage: "second-stage",
          levels: 4,
          root: hex(ss.rootPa),
          tablePages: 4,
          truncated: false,
          mappings: coalesce(ssRuns),
        },
        [hex(gss.rootPa)]: {
          stage: "second-stage",
          levels: 4,
          root: hex(gss.rootPa),
          tablePages: countTables(m.mem, gss.rootPa, 4, false),
          truncated: false,
          mappings: coalesce(guest.ssRuns),
        },
        [hex(guest.rootGpa)]: {
          stage: "first-stage",
          levels: 4,
          root: hex(guest.rootGpa),
          tablePages: guest.tables,
          truncated: false,
          secondStageTable: hex(gss.rootPa),
          // Nested: the first stage's own output, guest-physical.
          mappings: coalesce([
            fsRun(0x7000, 0x2000_0000, SZ_4K, RW),
            fsRun(0x20_0000, 0x4000_0000, SZ_2M, IOMMU_READ),
          ]),
        },
        [hex(fs5)]: {
          stage: "first-stage",
          levels: 5,
          root: hex(fs5),
          tablePages: 9,
          truncated: false,
          // Consecutive output addresses, but the two canonical halves do not meet.
          mappings: [
            {
              iova: "0xfffffffffff000",
              pa: "0x900000000",
              size: SZ_4K,
              r: true,
              w: true,
              x: true,
              u: true,
            },
            {
              iova: "0xff00000000000000",
              pa: "0x900001000",
              size: SZ_4K,
              r: true,
              w: true,
              x: true,
              u: true,
            },
          ],
        },
      },
      problems: [
        {
          address: hex(invalid),
          structure: "PASID entry of 00:03.0 PASID 8",
          message: "PGTT 6 is reserved",
          faultReason: VTD_FR.SM_PASID_ENTRY_INVALID,
        },
        {
          address: hex(ctx4),
          structure: "scalable context entry of 03:00.0",
          message: "PASIDE is 0: 1 present PASID entry is unreachable (requests with PASID fault)",
          faultReason: VTD_FR.SM_PASIDE_CLEAR,
        },
      ],
    });
  });

  it("gives each PASID its directory and table entry with spec fields", () => {
    const { m, ss, dir } = scalableImage();
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, true), device: 0x18, pasid: 5 });
    const t = doc.devices[0]?.translations[0];
    const dirEntry = m.mem.read64Big(dir);
    const tableAt = Number(dirEntry & ~0xfffn);
    expect(t?.pasidDirEntry).toEqual({
      layout: "pasid-dir-entry",
      address: hex(dir),
      raw: [hex(dirEntry, 16)],
      fields: { P: 1, FPD: 0, SMPTBLPTR: hex(tableAt) },
    });
    expect(t?.pasidEntry?.address).toBe(hex(tableAt + 5 * 64));
    expect(t?.pasidEntry?.raw).toHaveLength(8);
    expect(t?.pasidEntry?.fields).toMatchObject({
      P: 1,
      AW: 2,
      PGTT: 2,
      SLPTPTR: hex(ss.rootPa),
      DID: 3,
      FLPTR: "0x0",
    });
    const ctx = doc.devices[0]?.contextEntry;
    expect(ctx?.layout).toBe(SM_CONTEXT_ENTRY.name);
    expect(ctx?.fields).toMatchObject({ P: 1, DTE: 1, PASIDE: 1, PRE: 1, PASIDDIRPTR: hex(dir) });
    expect(ctx?.raw).toHaveLength(4);
  });

  it("--pasid keeps only devices with that PASID and only the tables they use", () => {
    const { m, ss } = scalableImage();
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, true), pasid: 20000 });
    expect(doc.devices.map((d) => [d.bdf, d.translations.map((t) => t.pasid)])).toEqual([
      ["02:00.0", [20000]],
    ]);
    expect(Object.keys(doc.pageTables)).toEqual([hex(ss.rootPa)]);
    const rid = decodeOk(m.mem, { rtaddr: rtaddrOf(m, true), pasid: 0 });
    expect(rid.devices.map((d) => d.bdf)).toEqual(["00:03.0", "00:10.0", "03:00.0"]);
  });

  it("malformed scalable entries are reported with the fault they cause", () => {
    const m = machine(true);
    const { b, rta, mem } = m;
    // Reserved bit 10 of a PASID entry; FLPM 2; AW 4; a reserved directory entry bit.
    const dir = b.setSmContext(rta, 0x08, { PASIDE: 1 });
    const rsv = b.setPasidEntry(dir, 0, { PGTT: 4, DID: 1 });
    mem.write32(rsv, mem.read32(rsv) | 0x400);
    b.setPasidEntry(dir, 1, { PGTT: 1, DID: 1, FLPM: 2, FLPTR: 0x1000 });
    b.setPasidEntry(dir, 2, { PGTT: 2, DID: 1, AW: 4, SLPTPTR: 0x1000 });
    b.setPasidEntry(dir, 64, { PGTT: 4, DID: 1 });
    mem.write32(dir + 8, mem.read32(dir + 8) | 0x4); // bit 2 of the second directory entry
    // A context entry with reserved bit 5; one whose RID_PASID is beyond PDTS's limit.
    b.setSmContext(rta, 0x10, { PASIDE: 1 });
    const ctxAt = b.smContextAddr(rta, 0x10);
    mem.write32(ctxAt, mem.read32(ctxAt) | 0x20);
    b.setSmContext(rta, 0x20, { RID_PASID: 9000 });
    // A root entry with reserved bit 1 hides bus 1.
    b.setSmContext(rta, 0x100, {});
    mem.write32(rta + 16, mem.read32(rta + 16) | 2);
    const doc = decodeOk(mem, { rtaddr: rtaddrOf(m, true) });
    const seen = doc.devices.map((d) => [
      d.bdf,
      d.translations.map((t) => [t.pasid, t.faultName ?? t.type]),
    ]);
    expect(seen).toEqual([
      [
        "00:01.0",
        [
          [0, "SM_PASID_ENTRY_RESERVED"],
          [1, "SM_PASID_ENTRY_INVALID"],
          [2, "SM_PASID_ENTRY_INVALID"],
        ],
      ],
      ["00:02.0", [[0, "SM_CONTEXT_ENTRY_RESERVED"]]],
      ["00:04.0", [[9000, "SM_PASID_TOO_LARGE"]]],
    ]);
    expect(doc.problems.map((p) => [p.structure, p.message, p.faultReason])).toEqual([
      ["PASID entry of 00:01.0 PASID 0", "reserved bits set: 10", VTD_FR.SM_PASID_ENTRY_RESERVED],
      ["PASID entry of 00:01.0 PASID 1", "FLPM 2 is reserved", VTD_FR.SM_PASID_ENTRY_INVALID],
      [
        "PASID entry of 00:01.0 PASID 2",
        "AW 4 is not a supported AGAW (SAGAW 0xe)",
        VTD_FR.SM_PASID_ENTRY_INVALID,
      ],
      [
        "PASID directory entry of 00:01.0 (PASIDs 64-127)",
        "reserved bits set: 2",
        VTD_FR.SM_PASID_DIR_ENTRY_RESERVED,
      ],
      [
        "scalable context entry of 00:02.0",
        "reserved bits set: 5",
        VTD_FR.SM_CONTEXT_ENTRY_RESERVED,
      ],
      ["scalable root entry of bus 01", "reserved bits set: 1", VTD_FR.SM_ROOT_ENTRY_RESERVED],
    ]);
  });

  it("capability-dependent PASID rules: RID_PASID without RPS, PGTTs and FLPM the unit lacks", () => {
    const m = machine(true);
    const { b, rta } = m;
    const dir = b.setSmContext(rta, 0x08, { PASIDE: 1 });
    b.setPasidEntry(dir, 0, { PGTT: 1, DID: 1, FLPM: 1, FLPTR: 0x1000 });
    b.setPasidEntry(dir, 1, { PGTT: 3, DID: 1, AW: 2, FLPTR: 0x1000, SLPTPTR: 0x1000 });
    b.setPasidEntry(dir, 2, { PGTT: 4, DID: 1 });
    b.setPasidEntry(dir, 3, { PGTT: 2, DID: 1, AW: 2, SLPTPTR: 0x1000 });
    b.setSmContext(rta, 0x10, { RID_PASID: 5 });
    const caps = {
      ...VTD_PERMISSIVE_CAPS,
      rps: false,
      nest: false,
      passThrough: false,
      slts: false,
      firstStage5Level: false,
    };
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, true), caps });
    expect(doc.problems.map((p) => p.message)).toEqual([
      "FLPM 1 (5-level) needs CAP.FL5LP",
      "PGTT 3 (nested) needs ECAP.NEST, FLTS and SLTS",
      "PGTT 4 (pass-through) needs ECAP.PT",
      "PGTT 2 (second-stage) needs ECAP.SLTS",
      "RID_PASID 5 is not 0 and ECAP.RPS is 0",
    ]);
    expect(doc.devices[1]?.translations).toEqual([
      expect.objectContaining({ pasid: 5, faultName: "SM_RID_PASID_ERROR", ridPasid: true }),
    ]);
    // Without ECAP.PASID only PASID 0 is reachable; PASID 1-3 are not listed.
    const noPasid = decodeOk(m.mem, {
      rtaddr: rtaddrOf(m, true),
      caps: { ...VTD_PERMISSIVE_CAPS, pasid: false, pss: 0 },
      device: 0x08,
    });
    expect(noPasid.devices[0]?.translations.map((t) => t.pasid)).toEqual([0]);
  });
});

describe("decodeVtd, page-table problems", () => {
  function ssDevice(m: VtdTestMachine, root: number, levels = 4) {
    m.b.setContext(m.rta, 0x10, { AW: levels - 2, DID: 1, SLPTPTR: root });
  }

  it("second-stage entries the walker refuses are reported and left out of the mappings", () => {
    const m = machine(false);
    const { b } = m;
    const root = b.frame();
    b.ssMap(root, 4, 0x1000, 0x10_0000); // a good leaf
    // PS in an SS-PML4E.
    b.write(SS_PTE, root + 8 * 3, { R: 1, W: 1, PS: 1, ADDR: 0x4000_0000 });
    // A 2 MiB leaf whose address bits 20:12 are not zero.
    b.ssMap(root, 4, 0x20_0000, 0x20_1000, 2);
    // A 1 GiB leaf on a unit without 1 GiB pages (checked with the caps below).
    b.ssMap(root, 4, 0x4000_0000, 0x8000_0000, 3);
    // TM in a leaf; SNP in a table entry (level 3, under the second PML4E).
    const tmLeaf = b.ssMap(root, 4, 0x2000, 0x11_0000);
    m.mem.write32(tmLeaf + 4, m.mem.read32(tmLeaf + 4) | 0x4000_0000);
    b.ssMap(root, 4, 0x80_0000_0000, 0x12_0000);
    const l3 = b.entryAddr(root, 4, 0x80_0000_0000, 3, (lo) => (lo & 3) !== 0);
    m.mem.write32(l3, m.mem.read32(l3) | 0x800);
    ssDevice(m, root);
    const caps = { ...VTD_PERMISSIVE_CAPS, superpages: ["2M"] as const };
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false), caps });
    const key = hex(root);
    expect(doc.pageTables[key]?.mappings).toEqual([
      { iova: "0x1000", pa: "0x100000", size: SZ_4K, r: true, w: true, snp: false },
    ]);
    const at = `second-stage table ${key}`;
    expect(doc.problems.map((p) => [p.structure, p.message, p.faultReason])).toEqual([
      [`${at}, level 1 entry`, "TM set", VTD_FR.PAGING_ENTRY_RESERVED],
      [
        `${at}, level 2 entry`,
        "address bits inside the large page are set",
        VTD_FR.PAGING_ENTRY_RESERVED,
      ],
      [
        `${at}, level 3 entry`,
        "PS set but CAP.SLLPS lacks this page size",
        VTD_FR.PAGING_ENTRY_RESERVED,
      ],
      [`${at}, level 3 entry`, "SNP or TM set in a non-leaf entry", VTD_FR.PAGING_ENTRY_RESERVED],
      [`${at}, level 4 entry`, "PS set at level 4", VTD_FR.PAGING_ENTRY_RESERVED],
    ]);
  });

  it("legacy SNP needs ECAP.SC; addresses at or above HAW are reserved", () => {
    const m = machine(false);
    const root = m.b.frame();
    m.b.ssMap(root, 4, 0x1000, 0x10_0000, 1, { R: 1, W: 1, SNP: 1 });
    m.b.ssMap(root, 4, 0x2000, 2 ** 41);
    ssDevice(m, root);
    const withSc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false) });
    expect(withSc.pageTables[hex(root)]?.mappings).toEqual([
      { iova: "0x1000", pa: "0x100000", size: SZ_4K, r: true, w: true, snp: true },
      { iova: "0x2000", pa: "0x20000000000", size: SZ_4K, r: true, w: true, snp: false },
    ]);
    const noSc = decodeOk(m.mem, {
      rtaddr: rtaddrOf(m, false),
      caps: { ...VTD_PERMISSIVE_CAPS, snoopControl: false },
      haw: 40,
    });
    expect(noSc.pageTables[hex(root)]?.mappings).toEqual([]);
    expect(noSc.problems.map((p) => p.message)).toEqual([
      "SNP set without ECAP.SC",
      "address bits at or above the host address width",
    ]);
  });

  it("first-stage entries the walker refuses; PAT of a large leaf is not an address bit", () => {
    const m = machine(true);
    const { b } = m;
    const root = b.frame();
    b.fsMap(root, 4, 0x1000, 0x10_0000);
    b.write(FS_PTE, root + 8 * 2, { P: 1, RW: 1, PS: 1, ADDR: 0x4000_0000 }); // PS in a PML4E
    const pat = b.fsMap(root, 4, 0x20_0000, 0x20_0000, 2);
    m.mem.write32(pat, m.mem.read32(pat) | 0x1000); // PAT of the 2 MiB leaf
    b.fsMap(root, 4, 0x40_0000, 0x40_2000, 2); // bit 13 inside the page: reserved
    b.fsMap(root, 4, 0x4000_0000, 0x8000_0000, 3); // 1 GiB leaf (no FL1GP below)
    const xd = b.fsMap(root, 4, 0x3000, 0x30_0000, 1, { P: 1, US: 0 });
    m.mem.write32(xd + 4, 0x8000_0000);
    const dir = b.setSmContext(m.rta, 0x08, { PASIDE: 1 });
    b.setPasidEntry(dir, 0, { PGTT: 1, DID: 1, FLPTR: root });
    const doc = decodeOk(m.mem, {
      rtaddr: rtaddrOf(m, true),
      caps: { ...VTD_PERMISSIVE_CAPS, firstStage1G: false },
    });
    expect(doc.pageTables[hex(root)]?.mappings).toEqual([
      { iova: "0x1000", pa: "0x100000", size: SZ_4K, r: true, w: true, x: true, u: true },
      { iova: "0x3000", pa: "0x300000", size: SZ_4K, r: true, w: false, x: false, u: false },
      { iova: "0x200000", pa: "0x200000", size: SZ_2M, r: true, w: true, x: true, u: true },
    ]);
    expect(doc.problems.map((p) => [p.message, p.faultReason])).toEqual([
      ["address bits inside the large page are set", VTD_FR.SM_FS_ENTRY_RESERVED],
      ["PS set at level 3 without CAP.FL1GP", VTD_FR.SM_FS_ENTRY_RESERVED],
      ["PS set at level 4", VTD_FR.SM_FS_ENTRY_RESERVED],
    ]);
  });

  it("a nested first-stage table the second stage does not map is reported", () => {
    const m = machine(true);
    const { b } = m;
    const gss = ssTable(m, 2);
    const guest = new GuestFsTable(b, gss, 4, 0x10_0000_0000);
    guest.map(0x1000, 0x2000_0000);
    // Unmap the guest's level-3 table page from the second stage.
    const l4 = b.read(FS_PTE, guest.rootHpa);
    expect(gss.unmapPages(Number(l4.ADDR), SZ_4K, 1, null)).toBe(SZ_4K);
    const dir = b.setSmContext(m.rta, 0x08, { PASIDE: 1 });
    b.setPasidEntry(dir, 0, { PGTT: 3, DID: 1, AW: 2, SLPTPTR: gss.rootPa, FLPTR: guest.rootGpa });
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, true) });
    expect(doc.pageTables[hex(guest.rootGpa)]?.mappings).toEqual([]);
    expect(doc.problems).toEqual([
      {
        address: hex(Number(l4.ADDR)),
        structure: `first-stage table ${hex(guest.rootGpa)} (nested in ${hex(gss.rootPa)}), level 3 table`,
        message: `table at guest-physical ${hex(Number(l4.ADDR))} is not mapped readable by the second stage (no read permission)`,
        faultReason: VTD_FR.SM_FS_ENTRY_READ,
      },
    ]);
  });

  it("tables outside memory, too many problems and a spent budget are reported, not thrown", () => {
    const mem = new PhysMemory({ paBits: 32 });
    // Root table at 0x1000 (legacy), context table at 0x2000, page table root beyond memory.
    mem.write64(0x1000, 0x2001, 0);
    mem.write64(0x2000, 1, 0); // devfn 0: P, SLPTPTR 0
    mem.write64(0x2008, 2 | (1 << 8), 0); // AW 2, DID 1
    mem.write64(0x2010, 0x3000 | 1, 0); // devfn 1: SLPTPTR 0x3000
    mem.write64(0x2018, 2 | (2 << 8), 0);
    // Every entry of 0x3000 is a PS leaf at level 4: 512 problems, 32 listed.
    for (let i = 0; i < 512; i++) mem.write64(0x3000 + i * 8, 0x83, 0);
    mem.write64(0x2020, 1, 0); // devfn 2: the same table as devfn 0, decoded once
    mem.write64(0x2028, 2 | (3 << 8), 0);
    const doc = decodeOk(mem, { rtaddr: 0x1000, maxTablePages: 2 });
    expect(Object.keys(doc.pageTables)).toEqual(["0x0", "0x3000"]);
    expect(doc.pageTables["0x0"]?.mappings).toEqual([]);
    expect(doc.devices.map((d) => d.translations[0]?.pageTable)).toEqual(["0x0", "0x3000", "0x0"]);
    const listed = doc.problems.filter((p) => p.structure.startsWith("second-stage table 0x3000"));
    expect(listed).toHaveLength(33);
    expect(listed[32]?.message).toBe("480 more problems in this table not listed");
    const big = new PhysMemory({ paBits: 32 });
    big.write64(0x1000, 0x2001, 0);
    big.write64(0x2000, 0x3001, 0);
    big.write64(0x2008, 2 | (1 << 8), 0);
    for (let i = 0; i < 2; i++) big.write64(0x3000 + i * 8, 0x4003, 0);
    big.write64(0x4000, 0x5003, 0);
    const spent = decodeOk(big, { rtaddr: 0x1000, maxTablePages: 2 });
    expect(spent.problems.map((p) => p.message)).toContain(
      "enumeration stopped after 2 table pages in all (limit maxTablePages; looping or shared tables?): this and later page tables are incomplete",
    );
    expect(spent.truncated).toBe(true);
    expect(spent.pageTables["0x3000"]).toMatchObject({ tablePages: 2, truncated: true });
    const beyond = new PhysMemory({ paBits: 32 });
    beyond.write64(0x1000, 0x2001, 0);
    beyond.write64(0x2000, 1, 0x10); // P, SLPTPTR 0x10_0000_0000
    beyond.write64(0x2008, 2, 0); // AW 2
    const out = decodeOk(beyond, { rtaddr: 0x1000 });
    expect(out.problems).toEqual([
      {
        address: "0x1000000000",
        structure: "second-stage table 0x1000000000, level 4 table",
        message: "table 0x1000000000 is outside memory",
        faultReason: VTD_FR.PAGING_ENTRY_ACCESS,
      },
    ]);
  });
});

describe("decodeVtd, RTADDR and lookups", () => {
  it("TTM 2 and 3 select no tables: a message, not a document", () => {
    const mem = new PhysMemory();
    expect(decodeVtd(mem, { rtaddr: 0x800 })).toBe(
      "RTADDR.TTM is 2, a reserved mode: no tables to decode (bit 11 was RTT, the extended root table of VT-d 2.x, which this decoder does not read)",
    );
    expect(decodeVtd(mem, { rtaddr: 0xc00n })).toMatch(/abort-DMA/);
    expect(vtdRtaddrMode(0x1234_5400n)).toEqual({ rootTable: 0x1234_5000, mode: "scalable" });
    expect(vtdRtaddrMode(1n << 60n)).toMatch(/beyond a 52-bit physical address/);
  });

  it("a root table outside memory is a problem and no device", () => {
    const doc = decodeOk(new PhysMemory({ paBits: 32 }), { rtaddr: 0x1_0000_0000n });
    expect(doc.devices).toEqual([]);
    expect(doc.problems).toEqual([
      {
        address: "0x100000000",
        structure: "root table",
        message: "the root table is outside memory",
        faultReason: VTD_FR.ROOT_TABLE_ACCESS,
      },
    ]);
    expect(
      lookupVtdTranslation(new PhysMemory({ paBits: 32 }), {
        rtaddr: 0x1_0000_0000n,
        sid: 0,
        pasid: null,
      }),
    ).toBeNull();
  });

  it("lookupVtdTranslation answers for a RID (RID_PASID in scalable mode) or a PASID", () => {
    const m = machine(true);
    const dir = m.b.setSmContext(m.rta, 0x200, { PASIDE: 1, RID_PASID: 3 });
    m.b.setPasidEntry(dir, 3, { PGTT: 4, DID: 20 });
    m.b.setPasidEntry(dir, 4, { PGTT: 2, DID: 21, AW: 2, SLPTPTR: 0x1000 });
    const rtaddr = rtaddrOf(m, true);
    expect(lookupVtdTranslation(m.mem, { rtaddr, sid: 0x200, pasid: null })).toMatchObject({
      pasid: 3,
      type: "pass-through",
      ridPasid: true,
    });
    expect(lookupVtdTranslation(m.mem, { rtaddr, sid: 0x200, pasid: 4 })?.type).toBe(
      "second-stage",
    );
    expect(lookupVtdTranslation(m.mem, { rtaddr, sid: 0x200, pasid: 5 })).toBeNull();
    expect(lookupVtdTranslation(m.mem, { rtaddr, sid: 0x201, pasid: null })).toBeNull();
    const l = machine(false);
    l.b.setContext(l.rta, 0x10, { TT: 2, DID: 1 });
    const lr = rtaddrOf(l, false);
    expect(lookupVtdTranslation(l.mem, { rtaddr: lr, sid: 0x10, pasid: null })?.type).toBe(
      "pass-through",
    );
    expect(lookupVtdTranslation(l.mem, { rtaddr: lr, sid: 0x10, pasid: 1 })).toBeNull();
  });

  it("formatBdf and vtdFaultName", () => {
    expect(formatBdf(0)).toBe("00:00.0");
    expect(formatBdf(0xfeff)).toBe("fe:1f.7");
    expect(vtdFaultName(0x59)).toBe("SM_PASID_ENTRY_NOT_PRESENT");
    expect(vtdFaultName(0x0e)).toBe("INTERRUPT_ADDR");
    expect(vtdFaultName(0x33)).toBe("unknown");
  });
});

describe("formatVtdDecode", () => {
  it("prints the tree, the mappings of each table and the problems", () => {
    const m = machine(true);
    const dir = m.b.setSmContext(m.rta, 0x18, { DTE: 1, PASIDE: 1 });
    const runs: RefRun[] = [];
    const fs = fsTable(m, 4);
    mapRun(fs, runs, 0x1000, 0x2_0000_0000, SZ_4K, 2, RW);
    mapRun(fs, runs, 0x40_0000, 0x3_0000_0000, SZ_2M, 1, IOMMU_READ);
    m.b.setPasidEntry(dir, 0, { PGTT: 1, DID: 2, FLPTR: fs.rootPa });
    m.b.setPasidEntry(dir, 1, { PGTT: 7, DID: 2 });
    const text = formatVtdDecode(decodeOk(m.mem, { rtaddr: rtaddrOf(m, true) }));
    const lines = text.split("\n");
    expect(lines[0]).toBe(
      `VT-d scalable mode, root table ${hex(m.rta)} (RTADDR ${hex(m.rta + 0x400)})`,
    );
    expect(lines[1]).toBe(
      "1 device, 2 translations, 1 page table with 2 mappings; 1 problem (at the end)",
    );
    expect(text).toMatch(
      /\n\nbus 00: root entry @0x[0-9a-f]+ {2}LP=1 LCTP=0x[0-9a-f]+\n\n00:03\.0/,
    );
    expect(text).toContain("\n00:03.0 (sid 0x0018, device-TLB)\n");
    expect(text).toMatch(
      /\n {2}context entry {2}@0x[0-9a-f]+ {2}P=1 DTE=1 PASIDE=1 PASIDDIRPTR=0x/,
    );
    expect(text).toContain(
      `  PASID 0 (RID_PASID): first-stage, DID 2, 4 levels, table ${hex(fs.rootPa)}\n`,
    );
    expect(text).toMatch(
      / {4}PASID entry {2}@0x[0-9a-f]+ {2}P=1 PGTT=first-stage\(1\) DID=0x2 FLPTR=0x/,
    );
    expect(text).toContain("  PASID 1: blocked (SM_PASID_ENTRY_INVALID, fault 0x5b)\n");
    expect(text).toContain(
      `page table ${hex(fs.rootPa)}: first-stage, 4 levels, 2 mappings, used by 00:03.0 PASID 0\n`,
    );
    // Columns aligned within a table.
    expect(text).toContain("  0x1000-0x2fff     -> 0x200000000  8 KiB  rwx user\n");
    expect(text).toContain("  0x400000-0x5fffff -> 0x300000000  2 MiB  r-x user\n");
    expect(text).toContain("problems (1):\n");
    expect(text).toMatch(
      /PASID entry of 00:03\.0 PASID 1: PGTT 7 is reserved \[fault 0x5b SM_PASID_ENTRY_INVALID\]\n$/,
    );
    const empty = formatVtdDecode(decodeOk(new PhysMemory(), { rtaddr: 0 }));
    expect(empty).toBe(
      "VT-d legacy mode, root table 0x0 (RTADDR 0x0)\nno device has a present context entry\n",
    );
  });
});

describe("decodeVtd equals the driver's view of random mappings", () => {
  /** A run to map: IOVA gap after the previous one, page size, count, output, permissions. */
  interface PlanRun {
    gapPages: number;
    pgsize: number;
    count: number;
    contiguous: boolean;
    paSlot: number;
    prot: number;
    unmap: boolean;
  }
  const runArb: fc.Arbitrary<PlanRun> = fc.record({
    gapPages: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 600 })),
    pgsize: fc.constantFrom(SZ_4K, SZ_4K, SZ_4K, SZ_2M, SZ_1G),
    count: fc.integer({ min: 1, max: 5 }),
    contiguous: fc.boolean(),
    paSlot: fc.integer({ min: 1, max: 0xfff }),
    prot: fc.constantFrom(RW, IOMMU_READ, IOMMU_WRITE),
    unmap: fc.boolean(),
  });

  /** Map `plan` into `table` from `start`; unmap the runs marked for it; return what is left. */
  function build(
    table: ReturnType<typeof ssTable> | ReturnType<typeof fsTable>,
    plan: readonly PlanRun[],
    start: number,
    limit: number,
  ): RefRun[] {
    const runs: RefRun[] = [];
    let cursor = start;
    let nextPa = 0;
    for (const p of plan) {
      const count = p.pgsize === SZ_1G ? 1 : p.count;
      const iova = Math.ceil((cursor + p.gapPages * SZ_4K) / p.pgsize) * p.pgsize;
      const size = p.pgsize * count;
      if (iova + size > limit) break;
      const pa = p.contiguous && nextPa % p.pgsize === 0 && nextPa > 0 ? nextPa : p.paSlot * SZ_1G;
      const before = runs.length;
      mapRun(table, runs, iova, pa, p.pgsize, count, p.prot);
      if (p.unmap) {
        expect(table.unmapPages(iova, p.pgsize, count, null)).toBe(size);
        runs.length = before;
      }
      cursor = iova + size;
      nextPa = pa + size;
    }
    return runs;
  }

  test.prop([fc.array(runArb, { maxLength: 24 }), fc.constantFrom(1, 2, 3)], {
    seed: 0x6dec0de,
    numRuns: 40,
  })("legacy second stage, 3 to 5 levels", (plan, agaw) => {
    const m = machine(false);
    const t = ssTable(m, agaw as 1 | 2 | 3);
    const runs = build(t, plan, 0, 2 ** (30 + 9 * agaw));
    m.b.setContext(m.rta, 0x10, { AW: agaw, DID: 1, SLPTPTR: t.rootPa });
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false) });
    expect(doc.pageTables[hex(t.rootPa)]?.mappings).toEqual(coalesce(runs));
    expect(doc.problems).toEqual([]);
  });

  test.prop([fc.array(runArb, { maxLength: 24 }), fc.boolean(), fc.constantFrom(4, 5)], {
    seed: 0x6dec0df,
    numRuns: 40,
  })("scalable first and second stage", (plan, first, levels) => {
    const m = machine(true);
    const t = first ? fsTable(m, levels as 4 | 5) : ssTable(m, (levels - 2) as 2 | 3);
    // Start high so that level-4 and level-5 indices vary too.
    const start = levels === 5 ? 2 ** 47 : 2 ** 38;
    const runs = build(t, plan, start, 2 ** (first ? 11 + 9 * levels : 12 + 9 * levels));
    const dir = m.b.setSmContext(m.rta, 0x10, { PASIDE: 1 });
    m.b.setPasidEntry(
      dir,
      0,
      first
        ? { PGTT: 1, DID: 1, FLPM: levels === 5 ? 1 : 0, FLPTR: t.rootPa }
        : { PGTT: 2, DID: 1, AW: levels - 2, SLPTPTR: t.rootPa },
    );
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, true) });
    expect(doc.pageTables[hex(t.rootPa)]?.mappings).toEqual(coalesce(runs));
    expect(doc.problems).toEqual([]);
  });

  it("a table of a million 4 KiB leaves decodes (each its own run)", () => {
    const m = machine(false);
    const t = ssTable(m, 2);
    // Alternate permissions so that no two leaves merge.
    for (let i = 0; i < 1 << 20; i++) {
      t.mapPages(i * SZ_4K, 0x1_0000_0000 + i * SZ_4K, SZ_4K, 1, i & 1 ? RW : IOMMU_READ);
    }
    m.b.setContext(m.rta, 0x10, { AW: 2, DID: 1, SLPTPTR: t.rootPa });
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, false) });
    const maps = doc.pageTables[hex(t.rootPa)]?.mappings ?? [];
    expect(maps).toHaveLength(1 << 20);
    expect(maps[(1 << 20) - 1]).toEqual({
      iova: hex(((1 << 20) - 1) * SZ_4K),
      pa: hex(0x1_0000_0000 + ((1 << 20) - 1) * SZ_4K),
      size: SZ_4K,
      r: true,
      w: true,
      snp: false,
    });
  }, 60_000);

  it("ssRun and fsRun describe the driver's leaves", () => {
    expect(ssRun(0, 0, SZ_4K, IOMMU_WRITE)).toEqual({
      iova: 0n,
      pa: 0,
      size: SZ_4K,
      r: false,
      w: true,
      snp: false,
    });
    expect(fsRun(0, 0, SZ_4K, IOMMU_READ)).toMatchObject({ r: true, w: false, x: true, u: true });
    expect(CONTEXT_ENTRY.name).toBe("context-entry");
  });
});

describe("decodeVtd round-trips the tables the VT-d driver built", () => {
  interface MapPlan {
    gapPages: number;
    pages: number;
    paSlot: number;
    prot: number;
  }
  const mapArb: fc.Arbitrary<MapPlan> = fc.record({
    gapPages: fc.integer({ min: 0, max: 1200 }),
    pages: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.constantFrom(512, 1024, 513)),
    paSlot: fc.integer({ min: 1, max: 0x3ff }),
    prot: fc.constantFrom(RW, IOMMU_READ),
  });

  /** Map `plan` through the core's iommuMap into `domain`; the runs the driver was asked for. */
  function mapAll(domain: DmarDomain, plan: readonly MapPlan[], start: number): RefRun[] {
    const runs: RefRun[] = [];
    let cursor = start;
    for (const p of plan) {
      const iova = cursor + p.gapPages * SZ_4K;
      // Output aligned like the input within 1 GiB, so that the driver may use large pages.
      const pa = p.paSlot * SZ_1G + (iova % SZ_1G);
      const size = p.pages * SZ_4K;
      expect(iommuMap(domain, iova, pa, size, p.prot)).toBe(0);
      runs.push(
        domain.useFirstLevel ? fsRun(iova, pa, size, p.prot) : ssRun(iova, pa, size, p.prot),
      );
      cursor = iova + size;
    }
    return runs;
  }

  test.prop(
    [
      fc.constantFrom("legacy", "scalable, first stage", "scalable, second stage"),
      fc.array(mapArb, { minLength: 1, maxLength: 10 }),
      fc.array(mapArb, { maxLength: 6 }),
    ],
    { seed: 0x6dec0e0, numRuns: 15 },
  )("devices, domains, PASIDs and mappings as the driver knows them", (mode, plan, pasidPlan) => {
    const legacy = mode === "legacy";
    const m = new VtdMachine({
      units: [legacy ? { caps: LEGACY_VTD_CAPS, scalable: false } : {}],
      firstStage: mode === "scalable, first stage",
    });
    const unit = m.units[0] as { hw: VtdUnit; iommu: IntelIommu };
    const nic = m.addDevice({ name: "nic0", rid: 0x0100 }) as Device;
    const acc = m.addDevice({ name: "acc0", rid: 0x0208, pasidBits: 8, ats: true }) as Device;
    const d = iommuPagingDomainAlloc(nic) as DmarDomain;
    expect(iommuAttachDevice(d, nic)).toBe(0);
    const runs = mapAll(d, plan, 0x100_0000);
    let pasid = -1;
    let pd: DmarDomain | null = null;
    let pasidRuns: RefRun[] = [];
    if (!legacy) {
      pd = iommuPagingDomainAlloc(acc) as DmarDomain;
      pasid = iommuAllocGlobalPasid(acc) as number;
      expect(iommuAttachDevicePasid(pd, acc, pasid)).toBe(0);
      pasidRuns = mapAll(pd, pasidPlan, 0x4000_0000);
    }
    // The unit's RTADDR, read back through its registers.
    const rtaddr =
      (BigInt(unit.hw.read32(VTD_REG.RTADDR + 4)) << 32n) | BigInt(unit.hw.read32(VTD_REG.RTADDR));
    const file = tmp.file(`driver-${legacy ? "legacy" : "scalable"}-${n++}.elf`);
    saveImage(m.mem, file, "elf");
    const mem = readImageInput({ image: file });
    if (mem instanceof ImageInputError) throw new Error(mem.message);
    const doc = decodeOk(mem, { rtaddr });
    expect(doc.mode).toBe(legacy ? "legacy" : "scalable");
    expect(doc.problems).toEqual([]);
    const stage = (x: DmarDomain) => (x.useFirstLevel ? "first-stage" : "second-stage");
    const translationOf = (x: DmarDomain, p: number | null) => ({
      pasid: p,
      type: stage(x),
      did: x.didOn(unit.iommu),
      levels: x.levels,
      pageTable: hex(x.pgtable.rootPa),
      ...(p === null ? {} : p === 0 ? { ridPasid: true } : {}),
    });
    const accDefault = iommuGetDomainForDev(acc) as DmarDomain;
    const rid = legacy ? null : 0;
    expect(d.useFirstLevel).toBe(mode === "scalable, first stage");
    expect(skeleton(doc).devices).toEqual([
      expect.objectContaining({
        bdf: "01:00.0",
        sid: 0x100,
        translations: [translationOf(d, rid)],
      }),
      expect.objectContaining({
        bdf: "02:01.0",
        sid: 0x208,
        translations: [
          translationOf(accDefault, rid),
          ...(pd === null ? [] : [translationOf(pd, pasid)]),
        ],
      }),
    ]);
    // The mappings the driver was asked for, and each page as the driver's table answers it.
    expect(doc.pageTables[hex(d.pgtable.rootPa)]?.mappings).toEqual(coalesce(runs));
    expect(doc.pageTables[hex(accDefault.pgtable.rootPa)]?.mappings).toEqual([]);
    if (pd !== null)
      expect(doc.pageTables[hex(pd.pgtable.rootPa)]?.mappings).toEqual(coalesce(pasidRuns));
    // translate (a fresh unit on the image) agrees with the running unit's uncached walk.
    const translator = VtdTranslator.create(mem, { rtaddr });
    if (typeof translator === "string") throw new Error(translator);
    const users: Array<[DmarDomain, Device, number | null]> = [[d, nic, null]];
    if (pd !== null) users.push([pd, acc, pasid]);
    for (const [domain, dev, p] of users) {
      for (const mapping of doc.pageTables[hex(domain.pgtable.rootPa)]?.mappings ?? []) {
        for (let o = 0; o < mapping.size; o += Math.max(SZ_4K, mapping.size / 4)) {
          const iova = Number(mapping.iova) + o;
          expect(domain.pgtable.iovaToPhys(iova)).toBe(Number(mapping.pa) + o);
          const want = xlateFresh(unit.hw, dev.rid, iova, { pasid: p ?? undefined });
          expect(want.pa).toBe(Number(mapping.pa) + o);
          expect(
            translator.translate({ sid: dev.rid, pasid: p, iova: BigInt(iova) }),
          ).toMatchObject({
            result: "ok",
            pa: hex(want.pa),
            pageSize: 2 ** want.sizeShift,
            w: mapping.w,
          });
        }
      }
    }
  });

  it("an identity default domain decodes as pass-through", () => {
    for (const legacy of [true, false]) {
      const m = new VtdMachine({
        defaultDomain: "identity",
        units: [legacy ? { caps: LEGACY_VTD_CAPS, scalable: false } : {}],
      });
      const hw = (m.units[0] as { hw: VtdUnit }).hw;
      m.addDevice({ name: "nic0", rid: 0x0100 });
      const rtaddr =
        (BigInt(hw.read32(VTD_REG.RTADDR + 4)) << 32n) | BigInt(hw.read32(VTD_REG.RTADDR));
      const doc = decodeOk(m.mem, { rtaddr });
      expect(doc.devices.map((x) => x.translations.map((t) => [t.pasid, t.type]))).toEqual([
        [[legacy ? null : 0, "pass-through"]],
      ]);
      expect(doc.problems).toEqual([]);
    }
  });
});

/** A translator on `mem` with the permissive unit, or the given one. */
function unitOn(mem: PhysMemory, rtaddr: bigint, cap?: bigint, ecap?: bigint): VtdTranslator {
  const t = VtdTranslator.create(mem, { rtaddr, cap, ecap });
  if (typeof t === "string") throw new Error(t);
  return t;
}

describe("decodeVtd on what real drivers and firmware leave behind", () => {
  it("RID_PRIV makes requests without PASID supervisor requests: without SRE they fault 0x5d, as translate says", () => {
    const m = machine(true);
    const ss = ssTable(m, 2);
    mapRun(ss, [], 0x1000, 0x8000_0000, SZ_4K, 1, RW);
    const dir = m.b.setSmContext(m.rta, 0x18, { PASIDE: 1, RID_PRIV: 1 });
    const entry = m.b.setPasidEntry(dir, 0, { PGTT: 2, DID: 3, AW: 2, SLPTPTR: ss.rootPa });
    const rtaddr = rtaddrOf(m, true);
    const doc = decodeOk(m.mem, { rtaddr });
    expect(doc.devices[0]?.translations[0]).toMatchObject({
      pasid: 0,
      type: "blocked",
      did: 3,
      ridPasid: true,
      faultReason: VTD_FR.SM_SRE_CLEAR,
    });
    expect(doc.problems).toEqual([
      {
        address: hex(entry),
        structure: "PASID entry of 00:03.0 PASID 0",
        message:
          "RID_PRIV of the context entry makes requests without PASID supervisor requests, and SRE is 0: they fault",
        faultReason: VTD_FR.SM_SRE_CLEAR,
      },
    ]);
    const t = unitOn(m.mem, rtaddr);
    expect(t.translate({ sid: 0x18, pasid: null, iova: 0x1000n })).toMatchObject({
      result: "fault",
      faultReason: VTD_FR.SM_SRE_CLEAR,
    });
    // With SRE the same requests translate, in both.
    m.b.setPasidEntry(dir, 0, { PGTT: 2, DID: 3, AW: 2, SLPTPTR: ss.rootPa, SRE: 1 });
    expect(decodeOk(m.mem, { rtaddr }).devices[0]?.translations[0]?.type).toBe("second-stage");
    expect(
      unitOn(m.mem, rtaddr).translate({ sid: 0x18, pasid: null, iova: 0x1000n }),
    ).toMatchObject({ result: "ok", pa: "0x80000000" });
  });

  it("a nested first-stage table behind a second-stage entry the walker refuses faults 0x7a, as translate says", () => {
    const m = machine(true);
    const gss = ssTable(m, 2);
    const guest = new GuestFsTable(m.b, gss, 4, 0x10_0000_0000);
    guest.map(0x1000, 0x2000_0000);
    guest.mapOutput(0x2000_0000, 0x3000_0000, SZ_4K);
    // TM (bit 62) in the second stage's top entry over the guest's tables: reserved there.
    const top = gss.rootPa + Math.floor(guest.rootGpa / 2 ** 39) * 8;
    m.mem.write32(top + 4, m.mem.read32(top + 4) | 0x4000_0000);
    const dir = m.b.setSmContext(m.rta, 0x08, { PASIDE: 1 });
    m.b.setPasidEntry(dir, 0, {
      PGTT: 3,
      DID: 1,
      AW: 2,
      SLPTPTR: gss.rootPa,
      FLPTR: guest.rootGpa,
    });
    const rtaddr = rtaddrOf(m, true);
    const doc = decodeOk(m.mem, { rtaddr });
    expect(doc.pageTables[hex(guest.rootGpa)]?.mappings).toEqual([]);
    expect(doc.problems).toContainEqual({
      address: hex(guest.rootGpa),
      structure: `first-stage table ${hex(guest.rootGpa)} (nested in ${hex(gss.rootPa)}), level 4 table`,
      message: `table at guest-physical ${hex(guest.rootGpa)} is not mapped readable by the second stage (an entry the walker refuses)`,
      faultReason: VTD_FR.SM_SS_ENTRY_RESERVED,
    });
    expect(
      unitOn(m.mem, rtaddr).translate({ sid: 0x08, pasid: null, iova: 0x1000n }),
    ).toMatchObject({ result: "fault", faultReason: VTD_FR.SM_SS_ENTRY_RESERVED });
  });

  it("RTADDR selecting scalable mode on a unit without ECAP.SMTS: a problem with fault 0x30, as translate says", () => {
    const m = machine(true);
    m.b.setSmContext(m.rta, 0x18, { PASIDE: 1 });
    const rtaddr = rtaddrOf(m, true);
    const u64 = ([lo, hi]: readonly [number, number]) => (BigInt(hi) << 32n) | BigInt(lo);
    const cap = u64(vtdCapValue(LEGACY_VTD_CAPS));
    const ecap = u64(vtdEcapValue(LEGACY_VTD_CAPS));
    const caps = vtdCapsFromRegisters(cap, ecap);
    if (typeof caps === "string") throw new Error(caps);
    expect(caps.smts).toBe(false);
    const doc = decodeOk(m.mem, { rtaddr, caps });
    expect(doc.problems[0]).toEqual({
      address: hex(m.rta),
      structure: "root table",
      message:
        "RTADDR.TTM selects scalable mode, which the unit lacks (ECAP.SMTS is 0): every request faults; the tables are decoded as written",
      faultReason: VTD_FR.SM_ROOT_TABLE_ADDR_INVALID,
    });
    expect(
      unitOn(m.mem, rtaddr, cap, ecap).translate({ sid: 0x18, pasid: null, iova: 0n }),
    ).toMatchObject({ result: "fault", faultReason: VTD_FR.SM_ROOT_TABLE_ADDR_INVALID });
  });

  it("reserved bits of a garbage entry are listed as ranges, the rest counted", () => {
    const m = machine(false);
    // Bit 71 and bits 88-127 of a legacy context entry: reserved.
    const at = m.b.setContext(m.rta, 0x10, { AW: 2, DID: 1 });
    m.mem.write32(at + 8, m.mem.read32(at + 8) | 0xff00_0080);
    m.mem.write32(at + 12, 0xffff_ffff);
    // Every other bit of qwords 2 and 3 of a scalable context entry: 64 reserved bits.
    const s = machine(true);
    const sAt = s.b.smContextAddr(s.rta, 0x18);
    s.b.setSmContext(s.rta, 0x18, { PASIDE: 1 });
    for (let i = 16; i < 32; i += 4) s.mem.write32(sAt + i, 0xaaaa_aaaa);
    expect(decodeOk(m.mem, { rtaddr: rtaddrOf(m, false) }).problems[0]?.message).toBe(
      "reserved bits set: 71,88-127",
    );
    expect(decodeOk(s.mem, { rtaddr: rtaddrOf(s, true) }).problems[0]?.message).toBe(
      "reserved bits set: 129,131,133,135,137,139,141,143 and 56 more",
    );
  });

  it("structures in a hole of the image are noted and read as zeros, as translate reads them", () => {
    const mem = new PhysMemory();
    // Legacy: bus 0 -> context table 0x2000; bus 1 -> a context table in a hole.
    mem.write64(0x1000, 0x2001, 0);
    mem.write64(0x1010, 0x1, 0x9); // bus 1: CTP 0x9_0000_0000, never written
    // 00:00.0: 3-level table at 0x3000 whose entry 0 leads into a hole, entry 1 to a 2 MiB leaf.
    mem.write64(0x2000, 0x3001, 0);
    mem.write64(0x2008, 1 | (1 << 8), 0); // AW 1, DID 1
    mem.write64(0x3000, 0x3, 0x8); // -> 0x8_0000_0000, never written
    mem.write64(0x3008, 0x4003, 0);
    mem.write64(0x4000, 0x4000_0083, 0);
    const image = loadMemoryImage(saveElfCore(mem), "holes.elf");
    if (image instanceof ImageInputError) throw new Error(image.message);
    expect(image.coverage?.covers(0x3000, 4096)).toBe(true);
    expect(image.coverage?.covers(0x8_0000_0000, 4096)).toBe(false);
    const doc = decodeOk(image.mem, { rtaddr: 0x1000, coverage: image.coverage });
    expect(doc.problems).toEqual([
      {
        address: "0x900000000",
        structure: "root entry of bus 01",
        message:
          "context table 0x900000000 is not in the image (a hole, or a page the dump left out): read as zeros",
      },
    ]);
    expect(doc.pageTables["0x3000"]).toEqual({
      stage: "second-stage",
      levels: 3,
      root: "0x3000",
      tablePages: 2,
      truncated: false,
      notInImage: 1,
      mappings: [
        { iova: "0x40000000", pa: "0x40000000", size: SZ_2M, r: true, w: true, snp: false },
      ],
    });
    expect(formatVtdDecode(doc)).toContain(
      "page table 0x3000: second-stage, 3 levels, 1 mapping (1 table page not in the image, read as zeros), used by 00:00.0\n",
    );
    // Scalable: a PASID table in a hole reads as zeros: RID_PASID not present (0x59), as the unit says.
    const sm = new PhysMemory();
    sm.write64(0x1000, 0x2001, 0);
    sm.write64(0x2000, 0x3001 | (1 << 3), 0); // 00:00.0: directory 0x3000, PASIDE
    sm.write64(0x3000, 0x1, 0x7); // PASIDs 0-63: table 0x7_0000_0000, never written
    const sImage = loadMemoryImage(saveElfCore(sm), "holes.elf");
    if (sImage instanceof ImageInputError) throw new Error(sImage.message);
    const sDoc = decodeOk(sImage.mem, { rtaddr: 0x1400, coverage: sImage.coverage });
    expect(sDoc.devices[0]?.translations[0]).toMatchObject({
      pasid: 0,
      type: "blocked",
      faultReason: VTD_FR.SM_PASID_ENTRY_NOT_PRESENT,
    });
    expect(sDoc.problems.map((p) => p.message)).toEqual([
      "PASID table 0x700000000 is not in the image (a hole, or a page the dump left out): read as zeros",
    ]);
    expect(unitOn(sImage.mem, 0x1400n).translate({ sid: 0, pasid: null, iova: 0n })).toMatchObject({
      faultReason: VTD_FR.SM_PASID_ENTRY_NOT_PRESENT,
    });
    // A root table outside a raw dump.
    const raw = loadMemoryImage(new Uint8Array(0x2000), "raw", { raw: true, base: 0x10_0000 });
    if (raw instanceof ImageInputError) throw new Error(raw.message);
    expect(decodeOk(raw.mem, { rtaddr: 0x1000, coverage: raw.coverage }).problems).toEqual([
      {
        address: "0x1000",
        structure: "root table",
        message:
          "the root table is not in the image (a hole, or a page the dump left out): read as zeros, no device",
      },
    ]);
  });

  it("one first-stage root read through several second stages gets a key per reading", () => {
    const m = machine(true);
    const dir = m.b.setSmContext(m.rta, 0x18, { PASIDE: 1 });
    const g = 0x5_0000_0000;
    const s1 = 0x6_0000_0000;
    const s2 = 0x6_0000_1000;
    m.b.setPasidEntry(dir, 1, { PGTT: 3, DID: 1, AW: 2, SLPTPTR: s1, FLPTR: g });
    m.b.setPasidEntry(dir, 2, { PGTT: 3, DID: 1, AW: 2, SLPTPTR: s2, FLPTR: g });
    m.b.setPasidEntry(dir, 3, { PGTT: 3, DID: 1, AW: 2, SLPTPTR: s1, FLPTR: g });
    m.b.setPasidEntry(dir, 4, { PGTT: 2, DID: 1, AW: 2, SLPTPTR: g });
    const doc = decodeOk(m.mem, { rtaddr: rtaddrOf(m, true) });
    const tr = doc.devices[0]?.translations.filter((t) => t.pasid !== 0) ?? [];
    expect(tr.map((t) => [t.pageTable, t.secondStageTable ?? null])).toEqual([
      [hex(g), hex(s1)],
      [`${hex(g)}#2`, hex(s2)],
      [hex(g), hex(s1)],
      [`${hex(g)}#3`, null],
    ]);
    expect(Object.keys(doc.pageTables).sort()).toEqual(
      [hex(s1), hex(g), hex(s2), `${hex(g)}#2`, `${hex(g)}#3`].sort(),
    );
  });
});

describe("decodeVtd bounds its work on hostile images and says when it stopped", () => {
  /** A legacy root + context table at 0x10000/0x11000 for 00:00.0 (and more devices). */
  function legacyRoot(mem: PhysMemory, tables: ReadonlyArray<[number, number]>): void {
    mem.write64(0x10000, 0x11001, 0);
    tables.forEach(([root, aw], devfn) => {
      mem.write64(0x11000 + devfn * 16, root | 1, 0);
      mem.write64(0x11000 + devfn * 16 + 8, aw | ((devfn + 1) << 8), 0);
    });
  }

  it("a table that loops into itself (512^5 pages named) stops at maxMappings; later tables are marked incomplete", () => {
    const mem = new PhysMemory();
    const loop = 0x20_0000;
    for (let i = 0; i < 512; i++) mem.write64(loop + i * 8, loop | 3, 0);
    const ss = 0x30_0000;
    mem.write64(ss, 0x40_0003, 0); // a sound table after it: L4 -> L3 -> ...
    legacyRoot(mem, [
      [loop, 3],
      [ss, 2],
    ]);
    const doc = decodeOk(mem, { rtaddr: 0x10000, maxMappings: 5000 });
    expect(doc.truncated).toBe(true);
    expect(doc.pageTables[hex(loop)]?.mappings).toHaveLength(5000);
    expect(doc.pageTables[hex(loop)]?.truncated).toBe(true);
    expect(doc.pageTables[hex(ss)]).toMatchObject({ truncated: true, tablePages: 0, mappings: [] });
    expect(doc.problems).toEqual([
      {
        // The leaf that would have started mapping 5001.
        address: hex(loop + (5000 % 512) * 8),
        structure: `second-stage table ${hex(loop)}`,
        message:
          "stopped listing mappings after 5000 (limit maxMappings): this and later page tables are incomplete",
      },
    ]);
    expect(formatVtdDecode(doc)).toContain(
      "; TRUNCATED: a limit cut the decode short (see the problems)\n",
    );
  });

  it("with the default limits, a loop naming 512^4 table pages stops after maxTablePages in all", () => {
    const mem = new PhysMemory();
    const [l5, l4, l3] = [0x20_0000, 0x21_0000, 0x22_0000];
    for (let i = 0; i < 512; i++) {
      mem.write64(l5 + i * 8, l4 | 3, 0);
      mem.write64(l4 + i * 8, l3 | 3, 0);
      mem.write64(l3 + i * 8, 0x23_0003, 0); // every level-2 table: the same empty page
    }
    legacyRoot(mem, [[l5, 3]]);
    const doc = decodeOk(mem, { rtaddr: 0x10000 });
    expect(doc.pageTables[hex(l5)]).toMatchObject({
      tablePages: VTD_DECODE_LIMITS.maxTablePages,
      truncated: true,
      mappings: [],
    });
    expect(doc.problems.map((p) => p.message)).toEqual([
      `enumeration stopped after ${VTD_DECODE_LIMITS.maxTablePages} table pages in all (limit maxTablePages; looping or shared tables?): this and later page tables are incomplete`,
    ]);
  }, 20_000);

  /** Scalable: `devices` context entries sharing one full directory (PDTS 7) of one table of 64 present pass-through entries. */
  function sharedPasidTables(devices: number): PhysMemory {
    const mem = new PhysMemory();
    const dir = 0x100_0000;
    const table = 0x200_0000;
    mem.write64(0x10000, 0x11001, 0);
    for (let i = 0; i < devices; i++)
      mem.write64(0x11000 + i * 32, dir | 1 | (1 << 3) | (7 << 9), 0);
    for (let d = 0; d < 1 << 14; d++) mem.write64(dir + d * 8, table | 1, 0);
    for (let t = 0; t < 64; t++) mem.write64(table + t * 64, 1 | (4 << 6), 1);
    return mem;
  }

  it("PASID directories that all lead to one full table stop at maxPasidEntries; every device keeps its RID_PASID translation", () => {
    const doc = decodeOk(sharedPasidTables(4), { rtaddr: 0x10400, maxPasidEntries: 3000 });
    expect(doc.truncated).toBe(true);
    expect(doc.devices.map((d) => d.truncated)).toEqual([true, true, true, true]);
    for (const d of doc.devices) {
      expect(d.translations[0]).toMatchObject({ pasid: 0, type: "pass-through", ridPasid: true });
    }
    const listed = doc.devices.reduce((n, d) => n + d.translations.length - 1, 0);
    expect(listed).toBeGreaterThan(2000);
    expect(listed).toBeLessThanOrEqual(3000);
    expect(doc.devices.slice(1).map((d) => d.translations.length)).toEqual([1, 1, 1]);
    expect(doc.problems).toEqual([
      {
        address: hex(0x11000),
        structure: "scalable context entry of 00:00.0",
        message:
          "stopped reading PASID directories and tables after 3000 entries (limit maxPasidEntries): from this device on, only RID_PASID translations are certain to be listed",
      },
    ]);
    expect(formatVtdDecode(doc)).toContain("\n00:00.0 (sid 0x0000, PASID list truncated)\n");
  });

  it("PASID translations beyond maxPasidTranslations are not listed; the devices say so", () => {
    const doc = decodeOk(sharedPasidTables(3), { rtaddr: 0x10400, maxPasidTranslations: 100 });
    const listed = doc.devices.reduce((n, d) => n + d.translations.length - 1, 0);
    expect(listed).toBe(100);
    expect(doc.devices.map((d) => [d.truncated, d.translations[0]?.ridPasid])).toEqual([
      [true, true],
      [true, true],
      [true, true],
    ]);
    expect(doc.problems.map((p) => p.message)).toEqual([
      "stopped listing PASID translations after 100 (limit maxPasidTranslations): from this device on, only RID_PASID translations are listed",
    ]);
  });

  it("problems beyond maxProblems are counted in one last problem", () => {
    const mem = new PhysMemory();
    for (let bus = 0; bus < 256; bus++) mem.write64(0x10000 + bus * 16, 0x3, 0); // P and reserved bit 1
    const doc = decodeOk(mem, { rtaddr: 0x10000, maxProblems: 10 });
    expect(doc.problems).toHaveLength(11);
    expect(doc.problems[10]).toEqual({
      address: "0x10000",
      structure: "decode",
      message: "246 more problems not listed (limit maxProblems 10)",
    });
    expect(doc.truncated).toBe(true);
  });

  test.prop(
    [
      fc.integer({ min: 0, max: 0xffff_ffff }),
      fc.integer({ min: 1, max: 20 }),
      fc.integer({ min: 0, max: 6 }),
      fc.option(fc.constantFrom(0, 1, 2, 3), { nil: undefined }),
      fc.option(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { nil: undefined }),
    ],
    { seed: 0x6a4ba6e, numRuns: 60 },
  )(
    "never throws on a garbage image: a document within its limits, or one line",
    (seed, pointers, random, ttm, rtaddrJunk) => {
      const g = garbageImage(seed, { pointers, random, ttm });
      const rtaddr = rtaddrJunk ?? g.rtaddr;
      const limits = {
        maxTablePages: 3000,
        maxMappings: 2000,
        maxPasidEntries: 5000,
        maxPasidTranslations: 300,
        maxProblems: 200,
      };
      const doc = decodeVtd(g.mem, { rtaddr, ...limits });
      if (typeof doc === "string") {
        expect(doc).not.toContain("\n");
        expect(Number((BigInt.asUintN(64, rtaddr) >> 10n) & 3n) >= 2 || rtaddr >= 1n << 52n).toBe(
          true,
        );
        return;
      }
      const tables = Object.values(doc.pageTables);
      const sum = (f: (t: (typeof tables)[number]) => number) =>
        tables.reduce((n, t) => n + f(t), 0);
      expect(sum((t) => t.tablePages)).toBeLessThanOrEqual(limits.maxTablePages);
      expect(sum((t) => t.mappings.length)).toBeLessThanOrEqual(limits.maxMappings);
      expect(doc.problems.length).toBeLessThanOrEqual(limits.maxProblems + 1);
      const others = doc.devices.reduce(
        (n, d) => n + d.translations.filter((t) => !t.ridPasid).length,
        0,
      );
      expect(others).toBeLessThanOrEqual(
        doc.mode === "scalable" ? limits.maxPasidTranslations : 65536,
      );
      if (tables.some((t) => t.truncated) || doc.devices.some((d) => d.truncated))
        expect(doc.truncated).toBe(true);
      for (const d of doc.devices) {
        if (doc.mode === "scalable")
          expect(d.translations.filter((t) => t.ridPasid)).toHaveLength(1);
        for (const t of d.translations) {
          if (t.pageTable !== null) expect(doc.pageTables).toHaveProperty([t.pageTable]);
        }
      }
      // Both outputs are built whole.
      expect(JSON.parse(JSON.stringify(doc)).arch).toBe("vtd");
      expect(formatVtdDecode(doc).endsWith("\n")).toBe(true);
    },
  );
});

describe("images that leave out pages of zeros", () => {
  it("a PASID directory whose second page is all zeros (and left out of the ELF core) is still read", async () => {
    const { VtdHarness } = await import("../machine/vtd-harness.js");
    const { saveElfCore } = await import("@iommu-sim/iommu-core/platform");
    const { loadMemoryImage } = await import("./image-input.js");
    const h = new VtdHarness(
      { units: [{ name: "dmar0" }], devices: [{ name: "acc0", rid: 0x0018, pasidBits: 16 }] },
      1,
    );
    expect(typeof h.addDevice({ name: "acc0", rid: 0x0018, pasidBits: 16 })).not.toBe("string");
    const rtaddr = BigInt(h.rtaddrs()[0]?.value ?? "0");
    // 2^16 PASIDs: an 8 KiB directory whose second page holds no entry.
    const image = loadMemoryImage(saveElfCore(h.m.mem), "core.elf", {});
    if (!("mem" in image)) throw new Error(String(image));
    const doc = decodeVtd(image.mem, { rtaddr, coverage: image.coverage ?? undefined });
    if (typeof doc === "string") throw new Error(doc);
    const rid = doc.devices[0]?.translations.find((t) => t.ridPasid === true);
    expect(rid?.type).toBe("first-stage");
    expect(
      doc.problems.some((p) => /PASID directory 0x[0-9a-f]+ is not in the image/.test(p.message)),
    ).toBe(true);
  });
});
