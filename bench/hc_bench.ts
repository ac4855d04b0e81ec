/**
 * How many checks one hc sustains: N HTTP checks at a fixed interval against a local server,
 * with hc's CPU share (from /proc/PID/stat) and memory (VmRSS, VmHWM from /proc/PID/status).
 *
 * ```sh
 * deno run -A bench/hc_bench.ts --checks 100,500,1000 --interval 1s --seconds 30
 * ```
 *
 * hc runs as its own process, as the `hc` task runs it (`deno run --v8-flags=HC_V8_FLAGS -A
 * daemon/hc/hc.ts`; `--hc-v8-flags F` other V8 flags, `--hc-v8-flags=` none, `--hc PATH`
 * another hc.ts, e.g. an older checkout's, to compare in one session); the HTTP server the checks
 * hit runs in this process. For each N it waits until every check is UP, lets 3 s pass, then
 * measures for `--seconds`: probes completed per second (target N / interval), checks that left
 * UP (a sign hc could not keep up), CPU share of one core, RSS. Bounded: each N at most seconds +
 * 90 s.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseDuration } from "../lib/types.ts";

const HC = new URL("../daemon/hc/hc.ts", import.meta.url).pathname;

/**
 * The V8 flags of the `hc` task in deno.json: a 1 MiB young generation, and V8's heuristics for
 * a small heap (docs/performance.md, "hc").
 */
const HC_V8_FLAGS = "--max-semi-space-size=1,--optimize-for-size";

interface Row {
  checks: number;
  intervalMs: number;
  targetPerS: number;
  probesPerS: number;
  notUp: number;
  failedRuns: number;
  cpuPct: number;
  rssMiB: number;
  hwmMiB: number;
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

function cpuTicks(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the ")" of the command name: state is field 3; utime 14, stime 15.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(rest[11]) + Number(rest[12]);
}

function memKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(
    Deno.readTextFileSync(`/proc/${pid}/status`),
  );
  return m ? Number(m[1]) : NaN;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = (l.addr as Deno.NetAddr).port;
  l.close();
  return p;
}

async function snapshot(url: string): Promise<{ runs: number; failedRuns: number; up: number }> {
  const s = await (await fetch(`${url}/v1/checks`, { signal: AbortSignal.timeout(10_000) })).json();
  let runs = 0;
  let failedRuns = 0;
  for (const c of s.checks) {
    runs += c.runs;
    failedRuns += c.failedRuns;
  }
  return { runs, failedRuns, up: s.summary.UP };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function measure(
  n: number,
  intervalMs: number,
  seconds: number,
  target: string,
  v8Flags: string,
  hc: string,
): Promise<Row> {
  const dir = await Deno.makeTempDir({ prefix: "hc_bench_" });
  const statusPort = freePort();
  const lines = [
    `defaults interval=${intervalMs}ms timeout=${Math.min(1000, intervalMs)}ms rise=1 fall=1`,
  ];
  for (let i = 0; i < n; i++) {
    lines.push(`c${i}:`, `\thttp url=${target}/c${i} status=200 body=/ok/`);
  }
  await Deno.writeTextFile(`${dir}/Hcfile`, lines.join("\n") + "\n");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...(v8Flags ? [`--v8-flags=${v8Flags}`] : []),
      "-A",
      hc,
      `${dir}/Hcfile`,
      "--listen",
      `127.0.0.1:${statusPort}`,
      "--log-level",
      "error",
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const url = `http://127.0.0.1:${statusPort}`;
  try {
    const deadline = Date.now() + 60_000;
    while (true) {
      try {
        if ((await snapshot(url)).up === n) break;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) throw new Error(`Not all ${n} checks came UP within 60 s`);
      await sleep(250);
    }
    await sleep(3000);
    const hz = clockTicks();
    const t0 = performance.now();
    const c0 = cpuTicks(child.pid);
    const s0 = await snapshot(url);
    let minUp = n;
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end) {
      await sleep(1000);
      minUp = Math.min(minUp, (await snapshot(url)).up);
    }
    const s1 = await snapshot(url);
    const c1 = cpuTicks(child.pid);
    const wall = (performance.now() - t0) / 1000;
    return {
      checks: n,
      intervalMs,
      targetPerS: n / (intervalMs / 1000),
      probesPerS: (s1.runs - s0.runs) / wall,
      notUp: n - minUp,
      failedRuns: s1.failedRuns - s0.failedRuns,
      cpuPct: ((c1 - c0) / hz) / wall * 100,
      rssMiB: memKiB(child.pid, "VmRSS") / 1024,
      hwmMiB: memKiB(child.pid, "VmHWM") / 1024,
    };
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    await child.status;
    clearTimeout(timer);
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      checks: { type: "string", default: "100,500" },
      interval: { type: "string", default: "1s" },
      seconds: { type: "string", default: "20" },
      "hc-v8-flags": { type: "string", default: HC_V8_FLAGS },
      hc: { type: "string", default: HC },
    },
  });
  const counts = values.checks.split(",").map(Number);
  if (counts.some((c) => !Number.isInteger(c) || c < 1 || c > 5000)) {
    console.error("hc_bench: --checks must be whole numbers from 1 to 5000, comma-separated");
    Deno.exit(64);
  }
  const intervalMs = parseDuration(values.interval);
  const seconds = Number(values.seconds);
  if (!(seconds >= 5 && seconds <= 300)) {
    console.error("hc_bench: --seconds must be 5 to 300");
    Deno.exit(64);
  }
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("ok\n"),
  );
  const target = `http://127.0.0.1:${server.addr.port}`;
  console.log(`cores: ${navigator.hardwareConcurrency}, deno ${Deno.version.deno}`);
  console.log(
    "| checks | interval | target probes/s | probes/s done | checks that left UP | failed probes | hc CPU (% of one core) | RSS MiB | peak RSS MiB |",
  );
  console.log("|---|---|---|---|---|---|---|---|---|");
  try {
    for (const n of counts) {
      let r: Row;
      try {
        r = await measure(n, intervalMs, seconds, target, values["hc-v8-flags"], values.hc);
      } catch (e) {
        // One count that cannot be measured (e.g. checks never all UP on a loaded machine)
        // must not lose the rows of the others.
        console.log(`| ${n} | ${intervalMs} ms | not measured: ${(e as Error).message} |`);
        continue;
      }
      console.log(
        `| ${r.checks} | ${r.intervalMs} ms | ${r.targetPerS.toFixed(0)} | ${
          r.probesPerS.toFixed(1)
        } | ${r.notUp} | ${r.failedRuns} | ${r.cpuPct.toFixed(1)} | ${r.rssMiB.toFixed(0)} | ${
          r.hwmMiB.toFixed(0)
        } |`,
      );
    }
  } finally {
    await server.shutdown();
  }
}
