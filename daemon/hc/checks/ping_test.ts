import assert from "node:assert/strict";
import { pingArgv, probePing } from "./ping.ts";

Deno.test("pingArgv() passes the timeout to ping -W in seconds", () => {
  assert.deepEqual(pingArgv("198.18.0.1", 1500), [
    "/usr/bin/ping",
    "-c",
    "1",
    "-W",
    "1.5",
    "-n",
    "198.18.0.1",
  ]);
});

async function canPing(): Promise<boolean> {
  try {
    const out = await new Deno.Command("/usr/bin/ping", {
      args: ["-c", "1", "-W", "1", "-n", "127.0.0.1"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

const pingWorks = await canPing();

Deno.test({
  name: `ping check gets a reply from loopback${
    pingWorks ? "" : " (skipped: ping 127.0.0.1 does not work here)"
  }`,
  ignore: !pingWorks,
  async fn() {
    const r = await probePing({ host: "127.0.0.1", timeoutMs: 1000 }, AbortSignal.timeout(2000));
    assert.equal(r.ok, true, r.detail);
    assert.match(r.detail, /^reply from 127.0.0.1 in [0-9.]+ ms$/);
    assert.equal(typeof r.latencyMs, "number");
  },
});

Deno.test("ping check fails for a name that does not resolve", async () => {
  const r = await probePing(
    { host: "no-such-host.invalid", timeoutMs: 500 },
    AbortSignal.timeout(3000),
  );
  assert.equal(r.ok, false);
  assert.match(r.detail, /ping exit 2|timed out/);
});
