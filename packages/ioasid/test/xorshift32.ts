// The seeded PRNG of the property tests: a long operation stream is drawn inside one property case
// at next to no cost, and fast-check still shrinks over the seed. It is the benches' xorshift32.
export { xorshift32 } from "../../../scripts/bench-kit.js";
