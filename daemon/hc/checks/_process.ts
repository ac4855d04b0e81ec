/**
 * Runs a program with a fixed argv, a time limit (SIGTERM, then SIGKILL after a grace period)
 * and bounded output. Used by the `command` and `ping` checks and the `run` action.
 *
 * @module
 */

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

function drain(
  stream: ReadableStream<Uint8Array>,
  limit: number,
): { text: Promise<string>; cancel: () => void } {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  const text = (async () => {
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        if (size < limit) {
          const part = value.subarray(0, limit - size);
          chunks.push(part);
          size += part.length;
        }
        // Keep reading past the limit so the child never blocks on a full pipe.
      }
    } catch { /* the pipe broke or was cancelled: keep what we have */ }
    const out = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return new TextDecoder().decode(out);
  })();
  return { text, cancel: () => void reader.cancel().catch(() => {}) };
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
    const out = drain(child.stdout, MAX_OUTPUT_BYTES);
    const err = drain(child.stderr, MAX_OUTPUT_BYTES);
    const status = await child.status;
    // A grandchild may keep the pipes open after the program ended: wait a little, then cut.
    let cutTimer: ReturnType<typeof setTimeout> | undefined;
    const cut = new Promise<void>((resolve) => {
      cutTimer = setTimeout(() => {
        out.cancel();
        err.cancel();
        resolve();
      }, 500);
    });
    const [stdout, stderr] = await Promise.race([
      Promise.all([out.text, err.text]),
      cut.then(() => Promise.all([out.text, err.text])),
    ]);
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
