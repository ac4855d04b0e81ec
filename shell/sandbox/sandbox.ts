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
 * This module is the sandbox's entry: {@linkcode createSandbox}. Its parts: the child's command
 * line (`./command.ts`), one child (`./child.ts`), the pool of children (`./pool.ts`), the
 * privileged requests (`./requests.ts`), the counters (`./counters.ts`), the check of the
 * declaration (`./decl.ts`), the policy and its checks (`./policy.ts`, `./checks.ts`,
 * `./read_paths.ts`, `./cidr.ts`), the module graph (`./module_graph.ts`), the OS limits
 * (`./limits.ts`), the network (`./netops.ts`) and the audit log (`./audit.ts`).
 *
 * @module
 */
import type { HandlerInvocation, Policy, Sandbox, ScriptDecl, TrapEvent } from "../contract.ts";
import type { HeldAddress, ServiceState } from "../../lib/types.ts";
import { type Logger, logger as processLogger } from "../../lib/log.ts";
import { ScriptError } from "../errors.ts";
import type { ChildMessage } from "../rpc.ts";
import { AuditLog } from "./audit.ts";
import { type ChildHost, type ScriptChild } from "./child.ts";
import { childCommand, childEnv, confinementPrefix } from "./command.ts";
import { emptyCounters, type SandboxCounters } from "./counters.ts";
import { ChildCgroups, type ChildLimits, childLimits, limitPrefix } from "./limits.ts";
import { assertScriptAccess } from "./module_graph.ts";
import { createNetDriver, type NetDriver } from "./netops.ts";
import { childUserIds } from "./read_paths.ts";
import { ChildPool } from "./pool.ts";
import { type PeerPoller, Requests, type StateSetter } from "./requests.ts";

export type { BoundKind, RequestCounters, SandboxCounters } from "./counters.ts";
export type { PeerPoller, StateSetter } from "./requests.ts";

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
   * Polls a declared host for `ctx.poll()`: failsh passes its pooled faild client of the host
   * (`FaildPool` of `shell/faild_pool.ts`, the scheduler's). Without one, `ctx.poll()` of a
   * declared host fails (the sandbox holds no key and opens no connection of its own).
   */
  poll?: PeerPoller;
  /**
   * Sets a service's state on the local faild for `ctx.setState()` (failsh's pooled local
   * client). Without one, `ctx.setState()` fails.
   */
  setState?: StateSetter;
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
   * Children running the services' handlers (default: the policy's `children`, itself 4 by
   * default); the services are spread over them in declaration order, and a service whose
   * handler timed out gets a child of its own (at most {@linkcode MAX_OWN_CHILDREN}). `1` runs
   * every handler in one child; traps always run in the main child.
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

/** Whether OS-limit problems were logged already (once per process, not per sandbox). */
let limitsReported = false;

class SandboxImpl implements ChildHost {
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
  #closed = false;
  #pool: ChildPool;
  #requests: Requests;

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
    this.#pool = new ChildPool(this, options.children ?? policy.children);
    this.#requests = new Requests({
      policy,
      net: this.net,
      audit: this.audit,
      counters: this.counters_,
      hosts: () => this.decl.hosts,
      poll: options.poll,
      setState: options.setState,
    });
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
    const decl = this.#pool.decl;
    if (decl === null) {
      throw new Error("Cannot read the script's declaration: the sandbox is not started");
    }
    return decl;
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
    if (this.#pool.decl !== null) return this.#pool.decl;
    // deno loads the module graph without the read permission, and follows symlinks in the read
    // paths: check both before any child runs.
    await assertScriptAccess(this.#script, this.policy, {
      audit: this.audit,
      denoPath: this.argv[0] as string,
      prefix: this.confinement,
      env: childEnv(),
      timeoutMs: this.startTimeoutMs,
    });
    return await this.#pool.start((this.#options.prespawn ?? true) ? this.policy.host : null);
  }

  async invoke(call: HandlerInvocation, timeoutMs: number): Promise<ServiceState> {
    if (this.#closed) throw new ScriptError("Cannot run a handler: the sandbox is closed");
    if (!this.decl.services.some((s) => s.name === call.service)) {
      throw new TypeError(
        `Cannot run a handler of ${call.service}: the script declares no such service`,
      );
    }
    return await this.#pool.invoke(call, timeoutMs);
  }

  trap(event: TrapEvent): void {
    if (!this.#closed) this.#pool.trap(event);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.close();
    // Programs still running for a handler are killed; every request settles before we return.
    await this.#requests.close();
    if (this.#ownNet) await this.net.close();
    if (this.#ownAudit) this.audit.close();
  }

  // ---- ChildHost (what children call) --------------------------------------------------------

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
    this.#requests.handle(child, msg);
  }

  handlerTimedOut(child: ScriptChild, call: HandlerInvocation): void {
    this.#pool.handlerTimedOut(child, call);
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
