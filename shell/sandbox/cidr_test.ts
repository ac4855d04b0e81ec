import { deepEqual as assertEquals, ok as assert } from "node:assert/strict";
import { cidrContains, isLoopbackHost, parseCidr } from "./cidr.ts";

Deno.test("parseCidr() parses and canonicalizes IPv4 and IPv6 addresses", () => {
  assertEquals(parseCidr("198.18.0.1/24")?.text, "198.18.0.1/24");
  assertEquals(parseCidr("198.18.0.1")?.prefixLength, 32);
  assertEquals(parseCidr("2001:DB8:0:0::1/64")?.text, "2001:db8::1/64");
  assertEquals(parseCidr("::1")?.text, "::1/128");
  assertEquals(parseCidr("::")?.text, "::/128");
  assertEquals(parseCidr("::ffff:198.18.0.1/128")?.text, "::ffff:c612:1/128");
  assertEquals(parseCidr("2001:db8:0:1:0:0:0:1")?.ip, "2001:db8:0:1::1");
  for (
    const bad of [
      "198.18.0.256/24",
      "198.18.0/24",
      "198.18.0.1/33",
      "01.2.3.4",
      "1:2:3:4:5:6:7:8:9",
      "2001:db8::1::2",
      "host/24",
      "198.18.0.1/",
    ]
  ) {
    assertEquals(parseCidr(bad), null, bad);
  }
  assertEquals(parseCidr("198.18.0.1", { requirePrefix: true }), null);
});

Deno.test("cidrContains() tells whether an address lies in a prefix", () => {
  const p4 = parseCidr("198.18.0.0/24")!;
  assert(cidrContains(p4, parseCidr("198.18.0.255")!));
  assert(!cidrContains(p4, parseCidr("198.18.1.0")!));
  assert(!cidrContains(p4, parseCidr("2001:db8::1")!), "families never mix");
  const p6 = parseCidr("2001:db8:1::/48")!;
  assert(cidrContains(p6, parseCidr("2001:db8:1:ffff::1/64")!));
  assert(!cidrContains(p6, parseCidr("2001:db8:2::1/64")!));
  assert(cidrContains(parseCidr("0.0.0.0/0")!, parseCidr("203.0.113.9")!));
});

Deno.test("parseCidr() refuses what ipaddr.js would read leniently", () => {
  // Octal, hex and short IPv4 forms, zone ids, over-long groups, and the deprecated
  // IPv4-compatible "::a.b.c.d", which ipaddr.js reads as the IPv4-mapped "::ffff:a.b.c.d".
  for (
    const bad of [
      "0x7f.0.0.1",
      "0177.0.0.1",
      "127.1",
      "2130706433",
      "fe80::1%eth0/64",
      "00001::1",
      "::1.2.3.4",
      "::ffff:01.2.3.4",
      "::ffff:0x1.2.3.4",
      "198.18.0.1/024",
      " 198.18.0.1",
    ]
  ) {
    assertEquals(parseCidr(bad), null, bad);
  }
  assertEquals(parseCidr("0:0:0:0:0:0:1.2.3.4")?.ip, "::102:304");
  assertEquals(parseCidr("1::198.18.0.1/64")?.text, "1::c612:1/64");
});

Deno.test("an IPv4-mapped address is IPv6: never inside an IPv4 rule", () => {
  const mapped = parseCidr("::ffff:198.18.0.7/128")!;
  assertEquals(mapped.family, 6);
  assert(!cidrContains(parseCidr("198.18.0.0/24")!, mapped));
  assert(cidrContains(parseCidr("::ffff:198.18.0.0/120")!, mapped));
});

Deno.test("isLoopbackHost() knows loopback listen hosts", () => {
  for (const host of ["localhost", "127.0.0.1", "127.9.9.9", "[::1]", "::1", "::ffff:127.0.0.1"]) {
    assert(isLoopbackHost(host), host);
  }
  for (const host of ["0.0.0.0", "[::]", "198.18.0.1", "127.0.0.1.example", "[fe80::1]"]) {
    assert(!isLoopbackHost(host), host);
  }
});
