/**
 * The sandboxed child's side of failsh: what runs in the child around the operator's script.
 * {@linkcode runChild} is the child's start-up (the supervisor preloads `./child_main.ts`, which
 * calls it, before the script: `deno run --preload`); {@linkcode serveChild} is the RPC server
 * that sends the script's declarations, then runs its handlers and traps on request, building
 * the contexts whose privileged requests go to the supervisor.
 *
 * Like everything the child loads, this file imports no `npm:` package and nothing that needs a
 * permission to load: the child has no run, write, env, FFI or sys permission.
 *
 * @module
 */
import type { HandlerInvocation, TrapEvent } from "../contract.ts";
import { isServiceState } from "../../lib/types.ts";
import { fromWireError, toWireError, type WireError } from "../errors.ts";
import {
  type ChildMessage,
  MAX_LOG_MESSAGE,
  MAX_RPC_LINE,
  type PeerPoll,
  readLines,
  type RequestOp,
  RPC_MAGIC,
  type RunResult,
  type SupervisorMessage,
} from "../rpc.ts";
import type { HandlerContext, TrapContext } from "./api.ts";
import { type ScriptRegistry, serveThisRegistry } from "./registry.ts";

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
 * Writes one message to the supervisor on stdout (the child's side of the channel).
 *
 * @param msg The message.
 *
 * @example
 * ```ts ignore
 * import { sendToSupervisor } from "./child.ts";
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
 * import { confineChild } from "./child.ts";
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
 * import { ScriptRegistry } from "./registry.ts";
 * import { serveChild } from "./child.ts";
 * import { deepEqual } from "node:assert/strict";
 * const r = new ScriptRegistry();
 * r.host("a", { address: "127.0.0.1" });
 * r.service("web", { masters: ["a"], interval: 1000, start: async () => "UP", stop: async () => "FAIL" });
 * const sent: string[] = [];
 * await serveChild(r, { write: (l) => sent.push(l), lines: (async function* () {})() });
 * deepEqual(JSON.parse(sent[0]!).t, "decl");
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
    poll: (host) => request(inv, "poll", { host }) as Promise<PeerPoll>,
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

function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

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

/**
 * Starts the sandboxed child, before the script loads: confines it ({@linkcode confineChild}),
 * reports an error the script throws while loading to the supervisor as the reason it failed,
 * logs (and survives) an error a handler leaves unhandled later, and once the script has loaded
 * serves the supervisor ({@linkcode serveChild}) until it closes the channel, then exits.
 *
 * @example
 * ```ts ignore
 * import { runChild } from "./child.ts";
 * runChild(); // in the child only: it exits when the supervisor closes stdin
 * ```
 */
export function runChild(): void {
  const registry = serveThisRegistry();
  confineChild();
  /** Set when the script threw while loading: its declarations are not sent. */
  let loadFailed = false;
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

  const serve = async () => {
    if (loadFailed) return;
    // A script whose top level threw never finished declaring, and its error arrives after
    // `load`: on a loaded machine later than the turn below. Before reporting what is missing
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
  };
  // The main module has finished evaluating (top-level awaits included) when `load` fires: then
  // every declaration is made. The extra turn lets an error of the script's top level (reported
  // just after `load`) win.
  globalThis.addEventListener("load", () => setTimeout(serve, 0));
}
