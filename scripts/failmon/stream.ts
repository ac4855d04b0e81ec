/**
 * The client side of failsh's monitor stream (`GET /v1/stream`, server-sent events, read with
 * `lib/sse.ts`): a validator for {@linkcode FailshSnapshot}, and {@linkcode SnapshotStream}, which
 * follows a monitor port, reconnects with exponential backoff and reports every connection state
 * so a user interface can show "connection lost, retrying".
 *
 * @module
 */
import type { FailshSnapshot } from "../../lib/types.ts";
import { SseParser } from "../../lib/sse.ts";

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function need(ok: boolean, what: string): void {
  if (!ok) throw new TypeError(`Invalid monitor snapshot: ${what}`);
}

/** The fields the monitors read of each host and service, and their types. */
const SNAPSHOT_FIELDS: ReadonlyArray<readonly [string, ReadonlyArray<readonly [string, string]>]> =
  [
    ["hosts", [["name", "string"], ["reachable", "boolean"], ["services", "array"]]],
    ["services", [["name", "string"], ["state", "string"], ["masters", "array"], [
      "slaves",
      "array",
    ]]],
  ];

/**
 * Checks that a parsed JSON value has the shape of a {@linkcode FailshSnapshot} (the fields the
 * monitors read), so that a wrong port or an incompatible failsh gives a clear error instead of a
 * broken screen.
 *
 * @param value The parsed JSON.
 * @returns The same value, typed.
 * @throws {TypeError} Naming the first field that is missing or of the wrong type.
 *
 * @example
 * ```ts
 * import { validateSnapshot } from "./stream.ts";
 * import { deepEqual } from "node:assert/strict";
 * const s = validateSnapshot({
 *   host: "alpha", startedAt: 0, now: 1, hosts: [], services: [], addresses: [], events: [],
 * });
 * deepEqual(s.host, "alpha");
 * ```
 */
export function validateSnapshot(value: unknown): FailshSnapshot {
  need(isObject(value), "expected a JSON object");
  const v = value as Record<string, unknown>;
  need(typeof v.host === "string", "host must be a string");
  need(typeof v.now === "number", "now must be a number");
  need(typeof v.startedAt === "number", "startedAt must be a number");
  for (const key of ["hosts", "services", "addresses", "events"]) {
    need(Array.isArray(v[key]), `${key} must be an array`);
  }
  for (const [list, fields] of SNAPSHOT_FIELDS) {
    for (const [i, item] of (v[list] as unknown[]).entries()) {
      need(isObject(item), `${list}[${i}] must be an object`);
      for (const [field, type] of fields) {
        const value = (item as Record<string, unknown>)[field];
        const ok = (Array.isArray(value) ? "array" : typeof value) === type;
        need(ok, `${list}[${i}].${field} must be ${type === "array" ? "an" : "a"} ${type}`);
      }
    }
  }
  return value as FailshSnapshot;
}

/**
 * Parses and validates the JSON text of one snapshot.
 *
 * @param text The JSON text (a `snapshot` event's data or a `/v1/snapshot` body).
 * @returns The snapshot.
 * @throws {TypeError} When the text is not JSON or not a snapshot.
 *
 * @example
 * ```ts
 * import { parseSnapshot } from "./stream.ts";
 * import { deepEqual } from "node:assert/strict";
 * const text = '{"host":"a","startedAt":0,"now":0,"hosts":[],"services":[],"addresses":[],"events":[]}';
 * deepEqual(parseSnapshot(text).host, "a");
 * ```
 */
export function parseSnapshot(text: string): FailshSnapshot {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new TypeError(`Invalid monitor snapshot: not JSON: ${(error as Error).message}`);
  }
  return validateSnapshot(value);
}

/**
 * Normalises a monitor URL given on the command line: adds `http://` when no scheme is given and
 * removes trailing slashes.
 *
 * @param url A URL such as `http://127.0.0.1:1848`, `127.0.0.1:1848` or `http://host/monitor/`.
 * @returns The base URL without a trailing slash.
 * @throws {TypeError} When the text is not a usable http(s) URL.
 *
 * @example
 * ```ts
 * import { normalizeBaseUrl } from "./stream.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(normalizeBaseUrl("127.0.0.1:1848"), "http://127.0.0.1:1848");
 * ```
 */
export function normalizeBaseUrl(url: string): string {
  const text = /^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `http://${url}`;
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch {
    throw new TypeError(`Invalid monitor URL "${url}": expected e.g. http://127.0.0.1:1848`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new TypeError(`Invalid monitor URL "${url}": the scheme must be http or https`);
  }
  if (parsed.search || parsed.hash) {
    throw new TypeError(`Invalid monitor URL "${url}": no query or fragment is allowed`);
  }
  return parsed.href.replace(/\/+$/, "");
}

/** The connection state of a {@linkcode SnapshotStream}. */
export type StreamStatus =
  | { kind: "connecting"; attempt: number }
  | { kind: "connected"; since: number }
  | { kind: "lost"; error: string; attempt: number; retryInMs: number; since: number }
  | { kind: "closed" };

/** Options of {@linkcode SnapshotStream}. */
export interface SnapshotStreamOptions {
  /** Called with every snapshot received (the first one right after connecting). */
  onSnapshot(snapshot: FailshSnapshot): void;
  /** Called on every change of connection state. */
  onStatus?: (status: StreamStatus) => void;
  /** First delay before reconnecting (default 250 ms); doubles at each failure. */
  minBackoffMs?: number;
  /** Longest delay between reconnects (default 10 s). */
  maxBackoffMs?: number;
  /** With no byte for this long (the server sends a keepalive every 15 s) reconnect (45 s). */
  idleTimeoutMs?: number;
  /** Time limit to get the response headers (default 10 s). */
  connectTimeoutMs?: number;
  /** Largest event accepted, in characters (default 8 Mi, `lib/sse.ts`). */
  maxEventChars?: number;
  /** Stop after this many failed attempts in a row (default: never). */
  maxAttempts?: number;
  /** Path of the stream below the base URL (default `/v1/stream`). */
  path?: string;
  /** Name of the SSE event carrying the data (default `snapshot`). */
  eventName?: string;
  /** Parser of the event data (default {@linkcode parseSnapshot}). */
  parse?: (data: string) => FailshSnapshot;
}

/**
 * Follows a failsh monitor port's `GET /v1/stream`: delivers every snapshot, reconnects with
 * exponential backoff (with jitter) after any failure, and reports its connection state. Nothing
 * is delivered when nothing changed: the server pushes, the client never polls.
 *
 * @example Following a monitor port until a first snapshot arrives
 * ```ts ignore
 * import { SnapshotStream } from "./stream.ts";
 * const stream = new SnapshotStream("http://127.0.0.1:1848", {
 *   onSnapshot: (s) => { console.log(s.host); stream.close(); },
 *   onStatus: (st) => console.error(st.kind),
 * });
 * await stream.done;
 * ```
 */
export class SnapshotStream {
  #url: string;
  #options: SnapshotStreamOptions;
  #abort = new AbortController();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #wake: (() => void) | undefined;
  #status: StreamStatus = { kind: "connecting", attempt: 1 };
  #closed = false;
  /** Resolves once the stream is closed (by {@linkcode close} or after `maxAttempts`). */
  readonly done: Promise<void>;

  /**
   * Starts following a monitor port.
   *
   * @param baseUrl The monitor port's base URL, e.g. `http://127.0.0.1:1848`.
   * @param options Callbacks and reconnect policy.
   */
  constructor(baseUrl: string, options: SnapshotStreamOptions) {
    this.#url = normalizeBaseUrl(baseUrl) + (options.path ?? "/v1/stream");
    this.#options = options;
    this.done = this.#run();
  }

  /** The current connection state. */
  get status(): StreamStatus {
    return this.#status;
  }

  /** The URL followed. */
  get url(): string {
    return this.#url;
  }

  /** Stops following: aborts the request and any pending retry. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#wake?.();
  }

  #setStatus(status: StreamStatus): void {
    this.#status = status;
    try {
      this.#options.onStatus?.(status);
    } catch {
      // A failing status callback must not stop the stream.
    }
  }

  async #run(): Promise<void> {
    const min = this.#options.minBackoffMs ?? 250;
    const max = this.#options.maxBackoffMs ?? 10_000;
    let failures = 0;
    while (!this.#closed) {
      this.#setStatus({ kind: "connecting", attempt: failures + 1 });
      let error: string;
      try {
        error = await this.#once(() => {
          failures = 0;
        });
      } catch (e) {
        error = e instanceof Error ? e.message : String(e);
      }
      if (this.#closed) break;
      failures++;
      if (this.#options.maxAttempts !== undefined && failures >= this.#options.maxAttempts) {
        this.#setStatus({
          kind: "lost",
          error,
          attempt: failures,
          retryInMs: Number.POSITIVE_INFINITY,
          since: Date.now(),
        });
        this.#closed = true;
        break;
      }
      const base = Math.min(max, min * 2 ** Math.min(failures - 1, 20));
      const delay = Math.round(base * (0.8 + Math.random() * 0.4));
      this.#setStatus({
        kind: "lost",
        error,
        attempt: failures,
        retryInMs: delay,
        since: Date.now(),
      });
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          resolve();
        }, delay);
      });
      this.#wake = undefined;
    }
    this.#setStatus({ kind: "closed" });
  }

  /** One connection; resolves with the reason it ended. */
  async #once(onConnected: () => void): Promise<string> {
    const attempt = new AbortController();
    const onAbort = () => attempt.abort();
    this.#abort.signal.addEventListener("abort", onAbort);
    const connectTimeout = this.#options.connectTimeoutMs ?? 10_000;
    const idleTimeout = this.#options.idleTimeoutMs ?? 45_000;
    let idleTimer: ReturnType<typeof setTimeout> | undefined = setTimeout(
      () => attempt.abort(),
      connectTimeout,
    );
    let idleFired = false;
    const armIdle = () => {
      if (idleTimer !== undefined) clearTimeout(idleTimer);
      idleTimer = setTimeout(() => {
        idleFired = true;
        attempt.abort();
      }, idleTimeout);
    };
    try {
      let response: Response;
      try {
        response = await fetch(this.#url, {
          signal: attempt.signal,
          headers: { accept: "text/event-stream" },
        });
      } catch (e) {
        if (this.#closed) return "closed";
        if (attempt.signal.aborted) return `no answer within ${connectTimeout} ms`;
        return describeFetchError(e);
      }
      if (!response.ok || !response.body) {
        await response.body?.cancel();
        return `HTTP ${response.status} ${response.statusText} from ${this.#url}`;
      }
      const type = response.headers.get("content-type") ?? "";
      if (!type.startsWith("text/event-stream")) {
        await response.body.cancel();
        return `${this.#url} is not an event stream (content-type "${type}")`;
      }
      armIdle();
      const parser = new SseParser({
        what: "the monitor stream",
        ...(this.#options.maxEventChars === undefined
          ? {}
          : { maxEventChars: this.#options.maxEventChars }),
      });
      const parse = this.#options.parse ?? parseSnapshot;
      const eventName = this.#options.eventName ?? "snapshot";
      let connected = false;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      try {
        for (;;) {
          let chunk: ReadableStreamReadResult<string>;
          try {
            chunk = await reader.read();
          } catch {
            if (this.#closed) return "closed";
            if (idleFired) return `no data for ${idleTimeout} ms`;
            return "the connection was reset";
          }
          if (chunk.done) return "the server closed the stream";
          armIdle();
          for (const event of parser.push(chunk.value)) {
            if (event.event !== eventName) continue;
            const snapshot = parse(event.data);
            if (!connected) {
              connected = true;
              onConnected();
              this.#setStatus({ kind: "connected", since: Date.now() });
            }
            if (this.#closed) return "closed";
            this.#options.onSnapshot(snapshot);
          }
        }
      } finally {
        await reader.cancel().catch(() => {});
      }
    } finally {
      if (idleTimer !== undefined) clearTimeout(idleTimer);
      this.#abort.signal.removeEventListener("abort", onAbort);
    }
  }
}

/**
 * Turns a fetch failure into a short sentence (`connection refused`, `host not found`, …).
 *
 * @param error What fetch threw.
 * @returns A lower-case description.
 *
 * @example
 * ```ts
 * import { describeFetchError } from "./stream.ts";
 * console.log(describeFetchError(new TypeError("error sending request: Connection refused")));
 * ```
 */
export function describeFetchError(error: unknown): string {
  const text = error instanceof Error ? `${error.message} ${String(error.cause ?? "")}` : "";
  if (/refused/i.test(text)) return "connection refused";
  if (/dns|lookup|not known|resolve/i.test(text)) return "host not found";
  if (/timed? ?out/i.test(text)) return "connection timed out";
  if (/reset/i.test(text)) return "the connection was reset";
  const message = error instanceof Error ? error.message : String(error);
  return message.split("\n")[0] ?? message;
}

/**
 * Reads one snapshot from `GET /v1/snapshot`.
 *
 * @param baseUrl The monitor port's base URL.
 * @param options Time limit in ms (default 10 s).
 * @returns The snapshot.
 * @throws {Error} With a sentence naming the URL and the cause when it cannot be read.
 *
 * @example
 * ```ts ignore
 * import { fetchSnapshot } from "./stream.ts";
 * console.log((await fetchSnapshot("http://127.0.0.1:1848")).host);
 * ```
 */
export async function fetchSnapshot(
  baseUrl: string,
  options: { timeoutMs?: number } = {},
): Promise<FailshSnapshot> {
  const url = normalizeBaseUrl(baseUrl) + "/v1/snapshot";
  const timeoutMs = options.timeoutMs ?? 10_000;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  let response: Response;
  let text: string;
  try {
    try {
      response = await fetch(url, { signal: abort.signal });
      text = await response.text();
    } catch (e) {
      const why = abort.signal.aborted ? `no answer within ${timeoutMs} ms` : describeFetchError(e);
      throw new Error(`Cannot reach failsh monitor at ${url}: ${why}`);
    }
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok) {
    throw new Error(`Cannot read ${url}: HTTP ${response.status} ${text.slice(0, 200)}`);
  }
  return parseSnapshot(text);
}
