/**
 * hcmon: the table and JSON of many hc instances, and its live page in headless Chromium (the
 * Debian package's /usr/bin/chromium driven by playwright-core, never a downloaded browser).
 * The page follows a dependency failure without a reload and shows an unreachable hc clearly.
 *
 * `FAILOVER_SCREENSHOTS=1 deno test -A tests/hc_hcmon_test.ts` also writes `docs/hcmon.png`.
 */
import assert from "node:assert/strict";
import { type BrowserContext, chromium } from "playwright-core";
import { HealthChecker } from "../daemon/hc/checker.ts";
import { parseHcfile } from "../daemon/hc/hcfile.ts";
import { serveStatus, type StatusServer } from "../daemon/hc/server.ts";
import { type HttpServer, startHttpServer } from "../daemon/hc/_test_servers.ts";
import { memoryLogger, waitFor } from "../daemon/hc/_test_util.ts";
import {
  exitCodeFor,
  fetchAll,
  main,
  normalizeHcUrl,
  renderTable,
  serveHcmon,
} from "../scripts/hcmon.ts";
import { CHROMIUM, CHROMIUM_ARGS, NO_BROWSER } from "./web_browser.ts";

const SCREENSHOTS = (() => {
  try {
    return Deno.env.get("FAILOVER_SCREENSHOTS") === "1";
  } catch {
    return false;
  }
})();

interface Instance {
  hc: HealthChecker;
  server: StatusServer;
  close(): Promise<void>;
}

function startHc(name: string, text: string): Instance {
  const { config, diagnostics } = parseHcfile(text);
  assert.deepEqual(diagnostics.filter((d) => d.severity === "error"), []);
  const { logger } = memoryLogger();
  const hc = new HealthChecker(config, { name, logger });
  hc.start();
  const server = serveStatus(hc, { hostname: "127.0.0.1", port: 0, logger });
  let closed = false;
  return {
    hc,
    server,
    async close() {
      if (closed) return;
      closed = true;
      await server.shutdown();
      await hc.stop();
    },
  };
}

function deadUrl(): string {
  const l = Deno.listen({ hostname: "127.0.0.2", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return `http://127.0.0.2:${port}`;
}

/** Two hc instances: "web1" with gateway -> dns -> web, "mail1" with one smtp-ish tcp check. */
async function fixture(): Promise<
  {
    a: Instance;
    b: Instance;
    gw: HttpServer;
    web: HttpServer;
    dead: string;
    close(): Promise<void>;
  }
> {
  const gw = startHttpServer();
  const web = startHttpServer();
  // The checks' time limit is hc's default (2 s), not a tight one: on a loaded machine a local
  // HTTP answer can take longer than 300 ms, and a check that times out reports "timed out"
  // instead of the "HTTP 503" and states the tests assert.
  const defaults = "defaults interval=100ms timeout=2s rise=1 fall=1\n";
  const a = startHc(
    "web1",
    defaults + `gateway:\n\thttp url=${gw.url}/gw\ndns: gateway\n\thttp url=${gw.url}/dns\n` +
      `web: dns\n\thttp url=${web.url}/health body=/ok/\n`,
  );
  const b = startHc("mail1", defaults + `relay:\n\ttcp host=127.0.0.1 port=${web.port}\n`);
  const dead = deadUrl();
  await waitFor(
    "all UP",
    () => a.hc.snapshot().summary.UP === 3 && b.hc.snapshot().summary.UP === 1,
  );
  return {
    a,
    b,
    gw,
    web,
    dead,
    async close() {
      await a.close();
      await b.close();
      await gw.close();
      await web.close();
    },
  };
}

Deno.test("normalizeHcUrl() accepts host:port and full URLs", () => {
  assert.equal(normalizeHcUrl("127.0.0.1:7200"), "http://127.0.0.1:7200");
  assert.equal(normalizeHcUrl("http://h:7200/v1/checks"), "http://h:7200");
  assert.equal(normalizeHcUrl("https://h/hc/"), "https://h/hc");
  assert.throws(() => normalizeHcUrl("ftp://h"), /scheme must be http or https/);
});

Deno.test("hcmon fetches many hc at once: table, JSON and exit codes", async (t) => {
  const f = await fixture();
  try {
    await t.step("all UP: exit 0", async () => {
      const s = await fetchAll([f.a.server.url, f.b.server.url], { timeoutMs: 1000 });
      assert.deepEqual(s.summary, {
        instances: 2,
        unreachable: 0,
        UP: 4,
        FAIL: 0,
        BLOCKED: 0,
        PENDING: 0,
      });
      assert.equal(exitCodeFor(s), 0);
      const table = renderTable(s);
      assert.match(table, /web1 \(http:\/\/127\.0\.0\.1:\d+\)\s*│ web\s*│ UP/);
      assert.match(table, /2 hc, 0 unreachable; checks: 4 UP, 0 FAIL, 0 BLOCKED, 0 PENDING/);
    });
    await t.step("an unreachable hc is reported, exit 2", async () => {
      const s = await fetchAll([f.a.server.url, f.dead], { timeoutMs: 1000 });
      const d = s.instances[1]!;
      assert.equal(d.reachable, false);
      assert.match(d.error!, /refused/i);
      assert.equal(exitCodeFor(s), 69);
      assert.match(renderTable(s), /UNREACHABLE/);
    });
    await t.step(
      "a failing dependency: exit 1, dependents BLOCKED with the root cause",
      async () => {
        f.gw.behaviour.status = 503;
        await waitFor("gateway FAIL", () => f.a.hc.snapshot().summary.BLOCKED === 2);
        const s = await fetchAll([f.a.server.url], { timeoutMs: 1000 });
        assert.equal(exitCodeFor(s), 1);
        const rows = s.instances[0]!.snapshot!.checks.map((c) =>
          `${c.name} ${c.state} ${c.rootCause}`
        );
        assert.deepEqual(rows, ["gateway FAIL null", "dns BLOCKED gateway", "web BLOCKED gateway"]);
        f.gw.behaviour.status = 200;
      },
    );
    await t.step("main() prints JSON and returns the exit code", async () => {
      const lines: string[] = [];
      const log = console.log;
      console.log = (x: string) => lines.push(x);
      let code: number;
      try {
        code = await main([f.b.server.url, f.dead, "--json", "--timeout", "1s"]);
      } finally {
        console.log = log;
      }
      assert.equal(code, 69);
      const state = JSON.parse(lines.join("\n"));
      assert.equal(state.instances[0].name, "mail1");
      assert.equal(state.instances[1].reachable, false);
    });
    await t.step("main() refuses bad usage with 64", async () => {
      const err = console.error;
      console.error = () => {};
      try {
        assert.equal(await main([]), 64);
        assert.equal(await main(["ftp://x"]), 64);
        assert.equal(await main(["127.0.0.1:1", "--serve", "nope"]), 64);
      } finally {
        console.error = err;
      }
    });
  } finally {
    await f.close();
  }
});

Deno.test("hcmon --serve serves the aggregated state until SIGTERM", async () => {
  const f = await fixture();
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../scripts/hcmon.ts", import.meta.url).pathname,
      "--serve",
      `127.0.0.1:${port}`,
      "--interval",
      "200ms",
      f.a.server.url,
      f.b.server.url,
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const out = child.stdout.pipeThrough(new TextDecoderStream());
  let text = "";
  const reading = (async () => {
    for await (const chunk of out) if (text.length < 65536) text += chunk;
  })();
  let exited = false;
  try {
    await waitFor("hcmon serving", async () => {
      try {
        const s = await (await fetch(`http://127.0.0.1:${port}/api/state`)).json();
        return s.summary.UP === 4;
      } catch {
        return false;
      }
    }, 20_000);
    const page = await fetch(`http://127.0.0.1:${port}/`);
    assert.match(page.headers.get("content-type")!, /^text\/html/);
    assert.match(await page.text(), /<title>hcmon<\/title>/);
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
    exited = true;
    await reading;
    assert.match(
      text,
      new RegExp(`^hcmon: serving http://127\\.0\\.0\\.1:${port}/ for 2 hc instances`),
    );
  } finally {
    if (!exited) {
      child.kill("SIGKILL");
      await child.status;
    }
    await reading.catch(() => {});
    await f.close();
  }
});

Deno.test({
  name: "hcmon page in headless Chromium: follows failures live and shows an unreachable hc" +
    NO_BROWSER,
  ignore: NO_BROWSER !== "",
  async fn(t) {
    const f = await fixture();
    const mon = await serveHcmon([f.a.server.url, f.b.server.url, f.dead], {
      hostname: "127.0.0.1",
      port: 0,
      intervalMs: 150,
      // Generous: a fetch that times out under load shows a live hc as unreachable.
      timeoutMs: 5000,
    });
    const profile = await Deno.makeTempDir({ prefix: "hcmon-chromium-" });
    let context: BrowserContext | null = null;
    try {
      context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: [...CHROMIUM_ARGS],
        viewport: { width: 1200, height: 820 },
        timeout: 60_000,
      });
      const page = context.pages()[0] ?? await context.newPage();
      page.setDefaultTimeout(15_000);
      const requests: string[] = [];
      page.on("request", (r) => requests.push(r.url()));

      await t.step("every instance is shown; the unreachable one says so", async () => {
        await page.goto(`${mon.url}/?refresh=200`);
        const a = page.locator(`section[data-instance="${f.a.server.url}"]`);
        await a.locator('tr[data-check="web"][data-state="UP"]').waitFor();
        assert.match(await a.locator("h2").innerText(), /web1/);
        const dead = page.locator(`section[data-instance="${f.dead}"]`);
        await dead.waitFor();
        assert.equal(await dead.getAttribute("class"), "unreachable");
        assert.match(
          await dead.locator("[data-error]").innerText(),
          /^Unreachable: .*refused.*\(never answered\)/i,
        );
        assert.match(await page.locator("#summary").innerText(), /4 UP.*1 hc unreachable/s);
      });

      await t.step(
        "a failing dependency shows up without a reload, dependents BLOCKED",
        async () => {
          await page.evaluate(() => ((globalThis as { marker?: number }).marker = 7));
          f.gw.behaviour.status = 503;
          const a = page.locator(`section[data-instance="${f.a.server.url}"]`);
          await a.locator('tr[data-check="gateway"][data-state="FAIL"]').waitFor();
          await a.locator('tr[data-check="web"][data-state="BLOCKED"]').waitFor();
          assert.equal(
            await a.locator('tr[data-check="web"] td[data-root]').innerText(),
            "gateway",
          );
          assert.match(await a.locator('tr[data-check="gateway"]').innerText(), /HTTP 503/);
          assert.equal(await page.evaluate(() => (globalThis as { marker?: number }).marker), 7);
        },
      );

      await t.step(
        "an hc that stops answering turns unreachable, its last checks kept as stale",
        async () => {
          await f.b.close();
          const b = page.locator(`section[data-instance="${f.b.server.url}"]`);
          await b.locator('tr[data-check="relay"][data-state="STALE"]').waitFor();
          assert.equal(await b.getAttribute("class"), "unreachable");
          assert.match(
            await b.locator("[data-error]").innerText(),
            /last answer .* ago; checks below are stale/,
          );
          assert.match(await page.locator("#summary").innerText(), /2 hc unreachable/);
        },
      );

      await t.step("hostile check details are shown as text, not HTML", async () => {
        f.web.behaviour.status = 200;
        f.gw.behaviour.status = 200;
        f.web.behaviour.body = "<img src=x onerror=alert(1)>";
        const a = page.locator(`section[data-instance="${f.a.server.url}"]`);
        await a.locator('tr[data-check="web"][data-state="FAIL"]').waitFor();
        assert.equal(await a.locator("img").count(), 0);
      });

      if (SCREENSHOTS) {
        f.web.behaviour.body = "ok";
        f.gw.behaviour.status = 503;
        const a = page.locator(`section[data-instance="${f.a.server.url}"]`);
        await a.locator('tr[data-check="web"][data-state="BLOCKED"]').waitFor();
        await page.screenshot({
          path: new URL("../docs/hcmon.png", import.meta.url).pathname,
          fullPage: true,
        });
      }

      await t.step("the page loads nothing from elsewhere", () => {
        const foreign = requests.filter((u) => !u.startsWith(mon.url));
        assert.deepEqual(foreign, []);
      });
    } finally {
      await context?.close().catch(() => {});
      await Deno.remove(profile, { recursive: true }).catch(() => {});
      await mon.close();
      await f.close();
    }
  },
});
