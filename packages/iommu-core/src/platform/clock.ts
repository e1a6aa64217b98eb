// Logical time: the integer clock every model reads instead of the wall clock, with timers that
// fire in a fixed order, so a run is the same on every host.

import { bug } from "./bug.js";

/** Names a pending timer; ids are never reused within one clock. */
export type TimerId = number;

/** A pending timer; `index` is its slot in the heap, kept current so cancel is O(log n). */
interface Timer {
  at: number;
  id: TimerId;
  fn: () => void;
  index: number;
}

/**
 * Integer logical time starting at 0, and one-shot timers. Advancing fires every due timer in
 * (time, scheduling order) order, with `now` set to the timer's time while it runs (a timer
 * scheduled for a time already past runs at the current `now`, on the next `advance`, `tick` or
 * `runDue`, never inside `schedule`). A callback may schedule and cancel timers; one it schedules
 * for a time not after the end of the current advance fires within that same advance.
 *
 * Advancing while no timer is due only moves `now`: no allocation, so the clock can sit on a
 * per-DMA path. Calling `advance`, `advanceTo` or `runDue` from inside a timer is a bug (time would
 * move under the outer loop) and throws ModelBug, as do a negative or non-integer step.
 *
 * @kernel kernel/time/timer.c add_timer
 */
export class LogicalClock {
  private time = 0;
  private nextId = 1;
  private firing = false;
  /** Binary min-heap on (at, id): id grows with every schedule, so it is the insertion order. */
  private readonly heap: Timer[] = [];
  private readonly byId = new Map<TimerId, Timer>();

  /** The current logical time. */
  get now(): number {
    return this.time;
  }

  /** Number of timers scheduled and not yet fired or cancelled. */
  get pending(): number {
    return this.heap.length;
  }

  /** The time of the earliest pending timer, or undefined when none is pending. */
  nextTimerAt(): number | undefined {
    return this.heap.length === 0 ? undefined : this.heap[0].at;
  }

  /** Move time forward by `dt` ≥ 0, firing every timer due by then. Returns how many fired. */
  advance(dt: number): number {
    if (!(dt >= 0) || !Number.isSafeInteger(dt)) bug(`LogicalClock.advance: bad step ${dt}`);
    return this.advanceTo(this.time + dt);
  }

  /** Move time forward to `t` ≥ now, firing every timer due by `t`. Returns how many fired. */
  advanceTo(t: number): number {
    if (!Number.isSafeInteger(t) || t < this.time) {
      bug(`LogicalClock.advanceTo: ${t} is not an integer at or after now (${this.time})`);
    }
    if (this.heap.length === 0 || this.heap[0].at > t) {
      if (this.firing) bug("LogicalClock: advance from inside a timer callback");
      this.time = t;
      return 0;
    }
    const fired = this.fireUntil(t);
    this.time = t;
    return fired;
  }

  /** advance(1). */
  tick(): number {
    return this.advanceTo(this.time + 1);
  }

  /** Fire the timers due at or before `now` (e.g. ones scheduled in the past). Returns how many. */
  runDue(): number {
    if (this.heap.length === 0 || this.heap[0].at > this.time) {
      if (this.firing) bug("LogicalClock: runDue from inside a timer callback");
      return 0;
    }
    return this.fireUntil(this.time);
  }

  /**
   * Call `fn` once when time reaches `at` (an integer; a past time means "at the next advance").
   * Returns the id to cancel it with.
   */
  schedule(at: number, fn: () => void): TimerId {
    if (!Number.isSafeInteger(at)) bug(`LogicalClock.schedule: time ${at} is not an integer`);
    const timer: Timer = { at, id: this.nextId++, fn, index: this.heap.length };
    this.heap.push(timer);
    this.siftUp(timer.index);
    this.byId.set(timer.id, timer);
    return timer.id;
  }

  /** schedule(now + dt, fn). */
  after(dt: number, fn: () => void): TimerId {
    if (!(dt >= 0) || !Number.isSafeInteger(dt)) bug(`LogicalClock.after: bad delay ${dt}`);
    return this.schedule(this.time + dt, fn);
  }

  /**
   * Cancel a pending timer. Returns true if it was pending, false if it already fired, was already
   * cancelled, or never existed.
   *
   * @kernel kernel/time/timer.c timer_delete
   */
  cancel(id: TimerId): boolean {
    const timer = this.byId.get(id);
    if (timer === undefined) return false;
    this.byId.delete(id);
    this.removeAt(timer.index);
    return true;
  }

  private fireUntil(t: number): number {
    if (this.firing) bug("LogicalClock: advance from inside a timer callback");
    this.firing = true;
    let fired = 0;
    try {
      while (this.heap.length > 0 && this.heap[0].at <= t) {
        const timer = this.heap[0];
        this.removeAt(0);
        this.byId.delete(timer.id);
        if (timer.at > this.time) this.time = timer.at;
        fired++;
        timer.fn();
      }
    } finally {
      this.firing = false;
    }
    return fired;
  }

  private less(a: Timer, b: Timer): boolean {
    return a.at < b.at || (a.at === b.at && a.id < b.id);
  }

  private removeAt(i: number): void {
    const heap = this.heap;
    const last = heap.pop() as Timer;
    if (i === heap.length) return;
    heap[i] = last;
    last.index = i;
    this.siftDown(i);
    this.siftUp(last.index);
  }

  private siftUp(i: number): void {
    const heap = this.heap;
    const timer = heap[i];
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = heap[p];
      if (!this.less(timer, parent)) break;
      heap[i] = parent;
      parent.index = i;
      i = p;
    }
    heap[i] = timer;
    timer.index = i;
  }

  private siftDown(i: number): void {
    const heap = this.heap;
    const n = heap.length;
    const timer = heap[i];
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.less(heap[r], heap[l]) ? r : l;
      if (!this.less(heap[c], timer)) break;
      heap[i] = heap[c];
      heap[i].index = i;
      i = c;
    }
    heap[i] = timer;
    timer.index = i;
  }
}
