/**
 * The scheduler's counters and histograms, as failsh's `/metrics` prints them
 * (`shell/monitor.ts`): state transitions, decisions, poll latency and failures per host, handler
 * durations, timeouts and errors, addresses taken over and released.
 *
 * @module
 */

/** A fixed-bucket histogram. */
export class Histogram {
  /** Upper bounds of the buckets (ms). */
  readonly bounds: readonly number[];
  /** Count per bucket (cumulative counts are computed when printing). */
  readonly counts: number[];
  /** Sum of observations. */
  sum = 0;
  /** Number of observations. */
  count = 0;

  /**
   * Creates an empty histogram with the given bucket bounds.
   *
   * @param bounds Upper bounds of the buckets, ascending.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Histogram } from "./stats.ts";
   * const h = new Histogram([10, 100]);
   * h.observe(5);
   * h.observe(50);
   * h.observe(500);
   * assert.deepEqual([h.counts, h.count, h.sum], [[1, 1], 3, 555]);
   * ```
   */
  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = bounds.map(() => 0);
  }

  /**
   * Records one observation (one above every bound counts only in `count` and `sum`).
   *
   * @param value The observed value.
   */
  observe(value: number): void {
    this.sum += value;
    this.count++;
    const i = this.bounds.findIndex((b) => value <= b);
    if (i >= 0) this.counts[i]!++;
  }
}

/** Bucket bounds of the poll latency histogram, in ms. */
export const POLL_BUCKETS: readonly number[] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000];
/** Bucket bounds of the handler duration histogram, in ms. */
export const HANDLER_BUCKETS: readonly number[] = [
  10,
  50,
  100,
  250,
  500,
  1000,
  2500,
  5000,
  10000,
  30000,
];

/** Counters and histograms for `/metrics`. */
export interface SchedulerStats {
  /** Local state transitions by `service/state`. */
  transitions: Map<string, number>;
  /** Poll latency observations (ms) by host, with bucket counts. */
  pollLatency: Map<string, Histogram>;
  /** Poll failures by host. */
  pollFailures: Map<string, number>;
  /** Handler durations by `service/kind`. */
  handlerDurations: Map<string, Histogram>;
  /** Handler timeouts by `service/kind`. */
  handlerTimeouts: Map<string, number>;
  /** Handler errors (thrown) by `service/kind`. */
  handlerErrors: Map<string, number>;
  /** Addresses taken over (seen appearing in the held list). */
  takeovers: number;
  /** Addresses released (seen disappearing from the held list). */
  releases: number;
  /** Decisions by action. */
  decisions: Map<string, number>;
  /** Arbiter keys lost while held (the service stopped), by service. */
  arbiterLosses: Map<string, number>;
  /** Arbiter renewals (keepalive + confirmation) that succeeded: send to confirmation, ms. */
  arbiterRenewLatency: Histogram;
  /** Arbiter renewals that failed (etcd unreachable, refused). */
  arbiterRenewFailures: number;
}

/**
 * Empty counters.
 *
 * @returns Counters at zero and empty histogram maps.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { schedulerStats } from "./stats.ts";
 * assert.equal(schedulerStats().takeovers, 0);
 * ```
 */
export function schedulerStats(): SchedulerStats {
  return {
    transitions: new Map(),
    pollLatency: new Map(),
    pollFailures: new Map(),
    handlerDurations: new Map(),
    handlerTimeouts: new Map(),
    handlerErrors: new Map(),
    takeovers: 0,
    releases: 0,
    decisions: new Map(),
    arbiterLosses: new Map(),
    arbiterRenewLatency: new Histogram(POLL_BUCKETS),
    arbiterRenewFailures: 0,
  };
}

/**
 * Adds one to a counter.
 *
 * @param counters The counters.
 * @param key The counter's key.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { increment } from "./stats.ts";
 * const m = new Map<string, number>();
 * increment(m, "web/UP");
 * increment(m, "web/UP");
 * assert.equal(m.get("web/UP"), 2);
 * ```
 */
export function increment(counters: Map<string, number>, key: string): void {
  counters.set(key, (counters.get(key) ?? 0) + 1);
}

/** Where {@linkcode observe} records: the histogram's key and the bounds of a new one. */
export interface ObserveOptions {
  /** The histogram's key (a host, or `service/kind`). */
  key: string;
  /** The bucket bounds if the histogram does not exist yet. */
  bounds: readonly number[];
}

/**
 * Records one observation in a histogram of a map, creating the histogram at the first.
 *
 * @param histograms The histograms by key.
 * @param value The observation.
 * @param options The key, and the bounds of a new histogram.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type Histogram, observe, POLL_BUCKETS } from "./stats.ts";
 * const m = new Map<string, Histogram>();
 * observe(m, 3, { key: "alpha", bounds: POLL_BUCKETS });
 * assert.equal(m.get("alpha")?.count, 1);
 * ```
 */
export function observe(
  histograms: Map<string, Histogram>,
  value: number,
  options: ObserveOptions,
): void {
  let h = histograms.get(options.key);
  if (!h) histograms.set(options.key, h = new Histogram(options.bounds));
  h.observe(value);
}
