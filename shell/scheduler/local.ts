/**
 * This host's records in its own faild: failsh writes each local service's state there (peers
 * read it), retries a write that failed, writes everything again after the local faild restarted,
 * and notices writes by anyone else (hc, an operator with `failc`): a `FAIL` there is a **veto**
 * (`decide()`'s `localVeto` input), a later non-`FAIL` write lifts it. See `docs/decisions.md`,
 * "Health checks: the local veto".
 *
 * @module
 */
import type { ServiceRecord, ServiceState } from "../../lib/types.ts";
import type { Logger } from "../../lib/log.ts";
import type { EventSink } from "./events.ts";
import type { PollResult } from "./peers.ts";

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

/** Options of {@linkcode LocalRecords}. */
export interface LocalRecordsOptions {
  /** This host's name (for events). */
  self: string;
  /** Writes to the local faild. */
  reporter: Reporter;
  /** The state failsh holds for a service now (what a report writes). */
  stateOf: (service: string) => ServiceState;
  /** Logger. */
  logger: Logger;
  /** Where events go. */
  events: EventSink;
}

/** One service's record, as failsh last wrote it. */
interface Entry {
  /** The state of the last successful write, or `null` (none yet, or written again later). */
  reported: ServiceState | null;
  /** faild's change counter after our last write (null if unknown). */
  reportedChanges: number | null;
  /** The detail of our last write (null if unknown): tells another writer's FAIL from ours. */
  reportedDetail: string | null;
  /** Who set the service FAIL behind failsh's back, or null. */
  veto: string | null;
  /** The detail of the next write (the reason of the last state change). */
  detail: string;
  /** The write loop running, or null. */
  reporting: Promise<void> | null;
}

/**
 * The local services' records in the local faild.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Logger } from "../../lib/log.ts";
 * import { LocalRecords } from "./local.ts";
 * const writes: string[] = [];
 * const local = new LocalRecords({
 *   self: "alpha",
 *   reporter: (service, state) => {
 *     writes.push(`${service} ${state}`);
 *     return Promise.resolve();
 *   },
 *   stateOf: () => "FAIL",
 *   logger: new Logger({ sink: () => {} }),
 *   events: { add: () => {}, changed: () => {} },
 * });
 * local.sync(["web"]);
 * await local.report("web");
 * assert.deepEqual(writes, ["web FAIL"]);
 * ```
 */
export class LocalRecords {
  #opts: LocalRecordsOptions;
  #entries = new Map<string, Entry>();

  /**
   * Creates the records' bookkeeping (no service yet: see {@linkcode LocalRecords.sync}).
   *
   * @param options Reporter, state lookup, logger and events.
   */
  constructor(options: LocalRecordsOptions) {
    this.#opts = options;
  }

  /**
   * Keeps the services named (what failsh wrote for them stays known across a reload), adds
   * new ones, forgets the others.
   *
   * @param services The local services now.
   */
  sync(services: readonly string[]): void {
    for (const name of this.#entries.keys()) {
      if (!services.includes(name)) this.#entries.delete(name);
    }
    for (const name of services) {
      if (this.#entries.has(name)) continue;
      this.#entries.set(name, {
        reported: null,
        reportedChanges: null,
        reportedDetail: null,
        veto: null,
        detail: "registered by failsh",
        reporting: null,
      });
    }
  }

  /**
   * Who set the service FAIL in the local faild behind failsh's back, or `null` (no veto).
   *
   * @param service A local service.
   */
  veto(service: string): string | null {
    return this.#entries.get(service)?.veto ?? null;
  }

  /**
   * Whether the local faild does not show the service's current state yet.
   *
   * @param service A local service.
   */
  behind(service: string): boolean {
    const e = this.#entries.get(service);
    return e !== undefined && e.reported !== this.#opts.stateOf(service);
  }

  /**
   * Sets the detail of the next write (the reason of a state change; at most 500 characters).
   *
   * @param service A local service.
   * @param detail The reason.
   */
  setDetail(service: string, detail: string): void {
    const e = this.#entries.get(service);
    if (e) e.detail = detail.slice(0, 500);
  }

  /**
   * Writes the service's current state until faild shows it (one write loop at a time; a failed
   * write is logged and retried at the next tick). While vetoed, never writes anything but
   * `FAIL` over the FAIL someone else set.
   *
   * @param service A local service.
   * @returns When the loop is over.
   */
  report(service: string): Promise<void> {
    const e = this.#entries.get(service);
    if (!e) return Promise.resolve();
    if (e.reporting) return e.reporting;
    if (e.veto !== null && this.#opts.stateOf(service) !== "FAIL") return Promise.resolve();
    e.reporting = this.#reportLoop(service, e).finally(() => {
      e.reporting = null;
    });
    return e.reporting;
  }

  /**
   * Reads an answer of the local faild: after a restart (a new boot id) every state is written
   * again; otherwise a record whose change counter moved past failsh's last write and shows
   * another state (or another writer's FAIL over ours) sets or lifts the veto.
   *
   * @param result The local faild's answer.
   * @param options `restarted`: its boot id changed; `sameBoot`: the boot id is the previous one.
   */
  answered(result: PollResult, options: { restarted: boolean; sameBoot: boolean }): void {
    if (options.restarted) {
      // Our records may be gone or old: write them again.
      for (const e of this.#entries.values()) {
        e.reported = null;
        e.reportedChanges = null;
        e.reportedDetail = null;
      }
      this.#opts.events.add(
        "info",
        null,
        this.#opts.self,
        "the local faild restarted; states reported again",
      );
    }
    if (!options.sameBoot) return;
    for (const [name, e] of this.#entries) {
      const rec = result.services.find((x) => x.name === name);
      if (rec && e.reporting === null) this.#notice(name, e, rec);
    }
  }

  #notice(name: string, e: Entry, rec: ServiceRecord): void {
    if (e.reportedChanges === null) {
      // No counter from our own write (reloaded, or a reporter without records): take the
      // record as the baseline when it shows what we reported.
      if (rec.state === e.reported) e.reportedChanges = rec.changes;
      return;
    }
    // faild counts state changes only, and hc may sign with failsh's own key: a FAIL written
    // over our FAIL shows only in its detail.
    const failOverFail = e.veto === null && rec.state === "FAIL" && e.reported === "FAIL" &&
      e.reportedDetail !== null && rec.detail !== e.reportedDetail;
    if (!failOverFail && (rec.changes <= e.reportedChanges || rec.state === e.reported)) return;
    // faild's counter moved past our last write and shows another state, or another writer's
    // FAIL replaced ours: not ours.
    e.reportedChanges = rec.changes;
    e.reported = rec.state;
    const self = this.#opts.self;
    if (rec.state === "FAIL") {
      e.veto = rec.setBy || "someone";
      this.#opts.logger.warn("state", `${name}: the local faild was set FAIL by ${e.veto}`, {
        service: name,
        detail: rec.detail,
      });
      this.#opts.events.add(
        "state",
        name,
        self,
        `${name}: the local faild was set FAIL by ${e.veto}${rec.detail ? ` (${rec.detail})` : ""}`,
      );
    } else {
      const lifted = e.veto !== null;
      e.veto = null;
      this.#opts.events.add(
        "state",
        name,
        self,
        `${name}: the local faild was set ${rec.state} by ${rec.setBy}${
          lifted ? "; the veto is lifted" : ""
        }; failsh reports its own state (${this.#opts.stateOf(name)}) again`,
      );
    }
  }

  async #reportLoop(service: string, e: Entry): Promise<void> {
    try {
      while (e.reported !== this.#opts.stateOf(service)) {
        const state = this.#opts.stateOf(service);
        const detail = e.detail;
        const rec = await this.#opts.reporter(service, state, detail);
        e.reported = state;
        // What faild stored (the reporter may decorate the detail).
        e.reportedDetail = rec ? rec.detail : detail;
        if (rec) e.reportedChanges = rec.changes;
      }
    } catch (error) {
      this.#opts.logger.warn(
        "faild",
        `Cannot report ${service} ${this.#opts.stateOf(service)} to the local faild: ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    }
  }
}
