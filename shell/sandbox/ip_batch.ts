/**
 * A long-lived `ip -force -batch -` for the supervisor's address changes: one command line per
 * request, no process started on the takeover path.
 *
 * How an answer is read: `ip` in batch mode prints nothing on stdout for `addr add` / `addr del`,
 * and on stderr prints the error of a failed command followed by `Command failed -:LINE`. After
 * every request the driver writes a **sentinel** line, an object name no `ip` object starts with
 * (`_failsh_sentinel`), which always fails with `Object "_failsh_sentinel" is unknown…` and
 * `Command failed -:LINE+1`. stderr is unbuffered and written in order, so everything on stderr
 * between the previous sentinel's `Command failed` and this one's belongs to the request, and the
 * request failed exactly when a `Command failed -:LINE` for its own line is among it. `-force`
 * keeps `ip` reading after a failed line.
 *
 * Bounds: one request on the wire at a time, at most {@linkcode MAX_QUEUED} waiting, each line
 * of stderr cut at {@linkcode MAX_LINE} characters and at most {@linkcode MAX_ERROR_LINES} kept per
 * request, a time limit per request (the child is killed when it is reached). A line that never
 * reached a live child (its pipe broken, or its exit seen before the write completed) did not run
 * and goes once more, first in line, to a fresh child; one that reached the pipe fails with
 * {@linkcode IpBatchUnavailableError} when the child dies or times out (it may have run). A dead
 * child is restarted at the next request; after {@linkcode MAX_DEATHS} deaths within
 * {@linkcode DEATH_WINDOW_MS} the batch stays down for that window and every request fails with
 * {@linkcode IpBatchUnavailableError}, which the caller answers by spawning `ip` as before.
 *
 * Arguments are checked before they reach the batch: `ip -batch` splits lines on blanks, honours
 * quotes, `#` comments and `\` continuations, so an argument with any of those (or a newline)
 * could add a command or shift the line numbers; only `[A-Za-z0-9_.:/@+-]` is accepted.
 *
 * @module
 */

/** Requests waiting behind the one on the wire, at most. */
export const MAX_QUEUED = 64;

/** Longest stderr line kept, in characters (the rest of the line is dropped). */
export const MAX_LINE = 1024;

/** stderr lines kept for one request's error. */
export const MAX_ERROR_LINES = 8;

/** Deaths (exit, kill at a time limit, broken pipe) that disable the batch for a while. */
export const MAX_DEATHS = 3;

/** The window of {@linkcode MAX_DEATHS}, and how long the batch then stays down, in ms. */
export const DEATH_WINDOW_MS = 60_000;

/** Default time limit of one request, in ms. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 2_000;

/** The sentinel object: no `ip` object name starts with `_`. */
export const SENTINEL = "_failsh_sentinel";

const SAFE_ARG = /^[A-Za-z0-9_.:/@+-]{1,64}$/;

/** The batch child cannot answer (not started, died, timed out, disabled); spawn `ip` instead. */
export class IpBatchUnavailableError extends Error {
  /**
   * Creates the error.
   *
   * @param message Why the batch could not answer.
   */
  constructor(message: string) {
    super(message);
    this.name = "IpBatchUnavailableError";
  }
}

/** The answer of one command line. */
export interface IpBatchAnswer {
  /** Whether `ip` ran the command without error. */
  ok: boolean;
  /** What `ip` printed on stderr for it (empty when it succeeded). */
  stderr: string;
  /** Wall time from writing the line to reading its sentinel, in ms. */
  durationMs: number;
}

/** The streams of a batch child (a real `ip`, or a fake in tests). */
export interface IpBatchChild {
  /** Where command lines are written. */
  stdin: WritableStream<Uint8Array>;
  /** Where `ip` prints errors and the sentinel's answers. */
  stderr: ReadableStream<Uint8Array>;
  /** Settles when the child has exited. */
  status: Promise<{ code: number; signal: string | null }>;
  /** Kills the child (SIGKILL). */
  kill(): void;
}

/** Options of {@linkcode IpBatch}. */
export interface IpBatchOptions {
  /** The command: `[ip, "-force", "-batch", "-"]` by default (`-n NETNS` added by the caller). */
  argv?: readonly string[];
  /** Starts a child (tests pass fakes); by default `argv` with a clean environment. */
  spawn?: () => IpBatchChild;
  /** Time limit of one request, in ms. */
  timeoutMs?: number;
  /** The clock, ms (tests). */
  now?: () => number;
}

function spawnReal(argv: readonly string[]): IpBatchChild {
  const child = new Deno.Command(argv[0] as string, {
    args: argv.slice(1),
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
    clearEnv: true,
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" },
    cwd: "/",
  }).spawn();
  return {
    stdin: child.stdin,
    stderr: child.stderr,
    status: child.status.then((s) => ({ code: s.code, signal: s.signal ?? null })),
    kill: () => {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    },
  };
}

/**
 * Checks the arguments of one batch line.
 *
 * @param args The arguments (`["addr", "add", "198.18.0.100/24", "dev", "eth0"]`).
 * @returns The line, without its newline.
 * @throws {TypeError} An argument that is empty, too long, or has a character outside
 *   `[A-Za-z0-9_.:/@+-]`.
 *
 * @example
 * ```ts
 * import { batchLine } from "./ip_batch.ts";
 * console.log(batchLine(["addr", "add", "198.18.0.100/24", "dev", "eth0"]));
 * ```
 */
export function batchLine(args: readonly string[]): string {
  if (args.length === 0 || args.length > 16) {
    throw new TypeError(`Cannot send to ip -batch: ${args.length} arguments (1 to 16 allowed)`);
  }
  for (const [i, a] of args.entries()) {
    if (!SAFE_ARG.test(a)) {
      throw new TypeError(
        `Cannot send to ip -batch: argument ${i + 1} ${
          JSON.stringify(a.slice(0, 80))
        } is not 1 to 64 characters of [A-Za-z0-9_.:/@+-]`,
      );
    }
  }
  return args.join(" ");
}

interface Pending {
  line: string;
  /** Already sent once to a child whose pipe was broken (so not run): not retried again. */
  retried?: boolean;
  resolve: (a: IpBatchAnswer) => void;
  reject: (e: Error) => void;
}

interface Current extends Pending {
  /** The line reached the pipe (from then on, a death leaves it unknown whether it ran). */
  written: boolean;
  requestLine: number;
  sentinelLine: number;
  errors: string[];
  failed: boolean;
  started: number;
  timer: ReturnType<typeof setTimeout>;
}

interface Running {
  child: IpBatchChild;
  writer: WritableStreamDefaultWriter<Uint8Array>;
  line: number;
  dead: boolean;
}

/**
 * The long-lived `ip -force -batch -` (see the module doc).
 *
 * @example
 * ```ts ignore
 * import { IpBatch } from "./ip_batch.ts";
 * const batch = new IpBatch({ argv: ["/usr/sbin/ip", "-force", "-batch", "-"] });
 * const a = await batch.run(["addr", "add", "198.18.0.100/24", "dev", "eth0"]);
 * console.log(a.ok, a.stderr);
 * await batch.close();
 * ```
 */
export class IpBatch {
  #spawn: () => IpBatchChild;
  #timeoutMs: number;
  #now: () => number;
  #running: Running | null = null;
  #queue: Pending[] = [];
  #current: Current | null = null;
  #deaths: number[] = [];
  #downUntil = 0;
  #lastDeath = "";
  #closed = false;
  #readers = new Set<Promise<void>>();

  /**
   * Creates the batch; the child starts at {@linkcode IpBatch.start} or the first request.
   *
   * @param options Command, spawner, time limit, clock.
   */
  constructor(options: IpBatchOptions = {}) {
    const argv = options.argv ?? ["/usr/sbin/ip", "-force", "-batch", "-"];
    this.#spawn = options.spawn ?? (() => spawnReal(argv));
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Whether a child is running now. */
  get running(): boolean {
    return this.#running !== null && !this.#running.dead;
  }

  /**
   * Starts the child ahead of the first request (so that request pays no start-up).
   *
   * @throws {IpBatchUnavailableError} When it cannot start, or is down after repeated deaths.
   */
  start(): void {
    this.#ensure();
  }

  /**
   * Runs one command line.
   *
   * @param args The arguments of `ip` after the global options.
   * @returns Its answer (a failed command is `ok: false` with `ip`'s error text).
   * @throws {TypeError} An argument that could change the batch (see {@linkcode batchLine}).
   * @throws {RangeError} {@linkcode MAX_QUEUED} requests already waiting.
   * @throws {IpBatchUnavailableError} The child could not answer (died, timed out, down): the
   *   command may or may not have run.
   */
  run(args: readonly string[]): Promise<IpBatchAnswer> {
    let line: string;
    try {
      line = batchLine(args);
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.#closed) {
      return Promise.reject(new IpBatchUnavailableError("Cannot use ip -batch: it is closed"));
    }
    if (this.#queue.length >= MAX_QUEUED) {
      return Promise.reject(
        new RangeError(`Cannot queue for ip -batch: ${MAX_QUEUED} requests already waiting`),
      );
    }
    return new Promise<IpBatchAnswer>((resolve, reject) => {
      this.#queue.push({ line, resolve, reject });
      this.#next();
    });
  }

  /** Ends the child (stdin closed, then killed) and fails whatever still waits. */
  async close(): Promise<void> {
    this.#closed = true;
    const err = new IpBatchUnavailableError("Cannot use ip -batch: it is closed");
    for (const p of this.#queue.splice(0)) p.reject(err);
    const r = this.#running;
    if (r !== null) {
      this.#kill(r, "closed");
      await r.child.status.catch(() => {});
    }
    await Promise.allSettled([...this.#readers]);
  }

  #ensure(): Running {
    if (this.#running !== null && !this.#running.dead) return this.#running;
    const t = this.#now();
    if (t < this.#downUntil) {
      throw new IpBatchUnavailableError(
        `Cannot use ip -batch: it died ${MAX_DEATHS} times within ${
          DEATH_WINDOW_MS / 1000
        } s (last: ${this.#lastDeath}); down for ${Math.ceil((this.#downUntil - t) / 1000)} s`,
      );
    }
    let child: IpBatchChild;
    try {
      child = this.#spawn();
    } catch (e) {
      this.#died(`could not start: ${(e as Error).message}`);
      throw new IpBatchUnavailableError(`Cannot start ip -batch: ${(e as Error).message}`);
    }
    const r: Running = { child, writer: child.stdin.getWriter(), line: 0, dead: false };
    this.#running = r;
    const reader = this.#read(r);
    this.#readers.add(reader);
    reader.finally(() => this.#readers.delete(reader));
    child.status.then(
      (s) => this.#onExit(r, `exited with code ${s.code}${s.signal ? ` (${s.signal})` : ""}`),
      (e) => this.#onExit(r, `failed: ${(e as Error).message}`),
    );
    return r;
  }

  #next(): void {
    if (this.#current !== null) return;
    const p = this.#queue.shift();
    if (p === undefined) return;
    let r: Running;
    try {
      r = this.#ensure();
    } catch (e) {
      p.reject(e as Error);
      this.#next();
      return;
    }
    const requestLine = ++r.line;
    const sentinelLine = ++r.line;
    const cur: Current = {
      ...p,
      requestLine,
      sentinelLine,
      written: false,
      errors: [],
      failed: false,
      started: this.#now(),
      timer: setTimeout(() => {
        this.#fail(
          cur,
          new IpBatchUnavailableError(
            `Cannot run "${p.line}" in ip -batch: no answer within ${this.#timeoutMs} ms`,
          ),
        );
        this.#kill(r, `no answer within ${this.#timeoutMs} ms`);
      }, this.#timeoutMs),
    };
    this.#current = cur;
    r.writer.write(new TextEncoder().encode(`${p.line}\n${SENTINEL}\n`)).then(() => {
      cur.written = true;
    }, (e) => {
      // The child was gone before it could read the line (its exit not yet seen): the command
      // did not run, so it goes once more, first in line, to a fresh child.
      if (this.#current === cur && !p.retried) {
        clearTimeout(cur.timer);
        this.#current = null;
        this.#queue.unshift({ line: p.line, resolve: p.resolve, reject: p.reject, retried: true });
        this.#kill(r, `broken pipe: ${(e as Error).message}`);
        this.#next();
        return;
      }
      this.#fail(
        cur,
        new IpBatchUnavailableError(
          `Cannot write to ip -batch: ${(e as Error).message}`,
        ),
      );
      this.#kill(r, `broken pipe: ${(e as Error).message}`);
    });
  }

  #fail(cur: Current, e: Error): void {
    if (this.#current !== cur) return;
    clearTimeout(cur.timer);
    this.#current = null;
    cur.reject(e);
    queueMicrotask(() => this.#next());
  }

  #kill(r: Running, why: string): void {
    if (!r.dead) this.#onExit(r, why);
    r.writer.close().catch(() => {});
    r.child.kill();
  }

  #onExit(r: Running, why: string): void {
    if (r.dead) return;
    r.dead = true;
    if (this.#running === r) this.#running = null;
    if (!this.#closed) this.#died(why);
    const cur = this.#current;
    if (cur === null) return;
    if (!cur.written && !cur.retried && !this.#closed) {
      // Dead before its line reached the pipe (the exit seen before the write failed): the
      // command did not run; it goes once more, first in line, to a fresh child.
      clearTimeout(cur.timer);
      this.#current = null;
      this.#queue.unshift({
        line: cur.line,
        resolve: cur.resolve,
        reject: cur.reject,
        retried: true,
      });
      queueMicrotask(() => this.#next());
      return;
    }
    this.#fail(
      cur,
      new IpBatchUnavailableError(`Cannot run "${cur.line}" in ip -batch: it ${why}`),
    );
  }

  #died(why: string): void {
    const t = this.#now();
    this.#lastDeath = why;
    this.#deaths = [...this.#deaths.filter((d) => t - d < DEATH_WINDOW_MS), t];
    if (this.#deaths.length >= MAX_DEATHS) {
      this.#downUntil = t + DEATH_WINDOW_MS;
      this.#deaths = [];
    }
  }

  #onLine(r: Running, text: string): void {
    const cur = this.#current;
    if (cur === null || r !== this.#running) return; // noise outside a request: ignored
    const m = /^Command failed -:(\d+)$/.exec(text);
    if (m !== null) {
      const n = Number(m[1]);
      if (n === cur.requestLine) cur.failed = true;
      if (n === cur.sentinelLine) {
        clearTimeout(cur.timer);
        this.#current = null;
        cur.resolve({
          ok: !cur.failed,
          stderr: cur.errors.join("\n"),
          durationMs: this.#now() - cur.started,
        });
        this.#next();
      }
      return;
    }
    if (text.startsWith(`Object "${SENTINEL}" is unknown`)) return;
    if (cur.errors.length < MAX_ERROR_LINES) cur.errors.push(text);
  }

  async #read(r: Running): Promise<void> {
    const decoder = new TextDecoder();
    let rest = "";
    let skipping = false; // inside a line longer than MAX_LINE
    try {
      for await (const chunk of r.child.stderr) {
        rest += decoder.decode(chunk, { stream: true });
        let nl;
        while ((nl = rest.indexOf("\n")) >= 0) {
          const text = rest.slice(0, nl);
          rest = rest.slice(nl + 1);
          if (skipping) {
            skipping = false;
            continue;
          }
          this.#onLine(r, text.slice(0, MAX_LINE));
        }
        if (rest.length > MAX_LINE) {
          if (!skipping) this.#onLine(r, rest.slice(0, MAX_LINE));
          skipping = true;
          rest = "";
        }
      }
    } catch {
      // the child was killed: its exit is handled by #onExit
    }
  }
}
