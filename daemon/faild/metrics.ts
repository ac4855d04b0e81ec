/**
 * faild's Prometheus metrics: counters kept while serving, rendered in the text exposition format.
 *
 * @module
 */
import { SERVICE_STATES, type ServiceRecord } from "../../lib/types.ts";
import type { HttpStats } from "./http.ts";
import { escapeLabel } from "../../lib/metrics.ts";

/** Why a request was refused by authentication or access control. */
export type AuthFailureReason =
  | "malformed"
  | "unknown_key"
  | "bad_signature"
  | "stale"
  | "replayed"
  | "nonce_cache_full"
  | "nonce_sessions_full"
  | "unsigned"
  | "forbidden";

/** Gauges read at render time. */
export interface MetricsSnapshot {
  /** Services the caller may read. */
  services: readonly Readonly<ServiceRecord>[];
  /** Number of services held in total. */
  serviceCount: number;
  /** Seconds since start. */
  uptimeSeconds: number;
  /** Open event streams. */
  eventStreams: number;
  /** Nonces in the replay cache. */
  nonces: number;
  /** Completed state file writes. */
  stateWrites: number;
  /** Failed state file writes. */
  stateWriteErrors: number;
  /** Memory holds changes the state file does not (a write running, pending or failed). */
  stateBehind?: boolean;
  /** Counters of the HTTP layer. */
  http?: HttpStats;
}

/**
 * The counters of one faild.
 *
 * @example
 * ```ts
 * import { Metrics } from "./metrics.ts";
 * const m = new Metrics();
 * m.request("/v1/services", 200, 0, 120);
 * console.log(m.render({
 *   services: [], serviceCount: 0, uptimeSeconds: 1, eventStreams: 0, nonces: 0,
 *   stateWrites: 0, stateWriteErrors: 0,
 * }).includes('faild_requests_total{route="/v1/services",status="200"} 1'));
 * ```
 */
export class Metrics {
  #requests = new Map<string, number>();
  #auth = new Map<string, number>();
  #bytesIn = 0;
  #bytesOut = 0;
  #events = 0;

  /**
   * Counts a served request.
   *
   * @param route The route template, e.g. `/v1/services/:name`.
   * @param status The HTTP status.
   * @param bytesIn Request body bytes.
   * @param bytesOut Response body bytes.
   */
  request(route: string, status: number, bytesIn: number, bytesOut: number): void {
    const key = `${route}\u0000${status}`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
    this.#bytesIn += bytesIn;
    this.#bytesOut += bytesOut;
  }

  /**
   * Counts bytes sent outside a request's answer (event streams).
   *
   * @param bytes Bytes sent.
   */
  streamed(bytes: number): void {
    this.#bytesOut += bytes;
    this.#events++;
  }

  /**
   * Counts an authentication or access refusal.
   *
   * @param reason Why.
   */
  authFailure(reason: AuthFailureReason): void {
    this.#auth.set(reason, (this.#auth.get(reason) ?? 0) + 1);
  }

  /**
   * Renders every metric in the Prometheus text format.
   *
   * @param snap The gauges and the services to show.
   * @returns The exposition text.
   */
  render(snap: MetricsSnapshot): string {
    const out: string[] = [];
    out.push("# HELP faild_service_state Current state of a service (1 for its state, else 0).");
    out.push("# TYPE faild_service_state gauge");
    for (const s of snap.services) {
      const name = escapeLabel(s.name);
      for (const st of SERVICE_STATES) {
        out.push(`faild_service_state{service="${name}",state="${st}"} ${s.state === st ? 1 : 0}`);
      }
    }
    out.push("# HELP faild_service_changes_total State changes of a service since it was created.");
    out.push("# TYPE faild_service_changes_total counter");
    for (const s of snap.services) {
      out.push(`faild_service_changes_total{service="${escapeLabel(s.name)}"} ${s.changes}`);
    }
    out.push("# HELP faild_service_last_change_seconds Time of the last state change.");
    out.push("# TYPE faild_service_last_change_seconds gauge");
    for (const s of snap.services) {
      out.push(
        `faild_service_last_change_seconds{service="${escapeLabel(s.name)}"} ${
          s.lastChange / 1000
        }`,
      );
    }
    out.push("# HELP faild_services Services held.");
    out.push("# TYPE faild_services gauge");
    out.push(`faild_services ${snap.serviceCount}`);
    out.push("# HELP faild_requests_total Requests answered, by route and status.");
    out.push("# TYPE faild_requests_total counter");
    for (const [key, n] of [...this.#requests].sort()) {
      const [route, status] = key.split("\u0000") as [string, string];
      out.push(`faild_requests_total{route="${escapeLabel(route)}",status="${status}"} ${n}`);
    }
    out.push("# HELP faild_auth_failures_total Requests refused by authentication or access.");
    out.push("# TYPE faild_auth_failures_total counter");
    for (const [reason, n] of [...this.#auth].sort()) {
      out.push(`faild_auth_failures_total{reason="${reason}"} ${n}`);
    }
    out.push("# HELP faild_request_bytes_total Request body bytes received.");
    out.push("# TYPE faild_request_bytes_total counter");
    out.push(`faild_request_bytes_total ${this.#bytesIn}`);
    out.push("# HELP faild_response_bytes_total Response body bytes sent, event streams included.");
    out.push("# TYPE faild_response_bytes_total counter");
    out.push(`faild_response_bytes_total ${this.#bytesOut}`);
    out.push("# HELP faild_events_sent_total Change events sent on event streams.");
    out.push("# TYPE faild_events_sent_total counter");
    out.push(`faild_events_sent_total ${this.#events}`);
    out.push("# HELP faild_event_streams Open event streams.");
    out.push("# TYPE faild_event_streams gauge");
    out.push(`faild_event_streams ${snap.eventStreams}`);
    out.push(
      "# HELP faild_nonce_cache_entries Replay cache entries: random nonces plus nonce sessions.",
    );
    out.push("# TYPE faild_nonce_cache_entries gauge");
    out.push(`faild_nonce_cache_entries ${snap.nonces}`);
    out.push("# HELP faild_state_writes_total State file writes.");
    out.push("# TYPE faild_state_writes_total counter");
    out.push(`faild_state_writes_total ${snap.stateWrites}`);
    out.push("# HELP faild_state_write_errors_total Failed state file writes.");
    out.push("# TYPE faild_state_write_errors_total counter");
    out.push(`faild_state_write_errors_total ${snap.stateWriteErrors}`);
    out.push(
      "# HELP faild_state_behind 1 while memory holds changes the state file does not " +
        "(a save running or failed and being retried).",
    );
    out.push("# TYPE faild_state_behind gauge");
    out.push(`faild_state_behind ${snap.stateBehind ? 1 : 0}`);
    if (snap.http !== undefined) {
      out.push("# HELP faild_http_connections Open client connections.");
      out.push("# TYPE faild_http_connections gauge");
      out.push(`faild_http_connections ${snap.http.connections}`);
      out.push("# HELP faild_http_connections_accepted_total Client connections accepted.");
      out.push("# TYPE faild_http_connections_accepted_total counter");
      out.push(`faild_http_connections_accepted_total ${snap.http.accepted}`);
      out.push(
        "# HELP faild_http_refused_total Requests refused and connections cut off by the HTTP " +
          "layer, by reason.",
      );
      out.push("# TYPE faild_http_refused_total counter");
      for (const [reason, n] of Object.entries(snap.http.refused)) {
        out.push(`faild_http_refused_total{reason="${reason}"} ${n}`);
      }
    }
    const mem = Deno.memoryUsage();
    out.push("# HELP process_resident_memory_bytes Resident set size of the faild process.");
    out.push("# TYPE process_resident_memory_bytes gauge");
    out.push(`process_resident_memory_bytes ${mem.rss}`);
    out.push("# HELP faild_heap_used_bytes JavaScript heap in use.");
    out.push("# TYPE faild_heap_used_bytes gauge");
    out.push(`faild_heap_used_bytes ${mem.heapUsed}`);
    out.push("# HELP faild_heap_total_bytes JavaScript heap reserved.");
    out.push("# TYPE faild_heap_total_bytes gauge");
    out.push(`faild_heap_total_bytes ${mem.heapTotal}`);
    out.push("# HELP faild_external_bytes Memory outside the heap held by JavaScript objects.");
    out.push("# TYPE faild_external_bytes gauge");
    out.push(`faild_external_bytes ${mem.external}`);
    out.push("# HELP faild_uptime_seconds Seconds since faild started.");
    out.push("# TYPE faild_uptime_seconds gauge");
    out.push(`faild_uptime_seconds ${snap.uptimeSeconds.toFixed(3)}`);
    return out.join("\n") + "\n";
  }
}
