/**
 * The supervisor side of failsh's sandbox: runs the operator's failover script in a child
 * `deno run --no-prompt` with no run, write, env, FFI or sys permission, reading only the
 * policy's `read` paths and connecting only to the policy's `net` hosts; answers the script's
 * privileged requests after checking them against the policy; and writes every request, allowed
 * or refused, to the audit log. See `docs/sandbox.md`.
 *
 * ```
 * scheduler ──invoke(call, timeoutMs)──▶ Sandbox ──stdin: invoke──▶ child (script + mod.ts)
 *                                          ▲  │                        │
 *                 policy check, audit,     │  └──stdin: reply──────────┤
 *                 ip / arping / program ◀──┴─────stdout: req───────────┘
 * ```
 *
 * A handler that does not answer in time gets its child killed (a `while (true) {}` loop
 * cannot be interrupted any other way) and the next call starts a fresh child, which must
 * declare exactly what the first one did. The services share a few children (4 by default),
 * a service whose handler timed out gets a child of its own, and the other handlers its kill
 * interrupted run again once. Every queue between the supervisor and a child is bounded, and
 * each child runs under OS limits (`./limits.ts`). See `docs/sandbox.md`.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import type {
  HandlerInvocation,
  HostDecl,
  Policy,
  Sandbox,
  ScriptDecl,
  TrapEvent,
} from "../contract.ts";
import type { HeldAddress, ServiceState } from "../../lib/types.ts";
import { isServiceState, MAX_DETAIL_LENGTH } from "../../lib/types.ts";
import { type Logger, logger as processLogger } from "../../lib/log.ts";
import { FaildClient } from "../../lib/client.ts";
import { AuditLog, auditRequest, MAX_PRIVILEGED_BURST, PRIVILEGED_PER_SECOND } from "./audit.ts";
import { fromWireError, PolicyDeniedError, ScriptError, TimeoutError } from "../errors.ts";
import { assertScriptAccess } from "./module_graph.ts";
import { createNetDriver, type NetDriver, runFixed } from "./netops.ts";
import {
  checkArp,
  checkRelease,
  checkRun,
  checkTakeover,
  childUserIds,
  readKey,
  type UserIds,
} from "./policy.ts";
import {
  ChildCgroups,
  type ChildLimits,
  childLimits,
  limitPrefix,
  readProcStat,
} from "./limits.ts";
import { checkDecl } from "./decl.ts";
import {
  CHILD_FLAG,
  type ChildMessage,
  MAX_RPC_LINE,
  type PeerPoll,
  readLines,
  REQUEST_OPS,
  type RequestOp,
  RPC_MAGIC,
  type RunResult,
  type SupervisorMessage,
} from "../rpc.ts";

/** Longest line of script output logged, in characters (longer lines are cut). */
export const MAX_OUTPUT_LINE = 4096;

/** Most script output lines logged per second per child (the rest are counted and dropped). */
export const MAX_OUTPUT_LINES_PER_SECOND = 100;

/** Most privileged requests one child may have in progress at once (more are refused). */
export const MAX_INFLIGHT_REQUESTS = 32;

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

/** Default number of children running the services' handlers (plus the main one for traps). */
export const DEFAULT_CHILDREN = 4;

/** Most services moved to a child of their own after a handler of theirs timed out. */
export const MAX_OWN_CHILDREN = 4;

/**
 * A child running, or waiting to run, this share of the time while none of its handlers or
 * traps runs…
 */
export const IDLE_CPU_SHARE = 0.5;

/** …for this long is killed, ms. */
export const IDLE_BURN_MS = 2000;

/** Most threads of one child (one runs 7; a Worker adds more). */
export const MAX_CHILD_THREADS = 32;

/** The child's entry, preloaded before the script: the child's start-up and RPC server. */
const CHILD_MAIN = fileURLToPath(new URL("../script/child_main.ts", import.meta.url));

/** How often each child's CPU time and threads are sampled, ms. */
const WATCH_MS = 500;

/** Options of {@linkcode createSandbox}. */
export interface SandboxOptions {
  /**
   * The network driver. Pass one to keep held addresses across sandboxes (a SIGHUP reload);
   * by default the sandbox creates the policy's driver and closes it (without releasing) in
   * `close()`.
   */
  net?: NetDriver;
  /** The audit log (default: a new one on `policy.audit`). */
  audit?: AuditLog;
  /**
   * Polls a declared host for `ctx.poll()` (the scheduler's poller). Default: the sandbox polls
   * the host's faild itself with `FaildClient`, signing with the policy key the host names.
   */
  poll?: (host: HostDecl, options: { signal: AbortSignal }) => Promise<PeerPoll>;
  /**
   * Sets a service's state on the local faild for `ctx.setState()`. Default: the sandbox sets it
   * with `FaildClient` on `policy.faild`.
   */
  setState?: (service: string, state: ServiceState, detail: string) => Promise<void>;
  /** Told each line the script prints (default: logged at `info` in facility `script`). */
  onOutput?: (line: string, info: { stream: "stdout" | "stderr"; child: string }) => void;
  /** Told each `ctx.log()` message (default: logged at `info` in facility `script`). */
  onLog?: (message: string, info: { service: string | null }) => void;
  /** Where the sandbox logs (default the process logger); facilities `sandbox` and `script`. */
  logger?: Logger;
  /**
   * Start each child under {@linkcode confinementPrefix} (default `true`: parent-death signal,
   * no new privileges, no capabilities when root).
   */
  confine?: boolean;
  /**
   * Children running the services' handlers (default {@linkcode DEFAULT_CHILDREN}); the
   * services are spread over them in declaration order, and a service whose handler timed out
   * gets a child of its own (at most {@linkcode MAX_OWN_CHILDREN}). `1` runs every handler in
   * one child; traps always run in the main child.
   */
  children?: number;
  /** Start the services' children in `start()` rather than at their first handler (default true). */
  prespawn?: boolean;
  /** Time the script has to load and declare itself, ms (default 20000). */
  startTimeoutMs?: number;
  /** Time the traps have to handle one event, ms (default 30000). */
  trapTimeoutMs?: number;
  /**
   * V8 heap limit of each child, MiB (default 256); the OS limits follow from it
   * (`childLimits()` in `shell/sandbox/limits.ts`).
   */
  memoryMb?: number;
  /**
   * Apply the OS limits (default `true`): `prlimit`, `nice`, and cgroup v2 when failsh's cgroup
   * is delegated to it.
   */
  limits?: boolean;
  /** The deno executable (default `Deno.execPath()`). */
  denoPath?: string;
}

/** Per-kind request counters. */
export interface RequestCounters {
  /** Allowed and carried out. */
  allowed: number;
  /** Refused by the policy. */
  refused: number;
  /** Allowed but failed (the command failed, the peer was down…). */
  failed: number;
}

/** The bounds a child can be killed for passing. */
export type BoundKind =
  | "requests"
  | "messages"
  | "bytes"
  | "queue"
  | "cpu"
  | "threads"
  | "protocol";

/** What the sandbox counted since it was created (for metrics). */
export interface SandboxCounters {
  /** Privileged requests by kind. */
  requests: Record<RequestOp, RequestCounters>;
  /**
   * Handler invocations: returned a state, threw (or the child died), timed out, and run again
   * because another handler's timeout killed their child.
   */
  handlers: { ok: number; errors: number; timeouts: number; retried: number };
  /** Trap events: delivered, traps that threw, timed out, dropped (child not reading). */
  traps: { delivered: number; errors: number; timeouts: number; dropped: number };
  /** Children started and children that ended (killed or exited). */
  children: { started: number; ended: number };
  /** Children killed for passing a bound, by bound. */
  bounds: Record<BoundKind, number>;
  /** Script output lines logged and dropped (rate or length bound). */
  output: { lines: number; dropped: number };
}

/** The sandbox as failsh uses it: the scheduler's {@linkcode Sandbox} plus what the daemon needs. */
export interface FailshSandbox extends Sandbox {
  /** The policy in force. */
  readonly policy: Policy;
  /** The network driver (holds the addresses). */
  readonly net: NetDriver;
  /** The audit log. */
  readonly audit: AuditLog;
  /** The addresses held now. */
  heldAddresses(): HeldAddress[];
  /** Counters for metrics. */
  counters(): SandboxCounters;
  /** The exact command line of a child (for `--check` output and the docs). */
  childCommand(): string[];
}

/**
 * The command line of a sandboxed child: `deno run --no-prompt` with only the policy's read and
 * net permissions, every other permission denied, no config file, lock file, remote or npm
 * import (so the child never downloads anything), and a V8 heap limit.
 *
 * @param scriptPath The script (absolute path).
 * @param policy The policy (`read`, `net`).
 * @param options The deno executable and heap limit.
 * @returns The argv, starting with the deno executable.
 *
 * @example
 * ```ts
 * import { childCommand } from "./sandbox.ts";
 * import { parsePolicy } from "./policy.ts";
 * const policy = parsePolicy('{"host":"a","net":["127.0.0.1:80"]}', "/etc/failover/policy.json");
 * const argv = childCommand("/etc/failover/failover.ts", policy, { denoPath: "deno" });
 * console.log(argv.includes("--allow-net=127.0.0.1:80"), argv.some((a) => a.startsWith("--allow-run"))); // true false
 * ```
 */
export function childCommand(
  scriptPath: string,
  policy: Policy,
  options: { denoPath?: string; memoryMb?: number } = {},
): string[] {
  const argv = [
    options.denoPath ?? Deno.execPath(),
    "run",
    "--no-prompt",
    "--no-config",
    "--no-lock",
    "--no-remote",
    "--no-npm",
    "--cached-only",
    `--v8-flags=--max-old-space-size=${options.memoryMb ?? 256}`,
  ];
  // An empty --allow-read= would allow everything: only pass the flags with a list.
  if (policy.read.length > 0) argv.push(`--allow-read=${policy.read.join(",")}`);
  else argv.push("--deny-read");
  if (policy.net.length > 0) argv.push(`--allow-net=${policy.net.join(",")}`);
  else argv.push("--deny-net");
  argv.push(
    "--deny-write",
    "--deny-env",
    "--deny-run",
    "--deny-ffi",
    "--deny-sys",
    "--deny-import",
    `--preload=${CHILD_MAIN}`,
    scriptPath,
    CHILD_FLAG,
  );
  return argv;
}

/**
 * The wrapper a child is started under (util-linux `setpriv`, when installed): the child is
 * killed if the supervisor dies (`--pdeathsig`, so a script stuck in a loop is never orphaned),
 * can never gain privileges (`--no-new-privs`), and, when the supervisor is root, runs with no
 * Linux capability at all (empty bounding set): even a script escaping deno's permissions could
 * not change the network. With `user` (the policy's `childUser`), the child runs as that user
 * and group with no supplementary group, so files only root may read stay closed to it.
 *
 * @param options `user`: the ids the child runs as (default: failsh's own).
 * @returns The argv prefix, or an empty list without `setpriv` (and no `user`).
 *
 * @example
 * ```ts
 * import { confinementPrefix } from "./sandbox.ts";
 * console.log(confinementPrefix().join(" "));
 * ```
 */
export function confinementPrefix(options: { user?: UserIds | null } = {}): string[] {
  let setpriv: string | null = null;
  for (const candidate of ["/usr/bin/setpriv", "/bin/setpriv"]) {
    try {
      if (Deno.statSync(candidate).isFile) {
        setpriv = candidate;
        break;
      }
    } catch {
      // try the next one
    }
  }
  const user = options.user ?? null;
  if (setpriv === null) {
    if (user === null) return [];
    throw new Error(
      `Cannot run the script as childUser ${user.uid}:${user.gid}: setpriv (util-linux) is not installed`,
    );
  }
  const argv = [setpriv, "--pdeathsig", "KILL", "--no-new-privs", "--inh-caps", "-all"];
  if (user !== null) argv.push(`--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups");
  let root = false;
  try {
    root = Deno.uid() === 0;
  } catch {
    // no sys permission: keep the bounding set
  }
  if (root) argv.push("--bounding-set", "-all");
  return [...argv, "--"];
}

function childEnv(): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };
  for (const name of ["DENO_DIR", "HOME", "XDG_CACHE_HOME", "TZ"]) {
    try {
      const v = Deno.env.get(name);
      if (v !== undefined) env[name] = v;
    } catch {
      // no env permission: deno uses its defaults
    }
  }
  return env;
}

interface Invocation {
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
class CollateralError extends ScriptError {}

const MiB = 1024 * 1024;

/** Names each child's cgroup uniquely in this process. */
let childSerial = 0;

/** What a child needs from its sandbox. */
interface Host {
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

/** One sandboxed child process running the script. */
class ScriptChild {
  readonly label: string;
  #host: Host;
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

  constructor(label: string, host: Host) {
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

function emptyCounters(): SandboxCounters {
  const requests = {} as Record<RequestOp, RequestCounters>;
  for (const op of REQUEST_OPS) requests[op] = { allowed: 0, refused: 0, failed: 0 };
  return {
    requests,
    handlers: { ok: 0, errors: 0, timeouts: 0, retried: 0 },
    traps: { delivered: 0, errors: 0, timeouts: 0, dropped: 0 },
    children: { started: 0, ended: 0 },
    bounds: {
      requests: 0,
      messages: 0,
      bytes: 0,
      queue: 0,
      cpu: 0,
      threads: 0,
      protocol: 0,
    },
    output: { lines: 0, dropped: 0 },
  };
}

/** What a request asks, for a refusal: `take over 198.18.0.1/24`, `run systemctl`… */
function describeRequest(op: unknown, args: Record<string, unknown>): string {
  const short = (v: unknown) => String(v).slice(0, 64);
  switch (op) {
    case "takeover":
      return `take over ${short(args.address)}`;
    case "release":
      return `release ${short(args.address)}`;
    case "run":
      return `run ${short(Array.isArray(args.argv) ? args.argv[0] : args.argv)}`;
    case "poll":
      return `poll ${short(args.host)}`;
    case "setState":
      return "set state";
    default:
      return short(op);
  }
}

/** Whether OS-limit problems were logged already (once per process, not per sandbox). */
let limitsReported = false;

class SandboxImpl implements Host {
  readonly policy: Policy;
  readonly net: NetDriver;
  readonly audit: AuditLog;
  readonly argv: string[];
  readonly confinement: string[];
  readonly limits: ChildLimits;
  readonly limitArgv: string[];
  readonly cgroups: ChildCgroups | null;
  readonly startTimeoutMs: number;
  readonly trapTimeoutMs: number;
  readonly logger: Logger;
  readonly counters_: SandboxCounters = emptyCounters();
  #script: string;
  #options: SandboxOptions;
  #ownNet: boolean;
  #ownAudit: boolean;
  #decl: ScriptDecl | null = null;
  #declJson = "";
  /** Children by key: `main` (traps), `pool:N` (shared), `own:SERVICE`. */
  #children = new Map<string, ScriptChild>();
  /** Each service's place in the declaration (its pool slot is this modulo the pool size). */
  #index = new Map<string, number>();
  /** Services moved to a child of their own after a timeout. */
  #own = new Set<string>();
  #poolSize: number;
  #closed = false;
  #secrets = new Map<string, string | null>();
  #faild: FaildClient | null = null;
  #reaping = new Set<Promise<void>>();
  #requests = new Set<Promise<unknown>>();
  #closing = new AbortController();

  constructor(script: string, policy: Policy, options: SandboxOptions) {
    this.#script = script;
    this.policy = policy;
    this.#options = options;
    this.#ownAudit = options.audit === undefined;
    this.audit = options.audit ?? new AuditLog({ script, path: policy.audit });
    this.#ownNet = options.net === undefined;
    this.net = options.net ?? createNetDriver(policy.netDriver, { audit: this.audit });
    const cmd: { denoPath?: string; memoryMb?: number } = {};
    if (options.denoPath !== undefined) cmd.denoPath = options.denoPath;
    if (options.memoryMb !== undefined) cmd.memoryMb = options.memoryMb;
    this.argv = childCommand(script, policy, cmd);
    this.confinement = options.confine === false
      ? []
      : confinementPrefix({ user: childUserIds(policy) });
    this.startTimeoutMs = options.startTimeoutMs ?? 20_000;
    this.trapTimeoutMs = options.trapTimeoutMs ?? 30_000;
    this.logger = options.logger ?? processLogger;
    this.#poolSize = Math.max(1, Math.floor(options.children ?? DEFAULT_CHILDREN));
    this.limits = childLimits(options.memoryMb ?? 256);
    if (options.limits === false) {
      this.limitArgv = [];
      this.cgroups = null;
    } else {
      const prefix = limitPrefix(this.limits);
      this.limitArgv = prefix.argv;
      const cgroups = ChildCgroups.setup();
      this.cgroups = typeof cgroups === "string" ? null : cgroups;
      if (!limitsReported) {
        limitsReported = true;
        if (prefix.missing.length > 0) {
          this.logger.warn("sandbox", "the children run without some OS limits", {
            missing: prefix.missing.join(", "),
          });
        }
        if (typeof cgroups === "string") {
          this.logger.info("sandbox", "children are limited with prlimit, not cgroup v2", {
            reason: cgroups,
          });
        }
      }
    }
  }

  get counters(): SandboxCounters {
    return this.counters_;
  }

  get decl(): ScriptDecl {
    if (this.#decl === null) {
      throw new Error("Cannot read the script's declaration: the sandbox is not started");
    }
    return this.#decl;
  }

  childCommand(): string[] {
    return [...this.limitArgv, ...this.confinement, ...this.argv];
  }

  heldAddresses(): HeldAddress[] {
    return this.net.held();
  }

  // `counters()` as a method for the FailshSandbox interface; the Host side uses the getter.
  countersSnapshot(): SandboxCounters {
    return structuredClone(this.counters_);
  }

  async start(): Promise<ScriptDecl> {
    if (this.#closed) throw new Error("Cannot start the sandbox: it is closed");
    if (this.#decl !== null) return this.#decl;
    // deno loads the module graph without the read permission, and follows symlinks in the read
    // paths: check both before any child runs.
    await assertScriptAccess(this.#script, this.policy, {
      audit: this.audit,
      denoPath: this.argv[0] as string,
      prefix: this.confinement,
      env: childEnv(),
      timeoutMs: this.startTimeoutMs,
    });
    const main = new ScriptChild("main", this);
    this.#children.set("main", main);
    const decl = await main.start();
    this.#decl = decl;
    this.#declJson = JSON.stringify(decl);
    decl.services.forEach((s, i) => this.#index.set(s.name, i));
    if (this.#options.prespawn ?? true) {
      const mine = decl.services.filter((s) =>
        s.masters.includes(this.policy.host) || s.slaves.includes(this.policy.host)
      );
      const keys = new Set(mine.map((s) => this.#keyFor(s.name)));
      await Promise.all([...keys].map((key) => this.#ensure(key)));
    }
    return decl;
  }

  /** The child a service's handlers run in: its own, or its slot of the pool. */
  #keyFor(service: string): string {
    if (this.#own.has(service)) return `own:${service}`;
    return `pool:${(this.#index.get(service) ?? 0) % this.#poolSize}`;
  }

  /** The running child for a key, restarted if it died. */
  async #ensure(key: string): Promise<ScriptChild> {
    let child = this.#children.get(key);
    if (child && child.alive) {
      await child.start();
      return child;
    }
    const old = child;
    const label = key === "main"
      ? "main"
      : key.startsWith("pool:")
      ? `pool-${key.slice("pool:".length)}`
      : key.slice("own:".length);
    child = new ScriptChild(label, this);
    this.#children.set(key, child);
    // The old child is dead: collect its process and streams in the background.
    if (old) {
      const reaped: Promise<void> = old.close(0).finally(() => this.#reaping.delete(reaped));
      this.#reaping.add(reaped);
    }
    const decl = await child.start();
    if (this.#closed) {
      await child.close(0);
      throw new ScriptError("Cannot run a handler: the sandbox is closed");
    }
    if (JSON.stringify(decl) !== this.#declJson) {
      child.kill("its declaration changed");
      throw new ScriptError(
        "The script's declaration changed since failsh started: reload failsh (SIGHUP) to apply it",
      );
    }
    return child;
  }

  async invoke(call: HandlerInvocation, timeoutMs: number): Promise<ServiceState> {
    if (this.#closed) throw new ScriptError("Cannot run a handler: the sandbox is closed");
    const decl = this.decl;
    if (!decl.services.some((s) => s.name === call.service)) {
      throw new TypeError(
        `Cannot run a handler of ${call.service}: the script declares no such service`,
      );
    }
    const deadline = performance.now() + timeoutMs;
    let retried = false;
    while (true) {
      const child = await this.#ensure(this.#keyFor(call.service));
      const left = Math.round(deadline - performance.now());
      try {
        return await child.invoke(call, retried ? Math.max(1, left) : timeoutMs, timeoutMs);
      } catch (e) {
        // A handler interrupted by another's timeout runs again, once, in the restarted child,
        // within what is left of its own time limit.
        const remaining = deadline - performance.now();
        if (!(e instanceof CollateralError) || retried || remaining < 100 || this.#closed) {
          throw e;
        }
        retried = true;
        this.counters_.handlers.retried++;
        this.logger.warn("sandbox", "retrying a handler its child's kill interrupted", {
          service: call.service,
          kind: call.kind,
          reason: e.message,
        });
      }
    }
  }

  handlerTimedOut(child: ScriptChild, call: HandlerInvocation): void {
    const service = call.service;
    if (this.#own.has(service) || this.#decl === null) return;
    const key = this.#keyFor(service);
    const sharing = this.#decl.services.filter((s) => this.#keyFor(s.name) === key).length;
    if (sharing <= 1) return;
    if (this.#own.size >= MAX_OWN_CHILDREN) {
      this.logger.warn("sandbox", "a service keeps its shared child: too many have their own", {
        service,
        child: child.label,
      });
      return;
    }
    this.#own.add(service);
    this.logger.warn("sandbox", "a service gets a child of its own", {
      service,
      child: child.label,
      reason: `handler ${call.kind} timed out`,
    });
  }

  trap(event: TrapEvent): void {
    if (this.#closed || this.#decl === null || this.#decl.traps === 0) return;
    const deliver = (child: ScriptChild) => {
      if (child.trap(event)) this.counters_.traps.delivered++;
      else this.counters_.traps.dropped++;
    };
    const main = this.#children.get("main");
    if (main && main.alive) {
      deliver(main);
      return;
    }
    this.#ensure("main").then(deliver, (e) => {
      this.counters_.traps.dropped++;
      this.logger.warn("sandbox", "cannot restart the script for a trap", { error: String(e) });
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#children.values()].map((c) => c.close()));
    await Promise.allSettled([...this.#reaping]);
    // Programs still running for a handler are killed; every request settles before we return.
    this.#closing.abort();
    await Promise.allSettled([...this.#requests]);
    if (this.#ownNet) await this.net.close();
    if (this.#ownAudit) this.audit.close();
    this.#faild?.close();
  }

  // ---- Host (what children call) -------------------------------------------------------------

  output(line: string, stream: "stdout" | "stderr", child: string): void {
    if (this.#options.onOutput) this.#options.onOutput(line, { stream, child });
    else this.logger.info("script", line, { stream, child });
  }

  log(msg: Extract<ChildMessage, { t: "log" }>, service: string | null): void {
    const text = String(msg.msg).slice(0, 4096);
    if (this.#options.onLog) this.#options.onLog(text, { service });
    else this.logger.info("script", text, { service });
  }

  request(child: ScriptChild, msg: Extract<ChildMessage, { t: "req" }>): void {
    const inv = child.invocation(msg.inv);
    const service = inv?.call.service ?? null;
    const op = msg.op;
    const args = typeof msg.args === "object" && msg.args !== null ? msg.args : {};
    const counters = REQUEST_OPS.includes(op) ? this.counters_.requests[op] : null;
    const reply = (value: unknown) => child.send({ t: "reply", id: msg.id, ok: true, value });
    const fail = (e: unknown) => {
      const error = e instanceof Error ? e : new Error(String(e));
      child.send({
        t: "reply",
        id: msg.id,
        ok: false,
        error: { name: error.name, message: error.message.slice(0, 2000) },
      });
    };
    // Only the request's known fields, under its real op: a script's extra fields cannot
    // rewrite its record.
    const request = auditRequest(op, args);
    const refuse = (e: PolicyDeniedError) => {
      if (counters) counters.refused++;
      // Rate limited per child: a flood of refusals is summarised.
      this.audit.refused(child.label, service, request, e.message);
      fail(e);
    };
    // Only a running handler or trap may ask: not the script's top level, nor a timer or a
    // promise a handler left behind (it would act for no service, at no decision's request).
    if (!inv && !child.trapRunning(msg.inv)) {
      return refuse(
        new PolicyDeniedError(
          `Cannot ${
            describeRequest(op, args)
          }: privileged requests are allowed only while a handler or trap runs (this one came from outside a running handler or trap: the script's top level, or a timer or promise left running after its handler returned)`,
        ),
      );
    }
    if (child.inflight >= MAX_INFLIGHT_REQUESTS) {
      return refuse(
        new PolicyDeniedError(
          `Cannot ${op}: the script already has ${MAX_INFLIGHT_REQUESTS} requests in progress`,
        ),
      );
    }
    child.inflight++;
    const signal = inv
      ? AbortSignal.any([inv.abort.signal, this.#closing.signal])
      : this.#closing.signal;
    const performed = this.#perform(op, args, service, signal, child.label).finally(() => {
      child.inflight--;
    });
    this.#requests.add(performed);
    performed.finally(() => this.#requests.delete(performed)).catch(() => {});
    performed.then(
      ({ value, audit }) => {
        if (counters) counters.allowed++;
        if (audit) this.audit.write(service, request, "done", audit);
        reply(value);
      },
      (e) => {
        if (e instanceof PolicyDeniedError) return refuse(e);
        if (counters) counters.failed++;
        if (op !== "poll") {
          this.audit.write(service, request, "failed", e instanceof Error ? e.message : String(e));
        }
        fail(e);
      },
    );
  }

  async #perform(
    op: RequestOp,
    args: Record<string, unknown>,
    service: string | null,
    signal: AbortSignal | null,
    source: string,
  ): Promise<{ value: unknown; audit: string | null }> {
    // The record of a privileged action is written before it runs, or the action is refused.
    const allow = (verb: string, target: string, reason: string) =>
      this.#allow(source, service, auditRequest(op, args), { verb, target }, reason);
    switch (op) {
      case "takeover": {
        const allowed = checkTakeover(this.policy, args.address as string, args.device as string);
        const arp = checkArp(this.policy, allowed.cidr.text, args);
        allow("take over", allowed.cidr.text, `within ${allowed.rule.prefix}`);
        await this.net.takeover(allowed.cidr, allowed.device, { ...arp, service });
        return { value: null, audit: `${allowed.cidr.text} is on ${allowed.device}` };
      }
      case "release": {
        const allowed = checkRelease(this.policy, args.address as string, args.device as string);
        allow("release", allowed.cidr.text, `within ${allowed.rule.prefix}`);
        await this.net.release(allowed.cidr, allowed.device);
        return { value: null, audit: `${allowed.cidr.text} is off ${allowed.device}` };
      }
      case "run": {
        const timeout = args.timeoutMs === undefined ? {} : { timeoutMs: args.timeoutMs as number };
        const allowed = checkRun(this.policy, args.argv as string[], timeout);
        allow("run", allowed.path, `program ${allowed.path}`);
        const r = await runFixed(allowed.path, allowed.args, {
          timeoutMs: allowed.timeoutMs,
          ...(signal ? { signal } : {}),
        });
        const value: RunResult = {
          code: r.code,
          stdout: r.stdout,
          stderr: r.stderr,
          truncated: r.truncated,
          timedOut: r.timedOut,
          durationMs: r.durationMs,
        };
        if (r.code === -1) throw new Error(r.stderr);
        const how = r.timedOut
          ? `killed with its process group after ${allowed.timeoutMs} ms`
          : `exit code ${r.code} in ${r.durationMs} ms`;
        return { value, audit: how };
      }
      case "poll": {
        const name = args.host as string;
        const host = this.decl.hosts.find((h) => h.name === name);
        if (!host) {
          throw new PolicyDeniedError(
            `Cannot poll ${String(name).slice(0, 64)}: the script declares no such host`,
          );
        }
        const ac = new AbortController();
        const t = setTimeout(() => ac.abort(), 10_000);
        signal?.addEventListener("abort", () => ac.abort(), { once: true });
        try {
          const value = this.#options.poll
            ? await this.#options.poll(host, { signal: ac.signal })
            : await this.#poll(host, ac.signal);
          return { value, audit: null };
        } finally {
          clearTimeout(t);
        }
      }
      case "setState": {
        if (service === null) {
          throw new PolicyDeniedError(
            "Cannot set state outside a handler: only a running handler may set its service's state",
          );
        }
        const state = args.state;
        const detail = String(args.detail ?? "").slice(0, MAX_DETAIL_LENGTH);
        if (!isServiceState(state)) {
          throw new TypeError(
            `Cannot set state of ${service}: ${JSON.stringify(state)} is not UP, RECOVER or FAIL`,
          );
        }
        allow("set state of", service, `${service} to ${state}`);
        if (this.#options.setState) await this.#options.setState(service, state, detail);
        else await this.#faildClient().then((c) => c.set(service, state, { detail }));
        return { value: null, audit: `${service} is ${state}` };
      }
      default:
        throw new TypeError(`Unknown request ${JSON.stringify(op)}`);
    }
  }

  /**
   * Takes the action from the child's privileged budget and writes its `allowed` record; throws
   * a PolicyDeniedError (the action must not run) when either fails.
   */
  #allow(
    source: string,
    service: string | null,
    request: Record<string, unknown>,
    { verb, target }: { verb: string; target: string },
    reason: string,
  ): void {
    if (!this.audit.admit(source)) {
      throw new PolicyDeniedError(
        `Cannot ${
          verb.replace(/ of$/, "")
        }: the script made more than ${MAX_PRIVILEGED_BURST} privileged requests (at most ${PRIVILEGED_PER_SECOND} a second); the audit log keeps a record of each, so the rest are refused`,
      );
    }
    try {
      this.audit.writeOrThrow(service, request, "allowed", reason);
    } catch (e) {
      throw new PolicyDeniedError(
        `Cannot ${verb} ${target}: ${
          (e as Error).message
        }, and no privileged action runs without its record`,
      );
    }
  }

  async #secret(name: string | null): Promise<string | null> {
    if (name === null) return null;
    if (!(name in this.policy.keys)) {
      throw new PolicyDeniedError(`Cannot use key ${name}: it is not in the policy's keys`);
    }
    if (!this.#secrets.has(name)) this.#secrets.set(name, await readKey(this.policy, name));
    return this.#secrets.get(name) ?? null;
  }

  async #faildClient(): Promise<FaildClient> {
    if (this.#faild === null) {
      const key = await this.#secret(this.policy.faild.key);
      this.#faild = new FaildClient(this.policy.faild.url, key === null ? {} : { key });
    }
    return this.#faild;
  }

  async #poll(host: HostDecl, signal: AbortSignal): Promise<PeerPoll> {
    const key = await this.#secret(host.key);
    const addr = host.address.includes(":") ? `[${host.address}]` : host.address;
    const client = new FaildClient(
      `${host.protocol}://${addr}:${host.port}`,
      key === null ? {} : { key },
    );
    const started = performance.now();
    try {
      const list = await client.list({ signal });
      return {
        host: host.name,
        reachable: true,
        services: list.services,
        latencyMs: Math.round((performance.now() - started) * 10) / 10,
        error: null,
      };
    } catch (e) {
      return {
        host: host.name,
        reachable: false,
        services: [],
        latencyMs: null,
        error: e instanceof Error ? e.message : String(e),
      };
    } finally {
      client.close();
    }
  }
}

/**
 * Creates the sandbox around a failover script. Nothing runs until `start()`.
 *
 * @param scriptPath The script (absolute path; it imports `mod.ts`).
 * @param policy The operator's policy (see `loadPolicy`).
 * @param options Network driver, audit log, poll and setState callbacks, limits.
 * @returns The sandbox.
 *
 * @example
 * ```ts ignore
 * import { createSandbox } from "./sandbox.ts";
 * import { loadPolicy } from "./policy.ts";
 * const policy = await loadPolicy("/etc/failover/policy.json");
 * const sandbox = createSandbox("/etc/failover/failover.ts", policy);
 * const decl = await sandbox.start();
 * const state = await sandbox.invoke(
 *   { service: decl.services[0]!.name, kind: "start", self: policy.host, reason: "test", peers: {} },
 *   5000,
 * );
 * await sandbox.close();
 * ```
 */
export function createSandbox(
  scriptPath: string,
  policy: Policy,
  options: SandboxOptions = {},
): FailshSandbox {
  // An absolute path, so that a script named like a flag can never be read as one by deno.
  let script = scriptPath;
  if (!script.startsWith("/")) {
    script = `${Deno.cwd()}/${script}`.replace(/\/\.\//g, "/");
  }
  const impl = new SandboxImpl(script, policy, options);
  return {
    get decl() {
      return impl.decl;
    },
    get policy() {
      return impl.policy;
    },
    get net() {
      return impl.net;
    },
    get audit() {
      return impl.audit;
    },
    start: () => impl.start(),
    invoke: (call, timeoutMs) => impl.invoke(call, timeoutMs),
    trap: (event) => impl.trap(event),
    close: () => impl.close(),
    heldAddresses: () => impl.heldAddresses(),
    counters: () => impl.countersSnapshot(),
    childCommand: () => impl.childCommand(),
  };
}
