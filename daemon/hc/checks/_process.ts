/**
 * Runs a program with a fixed argv, a time limit (SIGTERM, then SIGKILL after a grace period)
 * and bounded output. Used by the `command` and `ping` checks and the `run` action.
 *
 * @module
 */
import { readBoundedText } from "../../../lib/streams.ts";

/** Most bytes of stdout and of stderr kept. */
export const MAX_OUTPUT_BYTES = 16 * 1024;

/** What a bounded run produced. */
export interface ProcessOutcome {
  /** Exit code, or `null` when killed by a signal. */
  code: number | null;
  /** The signal that ended it, if any. */
  signal: string | null;
  /** `true` when hc killed it for running too long (or an abort). */
  timedOut: boolean;
  /** The start of stdout. */
  stdout: string;
  /** The start of stderr. */
  stderr: string;
  /** How long it ran in ms. */
  durationMs: number;
}

/** Reads a child's pipe to its end, keeping the first bytes, until `cut` aborts. */
function drain(stream: ReadableStream<Uint8Array>, cut: AbortSignal): Promise<string> {
  return readBoundedText(stream, MAX_OUTPUT_BYTES, { overflow: "drain", signal: cut })
    .then((r) => r.text);
}

/**
 * Runs a program and waits for it, killing it when the time is up or the signal aborts.
 *
 * @param argv Program (absolute path) and arguments; no shell is involved.
 * @param options Time limit, abort signal, extra environment variables.
 * @returns The outcome.
 * @throws {Deno.errors.NotFound} When the program does not exist.
 *
 * @example
 * ```ts ignore
 * import { runBounded } from "./_process.ts";
 * console.log((await runBounded(["/usr/bin/true"], { timeoutMs: 1000 })).code); // 0
 * ```
 */
export async function runBounded(
  argv: readonly string[],
  options: { timeoutMs: number; signal?: AbortSignal; env?: Record<string, string> },
): Promise<ProcessOutcome> {
  const [program, ...args] = argv;
  if (program === undefined) throw new TypeError("Cannot run a program: the argv is empty");
  const started = performance.now();
  const child = new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(options.env ? { env: options.env } : {}),
  }).spawn();
  let timedOut = false;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const kill = (): void => {
    if (timedOut) return;
    timedOut = true;
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    killTimer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    }, 1000);
  };
  const timer = setTimeout(kill, options.timeoutMs);
  const onAbort = (): void => kill();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) kill();
  try {
    const cut = new AbortController();
    const out = drain(child.stdout, cut.signal);
    const err = drain(child.stderr, cut.signal);
    const status = await child.status;
    // A grandchild may keep the pipes open after the program ended: wait a little, then cut.
    const cutTimer = setTimeout(() => cut.abort(), 500);
    const [stdout, stderr] = await Promise.all([out, err]);
    clearTimeout(cutTimer);
    return {
      code: status.signal === null ? status.code : null,
      signal: status.signal,
      timedOut,
      stdout,
      stderr,
      durationMs: performance.now() - started,
    };
  } finally {
    clearTimeout(timer);
    clearTimeout(killTimer);
    options.signal?.removeEventListener("abort", onAbort);
  }
}
