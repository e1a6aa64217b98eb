import { fc, test } from "@fast-check/vitest";
import { describe, expect } from "vitest";
import { xorshift32 } from "../test/xorshift32.js";
import { type CyclicCursor, IdMap, XA_LIMIT_MAX, type XaLimit } from "./id-map.js";

const TOP = XA_LIMIT_MAX; // 2^32 - 1
const HALF = 2 ** 31;

/** IDs that are not integers in [0, 2^32-1]. */
const BAD_IDS = [-1, -0.5, 1.5, 2 ** 32, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY];

function fresh(): IdMap<string | undefined> {
  return new IdMap<string | undefined>();
}

describe("IdMap: a new map", () => {
  test("a new map is empty", () => {
    const map = fresh();
    expect(map.size).toBe(0);
    expect(map.isEmpty()).toBe(true);
    expect(map.nextId(0)).toBe(-1);
    expect([...map]).toEqual([]);
    expect([...map.keys()]).toEqual([]);
    expect(map.load(0)).toBeUndefined();
    expect(map.has(0)).toBe(false);
    expect(map.has(TOP)).toBe(false);
    expect(map.cursor).toEqual({ next: 0, wrapped: false });
  });

  test("XA_LIMIT_MAX is 2^32-1", () => {
    expect(XA_LIMIT_MAX).toBe(0xffffffff);
  });
});

describe("IdMap: store, load, has, erase", () => {
  test("store makes the ID used and load returns its value", () => {
    const map = fresh();
    expect(map.store(7, "a")).toBe(0);
    expect(map.has(7)).toBe(true);
    expect(map.load(7)).toBe("a");
    expect(map.size).toBe(1);
    expect(map.isEmpty()).toBe(false);
    expect(map.has(6)).toBe(false);
    expect(map.has(8)).toBe(false);
  });

  test("store over a used ID replaces the value and keeps the size", () => {
    const map = fresh();
    map.store(7, "a");
    expect(map.store(7, "b")).toBe(0);
    expect(map.load(7)).toBe("b");
    expect(map.size).toBe(1);
  });

  test("storing undefined keeps the ID used", () => {
    const map = fresh();
    expect(map.store(3, undefined)).toBe(0);
    expect(map.has(3)).toBe(true);
    expect(map.size).toBe(1);
    expect(map.isEmpty()).toBe(false);
    expect(map.load(3)).toBeUndefined();
    expect(map.nextId(0)).toBe(3);
    expect([...map]).toEqual([[3, undefined]]);
    // alloc must step over it.
    expect(map.alloc("x", { min: 3, max: 4 })).toBe(4);
  });

  test("storing undefined over a value keeps the ID used", () => {
    const map = fresh();
    map.store(3, "a");
    map.store(3, undefined);
    expect(map.has(3)).toBe(true);
    expect(map.size).toBe(1);
    expect(map.load(3)).toBeUndefined();
  });

  test("store of an ID that is not an integer in [0, 2^32-1] returns EINVAL and changes nothing", () => {
    const map = fresh();
    for (const id of BAD_IDS) {
      expect(map.store(id, "x"), String(id)).toBe("EINVAL");
    }
    expect(map.size).toBe(0);
    expect([...map]).toEqual([]);
  });

  test("has is false and load undefined for an ID that is not an integer in [0, 2^32-1]", () => {
    const map = fresh();
    map.store(1, "a");
    for (const id of BAD_IDS) {
      expect(map.has(id), String(id)).toBe(false);
      expect(map.load(id), String(id)).toBeUndefined();
    }
  });

  test("erase returns the old value and frees the ID", () => {
    const map = fresh();
    map.store(5, "a");
    map.store(6, "b");
    expect(map.erase(5)).toBe("a");
    expect(map.has(5)).toBe(false);
    expect(map.load(5)).toBeUndefined();
    expect(map.size).toBe(1);
    expect([...map.keys()]).toEqual([6]);
  });

  test("erase of a free ID returns undefined and changes nothing", () => {
    const map = fresh();
    map.store(5, "a");
    expect(map.erase(4)).toBeUndefined();
    expect(map.erase(TOP)).toBeUndefined();
    expect(map.size).toBe(1);
    expect(map.erase(5)).toBe("a");
    expect(map.erase(5)).toBeUndefined();
    expect(map.size).toBe(0);
    expect(map.isEmpty()).toBe(true);
  });

  test("erase of an ID holding undefined frees it", () => {
    const map = fresh();
    map.store(9, undefined);
    expect(map.erase(9)).toBeUndefined();
    expect(map.has(9)).toBe(false);
    expect(map.size).toBe(0);
  });

  test("erase of an ID that is not an integer in [0, 2^32-1] returns undefined", () => {
    const map = fresh();
    map.store(1, "a");
    for (const id of BAD_IDS) expect(map.erase(id), String(id)).toBeUndefined();
    expect(map.size).toBe(1);
  });

  test("IDs at 0, around 2^31 and at 2^32-1 can be stored, found and erased", () => {
    const map = fresh();
    const ids = [0, HALF - 1, HALF, HALF + 1, TOP - 1, TOP];
    for (const id of ids) expect(map.store(id, `v${id}`)).toBe(0);
    for (const id of ids) {
      expect(map.has(id)).toBe(true);
      expect(map.load(id)).toBe(`v${id}`);
    }
    expect(map.size).toBe(ids.length);
    expect([...map.keys()]).toEqual(ids);
    expect(map.nextId(1)).toBe(HALF - 1);
    expect(map.nextId(HALF + 2)).toBe(TOP - 1);
    expect(map.nextId(TOP)).toBe(TOP);
    for (const id of ids) expect(map.erase(id)).toBe(`v${id}`);
    expect(map.isEmpty()).toBe(true);
    expect(map.nextId(0)).toBe(-1);
  });

  test("the map works at low IDs again after its only high ID is erased", () => {
    const map = fresh();
    map.store(TOP, "top");
    expect(map.erase(TOP)).toBe("top");
    expect(map.store(5, "five")).toBe(0);
    expect(map.nextId(0)).toBe(5);
    expect(map.has(TOP)).toBe(false);
    expect(map.alloc("a")).toBe(0);
    expect(map.store(TOP, "again")).toBe(0);
    expect([...map.keys()]).toEqual([0, 5, TOP]);
  });
});

describe("IdMap: alloc", () => {
  test("alloc with no limit starts at 0", () => {
    const map = fresh();
    expect(map.alloc("a")).toBe(0);
    expect(map.alloc("b")).toBe(1);
    expect(map.load(0)).toBe("a");
    expect(map.load(1)).toBe("b");
    expect(map.size).toBe(2);
  });

  test("alloc returns the lowest free ID in the limit", () => {
    const map = fresh();
    for (const id of [10, 11, 13]) map.store(id, "x");
    expect(map.alloc("a", { min: 10, max: 20 })).toBe(12);
    expect(map.alloc("b", { min: 10, max: 20 })).toBe(14);
    expect(map.alloc("c", { min: 0, max: 20 })).toBe(0);
    expect(map.load(12)).toBe("a");
  });

  test("alloc with only min searches up to 2^32-1", () => {
    const map = fresh();
    map.store(100, "x");
    expect(map.alloc("a", { min: 100 })).toBe(101);
  });

  test("alloc with only max searches from 0", () => {
    const map = fresh();
    map.store(0, "x");
    expect(map.alloc("a", { max: 5 })).toBe(1);
  });

  test("alloc hands out an erased ID again as the lowest free", () => {
    const map = fresh();
    for (let i = 0; i < 5; i++) map.alloc(`v${i}`);
    expect(map.erase(2)).toBe("v2");
    expect(map.alloc("again")).toBe(2);
    expect(map.alloc("next")).toBe(5);
    map.erase(0);
    map.erase(4);
    expect(map.alloc("low", { min: 0, max: 10 })).toBe(0);
    expect(map.alloc("mid", { min: 0, max: 10 })).toBe(4);
  });

  test("alloc stores undefined as a used ID", () => {
    const map = fresh();
    expect(map.alloc(undefined)).toBe(0);
    expect(map.has(0)).toBe(true);
    expect(map.alloc(undefined)).toBe(1);
    expect(map.size).toBe(2);
  });

  test("alloc in a full range returns EBUSY and changes nothing", () => {
    const map = fresh();
    for (const id of [5, 6, 7]) map.store(id, "x");
    expect(map.alloc("a", { min: 5, max: 7 })).toBe("EBUSY");
    expect(map.size).toBe(3);
    expect([...map.keys()]).toEqual([5, 6, 7]);
    expect(map.alloc("a", { min: 5, max: 8 })).toBe(8);
  });

  test("alloc with min == max returns that ID, then EBUSY", () => {
    const map = fresh();
    expect(map.alloc("a", { min: 42, max: 42 })).toBe(42);
    expect(map.alloc("b", { min: 42, max: 42 })).toBe("EBUSY");
    expect(map.load(42)).toBe("a");
  });

  test("alloc filled by alloc itself returns EBUSY once the range is used up", () => {
    const map = fresh();
    const got: Array<number | string> = [];
    for (let i = 0; i < 6; i++) got.push(map.alloc("v", { min: 1000, max: 1004 }));
    expect(got).toEqual([1000, 1001, 1002, 1003, 1004, "EBUSY"]);
    map.erase(1002);
    expect(map.alloc("v", { min: 1000, max: 1004 })).toBe(1002);
    expect(map.alloc("v", { min: 1000, max: 1004 })).toBe("EBUSY");
  });

  test("alloc with a bound that is not an integer in [0, 2^32-1] returns EINVAL", () => {
    const map = fresh();
    for (const bad of BAD_IDS) {
      expect(map.alloc("a", { min: bad }), `min ${bad}`).toBe("EINVAL");
      expect(map.alloc("a", { max: bad }), `max ${bad}`).toBe("EINVAL");
    }
    expect(map.size).toBe(0);
  });

  test("alloc with min > max returns EINVAL", () => {
    const map = fresh();
    expect(map.alloc("a", { min: 6, max: 5 })).toBe("EINVAL");
    expect(map.alloc("a", { min: TOP, max: 0 })).toBe("EINVAL");
    expect(map.size).toBe(0);
  });

  test("alloc with min 0x80000000 returns IDs at and above 2^31", () => {
    const map = fresh();
    expect(map.alloc("a", { min: 0x80000000 })).toBe(0x80000000);
    expect(map.alloc("b", { min: 0x80000000 })).toBe(0x80000001);
    map.store(0x80000002, "c");
    expect(map.alloc("d", { min: 0x80000000, max: 0x80000010 })).toBe(0x80000003);
    expect(map.alloc("e", { min: 0x7ffffffe })).toBe(0x7ffffffe);
    expect(map.alloc("f", { min: 0x7ffffffe })).toBe(0x7fffffff);
    expect(map.alloc("g", { min: 0x7ffffffe })).toBe(0x80000004);
    expect([...map.keys()]).toEqual([
      0x7ffffffe, 0x7fffffff, 0x80000000, 0x80000001, 0x80000002, 0x80000003, 0x80000004,
    ]);
  });

  test("alloc at the top of the 32-bit space returns 2^32-1, then EBUSY", () => {
    const map = fresh();
    expect(map.alloc("a", { min: TOP - 1 })).toBe(TOP - 1);
    expect(map.alloc("b", { min: TOP - 1 })).toBe(TOP);
    expect(map.alloc("c", { min: TOP - 1 })).toBe("EBUSY");
    expect(map.alloc("d", { min: TOP, max: TOP })).toBe("EBUSY");
    expect(map.load(TOP)).toBe("b");
    expect(map.nextId(TOP)).toBe(TOP);
  });

  test("alloc steps over a run of used IDs that ends at a chunk or subtree boundary", () => {
    // 2^10 is a leaf of the bitmap; every further 5 bits is a level of the tree.
    for (const b of [2 ** 10, 2 ** 15, 2 ** 20, 2 ** 25, 2 ** 30, HALF, TOP + 1 - 1024]) {
      const map = fresh();
      for (let id = b - 40; id < b; id++) map.store(id, "x");
      expect(map.alloc("a", { min: b - 40 }), `boundary ${b}`).toBe(b);
      expect(map.alloc("b", { min: b - 40, max: b }), `boundary ${b}`).toBe("EBUSY");
      map.erase(b - 7);
      expect(map.alloc("c", { min: b - 40 }), `boundary ${b}`).toBe(b - 7);
      expect(map.alloc("d", { min: b - 40 }), `boundary ${b}`).toBe(b + 1);
    }
  });

  test("alloc steps over a completely used 1024-ID chunk and a completely used 32768-ID subtree", () => {
    const map = fresh();
    for (let id = 0; id < 1024; id++) map.store(id, "x");
    expect(map.alloc("a")).toBe(1024);
    for (let id = 1025; id < 2 ** 15; id++) map.store(id, "x");
    expect(map.alloc("b")).toBe(2 ** 15);
    map.erase(2000);
    expect(map.alloc("c")).toBe(2000);
    expect(map.alloc("d")).toBe(2 ** 15 + 1);
    const base = HALF - 2 ** 15;
    for (let id = base; id < HALF; id++) map.store(id, "y");
    expect(map.alloc("e", { min: base })).toBe(HALF);
    expect(map.alloc("f", { min: base + 5 })).toBe(HALF + 1);
  });

  test("alloc from below a completely used subtree finds an ID erased inside it", () => {
    const map = fresh();
    // [0, 2^15 + 1024): one full 32768-ID subtree and one more full chunk.
    for (let id = 0; id < 2 ** 15 + 1024; id++) map.store(id, "x");
    map.erase(20000);
    // An allocation elsewhere first, so that the search below starts from scratch.
    expect(map.alloc("a", { min: 40000 })).toBe(40000);
    expect(map.alloc("b", { min: 5 })).toBe(20000);
    expect(map.alloc("c", { min: 5 })).toBe(2 ** 15 + 1024);
    map.erase(2 ** 15 + 7);
    expect(map.alloc("d", { min: 40001 })).toBe(40001);
    expect(map.alloc("e", { min: 5 })).toBe(2 ** 15 + 7);
    expect(map.nextId(20001)).toBe(20001);
  });

  test("alloc finds the hole left by erasing inside a range it allocated", () => {
    const map = fresh();
    for (let i = 0; i < 100; i++) map.alloc("v", { min: 50 });
    map.erase(60);
    map.erase(55);
    expect(map.alloc("a", { min: 50 })).toBe(55);
    expect(map.alloc("b", { min: 58 })).toBe(60);
    expect(map.alloc("c", { min: 50 })).toBe(150);
    expect(map.alloc("d", { min: 0 })).toBe(0);
  });
});

describe("IdMap: allocCyclic", () => {
  test("allocCyclic starts at min and moves the cursor past each ID", () => {
    const map = fresh();
    const cursor: CyclicCursor = { next: 0, wrapped: false };
    expect(map.allocCyclic("a", { min: 0, max: 100 }, cursor)).toBe(0);
    expect(cursor).toEqual({ next: 1, wrapped: false });
    expect(map.allocCyclic("b", { min: 0, max: 100 }, cursor)).toBe(1);
    expect(map.allocCyclic("c", { min: 0, max: 100 }, cursor)).toBe(2);
    expect(cursor).toEqual({ next: 3, wrapped: false });
    expect(map.load(1)).toBe("b");
  });

  test("allocCyclic does not hand out a freed ID again before it wraps", () => {
    const map = fresh();
    const cursor: CyclicCursor = { next: 0, wrapped: false };
    for (let i = 0; i < 3; i++) map.allocCyclic("v", {}, cursor);
    map.erase(1);
    expect(map.allocCyclic("v", {}, cursor)).toBe(3);
    expect(cursor.wrapped).toBe(false);
  });

  test("allocCyclic searches from max(min, cursor.next)", () => {
    const map = fresh();
    const cursor: CyclicCursor = { next: 0, wrapped: false };
    expect(map.allocCyclic("a", { min: 10, max: 20 }, cursor)).toBe(10);
    expect(cursor.next).toBe(11);
    cursor.next = 15;
    expect(map.allocCyclic("b", { min: 10, max: 20 }, cursor)).toBe(15);
    map.store(16, "x");
    map.store(17, "x");
    expect(map.allocCyclic("c", { min: 10, max: 20 }, cursor)).toBe(18);
    expect(cursor).toEqual({ next: 19, wrapped: false });
  });

  test("allocCyclic wraps to min when the top of the limit is used and reports wrapped", () => {
    const map = fresh();
    const cursor: CyclicCursor = { next: 0, wrapped: false };
    const limit = { min: 0, max: 3 };
    for (let i = 0; i < 4; i++) expect(map.allocCyclic("v", limit, cursor)).toBe(i);
    expect(cursor).toEqual({ next: 4, wrapped: false });
    map.erase(1);
    expect(map.allocCyclic("w", limit, cursor)).toBe(1);
    expect(cursor).toEqual({ next: 2, wrapped: true });
    map.erase(3);
    expect(map.allocCyclic("x", limit, cursor)).toBe(3);
    expect(cursor).toEqual({ next: 4, wrapped: false });
  });

  test("allocCyclic with the cursor past max wraps to min", () => {
    const map = fresh();
    const cursor: CyclicCursor = { next: 100, wrapped: false };
    map.store(5, "x");
    expect(map.allocCyclic("a", { min: 5, max: 10 }, cursor)).toBe(6);
    expect(cursor).toEqual({ next: 7, wrapped: true });
  });

  test("allocCyclic in a full limit returns EBUSY and leaves the cursor as it was", () => {
    const map = fresh();
    for (const id of [5, 6, 7]) map.store(id, "x");
    const cursor: CyclicCursor = { next: 6, wrapped: true };
    expect(map.allocCyclic("a", { min: 5, max: 7 }, cursor)).toBe("EBUSY");
    expect(cursor).toEqual({ next: 6, wrapped: true });
    cursor.next = 5;
    expect(map.allocCyclic("a", { min: 5, max: 7 }, cursor)).toBe("EBUSY");
    expect(cursor).toEqual({ next: 5, wrapped: true });
    cursor.next = 0;
    expect(map.allocCyclic("a", { min: 5, max: 7 }, cursor)).toBe("EBUSY");
    expect(map.size).toBe(3);
  });

  test("allocCyclic with a bad bound or min > max returns EINVAL and leaves the cursor as it was", () => {
    const map = fresh();
    const cursor: CyclicCursor = { next: 3, wrapped: false };
    for (const bad of BAD_IDS) {
      expect(map.allocCyclic("a", { min: bad }, cursor), `min ${bad}`).toBe("EINVAL");
      expect(map.allocCyclic("a", { max: bad }, cursor), `max ${bad}`).toBe("EINVAL");
    }
    expect(map.allocCyclic("a", { min: 9, max: 8 }, cursor)).toBe("EINVAL");
    expect(cursor).toEqual({ next: 3, wrapped: false });
    expect(map.size).toBe(0);
  });

  test("allocCyclic with a cursor that is not an integer in [0, 2^32-1] returns EINVAL", () => {
    const map = fresh();
    for (const bad of BAD_IDS) {
      const cursor: CyclicCursor = { next: bad, wrapped: false };
      expect(map.allocCyclic("a", {}, cursor), `next ${bad}`).toBe("EINVAL");
      expect(cursor.next).toBe(bad);
    }
    expect(map.size).toBe(0);
  });

  test("allocCyclic uses the map's own cursor when none is passed", () => {
    const map = fresh();
    expect(map.allocCyclic("a")).toBe(0);
    expect(map.allocCyclic("b")).toBe(1);
    expect(map.cursor).toEqual({ next: 2, wrapped: false });
    map.erase(0);
    expect(map.allocCyclic("c")).toBe(2);
    expect(map.allocCyclic("d", { min: 0, max: 2 })).toBe(0);
    expect(map.cursor).toEqual({ next: 1, wrapped: true });
  });

  test("allocCyclic cursors are independent of each other", () => {
    const map = fresh();
    const a: CyclicCursor = { next: 0, wrapped: false };
    const b: CyclicCursor = { next: 100, wrapped: false };
    expect(map.allocCyclic("a", {}, a)).toBe(0);
    expect(map.allocCyclic("b", {}, b)).toBe(100);
    expect(map.allocCyclic("a", {}, a)).toBe(1);
    expect(a).toEqual({ next: 2, wrapped: false });
    expect(b).toEqual({ next: 101, wrapped: false });
    expect(map.cursor).toEqual({ next: 0, wrapped: false });
  });

  test("allocating 2^32-1 wraps the cursor to 0 and the next allocation reports wrapped", () => {
    const map = fresh();
    expect(map.allocCyclic("top", { min: TOP })).toBe(TOP);
    expect(map.cursor).toEqual({ next: 0, wrapped: false });
    expect(map.allocCyclic("a")).toBe(0);
    expect(map.cursor).toEqual({ next: 1, wrapped: true });
    expect(map.allocCyclic("b")).toBe(1);
    expect(map.cursor).toEqual({ next: 2, wrapped: false });
  });

  test("allocating 2^32-1 with an explicit cursor reports the wrap on the next allocation from min", () => {
    const map = fresh();
    const cursor: CyclicCursor = { next: TOP - 1, wrapped: false };
    expect(map.allocCyclic("a", { min: 50 }, cursor)).toBe(TOP - 1);
    expect(cursor).toEqual({ next: TOP, wrapped: false });
    expect(map.allocCyclic("b", { min: 50 }, cursor)).toBe(TOP);
    expect(cursor).toEqual({ next: 0, wrapped: false });
    expect(map.allocCyclic("c", { min: 50 }, cursor)).toBe(50);
    expect(cursor).toEqual({ next: 51, wrapped: true });
    expect(map.allocCyclic("d", { min: 50 }, cursor)).toBe(51);
    expect(cursor).toEqual({ next: 52, wrapped: false });
  });

  test("allocCyclic failing after 2^32-1 was allocated keeps the wrap pending for the next success", () => {
    const map = fresh();
    const cursor: CyclicCursor = { next: 0, wrapped: false };
    map.store(0, "x");
    expect(map.allocCyclic("top", { min: TOP }, cursor)).toBe(TOP);
    expect(map.allocCyclic("a", { min: 0, max: 0 }, cursor)).toBe("EBUSY");
    expect(cursor).toEqual({ next: 0, wrapped: false });
    expect(map.allocCyclic("b", { min: 0, max: 5 }, cursor)).toBe(1);
    expect(cursor).toEqual({ next: 2, wrapped: true });
  });

  test("allocCyclic walks across 2^31 and up to 2^32-1", () => {
    const map = fresh();
    const cursor: CyclicCursor = { next: HALF - 2, wrapped: false };
    const got: Array<number | string> = [];
    for (let i = 0; i < 4; i++) got.push(map.allocCyclic("v", { min: HALF - 2 }, cursor));
    expect(got).toEqual([HALF - 2, HALF - 1, HALF, HALF + 1]);
    cursor.next = TOP;
    expect(map.allocCyclic("v", { min: HALF - 2 }, cursor)).toBe(TOP);
    expect(map.allocCyclic("v", { min: HALF - 2 }, cursor)).toBe(HALF + 2);
    expect(cursor).toEqual({ next: HALF + 3, wrapped: true });
  });
});

describe("IdMap: nextId and iteration", () => {
  test("nextId returns the lowest used ID at or above from, or -1", () => {
    const map = fresh();
    for (const id of [3, 10, HALF, TOP]) map.store(id, "x");
    expect(map.nextId()).toBe(3);
    expect(map.nextId(0)).toBe(3);
    expect(map.nextId(3)).toBe(3);
    expect(map.nextId(4)).toBe(10);
    expect(map.nextId(11)).toBe(HALF);
    expect(map.nextId(HALF + 1)).toBe(TOP);
    map.erase(TOP);
    expect(map.nextId(HALF + 1)).toBe(-1);
  });

  test("nextId beyond 2^32-1 returns -1", () => {
    const map = fresh();
    map.store(TOP, "x");
    expect(map.nextId(2 ** 32)).toBe(-1);
    expect(map.nextId(Number.POSITIVE_INFINITY)).toBe(-1);
  });

  test("nextId rounds a fractional from up and reads a negative or NaN from as 0", () => {
    const map = fresh();
    map.store(0, "a");
    map.store(2, "b");
    expect(map.nextId(0.5)).toBe(2);
    expect(map.nextId(-3)).toBe(0);
    expect(map.nextId(Number.NaN)).toBe(0);
  });

  test("iteration yields entries in ascending ID order whatever the store order", () => {
    const map = fresh();
    const ids = [TOP, 5, HALF, 1024, 0, HALF - 1, 1023, 2 ** 20];
    for (const id of ids) map.store(id, `v${id}`);
    const sorted = [...ids].sort((a, b) => a - b);
    expect([...map]).toEqual(sorted.map((id) => [id, `v${id}`]));
    expect([...map.entries()]).toEqual(sorted.map((id) => [id, `v${id}`]));
    expect([...map.keys()]).toEqual(sorted);
  });

  test("entries(from) and keys(from) start at the first used ID at or above from", () => {
    const map = fresh();
    for (const id of [1, 2, 1000, HALF, TOP]) map.store(id, `v${id}`);
    expect([...map.keys(2)]).toEqual([2, 1000, HALF, TOP]);
    expect([...map.keys(3)]).toEqual([1000, HALF, TOP]);
    expect([...map.entries(HALF)]).toEqual([
      [HALF, `v${HALF}`],
      [TOP, `v${TOP}`],
    ]);
    expect([...map.keys(TOP)]).toEqual([TOP]);
    expect([...map.keys(2 ** 32)]).toEqual([]);
  });

  test("size counts used IDs and isEmpty follows it", () => {
    const map = fresh();
    map.store(1, "a");
    map.alloc("b");
    map.allocCyclic(undefined, { min: 100 });
    expect(map.size).toBe(3);
    map.erase(1);
    map.erase(0);
    map.erase(100);
    expect(map.size).toBe(0);
    expect(map.isEmpty()).toBe(true);
  });
});

describe("IdMap: destroy", () => {
  test("destroy empties the map and the map stays usable", () => {
    const map = fresh();
    for (const id of [0, 1, HALF, TOP]) map.store(id, "x");
    map.destroy();
    expect(map.size).toBe(0);
    expect(map.isEmpty()).toBe(true);
    expect(map.has(TOP)).toBe(false);
    expect(map.load(0)).toBeUndefined();
    expect(map.nextId(0)).toBe(-1);
    expect([...map]).toEqual([]);
    expect(map.alloc("a")).toBe(0);
    expect(map.store(TOP, "b")).toBe(0);
    expect([...map.keys()]).toEqual([0, TOP]);
  });

  test("destroy resets the map's own cursor and a pending wrap", () => {
    const map = fresh();
    map.allocCyclic("a");
    map.allocCyclic("b");
    map.allocCyclic("top", { min: TOP });
    map.destroy();
    expect(map.cursor).toEqual({ next: 0, wrapped: false });
    expect(map.allocCyclic("c")).toBe(0);
    expect(map.cursor).toEqual({ next: 1, wrapped: false });
  });

  test("destroy forgets allocation history: alloc hands out the lowest ID again", () => {
    const map = fresh();
    for (let i = 0; i < 2000; i++) map.alloc("v", { min: 10 });
    map.destroy();
    expect(map.alloc("a", { min: 10 })).toBe(10);
    expect(map.alloc("b", { min: 10 })).toBe(11);
  });
});

// ---------------------------------------------------------------------------------------------
// Model-based property: IdMap against a plain Map with linear scans.

function isIndex(id: number): boolean {
  return Number.isInteger(id) && id >= 0 && id <= TOP;
}

/** The reference: a Map, a linear scan for the lowest free ID, the kernel's cyclic rules. */
class RefIdMap<T> {
  readonly values = new Map<number, T>();
  readonly cursor: CyclicCursor = { next: 0, wrapped: false };
  wrapPending = false;

  lowestFree(min: number, max: number): number {
    for (let id = min; id <= max; id++) if (!this.values.has(id)) return id;
    return -1;
  }

  nextId(from: number): number {
    let best = -1;
    for (const id of this.values.keys()) if (id >= from && (best < 0 || id < best)) best = id;
    return best;
  }

  store(id: number, value: T): 0 | "EINVAL" {
    if (!isIndex(id)) return "EINVAL";
    this.values.set(id, value);
    return 0;
  }

  erase(id: number): T | undefined {
    const v = this.values.get(id);
    this.values.delete(id);
    return v;
  }

  alloc(value: T, limit?: XaLimit): number | "EBUSY" | "EINVAL" {
    const min = limit?.min ?? 0;
    const max = limit?.max ?? TOP;
    if (!isIndex(min) || !isIndex(max) || min > max) return "EINVAL";
    const id = this.lowestFree(min, max);
    if (id < 0) return "EBUSY";
    this.values.set(id, value);
    return id;
  }

  // lib/xarray.c __xa_alloc_cyclic, line by line.
  allocCyclic(value: T, limit?: XaLimit, cursor: CyclicCursor = this.cursor) {
    const min = limit?.min ?? 0;
    const max = limit?.max ?? TOP;
    if (!isIndex(min) || !isIndex(max) || min > max || !isIndex(cursor.next)) return "EINVAL";
    const start = Math.max(min, cursor.next);
    let id = start <= max ? this.lowestFree(start, max) : -1;
    let wrapped = false;
    if (id >= 0 && this.wrapPending) {
      this.wrapPending = false;
      wrapped = true;
    }
    if (id < 0 && start > min) {
      id = this.lowestFree(min, max);
      if (id >= 0) wrapped = true;
    }
    if (id < 0) return "EBUSY";
    this.values.set(id, value);
    cursor.next = (id + 1) % 2 ** 32;
    if (cursor.next === 0) this.wrapPending = true;
    cursor.wrapped = wrapped;
    return id;
  }

  destroy(): void {
    this.values.clear();
    this.cursor.next = 0;
    this.cursor.wrapped = false;
    this.wrapPending = false;
  }
}

const OPS_PER_CASE = 10_000;

describe("IdMap: model", () => {
  test.prop(
    [fc.integer(), fc.constantFrom(0, HALF - 100, 2 ** 32 - 3000), fc.constantFrom(40, 300, 3000)],
    { seed: 1, numRuns: 10 },
  )(
    "random sequences of store/erase/alloc/allocCyclic/load/nextId agree with a Map and linear scans",
    (seed, base, span) => {
      const rnd = xorshift32(seed);
      const below = (n: number) => rnd() % n;
      const map = new IdMap<number | undefined>();
      const ref = new RefIdMap<number | undefined>();
      // Explicit cursors: [map's, reference's]; index 0 stands for the maps' own cursor.
      const cursors: Array<[CyclicCursor, CyclicCursor]> = [
        [map.cursor, ref.cursor],
        [
          { next: 0, wrapped: false },
          { next: 0, wrapped: false },
        ],
        [
          { next: base, wrapped: false },
          { next: base, wrapped: false },
        ],
      ];
      const special = [0, 1, HALF - 1, HALF, HALF + 1, TOP - 1, TOP];
      const bad = [-1, 1.5, 2 ** 32, Number.NaN];
      const inWindow = () => Math.min(TOP, base + below(span));
      const anyId = () => {
        const r = below(100);
        if (r < 3) return bad[below(bad.length)];
        if (r < 7) return special[below(special.length)];
        return inWindow();
      };
      const limit = (): XaLimit | undefined => {
        const r = below(100);
        if (r < 4) return undefined;
        if (r < 7) {
          const b = bad[below(bad.length)];
          return below(2) ? { min: b } : { max: b };
        }
        if (r < 9) {
          const m = inWindow() + 1;
          return { min: m, max: m - 1 };
        }
        if (r < 13) return { min: inWindow() };
        if (r < 16) return { max: inWindow() };
        if (r < 20) return { min: inWindow(), max: TOP };
        const min = inWindow();
        const len = below(4) === 0 ? below(span) : below(24);
        return { min, max: Math.min(TOP, min + len) };
      };
      let op = "";
      const check = (i: number, got: unknown, want: unknown) => {
        if (!Object.is(got, want)) {
          throw new Error(`op #${i} ${op}: got ${String(got)}, want ${String(want)}`);
        }
      };

      for (let i = 0; i < OPS_PER_CASE; i++) {
        const r = below(100);
        const value = below(10) === 0 ? undefined : i;
        if (r < 16) {
          const id = anyId();
          op = `store(${id})`;
          check(i, map.store(id, value), ref.store(id, value));
        } else if (r < 36) {
          // Half the erases hit a used ID.
          const id = below(2) ? ref.nextId(inWindow()) : anyId();
          op = `erase(${id})`;
          check(i, map.erase(id), ref.erase(id));
        } else if (r < 56) {
          const lim = limit();
          op = `alloc(${JSON.stringify(lim)})`;
          check(i, map.alloc(value, lim), ref.alloc(value, lim));
        } else if (r < 71) {
          const lim = limit();
          const c = below(cursors.length);
          const [mc, rc] = cursors[c];
          op = `allocCyclic(${JSON.stringify(lim)}, cursor ${c} ${JSON.stringify(mc)})`;
          const got = c === 0 ? map.allocCyclic(value, lim) : map.allocCyclic(value, lim, mc);
          check(i, got, ref.allocCyclic(value, lim, rc));
          check(i, mc.next, rc.next);
          check(i, mc.wrapped, rc.wrapped);
        } else if (r < 74) {
          const [mc, rc] = cursors[below(cursors.length)];
          const x = below(20);
          const next = x === 0 ? bad[below(bad.length)] : x < 4 ? special[below(7)] : inWindow();
          mc.next = next;
          rc.next = next;
        } else if (r < 84) {
          const id = anyId();
          op = `load/has(${id})`;
          check(i, map.load(id), ref.values.get(id));
          check(i, map.has(id), ref.values.has(id));
        } else if (r < 92) {
          const from = below(8) === 0 ? special[below(special.length)] : inWindow();
          op = `nextId(${from})`;
          check(i, map.nextId(from), ref.nextId(from));
        } else if (r < 99) {
          op = "size";
          check(i, map.size, ref.values.size);
          check(i, map.isEmpty(), ref.values.size === 0);
          const from = inWindow();
          op = `keys(${from})`;
          let want = ref.nextId(from);
          let n = 0;
          for (const id of map.keys(from)) {
            check(i, id, want);
            if (++n === 3) break;
            want = ref.nextId(id + 1);
          }
          if (n < 3) check(i, -1, want);
        } else if (below(20) === 0) {
          map.destroy();
          ref.destroy();
        }
      }

      const want = [...ref.values.entries()].sort((a, b) => a[0] - b[0]);
      expect([...map]).toEqual(want);
      expect([...map.keys()]).toEqual(want.map(([id]) => id));
      expect(map.size).toBe(want.length);
      expect(map.isEmpty()).toBe(want.length === 0);
      expect(map.cursor).toEqual(ref.cursor);
    },
  );
});
