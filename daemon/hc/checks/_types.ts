/**
 * Types shared by the check kinds of hc: what a check run returns, how a kind declares its
 * options, and how the Hcfile parser turns a check line into a runner.
 *
 * @module
 */

/** The kinds of check an Hcfile may use. */
export type CheckKind = "tcp" | "http" | "https" | "dns" | "smtp" | "command" | "ping";

/** Every {@linkcode CheckKind}, in the order the documentation lists them. */
export const CHECK_KINDS: readonly CheckKind[] = [
  "tcp",
  "http",
  "https",
  "dns",
  "smtp",
  "command",
  "ping",
];

/** What one run of a check found. */
export interface CheckResult {
  /** `true` when the check passed. */
  ok: boolean;
  /** One line saying what was seen (`HTTP 200 in 3 ms`, `connection refused`, ...). */
  detail: string;
  /** How long the probe took in ms, or `null` when it did not get that far. */
  latencyMs: number | null;
}

/** Runs a check once. It must give up promptly when `signal` aborts. */
export type CheckRunner = (signal: AbortSignal) => Promise<CheckResult>;

/** A running check's probe, with anything to release on shutdown. */
export interface CheckInstance {
  /** Runs the probe once. */
  run: CheckRunner;
  /** Releases resources (e.g. an HTTP client with its own CA). */
  close?: () => void;
}

/** One `key=value` option a check kind accepts. */
export interface OptionDef {
  /** What the option means and which values it takes, for error messages and docs. */
  help: string;
  /** Whether the option must be present. */
  required?: boolean;
  /** Turns the text into a value; throws an `Error` whose message says what is allowed. */
  parse?: (text: string) => unknown;
}

/** What a check kind may consult while it validates or builds a check. */
export interface CheckContext {
  /** Programs the Hcfile allows (`allow-program` lines), absolute paths. */
  allowPrograms: readonly string[];
  /** Directory of the Hcfile, to resolve relative file names. */
  baseDir: string;
  /** The check's timeout in ms. */
  timeoutMs: number;
}

/** A check kind: its options and how to build a runner from them. */
export interface CheckKindDef {
  /** One line for `hc --help` and the docs. */
  summary: string;
  /** Accepted options (besides interval, timeout, rise, fall). */
  options: Record<string, OptionDef>;
  /** Whether the kind takes positional words (the command's argv). */
  takesArgv: boolean;
  /**
   * Checks cross-option rules after each option parsed.
   *
   * @returns Problems (errors) and warnings, as sentences without a location.
   */
  validate(
    values: Record<string, unknown>,
    argv: string[],
    context: CheckContext,
  ): { errors: string[]; warnings: string[] };
  /** A short description of what is probed, e.g. the URL. */
  target(values: Record<string, unknown>, argv: string[]): string;
  /** Builds the probe. Called only for a valid check. */
  create(values: Record<string, unknown>, argv: string[], context: CheckContext): CheckInstance;
}
