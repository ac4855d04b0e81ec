import assert from "node:assert/strict";
import { failoverSnapshot, sampleSnapshot } from "../../tests/fake_failsh.ts";
import { fmtStatus, renderText } from "./line.ts";

Deno.test("renderText lists hosts, services with decisions, addresses and events", () => {
  const text = renderText(failoverSnapshot(sampleSnapshot()));
  assert.match(text, /^failsh alpha {2}at 2026-11-24 20:00:03Z/);
  assert.match(text, /beta\s+NO\s+3\s/);
  assert.match(text, /web\s+UP\s+slave\s+beta\s+alpha\s+1\.0s/);
  assert.match(text, /decision: start: master beta is FAIL/);
  assert.match(text, /handler: {2}start -> UP in 300ms/);
  assert.match(text, /198\.18\.0\.100\/24\s+eth0\s+web/);
  assert.match(text, /address\s+web: took 198\.18\.0\.100\/24 on eth0/);
  assert.match(text, /web\s+UP\s+UP\?/, "the unreachable host's last state is marked");
});

Deno.test("renderText removes control characters from untrusted text", () => {
  const s = sampleSnapshot();
  s.events.push({ at: s.now, kind: "info", service: null, host: null, message: "a\nFAKE LINE" });
  assert.match(renderText(s), /a\?FAKE LINE/);
});

Deno.test("fmtStatus says that a lost connection is retried", () => {
  assert.equal(
    fmtStatus({ kind: "lost", error: "connection refused", attempt: 2, retryInMs: 500, since: 0 }),
    "connection lost: connection refused; retrying in 500ms (attempt 2)",
  );
});

Deno.test("renderText shows the arbiter's state and epoch of a service, and nothing without one", () => {
  const s = failoverSnapshot(sampleSnapshot());
  assert.doesNotMatch(renderText(s), /arbiter:/);
  s.services[0]!.arbiter = {
    state: "held",
    verdict: "grant",
    epoch: "9007199254740993",
    holder: null,
    reason: "holding",
    deadlineInMs: 4200,
  };
  assert.match(renderText(s), /arbiter: {2}held, epoch 9007199254740993 \(4\.2s left\)/);
});
