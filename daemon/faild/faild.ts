/**
 * faild, the failover state daemon: holds the state of any number of services and serves it to
 * peers and local tools over HTTP (see `docs/protocol.md`). It takes no action itself, so it runs
 * as an ordinary user.
 *
 * Run it with `deno run --allow-net --allow-read --allow-write --allow-sys=hostname
 * daemon/faild/faild.ts -c community -s state`, or use {@linkcode startFaild} to run it in-process.
 *
 * @module
 */
import denoConfig from "../../deno.json" with { type: "json" };
import { Logger, logger as processLogger } from "../../lib/log.ts";
import { isValidName } from "../../lib/types.ts";
import {
  applyLogLevels,
  EXIT,
  exitCodeOf,
  exitCodesHelp,
  parseCommandLine,
  UsageError,
} from "../../lib/cli.ts";
import { baseUrl, parseHostPort } from "../../lib/net.ts";
import { type CommunityRules, loadCommunityFile, parseCommunity } from "./community.ts";
import { Metrics } from "./metrics.ts";
import { CompactNonceCache, DEFAULT_NONCE_SESSIONS, DEFAULT_NONCE_SLOTS } from "./nonce.ts";
import { loadStateFile, serializeState, StateWriter, writeFileAtomic } from "./persist.ts";
import { DEFAULT_MAX_SKEW_MS } from "../../lib/sign.ts";
import {
  DEFAULT_BODY_TIMEOUT_MS,
  DEFAULT_MAX_BODY_BYTES,
  DEFAULT_MAX_STREAMS,
  FaildServer,
  KEEPALIVE_MS,
} from "./server.ts";
import { DEFAULT_HEADER_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS, HttpServer } from "./http.ts";
import { DEFAULT_MAX_SERVICES, ServiceStore } from "./store.ts";

/** faild's version (the package version). */
export const VERSION: string = denoConfig.version;

/** Default listen address. */
export const DEFAULT_LISTEN = "0.0.0.0:7100";

/** Options of {@linkcode startFaild}. */
export interface FaildOptions {
  /** `HOST:PORT` to listen on (default {@linkcode DEFAULT_LISTEN}; port 0 picks a free port). */
  listen?: string;
  /** Community file path. Re-read by {@linkcode FaildHandle.reload} and on SIGHUP. */
  communityFile?: string;
  /** Community rules as text, instead of a file (tests, demos). */
  community?: string;
  /** State file path; without it the state lives in memory only. */
  stateFile?: string;
  /** Pid file path, written at start and removed at close. */
  pidFile?: string;
  /** Host name served to peers (default the system's host name). */
  name?: string;
  /** Most services held (default {@linkcode DEFAULT_MAX_SERVICES}). */
  maxServices?: number;
  /** Most concurrent event streams (default {@linkcode DEFAULT_MAX_STREAMS}). */
  maxStreams?: number;
  /** Largest request body in bytes (default {@linkcode DEFAULT_MAX_BODY_BYTES}). */
  maxBodyBytes?: number;
  /** Time a client has to send a request body, in ms (default 5000). */
  bodyTimeoutMs?: number;
  /** Time a client has to send a request head, in ms (default 10000). */
  headerTimeoutMs?: number;
  /** Most open connections (default 1024; a quarter of them from one address). */
  maxConnections?: number;
  /** Accepted clock difference of signed requests, in ms (default 30000). */
  maxSkewMs?: number;
  /** Slots of the replay cache, a power of two (default 2^20, holds 786432 nonces). */
  nonceSlots?: number;
  /** Most sessions of sequenced nonces held (default {@linkcode DEFAULT_NONCE_SESSIONS}). */
  nonceSessions?: number;
  /** Interval of event stream keep-alive comments, in ms (default 15000). */
  keepaliveMs?: number;
  /** TLS certificate chain file (PEM); with `keyFile` faild speaks HTTPS. */
  certFile?: string;
  /** TLS private key file (PEM). */
  keyFile?: string;
  /** The logger (default the process logger of `lib/log.ts`). */
  logger?: Logger;
  /** Reload the community file on SIGHUP (default `false`; the CLI sets it). */
  handleSignals?: boolean;
}

/** A running faild. */
export interface FaildHandle {
  /** The bound address. */
  addr: Deno.NetAddr;
  /** The base URL clients use, e.g. `http://127.0.0.1:7100`. */
  url: string;
  /** This run's random id. */
  bootId: string;
  /** The store (for in-process callers such as the demo). */
  store: ServiceStore;
  /** Re-reads the community file; a broken file keeps the old rules and rejects. */
  reload(): Promise<void>;
  /** Stops serving, ends event streams, writes the state and removes the pid file. */
  close(): Promise<void>;
}

/**
 * Parses `HOST:PORT` (IPv6 as `[::1]:PORT`).
 *
 * @param text The address.
 * @returns Host name and port.
 * @throws {TypeError} When malformed.
 *
 * @example
 * ```ts
 * import { parseListen } from "./faild.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(parseListen("127.0.0.1:0"), { hostname: "127.0.0.1", port: 0 });
 * ```
 */
export function parseListen(text: string): { hostname: string; port: number } {
  return parseHostPort(text, { defaultHostname: "0.0.0.0", allowPortZero: true });
}

function systemHostName(): string {
  try {
    return Deno.hostname();
  } catch {
    return "localhost";
  }
}

async function processAlive(pid: number): Promise<boolean> {
  try {
    const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`);
    return cmdline.includes("faild");
  } catch {
    return false;
  }
}

async function writePidFile(path: string, log: Logger): Promise<void> {
  try {
    const old = Number((await Deno.readTextFile(path)).trim());
    if (Number.isSafeInteger(old) && old > 0 && old !== Deno.pid && await processAlive(old)) {
      throw new Error(
        `Cannot write pid file ${path}: faild is already running with pid ${old} ` +
          "(remove the file if that is wrong)",
      );
    }
    log.warn("daemon", "replacing a stale pid file", { file: path, pid: old });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      if ((error as Error).message.startsWith("Cannot write pid file")) throw error;
    }
  }
  try {
    await writeFileAtomic(path, `${Deno.pid}\n`, { mode: 0o644 });
  } catch (error) {
    throw new Error(`Cannot write pid file ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * Starts a faild in this process.
 *
 * @param options Where to listen, the community, the state file and limits.
 * @returns A handle with the bound address and `close()`.
 * @throws {SyntaxError} On a malformed community or state file; `Error` when a file cannot be
 * read or written or the address cannot be bound.
 *
 * @example
 * ```ts ignore
 * import { startFaild } from "./faild.ts";
 * const faild = await startFaild({ listen: "127.0.0.1:0", community: "* s3cret-community RW\n" });
 * console.log(faild.url);
 * await faild.close();
 * ```
 */
export async function startFaild(options: FaildOptions = {}): Promise<FaildHandle> {
  const log = options.logger ?? processLogger;
  const { hostname, port } = parseListen(options.listen ?? DEFAULT_LISTEN);
  const host = options.name ?? systemHostName();
  const bootId = crypto.randomUUID();
  const startedAt = Date.now();

  const loadRules = async (): Promise<CommunityRules> => {
    if (options.communityFile !== undefined) return await loadCommunityFile(options.communityFile);
    if (options.community !== undefined) return parseCommunity(options.community);
    return parseCommunity("");
  };
  let rules = await loadRules();
  for (const w of rules.warnings) log.warn("auth", w);
  if (rules.rules.length === 0) {
    log.warn("auth", "no community rules: only /v1/health and /metrics answer");
  }

  const store = new ServiceStore({ maxServices: options.maxServices ?? DEFAULT_MAX_SERVICES });
  const nonces = new CompactNonceCache({
    maxSkewMs: options.maxSkewMs ?? DEFAULT_MAX_SKEW_MS,
    slots: options.nonceSlots ?? DEFAULT_NONCE_SLOTS,
    sessions: options.nonceSessions ?? DEFAULT_NONCE_SESSIONS,
  });
  let writer: StateWriter | null = null;
  if (options.stateFile !== undefined) {
    const state = await loadStateFile(options.stateFile);
    if (state !== null) {
      if (state.services.length > store.maxServices) {
        throw new RangeError(
          `Cannot restore state file ${options.stateFile}: it holds ${state.services.length} ` +
            `services, more than --max-services ${store.maxServices}`,
        );
      }
      store.load(state.services);
      // The writes the last run accepted stay refused as replays for the rest of their window.
      if (state.replay !== undefined) nonces.restore(state.replay, Date.now());
      log.info("state", "state restored", {
        file: options.stateFile,
        services: state.services.length,
        savedAt: new Date(state.savedAt).toISOString(),
      });
    }
    const file = options.stateFile;
    let lastStateError = 0;
    let suppressedStateErrors = 0;
    writer = new StateWriter(file, () => {
      const now = Date.now();
      return serializeState(host, store.list(), now, nonces.replayMarks(now));
    }, {
      version: () => store.version,
      onError: (error) => {
        // A full disk fails every write: one line a second at most.
        const now = Date.now();
        if (now - lastStateError < 1000) {
          suppressedStateErrors++;
          return;
        }
        lastStateError = now;
        log.error("state", "cannot save state, retrying", {
          error: error.message,
          ...(suppressedStateErrors > 0 ? { suppressed: suppressedStateErrors } : {}),
        });
        suppressedStateErrors = 0;
      },
      onRecovered: () => log.info("state", "state saved again", { file }),
    });
    if (state !== null) writer.assumeSaved();
    try {
      await writer.save();
    } catch (error) {
      // Without a file yet, a state file faild cannot write is a configuration error. With one,
      // the file holds what faild just read: serve it, and refuse changes until it can save.
      if (state === null) {
        writer.close();
        throw error;
      }
      log.error("state", "cannot write the state file: changes are refused until it can", {
        error: (error as Error).message,
      });
    }
  }
  if (options.pidFile !== undefined) await writePidFile(options.pidFile, log);

  let tls: { cert: string; key: string } | undefined;
  if ((options.certFile === undefined) !== (options.keyFile === undefined)) {
    throw new TypeError("Invalid TLS options: --cert and --key must be given together");
  }
  if (options.certFile !== undefined && options.keyFile !== undefined) {
    try {
      tls = {
        cert: await Deno.readTextFile(options.certFile),
        key: await Deno.readTextFile(options.keyFile),
      };
    } catch (error) {
      throw new Error(`Cannot read TLS files: ${(error as Error).message}`, { cause: error });
    }
  }

  let server: HttpServer | undefined;
  const api = new FaildServer({
    store,
    rules: () => rules,
    nonces,
    metrics: new Metrics(),
    log,
    writer,
    host,
    bootId,
    version: VERSION,
    startedAt,
    maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    bodyTimeoutMs: options.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS,
    maxStreams: options.maxStreams ?? DEFAULT_MAX_STREAMS,
    keepaliveMs: options.keepaliveMs ?? KEEPALIVE_MS,
    http: () => server!.stats,
  });

  try {
    server = new HttpServer({
      hostname,
      port,
      ...(tls ? { tls } : {}),
      maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      headerTimeoutMs: options.headerTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS,
      bodyTimeoutMs: options.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS,
      maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      log,
    }, (req) => api.handle(req));
  } catch (error) {
    api.close();
    writer?.close();
    if (options.pidFile !== undefined) await Deno.remove(options.pidFile).catch(() => {});
    throw new Error(
      `Cannot listen on ${options.listen ?? DEFAULT_LISTEN}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const http = server;
  const addr = http.addr;
  const url = baseUrl(addr, { scheme: tls ? "https" : "http" });
  if (http.maxConnections < (options.maxConnections ?? DEFAULT_MAX_CONNECTIONS)) {
    log.warn("http", "connection limit lowered to fit the descriptor limit", {
      maxConnections: http.maxConnections,
      hint: "raise LimitNOFILE (ulimit -n)",
    });
  }

  const reload = async (): Promise<void> => {
    try {
      const next = await loadRules();
      rules = next;
      for (const w of next.warnings) log.warn("auth", w);
      log.info("auth", "community file reloaded", { rules: next.rules.length });
    } catch (error) {
      log.error("auth", "community file not reloaded, keeping the old rules", {
        error: (error as Error).message,
      });
      throw error;
    }
  };
  const onHup = () => {
    reload().catch(() => {});
  };
  if (options.handleSignals) Deno.addSignalListener("SIGHUP", onHup);

  log.info("daemon", "faild started", {
    url,
    host,
    bootId,
    version: VERSION,
    services: store.size,
    stateFile: options.stateFile,
    pid: Deno.pid,
  });

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      if (options.handleSignals) Deno.removeSignalListener("SIGHUP", onHup);
      api.close();
      await http.close();
      if (writer !== null) {
        writer.close();
        await writer.flush();
        await writer.save().catch((error) => {
          log.error("state", "cannot save state at shutdown", { error: (error as Error).message });
        });
      }
      if (options.pidFile !== undefined) await Deno.remove(options.pidFile).catch(() => {});
      log.info("daemon", "faild stopped", { bootId });
    })();
    return closing;
  };

  return { addr, url, bootId, store, reload, close };
}

/** Parsed command line of faild. */
export interface FaildArgs {
  /** `-c, --community FILE`. */
  community?: string;
  /** `-s, --state FILE`. */
  state?: string;
  /** `-r, --pid FILE`. */
  pid?: string;
  /** `--listen HOST:PORT`. */
  listen: string;
  /** `--name NAME`. */
  name?: string;
  /** `--max-services N`. */
  maxServices?: number;
  /** `--max-streams N`. */
  maxStreams?: number;
  /** `--max-skew SECONDS`. */
  maxSkew?: number;
  /** `--max-nonces N`. */
  maxNonces?: number;
  /** `--body-timeout SECONDS`. */
  bodyTimeout?: number;
  /** `--header-timeout SECONDS`. */
  headerTimeout?: number;
  /** `--max-connections N`. */
  maxConnections?: number;
  /** `--cert FILE`. */
  cert?: string;
  /** `--key FILE`. */
  key?: string;
  /** `--log-level [FACILITY=]LEVEL`, repeatable. */
  logLevel: string[];
  /** `--ready-file FILE`. */
  readyFile?: string;
  /** `-h, --help`. */
  help: boolean;
  /** `-V, --version`. */
  version: boolean;
}

/** The text of `faild --help`. */
export const FAILD_HELP = `Usage: faild [options]

The failover state daemon: holds the state of services for peers and local tools, serves it over
HTTP (docs/protocol.md) and takes no action itself, so it needs no root. It always runs in the
foreground (for systemd).

Options:
  -c, --community FILE      community file: lines "service-or-glob  community  RO|RW"
                            (community "-" allows unsigned requests; without a file only
                            /v1/health and /metrics answer)
  -s, --state FILE          state file, written atomically and restored at start
  -r, --pid FILE            pid file, removed at exit
  --listen HOST:PORT        address to listen on (default ${DEFAULT_LISTEN}; port 0: any free port)
  --name NAME               host name served to peers (default: the system host name)
  --max-services N          most services held (default ${DEFAULT_MAX_SERVICES})
  --max-streams N           most concurrent event streams (default ${DEFAULT_MAX_STREAMS})
  --max-skew SECONDS        accepted clock difference of signed requests (default 30)
  --max-connections N       most open connections (default ${DEFAULT_MAX_CONNECTIONS}, a quarter of them
                            from one address; lowered to fit the descriptor limit); beyond
                            it a new connection gets 503 and is closed
  --header-timeout SECONDS  time a client has to send a request head (default 10)
  --body-timeout SECONDS    time a client has to send a request body (default 5)
  --max-nonces N            replay cache size for randomly signed requests remembered within
                            the skew window (default 786432, 12 bytes each; beyond it faild
                            answers 503). Clients using nonce sequences (FaildClient, failc,
                            failsh, hc) take one small record per client instead (16384 at most)
  --cert FILE, --key FILE   TLS certificate chain and private key (PEM): serve HTTPS
  --log-level [FAC=]LEVEL   log level: error, warn, info, debug, trace; alone for every facility
                            or per facility (daemon, http, auth, state, events); repeatable
  --ready-file FILE         write the URL faild listens on to FILE once ready
  -F, --foreground          accepted for compatibility: faild always stays in the foreground
  -V, --version             print the version
  -h, --help                print this help

Signals: SIGTERM/SIGINT stop gracefully (finish requests, write the state, remove the pid
file); SIGHUP re-reads the community file (a broken file keeps the old rules, logs the error).
Once listening, faild prints "faild listening on URL" on stdout; logs are JSON lines on stderr.
${
  exitCodesHelp([
    [EXIT.ok, "stopped normally"],
    [EXIT.failure, "could not start (bad file, address in use)"],
    [EXIT.usage, null],
  ])
}
Permissions: --allow-net --allow-read --allow-write (state, pid files) --allow-sys=hostname.
Small-memory profile (about 55 MiB under a flood of polls, 70 MiB at most under the fuzz
harness): --v8-flags=--max-semi-space-size=1,--max-opt=2,--optimize-for-size on the deno command
line (docs/performance.md, docs/security.md).`;

/**
 * The replay cache slots needed to hold `n` nonces (a power of two, at most 75 % full).
 *
 * @param n Nonces to hold.
 * @returns Slots.
 *
 * @example
 * ```ts
 * import { nonceSlotsFor } from "./faild.ts";
 * import { deepEqual } from "node:assert/strict";
 * deepEqual(nonceSlotsFor(786432), 1048576);
 * ```
 */
export function nonceSlotsFor(n: number): number {
  let slots = 16;
  while (slots * 0.75 < n) slots *= 2;
  return slots;
}

function secondsArg(flag: string, value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value) || !(n >= 0.1 && n <= 3600)) {
    throw new UsageError(`Invalid ${flag} "${value}": expected seconds from 0.1 to 3600`);
  }
  return n;
}

function intArg(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`Invalid ${flag} "${value}": expected an integer from ${min} to ${max}`);
  }
  return n;
}

const FAILD_OPTIONS = {
  community: { type: "string", short: "c" },
  state: { type: "string", short: "s" },
  pid: { type: "string", short: "r" },
  listen: { type: "string" },
  name: { type: "string" },
  "max-services": { type: "string" },
  "max-streams": { type: "string" },
  "max-skew": { type: "string" },
  "max-nonces": { type: "string" },
  "body-timeout": { type: "string" },
  "header-timeout": { type: "string" },
  "max-connections": { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  "ready-file": { type: "string" },
  foreground: { type: "boolean", short: "F" },
  version: { type: "boolean", short: "V" },
} as const;

const ORIGINAL_ONLY: Record<string, string> = {
  "-u": "start faild as the user it should run as (systemd User=); it needs no root",
  "-m": "memory locking is not available to a Deno process",
  "-d": "logs go to stderr as JSON lines (journald); set levels with --log-level",
};

/**
 * Parses faild's command line (`node:util` parseArgs through `lib/cli.ts`, like every tool).
 *
 * @param args The arguments.
 * @returns The options.
 * @throws {UsageError} On an unknown option, a missing value or a bad number.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFaildArgs } from "./faild.ts";
 * assert.equal(parseFaildArgs(["-c", "community", "--listen=127.0.0.1:0"]).listen, "127.0.0.1:0");
 * ```
 */
export function parseFaildArgs(args: string[]): FaildArgs {
  for (const arg of args) {
    if (arg === "--") break;
    if (arg in ORIGINAL_ONLY) {
      throw new UsageError(
        `Unsupported option "${arg}" of the original faild: ${ORIGINAL_ONLY[arg]}`,
      );
    }
  }
  const { values: v, positionals } = parseCommandLine("faild", args, {
    options: FAILD_OPTIONS,
    shared: ["log-level"],
  });
  if (positionals.length > 0) {
    throw new UsageError(`Unexpected argument "${positionals[0]}": faild takes options only`);
  }
  const out: FaildArgs = {
    listen: DEFAULT_LISTEN,
    logLevel: v["log-level"] ?? [],
    help: v.help ?? false,
    version: v.version ?? false,
  };
  if (v.community !== undefined) out.community = v.community;
  if (v.state !== undefined) out.state = v.state;
  if (v.pid !== undefined) out.pid = v.pid;
  if (v.listen !== undefined) {
    parseListen(v.listen);
    out.listen = v.listen;
  }
  if (v.name !== undefined) {
    if (!isValidName(v.name)) {
      throw new UsageError(`Invalid --name "${v.name}": expected a host name such as node-1`);
    }
    out.name = v.name;
  }
  const int = (flag: string, value: string | undefined, min: number, max: number) =>
    value === undefined ? undefined : intArg(`--${flag}`, value, min, max);
  const seconds = (flag: string, value: string | undefined) =>
    value === undefined ? undefined : secondsArg(`--${flag}`, value);
  const numbers = {
    maxServices: int("max-services", v["max-services"], 1, 1_000_000),
    maxStreams: int("max-streams", v["max-streams"], 1, 100_000),
    maxSkew: int("max-skew", v["max-skew"], 1, 3600),
    maxNonces: int("max-nonces", v["max-nonces"], 1000, 100_000_000),
    bodyTimeout: seconds("body-timeout", v["body-timeout"]),
    headerTimeout: seconds("header-timeout", v["header-timeout"]),
    maxConnections: int("max-connections", v["max-connections"], 1, 1_000_000),
  };
  for (const [k, n] of Object.entries(numbers)) {
    if (n !== undefined) (out as unknown as Record<string, number>)[k] = n;
  }
  if (v.cert !== undefined) out.cert = v.cert;
  if (v.key !== undefined) out.key = v.key;
  if (v["ready-file"] !== undefined) out.readyFile = v["ready-file"];
  return out;
}

/**
 * Runs faild until SIGTERM or SIGINT.
 *
 * @param args Command line arguments.
 * @returns The exit code.
 *
 * @example
 * ```ts ignore
 * import { main } from "./faild.ts";
 * Deno.exit(await main(["--listen", "127.0.0.1:7100", "-c", "community"]));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let opts: FaildArgs;
  try {
    opts = parseFaildArgs(args);
  } catch (error) {
    console.error(`faild: ${(error as Error).message}`);
    return exitCodeOf(error);
  }
  if (opts.help) {
    console.log(FAILD_HELP);
    return 0;
  }
  if (opts.version) {
    console.log(`faild ${VERSION}`);
    return 0;
  }
  const log = processLogger;
  try {
    applyLogLevels(log, opts.logLevel);
  } catch (error) {
    console.error(`faild: ${(error as Error).message}`);
    return EXIT.usage;
  }
  log.configure({ fields: { daemon: "faild" } });

  let faild: FaildHandle;
  try {
    faild = await startFaild({
      listen: opts.listen,
      handleSignals: true,
      ...(opts.community !== undefined ? { communityFile: opts.community } : {}),
      ...(opts.state !== undefined ? { stateFile: opts.state } : {}),
      ...(opts.pid !== undefined ? { pidFile: opts.pid } : {}),
      ...(opts.name !== undefined ? { name: opts.name } : {}),
      ...(opts.maxServices !== undefined ? { maxServices: opts.maxServices } : {}),
      ...(opts.maxStreams !== undefined ? { maxStreams: opts.maxStreams } : {}),
      ...(opts.maxSkew !== undefined ? { maxSkewMs: opts.maxSkew * 1000 } : {}),
      ...(opts.maxNonces !== undefined ? { nonceSlots: nonceSlotsFor(opts.maxNonces) } : {}),
      ...(opts.bodyTimeout !== undefined ? { bodyTimeoutMs: opts.bodyTimeout * 1000 } : {}),
      ...(opts.headerTimeout !== undefined ? { headerTimeoutMs: opts.headerTimeout * 1000 } : {}),
      ...(opts.maxConnections !== undefined ? { maxConnections: opts.maxConnections } : {}),
      ...(opts.cert !== undefined ? { certFile: opts.cert } : {}),
      ...(opts.key !== undefined ? { keyFile: opts.key } : {}),
    });
  } catch (error) {
    log.error("daemon", "faild cannot start", { error: (error as Error).message });
    console.error(`faild: ${(error as Error).message}`);
    return EXIT.failure;
  }
  console.log(`faild listening on ${faild.url}`);
  if (opts.readyFile !== undefined) {
    try {
      await writeFileAtomic(opts.readyFile, faild.url + "\n", { mode: 0o644 });
    } catch (error) {
      log.error("daemon", "cannot write the ready file", { error: (error as Error).message });
    }
  }
  const stopped = Promise.withResolvers<string>();
  const onTerm = () => stopped.resolve("SIGTERM");
  const onInt = () => stopped.resolve("SIGINT");
  Deno.addSignalListener("SIGTERM", onTerm);
  Deno.addSignalListener("SIGINT", onInt);
  const signal = await stopped.promise;
  log.info("daemon", "stopping", { signal });
  Deno.removeSignalListener("SIGTERM", onTerm);
  Deno.removeSignalListener("SIGINT", onInt);
  await faild.close();
  return EXIT.ok;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
