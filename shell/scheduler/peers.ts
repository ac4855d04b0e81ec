/**
 * failsh's view of the hosts: polls every host of the script (this one's own faild too) on an
 * absolute schedule, applies rise/fall hysteresis per service, notices a faild that restarted and
 * a record that flapped between polls, and turns what it saw into the peers' inputs of
 * `decide()` ({@linkcode Peers.inputs}). It decides nothing: after each answer or miss it
 * tells the scheduler (`scheduler.ts`), which decides.
 *
 * Host liveness (`shell/liveness/`), beside the polls' hysteresis: a peer whose kernel answered
 * its liveness probe and then fell silent is unreachable at once, for every service
 * ({@linkcode Peers.inputs} names the silence); it counts reachable again after `rise` polls
 * sent after the silence, like any peer back from a cut. A stalled faild on a host whose kernel
 * answers is judged by the polls, and counts unreachable only once it has also been silent for
 * the liveness `stallGraceMs` (a stalled daemon on a live host is not a dead host).
 *
 * @module
 */
import type { HostDecl, ServiceDecl } from "../contract.ts";
import type { HostView, ServiceRecord } from "../../lib/types.ts";
import type { PeerInput } from "./decide.ts";
import type { EventSink } from "./events.ts";
import { increment, observe, POLL_BUCKETS } from "./stats.ts";
import type { PeerInputs, PeersHooks, PeersOptions } from "./peers_types.ts";

export type { Answer, PeerInputs, PeersHooks, PeersOptions } from "./peers_types.ts";

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

/** Most polls of one host outstanding at once (each on its own connection). */
export const MAX_POLLS_IN_FLIGHT = 3;

interface HostRuntime {
  decl: HostDecl;
  url: string;
  self: boolean;
  intervalMs: number;
  /** The local services this host takes part in. */
  services: string[];
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
  /** Services whose comeback (first answer after being unreachable) was reported. */
  comebackSeen: Set<string>;
  /** When this host first answered again after being unreachable, or `null`. */
  backAt: number | null;
  misses: number;
  goods: number;
  lastConnect: number | null;
  lastCall: number | null;
  latencyMs: number | null;
  lastError: string | null;
  records: ServiceRecord[];
  bootId: string | null;
  flapped: Set<string>;
  /** After a restart of the host's faild: restored records (name -> changes) not yet confirmed. */
  restored: Map<string, number>;
  /** Until when restored records count as stale (ms since epoch). */
  staleUntil: number;
  /** Reachable as the snapshot shows it (null until known). */
  reachable: boolean | null;
  /**
   * When the host's kernel was judged silent and the host made unreachable for it, or `null`.
   * Cleared when the kernel answers again, or when a poll sent after it is answered.
   */
  kernelSilentAt: number | null;
}

/** A count of polls of a service's interval expressed in polls of a host's (faster) interval. */
function scaled(count: number, serviceInterval: number, hostInterval: number): number {
  return Math.max(1, Math.ceil(count * serviceInterval / hostInterval));
}

/**
 * The hosts of a script as this host sees them: polls, hysteresis, restarts and flaps.
 *
 * @example Building one (the scheduler passes its poller, timers, counters and hooks)
 * ```ts ignore
 * import { Peers } from "./peers.ts";
 * const peers = new Peers({ self: "beta", hosts, services, poller, timers, stats, events, hooks });
 * peers.start();
 * const { peers: inputs, known } = peers.inputs("web");
 * ```
 */
export class Peers {
  #opts: PeersOptions;
  #timers: Timers;
  #hooks: PeersHooks;
  #events: EventSink;
  #hosts = new Map<string, HostRuntime>();
  #decls = new Map<string, ServiceDecl>();
  /** Per service, per host: reachable after that service's hysteresis (null until known). */
  #reach = new Map<string, Map<string, boolean | null>>();
  #running = false;
  #unsubscribe: (() => void) | null = null;

  /**
   * Creates the view of every host that takes part in one of the given services.
   *
   * @param options Self, hosts, services, poller, timers, counters, events and hooks.
   */
  constructor(options: PeersOptions) {
    this.#opts = options;
    this.#timers = options.timers;
    this.#hooks = options.hooks;
    this.#events = options.events;
    const { self } = options;
    const urlOf = options.urlOf ??
      ((h: HostDecl) =>
        `${h.protocol}://${h.address.includes(":") ? `[${h.address}]` : h.address}:${h.port}`);
    for (const h of options.hosts) {
      const services = options.services.filter((s) =>
        h.name === self || s.masters.includes(h.name) || s.slaves.includes(h.name)
      );
      if (services.length === 0) continue;
      this.#hosts.set(h.name, {
        decl: h,
        url: urlOf(h),
        self: h.name === self,
        intervalMs: Math.min(...services.map((s) => s.intervalMs)),
        services: services.map((s) => s.name),
        timer: null,
        dueAt: 0,
        inFlight: 0,
        tick: 0,
        pollSeq: 0,
        appliedSeq: 0,
        silentTicks: 0,
        comebackSeen: new Set(),
        backAt: null,
        misses: 0,
        goods: 0,
        lastConnect: null,
        lastCall: null,
        latencyMs: null,
        lastError: null,
        records: [],
        bootId: null,
        flapped: new Set(),
        restored: new Map(),
        staleUntil: 0,
        reachable: null,
        kernelSilentAt: null,
      });
    }
    for (const s of options.services) {
      this.#decls.set(s.name, s);
      const reach = new Map<string, boolean | null>();
      for (const h of [self, ...s.masters, ...s.slaves]) {
        if (this.#hosts.has(h)) reach.set(h, null);
      }
      this.#reach.set(s.name, reach);
    }
  }

  /** Starts polling every host (the first polls go out at once). */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#unsubscribe = this.#opts.liveness?.onChange((h) => this.#kernel(h)) ?? null;
    // A kernel already silent (a reload while a peer is down) counts from the start.
    for (const name of this.#hosts.keys()) {
      if (this.#opts.liveness?.status(name)?.state === "silent") this.#kernel(name);
    }
    for (const host of this.#hosts.values()) this.#schedule(host, 0);
  }

  /** Stops polling; answers still on their way are ignored. */
  stop(): void {
    this.#running = false;
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    for (const host of this.#hosts.values()) this.#clear(host);
  }

  /**
   * Polls a host `ms` from now instead of at its next tick, then every interval after that.
   *
   * @param host The host.
   * @param ms The delay.
   */
  pollSoon(host: string, ms: number): void {
    const h = this.#hosts.get(host);
    if (!h || h.timer === null) return;
    this.#clear(h);
    this.#schedule(h, ms);
  }

  /**
   * The peers' part of `decide()`'s input for a service, as seen now.
   *
   * @param service A local service.
   * @returns Every other host of the service, whether all reachabilities are known, and this
   * host's own.
   */
  inputs(service: string): PeerInputs {
    const now = this.#timers.now();
    const reach = this.#reach.get(service) ?? new Map<string, boolean | null>();
    const peers: PeerInput[] = [];
    let known = true;
    for (const [name, r] of reach) {
      if (r === null) known = false;
      if (name === this.#opts.self) continue;
      const host = this.#hosts.get(name)!;
      const rec = host.records.find((x) => x.name === service);
      const restored = host.restored.get(service);
      const input: PeerInput = {
        name,
        reachable: r === true,
        state: rec?.state ?? null,
        flapped: host.flapped.has(service),
        stale: rec !== undefined && restored === rec.changes && now < host.staleUntil,
        neverHeld: rec !== undefined && rec.changes === 0,
      };
      const kernel = r === false ? this.#kernelSilentMs(host) : null;
      if (kernel !== null) input.kernelSilentMs = kernel;
      peers.push(input);
    }
    return { peers, known, selfReachable: reach.get(this.#opts.self) !== false };
  }

  /**
   * When each peer of a service last answered again after being unreachable.
   *
   * @param service A local service.
   * @returns Times (ms since epoch) by host; a peer that never came back is absent.
   */
  backAt(service: string): Record<string, number> {
    const out: Record<string, number> = {};
    for (const name of this.#reach.get(service)?.keys() ?? []) {
      const host = this.#hosts.get(name);
      if (host && !host.self && host.backAt !== null) out[name] = host.backAt;
    }
    return out;
  }

  /**
   * The records of the reachable peers of a service (what a handler is told).
   *
   * @param service A local service.
   * @returns Every record each reachable peer reported at its last answer, by host.
   */
  records(service: string): Record<string, ServiceRecord[]> {
    const out: Record<string, ServiceRecord[]> = {};
    for (const [name, r] of this.#reach.get(service) ?? []) {
      if (name !== this.#opts.self && r === true) out[name] = this.#hosts.get(name)!.records;
    }
    return out;
  }

  /** The hosts as the monitor's snapshot shows them. */
  views(): HostView[] {
    return [...this.#hosts.values()].map((h) => {
      const view: HostView = {
        name: h.decl.name,
        url: h.url,
        self: h.self,
        reachable: h.reachable === true,
        misses: h.misses,
        lastConnect: h.lastConnect,
        lastCall: h.lastCall,
        latencyMs: h.latencyMs,
        lastError: h.lastError,
        services: h.records,
      };
      const status = h.self ? null : this.#opts.liveness?.status(h.decl.name) ?? null;
      if (status !== null && h.decl.liveness !== undefined) {
        view.liveness = {
          ...status,
          intervalMs: h.decl.liveness.intervalMs,
          fall: h.decl.liveness.fall,
          stallGraceMs: h.decl.liveness.stallGraceMs,
          decisive: h.kernelSilentAt !== null,
        };
      }
      return view;
    });
  }

  /** How long the host's kernel has been silent, when that is why it is unreachable. */
  #kernelSilentMs(host: HostRuntime): number | null {
    if (host.kernelSilentAt === null) return null;
    const status = this.#opts.liveness?.status(host.decl.name);
    return status?.state === "silent" ? status.silentMs : null;
  }

  /**
   * A peer's liveness changed. Silent (its kernel answered, then left `fall` echo requests
   * unanswered): unreachable at once for every service, whatever the polls' hysteresis says, and
   * it needs `rise` answers to polls sent from now on to count again. Answering again: nothing
   * changes at once (the polls bring it back). Unknown (the prober stopped): polls alone.
   */
  #kernel(name: string): void {
    const host = this.#hosts.get(name);
    if (!host || host.self || !this.#running) return;
    const status = this.#opts.liveness?.status(name);
    if (status?.state === "silent") {
      if (host.kernelSilentAt !== null) return;
      host.kernelSilentAt = this.#timers.now();
      host.goods = 0;
      host.lastError = `its kernel has not answered for ${status.silentMs} ms`;
      for (const svc of host.services) {
        const reach = this.#reach.get(svc)!;
        if (reach.get(name) !== false) {
          reach.set(name, false);
          host.comebackSeen.delete(svc);
        }
      }
      this.#updateReachable(host);
      this.#hooks.missed(name, host.services);
      this.#events.changed();
      return;
    }
    if (host.kernelSilentAt !== null && status?.state === "alive") {
      this.#events.add("peer", null, name, `${name}'s kernel answers again`);
    }
    host.kernelSilentAt = null;
    this.#events.changed();
  }

  // -------------------------------------------------------------------------------------------

  #clear(host: HostRuntime): void {
    if (host.timer !== null) this.#timers.clearTimeout(host.timer);
    host.timer = null;
  }

  /**
   * Polls a host `delay` ms from now, then every interval after that tick. Ticks are due at
   * absolute times (a late timer does not push the later ticks back), so `fall` missed polls take
   * `fall` intervals, not `fall` intervals plus the timers' lateness. A tick more than an interval
   * late (a stalled event loop) starts a new schedule from now instead of firing a burst.
   */
  #schedule(host: HostRuntime, delay: number): void {
    if (!this.#running) return;
    host.dueAt = this.#timers.now() + delay;
    this.#arm(host);
  }

  #arm(host: HostRuntime): void {
    const wait = Math.max(0, host.dueAt - this.#timers.now());
    host.timer = this.#timers.setTimeout(() => {
      host.timer = null;
      this.#poll(host);
      if (!this.#running) return;
      const now = this.#timers.now();
      host.dueAt += host.intervalMs;
      if (host.dueAt <= now) host.dueAt = now + host.intervalMs;
      this.#arm(host);
    }, wait);
  }

  #declsOf(host: HostRuntime): ServiceDecl[] {
    return host.services.map((s) => this.#decls.get(s)!);
  }

  /**
   * One poll tick. A poll still unanswered at the next tick counts as a miss (a late answer still
   * resets the count), and a new poll goes out anyway, on another connection: one stuck
   * connection (a lost TCP segment waits at least 200 ms for its retransmission, a peer that was
   * cut off even longer) then costs one miss instead of blinding this host until it times out,
   * and a healed peer is seen at the next tick. At most {@linkcode MAX_POLLS_IN_FLIGHT} polls of
   * one host are outstanding; an answer older than one already applied is ignored.
   */
  #poll(host: HostRuntime): void {
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
      this.#failed(host, `no answer within ${host.intervalMs * host.silentTicks} ms`);
      if (host.inFlight >= MAX_POLLS_IN_FLIGHT || !this.#running) return;
    }
    const seq = ++host.pollSeq;
    const sentTick = host.tick;
    const first = host.lastConnect === null && host.misses === 0;
    host.inFlight++;
    host.lastCall = now;
    const fall = Math.max(...this.#declsOf(host).map((s) => s.fall), 1);
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
        if (!this.#running) return;
        if (seq < host.appliedSeq) return; // a newer answer is already in
        host.appliedSeq = seq;
        host.silentTicks = 0;
        this.#answered(host, r, this.#timers.now() - now);
      },
      (error: unknown) => {
        host.inFlight--;
        if (!this.#running) return;
        // Already counted as missed at a tick (a first poll is not: see above).
        if (host.tick > sentTick && !first) return;
        this.#failed(host, error instanceof Error ? error.message : String(error));
      },
    );
  }

  #answered(host: HostRuntime, r: PollResult, latencyMs: number): void {
    const now = this.#timers.now();
    const name = host.decl.name;
    const wasFailing = host.misses > 0 || host.lastConnect === null;
    // A poll sent before the host's kernel fell silent says nothing about it since: it does not
    // count towards `rise`. One sent after it does, and outweighs the silence (its faild
    // answers, so ICMP was filtered or rate-limited on the way): polls alone judge it again.
    const beforeSilence = host.kernelSilentAt !== null && now - latencyMs <= host.kernelSilentAt;
    if (host.kernelSilentAt !== null && !beforeSilence) {
      host.kernelSilentAt = null;
      this.#events.add(
        "peer",
        null,
        name,
        `${name}'s faild answers though its kernel does not answer ping (ICMP filtered?): polls alone judge it`,
      );
    }
    host.misses = 0;
    if (!beforeSilence) host.goods++;
    host.lastConnect = now;
    host.latencyMs = latencyMs;
    host.lastError = null;
    observe(this.#opts.stats.pollLatency, latencyMs, { key: name, bounds: POLL_BUCKETS });

    // Flap detection and trap events for visible changes of the host's services.
    const sameBoot = host.bootId === r.bootId;
    const differs = !sameBoot || wasFailing || r.services.length !== host.records.length ||
      r.services.some((x, i) => {
        const y = host.records[i];
        return !y || y.name !== x.name || y.state !== x.state || y.changes !== x.changes ||
          y.detail !== x.detail;
      });
    const before = new Map(host.records.map((s) => [s.name, s]));
    host.flapped.clear();
    for (const rec of r.services) {
      const prev = before.get(rec.name);
      if (sameBoot && prev) {
        const visible = prev.state === rec.state ? 0 : 1;
        if (rec.changes - prev.changes > visible) {
          host.flapped.add(rec.name);
          if (!host.self) {
            this.#events.add(
              "peer",
              rec.name,
              name,
              `${name}: ${rec.name} changed ${
                rec.changes - prev.changes
              } times between polls (now ${rec.state})`,
            );
          }
        }
      }
      if (!host.self && prev?.state !== rec.state) {
        if (prev) {
          this.#events.add(
            "peer",
            rec.name,
            name,
            `${name}: ${rec.name} is ${rec.state} (was ${prev.state})`,
          );
        }
        this.#hooks.trap({
          type: "service",
          host: name,
          service: rec.name,
          state: rec.state,
          previous: prev?.state ?? null,
          at: now,
        });
      }
    }
    const restarted = !sameBoot && host.bootId !== null;
    if (!host.self && restarted) {
      // The peer's faild restarted: what it restored from its state file is not confirmed until
      // its owner sets it again (docs/protocol.md), or for a few intervals.
      const fall = Math.max(...this.#declsOf(host).map((s) => s.fall), 2);
      host.restored = new Map(r.services.map((x) => [x.name, x.changes]));
      host.staleUntil = now + host.intervalMs * (fall + 1);
      this.#events.add("peer", null, name, `${name}'s faild restarted`);
    }
    host.bootId = r.bootId;
    host.records = r.services;

    // Services this peer was not yet counted as holding (unreachable, or another state).
    const heldBefore = new Set(
      host.services.filter((s) =>
        this.#reach.get(s)!.get(name) === true && before.get(s)?.state === "UP"
      ),
    );
    // Services for which this peer answers again after having been unreachable (first answer,
    // before `rise` counts it back), once per comeback.
    const cameBack = new Set<string>();
    for (const svc of this.#declsOf(host)) {
      const reach = this.#reach.get(svc.name)!;
      const k = reach.get(name);
      const rise = scaled(svc.rise, svc.intervalMs, host.intervalMs);
      if (k === false && !host.comebackSeen.has(svc.name)) {
        cameBack.add(svc.name);
        host.comebackSeen.add(svc.name);
      }
      if (k === false && host.goods === 1) host.backAt = now;
      if ((k === null && !beforeSilence) || (k === false && host.goods >= rise)) {
        reach.set(name, true);
      }
    }
    this.#updateReachable(host);
    this.#hooks.answered({
      host: name,
      self: host.self,
      result: r,
      restarted,
      sameBoot,
      pollIntervalMs: host.intervalMs,
      services: host.services,
      before,
      heldBefore,
      cameBack,
    });
    // A poll that only refreshed timestamps is no change: idle monitor streams stay quiet.
    if (differs) this.#events.changed();
  }

  #failed(host: HostRuntime, message: string): void {
    const name = host.decl.name;
    host.goods = 0;
    host.misses++;
    const graceLeft = this.#stallGraceLeft(host);
    host.lastError = graceLeft > 0
      ? `${message} (its kernel answers: unreachable only after ${
        host.decl.liveness!.stallGraceMs
      } ms without an answer, ${graceLeft} ms from now)`
      : message;
    increment(this.#opts.stats.pollFailures, name);
    for (const svc of this.#declsOf(host)) {
      const reach = this.#reach.get(svc.name)!;
      const fall = scaled(svc.fall, svc.intervalMs, host.intervalMs);
      if (reach.get(name) !== false && host.misses >= fall && graceLeft <= 0) {
        reach.set(name, false);
        host.comebackSeen.delete(svc.name);
      }
    }
    this.#updateReachable(host);
    this.#hooks.missed(name, host.services);
    // Misses matter to watchers until the host is counted unreachable; after that, silence.
    const maxFall = Math.max(
      ...this.#declsOf(host).map((s) => scaled(s.fall, s.intervalMs, host.intervalMs)),
      1,
    );
    if (host.misses <= maxFall) this.#events.changed();
  }

  /**
   * How much longer a silent faild is tolerated because its host's kernel answers (the
   * liveness `stallGraceMs` after its last answer), ms; 0 when the polls' `fall` alone decides:
   * no liveness or no grace declared, a kernel that is not answering now (never answered,
   * silent, or its prober stopped), or a host that never answered a poll. This host's own faild
   * gets the grace its peers give it (the script declares the same for it on every host; its
   * kernel answers them as long as this process runs): without it, a stalled local faild would
   * make this host stop a service its peers do not take yet.
   */
  #stallGraceLeft(host: HostRuntime): number {
    const grace = host.decl.liveness?.stallGraceMs ?? 0;
    if (grace <= 0 || host.lastConnect === null) return 0;
    if (!host.self && this.#opts.liveness?.status(host.decl.name)?.state !== "alive") return 0;
    return Math.max(0, host.lastConnect + grace - this.#timers.now());
  }

  /** The host's reachability as the snapshot shows it: events and host traps on a change. */
  #updateReachable(host: HostRuntime): void {
    const name = host.decl.name;
    const views = host.services.map((s) => this.#reach.get(s)!.get(name));
    let next: boolean | null;
    if (views.some((v) => v === false)) next = false;
    else if (views.length > 0 && views.every((v) => v === true)) next = true;
    else next = host.reachable;
    if (next === host.reachable || next === null) return;
    const previous = host.reachable;
    host.reachable = next;
    this.#events.add(
      "peer",
      null,
      name,
      next
        ? `${name} is reachable${previous === false ? " again" : ""}`
        : host.kernelSilentAt !== null
        ? `${name} is unreachable: ${host.lastError}`
        : `${name} is unreachable after ${host.misses} missed polls: ${
          host.lastError ?? "no answer"
        }`,
    );
    if (host.self || previous === null && next) return;
    this.#hooks.trap({
      type: "host",
      host: name,
      service: null,
      state: next ? "UP" : "FAIL",
      previous: previous === null ? null : previous ? "UP" : "FAIL",
      at: this.#timers.now(),
    });
  }
}
