/**
 * Host liveness in network namespaces: faild and failsh from this repository on two hosts (the
 * `samples/ip_failover_linux` script with `liveness: { interval: 10 ms, fall: 5 }`), polls at
 * 200 ms with a tolerant `fall` of 5 (a second of a silent faild), a client connecting to the VIP.
 *
 * (a) The master's link goes down: its kernel stops answering the standby's ping, and the standby
 *     takes over on that, before the polls would have called the master unreachable: the
 *     takeover's decision names the kernel's silence, and the peer event about the silence comes
 *     before any "missed polls" event.
 * (b) The master's faild and failsh are SIGSTOPped for 3 poll intervals while its kernel answers:
 *     no takeover (a stalled daemon on a live host is not dead).
 * (c) The master's kernel ignores ICMP echo from the start (`net.ipv4.icmp_echo_ignore_all=1` in
 *     its namespace): its liveness stays unknown and the polls alone decide when its link goes
 *     down.
 * (d) The master is black-holed at the bridge (its link stays up): the standby takes over on the
 *     kernel's silence; after the heal the kernel answers again, the polls count the master back
 *     and exactly one host holds the VIP.
 * (e) Fast polls (50 ms, fall 2: 150 ms of a silent faild would be a takeover without liveness):
 *     the master's faild and failsh stall 500 ms while its kernel answers, and the standby takes
 *     nothing (the default `stallGrace` of 1 s); then its link goes down and the standby takes
 *     over on the kernel's silence as fast as in (a).
 *
 * After each test, failsh's clean stop has left no ping in any namespace. No timing assertion:
 * order of events and the reasons only. Needs root, `ip netns`, arping and
 * ping; skips naming the missing Debian package otherwise.
 */
import assert from "node:assert/strict";
import { Lab, labUnavailable } from "./lab/netns.ts";
import { run } from "./lab/exec.ts";
import { type FailoverCluster, type FailoverOptions, startFailover } from "./lab/failover.ts";
import type { Probe } from "./lab/probe.ts";
import type { EventRecord, FailshSnapshot } from "../lib/types.ts";

const PORT = 8080;
const OPTIONS: FailoverOptions = {
  intervalMs: 200,
  fall: 5,
  liveness: { intervalMs: 10, fall: 5 },
};

const unavailable = await labUnavailable(["arping", "ping"]);
if (unavailable) console.log(`netns liveness tests skipped: ${unavailable}`);

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: `liveness: ${name}` + (unavailable ? ` (skipped: ${unavailable})` : ""),
    ignore: unavailable !== null,
    fn,
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

interface Scene {
  lab: Lab;
  cluster: FailoverCluster;
  probe: Probe;
}

async function withLab(
  before: (lab: Lab) => Promise<void>,
  fn: (scene: Scene) => Promise<void>,
  options: FailoverOptions = OPTIONS,
): Promise<void> {
  const lab = await Lab.create({ hosts: 2 });
  try {
    await before(lab);
    await lab.startServices(PORT);
    const cluster = await startFailover(lab, options);
    const probe = lab.startProbe(PORT);
    try {
      assert.ok(await probe.waitServedBy("h1", 20_000), "h1 serves the VIP at start");
      await fn({ lab, cluster, probe });
    } catch (e) {
      const err = e as Error;
      const events = (await cluster.snapshot("h2"))?.events ?? [];
      err.message += `\nh2's events:\n${events.map((x) => `  ${x.at} ${x.message}`).join("\n")}` +
        `\nholders: ${(await lab.holders().catch(() => [])).join(", ")}\n${lab.diagnostics(30)}`;
      throw err;
    } finally {
      await probe.stop();
      await cluster.stop();
    }
    // failsh stopped (SIGTERM): it killed and reaped its pings.
    for (const h of lab.hosts) {
      assert.equal(await pingsIn(lab, h), 0, `no ping left in ${h}'s namespace`);
    }
  } finally {
    await lab.teardown();
  }
}

/** Number of ping processes in a lab member's namespace. */
async function pingsIn(lab: Lab, member: string): Promise<number> {
  const r = await run(["ip", "netns", "pids", lab.ns(member)], { check: false, timeoutMs: 5000 });
  let n = 0;
  for (const pid of r.stdout.split(/\s+/).filter(Boolean)) {
    try {
      if (Deno.readTextFileSync(`/proc/${pid}/comm`).trim() === "ping") n++;
    } catch {
      // exited meanwhile
    }
  }
  return n;
}

/** Waits until h2's snapshot satisfies `ok` (polling its monitor port). */
async function waitSnapshot(
  cluster: FailoverCluster,
  ok: (s: FailshSnapshot) => boolean,
  timeoutMs: number,
): Promise<FailshSnapshot | null> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const s = await cluster.snapshot("h2");
    if (s && ok(s)) return s;
    await sleep(100);
  }
  return null;
}

const h1Liveness = (s: FailshSnapshot) => s.hosts.find((h) => h.name === "h1")?.liveness;
/** h2's failsh runs, its polls found h1, and its grace is over (it decided to stay standby). */
const h2Settled = (s: FailshSnapshot) =>
  s.hosts.find((h) => h.name === "h1")?.reachable === true &&
  /stays standby/.test(s.services[0]?.lastDecision?.reason ?? "");

/** Waits until h2 has settled as standby and sees h1's kernel answer its ping. */
async function waitKernelAlive(cluster: FailoverCluster): Promise<FailshSnapshot> {
  const alive = await waitSnapshot(
    cluster,
    (s) => h2Settled(s) && h1Liveness(s)?.state === "alive",
    20_000,
  );
  assert.ok(alive, "h2 sees h1's kernel answer its ping");
  return alive;
}

function index(events: EventRecord[], pattern: RegExp): number {
  return events.findIndex((e) => pattern.test(e.message));
}

test("the master's link goes down: the standby takes over on its kernel's silence, before the polls' fall", async () => {
  await withLab(async () => {}, async ({ lab, cluster, probe }) => {
    await waitKernelAlive(cluster);
    assert.equal(await pingsIn(lab, "h2"), 1, "h2's failsh runs one ping, for its one peer");
    const cutAt = Date.now();
    await lab.linkDown("h1");
    assert.ok(await probe.waitServedBy("h2", 20_000), "h2 serves the VIP");
    const s = await waitSnapshot(
      cluster,
      (x) => x.services.some((v) => v.state === "UP"),
      10_000,
    );
    assert.ok(s, "h2 holds the service");
    const events = s.events;
    const silence = index(events, /^h1 is unreachable: its kernel has not answered for \d+ ms$/);
    const start = index(events, /^vip: start — .*h1's kernel has not answered for \d+ ms/);
    const missed = index(events, /^h1 is unreachable after \d+ missed polls/);
    assert.ok(silence >= 0, "the silence made h1 unreachable");
    assert.ok(start > silence, "the takeover's decision names the kernel's silence");
    assert.ok(missed < 0, "h1 was not (yet) called unreachable by missed polls");
    assert.equal(h1Liveness(s)?.state, "silent");
    // A figure for the record, not an assertion: cut -> h2's decision to start.
    console.log(`link down -> start decided on h2: ${events[start]!.at - cutAt} ms`);
  });
});

test("the master's faild and failsh stall 3 poll intervals while its kernel answers: no takeover", async () => {
  await withLab(async () => {}, async ({ lab, cluster }) => {
    await waitKernelAlive(cluster);
    const h1 = cluster.hosts.get("h1")!;
    const pids = [h1.faild.pid, h1.failsh.pid];
    for (const pid of pids) Deno.kill(pid, "SIGSTOP");
    try {
      await sleep(3 * OPTIONS.intervalMs);
    } finally {
      for (const pid of pids) Deno.kill(pid, "SIGCONT");
    }
    // Let h2 poll h1 again and decide on what it sees.
    await sleep(5 * OPTIONS.intervalMs);
    const s = await cluster.snapshot("h2");
    assert.ok(s, "h2's monitor answers");
    assert.deepEqual(s.services.map((v) => v.state), ["FAIL"], "h2 did not take the service");
    assert.equal(index(s.events, /^vip: start/), -1, "no start was decided");
    assert.equal(index(s.events, /kernel has not answered/), -1, "h1's kernel was never silent");
    assert.deepEqual(await lab.holders(), ["h1"], "h1 alone holds the VIP");
  });
});

test("a master whose kernel ignores ping: liveness stays unknown and the polls alone decide", async () => {
  await withLab(
    async (lab) => {
      await lab.exec("h1", ["sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=1"]);
    },
    async ({ lab, cluster, probe }) => {
      let cutAt = 0;
      const ready = await waitSnapshot(cluster, h2Settled, 20_000);
      assert.ok(ready, "h2's failsh polls h1");
      // h2's ping runs a while longer and never gets an answer.
      await sleep(1000);
      const before = await cluster.snapshot("h2");
      assert.equal(before && h1Liveness(before)?.state, "unknown");
      assert.ok(before && h1Liveness(before)!.unanswered >= 50, "ping sends, nobody answers");
      cutAt = Date.now();
      await lab.linkDown("h1");
      assert.ok(await probe.waitServedBy("h2", 20_000), "h2 serves the VIP");
      const s = await waitSnapshot(
        cluster,
        (x) => x.services.some((v) => v.state === "UP"),
        10_000,
      );
      assert.ok(s, "h2 holds the service");
      const missed = index(s.events, /^h1 is unreachable after \d+ missed polls/);
      const start = index(s.events, /^vip: start — .*h1 is unreachable \(counts as FAIL\)/);
      assert.ok(missed >= 0, "missed polls made h1 unreachable");
      assert.ok(start > missed, "the takeover followed the polls' fall");
      assert.equal(index(s.events, /kernel has not answered/), -1);
      console.log(
        `link down -> start decided on h2 (polls alone): ${s.events[start]!.at - cutAt} ms`,
      );
    },
  );
});

test("the master is black-holed (link up): the standby takes over on its kernel's silence; after the heal its kernel answers, the polls count it back, exactly one holder", async () => {
  await withLab(async () => {}, async ({ lab, cluster, probe }) => {
    await waitKernelAlive(cluster);
    await lab.blackhole("h1");
    assert.ok(await probe.waitServedBy("h2", 20_000), "h2 serves the VIP during the cut");
    const cut = await waitSnapshot(cluster, (x) => x.services[0]?.state === "UP", 10_000);
    assert.ok(cut, "h2 holds the service");
    assert.ok(
      index(cut.events, /^vip: start — .*h1's kernel has not answered for \d+ ms/) >= 0,
      "the takeover named the kernel's silence",
    );
    await lab.unblackhole("h1");
    // h1's kernel answers again; h1 counts again after `rise` answered polls, shows the VIP UP
    // and outranks h2 (preempt): h2 yields, and only h1 keeps it.
    const healed = await waitSnapshot(
      cluster,
      (x) =>
        x.services[0]?.state === "FAIL" && h1Liveness(x)?.state === "alive" &&
        x.hosts.find((h) => h.name === "h1")?.reachable === true,
      20_000,
    );
    assert.ok(healed, "h2 gave the service back");
    assert.ok(index(healed.events, /^h1's kernel answers again$/) >= 0);
    const holders = await lab.waitHolders((h) => h.length === 1 && h[0] === "h1", 20_000);
    assert.deepEqual(holders, ["h1"], "exactly h1 holds the VIP after the heal");
    assert.ok(await probe.waitServedBy("h1", 20_000), "the client is served by h1 again");
  });
});

test("fast polls: a 500 ms stall of the master's daemons while its kernel answers takes nothing (stallGrace); its link going down still does, on the kernel's silence", async () => {
  const fast: FailoverOptions = { intervalMs: 50, fall: 2, liveness: { intervalMs: 10, fall: 5 } };
  await withLab(async () => {}, async ({ lab, cluster, probe }) => {
    const alive = await waitKernelAlive(cluster);
    assert.equal(h1Liveness(alive)?.stallGraceMs, 1000, "the sample's default stallGrace");
    const h1 = cluster.hosts.get("h1")!;
    const pids = [h1.faild.pid, h1.failsh.pid];
    for (const pid of pids) Deno.kill(pid, "SIGSTOP");
    try {
      await sleep(500); // ten poll intervals
    } finally {
      for (const pid of pids) Deno.kill(pid, "SIGCONT");
    }
    await sleep(500);
    let s = await cluster.snapshot("h2");
    assert.ok(s, "h2's monitor answers");
    assert.ok(
      index(s.events, /^vip: start/) === -1 && s.services[0]?.state === "FAIL",
      "h2 took nothing during the stall",
    );
    assert.ok(
      s.hosts.find((h) => h.name === "h1")?.reachable,
      "h1 is reachable again after the stall",
    );
    assert.deepEqual(await lab.holders(), ["h1"], "h1 alone holds the VIP");

    await lab.linkDown("h1");
    s = await waitSnapshot(cluster, (x) => x.services[0]?.state === "UP", 10_000);
    assert.ok(s, "h2 took the service after h1's link went down");
    const start = s.events.findIndex((e) => /^vip: start/.test(e.message));
    assert.ok(start >= 0, "a start was decided");
    assert.match(s.events[start]!.message, /kernel has not answered/, "on the kernel's silence");
    assert.ok(await probe.waitServedBy("h2", 10_000), "the client is served by h2");
  }, fast);
});
