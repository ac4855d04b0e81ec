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
export * from "./etcd_types.ts";
export { fromBase64, prefixRangeEnd, toBase64 } from "./etcd_wire.ts";
import {
  type AcquireResult,
  type CallOptions,
  type ConfirmResult,
  EtcdError,
  type EtcdGatewayOptions,
  EtcdProtocolError,
  EtcdRefusedError,
  EtcdUnreachableError,
  type FollowOptions,
  type FollowUpdate,
  type GrantResult,
  isLeaseNotFound,
  type KeepAliveResult,
  type KeyValue,
  type ResponseHeader,
  type TimeToLiveResult,
  type WatchMessage,
  type WatchOptions,
} from "./etcd_types.ts";
import {
  bool,
  checkKey,
  checkLeaseId,
  describeFailure,
  fromBase64,
  gatewayError,
  int64,
  isObject,
  type Json,
  LineReader,
  list,
  obj,
  parseHeader,
  parseJson,
  parseKv,
  parseRangeKvs,
  prefixRangeEnd,
  readBody,
  sleep,
  smallInt,
  text,
  toBase64,
} from "./etcd_wire.ts";

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
