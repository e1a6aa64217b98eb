// The IOASID allocator after its custom-allocator hook was removed: one global ID space, split
// into sets by owner, with optional charge limits per user.

import type { ChargeNode, ChargeTree } from "./charge-tree.js";
import { IdMap } from "./id-map.js";

/** An I/O address space ID (a PASID on PCI, a SubstreamID on Arm): a 32-bit unsigned integer. */
export type Ioasid = number;

/**
 * The ID that never names an address space: `(ioasid_t)-1`.
 * @kernel include/linux/ioasid.h INVALID_IOASID
 */
export const INVALID_IOASID: Ioasid = 0xffffffff;

/**
 * True unless `id` is {@link INVALID_IOASID}: what the kernel's helper checks, nothing more.
 * @kernel include/linux/ioasid.h pasid_valid
 */
export function pasidValid(id: Ioasid): boolean {
  return id !== INVALID_IOASID;
}

/**
 * A group of IOASIDs with one owner, inside the one global space: for instance the PASIDs the
 * DMA API hands to in-kernel users, and those SVA binds give to processes. Sets share the
 * numbering (no ID is in two sets) but lookups can be confined to one set.
 *
 * @kernel include/linux/ioasid.h DECLARE_IOASID_SET
 */
export class IoasidSet {
  constructor(readonly name: string) {}
}

/** Private data may be anything but a string, so that a result is never mistaken for an errno. */
export type IoasidPrivate = object | number | boolean | bigint | symbol | null | undefined;

interface IoasidData<P> {
  readonly set: IoasidSet;
  priv: P;
  /** The node this ID is charged to, or null for an uncharged (in-kernel) ID. */
  charge: ChargeNode | null;
}

/** Options of an {@link IoasidSpace}. */
export interface IoasidSpaceOptions {
  /** Charge tree that allocations made on behalf of a user are counted in (one unit per ID). */
  readonly charges?: ChargeTree;
}

/**
 * The global IOASID space. Every ID handed out is unique across all sets; each carries its set,
 * the caller's private data, and the charge node it counts against, if any.
 *
 * @kernel drivers/iommu/ioasid.c
 */
export class IoasidSpace<P extends IoasidPrivate = IoasidPrivate> {
  private readonly ids = new IdMap<IoasidData<P>>();
  /** How many IDs each set holds here: a counter object per set, so counting is no Map write. */
  private readonly perSet = new Map<IoasidSet, { n: number }>();
  private readonly charges: ChargeTree | undefined;

  constructor(options: IoasidSpaceOptions = {}) {
    this.charges = options.charges;
  }

  /**
   * Allocate the lowest free ID in [`min`, `max`] for `set`, with private data `priv`. With a
   * `charge` node the ID is charged to it (and its ancestors) first, and uncharged when freed;
   * without one (in-kernel use) nothing is charged. On failure nothing is allocated or charged.
   *
   * @returns the ID; `'ENOSPC'` when the range is full; `'EBUSY'` when the charge would exceed a
   *   limit; `'EINVAL'` for bounds that are not integers with 0 <= min <= max < INVALID_IOASID, a
   *   charge node without a charge tree, or a charge the tree refuses as invalid (capacity 0, a
   *   removed node, a node of another tree).
   * @kernel drivers/iommu/ioasid.c ioasid_alloc
   * @kernel kernel/cgroup/misc.c misc_cg_try_charge
   */
  alloc(
    set: IoasidSet,
    min: number,
    max: number,
    priv: P,
    charge?: ChargeNode,
  ): Ioasid | "ENOSPC" | "EBUSY" | "EINVAL" {
    if (min >>> 0 !== min || max >>> 0 !== max || min > max || max >= INVALID_IOASID) {
      return "EINVAL";
    }
    const node = charge ?? null;
    if (node !== null) {
      if (this.charges === undefined) return "EINVAL";
      const charged = this.charges.tryCharge(node, 1);
      if (charged !== 0) return charged;
    }
    const id = this.ids.alloc({ set, priv, charge: node }, { min, max });
    if (typeof id !== "number") {
      if (node !== null) this.charges?.uncharge(node, 1);
      return "ENOSPC";
    }
    const count = this.perSet.get(set);
    if (count === undefined) this.perSet.set(set, { n: 1 });
    else count.n++;
    return id;
  }

  /**
   * Free `id`, uncharging it if it was charged.
   *
   * @returns 0; `'ENOENT'` when `id` is not allocated; `'EINVAL'` when it is not a valid IOASID.
   * @kernel drivers/iommu/ioasid.c ioasid_free
   */
  free(id: Ioasid): 0 | "ENOENT" | "EINVAL" {
    if (id >>> 0 !== id || id === INVALID_IOASID) return "EINVAL";
    const data = this.ids.erase(id);
    if (data === undefined) return "ENOENT";
    if (data.charge !== null) this.charges?.uncharge(data.charge, 1);
    const count = this.perSet.get(data.set);
    if (count !== undefined && --count.n === 0) this.perSet.delete(data.set);
    return 0;
  }

  /**
   * The private data of `id`. With a `set`, an ID of another set is refused; with a `getter`,
   * the data is returned only if the getter accepts it (it may take a reference there), else
   * `null`, as the kernel's lookup does for an object that is going away.
   *
   * @returns the private data, or `null` when the getter refused it; `'ENOENT'` when `id` is not
   *   allocated; `'EACCES'` when it belongs to a set other than `set`.
   * @kernel drivers/iommu/ioasid.c ioasid_find
   */
  find(
    set: IoasidSet | null,
    id: Ioasid,
    getter?: (priv: P) => boolean,
  ): P | null | "ENOENT" | "EACCES" {
    const data = this.ids.load(id);
    if (data === undefined) return "ENOENT";
    if (set !== null && data.set !== set) return "EACCES";
    if (getter !== undefined && !getter(data.priv)) return null;
    return data.priv;
  }

  /**
   * Replace the private data of an allocated `id`.
   *
   * @returns 0; `'ENOENT'` when `id` is not allocated.
   * @kernel drivers/iommu/ioasid.c ioasid_set_data
   */
  setData(id: Ioasid, priv: P): 0 | "ENOENT" {
    const data = this.ids.load(id);
    if (data === undefined) return "ENOENT";
    data.priv = priv;
    return 0;
  }

  /**
   * Charge an allocated, uncharged `id` to `node` (and its ancestors): the charge moves from
   * allocation to the point where the ID starts being used for a user (a PASID is charged where it
   * is attached, as the kernel discussion on PASID limits suggests). Uncharged when freed.
   *
   * @returns 0; `'ENOENT'` when `id` is not allocated; `'EALREADY'` when it is charged already;
   *   `'EBUSY'` when the charge would exceed a limit; `'EINVAL'` without a charge tree or for a
   *   node the tree refuses.
   * @kernel kernel/cgroup/misc.c misc_cg_try_charge
   */
  charge(id: Ioasid, node: ChargeNode): 0 | "ENOENT" | "EALREADY" | "EBUSY" | "EINVAL" {
    const data = this.ids.load(id);
    if (data === undefined) return "ENOENT";
    if (data.charge !== null) return "EALREADY";
    if (this.charges === undefined) return "EINVAL";
    const charged = this.charges.tryCharge(node, 1);
    if (charged !== 0) return charged;
    data.charge = node;
    return 0;
  }

  /**
   * Take back the charge of `id` (a first attach that failed after charging). The ID stays
   * allocated, uncharged.
   *
   * @returns 0; `'ENOENT'` when `id` is not allocated; `'EINVAL'` when it is not charged.
   * @kernel kernel/cgroup/misc.c misc_cg_uncharge
   */
  uncharge(id: Ioasid): 0 | "ENOENT" | "EINVAL" {
    const data = this.ids.load(id);
    if (data === undefined) return "ENOENT";
    if (data.charge === null) return "EINVAL";
    this.charges?.uncharge(data.charge, 1);
    data.charge = null;
    return 0;
  }

  /** The set `id` belongs to, or `undefined` when it is not allocated. */
  setOf(id: Ioasid): IoasidSet | undefined {
    return this.ids.load(id)?.set;
  }

  /** The charge node `id` counts against: `null` when uncharged, `undefined` when not allocated. */
  chargeOf(id: Ioasid): ChargeNode | null | undefined {
    return this.ids.load(id)?.charge;
  }

  /** True when `id` is allocated. */
  has(id: Ioasid): boolean {
    return this.ids.has(id);
  }

  /** The number of allocated IDs, in all sets or in `set`. */
  size(set?: IoasidSet): number {
    return set === undefined ? this.ids.size : (this.perSet.get(set)?.n ?? 0);
  }

  /** The allocated IDs in ascending order, of all sets or of `set`. */
  *allocated(set?: IoasidSet): IterableIterator<Ioasid> {
    for (const [id, data] of this.ids.entries()) {
      if (set === undefined || data.set === set) yield id;
    }
  }

  /**
   * Free every ID of `set` (teardown of an owner), uncharging each.
   * @returns how many were freed.
   */
  freeAll(set: IoasidSet): number {
    const doomed = [...this.allocated(set)];
    for (const id of doomed) this.free(id);
    return doomed.length;
  }
}
