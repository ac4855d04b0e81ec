/**
 * Tests of the network-namespace lab itself (tests/lab), so the fault tests and the benchmark can
 * trust it: namespaces are made and always removed, faults cut what they claim to cut, the client
 * probe sees who serves and every gap, and keepalived (the baseline) fails over in it.
 *
 * Needs root and `ip netns`; the probe test also arping, the baseline keepalived; each skips
 * naming the missing Debian package otherwise.
 */
import assert from "node:assert/strict";
import { Lab, LAB_NS_PATTERN, labFile, labUnavailable, sweepStaleNamespaces } from "./lab/netns.ts";
import { run } from "./lab/exec.ts";
import { startKeepalived } from "./lab/keepalived.ts";

const unavailable = await labUnavailable();
/** The probe test moves the VIP by hand and announces it with arping. */
const arpingMissing = await labUnavailable(["arping"]);
const keepalivedMissing = await labUnavailable(["keepalived"]);
if (unavailable) console.log(`netns lab tests skipped: ${unavailable}`);
const PORT = 8080;

async function namespacesNow(): Promise<string[]> {
  const r = await run(["ip", "netns", "list"], { timeoutMs: 5000 });
  return r.stdout.split("\n").map((l) => l.split(" ")[0] ?? "").filter((n) => n);
}

Deno.test({
  name: "lab: builds hosts and a client joined by a bridge, and teardown removes every namespace" +
    (unavailable ? ` (skipped: ${unavailable})` : ""),
  ignore: unavailable !== null,
  async fn() {
    const lab = await Lab.create({ hosts: 3 });
    let names: string[] = [];
    try {
      names = lab.namespaces;
      assert.equal(names.length, 5);
      const present = await namespacesNow();
      for (const n of names) assert.ok(present.includes(n), `${n} exists`);
      for (const n of names) assert.match(n, LAB_NS_PATTERN);
      assert.deepEqual(await lab.addresses("h2"), [`${lab.address("h2")}/24`]);
      assert.match(lab.vip, /^198\.1[89]\.\d{1,3}\.100$/);
      await lab.startServices(PORT);
      // Every host answers the client on its own address with its name.
      for (const h of lab.hosts) {
        assert.equal(await lab.tcpCheck("client", lab.address(h), PORT), h);
      }
      // Nobody holds the VIP yet.
      assert.deepEqual(await lab.holders(), []);
    } finally {
      await lab.teardown();
    }
    const after = await namespacesNow();
    for (const n of names) assert.ok(!after.includes(n), `${n} removed`);
  },
});

Deno.test({
  name: "lab: link down, black-hole and partition cut exactly what they claim" +
    (unavailable ? ` (skipped: ${unavailable})` : ""),
  ignore: unavailable !== null,
  async fn() {
    const lab = await Lab.create({ hosts: 2 });
    try {
      await lab.startServices(PORT);
      const h1 = lab.address("h1");
      const h2 = lab.address("h2");

      await lab.linkDown("h1");
      assert.equal(await lab.tcpCheck("client", h1, PORT, 500), null, "link down cuts h1");
      const link = await lab.exec("h1", ["ip", "-j", "link", "show", "eth0"]);
      assert.match(link.stdout, /NO-CARRIER/, "h1 sees its carrier go");
      await lab.linkUp("h1");
      assert.equal(await lab.tcpCheck("client", h1, PORT, 3000), "h1", "link up restores h1");

      await lab.blackhole("h1");
      assert.equal(await lab.tcpCheck("client", h1, PORT, 500), null, "black-hole cuts h1");
      assert.equal(await lab.tcpCheck("h2", h1, PORT, 500), null, "also from h2");
      const carrier = await lab.exec("h1", ["ip", "-j", "link", "show", "eth0"]);
      assert.doesNotMatch(carrier.stdout, /NO-CARRIER/, "h1 keeps its carrier");
      assert.equal(await lab.tcpCheck("client", h2, PORT), "h2", "others unaffected");
      await lab.unblackhole("h1");
      assert.equal(await lab.tcpCheck("client", h1, PORT, 3000), "h1", "heal restores h1");

      await lab.partition("h1", "h2");
      assert.equal(await lab.tcpCheck("h2", h1, PORT, 500), null, "h2 cannot reach h1");
      assert.equal(await lab.tcpCheck("h1", h2, PORT, 500), null, "h1 cannot reach h2");
      assert.equal(await lab.tcpCheck("client", h1, PORT), "h1", "the client reaches h1");
      assert.equal(await lab.tcpCheck("client", h2, PORT), "h2", "the client reaches h2");
      await lab.heal();
      assert.equal(await lab.tcpCheck("h2", h1, PORT, 3000), "h1", "heal joins them again");
    } finally {
      await lab.teardown();
    }
  },
});

Deno.test({
  name:
    "lab: the probe sees who serves the VIP, the gap when it moves, and the client's ARP entry" +
    (arpingMissing ? ` (skipped: ${arpingMissing})` : ""),
  ignore: arpingMissing !== null,
  async fn() {
    const lab = await Lab.create({ hosts: 2 });
    try {
      await lab.startServices(PORT);
      const vip = `${lab.vip}/24`;
      await lab.exec("h1", ["ip", "addr", "add", vip, "dev", "eth0"]);
      const probe = lab.startProbe(PORT);
      assert.ok(await probe.waitServedBy("h1", 15_000), "h1 serves the VIP");
      assert.equal((await lab.neighbour("client"))?.mac, await lab.mac("h1"));

      const cutAt = Date.now();
      await lab.linkDown("h1");
      await new Promise((r) => setTimeout(r, 200));
      await lab.exec("h2", ["ip", "addr", "add", vip, "dev", "eth0"]);
      await lab.exec("h2", ["arping", "-q", "-U", "-c", "1", "-I", "eth0", lab.vip], {
        check: false,
        timeoutMs: 5000,
      });
      assert.ok(await probe.waitServedBy("h2", 10_000), "h2 serves the VIP");
      assert.equal((await lab.neighbour("client"))?.mac, await lab.mac("h2"), "gratuitous ARP");
      const r = await probe.settledOutage(cutAt);
      assert.ok(r.failures > 0, "the client saw the cut");
      assert.equal(r.servedBy, "h2");
      assert.ok(r.outageMs !== null && r.outageMs >= 150, `outage ${r.outageMs} covers the 200 ms`);
      assert.deepEqual(r.answeredBy.at(-1), "h2");
      await probe.stop();
    } finally {
      await lab.teardown();
    }
  },
});

Deno.test({
  name: "lab: stale namespaces of a dead run are swept, live ones are kept" +
    (unavailable ? ` (skipped: ${unavailable})` : ""),
  ignore: unavailable !== null,
  async fn() {
    // A pid that is not running: pid_max is at most 4194304.
    let dead = 4_194_000;
    while (await Deno.stat(`/proc/${dead}`).then(() => true, () => false)) dead++;
    const stale = `folab${dead}.1-h1`;
    const alive = `folab1.1-h1`; // pid 1 is always alive.
    await run(["ip", "netns", "add", stale], { timeoutMs: 5000 });
    await run(["ip", "netns", "add", alive], { timeoutMs: 5000 });
    try {
      // (Under --parallel another test file's Lab.create() may sweep it first: either way it goes.)
      const removed = sweepStaleNamespaces();
      assert.ok(!removed.includes(alive), "a live run's namespace is kept");
      const now = await namespacesNow();
      assert.ok(!now.includes(stale), "the dead run's namespace is removed");
      assert.ok(now.includes(alive), "a live run's namespace is kept");
    } finally {
      await run(["ip", "netns", "del", stale], { check: false, timeoutMs: 5000 });
      await run(["ip", "netns", "del", alive], { check: false, timeoutMs: 5000 });
    }
  },
});

Deno.test({
  name: "lab: an interrupted run (SIGINT) removes its namespaces and kills what ran in them" +
    (unavailable ? ` (skipped: ${unavailable})` : ""),
  ignore: unavailable !== null,
  async fn() {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-lock", labFile("_interrupt_fixture.ts")],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      while (!text.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
      const names = JSON.parse(text.split("\n")[0] ?? "[]") as string[];
      assert.equal(names.length, 4, `fixture made its lab: ${text}`);
      const present = await namespacesNow();
      for (const n of names) assert.ok(present.includes(n));
      child.kill("SIGINT");
      const status = await child.status;
      assert.notEqual(status.code, 0);
      reader.releaseLock();
      await child.stdout.cancel().catch(() => {});
      await child.stderr.cancel();
      const after = await namespacesNow();
      for (const n of names) assert.ok(!after.includes(n), `${n} removed after SIGINT`);
    } finally {
      clearTimeout(timer);
    }
  },
});

Deno.test({
  name: "lab: keepalived (the baseline) moves the VIP to the backup when the master's link goes" +
    (keepalivedMissing ? ` (skipped: ${keepalivedMissing})` : ""),
  ignore: keepalivedMissing !== null,
  async fn() {
    const lab = await Lab.create({ hosts: 2 });
    try {
      await lab.startServices(PORT);
      const ka = await startKeepalived(lab, { advertIntSec: 0.1 });
      const probe = lab.startProbe(PORT);
      assert.ok(await probe.waitServedBy("h1", 15_000), "the master serves");
      const cutAt = Date.now();
      await lab.linkDown("h1");
      // VRRPv3 down timer: 3 × advert_int + skew, plus slack for a loaded machine.
      assert.ok(await probe.waitServedBy("h2", 0.4 * 1000 + 5000), lab.diagnostics());
      const r = await probe.settledOutage(cutAt);
      assert.equal(r.servedBy, "h2");
      assert.deepEqual(await lab.holders(), ["h2"], "h1 lost carrier; h2 holds");
      assert.equal((await lab.neighbour("client"))?.mac, await lab.mac("h2"));
      await lab.linkUp("h1");
      assert.ok(await probe.waitServedBy("h1", 10_000), "preempt: h1 takes it back");
      assert.ok(await lab.waitHolders((h) => h.length === 1 && h[0] === "h1", 5000));
      await probe.stop();
      await ka.stop();
      assert.deepEqual(await lab.holders(), [], "keepalived removes the VIP when it stops");
    } finally {
      await lab.teardown();
    }
  },
});
