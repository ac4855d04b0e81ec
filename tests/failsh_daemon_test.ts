/**
 * The running failsh as a real process against a real faild: it takes the service, reports it,
 * serves the monitor port, dumps on SIGUSR1, survives a broken script on SIGHUP without dropping
 * its address, reloads a good one, and releases on SIGTERM.
 */
import assert from "node:assert/strict";
import { startFaild } from "../daemon/faild/faild.ts";
import { FaildClient } from "../lib/client.ts";
import { Logger } from "../lib/log.ts";
import type { FailshSnapshot } from "../lib/types.ts";

const ROOT = new URL("../", import.meta.url).pathname;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The policy of the test host alpha (simulated net driver, onExit release by default). */
async function writePolicy(dir: string, faildUrl: string, monitorPort: number): Promise<void> {
  await Deno.writeTextFile(
    `${dir}/policy.json`,
    JSON.stringify({
      host: "alpha",
      faild: { url: faildUrl, key: "k" },
      keys: { k: { file: `${dir}/key` } },
      addresses: [{ prefix: "127.0.0.100/32", devices: ["lo"] }],
      netDriver: "simulated",
      monitor: `127.0.0.1:${monitorPort}`,
      audit: `${dir}/audit.log`,
      dumpFile: `${dir}/dump.json`,
    }),
  );
}

/** failsh as a real process on the directory's script and policy. */
function spawnFailsh(dir: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}shell/failsh.ts`,
      "--policy",
      `${dir}/policy.json`,
      `${dir}/failover.ts`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
}

function script(extraService: boolean, peerPort: number): string {
  return `import { host, service } from ${JSON.stringify(`${ROOT}mod.ts`)};
host("alpha", { address: "127.0.0.1", port: ${peerPort}, key: "k" });
host("beta", { address: "127.0.0.1", port: ${freePort()}, key: "k" });
service("web", {
  masters: ["alpha"], slaves: ["beta"], interval: "100ms", fall: 2, grace: "200ms",
  async start(ctx) { await ctx.takeover("127.0.0.100/32", { device: "lo" }); return "UP"; },
  async stop(ctx) { await ctx.release("127.0.0.100/32", { device: "lo" }); return "FAIL"; },
});
${
    extraService
      ? `service("db", { masters: ["alpha"], slaves: ["beta"], interval: "100ms",
  start: async () => "UP", stop: async () => "FAIL" });`
      : ""
  }
`;
}

async function until<T>(what: string, fn: () => Promise<T | null>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown = null;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== null) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`Timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

Deno.test("failsh runs as a daemon: reports, monitors, dumps, reloads and releases", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "failsh-daemon-test-" });
  const key = "daemon-test-secret";
  const faild = await startFaild({
    listen: "127.0.0.1:0",
    community: `*  ${key}  RW\n`,
    name: "alpha",
    logger: new Logger({ level: "error", sink: () => {} }),
    nonceSlots: 1 << 12,
  });
  const client = new FaildClient(faild.url, { key });
  const monitorPort = freePort();
  const monitor = `http://127.0.0.1:${monitorPort}`;
  let child: Deno.ChildProcess | null = null;
  try {
    await Deno.writeTextFile(`${dir}/key`, key + "\n", { mode: 0o600 });
    await Deno.writeTextFile(`${dir}/failover.ts`, script(false, faild.addr.port));
    await writePolicy(dir, faild.url, monitorPort);
    child = spawnFailsh(dir);
    const snap = async () => await (await fetch(`${monitor}/v1/snapshot`)).json() as FailshSnapshot;

    await t.step("the master takes the service and reports it to faild", async () => {
      const s = await until("web UP on the monitor port", async () => {
        const s = await snap();
        return s.services[0]?.state === "UP" && s.addresses.length === 1 ? s : null;
      });
      assert.equal(s.addresses[0]?.address, "127.0.0.100/32");
      assert.equal(s.hosts.find((h) => h.name === "beta")?.reachable, false);
      await until("web UP in faild", async () => (await client.get("web")).state === "UP" || null);
    });

    await t.step("SIGUSR1 writes the full state dump", async () => {
      child!.kill("SIGUSR1");
      const dump = await until("the dump file", async () => {
        const d = JSON.parse(await Deno.readTextFile(`${dir}/dump.json`));
        return d.snapshot ? d : null;
      });
      assert.equal(dump.snapshot.host, "alpha");
      assert.equal(dump.snapshot.services[0].state, "UP");
      assert.equal(dump.policy.host, "alpha");
      assert.equal(dump.pid, child!.pid);
    });

    await t.step("SIGHUP with a broken script keeps the old one and the address", async () => {
      await Deno.writeTextFile(`${dir}/failover.ts`, "this is not typescript (\n");
      child!.kill("SIGHUP");
      const s = await until("the reload failure event", async () => {
        const s = await snap();
        return s.events.some((e) => /Cannot reload/.test(e.message)) ? s : null;
      });
      assert.equal(s.services[0]?.state, "UP");
      assert.equal(s.addresses.length, 1);
    });

    await t.step(
      "SIGHUP with a good new script reloads it without dropping the address",
      async () => {
        await Deno.writeTextFile(`${dir}/failover.ts`, script(true, faild.addr.port));
        child!.kill("SIGHUP");
        const s = await until("the second service", async () => {
          const s = await snap();
          return s.services.length === 2 && s.services.every((x) => x.state === "UP") ? s : null;
        });
        assert.equal(s.services.find((x) => x.name === "web")?.state, "UP");
        assert.equal(s.addresses.length, 1);
        assert.ok(s.events.some((e) => /reloaded/.test(e.message)));
      },
    );

    await t.step(
      "a FAIL written to faild by a health check makes failsh give the address up",
      async () => {
        await client.set("web", "FAIL", { detail: "hc: http check failed" });
        const s = await until("web released", async () => {
          const s = await snap();
          const web = s.services.find((x) => x.name === "web");
          return web?.state === "FAIL" && s.addresses.length === 0 ? s : null;
        });
        assert.match(s.services.find((x) => x.name === "web")!.lastDecision!.reason, /set by/);
        await new Promise((r) => setTimeout(r, 500));
        assert.equal((await snap()).addresses.length, 0, "not taken back while vetoed");
        await client.set("web", "UP", { detail: "hc: http check passed" });
        await until("web taken again", async () => {
          const s = await snap();
          return s.services.find((x) => x.name === "web")?.state === "UP" &&
              s.addresses.length === 1
            ? s
            : null;
        });
      },
    );

    await t.step("SIGTERM runs the stop handlers, reports FAIL and releases", async () => {
      child!.kill("SIGTERM");
      const status = await child!.status;
      child = null;
      assert.equal(status.code, 0);
      assert.equal((await client.get("web")).state, "FAIL");
      const audit = await Deno.readTextFile(`${dir}/audit.log`);
      assert.match(audit, /sim-addr-del/);
    });
  } finally {
    if (child) {
      child.kill("SIGKILL");
      await child.status;
    }
    client.close();
    await faild.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("failsh releases the address a start handler took before it hung", async () => {
  const dir = await Deno.makeTempDir({ prefix: "failsh-daemon-test-" });
  const key = "daemon-test-secret";
  const faild = await startFaild({
    listen: "127.0.0.1:0",
    community: `*  ${key}  RW\n`,
    name: "alpha",
    logger: new Logger({ level: "error", sink: () => {} }),
    nonceSlots: 1 << 12,
  });
  const monitorPort = freePort();
  let child: Deno.ChildProcess | null = null;
  try {
    await Deno.writeTextFile(`${dir}/key`, key + "\n", { mode: 0o600 });
    await Deno.writeTextFile(
      `${dir}/failover.ts`,
      `import { host, service } from ${JSON.stringify(`${ROOT}mod.ts`)};
host("alpha", { address: "127.0.0.1", port: ${faild.addr.port}, key: "k" });
host("beta", { address: "127.0.0.1", port: ${freePort()}, key: "k" });
service("web", {
  masters: ["alpha"], slaves: ["beta"], interval: "100ms", fall: 2, grace: "200ms",
  timeouts: { start: "600ms", stop: "5s", reclaim: "600ms" },
  async start(ctx) {
    await ctx.takeover("127.0.0.100/32", { device: "lo" });
    while (true) { /* hangs: the supervisor kills the child */ }
  },
  async stop(ctx) { await ctx.release("127.0.0.100/32", { device: "lo" }); return "FAIL"; },
});
`,
    );
    await writePolicy(dir, faild.url, monitorPort);
    child = spawnFailsh(dir);
    const s = await until("the timed-out start and its cleanup", async () => {
      const s = await (await fetch(`http://127.0.0.1:${monitorPort}/v1/snapshot`))
        .json() as FailshSnapshot;
      return s.events.some((e) =>
          /released 127\.0\.0\.100\/32 after its handler failed/.test(e.message)
        )
        ? s
        : null;
    });
    const web = s.services[0]!;
    assert.equal(web.state, "FAIL");
    assert.match(web.lastHandler?.error ?? "", /timed out/);
    const audit = await Deno.readTextFile(`${dir}/audit.log`);
    assert.match(audit, /sim-addr-del/, "the half-taken address was released");
  } finally {
    if (child) {
      child.kill("SIGTERM");
      await child.status;
    }
    await faild.close();
    await Deno.remove(dir, { recursive: true });
  }
});
