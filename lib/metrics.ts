/**
 * The Prometheus text exposition format, as faild, hc and failsh write it: label escaping,
 * label sets, metric headers and histograms.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { metricHeader, sample } from "./metrics.ts";
 * const lines = [
 *   ...metricHeader("up", "gauge", "1 while running."),
 *   sample("up", { service: 'we"b' }, 1),
 * ];
 * assert.deepStrictEqual(lines, ["# HELP up 1 while running.", "# TYPE up gauge", 'up{service="we\\"b"} 1']);
 * ```
 *
 * @module
 */

/** The metric types the project exposes. */
export type MetricType = "counter" | "gauge" | "histogram";

/** Label names and values; values are escaped when written. */
export type Labels = Readonly<Record<string, string | number>>;

/** A histogram: upper bounds, the count of each bucket (not cumulative), sum and count. */
export interface HistogramData {
  /** Upper bounds of the buckets, ascending (the `+Inf` bucket is implicit). */
  readonly bounds: readonly number[];
  /** Observations in each bucket (same length as `bounds`; above the last bound: count only). */
  readonly counts: readonly number[];
  /** Sum of all observations. */
  readonly sum: number;
  /** Number of observations. */
  readonly count: number;
}

/**
 * Escapes a label value: backslash, double quote and newline.
 *
 * @param value The raw value.
 * @returns The value as it stands between the quotes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { escapeLabel } from "./metrics.ts";
 * assert.equal(escapeLabel('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
 * ```
 */
export function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/**
 * A label set, `{a="x",b="y"}`, or the empty string for no labels.
 *
 * @param labels Names and values, in the order written.
 * @returns The label set text.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatLabels } from "./metrics.ts";
 * assert.equal(formatLabels({ host: "alpha", le: 5 }), '{host="alpha",le="5"}');
 * assert.equal(formatLabels({}), "");
 * ```
 */
export function formatLabels(labels: Labels): string {
  const parts: string[] = [];
  for (const [name, value] of Object.entries(labels)) {
    parts.push(`${name}="${escapeLabel(String(value))}"`);
  }
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

/**
 * The `# HELP` and `# TYPE` lines of a metric.
 *
 * @param name The metric name.
 * @param type Its type.
 * @param help One line of help.
 * @returns The two lines.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { metricHeader } from "./metrics.ts";
 * assert.deepStrictEqual(metricHeader("x_total", "counter", "Xs."), ["# HELP x_total Xs.", "# TYPE x_total counter"]);
 * ```
 */
export function metricHeader(name: string, type: MetricType, help: string): [string, string] {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
}

/**
 * One sample line.
 *
 * @param name The metric name.
 * @param labels Its labels (`{}` for none).
 * @param value The value.
 * @returns `name{labels} value`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sample } from "./metrics.ts";
 * assert.equal(sample("faild_services", {}, 3), "faild_services 3");
 * ```
 */
export function sample(name: string, labels: Labels, value: number): string {
  return `${name}${formatLabels(labels)} ${value}`;
}

/**
 * The sample lines of a histogram: cumulative `_bucket` lines (`+Inf` last), `_sum`, `_count`.
 *
 * @param name The metric name (without suffix).
 * @param labels The labels of the series (without `le`).
 * @param h The histogram.
 * @returns The lines.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { histogramLines } from "./metrics.ts";
 * assert.deepStrictEqual(histogramLines("rtt_ms", { host: "a" }, { bounds: [1, 5], counts: [2, 1], sum: 9, count: 4 }), [
 *   'rtt_ms_bucket{host="a",le="1"} 2',
 *   'rtt_ms_bucket{host="a",le="5"} 3',
 *   'rtt_ms_bucket{host="a",le="+Inf"} 4',
 *   'rtt_ms_sum{host="a"} 9',
 *   'rtt_ms_count{host="a"} 4',
 * ]);
 * ```
 */
export function histogramLines(name: string, labels: Labels, h: HistogramData): string[] {
  const out: string[] = [];
  let cumulative = 0;
  h.bounds.forEach((bound, i) => {
    cumulative += h.counts[i] ?? 0;
    out.push(sample(`${name}_bucket`, { ...labels, le: bound }, cumulative));
  });
  out.push(sample(`${name}_bucket`, { ...labels, le: "+Inf" }, h.count));
  out.push(sample(`${name}_sum`, labels, h.sum));
  out.push(sample(`${name}_count`, labels, h.count));
  return out;
}
