/**
 * The history checker (tests/lab/history.ts) on the real failover lab, WITHOUT an arbiter: it must
 * see the split brain that exists today (the case 7: a checker that cannot see an overlap
 * proves nothing), and must not see one where there is none.
 *
 * Each test records the kernel's address and carrier events on every host (`ip -ts monitor`),
 * who answered each client request, and the MACs answering ARP for the VIP, then prints the
 * checker's table.
 *
 * Needs root, `ip netns` and `arping`; skips with the reason otherwise.
 */
import assert from "node:assert/strict";
import { Lab, labUnavailable } from "./lab/netns.ts";
import { type FailoverCluster, REPO_ROOT, startFailover } from "./lab/failover.ts";
import type { Probe } from "./lab/probe.ts";
import {
  checkHistory,
  formatHistory,
  type History,
  type HistoryReport,
  labMacs,
  recordAddresses,
  requestsFromProbe,
  startArpProber,
} from "./lab/history.ts";

const PORT = 8080;
const INTERVAL = 200;
const FALL = 3;
/** The failover tests' bound (tests/netns_failover_test.ts): (fall + 1) × interval + 1 s + 3 s. */
const BOUND = (FALL + 1) * INTERVAL + 1000 + 3000;

async function unavailableReason(): Promise<string | null> {
  const lab = await labUnavailable();
  if (lab) return lab;
  for (const f of ["daemon/faild/faild.ts", "shell/failsh.ts"]) {
    if (!(await Deno.stat(REPO_ROOT + f).then(() => true, () => false))) return `${f} is missing`;
  }
  for (const p of ["/usr/bin/arping", "/usr/sbin/arping", "/bin/arping", "/sbin/arping"]) {
    if (await Deno.stat(p).then(() => true, () => false)) return null;
  }
  return "arping is not installed (apt-get install iputils-arping)";
}

const unavailable = await unavailableReason();
if (unavailable) console.log(`netns history tests skipped: ${unavailable}`);

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: `history: ${name}` + (unavailable ? ` (skipped: ${unavailable})` : ""),
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
  /** Marks a heal (for L). */
  healed(): void;
}

/**
 * Runs failover (the sample, VIP on h1) with every recorder on, runs `fault`, then checks and
 * prints the history. Everything is torn down, also when the test fails.
 */
async function recorded(
  title: string,
  fault: (scene: Scene) => Promise<void>,
): Promise<HistoryReport> {
  const lab = await Lab.create({ hosts: 2 });
  try {
    await lab.startServices(PORT);
    const cluster = await startFailover(lab, { intervalMs: INTERVAL, fall: FALL });
    const probe = lab.startProbe(PORT);
    const addresses = await recordAddresses(lab);
    const arp = startArpProber(lab);
    const heals: number[] = [];
    let to = 0;
    try {
      assert.ok(await probe.waitServedBy("h1", 20_000), "h1 serves the VIP at start");
      await fault({ lab, cluster, probe, healed: () => heals.push(Date.now()) });
      to = Date.now();
    } catch (e) {
      (e as Error).message += `\nholders: ${(await lab.holders().catch(() => [])).join(", ")}\n` +
        lab.diagnostics(20);
      throw e;
    } finally {
      await arp.stop();
      await addresses.stop();
      await probe.stop();
      await cluster.stop();
    }
    const history: History = {
      address: lab.vip,
      hosts: lab.hosts,
      from: addresses.from,
      to,
      initial: addresses.initial,
      addresses: addresses.addresses,
      carriers: addresses.carriers,
      requests: requestsFromProbe(probe.between(addresses.from, to)),
      arp: arp.windows.filter((w) => w.start >= addresses.from && w.end <= to),
      macs: await labMacs(lab).catch(() => ({})),
    };
    const report = checkHistory(history, { heals, boundMs: 2 * BOUND });
    console.log(formatHistory(report, title));
    console.log(JSON.stringify({
      i1: {
        largestOverlapMs: Math.round(report.i1.largestOverlapMs),
        overlaps: report.i1.overlaps,
      },
      i2: { doubleWindows: report.i2.doubleWindows, windows: report.i2.windows },
      l: report.l.heals,
    }));
    return report;
  } finally {
    await lab.teardown();
  }
}

test("a partition between the hosts (both reach the client): the checker reports the overlap and two MACs answering ARP", async () => {
  const r = await recorded("partition h1 | h2, no arbiter", async ({ lab, healed }) => {
    await lab.partition("h1", "h2");
    assert.ok(await lab.waitHolders((h) => h.includes("h2"), BOUND), "h2 takes the VIP");
    await sleep(2000);
    healed();
    await lab.heal();
    assert.ok(await lab.waitHolders((h) => h.length === 1 && h[0] === "h1", 2 * BOUND));
    await sleep(1000);
  });
  // Today, without an arbiter, both hosts hold the VIP during the partition: I1 sees it.
  assert.equal(r.i1.ok, false, "I1 reports the split brain");
  assert.ok(r.i1.largestOverlapMs >= 1500, `overlap ${r.i1.largestOverlapMs} ms`);
  assert.deepEqual(r.i1.overlaps[0]?.hosts, ["h1", "h2"]);
  // The client reaches both: both MACs answer its ARP requests.
  assert.equal(r.i2.ok, false, "I2 reports two MACs in a window");
  assert.ok(r.i2.examples[0]?.answered.some((a) => a.startsWith("h1")));
  assert.ok(r.i2.examples[0]?.answered.some((a) => a.startsWith("h2")));
  // After the heal exactly one holder, within the bound.
  assert.equal(r.l.ok, true, JSON.stringify(r.l));
  assert.equal(r.l.heals[0]?.holder, "h1");
});

test("the primary black-holed at the bridge (link up): the checker reports the overlap of the two holders", async () => {
  const r = await recorded("black hole h1, no arbiter", async ({ lab, probe, healed }) => {
    await lab.blackhole("h1");
    assert.ok(await probe.waitServedBy("h2", 2 * BOUND), "h2 serves");
    await sleep(1000);
    healed();
    await lab.unblackhole("h1");
    assert.ok(await lab.waitHolders((h) => h.length === 1 && h[0] === "h1", 2 * BOUND));
    await sleep(1000);
  });
  // h1 keeps the VIP with its carrier up: nobody reaches it here, but on a real network a client
  // on its side would. I1 counts it.
  assert.equal(r.i1.ok, false);
  assert.ok(r.i1.largestOverlapMs >= 1000, `overlap ${r.i1.largestOverlapMs} ms`);
  assert.equal(r.l.ok, true, JSON.stringify(r.l));
});

test("a link-down failover: no overlap while h1's link is down (its address holds nothing without carrier)", async () => {
  let healAt = 0;
  const r = await recorded("link down h1, then up, no arbiter", async ({ lab, probe, healed }) => {
    await lab.linkDown("h1");
    assert.ok(await probe.waitServedBy("h2", 2 * BOUND), "h2 serves");
    await sleep(1000);
    healed();
    healAt = Date.now();
    await lab.linkUp("h1");
    assert.ok(await lab.waitHolders((h) => h.length === 1 && h[0] === "h1", 2 * BOUND));
    await sleep(1000);
  });
  const during = r.i1.overlaps.filter((o) => o.from < healAt);
  assert.deepEqual(during, [], "no overlap while the link was down");
  // The address alone overlaps: h1 keeps it on its dead link.
  assert.ok(r.i1.addressOnlyLargestOverlapMs > 0);
  assert.equal(r.l.ok, true, JSON.stringify(r.l));
});

test("a clean hand-over (failsh on h1 stopped: it releases, then reports FAIL): no overlap at all", async () => {
  const r = await recorded(
    "failsh h1 stopped (SIGTERM), no arbiter",
    async ({ cluster, probe }) => {
      await cluster.hosts.get("h1")!.failsh.stop({ graceMs: 5000 });
      assert.ok(await probe.waitServedBy("h2", 2 * BOUND), "h2 serves");
      await sleep(1000);
    },
  );
  assert.equal(r.i1.ok, true, JSON.stringify(r.i1.overlaps));
  assert.equal(r.i1.addressOnlyLargestOverlapMs, 0);
  assert.equal(r.i2.ok, true);
  assert.deepEqual(Object.keys(r.i1.intervals).filter((h) => r.i1.intervals[h]!.length > 0), [
    "h1",
    "h2",
  ]);
});

test("epochs reach the checker: the service answers name@epoch from its file, and an epoch going back is reported (I3)", async () => {
  const lab = await Lab.create({ hosts: 2 });
  try {
    const epochFile = (h: string) => `${lab.dir}/${h}.epoch`;
    await lab.startServices(PORT, { epochFile });
    await lab.exec("h1", ["ip", "addr", "add", `${lab.vip}/24`, "dev", "eth0"]);
    await Deno.writeTextFile(epochFile("h1"), "7\n");
    const probe = lab.startProbe(PORT);
    const from = Date.now();
    try {
      assert.ok(await probe.waitServedBy("h1@7", 20_000), "the client sees h1@7");
      await Deno.writeTextFile(epochFile("h1"), "5\n"); // A stale holder's epoch.
      assert.ok(await probe.waitServedBy("h1@5", 5000), "the client sees h1@5");
    } finally {
      await probe.stop();
    }
    const requests = requestsFromProbe(probe.between(from));
    const r = checkHistory({
      address: lab.vip,
      hosts: lab.hosts,
      from,
      to: Date.now(),
      initial: [],
      addresses: [],
      carriers: [],
      requests,
      arp: [],
      macs: {},
    });
    console.log(formatHistory(r, "epoch file on h1: 7, then 5"));
    assert.ok(r.i3.withEpoch >= 10, `${r.i3.withEpoch} answers with an epoch`);
    assert.equal(r.i3.ok, false);
    assert.deepEqual([r.i3.regressions[0]?.epoch, r.i3.regressions[0]?.after], ["5", "7"]);
    assert.equal(r.i3.regressions[0]?.host, "h1");
  } finally {
    await lab.teardown();
  }
});
