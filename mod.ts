/**
 * The typed API of a failover script.
 *
 * A script declares its hosts (where their faild listens), its services (masters, slaves,
 * poll interval, hysteresis, and the start / stop / reclaim handlers that return the new state)
 * and traps. failsh polls the peers, decides, and runs the handlers; inside a handler the
 * context polls a peer, takes over or releases an address, runs a program or logs — each
 * privileged request checked by the supervisor against the operator's policy.
 *
 * The script always runs in a sandboxed child (`deno run --no-prompt` with no run, write, env,
 * FFI or sys permission, and network only where the policy allows). Run it with
 * `deno task failsh script.ts --policy policy.json`, or directly with
 * `deno run -A script.ts --policy policy.json` (any failsh option passes through): the script
 * then starts failsh's supervisor around itself, which runs the script again, sandboxed.
 *
 * Importing this module has no side effect beyond declaring. The faild client for tools is the
 * package's `./client` entry, not this one.
 *
 * Declare everything while the script loads (at its top level; top-level `await` is fine): the
 * declarations are sent to the supervisor once the module has finished loading.
 *
 * @example A master / slave pair with a floating address
 * ```ts
 * import { host, service } from "./mod.ts";
 *
 * host("alpha", { address: "198.18.0.1", key: "cluster" });
 * host("beta", { address: "198.18.0.2", key: "cluster" });
 *
 * service("web", {
 *   masters: ["alpha"],
 *   slaves: ["beta"],
 *   interval: "500ms",
 *   fall: 3,
 *   async start(ctx) {
 *     await ctx.takeover("198.18.0.100/24", { device: "eth0" });
 *     const r = await ctx.run(["systemctl", "start", "nginx"], { timeoutMs: 5000 });
 *     return r.code === 0 ? "UP" : "FAIL";
 *   },
 *   async stop(ctx) {
 *     await ctx.run(["systemctl", "stop", "nginx"]);
 *     await ctx.release("198.18.0.100/24", { device: "eth0" });
 *     return "FAIL";
 *   },
 * });
 * ```
 *
 * @module
 */
import type { ArbiterDecl, HostDecl, ScriptDecl, ServiceDecl } from "./shell/contract.ts";
import type {
  ArbiterOptions,
  HostOptions,
  ServiceOptions,
  TrapHandler,
} from "./shell/script/api.ts";
import { scriptRegistry } from "./shell/script/registry.ts";
import { noteDeclaration } from "./shell/script/direct_run.ts";

export { PolicyDeniedError, ScriptError, TimeoutError } from "./shell/errors.ts";
export type {
  ArbiterOptions,
  Duration,
  Handler,
  HandlerContext,
  HandlerResult,
  HostOptions,
  LivenessOptions,
  PeerPoll,
  ReleaseOptions,
  RunOptions,
  RunResult,
  ServiceOptions,
  TakeoverOptions,
  TrapContext,
  TrapHandler,
} from "./shell/script/api.ts";
export type {
  ArbiterDecl,
  HandlerKind,
  HostDecl,
  LivenessDecl,
  ScriptDecl,
  ServiceDecl,
  TrapEvent,
} from "./shell/contract.ts";
export type { ServiceRecord, ServiceState } from "./lib/types.ts";

/**
 * Declares a host: a machine running faild that takes part in services.
 *
 * @param name Unique host name (letters, digits, `.`, `_`, `-`; it must match the host's name
 *   in the policy of the failsh running there).
 * @param options Address and port of its faild, protocol, the name of the policy key used
 *   to sign polls (the secret stays in the operator's key file), and optionally `liveness`:
 *   failsh pings the host every `interval` and counts it dead at once after `fall` unanswered
 *   echo requests (its kernel answered before), whatever the services' poll interval.
 * @returns The declaration.
 * @throws {TypeError} When the name, address, port or protocol is invalid, or the name is taken.
 *
 * @example
 * ```ts
 * import { host } from "./mod.ts";
 * host("gamma", { address: "198.18.0.3", port: 7100, key: "cluster" });
 * host("delta", { address: "198.18.0.4", key: "cluster", liveness: { interval: "10ms", fall: 5 } });
 * ```
 */
export function host(name: string, options: HostOptions): HostDecl {
  noteDeclaration();
  return scriptRegistry().host(name, options);
}

/**
 * Declares a service and its handlers. Each handler returns the service's new local state
 * (`UP`, `RECOVER` or `FAIL`): write them as `async` functions. Handlers of one service never
 * run at the same time.
 *
 * @param name Unique service name.
 * @param options Masters and slaves (host names, highest priority first), poll `interval`,
 *   `fall` / `rise` hysteresis, `preempt`, start-up `grace`, handler `timeouts`, and the
 *   `start`, `stop` and optional `reclaim` handlers.
 * @returns The declaration sent to failsh.
 * @throws {TypeError} Or {@linkcode RangeError} when an option is invalid (the message names it).
 *
 * @example
 * ```ts
 * import { service } from "./mod.ts";
 * service("db", {
 *   masters: ["alpha"],
 *   slaves: ["beta"],
 *   interval: "1s",
 *   preempt: false,
 *   timeouts: { start: "20s", stop: "10s" },
 *   start: async (ctx) => {
 *     ctx.log(`starting db: ${ctx.reason}`);
 *     return "UP";
 *   },
 *   stop: async () => "FAIL",
 * });
 * ```
 */
export function service(name: string, options: ServiceOptions): ServiceDecl {
  noteDeclaration();
  return scriptRegistry().service(name, options);
}

/**
 * Declares the cluster's etcd arbiter, once, the same on every host: a host then takes a service
 * only after acquiring the service's key in etcd and lets it go before etcd can hand the key to
 * anyone else, so a partitioned host does not keep the address (see `docs/arbiter.md`). failsh's
 * supervisor talks to etcd, never the script; the policy's `etcd` must list each endpoint.
 *
 * @param options Endpoints, key prefix, TTL and the other times, `onArbiterLoss`.
 * @returns The declaration (times in ms, defaults filled in).
 * @throws {TypeError} On a bad endpoint, prefix or option; {@linkcode RangeError} when the timing
 *   breaks `renew + 2 × timeout + margin ≤ TTL` (or another of its rules, each named).
 *
 * @example
 * ```ts
 * import { arbiter } from "./mod.ts";
 * import { deepEqual } from "node:assert/strict";
 * const a = arbiter({
 *   endpoints: ["http://198.18.1.11:2379", "http://198.18.1.12:2379", "http://198.18.1.13:2379"],
 *   ttl: "6s",
 * });
 * deepEqual(a.takeoverDelayMs, 3000);
 * ```
 */
export function arbiter(options: ArbiterOptions): ArbiterDecl {
  noteDeclaration();
  return scriptRegistry().arbiter(options);
}

/**
 * Registers a trap: a function called for every state change of a service on any host and
 * every change of a host's reachability. Traps run in order, in the sandbox, and may log, poll
 * and run programs.
 *
 * @param fn The trap.
 * @returns The number of traps registered so far.
 * @throws {TypeError} When `fn` is not a function.
 *
 * @example
 * ```ts
 * import { trap } from "./mod.ts";
 * trap((event, ctx) => {
 *   if (event.type === "host" && event.state === "FAIL") ctx.log(`lost ${event.host}`);
 * });
 * ```
 */
export function trap(fn: TrapHandler): number {
  noteDeclaration();
  return scriptRegistry().trap(fn);
}

/**
 * What this script has declared so far (for tools and tests that import a script).
 *
 * @returns Hosts, services and the number of traps.
 *
 * @example
 * ```ts
 * import { declarations } from "./mod.ts";
 * console.log(declarations().services.length);
 * ```
 */
export function declarations(): ScriptDecl {
  return scriptRegistry().decl();
}

/**
 * Checks the declarations as a whole: every host named by a service is declared, and there is at
 * least one service.
 *
 * @returns One message per problem (empty when valid).
 *
 * @example
 * ```ts
 * import { validate } from "./mod.ts";
 * for (const problem of validate()) console.error(problem);
 * ```
 */
export function validate(): string[] {
  return scriptRegistry().validate();
}
