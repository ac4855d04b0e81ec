import assert from "node:assert/strict";
import type { FailshSnapshot } from "../../lib/types.ts";
import { failoverSnapshot, sampleSnapshot, startFakeFailsh } from "../../tests/fake_failsh.ts";
import {
  normalizeBaseUrl,
  parseSnapshot,
  SnapshotStream,
  type StreamStatus,
  validateSnapshot,
} from "./stream.ts";

Deno.test("validateSnapshot names the field that is wrong", () => {
  assert.equal(validateSnapshot(sampleSnapshot()).host, "alpha");
  assert.throws(() => validateSnapshot({ host: "a" }), /now must be a number/);
  assert.throws(() => parseSnapshot("<html>"), /not JSON/);
  const bad = sampleSnapshot() as unknown as { hosts: unknown[] };
  bad.hosts[1] = { name: "b" };
  assert.throws(() => validateSnapshot(bad), /hosts\[1\]\.reachable must be a boolean/);
});

Deno.test("normalizeBaseUrl accepts host:port and refuses other schemes", () => {
  assert.equal(normalizeBaseUrl("127.0.0.1:1848"), "http://127.0.0.1:1848");
  assert.equal(normalizeBaseUrl("http://h:1/mon/"), "http://h:1/mon");
  assert.throws(() => normalizeBaseUrl("ftp://h"), /scheme must be http or https/);
  assert.throws(() => normalizeBaseUrl("http://h/?a=1"), /no query/);
});

Deno.test("SnapshotStream delivers the snapshot at connect and each change, and nothing else", async () => {
  const fake = startFakeFailsh({ keepaliveMs: 20 });
  const got: FailshSnapshot[] = [];
  const statuses: string[] = [];
  const second = Promise.withResolvers<void>();
  const stream = new SnapshotStream(fake.url, {
    onSnapshot: (s) => {
      got.push(s);
      if (got.length === 2) second.resolve();
    },
    onStatus: (s) => statuses.push(s.kind),
  });
  try {
    await fake.waitClients(1);
    // Keepalives flow every 20 ms; none of them may look like an update.
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(got.length, 1);
    fake.set(failoverSnapshot(fake.snapshot));
    await second.promise;
    assert.equal(got[1]?.services.find((s) => s.name === "web")?.state, "UP");
    assert.deepEqual(statuses, ["connecting", "connected"]);
  } finally {
    stream.close();
    await stream.done;
    await fake.close();
  }
});

Deno.test("SnapshotStream shows a lost connection and reconnects with backoff", async () => {
  const fake = startFakeFailsh();
  const statuses: StreamStatus[] = [];
  let snapshots = 0;
  let waiter: { count: number; resolve: () => void } | null = null;
  const waitSnapshots = (count: number) =>
    new Promise<void>((resolve) => {
      waiter = { count, resolve };
      if (snapshots >= count) resolve();
    });
  const stream = new SnapshotStream(fake.url, {
    minBackoffMs: 20,
    maxBackoffMs: 80,
    onSnapshot: () => {
      snapshots++;
      if (waiter && snapshots >= waiter.count) waiter.resolve();
    },
    onStatus: (s) => statuses.push(s),
  });
  try {
    await waitSnapshots(1);
    await fake.stop();
    // While the port is closed, attempts fail with a visible reason and growing delays.
    await new Promise((r) => setTimeout(r, 400));
    const lost = statuses.filter((s) => s.kind === "lost") as Extract<
      StreamStatus,
      { kind: "lost" }
    >[];
    assert.ok(lost.length >= 3, `expected several lost states, got ${lost.length}`);
    assert.match(lost[1]!.error, /refused|reset|closed/);
    assert.ok(lost.at(-1)!.attempt > lost[0]!.attempt);
    assert.ok(lost.at(-1)!.retryInMs > lost[0]!.retryInMs, "the backoff grows");
    assert.ok(lost.every((s) => s.retryInMs <= 80 * 1.2), "the backoff is capped");
    fake.restart();
    await waitSnapshots(2);
    assert.equal(stream.status.kind, "connected");
  } finally {
    stream.close();
    await stream.done;
    await fake.close();
  }
  assert.equal(statuses.at(-1)?.kind, "closed");
});

Deno.test("SnapshotStream reports a server that is not a monitor port", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("hello", { headers: { "content-type": "text/plain" } }),
  );
  let lost = "";
  const stream = new SnapshotStream(`http://127.0.0.1:${server.addr.port}`, {
    maxAttempts: 1,
    onSnapshot: () => {},
    onStatus: (s) => {
      if (s.kind === "lost") lost = s.error;
    },
  });
  await stream.done;
  await server.shutdown();
  assert.match(lost, /is not an event stream/);
});
