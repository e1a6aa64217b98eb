// The values of an IdMap, in pages of 256 slots: a directory array for the pages of the low IDs,
// a Map for the pages above. A JS Map keyed by every ID would rehash as IDs come and go (about
// 150 ns for a delete and a set, against 20 ns here); a flat array would cost memory for the
// highest ID ever stored. A page is dropped when its last value goes.

const PAGE_SHIFT = 8;
const PAGE = 1 << PAGE_SHIFT;
/** Pages below this index are found through the directory array (IDs below 2^20). */
const LOW_PAGES = 1 << 12;

class Page<T> {
  readonly slots: (T | undefined)[] = new Array(PAGE).fill(undefined);
  live = 0;
}

export class ValuePages<T> {
  private low: (Page<T> | undefined)[] = [];
  private readonly high = new Map<number, Page<T>>();

  private page(id: number): Page<T> | undefined {
    const p = id >>> PAGE_SHIFT;
    return p < LOW_PAGES ? this.low[p] : this.high.get(p);
  }

  get(id: number): T | undefined {
    return this.page(id)?.slots[id & (PAGE - 1)];
  }

  /** Put `value` in an empty slot. */
  add(id: number, value: T): void {
    const p = id >>> PAGE_SHIFT;
    let page = p < LOW_PAGES ? this.low[p] : this.high.get(p);
    if (page === undefined) {
      page = new Page<T>();
      if (p < LOW_PAGES) {
        // Extend with explicit undefined so the directory stays a packed array.
        while (this.low.length <= p) this.low.push(undefined);
        this.low[p] = page;
      } else {
        this.high.set(p, page);
      }
    }
    page.slots[id & (PAGE - 1)] = value;
    page.live++;
  }

  /** Replace the value of an occupied slot. */
  replace(id: number, value: T): void {
    const page = this.page(id);
    if (page !== undefined) page.slots[id & (PAGE - 1)] = value;
  }

  /** Empty an occupied slot, returning what it held. */
  remove(id: number): T | undefined {
    const p = id >>> PAGE_SHIFT;
    const page = p < LOW_PAGES ? this.low[p] : this.high.get(p);
    if (page === undefined) return undefined;
    const i = id & (PAGE - 1);
    const value = page.slots[i];
    page.slots[i] = undefined;
    if (--page.live === 0) {
      if (p < LOW_PAGES) this.low[p] = undefined;
      else this.high.delete(p);
    }
    return value;
  }

  clear(): void {
    this.low = [];
    this.high.clear();
  }
}
