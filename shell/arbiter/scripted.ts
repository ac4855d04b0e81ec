/**
 * A scripted arbiter: the scheduler's {@linkcode ArbiterLink} without etcd, for `failsh simulate`
 * and the scheduler's tests. A scenario says per service whether the key can be had (`grant`),
 * is someone else's (`deny`), is lost by its holder (`lose`) or free again (`regain`); the
 * arbiter then acts like `EtcdArbiter`: a wanted service takes the key with a new epoch, waits
 * the takeover delay, holds it; a holder that loses it is `lost` until the scheduler gives the
 * service up.
 *
 * @module
 */
import type { ArbiterLink } from "../scheduler/scheduler.ts";
import type { ArbiterView } from "../../lib/types.ts";

/** What a scenario tells the scripted arbiter about a service's key. */
export type ScriptedArbiterEvent = "grant" | "deny" | "lose" | "regain";

/** Every {@linkcode ScriptedArbiterEvent}. */
export const SCRIPTED_ARBITER_EVENTS: readonly ScriptedArbiterEvent[] = [
  "grant",
  "deny",
  "lose",
  "regain",
];

/** Options of {@linkcode ScriptedArbiter}. */
export interface ScriptedArbiterOptions {
  /** Timers (fake time in a simulation). */
  timers: {
    setTimeout(fn: () => void, ms: number): number;
    clearTimeout(id: number): void;
  };
  /** The takeover delay after taking the key (default 0). */
  takeoverDelayMs?: number;
  /** First epoch handed out (default 101; each acquisition takes the next). */
  firstEpoch?: number;
  /** Told of every change (after the call that caused it returned). */
  onChange?: (service: string) => void;
}

interface Entry {
  view: ArbiterView;
  wanted: boolean;
  rule: string;
  /** Whether the key can be had now. */
  free: boolean;
  timer: number | null;
}

/**
 * An arbiter driven by a scenario instead of etcd.
 *
 * @example
 * ```ts
 * import { ScriptedArbiter } from "./scripted.ts";
 * import { deepEqual } from "node:assert/strict";
 * const timers = { setTimeout: (fn: () => void) => (fn(), 0), clearTimeout: () => {} };
 * const a = new ScriptedArbiter({ timers });
 * a.want("web");
 * deepEqual(a.verdict("web"), "deny"); // the key is not free yet
 * a.event("web", "grant");
 * deepEqual([a.verdict("web"), a.status("web").epoch], ["grant", "101"]);
 * ```
 */
export class ScriptedArbiter implements ArbiterLink {
  #opts: ScriptedArbiterOptions;
  #next: number;
  #services = new Map<string, Entry>();

  /**
   * Creates the arbiter; every key is someone else's until a `grant`.
   *
   * @param options Timers, takeover delay, first epoch, change listener.
   */
  constructor(options: ScriptedArbiterOptions) {
    this.#opts = options;
    this.#next = options.firstEpoch ?? 101;
  }

  #entry(service: string): Entry {
    let e = this.#services.get(service);
    if (!e) {
      e = {
        view: {
          state: "none",
          verdict: "deny",
          epoch: null,
          holder: null,
          reason: "not wanted",
          deadlineInMs: null,
        },
        wanted: false,
        rule: "none",
        free: false,
        timer: null,
      };
      this.#services.set(service, e);
    }
    return e;
  }

  #to(service: string, e: Entry, state: string, rule: string, reason: string): void {
    const same = e.view.state === state;
    e.view = {
      ...e.view,
      state,
      verdict: state === "held" || state === "failsafe" ? "grant" : "deny",
      reason,
    };
    e.rule = rule;
    if (!same) this.#opts.timers.setTimeout(() => this.#opts.onChange?.(service), 0);
  }

  #try(service: string, e: Entry): void {
    if (e.view.state !== "acquiring") return;
    if (!e.free) {
      e.view.holder = "another host";
      this.#to(service, e, "acquiring", "key-held", "the key is held by another host (scenario)");
      return;
    }
    e.view.epoch = String(this.#next++);
    e.view.holder = null;
    const delay = this.#opts.takeoverDelayMs ?? 0;
    if (delay <= 0) {
      this.#to(service, e, "held", "acquired", `key taken, epoch ${e.view.epoch}`);
      return;
    }
    this.#to(
      service,
      e,
      "waiting-delay",
      "acquired",
      `key taken, epoch ${e.view.epoch}; waiting the takeover delay of ${delay} ms`,
    );
    e.timer = this.#opts.timers.setTimeout(() => {
      e.timer = null;
      if (e.view.state !== "waiting-delay") return;
      this.#to(service, e, "held", "takeover-delay-over", `holding, epoch ${e.view.epoch}`);
    }, delay);
  }

  /** The verdict: `grant` while held. */
  verdict(service: string): "grant" | "deny" {
    return this.#entry(service).view.verdict;
  }

  /** Wants the key: takes it when the scenario lets it. */
  want(service: string): void {
    const e = this.#entry(service);
    e.wanted = true;
    if (e.view.state !== "none") return;
    this.#to(service, e, "acquiring", "want", "wants the key");
    this.#try(service, e);
  }

  /** Gives the service up: the key is freed if it was ours. */
  unwant(service: string): void {
    const e = this.#entry(service);
    e.wanted = false;
    if (e.timer !== null) this.#opts.timers.clearTimeout(e.timer);
    e.timer = null;
    if (e.view.state === "none") return;
    e.view.epoch = null;
    this.#to(service, e, "none", "unwant", "gave the service up");
  }

  /** The standing of a service. */
  status(service: string): ArbiterView & { wanted: boolean; rule: string } {
    const e = this.#entry(service);
    return { ...e.view, wanted: e.wanted, rule: e.rule };
  }

  /**
   * Applies a scenario event to a service's key.
   *
   * @param service The service.
   * @param event `grant`/`regain`: the key can be had; `deny`: it is someone else's; `lose`: a
   *   holder loses it (and it is someone else's).
   */
  event(service: string, event: ScriptedArbiterEvent): void {
    const e = this.#entry(service);
    const keyed = ["waiting-delay", "held", "failsafe"].includes(e.view.state);
    if (event === "grant" || event === "regain") {
      e.free = true;
      this.#try(service, e);
      return;
    }
    e.free = false;
    if (keyed) {
      if (e.timer !== null) this.#opts.timers.clearTimeout(e.timer);
      e.timer = null;
      e.view.epoch = null;
      e.view.holder = "another host";
      this.#to(service, e, "lost", "key-lost", "the key is lost (scenario): the address must go");
    }
  }
}
