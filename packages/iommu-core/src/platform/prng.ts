// The seeded random source of every model and test: xoshiro128** on 32-bit operations, so the same
// seed gives the same run on any host.

import { bug } from "./bug.js";

const TWO32 = 4294967296;
const TWO53 = 9007199254740992;
/** The Weyl increment of splitmix32 (2^32 / golden ratio); also salts a fork's seed. */
const GOLDEN = 0x9e3779b9;

/**
 * splitmix32: a Weyl sequence through the murmur3 finalizer. Used only to spread a 32-bit seed
 * over xoshiro's 128-bit state; the finalizer is a bijection, so four consecutive outputs are
 * never all zero (the one state xoshiro cannot leave).
 */
function splitmix32(state: number): number {
  let z = (state + GOLDEN) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * A deterministic pseudo-random generator: xoshiro128** (Blackman and Vigna), seeded from a uint32
 * through splitmix32. Every operation is a 32-bit integer operation; nothing depends on the host,
 * and nothing here reads Math.random or the wall clock.
 *
 * Bounds that make no sense (an empty range, `below(0)`, picking from an empty array) are bugs in
 * the caller and throw ModelBug.
 *
 * @kernel include/linux/prandom.h prandom_u32_state
 */
export class Prng {
  /** The uint32 this generator was built from: `new Prng(p.seed)` replays `p` from its start. */
  readonly seed: number;
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    if (!Number.isInteger(seed)) bug(`Prng: seed ${seed} is not an integer`);
    this.seed = seed >>> 0;
    let w = this.seed;
    this.s0 = splitmix32(w);
    w = (w + GOLDEN) | 0;
    this.s1 = splitmix32(w);
    w = (w + GOLDEN) | 0;
    this.s2 = splitmix32(w);
    w = (w + GOLDEN) | 0;
    this.s3 = splitmix32(w);
  }

  /** The next uniformly distributed uint32. */
  nextU32(): number {
    const s1 = this.s1;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /**
   * A uniform integer in [0, n), for an integer n in [1, 2^53]. Unbiased: draws that fall in the
   * incomplete last copy of [0, n) are rejected (fewer than one draw in two, whatever n is).
   */
  below(n: number): number {
    if (!(n >= 1 && n <= TWO53) || !Number.isInteger(n)) bug(`Prng.below: bad bound ${n}`);
    if (n <= TWO32) {
      if ((n & (n - 1)) === 0) return n === TWO32 ? this.nextU32() : this.nextU32() & (n - 1);
      // 2^32 mod n draws at the bottom are the ones that would favour the low residues.
      const reject = TWO32 % n;
      for (;;) {
        const x = this.nextU32();
        if (x >= reject) return x % n;
      }
    }
    // Above 2^32: a 53-bit draw (21 high bits, 32 low ones), exact in a double.
    const reject = TWO53 % n;
    for (;;) {
      const x = (this.nextU32() >>> 11) * TWO32 + this.nextU32();
      if (x >= reject) return x % n;
    }
  }

  /** A uniform integer in [lo, hiInclusive]; the range may hold up to 2^53 values. */
  range(lo: number, hiInclusive: number): number {
    if (!Number.isInteger(lo) || !Number.isInteger(hiInclusive) || hiInclusive < lo) {
      bug(`Prng.range: bad range [${lo}, ${hiInclusive}]`);
    }
    return lo + this.below(hiInclusive - lo + 1);
  }

  /** True with probability `p` (to within 2^-32); always false for p ≤ 0, always true for p ≥ 1. */
  chance(p: number): boolean {
    return this.nextU32() < p * TWO32;
  }

  /** A uniformly chosen element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) bug("Prng.pick: empty array");
    return items[this.below(items.length)];
  }

  /** Shuffle `items` in place (Fisher–Yates, every order equally likely) and return it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.below(i + 1);
      const tmp = items[i];
      items[i] = items[j];
      items[j] = tmp;
    }
    return items;
  }

  /**
   * A child generator whose stream does not overlap this one in practice: its seed is drawn from
   * this stream (so the parent moves on by one draw) and it is rebuilt from scratch through
   * splitmix32. Give each device, queue or worker its own fork, so adding draws in one does not
   * shift the others.
   */
  fork(): Prng {
    return new Prng((this.nextU32() ^ GOLDEN) >>> 0);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
