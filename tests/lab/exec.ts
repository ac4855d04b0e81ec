/**
 * Running commands with a time limit and bounded output, and long-running processes whose output
 * is kept in a bounded ring (and, optionally, a size-capped log file) so a test can show what a
 * daemon said when something went wrong.
 *
 * @module
 */
import { killAfter } from "../../lib/process.ts";
import { readBoundedText } from "../../lib/streams.ts";

/** The result of {@linkcode run}. */
export interface RunResult {
  /** Exit code (`-1` when killed by a signal). */
  code: number;
  /** Standard output (at most `maxOutput` bytes kept). */
  stdout: string;
  /** Standard error (at most `maxOutput` bytes kept). */
  stderr: string;
  /** `true` when the time limit killed the command. */
  timedOut: boolean;
}

/** Options of {@linkcode run}. */
export interface RunOptions {
  /** Time limit in ms (default 10000); the command is killed with SIGKILL after it. */
  timeoutMs?: number;
  /** Throw when the exit code is not 0 (default `true`). */
  check?: boolean;
  /** Bytes of each output stream kept (default 1 MiB). */
  maxOutput?: number;
  /** Text written to standard input (default: none, stdin is closed). */
  stdin?: string;
}

/**
 * Runs a command to completion with a time limit.
 *
 * @param argv Program and arguments.
 * @param options Time limit, exit-code check, output bound, standard input.
 * @returns Exit code and output.
 * @throws {Error} When `check` is on and the command failed or timed out.
 *
 * @example
 * ```ts ignore
 * import { run } from "./exec.ts";
 * const r = await run(["ip", "netns", "list"], { timeoutMs: 2000 });
 * console.log(r.stdout);
 * ```
 */
export async function run(argv: string[], options: RunOptions = {}): Promise<RunResult> {
  const [program, ...args] = argv;
  if (program === undefined) throw new TypeError("Cannot run command: empty argument list");
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxOutput = options.maxOutput ?? 1 << 20;
  const child = new Deno.Command(program, {
    args,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const limit = killAfter(child, timeoutMs);
  try {
    if (options.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(options.stdin)).catch(() => {});
      await w.close().catch(() => {});
    }
    const [stdout, stderr, status] = await Promise.all([
      readBoundedText(child.stdout, maxOutput, { overflow: "drain" }).then((r) => r.text),
      readBoundedText(child.stderr, maxOutput, { overflow: "drain" }).then((r) => r.text),
      child.status,
    ]);
    const result: RunResult = {
      code: status.signal ? -1 : status.code,
      stdout,
      stderr,
      timedOut: limit.timedOut,
    };
    if ((options.check ?? true) && (result.timedOut || result.code !== 0)) {
      const why = result.timedOut ? `timed out after ${timeoutMs} ms` : `exit code ${result.code}`;
      throw new Error(`Command failed: ${argv.join(" ")}: ${why}: ${stderr.trim()}`);
    }
    return result;
  } finally {
    limit.clear();
  }
}

/** Options of {@linkcode ManagedProcess}. */
export interface SpawnOptions {
  /** Label used in messages (e.g. `h1/faild`). */
  label: string;
  /** Hard lifetime in ms (default 30 minutes): the process is SIGKILLed after it. */
  maxLifeMs?: number;
  /** Bytes of combined output kept in memory (default 256 KiB). */
  ringBytes?: number;
  /** Also append output to this file, up to `fileBytes` bytes. */
  logFile?: string;
  /** Cap of the log file in bytes (default 8 MiB). */
  fileBytes?: number;
  /** Called with each complete stdout line (for line protocols such as the probe). */
  onStdoutLine?: (line: string) => void;
  /** Keep stdin open as a pipe (closing it is a way to ask the child to stop). */
  stdin?: boolean;
}

/**
 * A long-running child process: output kept in a bounded ring, a hard lifetime, and signals.
 *
 * @example
 * ```ts ignore
 * import { ManagedProcess } from "./exec.ts";
 * const p = new ManagedProcess(["sleep", "60"], { label: "sleeper" });
 * await p.stop();
 * ```
 */
export class ManagedProcess {
  /** Label used in messages. */
  readonly label: string;
  /** Argument list it was started with. */
  readonly argv: string[];
  /** Its process id. */
  readonly pid: number;
  /** Resolves with the exit status once the process has exited and its output is drained. */
  readonly exited: Promise<Deno.CommandStatus>;
  #child: Deno.ChildProcess;
  #ring: string[] = [];
  #ringSize = 0;
  #ringMax: number;
  #file: Deno.FsFile | null = null;
  #fileLeft: number;
  #status: Deno.CommandStatus | null = null;
  #stdinWriter: WritableStreamDefaultWriter<Uint8Array> | null = null;

  /**
   * Starts the process.
   *
   * @param argv Program and arguments.
   * @param options Label, lifetime, output handling.
   */
  constructor(argv: string[], options: SpawnOptions) {
    const [program, ...args] = argv;
    if (program === undefined) throw new TypeError("Cannot spawn process: empty argument list");
    this.label = options.label;
    this.argv = argv;
    this.#ringMax = options.ringBytes ?? 256 * 1024;
    this.#fileLeft = options.fileBytes ?? 8 * 1024 * 1024;
    if (options.logFile) {
      this.#file = Deno.openSync(options.logFile, { create: true, append: true });
    }
    const child = new Deno.Command(program, {
      args,
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    if (options.stdin) this.#stdinWriter = child.stdin.getWriter();
    this.pid = child.pid;
    const timer = setTimeout(() => this.signal("SIGKILL"), options.maxLifeMs ?? 30 * 60_000);
    const out = this.#pump(child.stdout, "", options.onStdoutLine);
    const err = this.#pump(child.stderr, "! ", undefined);
    this.exited = (async () => {
      const [status] = await Promise.all([child.status, out, err]);
      clearTimeout(timer);
      this.#status = status;
      try {
        this.#file?.close();
      } catch {
        // Closed already.
      }
      this.#file = null;
      return status;
    })();
  }

  async #pump(
    stream: ReadableStream<Uint8Array>,
    mark: string,
    onLine: ((line: string) => void) | undefined,
  ): Promise<void> {
    const decoder = new TextDecoder();
    let partial = "";
    for await (const chunk of stream) {
      const text = partial + decoder.decode(chunk, { stream: true });
      const lines = text.split("\n");
      partial = lines.pop() ?? "";
      if (partial.length > 65536) partial = partial.slice(-65536);
      for (const line of lines) this.#record(mark + line, onLine ? () => onLine(line) : null);
    }
    if (partial) this.#record(mark + partial, onLine ? () => onLine(partial) : null);
  }

  #record(line: string, deliver: (() => void) | null): void {
    if (deliver) {
      try {
        deliver();
      } catch (e) {
        this.#push(`! line handler failed: ${(e as Error).message}`);
      }
      return;
    }
    this.#push(line);
  }

  #push(line: string): void {
    this.#ring.push(line);
    this.#ringSize += line.length + 1;
    while (this.#ringSize > this.#ringMax && this.#ring.length > 1) {
      this.#ringSize -= (this.#ring.shift() ?? "").length + 1;
    }
    if (this.#file && this.#fileLeft > 0) {
      const bytes = new TextEncoder().encode(line + "\n").subarray(0, this.#fileLeft);
      this.#fileLeft -= bytes.length;
      try {
        this.#file.writeSync(bytes);
      } catch {
        this.#fileLeft = 0;
      }
    }
  }

  /** `true` once the process has exited. */
  get done(): boolean {
    return this.#status !== null;
  }

  /** Exit status, or `null` while running. */
  get status(): Deno.CommandStatus | null {
    return this.#status;
  }

  /**
   * The last lines of output (stderr lines start with `! `).
   *
   * @param lines How many lines (default 40).
   * @returns The lines joined with newlines.
   */
  tail(lines = 40): string {
    return this.#ring.slice(-lines).join("\n");
  }

  /**
   * Sends a signal; does nothing when the process has exited.
   *
   * @param signal The signal.
   */
  signal(signal: Deno.Signal): void {
    if (this.#status) return;
    try {
      this.#child.kill(signal);
    } catch {
      // Exited in between.
    }
  }

  /**
   * Writes a line to the child's stdin (when opened with `stdin: true`).
   *
   * @param line Text without the newline.
   */
  async writeLine(line: string): Promise<void> {
    if (!this.#stdinWriter) throw new TypeError(`Cannot write to ${this.label}: stdin not piped`);
    await this.#stdinWriter.write(new TextEncoder().encode(line + "\n"));
  }

  /**
   * Stops the process: closes stdin, sends `signal` (default SIGTERM), SIGKILL after `graceMs`.
   *
   * @param options Signal and grace period (default 2000 ms).
   * @returns The exit status.
   */
  async stop(
    options: { signal?: Deno.Signal; graceMs?: number } = {},
  ): Promise<Deno.CommandStatus> {
    if (this.#stdinWriter) {
      const w = this.#stdinWriter;
      this.#stdinWriter = null;
      await w.close().catch(() => {});
    }
    if (!this.#status) {
      // A stopped process cannot handle SIGTERM; let it run so it can.
      this.signal("SIGCONT");
      this.signal(options.signal ?? "SIGTERM");
    }
    const grace = options.graceMs ?? 2000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.signal("SIGKILL");
        resolve();
      }, grace);
    });
    await Promise.race([this.exited, killed]);
    clearTimeout(timer);
    return await this.exited;
  }
}
