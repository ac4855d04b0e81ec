/**
 * Small helpers for the child processes every tool runs: a kill that tolerates a process already
 * gone, and a time limit that kills.
 *
 * @module
 */

/**
 * Sends a signal to a child, ignoring the error of a child already gone.
 *
 * @param child The child.
 * @param signal The signal (default `SIGKILL`).
 *
 * @example
 * ```ts
 * import { killQuietly } from "./process.ts";
 * import { deepEqual } from "node:assert/strict";
 * const child = new Deno.Command("sleep", { args: ["10"] }).spawn();
 * killQuietly(child);
 * killQuietly(child); // already gone: no error
 * deepEqual((await child.status).signal, "SIGKILL");
 * ```
 */
export function killQuietly(child: Deno.ChildProcess, signal: Deno.Signal = "SIGKILL"): void {
  try {
    child.kill(signal);
  } catch {
    // Already gone.
  }
}

/** A time limit on a child, from {@linkcode killAfter}. */
export interface KillTimer {
  /** `true` once the limit passed and the child was killed. */
  readonly timedOut: boolean;
  /** Cancels the limit (call it once the child ended). */
  clear(): void;
}

/**
 * Kills a child with SIGKILL when it runs longer than `ms`.
 *
 * @param child The child.
 * @param ms The time limit.
 * @returns The timer: whether it fired, and how to cancel it.
 *
 * @example
 * ```ts
 * import { killAfter } from "./process.ts";
 * import { deepEqual } from "node:assert/strict";
 * const child = new Deno.Command("sleep", { args: ["10"] }).spawn();
 * const limit = killAfter(child, 50);
 * await child.status;
 * limit.clear();
 * deepEqual(limit.timedOut, true);
 * ```
 */
export function killAfter(child: Deno.ChildProcess, ms: number): KillTimer {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killQuietly(child);
  }, ms);
  return {
    get timedOut() {
      return timedOut;
    },
    clear: () => clearTimeout(timer),
  };
}
