/**
 * End to end in the namespace lab (tests/lab, docs/lab.md): two hosts run faild and failsh as in
 * `samples/ip_failover_linux`, the VIP on h1; hc runs on h1 and checks h1's own web service. The
 * web service dies while the host stays up (its faild and failsh keep answering): hc marks the
 * check FAIL, records `web` FAIL in h1's faild (signed with the cluster key), and its repair
 * action stops h1's failsh, which releases the VIP and reports it FAIL; the standby h2 takes the
 * VIP and the client is served by h2.
 *
 * Needs root, `ip netns` and `arping`; skips with the reason otherwise.
 */
import assert from "node:assert/strict";
import { Lab, labUnavailable } from "./lab/netns.ts";
import { REPO_ROOT, startFailover } from "./lab/failover.ts";

const PORT = 8080;
const INTERVAL = 200;
const HC_PORT = 7200;

async function unavailableReason(): Promise<string | null> {
  const lab = await labUnavailable();
  if (lab) return lab;
  for (const f of ["daemon/faild.ts", "shell/failsh.ts", "daemon/hc/hc.ts"]) {
    if (!await Deno.stat(REPO_ROOT + f).then(() => true, () => false)) return `${f} is missing`;
  }
  for (const p of ["/usr/bin/arping", "/usr/sbin/arping"]) {
    if (await Deno.stat(p).then(() => true, () => false)) return null;
  }
  return "arping is not installed (apt-get install iputils-arping)";
}

const unavailable = await unavailableReason();

/** GET over bash's /dev/tcp inside a lab host (the lab is not reachable from here). */
async function getInside(lab: Lab, host: string, port: number, path: string): Promise<unknown> {
  const script = `exec 3<>/dev/tcp/127.0.0.1/${port} && ` +
    `printf 'GET ${path} HTTP/1.0\\r\\nHost: lab\\r\\n\\r\\n' >&3 && cat <&3`;
  const r = await lab.exec(host, ["timeout", "3", "bash", "-c", script], {
    check: false,
    timeoutMs: 5000,
    maxOutput: 4 << 20,
  });
  try {
    return JSON.parse(r.stdout.split("\r\n\r\n").slice(1).join("\r\n\r\n"));
  } catch {
    return null;
  }
}

async function waitUntil(
  what: string,
  f: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!await f()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test({
  name: "hc end to end: the primary's web dies, hc marks it FAIL, the standby takes the VIP" +
    (unavailable ? ` (skipped: ${unavailable})` : ""),
  ignore: unavailable !== null,
  async fn() {
    const lab = await Lab.create({ hosts: 2 });
    try {
      const services = await lab.startServices(PORT);
      const cluster = await startFailover(lab, { intervalMs: INTERVAL, fall: 3 });
      const probe = lab.startProbe(PORT);
      try {
        assert.ok(await probe.waitServedBy("h1", 20_000), "h1 serves the VIP at start");
        const h1 = cluster.hosts.get("h1")!;
        const hcfile = `${h1.dir}/Hcfile`;
        await Deno.writeTextFile(
          hcfile,
          [
            "name hc-h1",
            "allow-program /usr/bin/kill",
            "web:",
            `\ttcp host=127.0.0.1 port=${PORT} interval=${INTERVAL}ms timeout=${INTERVAL}ms rise=1 fall=2`,
            `\ton fail: faild url=http://127.0.0.1:7100 key-file=cluster.key service=web`,
            `\ton up: faild url=http://127.0.0.1:7100 key-file=cluster.key service=web`,
            `\ton fail: run /usr/bin/kill -TERM ${h1.failsh.pid} timeout=2s`,
            "",
          ].join("\n"),
        );
        const hc = lab.spawn("h1", [
          Deno.execPath(),
          "run",
          "-A",
          `${REPO_ROOT}daemon/hc/hc.ts`,
          hcfile,
          "--listen",
          `127.0.0.1:${HC_PORT}`,
        ], { label: "h1-hc" });
        type Checks = {
          checks: { name: string; state: string; lastResult: { detail: string } | null }[];
        };
        const web = async () =>
          ((await getInside(lab, "h1", HC_PORT, "/v1/checks")) as Checks | null)
            ?.checks[0];
        await waitUntil(
          "hc reports web UP on h1",
          async () => (await web())?.state === "UP",
          30_000,
        );

        // The fault: h1's web service dies; h1 itself, its faild and failsh stay up.
        const cutAt = Date.now();
        await services.get("h1")!.stop({ graceMs: 1000 });
        await waitUntil("hc reports web FAIL", async () => (await web())?.state === "FAIL", 10_000);
        assert.match((await web())!.lastResult!.detail, /cannot connect to 127\.0\.0\.1:8080/);
        assert.ok(await probe.waitServedBy("h2", 15_000), "h2 serves the VIP after the web dies");
        const holders = await lab.waitHolders((h) => h.length === 1 && h[0] === "h2", 10_000);
        assert.deepEqual(holders, ["h2"], "exactly h2 holds the VIP");
        const outage = await probe.settledOutage(cutAt);
        console.log(`client-visible outage after the web died: ${JSON.stringify(outage)}`);
        assert.equal(outage.servedBy, "h2");
        // h1's faild holds the health record hc set (state file written by faild).
        await waitUntil("faild state file shows web FAIL", async () => {
          try {
            const state = JSON.parse(await Deno.readTextFile(`${h1.dir}/state.json`)) as {
              services: { name: string; state: string; detail: string }[];
            };
            const rec = state.services.find((s) => s.name === "web");
            return rec?.state === "FAIL" && rec.detail.startsWith("hc hc-h1: web FAIL");
          } catch {
            return false;
          }
        }, 10_000);
        await hc.stop({ graceMs: 3000 });
      } catch (e) {
        (e as Error).message += `\nholders: ${(await lab.holders().catch(() => [])).join(", ")}\n` +
          lab.diagnostics(30);
        throw e;
      } finally {
        await probe.stop();
        await cluster.stop();
      }
    } finally {
      await lab.teardown();
    }
  },
});
