// Tests of the IOTLB gather's range bookkeeping and of add-page syncing before it grows wrong.

import { beforeEach, describe, expect, test } from "vitest";
import type { Device } from "../device/device.js";
import { MOCK_REG } from "../mock/mock-format.js";
import { mmioRead64 } from "../platform/mmio.js";
import { MockMachine } from "../testing/mock-machine.js";
import type { IommuDomain } from "./iommu-domain.js";
import { iommuAttachDevice, iommuPagingDomainAlloc } from "./iommu-group.js";
import { iommuIotlbGatherAddPage, iommuIotlbSync } from "./iommu-map.js";
import { IommuIotlbGather } from "./iotlb-gather.js";

const SZ_4K = 0x1000;
const SZ_2M = 0x20_0000;

describe("IommuIotlbGather", () => {
  test("a new gather is empty: start at infinity, end 0, no page size, nothing to free", () => {
    const g = new IommuIotlbGather();
    expect([g.start, g.end, g.pgsize, g.freelist, g.queued]).toEqual([Infinity, 0, 0, [], false]);
    expect(g.isEmpty).toBe(true);
    expect(g.size).toBe(0);
  });

  test("addRange grows the range to cover every range added, in any order", () => {
    const g = new IommuIotlbGather();
    g.addRange(0x5000, SZ_4K);
    expect([g.start, g.end, g.size]).toEqual([0x5000, 0x5fff, SZ_4K]);
    g.addRange(0x9000, 2 * SZ_4K);
    expect([g.start, g.end, g.size]).toEqual([0x5000, 0xafff, 0x6000]);
    g.addRange(0x1000, SZ_4K);
    expect([g.start, g.end, g.size]).toEqual([0x1000, 0xafff, 0xa000]);
    g.addRange(0x6000, SZ_4K);
    expect([g.start, g.end]).toEqual([0x1000, 0xafff]);
    expect(g.isEmpty).toBe(false);
  });

  test("a range at IOVA 0 makes the gather non-empty", () => {
    const g = new IommuIotlbGather();
    g.addRange(0, SZ_4K);
    expect([g.start, g.end, g.size, g.isEmpty]).toEqual([0, 0xfff, SZ_4K, false]);
  });

  test("addRange keeps exact addresses above 2^32", () => {
    const g = new IommuIotlbGather();
    g.addRange(2 ** 47, SZ_2M);
    g.addRange(2 ** 47 - SZ_4K, SZ_4K);
    expect([g.start, g.end, g.size]).toEqual([2 ** 47 - SZ_4K, 2 ** 47 + SZ_2M - 1, SZ_2M + SZ_4K]);
  });

  test("isDisjoint: an empty gather is disjoint from nothing", () => {
    expect(new IommuIotlbGather().isDisjoint(0x5000, SZ_4K)).toBe(false);
  });

  test("isDisjoint: touching on either side or overlapping is not disjoint; a gap of one byte is", () => {
    const g = new IommuIotlbGather();
    g.addRange(0x10000, 0x2000);
    expect(g.isDisjoint(0xf000, SZ_4K)).toBe(false); // ends right before start
    expect(g.isDisjoint(0x12000, SZ_4K)).toBe(false); // starts right after end
    expect(g.isDisjoint(0x11000, SZ_4K)).toBe(false); // inside
    expect(g.isDisjoint(0x8000, 0x20000)).toBe(false); // around
    expect(g.isDisjoint(0xe000, SZ_4K)).toBe(true); // one page before
    expect(g.isDisjoint(0x13000, SZ_4K)).toBe(true); // one page after
    expect(g.isDisjoint(0xefff, SZ_4K)).toBe(true); // ends one byte short
    expect(g.isDisjoint(0x12001, SZ_4K)).toBe(true); // starts one byte late
  });

  test("init empties a used gather, its freelist and its queued flag", () => {
    const g = new IommuIotlbGather();
    g.addRange(0x4000, SZ_4K);
    g.pgsize = SZ_4K;
    g.freelist.push(0x1000_0000);
    g.queued = true;
    g.init();
    expect([g.start, g.end, g.pgsize, g.freelist, g.queued, g.isEmpty]).toEqual([
      Infinity,
      0,
      0,
      [],
      false,
      true,
    ]);
  });
});

describe("iommuIotlbGatherAddPage", () => {
  let m: MockMachine;
  let domain: IommuDomain;
  let g: IommuIotlbGather;

  /** Range invalidations the mock driver has issued so far. */
  const syncs = () => m.driver.invalidations.range;
  /** The range of the last range invalidation, from the hardware's registers. */
  const lastSync = () => [
    mmioRead64(m.hw, MOCK_REG.INV_ADDR_LO),
    m.hw.read32(MOCK_REG.INV_PAGES) * SZ_4K,
  ];

  beforeEach(() => {
    m = new MockMachine();
    const dev = m.addDevice({ name: "dev", rid: 0x10 }) as Device;
    domain = iommuPagingDomainAlloc(dev) as IommuDomain;
    // Attached, the domain has an IOTLB cache tag, so a sync is a register write the test sees.
    expect(iommuAttachDevice(domain, dev)).toBe(0);
    g = new IommuIotlbGather();
  });

  test("adjacent pages of one size are gathered without a sync; one sync covers them all", () => {
    iommuIotlbGatherAddPage(domain, g, 0x10000, SZ_4K);
    iommuIotlbGatherAddPage(domain, g, 0x11000, SZ_4K);
    iommuIotlbGatherAddPage(domain, g, 0xf000, SZ_4K);
    expect(syncs()).toBe(0);
    expect([g.start, g.end, g.pgsize]).toEqual([0xf000, 0x11fff, SZ_4K]);
    iommuIotlbSync(domain, g);
    expect(syncs()).toBe(1);
    expect(lastSync()).toEqual([0xf000, 3 * SZ_4K]);
    expect(g.isEmpty).toBe(true);
  });

  test("a page overlapping the gathered range is gathered without a sync", () => {
    iommuIotlbGatherAddPage(domain, g, 0x10000, SZ_4K);
    iommuIotlbGatherAddPage(domain, g, 0x10000, SZ_4K);
    expect(syncs()).toBe(0);
    expect(g.size).toBe(SZ_4K);
  });

  test("a disjoint page syncs what was gathered first, then starts a new range", () => {
    iommuIotlbGatherAddPage(domain, g, 0x10000, SZ_4K);
    iommuIotlbGatherAddPage(domain, g, 0x11000, SZ_4K);
    iommuIotlbGatherAddPage(domain, g, 0x20000, SZ_4K);
    expect(syncs()).toBe(1);
    expect(lastSync()).toEqual([0x10000, 2 * SZ_4K]);
    expect([g.start, g.end, g.pgsize]).toEqual([0x20000, 0x20fff, SZ_4K]);
  });

  test("a page of another size syncs first, even when adjacent", () => {
    iommuIotlbGatherAddPage(domain, g, SZ_2M - SZ_4K, SZ_4K);
    iommuIotlbGatherAddPage(domain, g, SZ_2M, SZ_2M);
    expect(syncs()).toBe(1);
    expect(lastSync()).toEqual([SZ_2M - SZ_4K, SZ_4K]);
    expect([g.start, g.end, g.pgsize]).toEqual([SZ_2M, 2 * SZ_2M - 1, SZ_2M]);
    iommuIotlbGatherAddPage(domain, g, 2 * SZ_2M, SZ_2M);
    expect(syncs()).toBe(1);
    iommuIotlbGatherAddPage(domain, g, 3 * SZ_2M, SZ_4K);
    expect(syncs()).toBe(2);
    expect(lastSync()).toEqual([SZ_2M, 2 * SZ_2M]);
  });

  test("syncing an empty gather invalidates nothing", () => {
    iommuIotlbSync(domain, g);
    expect(syncs()).toBe(0);
  });
});
