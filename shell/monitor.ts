/**
 * failsh's two HTTP ports.
 *
 * The **monitor port** (policy `monitor`, default `127.0.0.1:1848`) is read-only and unsigned, like
 * the original's: `GET /v1/snapshot` ({@linkcode FailshSnapshot} JSON), `GET /v1/stream`
 * (server-sent events: a `snapshot` event at connect and after every change, at most about ten a
 * second; a `: keepalive` comment every 15 s when nothing changed), `GET /metrics` (Prometheus
 * text) and `GET /` (the live web page). Bind it to loopback or a management network.
 *
 * The **debug port** (policy `debug`) serves `GET` and `PUT /v1/debug/levels` exactly as faild
 * does, signed with `lib/sign.ts` and the policy's `debugKey`, so `faildebug` works against faild
 * and failsh alike.
 *
 * @module
 */
import type { FailshSnapshot } from "../lib/types.ts";
import { LOG_LEVELS } from "../lib/types.ts";
import type { Logger } from "../lib/log.ts";
import { baseUrl, parseHostPort as parseAddress } from "../lib/net.ts";
import {
  escapeLabel as esc,
  histogramLines,
  metricHeader,
  type MetricType,
} from "../lib/metrics.ts";
import {
  bodyDigest,
  keyId,
  NonceCache,
  parseAuthorization,
  RESPONSE_SIGNATURE_HEADER,
  signResponse,
  verifyRequest,
} from "../lib/sign.ts";
import { monitorPage } from "./web/page.ts";
import type { SchedulerStats } from "./scheduler/stats.ts";
import type { SandboxCounters } from "./sandbox/sandbox.ts";

/** Where the monitor port reads its data (the scheduler, or a test's fake). */
export interface MonitorSource {
  /** The current snapshot. */
  snapshot(): FailshSnapshot;
  /** Registers a change listener; returns its remover. */
  onChange(listener: () => void): () => void;
}

/** Options of {@linkcode startMonitor}. */
export interface MonitorOptions {
  /** `HOST:PORT` to listen on (port 0 picks a free port). */
  listen: string;
  /** The data. */
  source: MonitorSource;
  /** The Prometheus text of `/metrics`. */
  metrics: () => string;
  /** Shortest time between two `snapshot` events of one stream, ms (default 100). */
  coalesceMs?: number;
  /** Keep-alive comment period of idle streams, ms (default 15000). */
  keepaliveMs?: number;
  /** Most concurrent streams (default 64; more get 503). */
  maxStreams?: number;
  /** Logger for errors. */
  logger?: Logger;
}

/** A running HTTP port. */
export interface PortHandle {
  /** The bound address. */
  addr: Deno.NetAddr;
  /** Its base URL, e.g. `http://127.0.0.1:1848`. */
  url: string;
  /** Stops serving and ends every stream. */
  close(): Promise<void>;
}

/**
 * Parses a monitor or debug port address, `HOST:PORT` (IPv6 as `[::1]:PORT`).
 *
 * @param text The address.
 * @returns Host and port.
 * @throws {TypeError} When malformed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseHostPort } from "./monitor.ts";
 * assert.deepStrictEqual(parseHostPort("127.0.0.1:1848"), { hostname: "127.0.0.1", port: 1848 });
 * ```
 */
export function parseHostPort(text: string): { hostname: string; port: number } {
  return parseAddress(text, { allowPortZero: true });
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store", ...headers },
  });
}

async function listen(
  text: string,
  handler: (req: Request) => Response | Promise<Response>,
): Promise<{ server: Deno.HttpServer<Deno.NetAddr>; addr: Deno.NetAddr }> {
  const { hostname, port } = parseHostPort(text);
  const { promise, resolve } = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve(
    { hostname, port, onListen: (a) => resolve(a as Deno.NetAddr) },
    handler,
  );
  return { server, addr: await promise };
}

/**
 * Starts the monitor port.
 *
 * @param options Listen address, data source and metrics.
 * @returns The running port.
 *
 * @example
 * ```ts ignore
 * import { startMonitor } from "./monitor.ts";
 * const port = await startMonitor({ listen: "127.0.0.1:0", source: scheduler, metrics: () => "" });
 * console.log(port.url);
 * await port.close();
 * ```
 */
export async function startMonitor(options: MonitorOptions): Promise<PortHandle> {
  const coalesceMs = options.coalesceMs ?? 100;
  const keepaliveMs = options.keepaliveMs ?? 15_000;
  const maxStreams = options.maxStreams ?? 64;
  const streams = new Set<() => void>();
  const encoder = new TextEncoder();
  const page = monitorPage({ title: "failsh" });

  function stream(): Response {
    if (streams.size >= maxStreams) {
      return json(503, { error: `Too many streams: at most ${maxStreams}` });
    }
    let stop = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        let lastSent = 0;
        let pending: ReturnType<typeof setTimeout> | undefined;
        let keepalive: ReturnType<typeof setTimeout> | undefined;
        let closed = false;
        const write = (text: string) => {
          if (closed) return;
          // A client that does not read is dropped rather than buffered without bound.
          if ((controller.desiredSize ?? 0) < -(4 << 20)) {
            stop();
            return;
          }
          try {
            controller.enqueue(encoder.encode(text));
          } catch {
            stop();
          }
        };
        const armKeepalive = () => {
          clearTimeout(keepalive);
          keepalive = setTimeout(() => {
            write(": keepalive\n\n");
            armKeepalive();
          }, keepaliveMs);
        };
        const send = () => {
          pending = undefined;
          lastSent = Date.now();
          write(`event: snapshot\ndata: ${JSON.stringify(options.source.snapshot())}\n\n`);
          armKeepalive();
        };
        const onChange = () => {
          if (pending !== undefined || closed) return;
          const wait = Math.max(0, lastSent + coalesceMs - Date.now());
          pending = setTimeout(send, wait);
        };
        const off = options.source.onChange(onChange);
        stop = () => {
          if (closed) return;
          closed = true;
          off();
          clearTimeout(pending);
          clearTimeout(keepalive);
          streams.delete(stop);
          try {
            controller.close();
          } catch {
            // already closed
          }
        };
        streams.add(stop);
        write("retry: 2000\n\n");
        send();
      },
      cancel() {
        stop();
      },
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream",
        "cache-control": "no-store",
        "x-accel-buffering": "no",
      },
    });
  }

  const { server, addr } = await listen(options.listen, (req) => {
    const url = new URL(req.url);
    if (req.method !== "GET" && req.method !== "HEAD") {
      return json(
        405,
        { error: `Method ${req.method} not allowed: the monitor port is read-only` },
        {
          allow: "GET, HEAD",
        },
      );
    }
    try {
      switch (url.pathname) {
        case "/v1/snapshot":
          return json(200, options.source.snapshot());
        case "/v1/stream":
          return stream();
        case "/metrics":
          return new Response(options.metrics(), {
            headers: { "content-type": "text/plain; version=0.0.4", "cache-control": "no-store" },
          });
        case "/":
        case "/index.html":
          return new Response(page, {
            headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
          });
        default:
          return json(404, {
            error: `Unknown path: ${url.pathname} (try /v1/snapshot, /v1/stream, /metrics or /)`,
          });
      }
    } catch (error) {
      options.logger?.error("monitor", `monitor request failed: ${(error as Error).message}`);
      return json(500, { error: `Internal error: ${(error as Error).message}` });
    }
  });
  return {
    addr,
    url: baseUrl(addr),
    async close() {
      for (const stop of [...streams]) stop();
      await server.shutdown();
    },
  };
}

/** Options of {@linkcode startDebugPort}. */
export interface DebugPortOptions {
  /** `HOST:PORT` to listen on. */
  listen: string;
  /** The community requests must be signed with, or `null` to refuse every request. */
  key: string | null;
  /** The logger whose levels are read and changed. */
  logger: Logger;
  /** Accepted clock difference, ms (default 30000). */
  maxSkewMs?: number;
}

const FACILITY_PATTERN = /^(\*|[a-z][a-z0-9_.-]{0,31})$/;
const MAX_DEBUG_BODY = 4096;

/**
 * Starts the debug port: `GET`/`PUT /v1/debug/levels`, every request signed with the debug key
 * (HMAC of `lib/sign.ts`, fresh timestamp, unused nonce) and every answer signed back.
 *
 * @param options Listen address, key and logger.
 * @returns The running port.
 *
 * @example
 * ```ts ignore
 * import { startDebugPort } from "./monitor.ts";
 * import { logger } from "../lib/log.ts";
 * const port = await startDebugPort({ listen: "127.0.0.1:0", key: "s3cret", logger });
 * await port.close();
 * ```
 */
export async function startDebugPort(options: DebugPortOptions): Promise<PortHandle> {
  const nonces = new NonceCache({ maxSkewMs: options.maxSkewMs ?? 30_000, maxEntries: 100_000 });
  const expectedId = options.key === null ? null : keyId(options.key);

  async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname + url.search;
    let nonce: string | null = null;
    const answer = (status: number, body: unknown): Response => {
      const text = JSON.stringify(body) + "\n";
      const headers: Record<string, string> = {
        "content-type": "application/json",
        "cache-control": "no-store",
      };
      if (nonce !== null && options.key !== null) {
        headers[RESPONSE_SIGNATURE_HEADER] = signResponse(options.key, {
          nonce,
          status,
          body: text,
        });
      }
      return new Response(text, { status, headers });
    };
    if (url.pathname !== "/v1/debug/levels") {
      return answer(404, { error: `Unknown path: ${url.pathname} (only /v1/debug/levels)` });
    }
    if (req.method !== "GET" && req.method !== "PUT") {
      return answer(405, { error: `Method ${req.method} not allowed: use GET or PUT` });
    }
    const declared = Number(req.headers.get("content-length") ?? "0");
    if (declared > MAX_DEBUG_BODY) {
      await req.body?.cancel().catch(() => {});
      return answer(413, { error: `Request body too large: at most ${MAX_DEBUG_BODY} bytes` });
    }
    const raw = new Uint8Array(await req.arrayBuffer());
    if (raw.byteLength > MAX_DEBUG_BODY) {
      return answer(413, { error: `Request body too large: at most ${MAX_DEBUG_BODY} bytes` });
    }
    const header = req.headers.get("authorization");
    if (header === null) {
      return answer(401, { error: "Unauthorized: the debug port needs a signed request" });
    }
    let parts;
    try {
      parts = parseAuthorization(header);
    } catch (error) {
      return answer(401, { error: `Unauthorized: ${(error as Error).message}` });
    }
    if (expectedId === null || options.key === null) {
      return answer(401, { error: "Unauthorized: this failsh has no debugKey in its policy" });
    }
    if (parts.keyId !== expectedId) return answer(401, { error: "Unauthorized: unknown key" });
    if (!verifyRequest(options.key, parts, { method: req.method, path, digest: bodyDigest(raw) })) {
      return answer(401, { error: "Unauthorized: bad signature" });
    }
    const fresh = nonces.check(parts.nonce, parts.ts, Date.now());
    if (fresh !== "ok") {
      return answer(401, {
        error: fresh === "stale"
          ? "Unauthorized: stale timestamp (check the clocks)"
          : fresh === "replayed"
          ? "Unauthorized: replayed request"
          : "Unauthorized: replay cache full, retry later",
      });
    }
    nonce = parts.nonce;
    if (req.method === "GET") return answer(200, { levels: options.logger.levels() });
    let v: Record<string, unknown>;
    try {
      v = JSON.parse(new TextDecoder().decode(raw));
      if (typeof v !== "object" || v === null || Array.isArray(v)) {
        throw new SyntaxError("not an object");
      }
    } catch (error) {
      return answer(400, { error: `Invalid body: ${(error as Error).message}` });
    }
    for (const k of Object.keys(v)) {
      if (k !== "facility" && k !== "level") {
        return answer(400, {
          error: `Invalid body: unknown field "${k}" (expected facility, level)`,
        });
      }
    }
    if (typeof v.facility !== "string" || !FACILITY_PATTERN.test(v.facility)) {
      return answer(400, {
        error: `Invalid facility: ${JSON.stringify(v.facility)} must be "*" or a lowercase name`,
      });
    }
    if (typeof v.level !== "string" || !(LOG_LEVELS as readonly string[]).includes(v.level)) {
      return answer(400, {
        error: `Invalid level: ${JSON.stringify(v.level)} is not one of ${LOG_LEVELS.join(", ")}`,
      });
    }
    options.logger.setLevel(v.facility, v.level);
    options.logger.info("daemon", "log level changed", { target: v.facility, newLevel: v.level });
    return answer(200, { levels: options.logger.levels() });
  }

  const { server, addr } = await listen(options.listen, handle);
  return {
    addr,
    url: baseUrl(addr),
    async close() {
      await server.shutdown();
    },
  };
}

/**
 * The Prometheus text of failsh's `/metrics`: service states, transitions, decisions, poll
 * latency per peer, poll failures, takeovers and releases, handler durations, timeouts and
 * errors, and the sandbox's privileged requests (allowed, refused, failed) when given.
 *
 * @param snapshot The current snapshot.
 * @param stats The scheduler's counters.
 * @param sandbox The sandbox's counters, if any.
 * @returns The exposition text.
 *
 * @example
 * ```ts ignore
 * import { metricsText } from "./monitor.ts";
 * console.log(metricsText(scheduler.snapshot(), scheduler.stats));
 * ```
 */
export function metricsText(
  snapshot: FailshSnapshot,
  stats: SchedulerStats,
  sandbox?: SandboxCounters,
): string {
  const out: string[] = [];
  const metric = (name: string, type: MetricType, help: string) => {
    out.push(...metricHeader(name, type, help));
  };
  metric("failsh_service_state", "gauge", "1 for the local state of each service, 0 otherwise.");
  for (const s of snapshot.services) {
    for (const st of ["UP", "RECOVER", "FAIL"]) {
      out.push(
        `failsh_service_state{service="${esc(s.name)}",state="${st}"} ${s.state === st ? 1 : 0}`,
      );
    }
  }
  metric(
    "failsh_transitions_total",
    "counter",
    "Local state transitions by service and new state.",
  );
  for (const [k, v] of stats.transitions) {
    const [service, state] = k.split("/");
    out.push(`failsh_transitions_total{service="${esc(service!)}",state="${state}"} ${v}`);
  }
  metric("failsh_decisions_total", "counter", "Decisions made, by action.");
  for (const [k, v] of stats.decisions) out.push(`failsh_decisions_total{action="${k}"} ${v}`);
  metric("failsh_peer_reachable", "gauge", "1 when the host is reachable after hysteresis.");
  for (const h of snapshot.hosts) {
    out.push(`failsh_peer_reachable{host="${esc(h.name)}"} ${h.reachable ? 1 : 0}`);
  }
  const probed = snapshot.hosts.flatMap((h) => h.liveness ? [[h.name, h.liveness] as const] : []);
  if (probed.length > 0) {
    metric(
      "failsh_peer_liveness_state",
      "gauge",
      "1 for the host liveness state of each probed peer (its kernel answers ping), 0 otherwise.",
    );
    for (const [name, l] of probed) {
      for (const st of ["unknown", "alive", "silent"]) {
        out.push(
          `failsh_peer_liveness_state{host="${esc(name)}",state="${st}"} ${l.state === st ? 1 : 0}`,
        );
      }
    }
    metric(
      "failsh_peer_liveness_last_answer_age_seconds",
      "gauge",
      "Seconds since the last echo reply of each probed peer was read (absent before the first).",
    );
    for (const [name, l] of probed) {
      if (l.lastAnswerAt === null) continue;
      const age = Math.max(0, snapshot.now - l.lastAnswerAt) / 1000;
      out.push(`failsh_peer_liveness_last_answer_age_seconds{host="${esc(name)}"} ${age}`);
    }
    metric("failsh_peer_liveness_rtt_ms", "gauge", "Round-trip time of the last echo reply.");
    for (const [name, l] of probed) {
      if (l.rttMs !== null) out.push(`failsh_peer_liveness_rtt_ms{host="${esc(name)}"} ${l.rttMs}`);
    }
    metric(
      "failsh_peer_liveness_unanswered",
      "gauge",
      "Echo requests in a row the peer's kernel has left unanswered.",
    );
    for (const [name, l] of probed) {
      out.push(`failsh_peer_liveness_unanswered{host="${esc(name)}"} ${l.unanswered}`);
    }
  }
  metric("failsh_poll_latency_ms", "histogram", "Round-trip time of successful polls, by host.");
  for (const [host, h] of stats.pollLatency) {
    out.push(...histogramLines("failsh_poll_latency_ms", { host }, h));
  }
  metric("failsh_poll_failures_total", "counter", "Failed or missed polls, by host.");
  for (const [host, v] of stats.pollFailures) {
    out.push(`failsh_poll_failures_total{host="${esc(host)}"} ${v}`);
  }
  metric("failsh_addresses_held", "gauge", "Addresses held now.");
  out.push(`failsh_addresses_held ${snapshot.addresses.length}`);
  metric("failsh_takeovers_total", "counter", "Addresses taken over.");
  out.push(`failsh_takeovers_total ${stats.takeovers}`);
  metric("failsh_releases_total", "counter", "Addresses released.");
  out.push(`failsh_releases_total ${stats.releases}`);
  metric("failsh_handler_duration_ms", "histogram", "Handler run time by service and kind.");
  for (const [k, h] of stats.handlerDurations) {
    const [service, kind] = k.split("/");
    out.push(
      ...histogramLines("failsh_handler_duration_ms", { service: service!, kind: kind! }, h),
    );
  }
  metric("failsh_handler_timeouts_total", "counter", "Handlers killed at their time limit.");
  for (const [k, v] of stats.handlerTimeouts) {
    const [service, kind] = k.split("/");
    out.push(`failsh_handler_timeouts_total{service="${esc(service!)}",kind="${kind}"} ${v}`);
  }
  metric("failsh_handler_errors_total", "counter", "Handlers that threw.");
  for (const [k, v] of stats.handlerErrors) {
    const [service, kind] = k.split("/");
    out.push(`failsh_handler_errors_total{service="${esc(service!)}",kind="${kind}"} ${v}`);
  }
  if (snapshot.services.some((s) => s.arbiter !== undefined)) {
    const STATES = ["none", "acquiring", "waiting-delay", "held", "failsafe", "lost"];
    metric(
      "failsh_arbiter_state",
      "gauge",
      "1 for the etcd arbiter's state of each service on this host, 0 otherwise.",
    );
    for (const s of snapshot.services) {
      if (!s.arbiter) continue;
      for (const st of STATES) {
        out.push(
          `failsh_arbiter_state{service="${esc(s.name)}",state="${st}"} ${
            s.arbiter.state === st ? 1 : 0
          }`,
        );
      }
    }
    metric(
      "failsh_arbiter_epoch",
      "gauge",
      "The epoch (etcd revision of the key) of each service this host holds the key of; 0 otherwise.",
    );
    for (const s of snapshot.services) {
      if (!s.arbiter) continue;
      out.push(`failsh_arbiter_epoch{service="${esc(s.name)}"} ${s.arbiter.epoch ?? 0}`);
    }
    metric(
      "failsh_arbiter_renew_latency_ms",
      "histogram",
      "Time from sending a lease keepalive to the confirmation of every held key.",
    );
    out.push(...histogramLines("failsh_arbiter_renew_latency_ms", {}, stats.arbiterRenewLatency));
    metric("failsh_arbiter_renew_failures_total", "counter", "Renewals etcd did not confirm.");
    out.push(`failsh_arbiter_renew_failures_total ${stats.arbiterRenewFailures}`);
    metric(
      "failsh_arbiter_losses_total",
      "counter",
      "Keys lost while held (the service was stopped), by service.",
    );
    for (const s of snapshot.services) {
      if (!s.arbiter) continue;
      out.push(
        `failsh_arbiter_losses_total{service="${esc(s.name)}"} ${
          stats.arbiterLosses.get(s.name) ?? 0
        }`,
      );
    }
  }
  if (sandbox) {
    metric("failsh_policy_requests_total", "counter", "Privileged requests by kind and verdict.");
    for (const [op, c] of Object.entries(sandbox.requests)) {
      for (const verdict of ["allowed", "refused", "failed"] as const) {
        out.push(`failsh_policy_requests_total{op="${op}",verdict="${verdict}"} ${c[verdict]}`);
      }
    }
    metric("failsh_policy_refused_total", "counter", "Privileged requests refused by the policy.");
    out.push(
      `failsh_policy_refused_total ${
        Object.values(sandbox.requests).reduce((n, c) => n + c.refused, 0)
      }`,
    );
    metric("failsh_sandbox_children_started_total", "counter", "Sandboxed children started.");
    out.push(`failsh_sandbox_children_started_total ${sandbox.children.started}`);
  }
  metric("failsh_uptime_seconds", "gauge", "Seconds since failsh started.");
  out.push(`failsh_uptime_seconds ${Math.round((snapshot.now - snapshot.startedAt) / 1000)}`);
  return out.join("\n") + "\n";
}
