/**
 * Request and response signing of the failover protocol (see `docs/protocol.md`, "Signing").
 *
 * A community (the shared secret of the original's community file) never crosses the network.
 * A client sends its key id (derived from the community by a one-way hash) and an HMAC-SHA256
 * over the method, path, body digest, timestamp and a fresh nonce. The server answers with an
 * HMAC over the request's nonce, the status and the response body digest, so a client also knows
 * the answer came from a holder of the same community and was not replayed.
 *
 * @module
 */
import { constantTimeEqual, HmacKey, sha256Hex } from "./hmac.ts";

export { HmacKey } from "./hmac.ts";

/** Name of the authorization scheme in the `Authorization` header. */
export const AUTH_SCHEME = "FAILOVER-HMAC-SHA256";

/** Response header carrying the server's signature. */
export const RESPONSE_SIGNATURE_HEADER = "x-failover-signature";

/**
 * Request header carrying {@linkcode bodyDigest} of the body, sent with every signed request that
 * has a body: the signature covers the digest, so faild verifies the whole signature before it
 * reads a byte of the body, then checks the body against the digest.
 */
export const CONTENT_DIGEST_HEADER = "x-failover-content-sha256";

/** Default accepted clock difference between client and server, in ms. */
export const DEFAULT_MAX_SKEW_MS = 30_000;

/** The parts of a parsed `Authorization` header. */
export interface SignatureParts {
  /** Key id: {@linkcode keyId} of the community. */
  keyId: string;
  /** Client timestamp, ms since the epoch. */
  ts: number;
  /** 32 hex characters, fresh for every request. */
  nonce: string;
  /** 64 hex characters of HMAC-SHA256. */
  sig: string;
}

/**
 * Derives the public key id of a community: the first 16 hex digits of
 * `SHA-256("failover-key-id:" + community)`.
 *
 * @param community The shared secret.
 * @returns A 16-character lowercase hex id, safe to send in clear.
 *
 * @example
 * ```ts
 * import { keyId } from "./sign.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(keyId("s3cret-community").length, 16);
 * ```
 */
export function keyId(community: string): string {
  return sha256Hex("failover-key-id:" + community).slice(0, 16);
}

/**
 * SHA-256 of a body as lowercase hex (the empty body has a digest too).
 *
 * @param body The body bytes or text.
 * @returns 64 hex digits.
 *
 * @example
 * ```ts
 * import { bodyDigest } from "./sign.ts";
 * console.log(bodyDigest(""));
 * ```
 */
export function bodyDigest(body: Uint8Array | string): string {
  return sha256Hex(body);
}

/**
 * The exact string a request signature covers.
 *
 * @param method HTTP method in upper case.
 * @param path Path and query as sent, e.g. `/v1/services/web`.
 * @param digest {@linkcode bodyDigest} of the request body.
 * @param options Timestamp and nonce.
 * @returns The canonical string.
 *
 * @example
 * ```ts
 * import { canonicalRequest } from "./sign.ts";
 * console.log(canonicalRequest("GET", "/v1/services", "e3b0", { ts: 1, nonce: "ab" }));
 * ```
 */
export function canonicalRequest(
  method: string,
  path: string,
  digest: string,
  options: { ts: number; nonce: string },
): string {
  return `FAILOVER-V1\n${method}\n${path}\n${digest}\n${options.ts}\n${options.nonce}`;
}

/**
 * The exact string a response signature covers.
 *
 * @param nonce The request's nonce.
 * @param status The HTTP status.
 * @param digest {@linkcode bodyDigest} of the response body.
 * @returns The canonical string.
 *
 * @example
 * ```ts
 * import { canonicalResponse } from "./sign.ts";
 * console.log(canonicalResponse("ab", 200, "e3b0"));
 * ```
 */
export function canonicalResponse(nonce: string, status: number, digest: string): string {
  return `FAILOVER-V1-RESPONSE\n${nonce}\n${status}\n${digest}`;
}

/** A community as text, or prepared once as an {@linkcode HmacKey} (cheaper on a hot path). */
export type Secret = string | HmacKey;

function hmacHex(secret: Secret, text: string): string {
  return (typeof secret === "string" ? new HmacKey(secret) : secret).hex(text);
}

function randomHex(bytes: number): string {
  const buf = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Makes the nonces of one client: a random 64-bit session id, eight zero digits, then a counter
 * that goes up by one with each request (32 hex digits in all). faild remembers such nonces by
 * session, with a window of the last 64 counters, instead of one entry per request, so a client
 * polling every 20 ms costs it a few bytes rather than one replay-cache entry per poll. A new
 * session starts before the counter would wrap.
 *
 * @example
 * ```ts
 * import { NonceSequence } from "./sign.ts";
 * import { deepEqual } from "node:assert/strict";
 * const seq = new NonceSequence();
 * const a = seq.next(), b = seq.next();
 * deepEqual([a.slice(0, 16) === b.slice(0, 16), a.slice(16, 24)], [true, "00000000"]);
 * ```
 */
export class NonceSequence {
  #session = randomHex(8);
  #counter = 0;

  /**
   * Starts a new session (a new random id, the counter back to 0): what a client does when
   * faild says a nonce of its session was already used, e.g. because a holder of the same key
   * who saw a nonce on the wire pushed the session's counter ahead.
   */
  renew(): void {
    this.#session = randomHex(8);
    this.#counter = 0;
  }

  /** The next nonce of this client. */
  next(): string {
    if (this.#counter >= 0xffffffff) {
      this.#session = randomHex(8);
      this.#counter = 0;
    }
    this.#counter++;
    return this.#session + "00000000" + this.#counter.toString(16).padStart(8, "0");
  }
}

/**
 * Builds the `Authorization` header value for a request.
 *
 * @param community The shared secret.
 * @param request Method, path (with query) and body of the request.
 * @returns The header value and the nonce (needed to verify the response).
 *
 * @example
 * ```ts
 * import { signRequest } from "./sign.ts";
 * const { header } = signRequest("secret", { method: "GET", path: "/v1/services", body: "" });
 * console.log(header.startsWith("FAILOVER-HMAC-SHA256 "));
 * ```
 */
export function signRequest(
  community: string,
  request: {
    method: string;
    path: string;
    body: Uint8Array | string;
    now?: number;
    /** Where the nonce comes from (default: 16 random bytes). */
    nonces?: NonceSequence;
  },
): { header: string; nonce: string } {
  const ts = request.now ?? Date.now();
  const nonce = request.nonces?.next() ?? randomHex(16);
  const sig = hmacHex(
    community,
    canonicalRequest(request.method, request.path, bodyDigest(request.body), { ts, nonce }),
  );
  return {
    header: `${AUTH_SCHEME} keyId=${keyId(community)}, ts=${ts}, nonce=${nonce}, sig=${sig}`,
    nonce,
  };
}

const CANONICAL_AUTHORIZATION =
  /^FAILOVER-HMAC-SHA256 keyId=([0-9a-f]{16}), ts=([0-9]{1,16}), nonce=([0-9a-f]{32}), sig=([0-9a-f]{64})$/;

/**
 * Parses an `Authorization` header of the failover scheme.
 *
 * @param header The header value.
 * @returns The parts.
 * @throws {SyntaxError} When the header is not a well-formed failover signature.
 *
 * @example
 * ```ts
 * import { parseAuthorization, signRequest } from "./sign.ts";
 * import { deepEqual } from "node:assert/strict";
 * const { header } = signRequest("secret", { method: "GET", path: "/v1/health", body: "" });
 * deepEqual(parseAuthorization(header).keyId.length, 16);
 * ```
 */
export function parseAuthorization(header: string): SignatureParts {
  if (header.length > 512) throw new SyntaxError("Invalid authorization: header is too long");
  // The form every client of this project sends, read with one match (faild's hot path).
  const m = CANONICAL_AUTHORIZATION.exec(header);
  if (m !== null) return { keyId: m[1]!, ts: Number(m[2]), nonce: m[3]!, sig: m[4]! };
  if (!header.startsWith(AUTH_SCHEME + " ")) {
    throw new SyntaxError(`Invalid authorization: scheme must be ${AUTH_SCHEME}`);
  }
  const fields = new Map<string, string>();
  for (const part of header.slice(AUTH_SCHEME.length + 1).split(",")) {
    const eq = part.indexOf("=");
    if (eq < 0) throw new SyntaxError(`Invalid authorization: "${part.trim()}" is not key=value`);
    fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const keyIdValue = fields.get("keyId") ?? "";
  const tsText = fields.get("ts") ?? "";
  const nonce = fields.get("nonce") ?? "";
  const sig = fields.get("sig") ?? "";
  if (!/^[0-9a-f]{16}$/.test(keyIdValue)) {
    throw new SyntaxError("Invalid authorization: keyId must be 16 hex digits");
  }
  if (!/^[0-9]{1,16}$/.test(tsText)) {
    throw new SyntaxError("Invalid authorization: ts must be milliseconds since the epoch");
  }
  if (!/^[0-9a-f]{32}$/.test(nonce)) {
    throw new SyntaxError("Invalid authorization: nonce must be 32 hex digits");
  }
  if (!/^[0-9a-f]{64}$/.test(sig)) {
    throw new SyntaxError("Invalid authorization: sig must be 64 hex digits");
  }
  return { keyId: keyIdValue, ts: Number(tsText), nonce, sig };
}

/**
 * Checks a request signature in constant time. Freshness (timestamp window, nonce reuse) is the
 * caller's job: see {@linkcode NonceCache}.
 *
 * @param community The shared secret the key id names.
 * @param parts The parsed header.
 * @param request Method, path and body digest as received.
 * @returns `true` when the signature is valid.
 *
 * @example
 * ```ts
 * import { bodyDigest, parseAuthorization, signRequest, verifyRequest } from "./sign.ts";
 * import { deepEqual } from "node:assert/strict";
 * const req = { method: "GET", path: "/v1/services", body: "" };
 * const parts = parseAuthorization(signRequest("k", req).header);
 * deepEqual(verifyRequest("k", parts, { ...req, digest: bodyDigest("") }), true);
 * ```
 */
export function verifyRequest(
  community: Secret,
  parts: SignatureParts,
  request: { method: string; path: string; digest: string },
): boolean {
  const expected = hmacHex(
    community,
    canonicalRequest(request.method, request.path, request.digest, parts),
  );
  return constantTimeEqual(expected, parts.sig);
}

/**
 * The server's signature of a response: HMAC over the request nonce, the status and the body.
 *
 * @param community The secret the request was signed with.
 * @param response The request's nonce, the status and the response body.
 * @returns 64 hex digits for the {@linkcode RESPONSE_SIGNATURE_HEADER} header.
 *
 * @example
 * ```ts
 * import { signResponse } from "./sign.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(signResponse("k", { nonce: "00", status: 200, body: "{}" }).length, 64);
 * ```
 */
export function signResponse(
  community: Secret,
  response: { nonce: string; status: number; body: Uint8Array | string },
): string {
  return responseSignature(community, response.nonce, response.status, bodyDigest(response.body));
}

/**
 * {@linkcode signResponse} from a body digest computed once (a server signing the same body for
 * many callers, or an event stream).
 *
 * @param community The secret the request was signed with.
 * @param nonce The request's nonce.
 * @param status The HTTP status.
 * @param digest {@linkcode bodyDigest} of the response body.
 * @returns 64 hex digits.
 *
 * @example
 * ```ts
 * import { bodyDigest, HmacKey, responseSignature } from "./sign.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(responseSignature(new HmacKey("k"), "00", 200, bodyDigest("{}")).length, 64);
 * ```
 */
export function responseSignature(
  community: Secret,
  nonce: string,
  status: number,
  digest: string,
): string {
  return hmacHex(community, canonicalResponse(nonce, status, digest));
}

/**
 * Checks a server's response signature in constant time.
 *
 * @param community The secret the request was signed with.
 * @param signature The {@linkcode RESPONSE_SIGNATURE_HEADER} value (or `null` if absent).
 * @param response The request's nonce, the status and the response body.
 * @returns `true` when the signature is present and valid.
 *
 * @example
 * ```ts
 * import { signResponse, verifyResponse } from "./sign.ts";
 * import { deepEqual } from "node:assert/strict";
 * const r = { nonce: "00", status: 200, body: "{}" };
 * deepEqual(verifyResponse("k", signResponse("k", r), r), true);
 * ```
 */
export function verifyResponse(
  community: Secret,
  signature: string | null,
  response: { nonce: string; status: number; body: Uint8Array | string },
): boolean {
  if (signature === null || !/^[0-9a-f]{64}$/.test(signature)) return false;
  const expected = signResponse(community, response);
  return constantTimeEqual(expected, signature);
}

/**
 * Remembers nonces seen inside the accepted time window so that a captured request cannot be
 * replayed. Bounded: when full, requests are refused rather than old nonces forgotten early.
 *
 * @example
 * ```ts
 * import { NonceCache } from "./sign.ts";
 * import { deepEqual } from "node:assert/strict";
 * const cache = new NonceCache({ maxSkewMs: 30_000, maxEntries: 1000 });
 * deepEqual(cache.check("ab".repeat(16), Date.now(), Date.now()), "ok");
 * deepEqual(cache.check("ab".repeat(16), Date.now(), Date.now()), "replayed");
 * ```
 */
export class NonceCache {
  #seen = new Map<string, number>();
  #maxSkewMs: number;
  #maxEntries: number;

  /**
   * Creates an empty cache.
   *
   * @param options Window (ms either side of now) and the most nonces kept.
   */
  constructor(options: { maxSkewMs?: number; maxEntries?: number } = {}) {
    this.#maxSkewMs = options.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
    this.#maxEntries = options.maxEntries ?? 200_000;
  }

  /**
   * Records a nonce if the request is fresh.
   *
   * @param nonce The request's nonce.
   * @param ts The request's timestamp.
   * @param now The server's clock.
   * @returns `ok`, `stale` (outside the window), `replayed` or `full`.
   */
  check(nonce: string, ts: number, now: number): "ok" | "stale" | "replayed" | "full" {
    if (Math.abs(now - ts) > this.#maxSkewMs) return "stale";
    this.#expire(now);
    if (this.#seen.has(nonce)) return "replayed";
    if (this.#seen.size >= this.#maxEntries) return "full";
    this.#seen.set(nonce, ts + this.#maxSkewMs);
    return "ok";
  }

  /** Number of nonces held. */
  get size(): number {
    return this.#seen.size;
  }

  #expire(now: number): void {
    // Map keeps insertion order; timestamps are nearly monotonic, so stop at the first live entry
    // after a short scan.
    let scanned = 0;
    for (const [nonce, expires] of this.#seen) {
      if (expires < now) this.#seen.delete(nonce);
      else if (++scanned > 64) break;
    }
  }
}
