/**
 * Figures of the hostile-script defences (docs/sandbox.md, docs/security.md):
 *
 * - `flood SECONDS`: a handler returns, then its child writes refused requests in a tight loop
 *   for SECONDS without reading a reply, and exits. Prints how long the supervisor's event loop
 *   was blocked at most (a 10 ms interval timer's worst lateness) and how many requests it
 *   handled.
 * - `rss SERVICES`: a script declaring SERVICES services this host takes part in, started with
 *   the default options; prints the number of children and their summed RSS.
 *
 * ```sh
 * deno run -A bench/sandbox_hostile_bench.ts flood 2
 * deno run -A bench/sandbox_hostile_bench.ts rss 120
 * ```
 *
 * @module
 */
import { createSandbox } from "../shell/sandbox/sandbox.ts";
import { parsePolicy } from "../shell/sandbox/policy.ts";
import { Logger } from "../lib/log.ts";

const MOD = new URL("../mod.ts", import.meta.url).href;

function call(service: string) {
  return { service, kind: "start" as const, self: "alpha", reason: "bench", peers: {} };
}

/** The pids of this process's direct children (the sandboxed scripts). */
function childPids(): number[] {
  const pids: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === Deno.pid) pids.push(Number(e.name));
    } catch {
      // gone
    }
  }
  return pids;
}

function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

async function setup(script: string) {
  const dir = await Deno.makeTempDir({ prefix: "failsh_hostile_bench_" });
  await Deno.writeTextFile(`${dir}/failover.ts`, script);
  const policy = parsePolicy(
    JSON.stringify({ host: "alpha", netDriver: "simulated", audit: `${dir}/audit.log` }),
    `${dir}/policy.json`,
  );
  const sandbox = createSandbox(`${dir}/failover.ts`, policy, {
    onOutput: () => {},
    onLog: () => {},
    logger: new Logger({ level: "error" }),
    // 120 children starting at once on two busy cores may need more than the default 20 s.
    startTimeoutMs: 180_000,
  });
  return { dir, sandbox };
}

async function flood(seconds: number): Promise<void> {
  const { dir, sandbox } = await setup(`
import { host, service } from ${JSON.stringify(MOD)};
host("alpha", { address: "127.0.0.1" });
service("flood", { masters: ["alpha"], interval: "1s", stop: async () => "FAIL",
  async start() {
    setTimeout(() => {
      const enc = new TextEncoder();
      const end = Date.now() + ${seconds * 1000};
      for (let id = 1; Date.now() < end; id++) {
        const line = enc.encode("\\x1eFAILSH1 " + JSON.stringify({ t: "req", id, inv: null,
          op: "takeover", args: { address: "203.0.113.1/32", device: "eth0" } }) + "\\n");
        for (let off = 0; off < line.length;) off += Deno.stdout.writeSync(line.subarray(off));
      }
      Deno.exit(0);
    }, 0);
    return "UP";
  } });
`);
  try {
    await sandbox.start();
    let worst = 0;
    let last = performance.now();
    const tick = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last - 10);
      last = now;
    }, 10);
    const started = performance.now();
    await sandbox.invoke(call("flood"), 5000);
    while (sandbox.counters().children.ended < 1) await new Promise((r) => setTimeout(r, 50));
    // Let whatever the supervisor still has queued run before reading the worst lateness.
    await new Promise((r) => setTimeout(r, 500));
    clearInterval(tick);
    const c = sandbox.counters();
    console.log(
      JSON.stringify({
        floodSeconds: seconds,
        requestsRefused: c.requests.takeover.refused,
        childGoneAfterMs: Math.round(performance.now() - started - 500),
        worstLoopBlockMs: Math.round(worst),
      }),
    );
  } finally {
    await sandbox.close();
    await Deno.remove(dir, { recursive: true });
  }
}

async function rss(services: number): Promise<void> {
  const lines = [`import { host, service } from ${JSON.stringify(MOD)};`];
  lines.push(`host("alpha", { address: "127.0.0.1" });`);
  for (let i = 0; i < services; i++) {
    lines.push(
      `service("s${i}", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });`,
    );
  }
  const { dir, sandbox } = await setup(lines.join("\n"));
  try {
    await sandbox.start();
    // Every service's handler once, so lazily started children are counted too.
    for (let i = 0; i < services; i++) await sandbox.invoke(call(`s${i}`), 10_000);
    const pids = childPids();
    const total = pids.reduce((s, p) => s + rssKiB(p), 0);
    console.log(
      JSON.stringify({
        services,
        children: pids.length,
        rssMiB: Math.round(total / 1024),
        perChildMiB: Math.round(total / 1024 / Math.max(1, pids.length)),
      }),
    );
  } finally {
    await sandbox.close();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const [what, n] = Deno.args;
  if (what === "flood") await flood(Number(n ?? 2));
  else if (what === "rss") await rss(Number(n ?? 120));
  else {
    console.error("Usage: sandbox_hostile_bench.ts flood SECONDS | rss SERVICES");
    Deno.exit(64);
  }
}
