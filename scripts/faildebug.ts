/**
 * `faildebug`: list and change the log level of each facility of a running faild or failsh (its
 * debug port), as the original's faildebug set the debug level of a facility. Requests are signed
 * with the community (`--key`, `--key-file` or `$FAILOVER_KEY`); the answer's signature is
 * checked, so a level shown really is the daemon's.
 *
 * @module
 */
import {
  AuthError,
  FaildClient,
  FaildError,
  type LogLevels,
  PeerUnreachableError,
} from "../lib/client.ts";
import * as cli from "../lib/cli.ts";
import { LOG_LEVELS, type LogLevel } from "../lib/types.ts";

/** The default daemon URL (faild's default port). */
export const DEFAULT_URL = "http://127.0.0.1:7100";

/** The text of `faildebug --help`. */
export const HELP = `Usage: faildebug [--url URL] [--key K | --key-file F] [--json] list
       faildebug [--url URL] [--key K | --key-file F] [--json] set FACILITY LEVEL

Lists or changes, while it runs, the log level of each facility of a faild or of failsh's debug
port. Requests are signed with the community; it never crosses the network.

Commands:
  list                    the level of every facility ("*" is the default of the others)
  set FACILITY LEVEL      set FACILITY (e.g. http, auth, state, scheduler, policy, or * for the
                          default) to LEVEL: ${LOG_LEVELS.join(", ")}

Options:
  --url URL               the daemon (default ${DEFAULT_URL}); for failsh give its debug port
${cli.sharedHelp(["key", "key-file", "timeout"])} (default 5000)
  --json                  print {"levels": {...}} as JSON instead of a table
${cli.sharedHelp(["help"])}

Reading the levels needs a read right on "*", changing them a read-write right on "*".

${
  cli.exitCodesHelp([
    [cli.EXIT.ok, null],
    [cli.EXIT.failure, "the daemon refused the request (e.g. unknown facility)"],
    [
      cli.EXIT.usage,
      "bad command line: unknown command or level, missing argument, unreadable key",
    ],
    [cli.EXIT.unavailable, "the daemon could not be reached, or its answer was not understood"],
    [
      cli.EXIT.auth,
      "authentication refused: wrong or read-only community, or a badly signed answer",
    ],
  ])
}

Examples:
  faildebug --key-file /etc/failover/community list
  FAILOVER_KEY=s3cret faildebug --url http://127.0.0.1:1849 set scheduler debug
`;

function usageError(message: string): number {
  console.error(`faildebug: ${message}\nRun faildebug --help for the usage.`);
  return cli.EXIT.usage;
}

/**
 * Formats levels as a two-column table, `*` first, then facilities by name.
 *
 * @param levels The levels.
 * @returns The table text, ending with a newline.
 *
 * @example
 * ```ts
 * import { formatLevels } from "./faildebug.ts";
 * console.log(formatLevels({ levels: { "*": "info", http: "debug" } }));
 * ```
 */
export function formatLevels(levels: LogLevels): string {
  const entries = Object.entries(levels.levels).sort(([a], [b]) =>
    a === "*" ? -1 : b === "*" ? 1 : a < b ? -1 : a > b ? 1 : 0
  );
  const width = Math.max("FACILITY".length, ...entries.map(([f]) => f.length));
  const lines = [`${"FACILITY".padEnd(width)}  LEVEL`];
  for (const [facility, level] of entries) {
    lines.push(`${facility.padEnd(width)}  ${level}${facility === "*" ? "  (default)" : ""}`);
  }
  return lines.join("\n") + "\n";
}

/**
 * Runs faildebug.
 *
 * @param args The command line after `faildebug`.
 * @returns The exit code (see {@linkcode HELP}).
 *
 * @example
 * ```ts ignore
 * import { main } from "./faildebug.ts";
 * Deno.exit(await main(["--key-file", "/etc/failover/community", "list"]));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = cli.parseCommandLine("faildebug", args, {
      options: { url: { type: "string", short: "u" } },
      shared: ["key", "key-file", "timeout", "json"],
    });
  } catch (error) {
    return usageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(HELP.trimEnd());
    return 0;
  }
  const [command, ...rest] = positionals;
  if (command === undefined) return usageError("Missing command: expected list or set");
  if (command !== "list" && command !== "set") {
    return usageError(`Unknown command "${command}": expected list or set`);
  }
  if (command === "list" && rest.length > 0) {
    return usageError(`Unexpected argument "${rest[0]}": list takes none`);
  }
  let facility = "";
  let level: LogLevel = "info";
  if (command === "set") {
    if (rest.length !== 2) {
      return usageError(`set needs FACILITY and LEVEL, got ${rest.length} argument(s)`);
    }
    facility = rest[0]!;
    if (facility !== "*" && !/^[a-z][a-z0-9_.-]{0,63}$/.test(facility)) {
      return usageError(
        `Invalid facility "${facility}": expected * or a lower-case name such as http, state`,
      );
    }
    const wanted = rest[1]!.toLowerCase();
    if (!(LOG_LEVELS as readonly string[]).includes(wanted)) {
      return usageError(`Unknown level "${rest[1]}": expected one of ${LOG_LEVELS.join(", ")}`);
    }
    level = wanted as LogLevel;
  }
  let key: string | undefined;
  let timeoutMs: number;
  try {
    timeoutMs = cli.timeoutOption(values.timeout, { defaultMs: 5000 });
    key = cli.keyOption(values);
  } catch (error) {
    return usageError((error as Error).message);
  }
  let rawUrl = values.url ?? DEFAULT_URL;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(rawUrl)) rawUrl = `http://${rawUrl}`;
  let client: FaildClient;
  try {
    client = new FaildClient(rawUrl.replace(/\/+$/, ""), {
      timeoutMs,
      ...(key === undefined ? {} : { key }),
    });
  } catch (error) {
    return usageError((error as Error).message);
  }
  try {
    const levels = command === "list"
      ? await client.logLevels()
      : await client.setLogLevel(facility, level);
    if (values.json) console.log(JSON.stringify(levels));
    else {
      if (command === "set") console.log(`${facility} is now at level ${level}`);
      console.log(formatLevels(levels).trimEnd());
    }
    return 0;
  } catch (error) {
    const message = (error as Error).message;
    if (error instanceof AuthError) {
      console.error(
        `faildebug: Authentication refused by ${client.url}: ${message}` +
          (key === undefined ? " (no key given: use --key-file or FAILOVER_KEY)" : ""),
      );
    } else if (error instanceof PeerUnreachableError) console.error(`faildebug: ${message}`);
    else if (error instanceof FaildError) {
      console.error(
        error.status >= 500
          ? `faildebug: ${client.url} answered ${error.status}: ${message}`
          : `faildebug: ${client.url} refused the request (${error.status}): ${message}`,
      );
    } else if (error instanceof RangeError) return usageError(message);
    else console.error(`faildebug: ${message}`);
    return cli.exitCodeOf(error);
  } finally {
    client.close();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
