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
  EPOCH_PATTERN,
  type Health,
  isServiceState,
  LOG_LEVELS,
  MAX_DETAIL_LENGTH,
  type ServiceList,
  type ServiceRecord,
} from "../../lib/types.ts";
import { accessFor, type CommunityRules } from "./community.ts";
import type { Metrics } from "./metrics.ts";
import { constantTimeEqual, sha256Hex } from "../../lib/hmac.ts";
import type { CompactNonceCache } from "./nonce.ts";
import {
  CONTENT_DIGEST_HEADER,
  RESPONSE_SIGNATURE_HEADER,
  responseSignature,
} from "../../lib/sign.ts";
import {
  HttpBodyError,
  type HttpRequest,
  type HttpResponse,
  type HttpStats,
  utf8Length,
} from "./http.ts";
import type { StateWriter } from "./persist.ts";
import { type Caller, HttpError, RateLimitedLog, RequestAuth, UNSIGNED } from "./_auth.ts";
import { EventStreams } from "./_events.ts";

export { MAX_QUEUED_EVENTS } from "./_events.ts";
import { type ServiceStore, TooManyServicesError } from "./store.ts";

/** Default largest request body, in bytes. */
export const DEFAULT_MAX_BODY_BYTES = 4096;
/** Default time a client has to send its request body, in ms. */
export const DEFAULT_BODY_TIMEOUT_MS = 5_000;
/** Default most concurrent event streams. */
export const DEFAULT_MAX_STREAMS = 64;
/** Interval of the `: keepalive` comment on event streams, in ms. */
export const KEEPALIVE_MS = 15_000;

const FACILITY_PATTERN = /^(\*|[a-z][a-z0-9_.-]{0,31})$/;

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

const EMPTY_BODY = new Uint8Array(0);

/** What an operation answers, before it is signed. */
interface Dispatched {
  status: number;
  body: unknown;
  contentType?: string;
  headers?: Record<string, string>;
  digest?: string;
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
  #auth: RequestAuth;
  #events: EventStreams;
  #unsubscribe: () => void;
  #errorLog = new RateLimitedLog(5);
  #listCache = new Map<string, { version: number; rules: CommunityRules; list: ServiceRecord[] }>();
  #bodyCache = new Map<
    string,
    { version: number; rules: CommunityRules; now: number; text: string; digest: string }
  >();

  /**
   * Creates the handler and subscribes to store changes.
   *
   * @param ctx The daemon's parts.
   */
  constructor(ctx: ServerContext) {
    this.#ctx = ctx;
    this.#auth = new RequestAuth(ctx);
    this.#events = new EventStreams(ctx);
    this.#unsubscribe = ctx.store.onChange((ev) => this.#events.broadcast(ev));
  }

  /** Open event streams. */
  get streams(): number {
    return this.#events.size;
  }

  /** Ends every event stream and stops listening to the store. */
  close(): void {
    this.#unsubscribe();
    this.#events.close();
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
      caller = this.#auth.authenticate(req);
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
      this.#auth.authorize(req.method, route, name, caller);
      if (req.contentLength > 0) return this.#withBody(req, route, name, caller, started);
      if (route === "/v1/events") return this.#events.open(caller, req.closed);
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
      if (route === "/v1/events") return this.#events.open(caller, req.closed);
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
      throw this.#auth.fail(
        401,
        "bad_signature",
        `Bad signature: the body does not match the ${CONTENT_DIGEST_HEADER} its signature covers`,
        req.remote,
      );
    }
    return body;
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
        this.#auth.requireAnyRead(caller, "GET /v1/services");
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
          eventStreams: this.#events.size,
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
          this.#auth.require(caller, "*", "RO", "GET /v1/debug/levels");
          return { status: 200, body: { levels: ctx.log.levels() } };
        }
        this.#auth.require(caller, "*", "RW", "PUT /v1/debug/levels");
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
    this.#auth.require(caller, name, "RO", `GET /v1/services/${name}`);
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
    this.#auth.require(caller, name, "RW", `${method} /v1/services/${name}`);
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
      if (k !== "state" && k !== "detail" && k !== "epoch") {
        throw new HttpError(
          400,
          `Invalid body: unknown field "${k}" (expected state, detail, epoch)`,
        );
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
    if (v.epoch !== undefined && (typeof v.epoch !== "string" || !EPOCH_PATTERN.test(v.epoch))) {
      throw new HttpError(
        400,
        `Invalid epoch: ${
          JSON.stringify(v.epoch).slice(0, 40)
        } is not a decimal string of 1-19 digits (the arbiter's fencing token)`,
      );
    }
    let result;
    try {
      result = ctx.store.set(name, v.state, {
        setBy: caller.keyId ?? "anonymous",
        ...(typeof v.detail === "string" ? { detail: v.detail } : {}),
        ...(typeof v.epoch === "string" ? { epoch: v.epoch } : {}),
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
}
