import assert from "node:assert/strict";
import { LivenessJudge, parsePingLine, type PingEvent } from "./judge.ts";

Deno.test("parsePingLine() reads replies, unanswered requests and ICMP errors of iputils ping", async (t) => {
  await t.step("a reply with ping's timestamp and the round-trip time", () => {
    assert.deepEqual(
      parsePingLine("[1796133094.347496] 64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.041 ms"),
      { kind: "reply", seq: 1, at: 1796133094347, rttMs: 0.041 },
    );
  });
  await t.step("an IPv6 reply and a reply without -D", () => {
    assert.deepEqual(
      parsePingLine("64 bytes from 2001:db8::1: icmp_seq=65535 ttl=64 time=12.5 ms"),
      { kind: "reply", seq: 65535, at: null, rttMs: 12.5 },
    );
  });
  await t.step("-O's unanswered request and an ICMP error count as missing", () => {
    assert.deepEqual(parsePingLine("[1796133094.644585] no answer yet for icmp_seq=1"), {
      kind: "missing",
      seq: 1,
      at: 1796133094645,
    });
    assert.deepEqual(
      parsePingLine("[1796133097.1] From 198.18.0.2 icmp_seq=3 Destination Host Unreachable"),
      { kind: "missing", seq: 3, at: 1796133097100 },
    );
  });
  await t.step("headers, statistics, warnings and garbage are ignored", () => {
    for (
      const line of [
        "PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.",
        "--- 127.0.0.1 ping statistics ---",
        "5 packets transmitted, 5 received, 0% packet loss, time 4005ms",
        "ping: sendmsg: Network is unreachable",
        "[1] no answer yet for icmp_seq=99999999",
        "",
        "x".repeat(600),
      ]
    ) assert.equal(parsePingLine(line), null, line);
  });
});

function reply(seq: number, at: number): PingEvent {
  return { kind: "reply", seq, at, rttMs: 0.05 };
}
function missing(seq: number, at: number): PingEvent {
  return { kind: "missing", seq, at };
}

Deno.test("LivenessJudge judges a peer's kernel by ping's sequence numbers", async (t) => {
  await t.step(
    "a peer that never answered stays unknown, however many requests go unanswered",
    () => {
      const j = new LivenessJudge({ intervalMs: 10, fall: 5 });
      for (let s = 1; s <= 50; s++) assert.equal(j.feed(missing(s, s * 10), 0), false);
      assert.equal(j.status().state, "unknown");
    },
  );
  await t.step("an answering kernel is silent after exactly `fall` unanswered requests", () => {
    const j = new LivenessJudge({ intervalMs: 10, fall: 5 });
    assert.equal(j.feed(reply(1, 1000), 1000), true);
    assert.equal(j.status().state, "alive");
    for (let s = 2; s <= 5; s++) {
      assert.equal(j.feed(missing(s, 1000 + (s - 1) * 10 + 2), 0), false);
    }
    assert.equal(j.status().state, "alive");
    assert.equal(j.feed(missing(6, 1052), 0), true);
    assert.deepEqual(
      [j.status().state, j.status().unanswered, j.status().silentMs],
      ["silent", 5, 52],
    );
  });
  await t.step("a reply makes a silent kernel alive again at once", () => {
    const j = new LivenessJudge({ intervalMs: 10, fall: 2 });
    j.feed(reply(1, 0), 0);
    j.feed(missing(2, 10), 0);
    j.feed(missing(3, 20), 0);
    assert.equal(j.status().state, "silent");
    assert.equal(j.feed(reply(4, 40), 40), true);
    assert.deepEqual([j.status().state, j.status().unanswered], ["alive", 0]);
  });
  await t.step("the same request reported twice (-O, then an ICMP error) counts once", () => {
    const j = new LivenessJudge({ intervalMs: 10, fall: 3 });
    j.feed(reply(1, 0), 0);
    j.feed(missing(2, 10), 0);
    j.feed(missing(2, 3000), 0);
    j.feed(missing(3, 20), 0);
    assert.deepEqual([j.status().state, j.status().unanswered], ["alive", 2]);
  });
  await t.step("sequence numbers wrap at 65536 without a false silence", () => {
    const j = new LivenessJudge({ intervalMs: 10, fall: 3 });
    j.feed(reply(65534, 0), 0);
    j.feed(reply(65535, 10), 10);
    j.feed(reply(0, 20), 20);
    j.feed(missing(1, 30), 0);
    assert.deepEqual([j.status().state, j.status().unanswered], ["alive", 1]);
    j.feed(missing(2, 40), 0);
    j.feed(missing(3, 50), 0);
    assert.deepEqual([j.status().state, j.status().unanswered], ["silent", 3]);
  });
  await t.step(
    "a stall of failsh is no silence: lines read late but in order keep it alive",
    () => {
      const j = new LivenessJudge({ intervalMs: 10, fall: 3 });
      // failsh's event loop stalled 500 ms; ping kept its timing and the pipe kept its lines.
      const readAt = 5_500;
      for (let s = 1; s <= 50; s++) j.feed(reply(s, 5_000 + s * 10), readAt);
      assert.deepEqual([j.status().state, j.status().unanswered], ["alive", 0]);
    },
  );
  await t.step("without timestamps the silence is unanswered requests × interval", () => {
    const j = new LivenessJudge({ intervalMs: 20, fall: 2 });
    j.feed({ kind: "reply", seq: 1, at: null, rttMs: null }, 0);
    j.feed({ kind: "missing", seq: 2, at: null }, 0);
    j.feed({ kind: "missing", seq: 3, at: null }, 0);
    assert.deepEqual([j.status().state, j.status().silentMs], ["silent", 40]);
  });
});
