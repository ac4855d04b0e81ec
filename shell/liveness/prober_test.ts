import assert from "node:assert/strict";
import { Logger } from "../../lib/log.ts";
import { FakeTime, flush } from "../_fake_time.ts";
import type { HostDecl } from "../contract.ts";
import {
  LivenessMonitor,
  MAX_PING_LINE,
  MAX_PROBES,
  pingArgv,
  type PingProcess,
} from "./prober.ts";

/** A fake ping: the test writes its output and decides when it exits. */
class FakePing implements PingProcess {
  stdout: ReadableStream<Uint8Array>;
  stderr: ReadableStream<Uint8Array>;
  status: Promise<{ code: number; signal: string | null }>;
  signals: string[] = [];
  #out!: ReadableStreamDefaultController<Uint8Array>;
  #err!: ReadableStreamDefaultController<Uint8Array>;
  #exit!: (s: { code: number; signal: string | null }) => void;
  #closed = false;
  constructor(readonly argv: readonly string[], readonly ignoreTerm = false) {
    this.stdout = new ReadableStream({ start: (c) => void (this.#out = c) });
    this.stderr = new ReadableStream({ start: (c) => void (this.#err = c) });
    this.status = new Promise((r) => (this.#exit = r));
  }
  write(text: string): void {
    this.#out.enqueue(new TextEncoder().encode(text));
  }
  exit(code: number, stderr = "", signal: string | null = null): void {
    if (this.#closed) return;
    this.#closed = true;
    if (stderr) this.#err.enqueue(new TextEncoder().encode(stderr));
    this.#out.close();
    this.#err.close();
    this.#exit({ code, signal });
  }
  kill(signal: Deno.Signal): void {
    this.signals.push(signal);
    if (signal === "SIGKILL" || !this.ignoreTerm) this.exit(-1, "", signal);
  }
}

/** The ping processes this test process started. */
function pingChildren(): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const m = /^\d+ \((.*)\) \S+ (\d+)/.exec(Deno.readTextFileSync(`/proc/${e.name}/stat`));
      if (m && m[1] === "ping" && Number(m[2]) === Deno.pid) out.push(Number(e.name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const HOSTS: HostDecl[] = [
  {
    name: "alpha",
    address: "198.18.0.1",
    port: 7100,
    protocol: "http",
    key: null,
    liveness: { intervalMs: 10, fall: 3, stallGraceMs: 1000 },
  },
  {
    name: "beta",
    address: "198.18.0.2",
    port: 7100,
    protocol: "http",
    key: null,
    liveness: { intervalMs: 10, fall: 3, stallGraceMs: 1000 },
  },
  { name: "gamma", address: "2001:db8::3", port: 7100, protocol: "http", key: null },
];

function setup(options: { ignoreTerm?: boolean } = {}) {
  const time = new FakeTime();
  const spawned: FakePing[] = [];
  const lines: string[] = [];
  const audit: string[] = [];
  const logger = new Logger({ sink: (l) => lines.push(l), level: "debug" });
  const monitor = new LivenessMonitor({
    self: "beta",
    hosts: HOSTS,
    timers: time,
    logger,
    spawn: (argv) => {
      const p = new FakePing(argv, options.ignoreTerm);
      spawned.push(p);
      return p;
    },
    audit: (request, verdict, reason) =>
      audit.push(`${verdict} ${JSON.stringify(request.argv)} ${reason}`),
  });
  const changes: string[] = [];
  monitor.onChange((h) => changes.push(`${h}:${monitor.status(h)?.state}`));
  return { time, spawned, lines, audit, monitor, changes };
}

Deno.test("pingArgv() runs ping numeric, reporting unanswered requests, with timestamps", () => {
  assert.deepEqual(pingArgv("198.18.0.1", 10), [
    "ping",
    "-n",
    "-O",
    "-D",
    "-i",
    "0.01",
    "-4",
    "198.18.0.1",
  ]);
  assert.deepEqual(pingArgv("2001:db8::1", 5), [
    "ping",
    "-n",
    "-O",
    "-D",
    "-i",
    "0.005",
    "-6",
    "2001:db8::1",
  ]);
  assert.deepEqual(pingArgv("alpha.example", 1000), [
    "ping",
    "-n",
    "-O",
    "-D",
    "-i",
    "1",
    "alpha.example",
  ]);
});

Deno.test("LivenessMonitor runs one ping per peer that declares liveness and judges its stream", async (t) => {
  const { spawned, monitor, changes, audit } = setup();
  monitor.start();
  await t.step("only alpha is probed: beta is this host, gamma declares no liveness", () => {
    assert.equal(spawned.length, 1);
    assert.deepEqual(spawned[0]!.argv.at(-1), "198.18.0.1");
    assert.equal(monitor.status("beta"), null);
    assert.equal(monitor.status("gamma"), null);
    assert.equal(monitor.status("alpha")?.state, "unknown");
    assert.match(audit[0]!, /^allowed \["ping",.*"198\.18\.0\.1"\] liveness probe started$/);
  });
  const ping = spawned[0]!;
  await t.step(
    "replies split across chunks make it alive, three unanswered make it silent",
    async () => {
      ping.write(
        "PING 198.18.0.1 (198.18.0.1) 56(84) bytes of data.\n[1000.000] 64 bytes from 198.",
      );
      await flush();
      assert.equal(monitor.status("alpha")?.state, "unknown");
      ping.write("18.0.1: icmp_seq=1 ttl=64 time=0.050 ms\n");
      await flush();
      assert.equal(monitor.status("alpha")?.state, "alive");
      ping.write(
        "[1000.012] no answer yet for icmp_seq=2\n[1000.022] no answer yet for icmp_seq=3\n",
      );
      await flush();
      assert.equal(monitor.status("alpha")?.state, "alive");
      ping.write("[1000.032] no answer yet for icmp_seq=4\n");
      await flush();
      assert.deepEqual(changes, ["alpha:alive", "alpha:silent"]);
      assert.equal(monitor.status("alpha")?.silentMs, 32);
    },
  );
  await t.step(
    "an endless line is cut, not buffered, and the lines after it still count",
    async () => {
      ping.write("x".repeat(MAX_PING_LINE * 20));
      ping.write(
        "y".repeat(MAX_PING_LINE * 20) +
          "\n[1000.050] 64 bytes from 198.18.0.1: icmp_seq=5 ttl=64 time=0.040 ms\n",
      );
      await flush();
      assert.equal(monitor.status("alpha")?.state, "alive");
    },
  );
  await t.step("stop() kills ping and waits for it", async () => {
    await monitor.stop();
    assert.deepEqual(ping.signals, ["SIGTERM"]);
    assert.match(audit.at(-1)!, /^done .* liveness probe stopped$/);
  });
});

Deno.test("LivenessMonitor restarts a ping that exits, with a bounded backoff, and says why", async (t) => {
  const { time, spawned, monitor, lines, audit, changes } = setup();
  monitor.start();
  spawned[0]!.write("[1.0] 64 bytes from 198.18.0.1: icmp_seq=1 ttl=64 time=0.050 ms\n");
  await flush();
  await t.step(
    "an exit makes the peer unknown (polls alone judge it) and is logged and audited",
    async () => {
      spawned[0]!.exit(1, "ping: sendmsg: Operation not permitted\n");
      await flush();
      await flush();
      const s = monitor.status("alpha")!;
      assert.equal(s.state, "unknown");
      assert.match(s.error!, /^Cannot probe alpha: ping may not open an ICMP socket/);
      assert.deepEqual(changes, ["alpha:alive", "alpha:unknown"]);
      assert.ok(lines.some((l) => l.includes("polls alone judge alpha")));
      assert.match(audit.at(-1)!, /^failed .*Cannot probe alpha/);
    },
  );
  await t.step("restarts wait 100 ms, then twice as long each time, at most 10 s", async () => {
    const waits: number[] = [];
    let last = time.now();
    for (let i = 1; i <= 9; i++) {
      const before = spawned.length;
      while (spawned.length === before) await time.advance(100);
      waits.push(time.now() - last);
      spawned.at(-1)!.exit(2, "ping: minimal interval allowed for user is 200ms\n");
      await flush();
      await flush();
      last = time.now();
    }
    assert.deepEqual(waits, [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
    assert.match(
      monitor.status("alpha")!.error!,
      /iputils ping refuses an interval of 10 ms for this user .*run failsh as root or declare liveness\.interval of at least 200 ms/,
    );
  });
  await t.step("stop() cancels the pending restart: no ping is started after it", async () => {
    await monitor.stop();
    const n = spawned.length;
    await time.advance(20_000);
    assert.equal(spawned.length, n);
  });
});

Deno.test("LivenessMonitor.stop() kills a ping that ignores SIGTERM", async () => {
  const { spawned, monitor } = setup({ ignoreTerm: true });
  monitor.start();
  await monitor.stop();
  assert.deepEqual(spawned[0]!.signals, ["SIGTERM", "SIGKILL"]);
});

Deno.test({
  name: "LivenessMonitor with the real ping: loopback answers at 10 ms over IPv4 and IPv6",
  ignore: Deno.build.os !== "linux",
  async fn(t) {
    const { findProgram } = await import("../../tests/_programs.ts");
    if (findProgram("ping") === null) {
      console.log("skipped: ping is not installed (Debian package iputils-ping)");
      return;
    }
    const { realTimers } = await import("../scheduler/peers.ts");
    await t.step("127.0.0.1 at 10 ms is alive", async () => {
      const monitor = new LivenessMonitor({
        self: "me",
        hosts: [{ ...HOSTS[0]!, address: "127.0.0.1" }],
        timers: realTimers,
        logger: new Logger({ sink: () => {} }),
      });
      const alive = Promise.withResolvers<void>();
      monitor.onChange((h) => monitor.status(h)?.state === "alive" && alive.resolve());
      monitor.start();
      await alive.promise;
      assert.ok(monitor.status("alpha")!.rttMs! >= 0);
      await monitor.stop();
      assert.equal(monitor.status("alpha")!.state, "unknown");
    });
    await t.step(
      "failsh's event loop blocked 300 ms, then ping itself stopped 300 ms: never silent",
      async () => {
        const monitor = new LivenessMonitor({
          self: "me",
          hosts: [{
            ...HOSTS[0]!,
            address: "127.0.0.1",
            liveness: { intervalMs: 10, fall: 3, stallGraceMs: 1000 },
          }],
          timers: realTimers,
          logger: new Logger({ sink: () => {} }),
        });
        const states: string[] = [];
        const alive = Promise.withResolvers<void>();
        monitor.onChange((h) => {
          states.push(monitor.status(h)!.state);
          if (monitor.status(h)?.state === "alive") alive.resolve();
        });
        monitor.start();
        try {
          await alive.promise;
          // The supervisor stalls: ping keeps its timing, its lines wait in the pipe.
          const until = Date.now() + 300;
          while (Date.now() < until) {
            // busy: no event loop turn
          }
          await new Promise((r) => setTimeout(r, 200));
          // ping itself is stopped (starved): it sends nothing, so it reports nothing missing.
          const pings = pingChildren();
          assert.equal(pings.length, 1);
          Deno.kill(pings[0]!, "SIGSTOP");
          await new Promise((r) => setTimeout(r, 300));
          Deno.kill(pings[0]!, "SIGCONT");
          await new Promise((r) => setTimeout(r, 200));
          assert.deepEqual(states, ["alive"], "alive throughout, never silent");
          assert.equal(monitor.status("alpha")!.state, "alive");
        } finally {
          await monitor.stop();
        }
      },
    );
    const v6 = Deno.networkInterfaces().some((i) => i.address === "::1");
    if (!v6) console.log("skipped the IPv6 step: this machine has no ::1");
    await t.step({
      name: "::1 over ICMPv6 (ping -6) at 10 ms is alive",
      ignore: !v6,
      fn: async () => {
        const monitor = new LivenessMonitor({
          self: "me",
          hosts: [{ ...HOSTS[0]!, address: "::1" }],
          timers: realTimers,
          logger: new Logger({ sink: () => {} }),
        });
        const alive = Promise.withResolvers<void>();
        monitor.onChange((h) => monitor.status(h)?.state === "alive" && alive.resolve());
        monitor.start();
        await alive.promise;
        assert.ok(monitor.status("alpha")!.rttMs! >= 0);
        await monitor.stop();
        assert.equal(monitor.status("alpha")!.state, "unknown");
      },
    });
  },
});

Deno.test("LivenessMonitor probes only this host's peers, at most MAX_PROBES, and says so", async () => {
  const time = new FakeTime();
  const spawned: FakePing[] = [];
  const audit: string[] = [];
  const lines: string[] = [];
  const many: HostDecl[] = Array.from({ length: MAX_PROBES + 8 }, (_, i) => ({
    name: `h${i}`,
    address: `198.18.1.${i + 1}`,
    port: 7100,
    protocol: "http",
    key: null,
    liveness: { intervalMs: 5, fall: 1, stallGraceMs: 1000 },
  }));
  const stranger: HostDecl = { ...many[0]!, name: "stranger", address: "198.18.2.1" };
  const monitor = new LivenessMonitor({
    self: "h0",
    hosts: [...many, stranger],
    services: [
      { masters: ["h0"], slaves: many.slice(1).map((h) => h.name) },
      { masters: ["stranger"], slaves: [] },
    ],
    timers: time,
    logger: new Logger({ sink: (l) => lines.push(l) }),
    spawn: (argv) => {
      const p = new FakePing(argv);
      spawned.push(p);
      return p;
    },
    audit: (request, verdict, reason) => audit.push(`${verdict} ${request.host} ${reason}`),
  });
  monitor.start();
  assert.equal(spawned.length, MAX_PROBES, "one ping per peer, up to the bound");
  assert.equal(monitor.status("stranger"), null, "a host sharing no service is not probed");
  const refused = monitor.status(`h${MAX_PROBES + 7}`)!;
  assert.equal(refused.state, "unknown");
  assert.equal(
    refused.error,
    `Cannot probe h${
      MAX_PROBES + 7
    }: at most ${MAX_PROBES} peers are probed and the script asks for ${
      MAX_PROBES + 7
    }; polls alone judge it`,
  );
  assert.equal(audit.filter((a) => a.startsWith("refused ")).length, 7);
  assert.equal(lines.filter((l) => l.includes("at most")).length, 7);
  await monitor.stop();
});
