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

/** Default most open connections. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/** Default time a client has to send a whole request head, in ms. */
export const DEFAULT_HEADER_TIMEOUT_MS = 10_000;
/** Default time a kept-alive connection may stay idle between requests, in ms. */
export const DEFAULT_IDLE_TIMEOUT_MS = 90_000;
/** Default time one write to a client may take, in ms. */
export const DEFAULT_WRITE_TIMEOUT_MS = 30_000;
/** Largest request head (request line and header fields), in bytes. */
export const MAX_HEAD_BYTES = 16 * 1024;
/** Most header fields in a request. */
export const MAX_HEADER_FIELDS = 100;
/** Longest request target, in bytes. */
export const MAX_TARGET_LENGTH = 2048;

/** Most refused connections being told 503 at once (beyond, they are closed unanswered). */
const MAX_REFUSING = 8;
/** Descriptors kept free for everything else faild opens (state file and its directory). */
const RESERVED_FDS = 32;
/** Size of the buffers connections read into and answer from (a larger head or answer gets its own). */
const BUFFER_SIZE = 4096;

/**
 * Buffers reused from one connection to the next: a flood of short connections then reuses a
 * few hundred buffers instead of allocating two for each (which V8 frees lazily, and the
 * allocator then keeps).
 */
class BufferPool {
  #free: Uint8Array[] = [];
  constructor(readonly max: number) {}
  take(): Uint8Array {
    return this.#free.pop() ?? new Uint8Array(BUFFER_SIZE);
  }
  give(buffer: Uint8Array): void {
    if (buffer.length === BUFFER_SIZE && this.#free.length < this.max) this.#free.push(buffer);
  }
}

const inputs = new BufferPool(256);
const outputs = new BufferPool(64);
/** Where bytes faild reads only to drop them go (their content never matters). */
const DISCARD = new Uint8Array(BUFFER_SIZE);
/** Longest wait for a client to take our last answer before a close, in ms. */
const LINGER_MS = 1000;
/** Most bytes read and dropped while waiting for that. */
const LINGER_BYTES = 64 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  201: "Created",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  411: "Length Required",
  413: "Content Too Large",
  414: "URI Too Long",
  415: "Unsupported Media Type",
  417: "Expectation Failed",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};

/** Header fields a request may carry once only. */
const SINGLE_FIELDS = new Set([
  "host",
  "content-length",
  "transfer-encoding",
  "authorization",
  "content-type",
  "expect",
  "x-failover-content-sha256",
]);

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const METHOD = /^[A-Z]{1,16}$/;
/** `host[:port]`: a registered name or IPv4 address, or an IPv6 literal in brackets. */
const HOST = /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._~!$&'()*+,;=%-]{0,255})(?::[0-9]{1,5})?$/;

/** Why the HTTP layer refused a request or closed a connection (a metrics label). */
export type HttpRefusal =
  | "bad_request"
  | "head_too_large"
  | "length_required"
  | "body_too_large"
  | "header_timeout"
  | "body_timeout"
  | "write_timeout"
  | "too_many_connections";

/** Counters of the HTTP layer. */
export interface HttpStats {
  /** Open connections. */
  connections: number;
  /** Connections accepted since start. */
  accepted: number;
  /** Refusals and cut-off connections by reason. */
  refused: Record<HttpRefusal, number>;
}

/** A request body could not be read: the status and sentence to answer with. */
export class HttpBodyError extends Error {
  /**
   * Creates the error.
   *
   * @param status 400 (incomplete) or 408 (too slow).
   * @param message The sentence.
   */
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = "HttpBodyError";
  }
}

/** One request, its head read; the body is read only if the handler asks. */
export interface HttpRequest {
  /** The method, upper case. */
  readonly method: string;
  /** The request target exactly as sent: path and query. */
  readonly target: string;
  /** The target up to `?`, as sent (no decoding, no dot-segment removal). */
  readonly path: string;
  /** Header fields by lower-case name. */
  readonly headers: ReadonlyMap<string, string>;
  /** The declared body length (0 without a body). */
  readonly contentLength: number;
  /** The remote address. */
  readonly remote: string;
  /**
   * Reads the whole body (exactly `contentLength` bytes) within the body timeout.
   *
   * @throws {HttpBodyError} 408 when it does not arrive in time, 400 when the connection ends.
   */
  body(): Promise<Uint8Array>;
  /** Settles when the connection is closed (the client went away, or faild ended it). */
  readonly closed: Promise<void>;
}

/** What a handler answers. */
export interface HttpResponse {
  /** The status. */
  status: number;
  /** Header fields (lower-case names); content-length and connection are set by the server. */
  headers: Record<string, string>;
  /** A text body, or a stream sent with chunked framing until it ends (then the connection closes). */
  body: string | ReadableStream<Uint8Array>;
  /** Close the connection after this answer. */
  close?: boolean;
}

/**
 * Answers a request: synchronously when it can (the request's objects then die at once), or a
 * promise when it must wait (a body, a disk write).
 */
export type HttpHandler = (req: HttpRequest) => HttpResponse | Promise<HttpResponse>;

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

/** The bytes of a complete answer with a text body. */
function serialize(
  status: number,
  headers: Record<string, string>,
  body: string,
  close: boolean,
  headOnly = false,
): Uint8Array {
  let head = `HTTP/1.1 ${status} ${REASONS[status] ?? "Unknown"}\r\n`;
  for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
  head += `content-length: ${utf8Length(body)}\r\n`;
  if (close) head += "connection: close\r\n";
  return encoder.encode(head + "\r\n" + (headOnly ? "" : body));
}

/** The status lines faild sends, made once. */
const STATUS_LINES = new Map(
  Object.entries(REASONS).map(([code, reason]) => [Number(code), `HTTP/1.1 ${code} ${reason}\r\n`]),
);

/**
 * Copies an ASCII string (header names and values are checked to be ASCII, or made of hex
 * digits and numbers) into a buffer; a character beyond ASCII is written as `?`.
 */
function writeAscii(out: Uint8Array, at: number, text: string): number {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    out[at++] = c < 0x80 ? c : 0x3f;
  }
  return at;
}

/** Bytes of a string in UTF-8, without encoding it. */
export function utf8Length(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) n += c < 0x800 ? 1 : c >= 0xd800 && c <= 0xdbff ? 1 : 2;
  }
  return n;
}

/**
 * A JSON error answer written by the HTTP layer itself, before any handler ran.
 *
 * @param status The status.
 * @param message The sentence.
 * @returns The answer's bytes (the connection closes after it).
 */
function refusal(status: number, message: string): Uint8Array {
  return serialize(
    status,
    { "content-type": "application/json" },
    JSON.stringify({ error: message }),
    true,
  );
}

const TOO_MANY = refusal(
  503,
  "Too many connections: faild holds the most it allows, retry in a few seconds",
);

type Phase = "head" | "idle" | "handler" | "body" | "write" | "stream" | "linger" | "closed";

/** A parsed request head, or the refusal to answer it with. */
type Head =
  | {
    ok: true;
    method: string;
    target: string;
    path: string;
    headers: Map<string, string>;
    contentLength: number;
    close: boolean;
    expectContinue: boolean;
  }
  | { ok: false; status: number; reason: HttpRefusal; message: string };

function bad(message: string, status = 400, reason: HttpRefusal = "bad_request"): Head {
  return { ok: false, status, reason, message };
}

/** Parses a request head (bytes before the blank line, without it). */
function parseHead(bytes: Uint8Array, maxBody: number): Head {
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if ((b < 0x20 && b !== 0x09 && b !== 0x0d && b !== 0x0a) || b > 0x7e) {
      return bad(
        `Invalid request head: byte 0x${b.toString(16).padStart(2, "0")} at offset ${i} ` +
          "(only printable ASCII is allowed)",
      );
    }
  }
  const text = decoder.decode(bytes);
  let eol = text.indexOf("\r\n");
  if (eol < 0) eol = text.length;
  const requestLine = eol === text.length ? text : text.slice(0, eol);
  const sp1 = requestLine.indexOf(" ");
  const sp2 = requestLine.lastIndexOf(" ");
  if (sp1 <= 0 || sp2 === sp1 || requestLine.includes("\n") || requestLine.includes("\r")) {
    return bad("Invalid request line: expected METHOD TARGET HTTP/1.1");
  }
  const method = requestLine.slice(0, sp1);
  const target = requestLine.slice(sp1 + 1, sp2);
  const version = requestLine.slice(sp2 + 1);
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") {
    if (/^HTTP\/\d\.\d$/.test(version)) {
      return bad(`Unsupported HTTP version: ${version} (faild speaks HTTP/1.1)`, 505);
    }
    return bad("Invalid request line: expected METHOD TARGET HTTP/1.1");
  }
  if (!METHOD.test(method)) {
    return bad("Invalid request line: the method must be upper-case letters");
  }
  if (target.length > MAX_TARGET_LENGTH) {
    return bad(`Request target too long: at most ${MAX_TARGET_LENGTH} bytes`, 414);
  }
  if (!target.startsWith("/") || target.includes(" ")) {
    return bad("Invalid request target: expected a path starting with /");
  }
  // Header fields, read in place: one string per name and per value.
  const headers = new Map<string, string>();
  let line = 1;
  for (let pos = eol + 2; pos < text.length; line++) {
    if (line > MAX_HEADER_FIELDS) {
      return bad(`Too many header fields: at most ${MAX_HEADER_FIELDS}`, 431, "head_too_large");
    }
    let end = text.indexOf("\r\n", pos);
    if (end < 0) end = text.length;
    const colon = text.indexOf(":", pos);
    if (colon <= pos || colon > end) {
      return bad(`Invalid header field on line ${line + 1}: expected "name: value"`);
    }
    for (let i = pos; i < end; i++) {
      const c = text.charCodeAt(i);
      if (c === 13 || c === 10) return bad("Invalid request head: lines must end with CRLF");
    }
    const name = text.slice(pos, colon);
    if (!TOKEN.test(name)) {
      return bad(`Invalid header field on line ${line + 1}: expected "name: value"`);
    }
    let from = colon + 1;
    let to = end;
    while (from < to && (text.charCodeAt(from) === 32 || text.charCodeAt(from) === 9)) from++;
    while (to > from && (text.charCodeAt(to - 1) === 32 || text.charCodeAt(to - 1) === 9)) to--;
    const key = name.toLowerCase();
    const value = text.slice(from, to);
    const previous = headers.get(key);
    if (previous !== undefined) {
      if (SINGLE_FIELDS.has(key)) return bad(`Invalid request head: repeated ${key} field`);
      headers.set(key, `${previous}, ${value}`);
    } else headers.set(key, value);
    pos = end + 2;
  }
  const host = headers.get("host");
  if (host === undefined ? version === "HTTP/1.1" : !HOST.test(host)) {
    return bad(
      host === undefined
        ? "Invalid Host header: HTTP/1.1 requires one"
        : `Invalid Host header: ${JSON.stringify(host.slice(0, 80))} is not host[:port]`,
    );
  }
  if (headers.has("transfer-encoding")) {
    return bad(
      "Length required: faild reads only bodies with a content-length, not transfer-encoding " +
        headers.get("transfer-encoding")!.slice(0, 40),
      411,
      "length_required",
    );
  }
  let contentLength = 0;
  const declared = headers.get("content-length");
  if (declared !== undefined) {
    if (!/^[0-9]{1,15}$/.test(declared)) {
      return bad(`Invalid content-length: ${JSON.stringify(declared.slice(0, 40))}`);
    }
    contentLength = Number(declared);
    if (contentLength > maxBody) {
      return bad(
        `Request body too large: ${contentLength} bytes, at most ${maxBody}`,
        413,
        "body_too_large",
      );
    }
  }
  const expect = headers.get("expect");
  if (expect !== undefined && expect.toLowerCase() !== "100-continue") {
    return bad(`Expectation failed: only 100-continue is understood`, 417);
  }
  const connection = (headers.get("connection") ?? "").toLowerCase();
  const close = version === "HTTP/1.0"
    ? !connection.includes("keep-alive")
    : connection.includes("close");
  const q = target.indexOf("?");
  return {
    ok: true,
    method,
    target,
    path: q < 0 ? target : target.slice(0, q),
    headers,
    contentLength,
    close,
    expectContinue: expect !== undefined,
  };
}

/**
 * The request a handler sees. A connection serves one request at a time, so it keeps one of these
 * and sets its fields for each request instead of making a new object with new closures.
 */
class ConnectionRequest implements HttpRequest {
  method = "";
  target = "";
  path = "";
  headers: ReadonlyMap<string, string> = new Map();
  contentLength = 0;
  readonly remote: string;
  #closed: () => Promise<void>;
  #body: () => Promise<Uint8Array>;

  constructor(remote: string, closed: () => Promise<void>, body: () => Promise<Uint8Array>) {
    this.remote = remote;
    this.#closed = closed;
    this.#body = body;
  }

  get closed(): Promise<void> {
    return this.#closed();
  }

  body(): Promise<Uint8Array> {
    return this.#body();
  }
}

/** One client connection. */
class Connection {
  readonly conn: Deno.Conn;
  readonly remote: string;
  phase: Phase = "head";
  deadline: number;
  #server: HttpServer;
  #buf = inputs.take();
  /** A read into `#buf` is pending (the buffer cannot go back to the pool). */
  #reading = false;
  #start = 0;
  #end = 0;
  #scanned = 0;
  /** Where the head last found by `#findHead` starts. */
  #headStart = 0;
  /** The current request announced a body the handler has not asked for. */
  #bodyUnread = false;
  #expectContinue = false;
  /** The request being served: one object per connection, its fields set for each request. */
  #request: ConnectionRequest;
  #closedResolvers: PromiseWithResolvers<void> | null = null;
  /** A canned answer was written by the sweeper: the handler's answer is dropped. */
  #answered = false;
  /** Close the connection after the answer being written. */
  #closeAfter = false;
  /** A write of `#out` is pending (the buffer cannot go back to the pool). */
  #writing = false;
  /** The buffer of the answer being written (from the pool when it fits). */
  #out: Uint8Array | null = null;

  constructor(server: HttpServer, conn: Deno.Conn, remote: string, now: number) {
    this.#server = server;
    this.conn = conn;
    this.remote = remote;
    this.deadline = now + server.headerTimeoutMs;
    this.#request = new ConnectionRequest(remote, () => this.closed, () => {
      if (!this.#bodyUnread) return Promise.resolve(new Uint8Array(0));
      this.#bodyUnread = false;
      return this.#readBody(this.#request.contentLength, this.#expectContinue);
    });
  }

  /** Settles when the connection is closed (made only when asked for: event streams). */
  get closed(): Promise<void> {
    if (this.#closedResolvers === null) {
      this.#closedResolvers = Promise.withResolvers<void>();
      if (this.phase === "closed") this.#closedResolvers.resolve();
    }
    return this.#closedResolvers.promise;
  }

  /**
   * Serves requests until the connection ends. Waiting for a request or for a write keeps no
   * per-request object alive (the waits are here, not in nested async calls): with many
   * connections, whatever waits survives minor collections and ends up in the old generation.
   */
  async serve(): Promise<void> {
    try {
      while (this.phase !== "closed") {
        const head = this.#findHead();
        if (head < 0) {
          if (this.#end - this.#start >= MAX_HEAD_BYTES) {
            this.#server.count("head_too_large");
            await this.#writeAll(
              this.#refusal(431, `Request head too large: at most ${MAX_HEAD_BYTES} bytes`),
            );
            await this.#linger();
            return;
          }
          this.#makeRoom();
          this.#reading = true;
          let n: number | null;
          try {
            n = await this.conn.read(
              this.#end === 0 ? this.#buf : this.#buf.subarray(this.#end),
            );
          } finally {
            this.#reading = false;
          }
          if (n === null) return;
          this.#end += n;
          if (this.phase === "idle") {
            this.phase = "head";
            this.deadline = Date.now() + this.#server.headerTimeoutMs;
          }
          continue;
        }
        let answer = this.#exchange(this.#headStart, head);
        if (answer instanceof Promise) answer = await answer;
        if (answer === null) return;
        // Written here rather than through #writeAll: no async call per answer.
        this.phase = "write";
        this.deadline = Date.now() + this.#server.writeTimeoutMs;
        this.#writing = true;
        try {
          let off = await this.conn.write(answer);
          while (off < answer.length) off += await this.conn.write(answer.subarray(off));
        } finally {
          this.#writing = false;
        }
        this.#releaseOut();
        if (this.#closeAfter) {
          await this.#linger();
          return;
        }
        this.#startNext();
      }
    } catch {
      // Reset by the peer, closed by the sweeper or by shutdown: nothing to answer.
    } finally {
      this.close();
    }
  }

  /**
   * Parses the head found in the buffer, runs the handler, and returns the answer to write (in
   * an output buffer), or `null` when the connection is done (refused, answered by a stream, or
   * closed meanwhile). Synchronous when the handler is.
   */
  #exchange(from: number, to: number): Uint8Array | null | Promise<Uint8Array | null> {
    const head = parseHead(this.#buf.subarray(from, to), this.#server.maxBodyBytes);
    if (!head.ok) {
      this.#server.count(head.reason);
      return this.#refusal(head.status, head.message);
    }
    this.phase = "handler";
    this.#bodyUnread = head.contentLength > 0;
    this.#expectContinue = head.expectContinue;
    const request = this.#request;
    request.method = head.method;
    request.target = head.target;
    request.path = head.path;
    request.headers = head.headers;
    request.contentLength = head.contentLength;
    const wantsClose = head.close;
    const headOnly = head.method === "HEAD";
    let response: HttpResponse | Promise<HttpResponse>;
    try {
      response = this.#server.handler(request);
    } catch (error) {
      response = this.#internalError(error);
    }
    if (response instanceof Promise) {
      return response.then(
        (r) => this.#answerBytes(r, wantsClose, headOnly),
        (error) => this.#answerBytes(this.#internalError(error), wantsClose, headOnly),
      );
    }
    return this.#answerBytes(response, wantsClose, headOnly);
  }

  #internalError(error: unknown): HttpResponse {
    this.#server.throttle.warn("handler", "request handler failed", { error: String(error) });
    return {
      status: 500,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ error: "Internal error: see the faild log" }),
      close: true,
    };
  }

  /** The bytes of a handler's answer, or `null` (streamed, or the connection is gone). */
  #answerBytes(
    response: HttpResponse,
    wantsClose: boolean,
    headOnly: boolean,
  ): Uint8Array | null | Promise<null> {
    if (this.#answered || (this.phase as Phase) === "closed") return null;
    if (typeof response.body !== "string") {
      return this.#stream(response.status, response.headers, response.body).then(() => null);
    }
    // A body the handler did not read is never drained: the connection closes instead.
    this.#closeAfter = wantsClose || response.close === true || this.#bodyUnread ||
      this.#server.closing;
    return this.#serialize(
      response.status,
      response.headers,
      headOnly ? "" : response.body,
      headOnly ? utf8Length(response.body) : -1,
    );
  }

  /** Writes an answer into an output buffer, the head byte by byte (no string is built). */
  #serialize(
    status: number,
    headers: Record<string, string>,
    body: string,
    length: number,
  ): Uint8Array {
    const bodyBytes = utf8Length(body);
    let headBytes = 64;
    for (const name in headers) headBytes += name.length + headers[name]!.length + 4;
    const need = headBytes + bodyBytes;
    const out = need <= BUFFER_SIZE ? outputs.take() : new Uint8Array(need);
    this.#out = out;
    let n = writeAscii(out, 0, STATUS_LINES.get(status) ?? `HTTP/1.1 ${status} Unknown\r\n`);
    for (const name in headers) {
      n = writeAscii(out, n, name);
      out[n++] = 58; // ":"
      out[n++] = 32;
      n = writeAscii(out, n, headers[name]!);
      out[n++] = 13;
      out[n++] = 10;
    }
    n = writeAscii(out, n, "content-length: ");
    n = writeAscii(out, n, String(length < 0 ? bodyBytes : length));
    n = writeAscii(out, n, this.#closeAfter ? "\r\nconnection: close\r\n\r\n" : "\r\n\r\n");
    if (body.length === bodyBytes) n = writeAscii(out, n, body);
    else n += encoder.encodeInto(body, out.subarray(n)).written;
    return out.subarray(0, n);
  }

  /** A JSON refusal written by the HTTP layer itself (the connection closes after it). */
  #refusal(status: number, message: string): Uint8Array {
    this.#closeAfter = true;
    return this.#serialize(
      status,
      { "content-type": "application/json" },
      JSON.stringify({ error: message }),
      -1,
    );
  }

  /** The answer is written: its buffer goes back to the pool. */
  #releaseOut(): void {
    if (this.#out !== null) outputs.give(this.#out);
    this.#out = null;
  }

  /** Called by the sweeper when the deadline of the current phase has passed. */
  expire(): void {
    switch (this.phase) {
      case "head":
        this.#server.count("header_timeout");
        this.#answerAndClose(
          this.#refusal(
            408,
            `Request head too slow: not received within ${this.#server.headerTimeoutMs} ms`,
          ),
        );
        return;
      case "body":
        this.#server.count("body_timeout");
        this.#answerAndClose(
          this.#refusal(
            408,
            `Request body too slow: not received within ${this.#server.bodyTimeoutMs} ms`,
          ),
        );
        return;
      case "write":
        this.#server.count("write_timeout");
        this.close();
        return;
      case "idle":
      case "linger":
        this.close();
        return;
    }
  }

  /** Closes the connection now (idempotent). */
  close(): void {
    if (this.phase === "closed") return;
    this.phase = "closed";
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
    this.#server.release(this);
    this.#closedResolvers?.resolve();
    // The buffers go back to the pool unless a read into the input one is still pending.
    if (!this.#reading) inputs.give(this.#buf);
    this.#buf = DISCARD;
    if (!this.#writing) this.#releaseOut();
  }

  /** Closes it if it is between requests (for shutdown). */
  closeIfIdle(): void {
    if (this.phase === "idle" || this.phase === "head") this.close();
  }

  #answerAndClose(bytes: Uint8Array): void {
    this.#answered = true;
    this.phase = "write";
    this.deadline = Date.now() + 1000;
    this.#writing = true;
    this.conn.write(bytes).catch(() => {}).finally(() => {
      this.#writing = false;
      this.close();
      this.#releaseOut();
    });
  }

  #startNext(): void {
    // Keep the buffer small between requests.
    if (this.#start === this.#end) {
      this.#start = this.#end = this.#scanned = 0;
      if (this.#buf.length > BUFFER_SIZE) this.#buf = inputs.take();
      this.phase = "idle";
      this.deadline = Date.now() + this.#server.idleTimeoutMs;
    } else {
      this.phase = "head";
      this.deadline = Date.now() + this.#server.headerTimeoutMs;
    }
  }

  /**
   * Looks for the end of a head in what was read: returns the end of the head (its start is
   * `#headStart`, and `#start` moves past the blank line), or -1 when it is not all there yet.
   * The blank line is CRLF CRLF; LF LF is found too, and refused by the parser.
   */
  #findHead(): number {
    const b = this.#buf;
    let i = Math.max(this.#start, this.#scanned);
    for (; i < this.#end; i++) {
      if (b[i] !== 10) continue;
      if (i + 1 >= this.#end) break;
      let next: number;
      if (b[i + 1] === 10) next = i + 2;
      else if (b[i + 1] === 13) {
        if (i + 2 >= this.#end) break;
        if (b[i + 2] !== 10) continue;
        next = i + 3;
      } else continue;
      this.#headStart = this.#start;
      this.#start = this.#scanned = next;
      return i > this.#headStart && b[i - 1] === 13 ? i - 1 : i;
    }
    this.#scanned = i;
    return -1;
  }

  /** Makes room in the input buffer before a read (moving the unread bytes, or growing it). */
  #makeRoom(): void {
    if (this.#start > 0 && (this.#end === this.#buf.length || this.#start === this.#end)) {
      this.#buf.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#scanned = Math.max(0, this.#scanned - this.#start);
      this.#start = 0;
    }
    if (this.#end === this.#buf.length) {
      const bigger = new Uint8Array(Math.min(this.#buf.length * 4, MAX_HEAD_BYTES + 4));
      bigger.set(this.#buf.subarray(0, this.#end));
      this.#buf = bigger;
    }
  }

  /**
   * Before closing after an answer: ends our side and reads (and drops) what the client still
   * sends for a moment, so that it reads the answer rather than a reset. Never more than
   * {@linkcode LINGER_BYTES} bytes or about a second.
   */
  async #linger(): Promise<void> {
    this.phase = "linger";
    this.deadline = Date.now() + LINGER_MS;
    try {
      await this.conn.closeWrite();
      let n = 0;
      while (n < LINGER_BYTES) {
        const r = await this.conn.read(DISCARD);
        if (r === null) break;
        n += r;
      }
    } catch {
      // Reset or closed by the sweeper.
    }
  }

  async #readBody(length: number, expectContinue: boolean): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    const have = Math.min(length, this.#end - this.#start);
    out.set(this.#buf.subarray(this.#start, this.#start + have));
    this.#start += have;
    let got = have;
    this.phase = "body";
    this.deadline = Date.now() + this.#server.bodyTimeoutMs;
    try {
      if (got < length && expectContinue) {
        await this.conn.write(encoder.encode("HTTP/1.1 100 Continue\r\n\r\n"));
      }
      while (got < length) {
        const n = await this.conn.read(out.subarray(got));
        if (n === null) {
          throw new HttpBodyError(
            400,
            `Request body incomplete: the connection ended after ${got} of ${length} bytes`,
          );
        }
        got += n;
      }
    } catch (error) {
      if (error instanceof HttpBodyError) throw error;
      if (this.#answered) {
        throw new HttpBodyError(
          408,
          `Request body too slow: not received within ${this.#server.bodyTimeoutMs} ms`,
        );
      }
      throw new HttpBodyError(400, `Request body incomplete: ${(error as Error).message}`);
    }
    this.phase = "handler";
    return out;
  }

  /** Writes bytes (an answer in `#out` goes back to the pool once written). */
  async #writeAll(bytes: Uint8Array): Promise<void> {
    this.phase = "write";
    this.deadline = Date.now() + this.#server.writeTimeoutMs;
    this.#writing = true;
    try {
      let off = await this.conn.write(bytes);
      while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
    } finally {
      this.#writing = false;
    }
    this.#releaseOut();
  }

  async #stream(
    status: number,
    headers: Record<string, string>,
    body: ReadableStream<Uint8Array>,
  ): Promise<void> {
    let head = `HTTP/1.1 ${status} ${REASONS[status] ?? "Unknown"}\r\n`;
    for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
    head += "transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    const reader = body.getReader();
    // Anything the client sends now is discarded; its end means it went away.
    const watch = (async () => {
      try {
        while ((await this.conn.read(DISCARD)) !== null) { /* discard */ }
      } catch {
        // Closed.
      }
      reader.cancel().catch(() => {});
    })();
    try {
      await this.#writeAll(encoder.encode(head));
      this.phase = "stream";
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        if (value.byteLength === 0) continue;
        const prefix = encoder.encode(`${value.byteLength.toString(16)}\r\n`);
        const chunk = new Uint8Array(prefix.length + value.byteLength + 2);
        chunk.set(prefix);
        chunk.set(value, prefix.length);
        chunk.set([13, 10], prefix.length + value.byteLength);
        await this.#writeAll(chunk);
        this.phase = "stream";
      }
      await this.#writeAll(encoder.encode("0\r\n\r\n"));
    } finally {
      reader.cancel().catch(() => {});
      this.close();
      await watch;
    }
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
