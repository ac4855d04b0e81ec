/**
 * The arbiter's rule for holding a service, on an etcd lease, and a driver that runs it for
 * several services of one host (one lease per host, shared by its keys).
 *
 * **The guarantee.** A host holds a service (its verdict is `grant`) only while it holds the
 * service's key in etcd; it gives the verdict up on its own monotonic clock *before* etcd can let
 * anyone else take the key, and a new holder waits a takeover delay before it acts. So two hosts
 * never hold one service at once, as long as no process pauses (or clock runs slow) for more than
 * `margin + takeoverDelay` and etcd itself keeps its promises (see `docs/arbiter.md`).
 *
 * **The rule**, learnt from Patroni and kube-vip and stricter than both:
 *
 * - *Take*: a host gets a service's key only with a transaction that succeeds when the key does not
 *   exist (`create_revision == 0`), attached to its own lease. The key's create revision is the
 *   holding's **epoch** (a fencing token).
 * - *Hold*: every `renewMs` (≤ TTL/3) the holder sends a keepalive, then confirms with a
 *   linearizable transaction that the key is still on its lease (a successful keepalive alone is
 *   not trusted: etcd 3.4.23 can renew a revoked lease). Each request has a time limit of
 *   `timeoutMs` (≤ TTL/3).
 * - *Deadline*: with `s` the **send** time of the last keepalive whose renewal was confirmed and
 *   `TTL` the TTL etcd returned, the holder holds only while `now < s + TTL − margin` (monotonic
 *   clock). etcd expires the lease at the earliest at `s + TTL` (the server started the TTL after
 *   receiving it), so the holder stops holding at least `margin` before anyone can take the key.
 * - *Taker*: a host takes only once the old key is really gone (the transaction above fails while
 *   it exists; a leader change in etcd extends leases, so no timer is trusted), then waits
 *   `takeoverDelay` (≥ renew interval + margin) before its verdict becomes `grant`.
 * - *etcd unreachable*: `onArbiterLoss: "release"` (default) lets the deadline fire;
 *   `"keep-if-peers-agree"` keeps the service past the deadline while every peer of the service
 *   answers and agrees (Patroni's failsafe mode), until a peer disagrees or etcd answers again.
 *
 * **Timing.** Defaults derive from the TTL: `renew = TTL/3`, `timeout = TTL/6`,
 * `margin = TTL/6`, `takeoverDelay = renew + margin`; with the default TTL of 6 s: 2 s, 1 s, 1 s,
 * 3 s. {@linkcode arbiterTiming} checks `renew + 2 × timeout + margin ≤ TTL`: one renewal (a
 * keepalive and a confirmation, each up to `timeout`) sent at the renew interval is confirmed
 * before the deadline (6 s: 2 + 2 + 1 = 5 ≤ 6, so one more quick retry fits).
 *
 * {@linkcode stepLease} is the rule as a pure function (state, event, time → state, verdict and a
 * reason), tested row by row; {@linkcode EtcdArbiter} carries it out against the gateway.
 *
 * @module
 */
import {
  type AcquireResult,
  type CallOptions,
  type ConfirmResult,
  EtcdError,
  // deno-lint-ignore no-unused-vars -- named in the documentation links.
  type EtcdGateway,
  type FollowOptions,
  type FollowUpdate,
  type GrantResult,
  isLeaseNotFound,
  type KeepAliveResult,
} from "./etcd_gateway.ts";
import { NAME_PATTERN } from "../../lib/types.ts";
export * from "../script/arbiter_timing.ts";
export * from "./rule.ts";
import {
  type ArbiterLossPolicy,
  type ArbiterState,
  type ArbiterTiming,
  arbiterTiming,
  type ArbiterVerdict,
} from "../script/arbiter_timing.ts";
import {
  deadlineOf,
  initialLease,
  KEYED,
  type LeaseContext,
  type LeaseEvent,
  type ServiceLease,
  stepLease,
} from "./rule.ts";

// ---------------------------------------------------------------------------------------------
// The driver.

/** A monotonic clock with timers (`performance.now()` in production, fake time in tests). */
export interface MonotonicClock {
  /** Monotonic time in ms. */
  now(): number;
  /** Calls `fn` after `ms`. */
  setTimeout(fn: () => void, ms: number): number;
  /** Cancels a timer. */
  clearTimeout(id: number): void;
}

/** The real monotonic clock (`performance.now()`, which never jumps with the wall clock). */
export const monotonicClock: MonotonicClock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms) as unknown as number,
  clearTimeout: (id) => clearTimeout(id),
};

/** The part of {@linkcode EtcdGateway} the driver uses (a test may hand in its own). */
export interface ArbiterGateway {
  /** See {@linkcode EtcdGateway.grant}. */
  grant(ttlSeconds: number, options?: CallOptions): Promise<Pick<GrantResult, "id" | "ttlSeconds">>;
  /** See {@linkcode EtcdGateway.keepAlive}. */
  keepAlive(
    id: string,
    options?: CallOptions,
  ): Promise<Pick<KeepAliveResult, "ttlSeconds" | "expired">>;
  /** See {@linkcode EtcdGateway.revoke}. */
  revoke(id: string, options?: CallOptions): Promise<boolean>;
  /** See {@linkcode EtcdGateway.acquire}. */
  acquire(key: string, value: string, lease: string, options?: CallOptions): Promise<AcquireResult>;
  /** See {@linkcode EtcdGateway.confirm}. */
  confirm(keys: readonly string[], lease: string, options?: CallOptions): Promise<ConfirmResult>;
  /** See {@linkcode EtcdGateway.deleteIfOwn}. */
  deleteIfOwn(key: string, lease: string, options?: CallOptions): Promise<boolean>;
  /** See {@linkcode EtcdGateway.follow}: optional, only a wake-up for takers. */
  follow?(key: string, options: FollowOptions): AsyncIterable<FollowUpdate>;
}

/** A service's standing as the scheduler, the monitor and the logs see it. */
export interface ArbiterStatus {
  /** The service. */
  service: string;
  /** Its state. */
  state: ArbiterState;
  /** `grant` only while `held` or `failsafe`. */
  verdict: ArbiterVerdict;
  /** The epoch while the key is ours (goes into the faild record, logs, GARP log line). */
  epoch: string | null;
  /** Who holds the key when it is not ours, if known. */
  holder: string | null;
  /** Whether this host wants it. */
  wanted: boolean;
  /** The rule that decided. */
  rule: string;
  /** Why, in one sentence. */
  reason: string;
  /** Time left before the holder must release without a renewal, in ms (while keyed). */
  deadlineInMs: number | null;
  /** `false` while etcd has not answered this host since its last failed request. */
  etcdReachable: boolean;
}

/** Options of {@linkcode EtcdArbiter}. */
export interface EtcdArbiterOptions {
  /** The etcd gateway. */
  gateway: ArbiterGateway;
  /** This host's name: the value of the keys it takes. */
  host: string;
  /** Key prefix of the cluster, ending with `/`, e.g. `/failover/lab/`; a service's key is prefix + name. */
  prefix: string;
  /** The timing (defaults: {@linkcode arbiterTiming}). */
  timing?: Partial<ArbiterTiming>;
  /** What a holder does when etcd stops answering (default `release`). */
  onArbiterLoss?: ArbiterLossPolicy;
  /** The monotonic clock (default {@linkcode monotonicClock}). */
  clock?: MonotonicClock;
  /**
   * Called when a service's state, verdict or epoch changes. On `lost` the scheduler must remove
   * the service's addresses at once, then call {@linkcode EtcdArbiter.unwant}.
   */
  onChange?: (status: ArbiterStatus) => void;
  /** Receives one line per transition and per etcd failure. */
  log?: (line: string) => void;
  /**
   * Told after each renewal of held keys: confirmed (`ok`, with the time from sending the
   * keepalive to the confirmation) or failed (for `/metrics`).
   */
  onRenew?: (ok: boolean, latencyMs: number) => void;
  /** Watch the prefix to learn at once that a key is gone (default `true` when the gateway can). */
  watch?: boolean;
}

interface HostLease {
  id: string;
  ttlMs: number;
  /** Send time of the last keepalive (or the grant) etcd confirmed. */
  sentAt: number;
}

/**
 * Runs {@linkcode stepLease} for the services of one host against etcd: one lease per host, shared
 * by its keys, renewed every `renewMs` from the previous send (a failed renewal is retried after
 * at most 250 ms), each renewal confirmed by one transaction over every held key; the deadline and
 * the takeover delay are timers on the monotonic clock, so a verdict changes when it is due, not
 * at the next poll.
 *
 * How the scheduler uses it (see `docs/arbiter.md`):
 *
 * 1. `verdict(service)` is `decide()`'s `arbiter` input.
 * 2. When `decide()` answers `arbiter-veto` (it would start but for the arbiter), call
 *    `want(service)`; `onChange` reports the `grant` after the takeover delay, then decide again.
 * 3. When `onChange` reports `lost` (verdict `deny`), stop the service at once (decide() answers
 *    `arbiter-revoke`), and once its addresses are gone call `unwant(service)`.
 * 4. After any stop of the service, once its addresses are gone, call `unwant(service)`: the key is
 *    deleted so another host can take it without waiting for the TTL.
 * 5. With `keep-if-peers-agree`, call `setPeersAgree(service, …)` after each poll round.
 * 6. At exit, after every address is released: `await stop()` (revokes the lease).
 *
 * @example
 * ```ts ignore
 * import { EtcdGateway } from "./etcd_gateway.ts";
 * import { EtcdArbiter } from "./lease.ts";
 * const arbiter = new EtcdArbiter({
 *   gateway: new EtcdGateway({ endpoints: ["http://198.18.1.11:2379"] }),
 *   host: "h1",
 *   prefix: "/failover/lab/",
 *   onChange: (s) => console.log(s.service, s.state, s.epoch, s.reason),
 * });
 * arbiter.start();
 * arbiter.want("web");
 * ```
 */
export class EtcdArbiter {
  #gw: ArbiterGateway;
  #host: string;
  #prefix: string;
  #timing: ArbiterTiming;
  #ctx: LeaseContext;
  #clock: MonotonicClock;
  #onChange: (status: ArbiterStatus) => void;
  #log: (line: string) => void;
  #onRenew: (ok: boolean, latencyMs: number) => void;
  #useWatch: boolean;
  #services = new Map<string, ServiceLease>();
  #last = new Map<string, { state: ArbiterState; verdict: ArbiterVerdict; epoch: string | null }>();
  #wakeTimers = new Map<string, number>();
  #lease: HostLease | null = null;
  /** Keys to delete if still on the given lease (services given up). */
  #toDelete = new Map<string, string>();
  #cycleTimer: number | null = null;
  #running: Promise<void> | null = null;
  #again = false;
  #started = false;
  #stopped = false;
  #watchAbort: AbortController | null = null;
  #watching: Promise<void> | null = null;

  /**
   * Creates the driver (nothing is sent until {@linkcode EtcdArbiter.want}).
   *
   * @param options Gateway, host, prefix, timing, policy, clock, callbacks.
   */
  constructor(options: EtcdArbiterOptions) {
    if (!NAME_PATTERN.test(options.host)) {
      throw new TypeError(`Invalid arbiter host name: ${JSON.stringify(options.host)}`);
    }
    if (!/^\/[\x21-\x7e]*\/$/.test(options.prefix)) {
      throw new TypeError(
        `Invalid arbiter key prefix: ${
          JSON.stringify(options.prefix)
        }: expected /…/ in printable ASCII`,
      );
    }
    const policy = options.onArbiterLoss ?? "release";
    if (policy !== "release" && policy !== "keep-if-peers-agree") {
      throw new TypeError(
        `Invalid onArbiterLoss: ${JSON.stringify(policy)}: expected release or keep-if-peers-agree`,
      );
    }
    this.#gw = options.gateway;
    this.#host = options.host;
    this.#prefix = options.prefix;
    this.#timing = arbiterTiming(options.timing);
    this.#ctx = { self: options.host, timing: this.#timing, onArbiterLoss: policy };
    this.#clock = options.clock ?? monotonicClock;
    this.#onChange = options.onChange ?? (() => {});
    this.#log = options.log ?? (() => {});
    this.#onRenew = options.onRenew ?? (() => {});
    this.#useWatch = (options.watch ?? true) && typeof options.gateway.follow === "function";
  }

  /** The checked timing in use. */
  get timing(): ArbiterTiming {
    return { ...this.#timing };
  }

  /** The current lease id, or `null`. */
  get leaseId(): string | null {
    return this.#lease?.id ?? null;
  }

  /**
   * The key of a service.
   *
   * @param service The service.
   * @returns prefix + service.
   */
  keyOf(service: string): string {
    return this.#prefix + service;
  }

  /** Starts watching the prefix (a wake-up for takers). Idempotent. */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    if (this.#useWatch) this.#startWatch();
  }

  /**
   * Asks for a service: the driver tries to take its key (now, then at each renewal and whenever
   * the watch sees it go). Idempotent.
   *
   * @param service The service.
   */
  want(service: string): void {
    this.#check(service);
    this.#apply(service, { type: "want" });
    this.#kick();
  }

  /**
   * Gives a service up once its addresses are gone (after a stop, or to acknowledge `lost`): the
   * key is deleted if it is still on this host's lease, and the service goes back to `none`.
   *
   * @param service The service.
   */
  unwant(service: string): void {
    this.#check(service);
    const l = this.#services.get(service);
    if (l && l.state !== "none" && l.state !== "acquiring" && this.#lease) {
      this.#toDelete.set(service, this.#lease.id);
    }
    this.#apply(service, { type: "unwant" });
    this.#kick();
  }

  /**
   * Tells whether every peer of the service answers and agrees this host holds it (used only
   * with `keep-if-peers-agree`).
   *
   * @param service The service.
   * @param agree The scheduler's view after its last poll round.
   */
  setPeersAgree(service: string, agree: boolean): void {
    this.#check(service);
    this.#apply(service, { type: "peers", agree });
  }

  /**
   * The verdict for `decide()`.
   *
   * @param service The service.
   * @returns `grant` while held (or kept in failsafe), else `deny`.
   */
  verdict(service: string): ArbiterVerdict {
    return this.status(service).verdict;
  }

  /**
   * A service's standing now (deadlines that passed are applied first).
   *
   * @param service The service.
   * @returns The status.
   */
  status(service: string): ArbiterStatus {
    this.#check(service);
    return this.#apply(service, { type: "tick" });
  }

  /** Every service's standing. */
  statuses(): ArbiterStatus[] {
    return [...this.#services.keys()].sort().map((s) => this.status(s));
  }

  /**
   * Stops: timers, watch, renewals; then revokes the lease (deleting this host's keys) so
   * another host can take over without waiting for the TTL. Call it only after every address
   * of the services is released.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#cycleTimer !== null) this.#clock.clearTimeout(this.#cycleTimer);
    for (const t of this.#wakeTimers.values()) this.#clock.clearTimeout(t);
    this.#wakeTimers.clear();
    this.#watchAbort?.abort();
    await this.#running;
    await this.#watching;
    const lease = this.#lease;
    this.#lease = null;
    for (const s of this.#services.keys()) this.#apply(s, { type: "unwant" }, true);
    if (lease) {
      await this.#gw.revoke(lease.id, { timeoutMs: this.#timing.timeoutMs }).catch((e) =>
        this.#log(`cannot revoke lease ${lease.id}: ${(e as Error).message}`)
      );
    }
  }

  #check(service: string): void {
    if (!NAME_PATTERN.test(service)) {
      throw new TypeError(`Invalid service name: ${JSON.stringify(service)}`);
    }
  }

  /** Applies one event to a service, reports a change, and sets its wake timer. */
  #apply(service: string, event: LeaseEvent, quiet = false): ArbiterStatus {
    const now = this.#clock.now();
    const before = this.#services.get(service) ?? initialLease(service, now);
    const a = stepLease(before, event, now, this.#ctx);
    this.#services.set(service, a.lease);
    const old = this.#wakeTimers.get(service);
    if (old !== undefined) this.#clock.clearTimeout(old);
    this.#wakeTimers.delete(service);
    if (a.wakeAt !== null && !this.#stopped) {
      const id = this.#clock.setTimeout(
        () => {
          this.#wakeTimers.delete(service);
          this.#apply(service, { type: "tick" });
        },
        Math.max(0, a.wakeAt - now),
      );
      this.#wakeTimers.set(service, id);
    }
    const d = deadlineOf(a.lease, this.#timing);
    const status: ArbiterStatus = {
      service,
      state: a.lease.state,
      verdict: a.verdict,
      epoch: a.lease.epoch,
      holder: a.lease.holder,
      wanted: a.lease.wanted,
      rule: a.rule,
      reason: a.reason,
      deadlineInMs: KEYED.includes(a.lease.state) && d !== null ? Math.max(0, d - now) : null,
      etcdReachable: a.lease.etcdDownSince === null,
    };
    const last = this.#last.get(service);
    if (
      !last || last.state !== status.state || last.verdict !== status.verdict ||
      last.epoch !== status.epoch
    ) {
      this.#last.set(service, {
        state: status.state,
        verdict: status.verdict,
        epoch: status.epoch,
      });
      if (last || status.state !== "none") {
        this.#log(
          `${service}: ${
            last?.state ?? "none"
          } -> ${status.state} [${status.rule}] ${status.reason}`,
        );
        if (!quiet) {
          try {
            this.#onChange(status);
          } catch (e) {
            this.#log(`onChange failed: ${(e as Error).message}`);
          }
        }
      }
    }
    return status;
  }

  #inState(...states: ArbiterState[]): string[] {
    return [...this.#services.values()].filter((l) => states.includes(l.state)).map((l) =>
      l.service
    );
  }

  /** Runs a cycle now (or right after the one running). */
  #kick(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    if (this.#cycleTimer !== null) this.#clock.clearTimeout(this.#cycleTimer);
    this.#cycleTimer = null;
    this.#running = this.#cycle().finally(() => {
      this.#running = null;
    });
  }

  async #cycle(): Promise<void> {
    let ok = true;
    try {
      do {
        this.#again = false;
        ok = await this.#renew();
        ok = (await this.#acquireWanted()) && ok;
        ok = (await this.#deleteGivenUp()) && ok;
      } while (this.#again && !this.#stopped);
    } catch (e) {
      ok = false;
      this.#log(`arbiter cycle failed: ${(e as Error).stack ?? e}`);
    }
    this.#schedule(ok);
  }

  /** The next cycle: at the renewal due time, sooner after a failure, none when idle. */
  #schedule(ok: boolean): void {
    if (this.#stopped) return;
    const busy = this.#inState("acquiring", "waiting-delay", "held", "failsafe").length > 0 ||
      this.#toDelete.size > 0;
    if (!busy) return;
    const now = this.#clock.now();
    const renew = this.#timing.renewMs;
    const due = this.#lease ? this.#lease.sentAt + renew : now + renew;
    // After a failure: retry soon, but never in a tight loop (a refused connection is instant).
    const at = ok ? Math.max(Math.min(due, now + renew), now + 10) : now + Math.min(250, renew);
    this.#cycleTimer = this.#clock.setTimeout(() => {
      this.#cycleTimer = null;
      this.#kick();
    }, Math.max(0, at - now));
  }

  /** Reports a failed request to the services concerned; forgets a lease etcd says is gone. */
  #failed(e: unknown, services: string[], what: string): void {
    if (isLeaseNotFound(e)) {
      this.#lease = null;
      for (const s of services) this.#apply(s, { type: "lease-expired" });
      return;
    }
    const message = e instanceof EtcdError ? e.message : String(e);
    this.#log(`cannot ${what}: ${message}`);
    if (!(e instanceof EtcdError)) throw e;
    for (const s of services) this.#apply(s, { type: "unreachable", error: message });
  }

  /** Keepalive (when due), then one confirmation of every key this host holds. */
  async #renew(): Promise<boolean> {
    const lease = this.#lease;
    if (!lease) return true;
    const keyed = this.#inState("waiting-delay", "held", "failsafe");
    const waiting = this.#inState("acquiring");
    const now = this.#clock.now();
    if (keyed.length === 0 && waiting.length === 0) return true;
    if (now < lease.sentAt + this.#timing.renewMs - 1) return true; // Not due yet.
    const opts = { timeoutMs: this.#timing.timeoutMs };
    const sentAt = now;
    let ka;
    try {
      ka = await this.#gw.keepAlive(lease.id, opts);
    } catch (e) {
      this.#failed(e, keyed, `renew lease ${lease.id}`);
      if (keyed.length > 0) this.#onRenew(false, this.#clock.now() - sentAt);
      return false;
    }
    if (this.#lease !== lease) return true;
    if (ka.expired) {
      this.#log(`lease ${lease.id} expired (keepalive without TTL)`);
      this.#lease = null;
      for (const s of keyed) this.#apply(s, { type: "lease-expired" });
      return true;
    }
    lease.sentAt = sentAt;
    lease.ttlMs = ka.ttlSeconds * 1000;
    const keys = this.#inState("waiting-delay", "held", "failsafe");
    if (keys.length === 0) return true;
    let c: ConfirmResult;
    try {
      c = await this.#gw.confirm(keys.map((s) => this.keyOf(s)), lease.id, opts);
    } catch (e) {
      this.#failed(e, keys, `confirm the keys of lease ${lease.id}`);
      this.#onRenew(false, this.#clock.now() - sentAt);
      return false;
    }
    this.#onRenew(true, this.#clock.now() - sentAt);
    for (const s of keys) {
      const key = this.keyOf(s);
      if (c.owned.has(key)) {
        this.#apply(s, { type: "renewed", sentAt, ttlMs: lease.ttlMs });
      } else {
        this.#apply(s, { type: "not-owned", holder: c.current.get(key)?.value ?? null });
      }
    }
    return true;
  }

  /** Takes the keys of the services wanted (and of those kept in failsafe whose lease expired). */
  async #acquireWanted(): Promise<boolean> {
    const wanting = [
      ...this.#inState("acquiring"),
      ...(this.#lease === null ? this.#inState("failsafe") : []),
    ];
    if (wanting.length === 0) return true;
    const opts = { timeoutMs: this.#timing.timeoutMs };
    let lease = this.#lease;
    const now = this.#clock.now();
    if (!lease || now >= lease.sentAt + lease.ttlMs - this.#timing.marginMs) {
      const sentAt = now;
      let g;
      try {
        g = await this.#gw.grant(Math.ceil(this.#timing.ttlMs / 1000), opts);
      } catch (e) {
        this.#failed(e, wanting, "grant a lease");
        return false;
      }
      lease = { id: g.id, ttlMs: g.ttlSeconds * 1000, sentAt };
      this.#lease = lease;
      this.#log(`lease ${g.id} granted, TTL ${g.ttlSeconds} s`);
    }
    for (const s of wanting) {
      const state = this.#services.get(s)?.state;
      if (state !== "acquiring" && state !== "failsafe") continue;
      let r: AcquireResult;
      try {
        r = await this.#gw.acquire(this.keyOf(s), this.#host, lease.id, opts);
      } catch (e) {
        if (isLeaseNotFound(e)) {
          this.#log(`lease ${lease.id} is gone; a new one is granted`);
          if (this.#lease === lease) this.#lease = null;
          return false;
        }
        this.#failed(e, [s], `take the key of ${s}`);
        return false;
      }
      if (r.acquired) {
        const after = this.#apply(s, {
          type: "acquired",
          epoch: r.epoch,
          leaseSentAt: lease.sentAt,
          ttlMs: lease.ttlMs,
        });
        // Given up while the request was out: give the key back.
        if (after.state === "none") this.#toDelete.set(s, lease.id);
      } else {
        this.#apply(s, { type: "taken", holder: r.holder?.value ?? null });
      }
    }
    return true;
  }

  /** Deletes the keys of services given up, if still on the lease they were taken with. */
  async #deleteGivenUp(): Promise<boolean> {
    let ok = true;
    for (const [s, leaseId] of [...this.#toDelete]) {
      const l = this.#services.get(s);
      if (l && KEYED.includes(l.state)) {
        this.#toDelete.delete(s); // Taken again meanwhile: keep it.
        continue;
      }
      try {
        await this.#gw.deleteIfOwn(this.keyOf(s), leaseId, { timeoutMs: this.#timing.timeoutMs });
        this.#toDelete.delete(s);
      } catch (e) {
        if (isLeaseNotFound(e)) {
          this.#toDelete.delete(s);
          continue;
        }
        this.#log(`cannot delete the key of ${s}: ${(e as Error).message}`);
        ok = false;
      }
    }
    return ok;
  }

  #startWatch(): void {
    const ac = new AbortController();
    this.#watchAbort = ac;
    const follow = this.#gw.follow!.bind(this.#gw);
    this.#watching = (async () => {
      try {
        for await (
          const u of follow(this.#prefix, {
            prefix: true,
            signal: ac.signal,
            retryMs: Math.min(500, this.#timing.renewMs),
          })
        ) {
          if (this.#stopped) break;
          const waiting = new Set(this.#inState("acquiring").map((s) => this.keyOf(s)));
          if (waiting.size === 0) continue;
          const gone = u.kind === "sync"
            ? [...waiting].some((k) => !u.kvs.some((kv) => kv.key === k))
            : u.events.some((e) => e.type === "DELETE" && waiting.has(e.kv.key));
          if (gone) this.#kick();
        }
      } catch (e) {
        this.#log(`watch ended: ${(e as Error).message}`);
      }
    })();
  }
}
