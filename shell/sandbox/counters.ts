/**
 * What a sandbox counts for metrics (`sandbox.counters()`): requests by kind, handler and trap
 * outcomes, children started and ended, children killed by bound, script output.
 *
 * @module
 */
import { REQUEST_OPS, type RequestOp } from "../rpc.ts";

/** Per-kind request counters. */
export interface RequestCounters {
  /** Allowed and carried out. */
  allowed: number;
  /** Refused by the policy. */
  refused: number;
  /** Allowed but failed (the command failed, the peer was down…). */
  failed: number;
}

/** The bounds a child can be killed for passing. */
export type BoundKind =
  | "requests"
  | "messages"
  | "bytes"
  | "queue"
  | "cpu"
  | "threads"
  | "protocol";

/** What the sandbox counted since it was created (for metrics). */
export interface SandboxCounters {
  /** Privileged requests by kind. */
  requests: Record<RequestOp, RequestCounters>;
  /**
   * Handler invocations: returned a state, threw (or the child died), timed out, and run again
   * because another handler's timeout killed their child.
   */
  handlers: { ok: number; errors: number; timeouts: number; retried: number };
  /** Trap events: delivered, traps that threw, timed out, dropped (child not reading). */
  traps: { delivered: number; errors: number; timeouts: number; dropped: number };
  /** Children started and children that ended (killed or exited). */
  children: { started: number; ended: number };
  /** Children killed for passing a bound, by bound. */
  bounds: Record<BoundKind, number>;
  /** Script output lines logged and dropped (rate or length bound). */
  output: { lines: number; dropped: number };
}

/**
 * Counters at zero.
 *
 * @returns A new set of counters.
 *
 * @example
 * ```ts
 * import { emptyCounters } from "./counters.ts";
 * import { equal } from "node:assert/strict";
 * equal(emptyCounters().requests.run.refused, 0);
 * ```
 */
export function emptyCounters(): SandboxCounters {
  const requests = {} as Record<RequestOp, RequestCounters>;
  for (const op of REQUEST_OPS) requests[op] = { allowed: 0, refused: 0, failed: 0 };
  return {
    requests,
    handlers: { ok: 0, errors: 0, timeouts: 0, retried: 0 },
    traps: { delivered: 0, errors: 0, timeouts: 0, dropped: 0 },
    children: { started: 0, ended: 0 },
    bounds: {
      requests: 0,
      messages: 0,
      bytes: 0,
      queue: 0,
      cpu: 0,
      threads: 0,
      protocol: 0,
    },
    output: { lines: 0, dropped: 0 },
  };
}
