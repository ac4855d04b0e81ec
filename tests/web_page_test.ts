/**
 * The live monitor page (shell/web/page.ts) in headless Chromium, served by a fake failsh monitor
 * port: it renders, follows a failover without a reload, shows a lost connection and recovers,
 * escapes hostile names, and loads nothing from elsewhere.
 */
import assert from "node:assert/strict";
import { failoverSnapshot, sampleSnapshot, startFakeFailsh } from "./fake_failsh.ts";
import { launchBrowser, NO_BROWSER } from "./web_browser.ts";

Deno.test({
  name: "web page: renders failsh's state and follows a failover while open" + NO_BROWSER,
  ignore: NO_BROWSER !== "",
  async fn(t) {
    const fake = startFakeFailsh();
    const browser = await launchBrowser();
    const { page } = browser;
    try {
      await t.step("the first snapshot is rendered", async () => {
        await page.goto(fake.url + "/");
        await page.waitForSelector("body[data-conn=connected]");
        assert.equal(await page.textContent("#conn"), "live");
        assert.equal(await page.title(), "failmon: alpha");
        await page.waitForSelector("table.hosts tr[data-host=beta].reachable");
        const web = page.locator("table.services tr[data-service=web]");
        assert.equal(await web.getAttribute("data-state"), "FAIL");
        assert.match(await web.innerText(), /slave\s+beta\s+alpha\s+1\.0s/);
        assert.match(await web.innerText(), /none: master beta is UP/);
        const matrix = await page.locator("table.matrix tr[data-service=web]").innerText();
        assert.match(matrix, /web\s+FAIL\s+UP/);
        assert.match(await page.locator("table.addresses").innerText(), /198\.18\.0\.101\/24/);
        assert.match(await page.locator("table.handlers").innerText(), /db\s+start/);
      });

      await t.step("a failover shows up without a reload", async () => {
        await page.evaluate(() => ((globalThis as { marker?: number }).marker = 42));
        const failover = failoverSnapshot(fake.snapshot);
        failover.hosts.find((h) => h.name === "beta")!.liveness = {
          state: "silent",
          intervalMs: 10,
          fall: 5,
          stallGraceMs: 1000,
          unanswered: 5,
          silentMs: 52,
          rttMs: 0.05,
          lastAnswerAt: failover.now - 60,
          error: null,
          decisive: true,
        };
        fake.set(failover);
        await page.waitForSelector("table.services tr[data-service=web][data-state=UP]");
        assert.equal(await page.title(), "(1 down) failmon: alpha");
        assert.equal(
          await page.evaluate(() => (globalThis as { marker?: number }).marker),
          42,
          "the page was not reloaded",
        );
        await page.waitForSelector("table.hosts tr[data-host=beta].unreachable");
        assert.match(
          await page.locator("table.hosts tr[data-host=beta]").innerText(),
          /NO\s+3\s.*SILENT 52ms.*connection refused/s,
        );
        const web = await page.locator("table.services tr[data-service=web]").innerText();
        assert.match(web, /start: master beta is FAIL \(unreachable after 3 misses\)/);
        assert.match(
          await page.locator("table.addresses").innerText(),
          /198\.18\.0\.100\/24\s+eth0\s+web/,
        );
        assert.match(
          await page.locator("table.handlers tr[data-service=web]").innerText(),
          /start\s.*300ms\s+UP/s,
        );
        assert.match(await page.locator("table.events").innerText(), /took 198\.18\.0\.100\/24/);
        const stale = page.locator("table.matrix tr[data-service=web] td[data-host=beta] .state");
        assert.match((await stale.getAttribute("class")) ?? "", /stale/);
      });

      await t.step("with an arbiter, a column shows its state and epoch", async () => {
        const s = failoverSnapshot(fake.snapshot);
        s.services[0]!.arbiter = {
          state: "held",
          verdict: "grant",
          epoch: "9007199254740993",
          holder: null,
          reason: "holding",
          deadlineInMs: 4200,
        };
        fake.set(s);
        await page.waitForSelector("table.services th:text('Arbiter')");
        assert.match(
          await page.locator("table.services tr[data-service=web]").innerText(),
          /held, epoch 9007199254740993 \(4\.2s left\)/,
        );
      });

      await t.step("a lost connection is shown, then the page reconnects", async () => {
        await fake.stop();
        await page.waitForSelector("body[data-conn=lost]");
        assert.equal(await page.textContent("#conn"), "connection lost, retrying…");
        // The last state stays visible.
        await page.waitForSelector("table.services tr[data-service=web][data-state=UP]");
        fake.restart();
        fake.set(sampleSnapshot(fake.snapshot.now + 10_000));
        await page.waitForSelector("body[data-conn=connected]", { timeout: 20_000 });
        await page.waitForSelector("table.services tr[data-service=web][data-state=FAIL]");
      });

      await t.step(
        "names and messages from the network are shown as text, never as HTML",
        async () => {
          const evil = sampleSnapshot(fake.snapshot.now + 1000);
          const name = `<img src=x onerror="window.pwned=1">`;
          evil.hosts[1]!.name = name;
          evil.hosts[1]!.lastError = `</td><script>window.pwned=2</script>`;
          evil.events.push({
            at: evil.now,
            kind: "info",
            service: null,
            host: null,
            message: `<b id="bold">not bold</b>`,
          });
          fake.set(evil);
          await page.waitForSelector(`table.hosts tr[data-host='${name}']`);
          assert.equal(await page.locator("#app img").count(), 0);
          assert.equal(await page.locator("#app script").count(), 0);
          assert.equal(await page.locator("#bold").count(), 0);
          assert.equal(
            await page.evaluate(() => (globalThis as { pwned?: number }).pwned),
            undefined,
          );
          assert.ok((await page.locator("table.hosts").innerText()).includes(name));
          assert.ok((await page.locator("table.events").innerText()).includes('<b id="bold">'));
        },
      );

      await t.step("nothing is loaded from anywhere else", () => {
        const foreign = browser.requests.filter((u) => !u.startsWith(fake.url + "/"));
        assert.deepEqual(foreign, []);
      });
    } finally {
      await browser.close();
      await fake.close();
    }
  },
});
