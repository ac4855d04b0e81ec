/**
 * A small typed client of etcd 3.4's v3 JSON gateway (`POST /v3/...` over plain HTTP), enough for
 * the arbiter: leases (grant, keepalive, revoke, time-to-live), the acquire and confirm
 * transactions, ranges, a conditional delete and a watch. No gRPC client is needed.
 *
 * The gateway's pitfalls, each handled here and tested against a real etcd in
 * `etcd_gateway_test.ts`:
 *
 * - int64 fields (lease IDs, revisions, TTLs) come as JSON strings, and lease IDs exceed 2^53:
 *   they are kept as decimal strings, never turned into numbers.
 * - Zero values are omitted (`succeeded: false`, `TTL: 0`, event type `PUT`, `lease: 0`,
 *   `count: 0`): an absent field reads as its zero value.
 * - `/v3/lease/keepalive` is a stream: one POST gets one result line; an expired (or unknown) lease
 *   comes back as a result without `TTL`, not as an error.
 * - The server may raise a short TTL (to 1.5 × the election timeout): the TTL it returns is used.
 * - A unary error is a non-200 status with `{"error","code"}`; an error in a stream is a line
 *   `{"error":{"grpc_code","message"}}`.
 *
 * Every request has a time limit (an `AbortSignal` per attempt), every body read is bounded, and
 * a call fails over between endpoints when a member cannot answer. Errors are typed:
 * {@linkcode EtcdUnreachableError} (no member answered, or none could serve: no leader, timeout),
 * {@linkcode EtcdRefusedError} (etcd answered no: e.g. lease not found) and
 * {@linkcode EtcdProtocolError} (an answer that is not what etcd sends).
 *
 * @module
 */

/** The three kinds of failure of a gateway call. */
export type EtcdErrorKind = "unreachable" | "refused" | "protocol";

/** Options of {@linkcode EtcdError}. */
export interface EtcdErrorOptions {
  /** The endpoint that answered (or last failed), if any. */
  endpoint?: string | null;
  /** The gRPC status code etcd reported, if any. */
  grpcCode?: number | null;
  /** The underlying error. */
  cause?: unknown;
}

/** A failed gateway call. */
export class EtcdError extends Error {
  /** What kind of failure. */
  readonly kind: EtcdErrorKind;
  /** The endpoint that answered (or last failed), or `null`. */
  readonly endpoint: string | null;
  /** The gRPC status code etcd reported, or `null`. */
  readonly grpcCode: number | null;

  /**
   * Creates the error.
   *
   * @param kind The kind.
   * @param message The message.
   * @param options Endpoint, gRPC code, cause.
   */
  constructor(kind: EtcdErrorKind, message: string, options: EtcdErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "EtcdError";
    this.kind = kind;
    this.endpoint = options.endpoint ?? null;
    this.grpcCode = options.grpcCode ?? null;
  }
}

/** No member answered in time, or none could serve the request (no leader, timed out). */
export class EtcdUnreachableError extends EtcdError {
  /**
   * Creates the error.
   *
   * @param message The message.
   * @param options Endpoint, gRPC code, cause.
   */
  constructor(message: string, options: EtcdErrorOptions = {}) {
    super("unreachable", message, options);
    this.name = "EtcdUnreachableError";
  }
}

/** etcd answered and refused the request (e.g. `requested lease not found`, invalid argument). */
export class EtcdRefusedError extends EtcdError {
  /**
   * Creates the error.
   *
   * @param message The message.
   * @param options Endpoint, gRPC code, cause.
   */
  constructor(message: string, options: EtcdErrorOptions = {}) {
    super("refused", message, options);
    this.name = "EtcdRefusedError";
  }
}

/** The answer was not what etcd's gateway sends (not JSON, a field of the wrong type, too big). */
export class EtcdProtocolError extends EtcdError {
  /**
   * Creates the error.
   *
   * @param message The message.
   * @param options Endpoint, cause.
   */
  constructor(message: string, options: EtcdErrorOptions = {}) {
    super("protocol", message, options);
    this.name = "EtcdProtocolError";
  }
}

/** gRPC status code `NOT_FOUND`: etcd's answer to an unknown lease. */
export const GRPC_NOT_FOUND = 5;

/**
 * Whether an error means the lease is gone (etcd answered `requested lease not found`).
 *
 * @param e Any error.
 * @returns `true` for an {@linkcode EtcdRefusedError} with gRPC code 5.
 *
 * @example
 * ```ts
 * import { EtcdRefusedError, isLeaseNotFound } from "./etcd_gateway.ts";
 * const e = new EtcdRefusedError("etcdserver: requested lease not found", { grpcCode: 5 });
 * console.log(isLeaseNotFound(e)); // true
 * ```
 */
export function isLeaseNotFound(e: unknown): boolean {
  return e instanceof EtcdRefusedError && e.grpcCode === GRPC_NOT_FOUND;
}

/** The header of every etcd answer (int64 fields as decimal strings, `"0"` when omitted). */
export interface ResponseHeader {
  /** Cluster id. */
  clusterId: string;
  /** Id of the member that answered. */
  memberId: string;
  /** The store's revision when the request was served. */
  revision: string;
  /** The raft term. */
  raftTerm: string;
}

/** A key-value pair as etcd stores it (key and value decoded from base64 as UTF-8). */
export interface KeyValue {
  /** The key. */
  key: string;
  /** The value. */
  value: string;
  /** The lease the key is attached to, `"0"` for none. */
  lease: string;
  /** Revision of the key's creation (the arbiter's epoch). */
  createRevision: string;
  /** Revision of the key's last change. */
  modRevision: string;
  /** Number of changes since creation. */
  version: string;
}

/** Options of each gateway call. */
export interface CallOptions {
  /** Time limit of the whole call in ms, across endpoints (default: the gateway's `timeoutMs`). */
  timeoutMs?: number;
  /** Aborts the call. */
  signal?: AbortSignal;
}

/** Options of {@linkcode EtcdGateway}. */
export interface EtcdGatewayOptions {
  /** Client URLs of the members, e.g. `http://198.18.1.11:2379`. At least one. */
  endpoints: readonly string[];
  /** Default time limit of a call in ms (default 1000). */
  timeoutMs?: number;
  /** Largest unary answer body, and longest stream line, in bytes (default 1 MiB). */
  maxBodyBytes?: number;
  /**
   * Send `Grpc-Metadata-hasleader: true` with every request, so a member without a leader refuses
   * (and cancels watches) instead of waiting (default `true`).
   */
  requireLeader?: boolean;
}

/** The answer of {@linkcode EtcdGateway.grant}. */
export interface GrantResult {
  /** The lease id (a decimal string: it can exceed 2^53). */
  id: string;
  /** The TTL etcd granted, in seconds: it may be more than asked (never trust your own). */
  ttlSeconds: number;
  /** The answer's header. */
  header: ResponseHeader;
}

/** The answer of {@linkcode EtcdGateway.keepAlive}. */
export interface KeepAliveResult {
  /** The lease id. */
  id: string;
  /** The lease's TTL after the renewal, in seconds; 0 when the lease is gone. */
  ttlSeconds: number;
  /** `true` when the answer had no TTL: the lease expired, was revoked or never existed. */
  expired: boolean;
  /** The answer's header. */
  header: ResponseHeader;
}

/** The answer of {@linkcode EtcdGateway.timeToLive}. */
export interface TimeToLiveResult {
  /** Remaining TTL in seconds, `-1` when the lease does not exist. */
  ttlSeconds: number;
  /** The TTL it was granted with, in seconds (0 when it does not exist). */
  grantedTtlSeconds: number;
  /** The keys attached to it. */
  keys: string[];
  /** The answer's header. */
  header: ResponseHeader;
}

/** The answer of {@linkcode EtcdGateway.acquire}. */
export type AcquireResult =
  | {
    /** The key is ours. */
    acquired: true;
    /** The key's create revision: the fencing token of this holding. */
    epoch: string;
    /**
     * `true` when the key already existed on our lease (a retried acquire whose first answer was
     * lost): it is ours all the same.
     */
    recovered: boolean;
    /** The answer's header. */
    header: ResponseHeader;
  }
  | {
    /** Someone else holds the key. */
    acquired: false;
    /** The key as it is (value = the holder), or `null` if it vanished in between. */
    holder: KeyValue | null;
    /** The answer's header. */
    header: ResponseHeader;
  };

/** The answer of {@linkcode EtcdGateway.confirm}. */
export interface ConfirmResult {
  /** `true` when every key is attached to the lease. */
  allOwned: boolean;
  /** The keys attached to the lease. */
  owned: Set<string>;
  /** Each key as it is when not all are owned (`null`: absent); empty when all are owned. */
  current: Map<string, KeyValue | null>;
  /** The answer's header. */
  header: ResponseHeader;
}

/** One event of a watch. */
export interface WatchEvent {
  /** `PUT` (omitted on the wire: it is the zero value) or `DELETE`. */
  type: "PUT" | "DELETE";
  /** The key after the event (for a `DELETE`: key and mod revision only). */
  kv: KeyValue;
  /** The key before the event, when `prev_kv` was asked and it existed. */
  prevKv: KeyValue | null;
}

/** One message of a watch stream. */
export interface WatchMessage {
  /** `true` on the first message: the watch exists. */
  created: boolean;
  /** `true` when etcd cancelled the watch (then see `compactRevision` and `cancelReason`). */
  canceled: boolean;
  /** When cancelled because the start revision was compacted: the compaction revision. */
  compactRevision: string;
  /** Why etcd cancelled it, when it says. */
  cancelReason: string;
  /** The events. */
  events: WatchEvent[];
  /** The answer's header. */
  header: ResponseHeader;
}

/** What {@linkcode EtcdGateway.follow} yields: a full read, then each change. */
export type FollowUpdate =
  | {
    /** A linearizable read of every key (at start, and after a compaction or a lost stream). */
    kind: "sync";
    /** The keys that exist. */
    kvs: KeyValue[];
    /** The store revision of the read. */
    revision: string;
  }
  | {
    /** Events from the watch. */
    kind: "events";
    /** The events. */
    events: WatchEvent[];
    /** The header revision. */
    revision: string;
  };

/** Options of {@linkcode EtcdGateway.watch}. */
export interface WatchOptions {
  /** Watch every key with this prefix instead of one key. */
  prefix?: boolean;
  /** First revision to report (default: from now). */
  startRevision?: string;
  /** Ask for the previous value of each changed key. */
  prevKv?: boolean;
  /** Time limit for the watch to be created, in ms (default: the gateway's `timeoutMs`). */
  timeoutMs?: number;
  /** Ends the watch. */
  signal?: AbortSignal;
}

/** Options of {@linkcode EtcdGateway.follow}. */
export interface FollowOptions {
  /** Follow every key with this prefix instead of one key. */
  prefix?: boolean;
  /** Ends following. */
  signal: AbortSignal;
  /** Pause after a failed read or stream before trying again, in ms (default 500). */
  retryMs?: number;
  /** Told about each failure before the retry. */
  onError?: (error: EtcdError) => void;
  /**
   * Resume from this revision instead of reading first (the caller knows the state before it).
   * If etcd compacted it away, the first update is a `sync`.
   */
  fromRevision?: string;
}

// ---------------------------------------------------------------------------------------------
// Encoding and parsing.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Encodes text (as UTF-8) to base64, as the gateway wants keys and values.
 *
 * @param text The text.
 * @returns Base64.
 *
 * @example
 * ```ts
 * import { toBase64 } from "./etcd_gateway.ts";
 * console.log(toBase64("/a")); // "L2E="
 * ```
 */
export function toBase64(text: string): string {
  return bytesToBase64(encoder.encode(text));
}

function bytesToBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/**
 * Decodes base64 from the gateway to text (UTF-8).
 *
 * @param data Base64.
 * @param where Where the value was, for the error.
 * @returns The text.
 * @throws {EtcdProtocolError} When it is not base64.
 *
 * @example
 * ```ts
 * import { fromBase64 } from "./etcd_gateway.ts";
 * console.log(fromBase64("L2E=", "key")); // "/a"
 * ```
 */
export function fromBase64(data: string, where: string): string {
  let bin: string;
  try {
    bin = atob(data);
  } catch (e) {
    throw new EtcdProtocolError(`Invalid answer from etcd: ${where} is not base64`, { cause: e });
  }
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return decoder.decode(bytes);
}

/**
 * The end of the range of every key starting with `prefix` (etcd's `range_end`): the prefix with
 * its last byte below 0xff increased by one.
 *
 * @param prefix The prefix.
 * @returns The range end, base64-encoded (`AA==`, the zero byte, for "every key" when the
 * prefix is all 0xff bytes).
 *
 * @example
 * ```ts
 * import { fromBase64, prefixRangeEnd } from "./etcd_gateway.ts";
 * console.log(fromBase64(prefixRangeEnd("/failover/"), "end")); // "/failover0"
 * ```
 */
export function prefixRangeEnd(prefix: string): string {
  const bytes = encoder.encode(prefix);
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i]! < 0xff) {
      const end = bytes.slice(0, i + 1);
      end[i] = bytes[i]! + 1;
      return bytesToBase64(end);
    }
  }
  return "AA==";
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function obj(v: unknown, where: string): Json {
  if (v === undefined) return {};
  if (!isObject(v)) throw new EtcdProtocolError(`Invalid answer from etcd: ${where} is no object`);
  return v;
}

function list(v: unknown, where: string): unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) {
    throw new EtcdProtocolError(`Invalid answer from etcd: ${where} is no list`);
  }
  return v;
}

const INT64 = /^-?\d{1,19}$/;

/**
 * Reads an int64 field: a decimal string (as the gateway sends), a safe integer, or absent (the
 * omitted zero value). Kept as a string so that lease ids above 2^53 stay exact.
 */
function int64(v: unknown, where: string): string {
  if (v === undefined || v === null) return "0";
  if (typeof v === "string" && INT64.test(v)) return v;
  if (typeof v === "number" && Number.isSafeInteger(v)) return String(v);
  throw new EtcdProtocolError(`Invalid answer from etcd: ${where} is not an int64: ${String(v)}`);
}

/** Reads a uint64 field (cluster and member ids): a decimal string, or absent (zero). */
function uint64(v: unknown, where: string): string {
  if (v === undefined || v === null) return "0";
  if (typeof v === "string" && /^\d{1,20}$/.test(v) && BigInt(v) < 2n ** 64n) return v;
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return String(v);
  throw new EtcdProtocolError(`Invalid answer from etcd: ${where} is not a uint64: ${String(v)}`);
}

function smallInt(v: unknown, where: string): number {
  const s = int64(v, where);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) {
    throw new EtcdProtocolError(`Invalid answer from etcd: ${where} is out of range: ${s}`);
  }
  return n;
}

function bool(v: unknown, where: string): boolean {
  if (v === undefined || v === null) return false;
  if (typeof v !== "boolean") {
    throw new EtcdProtocolError(`Invalid answer from etcd: ${where} is no boolean`);
  }
  return v;
}

function text(v: unknown, where: string): string {
  if (v === undefined || v === null) return "";
  if (typeof v !== "string") {
    throw new EtcdProtocolError(`Invalid answer from etcd: ${where} is no string`);
  }
  return v;
}

function parseHeader(v: unknown): ResponseHeader {
  const h = obj(v, "header");
  return {
    clusterId: uint64(h.cluster_id, "header.cluster_id"),
    memberId: uint64(h.member_id, "header.member_id"),
    revision: int64(h.revision, "header.revision"),
    raftTerm: int64(h.raft_term, "header.raft_term"),
  };
}

function parseKv(v: unknown, where: string): KeyValue {
  const kv = obj(v, where);
  return {
    key: fromBase64(text(kv.key, `${where}.key`), `${where}.key`),
    value: fromBase64(text(kv.value, `${where}.value`), `${where}.value`),
    lease: int64(kv.lease, `${where}.lease`),
    createRevision: int64(kv.create_revision, `${where}.create_revision`),
    modRevision: int64(kv.mod_revision, `${where}.mod_revision`),
    version: int64(kv.version, `${where}.version`),
  };
}

function parseRangeKvs(v: unknown, where: string): KeyValue[] {
  return list(obj(v, where).kvs, `${where}.kvs`).map((kv, i) => parseKv(kv, `${where}.kvs[${i}]`));
}

function checkLeaseId(id: string): string {
  if (!/^\d{1,19}$/.test(id) || BigInt(id) > 0x7fffffffffffffffn) {
    throw new TypeError(
      `Invalid lease id: ${JSON.stringify(id)}: expected a positive int64 string`,
    );
  }
  return id;
}

function checkKey(key: string): string {
  if (typeof key !== "string" || key.length === 0) {
    throw new TypeError(`Invalid etcd key: ${JSON.stringify(key)}: expected a non-empty string`);
  }
  return key;
}

// gRPC codes after which another member may still serve the request.
const GRPC_CANCELED = 1;
const GRPC_UNKNOWN = 2;
const GRPC_DEADLINE_EXCEEDED = 4;
const GRPC_UNAVAILABLE = 14;
const TRANSIENT_MESSAGE = /not a primary lessor|leader changed|no leader|timed out|not capable/i;

function transient(code: number | null, message: string): boolean {
  if (code === GRPC_UNAVAILABLE || code === GRPC_DEADLINE_EXCEEDED || code === GRPC_CANCELED) {
    return true;
  }
  return code === GRPC_UNKNOWN && TRANSIENT_MESSAGE.test(message);
}

/** Turns an error object of the gateway (unary or stream form) into a typed error. */
function gatewayError(e: Json, endpoint: string, path: string, status: number): EtcdError {
  const inner = isObject(e.error) ? e.error : e;
  const message = typeof inner.message === "string"
    ? inner.message
    : typeof inner.error === "string"
    ? inner.error
    : `HTTP ${status}`;
  const raw = inner.grpc_code ?? inner.code;
  const code = typeof raw === "number" && Number.isInteger(raw) ? raw : null;
  const detail = message + (code === null ? "" : ` (gRPC code ${code})`);
  if (transient(code, message) || (code === null && status >= 502 && status <= 504)) {
    return new EtcdUnreachableError(`Cannot use etcd ${endpoint} for ${path}: ${detail}`, {
      endpoint,
      grpcCode: code,
    });
  }
  return new EtcdRefusedError(`Cannot do ${path}: etcd ${endpoint} answered: ${detail}`, {
    endpoint,
    grpcCode: code,
  });
}

// ---------------------------------------------------------------------------------------------
// Bounded reading.

/** Reads lines of a stream, each at most `max` bytes; the reader is released at the end. */
class LineReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buffer = new Uint8Array(0);
  #max: number;
  #where: string;
  #done = false;

  constructor(body: ReadableStream<Uint8Array>, max: number, where: string) {
    this.#reader = body.getReader();
    this.#max = max;
    this.#where = where;
  }

  /** The next line without its newline, or `null` at the end (a last partial line included). */
  async next(): Promise<string | null> {
    for (;;) {
      const nl = this.#buffer.indexOf(10);
      if (nl >= 0) {
        const line = this.#buffer.subarray(0, nl);
        this.#buffer = this.#buffer.slice(nl + 1);
        return decoder.decode(line);
      }
      if (this.#buffer.length > this.#max) {
        throw new EtcdProtocolError(
          `Invalid answer from etcd: ${this.#where}: a line is longer than ${this.#max} bytes`,
        );
      }
      if (this.#done) {
        if (this.#buffer.length === 0) return null;
        const rest = decoder.decode(this.#buffer);
        this.#buffer = new Uint8Array(0);
        return rest;
      }
      const { value, done } = await this.#reader.read();
      if (done) {
        this.#done = true;
        continue;
      }
      const joined = new Uint8Array(this.#buffer.length + value.length);
      joined.set(this.#buffer);
      joined.set(value, this.#buffer.length);
      this.#buffer = joined;
    }
  }

  /** Stops reading (cancels the body). */
  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }
}

async function readBody(body: ReadableStream<Uint8Array> | null, max: number, where: string) {
  if (body === null) return "";
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > max) {
        await reader.cancel().catch(() => {});
        throw new EtcdProtocolError(
          `Invalid answer from etcd: ${where}: the body is larger than ${max} bytes`,
        );
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return decoder.decode(all);
}

function parseJson(textBody: string, where: string, endpoint: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(textBody);
  } catch (e) {
    throw new EtcdProtocolError(
      `Invalid answer from etcd ${endpoint}: ${where} is not JSON: ${textBody.slice(0, 80)}`,
      { endpoint, cause: e },
    );
  }
  if (!isObject(v)) {
    throw new EtcdProtocolError(`Invalid answer from etcd ${endpoint}: ${where} is no object`, {
      endpoint,
    });
  }
  return v;
}

function describeFailure(e: unknown): string {
  if (e instanceof EtcdError) return e.message;
  if (e instanceof DOMException && (e.name === "TimeoutError" || e.name === "AbortError")) {
    return "no answer in time";
  }
  return (e as Error)?.message ?? String(e);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

// ---------------------------------------------------------------------------------------------
// The client.

/** An open HTTP answer from one endpoint, its attempt timer still running until disarmed. */
interface Opened {
  response: Response;
  endpoint: string;
  /** Stops the attempt's time limit (a stream that must outlive it); idempotent. */
  disarm(): void;
}

/**
 * A client of etcd 3.4's v3 JSON gateway over HTTP, failing over between members.
 *
 * Each call has a time limit (`timeoutMs`, across every endpoint it tries): the first member tried
 * gets half of it when another member remains, so a black-holed member does not eat the whole
 * budget. A member that cannot serve (no answer, no leader, timed out) is skipped and the next
 * call starts with the member that answered last. Requests that change data are not retried
 * blindly: {@linkcode EtcdGateway.acquire} recognises its own key when a retry finds it.
 *
 * @example
 * ```ts ignore
 * import { EtcdGateway } from "./etcd_gateway.ts";
 * const etcd = new EtcdGateway({ endpoints: ["http://127.0.0.1:2379"], timeoutMs: 500 });
 * const lease = await etcd.grant(5);
 * const r = await etcd.acquire("/failover/lab/web", "h1", lease.id);
 * if (r.acquired) console.log(`epoch ${r.epoch}, TTL ${lease.ttlSeconds} s`);
 * ```
 */
export class EtcdGateway {
  #endpoints: string[];
  #preferred = 0;
  #timeoutMs: number;
  #maxBody: number;
  #requireLeader: boolean;

  /**
   * Creates a client (no connection is made until the first call).
   *
   * @param options Endpoints, default time limit, body bound, require-leader header.
   */
  constructor(options: EtcdGatewayOptions) {
    if (!Array.isArray(options.endpoints) || options.endpoints.length === 0) {
      throw new TypeError("Invalid etcd endpoints: expected at least one http:// URL");
    }
    this.#endpoints = options.endpoints.map((e) => {
      let url: URL;
      try {
        url = new URL(e);
      } catch {
        throw new TypeError(`Invalid etcd endpoint: ${JSON.stringify(e)}: expected an http:// URL`);
      }
      if (url.protocol !== "http:" || url.pathname !== "/" || url.search || url.hash) {
        throw new TypeError(
          `Invalid etcd endpoint: ${JSON.stringify(e)}: expected http://host:port (the v3 gateway)`,
        );
      }
      return url.origin;
    });
    this.#timeoutMs = options.timeoutMs ?? 1000;
    this.#maxBody = options.maxBodyBytes ?? 1 << 20;
    this.#requireLeader = options.requireLeader ?? true;
    if (!(this.#timeoutMs > 0)) throw new RangeError("Invalid etcd timeoutMs: expected > 0");
    if (!(this.#maxBody >= 1024)) {
      throw new RangeError("Invalid etcd maxBodyBytes: expected >= 1024");
    }
  }

  /** The endpoints, in order. */
  get endpoints(): readonly string[] {
    return this.#endpoints;
  }

  /** The endpoint the next call tries first (the one that answered last). */
  get preferred(): string {
    return this.#endpoints[this.#preferred]!;
  }

  /**
   * Sends one POST, trying the endpoints in turn until one answers with a status and headers.
   * A transient error status (503, or a gRPC code meaning "no leader"/"timed out") moves on to
   * the next endpoint.
   */
  async #open(path: string, body: unknown, options: CallOptions): Promise<Opened> {
    const budget = options.timeoutMs ?? this.#timeoutMs;
    const deadline = performance.now() + budget;
    const n = this.#endpoints.length;
    const failures: string[] = [];
    let last: EtcdError | null = null;
    for (let k = 0; k < n; k++) {
      if (options.signal?.aborted) break;
      const index = (this.#preferred + k) % n;
      const endpoint = this.#endpoints[index]!;
      const remaining = deadline - performance.now();
      if (remaining <= 0) break;
      const attemptMs = Math.ceil(Math.max(1, k < n - 1 ? remaining / 2 : remaining));
      const attempt = new AbortController();
      const timer = setTimeout(
        () => attempt.abort(new DOMException(`no answer within ${attemptMs} ms`, "TimeoutError")),
        attemptMs,
      );
      const disarm = () => clearTimeout(timer);
      const signal = options.signal
        ? AbortSignal.any([attempt.signal, options.signal])
        : attempt.signal;
      try {
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (this.#requireLeader) headers["grpc-metadata-hasleader"] = "true";
        const response = await fetch(endpoint + path, {
          method: "POST",
          headers,
          body: JSON.stringify(body),
          signal,
        });
        if (response.status !== 200) {
          const textBody = await readBody(response.body, this.#maxBody, path).catch(() => "");
          disarm();
          let e: Json;
          try {
            e = JSON.parse(textBody) as Json;
            if (!isObject(e)) e = {};
          } catch {
            e = {};
          }
          const err = gatewayError(e, endpoint, path, response.status);
          if (err instanceof EtcdUnreachableError) {
            last = err;
            failures.push(
              err.message.replace(`Cannot use etcd ${endpoint} for ${path}: `, `${endpoint}: `),
            );
            continue;
          }
          this.#preferred = index;
          throw err;
        }
        this.#preferred = index;
        return { response, endpoint, disarm };
      } catch (e) {
        disarm();
        if (e instanceof EtcdError) throw e;
        failures.push(`${endpoint}: ${describeFailure(e)}`);
        last = new EtcdUnreachableError(`Cannot reach etcd ${endpoint}: ${describeFailure(e)}`, {
          endpoint,
          cause: e,
        });
      }
    }
    // Every member failed: start with the next one next time.
    this.#preferred = (this.#preferred + 1) % n;
    const why = options.signal?.aborted
      ? "cancelled"
      : failures.length > 0
      ? failures.join("; ")
      : `no time left of ${budget} ms`;
    throw new EtcdUnreachableError(`Cannot reach etcd for ${path}: ${why}`, {
      endpoint: last?.endpoint ?? null,
      grpcCode: last?.grpcCode ?? null,
      cause: last ?? undefined,
    });
  }

  /** A unary call: POST, bounded body, JSON object, typed errors. */
  async #unary(path: string, body: unknown, options: CallOptions): Promise<Json> {
    const { response, endpoint, disarm } = await this.#open(path, body, options);
    let textBody: string;
    try {
      textBody = await readBody(response.body, this.#maxBody, path);
      disarm();
    } catch (e) {
      disarm();
      if (e instanceof EtcdError) throw e;
      throw new EtcdUnreachableError(
        `Cannot read etcd's answer to ${path} from ${endpoint}: ${describeFailure(e)}`,
        { endpoint, cause: e },
      );
    }
    return parseJson(textBody, path, endpoint);
  }

  /**
   * Grants a lease.
   *
   * @param ttlSeconds The TTL asked for, in whole seconds (etcd may raise it).
   * @param options Time limit, signal.
   * @returns The lease id (a string) and the TTL etcd granted.
   */
  async grant(ttlSeconds: number, options: CallOptions = {}): Promise<GrantResult> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > 9_000_000_000) {
      throw new RangeError(`Invalid lease TTL: ${ttlSeconds}: expected whole seconds >= 1`);
    }
    const r = await this.#unary("/v3/lease/grant", { TTL: String(ttlSeconds) }, options);
    if (typeof r.error === "string" && r.error) {
      throw new EtcdRefusedError(`Cannot grant a lease: etcd answered: ${r.error}`);
    }
    const id = int64(r.ID, "ID");
    const ttl = smallInt(r.TTL, "TTL");
    if (id === "0" || ttl <= 0) {
      throw new EtcdProtocolError(
        `Invalid answer from etcd to a lease grant: ID ${id}, TTL ${ttl}`,
      );
    }
    return { id, ttlSeconds: ttl, header: parseHeader(r.header) };
  }

  /**
   * Renews a lease once: one POST on the keepalive stream, one result line, then the stream is
   * closed. A lease that expired, was revoked or never existed answers without a TTL: that is
   * `expired: true`, not an error.
   *
   * @param id The lease id.
   * @param options Time limit, signal.
   * @returns The TTL after the renewal (0 and `expired` when gone).
   */
  async keepAlive(id: string, options: CallOptions = {}): Promise<KeepAliveResult> {
    checkLeaseId(id);
    const path = "/v3/lease/keepalive";
    const { response, endpoint, disarm } = await this.#open(path, { ID: id }, options);
    const lines = new LineReader(response.body ?? new ReadableStream(), this.#maxBody, path);
    let line: string | null;
    try {
      do line = await lines.next(); while (line !== null && line.trim() === "");
      disarm();
    } catch (e) {
      disarm();
      await lines.cancel();
      if (e instanceof EtcdError) throw e;
      throw new EtcdUnreachableError(
        `Cannot read etcd's keepalive answer from ${endpoint}: ${describeFailure(e)}`,
        { endpoint, cause: e },
      );
    }
    await lines.cancel();
    if (line === null) {
      throw new EtcdUnreachableError(`Cannot renew lease ${id}: ${endpoint} closed the stream`, {
        endpoint,
      });
    }
    const msg = parseJson(line, path, endpoint);
    if (msg.error !== undefined) throw gatewayError(msg, endpoint, path, 200);
    const result = obj(msg.result, "result");
    const got = int64(result.ID, "result.ID");
    if (got !== id) {
      throw new EtcdProtocolError(
        `Invalid keepalive answer from ${endpoint}: lease ${got} for ${id}`,
        {
          endpoint,
        },
      );
    }
    const ttl = smallInt(result.TTL, "result.TTL");
    return {
      id,
      ttlSeconds: Math.max(0, ttl),
      expired: result.TTL === undefined || ttl <= 0,
      header: parseHeader(result.header),
    };
  }

  /**
   * Revokes a lease: etcd deletes every key attached to it.
   *
   * @param id The lease id.
   * @param options Time limit, signal.
   * @returns `true` when revoked, `false` when the lease did not exist (any more).
   */
  async revoke(id: string, options: CallOptions = {}): Promise<boolean> {
    checkLeaseId(id);
    try {
      await this.#unary("/v3/lease/revoke", { ID: id }, options);
      return true;
    } catch (e) {
      if (isLeaseNotFound(e)) return false;
      throw e;
    }
  }

  /**
   * The remaining TTL of a lease and its keys.
   *
   * @param id The lease id.
   * @param options Time limit, signal.
   * @returns TTL (`-1` when the lease does not exist), granted TTL, keys.
   */
  async timeToLive(id: string, options: CallOptions = {}): Promise<TimeToLiveResult> {
    checkLeaseId(id);
    const r = await this.#unary("/v3/lease/timetolive", { ID: id, keys: true }, options);
    return {
      ttlSeconds: smallInt(r.TTL, "TTL"),
      grantedTtlSeconds: smallInt(r.grantedTTL, "grantedTTL"),
      keys: list(r.keys, "keys").map((k, i) => fromBase64(text(k, `keys[${i}]`), `keys[${i}]`)),
      header: parseHeader(r.header),
    };
  }

  /**
   * Takes a key if nobody has it: a transaction that succeeds only when the key does not exist
   * (`create_revision == 0`) and then puts it attached to `lease`. On success the epoch is the
   * key's create revision (the answer's revision). When the key exists on the same lease (a retry
   * after a lost answer), it is ours: `acquired` with `recovered: true`.
   *
   * @param key The key.
   * @param value The value (the holder's name).
   * @param lease The lease id to attach the key to.
   * @param options Time limit, signal.
   * @returns The epoch, or the current holder's key-value.
   * @throws {EtcdRefusedError} With gRPC code 5 when the lease does not exist.
   */
  async acquire(
    key: string,
    value: string,
    lease: string,
    options: CallOptions = {},
  ): Promise<AcquireResult> {
    checkKey(key);
    checkLeaseId(lease);
    const k = toBase64(key);
    const r = await this.#unary("/v3/kv/txn", {
      compare: [{ key: k, target: "CREATE", result: "EQUAL", create_revision: "0" }],
      success: [{ request_put: { key: k, value: toBase64(value), lease } }],
      failure: [{ request_range: { key: k } }],
    }, options);
    const header = parseHeader(r.header);
    if (bool(r.succeeded, "succeeded")) {
      if (header.revision === "0") {
        throw new EtcdProtocolError("Invalid answer from etcd to an acquire: no revision");
      }
      return { acquired: true, epoch: header.revision, recovered: false, header };
    }
    const responses = list(r.responses, "responses");
    const range = obj(obj(responses[0], "responses[0]").response_range, "response_range");
    const kv = parseRangeKvs(range, "response_range")[0] ?? null;
    if (kv !== null && kv.lease === lease) {
      return { acquired: true, epoch: kv.createRevision, recovered: true, header };
    }
    return { acquired: false, holder: kv, header };
  }

  /**
   * Confirms, with one linearizable transaction, that every key is still attached to `lease`
   * (compare `LEASE == lease` on each). When not, the answer reads each key, so the caller learns
   * which are still owned and who has the others.
   *
   * @param keys The keys (at least one).
   * @param lease The lease id.
   * @param options Time limit, signal.
   * @returns Which keys are owned, and each key as it is when not all are.
   */
  async confirm(
    keys: readonly string[],
    lease: string,
    options: CallOptions = {},
  ): Promise<ConfirmResult> {
    if (keys.length === 0) throw new TypeError("Cannot confirm ownership: no keys given");
    keys.forEach(checkKey);
    checkLeaseId(lease);
    const enc = keys.map(toBase64);
    const r = await this.#unary("/v3/kv/txn", {
      compare: enc.map((k) => ({ key: k, target: "LEASE", result: "EQUAL", lease })),
      success: [],
      failure: enc.map((k) => ({ request_range: { key: k } })),
    }, options);
    const header = parseHeader(r.header);
    if (bool(r.succeeded, "succeeded")) {
      return { allOwned: true, owned: new Set(keys), current: new Map(), header };
    }
    const responses = list(r.responses, "responses");
    if (responses.length !== keys.length) {
      throw new EtcdProtocolError(
        `Invalid answer from etcd to a confirm: ${responses.length} reads for ${keys.length} keys`,
      );
    }
    const owned = new Set<string>();
    const current = new Map<string, KeyValue | null>();
    keys.forEach((key, i) => {
      const range = obj(obj(responses[i], `responses[${i}]`).response_range, "response_range");
      const kv = parseRangeKvs(range, `responses[${i}].response_range`)[0] ?? null;
      current.set(key, kv);
      if (kv !== null && kv.lease === lease) owned.add(key);
    });
    return { allOwned: false, owned, current, header };
  }

  /**
   * Reads a key (or every key with a prefix), linearizably.
   *
   * @param key The key or prefix.
   * @param options Prefix, time limit, signal.
   * @returns The keys that exist and the store revision.
   */
  async range(
    key: string,
    options: CallOptions & { prefix?: boolean } = {},
  ): Promise<{ kvs: KeyValue[]; header: ResponseHeader }> {
    checkKey(key);
    const body: Json = { key: toBase64(key) };
    if (options.prefix) body.range_end = prefixRangeEnd(key);
    const r = await this.#unary("/v3/kv/range", body, options);
    return { kvs: parseRangeKvs(r, "range"), header: parseHeader(r.header) };
  }

  /**
   * Puts a key (no lease unless given). For tests and operators; the arbiter only uses
   * {@linkcode EtcdGateway.acquire}.
   *
   * @param key The key.
   * @param value The value.
   * @param options Lease, time limit, signal.
   * @returns The answer's header.
   */
  async put(
    key: string,
    value: string,
    options: CallOptions & { lease?: string } = {},
  ): Promise<ResponseHeader> {
    checkKey(key);
    const body: Json = { key: toBase64(key), value: toBase64(value) };
    if (options.lease !== undefined) body.lease = checkLeaseId(options.lease);
    return parseHeader((await this.#unary("/v3/kv/put", body, options)).header);
  }

  /**
   * Deletes a key only while it is attached to `lease` (a holder giving its key up).
   *
   * @param key The key.
   * @param lease The lease id.
   * @param options Time limit, signal.
   * @returns `true` when deleted, `false` when the key was absent or someone else's.
   */
  async deleteIfOwn(key: string, lease: string, options: CallOptions = {}): Promise<boolean> {
    checkKey(key);
    checkLeaseId(lease);
    const k = toBase64(key);
    const r = await this.#unary("/v3/kv/txn", {
      compare: [{ key: k, target: "LEASE", result: "EQUAL", lease }],
      success: [{ request_delete_range: { key: k } }],
      failure: [],
    }, options);
    if (!bool(r.succeeded, "succeeded")) return false;
    const responses = list(r.responses, "responses");
    const del = obj(
      obj(responses[0], "responses[0]").response_delete_range,
      "response_delete_range",
    );
    return int64(del.deleted, "deleted") !== "0";
  }

  /**
   * Compacts the store's history up to `revision` (for tests of a watch that starts too early).
   *
   * @param revision The revision.
   * @param options Time limit, signal.
   */
  async compact(revision: string, options: CallOptions = {}): Promise<void> {
    await this.#unary("/v3/kv/compaction", { revision: int64(revision, "revision") }, options);
  }

  /**
   * Opens a watch on one member (the first that answers) and yields each message of the stream
   * (NDJSON `{"result":…}` lines) until the stream ends, etcd cancels the watch (a message with
   * `canceled`, then the iteration ends), or `signal` aborts. A stream error line throws a typed
   * error. For a watch that survives compaction and lost streams, use
   * {@linkcode EtcdGateway.follow}.
   *
   * @param key The key or prefix.
   * @param options Prefix, start revision, previous values, creation time limit, signal.
   * @returns The messages.
   */
  async *watch(key: string, options: WatchOptions = {}): AsyncGenerator<WatchMessage> {
    checkKey(key);
    const create: Json = { key: toBase64(key) };
    if (options.prefix) create.range_end = prefixRangeEnd(key);
    if (options.startRevision !== undefined) {
      create.start_revision = int64(options.startRevision, "startRevision");
    }
    if (options.prevKv) create.prev_kv = true;
    const path = "/v3/watch";
    // The time limit covers connecting and the `created` message; the stream then lives until
    // the caller's signal (or etcd) ends it.
    let lines: LineReader | null = null;
    let disarm = () => {};
    try {
      const opened = await this.#open(path, { create_request: create }, {
        timeoutMs: options.timeoutMs ?? this.#timeoutMs,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      const { response, endpoint } = opened;
      disarm = opened.disarm;
      lines = new LineReader(response.body ?? new ReadableStream(), this.#maxBody, path);
      let first = true;
      for (;;) {
        let line: string | null;
        try {
          line = await lines.next();
        } catch (e) {
          if (e instanceof EtcdError) throw e;
          if (options.signal?.aborted) return;
          throw new EtcdUnreachableError(
            `Cannot read the watch stream from ${endpoint}: ${describeFailure(e)}`,
            { endpoint, cause: e },
          );
        }
        if (line === null) {
          if (options.signal?.aborted) return;
          throw new EtcdUnreachableError(`Cannot go on watching: ${endpoint} ended the stream`, {
            endpoint,
          });
        }
        if (line.trim() === "") continue;
        const msg = parseJson(line, path, endpoint);
        if (msg.error !== undefined) throw gatewayError(msg, endpoint, path, 200);
        const r = obj(msg.result, "result");
        const message: WatchMessage = {
          created: bool(r.created, "created"),
          canceled: bool(r.canceled, "canceled"),
          compactRevision: int64(r.compact_revision, "compact_revision"),
          cancelReason: text(r.cancel_reason, "cancel_reason"),
          events: list(r.events, "events").map((ev, i) => {
            const e = obj(ev, `events[${i}]`);
            const type = text(e.type, `events[${i}].type`) || "PUT";
            if (type !== "PUT" && type !== "DELETE") {
              throw new EtcdProtocolError(`Invalid answer from etcd: event type ${type}`);
            }
            return {
              type,
              kv: parseKv(e.kv, `events[${i}].kv`),
              prevKv: e.prev_kv === undefined ? null : parseKv(e.prev_kv, `events[${i}].prev_kv`),
            };
          }),
          header: parseHeader(r.header),
        };
        if (first) {
          first = false;
          disarm();
        }
        yield message;
        if (message.canceled) return;
      }
    } catch (e) {
      if (options.signal?.aborted && !(e instanceof EtcdRefusedError)) return;
      throw e;
    } finally {
      disarm();
      await lines?.cancel();
    }
  }

  /**
   * Follows a key (or prefix): a linearizable read first (`sync`), then the watch's events from
   * the next revision. When etcd cancels the watch (its start revision was compacted: it answers
   * with `compact_revision`), or the stream is lost, it reads again (`sync`) and watches from
   * there, after `retryMs` for failures. Ends when `signal` aborts.
   *
   * @param key The key or prefix.
   * @param options Prefix, signal, retry pause, error callback.
   * @returns The updates.
   */
  async *follow(key: string, options: FollowOptions): AsyncGenerator<FollowUpdate> {
    const { signal } = options;
    const retryMs = options.retryMs ?? 500;
    let resume = options.fromRevision;
    while (!signal.aborted) {
      let from: string;
      if (resume !== undefined) {
        from = resume;
        resume = undefined;
      } else {
        try {
          const r = await this.range(key, { prefix: options.prefix ?? false, signal });
          from = (BigInt(r.header.revision) + 1n).toString();
          yield { kind: "sync", kvs: r.kvs, revision: r.header.revision };
        } catch (e) {
          if (signal.aborted) return;
          if (!(e instanceof EtcdError)) throw e;
          options.onError?.(e);
          await sleep(retryMs, signal);
          continue;
        }
      }
      try {
        for await (
          const m of this.watch(key, {
            prefix: options.prefix ?? false,
            startRevision: from,
            prevKv: true,
            signal,
          })
        ) {
          if (m.canceled) break; // Compacted (or cancelled by etcd): read again.
          if (m.events.length > 0) {
            yield { kind: "events", events: m.events, revision: m.header.revision };
          }
        }
      } catch (e) {
        if (signal.aborted) return;
        if (!(e instanceof EtcdError)) throw e;
        options.onError?.(e);
        await sleep(retryMs, signal);
      }
    }
  }
}
