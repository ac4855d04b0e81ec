/**
 * `failmon --serve HOST:PORT URL...`: one live page for several failsh. The server follows each
 * failsh monitor port's stream, keeps the last snapshot and connection state of each, and
 * re-serves them combined: `GET /` (the live page), `GET /v1/aggregate` (JSON) and
 * `GET /v1/stream` (server-sent events, `event: aggregate` at connect and on every change, a
 * `: keepalive` comment every 15 s). An unreachable failsh stays on the page, marked unreachable,
 * with its last known state.
 *
 * @module
 */
import type { FailshSnapshot } from "../../lib/types.ts";
import { monitorPage } from "../../shell/web/page.ts";
import { normalizeBaseUrl, SnapshotStream } from "./stream.ts";
import { baseUrl } from "../../lib/net.ts";

/** One failsh followed by the aggregator. */
export interface AggregateSource {
  /** Its monitor URL. */
  url: string;
  /** Connection state: `lost` stays until a connection succeeds again. */
  status: "connecting" | "connected" | "lost";
  /** Why the connection was lost, or `null`. */
  error: string | null;
  /** When the status last changed (ms since epoch). */
  since: number;
  /** The last snapshot received, or `null` if none yet. */
  snapshot: FailshSnapshot | null;
}

/** The aggregate as served on `/v1/aggregate` and in each `aggregate` event. */
export interface AggregateSnapshot {
  /** The aggregator's clock (ms since epoch). */
  now: number;
  /** Every source, in command-line order. */
  sources: AggregateSource[];
}

/** Options of {@linkcode serveAggregate}. */
export interface ServeAggregateOptions {
  /** Address to listen on (default `127.0.0.1`). */
  hostname?: string;
  /** Port (default 0: any free port). */
  port?: number;
  /** Period of keepalive comments (default 15 s). */
  keepaliveMs?: number;
  /** Most stream clients at once (default 100); more get 503. */
  maxClients?: number;
  /** Reconnect backoff towards the sources (default 250 ms doubling to 10 s). */
  minBackoffMs?: number;
  /** Longest reconnect delay (default 10 s). */
  maxBackoffMs?: number;
}

/** A running aggregator. */
export interface AggregateServer {
  /** The base URL of the page, e.g. `http://127.0.0.1:8080`. */
  readonly url: string;
  /** The combined state now. */
  current(): AggregateSnapshot;
  /** Stops serving and following. */
  close(): Promise<void>;
}

const encoder = new TextEncoder();

/**
 * Starts the aggregating server.
 *
 * @param urls The failsh monitor URLs to follow (at least one, at most 64).
 * @param options Listen address and limits.
 * @returns The running server.
 * @throws {TypeError} When a URL is invalid or the list is empty or too long.
 *
 * @example
 * ```ts ignore
 * import { serveAggregate } from "./aggregate.ts";
 * const server = serveAggregate(["http://127.0.0.1:1848", "http://127.0.0.2:1848"]);
 * console.log(server.url);
 * await server.close();
 * ```
 */
export function serveAggregate(
  urls: string[],
  options: ServeAggregateOptions = {},
): AggregateServer {
  if (urls.length === 0) throw new TypeError("Cannot serve an aggregate: no monitor URL given");
  if (urls.length > 64) {
    throw new TypeError(`Cannot serve an aggregate of ${urls.length} monitors: at most 64`);
  }
  const sources: AggregateSource[] = urls.map((u) => ({
    url: normalizeBaseUrl(u),
    status: "connecting",
    error: null,
    since: Date.now(),
    snapshot: null,
  }));
  const clients = new Set<ReadableStreamDefaultController<Uint8Array>>();
  const maxClients = options.maxClients ?? 100;
  let pushPending = false;

  const current = (): AggregateSnapshot => ({ now: Date.now(), sources });
  const send = (c: ReadableStreamDefaultController<Uint8Array>, bytes: Uint8Array) => {
    // A client that does not read (its queue keeps growing) is dropped: bounded memory.
    if ((c.desiredSize ?? 0) < -32) {
      clients.delete(c);
      try {
        c.close();
      } catch {
        // already closed
      }
      return;
    }
    try {
      c.enqueue(bytes);
    } catch {
      clients.delete(c);
    }
  };
  const frame = () => encoder.encode(`event: aggregate\ndata: ${JSON.stringify(current())}\n\n`);
  const push = () => {
    if (pushPending) return;
    pushPending = true;
    queueMicrotask(() => {
      pushPending = false;
      const bytes = frame();
      for (const c of clients) send(c, bytes);
    });
  };

  const streams = sources.map((src) =>
    new SnapshotStream(src.url, {
      ...(options.minBackoffMs === undefined ? {} : { minBackoffMs: options.minBackoffMs }),
      ...(options.maxBackoffMs === undefined ? {} : { maxBackoffMs: options.maxBackoffMs }),
      onSnapshot: (s) => {
        src.snapshot = s;
        push();
      },
      onStatus: (st) => {
        if (st.kind === "connected") {
          src.status = "connected";
          src.error = null;
          src.since = st.since;
        } else if (st.kind === "lost") {
          if (src.status !== "lost" || src.error !== st.error) {
            if (src.status !== "lost") src.since = st.since;
            src.status = "lost";
            src.error = st.error;
          } else return;
        } else return;
        push();
      },
    })
  );

  const keepalive = setInterval(() => {
    const bytes = encoder.encode(": keepalive\n\n");
    for (const c of clients) send(c, bytes);
  }, options.keepaliveMs ?? 15_000);

  const title = `failmon: ${sources.length} host${sources.length === 1 ? "" : "s"}`;
  const server = Deno.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 0,
    onListen: () => {},
  }, (request) => {
    const path = new URL(request.url).pathname;
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("Method not allowed: use GET\n", {
        status: 405,
        headers: { allow: "GET, HEAD" },
      });
    }
    if (path === "/") {
      return new Response(monitorPage({ title }), {
        headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
      });
    }
    if (path === "/v1/aggregate") return Response.json(current());
    if (path === "/v1/stream") {
      if (clients.size >= maxClients) {
        return new Response(`Too many stream clients: at most ${maxClients}\n`, { status: 503 });
      }
      let self: ReadableStreamDefaultController<Uint8Array> | undefined;
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          self = controller;
          controller.enqueue(encoder.encode("retry: 2000\n\n"));
          controller.enqueue(frame());
          clients.add(controller);
        },
        cancel() {
          if (self) clients.delete(self);
        },
      });
      return new Response(body, {
        headers: { "content-type": "text/event-stream", "cache-control": "no-store" },
      });
    }
    return new Response(`Not found: ${path} (try /, /v1/aggregate or /v1/stream)\n`, {
      status: 404,
    });
  });
  return {
    url: baseUrl(server.addr),
    current,
    async close() {
      clearInterval(keepalive);
      for (const s of streams) s.close();
      for (const c of clients) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
      clients.clear();
      await Promise.all(streams.map((s) => s.done));
      await server.shutdown();
    },
  };
}
