/**
 * What every command-line tool of the project shares: one exit-code table, the shared flags
 * (`--key`, `--key-file`, `--timeout`, `--log-level`, `--json`, `--help`) defined once, and one
 * parser, `node:util`'s `parseArgs` (commander costs faild 8.5 MiB of RSS; see
 * `docs/performance.md`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EXIT, parseCommandLine } from "./cli.ts";
 * const { values, positionals } = parseCommandLine("failc", ["--json", "list"], {
 *   shared: ["json"],
 * });
 * assert.equal(values.json, true);
 * assert.deepStrictEqual(positionals, ["list"]);
 * assert.equal(EXIT.usage, 64);
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { AuthError, FaildError, PeerUnreachableError } from "./client_errors.ts";
import { resolveKey } from "./key.ts";
import { LOG_LEVELS } from "./types.ts";

/**
 * The exit codes of every tool (the BSD sysexits values where one fits). A tool uses the ones
 * its `--help` lists; the meaning of each is the same everywhere.
 */
export const EXIT = {
  /** Success. */
  ok: 0,
  /** The tool ran and the answer is "no": not found, a check not UP, refused, could not start. */
  failure: 1,
  /** `--check` found errors (failsh, hc: like `keepalived -t`). */
  checkErrors: 2,
  /** Bad command line: unknown option, bad value, missing argument, unreadable key file. */
  usage: 64,
  /** A daemon could not be reached, or its answer was not understood (5xx, not the protocol). */
  unavailable: 69,
  /** Authentication refused (401/403), or an answer that is unsigned or badly signed. */
  auth: 77,
  /** Interrupted by SIGINT. */
  interrupted: 130,
} as const;

/** One of {@linkcode EXIT}'s values. */
export type ExitCode = typeof EXIT[keyof typeof EXIT];

/** The general meaning of each exit code, as `--help` and the README list them. */
export const EXIT_MEANINGS: Readonly<Record<ExitCode, string>> = {
  0: "success",
  1: "done, and the answer is no: not found, not UP, refused, could not start",
  2: "--check found errors",
  64: "bad command line: option, value, argument or key file",
  69: "a daemon could not be reached, or its answer was not understood",
  77: "authentication refused, or an answer not signed with the key",
  130: "interrupted (SIGINT)",
};

/**
 * The `Exit codes:` section of a tool's `--help`: the codes it uses, each with the tool's own
 * words where given, else the general meaning.
 *
 * @param codes The codes, with the tool's words (`null` for the general meaning).
 * @returns The section, starting with `Exit codes:`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EXIT, exitCodesHelp } from "./cli.ts";
 * assert.equal(
 *   exitCodesHelp([[EXIT.ok, null], [EXIT.failure, "service not found"]]),
 *   "Exit codes:\n  0    success\n  1    service not found",
 * );
 * ```
 */
export function exitCodesHelp(codes: ReadonlyArray<readonly [ExitCode, string | null]>): string {
  return [
    "Exit codes:",
    ...codes.map(([code, words]) => `  ${String(code).padEnd(4)} ${words ?? EXIT_MEANINGS[code]}`),
  ].join("\n");
}

/** A bad command line: the tool prints the message and exits {@linkcode EXIT.usage}. */
export class UsageError extends TypeError {
  /**
   * Creates the error.
   *
   * @param message What was wrong and what is allowed.
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** How `parseArgs` describes one option. */
export interface OptionSpec {
  /** `string` takes a value, `boolean` does not. */
  type: "string" | "boolean";
  /** A one-letter alias. */
  short?: string;
  /** The option may be given several times (its value is then an array). */
  multiple?: boolean;
}

/** The shared flags, defined once. */
export const SHARED_OPTIONS = {
  key: { type: "string" },
  "key-file": { type: "string" },
  timeout: { type: "string" },
  "log-level": { type: "string", multiple: true },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies Record<string, OptionSpec>;

/** The name of a shared flag. */
export type SharedOption = keyof typeof SHARED_OPTIONS;

/** The `--help` line of each shared flag, the same in every tool. */
export const SHARED_HELP: Readonly<Record<SharedOption, string>> = {
  key: "--key K                 the community (shared secret); visible in the process list,\n" +
    "                          so prefer --key-file or $FAILOVER_KEY",
  "key-file": "--key-file F            read the community from the first line of file F\n" +
    "                          (default: the FAILOVER_KEY environment variable)",
  timeout: "--timeout MS            time limit of each request, in milliseconds",
  "log-level": `--log-level [FAC=]LEVEL log level: ${LOG_LEVELS.join(", ")}; alone for every\n` +
    "                          facility or per facility; repeatable",
  json: "--json                  print JSON instead of text",
  help: "-h, --help              this text",
};

/**
 * The `--help` lines of some shared flags, indented like the tools' own options.
 *
 * @param names The flags, in the order shown.
 * @returns The lines, each starting with two spaces.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sharedHelp } from "./cli.ts";
 * assert.equal(sharedHelp(["json"]), "  --json                  print JSON instead of text");
 * ```
 */
export function sharedHelp(names: readonly SharedOption[]): string {
  return names.map((n) => SHARED_HELP[n].replace(/^/gm, "  ")).join("\n");
}

type Spec = Record<string, OptionSpec>;
type ValueOf<S extends OptionSpec> = S["type"] extends "boolean"
  ? (S["multiple"] extends true ? boolean[] : boolean)
  : (S["multiple"] extends true ? string[] : string);
type Values<S extends Spec> = { -readonly [K in keyof S]?: ValueOf<S[K]> };

/** Options of {@linkcode parseCommandLine}. */
export interface CommandLineOptions<O extends Spec, S extends SharedOption> {
  /** The tool's own options. */
  options?: O;
  /** The shared flags it takes (`help` always). */
  shared?: readonly S[];
}

/**
 * Parses a tool's command line with `node:util`'s `parseArgs`: options may come before or after
 * the positional arguments, `--` ends the options, `--name=value` works; an unknown option or
 * a missing value is a {@linkcode UsageError} that names the tool's `--help`.
 *
 * @param tool The tool's name, for errors.
 * @param args The arguments.
 * @param config The tool's options and the shared flags it takes.
 * @returns The values (absent options are `undefined`) and the positional arguments.
 * @throws {UsageError} On an unknown option or a missing value.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCommandLine, UsageError } from "./cli.ts";
 * const r = parseCommandLine("hc", ["--once", "Hcfile"], { options: { once: { type: "boolean" } } });
 * assert.equal(r.values.once, true);
 * assert.throws(() => parseCommandLine("hc", ["--bogus"]), UsageError);
 * ```
 */
export function parseCommandLine<
  O extends Spec = Record<never, never>,
  S extends SharedOption = "help",
>(
  tool: string,
  args: readonly string[],
  config: CommandLineOptions<O, S> = {},
): { values: Values<O & Pick<typeof SHARED_OPTIONS, S | "help">>; positionals: string[] } {
  const options: Spec = { help: SHARED_OPTIONS.help };
  for (const name of config.shared ?? []) options[name] = SHARED_OPTIONS[name];
  Object.assign(options, config.options ?? {});
  try {
    const { values, positionals } = parseArgs({
      args: [...args],
      options,
      allowPositionals: true,
      strict: true,
    });
    return { values: values as never, positionals };
  } catch (error) {
    const message = (error as Error).message.replace(/\. To specify a positional.*$/s, "");
    throw new UsageError(`${message}. Run ${tool} --help for the options`);
  }
}

/**
 * Reads `--timeout MS`: a whole number of milliseconds within bounds (or, for a tool that gives
 * a duration parser, a duration such as `2s`).
 *
 * @param value The flag's value, or `undefined` when not given.
 * @param options The default, the largest value allowed (default 600000), a duration parser.
 * @returns Milliseconds.
 * @throws {UsageError} When it is not a whole number in range.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { timeoutOption } from "./cli.ts";
 * assert.equal(timeoutOption(undefined, { defaultMs: 5000 }), 5000);
 * assert.equal(timeoutOption("250", { defaultMs: 5000 }), 250);
 * assert.throws(() => timeoutOption("5s", { defaultMs: 5000 }), /expected milliseconds/);
 * ```
 */
export function timeoutOption(
  value: string | undefined,
  options: { defaultMs: number; maxMs?: number; duration?: (text: string) => number },
): number {
  if (value === undefined) return options.defaultMs;
  const max = options.maxMs ?? 600_000;
  let n = Number(value);
  if (!/^[0-9]{1,9}$/.test(value) && options.duration !== undefined) {
    try {
      n = options.duration(value);
    } catch (error) {
      throw new UsageError(`Invalid --timeout "${value}": ${(error as Error).message}`);
    }
    if (n > max) throw new UsageError(`Invalid --timeout "${value}": at most ${max} ms`);
    return n;
  }
  if (!/^[0-9]{1,9}$/.test(value) || n < 1 || n > max) {
    throw new UsageError(`Invalid --timeout "${value}": expected milliseconds from 1 to ${max}`);
  }
  return n;
}

/**
 * Reads `--key` and `--key-file` (or `$FAILOVER_KEY`): the community to sign with.
 *
 * @param values The parsed flags.
 * @returns The key, or `undefined` when none was given (requests then go unsigned).
 * @throws {UsageError} When both flags are given, or the key file cannot be read or is empty.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { keyOption } from "./cli.ts";
 * assert.equal(keyOption({ key: "s3cret" }), "s3cret");
 * assert.throws(() => keyOption({ key: "a", "key-file": "/etc/k" }), /not both/);
 * ```
 */
export function keyOption(values: { key?: string; "key-file"?: string }): string | undefined {
  if (values.key !== undefined && values["key-file"] !== undefined) {
    throw new UsageError("Give either --key or --key-file, not both");
  }
  try {
    return resolveKey({
      ...(values.key === undefined ? {} : { key: values.key }),
      ...(values["key-file"] === undefined ? {} : { keyFile: values["key-file"] }),
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/**
 * Applies `--log-level [FACILITY=]LEVEL` flags to a logger.
 *
 * @param logger Anything with `setLevel(facility, level)` (the loggers of `lib/log.ts`).
 * @param specs The flags' values, in order.
 * @throws {UsageError} On an unknown level.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { applyLogLevels } from "./cli.ts";
 * import { Logger } from "./log.ts";
 * const log = new Logger();
 * applyLogLevels(log, ["warn", "http=debug"]);
 * assert.throws(() => applyLogLevels(log, ["loud"]), /loud/);
 * ```
 */
export function applyLogLevels(
  logger: { setLevel(facility: string, level: string): void },
  specs: readonly string[] | undefined,
): void {
  for (const spec of specs ?? []) {
    const eq = spec.indexOf("=");
    try {
      if (eq < 0) logger.setLevel("*", spec);
      else logger.setLevel(spec.slice(0, eq), spec.slice(eq + 1));
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
  }
}

/**
 * The exit code for an error a tool caught: a usage error, or one of the client's.
 *
 * @param error What was thrown.
 * @returns {@linkcode EXIT.usage} for a bad command line, {@linkcode EXIT.unavailable} for an
 * unreachable daemon or a 5xx/garbled answer, {@linkcode EXIT.auth} for a refused key or an
 * untrusted answer, {@linkcode EXIT.failure} for anything else (404 included).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EXIT, exitCodeOf } from "./cli.ts";
 * import { FaildError, PeerUnreachableError } from "./client_errors.ts";
 * assert.equal(exitCodeOf(new PeerUnreachableError("http://h:1", "refused")), EXIT.unavailable);
 * assert.equal(exitCodeOf(new FaildError("Service not found: web", 404)), EXIT.failure);
 * ```
 */
export function exitCodeOf(error: unknown): ExitCode {
  if (error instanceof UsageError) return EXIT.usage;
  if (error instanceof PeerUnreachableError) return EXIT.unavailable;
  if (error instanceof AuthError) return EXIT.auth;
  if (error instanceof FaildError) return error.status >= 500 ? EXIT.unavailable : EXIT.failure;
  return EXIT.failure;
}
