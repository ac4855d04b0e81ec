/**
 * The etcd gateway client's errors and the shapes of its answers (int64 fields as decimal
 * strings; see {@linkcode EtcdGateway} in `etcd_gateway.ts`, which re-exports all of this).
 *
 * @module
 */
// deno-lint-ignore no-unused-vars -- named in the documentation links.
import type { EtcdGateway } from "./etcd_gateway.ts";

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
 * import { deepEqual } from "node:assert/strict";
 * const e = new EtcdRefusedError("etcdserver: requested lease not found", { grpcCode: 5 });
 * deepEqual(isLeaseNotFound(e), true);
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
