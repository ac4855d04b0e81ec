/**
 * Errors a failover script (or failsh's supervisor) is expected to catch. They cross the
 * sandbox boundary by name: a request refused by the supervisor rejects in the script with a
 * {@linkcode PolicyDeniedError}, a handler that ran out of time rejects in the scheduler with a
 * {@linkcode TimeoutError}.
 *
 * This file has no imports, so the sandboxed child can load it without any permission.
 *
 * @module
 */

/**
 * A privileged request (take over an address, run a program, poll an undeclared host…) was
 * refused by the operator's policy. The message says what was refused and why.
 *
 * @example Catching a refusal in a handler
 * ```ts
 * import { PolicyDeniedError } from "./errors.ts";
 * try {
 *   throw new PolicyDeniedError("Cannot run rm: program is not in the policy");
 * } catch (e) {
 *   if (e instanceof PolicyDeniedError) console.log(e.message);
 * }
 * ```
 */
export class PolicyDeniedError extends Error {
  /**
   * Creates the error.
   *
   * @param message What was refused and why, e.g.
   *   `Cannot take over 198.19.0.100/24: address is outside the policy`.
   */
  constructor(message: string) {
    super(message);
    this.name = "PolicyDeniedError";
  }
}

/**
 * Something took longer than its time limit and was stopped (a handler, whose child was
 * killed, or a program, whose process group was killed).
 *
 * @example
 * ```ts
 * import { TimeoutError } from "./errors.ts";
 * import { deepEqual } from "node:assert/strict";
 * const e = new TimeoutError("Handler start of web timed out after 100 ms");
 * deepEqual(e.name, "TimeoutError");
 * ```
 */
export class TimeoutError extends Error {
  /**
   * Creates the error.
   *
   * @param message What timed out and after how long.
   */
  constructor(message: string) {
    super(message);
    this.name = "TimeoutError";
  }
}

/**
 * The sandboxed script broke the rules of the sandbox protocol or died (it exited, crashed,
 * declared something invalid, or changed its declaration after a restart).
 *
 * @example
 * ```ts
 * import { ScriptError } from "./errors.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(new ScriptError("Script exited with code 1").name, "ScriptError");
 * ```
 */
export class ScriptError extends Error {
  /**
   * Creates the error.
   *
   * @param message What happened to the script.
   */
  constructor(message: string) {
    super(message);
    this.name = "ScriptError";
  }
}

/** An error as it crosses the sandbox boundary (JSON). */
export interface WireError {
  /** The error's class name (`PolicyDeniedError`, `TimeoutError`, `Error`…). */
  name: string;
  /** Its message. */
  message: string;
}

/**
 * Turns any thrown value into a {@linkcode WireError}.
 *
 * @param error What was thrown.
 * @returns Its name and message, the message bounded to 2000 characters.
 *
 * @example
 * ```ts
 * import { toWireError } from "./errors.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(toWireError(new RangeError("Bad value: 3")), { name: "RangeError", message: "Bad value: 3" });
 * ```
 */
export function toWireError(error: unknown): WireError {
  if (error instanceof Error) {
    return { name: error.name, message: String(error.message).slice(0, 2000) };
  }
  return { name: "Error", message: String(error).slice(0, 2000) };
}

/**
 * Rebuilds an error received from the other side of the sandbox, keeping the classes a caller
 * is expected to catch.
 *
 * @param wire The name and message received.
 * @returns A {@linkcode PolicyDeniedError}, {@linkcode TimeoutError}, {@linkcode ScriptError},
 *   a standard `TypeError` / `RangeError` / `SyntaxError`, or a plain `Error` with the name kept.
 *
 * @example
 * ```ts
 * import { fromWireError, PolicyDeniedError } from "./errors.ts";
 * import { deepEqual } from "node:assert/strict";
 * const e = fromWireError({ name: "PolicyDeniedError", message: "Cannot run rm: not allowed" });
 * deepEqual(e instanceof PolicyDeniedError, true);
 * ```
 */
export function fromWireError(wire: WireError): Error {
  if (typeof wire !== "object" || wire === null || typeof wire.message !== "string") {
    return new Error(`Malformed error received: ${JSON.stringify(wire)?.slice(0, 200)}`);
  }
  switch (wire.name) {
    case "PolicyDeniedError":
      return new PolicyDeniedError(wire.message);
    case "TimeoutError":
      return new TimeoutError(wire.message);
    case "ScriptError":
      return new ScriptError(wire.message);
    case "TypeError":
      return new TypeError(wire.message);
    case "RangeError":
      return new RangeError(wire.message);
    case "SyntaxError":
      return new SyntaxError(wire.message);
    default: {
      const e = new Error(wire.message);
      e.name = typeof wire.name === "string" && wire.name.length <= 64 ? wire.name : "Error";
      return e;
    }
  }
}
