/**
 * One client connection of faild's HTTP/1.1 server (`http.ts`): reads heads into pooled buffers,
 * runs the handler, reads a body only when asked, writes the answer, lingers before a close.
 *
 * @module
 */
import type { HttpServer } from "./http.ts";
import {
  encoder,
  HttpBodyError,
  type HttpRequest,
  type HttpResponse,
  MAX_HEAD_BYTES,
  parseHead,
  REASONS,
  STATUS_LINES,
  utf8Length,
  writeAscii,
} from "./_http_wire.ts";

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

type Phase = "head" | "idle" | "handler" | "body" | "write" | "stream" | "linger" | "closed";

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
export class Connection {
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
