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
