/**
 * `deno task demo` end to end: two simulated hosts on loopback, the primary killed and revived.
 * Asserts what a user watching it would notice: the standby took over, the primary reclaimed,
 * and the outage the client saw is a finite number (no timed bound: the machine is shared).
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;

function freePort(hostname: string): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("deno task demo: the standby takes over and the primary reclaims", async () => {
  const port = freePort("127.0.0.100");
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/demo.ts`, "--json", "--port", String(port)],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(180_000),
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `${stdout}\n${stderr}`);
  const r = JSON.parse(stdout);
  assert.equal(r.ok, true, r.error);
  assert.equal(r.takeover.from, "alpha");
  assert.equal(r.takeover.to, "beta");
  assert.ok(Number.isFinite(r.takeover.outageMs) && r.takeover.outageMs > 0, stdout);
  assert.equal(r.reclaim.to, "alpha");
  assert.ok(Number.isFinite(r.reclaim.outageMs) && r.reclaim.outageMs > 0, stdout);
  // The RECOVER handshake was visible on alpha's faild before the reclaim.
  const alpha = r.states.filter((s: { host: string }) => s.host === "alpha").map((
    s: { state: string },
  ) => s.state);
  assert.ok(alpha.includes("RECOVER"), alpha.join(" "));
  assert.ok(r.requests.answered > 0 && r.requests.answered <= r.requests.total);
  // Everything was cleaned up: nothing answers on the service's address any more.
  await assert.rejects(
    fetch(`http://127.0.0.100:${port}/`, { signal: AbortSignal.timeout(1000) }),
  );
});
