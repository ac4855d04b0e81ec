/**
 * One sandboxed child of failsh's sandbox ({@linkcode ScriptChild}): the process, the bounded
 * channel to it, its handlers and traps in progress, and the watch over its CPU and threads. The
 * sandbox (`./sandbox.ts`) keeps a pool of them (`./pool.ts`) and answers their requests
 * (`./requests.ts`). See `docs/sandbox.md`, "Every queue between the two sides is bounded".
 *
 * @module
 */
import type { HandlerInvocation, ScriptDecl, TrapEvent } from "../contract.ts";
import { isServiceState, type ServiceState } from "../../lib/types.ts";
import type { Logger } from "../../lib/log.ts";
import { fromWireError, ScriptError, TimeoutError } from "../errors.ts";
import {
  type ChildMessage,
  MAX_RPC_LINE,
  readLines,
  RPC_MAGIC,
  type SupervisorMessage,
} from "../rpc.ts";
import { childEnv } from "./command.ts";
import type { BoundKind, SandboxCounters } from "./counters.ts";
import { checkDecl } from "./decl.ts";
import { type ChildCgroups, type ChildLimits, readProcStat } from "./limits.ts";

/** Longest line of script output logged, in characters (longer lines are cut). */
export const MAX_OUTPUT_LINE = 4096;

/** Most script output lines logged per second per child (the rest are counted and dropped). */
export const MAX_OUTPUT_LINES_PER_SECOND = 100;

/**
 * Most bytes queued towards one child (replies, invocations) while it does not read: a child
 * over it is killed and restarted at its next handler. Traps are dropped beyond a quarter.
 */
export const MAX_QUEUED_BYTES = 8 * 1024 * 1024;

/** Most privileged requests one child may send in one second (a child over it is killed). */
export const MAX_REQUESTS_PER_SECOND = 1000;

/** Most messages of any kind one child may send in one second (a child over it is killed). */
export const MAX_MESSAGES_PER_SECOND = 5000;

/** Most bytes one child may write (stdout and stderr) in one second (a child over it is killed). */
export const MAX_INPUT_BYTES_PER_SECOND = 16 * 1024 * 1024;

/** Trap errors logged per event; the others are counted and summed up in one line. */
export const MAX_TRAP_ERRORS_LOGGED = 5;

/**
 * A child running, or waiting to run, this share of the time while none of its handlers or
 * traps runs…
 */
export const IDLE_CPU_SHARE = 0.5;

/** …for this long is killed, ms. */
export const IDLE_BURN_MS = 2000;

/** Most threads of one child (one runs 7; a Worker adds more). */
export const MAX_CHILD_THREADS = 32;

/** How often each child's CPU time and threads are sampled, ms. */
const WATCH_MS = 500;

/** A handler running in a child. */
export interface Invocation {
  id: number;
  call: HandlerInvocation;
  resolve(state: ServiceState): void;
  reject(error: Error): void;
  timer: ReturnType<typeof setTimeout>;
  /** Aborted when the invocation ends badly: kills the programs it runs. */
  abort: AbortController;
}

/**
 * A handler interrupted because another handler's timeout killed the child they shared: it did
 * nothing wrong, so the sandbox runs it again (once) in the restarted child.
 */
export class CollateralError extends ScriptError {}

const MiB = 1024 * 1024;

/** Names each child's cgroup uniquely in this process. */
let childSerial = 0;

/** What a child needs from its sandbox. */
export interface ChildHost {
  readonly argv: string[];
  readonly confinement: string[];
  /** `prlimit` / `nice` prefix (empty when limits are off). */
  readonly limitArgv: string[];
  readonly limits: ChildLimits;
  readonly cgroups: ChildCgroups | null;
  readonly startTimeoutMs: number;
  readonly trapTimeoutMs: number;
  readonly counters: SandboxCounters;
  readonly logger: Logger;
  output(line: string, stream: "stdout" | "stderr", child: string): void;
  request(child: ScriptChild, msg: Extract<ChildMessage, { t: "req" }>): void;
  log(msg: Extract<ChildMessage, { t: "log" }>, service: string | null): void;
  /** A handler of `service` timed out in `child` (which is killed right after). */
  handlerTimedOut(child: ScriptChild, call: HandlerInvocation): void;
}

function describeWireError(e: unknown): string {
  if (typeof e !== "object" || e === null) return String(e).slice(0, 500);
  const { name, message } = e as { name?: unknown; message?: unknown };
  return `${String(name).slice(0, 100)}: ${String(message).slice(0, 500)}`;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/**
 * One sandboxed child process running the script: starts it, reads and checks what it writes,
 * queues what it is sent (never waiting on it), enforces the time limits and the bounds of the
 * channel, samples its CPU and threads, and kills it when it passes one.
 */
export class ScriptChild {
  readonly label: string;
  #host: ChildHost;
  #process: Deno.ChildProcess | null = null;
  #writer: WritableStreamDefaultWriter<Uint8Array> | null = null;
  /** Bytes waiting to be written to the child, in order; one write at a time drains them. */
  #outbox: Uint8Array[] = [];
  #queued = 0;
  #pumping: Promise<void> | null = null;
  #state: "new" | "starting" | "ready" | "dead" = "new";
  #declared: Promise<ScriptDecl> | null = null;
  #onDecl: ((d: ScriptDecl) => void) | null = null;
  #onFatal: ((e: Error) => void) | null = null;
  #declaredTraps = 0;
  #invocations = new Map<number, Invocation>();
  #traps = new Map<number, ReturnType<typeof setTimeout>>();
  #nextId = 1;
  #readers: Promise<unknown>[] = [];
  #exited: Promise<Deno.CommandStatus> | null = null;
  #deathReason: string | null = null;
  #outputWindow = { start: 0, count: 0, dropped: 0 };
  /** What the child sent in the current second: requests, messages, bytes. */
  #inputWindow = { start: 0, requests: 0, messages: 0, bytes: 0 };
  #lastErrors: string[] = [];
  #cgroup: string | null = null;
  #watch: ReturnType<typeof setInterval> | null = null;
  #sampling = false;
  #lastCpu: { at: number; cpuMs: number; runnableMs: number | null } | null = null;
  /** Whether a handler or trap ran at some point since the last sample. */
  #busy = false;
  #burn = { ms: 0, wantedMs: 0 };

  constructor(label: string, host: ChildHost) {
    this.label = label;
    this.#host = host;
  }

  get alive(): boolean {
    return this.#state === "starting" || this.#state === "ready";
  }

  /** Privileged requests of this child being carried out now. */
  inflight = 0;

  /** The invocation a request belongs to, if it is one of this child's running handlers. */
  invocation(id: number | null): Invocation | undefined {
    return typeof id === "number" ? this.#invocations.get(id) : undefined;
  }

  /** Whether `id` is a trap event this child is handling now. */
  trapRunning(id: number | null): boolean {
    return typeof id === "number" && this.#traps.has(id);
  }

  start(): Promise<ScriptDecl> {
    if (this.#declared) return this.#declared;
    this.#state = "starting";
    this.#declared = new Promise<ScriptDecl>((resolve, reject) => {
      this.#onDecl = resolve;
      this.#onFatal = reject;
    });
    // Avoid an unhandled rejection when nobody awaits a failed restart.
    this.#declared.catch(() => {});
    let wrapper: string[] = [];
    const cgroups = this.#host.cgroups;
    if (cgroups) {
      try {
        this.#cgroup = cgroups.create(`${this.label}-${++childSerial}`, this.#host.limits);
        wrapper = cgroups.wrapper(this.#cgroup);
      } catch (e) {
        this.#host.logger.warn("sandbox", "Cannot create the child's cgroup: prlimit only", {
          child: this.label,
          error: (e as Error).message,
        });
      }
    }
    const [cmd, ...args] = [
      ...wrapper,
      ...this.#host.limitArgv,
      ...this.#host.confinement,
      ...this.#host.argv,
    ];
    try {
      this.#process = new Deno.Command(cmd as string, {
        args,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        clearEnv: true,
        env: childEnv(),
      }).spawn();
    } catch (e) {
      this.#state = "dead";
      this.#removeCgroup();
      this.#onFatal?.(new ScriptError(`Cannot start the script: ${(e as Error).message}`));
      return this.#declared;
    }
    this.#host.counters.children.started++;
    this.#writer = this.#process.stdin.getWriter();
    this.#readers.push(
      this.#readStdout(this.#process.stdout),
      this.#readStderr(this.#process.stderr),
    );
    this.#exited = this.#process.status.then(async (status) => {
      await this.#onExit(status);
      return status;
    });
    this.#watch = setInterval(() => this.#sample(), WATCH_MS);
    const timer = setTimeout(() => {
      if (this.#state === "starting") {
        this.kill(
          `the script did not finish loading within ${this.#host.startTimeoutMs} ms (a top-level await that never settles?)`,
        );
      }
    }, this.#host.startTimeoutMs);
    this.#declared.finally(() => clearTimeout(timer)).catch(() => {});
    return this.#declared;
  }

  /**
   * Counts what the child sent in the current second; kills it over a bound.
   *
   * @returns Whether the child is still alive.
   */
  #account(bytes: number, message: "req" | "other" | null): boolean {
    const now = Date.now();
    const w = this.#inputWindow;
    if (now - w.start >= 1000) {
      w.start = now;
      w.requests = 0;
      w.messages = 0;
      w.bytes = 0;
    }
    w.bytes += bytes;
    if (message !== null) w.messages++;
    if (message === "req") w.requests++;
    if (w.requests > MAX_REQUESTS_PER_SECOND) {
      this.#killFor(
        "requests",
        `it sent more than ${MAX_REQUESTS_PER_SECOND} requests in one second`,
      );
    } else if (w.messages > MAX_MESSAGES_PER_SECOND) {
      this.#killFor(
        "messages",
        `it sent more than ${MAX_MESSAGES_PER_SECOND} messages in one second`,
      );
    } else if (w.bytes > MAX_INPUT_BYTES_PER_SECOND) {
      this.#killFor(
        "bytes",
        `it wrote more than ${MAX_INPUT_BYTES_PER_SECOND / MiB} MiB in one second`,
      );
    }
    return this.alive;
  }

  async #readStdout(stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (
      const line of readLines(stream, MAX_RPC_LINE, (n) => {
        if (this.#account(n, null)) {
          this.#host.output(`[line of ${n} characters dropped]`, "stdout", this.label);
        }
      })
    ) {
      // A dead child's remaining lines are read (so that it never blocks) but not handled.
      if (!this.alive) continue;
      const at = line.indexOf(RPC_MAGIC);
      if (at < 0) {
        if (this.#account(line.length + 1, null)) this.#output(line, "stdout");
        continue;
      }
      if (at > 0) this.#output(line.slice(0, at), "stdout");
      let msg: ChildMessage;
      try {
        msg = JSON.parse(line.slice(at + RPC_MAGIC.length));
      } catch {
        if (this.#account(line.length + 1, null)) {
          this.#output(line.slice(at + RPC_MAGIC.length), "stdout");
        }
        continue;
      }
      const kind = typeof msg === "object" && msg !== null && msg.t === "req" ? "req" : "other";
      if (!this.#account(line.length + 1, kind)) continue;
      try {
        this.#handle(msg);
      } catch (e) {
        // Only a child writing malformed messages gets here.
        this.#killFor("protocol", `it broke the sandbox protocol: ${(e as Error).message}`);
      }
    }
  }

  async #readStderr(stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (
      const line of readLines(stream, 64 * 1024, (n) => {
        this.#account(n, null);
      })
    ) {
      // Counted against the bounds; still kept below, since they say why a child died.
      this.#account(line.length + 1, null);
      // Keep the last lines (deno's own load errors) to explain a failed start.
      // deno-lint-ignore no-control-regex
      const clean = line.replace(/\x1b\[[0-9;]*m/g, "").trim();
      if (clean !== "") {
        this.#lastErrors.push(clean.slice(0, 500));
        if (this.#lastErrors.length > 5) this.#lastErrors.shift();
      }
      this.#output(line, "stderr");
    }
  }

  /** Rate limit of script output and `ctx.log` lines: {@linkcode MAX_OUTPUT_LINES_PER_SECOND}. */
  #allowLine(): boolean {
    const now = Date.now();
    const w = this.#outputWindow;
    if (now - w.start >= 1000) {
      if (w.dropped > 0) {
        this.#host.output(`[${w.dropped} lines of script output dropped]`, "stderr", this.label);
      }
      w.start = now;
      w.count = 0;
      w.dropped = 0;
    }
    if (++w.count > MAX_OUTPUT_LINES_PER_SECOND) {
      w.dropped++;
      this.#host.counters.output.dropped++;
      return false;
    }
    return true;
  }

  #output(line: string, stream: "stdout" | "stderr"): void {
    if (!this.#allowLine()) return;
    this.#host.counters.output.lines++;
    this.#host.output(
      line.length > MAX_OUTPUT_LINE ? line.slice(0, MAX_OUTPUT_LINE) + "…" : line,
      stream,
      this.label,
    );
  }

  /**
   * Samples the child's CPU time and threads: a child running too many threads, or burning CPU
   * while none of its handlers or traps runs (a loop started from a timer), is killed.
   */
  async #sample(): Promise<void> {
    if (this.#state !== "ready" || this.#sampling || this.#process === null) return;
    this.#sampling = true;
    const at = performance.now();
    const stat = await readProcStat(this.#process.pid);
    this.#sampling = false;
    if (stat === null || this.#state !== "ready") return;
    if (stat.threads > MAX_CHILD_THREADS) {
      this.#killFor(
        "threads",
        `it ran ${stat.threads} threads (at most ${MAX_CHILD_THREADS}): a failover script may not start Workers`,
      );
      return;
    }
    const busy = this.#busy || this.#invocations.size > 0 || this.#traps.size > 0;
    this.#busy = false;
    const last = this.#lastCpu;
    this.#lastCpu = { at, cpuMs: stat.cpuMs, runnableMs: stat.runnableMs };
    if (last === null) return;
    const elapsed = at - last.at;
    // The CPU it got, or (not shrinking when the machine is busy) the time it wanted one.
    const used = stat.cpuMs - last.cpuMs;
    const wanted = stat.runnableMs !== null && last.runnableMs !== null
      ? stat.runnableMs - last.runnableMs
      : 0;
    if (busy || Math.max(used, wanted) < IDLE_CPU_SHARE * elapsed) {
      this.#burn = { ms: 0, wantedMs: 0 };
      return;
    }
    this.#burn.ms += elapsed;
    this.#burn.wantedMs += Math.max(used, wanted);
    if (this.#burn.ms >= IDLE_BURN_MS) {
      const share = Math.min(100, Math.round((100 * this.#burn.wantedMs) / this.#burn.ms));
      this.#killFor(
        "cpu",
        `it kept a CPU busy ${share}% of the time for ${
          Math.round(this.#burn.ms / 1000)
        } s while no handler or trap ran`,
      );
    }
  }

  #handle(msg: ChildMessage): void {
    if (typeof msg !== "object" || msg === null) throw new TypeError("a message is not an object");
    switch (msg.t) {
      case "decl": {
        if (this.#state !== "starting") return;
        let decl: ScriptDecl;
        try {
          decl = checkDecl(msg.decl);
        } catch (e) {
          this.#onFatal?.(new ScriptError((e as Error).message));
          this.kill("its declaration is invalid");
          return;
        }
        this.#state = "ready";
        this.#declaredTraps = decl.traps;
        this.#onDecl?.(decl);
        return;
      }
      case "fatal":
        this.#onFatal?.(
          new ScriptError(
            `Invalid failover script:\n  - ${
              (Array.isArray(msg.problems) ? msg.problems.slice(0, 100) : [String(msg.problems)])
                .map((p) => String(p).slice(0, 2000)).join("\n  - ")
            }`,
          ),
        );
        this.kill("the script's declarations are invalid");
        return;
      case "result":
      case "error": {
        const inv = this.#invocations.get(msg.id);
        if (!inv) return;
        if (msg.t === "error" && (typeof msg.error !== "object" || msg.error === null)) {
          throw new TypeError("an error message without an error");
        }
        this.#invocations.delete(msg.id);
        clearTimeout(inv.timer);
        if (msg.t === "result") {
          if (!isServiceState(msg.state)) {
            this.#host.counters.handlers.errors++;
            inv.reject(new ScriptError(`Handler returned an invalid state`));
            return;
          }
          this.#host.counters.handlers.ok++;
          inv.resolve(msg.state);
        } else {
          this.#host.counters.handlers.errors++;
          inv.abort.abort();
          inv.reject(fromWireError(msg.error));
        }
        return;
      }
      case "req":
        this.#host.request(this, msg);
        return;
      case "log":
        if (this.#allowLine()) this.#host.log(msg, this.invocation(msg.inv)?.call.service ?? null);
        return;
      case "trapdone": {
        const timer = this.#traps.get(msg.id);
        if (timer === undefined) return;
        const errors: unknown = msg.errors ?? [];
        if (!Array.isArray(errors)) throw new TypeError("trapdone without a list of errors");
        // Each trap fails at most once per event: more errors than traps is a forgery.
        if (errors.length > this.#declaredTraps) {
          throw new TypeError(
            `trapdone reports ${errors.length} errors for ${this.#declaredTraps} traps`,
          );
        }
        clearTimeout(timer);
        this.#traps.delete(msg.id);
        if (errors.length > 0) {
          this.#host.counters.traps.errors += errors.length;
          for (const e of errors.slice(0, MAX_TRAP_ERRORS_LOGGED)) {
            this.#host.logger.warn("sandbox", "trap failed", { error: describeWireError(e) });
          }
          if (errors.length > MAX_TRAP_ERRORS_LOGGED) {
            this.#host.logger.warn("sandbox", "traps failed", {
              more: errors.length - MAX_TRAP_ERRORS_LOGGED,
            });
          }
        }
        return;
      }
      default:
        throw new TypeError(
          `unknown message ${String(JSON.stringify((msg as { t: unknown }).t)).slice(0, 64)}`,
        );
    }
  }

  /**
   * Queues a message for the child. Never waits: one write at a time drains the queue, so a
   * child that stops reading costs the supervisor memory up to {@linkcode MAX_QUEUED_BYTES},
   * then the child is killed.
   *
   * @param msg The message.
   * @param droppable Drop it (return `false`) rather than kill the child when the queue is
   *   a quarter full (trap events).
   * @returns Whether the message was queued.
   */
  send(msg: SupervisorMessage, droppable = false): boolean {
    if (!this.alive || this.#writer === null) return false;
    const data = new TextEncoder().encode(JSON.stringify(msg) + "\n");
    if (this.#queued + data.length > (droppable ? MAX_QUEUED_BYTES / 4 : MAX_QUEUED_BYTES)) {
      if (droppable) return false;
      this.#killFor(
        "queue",
        `it did not read its replies (more than ${MAX_QUEUED_BYTES / MiB} MiB waiting)`,
      );
      return false;
    }
    this.#outbox.push(data);
    this.#queued += data.length;
    // `.finally` always runs after this assignment, even when the drain ends at once.
    this.#pumping ??= this.#drain().finally(() => {
      this.#pumping = null;
    });
    return true;
  }

  /** Writes the queued bytes, all that piled up during the previous write at once. */
  async #drain(): Promise<void> {
    const writer = this.#writer as WritableStreamDefaultWriter<Uint8Array>;
    try {
      while (this.#outbox.length > 0 && this.alive) {
        const batch = concat(this.#outbox);
        this.#outbox = [];
        await writer.write(batch);
        this.#queued -= batch.length;
      }
    } catch {
      // The child is gone: its exit is handled by #onExit.
    }
  }

  /**
   * Runs a handler.
   *
   * @param call The invocation.
   * @param timeoutMs Time it has left.
   * @param limitMs Its whole time limit, for the messages (a retry has less time left).
   */
  invoke(call: HandlerInvocation, timeoutMs: number, limitMs = timeoutMs): Promise<ServiceState> {
    return new Promise<ServiceState>((resolve, reject) => {
      const id = this.#nextId++;
      const timer = setTimeout(() => {
        if (!this.#invocations.has(id)) return;
        this.#invocations.delete(id);
        this.#host.counters.handlers.timeouts++;
        inv.abort.abort();
        const message =
          `Handler ${call.kind} of ${call.service} timed out after ${limitMs} ms: the script was killed and will be restarted`;
        reject(new TimeoutError(message));
        this.#host.handlerTimedOut(this, call);
        this.kill(`handler ${call.kind} of ${call.service} timed out after ${limitMs} ms`, id);
      }, Math.max(1, timeoutMs));
      const inv: Invocation = { id, call, resolve, reject, timer, abort: new AbortController() };
      this.#invocations.set(id, inv);
      this.#busy = true;
      if (!this.send({ t: "invoke", id, call, timeoutMs })) {
        this.#invocations.delete(id);
        clearTimeout(timer);
        reject(
          new ScriptError(
            `Cannot run handler ${call.kind} of ${call.service}: the script is not running`,
          ),
        );
      }
    });
  }

  trap(event: TrapEvent): boolean {
    const id = this.#nextId++;
    if (!this.send({ t: "trap", id, event }, true)) return false;
    this.#busy = true;
    this.#traps.set(
      id,
      setTimeout(() => {
        this.#traps.delete(id);
        this.#host.counters.traps.timeouts++;
        this.kill(`a trap did not return within ${this.#host.trapTimeoutMs} ms`);
      }, this.#host.trapTimeoutMs),
    );
    return true;
  }

  /** Kills the child for passing a bound (counted by kind). */
  #killFor(kind: BoundKind, reason: string): void {
    if (!this.alive) return;
    this.#host.counters.bounds[kind]++;
    this.kill(reason);
  }

  /**
   * Kills the child now; pending handlers reject with a {@linkcode ScriptError}.
   *
   * @param reason Why, for the log and the interrupted handlers.
   * @param culprit The invocation whose timeout is the reason: the others are collateral.
   */
  kill(reason: string, culprit?: number): void {
    if (this.#deathReason === null) this.#deathReason = reason;
    if (this.#process && this.#state !== "dead") {
      this.#host.logger.warn("sandbox", "killing the script's child", {
        child: this.label,
        reason,
      });
      if (this.#cgroup !== null) this.#host.cgroups?.kill(this.#cgroup);
      try {
        this.#process.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
    this.#fail(reason, culprit);
  }

  #fail(reason: string, culprit?: number): void {
    const wasStarting = this.#state === "starting";
    this.#state = "dead";
    if (this.#watch !== null) clearInterval(this.#watch);
    this.#watch = null;
    this.#outbox = [];
    this.#queued = 0;
    if (wasStarting) {
      const said = this.#lastErrors.length > 0 ? `; it said: ${this.#lastErrors.join(" / ")}` : "";
      this.#onFatal?.(new ScriptError(`The script failed to start: ${reason}${said}`));
    }
    for (const inv of this.#invocations.values()) {
      clearTimeout(inv.timer);
      inv.abort.abort();
      this.#host.counters.handlers.errors++;
      const message = `Handler ${inv.call.kind} of ${inv.call.service} was interrupted: ${reason}`;
      inv.reject(
        culprit !== undefined && inv.id !== culprit
          ? new CollateralError(message)
          : new ScriptError(message),
      );
    }
    this.#invocations.clear();
    for (const t of this.#traps.values()) clearTimeout(t);
    this.#traps.clear();
  }

  #removeCgroup(): void {
    if (this.#cgroup !== null) this.#host.cgroups?.remove(this.#cgroup);
    this.#cgroup = null;
  }

  async #onExit(status: Deno.CommandStatus): Promise<void> {
    // Let the last stderr lines arrive: they say why a starting script died.
    if (this.#state === "starting") await Promise.allSettled(this.#readers);
    this.#host.counters.children.ended++;
    this.#removeCgroup();
    const how = status.signal ? `signal ${status.signal}` : `code ${status.code}`;
    if (this.#deathReason === null) {
      this.#host.logger.warn("sandbox", `the script's child exited with ${how}`, {
        child: this.label,
      });
    }
    this.#fail(this.#deathReason ?? `the script exited with ${how}`);
  }

  /** Closes stdin (the child exits by itself), then kills it if it lingers; waits for the end. */
  async close(graceMs = 500): Promise<void> {
    if (this.#process === null) return;
    this.#deathReason ??= "the sandbox was closed";
    // Never await the close itself: writes queued to a child that stopped reading would hold it.
    this.#writer?.close().catch(() => {});
    if (this.#state !== "dead") {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const exited = await Promise.race([
        (this.#exited as Promise<Deno.CommandStatus>).then(() => true),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(false), graceMs);
        }),
      ]);
      clearTimeout(timer);
      if (!exited) this.kill("the sandbox was closed");
    }
    await this.#exited;
    await Promise.allSettled([...this.#readers, this.#pumping]);
  }
}
