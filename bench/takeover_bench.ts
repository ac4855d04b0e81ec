/**
 * Decision → address added → first announcement on the wire, for the `linux` network driver.
 *
 * ```sh
 * deno run -A bench/takeover_bench.ts [--n 40] [--paths spawn,fast,sandbox] [--families 4,6] [--json]
 *   [--out FILE]
 * ```
 *
 * Two namespaces joined by a veth pair: the holder runs the driver (a worker process started with
 * `ip netns exec`, as failsh runs inside its host), the client runs `tcpdump -tt` on its side of
 * the link. For each takeover the worker releases the address, waits, notes the decision time
 * (just before `takeover()` is called) and takes it over with one announcement. The address's
 * appearance is timed by `ip -ts monitor address` in the holder's namespace (the kernel's view),
 * the first gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) by the client's
 * capture. Medians, p90 and worst over `--n` takeovers per path and family.
 *
 * Paths: `spawn` is the driver with its hot path turned off (`ip addr add` and `arping` started
 * as processes, the kernel's `ndisc_notify` advertisement for IPv6), `fast` the long-lived
 * `ip -batch` and the prepared packet socket, `sandbox` the fast driver behind failsh's sandbox
 * (the decision is the start handler's invocation; the script calls `ctx.takeover()`: add the
 * child's round trip, the policy check and its audit record). Needs root, iproute2 and tcpdump.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { LinuxNetDriver } from "../shell/sandbox/netops.ts";
import { parseCidr } from "../shell/sandbox/cidr.ts";
import { AuditLog } from "../shell/sandbox/audit.ts";

/** One takeover as the worker saw it (epoch ms with fractions). */
interface WorkerSample {
  decided: number;
  returned: number;
  /** The driver's own takeover record, when it writes one. */
  record: Record<string, unknown> | null;
}

/** The outcome of one path and family. */
interface Result {
  path: string;
  family: 4 | 6;
  n: number;
  /** ms from decision to the address in the kernel (`ip monitor`). */
  added: Stats;
  /** ms from decision to the first announcement captured on the client. */
  announced: Stats;
  /** ms from decision to `takeover()` resolving. */
  returned: Stats;
  /** Takeovers whose announcement was not captured within 1 s. */
  missed: number;
  /** The driver's own audit timings (`addedMs`, `announcedMs` of its takeover record). */
  audit: { added: Stats; announced: Stats };
}

interface Stats {
  median: number;
  p90: number;
  worst: number;
}

function now(): number {
  return performance.timeOrigin + performance.now();
}

function stats(xs: number[]): Stats {
  if (xs.length === 0) return { median: NaN, p90: NaN, worst: NaN };
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))] as number;
  const round = (x: number) => Math.round(x * 100) / 100;
  const mid = s.length % 2 === 1
    ? s[(s.length - 1) / 2] as number
    : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
  return { median: round(mid), p90: round(at(0.9)), worst: round(s[s.length - 1] as number) };
}

async function sh(args: string[], check = true): Promise<string> {
  const out = await new Deno.Command("/usr/sbin/ip", { args, stdout: "piped", stderr: "piped" })
    .output();
  if (check && !out.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Lines of a child's stream, each with the epoch time it was read. */
function lines(stream: ReadableStream<Uint8Array>, into: string[]): Promise<void> {
  return (async () => {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      rest += chunk;
      let nl;
      while ((nl = rest.indexOf("\n")) >= 0) {
        into.push(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
      }
    }
  })();
}

async function worker(
  args: { path: string; family: string; n: string; dev: string; vip: string },
): Promise<void> {
  const records: Record<string, unknown>[] = [];
  const audit = new AuditLog({
    script: "/bench.ts",
    sink: (l) => {
      const r = JSON.parse(l);
      // The driver's record (with its timings), not the sandbox's "allowed" one.
      if (r.request?.op === "takeover" && "change" in r.request) records.push(r.request);
    },
  });
  const fast = args.path !== "spawn";
  const net = new LinuxNetDriver({
    audit,
    ipBatch: fast,
    packetAnnouncer: fast,
    onError: (m) => console.error(m),
  });
  const vip = parseCidr(args.vip);
  if (vip === null) throw new Error(`bad --vip ${args.vip}`);
  if (args.path === "sandbox") return await viaSandbox(args, net, audit, records, vip.text);
  const samples: WorkerSample[] = [];
  // One takeover to warm up (the batch child, the socket, deno's own first-call costs).
  await net.takeover(vip, args.dev, { arpCount: 0, refreshMs: 0, service: "bench" });
  for (let i = 0; i < Number(args.n); i++) {
    await net.release(vip, args.dev);
    await new Promise((r) => setTimeout(r, 120));
    records.length = 0;
    const decided = now();
    await net.takeover(vip, args.dev, { arpCount: 1, refreshMs: 0, service: "bench" });
    const returned = now();
    await new Promise((r) => setTimeout(r, 80));
    samples.push({ decided, returned, record: records[0] ?? null });
  }
  await net.release(vip, args.dev);
  await net.close();
  console.log(JSON.stringify(samples));
}

/**
 * The `sandbox` path: the fast driver behind failsh's sandbox, so the decision is the handler's
 * invocation (as the scheduler does it) and the takeover a script's `ctx.takeover()`: one round
 * trip to the sandboxed child, the policy check and its audit record on top of the driver.
 */
async function viaSandbox(
  args: { n: string; dev: string; vip: string; family: string },
  net: LinuxNetDriver,
  audit: AuditLog,
  records: Record<string, unknown>[],
  vip: string,
): Promise<void> {
  const { call, makeHarness } = await import("../tests/_sandbox_util.ts");
  const prefix = args.family === "6" ? "2001:db8:211::/64" : "198.18.211.0/24";
  const h = await makeHarness(
    `
import { host, service } from "MOD";
host("alpha", { address: "127.0.0.1" });
service("vip", {
  masters: ["alpha"], interval: "1s",
  async start(ctx) {
    await ctx.takeover("${vip}", { device: "${args.dev}", arpCount: 1, refreshMs: 0 });
    return "UP";
  },
  async stop(ctx) {
    await ctx.release("${vip}", { device: "${args.dev}" });
    return "FAIL";
  },
});
`,
    {
      netDriver: "linux",
      addresses: [{ prefix, devices: [args.dev] }],
      arp: { count: 1, refreshMs: 0 },
    },
    { net, audit },
  );
  const samples: WorkerSample[] = [];
  try {
    await h.sandbox.start();
    await h.sandbox.invoke(call("vip"), 10_000); // warm-up
    for (let i = 0; i < Number(args.n); i++) {
      await h.sandbox.invoke(call("vip", "stop"), 10_000);
      await new Promise((r) => setTimeout(r, 120));
      records.length = 0;
      const decided = now();
      await h.sandbox.invoke(call("vip"), 10_000);
      const returned = now();
      await new Promise((r) => setTimeout(r, 80));
      samples.push({ decided, returned, record: records[0] ?? null });
    }
    await h.sandbox.invoke(call("vip", "stop"), 10_000);
  } finally {
    await h.close();
    await net.close();
  }
  console.log(JSON.stringify(samples));
}

async function measure(
  path: string,
  family: 4 | 6,
  n: number,
  tag: string,
): Promise<Result> {
  const nsH = `fotk${tag}-h`;
  const nsC = `fotk${tag}-c`;
  const devH = `tkh${tag}`;
  const devC = `tkc${tag}`;
  const vip = family === 4 ? "198.18.211.100/24" : "2001:db8:211::100/64";
  const vipIp = vip.split("/")[0] as string;
  const children: Deno.ChildProcess[] = [];
  try {
    await sh(["netns", "add", nsH]);
    await sh(["netns", "add", nsC]);
    await sh([
      "link",
      "add",
      devH,
      "netns",
      nsH,
      "type",
      "veth",
      "peer",
      "name",
      devC,
      "netns",
      nsC,
    ]);
    await sh(["-n", nsH, "link", "set", devH, "up"]);
    await sh(["-n", nsC, "link", "set", devC, "up"]);
    await sh(["-n", nsC, "addr", "add", "198.18.211.1/24", "dev", devC]);
    await sh(["-n", nsC, "-6", "addr", "add", "2001:db8:211::1/64", "dev", devC, "nodad"]);
    const tcpdumpOut: string[] = [];
    const tcpdumpErr: string[] = [];
    const tcpdump = new Deno.Command("/usr/sbin/ip", {
      args: [
        ...["netns", "exec", nsC, "tcpdump", "-i", devC, "-tt", "-n", "-l", "-U", "-p"],
        family === 4 ? "arp" : "icmp6",
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    children.push(tcpdump);
    const monitorOut: string[] = [];
    const monitor = new Deno.Command("/usr/sbin/ip", {
      args: ["-n", nsH, "-ts", "monitor", "address"],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    children.push(monitor);
    lines(tcpdump.stdout, tcpdumpOut);
    lines(tcpdump.stderr, tcpdumpErr);
    lines(monitor.stdout, monitorOut);
    const deadline = Date.now() + 5000;
    while (!tcpdumpErr.some((l) => l.includes("listening on")) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 200));
    const self = new URL(import.meta.url).pathname;
    const w = await new Deno.Command("/usr/sbin/ip", {
      args: [
        ...["netns", "exec", nsH, Deno.execPath(), "run", "-A", self, "--worker"],
        ...["--path", path, "--family", String(family), "--n", String(n)],
        ...["--dev", devH, "--vip", vip],
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!w.success) {
      throw new Error(`the worker failed: ${new TextDecoder().decode(w.stderr)}`);
    }
    const werr = new TextDecoder().decode(w.stderr).trim();
    if (werr) console.error(`worker (${path}, IPv${family}): ${werr.slice(0, 2000)}`);
    await new Promise((r) => setTimeout(r, 300));
    const samples = JSON.parse(new TextDecoder().decode(w.stdout)) as WorkerSample[];
    // Capture times: tcpdump -tt prints epoch seconds; ip -ts prints local (UTC here) time.
    const announces = tcpdumpOut.filter((l) =>
      family === 4
        ? l.includes(`who-has ${vipIp} `) || l.includes(`Reply ${vipIp} `) ||
          l.includes(`who-has ${vipIp}(`)
        : l.includes("neighbor advertisement") && l.includes(`tgt is ${vipIp}`)
    ).map((l) => Number(l.split(" ")[0]) * 1000);
    const tz = (Deno.env.get("TZ") ?? "") === "" ? "Z" : "";
    const adds = monitorOut.filter((l) => l.startsWith("[") && !l.includes("Deleted"))
      .filter((l) => l.includes(` ${vip} `) || l.includes(` ${vipIp}/`))
      .map((l) => Date.parse(l.slice(1, l.indexOf("]")) + tz) + (Number(l.slice(24, 27)) / 1000));
    const added: number[] = [];
    const announced: number[] = [];
    const returned: number[] = [];
    let missed = 0;
    for (const [i, s] of samples.entries()) {
      const next = samples[i + 1]?.decided ?? Infinity;
      const a = adds.find((t) => t >= s.decided - 1 && t < next);
      const g = announces.find((t) => t >= s.decided && t < Math.min(next, s.decided + 1000));
      if (a !== undefined) added.push(a - s.decided);
      if (g !== undefined) announced.push(g - s.decided);
      else missed++;
      returned.push(s.returned - s.decided);
    }
    const field = (k: string) =>
      samples.map((s) => s.record?.[k]).filter((x): x is number => typeof x === "number");
    return {
      path,
      family,
      n: samples.length,
      audit: { added: stats(field("addedMs")), announced: stats(field("announcedMs")) },
      added: stats(added),
      announced: stats(announced),
      returned: stats(returned),
      missed,
    };
  } finally {
    for (const c of children) {
      try {
        c.kill("SIGTERM");
      } catch {
        // gone
      }
      await c.status;
    }
    await sh(["netns", "del", nsH], false);
    await sh(["netns", "del", nsC], false);
  }
}

function table(results: Result[]): string {
  const rows = [
    "| path  | family | n  | decision → added (median / p90) | decision → first announcement (median / p90 / worst) | takeover() returned (median) | missed | audit record: added / announced (medians) |",
    "| ----- | ------ | -- | ------------------------------- | ---------------------------------------------------- | ---------------------------- | ------ | ----------------------------------------- |",
  ];
  for (const r of results) {
    rows.push(
      `| ${r.path} | IPv${r.family} | ${r.n} | ${r.added.median} / ${r.added.p90} ms | ${r.announced.median} / ${r.announced.p90} / ${r.announced.worst} ms | ${r.returned.median} ms | ${r.missed} | ${r.audit.added.median} / ${r.audit.announced.median} ms |`,
    );
  }
  return rows.join("\n");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      worker: { type: "boolean", default: false },
      path: { type: "string", default: "fast" },
      family: { type: "string", default: "4" },
      dev: { type: "string", default: "" },
      vip: { type: "string", default: "" },
      n: { type: "string", default: "40" },
      paths: { type: "string", default: "spawn,fast,sandbox" },
      families: { type: "string", default: "4,6" },
      json: { type: "boolean", default: false },
      out: { type: "string", default: "" },
    },
  });
  if (values.worker) {
    await worker(values as { path: string; family: string; n: string; dev: string; vip: string });
    return;
  }
  if (Deno.uid() !== 0) {
    console.error("bench/takeover_bench.ts needs root (network namespaces)");
    Deno.exit(1);
  }
  const tag = String(Deno.pid % 100000);
  const results: Result[] = [];
  for (const family of values.families.split(",").map(Number) as (4 | 6)[]) {
    for (const path of values.paths.split(",")) {
      results.push(await measure(path, family, Number(values.n), tag));
    }
  }
  const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  const report = {
    measured: new Date().toISOString(),
    command: `deno run -A bench/takeover_bench.ts ${Deno.args.join(" ")}`.trim(),
    deno: Deno.version.deno,
    load,
    results,
  };
  if (values.out) await Deno.writeTextFile(values.out, JSON.stringify(report, null, 2) + "\n");
  if (values.json) console.log(JSON.stringify(report, null, 2));
  else console.log(`${report.command}\nload average ${load}\n\n${table(results)}`);
}

if (import.meta.main) await main();
