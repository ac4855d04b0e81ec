/**
 * The typed client of faild, the failover state daemon. failc, failstat, failsh, failmon and the
 * tests all talk to faild through {@linkcode FaildClient}; `docs/protocol.md` describes the wire
 * protocol it speaks. It is the package's `./client` entry (`deno.json` `exports`), apart from
 * the script API of `mod.ts`: a tool importing it loads nothing of failsh.
 *
 * With a key (the community of the faild's community file) every request is signed and every
 * answer must carry a valid server signature; without a key requests go unsigned, which faild
 * allows only for reads the operator opened with a `-` community.
 *
 * @example Reading every service of a faild
 * ```ts ignore
 * import { FaildClient } from "./client.ts";
 * const client = new FaildClient("http://127.0.0.1:7100", { key: "s3cret" });
 * try {
 *   for (const s of (await client.list()).services) console.log(s.name, s.state);
 * } finally {
 *   client.close();
 * }
 * ```
 *
 * @module
 */
import {
  bodyDigest,
  CONTENT_DIGEST_HEADER,
  NonceSequence,
  RESPONSE_SIGNATURE_HEADER,
  signRequest,
  verifyResponse,
} from "./sign.ts";
import {
  type ChangeEvent,
  type Health,
  isServiceState,
  isValidName,
  LOG_LEVELS,
  type LogLevel,
  MAX_DETAIL_LENGTH,
  type ServiceList,
  type ServiceRecord,
  type ServiceState,
} from "./types.ts";
import { AuthError, FaildError, PeerUnreachableError } from "./client_errors.ts";
import { readBounded, StreamTooLargeError } from "./streams.ts";

export { AuthError, FaildError, PeerUnreachableError } from "./client_errors.ts";
export { resolveKey, type ResolveKeyOptions } from "./key.ts";

/** Default timeout of one request, in ms. */
export const DEFAULT_TIMEOUT_MS = 5_000;

/** Largest answer body the client reads, in bytes (1000 services with long details fit). */
export const MAX_RESPONSE_BYTES = 8 * 1024 * 1024;

/** Largest single server-sent event the client buffers, in bytes. */
export const MAX_EVENT_BYTES = 64 * 1024;

/** An event stream that sends nothing (not even a keep-alive) for this long is dead, in ms. */
export const EVENT_IDLE_TIMEOUT_MS = 45_000;

/**
 * Statuses faild may send before it could verify a request's signature, so their answers may be
 * unsigned. Every other answer to a signed request must carry a valid signature.
 */
const MAY_BE_UNSIGNED = new Set([400, 401, 408, 413, 415, 429, 503]);

/** Options of {@linkcode FaildClient}. */
export interface FaildClientOptions {
  /** The community (shared secret). Without it requests go unsigned. */
  key?: string;
  /** Timeout of each request in ms (default {@linkcode DEFAULT_TIMEOUT_MS}). */
  timeoutMs?: number;
  /** Extra PEM CA certificates to trust for `https://` faild URLs. */
  caCerts?: string[];
}

/** Options of {@linkcode FaildClient.set}. */
export interface SetOptions {
  /** Free text stored with the state (at most {@linkcode MAX_DETAIL_LENGTH} characters). */
  detail?: string;
  /**
   * The arbiter's epoch of the holding (a decimal string). Sent only when given: a faild older
   * than the arbiter refuses the field.
   */
  epoch?: string;
  /** Aborts the request. */
  signal?: AbortSignal;
}

/** Options of {@linkcode FaildClient.events}. */
export interface EventsOptions {
  /** Ends the stream (the iteration then finishes without error). */
  signal?: AbortSignal;
}

/** The answer of the debug-levels endpoints. */
export interface LogLevels {
  /** Level by facility; `*` is the default of facilities not listed. */
  levels: Record<string, LogLevel>;
}

function checkName(name: string): void {
  if (!isValidName(name)) {
    throw new RangeError(
      `Invalid service name "${name}": expected 1 to 64 letters, digits, ".", "_" or "-", ` +
        "starting with a letter or digit",
    );
  }
}

function checkRecord(value: unknown, where: string): ServiceRecord {
  const r = value as Partial<ServiceRecord> | null;
  if (
    typeof r !== "object" || r === null || typeof r.name !== "string" ||
    !isServiceState(r.state) || typeof r.lastChange !== "number" ||
    typeof r.changes !== "number" || typeof r.detail !== "string" || typeof r.setBy !== "string" ||
    (r.epoch !== undefined && typeof r.epoch !== "string")
  ) {
    throw new FaildError(`Invalid answer from faild: ${where} is not a service record`, 502);
  }
  return r as ServiceRecord;
}

function checkList(value: unknown): ServiceList {
  const l = value as Partial<ServiceList> | null;
  if (
    typeof l !== "object" || l === null || typeof l.host !== "string" ||
    typeof l.bootId !== "string" || typeof l.now !== "number" || !Array.isArray(l.services)
  ) {
    throw new FaildError("Invalid answer from faild: not a service list", 502);
  }
  l.services.forEach((s, i) => checkRecord(s, `services[${i}]`));
  return l as ServiceList;
}

/** Reads an answer body, refusing one larger than {@linkcode MAX_RESPONSE_BYTES}. */
async function readBody(body: ReadableStream<Uint8Array> | null): Promise<Uint8Array> {
  try {
    return (await readBounded(body, MAX_RESPONSE_BYTES, { overflow: "error" })).bytes;
  } catch (error) {
    if (!(error instanceof StreamTooLargeError)) throw error;
    throw new FaildError(
      `Invalid answer from faild: body is larger than ${MAX_RESPONSE_BYTES} bytes`,
      502,
    );
  }
}

/** What {@linkcode FaildClient} gets back from one exchange. */
interface Answer {
  status: number;
  body: Uint8Array;
}

/**
 * A client of one faild. Connections are kept alive and reused between calls (one connection pool
 * per client); call {@linkcode FaildClient.close} when done.
 *
 * Errors: {@linkcode PeerUnreachableError} when faild cannot be reached or times out,
 * {@linkcode AuthError} when it refuses the credentials or its answer is not properly signed,
 * {@linkcode FaildError} (with `.status`, e.g. 404) for other refusals, `RangeError` for a bad
 * service name, state or detail caught before sending.
 *
 * @example
 * ```ts ignore
 * import { FaildClient } from "./client.ts";
 * const client = new FaildClient("http://127.0.0.1:7100", { key: "s3cret" });
 * await client.set("web", "UP", { detail: "started by hand" });
 * console.log((await client.get("web")).changes);
 * client.close();
 * ```
 */
export class FaildClient {
  #base: URL;
  #key: string | undefined;
  /** This client's nonces: one session of counters (see NonceSequence). */
  #nonces = new NonceSequence();
  #timeoutMs: number;
  #http: Deno.HttpClient;
  #closed = false;
  #streams = new Set<AbortController>();

  /**
   * Creates a client. Nothing is sent until the first call.
   *
   * @param url The faild's base URL, e.g. `http://127.0.0.1:7100` (a path is not allowed).
   * @param options Key, request timeout and extra CA certificates.
   * @throws {TypeError} When the URL is not an `http:` or `https:` URL without a path.
   */
  constructor(url: string, options: FaildClientOptions = {}) {
    let base: URL;
    try {
      base = new URL(url);
    } catch {
      throw new TypeError(`Invalid faild URL "${url}": expected e.g. http://127.0.0.1:7100`);
    }
    if (base.protocol !== "http:" && base.protocol !== "https:") {
      throw new TypeError(`Invalid faild URL "${url}": scheme must be http or https`);
    }
    if (base.pathname !== "/" || base.search !== "" || base.hash !== "") {
      throw new TypeError(`Invalid faild URL "${url}": expected no path, e.g. http://host:7100`);
    }
    if (options.key === "") throw new TypeError("Invalid key: the key is empty");
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new RangeError(`Invalid timeout ${timeoutMs}: expected a positive number of ms`);
    }
    this.#base = base;
    this.#key = options.key;
    this.#timeoutMs = timeoutMs;
    this.#http = Deno.createHttpClient({
      ...(options.caCerts ? { caCerts: options.caCerts } : {}),
      poolIdleTimeout: 60_000,
      http2: false,
    });
  }

  /** The faild's base URL, without a trailing slash. */
  get url(): string {
    return this.#base.origin;
  }

  /** Whether requests are signed. */
  get signed(): boolean {
    return this.#key !== undefined;
  }

  /**
   * Asks faild whether it is alive (no right needed).
   *
   * @param options An abort signal.
   * @returns Host name, boot id, version, uptime and number of services.
   */
  async health(options: { signal?: AbortSignal } = {}): Promise<Health> {
    const h = this.#json(await this.#request("GET", "/v1/health", options)) as Partial<Health>;
    if (typeof h !== "object" || h === null || typeof h.bootId !== "string") {
      throw new FaildError("Invalid answer from faild: not a health record", 502);
    }
    return h as Health;
  }

  /**
   * Lists the services the caller may read.
   *
   * @param options An abort signal.
   * @returns Host, boot id, faild's clock and the services sorted by name.
   */
  async list(options: { signal?: AbortSignal } = {}): Promise<ServiceList> {
    return checkList(this.#json(await this.#request("GET", "/v1/services", options)));
  }

  /**
   * Reads one service.
   *
   * @param name The service name.
   * @param options An abort signal.
   * @returns The record.
   * @throws {FaildError} With status 404 when faild holds no such service.
   */
  async get(name: string, options: { signal?: AbortSignal } = {}): Promise<ServiceRecord> {
    checkName(name);
    const answer = await this.#request("GET", `/v1/services/${name}`, options);
    return checkRecord(this.#json(answer), "the answer");
  }

  /**
   * Creates or updates a service. Its change counter and last-change time move only when the
   * state differs from the stored one.
   *
   * @param name The service name.
   * @param state The new state.
   * @param options Detail text and an abort signal.
   * @returns The record after the change.
   */
  async set(name: string, state: ServiceState, options: SetOptions = {}): Promise<ServiceRecord> {
    checkName(name);
    if (!isServiceState(state)) {
      throw new RangeError(`Invalid state "${state}": expected UP, RECOVER or FAIL`);
    }
    if (options.detail !== undefined && options.detail.length > MAX_DETAIL_LENGTH) {
      throw new RangeError(
        `Invalid detail: ${options.detail.length} characters, at most ${MAX_DETAIL_LENGTH}`,
      );
    }
    const body = JSON.stringify({
      state,
      ...(options.detail === undefined ? {} : { detail: options.detail }),
      ...(options.epoch === undefined ? {} : { epoch: options.epoch }),
    });
    const answer = await this.#request("PUT", `/v1/services/${name}`, {
      body,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return checkRecord(this.#json(answer), "the answer");
  }

  /**
   * Removes a service.
   *
   * @param name The service name.
   * @param options An abort signal.
   * @returns The record as it was.
   * @throws {FaildError} With status 404 when faild holds no such service.
   */
  async delete(name: string, options: { signal?: AbortSignal } = {}): Promise<ServiceRecord> {
    checkName(name);
    const answer = await this.#request("DELETE", `/v1/services/${name}`, options);
    return checkRecord(this.#json(answer), "the answer");
  }

  /**
   * Reads faild's Prometheus metrics (only services the caller may read appear).
   *
   * @param options An abort signal.
   * @returns The Prometheus text exposition.
   */
  async metrics(options: { signal?: AbortSignal } = {}): Promise<string> {
    const answer = await this.#request("GET", "/metrics", options);
    return new TextDecoder().decode(answer.body);
  }

  /**
   * Reads the log level of every facility (needs a read right on `*`).
   *
   * @param options An abort signal.
   * @returns Level by facility, `*` being the default.
   */
  async logLevels(options: { signal?: AbortSignal } = {}): Promise<LogLevels> {
    return this.#levels(this.#json(await this.#request("GET", "/v1/debug/levels", options)));
  }

  /**
   * Changes the log level of a facility while faild runs (needs a read-write right on `*`).
   *
   * @param facility A facility name such as `http`, `auth`, `state`, or `*` for the default.
   * @param level The new level.
   * @param options An abort signal.
   * @returns The levels after the change.
   */
  async setLogLevel(
    facility: string,
    level: LogLevel,
    options: { signal?: AbortSignal } = {},
  ): Promise<LogLevels> {
    if (!(LOG_LEVELS as readonly string[]).includes(level)) {
      throw new RangeError(
        `Invalid log level "${level}": expected one of ${LOG_LEVELS.join(", ")}`,
      );
    }
    const answer = await this.#request("PUT", "/v1/debug/levels", {
      body: JSON.stringify({ facility, level }),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return this.#levels(this.#json(answer));
  }

  /**
   * Follows faild's stream of changes (server-sent events) of the services the caller may read.
   * The iteration ends when `signal` aborts or the client is closed; it throws
   * {@linkcode PeerUnreachableError} when the stream breaks or stays silent for
   * {@linkcode EVENT_IDLE_TIMEOUT_MS}, and {@linkcode AuthError} on a badly signed event.
   *
   * @param options An abort signal that ends the stream.
   * @returns An async iterable of change events, in `seq` order.
   */
  async *events(options: EventsOptions = {}): AsyncGenerator<ChangeEvent, void, undefined> {
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.signal?.aborted) return;
    this.#streams.add(controller);
    let idle: ReturnType<typeof setTimeout> | undefined;
    let idleFired = false;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        idleFired = true;
        controller.abort();
      }, EVENT_IDLE_TIMEOUT_MS);
    };
    try {
      idle = setTimeout(() => {
        idleFired = true;
        controller.abort();
      }, this.#timeoutMs);
      let sent: { response: Response; nonce: string | undefined };
      try {
        sent = await this.#send("GET", "/v1/events", "", controller.signal, {
          accept: "text/event-stream",
        });
      } catch (error) {
        if (idleFired) {
          throw new PeerUnreachableError(this.url, `no answer within ${this.#timeoutMs} ms`);
        }
        if (options.signal?.aborted || this.#closed) return;
        throw error;
      }
      const { response, nonce } = sent;
      if (response.status !== 200) {
        const body = await readBody(response.body);
        this.#check({ status: response.status, body }, nonce, response);
        throw new FaildError(`Unexpected answer from faild: status ${response.status}`, 502);
      }
      if (this.#key !== undefined && nonce !== undefined) {
        const sig = response.headers.get(RESPONSE_SIGNATURE_HEADER);
        if (!verifyResponse(this.#key, sig, { nonce, status: 200, body: "" })) {
          await response.body?.cancel().catch(() => {});
          throw new AuthError(
            "Untrusted answer from faild: event stream is not signed with the key",
            200,
          );
        }
      }
      if (response.body === null) return;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      // Loaded when a stream is followed: mod.ts re-exports this client, and the sandboxed
      // child that imports mod.ts must not load an npm package (lib/sse.ts uses one).
      const { SseParser } = await import("./sse.ts");
      const parser = new SseParser({ maxEventChars: MAX_EVENT_BYTES, what: "faild's events" });
      let lastSeq = 0;
      arm();
      try {
        while (true) {
          let chunk: ReadableStreamReadResult<string>;
          try {
            chunk = await reader.read();
          } catch (error) {
            if (options.signal?.aborted || this.#closed) return;
            if (idleFired) {
              throw new PeerUnreachableError(
                this.url,
                `event stream silent for ${EVENT_IDLE_TIMEOUT_MS} ms`,
              );
            }
            throw new PeerUnreachableError(this.url, `event stream broke: ${error}`, {
              cause: error,
            });
          }
          if (chunk.done) {
            if (options.signal?.aborted || this.#closed) return;
            throw new PeerUnreachableError(this.url, "event stream closed by faild");
          }
          arm();
          let events;
          try {
            events = parser.push(chunk.value);
          } catch (error) {
            throw new FaildError(`Invalid answer from faild: ${(error as Error).message}`, 502);
          }
          for (const { event, data, fields } of events) {
            if (event !== "change") continue;
            if (this.#key !== undefined && nonce !== undefined) {
              if (
                !verifyResponse(this.#key, fields.sig ?? null, { nonce, status: 200, body: data })
              ) {
                throw new AuthError(
                  "Untrusted answer from faild: event is not signed with the key",
                  200,
                );
              }
            }
            const ev = JSON.parse(data) as ChangeEvent;
            if (typeof ev.seq !== "number" || ev.seq <= lastSeq) {
              throw new AuthError(
                `Untrusted answer from faild: event seq ${ev.seq} after ${lastSeq}`,
                200,
              );
            }
            lastSeq = ev.seq;
            checkRecord(ev.service, "the event's service");
            yield ev;
          }
        }
      } finally {
        await reader.cancel().catch(() => {});
        reader.releaseLock();
      }
    } finally {
      clearTimeout(idle);
      options.signal?.removeEventListener("abort", onAbort);
      this.#streams.delete(controller);
      controller.abort();
    }
  }

  /** Ends every event stream and closes the connection pool. The client cannot be used after. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of this.#streams) c.abort();
    this.#streams.clear();
    this.#http.close();
  }

  #levels(value: unknown): LogLevels {
    const v = value as Partial<LogLevels> | null;
    if (typeof v !== "object" || v === null || typeof v.levels !== "object" || v.levels === null) {
      throw new FaildError("Invalid answer from faild: not a log level list", 502);
    }
    return v as LogLevels;
  }

  #json(answer: Answer): unknown {
    try {
      return JSON.parse(new TextDecoder().decode(answer.body));
    } catch {
      throw new FaildError("Invalid answer from faild: body is not JSON", 502);
    }
  }

  async #send(
    method: string,
    path: string,
    body: string,
    signal: AbortSignal,
    extraHeaders: Record<string, string> = {},
  ): Promise<{ response: Response; nonce: string | undefined }> {
    if (this.#closed) throw new TypeError("Cannot send request: the client is closed");
    const headers: Record<string, string> = { ...extraHeaders };
    let nonce: string | undefined;
    if (this.#key !== undefined) {
      const signed = signRequest(this.#key, { method, path, body, nonces: this.#nonces });
      headers["authorization"] = signed.header;
      // The signature covers the body's digest: faild checks it before reading the body.
      if (body !== "") headers[CONTENT_DIGEST_HEADER] = bodyDigest(body);
      nonce = signed.nonce;
    }
    if (body !== "") headers["content-type"] = "application/json";
    try {
      const response = await fetch(new URL(path, this.#base), {
        method,
        headers,
        ...(body !== "" ? { body } : {}),
        signal,
        client: this.#http,
      });
      return { response, nonce };
    } catch (error) {
      throw this.#mapFetchError(error, signal);
    }
  }

  #mapFetchError(error: unknown, signal: AbortSignal): unknown {
    if (error instanceof FaildError) return error;
    const e = error as Error;
    if (e?.name === "TimeoutError") {
      return new PeerUnreachableError(this.url, `no answer within ${this.#timeoutMs} ms`, {
        cause: error,
      });
    }
    if (e?.name === "AbortError" || signal.aborted) {
      const reason = signal.reason as Error | undefined;
      if (reason?.name === "TimeoutError") {
        return new PeerUnreachableError(this.url, `no answer within ${this.#timeoutMs} ms`, {
          cause: error,
        });
      }
      return error;
    }
    // Deno's fetch says "fetch failed"; the reason (e.g. "Connection refused") is in the cause.
    let deepest: unknown = error;
    while ((deepest as Error)?.cause !== undefined) deepest = (deepest as Error).cause;
    const text = (deepest as Error)?.message ?? e?.message ?? String(error);
    const detail = text.split("\n")[0]!.replace(/^error sending request for url \([^)]*\): /, "");
    return new PeerUnreachableError(this.url, detail, { cause: error });
  }

  async #request(
    method: string,
    path: string,
    options: { body?: string; signal?: AbortSignal },
  ): Promise<Answer> {
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    for (let attempt = 1;; attempt++) {
      const { response, nonce } = await this.#send(method, path, options.body ?? "", signal);
      let body: Uint8Array;
      try {
        body = await readBody(response.body);
      } catch (error) {
        throw this.#mapFetchError(error, signal);
      }
      const answer = { status: response.status, body };
      try {
        this.#check(answer, nonce, response);
      } catch (error) {
        // A refused request changed nothing: after a new session, sending it again is safe.
        if (attempt === 1 && error instanceof AuthError && error.replayed) continue;
        throw error;
      }
      return answer;
    }
  }

  /** Verifies the answer's signature and turns error statuses into errors. */
  #check(answer: Answer, nonce: string | undefined, response: Response): void {
    const { status, body } = answer;
    let message = `faild answered ${status}`;
    let reason: unknown;
    if (status >= 400) {
      try {
        const parsed = JSON.parse(new TextDecoder().decode(body)) as {
          error?: unknown;
          reason?: unknown;
        };
        if (typeof parsed.error === "string") message = parsed.error;
        reason = parsed.reason;
      } catch {
        // Keep the generic message.
      }
    }
    if (this.#key !== undefined && nonce !== undefined) {
      const sig = response.headers.get(RESPONSE_SIGNATURE_HEADER);
      const valid = verifyResponse(this.#key, sig, { nonce, status, body });
      if (!valid && (sig !== null || !MAY_BE_UNSIGNED.has(status))) {
        throw new AuthError(
          sig === null
            ? `Untrusted answer from faild: status ${status} is not signed`
            : `Untrusted answer from faild: status ${status} has a bad signature`,
          status,
        );
      }
    }
    if (status === 401 || status === 403) {
      const error = new AuthError(message, status);
      if (status === 401 && this.#key !== undefined && reason === "replayed") {
        // faild has seen this session's counter already: whoever pushed it there (a holder of
        // the same key replaying with a higher counter) cannot follow us into a new session.
        this.#nonces.renew();
        error.replayed = true;
      }
      throw error;
    }
    if (status >= 400) throw new FaildError(message, status);
  }
}
