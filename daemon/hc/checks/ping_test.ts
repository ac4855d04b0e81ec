import assert from "node:assert/strict";
import { pingArgv, probePing } from "./ping.ts";
import { needs } from "../../../tests/_programs.ts";

/** Why the tests that run ping skip (iputils-ping is not on a bare machine), or "". */
const NO_PING = needs({ programs: ["ping"] });

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

const pingWorks = NO_PING === "" && await canPing();
const SKIP_LOOPBACK = NO_PING ||
  (pingWorks ? "" : " (skipped: ping 127.0.0.1 does not work here: no ICMP socket or raw socket)");

Deno.test({
  name: `ping check gets a reply from loopback${SKIP_LOOPBACK}`,
  ignore: SKIP_LOOPBACK !== "",
  async fn() {
    const r = await probePing({ host: "127.0.0.1", timeoutMs: 1000 }, AbortSignal.timeout(2000));
    assert.equal(r.ok, true, r.detail);
    assert.match(r.detail, /^reply from 127.0.0.1 in [0-9.]+ ms$/);
    assert.equal(typeof r.latencyMs, "number");
  },
});

Deno.test({
  name: `ping check fails for a name that does not resolve${NO_PING}`,
  ignore: NO_PING !== "",
  async fn() {
    const r = await probePing(
      { host: "no-such-host.invalid", timeoutMs: 500 },
      AbortSignal.timeout(3000),
    );
    assert.equal(r.ok, false);
    assert.match(r.detail, /ping exit 2|timed out/);
  },
});
