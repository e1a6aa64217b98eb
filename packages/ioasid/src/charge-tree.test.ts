// Tests of ChargeTree against the misc cgroup controller's rules, and against a reference model.

import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { xorshift32 } from "../test/xorshift32.js";
import { type ChargeNode, ChargeTree } from "./charge-tree.js";

/** Narrow a createNode result for a test that expects success. */
function node(result: ChargeNode | string): ChargeNode {
  if (typeof result === "string") throw new Error(`createNode failed: ${result}`);
  return result;
}

function state(n: ChargeNode) {
  return {
    current: n.current,
    peak: n.peak,
    events: n.events.max,
    eventsLocal: n.eventsLocal.max,
  };
}

/** A tree `/user` (max 10) with `/user/job` (max 4) below it. */
function userJob(capacity = 100) {
  const tree = new ChargeTree({ capacity });
  const user = node(tree.createNode(tree.root, "user", 10));
  const job = node(tree.createNode(user, "job", 4));
  return { tree, user, job };
}

// An object with the shape of a node that no tree made.
const forged: ChargeNode = {
  name: "x",
  path: "/x",
  parent: null,
  children: [],
  max: 10,
  current: 0,
  peak: 0,
  events: { max: 0 },
  eventsLocal: { max: 0 },
  removed: false,
};

const BAD_LIMITS = [-1, 1.5, Number.NaN, Number.NEGATIVE_INFINITY];
const BAD_AMOUNTS = [-1, 0.5, Number.NaN, Number.POSITIVE_INFINITY, Number.MAX_SAFE_INTEGER + 1];

describe("ChargeTree construction", () => {
  it("a capacity that is not a non-negative integer or Infinity throws RangeError", () => {
    for (const capacity of BAD_LIMITS) {
      expect(() => new ChargeTree({ capacity })).toThrow(RangeError);
    }
  });

  it("the resource is called pasid unless named, and the root reads its capacity as max", () => {
    const tree = new ChargeTree({ capacity: 7 });
    expect(tree.resource).toBe("pasid");
    expect(new ChargeTree({ capacity: 0, name: "sev" }).resource).toBe("sev");
    expect(new ChargeTree({ capacity: Number.POSITIVE_INFINITY }).capacity).toBe(
      Number.POSITIVE_INFINITY,
    );
    expect(tree.capacity).toBe(7);
    expect(tree.root.max).toBe(7);
    expect(tree.root.path).toBe("/");
    expect(tree.root.parent).toBeNull();
    expect(state(tree.root)).toEqual({ current: 0, peak: 0, events: 0, eventsLocal: 0 });
  });
});

describe("setCapacity", () => {
  it("a capacity that is not a non-negative integer or Infinity is EINVAL and changes nothing", () => {
    const tree = new ChargeTree({ capacity: 5 });
    for (const capacity of BAD_LIMITS) expect(tree.setCapacity(capacity)).toBe("EINVAL");
    expect(tree.capacity).toBe(5);
  });

  it("the root's max follows the capacity", () => {
    const tree = new ChargeTree({ capacity: 5 });
    expect(tree.setCapacity(9)).toBe(0);
    expect(tree.capacity).toBe(9);
    expect(tree.root.max).toBe(9);
  });

  it("lowering the capacity below what is charged keeps the charges and refuses new ones", () => {
    const { tree, job } = userJob();
    expect(tree.tryCharge(job, 3)).toBe(0);
    expect(tree.setCapacity(2)).toBe(0);
    expect(tree.root.current).toBe(3);
    expect(tree.tryCharge(job, 1)).toBe("EBUSY");
    expect(tree.uncharge(job, 2)).toBe(0);
    expect(tree.tryCharge(job, 1)).toBe(0);
  });
});

describe("createNode", () => {
  it("children get paths under their parent and keep creation order", () => {
    const tree = new ChargeTree({ capacity: 10 });
    const u = node(tree.createNode(tree.root, "user-1000"));
    const b = node(tree.createNode(u, "b", 3));
    const a = node(tree.createNode(u, "a"));
    expect(u.path).toBe("/user-1000");
    expect(b.path).toBe("/user-1000/b");
    expect(u.parent).toBe(tree.root);
    expect(u.children).toEqual([b, a]);
    expect(u.max).toBe(Number.POSITIVE_INFINITY);
    expect(b.max).toBe(3);
    expect(b.removed).toBe(false);
  });

  it("an empty name, . or .., or a name with / is EINVAL", () => {
    const tree = new ChargeTree({ capacity: 10 });
    for (const name of ["", ".", "..", "a/b", "/"]) {
      expect(tree.createNode(tree.root, name)).toBe("EINVAL");
    }
    expect(tree.root.children).toHaveLength(0);
  });

  it("a max that is not a non-negative integer or Infinity is EINVAL", () => {
    const tree = new ChargeTree({ capacity: 10 });
    for (const max of BAD_LIMITS) expect(tree.createNode(tree.root, "a", max)).toBe("EINVAL");
    expect(tree.createNode(tree.root, "a", 0)).not.toBe("EINVAL");
  });

  it("a parent from another tree, or no tree at all, is EINVAL", () => {
    const tree = new ChargeTree({ capacity: 10 });
    const other = new ChargeTree({ capacity: 10 });
    expect(tree.createNode(other.root, "a")).toBe("EINVAL");
    expect(tree.createNode(forged, "a")).toBe("EINVAL");
  });

  it("a removed parent is ENOENT", () => {
    const tree = new ChargeTree({ capacity: 10 });
    const a = node(tree.createNode(tree.root, "a"));
    expect(tree.removeNode(a)).toBe(0);
    expect(tree.createNode(a, "b")).toBe("ENOENT");
  });

  it("argument errors take precedence over a removed parent", () => {
    const tree = new ChargeTree({ capacity: 10 });
    const a = node(tree.createNode(tree.root, "a"));
    tree.removeNode(a);
    expect(tree.createNode(a, "")).toBe("EINVAL");
    expect(tree.createNode(a, "b", -1)).toBe("EINVAL");
  });

  it("a name a live sibling has is EEXIST, one only a removed sibling had is free", () => {
    const tree = new ChargeTree({ capacity: 10 });
    const a = node(tree.createNode(tree.root, "a"));
    expect(tree.createNode(tree.root, "a")).toBe("EEXIST");
    tree.removeNode(a);
    const again = node(tree.createNode(tree.root, "a"));
    expect(again).not.toBe(a);
    expect(tree.find("/a")).toBe(again);
  });
});

describe("removeNode", () => {
  it("the root, or a node of another tree, is EINVAL", () => {
    const tree = new ChargeTree({ capacity: 10 });
    const other = new ChargeTree({ capacity: 10 });
    const foreign = node(other.createNode(other.root, "a"));
    expect(tree.removeNode(tree.root)).toBe("EINVAL");
    expect(tree.removeNode(other.root)).toBe("EINVAL");
    expect(tree.removeNode(foreign)).toBe("EINVAL");
    expect(tree.removeNode(forged)).toBe("EINVAL");
    expect(foreign.removed).toBe(false);
  });

  it("a node already removed is ENOENT", () => {
    const tree = new ChargeTree({ capacity: 10 });
    const a = node(tree.createNode(tree.root, "a"));
    expect(tree.removeNode(a)).toBe(0);
    expect(tree.removeNode(a)).toBe("ENOENT");
  });

  it("a node with children is EBUSY", () => {
    const { tree, user, job } = userJob();
    expect(tree.removeNode(user)).toBe("EBUSY");
    expect(tree.removeNode(job)).toBe(0);
    expect(tree.removeNode(user)).toBe(0);
  });

  it("a node holding a charge is EBUSY until it is released", () => {
    const { tree, job } = userJob();
    tree.tryCharge(job, 1);
    expect(tree.removeNode(job)).toBe("EBUSY");
    tree.uncharge(job, 1);
    expect(tree.removeNode(job)).toBe(0);
  });

  it("a removed node leaves its parent's children, find and nodes, and keeps its parent", () => {
    const tree = new ChargeTree({ capacity: 10 });
    const a = node(tree.createNode(tree.root, "a"));
    const b = node(tree.createNode(tree.root, "b"));
    const c = node(tree.createNode(tree.root, "c"));
    expect(tree.removeNode(b)).toBe(0);
    expect(b.removed).toBe(true);
    expect(b.parent).toBe(tree.root);
    expect(tree.root.children).toEqual([a, c]);
    expect(tree.find("/b")).toBeUndefined();
    expect([...tree.nodes()]).toEqual([tree.root, a, c]);
  });
});

describe("setMax", () => {
  it("the root, a node of another tree, or a bad value is EINVAL", () => {
    const { tree, job } = userJob();
    const other = new ChargeTree({ capacity: 10 });
    expect(tree.setMax(tree.root, 5)).toBe("EINVAL");
    expect(tree.root.max).toBe(100);
    expect(tree.setMax(other.root, 5)).toBe("EINVAL");
    expect(tree.setMax(forged, 5)).toBe("EINVAL");
    for (const max of BAD_LIMITS) expect(tree.setMax(job, max)).toBe("EINVAL");
    expect(job.max).toBe(4);
  });

  it("a removed node is ENOENT", () => {
    const { tree, job } = userJob();
    tree.removeNode(job);
    expect(tree.setMax(job, 2)).toBe("ENOENT");
    expect(job.max).toBe(4);
  });

  it("a max below current is accepted: charges stay, further charges fail", () => {
    const { tree, user, job } = userJob();
    expect(tree.tryCharge(job, 3)).toBe(0);
    expect(tree.setMax(user, 1)).toBe(0);
    expect(user.max).toBe(1);
    expect(user.current).toBe(3);
    expect(tree.tryCharge(job, 1)).toBe("EBUSY");
    expect(tree.uncharge(job, 2)).toBe(0);
    expect(tree.tryCharge(job, 1)).toBe("EBUSY");
    expect(tree.uncharge(job, 1)).toBe(0);
    expect(tree.tryCharge(job, 1)).toBe(0);
  });

  it("Infinity lifts the limit", () => {
    const { tree, job } = userJob();
    expect(tree.setMax(job, Number.POSITIVE_INFINITY)).toBe(0);
    expect(tree.tryCharge(job, 10)).toBe(0);
  });
});

describe("tryCharge", () => {
  it("a charge within every limit is added to the node and each ancestor", () => {
    const { tree, user, job } = userJob();
    expect(tree.tryCharge(job, 3)).toBe(0);
    expect(tree.tryCharge(user, 2)).toBe(0);
    expect([job.current, user.current, tree.root.current]).toEqual([3, 5, 5]);
  });

  it("peak keeps the highest current each node reached", () => {
    const { tree, user, job } = userJob();
    tree.tryCharge(job, 4);
    tree.uncharge(job, 3);
    tree.tryCharge(user, 2);
    expect([job.peak, user.peak, tree.root.peak]).toEqual([4, 4, 4]);
    tree.tryCharge(user, 2);
    expect([job.peak, user.peak, tree.root.peak]).toEqual([4, 5, 5]);
  });

  it("amount 0 succeeds and changes nothing", () => {
    const { tree, job } = userJob();
    tree.setMax(job, 0);
    expect(tree.tryCharge(job, 0)).toBe(0);
    expect(state(job)).toEqual({ current: 0, peak: 0, events: 0, eventsLocal: 0 });
  });

  it("a capacity of 0 is EINVAL, even for amount 0, and records no event", () => {
    const { tree, job } = userJob(0);
    expect(tree.tryCharge(job, 1)).toBe("EINVAL");
    expect(tree.tryCharge(job, 0)).toBe("EINVAL");
    expect(state(job)).toEqual({ current: 0, peak: 0, events: 0, eventsLocal: 0 });
    expect(state(tree.root)).toEqual({ current: 0, peak: 0, events: 0, eventsLocal: 0 });
  });

  it("an amount that is not a non-negative safe integer is EINVAL", () => {
    const { tree, job } = userJob();
    for (const amount of BAD_AMOUNTS) expect(tree.tryCharge(job, amount)).toBe("EINVAL");
    expect(tree.root.current).toBe(0);
  });

  it("a node of another tree, or a removed node, is EINVAL", () => {
    const { tree, job } = userJob();
    const other = new ChargeTree({ capacity: 10 });
    expect(tree.tryCharge(other.root, 1)).toBe("EINVAL");
    expect(tree.tryCharge(forged, 1)).toBe("EINVAL");
    tree.removeNode(job);
    expect(tree.tryCharge(job, 1)).toBe("EINVAL");
    expect(other.root.current + tree.root.current + job.current).toBe(0);
  });

  it("a charge over the node's own max fails with EBUSY and charges nothing", () => {
    const { tree, user, job } = userJob();
    tree.tryCharge(job, 3);
    expect(tree.tryCharge(job, 2)).toBe("EBUSY");
    expect([job.current, user.current, tree.root.current]).toEqual([3, 3, 3]);
    expect(state(job)).toEqual({ current: 3, peak: 3, events: 1, eventsLocal: 1 });
    expect(state(user)).toEqual({ current: 3, peak: 3, events: 1, eventsLocal: 0 });
  });

  it("a charge over an ancestor's max fails with EBUSY and charges nothing", () => {
    const { tree, user, job } = userJob();
    const sib = node(tree.createNode(user, "sib"));
    tree.tryCharge(sib, 8);
    expect(tree.tryCharge(job, 3)).toBe("EBUSY");
    expect([job.current, sib.current, user.current, tree.root.current]).toEqual([0, 8, 8, 8]);
  });

  it("events count at the refusing node and its ancestors below the root, not where charged", () => {
    const tree = new ChargeTree({ capacity: 100 });
    const a = node(tree.createNode(tree.root, "a"));
    const b = node(tree.createNode(a, "b", 2));
    const c = node(tree.createNode(b, "c"));
    const d = node(tree.createNode(c, "d"));
    expect(tree.tryCharge(d, 3)).toBe("EBUSY");
    expect(state(d)).toMatchObject({ events: 0, eventsLocal: 0 });
    expect(state(c)).toMatchObject({ events: 0, eventsLocal: 0 });
    expect(state(b)).toMatchObject({ events: 1, eventsLocal: 1 });
    expect(state(a)).toMatchObject({ events: 1, eventsLocal: 0 });
    expect(state(tree.root)).toMatchObject({ events: 0, eventsLocal: 0 });
  });

  it("a refusal by the capacity at the root counts only the root's local event", () => {
    const tree = new ChargeTree({ capacity: 5 });
    const a = node(tree.createNode(tree.root, "a"));
    const b = node(tree.createNode(tree.root, "b"));
    tree.tryCharge(a, 4);
    expect(tree.tryCharge(b, 2)).toBe("EBUSY");
    expect(state(tree.root)).toEqual({ current: 4, peak: 4, events: 0, eventsLocal: 1 });
    expect(state(a)).toMatchObject({ events: 0, eventsLocal: 0 });
    expect(state(b)).toMatchObject({ current: 0, events: 0, eventsLocal: 0 });
  });

  it("the capacity is checked at every node, so a charge beyond it fails at the first node", () => {
    const tree = new ChargeTree({ capacity: 5 });
    const a = node(tree.createNode(tree.root, "a"));
    expect(tree.tryCharge(a, 6)).toBe("EBUSY");
    expect(state(a)).toEqual({ current: 0, peak: 0, events: 1, eventsLocal: 1 });
    expect(state(tree.root)).toEqual({ current: 0, peak: 0, events: 0, eventsLocal: 0 });
  });

  it("nodes passed before the refusing one keep the peak they were briefly lifted to", () => {
    const { tree, user, job } = userJob();
    tree.setMax(user, 2);
    expect(tree.tryCharge(job, 3)).toBe("EBUSY");
    expect(state(job)).toEqual({ current: 0, peak: 3, events: 0, eventsLocal: 0 });
    expect(state(user)).toEqual({ current: 0, peak: 0, events: 1, eventsLocal: 1 });
    expect(tree.root.peak).toBe(0);
  });

  it("a charge that would lift a counter above MAX_SAFE_INTEGER fails with EBUSY", () => {
    const tree = new ChargeTree({ capacity: Number.POSITIVE_INFINITY });
    const a = node(tree.createNode(tree.root, "a"));
    expect(tree.tryCharge(a, Number.MAX_SAFE_INTEGER)).toBe(0);
    expect(tree.tryCharge(a, 1)).toBe("EBUSY");
    expect(a.current).toBe(Number.MAX_SAFE_INTEGER);
    expect(a.eventsLocal.max).toBe(1);
  });
});

describe("uncharge", () => {
  it("an uncharge subtracts from the node and each ancestor", () => {
    const { tree, user, job } = userJob();
    tree.tryCharge(job, 4);
    expect(tree.uncharge(job, 3)).toBe(0);
    expect([job.current, user.current, tree.root.current]).toEqual([1, 1, 1]);
    expect(job.peak).toBe(4);
  });

  it("amount 0 succeeds and changes nothing", () => {
    const { tree, job } = userJob();
    expect(tree.uncharge(job, 0)).toBe(0);
    expect(job.current).toBe(0);
  });

  it("an amount over the node's current is EINVAL and changes nothing", () => {
    const { tree, user, job } = userJob();
    tree.tryCharge(job, 2);
    tree.tryCharge(user, 3);
    expect(tree.uncharge(job, 3)).toBe("EINVAL");
    expect([job.current, user.current, tree.root.current]).toEqual([2, 5, 5]);
  });

  it("an amount over an ancestor's current is EINVAL and changes nothing", () => {
    const { tree, user, job } = userJob();
    tree.tryCharge(job, 3);
    // Releasing at the parent what was charged at the child leaves the child above its parent.
    expect(tree.uncharge(user, 2)).toBe(0);
    expect(tree.uncharge(job, 2)).toBe("EINVAL");
    expect([job.current, user.current, tree.root.current]).toEqual([3, 1, 1]);
  });

  it("an amount that is not a non-negative safe integer is EINVAL", () => {
    const { tree, job } = userJob();
    tree.tryCharge(job, 1);
    for (const amount of BAD_AMOUNTS) expect(tree.uncharge(job, amount)).toBe("EINVAL");
    expect(job.current).toBe(1);
  });

  it("a node of another tree, or a removed node, is EINVAL", () => {
    const { tree, job } = userJob();
    const other = new ChargeTree({ capacity: 10 });
    other.tryCharge(other.root, 1);
    expect(tree.uncharge(other.root, 1)).toBe("EINVAL");
    expect(other.root.current).toBe(1);
    expect(tree.uncharge(forged, 0)).toBe("EINVAL");
    tree.removeNode(job);
    expect(tree.uncharge(job, 0)).toBe("EINVAL");
  });

  it("an uncharge works with the capacity at 0", () => {
    const { tree, job } = userJob();
    tree.tryCharge(job, 2);
    tree.setCapacity(0);
    expect(tree.uncharge(job, 2)).toBe(0);
    expect(tree.root.current).toBe(0);
  });
});

describe("find and nodes", () => {
  it("find takes canonical paths only", () => {
    const { tree, user, job } = userJob();
    expect(tree.find("/")).toBe(tree.root);
    expect(tree.find("/user")).toBe(user);
    expect(tree.find("/user/job")).toBe(job);
    for (const path of ["", "user", "/user/", "//user", "/user//job", "/nope", "/user/job/x"]) {
      expect(tree.find(path)).toBeUndefined();
    }
  });

  it("nodes walks live nodes in pre-order, children in creation order", () => {
    const tree = new ChargeTree({ capacity: 10 });
    const b = node(tree.createNode(tree.root, "b"));
    const b1 = node(tree.createNode(b, "1"));
    const a = node(tree.createNode(tree.root, "a"));
    const b2 = node(tree.createNode(b, "2"));
    const a1 = node(tree.createNode(a, "1"));
    expect([...tree.nodes()].map((n) => n.path)).toEqual(
      [tree.root, b, b1, b2, a, a1].map((n) => n.path),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Model-based test: the tree against a reference written as plainly as possible.

interface RefNode {
  name: string;
  path: string;
  parent: RefNode | null;
  children: RefNode[];
  max: number;
  current: number;
  peak: number;
  events: number;
  eventsLocal: number;
  removed: boolean;
}

type Result = 0 | string;

/** Marks "a node this tree did not make" in the reference. */
const FOREIGN = null;
type RefHandle = RefNode | typeof FOREIGN;

function validLimit(v: number): boolean {
  return v === Number.POSITIVE_INFINITY || (Number.isInteger(v) && v >= 0);
}

function validAmount(v: number): boolean {
  return Number.isSafeInteger(v) && v >= 0;
}

class RefTree {
  capacity: number;
  readonly root: RefNode;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.root = {
      name: "/",
      path: "/",
      parent: null,
      children: [],
      max: capacity,
      current: 0,
      peak: 0,
      events: 0,
      eventsLocal: 0,
      removed: false,
    };
  }

  private pathUp(n: RefNode): RefNode[] {
    const up: RefNode[] = [];
    for (let m: RefNode | null = n; m !== null; m = m.parent) up.push(m);
    return up;
  }

  private limitOf(n: RefNode): number {
    return n.parent === null ? this.capacity : n.max;
  }

  setCapacity(c: number): Result {
    if (!validLimit(c)) return "EINVAL";
    this.capacity = c;
    this.root.max = c;
    return 0;
  }

  createNode(p: RefHandle, name: string, max: number): RefNode | string {
    if (p === FOREIGN || !validLimit(max)) return "EINVAL";
    if (name === "" || name === "." || name === ".." || name.includes("/")) return "EINVAL";
    if (p.removed) return "ENOENT";
    if (p.children.some((c) => c.name === name)) return "EEXIST";
    const n: RefNode = {
      name,
      path: p.parent === null ? `/${name}` : `${p.path}/${name}`,
      parent: p,
      children: [],
      max,
      current: 0,
      peak: 0,
      events: 0,
      eventsLocal: 0,
      removed: false,
    };
    p.children.push(n);
    return n;
  }

  removeNode(n: RefHandle): Result {
    if (n === FOREIGN || n.parent === null) return "EINVAL";
    if (n.removed) return "ENOENT";
    if (n.children.length > 0 || n.current > 0) return "EBUSY";
    n.parent.children = n.parent.children.filter((c) => c !== n);
    n.removed = true;
    return 0;
  }

  setMax(n: RefHandle, max: number): Result {
    if (n === FOREIGN || n.parent === null || !validLimit(max)) return "EINVAL";
    if (n.removed) return "ENOENT";
    n.max = max;
    return 0;
  }

  tryCharge(n: RefHandle, amount: number): Result {
    if (this.capacity === 0) return "EINVAL";
    if (n === FOREIGN || n.removed || !validAmount(amount)) return "EINVAL";
    if (amount === 0) return 0;
    const up = this.pathUp(n);
    const fail = up.findIndex((m) => {
      const next = m.current + amount;
      return next > this.limitOf(m) || next > this.capacity || next > Number.MAX_SAFE_INTEGER;
    });
    const passed = fail === -1 ? up : up.slice(0, fail);
    for (const m of passed) m.peak = Math.max(m.peak, m.current + amount);
    if (fail === -1) {
      for (const m of up) m.current += amount;
      return 0;
    }
    up[fail].eventsLocal++;
    for (const m of up.slice(fail)) if (m.parent !== null) m.events++;
    return "EBUSY";
  }

  uncharge(n: RefHandle, amount: number): Result {
    if (n === FOREIGN || n.removed || !validAmount(amount)) return "EINVAL";
    const up = this.pathUp(n);
    if (up.some((m) => m.current < amount)) return "EINVAL";
    for (const m of up) m.current -= amount;
    return 0;
  }

  preorder(): RefNode[] {
    const out: RefNode[] = [];
    const visit = (n: RefNode) => {
      out.push(n);
      for (const c of n.children) visit(c);
    };
    visit(this.root);
    return out;
  }
}

const OPS_PER_RUN = 12_000;
const NAMES = ["a", "b", "c", "d"];
const BAD_NAMES = ["", ".", "..", "a/b"];

describe("ChargeTree against a reference model", () => {
  test.prop([fc.integer({ min: 1, max: 0x7fff_ffff })], { seed: 42, numRuns: 20 })(
    "every operation returns what the reference returns, and every node ends in the same state",
    (seed) => {
      const next = xorshift32(seed);
      const rand = () => next() / 0x1_0000_0000;
      const int = (n: number) => Math.floor(rand() * n);
      const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];

      const capacity = pick([Number.POSITIVE_INFINITY, 6, 12, 30]);
      const tree = new ChargeTree({ capacity });
      const ref = new RefTree(capacity);
      const other = new ChargeTree({ capacity: 10 });
      const otherChild = node(other.createNode(other.root, "a"));
      // Every node ever created, removed ones too, at the same index in both.
      const real: ChargeNode[] = [tree.root];
      const model: RefNode[] = [ref.root];

      const limit = () => {
        const r = rand();
        if (r < 0.03) return pick(BAD_LIMITS);
        if (r < 0.2) return Number.POSITIVE_INFINITY;
        return int(10);
      };
      const amount = (of: RefHandle) => {
        const r = rand();
        if (r < 0.03) return pick(BAD_AMOUNTS);
        if (r < 0.05) return 100;
        // Uncharging up to current (and just past it) gets both success and refusal.
        if (of !== FOREIGN && rand() < 0.5) return int(of.current + 2);
        return int(4);
      };
      const target = (): [ChargeNode, RefHandle] => {
        if (rand() < 0.02) return [pick([other.root, otherChild, forged]), FOREIGN];
        const i = int(real.length);
        return [real[i], model[i]];
      };

      // Outcomes seen, so that a generator too timid to reach an error path fails the test.
      const seen = new Set<string>();
      const create = (p: ChargeNode, rp: RefHandle) => {
        const name = rand() < 0.03 ? pick(BAD_NAMES) : pick(NAMES);
        const max = limit();
        const got = tree.createNode(p, name, max);
        const want = ref.createNode(rp, name, max);
        if (typeof want === "string" || typeof got === "string") {
          expect(got).toBe(want);
          seen.add(`createNode ${got}`);
        } else {
          expect(got.path).toBe(want.path);
          real.push(got);
          model.push(want);
        }
      };

      for (let i = 0; i < 6; i++) create(...target());

      const compare = () => {
        for (let i = 0; i < real.length; i++) {
          const r = real[i];
          const m = model[i];
          const same =
            r.current === m.current &&
            r.peak === m.peak &&
            r.events.max === m.events &&
            r.eventsLocal.max === m.eventsLocal &&
            r.max === m.max &&
            r.removed === m.removed;
          if (!same) {
            expect({ path: r.path, ...state(r), max: r.max, removed: r.removed }).toEqual({
              path: m.path,
              current: m.current,
              peak: m.peak,
              events: m.events,
              eventsLocal: m.eventsLocal,
              max: m.max,
              removed: m.removed,
            });
          }
          if (!m.removed && tree.find(m.path) !== r) expect(tree.find(m.path)).toBe(r);
        }
        expect([...tree.nodes()].map((n) => n.path)).toEqual(ref.preorder().map((n) => n.path));
      };

      for (let op = 0; op < OPS_PER_RUN; op++) {
        const r = rand();
        const [n, rn] = target();
        let kind: string;
        let got: Result;
        let want: Result;
        if (r < 0.4) {
          kind = "tryCharge";
          const a = amount(FOREIGN);
          got = tree.tryCharge(n, a);
          want = ref.tryCharge(rn, a);
        } else if (r < 0.7) {
          kind = "uncharge";
          const a = amount(rn);
          got = tree.uncharge(n, a);
          want = ref.uncharge(rn, a);
        } else if (r < 0.8) {
          kind = "setMax";
          const max = limit();
          got = tree.setMax(n, max);
          want = ref.setMax(rn, max);
        } else if (r < 0.87) {
          create(n, rn);
          continue;
        } else if (r < 0.98) {
          kind = "removeNode";
          got = tree.removeNode(n);
          want = ref.removeNode(rn);
        } else {
          kind = "setCapacity";
          const c = rand() < 0.1 ? pick(BAD_LIMITS) : pick([0, 3, 8, 20, Number.POSITIVE_INFINITY]);
          got = tree.setCapacity(c);
          want = ref.setCapacity(c);
        }
        if (got !== want) expect({ op, got }).toEqual({ op, got: want });
        seen.add(`${kind} ${got}`);
        if (op % 1000 === 999) compare();
      }
      compare();
      expect(other.root.current + otherChild.current).toBe(0);
      expect([...seen]).toEqual(
        expect.arrayContaining([
          "createNode EEXIST",
          "createNode EINVAL",
          "createNode ENOENT",
          "removeNode 0",
          "removeNode EBUSY",
          "removeNode EINVAL",
          "removeNode ENOENT",
          "setCapacity 0",
          "setMax 0",
          "setMax EINVAL",
          "setMax ENOENT",
          "tryCharge 0",
          "tryCharge EBUSY",
          "tryCharge EINVAL",
          "uncharge 0",
          "uncharge EINVAL",
        ]),
      );
    },
  );
});
