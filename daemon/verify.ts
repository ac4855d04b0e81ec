/**
 * The request-checking half of `lib/sign.ts`, without `node:crypto`: faild imports this module
 * instead, which keeps the Node compatibility layer (about 4 MB of RSS) out of the daemon.
 * `verify_test.ts` checks that every function here agrees with its `lib/sign.ts` counterpart.
 *
 * @module
 */
import { HmacKey, sha256Hex } from "./hmac.ts";

/** Name of the authorization scheme (as `AUTH_SCHEME` of `lib/sign.ts`). */
export const AUTH_SCHEME = "FAILOVER-HMAC-SHA256";

/** Response header carrying the server's signature (as in `lib/sign.ts`). */
export const RESPONSE_SIGNATURE_HEADER = "x-failover-signature";

/** Default accepted clock difference, in ms (as in `lib/sign.ts`). */
export const DEFAULT_MAX_SKEW_MS = 30_000;

/** The parts of a parsed `Authorization` header. */
export interface SignatureParts {
  /** Key id of the community. */
  keyId: string;
  /** Client timestamp, ms since the epoch. */
  ts: number;
  /** 32 hex characters. */
  nonce: string;
  /** 64 hex characters. */
  sig: string;
}

/**
 * The public key id of a community (as `keyId` of `lib/sign.ts`).
 *
 * @param community The shared secret.
 * @returns 16 lowercase hex digits.
 *
 * @example
 * ```ts
 * import { communityKeyId } from "./verify.ts";
 * console.log(communityKeyId("s3cret-community").length); // 16
 * ```
 */
export function communityKeyId(community: string): string {
  return sha256Hex("failover-key-id:" + community).slice(0, 16);
}

/**
 * The string a request signature covers (as `canonicalRequest` of `lib/sign.ts`).
 *
 * @param method HTTP method.
 * @param path Path and query as sent.
 * @param digest SHA-256 hex of the body.
 * @param parts Timestamp and nonce.
 * @returns The canonical string.
 *
 * @example
 * ```ts
 * import { canonicalRequestText } from "./verify.ts";
 * console.log(canonicalRequestText("GET", "/v1/health", "e3b0", { ts: 1, nonce: "ab" }));
 * ```
 */
export function canonicalRequestText(
  method: string,
  path: string,
  digest: string,
  parts: { ts: number; nonce: string },
): string {
  return `FAILOVER-V1\n${method}\n${path}\n${digest}\n${parts.ts}\n${parts.nonce}`;
}

/**
 * Parses an `Authorization` header (as `parseAuthorization` of `lib/sign.ts`, same messages).
 *
 * @param header The header value.
 * @returns The parts.
 * @throws {SyntaxError} When the header is not a well-formed failover signature.
 *
 * @example
 * ```ts
 * import { parseAuthorizationHeader } from "./verify.ts";
 * try {
 *   parseAuthorizationHeader("Basic x");
 * } catch (e) {
 *   console.log((e as Error).message);
 * }
 * ```
 */
export function parseAuthorizationHeader(header: string): SignatureParts {
  if (header.length > 512) throw new SyntaxError("Invalid authorization: header is too long");
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
 * The server's signature of a response (as `signResponse` of `lib/sign.ts`), from a prepared
 * key and a precomputed body digest.
 *
 * @param key The community's prepared HMAC key.
 * @param nonce The request's nonce.
 * @param status The HTTP status.
 * @param digest SHA-256 hex of the response body.
 * @returns 64 hex digits.
 *
 * @example
 * ```ts
 * import { HmacKey, sha256Hex } from "./hmac.ts";
 * import { responseSignature } from "./verify.ts";
 * console.log(responseSignature(new HmacKey("k"), "00", 200, sha256Hex("{}")).length); // 64
 * ```
 */
export function responseSignature(
  key: HmacKey,
  nonce: string,
  status: number,
  digest: string,
): string {
  return key.hex(`FAILOVER-V1-RESPONSE\n${nonce}\n${status}\n${digest}`);
}
