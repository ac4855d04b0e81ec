/**
 * The arbiter's rule: row by row as a pure function (`stepLease`), then the driver on fake time
 * against an in-memory stand-in for etcd (timing rules only), then two hosts competing on a REAL
 * etcd (the safety claims: only one takes the key; a holder cut from etcd, or whose lease is
 * revoked, reports `lost` before the other host holds the service).
 */
import assert from "node:assert/strict";
import { FakeTime } from "../_fake_time.ts";
import { FakeEtcd } from "./_fake_etcd.ts";
import { EtcdGateway } from "./etcd_gateway.ts";
import { etcdUnavailable, startEtcd, startRelay } from "./_test_etcd.ts";
import {
  type ArbiterGateway,
  type ArbiterLossPolicy,
  type ArbiterState,
  type ArbiterStatus,
  arbiterTiming,
  EtcdArbiter,
  initialLease,
  type LeaseContext,
  type LeaseEvent,
  type ServiceLease,
  stepLease,
  timingProblems,
} from "./lease.ts";

const T = arbiterTiming(); // 6000 / 2000 / 1000 / 1000 / 3000.
const CTX: LeaseContext = { self: "h1", timing: T, onArbiterLoss: "release" };

// ---------------------------------------------------------------------------------------------
// The timing.

Deno.test("arbiterTiming() derives the defaults from the TTL and checks renew + 2 × timeout + margin ≤ TTL", async (t) => {
  await t.step("defaults for 6 s: renew 2 s, timeout 1 s, margin 1 s, takeover delay 3 s", () => {
    assert.deepEqual(arbiterTiming(), {
      ttlMs: 6000,
      renewMs: 2000,
      timeoutMs: 1000,
      marginMs: 1000,
      takeoverDelayMs: 3000,
    });
    assert.deepEqual(timingProblems(arbiterTiming({ ttlMs: 3000 })), []);
  });
  await t.step("a renewal that could be confirmed after the deadline is refused", () => {
    assert.throws(
      () => arbiterTiming({ ttlMs: 3000, renewMs: 1000, timeoutMs: 1000, marginMs: 500 }),
      /renewMs \+ 2 × timeoutMs \+ marginMs = 3500 ms exceeds ttlMs 3000 ms/,
    );
  });
  await t.step(
    "renew and timeout above TTL/3, a tiny margin, a short delay, fractions of a second",
    () => {
      const p = timingProblems({
        ttlMs: 2500,
        renewMs: 1000,
        timeoutMs: 900,
        marginMs: 50,
        takeoverDelayMs: 100,
      });
      assert.equal(p.length, 6, p.join("\n"));
      assert.throws(() => arbiterTiming({ ttlMs: -1 }), /positive integer/);
    },
  );
});

// ---------------------------------------------------------------------------------------------
// The rule, row by row.

function lease(over: Partial<ServiceLease>): ServiceLease {
  return { ...initialLease("web", 0), ...over };
}

const HELD = lease({
  state: "held",
  wanted: true,
  epoch: "42",
  acquiredAt: 0,
  confirmedSentAt: 10_000,
  ttlMs: 6000,
});
const DELAY = lease({
  state: "waiting-delay",
  wanted: true,
  epoch: "42",
  acquiredAt: 10_000,
  confirmedSentAt: 10_000,
  ttlMs: 6000,
});
const FAILSAFE = { ...HELD, state: "failsafe" as const, etcdDownSince: 12_000, peersAgree: true };

interface Row {
  name: string;
  from: ServiceLease;
  event: LeaseEvent;
  now: number;
  policy?: ArbiterLossPolicy;
  state: ArbiterState;
  verdict: "grant" | "deny";
  rule: string;
  mentions?: string[];
  wakeAt?: number | null;
}

const ROWS: Row[] = [
  {
    name: "a service nobody asked for stays none",
    from: lease({}),
    event: { type: "tick" },
    now: 0,
    state: "none",
    verdict: "deny",
    rule: "idle",
  },
  {
    name: "want starts acquiring (create_revision == 0)",
    from: lease({}),
    event: { type: "want" },
    now: 0,
    state: "acquiring",
    verdict: "deny",
    rule: "want",
    mentions: ["create_revision == 0"],
  },
  {
    name: "the key exists: the taker waits until it is gone, naming the holder",
    from: lease({ state: "acquiring", wanted: true }),
    event: { type: "taken", holder: "h2" },
    now: 0,
    state: "acquiring",
    verdict: "deny",
    rule: "key-held",
    mentions: ["h2 holds the key", "gone"],
  },
  {
    name: "acquired: the takeover delay starts; the verdict stays deny",
    from: lease({ state: "acquiring", wanted: true }),
    event: { type: "acquired", epoch: "42", leaseSentAt: 9_990, ttlMs: 6000 },
    now: 10_000,
    state: "waiting-delay",
    verdict: "deny",
    rule: "acquired",
    mentions: ["epoch 42", "3000 ms"],
    wakeAt: 13_000,
  },
  {
    name: "still in the delay one ms before it ends",
    from: DELAY,
    event: { type: "tick" },
    now: 12_999,
    state: "waiting-delay",
    verdict: "deny",
    rule: "takeover-delay",
    mentions: ["1 ms more"],
  },
  {
    name: "the delay is over: held, grant, wake at the deadline",
    from: { ...DELAY, confirmedSentAt: 12_000 },
    event: { type: "tick" },
    now: 13_000,
    state: "held",
    verdict: "grant",
    rule: "takeover-delay-over",
    wakeAt: 12_000 + 6000 - 1000,
  },
  {
    name: "the deadline passes during the delay: back to acquiring, never held",
    from: { ...DELAY, acquiredAt: 10_000, confirmedSentAt: 7_000 },
    event: { type: "tick" },
    now: 12_000,
    state: "acquiring",
    verdict: "deny",
    rule: "deadline-before-start",
  },
  {
    name: "a holder one ms before its deadline still holds",
    from: HELD,
    event: { type: "tick" },
    now: 14_999,
    state: "held",
    verdict: "grant",
    rule: "held",
    mentions: ["releases in 1 ms"],
    wakeAt: 15_000,
  },
  {
    name: "the deadline is the send time of the last confirmed renewal + TTL − margin",
    from: HELD,
    event: { type: "tick" },
    now: 15_000,
    state: "lost",
    verdict: "deny",
    rule: "deadline",
    mentions: ["sent 5000 ms ago", "before etcd can let anyone else"],
  },
  {
    name: "a renewal moves the deadline from its send time, not its answer time",
    from: HELD,
    event: { type: "renewed", sentAt: 12_000, ttlMs: 6000 },
    now: 14_500,
    state: "held",
    verdict: "grant",
    rule: "held",
    wakeAt: 17_000,
  },
  {
    name: "a renewal that arrives after the deadline does not revive the holder",
    from: HELD,
    event: { type: "renewed", sentAt: 9_000, ttlMs: 6000 },
    now: 15_100,
    state: "lost",
    verdict: "deny",
    rule: "deadline",
  },
  {
    name: "the server's TTL counts: a raised TTL moves the deadline",
    from: HELD,
    event: { type: "renewed", sentAt: 12_000, ttlMs: 10_000 },
    now: 12_100,
    state: "held",
    verdict: "grant",
    rule: "held",
    wakeAt: 21_000,
  },
  {
    name: "the confirmation finds the key on another lease: lost at once",
    from: HELD,
    event: { type: "not-owned", holder: "h2" },
    now: 11_000,
    state: "lost",
    verdict: "deny",
    rule: "key-lost",
    mentions: ["held by h2", "must release"],
  },
  {
    name: "the lease expired (keepalive without TTL): lost at once",
    from: HELD,
    event: { type: "lease-expired" },
    now: 11_000,
    state: "lost",
    verdict: "deny",
    rule: "lease-expired",
  },
  {
    name: "the key vanishes during the delay: back to acquiring",
    from: DELAY,
    event: { type: "not-owned", holder: null },
    now: 11_000,
    state: "acquiring",
    verdict: "deny",
    rule: "key-lost-in-delay",
    mentions: ["is gone"],
  },
  {
    name: "etcd unreachable: nothing changes before the deadline",
    from: HELD,
    event: { type: "unreachable", error: "no answer" },
    now: 12_000,
    state: "held",
    verdict: "grant",
    rule: "held",
    mentions: ["etcd has not answered for 0 ms"],
  },
  {
    name: "release (default): at the deadline without etcd, lost even if every peer agrees",
    from: { ...HELD, etcdDownSince: 12_000, peersAgree: true },
    event: { type: "tick" },
    now: 15_000,
    state: "lost",
    verdict: "deny",
    rule: "deadline",
    mentions: ["etcd has not answered for 3000 ms"],
  },
  {
    name: "keep-if-peers-agree: at the deadline without etcd, every peer agreeing: failsafe, grant",
    from: { ...HELD, etcdDownSince: 12_000, peersAgree: true },
    event: { type: "tick" },
    now: 15_000,
    policy: "keep-if-peers-agree",
    state: "failsafe",
    verdict: "grant",
    rule: "failsafe",
    mentions: ["every peer answers and agrees"],
  },
  {
    name: "keep-if-peers-agree with a peer that does not agree: lost",
    from: { ...HELD, etcdDownSince: 12_000, peersAgree: false },
    event: { type: "tick" },
    now: 15_000,
    policy: "keep-if-peers-agree",
    state: "lost",
    verdict: "deny",
    rule: "deadline",
  },
  {
    name: "keep-if-peers-agree when etcd answered but renewals were not confirmed: lost",
    from: { ...HELD, etcdDownSince: null, peersAgree: true },
    event: { type: "tick" },
    now: 15_000,
    policy: "keep-if-peers-agree",
    state: "lost",
    verdict: "deny",
    rule: "deadline",
    mentions: ["no renewal was confirmed"],
  },
  {
    name: "failsafe: a peer stops agreeing: lost",
    from: FAILSAFE,
    event: { type: "peers", agree: false },
    now: 20_000,
    policy: "keep-if-peers-agree",
    state: "lost",
    verdict: "deny",
    rule: "failsafe-disagree",
  },
  {
    name: "failsafe: etcd answers and the key is still ours: held again",
    from: FAILSAFE,
    event: { type: "renewed", sentAt: 20_000, ttlMs: 6000 },
    now: 20_010,
    policy: "keep-if-peers-agree",
    state: "held",
    verdict: "grant",
    rule: "etcd-back",
  },
  {
    name: "failsafe: the lease expired meanwhile: still kept until the key is taken again or not",
    from: FAILSAFE,
    event: { type: "lease-expired" },
    now: 20_000,
    policy: "keep-if-peers-agree",
    state: "failsafe",
    verdict: "grant",
    rule: "failsafe-reacquire",
  },
  {
    name: "failsafe: the key was free and is ours again: held with the new epoch, no delay",
    from: FAILSAFE,
    event: { type: "acquired", epoch: "99", leaseSentAt: 20_000, ttlMs: 6000 },
    now: 20_010,
    policy: "keep-if-peers-agree",
    state: "held",
    verdict: "grant",
    rule: "reacquired",
    mentions: ["epoch 99"],
  },
  {
    name: "failsafe: another host took the key meanwhile: lost",
    from: FAILSAFE,
    event: { type: "taken", holder: "h2" },
    now: 20_010,
    policy: "keep-if-peers-agree",
    state: "lost",
    verdict: "deny",
    rule: "failsafe-taken",
    mentions: ["h2 took the key"],
  },
  {
    name: "lost is sticky: want and a late renewal change nothing until the address is gone",
    from: lease({ state: "lost", wanted: true, epoch: "42" }),
    event: { type: "want" },
    now: 20_000,
    state: "lost",
    verdict: "deny",
    rule: "lost",
    mentions: ["address must go"],
  },
  {
    name: "unwant (the address is gone) ends anything: none",
    from: lease({ state: "lost", wanted: true, epoch: "42" }),
    event: { type: "unwant" },
    now: 20_000,
    state: "none",
    verdict: "deny",
    rule: "unwant",
  },
];

Deno.test("stepLease() follows the rule row by row, with a reason for every answer", async (t) => {
  for (const row of ROWS) {
    await t.step(row.name, () => {
      const ctx = { ...CTX, onArbiterLoss: row.policy ?? "release" };
      const a = stepLease(row.from, row.event, row.now, ctx);
      assert.equal(a.lease.state, row.state, a.reason);
      assert.equal(a.verdict, row.verdict);
      assert.equal(a.rule, row.rule, a.reason);
      assert.ok(a.reason.length > 0);
      for (const m of row.mentions ?? []) assert.ok(a.reason.includes(m), `"${m}" in: ${a.reason}`);
      if (row.wakeAt !== undefined) assert.equal(a.wakeAt, row.wakeAt);
      // Pure: the input is not modified.
      assert.notEqual(a.lease, row.from);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// The driver on fake time (timing rules; the stand-in is no evidence of safety).

interface Seen extends ArbiterStatus {
  at: number;
}

function fakeHost(
  store: FakeEtcd,
  time: FakeTime,
  host: string,
  options: { policy?: ArbiterLossPolicy; latencyMs?: number } = {},
) {
  const gw = store.client(host, { latencyMs: options.latencyMs ?? 5 });
  const seen: Seen[] = [];
  const arbiter = new EtcdArbiter({
    gateway: gw,
    host,
    prefix: "/failover/t/",
    clock: time,
    onChange: (s) => seen.push({ ...s, at: time.now() }),
    ...(options.policy ? { onArbiterLoss: options.policy } : {}),
  });
  const firstAt = (state: ArbiterState) => seen.find((s) => s.state === state)?.at ?? null;
  return { gw, arbiter, seen, firstAt };
}

/** Stops arbiters on fake time (their last requests and the revoke need time to pass). */
async function stopOnFakeTime(time: FakeTime, ...hosts: { arbiter: EtcdArbiter }[]): Promise<void> {
  const done = Promise.all(hosts.map((h) => h.arbiter.stop()));
  await time.advance(5000);
  await done;
}

function keepalives(store: FakeEtcd, client: string): number[] {
  return store.calls.filter((c) => c.client === client && c.op === "keepalive").map((c) => c.at);
}

Deno.test("on fake time: a holder renews every renew interval from the previous send, each renewal confirmed", async () => {
  const time = new FakeTime(0);
  const store = new FakeEtcd(time);
  const a = fakeHost(store, time, "h1");
  a.arbiter.want("web");
  await time.advance(10); // grant 0→5, acquire 5→10.
  assert.equal(a.arbiter.status("web").state, "waiting-delay");
  await time.advance(3000);
  assert.equal(a.arbiter.verdict("web"), "grant");
  assert.equal(a.firstAt("held"), 3010, "held once the takeover delay after the acquire is over");
  await time.advance(7000);
  assert.deepEqual(keepalives(store, "h1"), [2000, 4000, 6000, 8000, 10_000]);
  const confirms = store.calls.filter((c) => c.op === "confirm").map((c) => c.at);
  assert.deepEqual(confirms, [2005, 4005, 6005, 8005, 10_005]);
  assert.equal(a.arbiter.status("web").epoch, "2");
  await stopOnFakeTime(time, a);
});

Deno.test("on fake time: etcd goes silent; the holder stops holding at send time + TTL − margin, before etcd can expire the key", async () => {
  const time = new FakeTime(0);
  const store = new FakeEtcd(time);
  const a = fakeHost(store, time, "h1");
  a.arbiter.want("web");
  await time.advance(5000);
  const leaseId = a.arbiter.leaseId!;
  a.gw.down = true; // After the keepalive sent at 4000 was confirmed.
  await time.advance(10_000);
  assert.equal(a.firstAt("lost"), 4000 + 6000 - 1000);
  const lost = a.seen.find((s) => s.state === "lost")!;
  assert.equal(lost.rule, "deadline");
  // etcd renewed the lease when it served the keepalive (4005): it expires at 10005 at the
  // earliest, a full margin after the holder let go.
  assert.equal(store.expiresAt(leaseId), 4005 + 6000);
  assert.ok(lost.at + T.marginMs <= store.expiresAt(leaseId)!);
  // Retries after failures were 250 ms apart, never a tight loop.
  const tries = keepalives(store, "h1").filter((t) => t > 4000);
  assert.deepEqual(tries, [6000, 7250, 8500]);
  await stopOnFakeTime(time, a);
});

Deno.test("on fake time: a slow answer does not stretch the deadline: it counts from the keepalive's send time", async () => {
  const time = new FakeTime(0);
  const store = new FakeEtcd(time);
  const a = fakeHost(store, time, "h1", { latencyMs: 900 });
  a.arbiter.want("web");
  await time.advance(3800); // grant 0→900, acquire →1800, keepalive 2000→2900, confirm →3800.
  const s = a.arbiter.status("web");
  assert.equal(s.state, "waiting-delay");
  assert.equal(s.deadlineInMs, 2000 + 6000 - 1000 - 3800);
  await stopOnFakeTime(time, a);
});

Deno.test("on fake time: a keepalive that succeeds after a revoke (etcd 3.4.23's bug) does not fool the holder", async () => {
  const time = new FakeTime(0);
  const store = new FakeEtcd(time);
  const a = fakeHost(store, time, "h1");
  a.arbiter.want("web");
  await time.advance(5000);
  const id = a.arbiter.leaseId!;
  store.zombie.add(id);
  store.revokeNow(id); // The key goes; the keepalive will still answer with a TTL.
  await time.advance(1100); // The renewal at 6000: keepalive "OK", confirmation: key gone.
  const lost = a.seen.find((x) => x.state === "lost");
  assert.equal(lost?.rule, "key-lost");
  assert.equal(lost?.at, 6010, "at the first renewal after the revoke");
  await stopOnFakeTime(time, a);
});

Deno.test("on fake time: the taker takes only once the key is gone, then waits the takeover delay; the old holder had let go", async () => {
  const time = new FakeTime(0);
  const store = new FakeEtcd(time);
  const a = fakeHost(store, time, "h1");
  const b = fakeHost(store, time, "h2");
  a.arbiter.want("web");
  await time.advance(4000);
  b.arbiter.want("web");
  await time.advance(100);
  assert.equal(b.arbiter.status("web").holder, "h1");
  const leaseA = a.arbiter.leaseId!;
  a.gw.down = true; // h1 cut from etcd only, at 4100 (its last confirmed keepalive: 4000).
  await time.advance(15_000);
  const aLost = a.firstAt("lost")!;
  const bAcquired = b.seen.find((s) => s.state === "waiting-delay")!;
  const bHeld = b.firstAt("held")!;
  assert.equal(aLost, 9000);
  assert.equal(store.expiresAt(leaseA), null, "etcd expired h1's lease");
  assert.ok(bAcquired.at >= 4005 + 6000, `h2 took the key at ${bAcquired.at}, after it expired`);
  assert.equal(bHeld, bAcquired.at + T.takeoverDelayMs);
  assert.ok(BigInt(bAcquired.epoch!) > BigInt(a.seen[0]!.epoch ?? "0"));
  // Never both granted: h1's grant ended before h2's began.
  assert.ok(aLost < bHeld);
  await stopOnFakeTime(time, a, b);
});

Deno.test("on fake time: giving a service up deletes its key, so the other host takes it without waiting for the TTL", async () => {
  const time = new FakeTime(0);
  const store = new FakeEtcd(time);
  const a = fakeHost(store, time, "h1");
  const b = fakeHost(store, time, "h2");
  a.arbiter.want("web");
  await time.advance(4000);
  b.arbiter.want("web");
  await time.advance(100);
  const leaseA = a.arbiter.leaseId!;
  a.arbiter.unwant("web"); // The scheduler stopped the service; its address is gone.
  await time.advance(2000); // h2's next attempt.
  const took = b.seen.find((s) => s.state === "waiting-delay");
  assert.ok(took, "h2 took the key");
  assert.ok(took.at < store.expiresAt(leaseA)!, "before h1's lease (still alive) could expire");
  assert.equal(a.arbiter.status("web").state, "none");
  await stopOnFakeTime(time, a, b);
});

Deno.test("on fake time: a lease that expired (keepalive without TTL) makes the holder lost; a new want takes a new lease", async () => {
  const time = new FakeTime(0);
  const store = new FakeEtcd(time);
  const a = fakeHost(store, time, "h1");
  a.arbiter.want("web");
  await time.advance(5000);
  const first = a.arbiter.leaseId!;
  const epoch = a.arbiter.status("web").epoch!;
  store.revokeNow(first);
  await time.advance(1100);
  assert.equal(a.seen.at(-1)?.rule, "lease-expired");
  a.arbiter.want("web");
  assert.equal(
    a.arbiter.status("web").state,
    "lost",
    "nothing is taken before the address is gone",
  );
  a.arbiter.unwant("web");
  a.arbiter.want("web");
  await time.advance(3100);
  assert.equal(a.arbiter.verdict("web"), "grant");
  assert.notEqual(a.arbiter.leaseId, first);
  assert.ok(BigInt(a.arbiter.status("web").epoch!) > BigInt(epoch));
  await stopOnFakeTime(time, a);
});

Deno.test("on fake time: keep-if-peers-agree keeps the service without etcd while every peer agrees, and releases when one does not", async () => {
  const time = new FakeTime(0);
  const store = new FakeEtcd(time);
  const a = fakeHost(store, time, "h1", { policy: "keep-if-peers-agree" });
  a.arbiter.want("web");
  a.arbiter.setPeersAgree("web", true);
  await time.advance(5000);
  a.gw.down = true;
  await time.advance(10_000);
  const s = a.arbiter.status("web");
  assert.equal(s.state, "failsafe");
  assert.equal(s.verdict, "grant");
  assert.equal(a.firstAt("failsafe"), 9000);
  a.arbiter.setPeersAgree("web", false);
  assert.equal(a.arbiter.status("web").state, "lost");
  assert.equal(a.seen.at(-1)?.rule, "failsafe-disagree");
  await stopOnFakeTime(time, a);
});

Deno.test("on fake time: release (the default) lets go at the deadline although every peer agrees", async () => {
  const time = new FakeTime(0);
  const store = new FakeEtcd(time);
  const a = fakeHost(store, time, "h1");
  a.arbiter.want("web");
  a.arbiter.setPeersAgree("web", true);
  await time.advance(5000);
  a.gw.down = true;
  await time.advance(5000);
  assert.equal(a.arbiter.status("web").state, "lost");
  await stopOnFakeTime(time, a);
});

Deno.test("on fake time: after failsafe, etcd answers again: a free key is taken again at once; a taken one means lost", async (t) => {
  await t.step("the key is free: held again with a new epoch, no takeover delay", async () => {
    const time = new FakeTime(0);
    const store = new FakeEtcd(time);
    const a = fakeHost(store, time, "h1", { policy: "keep-if-peers-agree" });
    a.arbiter.want("web");
    a.arbiter.setPeersAgree("web", true);
    await time.advance(5000);
    const epoch = a.arbiter.status("web").epoch!;
    a.gw.down = true;
    await time.advance(7000); // Failsafe at 9000; etcd expires the lease at 10005.
    a.gw.down = false;
    await time.advance(1000);
    const s = a.arbiter.status("web");
    assert.equal(s.state, "held");
    assert.ok(a.seen.some((x) => x.rule === "reacquired"));
    assert.ok(a.seen.every((x) => x.state !== "lost"));
    assert.ok(BigInt(s.epoch!) > BigInt(epoch));
    await stopOnFakeTime(time, a);
  });
  await t.step("another host took the key meanwhile: lost", async () => {
    const time = new FakeTime(0);
    const store = new FakeEtcd(time);
    const a = fakeHost(store, time, "h1", { policy: "keep-if-peers-agree" });
    const b = fakeHost(store, time, "h2");
    a.arbiter.want("web");
    a.arbiter.setPeersAgree("web", true);
    await time.advance(5000);
    b.arbiter.want("web");
    a.gw.down = true;
    await time.advance(7000);
    assert.equal(b.arbiter.status("web").state, "waiting-delay");
    a.gw.down = false;
    await time.advance(1000);
    assert.equal(a.arbiter.status("web").state, "lost");
    assert.equal(a.seen.at(-1)?.rule, "failsafe-taken");
    await stopOnFakeTime(time, a, b);
  });
});

Deno.test("on fake time: services of one host share its lease; one confirmation covers every key, and a key lost is only that service's loss", async () => {
  const time = new FakeTime(0);
  const store = new FakeEtcd(time);
  const a = fakeHost(store, time, "h1");
  a.arbiter.want("web");
  a.arbiter.want("db");
  await time.advance(3100);
  assert.deepEqual(a.arbiter.statuses().map((s) => [s.service, s.verdict]), [
    ["db", "grant"],
    ["web", "grant"],
  ]);
  const grants = store.calls.filter((c) => c.op === "grant").length;
  assert.equal(grants, 1, "one lease for the host");
  assert.equal(store.keys.get("/failover/t/web")?.lease, store.keys.get("/failover/t/db")?.lease);
  await time.advance(4000);
  const confirmsPerKeepalive = store.calls.filter((c) => c.op === "confirm").length /
    keepalives(store, "h1").length;
  assert.equal(confirmsPerKeepalive, 1, "one confirmation per renewal, for both keys");
  // An operator deletes web's key: web is lost at the next renewal, db stays held.
  store.keys.delete("/failover/t/web");
  await time.advance(2000);
  assert.equal(a.arbiter.status("web").state, "lost");
  assert.equal(a.arbiter.status("db").state, "held");
  await stopOnFakeTime(time, a);
});

Deno.test("EtcdArbiter refuses a bad host, prefix, policy or timing", () => {
  const gw = {} as ArbiterGateway;
  assert.throws(() => new EtcdArbiter({ gateway: gw, host: "h 1", prefix: "/f/" }), /host name/);
  assert.throws(() => new EtcdArbiter({ gateway: gw, host: "h1", prefix: "f" }), /prefix/);
  assert.throws(
    () =>
      new EtcdArbiter({
        gateway: gw,
        host: "h1",
        prefix: "/f/",
        onArbiterLoss: "keep" as ArbiterLossPolicy,
      }),
    /onArbiterLoss/,
  );
  assert.throws(
    () => new EtcdArbiter({ gateway: gw, host: "h1", prefix: "/f/", timing: { ttlMs: 1500 } }),
    /whole seconds/,
  );
  const ok = new EtcdArbiter({ gateway: gw, host: "h1", prefix: "/f/" });
  assert.throws(() => ok.want("../x"), /service name/);
});

// ---------------------------------------------------------------------------------------------
// Two hosts on a REAL etcd: the safety claims.

const unavailable = await etcdUnavailable();
if (unavailable) console.log(`real-etcd arbiter tests skipped: ${unavailable}`);

/** Short timing for the tests: etcd's smallest TTL with its default election timeout is 2 s. */
const REAL = { ttlMs: 2000, renewMs: 600, timeoutMs: 500, marginMs: 300, takeoverDelayMs: 1500 };

function realHost(gateway: ArbiterGateway, host: string) {
  const seen: Seen[] = [];
  const log: string[] = [];
  const arbiter = new EtcdArbiter({
    gateway,
    host,
    prefix: "/failover/real/",
    timing: REAL,
    onChange: (s) => seen.push({ ...s, at: performance.now() }),
    log: (l) => log.push(`${Math.round(performance.now())} ${l}`),
  });
  arbiter.start();
  const firstAt = (state: ArbiterState, after = 0) =>
    seen.find((s) => s.state === state && s.at >= after)?.at ?? null;
  return { arbiter, seen, log, firstAt };
}

async function until(what: string, fn: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function realTest(
  name: string,
  fn: (etcd: Awaited<ReturnType<typeof startEtcd>>, trail: string[][]) => Promise<void>,
): void {
  Deno.test({
    name: name + (unavailable ? ` (skipped: ${unavailable})` : ""),
    ignore: unavailable !== null,
    async fn() {
      const etcd = await startEtcd();
      const trail: string[][] = [];
      try {
        await fn(etcd, trail);
      } catch (e) {
        (e as Error).message += "\n" + trail.map((l) => l.join("\n")).join("\n---\n");
        throw e;
      } finally {
        await etcd.stop();
      }
    },
  });
}

realTest(
  "on a real etcd, two hosts want one service: exactly one takes it; the other only once the key is gone",
  async (etcd, trail) => {
    const gw = () => new EtcdGateway({ endpoints: [etcd.endpoint], timeoutMs: 500 });
    const a = realHost(gw(), "h1");
    const b = realHost(gw(), "h2");
    trail.push(a.log, b.log);
    try {
      a.arbiter.want("web");
      b.arbiter.want("web");
      await until(
        "one host holds web",
        () => a.arbiter.verdict("web") === "grant" || b.arbiter.verdict("web") === "grant",
      );
      const [winner, loser, loserName] = a.arbiter.verdict("web") === "grant"
        ? [a, b, "h2"]
        : [b, a, "h1"];
      assert.equal(loser.arbiter.status("web").state, "acquiring", `${loserName} still waits`);
      assert.equal(loser.arbiter.status("web").holder, loserName === "h1" ? "h2" : "h1");
      assert.ok(
        !loser.seen.some((s) => s.state === "waiting-delay"),
        "the loser never had the key",
      );
      // The winner gives it up (its address is gone): the other takes it, with a higher epoch.
      const epoch = winner.arbiter.status("web").epoch!;
      winner.arbiter.unwant("web");
      const gaveUpAt = performance.now();
      await until("the other host holds web", () => loser.arbiter.verdict("web") === "grant");
      assert.ok(loser.firstAt("waiting-delay")! >= gaveUpAt);
      assert.ok(BigInt(loser.arbiter.status("web").epoch!) > BigInt(epoch));
      assert.equal(winner.arbiter.verdict("web"), "deny");
    } finally {
      await a.arbiter.stop();
      await b.arbiter.stop();
    }
  },
);

realTest(
  "on a real etcd, a holder cut off from etcd reports lost before its key expires and before the other host takes it",
  async (etcd, trail) => {
    const relay = startRelay(etcd.endpoint);
    const a = realHost(new EtcdGateway({ endpoints: [relay.endpoint], timeoutMs: 500 }), "h1");
    const b = realHost(new EtcdGateway({ endpoints: [etcd.endpoint], timeoutMs: 500 }), "h2");
    trail.push(a.log, b.log);
    try {
      a.arbiter.want("web");
      await until("h1 holds web", () => a.arbiter.verdict("web") === "grant");
      b.arbiter.want("web");
      await until("h2 sees h1 holding", () => b.arbiter.status("web").holder === "h1");
      const cutAt = performance.now();
      relay.cut(); // h1 cannot reach etcd; etcd goes on, and expires h1's lease on its own.
      await until("h2 holds web", () => b.arbiter.verdict("web") === "grant");
      const aLost = a.firstAt("lost", cutAt);
      const bTook = b.firstAt("waiting-delay", cutAt);
      const bHeld = b.firstAt("held", cutAt);
      assert.ok(aLost !== null && bTook !== null && bHeld !== null);
      assert.equal(a.seen.find((s) => s.state === "lost")?.rule, "deadline");
      const line = `cut at 0: h1 released at +${
        Math.round(aLost - cutAt)
      } ms, h2 took the key at +${Math.round(bTook - cutAt)} ms and held at +${
        Math.round(bHeld - cutAt)
      } ms`;
      console.log(line);
      assert.ok(aLost < bTook, line);
      assert.ok(bHeld > bTook);
    } finally {
      relay.heal();
      await a.arbiter.stop();
      await b.arbiter.stop();
      await relay.close();
    }
  },
);

realTest(
  "on a real etcd, revoking the holder's lease: the holder reports lost before the other host holds the service",
  async (etcd, trail) => {
    const ops = new EtcdGateway({ endpoints: [etcd.endpoint] });
    const a = realHost(new EtcdGateway({ endpoints: [etcd.endpoint], timeoutMs: 500 }), "h1");
    const b = realHost(new EtcdGateway({ endpoints: [etcd.endpoint], timeoutMs: 500 }), "h2");
    trail.push(a.log, b.log);
    try {
      a.arbiter.want("web");
      await until("h1 holds web", () => a.arbiter.verdict("web") === "grant");
      b.arbiter.want("web");
      await until("h2 sees h1 holding", () => b.arbiter.status("web").holder === "h1");
      const at = performance.now();
      assert.equal(await ops.revoke(a.arbiter.leaseId!), true); // The key is deleted at once.
      await until("h2 holds web", () => b.arbiter.verdict("web") === "grant");
      const aLost = a.firstAt("lost", at);
      const bHeld = b.firstAt("held", at);
      assert.ok(aLost !== null && bHeld !== null);
      const line = `revoked at 0: h1 reported lost at +${Math.round(aLost - at)} ms, h2 held at +${
        Math.round(bHeld - at)
      } ms`;
      console.log(line);
      assert.ok(aLost < bHeld, line);
      assert.ok(
        ["lease-expired", "key-lost"].includes(a.seen.find((s) => s.state === "lost")!.rule),
      );
    } finally {
      await a.arbiter.stop();
      await b.arbiter.stop();
    }
  },
);
