/**
 * The dns check against Debian's dnsmasq on 127.0.0.1 and a free port, started by the test
 * (`--no-resolv --no-hosts --address=/www.example.test/198.18.0.10`): the right answer passes, a
 * wrong expectation and NXDOMAIN fail, a stopped server fails with a timeout, and the web check
 * depending on it is BLOCKED with dns as root cause.
 */
import assert from "node:assert/strict";
import { HealthChecker } from "../daemon/hc/checker.ts";
import { parseHcfile } from "../daemon/hc/hcfile.ts";
import { probeDns } from "../daemon/hc/checks/dns.ts";
import { startDnsmasq, startHttpServer } from "../daemon/hc/_test_servers.ts";
import { memoryLogger, waitFor } from "../daemon/hc/_test_util.ts";
import { needs } from "./_programs.ts";

const SKIP = needs({ programs: ["dnsmasq"] });

Deno.test({
  name: "dns check against a real dnsmasq" + SKIP,
  ignore: SKIP !== "",
  async fn(t) {
    const dnsmasq = await startDnsmasq();
    const server = { host: "127.0.0.1", port: dnsmasq.port };
    const ask = (
      name: string,
      typeName: string,
      type: number,
      expect: string | null,
      rcode = 0,
      tcp = false,
    ) =>
      probeDns(
        { server, name, type, typeName, expect, rcode, timeoutMs: 1000, tcp },
        AbortSignal.timeout(1000),
      );
    let stopped = false;
    try {
      await t.step("the configured address is answered", async () => {
        const r = await ask("www.example.test", "A", 1, "198.18.0.10");
        assert.equal(r.ok, true, r.detail);
        assert.match(r.detail, /^A www.example.test: 198.18.0.10 in \d+ ms$/);
      });
      await t.step("the same query over TCP (tcp=yes) is answered", async () => {
        const r = await ask("www.example.test", "A", 1, "198.18.0.10", 0, true);
        assert.equal(r.ok, true, r.detail);
        assert.match(r.detail, /^A www.example.test: 198.18.0.10 in \d+ ms$/);
        const nx = await ask("nope.example.test", "A", 1, null, 0, true);
        assert.match(nx.detail, /expected NOERROR, got (NXDOMAIN|REFUSED)/);
      });
      await t.step("a TXT record is answered", async () => {
        const r = await ask("txt.example.test", "TXT", 16, "hello hc");
        assert.equal(r.ok, true, r.detail);
      });
      await t.step("a wrong expectation fails", async () => {
        const r = await ask("www.example.test", "A", 1, "198.18.0.11");
        assert.equal(r.ok, false);
        assert.match(r.detail, /198.18.0.10 .*expected 198.18.0.11/);
      });
      await t.step("an unknown name fails (NXDOMAIN or refused), unless expected", async () => {
        const r = await ask("nope.example.test", "A", 1, null);
        assert.equal(r.ok, false);
        assert.match(r.detail, /expected NOERROR, got (NXDOMAIN|REFUSED)/);
      });
      await t.step("a check depending on dns is BLOCKED when dnsmasq stops", async () => {
        const web = startHttpServer();
        const { config } = parseHcfile(
          [
            "defaults interval=100ms timeout=100ms rise=1 fall=2",
            `dns:\n\tdns server=127.0.0.1:${dnsmasq.port} name=www.example.test expect=198.18.0.10`,
            `web: dns\n\thttp url=${web.url}/`,
            "",
          ].join("\n"),
        );
        const hc = new HealthChecker(config, { name: "t", logger: memoryLogger().logger });
        try {
          hc.start();
          await waitFor("both UP", () => hc.snapshot().summary.UP === 2);
          await dnsmasq.stop();
          stopped = true;
          await waitFor("dns FAIL", () => hc.check("dns")?.state === "FAIL");
          assert.equal(hc.check("dns")!.lastResult!.detail, "timed out after 100 ms");
          await waitFor("web BLOCKED", () => hc.check("web")?.state === "BLOCKED");
          assert.equal(hc.check("web")!.rootCause, "dns");
        } finally {
          await hc.stop();
          await web.close();
        }
      });
    } finally {
      if (!stopped) await dnsmasq.stop();
    }
  },
});
