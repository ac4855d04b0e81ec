/**
 * Structured logging with a level per facility that can be changed while running (faildebug).
 * One JSON object a line on stderr by default: `{"ts":…,"level":"info","facility":"http","msg":…}`.
 *
 * @module
 */
import { LOG_LEVELS, type LogLevel } from "./types.ts";

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3, trace: 4 };

/** Where log lines go. */
export type LogSink = (line: string) => void;

function stderrSink(line: string): void {
  try {
    Deno.stderr.writeSync(new TextEncoder().encode(line + "\n"));
  } catch {
    // A closed stderr must never take a daemon down.
  }
}

/**
 * A set of facilities with their levels. Usually one per process: {@linkcode logger}.
 *
 * @example
 * ```ts
 * import { Logger } from "./log.ts";
 * import { deepEqual } from "node:assert/strict";
 * const lines: string[] = [];
 * const log = new Logger({ sink: (l) => lines.push(l) });
 * log.setLevel("http", "debug");
 * log.debug("http", "request served", { path: "/v1/health" });
 * deepEqual(lines.length, 1);
 * ```
 */
export class Logger {
  #levels = new Map<string, LogLevel>();
  #default: LogLevel;
  #sink: LogSink;
  #fields: Record<string, unknown>;

  /**
   * Creates a logger.
   *
   * @param options Default level (`info`), sink (stderr) and fields added to every line.
   */
  constructor(
    options: { level?: LogLevel; sink?: LogSink; fields?: Record<string, unknown> } = {},
  ) {
    this.#default = options.level ?? "info";
    this.#sink = options.sink ?? stderrSink;
    this.#fields = options.fields ?? {};
  }

  /** Replaces the sink (e.g. to also feed a monitor) and the fields added to every line. */
  configure(options: { sink?: LogSink; fields?: Record<string, unknown>; level?: LogLevel }): void {
    if (options.sink) this.#sink = options.sink;
    if (options.fields) this.#fields = options.fields;
    if (options.level) this.#default = options.level;
  }

  /**
   * Sets the level of one facility, or the default with `*`.
   *
   * @throws {RangeError} When the level is unknown.
   */
  setLevel(facility: string, level: string): void {
    if (!(LOG_LEVELS as readonly string[]).includes(level)) {
      throw new RangeError(
        `Cannot set log level of ${facility}: "${level}" is not one of ${LOG_LEVELS.join(", ")}`,
      );
    }
    if (facility === "*") this.#default = level as LogLevel;
    else this.#levels.set(facility, level as LogLevel);
  }

  /** The level in force for a facility. */
  level(facility: string): LogLevel {
    return this.#levels.get(facility) ?? this.#default;
  }

  /** Every facility with an explicit level, plus `*` for the default. */
  levels(): Record<string, LogLevel> {
    return { "*": this.#default, ...Object.fromEntries(this.#levels) };
  }

  /** Whether a message of this level would be written. */
  enabled(facility: string, level: LogLevel): boolean {
    return RANK[level] <= RANK[this.level(facility)];
  }

  /** Writes one line if the facility's level allows it. */
  log(level: LogLevel, facility: string, msg: string, fields?: Record<string, unknown>): void {
    if (!this.enabled(facility, level)) return;
    this.#sink(
      JSON.stringify({
        ts: new Date().toISOString(),
        level,
        facility,
        msg,
        ...this.#fields,
        ...fields,
      }),
    );
  }

  /** Logs at `error`. */
  error(facility: string, msg: string, fields?: Record<string, unknown>): void {
    this.log("error", facility, msg, fields);
  }
  /** Logs at `warn`. */
  warn(facility: string, msg: string, fields?: Record<string, unknown>): void {
    this.log("warn", facility, msg, fields);
  }
  /** Logs at `info`. */
  info(facility: string, msg: string, fields?: Record<string, unknown>): void {
    this.log("info", facility, msg, fields);
  }
  /** Logs at `debug`. */
  debug(facility: string, msg: string, fields?: Record<string, unknown>): void {
    this.log("debug", facility, msg, fields);
  }
  /** Logs at `trace`. */
  trace(facility: string, msg: string, fields?: Record<string, unknown>): void {
    this.log("trace", facility, msg, fields);
  }
}

/** The process-wide logger. */
export const logger: Logger = new Logger();
