import assert from "node:assert/strict";
import { baseUrl, formatHost, formatHostPort, parseHostPort } from "./net.ts";

Deno.test("parseHostPort() reads every form the tools were given before one parser", async (t) => {
  await t.step("listen addresses: IPv4, IPv6, names, empty host, port 0", () => {
    const listen = { defaultHostname: "0.0.0.0", allowPortZero: true };
    assert.deepEqual(parseHostPort("127.0.0.1:8080", listen), {
      hostname: "127.0.0.1",
      port: 8080,
    });
    assert.deepEqual(parseHostPort("[::1]:0", listen), { hostname: "::1", port: 0 });
    assert.deepEqual(parseHostPort(":9000", listen), { hostname: "0.0.0.0", port: 9000 });
    assert.deepEqual(parseHostPort("node-1.example:7100"), {
      hostname: "node-1.example",
      port: 7100,
    });
  });
  await t.step("targets with a default port (hc's dns server=)", () => {
    assert.deepEqual(parseHostPort("198.18.0.53", { defaultPort: 53 }), {
      hostname: "198.18.0.53",
      port: 53,
    });
    assert.deepEqual(parseHostPort("[2001:db8::53]", { defaultPort: 53 }), {
      hostname: "2001:db8::53",
      port: 53,
    });
    assert.deepEqual(parseHostPort("::1", { defaultPort: 53 }), { hostname: "::1", port: 53 });
    assert.deepEqual(parseHostPort("[::1]:5353", { defaultPort: 53 }), {
      hostname: "::1",
      port: 5353,
    });
  });
  await t.step("refusals say what is wrong and what is expected", () => {
    assert.throws(
      () => parseHostPort("8080"),
      /Invalid address "8080": the port is missing; expected HOST:PORT/,
    );
    assert.throws(() => parseHostPort("h:99999"), /the port must be a number from 1 to 65535/);
    assert.throws(() => parseHostPort("h:0"), /from 1 to 65535/);
    assert.throws(() => parseHostPort(":80"), /the host is missing/);
    assert.throws(() => parseHostPort("::1:53"), /write an IPv6 address in brackets/);
    assert.throws(() => parseHostPort("[::1]x"), /in brackets must be followed by :PORT/);
    assert.throws(() => parseHostPort("[nothex]:1"), /"nothex" is not an IPv6 address/);
    assert.throws(() => parseHostPort("-oProxy=x:22"), /must be a name or an IP address/);
    assert.throws(() => parseHostPort("a b:22"), /must be a name or an IP address/);
    assert.throws(() => parseHostPort("x".repeat(400) + ":1"), /too long/);
  });
});

Deno.test("formatHost() brackets IPv6 once and leaves the rest alone", () => {
  assert.equal(formatHost("::1"), "[::1]");
  assert.equal(formatHost("[::1]"), "[::1]");
  assert.equal(formatHost("alpha"), "alpha");
  assert.equal(formatHostPort("198.18.0.1", 7100), "198.18.0.1:7100");
  assert.equal(baseUrl({ hostname: "fe80::1", port: 1848 }), "http://[fe80::1]:1848");
  // What parseHostPort reads, formatHostPort writes back.
  for (const text of ["[2001:db8::1]:7100", "127.0.0.1:1", "alpha:65535"]) {
    const { hostname, port } = parseHostPort(text);
    assert.equal(formatHostPort(hostname, port), text);
  }
});
