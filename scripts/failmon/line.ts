/**
 * failmon's plain-text views: the dump that line mode (`-m l`) prints each time Return is pressed
 * and one-shot mode (`-m 1`) prints once, and the one-line description of the connection state.
 *
 * @module
 */
import type { FailshSnapshot } from "../../lib/types.ts";
import {
  cleanText,
  columns,
  fmtArbiter,
  fmtDateTime,
  fmtDecision,
  fmtDuration,
  fmtHandler,
  fmtLatency,
  fmtLiveness,
  fmtWhen,
  serviceNames,
} from "./format.ts";
import type { StreamStatus } from "./stream.ts";

/** Options of {@linkcode renderText}. */
export interface RenderTextOptions {
  /** How many recent events to list (default 20). */
  events?: number;
}

/**
 * Describes a connection state in one line, e.g. `connection lost: connection refused; retrying
 * in 2.0s (attempt 3)`.
 *
 * @param status The state.
 * @returns The sentence.
 *
 * @example
 * ```ts
 * import { fmtStatus } from "./line.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(fmtStatus({ kind: "connected", since: 0 }), "connected");
 * ```
 */
export function fmtStatus(status: StreamStatus): string {
  switch (status.kind) {
    case "connecting":
      return status.attempt > 1 ? `connecting (attempt ${status.attempt})` : "connecting";
    case "connected":
      return "connected";
    case "lost":
      return Number.isFinite(status.retryInMs)
        ? `connection lost: ${cleanText(status.error)}; retrying in ${
          fmtDuration(status.retryInMs)
        } (attempt ${status.attempt})`
        : `connection lost: ${cleanText(status.error)}; giving up after ${status.attempt} attempts`;
    case "closed":
      return "closed";
  }
}

/**
 * Renders a snapshot as a plain-text report: hosts, local services with their last decision and
 * handler run, the state of every service on every host, addresses held and recent events.
 *
 * @param snapshot The snapshot.
 * @param options How many events to show.
 * @returns The text, ending with a newline.
 *
 * @example
 * ```ts
 * import { renderText } from "./line.ts";
 * import { deepEqual } from "node:assert/strict";
 * const text = renderText({
 *   host: "alpha", startedAt: 0, now: 1000, hosts: [], services: [], addresses: [], events: [],
 * });
 * deepEqual(text.startsWith("failsh alpha"), true);
 * ```
 */
export function renderText(snapshot: FailshSnapshot, options: RenderTextOptions = {}): string {
  const now = snapshot.now;
  const out: string[] = [];
  out.push(
    `failsh ${cleanText(snapshot.host)}  at ${fmtDateTime(now)}  up ${
      fmtDuration(now - snapshot.startedAt)
    }`,
  );
  out.push("");
  out.push("HOSTS");
  out.push(
    ...columns(
      [
        "NAME",
        "REACHABLE",
        "MISSES",
        "LAST CONNECT",
        "LAST CALL",
        "LATENCY",
        "KERNEL",
        "SERVICES",
        "ERROR",
      ],
      snapshot.hosts.map((h) => [
        h.name + (h.self ? " (self)" : ""),
        h.reachable ? "yes" : "NO",
        String(h.misses),
        fmtWhen(h.lastConnect, now),
        fmtWhen(h.lastCall, now),
        fmtLatency(h.latencyMs),
        fmtLiveness(h.liveness),
        String(h.services.length),
        h.lastError ?? "",
      ]),
    ).map((l) => "  " + l),
  );
  out.push("");
  out.push("SERVICES");
  if (snapshot.services.length === 0) out.push("  (none)");
  else {
    out.push(
      ...columns(
        ["NAME", "STATE", "ROLE", "MASTERS", "SLAVES", "INTERVAL", "LAST CHANGE"],
        snapshot.services.map((s) => [
          s.name,
          s.state,
          s.role,
          s.masters.join(",") || "-",
          s.slaves.join(",") || "-",
          fmtDuration(s.intervalMs),
          fmtWhen(s.lastChange, now),
        ]),
      ).map((l) => "  " + l),
    );
    for (const s of snapshot.services) {
      out.push(`  ${cleanText(s.name)}:`);
      out.push(
        `    decision: ${cleanText(fmtDecision(s.lastDecision))}${
          s.lastDecision ? ` (${fmtWhen(s.lastDecision.at, now)})` : ""
        }`,
      );
      out.push(
        `    handler:  ${cleanText(fmtHandler(s.lastHandler))}${
          s.lastHandler ? ` (${fmtWhen(s.lastHandler.startedAt, now)})` : ""
        }`,
      );
      if (s.arbiter) out.push(`    arbiter:  ${cleanText(fmtArbiter(s.arbiter))}`);
    }
  }
  const names = serviceNames(snapshot);
  if (names.length > 0 && snapshot.hosts.length > 0) {
    out.push("");
    out.push("STATES BY HOST");
    out.push(
      ...columns(
        ["SERVICE", ...snapshot.hosts.map((h) => cleanText(h.name))],
        names.map((n) => [
          n,
          ...snapshot.hosts.map((h) => {
            const r = h.services.find((x) => x.name === n);
            if (!r) return "-";
            return h.reachable ? r.state : `${r.state}?`;
          }),
        ]),
      ).map((l) => "  " + l),
    );
    if (snapshot.hosts.some((h) => !h.reachable)) {
      out.push("  (? = last state reported by a host that is unreachable now: counts as FAIL)");
    }
  }
  out.push("");
  out.push("ADDRESSES");
  if (snapshot.addresses.length === 0) out.push("  (none held)");
  else {
    out.push(
      ...columns(
        ["ADDRESS", "DEVICE", "SERVICE", "SINCE"],
        snapshot.addresses.map((a) => [
          a.address,
          a.device,
          a.service ?? "-",
          fmtWhen(a.since, now),
        ]),
      ).map((l) => "  " + l),
    );
  }
  const limit = options.events ?? 20;
  const events = snapshot.events.slice(-limit);
  out.push("");
  out.push(`EVENTS (last ${events.length} of ${snapshot.events.length})`);
  if (events.length === 0) out.push("  (none)");
  for (const e of events) {
    const who = [e.host, e.service].filter((x) => x !== null).join("/");
    out.push(
      `  ${fmtWhen(e.at, now)}  ${e.kind.padEnd(8)}  ${cleanText(who ? who + ": " : "")}${
        cleanText(e.message)
      }`,
    );
  }
  return out.join("\n") + "\n";
}
