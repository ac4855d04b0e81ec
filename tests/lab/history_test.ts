import assert from "node:assert/strict";
import {
  checkHistory,
  formatHistory,
  type History,
  parseAnswer,
  parseArping,
  parseMonitorLine,
  parseTimestamped,
  requestsFromProbe,
} from "./history.ts";

const VIP = "198.18.7.100";

function history(over: Partial<History>): History {
  return {
    address: VIP,
    hosts: ["h1", "h2"],
    from: 0,
    to: 10_000,
    initial: [
      { host: "h1", address: true, carrier: true },
      { host: "h2", address: false, carrier: true },
    ],
    addresses: [],
    carriers: [],
    requests: [],
    arp: [],
    macs: { "aa:aa:aa:aa:aa:01": "h1", "aa:aa:aa:aa:aa:02": "h2" },
    ...over,
  };
}

Deno.test("parseMonitorLine() reads the kernel's address and carrier events and nothing else", () => {
  const t = "[2026-12-01T10:30:21.491789]";
  const at = new Date("2026-12-01T10:30:21").getTime() + 491.789;
  assert.deepEqual(
    parseMonitorLine(`${t} 3: eth0    inet ${VIP}/24 scope global eth0`, "h1", VIP),
    {
      kind: "address",
      at,
      host: "h1",
      op: "add",
    },
  );
  assert.deepEqual(
    parseMonitorLine(`${t} Deleted 3: eth0    inet ${VIP}/24 scope global eth0`, "h1", VIP),
    { kind: "address", at, host: "h1", op: "del" },
  );
  const down =
    `${t} 3: eth0@if7: <NO-CARRIER,BROADCAST,MULTICAST,UP,M-DOWN> mtu 1500 state LOWERLAYERDOWN`;
  assert.deepEqual(parseMonitorLine(down, "h1", VIP), {
    kind: "carrier",
    at,
    host: "h1",
    carrier: false,
  });
  const up = `${t} 3: eth0@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP`;
  assert.deepEqual(parseMonitorLine(up, "h1", VIP), {
    kind: "carrier",
    at,
    host: "h1",
    carrier: true,
  });
  // Another address, another device, continuation lines, lines without a timestamp: ignored.
  assert.equal(
    parseMonitorLine(`${t} 3: eth0    inet 198.18.7.1/24 scope global eth0`, "h1", VIP),
    null,
  );
  assert.equal(
    parseMonitorLine(`${t} 4: eth1    inet ${VIP}/24 scope global eth1`, "h1", VIP),
    null,
  );
  assert.equal(
    parseMonitorLine(`${t} 4: eth1@if9: <BROADCAST,LOWER_UP> mtu 1500`, "h1", VIP),
    null,
  );
  assert.equal(parseMonitorLine("       valid_lft forever preferred_lft forever", "h1", VIP), null);
  assert.equal(parseMonitorLine(`3: eth0    inet ${VIP}/24`, "h1", VIP), null);
  assert.equal(
    parseTimestamped("[2026-12-01T10:30:21.5] x")?.at,
    new Date("2026-12-01T10:30:21").getTime() + 500,
  );
});

Deno.test("parseArping() and parseAnswer() read the prober's and the client's lines", () => {
  const out = `ARPING ${VIP} from 198.18.7.50 eth0
Unicast reply from ${VIP} [AA:AA:AA:AA:AA:01]  0.551ms
Unicast reply from ${VIP} [AA:AA:AA:AA:AA:02]  0.607ms
Unicast reply from 198.18.7.9 [AA:AA:AA:AA:AA:09]  0.607ms
Sent 1 probes (1 broadcast(s))
Received 2 response(s)`;
  assert.deepEqual(parseArping(out, VIP), ["aa:aa:aa:aa:aa:01", "aa:aa:aa:aa:aa:02"]);
  assert.deepEqual(parseAnswer("h1@42"), { host: "h1", epoch: "42" });
  assert.deepEqual(parseAnswer("h1"), { host: "h1", epoch: null });
  assert.deepEqual(parseAnswer("h1@x"), { host: "h1@x", epoch: null });
  const r = requestsFromProbe([
    { start: 10, durationMs: 3, ok: true, who: "h2@7", error: "-" },
    { start: 20, durationMs: 300, ok: false, who: "-", error: "timeout" },
  ]);
  assert.deepEqual(r[0], {
    client: "client",
    start: 10,
    end: 13,
    ok: true,
    host: "h2",
    epoch: "7",
  });
  assert.equal(r[1]?.host, null);
});

Deno.test("I1: an overlap of holders is found and sized; the largest of several is reported", () => {
  const r = checkHistory(history({
    addresses: [
      { at: 4000, host: "h2", op: "add" },
      { at: 4500, host: "h1", op: "del" },
      { at: 6000, host: "h1", op: "add" },
      { at: 7200, host: "h2", op: "del" },
    ],
  }));
  assert.equal(r.i1.ok, false);
  assert.equal(r.i1.largestOverlapMs, 1200);
  assert.equal(r.i1.totalOverlapMs, 1700);
  assert.deepEqual(r.i1.overlaps.map((o) => [o.from, o.to, o.hosts]), [
    [4000, 4500, ["h1", "h2"]],
    [6000, 7200, ["h1", "h2"]],
  ]);
  assert.deepEqual(r.i1.intervals.h1, [[0, 4500], [6000, 10_000]]);
  assert.equal(r.ok, false);
});

Deno.test("I1: a hand-over where one deletes when the other adds is no overlap (events in any order)", () => {
  const r = checkHistory(history({
    addresses: [{ at: 4000, host: "h2", op: "add" }, { at: 4000, host: "h1", op: "del" }],
  }));
  assert.equal(r.i1.ok, true);
  assert.equal(r.i1.largestOverlapMs, 0);
  assert.equal(r.ok, true);
});

Deno.test("I1: an address on a link without carrier holds nothing; the address-only overlap is still shown", () => {
  const r = checkHistory(history({
    carriers: [{ at: 3000, host: "h1", carrier: false }, { at: 8000, host: "h1", carrier: true }],
    addresses: [
      { at: 4000, host: "h2", op: "add" },
      { at: 8300, host: "h2", op: "del" },
    ],
  }));
  // h1 keeps the VIP on its dead link until the heal at 8000; h2 lets go at 8300.
  assert.equal(r.i1.largestOverlapMs, 300, "only after the carrier came back");
  assert.equal(r.i1.addressOnlyLargestOverlapMs, 4300);
});

Deno.test("I2: a probe window answered by two MACs is reported, named by host", () => {
  const r = checkHistory(history({
    arp: [
      { start: 100, end: 200, macs: ["aa:aa:aa:aa:aa:01"] },
      { start: 300, end: 320, macs: ["aa:aa:aa:aa:aa:01", "aa:aa:aa:aa:aa:02"] },
      { start: 500, end: 600, macs: [] },
    ],
  }));
  assert.equal(r.i2.ok, false);
  assert.equal(r.i2.windows, 3);
  assert.equal(r.i2.doubleWindows, 1);
  assert.deepEqual(r.i2.examples[0]?.answered, [
    "h1 (aa:aa:aa:aa:aa:01)",
    "h2 (aa:aa:aa:aa:aa:02)",
  ]);
});

Deno.test("I3: an epoch going back for a client is reported, in the order the answers came", () => {
  const req = (start: number, end: number, host: string, epoch: string | null, client = "c1") => ({
    client,
    start,
    end,
    ok: true,
    host,
    epoch,
  });
  const ok = checkHistory(history({
    requests: [
      req(0, 50, "h1", "5"),
      req(10, 20, "h1", "5"),
      req(30, 60, "h2", "9"),
      req(40, 70, "h2", "9"),
      req(45, 80, "h1", null), // No epoch: not counted.
      req(5, 90, "h1", "5", "c2"), // Another client.
    ],
  }));
  assert.equal(ok.i3.ok, true);
  assert.equal(ok.i3.withEpoch, 5);
  const bad = checkHistory(history({
    requests: [req(0, 10, "h1", "5"), req(20, 30, "h2", "12"), req(25, 40, "h1", "5")],
  }));
  assert.equal(bad.i3.ok, false);
  assert.deepEqual(bad.i3.regressions, [{
    client: "c1",
    at: 40,
    epoch: "5",
    after: "12",
    host: "h1",
  }]);
});

Deno.test("L: exactly one holder within the bound after a heal: met, missed, and never", async (t) => {
  const overlapUntil = (end: number) =>
    history({
      addresses: [{ at: 2000, host: "h2", op: "add" }, { at: end, host: "h2", op: "del" }],
    });
  await t.step("the other holder lets go 600 ms after the heal: met", () => {
    const r = checkHistory(overlapUntil(5600), { heals: [5000], boundMs: 1000 });
    assert.equal(r.l.ok, true);
    assert.deepEqual(r.l.heals, [{ at: 5000, convergedAfterMs: 600, holder: "h1", changes: 1 }]);
  });
  await t.step("it lets go 2 s after the heal, the bound is 1 s: missed", () => {
    const r = checkHistory(overlapUntil(7000), { heals: [5000], boundMs: 1000 });
    assert.equal(r.l.ok, false);
    assert.equal(r.l.heals[0]?.convergedAfterMs, null);
  });
  await t.step("nobody holds after the heal: missed", () => {
    const r = checkHistory(
      history({ addresses: [{ at: 1000, host: "h1", op: "del" }] }),
      { heals: [5000], boundMs: 1000 },
    );
    assert.equal(r.l.ok, false);
  });
  await t.step("a flip after converging counts as a change and restarts the count", () => {
    const r = checkHistory(
      history({
        addresses: [
          { at: 2000, host: "h2", op: "add" },
          { at: 5200, host: "h2", op: "del" },
          { at: 5400, host: "h2", op: "add" },
          { at: 5500, host: "h1", op: "del" },
        ],
      }),
      { heals: [5000], boundMs: 1000 },
    );
    assert.deepEqual(r.l.heals[0], { at: 5000, convergedAfterMs: 500, holder: "h2", changes: 3 });
  });
});

Deno.test("formatHistory() prints one line per invariant with its figures", () => {
  const r = checkHistory(
    history({
      addresses: [{ at: 4000, host: "h2", op: "add" }, { at: 4500, host: "h1", op: "del" }],
    }),
    { heals: [4200], boundMs: 1000 },
  );
  const text = formatHistory(r, "case");
  assert.match(text, /^case \(10000 ms recorded\)/);
  assert.match(text, /I1 holders never overlap\s+VIOLATED\s+largest 500 ms/);
  assert.match(text, /I2 one MAC per ARP window\s+ok/);
  assert.match(text, /L one holder after a heal\s+ok\s+h2 after 300 ms/);
  assert.doesNotThrow(() => JSON.parse(JSON.stringify(r)));
});
