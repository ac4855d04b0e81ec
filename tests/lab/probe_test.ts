import assert from "node:assert/strict";
import { analyzeOutage, type Attempt, parseAttempt, Probe } from "./probe.ts";

function a(start: number, ok: boolean, who = ok ? "h1" : "-"): Attempt {
  return { start, durationMs: 1, ok, who, error: ok ? "-" : "timeout" };
}

Deno.test("parseAttempt() reads the client's lines and rejects anything else", () => {
  assert.deepEqual(parseAttempt("1764000000000 3 1 h2 -"), {
    start: 1764000000000,
    durationMs: 3,
    ok: true,
    who: "h2",
    error: "-",
  });
  assert.equal(parseAttempt("1764000000000 300 0 - timeout")?.ok, false);
  assert.equal(parseAttempt("listening 0.0.0.0:8080 as h1"), null);
  assert.equal(parseAttempt("1 2 yes h1 -"), null);
  assert.equal(parseAttempt(""), null);
});

Deno.test("analyzeOutage() measures from the last answer before the gap to the first after it", () => {
  const attempts = [a(0, true), a(10, true), a(20, false), a(30, false), a(40, true, "h2")];
  const r = analyzeOutage(attempts, 15, 100);
  assert.equal(r.lastOkBefore, 10);
  assert.equal(r.firstFailure, 20);
  assert.equal(r.restoredAt, 40);
  assert.equal(r.outageMs, 30);
  assert.equal(r.sinceFaultMs, 25);
  assert.equal(r.servedBy, "h2");
  assert.equal(r.failures, 2);
  assert.deepEqual(r.answeredBy, ["h1", "h2"], "h1 answered just before the fault");
});

Deno.test("analyzeOutage() counts a flap after a first recovery as part of the outage", () => {
  const attempts = [
    a(0, true),
    a(10, false),
    a(20, true, "h2"),
    a(30, false),
    a(40, true, "h2"),
    a(50, true, "h2"),
  ];
  const r = analyzeOutage(attempts, 5, 100);
  assert.equal(r.restoredAt, 40, "stably restored only after the last failure");
  assert.equal(r.outageMs, 40);
});

Deno.test("analyzeOutage() reports no outage when nothing failed, and null when never restored", () => {
  const fine = analyzeOutage([a(0, true), a(10, true), a(20, true, "h2")], 5, 100);
  assert.equal(fine.outageMs, 0);
  assert.equal(fine.failures, 0);
  const down = analyzeOutage([a(0, true), a(10, false), a(20, false)], 5, 100);
  assert.equal(down.restoredAt, null);
  assert.equal(down.outageMs, null);
  assert.equal(down.servedBy, null);
});

Deno.test("analyzeOutage() sorts attempts that completed out of order (timeouts report late)", () => {
  const r = analyzeOutage([a(0, true), a(30, true, "h2"), a(10, false), a(20, false)], 5, 100);
  assert.equal(r.outageMs, 30);
  assert.equal(r.servedBy, "h2");
});

Deno.test("Probe.waitServedBy() needs consecutive answers from the host, and times out otherwise", async () => {
  const p = new Probe(300);
  const waiting = p.waitServedBy("h2", 1000, 3);
  p.feed("1 1 1 h2 -");
  p.feed("2 1 0 - timeout");
  p.feed("3 1 1 h2 -");
  p.feed("4 1 1 h2 -");
  p.feed("5 1 1 h2 -");
  assert.equal(await waiting, true);
  assert.equal(await p.waitServedBy("h1", 20), false);
  assert.equal(p.attempts.length, 5);
  assert.deepEqual(p.between(2, 4).map((x) => x.start), [2, 3, 4]);
});
