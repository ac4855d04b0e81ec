/**
 * faild's HTTP/1.1 JSON API (see `docs/protocol.md`): routing, request signature checks, access
 * control, signed answers, and the server-sent event streams. Everything that can be checked
 * from the request head (signature, freshness, path, method, rights) is checked before a byte of
 * the body is read; the body is then read by `daemon/faild/http.ts`, at most its declared length, and
 * compared with the digest the signature covers.
 *
 * @module
 */
import type { Logger } from "../../lib/log.ts";
import {
  type ChangeEvent,
  type Health,
  isServiceState,
  isValidName,
  LOG_LEVELS,
  MAX_DETAIL_LENGTH,
  type ServiceList,
  type ServiceRecord,
} from "../../lib/types.ts";
import { accessFor, type CommunityRules, hasRulesFor, type Right } from "./community.ts";
import type { AuthFailureReason, Metrics } from "./metrics.ts";
import { constantTimeEqual, HmacKey, sha256Hex } from "../../lib/hmac.ts";
import { type CompactNonceCache, parseSequenced } from "./nonce.ts";
import {
  canonicalRequest,
  CONTENT_DIGEST_HEADER,
  parseAuthorization,
  RESPONSE_SIGNATURE_HEADER,
  responseSignature,
  type SignatureParts,
} from "../../lib/sign.ts";
import {
  HttpBodyError,
  type HttpRequest,
  type HttpResponse,
  type HttpStats,
  utf8Length,
} from "./http.ts";
import type { StateWriter } from "./persist.ts";
import { type ServiceStore, TooManyServicesError } from "./store.ts";

/** Default largest request body, in bytes. */
export const DEFAULT_MAX_BODY_BYTES = 4096;
/** Default time a client has to send its request body, in ms. */
export const DEFAULT_BODY_TIMEOUT_MS = 5_000;
/** Default most concurrent event streams. */
export const DEFAULT_MAX_STREAMS = 64;
/** Interval of the `: keepalive` comment on event streams, in ms. */
export const KEEPALIVE_MS = 15_000;
/** Events queued for a stream whose client does not read before it is dropped. */
export const MAX_QUEUED_EVENTS = 1024;

const EMPTY_DIGEST = sha256Hex("");
const FACILITY_PATTERN = /^(\*|[a-z][a-z0-9_.-]{0,31})$/;
const encoder = new TextEncoder();

/** Everything the API needs from the daemon. */
export interface ServerContext {
  /** The services. */
  store: ServiceStore;
  /** The community rules in force (changes on SIGHUP). */
  rules: () => CommunityRules;
  /** The replay cache. */
  nonces: CompactNonceCache;
  /** The counters. */
  metrics: Metrics;
  /** The logger (its levels are what faildebug reads and sets). */
  log: Logger;
  /** Writes the state file, or `null` without one. */
  writer: StateWriter | null;
  /** This faild's name. */
  host: string;
  /** Random id of this run. */
  bootId: string;
  /** Software version. */
  version: string;
  /** Start time, ms since the epoch: writes signed before it are refused (replays). */
  startedAt: number;
  /** Largest request body in bytes. */
  maxBodyBytes: number;
  /** Time allowed to receive a body, in ms. */
  bodyTimeoutMs: number;
  /** Most concurrent event streams. */
  maxStreams: number;
  /** Interval of stream keep-alive comments, in ms. */
  keepaliveMs: number;
  /** Counters of the HTTP layer, for /metrics. */
  http?: () => HttpStats;
}

/** The verified caller of a request. */
interface Caller {
  /** Key id, or `null` for unsigned. */
  keyId: string | null;
  /** The community's prepared key, to sign the answer. */
  community: HmacKey | null;
  /** The request's nonce, to sign the answer. */
  nonce: string | null;
  /** The body digest the signature covers (signed requests with a body). */
  digest: string | null;
}

const UNSIGNED: Caller = { keyId: null, community: null, nonce: null, digest: null };
const EMPTY_BODY = new Uint8Array(0);

/** What an operation answers, before it is signed. */
interface Dispatched {
  status: number;
  body: unknown;
  contentType?: string;
  headers?: Record<string, string>;
  digest?: string;
}

class HttpError extends Error {
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

interface Stream {
  controller: ReadableStreamDefaultController<Uint8Array>;
  caller: Caller;
  closed: boolean;
}

/** Route templates, for metrics and method checks. */
const ROUTES: Record<string, string[]> = {
  "/v1/health": ["GET"],
  "/v1/services": ["GET"],
  "/v1/services/:name": ["GET", "PUT", "DELETE"],
  "/v1/events": ["GET"],
  "/metrics": ["GET"],
  "/v1/debug/levels": ["GET", "PUT"],
};

function routeOf(pathname: string): { route: string; name?: string } {
  if (pathname.startsWith("/v1/services/")) {
    return { route: "/v1/services/:name", name: pathname.slice("/v1/services/".length) };
  }
  return { route: pathname in ROUTES ? pathname : "other" };
}

/** Logs at most `perSecond` lines a second, then counts what it dropped. */
class RateLimitedLog {
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

/**
 * The request handler of faild and its event streams.
 *
 * @example
 * ```ts ignore
 * import { FaildServer } from "./server.ts";
 * import { HttpServer } from "./http.ts";
 * const api = new FaildServer(context);
 * const server = new HttpServer({ hostname: "127.0.0.1", port: 0 }, (req) => api.handle(req));
 * ```
 */
export class FaildServer {
  #ctx: ServerContext;
  #streams = new Set<Stream>();
  #keepalive: ReturnType<typeof setInterval> | undefined;
  #unsubscribe: () => void;
  #authLog = new RateLimitedLog(20);
  #errorLog = new RateLimitedLog(5);
  #listCache = new Map<string, { version: number; rules: CommunityRules; list: ServiceRecord[] }>();
  #bodyCache = new Map<
    string,
    { version: number; rules: CommunityRules; now: number; text: string; digest: string }
  >();
  #hmacKeys = new Map<string, HmacKey>();
  #hmacRules: CommunityRules | null = null;
  #nonceRules: CommunityRules | null = null;
  #closed = false;

  /**
   * Creates the handler and subscribes to store changes.
   *
   * @param ctx The daemon's parts.
   */
  constructor(ctx: ServerContext) {
    this.#ctx = ctx;
    this.#unsubscribe = ctx.store.onChange((ev) => this.#broadcast(ev));
  }

  /** Open event streams. */
  get streams(): number {
    return this.#streams.size;
  }

  /** Ends every event stream and stops listening to the store. */
  close(): void {
    this.#closed = true;
    this.#unsubscribe();
    for (const s of [...this.#streams]) this.#endStream(s);
    clearInterval(this.#keepalive);
    this.#keepalive = undefined;
  }

  /**
   * Answers one request: head checks first, then the body. A read without a body is answered
   * synchronously (nothing made for it stays alive while other connections are served).
   *
   * @param req The request, its body not read yet.
   * @returns The answer, or a promise of it when the body must be read or the state saved.
   */
  handle(req: HttpRequest): HttpResponse | Promise<HttpResponse> {
    const started = performance.now();
    const { route, name } = routeOf(req.path);
    let caller: Caller = UNSIGNED;
    try {
      caller = this.#authenticate(req);
      const methods = ROUTES[route];
      if (methods === undefined) {
        throw new HttpError(
          404,
          `Unknown path: ${req.path.slice(0, 200)} is not part of the faild API`,
        );
      }
      if (!methods.includes(req.method)) {
        throw new HttpError(
          405,
          `Method not allowed: ${req.method} ${route} (allowed: ${methods.join(", ")})`,
          { allow: methods.join(", ") },
        );
      }
      if (req.method === "PUT") {
        const type = (req.headers.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
        if (type !== "application/json") {
          throw new HttpError(
            415,
            `Unsupported content type: expected application/json, got ${
              type.slice(0, 80) || "none"
            }`,
          );
        }
      }
      this.#authorize(req.method, route, name, caller);
      if (req.contentLength > 0) return this.#withBody(req, route, name, caller, started);
      if (route === "/v1/events") return this.#events(caller, req.closed);
      const result = this.#dispatch(req.method, route, name, EMPTY_BODY, caller);
      if (result instanceof Promise) {
        return result.then(
          (r) => this.#answer(req, route, started, caller, r, 0),
          (error) => this.#failure(req, route, started, caller, error, 0),
        );
      }
      return this.#answer(req, route, started, caller, result, 0);
    } catch (error) {
      return this.#failure(req, route, started, caller, error, 0);
    }
  }

  /** The rest of a request that has a body: read it, check it, then dispatch. */
  async #withBody(
    req: HttpRequest,
    route: string,
    name: string | undefined,
    caller: Caller,
    started: number,
  ): Promise<HttpResponse> {
    let bytesIn = 0;
    try {
      const body = await this.#body(req, caller);
      bytesIn = body.byteLength;
      if (route === "/v1/events") return this.#events(caller, req.closed);
      const result = await this.#dispatch(req.method, route, name, body, caller);
      return this.#answer(req, route, started, caller, result, bytesIn);
    } catch (error) {
      return this.#failure(req, route, started, caller, error, bytesIn);
    }
  }

  /** Turns a dispatch result into the signed answer, and counts and logs it. */
  #answer(
    req: HttpRequest,
    route: string,
    started: number,
    caller: Caller,
    result: Dispatched,
    bytesIn: number,
  ): HttpResponse {
    const text = typeof result.body === "string" ? result.body : JSON.stringify(result.body);
    const response = this.#respond(
      result.status,
      text,
      caller,
      result.contentType,
      result.headers,
      result.digest,
    );
    return this.#done(req, route, started, caller, response, bytesIn, utf8Length(text));
  }

  /** The error answer of a refused or failed request. */
  #failure(
    req: HttpRequest,
    route: string,
    started: number,
    caller: Caller,
    error: unknown,
    bytesIn: number,
  ): HttpResponse {
    let status = 500;
    let message = `Internal error: ${(error as Error).message}`;
    let headers: Record<string, string> = {};
    let reason: string | undefined;
    if (error instanceof HttpError) {
      status = error.status;
      message = error.message;
      headers = error.headers;
      reason = error.reason;
    } else if (error instanceof HttpBodyError) {
      status = error.status;
      message = error.message;
    } else {
      const gate = this.#errorLog.allow(Date.now());
      if (gate.ok) {
        this.#ctx.log.error("http", "request failed", {
          method: req.method,
          path: req.path.slice(0, 200),
          error: String(error),
          ...(gate.dropped > 0 ? { suppressed: gate.dropped } : {}),
        });
      }
    }
    const text = JSON.stringify(
      reason === undefined ? { error: message } : { error: message, reason },
    );
    const response = this.#respond(status, text, caller, "application/json", headers);
    return this.#done(req, route, started, caller, response, bytesIn, utf8Length(text));
  }

  #done(
    req: HttpRequest,
    route: string,
    started: number,
    caller: Caller,
    response: HttpResponse,
    bytesIn: number,
    bytesOut: number,
  ): HttpResponse {
    this.#ctx.metrics.request(route, response.status, bytesIn, bytesOut);
    if (this.#ctx.log.enabled("http", "debug")) {
      this.#ctx.log.debug("http", "request", {
        method: req.method,
        path: req.path.slice(0, 200),
        status: response.status,
        ms: Math.round((performance.now() - started) * 1000) / 1000,
        key: caller.keyId,
        remote: req.remote,
      });
    }
    return response;
  }

  /** Reads the body the head announced and checks it against the signed digest. */
  async #body(req: HttpRequest, caller: Caller): Promise<Uint8Array> {
    if (req.contentLength === 0) return new Uint8Array(0);
    const body = await req.body();
    if (caller.digest !== null && !constantTimeEqual(sha256Hex(body), caller.digest)) {
      throw this.#authFail(
        401,
        "bad_signature",
        `Bad signature: the body does not match the ${CONTENT_DIGEST_HEADER} its signature covers`,
        req.remote,
      );
    }
    return body;
  }

  /** Checks the caller's right for the route before the body is read (401/403). */
  #authorize(method: string, route: string, name: string | undefined, caller: Caller): void {
    switch (route) {
      case "/v1/services":
        return this.#requireAnyRead(caller, "GET /v1/services");
      case "/v1/events":
        return this.#requireAnyRead(caller, "GET /v1/events");
      case "/v1/debug/levels":
        return this.#require(
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
        return this.#require(
          caller,
          service,
          method === "GET" ? "RO" : "RW",
          `${method} /v1/services/${service}`,
        );
      }
    }
  }

  #respond(
    status: number,
    text: string,
    caller: Caller,
    contentType = "application/json",
    extra: Record<string, string> = {},
    digest?: string,
  ): HttpResponse {
    const headers: Record<string, string> = { "content-type": contentType, ...extra };
    if (caller.community !== null && caller.nonce !== null) {
      headers[RESPONSE_SIGNATURE_HEADER] = responseSignature(
        caller.community,
        caller.nonce,
        status,
        digest ?? sha256Hex(text),
      );
    }
    return { status, headers, body: text };
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

  #authFail(
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

  #authenticate(req: HttpRequest): Caller {
    const header = req.headers.get("authorization");
    if (header === undefined) return UNSIGNED;
    const remote = req.remote;
    let parts: SignatureParts;
    try {
      parts = parseAuthorization(header);
    } catch (error) {
      throw this.#authFail(401, "malformed", (error as Error).message, remote);
    }
    const rules = this.#ctx.rules();
    const community = rules.keys.get(parts.keyId);
    if (community === undefined) {
      throw this.#authFail(
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
        throw this.#authFail(
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
      throw this.#authFail(
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
      throw this.#authFail(
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
        throw this.#authFail(
          401,
          "stale",
          `Stale request: its timestamp is ${
            Math.round((parts.ts - now) / 1000)
          } s from faild's clock, beyond the allowed skew (check the clocks)`,
          remote,
        );
      case "replayed":
        throw this.#authFail(
          401,
          "replayed",
          "Replayed request: its nonce was already used (a client sending sequenced nonces " +
            "starts a new session)",
          remote,
        );
      case "full":
        if (parseSequenced(parts.nonce) !== null) {
          throw this.#authFail(
            503,
            "nonce_sessions_full",
            `Too many nonce sessions: key id ${parts.keyId} holds ${nonces.sessionQuota}, the ` +
              "most one key may; retry when old sessions expire",
            remote,
            { "retry-after": "5" },
          );
        }
        throw this.#authFail(
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

  /** Checks that the caller has at least `need` on a service; throws 401/403 otherwise. */
  #require(caller: Caller, service: string, need: Right, what: string): void {
    const right = accessFor(this.#ctx.rules(), service, caller.keyId);
    if (right === "RW" || (right === "RO" && need === "RO")) return;
    if (caller.keyId === null) {
      throw this.#authFail(
        401,
        "unsigned",
        `Unsigned request: ${what} needs a signed request (no "-" rule of the community file ` +
          `gives unsigned ${need === "RO" ? "read" : "write"} access to ${service})`,
      );
    }
    if (right === "RO") {
      throw this.#authFail(
        403,
        "forbidden",
        `Read-only access: key id ${caller.keyId} may read but not write ${service}`,
      );
    }
    throw this.#authFail(
      403,
      "forbidden",
      `Access denied: no rule of the community file gives key id ${caller.keyId} ` +
        `${need === "RO" ? "read" : "write"} access to ${service}`,
    );
  }

  /** The services a caller may read (cached per store version and rules). */
  #readable(caller: Caller): ServiceRecord[] {
    const rules = this.#ctx.rules();
    const key = caller.keyId ?? "-";
    const version = this.#ctx.store.version;
    const hit = this.#listCache.get(key);
    if (hit && hit.version === version && hit.rules === rules) return hit.list;
    const list = this.#ctx.store.list().filter((s) =>
      accessFor(rules, s.name, caller.keyId) !== null
    ) as ServiceRecord[];
    if (this.#listCache.size > 1024) this.#listCache.clear();
    this.#listCache.set(key, { version, rules, list });
    return list;
  }

  #requireAnyRead(caller: Caller, what: string): void {
    if (caller.keyId === null && !hasRulesFor(this.#ctx.rules(), null)) {
      throw this.#authFail(
        401,
        "unsigned",
        `Unsigned request: ${what} needs a signed request (the community file has no "-" rule)`,
      );
    }
  }

  /** Runs the operation: synchronously for reads, a promise for writes (they save the state). */
  #dispatch(
    method: string,
    route: string,
    name: string | undefined,
    body: Uint8Array,
    caller: Caller,
  ): Dispatched | Promise<Dispatched> {
    const ctx = this.#ctx;
    switch (route) {
      case "/v1/health": {
        const health: Health = {
          ok: true,
          host: ctx.host,
          bootId: ctx.bootId,
          version: ctx.version,
          uptimeMs: Date.now() - ctx.startedAt,
          services: ctx.store.size,
        };
        return { status: 200, body: health };
      }
      case "/v1/services": {
        this.#requireAnyRead(caller, "GET /v1/services");
        // Polls are the hot path: the answer only changes with the store, the rules or the
        // millisecond clock, so its text and digest are shared by the polls of one millisecond.
        const now = Date.now();
        const rules = ctx.rules();
        const cacheKey = caller.keyId ?? "-";
        const hit = this.#bodyCache.get(cacheKey);
        if (
          hit && hit.now === now && hit.version === ctx.store.version && hit.rules === rules
        ) {
          return { status: 200, body: hit.text, digest: hit.digest };
        }
        const list: ServiceList = {
          host: ctx.host,
          bootId: ctx.bootId,
          now,
          services: this.#readable(caller),
        };
        const text = JSON.stringify(list);
        const digest = sha256Hex(text);
        if (this.#bodyCache.size > 1024) this.#bodyCache.clear();
        this.#bodyCache.set(cacheKey, { version: ctx.store.version, rules, now, text, digest });
        return { status: 200, body: text, digest };
      }
      case "/v1/services/:name":
        return method === "GET"
          ? this.#serviceRead(name ?? "", caller)
          : this.#serviceWrite(method, name ?? "", body, caller);
      case "/metrics": {
        const text = ctx.metrics.render({
          services: this.#readable(caller),
          serviceCount: ctx.store.size,
          uptimeSeconds: (Date.now() - ctx.startedAt) / 1000,
          eventStreams: this.#streams.size,
          nonces: ctx.nonces.size,
          stateWrites: ctx.writer?.writes ?? 0,
          stateWriteErrors: ctx.writer?.errors ?? 0,
          stateBehind: ctx.writer?.behind ?? false,
          ...(ctx.http ? { http: ctx.http() } : {}),
        });
        return { status: 200, body: text, contentType: "text/plain; version=0.0.4" };
      }
      case "/v1/debug/levels": {
        if (method === "GET") {
          this.#require(caller, "*", "RO", "GET /v1/debug/levels");
          return { status: 200, body: { levels: ctx.log.levels() } };
        }
        this.#require(caller, "*", "RW", "PUT /v1/debug/levels");
        const v = this.#parseJson(body) as Record<string, unknown>;
        for (const k of Object.keys(v)) {
          if (k !== "facility" && k !== "level") {
            throw new HttpError(
              400,
              `Invalid body: unknown field "${k}" (expected facility, level)`,
            );
          }
        }
        if (typeof v.facility !== "string" || !FACILITY_PATTERN.test(v.facility)) {
          throw new HttpError(
            400,
            `Invalid facility: ${JSON.stringify(v.facility)} must be "*" or a lowercase name`,
          );
        }
        if (typeof v.level !== "string" || !(LOG_LEVELS as readonly string[]).includes(v.level)) {
          throw new HttpError(
            400,
            `Invalid level: ${JSON.stringify(v.level)} is not one of ${LOG_LEVELS.join(", ")}`,
          );
        }
        ctx.log.setLevel(v.facility, v.level);
        ctx.log.info("daemon", "log level changed", {
          target: v.facility,
          newLevel: v.level,
          by: caller.keyId ?? "anonymous",
        });
        return { status: 200, body: { levels: ctx.log.levels() } };
      }
    }
    throw new HttpError(404, `Unknown path: ${route}`);
  }

  #parseJson(body: Uint8Array): unknown {
    let value: unknown;
    try {
      value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
    } catch (error) {
      throw new HttpError(400, `Malformed JSON: ${(error as Error).message}`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new HttpError(400, "Invalid body: expected a JSON object");
    }
    return value;
  }

  #serviceRead(name: string, caller: Caller): Dispatched {
    this.#require(caller, name, "RO", `GET /v1/services/${name}`);
    const record = this.#ctx.store.get(name);
    if (record === undefined) throw new HttpError(404, `Service not found: ${name}`);
    return { status: 200, body: record };
  }

  async #serviceWrite(
    method: string,
    name: string,
    body: Uint8Array,
    caller: Caller,
  ): Promise<Dispatched> {
    const ctx = this.#ctx;
    this.#require(caller, name, "RW", `${method} /v1/services/${name}`);
    if (method === "DELETE") {
      const old = ctx.store.delete(name);
      if (old === undefined) {
        // Absent in memory: make sure the disk agrees (an earlier delete may not be saved yet).
        await this.#persist(true);
        throw new HttpError(404, `Service not found: ${name}`);
      }
      ctx.log.info("state", "service deleted", { service: name, by: caller.keyId ?? "anonymous" });
      await this.#persist();
      return { status: 200, body: old };
    }
    const v = this.#parseJson(body) as Record<string, unknown>;
    for (const k of Object.keys(v)) {
      if (k !== "state" && k !== "detail") {
        throw new HttpError(400, `Invalid body: unknown field "${k}" (expected state, detail)`);
      }
    }
    if (!isServiceState(v.state)) {
      throw new HttpError(
        400,
        `Unknown state: ${JSON.stringify(v.state)} is not UP, RECOVER or FAIL`,
      );
    }
    if (v.detail !== undefined && typeof v.detail !== "string") {
      throw new HttpError(400, "Invalid detail: must be a string");
    }
    if (typeof v.detail === "string" && v.detail.length > MAX_DETAIL_LENGTH) {
      throw new HttpError(
        400,
        `Invalid detail: ${v.detail.length} characters, at most ${MAX_DETAIL_LENGTH}`,
      );
    }
    let result;
    try {
      result = ctx.store.set(name, v.state, {
        setBy: caller.keyId ?? "anonymous",
        ...(typeof v.detail === "string" ? { detail: v.detail } : {}),
      });
    } catch (error) {
      if (error instanceof TooManyServicesError) throw new HttpError(429, error.message);
      throw error;
    }
    if (result.stateChanged) {
      ctx.log.info("state", result.created ? "service created" : "state changed", {
        service: name,
        state: result.record.state,
        changes: result.record.changes,
        by: result.record.setBy,
      });
    }
    // Nothing changed in memory still needs the disk to hold it before the answer: another
    // client's equal write may still be being saved, or its save may have failed.
    await this.#persist(!result.modified);
    return { status: result.created ? 201 : 200, body: result.record };
  }

  /**
   * Puts the state in memory on disk before an answer: `settle` only waits or writes when the
   * disk is behind memory (a write running, pending or failed).
   */
  async #persist(settle = false): Promise<void> {
    const writer = this.#ctx.writer;
    if (writer === null) return;
    try {
      await (settle ? writer.settle() : writer.save());
    } catch (error) {
      const gate = this.#errorLog.allow(Date.now());
      if (gate.ok) {
        this.#ctx.log.error("state", "cannot save state", {
          error: (error as Error).message,
          ...(gate.dropped > 0 ? { suppressed: gate.dropped } : {}),
        });
      }
      throw new HttpError(
        500,
        `${(error as Error).message} (the change is held in memory, not acknowledged; faild ` +
          "retries the save)",
      );
    }
  }

  #events(caller: Caller, completed: Promise<void>): HttpResponse {
    this.#requireAnyRead(caller, "GET /v1/events");
    if (this.#closed) throw new HttpError(503, "Shutting down: faild is stopping");
    if (this.#streams.size >= this.#ctx.maxStreams) {
      throw new HttpError(
        503,
        `Too many event streams: ${this.#streams.size} open, the most --max-streams allows`,
        { "retry-after": "5" },
      );
    }
    let stream!: Stream;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        stream = { controller, caller, closed: false };
        this.#streams.add(stream);
        controller.enqueue(
          encoder.encode(`: faild ${this.#ctx.host} boot ${this.#ctx.bootId}\n\n`),
        );
      },
      cancel: () => {
        stream.closed = true;
        this.#streams.delete(stream);
        this.#stopKeepaliveIfIdle();
      },
    }, new CountQueuingStrategy({ highWaterMark: MAX_QUEUED_EVENTS }));
    // The connection closes when the client goes away: free the slot at once.
    completed.then(() => this.#endStream(stream), () => this.#endStream(stream));
    if (this.#keepalive === undefined) {
      this.#keepalive = setInterval(() => this.#sendKeepalive(), this.#ctx.keepaliveMs);
    }
    const headers: Record<string, string> = {
      "content-type": "text/event-stream",
      "cache-control": "no-store",
    };
    if (caller.community !== null && caller.nonce !== null) {
      headers[RESPONSE_SIGNATURE_HEADER] = responseSignature(
        caller.community,
        caller.nonce,
        200,
        EMPTY_DIGEST,
      );
    }
    this.#ctx.metrics.request("/v1/events", 200, 0, 0);
    return { status: 200, headers, body };
  }

  #enqueue(s: Stream, text: string): boolean {
    if (s.closed) return false;
    try {
      s.controller.enqueue(encoder.encode(text));
    } catch {
      this.#endStream(s);
      return false;
    }
    if ((s.controller.desiredSize ?? 0) <= 0) {
      this.#ctx.log.warn("events", "dropping a stream whose client does not read", {
        key: s.caller.keyId,
      });
      this.#endStream(s);
      return false;
    }
    return true;
  }

  #broadcast(ev: ChangeEvent): void {
    if (this.#streams.size === 0) return;
    const data = JSON.stringify(ev);
    let digest: string | undefined;
    const rules = this.#ctx.rules();
    for (const s of [...this.#streams]) {
      if (accessFor(rules, ev.service.name, s.caller.keyId) === null) continue;
      let text = `event: change\nid: ${ev.seq}\ndata: ${data}\n`;
      if (s.caller.community !== null && s.caller.nonce !== null) {
        digest ??= sha256Hex(data);
        const sig = responseSignature(s.caller.community, s.caller.nonce, 200, digest);
        text += `sig: ${sig}\n`;
      }
      text += "\n";
      if (this.#enqueue(s, text)) this.#ctx.metrics.streamed(utf8Length(text));
    }
  }

  #sendKeepalive(): void {
    for (const s of [...this.#streams]) this.#enqueue(s, ": keepalive\n\n");
    this.#stopKeepaliveIfIdle();
  }

  #endStream(s: Stream): void {
    if (!s.closed) {
      s.closed = true;
      try {
        s.controller.close();
      } catch {
        // Already closed or errored.
      }
    }
    this.#streams.delete(s);
    this.#stopKeepaliveIfIdle();
  }

  #stopKeepaliveIfIdle(): void {
    if (this.#streams.size === 0 && this.#keepalive !== undefined) {
      clearInterval(this.#keepalive);
      this.#keepalive = undefined;
    }
  }
}
