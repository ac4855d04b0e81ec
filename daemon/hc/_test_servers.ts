/**
 * Real servers for hc's tests: a tiny UDP DNS responder, an SMTP listener and an HTTP server,
 * each with switches to inject failures (stop, delay past the timeout, wrong answers), and a
 * dnsmasq launcher. Test support only.
 *
 * @module
 */
import dgram from "node:dgram";
import { decodeMessage } from "./checks/dns.ts";

/** Behaviour of {@linkcode startDnsResponder}, changeable while it runs. */
export interface DnsBehaviour {
  /** Records by lower-case name, then by type name: `{ "www.example.test": { A: ["198.18.0.10"] } }`. */
  records: Record<string, Record<string, string[]>>;
  /** Do not answer at all. */
  silent: boolean;
  /** Answer after this many ms. */
  delayMs: number;
  /** Answer with the TC (truncated) flag and no records. */
  truncate: boolean;
}

/** A running DNS responder. */
export interface DnsResponder {
  /** Its port on 127.0.0.1. */
  port: number;
  /** Change to inject failures. */
  behaviour: DnsBehaviour;
  /** Queries received. */
  queries: number;
  /** Stops it. */
  close(): Promise<void>;
}

function encodeData(type: string, value: string): Uint8Array {
  if (type === "A") return new Uint8Array(value.split(".").map(Number));
  if (type === "AAAA") {
    const [h = "", t] = value.split("::");
    const head = h === "" ? [] : h.split(":");
    const tail = t === undefined || t === "" ? [] : t.split(":");
    const words = [...head, ...Array(8 - head.length - tail.length).fill("0"), ...tail];
    const out = new Uint8Array(16);
    words.forEach((w, i) => {
      const n = parseInt(w, 16);
      out[i * 2] = n >> 8;
      out[i * 2 + 1] = n & 0xff;
    });
    return out;
  }
  if (type === "TXT") {
    const b = new TextEncoder().encode(value);
    return new Uint8Array([b.length, ...b]);
  }
  throw new RangeError(`Test responder cannot encode ${type}`);
}

const TYPE_CODES: Record<string, number> = { A: 1, TXT: 16, AAAA: 28 };

/**
 * Starts a DNS responder on 127.0.0.1 (UDP and TCP, one random port; TC only over UDP).
 *
 * @param records Initial records.
 * @returns The responder.
 */
export async function startDnsResponder(
  records: DnsBehaviour["records"],
): Promise<DnsResponder> {
  const socket = dgram.createSocket("udp4");
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const self: DnsResponder = {
    port: 0,
    behaviour: { records, silent: false, delayMs: 0, truncate: false },
    queries: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        socket.close(() => resolve());
      }),
  };
  /** The answer to a query, or `null` for none; TC and no records when `udp` and truncating. */
  const answer = (msg: Uint8Array, udp: boolean): Uint8Array | null => {
    self.queries++;
    if (self.behaviour.silent) return null;
    const q = decodeMessage(msg);
    const question = q.questions[0];
    if (!question) return null;
    const truncate = udp && self.behaviour.truncate;
    const typeName = Object.keys(TYPE_CODES).find((k) => TYPE_CODES[k] === question.type) ?? "";
    const byName = self.behaviour.records[question.name];
    const values = truncate ? [] : byName?.[typeName] ?? [];
    const rcode = byName === undefined ? 3 : 0;
    // Header + the question copied from the query.
    const parts: number[] = [];
    parts.push(
      q.id >> 8,
      q.id & 0xff,
      truncate ? 0x83 : 0x81,
      0x80 | rcode,
      0,
      1,
      0,
      values.length,
    );
    parts.push(0, 0, 0, 0);
    parts.push(...msg.subarray(12));
    for (const v of values) {
      const data = encodeData(typeName, v);
      parts.push(0xc0, 0x0c, question.type >> 8, question.type & 0xff, 0, 1, 0, 0, 0, 60);
      parts.push(data.length >> 8, data.length & 0xff, ...data);
    }
    return new Uint8Array(parts);
  };
  const later = (f: () => void): void => {
    if (self.behaviour.delayMs <= 0) return f();
    const t = setTimeout(() => {
      timers.delete(t);
      f();
    }, self.behaviour.delayMs);
    timers.add(t);
  };
  socket.on("message", (msg: Uint8Array, rinfo: { address: string; port: number }) => {
    const reply = answer(new Uint8Array(msg), true);
    if (reply === null) return;
    later(() => {
      try {
        socket.send(reply, rinfo.port, rinfo.address);
      } catch { /* closed */ }
    });
  });
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
  self.port = socket.address().port;
  // The same records over TCP on the same port (RFC 1035 4.2.2: a two-byte length first).
  const tcp = Deno.listen({ hostname: "127.0.0.1", port: self.port });
  const conns = new Set<Deno.Conn>();
  (async () => {
    for await (const conn of tcp) {
      conns.add(conn);
      (async () => {
        const buf = new Uint8Array(2 + 512);
        let got = 0;
        while (got < 2 || got < 2 + ((buf[0]! << 8) | buf[1]!)) {
          const n = await conn.read(buf.subarray(got)).catch(() => null);
          if (n === null) return;
          got += n;
        }
        const reply = answer(buf.subarray(2, got), false);
        if (reply === null) return;
        later(() => {
          const framed = new Uint8Array([reply.length >> 8, reply.length & 0xff, ...reply]);
          conn.write(framed).catch(() => {});
        });
      })().catch(() => {});
    }
  })().catch(() => {});
  const closeUdp = self.close;
  self.close = async () => {
    tcp.close();
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await closeUdp();
  };
  return self;
}

/** Behaviour of {@linkcode startSmtpServer}. */
export interface SmtpBehaviour {
  /** The greeting line, e.g. `220 mx.test ESMTP`. */
  banner: string;
  /** The code answered to EHLO. */
  ehloCode: number;
  /** Wait before the banner, ms. */
  delayMs: number;
}

/** A running SMTP listener. */
export interface SmtpServer {
  /** Port on 127.0.0.1. */
  port: number;
  /** Change to inject failures. */
  behaviour: SmtpBehaviour;
  /** EHLO names received. */
  ehlos: string[];
  /** Stops listening and closes connections. */
  close(): Promise<void>;
}

/**
 * Starts a small SMTP listener on 127.0.0.1 (random port).
 *
 * @returns The server.
 */
export function startSmtpServer(): SmtpServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const wakers = new Set<() => void>();
  const self: SmtpServer = {
    port: (listener.addr as Deno.NetAddr).port,
    behaviour: { banner: "220 mx.example.test ESMTP ready", ehloCode: 250, delayMs: 0 },
    ehlos: [],
    async close() {
      listener.close();
      for (const t of timers) clearTimeout(t);
      for (const w of wakers) w();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await Promise.all([...tasks, accepting]);
    },
  };
  const sleep = (ms: number): Promise<void> =>
    new Promise((r) => {
      const t = setTimeout(() => {
        timers.delete(t);
        r();
      }, ms);
      timers.add(t);
      wakers.add(r);
    });
  const serve = async (conn: Deno.Conn): Promise<void> => {
    const enc = new TextEncoder();
    const buf = new Uint8Array(1024);
    let text = "";
    try {
      if (self.behaviour.delayMs > 0) await sleep(self.behaviour.delayMs);
      await conn.write(enc.encode(self.behaviour.banner + "\r\n"));
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
        let eol;
        while ((eol = text.indexOf("\r\n")) >= 0) {
          const line = text.slice(0, eol);
          text = text.slice(eol + 2);
          if (line.startsWith("EHLO ")) {
            self.ehlos.push(line.slice(5));
            const c = self.behaviour.ehloCode;
            await conn.write(
              enc.encode(
                c === 250
                  ? "250-mx.example.test\r\n250-SIZE 1000000\r\n250 HELP\r\n"
                  : `${c} no\r\n`,
              ),
            );
          } else if (line === "QUIT") {
            await conn.write(enc.encode("221 bye\r\n"));
            return;
          } else await conn.write(enc.encode("500 what\r\n"));
        }
      }
    } catch {
      /* closed by the test */
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        const t = serve(conn);
        tasks.add(t);
        t.finally(() => tasks.delete(t));
      }
    } catch { /* listener closed */ }
  })();
  return self;
}

/** Behaviour of {@linkcode startHttpServer}. */
export interface HttpBehaviour {
  /** Status answered. */
  status: number;
  /** Body answered. */
  body: string;
  /** Wait before answering, ms. */
  delayMs: number;
}

/** A running HTTP server whose answer the test controls. */
export interface HttpServer {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  url: string;
  /** Port. */
  port: number;
  /** Change to inject failures. */
  behaviour: HttpBehaviour;
  /** Paths (with query) of the requests received. */
  paths: string[];
  /** JSON bodies of POST requests. */
  posts: unknown[];
  /** Stops the server. */
  close(): Promise<void>;
}

/**
 * Starts an HTTP server on 127.0.0.1 port 0.
 *
 * @param options TLS certificate and key (PEM) for HTTPS, and a port to reuse.
 * @returns The server.
 */
export function startHttpServer(
  options: { cert?: string; key?: string; port?: number } = {},
): HttpServer {
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const wakers = new Set<() => void>();
  const ac = new AbortController();
  const self: HttpServer = {
    url: "",
    port: 0,
    behaviour: { status: 200, body: "ok\n", delayMs: 0 },
    paths: [],
    posts: [],
    async close() {
      for (const t of timers) clearTimeout(t);
      for (const w of wakers) w();
      ac.abort();
      await server.finished;
    },
  };
  const tls = options.cert && options.key ? { cert: options.cert, key: options.key } : {};
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: options.port ?? 0,
    signal: ac.signal,
    onListen: () => {},
    ...tls,
  }, async (req) => {
    const u = new URL(req.url);
    self.paths.push(u.pathname + u.search);
    if (req.method === "POST") self.posts.push(await req.json().catch(() => null));
    const { status, body, delayMs } = self.behaviour;
    if (delayMs > 0) {
      await new Promise<void>((r) => {
        const t = setTimeout(() => {
          timers.delete(t);
          r();
        }, delayMs);
        timers.add(t);
        wakers.add(r);
      });
    }
    return new Response(body, { status });
  });
  self.port = server.addr.port;
  self.url = `${options.cert ? "https" : "http"}://127.0.0.1:${self.port}`;
  return self;
}

/** Whether Debian's dnsmasq is installed. */
export function hasDnsmasq(): boolean {
  try {
    return Deno.statSync("/usr/sbin/dnsmasq").isFile;
  } catch {
    return false;
  }
}

/**
 * A free UDP+TCP port on 127.0.0.1 (briefly bound to find it).
 *
 * @returns The port.
 */
export async function freePort(): Promise<number> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const s = dgram.createSocket("udp4");
  await new Promise<void>((resolve, reject) => {
    s.once("error", reject);
    s.bind(port, "127.0.0.1", () => resolve());
  });
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A running dnsmasq. */
export interface Dnsmasq {
  /** Its port on 127.0.0.1. */
  port: number;
  /** Stops it (SIGTERM) and waits. */
  stop(): Promise<void>;
}

/**
 * Starts dnsmasq in the foreground on 127.0.0.1, answering `www.example.test` with 198.18.0.10.
 *
 * @param port The port (UDP and TCP), or a free one.
 * @returns The running dnsmasq, once it answers.
 */
export async function startDnsmasq(port?: number): Promise<Dnsmasq> {
  const p = port ?? await freePort();
  const child = new Deno.Command("/usr/sbin/dnsmasq", {
    args: [
      "--no-resolv",
      "--no-hosts",
      "--address=/www.example.test/198.18.0.10",
      "--txt-record=txt.example.test,hello hc",
      "-k",
      "-p",
      String(p),
      "--listen-address=127.0.0.1",
      "--bind-interfaces",
      "--pid-file=",
      "--user=root",
      "-C",
      "/dev/null",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let errText = "";
  const drain = (async () => {
    try {
      while (true) {
        const { value, done } = await stderr.read();
        if (done) break;
        if (errText.length < 4096) errText += value;
      }
    } catch { /* closed */ }
  })();
  // Wait until it answers (at most 5 s).
  const { queryUdp } = await import("./checks/dns.ts");
  const deadline = Date.now() + 5000;
  while (true) {
    try {
      await queryUdp(
        { host: "127.0.0.1", port: p },
        { name: "www.example.test", type: 1, signal: AbortSignal.timeout(200) },
      );
      break;
    } catch (e) {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        await child.status;
        await drain;
        throw new Error(`dnsmasq did not answer on port ${p}: ${(e as Error).message} ${errText}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    port: p,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await drain;
    },
  };
}
