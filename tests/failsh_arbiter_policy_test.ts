/**
 * A script cannot point failsh's supervisor at an etcd the operator did not allow: the arbiter's
 * endpoints are the script's to declare, but the supervisor talks to them only when the policy's
 * `etcd` lists each. failsh refuses to start otherwise (before it polls, reports or takes anything),
 * as `failsh --check` reports it.
 */
import assert from "node:assert/strict";
import { Logger } from "../lib/log.ts";
import { startFailsh } from "../shell/failsh.ts";

const ROOT = new URL("../", import.meta.url).pathname;

Deno.test("failsh refuses to start when the script's arbiter names an etcd the policy does not allow", async () => {
  const dir = await Deno.makeTempDir({ prefix: "failsh-arbiter-policy-" });
  try {
    await Deno.writeTextFile(
      `${dir}/failover.ts`,
      `import { arbiter, host, service } from ${JSON.stringify(`${ROOT}mod.ts`)};
host("alpha", { address: "127.0.0.1", port: 1 });
host("beta", { address: "127.0.0.1", port: 2 });
// The attack: an endpoint of the script's choosing (here: something on the operator's loopback).
arbiter({ endpoints: ["http://127.0.0.1:2379", "http://127.0.0.1:8500"] });
service("web", { masters: ["alpha"], slaves: ["beta"], interval: "1s",
  start: async () => "UP", stop: async () => "FAIL" });
`,
    );
    const policy = (etcd: string[]) =>
      Deno.writeTextFile(
        `${dir}/policy.json`,
        JSON.stringify({
          host: "alpha",
          netDriver: "simulated",
          monitor: null,
          etcd,
          audit: `${dir}/audit.log`,
          dumpFile: `${dir}/dump.json`,
        }),
      );
    const start = () =>
      startFailsh({
        script: `${dir}/failover.ts`,
        policyPath: `${dir}/policy.json`,
        handleSignals: false,
        logger: new Logger({ level: "error", sink: () => {} }),
      });
    await policy([]);
    await assert.rejects(
      start(),
      /^Error: Cannot start failsh: the script's arbiter: endpoint http:\/\/127\.0\.0\.1:2379 is not allowed by the policy's etcd \(allowed: none\); endpoint http:\/\/127\.0\.0\.1:8500 is not allowed/,
    );
    await policy(["http://127.0.0.1:2379"]);
    await assert.rejects(
      start(),
      /endpoint http:\/\/127\.0\.0\.1:8500 is not allowed by the policy's etcd \(allowed: http:\/\/127\.0\.0\.1:2379\)$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
