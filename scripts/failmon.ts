/**
 * `failmon`: the real-time monitor of failsh, as in the original, connected to failsh's monitor
 * port (default `http://127.0.0.1:1848`) and fed by its stream of snapshots:
 *
 * - `-m c`: the terminal UI (default on a terminal): hosts, services of a host, service detail;
 * - `-m l`: a plain-text dump each time Return is pressed;
 * - `-m h`: one static HTML page on stdout (with a CGI header when run as a CGI);
 * - `-m 1`: wait for one update, print it, exit (default when not on a terminal);
 * - `--json`: the snapshot as JSON (one with `-m 1`, else one JSON line per update);
 * - `--serve HOST:PORT URL...`: a live web page aggregating several failsh.
 *
 * @module
 */
import { EXIT, exitCodesHelp, parseCommandLine, timeoutOption } from "../lib/cli.ts";
import { parseHostPort } from "../lib/net.ts";
import type { FailshSnapshot } from "../lib/types.ts";
import { serveAggregate } from "./failmon/aggregate.ts";
import { renderHtml, renderHtmlError } from "./failmon/html.ts";
import { fmtStatus, renderText } from "./failmon/line.ts";
import { normalizeBaseUrl, SnapshotStream, type StreamStatus } from "./failmon/stream.ts";
import { runTui } from "./failmon/tui.ts";

/** The default monitor URL (failsh's default monitor port, 1848, as in the original). */
export const DEFAULT_URL = "http://127.0.0.1:1848";

/** The text of `failmon --help`. */
export const HELP = `Usage: failmon [-m c|l|h|1] [--url URL] [--json] [options]
       failmon --serve HOST:PORT URL...

Real-time monitor of failsh, fed by the stream of its monitor port (GET /v1/stream). Nothing is
redrawn when nothing changed; a lost connection is shown and retried with backoff.

Modes (-m, --mode):
  c   terminal UI (default when stdin and stdout are a terminal). Keys:
        Up/Down, k/j   select a host or a service
        l, Left        services of the selected host
        s, Right       detail of the selected service (state, role, masters, slaves, interval,
                       last decision and why, last handler run, state on every host)
        Tab/Shift-Tab  next/previous view       Return  one view deeper
        h              back to the hosts view
        c              toggle the hosts view's column: last connect / last call
        q, Ctrl-C      quit (the terminal is always restored)
  l   line mode: prints a plain-text dump each time Return is pressed; q or Ctrl-D quits
  h   HTML: one static page on stdout. When run as a CGI (GATEWAY_INTERFACE is set) this is the
      default mode, a "Content-Type: text/html" header comes first, and the URL may be given in
      FAILMON_URL
  1   waits for one update (the snapshot sent at connect), prints it as text and exits (default
      when not on a terminal, unless --json is given)

Options:
  --url URL          failsh monitor port (default: $FAILMON_URL or ${DEFAULT_URL}); a bare
                     HOST:PORT means http://HOST:PORT; also accepted as the only argument
  --json             JSON instead of text: with -m 1 one snapshot; with -m l one line per Return;
                     otherwise one JSON line per update, for ever (or --count)
  --count N          with --json streaming: exit after N updates
  --timeout MS       -m 1 and -m h: give up when no snapshot arrives within MS (default 10000)
  --last-call        terminal UI: start with the last call column instead of last connect
  --no-color         terminal UI without colours (also when NO_COLOR is set)
  --serve HOST:PORT  serve a live page aggregating every URL given after the options, on
                     HOST:PORT (e.g. 127.0.0.1:8080): GET / page, /v1/aggregate JSON,
                     /v1/stream server-sent events. Unreachable hosts are shown as such
  -h, --help         this text

${
  exitCodesHelp([
    [EXIT.ok, "success (or q in the terminal UI)"],
    [EXIT.failure, "any other error"],
    [EXIT.usage, null],
    [EXIT.unavailable, "the monitor could not be reached, or sent no snapshot (-m 1, -m h)"],
    [EXIT.interrupted, null],
  ])
}

Examples:
  failmon                                   # terminal UI on http://127.0.0.1:1848
  failmon -m 1 --json --url 127.0.0.2:1848  # one snapshot as JSON
  failmon --json | jq .services             # JSON lines, one per change
  failmon --serve 127.0.0.1:8080 http://10.0.0.1:1848 http://10.0.0.2:1848
`;

const encoder = new TextEncoder();

let stdoutClosed = false;

/** Writes to stdout; once the reader has gone (broken pipe) further output is dropped. */
function out(text: string): void {
  if (stdoutClosed) return;
  const bytes = encoder.encode(text);
  let off = 0;
  try {
    while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
  } catch (error) {
    if (!(error instanceof Deno.errors.BrokenPipe)) throw error;
    stdoutClosed = true;
  }
}

function usageError(message: string): number {
  console.error(`failmon: ${message}\nRun failmon --help for the options.`);
  return EXIT.usage;
}

/**
 * Waits for the first snapshot of a monitor stream.
 *
 * @param url The monitor URL.
 * @param timeoutMs How long to wait.
 * @returns The snapshot.
 * @throws {Error} When the monitor is unreachable or sends no snapshot in time.
 */
async function firstSnapshot(url: string, timeoutMs: number): Promise<FailshSnapshot> {
  let snapshot: FailshSnapshot | null = null;
  let lost: StreamStatus | null = null;
  const stream = new SnapshotStream(url, {
    maxAttempts: 1,
    connectTimeoutMs: timeoutMs,
    idleTimeoutMs: timeoutMs,
    onSnapshot: (s) => {
      snapshot = s;
      stream.close();
    },
    onStatus: (st) => {
      if (st.kind === "lost") lost = st;
    },
  });
  const timer = setTimeout(() => stream.close(), timeoutMs);
  try {
    await stream.done;
  } finally {
    clearTimeout(timer);
  }
  if (snapshot) return snapshot;
  const why = lost ? (lost as { error: string }).error : `no snapshot within ${timeoutMs} ms`;
  throw new Error(`Cannot read failsh monitor at ${stream.url}: ${why}`);
}

/** Follows the stream and prints one JSON line per update. */
async function jsonLines(url: string, count: number | null): Promise<number> {
  let seen = 0;
  let failed = false;
  let lastStatus = "";
  const stream = new SnapshotStream(url, {
    onSnapshot: (s) => {
      out(JSON.stringify(s) + "\n");
      if (stdoutClosed) {
        failed = true; // the reader of the pipe went away
        stream.close();
        return;
      }
      seen++;
      if (count !== null && seen >= count) stream.close();
    },
    onStatus: (st) => {
      const text = fmtStatus(st);
      if (st.kind !== "closed" && text !== lastStatus) console.error(`failmon: ${text}`);
      lastStatus = text;
    },
  });
  const onInt = () => stream.close();
  Deno.addSignalListener("SIGINT", onInt);
  try {
    await stream.done;
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
  }
  return failed ? 0 : count !== null && seen >= count ? 0 : 130;
}

/** Line mode: a dump each time Return is pressed. */
async function lineMode(url: string, json: boolean): Promise<number> {
  let snapshot: FailshSnapshot | null = null;
  let status: StreamStatus = { kind: "connecting", attempt: 1 };
  const stream = new SnapshotStream(url, {
    onSnapshot: (s) => (snapshot = s),
    onStatus: (s) => (status = s),
  });
  if (Deno.stdin.isTerminal()) {
    console.error(`failmon: following ${stream.url}; press Return for a dump, q Return to quit`);
  }
  const decoder = new TextDecoder();
  let buffered = "";
  try {
    for await (const chunk of Deno.stdin.readable) {
      buffered += decoder.decode(chunk, { stream: true });
      if (buffered.length > 4096) buffered = buffered.slice(-4096);
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line === "q" || line === "quit") return 0;
        const s = snapshot as FailshSnapshot | null;
        const st = status as StreamStatus;
        if (json) {
          out(JSON.stringify(s === null ? { status: fmtStatus(st) } : s) + "\n");
        } else {
          if (st.kind !== "connected") out(`[${fmtStatus(st)}]\n`);
          out(s === null ? "No snapshot received yet.\n" : renderText(s) + "\n");
        }
      }
    }
    return 0;
  } finally {
    stream.close();
    await stream.done;
  }
}

/**
 * Runs failmon.
 *
 * @param args The command line after `failmon`.
 * @returns The exit code (see {@linkcode HELP}).
 *
 * @example
 * ```ts ignore
 * import { main } from "./failmon.ts";
 * Deno.exit(await main(["-m", "1", "--json"]));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseCommandLine("failmon", args, {
      options: {
        mode: { type: "string", short: "m" },
        url: { type: "string", short: "u" },
        count: { type: "string" },
        "last-call": { type: "boolean" },
        "no-color": { type: "boolean" },
        serve: { type: "string" },
      },
      shared: ["json", "timeout"],
    });
  } catch (error) {
    return usageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    out(HELP);
    return 0;
  }
  const cgi = Deno.env.get("GATEWAY_INTERFACE") !== undefined;

  if (values.serve !== undefined) {
    if (positionals.length === 0) {
      return usageError("--serve needs at least one failsh monitor URL after the options");
    }
    let listen, server;
    try {
      listen = parseHostPort(values.serve, { defaultHostname: "127.0.0.1", allowPortZero: true });
      server = serveAggregate(positionals, listen);
    } catch (error) {
      if (error instanceof TypeError) return usageError(error.message);
      console.error(`failmon: Cannot serve on ${values.serve}: ${(error as Error).message}`);
      return EXIT.failure;
    }
    console.error(`failmon: serving ${positionals.length} monitors on ${server.url}/`);
    const { promise, resolve } = Promise.withResolvers<number>();
    const onInt = () => resolve(130);
    const onTerm = () => resolve(0);
    Deno.addSignalListener("SIGINT", onInt);
    Deno.addSignalListener("SIGTERM", onTerm);
    const code = await promise;
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
    await server.close();
    return code;
  }

  if (positionals.length > 1 || (positionals.length === 1 && values.url !== undefined)) {
    return usageError(`unexpected argument "${positionals.at(-1)}": give one URL, with --url`);
  }
  const rawUrl = values.url ?? positionals[0] ?? Deno.env.get("FAILMON_URL") ?? DEFAULT_URL;
  let url: string;
  try {
    url = normalizeBaseUrl(rawUrl);
  } catch (error) {
    return usageError((error as Error).message);
  }
  const mode = values.mode ??
    (cgi ? "h" : values.json || (Deno.stdin.isTerminal() && Deno.stdout.isTerminal()) ? "c" : "1");
  if (!["c", "l", "h", "1"].includes(mode)) {
    return usageError(`Invalid mode "${mode}": expected c (terminal), l (line), h (HTML) or 1`);
  }
  const count = values.count === undefined ? null : Number(values.count);
  if (count !== null && !(Number.isInteger(count) && count >= 1)) {
    return usageError(`Invalid --count "${values.count}": expected a whole number from 1`);
  }
  let timeoutMs: number;
  try {
    timeoutMs = timeoutOption(values.timeout, { defaultMs: 10_000, maxMs: 3_600_000 });
  } catch (error) {
    return usageError((error as Error).message);
  }
  if (values.json && mode === "h") {
    return usageError("--json cannot be combined with -m h: choose HTML or JSON");
  }

  if (mode === "1" || mode === "h") {
    let snapshot: FailshSnapshot;
    try {
      snapshot = await firstSnapshot(url, timeoutMs);
    } catch (error) {
      const message = (error as Error).message;
      if (mode === "h" && cgi) {
        out("Status: 502 Bad Gateway\r\nContent-Type: text/html; charset=utf-8\r\n\r\n");
        out(renderHtmlError(message));
      }
      console.error(`failmon: ${message}`);
      return EXIT.unavailable;
    }
    if (mode === "h") {
      if (cgi) out("Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n\r\n");
      out(renderHtml(snapshot));
    } else if (values.json) out(JSON.stringify(snapshot, null, 2) + "\n");
    else out(renderText(snapshot));
    return 0;
  }
  if (mode === "l") return await lineMode(url, values.json ?? false);
  if (values.json) return await jsonLines(url, count);
  try {
    return await runTui(url, {
      lastCall: values["last-call"] ?? false,
      color: !(values["no-color"] || Deno.env.get("NO_COLOR")),
    });
  } catch (error) {
    console.error(`failmon: ${(error as Error).message}`);
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
