/**
 * `failsh simulate SCRIPT SCENARIO`: runs the decisions of an operator's real failover script
 * against a scripted timeline of peer states and faults, in fake time, and prints every decision
 * with the inputs that caused it — a failover script tested before it is trusted, as Pacemaker's
 * `crm_simulate` does for a cluster.
 *
 * The script is loaded in the sandbox exactly as failsh loads it (its declaration — masters,
 * slaves, interval, fall, rise, preempt, grace, timeouts — is the real one), and the real
 * scheduler and decision function run on it. Handlers are **not** run: no address is taken, no
 * program started. Each handler is assumed to return its usual result (`start` and `reclaim`
 * `UP`, `stop` `FAIL`) at once, unless the scenario says otherwise (a result, a delay, a throw or
 * a timeout). See `docs/failsh.md` for the scenario format.
 *
 * @module
 */
import { EXIT, exitCodesHelp, parseCommandLine } from "../lib/cli.ts";
import { resolve } from "node:path";
import type {
  HandlerInvocation,
  HandlerKind,
  HostDecl,
  Sandbox,
  ScriptDecl,
  TrapEvent,
} from "./contract.ts";
import type { ServiceRecord, ServiceState } from "../lib/types.ts";
import { isServiceState } from "../lib/types.ts";
import { Logger, logger as processLogger } from "../lib/log.ts";
import { FakeTime } from "./_fake_time.ts";
import { type DecisionLogEntry, type PollResult, Scheduler } from "./scheduler/scheduler.ts";
import { loadDeclaration } from "./sandbox/load.ts";
import type { LivenessSource, LivenessStatus } from "./liveness/prober.ts";
import {
  SCRIPTED_ARBITER_EVENTS,
  ScriptedArbiter,
  type ScriptedArbiterEvent,
} from "./arbiter/scripted.ts";
import { loadPolicy, parsePolicy } from "./sandbox/policy.ts";

/** One event of a scenario's timeline. */
export type ScenarioEvent =
  | { at: number; host: string; service: string; state: ServiceState | null }
  | { at: number; host: string; unreachable: boolean }
  | {
    at: number;
    handler: HandlerKind;
    service: string;
    result: ServiceState | "timeout" | "throw";
    durationMs?: number;
  }
  | { at: number; arbiter: ScriptedArbiterEvent | null; service: string }
  | { at: number; host: string; kernel: "silent" | "answering" | "unknown" };

/** A scenario: which host the script runs as, how long, and what happens when. */
export interface Scenario {
  /** The host failsh runs as (one of the script's hosts). */
  self: string;
  /** How long to simulate, ms. */
  durationMs: number;
  /** The timeline, in any order (sorted by `at`). */
  events: ScenarioEvent[];
}

/** One line of the simulation's output. */
export interface SimulationLine {
  /** Time since the start, ms. */
  atMs: number;
  /** `decision`, `handler` or `event` (a scenario event applied). */
  kind: "decision" | "handler" | "event";
  /** The service, or `null`. */
  service: string | null;
  /** The local state at that moment. */
  local: ServiceState | null;
  /** The action (decisions), the handler kind (handlers) or `-`. */
  action: string;
  /** The rule of docs/decisions.md that fired (decisions). */
  rule: string | null;
  /** The reason, or what happened. */
  text: string;
  /** The inputs of the decision (decisions only). */
  input?: DecisionLogEntry["input"];
}

/** What a simulation produced. */
export interface SimulationResult {
  /** Every line, in time order. */
  lines: SimulationLine[];
  /** The local state of each service at the end. */
  final: Record<string, ServiceState>;
}

function fail(where: string, message: string): never {
  throw new SyntaxError(`Invalid scenario ${where}: ${message}`);
}

/**
 * Parses and checks a scenario.
 *
 * @param text The JSON text.
 * @param source Where it came from (for messages).
 * @returns The scenario, events sorted by time.
 * @throws {SyntaxError} Naming the field that is wrong.
 *
 * @example
 * ```ts
 * import { parseScenario } from "./simulate.ts";
 * import { deepEqual } from "node:assert/strict";
 * const s = parseScenario('{"self":"beta","durationMs":5000,"events":[{"at":0,"host":"alpha","unreachable":true}]}', "x.json");
 * deepEqual(s.events.length, 1);
 * ```
 */
export function parseScenario(text: string, source: string): Scenario {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    fail(source, `not valid JSON: ${(e as Error).message}`);
  }
  const r = raw as Record<string, unknown>;
  if (typeof r !== "object" || r === null || Array.isArray(r)) fail(source, "expected an object");
  if (typeof r.self !== "string" || r.self === "") {
    fail(source, `"self" must be the host the script runs as, got ${JSON.stringify(r.self)}`);
  }
  if (typeof r.durationMs !== "number" || !(r.durationMs > 0) || r.durationMs > 86_400_000) {
    fail(source, `"durationMs" must be a number of ms between 1 and 86400000`);
  }
  if (!Array.isArray(r.events)) fail(source, `"events" must be a list`);
  if (r.events.length > 10_000) fail(source, `"events" has more than 10000 entries`);
  const events: ScenarioEvent[] = r.events.map((e: unknown, i: number): ScenarioEvent => {
    const w = `${source}: events[${i}]`;
    const ev = e as Record<string, unknown>;
    if (typeof ev !== "object" || ev === null) fail(w, "must be an object");
    if (typeof ev.at !== "number" || ev.at < 0 || !Number.isFinite(ev.at)) {
      fail(w, `"at" must be a time in ms from the start`);
    }
    const at = ev.at;
    if ("handler" in ev) {
      if (ev.handler !== "start" && ev.handler !== "stop" && ev.handler !== "reclaim") {
        fail(w, `"handler" must be start, stop or reclaim`);
      }
      if (typeof ev.service !== "string") fail(w, `"service" must name a service`);
      const result = ev.result;
      if (!isServiceState(result) && result !== "timeout" && result !== "throw") {
        fail(w, `"result" must be UP, RECOVER, FAIL, timeout or throw`);
      }
      if (ev.durationMs !== undefined && (typeof ev.durationMs !== "number" || ev.durationMs < 0)) {
        fail(w, `"durationMs" must be a number of ms`);
      }
      return {
        at,
        handler: ev.handler,
        service: ev.service,
        result,
        ...(typeof ev.durationMs === "number" ? { durationMs: ev.durationMs } : {}),
      };
    }
    if ("arbiter" in ev) {
      if (
        ev.arbiter !== null &&
        !(SCRIPTED_ARBITER_EVENTS as readonly unknown[]).includes(ev.arbiter)
      ) {
        fail(w, `"arbiter" must be grant, deny, lose, regain or null (no arbiter)`);
      }
      if (typeof ev.service !== "string") fail(w, `"service" must name a service`);
      return { at, arbiter: ev.arbiter as ScriptedArbiterEvent | null, service: ev.service };
    }
    if (typeof ev.host !== "string") fail(w, `"host" must name a host`);
    if ("kernel" in ev) {
      if (ev.kernel !== "silent" && ev.kernel !== "answering" && ev.kernel !== "unknown") {
        fail(w, `"kernel" must be silent, answering or unknown`);
      }
      return { at, host: ev.host, kernel: ev.kernel };
    }
    if ("unreachable" in ev) {
      if (typeof ev.unreachable !== "boolean") fail(w, `"unreachable" must be true or false`);
      return { at, host: ev.host, unreachable: ev.unreachable };
    }
    if (typeof ev.service !== "string") fail(w, `"service" must name a service`);
    if (ev.state !== null && !isServiceState(ev.state)) {
      fail(w, `"state" must be UP, RECOVER, FAIL or null (no record)`);
    }
    return { at, host: ev.host, service: ev.service, state: ev.state as ServiceState | null };
  });
  events.sort((a, b) => a.at - b.at);
  return { self: r.self, durationMs: r.durationMs, events };
}

/**
 * Runs a simulation of a declaration against a scenario in fake time.
 *
 * @param decl The script's declaration (from the sandbox, or written by hand in tests).
 * @param scenario The timeline.
 * @returns Every decision, handler run and applied event, and the final states.
 * @throws {SyntaxError} When the scenario names a host or service the script does not declare.
 *
 * @example
 * ```ts
 * import { simulate } from "./simulate.ts";
 * import { deepEqual } from "node:assert/strict";
 * const decl = {
 *   hosts: [
 *     { name: "alpha", address: "127.0.0.1", port: 7100, protocol: "http" as const, key: null },
 *     { name: "beta", address: "127.0.0.2", port: 7100, protocol: "http" as const, key: null },
 *   ],
 *   services: [{
 *     name: "web", masters: ["alpha"], slaves: ["beta"], intervalMs: 100, fall: 3, rise: 2,
 *     preempt: true, graceMs: 0, timeouts: { start: 1000, stop: 1000, reclaim: 1000 },
 *     handlers: ["start" as const, "stop" as const],
 *   }],
 *   traps: 0,
 * };
 * const r = await simulate(decl, {
 *   self: "beta",
 *   durationMs: 1000,
 *   events: [{ at: 0, host: "alpha", service: "web", state: "UP" }, { at: 300, host: "alpha", unreachable: true }],
 * });
 * deepEqual(r.final.web, "UP");
 * ```
 */
export async function simulate(decl: ScriptDecl, scenario: Scenario): Promise<SimulationResult> {
  const hostNames = new Set(decl.hosts.map((h) => h.name));
  const serviceNames = new Set(decl.services.map((s) => s.name));
  if (!hostNames.has(scenario.self)) {
    throw new SyntaxError(
      `Invalid scenario: self "${scenario.self}" is not one of the script's hosts (${
        [...hostNames].join(", ")
      })`,
    );
  }
  for (const [i, e] of scenario.events.entries()) {
    if ("host" in e && !hostNames.has(e.host)) {
      throw new SyntaxError(`Invalid scenario: events[${i}] names unknown host "${e.host}"`);
    }
    if ("kernel" in e && decl.hosts.find((h) => h.name === e.host)?.liveness === undefined) {
      throw new SyntaxError(
        `Invalid scenario: events[${i}] sets the kernel of "${e.host}", which declares no liveness`,
      );
    }
    if ("service" in e && !serviceNames.has(e.service)) {
      throw new SyntaxError(`Invalid scenario: events[${i}] names unknown service "${e.service}"`);
    }
  }
  const time = new FakeTime(0, { flushTurns: 2 });
  const lines: SimulationLine[] = [];
  const unreachable = new Set<string>();
  const records = new Map<string, Map<string, ServiceRecord>>();
  const behaviour = new Map<
    string,
    { result: ServiceState | "timeout" | "throw"; durationMs: number }
  >();
  let scheduler: Scheduler | null = null;
  // The peers' kernels as the scenario sets them: answering until told otherwise.
  const kernels = new Map<string, LivenessStatus>();
  const kernelListeners = new Set<(host: string) => void>();
  const liveness: LivenessSource = {
    status: (h) => kernels.get(h) ?? null,
    onChange: (l) => {
      kernelListeners.add(l);
      return () => kernelListeners.delete(l);
    },
  };
  const setKernel = (host: string, state: "alive" | "silent" | "unknown") => {
    const l = decl.hosts.find((h) => h.name === host)?.liveness;
    if (!l) return;
    const silent = state === "silent";
    kernels.set(host, {
      state,
      unanswered: silent ? l.fall : 0,
      silentMs: silent ? l.fall * l.intervalMs : 0,
      rttMs: state === "alive" ? 0.1 : null,
      lastAnswerAt: state === "alive" ? time.now() : kernels.get(host)?.lastAnswerAt ?? null,
      error: null,
    });
    for (const fn of kernelListeners) fn(host);
  };
  for (const h of decl.hosts) {
    if (h.liveness !== undefined && h.name !== scenario.self) setKernel(h.name, "alive");
  }
  // The arbiter: the declared one (its key free at first: etcd up, nobody holds it), or one the
  // scenario brings in with its first arbiter event. Services it is off for have no verdict.
  const lastArbiterLine = new Map<string, string>();
  const scripted = decl.arbiter !== undefined || scenario.events.some((e) => "arbiter" in e);
  const off = new Set(decl.arbiter === undefined ? decl.services.map((s) => s.name) : []);
  const arbiter = scripted
    ? new ScriptedArbiter({
      timers: time,
      takeoverDelayMs: decl.arbiter?.takeoverDelayMs ?? 0,
      onChange: (service) => {
        const st = arbiter!.status(service);
        const text = `arbiter: ${st.state}${st.epoch ? `, epoch ${st.epoch}` : ""} (${st.reason})`;
        scheduler?.arbiterChanged(service);
        if (lastArbiterLine.get(service) === text) return;
        lastArbiterLine.set(service, text);
        lines.push({
          atMs: time.now(),
          kind: "event",
          service,
          local: scheduler?.state(service) ?? null,
          action: "-",
          rule: null,
          text,
        });
      },
    })
    : null;
  if (arbiter && decl.arbiter !== undefined) {
    for (const s of decl.services) arbiter.event(s.name, "grant");
  }

  function setRecord(
    host: string,
    service: string,
    state: ServiceState | null,
    detail = "",
  ): void {
    let m = records.get(host);
    if (!m) records.set(host, m = new Map());
    const prev = m.get(service);
    if (state === null) {
      m.delete(service);
      return;
    }
    m.set(service, {
      name: service,
      state,
      lastChange: prev?.state === state ? prev.lastChange : time.now(),
      changes: (prev?.changes ?? 0) + (prev?.state === state ? 0 : 1),
      detail,
      setBy: "scenario",
    });
  }

  const sandbox: Sandbox = {
    decl,
    start: () => Promise.resolve(decl),
    trap: (_event: TrapEvent) => {},
    close: () => Promise.resolve(),
    invoke(call: HandlerInvocation, timeoutMs: number): Promise<ServiceState> {
      const b = behaviour.get(`${call.service}/${call.kind}`);
      const result = b?.result ?? (call.kind === "stop" ? "FAIL" : "UP");
      const delay = result === "timeout" ? timeoutMs : Math.min(b?.durationMs ?? 0, timeoutMs);
      return new Promise((resolve, reject) => {
        time.setTimeout(() => {
          if (result === "timeout") {
            const e = new Error(`Handler ${call.kind} of ${call.service} timed out`);
            e.name = "TimeoutError";
            reject(e);
          } else if (result === "throw") {
            reject(new Error(`${call.kind} handler of ${call.service} threw (scenario)`));
          } else resolve(result);
        }, delay);
      });
    },
  };

  const poller = (h: HostDecl): Promise<PollResult> => {
    if (unreachable.has(h.name)) {
      return Promise.reject(new Error(`${h.name} is unreachable (scenario)`));
    }
    return Promise.resolve({
      bootId: `${h.name}-sim`,
      services: [...(records.get(h.name)?.values() ?? [])].sort((a, b) =>
        a.name.localeCompare(b.name)
      ),
    });
  };
  const reporter = (service: string, state: ServiceState, detail: string): Promise<void> => {
    setRecord(scenario.self, service, state, detail);
    return Promise.resolve();
  };

  for (const e of scenario.events) {
    time.setTimeout(() => {
      let text: string;
      let service: string | null = null;
      if ("handler" in e) {
        behaviour.set(`${e.service}/${e.handler}`, {
          result: e.result,
          durationMs: e.durationMs ?? 0,
        });
        service = e.service;
        text = `from now on the ${e.handler} handler of ${e.service} ${
          e.result === "timeout"
            ? "times out"
            : e.result === "throw"
            ? "throws"
            : `returns ${e.result}`
        }${e.durationMs ? ` after ${e.durationMs} ms` : ""}`;
      } else if ("arbiter" in e) {
        if (e.arbiter === null) off.add(e.service);
        else {
          off.delete(e.service);
          arbiter!.event(e.service, e.arbiter);
        }
        service = e.service;
        text = e.arbiter === null ? `the arbiter is removed for ${e.service}` : `the arbiter ${
          {
            grant: "would give",
            deny: "refuses",
            lose: "takes away",
            regain: "would give again",
          }[e.arbiter]
        } the key of ${e.service}`;
      } else if ("kernel" in e) {
        setKernel(e.host, e.kernel === "answering" ? "alive" : e.kernel);
        text = e.kernel === "silent"
          ? `${e.host}'s kernel stops answering ping`
          : e.kernel === "answering"
          ? `${e.host}'s kernel answers ping`
          : `${e.host}'s kernel never answered (ICMP filtered)`;
      } else if ("unreachable" in e) {
        if (e.unreachable) unreachable.add(e.host);
        else unreachable.delete(e.host);
        text = `${e.host} becomes ${e.unreachable ? "unreachable" : "reachable"}`;
      } else {
        setRecord(e.host, e.service, e.state);
        service = e.service;
        text = e.state === null
          ? `${e.host} drops its record of ${e.service}`
          : `${e.host} sets ${e.service} ${e.state}`;
      }
      lines.push({
        atMs: time.now(),
        kind: "event",
        service,
        local: service === null ? null : scheduler?.state(service) ?? null,
        action: "-",
        rule: null,
        text,
      });
    }, e.at);
  }

  const quiet = new Logger({ level: "error", sink: () => {} });
  scheduler = new Scheduler({
    self: scenario.self,
    sandbox,
    poller,
    reporter,
    timers: time,
    logger: quiet,
    ...(arbiter
      ? {
        arbiterLink: {
          verdict: (s: string) => off.has(s) ? undefined : arbiter.verdict(s),
          want: (s: string) => arbiter.want(s),
          unwant: (s: string) => arbiter.unwant(s),
          status: (s: string) => arbiter.status(s),
        },
      }
      : {}),
    liveness,
    onDecision: (entry) => {
      lines.push({
        atMs: entry.at,
        kind: "decision",
        service: entry.service,
        local: entry.input.local,
        action: entry.decision.action,
        rule: entry.decision.rule,
        text: entry.decision.reason,
        input: entry.input,
      });
    },
  });
  // Handler runs and state changes come from the scheduler's event ring.
  const ring: Array<{ at: number; kind: string; service: string | null; message: string }> = [];
  scheduler.onChange(() => {
    const evs = scheduler!.snapshot().events;
    const last = evs.at(-1);
    if (last && (last.kind === "handler" || last.kind === "state") && ring.at(-1) !== last) {
      ring.push(last);
      lines.push({
        atMs: last.at,
        kind: "handler",
        service: last.service,
        local: last.service === null ? null : scheduler!.state(last.service) ?? null,
        action: last.kind,
        rule: null,
        text: last.message,
      });
    }
  });
  scheduler.start();
  await time.advance(scenario.durationMs);
  await scheduler.stop();
  const final: Record<string, ServiceState> = {};
  for (const s of scheduler.snapshot().services) final[s.name] = s.state;
  lines.sort((a, b) => a.atMs - b.atMs);
  return { lines, final };
}

/**
 * Formats a simulation as a table for people.
 *
 * @param result The simulation.
 * @param options Whether to show each decision's inputs (peer views) on a second line.
 * @returns The text.
 *
 * @example
 * ```ts
 * import { formatSimulation } from "./simulate.ts";
 * console.log(formatSimulation({ lines: [], final: { web: "UP" } }));
 * ```
 */
export function formatSimulation(
  result: SimulationResult,
  options: { inputs?: boolean } = {},
): string {
  const out: string[] = [];
  out.push(
    `${"time ms".padStart(8)}  ${"service".padEnd(10)} ${"local".padEnd(7)} ${
      "action".padEnd(8)
    } what and why`,
  );
  for (const l of result.lines) {
    const action = l.kind === "event" ? "event" : l.kind === "handler" ? l.action : l.action;
    const rule = l.rule ? ` [${l.rule}]` : "";
    out.push(
      `${String(l.atMs).padStart(8)}  ${(l.service ?? "-").padEnd(10)} ${
        (l.local ?? "-").padEnd(7)
      } ${action.padEnd(8)} ${l.text}${rule}`,
    );
    if (options.inputs && l.input) {
      const i = l.input;
      out.push(
        `${"".padStart(8)}  ${"".padEnd(10)} ${"".padEnd(7)} ${"".padEnd(8)}   inputs: ${
          i.peers.map((p) =>
            `${p.name}=${p.reachable ? p.state ?? "none" : "unreachable"}${
              p.kernelSilentMs === undefined ? "" : `(kernel silent ${p.kernelSilentMs}ms)`
            }${p.flapped ? "(flapped)" : ""}`
          )
            .join(" ")
        } grace=${i.graceOver ? "over" : "on"} self=${
          i.selfReachable === false ? "unreachable" : "ok"
        }${i.arbiter ? ` arbiter=${i.arbiter}` : ""}${
          i.deferredMs ? ` deferred=${i.deferredMs}ms` : ""
        }`,
      );
    }
  }
  out.push("");
  out.push(`final: ${Object.entries(result.final).map(([s, st]) => `${s} ${st}`).join(", ")}`);
  return out.join("\n");
}

/**
 * Runs `failsh simulate SCRIPT SCENARIO [--json] [--inputs] [--policy FILE]`.
 *
 * @param args The arguments after `simulate`.
 * @returns 0 after a simulation, 1 when the script or scenario is invalid, 64 on bad usage.
 *
 * @example
 * ```ts ignore
 * import { main } from "./simulate.ts";
 * Deno.exit(await main(["failover.ts", "scenario.json", "--json"]));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseCommandLine("failsh simulate", args, {
      options: { inputs: { type: "boolean" }, policy: { type: "string", short: "p" } },
      shared: ["json"],
    });
  } catch (error) {
    console.error(`failsh simulate: ${(error as Error).message}`);
    return EXIT.usage;
  }
  if (parsed.values.help) {
    console.log(`Usage: failsh simulate SCRIPT SCENARIO [--json] [--inputs] [--policy FILE]

Runs the script's real declaration and failsh's real scheduler and decisions against the
scenario's timeline in fake time, and prints every decision with the inputs that caused
it. Handlers are not run: each returns its usual result unless the scenario says
otherwise. Scenario format: docs/failsh.md.

${
      exitCodesHelp([
        [EXIT.ok, "the simulation ran"],
        [EXIT.failure, "the script or the scenario is invalid"],
        [EXIT.usage, null],
      ])
    }`);
    return EXIT.ok;
  }
  const [script, scenarioPath] = parsed.positionals;
  if (script === undefined || scenarioPath === undefined || parsed.positionals.length > 2) {
    console.error("failsh simulate: give SCRIPT and SCENARIO. Run failsh simulate --help.");
    return EXIT.usage;
  }
  processLogger.setLevel("*", "error");
  try {
    const text = await Deno.readTextFile(scenarioPath);
    if (text.length > 5_000_000) {
      throw new SyntaxError(`Invalid scenario ${scenarioPath}: larger than 5 MB`);
    }
    const scenario = parseScenario(text, scenarioPath);
    const policyPath = parsed.values.policy;
    const decl = await loadDeclaration(
      resolve(script),
      policyPath
        ? { ...(await loadPolicy(policyPath)), host: scenario.self }
        : parsePolicy(JSON.stringify({ host: scenario.self }), resolve("simulate-policy.json")),
    );
    const result = await simulate(decl, scenario);
    if (parsed.values.json) console.log(JSON.stringify(result, null, 2));
    else console.log(formatSimulation(result, { inputs: parsed.values.inputs ?? false }));
    return 0;
  } catch (error) {
    console.error(`failsh simulate: ${(error as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
