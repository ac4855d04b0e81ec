import assert from "node:assert/strict";
import { HealthChecker } from "./checker.ts";
import { parseHcfile } from "./hcfile.ts";
import { serveStatus } from "./server.ts";
import { startHttpServer } from "./_test_servers.ts";
import { memoryLogger, waitFor } from "./_test_util.ts";

Deno.test("the status API serves checks, one check, health, metrics and change events", async (t) => {
  const web = startHttpServer();
  const { config } = parseHcfile(
    [
      "defaults interval=50ms timeout=300ms rise=1 fall=1",
      `db:\n\thttp url=${web.url}/db`,
      `web: db\n\thttp url=${web.url}/web`,
      "",
    ].join("\n"),
  );
  const { logger } = memoryLogger();
  const hc = new HealthChecker(config, { name: "hc-a", logger });
  const server = serveStatus(hc, { hostname: "127.0.0.1", port: 0, logger });
  const events = new AbortController();
  try {
    // Subscribe before starting so the stream sees the first changes.
    const res = await fetch(`${server.url}/v1/events`, { signal: events.signal });
    assert.equal(res.headers.get("content-type"), "text/event-stream");
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    hc.start();
    await waitFor("both UP", () => hc.snapshot().summary.UP === 2);

    await t.step("GET /v1/checks lists every check with its state", async () => {
      const s = await (await fetch(`${server.url}/v1/checks`)).json();
      assert.equal(s.name, "hc-a");
      assert.deepEqual(s.summary, { UP: 2, FAIL: 0, BLOCKED: 0, PENDING: 0 });
      const names = s.checks.map((c: { name: string }) => c.name);
      assert.deepEqual(names, ["db", "web"]);
      const w = s.checks[1];
      for (
        const key of [
          "state",
          "rootCause",
          "lastResult",
          "latencyMs",
          "successes",
          "failures",
          "lastChange",
        ]
      ) {
        assert.ok(key in w, key);
      }
      assert.equal(w.state, "UP");
      assert.deepEqual(w.deps, ["db"]);
    });
    await t.step("GET /v1/checks/NAME returns one check, 404 for others", async () => {
      const one = await fetch(`${server.url}/v1/checks/db`);
      assert.equal((await one.json()).name, "db");
      const none = await fetch(`${server.url}/v1/checks/nope`);
      assert.equal(none.status, 404);
      assert.deepEqual(await none.json(), { error: "No check named nope" });
    });
    await t.step("GET /metrics is Prometheus text", async () => {
      const m = await fetch(`${server.url}/metrics`);
      assert.match(m.headers.get("content-type")!, /^text\/plain; version=0.0.4/);
      const text = await m.text();
      assert.match(text, /^hc_check_up\{hc="hc-a",check="web",kind="http"\} 1$/m);
      assert.match(text, /^hc_checks\{hc="hc-a",state="UP"\} 2$/m);
      assert.match(text, /^# TYPE hc_check_runs_total counter$/m);
    });
    await t.step("writes are refused and unknown paths say what exists", async () => {
      const post = await fetch(`${server.url}/v1/checks`, { method: "POST", body: "{}" });
      assert.equal(post.status, 405);
      await post.body?.cancel();
      const nf = await fetch(`${server.url}/v2`);
      assert.equal(nf.status, 404);
      assert.match((await nf.json()).error, /use \/v1\/checks/);
    });
    await t.step("GET /v1/events sends a snapshot, then each change", async () => {
      web.behaviour.status = 500;
      let text = "";
      while (!/event: change\ndata: .*"name":"web".*"state":"BLOCKED"/.test(text)) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
      assert.match(text, /^event: snapshot\n/);
      assert.match(text, /event: change\ndata: .*"name":"db".*"state":"FAIL"/);
      assert.match(text, /"rootCause":"db"/);
      await reader.cancel();
    });
  } finally {
    events.abort();
    await server.shutdown();
    await hc.stop();
    await web.close();
  }
});
