/**
 * The monitors against the real thing: the loopback demo's setup (`scripts/demo.ts`: two hosts on
 * 127.0.0.0/8, each with its own faild and a failsh running `samples/loopback_demo/failover.ts`
 * with the simulated net driver), with monitor and debug ports this test chooses. The web page of
 * the standby and a `failmon --serve` aggregate page are open in headless Chromium when the
 * primary is killed; both must show the takeover without a reload. failmon and faildebug are
 * then run against the standby's monitor and debug ports.
 */
import assert from "node:assert/strict";
import type { FailshSnapshot } from "../lib/types.ts";
import { serveAggregate } from "../scripts/failmon/aggregate.ts";
import { prepareDemoCluster, startAndSettle } from "./web_demo_cluster.ts";
import { HAVE_TMUX, NO_TMUX, Tmux } from "./failmon_tmux.ts";
import { launchBrowser, NO_BROWSER } from "./web_browser.ts";

const REPO = new URL("../", import.meta.url).pathname;
const FAILMON = `${REPO}scripts/failmon.ts`;
const FAILDEBUG = `${REPO}scripts/faildebug.ts`;
const decoder = new TextDecoder();

async function runTool(file: string, args: string[]): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", file, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const o = await child.output();
    return { code: o.code, out: decoder.decode(o.stdout) + decoder.decode(o.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name: "real failsh: the page and the aggregate page show a takeover while open" + NO_BROWSER,
  ignore: NO_BROWSER !== "",
  async fn(t) {
    const cluster = await prepareDemoCluster();
    const monitorUrl = cluster.monitorUrl;
    const key = cluster.key;
    const browser = await launchBrowser({ height: 1200 });
    const aggregate = serveAggregate([monitorUrl("alpha"), monitorUrl("beta")], {
      minBackoffMs: 100,
      maxBackoffMs: 500,
    });
    const aggPage = await browser.context.newPage();
    const tmux = new Tmux();
    const { page } = browser;
    try {
      await t.step("alpha serves web; beta stands by", async () => {
        await startAndSettle(cluster);
      });

      await t.step("beta's page and the aggregate page show the cluster", async () => {
        await page.goto(monitorUrl("beta") + "/");
        await page.waitForSelector("body[data-conn=connected]");
        await page.waitForSelector("table.services tr[data-service=web][data-state=FAIL]");
        await page.waitForSelector("table.hosts tr[data-host=alpha].reachable");
        assert.match(
          await page.locator("table.services tr[data-service=web]").innerText(),
          /slave\s+alpha\s+beta/,
        );
        await aggPage.goto(aggregate.url + "/");
        await aggPage.waitForSelector(
          `section.source[data-source='${monitorUrl("alpha")}'] ` +
            "table.services tr[data-service=web][data-state=UP]",
        );
        if (HAVE_TMUX) {
          await tmux.start(
            `${Deno.execPath()} run -A ${FAILMON} -m c --url ${monitorUrl("beta")}; sleep 60`,
          );
          await tmux.waitFor(/alpha\s+yes/);
          await tmux.keys("Down", "l");
          await tmux.waitFor(/web\s+FAIL\s+slave/);
        }
        await aggPage.evaluate(() => ((globalThis as { marker?: number }).marker = 1));
        await page.evaluate(() => ((globalThis as { marker?: number }).marker = 1));
      });

      await t.step("alpha dies: both pages show beta taking over, without a reload", async () => {
        await cluster.stop("alpha", "SIGKILL");
        await page.waitForSelector("table.services tr[data-service=web][data-state=UP]", {
          timeout: 30_000,
        });
        await page.waitForSelector("table.hosts tr[data-host=alpha].unreachable");
        assert.match(await page.locator("table.addresses").innerText(), /127\.0\.0\.100\/32/);
        assert.match(
          await page.locator("table.handlers tr[data-service=web]").innerText(),
          /start/,
        );
        // The events table follows on its own update: wait for the line (bounded) before
        // reading it once, as a user looking at the page would.
        const decision = /decision\s+web\s+web: start — .*alpha is unreachable/;
        await page.locator("table.events").filter({ hasText: decision }).waitFor({
          timeout: 15_000,
        }).catch(() => {});
        const events = await page.locator("table.events").innerText();
        assert.match(
          events,
          decision,
          `the decision to start is listed with its reason:\n${events}`,
        );
        assert.equal(await page.evaluate(() => (globalThis as { marker?: number }).marker), 1);

        const alphaSection = `section.source[data-source='${monitorUrl("alpha")}']`;
        await aggPage.waitForSelector(`${alphaSection}[data-status=lost]`, { timeout: 30_000 });
        assert.match(await aggPage.locator(alphaSection).innerText(), /unreachable: /);
        await aggPage.waitForSelector(
          `section.source[data-source='${monitorUrl("beta")}'] ` +
            "table.services tr[data-service=web][data-state=UP]",
        );
        assert.equal(await aggPage.evaluate(() => (globalThis as { marker?: number }).marker), 1);
      });

      await t.step({
        name: "the terminal UI follows the takeover" + NO_TMUX,
        ignore: !HAVE_TMUX,
        fn: async () => {
          await tmux.waitFor(/web\s+UP\s+slave/);
          await tmux.keys("h");
          await tmux.waitFor(/alpha\s+NO/);
        },
      });

      await t.step("failmon -m 1 --json reads the real snapshot", async () => {
        const r = await runTool(FAILMON, ["-m", "1", "--json", "--url", monitorUrl("beta")]);
        assert.equal(r.code, 0, r.out);
        const s = JSON.parse(r.out) as FailshSnapshot;
        assert.equal(s.host, "beta");
        assert.equal(s.services.find((v) => v.name === "web")?.state, "UP");
        assert.equal(s.hosts.find((h) => h.name === "alpha")?.reachable, false);
      });

      await t.step("faildebug lists and sets levels on failsh's debug port", async () => {
        const url = cluster.debugUrl("beta");
        const set = await runTool(FAILDEBUG, [
          "--url",
          url,
          "--key",
          key,
          "set",
          "scheduler",
          "debug",
        ]);
        assert.equal(set.code, 0, set.out);
        const list = await runTool(FAILDEBUG, ["--url", url, "--key", key, "--json", "list"]);
        assert.equal(list.code, 0, list.out);
        assert.equal(JSON.parse(list.out).levels.scheduler, "debug");
        const wrong = await runTool(FAILDEBUG, ["--url", url, "--key", "nope", "list"]);
        assert.equal(wrong.code, 77, wrong.out);
      });

      await t.step("failsh's metrics count the takeover", async () => {
        const text = await (await fetch(monitorUrl("beta") + "/metrics")).text();
        assert.match(text, /^failsh_service_state\{service="web",state="UP"\} 1$/m);
        assert.match(text, /^failsh_peer_reachable\{host="alpha"\} 0$/m);
        assert.match(text, /^failsh_takeovers_total [1-9]/m);
      });
    } finally {
      await tmux.kill();
      await aggPage.close().catch(() => {});
      await browser.close();
      await aggregate.close();
      await cluster.close();
    }
  },
});
