/**
 * `failmon --serve`: the aggregating live page for several failsh, run as a real process and
 * opened in headless Chromium. One source is unreachable from the start, one fails over while
 * the page is open, and one goes away and comes back.
 */
import assert from "node:assert/strict";
import { failoverSnapshot, sampleSnapshot, startFakeFailsh } from "./fake_failsh.ts";
import { launchBrowser, NO_BROWSER } from "./web_browser.ts";

const FAILMON = new URL("../scripts/failmon.ts", import.meta.url).pathname;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Waits until the aggregator answers (at most 20 s). */
async function waitUp(url: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const r = await fetch(url + "/v1/aggregate");
      await r.body?.cancel();
      if (r.ok) return;
    } catch {
      // not yet listening
    }
    if (Date.now() > deadline) throw new Error(`failmon --serve did not answer on ${url}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test({
  name: "web aggregate page: several hosts, one unreachable, a failover while open" + NO_BROWSER,
  ignore: NO_BROWSER !== "",
  async fn(t) {
    const alpha = startFakeFailsh();
    const betaView = sampleSnapshot();
    betaView.host = "beta";
    for (const h of betaView.hosts) h.self = h.name === "beta";
    const beta = startFakeFailsh({ snapshot: betaView });
    const deadUrl = `http://127.0.0.1:${freePort()}`;
    const port = freePort();
    const url = `http://127.0.0.1:${port}`;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", FAILMON, "--serve", `127.0.0.1:${port}`, alpha.url, beta.url, deadUrl],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const killer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    const browser = await launchBrowser({ height: 1400 });
    const { page } = browser;
    try {
      await waitUp(url);
      await t.step("every source is listed; the dead one is marked unreachable", async () => {
        await page.goto(url + "/");
        await page.waitForSelector(
          `table.overview tr[data-source='${alpha.url}'][data-status=connected]`,
        );
        await page.waitForSelector(
          `table.overview tr[data-source='${beta.url}'][data-status=connected]`,
        );
        const dead = await page.waitForSelector(
          `table.overview tr[data-source='${deadUrl}'][data-status=lost]`,
        );
        assert.match(await dead.innerText(), /UNREACHABLE: connection refused/);
        const section = page.locator(`section.source[data-source='${deadUrl}']`);
        assert.match(await section.getAttribute("class") ?? "", /down/);
        assert.match(await section.innerText(), /unreachable: connection refused/);
        assert.equal(await page.title(), "(1 down) failmon: 3 hosts");
      });

      await t.step("a failover on one host shows up without a reload", async () => {
        await page.evaluate(() => ((globalThis as { marker?: number }).marker = 7));
        alpha.set(failoverSnapshot(alpha.snapshot));
        const sel = `section.source[data-source='${alpha.url}'] table.services ` +
          "tr[data-service=web][data-state=UP]";
        await page.waitForSelector(sel);
        assert.equal(await page.evaluate(() => (globalThis as { marker?: number }).marker), 7);
        const other = `section.source[data-source='${beta.url}'] table.services ` +
          "tr[data-service=web][data-state=FAIL]";
        await page.waitForSelector(other);
      });

      await t.step(
        "a host that goes away is shown with its last state, then comes back",
        async () => {
          await beta.stop();
          const section = `section.source[data-source='${beta.url}']`;
          await page.waitForSelector(`${section}[data-status=lost]`);
          const text = await page.locator(section).innerText();
          assert.match(text, /unreachable: /);
          assert.match(text, /Showing the last state received/);
          beta.restart();
          await page.waitForSelector(`${section}[data-status=connected]`, { timeout: 30_000 });
        },
      );
    } finally {
      await browser.close();
      clearTimeout(killer);
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      const status = await child.status;
      const stderr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
      await alpha.close();
      await beta.close();
      assert.equal(status.code, 0, `failmon --serve exits 0 on SIGTERM: ${stderr}`);
    }
  },
});
