/**
 * The symmetric pair, as in the original's `samples/symmetric`: two hosts, each the master of one
 * service and the backup of the other. In normal operation `alpha` serves `web` (address
 * 198.18.0.101) and `beta` serves `db` (198.18.0.102); when one host fails, the other holds both;
 * when it returns, it takes its own service back (preempt) and leaves the other alone.
 *
 * ```sh
 * # on alpha (as root for the address changes; see README.md)
 * deno task failsh --policy samples/symmetric/policy_alpha.json samples/symmetric/failover.ts
 * # on beta
 * deno task failsh --policy samples/symmetric/policy_beta.json samples/symmetric/failover.ts
 * ```
 *
 * @module
 */
import { type HandlerContext, host, service, type ServiceState } from "../../mod.ts";

host("alpha", { address: "198.18.0.1", port: 7100, key: "cluster" });
host("beta", { address: "198.18.0.2", port: 7100, key: "cluster" });

/** Handlers that float one address on eth0 and start / stop one systemd unit. */
function floating(address: string, unit: string) {
  return {
    async start(ctx: HandlerContext): Promise<ServiceState> {
      await ctx.takeover(address, { device: "eth0" });
      const r = await ctx.run(["systemctl", "start", unit], { timeoutMs: 20_000 });
      if (r.code === 0) return "UP";
      ctx.log(`systemctl start ${unit} failed (${r.code}): ${r.stderr.trim()}`);
      await ctx.release(address, { device: "eth0" });
      return "FAIL";
    },
    async stop(ctx: HandlerContext): Promise<ServiceState> {
      await ctx.run(["systemctl", "stop", unit], { timeoutMs: 20_000 });
      await ctx.release(address, { device: "eth0" });
      return "FAIL";
    },
  };
}

service("web", {
  masters: ["alpha"],
  slaves: ["beta"],
  interval: "1s",
  fall: 3,
  rise: 2,
  preempt: true,
  timeouts: { start: "30s", stop: "30s", reclaim: "30s" },
  ...floating("198.18.0.101/24", "nginx.service"),
});

service("db", {
  masters: ["beta"],
  slaves: ["alpha"],
  interval: "1s",
  fall: 3,
  rise: 2,
  // A database that comes back should not flip back on its own: an operator moves it.
  preempt: false,
  timeouts: { start: "60s", stop: "60s", reclaim: "60s" },
  ...floating("198.18.0.102/24", "postgresql.service"),
});
