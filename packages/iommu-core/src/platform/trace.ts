// The trace-event bus: typed events from every layer (DMA, faults, maps, flushes, attaches, page
// requests) to whoever listens, at no cost when nobody does.

import type { LogicalClock } from "./clock.js";

/**
 * Every trace event kind and the shape of its data. Other packages add their kinds by declaration
 * merging, in any module of theirs that is part of the program:
 *
 * ```ts
 * declare module "@iommu-sim/iommu-core" {
 *   interface TraceEventMap {
 *     "vtd.ctx-cache": { sid: number; hit: boolean };
 *   }
 * }
 * ```
 *
 * Always name the package root, never the `/platform` subpath: TypeScript merges an augmentation
 * through a re-export, but when one program augments both names, some of the additions are
 * silently lost, depending on file order. The augmenting file must also import the package (any
 * import will do), or TypeScript cannot find the module to augment. Prefix new kinds with the
 * package (`vtd.`, `smmu.`, `sva.`) so they cannot clash, and keep the data to plain numbers,
 * strings and booleans, so a recorded trace can be printed, compared and saved as JSON.
 *
 * @kernel include/trace/events/iommu.h TRACE_EVENT
 */
export interface TraceEventMap {
  /** A device's DMA request and what became of it. */
  dma: { device: string; pasid: number; iova: number; len: number; write: boolean; status: string };
  /** A translation fault an IOMMU reported (`kind` and `code` are the architecture's). */
  fault: { iommu: string; rid: number; pasid: number; iova: number; kind: number; code: number };
  /** A range mapped into a domain. */
  map: { domain: number; iova: number; pa: number; size: number; prot: number };
  /** A range unmapped from a domain: `size` asked for, `unmapped` done. */
  unmap: { domain: number; iova: number; size: number; unmapped: number };
  /** A cache invalidation an IOMMU carried out. */
  flush: { iommu: string; scope: string; detail: string };
  /** A device (or one PASID of it) attached to a domain. */
  attach: { device: string; pasid: number; domain: number };
  /** A page request and the response it got. */
  iopf: { device: string; pasid: number; iova: number; grpid: number; response: number };
}

/** The name of a trace event kind. */
export type TraceKind = keyof TraceEventMap & string;

/**
 * One delivered event: its kind, a sequence number (0, 1, 2, … per `Trace`), the logical time it
 * was emitted at (0 without a clock) and its data. For a union of kinds, narrowing on `kind`
 * narrows `data`.
 */
export type TraceEvent<K extends TraceKind = TraceKind> = {
  [P in K]: {
    readonly kind: P;
    readonly seq: number;
    readonly time: number;
    readonly data: Readonly<TraceEventMap[P]>;
  };
}[K];

/** Receives every event emitted while it is subscribed. */
export type TraceListener = (event: TraceEvent) => void;

/**
 * A typed event bus that costs nothing while nobody listens. Emitters guard the call, so the data
 * object is not even built when `active` is false:
 *
 * ```ts
 * if (trace.active) trace.emit("map", { domain: d.id, iova, pa, size, prot });
 * ```
 *
 * Listeners run synchronously, in subscription order, and all receive the same (read-only) event
 * object. A listener subscribed or unsubscribed during an emit takes effect from the next emit.
 *
 * @kernel include/linux/tracepoint.h DECLARE_TRACE
 */
export class Trace {
  /** True iff at least one listener is subscribed. */
  active = false;
  private listeners: readonly TraceListener[] = [];
  private nextSeq = 0;
  private readonly clock: LogicalClock | undefined;

  /** Events are stamped with `clock.now`; without a clock, their time is 0. */
  constructor(clock?: LogicalClock) {
    this.clock = clock;
  }

  /** Number of events delivered so far (the next event's `seq`). */
  get emitted(): number {
    return this.nextSeq;
  }

  /** Add a listener; returns the function that removes it again (calling it twice is harmless). */
  subscribe(listener: TraceListener): () => void {
    // Copy on write: an emit in progress keeps iterating the array it started with.
    this.listeners = [...this.listeners, listener];
    this.active = true;
    let subscribed = true;
    return () => {
      if (!subscribed) return;
      subscribed = false;
      const i = this.listeners.indexOf(listener);
      this.listeners = [...this.listeners.slice(0, i), ...this.listeners.slice(i + 1)];
      this.active = this.listeners.length > 0;
    };
  }

  /**
   * Stamp and deliver one event. Does nothing (and numbers nothing) while no one listens; guard the
   * call with `if (trace.active)` so the data is not built either.
   */
  emit<K extends TraceKind>(kind: K, data: TraceEventMap[K]): void {
    const listeners = this.listeners;
    if (listeners.length === 0) return;
    const event = {
      kind,
      seq: this.nextSeq++,
      time: this.clock === undefined ? 0 : this.clock.now,
      data,
    } as TraceEvent;
    for (let i = 0; i < listeners.length; i++) listeners[i](event);
  }
}

/** Options of a `TraceRecorder`. */
export interface TraceRecorderOptions {
  /** Record only these kinds (default: all). */
  kinds?: readonly TraceKind[];
}

/**
 * Collects the events of a `Trace` into an array, from construction until `stop()`: what tests
 * assert on and what the CLI prints or saves.
 */
export class TraceRecorder {
  /** The events recorded so far, in emission order. */
  readonly events: TraceEvent[] = [];
  private readonly unsubscribe: () => void;

  constructor(trace: Trace, options: TraceRecorderOptions = {}) {
    const kinds = options.kinds === undefined ? undefined : new Set<string>(options.kinds);
    this.unsubscribe = trace.subscribe((event) => {
      if (kinds === undefined || kinds.has(event.kind)) this.events.push(event);
    });
  }

  /** Stop recording (the events stay). */
  stop(): void {
    this.unsubscribe();
  }

  /** Forget the events recorded so far. */
  clear(): void {
    this.events.length = 0;
  }

  /** The recorded events of one kind, with their data typed. */
  ofKind<K extends TraceKind>(kind: K): TraceEvent<K>[] {
    return this.events.filter((e) => e.kind === kind) as TraceEvent<K>[];
  }
}
