import assert from "node:assert/strict";
import { HealthChecker, runWithTimeout } from "./checker.ts";
import { parseHcfile } from "./hcfile.ts";
import { startDnsResponder, startHttpServer } from "./_test_servers.ts";
import { memoryLogger, waitFor } from "./_test_util.ts";

function checker(text: string): { hc: HealthChecker; lines: string[] } {
  const { config, diagnostics } = parseHcfile(text, { file: "/tmp/Hcfile" });
  assert.deepEqual(diagnostics.filter((d) => d.severity === "error"), []);
  const { logger, lines } = memoryLogger();
  return { hc: new HealthChecker(config, { name: "test", logger }), lines };
}

Deno.test("runWithTimeout() gives up on a probe that hangs and ignores its signal", async () => {
  const started = Date.now();
  const r = await runWithTimeout(() => new Promise(() => {}), { timeoutMs: 50 });
  assert.deepEqual(r, { ok: false, detail: "timed out after 50 ms", latencyMs: null });
  assert.ok(Date.now() - started < 2000);
});

Deno.test("runWithTimeout() turns a late success into a timeout failure", async () => {
  const r = await runWithTimeout(
    () =>
      new Promise((resolve) =>
        setTimeout(() => resolve({ ok: true, detail: "late", latencyMs: 1 }), 80)
      ),
    { timeoutMs: 20 },
  );
  assert.equal(r.ok, false);
  assert.equal(r.detail, "timed out after 20 ms");
});

Deno.test("a check needs rise passes to be UP and fall failures to be FAIL", async () => {
  const web = startHttpServer();
  const { hc } = checker(
    `web:\n\thttp url=${web.url}/ interval=40ms timeout=500ms rise=3 fall=2\n`,
  );
  const seen: { state: string; successes: number; failures: number }[] = [];
  hc.subscribe((e) =>
    seen.push({ state: e.check.state, successes: e.check.successes, failures: e.check.failures })
  );
  try {
    hc.start();
    assert.equal(hc.check("web")?.state, "PENDING");
    await waitFor("web UP", () => hc.check("web")?.state === "UP");
    web.behaviour.status = 500;
    await waitFor("web FAIL", () => hc.check("web")?.state === "FAIL");
    assert.deepEqual(seen, [
      { state: "UP", successes: 3, failures: 0 },
      { state: "FAIL", successes: 0, failures: 2 },
    ]);
    const s = hc.check("web")!;
    assert.match(s.lastResult!.detail, /HTTP 500/);
    assert.equal(s.changes, 2);
    assert.equal(s.rootCause, null);
  } finally {
    await hc.stop();
    await web.close();
  }
});

Deno.test("a check whose answers come after the timeout fails without stalling the others", async () => {
  const slow = startHttpServer();
  const fast = startHttpServer();
  slow.behaviour.delayMs = 2000;
  const { hc } = checker(
    [
      `slow:\n\thttp url=${slow.url}/ interval=50ms timeout=100ms rise=1 fall=1`,
      `fast:\n\thttp url=${fast.url}/ interval=50ms timeout=100ms rise=1 fall=1`,
    ].join("\n") + "\n",
  );
  try {
    hc.start();
    await waitFor("slow FAIL", () => hc.check("slow")?.state === "FAIL");
    assert.equal(hc.check("slow")!.lastResult!.detail, "timed out after 100 ms");
    await waitFor("fast has run 5 times", () => hc.check("fast")!.runs >= 5);
    assert.equal(hc.check("fast")?.state, "UP");
  } finally {
    await hc.stop();
    await slow.close();
    await fast.close();
  }
});

Deno.test("a failing dependency blocks its dependents, names the root cause and fires only their blocked actions", async () => {
  const dns = await startDnsResponder({ "www.example.test": { A: ["198.18.0.10"] } });
  const web = startHttpServer();
  const hook = startHttpServer();
  const { hc } = checker(
    [
      "defaults interval=50ms timeout=150ms rise=1 fall=2",
      "gateway:",
      `\ttcp host=127.0.0.1 port=${web.port}`,
      "dns: gateway",
      `\tdns server=127.0.0.1:${dns.port} name=www.example.test expect=198.18.0.10`,
      "web: dns",
      `\thttp url=${web.url}/ body=/ok/`,
      `\ton fail: webhook url=${hook.url}/fail`,
      `\ton blocked: webhook url=${hook.url}/blocked`,
      `\ton up: webhook url=${hook.url}/up`,
      "",
    ].join("\n"),
  );
  try {
    const webStates: string[] = [];
    hc.subscribe((e) => {
      if (e.check.name === "web") webStates.push(e.check.state);
    });
    hc.start();
    await waitFor("all UP", () => hc.snapshot().summary.UP === 3);
    await waitFor("web up hook", () => hook.paths.includes("/up"));
    // Inject: the DNS server stops answering; so does the web server (its own failure must not
    // be blamed on it while dns is down).
    dns.behaviour.silent = true;
    web.behaviour.status = 503;
    await waitFor("dns FAIL", () => hc.check("dns")?.state === "FAIL");
    await waitFor("web BLOCKED", () => hc.check("web")?.state === "BLOCKED");
    const w = hc.check("web")!;
    assert.equal(w.rootCause, "dns");
    assert.equal(hc.check("gateway")?.state, "UP");
    await waitFor("blocked hook", () => hook.paths.includes("/blocked"));
    const runs = hc.check("web")!.runs;
    await waitFor("skipped runs", () => hc.check("web")!.skippedRuns >= 3);
    assert.equal(hc.check("web")!.runs, runs, "a blocked check must not be probed");
    assert.ok(!hook.paths.includes("/fail"), "the fail action fired for a blocked check");
    const blockedPost = hook.posts.find((p) =>
      (p as { state: string }).state === "BLOCKED"
    ) as Record<string, unknown>;
    assert.equal(blockedPost.check, "web");
    assert.equal(blockedPost.rootCause, "dns");
    assert.equal(blockedPost.hc, "test");
    // The dependency recovers: the dependent is probed at once and now fails on its own.
    dns.behaviour.silent = false;
    await waitFor("dns UP", () => hc.check("dns")?.state === "UP");
    await waitFor("web FAIL", () => hc.check("web")?.state === "FAIL");
    assert.equal(hc.check("web")!.rootCause, null);
    await waitFor("fail hook", () => hook.paths.includes("/fail"));
    // Unblocked, web stayed BLOCKED until a fresh probe: its stale UP was never reported.
    assert.deepEqual(webStates, ["UP", "BLOCKED", "FAIL"]);
  } finally {
    await hc.stop();
    await dns.close();
    await web.close();
    await hook.close();
  }
});

Deno.test("the root cause passes down a chain of dependencies", async () => {
  const web = startHttpServer();
  const { hc } = checker(
    [
      "defaults interval=40ms timeout=200ms rise=1 fall=1",
      `gateway:\n\thttp url=${web.url}/gw`,
      `dns: gateway\n\thttp url=${web.url}/dns`,
      `web: dns\n\thttp url=${web.url}/web`,
      `mail: gateway\n\thttp url=${web.url}/mail`,
      "",
    ].join("\n"),
  );
  try {
    hc.start();
    await waitFor("all UP", () => hc.snapshot().summary.UP === 4);
    await web.close();
    await waitFor("gateway FAIL", () => hc.check("gateway")?.state === "FAIL");
    await waitFor("3 BLOCKED", () => hc.snapshot().summary.BLOCKED === 3);
    for (const name of ["dns", "web", "mail"]) {
      assert.equal(hc.check(name)?.rootCause, "gateway", name);
    }
  } finally {
    await hc.stop();
  }
});

Deno.test("runOnce() runs dependencies first and reports dependents of a failure as BLOCKED", async () => {
  const web = startHttpServer();
  const closed = Deno.listen({ hostname: "127.0.0.2", port: 0 });
  const deadPort = (closed.addr as Deno.NetAddr).port;
  closed.close();
  const { hc } = checker(
    [
      "defaults rise=1 fall=1 timeout=500ms",
      `web: db\n\thttp url=${web.url}/`,
      `db:\n\ttcp host=127.0.0.2 port=${deadPort}`,
      `static:\n\thttp url=${web.url}/static`,
      "",
    ].join("\n"),
  );
  try {
    const s = await hc.runOnce();
    assert.deepEqual(s.checks.map((c) => [c.name, c.state, c.rootCause]), [
      ["db", "FAIL", null],
      ["web", "BLOCKED", "db"],
      ["static", "UP", null],
    ]);
    assert.deepEqual(web.paths, ["/static"]);
  } finally {
    await hc.stop();
    await web.close();
  }
});
