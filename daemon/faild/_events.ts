/**
 * faild's server-sent event streams (`GET /v1/events`): one bounded queue per client, a change
 * sent to each caller that may read the service and signed with its key, keep-alive comments,
 * and a client that does not read dropped rather than buffered.
 *
 * @module
 */
import type { Logger } from "../../lib/log.ts";
import type { ChangeEvent } from "../../lib/types.ts";
import { sha256Hex } from "../../lib/hmac.ts";
import { RESPONSE_SIGNATURE_HEADER, responseSignature } from "../../lib/sign.ts";
import { accessFor, type CommunityRules } from "./community.ts";
import type { Metrics } from "./metrics.ts";
import { type HttpResponse, utf8Length } from "./http.ts";
import { type Caller, EMPTY_DIGEST, HttpError } from "./_auth.ts";

/** Most events queued for one stream client before it is dropped. */
export const MAX_QUEUED_EVENTS = 1024;

const encoder = new TextEncoder();

interface Stream {
  controller: ReadableStreamDefaultController<Uint8Array>;
  caller: Caller;
  closed: boolean;
}

/** What {@linkcode EventStreams} needs from the daemon. */
export interface EventsContext {
  /** The community rules in force. */
  rules: () => CommunityRules;
  /** The counters. */
  metrics: Metrics;
  /** The logger. */
  log: Logger;
  /** This faild's name. */
  host: string;
  /** Random id of this run. */
  bootId: string;
  /** Most concurrent event streams. */
  maxStreams: number;
  /** Interval of keep-alive comments, in ms. */
  keepaliveMs: number;
}

/** The open event streams. */
export class EventStreams {
  #ctx: EventsContext;
  #streams = new Set<Stream>();
  #keepalive: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  /**
   * Creates the set, empty.
   *
   * @param ctx Rules, counters, logger, names and limits.
   */
  constructor(ctx: EventsContext) {
    this.#ctx = ctx;
  }

  /** Open streams. */
  get size(): number {
    return this.#streams.size;
  }

  /** Ends every stream; new ones are refused. */
  close(): void {
    this.#closed = true;
    for (const s of [...this.#streams]) this.#endStream(s);
    clearInterval(this.#keepalive);
    this.#keepalive = undefined;
  }

  /**
   * Opens an event stream for a caller whose read right was checked.
   *
   * @param caller The caller (its key signs each event).
   * @param completed Settles when the connection closes.
   * @returns The streaming answer.
   */
  open(caller: Caller, completed: Promise<void>): HttpResponse {
    if (this.#closed) throw new HttpError(503, "Shutting down: faild is stopping");
    if (this.#streams.size >= this.#ctx.maxStreams) {
      throw new HttpError(
        503,
        `Too many event streams: ${this.#streams.size} open, the most --max-streams allows`,
        { "retry-after": "5" },
      );
    }
    let stream!: Stream;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        stream = { controller, caller, closed: false };
        this.#streams.add(stream);
        controller.enqueue(
          encoder.encode(`: faild ${this.#ctx.host} boot ${this.#ctx.bootId}\n\n`),
        );
      },
      cancel: () => {
        stream.closed = true;
        this.#streams.delete(stream);
        this.#stopKeepaliveIfIdle();
      },
    }, new CountQueuingStrategy({ highWaterMark: MAX_QUEUED_EVENTS }));
    // The connection closes when the client goes away: free the slot at once.
    completed.then(() => this.#endStream(stream), () => this.#endStream(stream));
    if (this.#keepalive === undefined) {
      this.#keepalive = setInterval(() => this.#sendKeepalive(), this.#ctx.keepaliveMs);
    }
    const headers: Record<string, string> = {
      "content-type": "text/event-stream",
      "cache-control": "no-store",
    };
    if (caller.community !== null && caller.nonce !== null) {
      headers[RESPONSE_SIGNATURE_HEADER] = responseSignature(
        caller.community,
        caller.nonce,
        200,
        EMPTY_DIGEST,
      );
    }
    this.#ctx.metrics.request("/v1/events", 200, 0, 0);
    return { status: 200, headers, body };
  }

  /** Sends a change to every stream whose caller may read the service. */
  broadcast(ev: ChangeEvent): void {
    if (this.#streams.size === 0) return;
    const data = JSON.stringify(ev);
    let digest: string | undefined;
    const rules = this.#ctx.rules();
    for (const s of [...this.#streams]) {
      if (accessFor(rules, ev.service.name, s.caller.keyId) === null) continue;
      let text = `event: change\nid: ${ev.seq}\ndata: ${data}\n`;
      if (s.caller.community !== null && s.caller.nonce !== null) {
        digest ??= sha256Hex(data);
        const sig = responseSignature(s.caller.community, s.caller.nonce, 200, digest);
        text += `sig: ${sig}\n`;
      }
      text += "\n";
      if (this.#enqueue(s, text)) this.#ctx.metrics.streamed(utf8Length(text));
    }
  }

  #enqueue(s: Stream, text: string): boolean {
    if (s.closed) return false;
    try {
      s.controller.enqueue(encoder.encode(text));
    } catch {
      this.#endStream(s);
      return false;
    }
    if ((s.controller.desiredSize ?? 0) <= 0) {
      this.#ctx.log.warn("events", "dropping a stream whose client does not read", {
        key: s.caller.keyId,
      });
      this.#endStream(s);
      return false;
    }
    return true;
  }

  #sendKeepalive(): void {
    for (const s of [...this.#streams]) this.#enqueue(s, ": keepalive\n\n");
    this.#stopKeepaliveIfIdle();
  }

  #endStream(s: Stream): void {
    if (!s.closed) {
      s.closed = true;
      try {
        s.controller.close();
      } catch {
        // Already closed or errored.
      }
    }
    this.#streams.delete(s);
    this.#stopKeepaliveIfIdle();
  }

  #stopKeepaliveIfIdle(): void {
    if (this.#streams.size === 0 && this.#keepalive !== undefined) {
      clearInterval(this.#keepalive);
      this.#keepalive = undefined;
    }
  }
}
