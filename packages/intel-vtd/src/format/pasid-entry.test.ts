import { encode, type FieldValues } from "@iommu-sim/iommu-core/platform";
import {
  checkLayoutReservedBits as checkReservedBits,
  checkLayoutRoundTrip as checkRoundTrip,
  qwordsOf as qwords,
} from "@iommu-sim/iommu-core/testing/layout";
import { describe, expect, it } from "vitest";
import {
  FLPM_5LEVEL,
  PASID_DIR_ENTRY,
  PASID_DIR_ENTRY_SIZE,
  PASID_ENTRY,
  PASID_ENTRY_SIZE,
  PASID_PDE_SHIFT,
  PASID_TBL_ENTRIES,
  PGTT_FL,
  PGTT_NESTED,
  PGTT_PT,
  PGTT_SL,
  pasidDirIndex,
  pasidTableIndex,
} from "./pasid-entry.js";

const ONES = 0xffffffffffffffffn;

describe("PASID structures", () => {
  it("round-trip every field, also at an offset", () => {
    checkRoundTrip(PASID_DIR_ENTRY, 301);
    checkRoundTrip(PASID_ENTRY, 302);
  });
  it("flag every uncovered bit as reserved", () => {
    checkReservedBits(PASID_DIR_ENTRY);
    checkReservedBits(PASID_ENTRY);
  });
  it("reserve bits 11:2 of a directory entry", () => {
    expect(qwords(PASID_DIR_ENTRY.reserved)).toEqual([0xffcn]);
  });
  it("reserve 11:10, 86:80, 139:136 and qw3-qw7 of a PASID entry", () => {
    expect(qwords(PASID_ENTRY.reserved)).toEqual([
      0xc00n,
      0x7f0000n,
      0xf00n,
      ONES,
      ONES,
      ONES,
      ONES,
      ONES,
    ]);
  });
  it("encode a first-stage 5-level supervisor entry as intel_pasid_setup_first_level writes it", () => {
    const w = encode(PASID_ENTRY, {
      P: 1,
      PGTT: PGTT_FL,
      AW: 3,
      DID: 5,
      PWSNP: 1,
      SRE: 1,
      FLPM: FLPM_5LEVEL,
      FLPTR: 0x123456000,
    });
    expect(qwords(w)).toEqual([0x4dn, 0x800005n, 0x123456005n, 0n, 0n, 0n, 0n, 0n]);
  });
  it("encode a second-stage entry as intel_pasid_setup_second_level writes it", () => {
    const w = encode(PASID_ENTRY, {
      P: 1,
      PGTT: PGTT_SL,
      AW: 2,
      SLPTPTR: 0x5000,
      DID: 7,
      PWSNP: 1,
    });
    expect(qwords(w).slice(0, 3)).toEqual([0x5089n, 0x800007n, 0n]);
  });
  it("place the kernel's pasid_set_* bits where its macros put them", () => {
    const qw = (values: FieldValues) => qwords(encode(PASID_ENTRY, values));
    expect(qw({ SLADE: 1 })[0]).toBe(1n << 9n);
    expect(qw({ PGSNP: 1 })[1]).toBe(1n << 24n);
    expect(qw({ CD: 1 })[1]).toBe(1n << 25n);
    expect(qw({ EMTE: 1 })[1]).toBe(1n << 26n);
    expect(qw({ EMT: 6 })[1]).toBe(6n << 27n);
    expect(qw({ PWT: 1 })[1]).toBe(1n << 30n);
    expect(qw({ PCD: 1 })[1]).toBe(1n << 31n);
    expect(qw({ PAT: 0x07040600 })[1]).toBe(0x07040600n << 32n);
    expect(qw({ WPE: 1 })[2]).toBe(1n << 4n);
    expect(qw({ NXE: 1 })[2]).toBe(1n << 5n);
    expect(qw({ EAFE: 1 })[2]).toBe(1n << 7n);
    expect(qw({ FLPM: 1 })[2]).toBe(1n << 2n);
  });
  it("decode PGTT with its named values", () => {
    expect([PGTT_FL, PGTT_SL, PGTT_NESTED, PGTT_PT]).toEqual([1, 2, 3, 4]);
    expect(PASID_ENTRY.field.PGTT?.values?.[PGTT_NESTED]).toBe("nested");
  });
  it("split a 20-bit PASID into a 14-bit directory index and a 6-bit table index", () => {
    expect(pasidDirIndex(0xfffff)).toBe(0x3fff);
    expect(pasidTableIndex(0xfffff)).toBe(0x3f);
    expect(pasidDirIndex(0x40)).toBe(1);
    expect(pasidTableIndex(0x40)).toBe(0);
    expect(PASID_TBL_ENTRIES).toBe(1 << PASID_PDE_SHIFT);
    expect(PASID_TBL_ENTRIES * PASID_ENTRY_SIZE).toBe(4096);
    expect(PASID_ENTRY.bits / 8).toBe(PASID_ENTRY_SIZE);
    expect(PASID_DIR_ENTRY.bits / 8).toBe(PASID_DIR_ENTRY_SIZE);
  });
});
