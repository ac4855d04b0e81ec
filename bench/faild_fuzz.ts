/**
 * faild fuzz and soak harness: hostile requests against a faild in its own process, while
 * legitimate pollers (in another process, signing as failsh does) measure their latency.
 *
 * ```sh
 * deno task fuzz:faild --requests 1000000      # the long run of docs/security.md
 * deno task fuzz:faild --requests 3000 --json  # what tests/faild_fuzz_test.ts runs
 * deno task fuzz:faild --help
 * ```
 *
 * Attack kinds, run one after the other (each gets a share of `--requests`):
 *
 * - `malformed`: broken HTTP over raw TCP: random bytes, mutated heads, bad Host, versions,
 *   methods, targets, lengths, header floods, HTTP/2 and TLS prefaces, half-closed heads.
 * - `chunked`: bodies in one-byte chunks, with and without a key.
 * - `slow`: silent connections, heads trickled a byte at a time, bodies that never finish,
 *   pipelined requests never read.
 * - `protocol`: well-formed HTTP with hostile meaning: paths with dot segments and encodings,
 *   unknown and read-only keys, tampered and stale signatures, wrong digests, bad JSON, every
 *   method on every route, event streams opened and dropped.
 * - `replay`: legitimate signed writes and reads captured on the wire and sent again.
 * - `nonce`: with a read-only key: the pollers' nonce sessions pushed to their last counter,
 *   floods of new sessions and of random nonces, reused nonces.
 *
 * After each kind the harness checks that faild is alive, that no seeded service changed, that
 * the last legitimate write is what faild holds, that no answer was a 500, that no attack was
 * acknowledged (a 2xx to a hostile write), and that the pollers saw no error; at the end, that
 * faild's RSS is within `--rss-bound` of its RSS before the attacks (after a warm-up of every
 * kind). It exits 1 if any check fails.
 *
 * @module
 */
import { runBenchCli } from "./_main.ts";
import { FaildClient } from "../lib/client.ts";
import {
  bodyDigest,
  canonicalRequest,
  CONTENT_DIGEST_HEADER,
  keyId,
  NonceSequence,
  RESPONSE_SIGNATURE_HEADER,
  signRequest,
} from "../lib/sign.ts";
import { constantTimeEqual, HmacKey, sha256Hex } from "../lib/hmac.ts";
import type { ServiceRecord } from "../lib/types.ts";
import { RawConnection, signedRequest } from "./_raw_http.ts";

/** The V8 flags of the faild task in deno.json. */
const FAILD_V8_FLAGS = "--max-semi-space-size=1,--max-opt=2,--optimize-for-size";
const RW = "fuzz-rw-community-secret";
const RO = "fuzz-ro-community-secret";
const UNKNOWN = "fuzz-unknown-community";
const BUCKET_US = 10;
const BUCKETS = 20_000;
const SEEDED: Record<string, string> = { web: "UP", db: "FAIL", "status-1": "RECOVER" };
const LEGIT = "fuzz-legit";
/** The pollers report their latencies every this many ms. */
const WINDOW_MS = 100;

/** The attack kinds, in the order they run, with their share of the requests. */
const KINDS = {
  malformed: 0.25,
  chunked: 0.1,
  slow: 0.05,
  protocol: 0.3,
  replay: 0.15,
  nonce: 0.15,
} as const;
type Kind = keyof typeof KINDS;

const HELP = `Usage: deno task fuzz:faild [options]

Sends hostile requests to a faild in its own process and checks that it neither crashes, nor
changes state, nor grows in memory, while legitimate signed pollers measure their latency.

Options:
  --requests N        hostile requests in all, shared among the kinds (default 10000)
  --kinds LIST        comma-separated kinds (default all: ${Object.keys(KINDS).join(",")})
  --concurrency N     connections attacking at once (default 32; slow attacks use 8 times more)
  --pollers N         legitimate keep-alive pollers (default 4), each polling every 2 ms
  --rss-bound MIB     the most faild's RSS may grow over the run (default 10)
  --seed N            random seed (default 1)
  --faild FILE        the faild to run (default daemon/faild/faild.ts of this tree)
  --faild-v8-flags F  V8 flags for faild (default those of the faild task: ${FAILD_V8_FLAGS})
  --json              print the report as JSON
  -h, --help          this help

faild runs with the V8 flags of the faild task, --header-timeout 1 and
--body-timeout 1 (so that slow attacks take a second each). Exit code 0: every check held;
1: a check failed (the report says which); 2: usage error.`;

/** Options of a run. */
interface FuzzOptions {
  requests: number;
  kinds: Kind[];
  concurrency: number;
  pollers: number;
  rssBound: number;
  seed: number;
  faild: string;
  v8Flags: string;
  json: boolean;
}

function parseOptions(args: string[]): FuzzOptions | null {
  const o: FuzzOptions = {
    requests: 10_000,
    kinds: Object.keys(KINDS) as Kind[],
    concurrency: 32,
    pollers: 4,
    rssBound: 10,
    seed: 1,
    faild: new URL("../daemon/faild/faild.ts", import.meta.url).pathname,
    v8Flags: FAILD_V8_FLAGS,
    json: false,
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
      if (!Number.isFinite(n) || n < 0) throw new TypeError(`Invalid ${a} "${v}": not a number`);
      return n;
    };
    if (a === "-h" || a === "--help") return null;
    else if (a === "--json") o.json = true;
    else if (a === "--requests") o.requests = Math.round(num(next()));
    else if (a === "--concurrency") o.concurrency = Math.max(1, Math.round(num(next())));
    else if (a === "--pollers") o.pollers = Math.max(1, Math.round(num(next())));
    else if (a === "--rss-bound") o.rssBound = num(next());
    else if (a === "--seed") o.seed = Math.round(num(next()));
    else if (a === "--faild") o.faild = next();
    else if (a === "--faild-v8-flags") o.v8Flags = next();
    else if (a === "--kinds") {
      o.kinds = next().split(",").map((k) => {
        if (!(k in KINDS)) {
          throw new TypeError(`Invalid --kinds "${k}": expected ${Object.keys(KINDS).join(", ")}`);
        }
        return k as Kind;
      });
    } else throw new TypeError(`Unknown option "${a}": see --help`);
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Randomness (seeded, so a failing run can be replayed).
// ---------------------------------------------------------------------------------------------

/** xorshift32: `rng(n)` is an integer in [0, n). */
type Rng = (n: number) => number;

function makeRng(seed: number): Rng {
  let x = (seed | 0) || 0x9e3779b9;
  return (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return ((x >>> 0) % n);
  };
}

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[rng(items.length)]!;
}

function randomBytes(rng: Rng, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = rng(256);
  return b;
}

function hex(rng: Rng, digits: number): string {
  let s = "";
  for (let i = 0; i < digits; i++) s += "0123456789abcdef"[rng(16)];
  return s;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------------------------
// Pollers: a separate process, so their latency is faild's and not this harness's.
// ---------------------------------------------------------------------------------------------

/** A tenth of a second of a poller process's measurements. */
interface PollSecond {
  /** End of the window, ms since the epoch. */
  t: number;
  /** Latency histogram: bucket index (10 µs) -> count. */
  hist: Record<string, number>;
  /** Failed polls in that second. */
  errors: number;
  /** The first failure seen, if any. */
  error?: string;
}

const EMPTY_DIGEST = sha256Hex("");

/** One keep-alive connection polling `GET /v1/services` signed with the RW key. */
async function pollerLoop(
  url: URL,
  nonces: NonceSequence,
  record: (ms: number) => void,
  fail: (e: string) => void,
  stop: () => boolean,
): Promise<void> {
  const key = new HmacKey(RW);
  const id = keyId(RW);
  let conn: RawConnection | null = null;
  while (!stop()) {
    try {
      conn ??= await RawConnection.open(Number(url.port), url.hostname);
      const ts = Date.now();
      const nonce = nonces.next();
      const sig = key.hex(canonicalRequest("GET", "/v1/services", EMPTY_DIGEST, { ts, nonce }));
      const t0 = performance.now();
      await conn.write(
        `GET /v1/services HTTP/1.1\r\nhost: ${url.host}\r\nauthorization: FAILOVER-HMAC-SHA256 ` +
          `keyId=${id}, ts=${ts}, nonce=${nonce}, sig=${sig}\r\n\r\n`,
      );
      const answer = await conn.read(10_000);
      const ms = performance.now() - t0;
      if (answer === null) throw new Error("connection closed by faild");
      if (answer.status !== 200) throw new Error(`status ${answer.status}: ${answer.body}`);
      const expected = key.hex(`FAILOVER-V1-RESPONSE\n${nonce}\n200\n${sha256Hex(answer.body)}`);
      const got = answer.headers.get(RESPONSE_SIGNATURE_HEADER) ?? "";
      if (!constantTimeEqual(expected, got)) throw new Error("bad answer signature");
      record(ms);
    } catch (error) {
      fail(String(error).slice(0, 300));
      conn?.close();
      conn = null;
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  conn?.close();
}

async function pollerProcess(args: string[]): Promise<number> {
  const [urlText, countText] = args;
  const url = new URL(urlText!);
  const count = Number(countText);
  const sessions = Array.from({ length: count }, () => new NonceSequence());
  // The attacker sees nonces on the wire: tell the driver the sessions, as a sniffer would learn.
  console.log(JSON.stringify({ sessions: sessions.map((s) => s.next().slice(0, 16)) }));
  let second: PollSecond = { t: Date.now() + WINDOW_MS, hist: {}, errors: 0 };
  let stopping = false;
  const flush = () => {
    second.t = Date.now();
    console.log(JSON.stringify(second));
    second = { t: 0, hist: {}, errors: 0 };
  };
  const timer = setInterval(flush, WINDOW_MS);
  // The driver ends the run by closing our stdin.
  const stdinDone = (async () => {
    for await (const _ of Deno.stdin.readable) { /* wait for the end */ }
    stopping = true;
  })();
  await Promise.all(sessions.map((nonces) =>
    pollerLoop(url, nonces, (ms) => {
      const b = String(Math.min(BUCKETS, Math.floor((ms * 1000) / BUCKET_US)));
      second.hist[b] = (second.hist[b] ?? 0) + 1;
    }, (e) => {
      second.errors++;
      second.error ??= e;
    }, () => stopping)
  ));
  clearInterval(timer);
  flush();
  await stdinDone;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The attacks.
// ---------------------------------------------------------------------------------------------

/** What an attack lane shares with the driver. */
interface AttackContext {
  port: number;
  host: string;
  rng: Rng;
  /** Session ids of the legitimate pollers (as seen on the wire). */
  pollerSessions: string[];
  /** Legitimate requests captured on the wire (exact bytes). */
  captured: string[];
  /** Records the outcome of one request. */
  outcome: (what: number | string) => void;
  /** Records a check that failed. */
  violation: (what: string) => void;
  /** Makes a fresh legitimate write and captures it. */
  legitWrite: () => Promise<void>;
}

const BAD_HOSTS = ["a b", "[::1", "@", "a\tb", "x/y", "", "[zz]", "h:99999999", "\u00e9", "a\\b"];
const WEIRD_METHODS = ["get", "G ET", "GETT", "", "P\u00fcT", "X".repeat(40), "CONNECT", "TRACE"];
const WEIRD_TARGETS = [
  "*",
  "http://evil/v1/services",
  "v1/services",
  "/v1/services/web\u0000",
  "/v1/services/../../etc/passwd",
  "/" + "a".repeat(3000),
  "/v1/services/%00",
  "/v1/%2e%2e/services/web",
  "",
];
const VERSIONS = [
  "HTTP/1.1",
  "HTTP/1.0",
  "HTTP/2.0",
  "HTTP/1.2",
  "HTTP/0.9",
  "http/1.1",
  "HTTP/1",
  "",
];

/** Sends bytes on a new connection and records what came back. */
async function oneShot(ctx: AttackContext, data: Uint8Array | string, halfClose = false) {
  let c: RawConnection | null = null;
  try {
    c = await RawConnection.open(ctx.port);
    if (!(await c.write(data))) return ctx.outcome("reset");
    if (halfClose) await c.closeWrite();
    const answer = await c.read(4000);
    if (answer === null) return ctx.outcome("closed");
    ctx.outcome(answer.status);
    if (answer.status === 500) ctx.violation(`500 to ${describe(data)}: ${answer.body}`);
    if (answer.status >= 200 && answer.status < 300 && /^(PUT|DELETE)/.test(text(data))) {
      ctx.violation(`hostile write acknowledged: ${describe(data)}`);
    }
  } catch (error) {
    ctx.outcome(error instanceof Error && error.name === "RawTimeoutError" ? "timeout" : "error");
  } finally {
    c?.close();
  }
}

function text(data: Uint8Array | string): string {
  return typeof data === "string" ? data : decoder.decode(data.subarray(0, 200));
}

function describe(data: Uint8Array | string): string {
  return JSON.stringify(text(data).slice(0, 120));
}

function mutate(rng: Rng, s: string): Uint8Array {
  const b = encoder.encode(s);
  const n = 1 + rng(4);
  for (let i = 0; i < n; i++) {
    const at = rng(b.length);
    switch (rng(3)) {
      case 0:
        b[at] = rng(256);
        break;
      case 1:
        b[at] = pick(rng, [0, 10, 13, 32, 58, 9, 127]);
        break;
      default:
        b[at] = b[rng(b.length)]!;
    }
  }
  return b;
}

async function malformed(ctx: AttackContext): Promise<void> {
  const { rng } = ctx;
  // Most malformed requests end with a half-close (the client is done sending), so that faild
  // answers at once; 1 in 16 keeps the connection open (faild then waits for the rest of the
  // head, up to its header timeout: the slow kind's business, sampled here).
  const send = (data: Uint8Array | string, halfClose = rng(16) > 0) =>
    oneShot(ctx, data, halfClose);
  const health = "GET /v1/health HTTP/1.1\r\nhost: faild\r\n\r\n";
  switch (rng(16)) {
    case 0:
      return await send(randomBytes(rng, 1 + rng(400)));
    case 1:
    case 2:
      return await send(mutate(
        rng,
        signedRequest(RO, "GET", "/v1/services/web", { nonces: new NonceSequence() }).text,
      ));
    case 3:
      return await send(`GET /v1/health HTTP/1.1\r\nhost: ${pick(rng, BAD_HOSTS)}\r\n\r\n`);
    case 4:
      return await send(
        `${pick(rng, WEIRD_METHODS)} ${pick(rng, WEIRD_TARGETS)} ${pick(rng, VERSIONS)}\r\n` +
          "host: faild\r\n\r\n",
      );
    case 5:
      return await send(
        `GET /v1/health HTTP/1.1\r\nhost: faild\r\n${"x-a: b\r\n".repeat(50 + rng(200))}\r\n`,
      );
    case 6:
      return await send(
        `GET /v1/health HTTP/1.1\r\nhost: faild\r\nx: ${"a".repeat(1000 + rng(30_000))}\r\n\r\n`,
      );
    case 7: {
      const lengths = [
        "5\r\ncontent-length: 6",
        "-1",
        "1e3",
        "0x10",
        " 5 ",
        "99999999999999999",
        "5,5",
      ];
      return await send(
        `PUT /v1/services/web HTTP/1.1\r\nhost: faild\r\ncontent-type: application/json\r\n` +
          `content-length: ${pick(rng, lengths)}\r\n\r\nhello`,
      );
    }
    case 8:
      return await send(
        "PUT /v1/services/web HTTP/1.1\r\nhost: faild\r\ncontent-length: 5\r\n" +
          "transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
      );
    case 9:
      return await send(health.replaceAll("\r\n", pick(rng, ["\n", "\r", "\n\r"])));
    case 10:
      return await send(health.replace("host", " host").replace("\r\n\r\n", "\r\n folded\r\n\r\n"));
    case 11:
      return await send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00".repeat(rng(50)));
    case 12:
      // The start of a TLS ClientHello.
      return await send(
        new Uint8Array([
          0x16,
          0x03,
          0x01,
          0x02,
          0x00,
          0x01,
          0x00,
          0x01,
          0xfc,
          0x03,
          0x03,
          ...randomBytes(rng, 60),
        ]),
      );
    case 13:
      return await send(health.slice(0, rng(health.length)), true);
    case 14:
      return await send(
        `GET /v1/health HTTP/1.1\r\nhost: faild\r\nexpect: ${
          pick(rng, ["100-continue", "x", "200-ok"])
        }\r\nx-\u00e9: \u00ff\r\n\r\n`,
      );
    default:
      // Several requests on one connection, one of them broken.
      return await send(
        health + health + mutate(rng, health).reduce((s, b) => s + String.fromCharCode(b), "") +
          health,
      );
  }
}

async function chunked(ctx: AttackContext): Promise<void> {
  const { rng } = ctx;
  let c: RawConnection | null = null;
  try {
    c = await RawConnection.open(ctx.port);
    const auth = rng(2) === 0 ? "" : `authorization: ${
      signRequest(pick(rng, [RO, UNKNOWN]), {
        method: "PUT",
        path: "/v1/services/web",
        body: '{"state":"FAIL"}',
      }).header
    }\r\n`;
    await c.write(
      `PUT /v1/services/web HTTP/1.1\r\nhost: faild\r\ncontent-type: application/json\r\n${auth}` +
        `transfer-encoding: ${
          pick(rng, ["chunked", "gzip, chunked", "identity", "Chunked"])
        }\r\n\r\n`,
    );
    const chunks = 20 + rng(200);
    for (let i = 0; i < chunks; i++) if (!(await c.write("1\r\nx\r\n"))) break;
    const answer = await c.read(4000);
    ctx.outcome(answer === null ? "closed" : answer.status);
    if (answer !== null && answer.status !== 411) {
      ctx.violation(`a chunked body got ${answer.status}, not 411: ${answer.body}`);
    }
  } catch {
    ctx.outcome("error");
  } finally {
    c?.close();
  }
}

async function slow(ctx: AttackContext): Promise<void> {
  const { rng } = ctx;
  let c: RawConnection | null = null;
  try {
    c = await RawConnection.open(ctx.port);
    switch (rng(5)) {
      case 0:
        // Silent.
        break;
      case 1: {
        // A head trickled a byte every 150 ms.
        const head = "GET /v1/services HTTP/1.1\r\nhost: faild\r\nx-slow: yes\r\n\r\n";
        const trickle = (async () => {
          for (let i = 0; i < head.length; i++) {
            if (!(await c!.write(head[i]!))) return;
            await new Promise((r) => setTimeout(r, 150));
          }
        })();
        const answer = await c.read(4000);
        ctx.outcome(answer === null ? "closed" : answer.status);
        c.close();
        await trickle;
        return;
      }
      case 2:
      case 3: {
        // A body that never finishes, from a holder of the write key (the only one whose body
        // faild reads): it must time out and change nothing.
        const body = JSON.stringify({ state: "FAIL", detail: "never finished" });
        const { text } = signedRequest(RW, "PUT", "/v1/services/web", { body });
        await c.write(text.slice(0, text.length - body.length + rng(body.length)));
        break;
      }
      default: {
        // Requests pipelined and never read, then gone.
        const head = "GET /v1/health HTTP/1.1\r\nhost: faild\r\n\r\n";
        await c.write(head.repeat(50 + rng(200)));
        ctx.outcome("pipelined");
        return;
      }
    }
    const answer = await c.read(4000);
    ctx.outcome(answer === null ? "closed" : answer.status);
    if (answer !== null && answer.status >= 200 && answer.status < 300) {
      ctx.violation(`a slow request was answered ${answer.status}`);
    }
  } catch (error) {
    ctx.outcome(error instanceof Error && error.name === "RawTimeoutError" ? "timeout" : "error");
  } finally {
    c?.close();
  }
}

const NAMES = ["web", "db", "status-1", LEGIT, "new-svc", "a".repeat(65), "-bad", "web.", "x_y"];
const TARGETS = (rng: Rng): string => {
  const name = pick(rng, NAMES);
  return pick(rng, [
    "/v1/services",
    `/v1/services/${name}`,
    `/v1/services/${name}`,
    "/v1/health",
    "/metrics",
    "/v1/debug/levels",
    "/v1/x/../services/web",
    "/v1/services/./web",
    "//v1/services/web",
    "/v1/services/web/",
    "/v1/services/%77eb",
    "/V1/services/web",
    `/v1/services/${name}?x=${hex(rng, 4)}`,
    "/v1/services/web;x",
    `/${hex(rng, 8)}`,
    "/v1/events",
  ]);
};

const BODIES = (rng: Rng): string =>
  pick(rng, [
    "",
    '{"state":"FAIL"}',
    '{"state":"UP","detail":"attack"}',
    '{"state":"up"}',
    "{",
    "[]",
    "null",
    '{"state":"FAIL","x":1}',
    `{"state":"FAIL","detail":"${"d".repeat(600)}"}`,
    '{"__proto__":{"state":"FAIL"},"state":"FAIL"}',
    "[".repeat(2000),
    '{"facility":"*","level":"trace"}',
    "\u00ff\u00fe",
  ]);

/** One keep-alive connection per protocol lane, opened again when faild closes it. */
class Lane {
  conn: RawConnection | null = null;
  async send(ctx: AttackContext, request: string, expectWrite: boolean): Promise<void> {
    try {
      this.conn ??= await RawConnection.open(ctx.port);
      if (!(await this.conn.write(request))) throw new Error("reset");
      const isEvents = request.startsWith("GET /v1/events");
      const isHead = request.startsWith("HEAD ");
      let closing = isEvents;
      let answer: number | null;
      if (isEvents) answer = await this.conn.readHead(4000);
      else {
        const full = await this.conn.read(4000, isHead);
        answer = full?.status ?? null;
        closing = full?.headers.get("connection") === "close";
      }
      if (answer === null) {
        ctx.outcome("closed");
        this.close();
        return;
      }
      ctx.outcome(answer);
      if (answer === 500) ctx.violation(`500 to ${describe(request)}`);
      if (expectWrite && answer >= 200 && answer < 300) {
        ctx.violation(`hostile write acknowledged (${answer}): ${describe(request)}`);
      }
      if (closing || this.conn.peerClosed) this.close();
    } catch (error) {
      ctx.outcome(error instanceof Error && error.name === "RawTimeoutError" ? "timeout" : "error");
      this.close();
    }
  }

  close(): void {
    this.conn?.close();
    this.conn = null;
  }
}

async function protocol(ctx: AttackContext, lane: Lane): Promise<void> {
  const { rng } = ctx;
  const method = pick(rng, [
    "GET",
    "GET",
    "PUT",
    "PUT",
    "DELETE",
    "POST",
    "PATCH",
    "HEAD",
    "OPTIONS",
  ]);
  const target = TARGETS(rng);
  const body = method === "GET" && rng(4) > 0 ? "" : BODIES(rng);
  const headers: string[] = [];
  if (rng(5) > 0) {
    headers.push(
      `content-type: ${
        pick(rng, [
          "application/json",
          "text/plain",
          "application/json; charset=utf-8",
          "application/JSON",
          "",
        ])
      }`,
    );
  }
  let request: string;
  switch (rng(9)) {
    case 0:
      request = signedRequest(null, method, target, { body, headers }).text;
      break;
    case 1:
    case 2:
      request =
        signedRequest(RO, method, target, { body, headers, nonces: new NonceSequence() }).text;
      break;
    case 3:
      request = signedRequest(UNKNOWN, method, target, { body, headers }).text;
      break;
    case 4: {
      // A read-only key signing the path a URL parser would make of the target.
      const signedTarget = target.replace(/\/[^/]*\/\.\.|\/\.(?=\/)/g, "").replace(/^\/\//, "/");
      request = signedRequest(RO, method, target, { body, headers, signedTarget }).text;
      break;
    }
    case 5: {
      // A captured legitimate (RW) request with its body, path or digest changed.
      const captured = ctx.captured.length > 0 ? pick(rng, ctx.captured) : null;
      if (captured === null) return await protocol(ctx, lane);
      request = pick(rng, [
        captured.replace('"state":"UP"', '"state":"FAIL"').replace(
          '"state":"RECOVER"',
          '"state":"FAIL"',
        ),
        captured.replace(`/v1/services/${LEGIT}`, "/v1/services/web"),
        captured.replace(
          /x-failover-content-sha256: [0-9a-f]{64}/,
          `x-failover-content-sha256: ${bodyDigest("{}")}`,
        ),
        captured.replace(/sig=([0-9a-f])/, (_, c) => `sig=${c === "0" ? "1" : "0"}`),
      ]);
      break;
    }
    case 6: {
      // Stale or future timestamps, with the read-only key.
      const now = Date.now() + pick(rng, [-31_000, 31_000, -3_600_000, 1e12]);
      request = signedRequest(RO, method, target, { body, headers, now }).text;
      break;
    }
    case 7: {
      // Malformed or oversized authorization, wrong or missing digest.
      const auth = pick(rng, [
        "Basic dXNlcjpwYXNz",
        `FAILOVER-HMAC-SHA256 keyId=${hex(rng, 16)}`,
        `FAILOVER-HMAC-SHA256 keyId=${keyId(RO)}, ts=1, nonce=${hex(rng, 32)}, sig=${
          hex(rng, 64)
        }, ${"x=y, ".repeat(200)}`,
        `FAILOVER-HMAC-SHA256 keyId=${keyId(RO)}, ts=-1, nonce=${hex(rng, 31)}, sig=${
          hex(rng, 64)
        }`,
        `FAILOVER-HMAC-SHA256 ${"=".repeat(600)}`,
      ]);
      const signed = signedRequest(null, method, target, {
        body,
        headers: [...headers, `authorization: ${auth}`],
      });
      request = signed.text;
      break;
    }
    default: {
      const signed = signedRequest(RO, method, target, {
        body: body || '{"state":"FAIL"}',
        headers: [
          ...headers,
          `${CONTENT_DIGEST_HEADER}: ${pick(rng, [hex(rng, 64), "X".repeat(64), ""])}`,
        ],
        digestHeader: false,
      });
      request = signed.text;
    }
  }
  const write = /^(PUT|DELETE|POST|PATCH) /.test(request);
  await lane.send(ctx, request, write);
}

async function replay(ctx: AttackContext, lane: Lane): Promise<void> {
  const { rng } = ctx;
  if (ctx.captured.length === 0 || rng(25) === 0) await ctx.legitWrite();
  const captured = pick(rng, ctx.captured);
  const variant = pick(rng, [
    captured,
    captured,
    captured.replace("host: faild", "host: other:7100"),
    captured.replace("\r\n\r\n", "\r\nx-replayed: 1\r\n\r\n"),
    captured.replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n"),
  ]);
  try {
    lane.conn ??= await RawConnection.open(ctx.port);
    if (!(await lane.conn.write(variant))) throw new Error("reset");
    const answer = await lane.conn.read(4000);
    if (answer === null) {
      ctx.outcome("closed");
      lane.close();
      return;
    }
    ctx.outcome(answer.status);
    if (answer.status !== 401) {
      ctx.violation(`a replayed request was answered ${answer.status}: ${describe(variant)}`);
    }
    if (lane.conn.peerClosed || answer.headers.get("connection") === "close") lane.close();
  } catch {
    ctx.outcome("error");
    lane.close();
  }
}

async function nonce(ctx: AttackContext, lane: Lane): Promise<void> {
  const { rng } = ctx;
  const fixed = (n: string) => ({ next: () => n }) as NonceSequence;
  let nonces: NonceSequence | undefined;
  switch (rng(5)) {
    case 0:
    case 1: {
      // A poller's session, pushed to its last counter with the read-only key.
      const session = pick(rng, ctx.pollerSessions);
      nonces = fixed(`${session}00000000${pick(rng, ["ffffffff", "7fffffff", hex(rng, 8)])}`);
      break;
    }
    case 2:
      // A new session every time: the read-only key's share of the table fills.
      nonces = new NonceSequence();
      break;
    case 3:
      // Random nonces (undefined: signRequest draws one).
      break;
    default:
      // The same nonce over and over.
      nonces = fixed(`${"0".repeat(16)}00000000${hex(rng, 1).padStart(8, "0")}`);
  }
  const request = signedRequest(RO, "GET", pick(rng, ["/v1/services", "/v1/services/web"]), {
    ...(nonces ? { nonces } : {}),
  }).text;
  await lane.send(ctx, request, false);
}

// ---------------------------------------------------------------------------------------------
// Driver.
// ---------------------------------------------------------------------------------------------

function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

function percentile(hist: Map<number, number>, p: number): number {
  let total = 0;
  for (const n of hist.values()) total += n;
  if (total === 0) return NaN;
  const target = Math.ceil(total * p);
  let seen = 0;
  for (const b of [...hist.keys()].sort((x, y) => x - y)) {
    seen += hist.get(b)!;
    if (seen >= target) return ((b + 1) * BUCKET_US) / 1000;
  }
  return NaN;
}

/** The report of one attack kind. */
interface KindReport {
  kind: Kind;
  requests: number;
  seconds: number;
  outcomes: Record<string, number>;
  rssEndMiB: number;
  rssPeakMiB: number;
  /** faild's V8 heap in use and reserved, and external memory, at the end (from /metrics). */
  heapUsedMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
  polls: number;
  pollErrors: number;
  pollP50Ms: number;
  pollP99Ms: number;
}

/** The report of a run. */
export interface FuzzReport {
  command: string;
  requests: number;
  warmupRequests: number;
  seed: number;
  seconds: number;
  rssBeforeMiB: number;
  /** faild's V8 heap and external memory before the attacks. */
  memoryBefore: { heapUsedMiB: number; heapTotalMiB: number; externalMiB: number };
  rssAfterMiB: number;
  rssPeakMiB: number;
  rssBoundMiB: number;
  faildLogLines: number;
  kinds: KindReport[];
  failures: string[];
  ok: boolean;
}

/** faild's own view of its memory, from /metrics. */
async function faildMemory(client: FaildClient) {
  try {
    const text = await client.metrics();
    const get = (name: string) =>
      Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]) / 1048576;
    const count = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
    if (Deno.env.get("FUZZ_DEBUG")) {
      console.error(
        `    connections ${count("faild_http_connections")}, streams ${
          count("faild_event_streams")
        }, nonces ${count("faild_nonce_cache_entries")}`,
      );
    }
    return {
      heapUsedMiB: get("faild_heap_used_bytes"),
      heapTotalMiB: get("faild_heap_total_bytes"),
      externalMiB: get("faild_external_bytes"),
    };
  } catch {
    return { heapUsedMiB: NaN, heapTotalMiB: NaN, externalMiB: NaN };
  }
}

async function startFaild(o: FuzzOptions, dir: string) {
  await Deno.writeTextFile(
    `${dir}/community`,
    `*  ${RW}  RW\n*  ${RO}  RO\nstatus-*  -  RO\n`,
    { mode: 0o600 },
  );
  const log = await Deno.open(`${dir}/faild.log`, { write: true, create: true, truncate: true });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...(o.v8Flags ? [`--v8-flags=${o.v8Flags}`] : []),
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-sys=hostname",
      o.faild,
      "-c",
      `${dir}/community`,
      "-s",
      `${dir}/state`,
      "--listen",
      "127.0.0.1:0",
      "--name",
      "fuzz",
      "--ready-file",
      `${dir}/ready`,
      "--header-timeout",
      "1",
      "--body-timeout",
      "1",
    ],
    stdout: "null",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const logDone = child.stderr.pipeTo(log.writable);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      const url = (await Deno.readTextFile(`${dir}/ready`)).trim();
      if (url) return { child, url, logDone };
    } catch {
      // Not ready yet.
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill("SIGKILL");
  await child.status;
  throw new Error(`faild did not start: ${await Deno.readTextFile(`${dir}/faild.log`)}`);
}

async function fuzz(o: FuzzOptions): Promise<FuzzReport> {
  const started = performance.now();
  const dir = await Deno.makeTempDir({ prefix: "faild-fuzz-" });
  const { child, url, logDone } = await startFaild(o, dir);
  const pid = child.pid;
  let exited: Deno.CommandStatus | null = null;
  child.status.then((s) => exited = s);
  const port = Number(new URL(url).port);
  const failures: string[] = [];
  const client = new FaildClient(url, { key: RW, timeoutMs: 10_000 });
  const captured: string[] = [];
  // Seed, capturing the seeding writes as a sniffer would.
  const legitNonces = new NonceSequence();
  let lastLegit = "";
  const legitConn = { c: null as RawConnection | null };
  // One legitimate writer: its writes go one after the other on one connection.
  let legitQueue: Promise<void> = Promise.resolve();
  const legitWrite = () => {
    legitQueue = legitQueue.then(legitWriteNow).catch((error) => {
      legitConn.c?.close();
      legitConn.c = null;
      failures.push(`a legitimate write failed: ${error}`);
    });
    return legitQueue;
  };
  const legitWriteNow = async () => {
    const state = pick(rng, ["UP", "RECOVER", "FAIL"]);
    const detail = `legit ${hex(rng, 8)}`;
    const body = JSON.stringify({ state, detail });
    const { text } = signedRequest(RW, "PUT", `/v1/services/${LEGIT}`, {
      body,
      nonces: legitNonces,
    });
    let answer = null;
    for (let attempt = 0; attempt < 2 && answer === null; attempt++) {
      // A kept-alive connection idle for long is closed by faild: open another.
      if (attempt > 0) legitConn.c?.close();
      if (attempt > 0 || legitConn.c === null) legitConn.c = await RawConnection.open(port);
      await legitConn.c.write(text);
      answer = await legitConn.c.read(10_000);
    }
    if (answer === null || answer.status >= 300) {
      legitConn.c?.close();
      legitConn.c = null;
      failures.push(`a legitimate write failed: ${answer?.status} ${answer?.body}`);
      return;
    }
    lastLegit = detail;
    captured.push(text);
    if (captured.length > 64) captured.shift();
    // A legitimate read, captured too.
    captured.push(signedRequest(RW, "GET", "/v1/services/web", { nonces: legitNonces }).text);
    await legitConn.c!.write(captured[captured.length - 1]!);
    await legitConn.c!.read(10_000);
  };
  const rng = makeRng(o.seed);
  for (const [name, state] of Object.entries(SEEDED)) {
    const body = JSON.stringify({ state, detail: "seeded" });
    const { text } = signedRequest(RW, "PUT", `/v1/services/${name}`, {
      body,
      nonces: legitNonces,
    });
    const c = await RawConnection.open(port);
    await c.write(text);
    const answer = await c.read(10_000);
    c.close();
    if (answer?.status !== 201 && answer?.status !== 200) {
      throw new Error(`Cannot seed ${name}: ${answer?.status} ${answer?.body}`);
    }
    captured.push(text);
  }
  await legitWrite();
  const snapshot = new Map(
    (await client.list()).services.filter((s) => s.name in SEEDED).map((s) => [s.name, s]),
  );

  // The pollers.
  const poller = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--poller", url, String(o.pollers)],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const seconds: PollSecond[] = [];
  let pollerSessions: string[] = [];
  const gotSessions = Promise.withResolvers<void>();
  const pollerDone = (async () => {
    let rest = "";
    for await (const chunk of poller.stdout.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) {
        if (!line.trim()) continue;
        const v = JSON.parse(line);
        if (Array.isArray(v.sessions)) {
          pollerSessions = v.sessions;
          gotSessions.resolve();
        } else seconds.push(v as PollSecond);
      }
    }
  })();
  await gotSessions.promise;

  let rssPeak = rssMiB(pid);
  const sampler = setInterval(() => rssPeak = Math.max(rssPeak, rssMiB(pid) || 0), 250);

  const check = async (when: string) => {
    if (exited !== null) {
      failures.push(`${when}: faild exited (${JSON.stringify(exited)})`);
      return;
    }
    try {
      const list = await client.list();
      for (const [name, before] of snapshot) {
        const now = list.services.find((s) => s.name === name);
        if (JSON.stringify(now) !== JSON.stringify(before)) {
          failures.push(
            `${when}: ${name} changed: ${JSON.stringify(before)} -> ${JSON.stringify(now)}`,
          );
        }
      }
      const legit = list.services.find((s) => s.name === LEGIT) as ServiceRecord | undefined;
      if (lastLegit !== "" && legit?.detail !== lastLegit) {
        failures.push(
          `${when}: ${LEGIT} holds ${
            JSON.stringify(legit?.detail)
          }, the last legitimate write was ${lastLegit}`,
        );
      }
    } catch (error) {
      failures.push(`${when}: faild does not answer its owner: ${error}`);
    }
  };

  const runKind = async (kind: Kind, count: number, violations: string[]) => {
    const outcomes: Record<string, number> = {};
    let next = 0;
    const ctx: AttackContext = {
      port,
      host: "faild",
      rng,
      pollerSessions,
      captured,
      outcome: (what) => outcomes[String(what)] = (outcomes[String(what)] ?? 0) + 1,
      violation: (what) => {
        if (violations.length < 20) violations.push(`${kind}: ${what}`);
      },
      legitWrite,
    };
    const lanes = kind === "slow"
      ? o.concurrency * 8
      : kind === "malformed"
      ? o.concurrency * 4
      : o.concurrency;
    await Promise.all(Array.from({ length: lanes }, async () => {
      const lane = new Lane();
      while (next < count && exited === null) {
        next++;
        switch (kind) {
          case "malformed":
            await malformed(ctx);
            break;
          case "chunked":
            await chunked(ctx);
            break;
          case "slow":
            await slow(ctx);
            break;
          case "protocol":
            await protocol(ctx, lane);
            break;
          case "replay":
            await replay(ctx, lane);
            break;
          case "nonce":
            await nonce(ctx, lane);
            break;
        }
      }
      lane.close();
    }));
    return outcomes;
  };

  // Warm-up: every kind a little, so that "before" is faild's working size, not its idle size.
  const warmup = Math.min(400, Math.ceil(o.requests / 20));
  const warmViolations: string[] = [];
  for (const kind of o.kinds) {
    await runKind(kind, kind === "slow" ? Math.ceil(warmup / 4) : warmup, warmViolations);
  }
  await new Promise((r) => setTimeout(r, 2000));
  const rssBefore = rssMiB(pid);
  const memoryBefore = await faildMemory(client);
  if (!o.json) {
    console.error(
      `  before: RSS ${rssBefore.toFixed(1)} MiB (heap ${memoryBefore.heapUsedMiB.toFixed(1)}/` +
        `${memoryBefore.heapTotalMiB.toFixed(1)}, external ${memoryBefore.externalMiB.toFixed(1)})`,
    );
  }
  rssPeak = rssBefore;

  const kinds: KindReport[] = [];
  const total = Object.entries(KINDS).filter(([k]) => o.kinds.includes(k as Kind))
    .reduce((s, [, w]) => s + w, 0);
  let done = 0;
  for (const [i, kind] of o.kinds.entries()) {
    const count = i === o.kinds.length - 1
      ? o.requests - done
      : Math.round((o.requests * KINDS[kind]) / total);
    done += count;
    const t0 = Date.now();
    const peakBefore = rssPeak;
    rssPeak = rssMiB(pid);
    const violations: string[] = [];
    const outcomes = await runKind(kind, count, violations);
    const t1 = Date.now();
    failures.push(...violations);
    await check(`after ${kind}`);
    // The pollers' windows that end inside this kind's run.
    await new Promise((r) => setTimeout(r, 2 * WINDOW_MS));
    const hist = new Map<number, number>();
    let polls = 0;
    let pollErrors = 0;
    for (const s of seconds) {
      if (s.t <= t0 || s.t > t1 + WINDOW_MS) continue;
      for (const [b, n] of Object.entries(s.hist)) {
        hist.set(Number(b), (hist.get(Number(b)) ?? 0) + n);
        polls += n;
      }
      pollErrors += s.errors;
      if (s.errors > 0 && s.error) failures.push(`${kind}: a legitimate poll failed: ${s.error}`);
    }
    const memory = await faildMemory(client);
    kinds.push({
      kind,
      requests: count,
      seconds: (t1 - t0) / 1000,
      outcomes,
      rssEndMiB: rssMiB(pid),
      rssPeakMiB: rssPeak,
      ...memory,
      polls,
      pollErrors,
      pollP50Ms: percentile(hist, 0.5),
      pollP99Ms: percentile(hist, 0.99),
    });
    rssPeak = Math.max(rssPeak, peakBefore);
    if (!o.json) {
      const k = kinds[kinds.length - 1]!;
      console.error(
        `  ${kind}: ${count} requests in ${k.seconds.toFixed(1)} s, RSS ${
          k.rssEndMiB.toFixed(1)
        } ` +
          `MiB (heap ${k.heapUsedMiB.toFixed(1)}/${k.heapTotalMiB.toFixed(1)}, external ` +
          `${k.externalMiB.toFixed(1)}), polls p99 ${k.pollP99Ms.toFixed(2)} ms (${polls} polls, ` +
          `${pollErrors} errors)`,
      );
    }
  }
  failures.push(...warmViolations);

  // Settle, then the last checks.
  await new Promise((r) => setTimeout(r, 3000));
  const rssAfter = rssMiB(pid);
  await check("at the end");
  clearInterval(sampler);
  if (!(rssAfter - rssBefore <= o.rssBound)) {
    failures.push(
      `faild's RSS grew from ${rssBefore.toFixed(1)} to ${rssAfter.toFixed(1)} MiB, more than ` +
        `${o.rssBound} MiB`,
    );
  }
  try {
    poller.stdin.close();
  } catch {
    // Already closed.
  }
  await pollerDone;
  await poller.status;
  legitConn.c?.close();
  client.close();
  if (exited === null) child.kill("SIGTERM");
  const status = await child.status;
  if (status.code !== 0 && failures.every((f) => !f.includes("exited"))) {
    failures.push(`faild stopped with code ${status.code} at SIGTERM`);
  }
  await logDone.catch(() => {});
  const logText = await Deno.readTextFile(`${dir}/faild.log`);
  const logLines = logText.split("\n").filter((l) => l).length;
  await Deno.remove(dir, { recursive: true });
  return {
    command: `deno task fuzz:faild ${Deno.args.join(" ")}`.trim(),
    requests: o.requests,
    warmupRequests: warmup * o.kinds.length,
    seed: o.seed,
    seconds: (performance.now() - started) / 1000,
    rssBeforeMiB: rssBefore,
    memoryBefore,
    rssAfterMiB: rssAfter,
    rssPeakMiB: Math.max(rssPeak, ...kinds.map((k) => k.rssPeakMiB)),
    rssBoundMiB: o.rssBound,
    faildLogLines: logLines,
    kinds,
    failures,
    ok: failures.length === 0,
  };
}

function printReport(r: FuzzReport): void {
  console.log(
    `faild fuzz: ${r.requests} hostile requests (+${r.warmupRequests} warm-up), seed ${r.seed}, ` +
      `${r.seconds.toFixed(0)} s`,
  );
  console.log(
    "kind        requests   seconds   RSS end MiB   polls p50 ms   polls p99 ms   errors",
  );
  for (const k of r.kinds) {
    console.log(
      `${k.kind.padEnd(10)} ${String(k.requests).padStart(9)} ${k.seconds.toFixed(1).padStart(9)} ${
        k.rssEndMiB.toFixed(1).padStart(13)
      } ${k.pollP50Ms.toFixed(2).padStart(14)} ${k.pollP99Ms.toFixed(2).padStart(14)} ${
        String(k.pollErrors).padStart(8)
      }`,
    );
  }
  for (const k of r.kinds) {
    const top = Object.entries(k.outcomes).sort((a, b) => b[1] - a[1]).slice(0, 8)
      .map(([s, n]) => `${s}: ${n}`).join(", ");
    console.log(`  ${k.kind} answers: ${top}`);
  }
  console.log(
    `faild RSS: ${r.rssBeforeMiB.toFixed(1)} MiB before, ${r.rssAfterMiB.toFixed(1)} MiB after ` +
      `(bound +${r.rssBoundMiB}), peak ${
        r.rssPeakMiB.toFixed(1)
      } MiB; ${r.faildLogLines} log lines`,
  );
  if (r.ok) console.log("every check held");
  else {
    console.log(`${r.failures.length} check(s) failed:`);
    for (const f of r.failures.slice(0, 40)) console.log(`  ${f}`);
  }
}

/**
 * Runs the harness (or, with `--poller`, the pollers' process).
 *
 * @param args Command line arguments.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  if (args[0] === "--poller") return await pollerProcess(args.slice(1));
  return await runBenchCli(args, parseOptions, HELP, async (o: FuzzOptions) => {
    const report = await fuzz(o);
    if (o.json) console.log(JSON.stringify(report, null, 2));
    else printReport(report);
    return report.ok ? 0 : 1;
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
