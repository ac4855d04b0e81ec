/**
 * The contract between failsh's parts: what a script declares (sent by the sandboxed child to the
 * supervisor), how the supervisor asks the child to run a handler, and what the scheduler needs
 * from the sandbox. The scheduler (`shell/scheduler/scheduler.ts`) only sees {@linkcode Sandbox}; the
 * sandbox (`shell/sandbox/sandbox.ts`) implements it around a child `deno run --no-prompt`.
 *
 * @module
 */
import type { ServiceRecord, ServiceState } from "../lib/types.ts";

/** A handler's kind. */
export type HandlerKind = "start" | "stop" | "reclaim";

/** A host as the script declares it (no secrets: `key` names a key in the operator's policy). */
export interface HostDecl {
  /** Host name, unique in the script. */
  name: string;
  /** Address of its faild (IP literal or DNS name). */
  address: string;
  /** faild's port (default 7100). */
  port: number;
  /** `http` or `https`. */
  protocol: "http" | "https";
  /** Name of the key in the policy's `keys` used to sign polls to this host. */
  key: string | null;
  /**
   * Host liveness (opt in): the supervisor pings the host's address at `intervalMs` and counts
   * the host unreachable at once after `fall` consecutive unanswered echo requests, if its
   * kernel answered before (`shell/liveness/prober.ts`). Absent when not asked for.
   */
  liveness?: LivenessDecl;
}

/** A host's liveness probe as declared (see {@linkcode HostDecl.liveness}). */
export interface LivenessDecl {
  /** Time between two echo requests, ms (10-10000). */
  intervalMs: number;
  /** Consecutive unanswered echo requests before the host's kernel counts as silent (1-100). */
  fall: number;
  /**
   * While the host's kernel answers, how long its faild may leave polls unanswered before the
   * host counts unreachable, ms (0-60000; 0: the polls' `fall` alone). A stalled daemon on a
   * live host is judged by this, never sooner than the polls' own `fall`.
   */
  stallGraceMs: number;
}

/** A service as the script declares it. All times in ms. */
export interface ServiceDecl {
  /** Service name, unique in the script. */
  name: string;
  /** Master hosts, highest priority first. */
  masters: string[];
  /** Slave (backup) hosts, highest priority first. */
  slaves: string[];
  /** Poll interval of the peers. */
  intervalMs: number;
  /** Consecutive failed polls before a peer counts as FAIL. */
  fall: number;
  /** Consecutive good polls before a FAIL peer counts as reachable again. */
  rise: number;
  /** Whether a returning master takes the service back (RECOVER handshake) or stays standby. */
  preempt: boolean;
  /** After start-up, how long to wait (collecting polls) before any takeover. */
  graceMs: number;
  /** Time limit of each handler kind. */
  timeouts: Record<HandlerKind, number>;
  /** Which handlers the script defines (an undefined reclaim falls back to start). */
  handlers: HandlerKind[];
}

/**
 * The cluster's etcd arbiter as the script declares it (the same on every host; see
 * `docs/arbiter.md`). The supervisor talks to etcd, never the script; the endpoints must be
 * allowed by the policy's `etcd`. All times in ms, checked with `renew + 2 × timeout + margin ≤
 * TTL`.
 */
export interface ArbiterDecl {
  /** etcd members' v3 JSON gateways, `http://host:port`. */
  endpoints: string[];
  /** Key prefix of the cluster, `/…/`: a service's key is prefix + service name. */
  prefix: string;
  /** Lease TTL (whole seconds). */
  ttlMs: number;
  /** Renewal period. */
  renewMs: number;
  /** Time limit of each request to etcd. */
  timeoutMs: number;
  /** How long before the earliest expiry the holder lets go. */
  marginMs: number;
  /** How long a new holder waits after taking the key before it acts. */
  takeoverDelayMs: number;
  /** What a holder does when etcd stops answering. */
  onArbiterLoss: "release" | "keep-if-peers-agree";
}

/** Everything a script declared, as sent to the supervisor once the module has loaded. */
export interface ScriptDecl {
  /** The etcd arbiter, when the script declares one (absent: no arbiter). */
  arbiter?: ArbiterDecl;
  /** Declared hosts. */
  hosts: HostDecl[];
  /** Declared services. */
  services: ServiceDecl[];
  /** Number of traps registered (they receive every {@linkcode TrapEvent}). */
  traps: number;
}

/** What a handler is told when it is invoked. */
export interface HandlerInvocation {
  /** The service. */
  service: string;
  /** Which handler. */
  kind: HandlerKind;
  /** This host's name. */
  self: string;
  /** Why the scheduler invoked it (the decision's reason). */
  reason: string;
  /** The peers' last known services, by host name (unreachable hosts are absent). */
  peers: Record<string, ServiceRecord[]>;
}

/** An event delivered to the script's traps. */
export interface TrapEvent {
  /** `service` when a service's state changed on any host; `host` when a host's reachability changed. */
  type: "service" | "host";
  /** The host concerned. */
  host: string;
  /** The service, for `service` events. */
  service: string | null;
  /** New state (`FAIL` for an unreachable host). */
  state: ServiceState;
  /** Previous state, or `null` if unknown. */
  previous: ServiceState | null;
  /** When (ms since epoch). */
  at: number;
}

/** The sandbox as the scheduler uses it. */
export interface Sandbox {
  /** What the script declared (available once {@linkcode Sandbox.start} resolved). */
  readonly decl: ScriptDecl;
  /** Starts the child and waits for its declaration. Rejects with a clear error on failure. */
  start(): Promise<ScriptDecl>;
  /**
   * Runs a handler in the child, enforcing `timeoutMs`. On timeout the child is killed (and
   * restarted for the next call) and the promise rejects with a `TimeoutError`-named Error.
   */
  invoke(call: HandlerInvocation, timeoutMs: number): Promise<ServiceState>;
  /** Delivers an event to the script's traps (fire and forget). */
  trap(event: TrapEvent): void;
  /** Stops the child; held addresses are not touched. */
  close(): Promise<void>;
}

/** One address range a policy lets failsh take over. */
export interface AddressRule {
  /** CIDR the address must lie in, e.g. `198.18.0.0/24` or `2001:db8::/64`. */
  prefix: string;
  /** Devices the address may be put on, e.g. `["eth0"]`. */
  devices: string[];
}

/** One program a policy lets a script run. */
export interface ProgramRule {
  /** Name the script uses in `ctx.run([name, ...args])`. */
  name: string;
  /** Absolute path of the executable that is actually run. */
  path: string;
  /**
   * One regular expression per argument position (anchored, full match). A call with more
   * arguments than patterns is refused unless `rest` is set.
   */
  args: string[];
  /** Pattern every argument beyond `args` must match, or absent to refuse extra arguments. */
  rest?: string;
  /** Time limit in ms (default 10000); the program and its children are killed after it. */
  timeoutMs: number;
}

/**
 * The operator's policy and failsh configuration (`policy.json`). Everything the script may do
 * beyond computing is listed here; the script itself never sees secrets.
 */
export interface Policy {
  /** This host's name (must be one of the script's hosts). */
  host: string;
  /** The local faild failsh reports to: URL and the key (name in `keys`) to sign with. */
  faild: { url: string; key: string | null };
  /** Secrets by name; each read from a file (mode 0600 expected), never from the script. */
  keys: Record<string, { file: string }>;
  /** Addresses and prefixes that may be taken over. */
  addresses: AddressRule[];
  /** How addresses are put in place: `linux` (ip + arping/ndisc6) or `simulated` (no root; demo). */
  netDriver: "linux" | "simulated";
  /** Gratuitous ARP: packets in the burst after takeover, and refresh period (0 = none). */
  arp: { count: number; refreshMs: number };
  /** Programs the script may run. */
  programs: ProgramRule[];
  /** Hosts:ports the script itself may connect to (besides asking failsh to poll). */
  net: string[];
  /** Files or directories the script may read. */
  read: string[];
  /**
   * etcd endpoints (`http://host:port`) the supervisor may talk to for the script's arbiter;
   * the script itself never connects to them.
   */
  etcd: string[];
  /**
   * The user the sandboxed child runs as (`"nobody"` or `"UID:GID"`), or `null` to keep failsh's
   * (root without capabilities). Needs failsh to run as root and util-linux `setpriv`.
   */
  childUser: string | null;
  /**
   * The children the services' handlers share (1 to 16, default 4), besides the main child of
   * the traps: fewer cost less memory (about 40 MiB each) and isolate the services less.
   */
  children: number;
  /** What failsh does with held addresses on SIGTERM. */
  onExit: "release" | "keep";
  /** Monitor port listen address (`127.0.0.1:1848`), or null to disable. */
  monitor: string | null;
  /** Debug port listen address, or null to disable; requests must be signed with `debugKey`. */
  debug: string | null;
  /** Key (name in `keys`) faildebug must sign with. */
  debugKey: string | null;
  /** Audit log file (JSON lines) of every privileged request, allowed or refused. */
  audit: string;
  /** Where SIGUSR1 writes the state dump (file or FIFO). */
  dumpFile: string;
}
