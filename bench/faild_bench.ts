/**
 * faild benchmark: signed polls (`GET /v1/services` with a few services) per second and their
 * p50/p99 latency with 1, 16 and 64 concurrent keep-alive clients on loopback, faild running in
 * its own process; faild's RSS idle and under load. Medians over several runs.
 *
 * ```sh
 * deno run -A bench/faild_bench.ts            # table
 * deno run -A bench/faild_bench.ts --json     # JSON
 * deno run -A bench/faild_bench.ts --help
 * ```
 *
 * The load generator runs in separate worker processes. By default it speaks HTTP/1.1 itself
 * over `Deno.connect` (one keep-alive connection per client), signs every request and verifies
 * every answer's signature, exactly as the protocol asks; `--client fetch` uses `FaildClient`
 * (fetch) instead, which costs the generator several times more CPU per request.
 *
 * @module
 */
import { runBenchCli } from "./_main.ts";
import { FaildClient } from "../lib/client.ts";
import { canonicalRequest, keyId, NonceSequence, RESPONSE_SIGNATURE_HEADER } from "../lib/sign.ts";
import { constantTimeEqual, HmacKey, sha256Hex } from "../lib/hmac.ts";

const KEY = "bench-community-secret";
const BUCKET_US = 10;
const BUCKETS = 20_000; // 10 µs buckets up to 200 ms, then one overflow bucket.

/** What one worker reports. */
interface WorkerResult {
  count: number;
  errors: number;
  seconds: number;
  histogram: number[];
  firstError: string | null;
}

/** Options of a run. */
interface BenchOptions {
  json: boolean;
  duration: number;
  warmup: number;
  runs: number;
  clients: number[];
  workers: number;
  services: number;
  client: "raw" | "fetch";
  verify: boolean;
  randomNonces: boolean;
  v8Flags: string;
}

const HELP = `Usage: deno run -A bench/faild_bench.ts [options]

Measures signed polls per second and latency against a faild in its own process.

Options:
  --json              print JSON instead of a table
  --duration S        seconds measured per run (default 5)
  --warmup S          seconds of warm-up before each run (default 1)
  --runs N            runs per client count; medians are reported (default 3)
  --clients LIST      concurrent keep-alive clients, comma-separated (default 1,16,64)
  --workers N         load generator processes (default 1; clients are spread over them)
  --services N        services faild holds (default 5)
  --client raw|fetch  raw HTTP/1.1 over Deno.connect (default) or FaildClient (fetch)
  --no-verify         do not verify answer signatures (raw client only)
  --random-nonces     sign with 16 random bytes per request instead of each client's nonce
                      sequence (raw client only): faild keeps one replay-cache entry per request
  --faild-v8-flags F  V8 flags for faild (default --max-semi-space-size=1,--max-opt=2,
                      --optimize-for-size, the small-memory profile of the faild task; ""
                      for V8's defaults)
  -h, --help          this help`;

function parseOptions(args: string[]): BenchOptions | null {
  const o: BenchOptions = {
    json: false,
    duration: 5,
    warmup: 1,
    runs: 3,
    clients: [1, 16, 64],
    workers: 1,
    services: 5,
    client: "raw",
    verify: true,
    randomNonces: false,
    v8Flags: "--max-semi-space-size=1,--max-opt=2,--optimize-for-size",
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const next = () => {
      const v = args[++i];
      if (v === undefined) throw new TypeError(`Missing value: ${a} needs an argument`);
      return v;
    };
    const num = (v: string) => {
      const n = Number(v);
      if (!Number.isFinite(n) || n <= 0) throw new TypeError(`Invalid ${a} "${v}"`);
      return n;
    };
    if (a === "-h" || a === "--help") return null;
    else if (a === "--json") o.json = true;
    else if (a === "--duration") o.duration = num(next());
    else if (a === "--warmup") o.warmup = Number(next());
    else if (a === "--runs") o.runs = Math.round(num(next()));
    else if (a === "--clients") o.clients = next().split(",").map((v) => Math.round(num(v)));
    else if (a === "--workers") o.workers = Math.round(num(next()));
    else if (a === "--services") o.services = Math.round(num(next()));
    else if (a === "--client") {
      const v = next();
      if (v !== "raw" && v !== "fetch") throw new TypeError(`Invalid --client "${v}"`);
      o.client = v;
    } else if (a === "--no-verify") o.verify = false;
    else if (a === "--random-nonces") o.randomNonces = true;
    else if (a === "--faild-v8-flags") o.v8Flags = next();
    else throw new TypeError(`Unknown option "${a}": see --help`);
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Worker: the load generator.
// ---------------------------------------------------------------------------------------------

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
const randomPool = new Uint8Array(16 * 4096);
let randomOffset = randomPool.length;

function nonce(): string {
  if (randomOffset + 16 > randomPool.length) {
    crypto.getRandomValues(randomPool.subarray(0, 65536));
    randomOffset = 0;
  }
  let s = "";
  for (let i = 0; i < 16; i++) s += HEX[randomPool[randomOffset + i]!];
  randomOffset += 16;
  return s;
}

const EMPTY_DIGEST = sha256Hex("");

/** One keep-alive HTTP/1.1 connection doing signed polls. */
class RawPoller {
  #conn: Deno.TcpConn;
  #buf = new Uint8Array(256 * 1024);
  #len = 0;
  #key: HmacKey;
  #id: string;
  #host: string;
  #verify: boolean;
  #nonces: NonceSequence | null;
  #dec = new TextDecoder();
  #enc = new TextEncoder();

  constructor(conn: Deno.TcpConn, host: string, key: HmacKey, verify: boolean, random: boolean) {
    this.#conn = conn;
    this.#host = host;
    this.#key = key;
    this.#id = keyId(KEY);
    this.#verify = verify;
    this.#nonces = random ? null : new NonceSequence();
  }

  async poll(): Promise<void> {
    const ts = Date.now();
    const n = this.#nonces?.next() ?? nonce();
    const sig = this.#key.hex(
      canonicalRequest("GET", "/v1/services", EMPTY_DIGEST, { ts, nonce: n }),
    );
    const req = `GET /v1/services HTTP/1.1\r\nhost: ${this.#host}\r\n` +
      `authorization: FAILOVER-HMAC-SHA256 keyId=${this.#id}, ts=${ts}, nonce=${n}, sig=${sig}` +
      "\r\n\r\n";
    const bytes = this.#enc.encode(req);
    let off = 0;
    while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
    // Read the head.
    let headEnd = -1;
    while (true) {
      headEnd = this.#find();
      if (headEnd >= 0) break;
      await this.#fill();
    }
    const head = this.#dec.decode(this.#buf.subarray(0, headEnd));
    const status = Number(head.slice(9, 12));
    const lenMatch = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!lenMatch) throw new Error(`answer without content-length: ${head.slice(0, 80)}`);
    const bodyLen = Number(lenMatch[1]);
    const total = headEnd + 4 + bodyLen;
    while (this.#len < total) await this.#fill();
    const body = this.#dec.decode(this.#buf.subarray(headEnd + 4, total));
    this.#buf.copyWithin(0, total, this.#len);
    this.#len -= total;
    if (status !== 200) throw new Error(`status ${status}: ${body.slice(0, 200)}`);
    if (this.#verify) {
      const m = new RegExp(`\r\n${RESPONSE_SIGNATURE_HEADER}: *([0-9a-f]{64})`, "i").exec(head);
      const expected = this.#key.hex(`FAILOVER-V1-RESPONSE\n${n}\n200\n${sha256Hex(body)}`);
      if (!m || !constantTimeEqual(m[1]!, expected)) throw new Error("bad answer signature");
    }
  }

  #find(): number {
    const b = this.#buf;
    for (let i = 3; i < this.#len; i++) {
      if (b[i] === 10 && b[i - 1] === 13 && b[i - 2] === 10 && b[i - 3] === 13) return i - 3;
    }
    return -1;
  }

  async #fill(): Promise<void> {
    if (this.#len === this.#buf.length) throw new Error("answer larger than the read buffer");
    const n = await this.#conn.read(this.#buf.subarray(this.#len));
    if (n === null) throw new Error("connection closed by faild");
    this.#len += n;
  }

  close(): void {
    this.#conn.close();
  }
}

async function worker(args: string[]): Promise<number> {
  const [url, connsText, durText, warmText, mode, verifyText, noncesText] = args;
  const conns = Number(connsText);
  const duration = Number(durText) * 1000;
  const warmup = Number(warmText) * 1000;
  const u = new URL(url!);
  const key = new HmacKey(KEY);
  const histogram = new Array<number>(BUCKETS + 1).fill(0);
  let count = 0;
  let errors = 0;
  let firstError: string | null = null;
  let measuring = false;
  const startAt = performance.now() + warmup;
  const endAt = startAt + duration;
  const loop = async (poll: () => Promise<void>) => {
    while (true) {
      const t0 = performance.now();
      if (t0 >= endAt) return;
      try {
        await poll();
      } catch (error) {
        errors++;
        firstError ??= String(error);
        if (errors > 1000) return;
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      const t1 = performance.now();
      if (t0 >= startAt && t1 <= endAt) {
        measuring = true;
        count++;
        const b = Math.min(BUCKETS, Math.floor(((t1 - t0) * 1000) / BUCKET_US));
        histogram[b]!++;
      }
    }
  };
  if (mode === "fetch") {
    const clients = Array.from({ length: conns }, () => new FaildClient(url!, { key: KEY }));
    await Promise.all(clients.map((c) => loop(() => c.list().then(() => {}))));
    for (const c of clients) c.close();
  } else {
    const pollers: RawPoller[] = [];
    for (let i = 0; i < conns; i++) {
      const conn = await Deno.connect({ hostname: u.hostname, port: Number(u.port) });
      conn.setNoDelay(true);
      pollers.push(
        new RawPoller(conn, u.host, key, verifyText !== "false", noncesText === "random"),
      );
    }
    await Promise.all(pollers.map((p) => loop(() => p.poll())));
    for (const p of pollers) p.close();
  }
  const result: WorkerResult = {
    count,
    errors,
    seconds: measuring ? duration / 1000 : 0,
    histogram,
    firstError,
  };
  console.log(JSON.stringify(result));
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Driver.
// ---------------------------------------------------------------------------------------------

function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

function cpuTicks(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return NaN;
  }
}

function percentile(histogram: number[], total: number, p: number): number {
  const target = Math.ceil(total * p);
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    seen += histogram[i]!;
    if (seen >= target) return ((i + 1) * BUCKET_US) / 1000;
  }
  return NaN;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

async function startFaildProcess(
  dir: string,
  v8Flags: string,
): Promise<{ child: Deno.ChildProcess; url: string }> {
  const community = `${dir}/community`;
  await Deno.writeTextFile(community, `*  ${KEY}  RW\n`, { mode: 0o600 });
  const ready = `${dir}/ready`;
  await Deno.remove(ready).catch(() => {});
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...(v8Flags ? [`--v8-flags=${v8Flags}`] : []),
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-sys=hostname",
      new URL("../daemon/faild/faild.ts", import.meta.url).pathname,
      "-c",
      community,
      "--listen",
      "127.0.0.1:0",
      "--name",
      "bench",
      "--ready-file",
      ready,
      "--log-level",
      "warn",
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    try {
      const url = (await Deno.readTextFile(ready)).trim();
      if (url) return { child, url };
    } catch {
      // Not ready yet.
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill("SIGKILL");
  await child.status;
  throw new Error("faild did not start within 20 s");
}

async function runLoad(
  o: BenchOptions,
  url: string,
  clients: number,
  pid: number,
): Promise<{ rps: number; p50: number; p99: number; errors: number; maxRss: number; cpu: number }> {
  const workers = Math.min(o.workers, clients);
  const per = Array.from(
    { length: workers },
    (_, i) => Math.floor(clients / workers) + (i < clients % workers ? 1 : 0),
  );
  const procs = per.map((n) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL(import.meta.url).pathname,
        "--worker",
        url,
        String(n),
        String(o.duration),
        String(o.warmup),
        o.client,
        String(o.verify),
        o.randomNonces ? "random" : "sequenced",
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn()
  );
  let maxRss = 0;
  let cpu0 = NaN;
  const t0 = performance.now();
  const sampler = setInterval(() => {
    const elapsed = (performance.now() - t0) / 1000;
    if (Number.isNaN(cpu0) && elapsed >= o.warmup + 0.5) cpu0 = cpuTicks(pid);
    maxRss = Math.max(maxRss, rssKiB(pid) || 0);
  }, 100);
  const killer = setTimeout(() => {
    for (const p of procs) {
      try {
        p.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }
  }, (o.duration + o.warmup + 30) * 1000);
  const outputs = await Promise.all(procs.map((p) => p.output()));
  const cpu1 = cpuTicks(pid);
  const measured = (performance.now() - t0) / 1000 - (o.warmup + 0.5);
  clearInterval(sampler);
  clearTimeout(killer);
  const histogram = new Array<number>(BUCKETS + 1).fill(0);
  let count = 0;
  let errors = 0;
  for (const out of outputs) {
    const text = new TextDecoder().decode(out.stdout).trim();
    const r = JSON.parse(text.split("\n").pop()!) as WorkerResult;
    count += r.count;
    errors += r.errors;
    if (r.firstError) console.error(`worker error: ${r.firstError}`);
    r.histogram.forEach((v, i) => histogram[i]! += v);
  }
  const ticks = cpu1 - cpu0;
  return {
    rps: count / o.duration,
    p50: percentile(histogram, count, 0.5),
    p99: percentile(histogram, count, 0.99),
    errors,
    maxRss,
    cpu: ticks / 100 / measured,
  };
}

async function stopFaild(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch {
    // Already gone.
  }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, 5000);
  await child.status;
  clearTimeout(timer);
}

/** Starts a fresh faild, seeds it and returns it with its idle RSS. */
async function freshFaild(o: BenchOptions, dir: string) {
  const { child, url } = await startFaildProcess(dir, o.v8Flags);
  try {
    const seed = new FaildClient(url, { key: KEY });
    for (let i = 0; i < o.services; i++) {
      await seed.set(`svc-${i}`, i % 3 === 0 ? "UP" : i % 3 === 1 ? "RECOVER" : "FAIL", {
        detail: "seeded by the benchmark",
      });
    }
    seed.close();
    await new Promise((r) => setTimeout(r, 1000));
  } catch (error) {
    await stopFaild(child);
    throw error;
  }
  return { child, url, idleRss: rssKiB(child.pid) };
}

async function bench(o: BenchOptions): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "faild-bench-" });
  try {
    const rows: {
      clients: number;
      rps: number;
      p50: number;
      p99: number;
      errors: number;
      rssKiB: number;
      faildCpu: number;
      runs: number[];
    }[] = [];
    const idle: number[] = [];
    let peakRss = 0;
    for (const c of o.clients) {
      const runs = [];
      for (let r = 0; r < o.runs; r++) {
        // A fresh faild per run: runs stay independent, and the replay cache (which holds
        // every nonce of the last 30 s) starts empty each time.
        const f = await freshFaild(o, dir);
        idle.push(f.idleRss);
        try {
          runs.push(await runLoad(o, f.url, c, f.child.pid));
        } finally {
          await stopFaild(f.child);
        }
        if (!o.json) {
          const last = runs[runs.length - 1]!;
          console.error(
            `  clients=${c} run ${r + 1}/${o.runs}: ${Math.round(last.rps)} polls/s, p50 ${
              last.p50.toFixed(2)
            } ms, p99 ${last.p99.toFixed(2)} ms, faild CPU ${(last.cpu * 100).toFixed(0)} %, ` +
              `RSS ${(last.maxRss / 1024).toFixed(1)} MiB`,
          );
        }
      }
      const maxRss = Math.max(...runs.map((r) => r.maxRss));
      peakRss = Math.max(peakRss, maxRss);
      rows.push({
        clients: c,
        rps: Math.round(median(runs.map((r) => r.rps))),
        p50: median(runs.map((r) => r.p50)),
        p99: median(runs.map((r) => r.p99)),
        errors: runs.reduce((s, r) => s + r.errors, 0),
        rssKiB: maxRss,
        faildCpu: median(runs.map((r) => r.cpu)),
        runs: runs.map((r) => Math.round(r.rps)),
      });
    }
    const idleRss = median(idle);
    const result = {
      machine: {
        cpus: navigator.hardwareConcurrency,
        deno: Deno.version.deno,
        loadavg: Deno.loadavg(),
      },
      options: o,
      idleRssKiB: idleRss,
      peakRssKiB: peakRss,
      rows,
    };
    if (o.json) console.log(JSON.stringify(result, null, 2));
    else {
      console.log(
        `faild benchmark: signed GET /v1/services with ${o.services} services, ${o.client} ` +
          `client${o.verify ? ", answers verified" : ""}${
            o.randomNonces ? ", random nonces" : ", sequenced nonces"
          }, ${o.workers} worker process(es), ` +
          `${o.runs} x ${o.duration} s runs (medians)`,
      );
      console.log("clients   polls/s   p50 ms   p99 ms   faild CPU   peak RSS MiB   errors");
      for (const r of rows) {
        console.log(
          `${String(r.clients).padStart(7)}   ${String(r.rps).padStart(7)}   ${
            r.p50.toFixed(2).padStart(6)
          }   ${r.p99.toFixed(2).padStart(6)}   ${(r.faildCpu * 100).toFixed(0).padStart(7)} %   ${
            (r.rssKiB / 1024).toFixed(1).padStart(12)
          }   ${String(r.errors).padStart(6)}`,
        );
      }
      console.log(
        `faild RSS: idle ${(idleRss / 1024).toFixed(1)} MiB (median), peak under load ${
          (peakRss / 1024).toFixed(1)
        } MiB; load average ${Deno.loadavg().map((v) => v.toFixed(2)).join(" ")}`,
      );
    }
    return 0;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Runs the benchmark (or, with `--worker`, one load generator process).
 *
 * @param args Command line arguments.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  if (args[0] === "--worker") return await worker(args.slice(1));
  return await runBenchCli(args, parseOptions, HELP, bench);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
