import assert from "node:assert/strict";
import { decodeMessage, encodeQuery, formatIpv6, normalizeIpv6, probeDns } from "./dns.ts";
import { startDnsResponder } from "../_test_servers.ts";

Deno.test("encodeQuery() writes a standard recursive query", () => {
  const q = encodeQuery(0x1234, "www.example.test", 1);
  assert.deepEqual(Array.from(q.subarray(0, 12)), [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
  assert.equal(new TextDecoder().decode(q.subarray(13, 16)), "www");
  const m = decodeMessage(q);
  assert.deepEqual(m.questions, [{ name: "www.example.test", type: 1, class: 1 }]);
  assert.equal(m.response, false);
  assert.throws(() => encodeQuery(1, "a".repeat(64) + ".test", 1), /1 to 63 bytes/);
});

Deno.test("decodeMessage() follows compression pointers and formats record data", () => {
  // Answer to www.example.test A with a CNAME then an A, names compressed.
  const bytes = new Uint8Array([
    0,
    7,
    0x81,
    0x80,
    0,
    1,
    0,
    3,
    0,
    0,
    0,
    0,
    3,
    119,
    119,
    119,
    7,
    101,
    120,
    97,
    109,
    112,
    108,
    101,
    4,
    116,
    101,
    115,
    116,
    0,
    0,
    1,
    0,
    1,
    // CNAME www -> web.example.test (pointer to "example.test" at 16)
    0xc0,
    12,
    0,
    5,
    0,
    1,
    0,
    0,
    0,
    60,
    0,
    6,
    3,
    119,
    101,
    98,
    0xc0,
    16,
    // A web.example.test (pointer to the CNAME's data at 46)
    0xc0,
    46,
    0,
    1,
    0,
    1,
    0,
    0,
    0,
    60,
    0,
    4,
    198,
    18,
    0,
    10,
    // MX 10 web.example.test
    0xc0,
    12,
    0,
    15,
    0,
    1,
    0,
    0,
    0,
    60,
    0,
    4,
    0,
    10,
    0xc0,
    46,
  ]);
  const m = decodeMessage(bytes);
  assert.equal(m.id, 7);
  assert.equal(m.response, true);
  assert.deepEqual(m.answers.map((a) => [a.name, a.type, a.data]), [
    ["www.example.test", 5, "web.example.test"],
    ["web.example.test", 1, "198.18.0.10"],
    ["www.example.test", 15, "10 web.example.test"],
  ]);
});

Deno.test("decodeMessage() rejects truncated messages and pointer loops", () => {
  assert.throws(() => decodeMessage(new Uint8Array([0, 1, 0x81])), /Truncated/);
  const loop = new Uint8Array([0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
  assert.throws(() => decodeMessage(loop), /Bad DNS message: .*bad pointer/);
});

Deno.test("formatIpv6() and normalizeIpv6() give the RFC 5952 form", () => {
  assert.equal(formatIpv6(new Uint8Array(16)), "::");
  assert.equal(normalizeIpv6("2001:DB8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
  assert.equal(normalizeIpv6("::1"), "::1");
  assert.equal(normalizeIpv6("198.18.0.1"), null);
});

Deno.test("probeDns() against a real UDP responder", async (t) => {
  const dns = await startDnsResponder({
    "www.example.test": { A: ["198.18.0.10"], AAAA: ["2001:db8::10"], TXT: ["v=ok"] },
  });
  const base = {
    server: { host: "127.0.0.1", port: dns.port },
    name: "www.example.test",
    type: 1,
    typeName: "A",
    expect: "198.18.0.10" as string | null,
    rcode: 0,
    timeoutMs: 300,
  };
  try {
    await t.step("passes on the expected A record", async () => {
      const r = await probeDns(base, AbortSignal.timeout(300));
      assert.equal(r.ok, true, r.detail);
      assert.match(r.detail, /^A www.example.test: 198.18.0.10 in \d+ ms$/);
    });
    await t.step("passes on AAAA and TXT answers", async () => {
      const aaaa = await probeDns(
        { ...base, type: 28, typeName: "AAAA", expect: "2001:DB8:0::10" },
        AbortSignal.timeout(300),
      );
      assert.equal(aaaa.ok, true, aaaa.detail);
      const txt = await probeDns(
        { ...base, type: 16, typeName: "TXT", expect: "v=ok" },
        AbortSignal.timeout(300),
      );
      assert.equal(txt.ok, true, txt.detail);
    });
    await t.step("fails on a wrong answer, naming what it expected", async () => {
      dns.behaviour.records["www.example.test"]!.A = ["198.18.0.99"];
      const r = await probeDns(base, AbortSignal.timeout(300));
      assert.equal(r.ok, false);
      assert.match(r.detail, /198.18.0.99 .*expected 198.18.0.10/);
    });
    await t.step("fails on NXDOMAIN unless that is expected", async () => {
      const r = await probeDns({ ...base, name: "nope.example.test" }, AbortSignal.timeout(300));
      assert.equal(r.ok, false);
      assert.match(r.detail, /expected NOERROR, got NXDOMAIN/);
      const neg = await probeDns(
        { ...base, name: "nope.example.test", expect: null, rcode: 3 },
        AbortSignal.timeout(300),
      );
      assert.equal(neg.ok, true, neg.detail);
    });
    await t.step("fails on a truncated answer without records", async () => {
      dns.behaviour.truncate = true;
      const r = await probeDns({ ...base, expect: null }, AbortSignal.timeout(300));
      assert.equal(r.ok, false);
      assert.match(r.detail, /truncated \(TC\): ask over TCP \(tcp=yes\)/);
    });
    await t.step("tcp=yes gets the whole answer the UDP one truncated", async () => {
      assert.equal(dns.behaviour.truncate, true);
      dns.behaviour.records["www.example.test"]!.A = ["198.18.0.10"];
      const r = await probeDns({ ...base, tcp: true }, AbortSignal.timeout(1000));
      assert.equal(r.ok, true, r.detail);
      assert.match(r.detail, /^A www.example.test: 198.18.0.10 in \d+ ms$/);
      dns.behaviour.truncate = false;
    });
    await t.step(
      "tcp=yes fails with a timeout on a silent server, and a refused port says so",
      async () => {
        dns.behaviour.silent = true;
        const r = await probeDns({ ...base, tcp: true }, AbortSignal.timeout(300));
        assert.equal(r.ok, false);
        assert.equal(r.detail, "no answer: timed out");
        dns.behaviour.silent = false;
        const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const port = (l.addr as Deno.NetAddr).port;
        l.close();
        const refused = await probeDns(
          { ...base, server: { host: "127.0.0.1", port }, tcp: true },
          AbortSignal.timeout(1000),
        );
        assert.equal(refused.ok, false);
        assert.match(refused.detail, /cannot connect: .*refused/i);
      },
    );
    await t.step(
      "fails with a timeout when the server is silent, after one retransmission",
      async () => {
        dns.behaviour.silent = true;
        const before = dns.queries;
        const r = await probeDns(base, AbortSignal.timeout(300));
        assert.equal(r.ok, false);
        assert.equal(r.detail, "no answer: timed out");
        assert.equal(dns.queries - before, 2);
      },
    );
  } finally {
    await dns.close();
  }
});
