import assert from "node:assert/strict";
import { AuthError, FaildClient, FaildError } from "../../lib/client.ts";
import { Logger } from "../../lib/log.ts";
import {
  bodyDigest,
  CONTENT_DIGEST_HEADER,
  keyId,
  NonceSequence,
  RESPONSE_SIGNATURE_HEADER,
  signRequest,
  verifyResponse,
} from "../../lib/sign.ts";
import type { ChangeEvent } from "../../lib/types.ts";
import { type FaildHandle, type FaildOptions, startFaild } from "./faild.ts";

const RW = "rw-community-secret";
const RO = "ro-community-secret";
const OPS = "ops-community-secret";

const COMMUNITY = `
web*   ${RW}   RW
db     ${RW}   RO
web*   ${RO}   RO
*      ${OPS}  RW
`;

async function withFaild(
  options: FaildOptions,
  fn: (f: FaildHandle, lines: string[]) => Promise<void>,
): Promise<void> {
  const lines: string[] = [];
  const f = await startFaild({
    listen: "127.0.0.1:0",
    name: "test-host",
    community: COMMUNITY,
    logger: new Logger({ sink: (l) => lines.push(l) }),
    ...options,
  });
  try {
    await fn(f, lines);
  } finally {
    await f.close();
  }
}

interface RawAnswer {
  status: number;
  text: string;
  json: Record<string, unknown>;
  headers: Headers;
}

/** Sends one request by hand, optionally signed (with a chosen clock) or with a given header. */
async function raw(
  f: FaildHandle,
  method: string,
  path: string,
  options: {
    key?: string;
    body?: string;
    now?: number;
    authorization?: string;
    contentType?: string | null;
    nonces?: NonceSequence;
    /** The body digest header sent with a signed body (default: the body's, as FaildClient). */
    digest?: string | null;
  } = {},
): Promise<RawAnswer & { authorization?: string; nonce?: string }> {
  const body = options.body ?? "";
  const headers: Record<string, string> = {};
  let nonce: string | undefined;
  let authorization = options.authorization;
  if (options.key !== undefined && authorization === undefined) {
    const s = signRequest(options.key, {
      method,
      path,
      body,
      ...(options.now !== undefined ? { now: options.now } : {}),
      ...(options.nonces !== undefined ? { nonces: options.nonces } : {}),
    });
    authorization = s.header;
    nonce = s.nonce;
  }
  if (authorization !== undefined) {
    headers["authorization"] = authorization;
    if (body !== "" && options.digest !== null) {
      headers[CONTENT_DIGEST_HEADER] = options.digest ?? bodyDigest(body);
    }
  }
  if (options.contentType !== null && body !== "") {
    headers["content-type"] = options.contentType ?? "application/json";
  }
  const res = await fetch(f.url + path, {
    method,
    headers,
    ...(body !== "" ? { body } : {}),
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text);
  } catch {
    // Not JSON (metrics).
  }
  return {
    status: res.status,
    text,
    json,
    headers: res.headers,
    ...(authorization !== undefined ? { authorization } : {}),
    ...(nonce !== undefined ? { nonce } : {}),
  };
}

Deno.test("faild answers health unsigned and serves signed, verified reads and writes", async () => {
  await withFaild({}, async (f) => {
    const health = await raw(f, "GET", "/v1/health");
    assert.equal(health.status, 200);
    assert.equal(health.json.host, "test-host");
    assert.equal(health.json.bootId, f.bootId);

    const client = new FaildClient(f.url, { key: RW });
    try {
      const created = await client.set("web", "UP", { detail: "first" });
      assert.equal(created.setBy, keyId(RW));
      assert.equal(created.changes, 0);
      const same = await client.set("web", "UP");
      assert.equal(same.changes, 0);
      assert.equal(same.lastChange, created.lastChange);
      assert.equal(same.detail, "");
      const changed = await client.set("web", "FAIL", { detail: "port 80 closed" });
      assert.equal(changed.changes, 1);
      assert.deepEqual(await client.get("web"), changed);
      const list = await client.list();
      assert.equal(list.host, "test-host");
      assert.deepEqual(list.services.map((s) => s.name), ["web"]);
      assert.deepEqual(await client.delete("web"), changed);
      await assert.rejects(client.get("web"), (e) => e instanceof FaildError && e.status === 404);
      await assert.rejects(
        client.delete("web"),
        (e) => e instanceof FaildError && e.status === 404,
      );
    } finally {
      client.close();
    }
  });
});

Deno.test("faild signs its answers with the caller's community", async () => {
  await withFaild({}, async (f) => {
    const r = await raw(f, "GET", "/v1/services", { key: RW });
    assert.equal(r.status, 200);
    const sig = r.headers.get(RESPONSE_SIGNATURE_HEADER);
    assert.ok(verifyResponse(RW, sig, { nonce: r.nonce!, status: 200, body: r.text }));
    assert.ok(!verifyResponse(RO, sig, { nonce: r.nonce!, status: 200, body: r.text }));
    const missing = await raw(f, "GET", "/v1/services/nothing", { key: OPS });
    assert.equal(missing.status, 404);
    assert.ok(
      verifyResponse(OPS, missing.headers.get(RESPONSE_SIGNATURE_HEADER), {
        nonce: missing.nonce!,
        status: 404,
        body: missing.text,
      }),
    );
    const unsigned = await raw(f, "GET", "/v1/health");
    assert.equal(unsigned.headers.get(RESPONSE_SIGNATURE_HEADER), null);
  });
});

Deno.test("faild refuses wrong keys, tampered, stale and replayed requests with 401", async (t) => {
  await withFaild({}, async (f, lines) => {
    await t.step("a community that is not in the file", async () => {
      const r = await raw(f, "GET", "/v1/services", { key: "not-a-known-community" });
      assert.equal(r.status, 401);
      assert.match(
        r.json.error as string,
        /^Unknown key: key id [0-9a-f]{16} matches no community/,
      );
      const client = new FaildClient(f.url, { key: "not-a-known-community" });
      await assert.rejects(client.list(), (e) => e instanceof AuthError && e.status === 401);
      client.close();
    });
    await t.step("a signature made for another body", async () => {
      const signed = signRequest(RW, {
        method: "PUT",
        path: "/v1/services/web",
        body: '{"state":"UP"}',
      });
      // With the digest of the body sent: the signature holds, the body does not match it.
      const r = await raw(f, "PUT", "/v1/services/web", {
        authorization: signed.header,
        body: '{"state":"FAIL"}',
        digest: bodyDigest('{"state":"UP"}'),
      });
      assert.equal(r.status, 401);
      assert.match(r.json.error as string, /^Bad signature: the body does not match/);
      assert.equal(f.store.get("web"), undefined);
      // With the digest of the body sent: the signature does not cover it.
      const again = await raw(f, "PUT", "/v1/services/web", {
        key: RW,
        authorization: signRequest(RW, {
          method: "PUT",
          path: "/v1/services/web",
          body: '{"state":"UP"}',
        }).header,
        body: '{"state":"FAIL"}',
      });
      assert.equal(again.status, 401);
      assert.match(again.json.error as string, /^Bad signature: the request does not match/);
      // Without a digest at all: refused before the body is read.
      const none = await raw(f, "PUT", "/v1/services/web", {
        authorization: signed.header,
        body: '{"state":"UP"}',
        digest: null,
      });
      assert.equal(none.status, 401);
      assert.match(none.json.error as string, /^Invalid x-failover-content-sha256: /);
      assert.equal(f.store.get("web"), undefined);
    });
    await t.step("a signature made for another path", async () => {
      const signed = signRequest(RW, { method: "GET", path: "/v1/services/web", body: "" });
      const r = await raw(f, "GET", "/v1/services/web-2", { authorization: signed.header });
      assert.equal(r.status, 401);
    });
    await t.step("a timestamp 31 s old or 31 s ahead", async () => {
      for (const skew of [-31_000, 31_000]) {
        const r = await raw(f, "GET", "/v1/services", { key: RW, now: Date.now() + skew });
        assert.equal(r.status, 401);
        assert.match(r.json.error as string, /^Stale request: /);
      }
      const ok = await raw(f, "GET", "/v1/services", { key: RW, now: Date.now() - 20_000 });
      assert.equal(ok.status, 200);
    });
    await t.step("the same signed request sent twice", async () => {
      const first = await raw(f, "PUT", "/v1/services/web", { key: RW, body: '{"state":"UP"}' });
      assert.equal(first.status, 201);
      f.store.delete("web");
      const again = await raw(f, "PUT", "/v1/services/web", {
        authorization: first.authorization!,
        body: '{"state":"UP"}',
      });
      assert.equal(again.status, 401);
      assert.match(again.json.error as string, /^Replayed request: /);
      assert.equal(f.store.get("web"), undefined);
    });
    await t.step("a client's sequenced nonces: late ones pass once, replays do not", async () => {
      const nonces = new NonceSequence();
      const sign = () => signRequest(RW, { method: "GET", path: "/v1/services", body: "", nonces });
      const first = sign(), second = sign(), third = sign();
      for (const s of [first, third, second]) {
        const r = await raw(f, "GET", "/v1/services", { authorization: s.header });
        assert.equal(r.status, 200, "in order or one late: accepted");
      }
      for (const s of [first, second, third]) {
        const r = await raw(f, "GET", "/v1/services", { authorization: s.header });
        assert.equal(r.status, 401);
        assert.match(r.json.error as string, /^Replayed request: /);
      }
    });
    await t.step("a malformed authorization header", async () => {
      const r = await raw(f, "GET", "/v1/services", { authorization: "Basic dXNlcjpwYXNz" });
      assert.equal(r.status, 401);
      assert.match(r.json.error as string, /^Invalid authorization: scheme must be/);
    });
    await t.step("refusals are logged and counted", async () => {
      assert.ok(lines.some((l) => l.includes('"reason":"replayed"')));
      const metrics = (await raw(f, "GET", "/metrics")).text;
      assert.match(metrics, /faild_auth_failures_total\{reason="bad_signature"\} 3/);
      assert.match(metrics, /faild_auth_failures_total\{reason="stale"\} 2/);
    });
  });
});

/** A nonce source that gives one chosen nonce (what an attacker who saw a nonce sends). */
function fixedNonce(nonce: string): NonceSequence {
  return { next: () => nonce } as NonceSequence;
}

Deno.test("a key cannot blind another key's nonce session (finding 9)", async () => {
  await withFaild({}, async (f) => {
    const victim = new NonceSequence();
    const first = await raw(f, "GET", "/v1/services", { key: RW, nonces: victim });
    assert.equal(first.status, 200);
    // The nonce travelled in clear; a read-only key pushes that session's counter to its end.
    const session = first.nonce!.slice(0, 16);
    const attack = await raw(f, "GET", "/v1/services", {
      key: RO,
      nonces: fixedNonce(`${session}00000000ffffffff`),
    });
    assert.equal(attack.status, 200);
    for (let i = 0; i < 3; i++) {
      const next = await raw(f, "GET", "/v1/services", { key: RW, nonces: victim });
      assert.equal(next.status, 200, `the victim was refused: ${next.text}`);
    }
  });
});

Deno.test("a key's new nonce sessions are bounded by its own quota (finding 9)", async () => {
  await withFaild({ nonceSessions: 64 }, async (f) => {
    let refused = 0;
    for (let i = 0; i < 100; i++) {
      const r = await raw(f, "GET", "/v1/services", { key: RO, nonces: new NonceSequence() });
      if (r.status === 503) {
        refused++;
        assert.match(r.json.error as string, /^Too many nonce sessions: key id [0-9a-f]{16}/);
      } else assert.equal(r.status, 200);
    }
    assert.ok(refused > 0, "100 sessions of one key were all accepted");
    // Other keys still start sessions, and the flooding key's old sessions go on.
    for (const key of [RW, OPS]) {
      for (let i = 0; i < 5; i++) {
        const r = await raw(f, "GET", "/v1/services", { key, nonces: new NonceSequence() });
        assert.equal(r.status, 200, `a new session of another key was refused: ${r.text}`);
      }
    }
  });
});

Deno.test("FaildClient starts a new nonce session when faild says its counter is used (finding 9)", async () => {
  await withFaild({}, async (f) => {
    const client = new FaildClient(f.url, { key: OPS });
    const seen: string[] = [];
    const realFetch = globalThis.fetch;
    // Sniff the client's nonces, as anyone on the path can.
    globalThis.fetch = (input, init) => {
      const auth = new Headers(init?.headers).get("authorization");
      if (auth !== null) seen.push(/nonce=([0-9a-f]{32})/.exec(auth)![1]!);
      return realFetch(input, init);
    };
    try {
      await client.list();
      const session = seen[0]!.slice(0, 16);
      // A holder of the same key pushes the session's counter to its end.
      const attack = await raw(f, "GET", "/v1/services", {
        key: OPS,
        nonces: fixedNonce(`${session}00000000ffffffff`),
      });
      assert.equal(attack.status, 200);
      assert.equal((await client.list()).host, "test-host");
      assert.notEqual(seen.at(-1)!.slice(0, 16), session, "the client kept its blinded session");
      assert.equal((await client.list()).host, "test-host");
    } finally {
      globalThis.fetch = realFetch;
      client.close();
    }
  });
});

Deno.test("faild enforces read-only and uncovered services with 403", async () => {
  await withFaild({}, async (f) => {
    const rw = new FaildClient(f.url, { key: RW });
    const ro = new FaildClient(f.url, { key: RO });
    try {
      await rw.set("web-1", "UP");
      assert.equal((await ro.get("web-1")).state, "UP");
      await assert.rejects(ro.set("web-1", "FAIL"), (e) => {
        assert.ok(e instanceof AuthError);
        assert.equal(e.status, 403);
        assert.match(
          e.message,
          /^Read-only access: key id [0-9a-f]{16} may read but not write web-1/,
        );
        return true;
      });
      await assert.rejects(ro.delete("web-1"), (e) => e instanceof AuthError && e.status === 403);
      assert.equal((await rw.get("web-1")).state, "UP");
      // db is RO for the RW community: the first matching rule decides.
      await assert.rejects(rw.set("db", "UP"), (e) => e instanceof AuthError && e.status === 403);
      // mail is covered by no rule of the RO community.
      await assert.rejects(ro.get("mail"), /Access denied: no rule of the community file/);
    } finally {
      rw.close();
      ro.close();
    }
  });
});

Deno.test("faild lists and streams only the services the caller may read", async () => {
  await withFaild({}, async (f) => {
    const ops = new FaildClient(f.url, { key: OPS });
    const ro = new FaildClient(f.url, { key: RO });
    try {
      await ops.set("web-1", "UP");
      await ops.set("mail", "UP");
      assert.deepEqual((await ops.list()).services.map((s) => s.name), ["mail", "web-1"]);
      assert.deepEqual((await ro.list()).services.map((s) => s.name), ["web-1"]);
      const metrics = await ro.metrics();
      assert.match(metrics, /faild_service_state\{service="web-1",state="UP"\} 1/);
      assert.doesNotMatch(metrics, /service="mail"/);
    } finally {
      ops.close();
      ro.close();
    }
  });
});

Deno.test("faild allows unsigned reads only where a '-' rule says so", async () => {
  await withFaild({}, async (f) => {
    const r = await raw(f, "GET", "/v1/services");
    assert.equal(r.status, 401);
    assert.match(r.json.error as string, /^Unsigned request: GET \/v1\/services needs a signed/);
    const m = await raw(f, "GET", "/metrics");
    assert.equal(m.status, 200);
    assert.doesNotMatch(m.text, /faild_service_state\{/);
  });
  await withFaild({ community: `${COMMUNITY}\ndb  -  RO\n` }, async (f) => {
    const ops = new FaildClient(f.url, { key: OPS });
    const anon = new FaildClient(f.url);
    try {
      await ops.set("db", "UP");
      await ops.set("web", "UP");
      assert.equal((await anon.get("db")).state, "UP");
      assert.deepEqual((await anon.list()).services.map((s) => s.name), ["db"]);
      await assert.rejects(anon.get("web"), (e) => e instanceof AuthError && e.status === 401);
      await assert.rejects(anon.set("db", "FAIL"), (e) => {
        assert.ok(e instanceof AuthError && e.status === 401);
        assert.match(e.message, /gives unsigned write access to db/);
        return true;
      });
      assert.equal(f.store.get("db")?.state, "UP");
    } finally {
      ops.close();
      anon.close();
    }
  });
});

Deno.test("faild rejects bad input with a clear 4xx and changes nothing", async (t) => {
  await withFaild({ maxServices: 2 }, async (f) => {
    const put = (path: string, body: string, extra: Parameters<typeof raw>[3] = {}) =>
      raw(f, "PUT", path, { key: OPS, body, ...extra });
    await t.step("oversized body: 413", async () => {
      const r = await put(
        "/v1/services/web",
        JSON.stringify({ state: "UP", detail: "x".repeat(5000) }),
      );
      assert.equal(r.status, 413);
      assert.match(r.json.error as string, /^Request body too large: \d+ bytes, at most 4096/);
    });
    await t.step("malformed JSON: 400", async () => {
      const r = await put("/v1/services/web", '{"state":');
      assert.equal(r.status, 400);
      assert.match(r.json.error as string, /^Malformed JSON: /);
    });
    await t.step("not an object, unknown field, bad detail: 400", async () => {
      assert.equal((await put("/v1/services/web", '["UP"]')).status, 400);
      const extra = await put("/v1/services/web", '{"state":"UP","owner":"me"}');
      assert.match(extra.json.error as string, /^Invalid body: unknown field "owner"/);
      const detail = await put("/v1/services/web", '{"state":"UP","detail":5}');
      assert.match(detail.json.error as string, /^Invalid detail: must be a string/);
    });
    await t.step("unknown state: 400", async () => {
      const r = await put("/v1/services/web", '{"state":"up"}');
      assert.equal(r.status, 400);
      assert.equal(r.json.error, 'Unknown state: "up" is not UP, RECOVER or FAIL');
    });
    await t.step("bad names: 400", async () => {
      for (const name of ["-web", "a%20b", "x".repeat(65), "a/b", ""]) {
        const r = await raw(f, "GET", `/v1/services/${name}`, { key: OPS });
        assert.equal(r.status, 400, name);
        assert.match(r.json.error as string, /^Invalid service name: /);
      }
    });
    await t.step("wrong content type: 415", async () => {
      const r = await put("/v1/services/web", '{"state":"UP"}', { contentType: "text/plain" });
      assert.equal(r.status, 415);
    });
    await t.step("wrong method: 405 with Allow", async () => {
      const r = await raw(f, "POST", "/v1/services", { key: OPS, body: "{}" });
      assert.equal(r.status, 405);
      assert.equal(r.headers.get("allow"), "GET");
      assert.match(r.json.error as string, /^Method not allowed: POST \/v1\/services/);
    });
    await t.step("unknown path: 404", async () => {
      const r = await raw(f, "GET", "/v2/services", { key: OPS });
      assert.equal(r.status, 404);
      assert.match(r.json.error as string, /^Unknown path: /);
    });
    await t.step("nothing was stored by the refused requests", () => {
      assert.equal(f.store.size, 0);
    });
    await t.step("too many services: 429, existing ones still writable", async () => {
      assert.equal((await put("/v1/services/a", '{"state":"UP"}')).status, 201);
      assert.equal((await put("/v1/services/b", '{"state":"UP"}')).status, 201);
      const r = await put("/v1/services/c", '{"state":"UP"}');
      assert.equal(r.status, 429);
      assert.match(r.json.error as string, /^Too many services: /);
      assert.equal((await put("/v1/services/a", '{"state":"FAIL"}')).status, 200);
      assert.equal(f.store.size, 2);
    });
  });
});

Deno.test("a client trickling its request does not block others and is cut off", async () => {
  await withFaild({ bodyTimeoutMs: 800 }, async (f) => {
    const port = f.addr.port;
    const enc = new TextEncoder();
    // One connection sends its headers byte by byte and never finishes them.
    const headerTrickler = await Deno.connect({ hostname: "127.0.0.1", port });
    // Another sends complete headers, then the body one byte every 100 ms.
    const bodyTrickler = await Deno.connect({ hostname: "127.0.0.1", port });
    const signed = signRequest(OPS, { method: "PUT", path: "/v1/services/slow", body: "{}" });
    await bodyTrickler.write(enc.encode(
      `PUT /v1/services/slow HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n` +
        `authorization: ${signed.header}\r\n${CONTENT_DIGEST_HEADER}: ${bodyDigest("{}")}\r\n` +
        "content-length: 100\r\n\r\n",
    ));
    let trickling = true;
    const trickle = (async () => {
      const head = enc.encode("GET /v1/health HTTP/1.1\r\nhost: x\r\nx-slow: ");
      for (let i = 0; trickling && i < 40; i++) {
        await headerTrickler.write(head.subarray(i % head.length, (i % head.length) + 1));
        await bodyTrickler.write(enc.encode(" ")).catch(() => {});
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const client = new FaildClient(f.url, { key: OPS, timeoutMs: 2000 });
    try {
      for (let i = 0; i < 5; i++) {
        await client.set("fast", i % 2 ? "UP" : "FAIL");
        assert.equal((await client.list()).services.length, 1);
      }
      // The body trickler gets 408 once its 800 ms are up.
      const buf = new Uint8Array(4096);
      const n = await bodyTrickler.read(buf);
      const answer = new TextDecoder().decode(buf.subarray(0, n ?? 0));
      assert.match(answer, /^HTTP\/1\.1 408/);
      assert.match(answer, /Request body too slow: not received within 800 ms/);
      assert.equal(f.store.get("slow"), undefined);
    } finally {
      trickling = false;
      await trickle;
      client.close();
      headerTrickler.close();
      bodyTrickler.close();
    }
  });
});

Deno.test("faild streams change events with keep-alives and bounds the streams", async () => {
  await withFaild({ keepaliveMs: 100, maxStreams: 2 }, async (f) => {
    const ops = new FaildClient(f.url, { key: OPS });
    const ro = new FaildClient(f.url, { key: RO });
    const ac = new AbortController();
    try {
      const opsEvents: ChangeEvent[] = [];
      const roEvents: ChangeEvent[] = [];
      const opsDone = (async () => {
        for await (const e of ops.events({ signal: ac.signal })) {
          opsEvents.push(e);
          if (opsEvents.length === 3) break;
        }
      })();
      const roDone = (async () => {
        for await (const e of ro.events({ signal: ac.signal })) {
          roEvents.push(e);
          if (roEvents.length === 2) break;
        }
      })();
      // Wait until both streams are open.
      for (let i = 0; i < 100; i++) {
        if ((await ops.metrics()).includes("faild_event_streams 2")) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      // A third stream is refused.
      const third = await raw(f, "GET", "/v1/events", { key: OPS });
      assert.equal(third.status, 503);
      assert.match(third.json.error as string, /^Too many event streams: /);

      await ops.set("mail", "UP"); // not readable with RO
      await ops.set("web-1", "UP");
      await ops.delete("web-1");
      await Promise.all([opsDone, roDone]);
      assert.deepEqual(opsEvents.map((e) => [e.type, e.service.name, e.seq]), [
        ["set", "mail", 1],
        ["set", "web-1", 2],
        ["delete", "web-1", 3],
      ]);
      assert.deepEqual(roEvents.map((e) => [e.type, e.service.name, e.seq]), [
        ["set", "web-1", 2],
        ["delete", "web-1", 3],
      ]);
    } finally {
      ac.abort();
      ops.close();
      ro.close();
    }
    // Keep-alive comments arrive on a quiet stream (once the closed streams are freed).
    let res: Response | undefined;
    for (let i = 0; i < 50; i++) {
      res = await fetch(f.url + "/v1/events", {
        headers: {
          authorization: signRequest(OPS, { method: "GET", path: "/v1/events", body: "" }).header,
        },
      });
      if (res.status === 200) break;
      await res.body?.cancel();
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(res?.status, 200);
    const reader = res!.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes(": keepalive")) {
      const chunk = await reader.read();
      if (chunk.done) break;
      text += chunk.value;
    }
    await reader.cancel();
    assert.match(text, /: keepalive\n\n/);
    assert.match(text, /^: faild test-host boot /);
  });
});

Deno.test("faild changes log levels for a caller with RW on * only", async () => {
  await withFaild({}, async (f) => {
    const ops = new FaildClient(f.url, { key: OPS });
    const rw = new FaildClient(f.url, { key: RW });
    try {
      const after = await ops.setLogLevel("http", "debug");
      assert.equal(after.levels.http, "debug");
      assert.equal((await ops.logLevels()).levels.http, "debug");
      await assert.rejects(
        rw.setLogLevel("http", "trace"),
        (e) => e instanceof AuthError && e.status === 403,
      );
      await assert.rejects(rw.logLevels(), (e) => e instanceof AuthError && e.status === 403);
      const bad = await raw(f, "PUT", "/v1/debug/levels", {
        key: OPS,
        body: '{"facility":"http","level":"loud"}',
      });
      assert.equal(bad.status, 400);
      assert.match(bad.json.error as string, /^Invalid level: "loud" is not one of error, warn/);
    } finally {
      ops.close();
      rw.close();
    }
  });
});

Deno.test("faild writes the state file before it answers a change", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await withFaild({ stateFile: `${dir}/state` }, async (f) => {
      const client = new FaildClient(f.url, { key: OPS });
      try {
        for (const state of ["UP", "FAIL", "RECOVER"] as const) {
          await client.set("web", state);
          const file = JSON.parse(await Deno.readTextFile(`${dir}/state`));
          assert.equal(file.services[0].state, state);
        }
        await client.delete("web");
        assert.deepEqual(JSON.parse(await Deno.readTextFile(`${dir}/state`)).services, []);
      } finally {
        client.close();
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("faild drops an event stream whose client stops reading, and keeps serving", async () => {
  await withFaild({}, async (f, lines) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: f.addr.port });
    const client = new FaildClient(f.url, { key: OPS });
    try {
      const auth = signRequest(OPS, { method: "GET", path: "/v1/events", body: "" }).header;
      await conn.write(
        new TextEncoder().encode(
          `GET /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: ${auth}\r\n\r\n`,
        ),
      );
      for (let i = 0; i < 100 && !(await client.metrics()).includes("faild_event_streams 1"); i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      // This client never reads: once its socket buffers and 1024 queued events are full, faild
      // lets it go instead of queueing without bound.
      let dropped = false;
      for (let i = 0; i < 30_000 && !dropped; i++) {
        f.store.set("web", i % 2 ? "UP" : "FAIL", { setBy: "test", detail: "d".repeat(500) });
        if (i % 100 === 0) {
          await new Promise((r) => setTimeout(r, 0));
          dropped = lines.some((l) => l.includes("dropping a stream whose client does not read"));
        }
      }
      assert.ok(dropped, "the stream of the client that does not read was not dropped");
      assert.match(await client.metrics(), /faild_event_streams 0/);
      assert.equal((await client.get("web")).name, "web");
    } finally {
      client.close();
      conn.close();
    }
  });
});

Deno.test("faild keeps the arbiter's epoch of a record: stored, persisted, cleared, bad ones refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await withFaild({ stateFile: `${dir}/state` }, async (f) => {
      const client = new FaildClient(f.url, { key: OPS });
      try {
        const up = await client.set("web", "UP", { detail: "taken", epoch: "9007199254740993" });
        assert.equal(up.epoch, "9007199254740993"); // above 2^53: kept as a string
        const file = JSON.parse(await Deno.readTextFile(`${dir}/state`));
        assert.equal(file.services[0].epoch, "9007199254740993");
        assert.equal((await client.list()).services[0]!.epoch, "9007199254740993");
        // A writer without an arbiter (an older failsh, failc, hc) leaves no epoch behind.
        const fail = await client.set("web", "FAIL");
        assert.equal("epoch" in fail, false);
        for (const epoch of ["0", "-1", "1e3", "12345678901234567890", 7]) {
          const r = await raw(f, "PUT", "/v1/services/web", {
            key: OPS,
            body: JSON.stringify({ state: "UP", epoch }),
          });
          assert.equal(r.status, 400, String(epoch));
          assert.match(r.json.error as string, /^Invalid epoch: .* is not a decimal string/);
        }
        assert.equal((await client.get("web")).state, "FAIL");
      } finally {
        client.close();
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
