/**
 * Real failover in network namespaces: faild and failsh from this repository on each host, set up
 * as `samples/ip_failover_linux`, a service behind the VIP and a client connecting to it every
 * 10 ms. Each fault test asserts what a user would notice:
 *
 * (a) the client is served again within the bound the configuration promises,
 *     `bound = (fall + 1) × interval + handler time + slack` (computed from the config below),
 * (b) after convergence exactly one host holds the VIP (`ip -n H addr show`) and serves it, and
 * (c) no host keeps an address it should have released.
 *
 * Needs root, `ip netns` and `arping`; skips naming the missing Debian package otherwise. Short intervals (200 ms)
 * keep the suite fast.
 */
import assert from "node:assert/strict";
import { Lab, labUnavailable } from "./lab/netns.ts";
import {
  type FailoverCluster,
  type FailoverOptions,
  REPO_ROOT,
  startFailover,
} from "./lab/failover.ts";
import type { Probe } from "./lab/probe.ts";

const PORT = 8080;
const INTERVAL = 200;
const FALL = 3;
/** Time the start handler takes (ip addr add + the first gratuitous ARP), generously. */
const HANDLER_MS = 1000;
/** Slack for a machine shared with other work. */
const SLACK_MS = 3000;

/**
 * The outage bound a configuration promises: `fall` missed polls (the poll in flight at the cut
 * adds up to one interval), the start handler, and slack.
 */
function boundOf(o: { intervalMs: number; fall?: number }): number {
  return ((o.fall ?? 3) + 1) * o.intervalMs + HANDLER_MS + SLACK_MS;
}

async function unavailableReason(): Promise<string | null> {
  // failsh's linux driver announces the VIP with arping.
  const lab = await labUnavailable(["arping"]);
  if (lab) return lab;
  for (const f of ["daemon/faild/faild.ts", "shell/failsh.ts"]) {
    try {
      await Deno.stat(REPO_ROOT + f);
    } catch {
      return `${f} is missing`;
    }
  }
  return null;
}

const unavailable = await unavailableReason();
if (unavailable) console.log(`netns failover tests skipped: ${unavailable}`);

interface Scene {
  lab: Lab;
  cluster: FailoverCluster;
  probe: Probe;
  bound: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Builds a lab running failover with the VIP on h1 and the client served by h1, runs `fn`. */
async function withFailover(
  options: Partial<FailoverOptions> & { hosts?: number },
  fn: (scene: Scene) => Promise<void>,
): Promise<void> {
  const lab = await Lab.create({ hosts: options.hosts ?? 2 });
  try {
    await lab.startServices(PORT);
    const config: FailoverOptions = { intervalMs: INTERVAL, fall: FALL, ...options };
    const cluster = await startFailover(lab, config);
    const probe = lab.startProbe(PORT);
    try {
      const expect = config.expectHolder === undefined ? "h1" : config.expectHolder;
      if (expect) {
        assert.ok(await probe.waitServedBy(expect, 20_000), `${expect} serves the VIP at start`);
      }
      await fn({ lab, cluster, probe, bound: boundOf(config) });
    } catch (e) {
      const err = e as Error;
      err.message += `\nholders: ${(await lab.holders().catch(() => [])).join(", ")}\n` +
        lab.diagnostics(30);
      throw err;
    } finally {
      await probe.stop();
      await cluster.stop();
    }
    // (c) failsh releases what it holds when it stops (policy onExit: release).
    assert.deepEqual(await lab.holders(), [], "no host keeps the VIP after failsh stopped");
  } finally {
    await lab.teardown();
  }
}

/** (b): exactly `host` holds the VIP, the client is served by it, and its ARP entry agrees. */
async function assertSoleHolder(scene: Scene, host: string, timeoutMs: number): Promise<void> {
  const { lab, probe } = scene;
  const holders = await lab.waitHolders((h) => h.length === 1 && h[0] === host, timeoutMs);
  assert.deepEqual(holders, [host], `exactly ${host} holds the VIP`);
  assert.ok(await probe.waitServedBy(host, timeoutMs, 10), `the client is served by ${host}`);
  assert.equal(await lab.tcpCheck("client", lab.vip, PORT), host);
  assert.equal((await lab.neighbour("client"))?.mac, await lab.mac(host), "client ARP entry");
}

/** (a): the client was served again within the bound after the fault. */
async function assertRestored(scene: Scene, cutAt: number, host: string): Promise<void> {
  const { probe, bound } = scene;
  const served = await probe.waitServedBy(host, bound + 2000, 5);
  const r = await probe.settledOutage(cutAt);
  assert.ok(served, `the client is served by ${host} again (${JSON.stringify(r)})`);
  assert.ok(
    r.sinceFaultMs !== null && r.sinceFaultMs <= bound,
    `served again ${r.sinceFaultMs} ms after the fault; the bound is ${bound} ms`,
  );
  assert.equal(r.servedBy, host);
}

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: `failover: ${name}` + (unavailable ? ` (skipped: ${unavailable})` : ""),
    ignore: unavailable !== null,
    fn,
  });
}

test("the primary's link goes down: the standby serves the VIP within the bound, and the client's ARP entry shows its MAC right away", async () => {
  await withFailover({}, async (scene) => {
    const { lab, probe } = scene;
    const cutAt = Date.now();
    await lab.linkDown("h1");
    const first = await probe.waitFor((a) => a.ok && a.who === "h2", scene.bound + 2000);
    assert.ok(first, "h2 answers the client");
    // Right after takeover: the client's entry already points at h2 (gratuitous ARP worked;
    // without it the entry would stay on h1's MAC for its reachable time, then 5 s of probes).
    assert.equal((await lab.neighbour("client"))?.mac, await lab.mac("h2"));
    await assertRestored(scene, cutAt, "h2");
    // While cut off, h1 may keep the VIP on its dead link (nobody can reach it); h2 holds it.
    assert.ok((await lab.holders()).includes("h2"));
    await lab.linkUp("h1");
    // Healed (preempt): exactly one holder, h1 again.
    await assertSoleHolder(scene, "h1", scene.bound * 2);
  });
});

test("the primary is black-holed at the bridge (link up): the standby takes over; both may hold during the cut, exactly one after the heal", async () => {
  await withFailover({}, async (scene) => {
    const { lab } = scene;
    const cutAt = Date.now();
    await lab.blackhole("h1");
    await assertRestored(scene, cutAt, "h2");
    // During the cut h1 sees no peer but its own faild and a working link: like keepalived
    // without quorum, it cannot tell a silent network from a dead standby, so it may keep the
    // VIP. The client reaches only h2 (h2's gratuitous ARP moved it).
    const during = await lab.holders();
    assert.ok(during.includes("h2"), `h2 holds during the cut (holders: ${during})`);
    await lab.unblackhole("h1");
    // After the heal both see each other: exactly one keeps the VIP (the master, with preempt).
    await assertSoleHolder(scene, "h1", scene.bound * 2);
  });
});

test("faild on the primary is killed (SIGKILL): the standby takes over, and the primary's failsh releases the VIP", async () => {
  await withFailover({}, async (scene) => {
    const { cluster } = scene;
    const h1 = cluster.hosts.get("h1");
    assert.ok(h1);
    const cutAt = Date.now();
    h1.faild.signal("SIGKILL");
    await assertRestored(scene, cutAt, "h2");
    // (c) h1's failsh lost its own faild: every peer now counts h1 FAIL, so holding the VIP
    // would make two holders. It must release it.
    await assertSoleHolder(scene, "h2", scene.bound);
    // faild comes back: h1 reclaims (preempt), still exactly one holder.
    await cluster.startFaild("h1");
    await assertSoleHolder(scene, "h1", scene.bound * 2);
  });
});

test("failsh on the primary is frozen (SIGSTOP): its faild still reports UP, so nothing moves; after SIGCONT still exactly one holder", async () => {
  await withFailover({}, async (scene) => {
    const { lab, cluster, probe } = scene;
    const h1 = cluster.hosts.get("h1");
    assert.ok(h1);
    const watch = await lab.watchAddress();
    try {
      const from = Date.now();
      h1.failsh.signal("SIGSTOP");
      // Longer than the standby's detection time: a frozen failsh is not a dead host. The VIP
      // stays on h1's interface, where the kernel keeps serving it.
      await sleep(scene.bound);
      const during = probe.between(from, Date.now() - probe.attemptTimeoutMs);
      assert.ok(during.length > 50, "the client kept trying");
      assert.deepEqual(
        during.filter((a) => !a.ok || a.who !== "h1").length,
        0,
        "the client was served by h1 all along",
      );
      assert.equal(watch.added.get("h2") ?? 0, 0, "h2 never took the VIP");
      h1.failsh.signal("SIGCONT");
      await sleep(5 * INTERVAL);
      await assertSoleHolder(scene, "h1", scene.bound);
      assert.equal(watch.added.get("h2") ?? 0, 0, "h2 never took the VIP");
    } finally {
      h1.failsh.signal("SIGCONT");
      await watch.stop();
    }
  });
});

test("a start handler that hangs on the standby times out: the service is reported FAIL and the VIP is not left half-taken", async () => {
  const script = `
import { host, service } from "MOD";
// h2's start handler takes the VIP, then hangs.
const cfg = JSON.parse(CONFIG);
for (const [name, address] of Object.entries(cfg.hosts)) {
  host(name, { address: String(address), key: "cluster", port: 7100 });
}
service("vip", {
  masters: ["h1"],
  slaves: ["h2"],
  interval: cfg.interval,
  fall: cfg.fall,
  timeouts: { start: 1500, stop: 5000, reclaim: 5000 },
  async start(ctx) {
    await ctx.takeover(cfg.address, { device: "eth0" });
    if (ctx.self === "h2") await new Promise(() => {});
    return "UP";
  },
  async stop(ctx) {
    await ctx.release(cfg.address, { device: "eth0" });
    return "FAIL";
  },
});
`;
  await withFailoverScript(script, async (scene) => {
    const { lab, cluster } = scene;
    // h1 leaves cleanly (SIGTERM: it releases the VIP), so only h2 could hold it.
    await cluster.stopHost("h1");
    assert.ok(await lab.waitHolders((h) => !h.includes("h1"), 5000), "h1 released the VIP");
    // h2 starts, its handler hangs and is killed at 1500 ms: FAIL, reported with the timeout.
    const deadline = Date.now() + scene.bound + 1500 + 5000;
    let reported = false;
    while (Date.now() < deadline && !reported) {
      const snap = await cluster.snapshot("h2");
      const svc = snap?.services.find((s) => s.name === "vip");
      reported = svc?.state === "FAIL" && /time/i.test(svc.lastHandler?.error ?? "");
      if (!reported) await sleep(100);
    }
    assert.ok(reported, "h2 reports vip FAIL with the handler's timeout");
    // Not half-taken: the address the hung handler added is gone once it failed.
    assert.ok(
      await lab.waitHolders((h) => h.length === 0, 3000),
      "the VIP is not left on h2 after its start handler failed",
    );
  });
});

/** Like {@linkcode withFailover}, with a test script; `CONFIG` in it is replaced by the lab's. */
async function withFailoverScript(
  source: string,
  fn: (scene: Scene) => Promise<void>,
): Promise<void> {
  const lab = await Lab.create({ hosts: 2 });
  try {
    await lab.startServices(PORT);
    const config = JSON.stringify({
      hosts: Object.fromEntries(lab.hosts.map((h) => [h, lab.address(h)])),
      address: `${lab.vip}/24`,
      interval: INTERVAL,
      fall: FALL,
    });
    const cluster = await startFailover(lab, {
      intervalMs: INTERVAL,
      fall: FALL,
      scriptSource: source.replace("CONFIG", JSON.stringify(config)),
    });
    const probe = lab.startProbe(PORT);
    try {
      assert.ok(await probe.waitServedBy("h1", 20_000), "h1 serves the VIP at start");
      await fn({ lab, cluster, probe, bound: boundOf({ intervalMs: INTERVAL, fall: FALL }) });
    } catch (e) {
      const err = e as Error;
      err.message += `\nholders: ${(await lab.holders().catch(() => [])).join(", ")}\n` +
        lab.diagnostics(30);
      throw err;
    } finally {
      await probe.stop();
      await cluster.stop();
    }
  } finally {
    await lab.teardown();
  }
}

test("a partition between the hosts (each still reaches the client): the standby takes over during it; exactly one holder after the heal", async () => {
  await withFailover({}, async (scene) => {
    const { lab } = scene;
    await lab.partition("h1", "h2");
    // During the partition each host sees the other FAIL. h2 takes the VIP (it cannot tell a
    // partition from a dead master) and announces it; the client, which reaches both, follows
    // the latest gratuitous ARP. Both hold the VIP until the heal: failover without an arbiter
    // has no quorum, like keepalived.
    assert.ok(
      await lab.waitHolders((h) => h.includes("h2"), scene.bound),
      "h2 takes the VIP during the partition",
    );
    const during = await lab.holders();
    assert.deepEqual(during, ["h1", "h2"], "both hold the VIP during the partition");
    await lab.heal();
    // After the heal they see each other both UP: exactly one keeps it (h1, the master).
    await assertSoleHolder(scene, "h1", scene.bound * 2);
  });
});

test("the primary returns with preempt: it reclaims the VIP from the standby, exactly one holder", async () => {
  await withFailover({ preempt: true }, async (scene) => {
    const { lab } = scene;
    const cutAt = Date.now();
    await lab.linkDown("h1");
    await assertRestored(scene, cutAt, "h2");
    const backAt = Date.now();
    await lab.linkUp("h1");
    await assertSoleHolder(scene, "h1", scene.bound * 2);
    const r = await scene.probe.settledOutage(backAt);
    assert.equal(r.servedBy, "h1", `served by h1 after the reclaim (${JSON.stringify(r)})`);
  });
});

test("the primary returns without preempt: the standby keeps the VIP and the primary holds nothing", async () => {
  await withFailover({ preempt: false }, async (scene) => {
    const { lab } = scene;
    const cutAt = Date.now();
    await lab.linkDown("h1");
    await assertRestored(scene, cutAt, "h2");
    await lab.linkUp("h1");
    // h1 sees h2 UP; without preempt it stays standby and gives up the VIP it kept on its
    // dead link, so exactly h2 holds it, and the client stays with h2.
    await assertSoleHolder(scene, "h2", scene.bound * 2);
    await sleep(10 * INTERVAL);
    assert.deepEqual(await lab.holders(), ["h2"], "still only h2 after a while");
  });
});

test("three hosts, two standbys: exactly one standby (the first) takes over", async () => {
  await withFailover({ hosts: 3 }, async (scene) => {
    const { lab } = scene;
    const watch = await lab.watchAddress();
    try {
      const cutAt = Date.now();
      await lab.linkDown("h1");
      await assertRestored(scene, cutAt, "h2");
      await sleep(5 * INTERVAL);
      const live = (await lab.holders()).filter((h) => h !== "h1");
      assert.deepEqual(live, ["h2"], "exactly h2 among the reachable hosts");
      assert.equal(watch.added.get("h3") ?? 0, 0, `h3 never took the VIP: ${watch.events}`);
      await lab.linkUp("h1");
      await assertSoleHolder(scene, "h1", scene.bound * 2);
      assert.equal(watch.added.get("h3") ?? 0, 0, `h3 never took the VIP: ${watch.events}`);
    } finally {
      await watch.stop();
    }
  });
});

test("failback: once the primary has taken the VIP back, the client stays with it (no late gratuitous ARP from the standby)", async () => {
  await withFailover({ preempt: true }, async (scene) => {
    const { lab, probe } = scene;
    await lab.linkDown("h1");
    assert.ok(await probe.waitFor((a) => a.ok && a.who === "h2", scene.bound), "h2 took over");
    // Return at once, while the standby's gratuitous ARP burst (one packet a second) still runs.
    await lab.linkUp("h1");
    await assertSoleHolder(scene, "h1", scene.bound * 2);
    const from = Date.now();
    await sleep(3500); // Longer than a 3-packet arping burst.
    const after = probe.between(from, Date.now() - probe.attemptTimeoutMs);
    const bad = after.filter((a) => !a.ok || a.who !== "h1");
    assert.equal(
      bad.length,
      0,
      `the client lost h1 after the failback: ${bad.length} of ${after.length} attempts, ` +
        `first at +${(bad[0]?.start ?? from) - from} ms (a host that released the VIP must not ` +
        `announce it any more)`,
    );
    assert.equal((await lab.neighbour("client"))?.mac, await lab.mac("h1"));
  });
});

test("a cold start of both hosts at once (50 ms interval): only the master ever takes the VIP", async () => {
  const lab = await Lab.create({ hosts: 2 });
  let watch: Awaited<ReturnType<Lab["watchAddress"]>> | null = null;
  try {
    const cluster = await startFailover(lab, {
      intervalMs: 50,
      // The start-up runs at 50 ms (grace, deferral, first polls); the silence a host tolerates
      // before it counts a peer (or its own faild) dead is 600 ms, as in the other tests here
      // (FALL × INTERVAL): with fall 3 at 50 ms, a failsh starved of CPU for 150 ms on this
      // shared machine calls a live peer dead, a false failover that is not a cold-start matter.
      fall: (FALL * INTERVAL) / 50,
      // "At once" is as close as this machine starts two failsh: up to a second apart under
      // load. The grace is what an operator sets for the hosts' start-up skew.
      graceMs: 1000,
      together: true,
      beforeFailsh: async () => {
        watch = await lab.watchAddress();
      },
    });
    try {
      await sleep(2000);
      assert.deepEqual(await lab.holders(), ["h1"]);
      const w = watch as Awaited<ReturnType<Lab["watchAddress"]>> | null;
      assert.ok(w);
      assert.equal(
        w.added.get("h2") ?? 0,
        0,
        `h2 took the VIP during the cold start: ${w.events.join("; ")}`,
      );
    } catch (e) {
      // While failsh and faild still run: their logs show who decided what, and when.
      (e as Error).message += "\n" + lab.diagnostics(30);
      throw e;
    } finally {
      await cluster.stop();
    }
  } finally {
    await (watch as Awaited<ReturnType<Lab["watchAddress"]>> | null)?.stop();
    await lab.teardown();
  }
});
