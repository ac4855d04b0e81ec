/**
 * Value parsers and I/O helpers shared by hc's check kinds.
 *
 * @module
 */
import { isAbsolute, join } from "node:path";

/**
 * The durations an Hcfile accepts (`interval=`, `timeout=`, `max-latency=`), for `parseDuration`
 * of `lib/types.ts`, the project's one duration grammar: 1 ms to 24 h.
 */
export const HC_DURATION: { readonly min: number; readonly max: number } = {
  min: 1,
  max: 86_400_000,
};

/**
 * Parses a whole number within bounds.
 *
 * @param text The number text.
 * @param options Smallest and largest accepted values.
 * @returns The number.
 * @throws {RangeError} When it is not a whole number in range.
 *
 * @example
 * ```ts
 * import { parseInteger } from "./_util.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(parseInteger("3", { min: 1, max: 100 }), 3);
 * ```
 */
export function parseInteger(text: string, options: { min: number; max: number }): number {
  if (!/^[0-9]{1,9}$/.test(text)) {
    throw new RangeError(
      `"${text}" is not a whole number: use ${options.min} to ${options.max}`,
    );
  }
  const n = Number(text);
  if (n < options.min || n > options.max) {
    throw new RangeError(`${n} is out of range: use ${options.min} to ${options.max}`);
  }
  return n;
}

/**
 * Parses `/pattern/flags` into a regular expression.
 *
 * @param text The regex text, slashes included.
 * @returns The regular expression.
 * @throws {SyntaxError} When it lacks slashes or does not compile.
 *
 * @example
 * ```ts
 * import { parseRegex } from "./_util.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(parseRegex("/ok/i").test("OK"), true);
 * ```
 */
export function parseRegex(text: string): RegExp {
  const m = /^\/(.*)\/([imsu]*)$/s.exec(text);
  if (!m) throw new SyntaxError(`"${text}" is not a regex: write it as /pattern/ or /pattern/i`);
  try {
    return new RegExp(m[1] ?? "", m[2]);
  } catch (e) {
    throw new SyntaxError(`"${text}" does not compile: ${(e as Error).message}`);
  }
}

/**
 * Parses a host name or IP address (for `ping`, `tcp`, `smtp`).
 *
 * @param text The host.
 * @returns The host.
 * @throws {RangeError} When it contains anything else (spaces, options such as `-f`).
 *
 * @example
 * ```ts
 * import { parseHost } from "./_util.ts";
 * console.log(parseHost("198.18.0.1"));
 * ```
 */
export function parseHost(text: string): string {
  if (!/^[A-Za-z0-9_][A-Za-z0-9._:-]{0,252}$/.test(text)) {
    throw new RangeError(`"${text}" is not a host: use a host name or an IP address`);
  }
  return text;
}

/**
 * Parses a port number.
 *
 * @param text The port text.
 * @returns The port, 1 to 65535.
 * @throws {RangeError} When out of range.
 *
 * @example
 * ```ts
 * import { parsePort } from "./_util.ts";
 * console.log(parsePort("25"));
 * ```
 */
export function parsePort(text: string): number {
  return parseInteger(text, { min: 1, max: 65535 });
}

/**
 * Rejects when a signal aborts: race it against an operation that cannot be cancelled itself.
 *
 * @param signal The signal.
 * @returns A promise that only ever rejects, and a function to stop listening.
 *
 * @example
 * ```ts
 * import { abortPromise } from "./_util.ts";
 * const { promise, dispose } = abortPromise(new AbortController().signal);
 * promise.catch(() => {});
 * dispose();
 * ```
 */
export function abortPromise(
  signal: AbortSignal,
): { promise: Promise<never>; dispose: () => void } {
  let onAbort = (): void => {};
  const promise = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason ?? new Error("Aborted"));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  promise.catch(() => {});
  return { promise, dispose: () => signal.removeEventListener("abort", onAbort) };
}

/**
 * A short text for an error: its message, with the error kind when useful.
 *
 * @param error Anything thrown.
 * @returns One line.
 *
 * @example
 * ```ts
 * import { errorText } from "./_util.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(errorText(new Error("boom")), "boom");
 * ```
 */
export function errorText(error: unknown): string {
  if (error instanceof DOMException && error.name === "TimeoutError") return "timed out";
  if (error instanceof Error) {
    if (error.name === "TimeoutError") return "timed out";
    const first = error.message.split("\n")[0] || error.name;
    const cause = error.cause instanceof Error ? error.cause.message.split("\n")[0] : "";
    if (!cause || first.includes(cause)) return first;
    const short = cause.replace(/^error sending request for url \([^)]*\): /, "");
    return first === "fetch failed" ? short : `${first}: ${short}`;
  }
  return String(error);
}

/**
 * Resolves a possibly relative path against a directory.
 *
 * @param base The directory.
 * @param path The path.
 * @returns An absolute path when `base` is absolute.
 *
 * @example
 * ```ts
 * import { resolvePath } from "./_util.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(resolvePath("/etc/hc", "ca.pem"), "/etc/hc/ca.pem");
 * ```
 */
export function resolvePath(base: string, path: string): string {
  return isAbsolute(path) ? path : join(base, path);
}
