/**
 * The privileged requests of a sandboxed script's children: who may ask (only a running
 * handler or trap, at most {@linkcode MAX_INFLIGHT_REQUESTS} at once), the policy check of each
 * (`./checks.ts`), its audit record written before it runs (`./audit.ts`), and the action:
 * an address change (`./netops.ts`), a program (`runFixed`), a poll or a state change through
 * the pooled faild clients failsh injects. See `docs/sandbox.md`, "What the policy allows".
 *
 * @module
 */
import type { HostDecl, Policy } from "../contract.ts";
import { isServiceState, MAX_DETAIL_LENGTH, type ServiceState } from "../../lib/types.ts";
import { PolicyDeniedError } from "../errors.ts";
import {
  type ChildMessage,
  type PeerPoll,
  REQUEST_OPS,
  type RequestOp,
  type RunResult,
} from "../rpc.ts";
import {
  type AuditLog,
  auditRequest,
  MAX_PRIVILEGED_BURST,
  PRIVILEGED_PER_SECOND,
} from "./audit.ts";
import type { ScriptChild } from "./child.ts";
import type { SandboxCounters } from "./counters.ts";
import { type NetDriver, runFixed } from "./netops.ts";
import { checkArp, checkRelease, checkRun, checkTakeover } from "./checks.ts";

/** Most privileged requests one child may have in progress at once (more are refused). */
export const MAX_INFLIGHT_REQUESTS = 32;

/** Polls a declared host for `ctx.poll()` (failsh's pooled faild client of that host). */
export type PeerPoller = (host: HostDecl, options: { signal: AbortSignal }) => Promise<PeerPoll>;

/** Sets a service's state on the local faild for `ctx.setState()`. */
export type StateSetter = (service: string, state: ServiceState, detail: string) => Promise<void>;

/** What the requests need from their sandbox. */
export interface RequestContext {
  /** The policy in force. */
  readonly policy: Policy;
  /** The network driver. */
  readonly net: NetDriver;
  /** The audit log. */
  readonly audit: AuditLog;
  /** The counters, by kind of request. */
  readonly counters: SandboxCounters;
  /** The script's declared hosts (the only ones it may poll). */
  hosts(): HostDecl[];
  /** The poller, if any (without one, `ctx.poll()` of a declared host fails). */
  readonly poll?: PeerPoller | undefined;
  /** The state setter, if any (without one, `ctx.setState()` fails). */
  readonly setState?: StateSetter | undefined;
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

/** The requests of one sandbox's children, in progress and to come. */
export class Requests {
  #ctx: RequestContext;
  #requests = new Set<Promise<unknown>>();
  #closing = new AbortController();

  /**
   * Creates the request handler of a sandbox.
   *
   * @param ctx The policy, driver, audit log, counters, hosts, poller and state setter.
   */
  constructor(ctx: RequestContext) {
    this.#ctx = ctx;
  }

  /**
   * Answers one request of a child: refuses it (one audit line, rate-limited) unless a handler
   * or trap of that child is running and the child is under its in-flight bound; otherwise
   * checks it against the policy, carries it out and replies, never waiting on the child.
   *
   * @param child The child that asked.
   * @param msg The request, as the child wrote it (untrusted).
   */
  handle(child: ScriptChild, msg: Extract<ChildMessage, { t: "req" }>): void {
    const inv = child.invocation(msg.inv);
    const service = inv?.call.service ?? null;
    const op = msg.op;
    const args = typeof msg.args === "object" && msg.args !== null ? msg.args : {};
    const counters = REQUEST_OPS.includes(op) ? this.#ctx.counters.requests[op] : null;
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
      this.#ctx.audit.refused(child.label, service, request, e.message);
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
        if (audit) this.#ctx.audit.write(service, request, "done", audit);
        reply(value);
      },
      (e) => {
        if (e instanceof PolicyDeniedError) return refuse(e);
        if (counters) counters.failed++;
        if (op !== "poll") {
          this.#ctx.audit.write(
            service,
            request,
            "failed",
            e instanceof Error ? e.message : String(e),
          );
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
        // The takeover's audit record times the path from here: the policy check and the
        // "allowed" record written before acting are part of it.
        const decidedAt = performance.timeOrigin + performance.now();
        const allowed = checkTakeover(
          this.#ctx.policy,
          args.address as string,
          args.device as string,
        );
        const arp = checkArp(this.#ctx.policy, allowed.cidr.text, args);
        allow("take over", allowed.cidr.text, `within ${allowed.rule.prefix}`);
        await this.#ctx.net.takeover(allowed.cidr, allowed.device, {
          ...arp,
          service,
          decidedAt,
        });
        return { value: null, audit: `${allowed.cidr.text} is on ${allowed.device}` };
      }
      case "release": {
        const allowed = checkRelease(
          this.#ctx.policy,
          args.address as string,
          args.device as string,
        );
        allow("release", allowed.cidr.text, `within ${allowed.rule.prefix}`);
        await this.#ctx.net.release(allowed.cidr, allowed.device);
        return { value: null, audit: `${allowed.cidr.text} is off ${allowed.device}` };
      }
      case "run": {
        const timeout = args.timeoutMs === undefined ? {} : { timeoutMs: args.timeoutMs as number };
        const allowed = checkRun(this.#ctx.policy, args.argv as string[], timeout);
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
        const host = this.#ctx.hosts().find((h) => h.name === name);
        if (!host) {
          throw new PolicyDeniedError(
            `Cannot poll ${String(name).slice(0, 64)}: the script declares no such host`,
          );
        }
        if (!this.#ctx.poll) {
          throw new Error(`Cannot poll ${name}: failsh gave this sandbox no poller`);
        }
        const ac = new AbortController();
        const t = setTimeout(() => ac.abort(), 10_000);
        signal?.addEventListener("abort", () => ac.abort(), { once: true });
        try {
          return { value: await this.#ctx.poll(host, { signal: ac.signal }), audit: null };
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
        if (!this.#ctx.setState) {
          throw new Error(
            `Cannot set state of ${service}: failsh gave this sandbox no state setter`,
          );
        }
        allow("set state of", service, `${service} to ${state}`);
        await this.#ctx.setState(service, state, detail);
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
    if (!this.#ctx.audit.admit(source)) {
      throw new PolicyDeniedError(
        `Cannot ${
          verb.replace(/ of$/, "")
        }: the script made more than ${MAX_PRIVILEGED_BURST} privileged requests (at most ${PRIVILEGED_PER_SECOND} a second); the audit log keeps a record of each, so the rest are refused`,
      );
    }
    try {
      this.#ctx.audit.writeOrThrow(service, request, "allowed", reason);
    } catch (e) {
      throw new PolicyDeniedError(
        `Cannot ${verb} ${target}: ${
          (e as Error).message
        }, and no privileged action runs without its record`,
      );
    }
  }

  /** Aborts what still runs (programs are killed) and waits until every request settled. */
  async close(): Promise<void> {
    this.#closing.abort();
    await Promise.allSettled([...this.#requests]);
  }
}
