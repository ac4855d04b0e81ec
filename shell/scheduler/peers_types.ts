/**
 * The types `Peers` (`./peers.ts`) takes and gives: its options, its hooks into the
 * scheduler, an answer after hysteresis, and the peers' part of `decide()`'s input.
 *
 * @module
 */
import type { HostDecl, ServiceDecl, TrapEvent } from "../contract.ts";
import type { ServiceRecord } from "../../lib/types.ts";
import type { PeerInput } from "./decide.ts";
import type { EventSink } from "./events.ts";
import type { SchedulerStats } from "./stats.ts";
import type { LivenessSource } from "../liveness/prober.ts";
import type { Poller, PollResult, Timers } from "./peers.ts";

/** A host's answer, after hysteresis: what the scheduler decides and hands over with. */
export interface Answer {
  /** The host. */
  host: string;
  /** Whether it is this host (its own faild). */
  self: boolean;
  /** What it answered. */
  result: PollResult;
  /** Whether its faild restarted since the previous answer (a new boot id). */
  restarted: boolean;
  /** Whether the boot id is the one of the previous answer (`false` at the first answer). */
  sameBoot: boolean;
  /** How often the host is polled (the shortest interval of its services), ms. */
  pollIntervalMs: number;
  /** The local services the host takes part in. */
  services: readonly string[];
  /** Its records at the previous answer, by service. */
  before: ReadonlyMap<string, ServiceRecord>;
  /** Services it was counted as holding (reachable and UP) before this answer. */
  heldBefore: ReadonlySet<string>;
  /** Services for which this is its first answer since it was counted unreachable. */
  cameBack: ReadonlySet<string>;
}

/** What `Peers` tells the scheduler. */
export interface PeersHooks {
  /** An event for the script's traps. */
  trap(event: TrapEvent): void;
  /** A host answered (hysteresis applied): decide for its services. */
  answered(answer: Answer): void;
  /** A poll of a host failed or went unanswered (hysteresis applied): decide for its services. */
  missed(host: string, services: readonly string[]): void;
}

/** Options of `Peers`. */
export interface PeersOptions {
  /** This host's name. */
  self: string;
  /** Every host of the script. */
  hosts: readonly HostDecl[];
  /** The services this host takes part in. */
  services: readonly ServiceDecl[];
  /** Polls a host's faild. */
  poller: Poller;
  /** Clock and timers. */
  timers: Timers;
  /** Poll latency and failures go here. */
  stats: SchedulerStats;
  /** URL shown for each host (default `protocol://address:port`). */
  urlOf?: ((host: HostDecl) => string) | undefined;
  /** Where events go, and changes of the snapshot data are told. */
  events: EventSink;
  /** Where answers, misses and traps go. */
  hooks: PeersHooks;
  /** The peers' host liveness (default none: polls alone judge every peer). */
  liveness?: LivenessSource | undefined;
}

/** The peers' part of {@linkcode decide}'s input for one service. */
export interface PeerInputs {
  /** Every other host of the service. */
  peers: PeerInput[];
  /** Whether every host's reachability is known (first good poll, or `fall` misses). */
  known: boolean;
  /** Whether this host's own faild answers (after hysteresis). */
  selfReachable: boolean;
}
