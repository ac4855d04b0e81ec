/**
 * One local service as the scheduler keeps it: its state, its last decision and handler run,
 * the timing of a deferral and of a retry, its timers and the hand-over's memory; what the
 * monitor shows of it ({@linkcode serviceView}), the input of `decide()` it gives with the peers'
 * part ({@linkcode decisionInput}), and how a decision is recorded ({@linkcode recordDecision}).
 *
 * @module
 */
import type { ScriptDecl, ServiceDecl } from "../contract.ts";
import type {
  ArbiterView,
  DecisionView,
  HandlerRunView,
  ServiceState,
  ServiceView,
} from "../../lib/types.ts";
import { type Decision, type DecisionInput, type DecisionRule, roleOf } from "./decide.ts";
import type { PeerInputs } from "./peers.ts";
import { RETRY_HOLDOFF_MS } from "./handlers.ts";

/** A local service's runtime. */
export interface ServiceRuntime {
  /** Its declaration. */
  decl: ServiceDecl;
  /** This host's role in it. */
  role: "master" | "slave";
  /** Its local state. */
  state: ServiceState;
  /** When the state last changed (ms since epoch). */
  lastChange: number;
  /** The last decision (for the monitor). */
  lastDecision: DecisionView | null;
  /** The rule of the last decision. */
  lastRule: DecisionRule | null;
  /** The last handler run (for the monitor). */
  lastHandler: HandlerRunView | null;
  /** Since when this host defers to a higher-priority contender, or `null`. */
  deferStart: number | null;
  /** No start or reclaim before this time (set after a failed one). */
  holdUntil: number;
  /** The service's tick. */
  timer: number | null;
  /** Re-evaluates when a yield held back for a returning peer may go ahead. */
  yieldTimer: number | null;
  /** Peers this host and the peer were both seen holding the service at the last poll, since when. */
  bothHeld: Map<string, number>;
}

/**
 * A local service as it starts: `FAIL`, nothing decided or run yet; or, after a reload, with the
 * state, last decision and last handler run it had before.
 *
 * @param decl Its declaration.
 * @param options This host's role, the time, and the service before a reload.
 * @returns Its runtime.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { newService } from "./service.ts";
 * const decl = {
 *   name: "web", masters: ["alpha"], slaves: ["beta"], intervalMs: 100, fall: 3, rise: 2,
 *   preempt: true, graceMs: 0, timeouts: { start: 1000, stop: 1000, reclaim: 1000 },
 *   handlers: [],
 * };
 * assert.equal(newService(decl, { role: "slave", now: 0 }).state, "FAIL");
 * ```
 */
export function newService(
  decl: ServiceDecl,
  options: { role: "master" | "slave"; now: number; before?: ServiceRuntime | undefined },
): ServiceRuntime {
  const { before } = options;
  return {
    decl,
    role: options.role,
    state: before?.state ?? "FAIL",
    lastChange: before?.lastChange ?? options.now,
    lastDecision: before?.lastDecision ?? null,
    lastRule: null,
    lastHandler: before?.lastHandler ?? null,
    deferStart: null,
    holdUntil: 0,
    timer: null,
    yieldTimer: null,
    bothHeld: new Map(),
  };
}

/**
 * What the monitor's snapshot shows of a service.
 *
 * @param svc The service.
 * @param arbiter The arbiter's part, when the script has an arbiter.
 * @returns Its view.
 */
export function serviceView(svc: ServiceRuntime, arbiter?: ArbiterView): ServiceView {
  return {
    name: svc.decl.name,
    state: svc.state,
    role: svc.role,
    masters: [...svc.decl.masters],
    slaves: [...svc.decl.slaves],
    intervalMs: svc.decl.intervalMs,
    lastChange: svc.lastChange,
    lastDecision: svc.lastDecision,
    lastHandler: svc.lastHandler,
    ...(arbiter === undefined ? {} : { arbiter }),
  };
}

/** What {@linkcode decisionInput} needs besides the service. */
export interface InputFacts {
  /** This host's name. */
  self: string;
  /** Now (ms since epoch). */
  now: number;
  /** When the scheduler started (ms since epoch): the grace period counts from there. */
  startedAt: number;
  /** The peers' part, from `Peers.inputs()`. */
  peers: PeerInputs;
  /** Whether a handler of the service runs. */
  handlerRunning: boolean;
  /** Who vetoed the service in the local faild, or `null`. */
  veto: string | null;
  /** The arbiter's verdict, or `undefined` without an arbiter. */
  arbiter: "grant" | "deny" | "unreachable" | undefined;
  /** Longest race deferral, in intervals of the service. */
  deferIntervals: number;
}

/**
 * The input of `decide()` for a service.
 *
 * A higher-priority host that may be starting gets `deferIntervals` intervals, and at least the
 * retry hold-off of a failed start (1 s) for its start handler plus one interval to see the
 * outcome: a start that takes longer than 3 short intervals on a loaded host must not make a
 * second host take the VIP and give it back. A master starting up also gets the grace period
 * (how far apart the hosts may start).
 *
 * @param svc The service.
 * @param facts This host, the time, the peers and the other inputs.
 * @returns The input.
 */
export function decisionInput(svc: ServiceRuntime, facts: InputFacts): DecisionInput {
  const { decl } = svc;
  const { now, peers: p } = facts;
  const maxDeferMs = Math.max(
    decl.intervalMs * facts.deferIntervals,
    RETRY_HOLDOFF_MS + decl.intervalMs,
  );
  return {
    service: { name: decl.name, masters: decl.masters, slaves: decl.slaves, preempt: decl.preempt },
    self: facts.self,
    local: svc.state,
    peers: p.peers,
    graceOver: p.known && now - facts.startedAt >= decl.graceMs,
    handlerRunning: facts.handlerRunning,
    selfReachable: p.selfReachable,
    localVeto: facts.veto,
    ...(facts.arbiter !== undefined ? { arbiter: facts.arbiter } : {}),
    deferredMs: svc.deferStart === null ? 0 : now - svc.deferStart,
    maxDeferMs,
    maxStartupDeferMs: decl.graceMs + maxDeferMs,
  };
}

/** How {@linkcode recordDecision} found a decision. */
export interface Recorded {
  /** `false`: a start or reclaim within the retry hold-off, to be dropped. */
  due: boolean;
  /** Whether it acts (not `none` or `wait`). */
  acts: boolean;
  /** Whether its rule differs from the last decision's. */
  newRule: boolean;
  /** Whether the monitor shows something new (another action or reason). */
  changed: boolean;
}

/**
 * Records a decision: times a deferral, drops a start or reclaim within the retry hold-off
 * (no tight loop after a failed one), and keeps it as the last decision.
 *
 * @param svc The service.
 * @param options The decision, and now (ms since epoch).
 * @returns Whether it is due, acts, has a new rule, changes what the monitor shows.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { newService, recordDecision } from "./service.ts";
 * const svc = newService({
 *   name: "web", masters: ["alpha"], slaves: ["beta"], intervalMs: 100, fall: 3, rise: 2,
 *   preempt: true, graceMs: 0, timeouts: { start: 1000, stop: 1000, reclaim: 1000 },
 *   handlers: [],
 * }, { role: "slave", now: 0 });
 * const decision = {
 *   action: "start", rule: "slave-start", reason: "nobody holds web", deferring: false,
 * } as const;
 * const r = recordDecision(svc, { decision, now: 100 });
 * assert.deepEqual(r, { due: true, acts: true, newRule: true, changed: true });
 * ```
 */
export function recordDecision(
  svc: ServiceRuntime,
  options: { decision: Decision; now: number },
): Recorded {
  const { decision, now } = options;
  if (decision.deferring) svc.deferStart ??= now;
  else svc.deferStart = null;
  if ((decision.action === "start" || decision.action === "reclaim") && now < svc.holdUntil) {
    return { due: false, acts: false, newRule: false, changed: false };
  }
  const acts = decision.action !== "none" && decision.action !== "wait";
  const newRule = decision.rule !== svc.lastRule;
  const changed = svc.lastDecision?.action !== decision.action ||
    svc.lastDecision.reason !== decision.reason;
  svc.lastDecision = { at: now, action: decision.action, reason: decision.reason };
  svc.lastRule = decision.rule;
  return { due: true, acts, newRule, changed };
}

/**
 * The services of a declaration this host has a role in (master or slave).
 *
 * @param decl The script's declaration.
 * @param self This host.
 * @returns The services.
 * @throws {TypeError} When this host is not one of the script's hosts.
 */
export function servicesOf(decl: ScriptDecl, self: string): ServiceDecl[] {
  if (!decl.hosts.some((h) => h.name === self)) {
    throw new TypeError(
      `Cannot schedule: this host "${self}" is not among the script's hosts (${
        decl.hosts.map((h) => h.name).join(", ") || "none"
      })`,
    );
  }
  return decl.services.filter((s) => roleOf(s, self) !== null);
}
