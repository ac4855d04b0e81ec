/**
 * faild's request authentication and access control: the signature of a request (checked from
 * its head, before a byte of the body is read), its freshness and nonce, and the caller's rights
 * on what it asks for. Refusals are counted and logged at most 20 lines a second.
 *
 * @module
 */
import type { Logger } from "../../lib/log.ts";
import { isValidName } from "../../lib/types.ts";
import { constantTimeEqual, HmacKey, sha256Hex } from "../../lib/hmac.ts";
import {
  canonicalRequest,
  CONTENT_DIGEST_HEADER,
  parseAuthorization,
  type SignatureParts,
} from "../../lib/sign.ts";
import { accessFor, type CommunityRules, hasRulesFor, type Right } from "./community.ts";
import type { AuthFailureReason, Metrics } from "./metrics.ts";
import { type CompactNonceCache, parseSequenced } from "./nonce.ts";
import type { HttpRequest } from "./http.ts";

/** The SHA-256 of an empty body. */
export const EMPTY_DIGEST: string = sha256Hex("");

/** The verified caller of a request. */
export interface Caller {
  /** Key id, or `null` for unsigned. */
  keyId: string | null;
  /** The community's prepared key, to sign the answer. */
  community: HmacKey | null;
  /** The request's nonce, to sign the answer. */
  nonce: string | null;
  /** The body digest the signature covers (signed requests with a body). */
  digest: string | null;
}

export const UNSIGNED: Caller = { keyId: null, community: null, nonce: null, digest: null };

/** A refusal with its status, extra headers and, for an authentication failure, its reason. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly reason?: AuthFailureReason,
  ) {
    super(message);
  }
}

/** Methods that change something: their nonces are kept across restarts. */
const WRITES = new Set(["PUT", "DELETE"]);

const DIGEST = /^[0-9a-f]{64}$/;

/** Logs at most `perSecond` lines a second, then counts what it dropped. */
export class RateLimitedLog {
  #window = 0;
  #count = 0;
  #dropped = 0;
  constructor(readonly perSecond: number) {}
  allow(now: number): { ok: boolean; dropped: number } {
    const w = Math.floor(now / 1000);
    if (w !== this.#window) {
      const dropped = this.#dropped;
      this.#window = w;
      this.#count = 0;
      this.#dropped = 0;
      this.#count++;
      return { ok: true, dropped };
    }
    if (++this.#count <= this.perSecond) return { ok: true, dropped: 0 };
    this.#dropped++;
    return { ok: false, dropped: 0 };
  }
}

/** What {@linkcode RequestAuth} needs from the daemon. */
export interface AuthContext {
  /** The community rules in force (changes on SIGHUP). */
  rules: () => CommunityRules;
  /** The replay cache. */
  nonces: CompactNonceCache;
  /** The counters. */
  metrics: Metrics;
  /** The logger. */
  log: Logger;
  /** Start time, ms since the epoch: writes signed before it are refused (replays). */
  startedAt: number;
}

/** Checks who sent a request and what they may do. */
export class RequestAuth {
  #ctx: AuthContext;
  #authLog = new RateLimitedLog(20);
  #hmacKeys = new Map<string, HmacKey>();
  #hmacRules: CommunityRules | null = null;
  #nonceRules: CommunityRules | null = null;

  /**
   * Creates the checker.
   *
   * @param ctx The rules, the replay cache, the counters and the logger.
   */
  constructor(ctx: AuthContext) {
    this.#ctx = ctx;
  }

  /** Verifies the request's signature, freshness and nonce; an unsigned request is {@linkcode UNSIGNED}. */
  authenticate(req: HttpRequest): Caller {
    const header = req.headers.get("authorization");
    if (header === undefined) return UNSIGNED;
    const remote = req.remote;
    let parts: SignatureParts;
    try {
      parts = parseAuthorization(header);
    } catch (error) {
      throw this.fail(401, "malformed", (error as Error).message, remote);
    }
    const rules = this.#ctx.rules();
    const community = rules.keys.get(parts.keyId);
    if (community === undefined) {
      throw this.fail(
        401,
        "unknown_key",
        `Unknown key: key id ${parts.keyId} matches no community of this faild`,
        remote,
      );
    }
    // The signature covers the body's digest, sent in a header: the whole signature is checked
    // before a byte of the body is read, and the body is compared with the digest once read.
    let digest = EMPTY_DIGEST;
    if (req.contentLength > 0) {
      const declared = req.headers.get(CONTENT_DIGEST_HEADER);
      if (declared === undefined || !DIGEST.test(declared)) {
        throw this.fail(
          401,
          "malformed",
          `Invalid ${CONTENT_DIGEST_HEADER}: a signed request with a body must send the ` +
            "SHA-256 of its body as 64 lowercase hex digits",
          remote,
        );
      }
      digest = declared;
    }
    const key = this.#hmacKey(community);
    const expected = key.hex(canonicalRequest(req.method, req.target, digest, parts));
    if (!constantTimeEqual(expected, parts.sig)) {
      throw this.fail(
        401,
        "bad_signature",
        `Bad signature: the request does not match its signature for key id ${parts.keyId}`,
        remote,
      );
    }
    const now = Date.now();
    const write = WRITES.has(req.method);
    if (write && parts.ts < this.#ctx.startedAt) {
      // A write captured before a restart: its nonce may be one the last run accepted but
      // could not save. Clients sign each request when they send it, so theirs are newer.
      throw this.fail(
        401,
        "stale",
        `Stale request: signed ${now - parts.ts} ms ago, before faild started ` +
          `${now - this.#ctx.startedAt} ms ago (a write is only accepted if signed after the ` +
          "start; check the clocks)",
        remote,
      );
    }
    const nonces = this.#ctx.nonces;
    if (this.#nonceRules !== rules) {
      this.#nonceRules = rules;
      nonces.keyCount = new Set(rules.keys.values()).size;
    }
    switch (nonces.check(parts.nonce, parts.ts, now, { key: parts.keyId, write })) {
      case "ok":
        break;
      case "stale":
        throw this.fail(
          401,
          "stale",
          `Stale request: its timestamp is ${
            Math.round((parts.ts - now) / 1000)
          } s from faild's clock, beyond the allowed skew (check the clocks)`,
          remote,
        );
      case "replayed":
        throw this.fail(
          401,
          "replayed",
          "Replayed request: its nonce was already used (a client sending sequenced nonces " +
            "starts a new session)",
          remote,
        );
      case "full":
        if (parseSequenced(parts.nonce) !== null) {
          throw this.fail(
            503,
            "nonce_sessions_full",
            `Too many nonce sessions: key id ${parts.keyId} holds ${nonces.sessionQuota}, the ` +
              "most one key may; retry when old sessions expire",
            remote,
            { "retry-after": "5" },
          );
        }
        throw this.fail(
          503,
          "nonce_cache_full",
          "Too many signed requests: the replay cache is full, retry in a second",
          remote,
          { "retry-after": "1" },
        );
    }
    return {
      keyId: parts.keyId,
      community: key,
      nonce: parts.nonce,
      digest: req.contentLength > 0 ? digest : null,
    };
  }

  /** Checks the caller's right for the route before the body is read (401/403). */
  authorize(method: string, route: string, name: string | undefined, caller: Caller): void {
    switch (route) {
      case "/v1/services":
        return this.requireAnyRead(caller, "GET /v1/services");
      case "/v1/events":
        return this.requireAnyRead(caller, "GET /v1/events");
      case "/v1/debug/levels":
        return this.require(
          caller,
          "*",
          method === "GET" ? "RO" : "RW",
          `${method} /v1/debug/levels`,
        );
      case "/v1/services/:name": {
        const service = name ?? "";
        if (!isValidName(service)) {
          throw new HttpError(
            400,
            `Invalid service name: ${JSON.stringify(service.slice(0, 80))} must be 1 to 64 ` +
              `letters, digits, ".", "_" or "-", starting with a letter or digit`,
          );
        }
        return this.require(
          caller,
          service,
          method === "GET" ? "RO" : "RW",
          `${method} /v1/services/${service}`,
        );
      }
    }
  }

  /** Checks that the caller has at least `need` on a service; throws 401/403 otherwise. */
  require(caller: Caller, service: string, need: Right, what: string): void {
    const right = accessFor(this.#ctx.rules(), service, caller.keyId);
    if (right === "RW" || (right === "RO" && need === "RO")) return;
    if (caller.keyId === null) {
      throw this.fail(
        401,
        "unsigned",
        `Unsigned request: ${what} needs a signed request (no "-" rule of the community file ` +
          `gives unsigned ${need === "RO" ? "read" : "write"} access to ${service})`,
      );
    }
    if (right === "RO") {
      throw this.fail(
        403,
        "forbidden",
        `Read-only access: key id ${caller.keyId} may read but not write ${service}`,
      );
    }
    throw this.fail(
      403,
      "forbidden",
      `Access denied: no rule of the community file gives key id ${caller.keyId} ` +
        `${need === "RO" ? "read" : "write"} access to ${service}`,
    );
  }

  /** Refuses an unsigned caller when no "-" rule opens anything to unsigned reads. */
  requireAnyRead(caller: Caller, what: string): void {
    if (caller.keyId === null && !hasRulesFor(this.#ctx.rules(), null)) {
      throw this.fail(
        401,
        "unsigned",
        `Unsigned request: ${what} needs a signed request (the community file has no "-" rule)`,
      );
    }
  }

  /** Counts and logs a refusal, and returns the error to throw. */
  fail(
    status: number,
    reason: AuthFailureReason,
    message: string,
    remote?: string,
    headers: Record<string, string> = {},
  ): HttpError {
    this.#ctx.metrics.authFailure(reason);
    const gate = this.#authLog.allow(Date.now());
    if (gate.ok) {
      this.#ctx.log.warn("auth", "request refused", {
        reason,
        detail: message,
        remote,
        ...(gate.dropped > 0 ? { suppressed: gate.dropped } : {}),
      });
    }
    return new HttpError(status, message, headers, reason);
  }

  /** The prepared HMAC key of a community (rebuilt when the rules change). */
  #hmacKey(community: string): HmacKey {
    const rules = this.#ctx.rules();
    if (this.#hmacRules !== rules) {
      this.#hmacKeys.clear();
      this.#hmacRules = rules;
    }
    let key = this.#hmacKeys.get(community);
    if (key === undefined) {
      key = new HmacKey(community);
      this.#hmacKeys.set(community, key);
    }
    return key;
  }
}
