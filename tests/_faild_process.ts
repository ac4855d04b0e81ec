/**
 * Test helpers: run faild as a real process and the command-line tools as real processes.
 *
 * @module
 */

const ROOT = new URL("../", import.meta.url).pathname;

/** The command line that starts faild with the permissions it needs, and nothing more. */
export const FAILD_ARGS = [
  "run",
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-sys=hostname",
  `${ROOT}daemon/faild/faild.ts`,
];

/** The V8 flags of the `faild` task (small-memory profile, docs/performance.md). */
export const FAILD_V8_FLAGS = "--max-semi-space-size=1,--max-opt=2,--optimize-for-size";

/** A faild child process. */
export interface FaildProcess {
  /** The child. */
  child: Deno.ChildProcess;
  /** Its pid. */
  pid: number;
  /** The URL it printed. */
  url: string;
  /** Its log lines so far (stderr, bounded to the last 2000). */
  logs: string[];
  /** Sends SIGTERM and waits (SIGKILL after 10 s); returns the exit code. */
  stop(): Promise<number>;
  /** Sends SIGKILL and waits. */
  kill(): Promise<void>;
}

/**
 * Starts faild on a free loopback port and waits for its "faild listening on URL" line.
 *
 * @param args Extra faild arguments (`--listen 127.0.0.1:0` is added).
 * @param options `maxFiles` runs it under `ulimit -n` (through `sh`); `v8Flags` are given to
 * deno (e.g. {@linkcode FAILD_V8_FLAGS} to measure memory as the `faild` task runs it).
 * @returns The running process.
 */
export async function spawnFaild(
  args: string[],
  options: { maxFiles?: number; v8Flags?: string } = {},
): Promise<FaildProcess> {
  const flags = options.v8Flags ? [`--v8-flags=${options.v8Flags}`] : [];
  const full = [
    FAILD_ARGS[0]!,
    ...flags,
    ...FAILD_ARGS.slice(1),
    "--listen",
    "127.0.0.1:0",
    ...args,
  ];
  const child = new Deno.Command(options.maxFiles ? "sh" : Deno.execPath(), {
    args: options.maxFiles
      ? ["-c", `ulimit -n ${options.maxFiles} && exec "$0" "$@"`, Deno.execPath(), ...full]
      : full,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const logs: string[] = [];
  const stderrDone = (async () => {
    let rest = "";
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop() ?? "";
      logs.push(...parts);
      if (logs.length > 2000) logs.splice(0, logs.length - 2000);
      if (rest.length > 65536) rest = "";
    }
  })();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  let url: string | undefined;
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    while (url === undefined) {
      const chunk = await reader.read();
      if (chunk.done) break;
      out += chunk.value;
      const m = /faild listening on (\S+)\n/.exec(out);
      if (m) url = m[1];
      if (out.length > 65536) break;
    }
  } finally {
    clearTimeout(timer);
  }
  const stdoutDone = (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  let finished: Promise<number> | null = null;
  const wait = (): Promise<number> => {
    finished ??= (async () => {
      const status = await child.status;
      await Promise.all([stderrDone, stdoutDone]);
      return status.code;
    })();
    return finished;
  };
  if (url === undefined) {
    child.kill("SIGKILL");
    await wait();
    throw new Error(`faild did not start: ${out}\n${logs.join("\n")}`);
  }
  const signal = (sig: Deno.Signal) => {
    try {
      child.kill(sig);
    } catch {
      // Already exited.
    }
  };
  return {
    child,
    pid: child.pid,
    url,
    logs,
    async stop() {
      signal("SIGTERM");
      const t = setTimeout(() => signal("SIGKILL"), 10_000);
      try {
        return await wait();
      } finally {
        clearTimeout(t);
      }
    },
    async kill() {
      signal("SIGKILL");
      await wait();
    },
  };
}

/**
 * The resident memory of a process.
 *
 * @param pid The process.
 * @returns `VmRSS` in KiB, or `NaN` when the process is gone.
 */
export function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** The result of a CLI run. */
export interface CliResult {
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/**
 * Runs a tool of `scripts/` as a real process (30 s timeout), without a colour terminal.
 *
 * @param tool `failc` or `failstat`.
 * @param args Its arguments.
 * @param env Extra environment variables.
 * @returns Exit code and output.
 */
export async function runTool(
  tool: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/${tool}.ts`, ...args],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
