/**
 * A short run of the faild fuzz and soak harness (`deno task fuzz:faild`, bench/faild_fuzz.ts):
 * a few thousand hostile requests of every kind against a real faild process, with legitimate
 * pollers running. It fails if faild crashes, changes state, acknowledges an attack, answers
 * 500, fails a legitimate poll, or grows in memory beyond the harness's bound. The long run
 * (1 000 000 requests) and its figures are in docs/security.md, "faild".
 */
import assert from "node:assert/strict";
import type { FuzzReport } from "../bench/faild_fuzz.ts";

const ROOT = new URL("../", import.meta.url).pathname;

Deno.test("faild holds under a short fuzz run of every attack kind", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}bench/faild_fuzz.ts`, "--requests", "3000", "--json"],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(text.trim().startsWith("{"), `the harness printed no report: ${stderr.slice(-2000)}`);
  const report = JSON.parse(text) as FuzzReport;
  assert.deepEqual(report.failures, [], "the harness found failures");
  assert.equal(out.code, 0);
  assert.equal(report.kinds.length, 6);
  for (const k of report.kinds) {
    const answered = Object.values(k.outcomes).reduce((s, n) => s + n, 0);
    assert.ok(answered >= k.requests, `${k.kind}: ${answered} outcomes for ${k.requests} requests`);
    assert.equal(k.pollErrors, 0, `${k.kind}: legitimate polls failed`);
  }
  assert.ok(report.rssAfterMiB - report.rssBeforeMiB <= report.rssBoundMiB);
});
