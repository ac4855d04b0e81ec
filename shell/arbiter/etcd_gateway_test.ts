/**
 * The etcd gateway client against a REAL etcd 3.4 (Debian `etcd-server`), one pitfall of the
 * JSON gateway per test, plus its error handling against hostile HTTP servers. Skips, naming the
 * package, when etcd is not installed.
 */
import assert from "node:assert/strict";
import {
  EtcdGateway,
  EtcdProtocolError,
  EtcdRefusedError,
  EtcdUnreachableError,
  type FollowUpdate,
  fromBase64,
  isLeaseNotFound,
  prefixRangeEnd,
  toBase64,
} from "./etcd_gateway.ts";
import { etcdUnavailable, freePort, startEtcd, startRelay, type TestEtcd } from "./_test_etcd.ts";

const unavailable = await etcdUnavailable();
if (unavailable) console.log(`etcd gateway tests skipped: ${unavailable}`);

function etcdTest(name: string, fn: (etcd: TestEtcd, gw: EtcdGateway) => Promise<void>): void {
  Deno.test({
    name: name + (unavailable ? ` (skipped: ${unavailable})` : ""),
    ignore: unavailable !== null,
    async fn() {
      const etcd = await startEtcd();
      try {
        await fn(etcd, new EtcdGateway({ endpoints: [etcd.endpoint], timeoutMs: 3000 }));
      } catch (e) {
        (e as Error).message += `\netcd log:\n${etcd.log()}`;
        throw e;
      } finally {
        await etcd.stop();
      }
    },
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** An HTTP server on 127.0.0.1 answering every request with `handler`. */
function hostile(handler: (req: Request) => Response | Promise<Response>) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  return { endpoint: `http://127.0.0.1:${server.addr.port}`, stop: () => server.shutdown() };
}

Deno.test("base64 helpers and the prefix range end follow etcd's rules", () => {
  assert.equal(fromBase64(toBase64("/failover/wéb"), "k"), "/failover/wéb");
  assert.equal(fromBase64(prefixRangeEnd("/a/"), "end"), "/a0");
  assert.equal(prefixRangeEnd("\u00ff"), btoa("\xc3\xc0")); // UTF-8 c3 bf: the last byte + 1.
  assert.throws(() => fromBase64("%%%", "value"), EtcdProtocolError);
});

Deno.test("the gateway refuses bad endpoints and bad lease ids before any request", async () => {
  assert.throws(() => new EtcdGateway({ endpoints: [] }), TypeError);
  assert.throws(() => new EtcdGateway({ endpoints: ["https://x:2379"] }), /http:\/\/host:port/);
  assert.throws(() => new EtcdGateway({ endpoints: ["http://x:2379/v3"] }), /http:\/\/host:port/);
  const gw = new EtcdGateway({ endpoints: ["http://127.0.0.1:1"] });
  await assert.rejects(() => gw.keepAlive("12.5"), TypeError);
  await assert.rejects(() => gw.keepAlive("9223372036854775808"), TypeError); // > int64.
  await assert.rejects(() => gw.grant(0), RangeError);
});

etcdTest(
  "grant() returns the TTL etcd granted: a 1 s lease comes back raised to 2 s",
  async (_e, gw) => {
    // etcd raises a TTL below ceil(1.5 × election timeout) = 2 s with its default timings.
    const lease = await gw.grant(1);
    assert.equal(lease.ttlSeconds, 2);
    const ttl = await gw.timeToLive(lease.id);
    assert.equal(ttl.grantedTtlSeconds, 2);
    const kept = await gw.keepAlive(lease.id);
    assert.equal(kept.expired, false);
    assert.equal(kept.ttlSeconds, 2);
  },
);

etcdTest(
  "lease ids above 2^53 are kept exactly (as strings) through every call",
  async (_e, gw) => {
    const lease = await gw.grant(30);
    // etcd's ids start with the member id in the high bits: far above Number.MAX_SAFE_INTEGER.
    assert.ok(BigInt(lease.id) > 2n ** 53n, `lease id ${lease.id} exceeds 2^53`);
    assert.notEqual(String(Number(lease.id)), lease.id, "a number would have changed it");
    const r = await gw.acquire("/t/big", "h1", lease.id);
    assert.ok(r.acquired);
    const { kvs } = await gw.range("/t/big");
    assert.equal(kvs[0]?.lease, lease.id);
    assert.deepEqual((await gw.timeToLive(lease.id)).keys, ["/t/big"]);
    assert.equal((await gw.keepAlive(lease.id)).id, lease.id);
    assert.equal((await gw.confirm(["/t/big"], lease.id)).allOwned, true);
  },
);

etcdTest(
  "keepAlive() of a revoked or unknown lease answers without a TTL: expired, not an error",
  async (_e, gw) => {
    const lease = await gw.grant(30);
    assert.equal(await gw.revoke(lease.id), true);
    const gone = await gw.keepAlive(lease.id);
    assert.deepEqual([gone.expired, gone.ttlSeconds], [true, 0]);
    const never = await gw.keepAlive("1");
    assert.equal(never.expired, true);
    assert.equal((await gw.timeToLive(lease.id)).ttlSeconds, -1);
    // Revoking again: etcd says "lease not found"; revoke() reports false.
    assert.equal(await gw.revoke(lease.id), false);
  },
);

etcdTest("keepAlive() of a lease that expired on its own answers without a TTL", async (_e, gw) => {
  const lease = await gw.grant(1); // Raised to 2 s.
  await gw.acquire("/t/exp", "h1", lease.id);
  // etcd checks expiry every 500 ms: wait TTL + 1.5 s.
  await sleep(lease.ttlSeconds * 1000 + 1500);
  const r = await gw.keepAlive(lease.id);
  assert.equal(r.expired, true);
  assert.deepEqual((await gw.range("/t/exp")).kvs, [], "the key went with the lease");
});

etcdTest("revoke() deletes the keys attached to the lease", async (_e, gw) => {
  const lease = await gw.grant(30);
  assert.ok((await gw.acquire("/t/a", "h1", lease.id)).acquired);
  assert.ok((await gw.acquire("/t/b", "h1", lease.id)).acquired);
  assert.equal((await gw.range("/t/", { prefix: true })).kvs.length, 2);
  assert.equal(await gw.revoke(lease.id), true);
  assert.deepEqual((await gw.range("/t/", { prefix: true })).kvs, []);
});

etcdTest(
  "acquire() takes a free key once: the epoch is its create revision; a second lease gets the holder",
  async (_e, gw) => {
    const a = await gw.grant(30);
    const b = await gw.grant(30);
    const first = await gw.acquire("/t/web", "h1", a.id);
    assert.ok(first.acquired);
    const kv = (await gw.range("/t/web")).kvs[0];
    assert.equal(first.epoch, kv?.createRevision, "epoch = create_revision");
    assert.equal(first.epoch, first.header.revision);
    const second = await gw.acquire("/t/web", "h2", b.id);
    assert.equal(second.acquired, false);
    assert.ok(!second.acquired);
    assert.equal(second.holder?.value, "h1");
    assert.equal(second.holder?.lease, a.id);
    // A retry by the holder (its first answer lost) finds its own key: acquired, same epoch.
    const retry = await gw.acquire("/t/web", "h1", a.id);
    assert.ok(retry.acquired);
    assert.equal(retry.epoch, first.epoch);
    assert.equal(retry.recovered, true);
    // Once the key is gone, the other takes it with a higher epoch.
    await gw.revoke(a.id);
    const third = await gw.acquire("/t/web", "h2", b.id);
    assert.ok(third.acquired);
    assert.ok(BigInt(third.epoch) > BigInt(first.epoch));
  },
);

etcdTest(
  "acquire() with a lease that no longer exists is refused with 'lease not found'",
  async (_e, gw) => {
    const lease = await gw.grant(30);
    await gw.revoke(lease.id);
    const err = await gw.acquire("/t/x", "h1", lease.id).catch((e) => e);
    assert.ok(err instanceof EtcdRefusedError, String(err));
    assert.ok(isLeaseNotFound(err));
    assert.match(err.message, /lease not found/);
  },
);

etcdTest(
  "confirm() checks the lease of every key in one transaction and names the keys lost",
  async (_e, gw) => {
    const mine = await gw.grant(30);
    const other = await gw.grant(30);
    await gw.acquire("/t/1", "h1", mine.id);
    await gw.acquire("/t/2", "h1", mine.id);
    assert.equal((await gw.confirm(["/t/1", "/t/2"], mine.id)).allOwned, true);
    // /t/2 is deleted and taken by another lease; /t/3 never existed.
    assert.equal(await gw.deleteIfOwn("/t/2", other.id), false, "not the other's to delete");
    assert.equal(await gw.deleteIfOwn("/t/2", mine.id), true);
    await gw.acquire("/t/2", "h2", other.id);
    const r = await gw.confirm(["/t/1", "/t/2", "/t/3"], mine.id);
    assert.equal(r.allOwned, false); // `succeeded` omitted on the wire: false.
    assert.deepEqual([...r.owned], ["/t/1"]);
    assert.equal(r.current.get("/t/2")?.value, "h2");
    assert.equal(r.current.get("/t/3"), null);
  },
);

etcdTest(
  "watch() reports created, PUT (type omitted on the wire) and DELETE events",
  async (_e, gw) => {
    const ac = new AbortController();
    const seen: string[] = [];
    const watching = (async () => {
      for await (const m of gw.watch("/w/", { prefix: true, prevKv: true, signal: ac.signal })) {
        if (m.created) seen.push("created");
        for (const e of m.events) {
          seen.push(`${e.type} ${e.kv.key} ${e.prevKv?.value ?? "-"}`);
          if (e.type === "DELETE") ac.abort();
        }
      }
    })();
    while (!seen.includes("created")) await sleep(10);
    await gw.put("/w/k", "v1");
    await gw.put("/w/k", "v2");
    const lease = await gw.grant(30);
    await gw.put("/w/k", "v3", { lease: lease.id });
    await gw.revoke(lease.id); // The revoke deletes it: a DELETE event.
    await watching;
    assert.deepEqual(seen, [
      "created",
      "PUT /w/k -",
      "PUT /w/k v1",
      "PUT /w/k v2",
      "DELETE /w/k v3",
    ]);
  },
);

etcdTest(
  "a watch from a compacted revision is cancelled with compact_revision, and follow() re-reads",
  async (_e, gw) => {
    const h1 = await gw.put("/c/k", "old");
    await gw.put("/c/k", "new");
    const h3 = await gw.put("/c/other", "x");
    await gw.compact(h3.revision);
    const messages = [];
    for await (const m of gw.watch("/c/k", { startRevision: h1.revision })) messages.push(m);
    const last = messages.at(-1);
    assert.equal(last?.canceled, true);
    assert.equal(last?.compactRevision, h3.revision);
    // follow() resuming from the compacted revision re-syncs with a read.
    const ac = new AbortController();
    const updates: FollowUpdate[] = [];
    for await (
      const u of gw.follow("/c/", { prefix: true, signal: ac.signal, fromRevision: h1.revision })
    ) {
      updates.push(u);
      if (u.kind === "sync") ac.abort();
    }
    const sync = updates[0];
    assert.equal(sync?.kind, "sync");
    assert.deepEqual(
      sync?.kind === "sync" ? sync.kvs.map((kv) => `${kv.key}=${kv.value}`) : [],
      ["/c/k=new", "/c/other=x"],
    );
  },
);

etcdTest("follow() reads first, then yields the changes after that read", async (_e, gw) => {
  await gw.put("/f/a", "1");
  const ac = new AbortController();
  const got: string[] = [];
  const following = (async () => {
    for await (const u of gw.follow("/f/", { prefix: true, signal: ac.signal })) {
      if (u.kind === "sync") got.push(`sync ${u.kvs.map((k) => k.key).join(",")}`);
      else {
        for (const e of u.events) got.push(`${e.type} ${e.kv.key}`);
        if (u.events.some((e) => e.type === "DELETE")) ac.abort();
      }
    }
  })();
  while (got.length === 0) await sleep(10);
  await gw.put("/f/b", "2");
  const lease = await gw.grant(30);
  await gw.acquire("/f/c", "h1", lease.id);
  await gw.deleteIfOwn("/f/c", lease.id);
  await following;
  assert.deepEqual(got, ["sync /f/a", "PUT /f/b", "PUT /f/c", "DELETE /f/c"]);
});

etcdTest(
  "a call fails over to the next endpoint when the first does not answer, and prefers it next time",
  async (etcd) => {
    const dead = `http://127.0.0.1:${freePort()}`;
    const gw = new EtcdGateway({ endpoints: [dead, etcd.endpoint], timeoutMs: 2000 });
    const lease = await gw.grant(10);
    assert.equal(gw.preferred, etcd.endpoint);
    assert.equal((await gw.keepAlive(lease.id)).expired, false);
  },
);

etcdTest(
  "a member cut off (black hole) makes the call fail as unreachable within its time limit",
  async (etcd) => {
    const relay = startRelay(etcd.endpoint);
    try {
      const gw = new EtcdGateway({ endpoints: [relay.endpoint], timeoutMs: 300 });
      const lease = await gw.grant(10);
      relay.cut();
      const err = await gw.keepAlive(lease.id).catch((e) => e);
      assert.ok(err instanceof EtcdUnreachableError, String(err));
      assert.match(err.message, /no answer|Cannot reach/);
      relay.heal();
      // A new connection works again.
      assert.equal(
        (await new EtcdGateway({ endpoints: [relay.endpoint] }).keepAlive(lease.id)).expired,
        false,
      );
    } finally {
      await relay.close();
    }
  },
);

Deno.test("nothing listening: EtcdUnreachableError naming the endpoint", async () => {
  const ep = `http://127.0.0.1:${freePort()}`;
  const err = await new EtcdGateway({ endpoints: [ep], timeoutMs: 500 }).grant(5).catch((e) => e);
  assert.ok(err instanceof EtcdUnreachableError, String(err));
  assert.ok(err.message.includes(ep), err.message);
});

Deno.test("a 503 'no leader' is unreachable (the next member is tried); a 400 is refused", async () => {
  let calls = 0;
  const noLeader = hostile(() => {
    calls++;
    return Response.json({
      error: "etcdserver: no leader",
      message: "etcdserver: no leader",
      code: 14,
    }, {
      status: 503,
    });
  });
  const bad = hostile(() =>
    Response.json({ error: "etcdserver: bad thing", message: "bad thing", code: 3 }, {
      status: 400,
    })
  );
  try {
    const e1 = await new EtcdGateway({ endpoints: [noLeader.endpoint, noLeader.endpoint] }).grant(5)
      .catch((e) => e);
    assert.ok(e1 instanceof EtcdUnreachableError, String(e1));
    assert.equal(calls, 2, "both endpoints tried");
    assert.match(e1.message, /no leader/);
    const e2 = await new EtcdGateway({ endpoints: [bad.endpoint, noLeader.endpoint] }).grant(5)
      .catch((e) => e);
    assert.ok(e2 instanceof EtcdRefusedError, String(e2));
    assert.equal(e2.grpcCode, 3);
    assert.equal(calls, 2, "a refusal is final: no other member is asked");
  } finally {
    await noLeader.stop();
    await bad.stop();
  }
});

Deno.test("answers that are not etcd's are protocol errors: not JSON, wrong types, too big", async () => {
  const cases: [string, () => Response][] = [
    ["not JSON", () => new Response("hello")],
    ["a lease id that is not an int64", () => Response.json({ ID: "12x", TTL: "5" })],
    ["a TTL of the wrong type", () => Response.json({ ID: "5", TTL: true })],
    ["a body above the bound", () => new Response("x".repeat(5000))],
  ];
  for (const [what, handler] of cases) {
    const s = hostile(handler);
    try {
      const gw = new EtcdGateway({ endpoints: [s.endpoint], maxBodyBytes: 4096 });
      const err = await gw.grant(5).catch((e) => e);
      assert.ok(err instanceof EtcdProtocolError, `${what}: ${err}`);
    } finally {
      await s.stop();
    }
  }
});

Deno.test("a stream line above the bound is a protocol error; a stream error line is typed", async () => {
  const long = hostile(() => new Response("{" + " ".repeat(10_000) + "\n"));
  const streamErr = hostile(() =>
    new Response(
      JSON.stringify({
        error: { grpc_code: 14, http_code: 503, message: "etcdserver: no leader" },
      }) +
        "\n",
    )
  );
  try {
    const e1 = await new EtcdGateway({ endpoints: [long.endpoint], maxBodyBytes: 4096 })
      .keepAlive("5").catch((e) => e);
    assert.ok(e1 instanceof EtcdProtocolError, String(e1));
    const e2 = await new EtcdGateway({ endpoints: [streamErr.endpoint] }).keepAlive("5")
      .catch((e) => e);
    assert.ok(e2 instanceof EtcdUnreachableError, String(e2));
  } finally {
    await long.stop();
    await streamErr.stop();
  }
});

Deno.test("a server that never answers: unreachable after the time limit, nothing left running", async () => {
  const pending: (() => void)[] = [];
  const s = hostile(() =>
    new Promise<Response>((resolve) => pending.push(() => resolve(new Response(""))))
  );
  try {
    const err = await new EtcdGateway({ endpoints: [s.endpoint], timeoutMs: 200 }).grant(5)
      .catch((e) => e);
    assert.ok(err instanceof EtcdUnreachableError, String(err));
  } finally {
    for (const p of pending) p();
    await s.stop();
  }
});
