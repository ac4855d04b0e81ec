/**
 * The `Hcfile` parser: a Makefile-like list of checks, each naming the checks it depends on,
 * with the check line and its `on EVENT:` actions indented below (grammar in `docs/hc.md`).
 * Every problem is reported as `file:line: what is wrong: what is allowed`, with a severity.
 *
 * @example The shape of an Hcfile
 * ```text
 * allow-program /usr/local/bin/repair-web
 * gateway:
 * 	ping host=198.18.0.1 interval=1s timeout=500ms
 * web: gateway
 * 	http url=http://127.0.0.1:8080/health status=200 body=/ok/ rise=2 fall=3
 * 	on fail: faild url=http://127.0.0.1:7100 key-file=/etc/failover/key service=web
 * ```
 *
 * @module
 */
import { NAME_PATTERN, parseDuration } from "../../lib/types.ts";
import {
  ACTION_EVENTS,
  type ActionEvent,
  type ActionKind,
  ACTIONS,
  type ActionSpec,
} from "./actions.ts";
import { CHECK_KINDS, type CheckKind, CHECKS, type OptionDef } from "./checks/mod.ts";
import { parseHostPort } from "../../lib/net.ts";
import { errorText, HC_DURATION, parseInteger, resolvePath } from "./checks/_util.ts";
import { analyzeGraph } from "./graph.ts";

/** Most bytes of an Hcfile. */
export const MAX_HCFILE_BYTES = 1 << 20;

/** Most checks in one Hcfile. */
export const MAX_CHECKS = 10_000;

/** Default interval, timeout, rise and fall of a check. */
export interface CheckDefaults {
  /** Time between the starts of two runs, ms (default 10 s). */
  intervalMs: number;
  /** Time limit of one run, ms (default 2 s). */
  timeoutMs: number;
  /** Consecutive passes before the check is UP (default 2). */
  rise: number;
  /** Consecutive failures before the check is FAIL (default 3). */
  fall: number;
}

/** The built-in defaults. */
export const BUILTIN_DEFAULTS: Readonly<CheckDefaults> = {
  intervalMs: 10_000,
  timeoutMs: 2000,
  rise: 2,
  fall: 3,
};

/** One check of an Hcfile. */
export interface CheckSpec extends CheckDefaults {
  /** Its name (the target). */
  name: string;
  /** Line of the target. */
  line: number;
  /** The checks it depends on. */
  deps: string[];
  /** Its kind. */
  kind: CheckKind;
  /** Kind-specific options, parsed. */
  values: Record<string, unknown>;
  /** Positional words (the `command` argv). */
  argv: string[];
  /** What it probes, for humans. */
  target: string;
  /**
   * What identifies the probe across reloads: kind, words, dependencies and timing (not the
   * actions). A check whose signature is unchanged keeps its state when hc reloads.
   */
  signature: string;
  /** Actions, in file order. */
  actions: ActionSpec[];
}

/** A parsed Hcfile. */
export interface HcConfig {
  /** The file name as given. */
  file: string;
  /** Its directory (relative paths in options resolve against it). */
  baseDir: string;
  /** `name NAME`: this hc's name, or `null` for the host name. */
  name: string | null;
  /** `listen HOST:PORT`, or `null`. */
  listen: string | null;
  /** `allow-program` paths. */
  allowPrograms: string[];
  /** The checks in dependency order. */
  checks: CheckSpec[];
}

/** One problem found in an Hcfile. */
export interface Diagnostic {
  /** The file name. */
  file: string;
  /** 1-based line number (0 when the problem is about the whole file). */
  line: number;
  /** `error` stops hc from starting; `warning` does not. */
  severity: "error" | "warning";
  /** What is wrong and what is allowed. */
  message: string;
}

/**
 * Formats a diagnostic as `file:line: severity: message`.
 *
 * @param d The diagnostic.
 * @returns One line.
 *
 * @example
 * ```ts
 * import { formatDiagnostic } from "./hcfile.ts";
 * console.log(formatDiagnostic({ file: "Hcfile", line: 3, severity: "error", message: "bad" }));
 * ```
 */
export function formatDiagnostic(d: Diagnostic): string {
  return `${d.file}:${d.line}: ${d.severity}: ${d.message}`;
}

/**
 * Splits a line into words: whitespace separates, double quotes group (`body="/a b/"`), and
 * inside quotes `\"` is a quote and `\\` a backslash (other backslashes stay, for regexes).
 *
 * @param text The line without its indentation.
 * @returns The words.
 * @throws {SyntaxError} When a quote is not closed.
 *
 * @example
 * ```ts
 * import { tokenize } from "./hcfile.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(tokenize('http url=http://x/ body="/a b/"'), ["http", "url=http://x/", "body=/a b/"]);
 * ```
 */
export function tokenize(text: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === "\\" && (text[i + 1] === '"' || text[i + 1] === "\\")) word += text[++i];
      else if (c === '"') quoted = false;
      else word += c;
    } else if (c === '"') {
      quoted = true;
      inWord = true;
    } else if (c === " " || c === "\t") {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quoted) throw new SyntaxError('unclosed double quote: close it or escape it as \\"');
  if (inWord) words.push(word);
  return words;
}

const COMMON_OPTIONS: Record<string, OptionDef> = {
  interval: { help: "time between runs, e.g. 5s", parse: (t) => parseDuration(t, HC_DURATION) },
  timeout: { help: "time limit of one run, e.g. 1s", parse: (t) => parseDuration(t, HC_DURATION) },
  rise: {
    help: "passes in a row before UP, 1 to 100",
    parse: (t) => parseInteger(t, { min: 1, max: 100 }),
  },
  fall: {
    help: "failures in a row before FAIL, 1 to 100",
    parse: (t) => parseInteger(t, { min: 1, max: 100 }),
  },
};

const DIRECTIVES = ["allow-program", "listen", "name", "defaults"] as const;

/** Options and argv split from a line's words, with the problems met. */
interface SplitWords {
  values: Record<string, unknown>;
  argv: string[];
  errors: string[];
}

function splitWords(
  words: readonly string[],
  options: Record<string, OptionDef>,
  takesArgv: boolean,
  what: string,
): SplitWords {
  const values: Record<string, unknown> = {};
  const argv: string[] = [];
  const errors: string[] = [];
  const allowed = Object.keys(options).join(", ") || "none";
  let optionsEnded = false;
  for (const w of words) {
    if (takesArgv && !optionsEnded && w === "--") {
      optionsEnded = true;
      continue;
    }
    const m = optionsEnded ? null : /^([a-z][a-z0-9-]*)=(.*)$/s.exec(w);
    const key = m?.[1];
    if (m && key !== undefined && (!takesArgv || key in options)) {
      const def = options[key];
      if (!def) {
        errors.push(`${what} has no option ${key}: allowed are ${allowed}`);
        continue;
      }
      if (key in values) {
        errors.push(`option ${key} is given twice: give it once`);
        continue;
      }
      const text = m[2] ?? "";
      if (text === "") {
        errors.push(`option ${key} is empty: ${def.help}`);
        continue;
      }
      try {
        values[key] = def.parse ? def.parse(text) : text;
      } catch (e) {
        errors.push(`option ${key}: ${errorText(e)}`);
      }
    } else if (takesArgv) {
      argv.push(w);
    } else {
      errors.push(`unexpected word "${w}": ${what} takes only key=value options (${allowed})`);
    }
  }
  for (const [k, def] of Object.entries(options)) {
    if (def.required && !(k in values) && !errors.some((e) => e.startsWith(`option ${k}`))) {
      errors.push(`${what} needs ${k}=: ${def.help}`);
    }
  }
  return { values, argv, errors };
}

/** Options of {@linkcode parseHcfile}. */
export interface ParseOptions {
  /** The file name used in messages and to resolve relative paths (default `Hcfile`). */
  file?: string;
  /** Directory relative paths resolve against (default: the file's directory). */
  baseDir?: string;
}

/**
 * Parses and validates an Hcfile's text.
 *
 * @param text The file's content.
 * @param options File name and base directory.
 * @returns The configuration (checks in dependency order) and every problem found, by line.
 *   Use the configuration only when no diagnostic is an error.
 *
 * @example
 * ```ts
 * import { parseHcfile } from "./hcfile.ts";
 * import { deepEqual } from "node:assert/strict";
 * const { config, diagnostics } = parseHcfile("web:\n\ttcp host=127.0.0.1 port=80\n");
 * deepEqual([config.checks[0]?.kind, diagnostics.length], ["tcp", 0]);
 * ```
 */
export function parseHcfile(
  text: string,
  options: ParseOptions = {},
): { config: HcConfig; diagnostics: Diagnostic[] } {
  const file = options.file ?? "Hcfile";
  const baseDir = options.baseDir ??
    (file.includes("/") ? file.slice(0, file.lastIndexOf("/")) || "/" : ".");
  const diagnostics: Diagnostic[] = [];
  const error = (line: number, message: string): void => {
    diagnostics.push({ file, line, severity: "error", message });
  };
  const warn = (line: number, message: string): void => {
    diagnostics.push({ file, line, severity: "warning", message });
  };
  const config: HcConfig = {
    file,
    baseDir,
    name: null,
    listen: null,
    allowPrograms: [],
    checks: [],
  };
  if (text.length > MAX_HCFILE_BYTES) {
    error(0, `file is larger than ${MAX_HCFILE_BYTES} bytes`);
    return { config, diagnostics };
  }

  interface RawTarget {
    name: string;
    line: number;
    deps: string[];
    defaults: CheckDefaults;
    check: { line: number; words: string[] } | null;
    actions: { line: number; events: ActionEvent[]; words: string[] }[];
    broken: boolean;
  }
  const targets: RawTarget[] = [];
  const byName = new Map<string, RawTarget>();
  let defaults: CheckDefaults = { ...BUILTIN_DEFAULTS };
  let current: RawTarget | null = null;
  // After a rejected target line, its indented body is skipped rather than reported again.
  let skipping = false;
  const allowLines = new Map<string, number>();

  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const raw = (lines[i] ?? "").replace(/\r$/, "");
    if (/^\s*(#.*)?$/.test(raw)) continue;
    const indented = /^[ \t]/.test(raw);
    let words: string[];
    try {
      words = tokenize(raw.trim());
    } catch (e) {
      error(n, errorText(e));
      if (indented && current) current.broken = true;
      continue;
    }
    const first = words[0] ?? "";
    if (!indented) {
      current = null;
      skipping = false;
      if (!(DIRECTIVES as readonly string[]).includes(first) && raw.includes(":")) {
        // target: deps   (also accept "target : deps")
        const colon = raw.indexOf(":");
        const name = raw.slice(0, colon).trim();
        const deps = raw.slice(colon + 1).trim().split(/[\s,]+/).filter((d) => d !== "");
        if (!NAME_PATTERN.test(name)) {
          error(
            n,
            `"${name}" is not a check name: use letters, digits, . _ -, 1 to 64, starting with a letter or digit`,
          );
          skipping = true;
          continue;
        }
        if (byName.has(name)) {
          error(
            n,
            `check ${name} is already defined at line ${
              byName.get(name)!.line
            }: names must be unique`,
          );
          skipping = true;
          continue;
        }
        const seen = new Set<string>();
        for (const d of deps) {
          if (!NAME_PATTERN.test(d)) error(n, `"${d}" is not a check name a dependency could have`);
          else if (seen.has(d)) warn(n, `dependency ${d} is listed twice`);
          seen.add(d);
        }
        if (targets.length >= MAX_CHECKS) {
          error(n, `too many checks: at most ${MAX_CHECKS}`);
          skipping = true;
          continue;
        }
        current = {
          name,
          line: n,
          deps: [...seen],
          defaults: { ...defaults },
          check: null,
          actions: [],
          broken: false,
        };
        targets.push(current);
        byName.set(name, current);
        continue;
      }
      const args = words.slice(1);
      switch (first) {
        case "allow-program":
          if (args.length === 0) {
            error(n, "allow-program needs a path: allow-program /usr/bin/true");
          }
          for (const p of args) {
            if (!p.startsWith("/")) {
              error(n, `allow-program ${p}: the program must be an absolute path`);
            } else if (allowLines.has(p)) {
              warn(n, `program ${p} is already allowed at line ${allowLines.get(p)}`);
            } else {
              allowLines.set(p, n);
              config.allowPrograms.push(p);
              try {
                const info = Deno.statSync(p);
                if (!info.isFile) warn(n, `allow-program ${p}: not a regular file`);
              } catch {
                warn(n, `allow-program ${p}: no such file on this host`);
              }
            }
          }
          break;
        case "listen":
          if (args.length !== 1) error(n, "listen needs one HOST:PORT, e.g. listen 127.0.0.1:7200");
          else {
            try {
              parseHostPort(args[0]!, { allowPortZero: true });
              config.listen = args[0]!;
            } catch (e) {
              error(n, `listen: ${errorText(e)}`);
            }
          }
          break;
        case "name":
          if (args.length !== 1 || !NAME_PATTERN.test(args[0]!)) {
            error(n, "name needs one name: letters, digits, . _ -, 1 to 64");
          } else config.name = args[0]!;
          break;
        case "defaults": {
          const s = splitWords(args, COMMON_OPTIONS, false, "defaults");
          for (const e of s.errors) error(n, e);
          defaults = {
            intervalMs: (s.values.interval as number | undefined) ?? defaults.intervalMs,
            timeoutMs: (s.values.timeout as number | undefined) ?? defaults.timeoutMs,
            rise: (s.values.rise as number | undefined) ?? defaults.rise,
            fall: (s.values.fall as number | undefined) ?? defaults.fall,
          };
          break;
        }
        default:
          error(
            n,
            `"${first}" is neither a target nor a directive: write "name: dependencies" or one of ${
              DIRECTIVES.join(", ")
            }`,
          );
      }
      continue;
    }
    // Indented: the check line or an action of the current target.
    if (skipping) continue;
    if (!current) {
      error(n, 'indented line outside a target: put it under a "name:" line, or unindent it');
      continue;
    }
    if (first === "on") {
      const rest = raw.trim().slice(2).trim();
      const colon = rest.indexOf(":");
      if (colon < 0) {
        error(n, `action needs "on EVENT: ACTION ...": events are ${ACTION_EVENTS.join(", ")}`);
        current.broken = true;
        continue;
      }
      const events = rest.slice(0, colon).split(",").map((e) => e.trim());
      const bad = events.filter((e) => !(ACTION_EVENTS as readonly string[]).includes(e));
      if (bad.length > 0 || events.length === 0) {
        error(
          n,
          `"${bad.join(",")}" is not an event: use ${ACTION_EVENTS.join(", ")} (comma-separated)`,
        );
        current.broken = true;
        continue;
      }
      let actionWords: string[];
      try {
        actionWords = tokenize(rest.slice(colon + 1).trim());
      } catch (e) {
        error(n, errorText(e));
        continue;
      }
      current.actions.push({
        line: n,
        events: [...new Set(events)] as ActionEvent[],
        words: actionWords,
      });
      continue;
    }
    if (current.check) {
      error(
        n,
        `check ${current.name} already has its check at line ${current.check.line}: one check per target`,
      );
      continue;
    }
    current.check = { line: n, words };
  }

  // Compile each target.
  const specs: CheckSpec[] = [];
  for (const t of targets) {
    if (!t.check) {
      error(
        t.line,
        `check ${t.name} has no check line: indent one below it, e.g. "  tcp host=127.0.0.1 port=80"`,
      );
      continue;
    }
    const { line, words } = t.check;
    const kind = words[0] ?? "";
    if (!(CHECK_KINDS as readonly string[]).includes(kind)) {
      error(line, `"${kind}" is not a check kind: use ${CHECK_KINDS.join(", ")}`);
      continue;
    }
    const def = CHECKS[kind as CheckKind];
    const all = { ...COMMON_OPTIONS, ...def.options };
    const s = splitWords(
      words.slice(1),
      all,
      def.takesArgv,
      `${kind === "http" || kind === "https" ? "an" : "a"} ${kind} check`,
    );
    for (const e of s.errors) error(line, e);
    const intervalMs = (s.values.interval as number | undefined) ?? t.defaults.intervalMs;
    const timeoutMs = (s.values.timeout as number | undefined) ?? t.defaults.timeoutMs;
    const rise = (s.values.rise as number | undefined) ?? t.defaults.rise;
    const fall = (s.values.fall as number | undefined) ?? t.defaults.fall;
    if (timeoutMs > intervalMs) {
      warn(
        line,
        `timeout ${timeoutMs}ms is longer than interval ${intervalMs}ms: runs will be late`,
      );
    }
    for (const k of Object.keys(COMMON_OPTIONS)) delete s.values[k];
    const context = { allowPrograms: config.allowPrograms, baseDir, timeoutMs };
    let target = kind;
    if (s.errors.length === 0) {
      const v = def.validate(s.values, s.argv, context);
      for (const e of v.errors) error(line, e);
      for (const w of v.warnings) warn(line, w);
      target = def.target(s.values, s.argv);
    }
    const actions: ActionSpec[] = [];
    for (const a of t.actions) {
      const akind = a.words[0] ?? "";
      if (!(akind in ACTIONS)) {
        error(a.line, `"${akind}" is not an action: use ${Object.keys(ACTIONS).join(", ")}`);
        continue;
      }
      const adef = ACTIONS[akind as ActionKind];
      const aopts = { ...adef.options, timeout: COMMON_OPTIONS.timeout! };
      const as = splitWords(a.words.slice(1), aopts, adef.takesArgv, `a ${akind} action`);
      for (const e of as.errors) error(a.line, e);
      if (akind === "run") {
        const p = as.argv[0];
        if (p === undefined) error(a.line, "run needs a program: run /absolute/path [arguments]");
        else if (!p.startsWith("/")) error(a.line, `program "${p}" is not an absolute path`);
        else if (!config.allowPrograms.includes(p)) {
          error(
            a.line,
            `program ${p} is not allowed: add "allow-program ${p}" to the Hcfile header`,
          );
        }
      }
      if (akind === "faild") {
        const kf = as.values["key-file"];
        if (typeof kf === "string") {
          const path = resolvePath(baseDir, kf);
          try {
            Deno.statSync(path);
          } catch (e) {
            warn(
              a.line,
              `key-file ${path} cannot be read here (${
                errorText(e)
              }): hc will not start without it`,
            );
          }
        } else {
          warn(
            a.line,
            "faild action without key-file=: requests go unsigned and faild may refuse them",
          );
        }
        if (a.events.includes("change") && as.values.state !== undefined) {
          warn(a.line, `state=${as.values.state} on "change" sets the same state for every change`);
        }
      }
      const timeoutMsA = (as.values.timeout as number | undefined) ?? adef.defaultTimeoutMs;
      delete as.values.timeout;
      actions.push({
        line: a.line,
        events: a.events,
        kind: akind as ActionKind,
        values: as.values,
        argv: as.argv,
        timeoutMs: timeoutMsA,
      });
    }
    specs.push({
      name: t.name,
      line: t.line,
      deps: t.deps,
      kind: kind as CheckKind,
      values: s.values,
      argv: s.argv,
      target,
      signature: JSON.stringify([kind, words.slice(1), t.deps, intervalMs, timeoutMs, rise, fall]),
      actions,
      intervalMs,
      timeoutMs,
      rise,
      fall,
    });
  }

  const graph = analyzeGraph(targets.map((t) => ({ name: t.name, deps: t.deps, line: t.line })));
  for (const u of graph.unknown) {
    error(
      u.line,
      `check ${u.name} depends on ${u.dep}, which is not defined: define "${u.dep}:" or remove it`,
    );
  }
  for (const c of graph.cycles) {
    error(c.line, `dependency cycle: ${c.path.join(" -> ")}: dependencies must not loop`);
  }
  for (const [p, n] of allowLines) {
    const used = specs.some((s) =>
      (s.kind === "command" && s.argv[0] === p) ||
      s.actions.some((a) => a.kind === "run" && a.argv[0] === p)
    );
    if (!used) warn(n, `program ${p} is allowed but no check or action runs it`);
  }
  if (targets.length === 0 && !diagnostics.some((d) => d.severity === "error")) {
    warn(0, 'no checks defined: add "name:" with an indented check line');
  }
  const position = new Map(graph.order.map((name, i) => [name, i]));
  config.checks = specs.sort((a, b) => position.get(a.name)! - position.get(b.name)!);
  diagnostics.sort((a, b) => a.line - b.line);
  return { config, diagnostics };
}

/**
 * Reads and parses an Hcfile.
 *
 * @param path The file.
 * @returns As {@linkcode parseHcfile}; a read failure is an error diagnostic.
 *
 * @example
 * ```ts ignore
 * import { loadHcfile } from "./hcfile.ts";
 * const { diagnostics } = await loadHcfile("samples/hc/Hcfile");
 * console.log(diagnostics.length);
 * ```
 */
export async function loadHcfile(
  path: string,
): Promise<{ config: HcConfig; diagnostics: Diagnostic[] }> {
  let text: string;
  try {
    const info = await Deno.stat(path);
    if (info.size > MAX_HCFILE_BYTES) throw new RangeError(`larger than ${MAX_HCFILE_BYTES} bytes`);
    text = await Deno.readTextFile(path);
  } catch (e) {
    return {
      config: parseHcfile("", { file: path }).config,
      diagnostics: [{
        file: path,
        line: 0,
        severity: "error",
        message: `cannot read the Hcfile: ${errorText(e)}`,
      }],
    };
  }
  return parseHcfile(text, { file: path });
}
