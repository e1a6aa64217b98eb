// Checks a domain's cache tag list: reference counts, sharing rules, order, errnos and flushing.

import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { Device } from "../device/device.js";
import {
  CACHE_TAG_DEVTLB,
  CACHE_TAG_IOTLB,
  CACHE_TAG_NESTING_DEVTLB,
  CACHE_TAG_NESTING_IOTLB,
  type CacheTag,
  type CacheTagFlusher,
  CacheTagList,
  cacheTagIsDevtlb,
} from "./cache-tag.js";
import { IommuDevice, type IommuOps } from "./iommu-ops.js";

const ops: IommuOps = { name: "tags", pgsizeBitmap: 4096, probeDevice: () => "ENODEV" };
const iommu0 = new IommuDevice("iommu0", ops);
const iommu1 = new IommuDevice("iommu1", ops);
const devA = new Device({ name: "a", rid: 0x100 });
const devB = new Device({ name: "b", rid: 0x200 });

/** A flusher that writes down every call. */
class Recorder implements CacheTagFlusher {
  readonly calls: string[] = [];
  flushRange(tag: CacheTag, start: number, end: number, leaf: boolean): void {
    this.calls.push(`range ${describeTag(tag)} ${start}-${end}${leaf ? " leaf" : ""}`);
  }
  flushAll(tag: CacheTag): void {
    this.calls.push(`all ${describeTag(tag)}`);
  }
  commit(iommu: IommuDevice): void {
    this.calls.push(`commit ${iommu.name}`);
  }
}

function describeTag(t: CacheTag): string {
  return `${t.kind}/${t.iommu.name}/${t.id}/${t.pasid}/${t.dev?.name ?? "-"}`;
}

describe("CacheTagList.assign / unassign", () => {
  it("a second assign of the same tag counts a user; the tag goes with its last user", () => {
    const tags = new CacheTagList();
    expect(tags.assign(CACHE_TAG_IOTLB, iommu0, 5, -1, null)).toBe(0);
    expect(tags.assign(CACHE_TAG_IOTLB, iommu0, 5, -1, null)).toBe(0);
    expect(tags.size).toBe(1);
    expect(tags.find(CACHE_TAG_IOTLB, iommu0, 5, -1, null)?.users).toBe(2);
    expect(tags.unassign(CACHE_TAG_IOTLB, iommu0, 5, -1, null)).toBe(0);
    expect(tags.find(CACHE_TAG_IOTLB, iommu0, 5, -1, null)?.users).toBe(1);
    expect(tags.unassign(CACHE_TAG_IOTLB, iommu0, 5, -1, null)).toBe(0);
    expect(tags.size).toBe(0);
    expect(tags.find(CACHE_TAG_IOTLB, iommu0, 5, -1, null)).toBeUndefined();
  });

  it("unassigning a tag that is not there returns ENOENT", () => {
    const tags = new CacheTagList();
    expect(tags.unassign(CACHE_TAG_IOTLB, iommu0, 5, -1, null)).toBe("ENOENT");
    expect(tags.assign(CACHE_TAG_IOTLB, iommu0, 5, -1, null)).toBe(0);
    expect(tags.unassign(CACHE_TAG_IOTLB, iommu0, 5, -1, null)).toBe(0);
    expect(tags.unassign(CACHE_TAG_IOTLB, iommu0, 5, -1, null)).toBe("ENOENT");
  });

  it("IOTLB tags are shared by the devices behind one IOMMU", () => {
    const tags = new CacheTagList();
    expect(tags.assign(CACHE_TAG_IOTLB, iommu0, 5, 3, devA)).toBe(0);
    expect(tags.assign(CACHE_TAG_IOTLB, iommu0, 5, 3, devB)).toBe(0);
    expect(tags.size).toBe(1);
    const tag = tags.tags[0];
    expect(tag.users).toBe(2);
    expect(tag.dev).toBeNull();
    // Any device's unassign drops a user of the shared tag.
    expect(tags.unassign(CACHE_TAG_IOTLB, iommu0, 5, 3, devB)).toBe(0);
    expect(tags.unassign(CACHE_TAG_IOTLB, iommu0, 5, 3, null)).toBe(0);
    expect(tags.size).toBe(0);
  });

  it("device-TLB tags are per device", () => {
    const tags = new CacheTagList();
    expect(tags.assign(CACHE_TAG_DEVTLB, iommu0, 5, 3, devA)).toBe(0);
    expect(tags.assign(CACHE_TAG_DEVTLB, iommu0, 5, 3, devB)).toBe(0);
    expect(tags.size).toBe(2);
    expect(tags.find(CACHE_TAG_DEVTLB, iommu0, 5, 3, devA)?.dev).toBe(devA);
    expect(tags.find(CACHE_TAG_DEVTLB, iommu0, 5, 3, devB)?.dev).toBe(devB);
    expect(tags.unassign(CACHE_TAG_DEVTLB, iommu0, 5, 3, devA)).toBe(0);
    expect(tags.unassign(CACHE_TAG_DEVTLB, iommu0, 5, 3, devA)).toBe("ENOENT");
    expect(tags.find(CACHE_TAG_DEVTLB, iommu0, 5, 3, devB)?.users).toBe(1);
  });

  it("the IOMMU, the ID, the PASID and the kind each make a tag of its own", () => {
    const tags = new CacheTagList();
    tags.assign(CACHE_TAG_IOTLB, iommu0, 5, -1, null);
    tags.assign(CACHE_TAG_IOTLB, iommu1, 5, -1, null);
    tags.assign(CACHE_TAG_IOTLB, iommu0, 6, -1, null);
    tags.assign(CACHE_TAG_IOTLB, iommu0, 5, 1, null);
    tags.assign(CACHE_TAG_NESTING_IOTLB, iommu0, 5, -1, null);
    expect(tags.size).toBe(5);
    expect(tags.tags.every((t) => t.users === 1)).toBe(true);
  });

  it("a device-TLB tag without a device returns EINVAL and adds nothing", () => {
    const tags = new CacheTagList();
    expect(tags.assign(CACHE_TAG_DEVTLB, iommu0, 5, -1, null)).toBe("EINVAL");
    expect(tags.assign(CACHE_TAG_NESTING_DEVTLB, iommu0, 5, -1, null)).toBe("EINVAL");
    expect(tags.size).toBe(0);
  });

  it("IOTLB tags come before device-TLB tags, whatever the order of assignment", () => {
    const tags = new CacheTagList();
    tags.assign(CACHE_TAG_DEVTLB, iommu0, 1, -1, devA);
    tags.assign(CACHE_TAG_IOTLB, iommu0, 1, -1, null);
    tags.assign(CACHE_TAG_NESTING_DEVTLB, iommu1, 2, -1, devB);
    tags.assign(CACHE_TAG_NESTING_IOTLB, iommu1, 2, -1, null);
    tags.assign(CACHE_TAG_DEVTLB, iommu0, 1, 4, devB);
    tags.assign(CACHE_TAG_IOTLB, iommu0, 1, 4, null);
    const kinds = tags.tags.map((t) => cacheTagIsDevtlb(t.kind));
    expect(kinds).toEqual([false, false, false, true, true, true]);
  });

  it("cacheTagIsDevtlb names the two device-TLB kinds", () => {
    expect([0, 1, 2, 3].map(cacheTagIsDevtlb)).toEqual([false, true, false, true]);
    expect(CACHE_TAG_IOTLB).not.toBe(CACHE_TAG_DEVTLB);
  });
});

describe("CacheTagList flushing", () => {
  function twoIommus(): CacheTagList {
    const tags = new CacheTagList();
    tags.assign(CACHE_TAG_IOTLB, iommu0, 1, -1, null);
    tags.assign(CACHE_TAG_DEVTLB, iommu0, 1, -1, devA);
    tags.assign(CACHE_TAG_IOTLB, iommu1, 2, -1, null);
    tags.assign(CACHE_TAG_DEVTLB, iommu1, 2, -1, devB);
    return tags;
  }

  it("flushRange invalidates the range under every tag, in list order, then commits once per IOMMU", () => {
    const tags = twoIommus();
    const rec = new Recorder();
    tags.flushRange(rec, 0x1000, 0x2fff, true);
    expect(rec.calls.slice(0, 4)).toEqual(
      tags.tags.map((t) => `range ${describeTag(t)} 4096-12287 leaf`),
    );
    expect(rec.calls.slice(4).sort()).toEqual(["commit iommu0", "commit iommu1"]);
  });

  it("flushAll invalidates everything under every tag, then commits once per IOMMU", () => {
    const tags = twoIommus();
    const rec = new Recorder();
    tags.flushAll(rec);
    expect(rec.calls.slice(0, 4)).toEqual(tags.tags.map((t) => `all ${describeTag(t)}`));
    expect(rec.calls.slice(4).sort()).toEqual(["commit iommu0", "commit iommu1"]);
  });

  it("a tag with several users is flushed once", () => {
    const tags = new CacheTagList();
    tags.assign(CACHE_TAG_IOTLB, iommu0, 1, -1, null);
    tags.assign(CACHE_TAG_IOTLB, iommu0, 1, -1, null);
    const rec = new Recorder();
    tags.flushRange(rec, 0, 4095, false);
    expect(rec.calls).toEqual(["range 0/iommu0/1/-1/- 0-4095", "commit iommu0"]);
  });

  it("an empty list flushes and commits nothing", () => {
    const rec = new Recorder();
    new CacheTagList().flushRange(rec, 0, 4095, false);
    new CacheTagList().flushAll(rec);
    expect(rec.calls).toEqual([]);
  });

  it("a flusher without commit is fine", () => {
    const tags = twoIommus();
    const seen: number[] = [];
    const flusher: CacheTagFlusher = {
      flushRange: (t) => seen.push(t.id),
      flushAll: (t) => seen.push(-t.id),
    };
    tags.flushRange(flusher, 0, 4095, false);
    tags.flushAll(flusher);
    expect(seen.length).toBe(8);
  });
});

describe("CacheTagList against a reference multiset", () => {
  const iommus = [iommu0, iommu1];
  const devs = [null, devA, devB];
  const op = fc.record({
    assign: fc.boolean(),
    kind: fc.integer({ min: 0, max: 3 }),
    iommu: fc.integer({ min: 0, max: 1 }),
    id: fc.integer({ min: 1, max: 2 }),
    pasid: fc.integer({ min: -1, max: 1 }),
    dev: fc.integer({ min: 0, max: 2 }),
  });

  test.prop([fc.array(op, { maxLength: 60 })], { seed: 20240611, numRuns: 300 })(
    "counts, errnos, sharing, order and flush calls match the obvious model",
    (ops) => {
      const tags = new CacheTagList();
      // Key → users. The device is part of the key only for device-TLB kinds.
      const ref = new Map<string, number>();
      for (const o of ops) {
        const dev = devs[o.dev];
        const devtlb = o.kind === CACHE_TAG_DEVTLB || o.kind === CACHE_TAG_NESTING_DEVTLB;
        const key = `${o.kind}/${o.iommu}/${o.id}/${o.pasid}/${devtlb ? (dev?.name ?? "-") : "-"}`;
        const users = ref.get(key) ?? 0;
        if (o.assign) {
          const want = devtlb && dev === null ? "EINVAL" : 0;
          expect(tags.assign(o.kind, iommus[o.iommu], o.id, o.pasid, dev)).toBe(want);
          if (want === 0) ref.set(key, users + 1);
        } else {
          const want = users === 0 ? "ENOENT" : 0;
          expect(tags.unassign(o.kind, iommus[o.iommu], o.id, o.pasid, dev)).toBe(want);
          if (users === 1) ref.delete(key);
          else if (users > 1) ref.set(key, users - 1);
        }
        expect(tags.size).toBe(ref.size);
      }
      const got = new Map<string, number>();
      for (const t of tags.tags) {
        const key = `${t.kind}/${iommus.indexOf(t.iommu)}/${t.id}/${t.pasid}/${t.dev?.name ?? "-"}`;
        expect(got.has(key)).toBe(false);
        got.set(key, t.users);
      }
      expect(got).toEqual(ref);
      const firstDevtlb = tags.tags.findIndex((t) => cacheTagIsDevtlb(t.kind));
      if (firstDevtlb >= 0) {
        expect(tags.tags.slice(firstDevtlb).every((t) => cacheTagIsDevtlb(t.kind))).toBe(true);
      }
      const rec = new Recorder();
      tags.flushRange(rec, 0, 0xfff, false);
      const commits = rec.calls.filter((c) => c.startsWith("commit"));
      expect(rec.calls.length - commits.length).toBe(tags.size);
      expect(commits.length).toBe(new Set(tags.tags.map((t) => t.iommu)).size);
      expect(new Set(commits).size).toBe(commits.length);
      // The commits come after every tag's invalidation.
      expect(rec.calls.slice(rec.calls.length - commits.length)).toEqual(commits);
    },
  );
});
