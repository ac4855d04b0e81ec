/**
 * An in-memory stand-in for etcd's lease and key semantics on fake time, for the fake-time tests
 * of the arbiter's *timing rules* only (the safety claims are tested against a real etcd in
 * `lease_test.ts`). Each client has its own link that a test can cut, and its own latency.
 * Internal: not re-exported.
 *
 * @module
 */
import type { FakeTime } from "../_fake_time.ts";
import {
  type AcquireResult,
  type CallOptions,
  type ConfirmResult,
  EtcdRefusedError,
  EtcdUnreachableError,
  type KeyValue,
  type ResponseHeader,
} from "./etcd_gateway.ts";
import type { ArbiterGateway } from "./lease.ts";

interface Lease {
  ttlMs: number;
  expiresAt: number;
}

interface Entry {
  value: string;
  lease: string;
  createRevision: number;
  modRevision: number;
}

/** One call a client made: what, when it was sent, and its lease if any. */
export interface FakeCall {
  /** Client name. */
  client: string;
  /** Operation. */
  op: string;
  /** Fake time it was sent. */
  at: number;
}

/** The shared store (one "etcd cluster"). */
export class FakeEtcd {
  readonly clock: FakeTime;
  leases = new Map<string, Lease>();
  keys = new Map<string, Entry>();
  revision = 1;
  calls: FakeCall[] = [];
  /** Leases whose keepalive keeps answering with a TTL after a revoke (etcd 3.4.23's bug). */
  zombie = new Set<string>();
  #nextLease = 2n ** 62n + 12345n;
  /** Smallest TTL granted, in seconds (etcd raises shorter ones). */
  minTtlSeconds = 1;

  constructor(clock: FakeTime) {
    this.clock = clock;
  }

  /** Expires the leases due at the current fake time (etcd's expiry loop). */
  sweep(): void {
    const now = this.clock.now();
    for (const [id, l] of this.leases) {
      if (l.expiresAt <= now) this.revokeNow(id);
    }
  }

  /** Revokes a lease at once (an operator, or the expiry), deleting its keys. */
  revokeNow(id: string): void {
    if (!this.leases.delete(id)) return;
    for (const [k, e] of this.keys) {
      if (e.lease === id) {
        this.keys.delete(k);
        this.revision++;
      }
    }
  }

  /** When a lease would expire, or `null`. */
  expiresAt(id: string): number | null {
    return this.leases.get(id)?.expiresAt ?? null;
  }

  header(): ResponseHeader {
    return { clusterId: "1", memberId: "1", revision: String(this.revision), raftTerm: "2" };
  }

  kv(key: string): KeyValue | null {
    const e = this.keys.get(key);
    if (!e) return null;
    return {
      key,
      value: e.value,
      lease: e.lease,
      createRevision: String(e.createRevision),
      modRevision: String(e.modRevision),
      version: "1",
    };
  }

  /** A client of this store. */
  client(name: string, options: { latencyMs?: number } = {}): FakeEtcdClient {
    return new FakeEtcdClient(this, name, options.latencyMs ?? 5);
  }

  nextLeaseId(): string {
    this.#nextLease += 1n;
    return this.#nextLease.toString();
  }
}

/** One host's link to the store: a gateway with a cuttable link and a latency. */
export class FakeEtcdClient implements ArbiterGateway {
  readonly store: FakeEtcd;
  readonly name: string;
  /** Cut: every request waits for its time limit, then fails as unreachable. */
  down = false;
  /** Time to the answer in fake ms (the request is served when the answer leaves). */
  latencyMs: number;

  constructor(store: FakeEtcd, name: string, latencyMs: number) {
    this.store = store;
    this.name = name;
    this.latencyMs = latencyMs;
  }

  async #call<T>(op: string, options: CallOptions | undefined, serve: () => T): Promise<T> {
    const clock = this.store.clock;
    this.store.calls.push({ client: this.name, op, at: clock.now() });
    const limit = options?.timeoutMs ?? 1000;
    const down = this.down;
    const wait = down ? limit : Math.min(this.latencyMs, limit);
    await new Promise<void>((r) => clock.setTimeout(r, wait));
    if (down || this.latencyMs > limit) {
      throw new EtcdUnreachableError(`Cannot reach etcd for ${op}: no answer within ${limit} ms`);
    }
    this.store.sweep();
    return serve();
  }

  grant(ttlSeconds: number, options?: CallOptions): Promise<{ id: string; ttlSeconds: number }> {
    return this.#call("grant", options, () => {
      const ttl = Math.max(ttlSeconds, this.store.minTtlSeconds);
      const id = this.store.nextLeaseId();
      this.store.leases.set(id, {
        ttlMs: ttl * 1000,
        expiresAt: this.store.clock.now() + ttl * 1000,
      });
      return { id, ttlSeconds: ttl };
    });
  }

  keepAlive(id: string, options?: CallOptions): Promise<{ ttlSeconds: number; expired: boolean }> {
    return this.#call("keepalive", options, () => {
      const l = this.store.leases.get(id);
      if (!l) {
        if (this.store.zombie.has(id)) return { ttlSeconds: 5, expired: false };
        return { ttlSeconds: 0, expired: true };
      }
      l.expiresAt = this.store.clock.now() + l.ttlMs;
      return { ttlSeconds: l.ttlMs / 1000, expired: false };
    });
  }

  revoke(id: string, options?: CallOptions): Promise<boolean> {
    return this.#call("revoke", options, () => {
      const had = this.store.leases.has(id);
      this.store.revokeNow(id);
      return had;
    });
  }

  acquire(
    key: string,
    value: string,
    lease: string,
    options?: CallOptions,
  ): Promise<AcquireResult> {
    return this.#call("acquire", options, () => {
      const s = this.store;
      const e = s.keys.get(key);
      if (e) {
        if (e.lease === lease) {
          return {
            acquired: true,
            epoch: String(e.createRevision),
            recovered: true,
            header: s.header(),
          };
        }
        return { acquired: false, holder: s.kv(key), header: s.header() };
      }
      if (!s.leases.has(lease)) {
        throw new EtcdRefusedError("etcdserver: requested lease not found", { grpcCode: 5 });
      }
      s.revision++;
      s.keys.set(key, { value, lease, createRevision: s.revision, modRevision: s.revision });
      return { acquired: true, epoch: String(s.revision), recovered: false, header: s.header() };
    });
  }

  confirm(keys: readonly string[], lease: string, options?: CallOptions): Promise<ConfirmResult> {
    return this.#call("confirm", options, () => {
      const owned = new Set(keys.filter((k) => this.store.keys.get(k)?.lease === lease));
      const all = owned.size === keys.length;
      const current = new Map<string, KeyValue | null>();
      if (!all) { for (const k of keys) current.set(k, this.store.kv(k)); }
      return { allOwned: all, owned, current, header: this.store.header() };
    });
  }

  deleteIfOwn(key: string, lease: string, options?: CallOptions): Promise<boolean> {
    return this.#call("delete", options, () => {
      if (this.store.keys.get(key)?.lease !== lease) return false;
      this.store.keys.delete(key);
      this.store.revision++;
      return true;
    });
  }
}
