/**
 * The one server-sent events parser of the project (faild's change events, failsh's monitor
 * stream, failmon's aggregate), built on `eventsource-parser` and bounded: an event, or a line
 * that never ends, larger than the limit is refused instead of growing the buffer.
 *
 * Fields other than `event`, `data`, `id` and `retry` (faild signs each event in a `sig:` field)
 * are kept in {@linkcode SseEvent.fields}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SseParser } from "./sse.ts";
 * const parser = new SseParser();
 * assert.deepStrictEqual(parser.push("event: change\ndata: {}\nsig: abc\n"), []);
 * const [event] = parser.push("\n");
 * assert.equal(event?.event, "change");
 * assert.equal(event?.fields.sig, "abc");
 * ```
 *
 * @module
 */
import { createParser, type EventSourceParser, type ParseError } from "eventsource-parser";

/** One dispatched server-sent event. */
export interface SseEvent {
  /** The `event:` field, `message` when absent. */
  event: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
  /** The last `id:` field seen on the stream, or `null`. */
  id: string | null;
  /** Other fields of the event (the last value of each), e.g. `sig`. */
  fields: Record<string, string>;
}

/** Options of {@linkcode SseParser}. */
export interface SseParserOptions {
  /** Largest event (its lines, data included) accepted, in characters (default 8 Mi). */
  maxEventChars?: number;
  /** Words naming the stream in errors (default `the event stream`). */
  what?: string;
}

/** Default largest event the parser accepts, in characters. */
export const DEFAULT_MAX_EVENT_CHARS = 8 * 1024 * 1024;

/** An incremental, bounded parser of the `text/event-stream` format. */
export class SseParser {
  #parser: EventSourceParser;
  #max: number;
  #what: string;
  /** The last incomplete line: the library is only ever fed whole lines. */
  #partial = "";
  /** Characters of the current event's other fields. */
  #fieldChars = 0;
  #overflow = false;
  #fields: Record<string, string> = {};
  #lastId: string | null = null;
  #out: SseEvent[] = [];

  /**
   * Creates a parser.
   *
   * @param options The largest event accepted and the stream's name for errors.
   */
  constructor(options: SseParserOptions = {}) {
    this.#max = options.maxEventChars ?? DEFAULT_MAX_EVENT_CHARS;
    this.#what = options.what ?? "the event stream";
    this.#parser = createParser({
      // The library bounds the data of the event being read; this class bounds the rest.
      maxBufferSize: this.#max,
      onEvent: (e) => {
        if (e.id !== undefined) this.#lastId = e.id;
        this.#out.push({
          event: e.event ?? "message",
          data: e.data,
          id: this.#lastId,
          fields: this.#fields,
        });
        this.#fields = {};
        this.#fieldChars = 0;
      },
      onError: (e: ParseError) => {
        if (e.type === "max-buffer-size-exceeded") this.#overflow = true;
        else if (e.type === "unknown-field" && e.field !== undefined && e.field !== "") {
          this.#fields[e.field] = e.value ?? "";
          this.#fieldChars += e.field.length + (e.value?.length ?? 0);
        }
      },
    });
  }

  /**
   * Feeds decoded text and returns the events it completed.
   *
   * @param chunk The next piece of the stream, split anywhere.
   * @returns The events dispatched by this chunk, in order.
   * @throws {RangeError} When an event or a line exceeds the size limit (the parser is then
   * reset and can be fed again).
   */
  push(chunk: string): SseEvent[] {
    const text = this.#partial + chunk;
    const end = Math.max(text.lastIndexOf("\n"), text.lastIndexOf("\r"));
    this.#partial = text.slice(end + 1);
    if (end >= 0) this.#parser.feed(text.slice(0, end + 1));
    if (this.#overflow || this.#partial.length + this.#fieldChars > this.#max) {
      this.reset();
      throw new RangeError(`Cannot read ${this.#what}: an event exceeds ${this.#max} characters`);
    }
    const out = this.#out;
    this.#out = [];
    return out;
  }

  /** Forgets any partial line and event (used after a reconnect). */
  reset(): void {
    this.#parser.reset();
    this.#partial = "";
    this.#overflow = false;
    this.#fields = {};
    this.#fieldChars = 0;
    this.#out = [];
  }
}
