/**
 * The monitors against the real thing: the loopback demo's setup (`scripts/demo.ts`: two hosts on
 * 127.0.0.0/8, each with its own faild and a failsh running `samples/loopback_demo/failover.ts`
 * with the simulated net driver), with monitor and debug ports this test chooses. The web page of
 * the standby and a `failmon --serve` aggregate page are open in headless Chromium when the
 * primary is killed; both must show the takeover without a reload. failmon and faildebug are
 * then run against the standby's monitor and debug ports.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { type FaildHandle, startFaild } from "../daemon/faild.ts";
import { Logger } from "../lib/log.ts";
import type { FailshSnapshot } from "../lib/types.ts";
import { serveAggregate } from "../scripts/failmon/aggregate.ts";
import { launchBrowser, NO_BROWSER } from "./web_browser.ts";

const REPO = new URL("../", import.meta.url).pathname;
const SAMPLE = `${REPO}samples/loopback_demo/`;
const FAILMON = `${REPO}scripts/failmon.ts`;
const FAILDEBUG = `${REPO}scripts/faildebug.ts`;
const ADDRESSES = { alpha: "127.0.0.11", beta: "127.0.0.12" } as const;
type Name = keyof typeof ADDRESSES;
const decoder = new TextDecoder();

function freePort(hostname: string): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function until<T>(what: string, ms: number, probe: () => Promise<T | null>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe().catch(() => null);
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function snapshotOf(url: string): Promise<FailshSnapshot> {
  const r = await fetch(url + "/v1/snapshot", { signal: AbortSignal.timeout(2000) });
  if (!r.ok) {
    await r.body?.cancel();
    throw new Error(`HTTP ${r.status}`);
  }
  return await r.json() as FailshSnapshot;
}

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
    const dir = await Deno.makeTempDir({ prefix: "failmon-demo-test-" });
    const stateDir = `${dir}/service`;
    await Deno.mkdir(stateDir);
    const key = randomBytes(24).toString("hex");
    await Deno.writeTextFile(`${dir}/demo.key`, key + "\n", { mode: 0o600 });
    const servicePort = freePort("127.0.0.100");
    const faildPorts = { alpha: freePort(ADDRESSES.alpha), beta: freePort(ADDRESSES.beta) };
    const monitor = { alpha: freePort("127.0.0.1"), beta: freePort("127.0.0.1") };
    const debug = { alpha: freePort("127.0.0.1"), beta: freePort("127.0.0.1") };
    const monitorUrl = (n: Name) => `http://127.0.0.1:${monitor[n]}`;
    const script = `${dir}/failover.ts`;
    await Deno.writeTextFile(
      script,
      `import { loopbackDemo } from ${JSON.stringify(`file://${SAMPLE}failover.ts`)};\n` +
        `loopbackDemo(${
          JSON.stringify({
            hosts: {
              alpha: { address: ADDRESSES.alpha, port: faildPorts.alpha },
              beta: { address: ADDRESSES.beta, port: faildPorts.beta },
            },
            stateDir,
            port: servicePort,
            intervalMs: 100,
          })
        });\n`,
    );
    for (const name of ["alpha", "beta"] as const) {
      const policy = JSON.parse(await Deno.readTextFile(`${SAMPLE}policy_${name}.json`));
      policy.faild.url = `http://${ADDRESSES[name]}:${faildPorts[name]}`;
      policy.keys = { demo: { file: `${dir}/demo.key` } };
      policy.programs[0].path = Deno.execPath();
      policy.monitor = `127.0.0.1:${monitor[name]}`;
      policy.debug = `127.0.0.1:${debug[name]}`;
      policy.debugKey = "demo";
      policy.audit = `${dir}/audit-${name}.log`;
      policy.dumpFile = `${dir}/failsh-${name}.dump`;
      await Deno.writeTextFile(`${dir}/policy_${name}.json`, JSON.stringify(policy, null, 2));
    }
    const quiet = new Logger({ level: "error", sink: () => {} });
    const faild: Partial<Record<Name, FaildHandle>> = {};
    const failsh: Partial<Record<Name, Deno.ChildProcess>> = {};

    const startHost = async (name: Name) => {
      faild[name] = await startFaild({
        listen: `${ADDRESSES[name]}:${faildPorts[name]}`,
        community: `*  ${key}  RW\n`,
        name,
        logger: quiet,
        nonceSlots: 1 << 12,
      });
      failsh[name] = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          `${REPO}shell/failsh.ts`,
          "--policy",
          `${dir}/policy_${name}.json`,
          script,
        ],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
    };
    const killService = async (name: Name) => {
      try {
        const pid = Number((await Deno.readTextFile(`${stateDir}/${name}.pid`)).trim());
        if (pid > 1) Deno.kill(pid, "SIGKILL");
      } catch {
        // not running
      }
    };
    const stopHost = async (name: Name, signal: Deno.Signal) => {
      const child = failsh[name];
      if (child) {
        try {
          child.kill(signal);
        } catch {
          // gone
        }
        const late = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch {
            // gone
          }
        }, 8000);
        await child.status;
        clearTimeout(late);
        delete failsh[name];
      }
      await killService(name);
      await faild[name]?.close();
      delete faild[name];
    };

    const browser = await launchBrowser({ height: 1200 });
    const aggregate = serveAggregate([monitorUrl("alpha"), monitorUrl("beta")], {
      minBackoffMs: 100,
      maxBackoffMs: 500,
    });
    const aggPage = await browser.context.newPage();
    const { page } = browser;
    try {
      await startHost("alpha");
      await startHost("beta");
      await t.step("alpha serves web; beta stands by", async () => {
        await until("alpha to hold web", 60_000, async () => {
          const s = await snapshotOf(monitorUrl("alpha"));
          return s.services.find((v) => v.name === "web")?.state === "UP" ? s : null;
        });
        await until("beta to see alpha", 30_000, async () => {
          const s = await snapshotOf(monitorUrl("beta"));
          return s.hosts.find((h) => h.name === "alpha")?.reachable ? s : null;
        });
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
        await aggPage.evaluate(() => ((globalThis as { marker?: number }).marker = 1));
        await page.evaluate(() => ((globalThis as { marker?: number }).marker = 1));
      });

      await t.step("alpha dies: both pages show beta taking over, without a reload", async () => {
        await stopHost("alpha", "SIGKILL");
        await page.waitForSelector("table.services tr[data-service=web][data-state=UP]", {
          timeout: 30_000,
        });
        await page.waitForSelector("table.hosts tr[data-host=alpha].unreachable");
        assert.match(await page.locator("table.addresses").innerText(), /127\.0\.0\.100\/32/);
        assert.match(
          await page.locator("table.handlers tr[data-service=web]").innerText(),
          /start/,
        );
        assert.match(
          await page.locator("table.events").innerText(),
          /decision\s+web\s+web: start — .*alpha is unreachable/,
          "the decision to start is listed with its reason",
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

      await t.step("failmon -m 1 --json reads the real snapshot", async () => {
        const r = await runTool(FAILMON, ["-m", "1", "--json", "--url", monitorUrl("beta")]);
        assert.equal(r.code, 0, r.out);
        const s = JSON.parse(r.out) as FailshSnapshot;
        assert.equal(s.host, "beta");
        assert.equal(s.services.find((v) => v.name === "web")?.state, "UP");
        assert.equal(s.hosts.find((h) => h.name === "alpha")?.reachable, false);
      });

      await t.step("faildebug lists and sets levels on failsh's debug port", async () => {
        const url = `http://127.0.0.1:${debug.beta}`;
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
      await aggPage.close().catch(() => {});
      await browser.close();
      await aggregate.close();
      await stopHost("beta", "SIGTERM");
      await stopHost("alpha", "SIGKILL");
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
