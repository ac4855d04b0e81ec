/**
 * faild's HTTP/1.1 server, written for hostile networks: a request head must arrive within a
 * deadline, the number of connections is bounded (in all and per remote address), a body is
 * only read when the handler asks for it, only with a declared length, at most that length and
 * within a deadline, and nothing is kept per chunk. Anything it does not understand is refused
 * with a clear 4xx and the connection closed.
 *
 * It replaces `Deno.serve` for faild: Deno 2.9's server has no header timeout and no connection
 * limit, and cancelling a request body that timed out leaks about 68 KiB of native memory per
 * request (docs/security.md, "faild").
 *
 * @module
 */
import type { Logger } from "../../lib/log.ts";
import { Connection } from "./_http_conn.ts";
import { type HttpHandler, type HttpRefusal, type HttpStats, TOO_MANY } from "./_http_wire.ts";

export {
  HttpBodyError,
  type HttpHandler,
  type HttpRefusal,
  type HttpRequest,
  type HttpResponse,
  type HttpStats,
  MAX_HEAD_BYTES,
  MAX_HEADER_FIELDS,
  MAX_TARGET_LENGTH,
  utf8Length,
} from "./_http_wire.ts";

/** Default most open connections. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/** Default time a client has to send a whole request head, in ms. */
export const DEFAULT_HEADER_TIMEOUT_MS = 10_000;
/** Default time a kept-alive connection may stay idle between requests, in ms. */
export const DEFAULT_IDLE_TIMEOUT_MS = 90_000;
/** Default time one write to a client may take, in ms. */
export const DEFAULT_WRITE_TIMEOUT_MS = 30_000;

/** Most refused connections being told 503 at once (beyond, they are closed unanswered). */
const MAX_REFUSING = 8;
/** Descriptors kept free for everything else faild opens (state file and its directory). */
const RESERVED_FDS = 32;

/** Options of {@linkcode HttpServer}. */
export interface HttpServerOptions {
  /** Address to listen on. */
  hostname: string;
  /** Port (0: any free port). */
  port: number;
  /** PEM certificate chain and key: serve HTTPS. */
  tls?: { cert: string; key: string };
  /** Most open connections (default {@linkcode DEFAULT_MAX_CONNECTIONS}, lowered to fit the descriptor limit). */
  maxConnections?: number;
  /** Most open connections from one address (default a quarter of the most, at least 16). */
  maxConnectionsPerAddress?: number;
  /** Time to send a request head, from the connection or the first byte of the request, in ms. */
  headerTimeoutMs?: number;
  /** Time to send a body once the handler asks for it, in ms (default 5000). */
  bodyTimeoutMs?: number;
  /** Time a connection may stay idle between requests, in ms. */
  idleTimeoutMs?: number;
  /** Time one write to the client may take, in ms. */
  writeTimeoutMs?: number;
  /** Largest body, in bytes (default 4096): larger declared lengths get 413 before any read. */
  maxBodyBytes?: number;
  /** Where to log (connection limits, accept errors; each at most once a second). */
  log?: Logger;
}

/** A log line at most once a second per kind, with the count of lines it held back. */
class Throttle {
  #last = new Map<string, { at: number; dropped: number }>();
  constructor(readonly log: Logger | undefined) {}
  warn(kind: string, msg: string, fields: Record<string, unknown> = {}): void {
    if (this.log === undefined) return;
    const now = Date.now();
    const e = this.#last.get(kind);
    if (e !== undefined && now - e.at < 1000) {
      e.dropped++;
      return;
    }
    this.#last.set(kind, { at: now, dropped: 0 });
    this.log.warn("http", msg, {
      ...fields,
      ...(e !== undefined && e.dropped > 0 ? { suppressed: e.dropped } : {}),
    });
  }
}

/**
 * How many more descriptors this process can open now, up to `want`: measured by opening
 * `/dev/null` until the kernel refuses (Deno has no getrlimit, and reading `/proc/self/limits`
 * needs every permission). `want` when it cannot tell.
 */
function descriptorRoom(want: number): number {
  const files: Deno.FsFile[] = [];
  try {
    while (files.length < want) files.push(Deno.openSync("/dev/null"));
    return want;
  } catch (error) {
    return error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.NotFound
      ? want
      : files.length;
  } finally {
    for (const f of files) f.close();
  }
}

/**
 * An HTTP/1.1 server with bounded connections, head and body deadlines, and bodies read on demand.
 *
 * @example
 * ```ts ignore
 * import { HttpServer } from "./http.ts";
 * const server = new HttpServer({ hostname: "127.0.0.1", port: 0 }, async (req) => ({
 *   status: 200,
 *   headers: { "content-type": "text/plain" },
 *   body: `you asked for ${req.target}`,
 * }));
 * console.log(server.addr.port);
 * await server.close();
 * ```
 */
export class HttpServer {
  /** The bound address. */
  readonly addr: Deno.NetAddr;
  /** The request handler. */
  readonly handler: HttpHandler;
  /** Effective most open connections. */
  readonly maxConnections: number;
  /** Effective most open connections from one address. */
  readonly maxConnectionsPerAddress: number;
  /** Head deadline, ms. */
  readonly headerTimeoutMs: number;
  /** Body deadline, ms. */
  readonly bodyTimeoutMs: number;
  /** Idle deadline, ms. */
  readonly idleTimeoutMs: number;
  /** Write deadline, ms. */
  readonly writeTimeoutMs: number;
  /** Largest body, bytes. */
  readonly maxBodyBytes: number;
  /** Throttled logging. */
  readonly throttle: Throttle;
  /** Shutting down: answers close their connections. */
  closing = false;

  #listener: Deno.Listener;
  #tls: boolean;
  /** The connection limit in force: lowered when the process runs out of descriptors. */
  #limit: number;
  /** Refused connections whose 503 is being written. */
  #refusing = 0;
  #connections = new Set<Connection>();
  #perAddress = new Map<string, number>();
  #sweeper: ReturnType<typeof setInterval>;
  #accepting: Promise<void>;
  #accepted = 0;
  #refused: Record<HttpRefusal, number> = {
    bad_request: 0,
    head_too_large: 0,
    length_required: 0,
    body_too_large: 0,
    header_timeout: 0,
    body_timeout: 0,
    write_timeout: 0,
    too_many_connections: 0,
  };
  #closed: Promise<void> | null = null;

  /**
   * Listens and starts serving.
   *
   * @param options Address, TLS and limits.
   * @param handler Answers each request.
   * @throws {Error} When the address cannot be bound.
   */
  constructor(options: HttpServerOptions, handler: HttpHandler) {
    this.handler = handler;
    const wanted = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    const room = descriptorRoom(Math.min(wanted, 65536) + RESERVED_FDS) - RESERVED_FDS;
    this.maxConnections = Math.max(1, Math.min(wanted, room));
    this.#limit = this.maxConnections;
    this.maxConnectionsPerAddress = Math.min(
      this.maxConnections,
      options.maxConnectionsPerAddress ?? Math.max(16, Math.floor(this.maxConnections / 4)),
    );
    this.headerTimeoutMs = options.headerTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS;
    this.bodyTimeoutMs = options.bodyTimeoutMs ?? 5_000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.writeTimeoutMs = options.writeTimeoutMs ?? DEFAULT_WRITE_TIMEOUT_MS;
    this.maxBodyBytes = options.maxBodyBytes ?? 4096;
    this.throttle = new Throttle(options.log);
    this.#tls = options.tls !== undefined;
    this.#listener = options.tls
      ? Deno.listenTls({
        hostname: options.hostname,
        port: options.port,
        cert: options.tls.cert,
        key: options.tls.key,
      })
      : Deno.listen({ hostname: options.hostname, port: options.port });
    this.addr = this.#listener.addr as Deno.NetAddr;
    const sweep = Math.max(
      20,
      Math.min(1000, this.headerTimeoutMs / 4, this.bodyTimeoutMs / 4, this.writeTimeoutMs / 4),
    );
    this.#sweeper = setInterval(() => this.#sweep(), sweep);
    this.#accepting = this.#acceptLoop();
  }

  /** Counters of the HTTP layer. */
  get stats(): HttpStats {
    return {
      connections: this.#connections.size,
      accepted: this.#accepted,
      refused: { ...this.#refused },
    };
  }

  /**
   * Counts a refusal.
   *
   * @param reason Why.
   */
  count(reason: HttpRefusal): void {
    this.#refused[reason]++;
  }

  /**
   * Forgets a closed connection.
   *
   * @param c The connection.
   */
  release(c: Connection): void {
    if (!this.#connections.delete(c)) return;
    const n = (this.#perAddress.get(c.remote) ?? 1) - 1;
    if (n <= 0) this.#perAddress.delete(c.remote);
    else this.#perAddress.set(c.remote, n);
  }

  /**
   * Stops accepting, closes idle connections, lets answers in progress finish (at most
   * `graceMs`), then closes the rest.
   *
   * @param graceMs How long to wait for requests in progress.
   * @returns When every connection is closed.
   */
  close(graceMs = 5000): Promise<void> {
    this.#closed ??= (async () => {
      this.closing = true;
      try {
        this.#listener.close();
      } catch {
        // Already closed.
      }
      await this.#accepting;
      for (const c of [...this.#connections]) c.closeIfIdle();
      const until = Date.now() + graceMs;
      while (this.#connections.size > 0 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 20));
        for (const c of [...this.#connections]) c.closeIfIdle();
      }
      for (const c of [...this.#connections]) c.close();
      clearInterval(this.#sweeper);
    })();
    return this.#closed;
  }

  async #acceptLoop(): Promise<void> {
    let backoff = 10;
    while (!this.closing) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
        backoff = 10;
      } catch (error) {
        if (this.closing || error instanceof Deno.errors.BadResource) return;
        // Out of descriptors (something else took them): hold fewer connections from now on,
        // wait for some to end, and never stop listening.
        if (/too many open files/i.test(String(error)) && this.#connections.size > 16) {
          this.#limit = Math.min(this.#limit, this.#connections.size - 8);
        }
        this.throttle.warn("accept", "cannot accept a connection", {
          error: String(error),
          connections: this.#connections.size,
        });
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 1000);
        continue;
      }
      const remote = (conn.remoteAddr as Deno.NetAddr).hostname ?? "";
      const fromAddress = this.#perAddress.get(remote) ?? 0;
      if (
        this.#connections.size >= this.#limit ||
        fromAddress >= this.maxConnectionsPerAddress
      ) {
        this.count("too_many_connections");
        this.throttle.warn("limit", "connection refused: too many connections", {
          remote,
          connections: this.#connections.size,
          fromAddress,
          max: this.#limit,
          maxPerAddress: this.maxConnectionsPerAddress,
        });
        // Told why and closed; the answer fits the socket's buffer, so this takes no time.
        const refused = conn;
        const close = () => {
          try {
            refused.close();
          } catch {
            // Already closed.
          }
        };
        // At most a few answers in flight: in a flood the others are closed unanswered, so
        // that refused connections never take the descriptors the limit keeps free.
        if (this.#tls || this.#refusing >= MAX_REFUSING) close();
        else {
          this.#refusing++;
          const done = () => {
            this.#refusing--;
            close();
          };
          refused.write(TOO_MANY).then(done, done);
        }
        continue;
      }
      this.#accepted++;
      // Answers go out at once, not held back by Nagle's algorithm.
      if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
      const c = new Connection(this, conn, remote, Date.now());
      this.#connections.add(c);
      this.#perAddress.set(remote, fromAddress + 1);
      c.serve();
    }
  }

  #sweep(): void {
    const now = Date.now();
    for (const c of this.#connections) {
      if (now > c.deadline && c.phase !== "handler" && c.phase !== "stream") c.expire();
    }
  }
}
