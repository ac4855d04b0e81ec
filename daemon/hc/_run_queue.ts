/**
 * When each check runs next: one timer for all of them, armed for the earliest, over a binary
 * min-heap kept in two flat arrays.
 *
 * Why not a `setTimeout` per check: each lives a whole interval, so V8 promotes it (and its
 * closure) to the old generation; at 500 checks a second that is old garbage growing until the
 * next full collection. Scheduling here allocates nothing per run.
 *
 * @module
 */

/** Something the queue runs; `dueAt` is owned by the queue (`null`: not scheduled). */
export interface Schedulable {
  /** When it is due, ms since the epoch, or `null`. */
  dueAt: number | null;
}

/**
 * Runs each scheduled item once at its time.
 *
 * @example
 * ```ts
 * import { RunQueue } from "./_run_queue.ts";
 * const item = { dueAt: null as number | null };
 * const q = new RunQueue<typeof item>(() => console.log("due"));
 * q.schedule(item, Date.now() + 10);
 * q.cancel(item);
 * q.close();
 * ```
 */
export class RunQueue<T extends Schedulable> {
  #ats: number[] = [];
  #items: T[] = [];
  #run: (item: T) => void;
  #now: () => number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #armedAt = Infinity;
  #closed = false;

  /**
   * Creates an empty queue.
   *
   * @param run Called with each item at its time (exceptions propagate to the timer).
   * @param now The clock (default `Date.now`).
   */
  constructor(run: (item: T) => void, now: () => number = Date.now) {
    this.#run = run;
    this.#now = now;
  }

  /**
   * Runs `item` at `at` (replacing any earlier schedule of it).
   *
   * @param item The item.
   * @param at When, ms since the epoch.
   */
  schedule(item: T, at: number): void {
    if (this.#closed) return;
    item.dueAt = at;
    this.#push(at, item);
    if (at < this.#armedAt) this.#arm(at);
  }

  /**
   * Forgets an item's schedule (its heap slot is dropped when it comes up).
   *
   * @param item The item.
   */
  cancel(item: T): void {
    item.dueAt = null;
  }

  /** Stops the timer and forgets everything. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const item of this.#items) item.dueAt = null;
    this.#ats.length = 0;
    this.#items.length = 0;
  }

  /** How many heap slots are held (stale ones included), for tests. */
  get size(): number {
    return this.#ats.length;
  }

  #arm(at: number): void {
    clearTimeout(this.#timer);
    this.#armedAt = at;
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, at - this.#now()));
  }

  #fire(): void {
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const now = this.#now();
    while (this.#ats.length > 0 && this.#ats[0]! <= now && !this.#closed) {
      const at = this.#ats[0]!;
      const item = this.#pop();
      // A stale slot: the item was cancelled or scheduled again for another time.
      if (item.dueAt !== at) continue;
      item.dueAt = null;
      this.#run(item);
    }
    if (this.#ats.length > 0 && !this.#closed && this.#timer === undefined) {
      this.#arm(this.#ats[0]!);
    }
  }

  #push(at: number, item: T): void {
    const ats = this.#ats;
    const items = this.#items;
    let i = ats.length;
    ats.push(at);
    items.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (ats[parent]! <= at) break;
      ats[i] = ats[parent]!;
      items[i] = items[parent]!;
      i = parent;
    }
    ats[i] = at;
    items[i] = item;
  }

  #pop(): T {
    const ats = this.#ats;
    const items = this.#items;
    const top = items[0]!;
    const lastAt = ats.pop()!;
    const lastItem = items.pop()!;
    const n = ats.length;
    if (n > 0) {
      let i = 0;
      while (true) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && ats[r]! < ats[l]! ? r : l;
        if (ats[c]! >= lastAt) break;
        ats[i] = ats[c]!;
        items[i] = items[c]!;
        i = c;
      }
      ats[i] = lastAt;
      items[i] = lastItem;
    }
    return top;
  }
}
