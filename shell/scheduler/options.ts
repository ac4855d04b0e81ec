/**
 * The options of failsh's {@linkcode Scheduler}: who this host is, the sandbox, the poller and
 * reporter, and the inputs and callbacks failsh (or `failsh simulate`) plugs in.
 *
 * @module
 */
import type { HandlerKind, HostDecl, Sandbox } from "../contract.ts";
import type { HeldAddress } from "../../lib/types.ts";
import type { Logger } from "../../lib/log.ts";
import type { Poller, Timers } from "./peers.ts";
import type { Reporter } from "./local.ts";
import type { LivenessSource } from "../liveness/prober.ts";
import type { DecisionLogEntry } from "./events.ts";
import type { ArbiterLink } from "./arbiter.ts";

/** Options of {@linkcode Scheduler}. */
export interface SchedulerOptions {
  /** This host's name (one of the script's hosts). */
  self: string;
  /** The sandbox running the script (its `decl` must be loaded). */
  sandbox: Sandbox;
  /** Polls a host's faild. */
  poller: Poller;
  /** Reports local states to the local faild. */
  reporter: Reporter;
  /** Clock and timers (default real). */
  timers?: Timers;
  /** Logger (default the process logger). */
  logger?: Logger;
  /** Addresses held right now (from the net driver), for the snapshot. */
  addresses?: () => HeldAddress[];
  /** URL shown for each host in the snapshot (default `protocol://address:port`). */
  urlOf?: (host: HostDecl) => string;
  /** Longest race deferral, in intervals of the service (default 3). */
  deferIntervals?: number;
  /**
   * Arbiter verdict per service (default: no arbiter): `decide()`'s `arbiter` input, e.g. the
   * `verdict()` of `shell/arbiter/lease.ts`'s `EtcdArbiter`.
   */
  arbiter?: (service: string) => "grant" | "deny" | undefined;
  /**
   * The etcd arbiter (failsh passes its `EtcdArbiter`; simulate a scripted one): its verdict is
   * `decide()`'s `arbiter` input (it replaces `arbiter`), and the scheduler wants the service's
   * key while it would take or holds the service and gives it up once the service is `FAIL`
   * again (see {@linkcode ArbiterLink}).
   */
  arbiterLink?: ArbiterLink;
  /**
   * Called after a handler threw or timed out, before the service is set FAIL: failsh releases
   * the addresses the service still holds, so a half-done takeover is not left behind.
   */
  onHandlerFailed?: (service: string, kind: HandlerKind) => Promise<void>;
  /**
   * Called when `handOver()` says this host, which keeps a service, announces its addresses
   * again (a peer also held it, gave it up, came back or changed it unseen): failsh sends
   * gratuitous ARP, since clients may still point at the peer.
   */
  onReannounce?: (service: string) => Promise<void>;
  /**
   * Told when a peer shows a service UP that this host holds too: stop this host's gratuitous
   * ARP bursts for it still running (keep the addresses). Whichever host keeps the service
   * announces again (`onReannounce`); a late packet of the other's burst would send clients to
   * a host about to release.
   */
  onQuiet?: (service: string) => void;
  /**
   * Called after the stop handler of an `arbiter-revoke` decision (the key is lost), before the
   * service is set `FAIL`: failsh removes the addresses the service still holds.
   */
  onArbiterRevoked?: (service: string) => Promise<void>;
  /** Called with every decision that changes something and every handler run (for simulate). */
  onDecision?: (entry: DecisionLogEntry) => void;
  /**
   * The peers' host liveness (`shell/liveness/prober.ts`'s `LivenessMonitor`, or a fake): a
   * peer whose kernel falls silent is unreachable at once (default none: polls alone).
   */
  liveness?: LivenessSource;
}
