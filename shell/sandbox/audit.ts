/**
 * The audit log of failsh's supervisor: one JSON object a line for every privileged request a
 * script made (allowed, refused or failed) and every privileged action the supervisor took for
 * it (`ip`, `arping`, a program).
 *
 * ```json
 * {"time":"2026-11-24T20:00:00.000Z","script":"/etc/failover/failover.ts","service":"web",
 *  "request":{"op":"takeover","address":"198.19.0.100/24","device":"eth0"},
 *  "verdict":"refused","reason":"Cannot take over 198.19.0.100/24: address is outside the policy"}
 * ```
 *
 * Its guarantees, against a hostile script:
 *
 * - **No privileged action without its record.** {@linkcode AuditLog.writeOrThrow} throws when the
 *   line cannot be written (a full disk): the supervisor then refuses the action.
 * - **Bounded rate.** Refused requests ({@linkcode AuditLog.refused}) are written one line each up
 *   to {@linkcode REFUSED_PER_SECOND} a second per child ({@linkcode REFUSED_TOTAL_PER_SECOND} in
 *   all); the rest are counted and summarised in one line per child and second. Privileged records are never dropped; instead a child gets at most
 *   {@linkcode MAX_PRIVILEGED_BURST} privileged actions at once and
 *   {@linkcode PRIVILEGED_PER_SECOND} a second after that ({@linkcode AuditLog.admit}).
 * - **Bounded size.** The file is rotated at `maxBytes` (16 MiB), keeping `keep` (4) old files:
 *   `audit.log.1` … `audit.log.4`.
 * - **A record says what was asked.** {@linkcode auditRequest} keeps the request's known fields
 *   under their real `op`; a field the script added is listed by name in `extra`, never copied.
 *
 * @module
 */

/** What happened to a request. */
export type AuditVerdict = "allowed" | "refused" | "failed" | "done" | "aborted";

/** One line of the audit log. */
export interface AuditRecord {
  /** ISO 8601 time. */
  time: string;
  /** The script's path. */
  script: string;
  /** The service whose handler asked, or `null` (a trap, or the supervisor itself). */
  service: string | null;
  /** The request: `op` plus its arguments (`address`, `device`, `argv`…). */
  request: Record<string, unknown>;
  /** `allowed` (checked, about to act), `refused` (policy), `failed` (the action failed), `done`. */
  verdict: AuditVerdict;
  /** Why: the refusal's message, the failure, or the outcome (`exit code 0 in 12 ms`). */
  reason: string;
}

/** Longest audit line written, in characters (longer requests are cut). */
export const MAX_AUDIT_LINE = 8192;

/** Refused requests of one child written one line each per second (the rest are summarised). */
export const REFUSED_PER_SECOND = 10;

/** Refused requests of all children together written one line each per second. */
export const REFUSED_TOTAL_PER_SECOND = 40;

/** Privileged actions (takeover, release, run, setState) one child may start at once. */
export const MAX_PRIVILEGED_BURST = 64;

/** Privileged actions one child may start per second once its burst is spent. */
export const PRIVILEGED_PER_SECOND = 16;

/** Default size at which the file is rotated, bytes. */
export const DEFAULT_MAX_BYTES = 16 * 1024 * 1024;

/** Default number of rotated files kept (`audit.log.1` … `audit.log.4`). */
export const DEFAULT_KEEP = 4;

/** Most children tracked for rate limits (the oldest is forgotten beyond). */
const MAX_SOURCES = 1024;

/** The audit log cannot be written: the privileged action it would record must not run. */
export class AuditWriteError extends Error {
  /**
   * Creates the error.
   *
   * @param path The log file.
   * @param cause What the file system said.
   */
  constructor(path: string, cause: string) {
    super(`the audit log ${path} cannot be written (${cause})`);
    this.name = "AuditWriteError";
  }
}

/** The fields of each request kind that go into its record, and their expected type. */
const REQUEST_FIELDS: Record<string, Record<string, "string" | "number" | "argv">> = {
  takeover: { address: "string", device: "string", arpCount: "number", refreshMs: "number" },
  release: { address: "string", device: "string" },
  run: { argv: "argv", timeoutMs: "number" },
  poll: { host: "string" },
  setState: { state: "string", detail: "string" },
};

function bounded(value: unknown, kind: "string" | "number" | "argv"): unknown {
  if (kind === "number" && typeof value === "number") return value;
  if (kind === "string" && typeof value === "string") {
    return value.length > 1024 ? value.slice(0, 1024) + "…" : value;
  }
  if (kind === "argv" && Array.isArray(value)) {
    return value.slice(0, 65).map((a) => {
      const s = typeof a === "string" ? a : JSON.stringify(a) ?? String(a);
      return s.length > 4096 ? s.slice(0, 4096) + "…" : s;
    });
  }
  // Not what the field should be: record what it was, cut.
  const s = JSON.stringify(value) ?? String(value);
  return { invalid: s.length > 200 ? s.slice(0, 200) + "…" : s };
}

/**
 * The request part of an audit record for a script's request: its real `op`, then only the
 * fields that kind of request has (cut to a bounded size). Fields the script added are named in
 * `extra` (at most 16 names), so an `op`, `verdict` or `service` field in the arguments cannot
 * make a takeover look like something else.
 *
 * @param op The request kind the supervisor acts on.
 * @param args The arguments the script sent.
 * @returns The request to record.
 *
 * @example
 * ```ts
 * import { auditRequest } from "./audit.ts";
 * console.log(auditRequest("takeover", { address: "198.18.0.100/24", device: "eth0", op: "poll" }));
 * // { op: "takeover", address: "198.18.0.100/24", device: "eth0", extra: ["op"] }
 * ```
 */
export function auditRequest(op: unknown, args: Record<string, unknown>): Record<string, unknown> {
  const name = typeof op === "string" ? op.slice(0, 64) : String(JSON.stringify(op)).slice(0, 64);
  const record: Record<string, unknown> = { op: name };
  const fields = Object.hasOwn(REQUEST_FIELDS, name) ? REQUEST_FIELDS[name]! : {};
  const extra: string[] = [];
  for (const [k, v] of Object.entries(args)) {
    const kind = Object.hasOwn(fields, k) ? fields[k] : undefined;
    if (kind !== undefined) {
      if (v !== undefined) record[k] = bounded(v, kind);
    } else if (extra.length < 16) extra.push(k.slice(0, 64));
  }
  if (extra.length > 0) record.extra = extra;
  return record;
}

interface SourceState {
  /** Start of the current one-second window of refused records. */
  windowStart: number;
  /** Refused records written in the window. */
  written: number;
  /** Refused records dropped in the window, by op. */
  dropped: Map<string, number>;
  /** Flushes the summary when the window ends. */
  timer: ReturnType<typeof setTimeout> | null;
  /** Privileged actions that may start now (a token bucket). */
  tokens: number;
  /** When `tokens` was last refilled. */
  refilled: number;
}

/** Options of {@linkcode AuditLog}. */
export interface AuditLogOptions {
  /** The script's path, recorded in each line. */
  script: string;
  /** The file (opened in append mode, created with mode 0640). */
  path?: string;
  /** Also (or instead) given each line (tests, or to copy them elsewhere). */
  sink?: (line: string) => void;
  /** Told once when the file cannot be written (again after it could be). */
  onError?: (error: Error) => void;
  /** Size at which the file is rotated, bytes (default {@linkcode DEFAULT_MAX_BYTES}). */
  maxBytes?: number;
  /** Rotated files kept (default {@linkcode DEFAULT_KEEP}; 0 truncates instead). */
  keep?: number;
  /**
   * Privileged actions per child: `burst` at once, `perSecond` after that (default
   * {@linkcode MAX_PRIVILEGED_BURST}, {@linkcode PRIVILEGED_PER_SECOND}; benchmarks raise them).
   */
  budget?: { burst: number; perSecond: number };
  /** The clock, ms (tests). */
  now?: () => number;
}

/**
 * Appends audit records to a file (opened in append mode, created with mode 0640), or to a
 * sink function (tests, or to copy them elsewhere). Writes are synchronous so that a record is
 * written before the action it announces runs.
 *
 * @example
 * ```ts
 * import { AuditLog } from "./audit.ts";
 * import { deepEqual } from "node:assert/strict";
 * const lines: string[] = [];
 * const audit = new AuditLog({ script: "/tmp/failover.ts", sink: (l) => lines.push(l) });
 * audit.write("web", { op: "run", argv: ["rm"] }, "refused", "Cannot run rm: program is not in the policy");
 * deepEqual(JSON.parse(lines[0]!).verdict, "refused");
 * ```
 */
export class AuditLog {
  #script: string;
  #path: string | null;
  #file: Deno.FsFile | null = null;
  #size = 0;
  #torn = false;
  #sink: ((line: string) => void) | null;
  #failed = false;
  #onError: (error: Error) => void;
  #count = 0;
  #dropped = 0;
  #maxBytes: number;
  #keep: number;
  #now: () => number;
  #sources = new Map<string, SourceState>();
  #budget: { burst: number; perSecond: number };
  #all = { windowStart: 0, written: 0 };

  /**
   * Creates an audit log.
   *
   * @param options `path` of the file or `sink` for lines; `script` recorded in each line;
   *   `onError` told when the file cannot be written; rotation (`maxBytes`, `keep`).
   */
  constructor(options: AuditLogOptions) {
    this.#script = options.script;
    this.#path = options.path ?? null;
    this.#sink = options.sink ?? null;
    this.#onError = options.onError ?? ((e) => console.error(e.message));
    this.#maxBytes = Math.max(4096, options.maxBytes ?? DEFAULT_MAX_BYTES);
    this.#keep = Math.max(0, Math.min(99, options.keep ?? DEFAULT_KEEP));
    this.#now = options.now ?? Date.now;
    this.#budget = options.budget ??
      { burst: MAX_PRIVILEGED_BURST, perSecond: PRIVILEGED_PER_SECOND };
  }

  /** Number of records written since creation. */
  get count(): number {
    return this.#count;
  }

  /** Number of records that could not be written, or were summarised instead. */
  get dropped(): number {
    return this.#dropped;
  }

  /** The file, or `null` for a sink-only log. */
  get path(): string | null {
    return this.#path;
  }

  /**
   * Writes one record; a failure to write is reported to `onError` (not thrown). For the
   * supervisor's own records (commands it ran, outcomes).
   *
   * @param service The service concerned, or `null`.
   * @param request The request (`op` and arguments).
   * @param verdict What happened.
   * @param reason Why.
   * @returns The record (written or not).
   */
  write(
    service: string | null,
    request: Record<string, unknown>,
    verdict: AuditVerdict,
    reason: string,
  ): AuditRecord {
    const record = this.#record(service, request, verdict, reason);
    try {
      this.#emit(this.#line(record));
    } catch {
      this.#dropped++;
    }
    return record;
  }

  /**
   * Writes the record of a privileged action about to run, or throws: the caller must not act
   * when this throws.
   *
   * @param service The service concerned, or `null`.
   * @param request The request.
   * @param verdict Usually `allowed`.
   * @param reason Why.
   * @returns The record written.
   * @throws {AuditWriteError} When the file cannot be written (a full disk, a removed directory).
   */
  writeOrThrow(
    service: string | null,
    request: Record<string, unknown>,
    verdict: AuditVerdict,
    reason: string,
  ): AuditRecord {
    const record = this.#record(service, request, verdict, reason);
    this.#emit(this.#line(record));
    return record;
  }

  /**
   * Records a refused request of a child, rate limited: up to {@linkcode REFUSED_PER_SECOND}
   * lines a second per child and {@linkcode REFUSED_TOTAL_PER_SECOND} for all, then one summary
   * line per child for the window with the count by `op`. A refusal that cannot be written is dropped (refusing needs no record).
   *
   * @param source The child (its label).
   * @param service The service concerned, or `null`.
   * @param request The request.
   * @param reason The refusal's message.
   * @returns `true` when written as its own line.
   */
  refused(
    source: string,
    service: string | null,
    request: Record<string, unknown>,
    reason: string,
  ): boolean {
    const s = this.#source(source);
    const now = this.#now();
    if (now - s.windowStart >= 1000) {
      this.#summarise(source, s);
      s.windowStart = now;
      s.written = 0;
    }
    if (now - this.#all.windowStart >= 1000) this.#all = { windowStart: now, written: 0 };
    if (s.written < REFUSED_PER_SECOND && this.#all.written < REFUSED_TOTAL_PER_SECOND) {
      s.written++;
      this.#all.written++;
      this.write(service, request, "refused", reason);
      return true;
    }
    const op = String(request.op ?? "?");
    s.dropped.set(op, (s.dropped.get(op) ?? 0) + 1);
    if (s.timer === null) {
      s.timer = setTimeout(() => {
        s.timer = null;
        this.#summarise(source, s);
      }, Math.max(1, s.windowStart + 1000 - now));
      Deno.unrefTimer(s.timer);
    }
    return false;
  }

  /**
   * Takes one privileged action from a child's budget: {@linkcode MAX_PRIVILEGED_BURST} at once,
   * refilled at {@linkcode PRIVILEGED_PER_SECOND} a second (or the `budget` option's).
   *
   * @param source The child (its label).
   * @returns `false` when the child has spent its budget (refuse the action).
   */
  admit(source: string): boolean {
    const s = this.#source(source);
    const now = this.#now();
    s.tokens = Math.min(
      this.#budget.burst,
      s.tokens + ((now - s.refilled) / 1000) * this.#budget.perSecond,
    );
    s.refilled = now;
    if (s.tokens < 1) return false;
    s.tokens -= 1;
    return true;
  }

  /** Writes pending summaries and closes the file (a later write reopens it). */
  close(): void {
    for (const [source, s] of this.#sources) this.#summarise(source, s);
    try {
      this.#file?.close();
    } catch {
      // already closed
    }
    this.#file = null;
  }

  #source(source: string): SourceState {
    let s = this.#sources.get(source);
    if (s === undefined) {
      if (this.#sources.size >= MAX_SOURCES) {
        const [oldest, state] = this.#sources.entries().next().value!;
        this.#summarise(oldest, state);
        this.#sources.delete(oldest);
      }
      const now = this.#now();
      s = {
        windowStart: now,
        written: 0,
        dropped: new Map(),
        timer: null,
        tokens: this.#budget.burst,
        refilled: now,
      };
      this.#sources.set(source, s);
    }
    return s;
  }

  #summarise(source: string, s: SourceState): void {
    if (s.timer !== null) {
      clearTimeout(s.timer);
      s.timer = null;
    }
    if (s.dropped.size === 0) return;
    const counts = Object.fromEntries(s.dropped);
    const total = [...s.dropped.values()].reduce((a, b) => a + b, 0);
    s.dropped.clear();
    this.#dropped += total;
    this.write(
      null,
      { op: "refused-summary", source, counts },
      "refused",
      `${total} more refused requests of ${source} (${
        Object.entries(counts).map(([k, v]) => `${k}: ${v}`).join(", ")
      }) were not recorded one by one: at most ${REFUSED_PER_SECOND} a second per child, ${REFUSED_TOTAL_PER_SECOND} in all`,
    );
  }

  #record(
    service: string | null,
    request: Record<string, unknown>,
    verdict: AuditVerdict,
    reason: string,
  ): AuditRecord {
    return {
      time: new Date().toISOString(),
      script: this.#script,
      service,
      request,
      verdict,
      reason: reason.slice(0, 2000),
    };
  }

  #line(record: AuditRecord): string {
    let line = JSON.stringify(record);
    if (line.length > MAX_AUDIT_LINE) {
      line = JSON.stringify({
        ...record,
        request: {
          op: record.request.op ?? null,
          truncated: JSON.stringify(record.request).slice(0, 4000),
        },
      });
    }
    return line;
  }

  /** Writes a line to the sink and the file; throws an AuditWriteError when the file fails. */
  #emit(line: string): void {
    this.#count++;
    if (this.#sink) this.#sink(line);
    if (this.#path === null) return;
    const path = this.#path;
    try {
      // A line cut by an earlier failure is ended first, so that this one parses.
      const data = new TextEncoder().encode((this.#torn ? "\n" : "") + line + "\n");
      if (this.#file !== null && this.#size + data.length > this.#maxBytes) this.#rotate();
      if (this.#file === null) {
        this.#file = Deno.openSync(path, { append: true, create: true, mode: 0o640 });
        this.#size = this.#file.statSync().size;
      }
      let off = 0;
      try {
        while (off < data.length) off += this.#file.writeSync(data.subarray(off));
      } finally {
        this.#size += off;
        if (off > 0 && off < data.length) this.#torn = true;
      }
      this.#torn = false;
      this.#failed = false;
    } catch (e) {
      this.#count--;
      try {
        this.#file?.close();
      } catch {
        // already closed
      }
      this.#file = null;
      const cause = (e as Error).message;
      if (!this.#failed) {
        this.#failed = true;
        this.#onError(new Error(`Cannot write audit log ${path}: ${cause}`));
      }
      throw new AuditWriteError(path, cause);
    }
  }

  /** `audit.log` -> `audit.log.1` -> … -> `audit.log.KEEP` (the oldest is removed). */
  #rotate(): void {
    const path = this.#path as string;
    try {
      this.#file?.close();
    } catch {
      // already closed
    }
    this.#file = null;
    this.#torn = false;
    if (this.#keep === 0) {
      Deno.truncateSync(path, 0);
      return;
    }
    for (let i = this.#keep - 1; i >= 1; i--) {
      try {
        Deno.renameSync(`${path}.${i}`, `${path}.${i + 1}`);
      } catch {
        // not there yet
      }
    }
    Deno.renameSync(path, `${path}.1`);
  }
}
