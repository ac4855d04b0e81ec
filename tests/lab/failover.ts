/**
 * failover (this repository's faild + failsh) in the lab, set up as in
 * `samples/ip_failover_linux`: on each host a faild listening on the host's address, and a failsh
 * running the sample script (or a test's own script) with a `linux` policy that allows exactly the
 * VIP on `eth0`.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import type { FailshSnapshot } from "../../lib/types.ts";
import type { ManagedProcess } from "./exec.ts";
import { type Lab, LAB_DEVICE } from "./netns.ts";

/** The repository root (absolute path, with a trailing slash). */
export const REPO_ROOT: string = fileURLToPath(new URL("../../", import.meta.url));

/** faild's port on every lab host. */
export const FAILD_PORT = 7100;

/** failsh's monitor port on every lab host (on the host's loopback). */
export const MONITOR_PORT = 1848;

/** Options of {@linkcode startFailover}. */
export interface FailoverOptions {
  /** Poll interval in ms. */
  intervalMs: number;
  /** Missed polls before a peer counts as FAIL (default 3). */
  fall?: number;
  /** Good polls before a FAIL peer counts again (default 2). */
  rise?: number;
  /** Whether a returning master takes the VIP back (default `true`). */
  preempt?: boolean;
  /** Master hosts (default `["h1"]`). */
  masters?: string[];
  /** Slave hosts (default: every other lab host, in order). */
  slaves?: string[];
  /** Start-up grace in ms (default: the script's default, 2 intervals). */
  graceMs?: number;
  /** Handler time limit in ms (default 10000). */
  handlerTimeoutMs?: number;
  /**
   * Host liveness for every host (the sample's `liveness`), e.g. `{ intervalMs: 10, fall: 5 }`;
   * `stallGraceMs` absent: the sample's default.
   */
  liveness?: { intervalMs: number; fall: number; stallGraceMs?: number };
  /**
   * Source of a script to use instead of the sample (written to each host's directory). It may
   * import `MOD` (replaced by the URL of mod.ts) and `SAMPLE` (the sample's failover.ts).
   */
  scriptSource?: string;
  /** Programs the policy allows (for a test script's `ctx.run`). */
  programs?: { name: string; path: string; args: string[]; rest?: string; timeoutMs: number }[];
  /** The host expected to hold the VIP once started (default the first master; `null`: none). */
  expectHolder?: string | null;
  /** How long to wait for that (default 30 s + 10 intervals). */
  startTimeoutMs?: number;
  /** Hosts to start (default all). */
  only?: string[];
  /**
   * The script's etcd arbiter (`ipFailover()`'s `arbiter`: endpoints, TTL and times in ms…);
   * the policy's `etcd` then allows its endpoints.
   */
  arbiter?: { endpoints: string[] } & Record<string, unknown>;
  /** Called once every faild listens, before any failsh starts (e.g. to start watching). */
  beforeFailsh?: () => Promise<void>;
  /**
   * Start every failsh at once (a cold start). Default `false`: the expected holder's failsh
   * first, the others once it holds the VIP. On a busy machine two `deno run` start up to 2 s
   * apart, so a slave started together with the master can take the VIP first (as it should
   * after its grace); a test about a later fault must start from the state it assumes.
   */
  together?: boolean;
}

/** One host's failover processes and files. */
export interface FailoverHost {
  /** faild. */
  faild: ManagedProcess;
  /** failsh. */
  failsh: ManagedProcess;
  /** The host's directory (policy, community, state, audit log). */
  dir: string;
}

/**
 * faild's state file of a lab host (its records, with the arbiter's epoch while failsh holds the
 * service under an arbiter).
 *
 * @param lab The lab.
 * @param host The host.
 * @returns The path.
 */
export function faildStateFile(lab: Lab, host: string): string {
  return `${lab.dir}/${host}-failover/state.json`;
}

/** failover running on the lab's hosts. */
export interface FailoverCluster {
  /** The running hosts. */
  hosts: Map<string, FailoverHost>;
  /** The options used. */
  options: FailoverOptions;
  /** Starts (or restarts) faild and failsh on a host. */
  startHost(host: string): Promise<FailoverHost>;
  /** Starts (or restarts) only faild on a host. */
  startFaild(host: string): Promise<ManagedProcess>;
  /** Stops failsh (SIGTERM: it releases what it holds) and faild on a host. */
  stopHost(host: string): Promise<void>;
  /** failsh's monitor snapshot of a host, or `null` when it does not answer. */
  snapshot(host: string): Promise<FailshSnapshot | null>;
  /** Stops everything. */
  stop(): Promise<void>;
}

function scriptFor(lab: Lab, options: FailoverOptions): string {
  const mod = new URL("../../mod.ts", import.meta.url).href;
  const sample = new URL("../../samples/ip_failover_linux/failover.ts", import.meta.url).href;
  if (options.scriptSource) {
    return options.scriptSource.replaceAll('"MOD"', JSON.stringify(mod)).replaceAll(
      '"SAMPLE"',
      JSON.stringify(sample),
    );
  }
  const masters = options.masters ?? ["h1"];
  const slaves = options.slaves ?? lab.hosts.filter((h) => !masters.includes(h));
  const config = {
    hosts: Object.fromEntries(lab.hosts.map((h) => [h, lab.address(h)])),
    port: FAILD_PORT,
    key: "cluster",
    address: `${lab.vip}/${lab.prefixLength}`,
    device: LAB_DEVICE,
    masters,
    slaves,
    interval: options.intervalMs,
    fall: options.fall ?? 3,
    rise: options.rise ?? 2,
    preempt: options.preempt ?? true,
    handlerTimeout: options.handlerTimeoutMs ?? 10_000,
    ...(options.graceMs === undefined ? {} : { grace: options.graceMs }),
    ...(options.liveness === undefined ? {} : {
      liveness: {
        interval: options.liveness.intervalMs,
        fall: options.liveness.fall,
        ...(options.liveness.stallGraceMs === undefined
          ? {}
          : { stallGrace: options.liveness.stallGraceMs }),
      },
    }),
    ...(options.arbiter === undefined ? {} : { arbiter: options.arbiter }),
  };
  return `// Generated by tests/lab/failover.ts: the sample with this lab's addresses.
import { ipFailover } from ${JSON.stringify(sample)};
ipFailover(${JSON.stringify(config, null, 2)});
`;
}

/**
 * The text of a host's failsh policy in the lab.
 *
 * @param lab The lab.
 * @param host The host.
 * @param dir The host's directory.
 * @param options Programs to allow.
 * @returns JSON text.
 */
export function labPolicy(
  lab: Lab,
  host: string,
  dir: string,
  options: Pick<FailoverOptions, "programs" | "arbiter"> = {},
): string {
  return JSON.stringify(
    {
      host,
      faild: { url: `http://127.0.0.1:${FAILD_PORT}`, key: "cluster" },
      keys: { cluster: { file: `${dir}/cluster.key` } },
      addresses: [{ prefix: `${lab.vip}/32`, devices: [LAB_DEVICE] }],
      netDriver: "linux",
      arp: { count: 3, refreshMs: 0 },
      programs: options.programs ?? [],
      net: [],
      etcd: options.arbiter?.endpoints ?? [],
      read: [],
      onExit: "release",
      monitor: `127.0.0.1:${MONITOR_PORT}`,
      debug: null,
      debugKey: null,
      audit: `${dir}/audit.jsonl`,
      dumpFile: `${dir}/failsh.dump`,
    },
    null,
    2,
  );
}

/**
 * Starts faild and failsh on the lab's hosts and waits for the expected holder of the VIP.
 *
 * @param lab The lab.
 * @param options Interval, hysteresis, preemption, roles, script.
 * @returns The running cluster.
 */
export async function startFailover(
  lab: Lab,
  options: FailoverOptions,
): Promise<FailoverCluster> {
  const secret = crypto.randomUUID();
  const hosts = new Map<string, FailoverHost>();
  const deno = Deno.execPath();
  const dirs = new Map<string, string>();
  const failds = new Map<string, ManagedProcess>();
  let generation = 0;

  for (const h of lab.hosts) {
    const dir = `${lab.dir}/${h}-failover`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(`${dir}/community`, `# lab community\n*  ${secret}  RW\n`, {
      mode: 0o600,
    });
    await Deno.writeTextFile(`${dir}/cluster.key`, `${secret}\n`, { mode: 0o600 });
    await Deno.writeTextFile(`${dir}/policy.json`, labPolicy(lab, h, dir, options));
    await Deno.writeTextFile(`${dir}/failover.ts`, scriptFor(lab, options));
    dirs.set(h, dir);
  }

  const startFaild = async (h: string): Promise<ManagedProcess> => {
    const dir = dirs.get(h);
    if (!dir) throw new RangeError(`Unknown lab host: ${h}`);
    const old = failds.get(h);
    if (old && !old.done) return old;
    const p = lab.spawn(h, [
      deno,
      "run",
      "-A",
      `${REPO_ROOT}daemon/faild/faild.ts`,
      "--listen",
      `0.0.0.0:${FAILD_PORT}`,
      "-c",
      `${dir}/community`,
      "-s",
      faildStateFile(lab, h),
      "--name",
      h,
    ], { label: `${h}-faild-${++generation}` });
    const deadline = Date.now() + 20_000;
    for (;;) {
      const r = await lab.exec(h, ["ss", "-Hltn", `sport = :${FAILD_PORT}`], {
        check: false,
        timeoutMs: 3000,
      });
      if (r.stdout.includes(`:${FAILD_PORT}`)) break;
      if (p.done || Date.now() > deadline) {
        throw new Error(`faild on ${h} did not start listening: ${p.tail()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    failds.set(h, p);
    const entry = hosts.get(h);
    if (entry) entry.faild = p;
    return p;
  };

  const startHost = async (h: string): Promise<FailoverHost> => {
    const dir = dirs.get(h);
    if (!dir) throw new RangeError(`Unknown lab host: ${h}`);
    const faild = await startFaild(h);
    const failsh = lab.spawn(h, [
      deno,
      "run",
      "-A",
      `${REPO_ROOT}shell/failsh.ts`,
      "--policy",
      `${dir}/policy.json`,
      `${dir}/failover.ts`,
    ], { label: `${h}-failsh-${++generation}` });
    const entry: FailoverHost = { faild, failsh, dir };
    hosts.set(h, entry);
    return entry;
  };

  const stopHost = async (h: string): Promise<void> => {
    const entry = hosts.get(h);
    if (!entry) return;
    await entry.failsh.stop({ graceMs: 5000 });
    await entry.faild.stop({ graceMs: 3000 });
  };

  const snapshot = async (h: string): Promise<FailshSnapshot | null> => {
    const script = `exec 3<>/dev/tcp/127.0.0.1/${MONITOR_PORT} && ` +
      `printf 'GET /v1/snapshot HTTP/1.0\\r\\nHost: lab\\r\\n\\r\\n' >&3 && cat <&3`;
    const r = await lab.exec(h, ["timeout", "3", "bash", "-c", script], {
      check: false,
      timeoutMs: 5000,
      maxOutput: 4 << 20,
    });
    const body = r.stdout.split("\r\n\r\n").slice(1).join("\r\n\r\n");
    try {
      return JSON.parse(body) as FailshSnapshot;
    } catch {
      return null;
    }
  };

  const cluster: FailoverCluster = {
    hosts,
    options,
    startHost,
    startFaild,
    stopHost,
    snapshot,
    async stop() {
      // failsh first (SIGTERM releases held addresses), then faild.
      await Promise.all([...hosts.values()].map((e) => e.failsh.stop({ graceMs: 5000 })));
      await Promise.all([...hosts.values()].map((e) => e.faild.stop({ graceMs: 3000 })));
    },
  };

  const until = async (ok: () => Promise<boolean>, ms: number): Promise<boolean> => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await ok()) return true;
      await new Promise((r) => setTimeout(r, 100));
    }
    return false;
  };

  try {
    const members = options.only ?? lab.hosts;
    for (const h of members) await startFaild(h);
    await options.beforeFailsh?.();
    const expect = options.expectHolder === undefined
      ? (options.masters ?? ["h1"])[0] ?? null
      : options.expectHolder;
    const timeout = options.startTimeoutMs ?? 30_000 + 10 * options.intervalMs;
    const waitForHolder = async (who: string) => {
      const holders = await lab.waitHolders((hs) => hs.length === 1 && hs[0] === who, timeout);
      if (!holders) {
        throw new Error(
          `failover did not put the VIP on ${who} within ${timeout} ms (holders: ${
            (await lab.holders()).join(", ") || "none"
          }):\n${lab.diagnostics()}`,
        );
      }
    };
    const first = !options.together && expect !== null && members.includes(expect) ? expect : null;
    if (first !== null) {
      await startHost(first);
      await waitForHolder(first);
    }
    for (const h of members) if (h !== first) await startHost(h);
    if (expect !== null) await waitForHolder(expect);
    if (first !== null) {
      // A test's fault must find every failsh running and seeing its peers: on a busy machine a
      // standby's `deno run` can still be starting when the VIP is on the master.
      for (const h of members) {
        if (h === first) continue;
        const seen = await until(async () => {
          const s = await snapshot(h);
          return s !== null &&
            members.every((m) => s.hosts.find((x) => x.name === m)?.reachable === true);
        }, timeout);
        if (!seen) {
          throw new Error(
            `failsh on ${h} did not see every host within ${timeout} ms:\n${lab.diagnostics()}`,
          );
        }
      }
    }
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  return cluster;
}
