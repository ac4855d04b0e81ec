/**
 * The hc engine: runs each check at its interval (dependencies first), applies rise/fall
 * thresholds, derives the reported state (a failing dependency makes its dependents `BLOCKED`,
 * naming it as root cause), and runs the actions bound to each change, in order.
 *
 * Data flows one way: probe result -> own state -> reported state -> actions and listeners.
 *
 * @module
 */
import { type Logger, logger as defaultLogger } from "../../lib/log.ts";
import { type ActionEvent, type ActionOutcome, ActionRunner, type ChangeInfo } from "./actions.ts";
import { type CheckInstance, type CheckResult, type CheckRunner, CHECKS } from "./checks/mod.ts";
import { errorText } from "./checks/_util.ts";
import { type CheckState, dependentsOf, effectiveState } from "./graph.ts";
import type { CheckSpec, HcConfig } from "./hcfile.ts";
import { RunQueue } from "./_run_queue.ts";

/** Software version reported by the status API. */
export const HC_VERSION = "0.6.0";

/** The most time between the first runs of two checks at start, in ms (see `start()`). */
export const START_STAGGER_MS = 1;

/** Most changes waiting for their actions, per check; older ones are dropped with a warning. */
export const MAX_QUEUED_CHANGES = 32;

/** The last probe of a check. */
export interface LastResult {
  /** Whether it passed. */
  ok: boolean;
  /** What it saw. */
  detail: string;
  /** When it finished, ms since the epoch. */
  at: number;
  /** Probe time in ms, or `null`. */
  latencyMs: number | null;
}

/** The last action run of a check. */
export interface LastAction {
  /** When it finished, ms since the epoch. */
  at: number;
  /** Its kind. */
  kind: string;
  /** Its Hcfile line. */
  line: number;
  /** Whether it did its job. */
  ok: boolean;
  /** What happened. */
  detail: string;
}

/** A check as `GET /v1/checks` shows it. */
export interface CheckStatus {
  /** Name. */
  name: string;
  /** Kind. */
  kind: string;
  /** What it probes. */
  target: string;
  /** The checks it depends on. */
  deps: string[];
  /** Reported state. */
  state: CheckState;
  /** Its own state from its probes, regardless of dependencies. */
  ownState: "PENDING" | "UP" | "FAIL";
  /** For `BLOCKED`: the failing check at the root; else `null`. */
  rootCause: string | null;
  /** The last probe, or `null` before the first. */
  lastResult: LastResult | null;
  /** Latency of the last probe in ms, or `null`. */
  latencyMs: number | null;
  /** Consecutive passes. */
  successes: number;
  /** Consecutive failures. */
  failures: number;
  /** When the reported state last changed (ms since the epoch), or `null`. */
  lastChange: number | null;
  /** Number of reported-state changes. */
  changes: number;
  /** Probes run. */
  runs: number;
  /** Probes that failed. */
  failedRuns: number;
  /** Runs skipped because the check was blocked. */
  skippedRuns: number;
  /** Interval, timeout in ms; rise and fall thresholds. */
  intervalMs: number;
  /** Time limit of a probe in ms. */
  timeoutMs: number;
  /** Passes in a row before UP. */
  rise: number;
  /** Failures in a row before FAIL. */
  fall: number;
  /** Actions run and failed so far. */
  actionsRun: number;
  /** Actions that failed. */
  actionsFailed: number;
  /** The last action, or `null`. */
  lastAction: LastAction | null;
}

/** The answer of `GET /v1/checks`. */
export interface HcSnapshot {
  /** The hc instance's name. */
  name: string;
  /** Software version. */
  version: string;
  /** When it started, ms since the epoch. */
  startedAt: number;
  /** Its clock when answering. */
  now: number;
  /** Count of checks by reported state. */
  summary: Record<CheckState, number>;
  /** Every check, in dependency order. */
  checks: CheckStatus[];
}

/** A reported-state change, as listeners and `GET /v1/events` get it. */
export interface HcChangeEvent {
  /** The check after the change. */
  check: CheckStatus;
  /** Its previous reported state. */
  previous: CheckState;
}

/**
 * Runs a probe with a time limit. The probe's signal aborts at the limit; if the probe still has
 * not returned 250 ms later, hc stops waiting for it, so a hanging check cannot stall anything.
 *
 * @param run The probe.
 * @param options The limit in ms, and a signal that aborts early (shutdown).
 * @returns The probe's result, or a failure saying it timed out.
 *
 * @example
 * ```ts
 * import { runWithTimeout } from "./checker.ts";
 * import { deepEqual } from "node:assert/strict";
 * const r = await runWithTimeout(() => new Promise(() => {}), { timeoutMs: 10 });
 * deepEqual([r.ok, r.detail], [false, "timed out after 10 ms"]);
 * ```
 */
export async function runWithTimeout(
  run: CheckRunner,
  options: { timeoutMs: number; signal?: AbortSignal },
): Promise<CheckResult> {
  const { timeoutMs } = options;
  const stop = options.signal ?? new AbortController().signal;
  const controller = new AbortController();
  let timedOut = false;
  // One timer per probe (hundreds a second): the guard's is armed only once the limit is hit.
  let guardTimer: ReturnType<typeof setTimeout> | undefined;
  const guard = Promise.withResolvers<null>();
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort(new DOMException("timed out", "TimeoutError"));
    guardTimer = setTimeout(() => guard.resolve(null), 250);
  }, timeoutMs);
  const onStop = (): void => controller.abort(new DOMException("hc is stopping", "AbortError"));
  stop.addEventListener("abort", onStop, { once: true });
  try {
    const result = await Promise.race([
      run(controller.signal).catch((e): CheckResult => ({
        ok: false,
        detail: errorText(e),
        latencyMs: null,
      })),
      guard.promise,
    ]);
    if (timedOut || result === null) {
      return { ok: false, detail: `timed out after ${timeoutMs} ms`, latencyMs: null };
    }
    return result;
  } finally {
    clearTimeout(timer);
    clearTimeout(guardTimer);
    stop.removeEventListener("abort", onStop);
  }
}

const NO_DEPS: readonly { name: string; state: CheckState; rootCause: string | null }[] = [];

class Entry {
  spec: CheckSpec;
  instance: CheckInstance | null = null;
  ownState: "PENDING" | "UP" | "FAIL" = "PENDING";
  state: CheckState = "PENDING";
  rootCause: string | null = null;
  lastResult: LastResult | null = null;
  successes = 0;
  failures = 0;
  lastChange: number | null = null;
  changes = 0;
  runs = 0;
  failedRuns = 0;
  skippedRuns = 0;
  actionsRun = 0;
  actionsFailed = 0;
  lastAction: LastAction | null = null;
  /** When the next run is due (owned by the checker's RunQueue), or `null`. */
  dueAt: number | null = null;
  inflight: Promise<void> | null = null;
  actionChain: Promise<void> = Promise.resolve();
  queued = 0;
  constructor(spec: CheckSpec) {
    this.spec = spec;
  }
  status(): CheckStatus {
    const s = this.spec;
    return {
      name: s.name,
      kind: s.kind,
      target: s.target,
      deps: [...s.deps],
      state: this.state,
      ownState: this.ownState,
      rootCause: this.rootCause,
      lastResult: this.lastResult ? { ...this.lastResult } : null,
      latencyMs: this.lastResult?.latencyMs ?? null,
      successes: this.successes,
      failures: this.failures,
      lastChange: this.lastChange,
      changes: this.changes,
      runs: this.runs,
      failedRuns: this.failedRuns,
      skippedRuns: this.skippedRuns,
      intervalMs: s.intervalMs,
      timeoutMs: s.timeoutMs,
      rise: s.rise,
      fall: s.fall,
      actionsRun: this.actionsRun,
      actionsFailed: this.actionsFailed,
      lastAction: this.lastAction ? { ...this.lastAction } : null,
    };
  }
}

/** Options of {@linkcode HealthChecker}. */
export interface HealthCheckerOptions {
  /** This instance's name (default: the Hcfile's `name`, else the host name). */
  name?: string;
  /** Logger (default: the process logger). */
  logger?: Logger;
  /**
   * A stopped engine being replaced (reload): each check whose name and signature are unchanged
   * takes over its state, counters and last results, so a reload fires no actions for it.
   */
  previous?: HealthChecker;
}

/**
 * The hc engine for one parsed Hcfile.
 *
 * @example
 * ```ts
 * import { parseHcfile } from "./hcfile.ts";
 * import { HealthChecker } from "./checker.ts";
 * import { deepEqual } from "node:assert/strict";
 * const { config } = parseHcfile("self:\n\ttcp host=127.0.0.1 port=9 timeout=100ms\n");
 * const hc = new HealthChecker(config, { name: "example" });
 * deepEqual(hc.snapshot().checks[0]?.state, "PENDING");
 * ```
 */
export class HealthChecker {
  #config: HcConfig;
  #name: string;
  #log: Logger;
  #entries = new Map<string, Entry>();
  #dependents: Map<string, string[]>;
  #actions: ActionRunner;
  #stop = new AbortController();
  #queue = new RunQueue<Entry>((e) => this.#launch(e));
  #started = false;
  #startedAt = Date.now();
  #listeners = new Set<(event: HcChangeEvent) => void>();
  /** `hc --once`: one probe decides, whatever rise and fall say. */
  #once = false;

  /**
   * Prepares the engine; nothing runs before {@linkcode HealthChecker.start}.
   *
   * @param config A parsed Hcfile without errors.
   * @param options Name and logger.
   */
  constructor(config: HcConfig, options: HealthCheckerOptions = {}) {
    this.#config = config;
    this.#name = options.name ?? config.name ?? safeHostname();
    this.#log = options.logger ?? defaultLogger;
    for (const spec of config.checks) this.#entries.set(spec.name, new Entry(spec));
    if (options.previous) this.#carryOver(options.previous);
    this.#dependents = dependentsOf(config.checks);
    this.#actions = new ActionRunner({
      baseDir: config.baseDir,
      allowPrograms: config.allowPrograms,
      logger: this.#log,
    });
  }

  #carryOver(previous: HealthChecker): void {
    const keys = [
      "ownState",
      "state",
      "rootCause",
      "lastResult",
      "successes",
      "failures",
      "lastChange",
      "changes",
      "runs",
      "failedRuns",
      "skippedRuns",
      "actionsRun",
      "actionsFailed",
      "lastAction",
    ] as const;
    for (const [name, e] of this.#entries) {
      const old = previous.#entries.get(name);
      if (!old || old.spec.signature !== e.spec.signature) continue;
      for (const k of keys) (e as unknown as Record<string, unknown>)[k] = old[k];
    }
    // A kept check whose dependency is new or changed (PENDING) must not keep a stale verdict.
    for (const e of this.#entries.values()) {
      const next = effectiveState(e.ownState, this.#depViews(e));
      if (e.state !== next.state && next.state === "PENDING") {
        e.state = "PENDING";
        e.rootCause = null;
      }
    }
    this.#startedAt = previous.#startedAt;
  }

  /**
   * Reads every key file of the faild actions (also done by {@linkcode HealthChecker.start}).
   *
   * @throws {TypeError} When a key file cannot be read.
   */
  prepare(): void {
    this.#actions.prepare(this.#config.checks.flatMap((c) => c.actions));
  }

  /** This instance's name. */
  get name(): string {
    return this.#name;
  }

  /**
   * Reads key files and starts every check, dependencies first.
   *
   * @throws {TypeError} When a faild action's key file cannot be read.
   */
  start(): void {
    if (this.#started) return;
    this.prepare();
    this.#started = true;
    for (const e of this.#entries.values()) {
      const def = CHECKS[e.spec.kind];
      e.instance = def.create(e.spec.values, e.spec.argv, {
        allowPrograms: this.#config.allowPrograms,
        baseDir: this.#config.baseDir,
        timeoutMs: e.spec.timeoutMs,
      });
    }
    this.#log.info("hc", "started", { name: this.#name, checks: this.#entries.size });
    // Entries are in dependency order and start in that order, so each dependency's first run
    // is in flight before its dependents start theirs (which wait for it). Check i starts
    // i × min(1 ms, interval / checks) after the first: many checks of one interval would
    // otherwise probe in one burst every interval for ever, holding every probe's objects at
    // once (V8 then promotes them to its old generation: with 500 checks, about 20 MiB of RSS).
    const n = this.#entries.size;
    const now = Date.now();
    let i = 0;
    for (const e of this.#entries.values()) {
      const delay = Math.floor(i++ * Math.min(START_STAGGER_MS, e.spec.intervalMs / n));
      if (delay < 1) this.#launch(e);
      else this.#queue.schedule(e, now + delay);
    }
  }

  /**
   * Runs every check once, dependencies first, without timers; one probe decides each state
   * (rise and fall are not applied). Used by `hc --once`. Actions still run for changes.
   *
   * @returns The snapshot after the runs.
   */
  async runOnce(): Promise<HcSnapshot> {
    this.#once = true;
    this.#actions.prepare(this.#config.checks.flatMap((c) => c.actions));
    for (const e of this.#entries.values()) {
      e.instance ??= CHECKS[e.spec.kind].create(e.spec.values, e.spec.argv, {
        allowPrograms: this.#config.allowPrograms,
        baseDir: this.#config.baseDir,
        timeoutMs: e.spec.timeoutMs,
      });
    }
    const all: Promise<void>[] = [];
    for (const e of this.#entries.values()) {
      e.inflight = this.#runOne(e);
      all.push(e.inflight);
    }
    await Promise.all(all);
    await Promise.all([...this.#entries.values()].map((e) => e.actionChain));
    return this.snapshot();
  }

  /** Stops timers, aborts probes in flight, waits for running actions, releases resources. */
  async stop(): Promise<void> {
    this.#stop.abort();
    this.#queue.close();
    await Promise.all([...this.#entries.values()].map((e) => e.inflight));
    await Promise.all([...this.#entries.values()].map((e) => e.actionChain));
    for (const e of this.#entries.values()) {
      e.instance?.close?.();
      e.instance = null;
    }
    this.#actions.close();
    this.#listeners.clear();
    if (this.#started) this.#log.info("hc", "stopped", { name: this.#name });
  }

  /**
   * The state of every check.
   *
   * @returns A snapshot, checks in dependency order.
   */
  snapshot(): HcSnapshot {
    const checks = [...this.#entries.values()].map((e) => e.status());
    const summary: Record<CheckState, number> = { UP: 0, FAIL: 0, BLOCKED: 0, PENDING: 0 };
    for (const c of checks) summary[c.state]++;
    return {
      name: this.#name,
      version: HC_VERSION,
      startedAt: this.#startedAt,
      now: Date.now(),
      summary,
      checks,
    };
  }

  /**
   * One check's status.
   *
   * @param name The check.
   * @returns Its status, or `undefined`.
   */
  check(name: string): CheckStatus | undefined {
    return this.#entries.get(name)?.status();
  }

  /**
   * Calls a function on every reported-state change.
   *
   * @param listener The function (exceptions are logged and ignored).
   * @returns A function that unsubscribes.
   */
  subscribe(listener: (event: HcChangeEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #launch(e: Entry): void {
    if (this.#stop.signal.aborted) return;
    const started = Date.now();
    const run = this.#runOne(e).catch((err) => {
      this.#log.error("hc", "check run crashed", { check: e.spec.name, error: errorText(err) });
    });
    e.inflight = run.finally(() => {
      e.inflight = null;
      if (this.#stop.signal.aborted) return;
      this.#queue.schedule(e, started + e.spec.intervalMs);
    });
  }

  /** Runs a blocked check's probe now instead of at its next interval. */
  #kick(e: Entry): void {
    if (!this.#started || e.inflight || this.#stop.signal.aborted) return;
    this.#queue.cancel(e);
    this.#launch(e);
  }

  #depViews(e: Entry): readonly { name: string; state: CheckState; rootCause: string | null }[] {
    if (e.spec.deps.length === 0) return NO_DEPS;
    return e.spec.deps.map((d) => {
      const x = this.#entries.get(d)!;
      return { name: d, state: x.state, rootCause: x.rootCause };
    });
  }

  async #runOne(e: Entry): Promise<void> {
    // Dependencies first: wait for any run of theirs in flight (each is time-bounded).
    if (e.spec.deps.length > 0) {
      await Promise.all(e.spec.deps.map((d) => this.#entries.get(d)!.inflight));
    }
    if (this.#stop.signal.aborted || !e.instance) return;
    const before = effectiveState(e.ownState, this.#depViews(e));
    if (before.state === "BLOCKED") {
      // The root cause is known: do not probe (nor blame) this check while it is blocked.
      e.skippedRuns++;
      this.#setReported(e, before.state, before.rootCause);
      return;
    }
    const result = await runWithTimeout(e.instance.run, {
      timeoutMs: e.spec.timeoutMs,
      signal: this.#stop.signal,
    });
    if (this.#stop.signal.aborted) return;
    e.runs++;
    e.lastResult = { ...result, at: Date.now() };
    if (result.ok) {
      e.successes++;
      e.failures = 0;
      if (e.ownState !== "UP" && e.successes >= (this.#once ? 1 : e.spec.rise)) {
        e.ownState = "UP";
      }
    } else {
      e.failedRuns++;
      e.failures++;
      e.successes = 0;
      if (e.ownState !== "FAIL" && e.failures >= (this.#once ? 1 : e.spec.fall)) {
        // Before blaming this check, let any dependency run in flight finish: when a dependency
        // is failing too (even below its own fall threshold), the verdict waits for it, so the
        // dependency ends up as the root cause instead of this check being FAIL first.
        await Promise.all(e.spec.deps.map((d) => this.#entries.get(d)!.inflight));
        if (this.#stop.signal.aborted) return;
        const suspect = this.#failingDependency(e, new Set());
        if (suspect === null) e.ownState = "FAIL";
        else {
          this.#log.debug("hc", "FAIL deferred: a dependency is failing", {
            check: e.spec.name,
            dependency: suspect,
          });
        }
      }
    }
    if (this.#log.enabled("hc", "debug")) {
      this.#log.debug("hc", "probe", {
        check: e.spec.name,
        ok: result.ok,
        detail: result.detail,
        own: e.ownState,
      });
    }
    const after = effectiveState(e.ownState, this.#depViews(e));
    this.#setReported(e, after.state, after.rootCause);
  }

  /** The first dependency (transitively) with failures in a row, or `null`. */
  #failingDependency(e: Entry, seen: Set<string>): string | null {
    for (const name of e.spec.deps) {
      if (seen.has(name)) continue;
      seen.add(name);
      const d = this.#entries.get(name)!;
      if (d.failures > 0 || d.state === "FAIL" || d.state === "BLOCKED") return name;
      const deeper = this.#failingDependency(d, seen);
      if (deeper !== null) return deeper;
    }
    return null;
  }

  #setReported(e: Entry, state: CheckState, rootCause: string | null): void {
    const previous = e.state;
    const causeChanged = e.rootCause !== rootCause;
    if (previous === state && !causeChanged) return;
    e.state = state;
    e.rootCause = rootCause;
    if (previous !== state) {
      e.lastChange = Date.now();
      e.changes++;
      const level = state === "FAIL" ? "warn" : "info";
      this.#log.log(level, "hc", `check ${e.spec.name} is ${state}`, {
        check: e.spec.name,
        previous,
        state,
        rootCause,
        detail: e.lastResult?.detail ?? "",
      });
      const event: HcChangeEvent = { check: e.status(), previous };
      for (const l of this.#listeners) {
        try {
          l(event);
        } catch (err) {
          this.#log.warn("hc", "listener failed", { error: errorText(err) });
        }
      }
      this.#queueActions(e, previous, state);
    }
    for (const name of this.#dependents.get(e.spec.name) ?? []) {
      const d = this.#entries.get(name)!;
      const next = effectiveState(d.ownState, this.#depViews(d));
      if (d.state === "BLOCKED" && next.state !== "BLOCKED" && this.#started) {
        // Unblocked: its own verdict is stale, so it stays BLOCKED until a fresh probe, run now
        // (or by the run already in flight, which reads the dependencies when it ends).
        this.#kick(d);
      } else {
        this.#setReported(d, next.state, next.rootCause);
      }
    }
  }

  #queueActions(e: Entry, previous: CheckState, state: CheckState): void {
    const event: ActionEvent | null = state === "UP"
      ? "up"
      : state === "FAIL"
      ? "fail"
      : state === "BLOCKED"
      ? "blocked"
      : null;
    if (event === null) return;
    const specs = e.spec.actions.filter((a) =>
      a.events.includes(event) || a.events.includes("change")
    );
    if (specs.length === 0) return;
    if (e.queued >= MAX_QUEUED_CHANGES) {
      this.#log.warn("hc", "too many changes waiting for actions: change dropped", {
        check: e.spec.name,
        state,
      });
      return;
    }
    const info: ChangeInfo = {
      hc: this.#name,
      check: e.spec.name,
      state,
      previous,
      rootCause: e.rootCause,
      detail: e.lastResult?.detail ?? "",
      at: Date.now(),
    };
    e.queued++;
    e.actionChain = e.actionChain.then(async () => {
      for (const spec of specs) {
        const out: ActionOutcome = await this.#actions.run(spec, info);
        e.actionsRun++;
        if (!out.ok) e.actionsFailed++;
        e.lastAction = {
          at: Date.now(),
          kind: spec.kind,
          line: spec.line,
          ok: out.ok,
          detail: out.detail,
        };
      }
    }).catch((err) => {
      this.#log.error("hc", "action chain crashed", { check: e.spec.name, error: errorText(err) });
    }).finally(() => {
      e.queued--;
    });
  }
}

function safeHostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "hc";
  }
}
