/**
 * failmon's HTML mode (`-m h`, and CGI): one static, self-contained HTML page of a snapshot, with
 * the same look as the live page. Every piece of text from the network is escaped.
 *
 * @module
 */
import type { FailshSnapshot } from "../../lib/types.ts";
import { escapeHtml, MONITOR_CSS } from "../../shell/web/page.ts";
import * as format from "./format.ts";

function state(s: string, stale = false): string {
  const known = s === "UP" || s === "RECOVER" || s === "FAIL" ? s : "FAIL";
  return `<span class="state ${known}${stale ? " stale" : ""}" data-state="${escapeHtml(s)}">${
    escapeHtml(s)
  }</span>`;
}

function table(headers: string[], rows: string[][], cls: string): string {
  const head = headers.map((h) => `<th>${escapeHtml(h)}</th>`).join("");
  const body = rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("\n");
  return `<table class="${cls}"><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

/** Options of {@linkcode renderHtml}. */
export interface RenderHtmlOptions {
  /** Page title (default `failmon: HOST`). */
  title?: string;
  /** How many recent events to list (default 50). */
  events?: number;
}

/**
 * Renders a snapshot as a complete static HTML page.
 *
 * @param snapshot The snapshot.
 * @param options Title and number of events.
 * @returns The HTML document.
 *
 * @example
 * ```ts
 * import { renderHtml } from "./html.ts";
 * import { deepEqual } from "node:assert/strict";
 * const html = renderHtml({
 *   host: "<alpha>", startedAt: 0, now: 0, hosts: [], services: [], addresses: [], events: [],
 * });
 * deepEqual(html.includes("&lt;alpha&gt;"), true);
 * ```
 */
export function renderHtml(snapshot: FailshSnapshot, options: RenderHtmlOptions = {}): string {
  const e = escapeHtml;
  const now = snapshot.now;
  const title = options.title ?? `failmon: ${snapshot.host}`;
  const parts: string[] = [];
  parts.push(`<h3>Hosts</h3>`);
  parts.push(table(
    [
      "Host",
      "Reachable",
      "Misses",
      "Last connect",
      "Last call",
      "Latency",
      "Kernel",
      "Services",
      "Error",
    ],
    snapshot.hosts.map((h) => [
      e(h.name + (h.self ? " (self)" : "")),
      h.reachable ? `<span class="yes">yes</span>` : `<span class="no">NO</span>`,
      e(h.misses),
      e(format.fmtWhen(h.lastConnect, now)),
      e(format.fmtWhen(h.lastCall, now)),
      e(format.fmtLatency(h.latencyMs)),
      h.liveness?.state === "silent"
        ? `<span class="no">${e(format.fmtLiveness(h.liveness))}</span>`
        : e(format.fmtLiveness(h.liveness)),
      e(h.services.length),
      e(h.lastError ?? ""),
    ]),
    "hosts",
  ));
  parts.push(`<h3>Services on ${e(snapshot.host)}</h3>`);
  const arbitrated = snapshot.services.some((s) => s.arbiter !== undefined);
  parts.push(
    snapshot.services.length === 0 ? `<p class="empty">No service declared.</p>` : table(
      [
        "Service",
        "State",
        "Role",
        "Masters",
        "Slaves",
        "Interval",
        "Last change",
        "Decision",
        "Handler",
        ...(arbitrated ? ["Arbiter"] : []),
      ],
      snapshot.services.map((s) => [
        e(s.name),
        state(s.state),
        e(s.role),
        e(s.masters.join(", ") || "-"),
        e(s.slaves.join(", ") || "-"),
        e(format.fmtDuration(s.intervalMs)),
        e(format.fmtWhen(s.lastChange, now)),
        e(format.fmtDecision(s.lastDecision)),
        e(format.fmtHandler(s.lastHandler)),
        ...(arbitrated ? [e(format.fmtArbiter(s.arbiter))] : []),
      ]),
      "services",
    ),
  );
  const names = format.serviceNames(snapshot);
  if (names.length > 0 && snapshot.hosts.length > 0) {
    parts.push(`<h3>States by host</h3>`);
    parts.push(table(
      ["Service", ...snapshot.hosts.map((h) => h.name)],
      names.map((n) => [
        e(n),
        ...snapshot.hosts.map((h) => {
          const r = h.services.find((x) => x.name === n);
          return r ? state(r.state, !h.reachable) : `<span class="muted">-</span>`;
        }),
      ]),
      "matrix",
    ));
  }
  parts.push(`<h3>Addresses held</h3>`);
  parts.push(
    snapshot.addresses.length === 0 ? `<p class="empty">No address held.</p>` : table(
      ["Address", "Device", "Service", "Since"],
      snapshot.addresses.map((a) => [
        e(a.address),
        e(a.device),
        e(a.service ?? "-"),
        e(format.fmtWhen(a.since, now)),
      ]),
      "addresses",
    ),
  );
  const events = snapshot.events.slice(-(options.events ?? 50)).reverse();
  parts.push(`<h3>Recent events (${events.length} of ${snapshot.events.length})</h3>`);
  parts.push(
    events.length === 0 ? `<p class="empty">No event yet.</p>` : table(
      ["When", "Kind", "Host", "Service", "Message"],
      events.map((ev) => [
        e(format.fmtWhen(ev.at, now)),
        e(ev.kind),
        e(ev.host ?? ""),
        e(ev.service ?? ""),
        e(ev.message),
      ]),
      "events",
    ),
  );
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>${e(title)}</title>
<style>${MONITOR_CSS}</style>
</head>
<body>
<header class="top"><h1>${e(title)}</h1><span class="meta">snapshot ${
    e(format.fmtDateTime(now))
  }, up ${e(format.fmtDuration(now - snapshot.startedAt))}</span></header>
<main>
<section class="source">
${parts.join("\n")}
</section>
</main>
</body>
</html>
`;
}

/**
 * A static HTML page telling that the monitor could not be read (for CGI use).
 *
 * @param message The error.
 * @returns The HTML document.
 *
 * @example
 * ```ts
 * import { renderHtmlError } from "./html.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(renderHtmlError("connection refused").includes("connection refused"), true);
 * ```
 */
export function renderHtmlError(message: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>failmon: error</title>
<style>${MONITOR_CSS}</style></head>
<body><header class="top"><h1>failmon</h1></header><main>
<div class="banner lost" role="alert">${escapeHtml(message)}</div></main></body></html>
`;
}
