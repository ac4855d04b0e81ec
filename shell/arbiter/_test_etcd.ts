/**
 * Test helpers: a real single-member etcd on 127.0.0.1 (random ports, a temporary data
 * directory), and a TCP relay in front of it that a test can cut (black-hole) to partition one
 * client from etcd while etcd goes on expiring its leases. Internal: not re-exported.
 *
 * @module
 */

/** Longest life of a test etcd, in seconds. */
const MAX_LIFE_S = 600;

/** Where the Debian package installs etcd. */
const ETCD_PATHS = ["/usr/bin/etcd", "/usr/local/bin/etcd"];

/**
 * Tells why a real etcd cannot run here.
 *
 * @returns The reason (naming the Debian package), or `null` when etcd is installed.
 */
export async function etcdUnavailable(): Promise<string | null> {
  for (const p of ETCD_PATHS) {
    if (await Deno.stat(p).then((s) => s.isFile, () => false)) return null;
  }
  return "etcd is not installed (apt-get install etcd-server)";
}

async function etcdPath(): Promise<string> {
  for (const p of ETCD_PATHS) {
    if (await Deno.stat(p).then((s) => s.isFile, () => false)) return p;
  }
  throw new Error("Cannot start etcd: it is not installed (apt-get install etcd-server)");
}

/**
 * A free TCP port on 127.0.0.1 (bound, then released: another process could take it in
 * between, which a test start retries).
 *
 * @returns The port.
 */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A running single-member etcd. */
export interface TestEtcd {
  /** Its client URL, `http://127.0.0.1:PORT`. */
  endpoint: string;
  /** The process id (of `timeout`, which runs etcd and bounds its life). */
  pid: number;
  /** Its log so far (bounded). */
  log(): string;
  /** Stops it (SIGKILL) and removes its data directory. */
  stop(): Promise<void>;
}

/** Options of {@linkcode startEtcd}. */
export interface TestEtcdOptions {
  /** Heartbeat interval in ms (etcd's default 100). */
  heartbeatMs?: number;
  /**
   * Election timeout in ms (etcd's default 1000, with which the smallest lease TTL etcd grants
   * is 2 s: `ceil(1.5 × election timeout)`).
   */
  electionMs?: number;
}

/**
 * Starts etcd (etcd's default timings unless given), waits until it serves, and returns it.
 * Call `stop()` in a `finally`.
 *
 * @param options Heartbeat and election timeout.
 * @returns The running etcd.
 */
export async function startEtcd(options: TestEtcdOptions = {}): Promise<TestEtcd> {
  const bin = await etcdPath();
  let lastError = "";
  for (let attempt = 0; attempt < 3; attempt++) {
    const dir = await Deno.makeTempDir({ prefix: "failover-etcd-" });
    const client = freePort();
    const peer = freePort();
    // Under `timeout`: an etcd orphaned by a test process killed hard dies within 10 minutes.
    // `timeout` passes our SIGTERM on to etcd.
    const child = new Deno.Command("timeout", {
      args: [
        "-s",
        "KILL",
        String(MAX_LIFE_S),
        bin,
        "--name",
        "t1",
        "--data-dir",
        `${dir}/data`,
        "--listen-client-urls",
        `http://127.0.0.1:${client}`,
        "--advertise-client-urls",
        `http://127.0.0.1:${client}`,
        "--listen-peer-urls",
        `http://127.0.0.1:${peer}`,
        "--initial-advertise-peer-urls",
        `http://127.0.0.1:${peer}`,
        "--initial-cluster",
        `t1=http://127.0.0.1:${peer}`,
        "--initial-cluster-state",
        "new",
        "--heartbeat-interval",
        String(options.heartbeatMs ?? 100),
        "--election-timeout",
        String(options.electionMs ?? 1000),
        "--log-level",
        "warn",
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let log = "";
    const collect = async (s: ReadableStream<Uint8Array>) => {
      for await (const c of s.pipeThrough(new TextDecoderStream())) {
        log = (log + c).slice(-16_384);
      }
    };
    const drained = Promise.all([collect(child.stdout), collect(child.stderr)]);
    let exited = false;
    const status = child.status.then((s) => {
      exited = true;
      return s;
    });
    const endpoint = `http://127.0.0.1:${client}`;
    const stop = async () => {
      const signal = (sig: Deno.Signal) => {
        if (exited) return;
        try {
          child.kill(sig);
        } catch {
          // Gone.
        }
      };
      signal("SIGTERM");
      const killer = setTimeout(() => signal("SIGKILL"), 3000);
      await status;
      clearTimeout(killer);
      await drained;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    };
    const deadline = Date.now() + 15_000;
    let ready = false;
    while (!exited && Date.now() < deadline) {
      try {
        const r = await fetch(`${endpoint}/v3/kv/range`, {
          method: "POST",
          body: JSON.stringify({ key: btoa("ready") }),
          signal: AbortSignal.timeout(500),
        });
        const body = await r.text();
        if (r.status === 200 && body.includes('"revision"')) {
          ready = true;
          break;
        }
      } catch {
        // Not listening yet.
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (ready) return { endpoint, pid: child.pid, log: () => log, stop };
    lastError = log;
    await stop();
  }
  throw new Error(`Cannot start etcd: it did not serve within 15 s:\n${lastError}`);
}

/** A TCP relay to a target that can be cut: while cut it forwards nothing (a black hole). */
export interface CuttableRelay {
  /** The relay's URL (`http://127.0.0.1:PORT`). */
  endpoint: string;
  /** Cuts: bytes are swallowed both ways and new connections hang (nothing is closed). */
  cut(): void;
  /** Heals: new connections work again (the connections open during the cut stay dead). */
  heal(): void;
  /** Closes the relay and every connection. */
  close(): Promise<void>;
}

/**
 * Starts a relay on 127.0.0.1 in front of `target` (e.g. a test etcd's client port).
 *
 * @param target `http://127.0.0.1:PORT`.
 * @returns The relay.
 */
export function startRelay(target: string): CuttableRelay {
  const url = new URL(target);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  let cut = false;
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const pipe = async (from: Deno.Conn, to: Deno.Conn, dead: () => boolean) => {
    const buf = new Uint8Array(16_384);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        if (cut || dead()) continue; // Swallowed: the black hole.
        await to.write(buf.subarray(0, n));
      }
    } catch {
      // Closed.
    }
    await to.closeWrite().catch(() => {});
  };
  const serve = async (conn: Deno.Conn) => {
    const bornCut = cut;
    conns.add(conn);
    let upstream: Deno.Conn | null = null;
    try {
      if (bornCut) {
        // A connection made during the cut never reaches the target.
        const buf = new Uint8Array(1024);
        while ((await conn.read(buf)) !== null) { /* swallow */ }
        return;
      }
      upstream = await Deno.connect({ hostname: url.hostname, port: Number(url.port) });
      conns.add(upstream);
      // A connection open when the cut starts stays dead after the heal (a TCP connection
      // through a partition does not come back on its own).
      let deadForever = false;
      const dead = () => {
        if (cut) deadForever = true;
        return deadForever;
      };
      await Promise.all([pipe(conn, upstream, dead), pipe(upstream, conn, dead)]);
    } catch {
      // Target down.
    } finally {
      for (const c of [conn, upstream]) {
        if (!c) continue;
        conns.delete(c);
        try {
          c.close();
        } catch {
          // Closed.
        }
      }
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        const t = serve(conn);
        tasks.add(t);
        t.finally(() => tasks.delete(t));
      }
    } catch {
      // Closed.
    }
  })();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    cut() {
      cut = true;
    },
    heal() {
      cut = false;
    },
    async close() {
      try {
        listener.close();
      } catch {
        // Closed.
      }
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // Closed.
        }
      }
      await accepting;
      await Promise.allSettled([...tasks]);
    },
  };
}
