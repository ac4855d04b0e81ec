/**
 * Host liveness, the pure part: the parser of iputils `ping -n -O -D` output lines and the
 * judgement of one peer's kernel from them. No I/O and no clock: the judgement counts the
 * sequence numbers ping itself reports unanswered, and the silence is measured with ping's own
 * timestamps (`-D`), so a stall of failsh's event loop never counts as the peer's silence (ping
 * keeps its own timing; its lines wait in the pipe, in order). The process side is
 * `./prober.ts`.
 *
 * @module
 */

/** One line of `ping -n -O -D` that matters. */
export type PingEvent =
  | {
    /** An echo reply. */
    kind: "reply";
    /** Its `icmp_seq`. */
    seq: number;
    /** ping's timestamp of the line, ms since epoch, or `null` without `-D`. */
    at: number | null;
    /** Round-trip time, ms. */
    rttMs: number | null;
  }
  | {
    /** An echo request ping reports unanswered (`-O`), or an ICMP error for it. */
    kind: "missing";
    /** Its `icmp_seq`. */
    seq: number;
    /** ping's timestamp of the line, ms since epoch, or `null` without `-D`. */
    at: number | null;
  };

const STAMP = /^\[(\d{1,12}(?:\.\d{1,9})?)\]\s*/;
const SEQ = /\bicmp_seq=(\d{1,5})\b/;
const RTT = /\btime=(\d+(?:\.\d+)?) ms\b/;

/**
 * Parses one line of `ping -n -O -D` (iputils) output.
 *
 * @param line One line, without its newline.
 * @returns The reply or missing request it reports, or `null` for any other line (the header,
 * statistics, warnings).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parsePingLine } from "./judge.ts";
 * assert.deepEqual(
 *   parsePingLine("[1764000000.250000] 64 bytes from 198.18.0.1: icmp_seq=7 ttl=64 time=0.045 ms"),
 *   { kind: "reply", seq: 7, at: 1764000000250, rttMs: 0.045 },
 * );
 * assert.deepEqual(
 *   parsePingLine("[1764000000.300000] no answer yet for icmp_seq=8"),
 *   { kind: "missing", seq: 8, at: 1764000000300 },
 * );
 * ```
 */
export function parsePingLine(line: string): PingEvent | null {
  let rest = line;
  let at: number | null = null;
  const stamp = STAMP.exec(rest);
  if (stamp) {
    at = Math.round(Number(stamp[1]) * 1000);
    rest = rest.slice(stamp[0].length);
  }
  const seqMatch = SEQ.exec(rest);
  if (!seqMatch) return null;
  const seq = Number(seqMatch[1]);
  if (seq > 65535) return null;
  if (rest.startsWith("no answer yet for ")) return { kind: "missing", seq, at };
  if (/^\d+ bytes from /.test(rest)) {
    const rtt = RTT.exec(rest);
    return { kind: "reply", seq, at, rttMs: rtt ? Number(rtt[1]) : null };
  }
  // "From 198.18.0.2 icmp_seq=3 Destination Host Unreachable" and other ICMP errors: the
  // request was not answered by the peer.
  if (rest.startsWith("From ")) return { kind: "missing", seq, at };
  return null;
}

/** What the judgement says of a peer's kernel. */
export type LivenessState = "unknown" | "alive" | "silent";

/** A peer's liveness as judged (what the decisions, the monitor and `/metrics` see). */
export interface LivenessStatus {
  /**
   * `unknown`: its kernel never answered this prober (ICMP filtered, or the prober is not
   * running): polls alone decide. `alive`: it answers. `silent`: it answered before and then
   * left `fall` consecutive echo requests unanswered.
   */
  state: LivenessState;
  /** Consecutive unanswered sequence numbers since the last reply. */
  unanswered: number;
  /**
   * How long the kernel has not answered, by ping's clock: from the last reply to the newest
   * line reporting a request unanswered (`unanswered` × interval without timestamps), ms.
   */
  silentMs: number;
  /** Round-trip time of the last reply, ms, or `null`. */
  rttMs: number | null;
  /** When the last reply was read (failsh's clock, ms since epoch), or `null`. */
  lastAnswerAt: number | null;
  /** Why the prober does not run, or `null` while it runs. */
  error: string | null;
}

/** Options of {@linkcode LivenessJudge}. */
export interface LivenessJudgeOptions {
  /** Time between echo requests, ms. */
  intervalMs: number;
  /** Consecutive unanswered requests that make an answering kernel silent. */
  fall: number;
}

/** Sequence numbers are 16 bits and wrap (at 10 ms, every 11 minutes). */
function seqAfter(a: number, b: number): number {
  return (a - b + 65536) % 65536;
}

/**
 * The judgement of one peer's kernel from one ping process's lines. Feed it every parsed line,
 * in order; it changes state only on lines, never on a clock.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { LivenessJudge } from "./judge.ts";
 * const judge = new LivenessJudge({ intervalMs: 10, fall: 3 });
 * judge.feed({ kind: "reply", seq: 1, at: 1000, rttMs: 0.1 }, 1000);
 * for (const seq of [2, 3, 4]) judge.feed({ kind: "missing", seq, at: 1000 + 10 * seq }, 0);
 * assert.equal(judge.status().state, "silent");
 * assert.equal(judge.status().silentMs, 40);
 * ```
 */
export class LivenessJudge {
  #opts: LivenessJudgeOptions;
  #state: LivenessState = "unknown";
  #lastReplySeq: number | null = null;
  #lastReplyAt: number | null = null;
  #unanswered = 0;
  #silentMs = 0;
  #rttMs: number | null = null;
  #lastAnswerAt: number | null = null;

  /**
   * Creates the judgement of a peer that has not answered yet.
   *
   * @param options Interval and fall.
   */
  constructor(options: LivenessJudgeOptions) {
    this.#opts = options;
  }

  /**
   * Takes one line of ping's output into account.
   *
   * @param event The parsed line.
   * @param readAt When failsh read it (its own clock; shown as the last answer's age only).
   * @returns Whether the state changed.
   */
  feed(event: PingEvent, readAt: number): boolean {
    const before = this.#state;
    if (event.kind === "reply") {
      const newer = this.#lastReplySeq === null ||
        (seqAfter(event.seq, this.#lastReplySeq) > 0 &&
          seqAfter(event.seq, this.#lastReplySeq) < 32768);
      this.#rttMs = event.rttMs;
      this.#lastAnswerAt = readAt;
      if (newer) {
        this.#lastReplySeq = event.seq;
        this.#lastReplyAt = event.at;
      }
      // Any reply, even a late one, shows the kernel answers.
      this.#unanswered = 0;
      this.#silentMs = 0;
      this.#state = "alive";
    } else if (this.#lastReplySeq !== null) {
      const gap = seqAfter(event.seq, this.#lastReplySeq);
      if (gap > 0 && gap < 32768 && gap > this.#unanswered) {
        this.#unanswered = gap;
        this.#silentMs = event.at !== null && this.#lastReplyAt !== null
          ? Math.max(0, event.at - this.#lastReplyAt)
          : gap * this.#opts.intervalMs;
      }
      if (this.#unanswered >= this.#opts.fall) this.#state = "silent";
    } else {
      // Never answered: count, but the host stays unknown (ICMP may be filtered).
      this.#unanswered++;
      this.#silentMs = this.#unanswered * this.#opts.intervalMs;
    }
    return this.#state !== before;
  }

  /**
   * The judgement now.
   *
   * @returns State, unanswered count, silence, RTT and last answer.
   */
  status(): LivenessStatus {
    return {
      state: this.#state,
      unanswered: this.#unanswered,
      silentMs: this.#silentMs,
      rttMs: this.#rttMs,
      lastAnswerAt: this.#lastAnswerAt,
      error: null,
    };
  }
}
