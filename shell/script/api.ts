/**
 * The public types of a failover script's API, as `mod.ts` exports them: the options of `host()`
 * and `service()`, the handler and trap contexts, and what their requests return. Types only:
 * the registry is `./registry.ts`, the child's RPC server `./child.ts`.
 *
 * @module
 */
import type { HandlerKind, TrapEvent } from "../contract.ts";
import type { Duration, ServiceRecord, ServiceState } from "../../lib/types.ts";
import type { PeerPoll, RunResult } from "../rpc.ts";

export type { Duration, PeerPoll, RunResult };

/** Options of `host()`. */
export interface HostOptions {
  /** Address of the host's faild: an IP literal or a DNS name. */
  address: string;
  /** faild's port (default 7100). */
  port?: number;
  /** `http` (default) or `https`. */
  protocol?: "http" | "https";
  /** Name of a key of the operator's policy used to sign polls of this host (no secret here). */
  key?: string | null;
  /**
   * Host liveness, opt in: failsh's supervisor pings `address` every `interval` (one long-lived
   * iputils `ping` per peer) and counts the host unreachable at once when its kernel, having
   * answered before, leaves `fall` consecutive echo requests unanswered. A host whose kernel
   * never answered (ICMP filtered) is judged by the polls alone; one whose kernel answers while
   * its faild is silent counts unreachable only after `stallGrace`. Ignored for the host failsh
   * runs on.
   */
  liveness?: LivenessOptions;
}

/** Options of a host's liveness probe (see {@linkcode HostOptions.liveness}). */
export interface LivenessOptions {
  /** Time between two echo requests, 10 ms to 10 s (e.g. `"10ms"`). */
  interval: Duration;
  /** Consecutive unanswered echo requests before the host counts as dead, 1-100 (default 5). */
  fall?: number;
  /**
   * While the host's kernel answers, how long its faild may leave polls unanswered before the
   * host counts unreachable, 0 to 60 s (default `"1s"`; `0`: the polls' `fall` alone, as without
   * liveness). It lets polls run fast without a stalled daemon on a live host (a GC pause, CPU
   * starvation, a stopped process) looking like a dead host; it never makes a dead host slower
   * to see, since a silent kernel counts at once. It matters only when it is longer than the
   * polls' `fall` intervals.
   */
  stallGrace?: Duration;
}

/**
 * What a handler returns: a promise of the service's new local state. Handlers are `async`
 * functions (TypeScript keeps `return "UP"` a {@linkcode ServiceState} only when the declared
 * result is a plain promise; a plain function returning a state works at run time too).
 */
export type HandlerResult = Promise<ServiceState>;

/** A start, stop or reclaim handler: an `async` function returning the new state. */
export type Handler = (ctx: HandlerContext) => HandlerResult;

/** Options of `service()`. */
export interface ServiceOptions {
  /** Master hosts, highest priority first (at least one). */
  masters: string[];
  /** Slave (backup) hosts, highest priority first (default none). */
  slaves?: string[];
  /** How often the peers are polled. */
  interval: Duration;
  /** Consecutive failed polls before a peer counts as FAIL (default 3). */
  fall?: number;
  /** Consecutive good polls before a FAIL peer counts again (default 2). */
  rise?: number;
  /** Whether a returning master takes the service back (default `true`). */
  preempt?: boolean;
  /** After start-up, how long to collect polls before any takeover (default 2 intervals). */
  grace?: Duration;
  /** Time limit of every handler, or of each kind (default 30 s each). */
  timeouts?: Duration | Partial<Record<HandlerKind, Duration>>;
  /** Starts the service here; returns the new state (usually `UP`, or `FAIL` if it could not). */
  start: Handler;
  /** Stops the service here; returns the new state (usually `FAIL`). */
  stop: Handler;
  /** Takes the service back from a slave after a RECOVER handshake (default: `start`). */
  reclaim?: Handler;
}

/** Options of `arbiter()`: the cluster's etcd arbiter (see `docs/arbiter.md`). */
export interface ArbiterOptions {
  /** etcd members' v3 JSON gateways, `http://host:port` (the policy's `etcd` must list each). */
  endpoints: string[];
  /** Key prefix of the cluster, `/…/` (default `/failover/`). */
  prefix?: string;
  /** Lease TTL, whole seconds (default 6 s). */
  ttl?: Duration;
  /** Renewal period (default TTL/3). */
  renew?: Duration;
  /** Time limit of each request to etcd (default TTL/6). */
  timeout?: Duration;
  /** How long before the earliest expiry the holder lets go (default TTL/6). */
  margin?: Duration;
  /** How long a new holder waits after taking the key (default renew + margin). */
  takeoverDelay?: Duration;
  /** What a holder does when etcd stops answering (default `release`). */
  onArbiterLoss?: "release" | "keep-if-peers-agree";
}

/** Options of `ctx.takeover()`. */
export interface TakeoverOptions {
  /** The network device, e.g. `eth0` (must be listed for the address in the policy). */
  device: string;
  /** Gratuitous ARP packets sent after taking an IPv4 address (default and most: the policy's). */
  arpCount?: number;
  /** Period of a one-packet ARP refresh while held, ms (default and shortest: the policy's; 0 = none). */
  refreshMs?: number;
}

/** Options of `ctx.release()`. */
export interface ReleaseOptions {
  /** The network device the address is on. */
  device: string;
}

/** Options of `ctx.run()`. */
export interface RunOptions {
  /** Time limit in ms (capped by the policy's limit for the program). */
  timeoutMs?: number;
}

/** What a trap can do: log, poll and run programs (no address changes). */
export interface TrapContext {
  /**
   * Asks failsh to poll a declared host's faild now.
   *
   * @param host A host name declared with `host()`.
   * @returns Its services, reachability and latency.
   */
  poll(host: string): Promise<PeerPoll>;
  /**
   * Runs a program of the policy (argv, never a shell string).
   *
   * @param argv The program's name in the policy, then its arguments.
   * @param options Time limit.
   * @returns Exit code and captured output; a policy refusal rejects with `PolicyDeniedError`.
   */
  run(argv: string[], options?: RunOptions): Promise<RunResult>;
  /**
   * Writes a line to failsh's log (facility `script`).
   *
   * @param message The text (cut at 4096 characters).
   */
  log(message: string): void;
}

/** What a handler receives. */
export interface HandlerContext extends TrapContext {
  /** The service this handler runs for. */
  readonly service: string;
  /** Which handler runs: `start`, `stop` or `reclaim`. */
  readonly kind: HandlerKind;
  /** The name of the host failsh runs on. */
  readonly self: string;
  /** Why the scheduler invoked the handler (its decision's reason). */
  readonly reason: string;
  /** The peers' last known services, by host name (unreachable hosts are absent). */
  readonly peers: Readonly<Record<string, ServiceRecord[]>>;
  /** Aborted when the handler's time limit is reached (the child is killed right after). */
  readonly signal: AbortSignal;
  /**
   * The last known state of a service on a peer (`FAIL` when the host is unreachable or does
   * not report the service).
   *
   * @param host A host name.
   * @param service A service name (default: this handler's).
   * @returns The state.
   */
  peerState(host: string, service?: string): ServiceState;
  /**
   * Takes over an address: failsh adds it to the device and announces it (gratuitous ARP for
   * IPv4, unsolicited neighbour advertisement for IPv6). Idempotent.
   *
   * @param address The address with its prefix length, e.g. `198.18.0.100/24`.
   * @param options The device and ARP settings.
   * @returns Once the address is in place; rejects with `PolicyDeniedError` when refused.
   */
  takeover(address: string, options: TakeoverOptions): Promise<void>;
  /**
   * Releases an address taken over before.
   *
   * @param address The address with its prefix length.
   * @param options The device.
   * @returns Once the address is gone; rejects with `PolicyDeniedError` when refused.
   */
  release(address: string, options: ReleaseOptions): Promise<void>;
  /**
   * Sets this service's state on the local faild right away (the state the handler returns is
   * set anyway when it returns).
   *
   * @param state The state.
   * @param detail Free text shown by failc / failstat.
   */
  setState(state: ServiceState, detail?: string): Promise<void>;
}

/** A trap: called for every {@linkcode TrapEvent}, in order of registration. */
export type TrapHandler = (event: TrapEvent, ctx: TrapContext) => void | Promise<void>;
