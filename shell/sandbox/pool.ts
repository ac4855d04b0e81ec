/**
 * The children of one sandbox: the main child (it loads the declaration and runs the traps) and
 * a pool that runs the services' handlers, service _i_ in child _i_ mod the pool size; a service
 * whose handler timed out gets a child of its own (at most {@linkcode MAX_OWN_CHILDREN}). A child
 * that died is restarted at its next handler and must declare exactly what the first one did; a
 * handler another handler's timeout interrupted runs again, once. See `docs/sandbox.md`, "A few
 * children shared by the services".
 *
 * @module
 */
import type { HandlerInvocation, ScriptDecl, TrapEvent } from "../contract.ts";
import type { ServiceState } from "../../lib/types.ts";
import { ScriptError } from "../errors.ts";
import { type ChildHost, CollateralError, ScriptChild } from "./child.ts";

/** Default number of children running the services' handlers (plus the main one for traps). */
export const DEFAULT_CHILDREN = 4;

/** Most children running the services' handlers the policy's `children` may ask for. */
export const MAX_CHILDREN = 16;

/** Most services moved to a child of their own after a handler of theirs timed out. */
export const MAX_OWN_CHILDREN = 4;

/** The children of a sandbox, by the job they do. */
export class ChildPool {
  #host: ChildHost;
  #size: number;
  /** Children by key: `main` (traps), `pool:N` (shared), `own:SERVICE`. */
  #children = new Map<string, ScriptChild>();
  /** Each service's place in the declaration (its pool slot is this modulo the pool size). */
  #index = new Map<string, number>();
  /** Services moved to a child of their own after a timeout. */
  #own = new Set<string>();
  #reaping = new Set<Promise<void>>();
  #decl: ScriptDecl | null = null;
  #declJson = "";
  #closed = false;

  /**
   * Creates the pool; no child starts before {@linkcode ChildPool.start}.
   *
   * @param host What the children need from their sandbox.
   * @param size Children running the services' handlers (at least 1).
   */
  constructor(host: ChildHost, size: number) {
    this.#host = host;
    this.#size = Math.max(1, Math.floor(size));
  }

  /** The declaration, once the main child has sent it. */
  get decl(): ScriptDecl | null {
    return this.#decl;
  }

  /**
   * Starts the main child and waits for its declaration; with `prespawnFor`, also starts the
   * children of the services that host takes part in.
   *
   * @param prespawnFor This host's name, or `null` to start the other children at their first
   *   handler.
   * @returns The declaration.
   */
  async start(prespawnFor: string | null): Promise<ScriptDecl> {
    if (this.#decl !== null) return this.#decl;
    const main = new ScriptChild("main", this.#host);
    this.#children.set("main", main);
    const decl = await main.start();
    this.#decl = decl;
    this.#declJson = JSON.stringify(decl);
    decl.services.forEach((s, i) => this.#index.set(s.name, i));
    if (prespawnFor !== null) {
      const mine = decl.services.filter((s) =>
        s.masters.includes(prespawnFor) || s.slaves.includes(prespawnFor)
      );
      const keys = new Set(mine.map((s) => this.#keyFor(s.name)));
      await Promise.all([...keys].map((key) => this.#ensure(key)));
    }
    return decl;
  }

  /** The child a service's handlers run in: its own, or its slot of the pool. */
  #keyFor(service: string): string {
    if (this.#own.has(service)) return `own:${service}`;
    return `pool:${(this.#index.get(service) ?? 0) % this.#size}`;
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
    child = new ScriptChild(label, this.#host);
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

  /**
   * Runs a handler in its service's child, restarted if needed; a handler interrupted by
   * another's timeout runs again, once, within what is left of its own time limit.
   *
   * @param call The invocation (its service is declared).
   * @param timeoutMs Its time limit.
   * @returns The state it returned.
   */
  async invoke(call: HandlerInvocation, timeoutMs: number): Promise<ServiceState> {
    const deadline = performance.now() + timeoutMs;
    let retried = false;
    while (true) {
      const child = await this.#ensure(this.#keyFor(call.service));
      const left = Math.round(deadline - performance.now());
      try {
        return await child.invoke(call, retried ? Math.max(1, left) : timeoutMs, timeoutMs);
      } catch (e) {
        const remaining = deadline - performance.now();
        if (!(e instanceof CollateralError) || retried || remaining < 100 || this.#closed) {
          throw e;
        }
        retried = true;
        this.#host.counters.handlers.retried++;
        this.#host.logger.warn("sandbox", "retrying a handler its child's kill interrupted", {
          service: call.service,
          kind: call.kind,
          reason: e.message,
        });
      }
    }
  }

  /**
   * A handler timed out in `child` (killed right after): its service gets a child of its own,
   * unless it has one or is alone in its child, or too many services have one already.
   *
   * @param child The child.
   * @param call The handler that timed out.
   */
  handlerTimedOut(child: ScriptChild, call: HandlerInvocation): void {
    const service = call.service;
    if (this.#own.has(service) || this.#decl === null) return;
    const key = this.#keyFor(service);
    const sharing = this.#decl.services.filter((s) => this.#keyFor(s.name) === key).length;
    if (sharing <= 1) return;
    const log = this.#host.logger;
    if (this.#own.size >= MAX_OWN_CHILDREN) {
      log.warn("sandbox", "a service keeps its shared child: too many have their own", {
        service,
        child: child.label,
      });
      return;
    }
    this.#own.add(service);
    log.warn("sandbox", "a service gets a child of its own", {
      service,
      child: child.label,
      reason: `handler ${call.kind} timed out`,
    });
  }

  /**
   * Delivers an event to the traps, in the main child (restarted if it died).
   *
   * @param event The event.
   */
  trap(event: TrapEvent): void {
    if (this.#closed || this.#decl === null || this.#decl.traps === 0) return;
    const counters = this.#host.counters.traps;
    const deliver = (child: ScriptChild) => {
      if (child.trap(event)) counters.delivered++;
      else counters.dropped++;
    };
    const main = this.#children.get("main");
    if (main && main.alive) {
      deliver(main);
      return;
    }
    this.#ensure("main").then(deliver, (e) => {
      counters.dropped++;
      this.#host.logger.warn("sandbox", "cannot restart the script for a trap", {
        error: String(e),
      });
    });
  }

  /** Stops every child (closing stdin, then killing a lingering one) and waits for them. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#children.values()].map((c) => c.close()));
    await Promise.allSettled([...this.#reaping]);
  }
}
