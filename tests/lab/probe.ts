/**
 * The parent side of the lab's client: collects the attempts printed by `probe_client.ts` (run in
 * the client namespace) and turns them into what a user of the VIP saw: who answered, and every
 * gap.
 *
 * @module
 */
import type { ManagedProcess } from "./exec.ts";

/** One connection attempt of the client. */
export interface Attempt {
  /** When the attempt started (ms since epoch, the machine's clock). */
  start: number;
  /** How long it took in ms. */
  durationMs: number;
  /** Whether a host answered. */
  ok: boolean;
  /** The name of the host that answered, or `-`. */
  who: string;
  /** Error code of a failed attempt, or `-`. */
  error: string;
}

/** What the client saw around one fault. */
export interface OutageReport {
  /** Start of the last successful attempt before the first failure (or `null` if none). */
  lastOkBefore: number | null;
  /** Start of the first failed attempt after the fault, or `null` if nothing failed. */
  firstFailure: number | null;
  /**
   * Start of the first successful attempt after which every attempt up to `until` succeeded
   * (service stably restored), or `null` if the client was not served stably again.
   */
  restoredAt: number | null;
  /** `restoredAt - lastOkBefore` (0 when nothing failed), or `null` if not restored. */
  outageMs: number | null;
  /** `restoredAt - fault time`, or `null` if not restored. */
  sinceFaultMs: number | null;
  /** Who served at `restoredAt`. */
  servedBy: string | null;
  /** Number of failed attempts in the window. */
  failures: number;
  /** Number of attempts in the window. */
  attempts: number;
  /** Distinct hosts that answered in the window, in order of first answer. */
  answeredBy: string[];
}

/**
 * Parses one line of `probe_client.ts` output.
 *
 * @param line The line.
 * @returns The attempt, or `null` for a line that is not an attempt.
 *
 * @example
 * ```ts
 * import { parseAttempt } from "./probe.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(parseAttempt("1764000000000 3 1 h1 -")?.who, "h1");
 * ```
 */
export function parseAttempt(line: string): Attempt | null {
  const parts = line.trim().split(" ");
  if (parts.length !== 5) return null;
  const [start, dur, ok, who, error] = parts;
  const s = Number(start);
  const d = Number(dur);
  if (!Number.isFinite(s) || !Number.isFinite(d) || (ok !== "0" && ok !== "1")) return null;
  return { start: s, durationMs: d, ok: ok === "1", who: who ?? "-", error: error ?? "-" };
}

/**
 * Computes what the client saw after a fault at `faultAt`, from attempts that started in
 * `[faultAt - 20 ms, until]`.
 *
 * @param attempts Attempts in any order.
 * @param faultAt When the fault was applied (ms since epoch).
 * @param until End of the window (ms since epoch).
 * @returns The outage report.
 *
 * @example
 * ```ts
 * import { analyzeOutage, type Attempt } from "./probe.ts";
 * import { deepEqual } from "node:assert/strict";
 * const a = (start: number, ok: boolean, who = ok ? "h1" : "-"): Attempt =>
 *   ({ start, durationMs: 1, ok, who, error: ok ? "-" : "timeout" });
 * const r = analyzeOutage([a(0, true), a(10, false), a(20, false), a(30, true, "h2")], 5, 40);
 * deepEqual([r.outageMs, r.servedBy], [30, "h2"]);
 * ```
 */
export function analyzeOutage(attempts: Attempt[], faultAt: number, until: number): OutageReport {
  const sorted = [...attempts].sort((x, y) => x.start - y.start);
  const window = sorted.filter((a) => a.start >= faultAt - 20 && a.start <= until);
  const answeredBy: string[] = [];
  for (const a of window) if (a.ok && !answeredBy.includes(a.who)) answeredBy.push(a.who);
  const failures = window.filter((a) => !a.ok);
  const firstFail = failures[0] ?? null;
  const base = {
    failures: failures.length,
    attempts: window.length,
    answeredBy,
  };
  if (!firstFail) {
    const last = window.at(-1) ?? null;
    return {
      ...base,
      lastOkBefore: null,
      firstFailure: null,
      restoredAt: faultAt,
      outageMs: 0,
      sinceFaultMs: 0,
      servedBy: last?.who ?? null,
    };
  }
  let lastOkBefore: number | null = null;
  for (const a of sorted) {
    if (a.start >= firstFail.start) break;
    if (a.ok) lastOkBefore = a.start;
  }
  const lastFail = failures.at(-1) ?? firstFail;
  const after = window.find((a) => a.ok && a.start > lastFail.start) ?? null;
  const restoredAt = after?.start ?? null;
  return {
    ...base,
    lastOkBefore,
    firstFailure: firstFail.start,
    restoredAt,
    outageMs: restoredAt === null ? null : restoredAt - (lastOkBefore ?? faultAt),
    sinceFaultMs: restoredAt === null ? null : Math.max(0, restoredAt - faultAt),
    servedBy: after?.who ?? null,
  };
}

/** Parent-side view of a running `probe_client.ts`. */
export class Probe {
  #attempts: Attempt[] = [];
  #max: number;
  #waiters = new Set<(a: Attempt) => void>();
  #process: ManagedProcess | null = null;
  /** Per-attempt timeout of the client in ms (an attempt's line arrives at most this late). */
  readonly attemptTimeoutMs: number;

  /**
   * Creates an empty collector; {@linkcode Probe.feed} is given every output line.
   *
   * @param attemptTimeoutMs The client's per-attempt timeout in ms.
   * @param maxAttempts Attempts kept (oldest dropped first; default 400000).
   */
  constructor(attemptTimeoutMs: number, maxAttempts = 400_000) {
    this.attemptTimeoutMs = attemptTimeoutMs;
    this.#max = maxAttempts;
  }

  /** Binds the process the attempts come from (stopped by {@linkcode Probe.stop}). */
  attach(process: ManagedProcess): void {
    this.#process = process;
  }

  /**
   * Takes one output line of the client.
   *
   * @param line The line.
   */
  feed(line: string): void {
    const a = parseAttempt(line);
    if (!a) return;
    this.#attempts.push(a);
    if (this.#attempts.length > this.#max) this.#attempts.splice(0, this.#attempts.length >> 2);
    for (const w of [...this.#waiters]) w(a);
  }

  /** Every attempt kept, in completion order. */
  get attempts(): readonly Attempt[] {
    return this.#attempts;
  }

  /**
   * Waits for an attempt (completed from now on) that satisfies `predicate`.
   *
   * @param predicate The condition.
   * @param timeoutMs Time limit.
   * @returns The attempt, or `null` on timeout.
   */
  waitFor(predicate: (a: Attempt) => boolean, timeoutMs: number): Promise<Attempt | null> {
    return new Promise((resolve) => {
      const done = (a: Attempt | null) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve(a);
      };
      const check = (a: Attempt) => {
        if (predicate(a)) done(a);
      };
      const timer = setTimeout(() => done(null), timeoutMs);
      this.#waiters.add(check);
    });
  }

  /**
   * Waits until `count` consecutive attempts (by completion) were answered by `who`.
   *
   * @param who Host name expected (or `*` for any host).
   * @param timeoutMs Time limit.
   * @param count Consecutive answers needed (default 5).
   * @returns `true` when seen in time.
   */
  async waitServedBy(who: string, timeoutMs: number, count = 5): Promise<boolean> {
    let run = 0;
    const a = await this.waitFor((x) => {
      run = x.ok && (who === "*" || x.who === who) ? run + 1 : 0;
      return run >= count;
    }, timeoutMs);
    return a !== null;
  }

  /**
   * Attempts that started in a window.
   *
   * @param from Start (ms since epoch, inclusive).
   * @param to End (inclusive; default now).
   * @returns The attempts sorted by start.
   */
  between(from: number, to = Date.now()): Attempt[] {
    return this.#attempts.filter((a) => a.start >= from && a.start <= to)
      .sort((x, y) => x.start - y.start);
  }

  /**
   * What the client saw after a fault.
   *
   * @param faultAt When the fault was applied.
   * @param until End of the window (default now).
   * @returns The report.
   */
  outage(faultAt: number, until = Date.now()): OutageReport {
    return analyzeOutage(this.between(faultAt - 1000, until), faultAt, until);
  }

  /**
   * What the client saw after a fault, once every attempt started up to now has reported (failed
   * attempts report only at their timeout, after faster successes).
   *
   * @param faultAt When the fault was applied.
   * @returns The report for the window `[faultAt, now]`.
   */
  async settledOutage(faultAt: number): Promise<OutageReport> {
    const until = Date.now();
    await new Promise((r) => setTimeout(r, this.attemptTimeoutMs + 150));
    return this.outage(faultAt, until);
  }

  /** Stops the client process. */
  async stop(): Promise<void> {
    for (const w of [...this.#waiters]) {
      w({ start: 0, durationMs: 0, ok: false, who: "", error: "" });
    }
    await this.#process?.stop({ graceMs: 3000 });
  }
}
