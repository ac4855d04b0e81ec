import assert from "node:assert/strict";
import { probeCommand } from "./command.ts";
import { runBounded } from "./_process.ts";

Deno.test("command check passes on the expected exit code only", async () => {
  const ok = await probeCommand(
    { argv: ["/usr/bin/true"], exit: 0, timeoutMs: 2000 },
    AbortSignal.timeout(2000),
  );
  assert.equal(ok.ok, true, ok.detail);
  const bad = await probeCommand(
    { argv: ["/usr/bin/false"], exit: 0, timeoutMs: 2000 },
    AbortSignal.timeout(2000),
  );
  assert.equal(bad.ok, false);
  assert.equal(bad.detail, "exit 1, expected exit 0");
  const inverted = await probeCommand(
    { argv: ["/usr/bin/false"], exit: 1, timeoutMs: 2000 },
    AbortSignal.timeout(2000),
  );
  assert.equal(inverted.ok, true);
});

Deno.test("command check kills a program that runs past its timeout", async () => {
  const started = Date.now();
  const r = await probeCommand(
    { argv: ["/usr/bin/sleep", "30"], exit: 0, timeoutMs: 200 },
    AbortSignal.timeout(5000),
  );
  assert.equal(r.ok, false);
  assert.equal(r.detail, "killed after 200 ms");
  assert.ok(Date.now() - started < 5000, "sleep 30 was not killed");
});

Deno.test("command check reports a missing program", async () => {
  const r = await probeCommand(
    { argv: ["/nonexistent/prog"], exit: 0, timeoutMs: 500 },
    AbortSignal.timeout(500),
  );
  assert.equal(r.ok, false);
  assert.match(r.detail, /^cannot run \/nonexistent\/prog: /);
});

Deno.test("runBounded() keeps only the start of a large output", async () => {
  const out = await runBounded(["/usr/bin/head", "-c", "100000", "/dev/zero"], { timeoutMs: 5000 });
  assert.equal(out.code, 0);
  assert.equal(out.stdout.length, 16 * 1024);
});
