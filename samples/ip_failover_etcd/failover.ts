/**
 * IP failover on Linux with an etcd arbiter: the two-host cluster of
 * `samples/ip_failover_linux/`, plus the cluster's etcd (three members) as the arbiter. A host
 * adds the VIP only after it holds the service's key in etcd, and removes it on its own clock
 * before etcd can give the key to the other host, so a partitioned or black-holed master does not
 * keep serving the address while the backup takes it (see `docs/arbiter.md`).
 *
 * On each host, as root for the address changes (see README.md):
 *
 * ```sh
 * deno run -A shell/failsh.ts --policy /etc/failover/policy.json samples/ip_failover_etcd/failover.ts
 * ```
 *
 * @module
 */
import { ipFailover } from "../ip_failover_linux/failover.ts";

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
  arbiter: {
    // The v3 JSON gateway of each etcd member (the client port, 2379); the policy's "etcd" must
    // list the same endpoints.
    endpoints: ["http://198.18.1.11:2379", "http://198.18.1.12:2379", "http://198.18.1.13:2379"],
    prefix: "/failover/vip-cluster/",
    // renew = TTL/3, timeout = TTL/6, margin = TTL/6, takeoverDelay = renew + margin by default:
    // 2 s, 1 s, 1 s, 3 s. failsh --check enforces renew + 2 × timeout + margin ≤ TTL.
    ttl: "6s",
    onArbiterLoss: "release",
  },
});
