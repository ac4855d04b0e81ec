/**
 * HTTP/1.1 spoken by hand over TCP, for the attacks of the faild fuzz harness and the hostile
 * tests: requests fetch() would refuse to send (bad Host, dot segments, chunked bodies sent a
 * byte at a time, lies about lengths) and answers read as faild wrote them.
 *
 * @module
 */
import { bodyDigest, CONTENT_DIGEST_HEADER, type NonceSequence, signRequest } from "../lib/sign.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One answer as read off the wire. */
export interface RawAnswer {
  /** The status code. */
  status: number;
  /** The head (status line and header fields), without the final blank line. */
  head: string;
  /** Header fields, names in lower case. */
  headers: Map<string, string>;
  /** The body as text. */
  body: string;
}

/** Thrown when no answer arrives in time. */
export class RawTimeoutError extends Error {
  constructor(ms: number) {
    super(`No answer within ${ms} ms`);
    this.name = "RawTimeoutError";
  }
}

/**
 * One TCP connection speaking HTTP/1.1 by hand.
 *
 * @example
 * ```ts ignore
 * import { RawConnection } from "./_raw_http.ts";
 * const c = await RawConnection.open(7100);
 * await c.write("GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n");
 * console.log((await c.read())?.status);
 * c.close();
 * ```
 */
export class RawConnection {
  #conn: Deno.TcpConn;
  #buf = new Uint8Array(16384);
  #len = 0;
  #closed = false;
  #eof = false;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /**
   * Connects to a loopback port.
   *
   * @param port The port.
   * @param hostname The address (default 127.0.0.1).
   * @returns The connection.
   */
  static async open(port: number, hostname = "127.0.0.1"): Promise<RawConnection> {
    const conn = await Deno.connect({ hostname, port });
    conn.setNoDelay(true);
    return new RawConnection(conn);
  }

  /** Whether the peer closed its side (a read returned end of stream) or the write failed. */
  get peerClosed(): boolean {
    return this.#eof;
  }

  /**
   * Writes bytes or text.
   *
   * @param data What to send.
   * @returns `false` when the peer has closed the connection (reset or broken pipe).
   */
  async write(data: Uint8Array | string): Promise<boolean> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    try {
      let off = 0;
      while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
      return true;
    } catch {
      this.#eof = true;
      return false;
    }
  }

  /**
   * Reads one answer (a body framed by content-length, chunked, or by the end of the stream).
   *
   * @param timeoutMs How long to wait (default 5000).
   * @param headRequest The answer is to a HEAD request: it has no body, whatever its length says.
   * @returns The answer, or `null` when the peer closed the connection before answering.
   * @throws {RawTimeoutError} When nothing complete arrives in time.
   */
  async read(timeoutMs = 5000, headRequest = false): Promise<RawAnswer | null> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.close();
    }, timeoutMs);
    const expired = () => timedOut;
    try {
      let headEnd: number;
      while ((headEnd = this.#find()) < 0) {
        if (!(await this.#fill())) {
          if (expired()) throw new RawTimeoutError(timeoutMs);
          return null;
        }
      }
      const head = decoder.decode(this.#buf.subarray(0, headEnd));
      const lines = head.split("\r\n");
      const status = Number(lines[0]!.slice(9, 12));
      const headers = new Map<string, string>();
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(":");
        if (colon > 0) {
          headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
        }
      }
      this.#consume(headEnd + 4);
      let body: Uint8Array;
      const length = headers.get("content-length");
      if (headRequest || status === 100 || status === 101 || status === 204 || status === 304) {
        body = new Uint8Array(0);
      } else if (length !== undefined) {
        const n = Number(length);
        while (this.#len < n) {
          if (!(await this.#fill())) {
            if (expired()) throw new RawTimeoutError(timeoutMs);
            break;
          }
        }
        body = this.#take(Math.min(n, this.#len));
      } else if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
        const parts: Uint8Array[] = [];
        while (true) {
          let lineEnd: number;
          while ((lineEnd = this.#findLine()) < 0) {
            if (!(await this.#fill())) throw new Error("Connection closed inside a chunked body");
          }
          const size = parseInt(decoder.decode(this.#buf.subarray(0, lineEnd)), 16);
          this.#consume(lineEnd + 2);
          while (this.#len < size + 2) {
            if (!(await this.#fill())) throw new Error("Connection closed inside a chunk");
          }
          parts.push(this.#take(size));
          this.#consume(2);
          if (size === 0) break;
        }
        body = concat(parts);
      } else {
        while (await this.#fill()) { /* until the end of the stream */ }
        body = this.#take(this.#len);
      }
      return { status, head, headers, body: decoder.decode(body) };
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Reads only the head of an answer (for a stream that does not end), and returns its status.
   *
   * @param timeoutMs How long to wait.
   * @returns The status, or `null` when the peer closed the connection first.
   */
  async readHead(timeoutMs = 5000): Promise<number | null> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.close();
    }, timeoutMs);
    try {
      while (this.#find() < 0) {
        if (!(await this.#fill())) {
          if (timedOut) throw new RawTimeoutError(timeoutMs);
          return null;
        }
      }
      return Number(decoder.decode(this.#buf.subarray(9, 12)));
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends our side of the connection (the peer reads end of stream). */
  async closeWrite(): Promise<void> {
    try {
      await this.#conn.closeWrite();
    } catch {
      // Already closed.
    }
  }

  /**
   * Waits until the peer closes the connection, discarding what it sends.
   *
   * @param timeoutMs How long to wait.
   * @returns `true` if the peer closed it in time.
   */
  async waitClosed(timeoutMs: number): Promise<boolean> {
    const timer = setTimeout(() => this.close(), timeoutMs);
    try {
      while (await this.#fill()) this.#len = 0;
      return this.#eof;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the connection (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }

  #find(): number {
    const b = this.#buf;
    for (let i = 3; i < this.#len; i++) {
      if (b[i] === 10 && b[i - 1] === 13 && b[i - 2] === 10 && b[i - 3] === 13) return i - 3;
    }
    return -1;
  }

  #findLine(): number {
    for (let i = 1; i < this.#len; i++) {
      if (this.#buf[i] === 10 && this.#buf[i - 1] === 13) return i - 1;
    }
    return -1;
  }

  #consume(n: number): void {
    this.#buf.copyWithin(0, n, this.#len);
    this.#len -= n;
  }

  #take(n: number): Uint8Array {
    const out = this.#buf.slice(0, n);
    this.#consume(n);
    return out;
  }

  async #fill(): Promise<boolean> {
    if (this.#closed) return false;
    if (this.#len === this.#buf.length) {
      const bigger = new Uint8Array(this.#buf.length * 2);
      bigger.set(this.#buf);
      this.#buf = bigger;
    }
    try {
      const n = await this.#conn.read(this.#buf.subarray(this.#len));
      if (n === null) {
        this.#eof = true;
        return false;
      }
      this.#len += n;
      return true;
    } catch {
      this.#eof = !this.#closed;
      return false;
    }
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Options of {@linkcode signedRequest}. */
export interface SignedRequestOptions {
  /** The body (default none). */
  body?: string;
  /** Header fields to add (lines without CRLF), e.g. `connection: close`. */
  headers?: string[];
  /** The clock to sign with (default now). */
  now?: number;
  /** Where nonces come from (default random). */
  nonces?: NonceSequence;
  /** Send the body digest header (default true, as FaildClient does). */
  digestHeader?: boolean;
  /** The Host header value (default `faild`). */
  host?: string;
  /** Sign this path instead of the target sent (a lie the server must catch). */
  signedTarget?: string;
}

/**
 * The bytes of one request signed with a community, the target signed exactly as given.
 *
 * @param key The community, or `null` for an unsigned request.
 * @param method The method.
 * @param target The request target as sent (path and query, dot segments and all).
 * @param options Body, extra header fields, clock and nonces.
 * @returns The request text and its nonce (`""` unsigned).
 */
export function signedRequest(
  key: string | null,
  method: string,
  target: string,
  options: SignedRequestOptions = {},
): { text: string; nonce: string } {
  const body = options.body ?? "";
  const lines = [`${method} ${target} HTTP/1.1`, `host: ${options.host ?? "faild"}`];
  let nonce = "";
  if (key !== null) {
    const s = signRequest(key, {
      method,
      path: options.signedTarget ?? target,
      body,
      ...(options.now !== undefined ? { now: options.now } : {}),
      ...(options.nonces ? { nonces: options.nonces } : {}),
    });
    lines.push(`authorization: ${s.header}`);
    nonce = s.nonce;
    if (options.digestHeader !== false && body !== "") {
      lines.push(`${CONTENT_DIGEST_HEADER}: ${bodyDigest(body)}`);
    }
  }
  if (body !== "") {
    lines.push("content-type: application/json", `content-length: ${encoder.encode(body).length}`);
  }
  lines.push(...(options.headers ?? []));
  return { text: lines.join("\r\n") + "\r\n\r\n" + body, nonce };
}

/**
 * Sends one request on a new connection and reads the answer.
 *
 * @param port faild's port.
 * @param data The request bytes.
 * @param timeoutMs How long to wait for the answer.
 * @returns The answer, or `null` if faild closed the connection without one.
 */
export async function exchange(
  port: number,
  data: string | Uint8Array,
  timeoutMs = 5000,
): Promise<RawAnswer | null> {
  const c = await RawConnection.open(port);
  try {
    await c.write(data);
    return await c.read(timeoutMs);
  } finally {
    c.close();
  }
}
