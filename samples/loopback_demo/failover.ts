/**
 * The loopback demo's failover script: two hosts, `alpha` (master) and `beta` (slave), each
 * with its own faild on a loopback address, share the service `web`: an HTTP server on the
 * "virtual" address 127.0.0.100:18080. The start handler takes the address over (the
 * `simulated` net driver records it, no root needed) and starts the server through the policy's
 * program `demo-service`; the stop handler stops it and releases the address. `deno task demo`
 * runs two failsh with this script and kills and revives alpha.
 *
 * Run one host by hand (after starting its faild, see README.md):
 *
 * ```sh
 * deno task failsh --policy samples/loopback_demo/policy_alpha.json samples/loopback_demo/failover.ts
 * ```
 *
 * @module
 */
import { type HandlerContext, host, service, type ServiceState } from "../../mod.ts";

/** The demo cluster. */
export interface LoopbackDemoConfig {
  /** Each host's faild address and port. */
  hosts: { alpha: { address: string; port: number }; beta: { address: string; port: number } };
  /** Directory where the demo service keeps its pid files (absolute). */
  stateDir: string;
  /** The service's port on 127.0.0.100 (default 18080). */
  port?: number;
  /** Poll interval in ms (default 100). */
  intervalMs?: number;
}

/** The virtual address the service lives on. */
export const VIRTUAL_ADDRESS = "127.0.0.100/32";

/**
 * Declares the demo's hosts and its `web` service.
 *
 * @param config Where the two faild listen and where the service keeps its state.
 * @returns The service name.
 */
export function loopbackDemo(config: LoopbackDemoConfig): string {
  const servicePath = new URL("./service.ts", import.meta.url).pathname;
  const port = String(config.port ?? 18080);
  for (const name of ["alpha", "beta"] as const) {
    host(name, { address: config.hosts[name].address, port: config.hosts[name].port, key: "demo" });
  }
  const program = (action: "start" | "stop", ctx: HandlerContext) =>
    ctx.run(
      ["demo-service", "run", "--allow-all", servicePath, action, ctx.self, config.stateDir, port],
      { timeoutMs: 8000 },
    );
  const take = async (ctx: HandlerContext): Promise<ServiceState> => {
    await ctx.takeover(VIRTUAL_ADDRESS, { device: "lo" });
    const r = await program("start", ctx);
    if (r.code === 0) return "UP";
    ctx.log(`demo service did not start (${r.code}): ${r.stderr.trim()}`);
    await program("stop", ctx);
    await ctx.release(VIRTUAL_ADDRESS, { device: "lo" });
    return "FAIL";
  };
  const interval = config.intervalMs ?? 100;
  service("web", {
    masters: ["alpha"],
    slaves: ["beta"],
    interval,
    fall: 3,
    rise: 2,
    preempt: true,
    grace: interval * 3,
    timeouts: { start: "10s", stop: "10s", reclaim: "10s" },
    start: take,
    reclaim: take,
    async stop(ctx): Promise<ServiceState> {
      await program("stop", ctx);
      await ctx.release(VIRTUAL_ADDRESS, { device: "lo" });
      return "FAIL";
    },
  });
  return "web";
}

if (import.meta.main) {
  // The cluster of the sample policies: alpha's faild on 127.0.0.11:7101, beta's on 127.0.0.12:7102.
  loopbackDemo({
    hosts: {
      alpha: { address: "127.0.0.11", port: 7101 },
      beta: { address: "127.0.0.12", port: 7102 },
    },
    stateDir: "/tmp/failover-loopback-demo",
  });
}
