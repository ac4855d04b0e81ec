/**
 * failsh's scheduler: polls every host of the script, applies rise/fall hysteresis, asks
 * {@linkcode decide} what to do for each local service, runs the handlers through the
 * {@linkcode Sandbox} (one at a time per service, each with its time limit), reports every local
 * state change to the local faild, feeds the script's traps, and keeps the data of the monitor's
 * {@linkcode FailshSnapshot}.
 *
 * Data flows one way: polls -> hysteresis -> decide() -> handler -> local state -> faild.
 * Clock, timers, poller and reporter are injected, so tests and `failsh simulate` run it in fake
 * time.
 *
 * @module
 */
import type {
  HandlerKind,
  HostDecl,
  Sandbox,
  ScriptDecl,
  ServiceDecl,
  TrapEvent,
} from "../contract.ts";
import type {
  DecisionView,
  EventRecord,
  FailshSnapshot,
  HandlerRunView,
  HeldAddress,
  HostView,
  ServiceRecord,
  ServiceState,
  ServiceView,
} from "../../lib/types.ts";
import {
  decide,
  type Decision,
  type DecisionInput,
  type DecisionRule,
  type PeerInput,
  roleOf,
} from "./decide.ts";
import { type AnswerInput, handOver } from "./handover.ts";
import { type Logger, logger as defaultLogger } from "../../lib/log.ts";
import {
  HANDLER_BUCKETS,
  increment,
  observe,
  POLL_BUCKETS,
  type SchedulerStats,
  schedulerStats,
} from "./stats.ts";

/** Clock and timers (real ones by default; tests inject fake time). */
export interface Timers {
  /** Current time in ms since the epoch. */
  now(): number;
  /** Calls `fn` after `ms`. */
  setTimeout(fn: () => void, ms: number): number;
  /** Cancels a timer. */
  clearTimeout(id: number): void;
}

/** The real clock and timers. */
export const realTimers: Timers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms) as unknown as number,
  clearTimeout: (id) => clearTimeout(id),
};

/** What a successful poll of a host returns. */
export interface PollResult {
  /** The faild's boot id (a new one resets change-counter comparisons). */
  bootId: string;
  /** Every service the host reported. */
  services: ServiceRecord[];
}

/**
 * Polls one host's faild. Rejects when the host cannot be reached or answers badly; `timeoutMs`
 * is the longest the poll may take.
 */
export type Poller = (host: HostDecl, options: { timeoutMs: number }) => Promise<PollResult>;

/**
 * Reports a local service's state to the local faild. Rejects on failure (retried each tick).
 * Resolves with the record faild stored (its change counter tells later polls apart from
 * writes by others), or nothing.
 */
export type Reporter = (
  service: string,
  state: ServiceState,
  detail: string,
) => Promise<ServiceRecord | void>;

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
  /** Arbiter verdict per service (default: no arbiter). */
  arbiter?: (service: string) => "grant" | "deny" | undefined;
  /**
   * Called after a handler threw or timed out, before the service is set FAIL: failsh releases
   * the addresses the service still holds, so a half-done takeover is not left behind.
   */
  onHandlerFailed?: (service: string, kind: HandlerKind) => Promise<void>;
  /**
   * Called when this host holds a service and a peer that also held it gives it up (after a
   * partition heals): failsh announces the service's addresses again (gratuitous ARP), since
   * clients may still point at the peer.
   */
  onReannounce?: (service: string) => Promise<void>;
  /**
   * Told when a peer shows a service UP that this host holds too: stop this host's gratuitous
   * ARP bursts for it still running (keep the addresses). Whichever host keeps the service
   * announces again (`onReannounce`); a late packet of the other's burst would send clients to
   * a host about to release.
   */
  onQuiet?: (service: string) => void;
  /** Called with every decision that changes something and every handler run (for simulate). */
  onDecision?: (entry: DecisionLogEntry) => void;
}

/** A decision with the inputs that caused it (what `failsh simulate` prints). */
export interface DecisionLogEntry {
  /** When (ms since epoch). */
  at: number;
  /** Service. */
  service: string;
  /** The decision. */
  decision: Decision;
  /** The inputs given to decide(). */
  input: DecisionInput;
}

const MAX_EVENTS = 200;

/** After a failed start or reclaim, the shortest wait before the next attempt, in ms. */
export const RETRY_HOLDOFF_MS = 1000;

/** Most polls of one host outstanding at once (each on its own connection). */
export const MAX_POLLS_IN_FLIGHT = 3;

interface HostRuntime {
  decl: HostDecl;
  url: string;
  self: boolean;
  intervalMs: number;
  timer: number | null;
  /** When the pending poll tick is due (the schedule is absolute, so timer lateness does not add up). */
  dueAt: number;
  /** Polls sent and not yet answered or failed (at most {@linkcode MAX_POLLS_IN_FLIGHT}). */
  inFlight: number;
  /** Poll ticks so far. */
  tick: number;
  /** Number of the last poll sent, and of the newest whose answer was applied. */
  pollSeq: number;
  appliedSeq: number;
  /** Consecutive ticks at which a poll was still unanswered (counted as misses). */
  silentTicks: number;
  /** Services announced again since this peer answered after being unreachable. */
  comebackAnnounced: Set<string>;
  /** When this peer first answered again after being unreachable, or `null`. */
  backAt: number | null;
  misses: number;
  goods: number;
  lastConnect: number | null;
  lastCall: number | null;
  latencyMs: number | null;
  lastError: string | null;
  services: ServiceRecord[];
  bootId: string | null;
  flapped: Set<string>;
  /** After a restart of the host's faild: restored records (name -> changes) not yet confirmed. */
  restored: Map<string, number>;
  /** Until when restored records count as stale (ms since epoch). */
  staleUntil: number;
  /** Reachable as the snapshot shows it (null until known). */
  reachable: boolean | null;
}

interface ServiceRuntime {
  decl: ServiceDecl;
  role: "master" | "slave";
  state: ServiceState;
  lastChange: number;
  reported: ServiceState | null;
  /** faild's change counter after our last report (null if unknown). */
  reportedChanges: number | null;
  /** The detail of our last report (null if unknown): tells another writer's FAIL from ours. */
  reportedDetail: string | null;
  /** Who set the service FAIL in the local faild behind failsh's back, or null. */
  veto: string | null;
  reportDetail: string;
  reporting: Promise<void> | null;
  /** Per host: reachable after this service's hysteresis (null until known). */
  reach: Map<string, boolean | null>;
  lastDecision: DecisionView | null;
  lastRule: DecisionRule | null;
  lastHandler: HandlerRunView | null;
  handlerRunning: boolean;
  queue: Promise<void>;
  deferStart: number | null;
  /** No start or reclaim before this time (set after a failed one). */
  holdUntil: number;
  timer: number | null;
  /** Re-evaluates when a yield held back for a returning peer may go ahead. */
  yieldTimer: number | null;
  /** Peers this host and the peer were both seen holding the service at the last poll, since when. */
  bothHeld: Map<string, number>;
}

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
  #hosts = new Map<string, HostRuntime>();
  #services = new Map<string, ServiceRuntime>();
  #events: EventRecord[] = [];
  #listeners = new Set<() => void>();
  #startedAt: number;
  #running = false;
  #held = new Set<string>();
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
    this.#build(this.#decl);
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
      this.#event("info", svc.decl.name, null, `${svc.decl.name}: this host is ${svc.role}`);
      void this.#report(svc);
    }
    for (const host of this.#hosts.values()) this.#scheduleHost(host, 0);
    for (const svc of this.#services.values()) this.#scheduleService(svc);
  }

  /**
   * Stops polling and deciding, then waits for running handlers to end.
   *
   * @param options `release: true` runs the stop handler of every service that is UP (in
   * order, with its time limit) and reports it FAIL, so peers take over at once.
   */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    this.#running = false;
    for (const host of this.#hosts.values()) this.#clear(host);
    for (const svc of this.#services.values()) this.#clear(svc);
    await Promise.all([...this.#services.values()].map((s) => s.queue));
    if (options.release) {
      for (const svc of this.#services.values()) {
        if (svc.state === "FAIL") continue;
        const reason = "failsh is shutting down and the policy says release";
        if (svc.state === "UP") await this.#runHandler(svc, "stop", reason);
        this.#setState(svc, "FAIL", reason);
        await this.#report(svc);
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
    await Promise.all([...this.#services.values()].map((s) => s.queue));
    const old = new Map(this.#services);
    const wasRunning = this.#running;
    for (const host of this.#hosts.values()) this.#clear(host);
    for (const svc of this.#services.values()) this.#clear(svc);
    this.#sandbox = sandbox;
    this.#decl = sandbox.decl;
    this.#hosts.clear();
    this.#services.clear();
    this.#build(this.#decl);
    for (const svc of this.#services.values()) {
      const before = old.get(svc.decl.name);
      if (before) {
        svc.state = before.state;
        svc.lastChange = before.lastChange;
        svc.lastDecision = before.lastDecision;
        svc.lastHandler = before.lastHandler;
        svc.reported = before.reported;
        svc.reportedChanges = before.reportedChanges;
        svc.reportedDetail = before.reportedDetail;
        svc.veto = before.veto;
      }
    }
    for (const name of old.keys()) {
      if (!this.#services.has(name)) {
        this.#event("info", name, null, `${name} is no longer in the script; its addresses stay`);
      }
    }
    this.#event("info", null, null, "script and policy reloaded");
    if (wasRunning) {
      for (const svc of this.#services.values()) void this.#report(svc);
      for (const host of this.#hosts.values()) this.#scheduleHost(host, 0);
      for (const svc of this.#services.values()) this.#scheduleService(svc);
    }
    this.#changed();
  }

  /**
   * Registers a listener called (synchronously) after every change of the snapshot data.
   *
   * @returns A function that removes the listener.
   */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Adds a line to the recent-events ring (e.g. from the supervisor). */
  note(kind: EventRecord["kind"], message: string, service: string | null = null): void {
    this.#event(kind, service, null, message);
  }

  /** The data of the monitor's snapshot. */
  snapshot(): FailshSnapshot {
    const hosts: HostView[] = [...this.#hosts.values()].map((h) => ({
      name: h.decl.name,
      url: h.url,
      self: h.self,
      reachable: h.reachable === true,
      misses: h.misses,
      lastConnect: h.lastConnect,
      lastCall: h.lastCall,
      latencyMs: h.latencyMs,
      lastError: h.lastError,
      services: h.services,
    }));
    const services: ServiceView[] = [...this.#services.values()].map((s) => ({
      name: s.decl.name,
      state: s.state,
      role: s.role,
      masters: [...s.decl.masters],
      slaves: [...s.decl.slaves],
      intervalMs: s.decl.intervalMs,
      lastChange: s.lastChange,
      lastDecision: s.lastDecision,
      lastHandler: s.lastHandler,
    }));
    return {
      host: this.#opts.self,
      startedAt: this.#startedAt,
      now: this.#timers.now(),
      hosts,
      services,
      addresses: this.#addresses(),
      events: [...this.#events],
    };
  }

  /** Local state of a service, or `undefined` if this host takes no part in it. */
  state(service: string): ServiceState | undefined {
    return this.#services.get(service)?.state;
  }

  // -------------------------------------------------------------------------------------------

  #build(decl: ScriptDecl): void {
    const self = decl.hosts.find((h) => h.name === this.#opts.self);
    if (!self) {
      throw new TypeError(
        `Cannot schedule: this host "${this.#opts.self}" is not among the script's hosts (${
          decl.hosts.map((h) => h.name).join(", ") || "none"
        })`,
      );
    }
    const mine = decl.services.filter((s) => roleOf(s, this.#opts.self) !== null);
    const now = this.#timers.now();
    const urlOf = this.#opts.urlOf ??
      ((h: HostDecl) =>
        `${h.protocol}://${h.address.includes(":") ? `[${h.address}]` : h.address}:${h.port}`);
    for (const h of decl.hosts) {
      const services = mine.filter((s) =>
        h.name === this.#opts.self || s.masters.includes(h.name) || s.slaves.includes(h.name)
      );
      if (services.length === 0) continue;
      this.#hosts.set(h.name, {
        decl: h,
        url: urlOf(h),
        self: h.name === this.#opts.self,
        intervalMs: Math.min(...services.map((s) => s.intervalMs)),
        timer: null,
        dueAt: 0,
        inFlight: 0,
        tick: 0,
        pollSeq: 0,
        appliedSeq: 0,
        silentTicks: 0,
        comebackAnnounced: new Set(),
        backAt: null,
        misses: 0,
        goods: 0,
        lastConnect: null,
        lastCall: null,
        latencyMs: null,
        lastError: null,
        services: [],
        bootId: null,
        flapped: new Set(),
        restored: new Map(),
        staleUntil: 0,
        reachable: null,
      });
    }
    for (const s of mine) {
      const reach = new Map<string, boolean | null>();
      for (const h of [this.#opts.self, ...s.masters, ...s.slaves]) {
        if (this.#hosts.has(h)) reach.set(h, null);
      }
      this.#services.set(s.name, {
        decl: s,
        role: roleOf(s, this.#opts.self)!,
        state: "FAIL",
        lastChange: now,
        reported: null,
        reportedChanges: null,
        reportedDetail: null,
        veto: null,
        reportDetail: "registered by failsh",
        reporting: null,
        reach,
        lastDecision: null,
        lastRule: null,
        lastHandler: null,
        handlerRunning: false,
        queue: Promise.resolve(),
        deferStart: null,
        holdUntil: 0,
        yieldTimer: null,
        bothHeld: new Map(),
        timer: null,
      });
    }
  }

  #clear(x: { timer: number | null; yieldTimer?: number | null }): void {
    if (x.timer !== null) this.#timers.clearTimeout(x.timer);
    x.timer = null;
    if (x.yieldTimer != null) this.#timers.clearTimeout(x.yieldTimer);
    if (x.yieldTimer !== undefined) x.yieldTimer = null;
  }

  /**
   * Polls a host `delay` ms from now, then every interval after that tick. Ticks are due at
   * absolute times (a late timer does not push the later ticks back), so `fall` missed polls take
   * `fall` intervals, not `fall` intervals plus the timers' lateness. A tick more than an interval
   * late (a stalled event loop) starts a new schedule from now instead of firing a burst.
   */
  #scheduleHost(host: HostRuntime, delay: number): void {
    if (!this.#running) return;
    host.dueAt = this.#timers.now() + delay;
    this.#armHost(host);
  }

  #armHost(host: HostRuntime): void {
    const wait = Math.max(0, host.dueAt - this.#timers.now());
    host.timer = this.#timers.setTimeout(() => {
      host.timer = null;
      this.#pollHost(host);
      if (!this.#running) return;
      const now = this.#timers.now();
      host.dueAt += host.intervalMs;
      if (host.dueAt <= now) host.dueAt = now + host.intervalMs;
      this.#armHost(host);
    }, wait);
  }

  #scheduleService(svc: ServiceRuntime): void {
    if (!this.#running) return;
    svc.timer = this.#timers.setTimeout(() => {
      svc.timer = null;
      if (svc.reported !== svc.state) void this.#report(svc);
      this.#evaluate(svc);
      this.#trackAddresses();
      this.#scheduleService(svc);
    }, svc.decl.intervalMs);
  }

  /**
   * One poll tick. A poll still unanswered at the next tick counts as a miss (a late answer still
   * resets the count), and a new poll goes out anyway, on another connection: one stuck
   * connection (a lost TCP segment waits at least 200 ms for its retransmission, a peer that was
   * cut off even longer) then costs one miss instead of blinding this host until it times out,
   * and a healed peer is seen at the next tick. At most {@linkcode MAX_POLLS_IN_FLIGHT} polls of
   * one host are outstanding; an answer older than one already applied is ignored.
   */
  #pollHost(host: HostRuntime): void {
    const now = this.#timers.now();
    host.tick++;
    if (host.inFlight > 0 && host.lastConnect === null && host.misses === 0) {
      // Nothing heard from this host yet and its first poll is still out: a process that just
      // started (this failsh, busy starting its sandbox, or the peer's faild) answers its first
      // poll late on a busy machine, and counting ticks would call a live peer unreachable (and
      // take its service) before it could answer. That poll's own time limit decides.
      return;
    }
    if (host.inFlight > 0) {
      host.silentTicks++;
      this.#pollFailed(host, `no answer within ${host.intervalMs * host.silentTicks} ms`);
      if (host.inFlight >= MAX_POLLS_IN_FLIGHT || !this.#running) return;
    }
    const seq = ++host.pollSeq;
    const sentTick = host.tick;
    const first = host.lastConnect === null && host.misses === 0;
    host.inFlight++;
    host.lastCall = now;
    const fall = Math.max(...this.#servicesOf(host).map((s) => s.decl.fall), 1);
    const timeoutMs = Math.max(1000, host.intervalMs * (fall + 1));
    let result: Promise<PollResult>;
    try {
      result = this.#opts.poller(host.decl, { timeoutMs });
    } catch (error) {
      result = Promise.reject(error);
    }
    result.then(
      (r) => {
        host.inFlight--;
        if (!this.#running || this.#hosts.get(host.decl.name) !== host) return;
        if (seq < host.appliedSeq) return; // a newer answer is already in
        host.appliedSeq = seq;
        host.silentTicks = 0;
        this.#pollSucceeded(host, r, this.#timers.now() - now);
      },
      (error: unknown) => {
        host.inFlight--;
        if (!this.#running || this.#hosts.get(host.decl.name) !== host) return;
        // Already counted as missed at a tick (a first poll is not: see above).
        if (host.tick > sentTick && !first) return;
        this.#pollFailed(host, error instanceof Error ? error.message : String(error));
      },
    );
  }

  #servicesOf(host: HostRuntime): ServiceRuntime[] {
    return [...this.#services.values()].filter((s) => s.reach.has(host.decl.name));
  }

  #pollSucceeded(host: HostRuntime, r: PollResult, latencyMs: number): void {
    const now = this.#timers.now();
    const wasFailing = host.misses > 0 || host.lastConnect === null;
    host.misses = 0;
    host.goods++;
    host.lastConnect = now;
    host.latencyMs = latencyMs;
    host.lastError = null;
    observe(this.stats.pollLatency, latencyMs, { key: host.decl.name, bounds: POLL_BUCKETS });

    // Flap detection and trap events for visible changes of the host's services.
    const sameBoot = host.bootId === r.bootId;
    const differs = !sameBoot || wasFailing || r.services.length !== host.services.length ||
      r.services.some((x, i) => {
        const y = host.services[i];
        return !y || y.name !== x.name || y.state !== x.state || y.changes !== x.changes ||
          y.detail !== x.detail;
      });
    const before = new Map(host.services.map((s) => [s.name, s]));
    host.flapped.clear();
    for (const rec of r.services) {
      const prev = before.get(rec.name);
      if (sameBoot && prev) {
        const visible = prev.state === rec.state ? 0 : 1;
        if (rec.changes - prev.changes > visible) {
          host.flapped.add(rec.name);
          if (!host.self) {
            this.#event(
              "peer",
              rec.name,
              host.decl.name,
              `${host.decl.name}: ${rec.name} changed ${
                rec.changes - prev.changes
              } times between polls (now ${rec.state})`,
            );
          }
        }
      }
      if (!host.self && prev?.state !== rec.state) {
        if (prev) {
          this.#event(
            "peer",
            rec.name,
            host.decl.name,
            `${host.decl.name}: ${rec.name} is ${rec.state} (was ${prev.state})`,
          );
        }
        this.#sandbox.trap({
          type: "service",
          host: host.decl.name,
          service: rec.name,
          state: rec.state,
          previous: prev?.state ?? null,
          at: now,
        });
      }
    }
    if (host.self && !sameBoot && host.bootId !== null) {
      // The local faild restarted: our records may be gone or old; write them again.
      for (const svc of this.#services.values()) {
        svc.reported = null;
        svc.reportedChanges = null;
        svc.reportedDetail = null;
      }
      this.#event("info", null, host.decl.name, "the local faild restarted; states reported again");
    }
    if (!host.self && !sameBoot && host.bootId !== null) {
      // The peer's faild restarted: what it restored from its state file is not confirmed until
      // its owner sets it again (docs/protocol.md), or for a few intervals.
      const fall = Math.max(...this.#servicesOf(host).map((s) => s.decl.fall), 2);
      host.restored = new Map(r.services.map((x) => [x.name, x.changes]));
      host.staleUntil = now + host.intervalMs * (fall + 1);
      this.#event("peer", null, host.decl.name, `${host.decl.name}'s faild restarted`);
    }
    if (host.self) this.#externalChanges(r, sameBoot);
    host.bootId = r.bootId;
    host.services = r.services;

    // Services this peer was not yet counted as holding (unreachable, or another state).
    const heldBefore = new Set(
      this.#servicesOf(host).filter((svc) =>
        svc.reach.get(host.decl.name) === true &&
        before.get(svc.decl.name)?.state === "UP"
      ).map((svc) => svc.decl.name),
    );
    // Services for which this peer answers again after having been unreachable (first answer,
    // before `rise` counts it back), announced once per comeback when the peer does not hold
    // or claim the service (then the decision settles who keeps it, and the keeper announces).
    const cameBack = new Set<string>();
    for (const svc of this.#servicesOf(host)) {
      const k = svc.reach.get(host.decl.name);
      const rise = scaled(svc.decl.rise, svc.decl.intervalMs, host.intervalMs);
      if (k === false && !host.comebackAnnounced.has(svc.decl.name)) {
        cameBack.add(svc.decl.name);
      }
      if (k === false && host.goods === 1) host.backAt = now;
      if (k === null || (k === false && host.goods >= rise)) {
        svc.reach.set(host.decl.name, true);
      }
    }
    this.#updateHostReach(host);
    // Decide for every service this host takes part in, and hand over (or keep) without a gap.
    let pollIn: number | null = null;
    for (const svc of this.#servicesOf(host)) {
      const name = svc.decl.name;
      const ms = this.#evaluate(
        svc,
        host.self ? null : {
          peer: host.decl.name,
          pollIntervalMs: host.intervalMs,
          before: before.get(name)?.state ?? null,
          heldBefore: heldBefore.has(name),
          cameBack: cameBack.has(name),
          bothHeldSince: svc.bothHeld.get(host.decl.name) ?? null,
        },
      );
      if (ms !== null) pollIn = Math.max(pollIn ?? 0, ms);
      if (cameBack.has(name)) host.comebackAnnounced.add(name);
    }
    if (pollIn !== null && host.timer !== null) {
      this.#clear(host);
      this.#scheduleHost(host, pollIn);
    }
    // A poll that only refreshed timestamps is no change: idle monitor streams stay quiet.
    if (differs) this.#changed();
  }

  /**
   * Notices writes to this host's own records by someone else (hc, an operator with failc):
   * a FAIL vetoes the service here, a later non-FAIL write lifts the veto.
   */
  #externalChanges(r: PollResult, sameBoot: boolean): void {
    for (const svc of this.#services.values()) {
      const rec = r.services.find((x) => x.name === svc.decl.name);
      if (!rec || svc.reporting !== null || !sameBoot) continue;
      if (svc.reportedChanges === null) {
        // No counter from our own write (reloaded, or a reporter without records): take the
        // record as the baseline when it shows what we reported.
        if (rec.state === svc.reported) svc.reportedChanges = rec.changes;
        continue;
      }
      // faild counts state changes only, and hc may sign with failsh's own key: a FAIL written
      // over our FAIL shows only in its detail.
      const failOverFail = svc.veto === null && rec.state === "FAIL" && svc.reported === "FAIL" &&
        svc.reportedDetail !== null && rec.detail !== svc.reportedDetail;
      if (!failOverFail && (rec.changes <= svc.reportedChanges || rec.state === svc.reported)) {
        continue;
      }
      // faild's counter moved past our last write and shows another state, or another writer's
      // FAIL replaced ours: not ours.
      svc.reportedChanges = rec.changes;
      svc.reported = rec.state;
      const name = svc.decl.name;
      if (rec.state === "FAIL") {
        svc.veto = rec.setBy || "someone";
        this.#log.warn("state", `${name}: the local faild was set FAIL by ${svc.veto}`, {
          service: name,
          detail: rec.detail,
        });
        this.#event(
          "state",
          name,
          this.#opts.self,
          `${name}: the local faild was set FAIL by ${svc.veto}${
            rec.detail ? ` (${rec.detail})` : ""
          }`,
        );
      } else {
        const lifted = svc.veto !== null;
        svc.veto = null;
        this.#event(
          "state",
          name,
          this.#opts.self,
          `${name}: the local faild was set ${rec.state} by ${rec.setBy}${
            lifted ? "; the veto is lifted" : ""
          }; failsh reports its own state (${svc.state}) again`,
        );
      }
    }
  }

  #reannounce(service: string, why: string): void {
    if (!this.#opts.onReannounce) return;
    this.#event("address", service, this.#opts.self, `${service}: ${why}`);
    this.#opts.onReannounce(service).catch((e) =>
      this.#log.warn("net", `${service}: announcing again failed: ${(e as Error).message}`)
    );
  }

  #pollFailed(host: HostRuntime, message: string): void {
    host.goods = 0;
    host.misses++;
    host.lastError = message;
    increment(this.stats.pollFailures, host.decl.name);
    for (const svc of this.#servicesOf(host)) {
      const k = svc.reach.get(host.decl.name);
      const fall = scaled(svc.decl.fall, svc.decl.intervalMs, host.intervalMs);
      if (k !== false && host.misses >= fall) {
        svc.reach.set(host.decl.name, false);
        host.comebackAnnounced.delete(svc.decl.name);
      }
    }
    this.#updateHostReach(host);
    for (const svc of this.#servicesOf(host)) this.#evaluate(svc);
    // Misses matter to watchers until the host is counted unreachable; after that, silence.
    const maxFall = Math.max(
      ...this.#servicesOf(host).map((s) => scaled(s.decl.fall, s.decl.intervalMs, host.intervalMs)),
      1,
    );
    if (host.misses <= maxFall) this.#changed();
  }

  #updateHostReach(host: HostRuntime): void {
    const views = this.#servicesOf(host).map((s) => s.reach.get(host.decl.name));
    let next: boolean | null;
    if (views.some((v) => v === false)) next = false;
    else if (views.length > 0 && views.every((v) => v === true)) next = true;
    else next = host.reachable;
    if (next === host.reachable || next === null) return;
    const previous = host.reachable;
    host.reachable = next;
    const now = this.#timers.now();
    this.#event(
      "peer",
      null,
      host.decl.name,
      next
        ? `${host.decl.name} is reachable${previous === false ? " again" : ""}`
        : `${host.decl.name} is unreachable after ${host.misses} missed polls: ${
          host.lastError ?? "no answer"
        }`,
    );
    if (host.self || previous === null && next) return;
    this.#sandbox.trap({
      type: "host",
      host: host.decl.name,
      service: null,
      state: next ? "UP" : "FAIL",
      previous: previous === null ? null : previous ? "UP" : "FAIL",
      at: now,
    });
  }

  #input(svc: ServiceRuntime): DecisionInput {
    const now = this.#timers.now();
    const self = this.#opts.self;
    const peers: PeerInput[] = [];
    let known = true;
    for (const [name, reach] of svc.reach) {
      if (reach === null) known = false;
      if (name === self) continue;
      const host = this.#hosts.get(name)!;
      const rec = host.services.find((r) => r.name === svc.decl.name);
      const restored = host.restored.get(svc.decl.name);
      peers.push({
        name,
        reachable: reach === true,
        state: rec?.state ?? null,
        flapped: host.flapped.has(svc.decl.name),
        stale: rec !== undefined && restored === rec.changes && now < host.staleUntil,
        neverHeld: rec !== undefined && rec.changes === 0,
      });
    }
    const graceOver = known && now - this.#startedAt >= svc.decl.graceMs;
    // A higher-priority host that may be starting gets 3 intervals, and at least the retry
    // hold-off of a failed start (1 s) for its start handler plus one interval to see the
    // outcome: a start that takes longer than 3 short intervals on a loaded host must not make
    // a second host take the VIP and give it back.
    const maxDeferMs = Math.max(
      svc.decl.intervalMs * (this.#opts.deferIntervals ?? 3),
      RETRY_HOLDOFF_MS + svc.decl.intervalMs,
    );
    const verdict = this.#opts.arbiter?.(svc.decl.name);
    return {
      service: {
        name: svc.decl.name,
        masters: svc.decl.masters,
        slaves: svc.decl.slaves,
        preempt: svc.decl.preempt,
      },
      self,
      local: svc.state,
      peers,
      graceOver,
      handlerRunning: svc.handlerRunning,
      selfReachable: svc.reach.get(self) !== false,
      localVeto: svc.veto,
      ...(verdict !== undefined ? { arbiter: verdict } : {}),
      deferredMs: svc.deferStart === null ? 0 : now - svc.deferStart,
      maxDeferMs,
      // A master starting up also gets its grace (how far apart the hosts may start).
      maxStartupDeferMs: svc.decl.graceMs + maxDeferMs,
    };
  }

  /** When each peer of a service last answered again after being unreachable. */
  #backAt(svc: ServiceRuntime): Record<string, number> {
    const out: Record<string, number> = {};
    for (const name of svc.reach.keys()) {
      const host = this.#hosts.get(name);
      if (host && !host.self && host.backAt !== null) out[name] = host.backAt;
    }
    return out;
  }

  /**
   * Decides for a service and carries the decision out, as the hand-over policy says (held back,
   * or at once); with a peer's answer, also announces, quiets and tells how soon to poll it.
   *
   * @returns How soon to poll the answering peer again, or `null` (as scheduled).
   */
  #evaluate(svc: ServiceRuntime, answer: AnswerInput | null = null): number | null {
    if (!this.#running) return null;
    const now = this.#timers.now();
    const input = this.#input(svc);
    const decision = decide(input);
    const plan = handOver({
      input,
      decision,
      yieldHeld: svc.yieldTimer !== null,
      intervalMs: svc.decl.intervalMs,
      now,
      backAt: this.#backAt(svc),
      answer,
    });
    const name = svc.decl.name;
    if (plan.holdUntil !== null) {
      if (svc.yieldTimer === null) {
        this.#event(
          "decision",
          name,
          null,
          `${name}: stop held back ${plan.holdUntil - now} ms — ${plan.reason}`,
        );
        svc.yieldTimer = this.#timers.setTimeout(() => {
          svc.yieldTimer = null;
          this.#evaluate(svc);
        }, plan.holdUntil - now);
      }
    } else if (!svc.handlerRunning) {
      this.#act(svc, decision, input);
    }
    if (answer !== null) {
      if (plan.bothHeldSince === null) svc.bothHeld.delete(answer.peer);
      else svc.bothHeld.set(answer.peer, plan.bothHeldSince);
      if (plan.quiet) this.#opts.onQuiet?.(name);
      if (plan.announce) this.#reannounce(name, `${plan.reason} [${plan.rule}]`);
    }
    return plan.pollInMs;
  }

  /** Carries a decision out: a handler, a state change, or nothing. */
  #act(svc: ServiceRuntime, decision: Decision, input: DecisionInput): void {
    const now = this.#timers.now();
    if (decision.deferring) svc.deferStart ??= now;
    else svc.deferStart = null;
    increment(this.stats.decisions, decision.action);
    if (
      (decision.action === "start" || decision.action === "reclaim") && now < svc.holdUntil
    ) {
      // The last start or reclaim failed: retry no sooner than the hold-off (no tight loop).
      return;
    }
    const acts = decision.action !== "none" && decision.action !== "wait";
    const newRule = decision.rule !== svc.lastRule;
    const sameAsBefore = svc.lastDecision?.action === decision.action &&
      svc.lastDecision.reason === decision.reason;
    svc.lastDecision = { at: now, action: decision.action, reason: decision.reason };
    svc.lastRule = decision.rule;
    if (acts || newRule) {
      this.#opts.onDecision?.({ at: now, service: svc.decl.name, decision, input });
      const line = `${svc.decl.name}: ${decision.action} — ${decision.reason}`;
      if (acts) {
        this.#log.info("decision", line, { service: svc.decl.name, rule: decision.rule });
      } else {
        this.#log.debug("decision", line, { service: svc.decl.name, rule: decision.rule });
      }
      this.#event("decision", svc.decl.name, null, line);
    }
    switch (decision.action) {
      case "start":
        this.#enqueue(svc, "start", decision.reason);
        break;
      case "reclaim":
        this.#enqueue(svc, "reclaim", decision.reason);
        break;
      case "stop":
        if (svc.state === "UP") this.#enqueue(svc, "stop", decision.reason);
        else this.#setState(svc, "FAIL", decision.reason);
        break;
      case "recover":
        this.#setState(svc, "RECOVER", decision.reason);
        break;
      default:
        break;
    }
    if (!sameAsBefore) this.#changed();
  }

  #enqueue(svc: ServiceRuntime, kind: HandlerKind, reason: string): void {
    svc.handlerRunning = true;
    svc.queue = svc.queue.then(async () => {
      try {
        await this.#runHandler(svc, kind, reason);
      } finally {
        svc.handlerRunning = false;
      }
      if (this.#running) {
        this.#trackAddresses();
        this.#evaluate(svc);
      }
    });
  }

  async #runHandler(
    svc: ServiceRuntime,
    kind: HandlerKind,
    reason: string,
  ): Promise<void> {
    const name = svc.decl.name;
    const defined = svc.decl.handlers;
    const used: HandlerKind = kind === "reclaim" && !defined.includes("reclaim") ? "start" : kind;
    const expected: ServiceState = kind === "stop" ? "FAIL" : "UP";
    const startedAt = this.#timers.now();
    if (!defined.includes(used)) {
      this.#event("handler", name, null, `${name}: no ${kind} handler; assuming ${expected}`);
      this.#setState(svc, expected, reason);
      return;
    }
    const run: HandlerRunView = {
      kind,
      startedAt,
      durationMs: null,
      result: null,
      error: null,
    };
    svc.lastHandler = run;
    this.#event("handler", name, null, `${name}: ${kind} handler started`);
    this.#changed();
    const peers: Record<string, ServiceRecord[]> = {};
    for (const [host, reach] of svc.reach) {
      if (host !== this.#opts.self && reach === true) {
        peers[host] = this.#hosts.get(host)?.services ?? [];
      }
    }
    const timeoutMs = svc.decl.timeouts[kind];
    const key = `${name}/${kind}`;
    let result: ServiceState;
    try {
      result = await this.#sandbox.invoke(
        { service: name, kind: used, self: this.#opts.self, reason, peers },
        timeoutMs,
      );
      run.result = result;
    } catch (error) {
      const timedOut = (error as Error)?.name === "TimeoutError";
      const message = error instanceof Error ? error.message : String(error);
      run.error = timedOut ? `timed out after ${timeoutMs} ms` : message;
      const map = timedOut ? this.stats.handlerTimeouts : this.stats.handlerErrors;
      increment(map, key);
      this.#log.error("handler", `${name}: ${kind} handler failed: ${run.error}`, {
        service: name,
        kind,
      });
      result = "FAIL";
      if (this.#opts.onHandlerFailed) {
        try {
          await this.#opts.onHandlerFailed(name, kind);
        } catch (e) {
          this.#log.error(
            "handler",
            `${name}: cleanup after the failed ${kind} failed: ${(e as Error).message}`,
          );
        }
      }
    }
    run.durationMs = this.#timers.now() - startedAt;
    observe(this.stats.handlerDurations, run.durationMs, { key, bounds: HANDLER_BUCKETS });
    this.#event(
      "handler",
      name,
      null,
      run.error === null
        ? `${name}: ${kind} handler returned ${result} after ${run.durationMs} ms`
        : `${name}: ${kind} handler failed after ${run.durationMs} ms: ${run.error}; ${name} is FAIL`,
    );
    if (result !== expected && run.error === null) {
      this.#log.warn("handler", `${name}: ${kind} handler returned ${result}, not ${expected}`);
    }
    if (kind !== "stop" && result === "FAIL") {
      svc.holdUntil = this.#timers.now() + Math.max(svc.decl.intervalMs, RETRY_HOLDOFF_MS);
    }
    this.#setState(
      svc,
      result,
      run.error === null ? `${kind} handler returned ${result}` : `${kind} handler failed`,
    );
  }

  #setState(svc: ServiceRuntime, state: ServiceState, reason: string): void {
    if (svc.state === state) return;
    const previous = svc.state;
    const now = this.#timers.now();
    svc.state = state;
    svc.lastChange = now;
    svc.reportDetail = reason.slice(0, 500);
    increment(this.stats.transitions, `${svc.decl.name}/${state}`);
    this.#log.info("state", `${svc.decl.name}: ${previous} -> ${state}: ${reason}`, {
      service: svc.decl.name,
    });
    this.#event(
      "state",
      svc.decl.name,
      this.#opts.self,
      `${svc.decl.name}: ${previous} -> ${state}`,
    );
    const event: TrapEvent = {
      type: "service",
      host: this.#opts.self,
      service: svc.decl.name,
      state,
      previous,
      at: now,
    };
    this.#sandbox.trap(event);
    void this.#report(svc);
    this.#changed();
  }

  #report(svc: ServiceRuntime): Promise<void> {
    if (svc.reporting) return svc.reporting;
    // While vetoed, never write UP over the FAIL someone else set; the stop comes first.
    if (svc.veto !== null && svc.state !== "FAIL") return Promise.resolve();
    svc.reporting = this.#reportLoop(svc).finally(() => {
      svc.reporting = null;
    });
    return svc.reporting;
  }

  async #reportLoop(svc: ServiceRuntime): Promise<void> {
    try {
      while (svc.reported !== svc.state) {
        const state = svc.state;
        const detail = svc.reportDetail;
        const rec = await this.#opts.reporter(svc.decl.name, state, detail);
        svc.reported = state;
        // What faild stored (the reporter may decorate the detail).
        svc.reportedDetail = rec ? rec.detail : detail;
        if (rec) svc.reportedChanges = rec.changes;
      }
    } catch (error) {
      this.#log.warn(
        "faild",
        `Cannot report ${svc.decl.name} ${svc.state} to the local faild: ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    }
  }

  #addresses(): HeldAddress[] {
    try {
      return this.#opts.addresses?.() ?? [];
    } catch {
      return [];
    }
  }

  #trackAddresses(): void {
    const now = new Set(this.#addresses().map((a) => `${a.address}%${a.device}`));
    for (const a of now) {
      if (!this.#held.has(a)) {
        this.stats.takeovers++;
        this.#event("address", null, this.#opts.self, `took over ${a.replace("%", " on ")}`);
      }
    }
    for (const a of this.#held) {
      if (!now.has(a)) {
        this.stats.releases++;
        this.#event("address", null, this.#opts.self, `released ${a.replace("%", " on ")}`);
      }
    }
    this.#held = now;
  }

  #event(
    kind: EventRecord["kind"],
    service: string | null,
    host: string | null,
    message: string,
  ): void {
    this.#events.push({ at: this.#timers.now(), kind, service, host, message });
    if (this.#events.length > MAX_EVENTS) this.#events.splice(0, this.#events.length - MAX_EVENTS);
    this.#changed();
  }

  #changed(): void {
    for (const l of this.#listeners) {
      try {
        l();
      } catch {
        // A listener's failure must not stop the scheduler.
      }
    }
  }
}

/** A count of polls of a service's interval expressed in polls of a host's (faster) interval. */
function scaled(count: number, serviceInterval: number, hostInterval: number): number {
  return Math.max(1, Math.ceil(count * serviceInterval / hostInterval));
}
