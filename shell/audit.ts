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

/**
 * Appends audit records to a file (opened in append mode, created with mode 0640), or to a
 * sink function (tests, or to copy them elsewhere). Writes are synchronous so that a record is
 * on disk before the action it announces runs.
 *
 * @example
 * ```ts
 * import { AuditLog } from "./audit.ts";
 * const lines: string[] = [];
 * const audit = new AuditLog({ script: "/tmp/failover.ts", sink: (l) => lines.push(l) });
 * audit.write("web", { op: "run", argv: ["rm"] }, "refused", "Cannot run rm: program is not in the policy");
 * console.log(JSON.parse(lines[0]!).verdict); // "refused"
 * ```
 */
export class AuditLog {
  #script: string;
  #path: string | null;
  #file: Deno.FsFile | null = null;
  #sink: ((line: string) => void) | null;
  #failed = false;
  #onError: (error: Error) => void;
  #count = 0;

  /**
   * Creates an audit log.
   *
   * @param options `path` of the file or `sink` for lines; `script` recorded in each line;
   *   `onError` is told (once) when the file cannot be written.
   */
  constructor(
    options: {
      script: string;
      path?: string;
      sink?: (line: string) => void;
      onError?: (error: Error) => void;
    },
  ) {
    this.#script = options.script;
    this.#path = options.path ?? null;
    this.#sink = options.sink ?? null;
    this.#onError = options.onError ?? ((e) => console.error(e.message));
  }

  /** Number of records written since creation. */
  get count(): number {
    return this.#count;
  }

  /**
   * Writes one record.
   *
   * @param service The service concerned, or `null`.
   * @param request The request (`op` and arguments).
   * @param verdict What happened.
   * @param reason Why.
   * @returns The record written.
   */
  write(
    service: string | null,
    request: Record<string, unknown>,
    verdict: AuditVerdict,
    reason: string,
  ): AuditRecord {
    const record: AuditRecord = {
      time: new Date().toISOString(),
      script: this.#script,
      service,
      request,
      verdict,
      reason: reason.slice(0, 2000),
    };
    let line = JSON.stringify(record);
    if (line.length > MAX_AUDIT_LINE) {
      line = JSON.stringify({
        ...record,
        request: { op: request.op ?? null, truncated: JSON.stringify(request).slice(0, 4000) },
      });
    }
    this.#count++;
    if (this.#sink) this.#sink(line);
    if (this.#path !== null) this.#append(line);
    return record;
  }

  #append(line: string): void {
    try {
      if (this.#file === null) {
        this.#file = Deno.openSync(this.#path as string, {
          append: true,
          create: true,
          mode: 0o640,
        });
      }
      const data = new TextEncoder().encode(line + "\n");
      let off = 0;
      while (off < data.length) off += this.#file.writeSync(data.subarray(off));
      this.#failed = false;
    } catch (e) {
      if (!this.#failed) {
        this.#failed = true;
        this.#onError(
          new Error(`Cannot write audit log ${this.#path}: ${(e as Error).message}`),
        );
      }
      try {
        this.#file?.close();
      } catch {
        // already closed
      }
      this.#file = null;
    }
  }

  /** Closes the file (a later write reopens it). */
  close(): void {
    try {
      this.#file?.close();
    } catch {
      // already closed
    }
    this.#file = null;
  }
}
