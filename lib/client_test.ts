import assert from "node:assert/strict";
import { AuthError, FaildClient, FaildError, PeerUnreachableError, resolveKey } from "./client.ts";
import {
  bodyDigest,
  CONTENT_DIGEST_HEADER,
  parseAuthorization,
  RESPONSE_SIGNATURE_HEADER,
  signResponse,
  verifyRequest,
} from "./sign.ts";
import type { ServiceRecord } from "./types.ts";

const KEY = "client-test-community";

const RECORD: ServiceRecord = {
  name: "web",
  state: "UP",
  lastChange: 1_764_000_000_000,
  changes: 2,
  detail: "",
  setBy: "0123456789abcdef",
};

type Mode = "good" | "unsigned" | "badsig";

/** A fake faild: checks the request signature and answers signed (or not, by mode). */
function fakeFaild(
  handler: (req: Request) => { status: number; body: string },
  mode: () => Mode = () => "good",
) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    const body = await req.text();
    const auth = req.headers.get("authorization");
    const answer = handler(req);
    const headers = new Headers({ "content-type": "application/json" });
    if (auth !== null) {
      const parts = parseAuthorization(auth);
      const ok = verifyRequest(KEY, parts, {
        method: req.method,
        path: url.pathname + url.search,
        digest: bodyDigest(body),
      });
      if (!ok) return new Response('{"error":"Bad signature: x"}', { status: 401 });
      const m = mode();
      if (m !== "unsigned") {
        const sig = signResponse(m === "good" ? KEY : "other", {
          nonce: parts.nonce,
          status: answer.status,
          body: answer.body,
        });
        headers.set(RESPONSE_SIGNATURE_HEADER, sig);
      }
    }
    return new Response(answer.body, { status: answer.status, headers });
  });
  return { server, url: `http://127.0.0.1:${server.addr.port}` };
}

Deno.test("FaildClient.get() returns the record of a properly signed answer", async () => {
  const { server, url } = fakeFaild(() => ({ status: 200, body: JSON.stringify(RECORD) }));
  const client = new FaildClient(url, { key: KEY });
  try {
    assert.deepEqual(await client.get("web"), RECORD);
    assert.deepEqual(await client.get("web"), RECORD);
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("FaildClient rejects an unsigned or badly signed answer with AuthError", async () => {
  let mode: Mode = "unsigned";
  const { server, url } = fakeFaild(
    () => ({ status: 200, body: JSON.stringify(RECORD) }),
    () => mode,
  );
  const client = new FaildClient(url, { key: KEY });
  try {
    await assert.rejects(client.get("web"), AuthError);
    mode = "badsig";
    await assert.rejects(
      client.get("web"),
      (e) => e instanceof AuthError && /bad signature/.test(e.message),
    );
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("FaildClient maps 404 to FaildError and 403 to AuthError with faild's sentence", async () => {
  let status = 404;
  const { server, url } = fakeFaild(() => ({
    status,
    body: JSON.stringify({ error: `Refused: status ${status}` }),
  }));
  const client = new FaildClient(url, { key: KEY });
  try {
    await assert.rejects(client.get("web"), (e) => {
      assert.ok(e instanceof FaildError && !(e instanceof AuthError));
      assert.equal(e.status, 404);
      assert.equal(e.message, "Refused: status 404");
      return true;
    });
    status = 403;
    await assert.rejects(client.delete("web"), (e) => e instanceof AuthError && e.status === 403);
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("FaildClient accepts an unsigned 401 as an AuthError", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response('{"error":"Unknown key: abc"}', { status: 401 }),
  );
  const client = new FaildClient(`http://127.0.0.1:${server.addr.port}`, { key: KEY });
  try {
    await assert.rejects(
      client.list(),
      (e) => e instanceof AuthError && e.message === "Unknown key: abc",
    );
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("FaildClient throws PeerUnreachableError for a closed port and a silent peer", async (t) => {
  await t.step("connection refused", async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    listener.close();
    const client = new FaildClient(`http://127.0.0.1:${port}`);
    try {
      await assert.rejects(client.health(), PeerUnreachableError);
    } finally {
      client.close();
    }
  });
  await t.step("no answer within the timeout", async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const conns: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const c of listener) conns.push(c);
    })();
    const client = new FaildClient(`http://127.0.0.1:${listener.addr.port}`, { timeoutMs: 200 });
    try {
      await assert.rejects(
        client.health(),
        (e) => e instanceof PeerUnreachableError && /200 ms/.test(e.message),
      );
    } finally {
      client.close();
      listener.close();
      await accepting.catch(() => {});
      for (const c of conns) c.close();
    }
  });
});

Deno.test("FaildClient refuses bad names and states before sending", async () => {
  const client = new FaildClient("http://127.0.0.1:1");
  try {
    await assert.rejects(client.get("../etc"), RangeError);
    // deno-lint-ignore no-explicit-any
    await assert.rejects(client.set("web", "up" as any), RangeError);
    assert.throws(() => new FaildClient("http://x/path"), TypeError);
    assert.throws(() => new FaildClient("ftp://x"), TypeError);
  } finally {
    client.close();
  }
});

Deno.test("FaildClient.events() yields signed change events and rejects a forged one", async () => {
  let forge = false;
  const enc = new TextEncoder();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const parts = parseAuthorization(req.headers.get("authorization")!);
    const events = [1, 2].map((seq) => JSON.stringify({ type: "set", service: RECORD, seq }));
    const sse = ": hello\n\n" + events.map((data, i) => {
      const key = forge && i === 1 ? "other" : KEY;
      const sig = signResponse(key, { nonce: parts.nonce, status: 200, body: data });
      return `event: change\ndata: ${data}\nsig: ${sig}\n\n`;
    }).join("");
    // Deliver in small pieces to exercise the line buffer.
    const bytes = enc.encode(sse);
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < bytes.length; i += 7) c.enqueue(bytes.slice(i, i + 7));
      },
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream",
        [RESPONSE_SIGNATURE_HEADER]: signResponse(KEY, {
          nonce: parts.nonce,
          status: 200,
          body: "",
        }),
      },
    });
  });
  const client = new FaildClient(`http://127.0.0.1:${server.addr.port}`, { key: KEY });
  try {
    const seen: number[] = [];
    const ac = new AbortController();
    for await (const ev of client.events({ signal: ac.signal })) {
      seen.push(ev.seq);
      assert.equal(ev.service.name, "web");
      if (seen.length === 2) ac.abort();
    }
    assert.deepEqual(seen, [1, 2]);
    forge = true;
    await assert.rejects(async () => {
      for await (const _ of client.events()) { /* consume */ }
    }, AuthError);
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("resolveKey() prefers the flag, then the key file, then the environment", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/key`;
    await Deno.writeTextFile(file, "from-file\n");
    assert.equal(resolveKey({ key: "flag", keyFile: file }), "flag");
    assert.equal(resolveKey({ keyFile: file }), "from-file");
    Deno.env.set("FAILC_TEST_KEY", "from-env");
    assert.equal(resolveKey({ env: "FAILC_TEST_KEY" }), "from-env");
    Deno.env.delete("FAILC_TEST_KEY");
    assert.equal(resolveKey({ env: "FAILC_TEST_KEY" }), undefined);
    await Deno.writeTextFile(file, "\n");
    assert.throws(() => resolveKey({ keyFile: file }), /first line is empty/);
    assert.throws(() => resolveKey({ keyFile: `${dir}/missing` }), /Cannot read key file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FaildClient retries once in a new nonce session when told 'replayed'", async () => {
  const sessions: string[] = [];
  const digests: (string | null)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    sessions.push(parseAuthorization(req.headers.get("authorization")!).nonce.slice(0, 16));
    digests.push(req.headers.get(CONTENT_DIGEST_HEADER));
    return new Response('{"error":"Replayed request: x","reason":"replayed"}', { status: 401 });
  });
  const client = new FaildClient(`http://127.0.0.1:${server.addr.port}`, { key: KEY });
  try {
    await assert.rejects(client.set("web", "UP"), (e) => e instanceof AuthError && e.replayed);
    assert.equal(sessions.length, 2, "one request and one retry");
    assert.notEqual(sessions[0], sessions[1], "the retry did not start a new session");
    // The signature covers the body's digest, sent so faild can check it before the body.
    assert.deepEqual(digests, [bodyDigest('{"state":"UP"}'), bodyDigest('{"state":"UP"}')]);
    await assert.rejects(client.list(), AuthError);
    assert.equal(sessions.length, 4);
    assert.equal(digests[3], null, "no digest header without a body");
  } finally {
    client.close();
    await server.shutdown();
  }
});
