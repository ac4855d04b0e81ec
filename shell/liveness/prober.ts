/**
 * Host liveness, the process side: failsh's supervisor (never the script) runs one long-lived
 * iputils `ping -n -O -D -i <interval> <address>` per peer whose host declares `liveness`, reads
 * its output as a stream of lines (each line bounded), and feeds them to the peer's
 * {@linkcode LivenessJudge}. A ping that exits is logged, audited and restarted after a bounded
 * backoff; stopping kills every ping and waits for it (SIGTERM, then SIGKILL), so no process is
 * left behind. {@linkcode LivenessMonitor} is what the scheduler reads
 * ({@linkcode LivenessSource}).
 *
 * Why ping and not arping: ICMP echo is answered by the peer's kernel on any link (routed, IPv6
 * with `ping -6`), needs no device name, and `-O` reports each unanswered request by its
 * sequence number, so silence is counted by ping's own clock. arping answers only on one L2
 * segment and would need a device per peer.
 *
 * @module
 */
import type { HostDecl } from "../contract.ts";
import type { Logger } from "../../lib/log.ts";
import type { Timers } from "../scheduler/peers.ts";
import { LivenessJudge, type LivenessStatus, parsePingLine } from "./judge.ts";

export type { LivenessState, LivenessStatus } from "./judge.ts";

/** Longest line of ping's output kept; the rest of a longer line is dropped. */
export const MAX_PING_LINE = 512;

/** Most bytes of ping's stderr kept (for the error shown when it exits). */
export const MAX_PING_STDERR = 2048;

/** First and longest wait before restarting a ping that exited, ms. */
export const RESTART_BACKOFF_MS = [100, 10_000] as const;

/** How long a stopped ping may take to exit after SIGTERM before SIGKILL, ms. */
export const STOP_TIMEOUT_MS = 1000;

/**
 * Most peers probed by one failsh (one ping process each, at most 200 echo requests a second
 * each): a script declaring more hosts with liveness gets the first ones probed and the others
 * refused (logged and audited), polls alone judging those.
 */
export const MAX_PROBES = 32;

/** A running ping as the prober sees it (a real `Deno.ChildProcess`, or a fake in tests). */
export interface PingProcess {
  /** Its standard output. */
  stdout: ReadableStream<Uint8Array>;
  /** Its standard error. */
  stderr: ReadableStream<Uint8Array>;
  /** Resolves when it exited. */
  status: Promise<{ code: number; signal: string | null }>;
  /** Sends a signal. */
  kill(signal: Deno.Signal): void;
}

/** Starts a program with a fixed argument list. */
export type PingSpawner = (argv: readonly string[]) => PingProcess;

/** Runs the real program (`argv[0]` looked up in `PATH`), stdin closed, output piped. */
export function spawnPing(argv: readonly string[]): PingProcess {
  const child = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return {
    stdout: child.stdout,
    stderr: child.stderr,
    status: child.status.then((s) => ({ code: s.code, signal: s.signal })),
    kill: (signal) => child.kill(signal),
  };
}

/**
 * The command line of the ping of a peer.
 *
 * @param address The peer's address (IP literal or DNS name).
 * @param intervalMs Time between echo requests, ms.
 * @returns `ping -n -O -D -i <s> [-4|-6] <address>`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pingArgv } from "./prober.ts";
 * assert.deepEqual(pingArgv("198.18.0.1", 10), ["ping", "-n", "-O", "-D", "-i", "0.01", "-4", "198.18.0.1"]);
 * assert.deepEqual(pingArgv("2001:db8::1", 250).at(-2), "-6");
 * ```
 */
export function pingArgv(address: string, intervalMs: number): string[] {
  const family = address.includes(":") ? ["-6"] : /^[0-9.]+$/.test(address) ? ["-4"] : [];
  return ["ping", "-n", "-O", "-D", "-i", String(intervalMs / 1000), ...family, address];
}

/** Splits a byte stream into lines, each cut at `max` characters (the rest of it is dropped). */
async function* boundedLines(
  stream: ReadableStream<Uint8Array>,
  max: number,
): AsyncGenerator<string> {
  let line = "";
  let dropping = false;
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf("\n", start);
      const piece = chunk.slice(start, nl < 0 ? undefined : nl);
      if (!dropping) {
        line += piece.slice(0, max - line.length);
        if (line.length >= max && nl < 0) dropping = true;
      }
      if (nl < 0) break;
      yield line;
      line = "";
      dropping = false;
      start = nl + 1;
    }
  }
  if (line.length > 0) yield line;
}

async function readTail(stream: ReadableStream<Uint8Array>, max: number): Promise<string> {
  let text = "";
  try {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      text = (text + chunk).slice(-max);
    }
  } catch {
    // the process was killed: what was read is enough
  }
  return text;
}

/** Makes ping's complaint an error a sysadmin can act on. */
function explain(host: string, intervalMs: number, stderr: string, code: number): string {
  const said = stderr.trim().split("\n").at(-1)?.trim() ?? "";
  if (/minimal interval|cannot flood/i.test(said)) {
    return `Cannot probe ${host}: iputils ping refuses an interval of ${intervalMs} ms for this user (${said}); run failsh as root or declare liveness.interval of at least 200 ms`;
  }
  if (/not permitted|permission denied/i.test(said)) {
    return `Cannot probe ${host}: ping may not open an ICMP socket (${said}); run failsh as root or allow it with net.ipv4.ping_group_range`;
  }
  if (code === 127 || /No such file|not found/i.test(said)) {
    return `Cannot probe ${host}: ping is not installed (Debian package iputils-ping)`;
  }
  return `Cannot probe ${host}: ping exited with code ${code}${said ? `: ${said}` : ""}`;
}

/** Options of {@linkcode LivenessMonitor}. */
export interface LivenessMonitorOptions {
  /** This host's name (its own declaration is not probed). */
  self: string;
  /** Every host of the script; those with `liveness` are probed. */
  hosts: readonly HostDecl[];
  /**
   * The script's services: when given, only hosts that share one with this host are probed
   * (the others never enter a decision here).
   */
  services?: readonly { masters: readonly string[]; slaves: readonly string[] }[];
  /** Starts ping (default {@linkcode spawnPing}). */
  spawn?: PingSpawner;
  /** Clock and timers (backoff and stop timeout). */
  timers: Timers;
  /** Where starts, exits and restarts are logged. */
  logger: Logger;
  /** Records the supervisor's own commands (each ping started and how it ended, or refused). */
  audit?:
    | ((
      request: Record<string, unknown>,
      verdict: "allowed" | "refused" | "failed" | "done",
      reason: string,
    ) => void)
    | undefined;
}

/** The liveness of the peers as the scheduler reads it. */
export interface LivenessSource {
  /**
   * The liveness of a peer.
   *
   * @returns Its status, or `null` when the host declares no liveness (or is this host).
   */
  status(host: string): LivenessStatus | null;
  /**
   * Registers a listener told when a peer's state changes.
   *
   * @returns A function that removes it.
   */
  onChange(listener: (host: string) => void): () => void;
}

interface ProbeRuntime {
  decl: HostDecl;
  intervalMs: number;
  fall: number;
  judge: LivenessJudge;
  process: PingProcess | null;
  startedAt: number;
  backoffMs: number;
  restartTimer: number | null;
  error: string | null;
  done: Promise<void> | null;
}

/**
 * Runs and judges one ping per peer that declares liveness.
 *
 * @example Probing the peers of a script (failsh does this for the scheduler)
 * ```ts ignore
 * import { LivenessMonitor } from "./prober.ts";
 * const liveness = new LivenessMonitor({ self: "beta", hosts: decl.hosts, timers, logger });
 * liveness.start();
 * liveness.onChange((host) => console.log(host, liveness.status(host)?.state));
 * await liveness.stop();
 * ```
 */
export class LivenessMonitor implements LivenessSource {
  #opts: LivenessMonitorOptions;
  #spawn: PingSpawner;
  #probes = new Map<string, ProbeRuntime>();
  #listeners = new Set<(host: string) => void>();
  #refused = new Map<string, string>();
  #running = false;

  /**
   * Prepares a probe per peer that declares liveness (nothing runs before {@linkcode start}).
   *
   * @param options This host, the hosts, the spawner, timers, logger and audit.
   */
  constructor(options: LivenessMonitorOptions) {
    this.#opts = options;
    this.#spawn = options.spawn ?? spawnPing;
    const { self, services } = options;
    const peers = services === undefined ? null : new Set(
      services.flatMap((s) =>
        [...s.masters, ...s.slaves].includes(self) ? [...s.masters, ...s.slaves] : []
      ),
    );
    const wanted = options.hosts.filter((h) =>
      h.name !== self && h.liveness !== undefined && (peers === null || peers.has(h.name))
    );
    for (const h of wanted.slice(MAX_PROBES)) {
      this.#refused.set(
        h.name,
        `Cannot probe ${h.name}: at most ${MAX_PROBES} peers are probed and the script asks for ${wanted.length}; polls alone judge it`,
      );
    }
    for (const h of wanted.slice(0, MAX_PROBES)) {
      const { intervalMs, fall } = h.liveness!;
      this.#probes.set(h.name, {
        decl: h,
        intervalMs,
        fall,
        judge: new LivenessJudge({ intervalMs, fall }),
        process: null,
        startedAt: 0,
        backoffMs: RESTART_BACKOFF_MS[0],
        restartTimer: null,
        error: null,
        done: null,
      });
    }
  }

  /** The probed hosts. */
  get hosts(): string[] {
    return [...this.#probes.keys()];
  }

  /** Starts a ping per probed peer. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    for (const [host, why] of this.#refused) {
      this.#opts.audit?.({ op: "liveness", host }, "refused", why);
      this.#opts.logger.error("liveness", why, { host });
    }
    for (const p of this.#probes.values()) this.#launch(p);
  }

  /** Stops every ping and waits until each has exited (killed after {@linkcode STOP_TIMEOUT_MS}). */
  async stop(): Promise<void> {
    this.#running = false;
    const waits: Promise<void>[] = [];
    for (const p of this.#probes.values()) {
      if (p.restartTimer !== null) this.#opts.timers.clearTimeout(p.restartTimer);
      p.restartTimer = null;
      if (p.process) {
        const proc = p.process;
        try {
          proc.kill("SIGTERM");
        } catch {
          // already gone
        }
        const timer = setTimeout(() => {
          try {
            proc.kill("SIGKILL");
          } catch {
            // already gone
          }
        }, STOP_TIMEOUT_MS);
        waits.push((p.done ?? Promise.resolve()).finally(() => clearTimeout(timer)));
      }
    }
    await Promise.all(waits);
  }

  /** {@inheritDoc LivenessSource.status} */
  status(host: string): LivenessStatus | null {
    const p = this.#probes.get(host);
    if (!p) {
      const why = this.#refused.get(host);
      if (why === undefined) return null;
      const none = { unanswered: 0, silentMs: 0, rttMs: null, lastAnswerAt: null };
      return { state: "unknown", ...none, error: why };
    }
    const s = p.judge.status();
    if (p.process === null) return { ...s, state: "unknown", error: p.error };
    return s;
  }

  /** {@inheritDoc LivenessSource.onChange} */
  onChange(listener: (host: string) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #tell(host: string): void {
    for (const l of this.#listeners) {
      try {
        l(host);
      } catch (e) {
        this.#opts.logger.error("liveness", `a liveness listener threw: ${(e as Error).message}`);
      }
    }
  }

  #launch(p: ProbeRuntime): void {
    if (!this.#running) return;
    const name = p.decl.name;
    const argv = pingArgv(p.decl.address, p.intervalMs);
    const request = { op: "liveness", host: name, argv };
    let proc: PingProcess;
    try {
      proc = this.#spawn(argv);
    } catch (e) {
      const why = (e as Error).message;
      p.error = /NotFound|No such file/i.test(why) || (e as Error).name === "NotFound"
        ? `Cannot probe ${name}: ping is not installed (Debian package iputils-ping)`
        : `Cannot probe ${name}: ${why}`;
      this.#opts.audit?.(request, "failed", p.error);
      this.#opts.logger.error("liveness", p.error, { host: name });
      this.#restartLater(p);
      return;
    }
    this.#opts.audit?.(request, "allowed", "liveness probe started");
    this.#opts.logger.info("liveness", `probing ${name}: ${argv.join(" ")}`, { host: name });
    p.process = proc;
    p.error = null;
    p.startedAt = this.#opts.timers.now();
    p.judge = new LivenessJudge({ intervalMs: p.intervalMs, fall: p.fall });
    const stderr = readTail(proc.stderr, MAX_PING_STDERR);
    const reading = (async () => {
      try {
        for await (const line of boundedLines(proc.stdout, MAX_PING_LINE)) {
          const event = parsePingLine(line);
          if (event === null || p.process !== proc) continue;
          if (p.judge.feed(event, this.#opts.timers.now())) this.#tell(name);
        }
      } catch {
        // the stream broke with the process: its exit is handled below
      }
    })();
    p.done = (async () => {
      const [status, errText] = await Promise.all([proc.status, stderr, reading]);
      const wasState = p.judge.status().state;
      p.process = null;
      if (!this.#running) {
        this.#opts.audit?.(request, "done", "liveness probe stopped");
        if (wasState !== "unknown") this.#tell(name);
        return;
      }
      p.error = explain(name, p.intervalMs, errText, status.code);
      this.#opts.audit?.(request, "failed", p.error);
      this.#opts.logger.warn(
        "liveness",
        `${p.error}; polls alone judge ${name} until it runs again`,
        { host: name, signal: status.signal },
      );
      if (wasState !== "unknown") this.#tell(name);
      // A ping that ran a while gets the shortest backoff again.
      if (this.#opts.timers.now() - p.startedAt > RESTART_BACKOFF_MS[1]) {
        p.backoffMs = RESTART_BACKOFF_MS[0];
      }
      this.#restartLater(p);
    })();
  }

  #restartLater(p: ProbeRuntime): void {
    if (!this.#running) return;
    const wait = p.backoffMs;
    p.backoffMs = Math.min(p.backoffMs * 2, RESTART_BACKOFF_MS[1]);
    p.restartTimer = this.#opts.timers.setTimeout(() => {
      p.restartTimer = null;
      this.#launch(p);
    }, wait);
  }
}
