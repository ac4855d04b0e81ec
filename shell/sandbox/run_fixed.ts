/**
 * Running a program with a fixed argv for failsh's supervisor: a time limit (its whole process
 * group killed on timeout), bounded output, and a one-line description of the outcome for the
 * audit log.
 *
 * @module
 */
/** Largest captured stdout or stderr of a program, in bytes (the rest is dropped). */
export const DEFAULT_MAX_OUTPUT = 64 * 1024;

/** Time limit of one `ip` command, in ms. */
export const IP_TIMEOUT_MS = 5_000;

/** The outcome of {@linkcode runFixed}. */
export interface RunOutcome {
  /** Exit code (128 + signal number when killed by a signal, -1 if it could not start). */
  code: number;
  /** The signal that ended it, if any. */
  signal: string | null;
  /** Captured stdout (UTF-8, at most `maxOutput` bytes). */
  stdout: string;
  /** Captured stderr (UTF-8, at most `maxOutput` bytes). */
  stderr: string;
  /** Whether output was cut at `maxOutput`. */
  truncated: boolean;
  /** Whether it was killed at its time limit. */
  timedOut: boolean;
  /** Whether it was killed because `signal` aborted. */
  aborted: boolean;
  /** Wall time in ms. */
  durationMs: number;
}

/** Options of {@linkcode runFixed}. */
export interface RunFixedOptions {
  /** Time limit in ms; the process group is killed (SIGKILL) after it. */
  timeoutMs: number;
  /** Largest captured stdout and stderr, each, in bytes (default 64 KiB). */
  maxOutput?: number;
  /** Aborting kills the process group too. */
  signal?: AbortSignal;
  /** Environment (the supervisor's is never passed); default `PATH` and `LANG=C` only. */
  env?: Record<string, string>;
  /** Working directory (default `/`). */
  cwd?: string;
  /**
   * Run the program in its own session (`setsid`, so a timeout kills its whole process group)
   * with a parent-death signal (`setpriv --pdeathsig KILL`, so it dies with failsh). Default
   * `true`. `false` starts the program directly, saving the two extra `exec()`s (about 1.5 ms on
   * the takeover path): only for programs that do not fork and end on their own (`ip`).
   */
  isolate?: boolean;
}

const SETSID_CANDIDATES = ["/usr/bin/setsid", "/bin/setsid"];

/**
 * The first of the paths that exists (a program's usual places).
 *
 * @param candidates The paths, in order.
 * @returns The path, or `null` when none exists.
 */
export function firstExisting(candidates: string[]): string | null {
  for (const c of candidates) {
    try {
      if (Deno.statSync(c).isFile) return c;
    } catch {
      // try the next one
    }
  }
  return null;
}

let setsidPath: string | null | undefined;

const SETPRIV_CANDIDATES = ["/usr/bin/setpriv", "/bin/setpriv"];

let setprivPath: string | null | undefined;

async function readBounded(
  stream: ReadableStream<Uint8Array>,
  max: number,
): Promise<{ bytes: Uint8Array; truncated: boolean; reader: ReadableStreamDefaultReader }> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let truncated = false;
  const result = { bytes: new Uint8Array(), truncated: false, reader };
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      if (size < max) {
        const take = value.subarray(0, max - size);
        chunks.push(take);
        size += take.length;
        if (take.length < value.length) truncated = true;
      } else {
        truncated = true;
      }
    }
  } catch {
    // cancelled or broken pipe: keep what we have
  }
  const bytes = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    bytes.set(c, off);
    off += c.length;
  }
  result.bytes = bytes;
  result.truncated = truncated;
  return result;
}

/**
 * Runs an executable with a fixed argument list (no shell), a clean environment, stdin closed,
 * bounded output and a time limit. The program runs in its own session (`setsid`), so on timeout
 * or abort the whole process group is killed, not just the program; and with a parent-death
 * signal (`setpriv --pdeathsig KILL`), so it does not outlive failsh.
 *
 * @param path Absolute path of the executable.
 * @param args Its arguments.
 * @param options Time limit, output bound, abort signal, environment, working directory.
 * @returns The outcome; a program that cannot be started gives `code` -1 and the reason in
 *   `stderr` rather than throwing.
 *
 * @example
 * ```ts
 * import { runFixed } from "./netops.ts";
 * import { deepEqual } from "node:assert/strict";
 * const r = await runFixed("/bin/echo", ["hello"], { timeoutMs: 5000 });
 * deepEqual([r.code, r.stdout], [0, "hello\n"]);
 * ```
 */
export async function runFixed(
  path: string,
  args: readonly string[],
  options: RunFixedOptions,
): Promise<RunOutcome> {
  const started = performance.now();
  const max = options.maxOutput ?? DEFAULT_MAX_OUTPUT;
  const isolate = options.isolate ?? true;
  if (setsidPath === undefined) setsidPath = firstExisting(SETSID_CANDIDATES);
  if (setprivPath === undefined) setprivPath = firstExisting(SETPRIV_CANDIDATES);
  const setsid = isolate ? setsidPath : null;
  // setsid: its own process group, killed whole; setpriv --pdeathsig: killed if failsh dies.
  const argv = [
    ...(setsid ? [setsid] : []),
    ...(isolate && setprivPath ? [setprivPath, "--pdeathsig", "KILL", "--"] : []),
    path,
    ...args,
  ];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(argv[0] as string, {
      args: argv.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
      env: options.env ?? { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" },
      cwd: options.cwd ?? "/",
    }).spawn();
  } catch (e) {
    return {
      code: -1,
      signal: null,
      stdout: "",
      stderr: `Cannot start ${path}: ${(e as Error).message}`,
      truncated: false,
      timedOut: false,
      aborted: false,
      durationMs: performance.now() - started,
    };
  }
  const pid = child.pid;
  let timedOut = false;
  let aborted = false;
  let exited = false;
  const killGroup = () => {
    if (exited) return;
    if (setsid) {
      try {
        Deno.kill(-pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup();
  }, Math.max(1, options.timeoutMs));
  const onAbort = () => {
    aborted = true;
    killGroup();
  };
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener("abort", onAbort, { once: true });

  const out = readBounded(child.stdout, max);
  const err = readBounded(child.stderr, max);
  const status = await child.status;
  exited = true;
  clearTimeout(timer);
  options.signal?.removeEventListener("abort", onAbort);
  // A background grandchild may keep the pipes open: wait a little, then stop reading.
  let drainTimer: ReturnType<typeof setTimeout> | undefined;
  const drained = Promise.all([out, err]);
  const late = await Promise.race([
    drained.then(() => false),
    new Promise<boolean>((resolve) => {
      drainTimer = setTimeout(() => resolve(true), 300);
    }),
  ]);
  clearTimeout(drainTimer);
  if (late) {
    // Cancel the pending reads; what was read so far is kept.
    await Promise.allSettled([child.stdout.cancel(), child.stderr.cancel()]);
  }
  const [o, e] = await drained;
  const dec = new TextDecoder();
  return {
    code: status.code,
    signal: status.signal ?? null,
    stdout: dec.decode(o.bytes),
    stderr: dec.decode(e.bytes),
    truncated: o.truncated || e.truncated,
    timedOut,
    aborted,
    durationMs: Math.round(performance.now() - started),
  };
}

/**
 * One line about how a program ended, for the audit log and error messages.
 *
 * @param r The outcome.
 * @returns The text.
 */
export function describeOutcome(r: RunOutcome): string {
  if (r.timedOut) return `killed after its time limit (${r.durationMs} ms)`;
  if (r.aborted) return `killed on abort after ${r.durationMs} ms`;
  if (r.code === -1) return r.stderr;
  const err = r.stderr.trim().split("\n").slice(-2).join(" / ").slice(0, 300);
  return `exit code ${r.code} in ${r.durationMs} ms${err ? `: ${err}` : ""}`;
}
