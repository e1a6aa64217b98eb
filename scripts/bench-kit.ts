// Shared helpers for the benchmarks under packages/*/bench: the method of ../shared/bench-c/README.md
// (xorshift32 streams, untimed warm-up, median of timed repetitions, a sink) and the JSON line each
// workload prints.

/** One workload's result, printed as one JSON line on stdout. */
export interface BenchResult {
  bench: string;
  name: string;
  ns_per_op: number;
  ops: number;
  min_ns?: number;
  max_ns?: number;
  checksum?: number;
  [extra: string]: unknown;
}

/**
 * xorshift32 exactly as the C baselines run it (x ^= x << 13; x ^= x >>> 17; x ^= x << 5, as
 * uint32). A zero seed, which would give zeros forever, is replaced; every bench seed is non-zero.
 * The property tests draw their operation streams from it too.
 */
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

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 === 1 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/** Nanoseconds on a monotonic clock (BigInt stays here, at the edge). */
export function nowNs(): number {
  return Number(process.hrtime.bigint());
}

/** Warm-up and timed repetitions, as the baseline README prescribes for JS. */
export const WARMUP = 3;
export const REPS = 5;

/**
 * Run `rep` WARMUP + REPS times; it returns the measured ns per operation of that repetition
 * (timing only its loop). Reports the median and the spread of the timed ones.
 */
export function repeat(rep: () => number): { ns: number; min: number; max: number } {
  const timed: number[] = [];
  for (let r = -WARMUP; r < REPS; r++) {
    const ns = rep();
    if (r >= 0) timed.push(ns);
  }
  return { ns: median(timed), min: Math.min(...timed), max: Math.max(...timed) };
}

/** Print one result line. Benches print nothing else on stdout. */
export function emit(result: BenchResult): void {
  const round = (x: number) => Math.round(x * 1000) / 1000;
  const line: BenchResult = { ...result, ns_per_op: round(result.ns_per_op) };
  if (result.min_ns !== undefined) line.min_ns = round(result.min_ns);
  if (result.max_ns !== undefined) line.max_ns = round(result.max_ns);
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

/** Stop the bench with a message on stderr (a wrong checksum means the timing is meaningless). */
export function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(1);
}

/**
 * Workload 3 of ../shared/bench-c/README.md (the IOTLB): 16 domains d with DID d+1 and PASID
 * 0x10000+d, domain d mapping page V0+k to frame PA0_FRAME + d*65536 + k for k < 65536.
 */
export const W3 = Object.freeze({
  SETS: 512,
  WAYS: 8,
  DOMAINS: 16,
  PAGES_PER_DOM: 65536,
  /** Page number of IOVA 0x1_0000_0000. */
  V0: 0x100000,
  /** Frame of PA 0x80_0000_0000. */
  PA0_FRAME: 0x80_0000_0000 / 4096,
  /** Keys per stream; operation t uses entry t & (NKEYS - 1). */
  NKEYS: 1 << 20,
  N_HIT: 20_000_000,
  N_MIX: 10_000_000,
  /** The hit rate tlb_mixed90 must measure, as C does. */
  MIXED_HIT_RATE: "0.89786",
});

/** The workload-3 streams: `hot[i]` for tlb_hit, `(mdom[i], mk[i])` (domain, page) for tlb_mixed90. */
export function workload3Streams(): { hot: Uint16Array; mdom: Uint8Array; mk: Uint32Array } {
  const hot = new Uint16Array(W3.NKEYS);
  const mdom = new Uint8Array(W3.NKEYS);
  const mk = new Uint32Array(W3.NKEYS);
  const xs = xorshift32(0x68e31da4);
  for (let i = 0; i < W3.NKEYS; i++) hot[i] = xs() & 2047;
  const xm = xorshift32(0xb5297a4d);
  for (let i = 0; i < W3.NKEYS; i++) {
    const r1 = xm();
    const r2 = xm();
    if (r1 % 10 === 0) {
      mdom[i] = r2 & 15;
      mk[i] = 2048 + ((r2 >>> 4) % (W3.PAGES_PER_DOM - 2048));
    } else {
      const h = r2 & 2047;
      mdom[i] = h >> 7;
      mk[i] = h;
    }
  }
  return { hot, mdom, mk };
}
