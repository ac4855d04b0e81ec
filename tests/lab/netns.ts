/**
 * The network-namespace lab: hosts `h1`…`hN` and a `client`, each in its own namespace with an
 * `eth0` plugged into a bridge that lives in a dedicated `br` namespace, so nothing touches the
 * machine's own interfaces. Addresses come from a per-run /24 inside 198.18.0.0/15. Namespace
 * names carry a per-process prefix (`folab<pid>.<n>-`), so parallel runs never clash and stale
 * namespaces of dead runs can be swept. Every lab is torn down by {@linkcode Lab.teardown}
 * (call it in `finally`), on SIGINT/SIGTERM, and at process exit.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { ManagedProcess, run, type RunOptions, type RunResult, type SpawnOptions } from "./exec.ts";
import { Probe } from "./probe.ts";
import { type Program, unmet } from "../_programs.ts";

/** Name pattern of lab namespaces: `folab<pid>.<n>-<member>`. */
export const LAB_NS_PATTERN: RegExp = /^folab(\d+)\.(\d+)-([a-z0-9]+)$/;

/** The device every member's link is called inside its namespace. */
export const LAB_DEVICE = "eth0";

/** The programs the lab itself runs: ip and ss (iproute2), sysctl (procps), timeout, bash. */
export const LAB_PROGRAMS: readonly Program[] = ["ip", "ss", "sysctl", "timeout", "bash"];

/**
 * Tells why the lab cannot run here.
 *
 * @param programs Programs the test runs on top of the lab's own (e.g. `arping`, `keepalived`).
 * @returns The reason (not Linux, not root, a program missing with the Debian package that brings
 * it, `ip netns` not working), or `null` when the lab can run.
 */
export async function labUnavailable(programs: readonly Program[] = []): Promise<string | null> {
  if (Deno.build.os !== "linux") return "network namespaces need Linux";
  const reason = unmet({ root: true, programs: [...LAB_PROGRAMS, ...programs] });
  if (reason !== null) return reason;
  try {
    const r = await run(["ip", "netns", "list"], { check: false, timeoutMs: 5000 });
    if (r.code !== 0) return `\`ip netns\` is unavailable: ${r.stderr.trim()}`;
  } catch (e) {
    return `\`ip netns list\` cannot run: ${(e as Error).message}`;
  }
  return null;
}

/** Options of {@linkcode Lab.create}. */
export interface LabOptions {
  /** Number of hosts (`h1`…`hN`, default 2, at most 9). */
  hosts?: number;
  /** Directory for logs and per-host files (default: a new temporary directory). */
  dir?: string;
  /** Keep the directory after teardown (default: only when `dir` was given). */
  keepDir?: boolean;
}

const active = new Set<Lab>();
// Labs are numbered per worker; workers of one process (deno test --parallel) share the pid, so
// each starts at its own random base.
let counter = Math.floor(Math.random() * 90_000) * 10;
let signalHandler: (() => void) | null = null;
let unloadHooked = false;

function pidAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

function killNamespaceSync(ns: string): void {
  try {
    const out = new Deno.Command("ip", { args: ["netns", "pids", ns], stderr: "null" })
      .outputSync();
    for (const p of new TextDecoder().decode(out.stdout).split(/\s+/)) {
      const pid = Number(p);
      if (Number.isInteger(pid) && pid > 1 && pid !== Deno.pid) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // Gone.
        }
      }
    }
  } catch {
    // No ip: nothing to do.
  }
  try {
    new Deno.Command("ip", { args: ["netns", "del", ns], stderr: "null", stdout: "null" })
      .outputSync();
  } catch {
    // Already gone.
  }
}

function listNamespacesSync(): string[] {
  try {
    const out = new Deno.Command("ip", { args: ["netns", "list"], stderr: "null" }).outputSync();
    return new TextDecoder().decode(out.stdout).split("\n").map((l) => l.split(" ")[0] ?? "")
      .filter((n) => n.length > 0);
  } catch {
    return [];
  }
}

/**
 * Removes lab namespaces left behind by runs whose process is dead (and killing what still runs
 * inside them). Namespaces of live processes, and of this process's active labs, are left alone.
 *
 * @returns The namespaces removed.
 */
export function sweepStaleNamespaces(): string[] {
  const mine = new Set<string>();
  for (const lab of active) for (const ns of lab.namespaces) mine.add(ns);
  const removed: string[] = [];
  for (const ns of listNamespacesSync()) {
    const m = LAB_NS_PATTERN.exec(ns);
    if (!m) continue;
    const pid = Number(m[1]);
    if (mine.has(ns)) continue;
    // A live pid may be this very process: `deno test --parallel` runs other test files in
    // workers of the same process, whose labs are not in this worker's `active` set.
    if (pidAlive(pid)) continue;
    killNamespaceSync(ns);
    removed.push(ns);
  }
  return removed;
}

function onSignal(): void {
  for (const lab of [...active]) lab.teardownSync();
  Deno.exit(130);
}

function hookSignals(): void {
  if (!unloadHooked) {
    unloadHooked = true;
    globalThis.addEventListener("unload", () => {
      for (const lab of [...active]) lab.teardownSync();
    });
  }
  if (signalHandler) return;
  signalHandler = onSignal;
  Deno.addSignalListener("SIGINT", signalHandler);
  Deno.addSignalListener("SIGTERM", signalHandler);
}

function unhookSignals(): void {
  if (!signalHandler || active.size > 0) return;
  Deno.removeSignalListener("SIGINT", signalHandler);
  Deno.removeSignalListener("SIGTERM", signalHandler);
  signalHandler = null;
}

/**
 * Absolute path of a file in this folder.
 *
 * @param name File name, e.g. `probe_client.ts`.
 * @returns The path.
 */
export function labFile(name: string): string {
  return fileURLToPath(new URL(name, import.meta.url));
}

/** Neighbour entry of an address. */
export interface Neighbour {
  /** The MAC address (lower case), or `null` when incomplete/failed. */
  mac: string | null;
  /** Entry state, e.g. `REACHABLE`, `STALE`, `DELAY`. */
  state: string;
}

/** What {@linkcode Lab.watchAddress} saw. */
export interface AddressWatch {
  /** Additions of the address, by host. */
  added: Map<string, number>;
  /** Removals of the address, by host. */
  removed: Map<string, number>;
  /** `<ISO time> <host> add|del`, in order (at most 200). */
  events: string[];
  /** Stops watching. */
  stop(): Promise<void>;
}

/** A lab of hosts, a client and a bridge, each in its own network namespace. */
export class Lab {
  /** Namespace name prefix of this lab. */
  readonly prefix: string;
  /** The first three octets of the lab's /24 (e.g. `198.18.7`). */
  readonly net: string;
  /** The virtual IP (host part 100). */
  readonly vip: string;
  /** Prefix length of the lab's addresses. */
  readonly prefixLength = 24;
  /** Host names (`h1`…). */
  readonly hosts: string[];
  /** Working directory (logs, configs). */
  readonly dir: string;
  #keepDir: boolean;
  #processes = new Set<ManagedProcess>();
  #created: string[] = [];
  #torn = false;
  #isolated = new Set<string>();

  private constructor(prefix: string, net: string, hosts: string[], dir: string, keep: boolean) {
    this.prefix = prefix;
    this.net = net;
    this.vip = `${net}.100`;
    this.hosts = hosts;
    this.dir = dir;
    this.#keepDir = keep;
  }

  /**
   * Builds a lab. Sweeps stale lab namespaces first. On any failure, whatever was made is removed.
   *
   * @param options Number of hosts and working directory.
   * @returns The lab, ready: links up, addresses set.
   */
  static async create(options: LabOptions = {}): Promise<Lab> {
    const n = options.hosts ?? 2;
    if (!Number.isInteger(n) || n < 1 || n > 9) {
      throw new RangeError(`Invalid number of lab hosts: ${n}: expected 1 to 9`);
    }
    sweepStaleNamespaces();
    const index = ++counter;
    const slot = (Deno.pid * 16 + index) % 512;
    const net = `198.${18 + (slot >> 8)}.${slot & 255}`;
    const dir = options.dir ?? await Deno.makeTempDir({ prefix: "folab-" });
    if (options.dir) await Deno.mkdir(dir, { recursive: true });
    const hosts = Array.from({ length: n }, (_, i) => `h${i + 1}`);
    const lab = new Lab(
      `folab${Deno.pid}.${index}-`,
      net,
      hosts,
      dir,
      options.keepDir ?? options.dir !== undefined,
    );
    active.add(lab);
    hookSignals();
    try {
      await lab.#build();
    } catch (e) {
      await lab.teardown();
      throw e;
    }
    return lab;
  }

  /** Every namespace name this lab made. */
  get namespaces(): string[] {
    return [...this.#created];
  }

  /** Members with a link: the hosts and `client`. */
  get members(): string[] {
    return [...this.hosts, "client"];
  }

  /**
   * Full namespace name of a member.
   *
   * @param member `h1`…, `client` or `br`.
   * @returns The namespace name.
   */
  ns(member: string): string {
    return this.prefix + member;
  }

  /**
   * A member's own address.
   *
   * @param member `h1`… or `client`.
   * @returns The IPv4 address (without prefix length).
   */
  address(member: string): string {
    if (member === "client") return `${this.net}.50`;
    const m = /^h(\d)$/.exec(member);
    if (!m || !this.hosts.includes(member)) throw new RangeError(`Unknown lab member: ${member}`);
    return `${this.net}.${m[1]}`;
  }

  /**
   * The bridge port (in the `br` namespace) of a member.
   *
   * @param member `h1`… or `client`.
   * @returns The port's interface name.
   */
  port(member: string): string {
    return `p-${member}`;
  }

  async #ip(args: string[], options: RunOptions = {}): Promise<RunResult> {
    return await run(["ip", ...args], { timeoutMs: 5000, ...options });
  }

  async #addNs(member: string): Promise<string> {
    const ns = this.ns(member);
    await this.#ip(["netns", "add", ns]);
    this.#created.push(ns);
    await this.#ip(["-n", ns, "link", "set", "lo", "up"]);
    await run([
      "ip",
      "netns",
      "exec",
      ns,
      "sysctl",
      "-qw",
      "net.ipv6.conf.all.disable_ipv6=1",
      "net.ipv6.conf.default.disable_ipv6=1",
    ], { timeoutMs: 5000, check: false });
    return ns;
  }

  async #build(): Promise<void> {
    const br = await this.#addNs("br");
    await this.#ip(["-n", br, "link", "add", "br0", "type", "bridge", "stp_state", "0"]);
    await this.#ip(["-n", br, "link", "set", "br0", "up"]);
    for (const m of this.members) {
      const ns = await this.#addNs(m);
      const port = this.port(m);
      await this.#ip([
        "-n",
        br,
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        LAB_DEVICE,
        "netns",
        ns,
      ]);
      await this.#ip(["-n", br, "link", "set", port, "master", "br0", "up"]);
      await this.#ip(["-n", ns, "addr", "add", `${this.address(m)}/24`, "dev", LAB_DEVICE]);
      await this.#ip(["-n", ns, "link", "set", LAB_DEVICE, "up"]);
    }
  }

  /**
   * Adds a namespace for an extra member (e.g. an etcd member), named like the others and torn
   * down with the lab: `lo` up, IPv6 off, no link (plug it in from the `br` namespace, as
   * `tests/lab/etcd.ts` does for its management bridge).
   *
   * @param member A new member name: lower-case letters and digits, not one already made.
   * @returns The namespace name.
   */
  async addNamespace(member: string): Promise<string> {
    if (this.#torn) throw new Error(`Cannot add ${member}: the lab is torn down`);
    if (!/^[a-z0-9]{1,12}$/.test(member) || this.#created.includes(this.ns(member))) {
      throw new RangeError(
        `Invalid lab member: ${JSON.stringify(member)}: expected a new name of a-z and 0-9`,
      );
    }
    return await this.#addNs(member);
  }

  /**
   * Runs a command inside a member's namespace.
   *
   * @param member `h1`…, `client` or `br`.
   * @param argv Program and arguments.
   * @param options Time limit (default 10 s), check, output bound.
   * @returns The result.
   */
  async exec(member: string, argv: string[], options: RunOptions = {}): Promise<RunResult> {
    return await run(["ip", "netns", "exec", this.ns(member), ...argv], options);
  }

  /**
   * Starts a long-running process inside a member's namespace; it is killed at teardown.
   *
   * @param member `h1`…, `client` or `br`.
   * @param argv Program and arguments.
   * @param options Label, lifetime, output handling (log file defaults to `<dir>/<label>.log`).
   * @returns The process.
   */
  spawn(member: string, argv: string[], options: Partial<SpawnOptions> = {}): ManagedProcess {
    if (this.#torn) throw new Error(`Cannot spawn in ${member}: the lab is torn down`);
    const label = options.label ?? `${member}-${argv[0]}`;
    const p = new ManagedProcess(["ip", "netns", "exec", this.ns(member), ...argv], {
      logFile: `${this.dir}/${label.replaceAll("/", "-")}.log`,
      ...options,
      label,
    });
    this.#processes.add(p);
    p.exited.finally(() => this.#processes.delete(p));
    return p;
  }

  /**
   * Starts the name-answering TCP service on every host (bound to 0.0.0.0).
   *
   * @param port TCP port.
   * @param options `epochFile(host)`: a file whose epoch the host's service adds to its answer
   * (`h1@42`, see `tcp_service.ts --epoch-file`).
   * @returns The processes, by host.
   */
  async startServices(
    port: number,
    options: {
      epochFile?: (host: string) => string;
      /** faild's state file of a host: the service answers with its record's epoch. */
      epochState?: (host: string) => string;
    } = {},
  ): Promise<Map<string, ManagedProcess>> {
    const out = new Map<string, ManagedProcess>();
    for (const h of this.hosts) {
      const state = options.epochState?.(h);
      const epoch = options.epochFile?.(h) ?? state;
      out.set(
        h,
        this.spawn(h, [
          Deno.execPath(),
          "run",
          "--no-lock",
          "--allow-net",
          ...(epoch ? [`--allow-read=${epoch}`] : []),
          labFile("tcp_service.ts"),
          "--port",
          String(port),
          "--name",
          h,
          ...(state ? ["--epoch-state", state] : epoch ? ["--epoch-file", epoch] : []),
        ], { label: `${h}-service`, stdin: true }),
      );
    }
    // Wait until each answers on its own address (seen from its own namespace).
    for (const h of this.hosts) {
      const deadline = Date.now() + 15_000;
      for (;;) {
        const r = await this.exec(h, ["ss", "-Hltn", `sport = :${port}`], {
          check: false,
          timeoutMs: 3000,
        });
        if (r.stdout.includes(`:${port}`)) break;
        if (Date.now() > deadline) {
          throw new Error(`Service on ${h} did not listen on port ${port}: ${out.get(h)?.tail()}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    return out;
  }

  /**
   * Starts the client probe against `VIP:port`.
   *
   * @param port TCP port of the service.
   * @param options Attempt period and per-attempt timeout in ms (defaults 10 and 300).
   * @returns The probe collecting attempts.
   */
  startProbe(port: number, options: { everyMs?: number; timeoutMs?: number } = {}): Probe {
    const probe = new Probe(options.timeoutMs ?? 300);
    const p = this.spawn("client", [
      Deno.execPath(),
      "run",
      "--no-lock",
      "--allow-net",
      labFile("probe_client.ts"),
      "--target",
      `${this.vip}:${port}`,
      "--every",
      String(options.everyMs ?? 10),
      "--timeout",
      String(options.timeoutMs ?? 300),
    ], { label: "client-probe", stdin: true, onStdoutLine: (l) => probe.feed(l) });
    probe.attach(p);
    return probe;
  }

  /**
   * One TCP connection from a member to `address:port`, reading the first line of the answer.
   *
   * @param member Where to connect from.
   * @param address Target IPv4 address.
   * @param port Target port.
   * @param timeoutMs Time limit (default 1000).
   * @returns The first line (the serving host's name), or `null` if nothing answered in time.
   */
  async tcpCheck(
    member: string,
    address: string,
    port: number,
    timeoutMs = 1000,
  ): Promise<string | null> {
    const secs = (timeoutMs / 1000).toFixed(2);
    const script = `exec 3<>/dev/tcp/${address}/${port} && head -n 1 <&3`;
    const r = await this.exec(member, ["timeout", secs, "bash", "-c", script], {
      check: false,
      timeoutMs: timeoutMs + 2000,
    });
    const line = r.stdout.trim();
    return r.code === 0 && line ? line : null;
  }

  /**
   * The IPv4 addresses (with prefix length) on a member's `eth0`.
   *
   * @param member `h1`… or `client`.
   * @returns Addresses such as `198.18.7.100/24`.
   */
  async addresses(member: string): Promise<string[]> {
    const r = await this.#ip([
      "-n",
      this.ns(member),
      "-j",
      "-4",
      "addr",
      "show",
      "dev",
      LAB_DEVICE,
    ]);
    const data = JSON.parse(r.stdout || "[]") as {
      addr_info?: { local?: string; prefixlen?: number }[];
    }[];
    return data.flatMap((i) => i.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`);
  }

  /**
   * The hosts that hold an address on `eth0`.
   *
   * @param address IPv4 address without prefix (default the VIP).
   * @returns Host names.
   */
  async holders(address = this.vip): Promise<string[]> {
    const out: string[] = [];
    for (const h of this.hosts) {
      if ((await this.addresses(h)).some((a) => a.split("/")[0] === address)) out.push(h);
    }
    return out;
  }

  /**
   * Waits until `predicate(holders)` is true.
   *
   * @param predicate Condition on the holder list.
   * @param timeoutMs Time limit.
   * @returns The holders when it became true, or `null` on timeout.
   */
  async waitHolders(
    predicate: (holders: string[]) => boolean,
    timeoutMs: number,
  ): Promise<string[] | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const h = await this.holders();
      if (predicate(h)) return h;
      if (Date.now() > deadline) return null;
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /**
   * The MAC address of a member's `eth0`.
   *
   * @param member `h1`… or `client`.
   * @returns Lower-case MAC.
   */
  async mac(member: string): Promise<string> {
    const r = await this.#ip(["-n", this.ns(member), "-j", "link", "show", "dev", LAB_DEVICE]);
    const data = JSON.parse(r.stdout) as { address?: string }[];
    const mac = data[0]?.address;
    if (!mac) throw new Error(`Cannot read MAC of ${member}: no address in ip output`);
    return mac.toLowerCase();
  }

  /**
   * A member's neighbour entry for an address (`ip neigh show`).
   *
   * @param member Usually `client`.
   * @param address IPv4 address (default the VIP).
   * @returns The entry, or `null` when absent.
   */
  async neighbour(member: string, address = this.vip): Promise<Neighbour | null> {
    const r = await this.#ip(["-n", this.ns(member), "-j", "neigh", "show", "to", address]);
    const data = JSON.parse(r.stdout || "[]") as { lladdr?: string; state?: string[] }[];
    const e = data[0];
    if (!e) return null;
    return { mac: e.lladdr?.toLowerCase() ?? null, state: (e.state ?? []).join(",") };
  }

  /** Sets a member's bridge port down (the switch port: the member sees carrier loss). */
  async linkDown(member: string): Promise<void> {
    await this.#ip(["-n", this.ns("br"), "link", "set", this.port(member), "down"]);
  }

  /** Sets a member's bridge port up again. */
  async linkUp(member: string): Promise<void> {
    await this.#ip(["-n", this.ns("br"), "link", "set", this.port(member), "up"]);
  }

  /**
   * Black-holes a member at the bridge: the port stays up (the member keeps its carrier and sees
   * nothing wrong locally) but the bridge forwards nothing to or from it (port state `disabled`).
   */
  async blackhole(member: string): Promise<void> {
    await this.#portState(member, 0);
  }

  /** Ends a black-hole (port state `forwarding`). */
  async unblackhole(member: string): Promise<void> {
    await this.#portState(member, 3);
  }
  /** Sets the STP state of a member's bridge port (0 disabled, 3 forwarding). */
  async #portState(member: string, state: 0 | 3): Promise<void> {
    await run([
      "bridge",
      "-n",
      this.ns("br"),
      "link",
      "set",
      "dev",
      this.port(member),
      "state",
      String(state),
    ], {
      timeoutMs: 5000,
    });
  }

  /**
   * Partitions members from each other while each still reaches every other member (the client
   * included): their bridge ports are made `isolated`, and isolated ports do not talk to each
   * other.
   *
   * @param members The members to separate (at least two).
   */
  async partition(...members: string[]): Promise<void> {
    if (members.length < 2) throw new RangeError("Cannot partition: name at least two members");
    for (const m of members) {
      await this.#isolate(m, "on");
      this.#isolated.add(m);
    }
  }

  /** Sets a member's bridge port `isolated` on or off (isolated ports do not talk to each other). */
  async #isolate(member: string, state: "on" | "off"): Promise<void> {
    const port = this.port(member);
    await this.#ip(["-n", this.ns("br"), "link", "set", "dev", port, "type", "bridge_slave"].concat(
      ["isolated", state],
    ));
  }

  /** Heals every partition made by {@linkcode Lab.partition}. */
  async heal(): Promise<void> {
    for (const m of [...this.#isolated]) {
      await this.#isolate(m, "off");
      this.#isolated.delete(m);
    }
  }

  /**
   * Watches an address on every host with `ip monitor address` (event-driven: a flip shorter
   * than any polling period is still seen).
   *
   * @param address IPv4 address without prefix (default the VIP).
   * @returns Counts of additions per host, the events (at most 200), and `stop()`.
   */
  async watchAddress(address = this.vip): Promise<AddressWatch> {
    const added = new Map<string, number>();
    const removed = new Map<string, number>();
    const events: string[] = [];
    const procs = this.hosts.map((h) =>
      this.spawn(h, ["ip", "-4", "monitor", "address"], {
        label: `${h}-addr-monitor`,
        onStdoutLine: (line) => {
          if (!line.includes(` ${address}/`)) return;
          const gone = line.startsWith("Deleted");
          const map = gone ? removed : added;
          map.set(h, (map.get(h) ?? 0) + 1);
          if (events.length < 200) {
            events.push(`${new Date().toISOString()} ${h} ${gone ? "del" : "add"}`);
          }
        },
      })
    );
    // `ip monitor` subscribes right after it starts; give it a moment.
    await new Promise((r) => setTimeout(r, 200));
    return {
      added,
      removed,
      events,
      async stop() {
        await Promise.all(procs.map((p) => p.stop({ graceMs: 1000 })));
      },
    };
  }

  /** The processes still running, for diagnostics. */
  get processes(): ManagedProcess[] {
    return [...this.#processes];
  }

  /**
   * Output tails of every process, for a failure message.
   *
   * @param lines Lines per process.
   * @returns Text.
   */
  diagnostics(lines = 25): string {
    return this.processes.map((p) => `--- ${p.label} (pid ${p.pid})\n${p.tail(lines)}`).join("\n");
  }

  /**
   * Removes the lab: stops every process (SIGTERM, then SIGKILL), kills whatever else runs in the
   * namespaces, deletes them and (unless kept) the working directory. Safe to call twice.
   */
  async teardown(): Promise<void> {
    if (this.#torn) return;
    this.#torn = true;
    await Promise.all([...this.#processes].map((p) => p.stop({ graceMs: 1500 })));
    for (const ns of this.#created.reverse()) killNamespaceSync(ns);
    this.#created = [];
    active.delete(this);
    unhookSignals();
    if (!this.#keepDir) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  /** Synchronous teardown for signal and exit handlers (SIGKILLs everything). */
  teardownSync(): void {
    if (this.#torn) return;
    this.#torn = true;
    for (const p of this.#processes) p.signal("SIGKILL");
    for (const ns of this.#created.reverse()) killNamespaceSync(ns);
    this.#created = [];
    active.delete(this);
  }
}
