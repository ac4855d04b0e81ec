import { deepEqual as assertEquals, throws } from "node:assert/strict";
import { ScriptRegistry } from "./registry.ts";

import { handlers, registry } from "./_test_registry.ts";

Deno.test("host() and service() build the declaration with defaults", () => {
  const r = registry();
  r.service("web", { masters: ["alpha"], slaves: ["beta"], interval: "500ms", ...handlers });
  r.trap(() => {});
  assertEquals(r.validate(), []);
  assertEquals(r.decl(), {
    hosts: [
      { name: "alpha", address: "127.0.0.1", port: 7100, protocol: "http", key: null },
      { name: "beta", address: "::1", port: 7200, protocol: "https", key: "cluster" },
    ],
    services: [{
      name: "web",
      masters: ["alpha"],
      slaves: ["beta"],
      intervalMs: 500,
      fall: 3,
      rise: 2,
      preempt: true,
      graceMs: 1000,
      timeouts: { start: 30000, stop: 30000, reclaim: 30000 },
      handlers: ["start", "stop"],
    }],
    traps: 1,
  });
});

Deno.test("declarations are validated with errors that name the problem", async (t) => {
  await t.step("duplicate names", () => {
    const r = registry();
    throws(
      () => r.host("alpha", { address: "127.0.0.3" }),
      /^Error: Cannot declare host alpha: it is declared twice$/,
    );
    r.service("web", { masters: ["alpha"], interval: 1000, ...handlers });
    throws(
      () => r.service("web", { masters: ["alpha"], interval: 1000, ...handlers }),
      /Cannot declare service web: it is declared twice/,
    );
  });
  await t.step("bad names and addresses", () => {
    const r = new ScriptRegistry();
    throws(
      () => r.host("../etc", { address: "1.2.3.4" }),
      /^TypeError: Invalid host name "\.\.\/etc"/,
    );
    throws(
      () => r.host("a", { address: "1.2.3.4; rm" }),
      /Invalid host a: address must be an IP address or a DNS name/,
    );
    throws(
      () => r.host("a", { address: "1.2.3.4", port: 70000 }),
      /^RangeError: Invalid host a: port must be 1-65535, got 70000/,
    );
    throws(
      () => r.host("a", { address: "1.2.3.4", protocol: "ftp" as "http" }),
      /protocol must be "http" or "https"/,
    );
  });
  await t.step("bad interval, hysteresis and timeouts", () => {
    const r = registry();
    throws(
      () => r.service("a", { masters: ["alpha"], interval: 0, ...handlers }),
      /^RangeError: Invalid interval of service a: 0 ms is outside 10-3600000 ms/,
    );
    throws(
      () => r.service("b", { masters: ["alpha"], interval: "often", ...handlers }),
      /Invalid interval of service b: "often" is not a duration/,
    );
    throws(
      () => r.service("c", { masters: ["alpha"], interval: 1000, fall: 0, ...handlers }),
      /Invalid service c: fall must be an integer 1-100, got 0/,
    );
    throws(
      () =>
        r.service("d", {
          masters: ["alpha"],
          interval: 1000,
          timeouts: { begin: 5 } as never,
          ...handlers,
        }),
      /timeouts\.begin is not a handler/,
    );
    throws(
      () => r.service("e", { masters: ["alpha"], interval: 1000, timeouts: "2h", ...handlers }),
      /timeouts\.start of service e: 7200000 ms is outside/,
    );
    throws(
      () => r.service("f", { interval: 1000, ...handlers } as never),
      /Invalid service f: masters must be a list of host names/,
    );
    throws(
      () => r.service("g", { masters: [], interval: 1000, ...handlers }),
      /masters must name at least one host/,
    );
    throws(
      () => r.service("h", { masters: ["alpha"], slaves: ["alpha"], interval: 1000, ...handlers }),
      /alpha cannot be both master and slave/,
    );
    throws(
      () =>
        r.service(
          "i",
          { masters: ["alpha"], interval: 1000, start: () => Promise.resolve("UP") } as never,
        ),
      /Invalid service i: stop must be a function returning the new state/,
    );
  });
  await t.step("unknown hosts are found when the script has loaded", () => {
    const r = registry();
    r.service("web", { masters: ["alpha", "gamma"], interval: 1000, ...handlers });
    assertEquals(r.validate(), [
      'Invalid service web: masters names host "gamma", which is not declared (declared: alpha, beta)',
    ]);
    assertEquals(new ScriptRegistry().validate(), ["The script declares no service"]);
  });
  await t.step("nothing can be declared once the script has loaded", () => {
    const r = registry();
    r.seal();
    throws(
      () => r.host("late", { address: "1.2.3.4" }),
      /Cannot declare host late: the script has already loaded \(declare hosts, services and traps while the script loads, not later\)/,
    );
  });
});

Deno.test("host() takes an opt-in liveness probe and refuses bad ones clearly", async (t) => {
  await t.step(
    "interval, fall and stallGrace are declared in ms; fall defaults to 5, stallGrace to 1 s",
    () => {
      const r = new ScriptRegistry();
      r.host("alpha", { address: "198.18.0.1", liveness: { interval: "10ms", fall: 3 } });
      r.host("beta", { address: "198.18.0.2", liveness: { interval: "1s" } });
      r.host("delta", { address: "198.18.0.4", liveness: { interval: "20ms", stallGrace: 0 } });
      r.host("gamma", { address: "198.18.0.3" });
      const hosts = r.decl().hosts;
      assertEquals(hosts[0]!.liveness, { intervalMs: 10, fall: 3, stallGraceMs: 1000 });
      assertEquals(hosts[1]!.liveness, { intervalMs: 1000, fall: 5, stallGraceMs: 1000 });
      assertEquals(hosts[2]!.liveness, { intervalMs: 20, fall: 5, stallGraceMs: 0 });
      assertEquals("liveness" in hosts[3]!, false);
    },
  );
  await t.step("out-of-range and malformed values name the option and the range", () => {
    const r = new ScriptRegistry();
    throws(
      () => r.host("a", { address: "198.18.0.1", liveness: { interval: "1ms" } }),
      /^RangeError: Invalid liveness\.interval of host a: "1ms" is out of range: a duration here is from 10ms to 10s \(under 10 ms/,
    );
    throws(
      () => r.host("a", { address: "198.18.0.1", liveness: { interval: "5ms" } }),
      /^RangeError: Invalid liveness\.interval of host a: "5ms" is out of range: a duration here is from 10ms to 10s \(under 10 ms iputils ping busy-waits between requests: a whole CPU core per peer\)$/,
    );
    throws(
      () => r.host("a", { address: "198.18.0.1", liveness: { interval: "11s" } }),
      /from 10ms to 10s$/,
    );
    throws(
      () => r.host("a", { address: "198.18.0.1", liveness: { interval: "10ms", fall: 0 } }),
      /^RangeError: Invalid host a: liveness\.fall must be an integer 1-100, got 0$/,
    );
    throws(
      () => r.host("a", { address: "198.18.0.1", liveness: { interval: "10ms", fall: 2.5 } }),
      /liveness\.fall must be an integer 1-100, got 2\.5/,
    );
    throws(
      () => r.host("a", { address: "198.18.0.1", liveness: {} as { interval: string } }),
      /^TypeError: Invalid host a: liveness\.interval is required/,
    );
    throws(
      () =>
        r.host("a", {
          address: "198.18.0.1",
          liveness: { interval: "10ms", count: 3 } as { interval: string },
        }),
      /^TypeError: Invalid host a: liveness\.count is not an option \(use interval, fall, stallGrace\)$/,
    );
    throws(
      () =>
        r.host("a", { address: "198.18.0.1", liveness: { interval: "10ms", stallGrace: "2m" } }),
      /^RangeError: Invalid liveness\.stallGrace of host a: "2m" is out of range: a duration here is from 0ms to 1m$/,
    );
    throws(
      () =>
        r.host("a", { address: "198.18.0.1", liveness: { interval: "10ms", stallGrace: "soon" } }),
      /^TypeError: Invalid liveness\.stallGrace of host a: "soon" is not a duration/,
    );
    throws(
      () => r.host("a", { address: "198.18.0.1", liveness: "10ms" as unknown as { interval: 1 } }),
      /^TypeError: Invalid host a: liveness must be an object/,
    );
    // Nothing was declared by the refused calls.
    assertEquals(r.decl().hosts, []);
  });
});

Deno.test("arbiter() declares the cluster's etcd arbiter once, with the timing checked", async (t) => {
  const EPS = ["http://198.18.1.11:2379", "http://198.18.1.12:2379/", "http://[2001:db8::1]:2379"];
  await t.step("defaults derive from the TTL and the endpoints are normalised", () => {
    const r = registry();
    r.arbiter({ endpoints: EPS });
    assertEquals(r.decl().arbiter, {
      endpoints: [
        "http://198.18.1.11:2379",
        "http://198.18.1.12:2379",
        "http://[2001:db8::1]:2379",
      ],
      prefix: "/failover/",
      ttlMs: 6000,
      renewMs: 2000,
      timeoutMs: 1000,
      marginMs: 1000,
      takeoverDelayMs: 3000,
      onArbiterLoss: "release",
    });
  });
  await t.step("a script without arbiter() sends no arbiter field", () => {
    assertEquals("arbiter" in registry().decl(), false);
  });
  await t.step("a timing that breaks renew + 2 × timeout + margin ≤ TTL is refused", () => {
    throws(
      () => registry().arbiter({ endpoints: EPS, ttl: "3s", renew: "1s", timeout: "1s" }),
      /^RangeError: Invalid arbiter timing: .*renewMs \+ 2 × timeoutMs \+ marginMs = 3500 ms exceeds ttlMs 3000 ms/,
    );
    throws(
      () => registry().arbiter({ endpoints: EPS, ttl: "6s", takeoverDelay: "1s" }),
      /takeoverDelayMs 1000 is below renewMs \+ marginMs/,
    );
    throws(() => registry().arbiter({ endpoints: EPS, ttl: "2.5s" }), /must be whole seconds/);
  });
  await t.step("bad endpoints, prefix, policy or options are named", () => {
    throws(() => registry().arbiter({ endpoints: [] }), /endpoints must list 1-16 etcd members/);
    throws(
      () => registry().arbiter({ endpoints: ["https://user:pw@e1:2379/v3"] }),
      /^TypeError: Invalid arbiter endpoints\[0\]: "https:\/\/user:pw@e1:2379\/v3" is not an etcd endpoint \(expected "http:\/\/host:port"/,
    );
    throws(() => registry().arbiter({ endpoints: ["http://e1:99999"] }), /is not an etcd endpoint/);
    throws(
      () => registry().arbiter({ endpoints: ["http://e1:2379", "http://e1:2379/"] }),
      /lists a member twice/,
    );
    throws(() => registry().arbiter({ endpoints: EPS, prefix: "failover" }), /prefix must start/);
    throws(
      // deno-lint-ignore no-explicit-any
      () => registry().arbiter({ endpoints: EPS, onArbiterLoss: "keep" as any }),
      /onArbiterLoss must be "release" or "keep-if-peers-agree", got "keep"/,
    );
    throws(
      () => registry().arbiter({ endpoints: EPS, tll: "6s" } as never),
      /unknown option tll/,
    );
  });
  await t.step("declared twice", () => {
    const r = registry();
    r.arbiter({ endpoints: EPS });
    throws(
      () => r.arbiter({ endpoints: EPS }),
      /^Error: Cannot declare the arbiter: it is declared twice/,
    );
  });
});
