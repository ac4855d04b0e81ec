/**
 * A real 3-member etcd cluster in the lab, on a second bridge: the **management network**.
 *
 * ```text
 *  namespace <prefix>br
 *  ├─ br0  service network   p-h1 p-h2 … p-client        (198.18.X.0/24, the lab's)
 *  └─ br1  management        m-h1 m-h2 … m-e1 m-e2 m-e3  (198.19.X.0/24: the other half of
 *                                                         198.18.0.0/15, same third octet)
 *  hosts:        eth0 on br0, eth1 on br1 (M.1, M.2, …)
 *  etcd members: eth1 on br1 only (M.11, M.12, M.13), one namespace each (e1, e2, e3)
 *  client:       br0 only: it never reaches etcd
 * ```
 *
 * So a host can be cut from etcd only (its management port down or black-holed) or from the
 * other hosts only (its service port isolated with `Lab.partition`), and an etcd member can be
 * killed, paused or cut. Members run Debian's etcd 3.4 with short lab timings (heartbeat 50 ms,
 * election 500 ms: the smallest lease TTL is then 1 s). Everything stops with the lab's
 * teardown (the namespaces and processes are the lab's).
 *
 * @module
 */
import type { ManagedProcess } from "./exec.ts";
import { run } from "./exec.ts";
import type { Lab } from "./netns.ts";

/** The management device inside every namespace on the management bridge. */
export const MGMT_DEVICE = "eth1";

/** etcd's client port. */
export const ETCD_CLIENT_PORT = 2379;

/** etcd's peer port. */
export const ETCD_PEER_PORT = 2380;

/**
 * Tells why the etcd lab cannot run here (on top of the lab's own reasons).
 *
 * @returns The reason naming the Debian package, or `null`.
 */
export async function etcdLabUnavailable(): Promise<string | null> {
  for (const [bin, pkg] of [["etcd", "etcd-server"], ["curl", "curl"]] as const) {
    const r = await run(["sh", "-c", `command -v ${bin}`], { check: false, timeoutMs: 5000 });
    if (r.code !== 0) return `${bin} is not installed (apt-get install ${pkg})`;
  }
  return null;
}

/** Options of {@linkcode EtcdLab.start}. */
export interface EtcdLabOptions {
  /** Number of etcd members (default 3, at most 5). */
  members?: number;
  /** Lab members to plug into the management network (default: every host). */
  attach?: string[];
  /** Heartbeat interval in ms (default 50). */
  heartbeatMs?: number;
  /** Election timeout in ms (default 500). */
  electionMs?: number;
  /** How long to wait for the cluster to elect a leader and serve (default 30 s). */
  startTimeoutMs?: number;
}

/** The answer of `/v3/maintenance/status` for one member. */
export interface MemberStatus {
  /** The member (`e1`…). */
  member: string;
  /** Its id (decimal string). */
  id: string;
  /** The leader's id as it sees it (`"0"`: none). */
  leader: string;
  /** The raft term. */
  raftTerm: string;
}

/** How a host is cut from the management network. */
export type MgmtCut = "down" | "blackhole";

/** A running etcd cluster on the lab's management network. */
export class EtcdLab {
  /** The lab. */
  readonly lab: Lab;
  /** The first three octets of the management /24. */
  readonly net: string;
  /** The etcd members (`e1`, `e2`, `e3`). */
  readonly members: string[];
  /** Lab members plugged into the management network. */
  readonly attached: string[];
  /** The cluster token. */
  readonly token: string;
  #options: Required<Omit<EtcdLabOptions, "attach" | "members">>;
  #processes = new Map<string, ManagedProcess>();
  #generation = 0;

  private constructor(
    lab: Lab,
    net: string,
    members: string[],
    attached: string[],
    options: EtcdLabOptions,
  ) {
    this.lab = lab;
    this.net = net;
    this.members = members;
    this.attached = attached;
    this.token = `folab-${crypto.randomUUID().slice(0, 8)}`;
    this.#options = {
      heartbeatMs: options.heartbeatMs ?? 50,
      electionMs: options.electionMs ?? 500,
      startTimeoutMs: options.startTimeoutMs ?? 30_000,
    };
  }

  /**
   * Builds the management bridge, plugs the hosts and the etcd members into it, starts etcd on
   * each member and waits until every member serves with a leader. On failure everything made so
   * far stays with the lab and goes at its teardown.
   *
   * @param lab The lab (its teardown removes everything this makes).
   * @param options Members, hosts to attach, timings.
   * @returns The running cluster.
   */
  static async start(lab: Lab, options: EtcdLabOptions = {}): Promise<EtcdLab> {
    const n = options.members ?? 3;
    if (!Number.isInteger(n) || n < 1 || n > 5) {
      throw new RangeError(`Invalid number of etcd members: ${n}: expected 1 to 5`);
    }
    // The other /16 of 198.18.0.0/15, same third octet: never the lab's own /24.
    const [a, b, c] = lab.net.split(".");
    const net = `${a}.${b === "18" ? "19" : "18"}.${c}`;
    const members = Array.from({ length: n }, (_, i) => `e${i + 1}`);
    const attached = options.attach ?? [...lab.hosts];
    const e = new EtcdLab(lab, net, members, attached, options);
    await e.#build();
    for (const m of members) e.#spawn(m);
    await e.#waitReady(e.#options.startTimeoutMs);
    return e;
  }

  /**
   * A member's management address: hosts keep their number (`h1` → M.1), etcd members are
   * M.11, M.12, ….
   *
   * @param member `h1`… or `e1`….
   * @returns The IPv4 address.
   */
  address(member: string): string {
    const e = /^e(\d)$/.exec(member);
    if (e && this.members.includes(member)) return `${this.net}.${10 + Number(e[1])}`;
    const h = /^h(\d)$/.exec(member);
    if (h && this.attached.includes(member)) return `${this.net}.${h[1]}`;
    throw new RangeError(`Unknown management member: ${member}`);
  }

  /** The client URLs of every member, in order. */
  get endpoints(): string[] {
    return this.members.map((m) => `http://${this.address(m)}:${ETCD_CLIENT_PORT}`);
  }

  /**
   * The bridge port of a member on the management bridge.
   *
   * @param member `h1`… or `e1`….
   * @returns The port name in the `br` namespace.
   */
  port(member: string): string {
    return `m-${member}`;
  }

  /** The etcd process of a member, or `undefined` once killed. */
  process(member: string): ManagedProcess | undefined {
    return this.#processes.get(member);
  }

  async #br(args: string[]): Promise<void> {
    await run(["ip", "-n", this.lab.ns("br"), ...args], { timeoutMs: 5000 });
  }

  async #build(): Promise<void> {
    await this.#br(["link", "add", "br1", "type", "bridge", "stp_state", "0"]);
    await this.#br(["link", "set", "br1", "up"]);
    for (const m of this.members) await this.lab.addNamespace(m);
    for (const m of [...this.attached, ...this.members]) {
      const ns = this.lab.ns(m);
      await this.#br([
        "link",
        "add",
        this.port(m),
        "type",
        "veth",
        "peer",
        "name",
        MGMT_DEVICE,
        "netns",
        ns,
      ]);
      await this.#br(["link", "set", this.port(m), "master", "br1", "up"]);
      await run(["ip", "-n", ns, "addr", "add", `${this.address(m)}/24`, "dev", MGMT_DEVICE], {
        timeoutMs: 5000,
      });
      await run(["ip", "-n", ns, "link", "set", MGMT_DEVICE, "up"], { timeoutMs: 5000 });
    }
  }

  #spawn(member: string): ManagedProcess {
    const addr = this.address(member);
    const cluster = this.members.map((m) => `${m}=http://${this.address(m)}:${ETCD_PEER_PORT}`)
      .join(",");
    const p = this.lab.spawn(member, [
      "etcd",
      "--name",
      member,
      "--data-dir",
      `${this.lab.dir}/etcd-${member}`,
      "--listen-peer-urls",
      `http://${addr}:${ETCD_PEER_PORT}`,
      "--listen-client-urls",
      `http://${addr}:${ETCD_CLIENT_PORT}`,
      "--advertise-client-urls",
      `http://${addr}:${ETCD_CLIENT_PORT}`,
      "--initial-advertise-peer-urls",
      `http://${addr}:${ETCD_PEER_PORT}`,
      "--initial-cluster",
      cluster,
      "--initial-cluster-state",
      "new",
      "--initial-cluster-token",
      this.token,
      "--heartbeat-interval",
      String(this.#options.heartbeatMs),
      "--election-timeout",
      String(this.#options.electionMs),
      "--logger",
      "zap",
      "--log-outputs",
      "stderr",
      "--log-level",
      "error",
    ], { label: `${member}-etcd-${++this.#generation}` });
    this.#processes.set(member, p);
    return p;
  }

  /**
   * One gateway call from inside a namespace (curl), for the lab's own checks.
   *
   * @param from The namespace to call from (`e1`, `h1`, …).
   * @param endpoint The member's client URL.
   * @param path `/v3/...`.
   * @param body The JSON body.
   * @param timeoutMs Time limit (default 1000).
   * @returns The parsed answer, or `null` when there was none (or it was not JSON).
   */
  async call(
    from: string,
    endpoint: string,
    path: string,
    body: unknown,
    timeoutMs = 1000,
  ): Promise<Record<string, unknown> | null> {
    const r = await this.lab.exec(from, [
      "curl",
      "-s",
      "-m",
      (timeoutMs / 1000).toFixed(2),
      "-X",
      "POST",
      `${endpoint}${path}`,
      "-d",
      JSON.stringify(body),
    ], { check: false, timeoutMs: timeoutMs + 2000 });
    if (r.code !== 0) return null;
    try {
      const v = JSON.parse(r.stdout);
      return typeof v === "object" && v !== null ? v as Record<string, unknown> : null;
    } catch {
      return null;
    }
  }

  /**
   * Every member's view of the cluster (`/v3/maintenance/status`), asked from inside each
   * member's own namespace; members that do not answer are left out.
   *
   * @returns The statuses.
   */
  async statuses(): Promise<MemberStatus[]> {
    const out: MemberStatus[] = [];
    await Promise.all(this.members.map(async (m) => {
      const r = await this.call(
        m,
        `http://${this.address(m)}:${ETCD_CLIENT_PORT}`,
        "/v3/maintenance/status",
        {},
      );
      const header = r?.header as Record<string, unknown> | undefined;
      if (!r || !header || typeof r.leader !== "string") return;
      out.push({
        member: m,
        id: String(header.member_id),
        leader: r.leader,
        raftTerm: String(r.raftTerm ?? header.raft_term ?? "0"),
      });
    }));
    return out.sort((x, y) => x.member.localeCompare(y.member));
  }

  /**
   * The member that leads, as a majority of the members that answer see it.
   *
   * @returns `e1`…, or `null` when there is none (or no majority agrees).
   */
  async leader(): Promise<string | null> {
    const s = await this.statuses();
    const votes = new Map<string, number>();
    for (const x of s) if (x.leader !== "0") votes.set(x.leader, (votes.get(x.leader) ?? 0) + 1);
    for (const [id, count] of votes) {
      if (count * 2 > this.members.length) return s.find((x) => x.id === id)?.member ?? null;
    }
    return null;
  }

  /**
   * Waits until a leader is elected (different from `not`, when given).
   *
   * @param timeoutMs Time limit.
   * @param not A member that must not be the leader (the one just killed).
   * @returns The leader, or `null` on timeout.
   */
  async waitLeader(timeoutMs: number, not?: string): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const l = await this.leader();
      if (l !== null && l !== not) return l;
      if (Date.now() > deadline) return null;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async #waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.statuses();
      const leader = await this.leader();
      if (leader !== null && s.length === this.members.length) {
        // A linearizable read through every member works.
        const reads = await Promise.all(
          this.members.map((m) =>
            this.call(m, `http://${this.address(m)}:${ETCD_CLIENT_PORT}`, "/v3/kv/range", {
              key: btoa("ready"),
            })
          ),
        );
        if (reads.every((r) => r !== null && r.header !== undefined)) return;
      }
      const dead = this.members.filter((m) => this.#processes.get(m)?.done);
      if (dead.length > 0 || Date.now() > deadline) {
        throw new Error(
          `etcd did not start in the lab (dead: ${dead.join(", ") || "none"}):\n` +
            this.members.map((m) => `--- ${m}\n${this.#processes.get(m)?.tail(15) ?? ""}`).join(
              "\n",
            ),
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /**
   * Kills a member (SIGKILL) and waits for it to exit.
   *
   * @param member `e1`….
   */
  async kill(member: string): Promise<void> {
    const p = this.#member(member);
    p.signal("SIGKILL");
    await p.exited;
  }

  /** Pauses a member (SIGSTOP): it keeps its sockets but answers nothing. */
  pause(member: string): void {
    this.#member(member).signal("SIGSTOP");
  }

  /** Resumes a paused member (SIGCONT). */
  resume(member: string): void {
    this.#member(member).signal("SIGCONT");
  }

  /**
   * Starts a killed member again on its data directory and waits until it serves.
   *
   * @param member `e1`….
   * @param timeoutMs Time limit (default 20 s).
   */
  async restart(member: string, timeoutMs = 20_000): Promise<void> {
    const old = this.#member(member);
    if (!old.done) throw new Error(`Cannot restart ${member}: it is still running`);
    this.#spawn(member);
    await this.#waitReady(timeoutMs);
  }

  #member(member: string): ManagedProcess {
    const p = this.#processes.get(member);
    if (!p) throw new RangeError(`Unknown etcd member: ${member}`);
    return p;
  }

  /**
   * Cuts a member (host or etcd member) off the management network only: its service link
   * stays as it is.
   *
   * @param member `h1`… or `e1`….
   * @param how `down` (the port goes down: the member sees carrier loss on eth1) or `blackhole`
   * (port state disabled: carrier stays, nothing passes).
   */
  async cut(member: string, how: MgmtCut = "blackhole"): Promise<void> {
    this.address(member); // Validates.
    if (how === "down") await this.#br(["link", "set", this.port(member), "down"]);
    else await this.#portState(member, 0);
  }

  /**
   * Heals a cut made by {@linkcode EtcdLab.cut}.
   *
   * @param member `h1`… or `e1`….
   */
  async heal(member: string): Promise<void> {
    this.address(member);
    await this.#br(["link", "set", this.port(member), "up"]);
    await this.#portState(member, 3);
  }

  async #portState(member: string, state: 0 | 3): Promise<void> {
    await run([
      "bridge",
      "-n",
      this.lab.ns("br"),
      "link",
      "set",
      "dev",
      this.port(member),
      "state",
      String(state),
    ], { timeoutMs: 5000 });
  }

  /** Stops every member (SIGTERM, then SIGKILL). The namespaces go with the lab's teardown. */
  async stop(): Promise<void> {
    await Promise.all([...this.#processes.values()].map((p) => p.stop({ graceMs: 2000 })));
  }
}
