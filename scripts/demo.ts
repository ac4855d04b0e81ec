/**
 * `deno task demo`: a live failover on loopback, no root needed.
 *
 * Two simulated hosts, `alpha` (master) and `beta` (slave), each with its own faild (on
 * 127.0.0.11 and 127.0.0.12) and its own failsh running `samples/loopback_demo/failover.ts` with
 * the `simulated` net driver. The service is a small HTTP server on the "virtual" address
 * 127.0.0.100:18080 that answers with the name of the host serving it; a client asks it every
 * 10 ms. The demo kills alpha (faild, failsh and its server), shows beta take over, brings alpha
 * back, shows the RECOVER handshake and the reclaim, and prints the client-visible outage of each
 * switch: the longest gap between two answered requests. It ends by itself and removes
 * everything it started, also on Ctrl-C.
 *
 * ```sh
 * deno task demo            # human output (colour on a terminal)
 * deno task demo --json     # the figures as JSON
 * ```
 *
 * @module
 */
import { EXIT, exitCodeOf, exitCodesHelp, parseCommandLine, UsageError } from "../lib/cli.ts";
import { randomBytes } from "node:crypto";
import { type FaildHandle, startFaild } from "../daemon/faild/faild.ts";
import { FaildClient } from "../lib/client.ts";
import { Logger } from "../lib/log.ts";
import type { ServiceState } from "../lib/types.ts";

const REPO = new URL("../", import.meta.url).pathname;
const SAMPLE = `${REPO}samples/loopback_demo/`;
const HOSTS = { alpha: "127.0.0.11", beta: "127.0.0.12" } as const;
type HostName = keyof typeof HOSTS;

/** Options of {@linkcode runDemo}. */
export interface DemoOptions {
  /** Port of the service on 127.0.0.100 (default 18080). */
  port?: number;
  /** Poll interval of failsh in ms (default 100). */
  intervalMs?: number;
  /** How long each phase is shown before the next fault, ms (default 2000). */
  holdMs?: number;
  /** Told every line of the story (default: nothing). */
  say?: (line: string, kind: "info" | "good" | "bad" | "step") => void;
  /** Aborting stops the demo early (it still cleans up). */
  signal?: AbortSignal;
}

/** One switch of the service from one host to another, as the client saw it. */
export interface SwitchFigures {
  /** Host that served before. */
  from: string;
  /** Host that served after. */
  to: string;
  /** Longest gap between two answered requests around the switch, ms. */
  outageMs: number;
  /** Requests that got no answer during the switch. */
  failedRequests: number;
  /** From the fault (kill or return) until the new host answered, ms. */
  switchMs: number;
}

/** What the demo measured. */
export interface DemoResult {
  /** `true` when beta took over and alpha reclaimed. */
  ok: boolean;
  /** alpha killed, beta takes over. */
  takeover: SwitchFigures | null;
  /** alpha back, RECOVER handshake, alpha reclaims. */
  reclaim: SwitchFigures | null;
  /** States of `web` seen on each faild, in order, with times since the start (ms). */
  states: Array<{ atMs: number; host: string; state: ServiceState | "unreachable" }>;
  /** Requests made by the client, and how many were answered. */
  requests: { total: number; answered: number };
  /** Why the demo failed, or `null`. */
  error: string | null;
}

interface Sample {
  at: number;
  who: string | null;
}

interface HostRun {
  name: HostName;
  faild: FaildHandle | null;
  failsh: Deno.ChildProcess | null;
  logFile: string;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * A TCP port free on `hostname` right now (the kernel's choice).
 *
 * @param hostname The address.
 * @returns The port.
 */
export function freePort(hostname: string): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Starts one demo host's failsh (`deno run -A shell/failsh.ts --policy POLICY SCRIPT`).
 *
 * @param policy The host's policy file.
 * @param script The cluster's script.
 * @param output `piped` to read its output, `null` to discard it.
 * @returns The running failsh.
 */
export function spawnDemoFailsh(
  policy: string,
  script: string,
  output: "piped" | "null",
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO}shell/failsh.ts`, "--policy", policy, script],
    stdin: "null",
    stdout: output,
    stderr: output,
  }).spawn();
}

/** Longest gap between consecutive answered samples within [from, to], and failures in it. */
function gapIn(samples: Sample[], from: number, to: number): { gap: number; failed: number } {
  let last: number | null = null;
  let gap = 0;
  let failed = 0;
  for (const s of samples) {
    if (s.at < from) {
      if (s.who !== null) last = s.at;
      continue;
    }
    if (s.at > to) break;
    if (s.who === null) {
      failed++;
      continue;
    }
    if (last !== null) gap = Math.max(gap, s.at - last);
    last = s.at;
  }
  return { gap, failed };
}

/** Where the demo cluster's hosts listen (see {@linkcode writeDemoCluster}). */
export interface DemoClusterPorts {
  /** Each host's faild port (on its loopback address). */
  faild: Record<HostName, number>;
  /** Each host's failsh monitor port (on 127.0.0.1). */
  monitor: Record<HostName, number>;
  /** Each host's failsh debug port (on 127.0.0.1), or none. */
  debug?: Record<HostName, number>;
  /** The service's port on 127.0.0.100. */
  service: number;
}

/** The loopback addresses of the demo's two hosts. */
export const DEMO_HOSTS: Readonly<Record<HostName, string>> = HOSTS;

/**
 * Writes the demo cluster's failover script and one policy per host into `dir` (the sample
 * `samples/loopback_demo`, configured for these ports). `dir/demo.key` must hold the key.
 *
 * @param dir The cluster's directory.
 * @param options Ports, poll interval and the service's state directory.
 * @returns The script's path and each host's policy path.
 *
 * @example
 * ```ts ignore
 * import { writeDemoCluster } from "./demo.ts";
 * const ports = { alpha: 7101, beta: 7102 };
 * await writeDemoCluster("/tmp/demo", {
 *   ports: { faild: ports, monitor: { alpha: 1848, beta: 1849 }, service: 18080 },
 *   intervalMs: 100,
 *   stateDir: "/tmp/demo/service",
 * });
 * ```
 */
export async function writeDemoCluster(
  dir: string,
  options: { ports: DemoClusterPorts; intervalMs: number; stateDir: string },
): Promise<{ script: string; policies: Record<HostName, string> }> {
  const { ports } = options;
  const script = `${dir}/failover.ts`;
  await Deno.writeTextFile(
    script,
    `import { loopbackDemo } from ${JSON.stringify(`file://${SAMPLE}failover.ts`)};\n` +
      `loopbackDemo(${
        JSON.stringify({
          hosts: {
            alpha: { address: HOSTS.alpha, port: ports.faild.alpha },
            beta: { address: HOSTS.beta, port: ports.faild.beta },
          },
          stateDir: options.stateDir,
          port: ports.service,
          intervalMs: options.intervalMs,
        })
      });\n`,
  );
  const policies = {} as Record<HostName, string>;
  for (const name of ["alpha", "beta"] as const) {
    const policy = JSON.parse(await Deno.readTextFile(`${SAMPLE}policy_${name}.json`));
    policy.faild.url = `http://${HOSTS[name]}:${ports.faild[name]}`;
    policy.keys = { demo: { file: `${dir}/demo.key` } };
    policy.programs[0].path = Deno.execPath();
    policy.monitor = `127.0.0.1:${ports.monitor[name]}`;
    if (ports.debug) {
      policy.debug = `127.0.0.1:${ports.debug[name]}`;
      policy.debugKey = "demo";
    }
    policy.audit = `${dir}/audit-${name}.log`;
    policy.dumpFile = `${dir}/failsh-${name}.dump`;
    policies[name] = `${dir}/policy_${name}.json`;
    await Deno.writeTextFile(policies[name], JSON.stringify(policy, null, 2));
  }
  return { script, policies };
}

/**
 * Runs the demo.
 *
 * @param options Port, interval, phase length, output and abort signal.
 * @returns The figures.
 *
 * @example
 * ```ts ignore
 * import { runDemo } from "./demo.ts";
 * const r = await runDemo({ say: (l) => console.log(l) });
 * console.log(r.takeover?.outageMs);
 * ```
 */
export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const say = options.say ?? (() => {});
  const port = options.port ?? 18080;
  const intervalMs = options.intervalMs ?? 100;
  const holdMs = options.holdMs ?? 2000;
  const signal = options.signal;
  const t0 = Date.now();
  const since = () => Date.now() - t0;
  const dir = await Deno.makeTempDir({ prefix: "failover-demo-" });
  const stateDir = `${dir}/service`;
  await Deno.mkdir(stateDir);
  const key = randomBytes(24).toString("hex");
  await Deno.writeTextFile(`${dir}/demo.key`, key + "\n", { mode: 0o600 });
  const community = `*  ${key}  RW\n`;
  const quiet = new Logger({ level: "error", sink: () => {} });
  const result: DemoResult = {
    ok: false,
    takeover: null,
    reclaim: null,
    states: [],
    requests: { total: 0, answered: 0 },
    error: null,
  };
  const ports: Record<HostName, number> = {
    alpha: freePort(HOSTS.alpha),
    beta: freePort(HOSTS.beta),
  };
  const hosts: Record<HostName, HostRun> = {
    alpha: { name: "alpha", faild: null, failsh: null, logFile: `${dir}/failsh-alpha.log` },
    beta: { name: "beta", faild: null, failsh: null, logFile: `${dir}/failsh-beta.log` },
  };
  const stop = new AbortController();
  const samples: Sample[] = [];
  const clients = new Map<HostName, FaildClient>();

  const monitors: Record<string, string> = {};
  // The failover script and the policies: the sample, configured for this run.
  const monitorPorts = { alpha: freePort("127.0.0.1"), beta: freePort("127.0.0.1") };
  const { script, policies } = await writeDemoCluster(dir, {
    ports: { faild: ports, monitor: monitorPorts, service: port },
    intervalMs,
    stateDir,
  });
  for (const name of ["alpha", "beta"] as const) {
    monitors[name] = `http://127.0.0.1:${monitorPorts[name]}/`;
    clients.set(
      name,
      new FaildClient(`http://${HOSTS[name]}:${ports[name]}`, { key, timeoutMs: 500 }),
    );
  }

  async function startHost(name: HostName): Promise<void> {
    const h = hosts[name];
    h.faild = await startFaild({
      listen: `${HOSTS[name]}:${ports[name]}`,
      community,
      name,
      logger: quiet,
      nonceSlots: 1 << 14,
    });
    const log = await Deno.open(h.logFile, { create: true, append: true });
    h.failsh = spawnDemoFailsh(policies[name], script, "piped");
    const w = log.writable;
    // Both streams into one log file; the file closes when both end.
    const writer = w.getWriter();
    const pump = async (s: ReadableStream<Uint8Array>) => {
      for await (const chunk of s) await writer.write(chunk).catch(() => {});
    };
    Promise.all([pump(h.failsh.stdout), pump(h.failsh.stderr)]).finally(() =>
      writer.close().catch(() => {})
    );
  }

  async function killService(name: HostName): Promise<void> {
    try {
      const pid = Number((await Deno.readTextFile(`${stateDir}/${name}.pid`)).trim());
      if (pid > 1) Deno.kill(pid, "SIGKILL");
    } catch {
      // not running
    }
    await Deno.remove(`${stateDir}/${name}.pid`).catch(() => {});
  }

  async function killHost(name: HostName): Promise<void> {
    const h = hosts[name];
    if (h.failsh) {
      try {
        h.failsh.kill("SIGKILL");
      } catch {
        // gone
      }
      await h.failsh.status;
      h.failsh = null;
    }
    await killService(name);
    await h.faild?.close();
    h.faild = null;
  }

  async function client(): Promise<void> {
    while (!stop.signal.aborted) {
      const at = Date.now();
      let who: string | null = null;
      try {
        const r = await fetch(`http://127.0.0.100:${port}/`, {
          signal: AbortSignal.timeout(250),
        });
        who = (await r.text()).trim() || null;
      } catch {
        who = null;
      }
      samples.push({ at, who });
      result.requests.total++;
      if (who !== null) result.requests.answered++;
      if (samples.length > 200_000) samples.splice(0, 100_000);
      await sleep(10, stop.signal);
    }
  }

  const seen = new Map<HostName, ServiceState | "unreachable">();
  async function watcher(): Promise<void> {
    while (!stop.signal.aborted) {
      for (const name of ["alpha", "beta"] as const) {
        let state: ServiceState | "unreachable" | null = "unreachable";
        if (hosts[name].faild === null) state = "unreachable";
        else {
          try {
            const list = await clients.get(name)!.list();
            state = list.services.find((s) => s.name === "web")?.state ?? null;
          } catch {
            state = "unreachable";
          }
        }
        if (state !== null && seen.get(name) !== state) {
          seen.set(name, state);
          result.states.push({ atMs: since(), host: name, state });
          say(
            `${(since() / 1000).toFixed(2).padStart(6)} s  ${name}: web is ${state}`,
            state === "UP" ? "good" : state === "RECOVER" ? "step" : "info",
          );
        }
      }
      await sleep(20, stop.signal);
    }
  }

  async function until(what: string, ms: number, test: () => boolean): Promise<number> {
    const deadline = Date.now() + ms;
    while (!test()) {
      if (signal?.aborted) throw new Error("Demo interrupted");
      if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what} (${ms} ms)`);
      await sleep(10);
    }
    return Date.now();
  }
  const servedBy = (name: string, after: number) => () =>
    samples.some((s) => s.at >= after && s.who === name);

  const background: Promise<void>[] = [];
  try {
    say(`Demo directory ${dir}; service on http://127.0.0.100:${port}/`, "info");
    say("Starting alpha (master) and beta (slave): a faild and a failsh each", "step");
    await startHost("alpha");
    await startHost("beta");
    background.push(client(), watcher());
    say(`Live monitor pages: alpha ${monitors.alpha}  beta ${monitors.beta}`, "info");
    await until("alpha to serve the virtual address", 30_000, servedBy("alpha", 0));
    say(`${(since() / 1000).toFixed(2).padStart(6)} s  the client is served by alpha`, "good");
    await sleep(holdMs, signal);

    say("Killing alpha: failsh (SIGKILL), faild and its HTTP server", "bad");
    const killAt = Date.now();
    await killHost("alpha");
    const betaAt = await until("beta to take over", 30_000, servedBy("beta", killAt));
    const t = gapIn(samples, killAt - 50, betaAt);
    result.takeover = {
      from: "alpha",
      to: "beta",
      outageMs: t.gap,
      failedRequests: t.failed,
      switchMs: betaAt - killAt,
    };
    say(
      `${
        (since() / 1000).toFixed(2).padStart(6)
      } s  beta took over: client-visible outage ${t.gap} ms`,
      "good",
    );
    await sleep(holdMs, signal);

    say("Bringing alpha back: it sees beta UP, enters RECOVER, beta stops, alpha reclaims", "step");
    const backAt = Date.now();
    await startHost("alpha");
    const alphaAt = await until("alpha to reclaim", 30_000, servedBy("alpha", backAt));
    await sleep(100);
    const r = gapIn(samples, backAt, alphaAt);
    result.reclaim = {
      from: "beta",
      to: "alpha",
      outageMs: r.gap,
      failedRequests: r.failed,
      switchMs: alphaAt - backAt,
    };
    say(
      `${
        (since() / 1000).toFixed(2).padStart(6)
      } s  alpha reclaimed: client-visible outage ${r.gap} ms`,
      "good",
    );
    await sleep(Math.min(holdMs, 1000), signal);
    result.ok = true;
  } catch (error) {
    result.error = (error as Error).message;
    for (const h of signal?.aborted ? [] : Object.values(hosts)) {
      try {
        const text = await Deno.readTextFile(h.logFile);
        const tail = text.trim().split("\n").slice(-8).join("\n");
        say(`last lines of ${h.name}'s failsh log:\n${tail}`, "bad");
      } catch {
        // no log
      }
    }
  } finally {
    say("Stopping everything", "info");
    // failsh first (SIGTERM: releases per policy and stops the service), then faild.
    for (const h of Object.values(hosts)) {
      if (!h.failsh) continue;
      try {
        h.failsh.kill("SIGTERM");
      } catch {
        // gone
      }
      const status = h.failsh.status;
      const late = setTimeout(() => {
        try {
          h.failsh?.kill("SIGKILL");
        } catch {
          // gone
        }
      }, 8000);
      await status;
      clearTimeout(late);
      h.failsh = null;
    }
    stop.abort();
    await Promise.all(background);
    for (const name of ["alpha", "beta"] as const) {
      await killService(name);
      await hosts[name].faild?.close();
      hosts[name].faild = null;
      clients.get(name)?.close();
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return result;
}

const COLOURS = { info: "", good: "\x1b[32m", bad: "\x1b[31m", step: "\x1b[36m" } as const;

/**
 * Runs `deno task demo`.
 *
 * @param args `--json`, `--port N`, `--interval MS`, `--help`.
 * @returns 0 when the takeover and the reclaim were both seen, 1 otherwise, 64 on bad usage.
 *
 * @example
 * ```ts ignore
 * import { main } from "./demo.ts";
 * Deno.exit(await main(["--json"]));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseCommandLine("demo", args, {
      options: { port: { type: "string" }, interval: { type: "string" } },
      shared: ["json"],
    });
    if (parsed.positionals.length > 0) {
      throw new UsageError(
        `Unexpected argument "${parsed.positionals[0]}": demo takes options only`,
      );
    }
  } catch (error) {
    console.error(`demo: ${(error as Error).message}`);
    return exitCodeOf(error);
  }
  const v = parsed.values;
  if (v.help) {
    console.log(`Usage: deno task demo [--json] [--port N] [--interval MS]

Two simulated hosts on 127.0.0.0/8 (faild + failsh each) share a web service on
127.0.0.100. The demo kills the primary, shows the standby take over, brings the primary
back, shows the reclaim, and prints the client-visible outage of each switch. No root
needed; it ends by itself (about 20 s) and cleans up, also on Ctrl-C.

Options:
  --port N        the web service's port (default 18080)
  --interval MS   failsh's poll interval (default 100)
  --json          print the result as JSON
  -h, --help      this text

${
      exitCodesHelp([
        [EXIT.ok, "the takeover and the reclaim were both seen"],
        [EXIT.failure, "the demo failed"],
        [EXIT.usage, null],
        [EXIT.interrupted, null],
      ])
    }`);
    return EXIT.ok;
  }
  const port = v.port === undefined ? 18080 : Number(v.port);
  const intervalMs = v.interval === undefined ? 100 : Number(v.interval);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    console.error(`demo: Invalid --port "${v.port}": expected 1 to 65535`);
    return EXIT.usage;
  }
  if (!Number.isInteger(intervalMs) || intervalMs < 20 || intervalMs > 5000) {
    console.error(`demo: Invalid --interval "${v.interval}": expected 20 to 5000 ms`);
    return EXIT.usage;
  }
  const colour = !v.json && Deno.stdout.isTerminal();
  const abort = new AbortController();
  const onInt = () => abort.abort();
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onInt);
  try {
    const result = await runDemo({
      port,
      intervalMs,
      signal: abort.signal,
      say: (line, kind) => {
        if (v.json) return;
        console.log(colour && COLOURS[kind] ? `${COLOURS[kind]}${line}\x1b[0m` : line);
      },
    });
    if (v.json) console.log(JSON.stringify(result, null, 2));
    else if (result.ok) {
      console.log(
        `\nClient-visible outage: takeover ${result.takeover!.outageMs} ms, reclaim ${
          result.reclaim!.outageMs
        } ms (${result.requests.answered}/${result.requests.total} requests answered).`,
      );
    } else if (abort.signal.aborted) {
      console.error("\nInterrupted: everything the demo started was stopped and removed.");
      return EXIT.interrupted;
    } else console.error(`\nThe demo failed: ${result.error}`);
    return result.ok ? EXIT.ok : EXIT.failure;
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onInt);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
