import assert from "node:assert/strict";
import { metricsText, startDebugPort, startMonitor } from "../shell/monitor.ts";
import type { FailshSnapshot } from "../lib/types.ts";
import { AuthError, FaildClient } from "../lib/client.ts";
import { Logger } from "../lib/log.ts";
import { Histogram, POLL_BUCKETS, type SchedulerStats } from "../shell/scheduler/stats.ts";

function snapshot(state: "UP" | "FAIL", n = 0): FailshSnapshot {
  return {
    host: "beta",
    startedAt: 1000,
    now: 2000 + n,
    hosts: [{
      name: "alpha",
      url: "http://127.0.0.11:7100",
      self: false,
      reachable: state === "UP",
      misses: 0,
      lastConnect: 1900,
      lastCall: 1990,
      latencyMs: 1.5,
      lastError: null,
      services: [],
    }],
    services: [{
      name: "web",
      state,
      role: "slave",
      masters: ["alpha"],
      slaves: ["beta"],
      intervalMs: 100,
      lastChange: 1500,
      lastDecision: { at: 1500, action: "start", reason: "alpha is unreachable" },
      lastHandler: null,
    }],
    addresses: [],
    events: [],
  };
}

class FakeSource {
  current = snapshot("FAIL");
  listeners = new Set<() => void>();
  snapshot() {
    return this.current;
  }
  onChange(l: () => void) {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  change(s: FailshSnapshot) {
    this.current = s;
    for (const l of this.listeners) l();
  }
}

function stats(): SchedulerStats {
  const h = new Histogram(POLL_BUCKETS);
  h.observe(1.5);
  return {
    transitions: new Map([["web/UP", 2]]),
    pollLatency: new Map([["alpha", h]]),
    pollFailures: new Map([["alpha", 3]]),
    handlerDurations: new Map(),
    handlerTimeouts: new Map([["web/start", 1]]),
    handlerErrors: new Map(),
    takeovers: 1,
    releases: 0,
    decisions: new Map([["start", 1]]),
    arbiterLosses: new Map(),
    arbiterRenewLatency: new Histogram(POLL_BUCKETS),
    arbiterRenewFailures: 0,
  };
}

/** Reads a stream for `ms`, keeping one read pending so no chunk is lost. */
async function readFor(reader: ReadableStreamDefaultReader<string>, ms: number): Promise<string> {
  let text = "";
  const deadline = Date.now() + ms;
  let pending = reader.read();
  while (Date.now() < deadline) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const next = await Promise.race([
      pending,
      new Promise<null>((res) => timer = setTimeout(() => res(null), deadline - Date.now())),
    ]);
    clearTimeout(timer);
    if (next === null) break;
    if (next.done) return text;
    text += next.value;
    pending = reader.read();
  }
  return text;
}

/** Reads SSE events from a stream until `count` snapshot events arrived. */
async function readEvents(
  body: ReadableStream<Uint8Array>,
  count: number,
): Promise<FailshSnapshot[]> {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const out: FailshSnapshot[] = [];
  try {
    while (out.length < count) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let i;
      while ((i = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        const data = block.split("\n").find((l) => l.startsWith("data: "));
        if (block.includes("event: snapshot") && data) out.push(JSON.parse(data.slice(6)));
      }
    }
  } finally {
    await reader.cancel();
  }
  return out;
}

Deno.test("monitor port serves the snapshot, the stream, metrics and the page", async (t) => {
  const source = new FakeSource();
  const port = await startMonitor({
    listen: "127.0.0.1:0",
    source,
    metrics: () => metricsText(source.snapshot(), stats()),
    coalesceMs: 50,
  });
  try {
    await t.step("GET /v1/snapshot answers the FailshSnapshot", async () => {
      const r = await fetch(`${port.url}/v1/snapshot`);
      assert.equal(r.status, 200);
      const s = await r.json() as FailshSnapshot;
      assert.equal(s.host, "beta");
      assert.equal(s.services[0]?.state, "FAIL");
    });
    await t.step("GET /v1/stream sends a snapshot at connect and after a change", async () => {
      const r = await fetch(`${port.url}/v1/stream`);
      assert.equal(r.headers.get("content-type"), "text/event-stream");
      const events = readEvents(r.body!, 2);
      await new Promise((res) => setTimeout(res, 20));
      source.change(snapshot("UP", 1));
      const got = await events;
      assert.equal(got[0]?.services[0]?.state, "FAIL");
      assert.equal(got[1]?.services[0]?.state, "UP");
    });
    await t.step("a burst of changes is coalesced into few events", async () => {
      const r = await fetch(`${port.url}/v1/stream`);
      const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      const first = await reader.read();
      text += first.value ?? "";
      for (let i = 0; i < 50; i++) source.change(snapshot(i % 2 ? "UP" : "FAIL", i));
      text += await readFor(reader, 300);
      await reader.cancel();
      const count = text.split("event: snapshot").length - 1;
      assert.ok(count >= 2 && count <= 8, `50 changes gave ${count} events`);
    });
    await t.step("GET /metrics is Prometheus text with states, latency and timeouts", async () => {
      const text = await (await fetch(`${port.url}/metrics`)).text();
      assert.match(text, /failsh_service_state\{service="web",state="UP"\} 1/);
      assert.match(text, /failsh_poll_latency_ms_bucket\{host="alpha",le="2"\} 1/);
      assert.match(text, /failsh_handler_timeouts_total\{service="web",kind="start"\} 1/);
      assert.match(text, /failsh_takeovers_total 1/);
    });
    await t.step("GET / is the live page", async () => {
      const r = await fetch(`${port.url}/`);
      assert.match(r.headers.get("content-type") ?? "", /text\/html/);
      assert.match(await r.text(), /^<!doctype html>/);
    });
    await t.step("unknown paths and writes are refused", async () => {
      const r = await fetch(`${port.url}/v1/nothing`);
      assert.equal(r.status, 404);
      assert.match((await r.json()).error, /Unknown path/);
      const w = await fetch(`${port.url}/v1/snapshot`, { method: "POST", body: "{}" });
      assert.equal(w.status, 405);
      await w.body?.cancel();
    });
  } finally {
    await port.close();
  }
});

Deno.test("monitor stream sends nothing but keep-alive comments when nothing changes", async () => {
  const source = new FakeSource();
  const port = await startMonitor({
    listen: "127.0.0.1:0",
    source,
    metrics: () => "",
    keepaliveMs: 100,
  });
  try {
    const r = await fetch(`${port.url}/v1/stream`);
    const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    text += await readFor(reader, 450);
    await reader.cancel();
    assert.equal(text.split("event: snapshot").length - 1, 1, text);
    assert.ok(text.split(": keepalive").length - 1 >= 2, text);
  } finally {
    await port.close();
  }
});

Deno.test("debug port answers faild's signed debug-levels API", async (t) => {
  const log = new Logger({ sink: () => {} });
  const port = await startDebugPort({ listen: "127.0.0.1:0", key: "debug-secret", logger: log });
  const good = new FaildClient(port.url, { key: "debug-secret" });
  const bad = new FaildClient(port.url, { key: "wrong-secret" });
  const anon = new FaildClient(port.url);
  try {
    await t.step("a signed client reads and changes levels", async () => {
      assert.equal((await good.logLevels()).levels["*"], "info");
      const after = await good.setLogLevel("scheduler", "debug");
      assert.equal(after.levels.scheduler, "debug");
      assert.equal(log.level("scheduler"), "debug");
    });
    await t.step("a wrong key and an unsigned request are refused", async () => {
      await assert.rejects(bad.logLevels(), AuthError);
      await assert.rejects(anon.setLogLevel("*", "trace"), AuthError);
      assert.equal(log.level("*"), "info");
    });
    await t.step("a bad level is a clear 400", async () => {
      const r = await good.setLogLevel("scheduler", "loud" as "info").catch((e) => e);
      assert.match(String(r), /Invalid log level/);
    });
  } finally {
    good.close();
    bad.close();
    anon.close();
    await port.close();
  }
});
