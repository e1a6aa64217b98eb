import { fc, test } from "@fast-check/vitest";
import { describe, expect } from "vitest";
import { xorshift32 } from "../test/xorshift32.js";
import { type ChargeNode, ChargeTree } from "./charge-tree.js";
import {
  INVALID_IOASID,
  type Ioasid,
  type IoasidPrivate,
  IoasidSet,
  IoasidSpace,
  pasidValid,
} from "./ioasid.js";

const HALF = 2 ** 31;
/** The highest ID a space hands out: one below INVALID_IOASID. */
const ID_MAX = 0xfffffffe;
/** PCIe PASIDs are 20 bits wide. */
const PASID_MAX = 2 ** 20 - 1;

/** IDs that are not integers in [0, 2^32-1]. */
const BAD_IDS = [-1, -0.5, 1.5, 2 ** 32, Number.NaN, Number.POSITIVE_INFINITY];

function child(tree: ChargeTree, parent: ChargeNode, name: string, max?: number): ChargeNode {
  const n = tree.createNode(parent, name, max);
  if (typeof n === "string") throw new Error(`createNode(${name}) failed: ${n}`);
  return n;
}

/** The `current` of each node, for comparing before and after. */
function currents(...nodes: ChargeNode[]): number[] {
  return nodes.map((n) => n.current);
}

describe("INVALID_IOASID and pasidValid", () => {
  test("INVALID_IOASID is (ioasid_t)-1", () => {
    expect(INVALID_IOASID).toBe(0xffffffff);
  });

  test("pasidValid is false for INVALID_IOASID", () => {
    expect(pasidValid(INVALID_IOASID)).toBe(false);
  });

  test("pasidValid is true for 0 and any other ID", () => {
    expect(pasidValid(0)).toBe(true);
    expect(pasidValid(1)).toBe(true);
    expect(pasidValid(PASID_MAX)).toBe(true);
    expect(pasidValid(ID_MAX)).toBe(true);
  });
});

describe("IoasidSet", () => {
  test("a set keeps its name and is distinct from another set of the same name", () => {
    const a = new IoasidSet("sva");
    const b = new IoasidSet("sva");
    expect(a.name).toBe("sva");
    const space = new IoasidSpace();
    const id = space.alloc(a, 0, 10, 1);
    expect(space.find(b, id as Ioasid)).toBe("EACCES");
  });
});

describe("IoasidSpace: alloc", () => {
  test("a new space is empty", () => {
    const space = new IoasidSpace();
    expect(space.size()).toBe(0);
    expect(space.size(new IoasidSet("s"))).toBe(0);
    expect([...space.allocated()]).toEqual([]);
    expect(space.has(0)).toBe(false);
  });

  test("alloc returns the lowest free ID in [min, max]", () => {
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    expect(space.alloc(set, 1, 100, 1)).toBe(1);
    expect(space.alloc(set, 1, 100, 2)).toBe(2);
    expect(space.alloc(set, 1, 100, 3)).toBe(3);
    expect(space.free(2)).toBe(0);
    expect(space.alloc(set, 1, 100, 4)).toBe(2);
    expect(space.alloc(set, 0, 100, 5)).toBe(0);
    expect(space.alloc(set, 50, 100, 6)).toBe(50);
    expect([...space.allocated()]).toEqual([0, 1, 2, 3, 50]);
  });

  test("alloc with min == max returns that ID, then ENOSPC", () => {
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    expect(space.alloc(set, 7, 7, 1)).toBe(7);
    expect(space.alloc(set, 7, 7, 2)).toBe("ENOSPC");
    expect(space.find(set, 7)).toBe(1);
  });

  test("alloc in a full range returns ENOSPC and allocates nothing", () => {
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    for (let i = 0; i < 4; i++) expect(space.alloc(set, 10, 13, i)).toBe(10 + i);
    expect(space.alloc(set, 10, 13, 99)).toBe("ENOSPC");
    expect(space.size()).toBe(4);
    expect(space.size(set)).toBe(4);
    expect([...space.allocated()]).toEqual([10, 11, 12, 13]);
    expect(space.alloc(set, 10, 14, 99)).toBe(14);
  });

  test("IDs are unique across sets: sets share one global space", () => {
    const space = new IoasidSpace();
    const a = new IoasidSet("a");
    const b = new IoasidSet("b");
    expect(space.alloc(a, 1, 10, 1)).toBe(1);
    expect(space.alloc(b, 1, 10, 2)).toBe(2);
    expect(space.alloc(a, 1, 10, 3)).toBe(3);
    expect(space.alloc(b, 1, 2, 4)).toBe("ENOSPC");
    expect(space.setOf(1)).toBe(a);
    expect(space.setOf(2)).toBe(b);
    expect(space.size(a)).toBe(2);
    expect(space.size(b)).toBe(1);
    expect(space.size()).toBe(3);
  });

  test("alloc with a bound that is not an integer in [0, 2^32-1] returns EINVAL", () => {
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    for (const bad of BAD_IDS) {
      expect(space.alloc(set, bad, 10, 1), `min ${bad}`).toBe("EINVAL");
      expect(space.alloc(set, 0, bad, 1), `max ${bad}`).toBe("EINVAL");
    }
    expect(space.size()).toBe(0);
  });

  test("alloc with min > max returns EINVAL", () => {
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    expect(space.alloc(set, 11, 10, 1)).toBe("EINVAL");
    expect(space.size()).toBe(0);
  });

  test("alloc with max >= INVALID_IOASID returns EINVAL", () => {
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    expect(space.alloc(set, 0, INVALID_IOASID, 1)).toBe("EINVAL");
    expect(space.alloc(set, INVALID_IOASID, INVALID_IOASID, 1)).toBe("EINVAL");
    expect(space.size()).toBe(0);
  });

  test("alloc can hand out INVALID_IOASID - 1 and IDs around 2^31", () => {
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    expect(space.alloc(set, ID_MAX, ID_MAX, 1)).toBe(ID_MAX);
    expect(space.alloc(set, ID_MAX - 1, ID_MAX, 2)).toBe(ID_MAX - 1);
    expect(space.alloc(set, ID_MAX - 1, ID_MAX, 3)).toBe("ENOSPC");
    expect(space.alloc(set, HALF - 1, ID_MAX, 4)).toBe(HALF - 1);
    expect(space.alloc(set, HALF - 1, ID_MAX, 5)).toBe(HALF);
    expect(space.alloc(set, 0x80000000, ID_MAX, 6)).toBe(0x80000001);
    expect([...space.allocated()]).toEqual([HALF - 1, HALF, HALF + 1, ID_MAX - 1, ID_MAX]);
    expect(space.find(set, ID_MAX)).toBe(1);
    expect(space.free(ID_MAX)).toBe(0);
    expect(space.has(ID_MAX)).toBe(false);
  });

  test("alloc with a charge node on a space without a charge tree returns EINVAL", () => {
    const tree = new ChargeTree({ capacity: 10 });
    const user = child(tree, tree.root, "user");
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    expect(space.alloc(set, 0, 10, 1, user)).toBe("EINVAL");
    expect(space.alloc(set, 0, 10, 1, tree.root)).toBe("EINVAL");
    expect(space.size()).toBe(0);
    expect(currents(tree.root, user)).toEqual([0, 0]);
    // The same space allocates without a node.
    expect(space.alloc(set, 0, 10, 1)).toBe(0);
  });

  test("alloc checks its bounds before charging", () => {
    const tree = new ChargeTree({ capacity: 10 });
    const user = child(tree, tree.root, "user", 0);
    const space = new IoasidSpace({ charges: tree });
    const set = new IoasidSet("s");
    expect(space.alloc(set, 5, 4, 1, user)).toBe("EINVAL");
    expect(user.events.max).toBe(0);
    expect(user.eventsLocal.max).toBe(0);
  });
});

describe("IoasidSpace: free", () => {
  test("free returns 0 and the ID can be allocated again", () => {
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    space.alloc(set, 1, 5, 1);
    space.alloc(set, 1, 5, 2);
    expect(space.free(1)).toBe(0);
    expect(space.has(1)).toBe(false);
    expect(space.find(null, 1)).toBe("ENOENT");
    expect(space.setOf(1)).toBeUndefined();
    expect(space.size()).toBe(1);
    expect(space.size(set)).toBe(1);
    expect(space.alloc(set, 1, 5, 3)).toBe(1);
  });

  test("free of an ID that is not allocated returns ENOENT", () => {
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    expect(space.free(0)).toBe("ENOENT");
    expect(space.free(ID_MAX)).toBe("ENOENT");
    space.alloc(set, 3, 3, 1);
    expect(space.free(4)).toBe("ENOENT");
    expect(space.free(3)).toBe(0);
    expect(space.free(3)).toBe("ENOENT");
    expect(space.size(set)).toBe(0);
  });

  test("free of INVALID_IOASID returns EINVAL", () => {
    const space = new IoasidSpace();
    expect(space.free(INVALID_IOASID)).toBe("EINVAL");
  });

  test("free of an ID that is not an integer in [0, 2^32-1] returns EINVAL", () => {
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    space.alloc(set, 0, 5, 1);
    for (const bad of BAD_IDS) expect(space.free(bad), String(bad)).toBe("EINVAL");
    expect(space.size()).toBe(1);
  });
});

describe("IoasidSpace: find and setData", () => {
  test("find returns the private data for the owning set", () => {
    const space = new IoasidSpace<{ mm: string } | null>();
    const set = new IoasidSet("sva");
    const mm = { mm: "init" };
    const id = space.alloc(set, 1, 10, mm) as Ioasid;
    expect(space.find(set, id)).toBe(mm);
  });

  test("find with a null set matches an ID of any set", () => {
    const space = new IoasidSpace();
    const a = new IoasidSet("a");
    const b = new IoasidSet("b");
    space.alloc(a, 1, 1, 10);
    space.alloc(b, 2, 2, 20);
    expect(space.find(null, 1)).toBe(10);
    expect(space.find(null, 2)).toBe(20);
  });

  test("find with another set returns EACCES", () => {
    const space = new IoasidSpace();
    const a = new IoasidSet("a");
    const b = new IoasidSet("b");
    space.alloc(a, 1, 1, 10);
    expect(space.find(b, 1)).toBe("EACCES");
  });

  test("find of an ID that is not allocated returns ENOENT, with or without a set", () => {
    const space = new IoasidSpace();
    const a = new IoasidSet("a");
    expect(space.find(null, 1)).toBe("ENOENT");
    expect(space.find(a, 1)).toBe("ENOENT");
    expect(space.find(a, INVALID_IOASID)).toBe("ENOENT");
    for (const bad of BAD_IDS) expect(space.find(a, bad), String(bad)).toBe("ENOENT");
    space.alloc(a, 1, 1, 10);
    space.free(1);
    expect(space.find(a, 1)).toBe("ENOENT");
  });

  test("find with a getter that refuses returns null", () => {
    const space = new IoasidSpace<{ users: number }>();
    const set = new IoasidSet("s");
    const priv = { users: 0 };
    space.alloc(set, 1, 1, priv);
    expect(space.find(set, 1, (p) => p.users > 0)).toBeNull();
    expect(space.find(null, 1, () => false)).toBeNull();
  });

  test("find with a getter that accepts returns the data, and the getter sees the data", () => {
    const space = new IoasidSpace<{ users: number }>();
    const set = new IoasidSet("s");
    const priv = { users: 1 };
    space.alloc(set, 1, 1, priv);
    const seen: unknown[] = [];
    const got = space.find(set, 1, (p) => {
      seen.push(p);
      p.users++; // taking a reference, as the kernel's getter may
      return true;
    });
    expect(got).toBe(priv);
    expect(seen).toEqual([priv]);
    expect(priv.users).toBe(2);
  });

  test("find does not call the getter for an unallocated ID or another set", () => {
    const space = new IoasidSpace();
    const a = new IoasidSet("a");
    const b = new IoasidSet("b");
    space.alloc(a, 1, 1, 10);
    let calls = 0;
    const getter = () => {
      calls++;
      return true;
    };
    expect(space.find(a, 2, getter)).toBe("ENOENT");
    expect(space.find(b, 1, getter)).toBe("EACCES");
    expect(calls).toBe(0);
  });

  test("setData replaces the private data of an allocated ID", () => {
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    space.alloc(set, 1, 1, 10);
    expect(space.setData(1, 11)).toBe(0);
    expect(space.find(set, 1)).toBe(11);
    expect(space.setData(1, null)).toBe(0);
    expect(space.find(set, 1)).toBeNull();
    expect(space.setOf(1)).toBe(set);
  });

  test("setData of an ID that is not allocated returns ENOENT", () => {
    const space = new IoasidSpace();
    const set = new IoasidSet("s");
    expect(space.setData(1, 11)).toBe("ENOENT");
    space.alloc(set, 1, 1, 10);
    space.free(1);
    expect(space.setData(1, 11)).toBe("ENOENT");
    expect(space.setData(INVALID_IOASID, 11)).toBe("ENOENT");
    expect(space.has(1)).toBe(false);
  });
});

describe("IoasidSpace: setOf, chargeOf, has, size, allocated, freeAll", () => {
  test("setOf, chargeOf and has describe an allocated ID and are empty for a free one", () => {
    const tree = new ChargeTree({ capacity: 10 });
    const user = child(tree, tree.root, "user");
    const space = new IoasidSpace({ charges: tree });
    const set = new IoasidSet("s");
    space.alloc(set, 1, 1, 0);
    space.alloc(set, 2, 2, 0, user);
    expect(space.has(1)).toBe(true);
    expect(space.setOf(1)).toBe(set);
    expect(space.chargeOf(1)).toBeNull();
    expect(space.chargeOf(2)).toBe(user);
    expect(space.has(3)).toBe(false);
    expect(space.setOf(3)).toBeUndefined();
    expect(space.chargeOf(3)).toBeUndefined();
    expect(space.has(INVALID_IOASID)).toBe(false);
    expect(space.has(1.5)).toBe(false);
  });

  test("allocated lists IDs in ascending order, of all sets or of one", () => {
    const space = new IoasidSpace();
    const a = new IoasidSet("a");
    const b = new IoasidSet("b");
    space.alloc(a, 500, 600, 0);
    space.alloc(b, ID_MAX, ID_MAX, 0);
    space.alloc(a, 0, 600, 0);
    space.alloc(b, HALF, ID_MAX, 0);
    space.alloc(a, 0, 600, 0);
    expect([...space.allocated()]).toEqual([0, 1, 500, HALF, ID_MAX]);
    expect([...space.allocated(a)]).toEqual([0, 1, 500]);
    expect([...space.allocated(b)]).toEqual([HALF, ID_MAX]);
    expect([...space.allocated(new IoasidSet("c"))]).toEqual([]);
  });

  test("size counts all IDs or those of one set", () => {
    const space = new IoasidSpace();
    const a = new IoasidSet("a");
    const b = new IoasidSet("b");
    space.alloc(a, 0, 9, 0);
    space.alloc(a, 0, 9, 0);
    space.alloc(b, 0, 9, 0);
    expect(space.size()).toBe(3);
    expect(space.size(a)).toBe(2);
    expect(space.size(b)).toBe(1);
    space.free(0);
    space.free(1);
    expect(space.size(a)).toBe(0);
    expect(space.size()).toBe(1);
  });

  test("freeAll frees every ID of one set, uncharges them, and returns how many", () => {
    const tree = new ChargeTree({ capacity: 100 });
    const user = child(tree, tree.root, "user");
    const space = new IoasidSpace({ charges: tree });
    const a = new IoasidSet("a");
    const b = new IoasidSet("b");
    space.alloc(a, 0, 99, 0, user);
    space.alloc(b, 0, 99, 0, user);
    space.alloc(a, 0, 99, 0);
    space.alloc(a, 0, 99, 0, user);
    expect(currents(tree.root, user)).toEqual([3, 3]);
    expect(space.freeAll(a)).toBe(3);
    expect([...space.allocated()]).toEqual([1]);
    expect(space.size(a)).toBe(0);
    expect(space.size(b)).toBe(1);
    expect(currents(tree.root, user)).toEqual([1, 1]);
  });

  test("freeAll of a set with no IDs returns 0", () => {
    const space = new IoasidSpace();
    const a = new IoasidSet("a");
    space.alloc(new IoasidSet("b"), 0, 9, 0);
    expect(space.freeAll(a)).toBe(0);
    expect(space.size()).toBe(1);
  });
});

describe("IoasidSpace: charges", () => {
  function setup(capacity = 100) {
    const tree = new ChargeTree({ capacity });
    const parent = child(tree, tree.root, "user-1000", 3);
    const job = child(tree, parent, "job", 2);
    const other = child(tree, tree.root, "user-1001");
    const space = new IoasidSpace({ charges: tree });
    const set = new IoasidSet("sva");
    return { tree, parent, job, other, space, set };
  }

  test("an alloc with a charge node charges 1 to the node and each ancestor", () => {
    const { tree, parent, job, other, space, set } = setup();
    expect(space.alloc(set, 0, 99, 0, job)).toBe(0);
    expect(currents(tree.root, parent, job, other)).toEqual([1, 1, 1, 0]);
    expect(space.alloc(set, 0, 99, 0, parent)).toBe(1);
    expect(currents(tree.root, parent, job, other)).toEqual([2, 2, 1, 0]);
    expect(space.alloc(set, 0, 99, 0, tree.root)).toBe(2);
    expect(currents(tree.root, parent, job, other)).toEqual([3, 2, 1, 0]);
  });

  test("free uncharges the node the ID was charged to and each ancestor", () => {
    const { tree, parent, job, other, space, set } = setup();
    space.alloc(set, 0, 99, 0, job);
    space.alloc(set, 0, 99, 0, other);
    expect(currents(tree.root, parent, job, other)).toEqual([2, 1, 1, 1]);
    expect(space.free(0)).toBe(0);
    expect(currents(tree.root, parent, job, other)).toEqual([1, 0, 0, 1]);
    expect(space.free(1)).toBe(0);
    expect(currents(tree.root, parent, job, other)).toEqual([0, 0, 0, 0]);
  });

  test("a failed free (ENOENT or EINVAL) uncharges nothing", () => {
    const { tree, job, space, set } = setup();
    space.alloc(set, 0, 99, 0, job);
    expect(space.free(1)).toBe("ENOENT");
    expect(space.free(INVALID_IOASID)).toBe("EINVAL");
    expect(currents(tree.root, job)).toEqual([1, 1]);
  });

  test("a charge over the node's limit returns EBUSY and leaves nothing allocated or charged", () => {
    const { tree, parent, job, space, set } = setup();
    expect(space.alloc(set, 0, 99, 0, job)).toBe(0);
    expect(space.alloc(set, 0, 99, 0, job)).toBe(1);
    expect(space.alloc(set, 0, 99, 0, job)).toBe("EBUSY");
    expect(currents(tree.root, parent, job)).toEqual([2, 2, 2]);
    expect([...space.allocated()]).toEqual([0, 1]);
    expect(space.has(2)).toBe(false);
    expect(space.size(set)).toBe(2);
  });

  test("a charge over an ancestor's limit returns EBUSY and leaves nothing allocated or charged", () => {
    const { tree, parent, job, space, set } = setup();
    space.alloc(set, 0, 99, 0, parent);
    space.alloc(set, 0, 99, 0, parent);
    space.alloc(set, 0, 99, 0, job);
    expect(currents(tree.root, parent, job)).toEqual([3, 3, 1]);
    expect(space.alloc(set, 0, 99, 0, job)).toBe("EBUSY");
    expect(currents(tree.root, parent, job)).toEqual([3, 3, 1]);
    expect(space.size()).toBe(3);
  });

  test("a charge over the tree's capacity returns EBUSY and leaves nothing allocated or charged", () => {
    const { tree, other, space, set } = setup(2);
    space.alloc(set, 0, 99, 0, other);
    space.alloc(set, 0, 99, 0, other);
    expect(space.alloc(set, 0, 99, 0, other)).toBe("EBUSY");
    expect(space.alloc(set, 0, 99, 0, tree.root)).toBe("EBUSY");
    expect(currents(tree.root, other)).toEqual([2, 2]);
    expect(space.size()).toBe(2);
  });

  test("an alloc refused by a limit counts a max event at the limiting node and above it", () => {
    const { tree, parent, job, other, space, set } = setup();
    space.alloc(set, 0, 99, 0, parent);
    space.alloc(set, 0, 99, 0, parent);
    space.alloc(set, 0, 99, 0, parent);
    expect(space.alloc(set, 0, 99, 0, job)).toBe("EBUSY");
    expect(parent.eventsLocal.max).toBe(1);
    expect(parent.events.max).toBe(1);
    expect(job.eventsLocal.max).toBe(0);
    expect(job.events.max).toBe(0);
    expect(other.events.max).toBe(0);
    expect(tree.root.events.max).toBe(0);
  });

  test("an alloc that fails with ENOSPC after charging leaves nothing charged", () => {
    const { tree, parent, job, space, set } = setup();
    const other = new IoasidSet("dma");
    space.alloc(other, 5, 5, 0);
    expect(space.alloc(set, 5, 5, 0, job)).toBe("ENOSPC");
    expect(currents(tree.root, parent, job)).toEqual([0, 0, 0]);
    expect(job.peak).toBe(1); // it was charged on the way, then uncharged
    expect(job.events.max).toBe(0);
    expect(space.size(set)).toBe(0);
    expect(space.size()).toBe(1);
  });

  test("an alloc refused by a limit wins over a full range: EBUSY, not ENOSPC", () => {
    const { tree, job, space, set } = setup();
    space.alloc(set, 0, 99, 0, job);
    space.alloc(set, 0, 99, 0, job);
    expect(space.alloc(set, 0, 1, 0, job)).toBe("EBUSY");
    expect(currents(tree.root, job)).toEqual([2, 2]);
  });

  test("allocations without a charge node are never charged, even when the user is at its limit", () => {
    const { tree, parent, job, space, set } = setup();
    const dma = new IoasidSet("dma");
    space.alloc(set, 0, 99, 0, job);
    space.alloc(set, 0, 99, 0, job);
    expect(space.alloc(set, 0, 99, 0, job)).toBe("EBUSY");
    for (let i = 0; i < 10; i++) expect(space.alloc(dma, 0, 99, 0)).toBe(2 + i);
    expect(currents(tree.root, parent, job)).toEqual([2, 2, 2]);
    expect(space.chargeOf(2)).toBeNull();
    for (let id = 2; id < 12; id++) expect(space.free(id)).toBe(0);
    expect(currents(tree.root, parent, job)).toEqual([2, 2, 2]);
  });

  test("uncharged allocations succeed past the tree's capacity", () => {
    const { tree, other, space, set } = setup(1);
    expect(space.alloc(set, 0, 99, 0, other)).toBe(0);
    expect(space.alloc(set, 0, 99, 0)).toBe(1);
    expect(space.alloc(set, 0, 99, 0)).toBe(2);
    expect(currents(tree.root, other)).toEqual([1, 1]);
  });

  test("freeing a charged ID lets its user allocate again", () => {
    const { tree, job, space, set } = setup();
    space.alloc(set, 0, 99, 0, job);
    space.alloc(set, 0, 99, 0, job);
    expect(space.alloc(set, 0, 99, 0, job)).toBe("EBUSY");
    expect(space.free(0)).toBe(0);
    expect(space.alloc(set, 0, 99, 0, job)).toBe(0);
    expect(currents(tree.root, job)).toEqual([2, 2]);
  });

  test("a charged ID freed after its node's max was lowered is still uncharged", () => {
    const { tree, job, space, set } = setup();
    space.alloc(set, 0, 99, 0, job);
    space.alloc(set, 0, 99, 0, job);
    expect(tree.setMax(job, 0)).toBe(0);
    expect(space.alloc(set, 0, 99, 0, job)).toBe("EBUSY");
    expect(space.free(1)).toBe(0);
    expect(currents(tree.root, job)).toEqual([1, 1]);
    expect(space.alloc(set, 0, 99, 0, job)).toBe("EBUSY");
  });

  test("a charge node of another tree is refused with EINVAL and nothing is allocated", () => {
    const { space, set } = setup();
    const foreign = new ChargeTree({ capacity: 10 });
    const node = child(foreign, foreign.root, "x");
    expect(space.alloc(set, 0, 99, 0, node)).toBe("EINVAL");
    expect(space.alloc(set, 0, 99, 0, foreign.root)).toBe("EINVAL");
    expect(space.size()).toBe(0);
    expect(currents(foreign.root, node)).toEqual([0, 0]);
  });

  test("a removed charge node is refused with EINVAL and nothing is allocated", () => {
    const { tree, space, set } = setup();
    const gone = child(tree, tree.root, "gone");
    expect(tree.removeNode(gone)).toBe(0);
    expect(space.alloc(set, 0, 99, 0, gone)).toBe("EINVAL");
    expect(space.size()).toBe(0);
    expect(tree.root.current).toBe(0);
  });

  test("a tree with capacity 0 refuses charged allocations with EINVAL but not uncharged ones", () => {
    const { tree, other, space, set } = setup(0);
    expect(space.alloc(set, 0, 99, 0, other)).toBe("EINVAL");
    expect(space.alloc(set, 0, 99, 0)).toBe(0);
    expect(currents(tree.root, other)).toEqual([0, 0]);
    expect(space.size()).toBe(1);
  });

  test("a charged node cannot be removed while its IDs are allocated", () => {
    const { tree, other, space, set } = setup();
    space.alloc(set, 0, 99, 0, other);
    expect(tree.removeNode(other)).toBe("EBUSY");
    space.free(0);
    expect(tree.removeNode(other)).toBe(0);
  });
});

describe("IoasidSpace: charge after allocation", () => {
  function setup() {
    const tree = new ChargeTree({ capacity: 100 });
    const user = child(tree, tree.root, "user-1000", 1);
    const space = new IoasidSpace({ charges: tree });
    const set = new IoasidSet("sva");
    return { tree, user, space, set };
  }

  test("charging an uncharged ID counts it against the node and its ancestors until it is freed", () => {
    const { tree, user, space, set } = setup();
    const id = space.alloc(set, 1, 99, 0) as number;
    expect(currents(tree.root, user)).toEqual([0, 0]);
    expect(space.charge(id, user)).toBe(0);
    expect(space.chargeOf(id)).toBe(user);
    expect(currents(tree.root, user)).toEqual([1, 1]);
    expect(space.free(id)).toBe(0);
    expect(currents(tree.root, user)).toEqual([0, 0]);
  });

  test("a charge over the limit fails with EBUSY and leaves the ID uncharged", () => {
    const { tree, user, space, set } = setup();
    const a = space.alloc(set, 1, 99, 0) as number;
    const b = space.alloc(set, 1, 99, 0) as number;
    expect(space.charge(a, user)).toBe(0);
    expect(space.charge(b, user)).toBe("EBUSY");
    expect(space.chargeOf(b)).toBeNull();
    expect(user.eventsLocal.max).toBe(1);
    expect(currents(tree.root, user)).toEqual([1, 1]);
  });

  test("charging twice is EALREADY, an unallocated ID ENOENT, a space without a tree EINVAL", () => {
    const { user, space, set } = setup();
    const a = space.alloc(set, 1, 99, 0) as number;
    expect(space.charge(a, user)).toBe(0);
    expect(space.charge(a, user)).toBe("EALREADY");
    expect(space.charge(50, user)).toBe("ENOENT");
    const bare = new IoasidSpace();
    const c = bare.alloc(set, 1, 99, 0) as number;
    expect(bare.charge(c, user)).toBe("EINVAL");
    expect(bare.chargeOf(c)).toBeNull();
  });

  test("uncharge gives the charge back and keeps the ID; ENOENT unallocated, EINVAL uncharged", () => {
    const { tree, user, space, set } = setup();
    const a = space.alloc(set, 1, 99, 0) as number;
    expect(space.uncharge(a)).toBe("EINVAL");
    expect(space.charge(a, user)).toBe(0);
    expect(space.uncharge(a)).toBe(0);
    expect(space.has(a)).toBe(true);
    expect(space.chargeOf(a)).toBeNull();
    expect(currents(tree.root, user)).toEqual([0, 0]);
    expect(space.uncharge(77)).toBe("ENOENT");
    expect(space.free(a)).toBe(0);
    expect(currents(tree.root, user)).toEqual([0, 0]);
  });
});

describe("IoasidSpace: the upstream scenario", () => {
  test("in-kernel DMA PASIDs and SVA PASIDs share one 20-bit space and each set finds only its own", () => {
    const tree = new ChargeTree({ capacity: PASID_MAX });
    const alice = child(tree, tree.root, "user-1000", 2);
    const space = new IoasidSpace<{ owner: string } | null>({ charges: tree });
    const dma = new IoasidSet("iommu_dma_pasid");
    const sva = new IoasidSet("iommu_sva_pasid");
    const dev = { owner: "dma:0000:00:02.0" };
    const mmA = { owner: "mm:alice-1" };
    const mmB = { owner: "mm:alice-2" };
    const mmC = { owner: "mm:alice-3" };

    // PASID 0 is the RID_PASID: both sets allocate from 1.
    expect(space.alloc(dma, 1, PASID_MAX, dev)).toBe(1);
    expect(space.alloc(sva, 1, PASID_MAX, mmA, alice)).toBe(2);
    expect(space.alloc(dma, 1, PASID_MAX, dev)).toBe(3);
    expect(space.alloc(sva, 1, PASID_MAX, mmB, alice)).toBe(4);
    // Alice is at her limit; the in-kernel user is not limited by it.
    expect(space.alloc(sva, 1, PASID_MAX, mmC, alice)).toBe("EBUSY");
    expect(space.alloc(dma, 1, PASID_MAX, dev)).toBe(5);
    expect(alice.current).toBe(2);
    expect(tree.root.current).toBe(2);

    expect(space.find(sva, 2)).toBe(mmA);
    expect(space.find(sva, 4)).toBe(mmB);
    expect(space.find(dma, 1)).toBe(dev);
    expect(space.find(sva, 1)).toBe("EACCES");
    expect(space.find(dma, 2)).toBe("EACCES");
    expect(space.find(null, 2)).toBe(mmA);
    expect(space.find(null, 3)).toBe(dev);
    expect([...space.allocated(dma)]).toEqual([1, 3, 5]);
    expect([...space.allocated(sva)]).toEqual([2, 4]);
    expect(space.size(dma)).toBe(3);
    expect(space.size(sva)).toBe(2);

    // The top of the 20-bit space, then no more.
    expect(space.alloc(dma, PASID_MAX - 1, PASID_MAX, dev)).toBe(PASID_MAX - 1);
    expect(space.alloc(dma, PASID_MAX - 1, PASID_MAX, dev)).toBe(PASID_MAX);
    expect(space.alloc(dma, PASID_MAX - 1, PASID_MAX, dev)).toBe("ENOSPC");
    expect(pasidValid(PASID_MAX)).toBe(true);

    // The process exits: its SVA PASIDs go, the DMA PASIDs stay, and Alice's charge is returned.
    expect(space.freeAll(sva)).toBe(2);
    expect(alice.current).toBe(0);
    expect(space.find(dma, 3)).toBe(dev);
    expect(space.find(sva, 2)).toBe("ENOENT");
    expect(space.alloc(sva, 1, PASID_MAX, mmC, alice)).toBe(2);
    expect(space.find(sva, 2)).toBe(mmC);
  });
});

// ---------------------------------------------------------------------------------------------
// Model-based property: IoasidSpace and its charges against a plain Map, a linear scan for the
// lowest free ID, and per-node counts updated by walking to the root.

function isU32(x: number): boolean {
  return Number.isInteger(x) && x >= 0 && x <= 0xffffffff;
}

interface RefNode {
  readonly parent: number; // index, -1 for the root
  max: number;
  current: number;
  /** False for a removed node or one of another tree: charging it is EINVAL. */
  readonly usable: boolean;
}

interface RefEntry {
  readonly set: number;
  priv: IoasidPrivate;
  readonly charge: number; // node index, -1 when uncharged
}

class RefSpace {
  readonly ids = new Map<number, RefEntry>();

  constructor(
    readonly nodes: RefNode[],
    readonly capacity: number,
    readonly withTree: boolean,
  ) {}

  lowestFree(min: number, max: number): number {
    for (let id = min; id <= max; id++) if (!this.ids.has(id)) return id;
    return -1;
  }

  nextId(from: number): number {
    let best = -1;
    for (const id of this.ids.keys()) if (id >= from && (best < 0 || id < best)) best = id;
    return best;
  }

  /** Up from `n` to the root, each node once. */
  private path(n: number): number[] {
    const out: number[] = [];
    for (let m = n; m >= 0; m = this.nodes[m].parent) out.push(m);
    return out;
  }

  alloc(set: number, min: number, max: number, priv: IoasidPrivate, node: number) {
    if (!isU32(min) || !isU32(max) || min > max || max >= INVALID_IOASID) return "EINVAL";
    if (node >= 0) {
      if (!this.withTree || this.capacity === 0 || !this.nodes[node].usable) return "EINVAL";
      for (const m of this.path(node)) {
        const next = this.nodes[m].current + 1;
        if (next > this.nodes[m].max || next > this.capacity) return "EBUSY";
      }
    }
    const id = this.lowestFree(min, max);
    if (id < 0) return "ENOSPC";
    if (node >= 0) for (const m of this.path(node)) this.nodes[m].current++;
    this.ids.set(id, { set, priv, charge: node });
    return id;
  }

  free(id: number) {
    if (!isU32(id) || id === INVALID_IOASID) return "EINVAL";
    const e = this.ids.get(id);
    if (e === undefined) return "ENOENT";
    this.ids.delete(id);
    if (e.charge >= 0) for (const m of this.path(e.charge)) this.nodes[m].current--;
    return 0;
  }

  find(set: number, id: number, getter?: (p: IoasidPrivate) => boolean) {
    const e = this.ids.get(id);
    if (e === undefined) return "ENOENT";
    if (set >= 0 && e.set !== set) return "EACCES";
    if (getter !== undefined && !getter(e.priv)) return null;
    return e.priv;
  }

  allocated(set: number): number[] {
    return [...this.ids.entries()]
      .filter(([, e]) => set < 0 || e.set === set)
      .map(([id]) => id)
      .sort((a, b) => a - b);
  }
}

const OPS_PER_CASE = 10_000;

describe("IoasidSpace: model", () => {
  test.prop(
    [
      fc.integer(),
      fc.constantFrom(0, HALF - 100, 2 ** 32 - 3000),
      fc.constantFrom(40, 300, 3000),
      fc.constantFrom(Number.POSITIVE_INFINITY, 0, 30, 400),
      fc.constantFrom(true, true, false), // withTree
    ],
    { seed: 1, numRuns: 10 },
  )(
    "random sequences of alloc/free/find/setData/freeAll with charges agree with a Map and per-node counts",
    (seed, base, span, capacity, withTree) => {
      const rnd = xorshift32(seed);
      const below = (n: number) => rnd() % n;
      const limit = () => (below(4) === 0 ? Number.POSITIVE_INFINITY : below(60));

      // The tree: / ; /a ; /a/x ; /b ; a removed /gone ; and a node of a foreign tree.
      const tree = new ChargeTree({ capacity });
      const foreign = new ChargeTree({ capacity: 100 });
      const a = child(tree, tree.root, "a", limit());
      const x = child(tree, a, "x", limit());
      const b = child(tree, tree.root, "b", limit());
      const gone = child(tree, tree.root, "gone");
      tree.removeNode(gone);
      const alien = child(foreign, foreign.root, "alien");
      const nodes: ChargeNode[] = [tree.root, a, x, b, gone, alien];
      const refNodes: RefNode[] = [
        { parent: -1, max: capacity, current: 0, usable: true },
        { parent: 0, max: a.max, current: 0, usable: true },
        { parent: 1, max: x.max, current: 0, usable: true },
        { parent: 0, max: b.max, current: 0, usable: true },
        { parent: 0, max: 0, current: 0, usable: false },
        { parent: -1, max: 0, current: 0, usable: false },
      ];
      const space = withTree ? new IoasidSpace({ charges: tree }) : new IoasidSpace();
      const ref = new RefSpace(refNodes, capacity, withTree);
      const sets = [new IoasidSet("dma"), new IoasidSet("sva"), new IoasidSet("other")];
      const chargesOff = !withTree || capacity === 0;
      const getter = (p: IoasidPrivate) => typeof p === "number" && p % 3 !== 0;

      const bad = [-1, 1.5, 2 ** 32, Number.NaN, INVALID_IOASID];
      const special = [0, HALF - 1, HALF, ID_MAX - 1, ID_MAX];
      const inWindow = () => Math.min(INVALID_IOASID, base + below(span));
      const anyId = () => {
        const r = below(100);
        if (r < 3) return bad[below(bad.length)];
        if (r < 6) return special[below(special.length)];
        return inWindow();
      };
      const bounds = (): [number, number] => {
        const r = below(100);
        if (r < 3) return [bad[below(bad.length)], inWindow()];
        if (r < 6) return [inWindow(), bad[below(bad.length)]];
        if (r < 8) {
          const m = inWindow();
          return [m + 1, m];
        }
        if (r < 12) return [inWindow(), ID_MAX];
        if (r < 15) return [base, base + span - 1];
        const min = inWindow();
        const len = below(4) === 0 ? below(span) : below(24);
        return [min, Math.min(INVALID_IOASID, min + len)];
      };

      let op = "";
      const check = (i: number, got: unknown, want: unknown) => {
        if (!Object.is(got, want)) {
          throw new Error(`op #${i} ${op}: got ${String(got)}, want ${String(want)}`);
        }
      };
      const checkCharges = (i: number) => {
        for (let n = 0; n < 4; n++) {
          op = `charges of ${nodes[n].path}`;
          check(i, nodes[n].current, refNodes[n].current);
        }
      };

      for (let i = 0; i < OPS_PER_CASE; i++) {
        const r = below(100);
        if (r < 35) {
          const s = below(sets.length);
          const [min, max] = bounds();
          // Mostly uncharged or on a live node, sometimes on a removed or foreign one; rarely
          // charged at all when every charge is refused anyway (no tree, or capacity 0).
          const c = below(20);
          let n = -1;
          if (chargesOff ? c === 0 : c >= 8) n = c < 18 ? below(4) : 4 + below(2);
          const priv = below(8) === 0 ? null : i;
          op = `alloc(${sets[s].name}, ${min}, ${max}, node ${n})`;
          const got =
            n < 0
              ? space.alloc(sets[s], min, max, priv)
              : space.alloc(sets[s], min, max, priv, nodes[n]);
          check(i, got, ref.alloc(s, min, max, priv, n));
        } else if (r < 60) {
          const id = below(3) ? ref.nextId(inWindow()) : anyId();
          op = `free(${id})`;
          check(i, space.free(id), ref.free(id));
        } else if (r < 75) {
          const s = below(sets.length + 1) - 1;
          const id = below(2) ? ref.nextId(inWindow()) : anyId();
          const g = below(2) ? getter : undefined;
          op = `find(${s}, ${id}, ${g ? "getter" : "-"})`;
          check(i, space.find(s < 0 ? null : sets[s], id, g), ref.find(s, id, g));
        } else if (r < 80) {
          const id = below(2) ? ref.nextId(inWindow()) : anyId();
          const priv = below(5) === 0 ? undefined : i;
          op = `setData(${id})`;
          const e = ref.ids.get(id);
          check(i, space.setData(id, priv), e === undefined ? "ENOENT" : 0);
          if (e !== undefined) e.priv = priv;
        } else if (r < 88) {
          const id = below(2) ? ref.nextId(inWindow()) : anyId();
          const e = ref.ids.get(id);
          op = `has/setOf/chargeOf(${id})`;
          check(i, space.has(id), e !== undefined);
          check(i, space.setOf(id), e === undefined ? undefined : sets[e.set]);
          check(
            i,
            space.chargeOf(id),
            e === undefined ? undefined : e.charge < 0 ? null : nodes[e.charge],
          );
        } else if (r < 94) {
          const s = below(sets.length + 1) - 1;
          op = `size(${s})`;
          check(i, space.size(s < 0 ? undefined : sets[s]), ref.allocated(s).length);
          checkCharges(i);
        } else if (r < 97) {
          const n = 1 + below(3);
          const max = below(3) === 0 ? Number.POSITIVE_INFINITY : below(40);
          tree.setMax(nodes[n], max);
          refNodes[n].max = max;
        } else if (r < 99) {
          const s = below(sets.length);
          op = `allocated(${s})`;
          const want = ref.allocated(s);
          const got = [...space.allocated(sets[s])];
          check(i, got.join(), want.join());
        } else if (below(5) === 0) {
          const s = below(sets.length);
          const want = ref.allocated(s);
          for (const id of want) ref.free(id);
          op = `freeAll(${s})`;
          check(i, space.freeAll(sets[s]), want.length);
        }
      }

      checkCharges(OPS_PER_CASE);
      expect([...space.allocated()]).toEqual(ref.allocated(-1));
      expect(space.size()).toBe(ref.ids.size);
      for (let s = 0; s < sets.length; s++) {
        expect([...space.allocated(sets[s])]).toEqual(ref.allocated(s));
        expect(space.size(sets[s])).toBe(ref.allocated(s).length);
      }
      for (const [id, e] of ref.ids) {
        expect(space.find(sets[e.set], id)).toBe(e.priv);
        expect(space.chargeOf(id)).toBe(e.charge < 0 ? null : nodes[e.charge]);
      }
      // Free everything: every charge must come back.
      for (const id of ref.allocated(-1)) expect(space.free(id)).toBe(0);
      expect(space.size()).toBe(0);
      for (const n of nodes) expect(n.current).toBe(0);
    },
  );
});
