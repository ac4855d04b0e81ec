/**
 * The gateway's wire: base64 keys, strict parsing of its JSON (int64 as strings, omitted zero
 * values), bounded reading of bodies and NDJSON streams, and its error answers as typed errors.
 *
 * @module
 */
import {
  EtcdError,
  EtcdProtocolError,
  EtcdRefusedError,
  EtcdUnreachableError,
  type KeyValue,
  type ResponseHeader,
} from "./etcd_types.ts";

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
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(toBase64("/a"), "L2E=");
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
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(fromBase64("L2E=", "key"), "/a");
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
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(fromBase64(prefixRangeEnd("/failover/"), "end"), "/failover0");
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

/** A JSON object as the gateway sends it. */
export type Json = Record<string, unknown>;

/** Whether a value is a JSON object (not an array, not null). */
export function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The value as an object, or a protocol error naming `where`. */
export function obj(v: unknown, where: string): Json {
  if (v === undefined) return {};
  if (!isObject(v)) throw new EtcdProtocolError(`Invalid answer from etcd: ${where} is no object`);
  return v;
}

/** The value as a list (absent: empty, a zero value), or a protocol error. */
export function list(v: unknown, where: string): unknown[] {
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
export function int64(v: unknown, where: string): string {
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

/** An int64 string small enough for a number (TTLs, counts); absent is 0. */
export function smallInt(v: unknown, where: string): number {
  const s = int64(v, where);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) {
    throw new EtcdProtocolError(`Invalid answer from etcd: ${where} is out of range: ${s}`);
  }
  return n;
}

/** A boolean; absent is `false` (a zero value). */
export function bool(v: unknown, where: string): boolean {
  if (v === undefined || v === null) return false;
  if (typeof v !== "boolean") {
    throw new EtcdProtocolError(`Invalid answer from etcd: ${where} is no boolean`);
  }
  return v;
}

/** A string; absent is `""` (a zero value). */
export function text(v: unknown, where: string): string {
  if (v === undefined || v === null) return "";
  if (typeof v !== "string") {
    throw new EtcdProtocolError(`Invalid answer from etcd: ${where} is no string`);
  }
  return v;
}

/** The response header, int64 fields kept as strings. */
export function parseHeader(v: unknown): ResponseHeader {
  const h = obj(v, "header");
  return {
    clusterId: uint64(h.cluster_id, "header.cluster_id"),
    memberId: uint64(h.member_id, "header.member_id"),
    revision: int64(h.revision, "header.revision"),
    raftTerm: int64(h.raft_term, "header.raft_term"),
  };
}

/** A key-value pair, key and value decoded from base64. */
export function parseKv(v: unknown, where: string): KeyValue {
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

/** The `kvs` of a range answer. */
export function parseRangeKvs(v: unknown, where: string): KeyValue[] {
  return list(obj(v, where).kvs, `${where}.kvs`).map((kv, i) => parseKv(kv, `${where}.kvs[${i}]`));
}

/** A lease id as a decimal string (it may exceed 2^53), or a `TypeError`. */
export function checkLeaseId(id: string): string {
  if (!/^\d{1,19}$/.test(id) || BigInt(id) > 0x7fffffffffffffffn) {
    throw new TypeError(
      `Invalid lease id: ${JSON.stringify(id)}: expected a positive int64 string`,
    );
  }
  return id;
}

/** A key in printable ASCII, or a `TypeError`. */
export function checkKey(key: string): string {
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
export function gatewayError(e: Json, endpoint: string, path: string, status: number): EtcdError {
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
export class LineReader {
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

/** Reads a whole body, at most `max` bytes, as text. */
export async function readBody(
  body: ReadableStream<Uint8Array> | null,
  max: number,
  where: string,
) {
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

/** Parses a body as a JSON object, or a protocol error naming the endpoint. */
export function parseJson(textBody: string, where: string, endpoint: string): Json {
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

/** A short sentence for a failed attempt (a timeout reads "no answer in time"). */
export function describeFailure(e: unknown): string {
  if (e instanceof EtcdError) return e.message;
  if (e instanceof DOMException && (e.name === "TimeoutError" || e.name === "AbortError")) {
    return "no answer in time";
  }
  return (e as Error)?.message ?? String(e);
}

/** Waits `ms`, or less when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
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
