/**
 * A handler's `ctx.poll()` goes through the same pooled faild client as failsh's scheduler: one
 * client (one connection pool, one nonce session) per peer, keys read once at start. It used to
 * build a new client per call: a handler polling a peer five times opened five more connections
 * and nonce sessions on that peer's faild.
 */
import assert from "node:assert/strict";
import { startFaild } from "../daemon/faild/faild.ts";
import { FaildClient } from "../lib/client.ts";
import { Logger } from "../lib/log.ts";
import { startFailsh } from "../shell/failsh.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const KEY = "failsh-poll-test-secret";

async function until(what: string, fn: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function metric(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} in /metrics`);
  return Number(line.split(" ")[1]);
}

Deno.test("ctx.poll() reuses failsh's pooled client of the peer", async () => {
  const dir = await Deno.makeTempDir({ prefix: "failsh-poll-test-" });
  const quiet = new Logger({ level: "error", sink: () => {} });
  const start = (name: string) =>
    startFaild({
      listen: "127.0.0.1:0",
      community: `*  ${KEY}  RW\n`,
      name,
      logger: quiet,
      nonceSlots: 1 << 12,
    });
  const alpha = await start("alpha");
  const beta = await start("beta");
  const logs: string[] = [];
  let failsh: Awaited<ReturnType<typeof startFailsh>> | null = null;
  try {
    await Deno.writeTextFile(`${dir}/key`, KEY + "\n", { mode: 0o600 });
    await Deno.writeTextFile(
      `${dir}/failover.ts`,
      `import { host, service } from ${JSON.stringify(`${ROOT}mod.ts`)};
host("alpha", { address: "127.0.0.1", port: ${alpha.addr.port}, key: "k" });
host("beta", { address: "127.0.0.1", port: ${beta.addr.port}, key: "k" });
service("web", {
  masters: ["alpha"], slaves: ["beta"], interval: "100ms", grace: 0,
  async start(ctx) {
    let reachable = 0;
    for (let i = 0; i < 5; i++) if ((await ctx.poll("beta")).reachable) reachable++;
    ctx.log("polled beta: " + reachable + " of 5 reachable");
    return "UP";
  },
  stop: async () => "FAIL",
});
`,
    );
    await Deno.writeTextFile(
      `${dir}/policy.json`,
      JSON.stringify({
        host: "alpha",
        faild: { url: alpha.url, key: "k" },
        keys: { k: { file: `${dir}/key` } },
        netDriver: "simulated",
        monitor: null,
        audit: `${dir}/audit.log`,
        dumpFile: `${dir}/dump.json`,
      }),
    );
    failsh = await startFailsh({
      script: `${dir}/failover.ts`,
      policyPath: `${dir}/policy.json`,
      handleSignals: false,
      logger: new Logger({
        level: "info",
        sink: (line) => {
          const msg = JSON.parse(line).msg as string;
          if (msg.startsWith("polled beta")) logs.push(msg);
        },
      }),
    });
    await until("the start handler's polls", () => logs.length > 0);
    assert.deepEqual(logs, ["polled beta: 5 of 5 reachable"]);
    const client = new FaildClient(beta.url, { key: KEY });
    try {
      // The scheduler's polls of beta and the handler's five share one client: a connection or
      // two (a poll of the scheduler may overlap the handler's), never one per ctx.poll().
      const accepted = metric(await client.metrics(), "faild_http_connections_accepted_total");
      assert.ok(accepted <= 3, `beta's faild accepted ${accepted} connections`);
    } finally {
      client.close();
    }
  } finally {
    await failsh?.shutdown({ onExit: "release" });
    await alpha.close();
    await beta.close();
    await Deno.remove(dir, { recursive: true });
  }
});
