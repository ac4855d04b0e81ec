/**
 * keepalived (the baseline) in the lab: VRRPv3 with `unicast_src_ip` / `unicast_peer` between the
 * hosts, the VIP on `eth0`, one foreground instance per host (`-n -l -D -P` with its own pid
 * files) inside the host's namespace.
 *
 * @module
 */
import type { ManagedProcess } from "./exec.ts";
import { type Lab, LAB_DEVICE } from "./netns.ts";

/** Options of {@linkcode keepalivedConfig} and {@linkcode startKeepalived}. */
export interface KeepalivedOptions {
  /** `advert_int` in seconds (VRRPv3 accepts centiseconds, e.g. 0.05). */
  advertIntSec: number;
  /** Priority of each host, highest wins (default: h1 254, h2 253, h3 252…). */
  priorities?: Record<string, number>;
  /** Whether a higher-priority host takes the VIP back when it returns (default `true`). */
  preempt?: boolean;
  /** VRRP router id (default 51). */
  vrid?: number;
  /**
   * `vrrp_higher_prio_send_advert` (default `false`, keepalived's default): a master that hears a
   * higher-priority advert sends one more advert of its own before it becomes backup, so the
   * other master (after two masters at once, e.g. a healed black hole) sends its gratuitous ARPs
   * again (`vrrp_garp_lower_prio_repeat`) and clients come back to it.
   */
  higherPrioSendAdvert?: boolean;
}

function defaultPriority(host: string): number {
  // High priorities make the skew time ((256 - priority) × interval / 256) almost zero, so the
  // baseline is keepalived at its fastest: h1 254, h2 253, h3 252…
  return Math.max(1, 255 - Number(host.slice(1)));
}

/**
 * Renders one host's keepalived.conf.
 *
 * @param lab The lab (addresses, VIP).
 * @param host The host the config is for.
 * @param options Interval, priorities, preemption.
 * @returns The configuration text.
 *
 * @example
 * ```ts ignore
 * const conf = keepalivedConfig(lab, "h1", { advertIntSec: 1 });
 * ```
 */
export function keepalivedConfig(lab: Lab, host: string, options: KeepalivedOptions): string {
  if (!(options.advertIntSec >= 0.01 && options.advertIntSec <= 40.95)) {
    throw new RangeError(`Invalid advert_int: ${options.advertIntSec}: expected 0.01 to 40.95 s`);
  }
  const prio = options.priorities?.[host] ?? defaultPriority(host);
  const peers = lab.hosts.filter((h) => h !== host).map((h) => `    ${lab.address(h)}`).join("\n");
  const preempt = options.preempt ?? true;
  return `global_defs {
  router_id ${host}
  vrrp_version 3
  enable_script_security
${options.higherPrioSendAdvert ? "  vrrp_higher_prio_send_advert\n" : ""}}

vrrp_instance VI_1 {
  state ${host === "h1" ? "MASTER" : "BACKUP"}
  interface ${LAB_DEVICE}
  virtual_router_id ${options.vrid ?? 51}
  priority ${prio}
  advert_int ${options.advertIntSec}
${preempt ? "" : "  nopreempt\n"}  unicast_src_ip ${lab.address(host)}
  unicast_peer {
${peers}
  }
  virtual_ipaddress {
    ${lab.vip}/${lab.prefixLength} dev ${LAB_DEVICE}
  }
}
`;
}

/** A keepalived instance per host. */
export interface KeepalivedCluster {
  /** The processes, by host. */
  processes: Map<string, ManagedProcess>;
  /** Stops every instance (SIGTERM; keepalived removes the VIP on exit). */
  stop(): Promise<void>;
}

/**
 * Starts keepalived on every lab host and waits until exactly one host holds the VIP.
 *
 * @param lab The lab.
 * @param options Interval and priorities.
 * @returns The running cluster.
 */
export async function startKeepalived(
  lab: Lab,
  options: KeepalivedOptions,
): Promise<KeepalivedCluster> {
  const processes = new Map<string, ManagedProcess>();
  const tag = `ka${String(options.advertIntSec).replace(".", "_")}`;
  for (const h of lab.hosts) {
    const dir = `${lab.dir}/${h}-${tag}`;
    await Deno.mkdir(dir, { recursive: true });
    const conf = `${dir}/keepalived.conf`;
    await Deno.writeTextFile(conf, keepalivedConfig(lab, h, options));
    processes.set(
      h,
      lab.spawn(h, [
        "keepalived",
        "-n",
        "-l",
        "-D",
        "-P",
        "-f",
        conf,
        "-p",
        `${dir}/keepalived.pid`,
        "-r",
        `${dir}/vrrp.pid`,
        "-c",
        `${dir}/checkers.pid`,
      ], { label: `${h}-keepalived-${tag}` }),
    );
  }
  const cluster: KeepalivedCluster = {
    processes,
    async stop() {
      await Promise.all([...processes.values()].map((p) => p.stop({ graceMs: 3000 })));
    },
  };
  const holders = await lab.waitHolders((h) => h.length === 1 && h[0] === "h1", 20_000);
  if (!holders) {
    await cluster.stop();
    throw new Error(`keepalived did not put the VIP on h1: ${lab.diagnostics()}`);
  }
  return cluster;
}
