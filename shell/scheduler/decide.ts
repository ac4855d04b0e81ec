/**
 * The failover decision: a pure function from what this host knows (its own state, each peer's
 * state after hysteresis, the grace period, the arbiter's verdict) to one action and the reason
 * for it. The scheduler (`scheduler.ts`) gathers the inputs and carries the action out; this file
 * never does I/O and never reads a clock, so every row of the algorithm is testable on its own.
 * `docs/decisions.md` is the prose table of the rules below; keep the two in step.
 *
 * @module
 */
import type { ServiceState } from "../../lib/types.ts";

/** What the scheduler should do for a service. */
export type DecisionAction = "none" | "start" | "stop" | "reclaim" | "recover" | "wait";

/**
 * Every rule {@linkcode decide} can answer with, in the order of the table in
 * `docs/decisions.md` (a rule that fires in several places is listed once). A test checks the
 * table against this list both ways.
 */
export const DECISION_RULES = [
  "not-member",
  "handler-running",
  "self-unreachable",
  "local-veto",
  "arbiter-revoke",
  "nopreempt-yield",
  "yield-higher",
  "recover-abandon",
  "holding",
  "recover-wait",
  "stale-wait",
  "flap-wait",
  "reclaim",
  "nopreempt-standby",
  "grace",
  "arbiter-veto",
  "master-recover",
  "standby",
  "race-defer",
  "startup-defer",
  "master-start",
  "slave-start",
] as const;

/** The name of a rule of {@linkcode decide} (a row of `docs/decisions.md`). */
export type DecisionRule = typeof DECISION_RULES[number];

/** The part of a service declaration the decision needs. */
export interface DecisionService {
  /** Service name (used in reasons). */
  name: string;
  /** Master hosts, highest priority first. */
  masters: readonly string[];
  /** Slave hosts, highest priority first. */
  slaves: readonly string[];
  /** Whether a returning master takes the service back from a slave. */
  preempt: boolean;
}

/** One other host of the service, as this host sees it after hysteresis. */
export interface PeerInput {
  /** Host name. */
  name: string;
  /** Reachable after rise/fall hysteresis; an unreachable host counts as FAIL for every service. */
  reachable: boolean;
  /** The host's state for this service at its last good poll, or `null` when it has no record. */
  state: ServiceState | null;
  /**
   * `true` when the host's change counter for this service moved more between the last two polls
   * than the visible state change explains (it flapped between polls).
   */
  flapped?: boolean;
  /**
   * `true` when the host's faild restarted recently and this record was restored from its state
   * file and not set since: an `UP` there is not confirmed. A stale holder neither makes this
   * host yield nor lets it start (it waits until the owner sets the record or the window ends).
   */
  stale?: boolean;
  /**
   * `true` when the record has never changed since it was created (change counter 0): the host
   * registered the service and has not held it yet, e.g. a master in its start-up grace.
   */
  neverHeld?: boolean;
  /**
   * Set when the host is unreachable because its kernel, which answered this host's liveness
   * probe, stopped answering: for how long, ms (ping's clock). Only the reason shows it: the
   * host is unreachable either way.
   */
  kernelSilentMs?: number;
}

/** Everything {@linkcode decide} looks at. */
export interface DecisionInput {
  /** The service. */
  service: DecisionService;
  /** This host's name. */
  self: string;
  /** This host's state for the service. */
  local: ServiceState;
  /** Every other host named by the service (masters and slaves except `self`). */
  peers: readonly PeerInput[];
  /** Whether the start-up grace period is over. */
  graceOver: boolean;
  /** Whether a handler of this service is running right now. */
  handlerRunning: boolean;
  /**
   * Whether this host's own faild is reachable (after hysteresis). When it is not, every peer
   * counts this host FAIL, so holding the service would make two holders. Default `true`.
   */
  selfReachable?: boolean;
  /**
   * Set when someone other than failsh (a health checker, an operator with failc) set this
   * service FAIL in the local faild: who did. This host then gives the service up and does not
   * take it until a non-FAIL state is written there again. `null` or absent when not vetoed.
   */
  localVeto?: string | null;
  /**
   * The arbiter's verdict on this host holding the service: `grant`, `deny`, `unreachable` (a
   * denial while etcd does not answer this host), or `undefined` when no arbiter is configured.
   * A denial vetoes a start or reclaim and makes a holder stop; only `unreachable` keeps a master
   * from entering RECOVER (it could not take the key back) and makes a RECOVER master give up.
   */
  arbiter?: "grant" | "deny" | "unreachable" | undefined;
  /** How long this host has been deferring to a higher-priority host in a race, in ms (0 if not). */
  deferredMs: number;
  /** The longest a lower-priority host defers to a higher-priority one that stays FAIL, in ms. */
  maxDeferMs: number;
  /**
   * The longest a slave defers to a reachable master that is starting up: its faild answers, and
   * its record of the service is missing (its failsh has not registered yet) or has never been
   * held. Covers the master's later start, its grace and its start handler. Default `maxDeferMs`.
   */
  maxStartupDeferMs?: number;
}

/** What {@linkcode decide} answers. */
export interface Decision {
  /** The action. */
  action: DecisionAction;
  /** One sentence naming the inputs that caused it. */
  reason: string;
  /** The rule that fired (the row of `docs/decisions.md`), e.g. `slave-start`. */
  rule: DecisionRule;
  /**
   * `true` when the action is `wait` because of a bounded deferral (`race-defer`,
   * `startup-defer`): the scheduler times it and passes the time back as `deferredMs`.
   */
  deferring: boolean;
}

/**
 * A host's role in a service.
 *
 * @param service The service.
 * @param host The host.
 * @returns `master`, `slave`, or `null` when the host takes no part.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { roleOf } from "./decide.ts";
 * assert.equal(roleOf({ name: "web", masters: ["a"], slaves: ["b"], preempt: true }, "b"), "slave");
 * ```
 */
export function roleOf(service: DecisionService, host: string): "master" | "slave" | null {
  if (service.masters.includes(host)) return "master";
  if (service.slaves.includes(host)) return "slave";
  return null;
}

/**
 * Priority rank of a host in a service: masters outrank slaves, then list order. Lower is higher
 * priority; a host not in the service ranks after everyone.
 *
 * @param service The service.
 * @param host The host.
 * @returns 0 for the first master, then 1, 2, …
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rankOf } from "./decide.ts";
 * const svc = { name: "web", masters: ["a"], slaves: ["b", "c"], preempt: true };
 * assert.deepEqual([rankOf(svc, "a"), rankOf(svc, "c")], [0, 2]);
 * ```
 */
export function rankOf(service: DecisionService, host: string): number {
  const m = service.masters.indexOf(host);
  if (m >= 0) return m;
  const s = service.slaves.indexOf(host);
  if (s >= 0) return service.masters.length + s;
  return Number.MAX_SAFE_INTEGER;
}

function effective(peer: PeerInput): ServiceState {
  return peer.reachable ? peer.state ?? "FAIL" : "FAIL";
}

function describe(peer: PeerInput): string {
  if (!peer.reachable && peer.kernelSilentMs !== undefined) {
    return `${peer.name}'s kernel has not answered for ${peer.kernelSilentMs} ms (counts as FAIL)`;
  }
  if (!peer.reachable) return `${peer.name} is unreachable (counts as FAIL)`;
  if (peer.state === null) return `${peer.name} has no record (counts as FAIL)`;
  return `${peer.name} is ${peer.state}`;
}

function names(peers: readonly PeerInput[]): string {
  return peers.map((p) => p.name).join(", ");
}

function d(
  action: DecisionAction,
  rule: DecisionRule,
  reason: string,
  deferring = false,
): Decision {
  return { action, rule, reason, deferring };
}

/**
 * Decides what this host should do for one service. Pure: the same input always gives the same
 * decision, and nothing outside the input is read.
 *
 * The rules, in the order they are tried (see `docs/decisions.md`):
 * a host not in the service does nothing; nothing is decided while a handler runs; a holder
 * stops when its own faild is unreachable, when the arbiter denies, or when a higher-priority
 * host is UP or RECOVER (masters outrank slaves, then list order); a RECOVER master reclaims once
 * no other host holds the service; a host that is FAIL starts when nobody else is UP or RECOVER,
 * after the grace period, unless the arbiter denies, a peer flapped since the last poll, or a
 * reachable higher-priority peer of the same role is FAIL and may start first, or (for a slave)
 * a reachable master is starting up (bounded deferrals); a returning master with preempt enters RECOVER while a slave holds the service,
 * and without preempt stays standby.
 *
 * @param input The inputs.
 * @returns The action and its reason.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decide } from "./decide.ts";
 * const decision = decide({
 *   service: { name: "web", masters: ["alpha"], slaves: ["beta"], preempt: true },
 *   self: "beta",
 *   local: "FAIL",
 *   peers: [{ name: "alpha", reachable: false, state: "UP" }],
 *   graceOver: true,
 *   handlerRunning: false,
 *   deferredMs: 0,
 *   maxDeferMs: 3000,
 * });
 * assert.deepEqual([decision.action, decision.rule], ["start", "slave-start"]);
 * ```
 */
export function decide(input: DecisionInput): Decision {
  const { service, self, local } = input;
  const role = roleOf(service, self);
  if (role === null) {
    return d("none", "not-member", `${self} is neither master nor slave of ${service.name}`);
  }
  if (input.handlerRunning) {
    return d("none", "handler-running", `a handler of ${service.name} is still running`);
  }
  const myRank = rankOf(service, self);
  const peers = input.peers.filter((p) => p.name !== self && roleOf(service, p.name) !== null);
  const claimants = peers.filter((p) => {
    const s = effective(p);
    return s === "UP" || s === "RECOVER";
  });
  // A restored, unconfirmed UP is not acted on either way (see PeerInput.stale).
  const holders = claimants.filter((p) => p.stale !== true);
  const staleHolders = claimants.filter((p) => p.stale === true);
  // Who wins when two hosts hold the service (after a partition heals): the higher rank; but
  // without preempt, between a master and a slave that are both UP the slave keeps it (it took
  // over and announced the address last; handing it back would be the flip nopreempt avoids).
  const isMaster = (h: string) => service.masters.includes(h);
  const crossRoleNoPreempt = (p: PeerInput) =>
    !service.preempt && local === "UP" && effective(p) === "UP" &&
    isMaster(p.name) !== (role === "master");
  const higherHolders = holders.filter((p) =>
    crossRoleNoPreempt(p) ? !isMaster(p.name) : rankOf(service, p.name) < myRank
  );
  const selfReachable = input.selfReachable ?? true;
  // Peers not settled yet: a restored, unconfirmed holder, or a record that changed between polls.
  const unsettled = (then: string): Decision | null => {
    if (staleHolders.length > 0) {
      return d(
        "wait",
        "stale-wait",
        `${
          names(staleHolders)
        } restarted its faild and shows ${service.name} held, restored from its state file and not confirmed yet; ${self} waits ${then}`,
      );
    }
    const flapping = peers.filter((p) => p.reachable && p.flapped === true);
    if (flapping.length === 0) return null;
    return d(
      "wait",
      "flap-wait",
      `${names(flapping)} changed state between polls; ${self} waits one poll ${then}`,
    );
  };

  // This host holds the service (UP) or is about to take it back (RECOVER).
  if (local === "UP" || local === "RECOVER") {
    if (!selfReachable) {
      return d(
        "stop",
        "self-unreachable",
        `this host's own faild is unreachable, so every peer counts ${self} FAIL for ${service.name}`,
      );
    }
    if (input.localVeto) {
      return d(
        "stop",
        "local-veto",
        `the local faild reports ${service.name} FAIL, set by ${input.localVeto} (a health check or an operator), so ${self} gives it up`,
      );
    }
    // A holder the arbiter denies lets go. RECOVER holds no address: it waits for the key
    // before reclaiming (below) instead of giving up the handshake that frees the key.
    const denied = input.arbiter === "deny" || input.arbiter === "unreachable";
    if (input.arbiter === "unreachable" && local === "RECOVER") {
      return d(
        "stop",
        "arbiter-revoke",
        `the arbiter (etcd) does not answer ${self}, which could not take ${service.name}'s key back: it gives RECOVER up so that the holder keeps serving`,
      );
    }
    if (denied && local === "UP") {
      return d("stop", "arbiter-revoke", `the arbiter denies ${self} the service ${service.name}`);
    }
    if (higherHolders.length > 0) {
      const h = higherHolders[0]!;
      if (crossRoleNoPreempt(h)) {
        return d(
          "stop",
          "nopreempt-yield",
          `slave ${h.name} is UP too and preempt is off, so master ${self} leaves it the service (no flip-back)`,
        );
      }
      const why = role === "slave" && service.masters.includes(h.name)
        ? `master ${h.name} is ${effective(h)}, so slave ${self} yields`
        : `${h.name} is ${effective(h)} and outranks ${self}`;
      return d("stop", local === "UP" ? "yield-higher" : "recover-abandon", why);
    }
    if (local === "UP") {
      const lower = holders.map(describe).join("; ");
      return d(
        "none",
        "holding",
        lower.length > 0
          ? `${self} holds ${service.name} and outranks every other holder (${lower})`
          : `${self} holds ${service.name} and no higher-priority host is UP or RECOVER`,
      );
    }
    // RECOVER: wait until no other host holds the service, then reclaim.
    if (holders.length > 0) {
      return d(
        "wait",
        "recover-wait",
        `${self} is RECOVER and waits for ${names(holders)} to stop (${
          holders.map(describe).join("; ")
        })`,
      );
    }
    if (denied) {
      return d(
        "wait",
        "arbiter-veto",
        `${self} is RECOVER and nobody else holds ${service.name}, but the arbiter denies ${self} the service until it holds the key`,
      );
    }
    const wait = unsettled("before reclaiming");
    if (wait !== null) return wait;
    return d(
      "reclaim",
      "reclaim",
      `${self} is RECOVER and no other host is UP or RECOVER any more (${
        peers.map(describe).join("; ") || "no peers"
      })`,
    );
  }

  // local === "FAIL": this host does not hold the service.
  if (input.localVeto) {
    return d(
      "none",
      "local-veto",
      `the local faild reports ${service.name} FAIL, set by ${input.localVeto}; ${self} does not take it until a non-FAIL state is written there`,
    );
  }
  if (holders.length > 0) {
    const slaveHolders = holders.filter((p) => service.slaves.includes(p.name));
    const masterHolders = holders.filter((p) => service.masters.includes(p.name));
    if (role === "master" && masterHolders.length === 0 && slaveHolders.length > 0) {
      const who = holders.map(describe).join("; ");
      if (!service.preempt) {
        return d(
          "none",
          "nopreempt-standby",
          `${who}; preempt is off, so master ${self} stays standby`,
        );
      }
      if (!input.graceOver) {
        return d("wait", "grace", `${who}; ${self} is in its start-up grace period`);
      }
      if (!selfReachable) {
        return d("wait", "self-unreachable", `${who}; this host's own faild is unreachable`);
      }
      // A denial does not stop it: RECOVER moves no address, and it is what makes the slave stop
      // and free the arbiter's key; the reclaim waits for the grant. But a master that cannot
      // reach etcd could not take the key: the slave would stop for nothing.
      if (input.arbiter === "unreachable") {
        return d(
          "wait",
          "arbiter-veto",
          `${who}; the arbiter (etcd) does not answer ${self}, so it does not make the slave stop`,
        );
      }
      return d(
        "recover",
        "master-recover",
        `${who}; master ${self} returns and enters RECOVER until the slave has stopped`,
      );
    }
    return d(
      "none",
      "standby",
      `${holders.map(describe).join("; ")}, so ${self} stays standby`,
    );
  }

  const everyone = peers.map(describe).join("; ") || "no peers";
  if (!input.graceOver) {
    return d(
      "wait",
      "grace",
      `nobody holds ${service.name} (${everyone}) but ${self} is in its start-up grace period`,
    );
  }
  if (!selfReachable) {
    return d(
      "wait",
      "self-unreachable",
      `nobody holds ${service.name} but this host's own faild is unreachable, so peers could not see ${self} take it`,
    );
  }
  if (input.arbiter === "deny" || input.arbiter === "unreachable") {
    return d(
      "wait",
      "arbiter-veto",
      `nobody holds ${service.name} (${everyone}) but the arbiter denies ${self} the takeover`,
    );
  }
  const wait = unsettled(`before starting ${service.name}`);
  if (wait !== null) return wait;
  // Race: a reachable higher-priority host of the same role is FAIL and may start at the same
  // moment. Defer to it for a bounded time so that exactly one starts.
  const sameRole = role === "master" ? service.masters : service.slaves;
  // A slave also defers to a reachable master that is starting up: its failsh has not registered
  // the service yet (no record) or registered it and has never held it. No needless flip at a
  // cold start, where the two never start at the same instant and the master's start handler
  // takes its time. A master that held the service and failed (changes > 0) is not waited for:
  // that FAIL is why the slave takes over.
  const startingMaster = (p: PeerInput) =>
    role === "slave" && service.masters.includes(p.name) &&
    (p.neverHeld === true || p.state === null);
  const contenders = peers.filter((p) =>
    p.reachable && rankOf(service, p.name) < myRank &&
    (sameRole.includes(p.name) || startingMaster(p))
  );
  const maxDeferMs = contenders.some(startingMaster)
    ? Math.max(input.maxDeferMs, input.maxStartupDeferMs ?? 0)
    : input.maxDeferMs;
  if (contenders.length > 0 && input.deferredMs < maxDeferMs) {
    const starting = contenders.filter(startingMaster);
    if (starting.length > 0) {
      return d(
        "wait",
        "startup-defer",
        `nobody holds ${service.name}; master ${names(starting)} is starting up (reachable, ${
          starting.map((p) => p.state === null ? "no record yet" : "never held it").join(", ")
        }), so slave ${self} defers (${input.deferredMs} of ${maxDeferMs} ms)`,
        true,
      );
    }
    return d(
      "wait",
      "race-defer",
      `nobody holds ${service.name}; ${
        names(contenders)
      } (higher priority, reachable, FAIL) may start first, so ${self} defers (${input.deferredMs} of ${maxDeferMs} ms)`,
      true,
    );
  }
  const deferNote = contenders.length > 0
    ? `; ${names(contenders)} did not start within ${maxDeferMs} ms`
    : "";
  return d(
    "start",
    role === "master" ? "master-start" : "slave-start",
    `nobody holds ${service.name} (${everyone})${deferNote}, so ${role} ${self} starts it`,
  );
}
