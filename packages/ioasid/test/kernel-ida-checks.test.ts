// The situations the kernel's own IDA self-test (lib/test_ida.c) exercises, replayed on Ida:
// filling and freeing whole 1024-bit leaves, the top of the ID space, conversions between a
// single word and a full bitmap, destroy at various IDs, and frees of IDs nobody owns.

import { describe, expect, it } from "vitest";
import { IDA_MAX, Ida } from "../src/index.js";

/** A 1024-bit IDA bitmap, the kernel's IDA_BITMAP_BITS. */
const LEAF = 1024;
/** The kernel's BITS_PER_LONG on 64-bit machines. */
const LONG = 64;

/** `ida_alloc_min(ida, min)`: the lowest free ID at or above `min`. */
function allocMin(ida: Ida, min: number): number | string {
  return ida.allocRange(min, IDA_MAX);
}

describe("the kernel's IDA self-test situations", () => {
  it("allocates densely, refills freed holes lowest first, then continues at the end", () => {
    const ida = new Ida();
    for (let i = 0; i < 10_000; i++) expect(ida.alloc()).toBe(i);
    ida.free(20);
    ida.free(21);
    expect([ida.alloc(), ida.alloc(), ida.alloc()]).toEqual([20, 21, 10_000]);
    for (let i = 0; i < 5000; i++) expect(ida.free(i)).toBe(0);
    expect(allocMin(ida, 5000)).toBe(10_001);
    ida.destroy();
    expect(ida.isEmpty()).toBe(true);
  });

  it.each([0, 1, 1023, 1024, 12_345_678])("destroy after one ID at %i leaves it empty", (id) => {
    const ida = new Ida();
    expect(allocMin(ida, id)).toBe(id);
    ida.destroy();
    expect(ida.isEmpty()).toBe(true);
    expect(ida.memory().liveBytes).toBe(0);
  });

  it.each([0, LEAF, LEAF * 64])("fills a whole leaf from %i, then destroy empties it", (base) => {
    const ida = new Ida();
    for (let i = 0; i < LEAF; i++) expect(allocMin(ida, base)).toBe(base + i);
    ida.destroy();
    expect(ida.isEmpty()).toBe(true);
    expect(ida.alloc()).toBe(0);
    expect(ida.isEmpty()).toBe(false);
    expect(ida.free(0)).toBe(0);
    expect(ida.isEmpty()).toBe(true);
  });

  it("allocates up to 2^31 - 1 and then fails with ENOSPC, for runs of 1 to 65536 IDs", () => {
    const ida = new Ida();
    for (let j = 1; j < 65_537; j *= 2) {
      const base = 2 ** 31 - j;
      for (let i = 0; i < j; i++) expect(allocMin(ida, base)).toBe(base + i);
      expect(allocMin(ida, base)).toBe("ENOSPC");
      ida.destroy();
      expect(ida.isEmpty()).toBe(true);
    }
  });

  it("goes from a few IDs in one word to full bitmaps and back to empty", () => {
    const ida = new Ida();
    for (let i = 0; i < LEAF * 2; i += LEAF) {
      expect(allocMin(ida, i + 1)).toBe(i + 1);
      expect(allocMin(ida, i + LONG)).toBe(i + LONG);
      ida.free(i + 1);
      ida.free(i + LONG);
      expect(ida.isEmpty()).toBe(true);
    }
    for (let i = 0; i < LEAF * 2; i++) expect(ida.alloc()).toBe(i);
    for (let i = LEAF * 2; i > 0; i--) expect(ida.free(i - 1)).toBe(0);
    expect(ida.isEmpty()).toBe(true);
    for (let i = 0; i < LEAF + LONG - 4; i++) expect(ida.alloc()).toBe(i);
    for (let i = LEAF + LONG - 4; i > 0; i--) expect(ida.free(i - 1)).toBe(0);
    expect(ida.isEmpty()).toBe(true);
  });

  it("reports every free of an ID it does not hold, whatever shape it is in", () => {
    const ida = new Ida();
    const strays = [0, ...Array.from({ length: 31 }, (_, i) => 2 ** i)];
    const tryStrays = (held: number[]) => {
      for (const id of strays)
        expect(ida.free(id), `free(${id})`).toBe(held.includes(id) ? 0 : "ENOENT");
    };
    tryStrays([]); // empty
    expect(allocMin(ida, 3)).toBe(3); // a single small ID
    tryStrays([]);
    expect(allocMin(ida, 1023)).toBe(1023); // a single bitmap
    tryStrays([]);
    expect(allocMin(ida, (1 << 20) - 1)).toBe((1 << 20) - 1); // a tree
    tryStrays([]);
    expect(ida.free(3)).toBe(0);
    expect(ida.free(1023)).toBe(0);
    expect(ida.free((1 << 20) - 1)).toBe(0);
    expect(ida.isEmpty()).toBe(true);
  });
});
