/**
 * The loopback demo's cluster (`scripts/demo.ts`) for monitor tests: hosts `alpha` (master) and
 * `beta` (slave) on 127.0.0.11 and 127.0.0.12, each with its own faild (in this process) and a
 * failsh child running `samples/loopback_demo/failover.ts` with the simulated net driver, but
 * with monitor and debug ports on free loopback ports that the test knows. Everything it starts
 * is stopped and its directory removed by {@linkcode DemoCluster.close}.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { type FaildHandle, startFaild } from "../daemon/faild/faild.ts";
import { Logger } from "../lib/log.ts";
import { DEMO_HOSTS, freePort, spawnDemoFailsh, writeDemoCluster } from "../scripts/demo.ts";
import type { FailshSnapshot } from "../lib/types.ts";

const ADDRESSES = DEMO_HOSTS;

/** A host of the demo cluster. */
export type DemoHost = "alpha" | "beta";

/** A running demo cluster. */
export interface DemoCluster {
  /** The community both faild and both debug ports accept. */
  key: string;
  /** A host's failsh monitor port URL. */
  monitorUrl(name: DemoHost): string;
  /** A host's failsh debug port URL. */
  debugUrl(name: DemoHost): string;
  /** Starts a host (faild, then failsh). */
  start(name: DemoHost): Promise<void>;
  /** Stops a host: failsh with `signal` (SIGKILL simulates a crash), its service, its faild. */
  stop(name: DemoHost, signal: Deno.Signal): Promise<void>;
  /** Stops everything and removes the directory. */
  close(): Promise<void>;
}

/**
 * Writes the cluster's files (script, policies, key). Start hosts with
 * {@linkcode DemoCluster.start}.
 *
 * @returns The cluster, no host running yet.
 */
export async function prepareDemoCluster(): Promise<DemoCluster> {
  const dir = await Deno.makeTempDir({ prefix: "failmon-demo-test-" });
  const stateDir = `${dir}/service`;
  await Deno.mkdir(stateDir);
  const key = randomBytes(24).toString("hex");
  await Deno.writeTextFile(`${dir}/demo.key`, key + "\n", { mode: 0o600 });
  const servicePort = freePort("127.0.0.100");
  const faildPorts = { alpha: freePort(ADDRESSES.alpha), beta: freePort(ADDRESSES.beta) };
  const monitor = { alpha: freePort("127.0.0.1"), beta: freePort("127.0.0.1") };
  const debug = { alpha: freePort("127.0.0.1"), beta: freePort("127.0.0.1") };
  const { script, policies } = await writeDemoCluster(dir, {
    ports: { faild: faildPorts, monitor, debug, service: servicePort },
    // 200 ms (the demo's default is 100): these tests are about what the pages show, and a loaded
    // machine must not make a host miss its own faild for 3 intervals (rule self-unreachable).
    intervalMs: 200,
    stateDir,
  });
  const quiet = new Logger({ level: "error", sink: () => {} });
  const faild: Partial<Record<DemoHost, FaildHandle>> = {};
  const failsh: Partial<Record<DemoHost, Deno.ChildProcess>> = {};

  const killService = async (name: DemoHost) => {
    try {
      const pid = Number((await Deno.readTextFile(`${stateDir}/${name}.pid`)).trim());
      if (pid > 1) Deno.kill(pid, "SIGKILL");
    } catch {
      // not running
    }
  };
  const stop = async (name: DemoHost, signal: Deno.Signal) => {
    const child = failsh[name];
    if (child) {
      try {
        child.kill(signal);
      } catch {
        // gone
      }
      const late = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // gone
        }
      }, 8000);
      await child.status;
      clearTimeout(late);
      delete failsh[name];
    }
    await killService(name);
    await faild[name]?.close();
    delete faild[name];
  };

  return {
    key,
    monitorUrl: (name) => `http://127.0.0.1:${monitor[name]}`,
    debugUrl: (name) => `http://127.0.0.1:${debug[name]}`,
    async start(name) {
      faild[name] = await startFaild({
        listen: `${ADDRESSES[name]}:${faildPorts[name]}`,
        community: `*  ${key}  RW\n`,
        name,
        logger: quiet,
        nonceSlots: 1 << 12,
      });
      failsh[name] = spawnDemoFailsh(policies[name], script, "null");
    },
    stop,
    async close() {
      await stop("beta", "SIGTERM");
      await stop("alpha", "SIGTERM");
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * Reads a failsh snapshot (2 s time limit).
 *
 * @param url The monitor port URL.
 * @returns The snapshot.
 */
export async function snapshotOf(url: string): Promise<FailshSnapshot> {
  const r = await fetch(url + "/v1/snapshot", { signal: AbortSignal.timeout(2000) });
  if (!r.ok) {
    await r.body?.cancel();
    throw new Error(`HTTP ${r.status}`);
  }
  return await r.json() as FailshSnapshot;
}

/**
 * Polls `probe` every 100 ms until it returns something other than `null` (errors count as
 * `null`).
 *
 * @param what What is awaited, for the error message.
 * @param ms Time limit.
 * @param probe The check.
 * @returns The probe's value.
 */
export async function until<T>(
  what: string,
  ms: number,
  probe: () => Promise<T | null>,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe().catch(() => null);
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts both hosts and waits until alpha holds `web` and beta sees alpha.
 *
 * @param cluster The prepared cluster.
 */
export async function startAndSettle(cluster: DemoCluster): Promise<void> {
  await cluster.start("alpha");
  await cluster.start("beta");
  await until("alpha to hold web", 60_000, async () => {
    const s = await snapshotOf(cluster.monitorUrl("alpha"));
    return s.services.find((v) => v.name === "web")?.state === "UP" ? s : null;
  });
  await until("beta to see alpha and stand by", 30_000, async () => {
    const s = await snapshotOf(cluster.monitorUrl("beta"));
    return s.hosts.find((h) => h.name === "alpha")?.reachable &&
        s.services.find((v) => v.name === "web")?.state === "FAIL"
      ? s
      : null;
  });
}
