/**
 * Shared data types of the failover protocol: what faild stores and serves, what failsh's monitor
 * port serves, and the validation rules every component applies. `docs/protocol.md` is the prose
 * version of this file; keep the two in step.
 *
 * @module
 */

/** The three states of a service, as in the original failover. */
export type ServiceState = "UP" | "RECOVER" | "FAIL";

/** Every valid {@linkcode ServiceState}, in a stable order. */
export const SERVICE_STATES: readonly ServiceState[] = ["UP", "RECOVER", "FAIL"];

/** Service and host names: letters, digits, `.`, `_`, `-`; 1 to 64 characters; starts alnum. */
export const NAME_PATTERN: RegExp = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** An arbiter epoch as a record carries it: a positive decimal integer of at most 19 digits. */
export const EPOCH_PATTERN: RegExp = /^[1-9][0-9]{0,18}$/;

/** Longest `detail` text faild accepts, in characters. */
export const MAX_DETAIL_LENGTH = 512;

/**
 * One service as faild holds it.
 *
 * @example Reading a record
 * ```ts
 * import type { ServiceRecord } from "./types.ts";
 * const r: ServiceRecord = {
 *   name: "web", state: "UP", lastChange: 1764000000000, changes: 3, detail: "", setBy: "failsh",
 * };
 * console.log(r.state);
 * ```
 */
export interface ServiceRecord {
  /** The service's name, matching {@linkcode NAME_PATTERN}. */
  name: string;
  /** Its current state. */
  state: ServiceState;
  /** When the state last changed, in milliseconds since the Unix epoch (64-bit safe integer). */
  lastChange: number;
  /** How many times the state has changed since the record was created; never decreases. */
  changes: number;
  /** Free text set by whoever set the state (at most {@linkcode MAX_DETAIL_LENGTH} characters). */
  detail: string;
  /** Who set it: the key id of the signed request, or `local` / `anonymous`. */
  setBy: string;
  /**
   * The arbiter's epoch of the holding (a fencing token: the etcd revision of the service's key,
   * a decimal string), when the writer holds the service under an arbiter; absent otherwise.
   * Readers that do not know it ignore it.
   */
  epoch?: string;
}

/** The answer of `GET /v1/services`. */
export interface ServiceList {
  /** The faild's host name (its `--name`, default the system host name). */
  host: string;
  /** A random id chosen at each faild start: a new value means the daemon restarted. */
  bootId: string;
  /** faild's clock when it answered, ms since the epoch. */
  now: number;
  /** Every service, sorted by name. */
  services: ServiceRecord[];
}

/** The answer of `GET /v1/health`. */
export interface Health {
  /** Always `true` when faild answers. */
  ok: boolean;
  /** The faild's host name. */
  host: string;
  /** See {@linkcode ServiceList.bootId}. */
  bootId: string;
  /** Software version. */
  version: string;
  /** Milliseconds since faild started. */
  uptimeMs: number;
  /** Number of services held. */
  services: number;
}

/** One change event on `GET /v1/events` (server-sent events, `event: change`). */
export interface ChangeEvent {
  /** `set` when a record was created or changed, `delete` when it was removed. */
  type: "set" | "delete";
  /** The record after the change (for `delete`, the record as it was). */
  service: ServiceRecord;
  /** Monotonic event sequence number of this faild, starting at 1 each boot. */
  seq: number;
}

/** A log facility's name, e.g. `http`, `auth`, `state`, `scheduler`, `policy`. */
export type Facility = string;

/** Log levels, most to least severe. */
export type LogLevel = "error" | "warn" | "info" | "debug" | "trace";

/** Every valid {@linkcode LogLevel}, most severe first. */
export const LOG_LEVELS: readonly LogLevel[] = ["error", "warn", "info", "debug", "trace"];

// ---------------------------------------------------------------------------------------------
// failsh monitor port (default 1848): what failmon and the web page read.
// ---------------------------------------------------------------------------------------------

/** One peer (or this host) as failsh sees it. */
export interface HostView {
  /** The host's name as the script declares it. */
  name: string;
  /** The faild URL polled. */
  url: string;
  /** `true` for the host failsh runs on. */
  self: boolean;
  /** Reachable after hysteresis (a host counts as unreachable after `fall` consecutive misses). */
  reachable: boolean;
  /** Consecutive failed polls right now. */
  misses: number;
  /** Last successful poll (ms since epoch), or `null` if never. */
  lastConnect: number | null;
  /** Last poll attempt (ms since epoch), or `null` if never. */
  lastCall: number | null;
  /** Round-trip time of the last successful poll in ms, or `null`. */
  latencyMs: number | null;
  /** The last error of a failed poll, or `null`. */
  lastError: string | null;
  /** The services that host reported at its last successful poll. */
  services: ServiceRecord[];
  /** Its host liveness probe, when the script declares one for it (never for this host). */
  liveness?: HostLiveness;
}

/** A peer's host liveness as failsh's prober judges it (see `shell/liveness/`). */
export interface HostLiveness {
  /**
   * `unknown`: its kernel never answered (ICMP filtered, or the prober does not run), polls
   * alone judge it; `alive`: it answers ping; `silent`: it answered, then left `fall` echo
   * requests in a row unanswered.
   */
  state: "unknown" | "alive" | "silent";
  /** Time between echo requests, ms. */
  intervalMs: number;
  /** Unanswered requests in a row that make it silent. */
  fall: number;
  /** How long its faild may be silent while its kernel answers before it is unreachable, ms. */
  stallGraceMs: number;
  /** Unanswered requests in a row right now. */
  unanswered: number;
  /** How long its kernel has not answered, by ping's clock, ms (0 while it answers). */
  silentMs: number;
  /** Round-trip time of the last echo reply, ms, or `null`. */
  rttMs: number | null;
  /** When the last echo reply was read (ms since epoch), or `null`. */
  lastAnswerAt: number | null;
  /** Why the prober does not run (it is restarted), or `null`. */
  error: string | null;
  /** `true` while the silence is what makes the host unreachable in the decisions. */
  decisive: boolean;
}

/** The last decision failsh made for a service, and why. */
export interface DecisionView {
  /** When (ms since epoch). */
  at: number;
  /** What it decided. */
  action: "none" | "start" | "stop" | "reclaim" | "recover" | "wait";
  /** A sentence naming the inputs that caused it. */
  reason: string;
}

/** The last handler run of a service. */
export interface HandlerRunView {
  /** Which handler. */
  kind: "start" | "stop" | "reclaim";
  /** When it started (ms since epoch). */
  startedAt: number;
  /** How long it ran in ms, or `null` while it still runs. */
  durationMs: number | null;
  /** The state it returned, or `null` if it threw, timed out or still runs. */
  result: ServiceState | null;
  /** The error if it threw or timed out. */
  error: string | null;
}

/** A local service as failsh runs it. */
export interface ServiceView {
  /** Service name. */
  name: string;
  /** Local state. */
  state: ServiceState;
  /** This host's role for the service. */
  role: "master" | "slave";
  /** Master host names, in priority order. */
  masters: string[];
  /** Slave host names, in priority order. */
  slaves: string[];
  /** Poll interval in ms. */
  intervalMs: number;
  /** When the local state last changed (ms since epoch). */
  lastChange: number;
  /** Last decision, or `null` before the first. */
  lastDecision: DecisionView | null;
  /** Last handler run, or `null` before the first. */
  lastHandler: HandlerRunView | null;
  /** The etcd arbiter's standing of this host for the service; absent without an arbiter. */
  arbiter?: ArbiterView;
}

/** The arbiter's standing of this host for one service, as the monitor shows it. */
export interface ArbiterView {
  /** `none`, `acquiring`, `waiting-delay`, `held`, `failsafe` or `lost`. */
  state: string;
  /** `grant` only while `held` or `failsafe`. */
  verdict: "grant" | "deny";
  /** The epoch (etcd revision of the key) while the key is this host's, else `null`. */
  epoch: string | null;
  /** Who holds the key when it is not this host's, if known. */
  holder: string | null;
  /** Why, in one sentence. */
  reason: string;
  /** Time left before the holder must let go without a renewal, ms (while keyed), else `null`. */
  deadlineInMs: number | null;
}

/** An address this failsh holds. */
export interface HeldAddress {
  /** Address with prefix length, e.g. `198.18.0.100/24`. */
  address: string;
  /** The device it is on. */
  device: string;
  /** When it was taken (ms since epoch). */
  since: number;
  /** The service that took it, if any. */
  service: string | null;
}

/** One line of failsh's recent-events ring. */
export interface EventRecord {
  /** When (ms since epoch). */
  at: number;
  /** Kind of event. */
  kind: "decision" | "handler" | "state" | "peer" | "address" | "policy" | "info";
  /** Service concerned, or `null`. */
  service: string | null;
  /** Host concerned, or `null`. */
  host: string | null;
  /** Human-readable sentence. */
  message: string;
}

/** The answer of `GET /v1/snapshot` on failsh's monitor port, and each `snapshot` SSE event. */
export interface FailshSnapshot {
  /** This host's name. */
  host: string;
  /** When failsh started (ms since epoch). */
  startedAt: number;
  /** When this snapshot was made (ms since epoch). */
  now: number;
  /** Every host of the script, this one included. */
  hosts: HostView[];
  /** Every service this host takes part in. */
  services: ServiceView[];
  /** Addresses held right now. */
  addresses: HeldAddress[];
  /** Most recent events, oldest first (at most 200). */
  events: EventRecord[];
}

/**
 * Tells whether a string is a valid service or host name.
 *
 * @param name The candidate name.
 * @returns `true` when it matches {@linkcode NAME_PATTERN}.
 *
 * @example
 * ```ts
 * import { isValidName } from "./types.ts";
 * console.log(isValidName("web-1"), isValidName("../etc"));
 * ```
 */
export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name);
}

/**
 * Tells whether a value is a {@linkcode ServiceState}.
 *
 * @param value Anything.
 * @returns `true` for `UP`, `RECOVER` and `FAIL`.
 *
 * @example
 * ```ts
 * import { isServiceState } from "./types.ts";
 * console.log(isServiceState("UP"), isServiceState("up"));
 * ```
 */
export function isServiceState(value: unknown): value is ServiceState {
  return value === "UP" || value === "RECOVER" || value === "FAIL";
}

// ---------------------------------------------------------------------------------------------
// Durations: one grammar for failover scripts, Hcfiles and command-line flags.
// ---------------------------------------------------------------------------------------------

/** A time: milliseconds as a number, or a string like `"500ms"`, `"2s"`, `"1.5m"`, `"1h"`. */
export type Duration = number | string;

/** Options of {@linkcode parseDuration}. */
export interface ParseDurationOptions {
  /** What the value is, for messages: `interval of service web` gives `Invalid interval of service web: …`. */
  what?: string;
  /** Smallest accepted value, ms (default: no bound). */
  min?: number;
  /** Largest accepted value, ms (default: no bound). */
  max?: number;
  /** Why the minimum is there, added to the message of a positive value under it. */
  belowMin?: string;
}

const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** Shows milliseconds the way a duration is written: `1ms`, `1.5s`, `24h`. */
function formatMs(ms: number): string {
  for (const unit of ["h", "m", "s"] as const) {
    if (ms >= DURATION_UNITS[unit] && ms % (DURATION_UNITS[unit] / 10) === 0) {
      return `${ms / DURATION_UNITS[unit]}${unit}`;
    }
  }
  return `${ms}ms`;
}

/**
 * Parses a {@linkcode Duration} to milliseconds: a finite number is milliseconds; a string is a
 * decimal number and a unit, `ms`, `s`, `m` or `h` (`"250ms"`, `"2s"`, `"1.5m"`, `"1h"`;
 * surrounding spaces are ignored, a string without a unit is refused). The result is rounded to
 * an integer. This one grammar serves failover scripts, Hcfiles and command-line flags.
 *
 * @param value The duration.
 * @param options What it is (for messages) and the accepted range.
 * @returns Milliseconds.
 * @throws {TypeError} When the value is not a duration.
 * @throws {RangeError} When it is outside `min`-`max`.
 *
 * @example
 * ```ts
 * import { parseDuration } from "./types.ts";
 * import { equal } from "node:assert/strict";
 * equal(parseDuration("1.5s"), 1500);
 * equal(parseDuration(250), 250);
 * equal(parseDuration(" 2m ", { what: "interval" }), 120_000);
 * ```
 */
export function parseDuration(value: Duration, options: ParseDurationOptions = {}): number {
  const prefix = options.what === undefined ? "" : `Invalid ${options.what}: `;
  let ms: number;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) {
      throw new TypeError(`${prefix}${value} is not a finite number of milliseconds`);
    }
    ms = Math.round(value);
  } else {
    const m = typeof value === "string"
      ? /^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*$/.exec(value)
      : null;
    if (!m) {
      const hint = typeof value === "string"
        ? `use a number and a unit, ms, s, m or h, like "500ms" or "1.5s"`
        : `use milliseconds or a string like "500ms", "2s", "1m"`;
      throw new TypeError(
        `${prefix}${JSON.stringify(value) ?? String(value)} is not a duration (${hint})`,
      );
    }
    ms = Math.round(Number(m[1]) * DURATION_UNITS[m[2] as keyof typeof DURATION_UNITS]);
  }
  const { min = -Infinity, max = Infinity } = options;
  if (ms < min || ms > max) {
    const shown = typeof value === "string" ? JSON.stringify(value) : `${ms} ms`;
    const why = options.belowMin !== undefined && ms > 0 && ms < min
      ? ` (${options.belowMin})`
      : "";
    throw new RangeError(
      `${prefix}${shown} is out of range: a duration here is from ${formatMs(min)} to ${
        formatMs(max)
      }${why}`,
    );
  }
  return ms;
}
