/**
 * Failover against keepalived, in the same network-namespace lab with the same faults.
 *
 * ```sh
 * deno run -A bench/failover_bench.ts [--cuts N] [--intervals 1000,50] [--systems keepalived,failover]
 *   [--false-intervals 50,20] [--stress-seconds 30] [--arbiter-ttls 2000,6000] [--json]
 *   [--out FILE] [--docs]
 * ```
 *
 * 1. Outage: for each interval (keepalived's `advert_int`, failover's poll interval) and each
 *    system, the master's switch port is set down `--cuts` times while a client in its own
 *    namespace connects to the VIP every 10 ms; the client-visible outage of each cut is measured
 *    (last answer before the cut to the first answer after which the service stays up). Median,
 *    worst, and the ratio failover / keepalived.
 * 2. False failover: for each of `--false-intervals`, each system runs healthy while both CPU cores
 *    are saturated by `stress-ng --cpu N --timeout S`; every VIP move or second holder (seen by
 *    `ip monitor address` in each host) is a takeover that should not have happened.
 *
 * Prints a table (or JSON with `--json`), writes the JSON to `--out` (default
 * `bench/failover_results.json`), and with `--docs` replaces the results block of the
 * `## Failover vs keepalived` section of docs/performance.md. Needs root, `ip netns`, keepalived
 * and stress-ng.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Lab, labUnavailable } from "../tests/lab/netns.ts";
import { run } from "../tests/lab/exec.ts";
import { startKeepalived } from "../tests/lab/keepalived.ts";
import { startFailover } from "../tests/lab/failover.ts";
import { EtcdLab } from "../tests/lab/etcd.ts";
import type { Probe } from "../tests/lab/probe.ts";

const PORT = 8080;

/** A failover system running in a lab. */
interface Running {
  stop(): Promise<void>;
  /** The fault (default: h1's service link down). */
  cut?(): Promise<void>;
  /** Heals the fault (default: h1's link up). */
  heal?(): Promise<void>;
}

/** A system under test. */
interface System {
  name: string;
  /** Starts it with the VIP on h1; `label` describes the interval mapping. */
  start(lab: Lab, intervalMs: number): Promise<Running>;
  /** How the interval maps to the system's configuration. */
  describe(intervalMs: number): string;
}

/**
 * failover's miss count, chosen so both systems declare the master dead after the same silence.
 * keepalived's backup does so `3 × advert_int` (+ skew, ~0 at priority 253) after the last
 * advert it received. failsh polls every interval and counts a poll as missed when it is still
 * unanswered at the next tick, so with `fall` misses it declares the peer FAIL `(fall + 1) ×
 * interval` after the last answered poll was sent: `fall = 2` is the same 3 intervals of silence.
 */
const FALL = 2;

const SYSTEMS: Record<string, System> = {
  keepalived: {
    name: "keepalived",
    start: (lab, ms) => startKeepalived(lab, { advertIntSec: ms / 1000 }),
    describe: (ms) => `VRRPv3 advert_int ${ms / 1000} s, priorities 254/253, preempt`,
  },
  failover: {
    name: "failover",
    start: (lab, ms) => startFailover(lab, { intervalMs: ms, fall: FALL, preempt: true }),
    describe: (ms) => `poll interval ${ms} ms, fall ${FALL}, rise 2, preempt`,
  },
};

/**
 * failover with the etcd arbiter at a TTL (the rest of the timing derives from it): a 3-member
 * etcd on the lab's management network. The cut takes h1 off both networks (its service link and
 * its management link down): with the management link up h1 would keep the key, and there would
 * be no failover to measure (docs/arbiter.md).
 */
function arbiterSystem(ttlMs: number): System {
  return {
    name: `failover+etcd TTL ${ttlMs / 1000} s`,
    async start(lab, ms) {
      const etcd = await EtcdLab.start(lab);
      try {
        const cluster = await startFailover(lab, {
          intervalMs: ms,
          fall: FALL,
          preempt: true,
          arbiter: { endpoints: etcd.endpoints, prefix: `/failover/${lab.net}/`, ttl: ttlMs },
          startTimeoutMs: 60_000,
        });
        return {
          async stop() {
            await cluster.stop();
            await etcd.stop();
          },
          async cut() {
            await lab.linkDown("h1");
            await etcd.cut("h1", "down");
          },
          async heal() {
            await etcd.heal("h1");
            await lab.linkUp("h1");
          },
        };
      } catch (e) {
        await etcd.stop();
        throw e;
      }
    },
    describe: (ms) =>
      `poll interval ${ms} ms, fall ${FALL}, etcd arbiter TTL ${
        ttlMs / 1000
      } s (renew TTL/3, margin TTL/6, takeover delay TTL/2), h1 cut from clients and etcd`,
  };
}

/** One cut's measurement. */
interface CutResult {
  outageMs: number | null;
  sinceFaultMs: number | null;
  servedBy: string | null;
  failures: number;
  /** Outage the client saw when h1 returned and took the VIP back (0: none). */
  failbackOutageMs: number | null;
  /** Failed attempts in the failback window. */
  failbackFailures: number;
  /** From link up to h1 holding and serving the VIP again. */
  backAfterMs: number | null;
  /**
   * When h1 was not back 3 s after link up, or the failback gap was longer than half an interval
   * (at least 200 ms): what the lab looked like then (holders, neighbour entry, logs, audit).
   */
  stuck?: string;
}

/** Summary of a series of cuts. */
interface OutageSeries {
  system: string;
  intervalMs: number;
  config: string;
  cuts: CutResult[];
  medianMs: number | null;
  worstMs: number | null;
  meanMs: number | null;
  failedCuts: number;
  /** Median and worst outage when h1 returned (preempt), ms. */
  failbackMedianMs: number | null;
  failbackWorstMs: number | null;
  /** Cuts whose failback made the client fail at least once. */
  failbackGlitches: number;
  error: string | null;
}

/** Result of a false-failover run. */
interface FalseRun {
  system: string;
  intervalMs: number;
  config: string;
  stressSeconds: number;
  falseTakeovers: number;
  /** Times the healthy master dropped the VIP. */
  falseReleases: number;
  secondHolderEvents: number;
  clientFailures: number;
  clientAttempts: number;
  /** VIP address events seen by `ip monitor address` (at most 100). */
  events: string[];
  error: string | null;
}

function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] ?? null : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitH1(lab: Lab, probe: Probe, timeoutMs: number): Promise<boolean> {
  const holders = await lab.waitHolders((h) => h.length === 1 && h[0] === "h1", timeoutMs);
  if (!holders) return false;
  return await probe.waitServedBy("h1", timeoutMs, 10);
}

/** How long the client must have been served without a failure before a cut. */
const QUIET_MS = 1000;

/** How long a failback is watched (covers a 3-packet gratuitous ARP burst, one a second). */
const FAILBACK_WATCH_MS = 3500;

/** Waits until every attempt of the last `quietMs` (that has reported) was answered by `who`. */
async function waitQuiet(
  probe: Probe,
  who: string,
  quietMs: number,
  timeoutMs: number,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const to = Date.now() - probe.attemptTimeoutMs - 20;
    const recent = probe.between(to - quietMs, to);
    if (recent.length >= quietMs / 20 && recent.every((a) => a.ok && a.who === who)) return true;
    await sleep(100);
  }
  return false;
}

/** Holders, the client's neighbour entry, the MACs and every process's last lines. */
async function stuckSnapshot(lab: Lab, upAt: number): Promise<string> {
  const lines = [`at link up + ${Date.now() - upAt} ms`];
  try {
    lines.push(`holders: ${JSON.stringify(await lab.holders())}`);
    lines.push(`client neighbour: ${JSON.stringify(await lab.neighbour("client"))}`);
    lines.push(`MACs: h1 ${await lab.mac("h1")}, h2 ${await lab.mac("h2")}`);
  } catch (e) {
    lines.push(`(lab query failed: ${(e as Error).message})`);
  }
  lines.push(lab.diagnostics(40));
  // failover's audit logs (one per host directory), last lines.
  try {
    for (const e of Deno.readDirSync(lab.dir)) {
      const file = `${lab.dir}/${e.name}/audit.jsonl`;
      let text: string;
      try {
        text = Deno.readTextFileSync(file);
      } catch {
        continue;
      }
      lines.push(`--- ${e.name}/audit.jsonl`, ...text.trim().split("\n").slice(-30));
    }
  } catch {
    // No directory: nothing more to show.
  }
  return lines.join("\n");
}

async function measureOutages(
  system: System,
  intervalMs: number,
  cuts: number,
  log: (s: string) => void,
): Promise<OutageSeries> {
  const series: OutageSeries = {
    system: system.name,
    intervalMs,
    config: system.describe(intervalMs),
    cuts: [],
    medianMs: null,
    worstMs: null,
    meanMs: null,
    failedCuts: 0,
    failbackMedianMs: null,
    failbackWorstMs: null,
    failbackGlitches: 0,
    error: null,
  };
  const lab = await Lab.create({ hosts: 2 });
  try {
    await lab.startServices(PORT);
    const running = await system.start(lab, intervalMs);
    const probe = lab.startProbe(PORT);
    try {
      if (!await waitH1(lab, probe, 30_000)) throw new Error("h1 never served the VIP");
      const bound = 20 * intervalMs + 15_000;
      for (let i = 0; i < cuts; i++) {
        // Cut only a quiet system: served by h1, no failure, for a while.
        if (!await waitQuiet(probe, "h1", QUIET_MS, bound)) {
          throw new Error(`the client was not served steadily by h1 before cut ${i + 1}`);
        }
        await sleep(Math.random() * intervalMs); // Random phase against the system's timers.
        const cutAt = Date.now();
        await (running.cut ? running.cut() : lab.linkDown("h1"));
        const served = await probe.waitServedBy("h2", bound, 10);
        const r = await probe.settledOutage(cutAt);
        const cut: CutResult = {
          outageMs: served ? r.outageMs : null,
          sinceFaultMs: served ? r.sinceFaultMs : null,
          servedBy: r.servedBy,
          failures: r.failures,
          failbackOutageMs: null,
          failbackFailures: 0,
          backAfterMs: null,
        };
        series.cuts.push(cut);
        const upAt = Date.now();
        await (running.heal ? running.heal() : lab.linkUp("h1"));
        // A failback that takes long is a bug worth a look: keep a snapshot of the lab from then.
        let snapshot: Promise<string> | null = null;
        const watch = setTimeout(() => snapshot = stuckSnapshot(lab, upAt), 3000);
        const back = await waitH1(lab, probe, bound + 30_000);
        clearTimeout(watch);
        if (snapshot !== null) {
          cut.stuck = await snapshot;
          log(`  cut ${i + 1}: h1 not back 3 s after link up:\n${cut.stuck}`);
        }
        if (!back) throw new Error(`h1 did not take the VIP back after cut ${i + 1}`);
        cut.backAfterMs = Date.now() - upAt;
        // Watch the failback long enough for late gratuitous ARP bursts (arping sends one a
        // second) to show: a stale one moves the client to a host that no longer holds the VIP.
        await sleep(FAILBACK_WATCH_MS);
        const fb = probe.outage(upAt, Date.now() - probe.attemptTimeoutMs - 50);
        cut.failbackOutageMs = fb.outageMs;
        cut.failbackFailures = fb.failures;
        // A long failback gap is worth a look too (what the hosts logged and ran around it).
        if (cut.stuck === undefined && (fb.outageMs ?? 0) > Math.max(200, intervalMs / 2)) {
          cut.stuck = await stuckSnapshot(lab, upAt);
          log(`  cut ${i + 1}: failback gap of ${fb.outageMs} ms:\n${cut.stuck}`);
        }
        log(
          `  ${system.name} ${intervalMs} ms cut ${i + 1}/${cuts}: outage ${cut.outageMs} ms; ` +
            `h1 back after ${cut.backAfterMs} ms, failback outage ${fb.outageMs} ms ` +
            `(${fb.failures} failed attempts)`,
        );
      }
    } finally {
      await probe.stop();
      await running.stop();
    }
  } catch (e) {
    series.error = (e as Error).message + "\n" + lab.diagnostics(15);
  } finally {
    await lab.teardown();
  }
  const ok = series.cuts.map((c) => c.outageMs).filter((v): v is number => v !== null);
  series.failedCuts = series.cuts.length - ok.length;
  series.medianMs = median(ok);
  series.worstMs = ok.length ? Math.max(...ok) : null;
  series.meanMs = ok.length ? Math.round(ok.reduce((a, b) => a + b, 0) / ok.length) : null;
  const fb = series.cuts.map((c) => c.failbackOutageMs).filter((v): v is number => v !== null);
  series.failbackMedianMs = median(fb);
  series.failbackWorstMs = fb.length ? Math.max(...fb) : null;
  series.failbackGlitches = series.cuts.filter((c) => c.failbackFailures > 0).length;
  return series;
}

async function falseFailover(
  system: System,
  intervalMs: number,
  stressSeconds: number,
  log: (s: string) => void,
): Promise<FalseRun> {
  const result: FalseRun = {
    system: system.name,
    intervalMs,
    config: system.describe(intervalMs),
    stressSeconds,
    falseTakeovers: 0,
    falseReleases: 0,
    secondHolderEvents: 0,
    clientFailures: 0,
    clientAttempts: 0,
    events: [],
    error: null,
  };
  const lab = await Lab.create({ hosts: 2 });
  try {
    await lab.startServices(PORT);
    const running = await system.start(lab, intervalMs);
    const probe = lab.startProbe(PORT);
    try {
      if (!await waitH1(lab, probe, 30_000)) throw new Error("h1 never served the VIP");
      await sleep(Math.max(1000, 5 * intervalMs));
      const watch = await lab.watchAddress();
      const from = Date.now();
      let polls = 0;
      let bad = false;
      const cores = navigator.hardwareConcurrency || 2;
      const stress = run([
        "stress-ng",
        "--cpu",
        String(cores),
        "--timeout",
        `${stressSeconds}s`,
        "-q",
      ], {
        timeoutMs: (stressSeconds + 30) * 1000,
        check: false,
      });
      // Sample the holders too: a second holder shows as two hosts at once.
      let done = false;
      stress.finally(() => done = true);
      while (!done) {
        const h = await lab.holders();
        polls++;
        const wrong = !(h.length === 1 && h[0] === "h1");
        if (wrong && !bad && h.length > 1) result.secondHolderEvents++;
        bad = wrong;
        await sleep(50);
      }
      await stress;
      await sleep(Math.max(1000, 5 * intervalMs)); // Late decisions made under load count too.
      await watch.stop();
      const until = Date.now();
      for (const [h, n] of watch.added) if (h !== "h1") result.falseTakeovers += n;
      result.falseReleases = watch.removed.get("h1") ?? 0;
      result.events = watch.events;
      const attempts = probe.between(from, until - probe.attemptTimeoutMs);
      result.clientAttempts = attempts.length;
      result.clientFailures = attempts.filter((a) => !a.ok).length;
      log(
        `  ${system.name} ${intervalMs} ms under stress: ${result.falseTakeovers} false takeovers, ` +
          `${result.falseReleases} false releases ` +
          `(${polls} holder samples, ${result.clientFailures}/${result.clientAttempts} client failures)`,
      );
    } finally {
      await probe.stop();
      await running.stop();
    }
  } catch (e) {
    result.error = (e as Error).message + "\n" + lab.diagnostics(15);
  } finally {
    await lab.teardown();
  }
  return result;
}

async function machine(): Promise<Record<string, string>> {
  const sh = async (argv: string[]) =>
    (await run(argv, { check: false, timeoutMs: 5000 }).catch(() => ({ stdout: "?" }))).stdout
      .trim();
  const mem = (await Deno.readTextFile("/proc/meminfo").catch(() => "")).match(
    /MemTotal:\s+(\d+)/,
  );
  const ka = await run(["keepalived", "--version"], { check: false, timeoutMs: 5000 })
    .catch(() => ({ stderr: "?", stdout: "" }));
  return {
    nproc: await sh(["nproc"]),
    memory: mem ? `${Math.round(Number(mem[1]) / 1024 / 1024)} GiB` : "?",
    kernel: await sh(["uname", "-r"]),
    deno: Deno.version.deno,
    keepalived: (ka.stderr + ka.stdout).split("\n")[0]?.trim() ?? "?",
    cpu: ((await Deno.readTextFile("/proc/cpuinfo").catch(() => "")).match(
      /model name\s*:\s*(.+)/,
    )?.[1] ?? "?").trim(),
    load: (await Deno.readTextFile("/proc/loadavg").catch(() => "?")).split(" ").slice(0, 3)
      .join(" "),
  };
}

function fmt(v: number | null): string {
  return v === null ? "n/a" : `${Math.round(v)}`;
}

/** Renders the markdown results block. */
function markdown(report: Report): string {
  const lines: string[] = [];
  lines.push(`Measured ${report.date} with:`, "", "```sh", report.command, "```", "");
  const m = report.machine;
  lines.push(
    `Machine: ${m.nproc} cores (${m.cpu}), ${m.memory}, kernel ${m.kernel}, Deno ${m.deno}, ` +
      `${m.keepalived}; load average at start ${m.load} (a load near 0 means nothing else ran).`,
    "",
    "Client-visible outage when the master's switch port goes down (" +
      `${report.cuts} cuts each; ms):`,
    "",
    "| interval | system | config | median | worst | mean | failed cuts | ratio (median) | failback: median / worst outage, glitches |",
    "|---|---|---|---|---|---|---|---|---|",
  );
  for (const s of report.outages) {
    const ka = report.outages.find((x) =>
      x.system === "keepalived" && x.intervalMs === s.intervalMs
    );
    const ratio = s.system === "failover" && ka?.medianMs && s.medianMs !== null
      ? (s.medianMs / ka.medianMs).toFixed(2)
      : "";
    lines.push(
      `| ${s.intervalMs} ms | ${s.system} | ${s.config} | ${fmt(s.medianMs)} | ${
        fmt(s.worstMs)
      } | ` +
        `${fmt(s.meanMs)} | ${s.failedCuts}${s.error ? " (error)" : ""} | ${ratio} | ` +
        `${fmt(s.failbackMedianMs)} / ${
          fmt(s.failbackWorstMs)
        }, ${s.failbackGlitches} of ${s.cuts.length} |`,
    );
  }
  if (report.falseRuns.length) {
    lines.push(
      "",
      `False failover: healthy pair, both cores saturated by \`stress-ng --cpu N --timeout S\`:`,
      "",
      "| interval | system | stress | false takeovers | VIP dropped by master | second-holder samples | client failures |",
      "|---|---|---|---|---|---|---|",
    );
    for (const f of report.falseRuns) {
      lines.push(
        `| ${f.intervalMs} ms | ${f.system} | ${f.stressSeconds} s | ${f.falseTakeovers}` +
          `${
            f.error ? " (error)" : ""
          } | ${f.falseReleases} | ${f.secondHolderEvents} | ${f.clientFailures}/${f.clientAttempts} |`,
      );
    }
  }
  const errors = [...report.outages, ...report.falseRuns].filter((x) => x.error);
  for (const e of errors) {
    lines.push("", `Error in ${e.system} at ${e.intervalMs} ms: ${e.error?.split("\n")[0]}`);
  }
  return lines.join("\n");
}

/** The JSON written by the benchmark. */
interface Report {
  date: string;
  command: string;
  machine: Record<string, string>;
  cuts: number;
  outages: OutageSeries[];
  ratios: { intervalMs: number; ratio: number | null }[];
  falseRuns: FalseRun[];
}

const BEGIN = "<!-- failover-bench:begin -->";
const END = "<!-- failover-bench:end -->";

async function updateDocs(path: string, block: string): Promise<void> {
  let text = await Deno.readTextFile(path).catch(() => "# Performance\n");
  const section = "## Failover vs keepalived";
  const body = `${BEGIN}\n${block}\n${END}`;
  if (text.includes(BEGIN) && text.includes(END)) {
    text = text.slice(0, text.indexOf(BEGIN)) + body + text.slice(text.indexOf(END) + END.length);
  } else if (text.includes(section)) {
    text = text.replace(section, `${section}\n\n${body}\n`);
  } else {
    text = text.trimEnd() + `\n\n${section}\n\n${body}\n`;
  }
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
}

function parseList(text: string, what: string): number[] {
  const out = text.split(",").filter((s) => s.trim()).map((s) => Number(s.trim()));
  if (out.some((n) => !Number.isFinite(n) || n < 10 || n > 10_000)) {
    throw new RangeError(`Invalid ${what}: ${text}: expected comma-separated ms from 10 to 10000`);
  }
  return out;
}

/**
 * Runs the benchmark.
 *
 * @param args Command-line arguments.
 * @returns Exit code: 0 done, 1 errors during the run, 2 bad usage or lab unavailable.
 */
export async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        cuts: { type: "string", default: "10" },
        intervals: { type: "string", default: "1000,50" },
        systems: { type: "string", default: "keepalived,failover" },
        "false-intervals": { type: "string", default: "50,20" },
        "stress-seconds": { type: "string", default: "30" },
        "arbiter-ttls": { type: "string", default: "" },
        json: { type: "boolean", default: false },
        out: { type: "string", default: "bench/failover_results.json" },
        docs: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    console.error(`Invalid arguments: ${(e as Error).message}`);
    return 2;
  }
  if (values.help) {
    console.log(
      "Usage: deno run -A bench/failover_bench.ts [--cuts N] [--intervals 1000,50]\n" +
        "  [--systems keepalived,failover] [--false-intervals 50,20] [--stress-seconds 30]\n" +
        "  [--arbiter-ttls 2000,6000] [--json] [--out FILE] [--docs]",
    );
    return 0;
  }
  const cuts = Number(values.cuts);
  const stressSeconds = Number(values["stress-seconds"]);
  let intervals: number[];
  let falseIntervals: number[];
  let arbiterTtls: number[];
  try {
    if (!Number.isInteger(cuts) || cuts < 1 || cuts > 200) {
      throw new RangeError(`Invalid --cuts: ${values.cuts}: expected 1 to 200`);
    }
    if (!Number.isInteger(stressSeconds) || stressSeconds < 0 || stressSeconds > 300) {
      throw new RangeError(
        `Invalid --stress-seconds: ${values["stress-seconds"]}: expected 0 to 300`,
      );
    }
    intervals = parseList(values.intervals, "--intervals");
    falseIntervals = values["false-intervals"] === "" || stressSeconds === 0
      ? []
      : parseList(values["false-intervals"], "--false-intervals");
    arbiterTtls = values["arbiter-ttls"] === ""
      ? []
      : parseList(values["arbiter-ttls"], "--arbiter-ttls");
    if (arbiterTtls.some((t) => t % 1000 !== 0)) {
      throw new RangeError(
        `Invalid --arbiter-ttls: ${values["arbiter-ttls"]}: etcd leases are whole seconds`,
      );
    }
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  const systems: System[] = [];
  for (const name of values.systems.split(",").map((s) => s.trim()).filter((s) => s)) {
    const s = SYSTEMS[name];
    if (!s) {
      console.error(`Invalid --systems: ${name}: expected keepalived, failover`);
      return 2;
    }
    systems.push(s);
  }
  const why = await labUnavailable();
  if (why) {
    console.error(`Cannot run the failover benchmark: ${why}`);
    return 2;
  }
  const log = (s: string) => console.error(s);
  const report: Report = {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    command: `deno run -A bench/failover_bench.ts ${args.join(" ")}`.trim(),
    machine: await machine(),
    cuts,
    outages: [],
    ratios: [],
    falseRuns: [],
  };
  const started = Date.now();
  for (const ms of intervals) {
    for (const s of [...systems, ...arbiterTtls.map(arbiterSystem)]) {
      log(`outage: ${s.name} at ${ms} ms (${s.describe(ms)})`);
      report.outages.push(await measureOutages(s, ms, cuts, log));
    }
    const ka = report.outages.find((x) => x.system === "keepalived" && x.intervalMs === ms);
    const fo = report.outages.find((x) => x.system === "failover" && x.intervalMs === ms);
    report.ratios.push({
      intervalMs: ms,
      ratio: ka?.medianMs && fo?.medianMs != null ? fo.medianMs / ka.medianMs : null,
    });
  }
  for (const ms of falseIntervals) {
    for (const s of systems) {
      log(`false failover: ${s.name} at ${ms} ms, ${stressSeconds} s of stress`);
      report.falseRuns.push(await falseFailover(s, ms, stressSeconds, log));
    }
  }
  log(`done in ${Math.round((Date.now() - started) / 1000)} s`);
  const json = JSON.stringify(report, null, 2);
  if (values.out) {
    const tmp = `${values.out}.tmp-${Deno.pid}`;
    await Deno.writeTextFile(tmp, json + "\n");
    await Deno.rename(tmp, values.out);
  }
  const md = markdown(report);
  if (values.docs) {
    await updateDocs("docs/performance.md", md);
    await run([Deno.execPath(), "fmt", "docs/performance.md"], { check: false, timeoutMs: 30_000 });
  }
  console.log(values.json ? json : md);
  const errors = [...report.outages, ...report.falseRuns].some((x) => x.error);
  return errors ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
