/**
 * What the monitor sees change besides the services' states: the ring of recent events (the
 * last {@linkcode MAX_EVENTS}), the listeners told after every change of the snapshot data, and
 * the addresses this host holds (each one appearing counts as a takeover, each one disappearing
 * as a release).
 *
 * @module
 */
import type { EventRecord, HeldAddress } from "../../lib/types.ts";
import type { Decision, DecisionInput } from "./decide.ts";
import type { Timers } from "./peers.ts";
import type { SchedulerStats } from "./stats.ts";

/** Most recent events kept. */
export const MAX_EVENTS = 200;

/** Where the scheduler's parts write their events and say that the snapshot data changed. */
export interface EventSink {
  /** Adds a line to the recent events (and tells the listeners). */
  add(
    kind: EventRecord["kind"],
    service: string | null,
    host: string | null,
    message: string,
  ): void;
  /** Tells the listeners that the snapshot data changed. */
  changed(): void;
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

/**
 * The recent events and the listeners of changes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EventLog } from "./events.ts";
 * const log = new EventLog({ now: () => 1000, setTimeout: () => 0, clearTimeout: () => {} });
 * let changes = 0;
 * log.onChange(() => changes++);
 * log.add("info", null, "alpha", "script and policy reloaded");
 * assert.deepEqual([log.list().length, changes], [1, 1]);
 * ```
 */
export class EventLog implements EventSink {
  #timers: Timers;
  #events: EventRecord[] = [];
  #listeners = new Set<() => void>();

  /**
   * Creates an empty log.
   *
   * @param timers The clock that dates the events.
   */
  constructor(timers: Timers) {
    this.#timers = timers;
  }

  /**
   * Registers a listener called (synchronously) after every change.
   *
   * @param listener Called after each change.
   * @returns A function that removes the listener.
   */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Adds an event (the oldest goes beyond {@linkcode MAX_EVENTS}) and tells the listeners.
   *
   * @param kind The kind of event.
   * @param service The service it is about, or `null`.
   * @param host The host it is about, or `null`.
   * @param message The line.
   */
  add(kind: EventRecord["kind"], service: string | null, host: string | null, message: string) {
    this.#events.push({ at: this.#timers.now(), kind, service, host, message });
    if (this.#events.length > MAX_EVENTS) this.#events.splice(0, this.#events.length - MAX_EVENTS);
    this.changed();
  }

  /** The recent events, oldest first (a copy). */
  list(): EventRecord[] {
    return [...this.#events];
  }

  /** Tells the listeners that the snapshot data changed (a listener that throws is skipped). */
  changed(): void {
    for (const l of this.#listeners) {
      try {
        l();
      } catch {
        // A listener's failure must not stop the scheduler.
      }
    }
  }
}

/** Options of {@linkcode AddressWatch}. */
export interface AddressWatchOptions {
  /** This host's name (for events). */
  self: string;
  /** The addresses held right now (a list that throws counts as empty; default none). */
  list?: (() => HeldAddress[]) | undefined;
  /** Where takeovers and releases are counted. */
  stats: SchedulerStats;
  /** Where each one is logged. */
  events: EventSink;
  /** The arbiter's epoch of a service's holding, named in the takeover line (default none). */
  epochOf?: ((service: string) => string | null) | undefined;
}

/**
 * The addresses this host holds, as the net driver lists them: takeovers and releases are
 * counted and logged as they are seen.
 */
export class AddressWatch {
  #opts: AddressWatchOptions;
  #held = new Set<string>();

  /**
   * Creates a watch over a list of held addresses.
   *
   * @param options The list, counters and events.
   */
  constructor(options: AddressWatchOptions) {
    this.#opts = options;
  }

  /** The addresses held right now. */
  current(): HeldAddress[] {
    try {
      return this.#opts.list?.() ?? [];
    } catch {
      return [];
    }
  }

  /** Compares the held addresses with the last look: counts and logs what came and went. */
  track(): void {
    const { stats, events, self } = this.#opts;
    const event = (message: string) => events.add("address", null, self, message);
    const current = this.current();
    const now = new Set(current.map((a) => `${a.address}%${a.device}`));
    for (const h of current) {
      const a = `${h.address}%${h.device}`;
      if (!this.#held.has(a)) {
        stats.takeovers++;
        const epoch = h.service === null ? null : this.#opts.epochOf?.(h.service) ?? null;
        event(`took over ${a.replace("%", " on ")}${epoch === null ? "" : ` (epoch ${epoch})`}`);
      }
    }
    for (const a of this.#held) {
      if (!now.has(a)) {
        stats.releases++;
        event(`released ${a.replace("%", " on ")}`);
      }
    }
    this.#held = now;
  }
}
