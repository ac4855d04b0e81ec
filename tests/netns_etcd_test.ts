/**
 * The etcd lab (tests/lab/etcd.ts): a real 3-member etcd cluster on a management bridge of its
 * own, so that the arbiter's fault tests can trust it: the hosts reach every member and the client
 * reaches none; a leader is found; killing the leader elects another and the killed member
 * rejoins; cutting a host from etcd cuts it from etcd only; and our gateway client, run in a
 * host's namespace against the three members, fails over when one is killed.
 *
 * Needs root, `ip netns`, etcd (etcd-server) and curl; skips with the reason otherwise.
 */
import assert from "node:assert/strict";
import { Lab, labUnavailable } from "./lab/netns.ts";
import { ETCD_CLIENT_PORT, EtcdLab, etcdLabUnavailable } from "./lab/etcd.ts";
import { REPO_ROOT } from "./lab/failover.ts";

const unavailable = (await labUnavailable()) ?? (await etcdLabUnavailable());
if (unavailable) console.log(`netns etcd tests skipped: ${unavailable}`);

function test(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: `etcd lab: ${name}` + (unavailable ? ` (skipped: ${unavailable})` : ""),
    ignore: unavailable !== null,
    fn,
  });
}

async function withEtcd(fn: (lab: Lab, etcd: EtcdLab) => Promise<void>): Promise<void> {
  const lab = await Lab.create({ hosts: 2 });
  try {
    const etcd = await EtcdLab.start(lab);
    try {
      await fn(lab, etcd);
    } catch (e) {
      (e as Error).message += "\n" + lab.diagnostics(15);
      throw e;
    } finally {
      await etcd.stop();
    }
  } finally {
    await lab.teardown();
  }
}

/** Whether `from` gets an answer from a member's client port within 1 s. */
async function reaches(etcd: EtcdLab, from: string, member: string): Promise<boolean> {
  const r = await etcd.call(
    from,
    `http://${etcd.address(member)}:${ETCD_CLIENT_PORT}`,
    "/v3/kv/range",
    { key: btoa("x") },
  );
  return r !== null && r.header !== undefined;
}

test("three members on the management bridge elect a leader; hosts reach every member, the client none", async () => {
  await withEtcd(async (lab, etcd) => {
    assert.deepEqual(etcd.members, ["e1", "e2", "e3"]);
    assert.notEqual(etcd.net, lab.net, "the management /24 is not the service /24");
    assert.match(etcd.address("e1"), /^198\.1[89]\.\d+\.11$/);
    const leader = await etcd.leader();
    assert.ok(leader && etcd.members.includes(leader), `leader: ${leader}`);
    for (const h of lab.hosts) {
      for (const m of etcd.members) assert.ok(await reaches(etcd, h, m), `${h} reaches ${m}`);
    }
    const fromClient = await lab.exec("client", [
      "curl",
      "-s",
      "-m",
      "0.5",
      "-X",
      "POST",
      `${etcd.endpoints[0]}/v3/kv/range`,
      "-d",
      "{}",
    ], { check: false });
    assert.notEqual(fromClient.code, 0, "the client has no route to the management network");
    // The namespaces of the members belong to the lab (torn down with it).
    for (const m of etcd.members) assert.ok(lab.namespaces.includes(lab.ns(m)));
  });
});

test("killing the leader elects another; the killed member restarts on its data and rejoins", async () => {
  await withEtcd(async (_lab, etcd) => {
    const first = await etcd.leader();
    assert.ok(first);
    await etcd.kill(first);
    const second = await etcd.waitLeader(15_000, first);
    assert.ok(second && second !== first, `a new leader after killing ${first}: ${second}`);
    await etcd.restart(first);
    assert.equal((await etcd.statuses()).length, 3, "all three members answer again");
  });
});

test("cutting a host from etcd (port down or black-holed) cuts it from etcd only", async () => {
  await withEtcd(async (lab, etcd) => {
    for (const how of ["down", "blackhole"] as const) {
      await etcd.cut("h1", how);
      for (const m of etcd.members) {
        assert.equal(await reaches(etcd, "h1", m), false, `${how}: h1 does not reach ${m}`);
        assert.ok(await reaches(etcd, "h2", m), `${how}: h2 still reaches ${m}`);
      }
      const ping = await lab.exec("h1", ["ping", "-c", "1", "-W", "1", lab.address("h2")], {
        check: false,
      });
      assert.equal(ping.code, 0, `${how}: h1 still reaches h2 on the service network`);
      const link = await lab.exec("h1", ["ip", "-j", "link", "show", "eth1"]);
      if (how === "down") assert.match(link.stdout, /NO-CARRIER/);
      else assert.doesNotMatch(link.stdout, /NO-CARRIER/);
      await etcd.heal("h1");
      for (const m of etcd.members) {
        // A port back up takes a moment (carrier, neighbour entries): up to 10 tries of 1 s.
        let ok = false;
        for (let i = 0; i < 10 && !ok; i++) ok = await reaches(etcd, "h1", m);
        assert.ok(ok, `healed (${how}): h1 reaches ${m}`);
      }
    }
  });
});

test("the gateway client in a host's namespace fails over to another member when one is killed", async () => {
  await withEtcd(async (lab, etcd) => {
    // A small program in h1's namespace: grant a lease, then keep it alive once a second,
    // printing one line per result, across the kill of the member it talks to first.
    const script = `
import { EtcdGateway } from ${JSON.stringify(`${REPO_ROOT}shell/arbiter/etcd_gateway.ts`)};
const gw = new EtcdGateway({ endpoints: ${JSON.stringify(etcd.endpoints)}, timeoutMs: 1500 });
const lease = await gw.grant(10);
console.log("granted", gw.preferred);
for (let i = 0; i < 40; i++) {
  try {
    const r = await gw.keepAlive(lease.id);
    console.log("kept", r.ttlSeconds, gw.preferred);
  } catch (e) {
    console.log("failed", e.name);
  }
  await new Promise((r) => setTimeout(r, 250));
}
`;
    const file = `${lab.dir}/keepalive.ts`;
    await Deno.writeTextFile(file, script);
    const lines: string[] = [];
    const p = lab.spawn("h1", [Deno.execPath(), "run", "-A", "--no-lock", file], {
      label: "h1-keepalive",
      onStdoutLine: (l) => lines.push(l),
    });
    const deadline = Date.now() + 20_000;
    while (!lines.some((l) => l.startsWith("kept")) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const first = lines.find((l) => l.startsWith("granted"))?.split(" ")[1];
    const member = etcd.members[etcd.endpoints.indexOf(first ?? "")];
    assert.ok(member, `granted through ${first}: ${lines.join("; ")}`);
    await etcd.kill(member);
    const at = lines.length;
    while (
      !lines.slice(at).some((l) => l.startsWith("kept") && !l.endsWith(first!)) &&
      Date.now() < deadline
    ) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await p.stop();
    const after = lines.slice(at).filter((l) => l.startsWith("kept"));
    assert.ok(
      after.some((l) => !l.endsWith(first!)),
      `kept alive through another member after ${member} was killed: ${lines.join("; ")}`,
    );
  });
});

test("without a quorum: a keepalive may still answer, but the linearizable confirmation never does, and a watch is cancelled", async () => {
  await withEtcd(async (lab, etcd) => {
    const leader = await etcd.leader();
    assert.ok(leader);
    const endpoint = `http://${etcd.address(leader)}:${ETCD_CLIENT_PORT}`;
    // In h1's namespace, through our gateway, talking to the leader only: take a key, start a
    // watch, wait for the go, then renew and confirm a few times.
    const script = `
import { EtcdGateway } from ${JSON.stringify(`${REPO_ROOT}shell/arbiter/etcd_gateway.ts`)};
const gw = new EtcdGateway({ endpoints: [${JSON.stringify(endpoint)}], timeoutMs: 1000 });
const out = (o) => console.log(JSON.stringify(o));
const lease = await gw.grant(5);
const got = await gw.acquire("/q/web", "h1", lease.id);
out({ step: "ready", acquired: got.acquired });
const started = Date.now();
(async () => {
  try {
    for await (const _ of gw.watch("/q/web", { signal: AbortSignal.timeout(20000) })) { /* events */ }
    out({ step: "watch", ended: "stream ended" });
  } catch (e) {
    out({ step: "watch", ended: e.name, message: e.message, afterMs: Date.now() - started });
  }
})();
while (true) {
  try { await Deno.stat(${
      JSON.stringify(`${lab.dir}/go`)
    }); break; } catch { await new Promise((r) => setTimeout(r, 5)); }
}
for (let i = 0; i < 5; i++) {
  const t = Date.now();
  try {
    const k = await gw.keepAlive(lease.id);
    out({ step: "keepalive", ok: true, ttl: k.ttlSeconds, ms: Date.now() - t });
  } catch (e) {
    out({ step: "keepalive", ok: false, error: e.name, message: e.message, ms: Date.now() - t });
  }
  const u = Date.now();
  try {
    const c = await gw.confirm(["/q/web"], lease.id);
    out({ step: "confirm", ok: true, owned: c.allOwned, ms: Date.now() - u });
  } catch (e) {
    out({ step: "confirm", ok: false, error: e.name, message: e.message, ms: Date.now() - u });
  }
  await new Promise((r) => setTimeout(r, 500));
}
await new Promise((r) => setTimeout(r, 9000));
out({ step: "done" });
`;
    const file = `${lab.dir}/quorum.ts`;
    await Deno.writeTextFile(file, script);
    const lines: Record<string, unknown>[] = [];
    const p = lab.spawn("h1", [Deno.execPath(), "run", "-A", "--no-lock", file], {
      label: "h1-quorum",
      onStdoutLine: (l) => {
        try {
          lines.push(JSON.parse(l));
        } catch {
          // Not ours.
        }
      },
    });
    const wait = async (step: string, ms: number) => {
      const deadline = Date.now() + ms;
      while (!lines.some((l) => l.step === step) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      return lines.find((l) => l.step === step);
    };
    try {
      assert.equal((await wait("ready", 20_000))?.acquired, true, p.tail());
      for (const m of etcd.members) if (m !== leader) await etcd.kill(m);
      await Deno.writeTextFile(`${lab.dir}/go`, "");
      await wait("done", 30_000);
    } finally {
      await p.stop();
    }
    const renewals = lines.filter((l) => l.step === "keepalive");
    const confirms = lines.filter((l) => l.step === "confirm");
    console.log(lines.map((l) => JSON.stringify(l)).join("\n"));
    assert.equal(confirms.length, 5);
    // The safety point: no confirmation succeeds without a quorum, whatever the keepalive said.
    assert.deepEqual(confirms.filter((c) => c.ok), [], "no confirmation without a quorum");
    assert.ok(confirms.every((c) => c.error === "EtcdUnreachableError"));
    // Once the old leader stepped down, it says so at once (require-leader header).
    assert.match(String(renewals.at(-1)?.message), /no leader/);
    assert.match(String(confirms.at(-1)?.message), /no leader/);
    // The watch, created with the header, is cancelled with "no leader".
    const watch = lines.find((l) => l.step === "watch");
    assert.equal(watch?.ended, "EtcdUnreachableError", JSON.stringify(watch));
    assert.match(String(watch?.message), /no leader/);
  });
});
