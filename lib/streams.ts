/**
 * Bounded reads: a response body or a child's output read up to a limit, never more. What
 * happens at the limit is the caller's choice: keep the start (`truncate`), refuse the whole
 * (`error`), or keep the start and go on reading so a child never blocks on a full pipe
 * (`drain`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readBounded } from "./streams.ts";
 * const r = await readBounded(new Response("hello").body, 3);
 * assert.equal(new TextDecoder().decode(r.bytes), "hel");
 * assert.equal(r.truncated, true);
 * ```
 *
 * @module
 */

/** What {@linkcode readBounded} does when the stream holds more than the limit. */
export type OverflowPolicy = "truncate" | "error" | "drain";

/** Options of {@linkcode readBounded}. */
export interface ReadBoundedOptions {
  /**
   * At the limit: `truncate` keeps the first bytes and cancels the stream (default), `error`
   * cancels it and throws {@linkcode StreamTooLargeError}, `drain` keeps the first bytes and
   * reads the rest to its end (a child's pipe must be emptied or the child blocks).
   */
  overflow?: OverflowPolicy;
  /** Stops reading (cancels the stream) and returns what was read so far. */
  signal?: AbortSignal;
}

/** The bytes read and whether some were dropped. */
export interface BoundedBytes {
  /** At most the limit's bytes, from the start of the stream. */
  bytes: Uint8Array;
  /** Whether the stream held more than the limit. */
  truncated: boolean;
}

/** A stream held more than the limit and the caller asked for an error. */
export class StreamTooLargeError extends RangeError {
  /** The limit, in bytes. */
  readonly limit: number;

  /**
   * Creates the error.
   *
   * @param limit The limit that was passed.
   */
  constructor(limit: number) {
    super(`Cannot read the stream: it is larger than ${limit} bytes`);
    this.name = "StreamTooLargeError";
    this.limit = limit;
  }
}

/**
 * Joins byte chunks into one array.
 *
 * @param chunks The chunks, in order.
 * @returns One array (the only chunk itself when there is one).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { concatBytes } from "./streams.ts";
 * assert.deepStrictEqual(concatBytes([new Uint8Array([1]), new Uint8Array([2, 3])]), new Uint8Array([1, 2, 3]));
 * ```
 */
export function concatBytes(chunks: readonly Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  let size = 0;
  for (const c of chunks) size += c.byteLength;
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/**
 * Reads at most `limit` bytes of a stream.
 *
 * @param stream A response body or a child's stdout/stderr; `null` reads as empty.
 * @param limit Most bytes kept.
 * @param options What to do beyond the limit (default `truncate`).
 * @returns The bytes and whether more were there.
 * @throws {StreamTooLargeError} With `overflow: "error"`, when the stream holds more.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readBounded, StreamTooLargeError } from "./streams.ts";
 * await assert.rejects(readBounded(new Response("hello").body, 3, { overflow: "error" }), StreamTooLargeError);
 * ```
 */
export async function readBounded(
  stream: ReadableStream<Uint8Array> | null,
  limit: number,
  options: ReadBoundedOptions = {},
): Promise<BoundedBytes> {
  if (stream === null) return { bytes: new Uint8Array(0), truncated: false };
  const overflow = options.overflow ?? "truncate";
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let truncated = false;
  let cancel = false;
  const onAbort = () => void reader.cancel().catch(() => {});
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  try {
    while (true) {
      let next: ReadableStreamReadResult<Uint8Array>;
      try {
        next = await reader.read();
      } catch (error) {
        // A child's pipe that breaks keeps what was read; a body that breaks is an error.
        if (overflow === "drain") break;
        throw error;
      }
      const { value, done } = next;
      if (done) break;
      const room = limit - size;
      if (value.byteLength <= room) {
        chunks.push(value);
        size += value.byteLength;
        continue;
      }
      truncated = true;
      if (overflow === "error") {
        cancel = true;
        throw new StreamTooLargeError(limit);
      }
      if (room > 0) {
        chunks.push(value.subarray(0, room));
        size += room;
      }
      if (overflow === "truncate") {
        cancel = true;
        break;
      }
    }
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    if (cancel) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
  return { bytes: concatBytes(chunks.length === 0 ? [new Uint8Array(0)] : chunks), truncated };
}

/**
 * Reads at most `limit` bytes of a stream as UTF-8 text.
 *
 * @param stream The stream, or `null`.
 * @param limit Most bytes kept.
 * @param options What to do beyond the limit (default `truncate`).
 * @returns The text and whether more was there.
 * @throws {StreamTooLargeError} With `overflow: "error"`, when the stream holds more.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readBoundedText } from "./streams.ts";
 * assert.deepStrictEqual(await readBoundedText(new Response("hello").body, 10), { text: "hello", truncated: false });
 * ```
 */
export async function readBoundedText(
  stream: ReadableStream<Uint8Array> | null,
  limit: number,
  options: ReadBoundedOptions = {},
): Promise<{ text: string; truncated: boolean }> {
  const { bytes, truncated } = await readBounded(stream, limit, options);
  return { text: new TextDecoder().decode(bytes), truncated };
}
