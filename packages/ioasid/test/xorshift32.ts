// The seeded PRNG of the property tests: generating a long operation stream inside one property
// case costs next to nothing, and fast-check still shrinks over the seed.

/** xorshift32 (x ^= x << 13; x ^= x >>> 17; x ^= x << 5), as uint32; a zero seed is replaced. */
export function xorshift32(seed: number): () => number {
  let x = seed >>> 0 || 0x2545f491;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}
