/**
 * Costs of the failsh sandbox: a handler round trip through the child, a privileged request,
 * and a child restart after a handler timed out. Run with `deno bench -A bench/sandbox_bench.ts`.
 */
import { createSandbox } from "../shell/sandbox/sandbox.ts";
import { parsePolicy } from "../shell/sandbox/policy.ts";
import { AuditLog } from "../shell/sandbox/audit.ts";

const dir = await Deno.makeTempDir({ prefix: "failsh_bench_" });
const mod = new URL("../mod.ts", import.meta.url).href;
await Deno.writeTextFile(
  `${dir}/failover.ts`,
  `
import { host, service } from ${JSON.stringify(mod)};
host("alpha", { address: "127.0.0.1" });
service("web", { masters: ["alpha"], interval: "1s", start: async () => "UP", stop: async () => "FAIL" });
service("vip", {
  masters: ["alpha"], interval: "1s",
  async start(ctx) { await ctx.takeover("127.0.0.100/8", { device: "lo" }); return "UP"; },
  stop: async () => "FAIL",
});
service("spin", { masters: ["alpha"], interval: "1s", start() { while (true) {} }, stop: async () => "FAIL" });
`,
);
const policy = parsePolicy(
  JSON.stringify({
    host: "alpha",
    netDriver: "simulated",
    addresses: [{ prefix: "127.0.0.0/8", devices: ["lo"] }],
    audit: `${dir}/audit.log`,
  }),
  `${dir}/policy.json`,
);
const sandbox = createSandbox(`${dir}/failover.ts`, policy, {
  // Thousands of takeovers a second: far beyond the privileged budget a real child gets.
  audit: new AuditLog({
    script: `${dir}/failover.ts`,
    path: policy.audit,
    budget: { burst: 1e9, perSecond: 1e9 },
  }),
  onOutput: () => {},
  onLog: () => {},
});
await sandbox.start();
const call = (service: string, kind: "start" | "stop") => ({
  service,
  kind,
  self: "alpha",
  reason: "bench",
  peers: {},
});

Deno.bench("handler round trip through the sandboxed child", async () => {
  await sandbox.invoke(call("web", "stop"), 5000);
});

Deno.bench("handler with one checked, audited takeover (simulated driver)", async () => {
  await sandbox.invoke(call("vip", "start"), 5000);
});

Deno.bench("handler timeout (20 ms), kill, restart and next handler", { n: 20 }, async () => {
  await sandbox.invoke(call("spin", "start"), 20).catch(() => {});
  await sandbox.invoke(call("spin", "stop"), 5000);
});

globalThis.addEventListener("unload", () => {
  sandbox.close();
  Deno.removeSync(dir, { recursive: true });
});
