/**
 * Runs the start, stop and reclaim handlers of the failover script through the sandbox, one at a
 * time per service (others keep running), each with the service's time limit: counts its
 * duration, timeout or error for `/metrics`, logs and records it, and after a handler that threw
 * or timed out lets failsh release what the service still holds. The scheduler (`scheduler.ts`)
 * sets the state this module answers.
 *
 * @module
 */
import type { HandlerKind, Sandbox, ServiceDecl } from "../contract.ts";
import type { HandlerRunView, ServiceRecord, ServiceState } from "../../lib/types.ts";
import type { Logger } from "../../lib/log.ts";
import type { EventSink } from "./events.ts";
import type { Timers } from "./peers.ts";
import { HANDLER_BUCKETS, increment, observe, type SchedulerStats } from "./stats.ts";

/** After a failed start or reclaim, the shortest wait before the next attempt, in ms. */
export const RETRY_HOLDOFF_MS = 1000;

/** What a handler run needs besides the call. */
export interface HandlerRunnerOptions {
  /** The sandbox running the script now (it changes at a reload). */
  sandbox: () => Sandbox;
  /** This host's name (passed to the handler). */
  self: string;
  /** Clock and timers. */
  timers: Timers;
  /** Durations, timeouts and errors go here. */
  stats: SchedulerStats;
  /** Logger. */
  logger: Logger;
  /** Where events go. */
  events: EventSink;
  /** Called after a handler threw or timed out, before the service is set FAIL. */
  onHandlerFailed?: ((service: string, kind: HandlerKind) => Promise<void>) | undefined;
}

/** One handler to run. */
export interface HandlerCall {
  /** The service. */
  service: ServiceDecl;
  /** What the decision asked for (a reclaim without a reclaim handler runs start). */
  kind: HandlerKind;
  /** The decision's reason (passed to the handler). */
  reason: string;
  /** The records of the reachable peers (passed to the handler). */
  peers: Record<string, ServiceRecord[]>;
  /** Told when the handler starts, with the record that will hold its outcome. */
  onRun: (run: HandlerRunView) => void;
}

/** How a run ended: the state to set and why. */
export interface HandlerOutcome {
  /** The service's new state. */
  state: ServiceState;
  /** Why (the detail written to faild). */
  reason: string;
  /** Whether a start or reclaim failed (the next attempt waits the hold-off). */
  failedTakeover: boolean;
}

/**
 * Runs a service's handlers through a sandbox.
 *
 * @example Running one (a real failsh passes its sandbox; tests pass a fake one)
 * ```ts ignore
 * import { HandlerRunner } from "./handlers.ts";
 * const runner = new HandlerRunner({ sandbox: () => sandbox, self, timers, stats, logger, events });
 * const outcome = await runner.run({ service, kind: "start", reason, peers: {}, onRun: () => {} });
 * ```
 */
export class HandlerRunner {
  #opts: HandlerRunnerOptions;
  #queues = new Map<string, Promise<void>>();
  #running = new Set<string>();

  /**
   * Creates a runner.
   *
   * @param options Sandbox, self, timers, counters, logger, events and the failure hook.
   */
  constructor(options: HandlerRunnerOptions) {
    this.#opts = options;
  }

  /**
   * Whether a job of the service is queued or running.
   *
   * @param service The service.
   */
  running(service: string): boolean {
    return this.#running.has(service);
  }

  /** Resolves when every job queued so far has ended. */
  async idle(): Promise<void> {
    await Promise.all(this.#queues.values());
  }

  /**
   * Queues a job of a service (typically {@linkcode HandlerRunner.run} and setting the state)
   * behind the ones already queued for it; the service counts as running until it ends.
   *
   * @param service The service.
   * @param job The job (never rejects).
   * @param then Called after the job, once the service no longer counts as running.
   */
  enqueue(service: string, job: () => Promise<void>, then: () => void): void {
    this.#running.add(service);
    const queue = (this.#queues.get(service) ?? Promise.resolve()).then(async () => {
      try {
        await job();
      } finally {
        this.#running.delete(service);
      }
      then();
    });
    this.#queues.set(service, queue);
  }

  /**
   * Runs one handler with its time limit. Never rejects: a handler that throws or times out
   * ends as `FAIL`. A service without the handler takes the state the handler would give.
   *
   * @param call The service, kind, reason and peers.
   * @returns The state to set and why.
   */
  async run(call: HandlerCall): Promise<HandlerOutcome> {
    const { service: decl, kind } = call;
    const { timers, stats, logger: log, events } = this.#opts;
    const event = (kind: "handler", service: string, message: string) =>
      events.add(kind, service, null, message);
    const name = decl.name;
    const defined = decl.handlers;
    const used: HandlerKind = kind === "reclaim" && !defined.includes("reclaim") ? "start" : kind;
    const expected: ServiceState = kind === "stop" ? "FAIL" : "UP";
    const startedAt = timers.now();
    if (!defined.includes(used)) {
      event("handler", name, `${name}: no ${kind} handler; assuming ${expected}`);
      return { state: expected, reason: call.reason, failedTakeover: false };
    }
    const run: HandlerRunView = { kind, startedAt, durationMs: null, result: null, error: null };
    call.onRun(run);
    event("handler", name, `${name}: ${kind} handler started`);
    const timeoutMs = decl.timeouts[kind];
    const key = `${name}/${kind}`;
    let result: ServiceState;
    try {
      result = await this.#opts.sandbox().invoke(
        {
          service: name,
          kind: used,
          self: this.#opts.self,
          reason: call.reason,
          peers: call.peers,
        },
        timeoutMs,
      );
      run.result = result;
    } catch (error) {
      const timedOut = (error as Error)?.name === "TimeoutError";
      const message = error instanceof Error ? error.message : String(error);
      run.error = timedOut ? `timed out after ${timeoutMs} ms` : message;
      increment(timedOut ? stats.handlerTimeouts : stats.handlerErrors, key);
      log.error("handler", `${name}: ${kind} handler failed: ${run.error}`, {
        service: name,
        kind,
      });
      result = "FAIL";
      if (this.#opts.onHandlerFailed) {
        try {
          await this.#opts.onHandlerFailed(name, kind);
        } catch (e) {
          log.error(
            "handler",
            `${name}: cleanup after the failed ${kind} failed: ${(e as Error).message}`,
          );
        }
      }
    }
    run.durationMs = timers.now() - startedAt;
    observe(stats.handlerDurations, run.durationMs, { key, bounds: HANDLER_BUCKETS });
    event(
      "handler",
      name,
      run.error === null
        ? `${name}: ${kind} handler returned ${result} after ${run.durationMs} ms`
        : `${name}: ${kind} handler failed after ${run.durationMs} ms: ${run.error}; ${name} is FAIL`,
    );
    if (result !== expected && run.error === null) {
      log.warn("handler", `${name}: ${kind} handler returned ${result}, not ${expected}`);
    }
    return {
      state: result,
      reason: run.error === null ? `${kind} handler returned ${result}` : `${kind} handler failed`,
      failedTakeover: kind !== "stop" && result === "FAIL",
    };
  }
}
