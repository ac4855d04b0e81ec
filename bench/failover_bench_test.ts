/**
 * The failover benchmark's own logic (no lab, no root): the client-gap count of the stress suite,
 * the frontier bisection, and the refusal of bad options before anything starts.
 *
 * @module
 */
import assert from "node:assert/strict";
import { clientGaps, fastestPassing, main, parseLiveness } from "./failover_bench.ts";
import type { Attempt } from "../tests/lab/probe.ts";

function attempt(start: number, ok: boolean): Attempt {
  return { start, durationMs: ok ? 1 : 300, ok, who: ok ? "h1" : "-", error: ok ? "-" : "timeout" };
}

Deno.test("clientGaps: each run of failures is one outage, from the last answer to the next", () => {
  const gaps = clientGaps([
    attempt(50, true),
    attempt(0, true),
    attempt(10, false),
    attempt(20, false),
    attempt(30, true),
    attempt(40, false),
  ].concat([attempt(60, false), attempt(70, false), attempt(120, true)]));
  // Sorted: 0 ok, 10 ✗, 20 ✗, 30 ok, 40 ✗, 50 ok, 60 ✗, 70 ✗, 120 ok.
  assert.equal(gaps.outages, 3);
  assert.equal(gaps.longestMs, 70); // From 50 (last answer) to 120.
  assert.equal(gaps.failures, 5);
  assert.equal(gaps.attempts, 9);
});

Deno.test("clientGaps: an outage still open at the end of the window counts to its last attempt", () => {
  const gaps = clientGaps([attempt(0, true), attempt(10, false), attempt(500, false)]);
  assert.equal(gaps.outages, 1);
  assert.equal(gaps.longestMs, 500);
  assert.deepEqual(clientGaps([attempt(0, true), attempt(10, true)]), {
    outages: 0,
    longestMs: null,
    failures: 0,
    attempts: 2,
  });
});

Deno.test("fastestPassing: finds the fastest passing interval with at most log2(n + 1) runs", async () => {
  const settings = [20, 50, 100, 200, 500, 1000];
  for (const frontier of [...settings, null]) {
    const ran: number[] = [];
    const best = await fastestPassing(settings, (ms) => {
      assert.ok(!ran.includes(ms), `${ms} ms was run twice`);
      ran.push(ms);
      return Promise.resolve(frontier !== null && ms >= frontier);
    });
    assert.equal(best, frontier);
    assert.ok(ran.length <= 3, `${ran.length} runs for frontier ${frontier}: ${ran}`);
  }
  assert.equal(await fastestPassing([], () => Promise.resolve(true)), null);
});

Deno.test("main: bad options are refused with exit code 2 before any lab is built", async () => {
  const error = console.error;
  const said: string[] = [];
  console.error = (...a: unknown[]) => said.push(a.join(" "));
  try {
    assert.equal(await main(["--systems", "keepalived,vrrpd"]), 2);
    assert.equal(await main(["--faults", "linkdown,flood"]), 2);
    assert.equal(await main(["--stall-ms", "2000", "--stall-every-ms", "2000"]), 2);
    assert.equal(await main(["--stress-seconds", "0", "--frontier", "100,50"]), 2);
    assert.equal(await main(["--frontier", "5"]), 2);
    assert.equal(await main(["--stress-seconds", "1800"]), 2);
  } finally {
    console.error = error;
  }
  assert.match(
    said[0] ?? "",
    /Invalid --systems: vrrpd: expected keepalived, failover, failover\+liveness/,
  );
  assert.match(said[1] ?? "", /Invalid --faults: flood: expected linkdown, blackhole/);
  assert.match(said[2] ?? "", /Invalid --stall-ms: 2000: expected less than --stall-every-ms/);
  assert.match(said[3] ?? "", /Invalid --frontier: it needs the stress suite/);
  assert.match(
    said[4] ?? "",
    /Invalid --frontier: 5: expected comma-separated ms from 10 to 10000/,
  );
});

Deno.test("parseLiveness: INTERVALxFALL within bounds, anything else refused with what is allowed", () => {
  assert.deepEqual(parseLiveness("10x5"), { intervalMs: 10, fall: 5 });
  assert.deepEqual(parseLiveness("20x3"), { intervalMs: 20, fall: 3 });
  assert.deepEqual(parseLiveness("10x3:0"), { intervalMs: 10, fall: 3, stallGraceMs: 0 });
  assert.deepEqual(parseLiveness("10x3:2000"), { intervalMs: 10, fall: 3, stallGraceMs: 2000 });
  for (
    const bad of [
      "",
      "10",
      "10x",
      "x5",
      "5x3",
      "9x5",
      "10x0",
      "1001x5",
      "10x101",
      "10msx5",
      "-10x5",
      "10x5:",
      "10x5:60001",
    ]
  ) {
    assert.throws(() => parseLiveness(bad), /Invalid --liveness: .*expected INTERVALxFALL/, bad);
  }
});
