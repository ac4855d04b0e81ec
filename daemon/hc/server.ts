/**
 * hc's status API over HTTP: `GET /v1/checks` (JSON), `GET /v1/checks/NAME`, `GET /v1/health`,
 * `GET /metrics` (Prometheus text format) and `GET /v1/events` (server-sent events). Read-only,
 * no secrets; bind it to loopback or a management network.
 *
 * @module
 */
import { type Logger, logger as defaultLogger } from "../../lib/log.ts";
import { baseUrl } from "../../lib/net.ts";
import { escapeLabel as esc, metricHeader, type MetricType } from "../../lib/metrics.ts";
import type { CheckState } from "./graph.ts";
import type { HcSnapshot, HealthChecker } from "./checker.ts";

/** Most clients of `GET /v1/events` at once. */
export const MAX_EVENT_CLIENTS = 64;

/** Seconds between SSE keep-alive comments. */
export const EVENT_HEARTBEAT_MS = 15_000;

const STATES: readonly CheckState[] = ["UP", "FAIL", "BLOCKED", "PENDING"];

/**
 * Renders a snapshot in the Prometheus text exposition format.
 *
 * @param s The snapshot.
 * @returns The metrics text.
 *
 * @example
 * ```ts
 * import { renderMetrics } from "./server.ts";
 * import { deepEqual } from "node:assert/strict";
 * const text = renderMetrics({
 *   name: "hc1", version: "0.6.0", startedAt: 0, now: 1000,
 *   summary: { UP: 0, FAIL: 0, BLOCKED: 0, PENDING: 0 }, checks: [],
 * });
 * deepEqual(text.includes("hc_checks"), true);
 * ```
 */
export function renderMetrics(s: HcSnapshot): string {
  const out: string[] = [];
  const metric = (name: string, type: string, help: string, rows: string[]): void => {
    out.push(...metricHeader(name, type as MetricType, help), ...rows);
  };
  const inst = `hc="${esc(s.name)}"`;
  metric("hc_up", "gauge", "1 while hc answers.", [`hc_up{${inst}} 1`]);
  metric("hc_start_time_seconds", "gauge", "When hc started.", [
    `hc_start_time_seconds{${inst}} ${s.startedAt / 1000}`,
  ]);
  metric(
    "hc_checks",
    "gauge",
    "Number of checks by reported state.",
    STATES.map((st) => `hc_checks{${inst},state="${st}"} ${s.summary[st]}`),
  );
  const rows = (f: (c: HcSnapshot["checks"][number], l: string) => string | null): string[] =>
    s.checks.map((c) => f(c, `${inst},check="${esc(c.name)}",kind="${c.kind}"`)).filter((
      r,
    ): r is string => r !== null);
  metric(
    "hc_check_state",
    "gauge",
    "1 for the check's reported state, 0 for the others.",
    s.checks.flatMap((c) =>
      STATES.map((st) =>
        `hc_check_state{${inst},check="${esc(c.name)}",state="${st}"} ${c.state === st ? 1 : 0}`
      )
    ),
  );
  metric(
    "hc_check_up",
    "gauge",
    "1 when the check is UP.",
    rows((c, l) => `hc_check_up{${l}} ${c.state === "UP" ? 1 : 0}`),
  );
  metric(
    "hc_check_latency_seconds",
    "gauge",
    "Duration of the last probe.",
    rows((c, l) =>
      c.latencyMs === null
        ? null
        : `hc_check_latency_seconds{${l}} ${(c.latencyMs / 1000).toFixed(6)}`
    ),
  );
  metric(
    "hc_check_runs_total",
    "counter",
    "Probes run.",
    rows((c, l) => `hc_check_runs_total{${l}} ${c.runs}`),
  );
  metric(
    "hc_check_failed_runs_total",
    "counter",
    "Probes that failed.",
    rows((c, l) => `hc_check_failed_runs_total{${l}} ${c.failedRuns}`),
  );
  metric(
    "hc_check_consecutive_failures",
    "gauge",
    "Failures in a row.",
    rows((c, l) => `hc_check_consecutive_failures{${l}} ${c.failures}`),
  );
  metric(
    "hc_check_changes_total",
    "counter",
    "Reported-state changes.",
    rows((c, l) => `hc_check_changes_total{${l}} ${c.changes}`),
  );
  metric(
    "hc_check_last_change_timestamp_seconds",
    "gauge",
    "When the reported state last changed.",
    rows((c, l) =>
      c.lastChange === null
        ? null
        : `hc_check_last_change_timestamp_seconds{${l}} ${c.lastChange / 1000}`
    ),
  );
  metric(
    "hc_check_actions_failed_total",
    "counter",
    "Actions that failed.",
    rows((c, l) => `hc_check_actions_failed_total{${l}} ${c.actionsFailed}`),
  );
  return out.join("\n") + "\n";
}

/** A running status server. */
export interface StatusServer {
  /** The address it listens on. */
  addr: Deno.NetAddr;
  /** Its base URL, e.g. `http://127.0.0.1:7200`. */
  url: string;
  /** Serves another engine from now on (reload); open event streams are closed (clients reconnect). */
  replace(hc: HealthChecker): void;
  /** Closes event streams and stops the server. */
  shutdown(): Promise<void>;
}

/** Options of {@linkcode serveStatus}. */
export interface ServeStatusOptions {
  /** Address to bind (default `127.0.0.1`). */
  hostname?: string;
  /** Port (default 7200; 0 picks a free one). */
  port?: number;
  /** Logger. */
  logger?: Logger;
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: {
      "content-type": "application/json; charset=utf-8",
      "cache-control": "no-store",
      "access-control-allow-origin": "*",
    },
  });
}

/**
 * Serves an engine's status over HTTP.
 *
 * @param engine The engine.
 * @param options Address, port, logger.
 * @returns The running server.
 *
 * @example
 * ```ts ignore
 * import { serveStatus } from "./server.ts";
 * const server = serveStatus(hc, { hostname: "127.0.0.1", port: 0 });
 * console.log(server.url);
 * await server.shutdown();
 * ```
 */
export function serveStatus(engine: HealthChecker, options: ServeStatusOptions = {}): StatusServer {
  let hc = engine;
  const log = options.logger ?? defaultLogger;
  const streams = new Set<() => void>();
  const encoder = new TextEncoder();
  const events = (): Response => {
    if (streams.size >= MAX_EVENT_CLIENTS) {
      return json({ error: `Too many event clients: at most ${MAX_EVENT_CLIENTS}` }, 503);
    }
    let close = (): void => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        const send = (event: string, data: unknown): void => {
          // Drop a client that does not keep up rather than buffer without bound.
          if ((controller.desiredSize ?? 0) < -256 * 1024) return close();
          try {
            controller.enqueue(
              encoder.encode(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`),
            );
          } catch {
            close();
          }
        };
        const unsubscribe = hc.subscribe((e) => send("change", e));
        const beat = setInterval(() => {
          try {
            controller.enqueue(encoder.encode(": keep-alive\n\n"));
          } catch {
            close();
          }
        }, EVENT_HEARTBEAT_MS);
        close = () => {
          unsubscribe();
          clearInterval(beat);
          streams.delete(close);
          try {
            controller.close();
          } catch { /* already closed */ }
        };
        streams.add(close);
        send("snapshot", hc.snapshot());
      },
      cancel() {
        close();
      },
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream",
        "cache-control": "no-store",
        "access-control-allow-origin": "*",
      },
    });
  };
  const handler = (req: Request): Response => {
    const url = new URL(req.url);
    if (req.method !== "GET" && req.method !== "HEAD") {
      return json({ error: `Method ${req.method} not allowed: the status API is read-only` }, 405);
    }
    const path = url.pathname.replace(/\/+$/, "") || "/";
    if (path === "/v1/checks" || path === "/") return json(hc.snapshot());
    if (path.startsWith("/v1/checks/")) {
      const name = decodeURIComponent(path.slice("/v1/checks/".length));
      const c = hc.check(name);
      return c ? json(c) : json({ error: `No check named ${name}` }, 404);
    }
    if (path === "/v1/health") {
      const s = hc.snapshot();
      return json({
        ok: true,
        name: s.name,
        version: s.version,
        uptimeMs: s.now - s.startedAt,
        checks: s.checks.length,
      });
    }
    if (path === "/metrics") {
      return new Response(renderMetrics(hc.snapshot()), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    }
    if (path === "/v1/events") return events();
    return json({
      error:
        `No such path ${path}: use /v1/checks, /v1/checks/NAME, /v1/health, /metrics, /v1/events`,
    }, 404);
  };
  const server = Deno.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 7200,
    onListen: () => {},
    onError: (e) => {
      log.error("hc", "status request failed", { error: String(e) });
      return json({ error: "Internal error" }, 500);
    },
  }, handler);
  const addr = server.addr as Deno.NetAddr;
  return {
    addr,
    url: baseUrl(addr),
    replace(next) {
      hc = next;
      for (const close of [...streams]) close();
    },
    async shutdown() {
      for (const close of [...streams]) close();
      await server.shutdown();
    },
  };
}
