/**
 * IP failover on Linux: a floating address (the VIP) held by exactly one host of a cluster.
 *
 * The master holds the VIP while it is healthy; when its faild stops answering for `fall`
 * consecutive polls, the first slave that sees no other holder takes the VIP over (failsh adds the
 * address with `ip addr add` and announces it with gratuitous ARP). With `preempt`, a returning
 * master enters RECOVER until the slave has released the VIP, then takes it back.
 *
 * Edit the cluster below (or import {@linkcode ipFailover} from your own script with your own
 * values), then on each host run, as root for the address changes (see README.md):
 *
 * ```sh
 * deno run -A shell/failsh.ts --policy /etc/failover/policy.json samples/ip_failover_linux/failover.ts
 * ```
 *
 * @module
 */
import {
  arbiter,
  type ArbiterOptions,
  type Duration,
  type HandlerContext,
  host,
  type HostOptions,
  type LivenessOptions,
  service,
  type ServiceState,
} from "../../mod.ts";

/** The description of an IP-failover cluster. */
export interface IpFailoverConfig {
  /** Every host and the address of its faild, e.g. `{ alpha: "198.18.0.1" }`. */
  hosts: Record<string, string>;
  /** faild's port on every host (default 7100). */
  port?: number;
  /** Name of the policy key that signs polls (default `cluster`; `null` for unsigned). */
  key?: string | null;
  /** Service name (default `vip`). */
  service?: string;
  /** The floating address with its prefix length, e.g. `198.18.0.100/24`. */
  address: string;
  /** The device the address goes on, e.g. `eth0`. */
  device: string;
  /** Master hosts, highest priority first. */
  masters: string[];
  /** Slave hosts, highest priority first. */
  slaves: string[];
  /** Poll interval of the peers (e.g. `"1s"`, `"50ms"`). */
  interval: Duration;
  /** Missed polls before a peer counts as failed (default 3). */
  fall?: number;
  /** Good polls before a failed peer counts again (default 2). */
  rise?: number;
  /** Whether a returning master takes the address back (default `true`). */
  preempt?: boolean;
  /** Start-up period without takeovers (default 2 intervals). */
  grace?: Duration;
  /** Time limit of each handler (default 10 s). */
  handlerTimeout?: Duration;
  /**
   * Host liveness for every host (opt in): failsh pings each peer every `interval` and counts it
   * dead at once after `fall` unanswered echo requests, e.g. `{ interval: "10ms", fall: 5 }`;
   * a peer whose kernel answers while its faild is silent fails only after `stallGrace` (1 s).
   */
  liveness?: LivenessOptions;
  /**
   * The cluster's etcd arbiter (see `docs/arbiter.md` and `samples/ip_failover_etcd/`): the VIP
   * is taken only while this host holds the service's key in etcd, so a partitioned or
   * black-holed host lets it go. Default: none (like keepalived, a partition gives two holders).
   */
  arbiter?: ArbiterOptions;
}

/**
 * Declares the hosts and the VIP service of an IP-failover cluster.
 *
 * @param config The cluster.
 * @returns The service name.
 *
 * @example
 * ```ts ignore
 * import { ipFailover } from "./failover.ts";
 * ipFailover({
 *   hosts: { alpha: "198.18.0.1", beta: "198.18.0.2" },
 *   address: "198.18.0.100/24",
 *   device: "eth0",
 *   masters: ["alpha"],
 *   slaves: ["beta"],
 *   interval: "1s",
 * });
 * ```
 */
export function ipFailover(config: IpFailoverConfig): string {
  if (config.arbiter !== undefined) arbiter(config.arbiter);
  const key = config.key === undefined ? "cluster" : config.key;
  for (const [name, address] of Object.entries(config.hosts)) {
    const options: HostOptions = { address, key };
    if (config.port !== undefined) options.port = config.port;
    if (config.liveness !== undefined) options.liveness = config.liveness;
    host(name, options);
  }
  const name = config.service ?? "vip";
  const { address, device } = config;
  const timeout = config.handlerTimeout ?? "10s";
  const take = async (ctx: HandlerContext): Promise<ServiceState> => {
    try {
      await ctx.takeover(address, { device });
      return "UP";
    } catch (e) {
      // Never leave the address half-taken: give it back, and report the failure.
      ctx.log(`takeover of ${address} failed: ${(e as Error).message}`);
      await ctx.release(address, { device }).catch(() => {});
      return "FAIL";
    }
  };
  service(name, {
    masters: config.masters,
    slaves: config.slaves,
    interval: config.interval,
    fall: config.fall ?? 3,
    rise: config.rise ?? 2,
    preempt: config.preempt ?? true,
    ...(config.grace === undefined ? {} : { grace: config.grace }),
    timeouts: { start: timeout, stop: timeout, reclaim: timeout },
    start: take,
    async stop(ctx): Promise<ServiceState> {
      await ctx.release(address, { device });
      return "FAIL";
    },
    reclaim: take,
  });
  return name;
}

if (import.meta.main) {
  // The cluster of README.md: two hosts, alpha the master, beta its backup.
  ipFailover({
    hosts: { alpha: "198.18.0.1", beta: "198.18.0.2" },
    address: "198.18.0.100/24",
    device: "eth0",
    masters: ["alpha"],
    slaves: ["beta"],
    interval: "1s",
    fall: 3,
    rise: 2,
    preempt: true,
  });
}
