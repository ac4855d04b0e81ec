/**
 * failsh's scheduler, the orchestrator: {@linkcode Peers} polls every host and applies
 * hysteresis; after each answer, miss, tick or handler run the scheduler asks
 * {@linkcode decide} what to do for the service and {@linkcode handOver} how to hand it over
 * without a gap, runs the handlers through the sandbox ({@linkcode HandlerRunner}, one at a time
 * per service), reports every local state change to the local faild ({@linkcode LocalRecords}),
 * feeds the script's traps, and keeps the data of the monitor's {@linkcode FailshSnapshot}.
 *
 * Data flows one way: polls -> hysteresis (peers.ts) -> decide() and handOver() -> handler ->
 * local state -> faild (local.ts). Clock, timers, poller and reporter are injected, so tests and
 * `failsh simulate` run it in fake time.
 *
 * @module
 */
import type { HandlerKind, Sandbox, ScriptDecl } from "../contract.ts";
import type { EventRecord, FailshSnapshot, ServiceState } from "../../lib/types.ts";
import { type Logger, logger as defaultLogger } from "../../lib/log.ts";
import { decide, type Decision, type DecisionInput, type DecisionRule, roleOf } from "./decide.ts";
import { type AnswerInput, handOver } from "./handover.ts";
import { type Answer, Peers, realTimers, type Timers } from "./peers.ts";
import { LocalRecords } from "./local.ts";
import { HandlerRunner, RETRY_HOLDOFF_MS } from "./handlers.ts";
import { increment, type SchedulerStats, schedulerStats } from "./stats.ts";
import { AddressWatch, EventLog } from "./events.ts";
import {
  decisionInput,
  newService,
  recordDecision,
  type ServiceRuntime,
  servicesOf,
  serviceView,
} from "./service.ts";

import type { SchedulerOptions } from "./options.ts";
import {
  arbiterChangeText,
  arbiterNote,
  arbiterVerdict,
  arbiterView,
  steerArbiter,
} from "./arbiter.ts";

export type { ArbiterLink } from "./arbiter.ts";
export type { SchedulerOptions } from "./options.ts";
export { type Poller, type PollResult, realTimers, type Timers } from "./peers.ts";
export type { Reporter } from "./local.ts";
export type { DecisionLogEntry } from "./events.ts";

/**
 * Runs the failover algorithm for every service of a script that names this host.
 *
 * @example Building one (a real failsh passes a real sandbox, poller and reporter)
 * ```ts ignore
 * import { Scheduler } from "./scheduler.ts";
 * const scheduler = new Scheduler({ self: "beta", sandbox, poller, reporter });
 * scheduler.start();
 * console.log(scheduler.snapshot().services.map((s) => s.state));
 * await scheduler.stop();
 * ```
 */
export class Scheduler {
  #opts: SchedulerOptions;
  #timers: Timers;
  #log: Logger;
  #sandbox: Sandbox;
  #decl: ScriptDecl;
  #peers: Peers;
  #local: LocalRecords;
  #handlers: HandlerRunner;
  #services = new Map<string, ServiceRuntime>();
  #events: EventLog;
  #addresses: AddressWatch;
  #startedAt: number;
  #running = false;
  /** Counters for `/metrics`. */
  readonly stats: SchedulerStats = schedulerStats();

  /**
   * Creates a scheduler for the script the sandbox loaded.
   *
   * @param options Self, sandbox, poller, reporter, timers and hooks.
   * @throws {TypeError} When this host is not one of the script's hosts.
   */
  constructor(options: SchedulerOptions) {
    this.#opts = options;
    this.#timers = options.timers ?? realTimers;
    this.#log = options.logger ?? defaultLogger;
    this.#sandbox = options.sandbox;
    this.#decl = options.sandbox.decl;
    this.#startedAt = this.#timers.now();
    const { self } = options;
    const stats = this.stats;
    const events = this.#events = new EventLog(this.#timers);
    this.#addresses = new AddressWatch({
      self,
      stats,
      events,
      list: options.addresses,
      epochOf: (service) => this.#opts.arbiterLink?.status(service).epoch ?? null,
    });
    this.#local = new LocalRecords({
      self,
      reporter: options.reporter,
      stateOf: (name) => this.#services.get(name)?.state ?? "FAIL",
      logger: this.#log,
      events,
    });
    this.#handlers = new HandlerRunner({
      sandbox: () => this.#sandbox,
      self,
      timers: this.#timers,
      stats,
      logger: this.#log,
      events,
      onHandlerFailed: options.onHandlerFailed,
    });
    this.#peers = this.#build(this.#decl);
  }

  /** The script declaration in force. */
  get decl(): ScriptDecl {
    return this.#decl;
  }

  /** When the scheduler was created (ms since epoch). */
  get startedAt(): number {
    return this.#startedAt;
  }

  /** Starts polling and deciding. Local services are first registered as FAIL in faild. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    for (const svc of this.#services.values()) {
      this.#events.add("info", svc.decl.name, null, `${svc.decl.name}: this host is ${svc.role}`);
    }
    this.#resume();
  }

  /**
   * Stops polling and deciding, then waits for running handlers to end.
   *
   * @param options `release: true` runs the stop handler of every service that is UP (in
   * order, with its time limit) and reports it FAIL, so peers take over at once.
   */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    this.#running = false;
    this.#pause();
    await this.#handlers.idle();
    if (options.release) {
      for (const svc of this.#services.values()) {
        if (svc.state === "FAIL") continue;
        const reason = "failsh is shutting down and the policy says release";
        if (svc.state === "UP") await this.#runHandler(svc, "stop", reason);
        this.#setState(svc, "FAIL", reason);
        await this.#local.report(svc.decl.name);
      }
    }
  }

  /**
   * Replaces the sandbox (SIGHUP): waits for running handlers, keeps the state of services
   * that still exist, adds new ones as FAIL, forgets removed ones (their addresses stay).
   *
   * @param sandbox A started sandbox with the new declaration.
   */
  async reload(sandbox: Sandbox): Promise<void> {
    await this.#handlers.idle();
    const old = new Map(this.#services);
    this.#pause();
    this.#sandbox = sandbox;
    this.#decl = sandbox.decl;
    this.#services.clear();
    this.#peers = this.#build(this.#decl, old);
    for (const name of [...old.keys()].filter((n) => !this.#services.has(n))) {
      this.#events.add("info", name, null, `${name} is no longer in the script: addresses stay`);
    }
    this.#events.add("info", null, null, "script and policy reloaded");
    if (this.#running) this.#resume();
    this.#events.changed();
  }

  /**
   * Registers a listener called (synchronously) after every change of the snapshot data.
   *
   * @param listener Called after each change.
   * @returns A function that removes the listener.
   */
  onChange(listener: () => void): () => void {
    return this.#events.onChange(listener);
  }

  /**
   * Adds a line to the recent-events ring (e.g. from the supervisor).
   *
   * @param kind The kind of event.
   * @param message The line.
   * @param service The service it is about, if any.
   */
  note(kind: EventRecord["kind"], message: string, service: string | null = null): void {
    this.#events.add(kind, service, null, message);
  }

  /**
   * Tells the scheduler that the arbiter's standing of a service changed (a grant after the
   * takeover delay, a lost key): it decides again at once, not at the next tick. On `lost` the
   * decision is `arbiter-revoke` and the stop handler runs.
   *
   * @param service The service.
   */
  arbiterChanged(service: string): void {
    const svc = this.#services.get(service);
    const link = this.#opts.arbiterLink;
    if (!svc || !link) return;
    const st = link.status(service);
    this.#events.add("decision", service, this.#opts.self, arbiterChangeText(service, st));
    if (st.state === "lost") increment(this.stats.arbiterLosses, service);
    this.#events.changed();
    // Decide again right after, not inside the arbiter's call (it may come from want()).
    this.#timers.setTimeout(() => {
      if (!this.#handlers.running(service)) this.#evaluate(svc);
    }, 0);
  }

  /**
   * The arbiter's epoch of a service while this host holds its key (for the faild record and
   * the logs).
   *
   * @param service The service.
   * @returns The epoch, or `null` (no arbiter, or the key is not ours).
   */
  epoch(service: string): string | null {
    return this.#opts.arbiterLink?.status(service).epoch ?? null;
  }

  /** The data of the monitor's snapshot. */
  snapshot(): FailshSnapshot {
    const link = this.#opts.arbiterLink;
    const view = (svc: ServiceRuntime) => serviceView(svc, arbiterView(link, svc.decl.name));
    return {
      host: this.#opts.self,
      startedAt: this.#startedAt,
      now: this.#timers.now(),
      hosts: this.#peers.views(),
      services: [...this.#services.values()].map(view),
      addresses: this.#addresses.current(),
      events: this.#events.list(),
    };
  }

  /**
   * Local state of a service.
   *
   * @param service The service.
   * @returns Its state, or `undefined` if this host takes no part in it.
   */
  state(service: string): ServiceState | undefined {
    return this.#services.get(service)?.state;
  }

  // -------------------------------------------------------------------------------------------

  /** Builds the services of a declaration (keeping what `old` knew) and the view of their hosts. */
  #build(decl: ScriptDecl, old?: Map<string, ServiceRuntime>): Peers {
    const self = this.#opts.self;
    const mine = servicesOf(decl, self);
    const now = this.#timers.now();
    for (const s of mine) {
      const before = old?.get(s.name);
      this.#services.set(s.name, newService(s, { role: roleOf(s, self)!, now, before }));
    }
    this.#local.sync(mine.map((s) => s.name));
    return new Peers({
      self,
      hosts: decl.hosts,
      services: mine,
      poller: this.#opts.poller,
      timers: this.#timers,
      stats: this.stats,
      urlOf: this.#opts.urlOf,
      liveness: this.#opts.liveness,
      events: this.#events,
      hooks: {
        trap: (event) => this.#sandbox.trap(event),
        answered: (answer) => this.#answered(answer),
        missed: (_host, services) => this.#evaluateAll(services),
      },
    });
  }

  /** Registers every local state with faild, then polls and ticks. */
  #resume(): void {
    for (const svc of this.#services.values()) void this.#local.report(svc.decl.name);
    this.#peers.start();
    for (const svc of this.#services.values()) this.#scheduleService(svc);
  }

  #pause(): void {
    this.#peers.stop();
    for (const svc of this.#services.values()) {
      if (svc.timer !== null) this.#timers.clearTimeout(svc.timer);
      if (svc.yieldTimer !== null) this.#timers.clearTimeout(svc.yieldTimer);
      svc.timer = svc.yieldTimer = null;
    }
  }

  #scheduleService(svc: ServiceRuntime): void {
    if (!this.#running) return;
    svc.timer = this.#timers.setTimeout(() => {
      svc.timer = null;
      if (this.#local.behind(svc.decl.name)) void this.#local.report(svc.decl.name);
      this.#evaluate(svc);
      this.#addresses.track();
      this.#scheduleService(svc);
    }, svc.decl.intervalMs);
  }

  #evaluateAll(services: readonly string[]): void {
    for (const name of services) this.#evaluate(this.#services.get(name)!);
  }

  /** A host answered: the local faild's records first, then a decision per service. */
  #answered(a: Answer): void {
    if (a.self) {
      this.#local.answered(a.result, a);
      this.#evaluateAll(a.services);
      return;
    }
    let pollIn: number | null = null;
    for (const name of a.services) {
      const svc = this.#services.get(name)!;
      const ms = this.#evaluate(svc, {
        peer: a.host,
        pollIntervalMs: a.pollIntervalMs,
        before: a.before.get(name)?.state ?? null,
        heldBefore: a.heldBefore.has(name),
        cameBack: a.cameBack.has(name),
        bothHeldSince: svc.bothHeld.get(a.host) ?? null,
      });
      if (ms !== null) pollIn = Math.max(pollIn ?? 0, ms);
    }
    if (pollIn !== null) this.#peers.pollSoon(a.host, pollIn);
  }

  /**
   * Decides for a service and carries the decision out, as the hand-over policy says (held back,
   * or at once); with a peer's answer, also announces and quiets as it says.
   *
   * @returns How soon to poll the answering peer again, or `null` (as scheduled).
   */
  #evaluate(svc: ServiceRuntime, answer: AnswerInput | null = null): number | null {
    if (!this.#running) return null;
    const now = this.#timers.now();
    const name = svc.decl.name;
    const input = decisionInput(svc, {
      self: this.#opts.self,
      now,
      startedAt: this.#startedAt,
      peers: this.#peers.inputs(name),
      handlerRunning: this.#handlers.running(name),
      veto: this.#local.veto(name),
      arbiter: arbiterVerdict(this.#opts.arbiterLink, this.#opts.arbiter, name),
      deferIntervals: this.#opts.deferIntervals ?? 3,
    });
    const decision = decide(input);
    steerArbiter(this.#opts.arbiterLink, svc, this.#handlers.running(svc.decl.name), decision);
    const plan = handOver({
      input,
      decision,
      yieldHeld: svc.yieldTimer !== null,
      intervalMs: svc.decl.intervalMs,
      now,
      backAt: this.#peers.backAt(name),
      answer,
    });
    if (plan.holdUntil !== null) {
      if (svc.yieldTimer === null) {
        const ms = plan.holdUntil - now;
        const note = `${name}: stop held back ${ms} ms — ${plan.reason}`;
        this.#events.add("decision", name, null, note);
        svc.yieldTimer = this.#timers.setTimeout(() => {
          svc.yieldTimer = null;
          this.#evaluate(svc);
        }, ms);
      }
    } else if (!this.#handlers.running(name)) {
      this.#act(svc, decision, input);
    }
    if (answer !== null) {
      if (plan.bothHeldSince === null) svc.bothHeld.delete(answer.peer);
      else svc.bothHeld.set(answer.peer, plan.bothHeldSince);
      if (plan.quiet) this.#opts.onQuiet?.(name);
      if (plan.announce && this.#opts.onReannounce) {
        const note = `${name}: ${plan.reason} [${plan.rule}]`;
        this.#events.add("address", name, this.#opts.self, note);
        this.#opts.onReannounce(name).catch((e) =>
          this.#log.warn("net", `${name}: announcing again failed: ${(e as Error).message}`)
        );
      }
    }
    return plan.pollInMs;
  }

  /** Carries a decision out: a handler, a state change, or nothing. */
  #act(svc: ServiceRuntime, decision: Decision, input: DecisionInput): void {
    const now = this.#timers.now();
    const name = svc.decl.name;
    increment(this.stats.decisions, decision.action);
    const { due, acts, newRule, changed } = recordDecision(svc, { decision, now });
    if (!due) return;
    if (acts || newRule) {
      this.#opts.onDecision?.({ at: now, service: name, decision, input });
      const arb = arbiterNote(this.#opts.arbiterLink, name);
      const line = `${name}: ${decision.action} — ${decision.reason}${arb.text}`;
      const fields = { service: name, rule: decision.rule, ...arb.fields };
      if (acts) this.#log.info("decision", line, fields);
      else this.#log.debug("decision", line, fields);
      this.#events.add("decision", name, null, line);
    }
    switch (decision.action) {
      case "start":
      case "reclaim":
        this.#enqueue(svc, decision.action, decision.reason);
        break;
      case "stop":
        if (svc.state === "UP") this.#enqueue(svc, "stop", decision.reason, decision.rule);
        else this.#setState(svc, "FAIL", decision.reason);
        break;
      case "recover":
        this.#setState(svc, "RECOVER", decision.reason);
        break;
      default:
        break;
    }
    if (changed) this.#events.changed();
  }

  #enqueue(
    svc: ServiceRuntime,
    kind: HandlerKind,
    reason: string,
    rule: DecisionRule | null = null,
  ): void {
    const after = rule === "arbiter-revoke" && this.#opts.onArbiterRevoked
      ? () => this.#opts.onArbiterRevoked!(svc.decl.name)
      : null;
    this.#handlers.enqueue(svc.decl.name, () => this.#runHandler(svc, kind, reason, after), () => {
      if (!this.#running) return;
      this.#addresses.track();
      this.#evaluate(svc);
    });
  }

  async #runHandler(
    svc: ServiceRuntime,
    kind: HandlerKind,
    reason: string,
    after: (() => Promise<void>) | null = null,
  ): Promise<void> {
    const outcome = await this.#handlers.run({
      service: svc.decl,
      kind,
      reason,
      peers: this.#peers.records(svc.decl.name),
      onRun: (run) => svc.lastHandler = run,
    });
    if (after) {
      await after().catch((e) =>
        this.#log.error("net", `${svc.decl.name}: ${(e as Error).message}`)
      );
      // Whatever the handler returned, the service is not held any more.
      this.#setState(svc, "FAIL", reason);
      return;
    }
    if (outcome.failedTakeover) {
      svc.holdUntil = this.#timers.now() + Math.max(svc.decl.intervalMs, RETRY_HOLDOFF_MS);
    }
    this.#setState(svc, outcome.state, outcome.reason);
  }

  #setState(svc: ServiceRuntime, state: ServiceState, reason: string): void {
    if (svc.state === state) return;
    const name = svc.decl.name;
    const previous = svc.state;
    const at = svc.lastChange = this.#timers.now();
    svc.state = state;
    this.#local.setDetail(name, reason);
    increment(this.stats.transitions, `${name}/${state}`);
    this.#log.info("state", `${name}: ${previous} -> ${state}: ${reason}`, { service: name });
    const host = this.#opts.self;
    this.#events.add("state", name, host, `${name}: ${previous} -> ${state}`);
    this.#sandbox.trap({ type: "service", host, service: name, state, previous, at });
    void this.#local.report(name);
    this.#events.changed();
  }
}
