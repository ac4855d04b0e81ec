/**
 * The arbiter's states, verdicts and timing: defaults derived from the TTL and the check
 * `renew + 2 × timeout + margin ≤ TTL`. Pure and without imports: the script API's registry checks
 * a declared `arbiter()` with it in the sandboxed child, and the supervisor's arbiter
 * (`shell/arbiter/`) runs on it (see `docs/arbiter.md`).
 *
 * @module
 */

/** Where a service stands with the arbiter. */
export type ArbiterState =
  /** Not wanted, not held. */
  | "none"
  /** Wanted: trying to take the key (someone else may hold it). */
  | "acquiring"
  /** The key is ours; waiting out the takeover delay before holding. */
  | "waiting-delay"
  /** Held: the verdict is `grant`. */
  | "held"
  /** Held past the deadline because etcd does not answer and every peer agrees. */
  | "failsafe"
  /** Was held, now lost: the address must go; nothing is taken until the loss is acknowledged. */
  | "lost";

/** What a holder does when etcd stops answering. */
export type ArbiterLossPolicy = "release" | "keep-if-peers-agree";

/** The arbiter's verdict on this host holding a service (`shell/scheduler/decide.ts`'s `arbiter` input). */
export type ArbiterVerdict = "grant" | "deny";

/** The timing of the rule, in milliseconds. */
export interface ArbiterTiming {
  /** The lease TTL asked of etcd (whole seconds; etcd may grant more, which is then used). */
  ttlMs: number;
  /** Renewal period, counted from the previous keepalive's send time (≤ TTL/3). */
  renewMs: number;
  /** Time limit of each request to etcd (≤ TTL/3). */
  timeoutMs: number;
  /** How long before the earliest possible expiry a holder stops holding (address removal + jitter). */
  marginMs: number;
  /** How long a new holder waits after taking the key (≥ renewMs + marginMs). */
  takeoverDelayMs: number;
}

/** The default lease TTL in ms. */
export const DEFAULT_TTL_MS = 6000;

/**
 * The problems of a timing, as sentences (empty when it is valid).
 *
 * @param t The timing.
 * @returns What is wrong.
 *
 * @example
 * ```ts
 * import { timingProblems } from "./arbiter_timing.ts";
 * import { deepEqual } from "node:assert/strict";
 * const t = { ttlMs: 3000, renewMs: 1000, timeoutMs: 1000, marginMs: 500, takeoverDelayMs: 1500 };
 * deepEqual(timingProblems(t), ["renewMs + 2 × timeoutMs + marginMs = 3500 ms exceeds ttlMs 3000 ms: a renewal sent on time could be confirmed after the deadline"]);
 * ```
 */
export function timingProblems(t: ArbiterTiming): string[] {
  const out: string[] = [];
  for (const k of ["ttlMs", "renewMs", "timeoutMs", "marginMs", "takeoverDelayMs"] as const) {
    if (!Number.isSafeInteger(t[k]) || t[k] <= 0) out.push(`${k} must be a positive integer`);
  }
  if (out.length > 0) return out;
  if (t.ttlMs % 1000 !== 0) out.push(`ttlMs ${t.ttlMs} must be whole seconds (etcd leases are)`);
  if (t.renewMs * 3 > t.ttlMs) out.push(`renewMs ${t.renewMs} exceeds ttlMs / 3`);
  if (t.timeoutMs * 3 > t.ttlMs) out.push(`timeoutMs ${t.timeoutMs} exceeds ttlMs / 3`);
  if (t.marginMs < 100) out.push(`marginMs ${t.marginMs} is below 100 ms (address removal time)`);
  const cycle = t.renewMs + 2 * t.timeoutMs + t.marginMs;
  if (cycle > t.ttlMs) {
    out.push(
      `renewMs + 2 × timeoutMs + marginMs = ${cycle} ms exceeds ttlMs ${t.ttlMs} ms: a renewal sent on time could be confirmed after the deadline`,
    );
  }
  if (t.takeoverDelayMs < t.renewMs + t.marginMs) {
    out.push(`takeoverDelayMs ${t.takeoverDelayMs} is below renewMs + marginMs`);
  }
  return out;
}

/**
 * A complete, checked timing: the defaults derive from the TTL (`renew = TTL/3`,
 * `timeout = TTL/6`, `margin = TTL/6`, `takeoverDelay = renew + margin`).
 *
 * @param options Any of the fields (default TTL 6000 ms).
 * @returns The timing.
 * @throws {RangeError} Naming every problem.
 *
 * @example
 * ```ts
 * import { arbiterTiming } from "./arbiter_timing.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(arbiterTiming(), { ttlMs: 6000, renewMs: 2000, timeoutMs: 1000, marginMs: 1000, takeoverDelayMs: 3000 });
 * ```
 */
export function arbiterTiming(options: Partial<ArbiterTiming> = {}): ArbiterTiming {
  const ttlMs = options.ttlMs ?? DEFAULT_TTL_MS;
  const renewMs = options.renewMs ?? Math.floor(ttlMs / 3);
  const marginMs = options.marginMs ?? Math.floor(ttlMs / 6);
  const t: ArbiterTiming = {
    ttlMs,
    renewMs,
    timeoutMs: options.timeoutMs ?? Math.floor(ttlMs / 6),
    marginMs,
    takeoverDelayMs: options.takeoverDelayMs ?? renewMs + marginMs,
  };
  const problems = timingProblems(t);
  if (problems.length > 0) {
    throw new RangeError(`Invalid arbiter timing: ${problems.join("; ")}`);
  }
  return t;
}
