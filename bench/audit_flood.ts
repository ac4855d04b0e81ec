/**
 * How fast a hostile failover script can grow the audit log: a handler that loops for a few
 * seconds on refused requests with 4 KB arguments, on refused polls, and on allowed takeovers
 * (simulated driver), each in a real sandboxed child. Prints bytes and lines a second.
 *
 * Run with `deno run -A bench/audit_flood.ts [seconds]` (default 3 s per scenario).
 *
 * @module
 */
import { createSandbox } from "../shell/sandbox/sandbox.ts";
import { parsePolicy } from "../shell/sandbox/policy.ts";

const seconds = Number(Deno.args[0] ?? 3);
const mod = new URL("../mod.ts", import.meta.url).href;

const SCENARIOS: Record<string, string> = {
  "refused run, 4 KB argument": `await ctx.run(["rm", "x".repeat(4000)])`,
  "refused poll": `await ctx.poll("mallory")`,
  "allowed takeover": `await ctx.takeover("127.0.0.100/8", { device: "lo" })`,
};

for (const [name, body] of Object.entries(SCENARIOS)) {
  const dir = await Deno.makeTempDir({ prefix: "failsh_audit_flood_" });
  try {
    await Deno.writeTextFile(
      `${dir}/failover.ts`,
      `
import { host, service } from ${JSON.stringify(mod)};
host("alpha", { address: "127.0.0.1" });
service("web", {
  masters: ["alpha"], interval: "1s", timeouts: "${seconds * 4}s",
  async start(ctx) {
    const end = Date.now() + ${seconds * 1000};
    let n = 0;
    while (Date.now() < end) { try { ${body}; } catch { /* refused */ } n++; }
    ctx.log(String(n));
    return "UP";
  },
  stop: async () => "FAIL",
});
`,
    );
    const policy = parsePolicy(
      JSON.stringify({
        host: "alpha",
        netDriver: "simulated",
        monitor: null,
        addresses: [{ prefix: "127.0.0.0/8", devices: ["lo"] }],
        audit: `${dir}/audit.log`,
      }),
      `${dir}/policy.json`,
    );
    let requests = 0;
    const sandbox = createSandbox(`${dir}/failover.ts`, policy, {
      onOutput: () => {},
      onLog: (m) => requests = Number(m),
    });
    await sandbox.start();
    const started = performance.now();
    await sandbox.invoke(
      { service: "web", kind: "start", self: "alpha", reason: "bench", peers: {} },
      seconds * 4000,
    );
    const elapsed = (performance.now() - started) / 1000;
    await sandbox.close();
    const text = await Deno.readTextFile(policy.audit);
    const lines = text.split("\n").filter((l) => l !== "").length;
    console.log(
      `${name}: ${requests} requests in ${elapsed.toFixed(1)} s; audit ${
        (text.length / elapsed / 1024).toFixed(1)
      } KiB/s, ${(lines / elapsed).toFixed(0)} lines/s`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
