/**
 * A stand-in for failsh's monitor port, for failmon and web page tests: serves `GET /` (the real
 * monitor page), `GET /v1/snapshot` and `GET /v1/stream` (SSE, `event: snapshot` at connect and on
 * every {@linkcode FakeFailsh.set}, `: keepalive` comments) from snapshots the test scripts. It can
 * drop every client and stop and restart listening on the same port, to test reconnecting.
 *
 * Also runnable by hand: `deno run -A tests/fake_failsh.ts [PORT]` serves a scripted failover that
 * repeats every few seconds.
 *
 * @module
 */
import type { FailshSnapshot, ServiceRecord } from "../lib/types.ts";
import { monitorPage } from "../shell/web/page.ts";

/** A running fake monitor port. */
export interface FakeFailsh {
  /** Base URL, e.g. `http://127.0.0.1:40123`. */
  readonly url: string;
  /** The port listened on. */
  readonly port: number;
  /** The snapshot served now. */
  readonly snapshot: FailshSnapshot;
  /** Number of stream clients connected now. */
  readonly clients: number;
  /** Resolves when the number of stream clients reaches at least `n`. */
  waitClients(n: number): Promise<void>;
  /** Serves a new snapshot and pushes it to every stream client. */
  set(snapshot: FailshSnapshot): void;
  /** Closes every stream connection (the server keeps listening). */
  dropClients(): void;
  /** Stops listening (clients see a refused connection) until {@linkcode FakeFailsh.restart}. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  restart(): void;
  /** Stops everything. */
  close(): Promise<void>;
}

const encoder = new TextEncoder();

/**
 * Starts a fake monitor port on 127.0.0.1.
 *
 * @param options First snapshot (default {@linkcode sampleSnapshot}), keepalive period (15 s),
 *   port (0: any free port).
 * @returns The running server.
 */
export function startFakeFailsh(
  options: { snapshot?: FailshSnapshot; keepaliveMs?: number; port?: number } = {},
): FakeFailsh {
  let snapshot = options.snapshot ?? sampleSnapshot();
  const clients = new Set<ReadableStreamDefaultController<Uint8Array>>();
  const waiters: { n: number; resolve: () => void }[] = [];
  const notify = () => {
    for (const w of [...waiters]) {
      if (clients.size >= w.n) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };
  const frame = () => encoder.encode(`event: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`);
  const keepalive = setInterval(() => {
    for (const c of clients) {
      try {
        c.enqueue(encoder.encode(": keepalive\n\n"));
      } catch {
        clients.delete(c);
      }
    }
  }, options.keepaliveMs ?? 15_000);

  function handler(request: Request): Response {
    const path = new URL(request.url).pathname;
    if (request.method !== "GET") return new Response("method not allowed\n", { status: 405 });
    if (path === "/") {
      return new Response(monitorPage({ title: `failsh ${snapshot.host}` }), {
        headers: { "content-type": "text/html; charset=utf-8" },
      });
    }
    if (path === "/v1/snapshot") {
      return Response.json(snapshot);
    }
    if (path === "/v1/stream") {
      let self: ReadableStreamDefaultController<Uint8Array> | undefined;
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          self = controller;
          controller.enqueue(encoder.encode("retry: 500\n\n"));
          controller.enqueue(frame());
          clients.add(controller);
          notify();
        },
        cancel() {
          if (self) clients.delete(self);
        },
      });
      return new Response(body, {
        headers: { "content-type": "text/event-stream", "cache-control": "no-store" },
      });
    }
    return new Response("not found\n", { status: 404 });
  }

  let server: Deno.HttpServer<Deno.NetAddr> | null = null;
  let port = options.port ?? 0;
  const listen = () => {
    server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, handler);
    port = server.addr.port;
  };
  listen();
  const dropClients = () => {
    for (const c of clients) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
    clients.clear();
  };
  const stop = async () => {
    dropClients();
    const s = server;
    server = null;
    await s?.shutdown();
  };

  return {
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get snapshot() {
      return snapshot;
    },
    get clients() {
      return clients.size;
    },
    waitClients(n: number) {
      return new Promise<void>((resolve) => {
        waiters.push({ n, resolve });
        notify();
      });
    },
    set(next: FailshSnapshot) {
      snapshot = next;
      const bytes = frame();
      for (const c of clients) {
        try {
          c.enqueue(bytes);
        } catch {
          clients.delete(c);
        }
      }
    },
    dropClients,
    stop,
    restart() {
      if (!server) listen();
    },
    async close() {
      clearInterval(keepalive);
      await stop();
    },
  };
}

function record(name: string, state: ServiceRecord["state"], at: number): ServiceRecord {
  return { name, state, lastChange: at, changes: 1, detail: "", setBy: "failsh" };
}

/**
 * A realistic snapshot of host `alpha`, backup (slave) of `web` whose master `beta` is up, and
 * master of `db`.
 *
 * @param now The snapshot's clock (default a fixed time, so rendering is reproducible).
 * @returns The snapshot.
 */
export function sampleSnapshot(now = Date.UTC(2026, 10, 24, 20, 0, 0)): FailshSnapshot {
  const started = now - 3_600_000;
  return {
    host: "alpha",
    startedAt: started,
    now,
    hosts: [
      {
        name: "alpha",
        url: "http://127.0.0.1:7101",
        self: true,
        reachable: true,
        misses: 0,
        lastConnect: now - 200,
        lastCall: now - 200,
        latencyMs: 0.31,
        lastError: null,
        services: [record("web", "FAIL", started), record("db", "UP", started + 5000)],
      },
      {
        name: "beta",
        url: "http://127.0.0.2:7101",
        self: false,
        reachable: true,
        misses: 0,
        lastConnect: now - 150,
        lastCall: now - 150,
        latencyMs: 0.52,
        lastError: null,
        services: [record("web", "UP", started + 2000), record("db", "FAIL", started)],
      },
    ],
    services: [
      {
        name: "web",
        state: "FAIL",
        role: "slave",
        masters: ["beta"],
        slaves: ["alpha"],
        intervalMs: 1000,
        lastChange: started,
        lastDecision: { at: now - 1000, action: "none", reason: "master beta is UP" },
        lastHandler: null,
      },
      {
        name: "db",
        state: "UP",
        role: "master",
        masters: ["alpha"],
        slaves: ["beta"],
        intervalMs: 1000,
        lastChange: started + 5000,
        lastDecision: {
          at: started + 4800,
          action: "start",
          reason: "this host is the first master and no slave is UP",
        },
        lastHandler: {
          kind: "start",
          startedAt: started + 4800,
          durationMs: 180,
          result: "UP",
          error: null,
        },
      },
    ],
    addresses: [{
      address: "198.18.0.101/24",
      device: "eth0",
      since: started + 5000,
      service: "db",
    }],
    events: [
      {
        at: started + 4800,
        kind: "decision",
        service: "db",
        host: null,
        message: "start db: this host is the first master and no slave is UP",
      },
      {
        at: started + 5000,
        kind: "state",
        service: "db",
        host: null,
        message: "db is UP",
      },
    ],
  };
}

/**
 * The same host a few seconds later, after `beta` stopped answering: `alpha` took `web` over.
 *
 * @param before The snapshot before the failover.
 * @param after How much later, in ms (default 3500).
 * @returns A new snapshot; `before` is not modified.
 */
export function failoverSnapshot(before: FailshSnapshot, after = 3500): FailshSnapshot {
  const s = structuredClone(before);
  const now = before.now + after;
  const lost = now - 3000;
  s.now = now;
  for (const h of s.hosts) {
    if (h.name === "beta") {
      h.reachable = false;
      h.misses = 3;
      h.lastCall = now - 100;
      h.latencyMs = null;
      h.lastError = "connection refused";
    } else {
      h.lastConnect = now - 100;
      h.lastCall = now - 100;
      const web = h.services.find((r) => r.name === "web");
      if (web) {
        web.state = "UP";
        web.lastChange = now - 400;
        web.changes++;
      }
    }
  }
  const web = s.services.find((v) => v.name === "web");
  if (web) {
    web.state = "UP";
    web.lastChange = now - 400;
    web.lastDecision = {
      at: now - 700,
      action: "start",
      reason: "master beta is FAIL (unreachable after 3 misses) and no other slave is UP",
    };
    web.lastHandler = {
      kind: "start",
      startedAt: now - 700,
      durationMs: 300,
      result: "UP",
      error: null,
    };
  }
  s.addresses.push({
    address: "198.18.0.100/24",
    device: "eth0",
    since: now - 500,
    service: "web",
  });
  s.events.push(
    { at: lost, kind: "peer", service: null, host: "beta", message: "beta missed a poll" },
    {
      at: now - 700,
      kind: "decision",
      service: "web",
      host: null,
      message: "start web: master beta is FAIL (unreachable after 3 misses)",
    },
    {
      at: now - 500,
      kind: "address",
      service: "web",
      host: null,
      message: "took 198.18.0.100/24 on eth0",
    },
    { at: now - 400, kind: "state", service: "web", host: null, message: "web is UP" },
  );
  return s;
}

if (import.meta.main) {
  const port = Number(Deno.args[0] ?? "0");
  const fake = startFakeFailsh({ port });
  console.log(`fake failsh monitor on ${fake.url}`);
  let base = sampleSnapshot(Date.now());
  let failed = false;
  setInterval(() => {
    failed = !failed;
    base = sampleSnapshot(Date.now());
    fake.set(failed ? failoverSnapshot(base, 0) : base);
  }, 5000);
}
