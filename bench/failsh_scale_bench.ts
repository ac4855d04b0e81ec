/**
 * failsh at scale: one failsh supervising N services over 4 peers, each peer a real faild
 * process on loopback (its own port), the script's children real sandboxed deno processes.
 *
 * ```sh
 * deno run -A bench/failsh_scale_bench.ts --services 100,1000 --interval 100ms --seconds 60
 * ```
 *
 * The cluster: this host `self` (its own faild) and peers `p0`..`p3` (a faild each, no failsh on
 * them: the bench writes their records). Service _i_ is mastered by `self` when _i_ is even
 * (`self` starts it, its peer is the slave and reports `FAIL`), and by its peer when _i_ is odd
 * (the peer's faild says `UP`, `self` is the standby); the peer of service _i_ is
 * `p((i >> 1) mod 4)`. Handlers return at once (no address, no program): what is measured is the
 * steady state a big site spends its days in, polls and decisions.
 *
 * `--children K` sets the policy's `children` (the children the handlers share; default the
 * policy's default, 4).
 *
 * For each N: start the five faild, write the peers' records, start failsh (`deno run -A
 * shell/failsh.ts`, as the `failsh` task), wait until every service is decided (even ones `UP`,
 * odd ones standing by with every host reachable), let `--warmup` pass, then measure for
 * `--seconds`: CPU of the supervisor and of its children (utime + stime from /proc/PID/stat, per
 * wall second, % of one core), their `VmRSS` and PSS (`/proc/PID/smaps_rollup`: shared pages
 * such as the deno binary's counted once across processes), polls per second, failed polls, and
 * the poll latency p50/p99 (bucket bounds of failsh's `failsh_poll_latency_ms` histogram over the
 * window). Bounded: each N at most seconds + warmup + 120 s.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseDuration } from "../lib/types.ts";
import { FaildClient } from "../lib/client.ts";
import { FAILD_V8_FLAGS, type FaildProcess, spawnFaild } from "../tests/_faild_process.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const PEERS = ["p0", "p1", "p2", "p3"] as const;
const KEY = "failsh-scale-bench-secret";

/** The V8 flags of the `failsh` task in deno.json. */
const FAILSH_V8_FLAGS = "--max-semi-space-size=1";

/** One measured configuration. */
export interface ScaleRow {
  /** Services declared. */
  services: number;
  /** Their poll interval, ms. */
  intervalMs: number;
  /** Supervisor CPU, % of one core. */
  supervisorCpu: number;
  /** CPU of the script's children together, % of one core. */
  childrenCpu: number;
  /** How many children. */
  children: number;
  /** Supervisor VmRSS, MiB. */
  supervisorRss: number;
  /** Children's VmRSS summed, MiB. */
  childrenRss: number;
  /** Supervisor and children, PSS summed, MiB. */
  totalPss: number;
  /** Polls answered per second (all hosts). */
  pollsPerS: number;
  /** Polls failed or missed in the window. */
  pollFailures: number;
  /** Poll latency median and p99, ms (upper bounds of the histogram's buckets). */
  p50: number;
  /** See p50. */
  p99: number;
  /** The faild processes' CPU together, % of one core. */
  faildCpu: number;
}

function clockTicks(): number {
  try {
    const out = new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).outputSync();
    const n = Number(new TextDecoder().decode(out.stdout).trim());
    return n > 0 ? n : 100;
  } catch {
    return 100;
  }
}

function statFields(pid: number): string[] | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the ")" of the command name: state is field 3, ppid 4, utime 14, stime 15.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

function cpuTicks(pid: number): number {
  const f = statFields(pid);
  return f ? Number(f[11]) + Number(f[12]) : NaN;
}

/** Every live descendant of a process. */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const f = statFields(Number(e.name));
    if (f) parent.set(Number(e.name), Number(f[1]));
  }
  const out: number[] = [];
  const frontier = [root];
  while (frontier.length > 0) {
    const p = frontier.pop()!;
    for (const [pid, pp] of parent) {
      if (pp === p) {
        out.push(pid);
        frontier.push(pid);
      }
    }
  }
  return out;
}

function kib(path: string, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(Deno.readTextFileSync(path));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = (l.addr as Deno.NetAddr).port;
  l.close();
  return p;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The failover script of the bench cluster. */
function scriptText(n: number, intervalMs: number, ports: Record<string, number>): string {
  const hosts = Object.entries(ports).map(([name, port]) =>
    `host(${JSON.stringify(name)}, { address: "127.0.0.1", port: ${port}, key: "k" });`
  );
  return `import { host, service } from ${JSON.stringify(`${ROOT}mod.ts`)};
${hosts.join("\n")}
const peers = ${JSON.stringify(PEERS)};
for (let i = 0; i < ${n}; i++) {
  const peer = peers[(i >> 1) % 4];
  const mine = i % 2 === 0;
  service(\`s\${i}\`, {
    masters: [mine ? "self" : peer],
    slaves: [mine ? peer : "self"],
    interval: ${intervalMs},
    start: async () => "UP",
    reclaim: async () => "UP",
    stop: async () => "FAIL",
  });
}
`;
}

/** Sums a histogram's buckets across hosts: le -> cumulative count. */
function pollBuckets(metrics: string): { buckets: Map<number, number>; failures: number } {
  const buckets = new Map<number, number>();
  let failures = 0;
  for (const line of metrics.split("\n")) {
    let m = /^failsh_poll_latency_ms_bucket\{.*le="([^"]+)"\} (\d+(?:\.\d+)?)$/.exec(line);
    if (m) {
      const le = m[1] === "+Inf" ? Infinity : Number(m[1]);
      buckets.set(le, (buckets.get(le) ?? 0) + Number(m[2]));
      continue;
    }
    m = /^failsh_poll_failures_total\{.*\} (\d+)$/.exec(line);
    if (m) failures += Number(m[1]);
  }
  return { buckets, failures };
}

function quantile(before: Map<number, number>, after: Map<number, number>, q: number): number {
  const les = [...after.keys()].sort((a, b) => a - b);
  const total = (after.get(Infinity) ?? 0) - (before.get(Infinity) ?? 0);
  if (total <= 0) return NaN;
  for (const le of les) {
    if ((after.get(le) ?? 0) - (before.get(le) ?? 0) >= q * total) return le;
  }
  return Infinity;
}

async function measure(
  n: number,
  intervalMs: number,
  seconds: number,
  warmupS: number,
  v8Flags: string,
  denoArgs: string[],
  children: number | null,
): Promise<ScaleRow> {
  const dir = await Deno.makeTempDir({ prefix: "failsh_scale_" });
  const faild: Record<string, FaildProcess> = {};
  const clients: FaildClient[] = [];
  let failsh: Deno.ChildProcess | null = null;
  try {
    await Deno.writeTextFile(`${dir}/community`, `*  ${KEY}  RW\n`);
    await Deno.writeTextFile(`${dir}/key`, `${KEY}\n`, { mode: 0o600 });
    for (const name of ["self", ...PEERS]) {
      faild[name] = await spawnFaild(["--name", name, "-c", `${dir}/community`], {
        v8Flags: FAILD_V8_FLAGS,
      });
    }
    const ports = Object.fromEntries(
      Object.entries(faild).map(([name, f]) => [name, Number(new URL(f.url).port)]),
    );
    // The peers' own view of their services, as their failsh would have written it.
    for (const [p, peer] of PEERS.entries()) {
      const client = new FaildClient(faild[peer]!.url, { key: KEY });
      clients.push(client);
      for (let i = 0; i < n; i++) {
        if (((i >> 1) % 4) !== p) continue;
        await client.set(`s${i}`, i % 2 === 0 ? "FAIL" : "UP", { detail: "bench" });
      }
    }
    const monitorPort = freePort();
    await Deno.writeTextFile(`${dir}/failover.ts`, scriptText(n, intervalMs, ports));
    await Deno.writeTextFile(
      `${dir}/policy.json`,
      JSON.stringify({
        host: "self",
        faild: { url: faild.self!.url, key: "k" },
        keys: { k: { file: `${dir}/key` } },
        addresses: [],
        netDriver: "simulated",
        monitor: `127.0.0.1:${monitorPort}`,
        audit: `${dir}/audit.log`,
        dumpFile: `${dir}/dump.json`,
        ...(children === null ? {} : { children }),
      }),
    );
    failsh = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...(v8Flags ? [`--v8-flags=${v8Flags}`] : []),
        ...denoArgs,
        "-A",
        `${ROOT}shell/failsh.ts`,
        "--policy",
        `${dir}/policy.json`,
        "--log-level",
        "error",
        `${dir}/failover.ts`,
      ],
      stdout: "null",
      stderr: "inherit",
      stdin: "null",
    }).spawn();
    const monitor = `http://127.0.0.1:${monitorPort}`;
    const deadline = Date.now() + 120_000;
    let last = "";
    while (true) {
      try {
        const text = await (await fetch(`${monitor}/v1/snapshot`, {
          signal: AbortSignal.timeout(5000),
        })).text();
        last = text;
        const s = JSON.parse(text) as {
          services: { name: string; state: string }[];
          hosts: { name: string; reachable: boolean }[];
        };
        const mineUp = s.services.filter((x) => Number(x.name.slice(1)) % 2 === 0)
          .every((x) => x.state === "UP");
        if (
          s.services.length === n && mineUp && s.hosts.every((h) => h.reachable) &&
          s.services.filter((x) => x.state === "UP").length === Math.ceil(n / 2)
        ) break;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) {
        throw new Error(`failsh did not settle ${n} services in 120 s: ${last.slice(0, 2000)}`);
      }
      await sleep(500);
    }
    await sleep(warmupS * 1000);
    const hz = clockTicks();
    const sup = failsh.pid;
    const kids = descendants(sup);
    const faildPids = Object.values(faild).map((f) => f.pid);
    const sum = (pids: number[]) => pids.reduce((a, p) => a + cpuTicks(p), 0);
    const m0 = pollBuckets(await (await fetch(`${monitor}/metrics`)).text());
    const t0 = performance.now();
    const c0 = { sup: cpuTicks(sup), kids: sum(kids), faild: sum(faildPids) };
    await sleep(seconds * 1000);
    const c1 = { sup: cpuTicks(sup), kids: sum(kids), faild: sum(faildPids) };
    const wall = (performance.now() - t0) / 1000;
    const m1 = pollBuckets(await (await fetch(`${monitor}/metrics`)).text());
    const pct = (ticks: number) => ticks / hz / wall * 100;
    const polls = (m1.buckets.get(Infinity) ?? 0) - (m0.buckets.get(Infinity) ?? 0);
    const pss = [sup, ...kids].reduce((a, p) => a + kib(`/proc/${p}/smaps_rollup`, "Pss"), 0);
    return {
      services: n,
      intervalMs,
      supervisorCpu: pct(c1.sup - c0.sup),
      childrenCpu: pct(c1.kids - c0.kids),
      children: kids.length,
      supervisorRss: kib(`/proc/${sup}/status`, "VmRSS") / 1024,
      childrenRss: kids.reduce((a, p) => a + kib(`/proc/${p}/status`, "VmRSS"), 0) / 1024,
      totalPss: pss / 1024,
      pollsPerS: polls / wall,
      pollFailures: m1.failures - m0.failures,
      p50: quantile(m0.buckets, m1.buckets, 0.5),
      p99: quantile(m0.buckets, m1.buckets, 0.99),
      faildCpu: pct(c1.faild - c0.faild),
    };
  } finally {
    if (failsh) {
      try {
        failsh.kill("SIGTERM");
      } catch { /* gone */ }
      const t = setTimeout(() => {
        try {
          failsh!.kill("SIGKILL");
        } catch { /* gone */ }
      }, 15_000);
      await failsh.status;
      clearTimeout(t);
    }
    for (const c of clients) c.close();
    await Promise.all(Object.values(faild).map((f) => f.stop()));
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      services: { type: "string", default: "100" },
      interval: { type: "string", default: "100ms" },
      seconds: { type: "string", default: "60" },
      warmup: { type: "string", default: "10" },
      runs: { type: "string", default: "1" },
      "failsh-v8-flags": { type: "string", default: FAILSH_V8_FLAGS },
      "failsh-deno-args": { type: "string", default: "" },
      children: { type: "string" },
    },
  });
  const counts = values.services.split(",").map(Number);
  if (counts.some((c) => !Number.isInteger(c) || c < 1 || c > 5000)) {
    console.error("failsh_scale_bench: --services must be whole numbers from 1 to 5000");
    Deno.exit(64);
  }
  const intervalMs = parseDuration(values.interval);
  const seconds = Number(values.seconds);
  const warmup = Number(values.warmup);
  const runs = Number(values.runs);
  if (!(seconds >= 5 && seconds <= 600) || !(warmup >= 0 && warmup <= 120)) {
    console.error("failsh_scale_bench: --seconds must be 5 to 600 and --warmup 0 to 120");
    Deno.exit(64);
  }
  if (!(Number.isInteger(runs) && runs >= 1 && runs <= 20)) {
    console.error("failsh_scale_bench: --runs must be 1 to 20");
    Deno.exit(64);
  }
  const children = values.children === undefined ? null : Number(values.children);
  if (children !== null && !(Number.isInteger(children) && children >= 1 && children <= 16)) {
    console.error("failsh_scale_bench: --children must be 1 to 16 (the policy's children)");
    Deno.exit(64);
  }
  console.log(
    `cores: ${navigator.hardwareConcurrency}, deno ${Deno.version.deno}, load ${
      Deno.loadavg().map((x) => x.toFixed(2)).join(" ")
    }`,
  );
  console.log(
    "| services | interval | supervisor CPU % | children CPU % (n) | supervisor RSS MiB | children RSS MiB | PSS together MiB | polls/s | failed polls | poll p50 / p99 ms | 5 faild CPU % |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|---|---|");
  for (const n of counts) {
    for (let r = 0; r < runs; r++) {
      const x = await measure(
        n,
        intervalMs,
        seconds,
        warmup,
        values["failsh-v8-flags"],
        values["failsh-deno-args"].split(" ").filter((a) => a !== ""),
        children,
      );
      console.log(
        `| ${x.services} | ${x.intervalMs} ms | ${x.supervisorCpu.toFixed(1)} | ${
          x.childrenCpu.toFixed(1)
        } (${x.children}) | ${x.supervisorRss.toFixed(0)} | ${x.childrenRss.toFixed(0)} | ${
          x.totalPss.toFixed(0)
        } | ${x.pollsPerS.toFixed(1)} | ${x.pollFailures} | ≤ ${x.p50} / ≤ ${x.p99} | ${
          x.faildCpu.toFixed(1)
        } |`,
      );
    }
  }
}
