/**
 * The wire between failsh's supervisor and the sandboxed child that runs the script: the
 * messages both ends exchange, the values of the replies, and the line framing. Both ends import
 * this file, so it must stay loadable in the child: no `npm:` import and nothing that needs a
 * permission (see `docs/sandbox.md`, "The wire protocol").
 *
 * - child → supervisor, on stdout, each line prefixed with {@linkcode RPC_MAGIC}:
 *   `decl` (once, the {@linkcode ScriptDecl}), `fatal` (invalid declarations or a script that
 *   threw while loading), `result` / `error` (a handler's outcome), `req` (a privileged request of
 *   a context), `log`, `trapdone`.
 * - supervisor → child, on stdin: `invoke`, `trap`, `reply` (to a `req`).
 *
 * Anything else the script prints is script output, which the supervisor logs. The supervisor
 * trusts nothing the child writes: every message is checked on arrival.
 *
 * @module
 */
import type { HandlerInvocation, ScriptDecl, TrapEvent } from "./contract.ts";
import type { ServiceRecord, ServiceState } from "../lib/types.ts";
import type { WireError } from "./errors.ts";

/** Prefix of every RPC line the child writes on stdout. */
export const RPC_MAGIC = "\u001eFAILSH1 ";

/** Argument the supervisor passes to the script to tell it it is the sandboxed child. */
export const CHILD_FLAG = "--failsh-child";

/** Longest RPC line accepted either way, in characters. */
export const MAX_RPC_LINE = 1024 * 1024;

/** Longest message of `ctx.log`, in characters. */
export const MAX_LOG_MESSAGE = 4096;

/** The privileged requests a context can make. */
export type RequestOp = "poll" | "takeover" | "release" | "run" | "setState";

/** Every {@linkcode RequestOp}. */
export const REQUEST_OPS: readonly RequestOp[] = ["poll", "takeover", "release", "run", "setState"];

/** A message from the child to the supervisor. */
export type ChildMessage =
  | { t: "decl"; decl: ScriptDecl }
  | { t: "fatal"; problems: string[] }
  | { t: "result"; id: number; state: ServiceState }
  | { t: "error"; id: number; error: WireError }
  | { t: "req"; id: number; inv: number | null; op: RequestOp; args: Record<string, unknown> }
  | { t: "log"; inv: number | null; msg: string }
  | { t: "trapdone"; id: number; errors: WireError[] };

/** A message from the supervisor to the child. */
export type SupervisorMessage =
  | { t: "invoke"; id: number; call: HandlerInvocation; timeoutMs: number }
  | { t: "trap"; id: number; event: TrapEvent }
  | { t: "reply"; id: number; ok: true; value: unknown }
  | { t: "reply"; id: number; ok: false; error: WireError };

/**
 * A peer as `ctx.poll()` found it: the value of the reply to a `poll` request. (Not the
 * scheduler's `PollResult`, which is what a successful poll gives the scheduler.)
 */
export interface PeerPoll {
  /** The host's name. */
  host: string;
  /** Whether its faild answered (and, with a key, the answer was authentic). */
  reachable: boolean;
  /** Its services (empty when unreachable). */
  services: ServiceRecord[];
  /** Round-trip time in ms, or `null` when unreachable. */
  latencyMs: number | null;
  /** Why it was unreachable, or `null`. */
  error: string | null;
}

/** What a program run with `ctx.run()` did: the value of the reply to a `run` request. */
export interface RunResult {
  /** Exit code (128 + signal when killed, e.g. 137 after a timeout). */
  code: number;
  /** Captured stdout (at most 64 KiB). */
  stdout: string;
  /** Captured stderr (at most 64 KiB). */
  stderr: string;
  /** Whether output was cut at the bound. */
  truncated: boolean;
  /** Whether the program (and its children) were killed at the time limit. */
  timedOut: boolean;
  /** Wall time in ms. */
  durationMs: number;
}

/**
 * Splits a byte stream into lines, dropping (and reporting) lines longer than `max`. Both ends
 * read the other's lines with it: a line can never grow without bound.
 *
 * @param stream The bytes.
 * @param max Longest line kept, in characters.
 * @param onTooLong Told about each dropped line.
 * @returns The lines, without their newline.
 *
 * @example
 * ```ts
 * import { readLines } from "./rpc.ts";
 * import { deepEqual } from "node:assert/strict";
 * const stream = ReadableStream.from([new TextEncoder().encode("a\nbbbb\nc")]);
 * const lines: string[] = [];
 * for await (const line of readLines(stream, 3)) lines.push(line);
 * deepEqual(lines, ["a", "c"]);
 * ```
 */
export async function* readLines(
  stream: ReadableStream<Uint8Array>,
  max: number,
  onTooLong?: (length: number) => void,
): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  let skipping = false;
  let skipped = 0;
  for await (const chunk of stream) {
    buf += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (skipping) {
        onTooLong?.(skipped + line.length);
        skipping = false;
        skipped = 0;
        continue;
      }
      if (line.length > max) {
        onTooLong?.(line.length);
        continue;
      }
      yield line;
    }
    if (buf.length > max) {
      skipping = true;
      skipped += buf.length;
      buf = "";
    }
  }
  buf += decoder.decode();
  if (!skipping && buf.length > 0 && buf.length <= max) yield buf;
}
