/**
 * `failsh`: the failover shell. Loads the operator's policy, runs the failover script in the
 * sandbox, registers the local services in the local faild, and runs the scheduler; serves the
 * monitor and debug ports; dumps its state on SIGUSR1, reloads on SIGHUP, and on SIGTERM releases
 * or keeps its addresses as the policy says.
 *
 * ```sh
 * failsh [--policy FILE] [-m ADDR] [-D ADDR] [-l DUMPFILE] [-i PIDFILE] [-F] SCRIPT
 * failsh --check [--policy FILE] SCRIPT        # exit 0 ok, 1 warnings, 2 errors
 * failsh simulate SCRIPT SCENARIO [--json]     # the script's decisions in fake time
 * ```
 *
 * @module
 */
import { resolve } from "node:path";
import type { HostDecl, Policy, ScriptDecl } from "./contract.ts";
import type { FailshSnapshot, ServiceState } from "../lib/types.ts";
import { type Logger, logger as processLogger } from "../lib/log.ts";
import { FaildPool, faildUrl } from "./faild_pool.ts";
import { applyLogLevels, EXIT } from "../lib/cli.ts";
import {
  FAILSH_HELP,
  type FailshArgs,
  type FailshRunArgs,
  parseFailshArgs,
} from "./failsh_args.ts";
import { AuditLog } from "./sandbox/audit.ts";
import { createNetDriver, type NetDriver } from "./sandbox/netops.ts";
import { loadPolicy, PolicyError, readKey } from "./sandbox/policy.ts";
import { parseCidr } from "./sandbox/cidr.ts";
import { arbiterPolicyProblems, checkFailsh } from "./check.ts";
import { EtcdGateway } from "./arbiter/etcd_gateway.ts";
import { EtcdArbiter } from "./arbiter/lease.ts";
import { createSandbox, type FailshSandbox } from "./sandbox/sandbox.ts";
import { type PollResult, realTimers, Scheduler, type Timers } from "./scheduler/scheduler.ts";
import { LivenessMonitor, type LivenessSource } from "./liveness/prober.ts";
import { metricsText, type PortHandle, startDebugPort, startMonitor } from "./monitor.ts";
import { writeDump } from "./dump.ts";

export { checkFailsh, type CheckProblem, type CheckReport } from "./check.ts";

/** Options of {@linkcode startFailsh} and {@linkcode runFailsh}. */
export interface FailshOptions extends FailshRunArgs {
  /** Handle SIGUSR1, SIGHUP, SIGTERM and SIGINT (default `true`). */
  handleSignals?: boolean;
  /** Logger (default the process logger). */
  logger?: Logger;
  /** Timers (tests). */
  timers?: Timers;
}

/** A running failsh. */
export interface FailshHandle {
  /** The policy in force. */
  readonly policy: Policy;
  /** The script's declaration in force. */
  readonly decl: ScriptDecl;
  /** The scheduler. */
  readonly scheduler: Scheduler;
  /** The monitor port, if enabled. */
  readonly monitor: PortHandle | null;
  /** The debug port, if enabled. */
  readonly debug: PortHandle | null;
  /** The current snapshot. */
  snapshot(): FailshSnapshot;
  /** Writes the state dump (to `path` or the policy's dump file) and returns where. */
  dump(path?: string): Promise<string>;
  /** Reloads script and policy; a broken new script or policy keeps the old one and rejects. */
  reload(): Promise<void>;
  /** Stops: releases or keeps addresses per `onExit` (or the override), closes everything. */
  shutdown(options?: { onExit?: "release" | "keep"; reason?: string }): Promise<void>;
  /** Resolves with the exit code once failsh has shut down. */
  readonly finished: Promise<number>;
}

interface Running {
  policy: Policy;
  sandbox: FailshSandbox;
  /** The faild clients of the script's hosts: the scheduler's and the handlers' alike. */
  pool: FaildPool;
}

/**
 * Starts failsh in this process and returns at once.
 *
 * @param options Script, policy and overrides.
 * @returns The running failsh.
 * @throws {Error} When the policy, a key or the script cannot be loaded (nothing is left running).
 *
 * @example
 * ```ts ignore
 * import { startFailsh } from "./failsh.ts";
 * const failsh = await startFailsh({ script: "failover.ts", policyPath: "policy.json" });
 * console.log(failsh.snapshot().services);
 * await failsh.shutdown();
 * ```
 */
export async function startFailsh(options: FailshOptions): Promise<FailshHandle> {
  const log = options.logger ?? processLogger;
  const script = resolve(options.script);
  const policy = await loadPolicy(options.policyPath);
  const audit = new AuditLog({
    script,
    path: policy.audit,
    onError: (e) => log.error("audit", `Cannot write the audit log: ${e.message}`),
  });
  /** The etcd arbiter, when the script declares one (set once the declaration is loaded). */
  let arbiter: EtcdArbiter | null = null;
  const net: NetDriver = createNetDriver(policy.netDriver, {
    audit,
    onError: (m) => log.warn("net", m),
    epochOf: (service) => service === null ? null : arbiter?.status(service).epoch ?? null,
  });
  let running: Running;
  /** A sandbox whose ctx.poll() and ctx.setState() go through the running pool. */
  const sandboxFor = (p: Policy) =>
    createSandbox(script, p, {
      net,
      audit,
      logger: log,
      poll: (host, o) => running.pool.peerPoll(host, o),
      setState: (service, state, detail) => running.pool.setState(service, state, detail),
    });
  {
    const sandbox = sandboxFor(policy);
    try {
      const decl = await sandbox.start();
      const problems = arbiterPolicyProblems(decl, policy);
      if (problems.length > 0) {
        throw new Error(`Cannot start failsh: the script's arbiter: ${problems.join("; ")}`);
      }
      running = { policy, sandbox, pool: await FaildPool.open(policy, decl) };
    } catch (error) {
      await sandbox.close();
      await net.close();
      audit.close();
      throw error;
    }
  }

  const poller = async (host: HostDecl, o: { timeoutMs: number }): Promise<PollResult> => {
    const signal = AbortSignal.timeout(o.timeoutMs);
    const list = await running.pool.client(host.name).list({ signal });
    return { bootId: list.bootId, services: list.services };
  };
  const reporter = (service: string, state: ServiceState, detail: string) => {
    // The epoch goes into the record while this host holds the key (never to a faild without
    // an arbiter: an older faild refuses the field).
    const epoch = state === "FAIL" ? null : arbiter?.status(service).epoch ?? null;
    return running.pool.local.set(service, state, {
      detail: `failsh: ${detail}`.slice(0, 500),
      ...(epoch === null ? {} : { epoch }),
    });
  };
  const declared = running.sandbox.decl.arbiter;
  if (declared) {
    arbiter = new EtcdArbiter({
      gateway: new EtcdGateway({ endpoints: declared.endpoints, timeoutMs: declared.timeoutMs }),
      host: policy.host,
      prefix: declared.prefix,
      timing: {
        ttlMs: declared.ttlMs,
        renewMs: declared.renewMs,
        timeoutMs: declared.timeoutMs,
        marginMs: declared.marginMs,
        takeoverDelayMs: declared.takeoverDelayMs,
      },
      onArbiterLoss: declared.onArbiterLoss,
      log: (line) => log.info("arbiter", line),
      onChange: (s) => scheduler.arbiterChanged(s.service),
      onRenew: (ok, ms) => {
        if (ok) scheduler.stats.arbiterRenewLatency.observe(ms);
        else scheduler.stats.arbiterRenewFailures++;
      },
    });
  }
  /** The addresses held for a service, with their parsed form. */
  const heldBy = (service: string) =>
    net.held().flatMap((h) => {
      const cidr = h.service === service ? parseCidr(h.address) : null;
      return cidr ? [{ ...h, cidr }] : [];
    });
  // Host liveness: one ping per peer that declares it, run here (never by the script). The
  // scheduler reads it through `livenessSource`, which follows the monitor across reloads.
  const livenessListeners = new Set<(host: string) => void>();
  const newLiveness = (decl: ScriptDecl) => {
    const m = new LivenessMonitor({
      self: policy.host,
      hosts: decl.hosts,
      services: decl.services,
      timers: options.timers ?? realTimers,
      logger: log,
      audit: (request, verdict, reason) => audit.write(null, request, verdict, reason),
    });
    m.onChange((h) => {
      for (const l of livenessListeners) l(h);
    });
    return m;
  };
  let liveness = newLiveness(running.sandbox.decl);
  const livenessSource: LivenessSource = {
    status: (h) => liveness.status(h),
    onChange: (l) => {
      livenessListeners.add(l);
      return () => livenessListeners.delete(l);
    },
  };
  const scheduler = new Scheduler({
    self: policy.host,
    liveness: livenessSource,
    sandbox: running.sandbox,
    poller,
    reporter,
    logger: log,
    addresses: () => net.held(),
    onReannounce: async (service) => {
      for (const a of heldBy(service)) {
        await net.takeover(a.cidr, a.device, {
          arpCount: running.policy.arp.count,
          refreshMs: running.policy.arp.refreshMs,
          service,
        });
      }
    },
    onQuiet: (service) => {
      for (const a of heldBy(service)) {
        if (net.quiet(a.cidr, a.device) > 0) {
          log.info(
            "net",
            `${service}: stopped the ARP burst for ${a.address}: a peer holds it too`,
          );
        }
      }
    },
    onHandlerFailed: async (service) => {
      for (const a of heldBy(service)) {
        log.warn(
          "net",
          `${service}: releasing ${a.address} on ${a.device} after its handler failed`,
        );
        scheduler.note(
          "address",
          `${service}: released ${a.address} after its handler failed`,
          service,
        );
        await net.release(a.cidr, a.device);
      }
    },
    ...(arbiter ? { arbiterLink: arbiter } : {}),
    onArbiterRevoked: async (service) => {
      // The stop handler ran: whatever address of the service is still here goes now, before
      // etcd can give the key to another host.
      for (const a of heldBy(service)) {
        log.warn(
          "net",
          `${service}: releasing ${a.address} on ${a.device}: the arbiter's key is lost`,
        );
        audit.write(
          service,
          { op: "arbiter-release", address: a.address, device: a.device },
          "allowed",
          "the arbiter's key is lost: the supervisor removes the address",
        );
        scheduler.note("address", `${service}: released ${a.address}: arbiter key lost`, service);
        await net.release(a.cidr, a.device);
      }
    },
    urlOf: (h) => h.name === policy.host ? policy.faild.url : faildUrl(h),
    ...(options.timers ? { timers: options.timers } : {}),
  });

  const metrics = () =>
    metricsText(scheduler.snapshot(), scheduler.stats, running.sandbox.counters());
  const monitorAddr = options.monitor !== undefined ? options.monitor : policy.monitor;
  const debugAddr = options.debug !== undefined ? options.debug : policy.debug;
  let monitor: PortHandle | null = null;
  let debug: PortHandle | null = null;
  const dumpFile = options.dumpFile ?? policy.dumpFile;
  try {
    if (monitorAddr !== null) {
      monitor = await startMonitor({
        listen: monitorAddr,
        source: scheduler,
        metrics,
        logger: log,
      });
      log.info("monitor", `monitor port on ${monitor.url}`, { url: monitor.url });
    }
    if (debugAddr !== null) {
      debug = await startDebugPort({
        listen: debugAddr,
        key: await readKey(policy, policy.debugKey),
        logger: log,
      });
      log.info("debug", `debug port on ${debug.url}`, { url: debug.url });
    }
  } catch (error) {
    await monitor?.close();
    await debug?.close();
    await running.sandbox.close();
    running.pool.close();
    await net.close();
    audit.close();
    throw error;
  }
  if (options.pidFile) await Deno.writeTextFile(options.pidFile, `${Deno.pid}\n`);

  liveness.start();
  if (arbiter) {
    const a = arbiter;
    // keep-if-peers-agree: a holder past its deadline keeps the service only while every peer
    // of the service answers and none holds it.
    if (declared?.onArbiterLoss === "keep-if-peers-agree") {
      scheduler.onChange(() => {
        const snap = scheduler.snapshot();
        for (const s of snap.services) {
          const peers = [...s.masters, ...s.slaves].filter((h) => h !== policy.host);
          const agree = peers.every((name) => {
            const h = snap.hosts.find((x) => x.name === name);
            const rec = h?.services.find((r) => r.name === s.name);
            return h !== undefined && h.reachable && (rec === undefined || rec.state === "FAIL");
          });
          a.setPeersAgree(s.name, agree);
        }
      });
    }
    a.start();
    log.info(
      "arbiter",
      `etcd arbiter at ${declared!.endpoints.join(", ")}, prefix ${declared!.prefix}, TTL ${
        declared!.ttlMs / 1000
      } s, takeover delay ${declared!.takeoverDelayMs} ms, on loss: ${declared!.onArbiterLoss}`,
    );
  }
  scheduler.start();
  log.info("failsh", `failsh started: host ${policy.host}, script ${script}`, {
    services: scheduler.snapshot().services.map((s) => `${s.name}:${s.role}`),
  });

  const { promise: finished, resolve: finish } = Promise.withResolvers<number>();
  let shuttingDown: Promise<void> | null = null;
  let reloading: Promise<void> | null = null;
  const signals: Array<[Deno.Signal, () => void]> = [];

  const handle: FailshHandle = {
    get policy() {
      return running.policy;
    },
    get decl() {
      return running.sandbox.decl;
    },
    scheduler,
    monitor,
    debug,
    finished,
    snapshot: () => scheduler.snapshot(),
    async dump(path?: string) {
      const target = path ?? dumpFile;
      await writeDump(target, {
        snapshot: scheduler.snapshot(),
        policy: running.policy,
        script,
        pid: Deno.pid,
        sandbox: running.sandbox.counters(),
        monitor: monitor?.url ?? null,
        debug: debug?.url ?? null,
      });
      log.info("failsh", `state dumped to ${target}`);
      scheduler.note("info", `state dumped to ${target}`);
      return target;
    },
    reload() {
      reloading ??= doReload().finally(() => {
        reloading = null;
      });
      return reloading;
    },
    shutdown(o = {}) {
      shuttingDown ??= doShutdown(o.onExit ?? running.policy.onExit, o.reason ?? "shutdown");
      return shuttingDown;
    },
  };

  async function doReload(): Promise<void> {
    let policy2: Policy;
    let sandbox2: FailshSandbox | null = null;
    try {
      policy2 = await loadPolicy(options.policyPath);
      if (policy2.host !== running.policy.host) {
        throw new Error(
          `the policy's host changed from ${running.policy.host} to ${policy2.host}; restart failsh for that`,
        );
      }
      if (policy2.etcd.join() !== running.policy.etcd.join() && arbiter) {
        log.warn("failsh", "the policy's etcd changed: it takes effect at the next restart");
      }
      if (policy2.netDriver !== running.policy.netDriver) {
        log.warn("failsh", "netDriver changed: it takes effect at the next restart");
      }
      sandbox2 = sandboxFor(policy2);
      const decl2 = await sandbox2.start();
      if (JSON.stringify(decl2.arbiter ?? null) !== JSON.stringify(declared ?? null)) {
        throw new Error("the script's arbiter changed; restart failsh for that");
      }
      const pool = await FaildPool.open(policy2, decl2);
      const old = running;
      running = { policy: policy2, sandbox: sandbox2, pool };
      const probes = (d: ScriptDecl) =>
        JSON.stringify(d.hosts.map((h) => [h.name, h.address, h.liveness ?? null]));
      if (probes(sandbox2.decl) !== probes(old.sandbox.decl)) {
        await liveness.stop();
        liveness = newLiveness(sandbox2.decl);
        liveness.start();
      }
      await scheduler.reload(sandbox2);
      await old.sandbox.close();
      old.pool.close();
      log.info("failsh", "script and policy reloaded; held addresses kept");
    } catch (error) {
      await sandbox2?.close();
      const message = `Cannot reload: ${
        (error as Error).message
      }; the old script and policy keep running`;
      log.error("failsh", message);
      scheduler.note("policy", message);
      throw new Error(message, { cause: error });
    }
  }

  async function doShutdown(onExit: "release" | "keep", reason: string): Promise<void> {
    log.info("failsh", `shutting down (${reason}); addresses: ${onExit}`);
    for (const [sig, fn] of signals) {
      try {
        Deno.removeSignalListener(sig, fn);
      } catch {
        // already removed
      }
    }
    let code = 0;
    try {
      await reloading?.catch(() => {});
      await scheduler.stop({ release: onExit === "release" });
      if (onExit === "release") {
        for (const f of await net.releaseAll()) {
          code = 1;
          log.error("net", `Cannot release ${f.address} on ${f.device}: ${f.error}`);
        }
        // Every address is gone: revoke the lease, so the next host need not wait for the TTL.
        if (code === 0) await arbiter?.stop();
      } else if (net.held().length > 0) {
        log.info(
          "net",
          `keeping ${net.held().map((a) => a.address).join(", ")} as the policy says`,
        );
      }
    } catch (error) {
      code = 1;
      log.error("failsh", `Shutdown failed: ${(error as Error).message}`);
    }
    await monitor?.close().catch(() => {});
    await debug?.close().catch(() => {});
    await liveness.stop().catch(() => {});
    await running.sandbox.close().catch(() => {});
    running.pool.close();
    await net.close().catch(() => {});
    audit.close();
    if (options.pidFile) await Deno.remove(options.pidFile).catch(() => {});
    finish(code);
  }

  if (options.handleSignals ?? true) {
    const on = (sig: Deno.Signal, fn: () => void) => {
      try {
        Deno.addSignalListener(sig, fn);
        signals.push([sig, fn]);
      } catch {
        // Signal not supported on this platform.
      }
    };
    on("SIGUSR1", () => {
      handle.dump().catch((e) => log.error("failsh", `Cannot write dump: ${(e as Error).message}`));
    });
    on("SIGHUP", () => {
      handle.reload().catch(() => {});
    });
    on("SIGTERM", () => void handle.shutdown({ reason: "SIGTERM" }));
    on("SIGINT", () => void handle.shutdown({ reason: "SIGINT" }));
  }
  return handle;
}

/**
 * Runs failsh until it is told to stop (SIGTERM or SIGINT), the way `deno task failsh` and a
 * script run directly with `deno run` do.
 *
 * @param options Script, policy and overrides.
 * @returns The exit code: 0 after a clean shutdown, 1 when it could not start or release.
 *
 * @example
 * ```ts ignore
 * import { runFailsh } from "./failsh.ts";
 * Deno.exit(await runFailsh({ script: "failover.ts", policyPath: "policy.json" }));
 * ```
 */
export async function runFailsh(options: FailshOptions): Promise<number> {
  const log = options.logger ?? processLogger;
  let handle: FailshHandle;
  try {
    handle = await startFailsh(options);
  } catch (error) {
    const message = error instanceof PolicyError ? error.message : (error as Error).message;
    log.error("failsh", message);
    console.error(`failsh: ${message}`);
    return 1;
  }
  return await handle.finished;
}

// ---------------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------------

/**
 * Runs the failsh command line.
 *
 * @param args The arguments.
 * @param options The script, when it is run directly (`deno run -A failover.ts [options]`):
 *   then `args` are failsh's options only.
 * @returns The exit code.
 *
 * @example
 * ```ts ignore
 * import { main } from "./failsh.ts";
 * Deno.exit(await main(["--check", "--policy", "policy.json", "failover.ts"]));
 * ```
 */
export async function main(args: string[], options: { script?: string } = {}): Promise<number> {
  if (args[0] === "simulate" && options.script === undefined) {
    const { main: simulateMain } = await import("./simulate.ts");
    return await simulateMain(args.slice(1));
  }
  let v: FailshArgs;
  try {
    v = parseFailshArgs(args, options);
    applyLogLevels(processLogger, v.logLevel);
  } catch (error) {
    console.error(`failsh: ${(error as Error).message}`);
    return EXIT.usage;
  }
  if (v.help) {
    console.log(FAILSH_HELP);
    return EXIT.ok;
  }
  const { script, policyPath } = v;
  if (v.check) {
    if (v.logLevel.length === 0) processLogger.setLevel("*", "error");
    const report = await checkFailsh(script, policyPath);
    if (v.json) {
      console.log(
        JSON.stringify(
          { code: report.code, problems: report.problems, decl: report.decl },
          null,
          2,
        ),
      );
    } else {
      for (const p of report.problems) console.log(`${p.severity}: ${p.where}: ${p.message}`);
      const errors = report.problems.filter((p) => p.severity === "error").length;
      const warnings = report.problems.length - errors;
      const services = report.decl?.services.map((s) => s.name).join(", ") ?? "none";
      console.log(
        report.code === 0
          ? `ok: ${resolve(script)} with ${resolve(policyPath)} (services: ${services})`
          : `${errors} error(s), ${warnings} warning(s)`,
      );
    }
    return report.code;
  }
  return await runFailsh({
    script,
    policyPath,
    ...(v.monitor !== undefined ? { monitor: v.monitor } : {}),
    ...(v.debug !== undefined ? { debug: v.debug } : {}),
    ...(v.dumpFile !== undefined ? { dumpFile: v.dumpFile } : {}),
    ...(v.pidFile !== undefined ? { pidFile: v.pidFile } : {}),
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
