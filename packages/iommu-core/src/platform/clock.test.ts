import { fc, test } from "@fast-check/vitest";
import { describe, expect, it } from "vitest";
import { ModelBug } from "./bug.js";
import { LogicalClock } from "./clock.js";
import { Prng } from "./prng.js";

describe("LogicalClock time", () => {
  it("starts at 0; tick adds 1, advance adds dt, advanceTo jumps", () => {
    const c = new LogicalClock();
    expect(c.now).toBe(0);
    c.tick();
    expect(c.now).toBe(1);
    c.advance(10);
    expect(c.now).toBe(11);
    c.advance(0);
    expect(c.now).toBe(11);
    c.advanceTo(100);
    expect(c.now).toBe(100);
    c.advanceTo(100);
    expect(c.now).toBe(100);
  });

  it("never goes backwards: a past advanceTo, a negative or fractional step throw ModelBug", () => {
    const c = new LogicalClock();
    c.advance(5);
    expect(() => c.advanceTo(4)).toThrow(ModelBug);
    expect(() => c.advance(-1)).toThrow(ModelBug);
    expect(() => c.advance(0.5)).toThrow(ModelBug);
    expect(() => c.advance(Number.NaN)).toThrow(ModelBug);
    expect(() => c.schedule(1.5, () => {})).toThrow(ModelBug);
    expect(c.now).toBe(5);
  });
});

describe("LogicalClock timers", () => {
  it("fire when time reaches them, in (time, scheduling order) order, seeing their time", () => {
    const c = new LogicalClock();
    const log: string[] = [];
    c.schedule(5, () => log.push(`b@${c.now}`));
    c.schedule(3, () => log.push(`a@${c.now}`));
    c.schedule(5, () => log.push(`c@${c.now}`));
    c.schedule(9, () => log.push(`d@${c.now}`));
    expect(c.advance(4)).toBe(1);
    expect(log).toEqual(["a@3"]);
    expect(c.advance(1)).toBe(2);
    expect(log).toEqual(["a@3", "b@5", "c@5"]);
    expect(c.advanceTo(20)).toBe(1);
    expect(log).toEqual(["a@3", "b@5", "c@5", "d@9"]);
    expect(c.now).toBe(20);
    expect(c.pending).toBe(0);
  });

  it("fires a timer scheduled in the past on the next advance or runDue, not in schedule", () => {
    const c = new LogicalClock();
    c.advance(10);
    const log: number[] = [];
    c.schedule(3, () => log.push(c.now));
    c.schedule(10, () => log.push(c.now));
    expect(log).toEqual([]);
    expect(c.runDue()).toBe(2);
    expect(log).toEqual([10, 10]);
    c.schedule(1, () => log.push(c.now));
    c.tick();
    expect(log).toEqual([10, 10, 10]); // overdue: runs before time moves on
    expect(c.now).toBe(11);
  });

  it("runDue fires only timers at or before now", () => {
    const c = new LogicalClock();
    const log: number[] = [];
    c.schedule(0, () => log.push(0));
    c.schedule(1, () => log.push(1));
    expect(c.runDue()).toBe(1);
    expect(log).toEqual([0]);
    expect(c.runDue()).toBe(0);
    expect(c.nextTimerAt()).toBe(1);
  });

  it("cancel removes a pending timer and reports whether it was pending", () => {
    const c = new LogicalClock();
    const log: string[] = [];
    const a = c.schedule(2, () => log.push("a"));
    const b = c.schedule(2, () => log.push("b"));
    expect(c.cancel(a)).toBe(true);
    expect(c.cancel(a)).toBe(false);
    expect(c.cancel(12345)).toBe(false);
    c.advance(2);
    expect(log).toEqual(["b"]);
    expect(c.cancel(b)).toBe(false);
  });

  it("let a callback schedule timers (due ones fire in the same advance) and cancel others", () => {
    const c = new LogicalClock();
    const log: string[] = [];
    let victim = 0;
    const every = (dt: number) => {
      log.push(`tick@${c.now}`);
      if (c.now < 30) c.after(dt, () => every(dt));
    };
    c.schedule(10, () => every(10));
    c.schedule(15, () => {
      log.push(`cancel@${c.now}`);
      c.cancel(victim);
      c.schedule(c.now, () => log.push(`same-time@${c.now}`));
    });
    victim = c.schedule(25, () => log.push("victim"));
    c.advance(100);
    expect(log).toEqual(["tick@10", "cancel@15", "same-time@15", "tick@20", "tick@30"]);
  });

  it("throws ModelBug when a callback advances the clock", () => {
    const c = new LogicalClock();
    c.schedule(1, () => c.advance(1));
    expect(() => c.tick()).toThrow(ModelBug);
    // The clock is usable again afterwards.
    c.schedule(c.now + 1, () => {});
    expect(c.tick()).toBe(1);
  });

  test.prop([fc.integer({ min: 1, max: 0x7fffffff })], { seed: 0xc10c, numRuns: 30 })(
    "random schedules, cancels and advances fire exactly the reference's timers, in its order",
    (seed) => {
      const rnd = new Prng(seed);
      const c = new LogicalClock();
      const fired: number[] = [];
      /** The reference: pending timers as [at, seq, tag], fired by a full sort. */
      let ref: [number, number, number][] = [];
      const refFired: number[] = [];
      const ids = new Map<number, number>();
      let seq = 0;
      const bad: string[] = [];
      for (let step = 0; step < 300; step++) {
        const op = rnd.below(10);
        if (op < 5) {
          const at = c.now + rnd.range(-5, 30);
          const tag = seq++;
          ids.set(
            tag,
            c.schedule(at, () => fired.push(tag)),
          );
          ref.push([at, tag, tag]);
        } else if (op < 7 && ids.size > 0) {
          const tag = rnd.pick([...ids.keys()]);
          const pending = ref.some((r) => r[2] === tag);
          if (c.cancel(ids.get(tag) as number) !== pending) bad.push(`step ${step}: cancel`);
          ref = ref.filter((r) => r[2] !== tag);
          ids.delete(tag);
        } else {
          const to = c.now + rnd.below(op === 9 ? 1 : 20);
          const due = ref.filter((r) => r[0] <= to).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
          ref = ref.filter((r) => r[0] > to);
          for (const r of due) refFired.push(r[2]);
          if (op === 9) c.runDue();
          else c.advanceTo(to);
        }
        if (fired.join() !== refFired.join()) bad.push(`step ${step}: fired ${fired.join()}`);
        if (c.pending !== ref.length) bad.push(`step ${step}: pending ${c.pending}`);
        if (bad.length > 0) break;
      }
      expect(bad).toEqual([]);
      expect(fired).toEqual(refFired);
    },
  );
});
