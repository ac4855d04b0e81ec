/**
 * The registry of what a failover script declares: its hosts, services (with their handlers)
 * and traps, each checked when declared with an error that names the problem. `mod.ts` declares
 * into {@linkcode scriptRegistry}; the child's RPC server (`./child.ts`) serves it; the
 * supervisor re-checks what the child sends with a registry of its own (`checkDecl()` in
 * `shell/sandbox/decl.ts`).
 *
 * @module
 */
import type {
  ArbiterDecl,
  HandlerKind,
  HostDecl,
  LivenessDecl,
  ScriptDecl,
  ServiceDecl,
} from "../contract.ts";
import { isValidName, parseDuration } from "../../lib/types.ts";
import { type ArbiterTiming, arbiterTiming } from "./arbiter_timing.ts";
import type {
  ArbiterOptions,
  Handler,
  HostOptions,
  LivenessOptions,
  ServiceOptions,
  TrapHandler,
} from "./api.ts";

/** Default port of a faild. */
export const DEFAULT_FAILD_PORT = 7100;

/** Default key prefix of the arbiter. */
export const DEFAULT_ARBITER_PREFIX = "/failover/";

/** Most etcd endpoints an arbiter may list. */
export const MAX_ARBITER_ENDPOINTS = 16;

/** An etcd endpoint as the arbiter accepts it: `http://` + host name or IP (v6 in brackets) + port. */
const ENDPOINT_PATTERN =
  /^http:\/\/([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):([0-9]{1,5})\/?$/;

/**
 * Checks and normalises an etcd endpoint (`http://host:port`, no path, no credentials).
 *
 * @param value The endpoint.
 * @param where Where it was found, for the message.
 * @returns `http://host:port` without a trailing slash.
 * @throws {TypeError} Naming what is wrong and what is allowed.
 *
 * @example
 * ```ts
 * import { checkEtcdEndpoint } from "./registry.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(checkEtcdEndpoint("http://198.18.1.11:2379/", "endpoints[0]"), "http://198.18.1.11:2379");
 * ```
 */
export function checkEtcdEndpoint(value: unknown, where: string): string {
  const m = typeof value === "string" ? ENDPOINT_PATTERN.exec(value) : null;
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65535) {
    throw new TypeError(
      `Invalid ${where}: ${
        JSON.stringify(value) ?? String(value)
      } is not an etcd endpoint (expected "http://host:port", e.g. "http://198.18.1.11:2379")`,
    );
  }
  return `http://${m[1]}:${port}`;
}

/** Default time limit of each handler, in ms. */
export const DEFAULT_HANDLER_TIMEOUT_MS = 30_000;

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

/**
 * Shortest and longest interval of a host's liveness probe, ms. Under 10 ms (the kernel's clock
 * tick as iputils ping sees it) ping busy-waits between its requests: measured, `-i 0.005` to
 * `-i 0.009` use a whole CPU core per peer, `-i 0.01` almost nothing (`docs/decisions.md`).
 */
export const LIVENESS_INTERVAL_RANGE_MS = [10, 10_000] as const;

/** Default `fall` of a host's liveness probe. */
export const DEFAULT_LIVENESS_FALL = 5;

/** Default `stallGrace` of a host's liveness probe, ms. */
export const DEFAULT_STALL_GRACE_MS = 1000;

/** Longest `stallGrace` of a host's liveness probe, ms. */
export const MAX_STALL_GRACE_MS = 60_000;

const LIVENESS_KEYS = ["interval", "fall", "stallGrace"];

function livenessOf(host: string, options: LivenessOptions): LivenessDecl {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(
      `Invalid host ${host}: liveness must be an object like { interval: "10ms", fall: 5 }`,
    );
  }
  for (const k of Object.keys(options)) {
    if (!LIVENESS_KEYS.includes(k)) {
      throw new TypeError(
        `Invalid host ${host}: liveness.${k} is not an option (use ${LIVENESS_KEYS.join(", ")})`,
      );
    }
  }
  if (options.interval === undefined) {
    throw new TypeError(`Invalid host ${host}: liveness.interval is required (e.g. "10ms")`);
  }
  const [min, max] = LIVENESS_INTERVAL_RANGE_MS;
  const intervalMs = parseDuration(options.interval, {
    what: `liveness.interval of host ${host}`,
    min,
    max,
    belowMin: "under 10 ms iputils ping busy-waits between requests: a whole CPU core per peer",
  });
  const fall = options.fall ?? DEFAULT_LIVENESS_FALL;
  if (!Number.isInteger(fall) || fall < 1 || fall > 100) {
    throw new RangeError(
      `Invalid host ${host}: liveness.fall must be an integer 1-100, got ${JSON.stringify(fall)}`,
    );
  }
  const stallGraceMs = options.stallGrace === undefined ? DEFAULT_STALL_GRACE_MS : parseDuration(
    options.stallGrace,
    { what: `liveness.stallGrace of host ${host}`, min: 0, max: MAX_STALL_GRACE_MS },
  );
  return { intervalMs, fall, stallGraceMs };
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
 * import { ScriptRegistry } from "./registry.ts";
 * import { deepEqual } from "node:assert/strict";
 * const r = new ScriptRegistry();
 * r.host("alpha", { address: "127.0.0.1" });
 * r.host("beta", { address: "127.0.0.2" });
 * r.service("web", {
 *   masters: ["alpha"], slaves: ["beta"], interval: "1s",
 *   start: async () => "UP", stop: async () => "FAIL",
 * });
 * deepEqual(r.validate(), []);
 * deepEqual(r.decl().services[0]!.intervalMs, 1000);
 * ```
 */
export class ScriptRegistry {
  #hosts = new Map<string, HostDecl>();
  #services = new Map<string, ServiceEntry>();
  #traps: TrapHandler[] = [];
  #arbiter: ArbiterDecl | null = null;
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
    if (options.liveness !== undefined) decl.liveness = livenessOf(name, options.liveness);
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
    const intervalMs = parseDuration(options.interval, { what: `interval of service ${name}` });
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
      : parseDuration(options.grace, { what: `grace of service ${name}` });
    inRange(graceMs, 0, 3_600_000, `grace of service ${name}`);
    const timeouts: Record<HandlerKind, number> = {
      start: DEFAULT_HANDLER_TIMEOUT_MS,
      stop: DEFAULT_HANDLER_TIMEOUT_MS,
      reclaim: DEFAULT_HANDLER_TIMEOUT_MS,
    };
    const t = options.timeouts;
    if (typeof t === "number" || typeof t === "string") {
      const ms = parseDuration(t, { what: `timeouts of service ${name}` });
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
        if (v !== undefined) {
          timeouts[k] = parseDuration(v, { what: `timeouts.${k} of service ${name}` });
        }
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
   * Declares the cluster's etcd arbiter (once per script, the same on every host): a host then
   * takes a service only while it holds the service's key in etcd (see `docs/arbiter.md`).
   *
   * @param options Endpoints, prefix, timing and what a holder does when etcd stops answering.
   * @returns The declaration sent to the supervisor (times in ms, defaults filled in).
   * @throws {TypeError} On a bad endpoint, prefix or policy; {@linkcode RangeError} when the
   *   timing breaks `renew + 2 × timeout + margin ≤ TTL` or another rule (each named);
   *   {@linkcode Error} when declared twice.
   */
  arbiter(options: ArbiterOptions): ArbiterDecl {
    this.#checkOpen("the arbiter");
    if (this.#arbiter !== null) {
      throw new Error(
        "Cannot declare the arbiter: it is declared twice (declare it once per cluster)",
      );
    }
    if (typeof options !== "object" || options === null) {
      throw new TypeError("Invalid arbiter: options must be an object with endpoints");
    }
    const known = [
      "endpoints",
      "prefix",
      "ttl",
      "renew",
      "timeout",
      "margin",
      "takeoverDelay",
      "onArbiterLoss",
    ];
    for (const k of Object.keys(options)) {
      if (!known.includes(k)) {
        throw new TypeError(`Invalid arbiter: unknown option ${k} (allowed: ${known.join(", ")})`);
      }
    }
    const eps = options.endpoints;
    if (!Array.isArray(eps) || eps.length === 0 || eps.length > MAX_ARBITER_ENDPOINTS) {
      throw new TypeError(
        `Invalid arbiter: endpoints must list 1-${MAX_ARBITER_ENDPOINTS} etcd members, e.g. ["http://198.18.1.11:2379"]`,
      );
    }
    const endpoints = eps.map((e, i) => checkEtcdEndpoint(e, `arbiter endpoints[${i}]`));
    if (new Set(endpoints).size !== endpoints.length) {
      throw new TypeError("Invalid arbiter: endpoints lists a member twice");
    }
    const prefix = options.prefix ?? DEFAULT_ARBITER_PREFIX;
    if (typeof prefix !== "string" || prefix.length > 200 || !/^\/[\x21-\x7e]*\/$/.test(prefix)) {
      throw new TypeError(
        `Invalid arbiter: prefix must start and end with "/" in printable ASCII (at most 200 characters), got ${
          JSON.stringify(prefix)
        }`,
      );
    }
    const onArbiterLoss = options.onArbiterLoss ?? "release";
    if (onArbiterLoss !== "release" && onArbiterLoss !== "keep-if-peers-agree") {
      throw new TypeError(
        `Invalid arbiter: onArbiterLoss must be "release" or "keep-if-peers-agree", got ${
          JSON.stringify(onArbiterLoss)
        }`,
      );
    }
    const partial: Partial<ArbiterTiming> = {};
    const fields = [
      ["ttl", "ttlMs"],
      ["renew", "renewMs"],
      ["timeout", "timeoutMs"],
      ["margin", "marginMs"],
      ["takeoverDelay", "takeoverDelayMs"],
    ] as const;
    for (const [option, field] of fields) {
      const v = options[option];
      if (v === undefined) continue;
      partial[field] = parseDuration(v, { what: `arbiter ${option}`, min: 1, max: 3_600_000 });
    }
    const timing = arbiterTiming(partial);
    const decl: ArbiterDecl = { endpoints, prefix, ...timing, onArbiterLoss };
    this.#arbiter = decl;
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
      ...(this.#arbiter === null ? {} : { arbiter: structuredClone(this.#arbiter) }),
      hosts: [...this.#hosts.values()].map((h) => structuredClone(h)),
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

/** Where the sandboxed child keeps the URL of the registry module it serves (see below). */
const SERVED = Symbol.for("failover.script.served");

let theRegistry: ScriptRegistry | null = null;

/**
 * The registry of this process's script: the one `mod.ts` declares into and, in the sandboxed
 * child, the one `./child.ts` serves to the supervisor.
 *
 * The child serves the registry of the project failsh runs from. A script that imports
 * `mod.ts` from another copy of the project (another path) would declare into another registry
 * and the child would serve an empty one: that copy's first declaration throws instead, naming
 * both paths.
 *
 * @returns The registry.
 * @throws {Error} In the sandboxed child, when this module is not the one the child serves.
 *
 * @example
 * ```ts
 * import { scriptRegistry } from "./registry.ts";
 * import { equal } from "node:assert/strict";
 * equal(scriptRegistry(), scriptRegistry());
 * ```
 */
export function scriptRegistry(): ScriptRegistry {
  const served = (globalThis as Record<symbol, unknown>)[SERVED];
  if (typeof served === "string" && served !== import.meta.url) {
    throw new Error(
      `Cannot declare: this script imports mod.ts from ${
        new URL("../../mod.ts", import.meta.url).pathname
      }, but failsh runs it with the mod.ts of ${
        new URL("../../mod.ts", served).pathname
      }: import failsh's own mod.ts`,
    );
  }
  theRegistry ??= new ScriptRegistry();
  return theRegistry;
}

/**
 * Marks this module's registry as the one the sandboxed child serves (`./child.ts` calls it
 * before the script loads).
 *
 * @returns The registry.
 */
export function serveThisRegistry(): ScriptRegistry {
  (globalThis as Record<symbol, unknown>)[SERVED] = import.meta.url;
  return scriptRegistry();
}
