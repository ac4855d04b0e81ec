/**
 * A minimal HTTP/1.1 client for the `http` check: one kept-alive connection per check, the
 * request's bytes built once, one read buffer reused for every answer.
 *
 * Why not `fetch()`: at hundreds of probes a second each `fetch()` allocates a Request, Headers,
 * a Response and a ReadableStream with their promises, and V8's young generation grows to hold
 * them (500 checks at 1 s: 156 MiB RSS with fetch, see "hc" in docs/performance.md). A probe
 * needs far less: send a GET or HEAD, read the status, keep at most {@linkcode MAX_BODY_BYTES}
 * of the body. Everything read is bounded (head size, chunk-size line, body), and `signal`
 * closes the connection at once.
 *
 * Not spoken here: redirects (never followed, as with `redirect: "manual"`), compression (none
 * is asked for), proxies (`HTTP_PROXY` is not read: a health check talks to its target), HTTP/2.
 *
 * @module
 */

/** Most bytes of an answer's head (status line and header fields). */
export const MAX_HEAD_BYTES = 64 * 1024;

/** Longest chunk-size line of a chunked body, extensions included. */
const MAX_CHUNK_LINE = 1024;

const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");

/** An answer as the check needs it. */
export interface Http1Answer {
  /** The status code. */
  status: number;
  /** The first bytes of the body (at most the limit asked for), or `null` when not asked for. */
  body: Uint8Array | null;
}

/** What a request sends. */
export interface Http1RequestOptions {
  /** `GET` or `HEAD`. */
  method: string;
  /** Extra header fields, sent as given. */
  headers?: Record<string, string>;
}

/** The server broke the protocol (a malformed or oversized answer). */
export class Http1ProtocolError extends Error {
  /**
   * Creates the error.
   *
   * @param message What was wrong.
   */
  constructor(message: string) {
    super(message);
    this.name = "Http1ProtocolError";
  }
}

/** The connection ended before the answer was complete. */
class ClosedError extends Error {
  /** Whether any byte of the answer had arrived. */
  readonly partial: boolean;
  constructor(partial: boolean) {
    super(
      partial
        ? "Cannot read the answer: the server closed the connection in the middle of it"
        : "Cannot read the answer: the server closed the connection without answering",
    );
    this.name = "ClosedError";
    this.partial = partial;
  }
}

/**
 * One target URL, asked over one kept-alive HTTP/1.1 connection, one request at a time.
 *
 * @example
 * ```ts ignore
 * import { Http1Client } from "./_http1.ts";
 * const c = new Http1Client(new URL("http://127.0.0.1:8080/health"), { method: "GET" });
 * const a = await c.request(AbortSignal.timeout(1000), 1 << 20);
 * console.log(a.status);
 * c.close();
 * ```
 */
export class Http1Client {
  #hostname: string;
  #port: number;
  #head: Uint8Array;
  #isHead: boolean;
  #conn: Deno.Conn | null = null;
  #buf = new Uint8Array(2048);
  /** Unread bytes are `#buf[#start, #end)`. */
  #start = 0;
  #end = 0;
  /** Whether a byte of the current answer has been read. */
  #gotAny = false;
  #busy = false;

  /**
   * Prepares the request; no connection is opened before the first {@linkcode request}.
   *
   * @param url An `http:` URL.
   * @param options Method and header fields.
   */
  constructor(url: URL, options: Http1RequestOptions) {
    if (url.protocol !== "http:") {
      throw new TypeError(`Cannot request ${url}: only http:// URLs are spoken here`);
    }
    this.#hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
    this.#port = url.port === "" ? 80 : Number(url.port);
    this.#isHead = options.method === "HEAD";
    const lines = [`${options.method} ${url.pathname}${url.search} HTTP/1.1`, `host: ${url.host}`];
    for (const [k, v] of Object.entries(options.headers ?? {})) lines.push(`${k}: ${v}`);
    lines.push("accept: */*", "", "");
    this.#head = encoder.encode(lines.join("\r\n"));
  }

  /**
   * Sends the request and reads the answer. A kept-alive connection the server has closed
   * meanwhile is replaced once, when not a byte of the answer had come on it.
   *
   * @param signal Aborts the request (the connection is closed).
   * @param maxBody How many body bytes to keep; 0 reads and discards the body.
   * @returns The status and the kept body bytes (`null` when `maxBody` is 0).
   * @throws {DOMException} `AbortError` (or the signal's reason) when aborted.
   * @throws {Http1ProtocolError} When the answer is malformed or too large.
   */
  async request(signal: AbortSignal, maxBody: number): Promise<Http1Answer> {
    if (this.#busy) throw new Error("Cannot send the request: one is already in progress");
    signal.throwIfAborted();
    this.#busy = true;
    const onAbort = (): void => this.#drop();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const reused = this.#conn !== null;
      try {
        return await this.#exchange(signal, maxBody);
      } catch (e) {
        if (signal.aborted) throw e;
        const stale = reused && (e instanceof ClosedError ? !e.partial : isResetError(e)) &&
          !this.#gotAny;
        if (!stale) throw e;
        this.#drop();
        return await this.#exchange(signal, maxBody);
      }
    } catch (e) {
      this.#drop();
      signal.throwIfAborted();
      throw e;
    } finally {
      signal.removeEventListener("abort", onAbort);
      this.#busy = false;
    }
  }

  /** Closes the connection (a later request opens a new one). */
  close(): void {
    this.#drop();
  }

  #drop(): void {
    const c = this.#conn;
    this.#conn = null;
    this.#start = this.#end = 0;
    if (c) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
  }

  async #exchange(signal: AbortSignal, maxBody: number): Promise<Http1Answer> {
    this.#gotAny = false;
    if (this.#conn === null) {
      this.#start = this.#end = 0;
      const conn = await Deno.connect({ hostname: this.#hostname, port: this.#port, signal });
      if (signal.aborted) {
        conn.close();
        signal.throwIfAborted();
      }
      this.#conn = conn;
    }
    const conn = this.#conn;
    let off = 0;
    while (off < this.#head.length) off += await conn.write(this.#head.subarray(off));
    let head = await this.#readHead();
    // 1xx answers (100 Continue, 103 Early Hints) precede the real one.
    while (head.status >= 100 && head.status < 200) {
      if (head.status === 101) throw new Http1ProtocolError("The server switched protocols");
      head = await this.#readHead();
    }
    const noBody = this.#isHead || head.status === 204 || head.status === 304;
    let body: Uint8Array | null = null;
    let reusable = head.keepAlive;
    if (!noBody) {
      const sink = new BodySink(maxBody);
      if (head.chunked) await this.#readChunked(sink);
      else if (head.length !== null) await this.#readLength(head.length, sink);
      else {
        await this.#readToEnd(sink);
        reusable = false;
      }
      if (sink.overflowed) reusable = false;
      body = maxBody > 0 ? sink.bytes() : null;
    }
    if (!reusable || this.#start !== this.#end) this.#drop();
    return { status: head.status, body };
  }

  /** Reads more bytes into the buffer; returns false at the end of the stream. */
  async #fill(): Promise<boolean> {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    else if (this.#end === this.#buf.length) {
      if (this.#start === 0) {
        const bigger = new Uint8Array(this.#buf.length * 2);
        bigger.set(this.#buf);
        this.#buf = bigger;
      } else {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
    }
    const conn = this.#conn;
    if (conn === null) return false;
    const n = await conn.read(this.#buf.subarray(this.#end));
    if (n === null) return false;
    this.#end += n;
    this.#gotAny = true;
    return true;
  }

  async #readHead(): Promise<{
    status: number;
    length: number | null;
    chunked: boolean;
    keepAlive: boolean;
  }> {
    // Bytes after #start already searched (#fill may move them to the buffer's start).
    let scanned = 0;
    while (true) {
      const from = this.#start + Math.max(0, scanned - 3);
      const at = indexOfCrlfCrlf(this.#buf, from, this.#end);
      if (at >= 0) {
        const text = latin1.decode(this.#buf.subarray(this.#start, at));
        this.#start = at + 4;
        return parseHead(text);
      }
      scanned = this.#end - this.#start;
      if (this.#end - this.#start >= MAX_HEAD_BYTES) {
        throw new Http1ProtocolError(`The answer's head is longer than ${MAX_HEAD_BYTES} bytes`);
      }
      if (!(await this.#fill())) throw new ClosedError(this.#gotAny);
    }
  }

  async #readLength(length: number, sink: BodySink): Promise<void> {
    let left = length;
    while (left > 0) {
      if (this.#start === this.#end && !(await this.#fill())) throw new ClosedError(true);
      const n = Math.min(left, this.#end - this.#start);
      sink.push(this.#buf.subarray(this.#start, this.#start + n));
      this.#start += n;
      left -= n;
      if (sink.overflowed) return;
    }
  }

  async #readToEnd(sink: BodySink): Promise<void> {
    while (true) {
      if (this.#start < this.#end) {
        sink.push(this.#buf.subarray(this.#start, this.#end));
        this.#start = this.#end;
        if (sink.overflowed) return;
      }
      if (!(await this.#fill())) return;
    }
  }

  async #readLine(): Promise<string> {
    while (true) {
      const at = this.#buf.subarray(this.#start, this.#end).indexOf(10);
      if (at >= 0) {
        const line = latin1.decode(this.#buf.subarray(this.#start, this.#start + at));
        this.#start += at + 1;
        return line.endsWith("\r") ? line.slice(0, -1) : line;
      }
      if (this.#end - this.#start > MAX_CHUNK_LINE) {
        throw new Http1ProtocolError(`A chunk-size line is longer than ${MAX_CHUNK_LINE} bytes`);
      }
      if (!(await this.#fill())) throw new ClosedError(true);
    }
  }

  async #readChunked(sink: BodySink): Promise<void> {
    while (true) {
      const line = await this.#readLine();
      const m = /^([0-9A-Fa-f]{1,8})[ \t]*(;.*)?$/.exec(line);
      if (!m) throw new Http1ProtocolError(`"${line.slice(0, 40)}" is not a chunk size`);
      const size = parseInt(m[1]!, 16);
      if (size === 0) {
        // Trailer fields, then the blank line that ends the message.
        for (let i = 0; (await this.#readLine()) !== ""; i++) {
          if (i >= 100) throw new Http1ProtocolError("The answer has more than 100 trailers");
        }
        return;
      }
      await this.#readLength(size, sink);
      if (sink.overflowed) return;
      if ((await this.#readLine()) !== "") {
        throw new Http1ProtocolError("A chunk is longer than its size says");
      }
    }
  }
}

/** Keeps the first `limit` bytes of a body; notes when more came. */
class BodySink {
  #limit: number;
  #chunks: Uint8Array[] = [];
  #size = 0;
  overflowed = false;
  constructor(limit: number) {
    this.#limit = limit;
  }
  push(bytes: Uint8Array): void {
    const keep = Math.min(bytes.length, this.#limit - this.#size);
    if (keep > 0) this.#chunks.push(bytes.slice(0, keep));
    this.#size += bytes.length;
    // A discarded body (limit 0) is read up to MAX_DISCARD_BYTES to keep the connection.
    if (this.#size > (this.#limit > 0 ? this.#limit : MAX_DISCARD_BYTES)) this.overflowed = true;
  }
  bytes(): Uint8Array {
    if (this.#chunks.length === 1) return this.#chunks[0]!;
    const out = new Uint8Array(Math.min(this.#size, this.#limit));
    let off = 0;
    for (const c of this.#chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }
}

/** Most bytes of a body read and thrown away to keep the connection (beyond: it is closed). */
const MAX_DISCARD_BYTES = 64 * 1024;

function indexOfCrlfCrlf(buf: Uint8Array, from: number, to: number): number {
  for (let i = from; i + 3 < to; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

function parseHead(text: string): {
  status: number;
  length: number | null;
  chunked: boolean;
  keepAlive: boolean;
} {
  const lines = text.split("\r\n");
  const m = /^HTTP\/1\.([01]) ([1-9][0-9][0-9])(?: |$)/.exec(lines[0] ?? "");
  if (!m) {
    throw new Http1ProtocolError(
      `"${(lines[0] ?? "").slice(0, 40)}" is not an HTTP/1.x status line`,
    );
  }
  let length: number | null = null;
  let chunked = false;
  let keepAlive = m[1] === "1";
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Http1ProtocolError(`"${line.slice(0, 40)}" is not a header field`);
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === "content-length") {
      if (!/^[0-9]{1,15}$/.test(value) || (length !== null && length !== Number(value))) {
        throw new Http1ProtocolError(`"${value.slice(0, 40)}" is not a valid content-length`);
      }
      length = Number(value);
    } else if (name === "transfer-encoding") {
      const codings = value.toLowerCase().split(",").map((s) => s.trim());
      if (codings.at(-1) !== "chunked") {
        throw new Http1ProtocolError(`Transfer-encoding "${value.slice(0, 40)}" is not understood`);
      }
      chunked = true;
    } else if (name === "connection") {
      const tokens = value.toLowerCase().split(",").map((s) => s.trim());
      if (tokens.includes("close")) keepAlive = false;
      else if (tokens.includes("keep-alive")) keepAlive = true;
    }
  }
  // Chunked framing wins over a content-length (RFC 9112, 6.3), but such an answer is suspect.
  if (chunked && length !== null) {
    length = null;
    keepAlive = false;
  }
  return { status: Number(m[2]), length, chunked, keepAlive };
}

function isResetError(e: unknown): boolean {
  return e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BrokenPipe ||
    e instanceof Deno.errors.ConnectionAborted;
}
