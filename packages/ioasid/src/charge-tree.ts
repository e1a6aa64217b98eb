// A misc-cgroup-style hierarchy of resource limits, used here to cap the PASIDs a user holds.

/** What the root is called: `cgroup_name()` of the root cgroup reads `/`. */
const ROOT_NAME = "/";

/**
 * One cgroup of a {@link ChargeTree}, seen read-only; the tree updates it in place, so a held
 * view always shows the current state.
 *
 * @kernel include/linux/misc_cgroup.h struct misc_cg
 */
export interface ChargeNode {
  /** The directory name; `/` for the root. */
  readonly name: string;
  /** `/` for the root, `/user-1000/job` style below it. */
  readonly path: string;
  /** `null` only for the root; a removed node keeps the parent it had. */
  readonly parent: ChargeNode | null;
  /** Live children, in creation order. */
  readonly children: readonly ChargeNode[];
  /**
   * `misc.max`: `Infinity` for "max" (unlimited). The root has no such file; it reads as the
   * tree's capacity, the only limit that applies there.
   */
  readonly max: number;
  /** `misc.current`: what this node and its descendants hold. */
  readonly current: number;
  /** `misc.peak`: the highest `current` ever reached, including inside a charge that failed. */
  readonly peak: number;
  /**
   * `misc.events` "max": failed charges whose limit was hit at this node or below it. Always 0
   * on the root, which has no such file.
   */
  readonly events: { readonly max: number };
  /**
   * `misc.events.local` "max": failed charges whose limit was hit at this very node. The kernel
   * counts this on the root too, though it shows no file there.
   */
  readonly eventsLocal: { readonly max: number };
  /** True once {@link ChargeTree.removeNode} took the node out of the tree. */
  readonly removed: boolean;
}

class Node implements ChargeNode {
  readonly children: Node[] = [];
  current = 0;
  peak = 0;
  readonly events = { max: 0 };
  readonly eventsLocal = { max: 0 };
  removed = false;

  constructor(
    readonly name: string,
    readonly path: string,
    readonly parent: Node | null,
    public max: number,
  ) {}
}

/** The kernel's limits are u64 "max" or a count; ours are a count or `Infinity`. */
function isLimit(value: number): boolean {
  return value === Number.POSITIVE_INFINITY || (Number.isInteger(value) && value >= 0);
}

function isAmount(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

/**
 * A misc cgroup hierarchy for one resource: a root whose limit is the resource's capacity, and
 * nodes below it with their own `max`. A charge must fit under the limit of the node charged and
 * of every ancestor, or it fails whole.
 *
 * Counters are exact JavaScript integers, so 2^53 - 1 stands in for the kernel's u64 range: a
 * charge that would lift any `current` above `Number.MAX_SAFE_INTEGER` fails as if a limit were
 * there.
 *
 * @kernel kernel/cgroup/misc.c
 */
export class ChargeTree {
  /** The resource name, as `misc.capacity` lists it; `"pasid"` unless given. */
  readonly resource: string;
  readonly root: ChargeNode;
  readonly #root: Node;
  #capacity: number;
  // A WeakSet rather than a field on Node: a caller can forge an object shaped like a node, or
  // pass another tree's, but cannot put either in here.
  readonly #own = new WeakSet<object>();

  /**
   * @param options.capacity how much of the resource the host has: a non-negative integer or
   *   `Infinity`. Anything else throws `RangeError`, since a bad capacity is a bug in the
   *   simulator, not input from a guest.
   * @param options.name the resource name; defaults to `"pasid"`.
   * @kernel kernel/cgroup/misc.c misc_cg_set_capacity
   */
  constructor(options: { capacity: number; name?: string }) {
    if (!isLimit(options.capacity)) {
      throw new RangeError(
        `ChargeTree capacity must be a non-negative integer or Infinity, got ${options.capacity}`,
      );
    }
    this.resource = options.name ?? "pasid";
    this.#capacity = options.capacity;
    this.#root = new Node(ROOT_NAME, "/", null, options.capacity);
    this.root = this.#root;
    this.#own.add(this.#root);
  }

  /** `misc.capacity`: the root's limit. 0 turns the resource off: every charge is refused. */
  get capacity(): number {
    return this.#capacity;
  }

  /**
   * Set the capacity. Lowering it below what is charged is allowed: existing charges stay and
   * new ones fail until enough are released.
   *
   * @returns 0; `'EINVAL'` when `capacity` is neither a non-negative integer nor `Infinity`.
   * @kernel kernel/cgroup/misc.c misc_cg_set_capacity
   */
  setCapacity(capacity: number): 0 | "EINVAL" {
    if (!isLimit(capacity)) return "EINVAL";
    this.#capacity = capacity;
    this.#root.max = capacity;
    return 0;
  }

  /**
   * Create a child of `parent` (mkdir in the cgroup hierarchy), with `misc.max` = `max`
   * (default `Infinity`, "max").
   *
   * Argument checks come first, then the state of the tree: a bad name under a removed parent
   * is `'EINVAL'`.
   *
   * @returns the new node; `'EINVAL'` when `name` is empty, `.`, `..` or contains `/`, when
   *   `max` is neither a non-negative integer nor `Infinity`, or when `parent` is not a node of
   *   this tree; `'ENOENT'` when `parent` was removed; `'EEXIST'` when `parent` already has a
   *   child called `name`.
   * @kernel kernel/cgroup/cgroup.c cgroup_mkdir
   * @kernel kernel/cgroup/misc.c misc_cg_alloc
   */
  createNode(
    parent: ChargeNode,
    name: string,
    max: number = Number.POSITIVE_INFINITY,
  ): ChargeNode | "EINVAL" | "EEXIST" | "ENOENT" {
    if (!this.#own.has(parent) || !isLimit(max)) return "EINVAL";
    if (name === "" || name === "." || name === ".." || name.includes("/")) return "EINVAL";
    const p = parent as Node;
    if (p.removed) return "ENOENT";
    for (const sibling of p.children) if (sibling.name === name) return "EEXIST";
    const node = new Node(name, p === this.#root ? `/${name}` : `${p.path}/${name}`, p, max);
    p.children.push(node);
    this.#own.add(node);
    return node;
  }

  /**
   * Remove `node` (rmdir). The kernel refuses a cgroup with children. One that still holds
   * charges it takes out of sight but keeps alive until they are released; the model refuses it
   * instead, so that a removed node never holds a charge.
   *
   * @returns 0; `'EINVAL'` for the root or a node of another tree; `'ENOENT'` when `node` was
   *   already removed; `'EBUSY'` when it has children or `current > 0`.
   * @kernel kernel/cgroup/cgroup.c cgroup_destroy_locked
   * @kernel kernel/cgroup/misc.c misc_cg_free
   */
  removeNode(node: ChargeNode): 0 | "EBUSY" | "ENOENT" | "EINVAL" {
    if (!this.#own.has(node) || node === this.#root) return "EINVAL";
    const n = node as Node;
    if (n.removed) return "ENOENT";
    if (n.children.length > 0 || n.current > 0) return "EBUSY";
    const siblings = (n.parent as Node).children;
    siblings.splice(siblings.indexOf(n), 1);
    n.removed = true;
    return 0;
  }

  /**
   * Write `misc.max`. A value below `current` is accepted: what is charged stays charged, and
   * further charges through this node fail.
   *
   * @returns 0; `'EINVAL'` for the root (which has no `misc.max`), a node of another tree, or a
   *   `max` that is neither a non-negative integer nor `Infinity`; `'ENOENT'` when `node` was
   *   removed.
   * @kernel kernel/cgroup/misc.c misc_cg_max_write
   */
  setMax(node: ChargeNode, max: number): 0 | "EINVAL" | "ENOENT" {
    if (!this.#own.has(node) || node === this.#root || !isLimit(max)) return "EINVAL";
    const n = node as Node;
    if (n.removed) return "ENOENT";
    n.max = max;
    return 0;
  }

  /**
   * Charge `amount` to `node` and each of its ancestors. At the first node, walking up, where the
   * new `current` would exceed its `max` or the capacity, the charge fails whole: nothing stays
   * charged, `eventsLocal` of that node counts the failure, and `events` counts it there and on
   * each ancestor below the root. The nodes passed before the failure keep the `peak` they were
   * briefly lifted to, as in the kernel, which raises each watermark as it walks.
   *
   * Allocates nothing.
   *
   * @returns 0 (also for `amount` 0, which changes nothing); `'EBUSY'` when a limit refuses;
   *   `'EINVAL'` when the capacity is 0 (checked before `amount`, as the kernel does), `amount`
   *   is not a non-negative safe integer, or `node` is removed or not of this tree.
   * @kernel kernel/cgroup/misc.c misc_cg_try_charge
   */
  tryCharge(node: ChargeNode, amount: number): 0 | "EBUSY" | "EINVAL" {
    const capacity = this.#capacity;
    if (capacity === 0 || !this.#own.has(node) || !isAmount(amount)) return "EINVAL";
    const start = node as Node;
    if (start.removed) return "EINVAL";
    if (amount === 0) return 0;
    for (let n: Node | null = start; n !== null; n = n.parent) {
      // The sum is compared before it is stored, so an unsafe sum never lands in a counter.
      const next = n.current + amount;
      if (next > n.max || next > capacity || next > Number.MAX_SAFE_INTEGER) {
        for (let m: Node = start; m !== n; m = m.parent as Node) m.current -= amount;
        this.#recordEvent(n);
        return "EBUSY";
      }
      n.current = next;
      if (next > n.peak) n.peak = next;
    }
    return 0;
  }

  /**
   * Release `amount` from `node` and each of its ancestors. Where the kernel only WARNs that a
   * counter went negative, the model refuses the whole uncharge and changes nothing; since a
   * caller may uncharge a different node than it charged, every node on the way up is checked,
   * not just `node`.
   *
   * @returns 0 (also for `amount` 0); `'EINVAL'` when `amount` is not a non-negative safe
   *   integer or exceeds the `current` of `node` or of an ancestor, or `node` is removed or not
   *   of this tree.
   * @kernel kernel/cgroup/misc.c misc_cg_uncharge
   */
  uncharge(node: ChargeNode, amount: number): 0 | "EINVAL" {
    if (!this.#own.has(node) || !isAmount(amount)) return "EINVAL";
    const start = node as Node;
    if (start.removed) return "EINVAL";
    for (let n: Node | null = start; n !== null; n = n.parent) {
      if (amount > n.current) return "EINVAL";
    }
    for (let n: Node | null = start; n !== null; n = n.parent) n.current -= amount;
    return 0;
  }

  /**
   * The live node at `path` (`/`, `/a`, `/a/b`), or `undefined`. Only the form
   * {@link ChargeNode.path} has is understood: no trailing or doubled `/`.
   */
  find(path: string): ChargeNode | undefined {
    if (path === "/") return this.#root;
    if (!path.startsWith("/")) return undefined;
    let n: Node | undefined = this.#root;
    for (const part of path.slice(1).split("/")) {
      n = n.children.find((c) => c.name === part);
      if (n === undefined) return undefined;
    }
    return n;
  }

  /** Every live node, root first, in pre-order with children in creation order. */
  *nodes(): IterableIterator<ChargeNode> {
    const stack: Node[] = [this.#root];
    while (stack.length > 0) {
      const n = stack.pop() as Node;
      yield n;
      for (let i = n.children.length - 1; i >= 0; i--) stack.push(n.children[i]);
    }
  }

  /**
   * The root has no `misc.events` file, so the kernel stops the hierarchical count below it. Its
   * local count is kept all the same (the file is missing on the root too), and the model shows
   * it, since that is where a refusal by the capacity lands.
   *
   * @kernel kernel/cgroup/misc.c misc_cg_event
   */
  #recordEvent(at: Node): void {
    at.eventsLocal.max++;
    for (let n: Node = at; n.parent !== null; n = n.parent) n.events.max++;
  }
}
