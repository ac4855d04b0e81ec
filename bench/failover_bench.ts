/**
 * Failover against keepalived, in the same network-namespace lab with the same faults.
 *
 * ```sh
 * deno run -A bench/failover_bench.ts [--cuts N] [--intervals 1000,50]
 *   [--systems keepalived,failover,failover+liveness] [--faults linkdown,blackhole]
 *   [--false-intervals 50,20] [--stress-seconds 30] [--stall-ms 200 --stall-every-ms 2000]
 *   [--frontier 1000,500,200,100,50,20] [--liveness 10x5[:1000]]
 *   [--arbiter-ttls 2000,6000] [--json] [--out FILE] [--docs]
 * ```
 *
 * 1. Outage: for each interval (keepalived's `advert_int`, failover's poll interval), each fault
 *    and each system, the fault is applied to the master `--cuts` times while a client in its own
 *    namespace connects to the VIP every 10 ms; the client-visible outage of each cut is measured
 *    (last answer before the cut to the first answer after which the service stays up). Median,
 *    worst, and the ratio to keepalived. Faults: `linkdown` (the master's switch port goes down:
 *    the master sees carrier loss) and `blackhole` (the switch port stays up but forwards nothing:
 *    the master's kernel and daemons run on and see nothing wrong).
 * 2. False failover: for each of `--false-intervals`, each system runs healthy under the stress
 *    suite for `--stress-seconds`: `stress-ng` saturating every core, churning 512 MB of memory and
 *    writing a bounded file, while the master's daemons are stopped (SIGSTOP) for `--stall-ms`
 *    every `--stall-every-ms` (keepalived's VRRP process; faild and the failsh supervisor). Every
 *    VIP addition on another host or removal on the master (seen by `ip monitor address`) is a
 *    takeover that should not have happened.
 * 3. Frontier (`--frontier`): per system, a bisection over the given intervals for the fastest one
 *    whose stress suite shows no false failover, then its link-down outage.
 *
 * Prints a table (or JSON with `--json`), writes the JSON to `--out` (default
 * `bench/failover_results.json`), and with `--docs` replaces the results block of the
 * `## Failover vs keepalived` section of docs/performance.md. Needs root, `ip netns`, keepalived,
 * iputils-ping and stress-ng.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Lab, labUnavailable } from "../tests/lab/netns.ts";
import { run } from "../tests/lab/exec.ts";
import { startKeepalived } from "../tests/lab/keepalived.ts";
import { startFailover } from "../tests/lab/failover.ts";
import { EtcdLab } from "../tests/lab/etcd.ts";
import type { Attempt, Probe } from "../tests/lab/probe.ts";

const PORT = 8080;

/** The systems the benchmark knows. */
export const SYSTEM_NAMES = ["keepalived", "failover", "failover+liveness"] as const;

/** A system's name. */
export type SystemName = typeof SYSTEM_NAMES[number];

/** The faults the benchmark knows. */
export const FAULT_NAMES = ["linkdown", "blackhole"] as const;

/** A fault's name. */
export type FaultName = typeof FAULT_NAMES[number];

/** A failover system running in a lab. */
interface Running {
  stop(): Promise<void>;
  /** Also cut with the fault (the arbiter's runs: h1 off etcd too). */
  alsoCut?(): Promise<void>;
  /** Heals what {@linkcode Running.alsoCut} cut. */
  alsoHeal?(): Promise<void>;
  /** The master's (h1's) processes a stall stops. */
  stallPids(): Promise<number[]>;
  /**
   * Waits until the standby (h2) watches the master and could take over: a fault before that
   * measures a start-up, not a failover (h2's failsh starts once h1 holds the VIP, which takes
   * seconds on a loaded machine).
   *
   * @returns `null` when ready, else what was missing at the timeout.
   */
  ready(timeoutMs: number): Promise<string | null>;
}

/** A system under test. */
interface System {
  name: string;
  /** Starts it with the VIP on h1. */
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

/**
 * Host liveness of a failover system: ping every `intervalMs`, silent after `fall` unanswered;
 * `stallGraceMs` absent: the sample's default (1 s).
 */
export interface Liveness {
  intervalMs: number;
  fall: number;
  stallGraceMs?: number;
}

/** Default host liveness of the `failover+liveness` system (`--liveness 10x5`). */
const LIVENESS: Liveness = { intervalMs: 10, fall: 5 };

/**
 * Parses `--liveness INTERVALxFALL[:STALLGRACE]` (e.g. `10x5`, `10x3:0`).
 *
 * @param text The option's value.
 * @returns The liveness.
 * @throws {RangeError} When the text is not `INTERVALxFALL` with 10 to 1000 ms (what
 * `host()` allows, up to 1 s) and a fall of 1 to 100, optionally `:` and a stall grace of 0
 * to 60 000 ms.
 */
export function parseLiveness(text: string): Liveness {
  const m = /^(\d+)x(\d+)(?::(\d+))?$/.exec(text.trim());
  const intervalMs = Number(m?.[1]);
  const fall = Number(m?.[2]);
  const grace = m?.[3] === undefined ? null : Number(m[3]);
  if (
    !m || intervalMs < 10 || intervalMs > 1000 || fall < 1 || fall > 100 ||
    (grace !== null && grace > 60_000)
  ) {
    throw new RangeError(
      `Invalid --liveness: ${text}: expected INTERVALxFALL[:STALLGRACE], 10 to 1000 ms, a fall ` +
        "of 1 to 100 and a stall grace of 0 to 60000 ms (e.g. 10x5 or 10x3:1000)",
    );
  }
  return grace === null ? { intervalMs, fall } : { intervalMs, fall, stallGraceMs: grace };
}

/** The children of a process (Linux `/proc/PID/task/PID/children`). */
async function children(pid: number): Promise<number[]> {
  const text = await Deno.readTextFile(`/proc/${pid}/task/${pid}/children`).catch(() => "");
  return text.trim().split(/\s+/).filter((s) => s).map(Number);
}

/** The command name of a process, or `?`. */
async function comm(pid: number): Promise<string> {
  return (await Deno.readTextFile(`/proc/${pid}/comm`).catch(() => "?")).trim();
}

/**
 * keepalived's VRRP process on a host: the child of the keepalived parent (started `-P`, so
 * there is no checker child), the one that sends the adverts.
 */
async function vrrpChild(parent: number): Promise<number> {
  const kids = [];
  for (const c of await children(parent)) if (await comm(c) === "keepalived") kids.push(c);
  if (kids.length !== 1) {
    throw new Error(
      `Cannot find keepalived's VRRP process: parent ${parent} has ${kids.length} keepalived ` +
        `children (${(await children(parent)).join(", ") || "none"}), expected 1`,
    );
  }
  return kids[0] as number;
}

function failoverSystem(
  name: string,
  liveness: Liveness | null,
  arbiterTtlMs: number | null = null,
): System {
  return {
    name,
    async start(lab, ms) {
      // With an arbiter: a 3-member etcd on the lab's management network, and the cut takes h1
      // off both networks (with its management link up h1 would keep the key, and there would be
      // no failover to measure: docs/arbiter.md).
      const etcd = arbiterTtlMs === null ? null : await EtcdLab.start(lab);
      let cluster;
      try {
        cluster = await startFailover(lab, {
          intervalMs: ms,
          fall: FALL,
          preempt: true,
          ...(liveness ? { liveness } : {}),
          ...(etcd === null ? {} : {
            arbiter: {
              endpoints: etcd.endpoints,
              prefix: `/failover/${lab.net}/`,
              ttl: arbiterTtlMs!,
            },
            startTimeoutMs: 60_000,
          }),
        });
      } catch (e) {
        await etcd?.stop();
        throw e;
      }
      return {
        async stop() {
          await cluster.stop();
          await etcd?.stop();
        },
        ...(etcd === null ? {} : {
          alsoCut: () => etcd.cut("h1", "down"),
          alsoHeal: () => etcd.heal("h1"),
        }),
        async ready(timeoutMs) {
          const deadline = Date.now() + timeoutMs;
          let missing = "no monitor snapshot from h2's failsh";
          // h2 must also be past its start-up grace (the sample's default, 2 intervals; one
          // more and 200 ms for the scheduler's own start): a fault in it is decided at its end
          // (a first liveness cut at 1 s was decided 1151 ms after the link down, the next
          // ones after 102 and 109 ms).
          const graceMs = 3 * ms + 200;
          while (Date.now() < deadline) {
            const snap = await cluster.snapshot("h2");
            const view = snap?.hosts.find((h) => h.name === "h1");
            if (snap && view) {
              const kernel = view.liveness?.state ?? "none";
              const up = snap.now - snap.startedAt;
              missing = `h2 sees h1 ${view.reachable ? "reachable" : "unreachable"}, ` +
                `its kernel ${kernel}, h2's failsh up for ${up} ms (grace ${graceMs} ms)`;
              if (view.reachable && (!liveness || kernel === "alive") && up >= graceMs) {
                return null;
              }
            }
            await sleep(100);
          }
          return missing;
        },
        stallPids() {
          const h1 = cluster.hosts.get("h1");
          if (!h1 || h1.faild.done || h1.failsh.done) {
            return Promise.reject(new Error("Cannot stall h1's faild and failsh: not running"));
          }
          // `ip netns exec` execs the program: the pids are faild's and the failsh supervisor's.
          return Promise.resolve([h1.faild.pid, h1.failsh.pid]);
        },
      };
    },
    describe: (ms) =>
      `poll interval ${ms} ms, fall ${FALL}, rise 2, preempt` +
      (liveness
        ? `, liveness ${liveness.intervalMs} ms × ${liveness.fall}, stall grace ${
          (liveness.stallGraceMs ?? 1000) / 1000
        } s`
        : "") +
      (arbiterTtlMs === null ? "" : `, etcd arbiter TTL ${arbiterTtlMs / 1000} s (renew TTL/3, ` +
        "margin TTL/6, takeover delay TTL/2), h1 cut from clients and etcd"),
  };
}

/** The systems, the third with the given host liveness. */
function systemsWith(liveness: Liveness): Record<SystemName, System> {
  return {
    keepalived: KEEPALIVED,
    failover: failoverSystem("failover", null),
    "failover+liveness": failoverSystem("failover+liveness", liveness),
  };
}

const KEEPALIVED: System = {
  name: "keepalived",
  async start(lab, ms) {
    const cluster = await startKeepalived(lab, {
      advertIntSec: ms / 1000,
      higherPrioSendAdvert: true,
    });
    return {
      stop: () => cluster.stop(),
      async ready(timeoutMs) {
        const deadline = Date.now() + timeoutMs;
        while (Date.now() < deadline) {
          if (cluster.processes.get("h2")?.tail(400).includes("Entering BACKUP STATE")) {
            return null;
          }
          await sleep(100);
        }
        return "h2's keepalived never logged 'Entering BACKUP STATE'";
      },
      async stallPids() {
        const parent = cluster.processes.get("h1");
        if (!parent || parent.done) throw new Error("Cannot stall h1's keepalived: not running");
        return [await vrrpChild(parent.pid)];
      },
    };
  },
  describe: (ms) =>
    `VRRPv3 advert_int ${ms / 1000} s, priorities 254/253, preempt, ` +
    "vrrp_higher_prio_send_advert",
};

/** A fault applied to the master and cleared again. */
interface Fault {
  name: FaultName;
  apply(lab: Lab, host: string): Promise<void>;
  clear(lab: Lab, host: string): Promise<void>;
}

const FAULTS: Record<FaultName, Fault> = {
  // The switch port goes down: the master's eth0 loses carrier (it knows it is cut off).
  linkdown: {
    name: "linkdown",
    apply: (lab, h) => lab.linkDown(h),
    clear: (lab, h) => lab.linkUp(h),
  },
  // The switch port stays up (carrier, kernel and daemons all fine on the master) but the bridge
  // forwards nothing to or from it: bridge port state 0 (disabled), both directions.
  blackhole: {
    name: "blackhole",
    apply: (lab, h) => lab.blackhole(h),
    clear: (lab, h) => lab.unblackhole(h),
  },
};

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
  /** From the fault's end to h1 holding and serving the VIP again. */
  backAfterMs: number | null;
  /** failover only: what h2's start decision cited, the master's kernel or the polls. */
  reason?: "kernel" | "polls" | null;
  /** failover only: from the fault to h2's start decision (its log's clock), ms. */
  decidedAfterMs?: number | null;
  /**
   * When h1 was not back 3 s after the fault ended, or the failback gap was longer than half an
   * interval (at least 200 ms): what the lab looked like then (holders, neighbour entry, logs,
   * audit).
   */
  stuck?: string;
}

/** Summary of a series of cuts. */
interface OutageSeries {
  system: string;
  fault: FaultName;
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

/** Stress suite settings. */
export interface SuiteOptions {
  stressSeconds: number;
  /** How long each stall stops the master's daemons (0: no stalls). */
  stallMs: number;
  /** Period of the stalls. */
  stallEveryMs: number;
}

/** The gaps the client saw during a run. */
export interface ClientGaps {
  /** Runs of failed attempts, each ended by an answer (or by the window's end). */
  outages: number;
  /** Longest one, from the last answer before it to the first answer after it, ms. */
  longestMs: number | null;
  failures: number;
  attempts: number;
}

/**
 * Counts the client's outages in a window: each run of failed attempts is one outage, lasting from
 * the start of the last answered attempt before it to the start of the first answered one after
 * it (or the window's last attempt when none answered after it).
 *
 * @param attempts The window's attempts, in any order.
 * @returns The outages, the longest, failures and attempts.
 *
 * @example
 * ```ts
 * import { clientGaps } from "./failover_bench.ts";
 * const a = (start: number, ok: boolean) => ({ start, durationMs: 1, ok, who: "h1", error: "-" });
 * clientGaps([a(0, true), a(10, false), a(20, true)]); // 1 outage of 20 ms
 * ```
 */
export function clientGaps(attempts: readonly Attempt[]): ClientGaps {
  const sorted = [...attempts].sort((x, y) => x.start - y.start);
  let outages = 0;
  let longest: number | null = null;
  let lastOk: number | null = null;
  let inGap = false;
  let gapFrom = 0;
  for (const a of sorted) {
    if (!a.ok) {
      if (!inGap) {
        inGap = true;
        outages++;
        gapFrom = lastOk ?? a.start;
      }
      continue;
    }
    if (inGap) {
      longest = Math.max(longest ?? 0, a.start - gapFrom);
      inGap = false;
    }
    lastOk = a.start;
  }
  const last = sorted.at(-1);
  if (inGap && last) longest = Math.max(longest ?? 0, last.start - gapFrom);
  return {
    outages,
    longestMs: longest,
    failures: sorted.filter((a) => !a.ok).length,
    attempts: sorted.length,
  };
}

/** What the stalls did (the bench's own clock: under stress a stall lasts longer than asked). */
interface StallStats {
  /** Stalls made. */
  count: number;
  /** What was stopped, e.g. `keepalived VRRP (pid 123)`. */
  targets: string[];
  /** Median and worst achieved stop-to-continue time, ms. */
  medianMs: number | null;
  worstMs: number | null;
}

/** Result of a false-failover run. */
interface FalseRun {
  system: string;
  intervalMs: number;
  config: string;
  stressSeconds: number;
  /** The stress-ng command line. */
  stress: string;
  stalls: StallStats;
  falseTakeovers: number;
  /**
   * failover only: the standby's start decisions during the run, by the reason failsh gave: the
   * master's kernel silent (liveness) or the master unreachable by polls.
   */
  startReasons: { kernel: number; polls: number } | null;
  /** Times the healthy master dropped the VIP. */
  falseReleases: number;
  secondHolderEvents: number;
  client: ClientGaps;
  /** VIP address events seen by `ip monitor address` (at most 100). */
  events: string[];
  error: string | null;
}

/** The frontier of a system. */
interface Frontier {
  system: string;
  /** Suite runs made by the bisection, fastest first. */
  tried: { intervalMs: number; falseFailovers: number | null }[];
  /** The fastest interval with zero false failovers, or `null` when none had zero. */
  intervalMs: number | null;
  config: string | null;
  /** Link-down outage at that interval, ms. */
  outageMedianMs: number | null;
  outageWorstMs: number | null;
  /** Outage median / keepalived's at its own frontier (not for keepalived). */
  ratio: number | null;
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

/**
 * Bisection for the fastest passing setting, assuming a setting passes whenever a faster one does
 * (a system that makes no false failover at 50 ms makes none at 100 ms).
 *
 * @param settings Candidates, sorted fastest first.
 * @param passes Runs a candidate (each at most once).
 * @returns The fastest passing candidate, or `null` when the slowest one fails too.
 *
 * @example
 * ```ts
 * import { fastestPassing } from "./failover_bench.ts";
 * await fastestPassing([20, 50, 100, 200], (ms) => Promise.resolve(ms >= 100)); // 100
 * ```
 */
export async function fastestPassing(
  settings: readonly number[],
  passes: (setting: number) => Promise<boolean>,
): Promise<number | null> {
  let lo = 0;
  let hi = settings.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (await passes(settings[mid] as number)) hi = mid;
    else lo = mid + 1;
  }
  return settings[lo] ?? null;
}

async function measureOutages(
  system: System,
  fault: Fault,
  intervalMs: number,
  cuts: number,
  log: (s: string) => void,
): Promise<OutageSeries> {
  const series: OutageSeries = {
    system: system.name,
    fault: fault.name,
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
      const missing = await running.ready(30_000);
      if (missing !== null) throw new Error(`the standby was not ready: ${missing}`);
      const bound = 20 * intervalMs + 15_000;
      for (let i = 0; i < cuts; i++) {
        // Cut only a quiet system: served by h1, no failure, for a while.
        if (!await waitQuiet(probe, "h1", QUIET_MS, bound)) {
          throw new Error(`the client was not served steadily by h1 before cut ${i + 1}`);
        }
        await sleep(Math.random() * intervalMs); // Random phase against the system's timers.
        const cutAt = Date.now();
        await fault.apply(lab, "h1");
        await running.alsoCut?.();
        let served: boolean;
        let r;
        try {
          served = await probe.waitServedBy("h2", bound, 10);
          r = await probe.settledOutage(cutAt);
        } catch (e) {
          await running.alsoHeal?.();
          await fault.clear(lab, "h1");
          throw e;
        }
        const cut: CutResult = {
          outageMs: served ? r.outageMs : null,
          sinceFaultMs: served ? r.sinceFaultMs : null,
          servedBy: r.servedBy,
          failures: r.failures,
          failbackOutageMs: null,
          failbackFailures: 0,
          backAfterMs: null,
        };
        if (system.name !== "keepalived") {
          const why = await startReasons(lab, "h2", cutAt);
          cut.reason = why.kernel ? "kernel" : why.polls ? "polls" : null;
          cut.decidedAfterMs = why.first === null ? null : why.first - cutAt;
        }
        series.cuts.push(cut);
        const upAt = Date.now();
        await running.alsoHeal?.();
        await fault.clear(lab, "h1");
        // A failback that takes long is a bug worth a look: keep a snapshot of the lab from then.
        let snapshot: Promise<string> | null = null;
        const watch = setTimeout(() => snapshot = stuckSnapshot(lab, upAt), 3000);
        const back = await waitH1(lab, probe, bound + 30_000);
        clearTimeout(watch);
        if (snapshot !== null) {
          cut.stuck = await snapshot;
          log(`  cut ${i + 1}: h1 not back 3 s after the ${fault.name} ended:\n${cut.stuck}`);
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
          `  ${system.name} ${fault.name} ${intervalMs} ms cut ${i + 1}/${cuts}: outage ` +
            `${cut.outageMs} ms${
              cut.reason ? ` (${cut.reason}, decided after ${cut.decidedAfterMs} ms)` : ""
            }; h1 back after ${cut.backAfterMs} ms, failback outage ` +
            `${fb.outageMs} ms (${fb.failures} failed attempts)`,
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

/**
 * The stress-ng command line of the suite: every core busy, one worker churning 512 MB of memory,
 * one writing and removing files of at most 128 MB in `dir`.
 */
function stressArgv(cores: number, seconds: number, dir: string): string[] {
  return [
    "stress-ng",
    "--cpu",
    String(cores),
    "--vm",
    "1",
    "--vm-bytes",
    "512M",
    "--hdd",
    "1",
    "--hdd-bytes",
    "128M",
    "--temp-path",
    dir,
    "--timeout",
    `${seconds}s`,
    "-q",
  ];
}

/**
 * Stops `pids` for `stallMs` every `everyMs` (absolute schedule) until `done()`. Every stopped
 * process is continued again, whatever happens.
 */
async function stallLoop(
  pids: number[],
  options: SuiteOptions,
  done: () => boolean,
  durations: number[],
): Promise<void> {
  let next = performance.now() + options.stallEveryMs;
  while (!done()) {
    await sleep(Math.min(100, Math.max(0, next - performance.now())));
    if (performance.now() < next) continue;
    if (done()) break;
    const t0 = performance.now();
    const stopped: number[] = [];
    try {
      for (const pid of pids) {
        Deno.kill(pid, "SIGSTOP");
        stopped.push(pid);
      }
      await sleep(options.stallMs);
    } finally {
      for (const pid of stopped) {
        try {
          Deno.kill(pid, "SIGCONT");
        } catch {
          // Gone meanwhile: nothing to continue.
        }
      }
    }
    durations.push(performance.now() - t0);
    next = t0 + options.stallEveryMs;
  }
}

async function falseFailover(
  system: System,
  intervalMs: number,
  suite: SuiteOptions,
  log: (s: string) => void,
): Promise<FalseRun> {
  const cores = navigator.hardwareConcurrency || 2;
  const result: FalseRun = {
    system: system.name,
    intervalMs,
    config: system.describe(intervalMs),
    stressSeconds: suite.stressSeconds,
    stress: stressArgv(cores, suite.stressSeconds, "DIR").join(" "),
    stalls: { count: 0, targets: [], medianMs: null, worstMs: null },
    falseTakeovers: 0,
    startReasons: null,
    falseReleases: 0,
    secondHolderEvents: 0,
    client: { outages: 0, longestMs: null, failures: 0, attempts: 0 },
    events: [],
    error: null,
  };
  const lab = await Lab.create({ hosts: 2 });
  // stress-ng's hdd worker writes here; removed with the lab's directory.
  const scratch = `${lab.dir}/stress-hdd`;
  const durations: number[] = [];
  try {
    await Deno.mkdir(scratch);
    await lab.startServices(PORT);
    const running = await system.start(lab, intervalMs);
    const probe = lab.startProbe(PORT);
    try {
      if (!await waitH1(lab, probe, 30_000)) throw new Error("h1 never served the VIP");
      const missing = await running.ready(30_000);
      if (missing !== null) throw new Error(`the standby was not ready: ${missing}`);
      await sleep(Math.max(1000, 5 * intervalMs));
      const pids = suite.stallMs > 0 ? await running.stallPids() : [];
      result.stalls.targets = await Promise.all(pids.map(async (p) => `${await comm(p)} ${p}`));
      const watch = await lab.watchAddress();
      const from = Date.now();
      let polls = 0;
      let bad = false;
      // In the lab's bridge namespace (the load is machine-wide all the same): an interrupted
      // benchmark's teardown kills it and its workers with the lab, instead of leaving the
      // machine loaded for the rest of --stress-seconds.
      const stressor = lab.spawn("br", stressArgv(cores, suite.stressSeconds, scratch), {
        label: "stress-ng",
      });
      const overdue = setTimeout(
        () => stressor.stop({ graceMs: 2000 }),
        (suite.stressSeconds + 30) * 1000,
      );
      const stress = stressor.exited.finally(() => clearTimeout(overdue));
      let done = false;
      stress.then(() => done = true, () => done = true);
      const stalls = pids.length ? stallLoop(pids, suite, () => done, durations) : null;
      try {
        // Sample the holders too: a second holder shows as two hosts at once.
        while (!done) {
          const h = await lab.holders();
          polls++;
          const wrong = !(h.length === 1 && h[0] === "h1");
          if (wrong && !bad && h.length > 1) result.secondHolderEvents++;
          bad = wrong;
          await sleep(50);
        }
        await stress;
      } finally {
        done = true;
        await stalls;
      }
      await sleep(Math.max(1000, 5 * intervalMs)); // Late decisions made under load count too.
      await watch.stop();
      const until = Date.now();
      for (const [h, n] of watch.added) if (h !== "h1") result.falseTakeovers += n;
      result.falseReleases = watch.removed.get("h1") ?? 0;
      result.events = watch.events.slice(0, 100);
      result.client = clientGaps(probe.between(from, until - probe.attemptTimeoutMs));
      if (system.name !== "keepalived") result.startReasons = await startReasons(lab, "h2", from);
      log(
        `  ${system.name} ${intervalMs} ms under the stress suite: ${result.falseTakeovers} false ` +
          `takeovers, ${result.falseReleases} false releases (${polls} holder samples, ` +
          `${durations.length} stalls, ${result.client.outages} client outages, ` +
          `${result.client.failures}/${result.client.attempts} failed attempts)`,
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
  result.stalls.count = durations.length;
  result.stalls.medianMs = median(durations);
  result.stalls.worstMs = durations.length ? Math.max(...durations) : null;
  return result;
}

/**
 * Counts a failsh's start decisions since `since` in its log files (`<lab dir>/<host>-failsh-N.log`,
 * one JSON record a line), by reason: the kernel's silence, or the polls.
 */
async function startReasons(
  lab: Lab,
  host: string,
  since: number,
): Promise<{ kernel: number; polls: number; first: number | null }> {
  const out = { kernel: 0, polls: 0, first: null as number | null };
  const name = new RegExp(`^${host}-failsh-\\d+\\.log$`);
  for await (const e of Deno.readDir(lab.dir)) {
    if (!name.test(e.name)) continue;
    const text = await Deno.readTextFile(`${lab.dir}/${e.name}`).catch(() => "");
    for (const line of text.split("\n")) {
      if (!line.includes(": start — ")) continue;
      let record: { ts?: string; msg?: string };
      try {
        record = JSON.parse(line.slice(line.indexOf("{")));
      } catch {
        continue;
      }
      const at = Date.parse(record.ts ?? "");
      if (!record.msg?.includes(": start — ") || !(at >= since)) continue;
      out.first = Math.min(out.first ?? at, at);
      if (record.msg.includes("kernel has not answered")) out.kernel++;
      else out.polls++;
    }
  }
  return out;
}

/** False failovers of a run: VIP added elsewhere plus dropped by the master (`null`: error). */
function falseFailovers(r: FalseRun): number | null {
  return r.error ? null : r.falseTakeovers + r.falseReleases;
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

/** How many of a failover series' takeovers cited the kernel's silence, and the polls. */
function reasons(s: OutageSeries): string {
  if (s.system === "keepalived") return "";
  const n = (r: string) => s.cuts.filter((c) => c.reason === r).length;
  return `${n("kernel")} / ${n("polls")}`;
}

/** Renders the markdown results block. */
function markdown(report: Report): string {
  const lines: string[] = [];
  lines.push(`Measured ${report.date} with:`, "", "```sh", report.command, "```", "");
  const m = report.machine;
  lines.push(
    `Machine: ${m.nproc} cores (${m.cpu}), ${m.memory}, kernel ${m.kernel}, Deno ${m.deno}, ` +
      `${m.keepalived}; load average at start ${m.load} (a load near 0 means nothing else ran).`,
  );
  if (report.outages.length) {
    lines.push(
      "",
      "Client-visible outage when the master's switch port goes down (`linkdown`) or forwards " +
        `nothing (\`blackhole\`) (${report.cuts} cut${
          report.cuts === 1 ? "" : "s"
        } each; ms; ratio: median / keepalived's ` +
        "at the same interval and fault):",
      "",
      "| interval | fault | system | config | median | worst | mean | failed cuts | ratio (median) | takeovers on kernel / polls | failback: median / worst outage, glitches |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
    );
    for (const s of report.outages) {
      const ka = report.outages.find((x) =>
        x.system === "keepalived" && x.intervalMs === s.intervalMs && x.fault === s.fault
      );
      const ratio = s.system !== "keepalived" && ka?.medianMs && s.medianMs !== null
        ? (s.medianMs / ka.medianMs).toFixed(2)
        : "";
      lines.push(
        `| ${s.intervalMs} ms | ${s.fault} | ${s.system} | ${s.config} | ${fmt(s.medianMs)} | ` +
          `${fmt(s.worstMs)} | ${fmt(s.meanMs)} | ${s.failedCuts}${s.error ? " (error)" : ""} | ` +
          `${ratio} | ${reasons(s)} | ${fmt(s.failbackMedianMs)} / ${fmt(s.failbackWorstMs)}, ` +
          `${s.failbackGlitches} of ${s.cuts.length} |`,
      );
    }
  }
  if (report.falseRuns.length) {
    const st = report.suite;
    lines.push(
      "",
      `False failover: healthy pair under the stress suite for ${st.stressSeconds} s: ` +
        `\`${report.falseRuns[0]?.stress}\`` +
        (st.stallMs > 0
          ? `, and the master's daemons stopped for ${st.stallMs} ms every ${st.stallEveryMs} ms ` +
            "(SIGSTOP/SIGCONT; keepalived: its VRRP process; failover: faild and the failsh " +
            "supervisor). Stalls: achieved median / worst stop, ms."
          : " (no stalls)."),
      "",
      "| interval | system | false takeovers (start decisions: kernel / polls) | VIP dropped by master | second-holder samples | stalls (median / worst ms) | client outages (longest ms) | failed attempts |",
      "|---|---|---|---|---|---|---|---|",
    );
    for (const f of report.falseRuns) {
      lines.push(
        `| ${f.intervalMs} ms | ${f.system} | ${f.falseTakeovers}${f.error ? " (error)" : ""}` +
          (f.startReasons ? ` (${f.startReasons.kernel} / ${f.startReasons.polls})` : "") + " | " +
          `${f.falseReleases} | ${f.secondHolderEvents} | ${f.stalls.count} (` +
          `${fmt(f.stalls.medianMs)} / ${fmt(f.stalls.worstMs)}) | ${f.client.outages} (` +
          `${fmt(f.client.longestMs)}) | ${f.client.failures}/${f.client.attempts} |`,
      );
    }
  }
  if (report.frontier.length) {
    lines.push(
      "",
      "Frontier: per system, the fastest interval (bisection over " +
        `${report.frontierIntervals.join(", ")} ms) with no false failover under the suite ` +
        "above, and its link-down outage (ratio: median / keepalived's at its own frontier):",
      "",
      "| system | suite runs (interval: false failovers) | frontier | config | link-down median | worst | ratio |",
      "|---|---|---|---|---|---|---|",
    );
    for (const f of report.frontier) {
      const tried = f.tried.map((t) => `${t.intervalMs}: ${t.falseFailovers ?? "error"}`)
        .join(", ");
      lines.push(
        `| ${f.system} | ${tried} | ${f.intervalMs === null ? "none" : `${f.intervalMs} ms`} | ` +
          `${f.config ?? ""} | ${fmt(f.outageMedianMs)} | ${fmt(f.outageWorstMs)} | ` +
          `${f.ratio === null ? "" : f.ratio.toFixed(2)} |`,
      );
    }
  }
  for (const e of report.outages.filter((x) => x.error)) {
    lines.push(
      "",
      `Error in ${e.system} ${e.fault} at ${e.intervalMs} ms: ${e.error?.split("\n")[0]}`,
    );
  }
  for (const e of report.falseRuns.filter((x) => x.error)) {
    lines.push(
      "",
      `Error in ${e.system}'s suite at ${e.intervalMs} ms: ${e.error?.split("\n")[0]}`,
    );
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
  /** Median outage / keepalived's at the same interval and fault. */
  ratios: { system: string; fault: FaultName; intervalMs: number; ratio: number | null }[];
  suite: SuiteOptions;
  falseRuns: FalseRun[];
  frontierIntervals: number[];
  frontier: Frontier[];
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

function parseNames<T extends string>(text: string, what: string, allowed: readonly T[]): T[] {
  const out: T[] = [];
  for (const name of text.split(",").map((s) => s.trim()).filter((s) => s)) {
    if (!(allowed as readonly string[]).includes(name)) {
      throw new RangeError(`Invalid ${what}: ${name}: expected ${allowed.join(", ")}`);
    }
    if (!out.includes(name as T)) out.push(name as T);
  }
  if (out.length === 0) {
    throw new RangeError(`Invalid ${what}: empty: expected ${allowed.join(", ")}`);
  }
  return out;
}

function parseInteger(text: string, what: string, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new RangeError(`Invalid ${what}: ${text}: expected an integer from ${min} to ${max}`);
  }
  return n;
}

const USAGE = `Usage: deno run -A bench/failover_bench.ts [options]

  --cuts N                cuts per system, fault and interval (default 10)
  --intervals LIST        outage intervals, ms (default 1000,50)
  --systems LIST          keepalived,failover,failover+liveness (default all three)
  --faults LIST           linkdown,blackhole (default both)
  --false-intervals LIST  stress suite intervals, ms (default 50,20; "" for none)
  --stress-seconds N      length of each stress suite run, 0 to 1500 (default 30; 0: no
                          suite; the lab kills its processes after 30 minutes)
  --stall-ms N            stop the master's daemons this long (default 200; 0: no stalls)
  --stall-every-ms N      once per this period (default 2000)
  --frontier LIST         intervals for the frontier bisection, ms (default none)
  --liveness IxF[:G]      failover+liveness's host liveness: ping every I ms (10 to 1000), F
                          unanswered make the host silent; G: its stallGrace, ms (default
                          10x5, the sample's stallGrace of 1 s)
  --json                  print JSON instead of the markdown tables
  --out FILE              JSON file (default bench/failover_results.json)
  --docs                  rewrite the results block of docs/performance.md`;

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
        systems: { type: "string", default: SYSTEM_NAMES.join(",") },
        faults: { type: "string", default: FAULT_NAMES.join(",") },
        "false-intervals": { type: "string", default: "50,20" },
        "stress-seconds": { type: "string", default: "30" },
        "arbiter-ttls": { type: "string", default: "" },
        "stall-ms": { type: "string", default: "200" },
        "stall-every-ms": { type: "string", default: "2000" },
        frontier: { type: "string", default: "" },
        liveness: { type: "string", default: `${LIVENESS.intervalMs}x${LIVENESS.fall}` },
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
    console.log(USAGE);
    return 0;
  }
  let cuts: number;
  let suite: SuiteOptions;
  let intervals: number[];
  let falseIntervals: number[];
  let arbiterTtls: number[];
  let frontierIntervals: number[];
  let systems: System[];
  let faults: Fault[];
  try {
    cuts = parseInteger(values.cuts, "--cuts", 1, 200);
    suite = {
      // The lab's processes live at most 30 minutes (tests/lab/exec.ts): a longer suite would
      // measure daemons killed under it.
      stressSeconds: parseInteger(values["stress-seconds"], "--stress-seconds", 0, 1500),
      stallMs: parseInteger(values["stall-ms"], "--stall-ms", 0, 10_000),
      stallEveryMs: parseInteger(values["stall-every-ms"], "--stall-every-ms", 100, 60_000),
    };
    if (suite.stallMs >= suite.stallEveryMs) {
      throw new RangeError(
        `Invalid --stall-ms: ${suite.stallMs}: expected less than --stall-every-ms ` +
          `(${suite.stallEveryMs})`,
      );
    }
    intervals = values.intervals === "" ? [] : parseList(values.intervals, "--intervals");
    falseIntervals = values["false-intervals"] === "" || suite.stressSeconds === 0
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
    frontierIntervals = values.frontier === ""
      ? []
      : [...new Set(parseList(values.frontier, "--frontier"))].sort((a, b) => a - b);
    if (frontierIntervals.length && suite.stressSeconds === 0) {
      throw new RangeError("Invalid --frontier: it needs the stress suite (--stress-seconds > 0)");
    }
    const known = systemsWith(parseLiveness(values.liveness));
    systems = parseNames(values.systems, "--systems", SYSTEM_NAMES).map((n) => known[n]);
    faults = parseNames(values.faults, "--faults", FAULT_NAMES).map((n) => FAULTS[n]);
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  const why = await labUnavailable();
  if (why) {
    console.error(`Cannot run the failover benchmark: ${why}`);
    return 2;
  }
  const log = (s: string) => console.error(s);
  const report: Report = {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    command: `deno run -A bench/failover_bench.ts ${
      args.map((a) => /^[\w.,=+\/-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`).join(" ")
    }`.trim(),
    machine: await machine(),
    cuts,
    outages: [],
    ratios: [],
    suite,
    falseRuns: [],
    frontierIntervals,
    frontier: [],
  };
  const started = Date.now();
  // Each measurement is made once: the frontier reuses what the earlier parts measured.
  const outage = async (s: System, f: Fault, ms: number): Promise<OutageSeries> => {
    const had = report.outages.find((x) =>
      x.system === s.name && x.fault === f.name && x.intervalMs === ms
    );
    if (had) return had;
    log(`outage: ${s.name}, ${f.name} at ${ms} ms (${s.describe(ms)})`);
    const series = await measureOutages(s, f, ms, cuts, log);
    report.outages.push(series);
    return series;
  };
  const suiteRun = async (s: System, ms: number): Promise<FalseRun> => {
    const had = report.falseRuns.find((x) => x.system === s.name && x.intervalMs === ms);
    if (had) return had;
    log(`stress suite: ${s.name} at ${ms} ms, ${suite.stressSeconds} s`);
    const r = await falseFailover(s, ms, suite, log);
    report.falseRuns.push(r);
    return r;
  };
  for (const ms of intervals) {
    const arbiters = arbiterTtls.map((t) =>
      failoverSystem(`failover+etcd TTL ${t / 1000} s`, null, t)
    );
    for (const f of faults) {
      for (const s of [...systems, ...arbiters]) await outage(s, f, ms);
    }
  }
  for (const ms of falseIntervals) {
    for (const s of systems) await suiteRun(s, ms);
  }
  if (frontierIntervals.length) {
    for (const s of systems) {
      const tried: Frontier["tried"] = [];
      const best = await fastestPassing(frontierIntervals, async (ms) => {
        const n = falseFailovers(await suiteRun(s, ms));
        tried.push({ intervalMs: ms, falseFailovers: n });
        return n === 0;
      });
      tried.sort((a, b) => a.intervalMs - b.intervalMs);
      const series = best === null ? null : await outage(s, FAULTS.linkdown, best);
      report.frontier.push({
        system: s.name,
        tried,
        intervalMs: best,
        config: best === null ? null : s.describe(best),
        outageMedianMs: series?.medianMs ?? null,
        outageWorstMs: series?.worstMs ?? null,
        ratio: null,
      });
    }
    const ka = report.frontier.find((f) => f.system === "keepalived");
    for (const f of report.frontier) {
      if (f.system !== "keepalived" && ka?.outageMedianMs && f.outageMedianMs !== null) {
        f.ratio = f.outageMedianMs / ka.outageMedianMs;
      }
    }
  }
  for (const s of report.outages) {
    if (s.system === "keepalived") continue;
    const ka = report.outages.find((x) =>
      x.system === "keepalived" && x.fault === s.fault && x.intervalMs === s.intervalMs
    );
    report.ratios.push({
      system: s.system,
      fault: s.fault,
      intervalMs: s.intervalMs,
      ratio: ka?.medianMs && s.medianMs !== null ? s.medianMs / ka.medianMs : null,
    });
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
