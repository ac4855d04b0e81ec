/**
 * Text formatting shared by failmon's views: times, ages, durations, decisions, handler runs and
 * plain column tables. Ages are measured against the snapshot's own clock (`snapshot.now`), so a
 * view is a pure function of the snapshot and never needs a timer to stay correct.
 *
 * @module
 */
import type {
  ArbiterView,
  DecisionView,
  HandlerRunView,
  HostLiveness,
  HostView,
} from "../../lib/types.ts";

/**
 * Formats a timestamp as `HH:MM:SS` in UTC.
 *
 * @param ms Milliseconds since the epoch, or `null`.
 * @returns The clock time, or `-` for `null`.
 *
 * @example
 * ```ts
 * import { fmtClock } from "./format.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(fmtClock(Date.UTC(2026, 0, 1, 9, 5, 7)), "09:05:07");
 * ```
 */
export function fmtClock(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return "-";
  return new Date(ms).toISOString().slice(11, 19);
}

/**
 * Formats a timestamp as `YYYY-MM-DD HH:MM:SSZ`.
 *
 * @param ms Milliseconds since the epoch.
 * @returns The UTC date and time.
 *
 * @example
 * ```ts
 * import { fmtDateTime } from "./format.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(fmtDateTime(0), "1970-01-01 00:00:00Z");
 * ```
 */
export function fmtDateTime(ms: number): string {
  if (!Number.isFinite(ms)) return "-";
  return new Date(ms).toISOString().slice(0, 19).replace("T", " ") + "Z";
}

/**
 * Formats a duration compactly: `850ms`, `4.2s`, `3m05s`, `2h07m`, `3d04h`.
 *
 * @param ms A duration in ms, or `null`.
 * @returns The text, or `-` for `null`.
 *
 * @example
 * ```ts
 * import { fmtDuration } from "./format.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual([fmtDuration(4200), fmtDuration(185_000)], ["4.2s", "3m05s"]);
 * ```
 */
export function fmtDuration(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return "-";
  const abs = Math.abs(ms);
  const sign = ms < 0 ? "-" : "";
  if (abs < 1000) return `${sign}${Math.round(abs)}ms`;
  if (abs < 60_000) return `${sign}${(abs / 1000).toFixed(1)}s`;
  const s = Math.floor(abs / 1000);
  if (s < 3600) return `${sign}${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86_400) {
    return `${sign}${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
  }
  return `${sign}${Math.floor(s / 86_400)}d${String(Math.floor(s / 3600) % 24).padStart(2, "0")}h`;
}

/**
 * Formats when something happened relative to the snapshot's clock: `09:05:07 (4.2s ago)`.
 *
 * @param ms When it happened, or `null` for never.
 * @param now The snapshot's clock.
 * @returns The text, or `never`.
 *
 * @example
 * ```ts
 * import { fmtWhen } from "./format.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(fmtWhen(1000, 5200), "00:00:01 (4.2s ago)");
 * ```
 */
export function fmtWhen(ms: number | null, now: number): string {
  if (ms === null || !Number.isFinite(ms)) return "never";
  return `${fmtClock(ms)} (${fmtDuration(Math.max(0, now - ms))} ago)`;
}

/**
 * Formats a latency in ms with a sensible precision.
 *
 * @param ms Milliseconds, or `null`.
 * @returns E.g. `0.42ms`, `12ms`, or `-`.
 *
 * @example
 * ```ts
 * import { fmtLatency } from "./format.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(fmtLatency(0.4213), "0.42ms");
 * ```
 */
export function fmtLatency(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return "-";
  if (ms < 10) return `${ms.toFixed(2)}ms`;
  return `${Math.round(ms)}ms`;
}

/**
 * Summarises a peer's host liveness (the KERNEL column): `alive 0.05ms`, `SILENT 52ms`,
 * `unknown` (never answered: polls alone judge it), `no prober` (ping is being restarted).
 *
 * @param l The host's liveness, or `undefined` when it declares none.
 * @returns One short cell, `-` without liveness.
 *
 * @example
 * ```ts
 * import { fmtLiveness } from "./format.ts";
 * import { deepEqual } from "node:assert/strict";
 * const l = {
 *   state: "silent" as const, intervalMs: 10, fall: 5, stallGraceMs: 1000, unanswered: 5,
 *   silentMs: 52, rttMs: 0.05, lastAnswerAt: 0, error: null, decisive: true,
 * };
 * deepEqual(fmtLiveness(l), "SILENT 52ms");
 * ```
 */
export function fmtLiveness(l: HostLiveness | undefined): string {
  if (l === undefined) return "-";
  if (l.error !== null) return "no prober";
  if (l.state === "alive") return `alive ${fmtLatency(l.rttMs)}`;
  if (l.state === "silent") return `SILENT ${Math.round(l.silentMs)}ms`;
  return "unknown";
}

/**
 * Summarises a decision: `start: no master is UP or RECOVER`.
 *
 * @param d The decision, or `null`.
 * @returns One line.
 *
 * @example
 * ```ts
 * import { fmtDecision } from "./format.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(fmtDecision({ at: 0, action: "wait", reason: "grace period" }), "wait: grace period");
 * ```
 */
export function fmtDecision(d: DecisionView | null): string {
  if (d === null) return "none yet";
  return `${d.action}: ${d.reason}`;
}

/**
 * Summarises this host's standing with the etcd arbiter for a service: the state, the epoch
 * while the key is ours (and the time left before the holder must let go), or who holds it.
 *
 * @param a The arbiter's view, or `undefined` without an arbiter.
 * @returns One line, `-` without an arbiter.
 *
 * @example
 * ```ts
 * import { fmtArbiter } from "./format.ts";
 * import { deepEqual } from "node:assert/strict";
 * const a = {
 *   state: "held", verdict: "grant" as const, epoch: "101", holder: null, reason: "", deadlineInMs: 4200,
 * };
 * deepEqual(fmtArbiter(a), "held, epoch 101 (4.2s left)");
 * ```
 */
export function fmtArbiter(a: ArbiterView | undefined): string {
  if (a === undefined) return "-";
  const parts = [a.state];
  if (a.epoch !== null) parts.push(`epoch ${a.epoch}`);
  else if (a.holder !== null) parts.push(`key held by ${a.holder}`);
  const left = a.deadlineInMs === null ? "" : ` (${fmtDuration(a.deadlineInMs)} left)`;
  return parts.join(", ") + left;
}

/**
 * Summarises a handler run: `start -> UP in 120ms`, `stop timed out …`, `reclaim running`.
 *
 * @param h The run, or `null`.
 * @returns One line.
 *
 * @example
 * ```ts
 * import { fmtHandler } from "./format.ts";
 * import { deepEqual } from "node:assert/strict";
 * const run = { kind: "start" as const, startedAt: 0, durationMs: 120, result: "UP" as const, error: null };
 * deepEqual(fmtHandler(run), "start -> UP in 120ms");
 * ```
 */
export function fmtHandler(h: HandlerRunView | null): string {
  if (h === null) return "none yet";
  if (h.durationMs === null) return `${h.kind} running`;
  if (h.error !== null) return `${h.kind} failed in ${fmtDuration(h.durationMs)}: ${h.error}`;
  return `${h.kind} -> ${h.result ?? "?"} in ${fmtDuration(h.durationMs)}`;
}

/**
 * The "last connect" or "last call" of a host, as the `c` key selects.
 *
 * @param host The host.
 * @param lastCall `true` for the last poll attempt, `false` for the last successful poll.
 * @returns The timestamp or `null`.
 *
 * @example
 * ```ts
 * import { hostTime } from "./format.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(hostTime({ lastCall: 5, lastConnect: 3 } as never, true), 5);
 * ```
 */
export function hostTime(host: HostView, lastCall: boolean): number | null {
  return lastCall ? host.lastCall : host.lastConnect;
}

/**
 * Removes control characters (ANSI escapes, newlines) from text that came over the network, so a
 * service detail cannot move the cursor or forge lines in a terminal.
 *
 * @param text Untrusted text.
 * @returns The text with every C0/C1 control character replaced by `?`.
 *
 * @example
 * ```ts
 * import { cleanText } from "./format.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(cleanText("a\x1b[2Jb"), "a?[2Jb");
 * ```
 */
export function cleanText(text: unknown): string {
  // deno-lint-ignore no-control-regex
  return String(text ?? "").replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
}

/**
 * Lays out rows as plain text columns (two spaces apart, the last column not padded).
 *
 * @param headers Column titles.
 * @param rows Cells (cleaned of control characters).
 * @returns One string per line, the header first.
 *
 * @example
 * ```ts
 * import { columns } from "./format.ts";
 * console.log(columns(["A", "B"], [["x", "y"]]).join("\n"));
 * ```
 */
export function columns(headers: string[], rows: string[][]): string[] {
  const clean = rows.map((r) => r.map(cleanText));
  const widths = headers.map((h, i) =>
    Math.max(h.length, ...clean.map((r) => (r[i] ?? "").length))
  );
  const line = (cells: string[]) =>
    cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)).join("  ")
      .trimEnd();
  return [line(headers), ...clean.map(line)];
}

/**
 * Every service name of a snapshot, its own and those its peers report, sorted.
 *
 * @param snapshot The snapshot.
 * @returns The names, each once.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { serviceNames } from "./format.ts";
 * const s = { services: [{ name: "web" }], hosts: [{ services: [{ name: "db" }, { name: "web" }] }] };
 * assert.deepStrictEqual(serviceNames(s), ["db", "web"]);
 * ```
 */
export function serviceNames(
  snapshot: {
    services: readonly { name: string }[];
    hosts: readonly { services: readonly { name: string }[] }[];
  },
): string[] {
  return [
    ...new Set([
      ...snapshot.services.map((s) => s.name),
      ...snapshot.hosts.flatMap((h) => h.services.map((r) => r.name)),
    ]),
  ].sort();
}
