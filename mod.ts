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
 * `deno run -A script.ts --policy policy.json`: the script then starts failsh's supervisor
 * around itself, which runs the script again, sandboxed.
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
import type { HostDecl, ScriptDecl, ServiceDecl } from "./shell/contract.ts";
import {
  CHILD_FLAG,
  confineChild,
  type HostOptions,
  ScriptRegistry,
  sendToSupervisor,
  serveChild,
  type ServiceOptions,
  type TrapHandler,
} from "./shell/script/runtime.ts";

export { PolicyDeniedError, ScriptError, TimeoutError } from "./shell/errors.ts";
export type {
  Duration,
  Handler,
  HandlerContext,
  HandlerResult,
  HostOptions,
  PollResult,
  ReleaseOptions,
  RunOptions,
  RunResult,
  ServiceOptions,
  TakeoverOptions,
  TrapContext,
  TrapHandler,
} from "./shell/script/runtime.ts";
export type {
  HandlerKind,
  HostDecl,
  ScriptDecl,
  ServiceDecl,
  TrapEvent,
} from "./shell/contract.ts";
export type { ServiceRecord, ServiceState } from "./lib/types.ts";
// The typed faild client, for tools and the REPL (a handler asks failsh to poll with ctx.poll).
export {
  AuthError,
  FaildClient,
  FaildError,
  PeerUnreachableError,
  resolveKey,
} from "./lib/client.ts";

const registry = new ScriptRegistry();
/** Whether the main module itself (directly or through its functions) declared something. */
let declaredByMain = false;

/** The modules on the stack of a declaration call (outside this file), innermost first. */
function callerModules(): string[] {
  const stack = new Error().stack ?? "";
  const here = import.meta.url;
  const urls: string[] = [];
  for (const m of stack.matchAll(/((?:file|https?):\/\/[^\s)]+?):\d+:\d+/g)) {
    const url = m[1] as string;
    if (url !== here && !url.endsWith("/shell/script/runtime.ts")) urls.push(url);
  }
  return urls;
}

function isChild(): boolean {
  return Deno.args.includes(CHILD_FLAG);
}

/** A test or doc-test module: never start failsh from it. */
function isTestModule(url: string): boolean {
  return /(_test|\.test)\.[jt]sx?$/.test(url) || /#\d+-\d+\.[jt]sx?$/.test(url) ||
    url.includes("$deno$");
}

function noteDeclaration(): void {
  if (!declaredByMain) {
    try {
      declaredByMain = callerModules().includes(Deno.mainModule);
    } catch {
      // no main module: never start failsh from here
    }
  }
}

function fileOf(url: string): string {
  return decodeURIComponent(new URL(url).pathname);
}

/** Set when the script threw while loading (child mode): its declarations are not sent. */
let loadFailed = false;

function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

if (isChild()) {
  confineChild();
  // While the script loads, an uncaught error is reported to the supervisor as the reason it
  // failed (deno then exits). After that, an error a handler left unhandled is logged and the
  // child keeps serving: one sloppy handler must not take the other services' child down.
  const onError = (error: unknown, event: Event) => {
    if (!registry.sealed) {
      loadFailed = true;
      registry.seal();
      sendToSupervisor({
        t: "fatal",
        problems: [`The script failed while loading: ${describeError(error)}`],
      });
      return;
    }
    event.preventDefault();
    sendToSupervisor({ t: "log", inv: null, msg: `Unhandled error: ${describeError(error)}` });
  };
  globalThis.addEventListener("unhandledrejection", (e) => onError(e.reason, e));
  globalThis.addEventListener("error", (e) => onError(e.error ?? e.message, e));
}

// The main module has finished evaluating (top-level awaits included) when `load` fires: then
// every declaration is made. The extra turn lets an error of the script's top level (reported
// just after `load`) win.
globalThis.addEventListener("load", () => {
  setTimeout(finish, 0);
});

// Ctrl-C in a terminal and systemd's KillMode=control-group signal every process of the group:
// the child must outlive that SIGINT/SIGTERM so failsh can still run the stop handlers on its way
// out. The child dies with failsh all the same (setpriv --pdeathsig KILL, and its closed stdin).
function ignoreGroupSignals(): void {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    try {
      Deno.addSignalListener(signal, () => {});
    } catch {
      // Not supported here: the default action stays.
    }
  }
}

async function finish(): Promise<void> {
  if (isChild()) {
    if (loadFailed) return;
    // A script whose top level threw never finished declaring, and its error arrives after
    // `load`: on a loaded machine later than the turn above. Before reporting what is missing
    // ("declares no service"), give that error up to 1 s to arrive: it is the cause to show.
    if (registry.validate().length > 0) {
      const deadline = Date.now() + 1000;
      while (!loadFailed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      if (loadFailed) return;
    }
    ignoreGroupSignals();
    await serveChild(registry);
    // The supervisor closed the channel: nothing more to do.
    Deno.exit(0);
  }
  let main: string;
  try {
    main = Deno.mainModule;
  } catch {
    return;
  }
  if (!declaredByMain || isTestModule(main) || !main.startsWith("file:")) return;
  // Run directly: start the supervisor around this script.
  const problems = registry.validate();
  if (problems.length > 0) {
    console.error(`Invalid failover script ${fileOf(main)}:\n  - ${problems.join("\n  - ")}`);
    Deno.exit(1);
  }
  const script = fileOf(main);
  const args = [...Deno.args];
  let policyPath = script.replace(/[^/]*$/, "policy.json");
  const i = args.findIndex((a) => a === "--policy" || a.startsWith("--policy="));
  if (i >= 0) {
    const a = args[i] as string;
    policyPath = a.includes("=") ? a.slice(a.indexOf("=") + 1) : args[i + 1] ?? "";
    if (policyPath === "") {
      console.error("Missing value of --policy: give the policy file, e.g. --policy policy.json");
      Deno.exit(64);
    }
  }
  const failsh = new URL("./shell/failsh.ts", import.meta.url).href;
  const { runFailsh } = await import(failsh) as {
    runFailsh(options: { script: string; policyPath: string }): Promise<number | void>;
  };
  const code = await runFailsh({ script, policyPath });
  Deno.exit(typeof code === "number" ? code : 0);
}

/**
 * Declares a host: a machine running faild that takes part in services.
 *
 * @param name Unique host name (letters, digits, `.`, `_`, `-`; it must match the host's name
 *   in the policy of the failsh running there).
 * @param options Address and port of its faild, protocol, and the name of the policy key used
 *   to sign polls (the secret stays in the operator's key file).
 * @returns The declaration.
 * @throws {TypeError} When the name, address, port or protocol is invalid, or the name is taken.
 *
 * @example
 * ```ts
 * import { host } from "./mod.ts";
 * host("gamma", { address: "198.18.0.3", port: 7100, key: "cluster" });
 * ```
 */
export function host(name: string, options: HostOptions): HostDecl {
  noteDeclaration();
  return registry.host(name, options);
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
  return registry.service(name, options);
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
  return registry.trap(fn);
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
  return registry.decl();
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
  return registry.validate();
}
