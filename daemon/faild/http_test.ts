import assert from "node:assert/strict";
import { HttpServer } from "./http.ts";
import { RawConnection } from "../../bench/_raw_http.ts";

/** A server that echoes the request it parsed, reading the body when there is one. */
async function withEcho(
  fn: (port: number, server: HttpServer) => Promise<void>,
  options: { headerTimeoutMs?: number; bodyTimeoutMs?: number } = {},
): Promise<void> {
  const server = new HttpServer({ hostname: "127.0.0.1", port: 0, ...options }, async (req) => {
    const body = req.contentLength > 0 ? new TextDecoder().decode(await req.body()) : "";
    return {
      status: 200,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ method: req.method, target: req.target, path: req.path, body }),
    };
  });
  try {
    await fn(server.addr.port, server);
  } finally {
    await server.close();
  }
}

async function ask(port: number, text: string) {
  const c = await RawConnection.open(port);
  try {
    await c.write(text);
    return { answer: await c.read(3000), closed: await c.waitClosed(1500) };
  } finally {
    c.close();
  }
}

Deno.test("HttpServer answers pipelined requests in order on one connection", async () => {
  await withEcho(async (port) => {
    const c = await RawConnection.open(port);
    try {
      await c.write(
        "GET /a HTTP/1.1\r\nhost: x\r\n\r\n" +
          "PUT /b?q=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello" +
          "GET /./c HTTP/1.1\r\nhost: x\r\n\r\n",
      );
      const seen = [];
      for (let i = 0; i < 3; i++) seen.push(JSON.parse((await c.read())!.body));
      assert.deepEqual(seen.map((s) => [s.method, s.target, s.path, s.body]), [
        ["GET", "/a", "/a", ""],
        ["PUT", "/b?q=1", "/b", "hello"],
        ["GET", "/./c", "/./c", ""],
      ]);
    } finally {
      c.close();
    }
  });
});

Deno.test("HttpServer refuses malformed heads with a clear 4xx and closes", async (t) => {
  await withEcho(async (port) => {
    const cases: [string, string, number, RegExp][] = [
      ["bare LF lines", "GET / HTTP/1.1\nhost: x\n\n", 400, /CRLF|request line/],
      ["a LF in the target", "GET /a\nb HTTP/1.1\r\nhost: x\r\n\r\n", 400, /request line/],
      ["a CR in a field", "GET / HTTP/1.1\r\nhost: x\r\nx: a\rb\r\n\r\n", 400, /CRLF/],
      ["no Host", "GET / HTTP/1.1\r\n\r\n", 400, /Invalid Host header: HTTP\/1\.1 requires/],
      ["a bad Host", "GET / HTTP/1.1\r\nhost: a b\r\n\r\n", 400, /Invalid Host header/],
      ["two Hosts", "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", 400, /repeated host/],
      ["a NUL byte", "GET / HTTP/1.1\r\nhost: a\r\nx: \0\r\n\r\n", 400, /byte 0x00/],
      ["obs-fold", "GET / HTTP/1.1\r\nhost: a\r\n folded\r\n\r\n", 400, /header field/],
      ["a lowercase method", "get / HTTP/1.1\r\nhost: a\r\n\r\n", 400, /method/],
      ["an absolute target", "GET http://x/ HTTP/1.1\r\nhost: a\r\n\r\n", 400, /path starting/],
      ["HTTP/2.0", "GET / HTTP/2.0\r\nhost: a\r\n\r\n", 505, /HTTP\/2\.0/],
      ["chunked", "PUT / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n", 411, /Length/],
      [
        "two lengths",
        "PUT / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
        400,
        /repeated/,
      ],
      [
        "a negative length",
        "PUT / HTTP/1.1\r\nhost: a\r\ncontent-length: -1\r\n\r\n",
        400,
        /content-length/,
      ],
      [
        "a huge length",
        "PUT / HTTP/1.1\r\nhost: a\r\ncontent-length: 99999\r\n\r\n",
        413,
        /too large/,
      ],
      ["a strange Expect", "GET / HTTP/1.1\r\nhost: a\r\nexpect: x\r\n\r\n", 417, /Expectation/],
      [
        "a long target",
        `GET /${"a".repeat(3000)} HTTP/1.1\r\nhost: a\r\n\r\n`,
        414,
        /target too long/,
      ],
      [
        "a huge head",
        `GET / HTTP/1.1\r\nhost: a\r\nx: ${"a".repeat(20_000)}\r\n\r\n`,
        431,
        /too large/,
      ],
    ];
    for (const [what, text, status, message] of cases) {
      await t.step(what, async () => {
        const { answer, closed } = await ask(port, text);
        assert.equal(answer?.status, status, `${what}: ${answer?.head}`);
        assert.match(JSON.parse(answer!.body).error, message);
        assert.ok(closed, `${what}: the connection stayed open`);
      });
    }
  });
});

Deno.test("HttpServer: HTTP/1.0 closes after the answer, HEAD gets no body, 100-continue", async () => {
  await withEcho(async (port) => {
    const old = await ask(port, "GET /x HTTP/1.0\r\n\r\n");
    assert.equal(old.answer?.status, 200);
    assert.ok(old.closed);
    const c = await RawConnection.open(port);
    try {
      await c.write("HEAD /x HTTP/1.1\r\nhost: a\r\n\r\nGET /y HTTP/1.1\r\nhost: a\r\n\r\n");
      const head = await c.read(3000, true);
      assert.ok(Number(head?.headers.get("content-length")) > 0);
      // No body was sent for HEAD: the next answer follows at once.
      assert.equal(head?.body, "");
      assert.equal(JSON.parse((await c.read())!.body).target, "/y");
      await c.write(
        "PUT /z HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n",
      );
      assert.equal((await c.read())?.status, 100);
      await c.write("ok");
      assert.equal(JSON.parse((await c.read())!.body).body, "ok");
    } finally {
      c.close();
    }
  });
});

Deno.test("HttpServer cuts off slow heads and bodies with 408", async () => {
  await withEcho(async (port, server) => {
    const head = await ask(port, "GET / HTTP/1.1\r\nhost: a\r\n");
    assert.equal(head.answer?.status, 408);
    assert.match(head.answer!.body, /Request head too slow: not received within 200 ms/);
    const body = await ask(port, "PUT / HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc");
    assert.equal(body.answer?.status, 408);
    assert.match(body.answer!.body, /Request body too slow: not received within 200 ms/);
    assert.equal(server.stats.refused.header_timeout, 1);
    assert.equal(server.stats.refused.body_timeout, 1);
    assert.equal(server.stats.connections, 0);
  }, { headerTimeoutMs: 200, bodyTimeoutMs: 200 });
});
