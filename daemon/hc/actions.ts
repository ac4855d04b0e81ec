/**
 * Actions hc runs when a check's reported state changes: set a service's state in faild (signed),
 * run an allow-listed repair program, POST a JSON webhook. The actions of one change run in file
 * order, each with its own time limit, each logged (facility `hc`).
 *
 * @module
 */
import { FaildClient, resolveKey } from "../../lib/client.ts";
import { type Logger, logger as defaultLogger } from "../../lib/log.ts";
import {
  isServiceState,
  MAX_DETAIL_LENGTH,
  NAME_PATTERN,
  type ServiceState,
} from "../../lib/types.ts";
import type { OptionDef } from "./checks/_types.ts";
import { readBounded } from "../../lib/streams.ts";
import { errorText, resolvePath } from "./checks/_util.ts";
import { runBounded } from "./checks/_process.ts";
import type { CheckState } from "./graph.ts";

/** The events an action can be bound to (`on EVENT: ...`). */
export type ActionEvent = "up" | "fail" | "blocked" | "change";

/** Every {@linkcode ActionEvent}. */
export const ACTION_EVENTS: readonly ActionEvent[] = ["up", "fail", "blocked", "change"];

/** The kinds of action. */
export type ActionKind = "faild" | "run" | "webhook";

/** One `on EVENT: KIND ...` line, parsed. */
export interface ActionSpec {
  /** Hcfile line. */
  line: number;
  /** The events that fire it. */
  events: ActionEvent[];
  /** What it does. */
  kind: ActionKind;
  /** Its parsed options. */
  values: Record<string, unknown>;
  /** For `run`: the program and its arguments. */
  argv: string[];
  /** Its time limit in ms. */
  timeoutMs: number;
}

/** What the actions are told about a change. */
export interface ChangeInfo {
  /** The hc instance's name. */
  hc: string;
  /** The check. */
  check: string;
  /** Its new reported state. */
  state: CheckState;
  /** Its reported state before. */
  previous: CheckState;
  /** For `BLOCKED`: the failing check at the root. */
  rootCause: string | null;
  /** The last probe's detail. */
  detail: string;
  /** When the change happened, ms since the epoch. */
  at: number;
}

/** The outcome of one action run. */
export interface ActionOutcome {
  /** `true` when it did its job. */
  ok: boolean;
  /** What happened, one line. */
  detail: string;
  /** How long it took in ms. */
  durationMs: number;
}

/** How an action kind is declared: options, argv, default timeout. */
export interface ActionKindDef {
  /** One line for the docs. */
  summary: string;
  /** Accepted options besides `timeout`. */
  options: Record<string, OptionDef>;
  /** Whether positional words are the program's argv. */
  takesArgv: boolean;
  /** Time limit when `timeout=` is absent, in ms. */
  defaultTimeoutMs: number;
}

function parseFaildUrl(text: string): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new RangeError(`"${text}" is not a URL: write it as http://host:7100`);
  }
  if ((u.protocol !== "http:" && u.protocol !== "https:") || u.pathname !== "/" || u.search) {
    throw new RangeError(`"${text}" is not a faild URL: use http(s)://host:port without a path`);
  }
  return u.origin;
}

function parseHookUrl(text: string): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new RangeError(`"${text}" is not a URL: write it as http://host:port/path`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new RangeError(`"${text}" is not an http:// or https:// URL`);
  }
  return u;
}

/** Every action kind's declaration. */
export const ACTIONS: Readonly<Record<ActionKind, ActionKindDef>> = {
  faild: {
    summary: "set a service's state in a faild, signed with the community in key-file",
    options: {
      url: {
        help: "the faild's base URL, e.g. http://127.0.0.1:7100",
        required: true,
        parse: parseFaildUrl,
      },
      service: {
        help: "the service to set (default: the check's name)",
        parse: (t) => {
          if (!NAME_PATTERN.test(t)) {
            throw new RangeError(`"${t}" is not a service name: letters, digits, . _ -, 1 to 64`);
          }
          return t;
        },
      },
      state: {
        help: "UP, RECOVER or FAIL (default: UP when the check is UP, FAIL when FAIL or BLOCKED)",
        parse: (t) => {
          if (!isServiceState(t)) throw new RangeError(`"${t}" is not UP, RECOVER or FAIL`);
          return t;
        },
      },
      "key-file": {
        help: "file holding the community (first line); without it requests go unsigned",
      },
    },
    takesArgv: false,
    defaultTimeoutMs: 5000,
  },
  run: {
    summary: "run an allow-listed program (absolute path, no shell) with HC_* variables",
    options: {},
    takesArgv: true,
    defaultTimeoutMs: 10_000,
  },
  webhook: {
    summary: "POST a JSON description of the change to a URL",
    options: {
      url: { help: "http:// or https:// URL to POST to", required: true, parse: parseHookUrl },
    },
    takesArgv: false,
    defaultTimeoutMs: 5000,
  },
};

/**
 * The faild state an action sets for a change.
 *
 * @param spec The action (its `state=` wins).
 * @param state The check's new reported state.
 * @returns The state to set, or `null` for `PENDING` (nothing to say yet).
 *
 * @example
 * ```ts
 * import { faildStateFor } from "./actions.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(faildStateFor({ values: {} }, "BLOCKED"), "FAIL");
 * ```
 */
export function faildStateFor(
  spec: Pick<ActionSpec, "values">,
  state: CheckState,
): ServiceState | null {
  if (typeof spec.values.state === "string") return spec.values.state as ServiceState;
  if (state === "UP") return "UP";
  if (state === "FAIL" || state === "BLOCKED") return "FAIL";
  return null;
}

/** The environment a `run` action's program gets. */
export function actionEnv(info: ChangeInfo): Record<string, string> {
  return {
    HC_NAME: info.hc,
    HC_CHECK: info.check,
    HC_STATE: info.state,
    HC_PREVIOUS: info.previous,
    HC_ROOT_CAUSE: info.rootCause ?? "",
    HC_DETAIL: info.detail,
    HC_AT: String(info.at),
  };
}

/** Options of {@linkcode ActionRunner}. */
export interface ActionRunnerOptions {
  /** Directory of the Hcfile (relative key files). */
  baseDir: string;
  /** Programs `run` may start. */
  allowPrograms: readonly string[];
  /** Logger (default: the process logger). */
  logger?: Logger;
}

/**
 * Runs actions. Key files are read once by {@linkcode ActionRunner.prepare}; faild clients are
 * kept per URL and key and closed by {@linkcode ActionRunner.close}.
 *
 * @example
 * ```ts
 * import { ActionRunner } from "./actions.ts";
 * const runner = new ActionRunner({ baseDir: ".", allowPrograms: [] });
 * runner.close();
 * ```
 */
export class ActionRunner {
  #options: ActionRunnerOptions;
  #log: Logger;
  #keys = new Map<string, string | undefined>();
  #clients = new Map<string, FaildClient>();

  /** @param options Base directory, allowed programs, logger. */
  constructor(options: ActionRunnerOptions) {
    this.#options = options;
    this.#log = options.logger ?? defaultLogger;
  }

  /**
   * Reads every key file the actions name, so that a missing key stops hc at start, not at the
   * first failure.
   *
   * @param specs The actions.
   * @throws {TypeError} When a key file cannot be read.
   */
  prepare(specs: readonly ActionSpec[]): void {
    for (const s of specs) {
      if (s.kind !== "faild" || typeof s.values["key-file"] !== "string") continue;
      const path = resolvePath(this.#options.baseDir, s.values["key-file"]);
      if (!this.#keys.has(path)) this.#keys.set(path, resolveKey({ keyFile: path }));
    }
  }

  /**
   * Runs one action for a change, bounded by its timeout; never throws.
   *
   * @param spec The action.
   * @param info The change.
   * @returns What happened.
   */
  async run(spec: ActionSpec, info: ChangeInfo): Promise<ActionOutcome> {
    const started = performance.now();
    const signal = AbortSignal.timeout(spec.timeoutMs);
    let outcome: { ok: boolean; detail: string };
    try {
      outcome = await this.#dispatch(spec, info, signal);
    } catch (e) {
      outcome = {
        ok: false,
        detail: signal.aborted ? `timed out after ${spec.timeoutMs} ms` : errorText(e),
      };
    }
    const durationMs = performance.now() - started;
    this.#log.log(
      outcome.ok ? "info" : "warn",
      "hc",
      `action ${spec.kind} ${outcome.ok ? "done" : "failed"}`,
      {
        check: info.check,
        state: info.state,
        previous: info.previous,
        line: spec.line,
        detail: outcome.detail,
        ms: Math.round(durationMs),
      },
    );
    return { ...outcome, durationMs };
  }

  #dispatch(
    spec: ActionSpec,
    info: ChangeInfo,
    signal: AbortSignal,
  ): Promise<{ ok: boolean; detail: string }> {
    switch (spec.kind) {
      case "faild":
        return this.#faild(spec, info, signal);
      case "run":
        return this.#run(spec, info, signal);
      case "webhook":
        return this.#webhook(spec, info, signal);
    }
  }

  async #faild(
    spec: ActionSpec,
    info: ChangeInfo,
    signal: AbortSignal,
  ): Promise<{ ok: boolean; detail: string }> {
    const state = faildStateFor(spec, info.state);
    const service = (spec.values.service as string | undefined) ?? info.check;
    if (state === null) return { ok: true, detail: `nothing to set for ${info.state}` };
    const url = spec.values.url as string;
    let key: string | undefined;
    if (typeof spec.values["key-file"] === "string") {
      const path = resolvePath(this.#options.baseDir, spec.values["key-file"]);
      if (!this.#keys.has(path)) this.#keys.set(path, resolveKey({ keyFile: path }));
      key = this.#keys.get(path);
    }
    const id = `${url}\n${key ?? ""}`;
    let client = this.#clients.get(id);
    if (!client) {
      client = new FaildClient(url, {
        ...(key !== undefined ? { key } : {}),
        timeoutMs: spec.timeoutMs,
      });
      this.#clients.set(id, client);
    }
    const cause = info.rootCause ? ` (root cause: ${info.rootCause})` : "";
    const detail = `hc ${info.hc}: ${info.check} ${info.state}${cause}: ${info.detail}`
      .slice(0, MAX_DETAIL_LENGTH);
    const record = await client.set(service, state, { detail, signal });
    return { ok: true, detail: `${url} ${service} set to ${record.state}` };
  }

  async #run(
    spec: ActionSpec,
    info: ChangeInfo,
    signal: AbortSignal,
  ): Promise<{ ok: boolean; detail: string }> {
    const program = spec.argv[0] ?? "";
    if (!this.#options.allowPrograms.includes(program)) {
      return { ok: false, detail: `program ${program} is not allowed by the Hcfile` };
    }
    const out = await runBounded(spec.argv, {
      timeoutMs: spec.timeoutMs,
      signal,
      env: actionEnv(info),
    });
    const said = (out.stdout.trim() || out.stderr.trim()).split("\n")[0]?.slice(0, 200) ?? "";
    const tail = said ? `: ${said}` : "";
    if (out.timedOut) {
      return { ok: false, detail: `${program} killed after ${spec.timeoutMs} ms${tail}` };
    }
    if (out.code !== 0) {
      const how = out.code === null ? `killed by ${out.signal}` : `exit ${out.code}`;
      return { ok: false, detail: `${program} ${how}${tail}` };
    }
    return { ok: true, detail: `${program} exit 0${tail}` };
  }

  async #webhook(
    spec: ActionSpec,
    info: ChangeInfo,
    signal: AbortSignal,
  ): Promise<{ ok: boolean; detail: string }> {
    const url = spec.values.url as URL;
    const response = await fetch(url, {
      method: "POST",
      signal,
      redirect: "manual",
      headers: { "content-type": "application/json", "user-agent": "failover-hc/0.6" },
      body: JSON.stringify({ event: "hc.change", ...info }),
    });
    await readBounded(response.body, 4096);
    const ok = response.status >= 200 && response.status < 300;
    return { ok, detail: `POST ${url.href} answered ${response.status}` };
  }

  /** Closes the faild clients. */
  close(): void {
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
  }
}
