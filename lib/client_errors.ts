/**
 * The errors of `FaildClient` (re-exported by `lib/client.ts`): a refused or failed
 * answer, a refused key or untrusted answer, an unreachable faild. Their own module, so that a
 * tool maps them to exit codes (`lib/cli.ts`) without loading the client.
 *
 * @module
 */

/**
 * faild answered with an error status (4xx or 5xx) other than an authentication refusal.
 *
 * @example
 * ```ts
 * import { FaildError } from "./client_errors.ts";
 * import { deepEqual } from "node:assert/strict";
 * const e = new FaildError("Service not found: web", 404);
 * deepEqual(e.status, 404);
 * ```
 */
export class FaildError extends Error {
  /** The HTTP status faild answered with. */
  readonly status: number;

  /**
   * Creates the error.
   *
   * @param message What went wrong (usually faild's own sentence).
   * @param status The HTTP status.
   */
  constructor(message: string, status: number) {
    super(message);
    this.name = "FaildError";
    this.status = status;
  }
}

/**
 * faild refused the request's credentials (401 or 403), or its answer to a signed request was
 * unsigned or badly signed (so it cannot be trusted).
 *
 * @example
 * ```ts
 * import { AuthError, FaildError } from "./client_errors.ts";
 * import { deepEqual } from "node:assert/strict";
 * const e = new AuthError("Request refused: read-only community cannot write", 403);
 * deepEqual([e instanceof FaildError, e.status], [true, 403]);
 * ```
 */
export class AuthError extends FaildError {
  /**
   * faild refused the request as a replay (401, reason `replayed`); the client has started a
   * new nonce session, so the next request goes through.
   */
  replayed = false;

  /**
   * Creates the error.
   *
   * @param message What was refused.
   * @param status The HTTP status of the answer.
   */
  constructor(message: string, status: number) {
    super(message, status);
    this.name = "AuthError";
  }
}

/**
 * faild could not be reached: connection refused, reset, name not resolved, TLS failure or
 * timeout. failsh counts such a host as `FAIL` for all its services.
 *
 * @example
 * ```ts
 * import { PeerUnreachableError } from "./client_errors.ts";
 * const e = new PeerUnreachableError("http://127.0.0.1:7100", "connection refused");
 * console.log(e.message);
 * ```
 */
export class PeerUnreachableError extends Error {
  /** The faild URL that could not be reached. */
  readonly url: string;

  /**
   * Creates the error.
   *
   * @param url The faild URL.
   * @param detail Why it could not be reached.
   * @param options The underlying error, if any.
   */
  constructor(url: string, detail: string, options?: { cause?: unknown }) {
    super(`Cannot reach faild at ${url}: ${detail}`, options);
    this.name = "PeerUnreachableError";
    this.url = url;
  }
}
