/**
 * The script side of failsh: the registry of what a failover script declares, their validation,
 * the handler context, and the child end of the RPC with the supervisor.
 *
 * Failover scripts do not import this file; they import the root `mod.ts`, which re-exports the
 * public types below. This file (and everything it imports) must stay free of `npm:` imports and
 * of anything that needs a permission to load: it runs inside the sandboxed child, which has no
 * run, write, env, FFI or sys permission.
 *
 * ## Wire protocol (JSON lines)
 * - child → supervisor, on stdout, each line prefixed with {@linkcode RPC_MAGIC}:
 *   `decl` (once, the {@linkcode ScriptDecl}), `fatal` (invalid declarations), `result` /
 *   `error` (a handler's outcome), `req` (a privileged request of a context), `log`, `trapdone`.
 * - supervisor → child, on stdin: `invoke`, `trap`, `reply` (to a `req`).
 *
 * Anything else the script prints is script output, which the supervisor logs.
 *
 * @module
 */
import type {
  HandlerInvocation,
  HandlerKind,
  HostDecl,
  ScriptDecl,
  ServiceDecl,
  TrapEvent,
} from "../contract.ts";
import { isServiceState, isValidName } from "../../lib/types.ts";
import type { ServiceRecord, ServiceState } from "../../lib/types.ts";
import { fromWireError, toWireError, type WireError } from "../errors.ts";

/** Prefix of every RPC line the child writes on stdout. */
export const RPC_MAGIC = "\u001eFAILSH1 ";

/** Argument the supervisor passes to the script to tell it it is the sandboxed child. */
export const CHILD_FLAG = "--failsh-child";

/** Longest RPC line accepted either way, in characters. */
export const MAX_RPC_LINE = 1024 * 1024;

/** Longest message of `ctx.log`, in characters. */
export const MAX_LOG_MESSAGE = 4096;

/** Default port of a faild. */
export const DEFAULT_FAILD_PORT = 7100;

/** Default time limit of each handler, in ms. */
export const DEFAULT_HANDLER_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// Public types (re-exported by mod.ts)
// ---------------------------------------------------------------------------------------------

/** A time: milliseconds as a number, or a string like `"500ms"`, `"2s"`, `"1.5m"`, `"1h"`. */
export type Duration = number | string;

/** Options of `host()`. */
export interface HostOptions {
  /** Address of the host's faild: an IP literal or a DNS name. */
  address: string;
  /** faild's port (default 7100). */
  port?: number;
  /** `http` (default) or `https`. */
  protocol?: "http" | "https";
  /** Name of a key of the operator's policy used to sign polls of this host (no secret here). */
  key?: string | null;
}

/**
 * What a handler returns: a promise of the service's new local state. Handlers are `async`
 * functions (TypeScript keeps `return "UP"` a {@linkcode ServiceState} only when the declared
 * result is a plain promise; a plain function returning a state works at run time too).
 */
export type HandlerResult = Promise<ServiceState>;

/** A start, stop or reclaim handler: an `async` function returning the new state. */
export type Handler = (ctx: HandlerContext) => HandlerResult;

/** Options of `service()`. */
export interface ServiceOptions {
  /** Master hosts, highest priority first (at least one). */
  masters: string[];
  /** Slave (backup) hosts, highest priority first (default none). */
  slaves?: string[];
  /** How often the peers are polled. */
  interval: Duration;
  /** Consecutive failed polls before a peer counts as FAIL (default 3). */
  fall?: number;
  /** Consecutive good polls before a FAIL peer counts again (default 2). */
  rise?: number;
  /** Whether a returning master takes the service back (default `true`). */
  preempt?: boolean;
  /** After start-up, how long to collect polls before any takeover (default 2 intervals). */
  grace?: Duration;
  /** Time limit of every handler, or of each kind (default 30 s each). */
  timeouts?: Duration | Partial<Record<HandlerKind, Duration>>;
  /** Starts the service here; returns the new state (usually `UP`, or `FAIL` if it could not). */
  start: Handler;
  /** Stops the service here; returns the new state (usually `FAIL`). */
  stop: Handler;
  /** Takes the service back from a slave after a RECOVER handshake (default: `start`). */
  reclaim?: Handler;
}

/** A peer as `ctx.poll()` found it. */
export interface PollResult {
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

/** Options of `ctx.takeover()`. */
export interface TakeoverOptions {
  /** The network device, e.g. `eth0` (must be listed for the address in the policy). */
  device: string;
  /** Gratuitous ARP packets sent after taking an IPv4 address (default and most: the policy's). */
  arpCount?: number;
  /** Period of a one-packet ARP refresh while held, ms (default and shortest: the policy's; 0 = none). */
  refreshMs?: number;
}

/** Options of `ctx.release()`. */
export interface ReleaseOptions {
  /** The network device the address is on. */
  device: string;
}

/** Options of `ctx.run()`. */
export interface RunOptions {
  /** Time limit in ms (capped by the policy's limit for the program). */
  timeoutMs?: number;
}

/** What a program run with `ctx.run()` did. */
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

/** What a trap can do: log, poll and run programs (no address changes). */
export interface TrapContext {
  /**
   * Asks failsh to poll a declared host's faild now.
   *
   * @param host A host name declared with `host()`.
   * @returns Its services, reachability and latency.
   */
  poll(host: string): Promise<PollResult>;
  /**
   * Runs a program of the policy (argv, never a shell string).
   *
   * @param argv The program's name in the policy, then its arguments.
   * @param options Time limit.
   * @returns Exit code and captured output; a policy refusal rejects with `PolicyDeniedError`.
   */
  run(argv: string[], options?: RunOptions): Promise<RunResult>;
  /**
   * Writes a line to failsh's log (facility `script`).
   *
   * @param message The text (cut at 4096 characters).
   */
  log(message: string): void;
}

/** What a handler receives. */
export interface HandlerContext extends TrapContext {
  /** The service this handler runs for. */
  readonly service: string;
  /** Which handler runs: `start`, `stop` or `reclaim`. */
  readonly kind: HandlerKind;
  /** The name of the host failsh runs on. */
  readonly self: string;
  /** Why the scheduler invoked the handler (its decision's reason). */
  readonly reason: string;
  /** The peers' last known services, by host name (unreachable hosts are absent). */
  readonly peers: Readonly<Record<string, ServiceRecord[]>>;
  /** Aborted when the handler's time limit is reached (the child is killed right after). */
  readonly signal: AbortSignal;
  /**
   * The last known state of a service on a peer (`FAIL` when the host is unreachable or does
   * not report the service).
   *
   * @param host A host name.
   * @param service A service name (default: this handler's).
   * @returns The state.
   */
  peerState(host: string, service?: string): ServiceState;
  /**
   * Takes over an address: failsh adds it to the device and announces it (gratuitous ARP for
   * IPv4, unsolicited neighbour advertisement for IPv6). Idempotent.
   *
   * @param address The address with its prefix length, e.g. `198.18.0.100/24`.
   * @param options The device and ARP settings.
   * @returns Once the address is in place; rejects with `PolicyDeniedError` when refused.
   */
  takeover(address: string, options: TakeoverOptions): Promise<void>;
  /**
   * Releases an address taken over before.
   *
   * @param address The address with its prefix length.
   * @param options The device.
   * @returns Once the address is gone; rejects with `PolicyDeniedError` when refused.
   */
  release(address: string, options: ReleaseOptions): Promise<void>;
  /**
   * Sets this service's state on the local faild right away (the state the handler returns is
   * set anyway when it returns).
   *
   * @param state The state.
   * @param detail Free text shown by failc / failstat.
   */
  setState(state: ServiceState, detail?: string): Promise<void>;
}

/** A trap: called for every {@linkcode TrapEvent}, in order of registration. */
export type TrapHandler = (event: TrapEvent, ctx: TrapContext) => void | Promise<void>;

// ---------------------------------------------------------------------------------------------
// Declarations
// ---------------------------------------------------------------------------------------------

/**
 * Parses a {@linkcode Duration} to milliseconds.
 *
 * @param value Milliseconds, or a string like `"250ms"`, `"2s"`, `"1.5m"`, `"1h"`.
 * @param field The option's name, for the error.
 * @returns Milliseconds (rounded to an integer).
 * @throws {TypeError} When the value is not a duration.
 *
 * @example
 * ```ts
 * import { parseDuration } from "./runtime.ts";
 * console.log(parseDuration("1.5s", "interval")); // 1500
 * ```
 */
export function parseDuration(value: Duration, field: string): number {
  if (typeof value === "number") {
    if (!Number.isFinite(value)) {
      throw new TypeError(`Invalid ${field}: ${value} is not a finite number of milliseconds`);
    }
    return Math.round(value);
  }
  const m = typeof value === "string"
    ? /^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*$/.exec(value)
    : null;
  if (!m) {
    throw new TypeError(
      `Invalid ${field}: ${
        JSON.stringify(value)
      } is not a duration (use milliseconds or a string like "500ms", "2s", "1m")`,
    );
  }
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "ms" | "s" | "m" | "h"];
  return Math.round(Number(m[1]) * unit);
}

function inRange(
  value: number,
  min: number,
  max: number,
  what: string,
  unit = "ms",
): void {
  if (!(value >= min && value <= max)) {
    throw new RangeError(`Invalid ${what}: ${value} ${unit} is outside ${min}-${max} ${unit}`);
  }
}

interface ServiceEntry {
  decl: ServiceDecl;
  handlers: Partial<Record<HandlerKind, Handler>>;
}

/**
 * Everything one script declared, with the handlers. `mod.ts` keeps one for the script; tests
 * make their own.
 *
 * @example
 * ```ts
 * import { ScriptRegistry } from "./runtime.ts";
 * const r = new ScriptRegistry();
 * r.host("alpha", { address: "127.0.0.1" });
 * r.host("beta", { address: "127.0.0.2" });
 * r.service("web", {
 *   masters: ["alpha"], slaves: ["beta"], interval: "1s",
 *   start: async () => "UP", stop: async () => "FAIL",
 * });
 * console.log(r.validate()); // []
 * console.log(r.decl().services[0]!.intervalMs); // 1000
 * ```
 */
export class ScriptRegistry {
  #hosts = new Map<string, HostDecl>();
  #services = new Map<string, ServiceEntry>();
  #traps: TrapHandler[] = [];
  #sealed = false;

  /** Whether the declarations were sent to the supervisor (no more may be made). */
  get sealed(): boolean {
    return this.#sealed;
  }

  /** Forbids further declarations. */
  seal(): void {
    this.#sealed = true;
  }

  #checkOpen(what: string): void {
    if (this.#sealed) {
      throw new Error(
        `Cannot declare ${what}: the script has already loaded (declare hosts, services and traps while the script loads, not later)`,
      );
    }
  }

  /**
   * Declares a host.
   *
   * @param name Unique host name (letters, digits, `.`, `_`, `-`).
   * @param options Its faild's address, port, protocol and key name.
   * @returns The declaration.
   * @throws {TypeError} On a bad name, address, port or protocol; {@linkcode Error} on a duplicate.
   */
  host(name: string, options: HostOptions): HostDecl {
    this.#checkOpen(`host ${name}`);
    if (typeof name !== "string" || !isValidName(name)) {
      throw new TypeError(
        `Invalid host name ${
          JSON.stringify(name)
        }: use 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit`,
      );
    }
    if (this.#hosts.has(name)) throw new Error(`Cannot declare host ${name}: it is declared twice`);
    if (typeof options !== "object" || options === null) {
      throw new TypeError(`Invalid host ${name}: options must be an object with an address`);
    }
    const address = options.address;
    if (
      typeof address !== "string" || address.length === 0 || address.length > 253 ||
      !/^[A-Za-z0-9.:_-]+$/.test(address)
    ) {
      throw new TypeError(
        `Invalid host ${name}: address must be an IP address or a DNS name, got ${
          JSON.stringify(address)
        }`,
      );
    }
    const port = options.port ?? DEFAULT_FAILD_PORT;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(`Invalid host ${name}: port must be 1-65535, got ${port}`);
    }
    const protocol = options.protocol ?? "http";
    if (protocol !== "http" && protocol !== "https") {
      throw new TypeError(
        `Invalid host ${name}: protocol must be "http" or "https", got ${JSON.stringify(protocol)}`,
      );
    }
    const key = options.key ?? null;
    if (key !== null && (typeof key !== "string" || !isValidName(key))) {
      throw new TypeError(
        `Invalid host ${name}: key must name a key of the policy, got ${JSON.stringify(key)}`,
      );
    }
    const decl: HostDecl = { name, address, port, protocol, key };
    this.#hosts.set(name, decl);
    return decl;
  }

  /**
   * Declares a service.
   *
   * @param name Unique service name.
   * @param options Masters, slaves, interval, hysteresis, handlers…
   * @returns The declaration sent to the supervisor.
   * @throws {TypeError} / {@linkcode RangeError} On a bad option, naming it.
   */
  service(name: string, options: ServiceOptions): ServiceDecl {
    this.#checkOpen(`service ${name}`);
    if (typeof name !== "string" || !isValidName(name)) {
      throw new TypeError(
        `Invalid service name ${
          JSON.stringify(name)
        }: use 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit`,
      );
    }
    if (this.#services.has(name)) {
      throw new Error(`Cannot declare service ${name}: it is declared twice`);
    }
    if (typeof options !== "object" || options === null) {
      throw new TypeError(`Invalid service ${name}: options must be an object`);
    }
    const list = (field: "masters" | "slaves", required: boolean): string[] => {
      const v = options[field] ?? (required ? undefined : []);
      if (!Array.isArray(v) || !v.every((h) => typeof h === "string")) {
        throw new TypeError(`Invalid service ${name}: ${field} must be a list of host names`);
      }
      if (new Set(v).size !== v.length) {
        throw new TypeError(`Invalid service ${name}: ${field} lists a host twice`);
      }
      return [...v];
    };
    const masters = list("masters", true);
    const slaves = list("slaves", false);
    if (masters.length === 0) {
      throw new TypeError(`Invalid service ${name}: masters must name at least one host`);
    }
    const both = masters.filter((m) => slaves.includes(m));
    if (both.length > 0) {
      throw new TypeError(
        `Invalid service ${name}: ${both.join(", ")} cannot be both master and slave`,
      );
    }
    if (options.interval === undefined) {
      throw new TypeError(`Invalid service ${name}: interval is required (e.g. "1s")`);
    }
    const intervalMs = parseDuration(options.interval, `interval of service ${name}`);
    inRange(intervalMs, 10, 3_600_000, `interval of service ${name}`);
    const int = (field: "fall" | "rise", dflt: number): number => {
      const v = options[field] ?? dflt;
      if (!Number.isInteger(v) || v < 1 || v > 100) {
        throw new RangeError(
          `Invalid service ${name}: ${field} must be an integer 1-100, got ${v}`,
        );
      }
      return v;
    };
    const fall = int("fall", 3);
    const rise = int("rise", 2);
    const preempt = options.preempt ?? true;
    if (typeof preempt !== "boolean") {
      throw new TypeError(`Invalid service ${name}: preempt must be true or false`);
    }
    const graceMs = options.grace === undefined
      ? 2 * intervalMs
      : parseDuration(options.grace, `grace of service ${name}`);
    inRange(graceMs, 0, 3_600_000, `grace of service ${name}`);
    const timeouts: Record<HandlerKind, number> = {
      start: DEFAULT_HANDLER_TIMEOUT_MS,
      stop: DEFAULT_HANDLER_TIMEOUT_MS,
      reclaim: DEFAULT_HANDLER_TIMEOUT_MS,
    };
    const t = options.timeouts;
    if (typeof t === "number" || typeof t === "string") {
      const ms = parseDuration(t, `timeouts of service ${name}`);
      timeouts.start = timeouts.stop = timeouts.reclaim = ms;
    } else if (t !== undefined) {
      if (typeof t !== "object" || t === null) {
        throw new TypeError(`Invalid service ${name}: timeouts must be a duration or an object`);
      }
      for (const [k, v] of Object.entries(t)) {
        if (k !== "start" && k !== "stop" && k !== "reclaim") {
          throw new TypeError(
            `Invalid service ${name}: timeouts.${k} is not a handler (use start, stop, reclaim)`,
          );
        }
        if (v !== undefined) timeouts[k] = parseDuration(v, `timeouts.${k} of service ${name}`);
      }
    }
    for (const k of ["start", "stop", "reclaim"] as const) {
      inRange(timeouts[k], 1, 3_600_000, `timeouts.${k} of service ${name}`);
    }
    const handlers: Partial<Record<HandlerKind, Handler>> = {};
    for (const k of ["start", "stop", "reclaim"] as const) {
      const h = options[k];
      if (h === undefined && k === "reclaim") continue;
      if (typeof h !== "function") {
        throw new TypeError(
          `Invalid service ${name}: ${k} must be a function returning the new state`,
        );
      }
      handlers[k] = h;
    }
    const decl: ServiceDecl = {
      name,
      masters,
      slaves,
      intervalMs,
      fall,
      rise,
      preempt,
      graceMs,
      timeouts,
      handlers: (["start", "stop", "reclaim"] as const).filter((k) => handlers[k] !== undefined),
    };
    this.#services.set(name, { decl, handlers });
    return decl;
  }

  /**
   * Registers a trap.
   *
   * @param fn Called for every event.
   * @returns The number of traps registered so far.
   * @throws {TypeError} When `fn` is not a function.
   */
  trap(fn: TrapHandler): number {
    this.#checkOpen("a trap");
    if (typeof fn !== "function") throw new TypeError("Invalid trap: it must be a function");
    this.#traps.push(fn);
    return this.#traps.length;
  }

  /**
   * Checks the declarations as a whole (hosts named by services exist, there is a service).
   *
   * @returns One message per problem; empty when the script is valid.
   */
  validate(): string[] {
    const problems: string[] = [];
    if (this.#services.size === 0) problems.push("The script declares no service");
    for (const { decl } of this.#services.values()) {
      for (const h of [...decl.masters, ...decl.slaves]) {
        if (!this.#hosts.has(h)) {
          const role = decl.masters.includes(h) ? "masters" : "slaves";
          problems.push(
            `Invalid service ${decl.name}: ${role} names host ${
              JSON.stringify(h)
            }, which is not declared (declared: ${[...this.#hosts.keys()].join(", ") || "none"})`,
          );
        }
      }
    }
    return problems;
  }

  /**
   * What the script declared (as sent to the supervisor).
   *
   * @returns Hosts, services and the number of traps.
   */
  decl(): ScriptDecl {
    return {
      hosts: [...this.#hosts.values()].map((h) => ({ ...h })),
      services: [...this.#services.values()].map(({ decl }) => structuredClone(decl)),
      traps: this.#traps.length,
    };
  }

  /**
   * The handler of a service.
   *
   * @param service The service.
   * @param kind Which handler (`reclaim` falls back to `start`).
   * @returns The function, or `undefined` when the service is unknown.
   */
  handler(service: string, kind: HandlerKind): Handler | undefined {
    const entry = this.#services.get(service);
    if (!entry) return undefined;
    return entry.handlers[kind] ?? (kind === "reclaim" ? entry.handlers.start : undefined);
  }

  /** The traps, in order of registration. */
  traps(): readonly TrapHandler[] {
    return this.#traps;
  }
}

/**
 * Checks a declaration received from a script's child: it must be exactly what a
 * {@linkcode ScriptRegistry} produces for the same declarations (the supervisor does not trust
 * the child, which could write any JSON on its channel).
 *
 * @param value The received `decl`.
 * @returns The declaration.
 * @throws {TypeError} Naming the first problem.
 *
 * @example
 * ```ts
 * import { checkDecl } from "./runtime.ts";
 * try {
 *   checkDecl({ hosts: [], services: [{ name: "web", intervalMs: 0 }], traps: 0 });
 * } catch (e) {
 *   console.log((e as Error).message);
 * }
 * ```
 */
export function checkDecl(value: unknown): ScriptDecl {
  const fail = (why: string): never => {
    throw new TypeError(`Invalid declaration from the script: ${why}`);
  };
  if (typeof value !== "object" || value === null) fail("not an object");
  const v = value as Record<string, unknown>;
  if (!Array.isArray(v.hosts) || !Array.isArray(v.services)) {
    fail("hosts and services must be lists");
  }
  if (!Number.isInteger(v.traps) || (v.traps as number) < 0 || (v.traps as number) > 10_000) {
    fail("traps must be a count");
  }
  const r = new ScriptRegistry();
  const noop = () => Promise.resolve("FAIL" as const);
  try {
    for (const h of v.hosts as HostDecl[]) {
      if (typeof h !== "object" || h === null) fail("a host is not an object");
      r.host(h.name, { address: h.address, port: h.port, protocol: h.protocol, key: h.key });
    }
    for (const d of v.services as ServiceDecl[]) {
      if (typeof d !== "object" || d === null || !Array.isArray(d.handlers)) {
        fail("a service is not an object with handlers");
      }
      r.service(d.name, {
        masters: d.masters,
        slaves: d.slaves,
        interval: d.intervalMs,
        fall: d.fall,
        rise: d.rise,
        preempt: d.preempt,
        grace: d.graceMs,
        timeouts: d.timeouts,
        start: noop,
        stop: noop,
        ...(d.handlers.includes("reclaim") ? { reclaim: noop } : {}),
      });
    }
  } catch (e) {
    fail((e as Error).message);
  }
  for (let i = 0; i < (v.traps as number); i++) r.trap(() => {});
  const problems = r.validate();
  if (problems.length > 0) fail(problems.join("; "));
  const decl = r.decl();
  if (JSON.stringify(decl) !== JSON.stringify(value)) {
    fail("it has fields or values mod.ts never sends");
  }
  return decl;
}

// ---------------------------------------------------------------------------------------------
// The child end of the RPC
// ---------------------------------------------------------------------------------------------

/** A message from the child to the supervisor. */
export type ChildMessage =
  | { t: "decl"; decl: ScriptDecl }
  | { t: "fatal"; problems: string[] }
  | { t: "result"; id: number; state: ServiceState }
  | { t: "error"; id: number; error: WireError }
  | { t: "req"; id: number; inv: number | null; op: RequestOp; args: Record<string, unknown> }
  | { t: "log"; inv: number | null; msg: string }
  | { t: "trapdone"; id: number; errors: WireError[] };

/** The privileged requests a context can make. */
export type RequestOp = "poll" | "takeover" | "release" | "run" | "setState";

/** A message from the supervisor to the child. */
export type SupervisorMessage =
  | { t: "invoke"; id: number; call: HandlerInvocation; timeoutMs: number }
  | { t: "trap"; id: number; event: TrapEvent }
  | { t: "reply"; id: number; ok: true; value: unknown }
  | { t: "reply"; id: number; ok: false; error: WireError };

/** How the child talks to the supervisor (stdin/stdout by default; replaceable in tests). */
export interface ChildIo {
  /** Writes one complete line (without the newline). */
  write(line: string): void;
  /** The lines received, until the supervisor closes the channel. */
  lines: AsyncIterable<string>;
}

function stdoutWrite(line: string): void {
  const data = new TextEncoder().encode(line + "\n");
  let off = 0;
  while (off < data.length) off += Deno.stdout.writeSync(data.subarray(off));
}

/**
 * Splits a byte stream into lines, dropping (and reporting) lines longer than `max`.
 *
 * @param stream The bytes.
 * @param max Longest line kept, in characters.
 * @param onTooLong Told about each dropped line.
 * @returns The lines, without their newline.
 *
 * @example
 * ```ts
 * import { readLines } from "./runtime.ts";
 * const stream = ReadableStream.from([new TextEncoder().encode("a\nb\n")]);
 * for await (const line of readLines(stream, 100)) console.log(line);
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

/**
 * Writes one message to the supervisor on stdout (the child's side of the channel).
 *
 * @param msg The message.
 *
 * @example
 * ```ts ignore
 * import { sendToSupervisor } from "./runtime.ts";
 * sendToSupervisor({ t: "log", inv: null, msg: "hello" });
 * ```
 */
export function sendToSupervisor(msg: ChildMessage): void {
  stdoutWrite(RPC_MAGIC + JSON.stringify(msg));
}

function stdio(): ChildIo {
  return {
    write: (line) => stdoutWrite(RPC_MAGIC + line),
    lines: readLines(Deno.stdin.readable, MAX_RPC_LINE),
  };
}

/** Message of the error `new Worker()` throws in the sandboxed child. */
export const NO_WORKER_MESSAGE =
  "Cannot start a Worker: a failover script runs in one thread (see docs/sandbox.md)";

/**
 * Confines the child's JavaScript before the script's own code runs (`mod.ts` calls it in the
 * sandboxed child): `new Worker()` throws a clear `TypeError`. This is a courtesy, not the
 * bound: `node:worker_threads` reaches the runtime another way, and it is the child's
 * `RLIMIT_DATA` (no room for a second V8 code range) that stops every Worker.
 *
 * @example
 * ```ts ignore
 * import { confineChild } from "./runtime.ts";
 * confineChild();
 * new Worker("data:text/javascript,"); // TypeError: Cannot start a Worker: …
 * ```
 */
export function confineChild(): void {
  class Worker {
    constructor() {
      throw new TypeError(NO_WORKER_MESSAGE);
    }
  }
  Object.defineProperty(globalThis, "Worker", {
    value: Worker,
    writable: false,
    configurable: false,
    enumerable: false,
  });
}

/**
 * Serves the supervisor: sends the declarations, then runs handlers and traps on request until
 * the supervisor closes stdin. Used by `mod.ts` in the sandboxed child.
 *
 * @param registry The script's declarations.
 * @param io The channel (default: stdin / stdout with {@linkcode RPC_MAGIC}).
 * @returns When the channel closes.
 *
 * @example
 * ```ts
 * import { ScriptRegistry, serveChild } from "./runtime.ts";
 * const r = new ScriptRegistry();
 * r.host("a", { address: "127.0.0.1" });
 * r.service("web", { masters: ["a"], interval: 1000, start: async () => "UP", stop: async () => "FAIL" });
 * const sent: string[] = [];
 * await serveChild(r, { write: (l) => sent.push(l), lines: (async function* () {})() });
 * console.log(JSON.parse(sent[0]!).t); // "decl"
 * ```
 */
export async function serveChild(registry: ScriptRegistry, io: ChildIo = stdio()): Promise<void> {
  registry.seal();
  const send = (m: ChildMessage) => io.write(JSON.stringify(m));
  const problems = registry.validate();
  if (problems.length > 0) {
    send({ t: "fatal", problems });
    return;
  }
  send({ t: "decl", decl: registry.decl() });

  let nextReq = 1;
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  const request = (inv: number | null, op: RequestOp, args: Record<string, unknown>) =>
    new Promise<unknown>((resolve, reject) => {
      const id = nextReq++;
      pending.set(id, { resolve, reject });
      send({ t: "req", id, inv, op, args });
    });

  const trapContext = (inv: number | null): TrapContext => ({
    poll: (host) => request(inv, "poll", { host }) as Promise<PollResult>,
    run: (argv, options = {}) =>
      request(inv, "run", {
        argv,
        ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      }) as Promise<RunResult>,
    log: (message) => send({ t: "log", inv, msg: String(message).slice(0, MAX_LOG_MESSAGE) }),
  });

  const invoke = async (id: number, call: HandlerInvocation, timeoutMs: number) => {
    const handler = registry.handler(call.service, call.kind);
    if (!handler) {
      send({
        t: "error",
        id,
        error: {
          name: "Error",
          message: `The script has no ${call.kind} handler for ${call.service}`,
        },
      });
      return;
    }
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new DOMException("Handler time limit reached", "TimeoutError")),
      Math.max(1, timeoutMs),
    );
    const peers = Object.freeze(structuredClone(call.peers ?? {}));
    const ctx: HandlerContext = {
      ...trapContext(id),
      service: call.service,
      kind: call.kind,
      self: call.self,
      reason: call.reason,
      peers,
      signal: controller.signal,
      peerState(host, service = call.service) {
        return peers[host]?.find((s) => s.name === service)?.state ?? "FAIL";
      },
      takeover: async (address, options) => {
        await request(id, "takeover", { address, ...options });
      },
      release: async (address, options) => {
        await request(id, "release", { address, ...options });
      },
      setState: async (state, detail) => {
        await request(id, "setState", { state, detail: detail ?? "" });
      },
    };
    try {
      const state = await handler(ctx);
      if (!isServiceState(state)) {
        throw new TypeError(
          `Handler ${call.kind} of ${call.service} returned ${
            JSON.stringify(state) ?? String(state)
          }: it must return "UP", "RECOVER" or "FAIL"`,
        );
      }
      send({ t: "result", id, state });
    } catch (e) {
      send({ t: "error", id, error: toWireError(e) });
    } finally {
      clearTimeout(timer);
    }
  };

  const runTraps = async (id: number, event: TrapEvent) => {
    const errors: WireError[] = [];
    for (const fn of registry.traps()) {
      try {
        // The trap event's id names the requests it makes: the supervisor refuses requests
        // that belong to no running handler or trap.
        await fn(event, trapContext(id));
      } catch (e) {
        errors.push(toWireError(e));
      }
    }
    send({ t: "trapdone", id, errors });
  };

  for await (const line of io.lines) {
    let msg: SupervisorMessage;
    try {
      msg = JSON.parse(line);
    } catch {
      continue;
    }
    if (msg.t === "invoke") invoke(msg.id, msg.call, msg.timeoutMs);
    else if (msg.t === "trap") runTraps(msg.id, msg.event);
    else if (msg.t === "reply") {
      const p = pending.get(msg.id);
      if (!p) continue;
      pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.value);
      else p.reject(fromWireError(msg.error));
    }
  }
  for (const p of pending.values()) p.reject(new Error("The supervisor closed the channel"));
  pending.clear();
}
