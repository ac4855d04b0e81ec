/**
 * A fake clock and timers for deterministic tests of the scheduler and of `failsh simulate`:
 * time moves only when {@linkcode FakeTime.advance} is called, and timers fire in due order.
 * Internal: not re-exported.
 *
 * @module
 */
import type { Timers } from "./scheduler/scheduler.ts";

interface Entry {
  id: number;
  at: number;
  seq: number;
  fn: () => void;
}

/** Lets pending promise callbacks run (one real macrotask turn). */
export function flush(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * Fake time implementing {@linkcode Timers}.
 *
 * @example
 * ```ts
 * import { FakeTime } from "./_fake_time.ts";
 * import { deepEqual } from "node:assert/strict";
 * const time = new FakeTime(1_000);
 * let fired = 0;
 * time.setTimeout(() => fired++, 500);
 * await time.advance(499);
 * await time.advance(1);
 * deepEqual([fired, time.now()], [1, 1500]);
 * ```
 */
export class FakeTime implements Timers {
  #now: number;
  #timers = new Map<number, Entry>();
  #nextId = 1;
  #seq = 0;
  /** Real macrotask turns to let run after each timer fires (promise chains settle). */
  flushTurns: number;

  /**
   * Creates a fake clock.
   *
   * @param start The initial time (ms since the epoch).
   * @param options Real macrotask turns run after each fired timer (default 3).
   */
  constructor(start = 1_764_000_000_000, options: { flushTurns?: number } = {}) {
    this.#now = start;
    this.flushTurns = options.flushTurns ?? 3;
  }

  /** The fake current time. */
  now(): number {
    return this.#now;
  }

  /** Schedules `fn` after `ms` fake milliseconds. */
  setTimeout(fn: () => void, ms: number): number {
    const id = this.#nextId++;
    this.#timers.set(id, { id, at: this.#now + Math.max(0, ms), seq: this.#seq++, fn });
    return id;
  }

  /** Cancels a timer (unknown ids are ignored). */
  clearTimeout(id: number): void {
    this.#timers.delete(id);
  }

  /** Number of pending timers. */
  get pending(): number {
    return this.#timers.size;
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due, in order, and letting the
   * promise callbacks they cause settle after each one.
   */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await this.#settle();
    for (;;) {
      let next: Entry | undefined;
      for (const e of this.#timers.values()) {
        if (e.at > target) continue;
        if (!next || e.at < next.at || (e.at === next.at && e.seq < next.seq)) next = e;
      }
      if (!next) break;
      this.#timers.delete(next.id);
      this.#now = Math.max(this.#now, next.at);
      next.fn();
      await this.#settle();
    }
    this.#now = target;
    await this.#settle();
  }

  async #settle(): Promise<void> {
    for (let i = 0; i < this.flushTurns; i++) await flush();
  }
}
