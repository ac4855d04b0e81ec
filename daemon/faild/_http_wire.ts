/**
 * The wire format of faild's HTTP/1.1 server (`http.ts`): the request head parser, the
 * serialiser of answers and canned refusals, and the types a handler sees. No I/O here.
 *
 * @module
 */

/** Largest request head (request line and header fields), in bytes. */
export const MAX_HEAD_BYTES = 16 * 1024;
/** Most header fields in a request. */
export const MAX_HEADER_FIELDS = 100;
/** Longest request target, in bytes. */
export const MAX_TARGET_LENGTH = 2048;

export const encoder = new TextEncoder();
export const decoder = new TextDecoder();

export const REASONS: Record<number, string> = {
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

/** The bytes of a complete answer with a text body. */
export function serialize(
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
export const STATUS_LINES = new Map(
  Object.entries(REASONS).map(([code, reason]) => [Number(code), `HTTP/1.1 ${code} ${reason}\r\n`]),
);

/**
 * Copies an ASCII string (header names and values are checked to be ASCII, or made of hex
 * digits and numbers) into a buffer; a character beyond ASCII is written as `?`.
 */
export function writeAscii(out: Uint8Array, at: number, text: string): number {
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
export function refusal(status: number, message: string): Uint8Array {
  return serialize(
    status,
    { "content-type": "application/json" },
    JSON.stringify({ error: message }),
    true,
  );
}

export const TOO_MANY = refusal(
  503,
  "Too many connections: faild holds the most it allows, retry in a few seconds",
);

/** A parsed request head, or the refusal to answer it with. */
export type Head =
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
export function parseHead(bytes: Uint8Array, maxBody: number): Head {
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
